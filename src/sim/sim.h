/* paysim, the channel simulator: one process that speaks the channel protocol
 * (PROTOCOL.md) for any number of simulated channels, with run-time fault
 * injection and control endpoints for tests. This header joins the binary's
 * parts: the simulator object and its lifecycle (sim.c), timers that outlive
 * a request (tasks), signed answers, the transaction flow (flow.c), the
 * channel API (channel_api.c), the control API (control.c) and callbacks to
 * paycore (notify.c). Everything runs on one libuv loop; nothing blocks it.
 * Needs http/server, http/client, auth/sign, core/log and the sim modules. */
#ifndef PC_SIM_SIM_H
#define PC_SIM_SIM_H
#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "http/client.h"
#include "http/server.h"
#include "sim/codes.h"
#include "sim/store.h"

typedef struct {
    const char *host;               /* listen address; NULL: 127.0.0.1 */
    int port;                       /* 0: any free port */
    uint64_t seed;                  /* base of the fault streams */
    const char *callback_base;      /* default callback base URL, or NULL/"" */
    const char *public_base;        /* base of redirect URLs; NULL: http://host:port */
    size_t max_txns;                /* 0: the store's default */
    uint32_t callback_retry_ms;     /* first retry delay, doubling to 30x; 0: 1000 */
    uint32_t callback_max_attempts; /* 0: 1000 */
    uint32_t callback_timeout_ms;   /* 0: 5000 */
    size_t max_pending_callbacks;   /* 0: 100000 */
    bool access_log;
} pc_sim_opts_t;

typedef struct pc_sim pc_sim_t;
typedef struct pc_sim_task pc_sim_task_t;

/* Called once per task: when its time comes (cancelled false) or when the
 * simulator resets or stops first (cancelled true). The task is freed after
 * the call. */
typedef void (*pc_sim_task_cb)(pc_sim_task_t *task, bool cancelled);

/* Work scheduled for later: a held or delayed answer, a refund that settles,
 * a payment that expires, a callback retry. */
struct pc_sim_task {
    uv_timer_t timer;
    pc_sim_t *sim;
    pc_sim_task_cb cb;
    pc_sim_task_t *prev, *next;
    pc_http_req_t *req;   /* held or delayed request, if any */
    pc_sim_channel_t *ch; /* its channel (valid: tasks end before a reset) */
    void *data;
    char ref[PC_SIM_REF_LEN]; /* a transaction, looked up again when due */
    bool counted_held;
};

struct pc_sim {
    uv_loop_t *loop;
    pc_sim_opts_t opts;
    char host[64];
    char callback_base[512];
    char public_base[256];
    pc_router_t *router;
    pc_http_server_t *server;
    pc_http_client_t *client;
    pc_sim_store_t *store;
    pc_sim_limits_t limits;
    pc_sim_task_t *tasks;
    size_t ntasks;
    int64_t clock_offset_ms;
    unsigned generation; /* bumped by reset; older callbacks are dropped */
    bool stopping;
    void (*stopped_cb)(void *data);
    void *stopped_data;
    int closing_parts;
    struct {
        size_t held;
        size_t callbacks_pending;
        uint64_t callbacks_sent, callbacks_delivered, callback_attempts, callbacks_dropped,
            callbacks_skipped, callbacks_abandoned;
    } stats;
};

/* ---- sim.c ---------------------------------------------------------------- */

/* Creates the simulator on loop and starts listening. Returns NULL (and logs)
 * on failure. The caller stops it with pc_sim_stop. opts is copied. */
pc_sim_t *pc_sim_start(uv_loop_t *loop, const pc_sim_opts_t *opts);
/* The bound port. */
int pc_sim_port(const pc_sim_t *sim);
/* Graceful stop: answers held requests, drops pending callbacks (counted in
 * the log), lets in-flight requests finish, closes every handle, frees the
 * simulator and then calls cb(data). Call once. */
void pc_sim_stop(pc_sim_t *sim, void (*cb)(void *data), void *data);
/* Forgets every transaction, card, line, fault and pending callback, and
 * re-seeds the fault streams with seed. */
void pc_sim_reset(pc_sim_t *sim, uint64_t seed);

/* Business time (Unix ms): the wall clock plus the offset set by
 * POST /sim/clock. Dates of statements follow it; signature windows use the
 * real clock. */
int64_t pc_sim_now_ms(const pc_sim_t *sim);
/* The real wall clock, Unix seconds. */
int64_t pc_sim_real_s(void);

/* Schedules cb after delay_ms. Returns the task (owned by the simulator; set
 * its fields before returning to the loop), or NULL while stopping or when
 * out of memory (cb is then never called). */
pc_sim_task_t *pc_sim_task_start(pc_sim_t *sim, uint64_t delay_ms, pc_sim_task_cb cb);

/* Ends a task before its time: it is unlinked and its callback runs now with
 * cancelled true. */
void pc_sim_task_cancel(pc_sim_task_t *task);
/* Cancels the pending timer of t, if any. */
void pc_sim_txn_cancel_timer(pc_sim_txn_t *t);

/* Answers a request. With a channel, the answer is signed for it (X-Timestamp,
 * X-Nonce echoing the request's, X-Signature); control answers pass NULL. */
void pc_sim_reply(pc_http_req_t *req, pc_sim_channel_t *ch, int status, const char *content_type,
                  const char *body, size_t len);
/* Serialises and decrefs body (steals it). */
void pc_sim_reply_json(pc_http_req_t *req, pc_sim_channel_t *ch, int status, json_t *body);
/* {"error":{"code","message","field"}} with the code's status; field and
 * message may be NULL. */
void pc_sim_reply_error(pc_http_req_t *req, pc_sim_channel_t *ch, pc_sim_err_t err,
                        const char *field, const char *message);

/* ---- flow.c: what happens to transactions -------------------------------- */

/* A failure code paysim reports, with its message and whether trying again
 * (another attempt, another channel) may succeed. */
typedef struct {
    const char *code;
    const char *message;
    bool retryable;
} pc_sim_failure_t;

/* The catalogue entry of code, or NULL when paysim never reports it. */
const pc_sim_failure_t *pc_sim_failure_find(const char *code);

/* Moves t to a final status at business time: the fee of a success, its
 * statement line, the chargeback of a disputed card, the refundable amount
 * of a failed refund's payment; then the callback when notify. failure_code
 * (from the catalogue, NULL for none) explains a failure or a close. */
void pc_sim_txn_finish(pc_sim_t *sim, pc_sim_txn_t *t, pc_sim_status_t status,
                       const char *failure_code, bool notify);
/* Settles a PROCESSING refund or payout after delay_ms (SUCCESS, with a
 * callback). */
void pc_sim_txn_settle_later(pc_sim_t *sim, pc_sim_txn_t *t, uint64_t delay_ms);
/* Closes a PROCESSING payment as EXPIRED when its expiry comes (callback). */
void pc_sim_txn_expire_later(pc_sim_t *sim, pc_sim_txn_t *t);
/* The buyer paid (success) or gave up: completes the PROCESSING transaction
 * found by reference (an async reference, a redirect URL, or a refund or
 * payout id waiting for a manual result). *out receives it. Returns
 * PC_SIM_OK, PC_SIM_NOT_FOUND, PC_SIM_INVALID_STATE or PC_SIM_EXPIRED. */
pc_sim_err_t pc_sim_complete(pc_sim_t *sim, const char *reference, bool success,
                             const char *failure_code, pc_sim_txn_t **out);
/* The bank sent a successful payout back. */
pc_sim_err_t pc_sim_return_payout(pc_sim_t *sim, const char *ref, const char *reason,
                                  pc_sim_txn_t **out);
/* The object paycore sees for t (payment, refund or payout). New reference. */
json_t *pc_sim_txn_json(const pc_sim_t *sim, const pc_sim_txn_t *t);
/* Records a faked fault for GET /sim/faked and logs it. kind is a static
 * string; channel_ref (none yet when a request "timed out" before anything
 * happened), paycore_ref and event_id (callback faults) may be NULL. */
void pc_sim_fake(pc_sim_t *sim, pc_sim_channel_t *ch, const char *kind, pc_sim_kind_t op,
                 const char *channel_ref, const char *paycore_ref, const char *event_id);

/* ---- channel_api.c, control.c ------------------------------------------- */

/* Adds the /ch/{channel_id}/… routes and their signature filter. Returns 0
 * or PC_ENOMEM. */
int pc_sim_routes_channel(pc_sim_t *sim);
/* Adds /healthz and the /sim/… control routes. */
int pc_sim_routes_control(pc_sim_t *sim);

/* ---- notify.c ------------------------------------------------------------- */

/* Sends the callback for t's current state (event type such as
 * "payment.succeeded"), applying the channel's lost- and duplicate-callback
 * faults, retrying until paycore answers 200. */
void pc_sim_notify(pc_sim_t *sim, const pc_sim_txn_t *t, const char *type);

#endif
