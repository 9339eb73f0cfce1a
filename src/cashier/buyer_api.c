/* Admin API for buyers and coupons: POST /admin/buyers, GET
 * /admin/buyers/{id}, POST /admin/buyers/{id}/block|unblock, POST
 * /admin/coupons, POST /admin/merchants/{id}/account-types. Wallet money only moves through the
 * ledger (recharge trades, or an ops adjustment through the suspense account). */
#include "api/app.h"
#include "auth/sign.h"
#include "core/currency.h"
#include "core/error.h"
#include "core/log.h"
#include "ledger/ledger.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The database's own message is not echoed: its "Failing row contains"
 * detail shows whole rows. The constraint that refused it is logged. */
static void db_fail(pc_http_req_t *req, int status, pc_db_res_t *res)
{
    if (!pc_retryable(status))
        pc_log_warn("buyer_api.db_failed", "%s %s: %s refused it", pc_http_req_method(req),
                    pc_http_req_path(req), pc_db_constraint(res));
    pc_respond_db_error(req, status);
}

static void json_row_cb(void *data, int status, pc_db_res_t *res)
{
    pc_http_req_t *req = data;
    if (status) {
        db_fail(req, status, res);
        return;
    }
    if (pc_db_rows(res) == 0) {
        pc_http_respond_error(req, PC_API_NOT_FOUND, NULL, "not found");
        return;
    }
    const char *text = pc_db_get(res, 0, 0);
    pc_respond_json_text(req, 200, text);
}

#define BUYER_JSON                                                                                 \
    "SELECT json_build_object('buyer_id', buyer_id, 'name', name, 'status', status, "              \
    "'created_at', to_char(created_at AT TIME ZONE 'UTC', "                                        \
    "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'))::text "                                                    \
    "FROM buyers WHERE buyer_id = $1"

static void created_cb(void *data, int status, pc_db_res_t *res)
{
    pc_http_req_t *req = data;
    if (status == PC_ECONFLICT) {
        pc_http_respond_error(req, PC_API_INVALID_STATE, "buyer_id", "a buyer with this id exists");
        return;
    }
    if (status) {
        db_fail(req, status, res);
        return;
    }
    const char *text = pc_db_get(res, 0, 0);
    pc_respond_json_text(req, 201, text);
}

static void create_buyer(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    json_t *b = pc_http_req_json(req);
    int bad = 0;
    const char *id = b ? pc_json_str(b, "buyer_id", 64, 1, &bad) : NULL;
    const char *name = b ? pc_json_str(b, "name", 200, 0, &bad) : NULL;
    if (!b || !id || bad) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "buyer_id",
                              "buyer_id: 1-64 of [A-Za-z0-9_-]; name optional");
        return;
    }
    /* Shown back by the admin API and the console: no control characters
     * (a bell and line breaks were stored). */
    if (name && !pc_printable(name, 200)) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "name",
                              "1-200 characters, none of them a control character");
        return;
    }
    const char *p[] = {id, name};
    if (pc_db_query(app->db,
                    "WITH b AS (INSERT INTO buyers (buyer_id, name) VALUES ($1, $2) RETURNING *) "
                    "SELECT json_build_object('buyer_id', buyer_id, 'name', name, 'status', "
                    "status)::text FROM b",
                    2, p, created_cb, req) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

static void get_buyer(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    const char *p[] = {pc_http_req_param(req, "id")};
    if (pc_db_query(app->db, BUYER_JSON, 1, p, json_row_cb, req) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

/* A buyer blocked or unblocked: said with who did it (X-Operator), then
 * answered as json_row_cb does. Before, nothing kept who. */
static void status_set_cb(void *data, int status, pc_db_res_t *res)
{
    pc_http_req_t *req = data;
    if (!status && pc_db_rows(res) == 1)
        pc_log_warn("buyer.status_set", "buyer %s set %s by %s", pc_http_req_param(req, "id"),
                    strstr(pc_db_get(res, 0, 0), "\"BLOCKED\"") ? "BLOCKED" : "ACTIVE",
                    pc_operator_of(req));
    json_row_cb(data, status, res);
}

static void set_status(pc_http_req_t *req, pc_app_t *app, const char *status)
{
    const char *p[] = {pc_http_req_param(req, "id"), status};
    if (pc_db_query(app->db,
                    "WITH b AS (UPDATE buyers SET status = $2 WHERE buyer_id = $1 RETURNING *) "
                    "SELECT json_build_object('buyer_id', buyer_id, 'name', name, 'status', "
                    "status)::text FROM b",
                    2, p, status_set_cb, req) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

static void block_buyer(pc_http_req_t *req, void *data)
{
    set_status(req, data, "BLOCKED");
}

static void unblock_buyer(pc_http_req_t *req, void *data)
{
    set_status(req, data, "ACTIVE");
}

static void coupon_cb(void *data, int status, pc_db_res_t *res)
{
    pc_http_req_t *req = data;
    if (status == PC_EIO && !strcmp(pc_db_sqlstate(res), "23503")) {
        /* Named after the key the database found no row for. */
        int merchant = strstr(pc_db_constraint(res), "merchant") != NULL;
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, merchant ? "merchant_id" : "buyer_id",
                              merchant ? "unknown merchant" : "unknown buyer");
        return;
    }
    if (status) {
        db_fail(req, status, res);
        return;
    }
    /* created: a new coupon (201); same: the one this coupon_id already
     * named, with the same figures (a retry: 200); else the id is another
     * coupon's (409). */
    /* The insert or the row it ran into (DO UPDATE locks and returns it,
     * even one a concurrent grant of the same id committed a moment ago):
     * always one row. */
    if (pc_db_rows(res) != 1) {
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "not recorded; retry");
        return;
    }
    const char *created = pc_db_get(res, 0, 1), *same = pc_db_get(res, 0, 2);
    if (strcmp(created, "t") && strcmp(same, "t")) {
        pc_http_respond_error(req, PC_API_INVALID_STATE, "coupon_id",
                              "this coupon_id names another coupon");
        return;
    }
    pc_respond_json_text(req, strcmp(created, "t") ? 200 : 201, pc_db_get(res, 0, 0));
}

static void create_coupon(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    json_t *b = pc_http_req_json(req);
    int bad = 0;
    if (!b) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, NULL, "body must be a JSON object");
        return;
    }
    const char *buyer = pc_json_str(b, "buyer_id", 64, 1, &bad);
    long long amount = 0, min_amount = 0, days = 30;
    const char *cur = pc_json_str(b, "currency", 3, 0, &bad);
    const char *funded = pc_json_str(b, "funded_by", 10, 0, &bad);
    const char *merchant = pc_json_str(b, "merchant_id", 64, 1, &bad);
    /* Chosen by the caller, so that a retry after a lost answer does not
     * grant the buyer a second coupon. */
    const char *chosen = pc_json_str(b, "coupon_id", 40, 1, &bad);
    if (!buyer || bad || !pc_currency_known(cur) ||
        pc_json_int(b, "amount", 1, 1000000000000LL, &amount) != 0 ||
        pc_json_int(b, "min_amount", 0, 1000000000000LL, &min_amount) < 0 ||
        pc_json_int(b, "expire_days", 1, 3650, &days) < 0) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, NULL,
                              "buyer_id, amount (integer > 0) and currency are required; "
                              "min_amount and expire_days optional");
        return;
    }
    if (!funded)
        funded = "PLATFORM";
    if ((strcmp(funded, "PLATFORM") && strcmp(funded, "MERCHANT")) ||
        (!strcmp(funded, "MERCHANT") && !merchant)) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "funded_by",
                              "PLATFORM, or MERCHANT with merchant_id");
        return;
    }
    char id[52], hex[17], amt[24], mina[24], d[16];
    if (chosen) {
        snprintf(id, sizeof id, "%s", chosen);
    } else {
        pc_random_hex(hex, sizeof hex, 8);
        snprintf(id, sizeof id, "cp_%s", hex);
    }
    snprintf(amt, sizeof amt, "%lld", amount);
    snprintf(mina, sizeof mina, "%lld", min_amount);
    snprintf(d, sizeof d, "%lld", days);
    const char *p[] = {id, buyer, amt, cur, mina, funded, merchant, d};
    if (pc_db_query(
            app->db,
            "WITH n AS (INSERT INTO coupons (coupon_id, buyer_id, amount, currency, "
            "min_amount, funded_by, merchant_id, expires_at) VALUES ($1, $2, $3, $4, $5, "
            "$6, $7, now() + make_interval(days => $8::int)) ON CONFLICT (coupon_id) DO "
            "UPDATE SET coupon_id = EXCLUDED.coupon_id RETURNING *, xmax = 0 AS created) SELECT "
            "json_build_object('coupon_id', coupon_id, 'buyer_id', "
            "buyer_id, 'amount', amount, 'currency', currency, 'min_amount', min_amount, "
            "'funded_by', funded_by, 'merchant_id', merchant_id, 'status', status, "
            "'expires_at', to_char(expires_at AT TIME ZONE 'UTC', "
            "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'))::text, created, (buyer_id, amount, currency, "
            "min_amount, funded_by, merchant_id) IS NOT DISTINCT FROM ($2, $3::bigint, $4, "
            "$5::bigint, $6, $7) AS same FROM n",
            8, p, coupon_cb, req) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

static void account_type_cb(void *data, int status, pc_db_res_t *res)
{
    pc_http_req_t *req = data;
    if (status == PC_EIO && !strcmp(pc_db_sqlstate(res), "23503")) {
        pc_http_respond_error(req, PC_API_NOT_FOUND, NULL, "no such merchant");
        return;
    }
    if (status) {
        db_fail(req, status, res);
        return;
    }
    pc_respond_json_text(req, 200, pc_db_get(res, 0, 0));
}

/* POST /admin/merchants/{id}/account-types {"account_type"}: lets the
 * merchant's RECHARGE trades name that type (a wallet per buyer and type,
 * spent with BALANCE at this merchant only). Adding one twice is no error. */
static void add_account_type(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    json_t *b = pc_http_req_json(req);
    int bad = 0;
    const char *type = b ? pc_json_str(b, "account_type", 16, 1, &bad) : NULL;
    if (!type || bad) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "account_type",
                              "account_type: 1-16 of [A-Za-z0-9_-]");
        return;
    }
    const char *p[] = {pc_http_req_param(req, "id"), type};
    if (pc_db_query(app->db,
                    "WITH a AS (INSERT INTO merchant_account_types (merchant_id, account_type) "
                    "VALUES ($1, $2) ON CONFLICT DO NOTHING) SELECT json_build_object("
                    "'merchant_id', $1::text, 'account_type', $2::text)::text",
                    2, p, account_type_cb, req) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

void pc_app_routes_buyers(pc_app_t *app)
{
    pc_router_add(app->admin, "POST", "/admin/merchants/{id}/account-types", add_account_type, app);
    pc_router_add(app->admin, "POST", "/admin/buyers", create_buyer, app);
    pc_router_add(app->admin, "GET", "/admin/buyers/{id}", get_buyer, app);
    pc_router_add(app->admin, "POST", "/admin/buyers/{id}/block", block_buyer, app);
    pc_router_add(app->admin, "POST", "/admin/buyers/{id}/unblock", unblock_buyer, app);
    pc_router_add(app->admin, "POST", "/admin/coupons", create_coupon, app);
}
