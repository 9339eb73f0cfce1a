/* The merchant's refund API (api.md "Refunds"): POST /v1/refunds accepts a
 * refund in one transaction, GET /v1/refunds/{refund_no} and GET
 * /v1/refunds?out_refund_no=… read one. The accepting transaction, step by
 * step:
 *   1. lock the trade row (FOR UPDATE): refunds of one trade are accepted one
 *      at a time, on every node;
 *   2. in statements of their own (started after the lock was granted, so
 *      they see every refund committed before it): the duplicate check, the
 *      sums of the trade's live refunds, the payment's parts, the merchant's
 *      contract, and the balances the money comes from (locked too);
 *   3. decide in C: refundable amount, the split over the payment's parts
 *      (a partial refund returns cash only: the coupon part goes with the
 *      refund of the whole rest), the split receivers' shares and where
 *      each comes from, the merchant's sources (refund_plan.h), the method
 * (rules/refund_method.lua), the risk verdict (rules/risk.lua, kind REFUND: anything but ACCEPT
 *      holds the refund SUSPENDED for ops);
 *   4. insert the refund, raise trades.refunded_amount (its CHECK against
 *      paid_amount backs step 3), post REFUND_ACCEPT, record the action and
 *      the idempotent answer, commit;
 *   5. answer, then send it (API / PAYOUT) through the refund runner. */
#include "api/app.h"
#include "auth/auth.h"
#include "core/error.h"
#include "core/log.h"
#include "ledger/ledger.h"
#include "cardbin/cardbin.h"
#include "refund/refund.h"
#include "rules/rules.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    pc_http_req_t *req;
    pc_app_t *app;
    pc_db_tx_t *tx;
    /* The request (strings borrowed from the request's JSON). */
    const char *trade_no, *out_trade_no, *out_refund_no, *reason, *notify_url;
    long long amount;
    json_t *payee; /* normalised, owned */
    json_t *asked; /* the request's splits [{account, amount}], borrowed; NULL: proportional */
    /* Read under the trade lock. */
    char trade[40], trade_status[20], product[12], currency[4], buyer_id[65], payment_no[40];
    char trade_notify[520], merchant_notify[520];
    int64_t paid, settled;
    /* What the trade's live refunds came to, less their escrow parts: the
     * splits' share base already refunded (pc_refund_plan_splits). */
    int64_t split_prior;
    int64_t dup, active;
    /* A guarantee trade's escrow not settled, refunded or held by a
     * chargeback (trade_escrow_free) */
    int64_t escrow_free;
    pc_refund_parts_t pay, used;
    char channel_id[33], pay_txn[81], pay_method[16], card_token[81], coupon_funder[65];
    long long paid_at;
    int advance, have_payment;
    int64_t bal_pending, bal_available, bal_wallet;
    char acct_pending[PC_LEDGER_ID_MAX + 1], acct_available[PC_LEDGER_ID_MAX + 1],
        acct_wallet[PC_LEDGER_ID_MAX + 1];
    /* The trade's split receivers (README "Refunds"), their balances locked. */
    pc_refund_receiver_t rv[PC_REFUND_MAX_SPLITS];
    char rv_pending[PC_REFUND_MAX_SPLITS][PC_LEDGER_ID_MAX + 1];
    char rv_available[PC_REFUND_MAX_SPLITS][PC_LEDGER_ID_MAX + 1];
    size_t nrv;
    /* Decided. */
    pc__refund_t r;
    char *body;
    int step_failed; /* 1 duplicate, 2 insufficient, 3 over refundable, 4 other */
} acc_t;

static void acc_free(void *arg)
{
    acc_t *a = arg;
    json_decref(a->payee);
    free(a->body);
}

static void acc_fail(acc_t *a, pc_api_err_t err, const char *field, const char *msg)
{
    if (a->tx)
        pc_db_tx_rollback(a->tx);
    a->tx = NULL;
    pc_http_respond_error(a->req, err, field, msg);
}

static void acc_commit_cb(void *data, int status)
{
    acc_t *a = data;
    a->tx = NULL;
    if (status) {
        switch (a->step_failed) {
        case 1:
            pc_http_respond_error(a->req, PC_API_DUPLICATE_OUT_REFUND_NO, "out_refund_no",
                                  "a refund with this out_refund_no exists");
            break;
        case 2:
            pc_http_respond_error(a->req, PC_API_INSUFFICIENT_BALANCE, NULL,
                                  "the merchant balance cannot fund this refund");
            break;
        case 3:
            pc_http_respond_error(a->req, PC_API_AMOUNT_EXCEEDS_REFUNDABLE, "amount",
                                  "refunds would exceed the paid amount");
            break;
        default:
            pc_http_respond_error(a->req, PC_API_UNAVAILABLE, NULL,
                                  "not recorded; retry with the same Idempotency-Key");
        }
        return;
    }
    /* Copied out: the request's memory goes with the answer. */
    pc_refunds_t *rf = a->app->refunds;
    char no[40];
    snprintf(no, sizeof no, "%s", a->r.refund_no);
    int send = !strcmp(a->r.status, "ACCEPTED") &&
               (!strcmp(a->r.method, "API") || !strcmp(a->r.method, "PAYOUT"));
    pc_log_info("refund.accepted", "refund %s of trade %s: %lld by %s, %s", no, a->trade,
                (long long)a->r.amount, a->r.method, a->r.status);
    pc_http_respond(a->req, 200, "application/json", a->body, strlen(a->body));
    if (send)
        pc__refund_dispatch(rf, no);
}

static void insert_cb(void *data, int status, pc_db_res_t *res)
{
    acc_t *a = data;
    if (status == PC_ECONFLICT && !strcmp(pc_db_constraint(res), "refunds_out_refund_no_unique"))
        a->step_failed = 1;
    else if (status && !a->step_failed)
        a->step_failed = 4;
}

static void trade_update_cb(void *data, int status, pc_db_res_t *res)
{
    acc_t *a = data;
    /* The paid <= refunded CHECK: over refundable. The trade not there
     * (pc_require): anything else. */
    if (status && !a->step_failed)
        a->step_failed = !strcmp(pc_db_sqlstate(res), "23514") &&
                                 strcmp(pc_db_constraint(res), "refund_trade") != 0
                             ? 3
                             : 4;
}

static void step_cb(void *data, int status, pc_db_res_t *res)
{
    acc_t *a = data;
    (void)res;
    if (status && !a->step_failed)
        a->step_failed = 4;
}

static void ledger_cb(void *data, int status, int64_t txn_id)
{
    acc_t *a = data;
    (void)txn_id;
    if (status && !a->step_failed)
        a->step_failed = status == PC_LEDGER_INSUFFICIENT ? 2 : 4;
}

/* rules/risk.lua with kind REFUND; fills decision, reasons and version. */
static const char *risk_check(acc_t *a, char *reasons, size_t rlen, char version[65])
{
    json_t *ctx = json_pack("{s:s,s:I,s:s,s:s,s:s,s:I,s:{s:s?},s:{s:s}}", "kind", "REFUND",
                            "amount", (json_int_t)a->amount, "currency", a->currency, "method",
                            a->pay_method, "product", a->product, "now", (json_int_t)time(NULL),
                            "buyer", "id", a->buyer_id[0] ? a->buyer_id : NULL, "merchant", "id",
                            pc_auth_merchant(a->req)->id);
    if (!a->buyer_id[0])
        json_object_del(json_object_get(ctx, "buyer"), "id");
    pc_rule_result_t r;
    pc_rules_risk(a->app->rules, ctx, &r);
    json_decref(ctx);
    /* A fallback is logged by the rules module (rules.fallback, once a
     * second per rule) and counted (pc_rules_calls_total): not again here,
     * once per request, which flooded the log when a rule kept failing. */
    const char *d = json_string_value(json_object_get(r.answer, "decision"));
    const char *decision = d && !strcmp(d, "ACCEPT")      ? "ACCEPT"
                           : d && !strcmp(d, "REJECT")    ? "REJECT"
                           : d && !strcmp(d, "CHALLENGE") ? "CHALLENGE"
                                                          : "REVIEW";
    json_t *why = json_object_get(r.answer, "reasons");
    char *rs = json_is_array(why) ? json_dumps(why, JSON_COMPACT) : NULL;
    snprintf(reasons, rlen, "%s", rs ? rs : "[]");
    free(rs);
    snprintf(version, 65, "%s", r.version);
    pc_rule_result_clear(&r);
    return decision;
}

static void decide(acc_t *a)
{
    pc__refund_t *r = &a->r;
    if (a->dup > 0) {
        acc_fail(a, PC_API_DUPLICATE_OUT_REFUND_NO, "out_refund_no",
                 "a refund with this out_refund_no exists");
        return;
    }
    if (!strcmp(a->trade_status, "TRADE_CLOSED") && a->paid > 0) {
        /* Closed by refunds that gave back all of it: nothing is left. */
        acc_fail(a, PC_API_AMOUNT_EXCEEDS_REFUNDABLE, "amount",
                 "the trade is refunded in full: nothing is left to refund");
        return;
    }
    if (strcmp(a->trade_status, "TRADE_SUCCESS") != 0 &&
        strcmp(a->trade_status, "PAY_SUCCESS") != 0) {
        char msg[96];
        snprintf(msg, sizeof msg, "the trade is %s", a->trade_status);
        acc_fail(a, PC_API_INVALID_STATE, NULL, msg);
        return;
    }
    if (!a->have_payment) {
        acc_fail(a, PC_API_INVALID_STATE, NULL, "the trade's payment is not on record");
        return;
    }
    if (a->amount > a->paid - a->active) {
        char msg[128];
        snprintf(msg, sizeof msg, "at most %lld of this trade can still be refunded",
                 (long long)(a->paid - a->active));
        acc_fail(a, PC_API_AMOUNT_EXCEEDS_REFUNDABLE, "amount", msg);
        return;
    }
    pc_refund_parts_t left = {a->pay.external - a->used.external, a->pay.balance - a->used.balance,
                              a->pay.coupon - a->used.coupon};
    /* Coupons (README "Refunds"): only the refund that returns the whole
     * rest of the payment returns the coupon part (and, on success, the
     * coupon itself); a partial refund returns cash only. */
    int whole = a->amount == left.external + left.balance + left.coupon;
    if (!whole)
        left.coupon = 0;
    if (pc_refund_split(a->amount, &left, &r->parts) < 0) {
        char msg[200];
        snprintf(msg, sizeof msg,
                 "a partial refund returns cash only: at most %lld now, or the whole rest "
                 "(%lld) with the coupon",
                 (long long)(left.external + left.balance),
                 (long long)(a->pay.external - a->used.external + a->pay.balance - a->used.balance +
                             a->pay.coupon - a->used.coupon));
        acc_fail(a, PC_API_AMOUNT_EXCEEDS_REFUNDABLE, "amount", msg);
        return;
    }
    /* Split receivers give back their shares; the merchant funds the rest. */
    if (a->asked && a->nrv == 0) {
        acc_fail(a, PC_API_INVALID_REQUEST, "splits", "this trade's money was not split");
        return;
    }
    if (a->asked) {
        size_t i;
        json_t *e;
        json_array_foreach(a->asked, i, e)
        {
            const char *acct = json_string_value(json_object_get(e, "account"));
            size_t k = 0;
            while (k < a->nrv && strcmp(a->rv[k].account, acct))
                k++;
            if (k == a->nrv || a->rv[k].asked >= 0) {
                char msg[160];
                snprintf(msg, sizeof msg,
                         "%.64s is not a split receiver of this trade (or is listed twice)", acct);
                acc_fail(a, PC_API_INVALID_REQUEST, "splits", msg);
                return;
            }
            a->rv[k].asked = json_integer_value(json_object_get(e, "amount"));
        }
        for (size_t k = 0; k < a->nrv; k++)
            if (a->rv[k].asked < 0)
                a->rv[k].asked = 0;
    }
    /* A guarantee's refund comes first from what escrow still holds of the
     * trade: that money reached no receiver. Receivers give back shares of
     * the rest only, in proportion to what the settles gave them. Shares of
     * the whole amount took a receiver's settled money while escrow still
     * held the merchant's unsettled part, which the merchant then settled
     * to itself (settled 50 all to B, refund 50: B gave 25, and the
     * merchant kept 25 it was never meant to have). */
    int64_t share_of = a->amount, share_base = a->paid;
    if (!strcmp(a->product, "GUARANTEE")) {
        int64_t held = a->escrow_free;
        share_of = a->amount - (held > 0 ? (held < a->amount ? held : a->amount) : 0);
        share_base = a->settled;
    }
    /* The last refund empties the receivers only when refunds return the
     * whole of what was shared: the rest of a trade a chargeback took part
     * of is not. Before, refunding the half a dispute left (judged with the
     * platform liable) took a receiver's whole share, for a sale only half
     * refunded. */
    int last = whole && a->split_prior + share_of >= share_base;
    int bad = -1;
    int rc = 0;
    if (a->nrv && share_of > 0)
        rc = pc_refund_plan_splits(share_of, a->split_prior, share_base, last, a->advance, a->rv,
                                   a->nrv, r->shares, &bad);
    for (size_t k = 0; a->nrv && share_of == 0 && k < a->nrv; k++)
        if (a->rv[k].asked > 0)
            rc = PC_EINVAL; /* all of it comes from escrow: no receiver gives anything */
    if (rc == PC_REFUND_OVER_RECEIVED) {
        char msg[200];
        snprintf(msg, sizeof msg, "split receiver %s: at most %lld can still be taken back",
                 a->rv[bad].account, (long long)(a->rv[bad].received - a->rv[bad].refunded));
        acc_fail(a, PC_API_AMOUNT_EXCEEDS_REFUNDABLE, "splits", msg);
        return;
    }
    if (rc == PC_REFUND_INSUFFICIENT) {
        char msg[200];
        snprintf(msg, sizeof msg, "split receiver %s cannot fund its share of this refund",
                 a->rv[bad].account);
        acc_fail(a, PC_API_INSUFFICIENT_BALANCE, "splits", msg);
        return;
    }
    if (rc < 0) {
        acc_fail(a, PC_API_SPLIT_EXCEEDS_AMOUNT, "splits",
                 "splits add up to more than the amount (a guarantee trade's refund comes "
                 "from escrow first: the splits share only the rest)");
        return;
    }
    r->nshares = share_of > 0 ? a->nrv : 0;
    r->split_amount = pc_refund_shares_total(r->shares, r->nshares);
    pc_refund_funds_t funds = {.amount = a->amount - r->split_amount,
                               .pending = a->bal_pending,
                               .available = a->bal_available,
                               .wallet = a->bal_wallet,
                               .advance_funding = a->advance};
    if (pc_refund_product_parse(a->product, &funds.product) < 0) {
        acc_fail(a, PC_API_INTERNAL, NULL, "unknown product");
        return;
    }
    if (funds.product == PC_REFUND_GUARANTEE) {
        funds.escrow_unsettled = a->escrow_free > 0 ? a->escrow_free : 0;
    }
    rc = funds.amount > 0 ? pc_refund_plan_sources(&funds, &r->from) : 0;
    if (rc == PC_REFUND_INSUFFICIENT) {
        acc_fail(a, PC_API_INSUFFICIENT_BALANCE, NULL,
                 "the merchant balance cannot fund this refund");
        return;
    }
    if (rc < 0) {
        acc_fail(a, PC_API_INTERNAL, NULL, "balances out of range");
        return;
    }

    /* A payment by card is refunded to that card (as card schemes require),
     * never to an account or another card the merchant names: a merchant
     * paid with a stolen card could otherwise cash it out to itself before
     * the cardholder's chargeback comes. */
    /* That holds for a card payment whose token the platform does not have
     * too (its outcome recorded by ops). And a card is a payee only as the
     * card a payment was made with: a channel pays out to the cards whose
     * tokens it holds, so a card named for a cash or bank payment's refund
     * failed at the channel (unknown token) where ops would have paid it. */
    const char *payee_type = a->payee ? json_string_value(json_object_get(a->payee, "type")) : NULL;
    if (a->payee && (a->card_token[0] || !strcmp(a->pay_method, "CARD"))) {
        const char *tok = json_string_value(json_object_get(a->payee, "card_token"));
        if (!a->card_token[0] || !tok || strcmp(tok, a->card_token) != 0) {
            acc_fail(a, PC_API_INVALID_REQUEST, "payee",
                     "this payment was made by card: its refund goes back to that card, not to "
                     "a payee named here");
            return;
        }
    } else if (payee_type && !strcmp(payee_type, "CARD")) {
        acc_fail(a, PC_API_INVALID_REQUEST, "payee",
                 "a refund goes to a card only when the payment was made with it: name an "
                 "account (type ACCOUNT)");
        return;
    }
    /* The method, and the payee a PAYOUT needs. */
    pc__method_ctx_t mc = {.type = "NORMAL",
                           .external = r->parts.external,
                           .payment_external = a->pay.external,
                           .currency = a->currency,
                           .payment_method = a->pay_method,
                           .channel_id = a->channel_id,
                           .paid_at = a->paid_at,
                           .payee_available = a->payee || a->card_token[0],
                           .payee_type = a->payee ? payee_type : "CARD"};
    char rule_version[65];
    const char *method = pc__refund_method(a->app, &mc, rule_version);
    /* PAYOUT only with a payee (pc__refund_method): the one given, else the
     * card the buyer paid with. Without one the refund is OFFLINE. */
    if (!strcmp(method, "PAYOUT") && !a->payee)
        a->payee = json_pack("{s:s,s:s}", "type", "CARD", "card_token", a->card_token);
    char reasons[512], risk_version[65];
    const char *decision = risk_check(a, reasons, sizeof reasons, risk_version);
    int hold = strcmp(decision, "ACCEPT") != 0;

    /* The refund as it is recorded and answered. */
    pc__refund_no_new(r->refund_no);
    snprintf(r->out_refund_no, sizeof r->out_refund_no, "%s", a->out_refund_no);
    snprintf(r->merchant_id, sizeof r->merchant_id, "%s", pc_auth_merchant(a->req)->id);
    snprintf(r->trade_no, sizeof r->trade_no, "%s", a->trade);
    snprintf(r->payment_no, sizeof r->payment_no, "%s", a->payment_no);
    snprintf(r->type, sizeof r->type, "NORMAL");
    snprintf(r->method, sizeof r->method, "%s", method);
    snprintf(r->status, sizeof r->status, "%s", hold ? "SUSPENDED" : "ACCEPTED");
    snprintf(r->currency, sizeof r->currency, "%s", a->currency);
    r->amount = a->amount;
    r->created_at = (long long)time(NULL);
    snprintf(r->hold_reason, sizeof r->hold_reason, "risk %s %.200s", decision, reasons);
    const char *url = a->notify_url           ? a->notify_url
                      : a->trade_notify[0]    ? a->trade_notify
                      : a->merchant_notify[0] ? a->merchant_notify
                                              : NULL;
    json_t *answer = pc__refund_json(r, 0);
    a->body = json_dumps(answer, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(answer);
    char *payee_text = a->payee ? json_dumps(a->payee, JSON_COMPACT) : NULL;

    char amt[7][24], created[24], grace[24];
    int64_t nums[7] = {r->amount,      r->parts.external, r->parts.balance, r->parts.coupon,
                       r->from.escrow, r->from.pending,   r->from.available};
    for (int i = 0; i < 7; i++)
        snprintf(amt[i], sizeof amt[i], "%lld", (long long)nums[i]);
    char wallet[24], receivable[24];
    snprintf(wallet, sizeof wallet, "%lld", (long long)r->from.wallet);
    snprintf(receivable, sizeof receivable, "%lld", (long long)r->from.receivable);
    snprintf(created, sizeof created, "%lld", r->created_at);
    snprintf(grace, sizeof grace, "%lld",
             (long long)pc_config_int(a->app->cfg, "refund.send_grace_ms"));
    json_t *sj = pc__refund_shares_json(r->shares, r->nshares);
    char *splits_text = json_dumps(sj, JSON_COMPACT);
    json_decref(sj);
    char split_amt[24];
    snprintf(split_amt, sizeof split_amt, "%lld", (long long)r->split_amount);
    int runs_now = !hold && (!strcmp(method, "API") || !strcmp(method, "PAYOUT"));
    const char *p[] = {r->refund_no,
                       r->out_refund_no,
                       r->merchant_id,
                       r->trade_no,
                       r->payment_no,
                       r->method,
                       r->status,
                       amt[0],
                       r->currency,
                       amt[1],
                       amt[2],
                       amt[3],
                       amt[4],
                       amt[5],
                       amt[6],
                       wallet,
                       receivable,
                       a->channel_id[0] ? a->channel_id : NULL,
                       a->pay_txn[0] ? a->pay_txn : NULL,
                       a->buyer_id[0] ? a->buyer_id : NULL,
                       a->coupon_funder[0] ? a->coupon_funder : NULL,
                       payee_text,
                       a->reason,
                       url,
                       hold ? r->hold_reason : NULL,
                       rule_version[0] ? rule_version : NULL,
                       decision,
                       reasons,
                       risk_version[0] ? risk_version : NULL,
                       runs_now ? grace : NULL,
                       created,
                       splits_text,
                       split_amt};
    rc = pc_db_tx_query(
        a->tx,
        "INSERT INTO refunds (refund_no, out_refund_no, merchant_id, trade_no, payment_no, type, "
        "method, status, amount, currency, external_amount, balance_amount, coupon_amount, "
        "from_escrow, from_pending, from_available, from_wallet, from_receivable, channel_id, "
        "payment_channel_txn_id, buyer_id, coupon_funder, payee, reason, notify_url, "
        "hold_reason, rule_version, risk_decision, risk_reasons, risk_version, next_query_at, "
        "created_at, splits, split_amount) VALUES ($1, $2, $3, $4, $5, 'NORMAL', $6, $7, "
        "$8::bigint, $9, $10::bigint, "
        "$11::bigint, $12::bigint, $13::bigint, $14::bigint, $15::bigint, $16::bigint, "
        "$17::bigint, $18, $19, $20, $21, $22::jsonb, $23, $24, $25, $26, $27, $28::jsonb, $29, "
        "now() + $30::bigint * interval '1 millisecond', to_timestamp($31::bigint), $32::jsonb, "
        "$33::bigint)",
        33, p, insert_cb, a);
    free(payee_text);
    free(splits_text);
    const char *tp[] = {r->trade_no, amt[0]};
    if (!rc)
        rc = pc_db_tx_query(a->tx,
                            "WITH w AS (UPDATE trades SET refunded_amount = refunded_amount + "
                            "$2::bigint, updated_at = now() WHERE trade_no = $1 RETURNING 1) "
                            "SELECT pc_require(EXISTS (SELECT 1 FROM w), 'refund_trade')",
                            2, tp, trade_update_cb, a);
    pc_refund_parties_t who = {r->merchant_id,   a->buyer_id, a->channel_id,
                               a->coupon_funder, r->currency, 0};
    pc_refund_legs_t legs;
    if (!rc)
        rc = pc_refund_legs_accept_splits(&r->from, r->shares, r->nshares, &who, &legs);
    if (!rc && legs.n >= 2) {
        pc_ledger_txn_t txn = {"REFUND_ACCEPT", "refund",  r->refund_no,
                               r->trade_no,     legs.legs, legs.n};
        rc = pc_ledger_post(a->tx, &txn, ledger_cb, a);
    }
    const char *ap[] = {r->refund_no, a->reason};
    if (!rc)
        rc = pc_db_tx_query(a->tx,
                            "INSERT INTO refund_actions (refund_no, who, action, why, to_status) "
                            "VALUES ($1, 'merchant', 'ACCEPT', $2, 'ACCEPTED')",
                            2, ap, step_cb, a);
    const char *hp[] = {r->refund_no, r->hold_reason};
    if (!rc && hold)
        rc = pc_db_tx_query(a->tx,
                            "INSERT INTO refund_actions (refund_no, who, action, why, "
                            "from_status, to_status) VALUES ($1, 'risk', 'HOLD', $2, "
                            "'ACCEPTED', 'SUSPENDED')",
                            2, hp, step_cb, a);
    if (!rc)
        rc = pc_idem_store_in_tx(pc_auth_idem(a->req), a->tx, 200, a->body);
    if (rc) {
        acc_fail(a, PC_API_UNAVAILABLE, NULL, "could not record the refund");
        return;
    }
    pc_db_tx_commit(a->tx, acc_commit_cb, a);
}

static void balances_cb(void *data, int status, pc_db_res_t *res)
{
    acc_t *a = data;
    if (status) {
        acc_fail(a, PC_API_UNAVAILABLE, NULL, "database unavailable");
        return;
    }
    for (int i = 0; i < pc_db_rows(res); i++) {
        const char *id = pc_db_get(res, i, 0);
        int64_t b = pc_db_get_i64(res, i, 1);
        if (!strcmp(id, a->acct_pending))
            a->bal_pending = b;
        else if (!strcmp(id, a->acct_available))
            a->bal_available = b;
        else if (!strcmp(id, a->acct_wallet))
            a->bal_wallet = b;
        for (size_t k = 0; k < a->nrv; k++) {
            if (!strcmp(id, a->rv_pending[k]))
                a->rv[k].pending = b;
            else if (!strcmp(id, a->rv_available[k]))
                a->rv[k].available = b;
        }
    }
    decide(a);
}

static void facts_cb(void *data, int status, pc_db_res_t *res)
{
    acc_t *a = data;
    if (status || pc_db_rows(res) != 1)
        return; /* balances_cb (queued behind) reports the failed transaction */
    a->dup = pc_db_val_i64(res, 0, "dup");
    a->active = pc_db_val_i64(res, 0, "active");
    /* A balance part paid from a named account type goes back there; on a
     * trade created without a buyer, the buyer is the one who paid. */
    if (pc_db_val(res, 0, "wallet_owner")[0])
        snprintf(a->buyer_id, sizeof a->buyer_id, "%s", pc_db_val(res, 0, "wallet_owner"));
    else if (!a->buyer_id[0])
        snprintf(a->buyer_id, sizeof a->buyer_id, "%s", pc_db_val(res, 0, "payment_buyer"));
    a->escrow_free = pc_db_val_i64(res, 0, "escrow_free");
    a->used.external = pc_db_val_i64(res, 0, "used_external");
    a->used.balance = pc_db_val_i64(res, 0, "used_balance");
    a->used.coupon = pc_db_val_i64(res, 0, "used_coupon");
    a->advance = pc_db_val(res, 0, "advance_funding")[0] == 't';
    snprintf(a->merchant_notify, sizeof a->merchant_notify, "%s",
             pc_db_val(res, 0, "merchant_notify"));
    a->have_payment = pc_db_val(res, 0, "have_payment")[0] == 't';
    if (!a->have_payment)
        return;
    a->pay.external = pc_db_val_i64(res, 0, "external_amount");
    a->pay.balance = pc_db_val_i64(res, 0, "balance_amount");
    a->pay.coupon = pc_db_val_i64(res, 0, "coupon_amount");
    snprintf(a->channel_id, sizeof a->channel_id, "%s", pc_db_val(res, 0, "channel_id"));
    snprintf(a->pay_txn, sizeof a->pay_txn, "%s", pc_db_val(res, 0, "channel_txn_id"));
    snprintf(a->pay_method, sizeof a->pay_method, "%s", pc_db_val(res, 0, "method_type"));
    snprintf(a->card_token, sizeof a->card_token, "%s", pc_db_val(res, 0, "card_token"));
    snprintf(a->coupon_funder, sizeof a->coupon_funder, "%s", pc_db_val(res, 0, "coupon_funder"));
    a->paid_at = pc_db_val_i64(res, 0, "paid_at");
}

static int add_id(char **arr, size_t *len, const char *id)
{
    size_t need = *len + strlen(id) + 4;
    char *n = realloc(*arr, need + 1);
    if (!n)
        return PC_ENOMEM;
    *len += (size_t)sprintf(n + *len, "%s\"%s\"", *len > 1 ? "," : "", id);
    *arr = n;
    return 0;
}

/* The receivers are known: lock every balance the money may come from in
 * one statement, in id order (the order the ledger locks in, so this cannot
 * deadlock with postings). */
static void receivers_cb(void *data, int status, pc_db_res_t *res)
{
    acc_t *a = data;
    if (status) {
        acc_fail(a, PC_API_UNAVAILABLE, NULL, "database unavailable");
        return;
    }
    const char *mid = pc_auth_merchant(a->req)->id;
    int rows = pc_db_rows(res);
    if (rows > PC_REFUND_MAX_SPLITS) {
        acc_fail(a, PC_API_INTERNAL, NULL, "too many split receivers");
        return;
    }
    char *arr = malloc(2);
    size_t len = 1;
    int rc = arr ? 0 : PC_ENOMEM;
    if (arr)
        strcpy(arr, "{");
    if (!rc && !strcmp(a->product, "RECHARGE")) {
        if (a->buyer_id[0] &&
            pc_ledger_account_id(a->acct_wallet, sizeof a->acct_wallet, PC_LEDGER_BUYER_WALLET,
                                 a->buyer_id, a->currency) == 0)
            rc = add_id(&arr, &len, a->acct_wallet);
    } else if (!rc &&
               pc_ledger_account_id(a->acct_pending, sizeof a->acct_pending,
                                    PC_LEDGER_MERCHANT_PENDING, mid, a->currency) == 0 &&
               pc_ledger_account_id(a->acct_available, sizeof a->acct_available,
                                    PC_LEDGER_MERCHANT_AVAILABLE, mid, a->currency) == 0) {
        rc = add_id(&arr, &len, a->acct_pending);
        if (!rc)
            rc = add_id(&arr, &len, a->acct_available);
    }
    for (int i = 0; i < rows && !rc; i++) {
        pc_refund_receiver_t *v = &a->rv[a->nrv];
        memset(v, 0, sizeof *v);
        snprintf(v->account, sizeof v->account, "%s", pc_db_get(res, i, 0));
        v->received = pc_db_get_i64(res, i, 1);
        v->refunded = pc_db_get_i64(res, i, 2);
        a->split_prior = pc_db_get_i64(res, i, 3);
        v->asked = -1;
        if (pc_ledger_account_id(a->rv_pending[a->nrv], sizeof a->rv_pending[a->nrv],
                                 PC_LEDGER_MERCHANT_PENDING, v->account, a->currency) ||
            pc_ledger_account_id(a->rv_available[a->nrv], sizeof a->rv_available[a->nrv],
                                 PC_LEDGER_MERCHANT_AVAILABLE, v->account, a->currency))
            continue;
        rc = add_id(&arr, &len, a->rv_pending[a->nrv]);
        if (!rc)
            rc = add_id(&arr, &len, a->rv_available[a->nrv]);
        a->nrv++;
    }
    char *full = NULL;
    if (!rc && (full = malloc(len + 2)))
        sprintf(full, "%s}", arr);
    free(arr);
    const char *q[] = {full};
    if (!rc && full)
        rc = pc_db_tx_query(a->tx,
                            /* Locks them and folds their queued deltas
                             * (0040_hot_accounts.sql): exact balances. */
                            "SELECT account_id, balance FROM ledger_lock_accounts($1::text[])", 1,
                            q, balances_cb, a);
    else
        rc = rc ? rc : PC_ENOMEM;
    free(full);
    if (rc)
        acc_fail(a, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

static void locked_cb(void *data, int status, pc_db_res_t *res)
{
    acc_t *a = data;
    if (status) {
        acc_fail(a, PC_API_UNAVAILABLE, NULL, "database unavailable");
        return;
    }
    if (pc_db_rows(res) == 0) {
        acc_fail(a, PC_API_NOT_FOUND, NULL,
                 a->trade_no && a->out_trade_no
                     ? "no trade of yours has both this trade_no and this out_trade_no"
                     : "no such trade");
        return;
    }
    snprintf(a->trade, sizeof a->trade, "%s", pc_db_val(res, 0, "trade_no"));
    snprintf(a->trade_status, sizeof a->trade_status, "%s", pc_db_val(res, 0, "status"));
    snprintf(a->product, sizeof a->product, "%s", pc_db_val(res, 0, "product"));
    snprintf(a->currency, sizeof a->currency, "%s", pc_db_val(res, 0, "currency"));
    snprintf(a->buyer_id, sizeof a->buyer_id, "%s", pc_db_val(res, 0, "buyer_id"));
    snprintf(a->payment_no, sizeof a->payment_no, "%s", pc_db_val(res, 0, "payment_no"));
    snprintf(a->trade_notify, sizeof a->trade_notify, "%s", pc_db_val(res, 0, "notify_url"));
    a->paid = pc_db_val_i64(res, 0, "paid_amount");
    a->settled = pc_db_val_i64(res, 0, "settled_amount");
    const char *mid = pc_auth_merchant(a->req)->id;
    /* A recharge into a named account type credited the buyer's wallet of
     * that type at this merchant: its refund takes the money back from
     * there, not from the buyer's plain wallet. */
    const char *type = pc_db_val(res, 0, "account_type");
    if (!strcmp(a->product, "RECHARGE") && type[0] && a->buyer_id[0]) {
        char owner[PC_LEDGER_OWNER_MAX + 2];
        if (snprintf(owner, sizeof owner, "%s@%s.%s", a->buyer_id, mid, type) >
            PC_LEDGER_OWNER_MAX) {
            acc_fail(a, PC_API_INTERNAL, NULL, "the recharged account cannot be named");
            return;
        }
        snprintf(a->buyer_id, sizeof a->buyer_id, "%.*s", PC_LEDGER_OWNER_MAX, owner);
    }
    /* Started after the lock was granted: these see every refund of this
     * trade committed before (a subquery of the locking statement would not).
     * Money under an open or lost chargeback of the payment
     * (payment_chargeback_frozen) is not refundable, and it is the payment's
     * channel part that the chargeback took back: it counts as used there.
     * Opening a chargeback takes the same trade lock. */
    const char *p[] = {mid, a->out_refund_no, a->trade, a->payment_no};
    int rc = pc_db_tx_query(
        a->tx,
        "SELECT (SELECT count(*) FROM refunds WHERE merchant_id = $1 AND out_refund_no = $2) AS "
        "dup, (SELECT coalesce(sum(amount), 0) FROM refunds WHERE trade_no = $3 AND type = "
        "'NORMAL' AND status NOT IN ('FAILED', 'TERMINATED')) + u.frozen AS active, "
        "trade_escrow_free($3) AS escrow_free, u.used_external, "
        "u.used_balance, u.used_coupon, m.advance_funding::text AS advance_funding, "
        "coalesce(m.notify_url, '') AS merchant_notify, (p.payment_no IS NOT NULL)::text AS "
        "have_payment, coalesce(p.external_amount, 0) AS external_amount, "
        "coalesce(p.balance_amount, 0) AS balance_amount, coalesce(p.coupon_amount, 0) AS "
        "coupon_amount, coalesce(p.channel_id, '') AS channel_id, coalesce(p.channel_txn_id, "
        "'') AS channel_txn_id, coalesce(p.method_type, '') AS method_type, "
        "coalesce(p.card_token, '') AS card_token, coalesce(p.wallet_owner, '') AS wallet_owner, "
        "coalesce(p.buyer_id, '') AS payment_buyer, "
        "coalesce(floor(extract(epoch FROM "
        "p.finished_at))::bigint, 0) AS paid_at, coalesce((SELECT c.merchant_id FROM coupons c "
        "WHERE c.coupon_id = p.coupon_id AND c.funded_by = 'MERCHANT'), '') AS coupon_funder "
        "FROM merchants m LEFT JOIN payments p ON p.payment_no = $4 AND p.status = 'SUCCESS' "
        "CROSS JOIN (SELECT coalesce(sum(external_amount), 0) + payment_chargeback_frozen($4) + "
        "payment_disputed_unmatched($4) AS used_external, payment_chargeback_frozen($4) + "
        "payment_disputed_unmatched($4) AS frozen, "
        "coalesce(sum(balance_amount), 0) AS used_balance, coalesce(sum(coupon_amount), 0) AS "
        "used_coupon FROM refunds WHERE payment_no = $4 AND type = 'NORMAL' AND status NOT IN "
        "('FAILED', 'TERMINATED')) u WHERE m.merchant_id = $1",
        4, p, facts_cb, a);
    /* The trade's split receivers: what each got and what live refunds
     * already take back from it. */
    const char *q[] = {a->trade};
    if (!rc)
        rc = pc_db_tx_query(a->tx,
                            "SELECT g.account, g.received, coalesce(f.refunded, 0) AS refunded, "
                            "(SELECT coalesce(sum(amount - from_escrow), 0) FROM refunds WHERE "
                            "trade_no = $1 AND type = 'NORMAL' AND status NOT IN ('FAILED', "
                            "'TERMINATED'))::bigint AS prior FROM trade_split_received($1) g LEFT "
                            "JOIN trade_split_refunded($1) f USING (account) ORDER BY g.account",
                            1, q, receivers_cb, a);
    if (rc)
        acc_fail(a, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

/* The trade, locked: by trade_no or out_trade_no ($2) of merchant $1. */
#define LOCK_TRADE_SQL                                                                             \
    "SELECT trade_no, status, product, paid_amount, settled_amount, currency, coalesce(buyer_id, " \
    "'') AS buyer_id, coalesce(payment_no, '') AS payment_no, coalesce(notify_url, '') AS "        \
    "notify_url, coalesce(account_type, '') AS account_type FROM trades WHERE merchant_id = $1 "   \
    "AND "

static void begin_cb(void *data, int status, pc_db_tx_t *tx)
{
    acc_t *a = data;
    if (status) {
        acc_fail(a, PC_API_UNAVAILABLE, NULL, "database unavailable");
        return;
    }
    a->tx = tx;
    const char *mid = pc_auth_merchant(a->req)->id;
    /* Both given: they must name the same trade (before, out_trade_no was
     * ignored, and a mistaken one refunded the other trade unnoticed). */
    const char *p[] = {mid, a->trade_no ? a->trade_no : a->out_trade_no, a->out_trade_no};
    if (pc_db_tx_query(tx,
                       a->trade_no && a->out_trade_no ? LOCK_TRADE_SQL
                           "trade_no = $2 AND out_trade_no = $3 FOR UPDATE"
                       : a->trade_no ? LOCK_TRADE_SQL "trade_no = $2 FOR UPDATE"
                                     : LOCK_TRADE_SQL "out_trade_no = $2 FOR UPDATE",
                       a->trade_no && a->out_trade_no ? 3 : 2, p, locked_cb, a) < 0)
        acc_fail(a, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

/* The payee of a PAYOUT refund, normalised; NULL with *why on error. Card
 * numbers are refused outright: only a channel's card token is taken. */
static json_t *parse_payee(json_t *p, const char **why)
{
    if (!json_is_object(p)) {
        *why = "payee must be an object";
        return NULL;
    }
    if (json_object_get(p, "pan") || json_object_get(p, "card_number") ||
        json_object_get(p, "cvv")) {
        *why = "card numbers are never accepted: give a card_token";
        return NULL;
    }
    int bad = 0;
    const char *type = pc_json_str(p, "type", 16, 1, &bad);
    const char *name = pc_json_str(p, "name", 64, 0, &bad);
    const char *bank = pc_json_str(p, "bank_code", 16, 1, &bad);
    if (bad || !type) {
        *why = "payee.type is CARD or ACCOUNT; name up to 64, bank_code up to 16 characters";
        return NULL;
    }
    if (!strcmp(type, "CARD")) {
        const char *tok = pc_json_str(p, "card_token", 80, 1, &bad);
        if (!tok || bad) {
            *why = "a CARD payee needs card_token";
            return NULL;
        }
        return json_pack("{s:s,s:s,s:s?}", "type", "CARD", "card_token", tok, "name", name);
    }
    if (!strcmp(type, "ACCOUNT")) {
        const char *acct = pc_json_str(p, "account_no", 34, 0, &bad);
        *why = pc_account_no_refusal(bad ? NULL : acct);
        if (*why)
            return NULL;
        return json_pack("{s:s,s:s,s:s?,s:s?}", "type", "ACCOUNT", "account_no", acct, "name", name,
                         "bank_code", bank);
    }
    *why = "payee.type is CARD or ACCOUNT";
    return NULL;
}

static void create_refund(pc_http_req_t *req, void *data)
{
    json_t *b = pc_http_req_json(req);
    if (!b) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, NULL, "body must be a JSON object");
        return;
    }
    acc_t *a = pc_http_req_alloc(req, sizeof *a);
    a->req = req;
    a->app = data;
    pc_http_req_on_done(req, acc_free, a);
    int bad = 0;
    a->trade_no = pc_json_str(b, "trade_no", 39, 1, &bad);
    if (bad) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "trade_no", "a trade number");
        return;
    }
    a->out_trade_no = pc_json_str(b, "out_trade_no", 64, 1, &bad);
    if (bad || (!a->trade_no && !a->out_trade_no)) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "trade_no",
                              "trade_no or out_trade_no is required");
        return;
    }
    a->out_refund_no = pc_json_str(b, "out_refund_no", 64, 1, &bad);
    if (bad || !a->out_refund_no) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "out_refund_no",
                              "1-64 of [A-Za-z0-9_-], required");
        return;
    }
    /* The platform's error refunds are numbered ERR-<payment_no> in the
     * merchant's own out_refund_no space: one taken by the merchant first
     * would keep a duplicate payment from ever going back. */
    if (!strncmp(a->out_refund_no, "ERR-", 4)) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "out_refund_no",
                              "the prefix ERR- is kept for the platform's error refunds");
        return;
    }
    if (pc_json_int(b, "amount", 1, 1000000000000000LL, &a->amount) != 0) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "amount",
                              "a positive integer in minor units, required");
        return;
    }
    a->reason = pc_json_str(b, "reason", 256, 0, &bad);
    if (bad) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "reason", "up to 256 characters");
        return;
    }
    a->notify_url = pc_json_url(b, "notify_url", &bad);
    if (bad) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "notify_url", "an http(s) URL");
        return;
    }
    json_t *splits = json_object_get(b, "splits");
    if (splits && !json_is_null(splits)) {
        size_t i;
        json_t *e;
        int ok = json_is_array(splits) && json_array_size(splits) > 0 &&
                 json_array_size(splits) <= PC_REFUND_MAX_SPLITS;
        int64_t sum = 0;
        json_array_foreach(splits, i, e)
        {
            json_t *acct = json_object_get(e, "account");
            json_t *amt = json_object_get(e, "amount");
            if (!json_is_string(acct) || strlen(json_string_value(acct)) == 0 ||
                strlen(json_string_value(acct)) > 64 || !json_is_integer(amt) ||
                json_integer_value(amt) < 0 || json_integer_value(amt) > 1000000000000000LL)
                ok = 0;
            else
                sum += json_integer_value(amt);
        }
        if (!ok) {
            pc_http_respond_error(req, PC_API_INVALID_REQUEST, "splits",
                                  "[{\"account\", \"amount\"}]: each a split receiver of the trade "
                                  "and what to take back from it (0 or more; together at most the "
                                  "amount)");
            return;
        }
        /* As a trade's and a settle's splits (api.md). */
        if (sum > a->amount) {
            pc_http_respond_error(req, PC_API_SPLIT_EXCEEDS_AMOUNT, "splits",
                                  "splits add up to more than the amount");
            return;
        }
        a->asked = splits;
    }
    json_t *payee = json_object_get(b, "payee");
    if (payee && !json_is_null(payee)) {
        const char *why = NULL;
        a->payee = parse_payee(payee, &why);
        if (!a->payee) {
            pc_http_respond_error(req, PC_API_INVALID_REQUEST, "payee", why);
            return;
        }
    }
    if (pc_db_begin(a->app->db, NULL, begin_cb, a) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

/* ---------- GET /v1/refunds/{refund_no}, GET /v1/refunds?out_refund_no= ---------- */

static void got_cb(void *data, int status, pc_db_res_t *res)
{
    pc_http_req_t *req = data;
    if (status) {
        pc_respond_db_error(req, status);
        return;
    }
    if (pc_db_rows(res) == 0) {
        pc_http_respond_error(req, PC_API_NOT_FOUND, NULL, "no such refund");
        return;
    }
    pc__refund_t r;
    pc__refund_from_row(&r, res, 0);
    pc_http_respond_json(req, 200, pc__refund_json(&r, 0));
}

static void get_refund(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    const char *p[] = {pc_http_req_param(req, "refund_no"), pc_auth_merchant(req)->id};
    if (pc_db_query(app->db,
                    "SELECT " PC__REFUND_COLUMNS
                    " FROM refunds WHERE refund_no = $1 AND merchant_id = $2",
                    2, p, got_cb, req) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

static void find_refund(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    const char *out = pc_http_req_query_param(req, "out_refund_no");
    if (!out || !out[0]) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "out_refund_no",
                              "query by ?out_refund_no=");
        return;
    }
    const char *p[] = {out, pc_auth_merchant(req)->id};
    if (pc_db_query(app->db,
                    "SELECT " PC__REFUND_COLUMNS
                    " FROM refunds WHERE out_refund_no = $1 AND merchant_id = $2",
                    2, p, got_cb, req) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

void pc_app_routes_refunds(pc_app_t *app)
{
    pc_router_add(app->api, "POST", "/v1/refunds", create_refund, app);
    pc_router_add(app->api, "GET", "/v1/refunds/{refund_no}", get_refund, app);
    pc_router_add(app->api, "GET", "/v1/refunds", find_refund, app);
    pc__refund_ops_routes(app);
}
