#include "channel/health.h"
#include "ledger/ledger.h"

#include <stdio.h>
#include <string.h>

static const char *const g_op_names[PC_CH_OP_COUNT] = {
    [PC_CH_OP_PAY] = "pay",           [PC_CH_OP_QUERY] = "query",
    [PC_CH_OP_REFUND] = "refund",     [PC_CH_OP_REFUND_QUERY] = "refund_query",
    [PC_CH_OP_PAYOUT] = "payout",     [PC_CH_OP_PAYOUT_QUERY] = "payout_query",
    [PC_CH_OP_TOKENIZE] = "tokenize", [PC_CH_OP_FILE] = "file",
    [PC_CH_OP_CLOSE] = "close",
};

const char *pc_ch_op_name(pc_ch_op_t op)
{
    return (unsigned)op < PC_CH_OP_COUNT ? g_op_names[op] : "?";
}

/* ---- The code table ---------------------------------------------------------- */

/* Every code paysim reports, from its failure catalogue (flow.c) and its
 * protocol errors (codes.c). A code is retryable when a new attempt — on
 * another channel, or later — may succeed: the issuer or bank was down, or
 * the request never got past the channel's front door (a signature or clock
 * problem between us and this channel says nothing about the next one).
 * Business declines — the card, the account, the buyer, the amount — are
 * final for this payment whatever channel it goes to, and are the buyer's
 * problem, not the channel's: they do not count against its health. */
static const pc_ch_code_t g_codes[] = {
    /* Failures of payments, refunds and payouts (200 answers, callbacks). */
    {"CARD_DECLINED", false, false},
    {"INSUFFICIENT_FUNDS", false, false},
    {"PROCESSING_ERROR", true, true},
    {"INVALID_CARD_NUMBER", false, false},
    {"EXPIRED_CARD", false, false},
    {"INVALID_CVV", false, false},
    {"TOKEN_NOT_FOUND", false, false},
    {"ISSUER_UNAVAILABLE", true, true},
    {"BANK_UNAVAILABLE", true, true},
    {"ACCOUNT_INVALID", false, false},
    {"EXPIRED", false, false},
    {"CLOSED_BY_REQUEST", false, false},
    {"BUYER_CANCELLED", false, false},
    {"AUTHENTICATION_FAILED", false, false},
    {"REFUND_REJECTED", false, false},
    {"PAYOUT_REJECTED", false, false},
    /* Protocol errors (4xx answers): the channel did nothing. */
    {"INVALID_REQUEST", false, false},
    {"INVALID_SIGNATURE", true, true},
    {"TIMESTAMP_EXPIRED", true, true},
    {"NONCE_REUSED", true, true},
    {"NOT_FOUND", false, false},
    {"INVALID_STATE", false, false},
    {"DUPLICATE_PAYMENT_NO", false, false},
    {"DUPLICATE_REFUND_NO", false, false},
    {"DUPLICATE_PAYOUT_NO", false, false},
    {"REFERENCE_IN_USE", false, false},
    {"AMOUNT_EXCEEDS_REFUNDABLE", false, false},
    {"INVALID_CARD", false, false},
};

const pc_ch_code_t *pc_ch_code_find(const char *code)
{
    for (size_t i = 0; code && i < sizeof g_codes / sizeof g_codes[0]; i++)
        if (strcmp(g_codes[i].code, code) == 0)
            return &g_codes[i];
    return NULL;
}

pc_ch_count_t pc_ch_count_of(const pc_ch_result_t *r)
{
    if (r->status == PC_CH_UNKNOWN)
        return PC_CH_COUNT_FAILURE;
    if (r->status != PC_CH_FAILED)
        return PC_CH_COUNT_OK;
    const pc_ch_code_t *c = pc_ch_code_find(r->code);
    bool blames = c ? c->blames_channel : r->retryable;
    return blames || r->retryable ? PC_CH_COUNT_FAILURE : PC_CH_COUNT_DECLINE;
}

/* ---- Answers ----------------------------------------------------------------------- */

static void copy_str(char *out, size_t size, const json_t *v)
{
    const char *s = json_string_value(v);
    snprintf(out, size, "%s", s ? s : "");
}

static pc_ch_count_t unknown(pc_ch_result_t *out, const char *code, const char *message)
{
    out->status = PC_CH_UNKNOWN;
    out->retryable = 0;
    snprintf(out->code, sizeof out->code, "%s", code);
    snprintf(out->message, sizeof out->message, "%s", message);
    return PC_CH_COUNT_FAILURE;
}

/* The retryable flag of a failure code: the table's, else the channel's own
 * flag — except that INVALID_* codes describe the request's content and are
 * never worth another channel. */
static bool code_retryable(const char *code, const json_t *channel_flag)
{
    const pc_ch_code_t *c = pc_ch_code_find(code);
    if (c)
        return c->retryable;
    if (strncmp(code, "INVALID_", 8) == 0)
        return false;
    return json_is_true(channel_flag);
}

static const char *ref_field(pc_ch_op_t op)
{
    switch (op) {
    case PC_CH_OP_PAY:
    case PC_CH_OP_QUERY:
    case PC_CH_OP_CLOSE:
        return "payment_no";
    case PC_CH_OP_REFUND:
    case PC_CH_OP_REFUND_QUERY:
        return "refund_no";
    case PC_CH_OP_PAYOUT:
    case PC_CH_OP_PAYOUT_QUERY:
        return "payout_no";
    default:
        return NULL;
    }
}

/* Operations on what exists at the channel already (a close as well):
 * their answers say nothing of the channel's health, and a refusal is of
 * the request, not of the transaction. */
static bool is_query(pc_ch_op_t op)
{
    return op == PC_CH_OP_QUERY || op == PC_CH_OP_REFUND_QUERY || op == PC_CH_OP_PAYOUT_QUERY ||
           op == PC_CH_OP_CLOSE;
}

static void copy_card(pc_ch_result_t *out, const json_t *card, const char *token_key)
{
    copy_str(out->card_token, sizeof out->card_token, json_object_get(card, token_key));
    copy_str(out->card_brand, sizeof out->card_brand, json_object_get(card, "brand"));
    copy_str(out->card_bin, sizeof out->card_bin, json_object_get(card, "bin"));
    copy_str(out->card_last4, sizeof out->card_last4, json_object_get(card, "last4"));
}

static pc_ch_count_t map_tokenized(const json_t *o, pc_ch_result_t *out)
{
    const char *token = json_string_value(json_object_get(o, "card_token"));
    if (!token || !token[0])
        return unknown(out, "BAD_ANSWER", "the tokenize answer has no card_token");
    out->status = PC_CH_SUCCESS;
    copy_card(out, o, "card_token");
    return PC_CH_COUNT_OK;
}

pc_ch_count_t pc_ch_map_object(pc_ch_op_t op, const json_t *o, const char *ref, pc_ch_result_t *out,
                               json_t **action)
{
    *action = NULL;
    if (!json_is_object(o))
        return unknown(out, "BAD_ANSWER", "the answer is not a JSON object");
    if (op == PC_CH_OP_TOKENIZE)
        return map_tokenized(o, out);
    const char *field = ref_field(op);
    if (ref && field) {
        const char *about = json_string_value(json_object_get(o, field));
        if (!about || strcmp(about, ref) != 0)
            return unknown(out, "BAD_ANSWER", "the answer is about another transaction");
    }
    const char *status = json_string_value(json_object_get(o, "status"));
    if (!status)
        return unknown(out, "BAD_ANSWER", "the answer has no status");
    copy_str(out->channel_txn_id, sizeof out->channel_txn_id, json_object_get(o, "channel_txn_id"));
    out->amount = json_integer_value(json_object_get(o, "amount"));
    out->fee = json_integer_value(json_object_get(o, "fee"));
    const json_t *card = json_object_get(o, "card");
    if (json_is_object(card))
        copy_card(out, card, "token");
    const json_t *failure = json_object_get(o, "failure");
    const char *code = json_string_value(json_object_get(failure, "code"));
    copy_str(out->message, sizeof out->message, json_object_get(failure, "message"));
    if (!strcmp(status, "SUCCESS")) {
        /* A success is believed for the sum and currency it names only:
         * without them it could not be compared with what was asked (one
         * without an amount, or in USD for a CNY payment, was captured as
         * asked). The protocol always sends both. */
        const json_t *amount = json_object_get(o, "amount");
        const char *cur = json_string_value(json_object_get(o, "currency"));
        if (!json_is_integer(amount) || json_integer_value(amount) <= 0 ||
            !pc_ledger_currency_ok(cur))
            return unknown(out, "BAD_ANSWER", "a success without its amount and currency");
        memcpy(out->currency, cur, 4);
        out->status = PC_CH_SUCCESS;
    } else if (!strcmp(status, "PROCESSING")) {
        out->status = PC_CH_PROCESSING;
        if (op == PC_CH_OP_PAY || op == PC_CH_OP_QUERY)
            *action = pc_ch_action_from(json_object_get(o, "action"));
    } else if (!strcmp(status, "FAILED") || !strcmp(status, "CLOSED")) {
        /* A closed payment (expired, or closed at our request) was not paid
         * and will not be: final, like a failure. */
        bool closed = status[0] == 'C';
        out->status = PC_CH_FAILED;
        snprintf(out->code, sizeof out->code, "%s",
                 code     ? code
                 : closed ? "CLOSED"
                          : "UNSPECIFIED");
        out->retryable =
            !closed && code_retryable(out->code, json_object_get(failure, "retryable"));
    } else if (!strcmp(status, "RETURNED")) {
        out->status = PC_CH_RETURNED;
        copy_str(out->code, sizeof out->code, json_object_get(o, "return_reason"));
    } else {
        return unknown(out, "BAD_ANSWER", "the answer has an unknown status");
    }
    return is_query(op) ? PC_CH_COUNT_NONE : pc_ch_count_of(out);
}

/* A 4xx answer: the channel refused the request and did nothing. */
static pc_ch_count_t map_refusal(pc_ch_op_t op, const json_t *o, pc_ch_result_t *out)
{
    const json_t *err = json_object_get(o, "error");
    const char *code = json_string_value(json_object_get(err, "code"));
    if (!code || !code[0])
        return unknown(out, "BAD_ANSWER", "a refusal without an error code");
    out->status = PC_CH_FAILED;
    snprintf(out->code, sizeof out->code, "%s", code);
    copy_str(out->message, sizeof out->message, json_object_get(err, "message"));
    if (is_query(op) && !strcmp(code, "NOT_FOUND")) {
        /* The channel never took this transaction: it did not happen there,
         * so trying again (anywhere) is safe. The query itself worked. */
        out->retryable = 1;
        return PC_CH_COUNT_NONE;
    }
    /* Refusals that say nothing final of the transaction: unknown, for a
     * status query to settle. */
    const char *why = NULL;
    if (is_query(op))
        /* Any other refusal is of the query (its signature, its form, a
         * gateway's rate limit), not of the transaction. Read as a failure,
         * it failed payments and released payout reserves the bank may
         * have paid. */
        why = op == PC_CH_OP_CLOSE ? "the channel refused the close"
                                   : "the channel refused the status query";
    else if (!strcmp(code, "NONCE_REUSED") || !strncmp(code, "DUPLICATE_", 10) ||
             !strcmp(code, "TIMESTAMP_EXPIRED"))
        /* We sign every request with a fresh nonce and send each payment,
         * refund and payout number once: the channel has seen this request
         * (or one with its number) before and may have done it. libcurl
         * sends a request again, nonce and all, when a kept-alive connection
         * dies before any byte of the answer, after the channel may have
         * charged. Read as a retryable decline, the payment fell back to the
         * next channel and the buyer paid twice. Such a copy carries the
         * first's X-Timestamp: a channel that checks the time before the
         * nonce (or whose clock runs ahead) refuses it as too old, after it
         * did the first. */
        why = "the channel has seen this request before, or a late copy of it: it may have "
              "done it";
    else if (!pc_ch_code_find(code))
        /* A code the protocol does not define: maybe an answer of another
         * kind under a rewritten status line (a 504 TIMEOUT made a 400: the
         * signature covers the body, not the status), or a channel's new
         * code. */
        why = "the channel refused with a code paycore does not know";
    if (why) {
        unknown(out, code, why);
        copy_str(out->message, sizeof out->message, json_object_get(err, "message"));
        /* A close refused (409 INVALID_STATE: the buyer paid first) is an
         * ordinary answer, nothing of the channel's health. */
        return op == PC_CH_OP_CLOSE ? PC_CH_COUNT_NONE : PC_CH_COUNT_FAILURE;
    }
    out->retryable = code_retryable(code, NULL);
    return pc_ch_count_of(out);
}

pc_ch_count_t pc_ch_map_answer(pc_ch_op_t op, int http_status, const char *body, size_t len,
                               const char *ref, pc_ch_result_t *out, json_t **action)
{
    *action = NULL;
    json_t *o = body && len ? json_loadb(body, len, 0, NULL) : NULL;
    pc_ch_count_t count;
    char msg[64];
    if (http_status >= 500 || http_status == 408) {
        /* The channel may or may not have done it; only a query will tell. */
        const char *code = json_string_value(json_object_get(json_object_get(o, "error"), "code"));
        snprintf(msg, sizeof msg, "the channel answered HTTP %d", http_status);
        count = unknown(out, code && code[0] ? code : "CHANNEL_ERROR", msg);
    } else if (!json_is_object(o)) {
        count = unknown(out, "BAD_ANSWER", "the answer is not a JSON object");
    } else if (http_status >= 200 && http_status < 300) {
        count = pc_ch_map_object(op, o, ref, out, action);
    } else if (http_status >= 400) {
        count = map_refusal(op, o, out);
    } else {
        snprintf(msg, sizeof msg, "unexpected HTTP %d", http_status);
        count = unknown(out, "BAD_ANSWER", msg);
    }
    json_decref(o);
    return count;
}

json_t *pc_ch_action_from(const json_t *a)
{
    static const struct {
        const char *type, *key;
    } kinds[] = {
        {"REDIRECT", "url"},
        {"VA", "va_number"},
        {"OTC", "otc_code"},
        {"QR", "qr_payload"},
    };
    const char *type = json_string_value(json_object_get(a, "type"));
    for (size_t i = 0; type && i < sizeof kinds / sizeof kinds[0]; i++) {
        if (strcmp(type, kinds[i].type) != 0)
            continue;
        const char *value = json_string_value(json_object_get(a, kinds[i].key));
        if (!value || !value[0])
            return NULL;
        const char *expires = json_string_value(json_object_get(a, "expires_at"));
        return json_pack("{s:s,s:s,s:o}", "type", type, kinds[i].key, value, "expires_at",
                         expires ? json_string(expires) : json_null());
    }
    return NULL;
}

/* ---- Health arithmetic ------------------------------------------------------------ */

static int64_t sane_window(int64_t window_s)
{
    return window_s < 10 ? 10 : window_s;
}

int64_t pc_ch_health_bucket_s(int64_t window_s)
{
    window_s = sane_window(window_s);
    if (window_s <= 600)
        return 10;
    int64_t b = (window_s + PC_CH_HEALTH_MAX_BUCKETS - 1) / PC_CH_HEALTH_MAX_BUCKETS;
    return (b + 9) / 10 * 10;
}

int64_t pc_ch_health_buckets(int64_t window_s)
{
    window_s = sane_window(window_s);
    int64_t b = pc_ch_health_bucket_s(window_s);
    return (window_s + b - 1) / b;
}

int64_t pc_ch_health_bucket_of(int64_t window_s, int64_t now_s)
{
    return (now_s < 0 ? 0 : now_s) / pc_ch_health_bucket_s(window_s);
}

void pc_ch_health_eval(const pc_ch_tally_t *t, int64_t failure_rate_bp, pc_ch_health_t *out)
{
    int64_t n = t->attempts > 0 ? t->attempts : 0;
    int64_t f = t->failures < 0 ? 0 : t->failures > n ? n : t->failures;
    out->success_rate_bp = n ? (int)((n - f) * 10000 / n) : 10000;
    int64_t lat = n && t->latency_ms_sum > 0 ? t->latency_ms_sum / n : 0;
    out->latency_ms = lat > 2000000000 ? 2000000000 : (int)lat;
    out->healthy = !(n >= PC_CH_HEALTH_MIN_ATTEMPTS && f * 10000 > failure_rate_bp * n);
}

void pc_ch_ring_add(pc_ch_ring_t *r, int64_t window_s, int64_t now_s, pc_ch_count_t count,
                    uint64_t latency_ms)
{
    int64_t bs = pc_ch_health_bucket_s(window_s);
    if (r->bucket_s != bs) {
        memset(r, 0, sizeof *r);
        r->bucket_s = bs;
    }
    int64_t idx = pc_ch_health_bucket_of(window_s, now_s);
    size_t slot = (size_t)(idx % PC_CH_HEALTH_RING);
    if (r->b[slot].idx != idx) {
        r->b[slot].idx = idx;
        memset(&r->b[slot].t, 0, sizeof r->b[slot].t);
    }
    pc_ch_tally_t *t = &r->b[slot].t;
    t->attempts++;
    t->failures += count == PC_CH_COUNT_FAILURE;
    t->declines += count == PC_CH_COUNT_DECLINE;
    t->latency_ms_sum += (int64_t)latency_ms;
}

pc_ch_tally_t pc_ch_ring_sum(const pc_ch_ring_t *r, int64_t window_s, int64_t now_s)
{
    pc_ch_tally_t sum = {0};
    if (r->bucket_s != pc_ch_health_bucket_s(window_s))
        return sum;
    int64_t cur = pc_ch_health_bucket_of(window_s, now_s);
    int64_t first = cur - pc_ch_health_buckets(window_s) + 1;
    for (size_t i = 0; i < PC_CH_HEALTH_RING; i++) {
        if (r->b[i].idx < first || r->b[i].idx > cur || r->b[i].t.attempts == 0)
            continue;
        sum.attempts += r->b[i].t.attempts;
        sum.failures += r->b[i].t.failures;
        sum.declines += r->b[i].t.declines;
        sum.latency_ms_sum += r->b[i].t.latency_ms_sum;
    }
    return sum;
}
