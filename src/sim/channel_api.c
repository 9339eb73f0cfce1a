/* The channel API, /ch/{channel_id}/…, as paycore's adapters call it: a
 * filter that finds the channel, checks the signature and nonce and adds the
 * configured latency; then pay, query, close, refund, payout, tokenize, and
 * the daily statement and chargeback files. Money operations roll the
 * channel's timeout faults first; answers are signed (sim.c). */
#include "auth/sign.h"
#include "core/error.h"
#include "core/log.h"
#include "cardbin/cardbin.h"
#include "sim/sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_AMOUNT 1000000000000LL /* 10^12 minor units: far above any real payment */
#define DEFAULT_EXPIRE_S 900
#define MIN_EXPIRE_S 1
#define MAX_EXPIRE_S 604800
#define CHALLENGE_EXPIRE_S 900
#define MAX_CALLBACK_BASE 400

typedef struct {
    const char *field;
    const char *why;
} bad_t;

static bool bad_field(bad_t *bad, const char *field, const char *why)
{
    bad->field = field;
    bad->why = why;
    return false;
}

/* ---- Field readers: each returns false and fills bad when the field is
 * present but wrong, or absent but required. ---------------------------- */

static bool printable(const char *s)
{
    for (; *s; s++)
        if (*s < 0x21 || *s > 0x7e)
            return false;
    return true;
}

static bool get_string(json_t *o, const char *name, bool required, size_t max, const char **out,
                       bad_t *bad)
{
    json_t *v = json_object_get(o, name);
    *out = NULL;
    if (!v || json_is_null(v))
        return required ? bad_field(bad, name, "is required") : true;
    if (!json_is_string(v))
        return bad_field(bad, name, "must be a string");
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    if (len == 0 || len > max || strlen(s) != len)
        return bad_field(bad, name, "has a bad length");
    *out = s;
    return true;
}

/* paycore's numbers: 1–64 printable ASCII characters without spaces. */
static bool get_number(json_t *o, const char *name, bool required, const char **out, bad_t *bad)
{
    if (!get_string(o, name, required, PC_SIM_NO_LEN - 1, out, bad))
        return false;
    if (*out && !printable(*out))
        return bad_field(bad, name, "must be printable ASCII without spaces");
    return true;
}

static bool get_amount(json_t *o, const char *name, int64_t *out, bad_t *bad)
{
    json_t *v = json_object_get(o, name);
    if (!v)
        return bad_field(bad, name, "is required");
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > MAX_AMOUNT)
        return bad_field(bad, name, "must be an integer number of minor units, 1 to 10^12");
    *out = json_integer_value(v);
    return true;
}

static bool get_int(json_t *o, const char *name, bool required, int64_t lo, int64_t hi,
                    int64_t *out, bad_t *bad)
{
    json_t *v = json_object_get(o, name);
    if (!v || json_is_null(v))
        return required ? bad_field(bad, name, "is required") : true;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return bad_field(bad, name, "is out of range");
    *out = json_integer_value(v);
    return true;
}

static bool get_currency(json_t *o, bool required, const char **out, bad_t *bad)
{
    if (!get_string(o, "currency", required, 3, out, bad))
        return false;
    const char *c = *out;
    if (c && (strlen(c) != 3 || c[0] < 'A' || c[0] > 'Z' || c[1] < 'A' || c[1] > 'Z' ||
              c[2] < 'A' || c[2] > 'Z'))
        return bad_field(bad, "currency", "must be an ISO 4217 code in upper case");
    return true;
}

static bool all_digits(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

static bool alnum_only(const char *s)
{
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z')))
            return false;
    return true;
}

/* callback_base: an http(s) URL, interned; NULL when absent (paysim's default). */
static bool get_callback_base(pc_sim_t *sim, json_t *o, const char **out, bad_t *bad)
{
    const char *s;
    if (!get_string(o, "callback_base", false, MAX_CALLBACK_BASE, &s, bad))
        return false;
    *out = NULL;
    if (!s)
        return true;
    if ((strncmp(s, "http://", 7) != 0 && strncmp(s, "https://", 8) != 0) || !printable(s))
        return bad_field(bad, "callback_base", "must be an http:// or https:// URL");
    char copy[MAX_CALLBACK_BASE + 1];
    snprintf(copy, sizeof copy, "%s", s);
    size_t n = strlen(copy);
    while (n > 0 && copy[n - 1] == '/')
        copy[--n] = 0;
    *out = pc_sim_store_intern(sim->store, copy);
    if (!*out)
        return bad_field(bad, "callback_base", "too many distinct callback bases");
    return true;
}

/* ---- Faults and answers ------------------------------------------------------ */

static void hold_due(pc_sim_task_t *task, bool cancelled)
{
    (void)cancelled;
    pc_sim_reply_error(task->req, task->ch, PC_SIM_TIMEOUT, NULL,
                       "the channel did not answer in time; the outcome is unknown until queried");
}

/* Answers only after hang_ms, with a 504 that a client past its own timeout
 * never sees: the request "timed out". */
static void hold(pc_sim_t *sim, pc_http_req_t *req, pc_sim_channel_t *ch)
{
    pc_sim_task_t *task = pc_sim_task_start(sim, (uint64_t)ch->faults.hang_ms, hold_due);
    if (!task) {
        pc_sim_reply_error(req, ch, PC_SIM_UNAVAILABLE, NULL, "shutting down");
        return;
    }
    task->req = req;
    task->ch = ch;
    task->counted_held = true;
    sim->stats.held++;
}

/* The timeout fault: nothing happens, and no answer comes. */
static bool lose_request(pc_sim_t *sim, pc_http_req_t *req, pc_sim_channel_t *ch, pc_sim_kind_t op,
                         const char *no)
{
    if (!pc_sim_rng_chance(&ch->rng, ch->faults.timeout_bps))
        return false;
    pc_sim_txn_t *have = pc_sim_txn_by_no(ch, op, no);
    pc_sim_fake(sim, ch, "TIMEOUT", op, have ? have->ref : NULL, no, NULL);
    hold(sim, req, ch);
    return true;
}

/* Answers with t, or, when the success-after-timeout fault hit, holds the
 * answer although t stands. */
static void answer(pc_sim_t *sim, pc_http_req_t *req, pc_sim_channel_t *ch, pc_sim_txn_t *t,
                   bool late)
{
    if (late) {
        pc_sim_fake(sim, ch, "SUCCESS_AFTER_TIMEOUT", t->kind, t->ref, t->no, NULL);
        hold(sim, req, ch);
        return;
    }
    pc_sim_reply_json(req, ch, 200, pc_sim_txn_json(sim, t));
}

static void reply_bad(pc_http_req_t *req, pc_sim_channel_t *ch, const bad_t *bad)
{
    pc_sim_reply_error(req, ch, PC_SIM_INVALID_REQUEST, bad->field, bad->why);
}

static json_t *body_of(pc_http_req_t *req, pc_sim_channel_t *ch)
{
    json_t *body = pc_http_req_json(req);
    if (!body)
        pc_sim_reply_error(req, ch, PC_SIM_INVALID_REQUEST, NULL, "the body must be a JSON object");
    return body;
}

/* ---- The filter ------------------------------------------------------------------ */

static void latency_due(pc_sim_task_t *task, bool cancelled)
{
    if (cancelled)
        pc_sim_reply_error(task->req, task->ch, PC_SIM_UNAVAILABLE, NULL, "shutting down");
    else
        pc_http_next(task->req);
}

static void channel_filter(pc_http_req_t *req, void *data)
{
    pc_sim_t *sim = data;
    if (sim->stopping) {
        pc_sim_reply_error(req, NULL, PC_SIM_UNAVAILABLE, NULL, "shutting down");
        return;
    }
    const char *id = pc_http_req_param(req, "channel_id");
    pc_sim_channel_t *ch = id ? pc_sim_channel_get(sim->store, id, true) : NULL;
    if (!ch) {
        pc_sim_reply_error(req, NULL, PC_SIM_NOT_FOUND, "channel_id",
                           "channel ids are 1 to 32 of [a-z0-9_]");
        return;
    }
    size_t len;
    const char *body = pc_http_req_body(req, &len);
    const char *nonce = pc_http_req_header(req, "X-Nonce");
    const char *why = NULL;
    int64_t now = pc_sim_real_s();
    pc_sim_err_t err =
        pc_sim_verify_request(ch->secret, pc_http_req_method(req), pc_http_req_target(req),
                              pc_http_req_header(req, "X-Timestamp"), nonce,
                              pc_http_req_header(req, "X-Signature"), body, len, now, &why);
    if (err != PC_SIM_OK) {
        pc_sim_reply_error(req, ch, err, NULL, why);
        return;
    }
    int rc = pc_sim_nonces_use(ch->nonces, nonce, now);
    if (rc < 0) {
        pc_sim_reply_error(req, ch, rc == PC_ECONFLICT ? PC_SIM_NONCE_REUSED : PC_SIM_UNAVAILABLE,
                           NULL, rc == PC_ECONFLICT ? "X-Nonce was used already" : NULL);
        return;
    }
    pc_http_req_set_user(req, ch);
    if (ch->faults.latency_ms > 0) {
        pc_sim_task_t *task = pc_sim_task_start(sim, (uint64_t)ch->faults.latency_ms, latency_due);
        if (task) {
            task->req = req;
            task->ch = ch;
            return;
        }
    }
    pc_http_next(req);
}

/* ---- Cards ----------------------------------------------------------------------- */

static pc_sim_card_t *tokenize(pc_sim_t *sim, pc_sim_channel_t *ch, const char *pan, int exp_month,
                               int exp_year)
{
    char fp[33], bin[7], last4[5];
    if (pc_sim_store_fingerprint(sim->store, pan, fp) < 0)
        return NULL;
    size_t n = strlen(pan);
    snprintf(bin, sizeof bin, "%.6s", pan);
    snprintf(last4, sizeof last4, "%s", pan + n - 4);
    return pc_sim_card_put(sim->store, ch, fp, pc_card_scheme(pan), bin, last4, exp_month, exp_year,
                           pc_sim_card_rule(pan));
}

/* The card object of a request, checked for shape only; its content (Luhn,
 * expiry, CVV) is the issuer's business and ends in a decline, not a 400. */
typedef struct {
    const char *pan, *cvv;
    int64_t exp_month, exp_year;
} card_in_t;

static bool get_card(json_t *o, bool need_cvv, card_in_t *c, bad_t *bad)
{
    if (!json_is_object(o))
        return bad_field(bad, "card", "must be an object");
    return get_string(o, "pan", true, 19, &c->pan, bad) &&
           get_int(o, "exp_month", true, 1, 12, &c->exp_month, bad) &&
           get_int(o, "exp_year", true, 2000, 2199, &c->exp_year, bad) &&
           get_string(o, "cvv", need_cvv, 4, &c->cvv, bad);
}

static void copy_card(pc_sim_txn_t *t, const pc_sim_card_t *c)
{
    t->has_card = true;
    snprintf(t->card_token, sizeof t->card_token, "%s", c->token);
    snprintf(t->brand, sizeof t->brand, "%s", c->brand);
    snprintf(t->bin, sizeof t->bin, "%s", c->bin);
    snprintf(t->last4, sizeof t->last4, "%s", c->last4);
    snprintf(t->fingerprint, sizeof t->fingerprint, "%s", c->fingerprint);
    t->exp_month = c->exp_month;
    t->exp_year = c->exp_year;
}

/* ---- Pay ---------------------------------------------------------------------------- */

static const char *const g_methods[] = {"CARD", "QUICK_PAY", "AGREEMENT",   "NETBANK", "VA",
                                        "OTC",  "WALLET",    "QR_MERCHANT", "QR_BUYER"};

typedef struct {
    const char *no, *currency, *method, *card_token, *buyer_code, *callback_base;
    int64_t amount, expire_s;
    bool has_card;
    card_in_t card;
} pay_in_t;

static bool parse_pay(pc_sim_t *sim, json_t *body, pay_in_t *p, bad_t *bad)
{
    memset(p, 0, sizeof *p);
    p->expire_s = DEFAULT_EXPIRE_S;
    if (!get_number(body, "payment_no", true, &p->no, bad) ||
        !get_amount(body, "amount", &p->amount, bad) ||
        !get_currency(body, true, &p->currency, bad) ||
        !get_string(body, "method", true, 16, &p->method, bad) ||
        !get_string(body, "card_token", false, PC_SIM_REF_LEN - 1, &p->card_token, bad) ||
        !get_string(body, "buyer_code", false, 64, &p->buyer_code, bad) ||
        !get_int(body, "expire_seconds", false, MIN_EXPIRE_S, MAX_EXPIRE_S, &p->expire_s, bad) ||
        !get_callback_base(sim, body, &p->callback_base, bad))
        return false;
    bool known = false;
    for (size_t i = 0; i < sizeof g_methods / sizeof g_methods[0]; i++)
        known |= strcmp(p->method, g_methods[i]) == 0;
    if (!known)
        return bad_field(bad, "method", "is not a payment method paysim knows");
    json_t *card = json_object_get(body, "card");
    bool card_method = !strcmp(p->method, "CARD") || !strcmp(p->method, "QUICK_PAY") ||
                       !strcmp(p->method, "AGREEMENT");
    if (card && !json_is_null(card)) {
        if (strcmp(p->method, "CARD") != 0)
            return bad_field(bad, "card", "card details go with method CARD only");
        if (!get_card(card, true, &p->card, bad))
            return false;
        p->has_card = true;
    }
    if (card_method && !p->has_card && !p->card_token)
        return bad_field(bad, "card_token", "is required (or card, for method CARD)");
    if (!strcmp(p->method, "QR_BUYER")) {
        if (!p->buyer_code)
            return bad_field(bad, "buyer_code", "is required for QR_BUYER");
        if (strlen(p->buyer_code) < 6 || !alnum_only(p->buyer_code))
            return bad_field(bad, "buyer_code", "must be 6 to 64 letters or digits");
    }
    return true;
}

/* Applies the card's issuer rules; returns a failure code, or NULL with *rule
 * set. */
static const char *charge_card(pc_sim_t *sim, pc_sim_channel_t *ch, pc_sim_txn_t *t,
                               const pay_in_t *p, pc_sim_card_rule_t *rule)
{
    int64_t now = pc_sim_now_ms(sim);
    const pc_sim_card_t *card;
    if (p->has_card) {
        if (!pc_sim_pan_valid(p->card.pan))
            return "INVALID_CARD_NUMBER";
        if (pc_sim_card_expired((int)p->card.exp_month, (int)p->card.exp_year, now))
            return "EXPIRED_CARD";
        if (!pc_sim_cvv_valid(p->card.cvv))
            return "INVALID_CVV";
        card = tokenize(sim, ch, p->card.pan, (int)p->card.exp_month, (int)p->card.exp_year);
        if (!card)
            return "PROCESSING_ERROR";
    } else {
        card = pc_sim_card_get(ch, p->card_token);
        if (!card)
            return "TOKEN_NOT_FOUND";
        if (pc_sim_card_expired(card->exp_month, card->exp_year, now))
            return "EXPIRED_CARD";
    }
    copy_card(t, card);
    *rule = card->rule;
    return NULL;
}

static int random_reference(char *out, size_t size, const char *prefix, size_t nbytes, bool digits)
{
    char hex[65];
    if (nbytes * 2 + 1 > sizeof hex || pc_random_hex(hex, nbytes * 2 + 1, nbytes) < 0)
        return PC_EIO;
    if (digits) {
        /* One decimal digit per hex pair; the slight bias does not matter. */
        char d[33];
        for (size_t i = 0; i < nbytes && i + 1 < sizeof d; i++) {
            unsigned v;
            sscanf(hex + 2 * i, "%2x", &v);
            d[i] = (char)('0' + v % 10);
            d[i + 1] = 0;
        }
        snprintf(out, size, "%s%s", prefix, d);
    } else {
        snprintf(out, size, "%s%s", prefix, hex);
    }
    return 0;
}

/* Issues the reference the buyer pays with and arms expiry. */
static int start_async(pc_sim_t *sim, pc_sim_txn_t *t, const char *action, const char *prefix,
                       size_t nbytes, bool digits, int64_t expire_s)
{
    snprintf(t->action, sizeof t->action, "%s", action);
    int rc = PC_ECONFLICT;
    for (int tries = 0; tries < 8 && rc == PC_ECONFLICT; tries++) {
        char ref[PC_SIM_REFERENCE_LEN];
        if (random_reference(ref, sizeof ref, prefix, nbytes, digits) < 0)
            return PC_EIO;
        rc = pc_sim_txn_set_reference(sim->store, t, ref);
    }
    if (rc < 0)
        return rc;
    t->expires_ms = t->created_ms + expire_s * 1000;
    pc_sim_txn_expire_later(sim, t);
    return 0;
}

/* Runs a new payment as far as the channel takes it synchronously. */
static void run_payment(pc_sim_t *sim, pc_sim_channel_t *ch, pc_sim_txn_t *t, const pay_in_t *p,
                        bool late)
{
    const char *m = p->method;
    /* A late answer never reaches paycore, so a final state reached now is
     * announced by callback instead. */
    bool notify = late;
    if (pc_sim_rng_chance(&ch->rng, ch->faults.decline_bps)) {
        pc_sim_fake(sim, ch, "DECLINE", PC_SIM_PAY, t->ref, t->no, NULL);
        pc_sim_txn_finish(sim, t, PC_SIM_FAILED, "ISSUER_UNAVAILABLE", notify);
        return;
    }
    int rc = 0;
    if (!strcmp(m, "CARD") || !strcmp(m, "QUICK_PAY") || !strcmp(m, "AGREEMENT")) {
        pc_sim_card_rule_t rule;
        const char *fail = charge_card(sim, ch, t, p, &rule);
        if (fail) {
            pc_sim_txn_finish(sim, t, PC_SIM_FAILED, fail, notify);
            return;
        }
        switch (rule.behaviour) {
        case PC_SIM_CARD_DECLINE:
            pc_sim_txn_finish(sim, t, PC_SIM_FAILED, rule.code, notify);
            return;
        case PC_SIM_CARD_CHALLENGE:
            /* A merchant-initiated debit has no cardholder present to
             * challenge; the issuer lets it through. */
            if (strcmp(m, "AGREEMENT") != 0) {
                t->three_ds = true;
                rc = start_async(sim, t, "REDIRECT", "3ds_", 12, false, CHALLENGE_EXPIRE_S);
                break;
            }
            pc_sim_txn_finish(sim, t, PC_SIM_SUCCESS, NULL, notify);
            return;
        case PC_SIM_CARD_DISPUTE:
            t->dispute = true;
            pc_sim_txn_finish(sim, t, PC_SIM_SUCCESS, NULL, notify);
            return;
        case PC_SIM_CARD_APPROVE:
            pc_sim_txn_finish(sim, t, PC_SIM_SUCCESS, NULL, notify);
            return;
        }
    } else if (!strcmp(m, "NETBANK")) {
        rc = start_async(sim, t, "REDIRECT", "nb_", 12, false, p->expire_s);
    } else if (!strcmp(m, "WALLET")) {
        rc = start_async(sim, t, "REDIRECT", "wl_", 12, false, p->expire_s);
    } else if (!strcmp(m, "VA")) {
        rc = start_async(sim, t, "VA", "8808", 12, true, p->expire_s);
    } else if (!strcmp(m, "OTC")) {
        rc = start_async(sim, t, "OTC", "", 14, true, p->expire_s);
    } else if (!strcmp(m, "QR_MERCHANT")) {
        rc = start_async(sim, t, "QR", "paysim://qr/", 12, false, p->expire_s);
    } else if (!strcmp(m, "QR_BUYER")) {
        snprintf(t->action, sizeof t->action, "BUYER_CONFIRM");
        rc = pc_sim_txn_set_reference(sim->store, t, p->buyer_code);
        if (rc == 0) {
            t->expires_ms = t->created_ms + p->expire_s * 1000;
            pc_sim_txn_expire_later(sim, t);
        }
    }
    if (rc < 0) {
        pc_log_error("sim.pay", "could not issue a reference for %s: %s", t->ref, pc_strerror(rc));
        pc_sim_txn_finish(sim, t, PC_SIM_FAILED, "PROCESSING_ERROR", notify);
    }
}

static void pay_create(pc_http_req_t *req, void *data)
{
    pc_sim_t *sim = data;
    pc_sim_channel_t *ch = pc_http_req_user(req);
    json_t *body = body_of(req, ch);
    if (!body)
        return;
    pay_in_t p;
    bad_t bad;
    if (!parse_pay(sim, body, &p, &bad)) {
        reply_bad(req, ch, &bad);
        return;
    }
    if (lose_request(sim, req, ch, PC_SIM_PAY, p.no))
        return;
    bool late = pc_sim_rng_chance(&ch->rng, ch->faults.success_after_timeout_bps);
    pc_sim_txn_t *t = pc_sim_txn_by_no(ch, PC_SIM_PAY, p.no);
    if (t) {
        /* The channel's own dedupe: one payment_no is charged once. */
        if (t->amount != p.amount || strcmp(t->currency, p.currency) != 0 ||
            strcmp(t->method, p.method) != 0) {
            pc_sim_reply_error(req, ch, PC_SIM_DUPLICATE_PAYMENT_NO, "payment_no",
                               "this payment_no was used for a different payment");
            return;
        }
        answer(sim, req, ch, t, late);
        return;
    }
    if (p.buyer_code && pc_sim_txn_by_reference(sim->store, p.buyer_code)) {
        pc_sim_reply_error(req, ch, PC_SIM_REFERENCE_IN_USE, "buyer_code",
                           "this buyer code was presented already");
        return;
    }
    t = pc_sim_txn_new(sim->store, ch, PC_SIM_PAY, p.no, pc_sim_now_ms(sim));
    if (!t) {
        pc_sim_reply_error(req, ch, PC_SIM_UNAVAILABLE, NULL, "out of memory");
        return;
    }
    t->amount = p.amount;
    memcpy(t->currency, p.currency, 4);
    snprintf(t->method, sizeof t->method, "%s", p.method);
    t->callback_base = p.callback_base;
    run_payment(sim, ch, t, &p, late);
    if (t->status == PC_SIM_PROCESSING)
        pc_log_fields(PC_LOG_INFO, "sim.txn",
                      json_pack("{s:s,s:s,s:s,s:s,s:s}", "channel_id", ch->id, "kind", "PAY",
                                "channel_txn_id", t->ref, "paycore_ref", t->no, "status",
                                "PROCESSING"),
                      "waiting for the buyer");
    answer(sim, req, ch, t, late);
}

/* ---- Queries and close ----------------------------------------------------------------- */

/* The transaction of kind named by the path's {channel_txn_id}, or by the
 * query parameter no_param (payment_no, refund_no, payout_no), on this
 * channel only; answers 404 itself and returns NULL when there is none. */
static pc_sim_txn_t *find(pc_sim_t *sim, pc_http_req_t *req, pc_sim_kind_t kind,
                          const char *no_param)
{
    pc_sim_channel_t *ch = pc_http_req_user(req);
    const char *ref = pc_http_req_param(req, "channel_txn_id");
    pc_sim_txn_t *t = NULL;
    if (ref) {
        t = pc_sim_txn_by_ref(sim->store, ref);
    } else {
        const char *no = pc_http_req_query_param(req, no_param);
        if (!no) {
            pc_sim_reply_error(req, ch, PC_SIM_INVALID_REQUEST, no_param, "is required");
            return NULL;
        }
        t = pc_sim_txn_by_no(ch, kind, no);
    }
    if (!t || t->ch != ch || t->kind != kind) {
        pc_sim_reply_error(req, ch, PC_SIM_NOT_FOUND, NULL, "the channel has no such transaction");
        return NULL;
    }
    return t;
}

static void pay_get(pc_http_req_t *req, void *data)
{
    pc_sim_t *sim = data;
    pc_sim_txn_t *t = find(sim, req, PC_SIM_PAY, "payment_no");
    if (t)
        pc_sim_reply_json(req, t->ch, 200, pc_sim_txn_json(sim, t));
}

static void refund_get(pc_http_req_t *req, void *data)
{
    pc_sim_t *sim = data;
    pc_sim_txn_t *t = find(sim, req, PC_SIM_REFUND, "refund_no");
    if (t)
        pc_sim_reply_json(req, t->ch, 200, pc_sim_txn_json(sim, t));
}

static void payout_get(pc_http_req_t *req, void *data)
{
    pc_sim_t *sim = data;
    pc_sim_txn_t *t = find(sim, req, PC_SIM_PAYOUT, "payout_no");
    if (t)
        pc_sim_reply_json(req, t->ch, 200, pc_sim_txn_json(sim, t));
}

/* paycore gives up on a payment (its trade closed or expired): the buyer can
 * no longer pay it. Closing twice, or a failed payment, answers the object. */
static void pay_close(pc_http_req_t *req, void *data)
{
    pc_sim_t *sim = data;
    pc_sim_txn_t *t = find(sim, req, PC_SIM_PAY, "payment_no");
    if (!t)
        return;
    if (t->status == PC_SIM_SUCCESS) {
        pc_sim_reply_error(req, t->ch, PC_SIM_INVALID_STATE, NULL,
                           "the payment succeeded; refund it instead");
        return;
    }
    if (t->status == PC_SIM_PROCESSING)
        pc_sim_txn_finish(sim, t, PC_SIM_CLOSED, "CLOSED_BY_REQUEST", false);
    pc_sim_reply_json(req, t->ch, 200, pc_sim_txn_json(sim, t));
}

/* ---- Refund ------------------------------------------------------------------------------ */

/* Starts a refund or payout the way the channel's settings say: at once, after
 * a delay (callback), or when /sim/complete says (callback). */
static void run_delayed(pc_sim_t *sim, pc_sim_txn_t *t, int delay_ms, bool late)
{
    if (delay_ms == 0)
        pc_sim_txn_finish(sim, t, PC_SIM_SUCCESS, NULL, late);
    else if (delay_ms > 0)
        pc_sim_txn_settle_later(sim, t, (uint64_t)delay_ms);
}

static void refund_create(pc_http_req_t *req, void *data)
{
    pc_sim_t *sim = data;
    pc_sim_channel_t *ch = pc_http_req_user(req);
    json_t *body = body_of(req, ch);
    if (!body)
        return;
    const char *no, *pay_ref, *pay_no, *currency, *reason, *cb_base;
    int64_t amount;
    bad_t bad;
    if (!get_number(body, "refund_no", true, &no, &bad) ||
        !get_string(body, "channel_txn_id", false, PC_SIM_REF_LEN - 1, &pay_ref, &bad) ||
        !get_number(body, "payment_no", false, &pay_no, &bad) ||
        !get_amount(body, "amount", &amount, &bad) || !get_currency(body, false, &currency, &bad) ||
        !get_string(body, "reason", false, 256, &reason, &bad) ||
        !get_callback_base(sim, body, &cb_base, &bad)) {
        reply_bad(req, ch, &bad);
        return;
    }
    if (!pay_ref && !pay_no) {
        bad_field(&bad, "channel_txn_id", "channel_txn_id or payment_no is required");
        reply_bad(req, ch, &bad);
        return;
    }
    if (lose_request(sim, req, ch, PC_SIM_REFUND, no))
        return;
    bool late = pc_sim_rng_chance(&ch->rng, ch->faults.success_after_timeout_bps);
    pc_sim_txn_t *pay =
        pay_ref ? pc_sim_txn_by_ref(sim->store, pay_ref) : pc_sim_txn_by_no(ch, PC_SIM_PAY, pay_no);
    pc_sim_txn_t *t = pc_sim_txn_by_no(ch, PC_SIM_REFUND, no);
    if (t) {
        if (t->amount != amount || !pay || strcmp(t->parent_ref, pay->ref) != 0) {
            pc_sim_reply_error(req, ch, PC_SIM_DUPLICATE_REFUND_NO, "refund_no",
                               "this refund_no was used for a different refund");
            return;
        }
        answer(sim, req, ch, t, late);
        return;
    }
    if (!pay || pay->ch != ch || pay->kind != PC_SIM_PAY) {
        pc_sim_reply_error(req, ch, PC_SIM_NOT_FOUND, pay_ref ? "channel_txn_id" : "payment_no",
                           "the channel has no such payment");
        return;
    }
    if (pay->status != PC_SIM_SUCCESS) {
        pc_sim_reply_error(req, ch, PC_SIM_INVALID_STATE, NULL,
                           "only a successful payment can be refunded");
        return;
    }
    if (currency && strcmp(currency, pay->currency) != 0) {
        bad_field(&bad, "currency", "differs from the payment's currency");
        reply_bad(req, ch, &bad);
        return;
    }
    if (amount > pay->amount - pay->refunded) {
        pc_sim_reply_error(req, ch, PC_SIM_AMOUNT_EXCEEDS_REFUNDABLE, "amount",
                           "more than what is left to refund on the payment");
        return;
    }
    t = pc_sim_txn_new(sim->store, ch, PC_SIM_REFUND, no, pc_sim_now_ms(sim));
    if (!t) {
        pc_sim_reply_error(req, ch, PC_SIM_UNAVAILABLE, NULL, "out of memory");
        return;
    }
    /* pay may have been forgotten to make room; look it up again. */
    pay =
        pay_ref ? pc_sim_txn_by_ref(sim->store, pay_ref) : pc_sim_txn_by_no(ch, PC_SIM_PAY, pay_no);
    t->amount = amount;
    t->callback_base = cb_base;
    if (pay) {
        memcpy(t->currency, pay->currency, 4);
        snprintf(t->parent_ref, sizeof t->parent_ref, "%s", pay->ref);
        snprintf(t->parent_no, sizeof t->parent_no, "%s", pay->no);
        pay->refunded += amount;
    }
    run_delayed(sim, t, ch->faults.refund_delay_ms, late);
    answer(sim, req, ch, t, late);
}

/* ---- Payout ------------------------------------------------------------------------------ */

static void payout_create(pc_http_req_t *req, void *data)
{
    pc_sim_t *sim = data;
    pc_sim_channel_t *ch = pc_http_req_user(req);
    json_t *body = body_of(req, ch);
    if (!body)
        return;
    const char *no, *currency, *cb_base, *type, *token = NULL, *account = NULL, *bank = NULL,
                                                *name = NULL;
    int64_t amount;
    bad_t bad;
    json_t *payee = json_object_get(body, "payee");
    if (!get_number(body, "payout_no", true, &no, &bad) ||
        !get_amount(body, "amount", &amount, &bad) || !get_currency(body, true, &currency, &bad) ||
        !get_callback_base(sim, body, &cb_base, &bad)) {
        reply_bad(req, ch, &bad);
        return;
    }
    if (!json_is_object(payee)) {
        bad_field(&bad, "payee", "is required: {type, card_token | account_no, …}");
        reply_bad(req, ch, &bad);
        return;
    }
    if (!get_string(payee, "type", true, 8, &type, &bad) ||
        !get_string(payee, "card_token", false, PC_SIM_REF_LEN - 1, &token, &bad) ||
        !get_string(payee, "account_no", false, 34, &account, &bad) ||
        !get_string(payee, "bank_code", false, 15, &bank, &bad) ||
        !get_string(payee, "name", false, 128, &name, &bad)) {
        reply_bad(req, ch, &bad);
        return;
    }
    bool to_card = !strcmp(type, "CARD");
    if (!to_card && strcmp(type, "ACCOUNT") != 0)
        bad_field(&bad, "type", "must be CARD or ACCOUNT");
    else if (to_card && !token)
        bad_field(&bad, "card_token", "is required for a CARD payee");
    else if (!to_card && (!account || strlen(account) < 6 || !all_digits(account)))
        bad_field(&bad, "account_no", "must be 6 to 34 digits");
    else if (bank && !alnum_only(bank))
        bad_field(&bad, "bank_code", "must be letters or digits");
    else
        bad.field = NULL;
    if (bad.field) {
        reply_bad(req, ch, &bad);
        return;
    }
    if (lose_request(sim, req, ch, PC_SIM_PAYOUT, no))
        return;
    bool late = pc_sim_rng_chance(&ch->rng, ch->faults.success_after_timeout_bps);
    pc_sim_txn_t *t = pc_sim_txn_by_no(ch, PC_SIM_PAYOUT, no);
    if (t) {
        if (t->amount != amount || strcmp(t->currency, currency) != 0) {
            pc_sim_reply_error(req, ch, PC_SIM_DUPLICATE_PAYOUT_NO, "payout_no",
                               "this payout_no was used for a different payout");
            return;
        }
        answer(sim, req, ch, t, late);
        return;
    }
    t = pc_sim_txn_new(sim->store, ch, PC_SIM_PAYOUT, no, pc_sim_now_ms(sim));
    if (!t) {
        pc_sim_reply_error(req, ch, PC_SIM_UNAVAILABLE, NULL, "out of memory");
        return;
    }
    t->amount = amount;
    memcpy(t->currency, currency, 4);
    t->callback_base = cb_base;
    snprintf(t->payee_type, sizeof t->payee_type, "%s", type);
    if (bank)
        snprintf(t->bank_code, sizeof t->bank_code, "%s", bank);
    const char *fail = NULL;
    if (to_card) {
        const pc_sim_card_t *card = pc_sim_card_get(ch, token);
        if (!card) {
            fail = "TOKEN_NOT_FOUND";
        } else {
            snprintf(t->payee_last4, sizeof t->payee_last4, "%s", card->last4);
            if (pc_sim_card_expired(card->exp_month, card->exp_year, pc_sim_now_ms(sim)))
                fail = "EXPIRED_CARD";
            else if (card->rule.behaviour == PC_SIM_CARD_DECLINE)
                fail = card->rule.retryable ? "PROCESSING_ERROR" : "CARD_DECLINED";
        }
    } else {
        /* Test accounts, like the test cards: …0002 does not exist, …0119
         * belongs to a bank that is down. */
        size_t n = strlen(account);
        snprintf(t->payee_last4, sizeof t->payee_last4, "%s", account + n - 4);
        if (!strcmp(account + n - 4, "0002"))
            fail = "ACCOUNT_INVALID";
        else if (!strcmp(account + n - 4, "0119"))
            fail = "BANK_UNAVAILABLE";
    }
    if (!fail && pc_sim_rng_chance(&ch->rng, ch->faults.decline_bps)) {
        pc_sim_fake(sim, ch, "DECLINE", PC_SIM_PAYOUT, t->ref, t->no, NULL);
        fail = "BANK_UNAVAILABLE";
    }
    if (fail)
        pc_sim_txn_finish(sim, t, PC_SIM_FAILED, fail, late);
    else
        run_delayed(sim, t, ch->faults.payout_delay_ms, late);
    answer(sim, req, ch, t, late);
}

/* ---- Tokenize ---------------------------------------------------------------------------- */

static void card_tokenize(pc_http_req_t *req, void *data)
{
    pc_sim_t *sim = data;
    pc_sim_channel_t *ch = pc_http_req_user(req);
    json_t *body = body_of(req, ch);
    if (!body)
        return;
    card_in_t c;
    const char *holder;
    bad_t bad;
    if (!get_card(body, false, &c, &bad) ||
        !get_string(body, "holder_name", false, 128, &holder, &bad)) {
        reply_bad(req, ch, &bad);
        return;
    }
    const char *field = NULL, *why = NULL;
    if (!pc_sim_pan_valid(c.pan)) {
        field = "pan";
        why = "the card number is not valid";
    } else if (pc_sim_card_expired((int)c.exp_month, (int)c.exp_year, pc_sim_now_ms(sim))) {
        field = "exp_year";
        why = "the card has expired";
    } else if (c.cvv && !pc_sim_cvv_valid(c.cvv)) {
        field = "cvv";
        why = "the CVV is not valid";
    }
    if (field) {
        pc_sim_reply_error(req, ch, PC_SIM_INVALID_CARD, field, why);
        return;
    }
    /* The tokenize outage fault: held, then 504, nothing kept. */
    if (pc_sim_rng_chance(&ch->rng, ch->faults.tokenize_timeout_bps)) {
        hold(sim, req, ch);
        return;
    }
    pc_sim_card_t *card = tokenize(sim, ch, c.pan, (int)c.exp_month, (int)c.exp_year);
    if (!card) {
        pc_sim_reply_error(req, ch, PC_SIM_UNAVAILABLE, NULL, "out of memory");
        return;
    }
    pc_log_fields(PC_LOG_INFO, "sim.tokenize",
                  json_pack("{s:s,s:s,s:s,s:s}", "channel_id", ch->id, "card_token", card->token,
                            "brand", card->brand, "last4", card->last4),
                  "card tokenized");
    pc_sim_reply_json(req, ch, 200,
                      json_pack("{s:s,s:s,s:s,s:s,s:i,s:i,s:s}", "card_token", card->token, "brand",
                                card->brand, "bin", card->bin, "last4", card->last4, "exp_month",
                                card->exp_month, "exp_year", card->exp_year, "fingerprint",
                                card->fingerprint));
}

/* ---- Files ---------------------------------------------------------------------------------- */

static void daily_file(pc_http_req_t *req, bool statement)
{
    pc_sim_channel_t *ch = pc_http_req_user(req);
    char date[PC_SIM_DATE_LEN];
    const char *file = pc_http_req_param(req, "file");
    if (!file || pc_sim_date_from_file(file, ".csv", date) < 0) {
        pc_sim_reply_error(req, ch, PC_SIM_NOT_FOUND, NULL, "files are named YYYY-MM-DD.csv");
        return;
    }
    pc_buf_t out = {0};
    if (statement)
        pc_sim_statement_csv(ch, date, &out);
    else
        pc_sim_chargebacks_csv(ch, date, &out);
    if (out.oom)
        pc_sim_reply_error(req, ch, PC_SIM_UNAVAILABLE, NULL, "out of memory");
    else
        pc_sim_reply(req, ch, 200, "text/csv; charset=utf-8", out.p, out.len);
    pc_buf_free(&out);
}

static void statement_get(pc_http_req_t *req, void *data)
{
    (void)data;
    daily_file(req, true);
}

static void chargebacks_get(pc_http_req_t *req, void *data)
{
    (void)data;
    daily_file(req, false);
}

int pc_sim_routes_channel(pc_sim_t *sim)
{
    static const struct {
        const char *method, *pattern;
        pc_http_handler_cb fn;
    } routes[] = {
        {"POST", "/ch/{channel_id}/payments", pay_create},
        {"GET", "/ch/{channel_id}/payments", pay_get},
        {"GET", "/ch/{channel_id}/payments/{channel_txn_id}", pay_get},
        {"POST", "/ch/{channel_id}/payments/{channel_txn_id}/close", pay_close},
        {"POST", "/ch/{channel_id}/refunds", refund_create},
        {"GET", "/ch/{channel_id}/refunds", refund_get},
        {"GET", "/ch/{channel_id}/refunds/{channel_txn_id}", refund_get},
        {"POST", "/ch/{channel_id}/payouts", payout_create},
        {"GET", "/ch/{channel_id}/payouts", payout_get},
        {"GET", "/ch/{channel_id}/payouts/{channel_txn_id}", payout_get},
        {"POST", "/ch/{channel_id}/cards/tokenize", card_tokenize},
        {"GET", "/ch/{channel_id}/statements/{file}", statement_get},
        {"GET", "/ch/{channel_id}/chargebacks/{file}", chargebacks_get},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (pc_router_add(sim->router, routes[i].method, routes[i].pattern, routes[i].fn, sim) < 0)
            return PC_ENOMEM;
    pc_router_set_filter(sim->router, "/ch/", channel_filter, sim);
    return 0;
}
