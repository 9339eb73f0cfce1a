/* Reconciliation (system.md §2.9): per channel per business day (UTC), the
 * channel's statement — fetched from the channel (pc_channel_fetch_file) or
 * uploaded by ops — is matched against our payments, refunds and payouts
 * (recon_match.h), each difference is recorded by kind, the safe ones are
 * repaired at once, and ops resolve the rest, with or without a ledger
 * adjustment through the suspense account (recon_adjust.h).
 *
 * A run of a day:
 *   claim    one row per (channel, day) in recon_runs; a day being run
 *            elsewhere is refused (409), a run left RUNNING by a node that
 *            died is taken over after recon.run_timeout_s;
 *   fetch    the statement (or take the uploaded one);
 *   match    in one transaction (recon_match.c);
 *   repair   each open MISSING_LOCAL difference whose payment is still
 *            PROCESSING/UNKNOWN and whose line agrees with it in amount and
 *            currency is a lost callback: the payment is advanced with
 *            pc_engine_apply exactly as the callback would have, and the
 *            difference becomes AUTO_REPAIRED. The engine's conditional update
 *            makes a second application a no-op, and a difference is only
 *            ever repaired while OPEN, so running the day again never repairs
 *            twice. Refunds and payouts have no public apply function yet:
 *            their differences stay open for ops.
 * The daily job (a timer on every node) runs yesterday for every enabled
 * channel once the UTC time passes recon.daily_at; the run's unique key makes
 * one node run each day, and a failed day is retried after recon.retry_s.
 *
 * Metrics: pc_recon_diffs_total{channel,kind} (new differences),
 * pc_recon_open_diffs{channel} (from the database, after every run and
 * resolution and on every job tick), pc_recon_runs_total{channel,status},
 * pc_recon_repairs_total{channel,result}.
 *
 * Needs api/app.h (database, channels, channel client, engine, config),
 * recon_match.h, recon_adjust.h, ledger. */
#ifndef PC_RECON_RECON_H
#define PC_RECON_RECON_H
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "api/app.h"

typedef struct pc_recon pc_recon_t;

/* Creates the service for app (borrowed; it outlives the service). Returns
 * NULL when out of memory or when recon.daily_at is not "HH:MM". */
pc_recon_t *pc_recon_new(pc_app_t *app);
/* Starts the daily job's timer (recon.poll_ms), if recon.daily is on. */
void pc_recon_start(pc_recon_t *rc);
/* Stops the timer; runs in flight end on their own. */
void pc_recon_stop(pc_recon_t *rc);
/* Frees it; call after the loop has stopped. */
void pc_recon_free(pc_recon_t *rc);
/* The app it serves (borrowed). */
pc_app_t *pc_recon_app(const pc_recon_t *rc);
/* recon.daily_at in minutes after midnight UTC, as a statement parameter
 * (recon_run_json's second argument). */
const char *pc_recon_daily_at_arg(const pc_recon_t *rc);

typedef struct {
    const char *channel_id;
    const char *date; /* "YYYY-MM-DD" */
    /* The uploaded statement (borrowed until the callback), or NULL to fetch
     * it from the channel. */
    const char *csv;
    size_t csv_len;
    const char *requested_by; /* who asked ("ops", "job", a name) */
    int job;                  /* the daily job: a day already run is not run again */
} pc_recon_run_req_t;

/* A run ended: status 0 with the run object (DONE), or
 *   PC_EUNAVAIL  the statement could not be fetched, or the database failed
 *                (the run, if claimed, is FAILED; message says why),
 *   PC_EINVAL    the statement is malformed (message names the row; the run
 *                is FAILED),
 *   PC_ENOTFOUND no channel has this id,
 *   PC_ECONFLICT the day is being run elsewhere (for the job: or was run),
 * with run NULL or the run as it is. run is a new reference the callee owns;
 * message is valid during the callback. */
typedef void (*pc_recon_run_cb)(void *data, int status, const char *message, json_t *run);

/* Runs one day. Strings of req are copied (csv is borrowed). Returns 0 (cb
 * runs once, later) or PC_EINVAL (bad channel id or date: cb never runs) /
 * PC_ENOMEM. */
int pc_recon_run(pc_recon_t *rc, const pc_recon_run_req_t *req, pc_recon_run_cb cb, void *data);

/* A resolution ended: status 0 with the difference (new reference), or
 * PC_ENOTFOUND, PC_ECONFLICT (not OPEN: diff shows it), PC_EINVAL (an
 * adjustment was asked that this difference cannot have: message says why),
 * or a db error. */
typedef void (*pc_recon_resolve_cb)(void *data, int status, const char *message, json_t *diff);

/* Resolves an OPEN difference with a reason (1-500 characters), recording
 * who; with adjust, the ledger adjustment of recon_adjust.h is posted through
 * platform:suspense:CUR in the same transaction and recorded with the
 * difference. Returns 0 (cb runs once, later) or PC_EINVAL / PC_ENOMEM (cb
 * never runs). */
int pc_recon_resolve(pc_recon_t *rc, int64_t diff_id, const char *reason, int adjust,
                     const char *who, pc_recon_resolve_cb cb, void *data);

#endif
