/* Refunds (system.md §2.4): the refund runner and the state machine every
 * refund goes through, shared by the merchant API (refund_api.c: POST
 * /v1/refunds accepts in one transaction and then runs the refund here), the
 * ops API (refund_ops.c: suspend, resume, terminate, force-fail, confirm,
 * FILE/OFFLINE batches) and the channel's refund callbacks.
 *
 *   ACCEPTED ──dispatch──▶ PROCESSING ──▶ SUCCESS | FAILED
 *      │  ▲                   (API / PAYOUT: channel answer, callback or
 *      ▼  │ resume             status query; FILE: result file; OFFLINE: ops)
 *   SUSPENDED ──▶ TERMINATED   (ACCEPTED too; only before money left)
 *   force-fail: ACCEPTED / SUSPENDED / PROCESSING ──▶ FAILED
 *
 * Every transition is one PostgreSQL transaction that first locks the
 * refund's trade row, then the refund row, checks the refund is in a state
 * the transition may start from (a conditional update backs it), and writes
 * with it the ledger movement (refund_plan.h), the trade's refunded_amount
 * and status (TRADE_CLOSED once fully refunded), the merchant's notification
 * (refund.succeeded / refund.failed) and the audit row (refund_actions).
 *
 * The runner (a timer on every node, claims with SKIP LOCKED): sends ACCEPTED
 * API/PAYOUT refunds the accepting node did not send (it died, or ops
 * resumed one), queries PROCESSING ones at the channel on a backoff schedule
 * until final (a channel's "not found" means it never took the refund: it is
 * sent again under the same refund_no, which the channel dedupes on), and
 * creates the error refunds of payments flagged needs_error_refund (one per
 * payment: a unique index) and runs them.
 *
 * Needs store/db, ledger, notify/outbox, channel/client, rules, api/app.h. */
#ifndef PC_REFUND_REFUND_H
#define PC_REFUND_REFUND_H
#include <jansson.h>
#include <stdint.h>

#include "api/app.h"
#include "channel/client.h"
#include "refund/refund_plan.h"

typedef struct pc_refunds pc_refunds_t;

/* Creates the runner for app (borrowed; outlives it) and installs
 * app->on_refund_callback. Returns NULL when out of memory or when
 * refund.query_schedule_ms is not a list of delays. */
pc_refunds_t *pc_refunds_new(pc_app_t *app);
/* Starts the runner's timer (refund.poll_ms). */
void pc_refunds_start(pc_refunds_t *rf);
/* Stops and closes the timer; work in flight finishes on its own (its
 * database and channel calls end with errors once those close). */
void pc_refunds_stop(pc_refunds_t *rf);
/* Frees it; call after the loop has stopped. */
void pc_refunds_free(pc_refunds_t *rf);

/* Terminates refund_no (a merchant's refund not sent yet: ACCEPTED or
 * SUSPENDED) because the cardholder got the money back by a chargeback
 * (case_ref): the refund would pay them twice. The merchant gets
 * refund.failed, the money goes back where it came from; when the case
 * needs less of it than its whole sum, its failure message says how much of
 * it the payment still has to refund (still_refundable > 0), as the merchant
 * may owe the buyer that part yet. cb(data, status)
 * runs once: 0, PC_ECONFLICT (sent meanwhile, or not the merchant's refund),
 * PC_ENOTFOUND or a database error. Returns 0, or PC_ENOMEM / PC_EUNAVAIL
 * (cb never runs). */
int pc_refunds_terminate_for_chargeback(pc_refunds_t *rf, const char *refund_no,
                                        const char *case_ref, int64_t still_refundable,
                                        void (*cb)(void *data, int status), void *data);

/* Refunds that wait for a person, as an SQL condition on refunds: held
 * (SUSPENDED), to be returned by hand (OFFLINE, PROCESSING), or waiting a
 * day for ops: an OFFLINE or FILE refund not put in a batch yet (ACCEPTED),
 * a FILE refund whose batch went out with no result imported (PROCESSING).
 * Within the partial index refunds_waiting (migration 0061), so that
 * counting and listing them read only that index. */
#define PC_REFUND_WAITING_WHERE                                                                    \
    "(status = 'SUSPENDED' OR (status IN ('ACCEPTED', 'PROCESSING') AND method IN ('OFFLINE', "    \
    "'FILE') AND ((status = 'PROCESSING' AND method = 'OFFLINE') OR updated_at < now() - "         \
    "interval '1 day')))"

/* ---- internal: shared by refund.c, refund_api.c and refund_ops.c ---- */

/* Columns to select (or return) for pc__refund_from_row. */
#define PC__REFUND_COLUMNS                                                                         \
    "refund_no, out_refund_no, merchant_id, trade_no, payment_no, type, method, status, amount, "  \
    "currency, external_amount, balance_amount, coupon_amount, from_escrow, from_pending, "        \
    "from_available, from_wallet, from_receivable, coalesce(channel_id, '') AS channel_id, "       \
    "coalesce(channel_txn_id, '') AS channel_txn_id, coalesce(payment_channel_txn_id, '') AS "     \
    "payment_channel_txn_id, coalesce(buyer_id, '') AS buyer_id, coalesce(coupon_funder, '') AS "  \
    "coupon_funder, coalesce(payee::text, '') AS payee, coalesce(reason, '') AS reason, "          \
    "coalesce(notify_url, '') AS notify_url, coalesce(failure_code, '') AS failure_code, "         \
    "coalesce(failure_message, '') AS failure_message, coalesce(hold_reason, '') AS hold_reason, " \
    "coalesce(batch_id, '') AS batch_id, coalesce(rule_version, '') AS rule_version, "             \
    "coalesce(risk_decision, '') AS risk_decision, "                                               \
    "floor(extract(epoch FROM created_at))::bigint AS created_at, "                                \
    "coalesce(floor(extract(epoch FROM finished_at))::bigint, 0) AS finished_at, splits::text AS " \
    "splits, split_amount, coupon_returned::text AS coupon_returned"

/* A refund row. Plain data (copies), safe to keep across callbacks. */
typedef struct {
    char refund_no[40], out_refund_no[65], merchant_id[65], trade_no[40], payment_no[40];
    char type[8], method[8], status[12], currency[4];
    int64_t amount;
    pc_refund_parts_t parts;
    pc_refund_sources_t from;
    char channel_id[33], channel_txn_id[81], payment_channel_txn_id[81];
    char buyer_id[65], coupon_funder[65];
    char payee[600];  /* JSON text, "" when none */
    char reason[257]; /* "" when none */
    char notify_url[520];
    char failure_code[49], failure_message[161], hold_reason[257];
    char batch_id[40];
    char rule_version[65]; /* refund_method.lua's version that chose the method */
    char risk_decision[12];
    long long created_at, finished_at; /* Unix seconds; finished_at 0 = not yet */
    /* What is taken back from the trade's split receivers, and from where. */
    pc_refund_share_t shares[PC_REFUND_MAX_SPLITS];
    size_t nshares;
    int64_t split_amount;
    int coupon_returned; /* the coupon went back to the buyer (refunds.coupon_returned) */
} pc__refund_t;

/* Parses refunds.splits (JSON text) into shares; 0 or PC_EINVAL. */
int pc__refund_shares_parse(const char *text, pc_refund_share_t *shares, size_t *n);
/* refunds.splits of shares: a JSON array, new reference. */
json_t *pc__refund_shares_json(const pc_refund_share_t *shares, size_t n);

/* Fills r from a row selected with PC__REFUND_COLUMNS. */
void pc__refund_from_row(pc__refund_t *r, pc_db_res_t *res, int row);

/* The refund object of api.md "Refunds" (its fields, plus splits
 * [{account, amount}] when receivers give back shares and coupon_returned on
 * the refund that carries the coupon part, README "Refunds"); with admin
 * set, plus what ops need (merchant_id, payment_no, currency, components,
 * channel_id, batch_id, reason, hold_reason, rule_version, risk_decision).
 * New reference. */
json_t *pc__refund_json(const pc__refund_t *r, int admin);

/* A new refund number: "R" + 20 hex digits of randomness. */
void pc__refund_no_new(char out[40]);

/* Sends an ACCEPTED API/PAYOUT refund to its channel (after moving it to
 * PROCESSING with a conditional update: of several callers one sends it). A
 * refund with nothing to return through a channel (all balance and coupon)
 * succeeds at once. Fire and forget: the outcome is written to the refund. */
void pc__refund_dispatch(pc_refunds_t *rf, const char *refund_no);

/* A state change of one refund (see the header comment). Strings are
 * borrowed for the call (copied). */
typedef struct {
    const char *refund_no;
    const char *to;             /* new status */
    const char *const *from;    /* statuses it may leave, NULL-terminated */
    const char *who;            /* "ops", "channel", "system", "risk" */
    const char *action;         /* audit verb: "SUSPEND", "CHANNEL_RESULT", ... */
    const char *why;            /* may be NULL */
    const char *failure_code;   /* FAILED: may be NULL */
    const char *failure_msg;    /* FAILED: may be NULL */
    const char *channel_txn_id; /* may be NULL (kept) */
    const char *only_method;    /* when not NULL, the refund must use this method */
    const char *only_batch;     /* when not NULL, the refund must be in this batch */
    const char *only_channel;   /* when not NULL, the refund must be with this channel
                                 * (a channel's result: no other channel's is believed) */
    const char *set_method;     /* when not NULL, the refund switches to this method */
    int normal_only;            /* error refunds may not take this transition */
    /* A FAILED result for an error refund moves it to OFFLINE instead (its
     * money is the buyer's and must leave; ops return it by hand). */
    int error_to_offline;
    /* A channel's SUCCESS: the sum it says it paid out (0: not said). Another
     * sum than the refund's channel part is applied (the money left) and
     * flagged for ops (needs_ops): the buyer got too little, or the platform
     * paid too much. With the currency it names (another is flagged too). */
    int64_t channel_amount;
    const char *channel_currency;
} pc__transition_t;

/* Outcome of a transition: status 0 with the refund as it now is (valid
 * during the callback), PC_ENOTFOUND (no such refund), PC_ECONFLICT (not in a
 * state this transition starts from, another method or batch, or an error
 * refund where normal_only: refund shows it as it is), or a db error (refund
 * NULL). */
typedef void (*pc__transition_cb)(void *data, int status, const pc__refund_t *refund);

/* Runs t; after commit, a refund resumed to ACCEPTED is dispatched. Returns 0
 * (cb runs once; cb may be NULL) or PC_ENOMEM / PC_EUNAVAIL (cb never
 * runs). */
int pc__refund_transition(pc_refunds_t *rf, const pc__transition_t *t, pc__transition_cb cb,
                          void *data);

/* A final refund that its channel (or its result file) contradicts:
 * RETURNED after SUCCESS (the buyer did not get it after all), or SUCCESS
 * after FAILED (failed by ops or on a guess, yet the buyer got it: the
 * merchant was credited back too), or SUCCESS for one ops paid by hand
 * (OFFLINE: paid twice). The refund's statuses cannot say it, so it is
 * flagged for ops, who see it listed (GET /admin/needs-ops), alerted
 * (CHANNEL_CONTRADICTION) and settle it by hand; once: not again after ops
 * resolved it. Returns 1 when the answer contradicts r (a flag is queued: cb
 * runs, with the flagged row or none), 0 when it is only late (cb never
 * runs), negative on error. */
int pc__refund_flag_contradiction(pc_refunds_t *rf, const pc__refund_t *r, pc_ch_status_t said,
                                  pc_db_query_cb cb, void *data);

/* Queues the flag of refund_no, while it is status, for what its channel or
 * file said ("SUCCESS", "RETURNED", "FAILED"): once per answer
 * (refunds.contradicted_by, migration 0103), so a retried callback or a
 * file imported again does not flag what ops resolved. cb gets the flagged
 * row, or none. Returns 0 or PC_EUNAVAIL (cb never runs). */
int pc__refund_flag_once(pc_refunds_t *rf, const char *refund_no, const char *status,
                         const char *said, pc_db_query_cb cb, void *data);

/* What rules/refund_method.lua is told about a refund (its ctx contract). */
typedef struct {
    const char *type;         /* "NORMAL" | "ERROR" */
    int64_t external;         /* the part that goes back through a channel */
    int64_t payment_external; /* what the buyer paid through the channel */
    const char *currency;     /* of both amounts */
    const char *payment_method, *channel_id;
    long long paid_at; /* Unix seconds */
    int payee_available;
    const char *payee_type; /* of that payee: "CARD", "ACCOUNT" (NULL: none) */
} pc__method_ctx_t;

/* The method a refund runs by: "API", "PAYOUT", "FILE" or "OFFLINE" (a
 * static string), decided by rules/refund_method.lua over the paying
 * channel's capabilities; OFFLINE when the rule fails. A refund without an
 * external part is "API" without asking the rule (the platform moves wallet
 * and coupon money itself). version (65 bytes) receives the rule's version
 * ("" when the rule was not asked). */
const char *pc__refund_method(pc_app_t *app, const pc__method_ctx_t *m, char version[65]);

/* Admin routes (refund_ops.c), registered by pc_app_routes_refunds. */
void pc__refund_ops_routes(pc_app_t *app);

#endif
