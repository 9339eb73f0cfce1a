/* Parsing a channel's chargeback file: paysim's format, columns in any
 * order, quoting, bad lines reported one by one, headers that cannot work,
 * and the time and date parsers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "chargeback/chargeback_csv.h"
#include "core/error.h"

#include <stdlib.h>
#include <string.h>

static int parse(const char *text, pc_cb_csv_line_t **lines, size_t *n, char *err)
{
    return pc_cb_csv_parse(text, strlen(text), lines, n, err, 160);
}

static void test_paysim_file_parses(void **state)
{
    (void)state;
    const char *f = "chargeback_ref,channel_ref,paycore_ref,amount,currency,reason_code,time,"
                    "respond_by\n"
                    "cbk_1,pay_7,PM7,4200,CNY,10.4,2026-11-22T08:00:05Z,2026-11-29T08:00:05Z\n"
                    "cbk_2,pay_8,PM8,1,USD,4853,2026-11-22T09:00:00Z,2026-11-29T09:00:00Z\n";
    pc_cb_csv_line_t *l;
    size_t n;
    char err[160];
    assert_int_equal(parse(f, &l, &n, err), 0);
    assert_int_equal(n, 2);
    assert_true(l[0].ok);
    assert_int_equal(l[0].line_no, 2);
    assert_string_equal(l[0].chargeback_ref, "cbk_1");
    assert_string_equal(l[0].channel_ref, "pay_7");
    assert_string_equal(l[0].paycore_ref, "PM7");
    assert_int_equal(l[0].amount, 4200);
    assert_string_equal(l[0].currency, "CNY");
    assert_string_equal(l[0].reason_code, "10.4");
    assert_int_equal(l[0].time, 1795334405LL);
    assert_int_equal(l[0].respond_by - l[0].time, 7 * 86400);
    assert_true(l[1].ok);
    assert_string_equal(l[1].currency, "USD");
    free(l);
}

static void test_columns_by_name_quotes_crlf_bom_and_blank_lines(void **state)
{
    (void)state;
    const char *f = "\xEF\xBB\xBF"
                    "currency,amount,extra,channel_ref,chargeback_ref\r\n"
                    "\r\n"
                    "CNY,500,\"ignored, with comma\",\"pay_\"\"q\"\"\",cbk_9\r\n";
    pc_cb_csv_line_t *l;
    size_t n;
    char err[160];
    assert_int_equal(parse(f, &l, &n, err), 0);
    assert_int_equal(n, 1);
    assert_true(l[0].ok);
    assert_int_equal(l[0].line_no, 3);
    assert_string_equal(l[0].channel_ref, "pay_\"q\"");
    assert_string_equal(l[0].chargeback_ref, "cbk_9");
    assert_string_equal(l[0].paycore_ref, "");
    assert_int_equal(l[0].time, 0);
    free(l);
}

static void test_bad_lines_are_reported_and_others_kept(void **state)
{
    (void)state;
    const char *f = "chargeback_ref,channel_ref,amount,currency,time\n"
                    "cbk_1,pay_1,0,CNY,\n"
                    "cbk_2,pay_2,12x,CNY,\n"
                    "cbk_3,pay_3,100,cny,\n"
                    ",pay_4,100,CNY,\n"
                    "cbk_5,pay_5,100,CNY,yesterday\n"
                    "cbk_6,\"pay_6,100,CNY,\n"
                    "cbk_7,pay_7,10000000000000000,CNY,\n"
                    "cbk_8,pay_8,100,CNY,2026-11-22T08:00:00+08:00\n";
    pc_cb_csv_line_t *l;
    size_t n;
    char err[160];
    assert_int_equal(parse(f, &l, &n, err), 0);
    assert_int_equal(n, 8);
    for (int i = 0; i < 7; i++) {
        assert_false(l[i].ok);
        assert_true(strlen(l[i].error) > 0);
    }
    assert_non_null(strstr(l[0].error, "amount"));
    assert_non_null(strstr(l[2].error, "currency"));
    assert_non_null(strstr(l[3].error, "chargeback_ref"));
    assert_non_null(strstr(l[4].error, "time"));
    assert_true(l[7].ok);
    assert_int_equal(l[7].time, 1795334400LL - 8 * 3600);
    assert_string_equal(l[1].raw, "cbk_2,pay_2,12x,CNY,");
    free(l);
}

static void test_unusable_files_are_refused(void **state)
{
    (void)state;
    pc_cb_csv_line_t *l = (pc_cb_csv_line_t *)1;
    size_t n;
    char err[160];
    assert_int_equal(parse("", &l, &n, err), PC_EINVAL);
    assert_null(l);
    assert_int_equal(parse("chargeback_ref,amount,currency\ncbk,1,CNY\n", &l, &n, err), PC_EINVAL);
    assert_non_null(strstr(err, "channel_ref"));
    /* A NUL byte anywhere: refused (it cut a field short: 1\0000 read as 1). */
    static const char nul[] =
        "chargeback_ref,channel_ref,amount,currency\ncbk_1,pay_1,1\0000,CNY\n";
    assert_int_equal(pc_cb_csv_parse(nul, sizeof nul - 1, &l, &n, err, sizeof err), PC_EINVAL);
    assert_non_null(strstr(err, "NUL"));
    /* A header alone is an empty file, not an error. */
    assert_int_equal(parse("chargeback_ref,channel_ref,amount,currency\n", &l, &n, err), 0);
    assert_int_equal(n, 0);
    free(l);
}

static void test_times_and_dates(void **state)
{
    (void)state;
    long long t;
    assert_int_equal(pc_cb_parse_time("1970-01-01T00:00:00Z", &t), 0);
    assert_int_equal(t, 0);
    assert_int_equal(pc_cb_parse_time("2026-11-22T08:00:05.123Z", &t), 0);
    assert_int_equal(t, 1795334405LL);
    assert_int_equal(pc_cb_parse_time("2026-02-29T00:00:00Z", &t), PC_EINVAL);
    assert_int_equal(pc_cb_parse_time("2026-11-22 08:00:05Z", &t), PC_EINVAL);
    assert_int_equal(pc_cb_parse_time("2026-11-22T08:00:05", &t), PC_EINVAL);
    assert_int_equal(pc_cb_parse_time("2026-11-22T24:00:00Z", &t), PC_EINVAL);
    assert_int_equal(pc_cb_parse_date("2028-02-29", &t), 0);
    assert_int_equal(t % 86400, 0);
    assert_int_equal(pc_cb_parse_date("2026-02-29", &t), PC_EINVAL);
    assert_int_equal(pc_cb_parse_date("2026-1-01", &t), PC_EINVAL);
    assert_int_equal(pc_cb_parse_date(NULL, &t), PC_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_paysim_file_parses),
        cmocka_unit_test(test_columns_by_name_quotes_crlf_bom_and_blank_lines),
        cmocka_unit_test(test_bad_lines_are_reported_and_others_kept),
        cmocka_unit_test(test_unusable_files_are_refused),
        cmocka_unit_test(test_times_and_dates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
