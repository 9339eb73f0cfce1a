/* The ledger adjustment with which ops resolve a reconciliation difference
 * (system.md §2.9: never a row edit, always a posting through the suspense
 * account). Pure arithmetic, no I/O; the posting itself is made by recon.c
 * with pc_ledger_post. Needs ledger/ledger.h for account ids and legs.
 *
 * The rule: what the channel's statement says it owes the platform, minus
 * what our books say, per currency, is moved between the channel's clearing
 * account and platform:suspense:CUR. A positive difference (the channel
 * holds money our books do not show: a success we never heard of, a larger
 * amount) debits clearing — the channel owes us more — and credits suspense,
 * where the money waits to be attributed (to a buyer, a merchant); a
 * negative one does the opposite and the loss waits in suspense. Money to
 * the platform is a PAY or a PAYOUT_RETURN line; money out of it a REFUND or
 * a PAYOUT line. A FEE_MISMATCH moves only the fee the channel kept beyond
 * what its file says (the fee itself is settlement's business), a
 * CURRENCY_MISMATCH both sides in their own currencies. */
#ifndef PC_RECON_RECON_ADJUST_H
#define PC_RECON_RECON_ADJUST_H
#include <stdint.h>

#include "ledger/ledger.h"

/* The money facts of one difference (strings borrowed for the call). */
typedef struct {
    const char *kind;       /* recon_diffs.kind */
    const char *type;       /* the statement type: PAY, REFUND, PAYOUT, PAYOUT_RETURN */
    const char *channel_id; /* whose clearing account */
    int has_line;           /* the statement has a line */
    const char *line_status;
    const char *line_currency;
    int64_t line_amount, line_fee;
    int has_local;           /* we have a record */
    const char *local_state; /* SUCCESS, FAILED or PENDING */
    const char *local_currency;
    int64_t local_amount;
    int has_expected_fee;
    int64_t expected_fee;
} pc_recon_money_t;

#define PC_RECON_ADJUST_LEGS 4

/* Legs of the adjustment; account ids live in ids. */
typedef struct {
    pc_ledger_leg_t legs[PC_RECON_ADJUST_LEGS];
    char ids[PC_RECON_ADJUST_LEGS][PC_LEDGER_ID_MAX + 1];
    char currencies[PC_RECON_ADJUST_LEGS][4];
    int n;
} pc_recon_adjustment_t;

/* Computes the adjustment for d. Returns 0 with out filled (2 or 4 legs that
 * sum to zero per currency), or PC_EINVAL with a static sentence in *why
 * (the difference moves no money, our record is still in flight and its
 * repair must finish first, an unknown statement type, a bad currency or
 * channel id). */
int pc_recon_adjustment(const pc_recon_money_t *d, pc_recon_adjustment_t *out, const char **why);

#endif
