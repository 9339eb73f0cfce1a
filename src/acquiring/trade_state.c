#include "acquiring/trade_state.h"
#include "monitor/ledger_daily.h"
#include "acquiring/trade.h"
#include "api/app.h"
#include "auth/auth.h"
#include "auth/sign.h"
#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"
#include "notify/outbox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SPLITS 20
#define MAX_SOURCES 8

/* ---------- shared: destination legs of a trade's money ---------- */

typedef struct {
    pc_ledger_leg_t legs[MAX_SPLITS + MAX_SOURCES + 2];
    char ids[MAX_SPLITS + MAX_SOURCES + 2][PC_LEDGER_ID_MAX + 1];
    size_t n;
} legs_t;

static int add_leg(legs_t *l, pc_ledger_type_t type, const char *owner, const char *cur,
                   int64_t amount)
{
    if (amount == 0)
        return 0;
    if (l->n >= sizeof l->legs / sizeof l->legs[0])
        return PC_ELIMIT;
    int rc = pc_ledger_account_id(l->ids[l->n], sizeof l->ids[l->n], type, owner, cur);
    if (rc)
        return rc;
    l->legs[l->n].account_id = l->ids[l->n];
    l->legs[l->n].amount = amount;
    l->legs[l->n].currency = cur;
    l->n++;
    return 0;
}

/* Credits amount to the merchant's pending money, minus what the splits give
 * to their receivers. splits is a JSON array of {account, amount}. */
static int add_split_legs(legs_t *l, const char *merchant_id, const char *cur, int64_t amount,
                          json_t *splits)
{
    int64_t rest = amount;
    size_t i;
    json_t *s;
    json_array_foreach(splits, i, s)
    {
        int64_t a = json_integer_value(json_object_get(s, "amount"));
        const char *acct = json_string_value(json_object_get(s, "account"));
        if (!acct || a <= 0 || a > rest)
            return PC_EINVAL;
        int rc = add_leg(l, PC_LEDGER_MERCHANT_PENDING, acct, cur, a);
        if (rc)
            return rc;
        rest -= a;
    }
    return add_leg(l, PC_LEDGER_MERCHANT_PENDING, merchant_id, cur, rest);
}

static void post_logged_cb(void *data, int status, int64_t txn_id)
{
    (void)txn_id;
    if (status)
        pc_log_warn("trade.ledger_post_failed", "%s: %s", (const char *)data,
                    pc_ledger_strerror(status));
}

static const char *notify_url_of(pc_db_res_t *res, int row)
{
    int c = pc_db_col(res, "notify_url");
    return (c < 0 || pc_db_isnull(res, row, c)) ? NULL : pc_db_get(res, row, c);
}

int pc_trade_outbox_row(pc_db_tx_t *tx, pc_db_res_t *res, int row, const char *event,
                        const char *fallback_url)
{
    pc_trade_t t;
    pc_trade_from_row(&t, res, row);
    const char *url = notify_url_of(res, row);
    json_t *obj = pc_trade_json(&t);
    int rc = obj ? pc_outbox_add(tx, t.merchant_id, event, url && url[0] ? url : fallback_url, obj)
                 : PC_ENOMEM;
    json_decref(obj);
    return rc < 0 ? rc : 0;
}

/* ---------- trade paid ---------- */

typedef struct {
    char trade_no[40], payment_no[64], currency[4];
    int64_t amount;
    pc_ledger_leg_t sources[MAX_SOURCES];
    char src_ids[MAX_SOURCES][PC_LEDGER_ID_MAX + 1];
    size_t nsources;
    pc_db_tx_t *tx;
    pc_trade_paid_cb cb;
    void *data;
    pc_ledger_post_cb post_cb;
    void *post_data;
} paid_t;

static void paid_update_cb(void *data, int status, pc_db_res_t *res)
{
    paid_t *p = data;
    if (status || pc_db_rows(res) == 0) {
        p->cb(p->data, status ? status : PC_ECONFLICT, NULL);
        free(p);
        return;
    }
    pc_trade_t t;
    pc_trade_from_row(&t, res, 0);
    legs_t l = {.n = 0};
    for (size_t i = 0; i < p->nsources; i++) {
        l.legs[l.n] = p->sources[i];
        snprintf(l.ids[l.n], sizeof l.ids[l.n], "%s", p->src_ids[i]);
        l.legs[l.n].account_id = l.ids[l.n];
        l.legs[l.n].currency = p->currency;
        l.n++;
    }
    int rc = 0;
    const char *event = "trade.succeeded";
    if (!strcmp(t.product, "GUARANTEE")) {
        rc = add_leg(&l, PC_LEDGER_PLATFORM_ESCROW, NULL, t.currency, t.amount);
        event = "trade.paid";
    } else if (!strcmp(t.product, "RECHARGE")) {
        /* A named account type credits the buyer's wallet of that type at
         * this merchant (owner <buyer_id>@<merchant_id>.<type>), spendable
         * there only; else the plain wallet. */
        int tc = pc_db_col(res, "account_type");
        char owner[PC_LEDGER_OWNER_MAX + 2];
        if (tc >= 0 && !pc_db_isnull(res, 0, tc) &&
            snprintf(owner, sizeof owner, "%s@%s.%s", t.buyer_id, t.merchant_id,
                     pc_db_get(res, 0, tc)) > PC_LEDGER_OWNER_MAX)
            rc = PC_EINVAL;
        else
            rc = add_leg(&l, PC_LEDGER_BUYER_WALLET,
                         tc >= 0 && !pc_db_isnull(res, 0, tc) ? owner : t.buyer_id, t.currency,
                         t.amount);
    } else {
        json_t *splits = json_loads(t.splits, 0, NULL);
        rc = add_split_legs(&l, t.merchant_id, t.currency, t.amount, splits);
        json_decref(splits);
    }
    if (rc == 0) {
        pc_ledger_txn_t txn = {"TRADE_PAY", "payment", p->payment_no, t.trade_no, l.legs, l.n};
        rc = pc_ledger_post(p->tx, &txn, p->post_cb, p->post_data);
    }
    if (rc == 0) {
        json_t *obj = pc_trade_json(&t);
        rc = pc_outbox_add(p->tx, t.merchant_id, event, notify_url_of(res, 0), obj);
        json_decref(obj);
    }
    if (rc) {
        pc_log_error("trade.mark_paid", "trade %s payment %s: %s", p->trade_no, p->payment_no,
                     pc_ledger_strerror(rc));
        p->cb(p->data, rc, NULL);
    } else {
        p->cb(p->data, 0, t.status);
    }
    free(p);
}

int pc_trade_mark_paid(pc_db_tx_t *tx, const pc_trade_payment_t *pay, pc_trade_paid_cb cb,
                       void *data)
{
    if (pay->nsources == 0 || pay->nsources > MAX_SOURCES || pay->amount <= 0)
        return PC_EINVAL;
    paid_t *p = calloc(1, sizeof *p);
    if (!p)
        return PC_ENOMEM;
    snprintf(p->trade_no, sizeof p->trade_no, "%s", pay->trade_no);
    snprintf(p->payment_no, sizeof p->payment_no, "%s", pay->payment_no);
    snprintf(p->currency, sizeof p->currency, "%s", pay->currency);
    p->amount = pay->amount;
    int64_t sum = 0;
    for (size_t i = 0; i < pay->nsources; i++) {
        snprintf(p->src_ids[i], sizeof p->src_ids[i], "%s", pay->sources[i].account_id);
        p->sources[i] = pay->sources[i];
        p->sources[i].account_id = p->src_ids[i];
        sum += pay->sources[i].amount;
    }
    p->nsources = pay->nsources;
    if (sum != -pay->amount) {
        free(p);
        return PC_EINVAL;
    }
    p->tx = tx;
    p->cb = cb;
    p->data = data;
    p->post_cb = pay->post_cb ? pay->post_cb : post_logged_cb;
    p->post_data = pay->post_cb ? pay->post_data : (void *)"TRADE_PAY";
    char amount[24];
    snprintf(amount, sizeof amount, "%lld", (long long)pay->amount);
    const char *params[] = {p->trade_no, p->payment_no, amount, p->currency};
    int rc = pc_db_tx_query(
        tx,
        "UPDATE trades SET status = CASE product WHEN 'GUARANTEE' THEN 'PAY_SUCCESS' ELSE "
        "'TRADE_SUCCESS' END, paid_amount = amount, payment_no = $2, paid_at = now(), "
        "updated_at = now() WHERE trade_no = $1 AND status = 'WAIT_BUYER_PAY' AND amount = "
        "$3::bigint AND currency = $4 RETURNING " PC_TRADE_COLUMNS ", notify_url, account_type",
        4, params, paid_update_cb, p);
    if (rc < 0)
        free(p);
    return rc;
}

/* ---------- POST /v1/trades/{trade_no}/close ---------- */

typedef struct {
    pc_http_req_t *req;
    pc_app_t *app;
    pc_db_tx_t *tx;
    char *body;
    int status;
    int found;
    char trade_status[20];
    char closed_trade[40]; /* a close committed: its waiting attempts are queried now */
} op_t;

static void op_free(void *arg)
{
    op_t *o = arg;
    free(o->body);
}

static op_t *op_new(pc_http_req_t *req, pc_app_t *app)
{
    op_t *o = pc_http_req_alloc(req, sizeof *o);
    o->req = req;
    o->app = app;
    pc_http_req_on_done(req, op_free, o);
    return o;
}

static void op_commit_cb(void *data, int status)
{
    op_t *o = data;
    if (status) {
        pc_http_respond_error(o->req, PC_API_UNAVAILABLE, NULL,
                              "not recorded; retry with the same Idempotency-Key");
        return;
    }
    if (o->closed_trade[0]) {
        /* An attempt still waiting at its channel (a pay code, a VA
         * number) is closed there by the status queries (src/repair): the
         * first of them now, its balance and coupon given back at once.
         * After the commit, on the payment rows alone: in the close's
         * transaction, after the trade's lock, it deadlocked with a capture
         * (payment, then trade). If it fails, the query schedule does it. */
        const char *p[] = {o->closed_trade};
        pc_db_query(o->app->db,
                    "UPDATE payments SET next_query_at = now() WHERE trade_no = $1 AND status IN "
                    "('PROCESSING', 'UNKNOWN')",
                    1, p, NULL, NULL);
    }
    pc_http_respond(o->req, o->status, "application/json", o->body, strlen(o->body));
}

/* Finishes an operation: store the answer with the change and commit. */
static void op_finish(op_t *o, int status, json_t *answer)
{
    o->status = status;
    o->body = json_dumps(answer, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(answer);
    pc_idem_store_in_tx(pc_auth_idem(o->req), o->tx, status, o->body);
    pc_db_tx_commit(o->tx, op_commit_cb, o);
}

static void op_fail(op_t *o, pc_api_err_t err, const char *field, const char *msg)
{
    if (o->tx)
        pc_db_tx_rollback(o->tx);
    o->tx = NULL;
    pc_http_respond_error(o->req, err, field, msg);
}

static void state_of_cb(void *data, int status, pc_db_res_t *res)
{
    op_t *o = data;
    if (status) {
        op_fail(o, PC_API_UNAVAILABLE, NULL, "database unavailable");
        return;
    }
    if (pc_db_rows(res) == 0) {
        op_fail(o, PC_API_NOT_FOUND, NULL, "no such trade");
        return;
    }
    char msg[128];
    snprintf(msg, sizeof msg, "the trade is %s", pc_db_get(res, 0, 0));
    op_fail(o, PC_API_INVALID_STATE, NULL, msg);
}

/* Explains why a conditional update matched nothing: missing or wrong state. */
static void explain_no_match(op_t *o)
{
    const char *p[] = {pc_http_req_param(o->req, "trade_no"), pc_auth_merchant(o->req)->id};
    if (pc_db_tx_query(o->tx, "SELECT status FROM trades WHERE trade_no = $1 AND merchant_id = $2",
                       2, p, state_of_cb, o) < 0)
        op_fail(o, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

static void close_cb(void *data, int status, pc_db_res_t *res)
{
    op_t *o = data;
    if (status) {
        op_fail(o, PC_API_UNAVAILABLE, NULL, "database unavailable");
        return;
    }
    if (pc_db_rows(res) == 0) {
        explain_no_match(o);
        return;
    }
    pc_trade_t t;
    pc_trade_from_row(&t, res, 0);
    json_t *obj = pc_trade_json(&t);
    snprintf(o->closed_trade, sizeof o->closed_trade, "%s", t.trade_no);
    if (pc_outbox_add(o->tx, t.merchant_id, "trade.closed", notify_url_of(res, 0), obj) < 0) {
        json_decref(obj);
        op_fail(o, PC_API_UNAVAILABLE, NULL, "database unavailable");
        return;
    }
    op_finish(o, 200, obj);
}

static void close_begin_cb(void *data, int status, pc_db_tx_t *tx)
{
    op_t *o = data;
    if (status) {
        op_fail(o, PC_API_UNAVAILABLE, NULL, "database unavailable");
        return;
    }
    o->tx = tx;
    const char *p[] = {pc_http_req_param(o->req, "trade_no"), pc_auth_merchant(o->req)->id};
    if (pc_db_tx_query(tx,
                       "UPDATE trades SET status = 'TRADE_CLOSED', close_reason = 'MERCHANT', "
                       "closed_at = now(), updated_at = now() WHERE trade_no = $1 AND "
                       "merchant_id = $2 AND status = 'WAIT_BUYER_PAY' RETURNING " PC_TRADE_COLUMNS
                       ", notify_url",
                       2, p, close_cb, o) < 0)
        op_fail(o, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

static void close_trade(pc_http_req_t *req, void *data)
{
    op_t *o = op_new(req, data);
    if (pc_db_begin(o->app->db, NULL, close_begin_cb, o) < 0)
        op_fail(o, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

/* ---------- POST /v1/trades/{trade_no}/settle ---------- */

typedef struct {
    op_t op;
    long long amount; /* 0: what is left */
    json_t *splits;   /* normalised, owned */
    char *splits_text;
    int split_refused;
} settle_t;

static void settle_free(void *arg)
{
    settle_t *s = arg;
    json_decref(s->splits);
    free(s->splits_text);
}

static void settle_split_checked_cb(void *data, int status, pc_db_res_t *res)
{
    settle_t *s = data;
    s->split_refused = pc_trade_split_refused(status, res);
}

static void settle_locked_cb(void *data, int status, pc_db_res_t *res)
{
    settle_t *s = data;
    op_t *o = &s->op;
    if (s->split_refused) {
        op_fail(o, PC_API_INVALID_REQUEST, "splits",
                "each split account must be an active merchant");
        return;
    }
    if (status) {
        op_fail(o, PC_API_UNAVAILABLE, NULL, "database unavailable");
        return;
    }
    if (pc_db_rows(res) == 0) {
        op_fail(o, PC_API_NOT_FOUND, NULL, "no such trade");
        return;
    }
    pc_trade_t t;
    pc_trade_from_row(&t, res, 0);
    if (strcmp(t.product, "GUARANTEE") != 0) {
        op_fail(o, PC_API_INVALID_STATE, NULL, "only GUARANTEE trades are settled");
        return;
    }
    if (strcmp(t.status, "PAY_SUCCESS") != 0) {
        char msg[96];
        snprintf(msg, sizeof msg, "the trade is %s", t.status);
        op_fail(o, PC_API_INVALID_STATE, NULL, msg);
        return;
    }
    /* What is left is what escrow still holds for the trade, free
     * (trade_escrow_free, migration 0101): refunds take part of their
     * amount from split receivers already settled, so the refunded amount
     * is more than escrow gave (settling paid minus settled minus refunded
     * left that difference in escrow for good); what chargebacks hold of
     * escrow (open cases, and what was paid to a cardholder from it) is not
     * the merchant's to settle. */
    int64_t disputed = pc_db_val_i64(res, 0, "escrow_disputed");
    int64_t left = pc_db_val_i64(res, 0, "escrow_free");
    int64_t amount = s->amount ? s->amount : left;
    if (amount <= 0 || amount > left) {
        char msg[160];
        if (disputed > 0)
            snprintf(msg, sizeof msg,
                     "amount exceeds what is left to settle (%lld; %lld more is held by "
                     "chargebacks)",
                     (long long)(left > 0 ? left : 0), (long long)disputed);
        op_fail(o, PC_API_AMOUNT_EXCEEDS_REFUNDABLE, "amount",
                disputed > 0 ? msg : "amount exceeds what is left to settle");
        return;
    }
    /* A refund in flight that takes its money from escrow counts as
     * refunded, but if it fails its amount is to settle again. Settling all
     * the rest now would end the trade (TRADE_SUCCESS, where no settle is
     * taken) and leave that money in escrow for good. */
    if (amount == left && pc_db_val_i64(res, 0, "escrow_refunding") > 0) {
        op_fail(o, PC_API_INVALID_STATE, NULL,
                "a refund of this trade is in progress: settle the rest when it has finished");
        return;
    }
    /* Refunds take their shares back from every receiver the trade's money
     * went to, at most MAX_SPLITS of them: a trade settled to more (20 in
     * one settle, another in the next) could never be refunded. */
    if (pc_db_val_i64(res, 0, "receivers") > MAX_SPLITS) {
        op_fail(o, PC_API_INVALID_REQUEST, "splits",
                "a trade's money goes to at most 20 split receivers over all its settles; "
                "these splits would make more");
        return;
    }
    int64_t split_total = 0;
    size_t i;
    json_t *sp;
    json_array_foreach(s->splits, i, sp) split_total +=
        json_integer_value(json_object_get(sp, "amount"));
    if (split_total > amount) {
        op_fail(o, PC_API_SPLIT_EXCEEDS_AMOUNT, "splits", "splits add up to more than the amount");
        return;
    }
    char settle_no[48], hex[17], amt[24];
    pc_random_hex(hex, sizeof hex, 8);
    snprintf(settle_no, sizeof settle_no, "S%s", hex);
    snprintf(amt, sizeof amt, "%lld", (long long)amount);
    char *splits_text = json_dumps(s->splits, JSON_COMPACT);
    /* All of the rest settled ends the trade, unless a chargeback still
     * holds part of escrow: lost by the cardholder, it is the merchant's to
     * settle then (a trade ended would keep it in escrow for good). */
    int full = amount == left && pc_db_val(res, 0, "dispute_open")[0] != 't';
    const char *p1[] = {t.trade_no, amt, full ? "TRADE_SUCCESS" : "PAY_SUCCESS"};
    const char *p2[] = {settle_no, t.trade_no, t.merchant_id, amt, splits_text};
    legs_t l = {.n = 0};
    int rc = add_leg(&l, PC_LEDGER_PLATFORM_ESCROW, NULL, t.currency, -amount);
    if (!rc)
        rc = add_split_legs(&l, t.merchant_id, t.currency, amount, s->splits);
    if (!rc)
        rc = pc_db_tx_query(o->tx,
                            "UPDATE trades SET settled_amount = settled_amount + $2::bigint, "
                            "status = $3, updated_at = now() WHERE trade_no = $1 AND status = "
                            "'PAY_SUCCESS'",
                            3, p1, NULL, NULL);
    if (!rc)
        rc = pc_db_tx_query(o->tx,
                            "INSERT INTO trade_settles (settle_no, trade_no, merchant_id, amount, "
                            "splits) VALUES ($1, $2, $3, $4, $5::jsonb)",
                            5, p2, NULL, NULL);
    if (!rc) {
        pc_ledger_txn_t txn = {"TRADE_SETTLE", "settle", settle_no, t.trade_no, l.legs, l.n};
        rc = pc_ledger_post(o->tx, &txn, post_logged_cb, "TRADE_SETTLE");
    }
    if (!rc && full) {
        t.settled_amount += amount;
        snprintf(t.status, sizeof t.status, "TRADE_SUCCESS");
        json_t *obj = pc_trade_json(&t);
        rc = pc_outbox_add(o->tx, t.merchant_id, "trade.succeeded", notify_url_of(res, 0), obj);
        json_decref(obj);
    }
    free(splits_text);
    if (rc) {
        op_fail(o, PC_API_UNAVAILABLE, NULL, "could not settle");
        return;
    }
    json_t *answer =
        json_pack("{s:s,s:s,s:I,s:O,s:s}", "settle_no", settle_no, "trade_no", t.trade_no, "amount",
                  (json_int_t)amount, "splits", s->splits, "status", "SUCCESS");
    op_finish(o, 200, answer);
}

static void settle_begin_cb(void *data, int status, pc_db_tx_t *tx)
{
    settle_t *s = data;
    op_t *o = &s->op;
    if (status) {
        op_fail(o, PC_API_UNAVAILABLE, NULL, "database unavailable");
        return;
    }
    o->tx = tx;
    const char *p[] = {pc_http_req_param(o->req, "trade_no"), pc_auth_merchant(o->req)->id, NULL};
    if (json_array_size(s->splits) > 0 &&
        (!(s->splits_text = json_dumps(s->splits, JSON_COMPACT)) ||
         pc_trade_require_split_accounts(tx, s->splits_text, settle_split_checked_cb, s) < 0)) {
        op_fail(o, PC_API_UNAVAILABLE, NULL, "database unavailable");
        return;
    }
    p[2] = s->splits_text;
    /* The trade is read, with the refunds in flight, by a statement that
     * starts after its lock was granted, so that it sees a refund accepted
     * by whoever held the lock before (the locking statement's own
     * snapshot predates the wait). */
    if (pc_db_tx_query(tx,
                       "SELECT 1 FROM trades WHERE trade_no = $1 AND merchant_id = $2 FOR UPDATE",
                       2, p, NULL, NULL) < 0 ||
        pc_db_tx_query(
            tx,
            "SELECT " PC_TRADE_COLUMNS ", notify_url, (SELECT coalesce(sum(r.from_escrow), "
            "0) FROM refunds r WHERE r.trade_no = trades.trade_no AND r.type = 'NORMAL' "
            "AND r.status NOT IN ('SUCCESS', 'FAILED', 'TERMINATED'))::bigint AS "
            "escrow_refunding, trade_escrow_free(trade_no) AS escrow_free, "
            "chargeback_unsettled_held(trade_no) AS escrow_disputed, "
            "chargeback_unsettled_open(trade_no)::text AS dispute_open, (SELECT count(*) FROM "
            "(SELECT account FROM trade_split_received(trade_no) UNION SELECT "
            "x->>'account' FROM jsonb_array_elements(coalesce($3::jsonb, '[]')) x) "
            "u) AS receivers FROM trades WHERE trade_no = $1 AND merchant_id = $2",
            3, p, settle_locked_cb, s) < 0)
        op_fail(o, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

static void settle_trade(pc_http_req_t *req, void *data)
{
    /* No body at all is "settle what is left" (api.md: amount defaults to
     * what is left), as {} is. */
    size_t blen = 0;
    pc_http_req_body(req, &blen);
    json_t *b = pc_http_req_json(req);
    if (!b && blen > 0) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, NULL, "body must be a JSON object");
        return;
    }
    settle_t *s = pc_http_req_alloc(req, sizeof *s);
    s->op.req = req;
    s->op.app = data;
    pc_http_req_on_done(req, op_free, &s->op);
    s->splits = json_array();
    pc_http_req_on_done(req, settle_free, s);
    if (pc_json_int(b, "amount", 1, 1000000000000000LL, &s->amount) < 0) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "amount", "a positive integer");
        return;
    }
    json_t *splits = json_object_get(b, "splits");
    if (splits && !json_is_null(splits)) {
        size_t i;
        json_t *sp;
        if (!json_is_array(splits) || json_array_size(splits) > MAX_SPLITS) {
            pc_http_respond_error(req, PC_API_INVALID_REQUEST, "splits",
                                  "a list of at most 20 {account, amount}");
            return;
        }
        json_array_foreach(splits, i, sp)
        {
            int bad = 0;
            long long a = 0;
            const char *acct = json_is_object(sp) ? pc_json_str(sp, "account", 64, 1, &bad) : NULL;
            if (!acct || bad || pc_json_int(sp, "amount", 1, 1000000000000000LL, &a) != 0 ||
                !strcmp(acct, pc_auth_merchant(req)->id)) {
                pc_http_respond_error(req, PC_API_INVALID_REQUEST, "splits",
                                      "each split: account (another merchant id) and amount");
                return;
            }
            json_array_append_new(s->splits,
                                  json_pack("{s:s,s:I}", "account", acct, "amount", (json_int_t)a));
        }
    }
    if (pc_db_begin(s->op.app->db, NULL, settle_begin_cb, s) < 0)
        op_fail(&s->op, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

/* ---------- GET /v1/balance ---------- */

static void balance_cb(void *data, int status, pc_db_res_t *res)
{
    pc_http_req_t *req = data;
    if (status) {
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
        return;
    }
    const char *text = pc_db_get(res, 0, 0);
    pc_respond_json_text(req, 200, text);
}

static void get_balance(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    const char *p[] = {pc_auth_merchant(req)->id};
    if (pc_db_query(app->db,
                    "SELECT json_build_object('balances', coalesce(json_agg(json_build_object("
                    "'currency', currency, 'pending', pending, 'available', available, "
                    "'reserve', reserve) ORDER BY currency), '[]'::json))::text FROM (SELECT "
                    "currency, coalesce(sum(b) FILTER (WHERE type = 'MERCHANT_PENDING'), 0) "
                    "AS pending, coalesce(sum(b) FILTER (WHERE type = "
                    "'MERCHANT_AVAILABLE'), 0) AS available, coalesce(sum(b) FILTER "
                    "(WHERE type = 'MERCHANT_RESERVE'), 0) AS reserve FROM (SELECT type, "
                    "currency, ledger_balance(account_id) AS b FROM ledger_accounts "
                    "WHERE owner_id = $1 AND type IN ('MERCHANT_PENDING', 'MERCHANT_AVAILABLE', "
                    "'MERCHANT_RESERVE')) a GROUP BY currency) x",
                    1, p, balance_cb, req) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

/* ---------- GET /admin/ledger/check ---------- */

/* One check at a time per node: each reads every entry on a connection of
 * its own for up to ten minutes, so an ops script retrying after its own
 * timeout could take the whole pool (eight calls, the default pool) and
 * every request behind them would wait it out. */
static int g_ledger_checking;

typedef struct {
    pc_http_req_t *req;
    pc_app_t *app;
} ledger_check_t;

static void check_cb(void *data, int status, const pc_ledger_check_t *check)
{
    ledger_check_t *lc = data;
    pc_http_req_t *req = lc->req;
    g_ledger_checking = 0;
    if (status) {
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "ledger check could not run");
        return;
    }
    /* Kept as the day's result: a check that says ok again after ops
     * mended the books resolves LEDGER_CHECK_FAILED. */
    pc_ledger_check_record(lc->app, NULL, "ops", 0, check);
    pc_http_respond_json(req, 200, pc_ledger_check_json(check));
}

static void ledger_check(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    if (g_ledger_checking)
        pc_http_respond_error(req, PC_API_INVALID_STATE, NULL,
                              "a ledger check is already running on this node: ask again when "
                              "it has answered");
    else {
        g_ledger_checking = 1; /* before: a failure may be answered at once */
        ledger_check_t *lc = pc_http_req_alloc(req, sizeof *lc);
        lc->req = req;
        lc->app = app;
        if (pc_ledger_check(app->db, check_cb, lc) < 0) {
            g_ledger_checking = 0;
            pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
        }
    }
}

/* ---------- housekeeping: expiry and finish ---------- */

typedef struct {
    pc_app_t *app;
    pc_db_tx_t *tx;
    const char *event;
    int finish; /* trade.finished (the refund window), else trade.closed (expiry) */
    int swept;  /* trades the statement moved */
} sweep_t;

/* One sweep of each kind at a time in a process: a round slowed towards
 * the query timeout is not joined by the next ones, each holding a pooled
 * connection the API needs. */
static int g_sweep_running[2]; /* [0] close, [1] finish */

static void sweep_end(sweep_t *s)
{
    g_sweep_running[s->finish] = 0;
    free(s);
}

static void sweep_commit_cb(void *data, int status)
{
    sweep_t *s = data;
    if (status) {
        pc_log_warn("trade.sweep", "%s sweep not committed: %s", s->event, pc_strerror(status));
    } else if (s->swept) {
        char labels[64];
        snprintf(labels, sizeof labels, "event=\"%s\"", s->event);
        pc_metrics_add("pc_trades_swept_total", labels, s->swept);
    }
    sweep_end(s);
}

/* A sweep that cannot run is logged at most once a minute (it runs every
 * poll); TRADES_NOT_CLOSED pages when expired trades stay open. */
static long long g_sweep_warned_s[2]; /* [0] close, [1] finish */

static long long *sweep_warned(const sweep_t *s)
{
    return &g_sweep_warned_s[s->finish];
}

/* Logs what, once a minute while it lasts, and ends the sweep. */
static void sweep_fail(sweep_t *s, const char *what, int status)
{
    if (pc_log_due(sweep_warned(s), 60))
        pc_log_warn("trade.sweep", "%s sweep %s: %s (logged once a minute while it lasts)",
                    s->event, what, pc_strerror(status));
    if (s->tx)
        pc_db_tx_rollback(s->tx);
    sweep_end(s);
}

static void sweep_rows_cb(void *data, int status, pc_db_res_t *res)
{
    sweep_t *s = data;
    if (status) {
        sweep_fail(s, "failed", status);
        return;
    }
    int n = pc_db_rows(res);
    for (int i = 0; i < n; i++) {
        /* A trade moved without its notification is not committed: the
         * next sweep takes it again. */
        int rc = pc_trade_outbox_row(s->tx, res, i, s->event, NULL);
        if (rc < 0) {
            sweep_fail(s, "could not record its notifications", rc);
            return;
        }
    }
    s->swept = n;
    pc_db_tx_commit(s->tx, sweep_commit_cb, s);
}

static void sweep_begin_cb(void *data, int status, pc_db_tx_t *tx)
{
    sweep_t *s = data;
    if (status) {
        sweep_fail(s, "could not begin", status);
        return;
    }
    s->tx = tx;
    /* A trade with a payment at a channel stays open past its expiry until
     * the channel answers (PC_TRADE_ATTEMPT_AT_CHANNEL). That is read once
     * more for each trade after the sweep holds its lock, with a fresh
     * snapshot (trade_attempt_at_channel_now, VOLATILE): a pay holds the
     * trade's lock until its payment commits, so a payment committed
     * between the statement's snapshot and the lock, unseen by the first
     * read, is seen by the second (before, the trade was closed under it
     * and the payment refunded as an error). One statement: the CTE's rows
     * are locked as they are produced, each before it is read again, once
     * (closable is materialized: a semi-join may scan its input again). */
    const char *sql;
    if (!s->finish)
        sql =
            "WITH expired AS MATERIALIZED (SELECT trade_no FROM trades t WHERE status = "
            "'WAIT_BUYER_PAY' AND expires_at <= now() AND NOT " PC_TRADE_ATTEMPT_AT_CHANNEL(
                "t") " ORDER BY expires_at LIMIT 200 FOR UPDATE SKIP LOCKED), closable AS "
                     "MATERIALIZED (SELECT trade_no AS closable_no FROM expired WHERE NOT "
                     "trade_attempt_at_channel_now(trade_no)) UPDATE trades SET status = "
                     "'TRADE_CLOSED', close_reason = 'EXPIRED', closed_at = now(), updated_at = "
                     "now() FROM closable c WHERE trades.trade_no = c.closable_no AND "
                     "trades.status = 'WAIT_BUYER_PAY' RETURNING " PC_TRADE_COLUMNS ", notify_url";
    else
        /* Not while a refund of the trade is still in flight (an OFFLINE or
         * FILE refund can take days, one held by risk longer): its success
         * would close a fully refunded trade, which a finished one cannot
         * be; the next sweep after it ends finishes the trade. */
        /* ... and read again for each trade once it is locked, with a fresh
         * snapshot (trade_refund_in_flight_now, migration 0087): a refund
         * accepted while the statement ran holds the trade's row until it
         * commits, which the first read, with the statement's snapshot,
         * does not see. As the close sweep, one statement, materialized. */
        sql = "WITH due AS MATERIALIZED (SELECT t.trade_no FROM trades t WHERE t.status = "
              "'TRADE_SUCCESS' AND t.paid_at <= now() - make_interval(secs => $1::bigint) AND NOT "
              "trade_refund_in_flight_now(t.trade_no) ORDER BY t.paid_at LIMIT 200 FOR UPDATE OF "
              "t SKIP LOCKED), finishable AS MATERIALIZED (SELECT trade_no AS finish_no FROM due "
              "WHERE NOT trade_refund_in_flight_now(trade_no)) UPDATE trades SET status = "
              "'TRADE_FINISHED', finished_at = now(), updated_at = now() FROM finishable f WHERE "
              "trades.trade_no = f.finish_no AND trades.status = 'TRADE_SUCCESS' "
              "RETURNING " PC_TRADE_COLUMNS ", notify_url";
    char window[24] = "";
    if (s->finish)
        snprintf(window, sizeof window, "%lld",
                 (long long)pc_config_int(s->app->cfg, "trades.refund_window_s"));
    const char *p[] = {window};
    if (pc_db_tx_query(tx, sql, s->finish ? 1 : 0, s->finish ? p : NULL, sweep_rows_cb, s) < 0)
        sweep_fail(s, "failed", PC_EUNAVAIL);
}

static void sweep(pc_app_t *app, const char *event)
{
    sweep_t *s = calloc(1, sizeof *s);
    if (!s)
        return;
    s->app = app;
    s->event = event;
    s->finish = strcmp(event, "trade.closed") != 0;
    if (g_sweep_running[s->finish]) {
        free(s);
        return;
    }
    g_sweep_running[s->finish] = 1;
    if (pc_db_begin(app->db, NULL, sweep_begin_cb, s) < 0)
        sweep_end(s);
}

void pc_trades_housekeeping(pc_app_t *app)
{
    sweep(app, "trade.closed");
    sweep(app, "trade.finished");
}

void pc_app_routes_trade_state(pc_app_t *app)
{
    pc_metrics_describe("pc_trades_swept_total", PC_METRIC_COUNTER,
                        "trades closed by expiry or finished by the refund window");
    pc_metrics_describe("pc_ledger_check_ok", PC_METRIC_GAUGE, "last ledger check result");
    pc_router_add(app->api, "POST", "/v1/trades/{trade_no}/close", close_trade, app);
    pc_router_add(app->api, "POST", "/v1/trades/{trade_no}/settle", settle_trade, app);
    pc_router_add(app->api, "GET", "/v1/balance", get_balance, app);
    pc_router_add(app->admin, "GET", "/admin/ledger/check", ledger_check, app);
}
