/* The control API for tests and demos (PROTOCOL.md "Control endpoints"):
 * the buyer's side of asynchronous payments (/sim/complete and the redirect
 * pages), payout returns, chargebacks, fault settings, what paysim faked,
 * paysim's own records, reset, clock and counters. Unsigned: paysim listens
 * on loopback by default, and these endpoints exist only in the simulator. */
#include "core/error.h"
#include "core/log.h"
#include "sim/sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void healthz(pc_http_req_t *req, void *data)
{
    (void)data;
    static const char body[] = "{\"status\":\"ok\"}";
    pc_sim_reply(req, NULL, 200, "application/json", body, sizeof body - 1);
}

/* The body as an object; an empty body counts as {}. Answers 400 itself and
 * returns NULL for anything else. The request owns the result (or the caller
 * must decref *owned when set). */
static json_t *control_body(pc_http_req_t *req, json_t **owned)
{
    size_t len;
    pc_http_req_body(req, &len);
    *owned = NULL;
    if (len == 0) {
        *owned = json_object();
        return *owned;
    }
    json_t *body = pc_http_req_json(req);
    if (!body)
        pc_sim_reply_error(req, NULL, PC_SIM_INVALID_REQUEST, NULL,
                           "the body must be a JSON object");
    return body;
}

static const char *str_field(json_t *o, const char *name)
{
    return json_string_value(json_object_get(o, name));
}

static void reply_txn_or_error(pc_sim_t *sim, pc_http_req_t *req, pc_sim_err_t err,
                               const pc_sim_txn_t *t)
{
    if (err == PC_SIM_OK) {
        pc_sim_reply_json(req, NULL, 200, pc_sim_txn_json(sim, t));
        return;
    }
    const char *why = err == PC_SIM_NOT_FOUND       ? "no such reference"
                      : err == PC_SIM_EXPIRED       ? "the payment expired before the buyer paid"
                      : err == PC_SIM_INVALID_STATE ? "the transaction is not in a state for this"
                                                    : NULL;
    char msg[160];
    if (t && err == PC_SIM_INVALID_STATE) {
        snprintf(msg, sizeof msg, "the transaction is %s", pc_sim_status_name(t->status));
        why = msg;
    }
    pc_sim_reply_error(req, NULL, err, NULL, why);
}

/* POST /sim/complete {"reference", "outcome": "SUCCESS"|"FAILED", "failure_code"} */
static void sim_complete(pc_http_req_t *req, void *data)
{
    pc_sim_t *sim = data;
    json_t *owned, *body = control_body(req, &owned);
    if (!body)
        return;
    const char *ref = str_field(body, "reference");
    const char *outcome = str_field(body, "outcome");
    const char *code = str_field(body, "failure_code");
    const char *field = NULL;
    if (!ref || !ref[0] || strlen(ref) > 512)
        field = "reference";
    else if (outcome && strcmp(outcome, "SUCCESS") != 0 && strcmp(outcome, "FAILED") != 0)
        field = "outcome";
    else if (code && !pc_sim_failure_find(code))
        field = "failure_code";
    if (field) {
        pc_sim_reply_error(req, NULL, PC_SIM_INVALID_REQUEST, field, NULL);
        json_decref(owned);
        return;
    }
    pc_sim_txn_t *t;
    bool success = !outcome || !strcmp(outcome, "SUCCESS");
    pc_sim_err_t err = pc_sim_complete(sim, ref, success, code, &t);
    reply_txn_or_error(sim, req, err, t);
    json_decref(owned);
}

/* POST /sim/return {"payout_ref" | "channel_txn_id", "reason_code"} */
static void sim_return(pc_http_req_t *req, void *data)
{
    pc_sim_t *sim = data;
    json_t *owned, *body = control_body(req, &owned);
    if (!body)
        return;
    const char *ref = str_field(body, "payout_ref");
    if (!ref)
        ref = str_field(body, "channel_txn_id");
    const char *reason = str_field(body, "reason_code");
    if (!ref || (reason && (strlen(reason) == 0 || strlen(reason) > 15))) {
        pc_sim_reply_error(req, NULL, PC_SIM_INVALID_REQUEST, ref ? "reason_code" : "payout_ref",
                           NULL);
        json_decref(owned);
        return;
    }
    pc_sim_txn_t *t;
    pc_sim_err_t err = pc_sim_return_payout(sim, ref, reason, &t);
    reply_txn_or_error(sim, req, err, t);
    json_decref(owned);
}

/* POST /sim/chargeback {"channel_txn_id", "amount", "reason_code"} */
static void sim_chargeback(pc_http_req_t *req, void *data)
{
    pc_sim_t *sim = data;
    json_t *owned, *body = control_body(req, &owned);
    if (!body)
        return;
    const char *ref = str_field(body, "channel_txn_id");
    const char *reason = str_field(body, "reason_code");
    json_t *jamount = json_object_get(body, "amount");
    pc_sim_txn_t *t = ref ? pc_sim_txn_by_ref(sim->store, ref) : NULL;
    const char *field = NULL;
    if (!ref)
        field = "channel_txn_id";
    else if (reason && (strlen(reason) == 0 || strlen(reason) > 15))
        field = "reason_code";
    else if (jamount && !json_is_integer(jamount))
        field = "amount";
    if (field) {
        pc_sim_reply_error(req, NULL, PC_SIM_INVALID_REQUEST, field, NULL);
        goto done;
    }
    if (!t || t->kind != PC_SIM_PAY) {
        pc_sim_reply_error(req, NULL, PC_SIM_NOT_FOUND, "channel_txn_id", "no such payment");
        goto done;
    }
    if (t->status != PC_SIM_SUCCESS) {
        pc_sim_reply_error(req, NULL, PC_SIM_INVALID_STATE, NULL,
                           "only a successful payment can be disputed");
        goto done;
    }
    int64_t amount = jamount ? json_integer_value(jamount) : t->amount;
    if (amount < 1 || amount > t->amount) {
        pc_sim_reply_error(req, NULL, PC_SIM_INVALID_REQUEST, "amount",
                           "1 to the payment's amount");
        goto done;
    }
    const pc_sim_chargeback_t *c =
        pc_sim_chargeback_add(sim->store, t, amount, reason ? reason : "4853", pc_sim_now_ms(sim));
    if (!c) {
        pc_sim_reply_error(req, NULL, PC_SIM_UNAVAILABLE, NULL, "out of memory");
        goto done;
    }
    char date[PC_SIM_DATE_LEN], due[PC_SIM_TIME_LEN];
    pc_sim_format_date(c->time_ms, date);
    pc_sim_format_time(c->respond_by_ms, due);
    pc_log_info("sim.chargeback", "chargeback %s on %s of %lld", c->ref, t->ref, (long long)amount);
    pc_sim_reply_json(req, NULL, 200,
                      json_pack("{s:s,s:s,s:s,s:s,s:I,s:s,s:s,s:s,s:s}", "chargeback_ref", c->ref,
                                "channel_id", t->ch->id, "channel_txn_id", t->ref, "payment_no",
                                t->no, "amount", (json_int_t)amount, "currency", c->currency,
                                "reason_code", c->reason_code, "date", date, "respond_by", due));
done:
    json_decref(owned);
}

/* ---- Faults ---------------------------------------------------------------- */

static json_t *faults_answer(pc_sim_channel_t *ch, int extra_lines)
{
    return json_pack("{s:s,s:o,s:i,s:b}", "channel_id", ch->id, "faults",
                     pc_sim_faults_json(&ch->faults), "extra_lines_added", extra_lines,
                     "demo_secret", ch->demo_secret);
}

/* POST /sim/faults {"channel_id", …settings} */
static void sim_faults_post(pc_http_req_t *req, void *data)
{
    pc_sim_t *sim = data;
    json_t *owned, *body = control_body(req, &owned);
    if (!body)
        return;
    const char *id = str_field(body, "channel_id");
    pc_sim_channel_t *ch = id ? pc_sim_channel_get(sim->store, id, true) : NULL;
    if (!ch) {
        pc_sim_reply_error(req, NULL, PC_SIM_INVALID_REQUEST, "channel_id", "1 to 32 of [a-z0-9_]");
        goto done;
    }
    pc_sim_faults_extra_t extra;
    const char *bad = NULL;
    if (pc_sim_faults_apply(&ch->faults, ch->id, body, &extra, &bad) < 0) {
        pc_sim_reply_error(req, NULL, PC_SIM_INVALID_REQUEST, bad,
                           "rates are basis points 0-10000 (or a fraction 0.0-1.0); delays in "
                           "ms");
        goto done;
    }
    if (extra.has_seed)
        pc_sim_channel_seed(sim->store, ch, extra.seed);
    if (extra.extra_lines && pc_sim_line_add_extra(sim->store, ch, extra.extra_lines,
                                                   extra.currency, pc_sim_now_ms(sim)) < 0) {
        pc_sim_reply_error(req, NULL, PC_SIM_UNAVAILABLE, NULL, "out of memory");
        goto done;
    }
    char *text = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
    pc_log_info("sim.faults", "%s: %s", ch->id, text ? text : "");
    free(text);
    pc_sim_reply_json(req, NULL, 200, faults_answer(ch, extra.extra_lines));
done:
    json_decref(owned);
}

/* GET /sim/faults?channel_id= */
static void sim_faults_get(pc_http_req_t *req, void *data)
{
    pc_sim_t *sim = data;
    const char *id = pc_http_req_query_param(req, "channel_id");
    pc_sim_channel_t *ch = id ? pc_sim_channel_get(sim->store, id, true) : NULL;
    if (!ch) {
        pc_sim_reply_error(req, NULL, PC_SIM_INVALID_REQUEST, "channel_id", NULL);
        return;
    }
    pc_sim_reply_json(req, NULL, 200, faults_answer(ch, 0));
}

/* GET /sim/faked?channel_id=&kind= */
static void sim_faked(pc_http_req_t *req, void *data)
{
    pc_sim_t *sim = data;
    const char *id = pc_http_req_query_param(req, "channel_id");
    const char *kind = pc_http_req_query_param(req, "kind");
    json_t *list = json_array(), *counts = json_object();
    size_t pos = 0;
    const pc_sim_faked_t *f;
    while ((f = pc_sim_faked_next(sim->store, &pos))) {
        if ((id && strcmp(id, f->channel_id) != 0) || (kind && strcmp(kind, f->kind) != 0))
            continue;
        char when[PC_SIM_TIME_LEN];
        pc_sim_format_time(f->time_ms, when);
        json_t *o = json_pack("{s:I,s:s,s:s,s:s,s:s?,s:s?,s:s}", "seq", (json_int_t)f->seq, "kind",
                              f->kind, "op", f->op, "channel_id", f->channel_id, "channel_txn_id",
                              f->channel_ref[0] ? f->channel_ref : NULL, "paycore_ref",
                              f->paycore_ref[0] ? f->paycore_ref : NULL, "time", when);
        if (f->event_id[0])
            json_object_set_new(o, "event_id", json_string(f->event_id));
        if (f->date[0])
            json_object_set_new(o, "statement_date", json_string(f->date));
        if (f->has_values) {
            json_object_set_new(o, "expected", json_integer(f->expected));
            json_object_set_new(o, "actual", json_integer(f->actual));
        }
        if (f->expected_status) {
            json_object_set_new(o, "expected_status", json_string(f->expected_status));
            json_object_set_new(o, "actual_status", json_string(f->actual_status));
        }
        json_array_append_new(list, o);
        json_int_t n = json_integer_value(json_object_get(counts, f->kind));
        json_object_set_new(counts, f->kind, json_integer(n + 1));
    }
    pc_sim_reply_json(req, NULL, 200,
                      json_pack("{s:o,s:o,s:I}", "faked", list, "counts", counts, "total",
                                (json_int_t)pc_sim_faked_total(sim->store, kind)));
}

/* GET /sim/txns?channel_id=&type=&status=&paycore_ref=&limit= */
static void sim_txns(pc_http_req_t *req, void *data)
{
    pc_sim_t *sim = data;
    const char *id = pc_http_req_query_param(req, "channel_id");
    const char *type = pc_http_req_query_param(req, "type");
    const char *status = pc_http_req_query_param(req, "status");
    const char *no = pc_http_req_query_param(req, "paycore_ref");
    const char *lim = pc_http_req_query_param(req, "limit");
    long limit = lim ? atol(lim) : 0;
    json_t *list = json_array();
    size_t n = 0;
    for (pc_sim_txn_t *t = pc_sim_txn_oldest(sim->store); t; t = t->newer) {
        if ((id && strcmp(id, t->ch->id) != 0) ||
            (type && strcmp(type, pc_sim_kind_name(t->kind)) != 0) ||
            (status && strcmp(status, pc_sim_status_name(t->status)) != 0) ||
            (no && strcmp(no, t->no) != 0))
            continue;
        if (limit > 0 && (long)n >= limit)
            break;
        json_t *o = pc_sim_txn_json(sim, t);
        json_object_set_new(o, "type", json_string(pc_sim_kind_name(t->kind)));
        json_object_set_new(o, "paycore_ref", json_string(t->no));
        json_array_append_new(list, o);
        n++;
    }
    pc_sim_reply_json(req, NULL, 200, json_pack("{s:o,s:I}", "txns", list, "count", (json_int_t)n));
}

/* POST /sim/reset {"seed"} */
static void sim_reset(pc_http_req_t *req, void *data)
{
    pc_sim_t *sim = data;
    json_t *owned, *body = control_body(req, &owned);
    if (!body)
        return;
    json_t *js = json_object_get(body, "seed");
    if (js && (!json_is_integer(js) || json_integer_value(js) < 0)) {
        pc_sim_reply_error(req, NULL, PC_SIM_INVALID_REQUEST, "seed", NULL);
        json_decref(owned);
        return;
    }
    uint64_t seed = js ? (uint64_t)json_integer_value(js) : sim->opts.seed;
    pc_sim_reset(sim, seed);
    pc_sim_reply_json(req, NULL, 200,
                      json_pack("{s:s,s:I}", "status", "reset", "seed", (json_int_t)seed));
    json_decref(owned);
}

static json_t *clock_json(const pc_sim_t *sim)
{
    char now[PC_SIM_TIME_LEN], date[PC_SIM_DATE_LEN];
    int64_t ms = pc_sim_now_ms(sim);
    pc_sim_format_time(ms, now);
    pc_sim_format_date(ms, date);
    return json_pack("{s:s,s:s,s:I}", "now", now, "business_date", date, "offset_seconds",
                     (json_int_t)(sim->clock_offset_ms / 1000));
}

/* GET /sim/clock; POST /sim/clock {"offset_seconds"} */
static void sim_clock(pc_http_req_t *req, void *data)
{
    pc_sim_t *sim = data;
    if (!strcmp(pc_http_req_method(req), "POST")) {
        json_t *owned, *body = control_body(req, &owned);
        if (!body)
            return;
        json_t *v = json_object_get(body, "offset_seconds");
        const int64_t ten_years = 10LL * 366 * 86400;
        if (!json_is_integer(v) || json_integer_value(v) < -ten_years ||
            json_integer_value(v) > ten_years) {
            pc_sim_reply_error(req, NULL, PC_SIM_INVALID_REQUEST, "offset_seconds",
                               "an integer within ten years");
            json_decref(owned);
            return;
        }
        sim->clock_offset_ms = json_integer_value(v) * 1000;
        json_decref(owned);
        pc_log_info("sim.clock", "business clock offset %llds",
                    (long long)(sim->clock_offset_ms / 1000));
    }
    pc_sim_reply_json(req, NULL, 200, clock_json(sim));
}

/* GET /sim/stats */
static void sim_stats(pc_http_req_t *req, void *data)
{
    pc_sim_t *sim = data;
    json_t *channels = json_array();
    size_t pos = 0;
    pc_sim_channel_t *ch;
    while ((ch = pc_sim_channel_next(sim->store, &pos)))
        json_array_append_new(channels, json_string(ch->id));
    pc_sim_reply_json(req, NULL, 200,
                      json_pack("{s:I,s:I,s:I,s:o,s:I,s:I,s:{s:I,s:I,s:I,s:I,s:I,s:I,s:I}}", "txns",
                                (json_int_t)pc_sim_txn_count(sim->store), "cards",
                                (json_int_t)pc_sim_card_count(sim->store), "lines",
                                (json_int_t)pc_sim_line_count(sim->store), "channels", channels,
                                "held_requests", (json_int_t)sim->stats.held, "tasks",
                                (json_int_t)sim->ntasks, "callbacks", "pending",
                                (json_int_t)sim->stats.callbacks_pending, "sent",
                                (json_int_t)sim->stats.callbacks_sent, "delivered",
                                (json_int_t)sim->stats.callbacks_delivered, "attempts",
                                (json_int_t)sim->stats.callback_attempts, "dropped",
                                (json_int_t)sim->stats.callbacks_dropped, "skipped",
                                (json_int_t)sim->stats.callbacks_skipped, "abandoned",
                                (json_int_t)sim->stats.callbacks_abandoned));
}

/* ---- The buyer's pages --------------------------------------------------------- */

static void reply_html(pc_http_req_t *req, int status, const char *title, const char *text,
                       const pc_sim_txn_t *t, bool form)
{
    pc_buf_t b = {0};
    pc_buf_printf(&b,
                  "<!doctype html><html><head><meta charset=\"utf-8\"><title>paysim: %s"
                  "</title></head><body><h1>%s</h1><p>%s</p>",
                  title, title, text);
    if (t) {
        /* Only references paysim issued reach here, so they need no escaping. */
        pc_buf_printf(&b, "<p>%s %lld.%02lld %s (%s)</p>", t->ch->id, (long long)(t->amount / 100),
                      (long long)(t->amount % 100), t->currency,
                      t->three_ds ? "3-D Secure" : t->method);
        if (form)
            pc_buf_printf(&b,
                          "<form method=\"post\" action=\"/sim/redirect/%s?outcome=SUCCESS\">"
                          "<button>Pay</button></form><form method=\"post\" "
                          "action=\"/sim/redirect/%s?outcome=FAILED\"><button>Cancel"
                          "</button></form>",
                          t->reference, t->reference);
    }
    pc_buf_str(&b, "</body></html>\n");
    if (b.oom)
        pc_sim_reply_error(req, NULL, PC_SIM_UNAVAILABLE, NULL, "out of memory");
    else
        pc_sim_reply(req, NULL, status, "text/html; charset=utf-8", b.p, b.len);
    pc_buf_free(&b);
}

/* GET /sim/redirect/{reference}: the bank's, wallet's or issuer's page. */
static void redirect_page(pc_http_req_t *req, void *data)
{
    pc_sim_t *sim = data;
    const char *ref = pc_http_req_param(req, "reference");
    pc_sim_txn_t *t = pc_sim_txn_by_reference(sim->store, ref);
    if (!t || strcmp(t->action, "REDIRECT") != 0) {
        reply_html(req, 404, "Not found", "No payment waits at this address.", NULL, false);
        return;
    }
    if (t->status != PC_SIM_PROCESSING) {
        reply_html(req, 409, "Finished", pc_sim_status_name(t->status), t, false);
        return;
    }
    reply_html(req, 200, t->three_ds ? "Verify your card" : "Confirm the payment",
               "Simulated page: choose the buyer's answer.", t, true);
}

/* POST /sim/redirect/{reference}?outcome=SUCCESS|FAILED: the buyer's answer. */
static void redirect_submit(pc_http_req_t *req, void *data)
{
    pc_sim_t *sim = data;
    const char *ref = pc_http_req_param(req, "reference");
    const char *outcome = pc_http_req_query_param(req, "outcome");
    pc_sim_txn_t *t = pc_sim_txn_by_reference(sim->store, ref);
    if (!t || strcmp(t->action, "REDIRECT") != 0) {
        reply_html(req, 404, "Not found", "No payment waits at this address.", NULL, false);
        return;
    }
    bool success = !outcome || strcmp(outcome, "FAILED") != 0;
    pc_sim_err_t err = pc_sim_complete(sim, ref, success, NULL, &t);
    if (err != PC_SIM_OK)
        reply_html(req, pc_sim_err_status(err), "Not possible", pc_sim_err_code(err), t, false);
    else
        reply_html(req, 200, success ? "Paid" : "Cancelled", "You may return to the merchant.", t,
                   false);
}

int pc_sim_routes_control(pc_sim_t *sim)
{
    static const struct {
        const char *method, *pattern;
        pc_http_handler_cb fn;
    } routes[] = {
        {"GET", "/healthz", healthz},
        {"POST", "/sim/complete", sim_complete},
        {"POST", "/sim/return", sim_return},
        {"POST", "/sim/chargeback", sim_chargeback},
        {"POST", "/sim/faults", sim_faults_post},
        {"GET", "/sim/faults", sim_faults_get},
        {"GET", "/sim/faked", sim_faked},
        {"GET", "/sim/txns", sim_txns},
        {"POST", "/sim/reset", sim_reset},
        {"GET", "/sim/clock", sim_clock},
        {"POST", "/sim/clock", sim_clock},
        {"GET", "/sim/stats", sim_stats},
        {"GET", "/sim/redirect/{reference}", redirect_page},
        {"POST", "/sim/redirect/{reference}", redirect_submit},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (pc_router_add(sim->router, routes[i].method, routes[i].pattern, routes[i].fn, sim) < 0)
            return PC_ENOMEM;
    return 0;
}
