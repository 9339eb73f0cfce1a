/* HTTP/1.1 server on libuv and http-parser: keep-alive, pipelined requests
 * answered in order (one request per connection is dispatched at a time; later
 * ones wait parsed-but-unread in the buffer), size limits (headers → 431,
 * body → 413), idle and slow-request timeouts, a connection cap, SO_REUSEPORT
 * so several processes can share a port, and graceful shutdown.
 *
 * Handlers may answer asynchronously: a pc_http_req_t stays valid until one
 * of the pc_http_respond* functions is called for it, even if the client went
 * away meanwhile (the answer is then dropped). Every request must be answered
 * exactly once. Needs libuv, http-parser, jansson, core/log, core/metrics. */
#ifndef PC_HTTP_SERVER_H
#define PC_HTTP_SERVER_H
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "http/errors.h"

typedef struct pc_http_server pc_http_server_t;
typedef struct pc_http_req pc_http_req_t;
typedef struct pc_router pc_router_t;

typedef struct {
    const char *host;
    int port; /* 0: any free port (see pc_http_server_port) */
    int max_connections;
    /* Requests dispatched and not answered yet (each may wait for the
     * database or a channel) beyond which a new one is answered 503 at
     * once, Retry-After 1: the work queued behind a slow dependency stays
     * bounded, whatever clients send. 0: no limit. /healthz is exempt. */
    int max_inflight;
    size_t max_header_bytes;
    size_t max_body_bytes;
    uint64_t idle_timeout_ms;
    uint64_t request_timeout_ms;
    int access_log;
    const char *name; /* "api" or "admin": used in logs and metric labels */
    /* Reverse proxies whose X-Forwarded-For is believed (see
     * http/forwarded.h): addresses or CIDR blocks, NULL or "" for none. */
    const char *trusted_proxies;
    /* The port is this process's alone: a second process started on it
     * while this one listens fails to start instead of answering half of its
     * requests. The admin port is per node (health, metrics of this node
     * alone). */
    int own_port;
    /* When set, only a request it trusts by its headers alone (returns
     * non-zero: the admin token) may send up to max_body_bytes; any other
     * is held to untrusted_max_body_bytes (413 above), decided before its
     * body is read. The admin listener takes uploads of many megabytes, and
     * must not buffer that much for a client that has no token. */
    int (*trusted)(const pc_http_req_t *req, void *data);
    void *trusted_data;
    size_t untrusted_max_body_bytes;
} pc_http_server_opts_t;

/* Called for each request. `data` is the route's data. */
typedef void (*pc_http_handler_cb)(pc_http_req_t *req, void *data);

/* Creates a server that routes with router (borrowed; must outlive the server)
 * and starts listening. Returns NULL and logs on failure. */
pc_http_server_t *pc_http_server_start(uv_loop_t *loop, const pc_http_server_opts_t *opts,
                                       pc_router_t *router);
/* The bound port (useful with port 0). */
int pc_http_server_port(const pc_http_server_t *srv);
/* Open connections right now. */
int pc_http_server_connections(const pc_http_server_t *srv);
/* Stops accepting, closes idle connections, lets in-flight requests finish
 * (each connection closes after its current answer), then frees the server and
 * calls cb. The server must not be used after this call. */
void pc_http_server_stop(pc_http_server_t *srv, void (*cb)(void *data), void *data);

/* --- the request, valid until answered --- */
const char *pc_http_req_method(const pc_http_req_t *req);
/* Path without the query string, e.g. "/v1/trades/T1". */
const char *pc_http_req_path(const pc_http_req_t *req);
/* Path with the query string exactly as sent (what merchants sign). */
const char *pc_http_req_target(const pc_http_req_t *req);
/* Raw query string without '?', or "" when none. */
const char *pc_http_req_query(const pc_http_req_t *req);
/* Value of a query parameter, percent-decoded into a buffer the request owns;
 * NULL when absent. */
const char *pc_http_req_query_param(pc_http_req_t *req, const char *name);
/* Header value by case-insensitive name, NULL when absent. */
const char *pc_http_req_header(const pc_http_req_t *req, const char *name);
/* Path parameter bound by the router ({trade_no}); NULL when absent. */
const char *pc_http_req_param(const pc_http_req_t *req, const char *name);
const char *pc_http_req_body(const pc_http_req_t *req, size_t *len);
/* Parses the body as a JSON object; NULL (and nothing answered) when it is not
 * one. The request owns the result. */
json_t *pc_http_req_json(pc_http_req_t *req);
const char *pc_http_req_id(const pc_http_req_t *req);
/* Client address as text. */
const char *pc_http_req_peer(const pc_http_req_t *req);
/* The client's address: the peer, or behind a trusted proxy the address it
 * forwarded for (X-Forwarded-For, read from the right). */
const char *pc_http_req_client_ip(pc_http_req_t *req);
/* Memory freed when the request is answered (zeroed). */
void *pc_http_req_alloc(pc_http_req_t *req, size_t size);
/* Strings copied into the request's memory. */
char *pc_http_req_strdup(pc_http_req_t *req, const char *s);
/* A value kept for the request's life (e.g. the authenticated merchant). */
void pc_http_req_set_user(pc_http_req_t *req, void *user);
void *pc_http_req_user(const pc_http_req_t *req);
/* The route pattern that matched ("/v1/trades/{trade_no}"), for logs/metrics. */
const char *pc_http_req_route(const pc_http_req_t *req);
/* Registers fn to run when the request is answered or abandoned (after the
 * answer is queued). At most 4 per request. */
void pc_http_req_on_done(pc_http_req_t *req, void (*fn)(void *arg), void *arg);

/* --- answering; each call completes the request --- */
/* Adds a response header before answering (copied). */
void pc_http_add_header(pc_http_req_t *req, const char *name, const char *value);
/* Copies body. */
void pc_http_respond(pc_http_req_t *req, int status, const char *content_type, const char *body,
                     size_t len);
/* A layer (idempotency, for one) that must see the answer before it goes out
 * sets a responder: the next pc_http_respond* call hands the answer to fn
 * instead of sending it (body valid during the call only), and fn finishes the
 * request with pc_http_send, now or later. */
void pc_http_set_responder(pc_http_req_t *req,
                           void (*fn)(pc_http_req_t *req, int status, const char *content_type,
                                      const char *body, size_t len, void *data),
                           void *data);
/* Sends the answer, bypassing any responder. Copies body. */
void pc_http_send(pc_http_req_t *req, int status, const char *content_type, const char *body,
                  size_t len);
/* Serialises and decrefs body (steals the reference). */
void pc_http_respond_json(pc_http_req_t *req, int status, json_t *body);
/* The api.md error body {"error":{"code","message","field"}}; field may be NULL. */
void pc_http_respond_error(pc_http_req_t *req, pc_api_err_t err, const char *field,
                           const char *message);

/* --- router --- */
pc_router_t *pc_router_new(void);
void pc_router_free(pc_router_t *r);
/* Adds a route; pattern segments "{name}" bind path parameters. Patterns and
 * methods are copied. Returns 0 or PC_EINVAL for a malformed pattern. */
int pc_router_add(pc_router_t *r, const char *method, const char *pattern,
                  pc_http_handler_cb handler, void *data);
/* A handler run before every routed handler (auth, for example); it either
 * answers the request or calls pc_http_next(req). */
void pc_router_set_filter(pc_router_t *r, const char *path_prefix, pc_http_handler_cb filter,
                          void *data);
/* Continues from a filter to the route's handler. */
void pc_http_next(pc_http_req_t *req);

#endif
