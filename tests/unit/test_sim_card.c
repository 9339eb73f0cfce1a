/* Unit tests for src/sim/card.c: Luhn, brands, expiry, CVV, and the api.md
 * test data table. paysim's sources are a binary of their own, not part of
 * pclib, so the module is compiled into this test directly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "cardbin/cardbin.h"
#include "sim/card.c"

/* 2026-11-22T08:00:00Z */
#define NOV_2026_MS 1795334400000LL

static void test_luhn_accepts_valid_numbers(void **state)
{
    (void)state;
    static const char *const ok[] = {"4242424242424242", "5555555555554444", "4000000000000002",
                                     "4000000000009995", "4000000000000119", "4000000000000259",
                                     "4000000000003220", "378282246310005",  "79927398713"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        assert_true(pc_card_luhn_valid(ok[i]));
}

static void test_luhn_rejects_wrong_digit_and_non_digits(void **state)
{
    (void)state;
    assert_false(pc_card_luhn_valid("4242424242424241"));
    assert_false(pc_card_luhn_valid("79927398710"));
    assert_false(pc_card_luhn_valid("4242 4242 4242 4242"));
    assert_false(pc_card_luhn_valid("42424242424242a2"));
    assert_false(pc_card_luhn_valid(""));
    /* Swapping two adjacent digits is caught. */
    assert_false(pc_card_luhn_valid("2424424242424242"));
}

static void test_pan_needs_12_to_19_digits(void **state)
{
    (void)state;
    assert_false(pc_sim_pan_valid("79927398713")); /* Luhn-valid, 11 digits */
    assert_true(pc_sim_pan_valid("4242424242424242"));
    assert_false(pc_sim_pan_valid("42424242424242424242")); /* 20 */
}

static void test_brand_from_prefix(void **state)
{
    (void)state;
    assert_string_equal(pc_card_scheme("4242424242424242"), "VISA");
    assert_string_equal(pc_card_scheme("5555555555554444"), "MASTERCARD");
    assert_string_equal(pc_card_scheme("2223003122003222"), "MASTERCARD");
    assert_string_equal(pc_card_scheme("378282246310005"), "AMEX");
    assert_string_equal(pc_card_scheme("6200000000000005"), "UNIONPAY");
    assert_string_equal(pc_card_scheme("3566002020360505"), "JCB");
    assert_string_equal(pc_card_scheme("6011111111111117"), "DISCOVER");
    assert_string_equal(pc_card_scheme("9999999999999995"), "UNKNOWN");
    assert_string_equal(pc_card_scheme("42"), "UNKNOWN");
}

static void test_card_valid_through_end_of_its_month(void **state)
{
    (void)state;
    assert_false(pc_sim_card_expired(11, 2026, NOV_2026_MS));
    assert_false(pc_sim_card_expired(1, 2027, NOV_2026_MS));
    assert_true(pc_sim_card_expired(10, 2026, NOV_2026_MS));
    assert_true(pc_sim_card_expired(12, 2025, NOV_2026_MS));
}

static void test_cvv_three_or_four_digits(void **state)
{
    (void)state;
    assert_true(pc_sim_cvv_valid("123"));
    assert_true(pc_sim_cvv_valid("1234"));
    assert_false(pc_sim_cvv_valid("12"));
    assert_false(pc_sim_cvv_valid("12345"));
    assert_false(pc_sim_cvv_valid("12a"));
}

static void test_rules_follow_test_data_table(void **state)
{
    (void)state;
    pc_sim_card_rule_t r = pc_sim_card_rule("4242424242424242");
    assert_int_equal(r.behaviour, PC_SIM_CARD_APPROVE);
    assert_int_equal(pc_sim_card_rule("5555555555554444").behaviour, PC_SIM_CARD_APPROVE);
    r = pc_sim_card_rule("4000000000000002");
    assert_int_equal(r.behaviour, PC_SIM_CARD_DECLINE);
    assert_string_equal(r.code, "CARD_DECLINED");
    assert_false(r.retryable);
    r = pc_sim_card_rule("4000000000009995");
    assert_string_equal(r.code, "INSUFFICIENT_FUNDS");
    assert_false(r.retryable);
    r = pc_sim_card_rule("4000000000000119");
    assert_string_equal(r.code, "PROCESSING_ERROR");
    assert_true(r.retryable);
    assert_int_equal(pc_sim_card_rule("4000000000000259").behaviour, PC_SIM_CARD_DISPUTE);
    assert_int_equal(pc_sim_card_rule("4000000000003220").behaviour, PC_SIM_CARD_CHALLENGE);
    /* Matched on the whole number: another card ending in 0002 is approved. */
    assert_int_equal(pc_sim_card_rule("5105105105100002").behaviour, PC_SIM_CARD_APPROVE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_luhn_accepts_valid_numbers),
        cmocka_unit_test(test_luhn_rejects_wrong_digit_and_non_digits),
        cmocka_unit_test(test_pan_needs_12_to_19_digits),
        cmocka_unit_test(test_brand_from_prefix),
        cmocka_unit_test(test_card_valid_through_end_of_its_month),
        cmocka_unit_test(test_cvv_three_or_four_digits),
        cmocka_unit_test(test_rules_follow_test_data_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
