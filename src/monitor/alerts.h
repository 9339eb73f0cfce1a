/* Alerts (system.md §2.9): conditions checked every alerts.check_ms on every
 * node — a channel whose failure rate over its window passed its threshold
 * (channel health, also what rules/route.lua sees as unhealthy), the oldest
 * undelivered notification older than alerts.outbox_age_s, payments the
 * repair job gave up on, rules refused at the last reload, open
 * reconciliation differences, and more (README "Alerts" lists every kind:
 * status queries overdue, error refunds stuck, settlement failing...). An alert is raised once (a
 * unique index on active alerts: the node that inserts it logs it and POSTs alert.raised to the ops
 * webhook), announced again (alert.grew) when the number of items it is about rises, and resolved
 * when the condition clears (alert.resolved). GET /admin/alerts lists them. */
#ifndef PC_MONITOR_ALERTS_H
#define PC_MONITOR_ALERTS_H
#include "api/app.h"

typedef struct pc_alerts pc_alerts_t;

pc_alerts_t *pc_alerts_new(pc_app_t *app);
void pc_alerts_start(pc_alerts_t *a);
/* Also alerts on this node's notifier (NOTIFY_NO_PLATFORM_KEY). */
struct pc_notifier;
void pc_alerts_watch_notifier(pc_alerts_t *a, struct pc_notifier *n);
void pc_alerts_stop(pc_alerts_t *a);
void pc_alerts_free(pc_alerts_t *a);

#endif
