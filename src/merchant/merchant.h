/* Merchants: their record (status, signing credentials, contract) and an
 * in-process cache in front of PostgreSQL, so that authenticating a request
 * costs no database round trip most of the time. Entries live for a short TTL
 * and are dropped at once when any node changes a merchant (Redis pub/sub).
 * Needs store/db, kv/kv, auth/sign. */
#ifndef PC_MERCHANT_MERCHANT_H
#define PC_MERCHANT_MERCHANT_H
#include <jansson.h>
#include <stdint.h>

#include "auth/sign.h"
#include "kv/kv.h"
#include "store/db.h"

typedef enum { PC_SIGN_HMAC = 0, PC_SIGN_RSA2 = 1 } pc_sign_type_t;

enum {
    PC_PRODUCT_INSTANT = 1,
    PC_PRODUCT_GUARANTEE = 2,
    PC_PRODUCT_RECHARGE = 4,
};

/* A merchant as loaded. Reference-counted: take one with pc_merchant_ref while
 * you use it across callbacks; the cache holds its own. */
typedef struct pc_merchant {
    int refs;
    char id[65];
    char *name;
    int active;
    pc_sign_type_t sign_type;
    char *secret;      /* HMAC, NULL for RSA2 */
    pc_rsa_key_t *pub; /* RSA2, NULL for HMAC */
    /* After a rotation with a grace period: the previous secret or key, also
     * accepted until prev_until_s (Unix seconds); NULL otherwise. */
    char *secret_prev;
    pc_rsa_key_t *pub_prev;
    int64_t prev_until_s;
    /* HMAC: the secret before that one, when a rotation with grace came
     * while the earlier grace still ran (an answer lost and rotated again),
     * accepted until prev2_until_s; NULL otherwise. */
    char *secret_prev2;
    int64_t prev2_until_s;
    unsigned products; /* PC_PRODUCT_* bits */
    int fee_rate_bp;
    int settle_cycle_days;
    char *notify_url; /* may be NULL */
    int advance_funding;
} pc_merchant_t;

typedef struct pc_merchants pc_merchants_t;

/* ttl_ms: how long an entry is trusted without a change notice. */
pc_merchants_t *pc_merchants_new(pc_db_t *db, pc_kv_t *kv, uint64_t ttl_ms);
void pc_merchants_free(pc_merchants_t *m);

/* Looks a merchant up (cache, then PostgreSQL); on a cache hit cb runs before
 * this function returns. cb gets status 0 with the
 * merchant (borrowed for the callback; pc_merchant_ref to keep it),
 * PC_ENOTFOUND, or PC_EUNAVAIL. Returns 0 (cb runs once) or negative. */
typedef void (*pc_merchant_cb)(void *data, int status, pc_merchant_t *m);
int pc_merchants_get(pc_merchants_t *ms, const char *merchant_id, pc_merchant_cb cb, void *data);

pc_merchant_t *pc_merchant_ref(pc_merchant_t *m);
void pc_merchant_unref(pc_merchant_t *m);

/* Product name ("INSTANT") to its bit, 0 when unknown. */
unsigned pc_product_bit(const char *name);

/* Drops a cached entry here and tells every other node to do the same. */
void pc_merchants_changed(pc_merchants_t *ms, const char *merchant_id);

#endif
