/* Chargebacks end to end against real paycore, PostgreSQL, Redis and paysim:
 * online import of the channel's file (twice: nothing changes), upload and
 * offline entry (admin API and payctl), the freeze and each judgement's exact
 * ledger effects, close before judgement, evidence and its deadline, the
 * frozen amount refunds must respect, the rate as a metric and as a risk
 * input; the ledger check after each. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "harness.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static pc_stack_t g_stack;
static int g_seq;

static int setup(void **state)
{
    (void)state;
    pc_stack_init(&g_stack, "chargebacks");
    pc_stack_env(&g_stack, "PAYCORE_CHARGEBACK_RATE_REFRESH_MS", "300");
    pc_stack_env(&g_stack, "PAYCORE_SETTLEMENT_AUTO", "false");
    pc_stack_env(&g_stack, "PAYCORE_ALERTS_CHECK_MS", "300");
    /* Yesterday's chargeback files are due at once (test_the_daily_import). */
    pc_stack_env(&g_stack, "PAYCORE_CHARGEBACK_IMPORT_AT", "00:00");
    pc_stack_env(&g_stack, "PAYCORE_ALERTS_CHARGEBACK_FILES_AFTER_MIN", "0");
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

/* Ops judge a case before the merchant's evidence deadline: with a why. */
#define JUDGE_NOW "{\"why\":\"test: judged at once\"}"

/* A merchant of its own per test, so balances start at zero. */
static pc_t_merchant_t new_merchant(void)
{
    return pc_t_create_merchant(&g_stack, "\"settle_cycle_days\":0,\"fee_rate_bp\":60");
}

static const char *fresh_buyer(void)
{
    static char id[32];
    snprintf(id, sizeof id, "cbb_%d_%d", (int)getpid(), ++g_seq);
    char b[96];
    snprintf(b, sizeof b, "{\"buyer_id\":\"%s\"}", id);
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", "/admin/buyers", b);
    assert_int_equal(r.status, 201);
    pc_t_resp_free(&r);
    return id;
}

static void new_trade(const pc_t_merchant_t *m, const char *product, long amount, const char *buyer,
                      char *tn)
{
    char body[512], key[64];
    g_seq++;
    snprintf(body, sizeof body,
             "{\"out_trade_no\":\"CB%d-%d\",\"product\":\"%s\",\"amount\":%ld,\"currency\":"
             "\"CNY\",\"subject\":\"Goods\",\"buyer_id\":\"%s\"}",
             g_seq, (int)getpid(), product, amount, buyer);
    snprintf(key, sizeof key, "trade-%d", g_seq);
    pc_t_resp_t r = pc_t_call(&g_stack, m, "POST", "/v1/trades", body, key);
    assert_int_equal(r.status, 201);
    snprintf(tn, 40, "%s", pc_t_jstr(&r, "trade_no"));
    pc_t_resp_free(&r);
}

/* Pays a new INSTANT trade of m by card at paysim; returns the payment's
 * channel_txn_id in txn (80 bytes) and its trade_no in tn (40 bytes). */
static void card_payment_of(const pc_t_merchant_t *m, const char *product, long amount,
                            const char *pan, char *tn, char *txn, char *buyer_out)
{
    char buyer[32];
    snprintf(buyer, sizeof buyer, "%s", fresh_buyer());
    if (buyer_out)
        snprintf(buyer_out, 32, "%s", buyer);
    new_trade(m, product, amount, buyer, tn);
    char body[1024], key[64];
    g_seq++;
    snprintf(body, sizeof body,
             "{\"trade_no\":\"%s\",\"buyer_id\":\"%s\",\"method_id\":\"CARD\",\"client\":{\"ip\":"
             "\"10.1.0.%d\",\"device_id\":\"cbdev-%d\",\"platform\":\"WEB\"},\"card\":{\"pan\":"
             "\"%s\",\"exp_month\":12,\"exp_year\":2030,\"cvv\":\"123\"}}",
             tn, buyer, g_seq % 200, g_seq, pan ? pan : pc_t_fresh_pan());
    snprintf(key, sizeof key, "pay-%d", g_seq);
    pc_t_resp_t r = pc_t_call(&g_stack, m, "POST", "/v1/cashier/pay", body, key);
    assert_int_equal(r.status, 200);
    assert_string_equal(pc_t_jstr(&r, "status"), "SUCCESS");
    pc_t_resp_free(&r);
    char *t = pc_t_sql(&g_stack,
                       "SELECT channel_txn_id FROM payments WHERE trade_no = '%s' AND status = "
                       "'SUCCESS'",
                       tn);
    assert_non_null(t);
    snprintf(txn, 80, "%s", t);
    free(t);
}

static void card_payment(const pc_t_merchant_t *m, long amount, const char *pan, char *tn,
                         char *txn, char *buyer_out)
{
    card_payment_of(m, "INSTANT", amount, pan, tn, txn, buyer_out);
}

static long long bal(const char *account)
{
    return pc_t_sql_int(&g_stack, "SELECT coalesce(ledger_balance('%s'), 0)", account);
}

static long long mbal(const pc_t_merchant_t *m, const char *kind)
{
    char id[160];
    snprintf(id, sizeof id, "merchant:%s:%s:CNY", m->id, kind);
    return bal(id);
}

static void business_date(char *out)
{
    pc_t_resp_t r = pc_t_sim(&g_stack, "GET", "/sim/clock", NULL);
    assert_int_equal(r.status, 200);
    snprintf(out, 11, "%s", pc_t_jstr(&r, "business_date"));
    pc_t_resp_free(&r);
}

/* Offline entry by ops; returns the HTTP status and the chargeback_no. */
static long enter_offline(const char *ref, const char *txn, long amount, const char *extra,
                          char *cb_no)
{
    char body[512];
    snprintf(body, sizeof body,
             "{\"reference\":\"%s\",\"channel_id\":\"sim_card\",\"channel_txn_id\":\"%s\","
             "\"amount\":%ld,\"currency\":\"CNY\",\"reason_code\":\"4853\"%s%s}",
             ref, txn, amount, extra ? "," : "", extra ? extra : "");
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", "/admin/chargebacks", body);
    long st = r.status;
    if (cb_no)
        snprintf(cb_no, 40, "%s", pc_t_jstr(&r, "chargeback_no"));
    if (st != 201 && st != 200)
        fprintf(stderr, "offline entry: %ld %s\n", st, r.body);
    pc_t_resp_free(&r);
    return st;
}

/* Uploads one sim_card chargeback file line (reference, channel
 * transaction, amount in CNY) for date, as payctl does by hand; asserts the
 * import answered and returns its counts: created, duplicates, unmatched. */
typedef struct {
    long long created, duplicates, unmatched;
} import_counts_t;

static import_counts_t import_line(const char *date, const char *ref, const char *txn, long amount)
{
    char up[1024];
    snprintf(up, sizeof up,
             "{\"channel_id\":\"sim_card\",\"date\":\"%s\",\"csv\":\"chargeback_ref,channel_ref,"
             "paycore_ref,amount,currency,reason_code,time,respond_by\\n%s,%s,,%ld,CNY,10.4,,"
             "\\n\"}",
             date, ref, txn, amount);
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", "/admin/chargebacks/import", up);
    assert_int_equal(r.status, 200);
    json_t *j = pc_t_json(&r);
    import_counts_t c = {json_integer_value(json_object_get(j, "created")),
                         json_integer_value(json_object_get(j, "duplicates")),
                         json_integer_value(json_object_get(j, "unmatched"))};
    json_decref(j);
    pc_t_resp_free(&r);
    return c;
}

/* POST path on the admin API as operator who (NULL: no X-Operator). */
static long admin_post_as(const char *who, const char *path, const char *body, char *status_out)
{
    pc_t_resp_t r = who ? pc_t_admin_as(&g_stack, who, "POST", path, body)
                        : pc_t_admin(&g_stack, "POST", path, body);
    long st = r.status;
    if (status_out)
        snprintf(status_out, 24, "%s", st == 200 ? pc_t_jstr(&r, "status") : pc_t_errcode(&r));
    pc_t_resp_free(&r);
    return st;
}

static long admin_post(const char *path, const char *body, char *status_out)
{
    return admin_post_as(NULL, path, body, status_out);
}

static long long outbox_count(const char *type, const char *cb_no)
{
    return pc_t_sql_int(&g_stack,
                        "SELECT count(*) FROM outbox WHERE type = '%s' AND payload::jsonb -> "
                        "'data' ->> 'chargeback_no' = '%s'",
                        type, cb_no);
}

/* ---------- online ---------- */

static void test_online_import_twice_changes_nothing(void **state)
{
    (void)state;
    pc_t_merchant_t m = new_merchant();
    char tn[40], txn[80], date[11];
    /* paysim's test card for a chargeback in the day's file. */
    card_payment(&m, 4200, "4000000000000259", tn, txn, NULL);
    business_date(date);
    assert_int_equal(mbal(&m, "pending"), 4200);

    char body[128];
    snprintf(body, sizeof body, "{\"channel_id\":\"sim_card\",\"date\":\"%s\"}", date);
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", "/admin/chargebacks/import", body);
    assert_int_equal(r.status, 200);
    json_t *j = pc_t_json(&r);
    assert_true(json_integer_value(json_object_get(j, "created")) >= 1);
    json_decref(j);
    pc_t_resp_free(&r);

    char *cb_no = pc_t_sql(&g_stack,
                           "SELECT chargeback_no FROM chargebacks WHERE trade_no = '%s' AND "
                           "source = 'ONLINE' AND status = 'WAIT_JUDGE' AND amount = 4200 AND "
                           "reason_code = '10.4'",
                           tn);
    assert_non_null(cb_no);
    /* The whole amount is frozen: pending → reserve. */
    assert_int_equal(mbal(&m, "pending"), 0);
    assert_int_equal(mbal(&m, "reserve"), 4200);
    assert_int_equal(outbox_count("chargeback.opened", cb_no), 1);
    long long cases = pc_t_sql_int(&g_stack, "SELECT count(*) FROM chargebacks");
    long long txns = pc_t_sql_int(&g_stack, "SELECT count(*) FROM ledger_txns");
    long long events = pc_t_sql_int(&g_stack, "SELECT count(*) FROM outbox");

    /* The same file again: only duplicates. */
    r = pc_t_admin(&g_stack, "POST", "/admin/chargebacks/import", body);
    assert_int_equal(r.status, 200);
    j = pc_t_json(&r);
    assert_int_equal(json_integer_value(json_object_get(j, "created")), 0);
    assert_true(json_integer_value(json_object_get(j, "duplicates")) >= 1);
    json_decref(j);
    pc_t_resp_free(&r);
    assert_int_equal(pc_t_sql_int(&g_stack, "SELECT count(*) FROM chargebacks"), cases);
    assert_int_equal(pc_t_sql_int(&g_stack, "SELECT count(*) FROM ledger_txns"), txns);
    assert_int_equal(pc_t_sql_int(&g_stack, "SELECT count(*) FROM outbox"), events);
    assert_int_equal(mbal(&m, "reserve"), 4200);

    /* payctl asks for the same import: still nothing new. */
    assert_int_equal(pc_t_sh("PAYCORE_ADMIN_URL=http://127.0.0.1:%d PAYCORE_ADMIN_TOKEN=%s "
                             "%s/payctl chargeback import sim_card %s >/dev/null",
                             g_stack.admin_port[0], "test-admin-token", pc_t_binary_dir(), date),
                     0);
    assert_int_equal(pc_t_sql_int(&g_stack, "SELECT count(*) FROM chargebacks"), cases);
    assert_int_equal(pc_t_sql_int(&g_stack, "SELECT count(*) FROM ledger_txns"), txns);
    /* Uploaded by hand (payctl's way), the same line is still a duplicate. */
    char *ref =
        pc_t_sql(&g_stack, "SELECT source_ref FROM chargebacks WHERE chargeback_no = '%s'", cb_no);
    import_counts_t again = import_line(date, ref, txn, 4200);
    assert_int_equal(again.created, 0);
    assert_int_equal(again.duplicates, 1);
    assert_int_equal(pc_t_sql_int(&g_stack, "SELECT count(*) FROM chargebacks"), cases);
    free(ref);
    free(cb_no);
    assert_true(pc_t_ledger_ok(&g_stack));
}

static void test_partial_chargeback_from_sim_and_unmatched_lines(void **state)
{
    (void)state;
    pc_t_merchant_t m = new_merchant();
    char tn[40], txn[80], date[11];
    card_payment(&m, 9000, NULL, tn, txn, NULL);
    business_date(date);
    char body[256];
    snprintf(body, sizeof body, "{\"channel_txn_id\":\"%s\",\"amount\":2500}", txn);
    pc_t_resp_t r = pc_t_sim(&g_stack, "POST", "/sim/chargeback", body);
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    /* A line naming a payment nobody knows, uploaded with it. */
    char up[512];
    snprintf(up, sizeof up,
             "chargeback_ref,channel_ref,amount,currency\ncbk_nobody_%d,pay_unknown_%d,100,CNY\n",
             (int)getpid(), (int)getpid());
    char path[128];
    snprintf(path, sizeof path, "/admin/chargebacks/import?channel_id=sim_card&date=%s", date);
    snprintf(body, sizeof body, "{\"channel_id\":\"sim_card\",\"date\":\"%s\"}", date);
    r = pc_t_admin(&g_stack, "POST", "/admin/chargebacks/import", body);
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT count(*) FROM chargebacks WHERE trade_no = '%s' AND "
                                  "amount = 2500 AND source = 'ONLINE'",
                                  tn),
                     1);
    /* Partial: only 2500 of the 9000 pending is frozen. */
    assert_int_equal(mbal(&m, "pending"), 6500);
    assert_int_equal(mbal(&m, "reserve"), 2500);

    /* Neither a JSON object nor a CSV body. */
    pc_t_resp_t u = pc_t_admin(&g_stack, "POST", "/admin/chargebacks/import", NULL);
    assert_int_equal(u.status, 400);
    pc_t_resp_free(&u);
    /* A text/csv upload with the channel and date in the query. */
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", g_stack.admin_port[0], path);
    const char *hdrs[] = {"Authorization: Bearer test-admin-token", "Content-Type: text/csv", NULL};
    u = pc_t_http("POST", url, hdrs, up);
    assert_int_equal(u.status, 200);
    json_t *j = pc_t_json(&u);
    assert_int_equal(json_integer_value(json_object_get(j, "unmatched")), 1);
    assert_int_equal(json_integer_value(json_object_get(j, "created")), 0);
    assert_string_equal(json_string_value(json_object_get(j, "origin")), "UPLOAD");
    json_decref(j);
    pc_t_resp_free(&u);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT count(*) FROM chargeback_unmatched WHERE chargeback_ref "
                                  "= 'cbk_nobody_%d'",
                                  (int)getpid()),
                     1);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* ---------- offline ---------- */

typedef struct {
    char ref[64];
    const char *txn;
    long amount;
    pthread_barrier_t *b;
    long status;
} opener_t;

static void *open_race(void *arg)
{
    opener_t *x = arg;
    pthread_barrier_wait(x->b);
    x->status = enter_offline(x->ref, x->txn, x->amount, NULL, NULL);
    return NULL;
}

/* Several cases for the whole of one payment, entered at the same moment
 * under different references: one is opened and freezes the amount, every
 * other finds nothing left to dispute. (The amount already disputed was read
 * by a sub-select of the statement that waited for the trade lock, so it
 * came from before the wait: two cases opened at once, and twice the payment
 * was frozen.) */
static void test_cases_opened_at_once_never_dispute_more_than_the_payment(void **state)
{
    (void)state;
    enum { N = 4 };
    pc_t_merchant_t m = new_merchant();
    for (int round = 0; round < 3; round++) {
        char tn[40], txn[80];
        card_payment(&m, 2000, NULL, tn, txn, NULL);
        long long reserve0 = mbal(&m, "reserve");
        pthread_barrier_t b;
        pthread_barrier_init(&b, NULL, N);
        opener_t xs[N];
        pthread_t th[N];
        for (int i = 0; i < N; i++) {
            xs[i] = (opener_t){.txn = txn, .amount = 2000, .b = &b};
            snprintf(xs[i].ref, sizeof xs[i].ref, "RACE-%d-%d-%d", (int)getpid(), round, i);
            pthread_create(&th[i], NULL, open_race, &xs[i]);
        }
        int opened = 0;
        for (int i = 0; i < N; i++) {
            pthread_join(th[i], NULL);
            if (xs[i].status == 201)
                opened++;
            else
                assert_int_equal(xs[i].status, 422);
        }
        pthread_barrier_destroy(&b);
        assert_int_equal(opened, 1);
        assert_int_equal(
            pc_t_sql_int(&g_stack, "SELECT count(*) FROM chargebacks WHERE trade_no = '%s'", tn),
            1);
        assert_int_equal(mbal(&m, "reserve") - reserve0, 2000);
    }
    assert_true(pc_t_ledger_ok(&g_stack));
}

static void test_offline_entry_admin_and_payctl(void **state)
{
    (void)state;
    pc_t_merchant_t m = new_merchant();
    char tn[40], txn[80], cb1[40], cb2[40];
    card_payment(&m, 3000, NULL, tn, txn, NULL);
    char ref[64];
    snprintf(ref, sizeof ref, "EMAIL-%d-1", (int)getpid());
    assert_int_equal(enter_offline(ref, txn, 1000, NULL, cb1), 201);
    /* The same case again (ops clicked twice): the same chargeback. */
    assert_int_equal(enter_offline(ref, txn, 1000, NULL, cb2), 200);
    assert_string_equal(cb1, cb2);
    /* The same reference for something else is refused. */
    assert_int_equal(enter_offline(ref, txn, 999, NULL, NULL), 409);
    /* More than is left of the payment to dispute. */
    char ref2[64];
    snprintf(ref2, sizeof ref2, "EMAIL-%d-2", (int)getpid());
    assert_int_equal(enter_offline(ref2, txn, 2001, NULL, NULL), 422);
    assert_int_equal(enter_offline(ref2, "pay_nothing", 10, NULL, NULL), 404);
    assert_int_equal(mbal(&m, "reserve"), 1000);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT count(*) FROM chargebacks WHERE trade_no = '%s' AND "
                                  "source = 'OFFLINE' AND entered_by = 'ops'",
                                  tn),
                     1);

    /* payctl chargeback enter, as ops would type it. */
    int rc = pc_t_sh("PAYCORE_ADMIN_URL=http://127.0.0.1:%d PAYCORE_ADMIN_TOKEN=%s %s/payctl "
                     "chargeback enter --reference %s --channel sim_card --txn %s --amount 700 "
                     "--currency CNY --reason 13.1 >/dev/null",
                     g_stack.admin_port[0], "test-admin-token", pc_t_binary_dir(), ref2, txn);
    assert_int_equal(rc, 0);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT count(*) FROM chargebacks WHERE source_ref = '%s' AND "
                                  "amount = 700 AND reason_code = '13.1'",
                                  ref2),
                     1);
    assert_int_equal(mbal(&m, "reserve"), 1700);
    assert_int_equal(mbal(&m, "pending"), 1300);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* Ops enter a case from the channel's letter; the channel's next file then
 * lists the same case: one chargeback, frozen once. */
static void test_offline_case_then_in_the_file_is_one_case(void **state)
{
    (void)state;
    pc_t_merchant_t m = new_merchant();
    char tn[40], txn[80], cb[40], date[16], ref[64];
    card_payment(&m, 10000, NULL, tn, txn, NULL);
    snprintf(ref, sizeof ref, "CBK-%d-letter", (int)getpid());
    assert_int_equal(enter_offline(ref, txn, 3000, NULL, cb), 201);
    assert_int_equal(mbal(&m, "reserve"), 3000);
    business_date(date);
    import_counts_t c = import_line(date, ref, txn, 3000);
    assert_int_equal(c.created, 0);
    assert_int_equal(c.duplicates, 1);
    assert_int_equal(
        pc_t_sql_int(&g_stack, "SELECT count(*) FROM chargebacks WHERE trade_no = '%s'", tn), 1);
    assert_int_equal(mbal(&m, "reserve"), 3000);

    /* The same reference for another payment is not that case: the line is
     * unmatched (for ops to look at), not quietly a duplicate. */
    char tn2[40], txn2[80];
    card_payment(&m, 5000, NULL, tn2, txn2, NULL);
    c = import_line(date, ref, txn2, 2000);
    assert_int_equal(c.duplicates, 0);
    assert_int_equal(c.unmatched, 1);
    assert_int_equal(mbal(&m, "reserve"), 3000);

    /* A reference pasted with spaces around it is the one the file writes:
     * the file's line is that case (before: a second case, a second 2000
     * frozen). A space inside is no channel's reference. */
    char tn3[40], txn3[80], cb3[40], pasted[80];
    card_payment(&m, 5000, NULL, tn3, txn3, NULL);
    snprintf(ref, sizeof ref, "CBK-%d-mail", (int)getpid());
    snprintf(pasted, sizeof pasted, "  %s  ", ref);
    assert_int_equal(enter_offline(pasted, txn3, 2000, NULL, cb3), 201);
    c = import_line(date, ref, txn3, 2000);
    assert_int_equal(c.created, 0);
    assert_int_equal(c.duplicates, 1);
    assert_int_equal(
        pc_t_sql_int(&g_stack, "SELECT count(*) FROM chargebacks WHERE trade_no = '%s'", tn3), 1);
    assert_int_equal(enter_offline("CBK two words", txn3, 100, NULL, NULL), 400);
    assert_int_equal(mbal(&m, "reserve"), 5000);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* ---------- judgement ---------- */

/* A merchant with one card payment of amount and an offline chargeback of
 * disputed on it, moved to IN_JUDGE. */
static void judged_case(pc_t_merchant_t *m, long amount, long disputed, char *tn, char *txn,
                        char *cb_no)
{
    *m = new_merchant();
    card_payment(m, amount, NULL, tn, txn, NULL);
    char ref[64];
    snprintf(ref, sizeof ref, "CASE-%d-%d", (int)getpid(), ++g_seq);
    assert_int_equal(enter_offline(ref, txn, disputed, NULL, cb_no), 201);
    char path[128], st[24];
    snprintf(path, sizeof path, "/admin/chargebacks/%s/start-judge", cb_no);
    assert_int_equal(admin_post(path, JUDGE_NOW, st), 200);
    assert_string_equal(st, "IN_JUDGE");
}

/* Settles trade tn of m (amount 0: the rest); returns the HTTP status, the
 * settled amount in *settled and the error code in code (32 bytes). */
static long settle(const pc_t_merchant_t *m, const char *tn, long amount, long long *settled,
                   char *code)
{
    char path[96], body[64], key[48];
    snprintf(path, sizeof path, "/v1/trades/%s/settle", tn);
    if (amount)
        snprintf(body, sizeof body, "{\"amount\":%ld}", amount);
    else
        snprintf(body, sizeof body, "{}");
    snprintf(key, sizeof key, "settle-%d", ++g_seq);
    pc_t_resp_t r = pc_t_call(&g_stack, m, "POST", path, body, key);
    long st = r.status;
    if (settled)
        *settled = st == 200 ? atoll(pc_t_jstr(&r, "amount")) : -1;
    if (code)
        snprintf(code, 32, "%s", st == 200 ? "" : pc_t_errcode(&r));
    pc_t_resp_free(&r);
    return st;
}

static void trade_state(const char *tn, char *status, long long *settled)
{
    char *v = pc_t_sql(&g_stack,
                       "SELECT status || ' ' || settled_amount FROM trades WHERE "
                       "trade_no = '%s'",
                       tn);
    assert_non_null(v);
    char st[24];
    assert_int_equal(sscanf(v, "%23s %lld", st, settled), 2);
    snprintf(status, 24, "%s", st);
    free(v);
}

static long long hold_part(const char *cb, const char *column)
{
    return pc_t_sql_int(&g_stack, "SELECT %s FROM chargebacks WHERE chargeback_no = '%s'", column,
                        cb);
}

/* A guarantee trade disputed before it was settled: escrow still holds the
 * money, so the case holds it there and freezes nothing of the merchant's;
 * settling leaves it out (and does not end the trade while it is open); the
 * cardholder winning with the merchant liable pays the channel from escrow
 * and ends the trade. Before, the case froze the amount from the merchant
 * (owed, with nothing to freeze) and escrow then settled all of it to the
 * merchant as well. */
static void test_a_guarantee_trades_case_holds_its_escrow(void **state)
{
    (void)state;
    pc_t_merchant_t m = new_merchant();
    char tn[40], txn[80], cb[40], ref[64], path[128], st[24], code[32], status[24];
    card_payment_of(&m, "GUARANTEE", 10000, NULL, tn, txn, NULL);
    long long escrow0 = bal("platform:escrow:CNY");
    long long clearing0 = bal("channel:sim_card:clearing:CNY");
    snprintf(ref, sizeof ref, "GCASE-%d-%d", (int)getpid(), ++g_seq);
    assert_int_equal(enter_offline(ref, txn, 4000, NULL, cb), 201);
    assert_int_equal(hold_part(cb, "from_unsettled"), 4000);
    assert_int_equal(hold_part(cb, "from_pending + from_available + owed + from_escrow"), 0);
    char *hold = pc_t_sql(&g_stack,
                          "SELECT payload::jsonb -> 'data' -> 'hold' ->> 'from_unsettled' FROM "
                          "outbox WHERE type = 'chargeback.opened' AND payload::jsonb -> 'data' "
                          "->> 'chargeback_no' = '%s'",
                          cb);
    assert_string_equal(hold, "4000");
    free(hold);
    /* Nothing frozen from the merchant, nothing owed, escrow untouched. */
    assert_int_equal(mbal(&m, "reserve"), 0);
    assert_int_equal(mbal(&m, "receivable"), 0);
    assert_int_equal(bal("platform:escrow:CNY"), escrow0);
    /* The rest settles; the trade stays open while the case is. */
    long long settled = 0, total = 0;
    assert_int_equal(settle(&m, tn, 0, &settled, code), 200);
    assert_int_equal(settled, 6000);
    trade_state(tn, status, &total);
    assert_string_equal(status, "PAY_SUCCESS");
    assert_int_equal(total, 6000);
    assert_int_equal(bal("platform:escrow:CNY") - escrow0, -6000);
    assert_int_equal(settle(&m, tn, 1, NULL, code), 422);
    assert_string_equal(code, "AMOUNT_EXCEEDS_REFUNDABLE");
    /* Nor can a refund take the held money from escrow: a refund now comes
     * from the merchant's settled money (escrow keeps nothing else). */
    char body[160], key[48];
    snprintf(body, sizeof body,
             "{\"trade_no\":\"%s\",\"out_refund_no\":\"GR%d\",\"amount\":1000,\"reason\":\"x\"}",
             tn, ++g_seq);
    snprintf(key, sizeof key, "grefund-%d", g_seq);
    pc_t_resp_t r = pc_t_call(&g_stack, &m, "POST", "/v1/refunds", body, key);
    assert_int_equal(r.status, 200);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT from_escrow FROM refunds WHERE refund_no = '%s'",
                                  pc_t_jstr(&r, "refund_no")),
                     0);
    /* Finished at the channel before the judgement: it does not end the
     * trade while the case holds escrow. */
    assert_true(pc_t_sql_wait(&g_stack, "SUCCESS", 10,
                              "SELECT status FROM refunds WHERE refund_no = '%s'",
                              pc_t_jstr(&r, "refund_no")));
    pc_t_resp_free(&r);
    trade_state(tn, status, &total);
    assert_string_equal(status, "PAY_SUCCESS");
    clearing0 = bal("channel:sim_card:clearing:CNY");
    snprintf(path, sizeof path, "/admin/chargebacks/%s/start-judge", cb);
    assert_int_equal(admin_post(path, JUDGE_NOW, st), 200);
    snprintf(path, sizeof path, "/admin/chargebacks/%s/judge", cb);
    assert_int_equal(admin_post(path, "{\"liable\":\"MERCHANT\"}", st), 200);
    assert_string_equal(st, "JUDGE_FINISH");
    /* Escrow pays the cardholder back; the merchant's balances do not move. */
    assert_int_equal(bal("platform:escrow:CNY") - escrow0, -10000);
    assert_int_equal(bal("channel:sim_card:clearing:CNY") - clearing0, 4000);
    assert_int_equal(mbal(&m, "reserve"), 0);
    assert_int_equal(mbal(&m, "receivable"), 0);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT count(*) FROM chargeback_compensations WHERE "
                                  "chargeback_no = '%s' AND amount = 4000",
                                  cb),
                     1);
    /* Nothing is left in escrow to settle: the trade is finished, and said so. */
    trade_state(tn, status, &total);
    assert_string_equal(status, "TRADE_SUCCESS");
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT count(*) FROM outbox WHERE type = 'trade.succeeded' AND "
                                  "payload::jsonb -> 'data' ->> 'trade_no' = '%s'",
                                  tn),
                     1);
    assert_true(pc_t_ledger_ok(&g_stack));
}

typedef struct {
    const char *path;
    long status;
    volatile int done;
} judge_call_t;

static void *judge_in_thread(void *arg)
{
    judge_call_t *c = arg;
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", c->path, "{\"liable\":\"MERCHANT\"}");
    c->status = r.status;
    pc_t_resp_free(&r);
    c->done = 1;
    return NULL;
}

/* A judgement takes its trade's row lock before any ledger row, as settles
 * and refunds do. Before, it posted (locking `platform:escrow`, which every
 * settle and refund success of the currency locks; or, for a case frozen
 * from the merchant, the merchant's balances) and then waited for the
 * trade: a settle or refund of that trade could deadlock with it, and while
 * it waited no settle of any trade could move escrow. Here the trade is
 * held by another transaction's update; a settle of another guarantee
 * trade goes through meanwhile (before: it waited for the judgement). */
static void test_a_judgement_waiting_for_its_trade_holds_no_ledger_row(void **state)
{
    (void)state;
    pc_t_merchant_t m = new_merchant();
    char tn[40], other[40], txn[80], cb[40], ref[64], path[128], st[24], code[32];
    card_payment_of(&m, "GUARANTEE", 3000, NULL, other, txn, NULL);
    card_payment_of(&m, "GUARANTEE", 4000, NULL, tn, txn, NULL);
    snprintf(ref, sizeof ref, "GCASE-%d-%d", (int)getpid(), ++g_seq);
    assert_int_equal(enter_offline(ref, txn, 4000, NULL, cb), 201);
    snprintf(path, sizeof path, "/admin/chargebacks/%s/start-judge", cb);
    assert_int_equal(admin_post(path, JUDGE_NOW, st), 200);
    /* Held as an UPDATE of the row holds it (a refund's refunded_amount). */
    assert_int_equal(pc_t_sh("psql '%s' -qAt -c \"BEGIN; SELECT 1 FROM trades WHERE trade_no = "
                             "'%s' FOR NO KEY UPDATE; SELECT pg_sleep(5); COMMIT;\" >/dev/null "
                             "2>&1 &",
                             g_stack.db_url, tn),
                     0);
    assert_true(
        pc_t_sql_wait(&g_stack, "1", 10,
                      "SELECT count(*) FROM pg_stat_activity WHERE query LIKE "
                      "'%%pg_sleep(5)%%' AND state = 'active' AND pid <> pg_backend_pid()"));
    judge_call_t call = {.path = path};
    snprintf(path, sizeof path, "/admin/chargebacks/%s/judge", cb);
    pthread_t th;
    pthread_create(&th, NULL, judge_in_thread, &call);
    /* The judgement waits (for the trade). */
    assert_true(pc_t_sql_wait(&g_stack, "1", 10,
                              "SELECT least(count(*), 1) FROM pg_stat_activity WHERE "
                              "wait_event_type = 'Lock'"));
    long long settled = 0;
    assert_int_equal(settle(&m, other, 0, &settled, code), 200);
    assert_int_equal(settled, 3000);
    assert_false(call.done); /* the settle did not wait for the judgement */
    pthread_join(th, NULL);
    assert_int_equal(call.status, 200);
    char status[24];
    long long total = 0;
    trade_state(tn, status, &total);
    assert_string_equal(status, "TRADE_SUCCESS");
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* Settled in part before the dispute: escrow's part is held there, only the
 * rest is frozen from the merchant. The platform liable pays the channel
 * from its loss, the reserve goes back, and escrow's part is the merchant's
 * to settle; a dispute the cardholder loses gives it back as well. */
static void test_a_partly_settled_guarantee_case_splits_its_hold(void **state)
{
    (void)state;
    pc_t_merchant_t m = new_merchant();
    char tn[40], txn[80], cb[40], ref[64], path[128], st[24], code[32], status[24];
    card_payment_of(&m, "GUARANTEE", 10000, NULL, tn, txn, NULL);
    long long settled = 0, total = 0;
    assert_int_equal(settle(&m, tn, 7000, &settled, code), 200);
    long long escrow0 = bal("platform:escrow:CNY");
    long long loss0 = bal("platform:loss:CNY");
    long long clearing0 = bal("channel:sim_card:clearing:CNY");
    long long merchant0 = mbal(&m, "pending") + mbal(&m, "available");
    assert_int_equal(merchant0, 7000);
    snprintf(ref, sizeof ref, "GCASE-%d-%d", (int)getpid(), ++g_seq);
    assert_int_equal(enter_offline(ref, txn, 5000, NULL, cb), 201);
    assert_int_equal(hold_part(cb, "from_unsettled"), 3000);
    assert_int_equal(hold_part(cb, "from_pending + from_available"), 2000);
    assert_int_equal(mbal(&m, "reserve"), 2000);
    assert_int_equal(bal("platform:escrow:CNY"), escrow0);
    assert_int_equal(settle(&m, tn, 0, NULL, code), 422);
    snprintf(path, sizeof path, "/admin/chargebacks/%s/start-judge", cb);
    assert_int_equal(admin_post(path, JUDGE_NOW, st), 200);
    snprintf(path, sizeof path, "/admin/chargebacks/%s/judge", cb);
    assert_int_equal(admin_post(path, "{\"liable\":\"PLATFORM\"}", st), 200);
    assert_int_equal(bal("platform:loss:CNY") - loss0, -5000);
    assert_int_equal(bal("channel:sim_card:clearing:CNY") - clearing0, 5000);
    assert_int_equal(mbal(&m, "reserve"), 0);
    assert_int_equal(mbal(&m, "pending") + mbal(&m, "available"), 7000);
    assert_int_equal(bal("platform:escrow:CNY"), escrow0);
    trade_state(tn, status, &total);
    assert_string_equal(status, "PAY_SUCCESS");
    /* Escrow's part is the merchant's to settle now, and that ends the trade. */
    assert_int_equal(settle(&m, tn, 0, &settled, code), 200);
    assert_int_equal(settled, 3000);
    trade_state(tn, status, &total);
    assert_string_equal(status, "TRADE_SUCCESS");
    assert_int_equal(total, 10000);
    assert_int_equal(bal("platform:escrow:CNY") - escrow0, -3000);
    assert_true(pc_t_ledger_ok(&g_stack));

    /* The cardholder loses: escrow's part goes to the merchant by settle. */
    pc_t_merchant_t m2 = new_merchant();
    card_payment_of(&m2, "GUARANTEE", 5000, NULL, tn, txn, NULL);
    snprintf(ref, sizeof ref, "GCASE-%d-%d", (int)getpid(), ++g_seq);
    assert_int_equal(enter_offline(ref, txn, 5000, NULL, cb), 201);
    assert_int_equal(hold_part(cb, "from_unsettled"), 5000);
    assert_int_equal(settle(&m2, tn, 0, NULL, code), 422);
    snprintf(path, sizeof path, "/admin/chargebacks/%s/close", cb);
    assert_int_equal(admin_post(path, "{}", st), 200);
    assert_int_equal(mbal(&m2, "reserve"), 0);
    assert_int_equal(settle(&m2, tn, 0, &settled, code), 200);
    assert_int_equal(settled, 5000);
    trade_state(tn, status, &total);
    assert_string_equal(status, "TRADE_SUCCESS");
    assert_true(pc_t_ledger_ok(&g_stack));
}

static long refund(const pc_t_merchant_t *m, const char *tn, long amount, char *code);

/* Imports the file line ref (4000 of txn), the same dispute as case cb from
 * ops: no case opens (cb stays the payment's only one), the line waits for
 * ops, naming the payment, holding no sum (cb holds it). */
static void line_waits_beside_its_twin(const char *date, const char *ref, const char *txn,
                                       const char *cb)
{
    import_counts_t c = import_line(date, ref, txn, 4000);
    assert_int_equal(c.created, 0);
    assert_int_equal(c.unmatched, 1);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT count(*) FROM chargebacks WHERE payment_no = "
                                  "(SELECT payment_no FROM chargebacks WHERE "
                                  "chargeback_no = '%s')",
                                  cb),
                     1);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT count(*) FROM chargeback_unmatched WHERE chargeback_ref "
                                  "= '%s' AND resolved_at IS NULL AND payment_no IS NOT NULL AND "
                                  "amount IS NULL",
                                  ref),
                     1);
}

/* Ops enter a dispute from the bank's letter under the bank's case number;
 * the channel's file then brings the same dispute under its own reference:
 * the line waits for ops (unmatched, holding its sum), not a second case.
 * The other way round, an entry matching a case from the file is refused
 * (409). Before, both opened, and judged for the cardholder the merchant
 * paid twice. */
static void test_one_dispute_entered_and_in_the_file_is_not_two_cases(void **state)
{
    (void)state;
    pc_t_merchant_t m = new_merchant();
    char tn[40], txn[80], cb[40], ref[64], date[16];
    card_payment(&m, 10000, NULL, tn, txn, NULL);
    business_date(date);
    snprintf(ref, sizeof ref, "BANK-%d-%d", (int)getpid(), ++g_seq);
    assert_int_equal(enter_offline(ref, txn, 4000, NULL, cb), 201);
    snprintf(ref, sizeof ref, "cbk_twin_%d_%d", (int)getpid(), ++g_seq);
    /* The waiting line does not hold the sum a second time: the case
     * freezes it. */
    line_waits_beside_its_twin(date, ref, txn, cb);
    assert_int_equal(mbal(&m, "reserve"), 4000);
    /* The case judged, the file imported again: the line still waits for
     * ops. Before, the judged case was no twin any more, and a second case
     * of the one dispute opened (judged alike, the merchant paid twice). */
    char path[128], st[24];
    snprintf(path, sizeof path, "/admin/chargebacks/%s/start-judge", cb);
    assert_int_equal(admin_post(path, "{\"why\":\"the bank wants it now\"}", st), 200);
    snprintf(path, sizeof path, "/admin/chargebacks/%s/judge", cb);
    assert_int_equal(admin_post(path, "{\"liable\":\"MERCHANT\",\"note\":\"no proof\"}", st), 200);
    line_waits_beside_its_twin(date, ref, txn, cb);
    /* A dispute of another sum is another case. */
    snprintf(ref, sizeof ref, "cbk_other_%d_%d", (int)getpid(), ++g_seq);
    import_counts_t c = import_line(date, ref, txn, 1000);
    assert_int_equal(c.created, 1);
    /* 10000 less the two cases: 5000 refundable, not 1000 more. */
    char code[40];
    assert_int_equal(refund(&m, tn, 5000, code), 200);
    /* The file first, then ops' entry of the same dispute: refused. */
    char tn2[40], txn2[80], cb2[40];
    card_payment(&m, 3000, NULL, tn2, txn2, NULL);
    snprintf(ref, sizeof ref, "cbk_first_%d_%d", (int)getpid(), ++g_seq);
    c = import_line(date, ref, txn2, 3000);
    assert_int_equal(c.created, 1);
    snprintf(ref, sizeof ref, "BANK-%d-%d", (int)getpid(), ++g_seq);
    assert_int_equal(enter_offline(ref, txn2, 3000, NULL, cb2), 409);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* A dispute ops entered and judged for the cardholder before the channel's
 * file brought it (the file came late: an import that failed for days):
 * the line waits for ops, not a second case frozen and paid again. Before,
 * a judged case was no twin. The other way round, an entry matching a
 * judged case from the file is refused (409), unless ops say it is another
 * dispute ("another_dispute": true). */
static void test_a_dispute_judged_before_its_file_line_is_not_two_cases(void **state)
{
    (void)state;
    pc_t_merchant_t m = new_merchant();
    char tn[40], txn[80], cb[40], ref[64], date[16], path[128], st[24];
    card_payment(&m, 10000, NULL, tn, txn, NULL);
    business_date(date);
    snprintf(ref, sizeof ref, "BANKJ-%d-%d", (int)getpid(), ++g_seq);
    assert_int_equal(enter_offline(ref, txn, 4000, NULL, cb), 201);
    snprintf(path, sizeof path, "/admin/chargebacks/%s/start-judge", cb);
    assert_int_equal(admin_post(path, "{\"why\":\"the bank wants it now\"}", st), 200);
    snprintf(path, sizeof path, "/admin/chargebacks/%s/judge", cb);
    assert_int_equal(admin_post(path, "{\"liable\":\"MERCHANT\",\"note\":\"no proof\"}", st), 200);
    snprintf(ref, sizeof ref, "cbk_late_%d_%d", (int)getpid(), ++g_seq);
    line_waits_beside_its_twin(date, ref, txn, cb);

    /* The file's case judged, then ops enter one of the same sum. */
    char tn2[40], txn2[80], cb2[40], fref[64];
    card_payment(&m, 10000, NULL, tn2, txn2, NULL);
    snprintf(fref, sizeof fref, "cbk_judged_%d_%d", (int)getpid(), ++g_seq);
    import_counts_t c = import_line(date, fref, txn2, 3000);
    assert_int_equal(c.created, 1);
    char *no =
        pc_t_sql(&g_stack, "SELECT chargeback_no FROM chargebacks WHERE source_ref = '%s'", fref);
    snprintf(path, sizeof path, "/admin/chargebacks/%s/start-judge", no);
    assert_int_equal(admin_post(path, "{\"why\":\"now\"}", st), 200);
    snprintf(path, sizeof path, "/admin/chargebacks/%s/judge", no);
    assert_int_equal(admin_post(path, "{\"liable\":\"MERCHANT\"}", st), 200);
    free(no);
    snprintf(ref, sizeof ref, "BANKK-%d-%d", (int)getpid(), ++g_seq);
    assert_int_equal(enter_offline(ref, txn2, 3000, NULL, cb2), 409);
    assert_int_equal(enter_offline(ref, txn2, 3000, "\"another_dispute\":\"yes\"", cb2), 400);
    assert_int_equal(enter_offline(ref, txn2, 3000, "\"another_dispute\":true", cb2), 201);
    assert_int_equal(
        pc_t_sql_int(&g_stack, "SELECT count(*) FROM chargebacks WHERE trade_no = '%s'", tn2), 2);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* A file line under the reference of a case ops entered for another sum
 * (a typo in the entry; a channel's corrected amount) waits for ops and
 * holds its own sum: the bank gave that back. Before, it held nothing, as
 * if the case held it, and the merchant could refund money the cardholder
 * had already got back. */
static void test_a_line_under_a_case_reference_of_another_sum_holds_its_sum(void **state)
{
    (void)state;
    pc_t_merchant_t m = new_merchant();
    char tn[40], txn[80], cb[40], ref[64], date[16], code[40];
    card_payment(&m, 5000, NULL, tn, txn, NULL);
    business_date(date);
    snprintf(ref, sizeof ref, "TYPO-%d-%d", (int)getpid(), ++g_seq);
    assert_int_equal(enter_offline(ref, txn, 40, NULL, cb), 201);
    import_counts_t c = import_line(date, ref, txn, 4000);
    assert_int_equal(c.created, 0);
    assert_int_equal(c.unmatched, 1);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT amount FROM chargeback_unmatched WHERE chargeback_ref = "
                                  "'%s' AND resolved_at IS NULL",
                                  ref),
                     4000);
    /* 5000 less 40 and 4000: 960 is refundable, not 1000. */
    assert_int_equal(refund(&m, tn, 1000, code), 422);
    assert_string_equal(code, "AMOUNT_EXCEEDS_REFUNDABLE");
    assert_int_equal(refund(&m, tn, 960, code), 200);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* An X-Operator header that is not ASCII (not valid UTF-8 here) is kept as
 * "ops", like one that is not printable. Before, the judgement failed with
 * a database error: PostgreSQL refused the name for its audit column. */
static void test_an_operator_name_not_ascii_is_kept_as_ops(void **state)
{
    (void)state;
    pc_t_merchant_t m;
    char tn[40], txn[80], cb[40], path[128], st[24];
    judged_case(&m, 2100, 2100, tn, txn, cb);
    snprintf(path, sizeof path, "/admin/chargebacks/%s/judge", cb);
    assert_int_equal(
        admin_post_as("car\xc3\x28ol", path, "{\"liable\":\"PLATFORM\",\"note\":\"ours\"}", st),
        200);
    assert_string_equal(st, "JUDGE_FINISH");
    char *by =
        pc_t_sql(&g_stack, "SELECT decided_by FROM chargebacks WHERE chargeback_no = '%s'", cb);
    assert_string_equal(by, "ops");
    free(by);
    assert_true(pc_t_ledger_ok(&g_stack));
}

static void test_judge_merchant_liable(void **state)
{
    (void)state;
    pc_t_merchant_t m;
    char tn[40], txn[80], cb[40], path[128], st[24];
    judged_case(&m, 5000, 5000, tn, txn, cb);
    long long clearing0 = bal("channel:sim_card:clearing:CNY");
    long long loss0 = bal("platform:loss:CNY");
    assert_int_equal(mbal(&m, "reserve"), 5000);
    snprintf(path, sizeof path, "/admin/chargebacks/%s/judge", cb);
    assert_int_equal(
        admin_post_as("carol", path, "{\"liable\":\"MERCHANT\",\"note\":\"no proof\"}", st), 200);
    assert_string_equal(st, "JUDGE_FINISH");
    /* Who started the judgement and who judged are kept with the case
     * (before: neither, though the README said judgements keep it). */
    char *by = pc_t_sql(&g_stack,
                        "SELECT coalesce(judge_started_by, '-') || '/' || coalesce(decided_by, "
                        "'-') FROM chargebacks WHERE chargeback_no = '%s'",
                        cb);
    assert_string_equal(by, "ops/carol");
    free(by);
    /* reserve → the channel (the cardholder is paid back); nothing to the merchant. */
    assert_int_equal(mbal(&m, "reserve"), 0);
    assert_int_equal(mbal(&m, "pending"), 0);
    assert_int_equal(mbal(&m, "available"), 0);
    assert_int_equal(bal("channel:sim_card:clearing:CNY") - clearing0, 5000);
    assert_int_equal(bal("platform:loss:CNY"), loss0);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT count(*) FROM chargeback_compensations WHERE "
                                  "chargeback_no = '%s' AND amount = 5000 AND merchant_id = '%s'",
                                  cb, m.id),
                     1);
    assert_int_equal(outbox_count("chargeback.judged", cb), 1);
    /* Judged once only. */
    assert_int_equal(admin_post(path, "{\"liable\":\"NONE\"}", st), 409);
    assert_string_equal(st, "INVALID_STATE");
    assert_int_equal(bal("channel:sim_card:clearing:CNY") - clearing0, 5000);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* A case whose respond-by date passes with no judgement started pages ops
 * (before: nothing did, and the dispute was lost by default); one in
 * judgement waits for the channel, past its date by design, and does not. */
static void test_a_case_left_waiting_past_its_deadline_pages(void **state)
{
    (void)state;
    char tn[40], txn[80], cb[40], ref[64], path[128], st[24];
    /* Cases earlier tests left waiting past their date go into judgement
     * first: this one is then the only one. */
    char *left = pc_t_sql(&g_stack, "SELECT coalesce(string_agg(chargeback_no, ' '), '') FROM "
                                    "chargebacks WHERE status = 'WAIT_JUDGE' AND evidence_due_at "
                                    "< now()");
    for (char *tok = strtok(left, " "); tok; tok = strtok(NULL, " ")) {
        snprintf(path, sizeof path, "/admin/chargebacks/%s/start-judge", tok);
        assert_int_equal(admin_post(path, JUDGE_NOW, st), 200);
    }
    free(left);
    assert_true(pc_t_alert_wait(&g_stack, "CHARGEBACKS_OVERDUE", "chargebacks", 0, 15));
    pc_t_merchant_t m = new_merchant();
    card_payment(&m, 2500, NULL, tn, txn, NULL);
    snprintf(ref, sizeof ref, "LATE-%d", (int)getpid());
    assert_int_equal(enter_offline(ref, txn, 2500, NULL, cb), 201);
    free(pc_t_sql(&g_stack,
                  "UPDATE chargebacks SET evidence_due_at = now() - interval '1 minute' WHERE "
                  "chargeback_no = '%s' RETURNING 1",
                  cb));
    assert_true(pc_t_alert_wait(&g_stack, "CHARGEBACKS_OVERDUE", "chargebacks", 1, 15));
    char *msg = pc_t_alert_message(&g_stack, "CHARGEBACKS_OVERDUE", "chargebacks");
    assert_non_null(strstr(msg, cb));
    free(msg);
    snprintf(path, sizeof path, "/admin/chargebacks/%s/start-judge", cb);
    assert_int_equal(admin_post(path, JUDGE_NOW, st), 200);
    assert_string_equal(st, "IN_JUDGE");
    /* In judgement, past its date: the page clears. */
    assert_true(pc_t_alert_wait(&g_stack, "CHARGEBACKS_OVERDUE", "chargebacks", 0, 15));
}

static void test_judge_platform_liable(void **state)
{
    (void)state;
    pc_t_merchant_t m;
    char tn[40], txn[80], cb[40], path[128], st[24];
    judged_case(&m, 6000, 4000, tn, txn, cb);
    assert_int_equal(mbal(&m, "pending"), 2000);
    long long clearing0 = bal("channel:sim_card:clearing:CNY");
    long long loss0 = bal("platform:loss:CNY");
    snprintf(path, sizeof path, "/admin/chargebacks/%s/judge", cb);
    assert_int_equal(admin_post(path, "{\"liable\":\"PLATFORM\"}", st), 200);
    /* The platform's loss pays the channel; the reserve goes back to pending. */
    assert_int_equal(bal("platform:loss:CNY") - loss0, -4000);
    assert_int_equal(bal("channel:sim_card:clearing:CNY") - clearing0, 4000);
    assert_int_equal(mbal(&m, "reserve"), 0);
    assert_int_equal(mbal(&m, "pending"), 6000);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT count(*) FROM chargeback_compensations WHERE "
                                  "chargeback_no = '%s'",
                                  cb),
                     0);
    assert_true(pc_t_ledger_ok(&g_stack));
}

static void test_judge_none_liable_releases_the_reserve(void **state)
{
    (void)state;
    pc_t_merchant_t m;
    char tn[40], txn[80], cb[40], path[128], st[24];
    judged_case(&m, 3000, 3000, tn, txn, cb);
    long long clearing0 = bal("channel:sim_card:clearing:CNY");
    long long loss0 = bal("platform:loss:CNY");
    snprintf(path, sizeof path, "/admin/chargebacks/%s/judge", cb);
    assert_int_equal(admin_post(path, "{\"liable\":\"BOTH\"}", st), 400);
    assert_int_equal(admin_post(path, "{\"liable\":\"NONE\",\"note\":\"cardholder lost\"}", st),
                     200);
    assert_int_equal(mbal(&m, "reserve"), 0);
    assert_int_equal(mbal(&m, "pending"), 3000);
    assert_int_equal(bal("channel:sim_card:clearing:CNY"), clearing0);
    assert_int_equal(bal("platform:loss:CNY"), loss0);
    char *liable =
        pc_t_sql(&g_stack, "SELECT liable FROM chargebacks WHERE chargeback_no = '%s'", cb);
    assert_string_equal(liable, "NONE");
    free(liable);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* A case the cardholder lost (no one liable) frees its amount: the
 * issuer's next cycle under a new reference opens. Before, the lost case
 * still counted as disputed, and the second cycle was refused (422) while the
 * channel debited the money. A case the cardholder won still counts. */
static void test_lost_dispute_frees_its_amount_for_the_next_cycle(void **state)
{
    (void)state;
    pc_t_merchant_t m;
    char tn[40], txn[80], cb[40], cb2[40], path[128], st[24], ref[64];
    judged_case(&m, 3000, 3000, tn, txn, cb);
    snprintf(path, sizeof path, "/admin/chargebacks/%s/judge", cb);
    assert_int_equal(admin_post(path, "{\"liable\":\"NONE\"}", st), 200);
    snprintf(ref, sizeof ref, "CYCLE2-%d", (int)getpid());
    assert_int_equal(enter_offline(ref, txn, 3000, NULL, cb2), 201);
    assert_int_equal(mbal(&m, "reserve"), 3000);
    snprintf(path, sizeof path, "/admin/chargebacks/%s/start-judge", cb2);
    assert_int_equal(admin_post(path, JUDGE_NOW, st), 200);
    snprintf(path, sizeof path, "/admin/chargebacks/%s/judge", cb2);
    assert_int_equal(admin_post(path, "{\"liable\":\"MERCHANT\"}", st), 200);
    snprintf(ref, sizeof ref, "CYCLE3-%d", (int)getpid());
    assert_int_equal(enter_offline(ref, txn, 3000, NULL, NULL), 422);
    assert_true(pc_t_ledger_ok(&g_stack));
}

static void test_short_balance_is_owed_and_stays_owed_when_merchant_liable(void **state)
{
    (void)state;
    pc_t_merchant_t m = new_merchant();
    char tn[40], txn[80], cb[40], path[128], st[24], date[11];
    card_payment(&m, 1000, NULL, tn, txn, NULL);
    /* Settle it (T+0): 994 available after the 0.6 % fee, pending empty. */
    business_date(date);
    char body[64];
    snprintf(body, sizeof body, "{\"date\":\"%s\"}", date);
    assert_int_equal(admin_post("/admin/settlements/run", body, NULL), 200);
    assert_int_equal(mbal(&m, "available"), 994);
    char ref[64];
    snprintf(ref, sizeof ref, "SHORT-%d", (int)getpid());
    assert_int_equal(enter_offline(ref, txn, 1000, NULL, cb), 201);
    /* 994 from available, 6 recorded as owed. */
    assert_int_equal(mbal(&m, "available"), 0);
    assert_int_equal(mbal(&m, "receivable"), -6);
    assert_int_equal(mbal(&m, "reserve"), 1000);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT owed * 10000 + from_available FROM chargebacks WHERE "
                                  "chargeback_no = '%s'",
                                  cb),
                     6 * 10000 + 994);
    snprintf(path, sizeof path, "/admin/chargebacks/%s/start-judge", cb);
    assert_int_equal(admin_post(path, JUDGE_NOW, st), 200);
    snprintf(path, sizeof path, "/admin/chargebacks/%s/judge", cb);
    assert_int_equal(admin_post(path, "{\"liable\":\"MERCHANT\"}", st), 200);
    /* Why it was judged before the deadline stays with the case (the
     * judgement, without a note of its own, erased it). */
    char *note =
        pc_t_sql(&g_stack, "SELECT judge_note FROM chargebacks WHERE chargeback_no = '%s'", cb);
    assert_non_null(note);
    assert_non_null(strstr(note, "judged before the evidence deadline"));
    free(note);
    assert_int_equal(mbal(&m, "reserve"), 0);
    assert_int_equal(mbal(&m, "receivable"), -6);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT owed_at_judgement FROM chargeback_compensations WHERE "
                                  "chargeback_no = '%s'",
                                  cb),
                     6);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* A payout of 994 to the merchant's own account; returns the HTTP status
 * and, on 200, the payout number in no. */
static long payout_994(const pc_t_merchant_t *m, const char *out_no, char *no)
{
    char body[512], key[64];
    snprintf(body, sizeof body,
             "{\"out_payout_no\":\"%s\",\"amount\":994,\"currency\":\"CNY\",\"payee\":{"
             "\"type\":\"ACCOUNT\",\"account_no\":\"6222020000004444\",\"name\":\"Shop "
             "Ltd\",\"bank_code\":\"ICBC\"}}",
             out_no);
    snprintf(key, sizeof key, "po-%s", out_no);
    pc_t_resp_t r = pc_t_call(&g_stack, m, "POST", "/v1/payouts", body, key);
    long st = r.status;
    if (st == 200)
        snprintf(no, 40, "%s", pc_t_jstr(&r, "payout_no"));
    else if (st == 422)
        assert_string_equal(pc_t_errcode(&r), "INSUFFICIENT_BALANCE");
    pc_t_resp_free(&r);
    return st;
}

/* A chargeback deducted while the merchant's money was out in a payout
 * leaves the merchant owing it (receivable -1000); when the payee's bank
 * sends the payout back, the 994 are available again, but they are owed:
 * a payout of them is refused. Before, it was paid, and the debt could
 * never be recovered. */
static void test_payout_keeps_back_what_the_merchant_owes(void **state)
{
    (void)state;
    pc_t_merchant_t m = new_merchant();
    char path[160], tn[40], txn[80], date[11], body[256], no[40], cb[40], ref[64], out[40];
    snprintf(path, sizeof path, "/admin/merchants/%s/verify", m.id);
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", path,
                               "{\"legal_name\":\"Shop Ltd\",\"id_type\":\"BUSINESS_LICENSE\","
                               "\"id_number\":\"91110000ABCD1234\"}");
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    card_payment(&m, 1000, NULL, tn, txn, NULL);
    business_date(date);
    snprintf(body, sizeof body, "{\"date\":\"%s\"}", date);
    assert_int_equal(admin_post("/admin/settlements/run", body, NULL), 200);
    assert_int_equal(mbal(&m, "available"), 994);
    snprintf(out, sizeof out, "OWE-%d-1", (int)getpid());
    assert_int_equal(payout_994(&m, out, no), 200);
    assert_true(pc_t_sql_wait(&g_stack, "SUCCESS", 15,
                              "SELECT status FROM payouts WHERE payout_no = '%s'", no));
    assert_int_equal(mbal(&m, "available"), 0);
    snprintf(ref, sizeof ref, "OWE-%d", (int)getpid());
    assert_int_equal(enter_offline(ref, txn, 1000, NULL, cb), 201);
    assert_int_equal(mbal(&m, "receivable"), -1000);
    /* The payee's bank sends the payout back. */
    char *ptxn =
        pc_t_sql(&g_stack, "SELECT channel_txn_id FROM payouts WHERE payout_no = '%s'", no);
    snprintf(body, sizeof body, "{\"channel_txn_id\":\"%s\",\"reason_code\":\"R03\"}", ptxn);
    free(ptxn);
    r = pc_t_sim(&g_stack, "POST", "/sim/return", body);
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    assert_true(pc_t_sql_wait(&g_stack, "RETURNED", 15,
                              "SELECT status FROM payouts WHERE payout_no = '%s'", no));
    assert_int_equal(mbal(&m, "available"), 994);
    snprintf(out, sizeof out, "OWE-%d-2", (int)getpid());
    assert_int_equal(payout_994(&m, out, no), 422);
    assert_int_equal(mbal(&m, "available"), 994);
    assert_true(pc_t_ledger_ok(&g_stack));
}

static void test_close_before_judgement(void **state)
{
    (void)state;
    pc_t_merchant_t m = new_merchant();
    char tn[40], txn[80], cb[40], path[128], st[24];
    card_payment(&m, 2000, NULL, tn, txn, NULL);
    char ref[64];
    snprintf(ref, sizeof ref, "WITHDRAWN-%d", (int)getpid());
    assert_int_equal(enter_offline(ref, txn, 2000, NULL, cb), 201);
    assert_int_equal(mbal(&m, "pending"), 0);
    /* Judging needs IN_JUDGE first. */
    snprintf(path, sizeof path, "/admin/chargebacks/%s/judge", cb);
    assert_int_equal(admin_post(path, "{\"liable\":\"NONE\"}", st), 409);
    snprintf(path, sizeof path, "/admin/chargebacks/%s/close", cb);
    assert_int_equal(admin_post(path, "{\"note\":\"cardholder withdrew\"}", st), 200);
    assert_string_equal(st, "CLOSE");
    assert_int_equal(mbal(&m, "pending"), 2000);
    assert_int_equal(mbal(&m, "reserve"), 0);
    assert_int_equal(outbox_count("chargeback.closed", cb), 1);
    /* Closed is final. */
    assert_int_equal(admin_post(path, NULL, st), 409);
    snprintf(path, sizeof path, "/admin/chargebacks/%s/start-judge", cb);
    assert_int_equal(admin_post(path, NULL, st), 409);
    assert_int_equal(admin_post("/admin/chargebacks/CBnone/close", NULL, st), 404);

    /* A case in judgement cannot be closed. */
    char cb2[40];
    snprintf(ref, sizeof ref, "INJUDGE-%d", (int)getpid());
    assert_int_equal(enter_offline(ref, txn, 500, NULL, cb2), 201);
    snprintf(path, sizeof path, "/admin/chargebacks/%s/start-judge", cb2);
    assert_int_equal(admin_post(path, JUDGE_NOW, st), 200);
    snprintf(path, sizeof path, "/admin/chargebacks/%s/close", cb2);
    assert_int_equal(admin_post(path, NULL, st), 409);
    assert_string_equal(st, "INVALID_STATE");
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* ---------- evidence ---------- */

static void test_merchant_views_and_evidence_deadline(void **state)
{
    (void)state;
    pc_t_merchant_t m = new_merchant(), other = new_merchant();
    char tn[40], txn[80], cb[40], late[40], path[128];
    card_payment(&m, 2400, NULL, tn, txn, NULL);
    char ref[64];
    snprintf(ref, sizeof ref, "EV-%d", (int)getpid());
    assert_int_equal(enter_offline(ref, txn, 1200, NULL, cb), 201);
    snprintf(ref, sizeof ref, "EVLATE-%d", (int)getpid());
    /* A deadline already past is a typo: the merchant could send nothing. */
    assert_int_equal(
        enter_offline(ref, txn, 1200, "\"evidence_due_at\":\"2020-01-01T00:00:00Z\"", late), 400);
    assert_int_equal(
        enter_offline(ref, txn, 1200, "\"evidence_due_at\":\"2099-01-01T00:00:00Z\"", late), 201);
    /* Its deadline has passed since. */
    free(pc_t_sql(&g_stack,
                  "UPDATE chargebacks SET evidence_due_at = now() - interval '1 minute' WHERE "
                  "chargeback_no = '%s' RETURNING 1",
                  late));

    pc_t_resp_t r = pc_t_call(&g_stack, &m, "GET", "/v1/chargebacks?status=WAIT_JUDGE", NULL, NULL);
    assert_int_equal(r.status, 200);
    json_t *j = pc_t_json(&r);
    assert_int_equal(json_array_size(json_object_get(j, "chargebacks")), 2);
    json_decref(j);
    pc_t_resp_free(&r);
    r = pc_t_call(&g_stack, &m, "GET", "/v1/chargebacks?status=CLOSE", NULL, NULL);
    j = pc_t_json(&r);
    assert_int_equal(json_array_size(json_object_get(j, "chargebacks")), 0);
    json_decref(j);
    pc_t_resp_free(&r);
    /* One at a time: the list continues after next_after, newest first, and
     * ends with no next_after (it stopped at 500 without a way on). */
    char page[160], seen[2][40];
    snprintf(page, sizeof page, "/v1/chargebacks?limit=1");
    for (int i = 0; i < 3; i++) {
        r = pc_t_call(&g_stack, &m, "GET", page, NULL, NULL);
        assert_int_equal(r.status, 200);
        j = pc_t_json(&r);
        json_t *list = json_object_get(j, "chargebacks");
        const char *next = json_string_value(json_object_get(j, "next_after"));
        if (i < 2) {
            assert_int_equal(json_array_size(list), 1);
            snprintf(seen[i], sizeof seen[i], "%s",
                     json_string_value(json_object_get(json_array_get(list, 0), "chargeback_no")));
            assert_non_null(next);
            assert_string_equal(next, seen[i]);
            snprintf(page, sizeof page, "/v1/chargebacks?limit=1&after=%s", next);
        } else {
            assert_int_equal(json_array_size(list), 0);
            assert_null(next);
        }
        json_decref(j);
        pc_t_resp_free(&r);
    }
    assert_string_equal(seen[0], late); /* entered last */
    assert_string_equal(seen[1], cb);
    r = pc_t_call(&g_stack, &m, "GET", "/v1/chargebacks?limit=0", NULL, NULL);
    assert_int_equal(r.status, 400);
    pc_t_resp_free(&r);
    r = pc_t_call(&g_stack, &m, "GET", "/v1/chargebacks?after=a'b", NULL, NULL);
    assert_int_equal(r.status, 400);
    pc_t_resp_free(&r);
    snprintf(path, sizeof path, "/v1/chargebacks/%s", cb);
    r = pc_t_call(&g_stack, &m, "GET", path, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(pc_t_jstr(&r, "source"), "OFFLINE");
    assert_string_equal(pc_t_jstr(&r, "trade_no"), tn);
    pc_t_resp_free(&r);
    /* Another merchant's case does not exist for this one. */
    r = pc_t_call(&g_stack, &other, "GET", path, NULL, NULL);
    assert_int_equal(r.status, 404);
    pc_t_resp_free(&r);

    /* Judging closes evidence: not before the deadline while the merchant
     * has sent none (before, ops could, and the merchant's evidence of the
     * next day was refused). */
    snprintf(path, sizeof path, "/admin/chargebacks/%s/start-judge", cb);
    r = pc_t_admin(&g_stack, "POST", path, NULL);
    assert_int_equal(r.status, 409);
    assert_string_equal(pc_t_errcode(&r), "INVALID_STATE");
    assert_non_null(strstr(r.body, "has sent none"));
    pc_t_resp_free(&r);
    const char *ev = "{\"text\":\"Delivered, signed by the buyer\",\"attachments\":[{\"name\":"
                     "\"pod.pdf\",\"sha256\":"
                     "\"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"}]}";
    snprintf(path, sizeof path, "/v1/chargebacks/%s/evidence", cb);
    r = pc_t_call(&g_stack, &m, "POST", path, ev, "ev-1");
    assert_int_equal(r.status, 200);
    j = pc_t_json(&r);
    json_t *list = json_object_get(j, "evidence");
    assert_int_equal(json_array_size(list), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(list, 0), "text")),
                        "Delivered, signed by the buyer");
    json_decref(j);
    /* Replayed with the same key: the same answer, nothing appended. */
    pc_t_resp_t r2 = pc_t_call(&g_stack, &m, "POST", path, ev, "ev-1");
    assert_string_equal(r2.body, r.body);
    pc_t_resp_free(&r2);
    pc_t_resp_free(&r);
    r = pc_t_call(&g_stack, &other, "POST", path, ev, "ev-x");
    assert_int_equal(r.status, 404);
    pc_t_resp_free(&r);
    r = pc_t_call(&g_stack, &m, "POST", path, "{}", "ev-empty");
    assert_int_equal(r.status, 400);
    pc_t_resp_free(&r);

    /* After the deadline: refused. */
    snprintf(path, sizeof path, "/v1/chargebacks/%s/evidence", late);
    r = pc_t_call(&g_stack, &m, "POST", path, ev, "ev-late");
    assert_int_equal(r.status, 409);
    assert_string_equal(pc_t_errcode(&r), "INVALID_STATE");
    pc_t_resp_free(&r);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT jsonb_array_length(evidence) FROM chargebacks WHERE "
                                  "chargeback_no = '%s'",
                                  late),
                     0);
    /* Once in judgement: refused too. */
    snprintf(path, sizeof path, "/admin/chargebacks/%s/start-judge", cb);
    assert_int_equal(admin_post(path, NULL, NULL), 200);
    snprintf(path, sizeof path, "/v1/chargebacks/%s/evidence", cb);
    r = pc_t_call(&g_stack, &m, "POST", path, "{\"text\":\"more\"}", "ev-2");
    assert_int_equal(r.status, 409);
    pc_t_resp_free(&r);
    /* Past its deadline a case is judged without evidence. */
    snprintf(path, sizeof path, "/admin/chargebacks/%s/start-judge", late);
    assert_int_equal(admin_post(path, NULL, NULL), 200);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* ---------- refunds must respect the frozen amount ---------- */

static long refund(const pc_t_merchant_t *m, const char *tn, long amount, char *code)
{
    char body[256], key[64];
    g_seq++;
    snprintf(body, sizeof body,
             "{\"trade_no\":\"%s\",\"out_refund_no\":\"RF-%d-%d\",\"amount\":%ld,\"reason\":"
             "\"return\"}",
             tn, (int)getpid(), g_seq, amount);
    snprintf(key, sizeof key, "refund-%d", g_seq);
    pc_t_resp_t r = pc_t_call(&g_stack, m, "POST", "/v1/refunds", body, key);
    long st = r.status;
    snprintf(code, 40, "%s", pc_t_errcode(&r));
    pc_t_resp_free(&r);
    return st;
}

static void test_disputed_amount_is_not_refundable(void **state)
{
    (void)state;
    pc_t_merchant_t m = new_merchant();
    char tn[40], txn[80], cb[40], path[128], code[40], other_tn[40], other_txn[80];
    card_payment(&m, 5000, NULL, tn, txn, NULL);
    /* Other money of the merchant, so that its balance could fund a refund. */
    card_payment(&m, 10000, NULL, other_tn, other_txn, NULL);
    assert_int_equal(
        pc_t_sql_int(
            &g_stack,
            "SELECT payment_chargeback_frozen(payment_no) FROM trades WHERE trade_no = '%s'", tn),
        0);
    char ref[64];
    snprintf(ref, sizeof ref, "FROZEN-%d", (int)getpid());
    assert_int_equal(enter_offline(ref, txn, 3000, NULL, cb), 201);
    assert_int_equal(mbal(&m, "pending"), 12000);
    /* What a refund may still take: paid − refunded − frozen. */
    assert_int_equal(
        pc_t_sql_int(
            &g_stack,
            "SELECT payment_chargeback_frozen(payment_no) FROM trades WHERE trade_no = '%s'", tn),
        3000);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT paid_amount - refunded_amount - "
                                  "payment_chargeback_frozen(payment_no) FROM trades WHERE "
                                  "trade_no = '%s'",
                                  tn),
                     2000);
    /* A refund into the disputed money is refused, though the balance has it. */
    assert_int_equal(refund(&m, tn, 4000, code), 422);
    assert_string_equal(code, "AMOUNT_EXCEEDS_REFUNDABLE");
    /* The cardholder won (merchant liable): still not refundable. */
    snprintf(path, sizeof path, "/admin/chargebacks/%s/start-judge", cb);
    assert_int_equal(admin_post(path, JUDGE_NOW, NULL), 200);
    snprintf(path, sizeof path, "/admin/chargebacks/%s/judge", cb);
    assert_int_equal(admin_post(path, "{\"liable\":\"MERCHANT\"}", NULL), 200);
    assert_int_equal(
        pc_t_sql_int(
            &g_stack,
            "SELECT payment_chargeback_frozen(payment_no) FROM trades WHERE trade_no = '%s'", tn),
        3000);
    /* A withdrawn dispute frees its amount again. */
    snprintf(ref, sizeof ref, "FROZEN2-%d", (int)getpid());
    assert_int_equal(enter_offline(ref, txn, 2000, NULL, cb), 201);
    assert_int_equal(
        pc_t_sql_int(
            &g_stack,
            "SELECT payment_chargeback_frozen(payment_no) FROM trades WHERE trade_no = '%s'", tn),
        5000);
    assert_int_equal(refund(&m, tn, 1, code), 422);
    snprintf(path, sizeof path, "/admin/chargebacks/%s/close", cb);
    assert_int_equal(admin_post(path, NULL, NULL), 200);
    assert_int_equal(
        pc_t_sql_int(
            &g_stack,
            "SELECT payment_chargeback_frozen(payment_no) FROM trades WHERE trade_no = '%s'", tn),
        3000);
    /* What was never disputed can be refunded. */
    assert_int_equal(refund(&m, tn, 2000, code), 200);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* A merchant refund not sent yet (OFFLINE, waiting for ops) meets a
 * chargeback for more than the rest: the buyer got the money at the bank, so
 * the refund is terminated (it would pay them twice; the merchant is told
 * refund.failed) and the case opens. Before, the case was refused and the
 * refund went on. Cash paid at a store is refunded by hand (sim_otc). */
static void test_chargeback_terminates_a_refund_not_sent_yet(void **state)
{
    (void)state;
    pc_t_merchant_t m = new_merchant();
    char tn[40], code[40], buyer[32], body[1024], key[64];
    snprintf(buyer, sizeof buyer, "%s", fresh_buyer());
    new_trade(&m, "INSTANT", 5000, buyer, tn);
    g_seq++;
    snprintf(body, sizeof body,
             "{\"trade_no\":\"%s\",\"buyer_id\":\"%s\",\"method_id\":\"OTC\",\"client\":{\"ip\":"
             "\"10.1.1.%d\",\"device_id\":\"cbdev-%d\",\"platform\":\"WEB\"}}",
             tn, buyer, g_seq % 200, g_seq);
    snprintf(key, sizeof key, "pay-%d", g_seq);
    pc_t_resp_t r = pc_t_call(&g_stack, &m, "POST", "/v1/cashier/pay", body, key);
    assert_int_equal(r.status, 200);
    json_t *j = pc_t_json(&r);
    snprintf(body, sizeof body, "{\"reference\":\"%s\"}",
             json_string_value(json_object_get(json_object_get(j, "action"), "otc_code")));
    json_decref(j);
    pc_t_resp_free(&r);
    r = pc_t_sim(&g_stack, "POST", "/sim/complete", body);
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    assert_true(pc_t_sql_wait(&g_stack, "1", 10,
                              "SELECT count(*) FROM payments WHERE trade_no = '%s' AND status = "
                              "'SUCCESS'",
                              tn));
    char *txn = pc_t_sql(&g_stack,
                         "SELECT channel_txn_id FROM payments WHERE trade_no = '%s' AND status = "
                         "'SUCCESS'",
                         tn);
    long long pending0 = mbal(&m, "pending");
    assert_int_equal(refund(&m, tn, 2000, code), 200);
    char *rno = pc_t_sql(&g_stack,
                         "SELECT refund_no FROM refunds WHERE trade_no = '%s' AND method = "
                         "'OFFLINE' AND status = 'ACCEPTED'",
                         tn);
    assert_non_null(rno);
    assert_int_equal(mbal(&m, "pending"), pending0 - 2000);

    char ref[64];
    snprintf(ref, sizeof ref, "UNSENT-%d", (int)getpid());
    snprintf(body, sizeof body,
             "{\"reference\":\"%s\",\"channel_id\":\"sim_otc\",\"channel_txn_id\":\"%s\","
             "\"amount\":4000,\"currency\":\"CNY\",\"reason_code\":\"4853\"}",
             ref, txn);
    r = pc_t_admin(&g_stack, "POST", "/admin/chargebacks", body);
    if (r.status != 201)
        fprintf(stderr, "offline entry: %ld %s\n", r.status, r.body);
    assert_int_equal(r.status, 201);
    pc_t_resp_free(&r);
    char *st = pc_t_sql(
        &g_stack, "SELECT status || ' ' || failure_code FROM refunds WHERE refund_no = '%s'", rno);
    assert_string_equal(st, "TERMINATED CHARGEBACK");
    free(st);
    /* 1000 of the 2000 would pass the payment's 5000 with the case's 4000:
     * the merchant is told the other 1000 may still be refunded. */
    st = pc_t_sql(&g_stack, "SELECT failure_message FROM refunds WHERE refund_no = '%s'", rno);
    assert_non_null(strstr(st, " 1000 of this refund is still refundable"));
    free(st);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT count(*) FROM refund_actions WHERE refund_no = '%s' AND "
                                  "who = 'chargeback' AND action = 'TERMINATE'",
                                  rno),
                     1);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT count(*) FROM outbox WHERE type = 'refund.failed' AND "
                                  "payload::jsonb -> 'data' ->> 'refund_no' = '%s'",
                                  rno),
                     1);
    /* The refund's 2000 back, then 4000 frozen for the case. */
    assert_int_equal(mbal(&m, "reserve"), 4000);
    assert_int_equal(mbal(&m, "pending"), pending0 - 4000);
    /* Ops who paid it by hand meanwhile are told why it cannot be confirmed
     * and what that payment now is (before: "is TERMINATED"). */
    char path[96];
    snprintf(path, sizeof path, "/admin/refunds/%s/confirm", rno);
    r = pc_t_admin(&g_stack, "POST", path, "{\"why\":\"paid by bank transfer\"}");
    assert_int_equal(r.status, 409);
    assert_non_null(strstr(r.body, "terminated by a chargeback"));
    pc_t_resp_free(&r);
    assert_int_equal(mbal(&m, "reserve"), 4000);
    free(rno);
    /* Beyond the payment even without refunds: still refused. */
    snprintf(ref, sizeof ref, "UNSENT2-%d", (int)getpid());
    snprintf(body, sizeof body,
             "{\"reference\":\"%s\",\"channel_id\":\"sim_otc\",\"channel_txn_id\":\"%s\","
             "\"amount\":1001,\"currency\":\"CNY\",\"reason_code\":\"4853\"}",
             ref, txn);
    r = pc_t_admin(&g_stack, "POST", "/admin/chargebacks", body);
    assert_int_equal(r.status, 422);
    pc_t_resp_free(&r);
    free(txn);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* A refund already gives back part of the payment: a chargeback for more
 * than what is left is not opened against the merchant's money (an offline
 * entry is refused; a channel file's line waits for ops as unmatched). Before, refunds were not
 * deducted, and refunds plus the chargeback could take back more than the buyer paid. */
static void test_refunded_amount_cannot_be_charged_back_again(void **state)
{
    (void)state;
    pc_t_merchant_t m = new_merchant();
    char tn[40], txn[80], code[40], ref[64];
    card_payment(&m, 5000, NULL, tn, txn, NULL);
    assert_int_equal(refund(&m, tn, 2000, code), 200);
    long long pending0 = mbal(&m, "pending");
    snprintf(ref, sizeof ref, "REFUNDED-%d", (int)getpid());
    assert_int_equal(enter_offline(ref, txn, 4000, NULL, NULL), 422);
    assert_int_equal(mbal(&m, "reserve"), 0);
    assert_int_equal(mbal(&m, "pending"), pending0);
    snprintf(ref, sizeof ref, "REFUNDED2-%d", (int)getpid());
    assert_int_equal(enter_offline(ref, txn, 3000, NULL, NULL), 201);
    assert_int_equal(mbal(&m, "reserve"), 3000);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* ---------- rate: metric and risk input ---------- */

/* A series' value on /metrics of the admin port (of node 0, where cases
 * are entered), or on the public API port; -1 when absent. */
static long long metric_at(const char *series, int port)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", port);
    pc_t_resp_t r = pc_t_http("GET", url, NULL, NULL);
    long long v = -1;
    const char *p = r.body ? strstr(r.body, series) : NULL;
    if (p)
        v = strtoll(p + strlen(series) + 1, NULL, 10);
    pc_t_resp_free(&r);
    return v;
}

static long long metric_on(const char *series, int public_port)
{
    return metric_at(series, public_port ? g_stack.http_port : g_stack.admin_port[0]);
}

static long long metric(const char *series)
{
    return metric_on(series, 0);
}

/* The periodic refresh recounts 90 days of payments only where there is a
 * chargeback to count: a rate whose cases aged out is brought to zero once,
 * then left alone (before, every merchant that ever had a rate row was
 * recounted at every refresh, on every node, for good). */
static void test_rates_without_chargebacks_are_not_recounted(void **state)
{
    (void)state;
    pc_stack_start_node(&g_stack, 1);
    free(pc_t_sql(&g_stack,
                  "INSERT INTO chargeback_rates (merchant_id, channel_id, chargebacks_90d, "
                  "payments_90d, rate_bp, computed_at) VALUES ('m_quiet', '', 0, 10, 0, now() - "
                  "interval '1 day'), ('m_aged', '', 3, 10, 3000, now() - interval '1 day') "
                  "RETURNING NULL"));
    /* The aged-out rate goes to zero at the next refresh (every 300 ms). */
    assert_true(pc_t_sql_wait(&g_stack, "0", 10,
                              "SELECT rate_bp FROM chargeback_rates WHERE merchant_id = 'm_aged'"));
    usleep(1500000);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT count(*) FROM chargeback_rates WHERE merchant_id IN "
                                  "('m_quiet', 'm_aged') AND computed_at > now() - interval "
                                  "'1 second'"),
                     0);
    /* Every node's gauge says so, not only the one that recounted it. */
    const char *series = "pc_chargeback_rate_bp{merchant=\"m_aged\",channel=\"*\"}";
    long long v0 = metric_at(series, g_stack.admin_port[0]);
    long long v1 = metric_at(series, g_stack.admin_port[1]);
    pc_stack_stop_node(&g_stack, 1, SIGTERM);
    assert_int_equal(v0, 0);
    assert_int_equal(v1, 0);
}

static void test_rate_metric_and_risk_inputs(void **state)
{
    (void)state;
    pc_t_merchant_t m = new_merchant();
    char tn[40], txn[80], buyer[32], cb[40];
    card_payment(&m, 1000, NULL, tn, txn, buyer);
    for (int i = 0; i < 3; i++) {
        char t2[40], x2[80];
        card_payment(&m, 1000, NULL, t2, x2, NULL);
    }
    char ref[64];
    snprintf(ref, sizeof ref, "RATE-%d", (int)getpid());
    assert_int_equal(enter_offline(ref, txn, 1000, NULL, cb), 201);
    /* One chargeback for four payments: 2500 bp, per channel and overall. */
    char series[200];
    snprintf(series, sizeof series, "pc_chargeback_rate_bp{merchant=\"%s\",channel=\"sim_card\"}",
             m.id);
    long long v = -1;
    for (int i = 0; i < 100 && v != 2500; i++) {
        v = metric(series);
        if (v != 2500)
            usleep(100000);
    }
    assert_int_equal(v, 2500);
    /* Only ops see it: the public /metrics named every merchant with a
     * chargeback, and its rate. */
    assert_int_equal(metric_on(series, 1), -1);
    assert_int_equal(pc_t_sql_int(&g_stack, "SELECT merchant_chargeback_rate_bp('%s')", m.id),
                     2500);
    assert_int_equal(pc_t_sql_int(&g_stack, "SELECT buyer_chargebacks_90d('%s')", buyer), 1);

    /* The disputed buyer's next payment: risk sees the chargeback and the
     * merchant's rate. */
    char t3[40];
    new_trade(&m, "INSTANT", 800, buyer, t3);
    char body[1024];
    snprintf(body, sizeof body,
             "{\"trade_no\":\"%s\",\"buyer_id\":\"%s\",\"method_id\":\"CARD\",\"client\":{\"ip\":"
             "\"10.2.0.1\",\"device_id\":\"cbdev-risk\",\"platform\":\"WEB\"},\"card\":{\"pan\":"
             "\"%s\",\"exp_month\":12,\"exp_year\":2030,\"cvv\":\"123\"}}",
             t3, buyer, pc_t_fresh_pan());
    pc_t_resp_t r = pc_t_call(&g_stack, &m, "POST", "/v1/cashier/pay", body, "risk-after-cb");
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    char *reasons = pc_t_sql(&g_stack,
                             "SELECT risk_reasons::text FROM payments WHERE trade_no = '%s' ORDER "
                             "BY created_at DESC LIMIT 1",
                             t3);
    assert_non_null(strstr(reasons, "BUYER_HAS_CHARGEBACKS"));
    assert_non_null(strstr(reasons, "MERCHANT_CHARGEBACK_RATE"));
    free(reasons);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* A file line unusable for a field after the payment and sum (here its
 * respond_by in another format) opens no case, but it names the disputed
 * payment and sum: they are held until ops resolve the line, as for any
 * line kept for ops. Before, such a line held nothing, and the merchant
 * could refund what the bank had given back already. */
static void test_a_line_with_a_bad_later_field_still_holds_its_sum(void **state)
{
    (void)state;
    pc_t_merchant_t m = new_merchant();
    char tn[40], txn[80], date[16], ref[64], up[1024], code[40];
    card_payment(&m, 5000, NULL, tn, txn, NULL);
    business_date(date);
    snprintf(ref, sizeof ref, "BADTIME-%d", (int)getpid());
    snprintf(up, sizeof up,
             "{\"channel_id\":\"sim_card\",\"date\":\"%s\",\"csv\":\"chargeback_ref,channel_ref,"
             "paycore_ref,amount,currency,reason_code,time,respond_by\\n%s,%s,,2000,CNY,10.4,,"
             "2026-11-29 08:00:05\\n\"}",
             date, ref, txn);
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", "/admin/chargebacks/import", up);
    assert_int_equal(r.status, 200);
    json_t *j = pc_t_json(&r);
    assert_int_equal(json_integer_value(json_object_get(j, "unmatched")), 1);
    assert_int_equal(json_integer_value(json_object_get(j, "created")), 0);
    json_decref(j);
    pc_t_resp_free(&r);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT amount FROM chargeback_unmatched WHERE chargeback_ref = "
                                  "'%s' AND payment_no IS NOT NULL",
                                  ref),
                     2000);
    long st = refund(&m, tn, 5000, code);
    if (st != 422)
        fail_msg("a refund of the whole payment: %ld %s", st, code);
    assert_string_equal(code, "AMOUNT_EXCEEDS_REFUNDABLE");
    assert_int_equal(refund(&m, tn, 3000, code), 200);
    char path[256];
    snprintf(path, sizeof path, "/admin/chargebacks/unmatched/sim_card/%s/resolve", ref);
    r = pc_t_admin(&g_stack, "POST", path, "{\"why\":\"entered by hand from the bank's letter\"}");
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
}

/* A line of a channel's file that opens no case is listed for ops and
 * raises CHARGEBACKS_UNMATCHED until each is resolved. A wallet top-up's
 * dispute is one: its money is the buyer's wallet, not the merchant's.
 * Before, it froze (and on MERCHANT took) the merchant's money, and lines
 * that opened nothing were kept in a table nothing showed. */
static void test_unmatched_lines_are_listed_alerted_and_resolved(void **state)
{
    (void)state;
    pc_t_merchant_t m = new_merchant();
    char tn[40], txn[80], date[16], ref[64];
    card_payment_of(&m, "RECHARGE", 1000, NULL, tn, txn, NULL);
    business_date(date);
    snprintf(ref, sizeof ref, "TOPUP-%d", (int)getpid());
    import_counts_t c = import_line(date, ref, txn, 1000);
    assert_int_equal(c.created, 0);
    assert_int_equal(c.unmatched, 1);
    assert_int_equal(mbal(&m, "reserve"), 0);
    assert_int_equal(mbal(&m, "pending"), 0);
    assert_true(pc_t_alert_wait(&g_stack, "CHARGEBACKS_UNMATCHED", "chargebacks", 1, 15));
    /* Until ops resolve it, the disputed top-up is not refundable: the
     * bank gave the cardholder the money back already. Before: 200, and
     * the buyer was paid twice. */
    char code[40];
    long st = refund(&m, tn, 1000, code);
    if (st != 422)
        fail_msg("a refund of a disputed top-up: %ld %s", st, code);
    assert_string_equal(code, "AMOUNT_EXCEEDS_REFUNDABLE");
    pc_t_resp_t r = pc_t_admin(&g_stack, "GET", "/admin/chargebacks/unmatched", NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, ref));
    assert_non_null(strstr(r.body, "top-up"));
    /* Resolved one by one (earlier tests left lines too), with why. */
    json_t *j = pc_t_json(&r);
    pc_t_resp_free(&r);
    size_t i;
    json_t *u;
    json_array_foreach(json_object_get(j, "unmatched"), i, u)
    {
        char path[256];
        snprintf(path, sizeof path, "/admin/chargebacks/unmatched/%s/%s/resolve",
                 json_string_value(json_object_get(u, "channel_id")),
                 json_string_value(json_object_get(u, "chargeback_ref")));
        r = pc_t_admin(&g_stack, "POST", path, "{}");
        assert_int_equal(r.status, 400);
        pc_t_resp_free(&r);
        r = pc_t_admin(&g_stack, "POST", path, "{\"why\":\"wallet frozen by hand\"}");
        assert_int_equal(r.status, 200);
        pc_t_resp_free(&r);
        r = pc_t_admin(&g_stack, "POST", path, "{\"why\":\"again\"}");
        assert_int_equal(r.status, 404);
        pc_t_resp_free(&r);
    }
    json_decref(j);
    assert_true(pc_t_alert_wait(&g_stack, "CHARGEBACKS_UNMATCHED", "chargebacks", 0, 15));
    r = pc_t_admin(&g_stack, "GET", "/admin/chargebacks/unmatched?status=RESOLVED", NULL);
    assert_non_null(strstr(r.body, "wallet frozen by hand"));
    pc_t_resp_free(&r);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* A channel whose callbacks this node keeps refusing (a rotated secret, a
 * clock minutes off) and none taken pages ops, naming the reason and the
 * sender; before, each was one warn line, and payments waited for their
 * status queries unnoticed. */
static void test_callbacks_refused_again_and_again_page(void **state)
{
    (void)state;
    char url[128], ts[24];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/channel-callbacks/sim_netbank",
             g_stack.http_port);
    snprintf(ts, sizeof ts, "X-Timestamp: %ld", (long)time(NULL));
    for (int i = 0; i < 3; i++) {
        char nonce[64];
        snprintf(nonce, sizeof nonce, "X-Nonce: refusedcallback%04d%d", i, (int)getpid());
        const char *h[] = {ts, nonce, "X-Signature: bm90IHRoZSBzaWduYXR1cmU=",
                           "Content-Type: application/json", NULL};
        pc_t_resp_t r = pc_t_http("POST", url, h, "{\"object\":\"payment\"}");
        assert_int_equal(r.status, 401);
        pc_t_resp_free(&r);
    }
    assert_true(pc_t_alert_wait(&g_stack, "CALLBACKS_REFUSED", "sim_netbank", 1, 15));
    char *msg = pc_t_alert_message(&g_stack, "CALLBACKS_REFUSED", "sim_netbank");
    assert_non_null(strstr(msg, "3 callbacks refused"));
    assert_non_null(strstr(msg, "127.0.0.1"));
    free(msg);
}

/* Yesterday's chargeback files are imported by a daily job, and a channel
 * whose file nobody imported pages ops. Before, files came in only when
 * someone imported them, and a day nobody did went unnoticed: the disputes
 * the channel debited opened no case and froze nothing. Runs last: it
 * restarts the node with the daily import on. */
static void test_the_daily_import_fetches_yesterdays_files_and_a_missing_one_pages(void **state)
{
    (void)state;
    char *yday = pc_t_sql(&g_stack, "SELECT ((now() AT TIME ZONE 'UTC')::date - 1)::text");
    /* sim_card's files were imported before; yesterday's is not. */
    free(pc_t_sql(&g_stack,
                  "INSERT INTO chargeback_imports (channel_id, business_date, origin, sha256) "
                  "VALUES ('sim_card', '%s'::date - 3, 'UPLOAD', 'an earlier file') RETURNING 1",
                  yday));
    assert_true(pc_t_alert_wait(&g_stack, "CHARGEBACK_FILES_MISSING", "chargebacks", 1, 15));
    char *msg = pc_t_alert_message(&g_stack, "CHARGEBACK_FILES_MISSING", "chargebacks");
    assert_non_null(strstr(msg, "sim_card"));
    free(msg);
    /* sim_card2's import of yesterday stopped half way (no completed_at). */
    free(pc_t_sql(&g_stack,
                  "INSERT INTO chargeback_imports (channel_id, business_date, origin, sha256) "
                  "VALUES ('sim_card2', '%s'::date, 'FETCH', 'stopped half way') RETURNING 1",
                  yday));
    /* The daily import on: it fetches yesterday's file of every channel
     * without a complete import. */
    pc_stack_env(&g_stack, "PAYCORE_CHARGEBACK_DAILY_IMPORT", "true");
    pc_stack_env(&g_stack, "PAYCORE_CHARGEBACK_DAILY_POLL_MS", "300");
    pc_stack_stop_node(&g_stack, 0, SIGTERM);
    pc_stack_start_node(&g_stack, 0);
    assert_true(pc_t_sql_wait(&g_stack, "1", 20,
                              "SELECT count(*) FROM chargeback_imports WHERE channel_id = "
                              "'sim_card' AND business_date = '%s' AND origin = 'FETCH'",
                              yday));
    assert_true(pc_t_alert_wait(&g_stack, "CHARGEBACK_FILES_MISSING", "chargebacks", 0, 15));
    assert_true(pc_t_sql_wait(&g_stack, "1", 20,
                              "SELECT count(*) FROM chargeback_imports WHERE channel_id = "
                              "'sim_card2' AND business_date = '%s' AND completed_at IS NOT NULL",
                              yday));
    assert_true(pc_t_sql_int(&g_stack,
                             "SELECT count(DISTINCT channel_id) FROM chargeback_imports WHERE "
                             "business_date = '%s' AND origin = 'FETCH'",
                             yday) >= 2);
    free(yday);
    assert_true(pc_t_ledger_ok(&g_stack));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_online_import_twice_changes_nothing),
        cmocka_unit_test(test_partial_chargeback_from_sim_and_unmatched_lines),
        cmocka_unit_test(test_offline_entry_admin_and_payctl),
        cmocka_unit_test(test_offline_case_then_in_the_file_is_one_case),
        cmocka_unit_test(test_cases_opened_at_once_never_dispute_more_than_the_payment),
        cmocka_unit_test(test_judge_merchant_liable),
        cmocka_unit_test(test_an_operator_name_not_ascii_is_kept_as_ops),
        cmocka_unit_test(test_a_line_under_a_case_reference_of_another_sum_holds_its_sum),
        cmocka_unit_test(test_one_dispute_entered_and_in_the_file_is_not_two_cases),
        cmocka_unit_test(test_a_dispute_judged_before_its_file_line_is_not_two_cases),
        cmocka_unit_test(test_a_guarantee_trades_case_holds_its_escrow),
        cmocka_unit_test(test_a_partly_settled_guarantee_case_splits_its_hold),
        cmocka_unit_test(test_a_judgement_waiting_for_its_trade_holds_no_ledger_row),
        cmocka_unit_test(test_judge_platform_liable),
        cmocka_unit_test(test_judge_none_liable_releases_the_reserve),
        cmocka_unit_test(test_short_balance_is_owed_and_stays_owed_when_merchant_liable),
        cmocka_unit_test(test_lost_dispute_frees_its_amount_for_the_next_cycle),
        cmocka_unit_test(test_payout_keeps_back_what_the_merchant_owes),
        cmocka_unit_test(test_close_before_judgement),
        cmocka_unit_test(test_merchant_views_and_evidence_deadline),
        cmocka_unit_test(test_disputed_amount_is_not_refundable),
        cmocka_unit_test(test_refunded_amount_cannot_be_charged_back_again),
        cmocka_unit_test(test_chargeback_terminates_a_refund_not_sent_yet),
        cmocka_unit_test(test_rate_metric_and_risk_inputs),
        cmocka_unit_test(test_rates_without_chargebacks_are_not_recounted),
        cmocka_unit_test(test_unmatched_lines_are_listed_alerted_and_resolved),
        cmocka_unit_test(test_a_line_with_a_bad_later_field_still_holds_its_sum),
        cmocka_unit_test(test_callbacks_refused_again_and_again_page),
        cmocka_unit_test(test_a_case_left_waiting_past_its_deadline_pages),
        cmocka_unit_test(test_the_daily_import_fetches_yesterdays_files_and_a_missing_one_pages),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
