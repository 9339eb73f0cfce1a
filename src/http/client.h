/* Outbound HTTP for merchant notifications and payment channel calls, driven
 * by libcurl's multi interface on a libuv loop so that it never blocks the
 * loop: curl's sockets are watched with one uv_poll_t each and its timeout
 * with one uv_timer_t. One client per loop; it keeps connections alive for
 * reuse and caps connections per host so that one slow merchant cannot take
 * them all (requests over the cap wait in curl's queue, and that wait counts
 * towards their total timeout). Only http:// and https:// URLs are accepted,
 * redirects are not followed, and curl is set never to raise signals.
 * Needs libuv and libcurl (built with an asynchronous resolver, so that host
 * names never block; numeric addresses are not resolved at all). Not
 * thread-safe: use the client from its loop's thread only. */
#ifndef PC_HTTP_CLIENT_H
#define PC_HTTP_CLIENT_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

typedef struct pc_http_client_s pc_http_client_t;

typedef struct {
    /* Connections open at once to one host:port; 0 means 4. */
    unsigned max_host_connections;
    /* Connections open at once in total; 0 means 64. */
    unsigned max_total_connections;
    /* A response body larger than this fails with PC_HTTP_ETOOLARGE; 0 means
     * 1 MiB. Bounds the memory one misbehaving peer can make us hold
     * (headers have their own fixed bound of 64 KiB). */
    size_t max_response_bytes;
    /* Sent as User-Agent unless a request sets its own; NULL means
     * "paycore". Copied. */
    const char *user_agent;
    /* Proxy URL for every request, or NULL for none. The http_proxy and
     * similar environment variables are ignored either way, so that where
     * payment traffic goes is decided by configuration alone. Copied. */
    const char *proxy;
    /* Connect only to public addresses: a host that resolves to a loopback,
     * private, link-local, shared, multicast or reserved address fails with
     * PC_HTTP_EBLOCKED. Checked on the address curl is about to connect to,
     * after resolution, so a name that resolves differently later (DNS
     * rebinding) is caught too. For URLs merchants give (notify_url): they
     * must not reach paycore's own admin listener, Redis or the internal
     * network. Ignored when a proxy is set (the proxy decides). */
    bool public_only;
} pc_http_client_opts_t;

/* Why a request ended without a complete response. */
typedef enum {
    PC_HTTP_OK = 0,       /* a complete response arrived (any status) */
    PC_HTTP_ETIMEOUT,     /* connect or total timeout elapsed */
    PC_HTTP_ECONNREFUSED, /* the peer refused the connection */
    PC_HTTP_ECONNECT,     /* other failure to connect (unreachable, …) */
    PC_HTTP_ERESOLVE,     /* the host name did not resolve */
    PC_HTTP_ETLS,         /* TLS handshake or certificate failure */
    PC_HTTP_ESEND,        /* the connection failed while sending */
    PC_HTTP_ERECV,        /* the connection failed or closed while receiving */
    PC_HTTP_EPROTOCOL,    /* the peer did not speak valid HTTP */
    PC_HTTP_ETOOLARGE,    /* the response exceeded max_response_bytes or the header bound */
    PC_HTTP_ECANCELLED,   /* the client was closed before the response */
    PC_HTTP_EBLOCKED,     /* public_only: the host's address is not a public one */
    PC_HTTP_EOTHER,       /* anything else libcurl reports */
} pc_http_error_t;

/* What a completion callback receives. Everything it points to is owned by
 * the client and valid only during the callback: copy what you keep. */
typedef struct {
    /* HTTP status of a complete response, or 0 when error is not PC_HTTP_OK:
     * a partial response is never reported as a status. */
    int status;
    /* The response body, NUL-terminated for convenience (it may also contain
     * NULs: use body_len); "" when there is none. */
    const char *body;
    size_t body_len;
    pc_http_error_t error;
    /* A human-readable reason for error ("" when PC_HTTP_OK); for logs. */
    const char *error_message;
    /* Milliseconds from pc_http_client_request to completion, including time
     * queued behind the per-host connection cap. */
    uint64_t elapsed_ms;
    /* Opaque access to the final response's headers; use
     * pc_http_response_header. */
    const void *internal;
} pc_http_response_t;

/* Called exactly once per accepted request, from the loop, never from inside
 * pc_http_client_request. data is the pointer given with the request. The
 * callback may start new requests or close the client. */
typedef void (*pc_http_done_cb)(void *data, const pc_http_response_t *resp);

/* Called once the client has released everything, from the loop. */
typedef void (*pc_http_client_close_cb)(void *data);

typedef struct {
    const char *method; /* "GET", "POST", "PUT", "DELETE", …; NULL means GET */
    const char *url;    /* http:// or https:// */
    /* Request headers as "Name: value" strings, header_count of them. A value
     * containing CR or LF is refused (header injection). Copied. */
    const char *const *headers;
    size_t header_count;
    /* Copied; may be NULL when body_len is 0. Any method but GET and HEAD
     * sends it with a Content-Length; set Content-Type in headers, or curl
     * labels it application/x-www-form-urlencoded. */
    const void *body;
    size_t body_len;
    uint32_t timeout_ms;         /* total, from submission; 0 means 30000 */
    uint32_t connect_timeout_ms; /* 0 means the smaller of 5000 and timeout_ms */
    /* The largest response body taken; 0 (or more than the client's
     * max_response_bytes) means the client's. */
    size_t max_response_bytes;
} pc_http_request_t;

/* Creates a client on loop. opts may be NULL for defaults; it is copied.
 * Returns NULL when memory runs out or libcurl cannot start. The caller
 * closes it with pc_http_client_close and keeps the loop running until the
 * close callback (every uv handle is released by then). */
pc_http_client_t *pc_http_client_new(uv_loop_t *loop, const pc_http_client_opts_t *opts);

/* Starts req; done_cb(data, resp) is called once when it ends, whatever the
 * outcome. Everything in req is copied, so the caller may free it on return.
 * Returns 0, PC_EINVAL for a bad method, URL or header, PC_ECLOSED once the
 * client is closing, PC_ENOMEM or PC_EIO; on any error done_cb is never
 * called. */
int pc_http_client_request(pc_http_client_t *client, const pc_http_request_t *req,
                           pc_http_done_cb done_cb, void *data);

/* Number of requests accepted and not yet completed. */
size_t pc_http_client_pending(const pc_http_client_t *client);

/* Cancels every request still in flight — each one's callback runs once with
 * PC_HTTP_ECANCELLED, synchronously or, when called from a completion
 * callback, right after it returns — then closes connections and uv handles
 * and frees the client, calling close_cb(data) (may be NULL) from the loop
 * when done. Call it once; client is invalid after the call. */
void pc_http_client_close(pc_http_client_t *client, pc_http_client_close_cb close_cb, void *data);

/* Returns the value of the response header name (case-insensitive; the first
 * one if repeated) with surrounding white space removed and *len set to its
 * length, or NULL. The value is not NUL-terminated and lives as long as resp. */
const char *pc_http_response_header(const pc_http_response_t *resp, const char *name, size_t *len);

/* A static name for err, e.g. "timeout"; for logs and metrics labels. */
const char *pc_http_strerror(pc_http_error_t err);

#endif
