/* The arithmetic of refunds without a database: the split over a payment's
 * parts (external, then balance, then coupon), where the merchant side of
 * the money comes from per product, and the ledger legs of accept, return
 * and success (each balanced, on the right accounts). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/error.h"
#include "refund/refund_plan.h"

#include <string.h>

static void test_split_takes_the_external_part_first(void **state)
{
    (void)state;
    pc_refund_parts_t left = {600, 300, 100}, out;
    assert_int_equal(pc_refund_split(400, &left, &out), 0);
    assert_int_equal(out.external, 400);
    assert_int_equal(out.balance, 0);
    assert_int_equal(out.coupon, 0);
    assert_int_equal(pc_refund_split(700, &left, &out), 0);
    assert_int_equal(out.external, 600);
    assert_int_equal(out.balance, 100);
    assert_int_equal(out.coupon, 0);
    assert_int_equal(pc_refund_split(1000, &left, &out), 0);
    assert_int_equal(out.external, 600);
    assert_int_equal(out.balance, 300);
    assert_int_equal(out.coupon, 100);
}

static void test_split_after_earlier_refunds_continues_in_order(void **state)
{
    (void)state;
    /* 600 external already refunded: what is left is balance, then coupon. */
    pc_refund_parts_t left = {0, 300, 100}, out;
    assert_int_equal(pc_refund_split(350, &left, &out), 0);
    assert_int_equal(out.external, 0);
    assert_int_equal(out.balance, 300);
    assert_int_equal(out.coupon, 50);
}

static void test_split_refuses_more_than_is_left_or_nonsense(void **state)
{
    (void)state;
    pc_refund_parts_t left = {600, 300, 100}, out;
    assert_int_equal(pc_refund_split(1001, &left, &out), PC_EINVAL);
    assert_int_equal(out.external + out.balance + out.coupon, 0);
    assert_int_equal(pc_refund_split(0, &left, &out), PC_EINVAL);
    assert_int_equal(pc_refund_split(-5, &left, &out), PC_EINVAL);
    pc_refund_parts_t negative = {-1, 300, 100};
    assert_int_equal(pc_refund_split(10, &negative, &out), PC_EINVAL);
    /* Near the int64 limit nothing overflows. */
    pc_refund_parts_t big = {INT64_MAX, INT64_MAX, INT64_MAX};
    assert_int_equal(pc_refund_split(INT64_MAX, &big, &out), 0);
    assert_true(out.external == INT64_MAX && out.balance == 0);
}

static void test_instant_takes_pending_then_available(void **state)
{
    (void)state;
    pc_refund_funds_t f = {
        .product = PC_REFUND_INSTANT, .amount = 1000, .pending = 700, .available = 5000};
    pc_refund_sources_t s;
    assert_int_equal(pc_refund_plan_sources(&f, &s), 0);
    assert_int_equal(s.pending, 700);
    assert_int_equal(s.available, 300);
    assert_int_equal(s.receivable + s.escrow + s.wallet, 0);
    assert_int_equal(pc_refund_sources_total(&s), 1000);
}

static void test_short_merchant_is_refused_unless_advance_funded(void **state)
{
    (void)state;
    pc_refund_funds_t f = {
        .product = PC_REFUND_INSTANT, .amount = 1000, .pending = 400, .available = 100};
    pc_refund_sources_t s;
    assert_int_equal(pc_refund_plan_sources(&f, &s), PC_REFUND_INSUFFICIENT);
    assert_int_equal(pc_refund_sources_total(&s), 0);
    f.advance_funding = 1;
    assert_int_equal(pc_refund_plan_sources(&f, &s), 0);
    assert_int_equal(s.pending, 400);
    assert_int_equal(s.available, 100);
    assert_int_equal(s.receivable, 500);
}

static void test_guarantee_takes_unsettled_escrow_first(void **state)
{
    (void)state;
    pc_refund_funds_t f = {.product = PC_REFUND_GUARANTEE,
                           .amount = 500,
                           .escrow_unsettled = 400,
                           .pending = 50,
                           .available = 100};
    pc_refund_sources_t s;
    assert_int_equal(pc_refund_plan_sources(&f, &s), 0);
    assert_int_equal(s.escrow, 400);
    assert_int_equal(s.pending, 50);
    assert_int_equal(s.available, 50);
}

static void test_recharge_takes_the_wallet(void **state)
{
    (void)state;
    pc_refund_funds_t f = {
        .product = PC_REFUND_RECHARGE, .amount = 500, .wallet = 300, .pending = 10000};
    pc_refund_sources_t s;
    /* The merchant's own money is not used for a wallet that was spent,
     * nor advanced (owed) by it: the buyer spent that money elsewhere. */
    assert_int_equal(pc_refund_plan_sources(&f, &s), PC_REFUND_INSUFFICIENT);
    f.advance_funding = 1;
    assert_int_equal(pc_refund_plan_sources(&f, &s), PC_REFUND_INSUFFICIENT);
    assert_int_equal(pc_refund_sources_total(&s), 0);
    f.advance_funding = 0;
    f.wallet = 800;
    assert_int_equal(pc_refund_plan_sources(&f, &s), 0);
    assert_int_equal(s.wallet, 500);
    assert_int_equal(s.pending, 0);
}

static int64_t sum_legs(const pc_refund_legs_t *l)
{
    int64_t sum = 0;
    for (size_t i = 0; i < l->n; i++)
        sum += l->legs[i].amount;
    return sum;
}

static int64_t leg_of(const pc_refund_legs_t *l, const char *account)
{
    int64_t sum = 0;
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->legs[i].account_id, account))
            sum += l->legs[i].amount;
    return sum;
}

static void test_accept_and_return_legs_mirror_each_other(void **state)
{
    (void)state;
    pc_refund_sources_t s = {.escrow = 100, .pending = 300, .available = 200, .receivable = 50};
    pc_refund_parties_t who = {"m_1", "b_1", "sim_card", NULL, "CNY", 0};
    pc_refund_legs_t a, r;
    assert_int_equal(pc_refund_legs_accept(&s, &who, &a), 0);
    assert_int_equal(a.n, 4);
    assert_int_equal(sum_legs(&a), 0);
    assert_int_equal(leg_of(&a, "merchant:m_1:pending:CNY"), -300);
    assert_int_equal(leg_of(&a, "merchant:m_1:available:CNY"), -200);
    assert_int_equal(leg_of(&a, "merchant:m_1:receivable:CNY"), -50);
    /* The escrow source stays where it is: only the rest moves in. */
    assert_int_equal(leg_of(&a, "platform:escrow:CNY"), 550);
    assert_int_equal(pc_refund_legs_return(&s, &who, &r), 0);
    assert_int_equal(r.n, a.n);
    for (size_t i = 0; i < a.n; i++) {
        assert_string_equal(r.legs[i].account_id, a.legs[i].account_id);
        assert_int_equal(r.legs[i].amount, -a.legs[i].amount);
        assert_string_equal(r.legs[i].currency, "CNY");
    }
    char err[160];
    assert_int_equal(
        pc_ledger_validate(&(pc_ledger_txn_t){"REFUND_ACCEPT", "refund", "R1", NULL, a.legs, a.n},
                           err, sizeof err),
        0);
}

static void test_nothing_moves_at_accept_when_escrow_holds_it_all(void **state)
{
    (void)state;
    pc_refund_sources_t s = {.escrow = 500};
    pc_refund_parties_t who = {"m_1", NULL, NULL, NULL, "CNY", 0};
    pc_refund_legs_t a;
    assert_int_equal(pc_refund_legs_accept(&s, &who, &a), 0);
    assert_int_equal(a.n, 0);
}

static void test_wallet_source_needs_a_buyer(void **state)
{
    (void)state;
    pc_refund_sources_t s = {.wallet = 500};
    pc_refund_parties_t who = {"m_1", NULL, NULL, NULL, "CNY", 0};
    pc_refund_legs_t a;
    assert_int_equal(pc_refund_legs_accept(&s, &who, &a), PC_EINVAL);
    who.buyer_id = "b_9";
    assert_int_equal(pc_refund_legs_accept(&s, &who, &a), 0);
    assert_int_equal(leg_of(&a, "buyer:b_9:wallet:CNY"), -500);
    assert_int_equal(leg_of(&a, "platform:escrow:CNY"), 500);
}

static void test_success_pays_each_part_where_it_goes(void **state)
{
    (void)state;
    pc_refund_parts_t parts = {600, 300, 100};
    pc_refund_parties_t who = {"m_1", "b_1", "sim_card", NULL, "CNY", 0};
    pc_refund_legs_t l;
    assert_int_equal(pc_refund_legs_success(&parts, &who, &l), 0);
    assert_int_equal(sum_legs(&l), 0);
    assert_int_equal(leg_of(&l, "platform:escrow:CNY"), -1000);
    assert_int_equal(leg_of(&l, "channel:sim_card:clearing:CNY"), 600);
    assert_int_equal(leg_of(&l, "buyer:b_1:wallet:CNY"), 300);
    assert_int_equal(leg_of(&l, "platform:marketing:CNY"), 100);
    /* A merchant-funded coupon goes back to that merchant. */
    who.coupon_funder = "m_2";
    assert_int_equal(pc_refund_legs_success(&parts, &who, &l), 0);
    assert_int_equal(leg_of(&l, "merchant:m_2:pending:CNY"), 100);
    assert_int_equal(leg_of(&l, "platform:marketing:CNY"), 0);
    /* An error refund gives it back to the receivable its payment took it
     * from. */
    who.error = 1;
    assert_int_equal(pc_refund_legs_success(&parts, &who, &l), 0);
    assert_int_equal(leg_of(&l, "merchant:m_2:receivable:CNY"), 100);
    assert_int_equal(leg_of(&l, "merchant:m_2:pending:CNY"), 0);
    assert_int_equal(sum_legs(&l), 0);
}

static void test_success_refuses_parts_without_their_owner(void **state)
{
    (void)state;
    pc_refund_parts_t parts = {600, 0, 0};
    pc_refund_parties_t who = {"m_1", "b_1", NULL, NULL, "CNY", 0};
    pc_refund_legs_t l;
    assert_int_equal(pc_refund_legs_success(&parts, &who, &l), PC_EINVAL);
    parts = (pc_refund_parts_t){0, 300, 0};
    who.buyer_id = "";
    assert_int_equal(pc_refund_legs_success(&parts, &who, &l), PC_EINVAL);
    /* A bad owner id is the ledger's refusal, and nothing is half-built. */
    parts = (pc_refund_parts_t){10, 0, 0};
    who.channel_id = "bad id with spaces";
    assert_int_not_equal(pc_refund_legs_success(&parts, &who, &l), 0);
    assert_int_equal(l.n, 0);
}

static void test_product_names(void **state)
{
    (void)state;
    pc_refund_product_t p;
    assert_int_equal(pc_refund_product_parse("GUARANTEE", &p), 0);
    assert_int_equal(p, PC_REFUND_GUARANTEE);
    assert_int_equal(pc_refund_product_parse("instant", &p), PC_EINVAL);
    assert_int_equal(pc_refund_product_parse(NULL, &p), PC_EINVAL);
}

/* Receivers of a trade of paid, each with what it got and still holds. */
static void receivers(pc_refund_receiver_t *rv, size_t n, const int64_t *received,
                      const int64_t *refunded)
{
    for (size_t i = 0; i < n; i++) {
        memset(&rv[i], 0, sizeof rv[i]);
        rv[i].account[0] = (char)('A' + i);
        rv[i].received = received[i];
        rv[i].refunded = refunded[i];
        rv[i].pending = received[i] - refunded[i];
        rv[i].asked = -1;
    }
}

/* 1000 split 500/500 (the merchant keeps nothing). A refund of 1 takes
 * floor(1 * 500 / 1000) = 0 from each: the merchant funds it. The whole rest
 * (999) then finds 1000 still with the receivers. Before, that refund was
 * refused ("splits add up to more than the amount"): the trade could never
 * be refunded in full. Now the receivers give back 999 in proportion. */
static void test_last_refund_takes_no_more_than_its_amount_from_receivers(void **state)
{
    (void)state;
    pc_refund_receiver_t rv[3];
    pc_refund_share_t out[3];
    int bad;
    receivers(rv, 2, (const int64_t[]){500, 500}, (const int64_t[]){0, 0});
    assert_int_equal(pc_refund_plan_splits(1, 0, 1000, 0, 0, rv, 2, out, &bad), 0);
    assert_int_equal(pc_refund_shares_total(out, 2), 0);
    assert_int_equal(pc_refund_plan_splits(999, 0, 1000, 1, 0, rv, 2, out, &bad), 0);
    assert_int_equal(out[0].amount, 500);
    assert_int_equal(out[1].amount, 499);
    assert_int_equal(out[0].pending, 500);
    /* 1000 split 333 three ways, 500 refunded (166 each, the merchant 2):
     * the rest, 500, finds 501 with them. */
    receivers(rv, 3, (const int64_t[]){333, 333, 333}, (const int64_t[]){166, 166, 166});
    assert_int_equal(pc_refund_plan_splits(500, 0, 1000, 1, 0, rv, 3, out, &bad), 0);
    assert_int_equal(pc_refund_shares_total(out, 3), 500);
    for (int i = 0; i < 3; i++)
        assert_true(out[i].amount >= 166 && out[i].amount <= 167);
    /* A receiver with nothing left gets no unit of the remainder. */
    receivers(rv, 3, (const int64_t[]){300, 300, 300}, (const int64_t[]){300, 0, 0});
    assert_int_equal(pc_refund_plan_splits(7, 0, 1000, 1, 0, rv, 3, out, &bad), 0);
    assert_int_equal(out[0].amount, 0);
    assert_int_equal(out[1].amount + out[2].amount, 7);
    /* Amounts the merchant names that add up to more than the refund are
     * still refused, on the last refund too: only shares paycore works out
     * are trimmed. */
    receivers(rv, 2, (const int64_t[]){500, 500}, (const int64_t[]){0, 0});
    rv[0].asked = 400;
    rv[1].asked = 400;
    assert_int_equal(pc_refund_plan_splits(500, 0, 1000, 1, 0, rv, 2, out, &bad), PC_EINVAL);
}

/* Partial refunds one after another: each receiver's share is of all the
 * refunds so far, rounded once, so the rounding is not lost at every
 * refund. Ten refunds of 199 of a 1990 trade split 995/995 take 995 from
 * each (before: 991 and 990, the merchant paying 9 from other sales); a
 * hundred refunds of 1 of a 100 trade split 33 to one receiver take its 33
 * (before: 0 until the last, which took 1). No refund takes more from the
 * receivers than its amount. */
static void refunds_one_after_another(int64_t paid, int64_t each, int count, size_t n,
                                      const int64_t *received)
{
    pc_refund_receiver_t rv[3];
    pc_refund_share_t out[3];
    int bad;
    receivers(rv, n, received, (const int64_t[]){0, 0, 0});
    for (int i = 0; i < count; i++) {
        int last = i == count - 1 && each * count == paid;
        assert_int_equal(pc_refund_plan_splits(each, i * each, paid, last, 0, rv, n, out, &bad), 0);
        assert_true(pc_refund_shares_total(out, n) <= each);
        for (size_t k = 0; k < n; k++) {
            rv[k].refunded += out[k].amount;
            rv[k].pending -= out[k].amount;
            /* Never more than one unit ahead of or behind its true share. */
            int64_t fair = (i + 1) * each * received[k] / paid;
            assert_true(rv[k].refunded >= fair - 1 && rv[k].refunded <= fair + 1);
        }
    }
    /* All of it back, but for a unit the last refund had no room for. */
    for (size_t k = 0; k < n; k++)
        assert_true(rv[k].refunded >= received[k] - 1 && rv[k].refunded <= received[k]);
}

static void test_partial_refunds_do_not_lose_the_rounding_each_time(void **state)
{
    (void)state;
    refunds_one_after_another(1990, 199, 10, 2, (const int64_t[]){995, 995});
    refunds_one_after_another(100, 1, 100, 1, (const int64_t[]){33});
    refunds_one_after_another(1000, 100, 10, 3, (const int64_t[]){333, 333, 333});
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_takes_the_external_part_first),
        cmocka_unit_test(test_partial_refunds_do_not_lose_the_rounding_each_time),
        cmocka_unit_test(test_split_after_earlier_refunds_continues_in_order),
        cmocka_unit_test(test_split_refuses_more_than_is_left_or_nonsense),
        cmocka_unit_test(test_instant_takes_pending_then_available),
        cmocka_unit_test(test_short_merchant_is_refused_unless_advance_funded),
        cmocka_unit_test(test_guarantee_takes_unsettled_escrow_first),
        cmocka_unit_test(test_recharge_takes_the_wallet),
        cmocka_unit_test(test_accept_and_return_legs_mirror_each_other),
        cmocka_unit_test(test_nothing_moves_at_accept_when_escrow_holds_it_all),
        cmocka_unit_test(test_wallet_source_needs_a_buyer),
        cmocka_unit_test(test_success_pays_each_part_where_it_goes),
        cmocka_unit_test(test_success_refuses_parts_without_their_owner),
        cmocka_unit_test(test_product_names),
        cmocka_unit_test(test_last_refund_takes_no_more_than_its_amount_from_receivers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
