/* Merchant authentication for every /v1/ request (api.md "Merchant
 * authentication"), as a router filter: headers, timestamp window, merchant
 * lookup, signature (HMAC-SHA256 or RSA2) over the five-line string, merchant
 * status, single-use nonce (Redis SET NX EX; a PostgreSQL table while Redis
 * is unreachable), then the idempotency layer for POSTs. Handlers behind it
 * find the merchant with pc_auth_merchant. Needs merchant/, idem/, kv/, store/. */
#ifndef PC_AUTH_AUTH_H
#define PC_AUTH_AUTH_H
#include "http/server.h"
#include "idem/idem.h"
#include "merchant/merchant.h"

typedef struct pc_auth pc_auth_t;

/* Borrows all arguments; they must outlive the returned object. */
pc_auth_t *pc_auth_new(pc_merchants_t *merchants, pc_kv_t *kv, pc_db_t *db, pc_idem_t *idem);
void pc_auth_free(pc_auth_t *auth);

/* The filter to install with pc_router_set_filter(router, "/v1/", pc_auth_filter, auth). */
void pc_auth_filter(pc_http_req_t *req, void *auth);

/* The authenticated merchant of a request that passed the filter (valid
 * until the request is answered). */
const pc_merchant_t *pc_auth_merchant(const pc_http_req_t *req);
/* The idempotency state of a POST that passed the filter (NULL for GET). */
pc_idem_req_t *pc_auth_idem(const pc_http_req_t *req);

#endif
