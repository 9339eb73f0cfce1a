/* Merchant refunds end to end against real paycore processes (two nodes),
 * PostgreSQL, Redis and paysim: full and partial refunds up to the paid
 * amount, concurrency across processes, the API method through timeouts,
 * callbacks and channel failures, multi-part payments, PAYOUT with and
 * without a payee, where the money comes from per product (and advance
 * funding), risk holds. The ledger check is run after every test.
 * FILE/OFFLINE batches, ops actions and error refunds are in
 * test_refunds_ops.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "harness.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pc_stack_t g_stack;
static pc_t_merchant_t g_m, g_other;
static int g_seq;

static int setup(void **state)
{
    (void)state;
    pc_stack_init(&g_stack, "refunds");
    pc_stack_env(&g_stack, "PAYCORE_REFUND_POLL_MS", "100");
    pc_stack_env(&g_stack, "PAYCORE_REFUND_QUERY_SCHEDULE_MS", "200,400,800");
    pc_stack_env(&g_stack, "PAYCORE_REFUND_SEND_GRACE_MS", "1000");
    pc_stack_env(&g_stack, "PAYCORE_LIMIT_BUYER_DAILY", "40000000");
    pc_stack_env(&g_stack, "PAYCORE_LIMIT_CARD_DAILY", "40000000");
    pc_stack_start_paysim(&g_stack);
    pc_stack_start_node(&g_stack, 0);
    pc_stack_start_node(&g_stack, 1);
    g_m = pc_t_create_merchant(&g_stack, NULL);
    g_other = pc_t_create_merchant(&g_stack, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    pc_stack_stop(&g_stack);
    return 0;
}

/* Every test leaves the ledger consistent and paysim without faults. */
static int after_each(void **state)
{
    (void)state;
    const char *chs[] = {"sim_card", "sim_card2", "sim_va"};
    for (int i = 0; i < 3; i++) {
        char b[96];
        snprintf(b, sizeof b, "{\"channel_id\":\"%s\",\"reset\":true}", chs[i]);
        pc_t_resp_t r = pc_t_sim(&g_stack, "POST", "/sim/faults", b);
        pc_t_resp_free(&r);
    }
    assert_true(pc_t_ledger_ok(&g_stack));
    return 0;
}

static const char *fresh_buyer(void)
{
    static char id[32];
    snprintf(id, sizeof id, "rb_%d_%d", (int)getpid() % 10000, ++g_seq);
    char b[96];
    snprintf(b, sizeof b, "{\"buyer_id\":\"%s\"}", id);
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", "/admin/buyers", b);
    assert_int_equal(r.status, 201);
    pc_t_resp_free(&r);
    return id;
}

static void new_trade_for(const pc_t_merchant_t *m, const char *product, long amount,
                          const char *buyer, const char *extra, char *tn)
{
    char body[768], key[64];
    g_seq++;
    snprintf(body, sizeof body,
             "{\"out_trade_no\":\"RT%d-%ld\",\"product\":\"%s\",\"amount\":%ld,\"currency\":"
             "\"CNY\",\"subject\":\"Goods\",\"buyer_id\":\"%s\"%s%s}",
             g_seq, (long)getpid(), product, amount, buyer, extra ? "," : "", extra ? extra : "");
    snprintf(key, sizeof key, "trade-%d", g_seq);
    pc_t_resp_t r = pc_t_call(&g_stack, m, "POST", "/v1/trades", body, key);
    if (r.status != 201)
        fprintf(stderr, "trade: %ld %s\n", r.status, r.body);
    assert_int_equal(r.status, 201);
    snprintf(tn, 40, "%s", pc_t_jstr(&r, "trade_no"));
    pc_t_resp_free(&r);
}

static pc_t_resp_t pay_as(const pc_t_merchant_t *m, const char *tn, const char *buyer,
                          const char *method, const char *extra)
{
    char body[1024], key[64];
    g_seq++;
    snprintf(body, sizeof body,
             "{\"trade_no\":\"%s\",\"buyer_id\":\"%s\",\"method_id\":\"%s\",\"client\":{\"ip\":"
             "\"10.1.0.%d\",\"device_id\":\"rdev-%d\",\"platform\":\"WEB\"}%s%s}",
             tn, buyer, method, g_seq % 200, g_seq, extra ? "," : "", extra ? extra : "");
    snprintf(key, sizeof key, "pay-%d", g_seq);
    return pc_t_call(&g_stack, m, "POST", "/v1/cashier/pay", body, key);
}

/* A trade of m paid by a fresh card; returns its payment number in pno (may be NULL). */
static void paid_trade_for(const pc_t_merchant_t *m, const char *product, long amount,
                           const char *extra, char *tn, char *pno)
{
    char buyer[32];
    snprintf(buyer, sizeof buyer, "%s", fresh_buyer());
    new_trade_for(m, product, amount, buyer, extra, tn);
    pc_t_resp_t r = pay_as(m, tn, buyer, "CARD", pc_t_fresh_card());
    if (strcmp(pc_t_jstr(&r, "status"), "SUCCESS") != 0)
        fprintf(stderr, "pay: %ld %s\n", r.status, r.body);
    assert_string_equal(pc_t_jstr(&r, "status"), "SUCCESS");
    if (pno)
        snprintf(pno, 40, "%s", pc_t_jstr(&r, "payment_no"));
    pc_t_resp_free(&r);
}

static pc_t_resp_t refund_as(const pc_t_merchant_t *m, const char *tn, const char *out_no,
                             long amount, const char *extra)
{
    char body[1024], key[96];
    snprintf(body, sizeof body,
             "{\"trade_no\":\"%s\",\"out_refund_no\":\"%s\",\"amount\":%ld,\"reason\":\"returned "
             "goods\"%s%s}",
             tn, out_no, amount, extra ? "," : "", extra ? extra : "");
    snprintf(key, sizeof key, "refund-%s-%d", out_no, ++g_seq);
    return pc_t_call(&g_stack, m, "POST", "/v1/refunds", body, key);
}

static pc_t_resp_t refund(const char *tn, const char *out_no, long amount, const char *extra)
{
    return refund_as(&g_m, tn, out_no, amount, extra);
}

/* Refunds and returns the refund_no; the answer must be 200. */
static void refund_ok(const char *tn, const char *out_no, long amount, const char *extra, char *rno)
{
    pc_t_resp_t r = refund(tn, out_no, amount, extra);
    if (r.status != 200)
        fprintf(stderr, "refund: %ld %s\n", r.status, r.body);
    assert_int_equal(r.status, 200);
    snprintf(rno, 40, "%s", pc_t_jstr(&r, "refund_no"));
    pc_t_resp_free(&r);
}

static char *refund_field(const char *rno, const char *col)
{
    return pc_t_sql(&g_stack, "SELECT %s FROM refunds WHERE refund_no = '%s'", col, rno);
}

static long long refund_int(const char *rno, const char *col)
{
    return pc_t_sql_int(&g_stack, "SELECT %s FROM refunds WHERE refund_no = '%s'", col, rno);
}

static void expect_refund(const char *rno, const char *want)
{
    char *st = NULL;
    for (int i = 0; i < 150; i++) {
        free(st);
        st = refund_field(rno, "status");
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

static char *trade_col(const char *tn, const char *col)
{
    return pc_t_sql(&g_stack, "SELECT %s FROM trades WHERE trade_no = '%s'", col, tn);
}

static long long outbox_count(const char *type, const char *key, const char *value)
{
    return pc_t_sql_int(&g_stack,
                        "SELECT count(*) FROM outbox WHERE type = '%s' AND payload::jsonb -> "
                        "'data' ->> '%s' = '%s'",
                        type, key, value);
}

/* paysim's own record: how many refunds / payouts it holds for a reference. */
static long long sim_count(const char *channel, const char *type, const char *status,
                           const char *ref)
{
    char path[256];
    snprintf(path, sizeof path, "/sim/txns?channel_id=%s&type=%s%s%s&paycore_ref=%s", channel, type,
             status ? "&status=" : "", status ? status : "", ref);
    pc_t_resp_t r = pc_t_sim(&g_stack, "GET", path, NULL);
    json_t *j = pc_t_json(&r);
    long long n = json_integer_value(json_object_get(j, "count"));
    json_decref(j);
    pc_t_resp_free(&r);
    return n;
}

/* The channel that took the trade's payment: routing follows live health,
 * so it is not always the first card channel. */
static const char *paid_channel(const char *tn)
{
    static char ch[40];
    char *c = pc_t_sql(&g_stack,
                       "SELECT channel_id FROM payments WHERE trade_no = '%s' AND status = "
                       "'SUCCESS'",
                       tn);
    snprintf(ch, sizeof ch, "%s", c ? c : "");
    free(c);
    return ch;
}

/* Refunds or payouts paysim holds for a reference on any card channel. */
static long long sim_refunds_anywhere(const char *ref)
{
    return sim_count("sim_card", "REFUND", NULL, ref) + sim_count("sim_card2", "REFUND", NULL, ref);
}

static void sim_faults(const char *json)
{
    pc_t_resp_t r = pc_t_sim(&g_stack, "POST", "/sim/faults", json);
    if (r.status != 200)
        fprintf(stderr, "faults: %ld %s\n", r.status, r.body);
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
}

/* ---------- tests ---------- */

static void test_full_and_partial_refunds_up_to_paid_then_over_is_refused(void **state)
{
    (void)state;
    char tn[40], pno[40], r1[40], r2[40], out1[48], out2[48];
    paid_trade_for(&g_m, "INSTANT", 1000, NULL, tn, pno);
    long long pending0 = pending_of(&g_m);
    char ch[40], clearing[96];
    snprintf(ch, sizeof ch, "%s", paid_channel(tn));
    snprintf(clearing, sizeof clearing, "channel:%s:clearing:CNY", ch);
    long long clearing0 = balance(clearing);
    snprintf(out1, sizeof out1, "RF-%s-1", tn);
    snprintf(out2, sizeof out2, "RF-%s-2", tn);

    /* A partial refund: accepted at once, money taken from the merchant. */
    char body[512];
    snprintf(body, sizeof body,
             "{\"trade_no\":\"%s\",\"out_refund_no\":\"%s\",\"amount\":300,\"reason\":\"one "
             "item\"}",
             tn, out1);
    pc_t_resp_t r = pc_t_call(&g_stack, &g_m, "POST", "/v1/refunds", body, "rk-1");
    assert_int_equal(r.status, 200);
    json_t *j = pc_t_json(&r);
    /* The refund object carries exactly api.md's fields. */
    const char *fields[] = {"refund_no", "out_refund_no", "trade_no",   "amount",      "type",
                            "method",    "status",        "created_at", "finished_at", "failure"};
    assert_int_equal(json_object_size(j), 10);
    for (size_t i = 0; i < 10; i++)
        assert_non_null(json_object_get(j, fields[i]));
    assert_string_equal(json_string_value(json_object_get(j, "type")), "NORMAL");
    assert_string_equal(json_string_value(json_object_get(j, "method")), "API");
    assert_string_equal(json_string_value(json_object_get(j, "status")), "ACCEPTED");
    assert_int_equal(json_integer_value(json_object_get(j, "amount")), 300);
    snprintf(r1, sizeof r1, "%s", json_string_value(json_object_get(j, "refund_no")));
    json_decref(j);
    /* The same request again is replayed, not run again. */
    pc_t_resp_t again = pc_t_call(&g_stack, &g_m, "POST", "/v1/refunds", body, "rk-1");
    assert_int_equal(again.status, 200);
    assert_string_equal(again.body, r.body);
    assert_non_null(pc_t_header(&again, "Idempotent-Replayed"));
    pc_t_resp_free(&again);
    pc_t_resp_free(&r);
    expect_refund(r1, "SUCCESS");
    assert_int_equal(pending_of(&g_m), pending0 - 300);
    assert_int_equal(balance(clearing), clearing0 + 300);
    assert_int_equal(sim_count(ch, "REFUND", "SUCCESS", r1), 1);
    assert_int_equal(outbox_count("refund.succeeded", "refund_no", r1), 1);
    char *st = trade_col(tn, "status");
    assert_string_equal(st, "TRADE_SUCCESS");
    free(st);

    /* The platform's error refunds are ERR-<payment_no>: not the merchant's
     * to take. */
    r = refund(tn, "ERR-P0001", 100, NULL);
    assert_int_equal(r.status, 400);
    assert_string_equal(pc_t_errcode(&r), "INVALID_REQUEST");
    assert_non_null(strstr(r.body, "out_refund_no"));
    pc_t_resp_free(&r);
    /* The same out_refund_no under a new key: a duplicate. */
    r = refund(tn, out1, 100, NULL);
    assert_int_equal(r.status, 409);
    assert_string_equal(pc_t_errcode(&r), "DUPLICATE_OUT_REFUND_NO");
    pc_t_resp_free(&r);
    /* One unit over what is left: refused, nothing moves. */
    r = refund(tn, out2, 701, NULL);
    assert_int_equal(r.status, 422);
    assert_string_equal(pc_t_errcode(&r), "AMOUNT_EXCEEDS_REFUNDABLE");
    pc_t_resp_free(&r);
    /* Sent again under the same key, the refusal is replayed (the refused
     * transaction had carried the record; it is written after instead). */
    char over[256], over_key[64];
    snprintf(over, sizeof over,
             "{\"trade_no\":\"%s\",\"out_refund_no\":\"%s\",\"amount\":701,\"reason\":\"x\"}", tn,
             out2);
    snprintf(over_key, sizeof over_key, "refund-over-%s", out2);
    for (int i = 0; i < 2; i++) {
        r = pc_t_call(&g_stack, &g_m, "POST", "/v1/refunds", over, over_key);
        assert_int_equal(r.status, 422);
        assert_string_equal(pc_t_errcode(&r), "AMOUNT_EXCEEDS_REFUNDABLE");
        assert_true((pc_t_header(&r, "Idempotent-Replayed") != NULL) == (i == 1));
        pc_t_resp_free(&r);
    }
    assert_int_equal(pending_of(&g_m), pending0 - 300);
    /* Exactly what is left: the trade is then fully refunded and closes. */
    refund_ok(tn, out2, 700, NULL, r2);
    expect_refund(r2, "SUCCESS");
    st = trade_col(tn, "status");
    assert_string_equal(st, "TRADE_CLOSED");
    free(st);
    st = trade_col(tn, "refunded_amount");
    assert_string_equal(st, "1000");
    free(st);
    assert_int_equal(outbox_count("trade.closed", "trade_no", tn), 1);
    assert_int_equal(pending_of(&g_m), pending0 - 1000);
    /* Refunded in full: nothing is left, as api.md says for amounts over the
     * refundable (422), not a state conflict. */
    r = refund(tn, "RF-after-close", 1, NULL);
    assert_int_equal(r.status, 422);
    assert_string_equal(pc_t_errcode(&r), "AMOUNT_EXCEEDS_REFUNDABLE");
    pc_t_resp_free(&r);
    /* A trade closed without being paid has nothing to refund either: that
     * is its state (409). */
    char open_tn[40], close_path[96];
    new_trade_for(&g_m, "INSTANT", 500, fresh_buyer(), NULL, open_tn);
    snprintf(close_path, sizeof close_path, "/v1/trades/%s/close", open_tn);
    r = pc_t_call(&g_stack, &g_m, "POST", close_path, "{}", "close-unpaid-rf");
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    r = refund(open_tn, "RF-unpaid", 1, NULL);
    assert_int_equal(r.status, 409);
    assert_string_equal(pc_t_errcode(&r), "INVALID_STATE");
    pc_t_resp_free(&r);

    /* Queries, by number and by out_refund_no. */
    char path[160];
    snprintf(path, sizeof path, "/v1/refunds/%s", r2);
    r = pc_t_call(&g_stack, &g_m, "GET", path, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(pc_t_jstr(&r, "status"), "SUCCESS");
    assert_string_equal(pc_t_jstr(&r, "out_refund_no"), out2);
    assert_true(strlen(pc_t_jstr(&r, "finished_at")) == 20);
    pc_t_resp_free(&r);
    snprintf(path, sizeof path, "/v1/refunds?out_refund_no=%s", out1);
    r = pc_t_call(&g_stack, &g_m, "GET", path, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(pc_t_jstr(&r, "refund_no"), r1);
    pc_t_resp_free(&r);
    /* Another merchant sees nothing of it, and cannot refund the trade. */
    snprintf(path, sizeof path, "/v1/refunds/%s", r1);
    r = pc_t_call(&g_stack, &g_other, "GET", path, NULL, NULL);
    assert_int_equal(r.status, 404);
    pc_t_resp_free(&r);
    char tn2[40];
    paid_trade_for(&g_m, "INSTANT", 500, NULL, tn2, NULL);
    r = refund_as(&g_other, tn2, "RF-stranger", 100, NULL);
    assert_int_equal(r.status, 404);
    assert_string_equal(pc_t_errcode(&r), "NOT_FOUND");
    pc_t_resp_free(&r);
    /* Bad requests name the field. */
    r = pc_t_call(&g_stack, &g_m, "POST", "/v1/refunds", "{\"out_refund_no\":\"x1\",\"amount\":5}",
                  "rk-bad-1");
    assert_int_equal(r.status, 400);
    pc_t_resp_free(&r);
    r = refund(tn2, "RF-zero", 0, NULL);
    assert_int_equal(r.status, 400);
    pc_t_resp_free(&r);
}

/* --- 20 concurrent refunds of one trade over two processes --- */

typedef struct {
    const char *tn;
    int i;
    pthread_barrier_t *b;
    long status;
    char rno[40];
} racer_t;

static void *race(void *arg)
{
    racer_t *x = arg;
    char out[64], body[256], key[64];
    snprintf(out, sizeof out, "RC-%s-%d", x->tn, x->i);
    snprintf(body, sizeof body, "{\"trade_no\":\"%s\",\"out_refund_no\":\"%s\",\"amount\":700}",
             x->tn, out);
    snprintf(key, sizeof key, "race-%s-%d", x->tn, x->i);
    pthread_barrier_wait(x->b);
    pc_t_resp_t r = pc_t_call(&g_stack, &g_m, "POST", "/v1/refunds", body, key);
    x->status = r.status;
    if (r.status == 200)
        snprintf(x->rno, sizeof x->rno, "%s", pc_t_jstr(&r, "refund_no"));
    else if (r.status != 422)
        fprintf(stderr, "race %d: %ld %s\n", x->i, r.status, r.body);
    pc_t_resp_free(&r);
    return NULL;
}

static void test_concurrent_refunds_over_two_nodes_never_exceed_paid(void **state)
{
    (void)state;
    char tn[40];
    paid_trade_for(&g_m, "INSTANT", 10000, NULL, tn, NULL);
    enum { N = 20 };
    pthread_barrier_t b;
    pthread_barrier_init(&b, NULL, N);
    racer_t xs[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        xs[i] = (racer_t){tn, i, &b, 0, ""};
        pthread_create(&th[i], NULL, race, &xs[i]);
    }
    int ok = 0, refused = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        if (xs[i].status == 200)
            ok++;
        else if (xs[i].status == 422)
            refused++;
    }
    pthread_barrier_destroy(&b);
    /* 14 × 700 = 9800 fit in 10000; a 15th would not. */
    assert_int_equal(ok, 14);
    assert_int_equal(refused, 6);
    for (int i = 0; i < N; i++)
        if (xs[i].status == 200)
            expect_refund(xs[i].rno, "SUCCESS");
    assert_int_equal(
        pc_t_sql_int(&g_stack, "SELECT refunded_amount FROM trades WHERE trade_no = '%s'", tn),
        9800);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT coalesce(sum(amount), 0) FROM refunds WHERE trade_no = "
                                  "'%s' AND status = 'SUCCESS'",
                                  tn),
                     9800);
    /* Both processes took part: each accepted some of them (their logs
     * say so, once their log threads have written). */
    for (int node = 0; node < 2; node++) {
        int logged = 0;
        for (int i = 0; i < 100 && !logged; i++) {
            logged = pc_t_sh("grep -q 'of trade %s' %s/%s-node%d.log", tn, g_stack.log_dir,
                             g_stack.name, node) == 0;
            if (!logged)
                usleep(50000);
        }
        assert_true(logged);
    }
}

static void test_api_refund_that_times_out_resolves_by_query(void **state)
{
    (void)state;
    char tn[40], r1[40], r2[40], out[64];
    paid_trade_for(&g_m, "INSTANT", 2000, NULL, tn, NULL);
    char ch[40], f[256];
    snprintf(ch, sizeof ch, "%s", paid_channel(tn));
    /* The channel does the refund but the answer is lost, and so is its
     * callback: only the status query can tell. */
    snprintf(f, sizeof f,
             "{\"channel_id\":\"%s\",\"success_after_timeout_rate\":1,"
             "\"lost_callback_rate\":1,\"hang_ms\":300}",
             ch);
    sim_faults(f);
    snprintf(out, sizeof out, "RT1-%s", tn);
    refund_ok(tn, out, 500, NULL, r1);
    expect_refund(r1, "SUCCESS");
    assert_true(refund_int(r1, "query_attempts") >= 1);
    assert_int_equal(sim_count(ch, "REFUND", "SUCCESS", r1), 1);

    /* Nothing happens at the channel: the query finds nothing, the refund is
     * sent again under the same number, and once the channel answers it
     * succeeds exactly once. */
    snprintf(f, sizeof f,
             "{\"channel_id\":\"%s\",\"reset\":true,\"timeout_rate\":1,\"hang_ms\":300}", ch);
    sim_faults(f);
    snprintf(out, sizeof out, "RT2-%s", tn);
    refund_ok(tn, out, 700, NULL, r2);
    usleep(1500000);
    char *st = refund_field(r2, "status");
    assert_string_equal(st, "PROCESSING");
    free(st);
    assert_int_equal(sim_count(ch, "REFUND", NULL, r2), 0);
    snprintf(f, sizeof f, "{\"channel_id\":\"%s\",\"reset\":true}", ch);
    sim_faults(f);
    expect_refund(r2, "SUCCESS");
    assert_int_equal(sim_count(ch, "REFUND", "SUCCESS", r2), 1);
    st = trade_col(tn, "refunded_amount");
    assert_string_equal(st, "1200");
    free(st);
}

/* The channel's reference of refund rno once paycore has sent it
 * (malloc'd). */
static char *sent_txn(const char *rno)
{
    char *txn = NULL;
    for (int i = 0; i < 100; i++) {
        free(txn);
        txn = refund_field(rno, "coalesce(channel_txn_id, '')");
        if (txn[0])
            break;
        usleep(50000);
    }
    assert_true(txn[0] != 0);
    return txn;
}

/* A refund held at its channel (refund_delay_ms -1) is failed there, as a
 * person at the channel would, once paycore has sent it. */
static void fail_held_refund(const char *rno)
{
    char *txn = sent_txn(rno);
    char body[256];
    snprintf(body, sizeof body,
             "{\"reference\":\"%s\",\"outcome\":\"FAILED\",\"failure_code\":\"REFUND_REJECTED\"}",
             txn);
    free(txn);
    pc_t_resp_t r = pc_t_sim(&g_stack, "POST", "/sim/complete", body);
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
}

/* A refund of amount in flight at its channel: a trade of g_m paid by card,
 * the faults (JSON members) set on its channel, the refund PROCESSING. Its
 * trade into tn, its number into rno; returns the channel (static). */
static const char *refund_in_flight(const char *faults, const char *prefix, long amount, char *tn,
                                    char *rno)
{
    char out[64], f[200];
    paid_trade_for(&g_m, "INSTANT", 2000, NULL, tn, NULL);
    const char *ch = paid_channel(tn);
    snprintf(f, sizeof f, "{\"channel_id\":\"%s\",%s}", ch, faults);
    sim_faults(f);
    snprintf(out, sizeof out, "%s-%s", prefix, tn);
    refund_ok(tn, out, amount, NULL, rno);
    expect_refund(rno, "PROCESSING");
    return ch;
}

/* Whether refund rno comes to have needs_ops = want ("t" or "f") in secs. */
static int refund_flagged(const char *rno, const char *want, double secs)
{
    return pc_t_sql_wait(&g_stack, want, secs,
                         "SELECT needs_ops FROM refunds WHERE refund_no = '%s'", rno);
}

/* A refund its channel never answers for, after the last scheduled query:
 * flagged for ops like a payment or payout (listed, alerted), still queried;
 * its final answer takes the flag away. Before, it was only logged, on
 * every query, forever. */
static void test_refund_without_answer_after_every_query_is_flagged_until_final(void **state)
{
    (void)state;
    char tn[40], rno[40];
    refund_in_flight("\"refund_delay_ms\":-1", "RNOANS", 700, tn, rno);
    assert_true(refund_flagged(rno, "t", 15));
    assert_true(pc_t_needs_ops_listed(&g_stack, "refund", rno) > 0);
    assert_true(pc_t_alert_wait(&g_stack, "REPAIR_EXHAUSTED", "payments", 1, 15));
    /* Still in flight: not for ops to close (409). */
    assert_int_equal(pc_t_needs_ops_resolve(&g_stack, "refund", rno, "{\"why\":\"too early\"}"),
                     409);
    fail_held_refund(rno);
    expect_refund(rno, "FAILED");
    assert_true(refund_flagged(rno, "f", 10));
}

/* A channel that loses every refund request (no answer, nothing happens)
 * and answers each status query "not found": the refund is sent again after
 * every query, and after the last scheduled one it is flagged for ops like
 * one without an answer. Before, it was sent again forever and nobody was
 * told. Once the channel takes it, it succeeds and the flag goes. */
static void test_refund_the_channel_loses_every_time_is_flagged(void **state)
{
    (void)state;
    char tn[40], rno[40], f[200];
    const char *ch = refund_in_flight("\"reset\":true,\"timeout_rate\":1,\"hang_ms\":100", "RLOST",
                                      500, tn, rno);
    assert_true(refund_flagged(rno, "t", 20));
    assert_true(pc_t_needs_ops_listed(&g_stack, "refund", rno) > 0);
    expect_refund(rno, "PROCESSING");
    /* The channel takes it at the next sending: done, the flag gone. */
    snprintf(f, sizeof f, "{\"channel_id\":\"%s\",\"reset\":true}", ch);
    sim_faults(f);
    expect_refund(rno, "SUCCESS");
    assert_true(refund_flagged(rno, "f", 10));
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* The same refund, whose channel ops reach by other means: it paid. Ops
 * record it, and the refund is done as if the channel had said so (before,
 * nothing ops could do finished it). */
static void test_ops_record_the_success_of_a_refund_no_query_could_finish(void **state)
{
    (void)state;
    char tn[40], rno[40];
    refund_in_flight("\"refund_delay_ms\":-1", "ROPS", 600, tn, rno);
    assert_true(refund_flagged(rno, "t", 15));
    assert_int_equal(pc_t_needs_ops_resolve(&g_stack, "refund", rno,
                                            "{\"why\":\"channel portal shows it paid\","
                                            "\"outcome\":\"SUCCESS\"}"),
                     200);
    expect_refund(rno, "SUCCESS");
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT count(*) FROM refunds r JOIN refund_actions a USING "
                                  "(refund_no) WHERE r.refund_no = '%s' AND NOT r.needs_ops AND "
                                  "a.action = 'CONFIRM_DONE' AND a.who = 'ops'",
                                  rno),
                     1);
    assert_int_equal(pc_t_needs_ops_listed(&g_stack, "refund", rno), 0);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* Ops record a refund no query could finish as FAILED (the merchant's money
 * back); its channel then says it paid it after all: flagged for ops (the
 * buyer has the money, and the merchant could refund it again). Before, the
 * outcome ops recorded counted as the flag's resolution and the success was
 * never flagged. A retried callback saying the same does not flag again what
 * ops resolved. */
static void test_a_success_after_ops_recorded_the_refund_failed_is_flagged(void **state)
{
    (void)state;
    char tn[40], rno[40];
    const char *ch = refund_in_flight("\"refund_delay_ms\":-1", "ROPSF", 800, tn, rno);
    assert_true(refund_flagged(rno, "t", 15));
    assert_int_equal(pc_t_needs_ops_resolve(&g_stack, "refund", rno,
                                            "{\"why\":\"channel portal shows it refused\","
                                            "\"outcome\":\"FAILED\"}"),
                     200);
    expect_refund(rno, "FAILED");
    assert_true(refund_flagged(rno, "f", 10));
    assert_int_equal(pc_t_channel_callback(&g_stack, ch, "refund", rno, "SUCCESS", 800), 200);
    assert_true(refund_flagged(rno, "t", 10));
    assert_true(pc_t_needs_ops_listed(&g_stack, "refund", rno) > 0);
    assert_int_equal(pc_t_needs_ops_resolve(&g_stack, "refund", rno,
                                            "{\"why\":\"buyer paid twice; recovered\"}"),
                     200);
    assert_true(refund_flagged(rno, "f", 10));
    assert_int_equal(pc_t_channel_callback(&g_stack, ch, "refund", rno, "SUCCESS", 800), 200);
    usleep(500000);
    assert_true(refund_flagged(rno, "f", 1));
    expect_refund(rno, "FAILED");
}

/* trade_no and out_trade_no both given must name the same trade: two
 * different trades are 404 and nothing is refunded; the same trade named
 * both ways is refunded. Before, out_trade_no was ignored and a mistaken
 * pair refunded trade_no's trade unnoticed. */
static void test_a_refund_naming_two_trades_is_refused(void **state)
{
    (void)state;
    char t1[40], t2[40], extra[160];
    paid_trade_for(&g_m, "INSTANT", 1000, NULL, t1, NULL);
    paid_trade_for(&g_m, "INSTANT", 1000, NULL, t2, NULL);
    char *o1 = pc_t_sql(&g_stack, "SELECT out_trade_no FROM trades WHERE trade_no = '%s'", t1);
    char *o2 = pc_t_sql(&g_stack, "SELECT out_trade_no FROM trades WHERE trade_no = '%s'", t2);
    char out[64];
    snprintf(extra, sizeof extra, "\"out_trade_no\":\"%s\"", o2);
    snprintf(out, sizeof out, "RTWO-%s", t1);
    pc_t_resp_t r = refund(t1, out, 100, extra);
    assert_int_equal(r.status, 404);
    assert_string_equal(pc_t_errcode(&r), "NOT_FOUND");
    pc_t_resp_free(&r);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT count(*) FROM refunds WHERE trade_no IN ('%s', '%s')", t1,
                                  t2),
                     0);
    snprintf(extra, sizeof extra, "\"out_trade_no\":\"%s\"", o1);
    snprintf(out, sizeof out, "RONE-%s", t1);
    r = refund(t1, out, 100, extra);
    assert_int_equal(r.status, 200);
    assert_string_equal(pc_t_jstr(&r, "trade_no"), t1);
    pc_t_resp_free(&r);
    free(o1);
    free(o2);
}

/* A channel that says it refunded another sum than it was asked: the
 * refund is applied (the money left), and flagged for ops with the
 * contradiction alert, for a person to settle the difference with the buyer
 * or the channel. Before, the sum was not looked at. */
static void test_refund_paid_with_another_sum_is_flagged(void **state)
{
    (void)state;
    char tn[40], rno[40], out[64], f[160];
    paid_trade_for(&g_m, "INSTANT", 3000, NULL, tn, NULL);
    snprintf(f, sizeof f, "{\"channel_id\":\"%s\",\"refund_delay_ms\":-1}", paid_channel(tn));
    sim_faults(f);
    snprintf(out, sizeof out, "RSUM-%s", tn);
    refund_ok(tn, out, 1500, NULL, rno);
    expect_refund(rno, "PROCESSING");
    assert_int_equal(
        pc_t_channel_callback(&g_stack, paid_channel(tn), "refund", rno, "SUCCESS", 1600), 200);
    assert_true(pc_t_sql_wait(
        &g_stack, "SUCCESS/true", 10,
        "SELECT status || '/' || needs_ops FROM refunds WHERE refund_no = '%s'", rno));
    assert_true(pc_t_needs_ops_listed(&g_stack, "refund", rno) > 0);
    assert_int_equal(pc_t_needs_ops_resolve(&g_stack, "refund", rno,
                                            "{\"why\":\"channel asked to return the extra 100\"}"),
                     200);
    /* Its sum, in another currency: flagged the same. */
    snprintf(out, sizeof out, "RCUR-%s", tn);
    refund_ok(tn, out, 500, NULL, rno);
    expect_refund(rno, "PROCESSING");
    assert_int_equal(
        pc_t_channel_callback_in(&g_stack, paid_channel(tn), "refund", rno, "SUCCESS", 500, "USD"),
        200);
    assert_true(pc_t_sql_wait(
        &g_stack, "SUCCESS/true", 10,
        "SELECT status || '/' || needs_ops FROM refunds WHERE refund_no = '%s'", rno));
    assert_int_equal(pc_t_needs_ops_resolve(&g_stack, "refund", rno,
                                            "{\"why\":\"channel paid USD by mistake; reversed\"}"),
                     200);
}

static void test_channel_finishes_refund_later_by_callback_or_fails_it(void **state)
{
    (void)state;
    char tn[40], r1[40], r2[40], out[64];
    paid_trade_for(&g_m, "INSTANT", 3000, NULL, tn, NULL);
    long long pending0 = pending_of(&g_m);
    char f[160];
    /* PROCESSING at the channel, then a refund.succeeded callback. */
    snprintf(f, sizeof f, "{\"channel_id\":\"%s\",\"refund_delay_ms\":300}", paid_channel(tn));
    sim_faults(f);
    snprintf(out, sizeof out, "RL1-%s", tn);
    refund_ok(tn, out, 1000, NULL, r1);
    expect_refund(r1, "SUCCESS");
    /* Held until a person at the channel decides: here, it fails. */
    snprintf(f, sizeof f, "{\"channel_id\":\"%s\",\"refund_delay_ms\":-1}", paid_channel(tn));
    sim_faults(f);
    snprintf(out, sizeof out, "RL2-%s", tn);
    refund_ok(tn, out, 1500, NULL, r2);
    expect_refund(r2, "PROCESSING");
    assert_int_equal(pending_of(&g_m), pending0 - 2500);
    /* Another channel's word on it, however well signed, changes nothing
     * (it made the refund SUCCESS). */
    const char *other = strcmp(paid_channel(tn), "sim_wallet") ? "sim_wallet" : "sim_card";
    assert_int_equal(pc_t_channel_callback(&g_stack, other, "refund", r2, "SUCCESS", 1500), 200);
    usleep(200000);
    expect_refund(r2, "PROCESSING");
    fail_held_refund(r2);
    pc_t_resp_t r;
    expect_refund(r2, "FAILED");
    /* The money is the merchant's again, and refundable again. */
    assert_int_equal(pending_of(&g_m), pending0 - 1000);
    char *st = trade_col(tn, "refunded_amount");
    assert_string_equal(st, "1000");
    free(st);
    assert_int_equal(outbox_count("refund.failed", "refund_no", r2), 1);
    char path[96];
    snprintf(path, sizeof path, "/v1/refunds/%s", r2);
    r = pc_t_call(&g_stack, &g_m, "GET", path, NULL, NULL);
    json_t *j = pc_t_json(&r);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "failure"), "code")),
                        "REFUND_REJECTED");
    json_decref(j);
    pc_t_resp_free(&r);
}

/* Settling "the rest" of a GUARANTEE trade ends it (TRADE_SUCCESS). With a
 * refund from escrow still in flight that rest is not known yet: had the
 * settle gone through and the refund then failed, its amount stayed in
 * escrow with no way to settle it. Refused until the refund is done;
 * settling part of it is fine. */
static void test_settle_of_the_rest_waits_for_an_escrow_refund(void **state)
{
    (void)state;
    pc_t_merchant_t m = pc_t_create_merchant(&g_stack, NULL);
    char tn[40], rno[40], path[96], f[160];
    paid_trade_for(&m, "GUARANTEE", 1000, NULL, tn, NULL);
    long long escrow0 = balance("platform:escrow:CNY");
    snprintf(f, sizeof f, "{\"channel_id\":\"%s\",\"refund_delay_ms\":-1}", paid_channel(tn));
    sim_faults(f);
    pc_t_resp_t r = refund_as(&m, tn, "GE1", 300, NULL);
    assert_int_equal(r.status, 200);
    snprintf(rno, sizeof rno, "%s", pc_t_jstr(&r, "refund_no"));
    pc_t_resp_free(&r);
    assert_int_equal(refund_int(rno, "from_escrow"), 300);
    expect_refund(rno, "PROCESSING");

    snprintf(path, sizeof path, "/v1/trades/%s/settle", tn);
    r = pc_t_call(&g_stack, &m, "POST", path, "{}", "settle-ge1");
    assert_int_equal(r.status, 409);
    assert_string_equal(pc_t_errcode(&r), "INVALID_STATE");
    pc_t_resp_free(&r);
    r = pc_t_call(&g_stack, &m, "POST", path, "{\"amount\":600}", "settle-ge2");
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    char *st = trade_col(tn, "status");
    assert_string_equal(st, "PAY_SUCCESS");
    free(st);

    /* The refund fails at the channel: its 300 is the merchant's to settle. */
    fail_held_refund(rno);
    expect_refund(rno, "FAILED");
    r = pc_t_call(&g_stack, &m, "POST", path, "{}", "settle-ge3");
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"amount\":400"));
    pc_t_resp_free(&r);
    st = trade_col(tn, "status");
    assert_string_equal(st, "TRADE_SUCCESS");
    free(st);
    assert_int_equal(balance("platform:escrow:CNY"), escrow0 - 1000);
    assert_int_equal(pending_of(&m), 1000);
}

/* A new buyer whose wallet holds 3,000, topped up by card; the buyer id,
 * the wallet's account id and the top-up's trade into the arguments. */
static void recharged_buyer(char buyer[32], char wallet[96], char tn[40])
{
    snprintf(buyer, 32, "%s", fresh_buyer());
    snprintf(wallet, 96, "buyer:%s:wallet:CNY", buyer);
    new_trade_for(&g_m, "RECHARGE", 3000, buyer, NULL, tn);
    pc_t_resp_t r = pay_as(&g_m, tn, buyer, "CARD", pc_t_fresh_card());
    assert_string_equal(pc_t_jstr(&r, "status"), "SUCCESS");
    pc_t_resp_free(&r);
}

/* A merchant may create a trade without naming the buyer; the buyer who
 * pays it with the wallet gets the money back there. Before, the refund
 * found no buyer for its balance part and stayed PROCESSING for good. */
static void test_balance_refund_of_a_trade_created_without_a_buyer(void **state)
{
    (void)state;
    char buyer[32], tn[40], rno[40], wallet[96], body[512], key[64];
    recharged_buyer(buyer, wallet, tn);
    pc_t_resp_t r;
    g_seq++;
    snprintf(body, sizeof body,
             "{\"out_trade_no\":\"RNB%d-%ld\",\"product\":\"INSTANT\",\"amount\":2000,"
             "\"currency\":\"CNY\",\"subject\":\"Goods\"}",
             g_seq, (long)getpid());
    snprintf(key, sizeof key, "trade-nb-%d", g_seq);
    r = pc_t_call(&g_stack, &g_m, "POST", "/v1/trades", body, key);
    assert_int_equal(r.status, 201);
    snprintf(tn, sizeof tn, "%s", pc_t_jstr(&r, "trade_no"));
    pc_t_resp_free(&r);
    r = pay_as(&g_m, tn, buyer, "BALANCE", NULL);
    assert_string_equal(pc_t_jstr(&r, "status"), "SUCCESS");
    pc_t_resp_free(&r);
    assert_int_equal(balance(wallet), 1000);
    refund_ok(tn, "NB1", 2000, NULL, rno);
    expect_refund(rno, "SUCCESS");
    assert_int_equal(balance(wallet), 3000);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* A refund with nothing for a channel (wallet and coupon parts) is done
 * right after it is dispatched. When that step fails (here a constraint the
 * test adds refuses it; in life, the database or the node failing at that
 * moment), the runner finishes it later. Before, the runner only asked a
 * channel about it, and the refund stayed PROCESSING for good. */
static void test_wallet_only_refund_that_failed_after_dispatch_is_finished_later(void **state)
{
    (void)state;
    char buyer[32], tn[40], rno[40], wallet[96], out[48];
    recharged_buyer(buyer, wallet, tn);
    pc_t_resp_t r;
    new_trade_for(&g_m, "INSTANT", 1200, buyer, NULL, tn);
    r = pay_as(&g_m, tn, buyer, "BALANCE", NULL);
    assert_string_equal(pc_t_jstr(&r, "status"), "SUCCESS");
    pc_t_resp_free(&r);
    snprintf(out, sizeof out, "WO-%d-%d", (int)getpid(), ++g_seq);
    free(pc_t_sql(&g_stack,
                  "ALTER TABLE refunds ADD CONSTRAINT pc_test_no_success CHECK (out_refund_no <> "
                  "'%s' OR status <> 'SUCCESS') NOT VALID",
                  out));
    refund_ok(tn, out, 1200, NULL, rno);
    usleep(1500000);
    char *st = refund_field(rno, "status");
    free(pc_t_sql(&g_stack, "ALTER TABLE refunds DROP CONSTRAINT pc_test_no_success"));
    assert_string_equal(st, "PROCESSING");
    free(st);
    expect_refund(rno, "SUCCESS");
    assert_int_equal(balance(wallet), 3000);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* A trade of g_m paid through sim_va: the buyer transferred to the VA
 * number at paysim and the trade is TRADE_SUCCESS. */
/* A trade paid by an asynchronous method (VA, OTC): the buyer pays the
 * action's code (key: its field) at paysim. */
static void paid_async_trade(long amount, const char *method, const char *key, char tn[40])
{
    char buyer[32], body[256];
    snprintf(buyer, sizeof buyer, "%s", fresh_buyer());
    new_trade_for(&g_m, "INSTANT", amount, buyer, NULL, tn);
    pc_t_resp_t r = pay_as(&g_m, tn, buyer, method, NULL);
    assert_string_equal(pc_t_jstr(&r, "status"), "PROCESSING");
    json_t *j = pc_t_json(&r);
    snprintf(body, sizeof body, "{\"reference\":\"%s\"}",
             json_string_value(json_object_get(json_object_get(j, "action"), key)));
    json_decref(j);
    pc_t_resp_free(&r);
    r = pc_t_sim(&g_stack, "POST", "/sim/complete", body);
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    char *st = NULL;
    for (int i = 0; i < 100; i++) {
        free(st);
        st = trade_col(tn, "status");
        if (!strcmp(st, "TRADE_SUCCESS"))
            break;
        usleep(50000);
    }
    assert_string_equal(st, "TRADE_SUCCESS");
    free(st);
}

static void paid_va_trade(long amount, char tn[40])
{
    paid_async_trade(amount, "VA", "va_number", tn);
}

/* A refund paid out to the buyer's account whose bank sent the money back
 * before paycore heard of the success (callbacks lost): the status query
 * answers RETURNED. The refund did not reach the buyer, so it fails and the
 * merchant has the money again. Before, RETURNED was ignored and the refund
 * stayed PROCESSING for good, the merchant's money held. */
static void test_payout_refund_returned_before_its_success_was_heard_fails(void **state)
{
    (void)state;
    char tn[40], rno[40], body[256], f[200];
    paid_va_trade(1500, tn);
    pc_t_resp_t r;
    long long pending0 = pending_of(&g_m);
    snprintf(f, sizeof f,
             "{\"channel_id\":\"sim_va\",\"reset\":true,\"payout_delay_ms\":-1,"
             "\"lost_callback_rate\":1}");
    sim_faults(f);
    refund_ok(tn, "PR1", 1500,
              "\"payee\":{\"type\":\"ACCOUNT\",\"account_no\":\"6222020000004321\",\"name\":\"A "
              "Buyer\",\"bank_code\":\"ICBC\"}",
              rno);
    expect_refund(rno, "PROCESSING");
    char *txn = sent_txn(rno);
    /* Between two status queries, the payee is paid and the bank returns
     * it: halfway between two queries at the schedule's last pace (800 ms
     * apart from the third on), so that a query still on its way has landed
     * and the next is not due yet. (It was 200 ms after whichever query came
     * next, at times 400 ms before the following one: under ASan on a busy
     * machine a query once landed in between and saw the payout paid.) */
    long long q0 = refund_int(rno, "query_attempts");
    if (q0 < 3)
        q0 = 3;
    for (int i = 0; i < 300 && refund_int(rno, "query_attempts") <= q0; i++)
        usleep(20000);
    usleep(400000);
    snprintf(body, sizeof body, "{\"reference\":\"%s\"}", txn);
    r = pc_t_sim(&g_stack, "POST", "/sim/complete", body);
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    snprintf(body, sizeof body, "{\"channel_txn_id\":\"%s\",\"reason_code\":\"R03\"}", txn);
    free(txn);
    r = pc_t_sim(&g_stack, "POST", "/sim/return", body);
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    expect_refund(rno, "FAILED");
    char *code = refund_field(rno, "failure_code");
    assert_string_equal(code, "R03"); /* the bank's reason, as the channel gives it */
    free(code);
    assert_int_equal(pending_of(&g_m), pending0);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* The same after the refund's success was heard: the buyer did not get the
 * money after all and it is back at the channel, which a SUCCESS refund
 * cannot say. It was only logged; it is flagged for ops, listed, alerted,
 * and resolved by them with a reason. Nothing moves by itself. */
static void test_payout_refund_returned_after_success_goes_to_ops(void **state)
{
    (void)state;
    char tn[40], rno[40], body[256];
    paid_va_trade(1200, tn);
    sim_faults("{\"channel_id\":\"sim_va\",\"reset\":true}");
    refund_ok(tn, "PR2", 1200,
              "\"payee\":{\"type\":\"ACCOUNT\",\"account_no\":\"6222020000004321\",\"name\":\"A "
              "Buyer\",\"bank_code\":\"ICBC\"}",
              rno);
    expect_refund(rno, "SUCCESS");
    long long pending0 = pending_of(&g_m);
    char *txn = sent_txn(rno);
    snprintf(body, sizeof body, "{\"channel_txn_id\":\"%s\",\"reason_code\":\"R01\"}", txn);
    free(txn);
    pc_t_resp_t r = pc_t_sim(&g_stack, "POST", "/sim/return", body);
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    assert_true(pc_t_sql_wait(
        &g_stack, "SUCCESS/true", 10,
        "SELECT status || '/' || needs_ops FROM refunds WHERE refund_no = '%s'", rno));
    assert_int_equal(pending_of(&g_m), pending0);
    assert_true(pc_t_needs_ops_listed(&g_stack, "refund", rno) > 0);
    assert_true(pc_t_alert_wait(&g_stack, "CHANNEL_CONTRADICTION", "payments", 1, 30));
    assert_int_equal(
        pc_t_needs_ops_resolve(&g_stack, "refund", rno,
                               "{\"why\":\"paid to the buyer's new account by hand\"}"),
        200);
    assert_int_equal(
        pc_t_sql_int(&g_stack, "SELECT needs_ops::int FROM refunds WHERE refund_no = '%s'", rno),
        0);
    assert_true(pc_t_alert_wait(&g_stack, "CHANNEL_CONTRADICTION", "payments", 0, 30));
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* A fresh buyer who topped up amount by card: its id and wallet account. */
static void topped_up_buyer(long amount, char buyer[32], char wallet[96])
{
    char tn[40];
    snprintf(buyer, 32, "%s", fresh_buyer());
    snprintf(wallet, 96, "buyer:%s:wallet:CNY", buyer);
    new_trade_for(&g_m, "RECHARGE", amount, buyer, NULL, tn);
    pc_t_resp_t r = pay_as(&g_m, tn, buyer, "CARD", pc_t_fresh_card());
    assert_string_equal(pc_t_jstr(&r, "status"), "SUCCESS");
    pc_t_resp_free(&r);
}

static void test_multi_part_payment_refunds_external_then_balance_then_coupon(void **state)
{
    (void)state;
    char buyer[32], tn[40], r1[40], r2[40], r3[40], wallet[96], coupon[64], extra[512];
    /* The buyer tops up 3000, gets a platform coupon of 500, then pays 5000
     * with coupon 500 + balance 2000 + card 2500. */
    topped_up_buyer(3000, buyer, wallet);
    pc_t_resp_t r;
    char cb[128];
    snprintf(cb, sizeof cb, "{\"buyer_id\":\"%s\",\"amount\":500,\"currency\":\"CNY\"}", buyer);
    r = pc_t_admin(&g_stack, "POST", "/admin/coupons", cb);
    assert_int_equal(r.status, 201);
    snprintf(coupon, sizeof coupon, "%s", pc_t_jstr(&r, "coupon_id"));
    pc_t_resp_free(&r);
    new_trade_for(&g_m, "INSTANT", 5000, buyer, NULL, tn);
    snprintf(extra, sizeof extra, "\"coupon_id\":\"%s\",\"balance_amount\":2000,%s", coupon,
             pc_t_fresh_card());
    r = pay_as(&g_m, tn, buyer, "CARD", extra);
    assert_string_equal(pc_t_jstr(&r, "status"), "SUCCESS");
    pc_t_resp_free(&r);
    assert_int_equal(balance(wallet), 1000);
    long long marketing0 = balance("platform:marketing:CNY");

    /* 2000: all of it from the card part. */
    refund_ok(tn, "MP1", 2000, NULL, r1);
    expect_refund(r1, "SUCCESS");
    assert_int_equal(refund_int(r1, "external_amount"), 2000);
    assert_int_equal(balance(wallet), 1000);
    /* 1000: the rest of the card part (500), then 500 of the balance. */
    refund_ok(tn, "MP2", 1000, NULL, r2);
    expect_refund(r2, "SUCCESS");
    assert_int_equal(refund_int(r2, "external_amount"), 500);
    assert_int_equal(refund_int(r2, "balance_amount"), 500);
    assert_int_equal(balance(wallet), 1500);
    /* 2000: balance 1500 and the coupon 500; nothing goes through a channel,
     * so it is done at once (method API: the platform moves it itself). */
    refund_ok(tn, "MP3", 2000, NULL, r3);
    expect_refund(r3, "SUCCESS");
    assert_int_equal(refund_int(r3, "external_amount"), 0);
    assert_int_equal(refund_int(r3, "balance_amount"), 1500);
    assert_int_equal(refund_int(r3, "coupon_amount"), 500);
    assert_int_equal(sim_refunds_anywhere(r3), 0);
    assert_int_equal(balance(wallet), 3000);
    assert_int_equal(balance("platform:marketing:CNY"), marketing0 + 500);
    char *st = trade_col(tn, "status");
    assert_string_equal(st, "TRADE_CLOSED");
    free(st);
}

/* The buyer disputes the card part of a balance + card payment (a
 * chargeback gives it back through the channel): a refund of the rest is
 * the balance part, not the card again. Before, the refund was split onto
 * the card as if nothing had been charged back, and the cardholder got the
 * card part twice (or, with a channel that refuses, the balance part could
 * never be refunded). */
static void test_refund_after_a_chargeback_of_the_card_part_returns_the_balance(void **state)
{
    (void)state;
    char buyer[32], tn[40], rno[40], wallet[96], extra[512], body[512], code[40];
    topped_up_buyer(2000, buyer, wallet);
    pc_t_resp_t r;
    new_trade_for(&g_m, "INSTANT", 5000, buyer, NULL, tn);
    snprintf(extra, sizeof extra, "\"balance_amount\":2000,%s", pc_t_fresh_card());
    r = pay_as(&g_m, tn, buyer, "CARD", extra);
    assert_string_equal(pc_t_jstr(&r, "status"), "SUCCESS");
    pc_t_resp_free(&r);
    assert_int_equal(balance(wallet), 0);
    char *txn = pc_t_sql(&g_stack,
                         "SELECT channel_txn_id FROM payments WHERE trade_no = '%s' AND status = "
                         "'SUCCESS'",
                         tn);
    assert_non_null(txn);
    snprintf(body, sizeof body,
             "{\"reference\":\"CBP-%s\",\"channel_id\":\"%s\",\"channel_txn_id\":\"%s\","
             "\"amount\":3000,\"currency\":\"CNY\",\"reason_code\":\"4853\"}",
             tn, paid_channel(tn), txn);
    free(txn);
    r = pc_t_admin(&g_stack, "POST", "/admin/chargebacks", body);
    assert_int_equal(r.status, 201);
    pc_t_resp_free(&r);
    /* 3000 disputed, 2000 left to refund: the balance part. */
    r = refund(tn, "CBP1", 2001, NULL);
    assert_int_equal(r.status, 422);
    snprintf(code, sizeof code, "%s", pc_t_errcode(&r));
    assert_string_equal(code, "AMOUNT_EXCEEDS_REFUNDABLE");
    pc_t_resp_free(&r);
    refund_ok(tn, "CBP2", 2000, NULL, rno);
    expect_refund(rno, "SUCCESS");
    assert_int_equal(refund_int(rno, "external_amount"), 0);
    assert_int_equal(refund_int(rno, "balance_amount"), 2000);
    assert_int_equal(sim_refunds_anywhere(rno), 0);
    assert_int_equal(balance(wallet), 2000);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* A payment by card is refunded to that card, never to a payee the
 * merchant names (an account of its own, another card): before, the payee
 * was taken, and once the channel's refund window had passed the money was
 * paid out to it, a stolen card's takings cashed out before the
 * cardholder's chargeback came. */
static void test_a_card_payment_is_refunded_to_its_card_only(void **state)
{
    (void)state;
    char tn[40];
    paid_trade_for(&g_m, "INSTANT", 900, NULL, tn, NULL);
    const char *payees[] = {
        "\"payee\":{\"type\":\"ACCOUNT\",\"account_no\":\"6222020000009876\",\"name\":\"M "
        "Self\",\"bank_code\":\"ICBC\"}",
        "\"payee\":{\"type\":\"CARD\",\"card_token\":\"tok_someone_else\"}"};
    for (int i = 0; i < 2; i++) {
        pc_t_resp_t r = refund(tn, "CP1", 900, payees[i]);
        if (r.status != 400 || strcmp(pc_t_errcode(&r), "INVALID_REQUEST") != 0 ||
            !strstr(r.body, "\"payee\""))
            fail_msg("a card payment's refund to a named payee: %ld %s", r.status, r.body);
        pc_t_resp_free(&r);
    }
    assert_int_equal(
        pc_t_sql_int(&g_stack, "SELECT count(*) FROM refunds WHERE trade_no = '%s'", tn), 0);
    char rno[40];
    refund_ok(tn, "CP1", 900, NULL, rno);
    expect_refund(rno, "SUCCESS");
    assert_true(pc_t_ledger_ok(&g_stack));
}

static void test_va_refund_pays_out_to_the_named_payee_else_offline(void **state)
{
    (void)state;
    char tn[40], rno[40];
    paid_va_trade(1200, tn);
    pc_t_resp_t r;
    char *st;
    /* A VA channel refunds by payout only. The refund body of api.md has no
     * payee: such a refund is accepted and handled by ops (OFFLINE), with
     * nothing sent to the channel. */
    char vtn[40], vrno[40];
    paid_va_trade(800, vtn);
    refund_ok(vtn, "PO0", 300, NULL, vrno);
    char *m = refund_field(vrno, "method");
    assert_string_equal(m, "OFFLINE");
    free(m);
    expect_refund(vrno, "ACCEPTED");
    assert_int_equal(sim_count("sim_va", "PAYOUT", NULL, vrno), 0);
    /* A card number is never taken as a payee. */
    r = refund(tn, "PO1", 1200, "\"payee\":{\"type\":\"CARD\",\"pan\":\"4242424242424242\"}");
    assert_int_equal(r.status, 400);
    pc_t_resp_free(&r);
    /* Nor as an account number (before: accepted, kept in the refund's row). */
    r = refund(tn, "PO1", 1200,
               "\"payee\":{\"type\":\"ACCOUNT\",\"account_no\":\"6222021234567890128\",\"name\":"
               "\"A Buyer\",\"bank_code\":\"ICBC\"}");
    if (r.status != 400)
        fail_msg("a card number as a refund's account_no: %ld %s", r.status, r.body);
    assert_non_null(strstr(r.body, "card number"));
    pc_t_resp_free(&r);
    refund_ok(tn, "PO1", 1200,
              "\"payee\":{\"type\":\"ACCOUNT\",\"account_no\":\"6222020000001234\",\"name\":\"A "
              "Buyer\",\"bank_code\":\"ICBC\"}",
              rno);
    m = refund_field(rno, "method");
    assert_string_equal(m, "PAYOUT");
    free(m);
    expect_refund(rno, "SUCCESS");
    assert_int_equal(sim_count("sim_va", "PAYOUT", "SUCCESS", rno), 1);
    st = trade_col(tn, "status");
    assert_string_equal(st, "TRADE_CLOSED");
    free(st);
}

/* Cash paid at a store, refunded to an account the merchant names: the
 * store's channel pays nothing out (it lists no PAYOUT), so ops pay it by
 * hand (OFFLINE) and nothing is sent. Before, it was sent to that channel as
 * a payout. */
static void test_a_refund_to_an_account_through_a_channel_without_payouts_is_offline(void **state)
{
    (void)state;
    char tn[40], rno[40];
    paid_async_trade(700, "OTC", "otc_code", tn);
    /* A card is a payee only as the card the payment was made with: the
     * channel holds no other (before, sent, and failed there). */
    pc_t_resp_t r =
        refund(tn, "OTCCARD1", 700, "\"payee\":{\"type\":\"CARD\",\"card_token\":\"tok_x\"}");
    if (r.status != 400 || !strstr(r.body, "\"payee\""))
        fail_msg("a card payee for a cash payment's refund: %ld %s", r.status, r.body);
    pc_t_resp_free(&r);
    refund_ok(tn, "OTCACCT1", 700,
              "\"payee\":{\"type\":\"ACCOUNT\",\"account_no\":\"6222020000001234\",\"name\":\"A "
              "Buyer\",\"bank_code\":\"ICBC\"}",
              rno);
    char *m = refund_field(rno, "method");
    assert_string_equal(m, "OFFLINE");
    free(m);
    expect_refund(rno, "ACCEPTED");
    usleep(500000);
    assert_int_equal(sim_count("sim_otc", "PAYOUT", NULL, rno), 0);
    /* Ops, who pay it by hand, see the account to pay. */
    char path[96];
    snprintf(path, sizeof path, "/admin/refunds/%s", rno);
    r = pc_t_admin(&g_stack, "GET", path, NULL);
    assert_int_equal(r.status, 200);
    json_t *j = pc_t_json(&r);
    json_t *payee = json_object_get(j, "payee");
    assert_string_equal(json_string_value(json_object_get(payee, "account_no")),
                        "6222020000001234");
    assert_string_equal(json_string_value(json_object_get(payee, "name")), "A Buyer");
    json_decref(j);
    pc_t_resp_free(&r);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* Ops switch channel ch off (on = 0) or on again, and every node has heard
 * of it. */
static void switch_channel(const char *ch, int on)
{
    char path[96];
    snprintf(path, sizeof path, "/admin/channels/%s/%s", ch, on ? "enable" : "disable");
    pc_t_resp_t r =
        pc_t_admin(&g_stack, "POST", path, on ? NULL : "{\"reason\":\"bank maintenance\"}");
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    if (!on)
        usleep(1200000); /* every node hears of the switch within a second */
}

/* Nothing goes through a channel ops switched off, not even a payout to the
 * card the buyer paid with: the refund waits for ops (OFFLINE). */
static void test_refund_through_a_switched_off_channel_is_offline(void **state)
{
    (void)state;
    char tn[40], rno[40];
    paid_trade_for(&g_m, "INSTANT", 900, NULL, tn, NULL);
    const char *ch = paid_channel(tn);
    switch_channel(ch, 0);
    refund_ok(tn, "OFF1", 400, NULL, rno);
    switch_channel(ch, 1);
    char *m = refund_field(rno, "method");
    assert_string_equal(m, "OFFLINE");
    free(m);
    expect_refund(rno, "ACCEPTED");
    assert_int_equal(sim_count(ch, "REFUND", NULL, rno) + sim_count(ch, "PAYOUT", NULL, rno), 0);
}

static void test_short_merchant_is_refused_unless_advance_funded(void **state)
{
    (void)state;
    pc_t_merchant_t partner = pc_t_create_merchant(&g_stack, NULL);
    pc_t_merchant_t plain = pc_t_create_merchant(&g_stack, NULL);
    pc_t_merchant_t funded = pc_t_create_merchant(&g_stack, "\"advance_funding\":true");
    char splits[160], tn[40], rno[40], acct[128];
    snprintf(splits, sizeof splits, "\"splits\":[{\"account\":\"%s\",\"amount\":600}]", partner.id);
    /* Paid 1000, of which 600 went to the split partner: the merchant holds 400. */
    paid_trade_for(&plain, "INSTANT", 1000, splits, tn, NULL);
    assert_int_equal(pending_of(&plain), 400);
    /* The partner gives nothing back here: this is about the merchant's own
     * money (split receivers' shares are tested in test_refund_splits). */
    char none[160];
    snprintf(none, sizeof none, "\"splits\":[{\"account\":\"%s\",\"amount\":0}]", partner.id);
    pc_t_resp_t r = refund_as(&plain, tn, "AF1", 1000, none);
    assert_int_equal(r.status, 422);
    assert_string_equal(pc_t_errcode(&r), "INSUFFICIENT_BALANCE");
    pc_t_resp_free(&r);
    assert_int_equal(pending_of(&plain), 400);
    r = refund_as(&plain, tn, "AF2", 400, none);
    assert_int_equal(r.status, 200);
    snprintf(rno, sizeof rno, "%s", pc_t_jstr(&r, "refund_no"));
    pc_t_resp_free(&r);
    expect_refund(rno, "SUCCESS");
    assert_int_equal(pending_of(&plain), 0);

    /* With advance funding the shortfall becomes the merchant's debt. */
    paid_trade_for(&funded, "INSTANT", 1000, splits, tn, NULL);
    r = refund_as(&funded, tn, "AF3", 1000, none);
    assert_int_equal(r.status, 200);
    snprintf(rno, sizeof rno, "%s", pc_t_jstr(&r, "refund_no"));
    pc_t_resp_free(&r);
    expect_refund(rno, "SUCCESS");
    assert_int_equal(pending_of(&funded), 0);
    snprintf(acct, sizeof acct, "merchant:%s:receivable:CNY", funded.id);
    assert_int_equal(balance(acct), -600);
    assert_int_equal(refund_int(rno, "from_receivable"), 600);
}

static void test_guarantee_refund_takes_unsettled_escrow_then_merchant(void **state)
{
    (void)state;
    pc_t_merchant_t m = pc_t_create_merchant(&g_stack, NULL);
    char tn[40], r1[40], r2[40], path[96];
    paid_trade_for(&m, "GUARANTEE", 1000, NULL, tn, NULL);
    snprintf(path, sizeof path, "/v1/trades/%s/settle", tn);
    pc_t_resp_t r = pc_t_call(&g_stack, &m, "POST", path, "{\"amount\":600}", "settle-g1");
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    assert_int_equal(pending_of(&m), 600);
    long long escrow0 = balance("platform:escrow:CNY");
    /* 500: the 400 still in escrow, then 100 from the merchant. */
    r = refund_as(&m, tn, "G1", 500, NULL);
    assert_int_equal(r.status, 200);
    snprintf(r1, sizeof r1, "%s", pc_t_jstr(&r, "refund_no"));
    pc_t_resp_free(&r);
    assert_int_equal(refund_int(r1, "from_escrow"), 400);
    assert_int_equal(refund_int(r1, "from_pending"), 100);
    expect_refund(r1, "SUCCESS");
    assert_int_equal(pending_of(&m), 500);
    assert_int_equal(balance("platform:escrow:CNY"), escrow0 - 400);
    /* Nothing is left in escrow to settle: the trade has ended as a settle
     * of the rest would have ended it, and the merchant is told (before: it
     * stayed PAY_SUCCESS for good, and the settle was refused with 422). */
    char *st = trade_col(tn, "status");
    assert_string_equal(st, "TRADE_SUCCESS");
    free(st);
    assert_int_equal(outbox_count("trade.succeeded", "trade_no", tn), 1);
    r = pc_t_call(&g_stack, &m, "POST", path, "{}", "settle-g2");
    assert_int_equal(r.status, 409);
    pc_t_resp_free(&r);
    r = refund_as(&m, tn, "G2", 500, NULL);
    assert_int_equal(r.status, 200);
    snprintf(r2, sizeof r2, "%s", pc_t_jstr(&r, "refund_no"));
    pc_t_resp_free(&r);
    assert_int_equal(refund_int(r2, "from_escrow"), 0);
    expect_refund(r2, "SUCCESS");
    assert_int_equal(pending_of(&m), 0);
    st = trade_col(tn, "status");
    assert_string_equal(st, "TRADE_CLOSED");
    free(st);
}

static void test_recharge_refund_takes_the_wallet(void **state)
{
    (void)state;
    char buyer[32], tn[40], tn2[40], rno[40], wallet[96];
    recharged_buyer(buyer, wallet, tn);
    pc_t_resp_t r;
    long long pending0 = pending_of(&g_m);
    refund_ok(tn, "RW1", 1000, NULL, rno);
    expect_refund(rno, "SUCCESS");
    assert_int_equal(balance(wallet), 2000);
    assert_int_equal(pending_of(&g_m), pending0);
    /* The buyer spends 1500 of it: the rest of the top-up cannot go back. */
    new_trade_for(&g_m, "INSTANT", 1500, buyer, NULL, tn2);
    r = pay_as(&g_m, tn2, buyer, "BALANCE", NULL);
    assert_string_equal(pc_t_jstr(&r, "status"), "SUCCESS");
    pc_t_resp_free(&r);
    r = refund(tn, "RW2", 2000, NULL);
    assert_int_equal(r.status, 422);
    assert_string_equal(pc_t_errcode(&r), "INSUFFICIENT_BALANCE");
    pc_t_resp_free(&r);
    assert_int_equal(balance(wallet), 500);
}

/* A card payment of 21,000.00 (held for review, released): its trade in tn. */
static void large_card_payment(char tn[40])
{
    char buyer[32], path[128];
    snprintf(buyer, sizeof buyer, "%s", fresh_buyer());
    new_trade_for(&g_m, "INSTANT", 2100000, buyer, NULL, tn);
    pc_t_resp_t r = pay_as(&g_m, tn, buyer, "CARD", pc_t_fresh_card());
    if (!strcmp(pc_t_jstr(&r, "status"), "REVIEW")) {
        snprintf(path, sizeof path, "/admin/payments/%s/release", pc_t_jstr(&r, "payment_no"));
        pc_t_resp_t rel = pc_t_admin(&g_stack, "POST", path, NULL);
        assert_string_equal(pc_t_jstr(&rel, "status"), "SUCCESS");
        pc_t_resp_free(&rel);
    } else {
        assert_string_equal(pc_t_jstr(&r, "status"), "SUCCESS");
    }
    pc_t_resp_free(&r);
}

/* A card refund the risk rule holds (SUSPENDED) until the channel's 180-day
 * window has passed: on resume its method is chosen again, and it is paid
 * out to the card the buyer paid with, not sent to a refund API the channel
 * would refuse. Before, it stayed API. */
static void test_a_refund_resumed_after_its_window_is_paid_out(void **state)
{
    (void)state;
    char tn[40], rno[40], path[96];
    large_card_payment(tn);
    const char *ch = paid_channel(tn);
    pc_t_resp_t r = refund(tn, "WIN1", 2050000, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(pc_t_jstr(&r, "status"), "SUSPENDED");
    assert_string_equal(pc_t_jstr(&r, "method"), "API");
    snprintf(rno, sizeof rno, "%s", pc_t_jstr(&r, "refund_no"));
    pc_t_resp_free(&r);
    free(pc_t_sql(&g_stack,
                  "UPDATE payments SET finished_at = finished_at - interval '200 days' WHERE "
                  "trade_no = '%s' AND status = 'SUCCESS' RETURNING 1",
                  tn));
    snprintf(path, sizeof path, "/admin/refunds/%s/resume", rno);
    r = pc_t_admin(&g_stack, "POST", path, "{\"why\":\"checked with the buyer\"}");
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    expect_refund(rno, "SUCCESS");
    char *m = refund_field(rno, "method");
    assert_string_equal(m, "PAYOUT");
    free(m);
    assert_int_equal(sim_count(ch, "PAYOUT", "SUCCESS", rno), 1);
    assert_int_equal(sim_count(ch, "REFUND", NULL, rno), 0);
}

/* A payout refund held by risk, its channel switched off by ops before the
 * refund is resumed: it waits for ops (OFFLINE), nothing is sent. Before,
 * only API and FILE refunds were chosen again on resume, and the payout
 * went out through the switched-off channel. */
static void test_a_payout_refund_resumed_while_its_channel_is_off_is_offline(void **state)
{
    (void)state;
    char tn[40], rno[40], path[96];
    large_card_payment(tn);
    const char *ch = paid_channel(tn);
    free(pc_t_sql(&g_stack,
                  "UPDATE payments SET finished_at = finished_at - interval '200 days' WHERE "
                  "trade_no = '%s' AND status = 'SUCCESS' RETURNING 1",
                  tn));
    pc_t_resp_t r = refund(tn, "OFFPO1", 2050000, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(pc_t_jstr(&r, "status"), "SUSPENDED");
    assert_string_equal(pc_t_jstr(&r, "method"), "PAYOUT");
    snprintf(rno, sizeof rno, "%s", pc_t_jstr(&r, "refund_no"));
    pc_t_resp_free(&r);
    switch_channel(ch, 0);
    snprintf(path, sizeof path, "/admin/refunds/%s/resume", rno);
    r = pc_t_admin(&g_stack, "POST", path, "{\"why\":\"checked with the buyer\"}");
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    usleep(800000);
    switch_channel(ch, 1);
    char *m = refund_field(rno, "method");
    assert_string_equal(m, "OFFLINE");
    free(m);
    expect_refund(rno, "ACCEPTED");
    assert_int_equal(sim_count(ch, "PAYOUT", NULL, rno) + sim_count(ch, "REFUND", NULL, rno), 0);
}

static void test_risk_holds_a_large_refund_until_ops_resume_it(void **state)
{
    (void)state;
    char tn[40], rno[40], path[128];
    large_card_payment(tn);
    long long pending0 = pending_of(&g_m);
    pc_t_resp_t r = refund(tn, "RISK1", 2050000, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(pc_t_jstr(&r, "status"), "SUSPENDED");
    snprintf(rno, sizeof rno, "%s", pc_t_jstr(&r, "refund_no"));
    pc_t_resp_free(&r);
    /* Held: the money is reserved, nothing went to the channel. */
    assert_int_equal(pending_of(&g_m), pending0 - 2050000);
    usleep(500000);
    assert_int_equal(sim_refunds_anywhere(rno), 0);
    char *hold = refund_field(rno, "hold_reason");
    assert_non_null(strstr(hold, "REVIEW"));
    free(hold);
    snprintf(path, sizeof path, "/admin/refunds/%s/resume", rno);
    r = pc_t_admin(&g_stack, "POST", path, "{\"why\":\"buyer called, verified\"}");
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    expect_refund(rno, "SUCCESS");
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT count(*) FROM refund_actions WHERE refund_no = '%s' AND "
                                  "who = 'ops' AND action = 'RESUME' AND why = 'buyer called, "
                                  "verified'",
                                  rno),
                     1);
    /* Ops see how it was decided and everything that happened to it. */
    snprintf(path, sizeof path, "/admin/refunds/%s", rno);
    r = pc_t_admin(&g_stack, "GET", path, NULL);
    assert_int_equal(r.status, 200);
    json_t *j = pc_t_json(&r);
    assert_int_equal(strlen(json_string_value(json_object_get(j, "rule_version"))), 64);
    assert_string_equal(json_string_value(json_object_get(j, "risk_decision")), "REVIEW");
    json_t *acts = json_object_get(j, "actions");
    assert_int_equal(json_array_size(acts), 4); /* ACCEPT, HOLD, RESUME, CHANNEL_RESULT */
    assert_string_equal(json_string_value(json_object_get(json_array_get(acts, 1), "who")), "risk");
    json_decref(j);
    pc_t_resp_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_full_and_partial_refunds_up_to_paid_then_over_is_refused,
                                  after_each),
        cmocka_unit_test_teardown(test_concurrent_refunds_over_two_nodes_never_exceed_paid,
                                  after_each),
        cmocka_unit_test_teardown(test_api_refund_that_times_out_resolves_by_query, after_each),
        cmocka_unit_test_teardown(test_channel_finishes_refund_later_by_callback_or_fails_it,
                                  after_each),
        cmocka_unit_test_teardown(test_refund_paid_with_another_sum_is_flagged, after_each),
        cmocka_unit_test_teardown(
            test_refund_without_answer_after_every_query_is_flagged_until_final, after_each),
        cmocka_unit_test_teardown(test_refund_the_channel_loses_every_time_is_flagged, after_each),
        cmocka_unit_test_teardown(test_ops_record_the_success_of_a_refund_no_query_could_finish,
                                  after_each),
        cmocka_unit_test_teardown(test_a_success_after_ops_recorded_the_refund_failed_is_flagged,
                                  after_each),
        cmocka_unit_test_teardown(test_a_refund_naming_two_trades_is_refused, after_each),
        cmocka_unit_test_teardown(test_multi_part_payment_refunds_external_then_balance_then_coupon,
                                  after_each),
        cmocka_unit_test_teardown(test_balance_refund_of_a_trade_created_without_a_buyer,
                                  after_each),
        cmocka_unit_test_teardown(
            test_wallet_only_refund_that_failed_after_dispatch_is_finished_later, after_each),
        cmocka_unit_test_teardown(
            test_refund_after_a_chargeback_of_the_card_part_returns_the_balance, after_each),
        cmocka_unit_test(test_a_card_payment_is_refunded_to_its_card_only),
        cmocka_unit_test_teardown(test_va_refund_pays_out_to_the_named_payee_else_offline,
                                  after_each),
        cmocka_unit_test_teardown(
            test_a_refund_to_an_account_through_a_channel_without_payouts_is_offline, after_each),
        cmocka_unit_test_teardown(test_a_refund_resumed_after_its_window_is_paid_out, after_each),
        cmocka_unit_test_teardown(test_a_payout_refund_resumed_while_its_channel_is_off_is_offline,
                                  after_each),
        cmocka_unit_test_teardown(test_refund_through_a_switched_off_channel_is_offline,
                                  after_each),
        cmocka_unit_test_teardown(test_payout_refund_returned_before_its_success_was_heard_fails,
                                  after_each),
        cmocka_unit_test_teardown(test_payout_refund_returned_after_success_goes_to_ops,
                                  after_each),
        cmocka_unit_test_teardown(test_short_merchant_is_refused_unless_advance_funded, after_each),
        cmocka_unit_test_teardown(test_guarantee_refund_takes_unsettled_escrow_then_merchant,
                                  after_each),
        cmocka_unit_test_teardown(test_settle_of_the_rest_waits_for_an_escrow_refund, after_each),
        cmocka_unit_test_teardown(test_recharge_refund_takes_the_wallet, after_each),
        cmocka_unit_test_teardown(test_risk_holds_a_large_refund_until_ops_resume_it, after_each),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
