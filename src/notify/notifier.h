/* The notifier job: delivers outbox rows (notify/outbox.h) to merchants'
 * notify_url, signed by the platform, retrying on the configured schedule
 * until the merchant answers HTTP 200 with the body "success" (api.md
 * "Notifications"). One per paycore process; any number of processes run it
 * together against one database.
 *
 * How a row travels:
 *  - claim: on a timer (and again at once after a full batch) one UPDATE …
 *    WHERE event_id IN (SELECT … FOR UPDATE SKIP LOCKED) moves due rows'
 *    next_attempt_at forward by a lease and stamps a claim token, so no other
 *    node touches them while this one works, and a node that dies gives them
 *    back when the lease runs out;
 *  - send: rows wait in a queue per merchant host (scheme://host:port); each
 *    host gets at most notify.host_connections requests at once and holds at
 *    most a quarter of notify.max_inflight rows (only host_connections once
 *    its last request timed out or could not connect: the rest are handed
 *    back). While a host holds half of that, claims leave its merchants' rows
 *    in the table and the next claim comes as it drains, so a slow or dead
 *    endpoint only ever holds its own events up, and a long backlog for one
 *    fast endpoint flows at its speed. A row is sent only while its lease
 *    still covers the whole request timeout; otherwise it is handed back;
 *  - sign: X-Timestamp, X-Nonce and X-Signature = base64 HMAC-SHA256(merchant
 *    secret, "TIMESTAMP\nNONCE\nRAW_BODY\n"); for RSA2 merchants an RSA
 *    PKCS#1 v1.5 SHA-256 signature with the platform key;
 *  - record: outcomes are written in batches, each only where the claim token
 *    still matches: DELIVERED, PENDING with the next delay from
 *    notify.schedule_ms, or FAILED when the schedule is used up; every
 *    attempt also gets a row in outbox_attempts.
 *
 * The platform key is the PEM RSA private key in notify.platform_key_file; when
 * none is configured an ephemeral key is generated on the thread pool at start
 * (with a warning: it changes on every restart and differs between nodes);
 * until it exists RSA2 notifications wait and the public key is not served.
 *
 * Metrics: pc_outbox_backlog, pc_outbox_oldest_age_seconds (refreshed every
 * 5 s from PostgreSQL, so every node reports the same global value),
 * pc_notify_attempts_total{result}, pc_notify_inflight,
 * pc_notify_released_total, pc_notify_failed_total,
 * pc_notify_record_errors_total, pc_notify_delivery_seconds.
 *
 * Needs libuv, store/db, http/client, merchant/merchant, auth/sign, core/config.
 * Not thread-safe: use it from its loop's thread only. */
#ifndef PC_NOTIFY_NOTIFIER_H
#define PC_NOTIFY_NOTIFIER_H
#include <uv.h>

#include "auth/sign.h"
#include "core/config.h"
#include "merchant/merchant.h"
#include "store/db.h"

typedef struct pc_notifier pc_notifier_t;

/* Reads the notify.* options of cfg, loads or generates the platform key and
 * creates the HTTP client; nothing runs until pc_notifier_start. Reads the key
 * file synchronously: call it before the loop runs. db and merchants are
 * borrowed and must outlive the notifier; node_id is copied. Returns NULL and
 * writes the reason into err (errlen bytes) on a bad option or key file. */
pc_notifier_t *pc_notifier_new(uv_loop_t *loop, const pc_config_t *cfg, pc_db_t *db,
                               pc_merchants_t *merchants, const char *node_id, char *err,
                               size_t errlen);

/* Starts claiming and delivering (the first claim runs at once). */
void pc_notifier_start(pc_notifier_t *n);

/* Graceful stop: claims nothing more, hands back rows that were claimed but
 * not sent yet, lets requests in flight finish (each is bounded by
 * notify.timeout_ms) and records their outcomes, then closes the HTTP client
 * and every uv handle and calls cb(data) from the loop. The notifier's memory
 * stays until pc_notifier_free. Call it once. */
void pc_notifier_stop(pc_notifier_t *n, void (*cb)(void *data), void *data);

/* Frees the notifier after its stop callback ran (or when it was never
 * started). NULL is allowed. */
void pc_notifier_free(pc_notifier_t *n);

/* The platform's public key as PEM SubjectPublicKeyInfo (what
 * GET /v1/platform-key serves), or NULL while an ephemeral key is still being
 * generated; owned by the notifier, valid until pc_notifier_free. */
const char *pc_notifier_platform_key_pem(const pc_notifier_t *n);

/* Deliveries claimed by this node and not yet recorded (queued or in flight). */
int pc_notifier_held(const pc_notifier_t *n);

/* How long (seconds) an RSA2 merchant's notification has waited on this
 * node for a platform key it cannot load or make; 0 while none waits. */
long long pc_notifier_key_wait_s(const pc_notifier_t *n);

#endif
