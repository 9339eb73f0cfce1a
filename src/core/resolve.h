/* Host name resolution off the event loop.
 *
 * libpq's PQconnectStart and hiredis' connect resolve a host name with a
 * blocking getaddrinfo: with the name server slow or down (during the very
 * outage that makes nodes reconnect) every reconnect stalled the loop for
 * the resolver's timeout, all requests with it. Names are resolved here on
 * libuv's thread pool first, and the address is handed to the client. */
#ifndef PC_CORE_RESOLVE_H
#define PC_CORE_RESOLVE_H

#include <stddef.h>
#include <uv.h>

/* Whether host must be resolved: a name, not an address literal (IPv4,
 * IPv6, [IPv6]) nor a Unix socket directory, nor a list of hosts. */
int pc_resolve_needed(const char *host);

#define PC_RESOLVE_MAX 8

/* Resolved: status 0 with n (1..PC_RESOLVE_MAX) addresses as text, in the
 * resolver's order (a client tries them in turn, as libpq and hiredis do
 * with a name: "localhost" may be ::1 first with the server on 127.0.0.1),
 * or a libuv error (UV_ECANCELED after pc_resolve_cancel) with n 0. Always
 * called, once. */
typedef void (*pc_resolve_cb)(void *data, int status, const char *const *addrs, int n);

typedef struct pc_resolve pc_resolve_t;

/* Starts resolving host (TCP). Returns the request (until cb has run) or
 * NULL when it could not start (cb is not called then). */
pc_resolve_t *pc_resolve_start(uv_loop_t *loop, const char *host, pc_resolve_cb cb, void *data);
/* Gives a request up: cb still runs (the owner's count of requests in
 * flight goes down there), always with UV_ECANCELED, even if the name was
 * resolved meanwhile, so the owner never acts on an answer it gave up on. */
void pc_resolve_cancel(pc_resolve_t *r);

#endif
