/* Ledger adjustments for reconciliation differences: which way money moves
 * between a channel's clearing account and suspense for each kind, both
 * currencies of a currency mismatch, and the differences that must not be
 * adjusted (no money, a record still in flight, an unknown type). Every
 * adjustment also passes the ledger's own validation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/error.h"
#include "recon/recon_adjust.h"

#include <string.h>

static pc_recon_money_t line_and_local(const char *kind, const char *type, const char *line_status,
                                       int64_t line_amount, const char *local_state,
                                       int64_t local_amount)
{
    pc_recon_money_t d = {0};
    d.kind = kind;
    d.type = type;
    d.channel_id = "sim_card";
    d.has_line = line_status != NULL;
    d.line_status = line_status;
    d.line_currency = "CNY";
    d.line_amount = line_amount;
    d.has_local = local_state != NULL;
    d.local_state = local_state;
    d.local_currency = "CNY";
    d.local_amount = local_amount;
    return d;
}

/* The amount on account (0 when the account has no leg). */
static int64_t on(const pc_recon_adjustment_t *a, const char *account)
{
    int64_t sum = 0;
    for (int i = 0; i < a->n; i++)
        if (!strcmp(a->legs[i].account_id, account))
            sum += a->legs[i].amount;
    return sum;
}

static void expect_valid(const pc_recon_adjustment_t *a)
{
    pc_ledger_txn_t t = {"RECON_ADJUST", "recon_diff", "1", NULL, a->legs, (size_t)a->n};
    char err[200];
    if (pc_ledger_validate(&t, err, sizeof err) != 0)
        fail_msg("ledger refuses the adjustment: %s", err);
}

static void test_money_we_never_heard_of_goes_to_suspense(void **state)
{
    (void)state;
    pc_recon_money_t d = line_and_local("MISSING_LOCAL", "PAY", "SUCCESS", 1999, NULL, 0);
    pc_recon_adjustment_t a;
    const char *why = NULL;
    assert_int_equal(pc_recon_adjustment(&d, &a, &why), 0);
    assert_int_equal(a.n, 2);
    assert_int_equal(on(&a, "channel:sim_card:clearing:CNY"), -1999);
    assert_int_equal(on(&a, "platform:suspense:CNY"), 1999);
    expect_valid(&a);
}

static void test_success_missing_at_the_channel_is_taken_back(void **state)
{
    (void)state;
    pc_recon_money_t d = line_and_local("MISSING_CHANNEL", "PAY", NULL, 0, "SUCCESS", 500);
    pc_recon_adjustment_t a;
    assert_int_equal(pc_recon_adjustment(&d, &a, NULL), 0);
    assert_int_equal(on(&a, "channel:sim_card:clearing:CNY"), 500);
    assert_int_equal(on(&a, "platform:suspense:CNY"), -500);
    expect_valid(&a);
}

static void test_amount_mismatch_moves_the_difference_only(void **state)
{
    (void)state;
    pc_recon_money_t d = line_and_local("AMOUNT_MISMATCH", "PAY", "SUCCESS", 998, "SUCCESS", 999);
    pc_recon_adjustment_t a;
    assert_int_equal(pc_recon_adjustment(&d, &a, NULL), 0);
    assert_int_equal(on(&a, "channel:sim_card:clearing:CNY"), 1);
    assert_int_equal(on(&a, "platform:suspense:CNY"), -1);
    /* A refund the channel paid out larger than ours: it owes us less. */
    d = line_and_local("AMOUNT_MISMATCH", "REFUND", "SUCCESS", 410, "SUCCESS", 400);
    assert_int_equal(pc_recon_adjustment(&d, &a, NULL), 0);
    assert_int_equal(on(&a, "channel:sim_card:clearing:CNY"), 10);
    assert_int_equal(on(&a, "platform:suspense:CNY"), -10);
    expect_valid(&a);
}

static void test_status_mismatch_either_way(void **state)
{
    (void)state;
    pc_recon_adjustment_t a;
    /* The channel failed what we booked as paid. */
    pc_recon_money_t d = line_and_local("STATUS_MISMATCH", "PAY", "FAILED", 700, "SUCCESS", 700);
    assert_int_equal(pc_recon_adjustment(&d, &a, NULL), 0);
    assert_int_equal(on(&a, "channel:sim_card:clearing:CNY"), 700);
    /* The channel paid out a payout we failed. */
    d = line_and_local("STATUS_MISMATCH", "PAYOUT", "SUCCESS", 7000, "FAILED", 7000);
    assert_int_equal(pc_recon_adjustment(&d, &a, NULL), 0);
    assert_int_equal(on(&a, "channel:sim_card:clearing:CNY"), 7000);
    assert_int_equal(on(&a, "platform:suspense:CNY"), -7000);
    /* A payout's money came back and we do not know it yet. */
    d = line_and_local("STATUS_MISMATCH", "PAYOUT_RETURN", "SUCCESS", 7000, "FAILED", 7000);
    assert_int_equal(pc_recon_adjustment(&d, &a, NULL), 0);
    assert_int_equal(on(&a, "channel:sim_card:clearing:CNY"), -7000);
    expect_valid(&a);
}

static void test_fee_mismatch_moves_the_extra_fee(void **state)
{
    (void)state;
    pc_recon_money_t d = line_and_local("FEE_MISMATCH", "PAY", "SUCCESS", 1999, "SUCCESS", 1999);
    d.line_fee = 13;
    d.has_expected_fee = 1;
    d.expected_fee = 12;
    pc_recon_adjustment_t a;
    assert_int_equal(pc_recon_adjustment(&d, &a, NULL), 0);
    assert_int_equal(on(&a, "channel:sim_card:clearing:CNY"), 1);
    assert_int_equal(on(&a, "platform:suspense:CNY"), -1);
    d.has_expected_fee = 0;
    const char *why = NULL;
    assert_int_equal(pc_recon_adjustment(&d, &a, &why), PC_EINVAL);
    assert_non_null(why);
}

static void test_currency_mismatch_adjusts_both_currencies(void **state)
{
    (void)state;
    pc_recon_money_t d =
        line_and_local("CURRENCY_MISMATCH", "PAY", "SUCCESS", 300, "SUCCESS", 2000);
    d.line_currency = "USD";
    pc_recon_adjustment_t a;
    assert_int_equal(pc_recon_adjustment(&d, &a, NULL), 0);
    assert_int_equal(a.n, 4);
    assert_int_equal(on(&a, "channel:sim_card:clearing:USD"), -300);
    assert_int_equal(on(&a, "platform:suspense:USD"), 300);
    assert_int_equal(on(&a, "channel:sim_card:clearing:CNY"), 2000);
    assert_int_equal(on(&a, "platform:suspense:CNY"), -2000);
    expect_valid(&a);
}

static void test_duplicate_line_is_money_claimed_twice(void **state)
{
    (void)state;
    pc_recon_money_t d = line_and_local("DUPLICATE_LINE", "PAY", "SUCCESS", 250, NULL, 0);
    pc_recon_adjustment_t a;
    assert_int_equal(pc_recon_adjustment(&d, &a, NULL), 0);
    assert_int_equal(on(&a, "channel:sim_card:clearing:CNY"), -250);
}

static void test_differences_without_money_are_refused(void **state)
{
    (void)state;
    pc_recon_adjustment_t a;
    const char *why = NULL;
    /* The channel failed what is still in flight here: its status query
     * settles it. */
    pc_recon_money_t d = line_and_local("STATUS_MISMATCH", "PAY", "FAILED", 700, "PENDING", 700);
    assert_int_equal(pc_recon_adjustment(&d, &a, &why), PC_EINVAL);
    assert_non_null(strstr(why, "in flight"));
    assert_int_equal(a.n, 0);
    /* A success still in flight here waits for its repair, whatever the
     * kind: in another currency too (before, that one was adjusted, and the
     * capture booked the money again). */
    d = line_and_local("MISSING_LOCAL", "PAY", "SUCCESS", 700, "PENDING", 700);
    assert_int_equal(pc_recon_adjustment(&d, &a, &why), PC_EINVAL);
    assert_non_null(strstr(why, "in flight"));
    d = line_and_local("CURRENCY_MISMATCH", "PAY", "SUCCESS", 300, "PENDING", 2000);
    d.line_currency = "USD";
    assert_int_equal(pc_recon_adjustment(&d, &a, &why), PC_EINVAL);
    assert_non_null(strstr(why, "in flight"));
    assert_int_equal(a.n, 0);
    /* A type the ledger does not know. */
    d = line_and_local("MISSING_LOCAL", "CHARGEBACK", "SUCCESS", 700, NULL, 0);
    assert_int_equal(pc_recon_adjustment(&d, &a, &why), PC_EINVAL);
    /* A channel id that cannot name an account. */
    d = line_and_local("MISSING_LOCAL", "PAY", "SUCCESS", 700, NULL, 0);
    d.channel_id = "no such:channel";
    assert_int_equal(pc_recon_adjustment(&d, &a, &why), PC_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_money_we_never_heard_of_goes_to_suspense),
        cmocka_unit_test(test_success_missing_at_the_channel_is_taken_back),
        cmocka_unit_test(test_amount_mismatch_moves_the_difference_only),
        cmocka_unit_test(test_status_mismatch_either_way),
        cmocka_unit_test(test_fee_mismatch_moves_the_extra_fee),
        cmocka_unit_test(test_currency_mismatch_adjusts_both_currencies),
        cmocka_unit_test(test_duplicate_line_is_money_claimed_twice),
        cmocka_unit_test(test_differences_without_money_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
