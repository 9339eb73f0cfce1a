/* The arithmetic of a refund, with no I/O: how a refund splits over the parts
 * of the payment it returns (external channel part first, then wallet
 * balance, then coupon), where the merchant side of the money is taken from
 * when it is accepted, and the ledger legs of each money movement of a
 * refund's life (accept, success, return). Pure functions over plain structs
 * so that every branch is unit-tested (tests/unit/test_refund_plan.c).
 * Needs ledger/ledger.h (account ids and legs) only.
 *
 * The ledger model (system.md §2.7 sign convention; README "Refunds"):
 *   accept   the refund's money is taken from the merchant side (see
 *            pc_refund_plan_sources) and held in platform:escrow;
 *   success  escrow pays each part out: the external part to the channel's
 *            clearing account (the channel returns it to the buyer out of what
 *            it owes the platform), the balance part to the buyer's wallet,
 *            the coupon part back to whoever funded the coupon;
 *   return   (failed, terminated, force-failed) the accept movement in
 *            reverse: the money goes back where it came from.
 * Error refunds skip accept: the payment's money is in escrow already
 * (PAY_ORPHAN put it there). */
#ifndef PC_REFUND_REFUND_PLAN_H
#define PC_REFUND_REFUND_PLAN_H
#include <stdint.h>

#include "ledger/ledger.h"

/* Results beyond core/error.h. */
enum {
    /* The merchant side cannot fund the refund (and no advance funding). */
    PC_REFUND_INSUFFICIENT = -200,
    /* A split receiver would give back more than it still has of the trade. */
    PC_REFUND_OVER_RECEIVED = -201,
};

/* Amounts per part of a payment. */
typedef struct {
    int64_t external; /* paid through the channel */
    int64_t balance;  /* paid from the buyer's wallet */
    int64_t coupon;   /* paid by a coupon */
} pc_refund_parts_t;

/* Splits amount over what is still refundable of each part (left), external
 * first, then balance, then coupon, and writes the parts into out. Returns 0,
 * or PC_EINVAL when amount is not positive, a part of left is negative, or
 * amount exceeds the sum of left (out is then zeroed). */
int pc_refund_split(int64_t amount, const pc_refund_parts_t *left, pc_refund_parts_t *out);

/* The trade products, as they decide where a refund's money comes from. */
typedef enum { PC_REFUND_INSTANT = 0, PC_REFUND_GUARANTEE, PC_REFUND_RECHARGE } pc_refund_product_t;

/* Parses "INSTANT" / "GUARANTEE" / "RECHARGE"; 0 or PC_EINVAL. */
int pc_refund_product_parse(const char *name, pc_refund_product_t *out);

/* What may fund a merchant refund, as read inside the accepting transaction
 * (balances locked). */
typedef struct {
    pc_refund_product_t product;
    int64_t amount;
    /* GUARANTEE: the trade's unsettled money still held in escrow. */
    int64_t escrow_unsettled;
    int64_t pending;   /* merchant pending balance */
    int64_t available; /* merchant available balance */
    int64_t wallet;    /* RECHARGE: the buyer's wallet balance */
    int advance_funding;
} pc_refund_funds_t;

/* Where the money of one refund was taken from (sums to its amount). */
typedef struct {
    int64_t escrow, pending, available, wallet, receivable;
} pc_refund_sources_t;

/* Decides the sources, in this order:
 *   INSTANT    merchant pending, then merchant available;
 *   GUARANTEE  the trade's unsettled escrow, then merchant pending, then
 *              available (the settled part went to the merchant);
 *   RECHARGE   the buyer's wallet (the money was credited there);
 * then, for what is still short, the merchant's receivable when its
 * contract allows advance funding. Returns 0 with out filled, PC_EINVAL for a
 * non-positive amount or negative balance, or PC_REFUND_INSUFFICIENT (out
 * zeroed). */
int pc_refund_plan_sources(const pc_refund_funds_t *in, pc_refund_sources_t *out);

/* Sum of the sources. */
int64_t pc_refund_sources_total(const pc_refund_sources_t *s);

/* Ledger legs with their account ids. The legs point into ids: do not copy
 * the struct (pass it by pointer), and keep it alive while the legs are
 * used. */
#define PC_REFUND_MAX_SPLITS 20
#define PC_REFUND_MAX_LEGS (8 + 2 * PC_REFUND_MAX_SPLITS)
/* A refund is one ledger transaction: its widest (every receiver giving from
 * pending and available) must be one the ledger takes. It once was not (32):
 * a refund of a trade split 16 ways after a settlement was refused with 503
 * at every attempt. */
_Static_assert(PC_REFUND_MAX_LEGS <= PC_LEDGER_MAX_LEGS,
               "a refund's legs must fit in one ledger transaction");
typedef struct {
    pc_ledger_leg_t legs[PC_REFUND_MAX_LEGS];
    char ids[PC_REFUND_MAX_LEGS][PC_LEDGER_ID_MAX + 1];
    char currency[4];
    size_t n;
} pc_refund_legs_t;

/* Who the money of a refund belongs to, for account ids. */
typedef struct {
    const char *merchant_id;
    const char *buyer_id;      /* may be NULL when there is no wallet leg */
    const char *channel_id;    /* the channel the external part goes through */
    const char *coupon_funder; /* merchant id of a merchant-funded coupon; NULL/"": platform */
    const char *currency;
    /* An error refund: a merchant's coupon part goes back to its receivable,
     * where the payment that landed on a closed trade took it from (its
     * pending money may be empty then), not to its pending money. */
    int error;
} pc_refund_parties_t;

/* ---- Split receivers (README "Refunds"): a refund of a trade whose money
 * was split takes back from each receiver its share. ---- */

/* One split receiver of the trade, as read under the trade lock. */
typedef struct {
    char account[65];  /* the receiving merchant's id */
    int64_t received;  /* what the trade's splits gave it */
    int64_t refunded;  /* what live refunds already take back from it */
    int64_t pending;   /* its pending balance */
    int64_t available; /* its available balance */
    int64_t asked;     /* the request's amount for it; -1 when not listed */
} pc_refund_receiver_t;

/* What one refund takes back from one receiver, and from where. */
typedef struct {
    char account[65];
    int64_t amount, pending, available, receivable; /* receivable: the merchant's */
} pc_refund_share_t;

/* Decides each receiver's share of a refund of amount:
 *   explicit (any asked >= 0): the asked amounts (unlisted receivers give 0);
 *   the refund that returns the whole rest of the trade (last): each
 *     receiver gives back all it still has of the trade, or, when that is
 *     more than the rest (the merchant funded earlier rounding remainders;
 *     a dispute took from the merchant alone), the whole amount in
 *     proportion to what each holds;
 *   otherwise proportionally, of all the live refunds so far: floor((prior +
 *     amount) * received / paid) less what it gave back already (never
 *     below 0), capped at what it still has; the merchant absorbs the
 *     rounding remainder, and the receivers catch it up at the next
 *     refunds (their shares together at most amount);
 * Then where each share comes from: the receiver's pending, then available,
 * then (advance funding) the merchant's receivable. out has n entries.
 * Returns 0; PC_EINVAL (bad input, asked amounts over amount: *bad is -1);
 * PC_REFUND_OVER_RECEIVED (an asked amount over what that receiver still
 * has: *bad its index); PC_REFUND_INSUFFICIENT (a receiver cannot fund its
 * share and there is no advance funding: *bad its index). */
/* prior: what the trade's live refunds before this one came to, of the
 * same base as amount and paid (0 for the first). */
int pc_refund_plan_splits(int64_t amount, int64_t prior, int64_t paid, int last,
                          int advance_funding, const pc_refund_receiver_t *rv, size_t n,
                          pc_refund_share_t *out, int *bad);

/* Sum of the shares' amounts. */
int64_t pc_refund_shares_total(const pc_refund_share_t *s, size_t n);

/* Accept / return with split shares too: as pc_refund_legs_accept /
 * pc_refund_legs_return, plus each share's legs (the receiver's pending and
 * available, the merchant's receivable) in the same transaction. */
int pc_refund_legs_accept_splits(const pc_refund_sources_t *src, const pc_refund_share_t *shares,
                                 size_t n, const pc_refund_parties_t *who, pc_refund_legs_t *out);
int pc_refund_legs_return_splits(const pc_refund_sources_t *src, const pc_refund_share_t *shares,
                                 size_t n, const pc_refund_parties_t *who, pc_refund_legs_t *out);

/* Accept: every non-escrow source is debited and escrow credited with their
 * sum (the escrow source stays where it is). out->n is 0 when nothing moves.
 * Returns 0, PC_EINVAL (a wallet source without a buyer) or a ledger id
 * error. */
int pc_refund_legs_accept(const pc_refund_sources_t *src, const pc_refund_parties_t *who,
                          pc_refund_legs_t *out);
/* Return: the accept legs with signs reversed. */
int pc_refund_legs_return(const pc_refund_sources_t *src, const pc_refund_parties_t *who,
                          pc_refund_legs_t *out);
/* Success: escrow debited with the whole amount, each part credited to where
 * it goes. Returns 0, PC_EINVAL (an external part without a channel, a
 * balance part without a buyer) or a ledger id error. */
int pc_refund_legs_success(const pc_refund_parts_t *parts, const pc_refund_parties_t *who,
                           pc_refund_legs_t *out);

#endif
