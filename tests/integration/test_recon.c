/* Reconciliation against real processes (two paycore nodes, PostgreSQL,
 * Redis, paysim): every discrepancy paysim fakes in a statement is found as
 * its kind and nothing else is; a lost callback is repaired from the
 * statement, once; running a day again changes nothing; an uploaded
 * statement exercises every kind of record and line; resolving with an
 * adjustment posts through suspense and the ledger stays consistent; the
 * daily job runs each channel's yesterday exactly once across nodes; payctl
 * drives it all. Each test uses its own channel, so the days do not mix. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "harness.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static pc_stack_t g_stack;
static pc_t_merchant_t g_m;
static char g_dir[512];
static char g_today[11];
static int g_seq;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void sim(const char *body)
{
    pc_t_resp_t r = pc_t_sim(&g_stack, "POST", "/sim/faults", body);
    if (r.status != 200)
        fail_msg("/sim/faults %s: %ld %s", body, r.status, r.body);
    pc_t_resp_free(&r);
}

/* paysim's business date, read again before each test: a run that crosses
 * midnight must not reconcile "today" as the day before. */
static int refresh_today(void **state)
{
    (void)state;
    pc_t_resp_t r = pc_t_sim(&g_stack, "GET", "/sim/clock", NULL);
    snprintf(g_today, sizeof g_today, "%s", pc_t_jstr(&r, "business_date"));
    pc_t_resp_free(&r);
    return strlen(g_today) == 10 ? 0 : -1;
}

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "%s/test-recon-%d", pc_t_binary_dir(), (int)getpid());
    /* Risk is not under test: a rule that accepts everything keeps velocity
     * from refusing the payments below. */
    pc_t_sh("rm -rf %s && mkdir -p %s/rules && cp -r %s/rules/. %s/rules/", g_dir, g_dir,
            pc_t_source_dir(), g_dir);
    pc_t_sh("printf 'return function(ctx) return {decision = \"ACCEPT\", score = 0, reasons = {}} "
            "end\n' > %s/rules/risk.lua",
            g_dir);
    pc_t_sh("printf '{\"examples\":[{\"name\":\"everything is accepted in this test\","
            "\"ctx\":{\"amount\":1,\"currency\":\"CNY\"},\"expect\":{\"decision\":"
            "\"ACCEPT\"}}]}\n' > %s/rules/tests/risk.json",
            g_dir);
    /* sim_va charges USD payments a fixed fee of their own (0.30, not the
     * file's 2.00): see test_fee_is_checked_with_the_currency_figures. */
    pc_t_sh("mkdir -p %s/channels && cp %s/channels/*.json %s/channels/ && sed -i "
            "'s/\"fee\": {\"rate_bp\": 10, \"fixed\": 200},/&\\n  \"by_currency\": {\"USD\": "
            "{\"fee\": {\"fixed\": 30}}},/' %s/channels/sim_va.json && grep -q by_currency "
            "%s/channels/sim_va.json",
            g_dir, pc_t_source_dir(), g_dir, g_dir, g_dir);
    pc_stack_init(&g_stack, "recon");
    char p[700];
    snprintf(p, sizeof p, "%s/rules", g_dir);
    pc_stack_env(&g_stack, "PAYCORE_RULES_DIR", p);
    snprintf(p, sizeof p, "%s/channels", g_dir);
    pc_stack_env(&g_stack, "PAYCORE_CHANNELS_DIR", p);
    /* The status-query job would repair the lost callback before recon
     * could: it waits an hour here. */
    pc_stack_env(&g_stack, "PAYCORE_REPAIR_FIRST_QUERY_MS", "3600000");
    /* The daily job runs yesterday at once, every node trying. */
    pc_stack_env(&g_stack, "PAYCORE_RECON_DAILY_AT", "00:00");
    pc_stack_env(&g_stack, "PAYCORE_RECON_POLL_MS", "300");
    pc_stack_env(&g_stack, "PAYCORE_ALERTS_CHECK_MS", "300");
    pc_stack_env(&g_stack, "PAYCORE_METRICS_ON_ADMIN", "true");
    /* The database by name, as production names it: the match's own
     * connection takes the addresses the pool resolved off the loop
     * (pc_db_resolved) instead of libpq's blocking lookup. */
    char *at = strstr(g_stack.db_url, "@127.0.0.1:");
    if (at) {
        snprintf(p, sizeof p, "%.*s@localhost:%s", (int)(at - g_stack.db_url), g_stack.db_url,
                 at + strlen("@127.0.0.1:"));
        pc_stack_env(&g_stack, "PAYCORE_DATABASE_URL", p);
    }
    pc_stack_start_paysim(&g_stack);
    pc_stack_start_node(&g_stack, 0);
    pc_stack_start_node(&g_stack, 1);
    g_m = pc_t_create_merchant(&g_stack, NULL);
    return refresh_today(state);
}

static int teardown(void **state)
{
    (void)state;
    pc_stack_stop(&g_stack);
    pc_t_sh("rm -rf %s", g_dir);
    return 0;
}

/* ---------- payments ---------- */

static const char *fresh_buyer(void)
{
    static char id[32];
    snprintf(id, sizeof id, "rcb_%d", ++g_seq);
    char b[96];
    snprintf(b, sizeof b, "{\"buyer_id\":\"%s\"}", id);
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", "/admin/buyers", b);
    assert_int_equal(r.status, 201);
    pc_t_resp_free(&r);
    return id;
}

static const char *fresh_card(void)
{
    static char json[160];
    char pan[17];
    pc_t_card_number(pan, "411113", ++g_seq * 7901 + (int)getpid() % 1000);
    snprintf(json, sizeof json,
             "\"card\":{\"pan\":\"%s\",\"exp_month\":12,\"exp_year\":2030,\"cvv\":\"123\"}", pan);
    return json;
}

/* A trade in currency paid by method; returns the payment as the pay call
 * answered. */
static json_t *pay_in(long amount, const char *currency, const char *method, const char *extra,
                      char *tn)
{
    char buyer[32];
    snprintf(buyer, sizeof buyer, "%s", fresh_buyer());
    char body[1024], key[64];
    g_seq++;
    snprintf(body, sizeof body,
             "{\"out_trade_no\":\"RC%d-%d\",\"product\":\"INSTANT\",\"amount\":%ld,\"currency\":"
             "\"%s\",\"subject\":\"s\",\"buyer_id\":\"%s\"}",
             g_seq, (int)getpid(), amount, currency, buyer);
    snprintf(key, sizeof key, "t-%d", g_seq);
    pc_t_resp_t r = pc_t_call(&g_stack, &g_m, "POST", "/v1/trades", body, key);
    assert_int_equal(r.status, 201);
    snprintf(tn, 40, "%s", pc_t_jstr(&r, "trade_no"));
    pc_t_resp_free(&r);
    snprintf(body, sizeof body,
             "{\"trade_no\":\"%s\",\"buyer_id\":\"%s\",\"method_id\":\"%s\",\"client\":{\"ip\":"
             "\"10.2.%d.%d\"}%s%s}",
             tn, buyer, method, g_seq / 200, g_seq % 200, extra ? "," : "", extra ? extra : "");
    snprintf(key, sizeof key, "p-%d", g_seq);
    r = pc_t_call(&g_stack, &g_m, "POST", "/v1/cashier/pay", body, key);
    assert_int_equal(r.status, 200);
    json_t *j = pc_t_json(&r);
    pc_t_resp_free(&r);
    assert_non_null(j);
    return j;
}

static json_t *pay(long amount, const char *method, const char *extra, char *tn)
{
    return pay_in(amount, "CNY", method, extra, tn);
}

static const char *jstr(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static int wait_sql(const char *want, double secs, const char *fmt, const char *arg)
{
    return pc_t_sql_wait(&g_stack, want, secs, fmt, arg);
}

/* Completes an asynchronous payment at paysim (the buyer paid). */
static void complete(json_t *payment, const char *ref_key)
{
    char body[256];
    snprintf(body, sizeof body, "{\"reference\":\"%s\"}",
             jstr(json_object_get(payment, "action"), ref_key));
    pc_t_resp_t c = pc_t_sim(&g_stack, "POST", "/sim/complete", body);
    assert_int_equal(c.status, 200);
    pc_t_resp_free(&c);
}

/* ---------- recon calls ---------- */

static json_t *run_day(const char *channel, const char *date, long want_status)
{
    char body[160];
    snprintf(body, sizeof body, "{\"channel_id\":\"%s\",\"date\":\"%s\"}", channel, date);
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", "/admin/recon/runs", body);
    if (r.status != want_status)
        fail_msg("recon run %s %s: %ld %s", channel, date, r.status, r.body);
    json_t *j = pc_t_json(&r);
    pc_t_resp_free(&r);
    return j;
}

/* Whether the admin API shows the run of channel's day provisional (the day
 * was not over for reconciling when it started): 1 or 0, -1 when the run is
 * missing or has no such field. */
static int shown_provisional(const char *channel, const char *date_sql)
{
    char *date = pc_t_sql(&g_stack, "SELECT (%s)::text", date_sql);
    char path[160];
    snprintf(path, sizeof path, "/admin/recon/runs?channel_id=%s&date=%s", channel, date);
    free(date);
    pc_t_resp_t r = pc_t_admin(&g_stack, "GET", path, NULL);
    assert_int_equal(r.status, 200);
    json_t *j = pc_t_json(&r);
    pc_t_resp_free(&r);
    json_t *v = json_object_get(json_array_get(json_object_get(j, "runs"), 0), "provisional");
    int shown = json_is_boolean(v) ? json_is_true(v) : -1;
    json_decref(j);
    return shown;
}

/* A run of a channel no node reconciles (no such channel file), of
 * yesterday, started by ops today at 00:00:30. */
static void insert_early_run_of_yesterday(void)
{
    free(pc_t_sql(&g_stack,
                  "INSERT INTO recon_runs (channel_id, business_date, status, source, "
                  "requested_by, started_at, finished_at) VALUES ('sim_gone', (now() AT TIME ZONE "
                  "'UTC')::date - 1, 'DONE', 'UPLOAD', 'ops', ((now() AT TIME ZONE 'UTC')::date "
                  "+ time '00:00:30') AT TIME ZONE 'UTC', ((now() AT TIME ZONE 'UTC')::date + "
                  "time '00:00:40') AT TIME ZONE 'UTC') ON CONFLICT (channel_id, business_date) "
                  "DO UPDATE SET started_at = EXCLUDED.started_at RETURNING run_id"));
}

static json_t *upload_on(const char *channel, const char *date, const char *csv, long want_status)
{
    char path[160];
    snprintf(path, sizeof path, "/admin/recon/runs/upload?channel_id=%s&date=%s", channel, date);
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", path, csv);
    if (r.status != want_status)
        fail_msg("upload %s: %ld %s", channel, r.status, r.body);
    json_t *j = pc_t_json(&r);
    pc_t_resp_free(&r);
    return j;
}

static json_t *upload(const char *channel, const char *csv, long want_status)
{
    return upload_on(channel, g_today, csv, want_status);
}

/* The differences of a run, as the admin API lists them. */
static json_t *diffs_of(long long run_id, const char *status)
{
    char path[160];
    snprintf(path, sizeof path, "/admin/recon/diffs?run_id=%lld%s%s&limit=1000", run_id,
             status ? "&status=" : "", status ? status : "");
    pc_t_resp_t r = pc_t_admin(&g_stack, "GET", path, NULL);
    assert_int_equal(r.status, 200);
    json_t *j = pc_t_json(&r);
    pc_t_resp_free(&r);
    json_t *list = json_incref(json_object_get(j, "diffs"));
    json_decref(j);
    assert_non_null(list);
    return list;
}

/* The difference of this kind (any kind: NULL) whose line (or local record, for side
 * "local") has field = value; NULL when none. Borrowed from list. */
static json_t *find_diff(json_t *list, const char *kind, const char *side, const char *field,
                         const char *value)
{
    size_t i;
    json_t *d;
    json_array_foreach(list, i, d)
    {
        if (kind && strcmp(jstr(d, "kind"), kind) != 0)
            continue;
        if (!strcmp(jstr(json_object_get(d, side), field), value))
            return d;
    }
    return NULL;
}

static long long run_id_of(json_t *run)
{
    return (long long)json_integer_value(json_object_get(run, "run_id"));
}

/* ---------- tests ---------- */

static void test_daily_job_runs_yesterday_once_per_channel_on_two_nodes(void **state)
{
    (void)state;
    /* Both nodes' jobs try every channel's yesterday. */
    time_t y = time(NULL) - 86400;
    struct tm tm;
    gmtime_r(&y, &tm);
    char yesterday[11];
    strftime(yesterday, sizeof yesterday, "%Y-%m-%d", &tm);
    /* The channels, as the admin API lists them. */
    pc_t_resp_t c = pc_t_admin(&g_stack, "GET", "/admin/channels", NULL);
    json_t *cj = pc_t_json(&c);
    pc_t_resp_free(&c);
    long long channels = 0;
    size_t i;
    json_t *ch;
    json_array_foreach(json_object_get(cj, "channels"), i, ch)
    {
        channels++;
    }
    json_decref(cj);
    assert_true(channels >= 2);
    double t0 = now_s();
    while (now_s() - t0 < 20 &&
           pc_t_sql_int(&g_stack,
                        "SELECT count(*) FROM recon_runs WHERE business_date = '%s' AND status = "
                        "'DONE'",
                        yesterday) < channels)
        usleep(200000);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT count(*) FROM recon_runs WHERE business_date = '%s' AND "
                                  "status = 'DONE' AND requested_by = 'job'",
                                  yesterday),
                     channels);
    /* A few more ticks of both nodes: still one run each, never repeated. */
    usleep(1500000);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT count(*) FROM recon_runs WHERE business_date = '%s'",
                                  yesterday),
                     channels);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT max(attempts) FROM recon_runs WHERE business_date = '%s'",
                                  yesterday),
                     1);
}

/* Payments by card until every discrepancy set on sim_card was used on one
 * of its lines (routing may send some to the other card channel). */
static void pay_until_faked(int want)
{
    for (int i = 0; i < 30; i++) {
        pc_t_resp_t f = pc_t_sim(&g_stack, "GET", "/sim/faked?channel_id=sim_card", NULL);
        json_t *j = pc_t_json(&f);
        pc_t_resp_free(&f);
        int n = (int)json_array_size(json_object_get(j, "faked"));
        json_decref(j);
        if (n >= want)
            return;
        char tn[40];
        json_t *p = pay(1000 + 37 * i, "CARD", fresh_card(), tn);
        assert_string_equal(jstr(p, "status"), "SUCCESS");
        json_decref(p);
    }
    fail_msg("paysim did not fake the statement discrepancies");
}

static void test_each_faked_statement_discrepancy_is_found_and_a_rerun_changes_nothing(void **state)
{
    (void)state;
    sim("{\"channel_id\":\"sim_card\",\"statement_discrepancy\":{\"extra\":1,\"missing\":1,"
        "\"amount_mismatch\":1,\"fee_mismatch\":1,\"status_mismatch\":1}}");
    pay_until_faked(5);
    /* A refund of a clean payment after that: a REFUND line that matches. */
    char tn[40];
    json_t *p = pay(2600, "CARD", fresh_card(), tn);
    int refundable = !strcmp(jstr(p, "channel_id"), "sim_card");
    json_decref(p);
    if (refundable) {
        char body[256];
        snprintf(body, sizeof body,
                 "{\"trade_no\":\"%s\",\"out_refund_no\":\"RF%d\",\"amount\":600,\"reason\":\"r\"}",
                 tn, ++g_seq);
        pc_t_resp_t r = pc_t_call(&g_stack, &g_m, "POST", "/v1/refunds", body, "refund-recon-1");
        assert_int_equal(r.status, 200);
        pc_t_resp_free(&r);
        assert_true(
            wait_sql("SUCCESS", 15, "SELECT status FROM refunds WHERE trade_no = '%s'", tn));
    }

    json_t *run = run_day("sim_card", g_today, 200);
    assert_string_equal(jstr(run, "status"), "DONE");
    /* Today is not over: the answer says the run is provisional. */
    assert_true(json_is_true(json_object_get(run, "provisional")));
    long long run_id = run_id_of(run);
    json_t *found = diffs_of(run_id, NULL);

    /* Every discrepancy paysim says it faked is found as its kind... */
    pc_t_resp_t f = pc_t_sim(&g_stack, "GET", "/sim/faked?channel_id=sim_card", NULL);
    json_t *fj = pc_t_json(&f);
    json_t *faked = json_object_get(fj, "faked");
    pc_t_resp_free(&f);
    assert_int_equal(json_array_size(faked), 5);
    size_t i;
    json_t *x;
    json_array_foreach(faked, i, x)
    {
        const char *kind = jstr(x, "kind");
        json_t *d = NULL;
        if (!strcmp(kind, "STATEMENT_MISSING_LINE"))
            d = find_diff(found, "MISSING_CHANNEL", "local", "ref", jstr(x, "paycore_ref"));
        else if (!strcmp(kind, "STATEMENT_EXTRA_LINE"))
            d = find_diff(found, "MISSING_LOCAL", "line", "channel_ref", jstr(x, "channel_txn_id"));
        else if (!strcmp(kind, "STATEMENT_AMOUNT_MISMATCH"))
            d = find_diff(found, "AMOUNT_MISMATCH", "line", "channel_ref",
                          jstr(x, "channel_txn_id"));
        else if (!strcmp(kind, "STATEMENT_FEE_MISMATCH"))
            d = find_diff(found, "FEE_MISMATCH", "line", "channel_ref", jstr(x, "channel_txn_id"));
        else if (!strcmp(kind, "STATEMENT_STATUS_MISMATCH"))
            d = find_diff(found, "STATUS_MISMATCH", "line", "channel_ref",
                          jstr(x, "channel_txn_id"));
        if (!d)
            fail_msg("faked %s of %s was not found", kind, jstr(x, "paycore_ref"));
        assert_string_equal(jstr(d, "status"), "OPEN");
    }
    /* ... and nothing else differs: not the clean payments, not the refund. */
    assert_int_equal(json_array_size(found), 5);
    json_t *fee = find_diff(found, "FEE_MISMATCH", "line", "status", "SUCCESS");
    assert_non_null(fee);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(fee, "line"), "fee")),
        json_integer_value(json_object_get(json_object_get(fee, "local"), "expected_fee")) + 1);
    assert_int_equal(json_integer_value(json_object_get(run, "new_diffs")), 5);
    json_decref(run);

    /* The same day again: the same five rows, nothing new, nothing closed. */
    json_t *again = run_day("sim_card", g_today, 200);
    assert_int_equal(run_id_of(again), run_id);
    assert_int_equal(json_integer_value(json_object_get(again, "attempts")), 2);
    assert_int_equal(json_integer_value(json_object_get(again, "new_diffs")), 0);
    assert_int_equal(json_integer_value(json_object_get(again, "open_diffs")), 5);
    json_decref(again);
    json_t *found2 = diffs_of(run_id, NULL);
    assert_int_equal(json_array_size(found2), 5);
    for (i = 0; i < 5; i++)
        assert_int_equal(json_integer_value(json_object_get(json_array_get(found, i), "diff_id")),
                         json_integer_value(json_object_get(json_array_get(found2, i), "diff_id")));
    json_decref(found2);
    json_decref(found);
    json_decref(fj);

    /* Counted once each on the node that ran it (node 0: the admin calls go
     * there); the open gauge comes from the database. */
    int seen = 0;
    for (int k = 0; k < 40 && !seen; k++) {
        pc_t_resp_t m = pc_t_admin(&g_stack, "GET", "/metrics", NULL);
        seen = m.body &&
               strstr(m.body,
                      "pc_recon_diffs_total{channel=\"sim_card\",kind=\"FEE_MISMATCH\"} 1\n") &&
               strstr(m.body, "pc_recon_open_diffs{channel=\"sim_card\"} 5\n");
        pc_t_resp_free(&m);
        if (!seen)
            usleep(100000);
    }
    assert_true(seen);
    assert_true(pc_t_ledger_ok(&g_stack));
}

static void test_lost_callback_is_repaired_from_the_statement_once(void **state)
{
    (void)state;
    sim("{\"channel_id\":\"sim_va\",\"lost_callback_rate\":1.0}");
    char tn[40];
    json_t *p = pay(1500, "VA", NULL, tn);
    assert_string_equal(jstr(p, "status"), "PROCESSING");
    char payment_no[64];
    snprintf(payment_no, sizeof payment_no, "%s", jstr(p, "payment_no"));
    complete(p, "va_number");
    json_decref(p);
    /* The buyer paid; the callback is lost: we still think it is open. */
    usleep(500000);
    char *st =
        pc_t_sql(&g_stack, "SELECT status FROM payments WHERE payment_no = '%s'", payment_no);
    assert_string_equal(st, "PROCESSING");
    free(st);
    sim("{\"channel_id\":\"sim_va\",\"lost_callback_rate\":0}");

    json_t *run = run_day("sim_va", g_today, 200);
    assert_int_equal(json_integer_value(json_object_get(run, "auto_repaired")), 1);
    assert_int_equal(json_integer_value(json_object_get(run, "open_diffs")), 0);
    json_t *found = diffs_of(run_id_of(run), NULL);
    json_t *d = find_diff(found, "MISSING_LOCAL", "local", "ref", payment_no);
    assert_non_null(d);
    assert_string_equal(jstr(d, "status"), "AUTO_REPAIRED");
    assert_string_equal(jstr(d, "repair"), "PAYMENT");
    long long diff_id = (long long)json_integer_value(json_object_get(d, "diff_id"));
    json_decref(found);
    json_decref(run);
    assert_true(
        wait_sql("TRADE_SUCCESS", 5, "SELECT status FROM trades WHERE trade_no = '%s'", tn));
    assert_true(pc_t_ledger_ok(&g_stack));

    /* Again: the line now matches, nothing is repaired a second time. */
    json_t *again = run_day("sim_va", g_today, 200);
    assert_int_equal(json_integer_value(json_object_get(again, "new_diffs")), 0);
    assert_int_equal(json_integer_value(json_object_get(again, "open_diffs")), 0);
    json_decref(again);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT repair_attempts FROM recon_diffs WHERE diff_id = %lld",
                                  diff_id),
                     1);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT count(*) FROM ledger_txns WHERE ref_type = 'payment' "
                                  "AND ref_id = '%s'",
                                  payment_no),
                     1);
    assert_int_equal(
        pc_t_sql_int(&g_stack, "SELECT count(*) FROM recon_diffs WHERE channel_id = 'sim_va'"), 1);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* An OTC payment the buyer paid at the store (callback delivered). */
static void otc_paid(char *payment_no, char *channel_ref, long amount)
{
    char tn[40];
    json_t *p = pay(amount, "OTC", NULL, tn);
    assert_string_equal(jstr(p, "status"), "PROCESSING");
    snprintf(payment_no, 64, "%s", jstr(p, "payment_no"));
    complete(p, "otc_code");
    json_decref(p);
    assert_true(
        wait_sql("SUCCESS", 10, "SELECT status FROM payments WHERE payment_no = '%s'", payment_no));
    char *ref = pc_t_sql(&g_stack, "SELECT channel_txn_id FROM payments WHERE payment_no = '%s'",
                         payment_no);
    snprintf(channel_ref, 64, "%s", ref);
    free(ref);
}

/* A payout paid and returned the same day is two lines for one record:
 * a statement without either shows both missing. Before, the two
 * differences shared one key and one of them (either) was kept. */
/* A payout's fee on the statement is checked against the fee its channel
 * gave when it answered (kept on the payout): before, payouts had no fee to
 * compare (NULL) and a channel charging another one went unnoticed. */
static void test_a_payout_fee_other_than_the_channel_said_is_a_difference(void **state)
{
    (void)state;
    char po[2][64], body[512];
    for (int i = 0; i < 2; i++) {
        char *m =
            pc_t_sql(&g_stack,
                     "INSERT INTO payouts (payout_no, out_payout_no, merchant_id, amount, "
                     "currency, payee, status, channel_id, channel_txn_id, risk_decision, "
                     "finished_at, fee) VALUES ('PO-FEE%d-%d', 'OPO-FEE%d-%d', '%s', 5000, "
                     "'CNY', '{\"type\":\"ACCOUNT\",\"account_no\":\"6222020000001111\"}', "
                     "'SUCCESS', 'sim_netbank', 'nb_fee%d_%d', 'ACCEPT', now(), 25) RETURNING "
                     "payout_no",
                     i, (int)getpid(), i, (int)getpid(), g_m.id, i, (int)getpid());
        snprintf(po[i], sizeof po[i], "%s", m);
        free(m);
    }
    char ts[32];
    char *now = pc_t_sql(&g_stack, "SELECT to_char(now() AT TIME ZONE 'UTC', "
                                   "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')");
    snprintf(ts, sizeof ts, "%s", now);
    free(now);
    /* The first as the channel said (25), the second charged 40. */
    snprintf(body, sizeof body,
             "channel_ref,paycore_ref,type,amount,currency,fee,status,time\n"
             "nb_fee0_%d,%s,PAYOUT,5000,CNY,25,SUCCESS,%s\n"
             "nb_fee1_%d,%s,PAYOUT,5000,CNY,40,SUCCESS,%s\n",
             (int)getpid(), po[0], ts, (int)getpid(), po[1], ts);
    json_t *run = upload("sim_netbank", body, 200);
    long long run_id = run_id_of(run);
    json_decref(run);
    json_t *d = diffs_of(run_id, NULL);
    int fee[2] = {0, 0};
    size_t i;
    json_t *x;
    json_array_foreach(d, i, x)
    {
        for (int k = 0; k < 2; k++)
            if (!strcmp(jstr(x, "kind"), "FEE_MISMATCH") &&
                !strcmp(jstr(json_object_get(x, "local"), "ref"), po[k]))
                fee[k]++;
    }
    json_decref(d);
    assert_int_equal(fee[0], 0);
    assert_int_equal(fee[1], 1);
}

static void test_a_payout_and_its_return_are_two_differences(void **state)
{
    (void)state;
    char *m = pc_t_sql(&g_stack,
                       "INSERT INTO payouts (payout_no, out_payout_no, merchant_id, amount, "
                       "currency, payee, status, channel_id, channel_txn_id, risk_decision, "
                       "finished_at, returned_at) VALUES ('PO-RR%d', 'OPO-RR%d', '%s', 6100, "
                       "'CNY', '{\"type\":\"ACCOUNT\",\"account_no\":\"6222020000001111\"}', "
                       "'RETURNED', 'sim_netbank', 'nb_rr%d', 'ACCEPT', now(), now()) RETURNING "
                       "payout_no",
                       (int)getpid(), (int)getpid(), g_m.id, (int)getpid());
    char po[64];
    snprintf(po, sizeof po, "%s", m);
    free(m);
    json_t *run = upload("sim_netbank",
                         "channel_ref,paycore_ref,type,amount,currency,fee,status,time\n"
                         "nb_none,PNONE,PAY,300,CNY,0,FAILED,2026-01-01T00:00:00Z\n",
                         200);
    long long run_id = run_id_of(run);
    json_decref(run);
    json_t *d = diffs_of(run_id, NULL);
    int payout = 0, ret = 0;
    size_t i;
    json_t *x;
    json_array_foreach(d, i, x)
    {
        if (strcmp(jstr(x, "kind"), "MISSING_CHANNEL") != 0 ||
            strcmp(jstr(json_object_get(x, "local"), "ref"), po) != 0)
            continue;
        payout += !strcmp(jstr(x, "type"), "PAYOUT");
        ret += !strcmp(jstr(x, "type"), "PAYOUT_RETURN");
    }
    json_decref(d);
    assert_int_equal(payout, 1);
    assert_int_equal(ret, 1);
}

/* A payout still in flight here (its success and return callbacks lost)
 * whose return is on the statement: pending, so its difference cannot be
 * adjusted — its status query brings the return and books it. It was taken
 * for FAILED, the adjustment went through, and the return the query then
 * applied was booked a second time. */
static void test_a_return_of_a_payout_in_flight_cannot_be_adjusted(void **state)
{
    (void)state;
    char *m = pc_t_sql(&g_stack,
                       "INSERT INTO payouts (payout_no, out_payout_no, merchant_id, amount, "
                       "currency, payee, status, channel_id, channel_txn_id, risk_decision) "
                       "VALUES ('PO-RF%d', 'OPO-RF%d', '%s', 6300, 'CNY', "
                       "'{\"type\":\"ACCOUNT\",\"account_no\":\"6222020000001111\"}', "
                       "'PROCESSING', 'sim_netbank', 'nb_rf%d', 'ACCEPT') RETURNING payout_no",
                       (int)getpid(), (int)getpid(), g_m.id, (int)getpid());
    char po[64], csv[512], ts[32];
    snprintf(po, sizeof po, "%s", m);
    free(m);
    char *now = pc_t_sql(&g_stack, "SELECT to_char(now() AT TIME ZONE 'UTC', "
                                   "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')");
    snprintf(ts, sizeof ts, "%s", now);
    free(now);
    snprintf(csv, sizeof csv,
             "channel_ref,paycore_ref,type,amount,currency,fee,status,time\n"
             "nb_rf%d,%s,PAYOUT_RETURN,6300,CNY,0,SUCCESS,%s\n",
             (int)getpid(), po, ts);
    json_t *run = upload("sim_netbank", csv, 200);
    json_t *d = diffs_of(run_id_of(run), NULL);
    json_decref(run);
    json_t *x = NULL, *e;
    size_t i;
    json_array_foreach(d, i, e) if (!strcmp(jstr(e, "type"), "PAYOUT_RETURN") &&
                                    !strcmp(jstr(json_object_get(e, "local"), "ref"), po)) x = e;
    assert_non_null(x);
    char path[96];
    snprintf(path, sizeof path, "/admin/recon/diffs/%lld/resolve",
             (long long)json_integer_value(json_object_get(x, "diff_id")));
    json_decref(d);
    long long suspense0 = pc_t_sql_int(&g_stack, "SELECT coalesce(ledger_balance('"
                                                 "platform:suspense:CNY'), 0)");
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", path, "{\"reason\":\"returned\",\"adjust\":true}");
    if (r.status != 409)
        fprintf(stderr, "resolve: %ld %s\n", r.status, r.body);
    assert_int_equal(r.status, 409);
    assert_string_equal(pc_t_errcode(&r), "INVALID_STATE");
    pc_t_resp_free(&r);
    assert_int_equal(pc_t_sql_int(&g_stack, "SELECT coalesce(ledger_balance('"
                                            "platform:suspense:CNY'), 0)"),
                     suspense0);
    /* Closed without money, so that later tests find no open one here. */
    r = pc_t_admin(&g_stack, "POST", path, "{\"reason\":\"its query will bring the return\"}");
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
}

static void test_uploaded_statement_is_matched_kind_by_kind(void **state)
{
    (void)state;
    char p1[64], c1[64], p2[64], c2[64], p4[64], c4[64], p5[64], c5[64], p3[64];
    otc_paid(p1, c1, 1000);
    otc_paid(p2, c2, 2000);
    otc_paid(p4, c4, 4000);
    otc_paid(p5, c5, 5000);
    /* One the buyer has not paid yet. */
    char tn[40];
    json_t *pp = pay(3000, "OTC", NULL, tn);
    snprintf(p3, sizeof p3, "%s", jstr(pp, "payment_no"));
    json_decref(pp);
    /* A payout through the same channel, paid out. */
    char *m = pc_t_sql(&g_stack,
                       "INSERT INTO payouts (payout_no, out_payout_no, merchant_id, amount, "
                       "currency, payee, status, channel_id, channel_txn_id, risk_decision, "
                       "finished_at) VALUES ('PO-R%d', 'OPO-R%d', '%s', 7000, 'CNY', "
                       "'{\"type\":\"ACCOUNT\",\"account_no\":\"6222020000001111\"}', 'SUCCESS', "
                       "'sim_otc', 'pot_r%d', 'ACCEPT', now()) RETURNING payout_no",
                       (int)getpid(), (int)getpid(), g_m.id, (int)getpid());
    char po[64];
    snprintf(po, sizeof po, "%s", m);
    free(m);

    /* sim_otc's fee is 1.50 %. */
    char csv[4096];
    const char *t = "2026-01-01T00:00:00Z";
    snprintf(csv, sizeof csv,
             "channel_ref,paycore_ref,type,amount,currency,fee,status,time\n"
             "%s,%s,PAY,1000,CNY,15,SUCCESS,%s\n"               /* matches */
             "%s,%s,PAY,2000,USD,30,SUCCESS,%s\n"               /* currency */
             "otc_pending,%s,PAY,3000,CNY,0,FAILED,%s\n"        /* failed; still open here */
             "%s,%s,PAY,1000,CNY,15,SUCCESS,%s\n"               /* the first line again */
             "pay_unknown,PNOSUCH,PAY,300,CNY,0,FAILED,%s\n"    /* no money, no record */
             "cbk_r1,%s,CHARGEBACK,100,CNY,0,SUCCESS,%s\n"      /* a type we keep no record of */
             "pot_r%d,%s,PAYOUT,6999,CNY,0,SUCCESS,%s\n"        /* amount */
             "pot_r%d,%s,PAYOUT_RETURN,7000,CNY,0,SUCCESS,%s\n" /* a return we never heard of */
             "%s,,PAY,4000,CNY,60,SUCCESS,%s\n"                 /* found by the channel's ref */
             "otc_second,%s,PAY,1000,CNY,15,SUCCESS,%s\n",      /* p1 taken a second time */
             c1, p1, t, c2, p2, t, p3, t, c1, p1, t, t, p1, t, (int)getpid(), po, t, (int)getpid(),
             po, t, c4, t, p1, t);
    /* p5 is missing from it. */
    json_t *run = upload("sim_otc", csv, 200);
    assert_string_equal(jstr(run, "status"), "DONE");
    assert_string_equal(jstr(run, "source"), "UPLOAD");
    assert_int_equal(json_integer_value(json_object_get(run, "lines")), 10);
    assert_int_equal(json_integer_value(json_object_get(run, "duplicate_lines")), 2);
    assert_int_equal(json_integer_value(json_object_get(run, "unmatched_lines")), 1);
    long long run_id = run_id_of(run);
    json_decref(run);
    json_t *d = diffs_of(run_id, NULL);
    assert_non_null(find_diff(d, "CURRENCY_MISMATCH", "line", "channel_ref", c2));
    json_t *sm = find_diff(d, "STATUS_MISMATCH", "local", "ref", p3);
    assert_non_null(sm);
    assert_true(json_is_null(json_object_get(sm, "repair")));
    assert_non_null(find_diff(d, "DUPLICATE_LINE", "line", "channel_ref", c1));
    /* The second charge of p1 under another reference (before: paired with
     * p1's record like the first, agreed, and reported nowhere). */
    assert_non_null(find_diff(d, "DUPLICATE_LINE", "line", "channel_ref", "otc_second"));
    assert_non_null(find_diff(d, "MISSING_LOCAL", "line", "channel_ref", "cbk_r1"));
    json_t *am = find_diff(d, "AMOUNT_MISMATCH", "local", "ref", po);
    assert_non_null(am);
    assert_string_equal(jstr(am, "type"), "PAYOUT");
    assert_string_equal(jstr(json_object_get(am, "local"), "table"), "payouts");
    json_t *ret = find_diff(d, "MISSING_LOCAL", "local", "ref", po);
    assert_non_null(ret);
    assert_string_equal(jstr(ret, "type"), "PAYOUT_RETURN");
    /* Marked returned from the line (its callback, we take it, was lost). */
    assert_string_equal(jstr(ret, "repair"), "PAYOUT_RETURN");
    assert_string_equal(jstr(ret, "status"), "AUTO_REPAIRED");
    char *pst = pc_t_sql(&g_stack, "SELECT status FROM payouts WHERE payout_no = '%s'", po);
    assert_string_equal(pst, "RETURNED");
    free(pst);
    assert_non_null(find_diff(d, "MISSING_CHANNEL", "local", "ref", p5));
    assert_int_equal(json_array_size(d), 8);
    long long sm_id = (long long)json_integer_value(json_object_get(sm, "diff_id"));
    long long cur_id = (long long)json_integer_value(
        json_object_get(find_diff(d, "CURRENCY_MISMATCH", "line", "channel_ref", c2), "diff_id"));
    json_decref(d);

    /* A difference without money cannot be adjusted. */
    char path[96];
    snprintf(path, sizeof path, "/admin/recon/diffs/%lld/resolve", sm_id);
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", path, "{\"reason\":\"x\",\"adjust\":true}");
    assert_int_equal(r.status, 409);
    assert_string_equal(pc_t_errcode(&r), "INVALID_STATE");
    pc_t_resp_free(&r);

    /* The same file again: nothing new. */
    run = upload("sim_otc", csv, 200);
    assert_int_equal(json_integer_value(json_object_get(run, "new_diffs")), 0);
    assert_int_equal(json_integer_value(json_object_get(run, "open_diffs")), 7);
    json_decref(run);

    /* A malformed file fails the run and changes no difference. */
    json_t *bad = upload("sim_otc",
                         "channel_ref,paycore_ref,type,amount,currency,fee,status,time\n"
                         "x,y,PAY,12x,CNY,0,SUCCESS,2026-01-01T00:00:00Z\n",
                         400);
    assert_non_null(strstr(jstr(json_object_get(bad, "error"), "message"), "row 1: amount"));
    json_decref(bad);
    char *st = pc_t_sql(&g_stack, "SELECT status FROM recon_runs WHERE run_id = %lld", run_id);
    assert_string_equal(st, "FAILED");
    free(st);
    /* So is one whose bad line comes after thousands of good ones (several
     * chunks of the COPY already sent). */
    size_t cap = 9100 * 80, n = 0;
    char *big = malloc(cap);
    assert_non_null(big);
    n += (size_t)snprintf(big + n, cap - n,
                          "channel_ref,paycore_ref,type,amount,currency,fee,status,time\n");
    for (int i = 0; i < 9000; i++)
        n += (size_t)snprintf(big + n, cap - n,
                              "pay_big%d,PBIG%d,PAY,100,CNY,0,FAILED,2026-01-01T00:00:00Z\n", i, i);
    snprintf(big + n, cap - n, "pay_bad,PBAD,PAY,100,CNY,0,SUCCESS,2026-01-01T25:00:00Z\n");
    bad = upload("sim_otc", big, 400);
    free(big);
    assert_non_null(strstr(jstr(json_object_get(bad, "error"), "message"), "row 9001: time"));
    json_decref(bad);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT count(*) FROM recon_diffs WHERE run_id = %lld AND "
                                  "status = 'OPEN'",
                                  run_id),
                     7);

    /* The channel corrects its file: the currency difference closes itself. */
    char fixed[4096];
    snprintf(fixed, sizeof fixed, "%s", csv);
    char *usd = strstr(fixed, ",USD,");
    memcpy(usd, ",CNY,", 5);
    run = upload("sim_otc", fixed, 200);
    assert_int_equal(json_integer_value(json_object_get(run, "open_diffs")), 6);
    json_decref(run);
    st = pc_t_sql(&g_stack,
                  "SELECT status || ' ' || resolved_by FROM recon_diffs WHERE diff_id = "
                  "%lld",
                  cur_id);
    assert_string_equal(st, "RESOLVED recon");
    free(st);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* A channel that takes two currencies charges each its own fixed fee:
 * sim_va's file gives USD 0.30 where CNY pays 2.00. A statement line is
 * checked with its own currency's figures (before, with one figure for the
 * file, the USD fee the channel really charges was a FEE_MISMATCH). */
static void test_fee_is_checked_with_the_currency_figures(void **state)
{
    (void)state;
    char pn[3][64], ref[3][64], tn[40];
    const char *cur[3] = {"CNY", "USD", "USD"};
    for (int i = 0; i < 3; i++) {
        json_t *p = pay_in(10000 + i, cur[i], "VA", NULL, tn);
        assert_string_equal(jstr(p, "status"), "PROCESSING");
        snprintf(pn[i], sizeof pn[i], "%s", jstr(p, "payment_no"));
        complete(p, "va_number");
        json_decref(p);
        assert_true(
            wait_sql("SUCCESS", 10, "SELECT status FROM payments WHERE payment_no = '%s'", pn[i]));
        char *r = pc_t_sql(&g_stack, "SELECT channel_txn_id FROM payments WHERE payment_no = '%s'",
                           pn[i]);
        snprintf(ref[i], sizeof ref[i], "%s", r);
        free(r);
    }
    /* 0.10 % of 100.00 is 10; CNY adds 200, USD 30. The third line charged
     * the CNY figure on a USD payment. */
    char csv[1024];
    const char *t = "2026-01-01T00:00:00Z";
    snprintf(csv, sizeof csv,
             "channel_ref,paycore_ref,type,amount,currency,fee,status,time\n"
             "%s,%s,PAY,10000,CNY,210,SUCCESS,%s\n"
             "%s,%s,PAY,10001,USD,40,SUCCESS,%s\n"
             "%s,%s,PAY,10002,USD,210,SUCCESS,%s\n",
             ref[0], pn[0], t, ref[1], pn[1], t, ref[2], pn[2], t);
    json_t *run = upload("sim_va", csv, 200);
    assert_string_equal(jstr(run, "status"), "DONE");
    long long run_id = run_id_of(run);
    json_decref(run);
    json_t *d = diffs_of(run_id, NULL);
    /* (sim_va's day holds the lost-callback test's payments too.) */
    for (int k = 0; k < 2; k++) {
        assert_null(find_diff(d, NULL, "line", "channel_ref", ref[k]));
        assert_null(find_diff(d, NULL, "local", "ref", pn[k]));
    }
    json_t *fee = find_diff(d, "FEE_MISMATCH", "line", "channel_ref", ref[2]);
    assert_non_null(fee);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(fee, "local"), "expected_fee")), 40);
    json_decref(d);

    /* GET /admin/channels shows the figures that apply to each currency. */
    pc_t_resp_t r = pc_t_admin(&g_stack, "GET", "/admin/channels", NULL);
    assert_int_equal(r.status, 200);
    json_t *chs = pc_t_json(&r);
    pc_t_resp_free(&r);
    json_t *va = NULL, *c;
    size_t i;
    json_array_foreach(json_object_get(chs, "channels"), i,
                       c) if (!strcmp(jstr(c, "channel_id"), "sim_va")) va =
        json_object_get(c, "config");
    assert_non_null(va);
    json_t *usd = json_object_get(json_object_get(va, "by_currency"), "USD");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(usd, "fee"), "fixed")), 30);
    json_decref(chs);
}

static void test_resolving_with_an_adjustment_posts_through_suspense(void **state)
{
    (void)state;
    /* Two payments at sim_wallet that paycore never asked for. */
    sim("{\"channel_id\":\"sim_wallet\",\"statement_discrepancy\":{\"extra\":2}}");
    json_t *run = run_day("sim_wallet", g_today, 200);
    json_t *d = diffs_of(run_id_of(run), "OPEN");
    json_decref(run);
    assert_int_equal(json_array_size(d), 2);
    json_t *a = json_array_get(d, 0), *b = json_array_get(d, 1);
    long long amount = json_integer_value(json_object_get(json_object_get(a, "line"), "amount"));
    long long ida = json_integer_value(json_object_get(a, "diff_id"));
    long long idb = json_integer_value(json_object_get(b, "diff_id"));
    json_decref(d);

    char path[96];
    snprintf(path, sizeof path, "/admin/recon/diffs/%lld/resolve", ida);
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", path,
                               "{\"reason\":\"unattributed wallet payment, held in suspense\","
                               "\"adjust\":true,\"who\":\"alice\"}");
    assert_int_equal(r.status, 200);
    json_t *res = pc_t_json(&r);
    pc_t_resp_free(&r);
    assert_string_equal(jstr(res, "status"), "RESOLVED");
    json_t *resolution = json_object_get(res, "resolution");
    assert_string_equal(jstr(resolution, "by"), "alice");
    long long txn = json_integer_value(json_object_get(resolution, "ledger_txn_id"));
    assert_true(txn > 0);
    json_decref(res);
    assert_int_equal(pc_t_sql_int(&g_stack, "SELECT ledger_balance('platform:suspense:CNY')"),
                     amount);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT amount FROM ledger_entries WHERE txn_id = %lld AND "
                                  "account_id = 'channel:sim_wallet:clearing:CNY'",
                                  txn),
                     -amount);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT count(*) FROM ledger_txns WHERE txn_id = %lld AND kind = "
                                  "'RECON_ADJUST' AND ref_type = 'recon_diff'",
                                  txn),
                     1);
    assert_true(pc_t_ledger_ok(&g_stack));

    /* Resolved once only. */
    r = pc_t_admin(&g_stack, "POST", path, "{\"reason\":\"again\",\"adjust\":true}");
    assert_int_equal(r.status, 409);
    pc_t_resp_free(&r);
    /* Without an adjustment: no posting. */
    /* Without "who": the operator the console or payctl names (before:
     * "ops", whoever resolved it). */
    snprintf(path, sizeof path, "/admin/recon/diffs/%lld/resolve", idb);
    r = pc_t_admin_as(&g_stack, "bob", "POST", path, "{\"reason\":\"explained by the channel\"}");
    assert_int_equal(r.status, 200);
    assert_true(strstr(r.body, "\"ledger_txn_id\":null") != NULL);
    res = pc_t_json(&r);
    assert_string_equal(jstr(json_object_get(res, "resolution"), "by"), "bob");
    json_decref(res);
    pc_t_resp_free(&r);
    /* Running the day again keeps both resolutions. */
    run = run_day("sim_wallet", g_today, 200);
    assert_int_equal(json_integer_value(json_object_get(run, "open_diffs")), 0);
    json_decref(run);
    assert_int_equal(pc_t_sql_int(&g_stack, "SELECT count(*) FROM recon_diffs WHERE channel_id = "
                                            "'sim_wallet' AND status = 'RESOLVED'"),
                     2);
    assert_int_equal(pc_t_sql_int(&g_stack, "SELECT count(*) FROM ledger_txns WHERE kind = "
                                            "'RECON_ADJUST'"),
                     1);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* A success of ours missing from the day's statement (MISSING_CHANNEL) is
 * often on the next day's (paid just before midnight): the adjustment waits
 * until the next day is reconciled, whose run would carry it and close the
 * difference. Adjusted at once, the adjustment stayed for money the channel
 * did pay, unseen. Once the next day is reconciled without it, it goes
 * through. */
static void test_a_missing_success_is_adjusted_only_after_the_next_day(void **state)
{
    (void)state;
    char p1[64], c1[64];
    otc_paid(p1, c1, 2100);
    json_t *run = upload("sim_otc",
                         "channel_ref,paycore_ref,type,amount,currency,fee,status,time\n"
                         "otc_nothing,PNOTHING,PAY,100,CNY,0,FAILED,2026-01-01T00:00:00Z\n",
                         200);
    json_t *d = diffs_of(run_id_of(run), "OPEN");
    json_decref(run);
    json_t *x = find_diff(d, "MISSING_CHANNEL", "local", "ref", p1);
    assert_non_null(x);
    char path[96];
    snprintf(path, sizeof path, "/admin/recon/diffs/%lld/resolve",
             (long long)json_integer_value(json_object_get(x, "diff_id")));
    json_decref(d);
    pc_t_resp_t r =
        pc_t_admin(&g_stack, "POST", path, "{\"reason\":\"never paid\",\"adjust\":true}");
    if (r.status != 409)
        fprintf(stderr, "resolve: %ld %s\n", r.status, r.body);
    assert_int_equal(r.status, 409);
    assert_non_null(strstr(r.body, "next day"));
    pc_t_resp_free(&r);
    /* The next day reconciled (its run done) and still without it. */
    free(pc_t_sql(&g_stack,
                  "INSERT INTO recon_runs (channel_id, business_date, status, source, attempts, "
                  "finished_at) VALUES ('sim_otc', '%s'::date + 1, 'DONE', 'UPLOAD', 1, now()) "
                  "RETURNING 1",
                  g_today));
    r = pc_t_admin(&g_stack, "POST", path, "{\"reason\":\"never paid\",\"adjust\":true}");
    if (r.status != 200)
        fprintf(stderr, "resolve: %ld %s\n", r.status, r.body);
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    free(pc_t_sql(&g_stack,
                  "DELETE FROM recon_runs WHERE channel_id = 'sim_otc' AND business_date = "
                  "'%s'::date + 1 RETURNING 1",
                  g_today));
}

/* Today's sim_otc statement of two lines paid 10.00 with a fee of 0.15
 * (channel reference, our number each): the open differences of its run. */
static json_t *two_otc_lines_open_diffs(const char *c1, const char *p1, const char *c2,
                                        const char *p2)
{
    char csv[1024];
    const char *t = "2026-01-01T00:00:00Z";
    snprintf(csv, sizeof csv,
             "channel_ref,paycore_ref,type,amount,currency,fee,status,time\n"
             "%s,%s,PAY,1000,CNY,15,SUCCESS,%s\n"
             "%s,%s,PAY,1000,CNY,15,SUCCESS,%s\n",
             c1, p1, t, c2, p2, t);
    json_t *run = upload("sim_otc", csv, 200);
    json_t *d = diffs_of(run_id_of(run), "OPEN");
    json_decref(run);
    return d;
}

/* A repeated line is known by its reference and which repeat it is, not
 * by its row: a statement re-issued with a line added above it found the
 * same duplicate as new (another row, another key), and the one adjusted
 * already could be adjusted a second time. */
static void test_a_duplicate_line_adjusted_is_not_found_again_in_a_reissued_file(void **state)
{
    (void)state;
    char p1[64], c1[64], csv[1024];
    otc_paid(p1, c1, 1000);
    json_t *d = two_otc_lines_open_diffs(c1, p1, c1, p1);
    json_t *x = find_diff(d, "DUPLICATE_LINE", "line", "channel_ref", c1);
    assert_non_null(x);
    char path[96];
    snprintf(path, sizeof path, "/admin/recon/diffs/%lld/resolve",
             (long long)json_integer_value(json_object_get(x, "diff_id")));
    json_decref(d);
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", path,
                               "{\"reason\":\"charged twice, refunded at the channel\","
                               "\"adjust\":true}");
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    /* Re-issued with a line above them. */
    const char *t = "2026-01-01T00:00:00Z";
    snprintf(csv, sizeof csv,
             "channel_ref,paycore_ref,type,amount,currency,fee,status,time\n"
             "otc_reissue,PNONE3,PAY,300,CNY,0,FAILED,%s\n"
             "%s,%s,PAY,1000,CNY,15,SUCCESS,%s\n"
             "%s,%s,PAY,1000,CNY,15,SUCCESS,%s\n",
             t, c1, p1, t, c1, p1, t);
    json_t *run = upload("sim_otc", csv, 200);
    d = diffs_of(run_id_of(run), "OPEN");
    json_decref(run);
    assert_null(find_diff(d, "DUPLICATE_LINE", "line", "channel_ref", c1));
    json_decref(d);
}

/* Sets sim_otc's fee rate in the stack's channel file and reloads both
 * nodes. */
static void set_otc_rate_bp(int bp)
{
    pc_t_sh("sed -i 's/\"rate_bp\": *[0-9]*/\"rate_bp\": %d/' %s/channels/sim_otc.json", bp, g_dir);
    char want[48];
    snprintf(want, sizeof want, "\"rate_bp\":%d", bp);
    for (int node = 0; node < 2; node++) {
        pc_t_resp_t r = pc_t_admin_node(&g_stack, node, "POST", "/admin/reload", NULL);
        assert_int_equal(r.status, 200);
        pc_t_resp_free(&r);
        r = pc_t_admin_node(&g_stack, node, "GET", "/admin/channels", NULL);
        assert_non_null(strstr(r.body, want));
        pc_t_resp_free(&r);
    }
}

/* A channel's fee changes (its file edited, say on the first of a month):
 * the payments sent before are checked against the fee of when they were
 * sent, the ones after against the new one. Before, every payment of a day
 * reconciled after the change was priced with the new file: the whole day
 * before a fee change came out FEE_MISMATCH. */
static void test_a_fee_change_does_not_reprice_payments_made_before_it(void **state)
{
    (void)state;
    char p1[64], c1[64], p2[64], c2[64];
    otc_paid(p1, c1, 1000); /* 1.5 %: 15 */
    set_otc_rate_bp(300);
    otc_paid(p2, c2, 1000); /* 3 %: 30 */
    /* The channel kept 15 of each. */
    json_t *d = two_otc_lines_open_diffs(c1, p1, c2, p2);
    set_otc_rate_bp(150);
    json_t *x = find_diff(d, NULL, "line", "channel_ref", c1);
    if (x) {
        char *s = json_dumps(x, 0);
        fail_msg("a payment sent at 1.5 %% and charged 15: %s", s);
    }
    x = find_diff(d, "FEE_MISMATCH", "line", "channel_ref", c2);
    assert_non_null(x);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(x, "local"), "expected_fee")), 30);
    json_decref(d);
}

/* n OTC payments paid amount, amount + 1, ... (pn, cr: our number, the
 * channel's reference), all moved to noon of day[0], days_back days before
 * today; day[i] is the day after day[i - 1]. */
static void otc_paid_on_one_day(int n, long amount, int days_back, char pn[][64], char cr[][64],
                                char day[][11])
{
    for (int i = 0; i < n; i++) {
        otc_paid(pn[i], cr[i], amount + i);
        char *d = pc_t_sql(&g_stack, "SELECT ('%s'::date - %d)::text", g_today, days_back - i);
        snprintf(day[i], 11, "%s", d);
        free(d);
    }
    for (int i = 0; i < n; i++)
        free(pc_t_sql(&g_stack,
                      "UPDATE payments SET finished_at = '%s'::date + time '12:00' AT TIME "
                      "ZONE 'UTC' WHERE payment_no = '%s' RETURNING 1",
                      day[0], pn[i]));
}

/* The statuses of day's differences about our record ref are want (joined
 * by ','). */
static void assert_diffs_of_day(const char *day, const char *ref, const char *want)
{
    char *st = pc_t_sql(&g_stack,
                        "SELECT string_agg(status, ',') FROM recon_diffs WHERE business_date = "
                        "'%s' AND local_ref = '%s'",
                        day, ref);
    assert_string_equal(st, want);
    free(st);
}

/* The channel lists one payment on two days' statements: the second
 * listing is money claimed twice. Before, a line matched to a record of
 * another day was taken for a success that crossed midnight and matched
 * silently, however many days listed it. Three payments of one day d (three
 * weeks back, a day no job runs): p1 on d's statement, p2 and p3 not. */
static void test_a_payment_listed_on_two_days_statements_is_a_duplicate(void **state)
{
    (void)state;
    char pn[3][64], cr[3][64], day[3][11];
    otc_paid_on_one_day(3, 700, 21, pn, cr, day);
    /* The lines of payments from..to on a statement of day on (sim_otc's
     * fee: 1.5 %). */
    char csv[2048];
#define STATEMENT(from, to, on)                                                                    \
    do {                                                                                           \
        int off_ = snprintf(csv, sizeof csv, "%s",                                                 \
                            "channel_ref,paycore_ref,type,amount,currency,fee,status,time\n");     \
        for (int i_ = (from); i_ <= (to); i_++)                                                    \
            off_ += snprintf(csv + off_, sizeof csv - (size_t)off_,                                \
                             "%s,%s,PAY,%d,CNY,%d,SUCCESS,%sT00:10:00Z\n", cr[i_], pn[i_],         \
                             700 + i_, ((700 + i_) * 150 + 5000) / 10000, (on));                   \
    } while (0)
    /* The next day's statement, reconciled first, has p3 (carried there). */
    STATEMENT(2, 2, day[1]);
    json_decref(upload_on("sim_otc", day[1], csv, 200));
    /* Day d's own statement: p1. */
    STATEMENT(0, 0, day[0]);
    json_t *run = upload_on("sim_otc", day[0], csv, 200);
    json_t *d0 = diffs_of(run_id_of(run), NULL);
    json_decref(run);
    assert_null(find_diff(d0, NULL, "local", "ref", pn[0]));
    json_t *x = find_diff(d0, "MISSING_CHANNEL", "local", "ref", pn[1]);
    assert_non_null(x);
    assert_string_equal(jstr(x, "status"), "OPEN");
    /* p3 is on the next day's statement: missing from this one, resolved. */
    x = find_diff(d0, "MISSING_CHANNEL", "local", "ref", pn[2]);
    assert_non_null(x);
    assert_string_equal(jstr(x, "status"), "RESOLVED");
    json_decref(d0);
    /* The next day again, now with all three: p1's line is the duplicate,
     * the same one when the day is run once more. */
    STATEMENT(0, 2, day[1]);
    long long dup_id = 0;
    for (int again = 0; again < 2; again++) {
        run = upload_on("sim_otc", day[1], csv, 200);
        json_t *d1 = diffs_of(run_id_of(run), "OPEN");
        json_decref(run);
        x = find_diff(d1, "DUPLICATE_LINE", "line", "channel_ref", cr[0]);
        if (!x) {
            char *all = json_dumps(d1, 0);
            fail_msg("p1 on two days' statements, no duplicate: %s", all);
        }
        assert_int_equal(json_integer_value(json_object_get(json_object_get(x, "line"), "amount")),
                         700);
        long long id = (long long)json_integer_value(json_object_get(x, "diff_id"));
        assert_true(again == 0 || id == dup_id);
        dup_id = id;
        assert_null(find_diff(d1, NULL, "line", "channel_ref", cr[1]));
        assert_null(find_diff(d1, NULL, "line", "channel_ref", cr[2]));
        json_decref(d1);
    }
    /* Day d reconciled by a version before this rule (it dropped, and
     * said nothing of, what another day's statement had): its silence
     * proves no listing, and the next day finds no duplicate. */
    free(pc_t_sql(&g_stack,
                  "UPDATE recon_runs SET records_unlisted = false WHERE channel_id = 'sim_otc' "
                  "AND business_date = '%s' RETURNING 1",
                  day[0]));
    run = upload_on("sim_otc", day[1], csv, 200);
    json_t *old_rule = diffs_of(run_id_of(run), "OPEN");
    json_decref(run);
    assert_null(find_diff(old_rule, "DUPLICATE_LINE", "line", "channel_ref", cr[0]));
    json_decref(old_rule);
    free(pc_t_sql(&g_stack,
                  "UPDATE recon_runs SET records_unlisted = true WHERE channel_id = 'sim_otc' "
                  "AND business_date = '%s' RETURNING 1",
                  day[0]));
    /* p2 is no longer missing from day d: the next day had it. */
    assert_diffs_of_day(day[0], pn[1], "RESOLVED");
    /* A third day listing p2 again: the day before had it already. */
    STATEMENT(1, 1, day[2]);
    run = upload_on("sim_otc", day[2], csv, 200);
    json_t *d2 = diffs_of(run_id_of(run), "OPEN");
    json_decref(run);
    assert_non_null(find_diff(d2, "DUPLICATE_LINE", "line", "channel_ref", cr[1]));
    json_decref(d2);
#undef STATEMENT
    /* Those days reconciled, the daily job catches up on sim_otc's last
     * week: let it finish while paysim is there (the test after this one
     * takes it away). */
    assert_true(pc_t_sql_wait(&g_stack, "0", 60,
                              "SELECT count(*) FROM generate_series('%s'::date - 8, '%s'::date - "
                              "1, interval '1 day') d WHERE NOT EXISTS (SELECT 1 FROM recon_runs r "
                              "WHERE r.channel_id = 'sim_otc' AND r.business_date = d::date AND "
                              "r.status = 'DONE')",
                              g_today, g_today));
}

/* The channel lists a payment on its own day's statement with another
 * amount (AMOUNT_MISMATCH) and on the next day's again: the second listing
 * is a duplicate all the same. Before, any difference the own day's run
 * recorded about the payment was taken for "not listed there", the next
 * day's line for a success carried across midnight, and matched in
 * silence. A payment its own day's statement lacks (MISSING_CHANNEL) and
 * the next day's has is still carried there, not a duplicate. Days 25 and
 * 24 back: no job runs them, and no other test uses them. */
static void test_a_payment_listed_with_a_difference_and_again_next_day_is_a_duplicate(void **state)
{
    (void)state;
    char pn[2][64], cr[2][64], day[2][11], csv[1024];
    const char *head = "channel_ref,paycore_ref,type,amount,currency,fee,status,time\n";
    otc_paid_on_one_day(2, 800, 25, pn, cr, day);
    /* Day d's statement: p1 for 10 less than paid (sim_otc's fee, 1.5 %, is
     * 12 either way), p2 not at all. */
    snprintf(csv, sizeof csv, "%s%s,%s,PAY,790,CNY,12,SUCCESS,%sT12:00:00Z\n", head, cr[0], pn[0],
             day[0]);
    json_t *run = upload_on("sim_otc", day[0], csv, 200);
    json_t *d0 = diffs_of(run_id_of(run), "OPEN");
    json_decref(run);
    assert_non_null(find_diff(d0, "AMOUNT_MISMATCH", "local", "ref", pn[0]));
    assert_non_null(find_diff(d0, "MISSING_CHANNEL", "local", "ref", pn[1]));
    json_decref(d0);
    /* The next day's statement: both, at the amounts paid. */
    snprintf(csv, sizeof csv,
             "%s%s,%s,PAY,800,CNY,12,SUCCESS,%sT00:10:00Z\n%s,%s,PAY,801,CNY,12,SUCCESS,%sT00:10:"
             "00Z\n",
             head, cr[0], pn[0], day[1], cr[1], pn[1], day[1]);
    run = upload_on("sim_otc", day[1], csv, 200);
    json_t *d1 = diffs_of(run_id_of(run), NULL);
    json_decref(run);
    json_t *x = find_diff(d1, "DUPLICATE_LINE", "line", "channel_ref", cr[0]);
    if (!x) {
        char *all = json_dumps(d1, 0);
        fail_msg("p1 on two days' statements, no duplicate: %s", all);
    }
    assert_string_equal(jstr(x, "status"), "OPEN");
    assert_null(find_diff(d1, NULL, "line", "channel_ref", cr[1]));
    json_decref(d1);
    /* p2's difference on day d (MISSING_CHANNEL) is resolved: the next
     * day's statement has it. */
    assert_diffs_of_day(day[0], pn[1], "RESOLVED");
}

/* The day d0 .. d0 + n - 1, days_back days before today, as dates. */
static void days_from(int days_back, int n, char day[][11])
{
    for (int i = 0; i < n; i++) {
        char *d = pc_t_sql(&g_stack, "SELECT ('%s'::date - %d)::text", g_today, days_back - i);
        snprintf(day[i], 11, "%s", d);
        free(d);
    }
}

/* The channel books a payment on day d, but our record of it finishes just
 * after midnight, on d + 1 (a callback late by minutes, or a lost one
 * repaired later): d's statement lists it, carried there. The statement of
 * d + 1 lists it again: money claimed twice. Before, that second line paired
 * with the record of its own day, agreed, and nothing was reported (only a
 * line carried to another day was checked against earlier listings). Days
 * 30 and 29 back: no job runs them, and no other test uses them. */
static void test_a_payment_carried_to_the_day_before_and_listed_again_is_a_duplicate(void **state)
{
    (void)state;
    char pn[64], cr[64], day[2][11], csv[1024];
    const char *head = "channel_ref,paycore_ref,type,amount,currency,fee,status,time\n";
    days_from(30, 2, day);
    otc_paid(pn, cr, 900);
    free(pc_t_sql(&g_stack,
                  "UPDATE payments SET finished_at = '%s'::date + time '00:05' AT TIME ZONE 'UTC' "
                  "WHERE payment_no = '%s' RETURNING 1",
                  day[1], pn));
    /* Day d's statement: the payment (sim_otc's fee, 1.5 %, is 14). */
    snprintf(csv, sizeof csv, "%s%s,%s,PAY,900,CNY,14,SUCCESS,%sT23:58:00Z\n", head, cr, pn,
             day[0]);
    json_t *run = upload_on("sim_otc", day[0], csv, 200);
    json_t *d0 = diffs_of(run_id_of(run), NULL);
    json_decref(run);
    assert_null(find_diff(d0, NULL, "line", "channel_ref", cr));
    json_decref(d0);
    /* Day d + 1's statement lists it again: a duplicate, the same one when
     * the day is run once more. */
    snprintf(csv, sizeof csv, "%s%s,%s,PAY,900,CNY,14,SUCCESS,%sT00:03:00Z\n", head, cr, pn,
             day[1]);
    long long dup_id = 0;
    for (int again = 0; again < 2; again++) {
        run = upload_on("sim_otc", day[1], csv, 200);
        json_t *d1 = diffs_of(run_id_of(run), NULL);
        json_decref(run);
        json_t *x = find_diff(d1, "DUPLICATE_LINE", "line", "channel_ref", cr);
        if (!x) {
            char *all = json_dumps(d1, 0);
            fail_msg("a payment on two days' statements, no duplicate: %s", all);
        }
        assert_string_equal(jstr(x, "status"), "OPEN");
        long long id = (long long)json_integer_value(json_object_get(x, "diff_id"));
        assert_true(again == 0 || id == dup_id);
        dup_id = id;
        json_decref(d1);
    }
    assert_diffs_of_day(day[1], pn, "OPEN");
    /* Day d run again: its line is the first listing, not a second
     * duplicate. */
    snprintf(csv, sizeof csv, "%s%s,%s,PAY,900,CNY,14,SUCCESS,%sT23:58:00Z\n", head, cr, pn,
             day[0]);
    run = upload_on("sim_otc", day[0], csv, 200);
    d0 = diffs_of(run_id_of(run), NULL);
    json_decref(run);
    assert_null(find_diff(d0, NULL, "line", "channel_ref", cr));
    json_decref(d0);
}

/* A line for which we have no record at all, on two days' statements: the
 * first is MISSING_LOCAL, the second a duplicate of it. Before, both were
 * MISSING_LOCAL, and both could be adjusted (suspense credited twice). Days
 * 33 and 32 back. */
static void test_a_line_without_a_record_on_two_days_statements_is_a_duplicate(void **state)
{
    (void)state;
    char day[2][11], csv[1024], ref[64];
    const char *head = "channel_ref,paycore_ref,type,amount,currency,fee,status,time\n";
    days_from(33, 2, day);
    snprintf(ref, sizeof ref, "otc_ghost_%d", (int)getpid());
    long long dup_id = 0;
    for (int i = 0; i < 3; i++) {
        int on = i ? 1 : 0;
        snprintf(csv, sizeof csv, "%s%s,PGHOST%d,PAY,600,CNY,9,SUCCESS,%sT12:00:00Z\n", head, ref,
                 (int)getpid(), day[on]);
        json_t *run = upload_on("sim_otc", day[on], csv, 200);
        json_t *d = diffs_of(run_id_of(run), "OPEN");
        json_decref(run);
        json_t *ml = find_diff(d, "MISSING_LOCAL", "line", "channel_ref", ref);
        json_t *dup = find_diff(d, "DUPLICATE_LINE", "line", "channel_ref", ref);
        if (on == 0 ? !ml || dup : ml || !dup) {
            char *all = json_dumps(d, 0);
            fail_msg("day %s (run %d): %s", day[on], i, all);
        }
        if (dup) {
            long long id = (long long)json_integer_value(json_object_get(dup, "diff_id"));
            assert_true(i == 1 || id == dup_id);
            dup_id = id;
        }
        json_decref(d);
    }
}

/* Resolves difference id, with an adjustment or not; the answer's status. */
static long resolve_diff(long long id, int adjust)
{
    char path[96];
    snprintf(path, sizeof path, "/admin/recon/diffs/%lld/resolve", id);
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", path,
                               adjust ? "{\"reason\":\"the channel never paid\",\"adjust\":true}"
                                      : "{\"reason\":\"the channel will list it\"}");
    long status = r.status;
    if (status != 200)
        fprintf(stderr, "resolve %lld: %ld %s\n", id, status, r.body);
    pc_t_resp_free(&r);
    return status;
}

/* Three OTC payments (base, base + 1, base + 2) paid on one day days_back
 * ago, d: d's statement lists p2 FAILED and misses p1 and p3, d + 1's none
 * of them; ops resolve p1 and p2 with an adjustment (written off to
 * suspense) and dismiss p3. Their differences into id; returns the
 * suspense balance before. */
static long long three_written_off(long base, int days_back, char pn[3][64], char cr[3][64],
                                   char day[3][11], long long id[3])
{
    char csv[2048];
    const char *head = "channel_ref,paycore_ref,type,amount,currency,fee,status,time\n";
    otc_paid_on_one_day(3, base, days_back, pn, cr, day);
    long long suspense0 =
        pc_t_sql_int(&g_stack, "SELECT coalesce(ledger_balance('platform:suspense:CNY'), 0)");
    snprintf(csv, sizeof csv, "%s%s,%s,PAY,%ld,CNY,0,FAILED,%sT12:00:00Z\n", head, cr[1], pn[1],
             base + 1, day[0]);
    json_t *run = upload_on("sim_otc", day[0], csv, 200);
    json_t *d0 = diffs_of(run_id_of(run), "OPEN");
    json_decref(run);
    json_t *x[3] = {find_diff(d0, "MISSING_CHANNEL", "local", "ref", pn[0]),
                    find_diff(d0, "STATUS_MISMATCH", "local", "ref", pn[1]),
                    find_diff(d0, "MISSING_CHANNEL", "local", "ref", pn[2])};
    for (int i = 0; i < 3; i++) {
        assert_non_null(x[i]);
        id[i] = (long long)json_integer_value(json_object_get(x[i], "diff_id"));
    }
    json_decref(d0);
    snprintf(csv, sizeof csv, "%sotc_nothing,PNOTHING,PAY,100,CNY,0,FAILED,%sT12:00:00Z\n", head,
             day[1]);
    json_decref(upload_on("sim_otc", day[1], csv, 200));
    assert_int_equal(resolve_diff(id[0], 1), 200);
    assert_int_equal(resolve_diff(id[1], 1), 200);
    assert_int_equal(resolve_diff(id[2], 0), 200);
    assert_int_equal(
        pc_t_sql_int(&g_stack, "SELECT coalesce(ledger_balance('platform:suspense:CNY'), 0)"),
        suspense0 - base - (base + 1));
    return suspense0;
}

/* Runs csv as day's statement twice: each time p1's and p2's adjustments
 * (id) are reported ADJUSTMENT_CONTRADICTED, the same difference each time,
 * and p3 nothing; those two differences into seen. */
static void contradicted_twice(const char *day, const char *csv, char pn[3][64],
                               const long long id[3], long long seen[2])
{
    for (int again = 0; again < 2; again++) {
        json_t *run = upload_on("sim_otc", day, csv, 200);
        json_t *d = diffs_of(run_id_of(run), "OPEN");
        json_decref(run);
        for (int i = 0; i < 2; i++) {
            json_t *c = find_diff(d, "ADJUSTMENT_CONTRADICTED", "local", "ref", pn[i]);
            if (!c) {
                char *all = json_dumps(d, 0);
                fail_msg("the adjustment of %s is contradicted by the statement of %s, not "
                         "reported: %s",
                         pn[i], day, all);
            }
            assert_int_equal(json_integer_value(json_object_get(c, "contradicts")), id[i]);
            long long cid = (long long)json_integer_value(json_object_get(c, "diff_id"));
            assert_true(again == 0 || cid == seen[i]);
            seen[i] = cid;
        }
        assert_null(find_diff(d, NULL, "local", "ref", pn[2]));
        assert_int_equal(json_array_size(d), 2);
        json_decref(d);
    }
}

/* The two contradictions (seen) resolved with an adjustment: each books
 * back what its adjustment wrote off (suspense as it was, suspense0), and
 * day's statement csv run again leaves nothing open. */
static void booked_back(const long long seen[2], long long suspense0, const char *day,
                        const char *csv)
{
    assert_int_equal(resolve_diff(seen[0], 1), 200);
    assert_int_equal(resolve_diff(seen[1], 1), 200);
    assert_int_equal(
        pc_t_sql_int(&g_stack, "SELECT coalesce(ledger_balance('platform:suspense:CNY'), 0)"),
        suspense0);
    assert_true(pc_t_ledger_ok(&g_stack));
    json_t *run = upload_on("sim_otc", day, csv, 200);
    assert_int_equal(json_integer_value(json_object_get(run, "open_diffs")), 0);
    json_decref(run);
}

/* Ops adjust a success the channel did not pay (missing from the statements
 * of its day d and of d + 1; listed FAILED on d), booking the loss to
 * suspense; d + 2's statement (a weekend batch) then lists the payments
 * paid. The loss never happened: the later run reports each adjusted
 * difference as ADJUSTMENT_CONTRADICTED, once however often the day is run,
 * and resolving that with an adjustment books the money back. Before, the
 * lines were matched as carried in silence (the differences they would have
 * closed were resolved) and the books kept the loss. A difference dismissed
 * without an adjustment moved no money: its later listing says nothing. Days
 * 40 to 38 back: no job runs them, and no other test uses them. */
static void test_an_adjustment_contradicted_by_a_later_statement_goes_to_ops(void **state)
{
    (void)state;
    char pn[3][64], cr[3][64], day[3][11], csv[2048];
    const char *head = "channel_ref,paycore_ref,type,amount,currency,fee,status,time\n";
    long long id[3];
    long long suspense0 = three_written_off(1100, 40, pn, cr, day, id);
    /* Day d + 2 lists all three, paid: the same two reports when the day is
     * run again. */
    int off = snprintf(csv, sizeof csv, "%s", head);
    for (int i = 0; i < 3; i++)
        off += snprintf(csv + off, sizeof csv - (size_t)off,
                        "%s,%s,PAY,%d,CNY,%d,SUCCESS,%sT09:00:00Z\n", cr[i], pn[i], 1100 + i,
                        ((1100 + i) * 150 + 5000) / 10000, day[2]);
    long long seen[2];
    contradicted_twice(day[2], csv, pn, id, seen);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT count(*) FROM recon_diffs WHERE kind = "
                                  "'ADJUSTMENT_CONTRADICTED' AND local_ref IN ('%s', '%s', '%s')",
                                  pn[0], pn[1], pn[2]),
                     2);
    booked_back(seen, suspense0, day[2], csv);
}

/* The statement says a payment we failed was paid (STATUS_MISMATCH); before
 * ops resolve it, the channel's late success captures the payment. An
 * adjustment computed from the run's snapshot would book the same money a
 * second time: it is refused until the day is run again (before: posted). */
/* A card payment of 1300 declined here (FAILED) whose channel's statement
 * says it was paid: its STATUS_MISMATCH difference. Fills pno, ch and csv
 * (the statement, 1024 bytes); returns the difference's id. */
static long long declined_but_paid(char *pno, char *ch, char *csv)
{
    char tn[40];
    json_t *p = pay(1300, "CARD",
                    "\"card\":{\"pan\":\"4000000000000002\",\"exp_month\":12,\"exp_year\":2030,"
                    "\"cvv\":\"123\"}",
                    tn);
    assert_string_equal(jstr(p, "status"), "FAILED");
    snprintf(pno, 64, "%s", jstr(p, "payment_no"));
    json_decref(p);
    char *c = pc_t_sql(&g_stack, "SELECT channel_id FROM payments WHERE payment_no = '%s'", pno);
    snprintf(ch, 40, "%s", c);
    free(c);
    snprintf(csv, 1024,
             "channel_ref,paycore_ref,type,amount,currency,fee,status,time\n"
             "late_%s,%s,PAY,1300,CNY,0,SUCCESS,2026-01-01T00:00:00Z\n",
             pno, pno);
    json_t *run = upload(ch, csv, 200);
    json_t *d = diffs_of(run_id_of(run), "OPEN");
    json_decref(run);
    json_t *sm = find_diff(d, "STATUS_MISMATCH", "local", "ref", pno);
    assert_non_null(sm);
    long long id = (long long)json_integer_value(json_object_get(sm, "diff_id"));
    json_decref(d);
    return id;
}

static void test_adjustment_refused_when_the_record_moved_since_the_run(void **state)
{
    (void)state;
    char pno[64], ch[40], csv[1024];
    long long id = declined_but_paid(pno, ch, csv);
    json_t *run, *d;
    /* The channel's late success is captured meanwhile. */
    assert_int_equal(pc_t_channel_callback(&g_stack, ch, "payment", pno, "SUCCESS", 1300), 200);
    assert_true(
        wait_sql("SUCCESS", 10, "SELECT status FROM payments WHERE payment_no = '%s'", pno));
    long long suspense0 = pc_t_sql_int(&g_stack, "SELECT coalesce(ledger_balance('"
                                                 "platform:suspense:CNY'), 0)");
    char path[96];
    snprintf(path, sizeof path, "/admin/recon/diffs/%lld/resolve", id);
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", path, "{\"reason\":\"paid\",\"adjust\":true}");
    assert_int_equal(r.status, 409);
    assert_non_null(strstr(r.body, "run the day again"));
    pc_t_resp_free(&r);
    assert_int_equal(pc_t_sql_int(&g_stack, "SELECT coalesce(ledger_balance('"
                                            "platform:suspense:CNY'), 0)"),
                     suspense0);
    /* Run again, the difference is gone. */
    run = upload(ch, csv, 200);
    d = diffs_of(run_id_of(run), "OPEN");
    json_decref(run);
    assert_null(find_diff(d, "STATUS_MISMATCH", "local", "ref", pno));
    json_decref(d);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* The other order: ops book the statement's money by an adjustment, then
 * the channel's late success arrives. It is not captured (the money would
 * be booked twice): the payment stays FAILED and goes to ops. */
static void test_late_success_after_an_adjustment_goes_to_ops(void **state)
{
    (void)state;
    char pno[64], ch[40], csv[1024], path[96];
    long long id = declined_but_paid(pno, ch, csv);
    snprintf(path, sizeof path, "/admin/recon/diffs/%lld/resolve", id);
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", path, "{\"reason\":\"paid\",\"adjust\":true}");
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    long long pending0 = pc_t_sql_int(&g_stack,
                                      "SELECT coalesce(ledger_balance('merchant:%s:"
                                      "pending:CNY'), 0)",
                                      g_m.id);
    assert_int_equal(pc_t_channel_callback(&g_stack, ch, "payment", pno, "SUCCESS", 1300), 200);
    assert_true(wait_sql("FAILED/true", 10,
                         "SELECT status || '/' || needs_ops FROM payments WHERE payment_no = '%s'",
                         pno));
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT coalesce(ledger_balance('merchant:%s:"
                                  "pending:CNY'), 0)",
                                  g_m.id),
                     pending0);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* The statement lines of payments 0..n-1 (pn, cr: our number, the
 * channel's reference; paid amount + i, sim_otc's fee of 1.5 %) with status
 * on day at noon, into csv (2048 bytes). */
static void otc_lines(char *csv, int n, char pn[][64], char cr[][64], long amount,
                      const char *status, const char *day)
{
    int off = snprintf(csv, 2048, "%s",
                       "channel_ref,paycore_ref,type,amount,currency,fee,status,"
                       "time\n");
    for (int i = 0; i < n; i++)
        off += snprintf(csv + off, 2048 - (size_t)off, "%s,%s,PAY,%ld,CNY,%ld,%s,%sT12:00:00Z\n",
                        cr[i], pn[i], amount + i,
                        strcmp(status, "SUCCESS") ? 0 : ((amount + i) * 150 + 5000) / 10000, status,
                        day);
}

/* The channel lists a payment FAILED on day d (an authorisation it
 * declined) and SUCCESS on d + 1 under the same reference (the capture, or
 * a retry, that paid: our record finished then): a status that changed, not
 * a transaction claimed twice. Before, d's run carried the FAILED line and
 * d + 1's run took that for an earlier listing: its SUCCESS line became a
 * DUPLICATE_LINE (ops adjusting it credited suspense with money the channel
 * never paid twice) and its other differences were dropped. A third day
 * listing it paid again is still a duplicate. When ops wrote off p2 on d's
 * word (its STATUS_MISMATCH adjusted), d + 1's listing contradicts that
 * adjustment. Days 45 to 43 back: no job runs them, no other test uses
 * them. */
static void test_a_payment_declined_one_day_and_paid_the_next_is_no_duplicate(void **state)
{
    (void)state;
    char pn[2][64], cr[2][64], day[3][11], csv[2048];
    days_from(45, 3, day);
    for (int i = 0; i < 2; i++) {
        otc_paid(pn[i], cr[i], 1500 + i);
        free(pc_t_sql(&g_stack,
                      "UPDATE payments SET finished_at = '%s'::date + time '12:00' AT TIME ZONE "
                      "'UTC' WHERE payment_no = '%s' RETURNING 1",
                      day[1], pn[i]));
    }
    /* Day d: both declined. */
    otc_lines(csv, 2, pn, cr, 1500, "FAILED", day[0]);
    json_t *run = upload_on("sim_otc", day[0], csv, 200);
    json_t *d0 = diffs_of(run_id_of(run), "OPEN");
    json_decref(run);
    json_t *sm = find_diff(d0, "STATUS_MISMATCH", "local", "ref", pn[1]);
    assert_non_null(find_diff(d0, "STATUS_MISMATCH", "local", "ref", pn[0]));
    assert_non_null(sm);
    long long adjusted = (long long)json_integer_value(json_object_get(sm, "diff_id"));
    json_decref(d0);
    assert_int_equal(resolve_diff(adjusted, 1), 200);
    /* Day d + 1: both paid, the same when the day is run again. */
    otc_lines(csv, 2, pn, cr, 1500, "SUCCESS", day[1]);
    for (int again = 0; again < 2; again++) {
        run = upload_on("sim_otc", day[1], csv, 200);
        json_t *d1 = diffs_of(run_id_of(run), NULL);
        json_decref(run);
        json_t *c = find_diff(d1, NULL, "line", "channel_ref", cr[1]);
        if (find_diff(d1, NULL, "line", "channel_ref", cr[0]) || !c ||
            strcmp(jstr(c, "kind"), "ADJUSTMENT_CONTRADICTED") != 0 ||
            json_integer_value(json_object_get(c, "contradicts")) != adjusted ||
            json_array_size(d1) != 1) {
            char *all = json_dumps(d1, 0);
            fail_msg("declined on %s, paid on %s (run %d): %s", day[0], day[1], again, all);
        }
        json_decref(d1);
    }
    /* The contradiction booked back, the ledger is whole again. */
    run = upload_on("sim_otc", day[1], csv, 200);
    json_t *d1 = diffs_of(run_id_of(run), "OPEN");
    json_decref(run);
    assert_int_equal(
        resolve_diff(
            (long long)json_integer_value(json_object_get(
                find_diff(d1, "ADJUSTMENT_CONTRADICTED", "local", "ref", pn[1]), "diff_id")),
            1),
        200);
    json_decref(d1);
    assert_true(pc_t_ledger_ok(&g_stack));
    /* Day d + 2 lists p1 paid once more: that is the duplicate. */
    otc_lines(csv, 1, pn, cr, 1500, "SUCCESS", day[2]);
    run = upload_on("sim_otc", day[2], csv, 200);
    json_t *d2 = diffs_of(run_id_of(run), "OPEN");
    json_decref(run);
    assert_non_null(find_diff(d2, "DUPLICATE_LINE", "line", "channel_ref", cr[0]));
    json_decref(d2);
}

/* The channel's statement of one day lists a payment declined and then paid
 * under one reference (an authorisation it declined, then the capture or
 * retry that paid): the paid line matches our record, and the declined one
 * is a status that changed, not a difference. Before, the reader took the
 * paid line for a repeat of the declined one: it was a DUPLICATE_LINE (money
 * claimed twice: ops adjusting it credited suspense), the declined line
 * alone was matched and was a STATUS_MISMATCH (adjusting it wrote off money
 * the channel paid), and the day counted as no listing of the payment, so
 * the next day's statement listing it paid again was no duplicate. The
 * other order (paid, then a declined line) is no difference either; a paid
 * line repeated still is a duplicate, that day and the next. Days 55 and 54
 * back: no job runs them, no other test uses them. */
static void test_a_payment_declined_and_paid_the_same_day_is_no_duplicate(void **state)
{
    (void)state;
    char pn[3][64], cr[3][64], day[3][11], csv[2048];
    otc_paid_on_one_day(3, 1700, 55, pn, cr, day);
    /* Day d: p1 declined then paid; p2 paid, listed twice; p3 paid, then a
     * declined line. */
    static const struct {
        int p;
        const char *status;
    } lines[] = {{0, "FAILED"},  {0, "SUCCESS"}, {1, "SUCCESS"},
                 {1, "SUCCESS"}, {2, "SUCCESS"}, {2, "FAILED"}};
    int off = snprintf(csv, sizeof csv, "%s",
                       "channel_ref,paycore_ref,type,amount,currency,fee,status,time\n");
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        long amount = 1700 + lines[i].p;
        int paid = !strcmp(lines[i].status, "SUCCESS");
        off += snprintf(csv + off, sizeof csv - (size_t)off,
                        "%s,%s,PAY,%ld,CNY,%ld,%s,%sT%02d:00:00Z\n", cr[lines[i].p], pn[lines[i].p],
                        amount, paid ? (amount * 150 + 5000) / 10000 : 0, lines[i].status, day[0],
                        8 + (int)i);
    }
    /* The same when the day is run again. */
    for (int again = 0; again < 2; again++) {
        json_t *run = upload_on("sim_otc", day[0], csv, 200);
        long long dups = (long long)json_integer_value(json_object_get(run, "duplicate_lines"));
        json_t *d = diffs_of(run_id_of(run), NULL);
        json_decref(run);
        if (dups != 1 || !find_diff(d, "DUPLICATE_LINE", "line", "channel_ref", cr[1]) ||
            json_array_size(d) != 1) {
            char *all = json_dumps(d, 0);
            fail_msg("declined and paid on %s (run %d), %lld duplicate lines: %s", day[0], again,
                     dups, all);
        }
        json_decref(d);
    }
    /* Day d + 1 lists p1 paid once more: d listed it, that is the
     * duplicate. */
    otc_lines(csv, 1, pn, cr, 1700, "SUCCESS", day[1]);
    json_t *run = upload_on("sim_otc", day[1], csv, 200);
    json_t *d1 = diffs_of(run_id_of(run), "OPEN");
    json_decref(run);
    if (!find_diff(d1, "DUPLICATE_LINE", "line", "channel_ref", cr[0]) ||
        json_array_size(d1) != 1) {
        char *all = json_dumps(d1, 0);
        fail_msg("p1 paid on %s and again on %s: %s", day[0], day[1], all);
    }
    json_decref(d1);
}

/* Ops adjust what a day's statement did not list paid (p1 missing from it,
 * p2 listed FAILED) after the next day's came without them; then the
 * channel re-issues that day's statement, corrected, with both paid. The
 * loss written off never happened: the day's run again reports each
 * adjusted difference as ADJUSTMENT_CONTRADICTED, once however often the
 * day is run, and resolving that with an adjustment books the money back.
 * Before, only a line matched to a record of another day (carried) was
 * checked against adjustments, and only adjustments of another day's run:
 * the corrected lines agreed with their records, nothing was found, and the
 * books kept the loss. p3's difference, dismissed without an adjustment,
 * moved no money: its listing says nothing. Days 50 and 49 back. */
static void test_an_adjustment_contradicted_by_its_days_reissued_statement_goes_to_ops(void **state)
{
    (void)state;
    char pn[3][64], cr[3][64], day[3][11], csv[2048];
    long long id[3];
    long long suspense0 = three_written_off(1600, 50, pn, cr, day, id);
    /* Day d's statement re-issued with all three paid: the same two
     * reports when the day is run again. */
    otc_lines(csv, 3, pn, cr, 1600, "SUCCESS", day[0]);
    long long seen[2];
    contradicted_twice(day[0], csv, pn, id, seen);
    booked_back(seen, suspense0, day[0], csv);
}

static void test_payctl_runs_lists_and_resolves(void **state)
{
    (void)state;
    sim("{\"channel_id\":\"sim_netbank\",\"statement_discrepancy\":{\"extra\":1}}");
    char env[256], out[600];
    snprintf(env, sizeof env,
             "PAYCORE_ADMIN_URL=http://127.0.0.1:%d PAYCORE_ADMIN_TOKEN=test-admin-token",
             g_stack.admin_port[1]);
    snprintf(out, sizeof out, "%s/payctl-recon.out", g_dir);
    assert_int_equal(pc_t_sh("%s %s/payctl recon run --channel sim_netbank --date %s > %s", env,
                             pc_t_binary_dir(), g_today, out),
                     0);
    assert_int_equal(pc_t_sh("grep -q '\"status\": \"DONE\"' %s", out), 0);
    assert_int_equal(pc_t_sh("%s %s/payctl recon diffs --status OPEN --channel sim_netbank > %s",
                             env, pc_t_binary_dir(), out),
                     0);
    assert_int_equal(pc_t_sh("grep -q MISSING_LOCAL %s", out), 0);
    long long id = pc_t_sql_int(&g_stack, "SELECT diff_id FROM recon_diffs WHERE channel_id = "
                                          "'sim_netbank' AND status = 'OPEN' AND kind = "
                                          "'MISSING_LOCAL'");
    assert_int_equal(pc_t_sh("%s %s/payctl recon resolve %lld --reason 'known test line' --adjust "
                             "> %s",
                             env, pc_t_binary_dir(), id, out),
                     0);
    assert_int_equal(pc_t_sh("grep -q RESOLVED %s", out), 0);
    /* Refusals are exit status 1. */
    assert_int_equal(pc_t_sh("%s %s/payctl recon resolve %lld --reason again > %s 2>&1", env,
                             pc_t_binary_dir(), id, out),
                     1);
    assert_int_equal(pc_t_sh("%s %s/payctl recon run --channel no_such --date %s > %s 2>&1", env,
                             pc_t_binary_dir(), g_today, out),
                     1);
    assert_true(pc_t_ledger_ok(&g_stack));
}

static void test_bad_requests_are_refused(void **state)
{
    (void)state;
    json_t *j = run_day("no_such_channel", g_today, 404);
    json_decref(j);
    j = run_day("sim_card", "2026-02-30", 400);
    json_decref(j);
    j = run_day("Bad-Id", g_today, 400);
    json_decref(j);
    pc_t_resp_t r = pc_t_admin(&g_stack, "GET", "/admin/recon/diffs?status=NOPE", NULL);
    assert_int_equal(r.status, 400);
    pc_t_resp_free(&r);
    r = pc_t_admin(&g_stack, "GET", "/admin/recon/runs/999999", NULL);
    assert_int_equal(r.status, 404);
    pc_t_resp_free(&r);
    r = pc_t_admin(&g_stack, "POST", "/admin/recon/diffs/999999/resolve", "{\"reason\":\"x\"}");
    assert_int_equal(r.status, 404);
    pc_t_resp_free(&r);
    r = pc_t_admin(&g_stack, "POST", "/admin/recon/diffs/1/resolve", "{\"adjust\":true}");
    assert_int_equal(r.status, 400);
    pc_t_resp_free(&r);
    /* Without the token: 401. */
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/admin/recon/diffs", g_stack.admin_port[0]);
    r = pc_t_http("GET", url, NULL, NULL);
    assert_int_equal(r.status, 401);
    pc_t_resp_free(&r);
}

/* A day of a channel that was never reconciled (the nodes were down over
 * the job's hour, the channel was switched off that day) is run by the
 * daily job once an earlier day of that channel was: the job looked only at
 * yesterday, so such a day was never reconciled and nobody was told. */
static void test_daily_job_runs_days_never_reconciled(void **state)
{
    (void)state;
    free(pc_t_sql(&g_stack,
                  "INSERT INTO recon_runs (channel_id, business_date, status, source, "
                  "finished_at) VALUES ('sim_va', (now() AT TIME ZONE 'UTC')::date - 5, 'DONE', "
                  "'UPLOAD', now()) RETURNING run_id"));
    assert_true(pc_t_sql_wait(&g_stack, "3", 20,
                              "SELECT count(*) FROM recon_runs WHERE channel_id = 'sim_va' AND "
                              "status = 'DONE' AND requested_by = 'job' AND business_date "
                              "BETWEEN (now() AT TIME ZONE 'UTC')::date - 4 AND (now() AT TIME "
                              "ZONE 'UTC')::date - 2"));
    /* Nothing before the first day reconciled. */
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT count(*) FROM recon_runs WHERE channel_id = 'sim_va' "
                                  "AND business_date < (now() AT TIME ZONE 'UTC')::date - 5"),
                     0);
}

/* A channel switched off still has its days reconciled (payments in flight
 * whose callbacks were lost, refunds of its payments still move money
 * there): before, the job skipped it, and a day not caught up within the
 * week after it came back on was never reconciled. */
static void test_a_switched_off_channel_is_still_reconciled(void **state)
{
    (void)state;
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", "/admin/channels/sim_wallet/disable",
                               "{\"reason\":\"recon test\"}");
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    free(pc_t_sql(&g_stack, "DELETE FROM recon_runs WHERE channel_id = 'sim_wallet' AND "
                            "business_date = (now() AT TIME ZONE 'UTC')::date - 1 RETURNING 1"));
    int ran = pc_t_sql_wait(&g_stack, "1", 20,
                            "SELECT count(*) FROM recon_runs WHERE channel_id = 'sim_wallet' AND "
                            "business_date = (now() AT TIME ZONE 'UTC')::date - 1 AND status = "
                            "'DONE' AND requested_by = 'job'");
    r = pc_t_admin(&g_stack, "POST", "/admin/channels/sim_wallet/enable",
                   "{\"reason\":\"recon test done\"}");
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    assert_true(ran);
}

/* A day reconciled before it was over (ops looked at it at noon) is run
 * again by the daily job once it is; a future day is refused. Before, the
 * noon run's DONE kept the job off the day for good, and a run of tomorrow
 * was DONE and empty: whatever happened after it was never reconciled. */
static void test_a_day_reconciled_before_it_ended_is_run_again(void **state)
{
    (void)state;
    free(pc_t_sql(&g_stack,
                  "INSERT INTO recon_runs AS r (channel_id, business_date, status, source, "
                  "requested_by, started_at, finished_at) VALUES ('sim_otc', (now() AT TIME ZONE "
                  "'UTC')::date - 1, 'DONE', 'UPLOAD', 'ops', ((now() AT TIME ZONE 'UTC')::date "
                  "- 1 + time '12:00') AT TIME ZONE 'UTC', ((now() AT TIME ZONE 'UTC')::date - 1 "
                  "+ time '12:00') AT TIME ZONE 'UTC') ON CONFLICT (channel_id, business_date) "
                  "DO UPDATE SET status = 'DONE', requested_by = 'ops', started_at = "
                  "EXCLUDED.started_at, finished_at = EXCLUDED.finished_at RETURNING run_id"));
    assert_true(pc_t_sql_wait(&g_stack, "1", 20,
                              "SELECT count(*) FROM recon_runs WHERE channel_id = 'sim_otc' AND "
                              "business_date = (now() AT TIME ZONE 'UTC')::date - 1 AND status = "
                              "'DONE' AND requested_by = 'job' AND started_at >= (now() AT TIME "
                              "ZONE 'UTC')::date::timestamp AT TIME ZONE 'UTC'"));
    /* The noon run was provisional (the day had not ended); the job's is not. */
    assert_int_equal(shown_provisional("sim_otc", "(now() AT TIME ZONE 'UTC')::date - 1"), 0);
    /* With recon.daily_at 00:00 (these nodes), a run of yesterday started
     * today at 00:00:30 is not provisional either. */
    insert_early_run_of_yesterday();
    assert_int_equal(shown_provisional("sim_gone", "(now() AT TIME ZONE 'UTC')::date - 1"), 0);
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", "/admin/recon/runs",
                               "{\"channel_id\":\"sim_otc\",\"date\":\"2999-01-01\"}");
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "\"field\":\"date\""));
    pc_t_resp_free(&r);
    assert_int_equal(pc_t_sql_int(&g_stack, "SELECT count(*) FROM recon_runs WHERE business_date "
                                            "> (now() AT TIME ZONE 'UTC')::date"),
                     0);
}

/* POSTs a run of channel for today, expecting 503 with want in the answer;
 * returns recon_runs' "status: error" of the day (caller frees). */
static char *failed_run_today(const char *channel, const char *want)
{
    char body[160];
    snprintf(body, sizeof body, "{\"channel_id\":\"%s\",\"date\":\"%s\"}", channel, g_today);
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", "/admin/recon/runs", body);
    if (r.status != 503)
        fprintf(stderr, "run: %ld %s\n", r.status, r.body);
    assert_int_equal(r.status, 503);
    assert_string_equal(pc_t_errcode(&r), "UNAVAILABLE");
    assert_non_null(strstr(r.body, want));
    /* Never the database's DETAIL (a row's values). */
    assert_null(strstr(r.body, "DETAIL"));
    assert_null(strstr(r.body, "row values"));
    pc_t_resp_free(&r);
    return pc_t_sql(&g_stack,
                    "SELECT status || ': ' || error FROM recon_runs WHERE channel_id = '%s' AND "
                    "business_date = '%s'",
                    channel, g_today);
}

/* A run the database refuses answers the error's first line, never its
 * DETAIL (a row's values) nor anything beyond: the answer and recon_runs.error
 * carried libpq's whole message. The log keeps it whole. */
static void test_a_failed_run_does_not_show_the_databases_detail(void **state)
{
    (void)state;
    free(pc_t_sql(&g_stack,
                  "CREATE FUNCTION pc_t_refuse_diff() RETURNS trigger LANGUAGE plpgsql AS $$ "
                  "BEGIN RAISE EXCEPTION 'refused by the test' USING DETAIL = 'Key (x)=(row "
                  "values)'; END $$"));
    free(pc_t_sql(&g_stack, "CREATE TRIGGER pc_t_refuse_diff BEFORE INSERT ON recon_diffs FOR "
                            "EACH ROW EXECUTE FUNCTION pc_t_refuse_diff()"));
    char *err = failed_run_today("sim_card", "refused by the test");
    free(pc_t_sql(&g_stack, "DROP TRIGGER pc_t_refuse_diff ON recon_diffs"));
    free(pc_t_sql(&g_stack, "DROP FUNCTION pc_t_refuse_diff()"));
    assert_null(strstr(err, "row values"));
    free(err);
    /* The day runs again once the cause is gone. */
    json_decref(run_day("sim_card", g_today, 200));
}

/* A day reconciled on the next day but before recon.daily_at (ops looked at
 * yesterday at 00:00:30, before the channel's statement was complete) is
 * run again by the daily job: before, any run started after midnight
 * counted, and what the statement lacked then was never reconciled. The
 * nodes run with a daily_at a minute ago for this test (the first two
 * minutes of a UTC day leave no such time: skipped then). */
static int g_one_node_daily_at; /* node 1 stopped, node 0 with another daily_at */

static void test_a_day_reconciled_before_daily_at_is_run_again(void **state)
{
    (void)state;
    int minute = (int)(time(NULL) % 86400 / 60);
    if (minute < 2)
        skip();
    char at[8];
    snprintf(at, sizeof at, "%02d:%02d", (minute - 1) / 60, (minute - 1) % 60);
    pc_stack_stop_node(&g_stack, 0, SIGTERM);
    pc_stack_stop_node(&g_stack, 1, SIGTERM);
    g_one_node_daily_at = 1;
    pc_stack_env(&g_stack, "PAYCORE_RECON_DAILY_AT", at);
    pc_stack_start_node(&g_stack, 0);
    free(pc_t_sql(&g_stack,
                  "INSERT INTO recon_runs AS r (channel_id, business_date, status, source, "
                  "requested_by, started_at, finished_at) VALUES ('sim_otc', (now() AT TIME ZONE "
                  "'UTC')::date - 1, 'DONE', 'UPLOAD', 'ops', ((now() AT TIME ZONE 'UTC')::date "
                  "+ time '00:00:30') AT TIME ZONE 'UTC', ((now() AT TIME ZONE 'UTC')::date + "
                  "time '00:00:40') AT TIME ZONE 'UTC') ON CONFLICT (channel_id, business_date) "
                  "DO UPDATE SET status = 'DONE', requested_by = 'ops', started_at = "
                  "EXCLUDED.started_at, finished_at = EXCLUDED.finished_at RETURNING run_id"));
    assert_true(pc_t_sql_wait(&g_stack, "1", 20,
                              "SELECT count(*) FROM recon_runs WHERE channel_id = 'sim_otc' AND "
                              "business_date = (now() AT TIME ZONE 'UTC')::date - 1 AND status = "
                              "'DONE' AND requested_by = 'job' AND started_at >= ((now() AT TIME "
                              "ZONE 'UTC')::date + time '%s') AT TIME ZONE 'UTC'",
                              at));
    /* Run once: the job's own run (after daily_at) stands, over several of
     * its polls (300 ms). */
    static const char attempts[] = "SELECT attempts FROM recon_runs WHERE channel_id = 'sim_otc' "
                                   "AND business_date = (now() AT TIME ZONE 'UTC')::date - 1";
    int64_t before = pc_t_sql_int(&g_stack, attempts);
    sleep(2);
    assert_int_equal(pc_t_sql_int(&g_stack, attempts), before);
    /* Its API says which runs the job will make again: by this node's
     * daily_at, the run made at 00:00:30 is provisional; the job's is not. */
    insert_early_run_of_yesterday();
    assert_int_equal(shown_provisional("sim_gone", "(now() AT TIME ZONE 'UTC')::date - 1"), 1);
    assert_int_equal(shown_provisional("sim_otc", "(now() AT TIME ZONE 'UTC')::date - 1"), 0);
}

/* After the test above, pass or fail: both nodes back, daily_at 00:00. */
static int restore_nodes(void **state)
{
    (void)state;
    if (!g_one_node_daily_at)
        return 0;
    g_one_node_daily_at = 0;
    pc_stack_stop_node(&g_stack, 0, SIGTERM);
    pc_stack_env(&g_stack, "PAYCORE_RECON_DAILY_AT", "00:00");
    pc_stack_start_node(&g_stack, 0);
    pc_stack_start_node(&g_stack, 1);
    return 0;
}

/* A day nobody reconciled: with the daily job off on every node (here node
 * 0 alone, recon.daily false) a channel reconciled before has no run of
 * yesterday, and nothing said so. RECON_NOT_RUN names it until a run of
 * the day exists. */
static int g_job_off;

static void test_a_day_nobody_reconciled_raises_an_alert(void **state)
{
    (void)state;
    pc_stack_stop_node(&g_stack, 0, SIGTERM);
    pc_stack_stop_node(&g_stack, 1, SIGTERM);
    g_job_off = 1;
    pc_stack_env(&g_stack, "PAYCORE_RECON_DAILY", "false");
    pc_stack_env(&g_stack, "PAYCORE_ALERTS_RECON_AFTER_MIN", "0");
    /* sim_wallet was reconciled (by the job, earlier tests): its run of
     * yesterday is made another channel's, as if the job had not run; a
     * run of an earlier day makes sim_wallet a channel reconciled before.
     * (Moving the run to an earlier day instead would leave days after it
     * never reconciled, which the job, back on, would then run.) */
    free(pc_t_sql(&g_stack, "INSERT INTO recon_runs (channel_id, business_date, status, source, "
                            "requested_by, started_at, finished_at) VALUES ('sim_wallet', (now() "
                            "AT TIME ZONE 'UTC')::date - 2, 'DONE', 'UPLOAD', 'ops', now(), now()) "
                            "ON CONFLICT DO NOTHING"));
    assert_int_equal(
        pc_t_sql_int(&g_stack, "WITH m AS (UPDATE recon_runs SET channel_id = 'sim_wallet_gone', "
                               "status = 'DONE', finished_at = coalesce(finished_at, now()) WHERE "
                               "channel_id = 'sim_wallet' AND "
                               "business_date = (now() AT TIME ZONE 'UTC')::date - 1 RETURNING "
                               "1) SELECT count(*) FROM m"),
        1);
    pc_stack_start_node(&g_stack, 0);
    assert_true(pc_t_alert_wait(&g_stack, "RECON_NOT_RUN", "recon", 1, 15));
    char *m = pc_t_alert_message(&g_stack, "RECON_NOT_RUN", "recon");
    if (!m || !strstr(m, "sim_wallet") || strstr(m, "sim_card"))
        fail_msg("RECON_NOT_RUN should name sim_wallet alone: %s", m ? m : "(none)");
    free(m);
    /* Ops run the day by hand: the alert resolves. */
    char *yday = pc_t_sql(&g_stack, "SELECT ((now() AT TIME ZONE 'UTC')::date - 1)::text");
    json_decref(run_day("sim_wallet", yday, 200));
    free(yday);
    assert_true(pc_t_alert_wait(&g_stack, "RECON_NOT_RUN", "recon", 0, 15));
}

static int restore_job(void **state)
{
    (void)state;
    if (!g_job_off)
        return 0;
    g_job_off = 0;
    pc_stack_stop_node(&g_stack, 0, SIGTERM);
    pc_stack_env(&g_stack, "PAYCORE_RECON_DAILY", "true");
    pc_stack_env(&g_stack, "PAYCORE_ALERTS_RECON_AFTER_MIN", "120");
    pc_stack_start_node(&g_stack, 0);
    pc_stack_start_node(&g_stack, 1);
    return 0;
}

/* Last: paysim goes away. */
static void test_statement_that_cannot_be_fetched_fails_the_run(void **state)
{
    (void)state;
    kill(g_stack.paysim_pid, SIGTERM);
    waitpid(g_stack.paysim_pid, NULL, 0);
    g_stack.paysim_pid = 0;
    char *st = failed_run_today("sim_card2", "could not be fetched");
    assert_non_null(strstr(st, "FAILED: the channel's statement could not be fetched"));
    free(st);
    /* Today's day failed once: the daily job will try it again, no alert. */
    usleep(1000000);
    assert_false(pc_t_alert_active(&g_stack, "RECON_FAILED", "recon"));
    /* A day before yesterday that fails is retried by nobody: ops are told.
     * Before, such a day was left FAILED and nothing said so. */
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", "/admin/recon/runs",
                               "{\"channel_id\":\"sim_card2\",\"date\":\"2026-01-02\"}");
    assert_int_equal(r.status, 503);
    pc_t_resp_free(&r);
    assert_true(pc_t_alert_wait(&g_stack, "RECON_FAILED", "recon", 1, 10));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_daily_job_runs_yesterday_once_per_channel_on_two_nodes,
                               refresh_today),
        cmocka_unit_test_setup(test_daily_job_runs_days_never_reconciled, refresh_today),
        cmocka_unit_test_setup(test_a_switched_off_channel_is_still_reconciled, refresh_today),
        cmocka_unit_test_setup(test_a_day_reconciled_before_it_ended_is_run_again, refresh_today),
        cmocka_unit_test_setup_teardown(test_a_day_reconciled_before_daily_at_is_run_again,
                                        refresh_today, restore_nodes),
        cmocka_unit_test(
            test_each_faked_statement_discrepancy_is_found_and_a_rerun_changes_nothing),
        cmocka_unit_test_setup(test_a_failed_run_does_not_show_the_databases_detail, refresh_today),
        cmocka_unit_test_setup(test_lost_callback_is_repaired_from_the_statement_once,
                               refresh_today),
        cmocka_unit_test_setup(test_uploaded_statement_is_matched_kind_by_kind, refresh_today),
        cmocka_unit_test_setup(test_a_payout_and_its_return_are_two_differences, refresh_today),
        cmocka_unit_test_setup(test_a_return_of_a_payout_in_flight_cannot_be_adjusted,
                               refresh_today),
        cmocka_unit_test_setup(test_a_payout_fee_other_than_the_channel_said_is_a_difference,
                               refresh_today),
        cmocka_unit_test_setup(test_fee_is_checked_with_the_currency_figures, refresh_today),
        cmocka_unit_test_setup(test_resolving_with_an_adjustment_posts_through_suspense,
                               refresh_today),
        cmocka_unit_test_setup(test_adjustment_refused_when_the_record_moved_since_the_run,
                               refresh_today),
        cmocka_unit_test_setup(test_late_success_after_an_adjustment_goes_to_ops, refresh_today),
        cmocka_unit_test_setup(test_an_adjustment_contradicted_by_a_later_statement_goes_to_ops,
                               refresh_today),
        cmocka_unit_test_setup(test_payctl_runs_lists_and_resolves, refresh_today),
        cmocka_unit_test_setup(test_bad_requests_are_refused, refresh_today),
        /* After the ones that read suspense whole: its adjustment moves it. */
        cmocka_unit_test_setup(test_a_duplicate_line_adjusted_is_not_found_again_in_a_reissued_file,
                               refresh_today),
        cmocka_unit_test_setup(test_a_missing_success_is_adjusted_only_after_the_next_day,
                               refresh_today),
        cmocka_unit_test_setup(
            test_an_adjustment_contradicted_by_its_days_reissued_statement_goes_to_ops,
            refresh_today),
        cmocka_unit_test_setup(test_a_payment_declined_one_day_and_paid_the_next_is_no_duplicate,
                               refresh_today),
        cmocka_unit_test_setup(test_a_payment_declined_and_paid_the_same_day_is_no_duplicate,
                               refresh_today),
        cmocka_unit_test_setup(test_a_fee_change_does_not_reprice_payments_made_before_it,
                               refresh_today),
        cmocka_unit_test_setup(
            test_a_payment_carried_to_the_day_before_and_listed_again_is_a_duplicate,
            refresh_today),
        cmocka_unit_test_setup(test_a_line_without_a_record_on_two_days_statements_is_a_duplicate,
                               refresh_today),
        cmocka_unit_test_setup(
            test_a_payment_listed_with_a_difference_and_again_next_day_is_a_duplicate,
            refresh_today),
        cmocka_unit_test_setup(test_a_payment_listed_on_two_days_statements_is_a_duplicate,
                               refresh_today),
        cmocka_unit_test_setup_teardown(test_a_day_nobody_reconciled_raises_an_alert, refresh_today,
                                        restore_job),
        cmocka_unit_test_setup(test_statement_that_cannot_be_fetched_fails_the_run, refresh_today),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
