/* Trades (system.md §2.1): the merchant's order, unique by (merchant,
 * out_trade_no). This module holds the trade record, its one JSON form, and
 * the merchant API handlers (create, query). State changes live in
 * trade_state.c. Needs store/db and the api context. */
#ifndef PC_ACQUIRING_TRADE_H
#define PC_ACQUIRING_TRADE_H
#include <jansson.h>
#include <stdint.h>

#include "http/errors.h"
#include "store/db.h"

typedef struct {
    char trade_no[40];
    char out_trade_no[65];
    char merchant_id[65];
    char product[12];
    char status[20];
    int64_t amount, paid_amount, refunded_amount, settled_amount;
    char currency[4];
    const char *subject;                       /* borrowed */
    const char *buyer_id;                      /* borrowed, may be NULL */
    const char *metadata;                      /* JSON text, borrowed */
    const char *splits;                        /* JSON text, borrowed */
    long long created_at, expires_at, paid_at; /* Unix seconds; 0 = null */
} pc_trade_t;

/* The trade object of api.md "Trades". Caller owns the result. */
json_t *pc_trade_json(const pc_trade_t *t);

/* Columns to select for pc_trade_from_row. */
#define PC_TRADE_COLUMNS                                                                           \
    "trade_no, out_trade_no, merchant_id, product, status, amount, currency, paid_amount, "        \
    "refunded_amount, settled_amount, subject, buyer_id, metadata::text AS metadata, "             \
    "splits::text AS splits, floor(extract(epoch FROM created_at))::bigint AS created_at, "        \
    "floor(extract(epoch FROM expires_at))::bigint AS expires_at, "                                \
    "coalesce(floor(extract(epoch FROM paid_at))::bigint, 0) AS paid_at"

/* A guarantee trade ($1, its row locked by the transaction) with nothing
 * left in escrow to settle ends as a settle of the rest would have ended it:
 * TRADE_SUCCESS. Nothing left: all settled, refunded from escrow or paid to
 * a cardholder from escrow by a chargeback (trade_escrow_free, migration
 * 0101); none of it still to come back (an escrow refund in flight may fail,
 * a chargeback holding escrow may be lost). Returns the trade's
 * PC_TRADE_COLUMNS and notify_url when it ended, no row otherwise. */
#define PC_TRADE_FINISH_GUARANTEE_SQL                                                              \
    "UPDATE trades t SET status = 'TRADE_SUCCESS', updated_at = now() WHERE trade_no = $1 AND "    \
    "status = 'PAY_SUCCESS' AND product = 'GUARANTEE' AND trade_escrow_free(trade_no) <= 0 AND "   \
    "NOT chargeback_unsettled_open(trade_no) AND NOT EXISTS (SELECT 1 FROM refunds r WHERE "       \
    "r.trade_no = t.trade_no AND r.type = 'NORMAL' AND r.from_escrow > 0 AND r.status NOT IN "     \
    "('SUCCESS', 'FAILED', 'TERMINATED')) RETURNING " PC_TRADE_COLUMNS ", notify_url"

/* Fills t from a row selected with PC_TRADE_COLUMNS; strings borrowed from res. */
void pc_trade_from_row(pc_trade_t *t, pc_db_res_t *res, int row);

/* A POST /v1/trades body, validated (api.md "Trades"). Strings are borrowed
 * from the JSON body; meta_text (the metadata object, "{}" when none) and
 * split_text (the normalised splits, "[]" when none) are malloc'd and
 * released with pc_trade_create_req_clear. */
typedef struct {
    const char *out_trade_no, *product, *currency, *subject;
    const char *buyer_id, *notify_url; /* NULL when absent */
    unsigned product_bit;              /* PC_PRODUCT_* */
    long long amount, expire_seconds;
    char *meta_text, *split_text;
} pc_trade_create_req_t;

/* Checks a trade creation body as the merchant merchant_id sent it (no I/O:
 * whether the merchant's contract allows the product is the caller's check).
 * Returns PC_API_OK with r filled, or the error to answer with the field at
 * fault (may be NULL) and a message (static strings); r then holds nothing. */
pc_api_err_t pc_trade_create_parse(json_t *body, const char *merchant_id, pc_trade_create_req_t *r,
                                   const char **field, const char **message);
void pc_trade_create_req_clear(pc_trade_create_req_t *r);

/* Queues in tx a statement that fails, and so aborts tx, unless every
 * account of splits (a JSON array of {account, amount}) is an active
 * merchant: money split to an id nobody owns sat in a pending account that
 * no settlement reads. cb gets the failure; pc_trade_split_refused tells it
 * from others. */
int pc_trade_require_split_accounts(pc_db_tx_t *tx, const char *splits, pc_db_query_cb cb,
                                    void *data);
int pc_trade_split_refused(int status, pc_db_res_t *res);

/* A new trade number: "T" + UTC date + 64 random bits in hex (unique across
 * processes and machines without coordination; the primary key backs it). */
void pc_trade_no_new(char out[40]);

#endif
