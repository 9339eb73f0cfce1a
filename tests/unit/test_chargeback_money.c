/* The chargeback money rules without a database: where a frozen amount is
 * taken from, where a release sends it, and the legs of every outcome
 * (balanced, right accounts, right signs). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "chargeback/chargeback_money.h"
#include "core/error.h"

#include <string.h>

static int64_t leg(const pc_cb_legs_t *l, const char *account)
{
    int64_t sum = 0;
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->legs[i].account_id, account))
            sum += l->legs[i].amount;
    return sum;
}

static void assert_balanced(const pc_cb_legs_t *l)
{
    pc_ledger_txn_t txn = {"CHARGEBACK_TEST", "chargeback", "CB1", NULL, l->legs, l->n};
    char err[128];
    assert_int_equal(pc_ledger_validate(&txn, err, sizeof err), 0);
}

static void test_hold_takes_pending_then_available_then_owed(void **state)
{
    (void)state;
    pc_cb_hold_t h;
    assert_int_equal(pc_cb_hold_split(1000, 5000, 5000, &h), 0);
    assert_int_equal(h.from_pending, 1000);
    assert_int_equal(h.from_available, 0);
    assert_int_equal(h.owed, 0);
    assert_int_equal(pc_cb_hold_split(1000, 300, 500, &h), 0);
    assert_int_equal(h.from_pending, 300);
    assert_int_equal(h.from_available, 500);
    assert_int_equal(h.owed, 200);
    assert_int_equal(pc_cb_hold_split(1000, 0, 0, &h), 0);
    assert_int_equal(h.owed, 1000);
    /* A negative balance counts as nothing there. */
    assert_int_equal(pc_cb_hold_split(1000, -50, 2000, &h), 0);
    assert_int_equal(h.from_pending, 0);
    assert_int_equal(h.from_available, 1000);
    assert_int_equal(pc_cb_hold_split(0, 10, 10, &h), PC_EINVAL);
    assert_int_equal(pc_cb_hold_split(-5, 10, 10, &h), PC_EINVAL);
}

static void test_release_repays_only_what_is_still_owed(void **state)
{
    (void)state;
    pc_cb_hold_t h = {300, 500, 200, 0, 0};
    pc_cb_release_t r;
    /* Still owed in full: the owed part goes back to the receivable. */
    assert_int_equal(pc_cb_release_split(&h, 200, &r), 0);
    assert_int_equal(r.to_pending, 300);
    assert_int_equal(r.to_available, 500);
    assert_int_equal(r.to_receivable, 200);
    /* A settlement recovered 150 of it meanwhile: that part is the merchant's. */
    assert_int_equal(pc_cb_release_split(&h, 50, &r), 0);
    assert_int_equal(r.to_receivable, 50);
    assert_int_equal(r.to_available, 650);
    /* Nothing owed now (and the merchant owes more for other reasons: capped). */
    assert_int_equal(pc_cb_release_split(&h, 0, &r), 0);
    assert_int_equal(r.to_receivable, 0);
    assert_int_equal(r.to_available, 700);
    assert_int_equal(pc_cb_release_split(&h, 99999, &r), 0);
    assert_int_equal(r.to_receivable, 200);
    pc_cb_hold_t bad = {-1, 0, 0, 0, 0};
    assert_int_equal(pc_cb_release_split(&bad, 0, &r), PC_EINVAL);
}

static void test_freeze_legs_move_everything_into_the_reserve(void **state)
{
    (void)state;
    pc_cb_hold_t h = {300, 500, 200, 0, 0};
    pc_cb_legs_t l;
    assert_int_equal(pc_cb_legs_freeze("m1", "CNY", &h, &l), 0);
    assert_int_equal(l.n, 4);
    assert_int_equal(leg(&l, "merchant:m1:pending:CNY"), -300);
    assert_int_equal(leg(&l, "merchant:m1:available:CNY"), -500);
    assert_int_equal(leg(&l, "merchant:m1:receivable:CNY"), -200);
    assert_int_equal(leg(&l, "merchant:m1:reserve:CNY"), 1000);
    assert_balanced(&l);
    pc_cb_hold_t only_pending = {700, 0, 0, 0, 0};
    assert_int_equal(pc_cb_legs_freeze("m1", "CNY", &only_pending, &l), 0);
    assert_int_equal(l.n, 2);
    assert_balanced(&l);
    pc_cb_hold_t none = {0, 0, 0, 0, 0};
    assert_int_equal(pc_cb_legs_freeze("m1", "CNY", &none, &l), PC_EINVAL);
    assert_int_equal(pc_cb_legs_freeze("bad id!", "CNY", &only_pending, &l), PC_LEDGER_BAD_ACCOUNT);
}

static void test_merchant_liable_pays_the_channel_from_the_reserve(void **state)
{
    (void)state;
    pc_cb_legs_t l;
    assert_int_equal(
        pc_cb_legs_judge(PC_CB_LIABLE_MERCHANT, "m1", "sim_card", "CNY", 1000, NULL, &l), 0);
    assert_int_equal(l.n, 2);
    assert_int_equal(leg(&l, "merchant:m1:reserve:CNY"), -1000);
    assert_int_equal(leg(&l, "channel:sim_card:clearing:CNY"), 1000);
    assert_balanced(&l);
}

static void test_platform_liable_pays_from_loss_and_releases_the_reserve(void **state)
{
    (void)state;
    pc_cb_release_t r = {300, 650, 50};
    pc_cb_legs_t l;
    assert_int_equal(pc_cb_legs_judge(PC_CB_LIABLE_PLATFORM, "m1", "sim_card", "CNY", 1000, &r, &l),
                     0);
    assert_int_equal(leg(&l, "merchant:m1:reserve:CNY"), -1000);
    assert_int_equal(leg(&l, "merchant:m1:pending:CNY"), 300);
    assert_int_equal(leg(&l, "merchant:m1:available:CNY"), 650);
    assert_int_equal(leg(&l, "merchant:m1:receivable:CNY"), 50);
    assert_int_equal(leg(&l, "platform:loss:CNY"), -1000);
    assert_int_equal(leg(&l, "channel:sim_card:clearing:CNY"), 1000);
    assert_balanced(&l);
}

static void test_none_liable_only_releases_the_reserve(void **state)
{
    (void)state;
    pc_cb_release_t r = {0, 1000, 0};
    pc_cb_legs_t l;
    assert_int_equal(pc_cb_legs_judge(PC_CB_LIABLE_NONE, "m1", "sim_card", "CNY", 1000, &r, &l), 0);
    assert_int_equal(l.n, 2);
    assert_int_equal(leg(&l, "merchant:m1:available:CNY"), 1000);
    assert_int_equal(leg(&l, "channel:sim_card:clearing:CNY"), 0);
    assert_balanced(&l);
    /* A release that does not add up to the amount is refused. */
    pc_cb_release_t short_r = {0, 999, 0};
    assert_int_equal(
        pc_cb_legs_judge(PC_CB_LIABLE_NONE, "m1", "sim_card", "CNY", 1000, &short_r, &l),
        PC_EINVAL);
    assert_int_equal(pc_cb_legs_judge(PC_CB_LIABLE_NONE, "m1", "sim_card", "CNY", 1000, NULL, &l),
                     PC_EINVAL);
}

static void test_liable_names(void **state)
{
    (void)state;
    pc_cb_liable_t v;
    assert_int_equal(pc_cb_liable_parse("MERCHANT", &v), 0);
    assert_int_equal(v, PC_CB_LIABLE_MERCHANT);
    assert_int_equal(pc_cb_liable_parse("NONE", &v), 0);
    assert_int_equal(v, PC_CB_LIABLE_NONE);
    assert_int_equal(pc_cb_liable_parse("merchant", &v), PC_EINVAL);
    assert_int_equal(pc_cb_liable_parse(NULL, &v), PC_EINVAL);
    assert_string_equal(pc_cb_liable_name(PC_CB_LIABLE_PLATFORM), "PLATFORM");
    assert_string_equal(pc_cb_liable_name((pc_cb_liable_t)7), "?");
}

/* A case on a payment held in escrow for its error refund: the merchant
 * never had the money. A judgement for the cardholder pays the channel from
 * escrow (not the merchant's reserve, not the platform's loss); the
 * cardholder losing, or a close, moves nothing. */
static void test_a_case_held_from_escrow_pays_from_escrow_or_moves_nothing(void **state)
{
    (void)state;
    pc_cb_legs_t l;
    for (int liable = PC_CB_LIABLE_MERCHANT; liable <= PC_CB_LIABLE_PLATFORM; liable++) {
        assert_int_equal(
            pc_cb_legs_judge_escrow((pc_cb_liable_t)liable, 0, "sim_card", "CNY", 900, &l), 0);
        assert_int_equal(l.n, 2);
        assert_int_equal(leg(&l, "platform:escrow:CNY"), -900);
        assert_int_equal(leg(&l, "channel:sim_card:clearing:CNY"), 900);
        assert_balanced(&l);
    }
    assert_int_equal(pc_cb_legs_judge_escrow(PC_CB_LIABLE_NONE, 0, "sim_card", "CNY", 900, &l), 0);
    assert_int_equal(l.n, 0);
    assert_int_equal(pc_cb_legs_judge_escrow(PC_CB_LIABLE_MERCHANT, 1, "sim_card", "CNY", 900, &l),
                     0);
    assert_int_equal(l.n, 0);
    assert_int_equal(pc_cb_legs_judge_escrow(PC_CB_LIABLE_MERCHANT, 0, "sim_card", "CNY", 0, &l),
                     PC_EINVAL);
}

/* A case on an unsettled guarantee trade: U held from the trade's escrow,
 * the rest (a trade settled in part) frozen from the merchant. MERCHANT:
 * escrow and reserve both pay the channel; PLATFORM: the loss account pays
 * all of it, the reserve goes back to the merchant, escrow's part stays for
 * the trade to settle; NONE or a close: only the reserve is released. One
 * leg per account. */
static void test_a_case_held_from_unsettled_escrow(void **state)
{
    (void)state;
    pc_cb_legs_t l;
    pc_cb_hold_t mixed = {.from_pending = 300, .owed = 100, .from_unsettled = 600};
    pc_cb_release_t rel = {300, 100, 0};
    assert_int_equal(
        pc_cb_legs_decide(PC_CB_LIABLE_MERCHANT, 0, "m1", "sim_card", "CNY", &mixed, NULL, &l), 0);
    assert_int_equal(l.n, 3);
    assert_int_equal(leg(&l, "merchant:m1:reserve:CNY"), -400);
    assert_int_equal(leg(&l, "platform:escrow:CNY"), -600);
    assert_int_equal(leg(&l, "channel:sim_card:clearing:CNY"), 1000);
    assert_balanced(&l);
    assert_int_equal(
        pc_cb_legs_decide(PC_CB_LIABLE_PLATFORM, 0, "m1", "sim_card", "CNY", &mixed, &rel, &l), 0);
    assert_int_equal(l.n, 5);
    assert_int_equal(leg(&l, "merchant:m1:reserve:CNY"), -400);
    assert_int_equal(leg(&l, "merchant:m1:pending:CNY"), 300);
    assert_int_equal(leg(&l, "merchant:m1:available:CNY"), 100);
    assert_int_equal(leg(&l, "platform:loss:CNY"), -1000);
    assert_int_equal(leg(&l, "channel:sim_card:clearing:CNY"), 1000);
    assert_balanced(&l);
    for (int closing = 0; closing <= 1; closing++) {
        assert_int_equal(pc_cb_legs_decide(closing ? PC_CB_LIABLE_MERCHANT : PC_CB_LIABLE_NONE,
                                           closing, "m1", "sim_card", "CNY", &mixed, &rel, &l),
                         0);
        assert_int_equal(l.n, 3);
        assert_int_equal(leg(&l, "merchant:m1:reserve:CNY"), -400);
        assert_int_equal(leg(&l, "platform:escrow:CNY"), 0);
        assert_balanced(&l);
    }
    /* All of it from escrow: no reserve leg at all. */
    pc_cb_hold_t all = {.from_unsettled = 1000};
    assert_int_equal(
        pc_cb_legs_decide(PC_CB_LIABLE_MERCHANT, 0, "m1", "sim_card", "CNY", &all, NULL, &l), 0);
    assert_int_equal(l.n, 2);
    assert_int_equal(leg(&l, "platform:escrow:CNY"), -1000);
    assert_int_equal(leg(&l, "channel:sim_card:clearing:CNY"), 1000);
    assert_int_equal(
        pc_cb_legs_decide(PC_CB_LIABLE_PLATFORM, 0, "m1", "sim_card", "CNY", &all, NULL, &l), 0);
    assert_int_equal(l.n, 2);
    assert_int_equal(leg(&l, "platform:loss:CNY"), -1000);
    assert_int_equal(
        pc_cb_legs_decide(PC_CB_LIABLE_NONE, 0, "m1", "sim_card", "CNY", &all, NULL, &l), 0);
    assert_int_equal(l.n, 0);
    /* A case held for an error refund goes as before. */
    pc_cb_hold_t err = {.from_escrow = 900};
    assert_int_equal(
        pc_cb_legs_decide(PC_CB_LIABLE_PLATFORM, 0, "m1", "sim_card", "CNY", &err, NULL, &l), 0);
    assert_int_equal(leg(&l, "platform:escrow:CNY"), -900);
    pc_cb_hold_t nothing = {0}, negative = {.from_pending = -5, .from_unsettled = 10};
    assert_int_equal(
        pc_cb_legs_decide(PC_CB_LIABLE_NONE, 0, "m1", "sim_card", "CNY", &nothing, &rel, &l),
        PC_EINVAL);
    assert_int_equal(
        pc_cb_legs_decide(PC_CB_LIABLE_MERCHANT, 0, "m1", "sim_card", "CNY", &negative, NULL, &l),
        PC_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hold_takes_pending_then_available_then_owed),
        cmocka_unit_test(test_release_repays_only_what_is_still_owed),
        cmocka_unit_test(test_freeze_legs_move_everything_into_the_reserve),
        cmocka_unit_test(test_merchant_liable_pays_the_channel_from_the_reserve),
        cmocka_unit_test(test_platform_liable_pays_from_loss_and_releases_the_reserve),
        cmocka_unit_test(test_none_liable_only_releases_the_reserve),
        cmocka_unit_test(test_liable_names),
        cmocka_unit_test(test_a_case_held_from_escrow_pays_from_escrow_or_moves_nothing),
        cmocka_unit_test(test_a_case_held_from_unsettled_escrow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
