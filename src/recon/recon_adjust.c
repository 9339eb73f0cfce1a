#include "recon/recon_adjust.h"
#include "core/error.h"

#include <stdio.h>
#include <string.h>

/* +1 when a successful line of this type is money the channel owes the
 * platform, -1 when it is money the channel paid out for it, 0 unknown. */
static int direction(const char *type)
{
    if (!type)
        return 0;
    if (!strcmp(type, "PAY") || !strcmp(type, "PAYOUT_RETURN"))
        return 1;
    if (!strcmp(type, "REFUND") || !strcmp(type, "PAYOUT"))
        return -1;
    return 0;
}

typedef struct {
    char cur[2][4];
    int64_t owed[2]; /* statement minus books, per currency */
    int n;
} sums_t;

static int add(sums_t *s, const char *cur, int64_t v)
{
    if (!cur || strlen(cur) != 3)
        return -1;
    for (int i = 0; i < s->n; i++) {
        if (!strcmp(s->cur[i], cur)) {
            s->owed[i] += v;
            return 0;
        }
    }
    if (s->n == 2)
        return -1;
    memcpy(s->cur[s->n], cur, 4);
    s->owed[s->n++] = v;
    return 0;
}

static int leg(pc_recon_adjustment_t *out, pc_ledger_type_t type, const char *owner,
               const char *cur, int64_t amount)
{
    int i = out->n;
    if (i == PC_RECON_ADJUST_LEGS ||
        pc_ledger_account_id(out->ids[i], sizeof out->ids[i], type, owner, cur) < 0)
        return -1;
    memcpy(out->currencies[i], cur, 4);
    out->legs[i] = (pc_ledger_leg_t){out->ids[i], amount, out->currencies[i]};
    out->n++;
    return 0;
}

int pc_recon_adjustment(const pc_recon_money_t *d, pc_recon_adjustment_t *out, const char **why)
{
    static const char *dummy;
    if (!why)
        why = &dummy;
    memset(out, 0, sizeof *out);
    int dir = direction(d->type);
    if (!dir) {
        *why = "the statement type is not one whose money the ledger knows";
        return PC_EINVAL;
    }
    const char *kind = d->kind ? d->kind : "";
    sums_t s = {.n = 0};
    int bad = 0;
    if (!strcmp(kind, "FEE_MISMATCH")) {
        if (!d->has_line || !d->has_expected_fee) {
            *why = "no fee is expected for this line";
            return PC_EINVAL;
        }
        /* The channel keeps line_fee where its file says expected_fee. */
        bad |= add(&s, d->line_currency, -(d->line_fee - d->expected_fee));
    } else {
        /* Whatever the kind: a record still in flight is settled by its
         * status query or callback, which books it then. Adjusted now, its
         * money was booked twice (a CURRENCY_MISMATCH against a payment
         * whose callback was lost: suspense now, the capture later). */
        if (d->has_local && d->local_state && !strcmp(d->local_state, "PENDING")) {
            *why = "our record is still in flight: let its repair finish, then run the day again";
            return PC_EINVAL;
        }
        if (d->has_line && d->line_status && !strcmp(d->line_status, "SUCCESS"))
            bad |= add(&s, d->line_currency, dir * d->line_amount);
        /* A repeated line is the channel claiming a transaction twice: the
         * first line matched our record, this one has none. */
        if (d->has_local && strcmp(kind, "DUPLICATE_LINE") != 0 && d->local_state &&
            !strcmp(d->local_state, "SUCCESS"))
            bad |= add(&s, d->local_currency, -dir * d->local_amount);
    }
    if (bad) {
        *why = "a currency of the difference is not an ISO 4217 code";
        return PC_EINVAL;
    }
    for (int i = 0; i < s.n; i++) {
        if (!s.owed[i])
            continue;
        /* Clearing is negative while the channel owes the platform. */
        if (leg(out, PC_LEDGER_CHANNEL_CLEARING, d->channel_id, s.cur[i], -s.owed[i]) < 0 ||
            leg(out, PC_LEDGER_SUSPENSE, NULL, s.cur[i], s.owed[i]) < 0) {
            *why = "the channel id or currency cannot name a ledger account";
            return PC_EINVAL;
        }
    }
    if (out->n == 0) {
        *why = "this difference moves no money: resolve it without an adjustment";
        return PC_EINVAL;
    }
    return 0;
}
