/* Trades (system.md §2.1): the merchant's order, unique by (merchant,
 * out_trade_no). This module holds the trade record, its one JSON form, and
 * the merchant API handlers (create, query). State changes live in
 * trade_state.c. Needs store/db and the api context. */
#ifndef PC_ACQUIRING_TRADE_H
#define PC_ACQUIRING_TRADE_H
#include <jansson.h>
#include <stdint.h>

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
    "splits::text AS splits, extract(epoch FROM created_at)::bigint AS created_at, "               \
    "extract(epoch FROM expires_at)::bigint AS expires_at, "                                       \
    "coalesce(extract(epoch FROM paid_at)::bigint, 0) AS paid_at"

/* Fills t from a row selected with PC_TRADE_COLUMNS; strings borrowed from res. */
void pc_trade_from_row(pc_trade_t *t, pc_db_res_t *res, int row);

/* A new trade number: "T" + UTC date + 64 random bits in hex (unique across
 * processes and machines without coordination; the primary key backs it). */
void pc_trade_no_new(char out[40]);

#endif
