/* What happens to a transaction after its first answer: final states with
 * their fees, statement lines and chargebacks; refunds and payouts that settle
 * later; payments that expire; the buyer completing an asynchronous payment;
 * payouts the bank returns. And the JSON objects paycore sees. */
#include "core/log.h"
#include "sim/sim.h"

#include <stdio.h>
#include <string.h>

/* Every failure code paysim reports (PROTOCOL.md "Failure codes"). */
static const pc_sim_failure_t g_failures[] = {
    {"CARD_DECLINED", "the issuer declined the card", false},
    {"INSUFFICIENT_FUNDS", "insufficient funds", false},
    {"PROCESSING_ERROR", "the issuer could not process the payment; try again", true},
    {"INVALID_CARD_NUMBER", "the card number is not valid", false},
    {"EXPIRED_CARD", "the card has expired", false},
    {"INVALID_CVV", "the CVV is not valid", false},
    {"TOKEN_NOT_FOUND", "no card with this token on this channel", false},
    {"ISSUER_UNAVAILABLE", "the issuer is unavailable; try again", true},
    {"BANK_UNAVAILABLE", "the receiving bank is unavailable; try again", true},
    {"ACCOUNT_INVALID", "the account does not exist or cannot receive money", false},
    {"EXPIRED", "the buyer did not pay before the payment expired", false},
    {"CLOSED_BY_REQUEST", "closed at paycore's request", false},
    {"BUYER_CANCELLED", "the buyer cancelled the payment", false},
    {"AUTHENTICATION_FAILED", "the cardholder failed the 3-D Secure challenge", false},
    {"REFUND_REJECTED", "the channel rejected the refund", false},
    {"PAYOUT_REJECTED", "the bank rejected the payout", false},
};

const pc_sim_failure_t *pc_sim_failure_find(const char *code)
{
    for (size_t i = 0; code && i < sizeof g_failures / sizeof g_failures[0]; i++)
        if (strcmp(g_failures[i].code, code) == 0)
            return &g_failures[i];
    return NULL;
}

static const char *event_type(const pc_sim_txn_t *t)
{
    switch (t->kind) {
    case PC_SIM_PAY:
        return t->status == PC_SIM_SUCCESS  ? "payment.succeeded"
               : t->status == PC_SIM_CLOSED ? "payment.closed"
                                            : "payment.failed";
    case PC_SIM_REFUND:
        return t->status == PC_SIM_SUCCESS ? "refund.succeeded" : "refund.failed";
    case PC_SIM_PAYOUT:
        return t->status == PC_SIM_SUCCESS    ? "payout.succeeded"
               : t->status == PC_SIM_RETURNED ? "payout.returned"
                                              : "payout.failed";
    }
    return "unknown";
}

static void log_txn(const pc_sim_txn_t *t, const char *what)
{
    /* Numbers and states only: card data never reaches a log line. */
    json_t *f = json_pack("{s:s,s:s,s:s,s:s,s:s,s:I,s:s}", "channel_id", t->ch->id, "kind",
                          pc_sim_kind_name(t->kind), "channel_txn_id", t->ref, "paycore_ref", t->no,
                          "status", pc_sim_status_name(t->status), "amount", (json_int_t)t->amount,
                          "currency", t->currency);
    if (t->failure_code)
        json_object_set_new(f, "failure_code", json_string(t->failure_code));
    if (t->method[0])
        json_object_set_new(f, "method", json_string(t->method));
    pc_log_fields(PC_LOG_INFO, "sim.txn", f, "%s", what);
}

void pc_sim_txn_finish(pc_sim_t *sim, pc_sim_txn_t *t, pc_sim_status_t status,
                       const char *failure_code, bool notify)
{
    int64_t now = pc_sim_now_ms(sim);
    pc_sim_channel_t *ch = t->ch;
    pc_sim_txn_cancel_timer(t);
    t->status = status;
    t->finished_ms = now;
    const pc_sim_failure_t *fail = pc_sim_failure_find(failure_code);
    t->failure_code = fail ? fail->code : NULL;
    t->failure_message = fail ? fail->message : NULL;
    t->retryable = fail ? fail->retryable : false;
    t->fee = 0;
    if (status == PC_SIM_SUCCESS) {
        if (t->kind == PC_SIM_PAY)
            t->fee = pc_sim_fee(t->amount, ch->faults.fee_bps, ch->faults.fee_fixed);
        else if (t->kind == PC_SIM_PAYOUT)
            t->fee = ch->faults.payout_fee;
    }
    if (t->kind == PC_SIM_REFUND && status != PC_SIM_SUCCESS) {
        /* The money was never returned: the payment is refundable again. */
        pc_sim_txn_t *pay = pc_sim_txn_by_ref(sim->store, t->parent_ref);
        if (pay && pay->refunded >= t->amount)
            pay->refunded -= t->amount;
    }
    if (pc_sim_line_add(sim->store, t, pc_sim_kind_name(t->kind), pc_sim_status_name(status),
                        t->amount, t->fee, now) < 0)
        pc_log_error("sim.oom", "statement line of %s lost", t->ref);
    if (t->kind == PC_SIM_PAY && status == PC_SIM_SUCCESS && t->dispute) {
        /* api.md: this card's payment is disputed in the next chargeback
         * file, i.e. the file of the business day it succeeded on. */
        if (!pc_sim_chargeback_add(sim->store, t, t->amount, "10.4", now))
            pc_log_error("sim.oom", "chargeback of %s lost", t->ref);
    }
    log_txn(t, "final");
    if (notify)
        pc_sim_notify(sim, t, event_type(t));
}

/* ---- Later events ---------------------------------------------------------- */

/* The transaction an ending timer belongs to, with its timer handle cleared
 * (also when cancelled, so no handle outlives its task); NULL when cancelled,
 * forgotten, or the timer is not the transaction's current one. */
static pc_sim_txn_t *timer_owner(pc_sim_task_t *task, bool cancelled)
{
    pc_sim_txn_t *t = pc_sim_txn_by_ref(task->sim->store, task->ref);
    if (!t || t->timer != task)
        return NULL;
    t->timer = NULL;
    return cancelled ? NULL : t;
}

static void settle_due(pc_sim_task_t *task, bool cancelled)
{
    pc_sim_txn_t *t = timer_owner(task, cancelled);
    if (t && t->status == PC_SIM_PROCESSING)
        pc_sim_txn_finish(task->sim, t, PC_SIM_SUCCESS, NULL, true);
}

void pc_sim_txn_settle_later(pc_sim_t *sim, pc_sim_txn_t *t, uint64_t delay_ms)
{
    pc_sim_txn_cancel_timer(t);
    pc_sim_task_t *task = pc_sim_task_start(sim, delay_ms, settle_due);
    if (task) {
        snprintf(task->ref, sizeof task->ref, "%s", t->ref);
        t->timer = task;
    }
}

static void expiry_due(pc_sim_task_t *task, bool cancelled)
{
    pc_sim_txn_t *t = timer_owner(task, cancelled);
    if (t && t->status == PC_SIM_PROCESSING)
        pc_sim_txn_finish(task->sim, t, PC_SIM_CLOSED, "EXPIRED", true);
}

void pc_sim_txn_expire_later(pc_sim_t *sim, pc_sim_txn_t *t)
{
    int64_t delay = t->expires_ms - t->created_ms;
    pc_sim_txn_cancel_timer(t);
    pc_sim_task_t *task = pc_sim_task_start(sim, delay > 0 ? (uint64_t)delay : 0, expiry_due);
    if (task) {
        snprintf(task->ref, sizeof task->ref, "%s", t->ref);
        t->timer = task;
    }
}

pc_sim_err_t pc_sim_complete(pc_sim_t *sim, const char *reference, bool success,
                             const char *failure_code, pc_sim_txn_t **out)
{
    /* The buyer's browser may hand over the whole redirect URL. */
    const char *r = strstr(reference, "/sim/redirect/");
    if (r)
        reference = r + strlen("/sim/redirect/");
    pc_sim_txn_t *t = pc_sim_txn_by_reference(sim->store, reference);
    if (!t)
        t = pc_sim_txn_by_ref(sim->store, reference);
    *out = t;
    if (!t)
        return PC_SIM_NOT_FOUND;
    if (t->status != PC_SIM_PROCESSING) {
        if (t->status == PC_SIM_CLOSED && t->failure_code && !strcmp(t->failure_code, "EXPIRED"))
            return PC_SIM_EXPIRED;
        return PC_SIM_INVALID_STATE;
    }
    if (success) {
        pc_sim_txn_finish(sim, t, PC_SIM_SUCCESS, NULL, true);
        return PC_SIM_OK;
    }
    if (!failure_code) {
        failure_code = t->kind == PC_SIM_REFUND   ? "REFUND_REJECTED"
                       : t->kind == PC_SIM_PAYOUT ? "PAYOUT_REJECTED"
                       : t->three_ds              ? "AUTHENTICATION_FAILED"
                                                  : "BUYER_CANCELLED";
    }
    pc_sim_txn_finish(sim, t, PC_SIM_FAILED, failure_code, true);
    return PC_SIM_OK;
}

pc_sim_err_t pc_sim_return_payout(pc_sim_t *sim, const char *ref, const char *reason,
                                  pc_sim_txn_t **out)
{
    pc_sim_txn_t *t = pc_sim_txn_by_ref(sim->store, ref);
    *out = t;
    if (!t || t->kind != PC_SIM_PAYOUT)
        return PC_SIM_NOT_FOUND;
    if (t->status != PC_SIM_SUCCESS)
        return PC_SIM_INVALID_STATE;
    int64_t now = pc_sim_now_ms(sim);
    t->status = PC_SIM_RETURNED;
    t->returned_ms = now;
    snprintf(t->return_reason, sizeof t->return_reason, "%s", reason ? reason : "R03");
    /* The return is money coming back on its own day: a line of its own. */
    if (pc_sim_line_add(sim->store, t, "PAYOUT_RETURN", "SUCCESS", t->amount, 0, now) < 0)
        pc_log_error("sim.oom", "statement line of the return of %s lost", t->ref);
    log_txn(t, "returned");
    pc_sim_notify(sim, t, "payout.returned");
    return PC_SIM_OK;
}

void pc_sim_fake(pc_sim_t *sim, pc_sim_channel_t *ch, const char *kind, pc_sim_kind_t op,
                 const char *channel_ref, const char *paycore_ref, const char *event_id)
{
    pc_sim_faked_t f = {0};
    f.kind = kind;
    f.op = pc_sim_kind_name(op);
    snprintf(f.channel_id, sizeof f.channel_id, "%s", ch->id);
    snprintf(f.channel_ref, sizeof f.channel_ref, "%s", channel_ref ? channel_ref : "");
    snprintf(f.paycore_ref, sizeof f.paycore_ref, "%s", paycore_ref ? paycore_ref : "");
    snprintf(f.event_id, sizeof f.event_id, "%s", event_id ? event_id : "");
    f.time_ms = pc_sim_now_ms(sim);
    pc_sim_faked_add(sim->store, &f);
    json_t *fields = json_pack("{s:s,s:s,s:s,s:s,s:s}", "kind", kind, "channel_id", ch->id, "op",
                               f.op, "channel_txn_id", f.channel_ref, "paycore_ref", f.paycore_ref);
    pc_log_fields(PC_LOG_INFO, "sim.fault", fields, "faked %s", kind);
}

/* ---- JSON ------------------------------------------------------------------ */

static json_t *time_or_null(int64_t ms)
{
    if (!ms)
        return json_null();
    char when[PC_SIM_TIME_LEN];
    pc_sim_format_time(ms, when);
    return json_string(when);
}

static json_t *action_json(const pc_sim_t *sim, const pc_sim_txn_t *t)
{
    if (t->status != PC_SIM_PROCESSING || !t->action[0])
        return json_null();
    json_t *a = json_pack("{s:s,s:s}", "type", t->action, "reference", t->reference);
    if (!strcmp(t->action, "REDIRECT")) {
        char url[512];
        snprintf(url, sizeof url, "%s/sim/redirect/%s", sim->public_base, t->reference);
        json_object_set_new(a, "url", json_string(url));
        if (!strcmp(t->method, "WALLET")) {
            snprintf(url, sizeof url, "paysim-wallet://pay?reference=%s", t->reference);
            json_object_set_new(a, "app_link", json_string(url));
        }
        if (t->three_ds)
            json_object_set_new(a, "three_ds", json_true());
    } else if (!strcmp(t->action, "VA")) {
        json_object_set_new(a, "va_number", json_string(t->reference));
        json_object_set_new(a, "bank_code", json_string("SIMBANK"));
    } else if (!strcmp(t->action, "OTC")) {
        json_object_set_new(a, "otc_code", json_string(t->reference));
        json_object_set_new(a, "store_network", json_string("SIMMART"));
    } else if (!strcmp(t->action, "QR")) {
        json_object_set_new(a, "qr_payload", json_string(t->reference));
    }
    json_object_set_new(a, "expires_at", time_or_null(t->expires_ms));
    return a;
}

json_t *pc_sim_txn_json(const pc_sim_t *sim, const pc_sim_txn_t *t)
{
    static const char *const objects[] = {"payment", "refund", "payout"};
    static const char *const numbers[] = {"payment_no", "refund_no", "payout_no"};
    json_t *o = json_pack(
        "{s:s,s:s,s:s,s:s,s:s,s:I,s:s,s:I}", "object", objects[t->kind], "channel_id", t->ch->id,
        "channel_txn_id", t->ref, numbers[t->kind], t->no, "status", pc_sim_status_name(t->status),
        "amount", (json_int_t)t->amount, "currency", t->currency, "fee", (json_int_t)t->fee);
    if (!o)
        return NULL;
    if (t->failure_code)
        json_object_set_new(o, "failure",
                            json_pack("{s:s,s:s,s:b}", "code", t->failure_code, "message",
                                      t->failure_message, "retryable", t->retryable));
    else
        json_object_set_new(o, "failure", json_null());
    if (t->kind == PC_SIM_PAY) {
        json_object_set_new(o, "method", json_string(t->method));
        json_object_set_new(o, "refunded_amount", json_integer(t->refunded));
        if (t->has_card)
            json_object_set_new(o, "card",
                                json_pack("{s:s,s:s,s:s,s:s,s:i,s:i,s:s}", "token", t->card_token,
                                          "brand", t->brand, "bin", t->bin, "last4", t->last4,
                                          "exp_month", t->exp_month, "exp_year", t->exp_year,
                                          "fingerprint", t->fingerprint));
        else
            json_object_set_new(o, "card", json_null());
        json_object_set_new(o, "action", action_json(sim, t));
        json_object_set_new(o, "reference",
                            t->reference[0] ? json_string(t->reference) : json_null());
        json_object_set_new(o, "expires_at", time_or_null(t->expires_ms));
    } else if (t->kind == PC_SIM_REFUND) {
        json_object_set_new(o, "payment_channel_txn_id", json_string(t->parent_ref));
        json_object_set_new(o, "payment_no", json_string(t->parent_no));
    } else {
        json_t *payee = json_pack("{s:s,s:s}", "type", t->payee_type, "last4", t->payee_last4);
        if (t->bank_code[0])
            json_object_set_new(payee, "bank_code", json_string(t->bank_code));
        json_object_set_new(o, "payee", payee);
        json_object_set_new(o, "returned_at", time_or_null(t->returned_ms));
        json_object_set_new(o, "return_reason",
                            t->return_reason[0] ? json_string(t->return_reason) : json_null());
    }
    json_object_set_new(o, "created_at", time_or_null(t->created_ms));
    json_object_set_new(o, "finished_at", time_or_null(t->finished_ms));
    return o;
}
