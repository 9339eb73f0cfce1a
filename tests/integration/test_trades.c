/* Trades: the state machine, its ledger movements and outbox events, against
 * real paycore processes. Payment arrival is driven through the internal
 * operation the payment engine calls (pc_trade_mark_paid). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/error.h"
#include "harness.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pc_stack_t g_stack;
static pc_t_merchant_t g_m, g_partner;

static int setup(void **state)
{
    (void)state;
    pc_stack_init(&g_stack, "trades");
    pc_stack_env(&g_stack, "PAYCORE_TRADE_SWEEP_MS", "100");
    pc_stack_start_node(&g_stack, 0);
    pc_stack_start_node(&g_stack, 1);
    g_m = pc_t_create_merchant(&g_stack, NULL);
    g_partner = pc_t_create_merchant(&g_stack, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    pc_stack_stop(&g_stack);
    return 0;
}

/* Creates a trade and returns its trade_no in out (≥ 40 bytes). */
static void create(const char *otn, const char *product, long amount, const char *extra, char *out)
{
    char body[1024], key[80];
    snprintf(body, sizeof body,
             "{\"out_trade_no\":\"%s\",\"product\":\"%s\",\"amount\":%ld,\"currency\":\"CNY\","
             "\"subject\":\"Goods\",\"buyer_id\":\"u_1\"%s%s}",
             otn, product, amount, extra ? "," : "", extra ? extra : "");
    snprintf(key, sizeof key, "create-%s", otn);
    pc_t_resp_t r = pc_t_call(&g_stack, &g_m, "POST", "/v1/trades", body, key);
    assert_int_equal(r.status, 201);
    snprintf(out, 40, "%s", pc_t_jstr(&r, "trade_no"));
    pc_t_resp_free(&r);
}

static long long balance(const char *account)
{
    return pc_t_sql_int(&g_stack, "SELECT coalesce(ledger_balance('%s'), 0)", account);
}

static long long outbox_count(const char *type, const char *trade_no)
{
    return pc_t_sql_int(&g_stack,
                        "SELECT count(*) FROM outbox WHERE type = '%s' AND payload::jsonb -> "
                        "'data' ->> 'trade_no' = '%s'",
                        type, trade_no);
}

static void post(const char *path_fmt, const char *trade_no, const char *body, const char *key,
                 long want_status, const char *want_code, pc_t_resp_t *out)
{
    char path[128];
    snprintf(path, sizeof path, path_fmt, trade_no);
    pc_t_resp_t r = pc_t_call(&g_stack, &g_m, "POST", path, body, key);
    if (r.status != want_status)
        fprintf(stderr, "%s: %ld %s\n", path, r.status, r.body);
    assert_int_equal(r.status, want_status);
    if (want_code)
        assert_string_equal(pc_t_errcode(&r), want_code);
    if (out)
        *out = r;
    else
        pc_t_resp_free(&r);
}

static void test_instant_trade_paid_with_split_credits_merchant_and_partner(void **state)
{
    (void)state;
    char tn[40], extra[256], st[20], acct[128];
    snprintf(extra, sizeof extra, "\"splits\":[{\"account\":\"%s\",\"amount\":300}]", g_partner.id);
    create("INS1", "INSTANT", 1000, extra, tn);
    assert_int_equal(
        pc_t_mark_paid(&g_stack, tn, "P-INS1", 1000, "CNY", "channel:sim_card:clearing:CNY", st),
        0);
    assert_string_equal(st, "TRADE_SUCCESS");
    snprintf(acct, sizeof acct, "merchant:%s:pending:CNY", g_m.id);
    assert_int_equal(balance(acct), 700);
    snprintf(acct, sizeof acct, "merchant:%s:pending:CNY", g_partner.id);
    assert_int_equal(balance(acct), 300);
    assert_int_equal(outbox_count("trade.succeeded", tn), 1);
    /* The merchant sees it through the API. */
    char path[96];
    snprintf(path, sizeof path, "/v1/trades/%s", tn);
    pc_t_resp_t r = pc_t_call(&g_stack, &g_m, "GET", path, NULL, NULL);
    assert_string_equal(pc_t_jstr(&r, "status"), "TRADE_SUCCESS");
    assert_string_equal(pc_t_jstr(&r, "paid_amount"), "1000");
    pc_t_resp_free(&r);
    r = pc_t_call(&g_stack, &g_m, "GET", "/v1/balance", NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"pending\":700"));
    pc_t_resp_free(&r);
    /* Paying twice is refused by the state machine, and moves no money. */
    assert_int_equal(
        pc_t_mark_paid(&g_stack, tn, "P-INS1b", 1000, "CNY", "channel:sim_card:clearing:CNY", st),
        PC_ECONFLICT);
    snprintf(acct, sizeof acct, "merchant:%s:pending:CNY", g_m.id);
    assert_int_equal(balance(acct), 700);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* An INSTANT trade of 500 (out_trade_no out) paid by card: into tn. */
static void paid_instant(const char *out, char tn[40])
{
    char st[20], pno[48];
    create(out, "INSTANT", 500, NULL, tn);
    snprintf(pno, sizeof pno, "P-%s", out);
    assert_int_equal(
        pc_t_mark_paid(&g_stack, tn, pno, 500, "CNY", "channel:sim_card:clearing:CNY", st), 0);
}

/* A subject is up to 256 characters, whatever their bytes: 256 Chinese
 * characters (768 bytes) are taken, 257 are not. Before, the limit was 256
 * bytes: 86 Chinese characters were refused. */
static void test_a_subject_is_counted_in_characters(void **state)
{
    (void)state;
    for (int n = 256; n <= 257; n++) {
        char subject[4 * 257 + 1] = "", body[2048], key[40];
        for (int i = 0; i < n; i++)
            strcat(subject, "\xE8\xB1\x86"); /* 豆 */
        snprintf(body, sizeof body,
                 "{\"out_trade_no\":\"SUBJ%d\",\"product\":\"INSTANT\",\"amount\":100,"
                 "\"currency\":\"CNY\",\"subject\":\"%s\"}",
                 n, subject);
        snprintf(key, sizeof key, "subject-%d", n);
        pc_t_resp_t r = pc_t_call(&g_stack, &g_m, "POST", "/v1/trades", body, key);
        if (r.status != (n == 256 ? 201 : 400))
            fail_msg("a subject of %d characters: %ld %s", n, r.status, r.body);
        if (n == 256)
            assert_int_equal(strlen(pc_t_jstr(&r, "subject")), 3 * 256);
        pc_t_resp_free(&r);
    }
}

/* A trade's metadata reads back as it was sent, in GET as in the creation's
 * answer: numbers of every kind, nested. A number as large as 1e19, which
 * the database prints in full (a JSON integer too large to read back), is
 * refused: before, it was taken, and every later answer and notification
 * showed "metadata": {}. */
static void test_metadata_reads_back_as_sent(void **state)
{
    (void)state;
    const char *meta = "{\"a\":[1,-2.5,{\"b\":null,\"c\":true}],\"d\":\"x\","
                       "\"e\":9223372036854775807,\"big\":9.1e18}";
    char body[512], path[80];
    snprintf(body, sizeof body,
             "{\"out_trade_no\":\"META1\",\"product\":\"INSTANT\",\"amount\":100,\"currency\":"
             "\"CNY\",\"subject\":\"s\",\"metadata\":%s}",
             meta);
    pc_t_resp_t r = pc_t_call(&g_stack, &g_m, "POST", "/v1/trades", body, "meta-1");
    assert_int_equal(r.status, 201);
    snprintf(path, sizeof path, "/v1/trades/%s", pc_t_jstr(&r, "trade_no"));
    pc_t_resp_free(&r);
    r = pc_t_call(&g_stack, &g_m, "GET", path, NULL, NULL);
    assert_int_equal(r.status, 200);
    json_t *sent = json_loads(meta, 0, NULL), *got = pc_t_json(&r);
    json_t *m = json_object_get(got, "metadata");
    /* The largest number taken reads back as the same value (an integer
     * now, as the database prints it); the rest exactly. */
    if (json_number_value(json_object_get(m, "big")) != 9.1e18)
        fail_msg("metadata read back: %s", r.body);
    json_object_del(m, "big");
    json_object_del(sent, "big");
    if (!json_equal(m, sent))
        fail_msg("metadata read back: %s", r.body);
    json_decref(got);
    json_decref(sent);
    pc_t_resp_free(&r);
    snprintf(body, sizeof body,
             "{\"out_trade_no\":\"META2\",\"product\":\"INSTANT\",\"amount\":100,\"currency\":"
             "\"CNY\",\"subject\":\"s\",\"metadata\":{\"n\":[1e19]}}");
    r = pc_t_call(&g_stack, &g_m, "POST", "/v1/trades", body, "meta-2");
    assert_int_equal(r.status, 400);
    assert_string_equal(pc_t_errcode(&r), "INVALID_REQUEST");
    pc_t_resp_free(&r);
}

static void test_close_of_a_paid_trade_is_refused(void **state)
{
    (void)state;
    char tn[40];
    paid_instant("CLP1", tn);
    post("/v1/trades/%s/close", tn, NULL, "close-clp1", 409, "INVALID_STATE", NULL);
    assert_int_equal(outbox_count("trade.closed", tn), 0);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* An answer whose record fails to be written the first time (a connection
 * reset, most often; here a trigger that fails the first write) is written
 * again, and the key replays it. Before, the key stayed IN_PROGRESS until its
 * claim lapsed, and a retry after that ran the request again. */
static void test_an_answer_whose_record_failed_once_is_written_again(void **state)
{
    (void)state;
    char tn[40];
    paid_instant("CLP2", tn);
    free(pc_t_sql(&g_stack,
                  "CREATE SEQUENCE idem_fail_seq; CREATE FUNCTION idem_fail_once() RETURNS trigger "
                  "LANGUAGE plpgsql AS $$ BEGIN IF NEW.idem_key = 'close-fail-once' AND "
                  "NEW.status = 'DONE' AND nextval('idem_fail_seq') = 1 THEN RAISE EXCEPTION "
                  "'the first write fails'; END IF; RETURN NEW; END $$; CREATE TRIGGER "
                  "idem_fail_once BEFORE UPDATE ON idempotency_keys FOR EACH ROW EXECUTE "
                  "FUNCTION idem_fail_once()"));
    post("/v1/trades/%s/close", tn, NULL, "close-fail-once", 409, "INVALID_STATE", NULL);
    char *rec = pc_t_sql(&g_stack,
                         "SELECT status || ' ' || coalesce(response_status::text, '-') || ' ' || "
                         "(SELECT last_value FROM idem_fail_seq) FROM idempotency_keys WHERE "
                         "merchant_id = '%s' AND idem_key = 'close-fail-once'",
                         g_m.id);
    free(pc_t_sql(&g_stack, "DROP TRIGGER idem_fail_once ON idempotency_keys; DROP FUNCTION "
                            "idem_fail_once(); DROP SEQUENCE idem_fail_seq"));
    assert_string_equal(rec, "DONE 409 2"); /* written at the second try */
    free(rec);
    post("/v1/trades/%s/close", tn, NULL, "close-fail-once", 409, "INVALID_STATE", NULL);
}

static void test_close_of_an_open_trade_then_payment_is_refused(void **state)
{
    (void)state;
    char tn[40], st[20];
    create("CLO1", "INSTANT", 800, NULL, tn);
    pc_t_resp_t r;
    post("/v1/trades/%s/close", tn, NULL, "close-clo1", 200, NULL, &r);
    assert_string_equal(pc_t_jstr(&r, "status"), "TRADE_CLOSED");
    pc_t_resp_free(&r);
    assert_int_equal(outbox_count("trade.closed", tn), 1);
    /* A replay of the close answers the same; a new close is refused. */
    post("/v1/trades/%s/close", tn, NULL, "close-clo1", 200, NULL, NULL);
    post("/v1/trades/%s/close", tn, NULL, "close-clo1-again", 409, "INVALID_STATE", NULL);
    /* A payment landing on the closed trade is not applied. */
    assert_int_equal(
        pc_t_mark_paid(&g_stack, tn, "P-CLO1", 800, "CNY", "channel:sim_card:clearing:CNY", st),
        PC_ECONFLICT);
    assert_int_equal(outbox_count("trade.closed", tn), 1);
    post("/v1/trades/%s/close", "T-nothing", NULL, "close-none", 404, "NOT_FOUND", NULL);
    assert_true(pc_t_ledger_ok(&g_stack));
}

static void test_guarantee_settles_partially_then_fully_with_splits(void **state)
{
    (void)state;
    char tn[40], st[20], acct[128], body[256];
    create("GUA1", "GUARANTEE", 1000, NULL, tn);
    assert_int_equal(
        pc_t_mark_paid(&g_stack, tn, "P-GUA1", 1000, "CNY", "channel:sim_card:clearing:CNY", st),
        0);
    assert_string_equal(st, "PAY_SUCCESS");
    assert_int_equal(outbox_count("trade.paid", tn), 1);
    long long escrow0 = balance("platform:escrow:CNY");
    snprintf(acct, sizeof acct, "merchant:%s:pending:CNY", g_m.id);
    long long m0 = balance(acct);
    snprintf(acct, sizeof acct, "merchant:%s:pending:CNY", g_partner.id);
    long long p0 = balance(acct);

    snprintf(body, sizeof body, "{\"amount\":400,\"splits\":[{\"account\":\"%s\",\"amount\":100}]}",
             g_partner.id);
    pc_t_resp_t r;
    post("/v1/trades/%s/settle", tn, body, "settle-1", 200, NULL, &r);
    assert_string_equal(pc_t_jstr(&r, "status"), "SUCCESS");
    assert_string_equal(pc_t_jstr(&r, "amount"), "400");
    pc_t_resp_free(&r);
    assert_int_equal(balance("platform:escrow:CNY"), escrow0 - 400);
    snprintf(acct, sizeof acct, "merchant:%s:pending:CNY", g_m.id);
    assert_int_equal(balance(acct), m0 + 300);
    snprintf(acct, sizeof acct, "merchant:%s:pending:CNY", g_partner.id);
    assert_int_equal(balance(acct), p0 + 100);

    /* Too much, splits over the amount: refused. */
    post("/v1/trades/%s/settle", tn, "{\"amount\":601}", "settle-over", 422,
         "AMOUNT_EXCEEDS_REFUNDABLE", NULL);
    snprintf(body, sizeof body, "{\"amount\":10,\"splits\":[{\"account\":\"%s\",\"amount\":11}]}",
             g_partner.id);
    post("/v1/trades/%s/settle", tn, body, "settle-split-over", 422, "SPLIT_EXCEEDS_AMOUNT", NULL);

    /* The rest, by default. */
    post("/v1/trades/%s/settle", tn, "{}", "settle-2", 200, NULL, &r);
    assert_string_equal(pc_t_jstr(&r, "amount"), "600");
    pc_t_resp_free(&r);
    assert_int_equal(balance("platform:escrow:CNY"), escrow0 - 1000);
    snprintf(acct, sizeof acct, "merchant:%s:pending:CNY", g_m.id);
    assert_int_equal(balance(acct), m0 + 900);
    char path[96];
    snprintf(path, sizeof path, "/v1/trades/%s", tn);
    r = pc_t_call(&g_stack, &g_m, "GET", path, NULL, NULL);
    assert_string_equal(pc_t_jstr(&r, "status"), "TRADE_SUCCESS");
    assert_string_equal(pc_t_jstr(&r, "settled_amount"), "1000");
    pc_t_resp_free(&r);
    assert_int_equal(outbox_count("trade.succeeded", tn), 1);
    post("/v1/trades/%s/settle", tn, "{}", "settle-3", 409, "INVALID_STATE", NULL);
    assert_true(pc_t_ledger_ok(&g_stack));
}

typedef struct {
    const char *tn;
    long status;
} settle_call_t;

static void *settle_in_thread(void *arg)
{
    settle_call_t *c = arg;
    char path[128];
    snprintf(path, sizeof path, "/v1/trades/%s/settle", c->tn);
    pc_t_resp_t r = pc_t_call(&g_stack, &g_m, "POST", path, "{\"amount\":300}", "settle-lapsed");
    c->status = r.status;
    pc_t_resp_free(&r);
    return NULL;
}

static PGresult *must(PGconn *c, const char *sql, ExecStatusType want)
{
    PGresult *res = PQexec(c, sql);
    if (PQresultStatus(res) != want)
        fprintf(stderr, "%s: %s\n", sql, PQerrorMessage(c));
    assert_int_equal(PQresultStatus(res), want);
    return res;
}

/* A request whose idempotency claim another node took over (its node stalled
 * past the lease, and the merchant's retry reached another node) must not
 * commit its change as well: the retry does it. Here the settle waits for
 * the trade's row lock, held by the test, while the claim passes to another
 * token (what a takeover writes); then the lock is let go. Before, the
 * record's update matched no row, nothing noticed, and the settle committed:
 * with the retry's, the trade was settled twice (partner paid twice, escrow
 * released early). Now the transaction fails and the answer is 503 (retry
 * with the same key: the retry's answer is the one). */
static void test_settle_whose_claim_was_taken_over_does_not_commit(void **state)
{
    (void)state;
    char tn[40], st[20];
    create("GUA-LAPSE", "GUARANTEE", 1000, NULL, tn);
    assert_int_equal(pc_t_mark_paid(&g_stack, tn, "P-GUA-LAPSE", 1000, "CNY",
                                    "channel:sim_card:clearing:CNY", st),
                     0);
    PGconn *c = PQconnectdb(g_stack.db_url);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PQclear(must(c, "BEGIN", PGRES_COMMAND_OK));
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT 1 FROM trades WHERE trade_no = '%s' FOR UPDATE", tn);
    PQclear(must(c, sql, PGRES_TUPLES_OK));
    settle_call_t call = {tn, 0};
    pthread_t th;
    pthread_create(&th, NULL, settle_in_thread, &call);
    /* The settle's transaction waits for the row lock. */
    assert_true(pc_t_sql_wait(&g_stack, "1", 10,
                              "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                              "'Lock' AND query LIKE '%%FROM trades%%FOR UPDATE%%' AND pid <> %d",
                              PQbackendPID(c)));
    /* Another node's retry takes the claim over. */
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "WITH u AS (UPDATE idempotency_keys SET lock_token = "
                                  "'taken-over' WHERE merchant_id = '%s' AND idem_key = "
                                  "'settle-lapsed' AND status = 'IN_PROGRESS' RETURNING 1) "
                                  "SELECT count(*) FROM u",
                                  g_m.id),
                     1);
    PQclear(must(c, "COMMIT", PGRES_COMMAND_OK));
    PQfinish(c);
    pthread_join(th, NULL);
    assert_int_equal(call.status, 503);
    assert_int_equal(
        pc_t_sql_int(&g_stack, "SELECT settled_amount FROM trades WHERE trade_no = '%s'", tn), 0);
    assert_int_equal(
        pc_t_sql_int(&g_stack, "SELECT count(*) FROM trade_settles WHERE trade_no = '%s'", tn), 0);
    assert_true(pc_t_ledger_ok(&g_stack));
}

static void test_settle_of_an_instant_trade_is_refused(void **state)
{
    (void)state;
    char tn[40], st[20];
    create("SIN1", "INSTANT", 100, NULL, tn);
    assert_int_equal(
        pc_t_mark_paid(&g_stack, tn, "P-SIN1", 100, "CNY", "channel:sim_card:clearing:CNY", st), 0);
    post("/v1/trades/%s/settle", tn, "{}", "settle-sin1", 409, "INVALID_STATE", NULL);
}

static void test_recharge_credits_the_buyer_wallet(void **state)
{
    (void)state;
    char tn[40], st[20];
    long long w0 = balance("buyer:u_1:wallet:CNY");
    create("RCH1", "RECHARGE", 5000, NULL, tn);
    assert_int_equal(
        pc_t_mark_paid(&g_stack, tn, "P-RCH1", 5000, "CNY", "channel:sim_card:clearing:CNY", st),
        0);
    assert_string_equal(st, "TRADE_SUCCESS");
    assert_int_equal(balance("buyer:u_1:wallet:CNY"), w0 + 5000);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* Times are shown truncated to the second, never rounded: a payment at
 * 23:59:59.6 is on its own day, as settlement and reconciliation count it
 * (it was shown at 00:00:00 of the next day). */
static void test_times_are_truncated_to_the_second(void **state)
{
    (void)state;
    char tn[40], st[20];
    create("TRUNC1", "INSTANT", 100, NULL, tn);
    assert_int_equal(
        pc_t_mark_paid(&g_stack, tn, "P-TRUNC1", 100, "CNY", "channel:sim_card:clearing:CNY", st),
        0);
    free(pc_t_sql(&g_stack,
                  "UPDATE trades SET paid_at = '2026-01-01 23:59:59.6+00' WHERE trade_no = '%s' "
                  "RETURNING 1",
                  tn));
    char path[96];
    snprintf(path, sizeof path, "/v1/trades/%s", tn);
    pc_t_resp_t r = pc_t_call(&g_stack, &g_m, "GET", path, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(pc_t_jstr(&r, "paid_at"), "2026-01-01T23:59:59Z");
    pc_t_resp_free(&r);
}

static void test_expired_trade_is_closed_by_the_sweep(void **state)
{
    (void)state;
    char tn[40];
    create("EXP1", "INSTANT", 100, "\"expire_seconds\":60", tn);
    /* Move the deadline into the past instead of waiting a minute. */
    free(pc_t_sql(&g_stack,
                  "UPDATE trades SET expires_at = now() - interval '1 second' WHERE "
                  "trade_no = '%s'",
                  tn));
    char *status = NULL;
    for (int i = 0; i < 50; i++) {
        free(status);
        status = pc_t_sql(&g_stack, "SELECT status FROM trades WHERE trade_no = '%s'", tn);
        if (!strcmp(status, "TRADE_CLOSED"))
            break;
        usleep(100000);
    }
    assert_string_equal(status, "TRADE_CLOSED");
    free(status);
    char *reason = pc_t_sql(&g_stack, "SELECT close_reason FROM trades WHERE trade_no = '%s'", tn);
    assert_string_equal(reason, "EXPIRED");
    free(reason);
    /* Two nodes sweep, one event. */
    usleep(300000);
    assert_int_equal(outbox_count("trade.closed", tn), 1);
    assert_true(pc_t_ledger_ok(&g_stack));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_instant_trade_paid_with_split_credits_merchant_and_partner),
        cmocka_unit_test(test_a_subject_is_counted_in_characters),
        cmocka_unit_test(test_metadata_reads_back_as_sent),
        cmocka_unit_test(test_close_of_a_paid_trade_is_refused),
        cmocka_unit_test(test_an_answer_whose_record_failed_once_is_written_again),
        cmocka_unit_test(test_close_of_an_open_trade_then_payment_is_refused),
        cmocka_unit_test(test_guarantee_settles_partially_then_fully_with_splits),
        cmocka_unit_test(test_settle_of_an_instant_trade_is_refused),
        cmocka_unit_test(test_settle_whose_claim_was_taken_over_does_not_commit),
        cmocka_unit_test(test_recharge_credits_the_buyer_wallet),
        cmocka_unit_test(test_times_are_truncated_to_the_second),
        cmocka_unit_test(test_expired_trade_is_closed_by_the_sweep),
    };
    return cmocka_run_group_tests_name("trades", tests, setup, teardown);
}
