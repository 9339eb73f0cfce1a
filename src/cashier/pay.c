/* POST /v1/cashier/pay (accept), GET /v1/payments/{payment_no}, POST
 * /v1/buyers/{buyer_id}/cards, the channels' callbacks, and the ops review
 * and challenge endpoints. Accept repeats every consult check (state may have
 * changed), asks rules/risk.lua with a filled context (velocity counters in
 * Redis, block lists, history), asks rules/route.lua to order the channels
 * (live health and success rates), and hands the payment to the engine. */
#include "auth/auth.h"
#include "auth/sign.h"
#include "cardbin/cardbin.h"
#include "cashier/cashier.h"
#include "channel/client.h"
#include "channel/config.h"
#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"
#include "engine/engine.h"
#include "http/forwarded.h"
#include "ledger/ledger.h"
#include "rules/rules.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    pc_http_req_t *req;
    pc_app_t *app;
    const char *merchant_id;
    /* request */
    const char *trade_no, *buyer_id, *method_id, *coupon_id, *buyer_code;
    const char *challenge_id, *challenge_answer;
    const char *ip, *device, *platform;
    long long balance_amount;
    pc_ch_card_t card;
    int has_card;
    int peer_is_buyer; /* the hosted page: the buyer's browser (pc_cashier_pay_run) */
    /* decided */
    char method[16];
    const char *card_id;
    char card_key[96]; /* what velocity and block lists know the card by */
    json_t *view;      /* copy of the loaded view */
    pc_pay_order_t order;
    int waiting;
    int ip_blocked, device_blocked, card_blocked, buyer_listed;
    int lists_unread; /* the block list could not be read: nothing is decided */
    long long v_buyer, v_card, v_ip, v_device;
    /* Counter commands Redis did not answer with a count (down, or an
     * error): the counts the rule sees are then short. */
    int v_missing;
    json_t *reasons, *versions;
    char card_token[80], card_brand[24], card_last4[8];
    /* The card's BIN (its first 6 digits, never more), for the block list
     * and route.lua: of the number typed in, or of the bound card chosen;
     * "" without a card. Set by gather(). */
    char card_bin[8];
    char coupon_funder[65];
    char wallet_owner[65];
    char trade_buyer[65];
    char challenge_buf[32], challenge_code[8], challenge_hash[PC_SHA256_HEX_LEN + 1];
    const char *route_ids[PC_ROUTE_MAX];
    char route_buf[PC_ROUTE_MAX][33];
    size_t route_candidates; /* switched-on channels route.lua was offered */
    int route_switched_off;  /* none offered, as ops switched off those configured */
    int route_full;          /* switched on, left out: their volume caps are reached */
    char sent[64];           /* the payment an earlier run of this request set going */
} pay_t;

static void pay_free(void *arg)
{
    pay_t *p = arg;
    json_decref(p->view);
    json_decref(p->reasons);
    json_decref(p->versions);
}

static void answer_engine(void *data, pc_api_err_t err, const char *message, json_t *payment)
{
    pc_http_req_t *req = data;
    if (err != PC_API_OK) {
        pc_http_respond_error(req, err, NULL, message);
        return;
    }
    pc_http_respond_json(req, 200, payment);
}

/* ---------- step 4: route, then the engine ---------- */

static void run_engine(pay_t *p)
{
    if (pc_engine_start(p->app->engine, &p->order, answer_engine, p->req) < 0)
        pc_http_respond_error(p->req, PC_API_UNAVAILABLE, NULL, "could not start the payment");
}

static void tokenized_cb(void *data, const pc_ch_result_t *r)
{
    pay_t *p = data;
    if (r->status == PC_CH_UNKNOWN || r->status == PC_CH_PROCESSING) {
        /* The channel did not answer (or not finally): nothing is recorded,
         * and a retry with the same key runs again. Before, the payment was
         * recorded FAILED RISK_REJECTED ("refused by risk control") for a
         * channel outage, and counted against the trade's failed attempts. */
        pc_http_respond_error(p->req, PC_API_UNAVAILABLE, NULL,
                              "the card could not be checked with its channel now: retry");
        return;
    }
    if (r->status != PC_CH_SUCCESS || !r->card_token[0]) {
        /* Without a token the card cannot be charged after review: refuse now. */
        p->order.risk_decision = "REJECT";
    } else {
        snprintf(p->card_token, sizeof p->card_token, "%s", r->card_token);
        snprintf(p->card_brand, sizeof p->card_brand, "%s", r->card_brand);
        snprintf(p->card_last4, sizeof p->card_last4, "%s", r->card_last4);
        p->order.card_token = p->card_token;
        p->order.card_brand = p->card_brand;
        p->order.card_last4 = p->card_last4;
        p->order.card = NULL;
        p->order.nroute = 1; /* the token belongs to this channel */
    }
    run_engine(p);
}

static int route(pay_t *p, int64_t external, const char *only_channel)
{
    pc_app_t *app = p->app;
    json_t *t = json_object_get(p->view, "trade");
    const char *cur = json_string_value(json_object_get(t, "currency"));
    pc_pay_method_t m;
    if (pc_pay_method_parse(p->method, &m) < 0)
        return 0;
    /* Every channel that takes it reaches route.lua: cut to the first 16 by
     * id, the others were never offered, nor their room when those were
     * full. */
    const pc_channel_t *match[PC_CHANNELS_MAX];
    size_t n = pc_channels_match(app->channels, m, cur, external, match, PC_CHANNELS_MAX);
    if (n > PC_CHANNELS_MAX)
        n = PC_CHANNELS_MAX;
    json_t *cands = json_array();
    int64_t now = json_integer_value(json_object_get(p->view, "now"));
    for (size_t i = 0; i < n; i++) {
        if (only_channel && strcmp(match[i]->id, only_channel) != 0)
            continue;
        if (!pc_channels_volume_room(app->channels, match[i], cur, external, now)) {
            p->route_full++;
            continue;
        }
        int rate = 10000, lat = 0, healthy = 1;
        pc_channel_health_get(app->channel_client, match[i]->id, &rate, &lat, &healthy);
        json_array_append_new(cands, json_pack("{s:s,s:b,s:i,s:i,s:I,s:I}", "channel_id",
                                               match[i]->id, "healthy", healthy, "success_rate_bp",
                                               rate, "latency_ms", lat, "fee",
                                               (json_int_t)pc_channel_fee(match[i], cur, external),
                                               "weight", (json_int_t)match[i]->weight));
    }
    json_t *ctx =
        json_pack("{s:I,s:s,s:s,s:{s:s},s:{s:s?},s:i,s:I}", "amount", (json_int_t)external,
                  "currency", cur, "method", p->method, "merchant", "id", p->merchant_id, "buyer",
                  "id", p->buyer_id, "attempt", 1, "now", (json_int_t)now);
    /* The card's scheme and BIN. */
    if (p->card_bin[0])
        json_object_set_new(
            ctx, "card",
            json_pack("{s:s,s:s}", "brand",
                      p->card_brand[0] ? p->card_brand : pc_card_scheme(p->card_bin), "bin",
                      p->card_bin));
    p->route_candidates = json_array_size(cands);
    if (!p->route_candidates) {
        /* Configured, switched on or not: a route with none offered is
         * refused for now when ops switched them off. */
        n = pc_channels_configured(app->channels, m, cur, external, match, 16);
        for (size_t i = 0; i < n && i < 16 && !p->route_switched_off; i++)
            p->route_switched_off = !only_channel || !strcmp(match[i]->id, only_channel);
    }
    pc_rule_result_t r;
    pc_rules_route(app->rules, ctx, cands, &r);
    json_object_set_new(p->versions, "route", json_string(r.version));
    size_t i;
    json_t *id;
    int k = 0;
    json_array_foreach(r.answer, i, id)
    {
        const char *s = json_is_string(id) ? json_string_value(id)
                                           : json_string_value(json_object_get(id, "channel_id"));
        if (!s || k == PC_ROUTE_MAX)
            continue;
        snprintf(p->route_buf[k], sizeof p->route_buf[k], "%s", s);
        p->route_ids[k] = p->route_buf[k];
        k++;
    }
    pc_rule_result_clear(&r);
    json_decref(ctx);
    json_decref(cands);
    for (int j = 0; j < k; j++)
        p->order.route[j] = p->route_ids[j];
    p->order.nroute = k;
    return k;
}

static void decide(pay_t *p)
{
    pc_app_t *app = p->app;
    /* Block lists are a hard guard: unread, a blocked card, address or
     * buyer would have been scored as clean (velocity has its "complete"
     * flag for the rule; lists had none). Nothing was recorded yet. */
    if (p->lists_unread) {
        pc_http_respond_error(p->req, PC_API_UNAVAILABLE, NULL,
                              "the block lists could not be read; nothing was charged: retry "
                              "with the same Idempotency-Key");
        return;
    }
    json_t *v = p->view;
    json_t *t = json_object_get(v, "trade");
    json_t *buyer = json_object_get(v, "buyer");
    if (!json_is_object(buyer))
        buyer = NULL; /* a buyer paycore has no record of (JSON null): nothing known */
    const char *buyer_status = json_string_value(json_object_get(buyer, "status"));
    int buyer_blocked = p->buyer_listed || (buyer_status && !strcmp(buyer_status, "BLOCKED"));
    int64_t amount = json_integer_value(json_object_get(t, "amount"));
    /* The buyer's attempts: Redis's count, or what PostgreSQL holds of the
     * last hour if that is more (Redis down, or forgotten). */
    long long buyer_attempts = p->v_buyer;
    long long pg_attempts =
        json_integer_value(json_object_get(json_object_get(v, "usage"), "attempts_1h"));
    if (pg_attempts > buyer_attempts)
        buyer_attempts = pg_attempts;
    /* Risk context: everything the rule may look at, filled here. When
     * Redis could not count (velocity.complete false) the counts are short:
     * the rule decides what that is worth (never read as "no attempts"). */
    json_t *ctx = json_pack(
        "{s:s,s:I,s:s,s:s,s:O,s:O,s:b,s:{s:s?,s:b,s:i,s:I},s:{s:s,s:i},"
        "s:{s:I,s:I,s:I,s:I,s:I,s:b},s:{s:b,s:b,s:b},s:{s:s?,s:s?,s:s?},s:{s:I}}",
        "kind", "PAYMENT", "amount", (json_int_t)amount, "currency",
        json_string_value(json_object_get(t, "currency")), "method", p->method, "product",
        json_object_get(t, "product"), "now", json_object_get(v, "now"), "challenge_passed", 0,
        "buyer", "id", p->buyer_id, "blocked", buyer_blocked, "chargebacks_90d",
        (int)json_integer_value(json_object_get(v, "chargebacks_90d")), "account_age_days",
        (json_int_t)json_integer_value(json_object_get(buyer, "age_days")), "merchant", "id",
        p->merchant_id, "chargeback_rate_bp",
        (int)json_integer_value(json_object_get(v, "merchant_cb_rate_bp")), "velocity",
        "buyer_attempts_1h", (json_int_t)buyer_attempts, "buyer_amount_24h",
        (json_int_t)json_integer_value(json_object_get(json_object_get(v, "usage"), "day")),
        "card_attempts_1h", (json_int_t)p->v_card, "ip_attempts_1h", (json_int_t)p->v_ip,
        "device_attempts_1h", (json_int_t)p->v_device, "complete", p->v_missing == 0, "lists",
        "ip_blocked", p->ip_blocked, "device_blocked", p->device_blocked, "card_blocked",
        p->card_blocked, "client", "ip", p->ip, "device_id", p->device, "platform", p->platform,
        /* The hard daily limit this payment is held to (passing it is
         * refused before the rule is asked): the rule's own daily figure
         * sits below. */
        "limits", "buyer_daily",
        (json_int_t)pc_config_limit(app->cfg, "buyer_daily",
                                    json_string_value(json_object_get(t, "currency"))));
    if (!buyer)
        json_object_del(json_object_get(ctx, "buyer"), "account_age_days");
    pc_rule_result_t r;
    pc_rules_risk(app->rules, ctx, &r);
    json_decref(ctx);
    /* A fallback is logged by the rules module (rules.fallback, once a
     * second per rule) and counted (pc_rules_calls_total): not again here,
     * once per request, which flooded the log when a rule kept failing. */
    /* No answer at all (out of memory building the safe default): held
     * for review, as any failure of the rule is. */
    const char *d = json_string_value(json_object_get(r.answer, "decision"));
    if (!d)
        d = "REVIEW";
    p->order.risk_decision = !strcmp(d, "ACCEPT")      ? "ACCEPT"
                             : !strcmp(d, "CHALLENGE") ? "CHALLENGE"
                             : !strcmp(d, "REJECT")    ? "REJECT"
                                                       : "REVIEW";
    p->order.risk_score = (int)json_integer_value(json_object_get(r.answer, "score"));
    p->reasons = json_deep_copy(json_object_get(r.answer, "reasons"));
    if (!p->reasons)
        p->reasons = json_array();
    /* What is on a block list is refused whatever the rule answered, as
     * consult shows it (system.md: accept repeats consult's checks). Before,
     * only risk.lua refused it: a rule that failed (its fallback is REVIEW)
     * or was edited let a blocked buyer's payment wait for review, and ops
     * could release it. */
    const char *hard = buyer_blocked       ? "BUYER_BLOCKED"
                       : p->card_blocked   ? "CARD_BLOCKED"
                       : p->ip_blocked     ? "IP_BLOCKED"
                       : p->device_blocked ? "DEVICE_BLOCKED"
                                           : NULL;
    if (hard && strcmp(p->order.risk_decision, "REJECT") != 0) {
        p->order.risk_decision = "REJECT";
        json_array_append_new(p->reasons, json_string(hard));
    }
    /* On the hosted page the link is the buyer's only credential, and links
     * are mailed, forwarded and left in a browser's history: whoever held
     * one spent the buyer's balance, coupons or saved card in one click.
     * Those are confirmed with a one-time code sent to the buyer (a
     * challenge). A card typed in (with its CVV) is not, nor the merchant
     * API, where the merchant answers for its buyer. Switched off
     * (cashier.page_asset_challenge) where no code can reach a buyer. */
    if (p->peer_is_buyer && pc_config_bool(app->cfg, "cashier.page_asset_challenge") &&
        !strcmp(p->order.risk_decision, "ACCEPT") &&
        (p->order.balance_amount > 0 || p->order.coupon_amount > 0 || p->card_id)) {
        p->order.risk_decision = "CHALLENGE";
        json_array_append_new(p->reasons, json_string("HOSTED_PAGE_BUYER_ASSETS"));
    }
    p->order.risk_reasons = p->reasons;
    json_object_set_new(p->versions, "risk", json_string(r.version));
    pc_rule_result_clear(&r);
    char labels[64];
    snprintf(labels, sizeof labels, "decision=\"%s\"", p->order.risk_decision);
    pc_metrics_add("pc_risk_decisions_total", labels, 1);

    int64_t external = p->order.amount - p->order.balance_amount - p->order.coupon_amount;
    if (external > 0) {
        const char *only = NULL;
        json_t *card = p->card_id ? json_object_get(v, "chosen_card") : NULL;
        if (card)
            only = json_string_value(json_object_get(card, "channel_id"));
        if (route(p, external, only) == 0) {
            if (p->route_candidates > 0)
                /* rules/route.lua chose none of them: its decision. */
                pc_http_respond_error(p->req, PC_API_INVALID_STATE, "method_id",
                                      "the routing rule takes no channel for this payment");
            else if (p->route_full)
                /* Full for today or this month by this node's last reading. */
                pc_http_respond_error(p->req, PC_API_LIMIT_EXCEEDED, "method_id",
                                      "every channel that takes this payment has reached its "
                                      "daily or monthly volume; choose another method");
            else if (p->route_switched_off)
                /* Every one switched off by ops: for now. The answer is not
                 * kept; a retry runs again. */
                pc_http_respond_error(p->req, PC_API_UNAVAILABLE, "method_id",
                                      "every channel that takes this payment is switched off "
                                      "now; retry later or choose another method");
            else
                pc_http_respond_error(p->req, PC_API_INVALID_STATE, "method_id",
                                      "no channel takes this method for this amount and "
                                      "currency");
            return;
        }
    }
    p->order.rule_versions = p->versions;
    if (!strcmp(p->order.risk_decision, "CHALLENGE")) {
        /* The code reaches the buyer out of band; here that is the demo
         * outbox GET /admin/challenges/{id}. Only its hash is checked. */
        char hex[17], buf[128];
        pc_random_hex(hex, sizeof hex, 8);
        snprintf(p->challenge_buf, sizeof p->challenge_buf, "ch_%s", hex);
        pc_random_hex(hex, sizeof hex, 4);
        unsigned long code = strtoul(hex, NULL, 16) % 1000000;
        snprintf(p->challenge_code, sizeof p->challenge_code, "%06lu", code);
        snprintf(buf, sizeof buf, "%s:%s", p->challenge_buf, p->challenge_code);
        pc_sha256_hex(buf, strlen(buf), p->challenge_hash);
        p->order.challenge_id = p->challenge_buf;
        p->order.challenge_hash = p->challenge_hash;
        p->order.challenge_demo_code =
            pc_config_bool(app->cfg, "demo") && pc_config_bool(app->cfg, "cashier.demo_challenges")
                ? p->challenge_code
                : NULL;
        /* The answer brings the card again: it must be this one. */
        p->order.challenge_card_key = p->order.card ? p->card_key : NULL;
    }
    if (!strcmp(p->order.risk_decision, "REVIEW") && p->order.card && p->order.nroute > 0) {
        if (pc_channel_tokenize(app->channel_client, p->order.route[0], &p->card, tokenized_cb,
                                p) == 0)
            return;
        p->order.risk_decision = "REJECT";
    }
    run_engine(p);
}

/* ---------- step 3: velocity counters and block lists ---------- */

static void gathered(pay_t *p)
{
    if (--p->waiting == 0)
        decide(p);
}

typedef struct {
    pay_t *p;
    long long *slot;
} vel_t;

/* INCR of this hour's bucket (an integer) or GET of the last hour's (a
 * number as a string, or nil: nothing counted then): added to the slot. */
static void velocity_cb(void *data, int status, const pc_kv_reply_t *reply)
{
    vel_t *v = data;
    pc_kv_type_t type = status == 0 ? pc_kv_reply_type(reply) : PC_KV_NIL;
    if (status == 0 && type == PC_KV_INTEGER) {
        *v->slot += pc_kv_reply_int(reply);
    } else if (status == 0 && type == PC_KV_STRING) {
        size_t len;
        const char *str = pc_kv_reply_str(reply, &len);
        char buf[24];
        snprintf(buf, sizeof buf, "%.*s", (int)(len < sizeof buf ? len : sizeof buf - 1), str);
        *v->slot += strtoll(buf, NULL, 10);
    } else if (!(status == 0 && type == PC_KV_NIL)) {
        v->p->v_missing++;
    }
}

static void velocity_last_cb(void *data, int status, const pc_kv_reply_t *reply)
{
    (void)status;
    (void)reply;
    gathered(data);
}

static void blocks_cb(void *data, int status, pc_db_res_t *res)
{
    pay_t *p = data;
    if (status)
        p->lists_unread = 1;
    for (int i = 0; !status && i < pc_db_rows(res); i++) {
        const char *k = pc_db_get(res, i, 0);
        if (!strcmp(k, "IP"))
            p->ip_blocked = 1;
        else if (!strcmp(k, "DEVICE"))
            p->device_blocked = 1;
        else if (!strcmp(k, "CARD_BIN"))
            p->card_blocked = 1;
        else if (!strcmp(k, "BUYER"))
            p->buyer_listed = 1;
    }
    gathered(p);
}

/* Hour buckets: the rule sees this hour's count (this attempt included)
 * plus the last hour's, so "the last hour" never misses an attempt made a
 * minute before the hour turned (a window of one to two hours). */
static void count_attempt(pay_t *p, const char *what, const char *value, long long *slot)
{
    if (!value || !value[0])
        return;
    long hour = (long)(time(NULL) / 3600);
    char name[200], key[260], prev[260];
    snprintf(name, sizeof name, "vel:%s:%s:%ld", what, value, hour);
    pc_kv_key(p->app->kv, key, sizeof key, name);
    snprintf(name, sizeof name, "vel:%s:%s:%ld", what, value, hour - 1);
    pc_kv_key(p->app->kv, prev, sizeof prev, name);
    vel_t *v = pc_http_req_alloc(p->req, sizeof *v);
    v->p = p;
    v->slot = slot;
    /* The counter is made with its expiry before it is counted (INCR keeps
     * it): an INCR then EXPIRE cut apart by a lost connection left a counter
     * that never expired. */
    pc_kv_cmd(p->app->kv, NULL, NULL, "SET", key, "0", "EX", "7200", "NX", NULL);
    if (pc_kv_cmd(p->app->kv, velocity_cb, v, "INCR", key, NULL) < 0)
        p->v_missing++;
    if (pc_kv_cmd(p->app->kv, velocity_cb, v, "GET", prev, NULL) < 0)
        p->v_missing++;
}

static void gather(pay_t *p)
{
    p->waiting = 3;
    /* The address in one text, as block-list entries are kept (the block
     * list and the velocity counter copy what they are given: locals will
     * do). */
    char ip_text[INET6_ADDRSTRLEN];
    if (pc_ip_canonical(p->ip, ip_text, sizeof ip_text) < 0)
        snprintf(ip_text, sizeof ip_text, "%s", p->ip ? p->ip : "");
    count_attempt(p, "buyer", p->buyer_id, &p->v_buyer);
    count_attempt(p, "card", p->card_key, &p->v_card);
    /* Attempts from an IPv6 address count for its /64: a buyer's line has
     * 2^64 of them, and each its own count let a card tester stay under
     * the rule's threshold forever. */
    char ip_key[INET6_ADDRSTRLEN + 4];
    if (pc_ip_velocity_key(p->ip, ip_key, sizeof ip_key) < 0)
        snprintf(ip_key, sizeof ip_key, "%s", ip_text);
    count_attempt(p, "ip", ip_key, &p->v_ip);
    count_attempt(p, "device", p->device, &p->v_device);
    /* Redis answers in order: this PING arrives after the counters. */
    if (pc_kv_cmd(p->app->kv, velocity_last_cb, p, "PING", NULL) < 0)
        p->waiting--;
    /* The card's BIN: of the number given, or of the bound card chosen
     * (before, a blocked BIN passed when the card was bound first). */
    json_t *chosen = p->card_id ? json_object_get(p->view, "chosen_card") : NULL;
    const char *cbin = chosen ? json_string_value(json_object_get(chosen, "bin")) : NULL;
    const char *digits = p->has_card ? p->card.pan : cbin;
    if (digits && strlen(digits) >= 6)
        snprintf(p->card_bin, sizeof p->card_bin, "%.6s", digits);
    /* Its first 8 digits where known, for 8-digit entries; else "". */
    char card_bin8[9] = "";
    if (digits && strlen(digits) >= 8)
        snprintf(card_bin8, sizeof card_bin8, "%.8s", digits);
    /* An IP entry is the address, or (IPv6) its /64. */
    const char *q[] = {ip_text,     p->device ? p->device : "",
                       p->card_bin, p->buyer_id ? p->buyer_id : "",
                       card_bin8,   ip_key};
    if (pc_db_query(p->app->db,
                    "SELECT kind FROM block_list WHERE (kind = 'IP' AND value IN ($1, $6)) OR "
                    "(kind = 'DEVICE' AND value = $2) OR (kind = 'CARD_BIN' AND value IN ($3, "
                    "$5)) OR (kind = 'BUYER' AND value = $4)",
                    6, q, blocks_cb, p) < 0) {
        p->lists_unread = 1;
        p->waiting--;
    }
    gathered(p);
}

/* ---------- step 2: the checks of consult, again ---------- */

static int digits_only(const char *s, size_t min, size_t max)
{
    size_t n = strlen(s);
    if (n < min || n > max)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return 0;
    return 1;
}

/* What velocity, block lists and challenges know a card by: "c" and a keyed
 * hash of its number, never the number itself. */
static void card_fingerprint(pc_app_t *app, const char *pan, char *out, size_t outlen)
{
    char hex[PC_SHA256_HEX_LEN + 1];
    unsigned char mac[PC_SHA256_LEN];
    const char *k = pc_config_str(app->cfg, "cashier.card_key");
    pc_hmac_sha256(k, strlen(k), pan, strlen(pan), mac);
    for (int i = 0; i < 12; i++)
        snprintf(hex + 2 * i, 3, "%02x", mac[i]);
    snprintf(out, outlen, "c%s", hex);
}

/* Splits a method id into its type ("QUICK_PAY"), written to type, and its
 * reference (the card id), returned; NULL when it names none. */
static const char *split_method(const char *method_id, char type[16])
{
    const char *colon = strchr(method_id, ':');
    size_t tl = colon ? (size_t)(colon - method_id) : strlen(method_id);
    snprintf(type, 16, "%.*s", (int)(tl < 15 ? tl : 15), method_id);
    return colon ? colon + 1 : NULL;
}

/* The parts of the cashier's view a pay reads beyond what is always read: its
 * attempts and risk figures, its coupon, its named balance, its bound card. */
static unsigned view_parts(const pay_t *p)
{
    char type[16];
    const char *ref = split_method(p->method_id, type);
    unsigned parts = PC_VIEW_PAY;
    if (p->coupon_id || !strcmp(type, "COUPON"))
        parts |= PC_VIEW_COUPONS;
    if (!strcmp(type, "BALANCE") && ref)
        parts |= PC_VIEW_TYPED;
    if (!strcmp(type, "QUICK_PAY") || !strcmp(type, "AGREEMENT"))
        parts |= PC_VIEW_CARDS;
    return parts;
}

static void loaded_cb(void *data, int status, pc_cashier_view_t *v)
{
    pay_t *p = data;
    pc_http_req_t *req = p->req;
    pc_app_t *app = p->app;
    if (status) {
        pc_respond_db_error(req, status);
        return;
    }
    if (pc_cashier_check_payable(req, v, p->buyer_id) < 0)
        return;
    const char *tb = v->trade->buyer_id;
    if (!p->buyer_id && tb && tb[0]) {
        /* A trade created for a buyer is paid by that buyer, whether the
         * pay names it or not (api.md leaves buyer_id out of the required
         * fields): its limits, velocity, block list and records are that
         * buyer's. Before, such a pay counted for nobody, and leaving the
         * field out went around the buyer's limits. Loaded again for it. */
        snprintf(p->trade_buyer, sizeof p->trade_buyer, "%s", tb);
        p->buyer_id = p->trade_buyer;
        if (pc_cashier_load(app, p->merchant_id, p->trade_no, p->buyer_id, view_parts(p), loaded_cb,
                            p) < 0)
            pc_respond_db_error(req, PC_EUNAVAIL);
        return;
    }
    if (v->open_attempts > 0) {
        pc_http_respond_error(req, PC_API_INVALID_STATE, NULL,
                              "another payment of this trade is in progress");
        return;
    }
    /* Each failure lets the buyer try again (continue-pay), and the risk
     * rule counts attempts per buyer, card, address and device: a guest
     * trade's cashier link, with a new card each time and no device id,
     * tested stolen cards one after another for as long as the link lived
     * (only the address's count could stop it). Capped per trade. */
    int64_t max_failed = pc_config_int(app->cfg, "cashier.max_failed_attempts");
    if (v->failed_attempts >= max_failed) {
        char msg[160];
        snprintf(msg, sizeof msg,
                 "this trade has had %lld failed payments: it takes no more (create a new trade)",
                 (long long)v->failed_attempts);
        pc_http_respond_error(req, PC_API_LIMIT_EXCEEDED, NULL, msg);
        return;
    }
    p->view = pc_cashier_view_json(v);
    if (!p->view) {
        pc_http_respond_error(req, PC_API_INTERNAL, NULL, "out of memory");
        return;
    }
    json_t *t = json_object_get(p->view, "trade");
    const char *cur = json_string_value(json_object_get(t, "currency"));
    const char *product = json_string_value(json_object_get(t, "product"));
    int64_t amount = json_integer_value(json_object_get(t, "amount"));
    pc_pay_order_t *o = &p->order;
    o->trade_no = p->trade_no;
    o->merchant_id = p->merchant_id;
    o->buyer_id = p->buyer_id;
    o->currency = cur;
    o->amount = amount;
    o->client_ip = p->ip;
    o->device_id = p->device;
    o->idem = pc_auth_idem(p->req);

    /* The method. */
    const char *ref = split_method(p->method_id, p->method);
    int internal_ok = v->buyer && strcmp(product, "RECHARGE") != 0;
    int64_t wallet = v->wallet; /* the wallet the balance part comes from */
    const char *coupon_id = p->coupon_id;
    if (!strcmp(p->method, "COUPON")) {
        coupon_id = ref;
    }
    if ((!strcmp(p->method, "BALANCE") || coupon_id) && !internal_ok) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "method_id",
                              "balance and coupons need a known buyer and are not for top-ups");
        return;
    }
    int64_t coupon_amount = 0;
    if (coupon_id) {
        json_t *c = pc_cashier_coupon(v, coupon_id);
        if (!c || json_integer_value(json_object_get(c, "min_amount")) > amount) {
            pc_http_respond_error(req, PC_API_INVALID_REQUEST, "coupon_id",
                                  "this coupon cannot be used for this trade");
            return;
        }
        coupon_amount = json_integer_value(json_object_get(c, "amount"));
        if (coupon_amount > amount)
            coupon_amount = amount;
        const char *funded = json_string_value(json_object_get(c, "funded_by"));
        if (funded && !strcmp(funded, "MERCHANT"))
            snprintf(p->coupon_funder, sizeof p->coupon_funder, "%s",
                     json_string_value(json_object_get(c, "merchant_id")));
        o->coupon_id = coupon_id;
        o->coupon_amount = coupon_amount;
        o->coupon_funder = p->coupon_funder[0] ? p->coupon_funder : NULL;
    }
    if (!strcmp(p->method, "COUPON")) {
        if (coupon_amount < amount) {
            pc_http_respond_error(req, PC_API_INVALID_REQUEST, "method_id",
                                  "a coupon alone must cover the whole amount");
            return;
        }
        snprintf(p->method, sizeof p->method, "COUPON");
    } else if (!strcmp(p->method, "BALANCE")) {
        o->balance_amount = amount - coupon_amount;
        if (ref) {
            /* A named account type's balance: only this merchant's. */
            json_t *tw = pc_cashier_typed_wallet(v, ref);
            const char *owner = json_string_value(json_object_get(tw, "owner"));
            /* An owner too long for an account id names no account (cut to
             * fit, it would name another one). */
            if (!tw || !owner || strlen(owner) > PC_LEDGER_OWNER_MAX) {
                pc_http_respond_error(req, PC_API_INVALID_REQUEST, "method_id",
                                      "no such account type at this merchant");
                return;
            }
            snprintf(p->wallet_owner, sizeof p->wallet_owner, "%s", owner);
            o->wallet_owner = p->wallet_owner;
            wallet = json_integer_value(json_object_get(tw, "balance"));
        }
    } else {
        pc_pay_method_t m;
        if (pc_pay_method_parse(p->method, &m) < 0 || m == PC_METHOD_BALANCE ||
            m == PC_METHOD_COUPON) {
            pc_http_respond_error(req, PC_API_INVALID_REQUEST, "method_id", "unknown method");
            return;
        }
        if (p->balance_amount > 0 && !internal_ok) {
            pc_http_respond_error(req, PC_API_INVALID_REQUEST, "balance_amount",
                                  "balance needs a known buyer and is not for top-ups");
            return;
        }
        o->balance_amount = p->balance_amount;
        if (o->balance_amount + coupon_amount >= amount) {
            pc_http_respond_error(req, PC_API_INVALID_REQUEST, "balance_amount",
                                  "nothing would be left for the channel: pay with BALANCE");
            return;
        }
        if (m == PC_METHOD_QUICK_PAY || m == PC_METHOD_AGREEMENT) {
            json_t *card = ref ? pc_cashier_card(v, ref) : NULL;
            if (!card) {
                pc_http_respond_error(req, PC_API_INVALID_REQUEST, "method_id",
                                      "no such bound card for this buyer");
                return;
            }
            p->card_id = ref;
            o->card_id = ref;
            snprintf(p->card_token, sizeof p->card_token, "%s",
                     json_string_value(json_object_get(card, "token")));
            snprintf(p->card_brand, sizeof p->card_brand, "%s",
                     json_string_value(json_object_get(card, "brand")));
            snprintf(p->card_last4, sizeof p->card_last4, "%s",
                     json_string_value(json_object_get(card, "last4")));
            o->card_token = p->card_token;
            o->card_brand = p->card_brand;
            o->card_last4 = p->card_last4;
            /* Known by the hash of its number recorded at binding, as the
             * same card typed in is; a card bound before hashes were
             * recorded is known by its card_id (migration 0064). */
            const char *fp = json_string_value(json_object_get(card, "card_fp"));
            snprintf(p->card_key, sizeof p->card_key, "%s", fp && fp[0] ? fp : ref);
            o->card_fp = p->card_key;
            json_object_set(p->view, "chosen_card", card);
        } else if (m == PC_METHOD_CARD) {
            if (!p->has_card || !digits_only(p->card.pan, 12, 19)) {
                pc_http_respond_error(req, PC_API_INVALID_REQUEST, "card",
                                      "card: pan (12-19 digits), exp_month, exp_year, cvv");
                return;
            }
            o->card = &p->card;
            card_fingerprint(app, p->card.pan, p->card_key, sizeof p->card_key);
            o->card_fp = p->card_key;
        } else if (m == PC_METHOD_QR_BUYER) {
            if (!p->buyer_code) {
                pc_http_respond_error(req, PC_API_INVALID_REQUEST, "buyer_code",
                                      "QR_BUYER needs the buyer's payment code");
                return;
            }
            o->buyer_code = p->buyer_code;
        }
    }
    o->method_type = p->method;
    if (o->balance_amount > wallet) {
        pc_http_respond_error(req, PC_API_INSUFFICIENT_BALANCE, "balance_amount",
                              "the wallet balance is not enough");
        return;
    }
    /* The buyer's own limits first, then the card's. */
    int buyer_hit = pc_cashier_limit(app, v, 0, NULL, amount) != NULL;
    if (buyer_hit || pc_cashier_limit(app, v, p->has_card || p->card_id, p->card_id, amount)) {
        pc_http_respond_error(req, PC_API_LIMIT_EXCEEDED, NULL,
                              pc_engine_limit_message(buyer_hit ? "buyer" : "card"));
        return;
    }
    gather(p);
}

/* ---------- challenge: the second accept ---------- */

typedef struct {
    pay_t *p;
    char payment_no[40];
} chal_t;

static void challenge_cb(void *data, int status, pc_db_res_t *res)
{
    pay_t *p = data;
    if (status) {
        pc_respond_db_error(p->req, status);
        return;
    }
    if (pc_db_rows(res) == 0 || strcmp(pc_db_get(res, 0, 1), "PASSED") != 0) {
        /* A card other than the one risk scored counts as a wrong answer
         * (the challenge was not passed by the card it was issued for). */
        if (pc_db_rows(res) == 1 && strcmp(pc_db_get(res, 0, 2), "t") != 0)
            pc_http_respond_error(p->req, PC_API_INVALID_REQUEST, "card",
                                  p->has_card
                                      ? "not the card this challenge was issued for"
                                      : "this challenge was issued for a card: send the same card");
        else
            pc_http_respond_error(p->req, PC_API_INVALID_REQUEST, "challenge_answer",
                                  "wrong, expired or already used challenge");
        return;
    }
    const char *payment_no = pc_db_get(res, 0, 0);
    if (pc_engine_continue(p->app->engine, payment_no, "CHALLENGE", p->has_card ? &p->card : NULL,
                           NULL, answer_engine, p->req) < 0)
        pc_http_respond_error(p->req, PC_API_UNAVAILABLE, NULL, "could not continue");
}

static void answer_challenge(pay_t *p)
{
    char hash[PC_SHA256_HEX_LEN + 1], buf[200];
    snprintf(buf, sizeof buf, "%s:%s", p->challenge_id, p->challenge_answer);
    pc_sha256_hex(buf, strlen(buf), hash);
    if (p->has_card && p->card.pan)
        card_fingerprint(p->app, p->card.pan, p->card_key, sizeof p->card_key);
    const char *claim[3];
    pc_idem_claim_params(pc_auth_idem(p->req), claim);
    const char *q[] = {p->challenge_id, hash,     p->trade_no, p->card_key[0] ? p->card_key : NULL,
                       p->merchant_id,  claim[0], claim[1],    claim[2]};
    /* One statement: a wrong answer (or another card than the one scored)
     * counts, a right one passes once; only for a challenge of this trade of
     * this merchant (another's answer, even with the right code, neither
     * passes nor uses up a challenge that is not its own). A right one is
     * recorded on the request's key with it (effect_ref): a retry of this
     * request finds its challenge used, and is answered with the payment it
     * passed rather than refused as a wrong answer. */
    if (pc_db_query(p->app->db,
                    "WITH c AS (UPDATE challenges SET attempts = attempts + 1, status = CASE WHEN "
                    "code_hash = $2 AND card_key IS NOT DISTINCT FROM $4 THEN 'PASSED' WHEN "
                    "attempts + 1 >= 5 THEN 'FAILED' ELSE status END WHERE challenge_id = $1 AND "
                    "status = 'OPEN' AND expires_at > now() AND payment_no IN (SELECT "
                    "payment_no FROM payments WHERE trade_no = $3 AND merchant_id = $5) "
                    "RETURNING payment_no, status, card_key IS NOT DISTINCT FROM $4 AS same_card), "
                    "e AS (UPDATE idempotency_keys k SET effect_ref = c.payment_no FROM c WHERE "
                    "c.status = 'PASSED' AND k.merchant_id = $6 AND k.idem_key = $7 AND "
                    "k.lock_token = $8 AND k.status = 'IN_PROGRESS') "
                    "SELECT c.payment_no, c.status, c.same_card FROM c",
                    8, q, challenge_cb, p) < 0)
        pc_respond_db_error(p->req, PC_EUNAVAIL);
}

/* ---------- step 1: the request ---------- */

pc_api_err_t pc_pay_request_parse(json_t *b, pc_pay_request_t *r, const char **field,
                                  const char **message)
{
    memset(r, 0, sizeof *r);
    *field = NULL;
    *message = NULL;
    if (!json_is_object(b)) {
        *message = "body must be a JSON object";
        return PC_API_INVALID_REQUEST;
    }
    int bad = 0;
    /* Each member checked on its own, so that the answer names it. */
#define PAY_STR(dst, obj, name, shown, max, ids, why)                                              \
    do {                                                                                           \
        (dst) = pc_json_str((obj), (name), (max), (ids), &bad);                                    \
        if (bad) {                                                                                 \
            *field = (shown);                                                                      \
            *message = (why);                                                                      \
            return PC_API_INVALID_REQUEST;                                                         \
        }                                                                                          \
    } while (0)
    static const char ID64[] = "1-64 of [A-Za-z0-9_-]";
    PAY_STR(r->trade_no, b, "trade_no", "trade_no", 64, 1, ID64);
    PAY_STR(r->buyer_id, b, "buyer_id", "buyer_id", 64, 1, ID64);
    PAY_STR(r->method_id, b, "method_id", "method_id", 100, 0,
            "1-100 characters, as consult lists");
    PAY_STR(r->coupon_id, b, "coupon_id", "coupon_id", 64, 1, ID64);
    PAY_STR(r->buyer_code, b, "buyer_code", "buyer_code", 64, 1, ID64);
    PAY_STR(r->challenge_id, b, "challenge_id", "challenge_id", 64, 1, ID64);
    PAY_STR(r->challenge_answer, b, "challenge_answer", "challenge_answer", 16, 0,
            "1-16 characters");
    if (!r->trade_no) {
        *field = "trade_no";
        *message = "trade_no is required";
        return PC_API_INVALID_REQUEST;
    }
    if (!r->method_id && !r->challenge_id) {
        *field = "method_id";
        *message = "method_id is required (or challenge_id with challenge_answer)";
        return PC_API_INVALID_REQUEST;
    }
    if (pc_json_int(b, "balance_amount", 0, 1000000000000000LL, &r->balance_amount) < 0) {
        *field = "balance_amount";
        *message = "a non-negative integer";
        return PC_API_INVALID_REQUEST;
    }
    json_t *card = json_object_get(b, "card");
    if (card && !json_is_null(card)) {
        long long m = 0, y = 0;
        const char *pan = json_is_object(card) ? pc_json_str(card, "pan", 19, 0, &bad) : NULL;
        const char *cvv = json_is_object(card) ? pc_json_str(card, "cvv", 4, 0, &bad) : NULL;
        if (!pan || bad || pc_json_int(card, "exp_month", 1, 12, &m) != 0 ||
            pc_json_int(card, "exp_year", 2000, 2199, &y) != 0 || !cvv || !digits_only(cvv, 3, 4)) {
            *field = "card";
            *message = "card: pan, exp_month, exp_year, cvv";
            return PC_API_INVALID_REQUEST;
        }
        const char *holder = pc_json_str(card, "holder_name", 64, 0, &bad);
        if (bad) {
            /* Said here: left set, the flag was reported as the next field's
             * (client.ip). */
            *field = "card.holder_name";
            *message = "1-64 bytes of text (letters beyond Latin take 2-4 bytes each)";
            return PC_API_INVALID_REQUEST;
        }
        r->card = (pc_ch_card_t){pan, (int)m, (int)y, cvv, holder};
        r->has_card = 1;
    }
    json_t *client = json_object_get(b, "client");
    if (client && !json_is_null(client) && !json_is_object(client)) {
        *field = "client";
        *message = "an object {ip, device_id, platform}";
        return PC_API_INVALID_REQUEST;
    }
    if (client) {
        PAY_STR(r->ip, client, "ip", "client.ip", 64, 0, "1-64 characters");
        /* Counted and matched in canonical form: a text that is no address
         * ("1.2.3.4 ", "1.2.3.4, 10.0.0.1") made a counter of its own and
         * missed the block on 1.2.3.4. */
        char canon[INET6_ADDRSTRLEN];
        if (r->ip && pc_ip_canonical(r->ip, canon, sizeof canon) < 0) {
            *field = "client.ip";
            *message = "an IPv4 or IPv6 address";
            return PC_API_INVALID_REQUEST;
        }
        PAY_STR(r->device, client, "device_id", "client.device_id", 128, 0, "1-128 characters");
        PAY_STR(r->platform, client, "platform", "client.platform", 8, 0, "WEB, H5 or APP");
        if (r->platform && strcmp(r->platform, "WEB") && strcmp(r->platform, "H5") &&
            strcmp(r->platform, "APP")) {
            *field = "client.platform";
            *message = "WEB, H5 or APP";
            return PC_API_INVALID_REQUEST;
        }
    }
#undef PAY_STR
    return PC_API_OK;
}

static void continued_again_cb(void *data, pc_api_err_t err, const char *message, json_t *payment)
{
    pay_t *p = data;
    if (err != PC_API_INVALID_STATE) {
        answer_engine(p->req, err, message, payment);
        return;
    }
    if (pc_engine_get(p->app->engine, p->sent, p->merchant_id, answer_engine, p->req) < 0)
        pc_respond_db_error(p->req, PC_EUNAVAIL);
}

void pc_cashier_pay_run(pc_app_t *app, pc_http_req_t *req, const char *merchant_id, json_t *b,
                        int peer_is_buyer)
{
    pay_t *p = pc_http_req_alloc(req, sizeof *p);
    p->req = req;
    p->app = app;
    p->merchant_id = merchant_id;
    p->peer_is_buyer = peer_is_buyer;
    p->versions = json_object();
    pc_http_req_on_done(req, pay_free, p);
    pc_pay_request_t r;
    const char *field, *message;
    pc_api_err_t err = pc_pay_request_parse(b, &r, &field, &message);
    if (err != PC_API_OK) {
        pc_http_respond_error(req, err, field, message);
        return;
    }
    /* This very request ran before and sent its payment to the channel (or
     * passed its challenge) without its answer being recorded: the answer is
     * that payment, not a second one. */
    const char *sent = pc_idem_effect(pc_auth_idem(req));
    if (sent) {
        snprintf(p->sent, sizeof p->sent, "%s", sent);
        if (r.challenge_id) {
            /* Its challenge passed, the payment may not have gone on (the
             * node died, or the continue failed): it goes on now, with the
             * card sent again. One that went on is INVALID_STATE there, and
             * answered as it stands. */
            p->card = r.card;
            p->has_card = r.has_card;
            if (pc_engine_continue(app->engine, p->sent, "CHALLENGE", p->has_card ? &p->card : NULL,
                                   NULL, continued_again_cb, p) < 0)
                pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "could not continue");
            return;
        }
        if (pc_engine_get(app->engine, p->sent, merchant_id, answer_engine, req) < 0)
            pc_respond_db_error(req, PC_EUNAVAIL);
        return;
    }
    /* A card typed in pays only as a new card (or comes again with the
     * answer to its challenge). Sent with another method it was tokenized
     * when the payment was held for review and charged in place of the
     * method's own on release, past that card's limits and velocity (only
     * the chosen method's card was checked). */
    if (r.has_card && !r.challenge_id && (!r.method_id || strcmp(r.method_id, "CARD") != 0)) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "card",
                              "card is only for method_id CARD (a new card); a bound card is "
                              "paid with by its method_id alone");
        return;
    }
    p->trade_no = r.trade_no;
    p->buyer_id = r.buyer_id;
    p->method_id = r.method_id;
    p->coupon_id = r.coupon_id;
    p->buyer_code = r.buyer_code;
    p->challenge_id = r.challenge_id;
    p->challenge_answer = r.challenge_answer;
    p->balance_amount = r.balance_amount;
    p->card = r.card;
    p->has_card = r.has_card;
    p->ip = r.ip;
    p->device = r.device;
    p->platform = r.platform;
    /* Without client.ip the merchant's own server's address was counted as
     * every buyer's: a merchant making 20 pays an hour had each challenged
     * or held for IP velocity, and an IP block list entry blocked it all. */
    if (!p->ip && peer_is_buyer)
        p->ip = pc_http_req_client_ip(req);
    if (p->challenge_id) {
        if (!p->challenge_answer) {
            pc_http_respond_error(req, PC_API_INVALID_REQUEST, "challenge_answer",
                                  "the challenge answer is required");
            return;
        }
        answer_challenge(p);
        return;
    }
    if (pc_cashier_load(p->app, merchant_id, p->trade_no, p->buyer_id, view_parts(p), loaded_cb,
                        p) < 0)
        pc_respond_db_error(req, PC_EUNAVAIL);
}

static void pay(pc_http_req_t *req, void *data)
{
    json_t *b = pc_http_req_json(req);
    if (!b) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, NULL, "body must be a JSON object");
        return;
    }
    pc_cashier_pay_run(data, req, pc_auth_merchant(req)->id, b, 0);
}

/* ---------- GET /v1/payments/{payment_no} ---------- */

static void get_payment(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    if (pc_engine_get(app->engine, pc_http_req_param(req, "payment_no"), pc_auth_merchant(req)->id,
                      answer_engine, req) < 0)
        pc_respond_db_error(req, PC_EUNAVAIL);
}

/* ---------- POST /v1/buyers/{buyer_id}/cards ---------- */

typedef struct {
    pc_http_req_t *req;
    pc_app_t *app;
    char channel[33];
    char card_id[40];
    char card_fp[40]; /* the keyed hash of the number: the card's daily limit */
    int exp_month, exp_year;
    const char *pan; /* the request body's: read only until tokenize is sent */
    const char *holder;
    /* The number's first 8 digits (a number of 16 or more: PCI DSS lets
     * them be kept with the last four), "" else: an 8-digit block-list
     * entry reaches the bound card too (the channel gives 6). */
    char bin8[9];
} bind_t;

static void bound_cb(void *data, int status, pc_db_res_t *res)
{
    bind_t *b = data;
    if (status == PC_EIO && !strcmp(pc_db_sqlstate(res), "23503")) {
        pc_http_respond_error(b->req, PC_API_NOT_FOUND, "buyer_id", "no such buyer");
        return;
    }
    if (status) {
        pc_respond_db_error(b->req, status);
        return;
    }
    /* The channel's token is per card: a card bound to another buyer stays
     * theirs (its card_id, limits and history), and is not handed over. */
    if (pc_db_rows(res) == 0) {
        pc_http_respond_error(b->req, PC_API_INVALID_STATE, "pan",
                              "this card is bound to another buyer");
        return;
    }
    pc_respond_json_text(b->req, 201, pc_db_get(res, 0, 0));
}

static void bind_token_cb(void *data, const pc_ch_result_t *r)
{
    bind_t *b = data;
    if (r->status != PC_CH_SUCCESS || !r->card_token[0]) {
        pc_http_respond_error(
            b->req, r->status == PC_CH_UNKNOWN ? PC_API_UNAVAILABLE : PC_API_INVALID_REQUEST, "pan",
            r->code[0] ? r->code : "the card could not be bound");
        return;
    }
    char m[8], y[8], hex[17];
    snprintf(m, sizeof m, "%d", b->exp_month);
    snprintf(y, sizeof y, "%d", b->exp_year);
    pc_random_hex(hex, sizeof hex, 8);
    snprintf(b->card_id, sizeof b->card_id, "card_%s", hex);
    const char *q[] = {
        b->card_id,
        pc_http_req_param(b->req, "buyer_id"),
        b->channel,
        r->card_token,
        r->card_brand,
        b->bin8[0] && !strncmp(b->bin8, r->card_bin, strlen(r->card_bin)) ? b->bin8 : r->card_bin,
        r->card_last4,
        m,
        y,
        b->holder,
        b->card_fp,
        pc_auth_merchant(b->req)->id};
    /* The card is the binding merchant's (migration 0091): bound again by
     * it for the same buyer, it is the same row. */
    if (pc_db_query(b->app->db,
                    "WITH c AS (INSERT INTO cards (card_id, buyer_id, channel_id, token, brand, "
                    "bin, last4, exp_month, exp_year, holder, card_fp, merchant_id) VALUES ($1, "
                    "$2, $3, $4, $5, $6, $7, $8::int, $9::int, $10, $11, $12) ON CONFLICT ON "
                    "CONSTRAINT cards_token_unique DO UPDATE "
                    "SET status = 'ACTIVE', card_fp = EXCLUDED.card_fp, exp_month = "
                    "EXCLUDED.exp_month, exp_year = EXCLUDED.exp_year, holder = "
                    "coalesce(EXCLUDED.holder, cards.holder), bin = CASE WHEN "
                    "length(EXCLUDED.bin) > length(cards.bin) THEN EXCLUDED.bin ELSE cards.bin "
                    "END WHERE cards.buyer_id = "
                    "EXCLUDED.buyer_id RETURNING card_id, brand, "
                    "bin, last4) SELECT json_build_object("
                    "'card_id', c.card_id, 'brand', c.brand, 'last4', c.last4, 'issuer', "
                    "b.issuer, 'card_type', b.card_type, 'country', b.country, 'province', "
                    "b.province)::text FROM c LEFT JOIN LATERAL (SELECT * FROM card_bins k WHERE "
                    "k.bin = left(c.bin, 8) OR k.bin = left(c.bin, 6) ORDER BY length(k.bin) DESC "
                    "LIMIT 1) b ON true",
                    12, q, bound_cb, b) < 0)
        pc_respond_db_error(b->req, PC_EUNAVAIL);
}

/* The buyer exists and may bind: only then does the number go to a channel. */
static void bind_buyer_cb(void *data, int status, pc_db_res_t *res)
{
    bind_t *b = data;
    pc_app_t *app = b->app;
    pc_http_req_t *req = b->req;
    if (status) {
        pc_respond_db_error(req, status);
        return;
    }
    if (pc_db_rows(res) == 0) {
        pc_http_respond_error(req, PC_API_NOT_FOUND, "buyer_id", "no such buyer");
        return;
    }
    if (!strcmp(pc_db_get(res, 0, 0), "BLOCKED")) {
        pc_http_respond_error(req, PC_API_INVALID_STATE, "buyer_id", "this buyer is blocked");
        return;
    }
    card_fingerprint(app, b->pan, b->card_fp, sizeof b->card_fp);
    if (strlen(b->pan) >= 16)
        snprintf(b->bin8, sizeof b->bin8, "%.8s", b->pan);
    /* Bind at a channel that offers quick pay, in whatever currency it
     * takes (tokenizing moves no money): the one taking the most currencies
     * (a card bound there can pay in most of them), then the heaviest. */
    const pc_channel_t *match[PC_CHANNELS_MAX];
    size_t n =
        pc_channels_match(app->channels, PC_METHOD_QUICK_PAY, NULL, 0, match, PC_CHANNELS_MAX);
    const pc_channel_t *best = NULL;
    for (size_t i = 0; i < n && i < PC_CHANNELS_MAX; i++)
        if (!best || match[i]->ncurrencies > best->ncurrencies ||
            (match[i]->ncurrencies == best->ncurrencies && match[i]->weight > best->weight))
            best = match[i];
    if (!best) {
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "no channel can bind cards now");
        return;
    }
    snprintf(b->channel, sizeof b->channel, "%s", best->id);
    pc_ch_card_t card = {b->pan, b->exp_month, b->exp_year, NULL, b->holder};
    if (pc_channel_tokenize(app->channel_client, b->channel, &card, bind_token_cb, b) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "channel unavailable");
}

static void bind_card(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    json_t *body = pc_http_req_json(req);
    int bad = 0;
    long long m = 0, y = 0;
    const char *pan = body ? pc_json_str(body, "pan", 19, 0, &bad) : NULL;
    if (!body) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, NULL, "body must be a JSON object");
        return;
    }
    if (!pan || bad || !digits_only(pan, 12, 19)) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "pan", "pan: 12-19 digits");
        return;
    }
    if (pc_json_int(body, "exp_month", 1, 12, &m) != 0) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "exp_month", "exp_month: 1-12");
        return;
    }
    if (pc_json_int(body, "exp_year", 2000, 2199, &y) != 0) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "exp_year",
                              "exp_year: four digits, e.g. 2030");
        return;
    }
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    if (y * 12 + m < (tm.tm_year + 1900LL) * 12 + tm.tm_mon + 1) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "exp_year", "the card has expired");
        return;
    }
    json_t *holder = json_object_get(body, "holder_name");
    const char *h = pc_json_str(body, "holder_name", 64, 0, &bad);
    if (holder && !json_is_null(holder) && (!h || bad || !pc_printable(h, 64))) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "holder_name",
                              "holder_name: 1-64 printable characters");
        return;
    }
    bind_t *b = pc_http_req_alloc(req, sizeof *b);
    b->req = req;
    b->app = app;
    b->exp_month = (int)m;
    b->exp_year = (int)y;
    b->pan = pan;
    b->holder = h;
    const char *p[] = {pc_http_req_param(req, "buyer_id")};
    if (pc_db_query(app->db, "SELECT " PC_BUYER_STATUS_SQL " FROM buyers b WHERE b.buyer_id = $1",
                    1, p, bind_buyer_cb, b) < 0)
        pc_respond_db_error(req, PC_EUNAVAIL);
}

/* ---------- POST /channel-callbacks/{channel_id} ---------- */

static void callback_applied(void *data, pc_api_err_t err, const char *message, json_t *payment)
{
    pc_http_req_t *req = data;
    json_decref(payment);
    if (err == PC_API_UNAVAILABLE || err == PC_API_INTERNAL) {
        /* Not applied: the channel retries. */
        pc_http_respond_error(req, err, NULL, message);
        return;
    }
    static const char ok[] = "{\"result\":\"success\"}";
    pc_http_respond(req, 200, "application/json", ok, sizeof ok - 1);
}

static void channel_callback(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    size_t len;
    const char *body = pc_http_req_body(req, &len);
    pc_ch_callback_t cb;
    const char *why = NULL;
    const char *ch = pc_http_req_param(req, "channel_id");
    int rc = pc_channel_verify_callback(
        app->channel_client, ch, pc_http_req_method(req), pc_http_req_target(req),
        pc_http_req_header(req, "X-Timestamp"), pc_http_req_header(req, "X-Nonce"),
        pc_http_req_header(req, "X-Signature"), body, len, &cb, &why);
    if (rc == PC_ENOTFOUND) {
        pc_http_respond_error(req, PC_API_NOT_FOUND, NULL, "unknown channel");
        return;
    }
    if (rc < 0) {
        const char *peer = pc_http_req_client_ip(req);
        pc_log_warn("callback.refused", "channel %s: %s (from %s)", ch, why ? why : "invalid",
                    peer ? peer : "?");
        pc_channel_callback_seen(app->channel_client, ch, 0, why, peer);
        pc_http_respond_error(req, PC_API_INVALID_SIGNATURE, NULL, why ? why : "invalid callback");
        return;
    }
    pc_metrics_add("pc_channel_callbacks_total", "", 1);
    pc_channel_callback_seen(app->channel_client, ch, 1, NULL, NULL);
    if (cb.kind == PC_CB_PAYMENT) {
        if (pc_engine_apply(app->engine, ch, cb.ref, &cb.result, callback_applied, req) < 0)
            pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "try again");
        return;
    }
    if (cb.kind == PC_CB_REFUND && app->on_refund_callback) {
        app->on_refund_callback(app, &cb, req);
        return;
    }
    if (cb.kind == PC_CB_PAYOUT && app->on_payout_callback) {
        app->on_payout_callback(app, &cb, req);
        return;
    }
    static const char ok[] = "{\"result\":\"ignored\"}";
    pc_http_respond(req, 200, "application/json", ok, sizeof ok - 1);
}

/* ---------- ops: reviews and challenges ---------- */

static void list_reviews_cb(void *data, int status, pc_db_res_t *res)
{
    pc_http_req_t *req = data;
    if (status) {
        pc_respond_db_error(req, status);
        return;
    }
    pc_respond_json_text(req, 200, pc_db_get(res, 0, 0));
}

static void list_reviews(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    /* The oldest 200 and how many wait in all: the console reads this at
     * every redraw, and a fraud wave can hold thousands. */
    if (pc_db_query(
            app->db,
            "SELECT json_build_object('reviews', coalesce((SELECT json_agg(json_build_object("
            "'payment_no', payment_no, 'trade_no', trade_no, 'merchant_id', merchant_id, "
            "'buyer_id', buyer_id, 'amount', amount, 'currency', currency, 'method', "
            "method_type, 'risk_score', risk_score, 'risk_reasons', risk_reasons, "
            "'created_at', to_char(created_at AT TIME ZONE 'UTC', "
            "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')) ORDER BY created_at) FROM (SELECT * FROM payments "
            "WHERE status = 'REVIEW' ORDER BY created_at LIMIT 200) p), '[]'), 'total', "
            "(SELECT count(*) FROM payments WHERE status = 'REVIEW'))::text",
            0, NULL, list_reviews_cb, req) < 0)
        pc_respond_db_error(req, PC_EUNAVAIL);
}

/* Ops release or reject a payment held for review. A payment that does not
 * exist is 404 (the engine's own answer, 409 "not waiting", sent ops looking
 * for a state); the engine decides the rest under the trade's lock. */
typedef struct {
    pc_http_req_t *req;
    pc_app_t *app;
    int release;
    char why[501]; /* the body's "why", optional */
} review_t;

static void review_found_cb(void *data, int status, pc_db_res_t *res)
{
    review_t *v = data;
    pc_http_req_t *req = v->req;
    const char *no = pc_http_req_param(req, "payment_no");
    if (status) {
        pc_respond_db_error(req, status);
        return;
    }
    if (pc_db_rows(res) == 0) {
        pc_http_respond_error(req, PC_API_NOT_FOUND, NULL, "no such payment");
        return;
    }
    pc_log_info(v->release ? "review.release" : "review.reject", "payment %s %s by ops (%s)", no,
                v->release ? "released" : "rejected", pc_operator_of(req));
    /* Who and why go into review_decisions with the decision itself. */
    pc_engine_review_t who = {pc_operator_of(req), v->why[0] ? v->why : NULL};
    int rc = v->release
                 ? pc_engine_continue(v->app->engine, no, "REVIEW", NULL, &who, answer_engine, req)
                 : pc_engine_reject(v->app->engine, no, &who, answer_engine, req);
    if (rc < 0)
        pc_respond_db_error(req, PC_EUNAVAIL);
}

static void review_action(pc_http_req_t *req, pc_app_t *app, int release)
{
    size_t len = 0;
    pc_http_req_body(req, &len);
    json_t *b = len ? pc_http_req_json(req) : NULL;
    int bad = len && !b;
    const char *why = b ? pc_json_str(b, "why", 500, 0, &bad) : NULL;
    if (bad) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "why",
                              "an optional {\"why\"} of 1-500 characters");
        return;
    }
    review_t *v = pc_http_req_alloc(req, sizeof *v);
    v->req = req;
    v->app = app;
    v->release = release;
    snprintf(v->why, sizeof v->why, "%s", why ? why : "");
    const char *p[] = {pc_http_req_param(req, "payment_no")};
    if (pc_db_query(app->db, "SELECT 1 FROM payments WHERE payment_no = $1", 1, p, review_found_cb,
                    v) < 0)
        pc_respond_db_error(req, PC_EUNAVAIL);
}

static void release_review(pc_http_req_t *req, void *data)
{
    review_action(req, data, 1);
}

static void reject_review(pc_http_req_t *req, void *data)
{
    review_action(req, data, 0);
}

static void get_challenge(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    const char *q[] = {pc_http_req_param(req, "id")};
    if (pc_db_query(app->db,
                    "SELECT json_build_object('challenge_id', challenge_id, 'payment_no', "
                    "payment_no, 'status', status, 'code', demo_code)::text FROM challenges "
                    "WHERE challenge_id = $1",
                    1, q, list_reviews_cb, req) < 0)
        pc_respond_db_error(req, PC_EUNAVAIL);
}

static void blocked_cb(void *data, int status, pc_db_res_t *res)
{
    pc_http_req_t *req = data;
    if (status == PC_EIO && !strcmp(pc_db_sqlstate(res), "23514")) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "kind",
                              "kind: IP, DEVICE, CARD_BIN or BUYER");
        return;
    }
    if (status) {
        pc_respond_db_error(req, status);
        return;
    }
    /* Who listed it (X-Operator): before, nothing kept it. */
    pc_log_warn("risk.block_listed", "%s listed by %s", pc_db_get(res, 0, 0), pc_operator_of(req));
    pc_respond_json_text(req, 201, pc_db_get(res, 0, 0));
}

static void add_block(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    json_t *b = pc_http_req_json(req);
    int bad = 0;
    const char *kind = b ? pc_json_str(b, "kind", 16, 0, &bad) : NULL;
    const char *value = b ? pc_json_str(b, "value", 128, 0, &bad) : NULL;
    const char *reason = b ? pc_json_str(b, "reason", 500, 0, &bad) : NULL;
    if (!kind || !value || bad) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, NULL, "kind and value are required");
        return;
    }
    /* An entry that can never match is refused: it would look like a block
     * while the fraud it was meant to stop went on (a 7-digit BIN, an IP
     * with a typo). IP entries are kept in canonical text, as pay compares
     * them. */
    char ip[INET6_ADDRSTRLEN + 4];
    size_t vlen = strlen(value);
    if (!strcmp(kind, "CARD_BIN") &&
        ((vlen != 6 && vlen != 8) || strspn(value, "0123456789") != vlen)) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "value",
                              "CARD_BIN: the first 6 or 8 digits of a card number");
        return;
    }
    if (!strcmp(kind, "BUYER") && !pc_id_valid(value, 64)) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "value",
                              "BUYER: a buyer id, 1-64 of [A-Za-z0-9_-]");
        return;
    }
    if (!strcmp(kind, "IP")) {
        if (pc_ip_block_value(value, ip, sizeof ip) < 0) {
            pc_http_respond_error(req, PC_API_INVALID_REQUEST, "value",
                                  "IP: an IPv4 or IPv6 address, or an IPv6 /64 "
                                  "(2001:db8:1:2::/64)");
            return;
        }
        value = ip;
    }
    const char *q[] = {kind, value, reason};
    if (pc_db_query(app->db,
                    "WITH b AS (INSERT INTO block_list (kind, value, reason) VALUES ($1, $2, $3) "
                    "ON CONFLICT (kind, value) DO UPDATE SET reason = coalesce(EXCLUDED.reason, "
                    "block_list.reason) RETURNING "
                    "*) SELECT json_build_object('kind', kind, 'value', value, 'reason', "
                    "reason)::text FROM b",
                    3, q, blocked_cb, req) < 0)
        pc_respond_db_error(req, PC_EUNAVAIL);
}

void pc_app_routes_pay(pc_app_t *app)
{
    pc_router_add(app->admin, "POST", "/admin/block-list", add_block, app);
    pc_metrics_describe("pc_risk_decisions_total", PC_METRIC_COUNTER, "risk decisions");
    pc_metrics_describe("pc_channel_callbacks_total", PC_METRIC_COUNTER,
                        "verified channel callbacks");
    pc_router_add(app->api, "POST", "/v1/cashier/pay", pay, app);
    pc_router_add(app->api, "GET", "/v1/payments/{payment_no}", get_payment, app);
    pc_router_add(app->api, "POST", "/v1/buyers/{buyer_id}/cards", bind_card, app);
    pc_router_add(app->api, "POST", "/channel-callbacks/{channel_id}", channel_callback, app);
    pc_router_add(app->admin, "GET", "/admin/reviews", list_reviews, app);
    pc_router_add(app->admin, "POST", "/admin/payments/{payment_no}/release", release_review, app);
    pc_router_add(app->admin, "POST", "/admin/payments/{payment_no}/reject", reject_review, app);
    pc_router_add(app->admin, "GET", "/admin/challenges/{id}", get_challenge, app);
}
