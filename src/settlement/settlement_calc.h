/* The arithmetic of one settlement statement (one merchant, one currency,
 * one business day), with no I/O, so that every branch is unit-tested
 * (tests/unit/test_settlement_calc.c). Needs ledger/ledger.h for the legs.
 *
 * Inputs, read by the settling transaction with the merchant's accounts
 * locked:
 *   gross    the credits to the merchant's pending account that are due on
 *            this statement (every unsettled credit posted before the
 *            cycle's cut-off: payments, guarantee settles, refunds and
 *            chargeback holds given back);
 *   sales    the part of gross that is payments (TRADE_PAY, TRADE_SETTLE):
 *            the fee base;
 *   pending  the pending balance now; refunds and chargeback holds may have
 *            taken part of the due money already, so at most this moves;
 *   later    the credits to pending after the cut-off (not on a statement):
 *            money not due yet, which stays; a refund of due money taken
 *            from pending must not make it leave early (debits are not told
 *            apart by trade, so a refund of money not due yet holds as much
 *            due money back one cycle instead: late, never early);
 *   receivable  the receivable balance now (negative: the merchant owes the
 *            platform, e.g. chargebacks its balances could not cover or
 *            advance-funded refunds).
 *
 * Rules:
 *   fee      = sales × fee_rate_bp / 10000, rounded half up (exact integer
 *              arithmetic, no overflow for any int64 sales);
 *   moved    = min(gross, pending − later): taken from pending (never below
 *              what is not due yet);
 *   shortfall = gross − moved (already used by refunds or chargeback holds);
 *   the fee is taken from moved first; what moved cannot cover is recorded
 *   as owed (fee_owed);
 *   what the merchant owes is then recovered from the rest
 *   (owed_recovered = min(owed before, moved − fee taken));
 *   net      = moved − fee taken − owed_recovered goes to available.
 * Legs: pending −moved, fee income +fee, available +net,
 *       receivable +(owed_recovered − fee_owed); zero legs left out. */
#ifndef PC_SETTLEMENT_SETTLEMENT_CALC_H
#define PC_SETTLEMENT_SETTLEMENT_CALC_H
#include <stdint.h>

#include "ledger/ledger.h"

typedef struct {
    int64_t gross, sales;
    int64_t pending, receivable;
    int64_t later;   /* not due yet: never moved */
    int fee_rate_bp; /* 0..10000 */
} pc_settle_in_t;

typedef struct {
    int64_t fee;
    int64_t moved, shortfall;
    int64_t fee_from_pending, fee_owed;
    int64_t owed_before, owed_recovered;
    int64_t receivable_released; /* a positive receivable, paid to available */
    int64_t net;
} pc_settle_out_t;

/* sales × rate_bp / 10000 rounded half up; 0 for sales ≤ 0. rate_bp 0..10000. */
int64_t pc_settle_fee(int64_t sales, int rate_bp);

/* Computes a statement. Returns 0, or PC_EINVAL for negative gross or sales,
 * sales above gross, or a rate outside 0..10000 (out is then zeroed). */
int pc_settle_compute(const pc_settle_in_t *in, pc_settle_out_t *out);

#define PC_SETTLE_MAX_LEGS 4
typedef struct {
    pc_ledger_leg_t legs[PC_SETTLE_MAX_LEGS];
    char ids[PC_SETTLE_MAX_LEGS][PC_LEDGER_ID_MAX + 1];
    char currency[4];
    size_t n;
} pc_settle_legs_t;

/* The statement's legs (n is 0 when nothing moves). The legs point into ids:
 * pass by pointer. Returns 0 or a ledger id error. */
int pc_settle_legs(const char *merchant_id, const char *currency, const pc_settle_out_t *s,
                   pc_settle_legs_t *out);

#endif
