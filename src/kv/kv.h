/* Redis access for the process: one hiredis async connection on the libuv
 * loop, reconnected with backoff when it drops, and a timeout on every
 * command (hiredis 0.14 has none of its own: a command overdue means the
 * connection is presumed dead, every pending command fails with
 * PC_ETIMEDOUT, and it reconnects). While disconnected, commands fail at once
 * with PC_EUNAVAIL rather than queueing. Keys are the caller's; pc_kv_key
 * prepends the configured prefix. Domain code includes this header, never
 * hiredis. Also a subscriber connection for pub/sub notices between nodes. */
#ifndef PC_KV_KV_H
#define PC_KV_KV_H
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct pc_kv pc_kv_t;
typedef struct pc_kv_reply pc_kv_reply_t;

typedef enum {
    PC_KV_NIL,
    PC_KV_STRING,
    PC_KV_INTEGER,
    PC_KV_ARRAY,
    PC_KV_STATUS,
    PC_KV_ERROR
} pc_kv_type_t;

/* A command finished: status 0 with reply (valid only during the callback;
 * may be an ERROR reply), or PC_ETIMEDOUT / PC_EUNAVAIL / PC_ECLOSED with
 * reply NULL. */
typedef void (*pc_kv_cb)(void *data, int status, const pc_kv_reply_t *reply);
/* A message arrived on a subscribed channel; msg valid during the call. */
typedef void (*pc_kv_message_cb)(void *data, const char *channel, const char *msg, size_t len);

/* url: redis://[login@]host[:port][/db] (host may be an [IPv6] literal), or
 * unix://[login@]/absolute/path[?db=N] for a Redis on this machine through
 * its Unix socket; db 0-15; login [user]:password, percent-escaped, sent as
 * AUTH. A connection serves once its AUTH and SELECT were answered OK.
 * Copies its arguments; NULL for a URL it cannot parse. */
pc_kv_t *pc_kv_new(uv_loop_t *loop, const char *url, uint64_t timeout_ms, const char *prefix);
/* The URL forms pc_kv_new takes, for messages that refuse one. */
#define PC_KV_URL_FORMS                                                                            \
    "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] or unix://[[USER]:PASSWORD@]/PATH[?db=DB] (DB "    \
    "0-15)"
/* 0 when pc_kv_new would take url, else PC_EINVAL (or PC_ENOMEM). */
int pc_kv_url_check(const char *url);
/* Fails pending commands with PC_ECLOSED, closes, frees when handles are
 * closed, then calls cb (may be NULL). */
void pc_kv_close(pc_kv_t *kv, void (*cb)(void *data), void *data);
int pc_kv_ready(const pc_kv_t *kv);
/* Unix time of the last reply Redis gave (0: none yet). A connected node
 * sends a PING when a second passed without one. */
int64_t pc_kv_last_reply_s(const pc_kv_t *kv);

/* Writes prefix + name into buf (truncating) and returns buf. */
const char *pc_kv_key(const pc_kv_t *kv, char *buf, size_t len, const char *name);

/* Sends a command given as argc binary-safe arguments (lens may be NULL for
 * NUL-terminated strings); cb may be NULL when the answer does not matter. Returns 0 (cb runs once)
 * or a negative code (cb never runs). */
int pc_kv_command(pc_kv_t *kv, pc_kv_cb cb, void *data, int argc, const char **argv,
                  const size_t *lens);
/* Convenience: NULL-terminated list of string arguments. */
int pc_kv_cmd(pc_kv_t *kv, pc_kv_cb cb, void *data, ...) __attribute__((sentinel));

/* fn (NULL: none) runs each time the command connection comes up, before
 * any other command is sent on it (at once when it is up already): what fn
 * sends reaches Redis ahead of every command sent after it. pc_kv_close
 * drops it. */
void pc_kv_on_connect(pc_kv_t *kv, void (*fn)(void *data), void *data);

/* Subscribes (on a separate connection, resubscribed after reconnects) to a
 * channel name (the prefix is added). cb runs for every message. */
int pc_kv_subscribe(pc_kv_t *kv, const char *channel, pc_kv_message_cb cb, void *data);

pc_kv_type_t pc_kv_reply_type(const pc_kv_reply_t *r);
/* String, status or error text; *len receives the length (may be NULL). */
const char *pc_kv_reply_str(const pc_kv_reply_t *r, size_t *len);
long long pc_kv_reply_int(const pc_kv_reply_t *r);
size_t pc_kv_reply_count(const pc_kv_reply_t *r);
const pc_kv_reply_t *pc_kv_reply_at(const pc_kv_reply_t *r, size_t i);

#endif
