/* Channel statements: the protocol's example read field for field; columns
 * found by name; RFC 4180 quoting, CRLF and blank lines; every malformed
 * value refused with its row; duplicates noticed exactly (not by hash);
 * RFC 3339 times and business dates. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/error.h"
#include "recon/recon_csv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HEADER "channel_ref,paycore_ref,type,amount,currency,fee,status,time\n"

/* Reads the whole text; returns the number of lines, or the error code. */
static int read_all(const char *text, pc_recon_line_t *lines, int max, char *err, size_t errlen)
{
    pc_recon_csv_t *r;
    int rc = pc_recon_csv_open(text, strlen(text), &r, err, errlen);
    if (rc < 0)
        return rc;
    int n = 0;
    pc_recon_line_t l;
    while ((rc = pc_recon_csv_next(r, &l, err, errlen)) == 1) {
        if (n < max)
            lines[n] = l;
        n++;
    }
    pc_recon_csv_free(r);
    return rc < 0 ? rc : n;
}

static void test_protocol_example_is_read_field_for_field(void **state)
{
    (void)state;
    const char *text =
        HEADER "pay_1a2b3c0000000001,PM1,PAY,1999,CNY,12,SUCCESS,2026-11-22T08:00:00Z\n"
               "pay_1a2b3c0000000002,PM2,PAY,500,CNY,0,FAILED,2026-11-22T08:00:01Z\n"
               "rfd_1a2b3c0000000004,RF1,REFUND,400,CNY,0,SUCCESS,2026-11-22T08:00:02Z\n"
               "pot_1a2b3c0000000005,PO1,PAYOUT,7000,CNY,0,SUCCESS,2026-11-22T08:00:03Z\n"
               "pot_1a2b3c0000000005,PO1,PAYOUT_RETURN,7000,CNY,0,SUCCESS,2026-11-22T09:12:00Z\n";
    pc_recon_line_t l[8];
    char err[200] = "";
    assert_int_equal(read_all(text, l, 8, err, sizeof err), 5);
    assert_int_equal(l[0].row, 1);
    assert_string_equal(l[0].channel_ref, "pay_1a2b3c0000000001");
    assert_string_equal(l[0].paycore_ref, "PM1");
    assert_string_equal(l[0].type, "PAY");
    assert_int_equal(l[0].amount, 1999);
    assert_string_equal(l[0].currency, "CNY");
    assert_int_equal(l[0].fee, 12);
    assert_string_equal(l[0].status, "SUCCESS");
    assert_int_equal(l[0].time_s, 1795334400); /* 2026-11-22T08:00:00Z */
    assert_int_equal(l[0].duplicate, 0);
    assert_string_equal(l[1].status, "FAILED");
    assert_string_equal(l[2].type, "REFUND");
    /* A payout and its return share the channel reference: not duplicates. */
    assert_string_equal(l[4].type, "PAYOUT_RETURN");
    assert_int_equal(l[4].duplicate, 0);
    assert_int_equal(l[4].row, 5);
}

static void test_header_alone_is_an_empty_day(void **state)
{
    (void)state;
    pc_recon_line_t l[1];
    char err[200] = "";
    assert_int_equal(read_all(HEADER, l, 1, err, sizeof err), 0);
    assert_int_equal(read_all("channel_ref,paycore_ref,type,amount,currency,fee,status,time", l, 1,
                              err, sizeof err),
                     0);
}

static void test_columns_are_found_by_name_and_extra_ones_ignored(void **state)
{
    (void)state;
    const char *text = "\xEF\xBB\xBFtime,status,note,fee,currency,amount,type,paycore_ref,"
                       "channel_ref\r\n"
                       "2026-11-22T08:00:00Z,SUCCESS,\"any, text\",3,USD,250,PAY,P9,pay_9\r\n";
    pc_recon_line_t l[2];
    char err[200] = "";
    assert_int_equal(read_all(text, l, 2, err, sizeof err), 1);
    assert_string_equal(l[0].channel_ref, "pay_9");
    assert_string_equal(l[0].paycore_ref, "P9");
    assert_int_equal(l[0].amount, 250);
    assert_int_equal(l[0].fee, 3);
    assert_string_equal(l[0].currency, "USD");
}

static void test_quoted_fields_crlf_and_blank_lines(void **state)
{
    (void)state;
    const char *text = "channel_ref,paycore_ref,type,amount,currency,fee,status,time,note\n"
                       "\n"
                       "\"pay,\"\"odd\"\"\",\"\",PAY,1,CNY,0,CLOSED,2026-11-22T08:00:00Z,\"\"\r\n"
                       "\r\n"
                       "pay_2,P2,PAY,2,CNY,0,SUCCESS,2026-11-22T08:00:00Z,\"two\nlines, one note\"";
    pc_recon_line_t l[4];
    char err[200] = "";
    assert_int_equal(read_all(text, l, 4, err, sizeof err), 2);
    assert_string_equal(l[0].channel_ref, "pay,\"odd\"");
    assert_string_equal(l[0].paycore_ref, "");
    assert_string_equal(l[0].status, "CLOSED");
    assert_string_equal(l[1].channel_ref, "pay_2");
    assert_int_equal(l[1].row, 2);
    /* A line break is never part of a reference. */
    const char *bad = HEADER "\"pay\n3\",P3,PAY,2,CNY,0,SUCCESS,2026-11-22T08:00:00Z\n";
    assert_int_equal(read_all(bad, l, 4, err, sizeof err), PC_EINVAL);
    assert_non_null(strstr(err, "row 1: channel_ref"));
}

static void expect_refused(const char *row, const char *why)
{
    char text[512], err[200] = "";
    snprintf(text, sizeof text, HEADER "pay_ok,P0,PAY,1,CNY,0,SUCCESS,2026-11-22T08:00:00Z\n%s\n",
             row);
    pc_recon_line_t l[4];
    int rc = read_all(text, l, 4, err, sizeof err);
    if (rc != PC_EINVAL)
        fail_msg("accepted \"%s\" (rc %d)", row, rc);
    if (!strstr(err, "row 2: ") || !strstr(err, why))
        fail_msg("\"%s\": error \"%s\" lacks \"%s\"", row, err, why);
}

static void test_each_malformed_value_is_refused_with_its_row(void **state)
{
    (void)state;
    expect_refused(",P1,PAY,1,CNY,0,SUCCESS,2026-11-22T08:00:00Z", "channel_ref");
    expect_refused("pay_1,P1,pay,1,CNY,0,SUCCESS,2026-11-22T08:00:00Z", "type");
    expect_refused("pay_1,P1,PAY,-1,CNY,0,SUCCESS,2026-11-22T08:00:00Z", "amount");
    expect_refused("pay_1,P1,PAY,1.5,CNY,0,SUCCESS,2026-11-22T08:00:00Z", "amount");
    expect_refused("pay_1,P1,PAY,10000000000000001,CNY,0,SUCCESS,2026-11-22T08:00:00Z", "amount");
    expect_refused("pay_1,P1,PAY,1,cny,0,SUCCESS,2026-11-22T08:00:00Z", "currency");
    expect_refused("pay_1,P1,PAY,1,CNY,,SUCCESS,2026-11-22T08:00:00Z", "fee");
    expect_refused("pay_1,P1,PAY,1,CNY,0,,2026-11-22T08:00:00Z", "status");
    /* Only the protocol's statuses: one the channel renamed was read as no
     * money, and a paid line we hold no record of was only counted. */
    expect_refused("pay_1,P1,PAY,1,CNY,0,PAID,2026-11-22T08:00:00Z", "status");
    expect_refused("pay_1,P1,PAY,1,CNY,0,PROCESSING,2026-11-22T08:00:00Z", "status");
    expect_refused("pay_1,P1,PAY,1,CNY,0,SUCCESS,2026-02-30T08:00:00Z", "time");
    expect_refused("pay_1,P1,PAY,1,CNY,0,SUCCESS,2026-11-22 08:00:00", "time");
    expect_refused("pay_1,P1,PAY,1,CNY,0,SUCCESS", "fields");
    expect_refused("pay_1,P1,PAY,1,CNY,0,SUCCESS,2026-11-22T08:00:00Z,x", "fields");
    expect_refused("pay_\"1,P1,PAY,1,CNY,0,SUCCESS,2026-11-22T08:00:00Z", "quote");
    expect_refused("\"pay_1\"x,P1,PAY,1,CNY,0,SUCCESS,2026-11-22T08:00:00Z", "closing quote");
    expect_refused("\"pay_1,P1,PAY,1,CNY,0,SUCCESS,2026-11-22T08:00:00Z", "not closed");
    expect_refused("pay\t1,P1,PAY,1,CNY,0,SUCCESS,2026-11-22T08:00:00Z", "channel_ref");
    char longref[120];
    memset(longref, 'a', 81);
    longref[81] = 0;
    char row[300];
    snprintf(row, sizeof row, "%s,P1,PAY,1,CNY,0,SUCCESS,2026-11-22T08:00:00Z", longref);
    expect_refused(row, "channel_ref");
}

static void test_reader_stays_failed_after_an_error(void **state)
{
    (void)state;
    const char *text = HEADER "x,P,PAY,zz,CNY,0,SUCCESS,2026-11-22T08:00:00Z\n"
                              "y,P,PAY,1,CNY,0,SUCCESS,2026-11-22T08:00:00Z\n";
    pc_recon_csv_t *r;
    char err[200];
    assert_int_equal(pc_recon_csv_open(text, strlen(text), &r, err, sizeof err), 0);
    pc_recon_line_t l;
    assert_int_equal(pc_recon_csv_next(r, &l, err, sizeof err), PC_EINVAL);
    err[0] = 0;
    assert_int_equal(pc_recon_csv_next(r, &l, err, sizeof err), PC_EINVAL);
    assert_non_null(strstr(err, "row 1: amount"));
    pc_recon_csv_free(r);
}

static void test_bad_headers_are_refused(void **state)
{
    (void)state;
    pc_recon_line_t l[1];
    char err[200] = "";
    assert_int_equal(read_all("", l, 1, err, sizeof err), PC_EINVAL);
    assert_non_null(strstr(err, "empty"));
    assert_int_equal(read_all("channel_ref,paycore_ref,type,amount,currency,fee,status\n", l, 1,
                              err, sizeof err),
                     PC_EINVAL);
    assert_non_null(strstr(err, "time is missing"));
    assert_int_equal(read_all("channel_ref,paycore_ref,type,amount,currency,fee,status,time,fee\n",
                              l, 1, err, sizeof err),
                     PC_EINVAL);
    assert_non_null(strstr(err, "fee appears twice"));
}

static void test_repeated_type_and_reference_is_a_duplicate(void **state)
{
    (void)state;
    const char *text = HEADER "pay_1,P1,PAY,1,CNY,0,SUCCESS,2026-11-22T08:00:00Z\n"
                              "pay_1,P1,REFUND,1,CNY,0,SUCCESS,2026-11-22T08:00:00Z\n"
                              "pay_1,P1,PAY,1,CNY,0,SUCCESS,2026-11-22T08:00:00Z\n"
                              "pay_10,P10,PAY,1,CNY,0,SUCCESS,2026-11-22T08:00:00Z\n";
    pc_recon_line_t l[4];
    char err[200] = "";
    assert_int_equal(read_all(text, l, 4, err, sizeof err), 4);
    assert_int_equal(l[0].duplicate, 0);
    assert_int_equal(l[1].duplicate, 0);
    assert_int_equal(l[2].duplicate, 1);
    assert_int_equal(l[3].duplicate, 0);
}

/* The channel took one of our numbers twice: two successes of P1 under two
 * references. The second is a duplicate (before: both paired with P1's
 * record, agreed, and nobody heard of the second charge). A failed attempt
 * and a success of one number are not. */
static void test_second_success_of_one_number_is_a_duplicate(void **state)
{
    (void)state;
    const char *text = HEADER "pay_a,P1,PAY,1000,CNY,6,SUCCESS,2026-11-22T08:00:00Z\n"
                              "pay_b,P1,PAY,1000,CNY,6,SUCCESS,2026-11-22T08:01:00Z\n"
                              "pay_c,P2,PAY,500,CNY,0,FAILED,2026-11-22T08:02:00Z\n"
                              "pay_d,P2,PAY,500,CNY,3,SUCCESS,2026-11-22T08:03:00Z\n"
                              "rf_a,P1,REFUND,1000,CNY,0,SUCCESS,2026-11-22T08:04:00Z\n";
    pc_recon_line_t l[5];
    char err[200] = "";
    assert_int_equal(read_all(text, l, 5, err, sizeof err), 5);
    assert_int_equal(l[0].duplicate, 0);
    assert_int_equal(l[1].duplicate, 1);
    assert_int_equal(l[2].duplicate, 0);
    assert_int_equal(l[3].duplicate, 0);
    assert_int_equal(l[4].duplicate, 0);
}

static void test_many_lines_find_exactly_the_planted_duplicates(void **state)
{
    (void)state;
    /* Enough keys to grow the index several times. */
    enum { N = 200000 };
    size_t cap = (size_t)N * 80 + 200;
    char *text = malloc(cap);
    assert_non_null(text);
    size_t len = (size_t)snprintf(text, cap, HEADER);
    for (int i = 0; i < N; i++) {
        /* Every 1000th line repeats the line 500 before it. */
        int ref = i % 1000 == 999 ? i - 500 : i;
        len += (size_t)snprintf(text + len, cap - len,
                                "pay_%d,P%d,PAY,%d,CNY,0,SUCCESS,2026-11-22T08:00:00Z\n", ref, ref,
                                i + 1);
    }
    pc_recon_csv_t *r;
    char err[200];
    assert_int_equal(pc_recon_csv_open(text, len, &r, err, sizeof err), 0);
    pc_recon_line_t l;
    int n = 0, dups = 0, rc;
    while ((rc = pc_recon_csv_next(r, &l, err, sizeof err)) == 1) {
        n++;
        if (l.duplicate) {
            dups++;
            assert_int_equal(l.row % 1000, 0);
        }
    }
    assert_int_equal(rc, 0);
    assert_int_equal(n, N);
    assert_int_equal(dups, N / 1000);
    assert_int_equal(pc_recon_csv_offset(r), len);
    pc_recon_csv_free(r);
    free(text);
}

static void test_times_with_offsets_and_fractions(void **state)
{
    (void)state;
    int64_t t;
    const char *s = "2026-11-22T16:00:00.250+08:00";
    assert_int_equal(pc_recon_parse_time(s, strlen(s), &t), 0);
    assert_int_equal(t, 1795334400);
    s = "1970-01-01T00:00:00Z";
    assert_int_equal(pc_recon_parse_time(s, strlen(s), &t), 0);
    assert_int_equal(t, 0);
    s = "2024-02-29T23:59:59Z";
    assert_int_equal(pc_recon_parse_time(s, strlen(s), &t), 0);
    assert_int_equal(t, 1709251199);
    s = "2023-02-29T00:00:00Z";
    assert_int_equal(pc_recon_parse_time(s, strlen(s), &t), PC_EINVAL);
    s = "2026-11-22T08:00:00";
    assert_int_equal(pc_recon_parse_time(s, strlen(s), &t), PC_EINVAL);
    s = "2026-11-22T08:00:00.Z";
    assert_int_equal(pc_recon_parse_time(s, strlen(s), &t), PC_EINVAL);
    s = "2026-11-22T24:00:00Z";
    assert_int_equal(pc_recon_parse_time(s, strlen(s), &t), PC_EINVAL);
    assert_int_equal(pc_recon_parse_date("2026-11-22", &t), 0);
    assert_int_equal(t, 1795305600);
    assert_int_equal(pc_recon_parse_date("2026-13-01", &t), PC_EINVAL);
    assert_int_equal(pc_recon_parse_date("2026-11-22x", &t), PC_EINVAL);
    assert_int_equal(pc_recon_parse_date("26-11-22", &t), PC_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_protocol_example_is_read_field_for_field),
        cmocka_unit_test(test_header_alone_is_an_empty_day),
        cmocka_unit_test(test_columns_are_found_by_name_and_extra_ones_ignored),
        cmocka_unit_test(test_quoted_fields_crlf_and_blank_lines),
        cmocka_unit_test(test_each_malformed_value_is_refused_with_its_row),
        cmocka_unit_test(test_reader_stays_failed_after_an_error),
        cmocka_unit_test(test_bad_headers_are_refused),
        cmocka_unit_test(test_repeated_type_and_reference_is_a_duplicate),
        cmocka_unit_test(test_second_success_of_one_number_is_a_duplicate),
        cmocka_unit_test(test_many_lines_find_exactly_the_planted_duplicates),
        cmocka_unit_test(test_times_with_offsets_and_fractions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
