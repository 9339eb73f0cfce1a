/* Ops on refunds (api.md "Admin (ops) API"), behind the admin token:
 *   POST /admin/refunds/{refund_no}/suspend|resume|terminate|force-fail|confirm
 *        {"why": "...", "outcome": "SUCCESS|FAILED" (confirm), "failure_code"}
 *   GET  /admin/refunds/{refund_no}          the refund with its actions
 *   GET  /admin/refunds?waiting=true          refunds waiting for a person
 *   POST /admin/refund-batches               {"method": "FILE|OFFLINE", "channel_id"}
 *        exports the ACCEPTED refunds of that method (and channel) as a CSV
 *        batch and moves them to PROCESSING
 *   GET  /admin/refund-batches?status=EXPORTED|COMPLETED   newest first, at most 100
 *   GET  /admin/refund-batches/{batch_id}
 *   POST /admin/refund-batches/{batch_id}/results   a result CSV (text/csv
 *        body, or {"csv": "..."}), applied line by line
 * Every change is a transition of refund.c recorded in refund_actions with
 * who = "ops" (the admin token's identity) and the why given. */
#include "api/app.h"
#include "auth/sign.h"
#include "core/error.h"
#include "core/log.h"
#include "refund/refund.h"
#include "refund/refund_csv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------- single-refund actions ---------- */

static const char *const FROM_ACCEPTED[] = {"ACCEPTED", NULL};
static const char *const FROM_SUSPENDED[] = {"SUSPENDED", NULL};
static const char *const FROM_BEFORE_MONEY_LEFT[] = {"ACCEPTED", "SUSPENDED", NULL};
static const char *const FROM_NOT_FINAL[] = {"ACCEPTED", "SUSPENDED", "PROCESSING", NULL};
static const char *const FROM_OFFLINE_OPEN[] = {"ACCEPTED", "PROCESSING", NULL};

typedef struct {
    pc_http_req_t *req;
    const char *verb;
} act_t;

static void acted_cb(void *data, int status, const pc__refund_t *r)
{
    act_t *a = data;
    if (status == 0) {
        pc_http_respond_json(a->req, 200, pc__refund_json(r, 1));
        return;
    }
    if (status == PC_ENOTFOUND) {
        pc_http_respond_error(a->req, PC_API_NOT_FOUND, NULL, "no such refund");
        return;
    }
    if (status == PC_ECONFLICT && r) {
        char msg[320];
        if (strcmp(r->type, "NORMAL") != 0 &&
            (!strcmp(a->verb, "terminate") || !strcmp(a->verb, "force-fail") ||
             !strcmp(a->verb, "confirm")))
            snprintf(msg, sizeof msg,
                     "refund %s is an error refund (%s): the buyer's money must leave; it cannot "
                     "be %s",
                     r->refund_no, r->status,
                     !strcmp(a->verb, "terminate") ? "terminated" : "failed back");
        else if (!strcmp(a->verb, "confirm") && !strcmp(r->status, "TERMINATED") &&
                 !strcmp(r->failure_code, "CHARGEBACK")) {
            /* An OFFLINE refund a chargeback ended while ops were paying it
             * by hand: the buyer may now be paid twice, and the hand payment
             * is on no ledger. Said where an operator and an on-call engineer
             * both see it. */
            snprintf(msg, sizeof msg,
                     "refund %s was terminated by a chargeback (the cardholder got the money "
                     "back at the bank): if the buyer was paid by hand, that payment is a second "
                     "one; recover it",
                     r->refund_no);
            pc_log_error("refund.confirm_after_chargeback",
                         "refund %s: confirm by %s after a chargeback terminated it; a payment by "
                         "hand would be a second one",
                         r->refund_no, pc_operator_of(a->req));
        } else if (!strcmp(a->verb, "confirm") && strcmp(r->method, "OFFLINE") != 0)
            snprintf(msg, sizeof msg, "refund %s runs by %s; only OFFLINE refunds are confirmed",
                     r->refund_no, r->method);
        else
            snprintf(msg, sizeof msg, "refund %s is %s: it cannot be %s now", r->refund_no,
                     r->status, a->verb);
        pc_http_respond_error(a->req, PC_API_INVALID_STATE, NULL, msg);
        return;
    }
    pc_respond_db_error(a->req, status);
}

static void refund_action(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    const char *verb = pc_http_req_param(req, "action");
    size_t len;
    pc_http_req_body(req, &len);
    json_t *b = len ? pc_http_req_json(req) : NULL;
    if (len && !b) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, NULL, "body must be a JSON object");
        return;
    }
    int bad = 0;
    const char *why = b ? pc_json_str(b, "why", 256, 0, &bad) : NULL;
    if (bad || !why) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "why",
                              "say why (1-256 characters): it is kept with the refund");
        return;
    }
    pc__transition_t t = {
        .refund_no = pc_http_req_param(req, "refund_no"), .who = pc_operator_of(req), .why = why};
    if (!strcmp(verb, "suspend")) {
        t.to = "SUSPENDED";
        t.from = FROM_ACCEPTED;
        t.action = "SUSPEND";
    } else if (!strcmp(verb, "resume")) {
        t.to = "ACCEPTED";
        t.from = FROM_SUSPENDED;
        t.action = "RESUME";
    } else if (!strcmp(verb, "terminate")) {
        t.to = "TERMINATED";
        t.from = FROM_BEFORE_MONEY_LEFT;
        t.action = "TERMINATE";
        t.failure_code = "TERMINATED";
        t.failure_msg = why;
        t.normal_only = 1;
    } else if (!strcmp(verb, "force-fail")) {
        t.to = "FAILED";
        t.from = FROM_NOT_FINAL;
        t.action = "FORCE_FAIL";
        t.failure_code = "FORCE_FAILED";
        t.failure_msg = why;
        t.normal_only = 1;
    } else if (!strcmp(verb, "confirm")) {
        int bad_code = 0;
        const char *outcome = pc_json_str(b, "outcome", 16, 1, &bad);
        const char *code = pc_json_str(b, "failure_code", 48, 1, &bad_code);
        if (bad || (outcome && strcmp(outcome, "SUCCESS") && strcmp(outcome, "FAILED"))) {
            pc_http_respond_error(req, PC_API_INVALID_REQUEST, "outcome", "SUCCESS or FAILED");
            return;
        }
        if (bad_code) {
            pc_http_respond_error(req, PC_API_INVALID_REQUEST, "failure_code",
                                  "1-48 of [A-Za-z0-9_-]");
            return;
        }
        /* A failure code says the refund failed: without the outcome it was
         * confirmed as done (SUCCESS is the default), the opposite of what
         * ops meant. */
        if (code && (!outcome || strcmp(outcome, "FAILED"))) {
            pc_http_respond_error(req, PC_API_INVALID_REQUEST, "outcome",
                                  "a failure_code goes with \"outcome\": \"FAILED\"");
            return;
        }
        int ok = !outcome || !strcmp(outcome, "SUCCESS");
        t.to = ok ? "SUCCESS" : "FAILED";
        t.from = FROM_OFFLINE_OPEN;
        t.action = ok ? "CONFIRM_DONE" : "CONFIRM_FAILED";
        t.only_method = "OFFLINE";
        t.normal_only = !ok;
        if (!ok) {
            t.failure_code = code ? code : "OFFLINE_FAILED";
            t.failure_msg = why;
        }
    } else {
        pc_http_respond_error(req, PC_API_NOT_FOUND, NULL,
                              "actions: suspend, resume, terminate, force-fail, confirm");
        return;
    }
    act_t *a = pc_http_req_alloc(req, sizeof *a);
    a->req = req;
    a->verb = verb;
    if (pc__refund_transition(app->refunds, &t, acted_cb, a) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

static void shown_cb(void *data, int status, pc_db_res_t *res)
{
    pc_http_req_t *req = data;
    if (status) {
        pc_respond_db_error(req, status);
        return;
    }
    if (pc_db_rows(res) == 0) {
        pc_http_respond_error(req, PC_API_NOT_FOUND, NULL, "no such refund");
        return;
    }
    pc__refund_t r;
    pc__refund_from_row(&r, res, 0);
    json_t *o = pc__refund_json(&r, 1);
    json_object_set_new(o, "actions", json_loads(pc_db_val(res, 0, "actions"), 0, NULL));
    pc_http_respond_json(req, 200, o);
}

/* GET /admin/refunds?waiting=true[&limit=N&after=REFUND_NO]: the refunds
 * that wait for a person (PC_REFUND_WAITING_WHERE), oldest first, a page of
 * limit (1-1000, 500 when absent) at a time; when a page is full, next_after
 * names its last refund, and ?after= continues after it (the list stopped at
 * 500 with no way on, and a channel outage leaves thousands). The
 * REFUNDS_WAITING alert points here. */
static void listed_cb(void *data, int status, pc_db_res_t *res)
{
    pc_http_req_t *req = data;
    if (status) {
        pc_respond_db_error(req, status);
        return;
    }
    json_t *list = json_array();
    for (int i = 0; i < pc_db_rows(res); i++) {
        pc__refund_t r;
        pc__refund_from_row(&r, res, i);
        json_array_append_new(list, pc__refund_json(&r, 1));
    }
    char lim[8];
    int bad = 0;
    const char *limit = pc_limit_param(req, 500, lim, &bad);
    int n = pc_db_rows(res);
    json_t *next =
        n > 0 && n == atoi(limit) ? json_string(pc_db_val(res, n - 1, "refund_no")) : json_null();
    pc_http_respond_json(req, 200, json_pack("{s:o,s:o}", "refunds", list, "next_after", next));
}

static void list_refunds(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    const char *waiting = pc_http_req_query_param(req, "waiting");
    if (!waiting || strcmp(waiting, "true") != 0) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "waiting",
                              "only waiting=true is listed here; one refund: /admin/refunds/{no}");
        return;
    }
    char lim[8];
    const char *limit, *after;
    if (pc_page_params(req, 500, lim, &limit, &after, "after: a refund_no (next_after)") < 0)
        return;
    const char *p[] = {after, limit};
    if (pc_db_query(app->db,
                    "SELECT " PC__REFUND_COLUMNS " FROM refunds WHERE " PC_REFUND_WAITING_WHERE
                    " AND ($1::text IS NULL OR (created_at, refund_no) > (SELECT created_at, "
                    "refund_no FROM refunds WHERE refund_no = $1)) ORDER BY created_at, "
                    "refund_no LIMIT $2::int",
                    2, p, listed_cb, req) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

static void show_refund(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    const char *p[] = {pc_http_req_param(req, "refund_no")};
    if (pc_db_query(app->db,
                    "SELECT " PC__REFUND_COLUMNS
                    ", (SELECT coalesce(json_agg(json_build_object('who', who, 'action', action, "
                    "'why', why, 'from_status', from_status, 'to_status', to_status, 'at', "
                    "to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')) ORDER BY "
                    "action_id), '[]'::json) FROM refund_actions a WHERE a.refund_no = "
                    "refunds.refund_no)::text AS actions FROM refunds WHERE refund_no = $1",
                    1, p, shown_cb, req) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

/* ---------- POST /admin/refund-batches: export ---------- */

typedef struct {
    pc_http_req_t *req;
    pc_db_tx_t *tx;
    char batch_id[40], method[8], channel[33];
    const char *why;
    json_t *answer;
    int step_failed;
} exp_t;

static void exp_free(void *arg)
{
    exp_t *e = arg;
    json_decref(e->answer);
}

static void exp_fail(exp_t *e, int status)
{
    if (e->tx)
        pc_db_tx_rollback(e->tx);
    e->tx = NULL;
    pc_respond_db_error(e->req, status ? status : PC_EIO);
}

static void exp_commit_cb(void *data, int status)
{
    exp_t *e = data;
    e->tx = NULL;
    if (status) {
        pc_respond_db_error(e->req, status);
        return;
    }
    pc_log_info("refund.batch_exported", "batch %s: %lld %s refunds%s%s", e->batch_id,
                (long long)json_integer_value(json_object_get(e->answer, "count")), e->method,
                e->channel[0] ? " of " : "", e->channel);
    pc_http_respond_json(e->req, 201, json_incref(e->answer));
}

static void exp_step_cb(void *data, int status, pc_db_res_t *res)
{
    exp_t *e = data;
    (void)res;
    if (status && !e->step_failed)
        e->step_failed = status;
}

static void exp_rows_cb(void *data, int status, pc_db_res_t *res)
{
    exp_t *e = data;
    if (status) {
        exp_fail(e, status);
        return;
    }
    int n = pc_db_rows(res);
    if (n == 0) {
        pc_db_tx_rollback(e->tx);
        e->tx = NULL;
        pc_http_respond_json(e->req, 200,
                             json_pack("{s:n,s:s,s:s?,s:i,s:s}", "batch_id", "method", e->method,
                                       "channel_id", e->channel[0] ? e->channel : NULL, "count", 0,
                                       "csv", PC_REFUND_CSV_EXPORT_HEADER "\n"));
        return;
    }
    pc_refund_csv_t csv = {0};
    const char *head[] = {"refund_no", "payment_no", "channel_id", "channel_txn_id",
                          "amount",    "currency",   "trade_no",   "reason"};
    pc_refund_csv_row(&csv, head, 8);
    json_t *nos = json_array();
    json_t *refunds = json_array();
    for (int i = 0; i < n; i++) {
        pc__refund_t r;
        pc__refund_from_row(&r, res, i);
        char amt[24];
        snprintf(amt, sizeof amt, "%lld", (long long)r.parts.external);
        char reason[sizeof r.reason + 2];
        const char *f[] = {r.refund_no,  r.payment_no,
                           r.channel_id, r.payment_channel_txn_id,
                           amt,          r.currency,
                           r.trade_no,   pc_refund_csv_inert(r.reason, reason, sizeof reason)};
        pc_refund_csv_row(&csv, f, 8);
        json_array_append_new(nos, json_string(r.refund_no));
        snprintf(r.status, sizeof r.status, "PROCESSING");
        json_array_append_new(refunds, pc__refund_json(&r, 1));
    }
    if (csv.oom) {
        pc_refund_csv_free(&csv);
        json_decref(nos);
        json_decref(refunds);
        exp_fail(e, PC_ENOMEM);
        return;
    }
    char count[16];
    snprintf(count, sizeof count, "%d", n);
    /* A PostgreSQL text[] literal of the numbers ([A-Za-z0-9] only). */
    char *list = malloc((size_t)n * 41 + 3);
    if (!list) {
        pc_refund_csv_free(&csv);
        json_decref(nos);
        json_decref(refunds);
        exp_fail(e, PC_ENOMEM);
        return;
    }
    size_t off = 0, k;
    json_t *v;
    list[off++] = '{';
    json_array_foreach(nos, k, v) off +=
        (size_t)sprintf(list + off, "%s%s", k ? "," : "", json_string_value(v));
    list[off++] = '}';
    list[off] = 0;
    const char *p1[] = {e->batch_id, pc_refund_csv_text(&csv), count};
    const char *p2[] = {list, e->why, pc_operator_of(e->req)};
    int rc = pc_db_tx_query(e->tx,
                            "UPDATE refund_batches SET csv = $2, refund_count = $3::int WHERE "
                            "batch_id = $1",
                            3, p1, exp_step_cb, e);
    if (!rc)
        rc = pc_db_tx_query(e->tx,
                            "INSERT INTO refund_actions (refund_no, who, action, why, "
                            "from_status, to_status) SELECT unnest($1::text[]), $3, 'EXPORT', "
                            "$2, 'ACCEPTED', 'PROCESSING'",
                            3, p2, exp_step_cb, e);
    e->answer = json_pack("{s:s,s:s,s:s?,s:i,s:s,s:o}", "batch_id", e->batch_id, "method",
                          e->method, "channel_id", e->channel[0] ? e->channel : NULL, "count", n,
                          "csv", pc_refund_csv_text(&csv), "refunds", refunds);
    free(list);
    json_decref(nos);
    pc_refund_csv_free(&csv);
    if (rc) {
        exp_fail(e, rc);
        return;
    }
    pc_db_tx_commit(e->tx, exp_commit_cb, e);
}

static void exp_begin_cb(void *data, int status, pc_db_tx_t *tx)
{
    exp_t *e = data;
    if (status) {
        exp_fail(e, status);
        return;
    }
    e->tx = tx;
    const char *p1[] = {e->batch_id, e->method, e->channel[0] ? e->channel : NULL,
                        pc_operator_of(e->req)};
    const char *p2[] = {e->batch_id, e->method, e->channel[0] ? e->channel : NULL};
    /* Refunds locked by a transition right now (being suspended, say) are
     * skipped: they go in the next batch if they are still ACCEPTED. */
    if (pc_db_tx_query(tx,
                       "INSERT INTO refund_batches (batch_id, method, channel_id, created_by) "
                       "VALUES ($1, $2, $3, $4)",
                       4, p1, exp_step_cb, e) < 0 ||
        pc_db_tx_query(tx,
                       "UPDATE refunds SET status = 'PROCESSING', batch_id = $1, updated_at = "
                       "now() WHERE refund_no IN (SELECT refund_no FROM refunds WHERE status = "
                       "'ACCEPTED' AND method = $2 AND ($3::text IS NULL OR channel_id = $3) "
                       "ORDER BY created_at LIMIT 5000 FOR UPDATE SKIP LOCKED) AND status = "
                       "'ACCEPTED' RETURNING " PC__REFUND_COLUMNS,
                       3, p2, exp_rows_cb, e) < 0)
        exp_fail(e, PC_EUNAVAIL);
}

static void export_batch(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    json_t *b = pc_http_req_json(req);
    if (!b) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, NULL, "body must be a JSON object");
        return;
    }
    int bad = 0;
    const char *method = pc_json_str(b, "method", 8, 1, &bad);
    const char *channel = pc_json_str(b, "channel_id", 32, 1, &bad);
    const char *why = pc_json_str(b, "why", 256, 0, &bad);
    if (bad || (method && strcmp(method, "FILE") && strcmp(method, "OFFLINE"))) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "method",
                              "method FILE (with channel_id) or OFFLINE");
        return;
    }
    if (!method)
        method = "FILE";
    if (!strcmp(method, "FILE") && !channel) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "channel_id",
                              "a FILE batch is one channel's file: give channel_id");
        return;
    }
    exp_t *e = pc_http_req_alloc(req, sizeof *e);
    e->req = req;
    pc_http_req_on_done(req, exp_free, e);
    char hex[17];
    pc_random_hex(hex, sizeof hex, 8);
    snprintf(e->batch_id, sizeof e->batch_id, "RB%s", hex);
    snprintf(e->method, sizeof e->method, "%s", method);
    snprintf(e->channel, sizeof e->channel, "%s", channel ? channel : "");
    e->why = why ? why : "batch export";
    if (pc_db_begin(app->db, NULL, exp_begin_cb, e) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

/* ---------- GET /admin/refund-batches/{batch_id} ---------- */

static void batch_shown_cb(void *data, int status, pc_db_res_t *res)
{
    pc_http_req_t *req = data;
    if (status) {
        pc_respond_db_error(req, status);
        return;
    }
    if (pc_db_rows(res) == 0) {
        pc_http_respond_error(req, PC_API_NOT_FOUND, NULL, "no such batch");
        return;
    }
    pc_respond_json_text(req, 200, pc_db_get(res, 0, 0));
}

static void show_batch(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    const char *p[] = {pc_http_req_param(req, "batch_id")};
    if (pc_db_query(app->db,
                    "SELECT json_build_object('batch_id', b.batch_id, 'method', b.method, "
                    "'channel_id', b.channel_id, 'status', b.status, 'count', b.refund_count, "
                    "'csv', b.csv, 'refunds', (SELECT coalesce(json_agg(json_build_object("
                    "'refund_no', r.refund_no, 'status', r.status, 'amount', r.external_amount) "
                    "ORDER BY r.created_at), '[]'::json) FROM refunds r WHERE r.batch_id = "
                    "b.batch_id))::text FROM refund_batches b WHERE b.batch_id = $1",
                    1, p, batch_shown_cb, req) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

/* ---------- GET /admin/refund-batches: the batches, newest first ---------- */

/* An export whose answer was lost (payctl timed out after the commit) left
 * its refunds PROCESSING in a batch nobody had the id of: the list finds
 * it, and GET /admin/refund-batches/{id} gives its file again. */
static void list_batches(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    const char *status = pc_http_req_query_param(req, "status");
    if (status && strcmp(status, "EXPORTED") && strcmp(status, "COMPLETED")) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "status", "EXPORTED or COMPLETED");
        return;
    }
    const char *p[] = {status};
    if (pc_db_query(
            app->db,
            "SELECT json_build_object('batches', coalesce(json_agg(json_build_object("
            "'batch_id', batch_id, 'method', method, 'channel_id', channel_id, 'status', "
            "status, 'count', refund_count, 'created_by', created_by, 'created_at', "
            "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')) ORDER "
            "BY created_at DESC), '[]'::json))::text FROM (SELECT * FROM refund_batches "
            "WHERE $1::text IS NULL OR status = $1 ORDER BY created_at DESC LIMIT 100) b",
            1, p, batch_shown_cb, req) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

/* ---------- POST /admin/refund-batches/{batch_id}/results: import ---------- */

typedef struct {
    int line;
    char refund_no[65];
    int success;
    char channel_ref[81], code[49], message[161];
} result_t;

typedef struct {
    pc_http_req_t *req;
    pc_app_t *app;
    char batch_id[40], why[257];
    char batch_method[8]; /* FILE or OFFLINE */
    result_t *lines;
    int n, next;
    int succeeded, failed;
    json_t *skipped;
} imp_t;

static void imp_free(void *arg)
{
    imp_t *m = arg;
    free(m->lines);
    json_decref(m->skipped);
}

static void imp_next(imp_t *m);

static void imp_done_cb(void *data, int status, pc_db_res_t *res)
{
    imp_t *m = data;
    const char *bstatus = !status && pc_db_rows(res) == 1 ? pc_db_get(res, 0, 0) : "EXPORTED";
    pc_log_info("refund.batch_results", "batch %s: %d succeeded, %d failed, %zu skipped",
                m->batch_id, m->succeeded, m->failed, json_array_size(m->skipped));
    pc_http_respond_json(m->req, 200,
                         json_pack("{s:s,s:s,s:i,s:i,s:i,s:O}", "batch_id", m->batch_id,
                                   "batch_status", bstatus, "applied", m->succeeded + m->failed,
                                   "succeeded", m->succeeded, "failed", m->failed, "skipped",
                                   m->skipped));
}

static void skip(imp_t *m, const result_t *l, const char *why)
{
    json_array_append_new(m->skipped, json_pack("{s:i,s:s,s:s}", "line", l->line, "refund_no",
                                                l->refund_no, "reason", why));
}

/* A line the refund contradicts, skipped and flagged (or not) for ops: why,
 * by what the line said. */
static void line_flagged_cb(void *data, int status, pc_db_res_t *res)
{
    imp_t *m = data;
    const result_t *l = &m->lines[m->next];
    char why[200];
    snprintf(why, sizeof why, "%s: %s",
             l->success ? "the file says it was paid, but the refund failed or was paid another "
                          "way"
                        : "the file says it failed, but the refund is SUCCESS (the buyer may not "
                          "have it)",
             status            ? "not flagged (database unavailable): check it by hand"
             : pc_db_rows(res) ? "flagged for ops"
                               : "flagged before");
    skip(m, l, why);
    m->next++;
    imp_next(m);
}

/* A line applied, then flagged (or not) for ops: it counts as applied. */
static void applied_line_flagged_cb(void *data, int status, pc_db_res_t *res)
{
    imp_t *m = data;
    (void)res;
    if (status)
        pc_log_error("refund.flag_failed",
                     "refund %s: paid by the bank's file while handed to ops to pay by hand, "
                     "but not flagged (%s): check it by hand",
                     m->lines[m->next].refund_no, pc_strerror(status));
    m->next++;
    imp_next(m);
}

static void line_applied_cb(void *data, int status, const pc__refund_t *r)
{
    imp_t *m = data;
    const result_t *l = &m->lines[m->next];
    /* Paid by the bank's file after it had left the batch's method for
     * OFFLINE (an error refund the bank's first file refused): ops may be
     * paying it by hand. Applied (the bank paid it), and flagged, as a
     * channel's success for such a refund is (handed_to_ops). Before, it
     * was counted as paid and nobody was told. */
    if (status == 0 && r && l->success && strcmp(r->method, m->batch_method) != 0) {
        m->succeeded++;
        if (pc__refund_flag_contradiction(m->app->refunds, r, PC_CH_SUCCESS,
                                          applied_line_flagged_cb, m) > 0)
            return;
        m->next++;
        imp_next(m);
        return;
    }
    /* A refund of this batch that the file says was paid, but that failed
     * meanwhile (force-failed by ops, its money back with the merchant), or
     * that left the batch's method and was paid another way (an error
     * refund the bank refused, moved to OFFLINE and paid by hand: paid
     * twice). One SUCCESS by the batch's own method is the same result
     * imported again, or an OFFLINE refund ops confirmed before importing
     * the batch's file: not flagged (before, each import flagged it). */
    if (status == PC_ECONFLICT && r && !strcmp(r->batch_id, m->batch_id) && l->success &&
        (!strcmp(r->status, "FAILED") || strcmp(r->method, m->batch_method) != 0) &&
        pc__refund_flag_contradiction(m->app->refunds, r, PC_CH_SUCCESS, line_flagged_cb, m) > 0)
        return;
    /* A refund of this batch the file says failed, which is SUCCESS here:
     * ops confirmed it paid by hand (an OFFLINE batch) and the bank says it
     * was not, so the buyer may not have the money. Flagged for ops, once
     * (contradicted_by). Before, the line was skipped ("the refund is
     * SUCCESS") and nobody was told. */
    if (status == PC_ECONFLICT && r && !strcmp(r->batch_id, m->batch_id) && !l->success &&
        !strcmp(r->status, "SUCCESS") && !strcmp(r->method, m->batch_method)) {
        pc_log_error("refund.contradicted",
                     "refund %s is SUCCESS but batch %s's result file says it failed (%s): the "
                     "buyer may not have the money; flagged for ops (GET /admin/needs-ops)",
                     r->refund_no, m->batch_id, l->code[0] ? l->code : "no code");
        if (pc__refund_flag_once(m->app->refunds, r->refund_no, "SUCCESS", "FAILED",
                                 line_flagged_cb, m) == 0)
            return;
    }
    if (status == 0) {
        if (!strcmp(r->status, "SUCCESS"))
            m->succeeded++;
        else
            m->failed++; /* FAILED, or an error refund moved to OFFLINE */
    } else if (status == PC_ENOTFOUND) {
        skip(m, l, "no such refund");
    } else if (status == PC_ECONFLICT && r) {
        char why[160];
        if (strcmp(r->batch_id, m->batch_id) != 0)
            snprintf(why, sizeof why, "not in this batch");
        else
            snprintf(why, sizeof why, "the refund is %s", r->status);
        skip(m, l, why);
    } else {
        skip(m, l, "database unavailable: import the file again");
    }
    m->next++;
    imp_next(m);
}

static const char *const FROM_PROCESSING_ONLY[] = {"PROCESSING", NULL};

static void imp_next(imp_t *m)
{
    while (m->next < m->n) {
        const result_t *l = &m->lines[m->next];
        pc__transition_t t = {
            .refund_no = l->refund_no,
            .to = l->success ? "SUCCESS" : "FAILED",
            .from = FROM_PROCESSING_ONLY,
            .who = pc_operator_of(m->req),
            .action = "RESULT_FILE",
            .why = m->why,
            .failure_code = l->success ? NULL : (l->code[0] ? l->code : "REFUND_REJECTED"),
            .failure_msg = l->success ? NULL : l->message,
            .channel_txn_id = l->channel_ref[0] ? l->channel_ref : NULL,
            .only_batch = m->batch_id,
            .error_to_offline = 1,
        };
        if (pc__refund_transition(m->app->refunds, &t, line_applied_cb, m) == 0)
            return;
        skip(m, l, "database unavailable: import the file again");
        m->next++;
    }
    const char *p[] = {m->batch_id};
    if (pc_db_query(m->app->db,
                    "WITH u AS (UPDATE refund_batches b SET status = 'COMPLETED', "
                    "completed_at = now() WHERE batch_id = $1 AND status = 'EXPORTED' AND NOT "
                    "EXISTS (SELECT 1 FROM refunds r WHERE r.batch_id = b.batch_id AND r.status "
                    "= 'PROCESSING') RETURNING status) SELECT coalesce((SELECT status FROM u), "
                    "(SELECT status FROM refund_batches WHERE batch_id = $1))",
                    1, p, imp_done_cb, m) < 0)
        imp_done_cb(m, PC_EUNAVAIL, NULL);
}

static void batch_found_cb(void *data, int status, pc_db_res_t *res)
{
    imp_t *m = data;
    if (status) {
        pc_respond_db_error(m->req, status);
        return;
    }
    if (pc_db_rows(res) == 0) {
        pc_http_respond_error(m->req, PC_API_NOT_FOUND, NULL, "no such batch");
        return;
    }
    snprintf(m->batch_method, sizeof m->batch_method, "%s", pc_db_get(res, 0, 0));
    imp_next(m);
}

static void import_results(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    size_t len;
    const char *text = pc_http_req_body(req, &len);
    const char *ct = pc_http_req_header(req, "Content-Type");
    const char *why = NULL;
    int bad = 0;
    if (!ct || strncmp(ct, "text/csv", 8) != 0) {
        json_t *b = pc_http_req_json(req);
        const char *csv = b ? pc_json_str(b, "csv", 16 * 1024 * 1024, 0, &bad) : NULL;
        why = b ? pc_json_str(b, "why", 256, 0, &bad) : NULL;
        if (!csv || bad) {
            pc_http_respond_error(req, PC_API_INVALID_REQUEST, "csv",
                                  "send the result file as text/csv, or {\"csv\": \"...\"}");
            return;
        }
        text = csv;
        len = strlen(csv);
    }
    imp_t *m = pc_http_req_alloc(req, sizeof *m);
    m->req = req;
    m->app = app;
    m->skipped = json_array();
    pc_http_req_on_done(req, imp_free, m);
    snprintf(m->batch_id, sizeof m->batch_id, "%s", pc_http_req_param(req, "batch_id"));
    snprintf(m->why, sizeof m->why, "%s", why ? why : "result file of the batch");
    /* The whole file is checked before any line is applied. */
    pc_refund_csv_reader_t rd;
    pc_refund_csv_reader_init(&rd, text, len);
    char buf[2048];
    const char *f[PC_REFUND_CSV_MAX_FIELDS];
    int nf = pc_refund_csv_next(&rd, buf, sizeof buf, f, PC_REFUND_CSV_MAX_FIELDS);
    pc_refund_result_cols_t cols;
    const char *reason = "the file is empty";
    if (nf <= 0 || pc_refund_result_header(f, nf, &cols, &reason) < 0) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "csv", reason);
        return;
    }
    int cap = 0;
    for (;;) {
        nf = pc_refund_csv_next(&rd, buf, sizeof buf, f, PC_REFUND_CSV_MAX_FIELDS);
        if (nf == 0)
            break;
        pc_refund_result_line_t l;
        char msg[160];
        if (nf < 0 || pc_refund_result_line(&cols, f, nf, &l, &reason) < 0) {
            snprintf(msg, sizeof msg, "line %d: %s", rd.line,
                     nf < 0 ? "malformed CSV record" : reason);
            pc_http_respond_error(req, PC_API_INVALID_REQUEST, "csv", msg);
            return;
        }
        if (m->n == PC_REFUND_RESULT_MAX_LINES) {
            snprintf(msg, sizeof msg,
                     "the file has more than %d lines; a batch holds at most 5000 refunds",
                     PC_REFUND_RESULT_MAX_LINES);
            pc_http_respond_error(req, PC_API_INVALID_REQUEST, "csv", msg);
            return;
        }
        if (m->n == cap) {
            cap = cap ? cap * 2 : 64;
            result_t *grown = realloc(m->lines, (size_t)cap * sizeof *grown);
            if (!grown) {
                pc_http_respond_error(req, PC_API_INTERNAL, NULL, "out of memory");
                return;
            }
            m->lines = grown;
        }
        result_t *r = &m->lines[m->n++];
        memset(r, 0, sizeof *r);
        r->line = rd.line;
        r->success = l.success;
        snprintf(r->refund_no, sizeof r->refund_no, "%s", l.refund_no);
        snprintf(r->channel_ref, sizeof r->channel_ref, "%s", l.channel_ref);
        snprintf(r->code, sizeof r->code, "%s", l.failure_code);
        snprintf(r->message, sizeof r->message, "%s", l.failure_message);
    }
    const char *p[] = {m->batch_id};
    if (pc_db_query(app->db, "SELECT method FROM refund_batches WHERE batch_id = $1", 1, p,
                    batch_found_cb, m) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

void pc__refund_ops_routes(pc_app_t *app)
{
    pc_router_add(app->admin, "POST", "/admin/refunds/{refund_no}/{action}", refund_action, app);
    pc_router_add(app->admin, "GET", "/admin/refunds/{refund_no}", show_refund, app);
    pc_router_add(app->admin, "GET", "/admin/refunds", list_refunds, app);
    pc_router_add(app->admin, "POST", "/admin/refund-batches", export_batch, app);
    pc_router_add(app->admin, "GET", "/admin/refund-batches", list_batches, app);
    pc_router_add(app->admin, "GET", "/admin/refund-batches/{batch_id}", show_batch, app);
    pc_router_add(app->admin, "POST", "/admin/refund-batches/{batch_id}/results", import_results,
                  app);
}
