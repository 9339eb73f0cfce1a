#include "chargeback/chargeback.h"
#include "auth/auth.h"
#include "auth/sign.h"
#include "channel/client.h"
#include "chargeback/chargeback_csv.h"
#include "chargeback/chargeback_money.h"
#include "core/currency.h"
#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"
#include "acquiring/trade.h"
#include "acquiring/trade_state.h"
#include "ledger/ledger.h"
#include "notify/outbox.h"
#include "refund/refund.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DAILY_TRIES 3
#define DAILY_RETRY_MS (3600 * 1000) /* between two tries of one channel's file */

struct pc_chargebacks {
    pc_app_t *app;
    uv_timer_t timer;
    int refreshing;
    /* The daily import of yesterday's files (chargeback.daily_import). */
    uv_timer_t daily;
    int daily_on, import_at_min;
    int importing; /* a look or an import is out: the next tick skips */
    char day[11];  /* the business day being imported */
    char todo[PC_CHANNELS_MAX][33];
    int ntodo, next;
    /* Tries per channel of the day, by this node: a channel that serves no
     * file is asked DAILY_TRIES times, an hour apart, not every minute. */
    char tried_day[11];
    char tried_ch[PC_CHANNELS_MAX][33];
    int tried_n[PC_CHANNELS_MAX], ntried;
    uint64_t tried_at[PC_CHANNELS_MAX]; /* uv_now of the last try */
};

static const char *const statuses[] = {"WAIT_JUDGE", "IN_JUDGE", "JUDGE_FINISH", "CLOSE"};

static int is_status(const char *s)
{
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++)
        if (!strcmp(s, statuses[i]))
            return 1;
    return 0;
}

static void ignore_cb(void *data, int status, pc_db_res_t *res)
{
    (void)data;
    (void)status;
    (void)res;
}

/* ---------- the rate gauge ---------- */

static void set_rate(const char *merchant_id, const char *channel_id, int64_t bp)
{
    char labels[200];
    snprintf(labels, sizeof labels, "merchant=\"%s\",channel=\"%s\"", merchant_id,
             channel_id[0] ? channel_id : "*");
    pc_metrics_set("pc_chargeback_rate_bp", labels, bp);
}

static void rates_cb(void *data, int status, pc_db_res_t *res)
{
    pc_chargebacks_t *cbs = data;
    static long long warned_s;
    if (cbs)
        cbs->refreshing = 0;
    if (status) {
        /* The rates risk and payouts read stay as they were meanwhile. */
        if (pc_log_due(&warned_s, 300))
            pc_log_warn("chargeback.rates_failed",
                        "refreshing chargeback rates failed: %s; rates stay as last computed "
                        "(logged once in 5 minutes while it lasts)",
                        pc_strerror(status));
        return;
    }
    for (int i = 0; i < pc_db_rows(res); i++)
        set_rate(pc_db_val(res, i, "merchant_id"), pc_db_val(res, i, "channel_id"),
                 pc_db_val_i64(res, i, "rate_bp"));
}

/* Recomputes one merchant's rates (the risk input and the gauges) after one
 * of its cases opened or ended. */
static void refresh_rate(pc_app_t *app, const char *merchant_id)
{
    const char *p[] = {merchant_id};
    pc_db_query(app->db,
                "SELECT merchant_id, channel_id, rate_bp FROM chargeback_rates_refresh($1)", 1, p,
                rates_cb, NULL);
}

/* Every merchant's rates, so that old cases age out of the 90 days: never
 * two nodes at the same moment (a node that does not get the lock only
 * reads the rates for its gauges), on a connection of its own with a
 * minute's deadline, as it counts 90 days of payments of each merchant with
 * a chargeback (on the pool, past the pool's deadline, it was cut off and
 * took the statements behind it down). */
static void refresh_tick(uv_timer_t *t)
{
    pc_chargebacks_t *cbs = t->data;
    if (cbs->refreshing || cbs->app->shutting_down)
        return;
    cbs->refreshing = 1;
    if (pc_db_query_long(cbs->app->db,
                         "SELECT merchant_id, channel_id, rate_bp FROM "
                         "chargeback_rates_refresh_all()",
                         0, NULL, 60000, rates_cb, cbs) < 0)
        cbs->refreshing = 0;
}

/* ---------- opening a case (online and offline) ---------- */

typedef enum { OPEN_CREATED, OPEN_DUPLICATE, OPEN_UNMATCHED, OPEN_FAILED } open_outcome_t;

typedef struct {
    const char *source; /* "ONLINE" | "OFFLINE" */
    const char *source_ref;
    const char *channel_id;     /* may be NULL (offline by payment_no) */
    const char *channel_txn_id; /* may be NULL */
    const char *payment_no;     /* may be NULL */
    int64_t amount;
    const char *currency;
    const char *reason_code;
    long long channel_time; /* 0: unknown */
    long long respond_by;   /* 0: now + chargeback.evidence_days */
    const char *entered_by; /* may be NULL */
    long long import_id;    /* 0: none */
    int another_dispute;    /* ops say it is no twin of a case of the same sum */
} open_in_t;

/* outcome CREATED / DUPLICATE come with the case's JSON text; UNMATCHED with
 * the API error and a reason; FAILED with a database status. */
typedef void (*open_cb)(void *data, open_outcome_t outcome, int status, pc_api_err_t err,
                        const char *why, const char *json_text);

typedef struct {
    pc_app_t *app;
    open_cb cb;
    void *data;
    pc_db_tx_t *tx;
    char source[8], source_ref[129], in_channel[33], in_txn[81], in_payment[65];
    int64_t amount;
    char currency[4], reason_code[33], entered_by[65];
    long long channel_time, respond_by, import_id;
    char cb_no[40], merchant_id[65], trade_no[65], payment_no[65], channel_id[33];
    char channel_txn_id[81], buyer_id[65], notify_url[520];
    int64_t external_amount; /* the payment's part that went through the channel */
    pc_cb_hold_t hold;
    int in_escrow;     /* the payment is held in escrow for its error refund */
    int64_t unsettled; /* held from the guarantee trade's escrow (hold.from_unsettled) */
    char *json;
    int retried;     /* opened again after terminating unsent refunds */
    int terminating; /* refund terminations still out */
    int another_dispute;
} open_t;

static void open_finish(open_t *o, open_outcome_t outcome, int status, pc_api_err_t err,
                        const char *why)
{
    o->cb(o->data, outcome, status, err, why, o->json);
    free(o->json);
    free(o);
}

static void open_fail(open_t *o, int status)
{
    if (o->tx)
        pc_db_tx_rollback(o->tx);
    o->tx = NULL;
    open_finish(o, OPEN_FAILED, status ? status : PC_EIO, PC_API_UNAVAILABLE, "database error");
}

static void open_unmatched(open_t *o, pc_api_err_t err, const char *why)
{
    pc_db_tx_rollback(o->tx);
    o->tx = NULL;
    open_finish(o, OPEN_UNMATCHED, 0, err, why);
}

static void open_commit_cb(void *data, int status)
{
    open_t *o = data;
    o->tx = NULL;
    if (status) {
        pc_log_warn("chargeback.open_failed", "%s %s: not committed: %s", o->source, o->source_ref,
                    pc_strerror(status));
        open_finish(o, OPEN_FAILED, status, PC_API_UNAVAILABLE, "not committed");
        return;
    }
    char labels[96];
    snprintf(labels, sizeof labels, "channel=\"%s\",source=\"%s\"", o->channel_id, o->source);
    pc_metrics_add("pc_chargebacks_total", labels, 1);
    pc_log_info("chargeback.opened",
                "%s for payment %s (trade %s, merchant %s): %lld %s frozen (pending %lld, "
                "available %lld, owed %lld, escrow %lld)",
                o->cb_no, o->payment_no, o->trade_no, o->merchant_id, (long long)o->amount,
                o->currency, (long long)o->hold.from_pending, (long long)o->hold.from_available,
                (long long)o->hold.owed, (long long)(o->hold.from_escrow + o->hold.from_unsettled));
    refresh_rate(o->app, o->merchant_id);
    open_finish(o, OPEN_CREATED, 0, PC_API_OK, NULL);
}

static void post_logged_cb(void *data, int status, int64_t txn_id)
{
    (void)txn_id;
    if (status)
        pc_log_warn("chargeback.ledger_failed", "%s: %s", (const char *)data,
                    pc_ledger_strerror(status));
}

/* Whether an existing case (its JSON) is the one being opened again: the
 * same payment and sum. A reference reused for another dispute is not
 * silently a duplicate (an import line would otherwise freeze nothing and
 * tell nobody). */
static int same_case(const open_t *o, const char *existing_json)
{
    json_t *j = json_loads(existing_json, 0, NULL);
    const char *pno = json_string_value(json_object_get(j, "payment_no"));
    int same = pno && !strcmp(pno, o->payment_no) &&
               json_integer_value(json_object_get(j, "amount")) == o->amount;
    json_decref(j);
    return same;
}

#define OTHER_CASE "this reference names another chargeback already (another payment or amount)"

static void open_reread_cb(void *data, int status, pc_db_res_t *res)
{
    open_t *o = data;
    if (status || pc_db_rows(res) == 0) {
        open_finish(o, OPEN_FAILED, status ? status : PC_ECONFLICT, PC_API_UNAVAILABLE,
                    "lost a race; retry");
        return;
    }
    if (!same_case(o, pc_db_get(res, 0, 0))) {
        open_finish(o, OPEN_UNMATCHED, 0, PC_API_INVALID_STATE, OTHER_CASE);
        return;
    }
    o->json = strdup(pc_db_get(res, 0, 0));
    open_finish(o, OPEN_DUPLICATE, 0, PC_API_OK, NULL);
}

static void open_inserted_cb(void *data, int status, pc_db_res_t *res)
{
    open_t *o = data;
    if (status == PC_ECONFLICT && !strcmp(pc_db_constraint(res), "chargebacks_source_ref_unique")) {
        /* Another node opened the same case first: report it as a duplicate. */
        pc_db_tx_rollback(o->tx);
        o->tx = NULL;
        const char *p[] = {o->channel_id, o->source_ref};
        if (pc_db_query(o->app->db,
                        "SELECT chargeback_json(c)::text FROM chargebacks c WHERE channel_id = $1 "
                        "AND source_ref = $2",
                        2, p, open_reread_cb, o) < 0)
            open_finish(o, OPEN_FAILED, PC_EUNAVAIL, PC_API_UNAVAILABLE, "database unavailable");
        return;
    }
    if (status || pc_db_rows(res) != 1) {
        if (status)
            pc_log_warn("chargeback.insert_failed", "%s %s: %s", o->source, o->source_ref,
                        pc_db_errmsg(res));
        open_fail(o, status);
        return;
    }
    o->json = strdup(pc_db_get(res, 0, 0));
    pc_cb_legs_t legs;
    /* What is held from escrow is frozen there already: only the rest is
     * frozen from the merchant. */
    int frozen = pc_cb_hold_frozen(&o->hold) > 0;
    int rc = frozen ? pc_cb_legs_freeze(o->merchant_id, o->currency, &o->hold, &legs) : 0;
    if (!rc && frozen) {
        pc_ledger_txn_t txn = {"CHARGEBACK_FREEZE", "chargeback", o->cb_no,
                               o->trade_no,         legs.legs,    legs.n};
        rc = pc_ledger_post(o->tx, &txn, post_logged_cb, "CHARGEBACK_FREEZE");
    }
    if (!rc) {
        /* A line of an earlier file that could not open this case is
         * resolved by it. */
        const char *u[] = {o->channel_id, o->source_ref, o->cb_no};
        rc = pc_db_tx_query(o->tx,
                            "UPDATE chargeback_unmatched SET resolved_at = now(), resolved_by = "
                            "'paycore', resolution = 'opened as ' || $3, updated_at = now() WHERE "
                            "channel_id = $1 AND chargeback_ref = $2 AND resolved_at IS NULL",
                            3, u, NULL, NULL);
    }
    if (!rc) {
        json_t *obj = json_loads(o->json, 0, NULL);
        rc = obj ? pc_outbox_add(o->tx, o->merchant_id, "chargeback.opened",
                                 o->notify_url[0] ? o->notify_url : NULL, obj)
                 : PC_ENOMEM;
        json_decref(obj);
    }
    if (rc) {
        pc_log_error("chargeback.open", "%s: %s", o->cb_no, pc_ledger_strerror(rc));
        open_fail(o, rc);
        return;
    }
    pc_db_tx_commit(o->tx, open_commit_cb, o);
}

static void insert_case(open_t *o);

static void open_locked_cb(void *data, int status, pc_db_res_t *res)
{
    open_t *o = data;
    if (status) {
        open_fail(o, status);
        return;
    }
    int64_t pending = 0, available = 0;
    for (int i = 0; i < pc_db_rows(res); i++) {
        const char *id = pc_db_val(res, i, "account_id");
        int64_t bal = pc_db_val_i64(res, i, "balance");
        if (pc_ledger_is_type(id, PC_LEDGER_MERCHANT_PENDING))
            pending = bal;
        else if (pc_ledger_is_type(id, PC_LEDGER_MERCHANT_AVAILABLE))
            available = bal;
    }
    if (pc_cb_hold_split(o->amount - o->unsettled, pending, available, &o->hold)) {
        open_fail(o, PC_EINVAL);
        return;
    }
    o->hold.from_unsettled = o->unsettled;
    insert_case(o);
}

/* Writes the case with its hold (o->hold) in o's transaction. */
static void insert_case(open_t *o)
{
    char hex[21], amount[24], fp[24], fa[24], owed[24], due[24], chtime[24], import[24], fe[24],
        fu[24];
    pc_random_hex(hex, sizeof hex, 10);
    snprintf(o->cb_no, sizeof o->cb_no, "CB%s", hex);
    snprintf(amount, sizeof amount, "%lld", (long long)o->amount);
    snprintf(fp, sizeof fp, "%lld", (long long)o->hold.from_pending);
    snprintf(fa, sizeof fa, "%lld", (long long)o->hold.from_available);
    snprintf(owed, sizeof owed, "%lld", (long long)o->hold.owed);
    snprintf(fe, sizeof fe, "%lld", (long long)o->hold.from_escrow);
    snprintf(fu, sizeof fu, "%lld", (long long)o->hold.from_unsettled);
    long long due_at = o->respond_by
                           ? o->respond_by
                           : (long long)time(NULL) +
                                 pc_config_int(o->app->cfg, "chargeback.evidence_days") * 86400LL;
    snprintf(due, sizeof due, "%lld", due_at);
    snprintf(chtime, sizeof chtime, "%lld", o->channel_time);
    snprintf(import, sizeof import, "%lld", o->import_id);
    const char *p[] = {o->cb_no,
                       o->source,
                       o->source_ref,
                       o->channel_id,
                       o->merchant_id,
                       o->trade_no,
                       o->payment_no,
                       o->channel_txn_id,
                       o->buyer_id[0] ? o->buyer_id : NULL,
                       amount,
                       o->currency,
                       o->reason_code,
                       due,
                       o->channel_time ? chtime : NULL,
                       fp,
                       fa,
                       owed,
                       o->notify_url[0] ? o->notify_url : NULL,
                       o->import_id ? import : NULL,
                       o->entered_by[0] ? o->entered_by : NULL,
                       fe,
                       fu};
    if (pc_db_tx_query(o->tx,
                       "INSERT INTO chargebacks AS c (chargeback_no, source, source_ref, "
                       "channel_id, merchant_id, trade_no, payment_no, channel_txn_id, buyer_id, "
                       "amount, currency, reason_code, evidence_due_at, channel_time, "
                       "from_pending, from_available, owed, notify_url, import_id, entered_by, "
                       "from_escrow, from_unsettled) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, "
                       "$10::bigint, $11, $12, to_timestamp($13::bigint), "
                       "to_timestamp($14::bigint), $15::bigint, $16::bigint, $17::bigint, $18, "
                       "$19::bigint, $20, $21::bigint, $22::bigint) RETURNING "
                       "chargeback_json(c)::text",
                       22, p, open_inserted_cb, o) < 0)
        open_fail(o, PC_EUNAVAIL);
}

static void open_counted_cb(void *data, int status, pc_db_res_t *res);

static void open_matched_cb(void *data, int status, pc_db_res_t *res)
{
    open_t *o = data;
    if (status) {
        open_fail(o, status);
        return;
    }
    if (pc_db_rows(res) == 0) {
        open_unmatched(o, PC_API_NOT_FOUND, "no successful payment with this reference");
        return;
    }
    snprintf(o->payment_no, sizeof o->payment_no, "%s", pc_db_val(res, 0, "payment_no"));
    snprintf(o->trade_no, sizeof o->trade_no, "%s", pc_db_val(res, 0, "trade_no"));
    snprintf(o->merchant_id, sizeof o->merchant_id, "%s", pc_db_val(res, 0, "merchant_id"));
    snprintf(o->channel_id, sizeof o->channel_id, "%s", pc_db_val(res, 0, "channel_id"));
    snprintf(o->channel_txn_id, sizeof o->channel_txn_id, "%s",
             pc_db_val(res, 0, "channel_txn_id"));
    snprintf(o->buyer_id, sizeof o->buyer_id, "%s", pc_db_val(res, 0, "buyer_id"));
    snprintf(o->notify_url, sizeof o->notify_url, "%s", pc_db_val(res, 0, "notify_url"));
    o->in_escrow = pc_db_val(res, 0, "in_escrow")[0] == 't';
    if (o->in_channel[0] && strcmp(o->in_channel, o->channel_id) != 0) {
        open_unmatched(o, PC_API_INVALID_REQUEST, "the payment went through another channel");
        return;
    }
    if (strcmp(o->currency, pc_db_val(res, 0, "currency")) != 0) {
        open_unmatched(o, PC_API_INVALID_REQUEST, "the currency is not the payment's");
        return;
    }
    /* A case freezes the merchant's money; a top-up's money is not the
     * merchant's but the buyer's wallet. Frozen from the merchant, a merchant
     * found liable paid for money it never had. For ops. (A duplicate
     * payment's dispute does open a case: it stops the error refund, which
     * would pay the cardholder a second time, and is held from escrow.) */
    if (!strcmp(pc_db_val(res, 0, "product"), "RECHARGE")) {
        open_unmatched(o, PC_API_INVALID_STATE,
                       "a wallet top-up: its money is the buyer's wallet, not the merchant's; "
                       "for ops to handle by hand");
        return;
    }
    o->external_amount = pc_db_val_i64(res, 0, "external_amount");
    /* What is disputed already, read by a statement of its own: it starts
     * after the trade lock above was granted, so it sees every case the
     * previous holder committed (as a sub-select of the locking statement it
     * read the snapshot taken before the wait, and two cases opened at once
     * for one payment each saw the other's amount as not disputed yet).
     * Disputed: open cases and the ones the cardholder won
     * (payment_chargeback_frozen); one the cardholder lost (liable NONE, or
     * closed) frees its amount for the issuer's next cycle. What refunds
     * (merchant or error refunds) already give back of the external part is
     * not the cardholder's to dispute again: refunds are accepted under the
     * same trade lock. A case is known by its channel's reference, whether
     * ops entered it or a file brought it (chargebacks_source_ref_unique).
     * The payment of a guarantee trade: what escrow keeps free for the
     * trade (not settled, refunded or held by another case yet). And an
     * open case of the payment for the same sum that came the other way
     * (entered by ops, or from the file) under another reference: ops
     * often enter a dispute from the bank's letter under the bank's case
     * number, and the channel's file then brings it under its own. A line
     * waiting as unmatched for that reason stays so, whatever became of
     * that case, until ops resolve it: before, importing the file again
     * once the case was judged or closed opened a second case of the one
     * dispute (the merchant paid it twice). So is a case judged for the
     * cardholder (MERCHANT or PLATFORM liable): the file brought a
     * dispute ops had entered and already judged as a second case, frozen
     * and paid again. Ops entering a dispute that is not such a twin say
     * so ("another_dispute": true). */
    char amount[24];
    snprintf(amount, sizeof amount, "%lld", (long long)o->amount);
    const char *p[] = {o->payment_no,
                       o->channel_id,
                       o->source_ref,
                       o->trade_no,
                       o->source,
                       amount,
                       o->another_dispute ? "t" : "f"};
    if (pc_db_tx_query(
            o->tx,
            "SELECT payment_chargeback_frozen($1) + (SELECT "
            "coalesce(sum(r.external_amount), 0) FROM refunds r WHERE r.payment_no = "
            "$1 AND r.status NOT IN ('FAILED', 'TERMINATED')) AS disputed, (SELECT "
            "chargeback_json(c)::text FROM chargebacks c WHERE c.channel_id = $2 AND "
            "c.source_ref = $3) AS existing, (SELECT coalesce(string_agg(r.refund_no "
            "|| ' ' || r.external_amount || ' ' || CASE WHEN r.type = 'NORMAL' THEN r.amount "
            "ELSE -1 END, ' ' ORDER BY r.created_at DESC), '') FROM "
            "refunds r WHERE r.payment_no = $1 AND r.status IN ('ACCEPTED', 'SUSPENDED') AND "
            "r.external_amount > 0) AS unsent, coalesce((SELECT greatest(trade_escrow_free("
            "t.trade_no), 0) FROM trades t WHERE t.trade_no = $4 AND t.product = 'GUARANTEE' "
            "AND t.payment_no = $1), 0) AS escrow_free, (SELECT c.chargeback_no FROM chargebacks c "
            "WHERE NOT $7::boolean AND c.payment_no = $1 AND c.source <> $5 AND c.amount = "
            "$6::bigint AND (c.status IN ('WAIT_JUDGE', 'IN_JUDGE') OR (c.status = "
            "'JUDGE_FINISH' AND c.liable IN ('MERCHANT', 'PLATFORM')) OR EXISTS (SELECT 1 FROM "
            "chargeback_unmatched u WHERE u.channel_id = $2 AND u.chargeback_ref = $3 AND "
            "u.resolved_at IS NULL)) AND c.source_ref <> $3 ORDER BY c.created_at LIMIT 1) AS twin",
            7, p, open_counted_cb, o) < 0)
        open_fail(o, PC_EUNAVAIL);
}

static void open_begin_cb(void *data, int status, pc_db_tx_t *tx);

static void unsent_terminated_cb(void *data, int status)
{
    open_t *o = data;
    if (status)
        pc_log_warn("chargeback.refund_not_terminated",
                    "%s %s: a refund of payment %s could not be terminated: %s", o->source,
                    o->source_ref, o->payment_no, pc_strerror(status));
    if (--o->terminating > 0)
        return;
    /* Opened again from the start: what the terminations left is read
     * afresh under the trade lock; still too much is unmatched as before. */
    if (pc_db_begin(o->app->db, NULL, open_begin_cb, o) < 0)
        open_finish(o, OPEN_FAILED, PC_EUNAVAIL, PC_API_UNAVAILABLE, "database unavailable");
}

/* The case would fit if the refunds not sent yet (unsent: "refund_no
 * card-part whole-sum ...", the whole sum -1 for an error refund, newest
 * first: the merchant's, or the error refund of a
 * payment held in escrow) were not counted: the cardholder got the money
 * back at the bank, so those refunds would pay twice. (A terminated error
 * refund leaves the payment waiting in escrow again, migration 0093: the
 * case opens from there, and the error refund made after its judgement
 * returns what the chargeback did not.)
 * Terminates the newest of them until the excess is covered (after the
 * transaction is rolled back), then opens the case again. Returns 0 when
 * that is under way, -1 when the refunds cannot cover it. */
static int terminate_unsent(open_t *o, const char *unsent, int64_t excess)
{
    char nos[16][41];
    int64_t amounts[16], others[16]; /* each one's whole sum; its parts not by card */
    int errors[16];                  /* an error refund: the platform's, not the merchant's */
    int n = 0;
    int64_t covered = 0;
    const char *s = unsent;
    while (*s && covered < excess && n < 16) {
        long long amount, whole;
        int used = 0;
        if (sscanf(s, "%40s %lld %lld %n", nos[n], &amount, &whole, &used) != 3 || used == 0)
            break;
        covered += amount;
        amounts[n] = whole < 0 ? amount : whole;
        errors[n] = whole < 0;
        others[n++] = whole < 0 ? 0 : whole - amount;
        s += used;
    }
    if (covered < excess || !o->app->refunds)
        return -1;
    pc_db_tx_rollback(o->tx);
    o->tx = NULL;
    o->retried = 1;
    o->terminating = 1; /* held until every call is made */
    for (int i = 0; i < n; i++) {
        /* The last one taken is needed only for what the others left of the
         * excess: the rest of its card part is still the buyer's to be
         * refunded, as are the wallet and coupon parts of each (the dispute
         * is of the card part only). */
        int64_t still = errors[i] ? 0 : others[i] + (i == n - 1 ? covered - excess : 0);
        pc_log_warn("chargeback.terminates_refund",
                    "%s %s of %lld on payment %s: refund %s of %lld, not sent yet, is "
                    "terminated (the chargeback gives the cardholder the money; %lld of it still "
                    "refundable)",
                    o->source, o->source_ref, (long long)o->amount, o->payment_no, nos[i],
                    (long long)amounts[i], (long long)still);
        o->terminating++;
        if (pc_refunds_terminate_for_chargeback(o->app->refunds, nos[i], o->source_ref, still,
                                                unsent_terminated_cb, o) != 0)
            o->terminating--;
    }
    unsent_terminated_cb(o, 0);
    return 0;
}

static void open_counted_cb(void *data, int status, pc_db_res_t *res)
{
    open_t *o = data;
    if (status) {
        open_fail(o, status);
        return;
    }
    int ex = pc_db_col(res, "existing");
    if (!pc_db_isnull(res, 0, ex)) {
        if (!same_case(o, pc_db_get(res, 0, ex))) {
            open_unmatched(o, PC_API_INVALID_STATE, OTHER_CASE);
            return;
        }
        o->json = strdup(pc_db_get(res, 0, ex));
        pc_db_tx_rollback(o->tx);
        o->tx = NULL;
        open_finish(o, OPEN_DUPLICATE, 0, PC_API_OK, NULL);
        return;
    }
    /* The same dispute twice, opened the other way under another reference:
     * both judged for the cardholder, the merchant paid it twice. Kept for
     * ops (a file line waits as unmatched, holding its sum; an entry is
     * refused, 409), who resolve it, or enter it if it is another dispute. */
    int tw = pc_db_col(res, "twin");
    if (tw >= 0 && !pc_db_isnull(res, 0, tw)) {
        char why[260];
        snprintf(why, sizeof why,
                 "case %s of this payment, for the same amount, exists already (%s): the same "
                 "dispute under another reference? for ops%s",
                 pc_db_get(res, 0, tw),
                 !strcmp(o->source, "ONLINE") ? "entered by ops" : "from the channel's file",
                 !strcmp(o->source, "ONLINE")
                     ? ""
                     : " (\"another_dispute\": true enters it when it is another dispute)");
        open_unmatched(o, PC_API_INVALID_STATE, why);
        return;
    }
    int64_t left = o->external_amount - pc_db_val_i64(res, 0, "disputed");
    if (o->amount > left && !o->retried &&
        terminate_unsent(o, pc_db_val(res, 0, "unsent"), o->amount - left) == 0)
        return;
    if (o->amount > left) {
        open_unmatched(o, PC_API_AMOUNT_EXCEEDS_REFUNDABLE,
                       "the amount exceeds what is left of the payment to dispute (earlier "
                       "disputes and refunds deducted)");
        return;
    }
    /* A payment held in escrow for its error refund (the trade lock keeps
     * the error refund from being made meanwhile): the money is the
     * cardholder's and already held, none of it the merchant's. Before, the
     * case froze it from the merchant as well, and a MERCHANT judgement made
     * the merchant pay for money it never received. */
    if (o->in_escrow) {
        o->hold = (pc_cb_hold_t){.from_escrow = o->amount};
        insert_case(o);
        return;
    }
    /* A guarantee trade's payment before (all of) its money was settled:
     * what escrow still keeps for the trade is held there, none of it the
     * merchant's yet; only the rest (a trade settled in part) is frozen
     * from the merchant's balances. Before, all of it was frozen from the
     * merchant and escrow then paid the merchant the disputed money too. */
    int64_t free_escrow = pc_db_val_i64(res, 0, "escrow_free");
    o->unsettled = free_escrow < o->amount ? free_escrow : o->amount;
    if (o->unsettled == o->amount) {
        o->hold = (pc_cb_hold_t){.from_unsettled = o->amount};
        insert_case(o);
        return;
    }
    /* Lock the merchant's balances in the ledger's own lock order (byte order
     * of the ids) before reading them: the freeze posting locks them the same
     * way, so nothing can move them in between. */
    char avail[PC_LEDGER_ID_MAX + 1], pend[PC_LEDGER_ID_MAX + 1], ids[2 * PC_LEDGER_ID_MAX + 8];
    if (pc_ledger_account_id(avail, sizeof avail, PC_LEDGER_MERCHANT_AVAILABLE, o->merchant_id,
                             o->currency) ||
        pc_ledger_account_id(pend, sizeof pend, PC_LEDGER_MERCHANT_PENDING, o->merchant_id,
                             o->currency)) {
        open_fail(o, PC_EINVAL);
        return;
    }
    snprintf(ids, sizeof ids, "{%s,%s}", avail, pend);
    const char *p[] = {ids};
    if (pc_db_tx_query(o->tx,
                       /* Locked, queued deltas folded: exact balances. */
                       "SELECT account_id, balance FROM ledger_lock_accounts($1::text[])", 1, p,
                       open_locked_cb, o) < 0)
        open_fail(o, PC_EUNAVAIL);
}

static void open_begin_cb(void *data, int status, pc_db_tx_t *tx)
{
    open_t *o = data;
    if (status) {
        open_finish(o, OPEN_FAILED, status, PC_API_UNAVAILABLE, "database unavailable");
        return;
    }
    o->tx = tx;
    /* The trade row is locked first, as refunds do, so that a refund and a
     * freeze of the same trade never interleave. A reference that names a
     * payment by both its channel id and our number prefers the channel's. */
    const char *p[] = {o->in_channel[0] ? o->in_channel : NULL, o->in_txn[0] ? o->in_txn : NULL,
                       o->in_payment[0] ? o->in_payment : NULL};
    if (pc_db_tx_query(
            tx,
            "SELECT p.payment_no, p.trade_no, p.merchant_id, p.currency, p.external_amount, "
            "p.channel_id, coalesce(p.channel_txn_id, '') AS channel_txn_id, "
            "coalesce(t.buyer_id, p.buyer_id, '') AS buyer_id, coalesce(t.notify_url, '') AS "
            "notify_url, t.product, (p.needs_error_refund AND NOT p.error_refund_made) AS "
            "in_escrow FROM payments p JOIN trades t ON "
            "t.trade_no = p.trade_no WHERE p.status = 'SUCCESS' AND p.channel_id IS NOT NULL AND "
            "((p.channel_id = $1 AND p.channel_txn_id = $2) OR p.payment_no = $3) ORDER BY "
            "(p.channel_txn_id IS NOT DISTINCT FROM $2) DESC LIMIT 1 FOR UPDATE OF t",
            3, p, open_matched_cb, o) < 0)
        open_fail(o, PC_EUNAVAIL);
}

/* Opens a case. Returns 0 (cb runs once, later) or a negative code (cb never
 * runs). */
static int open_case(pc_app_t *app, const open_in_t *in, open_cb cb, void *data)
{
    open_t *o = calloc(1, sizeof *o);
    if (!o)
        return PC_ENOMEM;
    o->app = app;
    o->cb = cb;
    o->data = data;
    snprintf(o->source, sizeof o->source, "%s", in->source);
    snprintf(o->source_ref, sizeof o->source_ref, "%s", in->source_ref);
    o->another_dispute = in->another_dispute;
    snprintf(o->in_channel, sizeof o->in_channel, "%s", in->channel_id ? in->channel_id : "");
    snprintf(o->in_txn, sizeof o->in_txn, "%s", in->channel_txn_id ? in->channel_txn_id : "");
    snprintf(o->in_payment, sizeof o->in_payment, "%s", in->payment_no ? in->payment_no : "");
    o->amount = in->amount;
    snprintf(o->currency, sizeof o->currency, "%s", in->currency);
    snprintf(o->reason_code, sizeof o->reason_code, "%s",
             in->reason_code && in->reason_code[0] ? in->reason_code : "UNKNOWN");
    snprintf(o->entered_by, sizeof o->entered_by, "%s", in->entered_by ? in->entered_by : "");
    o->channel_time = in->channel_time;
    o->respond_by = in->respond_by;
    o->import_id = in->import_id;
    int rc = pc_db_begin(app->db, NULL, open_begin_cb, o);
    if (rc < 0)
        free(o);
    return rc;
}

/* ---------- POST /admin/chargebacks (offline entry) ---------- */

typedef struct {
    pc_http_req_t *req;
    int64_t amount;
    char payment_no[65];
} entry_t;

static void entry_opened(void *data, open_outcome_t outcome, int status, pc_api_err_t err,
                         const char *why, const char *json_text)
{
    entry_t *e = data;
    switch (outcome) {
    case OPEN_CREATED:
        pc_respond_json_text(e->req, 201, json_text);
        break;
    case OPEN_DUPLICATE: {
        /* The same reference again: the same case if it says the same. */
        json_t *j = json_loads(json_text, 0, NULL);
        int same = j && json_integer_value(json_object_get(j, "amount")) == e->amount &&
                   (!e->payment_no[0] ||
                    !strcmp(json_string_value(json_object_get(j, "payment_no")), e->payment_no));
        json_decref(j);
        if (same)
            pc_respond_json_text(e->req, 200, json_text);
        else
            pc_http_respond_error(e->req, PC_API_INVALID_STATE, "reference",
                                  "this reference names another chargeback already");
        break;
    }
    case OPEN_UNMATCHED:
        pc_http_respond_error(e->req, err, NULL, why);
        break;
    case OPEN_FAILED:
        pc_respond_db_error(e->req, status);
        break;
    }
    free(e);
}

static void enter_chargeback(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    json_t *b = pc_http_req_json(req);
    if (!b) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, NULL, "body must be a JSON object");
        return;
    }
    int bad = 0;
    /* Spaces around a reference pasted from an e-mail are dropped: kept,
     * the same case from the channel's file (whose references have none)
     * would open a second time. */
    const char *given = json_string_value(json_object_get(b, "reference"));
    char ref[129] = "";
    if (given) {
        while (*given == ' ' || *given == '\t')
            given++;
        size_t n = strlen(given);
        while (n > 0 && (given[n - 1] == ' ' || given[n - 1] == '\t'))
            n--;
        if (n < sizeof ref)
            snprintf(ref, sizeof ref, "%.*s", (int)n, given);
    }
    if (!pc_cb_ref_ok(ref)) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "reference",
                              "the case's reference as the channel writes it: 1-128 printable "
                              "ASCII characters without spaces");
        return;
    }
    const char *channel = pc_json_str(b, "channel_id", 32, 1, &bad);
    if (bad) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "channel_id", "a channel id");
        return;
    }
    const char *txn = json_string_value(json_object_get(b, "channel_txn_id"));
    if (txn && !pc_printable(txn, 80)) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "channel_txn_id",
                              "1-80 printable characters");
        return;
    }
    const char *payment_no = pc_json_str(b, "payment_no", 64, 1, &bad);
    if (bad) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "payment_no", "a payment number");
        return;
    }
    if (!payment_no && !(channel && txn)) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "channel_txn_id",
                              "name the payment: channel_id and channel_txn_id, or payment_no");
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
    const char *reason = json_string_value(json_object_get(b, "reason_code"));
    if (reason && !pc_printable(reason, 32)) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "reason_code",
                              "1-32 printable characters");
        return;
    }
    long long due = 0, at = 0;
    const char *due_s = json_string_value(json_object_get(b, "evidence_due_at"));
    if (json_object_get(b, "evidence_due_at") && (!due_s || pc_cb_parse_time(due_s, &due))) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "evidence_due_at", "an RFC 3339 time");
        return;
    }
    /* A deadline already past (a year mistyped) opened a case whose
     * merchant could send no evidence at all, judged at once. */
    if (json_object_get(b, "evidence_due_at") && due <= (long long)time(NULL)) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "evidence_due_at",
                              "a time still to come: the merchant's last day for evidence");
        return;
    }
    const char *at_s = json_string_value(json_object_get(b, "time"));
    if (json_object_get(b, "time") && (!at_s || pc_cb_parse_time(at_s, &at))) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "time", "an RFC 3339 time");
        return;
    }
    json_t *another = json_object_get(b, "another_dispute");
    if (another && !json_is_boolean(another)) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "another_dispute",
                              "true when this is not the case of the same sum already there");
        return;
    }
    entry_t *e = calloc(1, sizeof *e);
    e->req = req;
    e->amount = amount;
    snprintf(e->payment_no, sizeof e->payment_no, "%s", payment_no ? payment_no : "");
    open_in_t in = {.source = "OFFLINE",
                    .source_ref = ref,
                    .channel_id = channel,
                    .channel_txn_id = txn,
                    .payment_no = payment_no,
                    .amount = amount,
                    .currency = cur,
                    .reason_code = reason,
                    .channel_time = at,
                    .respond_by = due,
                    .entered_by = pc_operator_of(req),
                    .another_dispute = json_is_true(another)};
    if (open_case(app, &in, entry_opened, e) < 0) {
        free(e);
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
    }
}

/* ---------- POST /admin/chargebacks/import ---------- */

typedef struct {
    pc_app_t *app;
    pc_http_req_t *req; /* NULL for the daily job's import (done is called) */
    void (*done)(void *data, int ok);
    void *done_data;
    char channel_id[33], date[11], origin[8];
    char *text;
    size_t len;
    pc_cb_csv_line_t *lines;
    size_t nlines, next;
    long long import_id;
    int fresh;
    int created, duplicates, unmatched;
    json_t *created_nos, *unmatched_lines;
} import_t;

static void import_free(import_t *im)
{
    free(im->text);
    free(im->lines);
    json_decref(im->created_nos);
    json_decref(im->unmatched_lines);
    free(im);
}

/* The import ends: answered (a request's), or said in the log and handed
 * back to the daily job; im is freed. answer (taken) is the result, NULL
 * for a failure: err, field and msg, or db_status when a statement failed. */
static void import_end(import_t *im, json_t *answer, pc_api_err_t err, const char *field,
                       const char *msg, int db_status)
{
    if (im->req) {
        if (answer)
            pc_http_respond_json(im->req, 200, answer);
        else if (db_status)
            pc_respond_db_error(im->req, db_status);
        else
            pc_http_respond_error(im->req, err, field, msg);
    } else {
        json_decref(answer);
        if (!answer)
            pc_log_warn("chargeback.daily_import_failed",
                        "the chargeback file of %s for %s: %s (tried again later; POST "
                        "/admin/chargebacks/import imports it by hand)",
                        im->channel_id, im->date, db_status ? pc_strerror(db_status) : msg);
        im->done(im->done_data, answer != NULL);
    }
    import_free(im);
}

static void import_next(import_t *im);

static void import_counted_cb(void *data, int status, pc_db_res_t *res)
{
    import_t *im = data;
    (void)res;
    if (status) {
        import_end(im, NULL, PC_API_OK, NULL, NULL, status);
        return;
    }
    json_t *answer = json_pack(
        "{s:I,s:s,s:s,s:s,s:I,s:i,s:i,s:i,s:O,s:O}", "import_id", (json_int_t)im->import_id,
        "channel_id", im->channel_id, "date", im->date, "origin", im->origin, "lines",
        (json_int_t)im->nlines, "created", im->created, "duplicates", im->duplicates, "unmatched",
        im->unmatched, "chargebacks", im->created_nos, "unmatched_lines", im->unmatched_lines);
    pc_log_info("chargeback.imported", "%s %s (%s): %zu lines, %d new, %d duplicates, %d unmatched",
                im->channel_id, im->date, im->origin, im->nlines, im->created, im->duplicates,
                im->unmatched);
    import_end(im, answer, PC_API_OK, NULL, NULL, 0);
}

static void import_done(import_t *im)
{
    char id[24], lines[24], created[24], dups[24], unmatched[24];
    snprintf(id, sizeof id, "%lld", im->import_id);
    snprintf(lines, sizeof lines, "%zu", im->nlines);
    snprintf(created, sizeof created, "%d", im->created);
    snprintf(dups, sizeof dups, "%d", im->duplicates);
    snprintf(unmatched, sizeof unmatched, "%d", im->unmatched);
    const char *p[] = {id, lines, created, dups, unmatched, im->fresh ? "t" : "f"};
    /* A file imported again keeps its first counts; only cases a re-run
     * created (after a run that stopped half way) are added. */
    if (pc_db_query(im->app->db,
                    "UPDATE chargeback_imports SET lines = $2::int, created = created + "
                    "$3::int, duplicates = CASE WHEN $6::boolean THEN $4::int ELSE duplicates "
                    "END, unmatched = CASE WHEN $6::boolean THEN $5::int ELSE unmatched END, "
                    "completed_at = coalesce(completed_at, now()) WHERE import_id = $1::bigint",
                    6, p, import_counted_cb, im) < 0) {
        import_end(im, NULL, PC_API_UNAVAILABLE, NULL, "database unavailable", 0);
    }
}

static void unmatched_recorded_cb(void *data, int status, pc_db_res_t *res)
{
    import_t *im = data;
    (void)res;
    if (status) {
        import_end(im, NULL, PC_API_OK, NULL, NULL, status);
        return;
    }
    import_next(im);
}

static void record_unmatched(import_t *im, const pc_cb_csv_line_t *l, const char *why)
{
    im->unmatched++;
    json_array_append_new(im->unmatched_lines,
                          json_pack("{s:i,s:s,s:s}", "line", l->line_no, "chargeback_ref",
                                    l->chargeback_ref, "reason", why));
    if (!l->chargeback_ref[0]) {
        /* Nothing to key it by: reported, not kept. */
        import_next(im);
        return;
    }
    char id[24], amount[24];
    snprintf(id, sizeof id, "%lld", im->import_id);
    snprintf(amount, sizeof amount, "%lld", (long long)l->amount);
    /* The payment it names, when it names one of this channel's (by the
     * channel's reference, else our number), and its sum: until ops
     * resolve the line, that much of the payment is not refundable and its
     * error refund waits (chargeback_open_on_payment, migration 0100). Also
     * for a line unusable for a later field (a reason code with a space, a
     * time in another format): before, such a line held nothing, and the
     * merchant could refund what the bank had given back already. */
    const char *p[] = {im->channel_id,
                       l->chargeback_ref,
                       id,
                       l->raw,
                       why,
                       l->names_payment ? l->channel_ref : NULL,
                       l->names_payment && l->paycore_ref[0] ? l->paycore_ref : NULL,
                       l->names_payment ? amount : NULL};
    /* Not held twice: a line whose case holds its sum already (its
     * reference, or the same dispute entered by ops under another: open, or
     * judged for the cardholder) keeps its payment but no sum; the case
     * holds it. A case under its reference for another payment or sum
     * holds nothing of this line's: before, such a line held nothing, and
     * the merchant could refund what the bank had given back. */
    if (pc_db_query(im->app->db,
                    "WITH p AS (SELECT coalesce((SELECT payment_no FROM payments WHERE channel_id "
                    "= $1 AND channel_txn_id = $6), (SELECT payment_no FROM payments WHERE "
                    "payment_no = $7 AND channel_id = $1)) AS pno) "
                    "INSERT INTO chargeback_unmatched AS u (channel_id, chargeback_ref, import_id, "
                    "line, reason, payment_no, amount) SELECT $1, $2, $3::bigint, $4, $5, p.pno, "
                    "CASE WHEN EXISTS (SELECT 1 FROM chargebacks c WHERE c.payment_no = p.pno AND "
                    "c.amount = $8::bigint AND ((c.channel_id = $1 AND c.source_ref = $2) OR "
                    "c.status IN ('WAIT_JUDGE', 'IN_JUDGE') OR (c.status = 'JUDGE_FINISH' AND "
                    "c.liable IN ('MERCHANT', 'PLATFORM')))) THEN NULL ELSE $8::bigint END FROM p "
                    "ON CONFLICT (channel_id, chargeback_ref) "
                    "DO UPDATE SET import_id = EXCLUDED.import_id, line = EXCLUDED.line, reason = "
                    "EXCLUDED.reason, payment_no = EXCLUDED.payment_no, amount = EXCLUDED.amount, "
                    "updated_at = now() WHERE u.resolved_at IS NULL",
                    8, p, unmatched_recorded_cb, im) < 0) {
        import_end(im, NULL, PC_API_UNAVAILABLE, NULL, "database unavailable", 0);
    }
}

static void line_opened(void *data, open_outcome_t outcome, int status, pc_api_err_t err,
                        const char *why, const char *json_text)
{
    import_t *im = data;
    (void)err;
    const pc_cb_csv_line_t *l = &im->lines[im->next - 1];
    switch (outcome) {
    case OPEN_CREATED: {
        im->created++;
        json_t *j = json_loads(json_text, 0, NULL);
        json_array_append(im->created_nos, json_object_get(j, "chargeback_no"));
        json_decref(j);
        import_next(im);
        return;
    }
    case OPEN_DUPLICATE:
        im->duplicates++;
        import_next(im);
        return;
    case OPEN_UNMATCHED:
        record_unmatched(im, l, why);
        return;
    case OPEN_FAILED:
        /* Stop here: importing the file again resumes safely (every line
         * already opened is a duplicate then). */
        pc_log_warn("chargeback.import_stopped", "%s %s line %d: %s", im->channel_id, im->date,
                    l->line_no, pc_strerror(status));
        import_end(im, NULL, PC_API_OK, NULL, NULL, status);
        return;
    }
}

static void import_next(import_t *im)
{
    if (im->next >= im->nlines) {
        import_done(im);
        return;
    }
    const pc_cb_csv_line_t *l = &im->lines[im->next++];
    if (!l->ok) {
        record_unmatched(im, l, l->error);
        return;
    }
    open_in_t in = {.source = "ONLINE",
                    .source_ref = l->chargeback_ref,
                    .channel_id = im->channel_id,
                    .channel_txn_id = l->channel_ref,
                    .payment_no = l->paycore_ref[0] ? l->paycore_ref : NULL,
                    .amount = l->amount,
                    .currency = l->currency,
                    .reason_code = l->reason_code,
                    .channel_time = l->time,
                    .respond_by = l->respond_by,
                    .entered_by = "import",
                    .import_id = im->import_id};
    if (open_case(im->app, &in, line_opened, im) < 0) {
        import_end(im, NULL, PC_API_UNAVAILABLE, NULL, "database unavailable", 0);
    }
}

static void import_recorded_cb(void *data, int status, pc_db_res_t *res)
{
    import_t *im = data;
    if (status || pc_db_rows(res) != 1) {
        import_end(im, NULL, PC_API_OK, NULL, NULL, status ? status : PC_EIO);
        return;
    }
    im->import_id = pc_db_val_i64(res, 0, "import_id");
    im->fresh = pc_db_val(res, 0, "fresh")[0] == 't';
    import_next(im);
}

/* Parses the file and records the import; text is owned by im from here. */
static void import_parse(import_t *im)
{
    char err[160] = "";
    int rc = pc_cb_csv_parse(im->text, im->len, &im->lines, &im->nlines, err, sizeof err);
    if (rc) {
        char msg[200];
        snprintf(msg, sizeof msg, "chargeback file: %s", rc == PC_ENOMEM ? "out of memory" : err);
        import_end(im, NULL,
                   !strcmp(im->origin, "UPLOAD") ? PC_API_INVALID_REQUEST : PC_API_INTERNAL,
                   !strcmp(im->origin, "UPLOAD") ? "csv" : NULL, msg, 0);
        return;
    }
    char sha[PC_SHA256_HEX_LEN + 1];
    pc_sha256_hex(im->text, im->len, sha);
    const char *p[] = {im->channel_id, im->date, im->origin, sha};
    if (pc_db_query(im->app->db,
                    "INSERT INTO chargeback_imports AS i (channel_id, business_date, origin, "
                    "sha256) VALUES ($1, $2::date, $3, $4) ON CONFLICT ON CONSTRAINT "
                    "chargeback_imports_file DO UPDATE SET origin = i.origin RETURNING "
                    "import_id, (xmax = 0) AS fresh",
                    4, p, import_recorded_cb, im) < 0) {
        import_end(im, NULL, PC_API_UNAVAILABLE, NULL, "database unavailable", 0);
    }
}

static void file_fetched(void *data, int status, const char *body, size_t len)
{
    import_t *im = data;
    if (status) {
        char msg[160];
        snprintf(msg, sizeof msg, "could not fetch the chargeback file of %s for %s: %s",
                 im->channel_id, im->date, pc_strerror(status));
        import_end(im, NULL, status == PC_ENOTFOUND ? PC_API_NOT_FOUND : PC_API_UNAVAILABLE, NULL,
                   msg, 0);
        return;
    }
    im->text = malloc(len + 1);
    if (!im->text) {
        import_end(im, NULL, PC_API_UNAVAILABLE, NULL, "out of memory", 0);
        return;
    }
    memcpy(im->text, body, len);
    im->text[len] = 0;
    im->len = len;
    import_parse(im);
}

static import_t *import_new(pc_app_t *app, pc_http_req_t *req, const char *channel,
                            const char *date)
{
    import_t *im = calloc(1, sizeof *im);
    if (!im)
        return NULL;
    im->app = app;
    im->req = req;
    snprintf(im->channel_id, sizeof im->channel_id, "%s", channel);
    snprintf(im->date, sizeof im->date, "%s", date);
    im->created_nos = json_array();
    im->unmatched_lines = json_array();
    return im;
}

/* Fetches the channel's file of the day and imports it. */
static void import_fetch(import_t *im)
{
    snprintf(im->origin, sizeof im->origin, "FETCH");
    if (pc_channel_fetch_file(im->app->channel_client, im->channel_id, "chargebacks", im->date,
                              file_fetched, im) < 0)
        import_end(im, NULL, PC_API_UNAVAILABLE, NULL, "the channel cannot be asked now", 0);
}

static void import_chargebacks(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    const char *ctype = pc_http_req_header(req, "Content-Type");
    int raw_csv = ctype && !strncmp(ctype, "text/csv", 8);
    const char *channel = NULL, *date = NULL, *csv = NULL;
    size_t csv_len = 0;
    if (raw_csv) {
        channel = pc_http_req_query_param(req, "channel_id");
        date = pc_http_req_query_param(req, "date");
        csv = pc_http_req_body(req, &csv_len);
    } else {
        json_t *b = pc_http_req_json(req);
        if (!b) {
            pc_http_respond_error(
                req, PC_API_INVALID_REQUEST, NULL,
                "body must be a JSON object (or text/csv with ?channel_id=&date=)");
            return;
        }
        channel = json_string_value(json_object_get(b, "channel_id"));
        date = json_string_value(json_object_get(b, "date"));
        json_t *c = json_object_get(b, "csv");
        if (c && !json_is_string(c)) {
            pc_http_respond_error(req, PC_API_INVALID_REQUEST, "csv", "the file's text");
            return;
        }
        csv = json_string_value(c);
        csv_len = c ? json_string_length(c) : 0;
    }
    long long day;
    if (!channel || !pc_channels_find(app->channels, channel)) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "channel_id", "a configured channel");
        return;
    }
    if (!date || pc_cb_parse_date(date, &day)) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "date", "a business date YYYY-MM-DD");
        return;
    }
    import_t *im = import_new(app, req, channel, date);
    if (!im) {
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "out of memory");
        return;
    }
    if (csv) {
        snprintf(im->origin, sizeof im->origin, "UPLOAD");
        im->text = malloc(csv_len + 1);
        if (!im->text) {
            pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "out of memory");
            import_free(im);
            return;
        }
        memcpy(im->text, csv ? csv : "", csv_len);
        im->text[csv_len] = 0;
        im->len = csv_len;
        import_parse(im);
        return;
    }
    import_fetch(im);
}

/* ---------- reading cases ---------- */

static void json_text_cb(void *data, int status, pc_db_res_t *res)
{
    pc_http_req_t *req = data;
    if (status) {
        pc_respond_db_error(req, status);
        return;
    }
    if (pc_db_rows(res) == 0 || pc_db_isnull(res, 0, 0)) {
        pc_http_respond_error(req, PC_API_NOT_FOUND, NULL, "no such chargeback");
        return;
    }
    pc_respond_json_text(req, 200, pc_db_get(res, 0, 0));
}

/* Newest first, ?limit= at a time (500 when absent, at most 1000); when a
 * page is full, next_after names its last case: ?after= that continues
 * after it. (A list that stopped at 500 hid the rest.) */
static void list_cases(pc_http_req_t *req, pc_app_t *app, const char *merchant_id)
{
    const char *status = pc_http_req_query_param(req, "status");
    if (status && !is_status(status)) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "status",
                              "WAIT_JUDGE, IN_JUDGE, JUDGE_FINISH or CLOSE");
        return;
    }
    char lim[8];
    const char *limit, *after;
    if (pc_page_params(req, 500, lim, &limit, &after, "after: a chargeback_no (next_after)") < 0)
        return;
    const char *p[] = {merchant_id, status, after, limit};
    if (pc_db_query(
            app->db,
            "SELECT json_build_object('chargebacks', coalesce(json_agg(chargeback_json(c) ORDER BY "
            "c.created_at DESC, c.chargeback_no DESC), '[]'::json), 'next_after', CASE WHEN "
            "count(*) = $4::int THEN (array_agg(c.chargeback_no ORDER BY c.created_at, "
            "c.chargeback_no))[1] END)::text FROM (SELECT * FROM chargebacks WHERE ($1::text IS "
            "NULL OR merchant_id = $1) AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL "
            "OR (created_at, chargeback_no) < (SELECT created_at, chargeback_no FROM chargebacks "
            "WHERE chargeback_no = $3)) ORDER BY created_at DESC, chargeback_no DESC LIMIT "
            "$4::int) c",
            4, p, json_text_cb, req) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

static void get_case(pc_http_req_t *req, pc_app_t *app, const char *merchant_id)
{
    const char *p[] = {pc_http_req_param(req, "chargeback_no"), merchant_id};
    if (pc_db_query(app->db,
                    "SELECT chargeback_json(c)::text FROM chargebacks c WHERE chargeback_no = $1 "
                    "AND ($2::text IS NULL OR merchant_id = $2)",
                    2, p, json_text_cb, req) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

static void merchant_list(pc_http_req_t *req, void *data)
{
    list_cases(req, data, pc_auth_merchant(req)->id);
}

static void merchant_get(pc_http_req_t *req, void *data)
{
    get_case(req, data, pc_auth_merchant(req)->id);
}

static void admin_list(pc_http_req_t *req, void *data)
{
    const char *m = pc_http_req_query_param(req, "merchant_id");
    list_cases(req, data, m && m[0] ? m : NULL);
}

static void admin_get(pc_http_req_t *req, void *data)
{
    get_case(req, data, NULL);
}

/* ---------- lines no case could be opened for ---------- */

static void list_unmatched(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    const char *st = pc_http_req_query_param(req, "status");
    if (st && strcmp(st, "OPEN") != 0 && strcmp(st, "RESOLVED") != 0 && strcmp(st, "ALL") != 0) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "status", "OPEN, RESOLVED or ALL");
        return;
    }
    const char *p[] = {st ? st : "OPEN"};
    if (pc_db_query(app->db,
                    "SELECT json_build_object('unmatched', coalesce(json_agg(json_build_object("
                    "'channel_id', channel_id, 'chargeback_ref', chargeback_ref, 'import_id', "
                    "import_id, 'line', line, 'reason', reason, 'created_at', to_char(created_at "
                    "AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), 'resolved_at', "
                    "to_char(resolved_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
                    "'resolved_by', resolved_by, 'resolution', resolution) ORDER BY created_at), "
                    "'[]'))::text FROM (SELECT * FROM chargeback_unmatched WHERE $1 = 'ALL' OR "
                    "($1 = 'OPEN') = (resolved_at IS NULL) ORDER BY created_at DESC LIMIT 500) x",
                    1, p, pc_respond_json_row_cb, req) < 0)
        pc_respond_db_error(req, PC_EUNAVAIL);
}

static void unmatched_resolved_cb(void *data, int status, pc_db_res_t *res)
{
    pc_http_req_t *req = data;
    if (status) {
        pc_respond_db_error(req, status);
        return;
    }
    if (pc_db_rows(res) == 0) {
        pc_http_respond_error(req, PC_API_NOT_FOUND, NULL,
                              "no unresolved line with this channel and reference");
        return;
    }
    pc_respond_json_text(req, 200, pc_db_get(res, 0, 0));
}

/* Ops dealt with a line by hand (a wallet top-up frozen by hand, a payment
 * found elsewhere): why is kept, with who. */
static void resolve_unmatched(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    json_t *b = pc_http_req_json(req);
    const char *why = b ? json_string_value(json_object_get(b, "why")) : NULL;
    if (!why || !why[0] || strlen(why) > 500) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "why",
                              "what was done about it: 1-500 characters");
        return;
    }
    const char *p[] = {pc_http_req_param(req, "channel_id"),
                       pc_http_req_param(req, "chargeback_ref"), pc_operator_of(req), why};
    if (pc_db_query(app->db,
                    "UPDATE chargeback_unmatched SET resolved_at = now(), resolved_by = $3, "
                    "resolution = $4, updated_at = now() WHERE channel_id = $1 AND "
                    "chargeback_ref = $2 AND resolved_at IS NULL RETURNING json_build_object("
                    "'channel_id', channel_id, 'chargeback_ref', chargeback_ref, 'reason', "
                    "reason, 'resolved_by', resolved_by, 'resolution', resolution)::text",
                    4, p, unmatched_resolved_cb, req) < 0)
        pc_respond_db_error(req, PC_EUNAVAIL);
}

/* ---------- POST /v1/chargebacks/{no}/evidence ---------- */

typedef struct {
    pc_http_req_t *req;
    pc_app_t *app;
    pc_db_tx_t *tx;
    char *evidence; /* JSON text of the entry to append */
    char *body;
} evidence_t;

static void evidence_free(void *arg)
{
    evidence_t *e = arg;
    free(e->evidence);
    free(e->body);
}

static void evidence_fail(evidence_t *e, pc_api_err_t err, const char *msg)
{
    if (e->tx)
        pc_db_tx_rollback(e->tx);
    e->tx = NULL;
    pc_http_respond_error(e->req, err, NULL, msg);
}

static void evidence_commit_cb(void *data, int status)
{
    evidence_t *e = data;
    if (status) {
        pc_http_respond_error(e->req, PC_API_UNAVAILABLE, NULL,
                              "not recorded; retry with the same Idempotency-Key");
        return;
    }
    pc_http_respond(e->req, 200, "application/json", e->body, strlen(e->body));
}

static void evidence_why_cb(void *data, int status, pc_db_res_t *res)
{
    evidence_t *e = data;
    if (status) {
        evidence_fail(e, PC_API_UNAVAILABLE, "database unavailable");
        return;
    }
    if (pc_db_rows(res) == 0) {
        evidence_fail(e, PC_API_NOT_FOUND, "no such chargeback");
        return;
    }
    const char *st = pc_db_val(res, 0, "status");
    char msg[160];
    if (strcmp(st, "WAIT_JUDGE") != 0)
        snprintf(msg, sizeof msg, "the chargeback is %s: evidence is closed", st);
    else if (pc_db_val(res, 0, "late")[0] == 't')
        snprintf(msg, sizeof msg, "evidence was due by %s", pc_db_val(res, 0, "due"));
    else {
        evidence_fail(e, PC_API_LIMIT_EXCEEDED, "at most 20 evidence submissions per chargeback");
        return;
    }
    evidence_fail(e, PC_API_INVALID_STATE, msg);
}

static void evidence_updated_cb(void *data, int status, pc_db_res_t *res)
{
    evidence_t *e = data;
    if (status) {
        evidence_fail(e, PC_API_UNAVAILABLE, "database unavailable");
        return;
    }
    if (pc_db_rows(res) == 0) {
        const char *p[] = {pc_http_req_param(e->req, "chargeback_no"),
                           pc_auth_merchant(e->req)->id};
        if (pc_db_tx_query(e->tx,
                           "SELECT status, evidence_due_at <= now() AS late, "
                           "to_char(evidence_due_at AT TIME ZONE 'UTC', "
                           "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS due FROM chargebacks WHERE "
                           "chargeback_no = $1 AND merchant_id = $2",
                           2, p, evidence_why_cb, e) < 0)
            evidence_fail(e, PC_API_UNAVAILABLE, "database unavailable");
        return;
    }
    json_t *obj = json_loads(pc_db_get(res, 0, 0), 0, NULL);
    e->body = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(obj);
    if (!e->body) {
        evidence_fail(e, PC_API_INTERNAL, "could not encode the answer");
        return;
    }
    pc_idem_store_in_tx(pc_auth_idem(e->req), e->tx, 200, e->body);
    pc_db_tx_commit(e->tx, evidence_commit_cb, e);
}

static void evidence_begin_cb(void *data, int status, pc_db_tx_t *tx)
{
    evidence_t *e = data;
    if (status) {
        evidence_fail(e, PC_API_UNAVAILABLE, "database unavailable");
        return;
    }
    e->tx = tx;
    const char *p[] = {pc_http_req_param(e->req, "chargeback_no"), pc_auth_merchant(e->req)->id,
                       e->evidence};
    /* The conditional update is the deadline: evidence counts only while the
     * case waits for judgement and before it is due, by the database's clock. */
    if (pc_db_tx_query(tx,
                       "UPDATE chargebacks c SET evidence = c.evidence || jsonb_build_array("
                       "$3::jsonb || jsonb_build_object('submitted_at', to_char(now() AT TIME "
                       "ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'))), updated_at = now() WHERE "
                       "chargeback_no = $1 AND merchant_id = $2 AND status = 'WAIT_JUDGE' AND "
                       "evidence_due_at > now() AND jsonb_array_length(c.evidence) < 20 "
                       "RETURNING chargeback_json(c)::text",
                       3, p, evidence_updated_cb, e) < 0)
        evidence_fail(e, PC_API_UNAVAILABLE, "database unavailable");
}

static int is_hex64(const char *s)
{
    if (!s || strlen(s) != 64)
        return 0;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f') || (*s >= 'A' && *s <= 'F')))
            return 0;
    return 1;
}

static void submit_evidence(pc_http_req_t *req, void *data)
{
    json_t *b = pc_http_req_json(req);
    if (!b) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, NULL, "body must be a JSON object");
        return;
    }
    json_t *text = json_object_get(b, "text");
    if (text && (!json_is_string(text) || json_string_length(text) > 4000 ||
                 strlen(json_string_value(text)) != json_string_length(text))) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "text", "at most 4000 characters");
        return;
    }
    json_t *att = json_object_get(b, "attachments");
    json_t *clean = json_array();
    if (att && !json_is_null(att)) {
        if (!json_is_array(att) || json_array_size(att) > 20) {
            json_decref(clean);
            pc_http_respond_error(req, PC_API_INVALID_REQUEST, "attachments",
                                  "a list of at most 20 {name, sha256}");
            return;
        }
        size_t i;
        json_t *a;
        json_array_foreach(att, i, a)
        {
            const char *name = json_string_value(json_object_get(a, "name"));
            const char *sha = json_string_value(json_object_get(a, "sha256"));
            if (!name || !pc_printable(name, 128) || !is_hex64(sha)) {
                json_decref(clean);
                pc_http_respond_error(req, PC_API_INVALID_REQUEST, "attachments",
                                      "each attachment: name (1-128 characters) and sha256 "
                                      "(64 hex digits)");
                return;
            }
            json_array_append_new(clean, json_pack("{s:s,s:s}", "name", name, "sha256", sha));
        }
    }
    if ((!text || json_string_length(text) == 0) && json_array_size(clean) == 0) {
        json_decref(clean);
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "text", "give a text or attachments");
        return;
    }
    evidence_t *e = pc_http_req_alloc(req, sizeof *e);
    e->req = req;
    e->app = data;
    pc_http_req_on_done(req, evidence_free, e);
    json_t *entry =
        json_pack("{s:s,s:o}", "text", text ? json_string_value(text) : "", "attachments", clean);
    e->evidence = json_dumps(entry, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(entry);
    if (!e->evidence || pc_db_begin(e->app->db, NULL, evidence_begin_cb, e) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

/* ---------- admin transitions ---------- */

static void explain_cb(void *data, int status, pc_db_res_t *res)
{
    pc_http_req_t *req = data;
    if (status) {
        pc_respond_db_error(req, status);
        return;
    }
    if (pc_db_rows(res) == 0) {
        pc_http_respond_error(req, PC_API_NOT_FOUND, NULL, "no such chargeback");
        return;
    }
    char msg[96];
    snprintf(msg, sizeof msg, "the chargeback is %s", pc_db_get(res, 0, 0));
    pc_http_respond_error(req, PC_API_INVALID_STATE, NULL, msg);
}

/* Answers why a conditional update matched nothing: no case, or another state. */
static void explain(pc_http_req_t *req, pc_app_t *app)
{
    const char *p[] = {pc_http_req_param(req, "chargeback_no")};
    if (pc_db_query(app->db, "SELECT status FROM chargebacks WHERE chargeback_no = $1", 1, p,
                    explain_cb, req) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
}

typedef struct {
    pc_http_req_t *req;
    pc_app_t *app;
} start_t;

static void started_cb(void *data, int status, pc_db_res_t *res)
{
    start_t *s = data;
    if (status)
        pc_respond_db_error(s->req, status);
    else if (pc_db_rows(res) == 0)
        explain(s->req, s->app);
    else
        pc_respond_json_text(s->req, 200, pc_db_get(res, 0, 0));
    free(s);
}

static void too_early_cb(void *data, int status, pc_db_res_t *res)
{
    pc_http_req_t *req = data;
    if (status || pc_db_rows(res) == 0 || pc_db_get(res, 0, 1)[0] != 't') {
        explain_cb(req, status, res);
        return;
    }
    char msg[200];
    snprintf(msg, sizeof msg,
             "the merchant may send evidence until %s and has sent none: judge then, or give a "
             "why to judge now",
             pc_db_get(res, 0, 2));
    pc_http_respond_error(req, PC_API_INVALID_STATE, NULL, msg);
}

static void start_refused_cb(void *data, int status, pc_db_res_t *res)
{
    start_t *s = data;
    (void)res;
    if (status) {
        pc_respond_db_error(s->req, status);
        free(s);
        return;
    }
    const char *p[] = {pc_http_req_param(s->req, "chargeback_no")};
    if (pc_db_query(s->app->db,
                    "SELECT status, (status = 'WAIT_JUDGE')::text AS early, to_char("
                    "evidence_due_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM "
                    "chargebacks WHERE chargeback_no = $1",
                    1, p, too_early_cb, s->req) < 0)
        pc_http_respond_error(s->req, PC_API_UNAVAILABLE, NULL, "database unavailable");
    free(s);
}

static void start_cb(void *data, int status, pc_db_res_t *res)
{
    start_t *s = data;
    if (!status && pc_db_rows(res) == 0) {
        start_refused_cb(s, 0, res);
        return;
    }
    started_cb(s, status, res);
}

/* WAIT_JUDGE → IN_JUDGE, which closes evidence: once the merchant's
 * deadline passed or it sent evidence; before that only with a why (kept in
 * the judge note), as the merchant may send evidence until the deadline
 * (system.md). Before, ops could start at once and the merchant's evidence
 * of the next day was refused. */
static void start_judge(pc_http_req_t *req, void *data)
{
    json_t *b = pc_http_req_json(req);
    const char *why = b ? json_string_value(json_object_get(b, "why")) : NULL;
    if (why && (!why[0] || strlen(why) > 500)) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "why", "1-500 characters");
        return;
    }
    start_t *s = calloc(1, sizeof *s);
    s->req = req;
    s->app = data;
    const char *p[] = {pc_http_req_param(req, "chargeback_no"), why, pc_operator_of(req)};
    if (pc_db_query(s->app->db,
                    "UPDATE chargebacks c SET status = 'IN_JUDGE', judge_started_at = now(), "
                    "judge_started_by = $3, "
                    "judge_note = CASE WHEN $2::text IS NOT NULL AND evidence_due_at > now() THEN "
                    "'judged before the evidence deadline: ' || $2 ELSE judge_note END, "
                    "updated_at = now() WHERE chargeback_no = $1 AND status = 'WAIT_JUDGE' AND "
                    "(evidence_due_at <= now() OR jsonb_array_length(evidence) > 0 OR $2::text IS "
                    "NOT NULL) RETURNING chargeback_json(c)::text",
                    3, p, start_cb, s) < 0) {
        free(s);
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
    }
}

/* Judge (IN_JUDGE → JUDGE_FINISH) and close (WAIT_JUDGE → CLOSE): one
 * transaction each with the reserve's movement and the notification. */
typedef struct {
    pc_http_req_t *req;
    pc_app_t *app;
    pc_db_tx_t *tx;
    int closing;
    pc_cb_liable_t liable;
    char note[1001];
    char no[40], merchant_id[65], channel_id[33], currency[4], trade_no[65], notify_url[520];
    int64_t amount;
    pc_cb_hold_t hold;
    pc_cb_release_t rel;
    char *json;
} decide_t;

static void decide_free(decide_t *d)
{
    free(d->json);
    free(d);
}

static void decide_fail(decide_t *d, int status)
{
    if (d->tx)
        pc_db_tx_rollback(d->tx);
    d->tx = NULL;
    pc_respond_db_error(d->req, status ? status : PC_EIO);
    decide_free(d);
}

static void decide_commit_cb(void *data, int status)
{
    decide_t *d = data;
    d->tx = NULL;
    if (status) {
        decide_fail(d, status);
        return;
    }
    const char *what = d->closing ? "CLOSE" : pc_cb_liable_name(d->liable);
    char labels[48];
    snprintf(labels, sizeof labels, "liable=\"%s\"", what);
    pc_metrics_add("pc_chargebacks_judged_total", labels, 1);
    pc_log_info("chargeback.decided",
                "%s: %s; %lld %s: to pending %lld, available %lld, receivable %lld", d->no,
                d->closing ? "closed" : what, (long long)d->amount, d->currency,
                (long long)d->rel.to_pending, (long long)d->rel.to_available,
                (long long)d->rel.to_receivable);
    refresh_rate(d->app, d->merchant_id);
    pc_respond_json_text(d->req, 200, d->json);
    decide_free(d);
}

static void decide_notify(decide_t *d);
static void decide_trade_cb(void *data, int status, pc_db_res_t *res);

static void decide_released_cb(void *data, int status, pc_db_res_t *res)
{
    decide_t *d = data;
    if (status || pc_db_rows(res) != 1) {
        decide_fail(d, status);
        return;
    }
    d->json = strdup(pc_db_get(res, 0, 0));
    pc_cb_legs_t legs;
    int rc = pc_cb_legs_decide(d->liable, d->closing, d->merchant_id, d->channel_id, d->currency,
                               &d->hold, &d->rel, &legs);
    if (!rc && legs.n > 0) {
        pc_ledger_txn_t txn = {d->closing ? "CHARGEBACK_CLOSE" : "CHARGEBACK_JUDGE",
                               "chargeback",
                               d->no,
                               d->trade_no,
                               legs.legs,
                               legs.n};
        rc = pc_ledger_post(d->tx, &txn, post_logged_cb,
                            d->closing ? "CHARGEBACK_CLOSE" : "CHARGEBACK_JUDGE");
    }
    if (!rc && !d->closing && d->liable == PC_CB_LIABLE_MERCHANT && !d->hold.from_escrow) {
        char amount[24], owed[24];
        snprintf(amount, sizeof amount, "%lld", (long long)d->amount);
        snprintf(owed, sizeof owed, "%lld", (long long)d->hold.owed);
        const char *p[] = {d->no, d->merchant_id, d->channel_id, amount, d->currency, owed};
        rc = pc_db_tx_query(d->tx,
                            "INSERT INTO chargeback_compensations (chargeback_no, merchant_id, "
                            "channel_id, amount, currency, owed_at_judgement) VALUES ($1, $2, $3, "
                            "$4::bigint, $5, $6::bigint)",
                            6, p, ignore_cb, NULL);
    }
    if (rc) {
        pc_log_error("chargeback.decide", "%s: %s", d->no, pc_ledger_strerror(rc));
        decide_fail(d, rc);
        return;
    }
    /* Escrow paid the cardholder the part it held: the trade may have
     * nothing left to settle (or refund) now, and is finished as a settle
     * of the rest would have finished it (under the trade's lock, taken
     * first by decide_begin_cb). */
    if (!d->closing && d->liable == PC_CB_LIABLE_MERCHANT && d->hold.from_unsettled > 0) {
        const char *t[] = {d->trade_no};
        if (pc_db_tx_query(d->tx, PC_TRADE_FINISH_GUARANTEE_SQL, 1, t, decide_trade_cb, d) < 0)
            decide_fail(d, PC_EUNAVAIL);
        return;
    }
    decide_notify(d);
}

/* Queues the case's notification and commits. */
static void decide_notify(decide_t *d)
{
    json_t *obj = json_loads(d->json, 0, NULL);
    int rc = obj ? pc_outbox_add(d->tx, d->merchant_id,
                                 d->closing ? "chargeback.closed" : "chargeback.judged",
                                 d->notify_url[0] ? d->notify_url : NULL, obj)
                 : PC_ENOMEM;
    json_decref(obj);
    if (rc) {
        pc_log_error("chargeback.decide", "%s: %s", d->no, pc_ledger_strerror(rc));
        decide_fail(d, rc);
        return;
    }
    pc_db_tx_commit(d->tx, decide_commit_cb, d);
}

static void decide_trade_cb(void *data, int status, pc_db_res_t *res)
{
    decide_t *d = data;
    if (status) {
        decide_fail(d, status);
        return;
    }
    if (pc_db_rows(res) == 1) {
        int rc = pc_trade_outbox_row(d->tx, res, 0, "trade.succeeded", NULL);
        if (rc) {
            decide_fail(d, rc);
            return;
        }
        pc_log_info("chargeback.trade_finished",
                    "%s: trade %s has nothing left in escrow to settle: TRADE_SUCCESS", d->no,
                    d->trade_no);
    }
    decide_notify(d);
}

static void decide_release(decide_t *d);

static void decide_locked_cb(void *data, int status, pc_db_res_t *res)
{
    decide_t *d = data;
    if (status) {
        decide_fail(d, status);
        return;
    }
    int64_t receivable = 0;
    for (int i = 0; i < pc_db_rows(res); i++)
        if (pc_ledger_is_type(pc_db_val(res, i, "account_id"), PC_LEDGER_MERCHANT_RECEIVABLE))
            receivable = pc_db_val_i64(res, i, "balance");
    memset(&d->rel, 0, sizeof d->rel);
    if (d->closing || d->liable != PC_CB_LIABLE_MERCHANT) {
        if (pc_cb_release_split(&d->hold, receivable < 0 ? -receivable : 0, &d->rel)) {
            decide_fail(d, PC_EINVAL);
            return;
        }
    }
    decide_release(d);
}

/* Records where the reserve goes (d->rel) and posts the decision. */
static void decide_release(decide_t *d)
{
    char tp[24], ta[24], tr[24];
    snprintf(tp, sizeof tp, "%lld", (long long)d->rel.to_pending);
    snprintf(ta, sizeof ta, "%lld", (long long)d->rel.to_available);
    snprintf(tr, sizeof tr, "%lld", (long long)d->rel.to_receivable);
    const char *p[] = {d->no, tp, ta, tr};
    if (pc_db_tx_query(d->tx,
                       "UPDATE chargebacks c SET released_to_pending = $2::bigint, "
                       "released_to_available = $3::bigint, released_to_receivable = $4::bigint "
                       "WHERE chargeback_no = $1 RETURNING chargeback_json(c)::text",
                       4, p, decide_released_cb, d) < 0)
        decide_fail(d, PC_EUNAVAIL);
}

static void decide_updated_cb(void *data, int status, pc_db_res_t *res)
{
    decide_t *d = data;
    if (status) {
        decide_fail(d, status);
        return;
    }
    if (pc_db_rows(res) == 0) {
        pc_db_tx_rollback(d->tx);
        d->tx = NULL;
        explain(d->req, d->app);
        decide_free(d);
        return;
    }
    snprintf(d->merchant_id, sizeof d->merchant_id, "%s", pc_db_val(res, 0, "merchant_id"));
    snprintf(d->channel_id, sizeof d->channel_id, "%s", pc_db_val(res, 0, "channel_id"));
    snprintf(d->currency, sizeof d->currency, "%s", pc_db_val(res, 0, "currency"));
    snprintf(d->trade_no, sizeof d->trade_no, "%s", pc_db_val(res, 0, "trade_no"));
    snprintf(d->notify_url, sizeof d->notify_url, "%s", pc_db_val(res, 0, "notify_url"));
    d->amount = pc_db_val_i64(res, 0, "amount");
    d->hold.from_pending = pc_db_val_i64(res, 0, "from_pending");
    d->hold.from_available = pc_db_val_i64(res, 0, "from_available");
    d->hold.owed = pc_db_val_i64(res, 0, "owed");
    d->hold.from_escrow = pc_db_val_i64(res, 0, "from_escrow");
    d->hold.from_unsettled = pc_db_val_i64(res, 0, "from_unsettled");
    if (pc_cb_hold_frozen(&d->hold) == 0) {
        /* Nothing of the merchant's was frozen, nothing is released. */
        decide_release(d);
        return;
    }
    /* All the merchant's accounts the posting may touch, in the ledger's
     * lock order, so the receivable read below stays true until commit. */
    static const pc_ledger_type_t types[] = {
        PC_LEDGER_MERCHANT_AVAILABLE, PC_LEDGER_MERCHANT_PENDING, PC_LEDGER_MERCHANT_RECEIVABLE,
        PC_LEDGER_MERCHANT_RESERVE};
    char ids[4 * (PC_LEDGER_ID_MAX + 1) + 4] = "{";
    for (size_t i = 0; i < 4; i++) {
        char id[PC_LEDGER_ID_MAX + 1];
        if (pc_ledger_account_id(id, sizeof id, types[i], d->merchant_id, d->currency)) {
            decide_fail(d, PC_EINVAL);
            return;
        }
        strcat(ids, id);
        strcat(ids, i < 3 ? "," : "}");
    }
    const char *p[] = {ids};
    if (pc_db_tx_query(d->tx,
                       /* Locked, queued deltas folded: exact balances. */
                       "SELECT account_id, balance FROM ledger_lock_accounts($1::text[])", 1, p,
                       decide_locked_cb, d) < 0)
        decide_fail(d, PC_EUNAVAIL);
}

static void decide_begin_cb(void *data, int status, pc_db_tx_t *tx)
{
    decide_t *d = data;
    if (status) {
        decide_fail(d, status);
        return;
    }
    d->tx = tx;
    /* The case's trade row first, as settles, refunds and case openings
     * take it before any ledger row: a judgement that moves escrow (a
     * ledger row every settle and refund of the currency locks) and then
     * waited for the trade would deadlock with a settle of that trade.
     * The statements after it start once it is granted. */
    const char *t[] = {d->no};
    if (pc_db_tx_query(tx,
                       "SELECT 1 FROM trades WHERE trade_no = (SELECT trade_no FROM chargebacks "
                       "WHERE chargeback_no = $1) FOR UPDATE",
                       1, t, NULL, NULL) < 0) {
        decide_fail(d, PC_EUNAVAIL);
        return;
    }
    const char *liable = d->closing ? NULL : pc_cb_liable_name(d->liable);
    const char *p[] = {d->no, liable, d->note[0] ? d->note : NULL, pc_operator_of(d->req)};
    const char *sql =
        d->closing
            ? "UPDATE chargebacks SET status = 'CLOSE', judge_note = coalesce($3, judge_note), "
              "decided_by = $4, closed_at = now(), updated_at = now() WHERE chargeback_no = $1 AND "
              "status = "
              "'WAIT_JUDGE' AND $2::text IS NULL RETURNING merchant_id, channel_id, currency, "
              "trade_no, amount, from_pending, from_available, owed, from_escrow, "
              "from_unsettled, coalesce(notify_url, '') AS notify_url"
            /* The judgement's note goes after what start-judge kept there
             * (why it was judged before the evidence deadline). */
            : "UPDATE chargebacks SET status = 'JUDGE_FINISH', liable = $2, judge_note = CASE WHEN "
              "$3::text IS NULL THEN judge_note WHEN judge_note IS NULL THEN $3 ELSE judge_note "
              "|| E'\\n' || $3 END, "
              "decided_by = $4, judged_at = now(), updated_at = now() WHERE chargeback_no = $1 "
              "AND status = "
              "'IN_JUDGE' RETURNING merchant_id, channel_id, currency, trade_no, amount, "
              "from_pending, from_available, owed, from_escrow, from_unsettled, "
              "coalesce(notify_url, '') AS notify_url";
    if (pc_db_tx_query(tx, sql, 4, p, decide_updated_cb, d) < 0)
        decide_fail(d, PC_EUNAVAIL);
}

static void decide(pc_http_req_t *req, pc_app_t *app, int closing)
{
    size_t len = 0;
    pc_http_req_body(req, &len);
    json_t *b = len ? pc_http_req_json(req) : NULL;
    if (len && !b) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, NULL, "body must be a JSON object");
        return;
    }
    decide_t *d = calloc(1, sizeof *d);
    d->req = req;
    d->app = app;
    d->closing = closing;
    d->liable = PC_CB_LIABLE_NONE;
    snprintf(d->no, sizeof d->no, "%s", pc_http_req_param(req, "chargeback_no"));
    if (!closing &&
        pc_cb_liable_parse(json_string_value(json_object_get(b, "liable")), &d->liable)) {
        free(d);
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "liable", "MERCHANT, PLATFORM or NONE");
        return;
    }
    json_t *note = json_object_get(b, "note");
    if (note && !json_is_null(note)) {
        if (!json_is_string(note) || json_string_length(note) > 1000) {
            free(d);
            pc_http_respond_error(req, PC_API_INVALID_REQUEST, "note", "at most 1000 characters");
            return;
        }
        snprintf(d->note, sizeof d->note, "%s", json_string_value(note));
    }
    if (pc_db_begin(app->db, NULL, decide_begin_cb, d) < 0) {
        free(d);
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable");
    }
}

static void judge_case(pc_http_req_t *req, void *data)
{
    decide(req, data, 0);
}

static void close_case(pc_http_req_t *req, void *data)
{
    decide(req, data, 1);
}

/* ---------- lifecycle ---------- */

/* ---------- the daily import ---------- */

static int *tries_of(pc_chargebacks_t *cbs, const char *channel)
{
    if (strcmp(cbs->tried_day, cbs->day) != 0) {
        snprintf(cbs->tried_day, sizeof cbs->tried_day, "%s", cbs->day);
        cbs->ntried = 0;
    }
    for (int i = 0; i < cbs->ntried; i++)
        if (!strcmp(cbs->tried_ch[i], channel))
            return &cbs->tried_n[i];
    if (cbs->ntried == PC_CHANNELS_MAX)
        return NULL;
    size_t n = strnlen(channel, sizeof cbs->tried_ch[0] - 1);
    memmove(cbs->tried_ch[cbs->ntried], channel, n); /* channel is one of cbs->todo */
    cbs->tried_ch[cbs->ntried][n] = 0;
    cbs->tried_n[cbs->ntried] = 0;
    cbs->tried_at[cbs->ntried] = 0;
    return &cbs->tried_n[cbs->ntried++];
}

static void daily_next(pc_chargebacks_t *cbs);

static void daily_imported(void *data, int ok)
{
    (void)ok; /* a failure was logged; the next tick tries again */
    daily_next(data);
}

/* The next channel of the list whose tries are not spent. */
static void daily_next(pc_chargebacks_t *cbs)
{
    while (cbs->next < cbs->ntodo && !cbs->app->shutting_down) {
        const char *ch = cbs->todo[cbs->next++];
        int *tries = tries_of(cbs, ch);
        if (!tries || *tries >= DAILY_TRIES)
            continue;
        /* A file not there yet (published late, a channel down) is asked
         * for again an hour later, not every tick. */
        uint64_t *at = &cbs->tried_at[tries - cbs->tried_n], now = uv_now(cbs->app->loop);
        if (*tries > 0 && now - *at < DAILY_RETRY_MS)
            continue;
        (*tries)++;
        *at = now;
        import_t *im = import_new(cbs->app, NULL, ch, cbs->day);
        if (!im)
            break;
        im->done = daily_imported;
        im->done_data = cbs;
        import_fetch(im);
        return;
    }
    cbs->importing = 0;
}

static void daily_missing_cb(void *data, int status, pc_db_res_t *res)
{
    pc_chargebacks_t *cbs = data;
    cbs->ntodo = cbs->next = 0;
    for (int i = 0; !status && i < pc_db_rows(res) && i < PC_CHANNELS_MAX; i++)
        snprintf(cbs->todo[cbs->ntodo++], sizeof cbs->todo[0], "%s", pc_db_get(res, i, 0));
    daily_next(cbs);
}

/* Once chargeback.import_at (UTC) has passed: yesterday's file of every
 * configured channel (switched off or not: disputes of its payments still
 * come) that has no import yet. Importing a file again changes nothing, so
 * two nodes at it at once do no harm. */
static void daily_tick(uv_timer_t *t)
{
    pc_chargebacks_t *cbs = t->data;
    if (!cbs->daily_on || cbs->importing || cbs->app->shutting_down)
        return;
    if (!pc_utc_daily_due(cbs->import_at_min, 1, cbs->day))
        return;
    pc_channel_set_t *set = pc_channels_acquire(cbs->app->channels);
    if (!set)
        return;
    char ids[PC_CHANNELS_MAX * 34 + 3];
    int n = pc_channel_set_ids_literal(set, ids, sizeof ids);
    pc_channel_set_release(set);
    if (n <= 0)
        return;
    const char *p[] = {ids, cbs->day};
    cbs->importing = 1;
    if (pc_db_query(cbs->app->db,
                    "SELECT c FROM unnest($1::text[]) c WHERE NOT EXISTS "
                    "(SELECT 1 FROM chargeback_imports i WHERE i.channel_id = c AND "
                    "i.business_date = $2::date AND i.completed_at IS NOT NULL) ORDER BY c",
                    2, p, daily_missing_cb, cbs) < 0)
        cbs->importing = 0;
}

pc_chargebacks_t *pc_chargebacks_new(pc_app_t *app)
{
    pc_chargebacks_t *cbs = calloc(1, sizeof *cbs);
    if (!cbs)
        return NULL;
    cbs->app = app;
    if (pc_config_parse_time_of_day(pc_config_str(app->cfg, "chargeback.import_at"),
                                    &cbs->import_at_min) < 0) {
        free(cbs);
        return NULL;
    }
    cbs->daily_on = pc_config_bool(app->cfg, "chargeback.daily_import");
    uv_timer_init(app->loop, &cbs->timer);
    cbs->timer.data = cbs;
    uv_timer_init(app->loop, &cbs->daily);
    cbs->daily.data = cbs;
    pc_metrics_describe("pc_chargebacks_total", PC_METRIC_COUNTER,
                        "chargebacks opened, by channel and source (ONLINE, OFFLINE)");
    pc_metrics_describe("pc_chargebacks_judged_total", PC_METRIC_COUNTER,
                        "chargebacks judged (by liable party) or closed");
    pc_metrics_describe("pc_chargeback_rate_bp", PC_METRIC_GAUGE,
                        "chargebacks per successful payment over 90 days, basis points, by "
                        "merchant and channel");
    /* A merchant's dispute rate is its business, not the public's: the
     * public /metrics named every merchant with a chargeback and its rate. */
    pc_metrics_private("pc_chargeback_rate_bp");
    pc_router_add(app->api, "GET", "/v1/chargebacks", merchant_list, app);
    pc_router_add(app->api, "GET", "/v1/chargebacks/{chargeback_no}", merchant_get, app);
    pc_router_add(app->api, "POST", "/v1/chargebacks/{chargeback_no}/evidence", submit_evidence,
                  app);
    pc_router_add(app->admin, "POST", "/admin/chargebacks", enter_chargeback, app);
    pc_router_add(app->admin, "GET", "/admin/chargebacks", admin_list, app);
    pc_router_add(app->admin, "POST", "/admin/chargebacks/import", import_chargebacks, app);
    pc_router_add(app->admin, "GET", "/admin/chargebacks/unmatched", list_unmatched, app);
    pc_router_add(app->admin, "POST",
                  "/admin/chargebacks/unmatched/{channel_id}/{chargeback_ref}/resolve",
                  resolve_unmatched, app);
    pc_router_add(app->admin, "GET", "/admin/chargebacks/{chargeback_no}", admin_get, app);
    pc_router_add(app->admin, "POST", "/admin/chargebacks/{chargeback_no}/start-judge", start_judge,
                  app);
    pc_router_add(app->admin, "POST", "/admin/chargebacks/{chargeback_no}/judge", judge_case, app);
    pc_router_add(app->admin, "POST", "/admin/chargebacks/{chargeback_no}/close", close_case, app);
    return cbs;
}

void pc_chargebacks_start(pc_chargebacks_t *cbs)
{
    uint64_t ms = (uint64_t)pc_config_int(cbs->app->cfg, "chargeback.rate_refresh_ms");
    uv_timer_start(&cbs->timer, refresh_tick, 100, ms);
    uint64_t daily_ms = (uint64_t)pc_config_int(cbs->app->cfg, "chargeback.daily_poll_ms");
    uv_timer_start(&cbs->daily, daily_tick, daily_ms, daily_ms);
}

void pc_chargebacks_stop(pc_chargebacks_t *cbs)
{
    uv_timer_stop(&cbs->timer);
    uv_close((uv_handle_t *)&cbs->timer, NULL);
    uv_timer_stop(&cbs->daily);
    uv_close((uv_handle_t *)&cbs->daily, NULL);
}

void pc_chargebacks_free(pc_chargebacks_t *cbs)
{
    free(cbs);
}
