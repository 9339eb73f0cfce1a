/* Settlement end to end: a day with fees and a chargeback hold, run twice
 * (the second run changes nothing), the T+N cut-off, an owed chargeback
 * shortfall recovered by the next statement, payctl, and the daily job on
 * more than one node; the ledger check after each. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "harness.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
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
    pc_stack_init(&g_stack, "settlement");
    pc_stack_env(&g_stack, "PAYCORE_SETTLEMENT_AUTO", "false");
    pc_stack_start_paysim(&g_stack);
    pc_stack_start_node(&g_stack, 0);
    return refresh_today(state);
}

static int teardown(void **state)
{
    (void)state;
    pc_stack_stop(&g_stack);
    return 0;
}

static pc_t_merchant_t new_merchant(int cycle_days, int fee_bp)
{
    char extra[96];
    snprintf(extra, sizeof extra, "\"settle_cycle_days\":%d,\"fee_rate_bp\":%d", cycle_days,
             fee_bp);
    return pc_t_create_merchant(&g_stack, extra);
}

static void new_trade(const pc_t_merchant_t *m, long amount, const char *buyer, char *tn)
{
    char body[512], key[64];
    g_seq++;
    snprintf(body, sizeof body,
             "{\"out_trade_no\":\"ST%d-%d\",\"product\":\"INSTANT\",\"amount\":%ld,\"currency\":"
             "\"CNY\",\"subject\":\"Goods\"%s%s%s}",
             g_seq, (int)getpid(), amount, buyer ? ",\"buyer_id\":\"" : "", buyer ? buyer : "",
             buyer ? "\"" : "");
    snprintf(key, sizeof key, "trade-%d", g_seq);
    pc_t_resp_t r = pc_t_call(&g_stack, m, "POST", "/v1/trades", body, key);
    assert_int_equal(r.status, 201);
    snprintf(tn, 40, "%s", pc_t_jstr(&r, "trade_no"));
    pc_t_resp_free(&r);
}

/* A trade of m paid through the channel without the cashier (the engine's
 * "trade paid" operation). */
static void paid_trade(const pc_t_merchant_t *m, long amount, char *tn)
{
    new_trade(m, amount, NULL, tn);
    char pno[48], st[20];
    snprintf(pno, sizeof pno, "PSET%d-%d", (int)getpid(), ++g_seq);
    assert_int_equal(
        pc_t_mark_paid(&g_stack, tn, pno, amount, "CNY", "channel:sim_card:clearing:CNY", st), 0);
    assert_string_equal(st, "TRADE_SUCCESS");
}

/* A trade paid by card at paysim (so it has a channel transaction id). */
static void card_trade(const pc_t_merchant_t *m, long amount, char *tn, char *txn)
{
    char buyer[32], b[96];
    snprintf(buyer, sizeof buyer, "stb_%d_%d", (int)getpid(), ++g_seq);
    snprintf(b, sizeof b, "{\"buyer_id\":\"%s\"}", buyer);
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", "/admin/buyers", b);
    assert_int_equal(r.status, 201);
    pc_t_resp_free(&r);
    new_trade(m, amount, buyer, tn);
    char body[1024], key[64];
    g_seq++;
    snprintf(body, sizeof body,
             "{\"trade_no\":\"%s\",\"buyer_id\":\"%s\",\"method_id\":\"CARD\",\"client\":{\"ip\":"
             "\"10.3.0.%d\",\"device_id\":\"stdev-%d\",\"platform\":\"WEB\"},\"card\":{\"pan\":"
             "\"%s\",\"exp_month\":12,\"exp_year\":2030,\"cvv\":\"123\"}}",
             tn, buyer, g_seq % 200, g_seq, pc_t_fresh_pan());
    snprintf(key, sizeof key, "pay-%d", g_seq);
    r = pc_t_call(&g_stack, m, "POST", "/v1/cashier/pay", body, key);
    assert_int_equal(r.status, 200);
    assert_string_equal(pc_t_jstr(&r, "status"), "SUCCESS");
    pc_t_resp_free(&r);
    char *t = pc_t_sql(&g_stack,
                       "SELECT channel_txn_id FROM payments WHERE trade_no = '%s' AND status = "
                       "'SUCCESS'",
                       tn);
    snprintf(txn, 80, "%s", t);
    free(t);
}

static long long mbal(const pc_t_merchant_t *m, const char *kind)
{
    return pc_t_sql_int(&g_stack, "SELECT coalesce(ledger_balance('merchant:%s:%s:CNY'), 0)", m->id,
                        kind);
}

static long long fee_income(void)
{
    return pc_t_sql_int(&g_stack, "SELECT coalesce(ledger_balance('platform:fee_income:CNY'), 0)");
}

static json_t *run_day(const char *date, long want_status)
{
    char body[64];
    snprintf(body, sizeof body, "{\"date\":\"%s\"}", date);
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", "/admin/settlements/run", body);
    assert_int_equal(r.status, want_status);
    json_t *j = pc_t_json(&r);
    pc_t_resp_free(&r);
    return j;
}

/* The statement of m for date (GET /admin/settlements), or NULL. Caller decrefs. */
static json_t *statement(const pc_t_merchant_t *m, const char *date)
{
    char path[256];
    snprintf(path, sizeof path, "/admin/settlements?merchant_id=%s&date=%s", m->id, date);
    pc_t_resp_t r = pc_t_admin(&g_stack, "GET", path, NULL);
    assert_int_equal(r.status, 200);
    json_t *j = pc_t_json(&r);
    pc_t_resp_free(&r);
    json_t *list = json_object_get(j, "settlements");
    json_t *s = json_array_size(list) == 1 ? json_incref(json_array_get(list, 0)) : NULL;
    assert_true(json_array_size(list) <= 1);
    json_decref(j);
    return s;
}

static long long num(json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

static void test_day_with_fees_and_chargeback_hold_run_twice(void **state)
{
    (void)state;
    /* Named "receivable": each of its account ids has that word (its
     * reserve is merchant:receivable:reserve:CNY). Before, the statement
     * told its accounts apart by parts of the id, read the reserve as the
     * receivable and released 5000 of it to available every day. */
    pc_t_merchant_t m = pc_t_create_merchant(
        &g_stack, "\"merchant_id\":\"receivable\",\"settle_cycle_days\":0,\"fee_rate_bp\":60");
    char t1[40], t2[40], t3[40], t4[40], txn[80];
    paid_trade(&m, 10000, t1);
    paid_trade(&m, 20000, t2);
    paid_trade(&m, 1999, t3);
    card_trade(&m, 5000, t4, txn);
    /* A chargeback freezes the card payment's 5000 out of pending. */
    char body[256];
    snprintf(body, sizeof body,
             "{\"reference\":\"ST-HOLD-%d\",\"channel_id\":\"sim_card\",\"channel_txn_id\":\"%s\","
             "\"amount\":5000,\"currency\":\"CNY\"}",
             (int)getpid(), txn);
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", "/admin/chargebacks", body);
    assert_int_equal(r.status, 201);
    pc_t_resp_free(&r);
    assert_int_equal(mbal(&m, "pending"), 31999);
    assert_int_equal(mbal(&m, "reserve"), 5000);
    long long fee0 = fee_income();

    json_t *j = run_day(g_today, 200);
    assert_true(num(j, "statements_created") >= 1);
    assert_int_equal(num(j, "failed"), 0);
    json_decref(j);
    json_t *s = statement(&m, g_today);
    assert_non_null(s);
    /* Due: the four payments (36999); fee 0.6 % of it = 221.994 → 222 (half up). */
    assert_int_equal(num(s, "item_count"), 4);
    assert_int_equal(num(s, "gross_amount"), 36999);
    assert_int_equal(num(s, "sales_amount"), 36999);
    assert_int_equal(num(s, "fee_amount"), 222);
    /* The hold already took 5000 of pending: 31999 moves, net of the fee. */
    assert_int_equal(num(s, "moved_amount"), 31999);
    assert_int_equal(num(s, "shortfall_amount"), 5000);
    assert_int_equal(num(s, "net_amount"), 31777);
    assert_int_equal(num(s, "reserve_held"), 5000);
    assert_int_equal(num(s, "cycle_days"), 0);
    char statement_no[40];
    snprintf(statement_no, sizeof statement_no, "%s",
             json_string_value(json_object_get(s, "statement_no")));
    json_decref(s);
    assert_int_equal(mbal(&m, "pending"), 0);
    assert_int_equal(mbal(&m, "available"), 31777);
    assert_int_equal(mbal(&m, "reserve"), 5000);
    assert_int_equal(fee_income() - fee0, 222);
    /* Each payment is on the statement once, with its trade. */
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT count(DISTINCT trade_no) FROM settlement_items WHERE "
                                  "statement_no = '%s' AND trade_no IN ('%s', '%s', '%s', '%s')",
                                  statement_no, t1, t2, t3, t4),
                     4);
    char path[128];
    snprintf(path, sizeof path, "/admin/settlements/%s", statement_no);
    r = pc_t_admin(&g_stack, "GET", path, NULL);
    assert_int_equal(r.status, 200);
    j = pc_t_json(&r);
    assert_int_equal(json_array_size(json_object_get(j, "items")), 4);
    assert_true(json_is_null(json_object_get(j, "items_next_after")));
    json_decref(j);
    pc_t_resp_free(&r);
    /* Page by page: 3, then the 1 after them (before: every item in one
     * answer, which a large merchant's day made too long to open). */
    char page[200];
    snprintf(page, sizeof page, "%s?limit=3", path);
    r = pc_t_admin(&g_stack, "GET", page, NULL);
    assert_int_equal(r.status, 200);
    j = pc_t_json(&r);
    assert_int_equal(json_array_size(json_object_get(j, "items")), 3);
    const char *next = json_string_value(json_object_get(j, "items_next_after"));
    assert_non_null(next);
    snprintf(page, sizeof page, "%s?limit=3&after=%s", path, next);
    json_decref(j);
    pc_t_resp_free(&r);
    r = pc_t_admin(&g_stack, "GET", page, NULL);
    j = pc_t_json(&r);
    assert_int_equal(json_array_size(json_object_get(j, "items")), 1);
    assert_true(json_is_null(json_object_get(j, "items_next_after")));
    json_decref(j);
    pc_t_resp_free(&r);
    snprintf(page, sizeof page, "%s?limit=0", path);
    r = pc_t_admin(&g_stack, "GET", page, NULL);
    assert_int_equal(r.status, 400);
    pc_t_resp_free(&r);

    /* The same day again: nothing changes. */
    long long txns = pc_t_sql_int(&g_stack, "SELECT count(*) FROM ledger_txns");
    long long items = pc_t_sql_int(&g_stack, "SELECT count(*) FROM settlement_items");
    j = run_day(g_today, 200);
    assert_int_equal(num(j, "statements_created"), 0);
    assert_int_equal(num(j, "failed"), 0);
    json_decref(j);
    assert_int_equal(pc_t_sql_int(&g_stack, "SELECT count(*) FROM ledger_txns"), txns);
    assert_int_equal(pc_t_sql_int(&g_stack, "SELECT count(*) FROM settlement_items"), items);
    assert_int_equal(
        pc_t_sql_int(&g_stack, "SELECT count(*) FROM settlements WHERE merchant_id = '%s'", m.id),
        1);
    assert_int_equal(mbal(&m, "available"), 31777);
    assert_int_equal(fee_income() - fee0, 222);
    /* payctl runs it too, and it still changes nothing. */
    assert_int_equal(pc_t_sh("PAYCORE_ADMIN_URL=http://127.0.0.1:%d PAYCORE_ADMIN_TOKEN=%s "
                             "%s/payctl settlement run %s >/dev/null",
                             g_stack.admin_port[0], "test-admin-token", pc_t_binary_dir(), g_today),
                     0);
    assert_int_equal(pc_t_sql_int(&g_stack, "SELECT count(*) FROM ledger_txns"), txns);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* A statement reads the postings of its merchant's pending account made
 * since the previous statements took theirs, not the whole history: a
 * large merchant's statement read millions of postings, ran past the pool's
 * deadline and failed every day, its money never becoming available. Here
 * the history is 20,000 postings of a month ago that net to nothing; the
 * merchant's statement of yesterday reads them once (it has no earlier
 * one), today's only what came after. The merchant settles T+0: its cut-off
 * is tomorrow 00:00, still ahead while its statement runs. */
static void test_a_statement_does_not_read_the_merchants_whole_history(void **state)
{
    (void)state;
    pc_t_merchant_t m = new_merchant(0, 0);
    char tn[40], yesterday[11];
    free(pc_t_sql(&g_stack,
                  "INSERT INTO ledger_accounts (account_id, type, owner_id, currency, "
                  "allow_negative) VALUES ('merchant:%s:pending:CNY', 'MERCHANT_PENDING', '%s', "
                  "'CNY', false) RETURNING NULL",
                  m.id, m.id));
    free(pc_t_sql(&g_stack,
                  "WITH t AS (INSERT INTO ledger_txns (kind, ref_type, ref_id, created_at) SELECT "
                  "'TEST_HISTORY', 'test', 'hist-%s-' || g, now() - interval '30 days' FROM "
                  "generate_series(1, 20000) g RETURNING txn_id, created_at) INSERT INTO "
                  "ledger_entries (txn_id, leg, account_id, amount, currency, created_at) SELECT "
                  "txn_id, l, 'merchant:%s:pending:CNY', CASE l WHEN 1 THEN -1 ELSE 1 END, 'CNY', "
                  "created_at FROM t, generate_series(1, 2) l RETURNING NULL",
                  m.id, m.id));
    free(pc_t_sql(&g_stack, "ANALYZE ledger_entries"));
    paid_trade(&m, 1000, tn);
    char *y = pc_t_sql(&g_stack, "SELECT (DATE '%s' - 1)::text", g_today);
    snprintf(yesterday, sizeof yesterday, "%s", y);
    free(y);
    /* Rows of ledger_entries read, by any plan (whole-table or by index). A
     * backend reports its counts up to 10 s after a statement when it goes
     * idle: each figure below waits for them. */
    const char *reads = "SELECT seq_tup_read + coalesce(idx_tup_fetch, 0) FROM "
                        "pg_stat_user_tables WHERE relname = 'ledger_entries'";
    long long base = pc_t_sql_int(&g_stack, "%s", reads);
    json_decref(run_day(yesterday, 200));
    /* Yesterday's statement, the merchant's first, reads the history once. */
    for (int i = 0; i < 60 && pc_t_sql_int(&g_stack, "%s", reads) - base < 40000; i++)
        usleep(250000);
    assert_true(pc_t_sql_int(&g_stack, "%s", reads) - base >= 40000);
    /* The payment of today is not yesterday's; it is today's, with one more. */
    char tn2[40];
    paid_trade(&m, 500, tn2);
    sleep(11);
    long long before = pc_t_sql_int(&g_stack, "%s", reads);
    json_decref(run_day(g_today, 200));
    sleep(11);
    long long read = pc_t_sql_int(&g_stack, "%s", reads) - before;
    printf("postings read by a day's statements: %lld\n", read);
    json_t *st = statement(&m, g_today);
    assert_non_null(st);
    assert_int_equal(num(st, "item_count"), 2);
    json_decref(st);
    assert_int_equal(mbal(&m, "available"), 1500);
    assert_int_equal(mbal(&m, "pending"), 0);
    assert_true(read < 20000);
    assert_true(pc_t_ledger_ok(&g_stack));
}

static void test_cycle_days_decide_what_is_due(void **state)
{
    (void)state;
    /* T+1: today's money is not due on today's statement. */
    pc_t_merchant_t m = new_merchant(1, 60);
    char tn[40];
    paid_trade(&m, 8000, tn);
    json_t *j = run_day(g_today, 200);
    json_decref(j);
    json_t *s = statement(&m, g_today);
    assert_non_null(s);
    assert_int_equal(num(s, "item_count"), 0);
    assert_int_equal(num(s, "net_amount"), 0);
    /* The cut-off is 00:00 UTC of today (money of yesterday and before). */
    char want[32];
    snprintf(want, sizeof want, "%sT00:00:00Z", g_today);
    assert_string_equal(json_string_value(json_object_get(s, "cutoff")), want);
    json_decref(s);
    assert_int_equal(mbal(&m, "pending"), 8000);
    assert_int_equal(mbal(&m, "available"), 0);
    /* Bad and future dates are refused. */
    j = run_day("2026-02-30", 400);
    json_decref(j);
    j = run_day("2999-01-01", 400);
    json_decref(j);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* Money that is due, refunded from pending, while money that is not due
 * yet sits in pending too: what is not due stays. Before, the statement
 * moved min(due, pending) and paid out the newer money a day early. */
static void test_refund_of_due_money_does_not_release_money_not_due(void **state)
{
    (void)state;
    pc_t_merchant_t m = new_merchant(1, 60);
    char ta[40], txn[80], tb[40];
    card_trade(&m, 8000, ta, txn);
    /* A was paid two days ago (its entries dated so): due today on T+1. */
    free(pc_t_sql(&g_stack,
                  "BEGIN; SET LOCAL session_replication_role = replica; UPDATE ledger_entries e "
                  "SET created_at = e.created_at - interval '2 days' FROM ledger_txns t WHERE "
                  "t.txn_id = e.txn_id AND t.kind = 'TRADE_PAY' AND t.memo = '%s'; COMMIT",
                  ta));
    paid_trade(&m, 5000, tb); /* today's: not due */
    /* A refunded in full today, from pending. */
    char body[256], key[64];
    snprintf(body, sizeof body,
             "{\"trade_no\":\"%s\",\"out_refund_no\":\"RD-%s\",\"amount\":8000,\"reason\":"
             "\"returned\"}",
             ta, ta);
    snprintf(key, sizeof key, "refund-%s", ta);
    pc_t_resp_t r = pc_t_call(&g_stack, &m, "POST", "/v1/refunds", body, key);
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    assert_true(pc_t_sql_wait(&g_stack, "5000", 10,
                              "SELECT ledger_balance('merchant:%s:pending:CNY')", m.id));
    json_t *j = run_day(g_today, 200);
    json_decref(j);
    json_t *st = statement(&m, g_today);
    assert_non_null(st);
    assert_int_equal(num(st, "gross_amount"), 8000);
    assert_int_equal(num(st, "moved_amount"), 0);
    assert_int_equal(num(st, "shortfall_amount"), 8000);
    json_decref(st);
    assert_int_equal(mbal(&m, "available"), 0);
    assert_int_equal(mbal(&m, "pending"), 5000);
    assert_true(pc_t_ledger_ok(&g_stack));
}

static void test_owed_chargeback_shortfall_is_taken_from_the_next_settlement(void **state)
{
    (void)state;
    pc_t_merchant_t m = new_merchant(0, 60);
    char tn[40], txn[80], t2[40];
    card_trade(&m, 1000, tn, txn);
    json_t *j = run_day(g_today, 200);
    json_decref(j);
    assert_int_equal(mbal(&m, "available"), 994);
    /* The test's day boundary: today's statement becomes yesterday's, so the
     * next run is "the next settlement" (what a new day does in production). */
    free(pc_t_sql(&g_stack,
                  "UPDATE settlements SET settle_date = settle_date - 1 WHERE merchant_id = '%s' "
                  "RETURNING 1",
                  m.id));
    /* A chargeback of 1000: 994 from available, 6 owed. */
    char body[256];
    snprintf(body, sizeof body,
             "{\"reference\":\"ST-OWED-%d\",\"channel_id\":\"sim_card\",\"channel_txn_id\":\"%s\","
             "\"amount\":1000,\"currency\":\"CNY\"}",
             (int)getpid(), txn);
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", "/admin/chargebacks", body);
    assert_int_equal(r.status, 201);
    pc_t_resp_free(&r);
    assert_int_equal(mbal(&m, "available"), 0);
    assert_int_equal(mbal(&m, "receivable"), -6);
    /* New sales; the next statement recovers the 6. */
    paid_trade(&m, 5000, t2);
    j = run_day(g_today, 200);
    json_decref(j);
    json_t *s = statement(&m, g_today);
    assert_non_null(s);
    assert_int_equal(num(s, "gross_amount"), 5000);
    assert_int_equal(num(s, "fee_amount"), 30);
    assert_int_equal(num(s, "owed_before"), 6);
    assert_int_equal(num(s, "owed_recovered"), 6);
    assert_int_equal(num(s, "net_amount"), 4964);
    json_decref(s);
    assert_int_equal(mbal(&m, "receivable"), 0);
    assert_int_equal(mbal(&m, "available"), 4964);
    assert_int_equal(mbal(&m, "pending"), 0);
    assert_true(pc_t_ledger_ok(&g_stack));
}

static void *run_today(void *arg)
{
    (void)arg;
    json_decref(run_day(g_today, 200));
    return NULL;
}

/* A credit that reaches the merchant's pending account while a statement is
 * being made is either on it, money moved, or left for the next one; never
 * taken as an item without its money. Here the statement is held (by a lock
 * on its items table) after it locked the accounts and before it takes its
 * items, and a payment credits the merchant meanwhile. The balances used to
 * be read before the items: the statement then took both payments as items
 * but moved only the first, booked the second as a shortfall, and left its
 * money in pending for good. */
static void test_credit_during_a_statement_is_not_lost(void **state)
{
    (void)state;
    pc_t_merchant_t m = new_merchant(0, 0);
    char tn[40];
    paid_trade(&m, 1000, tn);
    PGconn *hold = PQconnectdb(g_stack.db_url);
    assert_int_equal(PQstatus(hold), CONNECTION_OK);
    PGresult *res = PQexec(hold, "BEGIN; LOCK TABLE settlement_items IN EXCLUSIVE MODE");
    assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    pthread_t run;
    assert_int_equal(pthread_create(&run, NULL, run_today, NULL), 0);
    /* The statement waits for the items table once it has the accounts. */
    long long waiting = 0;
    for (int i = 0; i < 200 && !waiting; i++) {
        usleep(20000);
        waiting = pc_t_sql_int(&g_stack,
                               "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = "
                               "l.relation WHERE c.relname = 'settlement_items' AND NOT l.granted");
    }
    assert_true(waiting > 0);
    paid_trade(&m, 500, tn);
    res = PQexec(hold, "COMMIT");
    PQclear(res);
    PQfinish(hold);
    pthread_join(run, NULL);

    json_t *s = statement(&m, g_today);
    assert_non_null(s);
    assert_int_equal(num(s, "gross_amount"), 1500);
    assert_int_equal(num(s, "moved_amount"), 1500);
    assert_int_equal(num(s, "shortfall_amount"), 0);
    json_decref(s);
    assert_int_equal(mbal(&m, "pending"), 0);
    assert_int_equal(mbal(&m, "available"), 1500);
    assert_true(pc_t_ledger_ok(&g_stack));
}

static void test_daily_job_settles_once_on_any_node(void **state)
{
    (void)state;
    pc_t_merchant_t m = new_merchant(0, 100);
    char tn[40];
    paid_trade(&m, 12345, tn);
    /* Two more nodes with the job on (from hour 0, checking often). */
    pc_stack_env(&g_stack, "PAYCORE_SETTLEMENT_AUTO", "true");
    pc_stack_env(&g_stack, "PAYCORE_SETTLEMENT_HOUR_UTC", "0");
    pc_stack_env(&g_stack, "PAYCORE_SETTLEMENT_POLL_MS", "100");
    pc_stack_start_node(&g_stack, 1);
    pc_stack_start_node(&g_stack, 2);
    long long n = 0;
    for (int i = 0; i < 100 && n == 0; i++) {
        n = pc_t_sql_int(&g_stack,
                         "SELECT count(*) FROM settlements WHERE merchant_id = '%s' AND "
                         "settle_date = '%s'",
                         m.id, g_today);
        if (!n)
            usleep(100000);
    }
    assert_int_equal(n, 1);
    usleep(500000);
    assert_int_equal(
        pc_t_sql_int(&g_stack, "SELECT count(*) FROM settlements WHERE merchant_id = '%s'", m.id),
        1);
    /* 1 % of 12345 = 123.45 → 123. */
    assert_int_equal(mbal(&m, "available"), 12345 - 123);
    pc_stack_stop_node(&g_stack, 1, SIGTERM);
    pc_stack_stop_node(&g_stack, 2, SIGTERM);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* A statement the job cannot write run after run (here a trigger refuses
 * the merchant's, as a database error would) pages ops: SETTLEMENT_FAILING,
 * naming the merchant, until a run settles the day. Before, only a log line
 * said so, and the merchant's money stayed pending. */
static void test_settlement_that_keeps_failing_raises_an_alert_until_settled(void **state)
{
    (void)state;
    pc_t_merchant_t m = new_merchant(0, 100);
    char tn[40];
    paid_trade(&m, 5000, tn);
    free(pc_t_sql(&g_stack,
                  "CREATE FUNCTION pc_t_refuse_statement() RETURNS trigger LANGUAGE plpgsql AS "
                  "$$ BEGIN IF NEW.merchant_id = '%s' THEN RAISE EXCEPTION 'refused by the "
                  "test'; END IF; RETURN NEW; END $$",
                  m.id));
    free(pc_t_sql(&g_stack, "CREATE TRIGGER pc_t_refuse_statement BEFORE INSERT ON settlements "
                            "FOR EACH ROW EXECUTE FUNCTION pc_t_refuse_statement()"));
    pc_stack_env(&g_stack, "PAYCORE_SETTLEMENT_AUTO", "true");
    pc_stack_env(&g_stack, "PAYCORE_SETTLEMENT_HOUR_UTC", "0");
    pc_stack_env(&g_stack, "PAYCORE_SETTLEMENT_POLL_MS", "100");
    pc_stack_env(&g_stack, "PAYCORE_ALERTS_CHECK_MS", "100");
    pc_stack_start_node(&g_stack, 1);
    assert_true(pc_t_sql_wait(&g_stack, "ACTIVE", 15,
                              "SELECT status FROM alerts WHERE kind = '%s' ORDER BY alert_id "
                              "DESC LIMIT 1",
                              "SETTLEMENT_FAILING"));
    pc_t_resp_t r = pc_t_admin(&g_stack, "GET", "/admin/alerts", NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "SETTLEMENT_FAILING"));
    char want[160];
    snprintf(want, sizeof want, "first: %s CNY", m.id);
    if (!strstr(r.body, want))
        fail_msg("expected \"%s\" in %s", want, r.body);
    pc_t_resp_free(&r);
    assert_int_equal(mbal(&m, "available"), 0);
    /* Ops run the day by hand: payctl says it failed (exit 1) and why (it
     * exited 0, the answer saying only "failed": 1). */
    char out[700];
    snprintf(out, sizeof out, "%s/settlement-run.out", g_stack.log_dir);
    assert_int_equal(pc_t_sh("PAYCORE_ADMIN_URL=http://127.0.0.1:%d PAYCORE_ADMIN_TOKEN=%s "
                             "%s/payctl settlement run %s > %s 2>&1",
                             g_stack.admin_port[0], "test-admin-token", pc_t_binary_dir(), g_today,
                             out),
                     1);
    assert_int_equal(pc_t_sh("grep -q '\"first_failure\": \"%s CNY' %s", m.id, out), 0);

    /* The cause gone, the next run settles the day and the alert clears. */
    free(pc_t_sql(&g_stack, "DROP TRIGGER pc_t_refuse_statement ON settlements"));
    free(pc_t_sql(&g_stack, "DROP FUNCTION pc_t_refuse_statement()"));
    assert_true(pc_t_sql_wait(&g_stack, "RESOLVED", 15,
                              "SELECT status FROM alerts WHERE kind = '%s' ORDER BY alert_id "
                              "DESC LIMIT 1",
                              "SETTLEMENT_FAILING"));
    assert_int_equal(mbal(&m, "available"), 5000 - 50);
    pc_stack_stop_node(&g_stack, 1, SIGTERM);
    assert_true(pc_t_ledger_ok(&g_stack));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_day_with_fees_and_chargeback_hold_run_twice, refresh_today),
        cmocka_unit_test_setup(test_cycle_days_decide_what_is_due, refresh_today),
        cmocka_unit_test_setup(test_a_statement_does_not_read_the_merchants_whole_history,
                               refresh_today),
        cmocka_unit_test_setup(test_refund_of_due_money_does_not_release_money_not_due,
                               refresh_today),
        cmocka_unit_test_setup(test_owed_chargeback_shortfall_is_taken_from_the_next_settlement,
                               refresh_today),
        cmocka_unit_test_setup(test_credit_during_a_statement_is_not_lost, refresh_today),
        cmocka_unit_test_setup(test_daily_job_settles_once_on_any_node, refresh_today),
        cmocka_unit_test_setup(test_settlement_that_keeps_failing_raises_an_alert_until_settled,
                               refresh_today),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
