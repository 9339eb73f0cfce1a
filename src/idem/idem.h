/* Idempotency for every POST under /v1/ (api.md "Idempotency"), as one layer
 * in front of the handlers. For a merchant and Idempotency-Key:
 *  - the first request runs; its answer (unless 5xx) is stored and replayed
 *    for the same method, path and body, with `Idempotent-Replayed: true`;
 *  - a different method, path or body → 422 IDEMPOTENCY_KEY_REUSED;
 *  - while the first still runs → 409 REQUEST_IN_PROGRESS.
 * Guards: a Redis lock (SET NX PX with a random token, released by
 * compare-and-delete) keeps concurrent duplicates off PostgreSQL; the primary
 * key of idempotency_keys, claimed with a conditional insert, is the real
 * guard, so with Redis down or wrong a request still runs at most once.
 * Handlers that move money store their answer inside their own transaction
 * (pc_idem_store_in_tx) so the record and the business change commit
 * together. Needs store/db, kv/kv, auth/sign, http/server. */
#ifndef PC_IDEM_IDEM_H
#define PC_IDEM_IDEM_H
#include "http/server.h"
#include "kv/kv.h"
#include "store/db.h"

#include <stdint.h>
#include <uv.h>

typedef struct pc_idem pc_idem_t;
typedef struct pc_idem_req pc_idem_req_t;

/* lock_ms: how long a claim holds without renewal; a running request renews
 * it every lock_ms / 3, so only a request whose node died loses it. secret
 * (not empty; cashier.card_key) keys the request hashes kept with each key
 * (a request body may hold a card number). NULL when it cannot start. */
pc_idem_t *pc_idem_new(uv_loop_t *loop, pc_db_t *db, pc_kv_t *kv, int64_t lock_ms,
                       const char *secret);
void pc_idem_free(pc_idem_t *idem);

/* Runs the layer for req of merchant_id: answers it (missing/invalid key,
 * replay, conflict, unavailable) or calls pc_http_next(req) with the claim
 * held. *slot receives the per-request state (owned by the request) that
 * pc_idem_store_in_tx needs. */
void pc_idem_run(pc_idem_t *idem, pc_http_req_t *req, const char *merchant_id,
                 pc_idem_req_t **slot);

/* Queues, inside tx, the statement that records the answer as final, so that
 * it commits (or not) with the business change; then the answer given for
 * the request is sent without a second write. body is the JSON text that
 * will be answered when tx commits; the handler must then respond with
 * exactly status and body. Any other answer (tx did not commit) is recorded
 * after the handler, as for any other request. ir may be NULL (no
 * idempotency on this request): then nothing happens. */
int pc_idem_store_in_tx(pc_idem_req_t *ir, pc_db_tx_t *tx, int status, const char *body);

/* Records, inside tx, that this request has set something going that a
 * rerun must not set going again (a payment sent to its channel: its
 * payment_no, at most 63 characters), when tx commits and the answer is
 * not recorded with it. A retry with the same key that finds the request
 * unanswered (its node died; it answered 5xx) then runs with
 * pc_idem_effect set and must answer with that object as it stands. Fails
 * tx (pc_require) when the claim is no longer this request's. ir may be
 * NULL: nothing happens. */
int pc_idem_note_effect_in_tx(pc_idem_req_t *ir, pc_db_tx_t *tx, const char *ref);

/* The claim as three statement parameters (merchant, key, lock token), for
 * a statement that records an effect itself (effect_ref, under the same
 * conditions as pc_idem_note_effect_in_tx); all NULL when ir is NULL.
 * Returns how many are set (3 or 0). */
int pc_idem_claim_params(const pc_idem_req_t *ir, const char *out[3]);

/* What an earlier run of this request set going (see
 * pc_idem_note_effect_in_tx), or NULL. */
const char *pc_idem_effect(const pc_idem_req_t *ir);

/* Deletes records older than 25 hours (they are kept at least 24 h). */
void pc_idem_purge(pc_idem_t *idem);

#endif
