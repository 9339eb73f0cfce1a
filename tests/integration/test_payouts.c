/* Payouts end to end against two paycore nodes, PostgreSQL, Redis and
 * paysim: success, failure and return with the balances right, a payout
 * above the available balance refused, 20 concurrent payouts over both nodes
 * that never overdraw, late answers (callback, lost callback and status
 * query), risk review with ops release and reject; and recharge, then pay by
 * balance; real-name verification before any payout, the payee name of an
 * account payout against the verified name, and the BIN rule of card
 * payouts. The ledger check after each. */
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
#include <time.h>
#include <unistd.h>

static pc_stack_t g_stack;
static int g_seq;
static char g_today[11];

/* Today's UTC date, read again before each test: a run that crosses midnight
 * must not settle or reconcile "today" as the day before. */
static int refresh_today(void **state)
{
    (void)state;
    pc_t_utc_today(g_today);
    return 0;
}

static int setup(void **state)
{
    (void)state;
    pc_stack_init(&g_stack, "payouts");
    pc_stack_env(&g_stack, "PAYCORE_SETTLEMENT_AUTO", "false");
    pc_stack_env(&g_stack, "PAYCORE_PAYOUT_POLL_MS", "100");
    pc_stack_env(&g_stack, "PAYCORE_PAYOUT_FIRST_QUERY_MS", "600");
    pc_stack_env(&g_stack, "PAYCORE_PAYOUT_QUERY_SCHEDULE_MS", "300,300,500,1000,2000");
    pc_stack_env(&g_stack, "PAYCORE_PAYOUT_NOT_FOUND_AFTER_S", "1");
    pc_stack_env(&g_stack, "PAYCORE_ALERTS_CHECK_MS", "300");
    pc_stack_start_paysim(&g_stack);
    pc_stack_start_node(&g_stack, 0);
    pc_stack_start_node(&g_stack, 1);
    return refresh_today(state);
}

static int teardown(void **state)
{
    (void)state;
    pc_stack_stop(&g_stack);
    return 0;
}

static long long bal(const char *account)
{
    return pc_t_sql_int(&g_stack, "SELECT coalesce(ledger_balance('%s'), 0)", account);
}

static long long available(const pc_t_merchant_t *m)
{
    char id[160];
    snprintf(id, sizeof id, "merchant:%s:available:CNY", m->id);
    return bal(id);
}

static void new_trade_in(const pc_t_merchant_t *m, const char *product, long amount,
                         const char *currency, const char *buyer, char *tn)
{
    char body[512], key[64];
    g_seq++;
    snprintf(body, sizeof body,
             "{\"out_trade_no\":\"PO%d-%d\",\"product\":\"%s\",\"amount\":%ld,\"currency\":"
             "\"%s\",\"subject\":\"Goods\"%s%s%s}",
             g_seq, (int)getpid(), product, amount, currency, buyer ? ",\"buyer_id\":\"" : "",
             buyer ? buyer : "", buyer ? "\"" : "");
    snprintf(key, sizeof key, "trade-%d", g_seq);
    pc_t_resp_t r = pc_t_call(&g_stack, m, "POST", "/v1/trades", body, key);
    assert_int_equal(r.status, 201);
    snprintf(tn, 40, "%s", pc_t_jstr(&r, "trade_no"));
    pc_t_resp_free(&r);
}

static void new_trade(const pc_t_merchant_t *m, const char *product, long amount, const char *buyer,
                      char *tn)
{
    new_trade_in(m, product, amount, "CNY", buyer, tn);
}

/* Records the merchant's real-name verification (admin API). */
static void verify(const pc_t_merchant_t *m, const char *legal_name)
{
    char path[160], body[256];
    snprintf(path, sizeof path, "/admin/merchants/%s/verify", m->id);
    snprintf(body, sizeof body,
             "{\"legal_name\":\"%s\",\"id_type\":\"BUSINESS_LICENSE\",\"id_number\":"
             "\"91110000ABCD1234\"}",
             legal_name);
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", path, body);
    assert_int_equal(r.status, 200);
    assert_string_equal(pc_t_jstr(&r, "id_last4"), "1234");
    pc_t_resp_free(&r);
}

/* A merchant (T+0, 0.6 %) whose available balance is paid − fee: payments
 * settled today. Not verified. */
static pc_t_merchant_t funded_unverified_merchant(long paid)
{
    pc_t_merchant_t m =
        pc_t_create_merchant(&g_stack, "\"settle_cycle_days\":0,\"fee_rate_bp\":60");
    char tn[40], pno[48], st[20];
    new_trade(&m, "INSTANT", paid, NULL, tn);
    snprintf(pno, sizeof pno, "PFUND%d-%d", (int)getpid(), ++g_seq);
    assert_int_equal(
        pc_t_mark_paid(&g_stack, tn, pno, paid, "CNY", "channel:sim_card:clearing:CNY", st), 0);
    char body[64];
    snprintf(body, sizeof body, "{\"date\":\"%s\"}", g_today);
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", "/admin/settlements/run", body);
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    long long fee = (paid * 60 + 5000) / 10000;
    assert_int_equal(available(&m), paid - fee);
    return m;
}

/* The same, verified with the legal name "Shop Ltd". */
static pc_t_merchant_t funded_merchant(long paid)
{
    pc_t_merchant_t m = funded_unverified_merchant(paid);
    verify(&m, "Shop Ltd");
    return m;
}

static pc_t_resp_t payout_named(const pc_t_merchant_t *m, const char *out_no, long amount,
                                const char *account, const char *name, const char *key)
{
    char body[512];
    snprintf(body, sizeof body,
             "{\"out_payout_no\":\"%s\",\"amount\":%ld,\"currency\":\"CNY\",\"payee\":{\"type\":"
             "\"ACCOUNT\",\"account_no\":\"%s\",\"name\":\"%s\",\"bank_code\":\"ICBC\"}}",
             out_no, amount, account, name);
    return pc_t_call(&g_stack, m, "POST", "/v1/payouts", body, key);
}

/* A payout to the merchant's own account under its verified name. */
static pc_t_resp_t payout(const pc_t_merchant_t *m, const char *out_no, long amount,
                          const char *account, const char *key)
{
    return payout_named(m, out_no, amount, account, "Shop Ltd", key);
}

/* A payout the API accepted (200): its payout_no into no. */
static void payout_ok(const pc_t_merchant_t *m, const char *out_no, long amount,
                      const char *account, const char *key, char no[40])
{
    pc_t_resp_t r = payout(m, out_no, amount, account, key);
    if (r.status != 200)
        fprintf(stderr, "payout: %ld %s\n", r.status, r.body);
    assert_int_equal(r.status, 200);
    snprintf(no, 40, "%s", pc_t_jstr(&r, "payout_no"));
    pc_t_resp_free(&r);
}

static pc_t_resp_t card_payout(const pc_t_merchant_t *m, const char *out_no, long amount,
                               const char *token, const char *key)
{
    char body[512];
    snprintf(body, sizeof body,
             "{\"out_payout_no\":\"%s\",\"amount\":%ld,\"currency\":\"CNY\",\"payee\":{\"type\":"
             "\"CARD\",\"card_token\":\"%s\",\"name\":\"Shop Ltd\"}}",
             out_no, amount, token);
    return pc_t_call(&g_stack, m, "POST", "/v1/payouts", body, key);
}

/* The field of an error answer ("" when none); static buffer. */
static const char *err_field(const pc_t_resp_t *r)
{
    static char out[64];
    out[0] = 0;
    json_t *j = pc_t_json(r);
    json_t *v = j ? json_object_get(json_object_get(j, "error"), "field") : NULL;
    if (json_is_string(v))
        snprintf(out, sizeof out, "%s", json_string_value(v));
    json_decref(j);
    return out;
}

/* Waits until the payout is in status want (GET /v1/payouts/{no}). */
static void expect_status(const pc_t_merchant_t *m, const char *no, const char *want)
{
    char path[128], got[24] = "";
    snprintf(path, sizeof path, "/v1/payouts/%s", no);
    for (int i = 0; i < 150; i++) {
        pc_t_resp_t r = pc_t_call(&g_stack, m, "GET", path, NULL, NULL);
        assert_int_equal(r.status, 200);
        snprintf(got, sizeof got, "%s", pc_t_jstr(&r, "status"));
        pc_t_resp_free(&r);
        if (!strcmp(got, want))
            return;
        usleep(100000);
    }
    assert_string_equal(got, want);
}

static long long outbox(const char *type, const char *no)
{
    return pc_t_sql_int(&g_stack,
                        "SELECT count(*) FROM outbox WHERE type = '%s' AND payload::jsonb -> "
                        "'data' ->> 'payout_no' = '%s'",
                        type, no);
}

static void test_payout_success(void **state)
{
    (void)state;
    pc_t_merchant_t m = funded_merchant(100000);
    long long escrow0 = bal("platform:escrow:CNY");
    long long clearing0 = bal("channel:sim_va:clearing:CNY");
    pc_t_resp_t r = payout(&m, "OUT-OK-1", 30000, "6222020000001111", "po-ok-1");
    assert_int_equal(r.status, 200);
    assert_string_equal(pc_t_jstr(&r, "status"), "ACCEPTED");
    assert_string_equal(pc_t_jstr(&r, "out_payout_no"), "OUT-OK-1");
    assert_null(strstr(r.body, "6222020000001111"));
    char no[40];
    snprintf(no, sizeof no, "%s", pc_t_jstr(&r, "payout_no"));
    /* Replayed: the same answer; a new key for the same out_payout_no: refused. */
    pc_t_resp_t r2 = payout(&m, "OUT-OK-1", 30000, "6222020000001111", "po-ok-1");
    assert_string_equal(r2.body, r.body);
    assert_non_null(pc_t_header(&r2, "Idempotent-Replayed"));
    pc_t_resp_free(&r2);
    pc_t_resp_free(&r);
    r = payout(&m, "OUT-OK-1", 30000, "6222020000001111", "po-ok-2");
    assert_int_equal(r.status, 409);
    assert_string_equal(pc_t_errcode(&r), "DUPLICATE_OUT_PAYOUT_NO");
    pc_t_resp_free(&r);

    expect_status(&m, no, "SUCCESS");
    assert_int_equal(available(&m), 99400 - 30000);
    assert_int_equal(bal("platform:escrow:CNY"), escrow0);
    assert_int_equal(bal("channel:sim_va:clearing:CNY") - clearing0, 30000);
    assert_int_equal(outbox("payout.succeeded", no), 1);
    char path[128];
    snprintf(path, sizeof path, "/v1/payouts?out_payout_no=OUT-OK-1");
    r = pc_t_call(&g_stack, &m, "GET", path, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(pc_t_jstr(&r, "payout_no"), no);
    pc_t_resp_free(&r);
    /* Another merchant does not see it. */
    pc_t_merchant_t other = pc_t_create_merchant(&g_stack, NULL);
    snprintf(path, sizeof path, "/v1/payouts/%s", no);
    r = pc_t_call(&g_stack, &other, "GET", path, NULL, NULL);
    assert_int_equal(r.status, 404);
    pc_t_resp_free(&r);
    assert_true(pc_t_ledger_ok(&g_stack));
}

static void test_payout_failure_gives_the_money_back(void **state)
{
    (void)state;
    pc_t_merchant_t m = funded_merchant(50000);
    long long escrow0 = bal("platform:escrow:CNY");
    char no[40];
    payout_ok(&m, "OUT-FAIL-1", 20000, "6222020000000002", "po-fail-1", no);
    expect_status(&m, no, "FAILED");
    char path[128];
    snprintf(path, sizeof path, "/v1/payouts/%s", no);
    pc_t_resp_t r = pc_t_call(&g_stack, &m, "GET", path, NULL, NULL);
    json_t *j = pc_t_json(&r);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "failure"), "code")),
                        "ACCOUNT_INVALID");
    json_decref(j);
    pc_t_resp_free(&r);
    assert_int_equal(available(&m), 49700);
    assert_int_equal(bal("platform:escrow:CNY"), escrow0);
    assert_int_equal(outbox("payout.failed", no), 1);
    /* Bad requests never reach the ledger. */
    r = pc_t_call(&g_stack, &m, "POST", "/v1/payouts",
                  "{\"out_payout_no\":\"OUT-PAN\",\"amount\":100,\"currency\":\"CNY\",\"payee\":"
                  "{\"type\":\"CARD\",\"pan\":\"4242424242424242\"}}",
                  "po-pan");
    assert_int_equal(r.status, 400);
    pc_t_resp_free(&r);
    r = pc_t_call(&g_stack, &m, "POST", "/v1/payouts",
                  "{\"out_payout_no\":\"OUT-RMB\",\"amount\":100,\"currency\":\"RMB\",\"payee\":"
                  "{\"type\":\"ACCOUNT\",\"account_no\":\"6222020000000001\",\"name\":\"A\",\"bank_"
                  "code\":\"ICBC\"}}",
                  "po-rmb");
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "\"field\":\"currency\""));
    pc_t_resp_free(&r);
    /* A card number given as an account number (it would be kept in the
     * payout's row, and paid to a card without the debit-card check).
     * Before: accepted, the number in payouts.payee. */
    r = payout(&m, "OUT-PAN-ACCT", 100, "6222021234567890128", "po-pan-acct");
    if (r.status != 400)
        fail_msg("a card number as account_no: %ld %s", r.status, r.body);
    assert_string_equal(err_field(&r), "payee.account_no");
    assert_null(strstr(r.body, "6222021234567890128"));
    pc_t_resp_free(&r);
    assert_int_equal(pc_t_sql_int(&g_stack, "SELECT count(*) FROM payouts WHERE payee::text LIKE "
                                            "'%%4242424242424242%%' OR payee::text LIKE "
                                            "'%%6222021234567890128%%'"),
                     0);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* A payout of 15,000 from m that the channel paid out (SUCCESS); its number
 * into no. */
static void paid_out(const pc_t_merchant_t *m, const char *out_no, const char *account, char no[40])
{
    char key[64];
    snprintf(key, sizeof key, "po-%s", out_no);
    pc_t_resp_t r = payout(m, out_no, 15000, account, key);
    assert_int_equal(r.status, 200);
    snprintf(no, 40, "%s", pc_t_jstr(&r, "payout_no"));
    pc_t_resp_free(&r);
    expect_status(m, no, "SUCCESS");
}

/* Posts to paysim's path a body naming the payout's channel_txn_id (txn,
 * freed), and expects 200. */
static void sim_with_txn(const char *path, const char *fmt, char *txn)
{
    char body[256];
    snprintf(body, sizeof body, fmt, txn);
    free(txn);
    pc_t_resp_t r = pc_t_sim(&g_stack, "POST", path, body);
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
}

/* The payee's bank sends payout no back (paysim's /sim/return). */
static void bank_returns(const char *no)
{
    char *txn = pc_t_sql(&g_stack, "SELECT channel_txn_id FROM payouts WHERE payout_no = '%s'", no);
    assert_non_null(txn);
    sim_with_txn("/sim/return", "{\"channel_txn_id\":\"%s\",\"reason_code\":\"R03\"}", txn);
}

static void test_payout_returned_after_success(void **state)
{
    (void)state;
    pc_t_merchant_t m = funded_merchant(40000);
    long long clearing0 = bal("channel:sim_va:clearing:CNY");
    char no[40];
    paid_out(&m, "OUT-RET-1", "6222020000003333", no);
    assert_int_equal(available(&m), 39760 - 15000);
    bank_returns(no);
    expect_status(&m, no, "RETURNED");
    /* The money is back in available; the channel's clearing is as before. */
    assert_int_equal(available(&m), 39760);
    assert_int_equal(bal("channel:sim_va:clearing:CNY"), clearing0);
    assert_int_equal(outbox("payout.returned", no), 1);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT count(*) FROM ledger_txns WHERE ref_type = 'payout' AND "
                                  "ref_id = '%s'",
                                  no),
                     3);
    assert_true(pc_t_ledger_ok(&g_stack));
}

static void test_payout_above_available_is_refused(void **state)
{
    (void)state;
    pc_t_merchant_t m = funded_merchant(10000);
    pc_t_resp_t r = payout(&m, "OUT-BIG-1", 9941, "6222020000004444", "po-big-1");
    assert_int_equal(r.status, 422);
    assert_string_equal(pc_t_errcode(&r), "INSUFFICIENT_BALANCE");
    pc_t_resp_free(&r);
    assert_int_equal(
        pc_t_sql_int(&g_stack, "SELECT count(*) FROM payouts WHERE merchant_id = '%s'", m.id), 0);
    assert_int_equal(available(&m), 9940);
    /* Exactly the balance is fine. */
    char no[40];
    payout_ok(&m, "OUT-BIG-2", 9940, "6222020000004444", "po-big-2", no);
    expect_status(&m, no, "SUCCESS");
    assert_int_equal(available(&m), 0);
    assert_true(pc_t_ledger_ok(&g_stack));
}

typedef struct {
    pc_t_merchant_t *m;
    int i;
    long status;
    char no[40];
} race_t;

static void *race(void *arg)
{
    race_t *x = arg;
    char out[32], key[32];
    snprintf(out, sizeof out, "OUT-RACE-%d", x->i);
    snprintf(key, sizeof key, "po-race-%d", x->i);
    pc_t_resp_t r = payout(x->m, out, 10000, "6222020000005555", key);
    x->status = r.status;
    if (r.status == 200)
        snprintf(x->no, sizeof x->no, "%s", pc_t_jstr(&r, "payout_no"));
    pc_t_resp_free(&r);
    return NULL;
}

static void test_concurrent_payouts_never_overdraw(void **state)
{
    (void)state;
    pc_t_merchant_t m = funded_merchant(100000); /* 99400 available */
    race_t x[20];
    pthread_t th[20];
    for (int i = 0; i < 20; i++) {
        x[i] = (race_t){&m, i, 0, ""};
        pthread_create(&th[i], NULL, race, &x[i]);
    }
    int ok = 0, refused = 0;
    for (int i = 0; i < 20; i++) {
        pthread_join(th[i], NULL);
        if (x[i].status == 200)
            ok++;
        else if (x[i].status == 422)
            refused++;
        else
            fprintf(stderr, "race %d: %ld\n", i, x[i].status);
    }
    assert_int_equal(ok, 9);
    assert_int_equal(refused, 11);
    for (int i = 0; i < 20; i++)
        if (x[i].status == 200)
            expect_status(&m, x[i].no, "SUCCESS");
    assert_int_equal(available(&m), 99400 - 90000);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT count(*) FROM payouts WHERE merchant_id = '%s' AND "
                                  "status = 'SUCCESS'",
                                  m.id),
                     9);
    /* Ops read them four at a time, newest first, each once: pages of 4, 4
     * and 1, the last without next_after. */
    char after[64] = "", prev[40] = "~";
    int listed = 0, pages = 0;
    for (;;) {
        char path[256];
        snprintf(path, sizeof path, "/admin/payouts?merchant_id=%s&status=SUCCESS&limit=4%s%s",
                 m.id, after[0] ? "&after=" : "", after);
        pc_t_resp_t r = pc_t_admin(&g_stack, "GET", path, NULL);
        assert_int_equal(r.status, 200);
        json_t *j = pc_t_json(&r);
        pc_t_resp_free(&r);
        json_t *list = json_object_get(j, "payouts"), *o;
        size_t i;
        json_array_foreach(list, i, o)
        {
            const char *at = json_string_value(json_object_get(o, "created_at"));
            assert_non_null(at);
            assert_true(strcmp(at, prev) <= 0);
            snprintf(prev, sizeof prev, "%s", at);
            for (int k = 0; k < 20; k++)
                if (x[k].status == 200 &&
                    !strcmp(x[k].no, json_string_value(json_object_get(o, "payout_no"))))
                    listed++;
        }
        const char *next = json_string_value(json_object_get(j, "next_after"));
        assert_int_equal(json_array_size(list), pages < 2 ? 4 : 1);
        assert_true((next != NULL) == (pages < 2));
        if (next)
            snprintf(after, sizeof after, "%s", next);
        json_decref(j);
        if (++pages == 3)
            break;
    }
    assert_int_equal(listed, 9);
    pc_t_resp_t r = pc_t_admin(&g_stack, "GET", "/admin/payouts?limit=1001", NULL);
    assert_int_equal(r.status, 400);
    pc_t_resp_free(&r);
    assert_true(pc_t_ledger_ok(&g_stack));
}

static void set_faults(const char *json)
{
    pc_t_resp_t r = pc_t_sim(&g_stack, "POST", "/sim/faults", json);
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
}

/* The bank sends a paid-out payout back and the channel's callback is lost:
 * only the day's statement shows the return. Reconciliation marks the
 * payout returned from that line and the merchant gets the money back.
 * Before, the difference could not be resolved at all (our record counted
 * as in flight) and the money stayed in the channel's clearing. */
static void test_returned_payout_whose_callback_was_lost_is_repaired_by_recon(void **state)
{
    (void)state;
    pc_t_merchant_t m = funded_merchant(40000);
    long long clearing0 = bal("channel:sim_va:clearing:CNY");
    set_faults("{\"channel_id\":\"sim_va\",\"reset\":true}");
    char no[40], body[160];
    paid_out(&m, "OUT-RETLOST-1", "6222020000004444", no);
    long long after_payout = available(&m);
    set_faults("{\"channel_id\":\"sim_va\",\"reset\":true,\"lost_callback_rate\":1}");
    bank_returns(no);
    usleep(500000);
    expect_status(&m, no, "SUCCESS");
    set_faults("{\"channel_id\":\"sim_va\",\"reset\":true}");

    snprintf(body, sizeof body, "{\"channel_id\":\"sim_va\",\"date\":\"%s\"}", g_today);
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", "/admin/recon/runs", body);
    if (r.status != 200)
        fprintf(stderr, "recon: %ld %s\n", r.status, r.body);
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    expect_status(&m, no, "RETURNED");
    assert_int_equal(available(&m), after_payout + 15000);
    assert_int_equal(bal("channel:sim_va:clearing:CNY"), clearing0);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT count(*) FROM recon_diffs WHERE local_ref = '%s' AND "
                                  "repair = 'PAYOUT_RETURN' AND status = 'AUTO_REPAIRED'",
                                  no),
                     1);
    assert_int_equal(outbox("payout.returned", no), 1);
    assert_true(pc_t_ledger_ok(&g_stack));
}

static void test_late_answers_by_callback_and_by_status_query(void **state)
{
    (void)state;
    pc_t_merchant_t m = funded_merchant(60000);
    /* The channel answers PROCESSING and finishes later with a callback. */
    set_faults("{\"channel_id\":\"sim_va\",\"reset\":true,\"payout_delay_ms\":400}");
    char no1[40];
    payout_ok(&m, "OUT-LATE-1", 10000, "6222020000006666", "po-late-1", no1);
    expect_status(&m, no1, "PROCESSING");
    expect_status(&m, no1, "SUCCESS");
    /* The callback is lost: the status query finds the result. */
    set_faults("{\"channel_id\":\"sim_va\",\"reset\":true,\"payout_delay_ms\":200,"
               "\"lost_callback_rate\":1}");
    char no2[40];
    payout_ok(&m, "OUT-LATE-2", 10000, "6222020000007777", "po-late-2", no2);
    expect_status(&m, no2, "SUCCESS");
    assert_true(pc_t_sql_int(&g_stack, "SELECT query_attempts FROM payouts WHERE payout_no = '%s'",
                             no2) >= 1);
    /* The request times out at the channel and is never executed: after the
     * grace period the query's "not found" fails it and the money comes back. */
    set_faults("{\"channel_id\":\"sim_va\",\"reset\":true,\"timeout_rate\":1,\"hang_ms\":300}");
    char no3[40];
    payout_ok(&m, "OUT-LATE-3", 10000, "6222020000008888", "po-late-3", no3);
    expect_status(&m, no3, "FAILED");
    set_faults("{\"channel_id\":\"sim_va\",\"reset\":true}");
    char *code = pc_t_sql(&g_stack, "SELECT failure_code FROM payouts WHERE payout_no = '%s'", no3);
    assert_string_equal(code, "NOT_SENT");
    free(code);
    assert_int_equal(available(&m), 59640 - 20000);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* A payout of 10,000 the channel holds (PROCESSING until /sim/complete)
 * with its callbacks lost: only status queries can learn its end. */
static void held_payout(const pc_t_merchant_t *m, const char *out_no, const char *account,
                        char no[40])
{
    set_faults("{\"channel_id\":\"sim_va\",\"reset\":true,\"payout_delay_ms\":-1,"
               "\"lost_callback_rate\":1}");
    char key[64];
    snprintf(key, sizeof key, "po-%s", out_no);
    pc_t_resp_t r = payout(m, out_no, 10000, account, key);
    assert_int_equal(r.status, 200);
    snprintf(no, 40, "%s", pc_t_jstr(&r, "payout_no"));
    pc_t_resp_free(&r);
}

/* Whether payout no is flagged for ops while still PROCESSING, within 15 s
 * (its status queries gave up). */
static int flagged_in_flight(const char *no)
{
    return pc_t_sql_wait(&g_stack, "1", 15,
                         "SELECT needs_ops::int FROM payouts WHERE payout_no = '%s' AND status = "
                         "'PROCESSING'",
                         no);
}

/* The channel pays out a held payout (its callback still lost). */
static void complete_held(const char *no)
{
    char *txn = NULL;
    for (int i = 0; i < 100; i++) {
        free(txn);
        txn =
            pc_t_sql(&g_stack,
                     "SELECT coalesce(channel_txn_id, '') FROM payouts WHERE payout_no = '%s'", no);
        if (txn && txn[0])
            break;
        usleep(50000);
    }
    assert_true(txn && txn[0]);
    sim_with_txn("/sim/complete", "{\"reference\":\"%s\"}", txn);
}

/* A payout the channel still holds after every scheduled query is flagged
 * for ops, and that raises the alert (before, only payments counted: the
 * flag on a payout reached nobody while its money sat in escrow). */
static void test_payout_left_open_after_every_query_raises_the_alert(void **state)
{
    (void)state;
    pc_t_merchant_t m = funded_merchant(30000);
    char no[40];
    held_payout(&m, "OUT-OPEN-1", "6222020000009999", no);
    assert_false(pc_t_alert_active(&g_stack, "REPAIR_EXHAUSTED", NULL));
    assert_true(flagged_in_flight(no));
    assert_true(pc_t_alert_wait(&g_stack, "REPAIR_EXHAUSTED", NULL, 1, 15));
    /* Still queried at the schedule's last pace: the channel's late answer
     * closes it, and the flag and the alert go (before, a flagged payout was
     * never queried again). */
    complete_held(no);
    expect_status(&m, no, "SUCCESS");
    assert_int_equal(
        pc_t_sql_int(&g_stack, "SELECT needs_ops::int FROM payouts WHERE payout_no = '%s'", no), 0);
    assert_true(pc_t_alert_wait(&g_stack, "REPAIR_EXHAUSTED", NULL, 0, 15));
    set_faults("{\"channel_id\":\"sim_va\",\"reset\":true}");
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* A payout the channel holds past every query, which ops learn from the
 * bank did not go: they record the failure and the money is the merchant's
 * again at once. Before, it sat in escrow until the channel answered, and
 * nothing ops could do moved it. */
static void test_ops_record_the_failure_of_a_payout_no_query_could_finish(void **state)
{
    (void)state;
    pc_t_merchant_t m = funded_merchant(30000);
    long long before = available(&m);
    char no[40];
    held_payout(&m, "OUT-OPS-1", "6222020000007777", no);
    assert_true(flagged_in_flight(no));
    assert_int_equal(available(&m), before - 10000);
    /* The database refuses it this once: 503, to be given again (it was
     * 409 "its channel's answer came first", which sent ops the wrong way). */
    free(pc_t_sql(&g_stack,
                  "CREATE FUNCTION pc_t_refuse_payout() RETURNS trigger LANGUAGE plpgsql AS $$ "
                  "BEGIN RAISE EXCEPTION 'refused by the test'; END $$"));
    free(pc_t_sql(&g_stack, "CREATE TRIGGER pc_t_refuse_payout BEFORE UPDATE ON payouts FOR "
                            "EACH ROW WHEN (NEW.status = 'FAILED') EXECUTE FUNCTION "
                            "pc_t_refuse_payout()"));
    const char *outcome = "{\"why\":\"bank: transfer rejected\",\"outcome\":\"FAILED\","
                          "\"failure_code\":\"ACCOUNT_CLOSED\"}";
    long refused = pc_t_needs_ops_resolve(&g_stack, "payout", no, outcome);
    free(pc_t_sql(&g_stack, "DROP TRIGGER pc_t_refuse_payout ON payouts"));
    free(pc_t_sql(&g_stack, "DROP FUNCTION pc_t_refuse_payout()"));
    assert_int_equal(refused, 503);
    assert_int_equal(pc_t_needs_ops_resolve(&g_stack, "payout", no, outcome), 200);
    expect_status(&m, no, "FAILED");
    assert_int_equal(available(&m), before);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT count(*) FROM payouts WHERE payout_no = '%s' AND "
                                  "failure_code = 'ACCOUNT_CLOSED' AND NOT needs_ops",
                                  no),
                     1);
    assert_int_equal(outbox("payout.failed", no), 1);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT count(*) FROM needs_ops_resolutions WHERE kind = "
                                  "'payout' AND ref = '%s' AND status = 'FAILED'",
                                  no),
                     1);
    set_faults("{\"channel_id\":\"sim_va\",\"reset\":true}");
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* Ops record an outcome for a flagged payout; whether it is still in
 * flight and flagged is read again under the payout's lock, where the
 * outcome is applied. Here another session holds the row and clears the
 * flag meanwhile (as the channel's own answer would end it): not recorded,
 * 409, and nothing moves. Before, the earlier read decided: the outcome
 * was applied, or, against a final state, flagged as the channel
 * contradicting itself. */
static void test_ops_outcome_is_checked_again_under_the_payouts_lock(void **state)
{
    (void)state;
    pc_t_merchant_t m = funded_merchant(30000);
    long long before = available(&m);
    char no[40];
    held_payout(&m, "OUT-OPS-2", "6222020000006666", no);
    assert_true(flagged_in_flight(no));
    assert_int_equal(pc_t_sh("psql '%s' -qAt -c \"BEGIN; SELECT 1 FROM payouts WHERE payout_no = "
                             "'%s' FOR UPDATE; SELECT pg_sleep(1.5); UPDATE payouts SET needs_ops "
                             "= false WHERE payout_no = '%s'; COMMIT;\" >/dev/null 2>&1 &",
                             g_stack.db_url, no, no),
                     0);
    usleep(300000);
    long st = pc_t_needs_ops_resolve(
        &g_stack, "payout", no, "{\"why\":\"bank: transfer rejected\",\"outcome\":\"FAILED\"}");
    assert_int_equal(st, 409);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT count(*) FROM payouts WHERE payout_no = '%s' AND status "
                                  "= 'PROCESSING' AND NOT needs_ops",
                                  no),
                     1);
    assert_int_equal(available(&m), before - 10000);
    complete_held(no);
    expect_status(&m, no, "SUCCESS");
    set_faults("{\"channel_id\":\"sim_va\",\"reset\":true}");
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* The channel's final answer to the last scheduled query cannot be applied
 * (a constraint the test adds refuses it; in life, the database failing at
 * that moment). The payout is flagged and queried again at the schedule's
 * last pace, and completes once the cause is gone; before, nothing looked
 * at it again and its money stayed in escrow. */
static void test_payout_answer_that_cannot_be_applied_last_is_retried(void **state)
{
    (void)state;
    pc_t_merchant_t m = funded_merchant(30000);
    char no[40];
    held_payout(&m, "OUT-BLOCK-1", "6222020000005555", no);
    free(pc_t_sql(&g_stack,
                  "ALTER TABLE payouts ADD CONSTRAINT pc_test_no_finish CHECK (payout_no <> '%s' "
                  "OR status = 'PROCESSING') NOT VALID",
                  no));
    complete_held(no);
    int flagged = pc_t_sql_wait(&g_stack, "1", 15,
                                "SELECT (needs_ops AND next_query_at IS NOT NULL)::int FROM "
                                "payouts WHERE payout_no = '%s' AND status = 'PROCESSING'",
                                no);
    free(pc_t_sql(&g_stack, "ALTER TABLE payouts DROP CONSTRAINT pc_test_no_finish"));
    assert_true(flagged);
    expect_status(&m, no, "SUCCESS");
    /* Final as its channel says: nothing left for ops. */
    assert_int_equal(
        pc_t_sql_int(&g_stack, "SELECT needs_ops::int FROM payouts WHERE payout_no = '%s'", no), 0);
    set_faults("{\"channel_id\":\"sim_va\",\"reset\":true}");
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* A channel that contradicts a final payout (here: FAILED after SUCCESS)
 * moves no money; the payout was flagged with nobody told. It is listed at
 * GET /admin/needs-ops, raises CHANNEL_CONTRADICTION, and ops resolve it
 * with a reason once they have dealt with it. */
static void test_contradicted_payout_is_listed_alerted_and_resolved(void **state)
{
    (void)state;
    pc_t_merchant_t m = funded_merchant(50000);
    char no[40];
    payout_ok(&m, "OUT-CONTRA-1", 12000, "6222020000001111", "po-contra-1", no);
    expect_status(&m, no, "SUCCESS");
    long long avail = available(&m);
    char *ch = pc_t_sql(&g_stack, "SELECT channel_id FROM payouts WHERE payout_no = '%s'", no);
    assert_int_equal(pc_t_channel_callback(&g_stack, ch, "payout", no, "FAILED", 12000), 200);
    free(ch);
    assert_true(pc_t_sql_wait(&g_stack, "SUCCESS/true", 10,
                              "SELECT status || '/' || needs_ops FROM payouts WHERE payout_no = "
                              "'%s'",
                              no));
    assert_int_equal(available(&m), avail);
    assert_true(pc_t_needs_ops_listed(&g_stack, "payout", no) > 0);
    assert_true(pc_t_alert_wait(&g_stack, "CHANNEL_CONTRADICTION", "payments", 1, 30));
    assert_int_equal(
        pc_t_needs_ops_resolve(&g_stack, "payout", no, "{\"why\":\"bank confirmed the transfer\"}"),
        200);
    assert_int_equal(
        pc_t_sql_int(&g_stack, "SELECT needs_ops::int FROM payouts WHERE payout_no = '%s'", no), 0);
    assert_int_equal(pc_t_needs_ops_listed(&g_stack, "payout", no), 0);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* A channel that says it paid a payout with another sum or in another
 * currency than it was asked: applied (the money left), flagged for ops.
 * Before, the sum was not looked at. */
static void test_payout_paid_with_another_sum_is_flagged(void **state)
{
    (void)state;
    pc_t_merchant_t m = funded_merchant(60000);
    set_faults("{\"channel_id\":\"sim_va\",\"reset\":true,\"payout_delay_ms\":-1}");
    const long said[][2] = {{9000, 0}, {10000, 1}};
    for (int i = 0; i < 2; i++) {
        char out[32], idem[32], no[40];
        snprintf(out, sizeof out, "OUT-SUM-%d", i);
        snprintf(idem, sizeof idem, "po-sum-%d", i);
        pc_t_resp_t r = payout(&m, out, 10000, "6222020000007777", idem);
        assert_int_equal(r.status, 200);
        snprintf(no, sizeof no, "%s", pc_t_jstr(&r, "payout_no"));
        pc_t_resp_free(&r);
        expect_status(&m, no, "PROCESSING");
        char *ch = pc_t_sql(&g_stack, "SELECT channel_id FROM payouts WHERE payout_no = '%s'", no);
        assert_int_equal(pc_t_channel_callback_in(&g_stack, ch, "payout", no, "SUCCESS", said[i][0],
                                                  said[i][1] ? "USD" : "CNY"),
                         200);
        free(ch);
        assert_true(
            pc_t_sql_wait(&g_stack, "SUCCESS/true", 10,
                          "SELECT status || '/' || needs_ops FROM payouts WHERE payout_no = "
                          "'%s'",
                          no));
        assert_true(pc_t_needs_ops_listed(&g_stack, "payout", no) > 0);
        assert_int_equal(
            pc_t_needs_ops_resolve(&g_stack, "payout", no,
                                   "{\"why\":\"settled the difference with the bank\"}"),
            200);
    }
    set_faults("{\"channel_id\":\"sim_va\",\"reset\":true}");
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* A return after a success flagged for another sum keeps the flag (the
 * difference is still for ops to settle), and a return of another sum than
 * the payout's is flagged as a payment of one is; both give the merchant
 * the payout's amount back. Before, a return cleared every flag and its sum
 * was not looked at. */
static void test_a_return_keeps_the_flag_and_checks_its_sum(void **state)
{
    (void)state;
    pc_t_merchant_t m = funded_merchant(60000);
    long long before = available(&m);
    set_faults("{\"channel_id\":\"sim_va\",\"reset\":true,\"payout_delay_ms\":-1}");
    /* paid: what the channel says it paid; back: what it says came back. */
    const long sums[][2] = {{9000, 10000}, {10000, 4000}, {10000, 10000}};
    const char *want[] = {"RETURNED/true", "RETURNED/true", "RETURNED/false"};
    for (int i = 0; i < 3; i++) {
        char out[32], idem[32], no[40];
        snprintf(out, sizeof out, "OUT-RSUM-%d", i);
        snprintf(idem, sizeof idem, "po-rsum-%d", i);
        pc_t_resp_t r = payout(&m, out, 10000, "6222020000007777", idem);
        assert_int_equal(r.status, 200);
        snprintf(no, sizeof no, "%s", pc_t_jstr(&r, "payout_no"));
        pc_t_resp_free(&r);
        expect_status(&m, no, "PROCESSING");
        char *ch = pc_t_sql(&g_stack, "SELECT channel_id FROM payouts WHERE payout_no = '%s'", no);
        assert_int_equal(
            pc_t_channel_callback_in(&g_stack, ch, "payout", no, "SUCCESS", sums[i][0], "CNY"),
            200);
        assert_true(pc_t_sql_wait(&g_stack, "SUCCESS", 10,
                                  "SELECT status FROM payouts WHERE payout_no = '%s'", no));
        assert_int_equal(
            pc_t_channel_callback_in(&g_stack, ch, "payout", no, "RETURNED", sums[i][1], "CNY"),
            200);
        free(ch);
        assert_true(
            pc_t_sql_wait(&g_stack, want[i], 10,
                          "SELECT status || '/' || needs_ops FROM payouts WHERE payout_no = "
                          "'%s'",
                          no));
        assert_int_equal(pc_t_needs_ops_listed(&g_stack, "payout", no) > 0, i < 2);
    }
    /* Every payout's amount came back, whatever the channel said. */
    assert_int_equal(available(&m), before);
    set_faults("{\"channel_id\":\"sim_va\",\"reset\":true}");
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* Payout no, sent an hour ago, queried by a channel (sim_wallet) that
 * never saw it: "no record" leaves it PROCESSING and flagged for ops, then
 * it is given back its own channel ch. */
static void forgotten_by_its_channel(const char *no, const char *ch)
{
    free(pc_t_sql(&g_stack,
                  "UPDATE payouts SET channel_id = 'sim_wallet', sent_at = now() - interval '1 "
                  "hour', next_query_at = now() WHERE payout_no = '%s' RETURNING 1",
                  no));
    assert_true(pc_t_sql_wait(&g_stack, "PROCESSING/true", 15,
                              "SELECT status || '/' || needs_ops FROM payouts WHERE payout_no = "
                              "'%s'",
                              no));
    free(pc_t_sql(&g_stack,
                  "UPDATE payouts SET channel_id = '%s' WHERE payout_no = '%s' RETURNING 1", ch,
                  no));
}

/* A payout of 10000 the channel took (PROCESSING: acknowledged, with its
 * reference), then pointed at a channel with no record of it: it stays
 * open, flagged for ops, the merchant's money not given back; back with its
 * channel, its success closes it. without_reference: the answer's
 * reference is taken away first, as if it had carried none. */
static void payout_taken_then_forgotten(const char *out, const char *key, int without_reference)
{
    pc_t_merchant_t m = funded_merchant(30000);
    set_faults("{\"channel_id\":\"sim_va\",\"reset\":true,\"payout_delay_ms\":-1}");
    char no[40];
    payout_ok(&m, out, 10000, "6222020000008888", key, no);
    expect_status(&m, no, "PROCESSING");
    char *ch = pc_t_sql(&g_stack, "SELECT channel_id FROM payouts WHERE payout_no = '%s'", no);
    assert_true(pc_t_sql_wait(&g_stack, "1", 5,
                              "SELECT count(*) FROM payouts WHERE payout_no = '%s' AND "
                              "channel_txn_id IS NOT NULL AND acknowledged_at IS NOT NULL",
                              no));
    if (without_reference)
        free(pc_t_sql(&g_stack,
                      "UPDATE payouts SET channel_txn_id = NULL WHERE payout_no = '%s' RETURNING 1",
                      no));
    long long before = available(&m);
    forgotten_by_its_channel(no, ch);
    assert_int_equal(available(&m), before);
    assert_int_equal(pc_t_channel_callback(&g_stack, ch, "payout", no, "SUCCESS", 10000), 200);
    free(ch);
    assert_true(pc_t_sql_wait(&g_stack, "SUCCESS/false", 10,
                              "SELECT status || '/' || needs_ops FROM payouts WHERE payout_no = "
                              "'%s'",
                              no));
    set_faults("{\"channel_id\":\"sim_va\",\"reset\":true}");
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* A channel that took a payout (it answered with its reference) and later
 * has no record of it: the payout is not failed on that "no record" (the
 * merchant's money given back while the bank may have paid it); it stays
 * open, flagged for ops. Here the payout is pointed at another channel,
 * which never saw it. */
static void test_no_record_of_a_payout_the_channel_took_is_for_ops(void **state)
{
    (void)state;
    payout_taken_then_forgotten("OUT-GONE-1", "po-gone-1", 0);
}

/* The same when the channel said it holds the payout (PROCESSING) without
 * giving its reference: the acknowledgement alone is kept. Before, only a
 * reference counted: the "no record" failed the payout (NOT_SENT) and gave
 * the merchant the money back while the bank could still pay it. */
static void test_no_record_of_a_payout_taken_without_a_reference_is_for_ops(void **state)
{
    (void)state;
    payout_taken_then_forgotten("OUT-NOREF-1", "po-noref-1", 1);
}

/* A payout whose send got no answer (timed out: no reference kept) and
 * whose status query then hears the channel hold it, with its reference:
 * that reference is kept, so a later "no record" goes to ops rather than
 * failing the payout and giving the merchant the money while the bank may
 * still pay it. The query's answer was dropped, and that "no record"
 * failed it (NOT_SENT). */
static void test_a_query_that_hears_the_payout_taken_keeps_its_reference(void **state)
{
    (void)state;
    pc_t_merchant_t m = funded_merchant(30000);
    char no[40];
    held_payout(&m, "OUT-TAKEN-1", "6222020000008888", no);
    assert_true(pc_t_sql_wait(&g_stack, "1", 5,
                              "SELECT count(*) FROM payouts WHERE payout_no = '%s' AND "
                              "channel_txn_id IS NOT NULL",
                              no));
    /* As if the send had timed out: no reference; the next query now. */
    free(pc_t_sql(&g_stack,
                  "UPDATE payouts SET channel_txn_id = NULL, next_query_at = now() WHERE "
                  "payout_no = '%s' RETURNING 1",
                  no));
    assert_true(pc_t_sql_wait(&g_stack, "1", 10,
                              "SELECT count(*) FROM payouts WHERE payout_no = '%s' AND "
                              "channel_txn_id IS NOT NULL",
                              no));
    /* A callback saying PROCESSING keeps it too, before it is answered. */
    char *ch = pc_t_sql(&g_stack, "SELECT channel_id FROM payouts WHERE payout_no = '%s'", no);
    char *real =
        pc_t_sql(&g_stack, "SELECT channel_txn_id FROM payouts WHERE payout_no = '%s'", no);
    free(pc_t_sql(&g_stack,
                  "UPDATE payouts SET channel_txn_id = NULL WHERE payout_no = '%s' RETURNING 1",
                  no));
    assert_int_equal(pc_t_channel_callback(&g_stack, ch, "payout", no, "PROCESSING", 10000), 200);
    char *txn = pc_t_sql(
        &g_stack, "SELECT coalesce(channel_txn_id, '-') FROM payouts WHERE payout_no = '%s'", no);
    char want[64];
    snprintf(want, sizeof want, "t_%s", no);
    assert_string_equal(txn, want);
    free(txn);
    free(pc_t_sql(&g_stack,
                  "UPDATE payouts SET channel_txn_id = '%s' WHERE payout_no = '%s' RETURNING 1",
                  real, no));
    free(real);
    /* Later the channel has no record of it (here: pointed at another). */
    forgotten_by_its_channel(no, ch);
    complete_held(no);
    free(ch);
    assert_true(pc_t_sql_wait(&g_stack, "SUCCESS", 15,
                              "SELECT status FROM payouts WHERE payout_no = '%s'", no));
    set_faults("{\"channel_id\":\"sim_va\",\"reset\":true}");
    assert_true(pc_t_ledger_ok(&g_stack));
}

static void test_risk_review_holds_until_ops_decide(void **state)
{
    (void)state;
    pc_t_merchant_t m = funded_merchant(2000000);
    long long avail0 = available(&m);
    /* 6,000.00 is a large amount for risk.lua: REVIEW (payouts cannot be
     * challenged). */
    pc_t_resp_t r = payout(&m, "OUT-RISK-1", 600000, "6222020000009999", "po-risk-1");
    assert_int_equal(r.status, 200);
    assert_string_equal(pc_t_jstr(&r, "status"), "ACCEPTED");
    assert_string_equal(pc_t_jstr(&r, "hold_reason"), "RISK_REVIEW");
    char no1[40];
    snprintf(no1, sizeof no1, "%s", pc_t_jstr(&r, "payout_no"));
    pc_t_resp_free(&r);
    /* Reserved, not sent; ops are told (before: nothing did). */
    assert_int_equal(available(&m), avail0 - 600000);
    assert_true(pc_t_alert_wait(&g_stack, "PAYOUTS_HELD", "payouts", 1, 15));
    expect_status(&m, no1, "ACCEPTED");
    char path[128];
    snprintf(path, sizeof path, "/admin/payouts/%s/release", no1);
    r = pc_t_admin(&g_stack, "POST", path, NULL);
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    expect_status(&m, no1, "SUCCESS");
    r = pc_t_admin(&g_stack, "POST", path, NULL);
    assert_int_equal(r.status, 409);
    pc_t_resp_free(&r);

    char no2[40];
    payout_ok(&m, "OUT-RISK-2", 700000, "6222020000009999", "po-risk-2", no2);
    snprintf(path, sizeof path, "/admin/payouts/%s/reject", no2);
    r = pc_t_admin(&g_stack, "POST", path, "{\"reason\":\"payee unknown\"}");
    assert_int_equal(r.status, 200);
    assert_string_equal(pc_t_jstr(&r, "status"), "FAILED");
    pc_t_resp_free(&r);
    assert_int_equal(available(&m), avail0 - 600000);
    assert_int_equal(outbox("payout.failed", no2), 1);
    assert_int_equal(
        pc_t_sql_int(&g_stack,
                     "SELECT count(*) FROM payout_actions WHERE payout_no IN ('%s', '%s')", no1,
                     no2),
        2);
    if (pc_t_sql_int(&g_stack, "SELECT count(*) FROM payouts WHERE hold_reason IS NOT NULL AND "
                               "status = 'ACCEPTED'") == 0)
        assert_true(pc_t_alert_wait(&g_stack, "PAYOUTS_HELD", "payouts", 0, 15));
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* A Luhn-valid 16-digit card number that starts with bin (6 digits). */
static const char *pan_with_bin(const char *bin)
{
    static char pan[17];
    static int n = 0;
    pc_t_card_number(pan, bin, (++n * 7919 + (int)getpid() % 1000 + 700000) % 1000000000);
    return pan;
}

static const char *fresh_pan(void)
{
    return pan_with_bin("411111");
}

static pc_t_resp_t pay(const pc_t_merchant_t *m, const char *tn, const char *buyer,
                       const char *method, const char *extra)
{
    char body[1024], key[64];
    g_seq++;
    snprintf(body, sizeof body,
             "{\"trade_no\":\"%s\",\"buyer_id\":\"%s\",\"method_id\":\"%s\",\"client\":{\"ip\":"
             "\"10.4.0.%d\",\"device_id\":\"podev-%d\",\"platform\":\"APP\"}%s%s}",
             tn, buyer, method, g_seq % 200, g_seq, extra ? "," : "", extra ? extra : "");
    snprintf(key, sizeof key, "pay-%d", g_seq);
    return pc_t_call(&g_stack, m, "POST", "/v1/cashier/pay", body, key);
}

/* Pays tn by a card never seen before. */
static pc_t_resp_t pay_by_new_card(const pc_t_merchant_t *m, const char *tn, const char *buyer)
{
    char card[160];
    snprintf(card, sizeof card,
             "\"card\":{\"pan\":\"%s\",\"exp_month\":12,\"exp_year\":2030,\"cvv\":\"123\"}",
             fresh_pan());
    return pay(m, tn, buyer, "CARD", card);
}

static void test_recharge_then_pay_by_balance(void **state)
{
    (void)state;
    pc_t_merchant_t m = pc_t_create_merchant(&g_stack, NULL);
    char buyer[32], b[96], tn[40];
    snprintf(buyer, sizeof buyer, "pob_%d", (int)getpid());
    snprintf(b, sizeof b, "{\"buyer_id\":\"%s\"}", buyer);
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", "/admin/buyers", b);
    assert_int_equal(r.status, 201);
    pc_t_resp_free(&r);
    char wallet[128], pending[160];
    snprintf(wallet, sizeof wallet, "buyer:%s:wallet:CNY", buyer);
    snprintf(pending, sizeof pending, "merchant:%s:pending:CNY", m.id);
    /* Top up 100.00 by card: the wallet, not the merchant, gets it. */
    new_trade(&m, "RECHARGE", 10000, buyer, tn);
    r = pay_by_new_card(&m, tn, buyer);
    assert_int_equal(r.status, 200);
    assert_string_equal(pc_t_jstr(&r, "status"), "SUCCESS");
    assert_string_equal(pc_t_jstr(&r, "trade_status"), "TRADE_SUCCESS");
    pc_t_resp_free(&r);
    assert_int_equal(bal(wallet), 10000);
    assert_int_equal(bal(pending), 0);
    /* Then pay 25.00 from the wallet. */
    new_trade(&m, "INSTANT", 2500, buyer, tn);
    r = pay(&m, tn, buyer, "BALANCE", NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(pc_t_jstr(&r, "status"), "SUCCESS");
    pc_t_resp_free(&r);
    assert_int_equal(bal(wallet), 7500);
    assert_int_equal(bal(pending), 2500);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT count(*) FROM payments WHERE trade_no = '%s' AND "
                                  "status = 'SUCCESS' AND balance_amount = 2500 AND "
                                  "external_amount = 0",
                                  tn),
                     1);
    /* More than the wallet holds: refused, nothing moves. */
    new_trade(&m, "INSTANT", 8000, buyer, tn);
    r = pay(&m, tn, buyer, "BALANCE", NULL);
    assert_int_equal(r.status, 422);
    assert_string_equal(pc_t_errcode(&r), "INSUFFICIENT_BALANCE");
    pc_t_resp_free(&r);
    assert_int_equal(bal(wallet), 7500);
    assert_true(pc_t_ledger_ok(&g_stack));
}

static void test_payout_before_verification_is_refused(void **state)
{
    (void)state;
    pc_t_merchant_t m = funded_unverified_merchant(20000);
    long long avail0 = available(&m);
    pc_t_resp_t r = payout(&m, "OUT-UNV-1", 1000, "6222020000001212", "po-unv-1");
    assert_int_equal(r.status, 409);
    assert_string_equal(pc_t_errcode(&r), "INVALID_STATE");
    assert_non_null(strstr(r.body, "real-name verification required"));
    assert_string_equal(err_field(&r), "");
    pc_t_resp_free(&r);
    assert_int_equal(
        pc_t_sql_int(&g_stack, "SELECT count(*) FROM payouts WHERE merchant_id = '%s'", m.id), 0);
    assert_int_equal(available(&m), avail0);
    /* A document number whose last four bytes are not letters A-Z or digits
     * (its tail in another script) is the caller's mistake, not a 500 from
     * the database's check. */
    char path[160];
    snprintf(path, sizeof path, "/admin/merchants/%s/verify", m.id);
    r = pc_t_admin(&g_stack, "POST", path,
                   "{\"legal_name\":\"Shop Ltd\",\"id_type\":\"PASSPORT\",\"id_number\":"
                   "\"1234\u62a4\u7167\"}");
    assert_int_equal(r.status, 400);
    assert_string_equal(err_field(&r), "id_number");
    pc_t_resp_free(&r);
    /* Once verified, the same payout goes through. */
    verify(&m, "Shop Ltd");
    char no[40];
    payout_ok(&m, "OUT-UNV-1", 1000, "6222020000001212", "po-unv-2", no);
    expect_status(&m, no, "SUCCESS");
    assert_true(pc_t_ledger_ok(&g_stack));
}

static void test_payout_payee_name_must_match_verified_name(void **state)
{
    (void)state;
    pc_t_merchant_t m = funded_unverified_merchant(30000);
    verify(&m, "Acme Trading Co., Ltd.");
    long long avail0 = available(&m);
    pc_t_resp_t r =
        payout_named(&m, "OUT-NAME-1", 1000, "6222020000002323", "Acme Holdings Ltd", "po-name-1");
    assert_int_equal(r.status, 400);
    assert_string_equal(pc_t_errcode(&r), "INVALID_REQUEST");
    assert_string_equal(err_field(&r), "payee.name");
    pc_t_resp_free(&r);
    /* No name at all does not match either. */
    r = pc_t_call(&g_stack, &m, "POST", "/v1/payouts",
                  "{\"out_payout_no\":\"OUT-NAME-2\",\"amount\":1000,\"currency\":\"CNY\","
                  "\"payee\":{\"type\":\"ACCOUNT\",\"account_no\":\"6222020000002323\"}}",
                  "po-name-2");
    assert_int_equal(r.status, 400);
    assert_string_equal(err_field(&r), "payee.name");
    pc_t_resp_free(&r);
    assert_int_equal(available(&m), avail0);
    /* Case, spacing and punctuation differences are the same name. */
    r = payout_named(&m, "OUT-NAME-3", 1000, "6222020000002323", "  ACME trading co ltd ",
                     "po-name-3");
    assert_int_equal(r.status, 200);
    char no[40];
    snprintf(no, sizeof no, "%s", pc_t_jstr(&r, "payout_no"));
    pc_t_resp_free(&r);
    expect_status(&m, no, "SUCCESS");
    assert_int_equal(available(&m), avail0 - 1000);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* Binds a card with that number and holder to a fresh buyer and returns
 * its channel token (static buffer). */
static const char *bound_card_token_of(const pc_t_merchant_t *m, const char *pan,
                                       const char *holder)
{
    static char token[128];
    char buyer[48], body[160], path[96], key[48];
    snprintf(buyer, sizeof buyer, "pocb_%d_%d", (int)getpid(), ++g_seq);
    snprintf(body, sizeof body, "{\"buyer_id\":\"%s\"}", buyer);
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", "/admin/buyers", body);
    assert_int_equal(r.status, 201);
    pc_t_resp_free(&r);
    snprintf(path, sizeof path, "/v1/buyers/%s/cards", buyer);
    snprintf(body, sizeof body,
             "{\"pan\":\"%s\",\"exp_month\":11,\"exp_year\":2031,\"holder_name\":\"%s\"}", pan,
             holder);
    snprintf(key, sizeof key, "bind-%d", g_seq);
    r = pc_t_call(&g_stack, m, "POST", path, body, key);
    assert_int_equal(r.status, 201);
    char card_id[64];
    snprintf(card_id, sizeof card_id, "%s", pc_t_jstr(&r, "card_id"));
    pc_t_resp_free(&r);
    char *t = pc_t_sql(&g_stack, "SELECT token FROM cards WHERE card_id = '%s'", card_id);
    assert_non_null(t);
    snprintf(token, sizeof token, "%s", t);
    free(t);
    return token;
}

/* The same, held by the merchant's verified name (funded_merchant's). */
static const char *bound_card_token(const pc_t_merchant_t *m, const char *pan)
{
    return bound_card_token_of(m, pan, "SHOP LTD");
}

/* Rule: a CARD payout goes only to a card bound through
 * POST /v1/buyers/{id}/cards whose BIN is in card_bins with type DEBIT. */
static void test_card_payout_needs_a_known_debit_bin(void **state)
{
    (void)state;
    pc_t_merchant_t m = funded_merchant(30000);
    long long avail0 = available(&m);
    /* 450000 is in no BIN table row. */
    char tok[128];
    snprintf(tok, sizeof tok, "%s", bound_card_token(&m, pan_with_bin("450000")));
    pc_t_resp_t r = card_payout(&m, "OUT-BIN-1", 1000, tok, "po-bin-1");
    assert_int_equal(r.status, 400);
    assert_string_equal(pc_t_errcode(&r), "INVALID_REQUEST");
    assert_string_equal(err_field(&r), "payee.card_token");
    pc_t_resp_free(&r);
    /* A token paycore never bound has no BIN either. */
    r = card_payout(&m, "OUT-BIN-2", 1000, "tok_from_elsewhere_1", "po-bin-2");
    assert_int_equal(r.status, 400);
    assert_string_equal(err_field(&r), "payee.card_token");
    pc_t_resp_free(&r);
    /* 411111 is a known CREDIT BIN: refused. */
    snprintf(tok, sizeof tok, "%s", bound_card_token(&m, pan_with_bin("411111")));
    r = card_payout(&m, "OUT-BIN-3", 1000, tok, "po-bin-3");
    assert_int_equal(r.status, 400);
    assert_string_equal(err_field(&r), "payee.card_token");
    assert_non_null(strstr(r.body, "debit"));
    pc_t_resp_free(&r);
    assert_int_equal(
        pc_t_sql_int(&g_stack, "SELECT count(*) FROM payouts WHERE merchant_id = '%s'", m.id), 0);
    assert_int_equal(available(&m), avail0);
    /* 411112 is a known DEBIT BIN: accepted, but only from the merchant
     * that bound the card (before: any merchant naming the token). */
    snprintf(tok, sizeof tok, "%s", bound_card_token(&m, pan_with_bin("411112")));
    pc_t_merchant_t other = funded_merchant(30000);
    r = card_payout(&other, "OUT-BIN-5", 1000, tok, "po-bin-5");
    assert_int_equal(r.status, 400);
    assert_string_equal(err_field(&r), "payee.card_token");
    pc_t_resp_free(&r);
    /* A debit card of someone else's (its holder is not the merchant's
     * verified name), or named another payee: refused. Before, any card the
     * merchant had bound took its balance. */
    char other_tok[128];
    snprintf(other_tok, sizeof other_tok, "%s",
             bound_card_token_of(&m, pan_with_bin("411112"), "Some Buyer"));
    r = card_payout(&m, "OUT-BIN-7", 1000, other_tok, "po-bin-7");
    assert_int_equal(r.status, 400);
    assert_string_equal(err_field(&r), "payee.card_token");
    assert_non_null(strstr(r.body, "legal name"));
    pc_t_resp_free(&r);
    char body[512];
    snprintf(body, sizeof body,
             "{\"out_payout_no\":\"OUT-BIN-8\",\"amount\":1000,\"currency\":\"CNY\",\"payee\":"
             "{\"type\":\"CARD\",\"card_token\":\"%s\",\"name\":\"Some Buyer\"}}",
             tok);
    r = pc_t_call(&g_stack, &m, "POST", "/v1/payouts", body, "po-bin-8");
    assert_int_equal(r.status, 400);
    assert_string_equal(err_field(&r), "payee.name");
    pc_t_resp_free(&r);
    r = card_payout(&m, "OUT-BIN-4", 1000, tok, "po-bin-4");
    assert_int_equal(r.status, 200);
    assert_string_equal(pc_t_jstr(&r, "status"), "ACCEPTED");
    char no[40];
    snprintf(no, sizeof no, "%s", pc_t_jstr(&r, "payout_no"));
    pc_t_resp_free(&r);
    /* Paid out by the channel that holds the card's token (it went to the
     * accounts' payout channel, which has no such token: FAILED
     * TOKEN_NOT_FOUND, every time). */
    expect_status(&m, no, "SUCCESS");
    char *ch = pc_t_sql(&g_stack, "SELECT channel_id FROM payouts WHERE payout_no = '%s'", no);
    char *card_ch = pc_t_sql(&g_stack, "SELECT channel_id FROM cards WHERE token = '%s'", tok);
    assert_string_equal(ch, card_ch);
    free(ch);
    free(card_ch);
    assert_int_equal(available(&m), avail0 - 1000);
    /* That channel switched off: refused, nothing held. */
    pc_t_resp_t sw =
        pc_t_admin(&g_stack, "POST", "/admin/channels/sim_card/disable", "{\"reason\":\"test\"}");
    assert_int_equal(sw.status, 200);
    pc_t_resp_free(&sw);
    usleep(1500000); /* both nodes hear of it */
    r = card_payout(&m, "OUT-BIN-6", 1000, tok, "po-bin-6");
    sw = pc_t_admin(&g_stack, "POST", "/admin/channels/sim_card/enable", NULL);
    pc_t_resp_free(&sw);
    usleep(1500000);
    assert_int_equal(r.status, 400);
    assert_string_equal(err_field(&r), "payee.card_token");
    assert_non_null(strstr(r.body, "switched off"));
    pc_t_resp_free(&r);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* A payout held for review while a chargeback leaves the merchant owing
 * the platform is not released: the money kept for it is what the debt can
 * be recovered from. Rejecting it gives the money back as before. */
static void test_held_payout_is_not_released_while_the_merchant_owes(void **state)
{
    (void)state;
    pc_t_merchant_t m =
        pc_t_create_merchant(&g_stack, "\"settle_cycle_days\":0,\"fee_rate_bp\":60");
    verify(&m, "Shop Ltd");
    /* A card payment of 30.00, with a channel reference a chargeback can
     * name. */
    char buyer[32], b[96], tn[40];
    snprintf(buyer, sizeof buyer, "pow_%d", (int)getpid());
    snprintf(b, sizeof b, "{\"buyer_id\":\"%s\"}", buyer);
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", "/admin/buyers", b);
    assert_int_equal(r.status, 201);
    pc_t_resp_free(&r);
    new_trade(&m, "INSTANT", 3000, buyer, tn);
    r = pay_by_new_card(&m, tn, buyer);
    assert_int_equal(r.status, 200);
    assert_string_equal(pc_t_jstr(&r, "status"), "SUCCESS");
    pc_t_resp_free(&r);
    char *ch = pc_t_sql(&g_stack,
                        "SELECT channel_id || ' ' || channel_txn_id FROM payments WHERE trade_no "
                        "= '%s' AND status = 'SUCCESS'",
                        tn);
    char channel[40], txn[80];
    assert_int_equal(sscanf(ch, "%39s %79s", channel, txn), 2);
    free(ch);
    /* 20,000.00 more, then everything settled to available (T+0). */
    char ftn[40], pno[48];
    new_trade(&m, "INSTANT", 2000000, NULL, ftn);
    snprintf(pno, sizeof pno, "PFUNDW%d", (int)getpid());
    assert_int_equal(
        pc_t_mark_paid(&g_stack, ftn, pno, 2000000, "CNY", "channel:sim_card:clearing:CNY", NULL),
        0);
    char body[256];
    snprintf(body, sizeof body, "{\"date\":\"%s\"}", g_today);
    r = pc_t_admin(&g_stack, "POST", "/admin/settlements/run", body);
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    long long avail = available(&m);
    assert_int_equal(avail, 2003000 - 12000 - 18);
    /* All of it asked for: a large payout, held for review. */
    r = payout(&m, "OUT-OWE-1", (long)avail, "6222020000009999", "po-owe-1");
    assert_int_equal(r.status, 200);
    assert_string_equal(pc_t_jstr(&r, "hold_reason"), "RISK_REVIEW");
    char no[40];
    snprintf(no, sizeof no, "%s", pc_t_jstr(&r, "payout_no"));
    pc_t_resp_free(&r);
    assert_int_equal(available(&m), 0);
    /* The card payment is disputed: nothing pending or available, so all
     * 30.00 is owed. */
    snprintf(body, sizeof body,
             "{\"reference\":\"OWE-%d\",\"channel_id\":\"%s\",\"channel_txn_id\":\"%s\","
             "\"amount\":3000,\"currency\":\"CNY\",\"reason_code\":\"4853\"}",
             (int)getpid(), channel, txn);
    r = pc_t_admin(&g_stack, "POST", "/admin/chargebacks", body);
    assert_int_equal(r.status, 201);
    pc_t_resp_free(&r);
    char recv[160];
    snprintf(recv, sizeof recv, "merchant:%s:receivable:CNY", m.id);
    assert_int_equal(bal(recv), -3000);

    char path[128];
    snprintf(path, sizeof path, "/admin/payouts/%s/release", no);
    r = pc_t_admin(&g_stack, "POST", path, NULL);
    assert_int_equal(r.status, 409);
    assert_string_equal(pc_t_errcode(&r), "INVALID_STATE");
    assert_non_null(strstr(r.body, "owes 3000"));
    pc_t_resp_free(&r);
    usleep(500000);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT count(*) FROM payouts WHERE payout_no = '%s' AND status "
                                  "= 'ACCEPTED' AND hold_reason IS NOT NULL",
                                  no),
                     1);
    assert_int_equal(
        pc_t_sql_int(&g_stack, "SELECT count(*) FROM payout_actions WHERE payout_no = '%s'", no),
        0);
    /* Nor can the merchant pay out its US dollars meanwhile: the CNY debt
     * has no exchange rate against them, and would never be recovered.
     * Before, the USD payout was paid. */
    char utn[40];
    new_trade_in(&m, "INSTANT", 10000, "USD", NULL, utn);
    snprintf(pno, sizeof pno, "PFUNDU%d", (int)getpid());
    assert_int_equal(
        pc_t_mark_paid(&g_stack, utn, pno, 10000, "USD", "channel:sim_card:clearing:USD", NULL), 0);
    snprintf(body, sizeof body, "{\"date\":\"%s\"}", g_today);
    r = pc_t_admin(&g_stack, "POST", "/admin/settlements/run", body);
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    snprintf(recv, sizeof recv, "merchant:%s:available:USD", m.id);
    assert_int_equal(bal(recv), 10000 - 60);
    r = pc_t_call(&g_stack, &m, "POST", "/v1/payouts",
                  "{\"out_payout_no\":\"OUT-OWE-USD\",\"amount\":5000,\"currency\":\"USD\","
                  "\"payee\":{\"type\":\"ACCOUNT\",\"account_no\":\"6222020000009999\",\"name\":"
                  "\"Shop Ltd\",\"bank_code\":\"ICBC\"}}",
                  "po-owe-usd");
    assert_int_equal(r.status, 422);
    assert_string_equal(pc_t_errcode(&r), "INSUFFICIENT_BALANCE");
    assert_non_null(strstr(r.body, "owes 3000 CNY"));
    pc_t_resp_free(&r);
    assert_int_equal(bal(recv), 10000 - 60);
    assert_int_equal(
        pc_t_sql_int(&g_stack, "SELECT count(*) FROM payouts WHERE out_payout_no = 'OUT-OWE-USD'"),
        0);
    snprintf(path, sizeof path, "/admin/payouts/%s/reject", no);
    r = pc_t_admin(&g_stack, "POST", path, "{\"why\":\"merchant owes a chargeback\"}");
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    assert_int_equal(available(&m), avail);
    /* Kept with who did it ("why", as every other action; it was dropped). */
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT count(*) FROM payout_actions WHERE payout_no = '%s' AND "
                                  "action = 'REJECT' AND why = 'merchant owes a chargeback'",
                                  no),
                     1);
    assert_true(pc_t_ledger_ok(&g_stack));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_payout_success, refresh_today),
        cmocka_unit_test_setup(test_payout_failure_gives_the_money_back, refresh_today),
        cmocka_unit_test_setup(test_payout_returned_after_success, refresh_today),
        cmocka_unit_test_setup(test_returned_payout_whose_callback_was_lost_is_repaired_by_recon,
                               refresh_today),
        cmocka_unit_test_setup(test_payout_above_available_is_refused, refresh_today),
        cmocka_unit_test_setup(test_concurrent_payouts_never_overdraw, refresh_today),
        cmocka_unit_test_setup(test_late_answers_by_callback_and_by_status_query, refresh_today),
        cmocka_unit_test_setup(test_payout_left_open_after_every_query_raises_the_alert,
                               refresh_today),
        cmocka_unit_test_setup(test_ops_record_the_failure_of_a_payout_no_query_could_finish,
                               refresh_today),
        cmocka_unit_test_setup(test_ops_outcome_is_checked_again_under_the_payouts_lock,
                               refresh_today),
        cmocka_unit_test_setup(test_payout_answer_that_cannot_be_applied_last_is_retried,
                               refresh_today),
        cmocka_unit_test_setup(test_contradicted_payout_is_listed_alerted_and_resolved,
                               refresh_today),
        cmocka_unit_test_setup(test_payout_paid_with_another_sum_is_flagged, refresh_today),
        cmocka_unit_test_setup(test_a_return_keeps_the_flag_and_checks_its_sum, refresh_today),
        cmocka_unit_test_setup(test_no_record_of_a_payout_the_channel_took_is_for_ops,
                               refresh_today),
        cmocka_unit_test_setup(test_no_record_of_a_payout_taken_without_a_reference_is_for_ops,
                               refresh_today),
        cmocka_unit_test_setup(test_a_query_that_hears_the_payout_taken_keeps_its_reference,
                               refresh_today),
        cmocka_unit_test_setup(test_risk_review_holds_until_ops_decide, refresh_today),
        cmocka_unit_test_setup(test_held_payout_is_not_released_while_the_merchant_owes,
                               refresh_today),
        cmocka_unit_test_setup(test_recharge_then_pay_by_balance, refresh_today),
        cmocka_unit_test_setup(test_payout_before_verification_is_refused, refresh_today),
        cmocka_unit_test_setup(test_payout_payee_name_must_match_verified_name, refresh_today),
        cmocka_unit_test_setup(test_card_payout_needs_a_known_debit_bin, refresh_today),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
