/* Payouts (withdrawals, system.md §2.6, api.md "Payouts"): a merchant's
 * available money paid out to a bank card (token) or account through a
 * payout-capable channel.
 *
 *   POST /v1/payouts   refused (409 INVALID_STATE) until the merchant passed
 *                      real-name verification (merchant_verifications); an
 *                      ACCOUNT payee's name must have the pc_name_key of the
 *                      verified legal name (400, field payee.name); a CARD
 *                      payee's token must be a card bound through POST
 *                      /v1/buyers/{id}/cards whose BIN is in card_bins with
 *                      type DEBIT (400, field payee.card_token). Then
 *                      one transaction: the merchant's available balance is
 *                      locked and checked (422 INSUFFICIENT_BALANCE), the
 *                      amount moves to platform escrow (PAYOUT_HOLD), rules/
 *                      risk.lua decides (kind "PAYOUT"), the payout row and
 *                      the idempotent answer are written; (merchant,
 *                      out_payout_no) is unique (409 DUPLICATE_OUT_PAYOUT_NO).
 *   then               the payout is sent to the channel (ACCEPTED →
 *                      PROCESSING before the call, so a crash leaves it to the
 *                      status query), and the channel's answer, callback or a
 *                      status query makes it final.
 *
 *   ACCEPTED ─▶ PROCESSING ─▶ SUCCESS ─▶ RETURNED (the bank sent it back)
 *       │            └──────▶ FAILED
 *       └─ risk REVIEW: held (hold_reason) until ops release or reject it;
 *          risk REJECT: FAILED at once (RISK_REJECTED), no money moves.
 * Ledger: SUCCESS escrow → channel clearing (PAYOUT_SUCCESS); FAILED escrow →
 * available (PAYOUT_RELEASE); RETURNED channel clearing → available
 * (PAYOUT_RETURN). Every transition locks the payout row, moves from the
 * state it read with a conditional update and writes its ledger posting and
 * notification (payout.succeeded / payout.failed / payout.returned) in the
 * same transaction, so a duplicate callback or a racing query changes
 * nothing.
 *
 * Channel: payout.channel when set, else the first enabled channel whose
 * refund methods include PAYOUT and that takes the currency. The runner (a
 * timer on every node, claims with SKIP LOCKED) sends accepted payouts no
 * node sent and queries PROCESSING ones on payout.query_schedule_ms; a
 * channel's "not found" older than payout.not_found_after_s means it never
 * took the payout (FAILED, money back); after the last query a payout still
 * open is flagged for ops (needs_ops), never failed on a guess.
 *
 * Ops: GET /admin/payouts?status=&merchant_id=&held=true, POST
 * /admin/payouts/{no}/release | reject {"reason"}.
 *
 * Needs store/db, ledger, notify/outbox, channel/client, rules, api/app.h. */
#ifndef PC_PAYOUT_PAYOUT_H
#define PC_PAYOUT_PAYOUT_H
#include "api/app.h"
#include "channel/client.h"

typedef struct pc_payouts pc_payouts_t;

/* Creates the module for app (borrowed; must outlive it): registers the
 * merchant and admin routes and installs app->on_payout_callback. NULL when
 * out of memory or payout.query_schedule_ms is not a list of delays. */
pc_payouts_t *pc_payouts_new(pc_app_t *app);
/* Starts the runner's timer (payout.poll_ms). */
void pc_payouts_start(pc_payouts_t *po);
/* Stops and closes the timer; work in flight finishes on its own. */
void pc_payouts_stop(pc_payouts_t *po);
/* Frees it; call after the loop has stopped. */
void pc_payouts_free(pc_payouts_t *po);

/* Makes a channel's final result (SUCCESS, FAILED, RETURNED) true for the
 * payout, as its callback would (e.g. from a statement line whose callback
 * was lost). cb (may be NULL) learns whether the payout now stands as the
 * result says (applied now or before: 1), not (0), or could not be told
 * because the database failed (-1). Returns 0 (cb runs once) or a negative
 * code. */
typedef void (*pc_payout_applied_cb)(void *data, int applied);
int pc_payout_apply(pc_app_t *app, const char *payout_no, const pc_ch_result_t *res,
                    pc_payout_applied_cb cb, void *data);
/* The same for an outcome ops record for a flagged payout: applied only
 * while it is still in flight and flagged, read under its lock (else 0:
 * the channel's answer came first, or the flag went). */
int pc_payout_apply_by_ops(pc_app_t *app, const char *payout_no, const pc_ch_result_t *res,
                           pc_payout_applied_cb cb, void *data);

#endif
