/* Exception repair for payments (system.md §2.9, 补单): payments left
 * PROCESSING or UNKNOWN (lost callback, a timeout that actually succeeded, a
 * node that died mid-call) are queried at their channel on a backoff
 * schedule (repair.schedule_ms) and advanced exactly as a callback would
 * (pc_engine_apply). A "not found" answer fails the payment only once it is
 * older than repair.not_found_after_s (a request still in flight could yet
 * land). After the last scheduled query a payment that is still open is
 * flagged for ops (needs_ops, an alert) — never failed silently. Claims use
 * SKIP LOCKED, so any number of nodes run it together. */
#ifndef PC_REPAIR_REPAIR_H
#define PC_REPAIR_REPAIR_H
#include "api/app.h"

typedef struct pc_repair pc_repair_t;

pc_repair_t *pc_repair_new(pc_app_t *app);

/* Flags a payment, payout or refund (kind "payment" | "payout" | "refund")
 * still in flight
 * after its last scheduled status query for ops (GET /admin/needs-ops; told
 * once, not at every later query; why, static, says what happened, e.g.
 * "still has no final answer"). Its claim has already set the next query at
 * the schedule's last pace, so a late answer, or one that failed to apply
 * for a passing cause, still closes it. */
void pc_repair_flag(pc_app_t *app, const char *kind, const char *no, const char *why);

/* A status-query runner's claim of due items (payments here, payouts,
 * refunds) failed with status: warns "<what> failed: ..." at most once a
 * minute (*last_s: pc_log_due); QUERIES_OVERDUE pages while it lasts. */
void pc_repair_claim_failed(long long *last_s, const char *event, const char *what, int status);
void pc_repair_start(pc_repair_t *r);
/* Stops the timer (in-flight queries finish on their own). */
void pc_repair_stop(pc_repair_t *r);
/* Frees it; call after the loop has stopped. */
void pc_repair_free(pc_repair_t *r);

#endif
