#include "acquiring/trade.h"
#include "api/app.h"
#include "auth/auth.h"
#include "auth/sign.h"
#include "core/currency.h"
#include "core/error.h"
#include "core/log.h"
#include "ledger/ledger.h"
#include "merchant/merchant.h"
#include "web/cashier_token.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Largest amount accepted: far above any real payment, and below 2^53 so that
 * Lua rules and JSON clients see it exactly. */
#define PC_MAX_AMOUNT 1000000000000000LL

json_t *pc_trade_json(const pc_trade_t *t)
{
    char c[32], e[32], p[32];
    json_error_t err;
    json_t *meta = json_loads(t->metadata ? t->metadata : "{}", 0, &err);
    json_t *splits = json_loads(t->splits ? t->splits : "[]", 0, &err);
    json_t *o = json_pack(
        "{s:s,s:s,s:s,s:s,s:s,s:I,s:s,s:I,s:I,s:I,s:s,s:s?,s:s,s:s,s:s?,s:o,s:o}", "trade_no",
        t->trade_no, "out_trade_no", t->out_trade_no, "merchant_id", t->merchant_id, "product",
        t->product, "status", t->status, "amount", (json_int_t)t->amount, "currency", t->currency,
        "paid_amount", (json_int_t)t->paid_amount, "refunded_amount",
        (json_int_t)t->refunded_amount, "settled_amount", (json_int_t)t->settled_amount, "subject",
        t->subject, "buyer_id", t->buyer_id, "created_at", pc_rfc3339(t->created_at, c, sizeof c),
        "expires_at", pc_rfc3339(t->expires_at, e, sizeof e), "paid_at",
        t->paid_at ? pc_rfc3339(t->paid_at, p, sizeof p) : NULL, "splits",
        splits ? splits : json_array(), "metadata", meta ? meta : json_object());
    return o;
}

void pc_trade_from_row(pc_trade_t *t, pc_db_res_t *res, int row)
{
    memset(t, 0, sizeof *t);
    snprintf(t->trade_no, sizeof t->trade_no, "%s", pc_db_val(res, row, "trade_no"));
    snprintf(t->out_trade_no, sizeof t->out_trade_no, "%s", pc_db_val(res, row, "out_trade_no"));
    snprintf(t->merchant_id, sizeof t->merchant_id, "%s", pc_db_val(res, row, "merchant_id"));
    snprintf(t->product, sizeof t->product, "%s", pc_db_val(res, row, "product"));
    snprintf(t->status, sizeof t->status, "%s", pc_db_val(res, row, "status"));
    snprintf(t->currency, sizeof t->currency, "%s", pc_db_val(res, row, "currency"));
    t->amount = pc_db_val_i64(res, row, "amount");
    t->paid_amount = pc_db_val_i64(res, row, "paid_amount");
    t->refunded_amount = pc_db_val_i64(res, row, "refunded_amount");
    t->settled_amount = pc_db_val_i64(res, row, "settled_amount");
    t->subject = pc_db_val(res, row, "subject");
    int bc = pc_db_col(res, "buyer_id");
    t->buyer_id = pc_db_isnull(res, row, bc) ? NULL : pc_db_get(res, row, bc);
    t->metadata = pc_db_val(res, row, "metadata");
    t->splits = pc_db_val(res, row, "splits");
    t->created_at = pc_db_val_i64(res, row, "created_at");
    t->expires_at = pc_db_val_i64(res, row, "expires_at");
    t->paid_at = pc_db_val_i64(res, row, "paid_at");
}

void pc_trade_no_new(char out[40])
{
    char hex[17];
    pc_random_hex(hex, sizeof hex, 8);
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    char day[16];
    strftime(day, sizeof day, "%Y%m%d", &tm);
    snprintf(out, 40, "T%s%s", day, hex);
}

int pc_trade_require_split_accounts(pc_db_tx_t *tx, const char *splits, pc_db_query_cb cb,
                                    void *data)
{
    const char *p[] = {splits};
    return pc_db_tx_query(
        tx,
        "SELECT pc_require(NOT EXISTS (SELECT 1 FROM jsonb_array_elements($1::jsonb) "
        "s WHERE NOT EXISTS (SELECT 1 FROM merchants m WHERE m.merchant_id = "
        "s->>'account' AND m.status = 'ACTIVE')), 'trade_split_account')",
        1, p, cb, data);
}

int pc_trade_split_refused(int status, pc_db_res_t *res)
{
    return status && res && !strcmp(pc_db_constraint(res), "trade_split_account");
}

/* ---------- POST /v1/trades ---------- */

typedef struct {
    pc_http_req_t *req;
    pc_app_t *app;
    pc_trade_t t;
    char *body;      /* the answer, stored with the trade */
    char *meta_text; /* owned */
    char *split_text;
    const char *notify_url;
    const char *return_url;   /* borrowed from the request body; NULL when absent */
    const char *account_type; /* RECHARGE into a named account type; NULL: the wallet */
    int insert_status;
    int split_refused;
    char constraint[64];
} create_t;

static void create_free(void *arg)
{
    create_t *c = arg;
    free(c->body);
    free(c->meta_text);
    free(c->split_text);
}

static void insert_cb(void *data, int status, pc_db_res_t *res)
{
    create_t *c = data;
    c->insert_status = status;
    if (status)
        snprintf(c->constraint, sizeof c->constraint, "%s", pc_db_constraint(res));
}

static void split_checked_cb(void *data, int status, pc_db_res_t *res)
{
    create_t *c = data;
    c->split_refused = pc_trade_split_refused(status, res);
}

static void commit_cb(void *data, int status)
{
    create_t *c = data;
    if (c->split_refused) {
        pc_http_respond_error(c->req, PC_API_INVALID_REQUEST, "splits",
                              "each split account must be an active merchant");
        return;
    }
    if (c->insert_status == PC_ECONFLICT && !strcmp(c->constraint, "trades_out_trade_no_unique")) {
        pc_http_respond_error(c->req, PC_API_DUPLICATE_OUT_TRADE_NO, "out_trade_no",
                              "a trade with this out_trade_no exists");
        return;
    }
    if (c->insert_status && !strcmp(c->constraint, "trades_account_type_fk")) {
        pc_http_respond_error(c->req, PC_API_INVALID_REQUEST, "account_type",
                              "not an account type configured for this merchant");
        return;
    }
    if (status || c->insert_status) {
        pc_http_respond_error(c->req, PC_API_UNAVAILABLE, NULL,
                              "could not record the trade; retry with the same Idempotency-Key");
        return;
    }
    pc_http_respond(c->req, 201, "application/json", c->body, strlen(c->body));
}

static void begin_cb(void *data, int status, pc_db_tx_t *tx)
{
    create_t *c = data;
    if (status) {
        pc_http_respond_error(c->req, PC_API_UNAVAILABLE, NULL, "database unavailable");
        return;
    }
    const pc_trade_t *t = &c->t;
    char amount[24], created[24], expires[24];
    snprintf(amount, sizeof amount, "%lld", (long long)t->amount);
    snprintf(created, sizeof created, "%lld", t->created_at);
    snprintf(expires, sizeof expires, "%lld", t->expires_at);
    const char *p[] = {t->trade_no,   t->merchant_id, t->out_trade_no, t->product,
                       amount,        t->currency,    t->subject,      t->buyer_id,
                       c->notify_url, t->splits,      t->metadata,     created,
                       expires,       c->return_url,  c->account_type};
    if (strcmp(t->splits, "[]") != 0)
        pc_trade_require_split_accounts(tx, t->splits, split_checked_cb, c);
    pc_db_tx_query(tx,
                   "INSERT INTO trades (trade_no, merchant_id, out_trade_no, product, status, "
                   "amount, currency, subject, buyer_id, notify_url, splits, metadata, created_at, "
                   "expires_at, return_url, account_type) VALUES ($1, $2, $3, $4, "
                   "'WAIT_BUYER_PAY', $5, $6, $7, $8, $9, $10::jsonb, $11::jsonb, "
                   "to_timestamp($12), to_timestamp($13), $14, $15)",
                   15, p, insert_cb, c);
    pc_idem_store_in_tx(pc_auth_idem(c->req), tx, 201, c->body);
    pc_db_tx_commit(tx, commit_cb, c);
}

/* Whether every number in v comes back as it went in: metadata is kept as
 * jsonb, which prints a number as large as 1e19 in full
 * (10000000000000000000), a JSON integer too large to read back, and the
 * trade was shown with "metadata": {} in every answer and notification after
 * its creation's. Such numbers are refused (a string keeps them). */
static bool numbers_kept(const json_t *v)
{
    if (json_is_real(v))
        return json_real_value(v) < 9.2e18 && json_real_value(v) > -9.2e18;
    if (json_is_object(v)) {
        const char *k;
        const json_t *x;
        json_object_foreach((json_t *)v, k, x) if (!numbers_kept(x)) return false;
    } else if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++)
            if (!numbers_kept(json_array_get(v, i)))
                return false;
    }
    return true;
}

static void bad(pc_http_req_t *req, const char *field, const char *msg)
{
    pc_http_respond_error(req, PC_API_INVALID_REQUEST, field, msg);
}

void pc_trade_create_req_clear(pc_trade_create_req_t *r)
{
    free(r->meta_text);
    free(r->split_text);
    r->meta_text = r->split_text = NULL;
}

pc_api_err_t pc_trade_create_parse(json_t *b, const char *merchant_id, pc_trade_create_req_t *r,
                                   const char **field, const char **message)
{
#define REFUSE(err, f, m)                                                                          \
    do {                                                                                           \
        json_decref(norm);                                                                         \
        pc_trade_create_req_clear(r);                                                              \
        *field = (f);                                                                              \
        *message = (m);                                                                            \
        return (err);                                                                              \
    } while (0)
#define BAD(f, m) REFUSE(PC_API_INVALID_REQUEST, f, m)
    json_t *norm = NULL;
    memset(r, 0, sizeof *r);
    *field = NULL;
    *message = NULL;
    if (!json_is_object(b))
        BAD(NULL, "body must be a JSON object");
    int invalid = 0;
    r->out_trade_no = pc_json_str(b, "out_trade_no", 64, 1, &invalid);
    if (!r->out_trade_no || invalid)
        BAD("out_trade_no", "out_trade_no: 1-64 of [A-Za-z0-9_-]");
    r->product = pc_json_str(b, "product", 16, 0, &invalid);
    r->product_bit = r->product ? pc_product_bit(r->product) : 0;
    if (!r->product_bit || invalid)
        BAD("product", "product: INSTANT, GUARANTEE or RECHARGE");
    if (pc_json_int(b, "amount", 1, PC_MAX_AMOUNT, &r->amount) != 0)
        BAD("amount", "amount: a positive integer in minor units");
    const char *cur = r->currency = pc_json_str(b, "currency", 3, 0, &invalid);
    if (invalid || !pc_currency_known(cur))
        BAD("currency", "currency: an ISO 4217 currency code in upper case, like CNY");
    /* Characters, not bytes: 256 bytes were 85 Chinese characters. (At most
     * 4 bytes each; jansson has checked the text is UTF-8.) */
    r->subject = pc_json_str(b, "subject", 4 * 256, 0, &invalid);
    size_t chars = 0;
    for (const char *c = r->subject; c && *c; c++)
        chars += ((unsigned char)*c & 0xC0) != 0x80;
    if (!r->subject || invalid || chars > 256)
        BAD("subject", "subject: 1-256 characters");
    r->buyer_id = pc_json_str(b, "buyer_id", 64, 1, &invalid);
    if (invalid)
        BAD("buyer_id", "buyer_id: 1-64 of [A-Za-z0-9_-]");
    if (r->product_bit == PC_PRODUCT_RECHARGE && !r->buyer_id)
        BAD("buyer_id", "RECHARGE trades need buyer_id");
    r->notify_url = pc_json_url(b, "notify_url", &invalid);
    if (invalid)
        BAD("notify_url", "notify_url: an http(s) URL");
    r->expire_seconds = 900;
    if (pc_json_int(b, "expire_seconds", 60, 604800, &r->expire_seconds) < 0)
        BAD("expire_seconds", "expire_seconds: 60-604800");
    json_t *meta = json_object_get(b, "metadata");
    if (meta && !json_is_object(meta))
        BAD("metadata", "metadata: a JSON object");
    if (meta && !numbers_kept(meta))
        BAD("metadata", "metadata: numbers must be smaller than 9.2e18 in size (send larger "
                        "ones as strings)");
    r->meta_text = meta ? json_dumps(meta, JSON_COMPACT | JSON_SORT_KEYS) : strdup("{}");
    if (!r->meta_text)
        REFUSE(PC_API_INTERNAL, "metadata", "out of memory");
    if (strlen(r->meta_text) > 4096)
        BAD("metadata", "metadata: at most 4 KiB");
    json_t *splits = json_object_get(b, "splits");
    norm = json_array();
    if (splits && !json_is_null(splits)) {
        if (r->product_bit != PC_PRODUCT_INSTANT)
            BAD("splits", "splits at creation are for INSTANT trades only");
        if (!json_is_array(splits) || json_array_size(splits) > 20)
            BAD("splits", "splits: a list of at most 20 {account, amount}");
        long long total = 0;
        size_t i;
        json_t *s;
        json_array_foreach(splits, i, s)
        {
            int sb = 0;
            long long sa = 0;
            const char *acct = json_is_object(s) ? pc_json_str(s, "account", 64, 1, &sb) : NULL;
            if (!acct || sb || pc_json_int(s, "amount", 1, PC_MAX_AMOUNT, &sa) != 0 ||
                !strcmp(acct, merchant_id))
                BAD("splits", "each split: account (another merchant id) and a positive amount");
            total += sa;
            json_array_append_new(
                norm, json_pack("{s:s,s:I}", "account", acct, "amount", (json_int_t)sa));
        }
        if (total > r->amount)
            REFUSE(PC_API_SPLIT_EXCEEDS_AMOUNT, "splits", "splits add up to more than the amount");
    }
    r->split_text = json_dumps(norm, JSON_COMPACT);
    json_decref(norm);
    if (!r->split_text) {
        pc_trade_create_req_clear(r);
        *field = "splits";
        *message = "out of memory";
        return PC_API_INTERNAL;
    }
    return PC_API_OK;
#undef BAD
#undef REFUSE
}

static void create_trade(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    const pc_merchant_t *m = pc_auth_merchant(req);
    json_t *b = pc_http_req_json(req);
    if (!b) {
        bad(req, NULL, "body must be a JSON object");
        return;
    }
    create_t *c = pc_http_req_alloc(req, sizeof *c);
    c->req = req;
    c->app = app;
    pc_http_req_on_done(req, create_free, c);
    pc_trade_t *t = &c->t;
    pc_trade_create_req_t r;
    const char *field, *message;
    pc_api_err_t err = pc_trade_create_parse(b, m->id, &r, &field, &message);
    if (err != PC_API_OK) {
        pc_http_respond_error(req, err, field, message);
        return;
    }
    int return_bad = 0;
    c->return_url = pc_json_url(b, "return_url", &return_bad);
    if (return_bad) {
        pc_trade_create_req_clear(&r);
        bad(req, "return_url", "return_url: an http(s) URL of at most 512 characters");
        return;
    }
    /* account_type: RECHARGE only; its wallet's owner id,
     * <buyer_id>@<merchant_id>.<type>, must fit a ledger owner id. */
    int type_bad = 0;
    c->account_type = pc_json_str(b, "account_type", 16, 1, &type_bad);
    if (type_bad ||
        (c->account_type && (r.product_bit != PC_PRODUCT_RECHARGE ||
                             strlen(r.buyer_id) + strlen(m->id) + strlen(c->account_type) + 2 >
                                 PC_LEDGER_OWNER_MAX))) {
        pc_trade_create_req_clear(&r);
        bad(req, "account_type",
            "account_type: 1-16 of [A-Za-z0-9_-], for RECHARGE trades, with buyer_id, merchant "
            "id and type at most 62 characters together");
        return;
    }
    /* The request's texts now belong to c (freed with it). */
    c->meta_text = r.meta_text;
    c->split_text = r.split_text;
    const char *otn = r.out_trade_no, *product = r.product, *cur = r.currency;
    const char *subject = r.subject, *buyer = r.buyer_id, *notify = r.notify_url;
    long long amount = r.amount, expire = r.expire_seconds;
    unsigned pbit = r.product_bit;
    if (!(m->products & pbit)) {
        pc_http_respond_error(req, PC_API_PRODUCT_NOT_ALLOWED, "product",
                              "this merchant's contract does not allow the product");
        return;
    }

    pc_trade_no_new(t->trade_no);
    snprintf(t->out_trade_no, sizeof t->out_trade_no, "%s", otn);
    snprintf(t->merchant_id, sizeof t->merchant_id, "%s", m->id);
    snprintf(t->product, sizeof t->product, "%s", product);
    snprintf(t->status, sizeof t->status, "WAIT_BUYER_PAY");
    snprintf(t->currency, sizeof t->currency, "%s", cur);
    t->amount = amount;
    t->subject = subject;
    t->buyer_id = buyer;
    t->metadata = c->meta_text;
    t->splits = c->split_text;
    t->created_at = (long long)time(NULL);
    t->expires_at = t->created_at + expire;
    c->notify_url = notify ? notify : m->notify_url;
    json_t *obj = pc_trade_json(t);
    char cashier_url[1024];
    if (pc_cashier_url(app->cfg, t->trade_no, t->expires_at, cashier_url, sizeof cashier_url) == 0)
        json_object_set_new(obj, "cashier_url", json_string(cashier_url));
    if (c->account_type)
        json_object_set_new(obj, "account_type", json_string(c->account_type));
    c->body = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(obj);
    if (pc_db_begin(app->db, NULL, begin_cb, c) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

/* ---------- GET /v1/trades/{trade_no}, GET /v1/trades?out_trade_no= ---------- */

static void get_cb(void *data, int status, pc_db_res_t *res)
{
    pc_http_req_t *req = data;
    if (status) {
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
        return;
    }
    if (pc_db_rows(res) == 0) {
        pc_http_respond_error(req, PC_API_NOT_FOUND, NULL, "no such trade");
        return;
    }
    pc_trade_t t;
    pc_trade_from_row(&t, res, 0);
    pc_http_respond_json(req, 200, pc_trade_json(&t));
}

static void get_trade(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    const char *p[] = {pc_http_req_param(req, "trade_no"), pc_auth_merchant(req)->id};
    /* Another merchant's trade is answered exactly like a missing one. */
    if (pc_db_query(app->db,
                    "SELECT " PC_TRADE_COLUMNS " FROM trades WHERE trade_no = $1 AND "
                    "merchant_id = $2",
                    2, p, get_cb, req) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

static void find_trade(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    const char *otn = pc_http_req_query_param(req, "out_trade_no");
    if (!otn || !otn[0]) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "out_trade_no",
                              "out_trade_no query parameter is required");
        return;
    }
    const char *p[] = {otn, pc_auth_merchant(req)->id};
    if (pc_db_query(app->db,
                    "SELECT " PC_TRADE_COLUMNS " FROM trades WHERE out_trade_no = $1 AND "
                    "merchant_id = $2",
                    2, p, get_cb, req) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

void pc_app_routes_trades(pc_app_t *app)
{
    pc_router_add(app->api, "POST", "/v1/trades", create_trade, app);
    pc_router_add(app->api, "GET", "/v1/trades/{trade_no}", get_trade, app);
    pc_router_add(app->api, "GET", "/v1/trades", find_trade, app);
}
