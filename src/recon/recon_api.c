/* Reconciliation's admin routes (api.md "Admin (ops) API"), behind the admin
 * token:
 *   POST /admin/recon/runs {"channel_id","date","who"?}
 *        runs the day with the channel's statement; answers the run when it
 *        is done (200), 409 REQUEST_IN_PROGRESS while another request runs
 *        the day, 503 UNAVAILABLE when the statement could not be had (the
 *        run is FAILED; GET it for the reason)
 *   POST /admin/recon/runs/upload?channel_id=&date=[&who=]
 *        the same with the statement as the request body (text/csv), for a
 *        channel that sends files; a malformed file is 400 with its row
 *   GET  /admin/recon/runs?channel_id=&date=&status=&limit=   newest first
 *   GET  /admin/recon/runs/{run_id}
 *   GET  /admin/recon/diffs?status=OPEN&channel_id=&date=&kind=&run_id=
 *        &limit=&after=   oldest first; "next_after" pages on
 *   GET  /admin/recon/diffs/{diff_id}
 *   POST /admin/recon/diffs/{diff_id}/resolve {"reason","adjust":false,"who"?}
 *        with "adjust": true the ledger adjustment through suspense is posted
 *        with the resolution (recon_adjust.h); 409 INVALID_STATE when the
 *        difference is not open or cannot be adjusted. */
#include "api/app.h"
#include "core/error.h"
#include "recon/recon.h"
#include "recon/recon_csv.h"
#include "recon/recon_match.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int valid_id(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    return n >= 1 && n <= 32 && strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_") == n;
}

static int valid_date(const char *s)
{
    int64_t t;
    return s && pc_recon_parse_date(s, &t) == 0;
}

/* A positive integer of up to 18 digits, or -1. */
static long long parse_id(const char *s)
{
    if (!s || !s[0] || strlen(s) > 18 || strspn(s, "0123456789") != strlen(s))
        return -1;
    long long v = atoll(s);
    return v > 0 ? v : -1;
}

/* ---------- runs ---------- */

static void ran_cb(void *data, int status, const char *message, json_t *run)
{
    pc_http_req_t *req = data;
    switch (status) {
    case 0:
        pc_http_respond_json(req, 200, run);
        return;
    case PC_EINVAL:
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "statement", message);
        break;
    case PC_ENOTFOUND:
        pc_http_respond_error(req, PC_API_NOT_FOUND, "channel_id", message);
        break;
    case PC_ECONFLICT:
        pc_http_respond_error(req, PC_API_REQUEST_IN_PROGRESS, NULL, message);
        break;
    default: {
        char msg[400];
        json_t *rid = run ? json_object_get(run, "run_id") : NULL;
        if (json_is_integer(rid))
            snprintf(msg, sizeof msg, "run %lld failed: %s", (long long)json_integer_value(rid),
                     message);
        else
            snprintf(msg, sizeof msg, "%s", message);
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, msg);
        break;
    }
    }
    json_decref(run);
}

static void start_run(pc_http_req_t *req, pc_recon_t *rc, const char *channel_id, const char *date,
                      const char *who, const char *csv, size_t len)
{
    if (!valid_id(channel_id)) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "channel_id",
                              "channel_id must be 1-32 of [a-z0-9_]");
        return;
    }
    int64_t day;
    if (!date || pc_recon_parse_date(date, &day) != 0) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "date",
                              "date must be a business day YYYY-MM-DD");
        return;
    }
    /* A day that has not begun has nothing to reconcile; its run would be
     * DONE and empty (the job redoes a day run before it ended). */
    if (day > (int64_t)time(NULL)) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "date",
                              "a day that has begun (UTC); not a future day");
        return;
    }
    if (who && (strlen(who) > 64 || !who[0])) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "who", "who must be 1-64 characters");
        return;
    }
    /* Else the console's or payctl's X-Operator, as other ops actions. */
    pc_recon_run_req_t r = {channel_id, date, csv, len, who ? who : pc_operator_of(req), 0};
    int rc2 = pc_recon_run(rc, &r, ran_cb, req);
    if (rc2 < 0)
        pc_http_respond_error(req, rc2 == PC_EINVAL ? PC_API_INVALID_REQUEST : PC_API_UNAVAILABLE,
                              NULL, pc_strerror(rc2));
}

static void post_run(pc_http_req_t *req, void *data)
{
    json_t *b = pc_http_req_json(req);
    if (!b) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, NULL, "body must be a JSON object");
        return;
    }
    start_run(req, data, json_string_value(json_object_get(b, "channel_id")),
              json_string_value(json_object_get(b, "date")),
              json_string_value(json_object_get(b, "who")), NULL, 0);
}

static void post_upload(pc_http_req_t *req, void *data)
{
    size_t len;
    const char *body = pc_http_req_body(req, &len);
    /* The request owns the body until it is answered: the run borrows it. */
    start_run(req, data, pc_http_req_query_param(req, "channel_id"),
              pc_http_req_query_param(req, "date"), pc_http_req_query_param(req, "who"),
              body ? body : "", body ? len : 0);
}

static void json_text_cb(void *data, int status, pc_db_res_t *res)
{
    pc_http_req_t *req = data;
    if (status) {
        pc_respond_db_error(req, status);
        return;
    }
    if (pc_db_rows(res) == 0 || pc_db_isnull(res, 0, 0)) {
        pc_http_respond_error(req, PC_API_NOT_FOUND, NULL, "not found");
        return;
    }
    pc_respond_json_text(req, 200, pc_db_get(res, 0, 0));
}

static void get_run(pc_http_req_t *req, void *data)
{
    pc_app_t *app = pc_recon_app(data);
    const char *id = pc_http_req_param(req, "run_id");
    if (parse_id(id) < 0) {
        pc_http_respond_error(req, PC_API_NOT_FOUND, NULL, "no such run");
        return;
    }
    const char *p[] = {id, pc_recon_daily_at_arg(data)};
    if (pc_db_query(app->db,
                    "SELECT recon_run_json(r, $2::int)::text FROM recon_runs r WHERE run_id = $1",
                    2, p, json_text_cb, req) < 0)
        pc_respond_db_error(req, PC_EUNAVAIL);
}

static void list_runs(pc_http_req_t *req, void *data)
{
    pc_app_t *app = pc_recon_app(data);
    const char *ch = pc_http_req_query_param(req, "channel_id");
    const char *date = pc_http_req_query_param(req, "date");
    const char *status = pc_http_req_query_param(req, "status");
    int bad = 0;
    char lim[8];
    const char *limit = pc_limit_param(req, 50, lim, &bad);
    if (bad || (ch && !valid_id(ch)) || (date && !valid_date(date)) ||
        (status && strcmp(status, "RUNNING") && strcmp(status, "DONE") &&
         strcmp(status, "FAILED"))) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, NULL,
                              "channel_id, date (YYYY-MM-DD), status (RUNNING|DONE|FAILED) or "
                              "limit (1-1000) is invalid");
        return;
    }
    const char *p[] = {ch, date, status, limit, pc_recon_daily_at_arg(data)};
    if (pc_db_query(app->db,
                    "SELECT json_build_object('runs', coalesce(json_agg(recon_run_json(r, $5::int) "
                    "ORDER "
                    "BY r.business_date DESC, r.run_id DESC), '[]'))::text FROM (SELECT * FROM "
                    "recon_runs WHERE ($1::text IS NULL OR channel_id = $1) AND ($2::date IS NULL "
                    "OR business_date = $2::date) AND ($3::text IS NULL OR status = $3) ORDER BY "
                    "business_date DESC, run_id DESC LIMIT $4::int) r",
                    5, p, json_text_cb, req) < 0)
        pc_respond_db_error(req, PC_EUNAVAIL);
}

/* ---------- differences ---------- */

static void list_diffs(pc_http_req_t *req, void *data)
{
    pc_app_t *app = pc_recon_app(data);
    const char *status = pc_http_req_query_param(req, "status");
    const char *ch = pc_http_req_query_param(req, "channel_id");
    const char *date = pc_http_req_query_param(req, "date");
    const char *kind = pc_http_req_query_param(req, "kind");
    const char *run = pc_http_req_query_param(req, "run_id");
    const char *after = pc_http_req_query_param(req, "after");
    int bad = 0;
    char lim[8];
    const char *limit = pc_limit_param(req, 100, lim, &bad);
    if (status && strcmp(status, "OPEN") && strcmp(status, "AUTO_REPAIRED") &&
        strcmp(status, "RESOLVED")) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "status",
                              "status must be OPEN, AUTO_REPAIRED or RESOLVED");
        return;
    }
    if (bad || (ch && !valid_id(ch)) || (date && !valid_date(date)) ||
        (kind && pc_recon_kind_parse(kind) < 0) || (run && parse_id(run) < 0) ||
        (after && strcmp(after, "0") && parse_id(after) < 0)) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, NULL,
                              "channel_id, date, kind, run_id, after or limit is invalid");
        return;
    }
    const char *p[] = {status, ch, date, kind, run, after ? after : "0", limit};
    if (pc_db_query(app->db,
                    "SELECT json_build_object('diffs', coalesce(json_agg(recon_diff_json(d) ORDER "
                    "BY d.diff_id), '[]'), 'next_after', CASE WHEN count(*) = $7::int THEN "
                    "max(d.diff_id) END)::text FROM (SELECT * FROM recon_diffs WHERE ($1::text IS "
                    "NULL OR status = $1) AND ($2::text IS NULL OR channel_id = $2) AND ($3::date "
                    "IS NULL OR business_date = $3::date) AND ($4::text IS NULL OR kind = $4) AND "
                    "($5::bigint IS NULL OR run_id = $5::bigint) AND diff_id > $6::bigint ORDER "
                    "BY diff_id LIMIT $7::int) d",
                    7, p, json_text_cb, req) < 0)
        pc_respond_db_error(req, PC_EUNAVAIL);
}

static void get_diff(pc_http_req_t *req, void *data)
{
    pc_app_t *app = pc_recon_app(data);
    const char *id = pc_http_req_param(req, "diff_id");
    if (parse_id(id) < 0) {
        pc_http_respond_error(req, PC_API_NOT_FOUND, NULL, "no such difference");
        return;
    }
    const char *p[] = {id};
    if (pc_db_query(app->db,
                    "SELECT recon_diff_json(d)::text FROM recon_diffs d WHERE diff_id = $1::bigint",
                    1, p, json_text_cb, req) < 0)
        pc_respond_db_error(req, PC_EUNAVAIL);
}

static void resolved_cb(void *data, int status, const char *message, json_t *diff)
{
    pc_http_req_t *req = data;
    switch (status) {
    case 0:
        pc_http_respond_json(req, 200, diff);
        return;
    case PC_ENOTFOUND:
        pc_http_respond_error(req, PC_API_NOT_FOUND, NULL, message);
        break;
    case PC_ECONFLICT:
    case PC_EINVAL:
        pc_http_respond_error(req, PC_API_INVALID_STATE, status == PC_EINVAL ? "adjust" : NULL,
                              message);
        break;
    default:
        pc_respond_db_error(req, status);
        break;
    }
    json_decref(diff);
}

static void resolve_diff(pc_http_req_t *req, void *data)
{
    pc_recon_t *rc = data;
    long long id = parse_id(pc_http_req_param(req, "diff_id"));
    json_t *b = pc_http_req_json(req);
    if (id < 0) {
        pc_http_respond_error(req, PC_API_NOT_FOUND, NULL, "no such difference");
        return;
    }
    if (!b) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, NULL, "body must be a JSON object");
        return;
    }
    const char *reason = json_string_value(json_object_get(b, "reason"));
    json_t *adj = json_object_get(b, "adjust");
    const char *who = json_string_value(json_object_get(b, "who"));
    if (!reason || !reason[0] || strlen(reason) > 500) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "reason",
                              "reason must be 1-500 characters");
        return;
    }
    if (adj && !json_is_boolean(adj)) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "adjust", "adjust must be a boolean");
        return;
    }
    if (json_object_get(b, "who") && (!who || !who[0] || strlen(who) > 64)) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "who", "who must be 1-64 characters");
        return;
    }
    int rc2 = pc_recon_resolve(rc, id, reason, json_is_true(adj), who ? who : pc_operator_of(req),
                               resolved_cb, req);
    if (rc2 < 0)
        pc_http_respond_error(req, rc2 == PC_EINVAL ? PC_API_INVALID_REQUEST : PC_API_UNAVAILABLE,
                              NULL, pc_strerror(rc2));
}

void pc_app_routes_recon(pc_app_t *app, struct pc_recon *rc)
{
    pc_router_add(app->admin, "POST", "/admin/recon/runs", post_run, rc);
    pc_router_add(app->admin, "POST", "/admin/recon/runs/upload", post_upload, rc);
    pc_router_add(app->admin, "GET", "/admin/recon/runs", list_runs, rc);
    pc_router_add(app->admin, "GET", "/admin/recon/runs/{run_id}", get_run, rc);
    pc_router_add(app->admin, "GET", "/admin/recon/diffs", list_diffs, rc);
    pc_router_add(app->admin, "GET", "/admin/recon/diffs/{diff_id}", get_diff, rc);
    pc_router_add(app->admin, "POST", "/admin/recon/diffs/{diff_id}/resolve", resolve_diff, rc);
}
