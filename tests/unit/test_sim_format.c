/* Unit tests for src/sim/format.c: times, business dates, file names, CSV
 * quoting, and the statement and chargeback rows. The module is compiled
 * into this test directly (paysim is not part of pclib). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "sim/format.c"

#define T_MS 1795334400123LL /* 2026-11-22T08:00:00.123Z */

static void test_times_are_rfc3339_utc(void **state)
{
    (void)state;
    char t[PC_SIM_TIME_LEN], d[PC_SIM_DATE_LEN];
    pc_sim_format_time(T_MS, t);
    assert_string_equal(t, "2026-11-22T08:00:00Z");
    pc_sim_format_date(T_MS, d);
    assert_string_equal(d, "2026-11-22");
    /* The business day ends at midnight UTC. */
    pc_sim_format_date(T_MS + 16 * 3600 * 1000LL - 124, d);
    assert_string_equal(d, "2026-11-22");
    pc_sim_format_date(T_MS + 16 * 3600 * 1000LL, d);
    assert_string_equal(d, "2026-11-23");
}

static void test_dates_must_exist(void **state)
{
    (void)state;
    assert_true(pc_sim_date_valid("2026-11-22"));
    assert_true(pc_sim_date_valid("2024-02-29"));
    assert_true(pc_sim_date_valid("2000-02-29"));
    assert_false(pc_sim_date_valid("1900-02-29"));
    assert_false(pc_sim_date_valid("2026-02-29"));
    assert_false(pc_sim_date_valid("2026-04-31"));
    assert_false(pc_sim_date_valid("2026-13-01"));
    assert_false(pc_sim_date_valid("2026-00-10"));
    assert_false(pc_sim_date_valid("2026-1-01"));
    assert_false(pc_sim_date_valid("2026/11/22"));
    assert_false(pc_sim_date_valid("2026-11-22x"));
}

static void test_file_names_carry_a_date(void **state)
{
    (void)state;
    char d[PC_SIM_DATE_LEN];
    assert_int_equal(pc_sim_date_from_file("2026-11-22.csv", ".csv", d), 0);
    assert_string_equal(d, "2026-11-22");
    assert_int_equal(pc_sim_date_from_file("2026-11-22.json", ".csv", d), PC_EINVAL);
    assert_int_equal(pc_sim_date_from_file("2026-11-22", ".csv", d), PC_EINVAL);
    assert_int_equal(pc_sim_date_from_file("../etc/passwd", ".csv", d), PC_EINVAL);
    assert_int_equal(pc_sim_date_from_file("2026-02-30.csv", ".csv", d), PC_EINVAL);
}

static void test_csv_quotes_only_when_needed(void **state)
{
    (void)state;
    pc_buf_t b = {0};
    pc_sim_csv_field(&b, "plain");
    pc_buf_str(&b, "|");
    pc_sim_csv_field(&b, "a,b");
    pc_buf_str(&b, "|");
    pc_sim_csv_field(&b, "say \"hi\"");
    pc_buf_str(&b, "|");
    pc_sim_csv_field(&b, "two\nlines");
    pc_buf_str(&b, "|");
    pc_sim_csv_field(&b, "");
    assert_string_equal(b.p, "plain|\"a,b\"|\"say \"\"hi\"\"\"|\"two\nlines\"|");
    pc_buf_free(&b);
}

static void test_statement_rows(void **state)
{
    (void)state;
    pc_buf_t b = {0};
    pc_sim_stmt_header(&b);
    pc_sim_stmt_row_t r = {"pay_abc0000000001", "P-1", "PAY", 1999, "CNY", 12, "SUCCESS", T_MS};
    pc_sim_stmt_row(&b, &r);
    pc_sim_stmt_row_t odd = {"rfd_x", "R,1", "REFUND", -5, "USD", 0, "FAILED", 0};
    pc_sim_stmt_row(&b, &odd);
    assert_string_equal(b.p, "channel_ref,paycore_ref,type,amount,currency,fee,status,time\n"
                             "pay_abc0000000001,P-1,PAY,1999,CNY,12,SUCCESS,2026-11-22T08:00:00Z\n"
                             "rfd_x,\"R,1\",REFUND,-5,USD,0,FAILED,1970-01-01T00:00:00Z\n");
    assert_false(b.oom);
    pc_buf_free(&b);
}

static void test_chargeback_rows(void **state)
{
    (void)state;
    pc_buf_t b = {0};
    pc_sim_cb_header(&b);
    pc_sim_cb_row_t r = {"cbk_1", "pay_1", "P-9", 4200, "CNY", "10.4", T_MS, T_MS + 7 * 86400000LL};
    pc_sim_cb_row(&b, &r);
    assert_string_equal(b.p, "chargeback_ref,channel_ref,paycore_ref,amount,currency,reason_code,"
                             "time,respond_by\n"
                             "cbk_1,pay_1,P-9,4200,CNY,10.4,2026-11-22T08:00:00Z,"
                             "2026-11-29T08:00:00Z\n");
    pc_buf_free(&b);
}

static void test_buffer_grows(void **state)
{
    (void)state;
    pc_buf_t b = {0};
    for (int i = 0; i < 10000; i++)
        pc_buf_printf(&b, "%04d,", i % 10000);
    assert_int_equal(b.len, 50000);
    assert_memory_equal(b.p + 49995, "9999,", 5);
    assert_int_equal(b.p[b.len], 0);
    pc_buf_free(&b);
    assert_null(b.p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_times_are_rfc3339_utc),
        cmocka_unit_test(test_dates_must_exist),
        cmocka_unit_test(test_file_names_carry_a_date),
        cmocka_unit_test(test_csv_quotes_only_when_needed),
        cmocka_unit_test(test_statement_rows),
        cmocka_unit_test(test_chargeback_rows),
        cmocka_unit_test(test_buffer_grows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
