#include "recon/recon_conn.h"
#include "core/error.h"
#include "core/log.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum {
    S_CONNECTING,
    S_IDLE,
    S_RESULTS,    /* a statement was sent: collecting its results */
    S_COPY_START, /* COPY sent: waiting for the server to ask for data */
    S_COPY_DATA,  /* feeding data */
    S_COPY_END,   /* data ended: waiting for the outcome */
    S_FAILED,
    S_CLOSED,
} state_t;

struct pc_recon_res {
    PGresult *r;
};

struct pc_recon_conn {
    uv_poll_t poll;
    PGconn *pg;
    int fd;
    int events;
    state_t state;
    pc_recon_conn_cb cb;
    void *data;
    pc_recon_copy_fill_cb fill;
    PGresult *last;      /* the result to report */
    int failed;          /* a result of the statement was an error */
    int copy_ended;      /* PQputCopyEnd was queued */
    const char *pending; /* a chunk libpq could not take yet */
    size_t pending_len;
    char error[512];
};

static void watch(pc_recon_conn_t *c, int events);
static void on_poll(uv_poll_t *p, int status, int events);

static void closed_cb(uv_handle_t *h)
{
    pc_recon_conn_t *c = h->data;
    if (c->last)
        PQclear(c->last);
    if (c->pg)
        PQfinish(c->pg);
    free(c);
}

void pc_recon_conn_close(pc_recon_conn_t *c)
{
    if (!c || c->state == S_CLOSED)
        return;
    c->state = S_CLOSED;
    c->cb = NULL;
    if (c->fd >= 0) {
        uv_poll_stop(&c->poll);
        uv_close((uv_handle_t *)&c->poll, closed_cb);
    } else {
        closed_cb((uv_handle_t *)&c->poll);
    }
}

/* Ends the current operation with its callback (which may start the next
 * one or close the connection). */
static void complete(pc_recon_conn_t *c, int status, const char *error)
{
    pc_recon_conn_cb cb = c->cb;
    void *data = c->data;
    PGresult *r = c->last;
    c->last = NULL;
    c->cb = NULL;
    c->fill = NULL;
    c->failed = 0;
    c->copy_ended = 0;
    c->pending = NULL;
    if (c->state != S_FAILED)
        c->state = S_IDLE;
    if (c->state == S_IDLE)
        watch(c, UV_READABLE);
    pc_recon_res_t res = {r};
    if (cb)
        cb(data, status, status ? NULL : &res, error);
    if (r)
        PQclear(r);
}

/* Keeps libpq's message whole in the log and its first line in c->error:
 * the error travels to the admin answer and recon_runs.error, where the
 * DETAIL line (a row's values: "Key (...)=(...)") and the connection
 * string's host and user have no place. */
static void keep_error(pc_recon_conn_t *c, const char *msg)
{
    if (!msg || !msg[0])
        msg = "connection failed";
    pc_log_warn("recon.db_error", "%s", msg);
    size_t n = strcspn(msg, "\n");
    snprintf(c->error, sizeof c->error, "%.*s", (int)n, msg);
    n = strlen(c->error);
    while (n && c->error[n - 1] == ' ')
        c->error[--n] = 0;
}

/* The connection broke: the operation (if any) fails; the connection stays
 * failed until closed. libpq's message names the server and the user: it
 * goes to the log, the run and its answer say only what happened. */
static void fail(pc_recon_conn_t *c, const char *why)
{
    pc_log_warn("recon.db_error", "%s", why && why[0] ? why : "connection failed");
    snprintf(c->error, sizeof c->error, "%s",
             "the database connection failed (log recon.db_error has libpq's message)");
    c->state = S_FAILED;
    if (c->fd >= 0)
        uv_poll_stop(&c->poll);
    c->events = 0;
    complete(c, PC_EUNAVAIL, c->error);
}

static void watch(pc_recon_conn_t *c, int events)
{
    if (c->state == S_FAILED || c->state == S_CLOSED || c->events == events)
        return;
    c->events = events;
    uv_poll_start(&c->poll, events, on_poll);
}

/* ---------- connecting ---------- */

static void connect_step(pc_recon_conn_t *c)
{
    PostgresPollingStatusType st = PQconnectPoll(c->pg);
    if (PQsocket(c->pg) != c->fd) {
        /* libpq retried on another socket; a new attempt is the caller's. */
        fail(c, "the connection moved to another socket while connecting");
        return;
    }
    switch (st) {
    case PGRES_POLLING_OK:
        if (PQsetnonblocking(c->pg, 1) != 0) {
            fail(c, "cannot make the connection non-blocking");
            return;
        }
        complete(c, 0, NULL);
        break;
    case PGRES_POLLING_READING:
        watch(c, UV_READABLE);
        break;
    case PGRES_POLLING_WRITING:
        watch(c, UV_WRITABLE);
        break;
    default:
        fail(c, PQerrorMessage(c->pg));
        break;
    }
}

pc_recon_conn_t *pc_recon_conn_open(uv_loop_t *loop, const char *url, const char *host,
                                    const char *hostaddr, pc_recon_conn_cb cb, void *data)
{
    pc_recon_conn_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->fd = -1;
    c->cb = cb;
    c->data = data;
    c->state = S_CONNECTING;
    c->poll.data = c;
    /* The server's statement_timeout bounds a statement, not a connection
     * whose peer vanished (a partition, a host gone): the job then waited on
     * it for TCP's own two hours. Keepalives find a silent peer in about a
     * minute, and data left unacknowledged for two minutes ends it. Later
     * entries override what the URL says. */
    static const char *const keys[] = {"dbname",
                                       "keepalives",
                                       "keepalives_idle",
                                       "keepalives_interval",
                                       "keepalives_count",
                                       "tcp_user_timeout",
                                       "host",
                                       "hostaddr",
                                       NULL};
    /* NULL values (no host given): the URL's own. */
    const char *const vals[] = {url, "1", "30", "10", "3", "120000", host, hostaddr, NULL};
    c->pg = PQconnectStartParams(keys, vals, 1);
    if (!c->pg) {
        free(c);
        return NULL;
    }
    int fd = PQstatus(c->pg) == CONNECTION_BAD ? -1 : PQsocket(c->pg);
    if (fd < 0 || uv_poll_init(loop, &c->poll, fd) < 0) {
        PQfinish(c->pg);
        free(c);
        return NULL;
    }
    c->fd = fd;
    c->poll.data = c;
    watch(c, UV_WRITABLE);
    return c;
}

/* ---------- statements ---------- */

/* Reads every result that is complete; reports the operation once libpq has
 * no more (PQgetResult gives NULL). */
static void drain_results(pc_recon_conn_t *c)
{
    while (c->state == S_RESULTS || c->state == S_COPY_START || c->state == S_COPY_END) {
        if (PQisBusy(c->pg))
            return;
        PGresult *r = PQgetResult(c->pg);
        if (!r) {
            if (c->failed)
                complete(c, PC_EIO, c->error);
            else
                complete(c, 0, NULL);
            return;
        }
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_COPY_IN && c->state == S_COPY_START) {
            PQclear(r);
            c->state = S_COPY_DATA;
            watch(c, UV_READABLE | UV_WRITABLE);
            return;
        }
        if (st == PGRES_COPY_IN) {
            /* Not expected here: end it so that the connection stays usable. */
            PQputCopyEnd(c->pg, "unexpected COPY");
            PQclear(r);
            continue;
        }
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
            if (!c->failed) {
                c->failed = 1;
                keep_error(c, PQresultErrorMessage(r));
            }
            PQclear(r);
            continue;
        }
        if (c->last)
            PQclear(c->last);
        c->last = r;
    }
}

static int flush(pc_recon_conn_t *c)
{
    int f = PQflush(c->pg);
    if (f < 0) {
        fail(c, PQerrorMessage(c->pg));
        return -1;
    }
    return f; /* 1: more to send when writable */
}

int pc_recon_conn_query(pc_recon_conn_t *c, const char *sql, int nparams, const char *const *params,
                        pc_recon_conn_cb cb, void *data)
{
    if (!c || !sql || !cb)
        return PC_EINVAL;
    if (c->state != S_IDLE)
        return c->state == S_FAILED ? PC_EUNAVAIL : PC_EINVAL;
    if (!PQsendQueryParams(c->pg, sql, nparams, NULL, params, NULL, NULL, 0))
        return PC_EUNAVAIL;
    c->cb = cb;
    c->data = data;
    c->state = S_RESULTS;
    int f = flush(c);
    if (f < 0)
        return 0; /* reported through cb by fail() */
    watch(c, UV_READABLE | (f ? UV_WRITABLE : 0));
    return 0;
}

int pc_recon_conn_copy(pc_recon_conn_t *c, const char *copy_sql, pc_recon_copy_fill_cb fill,
                       pc_recon_conn_cb cb, void *data)
{
    if (!c || !copy_sql || !fill || !cb)
        return PC_EINVAL;
    if (c->state != S_IDLE)
        return c->state == S_FAILED ? PC_EUNAVAIL : PC_EINVAL;
    if (!PQsendQuery(c->pg, copy_sql))
        return PC_EUNAVAIL;
    c->cb = cb;
    c->data = data;
    c->fill = fill;
    c->state = S_COPY_START;
    int f = flush(c);
    if (f < 0)
        return 0;
    watch(c, UV_READABLE | (f ? UV_WRITABLE : 0));
    return 0;
}

/* Hands libpq chunks while its buffer drains; ends the COPY after the last
 * one. A chunk is only asked for when the previous one has been sent. */
static void feed(pc_recon_conn_t *c)
{
    for (;;) {
        int f = flush(c);
        if (f < 0)
            return;
        if (f == 1) {
            watch(c, UV_READABLE | UV_WRITABLE);
            return;
        }
        if (c->copy_ended) {
            c->state = S_COPY_END;
            watch(c, UV_READABLE);
            drain_results(c);
            return;
        }
        if (!c->pending) {
            const char *buf;
            size_t len;
            int rc = c->fill(c->data, &buf, &len);
            if (rc < 0) {
                /* Abort: the server rolls the COPY back and reports it. */
                if (PQputCopyEnd(c->pg, "aborted by paycore") < 0) {
                    fail(c, PQerrorMessage(c->pg));
                    return;
                }
                c->failed = 1;
                snprintf(c->error, sizeof c->error, "%s", "the data could not be produced");
                c->copy_ended = 1;
                continue;
            }
            if (rc == 0) {
                int e = PQputCopyEnd(c->pg, NULL);
                if (e < 0) {
                    fail(c, PQerrorMessage(c->pg));
                    return;
                }
                if (e == 0) {
                    watch(c, UV_READABLE | UV_WRITABLE);
                    return; /* try again when writable */
                }
                c->copy_ended = 1;
                continue;
            }
            c->pending = buf;
            c->pending_len = len;
        }
        int p = PQputCopyData(c->pg, c->pending, (int)c->pending_len);
        if (p < 0) {
            fail(c, PQerrorMessage(c->pg));
            return;
        }
        if (p == 0) {
            watch(c, UV_READABLE | UV_WRITABLE);
            return;
        }
        c->pending = NULL;
    }
}

/* During a COPY the server may refuse the data midway (a bad row, a
 * cancelled statement): its error ends the COPY. */
static void check_copy_refused(pc_recon_conn_t *c)
{
    if (PQisBusy(c->pg))
        return;
    PGresult *r = PQgetResult(c->pg);
    if (!r)
        return;
    if (PQresultStatus(r) == PGRES_COPY_IN) {
        PQclear(r);
        return;
    }
    c->failed = 1;
    snprintf(c->error, sizeof c->error, "%s", PQresultErrorMessage(r));
    PQclear(r);
    c->state = S_COPY_END;
    drain_results(c);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    pc_recon_conn_t *c = p->data;
    if (status < 0) {
        fail(c, uv_strerror(status));
        return;
    }
    if (c->state == S_CONNECTING) {
        connect_step(c);
        return;
    }
    if (events & UV_READABLE) {
        if (!PQconsumeInput(c->pg)) {
            fail(c, PQerrorMessage(c->pg));
            return;
        }
        if (c->state == S_COPY_DATA)
            check_copy_refused(c);
        else
            drain_results(c);
    }
    if (c->state == S_COPY_DATA) {
        feed(c);
        return;
    }
    if ((events & UV_WRITABLE) &&
        (c->state == S_RESULTS || c->state == S_COPY_START || c->state == S_COPY_END) &&
        flush(c) == 0)
        watch(c, UV_READABLE);
}

/* ---------- results ---------- */

int pc_recon_res_rows(const pc_recon_res_t *res)
{
    return res && res->r ? PQntuples(res->r) : 0;
}

int64_t pc_recon_res_affected(const pc_recon_res_t *res)
{
    const char *s = res && res->r ? PQcmdTuples(res->r) : "";
    return s[0] ? strtoll(s, NULL, 10) : 0;
}

const char *pc_recon_res_val(const pc_recon_res_t *res, int row, const char *name)
{
    if (!res || !res->r)
        return "";
    int col = PQfnumber(res->r, name);
    if (col < 0 || row < 0 || row >= PQntuples(res->r) || PQgetisnull(res->r, row, col))
        return "";
    return PQgetvalue(res->r, row, col);
}

int64_t pc_recon_res_i64(const pc_recon_res_t *res, int row, const char *name)
{
    const char *s = pc_recon_res_val(res, row, name);
    return s[0] ? strtoll(s, NULL, 10) : 0;
}
