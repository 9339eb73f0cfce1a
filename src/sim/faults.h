/* Per-channel behaviour that tests change at run time through POST
 * /sim/faults: failure-injection rates, delays, fees, and pending statement
 * discrepancies. Rates are integer basis points (0–10000; 10000 = always); a
 * JSON real between 0 and 1 is also accepted as a fraction. Parsing validates
 * every field before changing anything, so a bad request changes nothing.
 * Pure functions over jansson values. Needs jansson. */
#ifndef PC_SIM_FAULTS_H
#define PC_SIM_FAULTS_H
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

/* Statement discrepancies still to be faked on a channel's next statement
 * lines (extra lines are added at once, so never pending). */
typedef struct {
    int missing;         /* a real line left out of the statement */
    int amount_mismatch; /* a line whose amount is off by one minor unit */
    int fee_mismatch;    /* a line whose fee is off by one minor unit */
    int status_mismatch; /* a SUCCESS line shown as FAILED */
} pc_sim_discrepancy_t;

typedef struct {
    /* Rates in basis points. */
    int timeout_bps;               /* no answer, and nothing happens */
    int success_after_timeout_bps; /* no answer, but it happens */
    int lost_callback_bps;         /* a callback that is never sent */
    int duplicate_callback_bps;    /* a callback sent twice */
    int decline_bps;               /* a retryable decline (ISSUER_UNAVAILABLE / BANK_UNAVAILABLE) */
    int tokenize_timeout_bps;      /* a tokenize held hang_ms, then 504 (nothing kept) */
    /* Delays in milliseconds. */
    int latency_ms; /* added before every /ch request is handled */
    int hang_ms;    /* how long a "timed-out" request is held before a 504 */
    /* 0: refunds/payouts answer SUCCESS at once; > 0: PROCESSING, then
     * SUCCESS after that many ms (callback); -1: PROCESSING until POST
     * /sim/complete. */
    int refund_delay_ms;
    int payout_delay_ms;
    /* Fees the channel charges, in minor units: fee_bps of the amount (half
     * up) plus fee_fixed per successful payment; payout_fee per payout;
     * refunds are free. */
    int fee_bps;
    int64_t fee_fixed;
    int64_t payout_fee;
    pc_sim_discrepancy_t pending;
} pc_sim_faults_t;

/* What a POST /sim/faults asked for besides the settings themselves. */
typedef struct {
    bool has_seed;
    uint64_t seed;
    int extra_lines;  /* statement_discrepancy.extra: fake lines to add now */
    char currency[4]; /* statement_discrepancy.currency for extra lines */
} pc_sim_faults_extra_t;

/* The defaults of a channel: no faults, and the fee schedule of the
 * built-in channels (PROTOCOL.md "Channels"); unknown ids charge nothing. */
void pc_sim_faults_defaults(pc_sim_faults_t *f, const char *channel_id);

/* Applies the fields present in body to f (absent fields keep their value;
 * "reset": true starts from the defaults first). Returns 0, or PC_EINVAL with
 * *bad_field naming the first invalid field (static string) and f unchanged.
 * extra receives the seed and extra-line requests. */
int pc_sim_faults_apply(pc_sim_faults_t *f, const char *channel_id, json_t *body,
                        pc_sim_faults_extra_t *extra, const char **bad_field);

/* The settings as the JSON object GET/POST /sim/faults answer. New
 * reference. */
json_t *pc_sim_faults_json(const pc_sim_faults_t *f);

/* The fee on amount: amount * bps / 10000 rounded half up, plus fixed.
 * amount and fixed are >= 0 and bounded by the protocol's amount limit, so
 * nothing overflows. */
int64_t pc_sim_fee(int64_t amount, int bps, int64_t fixed);

#endif
