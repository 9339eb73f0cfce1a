#include "store/db.h"
#include "core/resolve.h"
#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define Q_USER 0
#define Q_BEGIN 1
#define Q_COMMIT 2
#define Q_ROLLBACK 3
#define Q_SYNC 4 /* the Sync ending a transaction's group of statements */

typedef struct conn conn_t;

typedef struct query {
    struct query *next;
    int kind;
    char *sql;
    int nparams;
    char **params;
    pc_db_query_cb cb;
    pc_db_done_cb done_cb;
    pc_db_begin_cb begin_cb;
    void *data;
    pc_db_tx_t *tx;
    uint64_t deadline;
    PGresult *res;
    int phase;      /* 0: waiting for the result, 1: waiting for the pipeline sync */
    int prepping;   /* 1: a Parse was sent ahead of it; its result comes first */
    int solo;       /* pc_db_query_long: a connection to itself */
    int fail_later; /* a transaction's statement whose connection was gone: failed by defer_cb */
    uint64_t timeout_ms; /* 0: the pool's */
} query_t;

/* Statements prepared on one connection, by SQL text: parsing, analysing and
 * planning a statement costs the server more than running most of ours, so
 * every parameterised statement is prepared once per connection (Parse
 * pipelined ahead of its first Bind, no extra round trip) and then only bound
 * and executed. Bounded: past PREP_MAX distinct texts the rest run unnamed. */
#define PREP_MAX 512
#define PREP_SLOTS 1024 /* open addressing, at most half full */

typedef struct {
    char *sql;
    uint32_t hash;
    int id;    /* statement name "pc_<id>" */
    int ready; /* 0: its Parse failed (e.g. in an aborted transaction): parse again */
} prep_t;

/* One connection attempt's socket; replaced on every reconnect so that the
 * uv_poll handle can be closed asynchronously while a new one starts. */
typedef struct sock {
    uv_poll_t poll;
    PGconn *pg;
    conn_t *conn;
    int fd;
    int events;
    prep_t *prep; /* PREP_SLOTS entries, allocated on first use */
    int nprep;
} sock_t;

enum { C_DOWN, C_CONNECTING, C_UP };

#define CONNECT_TIMEOUT_MS 5000

/* A statement the pool gave up on (its timeout, its connection closed) must
 * not go on at the server: waiting for a lock, it would hold its own and
 * then commit what the caller was told failed. The server checks this often
 * that its client is still there while a statement runs, and stops it
 * otherwise (client_connection_check_interval, PostgreSQL 14 and later). */
#define CLIENT_CHECK_OPTION                                                                        \
    "-c client_connection_check_interval=1000 " IDLE_TX_OPTION " " KEEPALIVE_OPTION
/* A node whose host dies or is cut off between two statements of a
 * transaction sends no FIN: its backend would sit "idle in transaction",
 * holding its row locks (a trade, a merchant's or the platform's hot ledger
 * accounts) until the server's TCP keepalive gave up, two hours with Linux's
 * defaults, while every other node's work on those rows timed out. paycore
 * never leaves a transaction waiting on anything but the database (channel
 * calls are made outside them), so a minute idle is a dead client: the
 * server ends it and the locks go. Keepalives find a dead peer of an idle
 * connection in about a minute too. */
#define IDLE_TX_OPTION "-c idle_in_transaction_session_timeout=60000"
#define KEEPALIVE_OPTION                                                                           \
    "-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3"

struct conn {
    pc_db_t *db;
    sock_t *sock;
    int state;
    query_t *sent_head, *sent_tail;
    int nsent;
    pc_db_tx_t *tx;
    uv_timer_t retry;
    uint64_t backoff_ms;
    uint64_t connect_deadline; /* C_CONNECTING: given up on at this time */
    int solo;                  /* a long statement is in flight: nothing goes behind it */
    pc_resolve_t *resolving;   /* C_CONNECTING: the host name being resolved */
    int idx;
    /* A send found the connection broken inside a caller's pc_db_* call: it
     * is failed on the next loop turn (conn_fail_later), so that no callback
     * runs before the call has returned. Nothing new is sent on it. */
    int failing;
    char failing_why[160];
    /* Statements of its transaction sent since the last Sync: they wait for
     * one Sync (sync_groups, before the loop next waits for I/O) and go out
     * in one write, not one each. */
    int unsynced;
};

/* A transaction is referenced by its user (from the begin callback until
 * commit/rollback is called) and by each of its statements still in flight;
 * it is freed when the last reference goes. */
struct pc_db_tx {
    pc_db_t *db;
    conn_t *conn;
    int failed;
    int ended; /* COMMIT or ROLLBACK asked for: nothing more may be sent */
    int refs;
    int handed; /* its caller has it (the begin callback ran): its BEGIN may go */
};

static void tx_unref(pc_db_tx_t *tx)
{
    if (--tx->refs == 0)
        free(tx);
}

struct pc_db_res {
    PGresult *r;
};

struct pc_db {
    uv_loop_t *loop;
    char *url;
    int pool_size;
    uint64_t timeout_ms;
    int depth;
    conn_t *conns;
    query_t *wait_head, *wait_tail; /* work waiting for a connection */
    query_t *defer_head, *defer_tail;
    uv_timer_t tick;
    uv_timer_t defer;
    /* Runs before the loop waits for I/O, after every callback of the
     * loop turn: sync_groups. */
    uv_prepare_t sync_prepare;
    int closing;
    int handles_open;
    void (*close_cb)(void *);
    void *close_data;
    int ever_up;
    char *resolve_host; /* the URL's host when it is a name (see core/resolve.h) */
    /* Its addresses as last resolved, as libpq's "host" and "hostaddr"
     * lists (pc_db_resolved): "" until then. */
    char resolved_hosts[PC_RESOLVE_MAX * 256], resolved_addrs[PC_RESOLVE_MAX * 64];
    char *options; /* the URL's options, and ours (see CLIENT_CHECK_MS) */
};

static void conn_connect(conn_t *c);
static void conn_fail(conn_t *c, const char *why);
static void conn_fail_later(conn_t *c, const char *why);
static void pump_waiting(pc_db_t *db);
static void sock_update_events(sock_t *s, int events);

static uint64_t now_ms(pc_db_t *db)
{
    return uv_now(db->loop);
}

/* ---------- queries ---------- */

static query_t *query_new(int kind, const char *sql, int nparams, const char *const *params)
{
    query_t *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->kind = kind;
    q->sql = strdup(sql);
    q->nparams = nparams;
    if (nparams > 0) {
        q->params = calloc((size_t)nparams, sizeof(char *));
        for (int i = 0; i < nparams; i++)
            q->params[i] = params[i] ? strdup(params[i]) : NULL;
    }
    return q;
}

static void query_free(query_t *q)
{
    for (int i = 0; i < q->nparams; i++)
        free(q->params[i]);
    free(q->params);
    free(q->sql);
    if (q->res)
        PQclear(q->res);
    free(q);
}

static void enqueue(query_t **head, query_t **tail, query_t *q)
{
    q->next = NULL;
    if (*tail)
        (*tail)->next = q;
    else
        *head = q;
    *tail = q;
}

static query_t *dequeue(query_t **head, query_t **tail)
{
    query_t *q = *head;
    if (q) {
        *head = q->next;
        if (!*head)
            *tail = NULL;
        q->next = NULL;
    }
    return q;
}

static int status_of(PGresult *r)
{
    if (!r)
        return PC_EUNAVAIL;
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return 0;
    if (st == PGRES_PIPELINE_ABORTED)
        return PC_EIO;
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    if (!state)
        return PC_EIO;
    if (!strcmp(state, "23505"))
        return PC_ECONFLICT;
    /* Not a business conflict (a caller reading ECONFLICT as "the unique key
     * exists" or "lost the race" would answer wrongly): nothing was changed
     * and the request can run again. */
    if (!strcmp(state, "40001") || !strcmp(state, "40P01"))
        return PC_ERETRY;
    if (!strncmp(state, "08", 2) || !strncmp(state, "57P", 3) || !strcmp(state, "57014") ||
        !strncmp(state, "53", 2))
        return PC_EUNAVAIL;
    return PC_EIO;
}

/* Delivers a finished query to its owner and frees it. */
static void query_complete(pc_db_t *db, query_t *q, int status)
{
    pc_db_res_t res = {q->res};
    pc_db_tx_t *tx = q->tx;
    switch (q->kind) {
    case Q_USER:
        if (status && tx)
            tx->failed = 1;
        if (status == PC_EIO && q->res && PQresultStatus(q->res) == PGRES_FATAL_ERROR) {
            const char *state = PQresultErrorField(q->res, PG_DIAG_SQLSTATE);
            /* Constraint and check violations are business answers, not faults. */
            if (!state || state[0] != '2')
                pc_log_warn("db.query_failed", "%s [%s]", PQresultErrorMessage(q->res), q->sql);
        }
        if (status)
            pc_metrics_add("pc_db_errors_total", "kind=\"query\"", 1);
        if (q->cb)
            q->cb(q->data, status, q->res ? &res : NULL);
        break;
    case Q_BEGIN:
        if (status && tx)
            tx->failed = 1;
        break;
    case Q_SYNC:
        break;
    case Q_COMMIT:
    case Q_ROLLBACK: {
        conn_t *c = tx ? tx->conn : NULL;
        if (c && c->tx == tx)
            c->tx = NULL;
        if (q->kind == Q_COMMIT && tx && tx->failed && !status)
            status = PC_EIO; /* COMMIT of an aborted transaction rolls back */
        if (q->done_cb)
            q->done_cb(q->data, status);
        pump_waiting(db);
        break;
    }
    }
    if (tx)
        tx_unref(tx);
    query_free(q);
}

static void sent_push(conn_t *c, query_t *q)
{
    enqueue(&c->sent_head, &c->sent_tail, q);
    c->nsent++;
    if (q->tx)
        q->tx->refs++;
}

/* Every query's text is hashed to find its prepared statement, and some are
 * long (the cashier's view is 4 KiB): eight bytes a step, with a multiply
 * and a shift to mix them, rather than FNV's one byte and one multiply a
 * step (perf: 2 % of a node's CPU under consults). Equal texts are still
 * told apart by strcmp. */
static uint32_t sql_hash(const char *s)
{
    size_t n = strlen(s), i = 0;
    uint64_t h = 0x9e3779b97f4a7c15ull ^ n, w;
    for (; i + 8 <= n; i += 8) {
        memcpy(&w, s + i, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
    }
    w = 0;
    memcpy(&w, s + i, n - i);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 29;
    return (uint32_t)h;
}

/* The prepared statement for sql on s, added (not yet ready) when new; NULL
 * when the table is full. */
static prep_t *prep_find(sock_t *s, const char *sql, int *is_new)
{
    if (!s->prep && !(s->prep = calloc(PREP_SLOTS, sizeof *s->prep)))
        return NULL;
    uint32_t h = sql_hash(sql);
    for (uint32_t i = h % PREP_SLOTS;; i = (i + 1) % PREP_SLOTS) {
        prep_t *e = &s->prep[i];
        if (!e->sql) {
            if (s->nprep >= PREP_MAX || !(e->sql = strdup(sql)))
                return NULL;
            e->hash = h;
            e->id = ++s->nprep;
            *is_new = 1;
            return e;
        }
        if (e->hash == h && !strcmp(e->sql, sql)) {
            *is_new = 0;
            return e;
        }
    }
}

static void prep_failed(sock_t *s, const char *sql)
{
    int is_new = 0;
    prep_t *e = s ? prep_find(s, sql, &is_new) : NULL;
    if (e)
        e->ready = 0;
}

/* conn_send's answer when q was queued on c but the connection broke
 * while flushing it: q is c's now, failed with the rest by conn_fail. */
#define SENT_BROKEN 1

/* Ends c's group of unsynced statements with a Sync, which libpq sends at
 * once with the group; the Sync's own answer is waited for in the queue by
 * a Q_SYNC entry (the group's statements are done at their results, which
 * may come before it). Returns 0, or -1 when the connection broke. */
static int sync_group(conn_t *c)
{
    query_t *m = query_new(Q_SYNC, "", 0, NULL);
    if (!m)
        return -1;
    if (!PQpipelineSync(c->sock->pg)) {
        query_free(m);
        return -1;
    }
    m->deadline = now_ms(c->db) + c->db->timeout_ms;
    sent_push(c, m);
    c->unsynced = 0;
    return 0;
}

/* Whether q waits, unsynced, for its connection's group's Sync (below);
 * every other statement has a Sync of its own. */
static int grouped(const query_t *q)
{
    return q->tx && (q->kind == Q_USER || q->kind == Q_BEGIN);
}

/* Sends q on c. Returns 0 (q queued), SENT_BROKEN, or a negative code (q
 * not queued: still the caller's).
 *
 * A transaction's BEGIN and statements are not synced one by one: they
 * wait, unsent, for the Sync that sync_groups adds before the loop next
 * waits for I/O, so that what a callback queues (a pay's lock, limit check
 * and count; its payment, posting, trade and answer) leaves in one write
 * and is answered in one. A Sync per statement cost a write here, a
 * wake-up and a flush at the server, and a read here, each. Inside the
 * transaction this changes nothing else: after an error the server skips
 * the rest of the group (PGRES_PIPELINE_ABORTED), where each statement
 * would have failed on the aborted transaction anyway. COMMIT and ROLLBACK
 * are never in a group: skipped, they would leave the transaction open
 * and aborted on the connection; after the group's Sync they run, and
 * COMMIT of an aborted transaction rolls it back. A statement outside a
 * transaction is synced at once: statements up to a Sync are one
 * transaction, and other requests' statements must not share it. */
static int conn_send(conn_t *c, query_t *q)
{
    PGconn *pg = c->sock->pg;
    int group = grouped(q);
    if (!group && c->unsynced && sync_group(c) < 0)
        return PC_EUNAVAIL;
    int is_new = 0;
    prep_t *e = q->kind == Q_USER && q->nparams > 0 ? prep_find(c->sock, q->sql, &is_new) : NULL;
    if (e) {
        char name[24];
        snprintf(name, sizeof name, "pc_%d", e->id);
        q->prepping = 0;
        if (is_new || !e->ready) {
            if (!PQsendPrepare(pg, name, q->sql, q->nparams, NULL))
                return PC_EUNAVAIL;
            e->ready = 1;
            q->prepping = 1;
        }
        if (!PQsendQueryPrepared(pg, name, q->nparams, (const char *const *)q->params, NULL, NULL,
                                 0))
            return PC_EUNAVAIL;
    } else if (!PQsendQueryParams(pg, q->sql, q->nparams, NULL, (const char *const *)q->params,
                                  NULL, NULL, 0)) {
        return PC_EUNAVAIL;
    }
    if (!group && !PQpipelineSync(pg))
        return PC_EUNAVAIL;
    q->deadline = now_ms(c->db) + (q->timeout_ms ? q->timeout_ms : c->db->timeout_ms);
    q->phase = 0;
    if (q->solo)
        c->solo = 1;
    sent_push(c, q);
    if (group) {
        c->unsynced = 1;
        return 0;
    }
    int f = PQflush(pg);
    if (f < 0)
        return SENT_BROKEN; /* queued: pushing it again made a loop of it */
    sock_update_events(c->sock, UV_READABLE | (f == 1 ? UV_WRITABLE : 0));
    return 0;
}

/* Sends q on c or, if the connection is gone, queues q on it to be failed
 * with the rest on the next loop turn: this runs inside a caller's
 * pc_db_query / begin / commit, and a callback run before that call returned
 * found the caller's state not yet set (a job's "busy" flag set after the
 * call stayed set for good: the notifier and the ledger fold stopped on that
 * node until a restart). */
static void conn_send_or_fail(conn_t *c, query_t *q)
{
    int rc = conn_send(c, q);
    if (rc < 0 && q->tx)
        q->tx->failed = 1; /* not all of the transaction reached the server */
    if (rc < 0) {
        /* q was not queued on the connection: fail it with the rest. */
        sent_push(c, q);
        conn_fail_later(c, PQerrorMessage(c->sock->pg));
    } else if (rc == SENT_BROKEN) {
        conn_fail_later(c, PQerrorMessage(c->sock->pg));
    }
}

/* ---------- connections ---------- */

static void sock_free(sock_t *s)
{
    if (s->pg)
        PQfinish(s->pg);
    if (s->prep)
        for (int i = 0; i < PREP_SLOTS; i++)
            free(s->prep[i].sql);
    free(s->prep);
    free(s);
}

/* One handle or request of the pool ended; the last one after close frees
 * the pool. */
static void handle_done(pc_db_t *db)
{
    db->handles_open--;
    if (db->closing && db->handles_open == 0) {
        void (*cb)(void *) = db->close_cb;
        void *data = db->close_data;
        free(db->conns);
        free(db->url);
        free(db->resolve_host);
        free(db->options);
        free(db);
        if (cb)
            cb(data);
    }
}

static void sock_closed(uv_handle_t *h)
{
    sock_t *s = h->data;
    pc_db_t *db = s->conn->db;
    sock_free(s);
    handle_done(db);
}

static void sock_drop(conn_t *c)
{
    sock_t *s = c->sock;
    c->sock = NULL;
    c->unsynced = 0;
    if (!s)
        return;
    if (s->fd >= 0) {
        uv_poll_stop(&s->poll);
        uv_close((uv_handle_t *)&s->poll, sock_closed);
    } else {
        /* No poll handle was ever started. */
        sock_free(s);
        c->db->handles_open--;
    }
}

static void fail_sent(conn_t *c)
{
    pc_db_t *db = c->db;
    query_t *q;
    while ((q = dequeue(&c->sent_head, &c->sent_tail))) {
        c->nsent--;
        if (q->res) {
            PQclear(q->res);
            q->res = NULL;
        }
        query_complete(db, q, PC_EUNAVAIL);
    }
    c->nsent = 0;
    c->solo = 0;
}

static void retry_cb(uv_timer_t *t)
{
    conn_connect(t->data);
}

static void defer_cb(uv_timer_t *t);

static void conn_fail_later(conn_t *c, const char *why)
{
    if (c->failing)
        return;
    c->failing = 1;
    snprintf(c->failing_why, sizeof c->failing_why, "%s", why ? why : "send failed");
    uv_timer_start(&c->db->defer, defer_cb, 0, 0);
}

static void conn_fail(conn_t *c, const char *why)
{
    pc_db_t *db = c->db;
    int was_up = c->state == C_UP;
    c->failing = 0;
    c->state = C_DOWN;
    if (c->resolving) {
        pc_resolve_cancel(c->resolving); /* its callback gets UV_ECANCELED */
        c->resolving = NULL;
    }
    if (was_up) {
        pc_log_warn("db.connection_lost", "connection %d: %s", c->idx, why ? why : "");
        pc_metrics_add("pc_db_errors_total", "kind=\"connection\"", 1);
    }
    sock_drop(c);
    if (c->tx) {
        c->tx->conn = NULL;
        c->tx->failed = 1;
        c->tx = NULL;
    }
    fail_sent(c);
    if (db->closing)
        return;
    c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : 50;
    if (c->backoff_ms > 2000)
        c->backoff_ms = 2000;
    uv_timer_start(&c->retry, retry_cb, c->backoff_ms, 0);
    /* With nothing left up, waiting work must not hang. */
    if (pc_db_ready_count(db) == 0)
        pump_waiting(db);
}

static void handle_results(conn_t *c)
{
    pc_db_t *db = c->db;
    PGconn *pg = c->sock->pg;
    while (c->sent_head && !PQisBusy(pg)) {
        query_t *q = c->sent_head;
        PGresult *r = PQgetResult(pg);
        if (q->prepping) {
            /* The Parse's own result (and its terminating NULL) comes first. */
            if (r == NULL) {
                q->prepping = 0;
            } else if (PQresultStatus(r) != PGRES_COMMAND_OK) {
                prep_failed(c->sock, q->sql);
                if (!q->res)
                    q->res = r; /* the statement fails with the Parse's error */
                else
                    PQclear(r);
            } else {
                PQclear(r);
            }
            continue;
        }
        if (q->phase == 0 && q->kind != Q_SYNC) {
            if (r && PQresultStatus(r) != PGRES_PIPELINE_SYNC) {
                if (!q->res)
                    q->res = r;
                else
                    PQclear(r);
                continue;
            }
            /* Its results are in (NULL). Synced on its own, its Sync's
             * answer comes next; in a group it is done now (the group's
             * Sync is a Q_SYNC of its own). A Sync's answer here: a
             * statement that produced no result at all (empty query). */
            if (r == NULL && !grouped(q)) {
                q->phase = 1;
                continue;
            }
        }
        /* Phase 1, or a Q_SYNC: only the Sync's answer ends it. */
        if (r && PQresultStatus(r) != PGRES_PIPELINE_SYNC) {
            PQclear(r);
            continue;
        }
        if (r)
            PQclear(r);
        dequeue(&c->sent_head, &c->sent_tail);
        c->nsent--;
        if (q->solo)
            c->solo = 0;
        query_complete(db, q, status_of(q->res));
        if (!c->sock)
            return; /* a callback closed things */
        pg = c->sock->pg;
    }
    /* This connection may have room now for work that waits. */
    if (db->wait_head)
        pump_waiting(db);
}

static void poll_up_cb(uv_poll_t *p, int status, int events);

/* Only called on connections that are up: their callback is poll_up_cb
 * (uv_poll_start always sets the callback too). */
static void sock_update_events(sock_t *s, int events)
{
    if (s->events == events)
        return;
    s->events = events;
    uv_poll_start(&s->poll, events, poll_up_cb);
}

static void poll_connect_cb(uv_poll_t *p, int status, int events);

static void conn_became_up(conn_t *c)
{
    PGconn *pg = c->sock->pg;
    if (PQsetnonblocking(pg, 1) != 0 || !PQenterPipelineMode(pg)) {
        conn_fail(c, "cannot enter pipeline mode");
        return;
    }
    c->state = C_UP;
    c->backoff_ms = 0;
    if (!c->db->ever_up || c->idx == 0)
        pc_log_info("db.connected", "connection %d up", c->idx);
    c->db->ever_up = 1;
    c->sock->events = 0;
    uv_poll_start(&c->sock->poll, UV_READABLE, poll_up_cb);
    c->sock->events = UV_READABLE;
    pump_waiting(c->db);
}

static void poll_connect_cb(uv_poll_t *p, int status, int events)
{
    sock_t *s = p->data;
    conn_t *c = s->conn;
    (void)events;
    if (status < 0) {
        conn_fail(c, uv_strerror(status));
        return;
    }
    PostgresPollingStatusType st = PQconnectPoll(s->pg);
    if (PQsocket(s->pg) != s->fd) {
        /* libpq moved to another socket (it retried); restart with it. */
        conn_fail(c, "socket changed during connect");
        return;
    }
    switch (st) {
    case PGRES_POLLING_OK:
        conn_became_up(c);
        break;
    case PGRES_POLLING_READING:
        uv_poll_start(&s->poll, UV_READABLE, poll_connect_cb);
        break;
    case PGRES_POLLING_WRITING:
        uv_poll_start(&s->poll, UV_WRITABLE, poll_connect_cb);
        break;
    default:
        conn_fail(c, PQerrorMessage(s->pg));
        break;
    }
}

static void poll_up_cb(uv_poll_t *p, int status, int events)
{
    sock_t *s = p->data;
    conn_t *c = s->conn;
    if (status < 0) {
        conn_fail(c, uv_strerror(status));
        return;
    }
    if (events & UV_WRITABLE) {
        int f = PQflush(s->pg);
        if (f < 0) {
            conn_fail(c, PQerrorMessage(s->pg));
            return;
        }
        if (f == 0)
            sock_update_events(s, UV_READABLE);
    }
    if (events & UV_READABLE) {
        if (!PQconsumeInput(s->pg)) {
            conn_fail(c, PQerrorMessage(s->pg));
            return;
        }
        handle_results(c);
        if (c->sock && PQstatus(c->sock->pg) == CONNECTION_BAD)
            conn_fail(c, PQerrorMessage(c->sock->pg));
    }
}

/* Sends every connection's group of unsynced statements with its Sync, in
 * one write each: what this loop turn's callbacks queued. A BEGIN waits
 * for its caller to have the transaction (the begin callback runs on the
 * next loop turn), so that it leaves with the first statements. */
static void sync_groups(pc_db_t *db)
{
    /* Again after a connection failed: its callbacks may have queued
     * statements on connections passed already. */
    for (int again = 1; again;) {
        again = 0;
        for (int i = 0; i < db->pool_size; i++) {
            conn_t *c = &db->conns[i];
            if (!c->unsynced || c->state != C_UP || c->failing || (c->tx && !c->tx->handed))
                continue;
            int f = sync_group(c) < 0 ? -1 : PQflush(c->sock->pg);
            if (f < 0) {
                conn_fail(c, PQerrorMessage(c->sock->pg));
                again = 1;
            } else {
                sock_update_events(c->sock, UV_READABLE | (f == 1 ? UV_WRITABLE : 0));
            }
        }
    }
}

static void sync_prepare_cb(uv_prepare_t *h)
{
    sync_groups(h->data);
}

/* Connects to hostaddr (the resolved host name) or, when NULL, as the URL
 * says (an address, or a socket directory: nothing to resolve). */
static void conn_start(conn_t *c, const char *host, const char *hostaddr)
{
    pc_db_t *db = c->db;
    sock_t *s = calloc(1, sizeof *s);
    if (!s)
        abort();
    s->conn = c;
    s->fd = -1;
    db->handles_open++;
    c->sock = s;
    /* The URL's parameters, with our options and, for a host name, the
     * addresses to connect to (tried in turn): the name stays, once for
     * each, for TLS and .pgpass. */
    /* Keepalives on this side too: the options' tcp_keepalives_* are the
     * server's socket's, and an idle pooled connection to a server that
     * vanished was found only by the next statement's deadline. */
    const char *const keys[] = {"dbname",
                                "options",
                                "host",
                                "hostaddr",
                                "keepalives",
                                "keepalives_idle",
                                "keepalives_interval",
                                "keepalives_count",
                                NULL};
    const char *const vals[] = {db->url, db->options, host, hostaddr, "1", "30", "10", "3", NULL};
    s->pg = PQconnectStartParams(keys, vals, 1); /* NULL values: the URL's own */
    if (!s->pg || PQstatus(s->pg) == CONNECTION_BAD) {
        conn_fail(c, s->pg ? PQerrorMessage(s->pg) : "out of memory");
        return;
    }
    s->fd = PQsocket(s->pg);
    if (s->fd < 0 || uv_poll_init(db->loop, &s->poll, s->fd) < 0) {
        s->fd = -1;
        conn_fail(c, "no socket");
        return;
    }
    s->poll.data = s;
    uv_poll_start(&s->poll, UV_WRITABLE, poll_connect_cb);
}

static void conn_resolved(void *data, int status, const char *const *addrs, int n)
{
    conn_t *c = data;
    pc_db_t *db = c->db;
    if (status == UV_ECANCELED || db->closing) {
        /* Closed, or given up on (connect timeout) meanwhile. */
        handle_done(db);
        return;
    }
    c->resolving = NULL;
    db->handles_open--; /* the request's; conn_start counts the socket's */
    if (status < 0) {
        char why[160];
        snprintf(why, sizeof why, "cannot resolve %s: %s", db->resolve_host, uv_strerror(status));
        conn_fail(c, why);
        return;
    }
    char *hosts = db->resolved_hosts, *hostaddrs = db->resolved_addrs;
    size_t hl = 0, al = 0;
    for (int i = 0; i < n; i++) {
        hl += (size_t)snprintf(hosts + hl, sizeof db->resolved_hosts - hl, "%s%s", i ? "," : "",
                               db->resolve_host);
        al += (size_t)snprintf(hostaddrs + al, sizeof db->resolved_addrs - al, "%s%s", i ? "," : "",
                               addrs[i]);
    }
    conn_start(c, hosts, hostaddrs);
}

static void conn_connect(conn_t *c)
{
    pc_db_t *db = c->db;
    if (db->closing)
        return;
    c->state = C_CONNECTING;
    /* libpq's connect_timeout is not enforced on a non-blocking connect: a
     * server address that drops packets (a failover), or a proxy that
     * accepts and never answers, would hold the connection here for the
     * kernel's minutes of retries. */
    c->connect_deadline = now_ms(db) + CONNECT_TIMEOUT_MS;
    if (!db->resolve_host) {
        conn_start(c, NULL, NULL);
        return;
    }
    db->handles_open++;
    c->resolving = pc_resolve_start(db->loop, db->resolve_host, conn_resolved, c);
    if (!c->resolving) {
        db->handles_open--;
        conn_fail(c, "cannot start resolving the host name");
    }
}

/* ---------- scheduling ---------- */

/* An idle connection (no owner, nothing in flight), else a shared one with room. */
static conn_t *pick_conn(pc_db_t *db, int exclusive)
{
    conn_t *best = NULL;
    for (int i = 0; i < db->pool_size; i++) {
        conn_t *c = &db->conns[i];
        if (c->state != C_UP || c->tx || c->solo || c->failing)
            continue;
        if (c->nsent == 0)
            return c;
        if (!exclusive && c->nsent < db->depth && (!best || c->nsent < best->nsent))
            best = c;
    }
    return best;
}

static void start_query_on(pc_db_t *db, conn_t *c, query_t *q)
{
    if (q->kind == Q_BEGIN) {
        pc_db_tx_t *tx = calloc(1, sizeof *tx);
        if (!tx)
            abort();
        tx->db = db;
        tx->conn = c;
        tx->refs = 1; /* the user's, handed over by the deferred begin callback */
        c->tx = tx;
        q->tx = tx;
        /* The BEGIN is pipelined with the first statements: the caller learns
         * of the transaction on the next loop turn, without a round trip. */
        pc_db_begin_cb cb = q->begin_cb;
        void *data = q->data;
        query_t *note = query_new(Q_USER, "", 0, NULL);
        note->begin_cb = cb;
        note->data = data;
        note->tx = tx;
        enqueue(&db->defer_head, &db->defer_tail, note);
        uv_timer_start(&db->defer, defer_cb, 0, 0);
        q->begin_cb = NULL;
    }
    conn_send_or_fail(c, q);
}

/* Fails a statement or begin that never reached a connection. Fire-and-
 * forget statements have no callback (the housekeeping purge): calling
 * through it crashed the node when such a statement waited too long, or
 * PostgreSQL went down, or the pool closed while it waited. */
static void fail_waiting(query_t *q, int status)
{
    if (q->kind == Q_BEGIN) {
        if (q->begin_cb)
            q->begin_cb(q->data, status, NULL);
    } else if (q->cb) {
        q->cb(q->data, status, NULL);
    }
    query_free(q);
}

static void pump_waiting(pc_db_t *db)
{
    while (db->wait_head) {
        query_t *q = db->wait_head;
        if (pc_db_ready_count(db) == 0) {
            dequeue(&db->wait_head, &db->wait_tail);
            fail_waiting(q, PC_EUNAVAIL);
            continue;
        }
        conn_t *c = pick_conn(db, q->kind == Q_BEGIN || q->solo);
        if (!c)
            return;
        dequeue(&db->wait_head, &db->wait_tail);
        start_query_on(db, c, q);
    }
}

static void defer_cb(uv_timer_t *t)
{
    pc_db_t *db = t->data;
    query_t *q;
    for (;;) {
        /* Broken connections first, again before each note (a callback run
         * here may have found another one broken): a transaction begun on
         * one is then reported failed, not handed over. */
        for (int i = 0; i < db->pool_size; i++)
            if (db->conns[i].failing)
                conn_fail(&db->conns[i], db->conns[i].failing_why);
        if (!(q = dequeue(&db->defer_head, &db->defer_tail)))
            break;
        if (q->fail_later) {
            /* A statement of a transaction whose connection was gone (with
             * or without a callback: told apart by this flag, not by its
             * callbacks, or one without any was taken for a BEGIN note). */
            query_complete(db, q, PC_EUNAVAIL);
            continue;
        }
        if (q->done_cb) {
            q->done_cb(q->data, PC_EUNAVAIL);
            query_free(q);
            continue;
        }

        pc_db_tx_t *tx = q->tx;
        q->tx = NULL;
        tx->handed = 1;
        if (tx->conn) {
            q->begin_cb(q->data, 0, tx);
        } else {
            /* The connection broke before the caller even saw the transaction. */
            tx_unref(tx);
            q->begin_cb(q->data, PC_EUNAVAIL, NULL);
        }
        query_free(q);
    }
}

static void tick_cb(uv_timer_t *t)
{
    pc_db_t *db = t->data;
    uint64_t now = now_ms(db);
    /* Work waiting for a connection longer than the timeout fails. */
    query_t **pp = &db->wait_head, *prev = NULL;
    while (*pp) {
        query_t *q = *pp;
        if (q->deadline <= now) {
            *pp = q->next;
            if (db->wait_tail == q)
                db->wait_tail = prev;
            pc_metrics_add("pc_db_errors_total", "kind=\"wait_timeout\"", 1);
            fail_waiting(q, PC_EUNAVAIL);
            continue;
        }
        prev = q;
        pp = &q->next;
    }
    /* A connection whose oldest statement is overdue is presumed dead. */
    int busy = 0;
    for (int i = 0; i < db->pool_size; i++) {
        conn_t *c = &db->conns[i];
        if (c->state == C_UP && c->sent_head && c->sent_head->deadline <= now) {
            /* Timers run before the loop polls: after a stall (a slow
             * callback) the answer may be waiting unread in the socket. Read
             * it first, or a COMMIT that succeeded is reported failed. */
            if (!PQconsumeInput(c->sock->pg)) {
                conn_fail(c, PQerrorMessage(c->sock->pg));
                continue;
            }
            handle_results(c);
        }
        if (c->state == C_UP && c->sent_head && c->sent_head->deadline <= now)
            conn_fail(c, "query timed out");
        else if (c->state == C_CONNECTING && c->connect_deadline <= now)
            conn_fail(c, "connect timed out");
        if (c->state == C_UP && (c->tx || c->nsent))
            busy++;
    }
    pc_metrics_set("pc_db_pool_in_use", "", busy);
    pc_metrics_set("pc_db_pool_ready", "", pc_db_ready_count(db));
}

/* ---------- public ---------- */

/* The URL's host, hostaddr and options (values of info, NULL when absent). */
typedef struct {
    const char *host, *hostaddr, *options;
} url_parts_t;

static url_parts_t url_parts(const PQconninfoOption *info)
{
    url_parts_t u = {NULL, NULL, NULL};
    for (const PQconninfoOption *o = info; o && o->keyword; o++) {
        if (!strcmp(o->keyword, "host"))
            u.host = o->val;
        else if (!strcmp(o->keyword, "hostaddr"))
            u.hostaddr = o->val;
        else if (!strcmp(o->keyword, "options"))
            u.options = o->val;
    }
    return u;
}

int pc_db_resolved(const pc_db_t *db, const char **hosts, const char **hostaddrs)
{
    *hosts = *hostaddrs = NULL;
    if (!db->resolve_host)
        return 0;
    if (!db->resolved_addrs[0])
        return PC_EUNAVAIL;
    *hosts = db->resolved_hosts;
    *hostaddrs = db->resolved_addrs;
    return 0;
}

int pc_db_url_check(const char *url, char *err, size_t errlen)
{
    char *perr = NULL;
    PQconninfoOption *info = PQconninfoParse(url, &perr);
    if (!info) {
        snprintf(err, errlen, "db.url cannot be read: %s", perr ? perr : "out of memory");
        PQfreemem(perr);
        return PC_EINVAL;
    }
    url_parts_t u = url_parts(info);
    const char *host = u.host, *hostaddr = u.hostaddr;
    int rc = 0;
    if (host && strchr(host, ',') && !(hostaddr && hostaddr[0])) {
        /* pc_db_new resolves one host name off the loop; libpq resolves
         * each name of a list itself, blocking, at every connect. */
        char *list = strdup(host), *save = NULL;
        for (char *h = list ? strtok_r(list, ",", &save) : NULL; h && !rc;
             h = strtok_r(NULL, ",", &save)) {
            while (*h == ' ')
                h++;
            if (!pc_resolve_needed(h))
                continue;
            snprintf(err, errlen,
                     "db.url lists several hosts, %s among them by name: each connect would look "
                     "the names up on the event loop, stalling every request while DNS answers "
                     "(at every failover). Name one host (a name that follows the primary), or "
                     "list addresses",
                     h);
            rc = PC_EINVAL;
        }
        if (!list) {
            snprintf(err, errlen, "out of memory");
            rc = PC_ENOMEM;
        }
        free(list);
    }
    PQconninfoFree(info);
    return rc;
}

pc_db_t *pc_db_new(uv_loop_t *loop, const pc_db_opts_t *opts)
{
    pc_db_t *db = calloc(1, sizeof *db);
    if (!db)
        return NULL;
    db->loop = loop;
    db->url = strdup(opts->url);
    db->pool_size = opts->pool_size > 0 ? opts->pool_size : 4;
    db->timeout_ms = opts->query_timeout_ms ? opts->query_timeout_ms : 5000;
    db->depth = opts->pipeline_depth > 0 ? opts->pipeline_depth : 16;
    PQconninfoOption *info = PQconninfoParse(opts->url, NULL);
    url_parts_t u = url_parts(info);
    const char *host = u.host, *hostaddr = u.hostaddr, *options = u.options;
    if ((!hostaddr || !hostaddr[0]) && pc_resolve_needed(host))
        db->resolve_host = strdup(host);
    size_t olen = (options ? strlen(options) : 0) + sizeof CLIENT_CHECK_OPTION + 2;
    db->options = malloc(olen);
    if (db->options)
        snprintf(db->options, olen, "%s%s%s", options ? options : "",
                 options && options[0] ? " " : "", CLIENT_CHECK_OPTION);
    PQconninfoFree(info);
    db->conns = calloc((size_t)db->pool_size, sizeof(conn_t));
    pc_metrics_describe("pc_db_errors_total", PC_METRIC_COUNTER, "PostgreSQL errors by kind");
    pc_metrics_describe("pc_db_pool_in_use", PC_METRIC_GAUGE, "PostgreSQL connections in use");
    pc_metrics_describe("pc_db_pool_ready", PC_METRIC_GAUGE, "PostgreSQL connections up");
    uv_timer_init(loop, &db->tick);
    db->tick.data = db;
    uv_timer_init(loop, &db->defer);
    db->defer.data = db;
    uv_prepare_init(loop, &db->sync_prepare);
    db->sync_prepare.data = db;
    uv_prepare_start(&db->sync_prepare, sync_prepare_cb);
    /* It keeps no loop running (paycore's shutdown waits for the loop to
     * empty). */
    uv_unref((uv_handle_t *)&db->sync_prepare);
    db->handles_open = 3;
    uv_timer_start(&db->tick, tick_cb, 50, 50);
    for (int i = 0; i < db->pool_size; i++) {
        conn_t *c = &db->conns[i];
        c->db = db;
        c->idx = i;
        uv_timer_init(loop, &c->retry);
        c->retry.data = c;
        db->handles_open++;
        conn_connect(c);
    }
    return db;
}

static void timer_closed(uv_handle_t *h)
{
    pc_db_t *db = h->data;
    if (h->data == NULL)
        return;
    handle_done(db);
}

void pc_db_close(pc_db_t *db, void (*cb)(void *data), void *data)
{
    db->closing = 1;
    db->close_cb = cb;
    db->close_data = data;
    query_t *q;
    while ((q = dequeue(&db->wait_head, &db->wait_tail)))
        fail_waiting(q, PC_ECLOSED);
    defer_cb(&db->defer);
    for (int i = 0; i < db->pool_size; i++) {
        conn_t *c = &db->conns[i];
        c->state = C_DOWN;
        if (c->resolving) {
            pc_resolve_cancel(c->resolving);
            c->resolving = NULL;
        }
        sock_drop(c);
        if (c->tx) {
            c->tx->conn = NULL;
            c->tx->failed = 1;
            c->tx = NULL;
        }
        fail_sent(c);
        c->retry.data = db;
        uv_close((uv_handle_t *)&c->retry, timer_closed);
    }
    /* Statements the failed ones' callbacks asked for meanwhile (their
     * transactions' connections are gone) are failed now: the timer that
     * would have done it is closing. */
    defer_cb(&db->defer);
    uv_close((uv_handle_t *)&db->tick, timer_closed);
    uv_close((uv_handle_t *)&db->defer, timer_closed);
    uv_close((uv_handle_t *)&db->sync_prepare, timer_closed);
}

int pc_db_ready_count(const pc_db_t *db)
{
    int n = 0;
    for (int i = 0; i < db->pool_size; i++)
        n += db->conns[i].state == C_UP;
    return n;
}

int pc_db_busy_count(const pc_db_t *db)
{
    int n = 0;
    for (int i = 0; i < db->pool_size; i++)
        n += db->conns[i].state == C_UP && (db->conns[i].tx || db->conns[i].nsent);
    return n;
}

static int submit(pc_db_t *db, query_t *q)
{
    if (db->closing) {
        query_free(q);
        return PC_ECLOSED;
    }
    if (pc_db_ready_count(db) == 0) {
        query_free(q);
        return PC_EUNAVAIL;
    }
    conn_t *c = db->wait_head ? NULL : pick_conn(db, q->kind == Q_BEGIN || q->solo);
    if (c) {
        start_query_on(db, c, q);
        return 0;
    }
    q->deadline = now_ms(db) + (q->timeout_ms ? q->timeout_ms : db->timeout_ms);
    enqueue(&db->wait_head, &db->wait_tail, q);
    return 0;
}

int pc_db_query(pc_db_t *db, const char *sql, int nparams, const char *const *params,
                pc_db_query_cb cb, void *data)
{
    query_t *q = query_new(Q_USER, sql, nparams, params);
    if (!q)
        return PC_ENOMEM;
    q->cb = cb;
    q->data = data;
    return submit(db, q);
}

int pc_db_query_long(pc_db_t *db, const char *sql, int nparams, const char *const *params,
                     uint64_t timeout_ms, pc_db_query_cb cb, void *data)
{
    query_t *q = query_new(Q_USER, sql, nparams, params);
    if (!q)
        return PC_ENOMEM;
    q->cb = cb;
    q->data = data;
    q->solo = 1;
    q->timeout_ms = timeout_ms;
    return submit(db, q);
}

int pc_db_begin(pc_db_t *db, const char *isolation, pc_db_begin_cb cb, void *data)
{
    char sql[96] = "BEGIN";
    if (isolation)
        snprintf(sql, sizeof sql, "BEGIN ISOLATION LEVEL %s", isolation);
    query_t *q = query_new(Q_BEGIN, sql, 0, NULL);
    if (!q)
        return PC_ENOMEM;
    q->begin_cb = cb;
    q->data = data;
    return submit(db, q);
}

int pc_db_tx_query(pc_db_tx_t *tx, const char *sql, int nparams, const char *const *params,
                   pc_db_query_cb cb, void *data)
{
    if (tx->ended) {
        /* Sent now it would run after the COMMIT, on its own (or in the
         * transaction of whoever has the connection next): a caller's
         * mistake, refused loudly rather than committed outside. */
        pc_log_error("db.after_end", "a statement asked for after its transaction ended: %.80s",
                     sql);
        return PC_EINVAL;
    }
    /* From here the statement is always taken: when the connection is
     * gone or breaking it is failed through its callback, in order after
     * the statements queued before it and before the COMMIT's answer.
     * Before, it was refused at once: a caller that then freed its state
     * (its error path) had the earlier statements' callbacks, failed on the
     * next loop turn, run on freed memory. */
    query_t *q = query_new(Q_USER, sql, nparams, params);
    if (!q)
        abort();
    q->cb = cb;
    q->data = data;
    q->tx = tx;
    conn_t *c = tx->conn;
    if (!c) {
        /* Broken already, its statements failed: this one on the next turn. */
        tx->failed = 1;
        tx->refs++;
        q->fail_later = 1;
        enqueue(&tx->db->defer_head, &tx->db->defer_tail, q);
        uv_timer_start(&tx->db->defer, defer_cb, 0, 0);
    } else if (c->failing) {
        tx->failed = 1;
        sent_push(c, q); /* failed with the rest */
    } else {
        conn_send_or_fail(c, q);
    }
    return 0;
}

static void tx_end(pc_db_tx_t *tx, int kind, pc_db_done_cb cb, void *data)
{
    conn_t *c = tx->conn;
    tx->ended = 1;
    if (!c) {
        pc_db_t *db = tx->db;
        tx_unref(tx);
        if (cb && db->closing) {
            cb(data, PC_EUNAVAIL); /* the deferred-work timer is closed or closing */
        } else if (cb) {
            /* On the next loop turn, like every other outcome. */
            query_t *note = query_new(Q_USER, "", 0, NULL);
            if (!note)
                abort();
            note->done_cb = cb;
            note->data = data;
            enqueue(&db->defer_head, &db->defer_tail, note);
            uv_timer_start(&db->defer, defer_cb, 0, 0);
        }
        return;
    }
    query_t *q = query_new(kind, kind == Q_COMMIT ? "COMMIT" : "ROLLBACK", 0, NULL);
    q->tx = tx;
    q->done_cb = cb;
    q->data = data;
    if (c->failing) {
        /* A statement of it could not be sent (libpq refused it: out of
         * memory, too many parameters) on a connection still up: sent,
         * the COMMIT would commit the statements before it without it.
         * Nothing more goes out; the COMMIT fails with the rest on the
         * next loop turn, and the server rolls back what it had when the
         * connection closes. */
        tx->failed = 1;
        sent_push(c, q);
    } else {
        conn_send_or_fail(c, q); /* the statement takes its own reference */
    }
    tx_unref(tx); /* the user's */
}

void pc_db_tx_commit(pc_db_tx_t *tx, pc_db_done_cb cb, void *data)
{
    tx_end(tx, Q_COMMIT, cb, data);
}

void pc_db_tx_rollback(pc_db_tx_t *tx)
{
    tx_end(tx, Q_ROLLBACK, NULL, NULL);
}

int pc_db_tx_failed(const pc_db_tx_t *tx)
{
    return tx->failed || !tx->conn;
}

/* ---------- results ---------- */

int pc_db_rows(const pc_db_res_t *res)
{
    return res && res->r ? PQntuples(res->r) : 0;
}

int pc_db_cols(const pc_db_res_t *res)
{
    return res && res->r ? PQnfields(res->r) : 0;
}

int64_t pc_db_affected(const pc_db_res_t *res)
{
    if (!res || !res->r)
        return 0;
    const char *s = PQcmdTuples(res->r);
    return s && *s ? strtoll(s, NULL, 10) : 0;
}

int pc_db_col(const pc_db_res_t *res, const char *name)
{
    return res && res->r ? PQfnumber(res->r, name) : -1;
}

int pc_db_isnull(const pc_db_res_t *res, int row, int col)
{
    return PQgetisnull(res->r, row, col);
}

const char *pc_db_get(const pc_db_res_t *res, int row, int col)
{
    return PQgetvalue(res->r, row, col);
}

int64_t pc_db_get_i64(const pc_db_res_t *res, int row, int col)
{
    return strtoll(PQgetvalue(res->r, row, col), NULL, 10);
}

static int must_col(const pc_db_res_t *res, const char *name)
{
    int c = pc_db_col(res, name);
    if (c < 0) {
        pc_log_error("db.no_column", "result has no column %s", name);
        abort();
    }
    return c;
}

const char *pc_db_val(const pc_db_res_t *res, int row, const char *col)
{
    return pc_db_get(res, row, must_col(res, col));
}

int64_t pc_db_val_i64(const pc_db_res_t *res, int row, const char *col)
{
    return pc_db_get_i64(res, row, must_col(res, col));
}

const char *pc_db_sqlstate(const pc_db_res_t *res)
{
    const char *s = res && res->r ? PQresultErrorField(res->r, PG_DIAG_SQLSTATE) : NULL;
    return s ? s : "";
}

const char *pc_db_errmsg(const pc_db_res_t *res)
{
    return res && res->r ? PQresultErrorMessage(res->r) : "no connection";
}

const char *pc_db_constraint(const pc_db_res_t *res)
{
    const char *s = res && res->r ? PQresultErrorField(res->r, PG_DIAG_CONSTRAINT_NAME) : NULL;
    return s ? s : "";
}
