/* The payment engine (system.md §2.3): moves the money of one payment that
 * the cashier has accepted. A payment may combine wallet balance, one coupon
 * and one external channel; it is all or nothing:
 *   - hold: in one transaction (trade row locked, no other attempt open) the
 *     payment is recorded, the coupon locked and the balance moved to escrow;
 *   - the external part is sent to the routed channels in order, falling back
 *     to the next one only on a retryable decline;
 *   - capture on success (ledger, trade paid, notification, coupon used) or
 *     release on failure (balance back, coupon free again), each a
 *     conditional update so a callback, a status query and the synchronous
 *     answer can race and only one wins;
 *   - "processing" or no answer leaves the payment PROCESSING / UNKNOWN for
 *     the channel's callback or the repair job: never failed on a guess.
 * A payment that succeeds on a trade that is no longer payable (closed, or
 * paid by another attempt) keeps its money in escrow and is flagged for an
 * automatic error refund. Needs store/db, ledger, acquiring, channel/client. */
#ifndef PC_ENGINE_ENGINE_H
#define PC_ENGINE_ENGINE_H
#include <jansson.h>
#include <stdint.h>

#include "api/app.h"
#include "channel/client.h"
#include "http/errors.h"
#include "idem/idem.h"

#define PC_ROUTE_MAX 8

/* Payment statuses as SQL lists. Open: an attempt still running, at most
 * one per trade. Counted: what a buyer's limits count (paid, in flight, or
 * held for review). */
#define PC_PAYMENT_OPEN_STATUSES "('CREATED', 'PROCESSING', 'UNKNOWN', 'REVIEW')"
#define PC_PAYMENT_COUNTED_STATUSES "('SUCCESS', 'PROCESSING', 'UNKNOWN', 'REVIEW')"
/* SQL for the limits' windows, one definition for the cashier and the
 * engine (payments aliased by prefix p, "" or "p."): a payment counts from
 * when it was sent (a release from review sends it again), in the last 24
 * hours and 30 days, among the counted payments of the last 90 days (an
 * index range; a review held longer than that is failed long before). */
#define PC_USAGE_DAY(p) "coalesce(" p "sent_at, " p "created_at) >= now() - interval '24 hours'"
#define PC_USAGE_MONTH(p) "coalesce(" p "sent_at, " p "created_at) >= now() - interval '30 days'"
#define PC_USAGE_ROWS(p)                                                                           \
    p "created_at >= now() - interval '90 days' AND " p "status IN " PC_PAYMENT_COUNTED_STATUSES
/* The same for payments unaliased and aliased p. */
#define PC_USED_DAY PC_USAGE_DAY("")
#define PC_USED_MONTH PC_USAGE_MONTH("")
#define PC_USED_ROWS PC_USAGE_ROWS("")
#define PC_P_USED_DAY PC_USAGE_DAY("p.")
#define PC_P_USED_MONTH PC_USAGE_MONTH("p.")
#define PC_P_USED_ROWS PC_USAGE_ROWS("p.")

/* What the cashier decided. Strings are copied by pc_engine_start. */
typedef struct {
    const char *trade_no;
    const char *merchant_id;
    const char *buyer_id; /* may be NULL (guest) */
    /* Owner of the wallet the balance part comes from: NULL for the buyer's
     * own wallet, else "<buyer>@<merchant>.<type>" (a named account type). */
    const char *wallet_owner;
    const char *method_type; /* "BALANCE", "CARD", "QUICK_PAY", ... */
    const char *currency;
    int64_t amount, balance_amount, coupon_amount;
    const char *coupon_id;     /* NULL: none */
    const char *coupon_funder; /* merchant id of a merchant-funded coupon, NULL: platform */
    const char *card_id;       /* bound card (QUICK_PAY / AGREEMENT) */
    const char *card_token;    /* token to pay with (bound card, or a card tokenized for review) */
    /* What the card's daily limit knows it by, across buyers and guests: the
     * keyed hash of its number (a bound card's recorded one), never the
     * number. NULL: no card. */
    const char *card_fp;
    const char *card_brand, *card_last4;
    const pc_ch_card_t *card; /* CARD: the buyer's card, memory only */
    const char *buyer_code;   /* QR_BUYER */
    const char *route[PC_ROUTE_MAX];
    int nroute;
    /* The risk verdict: "ACCEPT" runs the payment; "REVIEW" and "CHALLENGE"
     * record it and wait; "REJECT" records it FAILED. */
    const char *risk_decision;
    int risk_score;
    json_t *risk_reasons;  /* borrowed */
    json_t *rule_versions; /* borrowed: {"risk": "...", "route": "..."} */
    /* CHALLENGE: the challenge to record with the payment (hash of
     * "challenge_id:code"; the code itself only in demo mode). */
    const char *challenge_id;
    const char *challenge_hash;
    const char *challenge_demo_code;
    /* The keyed hash of the card number a challenged CARD payment was scored
     * with (NULL for other methods): the answer must bring the same card. */
    const char *challenge_card_key;
    const char *client_ip, *device_id;
    /* The pay request's idempotency record (pc_auth_idem), or NULL. When the
     * payment is decided in its first transaction (nothing goes to a
     * channel: wallet and coupon only, or held, challenged or rejected by
     * risk), the answer is recorded in that transaction, so it commits with
     * the payment and no write waits after the commit. */
    pc_idem_req_t *idem;
} pc_pay_order_t;

typedef struct pc_engine pc_engine_t;

/* The payment as the API shows it (new reference, the callee owns it), or an
 * error to answer (err != PC_API_OK, payment NULL). */
typedef void (*pc_engine_cb)(void *data, pc_api_err_t err, const char *message, json_t *payment);

pc_engine_t *pc_engine_new(pc_app_t *app, pc_channel_client_t *channels);
void pc_engine_free(pc_engine_t *e);

/* Records and runs a new payment attempt. Returns 0 (cb runs once) or a
 * negative code (cb never runs). */
int pc_engine_start(pc_engine_t *e, const pc_pay_order_t *order, pc_engine_cb cb, void *data);

/* What a payer is told when a payment would pass a limit: which is "buyer"
 * (the buyer's own) or "card" (the card's, whoever pays with it). */
const char *pc_engine_limit_message(const char *which);

/* Who decided on a payment held for review, and why (NULL: not said): kept
 * in review_decisions by the transaction that applies the decision, so
 * that no decision is applied without its record. */
typedef struct {
    const char *who, *why;
} pc_engine_review_t;

/* Continues a payment waiting in status waiting: "REVIEW" (ops released
 * it: review says who) or "CHALLENGE" (the buyer passed it; card is the
 * card re-entered with the answer, or NULL; review NULL). A payment in the
 * other status is INVALID_STATE: a release does not skip a buyer's
 * challenge. */
int pc_engine_continue(pc_engine_t *e, const char *payment_no, const char *waiting,
                       const pc_ch_card_t *card, const pc_engine_review_t *review, pc_engine_cb cb,
                       void *data);
/* Ops rejected a payment held for REVIEW: it fails, nothing was held. */
int pc_engine_reject(pc_engine_t *e, const char *payment_no, const pc_engine_review_t *review,
                     pc_engine_cb cb, void *data);

/* Fails payments held for review or a challenge that can no longer go on
 * (trade no longer payable; challenge failed or expired) and frees their
 * coupons. Periodic; any node may run it. */
void pc_engine_sweep_waiting(pc_engine_t *e);

/* Applies a channel's final answer learnt later (callback, status query,
 * statement) from channel_id. Only the payment's own channel is believed,
 * and a success only for the sum the payment asked of it (when the answer
 * carries one; another sum flags the payment for ops). A PROCESSING/UNKNOWN
 * payment changes; so does, on a success, a FAILED one that was sent and
 * had only the channel's part (the buyer was charged after all); anything
 * else is a no-op (a duplicate callback). cb gets PC_API_UNAVAILABLE when
 * the answer could not be recorded (retry). cb may be NULL. */
int pc_engine_apply(pc_engine_t *e, const char *channel_id, const char *payment_no,
                    const pc_ch_result_t *result, pc_engine_cb cb, void *data);
/* The same, for an answer ops learnt from the channel by other means
 * (POST /admin/needs-ops/payment/{no}/resolve with an outcome): applied only
 * to a payment still in flight and flagged for ops, in the deciding
 * transaction; anything else answers PC_API_INVALID_STATE and changes
 * nothing (no late capture of a failed payment, no contradiction flag). */
int pc_engine_apply_by_ops(pc_engine_t *e, const char *channel_id, const char *payment_no,
                           const pc_ch_result_t *result, pc_engine_cb cb, void *data);

/* A channel says it holds a payment still in flight (PROCESSING), under
 * channel_txn_id (NULL or "" when it gave none): the acknowledgement, and
 * the reference when the payment has none yet (its request timed out), are
 * kept, so that it counts as taken by its channel and a later "no record"
 * is never read as "never arrived" (PC_CH_FORGOTTEN: ops, not FAILED). */
void pc_engine_note_taken(pc_engine_t *e, const char *channel_id, const char *payment_no,
                          const char *channel_txn_id);

/* The payment by number (and merchant, when merchant_id is not NULL). */
int pc_engine_get(pc_engine_t *e, const char *payment_no, const char *merchant_id, pc_engine_cb cb,
                  void *data);

#endif
