/* The arithmetic of a chargeback's money, with no I/O: where a disputed
 * amount is frozen from, where a release sends it back, and the ledger legs
 * of each movement. Pure functions over plain structs so that every branch
 * is unit-tested (tests/unit/test_chargeback_money.c). Needs ledger/ledger.h
 * (account ids and legs) only.
 *
 * The ledger model (system.md §2.5, §2.7 sign convention):
 *   freeze   on arrival the whole disputed amount goes to the merchant's
 *            reserve, taken from its pending money first, then from its
 *            available money; what those cannot cover is recorded as owed
 *            (the merchant's receivable goes down, i.e. the merchant owes the
 *            platform more) and is recovered by the next settlement:
 *              pending -p, available -v, receivable -s, reserve +A
 *   MERCHANT liable: the reserve pays the cardholder back through the
 *            channel (the channel keeps it out of what it owes the platform):
 *              reserve -A, channel clearing +A
 *   PLATFORM liable: the platform's loss account pays the channel and the
 *            reserve is released to the merchant:
 *              loss -A, channel clearing +A, plus the release legs
 *   NONE liable, or the case closed (withdrawn): the reserve is released:
 *              reserve -A, pending +p, available +v', receivable +r
 *            where r = min(s, what the merchant still owes now) and
 *            v' = v + (s - r): the owed part repays what is still owed, and
 *            whatever a settlement has recovered meanwhile goes to available.
 */
#ifndef PC_CHARGEBACK_CHARGEBACK_MONEY_H
#define PC_CHARGEBACK_CHARGEBACK_MONEY_H
#include <stdint.h>

#include "ledger/ledger.h"

/* Where a frozen amount came from; the parts add up to the amount. A case on
 * a payment the platform holds in escrow for its error refund is held
 * entirely from_escrow: nothing of it is the merchant's (see
 * pc_cb_legs_judge_escrow). A case on the payment of a guarantee trade not
 * settled yet holds from_unsettled as much as escrow still keeps free for
 * the trade: the merchant has not been paid that part, so it is not frozen
 * from its balances; only the rest is (pending, available, owed). */
typedef struct {
    int64_t from_pending, from_available, owed, from_escrow, from_unsettled;
} pc_cb_hold_t;

/* The part of hold frozen from the merchant's balances (pending, available,
 * owed): what its reserve holds for the case. */
int64_t pc_cb_hold_frozen(const pc_cb_hold_t *hold);

/* Where a release sends the reserve; the three add up to the amount. */
typedef struct {
    int64_t to_pending, to_available, to_receivable;
} pc_cb_release_t;

typedef enum { PC_CB_LIABLE_MERCHANT = 0, PC_CB_LIABLE_PLATFORM, PC_CB_LIABLE_NONE } pc_cb_liable_t;

/* "MERCHANT" / "PLATFORM" / "NONE" to the enum: 0 or PC_EINVAL. */
int pc_cb_liable_parse(const char *name, pc_cb_liable_t *out);
/* Static name of a liable party ("?" when out of range). */
const char *pc_cb_liable_name(pc_cb_liable_t liable);

/* Splits amount over the merchant's pending and available balances (as
 * locked by the freezing transaction), pending first. Negative balances
 * count as zero. Returns 0, or PC_EINVAL for a non-positive amount (out is
 * then zeroed). */
int pc_cb_hold_split(int64_t amount, int64_t pending, int64_t available, pc_cb_hold_t *out);

/* Splits a release of hold. outstanding_owed is what the merchant owes now
 * (minus its receivable balance when that is negative, else 0). Returns 0,
 * or PC_EINVAL for a hold with a negative part. */
int pc_cb_release_split(const pc_cb_hold_t *hold, int64_t outstanding_owed, pc_cb_release_t *out);

/* Ledger legs with their account ids. The legs point into ids: pass the
 * struct by pointer and keep it alive while the legs are used. */
#define PC_CB_MAX_LEGS 8
typedef struct {
    pc_ledger_leg_t legs[PC_CB_MAX_LEGS];
    char ids[PC_CB_MAX_LEGS][PC_LEDGER_ID_MAX + 1];
    char currency[4];
    size_t n;
} pc_cb_legs_t;

/* Freeze legs (zero parts are left out). Returns 0 or a ledger id error. */
int pc_cb_legs_freeze(const char *merchant_id, const char *currency, const pc_cb_hold_t *hold,
                      pc_cb_legs_t *out);

/* Judgement or close legs. For MERCHANT, rel is ignored (may be NULL);
 * otherwise it says where the reserve goes (pc_cb_release_split). channel_id
 * is the disputed payment's channel. A close is NONE. Returns 0, PC_EINVAL
 * (no release given, or parts that do not add up to amount) or a ledger id
 * error. */
int pc_cb_legs_judge(pc_cb_liable_t liable, const char *merchant_id, const char *channel_id,
                     const char *currency, int64_t amount, const pc_cb_release_t *rel,
                     pc_cb_legs_t *out);

/* Judgement or close legs of a case held from escrow: a payment the platform
 * holds for its error refund (a duplicate, or paid after its trade closed),
 * whose money the merchant never had and the case did not freeze. A
 * judgement for the cardholder (MERCHANT or PLATFORM liable: neither lost
 * anything, the money was the cardholder's) pays the channel from escrow;
 * NONE or a close (closing set) moves nothing, out->n == 0: the error refund
 * then returns it. Returns 0, PC_EINVAL or a ledger id error. */
int pc_cb_legs_judge_escrow(pc_cb_liable_t liable, int closing, const char *channel_id,
                            const char *currency, int64_t amount, pc_cb_legs_t *out);

/* All the legs of a judgement or close (closing: liable is NONE) of a case
 * held as hold says. Held from_escrow: pc_cb_legs_judge_escrow. Otherwise
 * the part frozen from the merchant (from_pending + from_available + owed),
 * if any, as pc_cb_legs_judge with rel; and the part held from_unsettled of
 * the trade's escrow (U): MERCHANT liable, `platform escrow` -U, channel
 * clearing +U (the merchant is paid U less when the trade is settled);
 * PLATFORM liable, `platform loss` -U, channel clearing +U (escrow's part
 * is the trade's again, to settle); NONE or a close, nothing (to settle).
 * Legs of one account are added together. Returns 0, PC_EINVAL (a negative
 * part, nothing held, rel missing for a release) or a ledger id error. */
int pc_cb_legs_decide(pc_cb_liable_t liable, int closing, const char *merchant_id,
                      const char *channel_id, const char *currency, const pc_cb_hold_t *hold,
                      const pc_cb_release_t *rel, pc_cb_legs_t *out);

#endif
