#include "http/server.h"
#include "http/forwarded.h"
#include "core/buf.h"
#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_HEADERS 64
#define MAX_PARAMS 8
#define MAX_ON_DONE 4
#define READ_BUF 65536

typedef struct conn conn_t;

typedef struct {
    char *p;
    size_t len, cap;
} buf_t;

/* An empty input buffer larger than this is freed rather than kept. */
#define IN_KEEP_BYTES 16384

static int buf_append(buf_t *b, const char *d, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t ncap = b->cap ? b->cap : 256;
        while (ncap < b->len + n + 1)
            ncap *= 2;
        char *np = realloc(b->p, ncap);
        if (!np)
            return PC_ENOMEM;
        b->p = np;
        b->cap = ncap;
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
    b->p[b->len] = 0;
    return 0;
}

typedef struct arena_blk {
    struct arena_blk *next;
    max_align_t data[];
} arena_blk_t;

struct pc_router;

struct pc_http_req {
    conn_t *conn; /* NULL once the client is gone */
    pc_http_server_t *srv;
    int method;
    buf_t target;
    buf_t hbuf; /* header names and values, NUL-separated */
    size_t hoff[MAX_HEADERS][2];
    const char *hname[MAX_HEADERS], *hval[MAX_HEADERS];
    int nhdrs;
    int last_was_value;
    int headers_done; /* header pointers resolved; later header callbacks are trailers */
    buf_t body;
    size_t max_body; /* this request's body limit, known once its headers are in */
    char *path, *query, *pathsegs;
    const char *pname[MAX_PARAMS], *pval[MAX_PARAMS];
    int nparams;
    buf_t resp_headers;
    arena_blk_t *arena;
    json_t *json;
    void *user;
    struct {
        void (*fn)(void *);
        void *arg;
    } on_done[MAX_ON_DONE];
    int n_on_done;
    const struct route *route;
    int complete;
    int keep_alive;
    int answered;
    void (*responder)(pc_http_req_t *, int, const char *, const char *, size_t, void *);
    void *responder_data;
    uint64_t start_ns;
    char client_ip[64]; /* pc_http_req_client_ip, once asked */
    /* The connection's peer, kept: the client may hang up while the request
     * waits for the database, and an address read after that was "" (a
     * buyer's pay then went without its IP's block list and velocity). */
    char peer[64];
    char id[48];
    int overload; /* refused as too much in progress: not logged one by one */
};

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    pc_http_server_t *srv;
    http_parser parser;
    buf_t in;
    size_t in_pos;
    pc_http_req_t *cur;
    int busy;
    int in_parse;
    int closing;
    int handles_open;
    int reading;
    int writes_pending;
    int close_after_write;
    int write_blocked; /* answers queued past WRITE_HIGH: not reading or parsing */
    int err_status;    /* set by a parser callback that refuses the request */
    /* The last answer is written and the write side shut: what the client
     * still sends is read and dropped (see linger) until it closes. */
    int lingering;
    size_t linger_bytes;
    uv_shutdown_t shut;
    conn_t *prev, *next;
    char peer[64];
};

typedef struct route {
    char *method;
    char *pattern;
    char **segs;
    int nsegs;
    pc_http_handler_cb handler;
    void *data;
    char label[160];
} route_t;

typedef struct {
    char *prefix;
    pc_http_handler_cb fn;
    void *data;
} filter_t;

struct pc_router {
    route_t *routes;
    int nroutes;
    filter_t filters[4];
    int nfilters;
};

struct pc_http_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    pc_http_server_opts_t opts;
    char *name;
    char *host;
    pc_router_t *router;
    int port;
    int nconns;
    int nliving;  /* connection structs not yet freed */
    int inflight; /* requests dispatched and not yet answered */
    uint64_t overload_logged_s, overload_refused;
    int stopping;
    int listener_open;
    conn_t *conns;
    void (*stop_cb)(void *);
    void *stop_data;
    uint64_t seq;
    char id_prefix[16];
    http_parser_settings settings;
    pc_proxy_list_t *proxies;
};

static char g_readbuf[READ_BUF];

static void conn_close(conn_t *c);
static void parse_input(conn_t *c);
static void resume_read(conn_t *c);
static void count_connections(pc_http_server_t *srv);
static void maybe_finish_stop(pc_http_server_t *srv);

/* ---------- request memory ---------- */

void *pc_http_req_alloc(pc_http_req_t *req, size_t size)
{
    arena_blk_t *b = calloc(1, sizeof *b + size);
    if (!b)
        abort();
    b->next = req->arena;
    req->arena = b;
    return b->data;
}

char *pc_http_req_strdup(pc_http_req_t *req, const char *s)
{
    size_t n = strlen(s);
    char *d = pc_http_req_alloc(req, n + 1);
    memcpy(d, s, n + 1);
    return d;
}

static void req_free(pc_http_req_t *req)
{
    free(req->target.p);
    free(req->hbuf.p);
    free(req->body.p);
    free(req->path);
    free(req->query);
    free(req->pathsegs);
    free(req->resp_headers.p);
    if (req->json)
        json_decref(req->json);
    while (req->arena) {
        arena_blk_t *b = req->arena;
        req->arena = b->next;
        free(b);
    }
    free(req);
}

static uint64_t now_ns(void)
{
    return uv_hrtime();
}

static pc_http_req_t *req_new(conn_t *c)
{
    pc_http_req_t *req = calloc(1, sizeof *req);
    if (!req)
        abort();
    req->conn = c;
    req->srv = c->srv;
    memcpy(req->peer, c->peer, sizeof req->peer);
    req->start_ns = now_ns();
    return req;
}

/* ---------- accessors ---------- */

const char *pc_http_req_method(const pc_http_req_t *req)
{
    return http_method_str((enum http_method)req->method);
}
const char *pc_http_req_path(const pc_http_req_t *req)
{
    return req->path;
}
const char *pc_http_req_target(const pc_http_req_t *req)
{
    return req->target.p ? req->target.p : "";
}
const char *pc_http_req_query(const pc_http_req_t *req)
{
    return req->query ? req->query : "";
}
const char *pc_http_req_id(const pc_http_req_t *req)
{
    return req->id;
}
const char *pc_http_req_peer(const pc_http_req_t *req)
{
    return req->peer;
}
/* Every line of header name, in the order received, joined by ", " (one
 * list, as RFC 9110 5.3 reads lines of a list header): malloc'd, or NULL
 * when there is none or no memory. */
static char *header_lines_joined(const pc_http_req_t *req, const char *name)
{
    size_t len = 0;
    for (int i = 0; i < req->nhdrs; i++)
        if (strcasecmp(req->hname[i], name) == 0)
            len += strlen(req->hval[i]) + 2;
    if (len == 0)
        return NULL;
    char *out = malloc(len + 1), *w = out;
    if (!out)
        return NULL;
    for (int i = 0; i < req->nhdrs; i++) {
        if (strcasecmp(req->hname[i], name) != 0)
            continue;
        if (w != out)
            w += sprintf(w, ", ");
        w += sprintf(w, "%s", req->hval[i]);
    }
    return out;
}

const char *pc_http_req_client_ip(pc_http_req_t *req)
{
    if (!req->client_ip[0]) {
        /* A proxy may append a line of its own rather than extend the
         * client's (HAProxy's option forwardfor does): read only the first
         * line and the client's own chose the address. All lines, in order,
         * are one list, read from the right. */
        char *xff = header_lines_joined(req, "X-Forwarded-For");
        pc_forwarded_client(req->srv ? req->srv->proxies : NULL, pc_http_req_peer(req), xff,
                            req->client_ip, sizeof req->client_ip);
        free(xff);
    }
    return req->client_ip;
}
void pc_http_req_set_user(pc_http_req_t *req, void *user)
{
    req->user = user;
}
void *pc_http_req_user(const pc_http_req_t *req)
{
    return req->user;
}
const char *pc_http_req_route(const pc_http_req_t *req)
{
    return req->route ? req->route->pattern : "unmatched";
}

const char *pc_http_req_header(const pc_http_req_t *req, const char *name)
{
    for (int i = 0; i < req->nhdrs; i++)
        if (strcasecmp(req->hname[i], name) == 0)
            return req->hval[i];
    return NULL;
}

const char *pc_http_req_param(const pc_http_req_t *req, const char *name)
{
    for (int i = 0; i < req->nparams; i++)
        if (strcmp(req->pname[i], name) == 0)
            return req->pval[i];
    return NULL;
}

const char *pc_http_req_body(const pc_http_req_t *req, size_t *len)
{
    if (len)
        *len = req->body.len;
    return req->body.p ? req->body.p : "";
}

json_t *pc_http_req_json(pc_http_req_t *req)
{
    if (req->json)
        return req->json;
    json_error_t err;
    json_t *j =
        json_loadb(req->body.p ? req->body.p : "", req->body.len, JSON_REJECT_DUPLICATES, &err);
    if (!j)
        return NULL;
    if (!json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    req->json = j;
    return j;
}

/* True when s is well-formed UTF-8 (no overlong forms, no surrogates, nothing
 * past U+10FFFF) without a NUL byte. */
static bool text_ok(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        if (c == 0)
            return false;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
        if (c < 0xC2 || c > 0xF4 || i + len > n)
            return false;
        unsigned lo = 0x80, hi = 0xBF; /* bounds of the second byte */
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
        else if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return false;
        for (size_t k = 2; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
        i += len;
    }
    return true;
}

/* True when the path or query, escapes decoded, is text: every value taken
 * from it (path parameters, query parameters) is then valid UTF-8 without a
 * NUL, as the database and JSON answers require. */
static bool target_part_ok(const char *part)
{
    size_t n = strlen(part);
    char *buf = malloc(n + 1);
    if (!buf)
        return false;
    size_t len = pc_url_decode(buf, part, n, true);
    bool ok = text_ok((const unsigned char *)buf, len);
    free(buf);
    return ok;
}

const char *pc_http_req_query_param(pc_http_req_t *req, const char *name)
{
    const char *q = req->query;
    if (!q)
        return NULL;
    size_t nlen = strlen(name);
    while (*q) {
        const char *amp = strchr(q, '&');
        size_t len = amp ? (size_t)(amp - q) : strlen(q);
        const char *eq = memchr(q, '=', len);
        size_t klen = eq ? (size_t)(eq - q) : len;
        char *key = pc_http_req_alloc(req, klen + 1);
        pc_url_decode(key, q, klen, true);
        if (strlen(key) == nlen && memcmp(key, name, nlen) == 0) {
            size_t vlen = eq ? len - klen - 1 : 0;
            char *val = pc_http_req_alloc(req, vlen + 1);
            pc_url_decode(val, eq ? eq + 1 : "", vlen, true);
            return val;
        }
        q += len;
        if (*q == '&')
            q++;
    }
    return NULL;
}

void pc_http_req_on_done(pc_http_req_t *req, void (*fn)(void *arg), void *arg)
{
    if (req->n_on_done >= MAX_ON_DONE)
        abort();
    req->on_done[req->n_on_done].fn = fn;
    req->on_done[req->n_on_done].arg = arg;
    req->n_on_done++;
}

/* ---------- responding ---------- */

static const char *reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 422:
        return "Unprocessable Entity";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return "Status";
    }
}

void pc_http_add_header(pc_http_req_t *req, const char *name, const char *value)
{
    buf_append(&req->resp_headers, name, strlen(name));
    buf_append(&req->resp_headers, ": ", 2);
    buf_append(&req->resp_headers, value, strlen(value));
    buf_append(&req->resp_headers, "\r\n", 2);
}

typedef struct {
    uv_write_t w;
    conn_t *conn;
    char *data;
} write_req_t;

/* Answers a client has not taken yet, in bytes: past WRITE_HIGH the
 * connection stops reading and parsing (a client pipelining requests
 * without reading the answers grew the server's memory without bound), and
 * goes on below WRITE_LOW. A connection with answers queued is closed if they
 * do not drain within the idle timeout. */
#define WRITE_HIGH (1024 * 1024)
#define WRITE_LOW (256 * 1024)

static void conn_set_timer(conn_t *c, uint64_t ms);
static void timer_cb(uv_timer_t *t);

/* A connection closed with bytes of the client's still unread (a body over
 * the limit that came anyway, or what followed a refused request) makes the
 * kernel send a reset, and a client that writes its whole body before
 * reading (most libraries do) then loses the answer in the reset: it sees
 * "connection reset", not the 413. So the write side is shut first (the
 * client reads the answer and end of stream), and what the client still
 * sends is read and dropped until it closes, for at most LINGER_MS and
 * LINGER_MAX_BYTES. */
#define LINGER_MS 2000
#define LINGER_MAX_BYTES (1024 * 1024)

static void shutdown_cb(uv_shutdown_t *sh, int status)
{
    conn_t *c = sh->data;
    if (status < 0 && status != UV_ECANCELED)
        conn_close(c);
}

static void linger(conn_t *c)
{
    c->lingering = 1;
    c->shut.data = c;
    if (uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, shutdown_cb) < 0) {
        conn_close(c);
        return;
    }
    conn_set_timer(c, LINGER_MS);
    if (!c->reading) {
        c->reading = 1;
        resume_read(c);
    }
}

static void write_cb(uv_write_t *w, int status)
{
    write_req_t *wr = (write_req_t *)w;
    conn_t *c = wr->conn;
    free(wr->data);
    free(wr);
    c->writes_pending--;
    if (status < 0) {
        conn_close(c);
        return;
    }
    /* A connection still busy with a pipelined request (a stop marked it
     * while the answer before was on its way) closes after that request's
     * own answer: lingering now shut the write side, and the answer of a
     * request whose work was done (a payment, say) was lost. */
    if (c->close_after_write && c->writes_pending == 0 && !c->busy) {
        if (!c->closing && !c->lingering)
            linger(c);
        return;
    }
    if (c->write_blocked && !c->closing &&
        uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) <= WRITE_LOW) {
        c->write_blocked = 0;
        if (!c->busy) {
            conn_set_timer(c, c->srv->opts.idle_timeout_ms);
            if (!c->reading) {
                c->reading = 1;
                resume_read(c);
            }
            if (!c->in_parse)
                parse_input(c);
        }
    }
}

static void log_and_count(pc_http_req_t *req, int status)
{
    pc_http_server_t *srv = req->srv;
    double secs = (double)(now_ns() - req->start_ns) / 1e9;
    const char *label = req->route ? req->route->label : "unmatched";
    char labels[256];
    snprintf(labels, sizeof labels, "server=\"%s\",route=\"%s\",code=\"%d\"", srv->name, label,
             status);
    pc_metrics_add("pc_http_requests_total", labels, 1);
    snprintf(labels, sizeof labels, "server=\"%s\",route=\"%s\"", srv->name, label);
    pc_metrics_observe("pc_http_request_duration_seconds", labels, secs);
    if (req->overload) {
        /* One line a second at most, however many are refused. */
        uint64_t now_s = now_ns() / 1000000000ull;
        srv->overload_refused++;
        if (now_s != srv->overload_logged_s) {
            pc_log_warn("http.overload",
                        "%s: %llu request(s) refused with 503, over %d in progress (http "
                        "max_inflight)",
                        srv->name, (unsigned long long)srv->overload_refused,
                        srv->opts.max_inflight);
            srv->overload_logged_s = now_s;
            srv->overload_refused = 0;
        }
    } else if (srv->opts.access_log || status >= 500) {
        json_t *f =
            json_pack("{s:s,s:s,s:s,s:s,s:i,s:I,s:s}", "request_id", req->id, "server", srv->name,
                      "method", pc_http_req_method(req), "route", pc_http_req_route(req), "status",
                      status, "us", (json_int_t)(secs * 1e6), "peer", req->peer);
        pc_log_fields(status >= 500 ? PC_LOG_WARN : PC_LOG_INFO, "http.request", f, "%s", "");
    }
}

static void req_finish(pc_http_req_t *req)
{
    for (int i = 0; i < req->n_on_done; i++)
        req->on_done[i].fn(req->on_done[i].arg);
    req_free(req);
}

void pc_http_respond(pc_http_req_t *req, int status, const char *content_type, const char *body,
                     size_t len)
{
    if (req->responder && !req->answered) {
        void (*fn)(pc_http_req_t *, int, const char *, const char *, size_t, void *) =
            req->responder;
        req->responder = NULL; /* it answers through pc_http_send */
        fn(req, status, content_type, body, len, req->responder_data);
        return;
    }
    pc_http_send(req, status, content_type, body, len);
}

void pc_http_set_responder(pc_http_req_t *req,
                           void (*fn)(pc_http_req_t *req, int status, const char *content_type,
                                      const char *body, size_t len, void *data),
                           void *data)
{
    req->responder = fn;
    req->responder_data = data;
}

void pc_http_send(pc_http_req_t *req, int status, const char *content_type, const char *body,
                  size_t len)
{
    if (req->answered) {
        pc_log_error("http.double_answer", "request %s answered twice", req->id);
        return;
    }
    req->answered = 1;
    pc_http_server_t *srv = req->srv;
    conn_t *c = req->conn;
    log_and_count(req, status);
    if (req->complete)
        srv->inflight--;

    if (!c || c->closing) {
        /* The client went away: nothing to send. */
        if (c && c->cur == req) {
            c->cur = NULL;
            c->busy = 0;
        }
        req_finish(req);
        maybe_finish_stop(srv);
        return;
    }

    int keep = req->keep_alive && !srv->stopping && !c->err_status;
    char head[512];
    int hn =
        snprintf(head, sizeof head,
                 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                 "X-Request-Id: %s\r\nConnection: %s\r\n",
                 status, reason(status), content_type, len, req->id, keep ? "keep-alive" : "close");
    /* A response to HEAD has the headers GET's would have, and no body: a
     * client reads none, and would take body bytes for its next response. */
    if (req->method == HTTP_HEAD)
        len = 0;
    size_t total = (size_t)hn + req->resp_headers.len + 2 + len;
    write_req_t *wr = malloc(sizeof *wr);
    char *out = malloc(total);
    if (!wr || !out)
        abort();
    memcpy(out, head, (size_t)hn);
    size_t off = (size_t)hn;
    if (req->resp_headers.len) {
        memcpy(out + off, req->resp_headers.p, req->resp_headers.len);
        off += req->resp_headers.len;
    }
    memcpy(out + off, "\r\n", 2);
    off += 2;
    if (len)
        memcpy(out + off, body, len);
    wr->conn = c;
    wr->data = out;
    uv_buf_t b = uv_buf_init(out, (unsigned)total);
    c->writes_pending++;
    if (!keep)
        c->close_after_write = 1;
    if (uv_write(&wr->w, (uv_stream_t *)&c->tcp, &b, 1, write_cb) < 0) {
        c->writes_pending--;
        free(out);
        free(wr);
        c->close_after_write = 1;
        conn_close(c);
    }
    c->cur = NULL;
    c->busy = 0;
    req_finish(req);
    if (c->closing)
        return;
    /* Timed even while only writing: a client that stops reading is
     * closed after the idle timeout, not kept for good. */
    conn_set_timer(c, srv->opts.idle_timeout_ms);
    if (c->close_after_write ||
        uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > WRITE_HIGH) {
        c->write_blocked = !c->close_after_write;
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
        return;
    }
    if (!c->reading) {
        c->reading = 1;
        resume_read(c);
    }
    if (!c->in_parse)
        parse_input(c);
}

void pc_http_respond_json(pc_http_req_t *req, int status, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(body);
    if (!text) {
        pc_http_respond_error(req, PC_API_INTERNAL, NULL, "could not encode the answer");
        return;
    }
    pc_http_respond(req, status, "application/json", text, strlen(text));
    free(text);
}

void pc_http_respond_error(pc_http_req_t *req, pc_api_err_t err, const char *field,
                           const char *message)
{
    json_t *e = json_pack("{s:s,s:s}", "code", pc_api_err_code(err), "message",
                          message ? message : pc_api_err_code(err));
    if (field)
        json_object_set_new(e, "field", json_string(field));
    pc_http_respond_json(req, pc_api_err_status(err), json_pack("{s:o}", "error", e));
}

/* ---------- routing ---------- */

pc_router_t *pc_router_new(void)
{
    return calloc(1, sizeof(pc_router_t));
}

void pc_router_free(pc_router_t *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->nroutes; i++) {
        route_t *rt = &r->routes[i];
        for (int k = 0; k < rt->nsegs; k++)
            free(rt->segs[k]);
        free(rt->segs);
        free(rt->method);
        free(rt->pattern);
    }
    for (int i = 0; i < r->nfilters; i++)
        free(r->filters[i].prefix);
    free(r->routes);
    free(r);
}

int pc_router_add(pc_router_t *r, const char *method, const char *pattern,
                  pc_http_handler_cb handler, void *data)
{
    if (pattern[0] != '/')
        return PC_EINVAL;
    route_t *nr = realloc(r->routes, sizeof(route_t) * (size_t)(r->nroutes + 1));
    if (!nr)
        return PC_ENOMEM;
    r->routes = nr;
    route_t *rt = &r->routes[r->nroutes];
    memset(rt, 0, sizeof *rt);
    rt->method = strdup(method);
    rt->pattern = strdup(pattern);
    rt->handler = handler;
    rt->data = data;
    snprintf(rt->label, sizeof rt->label, "%s %s", method, pattern);
    char *copy = strdup(pattern + 1), *save = NULL;
    for (char *tok = strtok_r(copy, "/", &save); tok; tok = strtok_r(NULL, "/", &save)) {
        size_t l = strlen(tok);
        if ((tok[0] == '{') != (tok[l - 1] == '}')) {
            free(copy);
            return PC_EINVAL;
        }
        rt->segs = realloc(rt->segs, sizeof(char *) * (size_t)(rt->nsegs + 1));
        rt->segs[rt->nsegs++] = strdup(tok);
    }
    free(copy);
    r->nroutes++;
    return 0;
}

void pc_router_set_filter(pc_router_t *r, const char *path_prefix, pc_http_handler_cb filter,
                          void *data)
{
    if (r->nfilters >= 4)
        abort();
    r->filters[r->nfilters].prefix = strdup(path_prefix);
    r->filters[r->nfilters].fn = filter;
    r->filters[r->nfilters].data = data;
    r->nfilters++;
}

/* Splits req->path into segments and finds the route. Returns 0 and sets
 * req->route, 404 when no path matches, 405 when only the method differs. */
static int route_match(pc_router_t *r, pc_http_req_t *req)
{
    const char *segs[32];
    int n = 0;
    /* Only the canonical spelling of a path matches: it starts with '/' and
     * has no empty segment ("//v1/x", "/v1/x/", "v1/x" match nothing).
     * Another spelling reaching a route would be a second name for it that
     * the filters, which protect routes by their prefix, might not know. */
    if (req->path[0] != '/' || (req->path[1] && strstr(req->path, "//")) ||
        (req->path[1] && req->path[strlen(req->path) - 1] == '/'))
        return 404;
    req->pathsegs = strdup(req->path + 1);
    char *save = NULL;
    for (char *tok = strtok_r(req->pathsegs, "/", &save); tok; tok = strtok_r(NULL, "/", &save)) {
        if (n == 32)
            return 404;
        segs[n++] = tok;
    }
    int path_matched = 0;
    const char *method = pc_http_req_method(req);
    for (int i = 0; i < r->nroutes; i++) {
        route_t *rt = &r->routes[i];
        if (rt->nsegs != n)
            continue;
        int ok = 1, np = 0;
        for (int k = 0; k < n && ok; k++) {
            if (rt->segs[k][0] == '{') {
                if (np == MAX_PARAMS)
                    ok = 0;
                else
                    np++;
            } else if (strcmp(rt->segs[k], segs[k]) != 0) {
                ok = 0;
            }
        }
        if (!ok)
            continue;
        path_matched = 1;
        if (strcmp(rt->method, method) != 0)
            continue;
        req->route = rt;
        req->nparams = 0;
        for (int k = 0; k < n; k++) {
            if (rt->segs[k][0] != '{')
                continue;
            /* Names are stored "{name}"; point past the brace into a copy. */
            size_t l = strlen(rt->segs[k]);
            char *pn = pc_http_req_alloc(req, l);
            memcpy(pn, rt->segs[k] + 1, l - 2);
            size_t sl = strlen(segs[k]);
            char *pv = pc_http_req_alloc(req, sl + 1);
            pc_url_decode(pv, segs[k], sl, true);
            req->pname[req->nparams] = pn;
            req->pval[req->nparams] = pv;
            req->nparams++;
        }
        return 0;
    }
    return path_matched ? 405 : 404;
}

void pc_http_next(pc_http_req_t *req)
{
    req->route->handler(req, req->route->data);
}

static int valid_request_id(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char ch = s[n];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_' || ch == '.'))
            return 0;
    }
    return n > 0 && n < 40;
}

static void dispatch(conn_t *c, pc_http_req_t *req)
{
    pc_http_server_t *srv = c->srv;
    srv->inflight++;
    c->busy = 1;
    uv_timer_stop(&c->timer);
    const char *rid = pc_http_req_header(req, "X-Request-Id");
    if (rid && valid_request_id(rid))
        snprintf(req->id, sizeof req->id, "%s", rid);
    else
        snprintf(req->id, sizeof req->id, "%s%llx", srv->id_prefix, (unsigned long long)++srv->seq);

    /* Split target into path and query. */
    const char *t = pc_http_req_target(req);
    const char *qm = strchr(t, '?');
    if (qm) {
        req->path = strndup(t, (size_t)(qm - t));
        req->query = strdup(qm + 1);
    } else {
        req->path = strdup(t);
    }
    /* Too much in progress already (a dependency slowed down while clients
     * keep sending): refused before any work, counted. */
    if (srv->opts.max_inflight > 0 && srv->inflight > srv->opts.max_inflight &&
        strcmp(req->path, "/healthz") != 0) {
        char labels[64];
        snprintf(labels, sizeof labels, "server=\"%s\"", srv->name);
        pc_metrics_add("pc_http_overload_refused_total", labels, 1);
        req->overload = 1;
        pc_http_add_header(req, "Retry-After", "1");
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL,
                              "too many requests in progress on this node: retry shortly");
        return;
    }
    /* An escape that decodes to a NUL or to bytes that are not UTF-8 (%FF)
     * is the client's error, not a key the database can look up. */
    if (!target_part_ok(req->path) || (req->query && !target_part_ok(req->query))) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, NULL,
                              "the path or query is not UTF-8 text once its %-escapes are "
                              "decoded (or holds %00)");
        return;
    }
    int m = route_match(srv->router, req);
    if (m == 404) {
        pc_http_respond_error(req, PC_API_NOT_FOUND, NULL, "no such path");
        return;
    }
    if (m == 405) {
        pc_http_respond_error(req, PC_API_METHOD_NOT_ALLOWED, NULL,
                              "method not allowed on this path");
        return;
    }
    /* A filter guards the routes declared under its prefix: matched on the
     * route's own pattern, not on how the client spelt the path. */
    for (int i = 0; i < srv->router->nfilters; i++) {
        filter_t *f = &srv->router->filters[i];
        if (strncmp(req->route->pattern, f->prefix, strlen(f->prefix)) == 0) {
            f->fn(req, f->data);
            return;
        }
    }
    pc_http_next(req);
}

/* ---------- parsing ---------- */

static conn_t *conn_of(http_parser *p)
{
    return (conn_t *)p->data;
}

static size_t head_bytes(const pc_http_req_t *req)
{
    return req->target.len + req->hbuf.len;
}

static int refuse(conn_t *c, int status)
{
    c->err_status = status;
    return -1;
}

static int on_message_begin(http_parser *p)
{
    conn_t *c = conn_of(p);
    if (!c->cur)
        c->cur = req_new(c);
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    conn_t *c = conn_of(p);
    if (head_bytes(c->cur) + len > c->srv->opts.max_header_bytes)
        return refuse(c, 431);
    return buf_append(&c->cur->target, at, len) ? refuse(c, 500) : 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    conn_t *c = conn_of(p);
    pc_http_req_t *r = c->cur;
    /* Trailers of a chunked body come through the same callbacks after the
     * headers were resolved: they are ignored (appending them would move
     * hbuf under the resolved pointers and leave their names NULL). */
    if (r->headers_done)
        return 0;
    if (head_bytes(r) + len + 2 > c->srv->opts.max_header_bytes)
        return refuse(c, 431);
    if (r->nhdrs == 0 || r->last_was_value) {
        if (r->nhdrs == MAX_HEADERS)
            return refuse(c, 431);
        if (r->nhdrs > 0)
            buf_append(&r->hbuf, "", 1); /* terminate the previous value */
        r->hoff[r->nhdrs][0] = r->hbuf.len;
        r->hoff[r->nhdrs][1] = (size_t)-1;
        r->nhdrs++;
        r->last_was_value = 0;
    }
    return buf_append(&r->hbuf, at, len) ? refuse(c, 500) : 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    conn_t *c = conn_of(p);
    pc_http_req_t *r = c->cur;
    if (r->headers_done)
        return 0;
    if (head_bytes(r) + len + 2 > c->srv->opts.max_header_bytes)
        return refuse(c, 431);
    if (!r->last_was_value) {
        buf_append(&r->hbuf, "", 1); /* terminate the name */
        r->hoff[r->nhdrs - 1][1] = r->hbuf.len;
        r->last_was_value = 1;
    }
    return buf_append(&r->hbuf, at, len) ? refuse(c, 500) : 0;
}

/* Resolves header offsets into pointers once the buffer stops moving. */
static void resolve_headers(pc_http_req_t *r)
{
    if (r->headers_done)
        return;
    buf_append(&r->hbuf, "", 1);
    for (int i = 0; i < r->nhdrs; i++) {
        r->hname[i] = r->hbuf.p ? r->hbuf.p + r->hoff[i][0] : "";
        r->hval[i] = r->hoff[i][1] == (size_t)-1 || !r->hbuf.p ? "" : r->hbuf.p + r->hoff[i][1];
    }
    r->headers_done = 1;
}

static void continue_written(uv_write_t *w, int status)
{
    (void)status;
    free(w);
}

static int on_headers_complete(http_parser *p)
{
    conn_t *c = conn_of(p);
    pc_http_req_t *r = c->cur;
    resolve_headers(r);
    const pc_http_server_opts_t *o = &c->srv->opts;
    /* The large limit only for a request its server trusts by its headers
     * alone (the admin token): decided before the body is read, so that no
     * one else can make the node buffer an upload's worth per connection. */
    r->max_body = o->trusted && !o->trusted(r, o->trusted_data) ? o->untrusted_max_body_bytes
                                                                : o->max_body_bytes;
    if (p->content_length != (uint64_t)-1 && p->content_length > r->max_body)
        return refuse(c, 413);
    /* Clients such as curl wait (a second, by default) for this before
     * sending a body; answer at once. */
    const char *expect = pc_http_req_header(r, "Expect");
    /* Only to an HTTP/1.1 request that announces a body (RFC 9110 §10.1.1:
     * an HTTP/1.0 client may take the 100 for the answer; without
     * Content-Length, http-parser's content_length is ULLONG_MAX). */
    int body_announced =
        (p->content_length != (uint64_t)-1 && p->content_length > 0) || (p->flags & F_CHUNKED);
    if (expect && strcasecmp(expect, "100-continue") == 0 && body_announced &&
        (p->http_major > 1 || (p->http_major == 1 && p->http_minor >= 1))) {
        /* Queued as any answer is (uv_try_write could send part of it into
         * a full socket buffer and drop the rest: the response that follows
         * would then garble the connection). */
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        uv_buf_t b = uv_buf_init((char *)cont, sizeof cont - 1);
        uv_write_t *w = malloc(sizeof *w);
        if (w && uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, continue_written) < 0)
            free(w);
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    conn_t *c = conn_of(p);
    if (c->cur->body.len + len > c->cur->max_body)
        return refuse(c, 413);
    return buf_append(&c->cur->body, at, len) ? refuse(c, 500) : 0;
}

static int on_message_complete(http_parser *p)
{
    conn_t *c = conn_of(p);
    resolve_headers(c->cur); /* a message may end without headers_complete */
    c->cur->complete = 1;
    c->cur->method = (int)p->method;
    c->cur->keep_alive = http_should_keep_alive(p);
    http_parser_pause(p, 1);
    return 0;
}

/* Answers a request the parser refused, then closes the connection. */
static void refuse_and_close(conn_t *c)
{
    pc_http_req_t *req = c->cur ? c->cur : (c->cur = req_new(c));
    req->keep_alive = 0;
    snprintf(req->id, sizeof req->id, "%s%llx", c->srv->id_prefix,
             (unsigned long long)++c->srv->seq);
    req->path = strdup("");
    c->busy = 1;
    switch (c->err_status) {
    case 413:
        pc_http_respond_error(req, PC_API_PAYLOAD_TOO_LARGE, NULL, "request body over the limit");
        break;
    case 431:
        pc_http_respond_error(req, PC_API_HEADERS_TOO_LARGE, NULL,
                              "request headers over the limit");
        break;
    case 408:
        pc_http_respond_error(req, PC_API_REQUEST_TIMEOUT, NULL, "request not received in time");
        break;
    default:
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, NULL, "malformed HTTP request");
        break;
    }
}

static void parse_input(conn_t *c)
{
    c->in_parse = 1;
    while (!c->busy && !c->closing && !c->close_after_write && !c->write_blocked &&
           c->in_pos < c->in.len) {
        if (!c->cur) {
            c->cur = req_new(c);
            conn_set_timer(c, c->srv->opts.request_timeout_ms);
        }
        size_t avail = c->in.len - c->in_pos;
        size_t n = http_parser_execute(&c->parser, &c->srv->settings, c->in.p + c->in_pos, avail);
        c->in_pos += n;
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (e == HPE_PAUSED) {
            http_parser_pause(&c->parser, 0);
            if (c->cur && c->cur->complete) {
                pc_http_req_t *req = c->cur;
                dispatch(c, req);
                continue;
            }
        } else if (e != HPE_OK) {
            if (!c->err_status)
                c->err_status = e == HPE_HEADER_OVERFLOW ? 431 : 400;
            refuse_and_close(c);
            break;
        } else if (n < avail) {
            /* Cannot happen without an error; stop rather than spin. */
            c->err_status = 400;
            refuse_and_close(c);
            break;
        }
    }
    if (c->in_pos == c->in.len) {
        c->in_pos = c->in.len = 0;
        /* All read: a buffer a large or pipelined request grew is given
         * back, not kept by an idle keep-alive connection for its minute. */
        if (c->in.cap > IN_KEEP_BYTES) {
            free(c->in.p);
            c->in.p = NULL;
            c->in.cap = 0;
        }
    } else if (c->in_pos > 0 && c->in_pos >= c->in.cap / 2) {
        memmove(c->in.p, c->in.p + c->in_pos, c->in.len - c->in_pos);
        c->in.len -= c->in_pos;
        c->in_pos = 0;
    }
    c->in_parse = 0;
}

/* ---------- connections ---------- */

/* Unparsed bytes a busy connection may hold before reading stops: one
 * request's worth, by the smaller body limit where there are two (the
 * admin listener's large one is only for a client with the token, and
 * pipelined bytes are not parsed yet: a client without it held 64 MiB per
 * connection behind a slow request). */
static size_t pipelined_cap(const pc_http_server_opts_t *o)
{
    size_t body = o->trusted && o->untrusted_max_body_bytes < o->max_body_bytes
                      ? o->untrusted_max_body_bytes
                      : o->max_body_bytes;
    return o->max_header_bytes + body;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    *buf = uv_buf_init(g_readbuf, sizeof g_readbuf);
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = (conn_t *)s;
    if (nread < 0) {
        /* EOF or error. An in-flight request still gets its answer dropped. */
        conn_close(c);
        return;
    }
    if (c->lingering) {
        c->linger_bytes += (size_t)nread;
        if (c->linger_bytes > LINGER_MAX_BYTES)
            conn_close(c);
        return;
    }
    if (nread == 0)
        return;
    if (buf_append(&c->in, buf->base, (size_t)nread)) {
        conn_close(c);
        return;
    }
    /* Backpressure: while a request is being handled, stop reading once a full
     * request's worth of pipelined bytes is waiting. */
    if (c->busy && c->in.len - c->in_pos > pipelined_cap(&c->srv->opts)) {
        uv_read_stop(s);
        c->reading = 0;
    }
    if (!c->busy && !c->in_parse && !c->write_blocked)
        parse_input(c);
}

static void resume_read(conn_t *c)
{
    if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) < 0)
        conn_close(c);
}

static void count_connections(pc_http_server_t *srv)
{
    char labels[64];
    snprintf(labels, sizeof labels, "server=\"%s\"", srv->name);
    pc_metrics_set("pc_http_open_connections", labels, srv->nconns);
}

static void conn_handle_closed(uv_handle_t *h)
{
    conn_t *c = h->data;
    if (--c->handles_open > 0)
        return;
    pc_http_server_t *srv = c->srv;
    free(c->in.p);
    free(c);
    srv->nliving--;
    maybe_finish_stop(srv);
}

static void conn_close(conn_t *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    pc_http_server_t *srv = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    srv->nconns--;
    count_connections(srv);
    if (c->cur) {
        if (c->busy) {
            c->cur->conn = NULL; /* the handler still owns it; its answer is dropped */
        } else {
            req_free(c->cur);
        }
        c->cur = NULL;
    }
    c->handles_open = 2;
    uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
}

static void timer_cb(uv_timer_t *t)
{
    conn_t *c = t->data;
    if (c->lingering) {
        conn_close(c);
        return;
    }
    if (c->busy || c->closing)
        return;
    if (c->cur && (c->cur->target.len || c->cur->hbuf.len || c->in.len > c->in_pos)) {
        /* Part of a request arrived and then it stalled. */
        c->err_status = 408;
        refuse_and_close(c);
        return;
    }
    conn_close(c);
}

static void conn_set_timer(conn_t *c, uint64_t ms)
{
    uv_timer_start(&c->timer, timer_cb, ms, 0);
}

static void on_connection(uv_stream_t *server, int status)
{
    pc_http_server_t *srv = server->data;
    if (status < 0)
        return;
    conn_t *c = calloc(1, sizeof *c);
    if (!c)
        return;
    c->srv = srv;
    srv->nliving++;
    uv_tcp_init(srv->loop, &c->tcp);
    uv_timer_init(srv->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0 || srv->stopping ||
        srv->nconns >= srv->opts.max_connections) {
        if (srv->nconns >= srv->opts.max_connections)
            pc_metrics_add("pc_http_rejected_connections_total", "", 1);
        c->handles_open = 2;
        c->closing = 1;
        uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
        uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET)
            uv_ip4_name((struct sockaddr_in *)&ss, c->peer, sizeof c->peer);
        else
            uv_ip6_name((struct sockaddr_in6 *)&ss, c->peer, sizeof c->peer);
    }
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    count_connections(srv);
    c->reading = 1;
    conn_set_timer(c, srv->opts.idle_timeout_ms);
    if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) < 0)
        conn_close(c);
}

/* Whether a process already listens at address ss: a connection to it is
 * taken within 200 ms (a port only bound, or free, refuses at once). Run at
 * start, before the loop. The wildcard addresses are asked on loopback. */
static bool someone_listens(const struct sockaddr_storage *ss, socklen_t sl)
{
    struct sockaddr_storage to = *ss;
    if (to.ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&to;
        if (a->sin_addr.s_addr == htonl(INADDR_ANY))
            a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&to;
        if (IN6_IS_ADDR_UNSPECIFIED(&a->sin6_addr))
            a->sin6_addr = in6addr_loopback;
    }
    int fd = socket(to.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    bool taken = false;
    if (connect(fd, (struct sockaddr *)&to, sl) == 0) {
        taken = true;
    } else if (errno == EINPROGRESS) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int err = 0;
        socklen_t el = sizeof err;
        taken = poll(&p, 1, 200) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0 &&
                err == 0;
    }
    close(fd);
    return taken;
}

static int listen_socket(const char *host, int port, int own_port, int *out_fd)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof ss);
    if (strchr(host, ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        if (uv_ip6_addr(host, port, a))
            return PC_EINVAL;
        sl = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        if (uv_ip4_addr(host, port, a))
            return PC_EINVAL;
        sl = sizeof *a;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return PC_EIO;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    /* Several paycore processes share the port; the kernel spreads
     * connections. A port of this process's own is shared as well (a test
     * harness holds the ports it hands out that way) but not with another
     * listener: one found there is refused as an address in use. */
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (own_port && port && someone_listens(&ss, sl)) {
        close(fd);
        errno = EADDRINUSE;
        return PC_EIO;
    }
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0) {
        close(fd);
        return PC_EIO;
    }
    *out_fd = fd;
    return 0;
}

pc_http_server_t *pc_http_server_start(uv_loop_t *loop, const pc_http_server_opts_t *opts,
                                       pc_router_t *router)
{
    pc_http_server_t *srv = calloc(1, sizeof *srv);
    if (!srv)
        return NULL;
    srv->loop = loop;
    srv->opts = *opts;
    srv->name = strdup(opts->name ? opts->name : "api");
    srv->host = strdup(opts->host);
    srv->opts.name = srv->name;
    srv->opts.host = srv->host;
    srv->router = router;
    char perr[160];
    srv->proxies = pc_proxy_list_parse(opts->trusted_proxies, perr, sizeof perr);
    if (!srv->proxies) {
        pc_log_error("http.trusted_proxies", "%s server: %s", srv->name, perr);
        free(srv->name);
        free(srv->host);
        free(srv);
        return NULL;
    }
    srv->opts.trusted_proxies = NULL;
    unsigned char rnd[3];
    uv_random(NULL, NULL, rnd, sizeof rnd, 0, NULL);
    snprintf(srv->id_prefix, sizeof srv->id_prefix, "%02x%02x%02x-", rnd[0], rnd[1], rnd[2]);
    /* http-parser's own cap on a request's head (80 KiB unless set; one for
     * the process) must not come before ours: a head between the two was
     * refused as malformed. */
    static size_t parser_cap = 80 * 1024;
    if (srv->opts.max_header_bytes + 1024 > parser_cap) {
        parser_cap = srv->opts.max_header_bytes + 1024;
        http_parser_set_max_header_size((uint32_t)parser_cap);
    }
    srv->settings.on_message_begin = on_message_begin;
    srv->settings.on_url = on_url;
    srv->settings.on_header_field = on_header_field;
    srv->settings.on_header_value = on_header_value;
    srv->settings.on_headers_complete = on_headers_complete;
    srv->settings.on_body = on_body;
    srv->settings.on_message_complete = on_message_complete;

    pc_metrics_describe("pc_http_requests_total", PC_METRIC_COUNTER, "HTTP requests answered");
    pc_metrics_describe("pc_http_request_duration_seconds", PC_METRIC_HISTOGRAM,
                        "HTTP request latency");
    pc_metrics_describe("pc_http_open_connections", PC_METRIC_GAUGE, "open HTTP connections");
    pc_metrics_describe("pc_http_overload_refused_total", PC_METRIC_COUNTER,
                        "requests refused with 503 as too many were in progress");

    int fd = -1;
    if (listen_socket(opts->host, opts->port, opts->own_port, &fd) < 0) {
        pc_log_error("http.listen", "cannot bind %s:%d: %s%s", opts->host, opts->port,
                     strerror(errno),
                     opts->own_port && errno == EADDRINUSE
                         ? " (each node needs its own admin port: set PAYCORE_ADMIN_PORT)"
                         : "");
        goto fail;
    }
    uv_tcp_init(loop, &srv->listener);
    srv->listener.data = srv;
    srv->listener_open = 1;
    if (uv_tcp_open(&srv->listener, fd) < 0 ||
        uv_listen((uv_stream_t *)&srv->listener, 1024, on_connection) < 0) {
        pc_log_error("http.listen", "cannot listen on %s:%d", opts->host, opts->port);
        close(fd);
        uv_close((uv_handle_t *)&srv->listener, NULL);
        srv->listener_open = 0;
        goto fail;
    }
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&ss, &sl);
    srv->port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                              : ((struct sockaddr_in6 *)&ss)->sin6_port);
    return srv;
fail:
    /* The listener handle (if initialised) is closed; the struct is leaked only
     * if its close is pending, which uv_run will finish. */
    if (!srv->listener_open) {
        pc_proxy_list_free(srv->proxies);
        free(srv->name);
        free(srv->host);
        free(srv);
    }
    return NULL;
}

int pc_http_server_port(const pc_http_server_t *srv)
{
    return srv->port;
}

int pc_http_server_connections(const pc_http_server_t *srv)
{
    return srv->nconns;
}

static void maybe_finish_stop(pc_http_server_t *srv)
{
    if (!srv->stopping || srv->nconns > 0 || srv->inflight > 0 || srv->listener_open)
        return;
    /* Connections still closing hold the server through c->srv. */
    if (srv->nliving > 0)
        return;
    void (*cb)(void *) = srv->stop_cb;
    void *data = srv->stop_data;
    srv->stop_cb = NULL;
    pc_proxy_list_free(srv->proxies);
    free(srv->name);
    free(srv->host);
    free(srv);
    if (cb)
        cb(data);
}

static void listener_closed(uv_handle_t *h)
{
    pc_http_server_t *srv = h->data;
    srv->listener_open = 0;
    maybe_finish_stop(srv);
}

void pc_http_server_stop(pc_http_server_t *srv, void (*cb)(void *data), void *data)
{
    srv->stopping = 1;
    srv->stop_cb = cb;
    srv->stop_data = data;
    for (conn_t *c = srv->conns, *next; c; c = next) {
        next = c->next;
        if (c->busy) {
            c->close_after_write = 1; /* answered with Connection: close */
        } else if (c->writes_pending > 0) {
            /* Answers still on their way: closing now cancelled them (a
             * slow client got a cut-off answer). Closed once they are
             * written, or after at most 5 s (well inside the process's
             * shutdown grace period). */
            c->close_after_write = 1;
            uv_read_stop((uv_stream_t *)&c->tcp);
            c->reading = 0;
            conn_set_timer(c, srv->opts.idle_timeout_ms < 5000 ? srv->opts.idle_timeout_ms : 5000);
        } else {
            conn_close(c);
        }
    }
    if (srv->listener_open)
        uv_close((uv_handle_t *)&srv->listener, listener_closed);
    else
        maybe_finish_stop(srv);
}
