#include "cashier/cashier.h"
#include "core/currency.h"
#include "core/error.h"
#include "engine/engine.h"
#include "ledger/ledger.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* bp: the buyer's payments of the last 90 days, read once through
 * payments_buyer_recent and shared by the limits (day, 30 days, attempts in
 * the hour) and the ranking hints (last method, counts per type). Limits
 * count the trade's currency only (a yen is not a cent). A bound
 * card's daily usage is the card's, whoever paid with it (payments_card_fp).
 * Reading each of these from payments on its own let the planner pick a
 * bitmap AND with payments_merchant_success, which reads every successful
 * payment of the platform on each consult.
 * A coupon its merchant funds is offered (and accepted) only where the
 * merchant's share of the payment can pay for it: the payment's posting takes
 * the coupon from the merchant's pending account, which a GUARANTEE payment
 * (into escrow) does not credit, nor an INSTANT one whose splits leave the
 * merchant less than the coupon. There the posting was refused at capture,
 * after the channel had charged the card.
 *
 * The query is put together from parts: the ones every decision needs, and
 * the ones only some do (coupons, cards, typed wallets, history), each either
 * read or left empty. One text per combination, so that each is prepared with
 * only its own sub-selects: PostgreSQL starts up every node of a plan, run or
 * not, and a CASE around the parts a pay does not need saved it a tenth where
 * leaving them out of the text saves it nearly half. */
#define VIEW_HEAD                                                                                  \
    "WITH tr AS MATERIALIZED (SELECT trade_no, merchant_id, product, status, amount, currency, "   \
    "buyer_id, floor(extract(epoch FROM expires_at))::bigint AS expires_at, splits FROM trades "   \
    "WHERE trade_no = $1), "                                                                       \
    "bp AS MATERIALIZED (SELECT status, amount, coalesce(sent_at, created_at) AS "                 \
    "created_at, method_type, currency = (SELECT currency FROM tr) AS "                            \
    "same_currency, status "                                                                       \
    "IN " PC_PAYMENT_COUNTED_STATUSES " AS counted FROM payments WHERE buyer_id = $3 "             \
    "AND created_at >= now() - interval '90 days') "                                               \
    "SELECT t.trade_no, t.merchant_id, t.product, t.status, t.amount, t.currency, t.buyer_id, "    \
    "t.expires_at, b.buyer_id, " PC_BUYER_STATUS_SQL ", floor(extract(epoch FROM now() - "         \
    "b.created_at) / "                                                                             \
    "86400)::int, "                                                                                \
    "coalesce((SELECT balance FROM ledger_accounts WHERE account_id = 'buyer:' || $3 "             \
    "|| ':wallet:' || (SELECT currency FROM tr)), 0), u.day, u.month, u.attempts_1h, "
#define VIEW_TYPED_0 "'[]', "
#define VIEW_TYPED_1                                                                               \
    "to_json(ARRAY(SELECT json_build_object('account_type', "                                      \
    "t.account_type, 'owner', $3 || '@' || $2 || '.' || t.account_type, 'balance', "               \
    "coalesce((SELECT a.balance FROM ledger_accounts a WHERE a.account_id = 'buyer:' || $3 || "    \
    "'@' || $2 || '.' || t.account_type || ':wallet:' || (SELECT currency FROM tr)), 0)) FROM "    \
    "merchant_account_types t WHERE t.merchant_id = $2 ORDER BY t.account_type)), "
#define VIEW_COUPONS_0 "'[]', "
#define VIEW_COUPONS_1                                                                             \
    "to_json(ARRAY(SELECT row_to_json(c) FROM (SELECT "                                            \
    "coupon_id, amount, currency, min_amount, funded_by, merchant_id FROM coupons WHERE buyer_id " \
    "= $3 AND status = 'AVAILABLE' AND expires_at > now() AND currency = (SELECT currency FROM "   \
    "tr) AND (merchant_id IS NULL OR merchant_id = $2) AND (funded_by "                            \
    "<> 'MERCHANT' OR (SELECT t.product <> 'GUARANTEE' AND least(coupons.amount, t.amount) <= "    \
    "t.amount - (SELECT coalesce(sum((s->>'amount')::bigint), 0) FROM "                            \
    "jsonb_array_elements(t.splits) s) FROM tr t))) c ORDER BY c.amount DESC, c.coupon_id)), "
#define VIEW_CARDS_0 "'[]', "
/* Each card with its usage by anyone ([24 h, 30 days] in the trade's
 * currency, null when none: pc_cashier_limit reads it). */
#define VIEW_CARDS_1                                                                               \
    "to_json(ARRAY(SELECT row_to_json(k) FROM (SELECT "                                            \
    "c.card_id, c.channel_id, c.token, c.brand, c.bin, c.last4, c.exp_month, c.exp_year, "         \
    "c.created_at, c.card_fp, CASE WHEN u.m IS NOT NULL THEN json_build_array(coalesce(u.d, 0), "  \
    "u.m) END AS usage FROM cards c CROSS JOIN LATERAL (SELECT sum(p.amount) FILTER "              \
    "(WHERE " PC_P_USED_DAY ") AS d, sum(p.amount) FILTER (WHERE " PC_P_USED_MONTH ") AS m FROM "  \
    "payments p WHERE p.card_fp = c.card_fp AND " PC_P_USED_ROWS " AND p.currency = (SELECT "      \
    "currency FROM tr)) u WHERE c.buyer_id = $3 AND c.merchant_id = $2 AND c.status = 'ACTIVE') "  \
    "k ORDER BY k.created_at DESC)), "
#define VIEW_HISTORY_0 "NULL::text, '[]', "
/* type_counts as [[type, count], ...] (consult makes rule's object of it). */
#define VIEW_HISTORY_1                                                                             \
    "(SELECT method_type FROM bp WHERE status = 'SUCCESS' ORDER BY created_at DESC LIMIT 1), "     \
    "to_json(ARRAY(SELECT json_build_array(method_type, count(*)) FROM bp WHERE "                  \
    "status = 'SUCCESS' GROUP BY method_type)), "
/* What only a pay reads: the trade's payments still open and failed, and the
 * chargeback figures for risk.lua. The bodies of buyer_chargebacks_90d() and
 * merchant_chargeback_rate_bp() are written out: as SQL functions with a
 * sub-select PostgreSQL cannot inline them and planned them again on every
 * call (PostgreSQL CPU per balance payment 4.6 → 3.9 ms under paybench;
 * README "Performance"). */
#define VIEW_PAY_0 "NULL::bigint, NULL::bigint, NULL::integer, NULL::integer, "
#define VIEW_PAY_1                                                                                 \
    "a.open, a.failed, (SELECT count(*)::integer FROM chargebacks WHERE buyer_id = $3 AND "        \
    "status <> 'CLOSE' AND created_at >= now() - interval '90 days'), "                            \
    "coalesce((SELECT rate_bp FROM chargeback_rates WHERE merchant_id = $2 AND channel_id = ''), " \
    "0), "
/* One row, trade or not, buyer or not: the trade only as this merchant's. */
#define VIEW_FROM                                                                                  \
    "extract(epoch FROM now())::bigint FROM (SELECT 1) one LEFT JOIN tr t ON t.merchant_id = $2 "  \
    "LEFT JOIN buyers b ON b.buyer_id = $3 CROSS JOIN (SELECT coalesce(sum(amount) FILTER "        \
    "(WHERE created_at >= now() - interval '24 hours' AND counted AND same_currency), 0) AS day, " \
    "coalesce(sum(amount) FILTER (WHERE created_at >= now() - interval '30 days' AND counted AND " \
    "same_currency), 0) AS month, count(*) FILTER (WHERE created_at >= now() - interval '1 hour' " \
    "AND counted) AS attempts_1h FROM bp) u"
#define VIEW_FROM_PAY_0 ""
#define VIEW_FROM_PAY_1                                                                            \
    " CROSS JOIN (SELECT count(*) FILTER (WHERE status IN " PC_PAYMENT_OPEN_STATUSES ") AS open, " \
    "count(*) FILTER (WHERE status = 'FAILED') AS failed FROM payments WHERE trade_no = $1) a"
#define VIEW(coupons, cards, typed, history, pay)                                                  \
    VIEW_HEAD VIEW_TYPED_##typed VIEW_COUPONS_##coupons VIEW_CARDS_##cards VIEW_HISTORY_##history  \
        VIEW_PAY_##pay VIEW_FROM VIEW_FROM_PAY_##pay
#define VIEWS(pay)                                                                                 \
    VIEW(0, 0, 0, 0, pay), VIEW(1, 0, 0, 0, pay), VIEW(0, 1, 0, 0, pay), VIEW(1, 1, 0, 0, pay),    \
        VIEW(0, 0, 1, 0, pay), VIEW(1, 0, 1, 0, pay), VIEW(0, 1, 1, 0, pay),                       \
        VIEW(1, 1, 1, 0, pay), VIEW(0, 0, 0, 1, pay), VIEW(1, 0, 0, 1, pay),                       \
        VIEW(0, 1, 0, 1, pay), VIEW(1, 1, 0, 1, pay), VIEW(0, 0, 1, 1, pay),                       \
        VIEW(1, 0, 1, 1, pay), VIEW(0, 1, 1, 1, pay), VIEW(1, 1, 1, 1, pay)
/* Indexed by the PC_VIEW_* bits: coupons 1, cards 2, typed 4, history 8, pay 16. */
static const char *const view_sql[32] = {VIEWS(0), VIEWS(1)};
_Static_assert(PC_VIEW_COUPONS == 1 && PC_VIEW_CARDS == 2 && PC_VIEW_TYPED == 4 &&
                   PC_VIEW_HISTORY == 8 && PC_VIEW_PAY == 16 && PC_VIEW_EVERY == 31,
               "view_sql is indexed by these bits");

/* The statement's columns, in order. */
enum {
    C_TRADE_NO,
    C_MERCHANT_ID,
    C_PRODUCT,
    C_STATUS,
    C_AMOUNT,
    C_CURRENCY,
    C_TRADE_BUYER,
    C_EXPIRES_AT,
    C_BUYER_ID,
    C_BUYER_STATUS,
    C_AGE_DAYS,
    C_WALLET,
    C_USED_DAY,
    C_USED_MONTH,
    C_ATTEMPTS_1H,
    C_TYPED,
    C_COUPONS,
    C_CARDS,
    C_LAST_METHOD,
    C_TYPE_COUNTS,
    C_OPEN,
    C_FAILED,
    C_CHARGEBACKS,
    C_CB_RATE,
    C_NOW,
    C_COUNT
};

typedef struct {
    pc_cashier_view_cb cb;
    void *data;
} load_t;

static const char *text_or_null(const pc_db_res_t *res, int col)
{
    return pc_db_isnull(res, 0, col) ? NULL : pc_db_get(res, 0, col);
}

/* A list column: a JSON array; "[]" (most of them) without a parse. NULL
 * when it is not an array. */
static json_t *list(const pc_db_res_t *res, int col)
{
    const char *t = pc_db_get(res, 0, col);
    if (!strcmp(t, "[]"))
        return json_array();
    json_t *a = json_loads(t, 0, NULL);
    if (!json_is_array(a)) {
        json_decref(a);
        return NULL;
    }
    return a;
}

static void load_cb(void *data, int status, pc_db_res_t *res)
{
    load_t *l = data;
    /* One row, as many columns as the enum names (a statement and an enum
     * that disagree are refused, not read askew). */
    if (status || pc_db_rows(res) != 1 || pc_db_cols(res) != C_COUNT) {
        l->cb(l->data, status ? status : PC_EIO, NULL);
        free(l);
        return;
    }
    pc_cashier_view_t v;
    memset(&v, 0, sizeof v);
    v.coupons = list(res, C_COUPONS);
    v.typed_wallets = list(res, C_TYPED);
    v.cards = list(res, C_CARDS);
    v.type_counts = list(res, C_TYPE_COUNTS);
    if (v.coupons && v.typed_wallets && v.cards && v.type_counts) {
        if (!pc_db_isnull(res, 0, C_TRADE_NO)) {
            v.trade = &v.trade_row;
            v.trade_row = (pc_cashier_trade_t){
                .trade_no = pc_db_get(res, 0, C_TRADE_NO),
                .merchant_id = pc_db_get(res, 0, C_MERCHANT_ID),
                .product = pc_db_get(res, 0, C_PRODUCT),
                .status = pc_db_get(res, 0, C_STATUS),
                .currency = pc_db_get(res, 0, C_CURRENCY),
                .buyer_id = text_or_null(res, C_TRADE_BUYER),
                .amount = pc_db_get_i64(res, 0, C_AMOUNT),
                .expires_at = pc_db_get_i64(res, 0, C_EXPIRES_AT),
            };
        }
        if (!pc_db_isnull(res, 0, C_BUYER_ID)) {
            v.buyer = &v.buyer_row;
            v.buyer_row = (pc_cashier_buyer_t){.buyer_id = pc_db_get(res, 0, C_BUYER_ID),
                                               .status = pc_db_get(res, 0, C_BUYER_STATUS),
                                               .age_days = pc_db_get_i64(res, 0, C_AGE_DAYS)};
        }
        v.wallet = pc_db_get_i64(res, 0, C_WALLET);
        v.used_day = pc_db_get_i64(res, 0, C_USED_DAY);
        v.used_month = pc_db_get_i64(res, 0, C_USED_MONTH);
        v.attempts_1h = pc_db_get_i64(res, 0, C_ATTEMPTS_1H);
        v.last_method = text_or_null(res, C_LAST_METHOD);
        v.has_pay_part = !pc_db_isnull(res, 0, C_OPEN);
        v.open_attempts = pc_db_get_i64(res, 0, C_OPEN);
        v.failed_attempts = pc_db_get_i64(res, 0, C_FAILED);
        v.chargebacks_90d = pc_db_get_i64(res, 0, C_CHARGEBACKS);
        v.merchant_cb_rate_bp = pc_db_get_i64(res, 0, C_CB_RATE);
        v.now = pc_db_get_i64(res, 0, C_NOW);
        l->cb(l->data, 0, &v);
    } else {
        l->cb(l->data, PC_EIO, NULL);
    }
    json_decref(v.coupons);
    json_decref(v.typed_wallets);
    json_decref(v.cards);
    json_decref(v.type_counts);
    free(l);
}

json_t *pc_cashier_view_json(const pc_cashier_view_t *v)
{
    const pc_cashier_trade_t *t = v->trade;
    const pc_cashier_buyer_t *b = v->buyer;
    json_t *o = json_pack(
        "{s:o,s:o,s:I,s:{s:I,s:I,s:I},s:O,s:O,s:O,s:s?,s:O,s:I}", "trade",
        t ? json_pack("{s:s,s:s,s:s,s:s,s:I,s:s,s:s?,s:I}", "trade_no", t->trade_no, "merchant_id",
                      t->merchant_id, "product", t->product, "status", t->status, "amount",
                      (json_int_t)t->amount, "currency", t->currency, "buyer_id", t->buyer_id,
                      "expires_at", (json_int_t)t->expires_at)
          : json_null(),
        "buyer",
        b ? json_pack("{s:s,s:s,s:I}", "buyer_id", b->buyer_id, "status", b->status, "age_days",
                      (json_int_t)b->age_days)
          : json_null(),
        "wallet", (json_int_t)v->wallet, "usage", "day", (json_int_t)v->used_day, "month",
        (json_int_t)v->used_month, "attempts_1h", (json_int_t)v->attempts_1h, "typed_wallets",
        v->typed_wallets, "coupons", v->coupons, "cards", v->cards, "last_method", v->last_method,
        "type_counts", v->type_counts, "now", (json_int_t)v->now);
    if (o && v->has_pay_part) {
        json_object_set_new(o, "attempts",
                            json_pack("{s:I,s:I}", "open", (json_int_t)v->open_attempts, "failed",
                                      (json_int_t)v->failed_attempts));
        json_object_set_new(o, "chargebacks_90d", json_integer(v->chargebacks_90d));
        json_object_set_new(o, "merchant_cb_rate_bp", json_integer(v->merchant_cb_rate_bp));
    }
    return o;
}

int pc_cashier_load(pc_app_t *app, const char *merchant_id, const char *trade_no,
                    const char *buyer_id, unsigned parts, pc_cashier_view_cb cb, void *data)
{
    load_t *l = calloc(1, sizeof *l);
    if (!l)
        return PC_ENOMEM;
    l->cb = cb;
    l->data = data;
    const char *p[] = {trade_no, merchant_id, buyer_id ? buyer_id : ""};
    int rc = pc_db_query(app->db, view_sql[parts & PC_VIEW_EVERY], 3, p, load_cb, l);
    if (rc < 0)
        free(l);
    return rc;
}

int pc_cashier_check_payable(pc_http_req_t *req, const pc_cashier_view_t *v, const char *buyer_id)
{
    if (!v->trade) {
        pc_http_respond_error(req, PC_API_NOT_FOUND, NULL, "no such trade");
        return -1;
    }
    const char *st = v->trade->status;
    if (strcmp(st, "WAIT_BUYER_PAY") != 0) {
        char msg[64];
        snprintf(msg, sizeof msg, "the trade is %s", st);
        pc_http_respond_error(req, PC_API_INVALID_STATE, NULL, msg);
        return -1;
    }
    if (v->trade->expires_at <= v->now) {
        pc_http_respond_error(req, PC_API_INVALID_STATE, NULL, "the trade has expired");
        return -1;
    }
    const char *tb = v->trade->buyer_id;
    if (tb && buyer_id && strcmp(tb, buyer_id) != 0) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "buyer_id",
                              "the trade belongs to another buyer");
        return -1;
    }
    return 0;
}

const char *pc_cashier_limit(pc_app_t *app, const pc_cashier_view_t *v, int by_card,
                             const char *card_id, int64_t amount)
{
    const pc_config_t *cfg = app->cfg;
    const char *cur = v->trade->currency;
    if (amount > pc_config_limit(cfg, "buyer_single", cur) ||
        v->used_day + amount > pc_config_limit(cfg, "buyer_daily", cur) ||
        v->used_month + amount > pc_config_limit(cfg, "buyer_monthly", cur))
        return "LIMIT_EXCEEDED";
    if (by_card && amount > pc_config_limit(cfg, "card_single", cur))
        return "LIMIT_EXCEEDED";
    if (!card_id)
        return NULL;
    /* The bound card's usage by anyone: [24 h, 30 days], null when none. */
    json_t *u = json_object_get(pc_cashier_card(v, card_id), "usage");
    if (json_integer_value(json_array_get(u, 0)) + amount >
            pc_config_limit(cfg, "card_daily", cur) ||
        json_integer_value(json_array_get(u, 1)) + amount >
            pc_config_limit(cfg, "card_monthly", cur))
        return "LIMIT_EXCEEDED";
    return NULL;
}

static json_t *find_by(json_t *list, const char *key, const char *id)
{
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e)
    {
        const char *v = json_string_value(json_object_get(e, key));
        if (v && !strcmp(v, id))
            return e;
    }
    return NULL;
}

json_t *pc_cashier_coupon(const pc_cashier_view_t *v, const char *coupon_id)
{
    return find_by(v->coupons, "coupon_id", coupon_id);
}

json_t *pc_cashier_typed_wallet(const pc_cashier_view_t *v, const char *account_type)
{
    return find_by(v->typed_wallets, "account_type", account_type);
}

json_t *pc_cashier_card(const pc_cashier_view_t *v, const char *card_id)
{
    return find_by(v->cards, "card_id", card_id);
}
