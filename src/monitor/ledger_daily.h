/* The daily ledger check: once a day, after ledger.check_at (UTC), one node
 * (the one that claims the day's row of ledger_checks) runs pc_ledger_check
 * — the same invariants as GET /admin/ledger/check: every transaction
 * balanced, every balance equal to its entries, no trade refunded past its
 * payment, no buyer charged twice without an error refund — and records the
 * result. A check that cannot run is tried again (three times a day). The
 * latest result that says the books are wrong raises LEDGER_CHECK_FAILED
 * (src/monitor/alerts.c); before, the ledger was checked only when someone
 * asked. */
#ifndef PC_MONITOR_LEDGER_DAILY_H
#define PC_MONITOR_LEDGER_DAILY_H
#include "api/app.h"
#include "ledger/ledger.h"

typedef struct pc_ledger_daily pc_ledger_daily_t;

/* NULL when ledger.check_at is not a time of day. */
pc_ledger_daily_t *pc_ledger_daily_new(pc_app_t *app);
void pc_ledger_daily_start(pc_ledger_daily_t *d);
void pc_ledger_daily_stop(pc_ledger_daily_t *d);
void pc_ledger_daily_free(pc_ledger_daily_t *d);

/* Records the result of a check that ran (status 0) as day's (YYYY-MM-DD,
 * UTC; NULL: today), made by who (a node's name, or "ops"), and sets the
 * gauge pc_ledger_check_ok. A check that could not run (status != 0) marks
 * the day's claimed row FAILED. */
void pc_ledger_check_record(pc_app_t *app, const char *day, const char *who, int status,
                            const pc_ledger_check_t *check);

#endif
