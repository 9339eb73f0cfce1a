#include "refund/refund.h"
#include "acquiring/trade.h"
#include "acquiring/trade_state.h"
#include "auth/sign.h"
#include "channel/client.h"
#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"
#include "ledger/ledger.h"
#include "notify/outbox.h"
#include "repair/repair.h"
#include "rules/rules.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Most refunds one node works on at once (sends, queries, creations). */
#define MAX_IN_FLIGHT 200
/* Rows per claim. */
#define CLAIM_BATCH 50
#define ERROR_BATCH 20

struct pc_refunds {
    pc_app_t *app;
    uv_timer_t timer;
    char schedule[512]; /* "{2000,5000,…}": a PostgreSQL int array literal */
    long long first_ms, grace_ms;
    int nschedule;
    int claiming, creating;
    int in_flight;
    long long claim_warned_s; /* pc_log_due */
    /* A batch of error refunds failed: they are made one at a time until a
     * sweep finds none, and one that fails alone is marked in its row
     * (error_refund_failed_at): every node takes it after every other, and
     * not again before refund.error_retry_ms (a payment whose row cannot be
     * written must not hold every other buyer's refund). */
    int error_single;
};

/* ---------- the refund row and its JSON ---------- */

static void cp(char *dst, size_t n, pc_db_res_t *res, int row, const char *col)
{
    snprintf(dst, n, "%s", pc_db_val(res, row, col));
}

void pc__refund_from_row(pc__refund_t *r, pc_db_res_t *res, int row)
{
    memset(r, 0, sizeof *r);
    cp(r->refund_no, sizeof r->refund_no, res, row, "refund_no");
    cp(r->out_refund_no, sizeof r->out_refund_no, res, row, "out_refund_no");
    cp(r->merchant_id, sizeof r->merchant_id, res, row, "merchant_id");
    cp(r->trade_no, sizeof r->trade_no, res, row, "trade_no");
    cp(r->payment_no, sizeof r->payment_no, res, row, "payment_no");
    cp(r->type, sizeof r->type, res, row, "type");
    cp(r->method, sizeof r->method, res, row, "method");
    cp(r->status, sizeof r->status, res, row, "status");
    cp(r->currency, sizeof r->currency, res, row, "currency");
    r->amount = pc_db_val_i64(res, row, "amount");
    r->parts.external = pc_db_val_i64(res, row, "external_amount");
    r->parts.balance = pc_db_val_i64(res, row, "balance_amount");
    r->parts.coupon = pc_db_val_i64(res, row, "coupon_amount");
    r->from.escrow = pc_db_val_i64(res, row, "from_escrow");
    r->from.pending = pc_db_val_i64(res, row, "from_pending");
    r->from.available = pc_db_val_i64(res, row, "from_available");
    r->from.wallet = pc_db_val_i64(res, row, "from_wallet");
    r->from.receivable = pc_db_val_i64(res, row, "from_receivable");
    cp(r->channel_id, sizeof r->channel_id, res, row, "channel_id");
    cp(r->channel_txn_id, sizeof r->channel_txn_id, res, row, "channel_txn_id");
    cp(r->payment_channel_txn_id, sizeof r->payment_channel_txn_id, res, row,
       "payment_channel_txn_id");
    cp(r->buyer_id, sizeof r->buyer_id, res, row, "buyer_id");
    cp(r->coupon_funder, sizeof r->coupon_funder, res, row, "coupon_funder");
    cp(r->payee, sizeof r->payee, res, row, "payee");
    cp(r->reason, sizeof r->reason, res, row, "reason");
    cp(r->notify_url, sizeof r->notify_url, res, row, "notify_url");
    cp(r->failure_code, sizeof r->failure_code, res, row, "failure_code");
    cp(r->failure_message, sizeof r->failure_message, res, row, "failure_message");
    cp(r->hold_reason, sizeof r->hold_reason, res, row, "hold_reason");
    cp(r->batch_id, sizeof r->batch_id, res, row, "batch_id");
    cp(r->rule_version, sizeof r->rule_version, res, row, "rule_version");
    cp(r->risk_decision, sizeof r->risk_decision, res, row, "risk_decision");
    r->created_at = pc_db_val_i64(res, row, "created_at");
    r->finished_at = pc_db_val_i64(res, row, "finished_at");
    r->split_amount = pc_db_val_i64(res, row, "split_amount");
    r->coupon_returned = pc_db_val(res, row, "coupon_returned")[0] == 't';
    if (pc__refund_shares_parse(pc_db_val(res, row, "splits"), r->shares, &r->nshares) < 0)
        pc_log_error("refund.bad_splits", "refund %s: splits unreadable", r->refund_no);
}

int pc__refund_shares_parse(const char *text, pc_refund_share_t *shares, size_t *n)
{
    *n = 0;
    if (!text || !text[0])
        return 0;
    json_t *arr = json_loads(text, 0, NULL);
    if (!json_is_array(arr) || json_array_size(arr) > PC_REFUND_MAX_SPLITS) {
        json_decref(arr);
        return PC_EINVAL;
    }
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e)
    {
        pc_refund_share_t *s = &shares[i];
        memset(s, 0, sizeof *s);
        const char *acct = json_string_value(json_object_get(e, "account"));
        snprintf(s->account, sizeof s->account, "%s", acct ? acct : "");
        s->amount = json_integer_value(json_object_get(e, "amount"));
        s->pending = json_integer_value(json_object_get(e, "from_pending"));
        s->available = json_integer_value(json_object_get(e, "from_available"));
        s->receivable = json_integer_value(json_object_get(e, "from_receivable"));
    }
    *n = json_array_size(arr);
    json_decref(arr);
    return 0;
}

json_t *pc__refund_shares_json(const pc_refund_share_t *shares, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, json_pack("{s:s,s:I,s:I,s:I,s:I}", "account", shares[i].account,
                                             "amount", (json_int_t)shares[i].amount, "from_pending",
                                             (json_int_t)shares[i].pending, "from_available",
                                             (json_int_t)shares[i].available, "from_receivable",
                                             (json_int_t)shares[i].receivable));
    return arr;
}

json_t *pc__refund_json(const pc__refund_t *r, int admin)
{
    char created[32], finished[32];
    pc_rfc3339(r->created_at, created, sizeof created);
    json_t *failure = json_null();
    /* A refund on its way shows no failure, even when an earlier attempt
     * left a code behind (an error refund moved to OFFLINE keeps it for ops). */
    if (!strcmp(r->status, "FAILED") || !strcmp(r->status, "TERMINATED"))
        failure = json_pack("{s:s,s:s}", "code", r->failure_code[0] ? r->failure_code : r->status,
                            "message", r->failure_message);
    json_t *o = json_pack(
        "{s:s,s:s,s:s,s:I,s:s,s:s,s:s,s:s,s:o,s:o}", "refund_no", r->refund_no, "out_refund_no",
        r->out_refund_no, "trade_no", r->trade_no, "amount", (json_int_t)r->amount, "type", r->type,
        "method", r->method, "status", r->status, "created_at", created, "finished_at",
        r->finished_at ? json_string(pc_rfc3339(r->finished_at, finished, sizeof finished))
                       : json_null(),
        "failure", failure);
    if (!o)
        return o;
    /* Added only where they say something (README "Refunds"), so that the
     * object of a plain refund keeps exactly api.md's fields: splits when
     * the trade's money was split, coupon_returned on the refund that
     * carries the coupon part (a partial refund never does: cash only). */
    if (r->nshares > 0) {
        json_t *splits = json_array();
        for (size_t i = 0; i < r->nshares; i++)
            json_array_append_new(splits, json_pack("{s:s,s:I}", "account", r->shares[i].account,
                                                    "amount", (json_int_t)r->shares[i].amount));
        json_object_set_new(o, "splits", splits);
    }
    if (r->parts.coupon > 0)
        json_object_set_new(o, "coupon_returned", json_boolean(r->coupon_returned));
    if (!admin)
        return o;
    json_t *extra = json_pack(
        "{s:s,s:s,s:s,s:{s:I,s:I,s:I},s:{s:I,s:I,s:I,s:I,s:I},s:s?,s:s?,s:s?,s:s?,s:s?,s:s?,s:s?}",
        "merchant_id", r->merchant_id, "payment_no", r->payment_no, "currency", r->currency,
        "components", "external", (json_int_t)r->parts.external, "balance",
        (json_int_t)r->parts.balance, "coupon", (json_int_t)r->parts.coupon, "taken_from", "escrow",
        (json_int_t)r->from.escrow, "pending", (json_int_t)r->from.pending, "available",
        (json_int_t)r->from.available, "wallet", (json_int_t)r->from.wallet, "receivable",
        (json_int_t)r->from.receivable, "channel_id", r->channel_id[0] ? r->channel_id : NULL,
        "channel_txn_id", r->channel_txn_id[0] ? r->channel_txn_id : NULL, "batch_id",
        r->batch_id[0] ? r->batch_id : NULL, "reason", r->reason[0] ? r->reason : NULL,
        "hold_reason", r->hold_reason[0] ? r->hold_reason : NULL, "last_failure_code",
        r->failure_code[0] ? r->failure_code : NULL, "last_failure_message",
        r->failure_message[0] ? r->failure_message : NULL);
    json_object_set_new(extra, "rule_version",
                        r->rule_version[0] ? json_string(r->rule_version) : json_null());
    json_object_set_new(extra, "risk_decision",
                        r->risk_decision[0] ? json_string(r->risk_decision) : json_null());
    /* Whom a PAYOUT pays, and whom ops pay by hand an OFFLINE refund the
     * merchant named an account for (a cash payment's, say): no admin view
     * showed it, and ops had no account to pay. (Never a card number: a
     * payee is an account or a card token.) */
    json_t *payee = r->payee[0] ? json_loads(r->payee, 0, NULL) : NULL;
    json_object_set_new(extra, "payee", payee ? payee : json_null());
    json_object_update(o, extra);
    json_decref(extra);
    return o;
}

void pc__refund_no_new(char out[40])
{
    char hex[21];
    pc_random_hex(hex, sizeof hex, 10);
    snprintf(out, 40, "R%s", hex);
}

static void count_final(const pc__refund_t *r)
{
    char labels[96];
    snprintf(labels, sizeof labels, "type=\"%s\",method=\"%s\",status=\"%s\"", r->type, r->method,
             r->status);
    pc_metrics_add("pc_refunds_total", labels, 1);
}

/* ---------- transitions ---------- */

#define MAX_FROM 6

typedef struct {
    pc_refunds_t *rf;
    pc_db_tx_t *tx;
    char refund_no[40], to[12], who[65], action[24], why[257], code[49], msg[161], txn[81];
    char only_method[8], only_batch[40], set_method[8], only_channel[33];
    char from[MAX_FROM][12];
    int nfrom, normal_only, error_to_offline;
    int64_t channel_amount;
    char channel_currency[4];
    pc__transition_cb cb;
    void *data;
    pc__refund_t r;
    char old_status[12];
    int64_t paid_amount;
    int trade_locked;
    int step_failed;
    long long now;
    /* A resume's look at the payment (tr_payment_cb), to choose the method
     * again: its method type, the card it holds, when it was paid, its
     * channel part. */
    int have_payment;
    char pay_method[16], card_token[81];
    long long paid_at;
    int64_t pay_external;
    char *set_payee; /* JSON text the refund's payee becomes (NULL: kept) */
} tr_t;

static void tr_end(tr_t *t, int status, const pc__refund_t *r)
{
    if (t->tx) {
        pc_db_tx_rollback(t->tx);
        t->tx = NULL;
    }
    if (t->cb)
        t->cb(t->data, status, r);
    free(t->set_payee);
    free(t);
}

static int is_final(const char *status)
{
    return !strcmp(status, "SUCCESS") || !strcmp(status, "FAILED") || !strcmp(status, "TERMINATED");
}

static void tr_commit_cb(void *data, int status)
{
    tr_t *t = data;
    t->tx = NULL;
    if (status) {
        pc_log_warn("refund.transition_failed", "refund %s %s -> %s not recorded: %s", t->refund_no,
                    t->old_status, t->r.status, pc_strerror(status));
        tr_end(t, status, NULL);
        return;
    }
    if (is_final(t->r.status))
        count_final(&t->r);
    pc_log_info("refund.transition", "refund %s: %s -> %s (%s by %s%s%s)", t->refund_no,
                t->old_status, t->r.status, t->action, t->who, t->why[0] ? ": " : "", t->why);
    int resend = !strcmp(t->r.status, "ACCEPTED") &&
                 (!strcmp(t->r.method, "API") || !strcmp(t->r.method, "PAYOUT"));
    pc_refunds_t *rf = t->rf;
    char no[40];
    snprintf(no, sizeof no, "%s", t->refund_no);
    if (t->cb)
        t->cb(t->data, 0, &t->r);
    free(t);
    if (resend)
        pc__refund_dispatch(rf, no);
}

static void tr_step_cb(void *data, int status, pc_db_res_t *res)
{
    tr_t *t = data;
    (void)res;
    if (status && !t->step_failed)
        t->step_failed = status;
}

static void tr_ledger_cb(void *data, int status, int64_t txn_id)
{
    tr_t *t = data;
    (void)txn_id;
    if (status) {
        pc_log_error("refund.ledger_failed", "refund %s -> %s: %s", t->refund_no, t->to,
                     pc_ledger_strerror(status));
        if (!t->step_failed)
            t->step_failed = status;
    }
}

static void tr_commit(tr_t *t)
{
    pc_db_tx_t *tx = t->tx;
    /* A step that failed without aborting the transaction (a conditional
     * update that touched no row) must not commit the rest of it. */
    if (t->step_failed) {
        pc_db_tx_rollback(tx);
        tr_commit_cb(t, t->step_failed);
        return;
    }
    pc_db_tx_commit(tx, tr_commit_cb, t);
}

/* The refund's move: it found the refund in another status only if a
 * concurrent move won (the refund row is locked first, so not today). */
static void tr_moved_cb(void *data, int status, pc_db_res_t *res)
{
    tr_step_cb(data,
               status && !strcmp(pc_db_constraint(res), "refund_status") ? PC_ECONFLICT : status,
               res);
}

/* The refund moved its trade on (event: trade.closed or trade.succeeded):
 * the merchant is told in the same transaction. */
static void tr_trade_moved(tr_t *t, int status, pc_db_res_t *res, const char *event)
{
    if (status) {
        tr_step_cb(t, status, res);
    } else if (pc_db_rows(res) == 1) {
        if (pc_trade_outbox_row(t->tx, res, 0, event, t->r.notify_url[0] ? t->r.notify_url : NULL) <
                0 &&
            !t->step_failed)
            t->step_failed = PC_EIO;
        pc_log_info("refund.trade_moved", "trade %s is %s after refund %s", t->r.trade_no,
                    pc_db_val(res, 0, "status"), t->r.refund_no);
    }
    tr_commit(t);
}

static void tr_closed_cb(void *data, int status, pc_db_res_t *res)
{
    tr_trade_moved(data, status, res, "trade.closed");
}

static void tr_succeeded_cb(void *data, int status, pc_db_res_t *res)
{
    tr_trade_moved(data, status, res, "trade.succeeded");
}

/* Counted after the trade row lock: sees every refund of the trade that
 * committed before, and this one. */
static void tr_sum_cb(void *data, int status, pc_db_res_t *res)
{
    tr_t *t = data;
    if (status) {
        tr_step_cb(t, status, res);
        tr_commit(t);
        return;
    }
    int64_t done = pc_db_get_i64(res, 0, 0);
    if (t->paid_amount == 0) {
        tr_commit(t);
        return;
    }
    /* Fully refunded: closed. Else a guarantee trade whose escrow this
     * refund emptied (no other escrow refund in flight, which could fail
     * and give its money back to settle; no chargeback holding part of it
     * undecided): nothing is left to settle, so it ends as a settle of the
     * rest would have ended it.
     * Before, it stayed PAY_SUCCESS for good, never finished, its merchant
     * never told. */
    const char *sql =
        done == t->paid_amount
            ? "UPDATE trades SET status = 'TRADE_CLOSED', close_reason = 'REFUNDED', closed_at = "
              "now(), updated_at = now() WHERE trade_no = $1 AND status IN ('TRADE_SUCCESS', "
              "'PAY_SUCCESS') RETURNING " PC_TRADE_COLUMNS ", notify_url"
            : PC_TRADE_FINISH_GUARANTEE_SQL;
    const char *p[] = {t->r.trade_no};
    if (pc_db_tx_query(t->tx, sql, 1, p, done == t->paid_amount ? tr_closed_cb : tr_succeeded_cb,
                       t) < 0) {
        t->step_failed = PC_EUNAVAIL;
        tr_commit(t);
    }
}

/* The coupon's answer is in: the refund object now says whether the coupon
 * went back, so the notification is written here, in the transaction: a
 * normal refund's commit is queued by tr_sum_cb, an error refund's by
 * tr_last_cb, both after this. Before, an error refund queued its commit
 * first, and the notification ran after it, on its own: lost if the node
 * died in between, written for a refund that rolled back. */
static void tr_coupon_cb(void *data, int status, pc_db_res_t *res)
{
    tr_t *t = data;
    if (status || pc_db_rows(res) != 1) {
        tr_step_cb(t, status ? status : PC_ECONFLICT, res);
        return;
    }
    t->r.coupon_returned = pc_db_get(res, 0, 0)[0] == 't';
    json_t *obj = pc__refund_json(&t->r, 0);
    if (pc_outbox_add(t->tx, t->r.merchant_id, "refund.succeeded",
                      t->r.notify_url[0] ? t->r.notify_url : NULL, obj) < 0 &&
        !t->step_failed)
        t->step_failed = PC_EIO;
    json_decref(obj);
    if (t->r.coupon_returned)
        pc_log_info("refund.coupon_returned", "refund %s: coupon of payment %s is AVAILABLE",
                    t->r.refund_no, t->r.payment_no);
}

/* The last statement tr_apply queued for an error refund with a coupon part
 * has answered: every callback that uses t has run (the notice the coupon's
 * answer wrote has none), so the commit, or a rollback that ends t at once,
 * is safe here. Committed from the coupon's answer itself, a rollback freed
 * t under the callbacks still to come. */
static void tr_last_cb(void *data, int status, pc_db_res_t *res)
{
    tr_t *t = data;
    tr_step_cb(t, status, res);
    tr_commit(t);
}

static int in_from(const tr_t *t, const char *status)
{
    for (int i = 0; i < t->nfrom; i++)
        if (!strcmp(t->from[i], status))
            return 1;
    return 0;
}

/* A refund resumed (held by risk or by ops) runs by the method chosen for
 * it now, not when it was accepted: the channel's refund window may have
 * passed meanwhile (an API refund a real channel then refuses), or the
 * channel switched off. Only a method the refund runs by itself (API,
 * FILE, PAYOUT) is chosen again; a PAYOUT to the card the buyer paid with
 * gets that card as its payee. Before, the method stayed as accepted (a
 * PAYOUT went out through a channel ops had switched off meanwhile). */
static void rechoose_method(tr_t *t)
{
    pc__refund_t *r = &t->r;
    if (strcmp(t->action, "RESUME") != 0 || !t->have_payment || strcmp(r->type, "NORMAL") != 0 ||
        r->parts.external <= 0 ||
        (strcmp(r->method, "API") != 0 && strcmp(r->method, "FILE") != 0 &&
         strcmp(r->method, "PAYOUT") != 0))
        return;
    json_t *payee = r->payee[0] ? json_loads(r->payee, 0, NULL) : NULL;
    const char *ptype = payee ? json_string_value(json_object_get(payee, "type")) : NULL;
    pc__method_ctx_t mc = {.type = "NORMAL",
                           .external = r->parts.external,
                           .payment_external = t->pay_external,
                           .currency = r->currency,
                           .payment_method = t->pay_method,
                           .channel_id = r->channel_id,
                           .paid_at = t->paid_at,
                           .payee_available = payee || t->card_token[0],
                           .payee_type = payee ? ptype : "CARD"};
    char version[65];
    const char *m = pc__refund_method(t->rf->app, &mc, version);
    if (!strcmp(m, r->method)) {
        json_decref(payee);
        return;
    }
    if (!strcmp(m, "PAYOUT") && !payee) {
        json_t *card = json_pack("{s:s,s:s}", "type", "CARD", "card_token", t->card_token);
        t->set_payee = card ? json_dumps(card, JSON_COMPACT) : NULL;
        json_decref(card);
        if (!t->set_payee)
            m = "OFFLINE";
    }
    json_decref(payee);
    pc_log_info("refund.method_rechosen", "refund %s resumed: runs by %s now, not %s", r->refund_no,
                m, r->method);
    snprintf(t->set_method, sizeof t->set_method, "%s", m);
}

/* The refund is locked and may move: write everything that goes with it. */
static void tr_apply(tr_t *t)
{
    pc__refund_t *r = &t->r;
    int normal = !strcmp(r->type, "NORMAL");
    snprintf(t->old_status, sizeof t->old_status, "%s", r->status);
    rechoose_method(t);
    if (!normal && t->error_to_offline && !strcmp(t->to, "FAILED")) {
        /* An error refund never fails back: the money is the buyer's. When
         * its channel refuses, ops return it by hand. */
        snprintf(t->to, sizeof t->to, "PROCESSING");
        snprintf(t->set_method, sizeof t->set_method, "OFFLINE");
        snprintf(t->action, sizeof t->action, "TO_OFFLINE");
        snprintf(t->why, sizeof t->why, "the channel refused (%s): returned by hand",
                 t->code[0] ? t->code : "FAILED");
    }
    snprintf(r->status, sizeof r->status, "%s", t->to);
    if (t->set_method[0])
        snprintf(r->method, sizeof r->method, "%s", t->set_method);
    if (t->code[0]) {
        snprintf(r->failure_code, sizeof r->failure_code, "%s", t->code);
        snprintf(r->failure_message, sizeof r->failure_message, "%s", t->msg);
    }
    if (t->txn[0])
        snprintf(r->channel_txn_id, sizeof r->channel_txn_id, "%s", t->txn);
    int final = is_final(t->to);
    if (final)
        r->finished_at = t->now;
    if (!strcmp(t->to, "SUSPENDED"))
        snprintf(r->hold_reason, sizeof r->hold_reason, "%s", t->why);

    int other_sum = !strcmp(t->to, "SUCCESS") && t->channel_amount > 0 &&
                    (t->channel_amount != r->parts.external ||
                     (t->channel_currency[0] && strcmp(t->channel_currency, r->currency) != 0));
    if (other_sum)
        pc_log_error("refund.amount_mismatch",
                     "refund %s: channel %s says it paid %lld %s, not %lld %s: applied, flagged "
                     "for ops (GET /admin/needs-ops)",
                     r->refund_no, r->channel_id, (long long)t->channel_amount, t->channel_currency,
                     (long long)r->parts.external, r->currency);
    char now[24], grace[24], first[24];
    snprintf(now, sizeof now, "%lld", t->now);
    snprintf(grace, sizeof grace, "%lld", t->rf->grace_ms);
    snprintf(first, sizeof first, "%lld", t->rf->first_ms);
    /* Force-failed while at its channel: the channel may still pay it, and
     * a lost callback would leave that to reconciliation. Its queries run
     * the schedule again (the runner stops them at the channel's final
     * answer and flags a success). Before, they stopped at once. */
    int still_queried = !strcmp(t->action, "FORCE_FAIL") && !strcmp(t->old_status, "PROCESSING") &&
                        (!strcmp(r->method, "API") || !strcmp(r->method, "PAYOUT")) &&
                        r->parts.external > 0;
    const char *p[] = {r->refund_no,
                       t->to,
                       t->set_method[0] ? t->set_method : NULL,
                       t->code[0] ? t->code : NULL,
                       t->code[0] ? t->msg : NULL,
                       t->txn[0] ? t->txn : NULL,
                       now,
                       !strcmp(t->to, "SUSPENDED") ? t->why : NULL,
                       t->old_status,
                       grace,
                       other_sum ? "t" : "f",
                       still_queried ? first : NULL,
                       t->set_payee};
    /* next_query_at: a resumed refund is sent now, and by the runner after the
     * grace if this node cannot; OFFLINE and final refunds are not queried,
     * but for a force-failed one still at its channel (still_queried).
     * The move must apply (pc_require): a write that touched no row would
     * abort nothing, and the rest of the transaction would commit without it. */
    int rc = pc_db_tx_query(
        t->tx,
        "WITH w AS (UPDATE refunds SET status = $2, method = coalesce($3, method), payee = "
        "coalesce($13::jsonb, payee), failure_code = "
        "coalesce($4, failure_code), failure_message = coalesce($5, failure_message), "
        "channel_txn_id = coalesce($6, channel_txn_id), finished_at = CASE WHEN $2 IN "
        "('SUCCESS', 'FAILED', 'TERMINATED') THEN to_timestamp($7::bigint) END, hold_reason = "
        "coalesce($8, hold_reason), query_attempts = CASE WHEN $12::bigint IS NOT NULL THEN 0 "
        "ELSE query_attempts END, next_query_at = CASE WHEN $12::bigint IS NOT NULL THEN now() + "
        "$12::bigint * interval '1 millisecond' WHEN $2 = 'ACCEPTED' THEN now() + "
        "$10::bigint * interval '1 millisecond' WHEN $2 IN ('SUCCESS', 'FAILED', 'TERMINATED') "
        "OR coalesce($3, method) IN ('FILE', 'OFFLINE') THEN NULL ELSE next_query_at END, "
        "needs_ops = CASE WHEN $9 IN ('ACCEPTED', 'PROCESSING', 'SUSPENDED') THEN $11::boolean "
        "ELSE needs_ops OR $11::boolean END, updated_at = now() WHERE refund_no = $1 AND "
        "status = $9 RETURNING 1) SELECT pc_require(EXISTS (SELECT 1 FROM w), 'refund_status')",
        13, p, tr_moved_cb, t);

    pc_refund_parties_t who = {r->merchant_id,   r->buyer_id, r->channel_id,
                               r->coupon_funder, r->currency, !normal};
    pc_refund_legs_t legs;
    int coupon_later = 0; /* the notification waits for the coupon's answer */
    if (!rc && !strcmp(t->to, "SUCCESS")) {
        rc = pc_refund_legs_success(&r->parts, &who, &legs);
        if (!rc && legs.n >= 2) {
            pc_ledger_txn_t txn = {"REFUND_SUCCESS", "refund",  r->refund_no,
                                   r->trade_no,      legs.legs, legs.n};
            rc = pc_ledger_post(t->tx, &txn, tr_ledger_cb, t);
        }
        /* The refund that returns the coupon part is the one that returns
         * the whole rest of the payment (a partial refund never takes it; an
         * error refund returns all of it): the coupon goes back to the buyer
         * unless it has expired. Either way the ledger above credits the
         * coupon part back to its funder: the subsidy is undone, never paid
         * out as money. */
        if (!rc && r->parts.coupon > 0) {
            const char *cp[] = {r->refund_no, r->payment_no};
            rc = pc_db_tx_query(
                t->tx,
                "WITH c AS (UPDATE coupons SET status = 'AVAILABLE', payment_no = NULL WHERE "
                "payment_no = $2 AND coupon_id = (SELECT coupon_id FROM payments WHERE payment_no "
                "= $2) AND status = 'USED' AND expires_at > now() RETURNING coupon_id) UPDATE "
                "refunds SET coupon_returned = EXISTS (SELECT 1 FROM c) WHERE refund_no = $1 "
                "RETURNING coupon_returned::text",
                2, cp, tr_coupon_cb, t);
            coupon_later = !rc;
        }
    } else if (!rc && (!strcmp(t->to, "FAILED") || !strcmp(t->to, "TERMINATED")) && normal) {
        rc = pc_refund_legs_return_splits(&r->from, r->shares, r->nshares, &who, &legs);
        if (!rc && legs.n >= 2) {
            pc_ledger_txn_t txn = {"REFUND_RETURN", "refund",  r->refund_no,
                                   r->trade_no,     legs.legs, legs.n};
            rc = pc_ledger_post(t->tx, &txn, tr_ledger_cb, t);
        }
        char amt[24];
        snprintf(amt, sizeof amt, "%lld", (long long)r->amount);
        const char *q[] = {r->trade_no, amt};
        if (!rc)
            rc = pc_db_tx_query(t->tx,
                                "WITH w AS (UPDATE trades SET refunded_amount = refunded_amount - "
                                "$2::bigint, updated_at = now() WHERE trade_no = $1 RETURNING 1) "
                                "SELECT pc_require(EXISTS (SELECT 1 FROM w), 'refund_trade')",
                                2, q, tr_step_cb, t);
    }
    if (!rc) {
        const char *a[] = {r->refund_no,  t->who, t->action, t->why[0] ? t->why : NULL,
                           t->old_status, t->to};
        rc = pc_db_tx_query(t->tx,
                            "INSERT INTO refund_actions (refund_no, who, action, why, from_status, "
                            "to_status) VALUES ($1, $2, $3, $4, $5, $6)",
                            6, a, tr_step_cb, t);
    }
    if (!rc && final && !coupon_later) {
        json_t *obj = pc__refund_json(r, 0);
        rc = pc_outbox_add(t->tx, r->merchant_id,
                           !strcmp(t->to, "SUCCESS") ? "refund.succeeded" : "refund.failed",
                           r->notify_url[0] ? r->notify_url : NULL, obj);
        json_decref(obj);
    }
    if (rc) {
        pc_log_error("refund.transition", "refund %s -> %s: %s", r->refund_no, t->to,
                     pc_ledger_strerror(rc));
        if (!t->step_failed)
            t->step_failed = rc;
    }
    if (!rc && !strcmp(t->to, "SUCCESS") && normal) {
        const char *q[] = {r->trade_no};
        if (pc_db_tx_query(t->tx,
                           "SELECT coalesce(sum(amount), 0) FROM refunds WHERE trade_no = $1 AND "
                           "type = 'NORMAL' AND status = 'SUCCESS'",
                           1, q, tr_sum_cb, t) < 0)
            tr_end(t, PC_EUNAVAIL, NULL);
        return;
    }
    /* Callbacks still to come use t (the coupon's answer writes the notice;
     * after a refused step, every statement queued so far): the commit, or
     * the rollback a failed step makes of it, which ends t (the caller told
     * rc), waits for the answer of a last statement. Ended here, t was
     * freed under them. */
    if (coupon_later || rc) {
        if (pc_db_tx_query(t->tx, "SELECT 1", 0, NULL, tr_last_cb, t) < 0)
            tr_commit(t); /* ended already: cannot happen; the commit reports it */
        return;
    }
    tr_commit(t);
}

static void tr_trade_cb(void *data, int status, pc_db_res_t *res)
{
    tr_t *t = data;
    if (!status && pc_db_rows(res) == 1) {
        t->trade_locked = 1;
        t->paid_amount = pc_db_get_i64(res, 0, 0);
    }
}

/* A resume's payment row (before the refund's own statement answers). */
static void tr_payment_cb(void *data, int status, pc_db_res_t *res)
{
    tr_t *t = data;
    if (status || pc_db_rows(res) != 1)
        return; /* the method stays as it is */
    t->have_payment = 1;
    snprintf(t->pay_method, sizeof t->pay_method, "%s", pc_db_get(res, 0, 0));
    snprintf(t->card_token, sizeof t->card_token, "%s", pc_db_get(res, 0, 1));
    t->paid_at = pc_db_get_i64(res, 0, 2);
    t->pay_external = pc_db_get_i64(res, 0, 3);
}

static void tr_refund_cb(void *data, int status, pc_db_res_t *res)
{
    tr_t *t = data;
    if (status) {
        tr_end(t, status, NULL);
        return;
    }
    if (pc_db_rows(res) == 0 || !t->trade_locked) {
        tr_end(t, PC_ENOTFOUND, NULL);
        return;
    }
    pc__refund_from_row(&t->r, res, 0);
    const pc__refund_t *r = &t->r;
    if (t->only_channel[0] && strcmp(r->channel_id, t->only_channel) != 0) {
        pc_log_warn("refund.wrong_channel", "channel %s reported on refund %s of channel %s",
                    t->only_channel, r->refund_no, r->channel_id[0] ? r->channel_id : "(none)");
        pc__refund_t copy = t->r;
        tr_end(t, PC_EINVAL, &copy);
        return;
    }
    if (!in_from(t, r->status) || (t->only_method[0] && strcmp(r->method, t->only_method)) ||
        (t->only_batch[0] && strcmp(r->batch_id, t->only_batch)) ||
        (t->normal_only && strcmp(r->type, "NORMAL"))) {
        pc__refund_t copy = t->r;
        tr_end(t, PC_ECONFLICT, &copy);
        return;
    }
    tr_apply(t);
}

static void tr_begin_cb(void *data, int status, pc_db_tx_t *tx)
{
    tr_t *t = data;
    if (status) {
        tr_end(t, status, NULL);
        return;
    }
    t->tx = tx;
    const char *p[] = {t->refund_no};
    /* The trade first (every change of a trade's refunds takes this lock, so
     * they run one at a time per trade), then the refund in a statement of
     * its own: it starts after the lock was granted and sees what the
     * previous holder committed. */
    if (pc_db_tx_query(tx,
                       "SELECT paid_amount FROM trades WHERE trade_no = (SELECT trade_no FROM "
                       "refunds WHERE refund_no = $1) FOR UPDATE",
                       1, p, tr_trade_cb, t) < 0 ||
        (!strcmp(t->action, "RESUME") &&
         pc_db_tx_query(tx,
                        "SELECT p.method_type, coalesce(p.card_token, ''), "
                        "coalesce(floor(extract(epoch FROM p.finished_at)), 0)::bigint, "
                        "p.external_amount FROM payments p WHERE p.payment_no = (SELECT "
                        "payment_no FROM refunds WHERE refund_no = $1)",
                        1, p, tr_payment_cb, t) < 0) ||
        pc_db_tx_query(tx,
                       "SELECT " PC__REFUND_COLUMNS " FROM refunds WHERE refund_no = $1 FOR UPDATE",
                       1, p, tr_refund_cb, t) < 0)
        tr_end(t, PC_EUNAVAIL, NULL);
}

#define CPS(dst, src) snprintf(dst, sizeof dst, "%s", (src) ? (src) : "")

int pc__refund_transition(pc_refunds_t *rf, const pc__transition_t *tr, pc__transition_cb cb,
                          void *data)
{
    tr_t *t = calloc(1, sizeof *t);
    if (!t)
        return PC_ENOMEM;
    t->rf = rf;
    t->cb = cb;
    t->data = data;
    CPS(t->refund_no, tr->refund_no);
    CPS(t->to, tr->to);
    CPS(t->who, tr->who);
    CPS(t->action, tr->action);
    CPS(t->why, tr->why);
    CPS(t->code, tr->failure_code);
    CPS(t->msg, tr->failure_msg);
    CPS(t->txn, tr->channel_txn_id);
    CPS(t->only_method, tr->only_method);
    CPS(t->only_batch, tr->only_batch);
    CPS(t->only_channel, tr->only_channel);
    CPS(t->set_method, tr->set_method);
    for (int i = 0; tr->from && tr->from[i] && i < MAX_FROM; i++)
        CPS(t->from[t->nfrom++], tr->from[i]);
    t->normal_only = tr->normal_only;
    t->error_to_offline = tr->error_to_offline;
    t->channel_amount = tr->channel_amount;
    if (tr->channel_currency)
        CPS(t->channel_currency, tr->channel_currency);
    t->now = (long long)time(NULL);
    if (pc_db_begin(rf->app->db, NULL, tr_begin_cb, t) < 0) {
        free(t);
        return PC_EUNAVAIL;
    }
    return 0;
}

typedef struct {
    void (*cb)(void *data, int status);
    void *data;
} cb_term_t;

static void cb_terminated(void *data, int status, const pc__refund_t *r)
{
    (void)r;
    cb_term_t *c = data;
    c->cb(c->data, status);
    free(c);
}

int pc_refunds_terminate_for_chargeback(pc_refunds_t *rf, const char *refund_no,
                                        const char *case_ref, int64_t still_refundable,
                                        void (*cb)(void *data, int status), void *data)
{
    static const char *const before_money_left[] = {"ACCEPTED", "SUSPENDED", NULL};
    char why[256];
    snprintf(why, sizeof why,
             "the cardholder disputed the payment at the bank (chargeback %s): the chargeback "
             "returns the money, this refund would pay it twice",
             case_ref);
    pc__transition_t t = {.refund_no = refund_no,
                          .to = "TERMINATED",
                          .from = before_money_left,
                          .who = "chargeback",
                          .action = "TERMINATE",
                          .why = why,
                          .failure_code = "CHARGEBACK",
                          .failure_msg = "the cardholder got the money back by a chargeback"};
    /* A dispute smaller than the refund: the whole refund ends (it cannot be
     * cut down), and the merchant is told what it may still refund. */
    char msg[161];
    if (still_refundable > 0) {
        snprintf(msg, sizeof msg,
                 "a chargeback returned part of the payment to the cardholder; %lld of this "
                 "refund is still refundable: refund it again if owed",
                 (long long)still_refundable);
        t.failure_msg = msg;
    }
    cb_term_t *c = malloc(sizeof *c);
    if (!c)
        return PC_ENOMEM;
    c->cb = cb;
    c->data = data;
    int rc = pc__refund_transition(rf, &t, cb_terminated, c);
    if (rc)
        free(c);
    return rc;
}

/* ---------- running a refund at its channel ---------- */

typedef struct {
    pc_refunds_t *rf;
    pc__refund_t r;
    int query_attempts;
    pc_ch_status_t said; /* the channel's final answer being applied */
    int resend;          /* sent again after a query found the channel has no record */
} run_t;

static run_t *run_new(pc_refunds_t *rf)
{
    run_t *x = calloc(1, sizeof *x);
    if (x) {
        x->rf = rf;
        x->said = PC_CH_UNKNOWN;
        rf->in_flight++;
    }
    return x;
}

static void run_free(run_t *x)
{
    x->rf->in_flight--;
    free(x);
}

int pc__refund_flag_contradiction(pc_refunds_t *rf, const pc__refund_t *r, pc_ch_status_t said,
                                  pc_db_query_cb cb, void *data)
{
    int returned = said == PC_CH_RETURNED && !strcmp(r->status, "SUCCESS");
    /* FAILED, or paid by hand (OFFLINE: an error refund the channel
     * refused, which ops then paid) while the channel paid it too. */
    int succeeded =
        said == PC_CH_SUCCESS && (!strcmp(r->status, "FAILED") ||
                                  (!strcmp(r->status, "SUCCESS") && !strcmp(r->method, "OFFLINE")));
    if (!returned && !succeeded)
        return 0;
    if (succeeded && !strcmp(r->method, "OFFLINE"))
        pc_log_error("refund.contradicted",
                     "refund %s was handed to ops to pay by hand and its channel says it paid it "
                     "as well: the buyer may be paid twice; flagged for ops (GET "
                     "/admin/needs-ops)",
                     r->refund_no);
    else
        pc_log_error("refund.contradicted",
                     "refund %s is %s but its channel says %s: flagged for ops (GET "
                     "/admin/needs-ops)",
                     r->refund_no, r->status, returned ? "RETURNED" : "SUCCESS");
    /* Once per answer. Before, any resolution of the refund stopped every
     * later flag, an outcome ops recorded by hand among them: a refund
     * recorded FAILED and then paid by its channel was never flagged. */
    if (pc__refund_flag_once(rf, r->refund_no, r->status, returned ? "RETURNED" : "SUCCESS", cb,
                             data) < 0)
        return PC_EUNAVAIL;
    return 1;
}

int pc__refund_flag_once(pc_refunds_t *rf, const char *refund_no, const char *status,
                         const char *said, pc_db_query_cb cb, void *data)
{
    const char *p[] = {refund_no, status, said};
    return pc_db_query(rf->app->db,
                       "UPDATE refunds SET needs_ops = true, contradicted_by = $3, updated_at = "
                       "now() WHERE refund_no = $1 AND status = $2 AND contradicted_by IS DISTINCT "
                       "FROM $3 RETURNING refund_no",
                       3, p, cb, data) < 0
               ? PC_EUNAVAIL
               : 0;
}

static void flagged_by_runner_cb(void *data, int status, pc_db_res_t *res)
{
    (void)res;
    run_t *x = data;
    if (status)
        pc_log_error("refund.flag_failed",
                     "refund %s: contradicted by its channel but not flagged (%s): check it by "
                     "hand (the refund is final, nothing queries it again)",
                     x->r.refund_no, pc_strerror(status));
    run_free(x);
}

/* After its last scheduled query, a refund no query could finish is flagged
 * for ops once (GET /admin/needs-ops, the REPAIR_EXHAUSTED alert), whatever
 * kept it from finishing, as payments and payouts are; it is still queried,
 * and its final answer takes the flag away. why: a static string. */
static void flag_if_exhausted(run_t *x, const char *why)
{
    if (x->query_attempts >= x->rf->nschedule)
        pc_repair_flag(x->rf->app, "refund", x->r.refund_no, why);
}

/* A channel's success applied to a refund handed to ops to pay by hand (an
 * error refund the channel had refused): ops may be paying it too. */
static int handed_to_ops(int status, const pc__refund_t *r)
{
    return status == 0 && r && !strcmp(r->status, "SUCCESS") && !strcmp(r->method, "OFFLINE");
}

static void applied_cb(void *data, int status, const pc__refund_t *r)
{
    run_t *x = data;
    if (handed_to_ops(status, r) &&
        pc__refund_flag_contradiction(x->rf, r, x->said, flagged_by_runner_cb, x) > 0)
        return;
    if (status == PC_ECONFLICT && r) {
        if (pc__refund_flag_contradiction(x->rf, r, x->said, flagged_by_runner_cb, x) > 0)
            return;
        pc_log_warn("refund.late_result",
                    "refund %s is %s; the channel's answer no longer applies (recon will show "
                    "any difference)",
                    x->r.refund_no, r->status);
    } else if (status && status != PC_ENOTFOUND) {
        pc_log_warn("refund.apply_failed", "refund %s: %s; the status query will apply it",
                    x->r.refund_no, pc_strerror(status));
        flag_if_exhausted(x, "has a final answer from its channel that could not be applied");
    }
    run_free(x);
}

static const char *const FROM_PROCESSING[] = {"PROCESSING", NULL};

/* A final answer from the channel (synchronous, query or callback). */
/* A final channel result for a refund in flight: SUCCESS, or anything else
 * as a failure. RETURNED (a refund paid out whose payee's bank sent the money
 * back, its success never heard of) is one: the money is back at the
 * channel and the refund did not reach the buyer. */
static int apply_result(pc_refunds_t *rf, const char *channel_id, const char *refund_no,
                        const pc_ch_result_t *res, pc__transition_cb cb, void *data)
{
    int ok = res->status == PC_CH_SUCCESS;
    const char *failed = res->code[0]                    ? res->code
                         : res->status == PC_CH_RETURNED ? "RETURNED"
                                                         : "REFUND_FAILED";
    pc__transition_t t = {
        .refund_no = refund_no,
        .to = ok ? "SUCCESS" : "FAILED",
        .from = FROM_PROCESSING,
        .who = "channel",
        .action = "CHANNEL_RESULT",
        .failure_code = ok ? NULL : failed,
        .failure_msg = ok ? NULL : res->message,
        .channel_txn_id = res->channel_txn_id[0] ? res->channel_txn_id : NULL,
        .error_to_offline = 1,
        .only_channel = channel_id,
        .channel_amount = ok ? res->amount : 0,
        .channel_currency = ok ? res->currency : NULL,
    };
    return pc__refund_transition(rf, &t, cb, data);
}

static void noted_cb(void *data, int status, pc_db_res_t *res)
{
    (void)status;
    (void)res;
    run_free(data);
}

static void send_to_channel(run_t *x);

static void sent_cb(void *data, const pc_ch_result_t *res)
{
    run_t *x = data;
    switch (res->status) {
    case PC_CH_SUCCESS:
    case PC_CH_FAILED:
        x->said = res->status;
        if (apply_result(x->rf, x->r.channel_id, x->r.refund_no, res, applied_cb, x) < 0)
            run_free(x);
        return;
    default: {
        /* Processing at the channel, or no answer: the status query (and a
         * callback, if one comes) finishes it. */
        const char *p[] = {x->r.refund_no, res->channel_txn_id[0] ? res->channel_txn_id : NULL};
        if (pc_db_query(x->rf->app->db,
                        "UPDATE refunds SET channel_txn_id = coalesce($2, channel_txn_id), "
                        "updated_at = now() WHERE refund_no = $1 AND status = 'PROCESSING'",
                        2, p, noted_cb, x) < 0)
            run_free(x);
        return;
    }
    }
}

static void send_to_channel(run_t *x)
{
    pc__refund_t *r = &x->r;
    pc_channel_client_t *cli = x->rf->app->channel_client;
    int rc;
    if (!pc_channels_effective_enabled(x->rf->app->channels, r->channel_id)) {
        /* Nothing goes through a channel ops switched off (meanwhile: the
         * method was chosen with it on). Before, it went out all the same.
         * A refund sent again after a query found no record stays in flight
         * (its first request may still land): its queries go on, and flag
         * it for ops if the channel stays off. One not sent yet goes to ops
         * (OFFLINE), as one accepted while the channel is off does. */
        const char *why = "its channel is switched off";
        if (x->resend) {
            pc_log_warn("refund.channel_off", "refund %s (%s): %s is switched off: not sent again",
                        r->refund_no, r->method, r->channel_id);
            run_free(x);
            return;
        }
        pc_log_warn("refund.channel_off", "refund %s (%s): %s is switched off: OFFLINE",
                    r->refund_no, r->method, r->channel_id);
        const char *p[] = {r->refund_no, why};
        if (pc_db_query(x->rf->app->db,
                        "WITH u AS (UPDATE refunds SET method = 'OFFLINE', next_query_at = NULL, "
                        "updated_at = now() WHERE refund_no = $1 AND status = 'PROCESSING' AND "
                        "method IN ('API', 'PAYOUT') RETURNING refund_no, status) INSERT INTO "
                        "refund_actions (refund_no, who, action, why, from_status, to_status) "
                        "SELECT refund_no, 'paycore', 'TO_OFFLINE', $2, status, status FROM u",
                        2, p, noted_cb, x) < 0)
            run_free(x);
        return;
    }
    if (!strcmp(r->method, "PAYOUT")) {
        json_t *payee = json_loads(r->payee, 0, NULL);
        pc_ch_payout_t po = {r->channel_id, r->refund_no, r->parts.external, r->currency, payee};
        rc = payee ? pc_channel_payout(cli, &po, sent_cb, x) : PC_EINVAL;
        json_decref(payee);
    } else {
        pc_ch_refund_t rq = {
            r->channel_id,     r->refund_no,
            r->payment_no,     r->payment_channel_txn_id[0] ? r->payment_channel_txn_id : NULL,
            r->parts.external, r->currency};
        rc = pc_channel_refund(cli, &rq, sent_cb, x);
    }
    if (rc < 0) {
        /* Nothing was sent (the channel left the configuration, say): the
         * runner tries again on its schedule. */
        pc_log_warn("refund.not_sent", "refund %s via %s (%s): %s", r->refund_no, r->channel_id,
                    r->method, pc_strerror(rc));
        run_free(x);
    }
}

/* Nothing goes through a channel: wallet and coupon parts move now. */
static void complete_internal(run_t *x)
{
    pc_ch_result_t ok;
    memset(&ok, 0, sizeof ok);
    ok.status = PC_CH_SUCCESS;
    x->said = PC_CH_UNKNOWN; /* no channel spoke: nothing to contradict */
    if (apply_result(x->rf, NULL, x->r.refund_no, &ok, applied_cb, x) < 0)
        run_free(x);
}

static void dispatched_cb(void *data, int status, pc_db_res_t *res)
{
    run_t *x = data;
    if (status || pc_db_rows(res) != 1) {
        run_free(x); /* another node or a transition got there first */
        return;
    }
    pc__refund_from_row(&x->r, res, 0);
    if (x->r.parts.external == 0) {
        complete_internal(x);
        return;
    }
    send_to_channel(x);
}

void pc__refund_dispatch(pc_refunds_t *rf, const char *refund_no)
{
    if (rf->app->shutting_down)
        return; /* the runner of a node that stays sends it */
    run_t *x = run_new(rf);
    if (!x)
        return;
    char first[24];
    snprintf(first, sizeof first, "%lld", rf->first_ms);
    const char *p[] = {refund_no, first};
    /* PROCESSING before the channel is called: a node that dies mid-call
     * leaves a refund the status query finds (and sends again if the channel
     * never got it). */
    if (pc_db_query(rf->app->db,
                    "UPDATE refunds SET status = 'PROCESSING', query_attempts = 0, next_query_at "
                    "= now() + $2::bigint * interval '1 millisecond', updated_at = now() WHERE "
                    "refund_no = $1 AND status = 'ACCEPTED' AND method IN ('API', 'PAYOUT') "
                    "RETURNING " PC__REFUND_COLUMNS,
                    2, p, dispatched_cb, x) < 0)
        run_free(x);
}

/* ---------- the status query ---------- */

static void force_fail_stopped_cb(void *data, int status, pc_db_res_t *res)
{
    (void)res;
    run_t *x = data;
    if (status)
        pc_log_warn("refund.query_not_stopped",
                    "refund %s: its channel's answer is in but its queries go on (%s)",
                    x->r.refund_no, pc_strerror(status));
    run_free(x);
}

/* The channel's final answer is in: a force-failed refund is not queried
 * again. */
static void stop_force_fail_queries(run_t *x)
{
    const char *p[] = {x->r.refund_no};
    if (pc_db_query(x->rf->app->db,
                    "UPDATE refunds SET next_query_at = NULL, updated_at = now() WHERE refund_no "
                    "= $1 AND status = 'FAILED'",
                    1, p, force_fail_stopped_cb, x) < 0)
        run_free(x);
}

static void force_fail_flagged_cb(void *data, int status, pc_db_res_t *res)
{
    (void)res;
    run_t *x = data;
    if (status) {
        /* Not flagged: the next query tries again. */
        pc_log_error("refund.flag_failed",
                     "refund %s: paid by its channel after ops force-failed it, not flagged yet "
                     "(%s): the next status query flags it",
                     x->r.refund_no, pc_strerror(status));
        run_free(x);
        return;
    }
    stop_force_fail_queries(x);
}

/* The answer of a query about a refund ops force-failed while it was at its
 * channel (its money back with the merchant): a success means the buyer was
 * paid as well, flagged for ops (GET /admin/needs-ops, the
 * CHANNEL_CONTRADICTION alert) as a callback saying so is; any final answer
 * ends the queries; anything else waits for the next (the claim stops them
 * after the schedule's last). Never sent again (the resend takes only
 * PROCESSING refunds), never flagged as exhausted. */
static void force_failed_queried(run_t *x, const pc_ch_result_t *res)
{
    if (res->status == PC_CH_SUCCESS) {
        x->said = res->status;
        int rc = pc__refund_flag_contradiction(x->rf, &x->r, res->status, force_fail_flagged_cb, x);
        if (rc <= 0)
            run_free(x);
        return;
    }
    if (res->status == PC_CH_RETURNED ||
        (res->status == PC_CH_FAILED && strcmp(res->code, "NOT_FOUND") != 0)) {
        stop_force_fail_queries(x);
        return;
    }
    run_free(x);
}

static void queried_cb(void *data, const pc_ch_result_t *res)
{
    run_t *x = data;
    if (!strcmp(x->r.status, "FAILED")) {
        force_failed_queried(x, res);
        return;
    }
    if (res->status == PC_CH_FAILED && !strcmp(res->code, "NOT_FOUND")) {
        /* The channel never took it: send it again under the same number
         * (the channel dedupes on it, so a late first request is harmless),
         * if it is still in flight: ops may have force-failed it (its money
         * back with the merchant) while the query was out. */
        pc_log_info("refund.resend", "refund %s unknown at %s: sent again if still in flight",
                    x->r.refund_no, x->r.channel_id);
        x->resend = 1;
        /* Sent again after every query, and never taken: a channel that
         * loses the request each time. */
        flag_if_exhausted(x, "is unknown at its channel however often it is sent");
        const char *p[] = {x->r.refund_no};
        if (pc_db_query(x->rf->app->db,
                        "SELECT " PC__REFUND_COLUMNS " FROM refunds WHERE refund_no = $1 AND "
                        "status = 'PROCESSING' AND method IN ('API', 'PAYOUT')",
                        1, p, dispatched_cb, x) < 0)
            run_free(x);
        return;
    }
    if (res->status == PC_CH_SUCCESS || res->status == PC_CH_FAILED ||
        res->status == PC_CH_RETURNED) {
        x->said = res->status;
        if (apply_result(x->rf, x->r.channel_id, x->r.refund_no, res, applied_cb, x) < 0)
            run_free(x);
        return;
    }
    /* Flagged for ops once, as payments and payouts are (GET
     * /admin/needs-ops, the REPAIR_EXHAUSTED alert); still queried, and the
     * flag goes with its final answer. */
    flag_if_exhausted(x, "has no final answer from its channel");
    run_free(x);
}

static void claimed_cb(void *data, int status, pc_db_res_t *res)
{
    pc_refunds_t *rf = data;
    rf->claiming = 0;
    if (status) {
        pc_repair_claim_failed(&rf->claim_warned_s, "refund.claim_failed",
                               "claiming refunds to send or query", status);
        return;
    }
    for (int i = 0; i < pc_db_rows(res); i++) {
        run_t *x = run_new(rf);
        if (!x)
            return;
        pc__refund_from_row(&x->r, res, i);
        x->query_attempts = (int)pc_db_val_i64(res, i, "query_attempts");
        if (!strcmp(x->r.status, "ACCEPTED")) {
            char no[40];
            snprintf(no, sizeof no, "%s", x->r.refund_no);
            run_free(x);
            pc__refund_dispatch(rf, no);
            continue;
        }
        /* Dispatched, but the move right after failed (or its node died):
         * no channel has anything to say about it, so it is done here. */
        if (x->r.parts.external == 0 && strcmp(x->r.status, "FAILED") != 0) {
            complete_internal(x);
            continue;
        }
        int rc = !strcmp(x->r.method, "PAYOUT")
                     ? pc_channel_query_payout(rf->app->channel_client, x->r.channel_id,
                                               x->r.refund_no, queried_cb, x)
                     : pc_channel_query_refund(rf->app->channel_client, x->r.channel_id,
                                               x->r.refund_no, queried_cb, x);
        if (rc < 0) {
            pc_log_warn("refund.query_failed", "refund %s at %s: %s", x->r.refund_no,
                        x->r.channel_id, pc_strerror(rc));
            flag_if_exhausted(x, "could not be queried at its channel");
            run_free(x);
        }
    }
}

static void claim_due(pc_refunds_t *rf)
{
    rf->claiming = 1;
    const char *p[] = {rf->schedule};
    /* Claimed by moving the next query forward (the rows are locked while
     * this runs, so another node skips them and then sees the new time). */
    if (pc_db_query(rf->app->db,
                    "WITH due AS (SELECT refund_no AS due_no FROM refunds WHERE status IN "
                    "('ACCEPTED', 'PROCESSING', 'FAILED') AND method IN ('API', 'PAYOUT') AND "
                    "next_query_at IS NOT NULL AND next_query_at <= now() ORDER BY "
                    "next_query_at LIMIT 50 FOR UPDATE SKIP LOCKED) UPDATE refunds r SET "
                    "query_attempts = r.query_attempts + CASE WHEN r.status = 'ACCEPTED' THEN 0 "
                    "ELSE 1 END, next_query_at = CASE WHEN r.status = 'FAILED' AND "
                    "r.query_attempts + 1 >= array_length($1::int[], 1) THEN NULL ELSE now() + "
                    "($1::int[])[least(r.query_attempts + 1, array_length($1::int[], 1))] * "
                    "interval '1 millisecond' END FROM due WHERE r.refund_no = due.due_no "
                    "RETURNING r.query_attempts, " PC__REFUND_COLUMNS,
                    1, p, claimed_cb, rf) < 0)
        rf->claiming = 0;
}

/* ---------- error refunds ---------- */

typedef struct {
    pc_refunds_t *rf;
    pc_db_tx_t *tx;
    char created[ERROR_BATCH][40];
    int ncreated;
    char picked[ERROR_BATCH][40]; /* the payments, in the order of their inserts */
    int npicked, answered;
    int failed_before; /* one picked, whose refund could not be written before */
    char error[200];   /* the first insert's failure */
} mk_t;

static void mk_free(mk_t *m)
{
    m->rf->creating = 0;
    free(m);
}

static void mk_commit_cb(void *data, int status)
{
    mk_t *m = data;
    pc_refunds_t *rf = m->rf;
    if (status && m->npicked == 1 && rf->error_single) {
        pc_log_error("refund.error_refund_failed",
                     "the error refund of payment %s cannot be created: %s; every other goes "
                     "first, and it is tried again in %lld ms (alert ERROR_REFUNDS_STUCK)",
                     m->picked[0], m->error[0] ? m->error : pc_strerror(status),
                     (long long)pc_config_int(rf->app->cfg, "refund.error_retry_ms"));
        const char *p[] = {m->picked[0]};
        pc_db_query(rf->app->db,
                    "UPDATE payments SET error_refund_failed_at = now() WHERE payment_no = $1", 1,
                    p, NULL, NULL);
    } else if (status) {
        pc_log_error("refund.error_refunds",
                     "error refunds not created: %s; made one at a time from the next poll",
                     m->error[0] ? m->error : pc_strerror(status));
        rf->error_single = 1;
    } else {
        if (m->failed_before)
            pc_log_info("refund.error_refund_made", "the error refund of payment %s is made now",
                        m->picked[0]);
        for (int i = 0; i < m->ncreated; i++)
            pc__refund_dispatch(m->rf, m->created[i]);
    }
    mk_free(m);
}

static void mk_inserted_cb(void *data, int status, pc_db_res_t *res)
{
    mk_t *m = data;
    m->answered++;
    if (status) {
        if (!m->error[0])
            snprintf(m->error, sizeof m->error, "payment %s: %s",
                     m->answered <= m->npicked ? m->picked[m->answered - 1] : "?",
                     res && pc_db_errmsg(res)[0] ? pc_db_errmsg(res) : pc_strerror(status));
        return;
    }
    if (pc_db_rows(res) == 1) {
        const char *no = pc_db_val(res, 0, "refund_no");
        pc_log_info("refund.error_refund", "error refund %s created for payment %s (%s)", no,
                    pc_db_val(res, 0, "payment_no"), pc_db_val(res, 0, "method"));
        pc_metrics_add("pc_error_refunds_created_total", "", 1);
        if (m->ncreated < ERROR_BATCH && strcmp(pc_db_val(res, 0, "method"), "FILE") &&
            strcmp(pc_db_val(res, 0, "method"), "OFFLINE"))
            snprintf(m->created[m->ncreated++], 40, "%s", no);
    }
}

/* SQL: a chargeback terminated the error refund of payment pno (a column or
 * parameter) and its case is not written yet: terminate_unsent in
 * src/chargeback/chargeback.c commits the termination, then opens the case
 * in a transaction of its own. A new error refund made in between would be
 * counted as returning the disputed money, the case refused, and the buyer
 * paid twice; the error refund waits for the case instead. (A case then
 * refused for another reason leaves the payment in escrow for ops:
 * ERROR_REFUNDS_STUCK.) Its case is one opened after the termination (both
 * times are the database's): before, any case of the payment counted, and
 * after a first dispute the guard was off for every later one. */
#define CASE_ON_ITS_WAY(pno)                                                                       \
    "EXISTS (SELECT 1 FROM refunds t WHERE t.payment_no = " pno " AND t.type = 'ERROR' AND "       \
    "t.status = 'TERMINATED' AND t.failure_code = 'CHARGEBACK' AND NOT EXISTS (SELECT 1 FROM "     \
    "chargebacks c WHERE c.payment_no = " pno " AND c.created_at > (SELECT max(a.at) FROM "        \
    "refund_actions a WHERE a.refund_no = t.refund_no)))"

static void mk_rows_cb(void *data, int status, pc_db_res_t *res)
{
    mk_t *m = data;
    if (status) {
        pc_db_tx_rollback(m->tx);
        mk_free(m);
        return;
    }
    int n = pc_db_rows(res);
    if (n == 0) {
        m->rf->error_single = 0; /* nothing left behind a failure */
        pc_db_tx_rollback(m->tx);
        mk_free(m);
        return;
    }
    for (int i = 0; i < n; i++) {
        const char *pno = pc_db_val(res, i, "payment_no");
        if (m->npicked < ERROR_BATCH)
            snprintf(m->picked[m->npicked++], 40, "%s", pno);
        if (n == 1 && pc_db_val(res, i, "failed_before")[0] == 't')
            m->failed_before = 1;
        const char *card_token = pc_db_val(res, i, "card_token");
        /* What a chargeback the cardholder won gave back of the card part
         * (the case paid the channel from escrow): the rest is refunded. */
        int64_t won = pc_db_val_i64(res, i, "won");
        char amount[24], external[24];
        snprintf(amount, sizeof amount, "%lld", (long long)(pc_db_val_i64(res, i, "amount") - won));
        snprintf(external, sizeof external, "%lld",
                 (long long)(pc_db_val_i64(res, i, "external_amount") - won));
        pc__method_ctx_t mc = {
            .type = "ERROR",
            .external = pc_db_val_i64(res, i, "external_amount") - won,
            .payment_external = pc_db_val_i64(res, i, "external_amount"),
            .currency = pc_db_val(res, i, "currency"),
            .payment_method = pc_db_val(res, i, "method_type"),
            .channel_id = pc_db_val(res, i, "channel_id"),
            .paid_at = pc_db_val_i64(res, i, "paid_at"),
            .payee_available = card_token[0] != 0,
            .payee_type = "CARD",
        };
        char version[65] = "";
        const char *method = pc__refund_method(m->rf->app, &mc, version);
        char *payee = NULL;
        if (!strcmp(method, "PAYOUT")) { /* payee_available: the card held */
            json_t *pj = json_pack("{s:s,s:s}", "type", "CARD", "card_token", card_token);
            payee = json_dumps(pj, JSON_COMPACT);
            json_decref(pj);
        }
        char no[40], out_no[72];
        pc__refund_no_new(no);
        /* A payment's first error refund is ERR-<payment_no>; one made after
         * a chargeback terminated it (0093) is numbered after it. */
        int64_t before = pc_db_val_i64(res, i, "terminated");
        if (before > 0)
            snprintf(out_no, sizeof out_no, "ERR-%s-%lld", pno, (long long)before + 1);
        else
            snprintf(out_no, sizeof out_no, "ERR-%s", pno);
        const char *url = pc_db_val(res, i, "notify_url");
        const char *p[] = {
            no,
            out_no,
            pc_db_val(res, i, "merchant_id"),
            pc_db_val(res, i, "trade_no"),
            pno,
            method,
            amount,
            pc_db_val(res, i, "currency"),
            external,
            pc_db_val(res, i, "balance_amount"),
            pc_db_val(res, i, "coupon_amount"),
            mc.channel_id[0] ? mc.channel_id : NULL,
            pc_db_val(res, i, "channel_txn_id")[0] ? pc_db_val(res, i, "channel_txn_id") : NULL,
            pc_db_val(res, i, "buyer_id")[0] ? pc_db_val(res, i, "buyer_id") : NULL,
            pc_db_val(res, i, "coupon_funder")[0] ? pc_db_val(res, i, "coupon_funder") : NULL,
            payee,
            url[0] ? url : NULL,
            version[0] ? version : NULL,
            pc_db_val(res, i, "won")};
        /* The unique index on error refunds per payment is the arbiter: of
         * two nodes that picked the same payment, one inserts. The insert
         * asks again about chargebacks (none open, the same sum won): as its
         * own statement it sees a case committed after the select's
         * snapshot, before the trade lock was granted. */
        pc_db_tx_query(m->tx,
                       "INSERT INTO refunds (refund_no, out_refund_no, merchant_id, trade_no, "
                       "payment_no, type, method, status, amount, currency, external_amount, "
                       "balance_amount, coupon_amount, from_escrow, channel_id, "
                       "payment_channel_txn_id, buyer_id, coupon_funder, payee, reason, "
                       "notify_url, rule_version, next_query_at) SELECT $1, $2, $3, $4, $5, "
                       "'ERROR', $6, 'ACCEPTED', $7::bigint, $8, $9::bigint, $10::bigint, "
                       "$11::bigint, $7::bigint, $12, $13, $14, $15, $16::jsonb, 'payment "
                       "succeeded on a trade that could not take it (paid twice, or closed)', "
                       "$17, $18, CASE WHEN $6 IN ('API', 'PAYOUT') THEN now() END WHERE NOT "
                       "chargeback_open_on_payment($5) AND payment_chargeback_frozen($5) = "
                       "$19::bigint AND NOT (" CASE_ON_ITS_WAY(
                           "$5") ") ON CONFLICT DO NOTHING RETURNING refund_no, payment_no, method",
                       19, p, mk_inserted_cb, m);
        free(payee);
    }
    pc_db_tx_commit(m->tx, mk_commit_cb, m);
}

static void mk_begin_cb(void *data, int status, pc_db_tx_t *tx)
{
    mk_t *m = data;
    if (status) {
        mk_free(m);
        return;
    }
    m->tx = tx;
    pc_refunds_t *rf = m->rf;
    char retry[24], limit[8];
    snprintf(retry, sizeof retry, "%lld",
             (long long)pc_config_int(rf->app->cfg, "refund.error_retry_ms"));
    snprintf(limit, sizeof limit, "%d", rf->error_single ? 1 : ERROR_BATCH);
    const char *p[] = {retry, limit};
    if (pc_db_tx_query(
            tx,
            "SELECT p.payment_no, p.trade_no, p.merchant_id, coalesce(p.wallet_owner, "
            "p.buyer_id, '') AS buyer_id, p.amount, p.currency, p.method_type, p.balance_amount, "
            "p.coupon_amount, "
            "p.external_amount, coalesce(p.channel_id, '') AS channel_id, "
            "coalesce(p.channel_txn_id, '') AS channel_txn_id, coalesce(p.card_token, '') AS "
            "card_token, coalesce(floor(extract(epoch FROM p.finished_at))::bigint, 0) AS paid_at, "
            "coalesce((SELECT c.merchant_id FROM coupons c WHERE c.coupon_id = p.coupon_id AND "
            "c.funded_by = 'MERCHANT'), '') AS coupon_funder, coalesce((SELECT "
            "coalesce(t.notify_url, m.notify_url) FROM trades t JOIN merchants m USING "
            "(merchant_id) WHERE t.trade_no = p.trade_no), '') AS notify_url, "
            "p.error_refund_failed_at IS NOT NULL AS failed_before, "
            "payment_chargeback_frozen(p.payment_no) AS won, (SELECT count(*) FROM refunds r "
            "WHERE r.payment_no = p.payment_no AND r.type = 'ERROR') AS terminated FROM payments "
            "p "
            "JOIN trades tr ON tr.trade_no = p.trade_no "
            "WHERE p.needs_error_refund AND p.status = 'SUCCESS' AND NOT p.error_refund_made "
            "AND (p.error_refund_failed_at IS NULL OR p.error_refund_failed_at < now() - "
            "$1::bigint * interval '1 millisecond') AND NOT EXISTS (SELECT 1 FROM "
            "refunds r WHERE r.payment_no = p.payment_no AND r.type = 'ERROR' AND r.status <> "
            "'TERMINATED') AND NOT (" CASE_ON_ITS_WAY(
                "p.payment_no") ") AND NOT "
                                "chargeback_open_on_payment(p.payment_no) AND p.amount > "
                                "payment_chargeback_frozen(p.payment_no) ORDER BY "
                                "p.error_refund_failed_at NULLS "
                                "FIRST, p.finished_at LIMIT $2::int FOR UPDATE OF p, tr SKIP "
                                "LOCKED",
            2, p, mk_rows_cb, m) < 0) {
        pc_db_tx_rollback(tx);
        mk_free(m);
    }
}

/* A payment held in escrow for its error refund is the buyer's money; a
 * chargeback on it gives the buyer that money back through the channel.
 * Both would pay the buyer twice, so the error refund waits while a case
 * on the payment is open; then it returns what the chargeback did not: all
 * of the payment when the cardholder lost (or the case was withdrawn), the
 * rest (balance and coupon parts, the card part not disputed) when the
 * cardholder won (the case paid the channel the disputed sum from escrow;
 * before, that rest stayed in escrow for good). The sweep locks the trade,
 * as opening a chargeback does, so the two never pass each other. Nothing
 * is left for ops (before, the payment was flagged for them: the rest was
 * theirs to return by hand). */
static void create_error_refunds(pc_refunds_t *rf)
{
    mk_t *m = calloc(1, sizeof *m);
    if (!m)
        return;
    m->rf = rf;
    rf->creating = 1;
    if (pc_db_begin(rf->app->db, NULL, mk_begin_cb, m) < 0)
        mk_free(m);
}

/* ---------- the method a refund runs by ---------- */

const char *pc__refund_method(pc_app_t *app, const pc__method_ctx_t *m, char version[65])
{
    version[0] = 0;
    if (m->external <= 0)
        return "API"; /* wallet and coupon parts only: the platform moves them itself */
    const pc_channel_t *ch =
        m->channel_id && m->channel_id[0] ? pc_channels_find(app->channels, m->channel_id) : NULL;
    json_t *ways = json_array();
    for (int w = 0; ch && w < PC_REFUND_WAY_COUNT; w++)
        if (pc_channel_supports_refund(ch, (pc_refund_way_t)w))
            json_array_append_new(ways, json_string(pc_refund_way_name((pc_refund_way_t)w)));
    json_t *ctx = json_pack(
        "{s:I,s:s,s:{s:I,s:s,s:b},s:{s:I,s:s,s:s,s:I},s:{s:o,s:I,s:b,s:b},s:b,s:s}", "now",
        (json_int_t)time(NULL), "currency", m->currency ? m->currency : "", "refund", "amount",
        (json_int_t)m->external, "type", m->type, "partial", m->external < m->payment_external,
        "payment", "amount", (json_int_t)m->payment_external, "method",
        m->payment_method ? m->payment_method : "", "channel_id",
        m->channel_id ? m->channel_id : "", "paid_at", (json_int_t)m->paid_at, "channel",
        "refund_methods", ways, "refund_window_days", (json_int_t)(ch ? ch->refund.window_days : 0),
        "partial_refund", ch ? (int)ch->refund.partial : 0, "enabled",
        ch ? (int)pc_channels_effective_enabled(app->channels, ch->id) : 0, "payee_available",
        m->payee_available, "payee_type", m->payee_available && m->payee_type ? m->payee_type : "");
    pc_rule_result_t r;
    pc_rules_refund_method(app->rules, ctx, &r);
    json_decref(ctx);
    /* A fallback is logged by the rules module (rules.fallback, once a
     * second per rule) and counted (pc_rules_calls_total): not again here,
     * once per request, which flooded the log when a rule kept failing. */
    const char *a = json_string_value(r.answer);
    const char *out = a && !strcmp(a, "API")      ? "API"
                      : a && !strcmp(a, "PAYOUT") ? "PAYOUT"
                      : a && !strcmp(a, "FILE")   ? "FILE"
                                                  : "OFFLINE";
    /* What cannot run goes to ops, who return the money by hand: nothing is
     * sent through a channel ops switched off. (A PAYOUT without a payee, or
     * to an account through a channel that does not list PAYOUT, never gets
     * here: the rules module refuses such an answer as malformed,
     * refund_method_possible in src/rules/points.c, and OFFLINE is taken.) */
    int sends = !strcmp(out, "API") || !strcmp(out, "PAYOUT");
    const char *cannot = sends && ch && !pc_channels_effective_enabled(app->channels, ch->id)
                             ? "its channel is switched off"
                             : NULL;
    if (cannot) {
        pc_log_warn("refund.method_cannot_run",
                    "refund_method chose %s for a %s payment of channel %s, but %s: OFFLINE", out,
                    m->payment_method ? m->payment_method : "?",
                    m->channel_id ? m->channel_id : "?", cannot);
        out = "OFFLINE";
    }
    snprintf(version, 65, "%s", r.version);
    pc_rule_result_clear(&r);
    return out;
}

/* ---------- channel callbacks ---------- */

static void callback_applied_cb(void *data, int status, const pc__refund_t *r)
{
    pc_http_req_t *req = data;
    if (status == PC_ECONFLICT && r)
        pc_log_warn("refund.late_callback", "refund %s is %s; callback ignored", r->refund_no,
                    r->status);
    /* Answered, not retried: a refund that moved on, one we never had, and
     * a report from a channel other than the refund's (logged). */
    int settled =
        !status || status == PC_ECONFLICT || status == PC_ENOTFOUND || (status == PC_EINVAL && r);
    if (!settled) {
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "not applied; retry");
        return;
    }
    static const char ok[] = "{\"result\":\"success\"}";
    pc_http_respond(req, 200, "application/json", ok, sizeof ok - 1);
}

typedef struct {
    pc_http_req_t *req;
    pc_refunds_t *rf;
    pc_ch_status_t said;
} heard_t;

static void flagged_by_callback_cb(void *data, int status, pc_db_res_t *res)
{
    (void)res;
    heard_t *x = data;
    if (status) {
        pc_http_respond_error(x->req, PC_API_UNAVAILABLE, NULL, "not recorded; retry");
        return;
    }
    static const char ok[] = "{\"result\":\"success\"}";
    pc_http_respond(x->req, 200, "application/json", ok, sizeof ok - 1);
}

/* A final answer for a refund already final the other way (RETURNED after
 * SUCCESS, SUCCESS after FAILED) is flagged for ops before it is
 * acknowledged; a duplicate or merely late one is acknowledged. RETURNED for
 * a refund in flight is its failure (the money came back before its success
 * was heard). */
static void heard_applied_cb(void *data, int status, const pc__refund_t *r)
{
    heard_t *x = data;
    if ((status == PC_ECONFLICT || handed_to_ops(status, r)) && r) {
        int rc = pc__refund_flag_contradiction(x->rf, r, x->said, flagged_by_callback_cb, x);
        if (rc > 0)
            return;
        if (rc < 0) {
            pc_http_respond_error(x->req, PC_API_UNAVAILABLE, NULL, "try again");
            return;
        }
    }
    callback_applied_cb(x->req, status, r);
}

static void refund_callback(pc_app_t *app, const void *cbv, pc_http_req_t *req)
{
    const pc_ch_callback_t *cb = cbv;
    if (cb->result.status != PC_CH_SUCCESS && cb->result.status != PC_CH_FAILED &&
        cb->result.status != PC_CH_RETURNED) {
        static const char ok[] = "{\"result\":\"ignored\"}";
        pc_http_respond(req, 200, "application/json", ok, sizeof ok - 1);
        return;
    }
    heard_t *x = pc_http_req_alloc(req, sizeof *x);
    x->req = req;
    x->rf = app->refunds;
    x->said = cb->result.status;
    if (apply_result(app->refunds, pc_http_req_param(req, "channel_id"), cb->ref, &cb->result,
                     heard_applied_cb, x) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "try again");
}

/* ---------- the runner ---------- */

static void tick(uv_timer_t *h)
{
    pc_refunds_t *rf = h->data;
    if (rf->app->shutting_down || rf->in_flight > MAX_IN_FLIGHT)
        return;
    if (!rf->claiming)
        claim_due(rf);
    if (!rf->creating)
        create_error_refunds(rf);
}

pc_refunds_t *pc_refunds_new(pc_app_t *app)
{
    pc_refunds_t *rf = calloc(1, sizeof *rf);
    if (!rf)
        return NULL;
    rf->app = app;
    int64_t ms[PC_CONFIG_MAX_DELAYS];
    int n = pc_config_ms_list(app->cfg, "refund.query_schedule_ms", ms, PC_CONFIG_MAX_DELAYS);
    if (n <= 0) {
        free(rf);
        return NULL;
    }
    rf->nschedule = n;
    rf->first_ms = (long long)ms[0];
    size_t off = (size_t)snprintf(rf->schedule, sizeof rf->schedule, "{");
    for (int i = 0; i < n; i++)
        off += (size_t)snprintf(rf->schedule + off, sizeof rf->schedule - off, "%s%lld",
                                i ? "," : "", (long long)ms[i]);
    snprintf(rf->schedule + off, sizeof rf->schedule - off, "}");
    rf->grace_ms = (long long)pc_config_int(app->cfg, "refund.send_grace_ms");
    pc_metrics_describe("pc_refunds_total", PC_METRIC_COUNTER,
                        "refunds that reached a final state, by type, method and status");
    pc_metrics_describe("pc_error_refunds_created_total", PC_METRIC_COUNTER,
                        "error refunds created for duplicate or late payments");
    uv_timer_init(app->loop, &rf->timer);
    rf->timer.data = rf;
    app->refunds = rf;
    app->on_refund_callback = refund_callback;
    return rf;
}

void pc_refunds_start(pc_refunds_t *rf)
{
    uint64_t ms = (uint64_t)pc_config_int(rf->app->cfg, "refund.poll_ms");
    uv_timer_start(&rf->timer, tick, ms, ms);
}

void pc_refunds_stop(pc_refunds_t *rf)
{
    uv_timer_stop(&rf->timer);
    uv_close((uv_handle_t *)&rf->timer, NULL);
}

void pc_refunds_free(pc_refunds_t *rf)
{
    free(rf);
}
