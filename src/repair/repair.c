#include "repair/repair.h"
#include "channel/client.h"
#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"
#include "engine/engine.h"
#include "payout/payout.h"
#include "refund/refund.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pc_repair {
    pc_app_t *app;
    uv_timer_t timer;
    char schedule[512]; /* "{2000,5000,…}" as a PostgreSQL int array literal */
    long long not_found_after_s;
    int claiming;
    int in_flight;
    long long claim_warned_s; /* pc_log_due */
};

typedef struct {
    pc_repair_t *r;
    char payment_no[40];
    char channel_id[65];
    long long age_ms; /* since the payment's request was last sent */
    int last;
    int acknowledged; /* the channel answered with its reference: it took the payment */
} job_t;

static void count(const char *result)
{
    char labels[64];
    snprintf(labels, sizeof labels, "kind=\"payment\",result=\"%s\"", result);
    pc_metrics_add("pc_repairs_total", labels, 1);
}

static void ignore_cb(void *data, int status, pc_db_res_t *res)
{
    (void)data;
    (void)status;
    (void)res;
}

/* What is flagged when a payment, payout or refund is still in flight after
 * its last scheduled query (the kinds' statuses in flight differ: a payout
 * or refund not yet sent is ACCEPTED, and that is its runner's to send, not
 * ops'). */
static const struct {
    const char *kind, *event, *sql;
} flag_kinds[] = {
    {"payment", "repair.exhausted",
     "UPDATE payments SET needs_ops = true WHERE payment_no = $1 AND NOT needs_ops AND status IN "
     "('PROCESSING', 'UNKNOWN') RETURNING 1"},
    {"payout", "payout.exhausted",
     "UPDATE payouts SET needs_ops = true WHERE payout_no = $1 AND NOT needs_ops AND status = "
     "'PROCESSING' RETURNING 1"},
    {"refund", "refund.query_exhausted",
     "UPDATE refunds SET needs_ops = true, updated_at = now() WHERE refund_no = $1 AND NOT "
     "needs_ops AND status = 'PROCESSING' RETURNING 1"},
};

typedef struct {
    size_t k; /* index in flag_kinds */
    char no[40];
    const char *why; /* static */
} flag_t;

static void flagged_cb(void *data, int status, pc_db_res_t *res)
{
    flag_t *f = data;
    if (!status && pc_db_rows(res) > 0) {
        pc_log_error(flag_kinds[f->k].event,
                     "%s %s %s after the last scheduled query: flagged for ops, queried again at "
                     "the schedule's last pace",
                     flag_kinds[f->k].kind, f->no, f->why);
        if (f->k == 0)
            count("flagged");
    }
    free(f);
}

void pc_repair_flag(pc_app_t *app, const char *kind, const char *no, const char *why)
{
    size_t k = 0;
    while (k < sizeof flag_kinds / sizeof flag_kinds[0] && strcmp(flag_kinds[k].kind, kind))
        k++;
    flag_t *f = k < sizeof flag_kinds / sizeof flag_kinds[0] ? calloc(1, sizeof *f) : NULL;
    if (!f)
        return;
    f->k = k;
    snprintf(f->no, sizeof f->no, "%s", no);
    f->why = why;
    const char *p[] = {no};
    if (pc_db_query(app->db, flag_kinds[k].sql, 1, p, flagged_cb, f) < 0)
        free(f);
}

void pc_repair_claim_failed(long long *last_s, const char *event, const char *what, int status)
{
    if (pc_log_due(last_s, 60))
        pc_log_warn(event,
                    "%s failed: %s (logged once a minute while it lasts; alert QUERIES_OVERDUE)",
                    what, pc_strerror(status));
}

static void flag_for_ops(job_t *j, const char *why)
{
    pc_repair_flag(j->r->app, "payment", j->payment_no, why);
}

/* The last scheduled query came too early to apply the channel's answer: one
 * more query once the wait is over, rather than flagging for ops a payment
 * the channel has answered. */
static void requery_after(job_t *j, int64_t wait_ms)
{
    char ms[24];
    snprintf(ms, sizeof ms, "%lld", (long long)wait_ms);
    const char *p[] = {j->payment_no, ms};
    pc_db_query(j->r->app->db,
                "UPDATE payments SET next_query_at = now() + $2::bigint * interval '1 "
                "millisecond' WHERE payment_no = $1 AND status IN ('PROCESSING', 'UNKNOWN')",
                2, p, ignore_cb, NULL);
}

static void applied_cb(void *data, pc_api_err_t err, const char *message, json_t *payment)
{
    job_t *j = data;
    (void)message;
    json_decref(payment);
    if (err != PC_API_OK)
        pc_log_warn("repair.apply_failed", "payment %s: %s", j->payment_no, pc_api_err_code(err));
    /* An answer that failed to apply after the last scheduled query (the
     * database failed at that moment, or the capture is refused) is for ops
     * to see; a payment the answer moved on is not touched. */
    if (j->last)
        flag_for_ops(j, "has a final answer from its channel that could not be applied");
    j->r->in_flight--;
    free(j);
}

static void queried_cb(void *data, const pc_ch_result_t *res)
{
    job_t *j = data;
    pc_repair_t *r = j->r;
    int final = res->status == PC_CH_SUCCESS || res->status == PC_CH_FAILED;
    /* A failure is only the query's to apply once paycore's own request has
     * certainly ended: until then that request may still land, or its
     * decline is moving the payment to the next channel of its route (test_
     * repair once caught a NOT_FOUND failing a payment 3 ms before its own
     * request timed out). "No record" also waits not_found_after_s, for a
     * request that left before paycore gave up to arrive. */
    int64_t wait_ms = pc_channel_failure_wait_ms(r->app->channel_client, j->channel_id, j->age_ms,
                                                 res, r->not_found_after_s * 1000, j->acknowledged);
    if (wait_ms != 0)
        final = 0;
    if (final) {
        count(res->status == PC_CH_SUCCESS ? "success" : "failed");
        pc_log_info("repair.applied", "payment %s: channel says %s%s%s", j->payment_no,
                    res->status == PC_CH_SUCCESS ? "SUCCESS" : "FAILED", res->code[0] ? " " : "",
                    res->code);
        if (pc_engine_apply(r->app->engine, j->channel_id, j->payment_no, res, applied_cb, j) == 0)
            return;
    } else {
        count("pending");
        /* Before, only the request's own answer recorded the channel's
         * reference: a request that timed out, then a query saying the
         * channel holds it, then one saying it has no record failed the
         * payment as if it had never arrived. */
        if (res->status == PC_CH_PROCESSING)
            pc_engine_note_taken(r->app->engine, j->channel_id, j->payment_no, res->channel_txn_id);
        if (wait_ms == PC_CH_FORGOTTEN)
            flag_for_ops(j, "was taken by its channel, which now has no record of it");
        else if (j->last && wait_ms > 0)
            requery_after(j, wait_ms);
        else if (j->last)
            flag_for_ops(j, "still has no final answer");
    }
    r->in_flight--;
    free(j);
}

/* The answer to closing a payment of a closed trade at its channel (a pay
 * code, a VA number, a bank link the buyer could still use): closed there,
 * it fails here as a final answer of a query would fail it, its balance
 * and coupon given back at once. Before, they stayed held until the code's
 * end (days, for a VA), and a buyer paying it meanwhile was charged for a
 * trade the merchant had closed (then refunded as an error). Anything else
 * (it succeeded; the channel refused the close, or has no record) is for
 * the status query. */
static void closed_cb(void *data, const pc_ch_result_t *res)
{
    job_t *j = data;
    pc_repair_t *r = j->r;
    if (res->status == PC_CH_FAILED && strcmp(res->code, "NOT_FOUND") != 0) {
        count("closed");
        pc_log_info("repair.closed", "payment %s: its trade closed, closed at %s (%s)",
                    j->payment_no, j->channel_id, res->code);
        if (pc_engine_apply(r->app->engine, j->channel_id, j->payment_no, res, applied_cb, j) == 0)
            return;
    } else if (pc_channel_query_payment(r->app->channel_client, j->channel_id, j->payment_no,
                                        queried_cb, j) == 0) {
        return;
    }
    r->in_flight--;
    free(j);
}

static void claimed_cb(void *data, int status, pc_db_res_t *res)
{
    pc_repair_t *r = data;
    r->claiming = 0;
    if (status) {
        pc_repair_claim_failed(&r->claim_warned_s, "repair.claim_failed",
                               "claiming due status queries of payments", status);
        return;
    }
    for (int i = 0; i < pc_db_rows(res); i++) {
        job_t *j = calloc(1, sizeof *j);
        j->r = r;
        snprintf(j->payment_no, sizeof j->payment_no, "%s", pc_db_val(res, i, "payment_no"));
        j->age_ms = pc_db_val_i64(res, i, "age_ms");
        j->last = pc_db_val(res, i, "last")[0] == 't';
        j->acknowledged = pc_db_val(res, i, "acknowledged")[0] == 't';
        const char *ch = pc_db_val(res, i, "channel_id");
        snprintf(j->channel_id, sizeof j->channel_id, "%s", ch);
        r->in_flight++;
        /* Its trade closed while it waits at its channel: closed there
         * first (closed_cb). */
        const char *txn = pc_db_val(res, i, "channel_txn_id");
        if (ch[0] && txn[0] && pc_db_val(res, i, "trade_closed")[0] == 't' &&
            pc_channel_close_payment(r->app->channel_client, ch, j->payment_no, txn, closed_cb,
                                     j) == 0)
            continue;
        if (!ch[0] || pc_channel_query_payment(r->app->channel_client, ch, j->payment_no,
                                               queried_cb, j) < 0) {
            if (j->last)
                flag_for_ops(j, "could not be queried");
            r->in_flight--;
            free(j);
        }
    }
}

static void tick(uv_timer_t *t)
{
    pc_repair_t *r = t->data;
    if (r->claiming || r->in_flight > 200 || r->app->shutting_down)
        return;
    r->claiming = 1;
    const char *p[] = {r->schedule};
    /* A payment waiting for its buyer (a pay code, a VA number, a QR or a
     * redirect: it has an action) lives as long as its trade: PROCESSING is
     * the right answer until the trade's expiry, and only then is the end
     * of the schedule a reason to flag it for ops. Before, a code of a trade
     * lasting days was flagged (REPAIR_EXHAUSTED, "record the outcome")
     * about four hours after it was issued, while its buyer could still pay.
     * Claim by moving each payment's next query forward: another node's
     * claim skips these rows (SKIP LOCKED) and sees the new time after. Past
     * the schedule's end the claim still sets one at its last pace: it is the
     * lease that brings the query back if this node dies before the answer
     * (the answer then flags the payment, or closes it). */
    if (pc_db_query(r->app->db,
                    "WITH due AS (SELECT payment_no, trade_no FROM payments WHERE status IN "
                    "('PROCESSING', 'UNKNOWN') AND next_query_at <= now() ORDER BY next_query_at "
                    "LIMIT 50 FOR UPDATE SKIP LOCKED) UPDATE payments p SET query_attempts = "
                    "p.query_attempts + 1, next_query_at = now() + ($1::int[])[least("
                    "p.query_attempts + 1, array_length($1::int[], 1))] * interval '1 "
                    "millisecond' FROM due JOIN trades t ON t.trade_no = due.trade_no WHERE "
                    "p.payment_no = due.payment_no RETURNING p.payment_no, coalesce(p.channel_id, "
                    "'') AS channel_id, floor(extract(epoch FROM now() - coalesce(p.sent_at, "
                    "p.created_at)) * 1000)::bigint AS age_ms, (p.query_attempts > "
                    "array_length($1::int[], 1) AND NOT (p.action IS NOT NULL AND t.expires_at > "
                    "now())) AS last, (p.channel_txn_id IS NOT NULL OR p.acknowledged_at IS NOT "
                    "NULL) AS acknowledged, coalesce(p.channel_txn_id, '') AS channel_txn_id, "
                    "t.status = 'TRADE_CLOSED' AS trade_closed",
                    1, p, claimed_cb, r) < 0)
        r->claiming = 0;
}

/* ---------- ops: payments and payouts flagged for a person ---------- */

/* The statuses in which each kind is still in flight (its flag is for the
 * status queries to clear); any other is final. */
#define PAYMENT_IN_FLIGHT "('PROCESSING', 'UNKNOWN')"
#define PAYOUT_IN_FLIGHT "('ACCEPTED', 'PROCESSING')"
#define REFUND_IN_FLIGHT "('ACCEPTED', 'PROCESSING', 'SUSPENDED')"

/* One kind's page of GET /admin/needs-ops as a jsonb object {list: [...],
 * list_next_after: ref or null}, or {} when $1 (a kind) names another:
 * flagged rows oldest first (created_at, then ref: an order that a row's
 * later updates do not change, so paging neither skips nor repeats), $2 at
 * most, after the row $3. */
#define NEEDS_OPS_PAGE(kind, list, table, key, fields)                                             \
    "(SELECT CASE WHEN $1::text IS NULL OR $1 = '" kind "' THEN jsonb_build_object('" list         \
    "', coalesce(jsonb_agg(jsonb_build_object(" fields ") ORDER BY x.created_at, x." key           \
    "), '[]'::jsonb), '" list "_next_after', CASE WHEN count(*) = $2::int THEN "                   \
    "(array_agg(x." key " ORDER BY x.created_at DESC, x." key " DESC))[1] END) ELSE '{}'::jsonb "  \
    "END FROM (SELECT * FROM " table " WHERE needs_ops AND ($3::text IS NULL OR (created_at, " key \
    ") > (SELECT created_at, " key " FROM " table " WHERE " key                                    \
    " = $3)) ORDER BY created_at, " key " LIMIT $2::int) x)"
#define NEEDS_OPS_AT                                                                               \
    "'updated_at', to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"

#define NEEDS_OPS_PAYMENT                                                                          \
    "'payment_no', payment_no, 'trade_no', trade_no, 'merchant_id', merchant_id, 'status', "       \
    "status, 'channel_id', channel_id, 'amount', amount, 'external_amount', external_amount, "     \
    "'currency', currency, 'final', status NOT IN " PAYMENT_IN_FLIGHT ", " NEEDS_OPS_AT
#define NEEDS_OPS_PAYOUT                                                                           \
    "'payout_no', payout_no, 'merchant_id', merchant_id, 'status', status, 'channel_id', "         \
    "channel_id, 'amount', amount, 'currency', currency, 'final', status NOT "                     \
    "IN " PAYOUT_IN_FLIGHT ", " NEEDS_OPS_AT
#define NEEDS_OPS_REFUND                                                                           \
    "'refund_no', refund_no, 'trade_no', trade_no, 'merchant_id', merchant_id, 'status', status, " \
    "'method', method, 'channel_id', channel_id, 'amount', amount, 'currency', currency, "         \
    "'final', status NOT IN " REFUND_IN_FLIGHT ", " NEEDS_OPS_AT
#define NEEDS_OPS_PAYMENTS                                                                         \
    NEEDS_OPS_PAGE("payment", "payments", "payments", "payment_no", NEEDS_OPS_PAYMENT)
#define NEEDS_OPS_PAYOUTS                                                                          \
    NEEDS_OPS_PAGE("payout", "payouts", "payouts", "payout_no", NEEDS_OPS_PAYOUT)
#define NEEDS_OPS_REFUNDS                                                                          \
    NEEDS_OPS_PAGE("refund", "refunds", "refunds", "refund_no", NEEDS_OPS_REFUND)
static const char needs_ops_sql[] =
    "SELECT (" NEEDS_OPS_PAYMENTS " || " NEEDS_OPS_PAYOUTS " || " NEEDS_OPS_REFUNDS ")::text";

/* GET /admin/needs-ops[?kind=payment|payout|refund&limit=N&after=REF]: the
 * flagged payments, payouts and refunds, oldest first, a page of limit
 * (1-1000, 500 when absent) of each; when a kind's page is full,
 * <kind>s_next_after names its last row, and ?kind=<kind>&after= continues
 * that kind's list (the lists stopped at 500 with no way on, and a channel
 * outage flags thousands). "final" says the row is in a final state a
 * channel contradicted (resolved by hand); the others are still queried on
 * the schedule's last pace. */
static void list_needs_ops(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    const char *kind = pc_http_req_query_param(req, "kind");
    if (kind && strcmp(kind, "payment") != 0 && strcmp(kind, "payout") != 0 &&
        strcmp(kind, "refund") != 0) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "kind", "payment, payout or refund");
        return;
    }
    static const char hint[] = "after: with kind, that kind's <kind>s_next_after";
    char lim[8];
    const char *limit, *after;
    if (pc_page_params(req, 500, lim, &limit, &after, hint) < 0)
        return;
    if (after && !kind) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "after", hint);
        return;
    }
    const char *p[] = {kind, limit, after};
    if (pc_db_query(app->db, needs_ops_sql, 3, p, pc_respond_json_row_cb, req) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

static void resolved_cb(void *data, int status, pc_db_res_t *res)
{
    pc_http_req_t *req = data;
    if (status) {
        pc_respond_db_error(req, status);
        return;
    }
    const char *kind = pc_http_req_param(req, "kind");
    const char *ref = pc_http_req_param(req, "ref");
    if (!pc_db_isnull(res, 0, 0)) {
        pc_log_info("repair.resolved", "%s %s (%s) resolved by ops", kind, ref,
                    pc_db_get(res, 0, 0));
        json_t *o = json_pack("{s:s,s:s,s:s,s:b}", "kind", kind, "ref", ref, "status",
                              pc_db_get(res, 0, 0), "needs_ops", 0);
        pc_http_respond_json(req, 200, o);
        return;
    }
    if (pc_db_isnull(res, 0, 1)) {
        pc_http_respond_error(req, PC_API_NOT_FOUND, NULL, "no such payment, payout or refund");
        return;
    }
    char msg[160];
    snprintf(msg, sizeof msg,
             !strcmp(pc_db_get(res, 0, 2), "t")
                 ? "it is %s and still queried at its channel: the flag goes when it is final"
                 : "it is %s and not flagged",
             pc_db_get(res, 0, 1));
    pc_http_respond_error(req, PC_API_INVALID_STATE, NULL, msg);
}

/* What ops resolve, per kind: the statement that reads an item (status,
 * flag, in flight, channel) and the one that clears a final item's flag with
 * its resolution kept; the same for each kind but for its table and what
 * counts as still in flight. */
typedef struct {
    const char *name, *read_sql, *resolve_sql;
} ops_kind_t;

#define READ_SQL(table, key, in_flight)                                                            \
    "SELECT status, needs_ops, status IN " in_flight " AS in_flight, coalesce(channel_id, '') AS " \
    "channel_id FROM " table " WHERE " key " = $1"
#define RESOLVE_SQL(k, table, key, in_flight)                                                      \
    "WITH f AS (UPDATE " table " SET needs_ops = false, updated_at = now() WHERE " key " = $1 "    \
    "AND needs_ops AND status NOT IN " in_flight " RETURNING status), i AS (INSERT INTO "          \
    "needs_ops_resolutions (kind, ref, status, who, why) SELECT '" k "', $1, status, $2, $3 "      \
    "FROM f) SELECT (SELECT status FROM f), x.status, x.needs_ops FROM (SELECT 1) one LEFT "       \
    "JOIN " table " x ON x." key " = $1"
#define OPS_KIND(k, table, key, in_flight)                                                         \
    {                                                                                              \
        k, READ_SQL(table, key, in_flight), RESOLVE_SQL(k, table, key, in_flight)                  \
    }
static const ops_kind_t ops_kinds[] = {
    OPS_KIND("payment", "payments", "payment_no", PAYMENT_IN_FLIGHT),
    OPS_KIND("payout", "payouts", "payout_no", PAYOUT_IN_FLIGHT),
    OPS_KIND("refund", "refunds", "refund_no", REFUND_IN_FLIGHT),
};
#undef OPS_KIND
#undef RESOLVE_SQL
#undef READ_SQL

static const ops_kind_t *ops_kind(const char *name)
{
    for (size_t k = 0; k < sizeof ops_kinds / sizeof ops_kinds[0]; k++)
        if (!strcmp(name, ops_kinds[k].name))
            return &ops_kinds[k];
    return NULL;
}

/* ---------- ops: the channel's answer, learnt by hand ---------- */

/* A payment, payout or refund its channel never answered for, whatever the
 * status queries asked: ops learn the outcome from the channel by other
 * means (a call, its portal) and record it. It is applied exactly as the
 * channel's own answer would be (the same conditional transitions: a real
 * answer arriving at the same moment wins or loses cleanly, and a later
 * contradicting one is flagged like any other), and kept with who and why. */
typedef struct {
    pc_http_req_t *req;
    pc_app_t *app;
    const char *kind, *ref, *why, *outcome; /* borrowed from req */
    pc_ch_result_t res;
    const char *read_sql; /* the kind's */
} outcome_t;

static void outcome_kept_cb(void *data, int status, pc_db_res_t *res)
{
    outcome_t *o = data;
    (void)res;
    if (status)
        pc_log_error("repair.resolution_unrecorded",
                     "%s %s was recorded %s by ops, but who and why were not kept (%s)", o->kind,
                     o->ref, o->outcome, pc_strerror(status));
    json_t *a = json_pack("{s:s,s:s,s:s,s:b}", "kind", o->kind, "ref", o->ref, "outcome",
                          o->outcome, "needs_ops", 0);
    pc_http_respond_json(o->req, 200, a);
}

/* Ends the request: now is whether the item stands as ops said; status, when
 * known, what it is instead. */
static void outcome_done(outcome_t *o, pc_api_err_t err, int now, const char *status)
{
    if (err != PC_API_OK) {
        pc_http_respond_error(o->req, err, NULL, "not recorded; retry");
        return;
    }
    if (!now) {
        char msg[200];
        if (status)
            snprintf(msg, sizeof msg,
                     "not recorded: its channel's answer came first (it is %s now); see GET "
                     "/admin/needs-ops",
                     status);
        else
            snprintf(msg, sizeof msg,
                     "not recorded: it is no longer in flight and flagged (its channel's answer "
                     "came first); see GET /admin/needs-ops");
        pc_http_respond_error(o->req, PC_API_INVALID_STATE, NULL, msg);
        return;
    }
    pc_log_warn("repair.resolved_by_ops", "%s %s recorded %s by ops (%s): %s", o->kind, o->ref,
                o->outcome, pc_operator_of(o->req), o->why);
    const char *p[] = {o->kind, o->ref, o->outcome, pc_operator_of(o->req), o->why};
    if (pc_db_query(o->app->db,
                    "INSERT INTO needs_ops_resolutions (kind, ref, status, who, why) VALUES ($1, "
                    "$2, $3, $4, $5)",
                    5, p, outcome_kept_cb, o) < 0)
        outcome_kept_cb(o, PC_EUNAVAIL, NULL);
}

static void payment_recorded_cb(void *data, pc_api_err_t err, const char *message, json_t *payment)
{
    outcome_t *o = data;
    (void)message;
    /* INVALID_STATE: no longer in flight and flagged (the channel's answer
     * came first); nothing changed. */
    if (err == PC_API_INVALID_STATE)
        outcome_done(o, PC_API_OK, 0, NULL);
    else
        outcome_done(o, err, 1, NULL);
    json_decref(payment);
}

static void payout_recorded_cb(void *data, int applied)
{
    outcome_t *o = data;
    /* A database failure is no "the channel's answer came first": 503, the
     * outcome may be given again. */
    if (applied < 0)
        outcome_done(o, PC_API_UNAVAILABLE, 0, NULL);
    else
        outcome_done(o, PC_API_OK, applied, NULL);
}

static void refund_recorded_cb(void *data, int status, const pc__refund_t *r)
{
    outcome_t *o = data;
    if (status && status != PC_ECONFLICT) {
        outcome_done(o, PC_API_UNAVAILABLE, 0, NULL);
        return;
    }
    /* Applied by this request (an error refund ops say failed goes OFFLINE
     * for ops to pay by hand, still PROCESSING), or not from PROCESSING. */
    outcome_done(o, PC_API_OK, !status, r ? r->status : NULL);
}

static const char *const FROM_PROCESSING[] = {"PROCESSING", NULL};

static void outcome_read_cb(void *data, int status, pc_db_res_t *res);

/* The payment of the same channel holding the reference ops gave ("" none):
 * refused, naming the field (the channel's references are unique: one
 * pasted from the wrong row can never be recorded; before, the capture
 * failed on the index and ops were told to retry, forever), or on to read
 * the item and record the outcome. */
static void txn_checked_cb(void *data, int status, pc_db_res_t *res)
{
    outcome_t *o = data;
    if (status) {
        pc_respond_db_error(o->req, status);
        return;
    }
    const char *other = pc_db_get(res, 0, 0);
    if (other[0]) {
        char msg[200];
        snprintf(msg, sizeof msg,
                 "payment %.40s already has this reference at its channel: check the one the "
                 "channel gave for this payment",
                 other);
        pc_http_respond_error(o->req, PC_API_INVALID_STATE, "channel_txn_id", msg);
        return;
    }
    const char *p[] = {o->ref};
    if (pc_db_query(o->app->db, o->read_sql, 1, p, outcome_read_cb, o) < 0)
        pc_http_respond_error(o->req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

static void outcome_read_cb(void *data, int status, pc_db_res_t *res)
{
    outcome_t *o = data;
    if (status) {
        pc_respond_db_error(o->req, status);
        return;
    }
    if (pc_db_rows(res) != 1) {
        pc_http_respond_error(o->req, PC_API_NOT_FOUND, NULL, "no such payment, payout or refund");
        return;
    }
    const char *st = pc_db_val(res, 0, "status");
    char msg[240];
    if (pc_db_val(res, 0, "in_flight")[0] != 't' || pc_db_val(res, 0, "needs_ops")[0] != 't') {
        snprintf(msg, sizeof msg,
                 pc_db_val(res, 0, "in_flight")[0] != 't'
                     ? "it is %s already: no outcome to record (resolve without one once dealt "
                       "with)"
                     : "it is %s and its status queries are still on their schedule: an outcome "
                       "is recorded by hand only once they gave up (flagged, GET /admin/needs-ops)",
                 st);
        pc_http_respond_error(o->req, PC_API_INVALID_STATE, NULL, msg);
        return;
    }
    const char *channel = pc_db_val(res, 0, "channel_id");
    int rc;
    if (!strcmp(o->kind, "payment")) {
        rc = pc_engine_apply_by_ops(o->app->engine, channel, o->ref, &o->res, payment_recorded_cb,
                                    o);
    } else if (!strcmp(o->kind, "payout")) {
        rc = pc_payout_apply_by_ops(o->app, o->ref, &o->res, payout_recorded_cb, o);
    } else {
        int ok = o->res.status == PC_CH_SUCCESS;
        pc__transition_t t = {
            .refund_no = o->ref,
            .to = ok ? "SUCCESS" : "FAILED",
            .from = FROM_PROCESSING,
            .who = pc_operator_of(o->req),
            .action = ok ? "CONFIRM_DONE" : "CONFIRM_FAILED",
            .why = o->why,
            .failure_code = ok ? NULL : o->res.code,
            .failure_msg = ok ? NULL : o->why,
            .channel_txn_id = o->res.channel_txn_id[0] ? o->res.channel_txn_id : NULL,
            .error_to_offline = 1,
            .only_channel = channel[0] ? channel : NULL,
        };
        rc = pc__refund_transition(o->app->refunds, &t, refund_recorded_cb, o);
    }
    if (rc < 0)
        pc_http_respond_error(o->req, PC_API_UNAVAILABLE, NULL, "not recorded; retry");
}

/* {"outcome": "SUCCESS"|"FAILED", "channel_txn_id", "failure_code"} of a
 * resolve: reads the item, then applies the outcome if it is in flight and
 * flagged. */
static void record_outcome(pc_http_req_t *req, pc_app_t *app, const ops_kind_t *kind, json_t *b,
                           const char *why)
{
    int bad = 0;
    const char *outcome = pc_json_str(b, "outcome", 16, 1, &bad);
    if (bad || !outcome || (strcmp(outcome, "SUCCESS") && strcmp(outcome, "FAILED"))) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "outcome", "SUCCESS or FAILED");
        return;
    }
    const char *txn = pc_json_str(b, "channel_txn_id", 79, 0, &bad);
    if (bad) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "channel_txn_id",
                              "the channel's reference, 1-79 printable characters");
        return;
    }
    const char *code = pc_json_str(b, "failure_code", 47, 1, &bad);
    if (bad || (code && !strcmp(outcome, "SUCCESS"))) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "failure_code",
                              "a FAILED outcome's code, 1-47 of [A-Za-z0-9_-]");
        return;
    }
    outcome_t *o = pc_http_req_alloc(req, sizeof *o);
    o->req = req;
    o->app = app;
    o->kind = kind->name;
    o->read_sql = kind->read_sql;
    o->ref = pc_http_req_param(req, "ref");
    o->why = why;
    o->outcome = outcome;
    o->res.status = strcmp(outcome, "SUCCESS") ? PC_CH_FAILED : PC_CH_SUCCESS;
    snprintf(o->res.code, sizeof o->res.code, "%s",
             o->res.status == PC_CH_FAILED ? (code ? code : "CONFIRMED_FAILED") : "");
    snprintf(o->res.message, sizeof o->res.message, "%s",
             o->res.status == PC_CH_FAILED ? "its channel confirmed the failure to ops" : "");
    snprintf(o->res.channel_txn_id, sizeof o->res.channel_txn_id, "%s", txn ? txn : "");
    if (!strcmp(kind->name, "payment") && txn) {
        const char *q[] = {o->ref, txn};
        if (pc_db_query(app->db,
                        "SELECT coalesce((SELECT o.payment_no FROM payments o, payments p WHERE "
                        "p.payment_no = $1 AND o.channel_id = p.channel_id AND o.channel_txn_id = "
                        "$2 AND o.payment_no <> $1 LIMIT 1), '')",
                        2, q, txn_checked_cb, o) < 0)
            pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
        return;
    }
    const char *p[] = {o->ref};
    if (pc_db_query(app->db, kind->read_sql, 1, p, outcome_read_cb, o) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

/* POST /admin/needs-ops/{kind}/{ref}/resolve {"why"}: ops dealt with a
 * final payment (kind "payment"), payout ("payout") or refund ("refund") a
 * channel contradicts;
 * the flag is cleared and the resolution kept (who, why, the state). One
 * still in flight keeps its flag (409): its status queries go on, unless
 * ops give its "outcome" (record_outcome). */
static void resolve_needs_ops(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    json_t *b = pc_http_req_json(req);
    int bad = 0;
    const char *why = b ? pc_json_str(b, "why", 256, 0, &bad) : NULL;
    if (bad || !why) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "why",
                              "say why (1-256 characters): it is kept with the resolution");
        return;
    }
    const ops_kind_t *kind = ops_kind(pc_http_req_param(req, "kind"));
    if (!kind) {
        pc_http_respond_error(req, PC_API_NOT_FOUND, NULL, "kind is payment, payout or refund");
        return;
    }
    if (json_object_get(b, "outcome")) {
        record_outcome(req, app, kind, b, why);
        return;
    }
    const char *p[] = {pc_http_req_param(req, "ref"), pc_operator_of(req), why};
    if (pc_db_query(app->db, kind->resolve_sql, 3, p, resolved_cb, req) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

pc_repair_t *pc_repair_new(pc_app_t *app)
{
    pc_repair_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->app = app;
    int64_t ms[PC_CONFIG_MAX_DELAYS];
    int n = pc_config_ms_list(app->cfg, "repair.schedule_ms", ms, PC_CONFIG_MAX_DELAYS);
    if (n <= 0) {
        free(r);
        return NULL;
    }
    size_t off = (size_t)snprintf(r->schedule, sizeof r->schedule, "{");
    for (int i = 0; i < n; i++)
        off += (size_t)snprintf(r->schedule + off, sizeof r->schedule - off, "%s%lld", i ? "," : "",
                                (long long)ms[i]);
    snprintf(r->schedule + off, sizeof r->schedule - off, "}");
    r->not_found_after_s = pc_config_int(app->cfg, "repair.not_found_after_s");
    pc_metrics_describe("pc_repairs_total", PC_METRIC_COUNTER,
                        "status queries of open payments, by result");
    uv_timer_init(app->loop, &r->timer);
    r->timer.data = r;
    pc_router_add(app->admin, "GET", "/admin/needs-ops", list_needs_ops, app);
    pc_router_add(app->admin, "POST", "/admin/needs-ops/{kind}/{ref}/resolve", resolve_needs_ops,
                  app);
    return r;
}

void pc_repair_start(pc_repair_t *r)
{
    uint64_t ms = (uint64_t)pc_config_int(r->app->cfg, "repair.poll_ms");
    uv_timer_start(&r->timer, tick, ms, ms);
}

void pc_repair_stop(pc_repair_t *r)
{
    uv_timer_stop(&r->timer);
    uv_close((uv_handle_t *)&r->timer, NULL);
}

void pc_repair_free(pc_repair_t *r)
{
    free(r);
}
