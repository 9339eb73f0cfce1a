/* Chargebacks (system.md §2.5): a cardholder disputes a payment with their
 * bank and the channel takes the money back from the platform.
 *
 * Arrival, either way ends in the same transaction ("open"):
 *   online   POST /admin/chargebacks/import {"channel_id","date"} fetches the
 *            channel's daily chargeback file (or takes an uploaded one: a
 *            "csv" member, or a text/csv body with ?channel_id=&date=) and
 *            opens one case per line; the channel's chargeback_ref is a
 *            unique key, so importing a file again changes nothing;
 *   offline  POST /admin/chargebacks (ops, e.g. from an email; `payctl
 *            chargeback enter`), keyed by the reference ops give.
 * Opening locks the disputed payment's trade row (refunds lock it too),
 * matches the payment by the channel's transaction id (or payment_no),
 * freezes the amount into the merchant's reserve (chargeback_money.h: pending,
 * then available, the rest recorded as owed), writes the case in WAIT_JUDGE
 * and the chargeback.opened notification, all in one transaction.
 *
 *   WAIT_JUDGE ──start-judge──▶ IN_JUDGE ──judge {liable}──▶ JUDGE_FINISH
 *       └──────close (withdrawn)──▶ CLOSE
 * Every transition is a conditional update (… WHERE status = expected) with
 * its ledger posting and notification (chargeback.judged / .closed) in the
 * same transaction. The merchant sees its cases (GET /v1/chargebacks,
 * /v1/chargebacks/{no}) and adds evidence (POST …/evidence) while the case is
 * WAIT_JUDGE and before evidence_due_at (else 409 INVALID_STATE).
 *
 * Refunds must not use frozen money: the SQL function
 * payment_chargeback_frozen(payment_no) (migration 0059) says how much of a
 * payment's channel part is disputed or was charged back, for the refund
 * module's refundable amount and split.
 *
 * Metrics: pc_chargebacks_total{channel,source}, pc_chargebacks_judged_total
 * {liable}, and the gauge pc_chargeback_rate_bp{merchant,channel} (90-day
 * rate; channel "*" is all channels). The rates are computed by the SQL
 * function chargeback_rates_refresh() into the table chargeback_rates after
 * each case opens or ends and every chargeback.rate_refresh_ms (so old cases
 * age out), never on the payment path: the cashier's view reads the stored
 * merchant rate (merchant_chargeback_rate_bp()) and the buyer's 90-day count
 * (buyer_chargebacks_90d()) for rules/risk.lua, as do payouts.
 *
 * Needs store/db, ledger, notify/outbox, channel/client (files), api/app.h. */
#ifndef PC_CHARGEBACK_CHARGEBACK_H
#define PC_CHARGEBACK_CHARGEBACK_H
#include "api/app.h"

typedef struct pc_chargebacks pc_chargebacks_t;

/* Creates the module for app (borrowed; must outlive it), registers its
 * merchant and admin routes and describes its metrics. NULL when out of
 * memory. */
pc_chargebacks_t *pc_chargebacks_new(pc_app_t *app);
/* Starts the timer that refreshes the rate gauges. */
void pc_chargebacks_start(pc_chargebacks_t *cbs);
/* Stops and closes the timer; work in flight finishes on its own. */
void pc_chargebacks_stop(pc_chargebacks_t *cbs);
/* Frees it; call after the loop has stopped. */
void pc_chargebacks_free(pc_chargebacks_t *cbs);

#endif
