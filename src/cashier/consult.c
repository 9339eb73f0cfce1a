/* POST /v1/cashier/consult: which payment methods this buyer may use for this
 * trade, in what order (system.md §2.3 steps 1-6): basic checks, assets,
 * channels, limits, assembly, then rules/cashier_rank.lua orders, hides and
 * flags them. Read-only: nothing is written. */
#include "auth/auth.h"
#include "cashier/cashier.h"
#include "channel/client.h"
#include "channel/config.h"
#include "core/error.h"
#include "core/jsonw.h"
#include "core/log.h"
#include "rules/rules.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    pc_http_req_t *req;
    pc_app_t *app;
    const char *merchant_id;
    const char *trade_no;
    const char *buyer_id;
    const char *platform;
    char trade_buyer[65]; /* the trade's buyer, when the consult names none */
} consult_t;

static const struct {
    pc_pay_method_t m;
    const char *label;
} external[] = {
    {PC_METHOD_CARD, "Card"},
    {PC_METHOD_WALLET, "Wallet"},
    {PC_METHOD_NETBANK, "Net banking"},
    {PC_METHOD_VA, "Bank transfer (VA)"},
    {PC_METHOD_OTC, "Pay at a store (OTC)"},
    {PC_METHOD_QR_MERCHANT, "Scan to pay (QR)"},
    {PC_METHOD_QR_BUYER, "Show your payment code"},
};

/* The methods as the cashier assembles them: what cashier_rank.lua sees, as
 * C values (rules.h). Their texts are the request's (or static, or the
 * channel configuration's, which outlives the request); a bound card's or a
 * coupon's method is a JSON object (object, owned) with that object in it. */
typedef struct {
    pc_http_req_t *req;
    pc_rank_method_t *m;
    size_t n, cap;
    bool oom; /* a method could not be added */
} offers_t;

static pc_rank_method_t *add(offers_t *o, const char *id, const char *type, const char *label,
                             const char *reason, int64_t max_amount, const char *channel_id)
{
    if (o->n == o->cap) {
        size_t cap = o->cap ? 2 * o->cap : 16;
        pc_rank_method_t *m = realloc(o->m, cap * sizeof *m);
        if (!m) {
            o->oom = true;
            return NULL;
        }
        o->m = m;
        o->cap = cap;
    }
    char *id_copy = pc_http_req_strdup(o->req, id), *label_copy = pc_http_req_strdup(o->req, label);
    if (!id_copy || !label_copy) {
        o->oom = true;
        return NULL;
    }
    pc_rank_method_t *m = &o->m[o->n++];
    *m = (pc_rank_method_t){.method_id = id_copy,
                            .type = type,
                            .label = label_copy,
                            .reason = reason,
                            .channel_id = channel_id,
                            .max_amount = max_amount,
                            .available = reason == NULL,
                            .recommended = 0};
    return m;
}

/* A method as api.md shows it, written straight into the answer (every
 * consult writes a dozen: a jansson tree of them cost more than the rest of
 * the consult's work in paycore; README "Performance"); its card or coupon
 * object from m->object. */
static void write_method(pc_jw_t *w, const pc_rank_method_t *m, int recommended)
{
    pc_jw_object(w);
    pc_jw_key(w, "method_id");
    pc_jw_str(w, m->method_id);
    pc_jw_key(w, "type");
    pc_jw_str(w, m->type);
    pc_jw_key(w, "label");
    pc_jw_str(w, m->label);
    pc_jw_key(w, "available");
    pc_jw_bool(w, m->available > 0);
    pc_jw_key(w, "recommended");
    pc_jw_bool(w, recommended);
    pc_jw_key(w, "max_amount");
    pc_jw_int(w, m->max_amount);
    pc_jw_key(w, "channel_id");
    pc_jw_str(w, m->channel_id);
    static const char *const objects[] = {"card", "coupon"};
    for (size_t k = 0; k < 2; k++) {
        const json_t *o = json_object_get(m->object, objects[k]);
        pc_jw_key(w, objects[k]);
        if (o)
            pc_jw_json(w, o);
        else
            pc_jw_null(w);
    }
    if (m->reason) {
        pc_jw_key(w, "reason");
        pc_jw_str(w, m->reason);
    }
    pc_jw_end_object(w);
}

/* The method just added (m) with an object of its own (key: "card" or
 * "coupon"), which it takes: the rule sees the method as JSON with it. */
static void add_with(offers_t *o, pc_rank_method_t *m, const char *key, json_t *obj)
{
    json_t *j = m && obj ? pc_rank_method_json(m) : NULL;
    if (!j) {
        if (m)
            o->n--;
        o->oom = true;
        json_decref(obj);
        return;
    }
    json_object_set_new(j, key, obj);
    m->object = j;
}

static void offers_free(offers_t *o)
{
    for (size_t i = 0; i < o->n; i++)
        json_decref((json_t *)o->m[i].object);
    free(o->m);
}

static const char *brand_label(const char *brand)
{
    if (!strcasecmp(brand, "VISA"))
        return "Visa";
    if (!strcasecmp(brand, "MASTERCARD"))
        return "Mastercard";
    return brand;
}

/* Assets × channels → methods a person understands. */
static void assemble(consult_t *c, pc_cashier_view_t *v, offers_t *o)
{
    pc_app_t *app = c->app;
    const char *cur = v->trade->currency;
    const char *product = v->trade->product;
    int64_t amount = v->trade->amount;
    const char *blocked = v->buyer && !strcmp(v->buyer->status, "BLOCKED") ? "BUYER_BLOCKED" : NULL;
    const char *limit = blocked ? blocked : pc_cashier_limit(app, v, 0, NULL, amount);
    char money[32], label[96];

    /* Internal assets: not for a top-up of the same wallet, not for guests. */
    if (v->buyer && strcmp(product, "RECHARGE") != 0) {
        snprintf(label, sizeof label, "Balance %s",
                 pc_money_text(v->wallet, cur, money, sizeof money));
        int64_t max = v->wallet < amount ? v->wallet : amount;
        add(o, "BALANCE", "BALANCE", label,
            limit            ? limit
            : v->wallet <= 0 ? "INSUFFICIENT_BALANCE"
                             : NULL,
            max, NULL);
        size_t i;
        json_t *tw;
        /* Balances of this merchant's named account types (top-ups made here). */
        json_array_foreach(v->typed_wallets, i, tw)
        {
            int64_t bal = json_integer_value(json_object_get(tw, "balance"));
            if (bal <= 0)
                continue;
            const char *type = json_string_value(json_object_get(tw, "account_type"));
            char id[64];
            snprintf(id, sizeof id, "BALANCE:%s", type);
            snprintf(label, sizeof label, "%s balance %s", type,
                     pc_money_text(bal, cur, money, sizeof money));
            add(o, id, "BALANCE", label, limit, bal < amount ? bal : amount, NULL);
        }
        json_t *cp;
        json_array_foreach(v->coupons, i, cp)
        {
            int64_t ca = json_integer_value(json_object_get(cp, "amount"));
            int64_t min = json_integer_value(json_object_get(cp, "min_amount"));
            char id[96];
            snprintf(id, sizeof id, "COUPON:%s",
                     json_string_value(json_object_get(cp, "coupon_id")));
            snprintf(label, sizeof label, "Coupon %s off",
                     pc_money_text(ca, cur, money, sizeof money));
            pc_rank_method_t *f = add(o, id, "COUPON", label,
                                      limit          ? limit
                                      : amount < min ? "MIN_AMOUNT_NOT_MET"
                                                     : NULL,
                                      ca < amount ? ca : amount, NULL);
            add_with(o, f, "coupon",
                     json_pack("{s:O,s:I}", "coupon_id", json_object_get(cp, "coupon_id"), "amount",
                               (json_int_t)ca));
        }
    }
    /* Bound cards. */
    size_t i;
    json_t *card;
    json_array_foreach(v->cards, i, card)
    {
        const char *card_id = json_string_value(json_object_get(card, "card_id"));
        const char *ch = json_string_value(json_object_get(card, "channel_id"));
        const pc_channel_t *chan = pc_channels_find(app->channels, ch);
        const char *why = limit ? limit : pc_cashier_limit(app, v, 1, card_id, amount);
        if (!why && (!chan || !pc_channels_effective_enabled(app->channels, ch) ||
                     !pc_channel_accepts(chan, PC_METHOD_QUICK_PAY, cur, amount)))
            why = "CHANNEL_UNAVAILABLE";
        if (!why && !pc_channels_volume_room(app->channels, chan, cur, amount, v->now))
            why = "CHANNEL_LIMIT_EXCEEDED";
        char id[96];
        snprintf(id, sizeof id, "QUICK_PAY:%s", card_id);
        snprintf(label, sizeof label, "%s \xe2\x80\xa2\xe2\x80\xa2%s",
                 brand_label(json_string_value(json_object_get(card, "brand"))),
                 json_string_value(json_object_get(card, "last4")));
        add_with(o, add(o, id, "QUICK_PAY", label, why, amount, ch), "card",
                 json_pack("{s:O,s:O,s:O}", "card_id", json_object_get(card, "card_id"), "brand",
                           json_object_get(card, "brand"), "last4",
                           json_object_get(card, "last4")));
    }
    /* Channel methods: offered when some enabled channel takes them. */
    for (size_t k = 0; k < sizeof external / sizeof external[0]; k++) {
        const pc_channel_t *match[PC_CHANNELS_MAX];
        size_t n =
            pc_channels_match(app->channels, external[k].m, cur, amount, match, PC_CHANNELS_MAX);
        if (n == 0)
            continue;
        const char *type = pc_pay_method_name(external[k].m);
        const char *why = limit;
        if (!why && external[k].m == PC_METHOD_CARD)
            why = pc_cashier_limit(app, v, 1, NULL, amount);
        size_t room = 0;
        for (size_t j = 0; j < n && j < PC_CHANNELS_MAX; j++)
            room += pc_channels_volume_room(app->channels, match[j], cur, amount, v->now);
        if (!why && room == 0)
            why = "CHANNEL_LIMIT_EXCEEDED";
        add(o, type, type, external[k].label, why, amount, n == 1 ? match[0]->id : NULL);
    }
}

static void loaded_cb(void *data, int status, pc_cashier_view_t *v)
{
    consult_t *c = data;
    pc_http_req_t *req = c->req;
    if (status) {
        pc_respond_db_error(req, status);
        return;
    }
    if (pc_cashier_check_payable(req, v, c->buyer_id) < 0)
        return;
    const char *tb = v->trade->buyer_id;
    if (!c->buyer_id && tb && tb[0]) {
        /* A trade created for a buyer is consulted for that buyer, as pay
         * pays it for that buyer whether it is named or not: its balance,
         * coupons, cards, limits and block. Before, a consult without
         * buyer_id showed a guest's methods (no balance, cards marked
         * available that pay then refused over the buyer's limits). */
        snprintf(c->trade_buyer, sizeof c->trade_buyer, "%s", tb);
        c->buyer_id = c->trade_buyer;
        if (pc_cashier_load(c->app, c->merchant_id, c->trade_no, c->buyer_id, PC_VIEW_ALL,
                            loaded_cb, c) < 0)
            pc_respond_db_error(req, PC_EUNAVAIL);
        return;
    }
    offers_t o = {.req = req};
    assemble(c, v, &o);
    if (o.oom) {
        offers_free(&o);
        pc_http_respond_error(req, PC_API_INTERNAL, NULL, "could not make the answer");
        return;
    }
    const char *cur = v->trade->currency;
    int64_t amount = v->trade->amount;
    json_t *buyer = json_object();
    if (v->buyer) {
        json_object_set_new(buyer, "id", json_string(c->buyer_id));
        json_object_set_new(buyer, "balance", json_integer(v->wallet));
        json_t *counts = json_object(); /* {type: count} from the view's pairs */
        size_t i;
        json_t *e;
        json_array_foreach(v->type_counts, i, e)
        {
            const char *type = json_string_value(json_array_get(e, 0));
            if (type)
                json_object_set(counts, type, json_array_get(e, 1));
        }
        json_object_set_new(buyer, "type_counts", counts);
        if (v->last_method) {
            char last[96];
            json_t *first_card = json_array_get(v->cards, 0);
            if (!strcmp(v->last_method, "QUICK_PAY") && first_card)
                snprintf(last, sizeof last, "QUICK_PAY:%s",
                         json_string_value(json_object_get(first_card, "card_id")));
            else
                snprintf(last, sizeof last, "%s", v->last_method);
            json_object_set_new(buyer, "last_method_id", json_string(last));
        }
    }
    json_t *ctx =
        json_pack("{s:I,s:s,s:s,s:s,s:I,s:{s:s},s:o,s:{s:b}}", "amount", (json_int_t)amount,
                  "currency", cur, "product", v->trade->product, "platform", c->platform, "now",
                  (json_int_t)v->now, "merchant", "id", c->merchant_id, "buyer", buyer, "policy",
                  "hide_unavailable", pc_config_bool(c->app->cfg, "cashier.hide_unavailable"));
    pc_rule_result_t r;
    size_t *order = pc_http_req_alloc(req, (o.n + 1) * sizeof *order);
    unsigned char *rec = pc_http_req_alloc(req, o.n + 1);
    pc_rank_answer_t ans = {order, rec, 0};
    pc_rules_cashier_rank_methods(c->app->rules, ctx, o.m, o.n, &ans, &r);
    /* A fallback is logged by the rules module (rules.fallback, once a
     * second per rule) and counted (pc_rules_calls_total): not again here,
     * once per request, which flooded the log when a rule kept failing. */
    /* The rule's order, hidden methods left out, its flags. */
    pc_jw_t w;
    pc_jw_init(&w, 512 + 224 * ans.count);
    pc_jw_object(&w);
    pc_jw_key(&w, "trade_no");
    pc_jw_str(&w, v->trade->trade_no);
    pc_jw_key(&w, "amount");
    pc_jw_int(&w, amount);
    pc_jw_key(&w, "currency");
    pc_jw_str(&w, cur);
    pc_jw_key(&w, "rule_version");
    pc_jw_str(&w, r.version);
    pc_jw_key(&w, "methods");
    pc_jw_array(&w);
    for (size_t i = 0; i < ans.count; i++)
        write_method(&w, &o.m[order[i]], rec[i]);
    pc_jw_end_array(&w);
    pc_jw_end_object(&w);
    pc_rule_result_clear(&r);
    json_decref(ctx);
    offers_free(&o);
    size_t len;
    char *text = pc_jw_done(&w, &len);
    if (!text) {
        pc_http_respond_error(req, PC_API_INTERNAL, NULL, "could not make the answer");
        return;
    }
    pc_http_respond(req, 200, "application/json", text, len);
    free(text);
}

void pc_cashier_consult_run(pc_app_t *app, pc_http_req_t *req, const char *merchant_id, json_t *b)
{
    consult_t *c = pc_http_req_alloc(req, sizeof *c);
    c->req = req;
    c->app = app;
    c->merchant_id = merchant_id;
    int bad = 0;
    c->trade_no = pc_json_str(b, "trade_no", 64, 1, &bad);
    if (!c->trade_no || bad) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "trade_no", "trade_no is required");
        return;
    }
    c->buyer_id = pc_json_str(b, "buyer_id", 64, 1, &bad);
    if (bad) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "buyer_id", "1-64 of [A-Za-z0-9_-]");
        return;
    }
    json_t *client = json_object_get(b, "client");
    c->platform = client ? pc_json_str(client, "platform", 8, 0, &bad) : NULL;
    if (bad || (c->platform && strcmp(c->platform, "WEB") && strcmp(c->platform, "H5") &&
                strcmp(c->platform, "APP"))) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "client.platform", "WEB, H5 or APP");
        return;
    }
    if (!c->platform)
        c->platform = "WEB";
    if (pc_cashier_load(c->app, merchant_id, c->trade_no, c->buyer_id, PC_VIEW_ALL, loaded_cb, c) <
        0)
        pc_respond_db_error(req, PC_EUNAVAIL);
}

static void consult(pc_http_req_t *req, void *data)
{
    json_t *b = pc_http_req_json(req);
    if (!b) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, NULL, "body must be a JSON object");
        return;
    }
    pc_cashier_consult_run(data, req, pc_auth_merchant(req)->id, b);
}

void pc_app_routes_consult(pc_app_t *app)
{
    pc_router_add(app->api, "POST", "/v1/cashier/consult", consult, app);
}
