/* Refunds of split trades and coupons on refund (issue 12, README
 * "Refunds") against real paycore, PostgreSQL, Redis and paysim: split
 * receivers give back their shares proportionally by default or as the
 * request lists, never more than they got; a receiver without the balance
 * makes the refund fail unless the merchant is advance funded; a refund of
 * the whole rest of a payment returns an unexpired coupon, a partial one
 * returns cash only. The ledger check (and its split side) runs after every
 * test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pc_stack_t g_stack;
static int g_seq;

static int setup(void **state)
{
    (void)state;
    pc_stack_init(&g_stack, "refund_splits");
    pc_stack_env(&g_stack, "PAYCORE_REFUND_POLL_MS", "100");
    pc_stack_env(&g_stack, "PAYCORE_REFUND_QUERY_SCHEDULE_MS", "200,400,800");
    pc_stack_env(&g_stack, "PAYCORE_REFUND_SEND_GRACE_MS", "1000");
    pc_stack_start_paysim(&g_stack);
    pc_stack_start_node(&g_stack, 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    pc_stack_stop(&g_stack);
    return 0;
}

static int after_each(void **state)
{
    (void)state;
    assert_true(pc_t_ledger_ok(&g_stack));
    assert_int_equal(pc_t_sql_int(&g_stack, "SELECT ledger_check_refund_splits()"), 0);
    return 0;
}

static const char *fresh_buyer(void)
{
    static char id[32];
    snprintf(id, sizeof id, "sb_%d_%d", (int)getpid() % 10000, ++g_seq);
    char b[96];
    snprintf(b, sizeof b, "{\"buyer_id\":\"%s\"}", id);
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", "/admin/buyers", b);
    assert_int_equal(r.status, 201);
    pc_t_resp_free(&r);
    return id;
}

static const char *g_product = "INSTANT";

static void new_trade(const pc_t_merchant_t *m, long amount, const char *buyer, const char *extra,
                      char *tn)
{
    char body[768], key[64];
    g_seq++;
    snprintf(body, sizeof body,
             "{\"out_trade_no\":\"ST%d-%ld\",\"product\":\"%s\",\"amount\":%ld,\"currency\":"
             "\"CNY\",\"subject\":\"Goods\",\"buyer_id\":\"%s\"%s%s}",
             g_seq, (long)getpid(), g_product, amount, buyer, extra ? "," : "", extra ? extra : "");
    snprintf(key, sizeof key, "trade-%d", g_seq);
    pc_t_resp_t r = pc_t_call(&g_stack, m, "POST", "/v1/trades", body, key);
    if (r.status != 201)
        fprintf(stderr, "trade: %ld %s\n", r.status, r.body);
    assert_int_equal(r.status, 201);
    snprintf(tn, 40, "%s", pc_t_jstr(&r, "trade_no"));
    pc_t_resp_free(&r);
}

static void pay(const pc_t_merchant_t *m, const char *tn, const char *buyer, const char *extra)
{
    char body[1024], key[64];
    g_seq++;
    snprintf(body, sizeof body,
             "{\"trade_no\":\"%s\",\"buyer_id\":\"%s\",\"method_id\":\"CARD\",\"client\":{\"ip\":"
             "\"10.2.0.%d\",\"device_id\":\"sdev-%d\",\"platform\":\"WEB\"},%s}",
             tn, buyer, g_seq % 200, g_seq, extra ? extra : pc_t_fresh_card());
    snprintf(key, sizeof key, "pay-%d", g_seq);
    pc_t_resp_t r = pc_t_call(&g_stack, m, "POST", "/v1/cashier/pay", body, key);
    if (strcmp(pc_t_jstr(&r, "status"), "SUCCESS") != 0)
        fprintf(stderr, "pay: %ld %s\n", r.status, r.body);
    assert_string_equal(pc_t_jstr(&r, "status"), "SUCCESS");
    pc_t_resp_free(&r);
}

/* A trade of m paid by card; splits_json like "\"splits\":[...]" or NULL. */
static void paid_trade(const pc_t_merchant_t *m, long amount, const char *splits_json, char *tn)
{
    char buyer[32];
    snprintf(buyer, sizeof buyer, "%s", fresh_buyer());
    new_trade(m, amount, buyer, splits_json, tn);
    pay(m, tn, buyer, NULL);
}

static pc_t_resp_t refund(const pc_t_merchant_t *m, const char *tn, const char *out_no, long amount,
                          const char *extra)
{
    char body[1024], key[96];
    snprintf(body, sizeof body, "{\"trade_no\":\"%s\",\"out_refund_no\":\"%s\",\"amount\":%ld%s%s}",
             tn, out_no, amount, extra ? "," : "", extra ? extra : "");
    snprintf(key, sizeof key, "refund-%s-%d", out_no, ++g_seq);
    return pc_t_call(&g_stack, m, "POST", "/v1/refunds", body, key);
}

static void refund_ok(const pc_t_merchant_t *m, const char *tn, const char *out_no, long amount,
                      const char *extra, char *rno)
{
    pc_t_resp_t r = refund(m, tn, out_no, amount, extra);
    if (r.status != 200)
        fprintf(stderr, "refund: %ld %s\n", r.status, r.body);
    assert_int_equal(r.status, 200);
    snprintf(rno, 40, "%s", pc_t_jstr(&r, "refund_no"));
    pc_t_resp_free(&r);
}

static long long refund_int(const char *rno, const char *col)
{
    return pc_t_sql_int(&g_stack, "SELECT %s FROM refunds WHERE refund_no = '%s'", col, rno);
}

/* What refund rno takes back from receiver acct (its refunds.splits). */
static long long split_of(const char *rno, const char *acct, const char *field)
{
    return pc_t_sql_int(&g_stack,
                        "SELECT coalesce((SELECT (s->>'%s')::bigint FROM refunds r, "
                        "jsonb_array_elements(r.splits) s WHERE r.refund_no = '%s' AND "
                        "s->>'account' = '%s'), 0)",
                        field, rno, acct);
}

static void expect_refund(const char *rno, const char *want)
{
    char *st = NULL;
    for (int i = 0; i < 150; i++) {
        free(st);
        st = pc_t_sql(&g_stack, "SELECT status FROM refunds WHERE refund_no = '%s'", rno);
        if (st && !strcmp(st, want))
            break;
        usleep(50000);
    }
    if (strcmp(st, want) != 0)
        fprintf(stderr, "refund %s is %s, want %s\n", rno, st, want);
    assert_string_equal(st, want);
    free(st);
}

static long long balance(const char *account)
{
    return pc_t_sql_int(&g_stack, "SELECT coalesce(ledger_balance('%s'), 0)", account);
}

static long long pending_of(const pc_t_merchant_t *m)
{
    char a[128];
    snprintf(a, sizeof a, "merchant:%s:pending:CNY", m->id);
    return balance(a);
}

/* The refund object as GET /v1/refunds/{no} answers it; caller decrefs. */
static json_t *refund_object(const pc_t_merchant_t *m, const char *rno)
{
    char path[96];
    snprintf(path, sizeof path, "/v1/refunds/%s", rno);
    pc_t_resp_t r = pc_t_call(&g_stack, m, "GET", path, NULL, NULL);
    assert_int_equal(r.status, 200);
    json_t *j = pc_t_json(&r);
    pc_t_resp_free(&r);
    assert_non_null(j);
    return j;
}

static void test_split_refund_is_proportional_by_default(void **state)
{
    (void)state;
    pc_t_merchant_t m = pc_t_create_merchant(&g_stack, NULL);
    pc_t_merchant_t p = pc_t_create_merchant(&g_stack, NULL);
    char splits[160], tn[40], r1[40], r2[40];
    snprintf(splits, sizeof splits, "\"splits\":[{\"account\":\"%s\",\"amount\":333}]", p.id);
    /* Paid 1000: 333 to the receiver, 667 to the merchant. */
    paid_trade(&m, 1000, splits, tn);
    assert_int_equal(pending_of(&p), 333);
    assert_int_equal(pending_of(&m), 667);

    /* 100: the receiver gives floor(100 * 333 / 1000) = 33, the merchant 67
     * (it absorbs the rounding remainder). */
    refund_ok(&m, tn, "SP1", 100, NULL, r1);
    assert_int_equal(split_of(r1, p.id, "amount"), 33);
    assert_int_equal(refund_int(r1, "split_amount"), 33);
    assert_int_equal(refund_int(r1, "from_pending"), 67);
    expect_refund(r1, "SUCCESS");
    assert_int_equal(pending_of(&p), 300);
    assert_int_equal(pending_of(&m), 600);
    json_t *j = refund_object(&m, r1);
    json_t *s = json_object_get(j, "splits");
    assert_int_equal(json_array_size(s), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(s, 0), "account")), p.id);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(s, 0), "amount")), 33);
    json_decref(j);

    /* The rest (900) empties both: the receiver gives all it still has
     * (300), so rounding never leaves a receiver with refunded money. */
    refund_ok(&m, tn, "SP2", 900, NULL, r2);
    assert_int_equal(split_of(r2, p.id, "amount"), 300);
    expect_refund(r2, "SUCCESS");
    assert_int_equal(pending_of(&p), 0);
    assert_int_equal(pending_of(&m), 0);
    char *st = pc_t_sql(&g_stack, "SELECT status FROM trades WHERE trade_no = '%s'", tn);
    assert_string_equal(st, "TRADE_CLOSED");
    free(st);
}

/* A trade split whole to two receivers (the merchant keeps nothing). A
 * refund of 1 takes nothing from them (each share rounds down to 0): the
 * merchant funds it from its other money. Refunding the rest then found
 * 1000 with the receivers for 999 to return, and was refused with 400
 * "splits add up to more than the amount": the buyer could never get the
 * rest back. */
static void test_rest_of_a_split_trade_is_refundable_after_a_rounded_refund(void **state)
{
    (void)state;
    pc_t_merchant_t m = pc_t_create_merchant(&g_stack, NULL);
    pc_t_merchant_t p = pc_t_create_merchant(&g_stack, NULL);
    pc_t_merchant_t q = pc_t_create_merchant(&g_stack, NULL);
    char splits[256], tn[40], other[40], r1[40], r2[40];
    paid_trade(&m, 500, NULL, other); /* the merchant's own money */
    snprintf(splits, sizeof splits,
             "\"splits\":[{\"account\":\"%s\",\"amount\":500},{\"account\":\"%s\","
             "\"amount\":500}]",
             p.id, q.id);
    paid_trade(&m, 1000, splits, tn);
    assert_int_equal(pending_of(&m), 500);
    refund_ok(&m, tn, "SR1", 1, NULL, r1);
    assert_int_equal(refund_int(r1, "split_amount"), 0);
    expect_refund(r1, "SUCCESS");
    assert_int_equal(pending_of(&m), 499);
    refund_ok(&m, tn, "SR2", 999, NULL, r2);
    assert_int_equal(refund_int(r2, "split_amount"), 999);
    assert_int_equal(split_of(r2, p.id, "amount") + split_of(r2, q.id, "amount"), 999);
    expect_refund(r2, "SUCCESS");
    assert_int_equal(pending_of(&m), 499);
    assert_int_equal(pending_of(&p) + pending_of(&q), 1);
    char *st = pc_t_sql(&g_stack, "SELECT status FROM trades WHERE trade_no = '%s'", tn);
    assert_string_equal(st, "TRADE_CLOSED");
    free(st);
}

/* Partial refunds one after another of a trade split 995/995 (the merchant
 * keeps nothing): each takes the receivers' share of all the refunds so far,
 * rounded once. Three refunds of 199 take 298 from each, the merchant
 * funding 1 unit; before, each took 99 from each (rounded down every time),
 * and the merchant paid 3 from its own money. */
static void test_partial_refunds_of_a_split_trade_keep_the_rounding(void **state)
{
    (void)state;
    pc_t_merchant_t m = pc_t_create_merchant(&g_stack, NULL);
    pc_t_merchant_t p = pc_t_create_merchant(&g_stack, NULL);
    pc_t_merchant_t q = pc_t_create_merchant(&g_stack, NULL);
    char splits[256], tn[40], other[40], r[40], out_no[16];
    paid_trade(&m, 500, NULL, other); /* the merchant's own money */
    snprintf(splits, sizeof splits,
             "\"splits\":[{\"account\":\"%s\",\"amount\":995},{\"account\":\"%s\","
             "\"amount\":995}]",
             p.id, q.id);
    paid_trade(&m, 1990, splits, tn);
    assert_int_equal(pending_of(&m), 500);
    for (int i = 0; i < 3; i++) {
        snprintf(out_no, sizeof out_no, "SRR%d", i);
        refund_ok(&m, tn, out_no, 199, NULL, r);
        expect_refund(r, "SUCCESS");
    }
    assert_int_equal(pending_of(&p), 995 - 298);
    assert_int_equal(pending_of(&q), 995 - 298);
    assert_int_equal(pending_of(&m), 499);
    assert_true(pc_t_ledger_ok(&g_stack));
}

static void test_explicit_split_refund_and_over_refund_of_a_receiver_is_refused(void **state)
{
    (void)state;
    pc_t_merchant_t m = pc_t_create_merchant(&g_stack, NULL);
    pc_t_merchant_t p = pc_t_create_merchant(&g_stack, NULL);
    pc_t_merchant_t q = pc_t_create_merchant(&g_stack, NULL);
    char splits[256], extra[256], other[256], tn[40], r1[40], r2[40];
    snprintf(splits, sizeof splits,
             "\"splits\":[{\"account\":\"%s\",\"amount\":400},{\"account\":\"%s\",\"amount\":100}]",
             p.id, q.id);
    paid_trade(&m, 1000, splits, tn);
    assert_int_equal(pending_of(&m), 500);

    /* 300, all of it from p, as the request says (q gives nothing). */
    snprintf(extra, sizeof extra, "\"splits\":[{\"account\":\"%s\",\"amount\":300}]", p.id);
    refund_ok(&m, tn, "SE1", 300, extra, r1);
    assert_int_equal(split_of(r1, p.id, "amount"), 300);
    assert_int_equal(split_of(r1, q.id, "amount"), 0);
    assert_int_equal(refund_int(r1, "from_pending"), 0);
    expect_refund(r1, "SUCCESS");
    assert_int_equal(pending_of(&p), 100);
    assert_int_equal(pending_of(&q), 100);
    assert_int_equal(pending_of(&m), 500);

    /* p has 100 left of this trade: 200 more from it is refused, naming it. */
    snprintf(extra, sizeof extra, "\"splits\":[{\"account\":\"%s\",\"amount\":200}]", p.id);
    pc_t_resp_t r = refund(&m, tn, "SE2", 200, extra);
    assert_int_equal(r.status, 422);
    assert_string_equal(pc_t_errcode(&r), "AMOUNT_EXCEEDS_REFUNDABLE");
    assert_non_null(strstr(r.body, p.id));
    pc_t_resp_free(&r);
    /* Neither may a request name someone who got nothing, nor ask for more
     * than the refund. */
    snprintf(extra, sizeof extra, "\"splits\":[{\"account\":\"%s\",\"amount\":10}]", m.id);
    r = refund(&m, tn, "SE3", 200, extra);
    assert_int_equal(r.status, 400);
    pc_t_resp_free(&r);
    snprintf(extra, sizeof extra,
             "\"splits\":[{\"account\":\"%s\",\"amount\":100},{\"account\":\"%s\",\"amount\":100}]",
             p.id, q.id);
    r = refund(&m, tn, "SE4", 150, extra);
    assert_int_equal(r.status, 422);
    assert_string_equal(pc_t_errcode(&r), "SPLIT_EXCEEDS_AMOUNT");
    pc_t_resp_free(&r);
    snprintf(other, sizeof other, "\"splits\":[{\"account\":\"%s\",\"amount\":151}]", p.id);
    r = refund(&m, tn, "SE4b", 150, other);
    assert_int_equal(r.status, 422);
    assert_string_equal(pc_t_errcode(&r), "SPLIT_EXCEEDS_AMOUNT");
    pc_t_resp_free(&r);
    assert_int_equal(pending_of(&p), 100);

    /* 200 with p's last 100 and q's 100. */
    refund_ok(&m, tn, "SE5", 200, extra, r2);
    expect_refund(r2, "SUCCESS");
    assert_int_equal(pending_of(&p), 0);
    assert_int_equal(pending_of(&q), 0);
    assert_int_equal(pending_of(&m), 500);
    /* Nothing is left to take from receivers: the rest is the merchant's. */
    refund_ok(&m, tn, "SE6", 500, NULL, r2);
    assert_int_equal(refund_int(r2, "split_amount"), 0);
    expect_refund(r2, "SUCCESS");
    assert_int_equal(pending_of(&m), 0);
}

static void test_receiver_without_balance_is_refused_unless_advance_funded(void **state)
{
    (void)state;
    pc_t_merchant_t plain = pc_t_create_merchant(&g_stack, NULL);
    pc_t_merchant_t funded = pc_t_create_merchant(&g_stack, "\"advance_funding\":true");
    pc_t_merchant_t p = pc_t_create_merchant(&g_stack, NULL);
    pc_t_merchant_t q = pc_t_create_merchant(&g_stack, NULL);
    char splits[160], extra[160], tn1[40], tn2[40], tn3[40], rno[40], acct[128];
    snprintf(splits, sizeof splits, "\"splits\":[{\"account\":\"%s\",\"amount\":600}]", p.id);
    paid_trade(&plain, 1000, splits, tn1);
    paid_trade(&funded, 1000, splits, tn2);
    assert_int_equal(pending_of(&p), 1200);
    /* p spends its pending money on refunds of its own trade (which it had
     * split to q): 300 of its own + 1200 = 1500 refunded from p alone. */
    snprintf(splits, sizeof splits, "\"splits\":[{\"account\":\"%s\",\"amount\":1700}]", q.id);
    paid_trade(&p, 2000, splits, tn3);
    assert_int_equal(pending_of(&p), 1500);
    snprintf(extra, sizeof extra, "\"splits\":[{\"account\":\"%s\",\"amount\":0}]", q.id);
    refund_ok(&p, tn3, "SB0", 1500, extra, rno);
    expect_refund(rno, "SUCCESS");
    assert_int_equal(pending_of(&p), 0);

    /* p cannot give back its 600: the refund fails, naming p. */
    long long plain0 = pending_of(&plain);
    pc_t_resp_t r = refund(&plain, tn1, "SB1", 1000, NULL);
    assert_int_equal(r.status, 422);
    assert_string_equal(pc_t_errcode(&r), "INSUFFICIENT_BALANCE");
    assert_non_null(strstr(r.body, p.id));
    pc_t_resp_free(&r);
    assert_int_equal(pending_of(&plain), plain0);
    assert_int_equal(pending_of(&p), 0);

    /* An advance-funded merchant's receivable covers the receiver. */
    refund_ok(&funded, tn2, "SB2", 1000, NULL, rno);
    assert_int_equal(split_of(rno, p.id, "amount"), 600);
    assert_int_equal(split_of(rno, p.id, "from_receivable"), 600);
    expect_refund(rno, "SUCCESS");
    assert_int_equal(pending_of(&funded), 0);
    assert_int_equal(pending_of(&p), 0);
    snprintf(acct, sizeof acct, "merchant:%s:receivable:CNY", funded.id);
    assert_int_equal(balance(acct), -600);
}

static void test_failed_split_refund_gives_receivers_their_money_back(void **state)
{
    (void)state;
    pc_t_merchant_t m = pc_t_create_merchant(&g_stack, NULL);
    pc_t_merchant_t p = pc_t_create_merchant(&g_stack, NULL);
    char splits[160], tn[40], rno[40], path[96];
    snprintf(splits, sizeof splits, "\"splits\":[{\"account\":\"%s\",\"amount\":500}]", p.id);
    paid_trade(&m, 1000, splits, tn);
    /* Force-failed by ops: m and p get back what was taken from them. */
    refund_ok(&m, tn, "SF1", 500, NULL, rno);
    assert_int_equal(split_of(rno, p.id, "amount"), 250);
    snprintf(path, sizeof path, "/admin/refunds/%s/force-fail", rno);
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", path, "{\"why\":\"test\"}");
    pc_t_resp_free(&r);
    char *st = pc_t_sql(&g_stack, "SELECT status FROM refunds WHERE refund_no = '%s'", rno);
    if (!strcmp(st, "FAILED")) {
        assert_int_equal(pending_of(&p), 500);
        assert_int_equal(pending_of(&m), 500);
        /* The receiver's running total is free again (500 more: the channel
         * may have taken the first one before ops failed it here). */
        refund_ok(&m, tn, "SF2", 500, NULL, rno);
        assert_int_equal(split_of(rno, p.id, "amount"), 250);
        expect_refund(rno, "SUCCESS");
        assert_int_equal(pending_of(&p), 250);
    } else {
        /* It had already succeeded: the shares stay taken. */
        assert_string_equal(st, "SUCCESS");
        assert_int_equal(pending_of(&p), 250);
    }
    free(st);
}

static void test_guarantee_split_refund_takes_from_settled_receivers(void **state)
{
    (void)state;
    pc_t_merchant_t m = pc_t_create_merchant(&g_stack, NULL);
    pc_t_merchant_t p = pc_t_create_merchant(&g_stack, NULL);
    char tn[40], r1[40], r2[40], path[96], body[160];
    g_product = "GUARANTEE";
    paid_trade(&m, 1000, NULL, tn);
    g_product = "INSTANT";
    /* 600 settled, 200 of it to p; 400 still held in escrow. */
    snprintf(path, sizeof path, "/v1/trades/%s/settle", tn);
    snprintf(body, sizeof body, "{\"amount\":600,\"splits\":[{\"account\":\"%s\",\"amount\":200}]}",
             p.id);
    pc_t_resp_t r = pc_t_call(&g_stack, &m, "POST", path, body, "settle-split-1");
    if (r.status != 200)
        fprintf(stderr, "settle: %ld %s\n", r.status, r.body);
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    assert_int_equal(pending_of(&m), 400);
    assert_int_equal(pending_of(&p), 200);

    /* 500: the 400 escrow still holds first (it reached nobody), then the
     * rest, 100, from the settled money as it was shared: p gives
     * floor(100 * 200 / 600) = 33, the merchant 67. (Before: p gave
     * floor(500 * 200 / 1000) = 100 while escrow still held the
     * merchant's unsettled money.) */
    refund_ok(&m, tn, "SG1", 500, NULL, r1);
    assert_int_equal(refund_int(r1, "from_escrow"), 400);
    assert_int_equal(split_of(r1, p.id, "amount"), 33);
    assert_int_equal(refund_int(r1, "from_pending"), 67);
    expect_refund(r1, "SUCCESS");
    assert_int_equal(pending_of(&p), 167);
    assert_int_equal(pending_of(&m), 333);
    /* The rest: p's last 167, the merchant's pending 333. */
    refund_ok(&m, tn, "SG2", 500, NULL, r2);
    assert_int_equal(split_of(r2, p.id, "amount"), 167);
    assert_int_equal(refund_int(r2, "from_pending"), 333);
    expect_refund(r2, "SUCCESS");
    assert_int_equal(pending_of(&p), 0);
    assert_int_equal(pending_of(&m), 0);
}

static long settle(const pc_t_merchant_t *m, const char *tn, const char *body, long long *amount)
{
    char path[96], key[48];
    snprintf(path, sizeof path, "/v1/trades/%s/settle", tn);
    snprintf(key, sizeof key, "settle-%d", ++g_seq);
    pc_t_resp_t r = pc_t_call(&g_stack, m, "POST", path, body, key);
    long st = r.status;
    if (amount) {
        json_t *j = pc_t_json(&r);
        *amount = st == 200 ? (long long)json_integer_value(json_object_get(j, "amount")) : -1;
        json_decref(j);
    }
    if (st != 200)
        fprintf(stderr, "settle: %ld %s\n", st, r.body);
    pc_t_resp_free(&r);
    return st;
}

/* A refund takes part of its amount from a receiver settled earlier, so
 * escrow gives less than the refunded amount. Settling "what is left" was
 * computed as paid - settled - refunded: what escrow still held past that
 * could never be settled, and the trade never ended. */
static void test_guarantee_settles_what_escrow_still_holds_after_a_split_refund(void **state)
{
    (void)state;
    pc_t_merchant_t m = pc_t_create_merchant(&g_stack, NULL);
    pc_t_merchant_t p = pc_t_create_merchant(&g_stack, NULL);
    char tn[40], rno[40], body[160];
    g_product = "GUARANTEE";
    paid_trade(&m, 1000, NULL, tn);
    g_product = "INSTANT";
    long long escrow0 = balance("platform:escrow:CNY");
    snprintf(body, sizeof body, "{\"amount\":600,\"splits\":[{\"account\":\"%s\",\"amount\":300}]}",
             p.id);
    assert_int_equal(settle(&m, tn, body, NULL), 200);
    /* 300 of the 400 escrow holds: no receiver gives anything. */
    refund_ok(&m, tn, "SGL1", 300, NULL, rno);
    assert_int_equal(split_of(rno, p.id, "amount"), 0);
    assert_int_equal(refund_int(rno, "from_escrow"), 300);
    expect_refund(rno, "SUCCESS");
    assert_int_equal(balance("platform:escrow:CNY"), escrow0 - 600 - 300);
    /* The rest escrow holds, 100, is the merchant's: settled, and the
     * trade ends. */
    long long amount = 0;
    assert_int_equal(settle(&m, tn, "{}", &amount), 200);
    assert_int_equal(amount, 100);
    char *st = pc_t_sql(&g_stack, "SELECT status FROM trades WHERE trade_no = '%s'", tn);
    assert_string_equal(st, "TRADE_SUCCESS");
    free(st);
    assert_int_equal(balance("platform:escrow:CNY"), escrow0 - 1000);
    assert_true(pc_t_ledger_ok(&g_stack));

    /* api.md: the amount defaults to what is left, so no body at all
     * settles it (it answered 400). */
    char tn2[40];
    g_product = "GUARANTEE";
    paid_trade(&m, 500, NULL, tn2);
    g_product = "INSTANT";
    assert_int_equal(settle(&m, tn2, NULL, &amount), 200);
    assert_int_equal(amount, 500);
}

/* Settled 50 of 100, all of it to a receiver; a refund of 50 comes from
 * the 50 escrow still holds, and the receiver keeps its 50. Before, the
 * receiver gave 25 and escrow 25, and the merchant settled the 25 escrow
 * still held to itself: the merchant kept money meant for the receiver. */
static void test_guarantee_refund_leaves_a_receivers_settled_share(void **state)
{
    (void)state;
    pc_t_merchant_t m = pc_t_create_merchant(&g_stack, NULL);
    pc_t_merchant_t p = pc_t_create_merchant(&g_stack, NULL);
    char tn[40], rno[40], body[160], rbody[240];
    g_product = "GUARANTEE";
    paid_trade(&m, 100, NULL, tn);
    g_product = "INSTANT";
    snprintf(body, sizeof body, "{\"amount\":50,\"splits\":[{\"account\":\"%s\",\"amount\":50}]}",
             p.id);
    assert_int_equal(settle(&m, tn, body, NULL), 200);
    refund_ok(&m, tn, "SGR1", 50, NULL, rno);
    assert_int_equal(refund_int(rno, "from_escrow"), 50);
    assert_int_equal(split_of(rno, p.id, "amount"), 0);
    expect_refund(rno, "SUCCESS");
    assert_int_equal(pending_of(&p), 50);
    assert_int_equal(pending_of(&m), 0);
    /* Escrow emptied: nothing is left to settle, and the trade ends. */
    char *st = pc_t_sql(&g_stack, "SELECT status FROM trades WHERE trade_no = '%s'", tn);
    assert_string_equal(st, "TRADE_SUCCESS");
    free(st);
    /* Receivers' shares asked of a refund escrow funds whole: refused. */
    g_product = "GUARANTEE";
    paid_trade(&m, 100, NULL, tn);
    g_product = "INSTANT";
    assert_int_equal(settle(&m, tn, body, NULL), 200);
    snprintf(rbody, sizeof rbody,
             "{\"trade_no\":\"%s\",\"out_refund_no\":\"SGR2-%d\",\"amount\":50,\"splits\":[{"
             "\"account\":\"%s\",\"amount\":50}]}",
             tn, (int)getpid(), p.id);
    pc_t_resp_t r = pc_t_call(&g_stack, &m, "POST", "/v1/refunds", rbody, "sgr2");
    assert_int_equal(r.status, 422);
    assert_non_null(strstr(r.body, "SPLIT_EXCEEDS_AMOUNT"));
    pc_t_resp_free(&r);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* A refund gives back shares of every receiver a trade's money went to,
 * at most 20 of them: a GUARANTEE trade settled to 20 receivers, then to a
 * 21st in a second settle, could never be refunded (500 on every try).
 * The second settle is refused now; one to a receiver already paid is not,
 * and the trade stays refundable. */
static void test_settles_reach_at_most_20_receivers_in_all(void **state)
{
    (void)state;
    pc_t_merchant_t m = pc_t_create_merchant(&g_stack, NULL);
    pc_t_merchant_t rx[21];
    for (int i = 0; i < 21; i++)
        rx[i] = pc_t_create_merchant(&g_stack, NULL);
    char tn[40], rno[40], body[4096];
    g_product = "GUARANTEE";
    paid_trade(&m, 1000, NULL, tn);
    g_product = "INSTANT";
    int off = snprintf(body, sizeof body, "{\"amount\":100,\"splits\":[");
    for (int i = 0; i < 20; i++)
        off += snprintf(body + off, sizeof body - (size_t)off,
                        "%s{\"account\":\"%s\",\"amount\":1}", i ? "," : "", rx[i].id);
    snprintf(body + off, sizeof body - (size_t)off, "]}");
    assert_int_equal(settle(&m, tn, body, NULL), 200);
    snprintf(body, sizeof body, "{\"amount\":100,\"splits\":[{\"account\":\"%s\",\"amount\":1}]}",
             rx[20].id);
    assert_int_equal(settle(&m, tn, body, NULL), 400);
    assert_int_equal(
        pc_t_sql_int(&g_stack, "SELECT count(*) FROM trade_settles WHERE trade_no = '%s'", tn), 1);
    snprintf(body, sizeof body, "{\"amount\":100,\"splits\":[{\"account\":\"%s\",\"amount\":5}]}",
             rx[3].id);
    assert_int_equal(settle(&m, tn, body, NULL), 200);
    refund_ok(&m, tn, "SRX1", 10, NULL, rno);
    expect_refund(rno, "SUCCESS");
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* Money split to an id that is no merchant went to a pending account no
 * settlement reads, with nobody told. */
/* Ops' admin call; asserts its status. */
static void admin_ok(const char *path, const char *body, long want, char *no_out)
{
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", path, body);
    if (r.status != want)
        fail_msg("%s: %ld %s", path, r.status, r.body);
    if (no_out)
        snprintf(no_out, 40, "%s", pc_t_jstr(&r, "chargeback_no"));
    pc_t_resp_free(&r);
}

/* A split trade half charged back (the platform liable: the merchant's
 * reserve released), then the other half refunded: the receiver gives its
 * share of that half (3000 of 10000: 1500), not all it still has. Before,
 * the refund of "the whole rest" counted as the last one, and the receiver
 * gave back its whole share on a sale only half refunded. */
static void test_a_refund_after_a_chargeback_takes_only_the_receivers_share(void **state)
{
    (void)state;
    pc_t_merchant_t m = pc_t_create_merchant(&g_stack, NULL);
    pc_t_merchant_t p = pc_t_create_merchant(&g_stack, NULL);
    char splits[160], tn[40], rno[40], cb[40], body[512], path[128];
    snprintf(splits, sizeof splits, "\"splits\":[{\"account\":\"%s\",\"amount\":3000}]", p.id);
    paid_trade(&m, 10000, splits, tn);
    char *ch = pc_t_sql(&g_stack,
                        "SELECT channel_id FROM payments WHERE trade_no = '%s' AND status = "
                        "'SUCCESS'",
                        tn);
    char *txn = pc_t_sql(&g_stack,
                         "SELECT channel_txn_id FROM payments WHERE trade_no = '%s' AND status = "
                         "'SUCCESS'",
                         tn);
    snprintf(body, sizeof body,
             "{\"reference\":\"SPLITCB-%d-%d\",\"channel_id\":\"%s\",\"channel_txn_id\":\"%s\","
             "\"amount\":5000,\"currency\":\"CNY\",\"reason_code\":\"4853\"}",
             (int)getpid(), ++g_seq, ch, txn);
    free(ch);
    free(txn);
    admin_ok("/admin/chargebacks", body, 201, cb);
    snprintf(path, sizeof path, "/admin/chargebacks/%s/start-judge", cb);
    admin_ok(path, "{\"why\":\"the issuer wants it now\"}", 200, NULL);
    snprintf(path, sizeof path, "/admin/chargebacks/%s/judge", cb);
    admin_ok(path, "{\"liable\":\"PLATFORM\"}", 200, NULL);
    refund_ok(&m, tn, "CBSP1", 5000, NULL, rno);
    assert_int_equal(split_of(rno, p.id, "amount"), 1500);
    expect_refund(rno, "SUCCESS");
    assert_int_equal(pending_of(&p), 1500);
    assert_true(pc_t_ledger_ok(&g_stack));
}

static void test_split_accounts_must_be_active_merchants(void **state)
{
    (void)state;
    pc_t_merchant_t m = pc_t_create_merchant(&g_stack, NULL);
    pc_t_merchant_t p = pc_t_create_merchant(&g_stack, NULL);
    char body[512], key[48];
    snprintf(body, sizeof body,
             "{\"out_trade_no\":\"SPX%d-%ld\",\"product\":\"INSTANT\",\"amount\":1000,"
             "\"currency\":\"CNY\",\"subject\":\"Goods\",\"splits\":[{\"account\":\"%s\","
             "\"amount\":100},{\"account\":\"m_parnter_typo\",\"amount\":200}]}",
             ++g_seq, (long)getpid(), p.id);
    snprintf(key, sizeof key, "trade-x-%d", g_seq);
    pc_t_resp_t r = pc_t_call(&g_stack, &m, "POST", "/v1/trades", body, key);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "\"field\":\"splits\""));
    pc_t_resp_free(&r);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT count(*) FROM trades WHERE merchant_id = '%s' AND "
                                  "out_trade_no LIKE 'SPX%%'",
                                  m.id),
                     0);
    /* A disabled merchant takes no split either. */
    pc_t_merchant_t d = pc_t_create_merchant(&g_stack, NULL);
    char path[96];
    snprintf(path, sizeof path, "/admin/merchants/%s/disable", d.id);
    pc_t_resp_t a = pc_t_admin(&g_stack, "POST", path, "{}");
    assert_int_equal(a.status, 200);
    pc_t_resp_free(&a);
    char splits[160], tn[40];
    snprintf(splits, sizeof splits, "\"splits\":[{\"account\":\"%s\",\"amount\":100}]", d.id);
    char buyer[32];
    snprintf(buyer, sizeof buyer, "%s", fresh_buyer());
    snprintf(body, sizeof body,
             "{\"out_trade_no\":\"SPY%d-%ld\",\"product\":\"INSTANT\",\"amount\":1000,"
             "\"currency\":\"CNY\",\"subject\":\"Goods\",%s}",
             ++g_seq, (long)getpid(), splits);
    snprintf(key, sizeof key, "trade-y-%d", g_seq);
    r = pc_t_call(&g_stack, &m, "POST", "/v1/trades", body, key);
    assert_int_equal(r.status, 400);
    pc_t_resp_free(&r);
    /* Real receivers are taken. */
    snprintf(splits, sizeof splits, "\"splits\":[{\"account\":\"%s\",\"amount\":100}]", p.id);
    new_trade(&m, 1000, buyer, splits, tn);
    /* Settle splits the same. */
    g_product = "GUARANTEE";
    paid_trade(&m, 1000, NULL, tn);
    g_product = "INSTANT";
    assert_int_equal(settle(&m, tn,
                            "{\"amount\":500,\"splits\":[{\"account\":\"m_nobody_here\","
                            "\"amount\":100}]}",
                            NULL),
                     400);
    snprintf(body, sizeof body, "{\"amount\":500,\"splits\":[{\"account\":\"%s\",\"amount\":100}]}",
             p.id);
    assert_int_equal(settle(&m, tn, body, NULL), 200);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* A buyer with a coupon of 500 (funded by the platform, or by funder). */
static void buyer_with_coupon(const pc_t_merchant_t *funder, char *buyer, char *coupon)
{
    snprintf(buyer, 32, "%s", fresh_buyer());
    char cb[256];
    if (funder)
        snprintf(cb, sizeof cb,
                 "{\"buyer_id\":\"%s\",\"amount\":500,\"currency\":\"CNY\",\"funded_by\":"
                 "\"MERCHANT\",\"merchant_id\":\"%s\"}",
                 buyer, funder->id);
    else
        snprintf(cb, sizeof cb, "{\"buyer_id\":\"%s\",\"amount\":500,\"currency\":\"CNY\"}", buyer);
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", "/admin/coupons", cb);
    assert_int_equal(r.status, 201);
    snprintf(coupon, 64, "%s", pc_t_jstr(&r, "coupon_id"));
    pc_t_resp_free(&r);
}

static char *coupon_col(const char *coupon, const char *col)
{
    return pc_t_sql(&g_stack, "SELECT coalesce(%s::text, '') FROM coupons WHERE coupon_id = '%s'",
                    col, coupon);
}

static void test_coupon_returned_on_full_refund_not_on_partial(void **state)
{
    (void)state;
    pc_t_merchant_t m = pc_t_create_merchant(&g_stack, NULL);
    char buyer[32], coupon[64], tn[40], r1[40], r2[40], extra[512];
    buyer_with_coupon(NULL, buyer, coupon);
    long long marketing0 = balance("platform:marketing:CNY");
    new_trade(&m, 3000, buyer, NULL, tn);
    snprintf(extra, sizeof extra, "\"coupon_id\":\"%s\",%s", coupon, pc_t_fresh_card());
    pay(&m, tn, buyer, extra);
    /* Booked at payment: the platform paid 500 of it. */
    assert_int_equal(balance("platform:marketing:CNY"), marketing0 - 500);
    assert_int_equal(pending_of(&m), 3000);
    char *st = coupon_col(coupon, "status");
    assert_string_equal(st, "USED");
    free(st);

    /* A partial refund returns cash only: never the coupon part. */
    refund_ok(&m, tn, "CP1", 1000, NULL, r1);
    assert_int_equal(refund_int(r1, "external_amount"), 1000);
    assert_int_equal(refund_int(r1, "coupon_amount"), 0);
    expect_refund(r1, "SUCCESS");
    st = coupon_col(coupon, "status");
    assert_string_equal(st, "USED");
    free(st);
    assert_int_equal(balance("platform:marketing:CNY"), marketing0 - 500);
    assert_int_equal(refund_int(r1, "coupon_returned::int"), 0);
    /* 1800 is more than the cash left (1500) but not the whole rest (2000). */
    pc_t_resp_t r = refund(&m, tn, "CP2", 1800, NULL);
    assert_int_equal(r.status, 422);
    assert_string_equal(pc_t_errcode(&r), "AMOUNT_EXCEEDS_REFUNDABLE");
    assert_non_null(strstr(r.body, "cash only"));
    pc_t_resp_free(&r);

    /* The whole rest: the card's 1500 and the coupon part; the coupon goes
     * back to the buyer and the platform's subsidy is undone. */
    refund_ok(&m, tn, "CP3", 2000, NULL, r2);
    assert_int_equal(refund_int(r2, "external_amount"), 1500);
    assert_int_equal(refund_int(r2, "coupon_amount"), 500);
    expect_refund(r2, "SUCCESS");
    st = coupon_col(coupon, "status");
    assert_string_equal(st, "AVAILABLE");
    free(st);
    st = coupon_col(coupon, "payment_no");
    assert_string_equal(st, "");
    free(st);
    assert_int_equal(balance("platform:marketing:CNY"), marketing0);
    assert_int_equal(pending_of(&m), 0);
    json_t *j = refund_object(&m, r2);
    assert_true(json_is_true(json_object_get(j, "coupon_returned")));
    json_decref(j);
    j = refund_object(&m, r1);
    assert_null(json_object_get(j, "coupon_returned"));
    json_decref(j);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT count(*) FROM outbox WHERE type = 'refund.succeeded' AND "
                                  "payload::jsonb -> 'data' ->> 'refund_no' = '%s' AND "
                                  "(payload::jsonb -> 'data' ->> 'coupon_returned')::boolean",
                                  r2),
                     1);
}

static void test_merchant_funded_coupon_is_reversed_to_its_funder(void **state)
{
    (void)state;
    pc_t_merchant_t m = pc_t_create_merchant(&g_stack, NULL);
    char buyer[32], coupon[64], tn[40], rno[40], extra[512];
    /* Earlier sales give m money to fund a refund with. */
    paid_trade(&m, 1000, NULL, tn);
    buyer_with_coupon(&m, buyer, coupon);
    long long marketing0 = balance("platform:marketing:CNY");
    new_trade(&m, 3000, buyer, NULL, tn);
    snprintf(extra, sizeof extra, "\"coupon_id\":\"%s\",%s", coupon, pc_t_fresh_card());
    pay(&m, tn, buyer, extra);
    /* Booked at payment: m paid the 500 itself (3000 in, 500 out). */
    assert_int_equal(pending_of(&m), 1000 + 3000 - 500);
    assert_int_equal(balance("platform:marketing:CNY"), marketing0);

    refund_ok(&m, tn, "CM1", 3000, NULL, rno);
    assert_int_equal(refund_int(rno, "coupon_amount"), 500);
    expect_refund(rno, "SUCCESS");
    /* m gave 3000 back and got its 500 back: as before the sale. */
    assert_int_equal(pending_of(&m), 1000);
    assert_int_equal(balance("platform:marketing:CNY"), marketing0);
    char *st = coupon_col(coupon, "status");
    assert_string_equal(st, "AVAILABLE");
    free(st);
    assert_int_equal(refund_int(rno, "coupon_returned::int"), 1);
}

/* A coupon its merchant funds is taken from the merchant's share of the
 * payment. Where there is none (GUARANTEE: the money goes to escrow) or too
 * little (splits leave the merchant less than the coupon), it is neither
 * offered nor accepted. Before, the card was charged and the capture refused
 * by the ledger, leaving the payment in PROCESSING for good. */
static void test_merchant_coupon_only_where_the_merchant_can_fund_it(void **state)
{
    (void)state;
    pc_t_merchant_t m = pc_t_create_merchant(&g_stack, NULL);
    pc_t_merchant_t p = pc_t_create_merchant(&g_stack, NULL);
    char buyer[32], coupon[64], tn[40], body[1024], splits[160];
    buyer_with_coupon(&m, buyer, coupon);
    for (int round = 0; round < 2; round++) {
        if (round == 0) {
            g_product = "GUARANTEE";
            new_trade(&m, 2000, buyer, NULL, tn);
            g_product = "INSTANT";
        } else {
            snprintf(splits, sizeof splits, "\"splits\":[{\"account\":\"%s\",\"amount\":1700}]",
                     p.id);
            new_trade(&m, 2000, buyer, splits, tn);
        }
        char key[48];
        snprintf(key, sizeof key, "mc-consult-%d-%d", round, ++g_seq);
        snprintf(body, sizeof body, "{\"trade_no\":\"%s\",\"buyer_id\":\"%s\"}", tn, buyer);
        pc_t_resp_t r = pc_t_call(&g_stack, &m, "POST", "/v1/cashier/consult", body, key);
        assert_int_equal(r.status, 200);
        assert_null(strstr(r.body, coupon));
        pc_t_resp_free(&r);
        snprintf(body, sizeof body,
                 "{\"trade_no\":\"%s\",\"buyer_id\":\"%s\",\"method_id\":\"CARD\",\"coupon_id\":"
                 "\"%s\",%s}",
                 tn, buyer, coupon, pc_t_fresh_card());
        snprintf(key, sizeof key, "mc-pay-%d-%d", round, ++g_seq);
        r = pc_t_call(&g_stack, &m, "POST", "/v1/cashier/pay", body, key);
        if (r.status != 400)
            fprintf(stderr, "pay: %ld %s\n", r.status, r.body);
        assert_int_equal(r.status, 400);
        pc_t_resp_free(&r);
        char *st = coupon_col(coupon, "status");
        assert_string_equal(st, "AVAILABLE");
        free(st);
    }
    /* Where the merchant keeps enough, it pays as before. */
    new_trade(&m, 2000, buyer, NULL, tn);
    snprintf(body, sizeof body, "\"coupon_id\":\"%s\",%s", coupon, pc_t_fresh_card());
    pay(&m, tn, buyer, body);
    assert_int_equal(pending_of(&m), 2000 - 500);
}

static void test_expired_coupon_is_not_returned_on_full_refund(void **state)
{
    (void)state;
    pc_t_merchant_t m = pc_t_create_merchant(&g_stack, NULL);
    char buyer[32], coupon[64], tn[40], rno[40], extra[512];
    buyer_with_coupon(NULL, buyer, coupon);
    long long marketing0 = balance("platform:marketing:CNY");
    new_trade(&m, 2000, buyer, NULL, tn);
    snprintf(extra, sizeof extra, "\"coupon_id\":\"%s\",%s", coupon, pc_t_fresh_card());
    pay(&m, tn, buyer, extra);
    /* The coupon expires after it was used. */
    free(pc_t_sql(&g_stack,
                  "UPDATE coupons SET expires_at = now() - interval '1 minute' WHERE coupon_id = "
                  "'%s' RETURNING 1",
                  coupon));
    refund_ok(&m, tn, "CX1", 2000, NULL, rno);
    expect_refund(rno, "SUCCESS");
    char *st = coupon_col(coupon, "status");
    assert_string_equal(st, "USED");
    free(st);
    assert_int_equal(refund_int(rno, "coupon_returned::int"), 0);
    /* The buyer gets the cash it paid; the subsidy goes back to its funder. */
    assert_int_equal(balance("platform:marketing:CNY"), marketing0);
    json_t *j = refund_object(&m, rno);
    assert_true(json_is_false(json_object_get(j, "coupon_returned")));
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_split_refund_is_proportional_by_default, after_each),
        cmocka_unit_test_teardown(test_rest_of_a_split_trade_is_refundable_after_a_rounded_refund,
                                  after_each),
        cmocka_unit_test_teardown(
            test_explicit_split_refund_and_over_refund_of_a_receiver_is_refused, after_each),
        cmocka_unit_test_teardown(test_partial_refunds_of_a_split_trade_keep_the_rounding,
                                  after_each),
        cmocka_unit_test_teardown(test_receiver_without_balance_is_refused_unless_advance_funded,
                                  after_each),
        cmocka_unit_test_teardown(test_failed_split_refund_gives_receivers_their_money_back,
                                  after_each),
        cmocka_unit_test_teardown(
            test_guarantee_settles_what_escrow_still_holds_after_a_split_refund, after_each),
        cmocka_unit_test_teardown(test_a_refund_after_a_chargeback_takes_only_the_receivers_share,
                                  after_each),
        cmocka_unit_test_teardown(test_split_accounts_must_be_active_merchants, after_each),
        cmocka_unit_test_teardown(test_settles_reach_at_most_20_receivers_in_all, after_each),
        cmocka_unit_test_teardown(test_guarantee_split_refund_takes_from_settled_receivers,
                                  after_each),
        cmocka_unit_test_teardown(test_guarantee_refund_leaves_a_receivers_settled_share,
                                  after_each),
        cmocka_unit_test_teardown(test_coupon_returned_on_full_refund_not_on_partial, after_each),
        cmocka_unit_test_teardown(test_merchant_funded_coupon_is_reversed_to_its_funder,
                                  after_each),
        cmocka_unit_test_teardown(test_expired_coupon_is_not_returned_on_full_refund, after_each),
        cmocka_unit_test_teardown(test_merchant_coupon_only_where_the_merchant_can_fund_it,
                                  after_each),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
