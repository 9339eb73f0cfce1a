/* The transactional outbox (system.md §2.2): code that changes a trade,
 * refund, payout or chargeback calls pc_outbox_add inside the same PostgreSQL
 * transaction, so the merchant's notification commits exactly when the change
 * does (and vanishes with a rollback). The notifier job (notify/notifier.h)
 * delivers the rows. Needs store/db, auth/sign (event ids) and jansson.
 *
 * Each event is stored with the exact body that will be POSTed (api.md
 * "Notifications"):
 *   {"event_id":"evt_<32 hex>","type":"trade.paid",
 *    "created_at":"2026-11-22T08:00:00Z","data":{…object snapshot…}}
 * event_id is 128 random bits, stable across every attempt, so merchants can
 * de-duplicate. */
#ifndef PC_NOTIFY_OUTBOX_H
#define PC_NOTIFY_OUTBOX_H
#include <jansson.h>
#include <stddef.h>

#include "store/db.h"

/* "evt_" and 32 lowercase hex digits. */
#define PC_EVENT_ID_LEN 36

/* Queues the INSERT of one event on tx without waiting for it (it is
 * pipelined; a failure aborts tx, so the caller's pc_db_tx_commit reports it).
 * type must be one of the api.md types ("trade.paid", …, "chargeback.closed").
 * data is the object snapshot; it is borrowed and serialised at once, so the
 * caller keeps its reference. notify_url is the URL to POST to: the caller
 * resolves it (the object's own notify_url, else the merchant's). A NULL or
 * empty notify_url means there is nothing to deliver: the event is still
 * recorded, with status SKIPPED, so it has an id and ops can see it.
 * A notify_url that is not http(s) counts as none (logged outbox.bad_url).
 * Returns 0, PC_EINVAL for an unknown type, an empty merchant_id or data that
 * is not an object, PC_ENOMEM, PC_EIO (no
 * CSPRNG) or the error of pc_db_tx_query (e.g. PC_EUNAVAIL). Nothing is
 * queued on failure. */
int pc_outbox_add(pc_db_tx_t *tx, const char *merchant_id, const char *type, const char *notify_url,
                  json_t *data);

/* Same as pc_outbox_add, and writes the new event's id and a NUL into
 * event_id (PC_EVENT_ID_LEN + 1 bytes) on success, e.g. for the caller's log. */
int pc_outbox_add_id(pc_db_tx_t *tx, const char *merchant_id, const char *type,
                     const char *notify_url, json_t *data, char event_id[PC_EVENT_ID_LEN + 1]);

/* True when type is one of the api.md notification types. */
int pc_outbox_type_is_valid(const char *type);

/* Builds the body POSTed for an event: a malloc'd, NUL-terminated compact
 * JSON string the caller frees, or NULL when out of memory or data is not an
 * object. created_at is Unix seconds. data is borrowed. The body names the
 * merchant it is for (after api.md's four members): an RSA2 merchant's
 * notifications are all signed with the one platform key, and a merchant
 * that pointed its notify_url at another's endpoint would have that one
 * receive a genuine signed event about an object not its own. */
char *pc_outbox_payload(const char *event_id, const char *type, long long created_at,
                        const char *merchant_id, json_t *data);

#endif
