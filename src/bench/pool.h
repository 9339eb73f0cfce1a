/* A pool of keep-alive HTTP/1.1 client connections to one host and port, for
 * paybench: one request in flight per connection, a FIFO queue of calls
 * waiting for a free connection, api.md request signing (HMAC-SHA256, fresh
 * timestamp and nonce per send) or an admin bearer token, a per-call answer
 * timeout, and reconnection after a connection dies (the server was killed,
 * say) so that a long run survives restarts. Needs libuv, http-parser,
 * jansson and auth/sign. */
#ifndef PC_BENCH_POOL_H
#define PC_BENCH_POOL_H
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct pb_pool pb_pool_t;

/* The answer to one call: status is the HTTP status, or 0 when none came (the
 * connection failed, or the answer timed out). json is the body parsed as
 * JSON (NULL when it is not JSON); body is the raw text. Both are valid
 * during the callback only. */
typedef void (*pb_call_cb)(void *data, int status, json_t *json, const char *body);

typedef struct {
    const char *host;
    int port;
    int connections;
    uint64_t timeout_ms;     /* no answer within this: status 0 and the connection is reset */
    const char *merchant_id; /* sign every call as this merchant (NULL: unsigned) */
    const char *secret;
    const char *bearer; /* "Authorization: Bearer …" on every call (NULL: none) */
} pb_pool_opts_t;

/* Creates the pool and starts connecting. Strings in opts are copied. Returns
 * NULL when the address is invalid or memory runs out. */
pb_pool_t *pb_pool_new(uv_loop_t *loop, const pb_pool_opts_t *opts);
/* Changes the signing merchant for calls sent from now on (strings copied). */
void pb_pool_set_merchant(pb_pool_t *p, const char *merchant_id, const char *secret);
/* Queues a call; method, path, body (NULL: none) and idem_key (NULL: none)
 * are copied. cb runs exactly once, from the loop, never from inside this
 * call (nor at all once pb_pool_close was called). */
void pb_pool_call(pb_pool_t *p, const char *method, const char *path, const char *body,
                  const char *idem_key, pb_call_cb cb, void *data);
/* The same, signed as another merchant than the pool's: merchant_id and
 * secret are borrowed and must live until cb has run. Without json_2xx a
 * 2xx answer's body is not parsed (json NULL; body as received): the load
 * generator shares the machine it measures, and parsing answers it only
 * counts cost it a tenth of a core under the consult benchmark. */
void pb_pool_call_as(pb_pool_t *p, const char *merchant_id, const char *secret, const char *method,
                     const char *path, const char *body, const char *idem_key, bool json_2xx,
                     pb_call_cb cb, void *data);
/* Calls queued or in flight. */
size_t pb_pool_pending(const pb_pool_t *p);
/* Connections that failed (refused, reset, timed out) since the start. */
uint64_t pb_pool_conn_errors(const pb_pool_t *p);
/* Fails every queued call (status 0), closes the connections and frees the
 * pool once libuv has released them; the loop then runs dry. */
void pb_pool_close(pb_pool_t *p);

#endif
