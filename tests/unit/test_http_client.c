/* Unit tests for http/client: a tiny HTTP/1.1 server runs on the same libuv
 * loop as the client (127.0.0.1, port 0), answering every request with fixed
 * bytes, never answering, or hanging up, so that delivery, timeouts,
 * refusals, concurrency, connection reuse and cancellation are observed
 * without any other process. Every fixture asserts uv_loop_close() == 0 at
 * teardown, so a leaked handle fails the test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <cmocka.h>

#include <uv.h>

#include "core/error.h"
#include "http/client.h"

/* ---- Test server ----------------------------------------------------------- */

typedef enum {
    SERVER_RESPOND, /* answer each request with server->response, except paths
                       starting with /never, which are never answered */
    SERVER_SILENT,  /* read requests, never answer */
    SERVER_HANG_UP, /* close the connection when a request arrives */
} server_mode_t;

typedef struct server_s server_t;

typedef struct conn_s {
    uv_tcp_t tcp;
    server_t *server;
    char buf[16384];
    size_t len;
    struct conn_s *prev, *next;
} conn_t;

struct server_s {
    uv_tcp_t listener;
    int port;
    server_mode_t mode;
    const char *response;
    int accepted;
    int open_conns;
    int peak_conns;
    int requests;
    char last_request[4096];
    conn_t *conns;
};

static const char RESPONSE_OK[] = "HTTP/1.1 200 OK\r\n"
                                  "Content-Type: text/plain\r\n"
                                  "X-Signature:  abc=  \r\n"
                                  "Content-Length: 7\r\n"
                                  "\r\n"
                                  "success";

static void conn_closed_cb(uv_handle_t *h)
{
    conn_t *c = h->data;
    server_t *s = c->server;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->open_conns--;
    free(c);
}

static void conn_close(conn_t *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, conn_closed_cb);
}

static void write_done_cb(uv_write_t *w, int status)
{
    free(w);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn_t *c = h->data;
    buf->base = c->buf + c->len;
    buf->len = sizeof c->buf - c->len;
}

/* Length of the first complete request in buf (headers and Content-Length
 * body), or 0 when more bytes are needed. */
static size_t request_length(const char *buf, size_t len)
{
    const char *end = NULL;
    for (size_t i = 0; i + 4 <= len; i++) {
        if (memcmp(buf + i, "\r\n\r\n", 4) == 0) {
            end = buf + i + 4;
            break;
        }
    }
    if (!end)
        return 0;
    size_t body = 0;
    for (const char *p = buf; p < end; p++) {
        if ((p == buf || p[-1] == '\n') && strncasecmp(p, "Content-Length:", 15) == 0) {
            body = strtoul(p + 15, NULL, 10);
            break;
        }
    }
    size_t total = (size_t)(end - buf) + body;
    return total <= len ? total : 0;
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = stream->data;
    server_t *s = c->server;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    c->len += (size_t)nread;
    size_t n;
    while ((n = request_length(c->buf, c->len)) > 0) {
        s->requests++;
        size_t keep = n < sizeof s->last_request - 1 ? n : sizeof s->last_request - 1;
        memcpy(s->last_request, c->buf, keep);
        s->last_request[keep] = '\0';
        memmove(c->buf, c->buf + n, c->len - n);
        c->len -= n;
        if (s->mode == SERVER_HANG_UP) {
            conn_close(c);
            return;
        }
        if (s->mode == SERVER_RESPOND && !strstr(s->last_request, " /never")) {
            uv_write_t *w = malloc(sizeof *w);
            assert_non_null(w);
            uv_buf_t out = uv_buf_init((char *)s->response, (unsigned)strlen(s->response));
            assert_int_equal(uv_write(w, stream, &out, 1, write_done_cb), 0);
        }
    }
    assert_true(c->len < sizeof c->buf);
}

static void accept_cb(uv_stream_t *listener, int status)
{
    server_t *s = listener->data;
    assert_int_equal(status, 0);
    conn_t *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->server = s;
    assert_int_equal(uv_tcp_init(listener->loop, &c->tcp), 0);
    c->tcp.data = c;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->accepted++;
    s->open_conns++;
    if (s->open_conns > s->peak_conns)
        s->peak_conns = s->open_conns;
    assert_int_equal(uv_accept(listener, (uv_stream_t *)&c->tcp), 0);
    assert_int_equal(uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb), 0);
}

static void server_start(uv_loop_t *loop, server_t *s)
{
    struct sockaddr_in addr;
    struct sockaddr_storage name;
    int namelen = sizeof name;
    memset(s, 0, sizeof *s);
    s->mode = SERVER_RESPOND;
    s->response = RESPONSE_OK;
    assert_int_equal(uv_tcp_init(loop, &s->listener), 0);
    s->listener.data = s;
    assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &addr), 0);
    assert_int_equal(uv_tcp_bind(&s->listener, (const struct sockaddr *)&addr, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&s->listener, 256, accept_cb), 0);
    assert_int_equal(uv_tcp_getsockname(&s->listener, (struct sockaddr *)&name, &namelen), 0);
    s->port = ntohs(((struct sockaddr_in *)&name)->sin_port);
}

static void server_stop(server_t *s)
{
    for (conn_t *c = s->conns; c; c = c->next)
        conn_close(c);
    uv_close((uv_handle_t *)&s->listener, NULL);
}

/* ---- Fixture ------------------------------------------------------------------- */

typedef struct {
    uv_loop_t loop;
    server_t server;
    pc_http_client_t *client;
    uv_timer_t watchdog;
    bool watchdog_fired;
    int client_closed;
    int expected; /* completions to wait for */
    int completed;
    /* Memory that callbacks write to, freed only after teardown has run the
     * loop: if an assertion fails mid-test, the cancellations at close must
     * not write to a test function's dead stack frame. */
    void *scratch[4];
} fixture_t;

/* One completion as seen by a callback, copied out of the response. */
typedef struct {
    fixture_t *fx;
    int calls;
    int status;
    pc_http_error_t error;
    char body[64];
    size_t body_len;
    char signature[16];
    uint64_t elapsed_ms;
} result_t;

static void *scratch(fixture_t *fx, size_t size)
{
    for (size_t i = 0; i < sizeof fx->scratch / sizeof fx->scratch[0]; i++) {
        if (!fx->scratch[i]) {
            fx->scratch[i] = calloc(1, size);
            assert_non_null(fx->scratch[i]);
            return fx->scratch[i];
        }
    }
    fail_msg("out of scratch slots");
    return NULL;
}

static void client_closed_cb(void *data)
{
    fixture_t *fx = data;
    fx->client_closed++;
}

static int fixture_setup_with(void **state, const pc_http_client_opts_t *opts)
{
    fixture_t *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    assert_int_equal(uv_loop_init(&fx->loop), 0);
    server_start(&fx->loop, &fx->server);
    fx->client = pc_http_client_new(&fx->loop, opts);
    assert_non_null(fx->client);
    assert_int_equal(uv_timer_init(&fx->loop, &fx->watchdog), 0);
    fx->watchdog.data = fx;
    *state = fx;
    return 0;
}

static int fixture_setup(void **state)
{
    return fixture_setup_with(state, NULL);
}

static int fixture_setup_public_only(void **state)
{
    pc_http_client_opts_t opts = {.public_only = true};
    return fixture_setup_with(state, &opts);
}

static int fixture_setup_small_limits(void **state)
{
    pc_http_client_opts_t opts = {.max_host_connections = 4, .max_response_bytes = 4};
    return fixture_setup_with(state, &opts);
}

static int fixture_teardown(void **state)
{
    fixture_t *fx = *state;
    if (fx->client)
        pc_http_client_close(fx->client, client_closed_cb, fx);
    fx->client = NULL;
    server_stop(&fx->server);
    uv_close((uv_handle_t *)&fx->watchdog, NULL);
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(fx->client_closed, 1);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    for (size_t i = 0; i < sizeof fx->scratch / sizeof fx->scratch[0]; i++)
        free(fx->scratch[i]);
    free(fx);
    return 0;
}

static void watchdog_cb(uv_timer_t *t)
{
    fixture_t *fx = t->data;
    fx->watchdog_fired = true;
    uv_stop(t->loop);
}

/* Runs the loop until fx->expected completions or limit_ms, whichever first. */
static void run_until_done(fixture_t *fx, uint64_t limit_ms)
{
    fx->watchdog_fired = false;
    assert_int_equal(uv_timer_start(&fx->watchdog, watchdog_cb, limit_ms, 0), 0);
    if (fx->completed < fx->expected)
        uv_run(&fx->loop, UV_RUN_DEFAULT);
    uv_timer_stop(&fx->watchdog);
    assert_false(fx->watchdog_fired);
    assert_int_equal(fx->completed, fx->expected);
}

/* Runs the loop for ms milliseconds. */
static void run_for(fixture_t *fx, uint64_t ms)
{
    assert_int_equal(uv_timer_start(&fx->watchdog, watchdog_cb, ms, 0), 0);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_true(fx->watchdog_fired);
}

static void record_cb(void *data, const pc_http_response_t *resp)
{
    result_t *res = data;
    fixture_t *fx = res->fx;
    size_t sig_len = 0;
    res->calls++;
    res->status = resp->status;
    res->error = resp->error;
    res->elapsed_ms = resp->elapsed_ms;
    res->body_len = resp->body_len;
    assert_non_null(resp->body);
    assert_non_null(resp->error_message);
    assert_true(resp->body_len < sizeof res->body);
    memcpy(res->body, resp->body, resp->body_len);
    res->body[resp->body_len] = '\0';
    const char *sig = pc_http_response_header(resp, "x-signature", &sig_len);
    if (sig) {
        assert_true(sig_len < sizeof res->signature);
        memcpy(res->signature, sig, sig_len);
        res->signature[sig_len] = '\0';
    }
    if (++fx->completed == fx->expected)
        uv_stop(&fx->loop);
}

static char *url_for(fixture_t *fx, const char *path, char *buf, size_t size)
{
    snprintf(buf, size, "http://127.0.0.1:%d%s", fx->server.port, path);
    return buf;
}

static int post(fixture_t *fx, const char *url, const char *body, uint32_t timeout_ms,
                pc_http_done_cb cb, void *data)
{
    static const char *const headers[] = {"Content-Type: application/json", "X-Test: 1"};
    pc_http_request_t req = {
        .method = "POST",
        .url = url,
        .headers = headers,
        .header_count = 2,
        .body = body,
        .body_len = strlen(body),
        .timeout_ms = timeout_ms,
    };
    return pc_http_client_request(fx->client, &req, cb, data);
}

/* ---- Tests ------------------------------------------------------------------------ */

static void test_post_delivers_status_body_and_headers(void **state)
{
    fixture_t *fx = *state;
    char url[128];
    result_t *res = scratch(fx, sizeof *res);
    res->fx = fx;
    fx->expected = 1;
    assert_int_equal(post(fx, url_for(fx, "/notify?a=1", url, sizeof url), "{\"event_id\":\"e1\"}",
                          2000, record_cb, res),
                     0);
    assert_int_equal(pc_http_client_pending(fx->client), 1);
    /* The callback never runs inside the call that accepted the request. */
    assert_int_equal(res->calls, 0);
    run_until_done(fx, 5000);
    assert_int_equal(res->calls, 1);
    assert_int_equal(res->error, PC_HTTP_OK);
    assert_int_equal(res->status, 200);
    assert_string_equal(res->body, "success");
    assert_int_equal(res->body_len, 7);
    assert_string_equal(res->signature, "abc=");
    assert_int_equal(pc_http_client_pending(fx->client), 0);

    /* What the server saw: method, path with query, our headers, the body,
     * and no Expect: 100-continue round trip. */
    const char *req = fx->server.last_request;
    assert_true(strncmp(req, "POST /notify?a=1 HTTP/1.1\r\n", 27) == 0);
    assert_non_null(strstr(req, "\r\nX-Test: 1\r\n"));
    assert_non_null(strstr(req, "\r\nContent-Type: application/json\r\n"));
    assert_non_null(strstr(req, "\r\nContent-Length: 17\r\n"));
    assert_non_null(strstr(req, "\r\nUser-Agent: paycore\r\n"));
    assert_null(strstr(req, "Expect:"));
    assert_non_null(strstr(req, "\r\n\r\n{\"event_id\":\"e1\"}"));
}

/* The test binary is linked with -Wl,--wrap=free (tests/CMakeLists.txt):
 * while g_scan_freed is set, every block our code frees is searched for a
 * card number. */
void __real_free(void *p);
void __wrap_free(void *p);
size_t malloc_usable_size(void *p);
static const char CARD_PAN[] = "4242424242424242";
static bool g_scan_freed;
static int g_freed_with_pan;

void __wrap_free(void *p)
{
    if (p && g_scan_freed) {
        size_t n = malloc_usable_size(p);
        const char *b = p;
        for (size_t i = 0; i + sizeof CARD_PAN - 1 <= n; i++)
            if (memcmp(b + i, CARD_PAN, sizeof CARD_PAN - 1) == 0) {
                g_freed_with_pan++;
                break;
            }
    }
    __real_free(p);
}

/* A channel's pay body carries the card number and CVV through memory only:
 * the client's copy is wiped before it is freed. */
static void test_request_body_is_wiped_before_it_is_freed(void **state)
{
    fixture_t *fx = *state;
    char url[128];
    result_t *res = scratch(fx, sizeof *res);
    res->fx = fx;
    fx->expected = 1;
    g_freed_with_pan = 0;
    g_scan_freed = true;
    assert_int_equal(post(fx, url_for(fx, "/pay", url, sizeof url),
                          "{\"card\":{\"pan\":\"4242424242424242\",\"cvv\":\"123\"}}", 2000,
                          record_cb, res),
                     0);
    run_until_done(fx, 5000);
    g_scan_freed = false;
    assert_int_equal(res->calls, 1);
    assert_int_equal(res->status, 200);
    /* The request went out whole... */
    assert_non_null(strstr(fx->server.last_request, CARD_PAN));
    /* ...and no block freed meanwhile held the number. */
    assert_int_equal(g_freed_with_pan, 0);
}

static void test_get_and_error_status_are_delivered(void **state)
{
    fixture_t *fx = *state;
    char url[128];
    result_t *res = scratch(fx, sizeof *res);
    res->fx = fx;
    fx->server.response = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy";
    fx->expected = 1;
    pc_http_request_t req = {.url = url_for(fx, "/v1/query", url, sizeof url)};
    assert_int_equal(pc_http_client_request(fx->client, &req, record_cb, res), 0);
    run_until_done(fx, 5000);
    assert_int_equal(res->error, PC_HTTP_OK);
    assert_int_equal(res->status, 503);
    assert_string_equal(res->body, "busy");
    assert_true(strncmp(fx->server.last_request, "GET /v1/query HTTP/1.1\r\n", 24) == 0);
}

static void test_silent_server_is_reported_as_timeout_within_bounds(void **state)
{
    fixture_t *fx = *state;
    char url[128];
    result_t *res = scratch(fx, sizeof *res);
    res->fx = fx;
    fx->server.mode = SERVER_SILENT;
    fx->expected = 1;
    uint64_t start = uv_hrtime();
    assert_int_equal(post(fx, url_for(fx, "/slow", url, sizeof url), "{}", 200, record_cb, res), 0);
    run_until_done(fx, 5000);
    uint64_t wall_ms = (uv_hrtime() - start) / 1000000u;
    assert_int_equal(res->calls, 1);
    assert_int_equal(res->error, PC_HTTP_ETIMEOUT);
    assert_int_equal(res->status, 0);
    assert_int_equal(res->body_len, 0);
    assert_true(res->elapsed_ms >= 195);
    assert_true(res->elapsed_ms < 1500);
    assert_true(wall_ms < 1500);
    assert_int_equal(fx->server.requests, 1);
}

static void test_closed_port_is_reported_as_connection_refused(void **state)
{
    fixture_t *fx = *state;
    /* A port that was just free: bind it, note it, close it. */
    uv_tcp_t probe;
    struct sockaddr_in addr;
    struct sockaddr_storage name;
    int namelen = sizeof name;
    assert_int_equal(uv_tcp_init(&fx->loop, &probe), 0);
    assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &addr), 0);
    assert_int_equal(uv_tcp_bind(&probe, (const struct sockaddr *)&addr, 0), 0);
    assert_int_equal(uv_tcp_getsockname(&probe, (struct sockaddr *)&name, &namelen), 0);
    int port = ntohs(((struct sockaddr_in *)&name)->sin_port);
    uv_close((uv_handle_t *)&probe, NULL);

    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/notify", port);
    result_t *res = scratch(fx, sizeof *res);
    res->fx = fx;
    fx->expected = 1;
    assert_int_equal(post(fx, url, "{}", 2000, record_cb, res), 0);
    run_until_done(fx, 5000);
    assert_int_equal(res->error, PC_HTTP_ECONNREFUSED);
    assert_int_equal(res->status, 0);
    assert_true(res->elapsed_ms < 1000);
}

/* public_only: no connection to loopback, private, link-local, unique-local
 * or reserved addresses, however they are written (the test server on
 * 127.0.0.1 is never reached); each fails fast as EBLOCKED, not as a
 * timeout. */
static void test_public_only_refuses_local_and_private_addresses(void **state)
{
    fixture_t *fx = *state;
    const char *hosts[] = {"127.0.0.1",
                           "localhost",
                           "10.1.2.3",
                           "172.16.0.9",
                           "192.168.1.1",
                           "169.254.169.254",
                           "100.64.0.1",
                           "0.0.0.0",
                           "[::1]",
                           "[fe80::1]",
                           "[fd00::1]",
                           "[fec0::1]",
                           "[::ffff:10.0.0.1]",
                           "[::ffff:127.0.0.1]",
                           "[::ffff:0:7f00:1]",
                           "[64:ff9b::a00:1]",
                           "[64:ff9b:1::a00:1]",
                           "[64:ff9b:1:a00:0:100:808:808]",
                           "[2002:7f00:1::]",
                           "224.0.0.1",
                           "2130706433"};
    size_t n = sizeof hosts / sizeof hosts[0];
    result_t *res = scratch(fx, n * sizeof *res);
    fx->expected = (int)n;
    for (size_t i = 0; i < n; i++) {
        char url[128];
        snprintf(url, sizeof url, "http://%s:%d/notify", hosts[i], fx->server.port);
        res[i].fx = fx;
        assert_int_equal(post(fx, url, "{}", 3000, record_cb, &res[i]), 0);
    }
    run_until_done(fx, 8000);
    for (size_t i = 0; i < n; i++) {
        if (res[i].error != PC_HTTP_EBLOCKED)
            fail_msg("%s: error %s, not address_not_public", hosts[i],
                     pc_http_strerror(res[i].error));
        assert_true(res[i].elapsed_ms < 1000);
    }
    assert_int_equal(fx->server.requests, 0);
}

static void test_hang_up_without_response_is_a_receive_error(void **state)
{
    fixture_t *fx = *state;
    char url[128];
    result_t *res = scratch(fx, sizeof *res);
    res->fx = fx;
    fx->server.mode = SERVER_HANG_UP;
    fx->expected = 1;
    assert_int_equal(post(fx, url_for(fx, "/", url, sizeof url), "{}", 2000, record_cb, res), 0);
    run_until_done(fx, 5000);
    assert_int_equal(res->error, PC_HTTP_ERECV);
    assert_int_equal(res->status, 0);
}

static void test_hundred_concurrent_requests_complete_within_host_cap(void **state)
{
    fixture_t *fx = *state;
    enum { N = 100 };
    char url[128];
    result_t *res = scratch(fx, N * sizeof *res);
    fx->server.response = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    fx->expected = N;
    url_for(fx, "/notify", url, sizeof url);
    for (int i = 0; i < N; i++) {
        char body[32];
        snprintf(body, sizeof body, "{\"n\":%d}", i);
        res[i].fx = fx;
        assert_int_equal(post(fx, url, body, 10000, record_cb, &res[i]), 0);
    }
    assert_int_equal(pc_http_client_pending(fx->client), N);
    run_until_done(fx, 20000);
    for (int i = 0; i < N; i++) {
        assert_int_equal(res[i].calls, 1);
        assert_int_equal(res[i].error, PC_HTTP_OK);
        assert_int_equal(res[i].status, 200);
        assert_string_equal(res[i].body, "ok");
    }
    assert_int_equal(fx->server.requests, N);
    /* The per-host cap (4 in this fixture) holds, and connections are
     * reused rather than opened per request. */
    assert_true(fx->server.peak_conns <= 4);
    assert_true(fx->server.accepted <= 4);
}

typedef struct {
    fixture_t *fx;
    char url[128];
    int remaining;
    int calls;
} chain_t;

static void chain_cb(void *data, const pc_http_response_t *resp)
{
    chain_t *ch = data;
    ch->calls++;
    assert_int_equal(resp->error, PC_HTTP_OK);
    assert_int_equal(resp->status, 200);
    /* Starting the next request from inside a completion is allowed. */
    if (--ch->remaining > 0)
        assert_int_equal(post(ch->fx, ch->url, "{}", 2000, chain_cb, ch), 0);
    else
        uv_stop(&ch->fx->loop);
}

static void test_sequential_requests_reuse_one_connection(void **state)
{
    fixture_t *fx = *state;
    chain_t *ch = scratch(fx, sizeof *ch);
    ch->fx = fx;
    ch->remaining = 5;
    url_for(fx, "/again", ch->url, sizeof ch->url);
    assert_int_equal(post(fx, ch->url, "{}", 2000, chain_cb, ch), 0);
    assert_int_equal(uv_timer_start(&fx->watchdog, watchdog_cb, 5000, 0), 0);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_false(fx->watchdog_fired);
    assert_int_equal(ch->calls, 5);
    assert_int_equal(fx->server.requests, 5);
    assert_int_equal(fx->server.accepted, 1);
}

static void test_response_over_limit_is_refused(void **state)
{
    fixture_t *fx = *state;
    char url[128];
    result_t *res = scratch(fx, sizeof *res);
    res->fx = fx;
    fx->expected = 1;
    /* This fixture allows 4 bytes; the server sends 7, with a Content-Length. */
    assert_int_equal(post(fx, url_for(fx, "/", url, sizeof url), "{}", 2000, record_cb, res), 0);
    run_until_done(fx, 5000);
    assert_int_equal(res->error, PC_HTTP_ETOOLARGE);
    assert_int_equal(res->status, 0);
    assert_int_equal(res->body_len, 0);

    /* The same without Content-Length: the write callback enforces it. */
    result_t *res2 = scratch(fx, sizeof *res2);
    res2->fx = fx;
    fx->server.response = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                          "7\r\nsuccess\r\n0\r\n\r\n";
    fx->expected = 2;
    assert_int_equal(post(fx, url, "{}", 2000, record_cb, res2), 0);
    run_until_done(fx, 5000);
    assert_int_equal(res2->error, PC_HTTP_ETOOLARGE);
}

/* A request may bound its own response below the client's (a channel's
 * answer against the client's 16 MiB for files); a bound above the
 * client's does not lift it. */
static void test_a_request_bounds_its_own_response(void **state)
{
    fixture_t *fx = *state;
    char url[128];
    url_for(fx, "/", url, sizeof url);
    size_t limits[] = {4, 0, 64 * 1024 * 1024};
    for (int i = 0; i < 3; i++) {
        result_t *res = scratch(fx, sizeof *res);
        res->fx = fx;
        fx->expected = i + 1;
        pc_http_request_t req = {.method = "POST",
                                 .url = url,
                                 .body = "{}",
                                 .body_len = 2,
                                 .max_response_bytes = limits[i]};
        assert_int_equal(pc_http_client_request(fx->client, &req, record_cb, res), 0);
        run_until_done(fx, 5000);
        if (i == 0) {
            assert_int_equal(res->error, PC_HTTP_ETOOLARGE);
        } else {
            assert_int_equal(res->error, PC_HTTP_OK);
            assert_string_equal(res->body, "success");
        }
    }
}

static void never_called_cb(void *data, const pc_http_response_t *resp)
{
    fail_msg("callback of a refused request was called");
}

static void test_refused_request_never_calls_its_callback(void **state)
{
    fixture_t *fx = *state;
    char url[128];
    url_for(fx, "/", url, sizeof url);
    static const char *const injected[] = {"X-A: 1\r\nX-B: 2"};
    static const char *const no_colon[] = {"X-A 1"};
    static const char *const bad_name[] = {"X A: 1"};
    pc_http_request_t req = {.method = "POST", .url = url};

    req.url = "ftp://127.0.0.1/x";
    assert_int_equal(pc_http_client_request(fx->client, &req, never_called_cb, NULL), PC_EINVAL);
    req.url = "file:///etc/passwd";
    assert_int_equal(pc_http_client_request(fx->client, &req, never_called_cb, NULL), PC_EINVAL);
    req.url = "not a url";
    assert_int_equal(pc_http_client_request(fx->client, &req, never_called_cb, NULL), PC_EINVAL);
    req.url = NULL;
    assert_int_equal(pc_http_client_request(fx->client, &req, never_called_cb, NULL), PC_EINVAL);
    req.url = url;
    req.method = "GE T";
    assert_int_equal(pc_http_client_request(fx->client, &req, never_called_cb, NULL), PC_EINVAL);
    req.method = "POST";
    req.headers = injected;
    req.header_count = 1;
    assert_int_equal(pc_http_client_request(fx->client, &req, never_called_cb, NULL), PC_EINVAL);
    req.headers = no_colon;
    assert_int_equal(pc_http_client_request(fx->client, &req, never_called_cb, NULL), PC_EINVAL);
    req.headers = bad_name;
    assert_int_equal(pc_http_client_request(fx->client, &req, never_called_cb, NULL), PC_EINVAL);
    req.headers = NULL;
    req.header_count = 0;
    req.body_len = 3; /* with a NULL body */
    assert_int_equal(pc_http_client_request(fx->client, &req, never_called_cb, NULL), PC_EINVAL);
    req.body_len = 0;
    assert_int_equal(pc_http_client_request(fx->client, &req, NULL, NULL), PC_EINVAL);

    assert_int_equal(pc_http_client_pending(fx->client), 0);
    run_for(fx, 50);
    assert_int_equal(fx->server.accepted, 0);
}

typedef struct {
    fixture_t *fx;
    int calls;
    pc_http_error_t error;
    int request_rc; /* what submitting from inside the callback returned */
} cancel_t;

static void cancel_cb(void *data, const pc_http_response_t *resp)
{
    cancel_t *c = data;
    c->calls++;
    c->error = resp->error;
    assert_int_equal(resp->status, 0);
    /* The client refuses new work while it shuts down. */
    c->request_rc = post(c->fx, "http://127.0.0.1:1/", "{}", 100, never_called_cb, NULL);
}

static void test_close_cancels_in_flight_requests_exactly_once(void **state)
{
    fixture_t *fx = *state;
    enum { N = 10 };
    char url[128];
    cancel_t *c = scratch(fx, N * sizeof *c);
    fx->server.mode = SERVER_SILENT;
    url_for(fx, "/never", url, sizeof url);
    for (int i = 0; i < N; i++) {
        c[i] = (cancel_t){.fx = fx};
        assert_int_equal(post(fx, url, "{}", 10000, cancel_cb, &c[i]), 0);
    }
    /* Let some of them reach the server; the rest wait behind the per-host
     * cap (4 by default), which a slow merchant cannot exceed. */
    run_for(fx, 100);
    assert_true(fx->server.requests >= 1);
    assert_true(fx->server.requests <= 4);
    assert_true(fx->server.peak_conns <= 4);
    for (int i = 0; i < N; i++)
        assert_int_equal(c[i].calls, 0);

    pc_http_client_close(fx->client, client_closed_cb, fx);
    fx->client = NULL;
    for (int i = 0; i < N; i++) {
        assert_int_equal(c[i].calls, 1);
        assert_int_equal(c[i].error, PC_HTTP_ECANCELLED);
        assert_int_equal(c[i].request_rc, PC_ECLOSED);
    }
    /* The close callback comes from the loop, never from inside close. */
    assert_int_equal(fx->client_closed, 0);
    run_for(fx, 50);
    assert_int_equal(fx->client_closed, 1);
    for (int i = 0; i < N; i++)
        assert_int_equal(c[i].calls, 1);
}

typedef struct {
    fixture_t *fx;
    int calls[3];
    pc_http_error_t errors[3];
    int total;
} closer_t;

typedef struct {
    closer_t *closer;
    int index;
} closer_arg_t;

static void close_from_callback_cb(void *data, const pc_http_response_t *resp)
{
    closer_arg_t *a = data;
    closer_t *cl = a->closer;
    cl->calls[a->index]++;
    cl->errors[a->index] = resp->error;
    /* The first completion shuts the client down from inside its callback;
     * the others are cancelled only after this callback returns. */
    if (cl->total++ == 0) {
        assert_int_equal(resp->error, PC_HTTP_OK);
        pc_http_client_close(cl->fx->client, client_closed_cb, cl->fx);
        assert_int_equal(cl->total, 1);
        cl->fx->client = NULL;
        uv_stop(&cl->fx->loop);
    }
}

static void test_close_from_a_completion_callback_cancels_the_rest(void **state)
{
    fixture_t *fx = *state;
    char url[128];
    closer_t *cl = scratch(fx, sizeof *cl);
    closer_arg_t *args = scratch(fx, 3 * sizeof *args);
    cl->fx = fx;
    static const char *const paths[] = {"/never/1", "/answered", "/never/2"};
    for (int i = 0; i < 3; i++) {
        args[i] = (closer_arg_t){.closer = cl, .index = i};
        assert_int_equal(post(fx, url_for(fx, paths[i], url, sizeof url), "{}", 10000,
                              close_from_callback_cb, &args[i]),
                         0);
    }
    assert_int_equal(uv_timer_start(&fx->watchdog, watchdog_cb, 5000, 0), 0);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_false(fx->watchdog_fired);
    assert_int_equal(cl->total, 3);
    assert_int_equal(cl->calls[1], 1);
    assert_int_equal(cl->errors[1], PC_HTTP_OK);
    assert_int_equal(cl->calls[0], 1);
    assert_int_equal(cl->errors[0], PC_HTTP_ECANCELLED);
    assert_int_equal(cl->calls[2], 1);
    assert_int_equal(cl->errors[2], PC_HTTP_ECANCELLED);
    run_for(fx, 20);
    assert_int_equal(fx->client_closed, 1);
    assert_int_equal(cl->total, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_post_delivers_status_body_and_headers, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_request_body_is_wiped_before_it_is_freed,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_public_only_refuses_local_and_private_addresses,
                                        fixture_setup_public_only, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_get_and_error_status_are_delivered, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_silent_server_is_reported_as_timeout_within_bounds,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_closed_port_is_reported_as_connection_refused,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_hang_up_without_response_is_a_receive_error,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_hundred_concurrent_requests_complete_within_host_cap,
                                        fixture_setup_small_limits, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_sequential_requests_reuse_one_connection,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_response_over_limit_is_refused,
                                        fixture_setup_small_limits, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_a_request_bounds_its_own_response, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_refused_request_never_calls_its_callback,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_close_cancels_in_flight_requests_exactly_once,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_close_from_a_completion_callback_cancels_the_rest,
                                        fixture_setup, fixture_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
