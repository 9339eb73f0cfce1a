#include "chargeback/chargeback_money.h"
#include "core/error.h"

#include <stdio.h>
#include <string.h>

static const char *const liable_names[] = {"MERCHANT", "PLATFORM", "NONE"};

int pc_cb_liable_parse(const char *name, pc_cb_liable_t *out)
{
    for (int i = 0; name && i < 3; i++) {
        if (!strcmp(name, liable_names[i])) {
            *out = (pc_cb_liable_t)i;
            return 0;
        }
    }
    return PC_EINVAL;
}

const char *pc_cb_liable_name(pc_cb_liable_t liable)
{
    return (int)liable >= 0 && liable <= PC_CB_LIABLE_NONE ? liable_names[liable] : "?";
}

int64_t pc_cb_hold_frozen(const pc_cb_hold_t *hold)
{
    return hold->from_pending + hold->from_available + hold->owed;
}

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

int pc_cb_hold_split(int64_t amount, int64_t pending, int64_t available, pc_cb_hold_t *out)
{
    memset(out, 0, sizeof *out);
    if (amount <= 0)
        return PC_EINVAL;
    out->from_pending = min64(amount, pending > 0 ? pending : 0);
    out->from_available = min64(amount - out->from_pending, available > 0 ? available : 0);
    out->owed = amount - out->from_pending - out->from_available;
    return 0;
}

int pc_cb_release_split(const pc_cb_hold_t *hold, int64_t outstanding_owed, pc_cb_release_t *out)
{
    memset(out, 0, sizeof *out);
    if (hold->from_pending < 0 || hold->from_available < 0 || hold->owed < 0)
        return PC_EINVAL;
    out->to_pending = hold->from_pending;
    out->to_receivable = min64(hold->owed, outstanding_owed > 0 ? outstanding_owed : 0);
    out->to_available = hold->from_available + (hold->owed - out->to_receivable);
    return 0;
}

/* Adds a leg, or adds amount to the leg of the same account (one that
 * comes to zero is dropped): a posting names each account once. */
static int add(pc_cb_legs_t *l, pc_ledger_type_t type, const char *owner, int64_t amount)
{
    if (amount == 0)
        return 0;
    char id[PC_LEDGER_ID_MAX + 1];
    int rc = pc_ledger_account_id(id, sizeof id, type, owner, l->currency);
    if (rc)
        return rc;
    for (size_t i = 0; i < l->n; i++) {
        if (strcmp(l->ids[i], id) != 0)
            continue;
        l->legs[i].amount += amount;
        if (l->legs[i].amount == 0) {
            l->n--;
            if (i != l->n) {
                memcpy(l->ids[i], l->ids[l->n], sizeof l->ids[i]);
                l->legs[i] = l->legs[l->n];
                l->legs[i].account_id = l->ids[i];
            }
        }
        return 0;
    }
    if (l->n >= PC_CB_MAX_LEGS)
        return PC_ELIMIT;
    memcpy(l->ids[l->n], id, sizeof id);
    l->legs[l->n].account_id = l->ids[l->n];
    l->legs[l->n].amount = amount;
    l->legs[l->n].currency = l->currency;
    l->n++;
    return 0;
}

static void legs_init(pc_cb_legs_t *l, const char *currency)
{
    memset(l, 0, sizeof *l);
    snprintf(l->currency, sizeof l->currency, "%s", currency);
}

int pc_cb_legs_freeze(const char *merchant_id, const char *currency, const pc_cb_hold_t *hold,
                      pc_cb_legs_t *out)
{
    legs_init(out, currency);
    int64_t total = pc_cb_hold_frozen(hold);
    if (hold->from_pending < 0 || hold->from_available < 0 || hold->owed < 0 || total <= 0)
        return PC_EINVAL;
    int rc = add(out, PC_LEDGER_MERCHANT_PENDING, merchant_id, -hold->from_pending);
    if (!rc)
        rc = add(out, PC_LEDGER_MERCHANT_AVAILABLE, merchant_id, -hold->from_available);
    if (!rc)
        rc = add(out, PC_LEDGER_MERCHANT_RECEIVABLE, merchant_id, -hold->owed);
    if (!rc)
        rc = add(out, PC_LEDGER_MERCHANT_RESERVE, merchant_id, total);
    return rc;
}

int pc_cb_legs_judge(pc_cb_liable_t liable, const char *merchant_id, const char *channel_id,
                     const char *currency, int64_t amount, const pc_cb_release_t *rel,
                     pc_cb_legs_t *out)
{
    legs_init(out, currency);
    if (amount <= 0)
        return PC_EINVAL;
    int rc = add(out, PC_LEDGER_MERCHANT_RESERVE, merchant_id, -amount);
    if (rc)
        return rc;
    if (liable == PC_CB_LIABLE_MERCHANT)
        return add(out, PC_LEDGER_CHANNEL_CLEARING, channel_id, amount);
    if (!rel || rel->to_pending < 0 || rel->to_available < 0 || rel->to_receivable < 0 ||
        rel->to_pending + rel->to_available + rel->to_receivable != amount)
        return PC_EINVAL;
    rc = add(out, PC_LEDGER_MERCHANT_PENDING, merchant_id, rel->to_pending);
    if (!rc)
        rc = add(out, PC_LEDGER_MERCHANT_AVAILABLE, merchant_id, rel->to_available);
    if (!rc)
        rc = add(out, PC_LEDGER_MERCHANT_RECEIVABLE, merchant_id, rel->to_receivable);
    if (!rc && liable == PC_CB_LIABLE_PLATFORM) {
        rc = add(out, PC_LEDGER_PLATFORM_LOSS, NULL, -amount);
        if (!rc)
            rc = add(out, PC_LEDGER_CHANNEL_CLEARING, channel_id, amount);
    }
    return rc;
}

int pc_cb_legs_judge_escrow(pc_cb_liable_t liable, int closing, const char *channel_id,
                            const char *currency, int64_t amount, pc_cb_legs_t *out)
{
    legs_init(out, currency);
    if (amount <= 0)
        return PC_EINVAL;
    if (closing || liable == PC_CB_LIABLE_NONE)
        return 0;
    int rc = add(out, PC_LEDGER_PLATFORM_ESCROW, NULL, -amount);
    if (!rc)
        rc = add(out, PC_LEDGER_CHANNEL_CLEARING, channel_id, amount);
    return rc;
}

int pc_cb_legs_decide(pc_cb_liable_t liable, int closing, const char *merchant_id,
                      const char *channel_id, const char *currency, const pc_cb_hold_t *hold,
                      const pc_cb_release_t *rel, pc_cb_legs_t *out)
{
    if (closing)
        liable = PC_CB_LIABLE_NONE;
    if (hold->from_escrow)
        return pc_cb_legs_judge_escrow(liable, closing, channel_id, currency, hold->from_escrow,
                                       out);
    int64_t frozen = pc_cb_hold_frozen(hold);
    int64_t unsettled = hold->from_unsettled;
    legs_init(out, currency);
    if (hold->from_pending < 0 || hold->from_available < 0 || hold->owed < 0 || unsettled < 0 ||
        frozen + unsettled <= 0)
        return PC_EINVAL;
    int rc = 0;
    if (frozen > 0)
        rc = pc_cb_legs_judge(liable, merchant_id, channel_id, currency, frozen, rel, out);
    if (rc || unsettled == 0 || liable == PC_CB_LIABLE_NONE)
        return rc;
    rc = add(out,
             liable == PC_CB_LIABLE_MERCHANT ? PC_LEDGER_PLATFORM_ESCROW : PC_LEDGER_PLATFORM_LOSS,
             NULL, -unsettled);
    return rc ? rc : add(out, PC_LEDGER_CHANNEL_CLEARING, channel_id, unsettled);
}
