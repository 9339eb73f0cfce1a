/* The card BIN file parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "cardbin/cardbin.h"

#include <string.h>

static void test_valid_file_parses_rows_skipping_comments(void **state)
{
    (void)state;
    char err[256];
    json_t *rows = pc_cardbin_parse("# comment\nbin,brand,issuer,card_type,country,province\n"
                                    "424242,VISA,Demo Bank,CREDIT,CN,Shanghai\r\n"
                                    "62220200,UNIONPAY,Other,DEBIT,CN,\n",
                                    err, sizeof err);
    assert_non_null(rows);
    assert_int_equal(json_array_size(rows), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(rows, 0), "province")),
                        "Shanghai");
    assert_true(json_is_null(json_object_get(json_array_get(rows, 1), "province")) ||
                !json_object_get(json_array_get(rows, 1), "province"));
    json_decref(rows);
}

static void test_bad_lines_are_refused_with_their_line_number(void **state)
{
    (void)state;
    char err[256];
    const char *h = "bin,brand,issuer,card_type,country,province\n";
    char buf[512];
    snprintf(buf, sizeof buf, "%s424242,VISA,Bank,GOLD,CN,X\n", h);
    assert_null(pc_cardbin_parse(buf, err, sizeof err));
    assert_non_null(strstr(err, "line 2"));
    snprintf(buf, sizeof buf, "%s42424,VISA,Bank,DEBIT,CN,X\n", h);
    assert_null(pc_cardbin_parse(buf, err, sizeof err));
    snprintf(buf, sizeof buf, "%s424242,VISA,Bank,DEBIT,cn,X\n", h);
    assert_null(pc_cardbin_parse(buf, err, sizeof err));
    snprintf(buf, sizeof buf, "%s424242,VISA,Bank,DEBIT,CN,X,extra\n", h);
    assert_null(pc_cardbin_parse(buf, err, sizeof err));
    assert_null(pc_cardbin_parse("bin,brand\n424242,VISA\n", err, sizeof err));
    assert_non_null(strstr(err, "header"));
    /* 7 digits: never matched (cards match on 8 and 6). */
    snprintf(buf, sizeof buf, "%s4242421,VISA,Bank,CREDIT,CN,X\n", h);
    assert_null(pc_cardbin_parse(buf, err, sizeof err));
    /* A BIN twice: the database load would fail whole. */
    snprintf(buf, sizeof buf, "%s424242,VISA,Bank,DEBIT,CN,X\n424242,VISA,Bank,CREDIT,CN,X\n", h);
    assert_null(pc_cardbin_parse(buf, err, sizeof err));
    assert_non_null(strstr(err, "line 3: bin 424242 is on line 2 already"));
}

/* What a payout's account number may not be: a card number. */
static void test_card_numbers_are_told_from_account_numbers(void **state)
{
    (void)state;
    assert_true(pc_card_number_like("4242424242424242"));
    assert_true(pc_card_number_like("6222021234567890128")); /* UnionPay, 19 digits */
    assert_false(pc_card_number_like("6222020000000001"));   /* fails the Luhn check */
    assert_false(pc_card_number_like("9000000000000001"));   /* Luhn-valid, no scheme */
    /* Diners, Mir, Maestro, RuPay and UnionPay's 81 range: card numbers too
     * (they passed as account numbers and were kept in payouts.payee). */
    assert_true(pc_card_number_like("36227206271667"));
    assert_true(pc_card_number_like("30569309025904"));
    assert_true(pc_card_number_like("2200000000000004"));
    assert_true(pc_card_number_like("6759649826438453"));
    assert_true(pc_card_number_like("5018000000000009"));
    assert_true(pc_card_number_like("6062826786276634"));
    assert_true(pc_card_number_like("8171999927660000"));
    assert_false(pc_card_number_like("424242424242"));         /* 12 digits */
    assert_false(pc_card_number_like("42424242424242424242")); /* 20 digits */
    assert_false(pc_card_number_like("4242 4242 4242 4242"));
    assert_false(pc_card_luhn_valid(""));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_file_parses_rows_skipping_comments),
        cmocka_unit_test(test_bad_lines_are_refused_with_their_line_number),
        cmocka_unit_test(test_card_numbers_are_told_from_account_numbers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
