/* Settlement (system.md §2.6): once per business day, each merchant's due
 * pending money moves to its available balance, net of its fee and of what
 * it owes, and a statement records how (settlement_calc.h has the rules).
 *
 * "Due" follows the merchant's contract: with settle_cycle_days N, the
 * statement of day D takes every credit to the merchant's pending account
 * posted before 00:00 UTC of day D − N + 1 (T+N: money of day D − N and
 * earlier). What was settled is kept per ledger posting (settlement_items),
 * so no credit is settled twice, whatever day or node runs.
 *
 * One transaction per merchant and currency: claim the day's statement
 * (INSERT … ON CONFLICT DO NOTHING on the unique (merchant, currency, day):
 * a day already settled, or being settled by another node, is skipped), lock
 * the merchant's accounts in the ledger's lock order, record the due items,
 * post the SETTLEMENT movement and fill in the statement. Running a day
 * twice changes nothing.
 *
 * Runs: a timer on every node (settlement.poll_ms) settles the current UTC
 * day once it is past settlement.hour_utc (when settlement.auto is on); ops
 * run any past day or today with POST /admin/settlements/run {"date"}
 * (`payctl settlement run DATE`). A job that keeps failing raises the
 * SETTLEMENT_FAILING alert (pc_settlement_failing, monitor/alerts.c).
 * Statements: GET /admin/settlements?
 * merchant_id=&date= and GET /admin/settlements/{statement_no} (with items).
 *
 * Needs store/db, ledger, api/app.h. */
#ifndef PC_SETTLEMENT_SETTLEMENT_H
#define PC_SETTLEMENT_SETTLEMENT_H
#include "api/app.h"

typedef struct pc_settlement pc_settlement_t;

/* Creates the job for app (borrowed; must outlive it) and registers the
 * admin routes. NULL when out of memory. */
pc_settlement_t *pc_settlement_new(pc_app_t *app);
/* Starts the daily job's timer. */
void pc_settlement_start(pc_settlement_t *st);
/* Stops and closes the timer; a run in flight finishes on its own. */
void pc_settlement_stop(pc_settlement_t *st);
/* Frees it; call after the loop has stopped. */
void pc_settlement_free(pc_settlement_t *st);

/* Runs of the daily job in a row that must fail before it counts as failing
 * (each run retries what the previous could not write, settlement.poll_ms
 * later: a lock or a deadline that passes is not a page). */
#define PC_SETTLEMENT_FAILING_RUNS 3

/* When the job's last PC_SETTLEMENT_FAILING_RUNS runs on this node all
 * failed: the number of statements the last one could not write (-1: it
 * could not read which merchants to settle), with its business day and its
 * first failure ("merchant currency (step): error") written to day and
 * first. 0 otherwise. */
int pc_settlement_failing(const pc_settlement_t *st, char day[11], char *first, size_t firstlen);

#endif
