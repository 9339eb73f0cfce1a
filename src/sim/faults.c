#include "sim/faults.h"
#include "core/error.h"
#include "sim/rng.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* The same fees as channels/<id>.json ("fee": rate_bp, fixed), so that a
 * statement and paycore's own fee agree unless a test fakes otherwise. None
 * of those files prices payouts, so payouts are free by default. */
static const struct {
    const char *id;
    int fee_bps;
    int64_t fee_fixed;
    int64_t payout_fee;
} g_fee_schedule[] = {
    {"sim_card", 60, 0, 0},      {"sim_card2", 70, 0, 0}, {"sim_wallet", 38, 0, 0},
    {"sim_netbank", 20, 100, 0}, {"sim_va", 10, 200, 0},  {"sim_otc", 150, 0, 0},
    {"sim_qr", 38, 0, 0},
};

void pc_sim_faults_defaults(pc_sim_faults_t *f, const char *channel_id)
{
    memset(f, 0, sizeof *f);
    f->hang_ms = 30000;
    for (size_t i = 0; i < sizeof g_fee_schedule / sizeof g_fee_schedule[0]; i++) {
        if (strcmp(channel_id, g_fee_schedule[i].id) == 0) {
            f->fee_bps = g_fee_schedule[i].fee_bps;
            f->fee_fixed = g_fee_schedule[i].fee_fixed;
            f->payout_fee = g_fee_schedule[i].payout_fee;
        }
    }
}

int64_t pc_sim_fee(int64_t amount, int bps, int64_t fixed)
{
    return (amount * bps + PC_SIM_BPS_ALL / 2) / PC_SIM_BPS_ALL + fixed;
}

/* A rate is a fraction 0–1, as api.md's names read: 1 (or 1.0) is always,
 * 0.25 a quarter. Kept in basis points; a whole number is a fraction too (an
 * integer read as basis points made "decline_rate": 1 mean 0.01 %). */
static int parse_rate(json_t *v, int *out)
{
    if (!json_is_number(v))
        return PC_EINVAL;
    double d = json_number_value(v);
    if (!(d >= 0.0 && d <= 1.0))
        return PC_EINVAL;
    *out = (int)lround(d * PC_SIM_BPS_ALL);
    return 0;
}

static int parse_int(json_t *v, int64_t lo, int64_t hi, int64_t *out)
{
    if (!json_is_integer(v))
        return PC_EINVAL;
    json_int_t i = json_integer_value(v);
    if (i < lo || i > hi)
        return PC_EINVAL;
    *out = i;
    return 0;
}

#define MAX_DELAY_MS (10 * 60 * 1000)
#define MAX_FEE 1000000000LL
#define MAX_DISCREPANCIES 10000

int pc_sim_faults_apply(pc_sim_faults_t *f, const char *channel_id, json_t *body,
                        pc_sim_faults_extra_t *extra, const char **bad_field)
{
    pc_sim_faults_t n = *f;
    memset(extra, 0, sizeof *extra);
    snprintf(extra->currency, sizeof extra->currency, "CNY");
    json_t *v;
    int64_t i;

    if ((v = json_object_get(body, "reset")) && json_is_true(v))
        pc_sim_faults_defaults(&n, channel_id);

    static const struct {
        const char *name;
        size_t off;
    } rates[] = {
        {"timeout_rate", offsetof(pc_sim_faults_t, timeout_bps)},
        {"success_after_timeout_rate", offsetof(pc_sim_faults_t, success_after_timeout_bps)},
        {"lost_callback_rate", offsetof(pc_sim_faults_t, lost_callback_bps)},
        {"duplicate_callback_rate", offsetof(pc_sim_faults_t, duplicate_callback_bps)},
        {"decline_rate", offsetof(pc_sim_faults_t, decline_bps)},
        {"tokenize_timeout_rate", offsetof(pc_sim_faults_t, tokenize_timeout_bps)},
    };
    for (size_t k = 0; k < sizeof rates / sizeof rates[0]; k++) {
        if ((v = json_object_get(body, rates[k].name)) &&
            parse_rate(v, (int *)((char *)&n + rates[k].off)) < 0) {
            *bad_field = rates[k].name;
            return PC_EINVAL;
        }
    }

    static const struct {
        const char *name;
        size_t off;
        int64_t lo, hi;
    } ints[] = {
        {"latency_ms", offsetof(pc_sim_faults_t, latency_ms), 0, MAX_DELAY_MS},
        {"hang_ms", offsetof(pc_sim_faults_t, hang_ms), 0, MAX_DELAY_MS},
        {"refund_delay_ms", offsetof(pc_sim_faults_t, refund_delay_ms), -1, MAX_DELAY_MS},
        {"payout_delay_ms", offsetof(pc_sim_faults_t, payout_delay_ms), -1, MAX_DELAY_MS},
        {"fee_bps", offsetof(pc_sim_faults_t, fee_bps), 0, PC_SIM_BPS_ALL},
    };
    for (size_t k = 0; k < sizeof ints / sizeof ints[0]; k++) {
        if ((v = json_object_get(body, ints[k].name))) {
            if (parse_int(v, ints[k].lo, ints[k].hi, &i) < 0) {
                *bad_field = ints[k].name;
                return PC_EINVAL;
            }
            *(int *)((char *)&n + ints[k].off) = (int)i;
        }
    }
    if ((v = json_object_get(body, "fee_fixed"))) {
        if (parse_int(v, 0, MAX_FEE, &n.fee_fixed) < 0) {
            *bad_field = "fee_fixed";
            return PC_EINVAL;
        }
    }
    if ((v = json_object_get(body, "payout_fee"))) {
        if (parse_int(v, 0, MAX_FEE, &n.payout_fee) < 0) {
            *bad_field = "payout_fee";
            return PC_EINVAL;
        }
    }
    if ((v = json_object_get(body, "seed"))) {
        /* Seeds are up to 2^63-1 in JSON; negative values are refused to
         * keep one spelling per seed. */
        if (parse_int(v, 0, INT64_MAX, &i) < 0) {
            *bad_field = "seed";
            return PC_EINVAL;
        }
        extra->has_seed = true;
        extra->seed = (uint64_t)i;
    }

    json_t *sd = json_object_get(body, "statement_discrepancy");
    if (sd) {
        if (!json_is_object(sd)) {
            *bad_field = "statement_discrepancy";
            return PC_EINVAL;
        }
        static const struct {
            const char *name;
            size_t off;
        } kinds[] = {
            {"missing", offsetof(pc_sim_discrepancy_t, missing)},
            {"amount_mismatch", offsetof(pc_sim_discrepancy_t, amount_mismatch)},
            {"fee_mismatch", offsetof(pc_sim_discrepancy_t, fee_mismatch)},
            {"status_mismatch", offsetof(pc_sim_discrepancy_t, status_mismatch)},
        };
        for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
            if ((v = json_object_get(sd, kinds[k].name))) {
                if (parse_int(v, 0, MAX_DISCREPANCIES, &i) < 0) {
                    *bad_field = kinds[k].name;
                    return PC_EINVAL;
                }
                *(int *)((char *)&n.pending + kinds[k].off) = (int)i;
            }
        }
        if ((v = json_object_get(sd, "extra"))) {
            if (parse_int(v, 0, 1000, &i) < 0) {
                *bad_field = "extra";
                return PC_EINVAL;
            }
            extra->extra_lines = (int)i;
        }
        if ((v = json_object_get(sd, "currency"))) {
            const char *c = json_string_value(v);
            if (!c || strlen(c) != 3 || c[0] < 'A' || c[0] > 'Z' || c[1] < 'A' || c[1] > 'Z' ||
                c[2] < 'A' || c[2] > 'Z') {
                *bad_field = "currency";
                return PC_EINVAL;
            }
            memcpy(extra->currency, c, 4);
        }
    }
    *f = n;
    return 0;
}

json_t *pc_sim_faults_json(const pc_sim_faults_t *f)
{
    double all = PC_SIM_BPS_ALL; /* rates are shown as the fractions they are set as */
    return json_pack(
        "{s:f,s:f,s:f,s:f,s:f,s:f,s:i,s:i,s:i,s:i,s:i,s:I,s:I,s:{s:i,s:i,s:i,s:i}}", "timeout_rate",
        f->timeout_bps / all, "success_after_timeout_rate", f->success_after_timeout_bps / all,
        "lost_callback_rate", f->lost_callback_bps / all, "duplicate_callback_rate",
        f->duplicate_callback_bps / all, "decline_rate", f->decline_bps / all,
        "tokenize_timeout_rate", f->tokenize_timeout_bps / all, "latency_ms", f->latency_ms,
        "hang_ms", f->hang_ms, "refund_delay_ms", f->refund_delay_ms, "payout_delay_ms",
        f->payout_delay_ms, "fee_bps", f->fee_bps, "fee_fixed", (json_int_t)f->fee_fixed,
        "payout_fee", (json_int_t)f->payout_fee, "statement_discrepancy", "missing",
        f->pending.missing, "amount_mismatch", f->pending.amount_mismatch, "fee_mismatch",
        f->pending.fee_mismatch, "status_mismatch", f->pending.status_mismatch);
}
