#include "kv/kv.h"
#include "core/buf.h"
#include "core/resolve.h"
#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"

#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <sys/un.h>

typedef struct kvcmd {
    struct kvcmd *prev, *next;
    pc_kv_t *kv;
    pc_kv_cb cb;
    void *data;
    uint64_t deadline;
    int done;
} kvcmd_t;

typedef struct sub {
    struct sub *next;
    char *channel; /* with prefix */
    pc_kv_message_cb cb;
    void *data;
} sub_t;

/* One hiredis connection with its reconnect state. */
typedef struct link {
    pc_kv_t *kv;
    redisAsyncContext *ac;
    int connected;
    int is_sub;
    uint64_t connect_deadline;
    uint64_t backoff_ms;
    uv_timer_t retry;
    pc_resolve_t *resolving; /* the host name is being resolved (core/resolve.h) */
    unsigned addr_index;     /* of the name's addresses, the one to try: the next after a
                                failed connect */
    int handshake_left;      /* AUTH / SELECT replies awaited before it serves */
    int handshake_failed;
} link_t;

struct pc_kv {
    uv_loop_t *loop;
    char *host;
    int port;
    char *path; /* a Unix socket's (unix:// URL), else NULL */
    int db;
    char *user, *password; /* the URL's login (AUTH), NULL for none */
    char *prefix;
    uint64_t timeout_ms;
    link_t cmd, sub;
    kvcmd_t *head, *tail; /* pending, oldest first */
    sub_t *subs;
    uv_timer_t tick;
    int64_t last_reply_s;  /* wall clock of the last reply Redis gave */
    uint64_t next_ping_ms; /* loop time of the next idle PING: a second after a reply or a PING */
    int closing;
    int handles_open;
    void (*on_connect)(void *data);
    void *on_connect_data;
    void (*close_cb)(void *);
    void *close_data;
};

static void link_connect(link_t *l);

static void pending_remove(pc_kv_t *kv, kvcmd_t *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        kv->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        kv->tail = c->prev;
    c->prev = c->next = NULL;
}

static void fail_pending(pc_kv_t *kv, int status)
{
    while (kv->head) {
        kvcmd_t *c = kv->head;
        pending_remove(kv, c);
        c->done = 1; /* hiredis still owns c until it calls back with NULL */
        if (c->cb)
            c->cb(c->data, status, NULL);
    }
}

static void reply_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    (void)ac;
    kvcmd_t *c = privdata;
    if (r && ((redisReply *)r)->type != REDIS_REPLY_ERROR && !c->done) {
        c->kv->last_reply_s = (int64_t)time(NULL);
        c->kv->cmd.backoff_ms = 0; /* answered: reconnect fast next time */
        c->kv->next_ping_ms = uv_now(c->kv->loop) + 1000;
    }
    if (!c->done) {
        pc_kv_t *kv = c->kv;
        pending_remove(kv, c);
        c->done = 1;
        if (c->cb)
            c->cb(c->data, r ? 0 : PC_EUNAVAIL, (const pc_kv_reply_t *)r);
    }
    free(c);
}

static void message_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    (void)privdata;
    link_t *l = ac->data;
    redisReply *rep = r;
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 3)
        return;
    if (strcmp(rep->element[0]->str, "message") != 0)
        return;
    const char *ch = rep->element[1]->str;
    for (sub_t *s = l->kv->subs; s; s = s->next)
        if (strcmp(s->channel, ch) == 0)
            s->cb(s->data, ch + strlen(l->kv->prefix), rep->element[2]->str, rep->element[2]->len);
}

static void subscribe_all(link_t *l)
{
    for (sub_t *s = l->kv->subs; s; s = s->next) {
        const char *argv[2] = {"SUBSCRIBE", s->channel};
        redisAsyncCommandArgv(l->ac, message_cb, NULL, 2, argv, NULL);
    }
}

static void retry_cb(uv_timer_t *t)
{
    link_connect(t->data);
}

static void schedule_retry(link_t *l)
{
    if (l->kv->closing)
        return;
    l->backoff_ms = l->backoff_ms ? l->backoff_ms * 2 : 50;
    if (l->backoff_ms > 2000)
        l->backoff_ms = 2000;
    uv_timer_start(&l->retry, retry_cb, l->backoff_ms, 0);
}

/* A connect of l failed (why): said, while it goes on about once a second
 * at most, and tried again after the backoff, at the name's next address. */
static void connect_failed(link_t *l, const char *why)
{
    if (l->backoff_ms >= 1000 || l->backoff_ms == 0)
        pc_log_warn("kv.connect_failed", "%s: %s", l->kv->host, why);
    l->addr_index++;
    schedule_retry(l);
}

/* The link is logged in and on its database: it serves. */
static void link_up(link_t *l)
{
    l->connected = 1;
    /* A connect alone does not end the backoff: a Redis that accepts and
     * never answers (blocked, or a proxy in front of a dead one) was
     * reconnected to every second for as long as it lasted. The command
     * link's ends on its first answer (reply_cb). */
    if (l->is_sub)
        l->backoff_ms = 0;
    pc_log_info("kv.connected", "%s connection up", l->is_sub ? "subscriber" : "command");
    if (l->is_sub)
        subscribe_all(l);
    else if (l->kv->on_connect)
        l->kv->on_connect(l->kv->on_connect_data);
}

/* An answer to the link's AUTH or SELECT. A refusal (a wrong password, a
 * user without the right, a database the server does not have) keeps the
 * link from serving: it is said, and the connection is dropped and tried
 * again after the backoff. Before, SELECT was sent without looking at the
 * answer, and a refused one left every key of this node in database 0,
 * shared with whatever else uses it. */
static void handshake_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    link_t *l = privdata;
    const redisReply *rep = r;
    if (!rep || l->ac != ac || l->handshake_failed)
        return; /* dropped: disconnect_cb or the tick goes on */
    if (rep->type == REDIS_REPLY_ERROR) {
        l->handshake_failed = 1;
        if (l->backoff_ms >= 1000 || l->backoff_ms == 0)
            pc_log_error("kv.login_refused", "%s refused this node's login or database: %.200s",
                         l->kv->host, rep->str ? rep->str : "");
        pc_metrics_add("pc_kv_errors_total", "kind=\"login\"", 1);
        redisAsyncDisconnect(ac); /* disconnect_cb schedules the retry */
        return;
    }
    if (--l->handshake_left == 0)
        link_up(l);
}

static void connect_cb(const redisAsyncContext *ac, int status)
{
    link_t *l = ac->data;
    if (status != REDIS_OK) {
        /* hiredis frees the context after this callback. */
        l->ac = NULL;
        l->connected = 0;
        if (!l->is_sub)
            fail_pending(l->kv, PC_EUNAVAIL);
        connect_failed(l, ac->errstr);
        return;
    }
    /* Logged in and on the URL's database before anything else is sent:
     * the link serves once both answered (within the connect's deadline,
     * which the tick keeps). A subscriber needs no database (channels are
     * server-wide). */
    pc_kv_t *kv = l->kv;
    redisAsyncContext *c = (redisAsyncContext *)ac;
    l->handshake_left = 0;
    l->handshake_failed = 0;
    if (kv->password) {
        const char *argv[3] = {"AUTH", kv->user ? kv->user : kv->password, kv->password};
        redisAsyncCommandArgv(c, handshake_cb, l, kv->user ? 3 : 2, argv, NULL);
        l->handshake_left++;
    }
    if (kv->db && !l->is_sub) {
        char dbs[16];
        snprintf(dbs, sizeof dbs, "%d", kv->db);
        redisAsyncCommandArgv(c, handshake_cb, l, 2, (const char *[]){"SELECT", dbs}, NULL);
        l->handshake_left++;
    }
    if (!l->handshake_left)
        link_up(l);
}

void pc_kv_on_connect(pc_kv_t *kv, void (*fn)(void *data), void *data)
{
    kv->on_connect = fn;
    kv->on_connect_data = data;
    if (fn && kv->cmd.connected)
        fn(data);
}

static void disconnect_cb(const redisAsyncContext *ac, int status)
{
    link_t *l = ac->data;
    (void)status;
    if (l->connected && !l->kv->closing) {
        pc_log_warn("kv.disconnected", "%s", ac->errstr[0] ? ac->errstr : "closed");
        pc_metrics_add("pc_kv_errors_total", "kind=\"connection\"", 1);
    }
    l->ac = NULL;
    l->connected = 0;
    if (!l->is_sub)
        fail_pending(l->kv, PC_EUNAVAIL);
    schedule_retry(l);
}

static void kv_handle_done(pc_kv_t *kv);
static void link_connect_to(link_t *l, const char *addr);

static void link_resolved(void *data, int status, const char *const *addrs, int n)
{
    link_t *l = data;
    pc_kv_t *kv = l->kv;
    if (status == UV_ECANCELED || kv->closing) {
        kv_handle_done(kv);
        return;
    }
    kv->handles_open--; /* the request's */
    l->resolving = NULL;
    if (status < 0) {
        if (l->backoff_ms >= 1000 || l->backoff_ms == 0)
            pc_log_warn("kv.connect_failed", "cannot resolve %s: %s", kv->host,
                        uv_strerror(status));
        if (!l->is_sub)
            fail_pending(kv, PC_EUNAVAIL);
        schedule_retry(l);
        return;
    }
    /* hiredis connects to one address: after a failed connect the next one
     * is tried, so a name whose first address refuses (::1 with Redis on
     * 127.0.0.1) still connects. */
    link_connect_to(l, addrs[l->addr_index % (unsigned)n]);
}

static void link_connect(link_t *l)
{
    pc_kv_t *kv = l->kv;
    if (kv->closing || l->ac || l->resolving)
        return;
    if (kv->path || !pc_resolve_needed(kv->host)) {
        link_connect_to(l, kv->host);
        return;
    }
    kv->handles_open++;
    l->resolving = pc_resolve_start(kv->loop, kv->host, link_resolved, l);
    if (!l->resolving) {
        kv->handles_open--;
        schedule_retry(l);
    }
}

/* Connects to addr (an address: a host name was resolved first), or to the
 * Unix socket of a unix:// URL. */
static void link_connect_to(link_t *l, const char *addr)
{
    pc_kv_t *kv = l->kv;
    redisAsyncContext *ac =
        kv->path ? redisAsyncConnectUnix(kv->path) : redisAsyncConnect(addr, kv->port);
    if (!ac || ac->err) {
        /* A Unix socket that is missing, refuses or is not ours fails here,
         * at once: no connect callback follows. */
        char why[128];
        snprintf(why, sizeof why, "%s", ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        connect_failed(l, why);
        return;
    }
    ac->data = l;
    l->ac = ac;
    l->connect_deadline = uv_now(kv->loop) + kv->timeout_ms;
    redisLibuvAttach(ac, kv->loop);
    redisAsyncSetConnectCallback(ac, connect_cb);
    redisAsyncSetDisconnectCallback(ac, disconnect_cb);
}

/* Drops a link's connection now (pending callbacks get NULL replies).
 * Returns whether it was still connecting (no callback ran: the caller
 * schedules what follows). */
static int link_drop_quiet(link_t *l)
{
    redisAsyncContext *ac = l->ac;
    if (!ac)
        return 0;
    redisAsyncFree(ac); /* calls disconnect_cb when it was connected */
    if (l->ac == ac) {
        l->ac = NULL;
        l->connected = 0;
        return 1;
    }
    return 0;
}

static void link_drop(link_t *l)
{
    if (link_drop_quiet(l))
        schedule_retry(l);
}

static void tick_cb(uv_timer_t *t)
{
    pc_kv_t *kv = t->data;
    uint64_t now = uv_now(kv->loop);
    /* Timers run before the loop polls: after a stall (a slow callback) the
     * answer may be waiting unread in the socket. Read it first, or a SET NX
     * that succeeded is reported as timed out. */
    /* hiredis reads one buffer (16 KiB) a call: after a long stall the
     * answers may fill several. Read while they answer the overdue head. */
    for (int reads = 0;
         reads < 64 && kv->head && kv->head->deadline <= now && kv->cmd.connected && kv->cmd.ac;
         reads++) {
        const void *before = kv->head;
        redisAsyncHandleRead(kv->cmd.ac);
        if (kv->head == before)
            break;
    }
    if (kv->head && kv->head->deadline <= now) {
        pc_log_warn("kv.timeout", "Redis command timed out; reconnecting");
        pc_metrics_add("pc_kv_errors_total", "kind=\"timeout\"", 1);
        fail_pending(kv, PC_ETIMEDOUT);
        link_drop(&kv->cmd);
    }
    /* An idle node still learns every second that Redis answers
     * (pc_kv_last_reply_s). */
    if (kv->cmd.connected && !kv->head && now >= kv->next_ping_ms) {
        kv->next_ping_ms = now + 1000; /* one PING a second, answered or not */
        pc_kv_cmd(kv, NULL, NULL, "PING", NULL);
    }
    for (link_t *l = &kv->cmd; l; l = l == &kv->cmd ? &kv->sub : NULL) {
        if (l->ac && !l->connected && l->connect_deadline <= now) {
            /* A connect that never completes (an address whose packets are
             * dropped: an IPv6 route that goes nowhere) is a failed one: said,
             * and the name's next address is tried. Before, the same address
             * was tried again and again, in silence. */
            if (link_drop_quiet(l))
                connect_failed(l, "the connect did not complete in time");
        }
        if (l == &kv->sub && !kv->subs)
            break;
    }
}

/* A database number: digits only, 0 to 15 (Redis' default count). */
static int parse_db(const char *s, int *db)
{
    if (!*s || strlen(s) > 2 || strspn(s, "0123456789") != strlen(s) || atoi(s) > 15)
        return PC_EINVAL;
    *db = atoi(s);
    return 0;
}

/* The login of a URL, "[USER]:PASSWORD@" before the host or the socket
 * path (percent-escapes decoded), into kv; *p moves past it. A user without
 * a password, an empty password or one holding a NUL is refused. */
static int parse_login(pc_kv_t *kv, const char **p)
{
    size_t alen = strcspn(*p, "/"), at = alen;
    while (at > 0 && (*p)[at - 1] != '@')
        at--;
    if (at == 0)
        return 0; /* no '@' before the path: no login */
    at--;         /* the '@' */
    const char *colon = memchr(*p, ':', at);
    if (!colon || (size_t)(colon - *p) + 1 == at)
        return PC_EINVAL;
    size_t ulen = (size_t)(colon - *p), plen = at - ulen - 1;
    kv->password = malloc(plen + 1);
    kv->user = ulen ? malloc(ulen + 1) : NULL;
    if (!kv->password || (ulen && !kv->user))
        return PC_ENOMEM;
    if (pc_url_decode(kv->password, colon + 1, plen, false) != strlen(kv->password) ||
        (kv->user && pc_url_decode(kv->user, *p, ulen, false) != strlen(kv->user)))
        return PC_EINVAL;
    *p += at + 1;
    return 0;
}

/* redis://[LOGIN@]HOST[:PORT][/DB] (HOST may be an [IPv6] literal), or
 * unix://[LOGIN@]/ABSOLUTE/PATH[?db=DB] for a Redis on this machine reached
 * through its Unix socket (no TCP stack between); LOGIN is [USER]:PASSWORD
 * (parse_login). DB is 0 to 15, PORT 1 to 65535. */
static int parse_url(pc_kv_t *kv, const char *url)
{
    const char *p = url;
    if (strncmp(p, "unix://", 7) == 0) {
        p += 7;
        int rc = parse_login(kv, &p);
        if (rc)
            return rc;
        const char *q = strchr(p, '?');
        size_t plen = q ? (size_t)(q - p) : strlen(p);
        if (p[0] != '/' || plen >= sizeof(((struct sockaddr_un *)0)->sun_path) ||
            (q && (strncmp(q, "?db=", 4) != 0 || parse_db(q + 4, &kv->db) < 0)))
            return PC_EINVAL;
        if (!(kv->path = strndup(p, plen)) || !(kv->host = strdup(kv->path)))
            return PC_ENOMEM; /* host: what log lines name */
        return 0;
    }
    if (strncmp(p, "redis://", 8) == 0)
        p += 8;
    int rc = parse_login(kv, &p);
    if (rc)
        return rc;
    const char *host = p, *end;
    if (*p == '[') {
        host = p + 1;
        end = strchr(host, ']');
        if (!end)
            return PC_EINVAL;
        p = end + 1;
    } else {
        p += strcspn(p, ":/");
        end = p;
    }
    if (end == host || !(kv->host = strndup(host, (size_t)(end - host))))
        return end == host ? PC_EINVAL : PC_ENOMEM;
    kv->port = 6379;
    if (*p == ':') {
        size_t n = strspn(p + 1, "0123456789");
        kv->port = n && n <= 5 ? atoi(p + 1) : 0;
        if (kv->port < 1 || kv->port > 65535)
            return PC_EINVAL;
        p += 1 + n;
    }
    if (*p == '/' && p[1])
        return parse_db(p + 1, &kv->db);
    return *p == '/' || !*p ? 0 : PC_EINVAL;
}

static void free_url_parts(pc_kv_t *kv)
{
    free(kv->host);
    free(kv->path);
    free(kv->user);
    free(kv->password);
}

int pc_kv_url_check(const char *url)
{
    pc_kv_t kv = {0};
    int rc = url ? parse_url(&kv, url) : PC_EINVAL;
    free_url_parts(&kv);
    return rc;
}

static void link_init(pc_kv_t *kv, link_t *l, int is_sub)
{
    l->kv = kv;
    l->is_sub = is_sub;
    uv_timer_init(kv->loop, &l->retry);
    l->retry.data = l;
    kv->handles_open++;
}

pc_kv_t *pc_kv_new(uv_loop_t *loop, const char *url, uint64_t timeout_ms, const char *prefix)
{
    pc_kv_t *kv = calloc(1, sizeof *kv);
    if (!kv)
        return NULL;
    kv->loop = loop;
    kv->timeout_ms = timeout_ms ? timeout_ms : 1000;
    kv->prefix = strdup(prefix ? prefix : "");
    if (parse_url(kv, url) < 0) {
        pc_log_error("kv.url", "cannot parse the Redis URL: it must be " PC_KV_URL_FORMS);
        free_url_parts(kv);
        free(kv->prefix);
        free(kv);
        return NULL;
    }
    pc_metrics_describe("pc_kv_errors_total", PC_METRIC_COUNTER, "Redis errors by kind");
    uv_timer_init(loop, &kv->tick);
    kv->tick.data = kv;
    kv->handles_open = 1;
    uv_timer_start(&kv->tick, tick_cb, 20, 20);
    link_init(kv, &kv->cmd, 0);
    link_init(kv, &kv->sub, 1);
    link_connect(&kv->cmd);
    return kv;
}

static void closed_cb(uv_handle_t *h)
{
    kv_handle_done(h->data);
}

/* One handle or request ended; the last one after close frees kv. */
static void kv_handle_done(pc_kv_t *kv)
{
    if (--kv->handles_open > 0)
        return;
    void (*cb)(void *) = kv->close_cb;
    void *data = kv->close_data;
    while (kv->subs) {
        sub_t *s = kv->subs;
        kv->subs = s->next;
        free(s->channel);
        free(s);
    }
    free_url_parts(kv);
    free(kv->prefix);
    free(kv);
    if (cb)
        cb(data);
}

void pc_kv_close(pc_kv_t *kv, void (*cb)(void *data), void *data)
{
    kv->on_connect = NULL; /* its owner may be freed once the close began */
    kv->closing = 1;
    kv->close_cb = cb;
    kv->close_data = data;
    fail_pending(kv, PC_ECLOSED);
    for (link_t *l = &kv->cmd; l; l = l == &kv->cmd ? &kv->sub : NULL) {
        pc_resolve_cancel(l->resolving); /* its callback gets UV_ECANCELED */
        l->resolving = NULL;
    }
    if (kv->cmd.ac)
        redisAsyncFree(kv->cmd.ac);
    if (kv->sub.ac)
        redisAsyncFree(kv->sub.ac);
    kv->cmd.ac = kv->sub.ac = NULL;
    kv->cmd.retry.data = kv;
    kv->sub.retry.data = kv;
    uv_close((uv_handle_t *)&kv->cmd.retry, closed_cb);
    uv_close((uv_handle_t *)&kv->sub.retry, closed_cb);
    uv_close((uv_handle_t *)&kv->tick, closed_cb);
}

int pc_kv_ready(const pc_kv_t *kv)
{
    return kv->cmd.connected;
}

const char *pc_kv_key(const pc_kv_t *kv, char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s%s", kv->prefix, name);
    return buf;
}

int pc_kv_command(pc_kv_t *kv, pc_kv_cb cb, void *data, int argc, const char **argv,
                  const size_t *lens)
{
    if (kv->closing)
        return PC_ECLOSED;
    if (!kv->cmd.connected)
        return PC_EUNAVAIL;
    kvcmd_t *c = calloc(1, sizeof *c);
    if (!c)
        return PC_ENOMEM;
    c->kv = kv;
    c->cb = cb;
    c->data = data;
    c->deadline = uv_now(kv->loop) + kv->timeout_ms;
    if (redisAsyncCommandArgv(kv->cmd.ac, reply_cb, c, argc, argv, lens) != REDIS_OK) {
        free(c);
        return PC_EUNAVAIL;
    }
    c->prev = kv->tail;
    if (kv->tail)
        kv->tail->next = c;
    else
        kv->head = c;
    kv->tail = c;
    return 0;
}

int pc_kv_cmd(pc_kv_t *kv, pc_kv_cb cb, void *data, ...)
{
    const char *argv[32];
    int argc = 0;
    va_list ap;
    va_start(ap, data);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL) {
        if (argc == 32) {
            va_end(ap);
            return PC_EINVAL;
        }
        argv[argc++] = a;
    }
    va_end(ap);
    return pc_kv_command(kv, cb, data, argc, argv, NULL);
}

int pc_kv_subscribe(pc_kv_t *kv, const char *channel, pc_kv_message_cb cb, void *data)
{
    sub_t *s = calloc(1, sizeof *s);
    if (!s)
        return PC_ENOMEM;
    char buf[256];
    s->channel = strdup(pc_kv_key(kv, buf, sizeof buf, channel));
    s->cb = cb;
    s->data = data;
    s->next = kv->subs;
    kv->subs = s;
    if (kv->sub.connected) {
        const char *argv[2] = {"SUBSCRIBE", s->channel};
        redisAsyncCommandArgv(kv->sub.ac, message_cb, NULL, 2, argv, NULL);
    } else {
        link_connect(&kv->sub);
    }
    return 0;
}

pc_kv_type_t pc_kv_reply_type(const pc_kv_reply_t *r)
{
    const redisReply *rep = (const redisReply *)r;
    switch (rep->type) {
    case REDIS_REPLY_STRING:
        return PC_KV_STRING;
    case REDIS_REPLY_INTEGER:
        return PC_KV_INTEGER;
    case REDIS_REPLY_ARRAY:
        return PC_KV_ARRAY;
    case REDIS_REPLY_STATUS:
        return PC_KV_STATUS;
    case REDIS_REPLY_ERROR:
        return PC_KV_ERROR;
    default:
        return PC_KV_NIL;
    }
}

const char *pc_kv_reply_str(const pc_kv_reply_t *r, size_t *len)
{
    const redisReply *rep = (const redisReply *)r;
    if (len)
        *len = rep->str ? rep->len : 0;
    return rep->str ? rep->str : "";
}

long long pc_kv_reply_int(const pc_kv_reply_t *r)
{
    const redisReply *rep = (const redisReply *)r;
    if (rep->type == REDIS_REPLY_INTEGER)
        return rep->integer;
    return rep->str ? strtoll(rep->str, NULL, 10) : 0;
}

size_t pc_kv_reply_count(const pc_kv_reply_t *r)
{
    const redisReply *rep = (const redisReply *)r;
    return rep->type == REDIS_REPLY_ARRAY ? rep->elements : 0;
}

const pc_kv_reply_t *pc_kv_reply_at(const pc_kv_reply_t *r, size_t i)
{
    const redisReply *rep = (const redisReply *)r;
    return (const pc_kv_reply_t *)rep->element[i];
}

int64_t pc_kv_last_reply_s(const pc_kv_t *kv)
{
    return kv ? kv->last_reply_s : 0;
}
