#include "settlement/settlement.h"
#include "auth/sign.h"
#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"
#include "ledger/ledger.h"
#include "settlement/settlement_calc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct pc_settlement {
    pc_app_t *app;
    uv_timer_t timer;
    int running;
    char settled_day[11]; /* the last day the job finished without failures */
    /* The job's runs that failed in a row (reset by one without failures),
     * the last one's day, how many statements it could not write (-1: not
     * even the list of merchants to settle could be read) and its first
     * failure, for the SETTLEMENT_FAILING alert. */
    int failed_runs, failed_count;
    char failed_day[11];
    char failed_first[200];
};

/* One merchant and currency to settle. */
typedef struct {
    char merchant_id[65];
    char currency[4];
    int fee_rate_bp;
    int cycle_days;
} target_t;

typedef struct run run_t;
typedef void (*run_done_cb)(run_t *run);

struct run {
    pc_app_t *app;
    char date[11];
    target_t *targets;
    int ntargets, next;
    int created, skipped, failed;
    char first_failure[200]; /* "merchant currency (step): error" */
    json_t *statements;      /* created statement objects */
    run_done_cb done;
    void *data;
    /* the statement in progress */
    pc_db_tx_t *tx;
    char statement_no[40];
    pc_settle_in_t in;
    pc_settle_out_t out;
    int64_t items, reserve;
    int items_failed, balances_failed;             /* reported by the last read (later_cb) */
    char lock_ids[4 * (PC_LEDGER_ID_MAX + 1) + 4]; /* the accounts, as a text[] literal */
    char *json;
};

static void run_next(run_t *r);

static void run_free(run_t *r)
{
    free(r->targets);
    free(r->json);
    json_decref(r->statements);
    free(r);
}

static void post_logged_cb(void *data, int status, int64_t txn_id)
{
    (void)txn_id;
    if (status)
        pc_log_warn("settlement.ledger_failed", "%s: %s", (const char *)data,
                    pc_ledger_strerror(status));
}

static void one_failed(run_t *r, int status, const char *step)
{
    const target_t *t = &r->targets[r->next - 1];
    if (r->tx)
        pc_db_tx_rollback(r->tx);
    r->tx = NULL;
    r->failed++;
    pc_log_error("settlement.failed", "%s %s %s (%s): %s; running the day again retries it",
                 t->merchant_id, t->currency, r->date, step, pc_strerror(status));
    if (!r->first_failure[0])
        snprintf(r->first_failure, sizeof r->first_failure, "%s %s (%s): %s", t->merchant_id,
                 t->currency, step, pc_strerror(status));
    run_next(r);
}

static void one_committed_cb(void *data, int status)
{
    run_t *r = data;
    r->tx = NULL;
    if (status) {
        one_failed(r, status, "commit");
        return;
    }
    const target_t *t = &r->targets[r->next - 1];
    r->created++;
    pc_metrics_add("pc_settlements_total", "", 1);
    pc_log_info("settlement.statement",
                "%s %s %s: %lld items, gross %lld, fee %lld, owed recovered %lld, net %lld to "
                "available",
                r->statement_no, t->merchant_id, t->currency, (long long)r->items,
                (long long)r->in.gross, (long long)r->out.fee, (long long)r->out.owed_recovered,
                (long long)r->out.net);
    json_t *j = json_loads(r->json, 0, NULL);
    if (j)
        json_array_append_new(r->statements, j);
    run_next(r);
}

static void filled_cb(void *data, int status, pc_db_res_t *res)
{
    run_t *r = data;
    if (status || pc_db_rows(res) != 1) {
        one_failed(r, status ? status : PC_EIO, "statement");
        return;
    }
    free(r->json);
    r->json = strdup(pc_db_get(res, 0, 0));
    pc_db_tx_commit(r->tx, one_committed_cb, r);
}

static void items_cb(void *data, int status, pc_db_res_t *res)
{
    run_t *r = data;
    if (status) {
        r->items_failed = 1;
        return;
    }
    r->items = pc_db_val_i64(res, 0, "n");
    r->in.gross = pc_db_val_i64(res, 0, "gross");
    r->in.sales = pc_db_val_i64(res, 0, "sales");
}

/* The balances, read (locked, queued deltas folded) after the items were
 * taken: they hold at least what the items credited. The pending balance
 * is read again with the later credits (later_cb). */
static void balances_cb(void *data, int status, pc_db_res_t *res)
{
    run_t *r = data;
    if (status) {
        r->balances_failed = 1;
        return;
    }
    /* Known by the account's parsed type, not by a part of its id: a
     * merchant named "receivable" or "pending" has that word in all its
     * ids, and its reserve was read as its receivable (released every day)
     * or its receivable as nothing. */
    for (int i = 0; i < pc_db_rows(res); i++) {
        const char *id = pc_db_val(res, i, "account_id");
        int64_t bal = pc_db_val_i64(res, i, "balance");
        if (pc_ledger_is_type(id, PC_LEDGER_MERCHANT_PENDING))
            r->in.pending = bal;
        else if (pc_ledger_is_type(id, PC_LEDGER_MERCHANT_RECEIVABLE))
            r->in.receivable = bal;
        else if (pc_ledger_is_type(id, PC_LEDGER_MERCHANT_RESERVE))
            r->reserve = bal;
    }
}

/* The credits after the cut-off not on a statement (money not due yet,
 * which stays in pending) and the pending balance they are part of, read
 * by one statement after the accounts are locked, so both see the same
 * credits: a credit committed between two statements (credits do not wait
 * for the lock) was in the later credits but not in the balance read by
 * the statement before, and the statement then moved that much less of
 * what was due, booked it as a shortfall and marked it settled: left in
 * pending for good. The balance counts credits still queued
 * (ledger_balance: balance plus queued deltas, in this statement's
 * snapshot). The last of the three reads: the statement is made here. */
static void later_cb(void *data, int status, pc_db_res_t *res)
{
    run_t *r = data;
    if (status || r->items_failed || r->balances_failed || pc_db_rows(res) != 1) {
        one_failed(r, status ? status : PC_EIO,
                   r->items_failed      ? "items"
                   : r->balances_failed ? "balances"
                                        : "later credits");
        return;
    }
    r->in.pending = pc_db_get_i64(res, 0, 0);
    r->in.later = pc_db_get_i64(res, 0, 1);
    const target_t *t = &r->targets[r->next - 1];
    r->in.fee_rate_bp = t->fee_rate_bp;
    int rc = pc_settle_compute(&r->in, &r->out);
    pc_settle_legs_t legs;
    if (!rc)
        rc = pc_settle_legs(t->merchant_id, t->currency, &r->out, &legs);
    if (!rc && legs.n > 0) {
        pc_ledger_txn_t txn = {"SETTLEMENT", "settlement", r->statement_no,
                               r->date,      legs.legs,    legs.n};
        rc = pc_ledger_post(r->tx, &txn, post_logged_cb, "SETTLEMENT");
    }
    if (rc) {
        one_failed(r, rc, "posting");
        return;
    }
    char v[12][24];
    const int64_t nums[] = {r->items,        r->in.gross,        r->in.sales,
                            r->out.fee,      r->out.moved,       r->out.shortfall,
                            r->out.fee_owed, r->out.owed_before, r->out.owed_recovered,
                            r->out.net,      r->reserve,         r->out.receivable_released};
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++)
        snprintf(v[i], sizeof v[i], "%lld", (long long)nums[i]);
    const char *p[] = {r->statement_no, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9],
                       v[10],           v[11]};
    if (pc_db_tx_query(
            r->tx,
            "UPDATE settlements s SET item_count = $2::int, gross_amount = $3::bigint, "
            "sales_amount = $4::bigint, fee_amount = $5::bigint, moved_amount = "
            "$6::bigint, shortfall_amount = $7::bigint, fee_owed = $8::bigint, "
            "owed_before = $9::bigint, owed_recovered = $10::bigint, net_amount = "
            "$11::bigint, reserve_held = $12::bigint, receivable_released = $13::bigint, "
            "ledger_txn_id = (SELECT txn_id "
            "FROM ledger_txns WHERE ref_type = 'settlement' AND ref_id = $1 AND kind "
            "= 'SETTLEMENT') WHERE statement_no = $1 RETURNING settlement_json(s)::text",
            13, p, filled_cb, r) < 0)
        one_failed(r, PC_EUNAVAIL, "statement");
}

/* The accounts are locked: no other statement of this merchant runs now.
 * Every posting that credited the pending account before the cut-off and
 * is not on a statement yet becomes an item; the balances are read after
 * (balances_cb). Read before, they could miss a credit that committed
 * between the two statements (credits do not wait for the lock) while the
 * items took it: the statement then booked a false shortfall and marked
 * that credit settled without moving it. */
/* SQL: the ledger id from which statement $1's merchant's postings may still
 * be due: the previous statements of its merchant and currency have put
 * every earlier one on a statement (scan_from_txn, migration 0073). Without
 * it each statement read the merchant's whole history of postings, which
 * grows with every payment: for a large merchant past the pool's deadline,
 * so its statements failed every day and its money never became available. */
#define SCAN_FROM                                                                                  \
    "(SELECT coalesce(max(o.scan_from_txn), 0) FROM settlements o, settlements t WHERE "           \
    "t.statement_no = $1 AND o.merchant_id = t.merchant_id AND o.currency = t.currency AND "       \
    "o.statement_no <> $1)"

static void locked_cb(void *data, int status, pc_db_res_t *res)
{
    run_t *r = data;
    (void)res;
    if (status) {
        one_failed(r, status, "lock");
        return;
    }
    const target_t *t = &r->targets[r->next - 1];
    memset(&r->in, 0, sizeof r->in);
    r->reserve = 0;
    r->items_failed = r->balances_failed = 0;
    char pending[PC_LEDGER_ID_MAX + 1];
    pc_ledger_account_id(pending, sizeof pending, PC_LEDGER_MERCHANT_PENDING, t->merchant_id,
                         t->currency);
    const char *p[] = {r->statement_no, pending};
    /* Every posting that credited the pending account before the cut-off
     * and is not on a statement yet (net per posting: a posting may touch
     * an account in several legs). The trade is found through what the
     * posting refers to (acquiring writes a payment's or settle's trade_no
     * as its memo too). */
    /* The postings are read from SCAN_FROM by the account's index: a
     * merchant's postings can be most of the table, and the planner, not
     * knowing the bound, read all of ledger_entries instead. */
    if (pc_db_tx_query(r->tx, "SET LOCAL enable_seqscan = off", 0, NULL, NULL, NULL) < 0 ||
        pc_db_tx_query(
            r->tx,
            "WITH due AS (SELECT e.account_id, e.txn_id, sum(e.amount)::bigint AS amount, "
            "min(e.created_at) AS posted_at FROM ledger_entries e WHERE e.account_id = $2 AND "
            "e.txn_id >= " SCAN_FROM " AND "
            "e.created_at < (SELECT cutoff FROM settlements WHERE statement_no = $1) AND NOT "
            "EXISTS (SELECT 1 FROM settlement_items i WHERE i.account_id = e.account_id AND "
            "i.txn_id = e.txn_id) GROUP BY e.account_id, e.txn_id HAVING sum(e.amount) > 0), "
            "ins AS (INSERT INTO settlement_items (account_id, txn_id, statement_no, kind, "
            "ref_type, ref_id, trade_no, amount, sale, posted_at) SELECT d.account_id, d.txn_id, "
            "$1, t.kind, t.ref_type, t.ref_id, coalesce(CASE t.ref_type WHEN 'payment' THEN "
            "(SELECT p.trade_no FROM payments p WHERE p.payment_no = t.ref_id) WHEN 'settle' "
            "THEN (SELECT s.trade_no FROM trade_settles s WHERE s.settle_no = t.ref_id) WHEN "
            "'chargeback' THEN (SELECT c.trade_no FROM chargebacks c WHERE c.chargeback_no = "
            "t.ref_id) END, CASE WHEN t.kind IN ('TRADE_PAY', 'TRADE_SETTLE') THEN t.memo END), "
            "d.amount, t.kind IN ('TRADE_PAY', 'TRADE_SETTLE'), d.posted_at FROM "
            "due d JOIN ledger_txns t ON t.txn_id = d.txn_id RETURNING amount, sale) SELECT "
            "count(*) AS n, coalesce(sum(amount), 0)::bigint AS gross, coalesce(sum(amount) "
            "FILTER (WHERE sale), 0)::bigint AS sales FROM ins",
            2, p, items_cb, r) < 0) {
        one_failed(r, PC_EUNAVAIL, "items");
        return;
    }
    /* Then the balances and the credits after the cut-off, pipelined in
     * this order (each statement sees what committed before it ran). */
    const char *q[] = {r->lock_ids};
    if (pc_db_tx_query(r->tx, "SELECT account_id, balance FROM ledger_lock_accounts($1::text[])", 1,
                       q, balances_cb, r) < 0 ||
        pc_db_tx_query(
            r->tx,
            "SELECT coalesce(ledger_balance($2), 0)::bigint AS pending, (SELECT "
            "coalesce(sum(amount), 0)::bigint FROM (SELECT sum(e.amount) AS "
            "amount FROM ledger_entries e WHERE e.account_id = $2 AND e.txn_id >= " SCAN_FROM
            " AND e.created_at >= "
            "(SELECT cutoff FROM settlements WHERE statement_no = $1) AND NOT EXISTS "
            "(SELECT 1 FROM settlement_items i WHERE i.account_id = e.account_id AND "
            "i.txn_id = e.txn_id) GROUP BY e.txn_id HAVING sum(e.amount) > 0) x) AS later",
            2, p, later_cb, r) < 0 ||
        /* Where the next statement starts: past every posting made more
         * than an hour before this cut-off, or before now when the cut-off
         * is still ahead (T+0: tomorrow 00:00), kept when there is none.
         * Each such posting is on a statement now, or was a debit: it began
         * over an hour ago, and paycore's transactions last seconds (the
         * pool's statements time out after db.query_timeout_ms, a long one
         * after its own minute, and one idle for a minute is ended), so it
         * committed before this statement's items were read; a posting that
         * commits later began later and has a higher ledger id. */
        pc_db_tx_query(r->tx,
                       "UPDATE settlements s SET scan_from_txn = coalesce((SELECT max(e.txn_id) + "
                       "1 FROM ledger_entries e WHERE e.account_id = $2 AND e.txn_id >= " SCAN_FROM
                       " AND e.created_at < least(s.cutoff, statement_timestamp()) - interval '1 "
                       "hour'), " SCAN_FROM ") WHERE s.statement_no = $1",
                       2, p, NULL, NULL) < 0)
        one_failed(r, PC_EUNAVAIL, "balances");
}

static void claimed_cb(void *data, int status, pc_db_res_t *res)
{
    run_t *r = data;
    if (status) {
        one_failed(r, status, "claim");
        return;
    }
    if (pc_db_rows(res) == 0) {
        /* Settled already (or by another node just now). */
        pc_db_tx_rollback(r->tx);
        r->tx = NULL;
        r->skipped++;
        run_next(r);
        return;
    }
    const target_t *t = &r->targets[r->next - 1];
    /* The accounts the posting may touch, locked in the ledger's order. */
    static const pc_ledger_type_t types[] = {
        PC_LEDGER_MERCHANT_AVAILABLE, PC_LEDGER_MERCHANT_PENDING, PC_LEDGER_MERCHANT_RECEIVABLE,
        PC_LEDGER_MERCHANT_RESERVE};
    char *ids = r->lock_ids;
    snprintf(ids, sizeof r->lock_ids, "{");
    for (size_t i = 0; i < 4; i++) {
        char id[PC_LEDGER_ID_MAX + 1];
        if (pc_ledger_account_id(id, sizeof id, types[i], t->merchant_id, t->currency)) {
            one_failed(r, PC_EINVAL, "account ids");
            return;
        }
        strcat(ids, id);
        strcat(ids, i < 3 ? "," : "}");
    }
    const char *p[] = {ids};
    if (pc_db_tx_query(r->tx,
                       /* Locked first: one statement of a merchant at a time. The
                        * balances are read again once the items are taken. */
                       "SELECT account_id, balance FROM ledger_lock_accounts($1::text[])", 1, p,
                       locked_cb, r) < 0)
        one_failed(r, PC_EUNAVAIL, "lock");
}

static void begun_cb(void *data, int status, pc_db_tx_t *tx)
{
    run_t *r = data;
    if (status) {
        one_failed(r, status, "begin");
        return;
    }
    r->tx = tx;
    const target_t *t = &r->targets[r->next - 1];
    char hex[17], bp[16], cycle[16];
    pc_random_hex(hex, sizeof hex, 8);
    snprintf(r->statement_no, sizeof r->statement_no, "ST%.4s%.2s%.2s%s", r->date, r->date + 5,
             r->date + 8, hex);
    snprintf(bp, sizeof bp, "%d", t->fee_rate_bp);
    snprintf(cycle, sizeof cycle, "%d", t->cycle_days);
    const char *p[] = {r->statement_no, t->merchant_id, t->currency, r->date, cycle, bp,
                       r->app->node_id};
    if (pc_db_tx_query(tx,
                       "INSERT INTO settlements (statement_no, merchant_id, currency, "
                       "settle_date, cycle_days, cutoff, fee_rate_bp, node) VALUES ($1, $2, $3, "
                       "$4::date, $5::int, (($4::date - $5::int) + 1)::timestamp AT TIME ZONE "
                       "'UTC', $6::int, $7) ON CONFLICT ON CONSTRAINT settlements_one_per_day DO "
                       "NOTHING RETURNING statement_no",
                       7, p, claimed_cb, r) < 0)
        one_failed(r, PC_EUNAVAIL, "claim");
}

static void run_next(run_t *r)
{
    if (r->next >= r->ntargets) {
        r->done(r);
        return;
    }
    r->next++;
    if (pc_db_begin(r->app->db, NULL, begun_cb, r) < 0) {
        r->failed++;
        if (!r->first_failure[0])
            snprintf(r->first_failure, sizeof r->first_failure,
                     "%s %s: no database transaction could be begun",
                     r->targets[r->next - 1].merchant_id, r->targets[r->next - 1].currency);
        run_next(r);
    }
}

static void targets_cb(void *data, int status, pc_db_res_t *res)
{
    run_t *r = data;
    if (status) {
        r->failed = -1;
        snprintf(r->first_failure, sizeof r->first_failure,
                 "the merchants to settle could not be read: %s", pc_strerror(status));
        r->done(r);
        return;
    }
    int n = pc_db_rows(res);
    r->targets = calloc((size_t)n + 1, sizeof *r->targets);
    if (!r->targets) {
        r->failed = -1;
        r->done(r);
        return;
    }
    for (int i = 0; i < n; i++) {
        target_t *t = &r->targets[i];
        snprintf(t->merchant_id, sizeof t->merchant_id, "%s", pc_db_val(res, i, "merchant_id"));
        snprintf(t->currency, sizeof t->currency, "%s", pc_db_val(res, i, "currency"));
        t->fee_rate_bp = (int)pc_db_val_i64(res, i, "fee_rate_bp");
        t->cycle_days = (int)pc_db_val_i64(res, i, "settle_cycle_days");
    }
    r->ntargets = n;
    run_next(r);
}

/* Settles every merchant and currency not settled for date yet; done runs
 * once with the counts (failed -1: the list itself could not be read). */
static int run_start(pc_app_t *app, const char *date, run_done_cb done, void *data)
{
    run_t *r = calloc(1, sizeof *r);
    if (!r)
        return PC_ENOMEM;
    r->app = app;
    snprintf(r->date, sizeof r->date, "%s", date);
    r->statements = json_array();
    r->done = done;
    r->data = data;
    const char *p[] = {r->date};
    int rc = pc_db_query(app->db,
                         "SELECT a.owner_id AS merchant_id, a.currency, m.fee_rate_bp, "
                         "m.settle_cycle_days FROM ledger_accounts a JOIN merchants m ON "
                         "m.merchant_id = a.owner_id WHERE a.type = 'MERCHANT_PENDING' AND NOT "
                         "EXISTS (SELECT 1 FROM settlements s WHERE s.merchant_id = a.owner_id "
                         "AND s.currency = a.currency AND s.settle_date = $1::date) ORDER BY 1, 2",
                         1, p, targets_cb, r);
    if (rc < 0)
        run_free(r);
    return rc;
}

/* "YYYY-MM-DD" of now in UTC. */
static void utc_today(char out[11], int *hour)
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(out, 11, "%Y-%m-%d", &tm);
    if (hour)
        *hour = tm.tm_hour;
}

/* ---------- the daily job ---------- */

static void job_done(run_t *r)
{
    pc_settlement_t *st = r->data;
    st->running = 0;
    if (r->failed == 0) {
        snprintf(st->settled_day, sizeof st->settled_day, "%s", r->date);
        st->failed_runs = 0;
    } else {
        st->failed_runs++;
        st->failed_count = r->failed;
        snprintf(st->failed_day, sizeof st->failed_day, "%s", r->date);
        snprintf(st->failed_first, sizeof st->failed_first, "%s",
                 r->first_failure[0] ? r->first_failure : "?");
    }
    if (r->created || r->failed)
        pc_log_info("settlement.day", "%s: %d statements, %d already settled, %d failed", r->date,
                    r->created, r->skipped, r->failed);
    run_free(r);
}

static void job_tick(uv_timer_t *t)
{
    pc_settlement_t *st = t->data;
    if (st->running || st->app->shutting_down || !pc_config_bool(st->app->cfg, "settlement.auto"))
        return;
    char today[11];
    int hour;
    utc_today(today, &hour);
    if (!strcmp(st->settled_day, today) ||
        hour < pc_config_int(st->app->cfg, "settlement.hour_utc"))
        return;
    st->running = 1;
    if (run_start(st->app, today, job_done, st) < 0)
        st->running = 0;
}

/* ---------- POST /admin/settlements/run ---------- */

static void admin_run_done(run_t *r)
{
    pc_http_req_t *req = r->data;
    /* Ops ran the failing day again (as SETTLEMENT_FAILING says) and it
     * settled: the alert goes now, not at the job's next run. */
    pc_settlement_t *st = r->app->settlement;
    if (st && r->failed == 0 && st->failed_runs && !strcmp(r->date, st->failed_day))
        st->failed_runs = 0;
    if (r->failed < 0) {
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
    } else {
        json_t *answer = json_pack("{s:s,s:i,s:i,s:i,s:O}", "date", r->date, "statements_created",
                                   r->created, "already_settled", r->skipped, "failed", r->failed,
                                   "statements", r->statements);
        /* What went wrong first, as SETTLEMENT_FAILING says it: ops see
         * why without the logs (payctl exits 1 when failed > 0). */
        if (r->failed > 0)
            json_object_set_new(answer, "first_failure", json_string(r->first_failure));
        pc_http_respond_json(req, 200, answer);
    }
    run_free(r);
}

static int valid_date(const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    if (!s || strlen(s) != 10)
        return 0;
    const char *end = strptime(s, "%Y-%m-%d", &tm);
    if (!end || *end)
        return 0;
    /* strptime accepts 2026-02-31; a round trip through timegm does not. */
    struct tm copy = tm;
    time_t t = timegm(&copy);
    struct tm back;
    gmtime_r(&t, &back);
    return back.tm_year == tm.tm_year && back.tm_mon == tm.tm_mon && back.tm_mday == tm.tm_mday;
}

static void admin_run(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    json_t *b = pc_http_req_json(req);
    const char *date = b ? json_string_value(json_object_get(b, "date")) : NULL;
    char today[11];
    utc_today(today, NULL);
    if (!date || !valid_date(date)) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "date", "a business date YYYY-MM-DD");
        return;
    }
    if (strcmp(date, today) > 0) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "date",
                              "a day that has begun (UTC); not a future day");
        return;
    }
    if (run_start(app, date, admin_run_done, req) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

/* ---------- GET /admin/settlements ---------- */

static void json_text_cb(void *data, int status, pc_db_res_t *res)
{
    pc_http_req_t *req = data;
    if (status) {
        pc_respond_db_error(req, status);
        return;
    }
    if (pc_db_rows(res) == 0 || pc_db_isnull(res, 0, 0)) {
        pc_http_respond_error(req, PC_API_NOT_FOUND, NULL, "no such statement");
        return;
    }
    pc_respond_json_text(req, 200, pc_db_get(res, 0, 0));
}

static void admin_list(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    const char *m = pc_http_req_query_param(req, "merchant_id");
    const char *d = pc_http_req_query_param(req, "date");
    if (d && !valid_date(d)) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "date", "a business date YYYY-MM-DD");
        return;
    }
    const char *p[] = {m && m[0] ? m : NULL, d};
    if (pc_db_query(app->db,
                    "SELECT json_build_object('settlements', coalesce(json_agg(settlement_json(s) "
                    "ORDER BY s.settle_date DESC, s.merchant_id, s.currency), '[]'::json))::text "
                    "FROM (SELECT * FROM settlements WHERE ($1::text IS NULL OR merchant_id = $1) "
                    "AND ($2::date IS NULL OR settle_date = $2::date) ORDER BY settle_date DESC, "
                    "merchant_id, currency LIMIT 1000) s",
                    2, p, json_text_cb, req) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

/* GET /admin/settlements/{no}[?limit=N&after=TXN]: the statement and a page
 * of its items in ledger order (limit 1-1000, default 1000), with
 * items_next_after (null on the last page) to ask for the next. Before, every
 * item came in one answer: a large merchant's day (one item a posting,
 * hundreds of thousands) ran past the query timeout, and the statement
 * could not be opened at all. */
static void admin_get(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    char lim[8];
    int bad = 0;
    const char *limit = pc_limit_param(req, 1000, lim, &bad);
    if (bad) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "limit", "an integer 1-1000");
        return;
    }
    const char *after = pc_http_req_query_param(req, "after");
    if (after &&
        (!after[0] || strlen(after) > 18 || strspn(after, "0123456789") != strlen(after))) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "after",
                              "the items_next_after of the page before");
        return;
    }
    const char *p[] = {pc_http_req_param(req, "statement_no"), after, limit};
    if (pc_db_query(app->db,
                    "WITH it AS (SELECT i.* FROM settlement_items i WHERE i.statement_no = $1 AND "
                    "($2::bigint IS NULL OR i.txn_id > $2::bigint) ORDER BY i.txn_id LIMIT "
                    "$3::int + 1), pg AS (SELECT * FROM it ORDER BY txn_id LIMIT $3::int) "
                    "SELECT (settlement_json(s)::jsonb || jsonb_build_object('items', (SELECT "
                    "coalesce(jsonb_agg(jsonb_build_object('txn_id', i.txn_id, 'kind', i.kind, "
                    "'ref_type', i.ref_type, 'ref_id', i.ref_id, 'trade_no', i.trade_no, "
                    "'amount', i.amount, 'sale', i.sale) ORDER BY i.txn_id), '[]'::jsonb) FROM "
                    "pg i), 'items_next_after', CASE WHEN (SELECT count(*) FROM it) > $3::int "
                    "THEN (SELECT max(txn_id) FROM pg)::text END))::text FROM settlements s WHERE "
                    "s.statement_no = $1",
                    3, p, json_text_cb, req) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

/* ---------- lifecycle ---------- */

pc_settlement_t *pc_settlement_new(pc_app_t *app)
{
    pc_settlement_t *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    st->app = app;
    uv_timer_init(app->loop, &st->timer);
    st->timer.data = st;
    pc_metrics_describe("pc_settlements_total", PC_METRIC_COUNTER,
                        "settlement statements written by this node");
    pc_router_add(app->admin, "POST", "/admin/settlements/run", admin_run, app);
    pc_router_add(app->admin, "GET", "/admin/settlements", admin_list, app);
    pc_router_add(app->admin, "GET", "/admin/settlements/{statement_no}", admin_get, app);
    return st;
}

int pc_settlement_failing(const pc_settlement_t *st, char day[11], char *first, size_t firstlen)
{
    if (!st || st->failed_runs < PC_SETTLEMENT_FAILING_RUNS)
        return 0;
    snprintf(day, 11, "%s", st->failed_day);
    snprintf(first, firstlen, "%s", st->failed_first);
    return st->failed_count;
}

void pc_settlement_start(pc_settlement_t *st)
{
    uint64_t ms = (uint64_t)pc_config_int(st->app->cfg, "settlement.poll_ms");
    uv_timer_start(&st->timer, job_tick, ms, ms);
}

void pc_settlement_stop(pc_settlement_t *st)
{
    uv_timer_stop(&st->timer);
    uv_close((uv_handle_t *)&st->timer, NULL);
}

void pc_settlement_free(pc_settlement_t *st)
{
    free(st);
}
