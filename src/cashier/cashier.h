/* The cashier (system.md §2.3): everything before money moves. This header
 * is shared by consult (which methods, in what order) and pay (accept): the
 * one-round-trip loader of what a decision needs (trade, buyer, wallet,
 * coupons, bound cards, recent usage), the limits check, labels, and the
 * method ids both speak ("BALANCE", "COUPON:<coupon_id>", "CARD",
 * "QUICK_PAY:<card_id>", "AGREEMENT:<card_id>", "NETBANK", "VA", "OTC",
 * "WALLET", "QR_MERCHANT", "QR_BUYER"). Needs store/db and the api context. */
#ifndef PC_CASHIER_CASHIER_H
#define PC_CASHIER_CASHIER_H
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "api/app.h"
#include "channel/client.h"
#include "core/currency.h"

/* The trade a view was loaded for (its texts are the view's). */
typedef struct {
    const char *trade_no, *merchant_id, *product, *status, *currency;
    const char *buyer_id; /* NULL: a trade for no particular buyer */
    int64_t amount;
    int64_t expires_at; /* Unix seconds */
} pc_cashier_trade_t;

typedef struct {
    const char *buyer_id, *status;
    int64_t age_days;
} pc_cashier_buyer_t;

/* What consult and pay decide on, loaded in one query, in columns: texts
 * and lists belong to the view and live as long as the callback it is given
 * to (pc_cashier_view_json makes a copy that outlives it). */
typedef struct {
    const pc_cashier_trade_t *trade; /* NULL: no such trade of this merchant */
    const pc_cashier_buyer_t *buyer; /* NULL: unknown buyer (a guest) */
    int64_t wallet;                  /* buyer's wallet in the trade's currency */
    json_t *coupons;                 /* usable coupons of this buyer for this trade */
    /* The buyer's balances of this merchant's named account types:
     * [{account_type, owner, balance}] (spendable only at this merchant). */
    json_t *typed_wallets;
    json_t *cards; /* bound cards, each with its "usage" by anyone: [24 h, 30 days] or null */
    int64_t used_day, used_month, attempts_1h;
    bool has_pay_part;           /* PC_VIEW_PAY was asked for: the four below are read */
    int64_t open_attempts;       /* the trade's payments still open */
    int64_t failed_attempts;     /* the trade's FAILED payments */
    int64_t chargebacks_90d;     /* the buyer's, for risk.lua */
    int64_t merchant_cb_rate_bp; /* the merchant's, for risk.lua */
    const char *last_method;
    json_t *type_counts; /* [[method type, successful payments in 90 days], ...] */
    int64_t now;
    pc_cashier_trade_t trade_row; /* what trade points to */
    pc_cashier_buyer_t buyer_row; /* what buyer points to */
} pc_cashier_view_t;

/* The view as one JSON object that outlives the callback: {trade: {trade_no,
 * merchant_id, product, status, amount, currency, buyer_id, expires_at} or
 * null, buyer: {buyer_id, status, age_days} or null, wallet, usage: {day,
 * month, attempts_1h}, typed_wallets, coupons, cards, last_method,
 * type_counts, now} and, with the pay part, attempts: {open, failed},
 * chargebacks_90d, merchant_cb_rate_bp. NULL when out of memory. */
json_t *pc_cashier_view_json(const pc_cashier_view_t *v);

typedef void (*pc_cashier_view_cb)(void *data, int status, pc_cashier_view_t *view);

/* The parts of the view only some decisions need; a part not asked for is
 * not read and is left empty (no coupons, no cards, no typed wallets, no
 * history, open and failed attempts 0, no chargeback figures). Consult shows
 * every method and asks for PC_VIEW_ALL; a pay asks for PC_VIEW_PAY and what
 * its method uses. The trade, buyer, wallet and usage (limits and the hour's
 * attempts) are always read. */
/* A buyer's status (b: its buyers row) as the cashier takes it: BLOCKED
 * also while a BUYER block-list entry names it. Before, consult offered a
 * listed buyer its balance and cards (pay then refused it, counted as a
 * failed attempt) and a card was bound for it. */
#define PC_BUYER_STATUS_SQL                                                                        \
    "CASE WHEN EXISTS (SELECT 1 FROM block_list l WHERE l.kind = 'BUYER' AND l.value = "           \
    "b.buyer_id) THEN 'BLOCKED' ELSE b.status END"

#define PC_VIEW_COUPONS 1u /* coupons */
#define PC_VIEW_CARDS 2u   /* cards and their usage */
#define PC_VIEW_TYPED 4u   /* typed_wallets */
#define PC_VIEW_HISTORY 8u /* last_method, type_counts (ranking hints) */
#define PC_VIEW_PAY 16u    /* open_attempts, failed_attempts, chargebacks for risk.lua */
#define PC_VIEW_ALL 15u    /* every method's part: what consult shows */
#define PC_VIEW_EVERY 31u

/* Loads the view for (merchant, trade, buyer) with the parts asked for (and
 * the ones always read). cb gets 0 with the view (valid during the callback
 * only) or a db error. Returns 0 (cb runs once) or a negative code. */
int pc_cashier_load(pc_app_t *app, const char *merchant_id, const char *trade_no,
                    const char *buyer_id, unsigned parts, pc_cashier_view_cb cb, void *data);

/* Whether the trade can be paid now by buyer_id: 0, or -1 after answering
 * req with the reason (404 no such trade, 409 not payable or expired, 400 the
 * trade belongs to another buyer). */
int pc_cashier_check_payable(pc_http_req_t *req, const pc_cashier_view_t *v, const char *buyer_id);

/* Limits: returns "LIMIT_EXCEEDED" when a payment of amount would pass the
 * buyer's single, daily or monthly limit, a card's single limit (by_card:
 * it is paid by a card, typed in or bound), or the bound card card_id's
 * daily or monthly limit; NULL otherwise. */
const char *pc_cashier_limit(pc_app_t *app, const pc_cashier_view_t *v, int by_card,
                             const char *card_id, int64_t amount);

/* Answer req exactly as POST /v1/cashier/consult and POST /v1/cashier/pay
 * do, for the merchant merchant_id with the request body body (the handlers
 * behind merchant authentication call them with the signed body; the hosted
 * cashier page with a body it built for the one trade of its token).
 * merchant_id and body are borrowed and must stay valid until req is
 * answered. */
void pc_cashier_consult_run(pc_app_t *app, pc_http_req_t *req, const char *merchant_id,
                            json_t *body);
/* peer_is_buyer: the request comes from the buyer's own browser (the
 * hosted page), so its address is the buyer's when the body names none; a
 * merchant's server calling the API is not the buyer, and without
 * client.ip there is then no address to count or block. */
void pc_cashier_pay_run(pc_app_t *app, pc_http_req_t *req, const char *merchant_id, json_t *body,
                        int peer_is_buyer);

/* The coupon of the view with this id, or NULL. */
json_t *pc_cashier_coupon(const pc_cashier_view_t *v, const char *coupon_id);
/* The typed wallet of the view for account_type, or NULL. */
json_t *pc_cashier_typed_wallet(const pc_cashier_view_t *v, const char *account_type);
/* The bound card of the view with this id, or NULL. */
json_t *pc_cashier_card(const pc_cashier_view_t *v, const char *card_id);

/* A POST /v1/cashier/pay body, checked for shape (api.md "Cashier"): ids of
 * [A-Za-z0-9_-], balance_amount, the card's fields, the client. Strings are
 * borrowed from the body; absent ones are NULL (ip too: the caller falls back
 * to the peer address). */
typedef struct {
    const char *trade_no, *buyer_id, *method_id, *coupon_id, *buyer_code;
    const char *challenge_id, *challenge_answer;
    const char *ip, *device, *platform;
    long long balance_amount;
    pc_ch_card_t card;
    int has_card;
} pc_pay_request_t;

/* Returns PC_API_OK with r filled, or the error to answer with the field at
 * fault (may be NULL) and a message (static strings). No I/O. */
pc_api_err_t pc_pay_request_parse(json_t *body, pc_pay_request_t *r, const char **field,
                                  const char **message);

#endif
