#include "refund/refund_plan.h"
#include "core/error.h"

#include <stdio.h>
#include <string.h>

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

int pc_refund_split(int64_t amount, const pc_refund_parts_t *left, pc_refund_parts_t *out)
{
    memset(out, 0, sizeof *out);
    if (amount <= 0 || left->external < 0 || left->balance < 0 || left->coupon < 0)
        return PC_EINVAL;
    /* Compared part by part so that no sum can overflow. */
    int64_t rest = amount;
    out->external = min64(rest, left->external);
    rest -= out->external;
    out->balance = min64(rest, left->balance);
    rest -= out->balance;
    out->coupon = min64(rest, left->coupon);
    rest -= out->coupon;
    if (rest != 0) {
        memset(out, 0, sizeof *out);
        return PC_EINVAL;
    }
    return 0;
}

int pc_refund_product_parse(const char *name, pc_refund_product_t *out)
{
    if (!name)
        return PC_EINVAL;
    if (!strcmp(name, "INSTANT"))
        *out = PC_REFUND_INSTANT;
    else if (!strcmp(name, "GUARANTEE"))
        *out = PC_REFUND_GUARANTEE;
    else if (!strcmp(name, "RECHARGE"))
        *out = PC_REFUND_RECHARGE;
    else
        return PC_EINVAL;
    return 0;
}

/* Takes up to what is there from one source. */
static void take(int64_t *rest, int64_t have, int64_t *into)
{
    int64_t t = have > 0 ? min64(*rest, have) : 0;
    *into += t;
    *rest -= t;
}

int pc_refund_plan_sources(const pc_refund_funds_t *in, pc_refund_sources_t *out)
{
    memset(out, 0, sizeof *out);
    if (in->amount <= 0 || in->escrow_unsettled < 0 || in->pending < 0 || in->available < 0 ||
        in->wallet < 0)
        return PC_EINVAL;
    int64_t rest = in->amount;
    switch (in->product) {
    case PC_REFUND_GUARANTEE:
        take(&rest, in->escrow_unsettled, &out->escrow);
        take(&rest, in->pending, &out->pending);
        take(&rest, in->available, &out->available);
        break;
    case PC_REFUND_RECHARGE:
        take(&rest, in->wallet, &out->wallet);
        break;
    case PC_REFUND_INSTANT:
        take(&rest, in->pending, &out->pending);
        take(&rest, in->available, &out->available);
        break;
    default:
        return PC_EINVAL;
    }
    if (rest > 0) {
        /* A top-up gives back what its wallet still holds, never more: the
         * rest went to other merchants' sales. Advanced by the merchant, it
         * was owed by one that may never have income to recover it from,
         * and the buyer kept both the goods and the money. */
        if (!in->advance_funding || in->product == PC_REFUND_RECHARGE) {
            memset(out, 0, sizeof *out);
            return PC_REFUND_INSUFFICIENT;
        }
        out->receivable = rest;
    }
    return 0;
}

int64_t pc_refund_sources_total(const pc_refund_sources_t *s)
{
    return s->escrow + s->pending + s->available + s->wallet + s->receivable;
}

static int add(pc_refund_legs_t *l, pc_ledger_type_t type, const char *owner, int64_t amount)
{
    if (amount == 0)
        return 0;
    if (l->n >= PC_REFUND_MAX_LEGS)
        return PC_ELIMIT;
    int rc = pc_ledger_account_id(l->ids[l->n], sizeof l->ids[l->n], type, owner, l->currency);
    if (rc)
        return rc;
    l->legs[l->n] = (pc_ledger_leg_t){l->ids[l->n], amount, l->currency};
    l->n++;
    return 0;
}

static void legs_init(pc_refund_legs_t *l, const char *currency)
{
    memset(l, 0, sizeof *l);
    snprintf(l->currency, sizeof l->currency, "%s", currency ? currency : "");
}

/* floor(a * b / c) for non-negative a, b and positive c, without overflow. */
static int64_t mul_div(int64_t a, int64_t b, int64_t c)
{
    __extension__ typedef unsigned __int128 u128;
    return (int64_t)((u128)a * (u128)b / (u128)c);
}

/* The refund of the whole rest takes back what each receiver still holds,
 * which can be more than that rest: the merchant funded the rounding
 * remainders of the earlier partial refunds (a receiver's share is rounded
 * down), and a dispute takes from the merchant alone. Refusing it left the
 * trade impossible to refund in full (and its coupon never returned); the
 * receivers give back the whole amount instead, in proportion to what they
 * hold (rounded down, the units left over one each from the first), and the
 * merchant nothing. The same when the receivers' catching up on earlier
 * roundings comes to more than a partial refund. total is the sum of
 * out[].amount, above amount. */
static void trim_last_shares(int64_t amount, int64_t total, pc_refund_share_t *out, size_t n)
{
    int64_t given = 0, held[PC_REFUND_MAX_SPLITS];
    for (size_t i = 0; i < n; i++) {
        held[i] = out[i].amount;
        out[i].amount = mul_div(amount, held[i], total);
        given += out[i].amount;
    }
    /* Each share was rounded down by less than one unit, so fewer than n
     * units are left; a receiver that holds anything holds at least one
     * more than its share (amount < total). */
    for (size_t i = 0; i < n && given < amount; i++) {
        if (out[i].amount < held[i]) {
            out[i].amount++;
            given++;
        }
    }
}

int pc_refund_plan_splits(int64_t amount, int64_t prior, int64_t paid, int last,
                          int advance_funding, const pc_refund_receiver_t *rv, size_t n,
                          pc_refund_share_t *out, int *bad)
{
    *bad = -1;
    if (n > PC_REFUND_MAX_SPLITS || amount <= 0 || paid <= 0 || amount > paid || prior < 0)
        return PC_EINVAL;
    /* What this refund and the live ones before it came to, of the base. */
    int64_t upto = prior > paid - amount ? paid : prior + amount;
    memset(out, 0, n * sizeof *out);
    int explicit_ = 0;
    for (size_t i = 0; i < n; i++) {
        if (rv[i].received < 0 || rv[i].refunded < 0 || rv[i].refunded > rv[i].received ||
            rv[i].pending < 0 || rv[i].available < 0)
            return PC_EINVAL;
        if (rv[i].asked >= 0)
            explicit_ = 1;
    }
    int64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t left = rv[i].received - rv[i].refunded;
        int64_t share;
        if (explicit_) {
            share = rv[i].asked > 0 ? rv[i].asked : 0;
            if (share > left) {
                *bad = (int)i;
                memset(out, 0, n * sizeof *out);
                return PC_REFUND_OVER_RECEIVED;
            }
        } else if (last) {
            share = left;
        } else {
            /* Its share of all the refunds so far, rounded down once, less
             * what it gave back already: the rounding is not lost again at
             * every refund. Before, each refund's share was rounded down on
             * its own, and ten refunds of 199 of a 1990 trade split 995/995
             * took 991 and 990 back, the merchant paying the 9 from other
             * sales. */
            share = mul_div(upto, rv[i].received, paid) - rv[i].refunded;
            share = share < 0 ? 0 : min64(share, left);
        }
        snprintf(out[i].account, sizeof out[i].account, "%s", rv[i].account);
        out[i].amount = share;
        total += share;
        if (total > amount && explicit_) {
            memset(out, 0, n * sizeof *out);
            return PC_EINVAL;
        }
    }
    if (total > amount)
        trim_last_shares(amount, total, out, n);
    for (size_t i = 0; i < n; i++) {
        int64_t rest = out[i].amount;
        take(&rest, rv[i].pending, &out[i].pending);
        take(&rest, rv[i].available, &out[i].available);
        if (rest > 0) {
            if (!advance_funding) {
                *bad = (int)i;
                memset(out, 0, n * sizeof *out);
                return PC_REFUND_INSUFFICIENT;
            }
            out[i].receivable = rest;
        }
    }
    return 0;
}

int64_t pc_refund_shares_total(const pc_refund_share_t *s, size_t n)
{
    int64_t t = 0;
    for (size_t i = 0; i < n; i++)
        t += s[i].amount;
    return t;
}

/* sign -1: accept (money leaves the sources into escrow); +1: the return. */
static int source_legs(const pc_refund_sources_t *src, const pc_refund_share_t *shares, size_t n,
                       const pc_refund_parties_t *who, int sign, pc_refund_legs_t *out)
{
    legs_init(out, who->currency);
    if (src->wallet > 0 && (!who->buyer_id || !who->buyer_id[0]))
        return PC_EINVAL;
    if (n > PC_REFUND_MAX_SPLITS)
        return PC_ELIMIT;
    int64_t receivable = src->receivable;
    int64_t moved = src->pending + src->available + src->wallet + src->receivable;
    for (size_t i = 0; i < n; i++) {
        receivable += shares[i].receivable;
        moved += shares[i].amount;
    }
    if (moved == 0)
        return 0;
    int rc = add(out, PC_LEDGER_MERCHANT_PENDING, who->merchant_id, sign * src->pending);
    if (!rc)
        rc = add(out, PC_LEDGER_MERCHANT_AVAILABLE, who->merchant_id, sign * src->available);
    if (!rc)
        rc = add(out, PC_LEDGER_MERCHANT_RECEIVABLE, who->merchant_id, sign * receivable);
    if (!rc)
        rc = add(out, PC_LEDGER_BUYER_WALLET, who->buyer_id, sign * src->wallet);
    for (size_t i = 0; i < n && !rc; i++) {
        if (shares[i].pending + shares[i].available + shares[i].receivable != shares[i].amount) {
            rc = PC_EINVAL;
            break;
        }
        rc = add(out, PC_LEDGER_MERCHANT_PENDING, shares[i].account, sign * shares[i].pending);
        if (!rc)
            rc = add(out, PC_LEDGER_MERCHANT_AVAILABLE, shares[i].account,
                     sign * shares[i].available);
    }
    if (!rc)
        rc = add(out, PC_LEDGER_PLATFORM_ESCROW, NULL, -sign * moved);
    if (rc)
        legs_init(out, who->currency);
    return rc;
}

int pc_refund_legs_accept(const pc_refund_sources_t *src, const pc_refund_parties_t *who,
                          pc_refund_legs_t *out)
{
    return source_legs(src, NULL, 0, who, -1, out);
}

int pc_refund_legs_return(const pc_refund_sources_t *src, const pc_refund_parties_t *who,
                          pc_refund_legs_t *out)
{
    return source_legs(src, NULL, 0, who, 1, out);
}

int pc_refund_legs_accept_splits(const pc_refund_sources_t *src, const pc_refund_share_t *shares,
                                 size_t n, const pc_refund_parties_t *who, pc_refund_legs_t *out)
{
    return source_legs(src, shares, n, who, -1, out);
}

int pc_refund_legs_return_splits(const pc_refund_sources_t *src, const pc_refund_share_t *shares,
                                 size_t n, const pc_refund_parties_t *who, pc_refund_legs_t *out)
{
    return source_legs(src, shares, n, who, 1, out);
}

int pc_refund_legs_success(const pc_refund_parts_t *parts, const pc_refund_parties_t *who,
                           pc_refund_legs_t *out)
{
    legs_init(out, who->currency);
    if (parts->external < 0 || parts->balance < 0 || parts->coupon < 0)
        return PC_EINVAL;
    if (parts->external > 0 && (!who->channel_id || !who->channel_id[0]))
        return PC_EINVAL;
    if (parts->balance > 0 && (!who->buyer_id || !who->buyer_id[0]))
        return PC_EINVAL;
    int64_t total = parts->external + parts->balance + parts->coupon;
    if (total == 0)
        return 0;
    int merchant_coupon = who->coupon_funder && who->coupon_funder[0];
    int rc = add(out, PC_LEDGER_PLATFORM_ESCROW, NULL, -total);
    if (!rc)
        rc = add(out, PC_LEDGER_CHANNEL_CLEARING, who->channel_id, parts->external);
    if (!rc)
        rc = add(out, PC_LEDGER_BUYER_WALLET, who->buyer_id, parts->balance);
    if (!rc)
        rc = add(out,
                 !merchant_coupon ? PC_LEDGER_PLATFORM_MARKETING
                 : who->error     ? PC_LEDGER_MERCHANT_RECEIVABLE
                                  : PC_LEDGER_MERCHANT_PENDING,
                 merchant_coupon ? who->coupon_funder : NULL, parts->coupon);
    if (rc)
        legs_init(out, who->currency);
    return rc;
}
