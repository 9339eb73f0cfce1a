#include "engine/engine.h"
#include "acquiring/trade_state.h"
#include "auth/sign.h"
#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"
#include "ledger/ledger.h"

#include <openssl/crypto.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Statuses of an attempt still in flight: only one per trade at a time. */

struct pc_engine {
    pc_app_t *app;
    pc_channel_client_t *ch;
    int sweeping; /* pc_engine_sweep_waiting's statement is on its way */
};

/* One operation on one payment; owns copies of everything it needs. */
typedef struct op {
    pc_engine_t *e;
    pc_engine_cb cb;
    void *data;
    pc_db_tx_t *tx;
    char payment_no[40], trade_no[40], merchant_id[65], buyer_id[65], method[16], currency[4];
    char wallet_owner[65]; /* whose wallet the balance part uses: "" = buyer_id */
    /* A late success of a payment failed with its balance and coupon given
     * back takes them again: from the wallet, not escrow. */
    int retaken;
    int64_t amount, balance_amount, coupon_amount, external_amount;
    /* The trade's expiry (Unix seconds, as the trade lock read it; 0: not
     * read): a pay code, VA or QR the channel issues lives no longer. */
    int64_t trade_expires_s;
    char coupon_id[48], coupon_funder[65], card_id[48], card_fp[48], card_token[80], card_brand[24],
        card_last4[8], buyer_code[65];
    char limit_hit[8]; /* continue: the limit the payment would pass, "buyer" or "card" */
    char waiting[12];  /* continue: the status the payment waits in */
    char route[PC_ROUTE_MAX][33];
    int nroute, attempt;
    int has_card;
    char pan[24], cvv[8], holder[64];
    pc_ch_card_t card;
    /* For finalising. */
    pc_ch_result_t result;
    char failure_code[48], failure_message[160];
    int step_failed;
    int reject_waiting; /* ops reject: only a payment in REVIEW / CHALLENGE fails */
    /* Ops' release or reject of a payment held for review: recorded in the
     * transaction that applies it (review_who "": none). */
    char review_who[65], review_why[501];
    /* A channel's answer: which channel gave it (only the payment's own
     * channel is believed), whether it was learnt later (callback, status
     * query, statement: a failure to apply it is answered as such, so a
     * channel retries), and the payment's row as the capture locked it. */
    char reporter[33];
    int applying;
    int paid_now; /* the trade was paid in the first transaction (wallet, coupon) */
    /* Ops record a channel's answer by hand (pc_engine_apply_by_ops): only a
     * payment still in flight and flagged for ops changes; anything else is
     * an INVALID_STATE answer, never a late capture or a contradiction. */
    int by_ops;
    struct {
        int found;
        char status[16], channel_id[33], currency[4];
        int64_t external_amount;
        int routed;   /* the reporter is a channel of the payment's route */
        int adjusted; /* ops booked its money by a reconciliation adjustment */
    } row;
    pc_api_err_t err;
    char err_msg[160];
    pc_idem_req_t *idem; /* see pc_pay_order_t */
    json_t *answer;      /* the payment as answered, read in the deciding transaction */
    pc_db_done_cb commit_done;
} op_t;

static void op_free(op_t *o)
{
    /* The card number only ever lived here. */
    OPENSSL_cleanse(o->pan, sizeof o->pan);
    OPENSSL_cleanse(o->cvv, sizeof o->cvv);
    json_decref(o->answer);
    free(o);
}

static op_t *op_new(pc_engine_t *e, pc_engine_cb cb, void *data)
{
    op_t *o = calloc(1, sizeof *o);
    if (o) {
        o->e = e;
        o->cb = cb;
        o->data = data;
    }
    return o;
}

pc_engine_t *pc_engine_new(pc_app_t *app, pc_channel_client_t *channels)
{
    pc_engine_t *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->app = app;
    e->ch = channels;
    pc_metrics_describe("pc_payments_total", PC_METRIC_COUNTER,
                        "payments finished, by method, channel and status");
    return e;
}

void pc_engine_free(pc_engine_t *e)
{
    free(e);
}

/* repair.first_query_ms as a statement parameter: when the first status
 * query of a payment just sent to its channel is due. */
static void first_query_ms(const pc_engine_t *e, char out[24])
{
    snprintf(out, 24, "%lld", (long long)pc_config_int(e->app->cfg, "repair.first_query_ms"));
}

static void count_payment(const op_t *o, const char *status)
{
    char labels[160];
    snprintf(labels, sizeof labels, "method=\"%s\",channel=\"%s\",status=\"%s\"", o->method,
             o->nroute ? o->route[o->attempt < o->nroute ? o->attempt : 0] : "", status);
    pc_metrics_add("pc_payments_total", labels, 1);
}

/* ---------- the payment as the API shows it ---------- */

#define PAYMENT_SQL                                                                                \
    "SELECT p.payment_no, p.trade_no, p.status, p.amount, p.currency, p.method_type, "             \
    "p.balance_amount, p.coupon_amount, p.external_amount, p.coupon_id, p.channel_id, "            \
    "p.action::text AS action, p.failure_code, p.failure_message, p.risk_decision, p.risk_score, " \
    "p.risk_reasons::text AS risk_reasons, p.rule_versions::text AS rule_versions, "               \
    "p.challenge_id, p.needs_error_refund, p.card_brand, p.card_last4, t.status AS trade_status, " \
    "CASE WHEN p.challenge_id IS NOT NULL THEN (SELECT to_char(c.expires_at AT TIME ZONE 'UTC', "  \
    "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM challenges c WHERE c.challenge_id = p.challenge_id) "  \
    "END AS challenge_expires_at, "                                                                \
    "to_char(p.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS created_at "    \
    "FROM payments p JOIN trades t USING (trade_no) WHERE p.payment_no = $1"

static const char *col(pc_db_res_t *res, const char *name)
{
    int c = pc_db_col(res, name);
    return pc_db_isnull(res, 0, c) ? NULL : pc_db_get(res, 0, c);
}

static json_t *payment_json(pc_db_res_t *res)
{
    const char *st = col(res, "status");
    /* Inside states are shown as the API's four. */
    const char *shown = !strcmp(st, "UNKNOWN") || !strcmp(st, "CREATED") ? "PROCESSING"
                        : !strcmp(st, "CHALLENGE")                       ? "PROCESSING"
                                                                         : st;
    json_t *components = json_array();
    const char *types[] = {"COUPON", "BALANCE", NULL};
    int64_t parts[] = {pc_db_val_i64(res, 0, "coupon_amount"),
                       pc_db_val_i64(res, 0, "balance_amount"),
                       pc_db_val_i64(res, 0, "external_amount")};
    for (int i = 0; i < 3; i++) {
        if (parts[i] <= 0)
            continue;
        const char *t = types[i] ? types[i] : col(res, "method_type");
        json_array_append_new(components,
                              json_pack("{s:s,s:I}", "type", t, "amount", (json_int_t)parts[i]));
    }
    json_t *action = NULL;
    const char *a = col(res, "action");
    if (a)
        action = json_loads(a, 0, NULL);
    if (!strcmp(st, "CHALLENGE") && col(res, "challenge_id")) {
        const char *exp = col(res, "challenge_expires_at");
        json_decref(action);
        action =
            json_pack("{s:s,s:s,s:o}", "type", "CHALLENGE", "challenge_id",
                      col(res, "challenge_id"), "expires_at", exp ? json_string(exp) : json_null());
    }
    json_t *failure = json_null();
    if (col(res, "failure_code"))
        failure = json_pack("{s:s,s:s}", "code", col(res, "failure_code"), "message",
                            col(res, "failure_message") ? col(res, "failure_message") : "");
    json_t *versions =
        json_loads(col(res, "rule_versions") ? col(res, "rule_versions") : "{}", 0, NULL);
    json_t *risk = json_pack("{s:s?,s:O?}", "decision", col(res, "risk_decision"), "rule_version",
                             json_object_get(versions, "risk"));
    if (col(res, "risk_score"))
        json_object_set_new(risk, "score", json_integer(pc_db_val_i64(res, 0, "risk_score")));
    if (col(res, "risk_reasons"))
        json_object_set_new(risk, "reasons", json_loads(col(res, "risk_reasons"), 0, NULL));
    json_decref(versions);
    json_t *p = json_pack(
        "{s:s,s:s,s:s,s:I,s:s,s:s,s:o,s:s?,s:o,s:o,s:s,s:o,s:s}", "payment_no",
        col(res, "payment_no"), "trade_no", col(res, "trade_no"), "status", shown, "amount",
        (json_int_t)pc_db_val_i64(res, 0, "amount"), "currency", col(res, "currency"), "method",
        col(res, "method_type"), "components", components, "channel_id", col(res, "channel_id"),
        "action", action ? action : json_null(), "failure", failure, "trade_status",
        col(res, "trade_status"), "risk", risk, "created_at", col(res, "created_at"));
    if (!col(res, "channel_id"))
        json_object_set_new(p, "channel_id", json_null());
    if (col(res, "card_last4"))
        json_object_set_new(p, "card",
                            json_pack("{s:s?,s:s}", "brand", col(res, "card_brand"), "last4",
                                      col(res, "card_last4")));
    if (col(res, "needs_error_refund")[0] == 't') {
        json_object_set_new(p, "error_refund", json_true());
        json_object_set_new(p, "message",
                            json_string("the trade was closed or already paid; this payment is "
                                        "being returned in full"));
    }
    return p;
}

typedef struct {
    pc_engine_cb cb;
    void *data;
} get_t;

static void get_cb(void *data, int status, pc_db_res_t *res)
{
    get_t *g = data;
    if (status)
        g->cb(g->data, pc_retryable(status) ? PC_API_UNAVAILABLE : PC_API_INTERNAL,
              "database unavailable", NULL);
    else if (pc_db_rows(res) == 0)
        g->cb(g->data, PC_API_NOT_FOUND, "no such payment", NULL);
    else
        g->cb(g->data, PC_API_OK, NULL, payment_json(res));
    free(g);
}

int pc_engine_get(pc_engine_t *e, const char *payment_no, const char *merchant_id, pc_engine_cb cb,
                  void *data)
{
    get_t *g = calloc(1, sizeof *g);
    if (!g)
        return PC_ENOMEM;
    g->cb = cb;
    g->data = data;
    const char *p[] = {payment_no, merchant_id};
    int rc = merchant_id
                 ? pc_db_query(e->app->db, PAYMENT_SQL " AND p.merchant_id = $2", 2, p, get_cb, g)
                 : pc_db_query(e->app->db, PAYMENT_SQL, 1, p, get_cb, g);
    if (rc < 0)
        free(g);
    return rc;
}

/* Ends an operation: answer with the payment as it now is. */
static void finish(op_t *o)
{
    if (o->err != PC_API_OK) {
        if (o->cb)
            o->cb(o->data, o->err, o->err_msg, NULL);
        op_free(o);
        return;
    }
    if (o->cb && o->answer) {
        /* Read in the transaction that decided it, and recorded with it. */
        json_t *a = o->answer;
        o->answer = NULL;
        o->cb(o->data, PC_API_OK, NULL, a);
    } else if (!o->cb || pc_engine_get(o->e, o->payment_no, NULL, o->cb, o->data) < 0) {
        if (o->cb)
            o->cb(o->data, PC_API_UNAVAILABLE, "database unavailable", NULL);
    }
    op_free(o);
}

static void fail_op(op_t *o, pc_api_err_t err, const char *msg)
{
    if (o->tx) {
        pc_db_tx_rollback(o->tx);
        o->tx = NULL;
    }
    o->err = err;
    snprintf(o->err_msg, sizeof o->err_msg, "%s", msg);
    finish(o);
}

/* An answer learnt later that could not be recorded (database down, a
 * statement failed): said so, so that a channel's callback is retried
 * rather than acknowledged. The pay request itself answers the payment as
 * it stands instead. */
static void not_applied(op_t *o)
{
    /* Ops deciding on a payment held for review are told too: answered
     * the payment as it stands, a reject that did not apply read as done. */
    if ((o->applying || o->review_who[0]) && o->err == PC_API_OK) {
        o->err = PC_API_UNAVAILABLE;
        snprintf(o->err_msg, sizeof o->err_msg, "not applied; retry");
    }
}

/* Notes a failed statement without deciding yet: the commit reports it. */
static void step_cb(void *data, int status, pc_db_res_t *res)
{
    op_t *o = data;
    (void)res;
    if (status && !o->step_failed)
        o->step_failed = 2;
}

static void ledger_step_cb(void *data, int status, int64_t txn_id)
{
    op_t *o = data;
    (void)txn_id;
    if (status == PC_LEDGER_INSUFFICIENT && !o->step_failed)
        o->step_failed = 1;
    else if (status && !o->step_failed)
        o->step_failed = 2;
}

/* ---------- ledger helpers ---------- */

/* A movement that cannot even be sent (an account id that could not be
 * built, no memory) fails the step as one PostgreSQL refused would: the
 * transaction must not commit the payment's move without its money. */
static void post(op_t *o, const char *kind, pc_ledger_leg_t *legs, size_t n)
{
    if (n < 2)
        return;
    pc_ledger_txn_t t = {kind, "payment", o->payment_no, o->trade_no, legs, n};
    if (pc_ledger_post(o->tx, &t, ledger_step_cb, o) < 0 && !o->step_failed)
        o->step_failed = 2;
}

typedef struct {
    pc_ledger_leg_t legs[4];
    char ids[4][PC_LEDGER_ID_MAX + 1];
    size_t n;
} legs_t;

static void leg(legs_t *l, pc_ledger_type_t type, const char *owner, const char *cur, int64_t amt)
{
    if (amt == 0 || l->n == 4)
        return;
    pc_ledger_account_id(l->ids[l->n], sizeof l->ids[l->n], type, owner, cur);
    l->legs[l->n] = (pc_ledger_leg_t){l->ids[l->n], amt, cur};
    l->n++;
}

/* The owner id of the wallet the balance part moves from/to. */
static const char *wallet_of(const op_t *o)
{
    return o->wallet_owner[0] ? o->wallet_owner : o->buyer_id;
}

/* Where a captured payment's money comes from: the balance held in escrow,
 * the coupon's funder (a merchant's account of type merchant_coupon), the
 * channel that collected the external part. */
static void payment_sources(const op_t *o, pc_ledger_type_t merchant_coupon, legs_t *l)
{
    if (o->retaken)
        leg(l, PC_LEDGER_BUYER_WALLET, wallet_of(o), o->currency, -o->balance_amount);
    else
        leg(l, PC_LEDGER_PLATFORM_ESCROW, NULL, o->currency, -o->balance_amount);
    leg(l, o->coupon_funder[0] ? merchant_coupon : PC_LEDGER_PLATFORM_MARKETING,
        o->coupon_funder[0] ? o->coupon_funder : NULL, o->currency, -o->coupon_amount);
    leg(l, PC_LEDGER_CHANNEL_CLEARING, o->route[o->attempt], o->currency, -o->external_amount);
}

/* ---------- channel attempts ---------- */

static void attempt(op_t *o);
static void capture(op_t *o);
static void release(op_t *o);

static void mark_pending_cb(void *data, int status, pc_db_res_t *res)
{
    op_t *o = data;
    (void)status;
    (void)res;
    finish(o);
}

/* The channel took the payment but its outcome comes later. The status
 * queries' schedule starts again from here: the ones made while the request
 * was open could not close the payment as failed. */
static void leave_pending(op_t *o, const pc_ch_result_t *r)
{
    char *action = r->action ? json_dumps(r->action, JSON_COMPACT) : NULL;
    const char *st = r->status == PC_CH_PROCESSING ? "PROCESSING" : "UNKNOWN";
    char first[24];
    first_query_ms(o->e, first);
    const char *p[] = {o->payment_no, st, action, r->channel_txn_id[0] ? r->channel_txn_id : NULL,
                       first};
    count_payment(o, st);
    if (pc_db_query(o->e->app->db,
                    "UPDATE payments SET status = $2, action = coalesce($3::jsonb, action), "
                    "channel_txn_id = coalesce($4, channel_txn_id), acknowledged_at = CASE $2 "
                    "WHEN 'PROCESSING' THEN coalesce(acknowledged_at, now()) ELSE "
                    "acknowledged_at END, next_query_at = now() + "
                    "$5::int * interval '1 millisecond', query_attempts = 0, updated_at = now() "
                    "WHERE payment_no = $1 "
                    "AND status IN ('PROCESSING', 'UNKNOWN')",
                    5, p, mark_pending_cb, o) < 0)
        finish(o);
    free(action);
}

static void next_channel_cb(void *data, int status, pc_db_res_t *res)
{
    op_t *o = data;
    if (status) {
        /* Could not record the switch: stop here; the repair job finds it. */
        finish(o);
        return;
    }
    if (pc_db_rows(res) == 1 && !strcmp(pc_db_get(res, 0, 0), "1")) {
        attempt(o);
        return;
    }
    if (pc_db_rows(res) == 1 && !strcmp(pc_db_get(res, 0, 1), "PROCESSING")) {
        /* Its trade was paid (a late success of an earlier attempt) or
         * closed meanwhile: another channel would charge the buyer again,
         * or for a trade no longer for sale. It fails here, its balance and
         * coupon given back. */
        pc_log_warn("engine.fallback_stopped",
                    "payment %s: its trade is %s now: not sent to %s after %s declined it",
                    o->payment_no, pc_db_get(res, 0, 2), o->route[o->attempt],
                    o->route[o->attempt - 1]);
        snprintf(o->failure_code, sizeof o->failure_code, "TRADE_NOT_PAYABLE");
        snprintf(o->failure_message, sizeof o->failure_message,
                 "the trade was paid or closed while the payment was being tried");
        release(o);
        return;
    }
    /* The payment was finished meanwhile (a callback or a status query
     * failed it, its balance given back): sending it on would charge the
     * buyer for a payment that no longer exists. */
    pc_log_warn("engine.fallback_stopped",
                "payment %s was finished while %s declined it: not sent to %s", o->payment_no,
                o->route[o->attempt - 1], o->route[o->attempt]);
    finish(o);
}

/* What the channel's file asks for this payment's external part when it
 * is sent there, kept on the payment (channel_fee) for reconciliation: the
 * statement of its day is checked against the fee of its day, not against a
 * file changed since. NULL without a channel part or a file that takes the
 * currency. */
static const char *channel_fee_arg(const op_t *o, const char *channel, char out[24])
{
    const pc_channel_t *ch =
        channel && o->external_amount > 0 ? pc_channels_find(o->e->app->channels, channel) : NULL;
    if (!ch || !pc_channel_amounts(ch, o->currency))
        return NULL;
    snprintf(out, 24, "%lld", (long long)pc_channel_fee(ch, o->currency, o->external_amount));
    return out;
}

static void pay_cb(void *data, const pc_ch_result_t *r)
{
    op_t *o = data;
    o->result = *r;
    o->result.action = NULL; /* borrowed, only valid now */
    snprintf(o->reporter, sizeof o->reporter, "%s", o->route[o->attempt]);
    switch (r->status) {
    case PC_CH_SUCCESS:
        capture(o);
        return;
    case PC_CH_PROCESSING:
    case PC_CH_UNKNOWN:
    case PC_CH_RETURNED:
        leave_pending(o, r);
        return;
    case PC_CH_FAILED:
        if (r->retryable && o->attempt + 1 < o->nroute) {
            pc_log_info("engine.fallback", "payment %s: %s declined %s (retryable), trying %s",
                        o->payment_no, o->route[o->attempt], r->code, o->route[o->attempt + 1]);
            count_payment(o, "RETRIED");
            o->attempt++;
            char n[16];
            snprintf(n, sizeof n, "%d", o->attempt + 1);
            char fee[24];
            const char *p[] = {o->payment_no, o->route[o->attempt], n,
                               channel_fee_arg(o, o->route[o->attempt], fee)};
            /* On only while its trade waits for payment: the trade may have
             * been paid by an earlier attempt's late success, or closed,
             * while the channel before took its time to decline. The
             * payment is locked first, then its trade, as a capture locks
             * them (the other order deadlocked with a capture of this
             * payment, and the capture was the one aborted). */
            if (pc_db_query(o->e->app->db,
                            "WITH p AS (SELECT trade_no, status FROM payments WHERE payment_no = "
                            "$1 FOR UPDATE), t AS (SELECT t.status FROM trades t, p WHERE "
                            "t.trade_no = p.trade_no FOR UPDATE OF t), u AS (UPDATE payments SET "
                            "channel_id = $2, attempt = $3::int, sent_at = now(), channel_fee = "
                            "$4::bigint, channel_txn_id = NULL, acknowledged_at = NULL, "
                            "updated_at = now() WHERE payment_no = $1 AND (SELECT status FROM p) "
                            "= 'PROCESSING' AND (SELECT status FROM t) = 'WAIT_BUYER_PAY' "
                            "RETURNING 1) SELECT (SELECT count(*) FROM u), (SELECT status FROM "
                            "p), (SELECT status FROM t)",
                            4, p, next_channel_cb, o) < 0)
                finish(o);
            return;
        }
        snprintf(o->failure_code, sizeof o->failure_code, "%s", r->code[0] ? r->code : "DECLINED");
        snprintf(o->failure_message, sizeof o->failure_message, "%s", r->message);
        release(o);
        return;
    }
}

/* Seconds the trade has left, for the channel's pay code: a code that
 * outlived the trade took the buyer's money after the trade had closed
 * (refunded as an error), one shorter than the trade turned the buyer away
 * with the trade still open. At least 1 (0 asks for the channel's default). */
static int64_t code_lifetime_s(const op_t *o)
{
    if (!o->trade_expires_s)
        return 0;
    int64_t left = o->trade_expires_s - (int64_t)time(NULL);
    return left > 0 ? left : 1;
}

static void send_attempt(op_t *o)
{
    pc_ch_pay_t req = {
        .channel_id = o->route[o->attempt],
        .payment_no = o->payment_no,
        .amount = o->external_amount,
        .currency = o->currency,
        .method = o->method,
        .card_token = o->card_token[0] ? o->card_token : NULL,
        .card = o->has_card && !o->card_token[0] ? &o->card : NULL,
        .buyer_code = o->buyer_code[0] ? o->buyer_code : NULL,
        .expire_seconds = code_lifetime_s(o),
    };
    if (pc_channel_pay(o->e->ch, &req, pay_cb, o) < 0) {
        /* The channel vanished from the configuration: nothing was sent. */
        pc_ch_result_t r;
        memset(&r, 0, sizeof r);
        r.status = PC_CH_FAILED;
        r.retryable = 1;
        snprintf(r.code, sizeof r.code, "CHANNEL_UNAVAILABLE");
        pay_cb(o, &r);
    }
}

/* The channel's volume caps (a channel file's "volume"): the payment's
 * channel part is counted against them just before it is sent, exactly and
 * once (channel_volume_take, 0080_channel_volume.sql); a channel that is full
 * is passed over like a retryable decline (the next channel of the route,
 * else the payment fails with CHANNEL_LIMIT_EXCEEDED and its balance and
 * coupon are given back). The count is given back when the payment fails or
 * moves on (a trigger). */
static void volume_taken_cb(void *data, int status, pc_db_res_t *res)
{
    op_t *o = data;
    const char *ch = o->route[o->attempt];
    if (status || pc_db_rows(res) != 1) {
        /* Nothing was sent: the payment stays PROCESSING and the status
         * queries find the channel never had it. */
        pc_log_warn("engine.volume_unknown",
                    "payment %s: its count against %s's volume caps failed; not sent",
                    o->payment_no, ch);
        finish(o);
        return;
    }
    const char *outcome = pc_db_get(res, 0, 0);
    if (!strcmp(outcome, "GONE")) {
        pc_log_warn("engine.fallback_stopped", "payment %s was finished before %s was sent it",
                    o->payment_no, ch);
        finish(o);
        return;
    }
    pc_channels_t *chs = o->e->app->channels;
    pc_channels_note_volume(chs, ch, o->currency, pc_db_get(res, 0, 1),
                            strtoll(pc_db_get(res, 0, 2), NULL, 10));
    pc_channels_note_volume(chs, ch, o->currency, pc_db_get(res, 0, 3),
                            strtoll(pc_db_get(res, 0, 4), NULL, 10));
    if (!strcmp(outcome, "TAKEN")) {
        send_attempt(o);
        return;
    }
    pc_ch_result_t r;
    memset(&r, 0, sizeof r);
    r.status = PC_CH_FAILED;
    r.retryable = 1;
    snprintf(r.code, sizeof r.code, "CHANNEL_LIMIT_EXCEEDED");
    snprintf(r.message, sizeof r.message, "%s has reached its %s volume in %s", ch,
             !strcmp(outcome, "OVER_DAILY") ? "daily" : "monthly", o->currency);
    pc_log_info("engine.channel_full", "payment %s: %s", o->payment_no, r.message);
    pay_cb(o, &r);
}

static void attempt(op_t *o)
{
    const pc_channel_t *ch = pc_channels_find(o->e->app->channels, o->route[o->attempt]);
    /* The route was chosen when the payment was made; a payment held for
     * review or a challenge is sent later, perhaps after a reload changed
     * the channel's file: a channel that no longer takes the method, the
     * currency or the amount is passed over like a retryable decline (the
     * next channel of the route, else CHANNEL_UNAVAILABLE). Before, the
     * payment was sent to it all the same. */
    pc_pay_method_t m;
    if (ch && (pc_pay_method_parse(o->method, &m) < 0 ||
               !pc_channel_accepts(ch, m, o->currency, o->external_amount))) {
        pc_ch_result_t r;
        memset(&r, 0, sizeof r);
        r.status = PC_CH_FAILED;
        r.retryable = 1;
        snprintf(r.code, sizeof r.code, "CHANNEL_UNAVAILABLE");
        snprintf(r.message, sizeof r.message, "%s no longer takes %s payments of %lld %s", ch->id,
                 o->method, (long long)o->external_amount, o->currency);
        pc_log_warn("engine.channel_refuses", "payment %s: %s", o->payment_no, r.message);
        pay_cb(o, &r);
        return;
    }
    const pc_channel_amounts_t *a = ch ? pc_channel_amounts(ch, o->currency) : NULL;
    if (!a || (!a->daily_volume && !a->monthly_volume)) {
        send_attempt(o);
        return;
    }
    char daily[24], monthly[24];
    snprintf(daily, sizeof daily, "%lld", (long long)a->daily_volume);
    snprintf(monthly, sizeof monthly, "%lld", (long long)a->monthly_volume);
    const char *p[] = {o->payment_no, ch->id, daily, monthly};
    if (pc_db_query(o->e->app->db,
                    "SELECT outcome, day, day_used, month, month_used FROM "
                    "channel_volume_take($1, $2, $3::bigint, $4::bigint)",
                    4, p, volume_taken_cb, o) < 0)
        volume_taken_cb(o, PC_EUNAVAIL, NULL);
}

/* ---------- capture: the money arrived ---------- */

typedef struct {
    op_t *o;
} cap_t;

static void deciding_committed_cb(void *data, int status)
{
    op_t *o = data;
    if (status && o->answer) {
        /* Not recorded: finish() reads the payment as it is, and that
         * answer is recorded after the handler (pc_idem_store_in_tx). */
        json_decref(o->answer);
        o->answer = NULL;
    }
    o->commit_done(o, status);
}

static void answer_read_cb(void *data, int status, pc_db_res_t *res)
{
    op_t *o = data;
    if (!status && pc_db_rows(res) == 1) {
        o->answer = payment_json(res);
        /* Exactly the text pc_http_respond_json will send. */
        char *body = json_dumps(o->answer, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (!body || pc_idem_store_in_tx(o->idem, o->tx, 200, body) < 0) {
            json_decref(o->answer);
            o->answer = NULL;
        }
        free(body);
    }
    pc_db_tx_commit(o->tx, deciding_committed_cb, o);
}

/* Commits o's transaction, unless one of its steps failed. A statement that
 * failed has aborted the transaction (its COMMIT rolls back), but a step
 * refused before its statement was sent (the paid trade's ledger posting or
 * notice: out of memory, say) has not: the COMMIT would have recorded the
 * payment's success without them. Such a transaction is made to fail, so
 * that done hears of it in order, as of any other failure. */
static void commit_unless_failed(op_t *o, pc_db_done_cb done, void *data)
{
    if (o->step_failed)
        pc_db_tx_query(o->tx, "SELECT pc_require(false, 'engine_step')", 0, NULL, NULL, NULL);
    pc_db_tx_commit(o->tx, done, data);
}

/* Commits a transaction that decides the payment (its answer will not
 * change by this operation after it), then done. With the pay request's
 * idempotency record at hand (pc_pay_order_t.idem) the answer is read inside
 * the transaction first and recorded with it, so no write waits after the
 * commit. */
static void commit_deciding(op_t *o, pc_db_done_cb done)
{
    o->commit_done = done;
    if (o->idem && !o->step_failed && !pc_db_tx_failed(o->tx)) {
        const char *p[] = {o->payment_no};
        if (pc_db_tx_query(o->tx, PAYMENT_SQL, 1, p, answer_read_cb, o) == 0)
            return;
    }
    commit_unless_failed(o, deciding_committed_cb, o);
}

static void capture_commit_cb(void *data, int status)
{
    op_t *o = data;
    o->tx = NULL;
    if (status) {
        /* Not recorded: the payment stays as it was; a query or callback
         * will apply the success again. */
        pc_log_warn("engine.capture_failed", "payment %s: %s; left for repair", o->payment_no,
                    pc_strerror(status));
        not_applied(o);
    }
    finish(o);
}

static void orphan(op_t *o)
{
    /* The trade cannot take this money: hold all of it for the error refund.
     * A merchant's coupon subsidy is owed (receivable, which may go below
     * zero) until the error refund gives it back: the merchant's pending
     * money may be empty by now, and a debit it cannot cover aborted the
     * capture, leaving the buyer charged with nothing on record. */
    legs_t l = {.n = 0};
    payment_sources(o, PC_LEDGER_MERCHANT_RECEIVABLE, &l);
    leg(&l, PC_LEDGER_PLATFORM_ESCROW, NULL, o->currency, o->amount);
    post(o, "PAY_ORPHAN", l.legs, l.n);
    const char *p[] = {o->payment_no};
    if (pc_db_tx_query(o->tx, "UPDATE payments SET needs_error_refund = true WHERE payment_no = $1",
                       1, p, step_cb, o) < 0 &&
        !o->step_failed)
        o->step_failed = 2;
    pc_log_warn("engine.orphan_payment",
                "payment %s succeeded but trade %s is no longer payable: error refund due",
                o->payment_no, o->trade_no);
    count_payment(o, "ORPHANED");
}

static void paid_cb(void *data, int status, const char *trade_status)
{
    op_t *o = data;
    (void)trade_status;
    if (status == PC_ECONFLICT)
        orphan(o);
    else if (status && !o->step_failed)
        o->step_failed = 2;
    if (o->coupon_id[0]) {
        const char *p[] = {o->coupon_id, o->payment_no};
        pc_db_tx_query(
            o->tx, "UPDATE coupons SET status = 'USED' WHERE coupon_id = $1 AND payment_no = $2", 2,
            p, step_cb, o);
    }
    count_payment(o, "SUCCESS");
    commit_deciding(o, capture_commit_cb);
}

static void flagged_commit_cb(void *data, int status)
{
    op_t *o = data;
    o->tx = NULL;
    if (status)
        not_applied(o);
    finish(o);
}

/* Flags the payment locked in o's transaction for ops (needs_ops: GET
 * /admin/needs-ops, and an alert), with charged_elsewhere when the buyer may
 * have paid at another channel too, and commits only that. */
static void flag_and_commit(op_t *o, int charged_elsewhere)
{
    const char *p[] = {o->payment_no, charged_elsewhere ? "t" : "f"};
    pc_db_tx_query(o->tx,
                   "UPDATE payments SET needs_ops = true, charged_elsewhere = "
                   "charged_elsewhere OR $2::boolean, updated_at = now() WHERE payment_no = $1",
                   2, p, step_cb, o);
    if (charged_elsewhere) {
        /* The money went through the reporting channel: its volume counts
         * it, once (migration 0083). */
        const char *q[] = {o->payment_no, o->reporter};
        pc_db_tx_query(o->tx, "SELECT channel_volume_count_elsewhere($1, $2)", 2, q, step_cb, o);
    }
    pc_db_tx_commit(o->tx, flagged_commit_cb, o);
}

/* A success that was not captured: why, from the row as locked. Where the
 * channel contradicts what paycore holds, the payment is flagged for ops
 * (needs_ops: GET /admin/needs-ops, and an alert). */
static void not_captured(op_t *o)
{
    const pc_ch_result_t *r = &o->result;
    int open = !strcmp(o->row.status, "PROCESSING") || !strcmp(o->row.status, "UNKNOWN");
    int flag = 0;
    if (!o->row.found) {
        /* A channel charged a buyer for a payment paycore has no record of:
         * nothing to apply it to, and the channel was told it was taken.
         * Before, nothing said so until the day's statement. */
        pc_log_error("engine.unknown_payment",
                     "channel %s reported success for payment %s (its reference %s, amount "
                     "%lld), which paycore has no record of: nothing applied; the channel's "
                     "statement will show it (MISSING_LOCAL)",
                     o->reporter, o->payment_no, r->channel_txn_id, (long long)r->amount);
        char labels[96];
        snprintf(labels, sizeof labels, "method=\"\",channel=\"%s\",status=\"UNKNOWN_PAYMENT\"",
                 o->reporter);
        pc_metrics_add("pc_payments_total", labels, 1);
    } else if (strcmp(o->row.channel_id, o->reporter) != 0 && o->row.routed) {
        /* A channel the payment fell back from (its retryable decline, or
         * no answer in time) charged the buyer after all: with the payment
         * paid, or still to be paid, by the next channel, the buyer may pay
         * twice. Not applied (the payment is the next channel's now), but
         * for ops to see, whatever the payment's state. */
        pc_log_error("engine.earlier_channel_success",
                     "channel %s, which payment %s fell back from to channel %s, reported "
                     "success: the buyer may be charged twice: flagged for ops",
                     o->reporter, o->payment_no, o->row.channel_id);
        count_payment(o, "EARLIER_CHANNEL_SUCCESS");
        flag = 2; /* kept through the capture or failure by its own channel */
    } else if (!open && strcmp(o->row.status, "FAILED")) {
        /* Finished already (a duplicate callback, a query and a callback
         * crossing): nothing to do. */
    } else if (strcmp(o->row.channel_id, o->reporter) != 0) {
        pc_log_warn("engine.wrong_channel",
                    "channel %s reported success for payment %s, which is with channel %s: not "
                    "applied",
                    o->reporter, o->payment_no, o->row.channel_id);
        count_payment(o, "WRONG_CHANNEL");
    } else if (!strcmp(o->row.status, "FAILED") && o->row.adjusted) {
        /* The statement said it was paid and ops booked that money by a
         * reconciliation adjustment: capturing it now would book it twice. */
        pc_log_error("engine.adjusted_success",
                     "channel %s reported success for payment %s, failed here and already "
                     "booked by a reconciliation adjustment: not applied, flagged for ops",
                     o->reporter, o->payment_no);
        count_payment(o, "ADJUSTED_SUCCESS");
        flag = 1;
    } else if ((r->amount > 0 && r->amount != o->row.external_amount) ||
               (r->currency[0] && strcmp(r->currency, o->row.currency) != 0)) {
        /* The channel took another sum than was asked: neither the
         * merchant's credit nor a refund can be decided here. */
        pc_log_error("engine.amount_mismatch",
                     "channel %s reported success for payment %s of %lld %s, not %lld %s: flagged "
                     "for ops",
                     o->reporter, o->payment_no, (long long)r->amount, r->currency,
                     (long long)o->row.external_amount, o->row.currency);
        count_payment(o, "AMOUNT_MISMATCH");
        flag = 1;
    } else {
        /* FAILED, with a balance or coupon part given back that cannot be
         * taken again (spent, used by another payment): the buyer was
         * charged by the channel as well. */
        pc_log_error("engine.late_success_unapplied",
                     "channel %s reported success for payment %s, failed with its balance or "
                     "coupon part given back and no longer there to take: flagged for ops",
                     o->reporter, o->payment_no);
        count_payment(o, "LATE_SUCCESS_UNAPPLIED");
        flag = 1;
    }
    if (flag) {
        flag_and_commit(o, flag == 2);
        return;
    }
    pc_db_tx_rollback(o->tx);
    o->tx = NULL;
    finish(o);
}

/* The payment's row as a capture or release locked it (o->row): status and
 * channel always, the capture's other columns when it read them. */
static void read_locked_row(op_t *o, int status, pc_db_res_t *res)
{
    if (status || pc_db_rows(res) != 1)
        return;
    o->row.found = 1;
    snprintf(o->row.status, sizeof o->row.status, "%s", pc_db_val(res, 0, "status"));
    snprintf(o->row.channel_id, sizeof o->row.channel_id, "%s", pc_db_val(res, 0, "channel_id"));
    if (pc_db_col(res, "external_amount") < 0)
        return;
    o->row.external_amount = pc_db_val_i64(res, 0, "external_amount");
    snprintf(o->row.currency, sizeof o->row.currency, "%s", pc_db_val(res, 0, "currency"));
    o->row.routed = pc_db_val(res, 0, "routed")[0] == 't';
    o->row.adjusted = pc_db_val(res, 0, "adjusted")[0] == 't';
}

static void capture_locked_cb(void *data, int status, pc_db_res_t *res)
{
    read_locked_row(data, status, res);
}

/* A late success of a payment whose balance and coupon parts were given
 * back when it failed: the capture's UPDATE matched it only while both were
 * there to take again (RETAKABLE), and they are taken in its transaction —
 * the coupon locked again (pc_require: used meanwhile by another payment
 * fails the capture, left for the next report), the balance from the wallet
 * (which may not go below zero). The payment is then what the buyer paid:
 * it pays the trade, or all of it goes back by an error refund. */
static void retake(op_t *o)
{
    o->retaken = 1;
    pc_log_warn("engine.late_success_retaken",
                "payment %s: its balance part %lld and coupon part %lld, given back when it "
                "failed, are taken again",
                o->payment_no, (long long)o->balance_amount, (long long)o->coupon_amount);
    if (!o->coupon_id[0])
        return;
    /* The trade first, as a pay takes it (trade, then coupon): taken after
     * the coupon here, a pay of the same trade holding the trade and
     * waiting for the coupon made a deadlock, and a capture that lost it
     * was flagged for ops with the buyer charged twice. (pc_trade_mark_paid
     * locks it next anyway.) */
    const char *t[] = {o->trade_no};
    pc_db_tx_query(o->tx, "SELECT 1 FROM trades WHERE trade_no = $1 FOR UPDATE", 1, t, step_cb, o);
    const char *p[] = {o->coupon_id, o->payment_no};
    pc_db_tx_query(o->tx,
                   "WITH c AS (UPDATE coupons SET status = 'LOCKED', payment_no = $2 WHERE "
                   "coupon_id = $1 AND status = 'AVAILABLE' RETURNING 1) SELECT "
                   "pc_require(EXISTS (SELECT 1 FROM c), 'coupon_locked')",
                   2, p, step_cb, o);
}

static void captured_row_cb(void *data, int status, pc_db_res_t *res)
{
    op_t *o = data;
    if (status) {
        pc_db_tx_rollback(o->tx);
        o->tx = NULL;
        not_applied(o);
        finish(o);
        return;
    }
    if (pc_db_rows(res) == 0 && o->by_ops) {
        fail_op(o, PC_API_INVALID_STATE, "no longer in flight and flagged for ops");
        return;
    }
    if (pc_db_rows(res) == 0) {
        not_captured(o);
        return;
    }
    int late = !strcmp(o->row.status, "FAILED");
    if (late) {
        /* The channel charged the buyer after all (a success after its
         * decline, or after "no record" failed the payment): the money is
         * there, so the payment is a success. It pays the trade if the
         * trade still waits; else it is held for an error refund. */
        pc_log_warn("engine.late_success", "payment %s failed earlier, then %s reported success",
                    o->payment_no, o->reporter);
        count_payment(o, "LATE_SUCCESS");
    }
    /* Reload what this payment is made of: the row is the truth (a callback
     * may finish a payment this process never started). */
    snprintf(o->trade_no, sizeof o->trade_no, "%s", pc_db_val(res, 0, "trade_no"));
    snprintf(o->currency, sizeof o->currency, "%s", pc_db_val(res, 0, "currency"));
    snprintf(o->method, sizeof o->method, "%s", pc_db_val(res, 0, "method_type"));
    snprintf(o->route[0], sizeof o->route[0], "%s", pc_db_val(res, 0, "channel_id"));
    o->attempt = 0;
    o->nroute = o->nroute ? o->nroute : 1;
    o->amount = pc_db_val_i64(res, 0, "amount");
    o->balance_amount = pc_db_val_i64(res, 0, "balance_amount");
    o->coupon_amount = pc_db_val_i64(res, 0, "coupon_amount");
    o->external_amount = pc_db_val_i64(res, 0, "external_amount");
    snprintf(o->coupon_id, sizeof o->coupon_id, "%s", pc_db_val(res, 0, "coupon_id"));
    snprintf(o->coupon_funder, sizeof o->coupon_funder, "%s", pc_db_val(res, 0, "coupon_funder"));
    snprintf(o->wallet_owner, sizeof o->wallet_owner, "%s", pc_db_val(res, 0, "wallet"));
    if (late && (o->balance_amount > 0 || o->coupon_amount > 0))
        retake(o);
    legs_t l = {.n = 0};
    payment_sources(o, PC_LEDGER_MERCHANT_PENDING, &l);
    pc_trade_payment_t pay = {o->trade_no, o->payment_no, o->amount, o->currency,
                              l.legs,      l.n,           NULL,      NULL};
    if (pc_trade_mark_paid(o->tx, &pay, paid_cb, o) < 0)
        fail_op(o, PC_API_INTERNAL, "cannot apply the payment");
}

/* SQL: true when ops booked the money of payment p (the alias) by a
 * reconciliation adjustment (recon_diffs_adjusted, migration 0063): a late
 * success must not capture it again. Read twice by the capture, to say why
 * (the row lock) and to refuse (the pipelined UPDATE cannot wait for that
 * answer): one probe of a partial index each. */
/* SQL: true when the balance and coupon parts of payment p (the alias),
 * given back when it failed, are there to take again: the wallet holds the
 * balance part, the coupon is unused. */
#define RETAKABLE                                                                                  \
    "(p.balance_amount = 0 OR coalesce(ledger_balance('buyer:' || coalesce(p.wallet_owner, "       \
    "p.buyer_id) || ':wallet:' || p.currency), 0) >= p.balance_amount) AND (p.coupon_amount = 0 "  \
    "OR EXISTS (SELECT 1 FROM coupons c WHERE c.coupon_id = p.coupon_id AND c.status = "           \
    "'AVAILABLE'))"

#define ADJUSTED_BY_RECON                                                                          \
    "EXISTS (SELECT 1 FROM recon_diffs d WHERE d.local_table = 'payments' AND d.local_ref = "      \
    "p.payment_no AND d.ledger_txn_id IS NOT NULL)"

static void capture_begin_cb(void *data, int status, pc_db_tx_t *tx)
{
    op_t *o = data;
    if (status) {
        not_applied(o);
        finish(o);
        return;
    }
    o->tx = tx;
    const pc_ch_result_t *r = &o->result;
    char amount[24];
    snprintf(amount, sizeof amount, "%lld", (long long)(r->amount > 0 ? r->amount : 0));
    const char *p[] = {o->payment_no,
                       r->channel_txn_id[0] ? r->channel_txn_id : NULL,
                       r->card_token[0] ? r->card_token : NULL,
                       r->card_brand[0] ? r->card_brand : NULL,
                       r->card_last4[0] ? r->card_last4 : NULL,
                       o->reporter,
                       amount,
                       r->currency[0] ? r->currency : NULL,
                       o->by_ops ? "t" : "f"};
    /* The row is locked by a statement of its own first, which also tells
     * why a success was not captured. Captured: a payment in flight, or one
     * failed after it was sent (a success after the failure: the buyer was
     * charged) whose balance and coupon parts, if any, are there to take
     * again, and only when its own channel says so, for the sum it was
     * asked. */
    const char *lp[] = {o->payment_no, o->reporter};
    if (pc_db_tx_query(tx,
                       "SELECT p.status, coalesce(p.channel_id, '') AS channel_id, "
                       "p.external_amount, p.currency, coalesce(p.route ? $2, false) AS "
                       "routed, " ADJUSTED_BY_RECON
                       " AS adjusted FROM payments p WHERE p.payment_no = $1 "
                       "FOR UPDATE OF p",
                       2, lp, capture_locked_cb, o) < 0 ||
        pc_db_tx_query(
            tx,
            "UPDATE payments p SET status = 'SUCCESS', channel_txn_id = "
            "coalesce($2, p.channel_txn_id), card_token = coalesce($3, p.card_token), "
            "card_brand = coalesce($4, p.card_brand), card_last4 = coalesce($5, "
            "p.card_last4), action = NULL, failure_code = NULL, failure_message = "
            "NULL, needs_ops = p.charged_elsewhere, finished_at = now(), updated_at = now() WHERE "
            "p.payment_no = $1 AND "
            "p.channel_id = $6 AND ($7::bigint = 0 OR p.external_amount = $7::bigint) "
            "AND ($8::text IS NULL OR p.currency = $8) "
            "AND (p.status IN ('PROCESSING', 'UNKNOWN') OR (p.status = 'FAILED' AND "
            "p.sent_at IS NOT NULL AND " RETAKABLE " AND NOT " ADJUSTED_BY_RECON
            ")) AND (NOT $9::boolean OR (p.status IN ('PROCESSING', "
            "'UNKNOWN') AND p.needs_ops)) "
            "RETURNING p.trade_no, p.currency, p.method_type, p.channel_id, "
            "p.amount, "
            "p.balance_amount, p.coupon_amount, p.external_amount, "
            "coalesce(p.coupon_id, '') AS coupon_id, coalesce((SELECT "
            "c.merchant_id "
            "FROM coupons c WHERE c.coupon_id = p.coupon_id AND c.funded_by = "
            "'MERCHANT'), '') AS coupon_funder, coalesce(p.wallet_owner, p.buyer_id, '') AS "
            "wallet",
            9, p, captured_row_cb, o) < 0)
        fail_op(o, PC_API_UNAVAILABLE, "database unavailable");
}

static void capture(op_t *o)
{
    if (pc_db_begin(o->e->app->db, NULL, capture_begin_cb, o) < 0)
        finish(o);
}

/* ---------- release: the payment failed ---------- */

/* Queues, in o's transaction, the release of the coupon the payment holds
 * (if any): it can be used again. */
static void free_coupon(op_t *o)
{
    const char *p[] = {o->payment_no};
    pc_db_tx_query(o->tx,
                   "UPDATE coupons SET status = 'AVAILABLE', payment_no = NULL WHERE payment_no = "
                   "$1 AND status = 'LOCKED'",
                   1, p, step_cb, o);
}

/* Queues, in o's transaction, the record of ops' decision on a payment
 * held for review (when o carries one): its failure fails the decision. */
static void record_review(op_t *o, const char *decision)
{
    if (!o->review_who[0])
        return;
    const char *p[] = {o->payment_no, decision, o->review_who,
                       o->review_why[0] ? o->review_why : NULL};
    pc_db_tx_query(o->tx,
                   "INSERT INTO review_decisions (payment_no, decision, who, why) VALUES ($1, $2, "
                   "$3, $4)",
                   4, p, step_cb, o);
}

static void keep_review(op_t *o, const pc_engine_review_t *review)
{
    if (!review)
        return;
    snprintf(o->review_who, sizeof o->review_who, "%s", review->who ? review->who : "ops");
    snprintf(o->review_why, sizeof o->review_why, "%s", review->why ? review->why : "");
}

static void release_locked_cb(void *data, int status, pc_db_res_t *res)
{
    step_cb(data, status, res);
    read_locked_row(data, status, res);
}

static void released_row_cb(void *data, int status, pc_db_res_t *res)
{
    op_t *o = data;
    if (!status && pc_db_rows(res) == 0 && o->reject_waiting) {
        fail_op(o, PC_API_INVALID_STATE, "the payment is not waiting for review or a challenge");
        return;
    }
    if (!status && pc_db_rows(res) == 0 && o->by_ops) {
        fail_op(o, PC_API_INVALID_STATE, "no longer in flight and flagged for ops");
        return;
    }
    if (!status && pc_db_rows(res) == 0 && o->reporter[0] && o->row.found &&
        !strcmp(o->row.status, "SUCCESS") && !strcmp(o->row.channel_id, o->reporter)) {
        /* Its own channel says a payment paycore holds as paid (the
         * merchant credited) failed or was closed: a reversal, or a
         * success believed wrongly. Nothing moves here; ops look. It was
         * acknowledged with nobody told. */
        pc_log_error("engine.success_contradicted",
                     "channel %s says payment %s failed (%s), which succeeded here: flagged for "
                     "ops",
                     o->reporter, o->payment_no, o->failure_code);
        count_payment(o, "SUCCESS_CONTRADICTED");
        flag_and_commit(o, 0);
        return;
    }
    if (status || pc_db_rows(res) == 0) {
        pc_db_tx_rollback(o->tx);
        o->tx = NULL;
        if (status)
            not_applied(o);
        finish(o);
        return;
    }
    const char *cur = pc_db_val(res, 0, "currency");
    int64_t held = pc_db_val_i64(res, 0, "balance_amount");
    const char *buyer = pc_db_val(res, 0, "buyer_id");
    legs_t l = {.n = 0};
    leg(&l, PC_LEDGER_PLATFORM_ESCROW, NULL, cur, -held);
    leg(&l, PC_LEDGER_BUYER_WALLET, buyer, cur, held);
    if (strcmp(pc_db_val(res, 0, "held"), "true") == 0)
        post(o, "PAY_RELEASE", l.legs, l.n);
    free_coupon(o);
    if (o->reject_waiting)
        record_review(o, "REJECT");
    count_payment(o, "FAILED");
    commit_deciding(o, capture_commit_cb);
}

static void release_begin_cb(void *data, int status, pc_db_tx_t *tx)
{
    op_t *o = data;
    if (status) {
        not_applied(o);
        finish(o);
        return;
    }
    o->tx = tx;
    const char *p[] = {o->payment_no,
                       o->failure_code,
                       o->failure_message,
                       o->reject_waiting ? "t" : "f",
                       o->reporter[0] ? o->reporter : NULL,
                       o->by_ops ? "t" : "f"};
    /* An ops reject fails only a payment still waiting for review or a
     * challenge (it never held the balance); a channel's failure only one
     * in flight, with that channel. A reject that matched an in-flight payment gave the
     * balance back while the channel could still charge the card. The row
     * is locked by a statement of its own first, so that the update, and
     * its "held" (did the balance go to escrow), see whatever the
     * transaction that held the lock committed. */
    if (pc_db_tx_query(tx,
                       "SELECT status, coalesce(channel_id, '') AS channel_id FROM payments WHERE "
                       "payment_no = $1 FOR UPDATE",
                       1, p, release_locked_cb, o) < 0 ||
        pc_db_tx_query(
            tx,
            "UPDATE payments SET status = 'FAILED', failure_code = $2, "
            "failure_message = $3, action = NULL, needs_ops = charged_elsewhere, finished_at = "
            "now(), "
            "updated_at = now() WHERE payment_no = $1 AND CASE WHEN $4::boolean THEN status IN "
            "('REVIEW', "
            "'CHALLENGE') ELSE status IN ('PROCESSING', 'UNKNOWN') AND channel_id = $5 END "
            "AND (NOT $6::boolean OR needs_ops) RETURNING currency, "
            "balance_amount, coalesce(wallet_owner, buyer_id, '') AS buyer_id, (EXISTS (SELECT "
            "1 FROM ledger_txns WHERE kind = 'PAY_HOLD' AND ref_type = 'payment' AND ref_id = "
            "$1))::text AS held",
            6, p, released_row_cb, o) < 0)
        fail_op(o, PC_API_UNAVAILABLE, "database unavailable");
}

static void release(op_t *o)
{
    if (pc_db_begin(o->e->app->db, NULL, release_begin_cb, o) < 0)
        finish(o);
}

/* ---------- start: record, hold, then go ---------- */

static void hold_commit_cb(void *data, int status)
{
    op_t *o = data;
    o->tx = NULL;
    if (status) {
        o->err = o->step_failed == 1    ? PC_API_INSUFFICIENT_BALANCE
                 : o->step_failed == 3  ? PC_API_INVALID_REQUEST
                 : o->step_failed == 4  ? PC_API_INVALID_STATE
                 : pc_retryable(status) ? PC_API_UNAVAILABLE
                                        : PC_API_INTERNAL;
        snprintf(o->err_msg, sizeof o->err_msg, "%s",
                 o->step_failed == 1   ? "the wallet balance is not enough"
                 : o->step_failed == 3 ? "the coupon cannot be used"
                 : o->step_failed == 4 ? "another payment of this trade is in progress"
                                       : "could not record the payment");
        finish(o);
        return;
    }
    /* An ops release is applied and recorded with this commit: what the
     * channel does next is the payment's own course, answered as it stands
     * (not "not applied; retry", which a retry would meet with 409). */
    o->review_who[0] = '\0';
    if (o->paid_now)
        count_payment(o, "SUCCESS");
    if (o->external_amount > 0)
        attempt(o);
    else
        finish(o);
}

static void coupon_locked_cb(void *data, int status, pc_db_res_t *res)
{
    op_t *o = data;
    if (status && !o->step_failed)
        o->step_failed = !strcmp(pc_db_constraint(res), "coupon_locked") ? 3 : 2;
}

/* First transaction: when nothing goes to a channel after it, it decides.
 * Else the payment goes to its channel once it commits, and its answer is
 * recorded only later: the pay request's key remembers the payment with
 * it, so that a retry of the request is answered with this payment instead
 * of starting another (pc_idem_note_effect_in_tx). */
static void commit_first(op_t *o)
{
    if (o->external_amount == 0) {
        commit_deciding(o, hold_commit_cb);
        return;
    }
    if (pc_idem_note_effect_in_tx(o->idem, o->tx, o->payment_no) < 0 && !o->step_failed)
        o->step_failed = 2;
    commit_unless_failed(o, hold_commit_cb, o);
}

static void internal_paid_cb(void *data, int status, const char *trade_status)
{
    op_t *o = data;
    (void)trade_status;
    if (status && !o->step_failed)
        o->step_failed = 2; /* the trade was locked and payable: a failure here is real */
    o->paid_now = !status;  /* counted once committed (hold_commit_cb) */
    commit_first(o);
}

/* The payment row is in: lock the coupon, move the balance, and either pay
 * the trade now (nothing external) or leave it to the channel. The coupon
 * may already be locked by this payment: a release from review or a passed
 * challenge runs the hold again. */
static void hold(op_t *o, const char *status)
{
    /* A payment refused by risk is recorded FAILED and holds nothing: a
     * coupon it locked would stay locked, since nothing releases a
     * payment that is already failed. */
    if (o->coupon_id[0] && strcmp(status, "FAILED") != 0) {
        char amt[24];
        snprintf(amt, sizeof amt, "%lld", (long long)o->amount);
        const char *p[] = {o->coupon_id, o->payment_no, o->currency, o->buyer_id, amt};
        /* A coupon this payment locked while it was valid stays its own
         * past its expiry: a review or a challenge can outlast it, and the
         * release was refused (400), the payment left waiting, the trade
         * blocked. A coupon another payment locked a moment before fails
         * the whole transaction (pc_require), whatever comes after it: as a write that
         * touched no row it aborted nothing, and the payment went on (and
         * was charged at the channel) with a coupon it did not hold. */
        pc_db_tx_query(o->tx,
                       "WITH c AS (UPDATE coupons SET status = 'LOCKED', payment_no = $2 WHERE "
                       "coupon_id = $1 AND (status = 'AVAILABLE' OR (status = 'LOCKED' AND "
                       "payment_no = $2)) AND currency = $3 AND buyer_id = $4 AND (expires_at > "
                       "now() OR status = 'LOCKED') AND min_amount <= $5::bigint RETURNING 1) "
                       "SELECT "
                       "pc_require(EXISTS (SELECT 1 FROM c), 'coupon_locked')",
                       5, p, coupon_locked_cb, o);
    }
    if (!strcmp(status, "SUCCESS")) {
        /* Wallet and coupon only: the row was written SUCCESS (inserted so,
         * or moved so from REVIEW / CHALLENGE) in this transaction, which
         * pays the trade too, or commits nothing. */
        legs_t l = {.n = 0};
        leg(&l, PC_LEDGER_BUYER_WALLET, wallet_of(o), o->currency, -o->balance_amount);
        leg(&l, o->coupon_funder[0] ? PC_LEDGER_MERCHANT_PENDING : PC_LEDGER_PLATFORM_MARKETING,
            o->coupon_funder[0] ? o->coupon_funder : NULL, o->currency, -o->coupon_amount);
        if (o->coupon_id[0]) {
            const char *cp[] = {o->coupon_id, o->payment_no};
            pc_db_tx_query(o->tx,
                           "UPDATE coupons SET status = 'USED' WHERE coupon_id = $1 AND "
                           "payment_no = $2",
                           2, cp, step_cb, o);
        }
        /* The wallet is debited by the trade's posting: a wallet another
         * payment emptied since the cashier looked is 422, as it is with a
         * channel part (PAY_HOLD). Before, only logged: 500. */
        pc_trade_payment_t pay = {o->trade_no, o->payment_no, o->amount,      o->currency,
                                  l.legs,      l.n,           ledger_step_cb, o};
        if (pc_trade_mark_paid(o->tx, &pay, internal_paid_cb, o) < 0)
            fail_op(o, PC_API_INTERNAL, "cannot apply the payment");
        return;
    }
    if (!strcmp(status, "PROCESSING") && o->balance_amount > 0) {
        legs_t l = {.n = 0};
        leg(&l, PC_LEDGER_BUYER_WALLET, wallet_of(o), o->currency, -o->balance_amount);
        leg(&l, PC_LEDGER_PLATFORM_ESCROW, NULL, o->currency, o->balance_amount);
        post(o, "PAY_HOLD", l.legs, l.n);
    }
    if (strcmp(status, "PROCESSING") != 0)
        o->external_amount = 0; /* REVIEW / CHALLENGE / FAILED: nothing goes out now */
    commit_first(o);
}

typedef struct {
    op_t *o;
    const char *status;
    char *route_json, *reasons, *versions;
    char amounts[4][24];
    char risk_score[16];
    const char *risk_decision, *challenge_id, *client_ip, *device_id;
    char challenge_hash[65], demo_code[16], challenge_card_key[32];
    char first_query[24];
    /* What the trade row said (its lock and the count of open attempts go
     * out together; the count's answer decides). */
    pc_api_err_t trade_err;
    char trade_msg[64];
} start_t;

static void start_free(start_t *s)
{
    free(s->route_json);
    free(s->reasons);
    free(s->versions);
    free(s);
}

static void open_count_cb(void *data, int status, pc_db_res_t *res);
static void insert_cb(void *data, int status, pc_db_res_t *res);

/* now() in the locking statement is its transaction's start: a wait for the
 * trade's lock (another attempt's transaction) did not count. The answer
 * arrives once the lock is granted: a trade whose expiry (whole seconds,
 * rounded down) has passed by a full second by then is expired too. */
static bool trade_expired_after_wait(int64_t expires_s)
{
    return expires_s < (int64_t)time(NULL);
}

static void locked_trade_cb(void *data, int status, pc_db_res_t *res)
{
    start_t *s = data;
    if (status) {
        s->trade_err = PC_API_UNAVAILABLE;
        snprintf(s->trade_msg, sizeof s->trade_msg, "database unavailable");
    } else if (pc_db_rows(res) == 0) {
        s->trade_err = PC_API_NOT_FOUND;
        snprintf(s->trade_msg, sizeof s->trade_msg, "no such trade");
    } else if (strcmp(pc_db_get(res, 0, 0), "WAIT_BUYER_PAY") != 0) {
        s->trade_err = PC_API_INVALID_STATE;
        snprintf(s->trade_msg, sizeof s->trade_msg, "the trade is %s", pc_db_get(res, 0, 0));
    } else if (!strcmp(pc_db_get(res, 0, 1), "t") ||
               trade_expired_after_wait(strtoll(pc_db_get(res, 0, 2), NULL, 10))) {
        /* The cashier's check was made before risk, Redis and the card's
         * tokenization; a payment started on an expired trade was charged
         * and then refunded when the sweep closed it. */
        s->trade_err = PC_API_INVALID_STATE;
        snprintf(s->trade_msg, sizeof s->trade_msg, "the trade has expired");
    } else {
        s->o->trade_expires_s = strtoll(pc_db_get(res, 0, 2), NULL, 10);
    }
}

const char *pc_engine_limit_message(const char *which)
{
    return !strcmp(which, "card") ? "this payment would pass the card's limits"
                                  : "this payment would pass the buyer's limits";
}

/* The buyer's and the card's usage, read after their locks were granted: the
 * first error found by the trade lock wins, then this. */
static void limits_cb(void *data, int status, pc_db_res_t *res)
{
    start_t *s = data;
    if (s->trade_err != PC_API_OK)
        return;
    if (status) {
        s->trade_err = PC_API_UNAVAILABLE;
        snprintf(s->trade_msg, sizeof s->trade_msg, "database unavailable");
    } else if (pc_db_get(res, 0, 0)[0]) {
        s->trade_err = PC_API_LIMIT_EXCEEDED;
        snprintf(s->trade_msg, sizeof s->trade_msg, "%s",
                 pc_engine_limit_message(pc_db_get(res, 0, 0)));
    }
}

static void insert_cb(void *data, int status, pc_db_res_t *res)
{
    op_t *o = data;
    if (status == PC_ECONFLICT && !strcmp(pc_db_constraint(res), "payments_one_open_per_trade"))
        o->step_failed = 4;
    else
        step_cb(data, status, res);
}

static void open_count_cb(void *data, int status, pc_db_res_t *res)
{
    start_t *s = data;
    op_t *o = s->o;
    if (status && s->trade_err == PC_API_OK) {
        s->trade_err = PC_API_UNAVAILABLE;
        snprintf(s->trade_msg, sizeof s->trade_msg, "database unavailable");
    }
    if (s->trade_err != PC_API_OK) {
        pc_api_err_t err = s->trade_err;
        char msg[sizeof s->trade_msg];
        snprintf(msg, sizeof msg, "%s", s->trade_msg);
        start_free(s);
        fail_op(o, err, msg);
        return;
    }
    if (pc_db_get_i64(res, 0, 0) > 0) {
        start_free(s);
        fail_op(o, PC_API_INVALID_STATE, "another payment of this trade is in progress");
        return;
    }
    char fee[24];
    const char *p[] = {o->payment_no,
                       o->trade_no,
                       o->merchant_id,
                       o->buyer_id[0] ? o->buyer_id : NULL,
                       s->status,
                       s->amounts[0],
                       o->currency,
                       o->method,
                       s->amounts[1],
                       o->coupon_id[0] ? o->coupon_id : NULL,
                       s->amounts[2],
                       s->amounts[3],
                       o->nroute ? o->route[0] : NULL,
                       o->card_id[0] ? o->card_id : NULL,
                       o->card_brand[0] ? o->card_brand : NULL,
                       o->card_last4[0] ? o->card_last4 : NULL,
                       s->route_json,
                       o->failure_code[0] ? o->failure_code : NULL,
                       o->failure_message[0] ? o->failure_message : NULL,
                       s->risk_decision,
                       s->risk_score,
                       s->reasons,
                       s->versions,
                       s->client_ip,
                       s->device_id,
                       s->challenge_id,
                       o->card_token[0] ? o->card_token : NULL,
                       s->first_query,
                       o->wallet_owner[0] ? o->wallet_owner : NULL,
                       o->card_fp[0] ? o->card_fp : NULL,
                       channel_fee_arg(o, o->nroute ? o->route[0] : NULL, fee)};
    pc_db_tx_query(o->tx,
                   "INSERT INTO payments (payment_no, trade_no, merchant_id, buyer_id, status, "
                   "amount, currency, method_type, balance_amount, coupon_id, coupon_amount, "
                   "external_amount, channel_id, card_id, card_brand, card_last4, route, "
                   "failure_code, failure_message, risk_decision, risk_score, risk_reasons, "
                   "rule_versions, client_ip, device_id, challenge_id, card_token, finished_at, "
                   "next_query_at, wallet_owner, sent_at, card_fp, channel_fee) "
                   "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, "
                   "$16, $17::jsonb, $18, $19, $20, $21::int, $22::jsonb, $23::jsonb, $24, $25, "
                   "$26, $27, CASE WHEN $5 IN ('FAILED', 'SUCCESS') THEN now() END, CASE WHEN $5 = "
                   "'PROCESSING' "
                   "THEN now() + $28::int * interval '1 millisecond' END, $29, CASE WHEN $5 = "
                   "'PROCESSING' THEN now() END, $30, $31::bigint)",
                   31, p, insert_cb, o);
    if (!strcmp(s->status, "CHALLENGE") && s->challenge_id) {
        const char *c[] = {s->challenge_id, o->payment_no, s->challenge_hash,
                           s->demo_code[0] ? s->demo_code : NULL,
                           s->challenge_card_key[0] ? s->challenge_card_key : NULL};
        pc_db_tx_query(o->tx,
                       "INSERT INTO challenges (challenge_id, payment_no, code_hash, demo_code, "
                       "expires_at, card_key) VALUES ($1, $2, $3, $4, now() + interval '10 "
                       "minutes', $5)",
                       5, c, step_cb, o);
    }
    const char *st = s->status;
    start_free(s);
    hold(o, st);
}

/* Queues, in o's transaction, the per-buyer and per-card locks and the
 * statement that tells whether o (buyer, amount, card) would pass a limit:
 * one text row, '' when within them, else 'buyer' or 'card'. The buyer's
 * limits read the buyer's payments; the card's daily limit reads every
 * payment made with the card (card_fp), whoever paid: bound or typed, by a
 * buyer or a guest. The locks are held to the commit that records the
 * payment as counted, so pays of one buyer or one card at the same moment,
 * on any node, each see the others; the usage is read by a statement of its
 * own, which starts after the locks were granted. Takes the trade lock first
 * (the caller did), then the buyer's, then the card's: the same order
 * everywhere. A payer with neither buyer nor card has no limit to check.
 * Limits are per currency, in its minor units: payments in other currencies
 * are not added in (a yen is not a cent). */
static int queue_limit_check(op_t *o, pc_db_query_cb cb, void *data)
{
    /* Parameters are copied when queued: locals will do. */
    char amount[24], day[24], month[24], card_day[24], single[24], card_single[24], card_month[24];
    const pc_config_t *cfg = o->e->app->cfg;
    const char *buyer = o->buyer_id[0] ? o->buyer_id : NULL;
    const char *card = o->card_fp[0] ? o->card_fp : NULL;
    snprintf(amount, sizeof amount, "%lld", (long long)o->amount);
    snprintf(day, sizeof day, "%lld", (long long)pc_config_limit(cfg, "buyer_daily", o->currency));
    snprintf(month, sizeof month, "%lld",
             (long long)pc_config_limit(cfg, "buyer_monthly", o->currency));
    snprintf(card_day, sizeof card_day, "%lld",
             (long long)pc_config_limit(cfg, "card_daily", o->currency));
    snprintf(single, sizeof single, "%lld",
             (long long)pc_config_limit(cfg, "buyer_single", o->currency));
    snprintf(card_single, sizeof card_single, "%lld",
             (long long)pc_config_limit(cfg, "card_single", o->currency));
    snprintf(card_month, sizeof card_month, "%lld",
             (long long)pc_config_limit(cfg, "card_monthly", o->currency));
    const char *b[] = {buyer};
    const char *c[] = {card};
    const char *u[] = {buyer,         amount,      day,    month,       card,      card_day,
                       o->payment_no, o->currency, single, card_single, card_month};
    if (buyer && pc_db_tx_query(o->tx,
                                "SELECT pg_advisory_xact_lock(hashtextextended('pc:buyer:' || $1, "
                                "0))",
                                1, b, step_cb, o) < 0)
        return -1;
    if (card &&
        pc_db_tx_query(o->tx, "SELECT pg_advisory_xact_lock(hashtextextended('pc:card:' || $1, 0))",
                       1, c, step_cb, o) < 0)
        return -1;
    return pc_db_tx_query(
        o->tx,
        "SELECT CASE WHEN $1::text IS NOT NULL AND ($2::bigint > $9::bigint OR (SELECT "
        "coalesce(sum(amount) FILTER (WHERE " PC_USED_DAY "), 0) + $2::bigint > $3::bigint OR "
        "coalesce(sum(amount) FILTER (WHERE " PC_USED_MONTH "), 0) + $2::bigint > $4::bigint "
        "FROM payments WHERE buyer_id = $1 AND " PC_USED_ROWS " AND payment_no <> $7 AND "
        "currency = $8)) THEN 'buyer' WHEN $5::text IS NOT NULL AND ($2::bigint > $10::bigint OR "
        "(SELECT coalesce(sum(amount) FILTER (WHERE " PC_USED_DAY "), 0) + $2::bigint > "
        "$6::bigint OR coalesce(sum(amount) FILTER (WHERE " PC_USED_MONTH "), 0) + $2::bigint > "
        "$11::bigint FROM payments WHERE card_fp = $5 AND " PC_USED_ROWS " AND payment_no <> $7 "
        "AND currency = $8)) THEN 'card' ELSE '' END",
        11, u, cb, data);
}

static void start_begin_cb(void *data, int status, pc_db_tx_t *tx)
{
    start_t *s = data;
    op_t *o = s->o;
    if (status) {
        start_free(s);
        fail_op(o, PC_API_UNAVAILABLE, "database unavailable");
        return;
    }
    o->tx = tx;
    const char *p[] = {o->trade_no, o->merchant_id};
    /* The trade row lock serialises every attempt of this trade, on every
     * node: of two concurrent pays, the second sees the first one open.
     * The count is a statement of its own, pipelined behind the lock in the
     * same round trip: it starts (and takes its snapshot) only after the
     * lock was granted, so it sees an attempt another node committed
     * meanwhile. */
    const char *q[] = {o->trade_no};
    /* The buyer's limits were checked against usage read before this
     * transaction; pays of one buyer's other trades may have been recorded
     * since. Under a per-buyer lock, held to the commit that records this
     * payment, the usage is read again by a statement of its own (one that
     * starts after the lock was granted) for a payment that will count
     * (paid, in flight or held for review). A challenged payment does not
     * count while it waits: it is checked when its challenge is passed
     * (pc_engine_continue). */
    int limited = (o->buyer_id[0] || o->card_fp[0]) && strcmp(s->status, "FAILED") != 0 &&
                  strcmp(s->status, "CHALLENGE") != 0;
    if (pc_db_tx_query(tx,
                       "SELECT status, expires_at <= now(), floor(extract(epoch FROM "
                       "expires_at))::bigint FROM trades WHERE trade_no = $1 AND merchant_id = "
                       "$2 FOR UPDATE",
                       2, p, locked_trade_cb, s) < 0 ||
        (limited && queue_limit_check(o, limits_cb, s) < 0) ||
        pc_db_tx_query(tx,
                       "SELECT count(*) FROM payments WHERE trade_no = $1 AND status "
                       "IN " PC_PAYMENT_OPEN_STATUSES,
                       1, q, open_count_cb, s) < 0) {
        start_free(s);
        fail_op(o, PC_API_UNAVAILABLE, "database unavailable");
    }
}

static void copy_order(op_t *o, const pc_pay_order_t *r)
{
#define CP(dst, src) snprintf(dst, sizeof dst, "%s", (src) ? (src) : "")
    CP(o->trade_no, r->trade_no);
    o->idem = r->idem;
    CP(o->merchant_id, r->merchant_id);
    CP(o->buyer_id, r->buyer_id);
    CP(o->wallet_owner, r->wallet_owner);
    CP(o->method, r->method_type);
    CP(o->currency, r->currency);
    CP(o->coupon_id, r->coupon_id);
    CP(o->coupon_funder, r->coupon_funder);
    CP(o->card_id, r->card_id);
    CP(o->card_fp, r->card_fp);
    CP(o->card_token, r->card_token);
    CP(o->card_brand, r->card_brand);
    CP(o->card_last4, r->card_last4);
    CP(o->buyer_code, r->buyer_code);
    o->amount = r->amount;
    o->balance_amount = r->balance_amount;
    o->coupon_amount = r->coupon_id ? r->coupon_amount : 0;
    o->external_amount = r->amount - o->balance_amount - o->coupon_amount;
    o->nroute = r->nroute < PC_ROUTE_MAX ? r->nroute : PC_ROUTE_MAX;
    for (int i = 0; i < o->nroute; i++)
        CP(o->route[i], r->route[i]);
    if (r->card) {
        o->has_card = 1;
        CP(o->pan, r->card->pan);
        CP(o->cvv, r->card->cvv);
        CP(o->holder, r->card->holder);
        o->card = (pc_ch_card_t){o->pan, r->card->exp_month, r->card->exp_year,
                                 o->cvv[0] ? o->cvv : NULL, o->holder[0] ? o->holder : NULL};
    }
#undef CP
}

int pc_engine_start(pc_engine_t *e, const pc_pay_order_t *r, pc_engine_cb cb, void *data)
{
    if (r->amount <= 0 || r->balance_amount < 0 || r->coupon_amount < 0 ||
        r->balance_amount + (r->coupon_id ? r->coupon_amount : 0) > r->amount)
        return PC_EINVAL;
    op_t *o = op_new(e, cb, data);
    start_t *s = calloc(1, sizeof *s);
    if (!o || !s) {
        free(o);
        free(s);
        return PC_ENOMEM;
    }
    copy_order(o, r);
    if (o->external_amount > 0 && o->nroute == 0 && !strcmp(r->risk_decision, "ACCEPT")) {
        free(s);
        op_free(o);
        return PC_EINVAL;
    }
    char hex[21];
    pc_random_hex(hex, sizeof hex, 10);
    snprintf(o->payment_no, sizeof o->payment_no, "P%s", hex);
    s->o = o;
    const char *d = r->risk_decision ? r->risk_decision : "ACCEPT";
    /* With nothing external the payment is inserted SUCCESS: it succeeds in
     * this transaction or not at all (hold() posts the ledger and pays the
     * trade before the commit). */
    s->status = !strcmp(d, "REJECT")      ? "FAILED"
                : !strcmp(d, "REVIEW")    ? "REVIEW"
                : !strcmp(d, "CHALLENGE") ? "CHALLENGE"
                : o->external_amount > 0  ? "PROCESSING"
                                          : "SUCCESS";
    if (!strcmp(s->status, "FAILED")) {
        snprintf(o->failure_code, sizeof o->failure_code, "RISK_REJECTED");
        snprintf(o->failure_message, sizeof o->failure_message,
                 "the payment was refused by risk control");
    }
    /* The buyer's one-time payment code (QR_BUYER) is not kept, and would
     * be stale by the end of a review anyway: held for one, the payment
     * could only fail at its release, as CHANNEL_UNAVAILABLE after every
     * channel of its route. It fails now instead, saying why. */
    /* So is a challenge: the answer's continue had no code to send, and
     * failed after every channel of the route. */
    if ((!strcmp(s->status, "REVIEW") || !strcmp(s->status, "CHALLENGE")) && o->buyer_code[0]) {
        int review = !strcmp(s->status, "REVIEW");
        s->status = "FAILED";
        snprintf(o->failure_code, sizeof o->failure_code, "RISK_REVIEW_NOT_POSSIBLE");
        snprintf(o->failure_message, sizeof o->failure_message,
                 "risk control asked for %s, which a payment by the buyer's one-time code "
                 "cannot wait for: ask the buyer to pay another way",
                 review ? "a review" : "a challenge");
    }
    json_t *route = json_array();
    for (int i = 0; i < o->nroute; i++)
        json_array_append_new(route, json_string(o->route[i]));
    s->route_json = json_dumps(route, JSON_COMPACT);
    json_decref(route);
    s->reasons = r->risk_reasons ? json_dumps(r->risk_reasons, JSON_COMPACT) : NULL;
    s->versions = r->rule_versions ? json_dumps(r->rule_versions, JSON_COMPACT) : strdup("{}");
    snprintf(s->amounts[0], 24, "%lld", (long long)o->amount);
    snprintf(s->amounts[1], 24, "%lld", (long long)o->balance_amount);
    snprintf(s->amounts[2], 24, "%lld", (long long)o->coupon_amount);
    snprintf(s->amounts[3], 24, "%lld", (long long)o->external_amount);
    snprintf(s->risk_score, sizeof s->risk_score, "%d", r->risk_score);
    s->risk_decision = d;
    s->challenge_id = r->challenge_id;
    first_query_ms(e, s->first_query);
    snprintf(s->challenge_hash, sizeof s->challenge_hash, "%s",
             r->challenge_hash ? r->challenge_hash : "");
    snprintf(s->demo_code, sizeof s->demo_code, "%s",
             r->challenge_demo_code ? r->challenge_demo_code : "");
    snprintf(s->challenge_card_key, sizeof s->challenge_card_key, "%s",
             r->challenge_card_key ? r->challenge_card_key : "");
    s->client_ip = r->client_ip;
    s->device_id = r->device_id;
    if (pc_db_begin(e->app->db, NULL, start_begin_cb, s) < 0) {
        start_free(s);
        op_free(o);
        return PC_EUNAVAIL;
    }
    return 0;
}

/* ---------- continue (review released, challenge passed) / reject ---------- */

/* False (the operation answered and ended) unless the payment's row came
 * back: it may have moved on, by another continuation, since it was read. */
static bool continue_found(op_t *o, int status, pc_db_res_t *res)
{
    /* Another attempt of the trade went in flight meanwhile (the trade's one
     * open attempt is a unique index): a state, not an outage to retry. */
    if (status && res &&
        (!strcmp(pc_db_sqlstate(res), "23505") ||
         !strcmp(pc_db_constraint(res), "trade_attempt_open"))) {
        fail_op(o, PC_API_INVALID_STATE, "another payment of this trade is in progress");
        return false;
    }
    if (status || pc_db_rows(res) == 0) {
        fail_op(o, status ? PC_API_UNAVAILABLE : PC_API_INVALID_STATE,
                status ? "database unavailable" : "the payment is not waiting for this");
        return false;
    }
    return true;
}

static void continue_row_cb(void *data, int status, pc_db_res_t *res)
{
    op_t *o = data;
    if (!continue_found(o, status, res))
        return;
    snprintf(o->trade_no, sizeof o->trade_no, "%s", pc_db_val(res, 0, "trade_no"));
    snprintf(o->buyer_id, sizeof o->buyer_id, "%s", pc_db_val(res, 0, "buyer_id"));
    snprintf(o->wallet_owner, sizeof o->wallet_owner, "%s", pc_db_val(res, 0, "wallet_owner"));
    snprintf(o->currency, sizeof o->currency, "%s", pc_db_val(res, 0, "currency"));
    snprintf(o->method, sizeof o->method, "%s", pc_db_val(res, 0, "method_type"));
    snprintf(o->coupon_id, sizeof o->coupon_id, "%s", pc_db_val(res, 0, "coupon_id"));
    snprintf(o->coupon_funder, sizeof o->coupon_funder, "%s", pc_db_val(res, 0, "coupon_funder"));
    snprintf(o->card_token, sizeof o->card_token, "%s", pc_db_val(res, 0, "card_token"));
    o->amount = pc_db_val_i64(res, 0, "amount");
    o->balance_amount = pc_db_val_i64(res, 0, "balance_amount");
    o->coupon_amount = pc_db_val_i64(res, 0, "coupon_amount");
    o->external_amount = pc_db_val_i64(res, 0, "external_amount");
    json_t *route = json_loads(pc_db_val(res, 0, "route"), 0, NULL);
    o->nroute = 0;
    size_t i;
    json_t *r;
    json_array_foreach(route, i, r) if (o->nroute < PC_ROUTE_MAX)
        snprintf(o->route[o->nroute++], sizeof o->route[0], "%s", json_string_value(r));
    json_decref(route);
    if (o->external_amount > 0 && o->nroute == 0) {
        fail_op(o, PC_API_INVALID_STATE, "no channel to continue with");
        return;
    }
    hold(o, o->external_amount > 0 ? "PROCESSING" : "SUCCESS");
}

/* Moves the payment on: to the channel (PROCESSING) or, with nothing
 * external, paid now. Conditional on its status, so of two continuations
 * (ops releasing twice) one moves it. */
static void continue_update(op_t *o)
{
    char first[24];
    first_query_ms(o->e, first);
    const char *p[] = {o->payment_no, first};
    /* Sent to its channel now: the status queries start from here. One
     * with no channel part (balance, coupon) takes its money now: sent_at
     * is when it counts toward the limits from (PC_USAGE_DAY). Left NULL,
     * a payment held on day 0 counted from day 0 and, released on day 1,
     * was outside the day-1 window: the day's limit could be spent twice. */
    /* Not while another attempt of the trade is in flight (read after the
     * trade's lock was granted): a CHALLENGE payment does not count as
     * open, so a buyer could start another attempt while it waited; one
     * with no channel part then paid the trade here (the unique index of
     * open attempts only stops one going to a channel), and the other
     * attempt's money became an error refund. */
    pc_db_tx_query(o->tx,
                   "WITH others AS (SELECT pc_require(NOT EXISTS (SELECT 1 FROM payments x WHERE "
                   "x.trade_no = (SELECT trade_no FROM payments WHERE payment_no = $1) AND "
                   "x.payment_no <> $1 AND x.status IN " PC_PAYMENT_OPEN_STATUSES "), "
                   "'trade_attempt_open') AS ok) "
                   "UPDATE payments p SET status = CASE WHEN external_amount > 0 THEN "
                   "'PROCESSING' ELSE 'SUCCESS' END, finished_at = CASE WHEN external_amount = 0 "
                   "THEN now() END, sent_at = now(), "
                   "next_query_at = CASE WHEN external_amount > 0 THEN now() + $2::int * "
                   "interval '1 millisecond' END, updated_at = now() WHERE payment_no = $1 AND "
                   "status IN ('REVIEW', 'CHALLENGE') AND (SELECT ok FROM others) AND (SELECT "
                   "status FROM trades t WHERE t.trade_no = p.trade_no FOR UPDATE) = "
                   "'WAIT_BUYER_PAY' RETURNING trade_no, "
                   "coalesce(buyer_id, '') AS buyer_id, coalesce(wallet_owner, '') AS "
                   "wallet_owner, currency, method_type, amount, "
                   "balance_amount, coupon_amount, external_amount, coalesce(coupon_id, '') AS "
                   "coupon_id, coalesce(card_token, '') AS card_token, route::text AS route, "
                   "coalesce((SELECT c.merchant_id FROM coupons c WHERE c.coupon_id = p.coupon_id "
                   "AND c.funded_by = 'MERCHANT'), '') AS coupon_funder",
                   2, p, continue_row_cb, o);
}

/* A waiting payment failed (fail_waiting): over a limit (limit_hit says
 * which), else blocked meanwhile. */
static void waiting_failed_commit_cb(void *data, int status)
{
    op_t *o = data;
    o->tx = NULL;
    int blocked = !o->limit_hit[0];
    o->err = status ? PC_API_UNAVAILABLE : blocked ? PC_API_INVALID_STATE : PC_API_LIMIT_EXCEEDED;
    snprintf(o->err_msg, sizeof o->err_msg, "%s",
             status    ? "database unavailable"
             : blocked ? "blocked since the payment was held: it failed and holds nothing"
                       : pc_engine_limit_message(o->limit_hit));
    if (!status)
        count_payment(o, "FAILED");
    finish(o);
}

/* A payment waiting for its challenge or review that may not go on (over
 * the limits now; blocked meanwhile) fails with code, its coupon freed, and
 * the continue is answered as such (waiting_failed_commit_cb). The move must
 * apply (pc_require): one that touched no row would still commit the
 * coupon's release and answer as if it had. */
static void fail_waiting(op_t *o, const char *code, const char *message)
{
    const char *p[] = {o->payment_no, code, message};
    pc_db_tx_query(o->tx,
                   "WITH f AS (UPDATE payments SET status = 'FAILED', failure_code = $2, "
                   "failure_message = $3, action = NULL, finished_at = now(), updated_at = now() "
                   "WHERE payment_no = $1 AND status IN ('CHALLENGE', 'REVIEW') RETURNING 1) "
                   "SELECT pc_require(EXISTS (SELECT 1 FROM f), 'payment_status')",
                   3, p, step_cb, o);
    free_coupon(o);
    pc_db_tx_commit(o->tx, waiting_failed_commit_cb, o);
}

/* A challenged payment passed its challenge; whether it now fits the
 * buyer's limits decides between going on and failing. It held no money
 * while it waited, only its coupon, which is freed. */
static void continue_limits_cb(void *data, int status, pc_db_res_t *res)
{
    op_t *o = data;
    if (status || o->step_failed || pc_db_rows(res) != 1) {
        fail_op(o, PC_API_UNAVAILABLE, "database unavailable");
        return;
    }
    const char *over = pc_db_get(res, 0, 0);
    if (!over[0]) {
        continue_update(o);
        return;
    }
    snprintf(o->limit_hit, sizeof o->limit_hit, "%s", over);
    fail_waiting(o, "LIMIT_EXCEEDED", pc_engine_limit_message(o->limit_hit));
}

/* The trade is locked (first, as every pay does) and the payment read. */
static void continue_locked_cb(void *data, int status, pc_db_res_t *res)
{
    op_t *o = data;
    if (!continue_found(o, status, res))
        return;
    /* Released from review or past its challenge after the trade expired:
     * not charged (the sweep closes the trade and fails the payment). */
    if (!strcmp(pc_db_val(res, 0, "trade_expired"), "t") ||
        trade_expired_after_wait(pc_db_val_i64(res, 0, "trade_expires_s"))) {
        fail_op(o, PC_API_INVALID_STATE, "the trade has expired");
        return;
    }
    o->trade_expires_s = pc_db_val_i64(res, 0, "trade_expires_s");
    snprintf(o->buyer_id, sizeof o->buyer_id, "%s", pc_db_val(res, 0, "buyer_id"));
    snprintf(o->card_fp, sizeof o->card_fp, "%s", pc_db_val(res, 0, "card_fp"));
    snprintf(o->currency, sizeof o->currency, "%s", pc_db_val(res, 0, "currency"));
    snprintf(o->method, sizeof o->method, "%s", pc_db_val(res, 0, "method_type"));
    o->amount = pc_db_val_i64(res, 0, "amount");
    /* Ops' release, whatever comes of it now (going on, or failing the
     * limits): with the transaction that applies it. */
    record_review(o, "RELEASE");
    /* What ops blocked while it waited (the buyer, its card's BIN, address
     * or device) stops it, as it would a new payment: system.md, accept
     * repeats consult's checks. Before, a passed challenge or a release
     * charged a buyer or card blocked in the meantime. */
    const char *blocked = pc_db_val(res, 0, "blocked");
    if (blocked[0]) {
        fail_waiting(o, blocked, "blocked since the payment was held");
        return;
    }
    /* Checked now, under the buyer's lock like a new payment: a challenged
     * one did not count toward the limits while it waited, and one held for
     * review counted in the window of its creation, which may have passed
     * (held on day 0, the day-1 limit spent meanwhile, released on day 1).
     * The payment itself is left out of the sums; it is added once. It
     * counts from its release on (sent_at) from here. */
    if (o->buyer_id[0] || o->card_fp[0]) {
        if (queue_limit_check(o, continue_limits_cb, o) < 0)
            fail_op(o, PC_API_UNAVAILABLE, "database unavailable");
        return;
    }
    continue_update(o);
}

/* What of payment p the block list (or the buyer's status) holds now, as
 * pay's own checks name it, or '': the buyer, the card's BIN ($3, $4: 6
 * and 8 digits, NULL when the card is not at hand), the address (itself,
 * or its IPv6 /64) or the device. Only an IPv6 address is cast (an empty
 * or missing one must not fail the statement: the payment could never go
 * on). */
#define CONTINUE_BLOCKED_SQL                                                                       \
    "CASE WHEN coalesce((SELECT b.status = 'BLOCKED' FROM buyers b WHERE b.buyer_id = "            \
    "p.buyer_id), false) OR EXISTS (SELECT 1 FROM block_list l WHERE l.kind = 'BUYER' AND "        \
    "l.value = p.buyer_id) THEN 'BUYER_BLOCKED' WHEN EXISTS (SELECT 1 FROM block_list l WHERE "    \
    "l.kind = 'CARD_BIN' AND l.value IN ($3, $4)) THEN 'CARD_BLOCKED' WHEN EXISTS (SELECT 1 FROM " \
    "block_list l WHERE l.kind = 'IP' AND l.value IN (p.client_ip, CASE WHEN p.client_ip ~ "       \
    "'^[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*$' THEN network(set_masklen(p.client_ip::inet, 64))::text "    \
    "END)) THEN "                                                                                  \
    "'IP_BLOCKED' WHEN EXISTS (SELECT 1 FROM block_list l WHERE l.kind = 'DEVICE' AND l.value = "  \
    "p.device_id) THEN 'DEVICE_BLOCKED' ELSE '' END"

static void continue_begin_cb(void *data, int status, pc_db_tx_t *tx)
{
    op_t *o = data;
    if (status) {
        fail_op(o, PC_API_UNAVAILABLE, "database unavailable");
        return;
    }
    o->tx = tx;
    /* The card's BIN, when the answer brings the card again (a challenge). */
    char bin6[7] = "", bin8[9] = "";
    if (o->has_card && strlen(o->pan) >= 8) {
        snprintf(bin6, sizeof bin6, "%.6s", o->pan);
        snprintf(bin8, sizeof bin8, "%.8s", o->pan);
    }
    const char *p[] = {o->payment_no, o->waiting, bin6[0] ? bin6 : NULL, bin8[0] ? bin8 : NULL};
    if (pc_db_tx_query(tx,
                       "SELECT p.status, coalesce(p.buyer_id, '') AS buyer_id, "
                       "coalesce(p.card_fp, '') AS card_fp, "
                       "p.method_type, p.amount, p.currency, t.expires_at <= now() AS "
                       "trade_expired, floor(extract(epoch FROM t.expires_at))::bigint AS "
                       "trade_expires_s, " CONTINUE_BLOCKED_SQL " AS blocked FROM "
                       "payments p JOIN trades t USING (trade_no) WHERE p.payment_no = $1 AND "
                       "p.status = $2 AND t.status = 'WAIT_BUYER_PAY' FOR UPDATE OF t",
                       4, p, continue_locked_cb, o) < 0)
        fail_op(o, PC_API_UNAVAILABLE, "database unavailable");
}

int pc_engine_continue(pc_engine_t *e, const char *payment_no, const char *waiting,
                       const pc_ch_card_t *card, const pc_engine_review_t *review, pc_engine_cb cb,
                       void *data)
{
    op_t *o = op_new(e, cb, data);
    if (!o)
        return PC_ENOMEM;
    snprintf(o->payment_no, sizeof o->payment_no, "%s", payment_no);
    snprintf(o->waiting, sizeof o->waiting, "%s", waiting);
    keep_review(o, review);
    if (card) {
        pc_pay_order_t r;
        memset(&r, 0, sizeof r);
        r.card = card;
        copy_order(o, &r);
    }
    if (pc_db_begin(e->app->db, NULL, continue_begin_cb, o) < 0) {
        op_free(o);
        return PC_EUNAVAIL;
    }
    return 0;
}

int pc_engine_reject(pc_engine_t *e, const char *payment_no, const pc_engine_review_t *review,
                     pc_engine_cb cb, void *data)
{
    op_t *o = op_new(e, cb, data);
    if (!o)
        return PC_ENOMEM;
    snprintf(o->payment_no, sizeof o->payment_no, "%s", payment_no);
    keep_review(o, review);
    snprintf(o->failure_code, sizeof o->failure_code, "RISK_REJECTED");
    snprintf(o->failure_message, sizeof o->failure_message, "rejected by ops after review");
    o->reject_waiting = 1;
    release(o);
    return 0;
}

/* ---------- payments that can no longer go on ---------- */

static void swept_cb(void *data, int status, pc_db_res_t *res)
{
    pc_engine_t *e = data;
    e->sweeping = 0;
    if (status)
        return;
    for (int i = 0; i < pc_db_rows(res); i++) {
        char labels[160];
        snprintf(labels, sizeof labels, "method=\"%s\",channel=\"%s\",status=\"FAILED\"",
                 pc_db_get(res, i, 0), pc_db_get(res, i, 1));
        pc_metrics_add("pc_payments_total", labels, 1);
    }
    if (pc_db_rows(res) > 0)
        pc_log_info("engine.waiting_swept", "%d waiting payment(s) failed: %s", pc_db_rows(res),
                    pc_db_get(res, 0, 2));
}

void pc_engine_sweep_waiting(pc_engine_t *e)
{
    /* One statement, so the payment and its coupon change together. A
     * payment waiting for review or a challenge holds no money, only its
     * coupon. It cannot go on once its trade is no longer payable (closed,
     * expired, or paid by another attempt), nor, for a challenge, once the
     * challenge failed or expired; a passed one is given a minute past its
     * expiry for the continuation that follows the answer at once. The
     * status is re-checked by the update, so a continuation that moved the
     * payment meanwhile wins. One at a time: under a slow database each
     * second's sweep would wait with a pooled connection of its own. */
    if (e->sweeping)
        return;
    e->sweeping = 1; /* before: a failure may be answered at once */
    if (pc_db_query(
            e->app->db,
            "WITH due AS (SELECT p.payment_no, CASE WHEN t.status <> 'WAIT_BUYER_PAY' THEN "
            "'TRADE_NOT_PAYABLE' ELSE 'CHALLENGE_NOT_PASSED' END AS code FROM payments p JOIN "
            "trades t USING (trade_no) WHERE p.status IN ('REVIEW', 'CHALLENGE') AND "
            "(t.status <> 'WAIT_BUYER_PAY' OR (p.status = 'CHALLENGE' AND NOT EXISTS (SELECT "
            "1 FROM challenges c WHERE c.challenge_id = p.challenge_id AND c.status IN "
            "('OPEN', 'PASSED') AND c.expires_at > now() - interval '1 minute'))) ORDER BY "
            "p.created_at LIMIT 200 FOR UPDATE OF p SKIP LOCKED), f AS (UPDATE payments p SET "
            "status = 'FAILED', failure_code = due.code, failure_message = CASE due.code WHEN "
            "'TRADE_NOT_PAYABLE' THEN 'the trade can no longer be paid' ELSE 'the challenge "
            "was not passed in time' END, action = NULL, finished_at = now(), updated_at = "
            "now() FROM due WHERE p.payment_no = due.payment_no AND p.status IN ('REVIEW', "
            "'CHALLENGE') RETURNING p.payment_no, p.method_type, coalesce(p.channel_id, '') AS "
            "channel_id), c AS (UPDATE coupons SET status = 'AVAILABLE', payment_no = NULL "
            "WHERE payment_no IN (SELECT payment_no FROM f) AND status = 'LOCKED') SELECT "
            "method_type, channel_id, payment_no FROM f",
            0, NULL, swept_cb, e) < 0)
        e->sweeping = 0;
}

/* ---------- results learnt later ---------- */

void pc_engine_note_taken(pc_engine_t *e, const char *channel_id, const char *payment_no,
                          const char *channel_txn_id)
{
    const char *p[] = {payment_no, channel_id,
                       channel_txn_id && channel_txn_id[0] ? channel_txn_id : NULL};
    pc_db_query(e->app->db,
                "UPDATE payments SET channel_txn_id = coalesce(channel_txn_id, $3), "
                "acknowledged_at = coalesce(acknowledged_at, now()), updated_at = now() WHERE "
                "payment_no = $1 AND channel_id = $2 AND status IN ('PROCESSING', 'UNKNOWN') AND "
                "(acknowledged_at IS NULL OR (channel_txn_id IS NULL AND $3::text IS NOT NULL))",
                3, p, NULL, NULL);
}

static int apply_answer(pc_engine_t *e, const char *channel_id, const char *payment_no,
                        const pc_ch_result_t *r, int by_ops, pc_engine_cb cb, void *data)
{
    op_t *o = op_new(e, cb, data);
    if (!o)
        return PC_ENOMEM;
    o->by_ops = by_ops;
    snprintf(o->payment_no, sizeof o->payment_no, "%s", payment_no);
    snprintf(o->reporter, sizeof o->reporter, "%s", channel_id);
    o->applying = 1;
    o->result = *r;
    o->result.action = NULL;
    switch (r->status) {
    case PC_CH_SUCCESS:
        capture(o);
        break;
    case PC_CH_FAILED:
        snprintf(o->failure_code, sizeof o->failure_code, "%s", r->code[0] ? r->code : "DECLINED");
        snprintf(o->failure_message, sizeof o->failure_message, "%s", r->message);
        /* A late failure never overrides REVIEW/CHALLENGE: only in-flight ones. */
        release(o);
        break;
    default:
        if (r->status == PC_CH_PROCESSING)
            pc_engine_note_taken(e, channel_id, payment_no, r->channel_txn_id);
        finish(o);
        break;
    }
    return 0;
}

int pc_engine_apply(pc_engine_t *e, const char *channel_id, const char *payment_no,
                    const pc_ch_result_t *r, pc_engine_cb cb, void *data)
{
    return apply_answer(e, channel_id, payment_no, r, 0, cb, data);
}

int pc_engine_apply_by_ops(pc_engine_t *e, const char *channel_id, const char *payment_no,
                           const pc_ch_result_t *r, pc_engine_cb cb, void *data)
{
    return apply_answer(e, channel_id, payment_no, r, 1, cb, data);
}
