#include "settlement/settlement_calc.h"
#include "core/error.h"

#include <stdio.h>
#include <string.h>

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

int64_t pc_settle_fee(int64_t sales, int rate_bp)
{
    if (sales <= 0 || rate_bp <= 0)
        return 0;
    /* sales = q·10000 + r, so sales·rate/10000 = q·rate + r·rate/10000, and
     * only the second term needs rounding; neither product can overflow. */
    int64_t q = sales / 10000, r = sales % 10000;
    return q * rate_bp + (r * rate_bp + 5000) / 10000;
}

int pc_settle_compute(const pc_settle_in_t *in, pc_settle_out_t *out)
{
    memset(out, 0, sizeof *out);
    if (in->gross < 0 || in->sales < 0 || in->sales > in->gross || in->fee_rate_bp < 0 ||
        in->fee_rate_bp > 10000)
        return PC_EINVAL;
    out->fee = pc_settle_fee(in->sales, in->fee_rate_bp);
    int64_t movable = in->pending - (in->later > 0 ? in->later : 0);
    out->moved = min64(in->gross, movable > 0 ? movable : 0);
    out->shortfall = in->gross - out->moved;
    out->fee_from_pending = min64(out->fee, out->moved);
    out->fee_owed = out->fee - out->fee_from_pending;
    out->owed_before = in->receivable < 0 ? -in->receivable : 0;
    int64_t rest = out->moved - out->fee_from_pending;
    out->owed_recovered = min64(out->owed_before, rest);
    /* What the platform owes the merchant there (a refund funded in advance
     * and recovered, then failed, gives its amount back to the receivable)
     * is the merchant's: nothing else would ever move it. */
    out->receivable_released = in->receivable > 0 ? in->receivable : 0;
    out->net = rest - out->owed_recovered + out->receivable_released;
    return 0;
}

static int add(pc_settle_legs_t *l, pc_ledger_type_t type, const char *owner, int64_t amount)
{
    if (amount == 0)
        return 0;
    if (l->n >= PC_SETTLE_MAX_LEGS)
        return PC_ELIMIT;
    int rc = pc_ledger_account_id(l->ids[l->n], sizeof l->ids[l->n], type, owner, l->currency);
    if (rc)
        return rc;
    l->legs[l->n].account_id = l->ids[l->n];
    l->legs[l->n].amount = amount;
    l->legs[l->n].currency = l->currency;
    l->n++;
    return 0;
}

int pc_settle_legs(const char *merchant_id, const char *currency, const pc_settle_out_t *s,
                   pc_settle_legs_t *out)
{
    memset(out, 0, sizeof *out);
    snprintf(out->currency, sizeof out->currency, "%s", currency);
    int rc = add(out, PC_LEDGER_MERCHANT_PENDING, merchant_id, -s->moved);
    if (!rc)
        rc = add(out, PC_LEDGER_PLATFORM_FEE_INCOME, NULL, s->fee);
    if (!rc)
        rc = add(out, PC_LEDGER_MERCHANT_AVAILABLE, merchant_id, s->net);
    if (!rc)
        rc = add(out, PC_LEDGER_MERCHANT_RECEIVABLE, merchant_id,
                 s->owed_recovered - s->fee_owed - s->receivable_released);
    return rc;
}
