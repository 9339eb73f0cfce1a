/* Trade state changes (system.md §2.1): every transition is a conditional
 * update (`… WHERE status = expected`) inside the caller's transaction, posts
 * its money movement to the ledger and writes the merchant's notification to
 * the outbox in that same transaction. Also the merchant routes that change
 * state (close, settle, balance), the admin ledger check, and the job that
 * closes expired trades and finishes old ones. Needs store/db, ledger,
 * notify/outbox. */
#ifndef PC_ACQUIRING_TRADE_STATE_H
#define PC_ACQUIRING_TRADE_STATE_H
#include <stdint.h>

#include "ledger/ledger.h"
#include "store/db.h"

/* SQL: the trade aliased t has an attempt at a channel whose answer is
 * awaited. Its expiry waits for that answer: closed first, a trade whose
 * payment then succeeded took the buyer's money only to refund it as an
 * error. A pay code lives no longer than its trade (the engine sends the
 * time left), and the status queries settle a lost answer within minutes;
 * an attempt still open a day after the later of its sending (a release
 * from review sends it again: sent_at) and the trade's expiry no longer
 * holds the trade open (flagged to ops long before). Counted from the
 * sending only, a code issued on a 7-day trade's first day and paid in its
 * last minutes had the trade closed under the channel's report (migration
 * 0104, trade_attempt_at_channel_now, is the same condition). */
#define PC_TRADE_ATTEMPT_AT_CHANNEL(t)                                                             \
    "EXISTS (SELECT 1 FROM payments ip WHERE ip.trade_no = " t ".trade_no AND ip.status IN "       \
    "('CREATED', 'PROCESSING', 'UNKNOWN') AND greatest(coalesce(ip.sent_at, ip.created_at), " t    \
    ".expires_at) > now() - interval '1 day')"

/* A payment that has arrived for a trade. sources are the ledger legs the
 * money comes from (negative amounts, e.g. channel clearing, buyer wallet,
 * marketing for a coupon, escrow for a held balance) and must sum to -amount;
 * the destination legs (merchant pending and split receivers, escrow, or the
 * recharging buyer's wallet) are derived from the trade. */
typedef struct {
    const char *trade_no;
    const char *payment_no;
    int64_t amount;
    const char *currency;
    const pc_ledger_leg_t *sources;
    size_t nsources;
    /* When not NULL, told how the trade's posting went (status
     * PC_LEDGER_INSUFFICIENT when a source, such as the buyer's wallet,
     * cannot cover its part); else a failure is only logged (the
     * transaction fails either way). */
    pc_ledger_post_cb post_cb;
    void *post_data;
} pc_trade_payment_t;

/* status 0: the trade moved to trade_status ("TRADE_SUCCESS" or
 * "PAY_SUCCESS"), ledger and outbox queued in tx. PC_ECONFLICT: the trade was
 * not waiting for payment (paid already, or closed) or the amount differs;
 * nothing was queued and tx is still usable (the caller records the payment
 * and starts an error refund). Other codes: tx failed. trade_status is valid
 * during the callback only. */
typedef void (*pc_trade_paid_cb)(void *data, int status, const char *trade_status);

/* "Trade paid with amount X via payment P", inside tx. p is copied. Returns 0
 * (cb runs once) or a negative code (cb never runs). */
int pc_trade_mark_paid(pc_db_tx_t *tx, const pc_trade_payment_t *p, pc_trade_paid_cb cb,
                       void *data);

/* Adds event (trade.closed, trade.succeeded, ...) for the trade that row of
 * res holds (PC_TRADE_COLUMNS and notify_url, as a statement that moved it
 * returns them) to tx's outbox, to the trade's notify_url, else to
 * fallback_url (may be NULL: the merchant's). Returns 0 or a negative code
 * (the transaction must not commit without it). */
int pc_trade_outbox_row(pc_db_tx_t *tx, pc_db_res_t *res, int row, const char *event,
                        const char *fallback_url);

struct pc_app;
/* Closes expired open trades and finishes trades past the refund window, a
 * batch at a time; safe on any number of nodes (SKIP LOCKED). */
void pc_trades_housekeeping(struct pc_app *app);

#endif
