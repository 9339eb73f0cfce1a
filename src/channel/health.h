/* What a channel's answers mean, and how they count towards the channel's
 * health. Two parts, both pure (no I/O, no clock: callers pass the time), so
 * that unit tests can pin every rule down:
 *
 * 1. Outcomes: the table of failure codes of the channel protocol (what
 *    paysim's src/sim/flow.c and codes.c report) with whether another attempt
 *    may succeed (retryable) and whether the code is the channel's fault; the
 *    mapping of one verified answer (HTTP status and body) to a
 *    pc_ch_result_t; and the shape api.md gives a payment's action.
 *
 * 2. Health arithmetic: every call adds one attempt to a time bucket, with a
 *    failure flag (the channel did not work: UNKNOWN, retryable and system
 *    failures) or a decline flag (the channel worked and said no: card
 *    declined, insufficient funds, a bad card number — the buyer's problem,
 *    which must not take a channel out of routing) and its latency. The
 *    buckets of one alert window are summed into success rate, mean latency
 *    and healthy. channel/client.c keeps the shared buckets in Redis (every
 *    node sees the same numbers) and a local copy of the same buckets in
 *    memory for when Redis cannot answer.
 *
 * Needs jansson and channel/client.h (the result type). */
#ifndef PC_CHANNEL_HEALTH_H
#define PC_CHANNEL_HEALTH_H
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "channel/client.h"

/* ---- Outcomes ---------------------------------------------------------------- */

/* The operations of the channel protocol; names label metrics and logs. */
typedef enum {
    PC_CH_OP_PAY = 0,
    PC_CH_OP_QUERY,
    PC_CH_OP_REFUND,
    PC_CH_OP_REFUND_QUERY,
    PC_CH_OP_PAYOUT,
    PC_CH_OP_PAYOUT_QUERY,
    PC_CH_OP_TOKENIZE,
    PC_CH_OP_FILE,
    PC_CH_OP_CLOSE, /* close a payment paycore no longer wants (its trade closed) */
    PC_CH_OP_COUNT
} pc_ch_op_t;

/* "pay", "query", "refund", "refund_query", "payout", "payout_query",
 * "tokenize", "file"; static. */
const char *pc_ch_op_name(pc_ch_op_t op);

/* How one call counts for the channel's health. */
typedef enum {
    PC_CH_COUNT_OK = 0,  /* the channel did its job (success, processing, an answer) */
    PC_CH_COUNT_DECLINE, /* the channel worked and said no for a business reason */
    PC_CH_COUNT_FAILURE, /* the channel did not work */
    /* An answer to a read (a status query, a daily file): not counted. A
     * transaction's outcome is counted once, when it is made; counted
     * again at each status query (a waiting VA or QR payment is queried
     * every few seconds), answers diluted the failure rate that routing
     * and CHANNEL_FAILURE_RATE read (10 % of pays timing out read as
     * 1.8 %). A read that fails still counts as a failure. */
    PC_CH_COUNT_NONE,
} pc_ch_count_t;

/* One failure code of the protocol. */
typedef struct {
    const char *code;
    bool retryable;      /* another attempt (another channel) may succeed */
    bool blames_channel; /* counts as a failure for health, not as a decline */
} pc_ch_code_t;

/* The table entry of code, or NULL for a code the table does not know. */
const pc_ch_code_t *pc_ch_code_find(const char *code);

/* Maps a channel's answer, whose signature the caller has verified, to out
 * (which the caller zeroed; elapsed_ms is left alone):
 *   2xx with an object: its "status" — SUCCESS, PROCESSING (with the action
 *     in api.md's shape for payments), FAILED (failure.code; retryable from
 *     the code table, the channel's own flag for codes the table lacks),
 *     CLOSED (FAILED, not retryable), RETURNED; tokenize answers carry the
 *     card instead of a status;
 *   4xx with {"error":{"code"}}: FAILED with that code (the channel refused
 *     before doing anything), retryable per the table; NOT_FOUND of a query
 *     is retryable (the channel never took the transaction, so paying again
 *     is safe);
 *   408, 5xx, or anything unreadable: UNKNOWN.
 * ref, when not NULL, is the reference the answer must be about (the
 * payment_no / refund_no / payout_no field for the op); an answer about
 * another transaction is UNKNOWN ("BAD_ANSWER"). *action receives a new
 * reference for a PROCESSING payment with an action the buyer must take, else
 * NULL. Returns how the answer counts for health. */
pc_ch_count_t pc_ch_map_answer(pc_ch_op_t op, int http_status, const char *body, size_t len,
                               const char *ref, pc_ch_result_t *out, json_t **action);

/* The same for an answer already parsed: o is the transaction object of a
 * 2xx answer or of a callback's "data". */
pc_ch_count_t pc_ch_map_object(pc_ch_op_t op, const json_t *o, const char *ref, pc_ch_result_t *out,
                               json_t **action);

/* The action of a PROCESSING payment in api.md's shape, from the channel's
 * action object: {"type":"REDIRECT","url"}, {"type":"VA","va_number"},
 * {"type":"OTC","otc_code"} or {"type":"QR","qr_payload"}, each with
 * "expires_at" (string or null). NULL for no action or one the buyer has
 * nothing to do for (a buyer-presented QR code is confirmed in the buyer's
 * app). New reference. */
json_t *pc_ch_action_from(const json_t *channel_action);

/* How a result counts for health: UNKNOWN and FAILED codes that blame the
 * channel (or are retryable) are failures; other FAILED ones declines. */
pc_ch_count_t pc_ch_count_of(const pc_ch_result_t *r);

/* ---- Health arithmetic --------------------------------------------------------- */

/* Fewer attempts than this in the window never make a channel unhealthy. */
#define PC_CH_HEALTH_MIN_ATTEMPTS 20
/* Buckets per window at most, and the size of the local ring. */
#define PC_CH_HEALTH_MAX_BUCKETS 60
#define PC_CH_HEALTH_RING 64

typedef struct {
    int64_t attempts, failures, declines, latency_ms_sum;
} pc_ch_tally_t;

/* Bucket width for an alert window: 10 s up to a 600 s window, else the
 * window / 60 rounded up to a multiple of 10 s, so a window never needs more
 * than PC_CH_HEALTH_MAX_BUCKETS buckets. */
int64_t pc_ch_health_bucket_s(int64_t window_s);
/* How many buckets, ending with the current one, make up the window. */
int64_t pc_ch_health_buckets(int64_t window_s);
/* The index of the bucket holding Unix time now_s. */
int64_t pc_ch_health_bucket_of(int64_t window_s, int64_t now_s);

typedef struct {
    int success_rate_bp; /* (attempts - failures) / attempts; 10000 without attempts */
    int latency_ms;      /* mean over the window's attempts; 0 without */
    int healthy;         /* 0: failures / attempts > failure_rate_bp with enough attempts */
} pc_ch_health_t;

void pc_ch_health_eval(const pc_ch_tally_t *t, int64_t failure_rate_bp, pc_ch_health_t *out);

/* A node's own copy of one channel's buckets. Zero it to start. */
typedef struct {
    int64_t bucket_s;
    struct {
        int64_t idx;
        pc_ch_tally_t t;
    } b[PC_CH_HEALTH_RING];
} pc_ch_ring_t;

void pc_ch_ring_add(pc_ch_ring_t *r, int64_t window_s, int64_t now_s, pc_ch_count_t count,
                    uint64_t latency_ms);
pc_ch_tally_t pc_ch_ring_sum(const pc_ch_ring_t *r, int64_t window_s, int64_t now_s);

/* ---- Refreshing the shared numbers (implemented in channel/client.c) -------- */

/* Fetches channel_id's counters from Redis now instead of waiting for the
 * cache to age, then calls cb(data) (may be NULL) from the loop whether or not
 * Redis answered. For tests, and for an admin view that must be current.
 * Returns 0, PC_ENOTFOUND for an unknown channel, PC_ECLOSED while closing,
 * or PC_EUNAVAIL when Redis cannot take the command (cb is then not called). */
int pc_channel_health_refresh(pc_channel_client_t *cli, const char *channel_id,
                              void (*cb)(void *data), void *data);

#endif
