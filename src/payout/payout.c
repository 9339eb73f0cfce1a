#include "payout/payout.h"
#include "cardbin/cardbin.h"
#include "auth/auth.h"
#include "auth/sign.h"
#include "channel/client.h"
#include "channel/config.h"
#include "core/currency.h"
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

struct pc_payouts {
    pc_app_t *app;
    uv_timer_t timer;
    char schedule[512]; /* "{2000,5000,…}" as a PostgreSQL int array literal */
    int claiming;
    int in_flight;
    long long claim_warned_s; /* pc_log_due */
};

static void count(const char *what)
{
    char labels[64];
    snprintf(labels, sizeof labels, "status=\"%s\"", what);
    pc_metrics_add("pc_payouts_total", labels, 1);
}

static void ignore_cb(void *data, int status, pc_db_res_t *res)
{
    (void)data;
    (void)status;
    (void)res;
}

static void post_logged_cb(void *data, int status, int64_t txn_id)
{
    (void)txn_id;
    if (status)
        pc_log_warn("payout.ledger_failed", "%s: %s", (const char *)data,
                    pc_ledger_strerror(status));
}

/* Posts one two-leg movement of amount from one account to another. */
static int post_move(pc_db_tx_t *tx, const char *kind, const char *payout_no,
                     pc_ledger_type_t from_type, const char *from_owner, pc_ledger_type_t to_type,
                     const char *to_owner, const char *currency, int64_t amount)
{
    char from[PC_LEDGER_ID_MAX + 1], to[PC_LEDGER_ID_MAX + 1];
    int rc = pc_ledger_account_id(from, sizeof from, from_type, from_owner, currency);
    if (!rc)
        rc = pc_ledger_account_id(to, sizeof to, to_type, to_owner, currency);
    if (rc)
        return rc;
    pc_ledger_leg_t legs[2] = {{from, -amount, currency}, {to, amount, currency}};
    pc_ledger_txn_t txn = {kind, "payout", payout_no, NULL, legs, 2};
    return pc_ledger_post(tx, &txn, post_logged_cb, (void *)kind);
}

static int outbox_json(pc_db_tx_t *tx, const char *merchant_id, const char *type,
                       const char *notify_url, const char *json_text)
{
    json_t *obj = json_loads(json_text, 0, NULL);
    if (!obj)
        return PC_ENOMEM;
    int rc =
        pc_outbox_add(tx, merchant_id, type, notify_url && notify_url[0] ? notify_url : NULL, obj);
    json_decref(obj);
    return rc;
}

/* ---------- applying a channel result (answer, callback, query) ---------- */

typedef enum { APPLY_DONE, APPLY_DUPLICATE, APPLY_IGNORED, APPLY_FAILED } apply_outcome_t;
typedef void (*apply_cb)(void *data, apply_outcome_t outcome);

typedef struct {
    pc_app_t *app;
    apply_cb cb;
    void *data;
    pc_db_tx_t *tx;
    char payout_no[40], expect_channel[33];
    pc_ch_status_t target;
    char code[48], message[160], channel_txn_id[80];
    int64_t fee;
    /* A SUCCESS or RETURNED: what the channel says it paid or got back, in
     * said_currency */
    int64_t said_amount;
    char said_currency[4];
    int other_sum; /* ... which is not the payout's: applied (the money moved), flagged */
    char from[12], merchant_id[65], currency[4], channel_id[33], notify_url[520];
    int64_t amount;
    /* steps still to take, in order: SUCCESS then RETURNED for a payout
     * reported returned before we knew it had succeeded */
    pc_ch_status_t steps[2];
    int nsteps, step;
    /* Recorded by ops (GET /admin/needs-ops): only while the payout is
     * still in flight and flagged, read under its lock. The channel's
     * answer may have come first: then nothing moves, and it is no
     * contradiction (before, it was flagged as one). */
    int by_ops;
} apply_t;

static void apply_finish(apply_t *a, apply_outcome_t outcome)
{
    if (a->tx)
        pc_db_tx_rollback(a->tx);
    a->tx = NULL;
    if (a->cb)
        a->cb(a->data, outcome);
    free(a);
}

static void apply_commit_cb(void *data, int status)
{
    apply_t *a = data;
    a->tx = NULL;
    if (status) {
        pc_log_warn("payout.apply_failed", "%s: not committed: %s", a->payout_no,
                    pc_strerror(status));
        apply_finish(a, APPLY_FAILED);
        return;
    }
    for (int i = 0; i < a->nsteps; i++)
        count(a->steps[i] == PC_CH_SUCCESS  ? "SUCCESS"
              : a->steps[i] == PC_CH_FAILED ? "FAILED"
                                            : "RETURNED");
    pc_log_info("payout.final", "%s: %s -> %s%s%s", a->payout_no, a->from,
                a->target == PC_CH_SUCCESS  ? "SUCCESS"
                : a->target == PC_CH_FAILED ? "FAILED"
                                            : "RETURNED",
                a->code[0] ? " " : "", a->code);
    apply_finish(a, APPLY_DONE);
}

static void apply_step(apply_t *a);

static void apply_updated_cb(void *data, int status, pc_db_res_t *res)
{
    apply_t *a = data;
    if (status || pc_db_rows(res) != 1) {
        apply_finish(a, APPLY_FAILED);
        return;
    }
    pc_ch_status_t s = a->steps[a->step++];
    const char *json = pc_db_get(res, 0, 0);
    int rc;
    const char *event;
    if (s == PC_CH_SUCCESS) {
        rc = post_move(a->tx, "PAYOUT_SUCCESS", a->payout_no, PC_LEDGER_PLATFORM_ESCROW, NULL,
                       PC_LEDGER_CHANNEL_CLEARING, a->channel_id, a->currency, a->amount);
        event = "payout.succeeded";
    } else if (s == PC_CH_FAILED) {
        rc = post_move(a->tx, "PAYOUT_RELEASE", a->payout_no, PC_LEDGER_PLATFORM_ESCROW, NULL,
                       PC_LEDGER_MERCHANT_AVAILABLE, a->merchant_id, a->currency, a->amount);
        event = "payout.failed";
    } else {
        rc = post_move(a->tx, "PAYOUT_RETURN", a->payout_no, PC_LEDGER_CHANNEL_CLEARING,
                       a->channel_id, PC_LEDGER_MERCHANT_AVAILABLE, a->merchant_id, a->currency,
                       a->amount);
        event = "payout.returned";
    }
    if (!rc)
        rc = outbox_json(a->tx, a->merchant_id, event, a->notify_url, json);
    if (rc) {
        pc_log_error("payout.apply", "%s: %s", a->payout_no, pc_ledger_strerror(rc));
        apply_finish(a, APPLY_FAILED);
        return;
    }
    apply_step(a);
}

static void apply_step(apply_t *a)
{
    if (a->step >= a->nsteps) {
        const char *p[] = {a->payout_no};
        if (a->other_sum)
            pc_log_error(
                "payout.amount_mismatch",
                "payout %s: channel %s says it %s %lld %s, not %lld %s: applied, "
                "flagged for ops (GET /admin/needs-ops)",
                a->payout_no, a->channel_id, a->target == PC_CH_RETURNED ? "got back" : "paid",
                (long long)a->said_amount, a->said_currency, (long long)a->amount, a->currency);
        if (a->other_sum && pc_db_tx_query(a->tx,
                                           "UPDATE payouts SET needs_ops = true WHERE payout_no = "
                                           "$1",
                                           1, p, ignore_cb, NULL) < 0) {
            apply_finish(a, APPLY_FAILED);
            return;
        }
        pc_db_tx_commit(a->tx, apply_commit_cb, a);
        return;
    }
    pc_ch_status_t s = a->steps[a->step];
    const char *from = a->step == 0 ? a->from : "SUCCESS";
    char fee[24];
    snprintf(fee, sizeof fee, "%lld", (long long)a->fee);
    const char *txn = a->channel_txn_id[0] ? a->channel_txn_id : NULL;
    int rc;
    if (s == PC_CH_SUCCESS) {
        const char *p[] = {a->payout_no, from, txn, fee};
        rc = pc_db_tx_query(a->tx,
                            "UPDATE payouts p SET status = 'SUCCESS', channel_txn_id = "
                            "coalesce($3, p.channel_txn_id), fee = $4::bigint, finished_at = "
                            "now(), next_query_at = NULL, needs_ops = false, updated_at = now() "
                            "WHERE payout_no = "
                            "$1 AND status = $2 RETURNING payout_json(p)::text",
                            4, p, apply_updated_cb, a);
    } else if (s == PC_CH_FAILED) {
        const char *p[] = {a->payout_no, from, txn, a->code[0] ? a->code : "PAYOUT_FAILED",
                           a->message[0] ? a->message : NULL};
        rc = pc_db_tx_query(a->tx,
                            "UPDATE payouts p SET status = 'FAILED', channel_txn_id = "
                            "coalesce($3, p.channel_txn_id), failure_code = $4, failure_message "
                            "= $5, finished_at = now(), next_query_at = NULL, needs_ops = false, "
                            "updated_at = now() "
                            "WHERE payout_no = $1 AND status = $2 RETURNING payout_json(p)::text",
                            5, p, apply_updated_cb, a);
    } else {
        /* A flag the success left (paid with another sum, contradicted)
         * stays for ops: the return does not settle it. Before, it was
         * cleared, and the payout left the list of what ops must look at. */
        const char *p[] = {a->payout_no, from, a->code[0] ? a->code : NULL};
        rc = pc_db_tx_query(a->tx,
                            "UPDATE payouts p SET status = 'RETURNED', return_reason = $3, "
                            "returned_at = now(), updated_at = now() "
                            "WHERE payout_no = $1 AND "
                            "status = $2 RETURNING payout_json(p)::text",
                            3, p, apply_updated_cb, a);
    }
    if (rc < 0)
        apply_finish(a, APPLY_FAILED);
}

static void flagged_commit_cb(void *data, int status)
{
    apply_t *a = data;
    a->tx = NULL;
    apply_finish(a, status ? APPLY_FAILED : APPLY_IGNORED);
}

static void apply_locked_cb(void *data, int status, pc_db_res_t *res)
{
    apply_t *a = data;
    if (status) {
        apply_finish(a, APPLY_FAILED);
        return;
    }
    if (pc_db_rows(res) == 0) {
        pc_log_warn("payout.unknown", "a channel reported on payout %s, which does not exist",
                    a->payout_no);
        apply_finish(a, APPLY_IGNORED);
        return;
    }
    snprintf(a->from, sizeof a->from, "%s", pc_db_val(res, 0, "status"));
    snprintf(a->merchant_id, sizeof a->merchant_id, "%s", pc_db_val(res, 0, "merchant_id"));
    snprintf(a->currency, sizeof a->currency, "%s", pc_db_val(res, 0, "currency"));
    snprintf(a->channel_id, sizeof a->channel_id, "%s", pc_db_val(res, 0, "channel_id"));
    snprintf(a->notify_url, sizeof a->notify_url, "%s", pc_db_val(res, 0, "notify_url"));
    a->amount = pc_db_val_i64(res, 0, "amount");
    /* A return of another sum is flagged as a payment of one is: the
     * payout's amount comes back to the merchant, and ops settle the
     * difference with the bank. */
    a->other_sum = (a->target == PC_CH_SUCCESS || a->target == PC_CH_RETURNED) &&
                   a->said_amount > 0 &&
                   (a->said_amount != a->amount ||
                    (a->said_currency[0] && strcmp(a->said_currency, a->currency) != 0));
    if (a->expect_channel[0] && strcmp(a->expect_channel, a->channel_id) != 0) {
        pc_log_warn("payout.wrong_channel", "channel %s reported on payout %s of channel %s",
                    a->expect_channel, a->payout_no, a->channel_id);
        apply_finish(a, APPLY_IGNORED);
        return;
    }
    int open = !strcmp(a->from, "ACCEPTED") || !strcmp(a->from, "PROCESSING");
    if (a->by_ops && (!open || strcmp(pc_db_val(res, 0, "needs_ops"), "t") != 0)) {
        apply_finish(a, APPLY_IGNORED);
        return;
    }
    const char *target = a->target == PC_CH_SUCCESS  ? "SUCCESS"
                         : a->target == PC_CH_FAILED ? "FAILED"
                                                     : "RETURNED";
    a->nsteps = 0;
    if (!strcmp(a->from, target) || (a->target == PC_CH_SUCCESS && !strcmp(a->from, "RETURNED"))) {
        apply_finish(a, APPLY_DUPLICATE);
        return;
    }
    if (a->target == PC_CH_SUCCESS && open) {
        a->steps[a->nsteps++] = PC_CH_SUCCESS;
    } else if (a->target == PC_CH_FAILED && open) {
        a->steps[a->nsteps++] = PC_CH_FAILED;
    } else if (a->target == PC_CH_RETURNED && (open || !strcmp(a->from, "SUCCESS"))) {
        if (open)
            a->steps[a->nsteps++] = PC_CH_SUCCESS;
        a->steps[a->nsteps++] = PC_CH_RETURNED;
    }
    if (a->nsteps == 0) {
        /* The channel contradicts a final state we hold (failed after
         * success, success after failure): nothing moves; ops look. */
        pc_log_error("payout.contradiction", "payout %s is %s but the channel says %s%s%s",
                     a->payout_no, a->from, target, a->code[0] ? " " : "", a->code);
        const char *p[] = {a->payout_no};
        if (pc_db_tx_query(a->tx, "UPDATE payouts SET needs_ops = true WHERE payout_no = $1", 1, p,
                           ignore_cb, NULL) < 0) {
            apply_finish(a, APPLY_FAILED);
            return;
        }
        pc_db_tx_commit(a->tx, flagged_commit_cb, a);
        return;
    }
    a->step = 0;
    apply_step(a);
}

static void apply_begin_cb(void *data, int status, pc_db_tx_t *tx)
{
    apply_t *a = data;
    if (status) {
        apply_finish(a, APPLY_FAILED);
        return;
    }
    a->tx = tx;
    const char *p[] = {a->payout_no};
    if (pc_db_tx_query(tx,
                       "SELECT status, merchant_id, amount, currency, channel_id, "
                       "coalesce(notify_url, '') AS notify_url, needs_ops FROM payouts WHERE "
                       "payout_no = $1 FOR UPDATE",
                       1, p, apply_locked_cb, a) < 0)
        apply_finish(a, APPLY_FAILED);
}

/* Makes a final channel result (SUCCESS, FAILED, RETURNED) true for the
 * payout. expect_channel (may be NULL) is the channel that reported it.
 * Returns 0 (cb, which may be NULL, runs once) or a negative code. */
static int apply_result(pc_app_t *app, const char *payout_no, const char *expect_channel,
                        const pc_ch_result_t *res, int by_ops, apply_cb cb, void *data)
{
    if (res->status != PC_CH_SUCCESS && res->status != PC_CH_FAILED &&
        res->status != PC_CH_RETURNED)
        return PC_EINVAL;
    apply_t *a = calloc(1, sizeof *a);
    if (!a)
        return PC_ENOMEM;
    a->app = app;
    a->cb = cb;
    a->data = data;
    a->by_ops = by_ops;
    snprintf(a->payout_no, sizeof a->payout_no, "%s", payout_no);
    snprintf(a->expect_channel, sizeof a->expect_channel, "%s",
             expect_channel ? expect_channel : "");
    a->target = res->status;
    snprintf(a->code, sizeof a->code, "%s", res->code);
    snprintf(a->message, sizeof a->message, "%s", res->message);
    snprintf(a->channel_txn_id, sizeof a->channel_txn_id, "%s", res->channel_txn_id);
    a->fee = res->fee > 0 ? res->fee : 0;
    a->said_amount = res->amount;
    snprintf(a->said_currency, sizeof a->said_currency, "%s", res->currency);
    int rc = pc_db_begin(app->db, NULL, apply_begin_cb, a);
    if (rc < 0)
        free(a);
    return rc;
}

typedef struct {
    pc_payout_applied_cb cb;
    void *data;
} public_apply_t;

static void public_applied(void *data, apply_outcome_t outcome)
{
    public_apply_t *pa = data;
    if (pa->cb)
        pa->cb(pa->data,
               outcome == APPLY_FAILED ? -1 : outcome == APPLY_DONE || outcome == APPLY_DUPLICATE);
    free(pa);
}

static int public_apply(pc_app_t *app, const char *payout_no, const pc_ch_result_t *res, int by_ops,
                        pc_payout_applied_cb cb, void *data)
{
    public_apply_t *pa = calloc(1, sizeof *pa);
    if (!pa)
        return PC_ENOMEM;
    pa->cb = cb;
    pa->data = data;
    int rc = apply_result(app, payout_no, NULL, res, by_ops, public_applied, pa);
    if (rc < 0)
        free(pa);
    return rc;
}

int pc_payout_apply(pc_app_t *app, const char *payout_no, const pc_ch_result_t *res,
                    pc_payout_applied_cb cb, void *data)
{
    return public_apply(app, payout_no, res, 0, cb, data);
}

int pc_payout_apply_by_ops(pc_app_t *app, const char *payout_no, const pc_ch_result_t *res,
                           pc_payout_applied_cb cb, void *data)
{
    return public_apply(app, payout_no, res, 1, cb, data);
}

/* ---------- sending ---------- */

typedef struct {
    pc_app_t *app;
    char payout_no[40];
    char channel_id[33];
} send_t;

/* SQL: payout $1 was acknowledged by its channel (PROCESSING), with its
 * reference $2 (NULL: none given); kept once, the reference when there is
 * none yet. A PROCESSING answer without a reference was dropped before, and
 * a later "no record" failed the payout (NOT_SENT) while the bank could
 * still pay it (migration 0102). */
#define NOTE_TAKEN_SQL                                                                             \
    "UPDATE payouts SET channel_txn_id = coalesce(channel_txn_id, $2), acknowledged_at = "         \
    "coalesce(acknowledged_at, now()), updated_at = now() WHERE payout_no = $1 AND "               \
    "(acknowledged_at IS NULL OR (channel_txn_id IS NULL AND $2::text IS NOT NULL))"

static void txn_id_saved_cb(void *data, int status, pc_db_res_t *res)
{
    (void)status;
    (void)res;
    free(data);
}

static void sent_cb(void *data, const pc_ch_result_t *res)
{
    send_t *s = data;
    if (res->status == PC_CH_SUCCESS || res->status == PC_CH_FAILED ||
        res->status == PC_CH_RETURNED) {
        if (apply_result(s->app, s->payout_no, NULL, res, 0, NULL, NULL) < 0)
            pc_log_warn("payout.apply_later", "%s: the status query will apply the answer",
                        s->payout_no);
        free(s);
        return;
    }
    /* PROCESSING or no answer: the callback or the status query finishes it.
     * The channel holds it: kept, with its reference if it gave one. */
    if (res->status == PC_CH_PROCESSING) {
        const char *p[] = {s->payout_no, res->channel_txn_id[0] ? res->channel_txn_id : NULL};
        if (pc_db_query(s->app->db, NOTE_TAKEN_SQL, 2, p, txn_id_saved_cb, s) == 0)
            return;
    }
    free(s);
}

static void claimed_for_send_cb(void *data, int status, pc_db_res_t *res)
{
    send_t *s = data;
    if (status || pc_db_rows(res) == 0) {
        /* Sent by someone else, held, or final already. */
        free(s);
        return;
    }
    json_t *payee = json_loads(pc_db_val(res, 0, "payee"), 0, NULL);
    snprintf(s->channel_id, sizeof s->channel_id, "%s", pc_db_val(res, 0, "channel_id"));
    pc_ch_payout_t req = {s->channel_id, s->payout_no, pc_db_val_i64(res, 0, "amount"),
                          pc_db_val(res, 0, "currency"), payee};
    int rc = payee ? pc_channel_payout(s->app->channel_client, &req, sent_cb, s) : PC_EINVAL;
    json_decref(payee);
    if (rc < 0) {
        pc_log_warn("payout.not_sent", "%s via %s: %s; the status query takes over", s->payout_no,
                    s->channel_id, pc_strerror(rc));
        free(s);
    }
}

/* Sends an accepted, unheld payout: marks it PROCESSING first (a node that
 * dies after this leaves it to the status query, which the channel answers
 * by payout_no), then calls the channel. */
static void send_payout(pc_app_t *app, const char *payout_no)
{
    send_t *s = calloc(1, sizeof *s);
    if (!s)
        return;
    s->app = app;
    snprintf(s->payout_no, sizeof s->payout_no, "%s", payout_no);
    char first[24];
    snprintf(first, sizeof first, "%lld",
             (long long)pc_config_int(app->cfg, "payout.first_query_ms"));
    const char *p[] = {payout_no, first};
    if (pc_db_query(app->db,
                    "UPDATE payouts SET status = 'PROCESSING', sent_at = coalesce(sent_at, "
                    "now()), next_query_at = now() + $2::bigint * interval '1 millisecond', "
                    "updated_at = now() WHERE payout_no = $1 AND status = 'ACCEPTED' AND "
                    "hold_reason IS NULL RETURNING amount, currency, channel_id, payee::text AS "
                    "payee",
                    2, p, claimed_for_send_cb, s) < 0)
        free(s);
}

/* ---------- POST /v1/payouts ---------- */

typedef struct {
    pc_http_req_t *req;
    pc_app_t *app;
    pc_db_tx_t *tx;
    char out_payout_no[65], currency[4], channel_id[33], notify_url[520];
    int64_t amount;
    char *payee;
    char payee_type[8], payee_name[129], card_token[81];
    char payout_no[40];
    int64_t available;
    int64_t owed;       /* what the merchant owes the platform (a negative receivable) */
    int owed_elsewhere; /* it owes in another currency: owed_msg says what */
    char owed_msg[200];
    char decision[12];
    char *body;
} accept_t;

static void accept_free(void *arg)
{
    accept_t *a = arg;
    free(a->payee);
    free(a->body);
}

static void accept_fail(accept_t *a, pc_api_err_t err, const char *field, const char *msg)
{
    if (a->tx)
        pc_db_tx_rollback(a->tx);
    a->tx = NULL;
    pc_http_respond_error(a->req, err, field, msg);
}

static void accept_commit_cb(void *data, int status)
{
    accept_t *a = data;
    a->tx = NULL;
    if (status) {
        pc_http_respond_error(a->req, PC_API_UNAVAILABLE, NULL,
                              "not recorded; retry with the same Idempotency-Key");
        return;
    }
    pc_log_info("payout.accepted", "%s (%s) of %s: %lld %s via %s, risk %s", a->payout_no,
                a->out_payout_no, pc_auth_merchant(a->req)->id, (long long)a->amount, a->currency,
                a->channel_id, a->decision);
    count(!strcmp(a->decision, "REJECT") ? "REJECTED" : "ACCEPTED");
    pc_app_t *app = a->app;
    char no[40];
    snprintf(no, sizeof no, "%s", a->payout_no);
    int send = !strcmp(a->decision, "ACCEPT");
    pc_http_respond(a->req, 200, "application/json", a->body, strlen(a->body));
    if (send)
        send_payout(app, no);
}

static void accept_inserted_cb(void *data, int status, pc_db_res_t *res)
{
    accept_t *a = data;
    if (status == PC_ECONFLICT) {
        accept_fail(a, PC_API_DUPLICATE_OUT_PAYOUT_NO, "out_payout_no",
                    "this out_payout_no was used for another payout");
        return;
    }
    if (status || pc_db_rows(res) != 1) {
        accept_fail(a, PC_API_UNAVAILABLE, NULL, "database unavailable");
        return;
    }
    const pc_merchant_t *m = pc_auth_merchant(a->req);
    const char *json = pc_db_get(res, 0, 0);
    int rc = 0;
    if (!strcmp(a->decision, "REJECT"))
        rc = outbox_json(a->tx, m->id, "payout.failed", a->notify_url, json);
    else
        rc = post_move(a->tx, "PAYOUT_HOLD", a->payout_no, PC_LEDGER_MERCHANT_AVAILABLE, m->id,
                       PC_LEDGER_PLATFORM_ESCROW, NULL, a->currency, a->amount);
    json_t *obj = json_loads(json, 0, NULL);
    a->body = obj ? json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(obj);
    if (rc || !a->body) {
        accept_fail(a, PC_API_UNAVAILABLE, NULL, "could not record the payout");
        return;
    }
    pc_idem_store_in_tx(pc_auth_idem(a->req), a->tx, 200, a->body);
    pc_db_tx_commit(a->tx, accept_commit_cb, a);
}

/* A CARD payee: the card's type and channel ("DEBIT/sim_card", "" for no
 * bound card with a known BIN). Only the channel that tokenized the card
 * can pay out to its token: the payout goes there (it went to the payout
 * channel for accounts, which had no such token: every card payout was
 * accepted, its money held, then failed TOKEN_NOT_FOUND). Refuses (answers)
 * and returns 1, or sets a->channel_id and returns 0. */
static int card_payee_refused(accept_t *a, const char *type_channel)
{
    const char *slash = strchr(type_channel, '/');
    if (!slash || (size_t)(slash - type_channel) != 5 || strncmp(type_channel, "DEBIT", 5) != 0) {
        accept_fail(a, PC_API_INVALID_REQUEST, "payee.card_token",
                    type_channel[0] ? "payouts go to debit cards only"
                                    : "not a bound card with a known BIN; payouts go to debit "
                                      "cards only");
        return 1;
    }
    const char *ch_id = slash + 1;
    const pc_channel_t *ch = pc_channels_find(a->app->channels, ch_id);
    if (!ch || !pc_channels_effective_enabled(a->app->channels, ch_id) ||
        !pc_channel_amounts(ch, a->currency)) {
        char msg[160];
        snprintf(msg, sizeof msg, "the card's channel %s (the one that holds its token) %s", ch_id,
                 !ch                                                       ? "is not configured"
                 : !pc_channels_effective_enabled(a->app->channels, ch_id) ? "is switched off"
                                                                           : "takes no such "
                                                                             "currency");
        accept_fail(a, PC_API_INVALID_REQUEST, "payee.card_token", msg);
        return 1;
    }
    snprintf(a->channel_id, sizeof a->channel_id, "%s", ch_id);
    return 0;
}

static void accept_info_cb(void *data, int status, pc_db_res_t *res)
{
    accept_t *a = data;
    if (status || pc_db_tx_failed(a->tx)) {
        accept_fail(a, PC_API_UNAVAILABLE, NULL, "database unavailable");
        return;
    }
    if (pc_db_val(res, 0, "dup")[0] == 't') {
        accept_fail(a, PC_API_DUPLICATE_OUT_PAYOUT_NO, "out_payout_no",
                    "this out_payout_no was used for another payout");
        return;
    }
    /* Real-name verification, then the payee it allows (see verify_sql). */
    if (pc_db_val(res, 0, "verified")[0] != 't') {
        accept_fail(a, PC_API_INVALID_STATE, NULL, "real-name verification required");
        return;
    }
    if (!strcmp(a->payee_type, "ACCOUNT") && pc_db_val(res, 0, "name_ok")[0] != 't') {
        accept_fail(a, PC_API_INVALID_REQUEST, "payee.name",
                    "must match the merchant's verified legal name");
        return;
    }
    if (!strcmp(a->payee_type, "CARD") && card_payee_refused(a, pc_db_val(res, 0, "card_type")))
        return;
    /* A withdrawal goes to the merchant's own money only: a card's holder,
     * as bound (holder_name), is its verified legal name, and a payee name
     * given with it is too. Before, any debit card the merchant had bound
     * for a buyer took its balance: the real-name check of accounts had a
     * way round it. */
    if (!strcmp(a->payee_type, "CARD") && pc_db_val(res, 0, "holder_ok")[0] != 't') {
        accept_fail(a, PC_API_INVALID_REQUEST, "payee.card_token",
                    "the card's holder (its holder_name when it was bound) must be the "
                    "merchant's verified legal name");
        return;
    }
    if (!strcmp(a->payee_type, "CARD") && a->payee_name[0] &&
        pc_db_val(res, 0, "name_ok")[0] != 't') {
        accept_fail(a, PC_API_INVALID_REQUEST, "payee.name",
                    "must match the merchant's verified legal name");
        return;
    }
    /* What the merchant owes (chargebacks or refunds funded by the
     * platform and not yet recovered from its settlements) is kept back from
     * its available balance: paid out, it could never be recovered. */
    if (a->owed_elsewhere) {
        accept_fail(a, PC_API_INSUFFICIENT_BALANCE, "amount", a->owed_msg);
        return;
    }
    if (a->available - a->owed < a->amount) {
        char msg[192], owed[64] = "";
        if (a->owed > 0)
            snprintf(owed, sizeof owed, ", less %lld the merchant owes,", (long long)a->owed);
        snprintf(msg, sizeof msg, "available balance %lld %s%s is less than %lld",
                 (long long)a->available, a->currency, owed, (long long)a->amount);
        accept_fail(a, PC_API_INSUFFICIENT_BALANCE, "amount", msg);
        return;
    }
    const pc_merchant_t *m = pc_auth_merchant(a->req);
    json_t *ctx =
        json_pack("{s:s,s:I,s:s,s:s,s:I,s:b,s:{s:s,s:I}}", "kind", "PAYOUT", "amount",
                  (json_int_t)a->amount, "currency", a->currency, "method", "PAYOUT", "now",
                  (json_int_t)pc_db_val_i64(res, 0, "now"), "challenge_passed", 0, "merchant", "id",
                  m->id, "chargeback_rate_bp", (json_int_t)pc_db_val_i64(res, 0, "cb_rate"));
    pc_rule_result_t r;
    pc_rules_risk(a->app->rules, ctx, &r);
    json_decref(ctx);
    /* A fallback is logged by the rules module (rules.fallback, once a
     * second per rule) and counted (pc_rules_calls_total): not again here,
     * once per request, which flooded the log when a rule kept failing. */
    const char *d = json_string_value(json_object_get(r.answer, "decision"));
    snprintf(a->decision, sizeof a->decision, "%s",
             d && !strcmp(d, "ACCEPT")   ? "ACCEPT"
             : d && !strcmp(d, "REJECT") ? "REJECT"
                                         : "REVIEW");
    char score[24], hex[21], amount[24], first[24];
    snprintf(score, sizeof score, "%lld",
             (long long)json_integer_value(json_object_get(r.answer, "score")));
    json_t *reasons = json_object_get(r.answer, "reasons");
    char *reasons_text = json_dumps(reasons ? reasons : json_array(), JSON_COMPACT);
    pc_random_hex(hex, sizeof hex, 10);
    snprintf(a->payout_no, sizeof a->payout_no, "PO%s", hex);
    snprintf(amount, sizeof amount, "%lld", (long long)a->amount);
    snprintf(first, sizeof first, "%lld",
             (long long)pc_config_int(a->app->cfg, "payout.first_query_ms"));
    int reject = !strcmp(a->decision, "REJECT");
    const char *p[] = {a->payout_no,
                       a->out_payout_no,
                       m->id,
                       amount,
                       a->currency,
                       a->payee,
                       reject ? "FAILED" : "ACCEPTED",
                       a->channel_id,
                       !strcmp(a->decision, "REVIEW") ? "RISK_REVIEW" : NULL,
                       a->decision,
                       score,
                       reasons_text ? reasons_text : "[]",
                       r.version[0] ? r.version : NULL,
                       a->notify_url[0] ? a->notify_url : NULL,
                       reject ? "RISK_REJECTED" : NULL,
                       reject ? "refused by the risk rules" : NULL,
                       first};
    int rc = pc_db_tx_query(
        a->tx,
        "INSERT INTO payouts AS p (payout_no, out_payout_no, merchant_id, amount, currency, "
        "payee, status, channel_id, hold_reason, risk_decision, risk_score, risk_reasons, "
        "risk_version, notify_url, failure_code, failure_message, finished_at, next_query_at) "
        "VALUES ($1, $2, $3, $4::bigint, $5, $6::jsonb, $7, $8, $9, $10, $11::int, $12::jsonb, "
        "$13, $14, $15, $16, CASE WHEN $7 = 'FAILED' THEN now() END, CASE WHEN $7 = 'ACCEPTED' "
        "AND $9::text IS NULL THEN now() + $17::bigint * interval '1 millisecond' END) "
        "RETURNING payout_json(p)::text",
        17, p, accept_inserted_cb, a);
    free(reasons_text);
    pc_rule_result_clear(&r);
    if (rc < 0)
        accept_fail(a, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

/* Columns of the payout's checks, with $1 the merchant, $3 the payee name
 * and $4 the card token. verified: the merchant has a real-name record.
 * name_ok: the payee name and the verified legal name have the same
 * pc_name_key (case, spacing and punctuation aside). card_type: the type of
 * the longest matching BIN (8 then 6 digits, as PC_CARDBIN_MATCH_SQL) of the
 * active card this merchant bound (POST /v1/buyers/{id}/cards) with that
 * token (another merchant's binding is not this one's); paycore
 * knows no BIN for a token from elsewhere, so such a card gets "".
 * holder_ok: that card's holder has the verified legal name's pc_name_key. */
#define VERIFY_SQL                                                                                 \
    "EXISTS (SELECT 1 FROM merchant_verifications WHERE merchant_id = $1) AS verified, "           \
    "coalesce((SELECT pc_name_key(legal_name) FROM merchant_verifications WHERE merchant_id = "    \
    "$1) = pc_name_key($3::text), false) AS name_ok, coalesce((SELECT (SELECT b.card_type FROM "   \
    "card_bins b WHERE b.bin = left(c.bin, 8) OR b.bin = left(c.bin, 6) ORDER BY length(b.bin) "   \
    "DESC LIMIT 1) || '/' || c.channel_id FROM cards c WHERE c.token = $4::text AND "              \
    "c.merchant_id = $1 AND c.status = 'ACTIVE' ORDER BY c.created_at DESC LIMIT 1), '') AS "      \
    "card_type, coalesce((SELECT pc_name_key(c.holder) = (SELECT pc_name_key(legal_name) FROM "    \
    "merchant_verifications WHERE merchant_id = $1) FROM cards c WHERE c.token = $4::text AND "    \
    "c.merchant_id = $1 AND c.status = 'ACTIVE' ORDER BY c.created_at DESC LIMIT 1), false) AS "   \
    "holder_ok"

/* Locks the merchant's available balance in the currency and its
 * receivables in every currency in tx (the ledger's lock order; queued
 * deltas folded) and reads one row: available, what the merchant owes in
 * the currency (a negative receivable, as a positive sum), and what it owes
 * in others ("3000 CNY, 12 EUR", "" for nothing). A debt in another currency
 * cannot be set against this one (no exchange rate here): a payout waits
 * until it is recovered. Before, a merchant owing a CNY chargeback could pay
 * out its USD balance, and the debt could never be recovered. PC_EINVAL for
 * ids that make no account, PC_EUNAVAIL when not sent. */
static int lock_free_balance(pc_db_tx_t *tx, const char *merchant_id, const char *currency,
                             pc_db_query_cb cb, void *data)
{
    char avail[PC_LEDGER_ID_MAX + 1], recv[PC_LEDGER_ID_MAX + 1];
    if (pc_ledger_account_id(avail, sizeof avail, PC_LEDGER_MERCHANT_AVAILABLE, merchant_id,
                             currency) ||
        pc_ledger_account_id(recv, sizeof recv, PC_LEDGER_MERCHANT_RECEIVABLE, merchant_id,
                             currency))
        return PC_EINVAL;
    const char *p[] = {avail, recv, merchant_id};
    return pc_db_tx_query(
               tx,
               "SELECT coalesce(sum(balance) FILTER (WHERE account_id = $1), 0), "
               "coalesce(-sum(least(balance, 0)) FILTER (WHERE account_id = $2), 0), "
               "coalesce(string_agg((-balance)::text || ' ' || right(account_id, 3), ', ' ORDER "
               "BY account_id) FILTER (WHERE account_id NOT IN ($1, $2) AND balance < 0), '') "
               "FROM ledger_lock_accounts(ARRAY[$1, $2] || ARRAY(SELECT account_id FROM "
               "ledger_accounts WHERE owner_id = $3 AND type = 'MERCHANT_RECEIVABLE'))",
               3, p, cb, data) < 0
               ? PC_EUNAVAIL
               : 0;
}

/* The refusal of a payout while the merchant owes in another currency
 * (lock_free_balance's third column), into msg; 0 when it owes none. */
static int owed_elsewhere(pc_db_res_t *res, char *msg, size_t len)
{
    const char *other = pc_db_get(res, 0, 2);
    if (!other[0])
        return 0;
    snprintf(msg, len,
             "the merchant owes %.120s: no payout until that debt is recovered from its "
             "settlements",
             other);
    return 1;
}

static void accept_balance_cb(void *data, int status, pc_db_res_t *res)
{
    accept_t *a = data;
    if (status)
        return; /* the next statement's callback sees the failure */
    a->available = pc_db_get_i64(res, 0, 0);
    a->owed = pc_db_get_i64(res, 0, 1);
    a->owed_elsewhere = owed_elsewhere(res, a->owed_msg, sizeof a->owed_msg);
}

static void accept_begin_cb(void *data, int status, pc_db_tx_t *tx)
{
    accept_t *a = data;
    if (status) {
        accept_fail(a, PC_API_UNAVAILABLE, NULL, "database unavailable");
        return;
    }
    a->tx = tx;
    const pc_merchant_t *m = pc_auth_merchant(a->req);
    /* The balances are locked until commit: concurrent payouts of this
     * merchant queue here, and each sees what the one before left; a
     * chargeback deducted meanwhile waits for this commit, or is seen. */
    int rc = lock_free_balance(tx, m->id, a->currency, accept_balance_cb, a);
    if (rc == PC_EINVAL) {
        accept_fail(a, PC_API_INVALID_REQUEST, "currency", "ISO 4217, upper case");
        return;
    }
    const char *p2[] = {m->id, a->out_payout_no, a->payee_name[0] ? a->payee_name : NULL,
                        a->card_token[0] ? a->card_token : NULL};
    if (rc ||
        pc_db_tx_query(tx,
                       "SELECT EXISTS (SELECT 1 FROM payouts WHERE merchant_id = $1 AND "
                       "out_payout_no = $2) AS dup, merchant_chargeback_rate_bp($1) AS cb_rate, "
                       "extract(epoch FROM now())::bigint AS now, " VERIFY_SQL,
                       4, p2, accept_info_cb, a) < 0)
        accept_fail(a, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

/* The channel that pays out this currency: payout.channel when configured,
 * switched on and taking the currency; else the first enabled channel (by
 * id) that lists PAYOUT among its refund methods and takes it (before, a
 * configured channel without the currency refused every payout in it).
 * Returns 0 or PC_ENOTFOUND. */
static int choose_channel(pc_app_t *app, const char *currency, char out[33])
{
    const char *want = pc_config_str(app->cfg, "payout.channel");
    const pc_channel_set_t *set = pc_channels_current(app->channels);
    size_t n = set ? pc_channel_set_count(set) : 0;
    for (int pass = want[0] ? 0 : 1; pass < 2; pass++) {
        for (size_t i = 0; i < n; i++) {
            const pc_channel_t *ch = pc_channel_set_at(set, i);
            if (pass == 0 ? strcmp(want, ch->id) != 0
                          : !pc_channel_supports_refund(ch, PC_REFUND_PAYOUT))
                continue;
            if (pc_channels_effective_enabled(app->channels, ch->id) &&
                pc_channel_amounts(ch, currency)) {
                snprintf(out, 33, "%s", ch->id);
                return 0;
            }
        }
    }
    return PC_ENOTFOUND;
}

/* Checks the payee and returns its normalised copy (new reference), or NULL
 * after answering req. Card numbers are refused, never read further. */
static json_t *parse_payee(pc_http_req_t *req, json_t *p)
{
    if (!json_is_object(p)) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "payee",
                              "{\"type\":\"CARD|ACCOUNT\", …}");
        return NULL;
    }
    if (json_object_get(p, "pan") || json_object_get(p, "card_number") ||
        json_object_get(p, "cvv")) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "payee",
                              "card numbers are not accepted: give a card_token");
        return NULL;
    }
    const char *type = json_string_value(json_object_get(p, "type"));
    const char *name = json_string_value(json_object_get(p, "name"));
    const char *bank = json_string_value(json_object_get(p, "bank_code"));
    if ((json_object_get(p, "name") && (!name || !pc_printable(name, 128))) ||
        (json_object_get(p, "bank_code") && (!bank || !pc_printable(bank, 32)))) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "payee",
                              "name: 1-128 characters, bank_code: 1-32 characters");
        return NULL;
    }
    json_t *out = json_object();
    if (type && !strcmp(type, "CARD")) {
        const char *tok = json_string_value(json_object_get(p, "card_token"));
        if (!tok || !pc_printable(tok, 80) || strchr(tok, ' ')) {
            json_decref(out);
            pc_http_respond_error(req, PC_API_INVALID_REQUEST, "payee",
                                  "a CARD payee needs a card_token");
            return NULL;
        }
        json_object_set_new(out, "type", json_string("CARD"));
        json_object_set_new(out, "card_token", json_string(tok));
    } else if (type && !strcmp(type, "ACCOUNT")) {
        const char *acct = json_string_value(json_object_get(p, "account_no"));
        const char *why = pc_account_no_refusal(acct);
        if (why) {
            json_decref(out);
            pc_http_respond_error(req, PC_API_INVALID_REQUEST, "payee.account_no", why);
            return NULL;
        }
        json_object_set_new(out, "type", json_string("ACCOUNT"));
        json_object_set_new(out, "account_no", json_string(acct));
    } else {
        json_decref(out);
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "payee", "type: CARD or ACCOUNT");
        return NULL;
    }
    if (name)
        json_object_set_new(out, "name", json_string(name));
    if (bank)
        json_object_set_new(out, "bank_code", json_string(bank));
    return out;
}

static void create_payout(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    json_t *b = pc_http_req_json(req);
    if (!b) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, NULL, "body must be a JSON object");
        return;
    }
    int bad = 0;
    const char *out_no = pc_json_str(b, "out_payout_no", 64, 1, &bad);
    if (!out_no || bad) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "out_payout_no",
                              "1-64 of [A-Za-z0-9_-]");
        return;
    }
    long long amount = 0;
    if (pc_json_int(b, "amount", 1, 1000000000000000LL, &amount) != 0) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "amount",
                              "a positive integer in minor units");
        return;
    }
    const char *cur = json_string_value(json_object_get(b, "currency"));
    if (!pc_currency_known(cur)) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "currency",
                              "an ISO 4217 currency code in upper case, like CNY");
        return;
    }
    const char *notify = pc_json_url(b, "notify_url", &bad);
    if (bad) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "notify_url", "an http(s) URL");
        return;
    }
    json_t *payee = parse_payee(req, json_object_get(b, "payee"));
    if (!payee)
        return;
    /* A card payout goes to the card's own channel (card_payee_refused). */
    char channel[33] = "";
    const char *ptype = json_string_value(json_object_get(payee, "type"));
    if (strcmp(ptype ? ptype : "", "CARD") != 0 && choose_channel(app, cur, channel)) {
        json_decref(payee);
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "currency",
                              "no payout channel takes this currency");
        return;
    }
    accept_t *a = pc_http_req_alloc(req, sizeof *a);
    a->req = req;
    a->app = app;
    pc_http_req_on_done(req, accept_free, a);
    snprintf(a->out_payout_no, sizeof a->out_payout_no, "%s", out_no);
    snprintf(a->currency, sizeof a->currency, "%s", cur);
    snprintf(a->channel_id, sizeof a->channel_id, "%s", channel);
    const pc_merchant_t *m = pc_auth_merchant(req);
    snprintf(a->notify_url, sizeof a->notify_url, "%s",
             notify ? notify : (m->notify_url ? m->notify_url : ""));
    a->amount = amount;
    a->payee = json_dumps(payee, JSON_COMPACT | JSON_SORT_KEYS);
    const char *pt = json_string_value(json_object_get(payee, "type"));
    const char *pn = json_string_value(json_object_get(payee, "name"));
    const char *tok = json_string_value(json_object_get(payee, "card_token"));
    snprintf(a->payee_type, sizeof a->payee_type, "%s", pt ? pt : "");
    snprintf(a->payee_name, sizeof a->payee_name, "%s", pn ? pn : "");
    snprintf(a->card_token, sizeof a->card_token, "%s", tok ? tok : "");
    json_decref(payee);
    if (!a->payee || pc_db_begin(app->db, NULL, accept_begin_cb, a) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

/* ---------- GET /v1/payouts/{payout_no}, GET /v1/payouts?out_payout_no= ---------- */

static void json_text_cb(void *data, int status, pc_db_res_t *res)
{
    pc_http_req_t *req = data;
    if (status) {
        pc_respond_db_error(req, status);
        return;
    }
    if (pc_db_rows(res) == 0 || pc_db_isnull(res, 0, 0)) {
        pc_http_respond_error(req, PC_API_NOT_FOUND, NULL, "no such payout");
        return;
    }
    pc_respond_json_text(req, 200, pc_db_get(res, 0, 0));
}

static void get_payout(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    const char *p[] = {pc_http_req_param(req, "payout_no"), pc_auth_merchant(req)->id};
    if (pc_db_query(app->db,
                    "SELECT payout_json(p)::text FROM payouts p WHERE payout_no = $1 AND "
                    "merchant_id = $2",
                    2, p, json_text_cb, req) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

static void find_payout(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    const char *out_no = pc_http_req_query_param(req, "out_payout_no");
    if (!out_no || !out_no[0]) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "out_payout_no", "required");
        return;
    }
    const char *p[] = {out_no, pc_auth_merchant(req)->id};
    if (pc_db_query(app->db,
                    "SELECT payout_json(p)::text FROM payouts p WHERE out_payout_no = $1 AND "
                    "merchant_id = $2",
                    2, p, json_text_cb, req) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

/* ---------- channel callbacks ---------- */

static void callback_applied(void *data, apply_outcome_t outcome)
{
    pc_http_req_t *req = data;
    if (outcome == APPLY_FAILED) {
        /* Not applied: the channel retries. */
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "try again");
        return;
    }
    static const char ok[] = "{\"result\":\"success\"}";
    pc_http_respond(req, 200, "application/json", ok, sizeof ok - 1);
}

/* The channel says it holds payout_no (PROCESSING, with its reference),
 * from a status query or a callback: the reference is kept, as the send's
 * own answer keeps it. Taken, the payout is never failed on a later "no
 * record" (pc_channel_failure_wait_ms), which goes to ops instead: the bank
 * may still pay it. Dropped, a send that timed out kept no reference, and
 * such a "no record" failed the payout and gave the merchant the money
 * back while the bank could pay it too. */
static void processing_noted_cb(void *data, int status, pc_db_res_t *res)
{
    pc_http_req_t *req = data;
    (void)res;
    if (!req)
        return;
    /* Not kept: the channel sends its callback again. */
    if (status) {
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "try again");
        return;
    }
    static const char ok[] = "{\"result\":\"ignored\"}";
    pc_http_respond(req, 200, "application/json", ok, sizeof ok - 1);
}

/* req: a callback's, answered once the acknowledgement is kept (NULL: a
 * query's). */
static void note_taken(pc_app_t *app, const char *payout_no, const char *channel_id,
                       const char *channel_txn_id, pc_http_req_t *req)
{
    const char *p[] = {payout_no, channel_txn_id && channel_txn_id[0] ? channel_txn_id : NULL,
                       channel_id};
    if (!channel_id || !channel_id[0] ||
        pc_db_query(app->db, NOTE_TAKEN_SQL " AND channel_id = $3 AND status = 'PROCESSING'", 3, p,
                    processing_noted_cb, req) < 0)
        processing_noted_cb(req, channel_id && channel_id[0] ? PC_EUNAVAIL : 0, NULL);
}

static void payout_callback(pc_app_t *app, const void *cbv, pc_http_req_t *req)
{
    const pc_ch_callback_t *cb = cbv;
    /* Refunds paid out to the buyer (method PAYOUT) use the channel's payout
     * operation under their refund number ("R…"); payouts are "PO…". */
    if (strncmp(cb->ref, "PO", 2) != 0 && app->on_refund_callback) {
        app->on_refund_callback(app, cbv, req);
        return;
    }
    if (cb->result.status == PC_CH_PROCESSING) {
        note_taken(app, cb->ref, pc_http_req_param(req, "channel_id"), cb->result.channel_txn_id,
                   req);
        return;
    }
    if (apply_result(app, cb->ref, pc_http_req_param(req, "channel_id"), &cb->result, 0,
                     callback_applied, req) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "try again");
}

/* ---------- the runner: unsent payouts and status queries ---------- */

typedef struct {
    pc_payouts_t *po;
    char payout_no[40];
    char channel_id[65];
    long long age_ms; /* since the payout was last sent */
    int last;
    int acknowledged; /* the channel answered with its reference: it took the payout */
} job_t;

/* Flagged for ops, its money held (see pc_repair_flag). */
static void flag_for_ops(pc_app_t *app, const char *payout_no, const char *why)
{
    pc_repair_flag(app, "payout", payout_no, why);
}

#define UNAPPLIED "has a final answer from its channel that could not be applied"

/* The last scheduled query came too early to apply the channel's answer: one
 * more query once the wait is over, rather than flagging for ops a payout the
 * channel has answered. */
static void requery_after(pc_app_t *app, const char *payout_no, int64_t wait_ms)
{
    char ms[24];
    snprintf(ms, sizeof ms, "%lld", (long long)wait_ms);
    const char *p[] = {payout_no, ms};
    pc_db_query(app->db,
                "UPDATE payouts SET next_query_at = now() + $2::bigint * interval '1 millisecond' "
                "WHERE payout_no = $1 AND status = 'PROCESSING'",
                2, p, ignore_cb, NULL);
}

static void job_applied(void *data, apply_outcome_t outcome)
{
    job_t *j = data;
    if (outcome == APPLY_FAILED && j->last)
        flag_for_ops(j->po->app, j->payout_no, UNAPPLIED);
    else if (outcome == APPLY_FAILED)
        pc_log_warn("payout.query_apply_failed", "%s: applied at the next query", j->payout_no);
    j->po->in_flight--;
    free(j);
}

static void queried_cb(void *data, const pc_ch_result_t *res)
{
    job_t *j = data;
    pc_payouts_t *po = j->po;
    pc_ch_result_t r = *res;
    int final = r.status == PC_CH_SUCCESS || r.status == PC_CH_FAILED || r.status == PC_CH_RETURNED;
    /* A failure closes the payout only once paycore's own request has
     * certainly ended, and "no record" only after not_found_after_s. */
    int64_t wait_ms = pc_channel_failure_wait_ms(
        po->app->channel_client, j->channel_id, j->age_ms, res,
        pc_config_int(po->app->cfg, "payout.not_found_after_s") * 1000, j->acknowledged);
    if (wait_ms != 0)
        final = 0;
    if (r.status == PC_CH_FAILED && !strcmp(r.code, "NOT_FOUND")) {
        /* The channel never took it. */
        snprintf(r.code, sizeof r.code, "NOT_SENT");
        snprintf(r.message, sizeof r.message, "the channel has no record of this payout");
    }
    if (r.status == PC_CH_PROCESSING)
        note_taken(po->app, j->payout_no, j->channel_id, r.channel_txn_id, NULL);
    if (final && apply_result(po->app, j->payout_no, NULL, &r, 0, job_applied, j) == 0)
        return;
    if (final && j->last)
        flag_for_ops(po->app, j->payout_no, UNAPPLIED);
    else if (wait_ms == PC_CH_FORGOTTEN)
        flag_for_ops(po->app, j->payout_no,
                     "was taken by its channel, which now has no record of it");
    else if (!final && j->last && wait_ms > 0)
        requery_after(po->app, j->payout_no, wait_ms);
    else if (!final && j->last)
        flag_for_ops(po->app, j->payout_no, "still has no final answer");
    po->in_flight--;
    free(j);
}

static void claimed_cb(void *data, int status, pc_db_res_t *res)
{
    pc_payouts_t *po = data;
    po->claiming = 0;
    if (status) {
        pc_repair_claim_failed(&po->claim_warned_s, "payout.claim_failed",
                               "claiming payouts to send or query", status);
        return;
    }
    for (int i = 0; i < pc_db_rows(res); i++) {
        const char *no = pc_db_val(res, i, "payout_no");
        if (!strcmp(pc_db_val(res, i, "status"), "ACCEPTED")) {
            send_payout(po->app, no);
            continue;
        }
        job_t *j = calloc(1, sizeof *j);
        if (!j)
            continue;
        j->po = po;
        snprintf(j->payout_no, sizeof j->payout_no, "%s", no);
        j->age_ms = pc_db_val_i64(res, i, "age_ms");
        snprintf(j->channel_id, sizeof j->channel_id, "%s", pc_db_val(res, i, "channel_id"));
        j->last = pc_db_val(res, i, "last")[0] == 't';
        j->acknowledged = pc_db_val(res, i, "acknowledged")[0] == 't';
        po->in_flight++;
        if (pc_channel_query_payout(po->app->channel_client, pc_db_val(res, i, "channel_id"),
                                    j->payout_no, queried_cb, j) < 0) {
            if (j->last)
                flag_for_ops(po->app, j->payout_no, "could not be queried");
            po->in_flight--;
            free(j);
        }
    }
}

static void tick(uv_timer_t *t)
{
    pc_payouts_t *po = t->data;
    if (po->claiming || po->in_flight > 200 || po->app->shutting_down)
        return;
    po->claiming = 1;
    const char *p[] = {po->schedule};
    /* Claim by moving each payout's next time forward: another node's claim
     * skips these rows (SKIP LOCKED) and sees the new time after. Past the
     * schedule's end it still sets one at the last pace: the lease that
     * brings the query back if this node dies before the answer. */
    if (pc_db_query(po->app->db,
                    "WITH due AS (SELECT payout_no FROM payouts WHERE status IN ('ACCEPTED', "
                    "'PROCESSING') AND hold_reason IS NULL AND next_query_at <= now() ORDER BY "
                    "next_query_at LIMIT 50 FOR UPDATE SKIP LOCKED) UPDATE payouts p SET "
                    "query_attempts = p.query_attempts + 1, next_query_at = now() + "
                    "($1::int[])[least(p.query_attempts + 1, array_length($1::int[], 1))] * "
                    "interval '1 millisecond' FROM due "
                    "WHERE p.payout_no = due.payout_no RETURNING p.payout_no, p.status, "
                    "p.channel_id, floor(extract(epoch FROM now() - coalesce(p.sent_at, "
                    "p.created_at)) * 1000)::bigint AS age_ms, (p.query_attempts > "
                    "array_length($1::int[], 1)) AS last, (p.channel_txn_id IS NOT NULL OR "
                    "p.acknowledged_at IS NOT NULL) AS acknowledged",
                    1, p, claimed_cb, po) < 0)
        po->claiming = 0;
}

/* ---------- ops ---------- */

/* GET /admin/payouts[?status=&merchant_id=&held=true&limit=&after=]: newest
 * first, a page of limit (1-1000, 500 when absent) at a time; when a page is
 * full, next_after names its last payout and ?after= continues after it (the
 * list stopped at 500 with no way on). */
static void admin_list(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    const char *status = pc_http_req_query_param(req, "status");
    const char *merchant = pc_http_req_query_param(req, "merchant_id");
    const char *held = pc_http_req_query_param(req, "held");
    char lim[8];
    const char *limit, *after;
    if (pc_page_params(req, 500, lim, &limit, &after, "after: a payout_no (next_after)") < 0)
        return;
    const char *p[] = {status && status[0] ? status : NULL,
                       merchant && merchant[0] ? merchant : NULL,
                       held && !strcmp(held, "true") ? "t" : "f", after, limit};
    if (pc_db_query(app->db,
                    "SELECT json_build_object('payouts', coalesce(json_agg(payout_json(p) ORDER "
                    "BY p.created_at DESC, p.payout_no DESC), '[]'::json), 'next_after', CASE "
                    "WHEN count(*) = $5::int THEN (array_agg(p.payout_no ORDER BY p.created_at, "
                    "p.payout_no))[1] END)::text FROM (SELECT * FROM payouts WHERE ($1::text IS "
                    "NULL OR status = $1) AND ($2::text IS NULL OR merchant_id = $2) AND (NOT "
                    "$3::boolean OR (hold_reason IS NOT NULL AND status = 'ACCEPTED')) AND "
                    "($4::text IS NULL OR (created_at, payout_no) < (SELECT created_at, payout_no "
                    "FROM payouts WHERE payout_no = $4)) ORDER BY created_at DESC, payout_no DESC "
                    "LIMIT $5::int) p",
                    5, p, json_text_cb, req) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

typedef struct {
    pc_http_req_t *req;
    pc_app_t *app;
    pc_db_tx_t *tx;
    int reject;
    char no[40], reason[257];
    char *json;
} ops_t;

static void ops_done(ops_t *o)
{
    free(o->json);
    free(o);
}

static void ops_fail(ops_t *o, int status)
{
    if (o->tx)
        pc_db_tx_rollback(o->tx);
    o->tx = NULL;
    pc_respond_db_error(o->req, status ? status : PC_EIO);
    ops_done(o);
}

static void ops_commit_cb(void *data, int status)
{
    ops_t *o = data;
    o->tx = NULL;
    if (status) {
        ops_fail(o, status);
        return;
    }
    pc_log_info("payout.ops", "%s %s by ops%s%s", o->no, o->reject ? "rejected" : "released",
                o->reason[0] ? ": " : "", o->reason);
    pc_respond_json_text(o->req, 200, o->json);
    if (!o->reject)
        send_payout(o->app, o->no);
    else
        count("FAILED");
    ops_done(o);
}

static void ops_why_cb(void *data, int status, pc_db_res_t *res)
{
    ops_t *o = data;
    if (status) {
        ops_fail(o, status);
        return;
    }
    pc_db_tx_rollback(o->tx);
    o->tx = NULL;
    if (pc_db_rows(res) == 0) {
        pc_http_respond_error(o->req, PC_API_NOT_FOUND, NULL, "no such payout");
    } else {
        char msg[96];
        snprintf(msg, sizeof msg, "the payout is %s%s", pc_db_get(res, 0, 0),
                 pc_db_get(res, 0, 1)[0] == 't' ? " and not held" : "");
        pc_http_respond_error(o->req, PC_API_INVALID_STATE, NULL, msg);
    }
    ops_done(o);
}

/* Records who did what to the payout, and commits. */
static void ops_record(ops_t *o)
{
    const char *p[] = {o->no, pc_operator_of(o->req), o->reject ? "REJECT" : "RELEASE",
                       o->reason[0] ? o->reason : NULL};
    if (pc_db_tx_query(o->tx,
                       "INSERT INTO payout_actions (payout_no, who, action, why) VALUES ($1, $2, "
                       "$3, $4)",
                       4, p, ignore_cb, NULL) < 0) {
        ops_fail(o, PC_EUNAVAIL);
        return;
    }
    pc_db_tx_commit(o->tx, ops_commit_cb, o);
}

static void ops_debt_cb(void *data, int status, pc_db_res_t *res)
{
    ops_t *o = data;
    if (status) {
        ops_fail(o, status);
        return;
    }
    int64_t available = pc_db_get_i64(res, 0, 0), owed = pc_db_get_i64(res, 0, 1);
    char msg[200];
    if (owed > available || owed_elsewhere(res, msg, sizeof msg)) {
        pc_db_tx_rollback(o->tx);
        o->tx = NULL;
        if (owed > available)
            snprintf(msg, sizeof msg,
                     "the merchant owes %lld, more than its available %lld: reject the payout, "
                     "or release it once the debt is recovered",
                     (long long)owed, (long long)available);
        pc_http_respond_error(o->req, PC_API_INVALID_STATE, NULL, msg);
        ops_done(o);
        return;
    }
    ops_record(o);
}

static void ops_updated_cb(void *data, int status, pc_db_res_t *res)
{
    ops_t *o = data;
    if (status) {
        ops_fail(o, status);
        return;
    }
    if (pc_db_rows(res) == 0) {
        const char *p[] = {o->no};
        if (pc_db_tx_query(o->tx,
                           "SELECT status, hold_reason IS NULL FROM payouts WHERE payout_no = $1",
                           1, p, ops_why_cb, o) < 0)
            ops_fail(o, PC_EUNAVAIL);
        return;
    }
    o->json = strdup(pc_db_val(res, 0, "json"));
    const char *m = pc_db_val(res, 0, "merchant_id");
    if (!o->reject) {
        /* A debt that arose while the payout was held (a chargeback that
         * found too little) comes first: the money kept in escrow for this
         * payout may be all there is to recover it from. The balances are
         * locked as acceptance locks them. */
        int rc = lock_free_balance(o->tx, m, pc_db_val(res, 0, "currency"), ops_debt_cb, o);
        if (rc)
            ops_fail(o, rc);
        return;
    }
    int rc = post_move(o->tx, "PAYOUT_RELEASE", o->no, PC_LEDGER_PLATFORM_ESCROW, NULL,
                       PC_LEDGER_MERCHANT_AVAILABLE, m, pc_db_val(res, 0, "currency"),
                       pc_db_val_i64(res, 0, "amount"));
    if (!rc)
        rc = outbox_json(o->tx, m, "payout.failed", pc_db_val(res, 0, "notify_url"), o->json);
    if (rc) {
        ops_fail(o, rc);
        return;
    }
    ops_record(o);
}

static void ops_begin_cb(void *data, int status, pc_db_tx_t *tx)
{
    ops_t *o = data;
    if (status) {
        ops_fail(o, status);
        return;
    }
    o->tx = tx;
    const char *p[] = {o->no, o->reason[0] ? o->reason : NULL};
    const char *sql =
        o->reject
            ? "UPDATE payouts p SET status = 'FAILED', failure_code = 'RISK_REJECTED', "
              "failure_message = coalesce($2, 'rejected by ops after review'), finished_at = "
              "now(), next_query_at = NULL, updated_at = now() WHERE payout_no = $1 AND status = "
              "'ACCEPTED' AND hold_reason IS NOT NULL RETURNING payout_json(p)::text AS json, "
              "merchant_id, currency, amount, coalesce(notify_url, '') AS notify_url"
            : "UPDATE payouts p SET hold_reason = NULL, next_query_at = now(), updated_at = now() "
              "WHERE payout_no = $1 AND status = 'ACCEPTED' AND hold_reason IS NOT NULL "
              "RETURNING payout_json(p)::text AS json, merchant_id, currency";
    if (pc_db_tx_query(tx, sql, o->reject ? 2 : 1, p, ops_updated_cb, o) < 0)
        ops_fail(o, PC_EUNAVAIL);
}

static void ops_action(pc_http_req_t *req, pc_app_t *app, int reject)
{
    size_t len = 0;
    pc_http_req_body(req, &len);
    json_t *b = len ? pc_http_req_json(req) : NULL;
    if (len && !b) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, NULL, "body must be a JSON object");
        return;
    }
    /* "why", as every other admin action takes it ("reason", this one's
     * first name, still taken). Before, a "why" was dropped in silence, and
     * a reject (the money back to the merchant) kept no reason. */
    const char *field = json_object_get(b, "why") ? "why" : "reason";
    json_t *given = json_object_get(b, field);
    const char *reason = json_string_value(given);
    if ((given && !reason) || (reason && strlen(reason) > 256)) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, field, "text of at most 256 characters");
        return;
    }
    ops_t *o = calloc(1, sizeof *o);
    o->req = req;
    o->app = app;
    o->reject = reject;
    snprintf(o->no, sizeof o->no, "%s", pc_http_req_param(req, "payout_no"));
    snprintf(o->reason, sizeof o->reason, "%s", reason ? reason : "");
    if (pc_db_begin(app->db, NULL, ops_begin_cb, o) < 0) {
        free(o);
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
    }
}

static void release_payout(pc_http_req_t *req, void *data)
{
    ops_action(req, data, 0);
}

static void reject_payout(pc_http_req_t *req, void *data)
{
    ops_action(req, data, 1);
}

/* ---------- lifecycle ---------- */

pc_payouts_t *pc_payouts_new(pc_app_t *app)
{
    pc_payouts_t *po = calloc(1, sizeof *po);
    if (!po)
        return NULL;
    po->app = app;
    int64_t ms[PC_CONFIG_MAX_DELAYS];
    int n = pc_config_ms_list(app->cfg, "payout.query_schedule_ms", ms, PC_CONFIG_MAX_DELAYS);
    if (n <= 0) {
        free(po);
        return NULL;
    }
    size_t off = (size_t)snprintf(po->schedule, sizeof po->schedule, "{");
    for (int i = 0; i < n; i++)
        off += (size_t)snprintf(po->schedule + off, sizeof po->schedule - off, "%s%lld",
                                i ? "," : "", (long long)ms[i]);
    snprintf(po->schedule + off, sizeof po->schedule - off, "}");
    uv_timer_init(app->loop, &po->timer);
    po->timer.data = po;
    pc_metrics_describe("pc_payouts_total", PC_METRIC_COUNTER,
                        "payouts accepted, rejected by risk, and finished, by status");
    app->on_payout_callback = payout_callback;
    pc_router_add(app->api, "POST", "/v1/payouts", create_payout, app);
    pc_router_add(app->api, "GET", "/v1/payouts", find_payout, app);
    pc_router_add(app->api, "GET", "/v1/payouts/{payout_no}", get_payout, app);
    pc_router_add(app->admin, "GET", "/admin/payouts", admin_list, app);
    pc_router_add(app->admin, "POST", "/admin/payouts/{payout_no}/release", release_payout, app);
    pc_router_add(app->admin, "POST", "/admin/payouts/{payout_no}/reject", reject_payout, app);
    return po;
}

void pc_payouts_start(pc_payouts_t *po)
{
    uint64_t ms = (uint64_t)pc_config_int(po->app->cfg, "payout.poll_ms");
    uv_timer_start(&po->timer, tick, ms, ms);
}

void pc_payouts_stop(pc_payouts_t *po)
{
    uv_timer_stop(&po->timer);
    uv_close((uv_handle_t *)&po->timer, NULL);
}

void pc_payouts_free(pc_payouts_t *po)
{
    free(po);
}
