/* The hosted cashier (the "standard cashier" of merchants without their own
 * front end), on the API listener outside /v1/: no merchant signature, the
 * link's token is the credential (web/cashier_token.h) and every call acts
 * on the one trade it names, for that trade's merchant and buyer only.
 *
 *   GET  /cashier/{token}              the page (web/cashier/index.html)
 *   GET  /cashier/static/{file}        its script and style
 *   GET  /cashier/{token}/api/status   the trade and its latest payment
 *   POST /cashier/{token}/api/consult  the methods, as POST /v1/cashier/consult
 *   POST /cashier/{token}/api/pay      pay, as POST /v1/cashier/pay
 *   GET  /cashier/{token}/api/qr.svg   the QR code of a "scan to pay" payment
 *   GET  /cashier/{token}/api/return   {"url"}: the trade's return_url with
 *                                      the signed result, once it is final
 *
 * consult and pay run the merchant API's own code (cashier.h) with a body
 * built here: trade_no and buyer_id come from the trade, never from the
 * browser, and only the fields a buyer chooses are copied from the page's
 * request. Card data is passed on in memory and never logged. The buyer sees
 * the payment as the acquiring side does, without the risk verdict's details. */
#include "api/app.h"
#include "auth/sign.h"
#include "cashier/cashier.h"
#include "core/error.h"
#include "engine/engine.h"
#include "web/assets.h"
#include "web/cashier_token.h"
#include "web/qr.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef enum { OP_STATUS, OP_CONSULT, OP_PAY, OP_QR } op_t;

typedef struct {
    pc_http_req_t *req;
    pc_app_t *app;
    op_t op;
    char trade_no[65];
    char merchant_id[65];
    char buyer_id[65];
    json_t *trade; /* the buyer's view of the trade */
    json_t *body;  /* what consult or pay is given */
} visit_t;

static void visit_free(void *arg)
{
    visit_t *v = arg;
    json_decref(v->trade);
    json_decref(v->body);
}

/* Refuses a request whose token is not good; returns 0 when it is. */
static int check_token(pc_http_req_t *req, pc_app_t *app, char trade_no[65], int page)
{
    int rc =
        pc_cashier_token_check(pc_config_str(app->cfg, "cashier.token_key"),
                               pc_http_req_param(req, "token"), (int64_t)time(NULL), trade_no, 65);
    if (rc == 0)
        return 0;
    if (page) {
        pc_web_send(req, rc == PC_ETIMEDOUT ? 401 : 403,
                    pc_web_asset(PC_WEB_CASHIER,
                                 rc == PC_ETIMEDOUT ? "link-expired.html" : "link-invalid.html"));
        return -1;
    }
    pc_web_headers(req);
    pc_http_respond_error(req, PC_API_UNAUTHORIZED, NULL,
                          rc == PC_ETIMEDOUT ? "this payment link has expired"
                                             : "this payment link is not valid");
    return -1;
}

/* ---------- the page ---------- */

static void page(pc_http_req_t *req, void *data)
{
    char trade_no[65];
    if (check_token(req, data, trade_no, 1) < 0)
        return;
    pc_web_send(req, 200, pc_web_asset(PC_WEB_CASHIER, "index.html"));
}

static void static_file(pc_http_req_t *req, void *data)
{
    (void)data;
    const char *name = pc_http_req_param(req, "file");
    /* The link pages are answers, not files to fetch. */
    if (strstr(name, ".html")) {
        pc_http_respond_error(req, PC_API_NOT_FOUND, NULL, "no such file");
        return;
    }
    pc_web_send(req, 200, pc_web_asset(PC_WEB_CASHIER, name));
}

/* ---------- the payment as the buyer sees it ---------- */

/* The merchant API's payment object less the risk verdict's score, reasons
 * and rule version, and the channel it went through: a buyer learns nothing
 * that helps to game the rules or the routing. */
static void buyer_payment(json_t *payment)
{
    json_object_del(payment, "risk");
    json_object_del(payment, "channel_id");
}

/* Consult's answer less the ranking rule's version and each method's
 * channel, for the same reason. */
static void buyer_consult(json_t *consult)
{
    json_object_del(consult, "rule_version");
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(consult, "methods"), i, m)
    {
        json_object_del(m, "channel_id");
    }
}

typedef struct {
    void (*strip)(json_t *);
} buyer_view_t;
static const buyer_view_t CONSULT_VIEW = {buyer_consult}, PAYMENT_VIEW = {buyer_payment};

/* Answers the page with the merchant API's answer as the buyer may see it
 * (data: the buyer_view_t that strips it); errors pass unchanged. */
static void buyer_responder(pc_http_req_t *req, int status, const char *content_type,
                            const char *body, size_t len, void *data)
{
    const buyer_view_t *view = data;
    json_t *j = status == 200 ? json_loadb(body, len, 0, NULL) : NULL;
    if (json_is_object(j)) {
        view->strip(j);
        char *text = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(j);
        if (text) {
            pc_http_send(req, status, content_type, text, strlen(text));
            free(text);
            return;
        }
        pc_http_send(req, 500, content_type, "{}", 2);
        return;
    }
    json_decref(j);
    pc_http_send(req, status, content_type, body, len);
}

static void status_payment_cb(void *data, pc_api_err_t err, const char *message, json_t *payment)
{
    visit_t *v = data;
    if (err != PC_API_OK) {
        pc_http_respond_error(v->req, err, NULL, message);
        return;
    }
    buyer_payment(payment);
    pc_http_respond_json(v->req, 200,
                         json_pack("{s:O,s:o}", "trade", v->trade, "payment", payment));
}

static void qr_payment_cb(void *data, pc_api_err_t err, const char *message, json_t *payment)
{
    visit_t *v = data;
    if (err != PC_API_OK) {
        pc_http_respond_error(v->req, err, NULL, message);
        return;
    }
    json_t *action = json_object_get(payment, "action");
    const char *type = json_string_value(json_object_get(action, "type"));
    const char *payload = json_string_value(json_object_get(action, "qr_payload"));
    size_t len = 0;
    char *svg = type && !strcmp(type, "QR") && payload ? pc_qr_svg(payload, &len) : NULL;
    json_decref(payment);
    if (!svg) {
        pc_http_respond_error(v->req, PC_API_NOT_FOUND, NULL, "no QR code to show");
        return;
    }
    pc_http_respond(v->req, 200, "image/svg+xml", svg, len);
    free(svg);
}

/* ---------- the requests of the page ---------- */

/* Copies member name of from into to when present. */
static void copy_member(json_t *to, json_t *from, const char *name)
{
    json_t *x = json_object_get(from, name);
    if (x)
        json_object_set(to, name, x);
}

/* The body for consult or pay: the trade's own numbers plus what the buyer
 * chose. */
static json_t *build_body(visit_t *v, json_t *in)
{
    json_t *b = json_pack("{s:s}", "trade_no", v->trade_no);
    if (v->buyer_id[0])
        json_object_set_new(b, "buyer_id", json_string(v->buyer_id));
    json_t *client = json_object();
    json_t *in_client = json_object_get(in, "client");
    copy_member(client, in_client, "platform");
    copy_member(client, in_client, "device_id");
    json_object_set_new(b, "client", client);
    if (v->op == OP_PAY) {
        static const char *const chosen[] = {
            "method_id",  "coupon_id",    "balance_amount",  "card",
            "buyer_code", "challenge_id", "challenge_answer"};
        for (size_t i = 0; i < sizeof chosen / sizeof chosen[0]; i++)
            copy_member(b, in, chosen[i]);
    }
    return b;
}

static void trade_cb(void *data, int status, pc_db_res_t *res)
{
    visit_t *v = data;
    pc_http_req_t *req = v->req;
    if (status) {
        pc_respond_db_error(req, status);
        return;
    }
    if (pc_db_rows(res) == 0) {
        pc_http_respond_error(req, PC_API_NOT_FOUND, NULL, "no such trade");
        return;
    }
    json_t *t = json_loads(pc_db_get(res, 0, 0), 0, NULL);
    if (!t) {
        pc_http_respond_error(req, PC_API_INTERNAL, NULL, "bad trade row");
        return;
    }
    v->trade = t;
    snprintf(v->merchant_id, sizeof v->merchant_id, "%s",
             json_string_value(json_object_get(t, "merchant_id")));
    const char *buyer = json_string_value(json_object_get(t, "buyer_id"));
    snprintf(v->buyer_id, sizeof v->buyer_id, "%s", buyer ? buyer : "");
    char payment_no[65];
    const char *pn = json_string_value(json_object_get(t, "payment_no"));
    snprintf(payment_no, sizeof payment_no, "%s", pn ? pn : "");
    int active = !strcmp(json_string_value(json_object_get(t, "merchant_status")), "ACTIVE");
    /* What the page shows; ids of the merchant and buyer stay here. */
    json_object_del(t, "merchant_id");
    json_object_del(t, "merchant_status");
    json_object_del(t, "buyer_id");
    json_object_del(t, "payment_no");
    json_object_set_new(t, "known_buyer", json_boolean(v->buyer_id[0] != 0));
    if (!active && v->op != OP_STATUS) {
        pc_http_respond_error(req, PC_API_MERCHANT_DISABLED, NULL,
                              "this merchant cannot take payments now");
        return;
    }
    switch (v->op) {
    case OP_STATUS:
        if (!payment_no[0]) {
            pc_http_respond_json(req, 200, json_pack("{s:O,s:n}", "trade", v->trade, "payment"));
            return;
        }
        if (pc_engine_get(v->app->engine, payment_no, v->merchant_id, status_payment_cb, v) < 0)
            pc_respond_db_error(req, PC_EUNAVAIL);
        return;
    case OP_QR:
        if (!payment_no[0]) {
            pc_http_respond_error(req, PC_API_NOT_FOUND, NULL, "no payment yet");
            return;
        }
        if (pc_engine_get(v->app->engine, payment_no, v->merchant_id, qr_payment_cb, v) < 0)
            pc_respond_db_error(req, PC_EUNAVAIL);
        return;
    case OP_CONSULT:
    case OP_PAY:
        v->body = build_body(v, pc_http_req_json(req));
        if (v->op == OP_CONSULT) {
            pc_http_set_responder(req, buyer_responder, (void *)&CONSULT_VIEW);
            pc_cashier_consult_run(v->app, req, v->merchant_id, v->body);
        } else {
            pc_http_set_responder(req, buyer_responder, (void *)&PAYMENT_VIEW);
            pc_cashier_pay_run(v->app, req, v->merchant_id, v->body, 1);
        }
        return;
    }
}

static void visit(pc_http_req_t *req, pc_app_t *app, op_t op)
{
    char trade_no[65];
    if (check_token(req, app, trade_no, 0) < 0)
        return;
    pc_web_headers(req);
    if (op == OP_CONSULT || op == OP_PAY) {
        /* JSON only: a cross-site form cannot send it without a preflight. */
        const char *ct = pc_http_req_header(req, "Content-Type");
        if (!ct || strncmp(ct, "application/json", 16) != 0 || !pc_http_req_json(req)) {
            pc_http_respond_error(req, PC_API_INVALID_REQUEST, NULL,
                                  "send a JSON object as application/json");
            return;
        }
    }
    visit_t *v = pc_http_req_alloc(req, sizeof *v);
    v->req = req;
    v->app = app;
    v->op = op;
    memcpy(v->trade_no, trade_no, sizeof v->trade_no);
    pc_http_req_on_done(req, visit_free, v);
    const char *p[] = {trade_no};
    if (pc_db_query(app->db,
                    "SELECT json_build_object('trade_no', t.trade_no, 'out_trade_no', "
                    "t.out_trade_no, 'merchant_id', t.merchant_id, 'merchant_name', m.name, "
                    "'merchant_status', m.status, 'subject', t.subject, 'product', t.product, "
                    "'amount', t.amount, 'currency', t.currency, 'status', t.status, "
                    "'paid_amount', t.paid_amount, 'buyer_id', t.buyer_id, 'expires_at', "
                    "to_char(t.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
                    "'paid_at', to_char(t.paid_at AT TIME ZONE 'UTC', "
                    "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), 'payment_no', (SELECT p.payment_no FROM "
                    "payments p WHERE p.trade_no = t.trade_no ORDER BY p.created_at DESC, "
                    "p.payment_no DESC LIMIT 1))::text FROM trades t JOIN merchants m ON "
                    "m.merchant_id = t.merchant_id WHERE t.trade_no = $1",
                    1, p, trade_cb, v) < 0)
        pc_respond_db_error(req, PC_EUNAVAIL);
}

/* ---------- the way back to the shop ---------- */

/* The result the return URL reports: SUCCESS for a paid trade (PAY_SUCCESS,
 * TRADE_SUCCESS, TRADE_FINISHED), TRADE_CLOSED for a closed one, NULL while
 * the buyer may still pay (a failed attempt is not final). */
static const char *final_result(const char *trade_status)
{
    if (!strcmp(trade_status, "PAY_SUCCESS") || !strcmp(trade_status, "TRADE_SUCCESS") ||
        !strcmp(trade_status, "TRADE_FINISHED"))
        return "SUCCESS";
    if (!strcmp(trade_status, "TRADE_CLOSED"))
        return "TRADE_CLOSED";
    return NULL;
}

/* return_url with trade_no, status, timestamp and, for an HMAC merchant,
 * signature = base64url(HMAC-SHA256(secret, "<trade_no>\n<status>\n<timestamp>\n"))
 * added to its query (before any fragment). The values need no escaping:
 * trade numbers are [A-Za-z0-9_-], the rest is upper case, digits or
 * base64url. Returns a malloc'd string the caller frees, NULL on failure. */
static char *return_location(const char *return_url, const char *secret, const char *trade_no,
                             const char *result, long long now)
{
    char msg[160], ts[24];
    snprintf(ts, sizeof ts, "%lld", now);
    snprintf(msg, sizeof msg, "%s\n%s\n%s\n", trade_no, result, ts);
    char *sig = NULL;
    if (secret[0]) {
        uint8_t mac[PC_SHA256_LEN];
        if (pc_hmac_sha256(secret, strlen(secret), msg, strlen(msg), mac))
            return NULL;
        sig = pc_base64url_encode(mac, sizeof mac);
        if (!sig)
            return NULL;
    }
    const char *hash = strchr(return_url, '#');
    int base_len = (int)(hash ? (size_t)(hash - return_url) : strlen(return_url));
    const char *q = memchr(return_url, '?', (size_t)base_len);
    char last = base_len ? return_url[base_len - 1] : 0;
    const char *sep = !q ? "?" : (last == '?' || last == '&') ? "" : "&";
    size_t cap = strlen(return_url) + strlen(trade_no) + strlen(result) + 160;
    char *out = malloc(cap);
    if (out)
        snprintf(out, cap, "%.*s%strade_no=%s&status=%s&timestamp=%s%s%s%s", base_len, return_url,
                 sep, trade_no, result, ts, sig ? "&signature=" : "", sig ? sig : "",
                 hash ? hash : "");
    free(sig);
    return out;
}

static void return_cb(void *data, int status, pc_db_res_t *res)
{
    pc_http_req_t *req = data;
    if (status) {
        pc_respond_db_error(req, status);
        return;
    }
    if (pc_db_rows(res) == 0) {
        pc_http_respond_error(req, PC_API_NOT_FOUND, NULL, "no such trade");
        return;
    }
    const char *url = pc_db_val(res, 0, "return_url");
    const char *result = final_result(pc_db_val(res, 0, "status"));
    if (!url[0]) {
        pc_http_respond_error(req, PC_API_NOT_FOUND, NULL, "this order has no return address");
        return;
    }
    if (!result) {
        pc_http_respond_error(req, PC_API_INVALID_STATE, NULL, "the payment is not final yet");
        return;
    }
    /* The moment the trade became final, not the moment of asking: a link
     * kept or forwarded gave a freshly timestamped, signed redirect at any
     * time in its life (up to 7 days), so a shop's "timestamp is recent"
     * check (README) held for nothing. */
    char *loc = return_location(url, pc_db_val(res, 0, "secret"), pc_db_val(res, 0, "trade_no"),
                                result, pc_db_val_i64(res, 0, "final_at"));
    if (!loc) {
        pc_http_respond_error(req, PC_API_INTERNAL, NULL, "could not sign the return address");
        return;
    }
    pc_http_respond_json(req, 200, json_pack("{s:s}", "url", loc));
    free(loc);
}

static void api_return(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    char trade_no[65];
    if (check_token(req, app, trade_no, 0) < 0)
        return;
    pc_web_headers(req);
    const char *p[] = {trade_no};
    /* The secret stays here: only the signature leaves. */
    if (pc_db_query(app->db,
                    "SELECT t.trade_no, t.status, coalesce(t.return_url, '') AS return_url, "
                    "floor(extract(epoch FROM coalesce(CASE t.status WHEN 'TRADE_CLOSED' THEN "
                    "t.closed_at ELSE t.paid_at END, now())))::bigint AS final_at, "
                    "CASE WHEN m.sign_type = 'HMAC-SHA256' THEN coalesce(m.secret, '') ELSE '' "
                    "END AS secret FROM trades t JOIN merchants m ON m.merchant_id = t.merchant_id "
                    "WHERE t.trade_no = $1",
                    1, p, return_cb, req) < 0)
        pc_respond_db_error(req, PC_EUNAVAIL);
}

static void api_status(pc_http_req_t *req, void *data)
{
    visit(req, data, OP_STATUS);
}

static void api_consult(pc_http_req_t *req, void *data)
{
    visit(req, data, OP_CONSULT);
}

static void api_pay(pc_http_req_t *req, void *data)
{
    visit(req, data, OP_PAY);
}

static void api_qr(pc_http_req_t *req, void *data)
{
    visit(req, data, OP_QR);
}

void pc_app_routes_cashier_page(pc_app_t *app)
{
    pc_router_add(app->api, "GET", "/cashier/static/{file}", static_file, app);
    pc_router_add(app->api, "GET", "/cashier/{token}", page, app);
    pc_router_add(app->api, "GET", "/cashier/{token}/api/status", api_status, app);
    pc_router_add(app->api, "POST", "/cashier/{token}/api/consult", api_consult, app);
    pc_router_add(app->api, "POST", "/cashier/{token}/api/pay", api_pay, app);
    pc_router_add(app->api, "GET", "/cashier/{token}/api/qr.svg", api_qr, app);
    pc_router_add(app->api, "GET", "/cashier/{token}/api/return", api_return, app);
}
