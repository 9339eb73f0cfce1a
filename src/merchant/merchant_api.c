/* Admin API for merchants: POST /admin/merchants, GET /admin/merchants/{id},
 * POST /admin/merchants/{id}/enable|disable. Secrets are generated here from
 * the CSPRNG, returned once, and never logged. */
#include "api/app.h"
#include "auth/sign.h"
#include "core/error.h"
#include "core/log.h"
#include "merchant/merchant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    pc_http_req_t *req;
    pc_app_t *app;
    char id[65];
    char secret[PC_SECRET_STR_LEN + 1];
    char key_sha256[65]; /* RSA2: the public key's fingerprint */
    int hmac;
} create_t;

static void create_cb(void *data, int status, pc_db_res_t *res)
{
    create_t *c = data;
    if (status == PC_ECONFLICT && !strcmp(pc_db_constraint(res), "merchants_public_key_unique")) {
        pc_http_respond_error(c->req, PC_API_INVALID_STATE, "public_key",
                              "this public key belongs to another merchant: each merchant signs "
                              "with a key of its own");
        return;
    }
    if (status == PC_ECONFLICT) {
        pc_http_respond_error(c->req, PC_API_INVALID_STATE, "merchant_id",
                              "a merchant with this id exists");
        return;
    }
    if (status) {
        /* Not the database's message: its "Failing row contains" detail
         * would show the new secret. */
        if (!pc_retryable(status))
            pc_log_warn("merchant.create_failed", "merchant %s: %s refused it", c->id,
                        pc_db_constraint(res));
        pc_respond_db_error(c->req, status);
        return;
    }
    json_t *out =
        json_pack("{s:s,s:s}", "merchant_id", c->id, "sign_type", c->hmac ? "HMAC-SHA256" : "RSA2");
    if (c->hmac)
        json_object_set_new(out, "secret", json_string(c->secret));
    pc_log_info("merchant.created", "merchant %s created", c->id);
    pc_http_respond_json(c->req, 201, out);
}

static void create_merchant(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    json_t *b = pc_http_req_json(req);
    if (!b) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, NULL, "body must be a JSON object");
        return;
    }
    int bad = 0;
    create_t *c = pc_http_req_alloc(req, sizeof *c);
    c->req = req;
    c->app = app;
    const char *id = pc_json_str(b, "merchant_id", 64, 1, &bad);
    if (bad) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "merchant_id", "1-64 of [A-Za-z0-9_-]");
        return;
    }
    if (id) {
        snprintf(c->id, sizeof c->id, "%s", id);
    } else {
        char hex[17];
        pc_random_hex(hex, sizeof hex, 8);
        snprintf(c->id, sizeof c->id, "m_%s", hex);
    }
    const char *name = pc_json_str(b, "name", 200, 0, &bad);
    if (!name || bad) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "name", "name is required (1-200)");
        return;
    }
    const char *st = pc_json_str(b, "sign_type", 20, 0, &bad);
    if (!st)
        st = "HMAC-SHA256";
    c->hmac = strcmp(st, "HMAC-SHA256") == 0;
    if (bad || (!c->hmac && strcmp(st, "RSA2") != 0)) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "sign_type", "HMAC-SHA256 or RSA2");
        return;
    }
    const char *pub = pc_json_str(b, "public_key", 8192, 0, &bad);
    if (bad) {
        /* Said here: left set, it was blamed on notify_url below. */
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "public_key",
                              "a PEM RSA public key (a JSON string of at most 8192 bytes)");
        return;
    }
    if (!c->hmac) {
        pc_rsa_key_t *k = pub ? pc_rsa_key_new_public_pem(pub, strlen(pub)) : NULL;
        if (!k || pc_rsa_key_fingerprint(k, c->key_sha256) != 0) {
            pc_rsa_key_free(k);
            pc_http_respond_error(req, PC_API_INVALID_REQUEST, "public_key",
                                  "RSA2 needs a PEM RSA public key of 2048 to 8192 bits");
            return;
        }
        pc_rsa_key_free(k);
    } else if (pc_secret_generate(c->secret, sizeof c->secret) != 0) {
        /* Never an empty secret: an empty HMAC key signs for anyone. */
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "no random bytes for a secret; retry");
        return;
    }
    char products[128] = "{INSTANT,GUARANTEE,RECHARGE}";
    json_t *ap = json_object_get(b, "allowed_products");
    if (ap) {
        size_t i;
        json_t *v;
        size_t off = (size_t)snprintf(products, sizeof products, "{");
        if (!json_is_array(ap) || json_array_size(ap) == 0 || json_array_size(ap) > 3) {
            pc_http_respond_error(req, PC_API_INVALID_REQUEST, "allowed_products",
                                  "a list of INSTANT, GUARANTEE, RECHARGE");
            return;
        }
        json_array_foreach(ap, i, v)
        {
            if (!json_is_string(v) || !pc_product_bit(json_string_value(v))) {
                pc_http_respond_error(req, PC_API_INVALID_REQUEST, "allowed_products",
                                      "a list of INSTANT, GUARANTEE, RECHARGE");
                return;
            }
            off += (size_t)snprintf(products + off, sizeof products - off, "%s%s", i ? "," : "",
                                    json_string_value(v));
        }
        snprintf(products + off, sizeof products - off, "}");
    }
    long long fee = 60, cycle = 1;
    if (pc_json_int(b, "fee_rate_bp", 0, 10000, &fee) < 0) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "fee_rate_bp", "integer 0-10000");
        return;
    }
    if (pc_json_int(b, "settle_cycle_days", 0, 90, &cycle) < 0) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "settle_cycle_days", "integer 0-90");
        return;
    }
    const char *notify = pc_json_url(b, "notify_url", &bad);
    if (bad) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "notify_url", "an http(s) URL");
        return;
    }
    int advance = json_is_true(json_object_get(b, "advance_funding"));
    char fees[16], cycles[16];
    snprintf(fees, sizeof fees, "%lld", fee);
    snprintf(cycles, sizeof cycles, "%lld", cycle);
    const char *p[] = {c->id,
                       name,
                       c->hmac ? "HMAC-SHA256" : "RSA2",
                       c->hmac ? c->secret : NULL,
                       c->hmac ? NULL : pub,
                       products,
                       fees,
                       cycles,
                       notify,
                       advance ? "true" : "false",
                       c->hmac ? NULL : c->key_sha256};
    if (pc_db_query(app->db,
                    "INSERT INTO merchants (merchant_id, name, sign_type, secret, public_key, "
                    "allowed_products, fee_rate_bp, settle_cycle_days, notify_url, "
                    "advance_funding, public_key_sha256) VALUES ($1, $2, $3, $4, $5, $6::text[], "
                    "$7, $8, $9, $10, $11)",
                    11, p, create_cb, c) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

static void get_cb(void *data, int status, pc_db_res_t *res)
{
    pc_http_req_t *req = data;
    if (status) {
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
        return;
    }
    if (pc_db_rows(res) == 0) {
        pc_http_respond_error(req, PC_API_NOT_FOUND, NULL, "no such merchant");
        return;
    }
    const char *text = pc_db_get(res, 0, 0);
    pc_respond_json_text(req, 200, text);
}

static void get_merchant(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    const char *p[] = {pc_http_req_param(req, "id")};
    if (pc_db_query(app->db,
                    "SELECT json_build_object('merchant_id', merchant_id, 'name', name, 'status', "
                    "status, 'sign_type', sign_type, 'allowed_products', allowed_products, "
                    "'fee_rate_bp', fee_rate_bp, 'settle_cycle_days', settle_cycle_days, "
                    "'notify_url', notify_url, 'advance_funding', advance_funding)::text "
                    "FROM merchants WHERE merchant_id = $1",
                    1, p, get_cb, req) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

typedef struct {
    pc_http_req_t *req;
    pc_app_t *app;
    const char *id;
    const char *status; /* a static string */
} status_t;

static void status_cb(void *data, int status, pc_db_res_t *res)
{
    status_t *s = data;
    if (status) {
        pc_http_respond_error(s->req, PC_API_UNAVAILABLE, NULL, "database unavailable");
        return;
    }
    if (pc_db_affected(res) == 0) {
        pc_http_respond_error(s->req, PC_API_NOT_FOUND, NULL, "no such merchant");
        return;
    }
    pc_merchants_changed(s->app->merchants, s->id);
    pc_log_warn("merchant.status_set", "merchant %s set %s by %s", s->id, s->status,
                pc_operator_of(s->req));
    get_merchant(s->req, s->app);
}

static void set_status(pc_http_req_t *req, pc_app_t *app, const char *st)
{
    status_t *s = pc_http_req_alloc(req, sizeof *s);
    s->status = st;
    s->req = req;
    s->app = app;
    s->id = pc_http_req_param(req, "id");
    const char *p[] = {s->id, st};
    if (pc_db_query(app->db,
                    "UPDATE merchants SET status = $2, updated_at = now() WHERE merchant_id = $1",
                    2, p, status_cb, s) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

static void disable_merchant(pc_http_req_t *req, void *data)
{
    set_status(req, data, "DISABLED");
}

static void enable_merchant(pc_http_req_t *req, void *data)
{
    set_status(req, data, "ACTIVE");
}

typedef struct {
    pc_http_req_t *req;
    pc_app_t *app;
    char id[65];
    char secret[PC_SECRET_STR_LEN + 1]; /* HMAC: the new secret, shown once */
    char key_sha256[65];                /* RSA2: the new key's fingerprint */
    int hmac;
} rotate_t;

/* The rotation matched no merchant of its kind: none at all (404), or one
 * that signs the other way (409: the other route changes its key). */
static void kind_cb(void *data, int status, pc_db_res_t *res)
{
    rotate_t *r = data;
    if (status) {
        pc_respond_db_error(r->req, status);
        return;
    }
    if (pc_db_rows(res) == 0) {
        pc_http_respond_error(r->req, PC_API_NOT_FOUND, NULL, "no such merchant");
        return;
    }
    pc_http_respond_error(r->req, PC_API_INVALID_STATE, NULL,
                          r->hmac ? "this merchant signs with RSA2: POST "
                                    "/admin/merchants/{id}/public-key replaces its key"
                                  : "this merchant signs with HMAC-SHA256: POST "
                                    "/admin/merchants/{id}/rotate-secret replaces its secret");
}

static void rotated_cb(void *data, int status, pc_db_res_t *res)
{
    rotate_t *r = data;
    if (status == PC_ECONFLICT && !strcmp(pc_db_constraint(res), "merchants_public_key_unique")) {
        pc_http_respond_error(r->req, PC_API_INVALID_STATE, "public_key",
                              "this public key belongs to another merchant");
        return;
    }
    if (status) {
        pc_respond_db_error(r->req, status);
        return;
    }
    if (pc_db_rows(res) == 0) {
        const char *p[] = {r->id};
        if (pc_db_query(r->app->db, "SELECT sign_type FROM merchants WHERE merchant_id = $1", 1, p,
                        kind_cb, r) < 0)
            pc_respond_db_error(r->req, PC_EUNAVAIL);
        return;
    }
    pc_merchants_changed(r->app->merchants, r->id);
    int c = pc_db_col(res, "previous_valid_until");
    const char *until = pc_db_isnull(res, 0, c) ? NULL : pc_db_get(res, 0, c);
    /* Who rotated it, and how long the old one still signs (never the
     * secret itself). */
    pc_log_warn("merchant.key_rotated", "merchant %s: key rotated by %s, the previous one %s%s",
                r->id, pc_operator_of(r->req), until ? "signs until " : "no longer signs",
                until ? until : "");
    pc_log_info("merchant.key_rotated", "merchant %s has a new %s%s%s", r->id,
                r->hmac ? "secret" : "public key", until ? "; the previous one works until " : "",
                until ? until : "");
    json_t *out = json_pack("{s:s,s:s?}", "merchant_id", r->id, "previous_valid_until", until);
    if (r->hmac)
        json_object_set_new(out, "secret", json_string(r->secret));
    pc_http_respond_json(r->req, 200, out);
}

/* The rotation's grace period: {"grace_seconds": 0..604800}, 0 (the
 * default, for a secret or key that leaked) ends the old one at once. */
static int grace_of(pc_http_req_t *req, json_t *b, char out[16])
{
    long long grace = 0;
    if (b && pc_json_int(b, "grace_seconds", 0, 604800, &grace) < 0) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "grace_seconds",
                              "0 to 604800 (7 days): how long the previous one keeps working");
        return -1;
    }
    snprintf(out, 16, "%lld", grace);
    return 0;
}

#define PREV_UNTIL_JSON                                                                            \
    "to_char(prev_until AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS "                 \
    "previous_valid_until"

/* A new HMAC secret, shown once. The previous one stops working at once, or
 * after grace_seconds (time to deploy the new one; a lost answer is rotated
 * again meanwhile). A rotation with grace while an earlier grace still runs
 * keeps that earlier secret too, until its own deadline (secret_prev2): the
 * merchant may sign with either (an answer lost, or a deliberate second
 * rotation). Without grace (a leak) every earlier secret stops. */
static void rotate_secret(pc_http_req_t *req, void *data)
{
    json_t *b = pc_http_req_json(req);
    char grace[16];
    if (grace_of(req, b, grace) < 0)
        return;
    rotate_t *r = pc_http_req_alloc(req, sizeof *r);
    r->req = req;
    r->app = data;
    r->hmac = 1;
    snprintf(r->id, sizeof r->id, "%s", pc_http_req_param(req, "id"));
    if (pc_secret_generate(r->secret, sizeof r->secret) != 0) {
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "no random bytes for a secret; retry");
        return;
    }
    const char *p[] = {r->id, r->secret, grace};
    if (pc_db_query(
            r->app->db,
            "UPDATE merchants SET secret_prev2 = CASE WHEN $3::int > 0 AND prev_until > now() "
            "THEN secret_prev END, prev2_until = CASE WHEN $3::int > 0 AND prev_until > "
            "now() AND secret_prev IS NOT NULL THEN prev_until END, secret_prev = CASE "
            "WHEN $3::int > 0 THEN secret END, "
            "public_key_prev = NULL, prev_until = CASE WHEN $3::int > 0 THEN now() + "
            "$3::int * interval '1 second' END, secret = $2, updated_at = now() WHERE "
            "merchant_id = $1 AND sign_type = 'HMAC-SHA256' RETURNING " PREV_UNTIL_JSON,
            3, p, rotated_cb, r) < 0)
        pc_respond_db_error(req, PC_EUNAVAIL);
}

/* An RSA2 merchant's new public key {"public_key": PEM, "grace_seconds"}:
 * the previous key keeps verifying for the grace period (0: not at all). */
static void replace_public_key(pc_http_req_t *req, void *data)
{
    json_t *b = pc_http_req_json(req);
    int bad = 0;
    const char *pem = b ? pc_json_str(b, "public_key", 8192, 0, &bad) : NULL;
    rotate_t *r = pc_http_req_alloc(req, sizeof *r);
    pc_rsa_key_t *k = pem && !bad ? pc_rsa_key_new_public_pem(pem, strlen(pem)) : NULL;
    int ok = k && pc_rsa_key_fingerprint(k, r->key_sha256) == 0;
    pc_rsa_key_free(k);
    if (!ok) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "public_key",
                              "a PEM RSA public key of 2048 to 8192 bits");
        return;
    }
    char grace[16];
    if (grace_of(req, b, grace) < 0)
        return;
    r->req = req;
    r->app = data;
    snprintf(r->id, sizeof r->id, "%s", pc_http_req_param(req, "id"));
    const char *p[] = {r->id, pem, r->key_sha256, grace};
    if (pc_db_query(r->app->db,
                    "UPDATE merchants SET public_key_prev = CASE WHEN $4::int > 0 THEN "
                    "public_key END, secret_prev = NULL, secret_prev2 = NULL, prev2_until = NULL, "
                    "prev_until = CASE WHEN $4::int > 0 THEN "
                    "now() + $4::int * interval '1 second' END, public_key = $2, "
                    "public_key_sha256 = $3, updated_at = now() WHERE merchant_id = $1 AND "
                    "sign_type = 'RSA2' RETURNING " PREV_UNTIL_JSON,
                    4, p, rotated_cb, r) < 0)
        pc_respond_db_error(req, PC_EUNAVAIL);
}

static void verified_cb(void *data, int status, pc_db_res_t *res)
{
    pc_http_req_t *req = data;
    if (status == PC_EIO && !strcmp(pc_db_sqlstate(res), "23503")) {
        pc_http_respond_error(req, PC_API_NOT_FOUND, NULL, "no such merchant");
        return;
    }
    if (status == PC_EIO && !strcmp(pc_db_sqlstate(res), "23514")) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, NULL,
                              "legal_name 1-200 characters, id_type BUSINESS_LICENSE, "
                              "NATIONAL_ID or PASSPORT, id_number at least 4 letters or digits");
        return;
    }
    if (status) {
        pc_respond_db_error(req, status);
        return;
    }
    pc_respond_json_text(req, 200, pc_db_get(res, 0, 0));
}

/* Records the merchant's verified legal name (ops, after checking the
 * documents). Only the last four characters of the document number are
 * kept. Re-verifying replaces the record. */
static void verify_merchant(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    json_t *b = pc_http_req_json(req);
    int bad = 0;
    const char *name = b ? pc_json_str(b, "legal_name", 200, 0, &bad) : NULL;
    const char *type = b ? pc_json_str(b, "id_type", 32, 0, &bad) : NULL;
    const char *num = b ? pc_json_str(b, "id_number", 64, 0, &bad) : NULL;
    if (!name || !type || !num || bad || strlen(num) < 4) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, NULL,
                              "legal_name, id_type and id_number are required");
        return;
    }
    const char *last4 = num + strlen(num) - 4;
    /* Bytes, not characters: a number ending in other letters than A-Z
     * (or cut inside one) was a 500 from the database's check. */
    if (strspn(last4, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") != 4) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "id_number",
                              "id_number must end in four letters A-Z or digits");
        return;
    }
    const char *p[] = {pc_http_req_param(req, "id"), name, type, last4, pc_operator_of(req)};
    if (pc_db_query(
            app->db,
            "WITH v AS (INSERT INTO merchant_verifications (merchant_id, legal_name, "
            "id_type, id_last4, verified_by) VALUES ($1, $2, $3, $4, $5) ON CONFLICT "
            "(merchant_id) DO UPDATE SET legal_name = EXCLUDED.legal_name, id_type = "
            "EXCLUDED.id_type, id_last4 = EXCLUDED.id_last4, verified_by = EXCLUDED.verified_by, "
            "verified_at = now() "
            "RETURNING *) SELECT json_build_object('merchant_id', merchant_id, "
            "'legal_name', legal_name, 'id_type', id_type, 'id_last4', id_last4, "
            "'verified_at', to_char(verified_at AT TIME ZONE 'UTC', "
            "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'))::text FROM v",
            5, p, verified_cb, req) < 0)
        pc_respond_db_error(req, PC_EUNAVAIL);
}

void pc_app_routes_merchants(pc_app_t *app)
{
    pc_router_add(app->admin, "POST", "/admin/merchants/{id}/verify", verify_merchant, app);
    pc_router_add(app->admin, "POST", "/admin/merchants/{id}/rotate-secret", rotate_secret, app);
    pc_router_add(app->admin, "POST", "/admin/merchants/{id}/public-key", replace_public_key, app);
    pc_router_add(app->admin, "POST", "/admin/merchants", create_merchant, app);
    pc_router_add(app->admin, "GET", "/admin/merchants/{id}", get_merchant, app);
    pc_router_add(app->admin, "POST", "/admin/merchants/{id}/disable", disable_merchant, app);
    pc_router_add(app->admin, "POST", "/admin/merchants/{id}/enable", enable_merchant, app);
}
