#include "bench/pool.h"
#include "auth/sign.h"

#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RECONNECT_MS 100

typedef struct call {
    struct call *next;
    char *method, *path, *body, *idem;
    const char *merchant, *secret; /* borrowed; NULL: the pool's */
    pb_call_cb cb;
    void *data;
    bool json_2xx;      /* parse a 2xx answer's body (other answers always are) */
    uint64_t queued_ms; /* uv_now when asked for */
} call_t;

typedef enum { C_DOWN, C_CONNECTING, C_IDLE, C_BUSY, C_CLOSING } conn_state_t;

typedef struct conn {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_timer_t timer;
    http_parser parser;
    pb_pool_t *pool;
    conn_state_t state;
    call_t *call;
    char *body;
    size_t blen, bcap;
    int done; /* a whole answer arrived; delivered after the parser returns */
    int keep_alive;
    int handles; /* open libuv handles while the pool closes */
} conn_t;

struct pb_pool {
    uv_loop_t *loop;
    struct sockaddr_in addr;
    pb_pool_opts_t o;
    char *host, *merchant, *secret, *bearer;
    conn_t *conns;
    conn_t **idle;
    int nidle;
    call_t *head, *tail;
    size_t pending;
    uint64_t conn_errors;
    int closing;
    int open_handles;
    uint64_t answered_ms; /* uv_now of the last answer (any status) */
    http_parser_settings settings;
};

static void conn_start(conn_t *c);
static void pump(pb_pool_t *p);

static void call_free(call_t *k)
{
    free(k->method);
    free(k->path);
    free(k->body);
    free(k->idem);
    free(k);
}

static void call_finish(pb_pool_t *p, call_t *k, int status, const char *body, size_t len)
{
    json_t *j = NULL;
    if (status && len && (k->json_2xx || status < 200 || status > 299)) {
        json_error_t err;
        j = json_loadb(body, len, 0, &err);
    }
    p->pending--;
    if (status)
        p->answered_ms = uv_now(p->loop);
    k->cb(k->data, status, j, body ? body : "");
    json_decref(j);
    call_free(k);
}

/* ---------- connections ---------- */

/* With no connection up, calls that waited for one longer than the answer
 * timeout, or 10 s, since they were asked for and since the last answer,
 * fail (status 0): with the server not there (not started, or gone for
 * good) the run hung for ever. (A node killed and restarted, or another
 * node on the port, has connections up again within a few reconnects; a
 * backlog of an overloaded run is not failed by a moment without
 * connections.) Checked while a connection is down. */
#define NO_SERVER_MS 10000

static void expire_queued(pb_pool_t *p)
{
    for (int i = 0; i < p->o.connections; i++)
        if (p->conns[i].state == C_IDLE || p->conns[i].state == C_BUSY)
            return;
    uint64_t now = uv_now(p->loop);
    uint64_t wait = p->o.timeout_ms < NO_SERVER_MS ? p->o.timeout_ms : NO_SERVER_MS;
    while (p->head && now - p->head->queued_ms >= wait && now - p->answered_ms >= wait) {
        call_t *k = p->head;
        p->head = k->next;
        if (!p->head)
            p->tail = NULL;
        call_finish(p, k, 0, NULL, 0);
    }
}

static void reconnect_cb(uv_timer_t *t)
{
    conn_t *c = t->data;
    if (!c->pool->closing && c->state == C_DOWN) {
        expire_queued(c->pool);
        if (!c->pool->closing)
            conn_start(c);
    }
}

static void tcp_closed_cb(uv_handle_t *h)
{
    conn_t *c = h->data;
    pb_pool_t *p = c->pool;
    if (p->closing) {
        if (--p->open_handles == 0) {
            free(p->conns);
            free(p->idle);
            free(p->host);
            free(p->merchant);
            free(p->secret);
            free(p->bearer);
            free(p);
        }
        return;
    }
    c->state = C_DOWN;
    uv_timer_start(&c->timer, reconnect_cb, RECONNECT_MS, 0);
}

static void idle_remove(pb_pool_t *p, conn_t *c)
{
    for (int i = 0; i < p->nidle; i++)
        if (p->idle[i] == c) {
            p->idle[i] = p->idle[--p->nidle];
            return;
        }
}

/* Closes the connection (its call, if any, fails with status 0) and, unless
 * the pool is closing, connects again shortly. */
static void conn_reset(conn_t *c, int count_error)
{
    pb_pool_t *p = c->pool;
    if (c->state == C_CLOSING || c->state == C_DOWN)
        return;
    if (count_error)
        p->conn_errors++;
    if (c->state == C_IDLE)
        idle_remove(p, c);
    c->state = C_CLOSING;
    uv_timer_stop(&c->timer);
    call_t *k = c->call;
    c->call = NULL;
    uv_close((uv_handle_t *)&c->tcp, tcp_closed_cb);
    if (k)
        call_finish(p, k, 0, NULL, 0);
}

static void timeout_cb(uv_timer_t *t)
{
    conn_reset(t->data, 1);
}

static void make_idle(conn_t *c)
{
    c->state = C_IDLE;
    c->pool->idle[c->pool->nidle++] = c;
}

static int on_message_begin(http_parser *hp)
{
    conn_t *c = hp->data;
    c->blen = 0;
    if (c->body)
        c->body[0] = '\0'; /* an empty answer must not read as the one before */
    return 0;
}

static int on_body(http_parser *hp, const char *at, size_t len)
{
    conn_t *c = hp->data;
    if (c->blen + len + 1 > c->bcap) {
        size_t ncap = c->bcap ? c->bcap : 1024;
        while (ncap < c->blen + len + 1)
            ncap *= 2;
        char *nb = realloc(c->body, ncap);
        if (!nb)
            return -1;
        c->body = nb;
        c->bcap = ncap;
    }
    memcpy(c->body + c->blen, at, len);
    c->blen += len;
    c->body[c->blen] = 0;
    return 0;
}

static int on_message_complete(http_parser *hp)
{
    conn_t *c = hp->data;
    c->done = 1;
    c->keep_alive = http_should_keep_alive(hp);
    return 0;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)h;
    (void)suggested;
    static char buf[65536];
    *b = uv_buf_init(buf, sizeof buf);
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    conn_t *c = s->data;
    pb_pool_t *p = c->pool;
    if (n == 0)
        return;
    if (n < 0 || c->state != C_BUSY) {
        /* EOF while idle is the server closing a keep-alive connection. */
        conn_reset(c, c->state == C_BUSY || n != UV_EOF);
        return;
    }
    http_parser_execute(&c->parser, &p->settings, b->base, (size_t)n);
    if (HTTP_PARSER_ERRNO(&c->parser) != HPE_OK) {
        conn_reset(c, 1);
        return;
    }
    if (!c->done)
        return;
    c->done = 0;
    uv_timer_stop(&c->timer);
    call_t *k = c->call;
    c->call = NULL;
    int status = c->parser.status_code;
    if (c->keep_alive)
        make_idle(c);
    else
        conn_reset(c, 0);
    call_finish(p, k, status, c->body, c->blen);
    pump(p);
}

static void connect_cb(uv_connect_t *r, int status)
{
    conn_t *c = r->data;
    if (c->state != C_CONNECTING)
        return;
    if (status < 0) {
        conn_reset(c, 1);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    http_parser_init(&c->parser, HTTP_RESPONSE);
    c->parser.data = c;
    if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) < 0) {
        conn_reset(c, 1);
        return;
    }
    make_idle(c);
    pump(c->pool);
}

static void conn_start(conn_t *c)
{
    pb_pool_t *p = c->pool;
    uv_tcp_init(p->loop, &c->tcp);
    c->tcp.data = c;
    c->creq.data = c;
    c->state = C_CONNECTING;
    if (uv_tcp_connect(&c->creq, &c->tcp, (struct sockaddr *)&p->addr, connect_cb) < 0) {
        p->conn_errors++;
        c->state = C_CLOSING;
        uv_close((uv_handle_t *)&c->tcp, tcp_closed_cb);
    }
}

/* ---------- requests ---------- */

static char *build_request(pb_pool_t *p, const call_t *k, size_t *len)
{
    const char *body = k->body ? k->body : "";
    size_t blen = strlen(body);
    char auth[1024] = "";
    const char *merchant = k->merchant ? k->merchant : p->merchant;
    const char *secret = k->merchant ? k->secret : p->secret;
    if (merchant) {
        char ts[24], nonce[33];
        snprintf(ts, sizeof ts, "%lld", (long long)time(NULL));
        pc_random_hex(nonce, sizeof nonce, 16);
        size_t slen = 0;
        char *tosign = pc_sign_request_string(k->method, k->path, ts, nonce, body, blen, &slen);
        char *sig = tosign ? pc_hmac_sha256_sign(secret, strlen(secret), tosign, slen) : NULL;
        snprintf(auth, sizeof auth,
                 "X-Merchant-Id: %s\r\nX-Timestamp: %s\r\nX-Nonce: %s\r\nX-Signature: %s\r\n",
                 merchant, ts, nonce, sig ? sig : "");
        free(tosign);
        free(sig);
    } else if (p->bearer) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", p->bearer);
    }
    char *req = NULL;
    int n = asprintf(&req,
                     "%s %s HTTP/1.1\r\nHost: paybench\r\n%s%s%s%s"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     k->method, k->path, auth, k->idem ? "Idempotency-Key: " : "",
                     k->idem ? k->idem : "", k->idem ? "\r\n" : "", blen, body);
    if (n < 0)
        return NULL;
    *len = (size_t)n;
    return req;
}

typedef struct {
    uv_write_t w;
    conn_t *conn;
    char *buf;
} wreq_t;

static void write_cb(uv_write_t *w, int status)
{
    wreq_t *r = (wreq_t *)w;
    conn_t *c = r->conn;
    free(r->buf);
    free(r);
    if (status < 0 && status != UV_ECANCELED)
        conn_reset(c, 1);
}

static void send_call(conn_t *c, call_t *k)
{
    pb_pool_t *p = c->pool;
    size_t len = 0;
    char *req = build_request(p, k, &len);
    c->state = C_BUSY;
    c->call = k;
    c->done = 0;
    uv_timer_start(&c->timer, timeout_cb, p->o.timeout_ms, 0);
    wreq_t *w = malloc(sizeof *w);
    if (!req || !w) {
        free(req);
        free(w);
        uv_timer_start(&c->timer, timeout_cb, 0, 0);
        return;
    }
    w->buf = req;
    w->conn = c;
    uv_buf_t b = uv_buf_init(req, (unsigned)len);
    if (uv_write(&w->w, (uv_stream_t *)&c->tcp, &b, 1, write_cb) < 0) {
        free(req);
        free(w);
        /* Fail it from the loop, not from inside pb_pool_call. */
        uv_timer_start(&c->timer, timeout_cb, 0, 0);
    }
}

static void pump(pb_pool_t *p)
{
    while (p->head && p->nidle > 0 && !p->closing) {
        conn_t *c = p->idle[--p->nidle];
        call_t *k = p->head;
        p->head = k->next;
        if (!p->head)
            p->tail = NULL;
        k->next = NULL;
        send_call(c, k);
    }
}

void pb_pool_call(pb_pool_t *p, const char *method, const char *path, const char *body,
                  const char *idem_key, pb_call_cb cb, void *data)
{
    pb_pool_call_as(p, NULL, NULL, method, path, body, idem_key, true, cb, data);
}

void pb_pool_call_as(pb_pool_t *p, const char *merchant_id, const char *secret, const char *method,
                     const char *path, const char *body, const char *idem_key, bool json_2xx,
                     pb_call_cb cb, void *data)
{
    if (p->closing)
        return;
    call_t *k = calloc(1, sizeof *k);
    if (!k)
        abort();
    k->method = strdup(method);
    k->path = strdup(path);
    k->body = body ? strdup(body) : NULL;
    k->idem = idem_key ? strdup(idem_key) : NULL;
    k->merchant = merchant_id;
    k->secret = secret;
    k->cb = cb;
    k->data = data;
    k->json_2xx = json_2xx;
    k->queued_ms = uv_now(p->loop);
    if (p->tail)
        p->tail->next = k;
    else
        p->head = k;
    p->tail = k;
    p->pending++;
    pump(p);
}

/* ---------- the pool ---------- */

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

pb_pool_t *pb_pool_new(uv_loop_t *loop, const pb_pool_opts_t *opts)
{
    pb_pool_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->loop = loop;
    p->o = *opts;
    if (uv_ip4_addr(opts->host, opts->port, &p->addr) < 0 || opts->connections < 1) {
        free(p);
        return NULL;
    }
    p->host = strdup(opts->host);
    p->merchant = dup_or_null(opts->merchant_id);
    p->secret = dup_or_null(opts->secret);
    p->bearer = dup_or_null(opts->bearer);
    p->settings.on_message_begin = on_message_begin;
    p->settings.on_body = on_body;
    p->settings.on_message_complete = on_message_complete;
    p->conns = calloc((size_t)opts->connections, sizeof *p->conns);
    p->idle = calloc((size_t)opts->connections, sizeof *p->idle);
    if (!p->conns || !p->idle)
        abort();
    for (int i = 0; i < opts->connections; i++) {
        conn_t *c = &p->conns[i];
        c->pool = p;
        uv_timer_init(loop, &c->timer);
        c->timer.data = c;
        conn_start(c);
    }
    return p;
}

void pb_pool_set_merchant(pb_pool_t *p, const char *merchant_id, const char *secret)
{
    free(p->merchant);
    free(p->secret);
    p->merchant = dup_or_null(merchant_id);
    p->secret = dup_or_null(secret);
}

size_t pb_pool_pending(const pb_pool_t *p)
{
    return p->pending;
}

uint64_t pb_pool_conn_errors(const pb_pool_t *p)
{
    return p->conn_errors;
}

void pb_pool_close(pb_pool_t *p)
{
    p->closing = 1;
    while (p->head) {
        call_t *k = p->head;
        p->head = k->next;
        call_finish(p, k, 0, NULL, 0);
    }
    p->tail = NULL;
    p->open_handles = 0;
    for (int i = 0; i < p->o.connections; i++) {
        conn_t *c = &p->conns[i];
        call_t *k = c->call;
        c->call = NULL;
        if (k)
            call_finish(p, k, 0, NULL, 0);
        free(c->body);
        c->body = NULL;
        /* Both handles carry c as data; each close counts down once. */
        p->open_handles++;
        uv_close((uv_handle_t *)&c->timer, tcp_closed_cb);
        if (c->state != C_DOWN) {
            p->open_handles++;
            if (c->state != C_CLOSING)
                uv_close((uv_handle_t *)&c->tcp, tcp_closed_cb);
        }
    }
}
