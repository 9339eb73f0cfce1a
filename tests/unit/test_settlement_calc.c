/* Settlement arithmetic without a database: the fee's rounding, what moves
 * when refunds or chargeback holds took part of the due money, the fee and
 * debts recovered, and legs that always balance. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/error.h"
#include "settlement/settlement_calc.h"

#include <string.h>

static int64_t leg(const pc_settle_legs_t *l, const char *account)
{
    int64_t sum = 0;
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->legs[i].account_id, account))
            sum += l->legs[i].amount;
    return sum;
}

static void assert_legs_balance(const pc_settle_out_t *o)
{
    pc_settle_legs_t l;
    assert_int_equal(pc_settle_legs("m1", "CNY", o, &l), 0);
    if (l.n == 0)
        return;
    pc_ledger_txn_t txn = {"SETTLEMENT", "settlement", "ST1", NULL, l.legs, l.n};
    char err[128];
    assert_int_equal(pc_ledger_validate(&txn, err, sizeof err), 0);
}

static void test_fee_rounds_half_up_without_overflow(void **state)
{
    (void)state;
    assert_int_equal(pc_settle_fee(10000, 60), 60);
    assert_int_equal(pc_settle_fee(1999, 60), 12); /* 11.994 */
    assert_int_equal(pc_settle_fee(2500, 60), 15); /* 15.0 */
    assert_int_equal(pc_settle_fee(2083, 60), 12); /* 12.498 */
    assert_int_equal(pc_settle_fee(2084, 60), 13); /* 12.504 */
    assert_int_equal(pc_settle_fee(250, 200), 5);  /* 5.0 */
    assert_int_equal(pc_settle_fee(25, 200), 1);   /* 0.5 rounds up */
    assert_int_equal(pc_settle_fee(24, 200), 0);   /* 0.48 */
    assert_int_equal(pc_settle_fee(0, 60), 0);
    assert_int_equal(pc_settle_fee(-5, 60), 0);
    assert_int_equal(pc_settle_fee(12345, 0), 0);
    assert_int_equal(pc_settle_fee(12345, 10000), 12345);
    /* INT64_MAX × 10000 does not fit in int64; the result must still be exact. */
    int64_t big = INT64_MAX;
    __int128 want = ((__int128)big * 9999 + 5000) / 10000;
    assert_true((__int128)pc_settle_fee(big, 9999) == want);
}

static void test_plain_day_moves_gross_less_fee(void **state)
{
    (void)state;
    pc_settle_in_t in = {.gross = 30000, .sales = 30000, .pending = 30000, .fee_rate_bp = 60};
    pc_settle_out_t o;
    assert_int_equal(pc_settle_compute(&in, &o), 0);
    assert_int_equal(o.fee, 180);
    assert_int_equal(o.moved, 30000);
    assert_int_equal(o.shortfall, 0);
    assert_int_equal(o.net, 29820);
    pc_settle_legs_t l;
    assert_int_equal(pc_settle_legs("m1", "CNY", &o, &l), 0);
    assert_int_equal(leg(&l, "merchant:m1:pending:CNY"), -30000);
    assert_int_equal(leg(&l, "platform:fee_income:CNY"), 180);
    assert_int_equal(leg(&l, "merchant:m1:available:CNY"), 29820);
    assert_int_equal(l.n, 3);
    assert_legs_balance(&o);
}

static void test_chargeback_hold_shortfall_and_owed_recovery(void **state)
{
    (void)state;
    /* 30000 due, but a chargeback hold took 5000 of pending already, and the
     * merchant owes 1000 from an earlier chargeback. */
    pc_settle_in_t in = {
        .gross = 30000, .sales = 30000, .pending = 25000, .receivable = -1000, .fee_rate_bp = 60};
    pc_settle_out_t o;
    assert_int_equal(pc_settle_compute(&in, &o), 0);
    assert_int_equal(o.moved, 25000);
    assert_int_equal(o.shortfall, 5000);
    assert_int_equal(o.fee, 180);
    assert_int_equal(o.owed_before, 1000);
    assert_int_equal(o.owed_recovered, 1000);
    assert_int_equal(o.net, 25000 - 180 - 1000);
    pc_settle_legs_t l;
    assert_int_equal(pc_settle_legs("m1", "CNY", &o, &l), 0);
    assert_int_equal(leg(&l, "merchant:m1:receivable:CNY"), 1000);
    assert_legs_balance(&o);
    /* More owed than there is: all of it goes to the debt, nothing to available. */
    in.receivable = -90000;
    assert_int_equal(pc_settle_compute(&in, &o), 0);
    assert_int_equal(o.owed_recovered, 25000 - 180);
    assert_int_equal(o.net, 0);
    assert_legs_balance(&o);
}

static void test_fee_larger_than_what_is_left_is_owed(void **state)
{
    (void)state;
    /* The sale was refunded from pending before settlement: the fee stays due. */
    pc_settle_in_t in = {.gross = 10000, .sales = 10000, .pending = 20, .fee_rate_bp = 60};
    pc_settle_out_t o;
    assert_int_equal(pc_settle_compute(&in, &o), 0);
    assert_int_equal(o.moved, 20);
    assert_int_equal(o.fee_from_pending, 20);
    assert_int_equal(o.fee_owed, 40);
    assert_int_equal(o.net, 0);
    pc_settle_legs_t l;
    assert_int_equal(pc_settle_legs("m1", "CNY", &o, &l), 0);
    assert_int_equal(leg(&l, "merchant:m1:receivable:CNY"), -40);
    assert_int_equal(leg(&l, "platform:fee_income:CNY"), 60);
    assert_legs_balance(&o);
}

/* Due money refunded from pending, with money not due yet in pending too:
 * what is not due stays (before, min(gross, pending) released it early). */
static void test_money_not_due_yet_never_moves(void **state)
{
    (void)state;
    pc_settle_in_t in = {
        .gross = 8000, .sales = 8000, .pending = 5000, .later = 5000, .fee_rate_bp = 60};
    pc_settle_out_t o;
    assert_int_equal(pc_settle_compute(&in, &o), 0);
    assert_int_equal(o.moved, 0);
    assert_int_equal(o.shortfall, 8000);
    assert_int_equal(o.fee_owed, 48);
    assert_int_equal(o.net, 0);
    assert_legs_balance(&o);
    /* Part of it refunded: the rest of the due money moves, not more. */
    in = (pc_settle_in_t){
        .gross = 8000, .sales = 8000, .pending = 9000, .later = 5000, .fee_rate_bp = 60};
    assert_int_equal(pc_settle_compute(&in, &o), 0);
    assert_int_equal(o.moved, 4000);
    assert_int_equal(o.net, 4000 - 48);
    assert_legs_balance(&o);
    /* Nothing refunded: all of it. */
    in.pending = 13000;
    assert_int_equal(pc_settle_compute(&in, &o), 0);
    assert_int_equal(o.moved, 8000);
    assert_legs_balance(&o);
}

static void test_non_sales_carry_no_fee_and_nothing_due_moves_nothing(void **state)
{
    (void)state;
    /* A released chargeback hold (not a sale) comes back without a fee. */
    pc_settle_in_t in = {.gross = 700, .sales = 0, .pending = 5000, .fee_rate_bp = 60};
    pc_settle_out_t o;
    assert_int_equal(pc_settle_compute(&in, &o), 0);
    assert_int_equal(o.fee, 0);
    assert_int_equal(o.net, 700);
    in = (pc_settle_in_t){.gross = 0, .sales = 0, .pending = 5000, .fee_rate_bp = 60};
    assert_int_equal(pc_settle_compute(&in, &o), 0);
    pc_settle_legs_t l;
    assert_int_equal(pc_settle_legs("m1", "CNY", &o, &l), 0);
    assert_int_equal(l.n, 0);
}

/* A positive receivable is money the platform owes the merchant (an
 * advance-funded refund, recovered by a statement, then failed, gives its
 * amount back there): the statement pays it to available. It was left
 * there for good (found by the fifth audit). */
static void test_positive_receivable_is_paid_to_available(void **state)
{
    (void)state;
    pc_settle_in_t in = {
        .gross = 0, .sales = 0, .pending = 0, .receivable = 100, .fee_rate_bp = 60};
    pc_settle_out_t o;
    assert_int_equal(pc_settle_compute(&in, &o), 0);
    assert_int_equal(o.receivable_released, 100);
    assert_int_equal(o.net, 100);
    assert_int_equal(o.owed_before, 0);
    pc_settle_legs_t l;
    assert_int_equal(pc_settle_legs("m1", "CNY", &o, &l), 0);
    assert_int_equal(leg(&l, "merchant:m1:receivable:CNY"), -100);
    assert_int_equal(leg(&l, "merchant:m1:available:CNY"), 100);
    assert_legs_balance(&o);
    /* With a day's sales whose fee cannot all be paid from pending: the fee
     * owed stays a debt, the credit is paid whole. */
    in = (pc_settle_in_t){
        .gross = 10000, .sales = 10000, .pending = 20, .receivable = 100, .fee_rate_bp = 60};
    assert_int_equal(pc_settle_compute(&in, &o), 0);
    assert_int_equal(o.fee_owed, 40);
    assert_int_equal(o.net, 100);
    assert_int_equal(pc_settle_legs("m1", "CNY", &o, &l), 0);
    assert_int_equal(leg(&l, "merchant:m1:receivable:CNY"), -140);
    assert_int_equal(leg(&l, "merchant:m1:available:CNY"), 100);
    assert_legs_balance(&o);
    /* The statement adds up as its table checks it. */
    assert_int_equal(o.moved + o.receivable_released,
                     o.fee - o.fee_owed + o.owed_recovered + o.net);
}

static void test_bad_inputs_are_refused(void **state)
{
    (void)state;
    pc_settle_out_t o;
    pc_settle_in_t in = {.gross = 10, .sales = 11, .pending = 10, .fee_rate_bp = 60};
    assert_int_equal(pc_settle_compute(&in, &o), PC_EINVAL);
    in = (pc_settle_in_t){.gross = -1};
    assert_int_equal(pc_settle_compute(&in, &o), PC_EINVAL);
    in = (pc_settle_in_t){.gross = 1, .fee_rate_bp = 10001};
    assert_int_equal(pc_settle_compute(&in, &o), PC_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fee_rounds_half_up_without_overflow),
        cmocka_unit_test(test_plain_day_moves_gross_less_fee),
        cmocka_unit_test(test_money_not_due_yet_never_moves),
        cmocka_unit_test(test_chargeback_hold_shortfall_and_owed_recovery),
        cmocka_unit_test(test_fee_larger_than_what_is_left_is_owed),
        cmocka_unit_test(test_non_sales_carry_no_fee_and_nothing_due_moves_nothing),
        cmocka_unit_test(test_positive_receivable_is_paid_to_available),
        cmocka_unit_test(test_bad_inputs_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
