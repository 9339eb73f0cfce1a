/* HTTP routes of notifications: GET /v1/platform-key (the public key RSA2
 * merchants verify notifications with; behind the merchant auth filter like
 * every /v1/ call), and for ops GET /admin/notifications (recent events,
 * filtered), GET /admin/notifications/{event_id} (the event, its payload and
 * attempt history) and POST /admin/notifications/{event_id}/redeliver (a
 * FAILED or DELIVERED event goes back to PENDING, due now, with a fresh
 * retry schedule). */
#include "api/app.h"
#include "core/error.h"
#include "core/log.h"
#include "notify/notifier.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIST_DEFAULT 50
#define LIST_MAX 500

static void platform_key(pc_http_req_t *req, void *data)
{
    const pc_notifier_t *n = data;
    if (!pc_notifier_platform_key_pem(n)) {
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL,
                              "the platform key is being generated; retry shortly");
        return;
    }
    json_t *body =
        json_pack("{s:s,s:s,s:s}", "sign_type", "RSA2", "algorithm", "RSA PKCS#1 v1.5 SHA-256",
                  "public_key", pc_notifier_platform_key_pem(n));
    pc_http_respond_json(req, 200, body);
}

static json_t *time_or_null(pc_db_res_t *res, int row, const char *col)
{
    int c = pc_db_col(res, col);
    if (c < 0 || pc_db_isnull(res, row, c))
        return json_null();
    char buf[32];
    return json_string(pc_rfc3339(pc_db_get_i64(res, row, c), buf, sizeof buf));
}

static json_t *int_or_null(pc_db_res_t *res, int row, const char *col)
{
    int c = pc_db_col(res, col);
    if (c < 0 || pc_db_isnull(res, row, c))
        return json_null();
    return json_integer(pc_db_get_i64(res, row, c));
}

static json_t *str_or_null(pc_db_res_t *res, int row, const char *col)
{
    int c = pc_db_col(res, col);
    if (c < 0 || pc_db_isnull(res, row, c))
        return json_null();
    return json_string(pc_db_get(res, row, c));
}

/* Epoch seconds of each time column, so pc_rfc3339 formats them all alike. */
#define EVENT_COLUMNS                                                                              \
    "o.event_id, o.merchant_id, o.type, o.notify_url, o.status, o.attempts, o.last_status, "       \
    "o.last_error, floor(extract(epoch FROM o.next_attempt_at))::bigint AS next_attempt_at, "      \
    "floor(extract(epoch FROM o.created_at))::bigint AS created_at, "                              \
    "floor(extract(epoch FROM o.last_attempt_at))::bigint AS last_attempt_at, "                    \
    "floor(extract(epoch FROM o.delivered_at))::bigint AS delivered_at"

/* The ops view of one outbox row. full adds the payload and the history. */
static json_t *event_json(pc_db_res_t *res, int row, int full)
{
    const char *status = pc_db_val(res, row, "status");
    json_t *o = json_object();
    json_object_set_new(o, "event_id", json_string(pc_db_val(res, row, "event_id")));
    json_object_set_new(o, "merchant_id", json_string(pc_db_val(res, row, "merchant_id")));
    json_object_set_new(o, "type", json_string(pc_db_val(res, row, "type")));
    json_object_set_new(o, "notify_url", str_or_null(res, row, "notify_url"));
    json_object_set_new(o, "status", json_string(status));
    json_object_set_new(o, "attempts", json_integer(pc_db_val_i64(res, row, "attempts")));
    json_object_set_new(o, "next_attempt_at",
                        strcmp(status, "PENDING") == 0 ? time_or_null(res, row, "next_attempt_at")
                                                       : json_null());
    json_object_set_new(o, "last_attempt_at", time_or_null(res, row, "last_attempt_at"));
    json_object_set_new(o, "last_status", int_or_null(res, row, "last_status"));
    json_object_set_new(o, "last_error", str_or_null(res, row, "last_error"));
    json_object_set_new(o, "created_at", time_or_null(res, row, "created_at"));
    json_object_set_new(o, "delivered_at", time_or_null(res, row, "delivered_at"));
    if (full) {
        json_t *payload = json_loads(pc_db_val(res, row, "payload"), 0, NULL);
        json_object_set_new(o, "payload", payload ? payload : json_null());
        json_t *hist = json_loads(pc_db_val(res, row, "history"), 0, NULL);
        json_object_set_new(o, "history", hist ? hist : json_array());
    }
    return o;
}

/* ---- GET /admin/notifications/{event_id} ------------------------------------------ */

static int query_event(pc_app_t *app, const char *event_id, pc_db_query_cb cb, void *data)
{
    const char *p[] = {event_id};
    return pc_db_query(
        app->db,
        "SELECT " EVENT_COLUMNS ", o.payload, (SELECT COALESCE(json_agg(json_build_object("
        "'attempt', a.attempt, 'at', to_char(a.at AT TIME ZONE 'UTC', "
        "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), 'node', a.node, 'http_status', a.http_status, "
        "'error', a.error, 'elapsed_ms', a.elapsed_ms) ORDER BY a.id), '[]') FROM (SELECT * FROM "
        "outbox_attempts WHERE event_id = o.event_id ORDER BY id DESC LIMIT 50) a) AS history "
        "FROM outbox o WHERE o.event_id = $1",
        1, p, cb, data);
}

static void event_cb(void *data, int status, pc_db_res_t *res)
{
    pc_http_req_t *req = data;
    if (status) {
        pc_http_respond_error(req, pc_retryable(status) ? PC_API_UNAVAILABLE : PC_API_INTERNAL,
                              NULL, "database error");
        return;
    }
    if (pc_db_rows(res) != 1) {
        pc_http_respond_error(req, PC_API_NOT_FOUND, "event_id", "no such event");
        return;
    }
    pc_http_respond_json(req, 200, event_json(res, 0, 1));
}

static void get_event(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    if (query_event(app, pc_http_req_param(req, "event_id"), event_cb, req) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

/* ---- POST /admin/notifications/{event_id}/redeliver ------------------------------- */

typedef struct {
    pc_http_req_t *req;
    pc_app_t *app;
} redeliver_t;

static void redeliver_cb(void *data, int status, pc_db_res_t *res)
{
    redeliver_t *r = data;
    if (status) {
        pc_http_respond_error(r->req, pc_retryable(status) ? PC_API_UNAVAILABLE : PC_API_INTERNAL,
                              NULL, "database error");
        return;
    }
    const char *id = pc_http_req_param(r->req, "event_id");
    int sc = pc_db_col(res, "status");
    if (pc_db_rows(res) != 1 || pc_db_isnull(res, 0, sc)) {
        pc_http_respond_error(r->req, PC_API_NOT_FOUND, "event_id", "no such event");
        return;
    }
    const char *was = pc_db_get(res, 0, sc);
    if (pc_db_val_i64(res, 0, "updated") != 1 &&
        (!strcmp(was, "FAILED") || !strcmp(was, "DELIVERED"))) {
        pc_http_respond_error(r->req, PC_API_INVALID_STATE, NULL,
                              "a later event of the same object was delivered or is pending: sent "
                              "again now, this one would reach the merchant after it and undo its "
                              "news; add ?force=true to send it all the same");
        return;
    }
    if (pc_db_val_i64(res, 0, "updated") != 1) {
        char msg[160];
        const char *st = pc_db_get(res, 0, sc);
        snprintf(msg, sizeof msg, "the event is %s; only FAILED or DELIVERED events are %s", st,
                 strcmp(st, "SKIPPED") == 0 ? "redelivered (it has no notify_url)"
                                            : "redelivered (it is being delivered)");
        pc_http_respond_error(r->req, PC_API_INVALID_STATE, NULL, msg);
        return;
    }
    pc_log_info("notify.redeliver", "event %s put back for delivery by ops", id);
    if (query_event(r->app, id, event_cb, r->req) < 0)
        pc_http_respond_error(r->req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

static void redeliver(pc_http_req_t *req, void *data)
{
    redeliver_t *r = pc_http_req_alloc(req, sizeof *r);
    r->req = req;
    r->app = data;
    const char *force = pc_http_req_query_param(req, "force");
    const char *p[] = {pc_http_req_param(req, "event_id"),
                       force && !strcmp(force, "true") ? "t" : "f"};
    /* The status is read in the statement's snapshot, i.e. before the
     * update: it explains a refusal. Not while a later event of the same
     * object was delivered or waits (unless forced): the claim orders only
     * PENDING events, and this one, old news, would reach the merchant
     * after the later one (a trade.paid after its trade.succeeded: the
     * merchant moves the order back to "paid"). */
    if (pc_db_query(r->app->db,
                    "WITH later AS (SELECT EXISTS (SELECT 1 FROM outbox o, outbox l WHERE "
                    "o.event_id = $1 AND l.subject = o.subject AND l.seq > o.seq AND l.status IN "
                    "('PENDING', 'DELIVERED')) AS yes), u AS (UPDATE outbox SET status = "
                    "'PENDING', attempts = 0, next_attempt_at = now(), claim_token = NULL, "
                    "delivered_at = NULL WHERE event_id = $1 AND status IN ('FAILED', "
                    "'DELIVERED') AND ($2::boolean OR NOT (SELECT yes FROM later)) RETURNING 1) "
                    "SELECT (SELECT count(*) FROM u) AS updated, (SELECT status FROM outbox "
                    "WHERE event_id = $1) AS status, (SELECT yes FROM later)::text AS later",
                    2, p, redeliver_cb, r) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

/* ---- GET /admin/notifications?status=&merchant_id=&limit= ------------------------- */

static void list_cb(void *data, int status, pc_db_res_t *res)
{
    pc_http_req_t *req = data;
    if (status) {
        pc_http_respond_error(req, pc_retryable(status) ? PC_API_UNAVAILABLE : PC_API_INTERNAL,
                              NULL, "database error");
        return;
    }
    json_t *items = json_array();
    for (int i = 0; i < pc_db_rows(res); i++)
        json_array_append_new(items, event_json(res, i, 0));
    pc_http_respond_json(req, 200, json_pack("{s:o}", "notifications", items));
}

static void list_events(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    const char *status = pc_http_req_query_param(req, "status");
    const char *merchant = pc_http_req_query_param(req, "merchant_id");
    const char *limit_s = pc_http_req_query_param(req, "limit");
    if (status && strcmp(status, "PENDING") && strcmp(status, "DELIVERED") &&
        strcmp(status, "FAILED") && strcmp(status, "SKIPPED")) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "status",
                              "PENDING, DELIVERED, FAILED or SKIPPED");
        return;
    }
    long limit = LIST_DEFAULT;
    if (limit_s) {
        char *end;
        limit = strtol(limit_s, &end, 10);
        if (*end || end == limit_s || limit < 1 || limit > LIST_MAX) {
            pc_http_respond_error(req, PC_API_INVALID_REQUEST, "limit", "an integer 1-500");
            return;
        }
    }
    char lim[16];
    snprintf(lim, sizeof lim, "%ld", limit);
    const char *p[] = {status, merchant, lim};
    if (pc_db_query(app->db,
                    "SELECT " EVENT_COLUMNS " FROM outbox o WHERE ($1::text IS NULL OR o.status = "
                    "$1) AND ($2::text IS NULL OR o.merchant_id = $2) ORDER BY o.created_at DESC, "
                    "o.event_id LIMIT $3::int",
                    3, p, list_cb, req) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

void pc_app_routes_notify(pc_app_t *app, struct pc_notifier *n)
{
    pc_router_add(app->api, "GET", "/v1/platform-key", platform_key, n);
    pc_router_add(app->admin, "GET", "/admin/notifications", list_events, app);
    pc_router_add(app->admin, "GET", "/admin/notifications/{event_id}", get_event, app);
    pc_router_add(app->admin, "POST", "/admin/notifications/{event_id}/redeliver", redeliver, app);
}
