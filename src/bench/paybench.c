/* paybench: a load generator for paycore. Keeps N keep-alive connections
 * busy with signed merchant requests (or plain GETs), then prints throughput,
 * latency percentiles and answers by status.
 *
 *   paybench --port 8080 --scenario healthz --connections 64 --duration 10
 *   paybench --port 8080 --scenario signed-get --merchant M --secret S --path
 * /v1/trades?out_trade_no=x paybench --port 8080 --scenario create-trade --merchant M --secret S
 *
 * One thread, one libuv loop; the signing cost is part of the client's work. */
#include "auth/sign.h"

#include <getopt.h>
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#define MAX_LAT_US 10000000

typedef struct {
    const char *host;
    int port;
    int connections;
    double duration;
    const char *scenario;
    const char *merchant;
    const char *secret;
    const char *path;
    long rate; /* requests per second in total; 0 = as fast as possible */
} opts_t;

typedef struct conn {
    uv_tcp_t tcp;
    uv_connect_t creq;
    http_parser parser;
    uint64_t sent_ns;
    int busy;
    char *out;
    int idx;
} conn_t;

static opts_t o = {"127.0.0.1", 8080, 64, 10, "healthz", NULL, NULL, "/healthz", 0};
static uv_loop_t *loop;
static conn_t *conns;
static uint64_t start_ns, end_ns;
static int stopping;
static uint64_t done, errors_conn, seq;
static uint64_t by_status[600];
static uint32_t *lat_hist; /* microseconds, capped */
static uint64_t lat_max;
static http_parser_settings settings;
static char run_id[17];

static uint64_t now_ns(void)
{
    return uv_hrtime();
}

static void send_next(conn_t *c);

static void record(uint64_t us, int status)
{
    if (us >= MAX_LAT_US)
        us = MAX_LAT_US - 1;
    lat_hist[us]++;
    if (us > lat_max)
        lat_max = us;
    if (status >= 0 && status < 600)
        by_status[status]++;
    done++;
}

static int on_complete(http_parser *p)
{
    conn_t *c = p->data;
    record((now_ns() - c->sent_ns) / 1000, p->status_code);
    c->busy = 0;
    return 0;
}

static void alloc_cb(uv_handle_t *h, size_t s, uv_buf_t *b)
{
    (void)h;
    static char buf[65536];
    (void)s;
    *b = uv_buf_init(buf, sizeof buf);
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    conn_t *c = s->data;
    if (n < 0) {
        errors_conn++;
        uv_read_stop(s);
        return;
    }
    http_parser_execute(&c->parser, &settings, b->base, (size_t)n);
    if (HTTP_PARSER_ERRNO(&c->parser) != HPE_OK) {
        errors_conn++;
        uv_read_stop(s);
        return;
    }
    if (!c->busy && !stopping)
        send_next(c);
}

static void write_cb(uv_write_t *w, int status)
{
    free(w->data);
    free(w);
    if (status < 0)
        errors_conn++;
}

/* Builds the next request of the scenario into a malloc'd string. */
static char *build_request(void)
{
    char *req = NULL;
    char body[512] = "";
    const char *method = "GET";
    const char *path = o.path;
    seq++;
    if (!strcmp(o.scenario, "create-trade")) {
        method = "POST";
        path = "/v1/trades";
        snprintf(body, sizeof body,
                 "{\"out_trade_no\":\"B%s%llu\",\"product\":\"INSTANT\",\"amount\":1999,"
                 "\"currency\":\"CNY\",\"subject\":\"bench\",\"buyer_id\":\"u_bench\"}",
                 run_id, (unsigned long long)seq);
    }
    if (!strcmp(o.scenario, "healthz")) {
        if (asprintf(&req, "GET %s HTTP/1.1\r\nHost: bench\r\n\r\n", path) < 0)
            abort();
        return req;
    }
    char ts[24], nonce[33];
    snprintf(ts, sizeof ts, "%lld", (long long)time(NULL));
    pc_random_hex(nonce, sizeof nonce, 16);
    size_t slen;
    char *tosign = pc_sign_request_string(method, path, ts, nonce, body, strlen(body), &slen);
    char *sig = pc_hmac_sha256_sign(o.secret, strlen(o.secret), tosign, slen);
    char idem[64] = "";
    if (!strcmp(method, "POST"))
        snprintf(idem, sizeof idem, "Idempotency-Key: b-%s-%llu\r\n", run_id,
                 (unsigned long long)seq);
    if (asprintf(&req,
                 "%s %s HTTP/1.1\r\nHost: bench\r\nX-Merchant-Id: %s\r\nX-Timestamp: %s\r\n"
                 "X-Nonce: %s\r\nX-Signature: %s\r\n%sContent-Type: application/json\r\n"
                 "Content-Length: %zu\r\n\r\n%s",
                 method, path, o.merchant, ts, nonce, sig, idem, strlen(body), body) < 0)
        abort();
    free(tosign);
    free(sig);
    return req;
}

static void send_next(conn_t *c)
{
    if (now_ns() >= end_ns) {
        stopping = 1;
        uv_stop(loop);
        return;
    }
    char *req = build_request();
    uv_write_t *w = malloc(sizeof *w);
    w->data = req;
    uv_buf_t b = uv_buf_init(req, (unsigned)strlen(req));
    c->busy = 1;
    c->sent_ns = now_ns();
    if (uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, write_cb) < 0) {
        free(req);
        free(w);
        errors_conn++;
    }
}

static void connect_cb(uv_connect_t *r, int status)
{
    conn_t *c = r->data;
    if (status < 0) {
        fprintf(stderr, "paybench: connect: %s\n", uv_strerror(status));
        errors_conn++;
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
    send_next(c);
}

static uint64_t percentile(double q)
{
    uint64_t target = (uint64_t)((double)done * q), acc = 0;
    for (uint64_t us = 0; us < MAX_LAT_US; us++) {
        acc += lat_hist[us];
        if (acc > target)
            return us;
    }
    return lat_max;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"host", 1, NULL, 'H'},     {"port", 1, NULL, 'p'},     {"connections", 1, NULL, 'c'},
        {"duration", 1, NULL, 'd'}, {"scenario", 1, NULL, 's'}, {"merchant", 1, NULL, 'm'},
        {"secret", 1, NULL, 'k'},   {"path", 1, NULL, 'P'},     {NULL, 0, NULL, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'H':
            o.host = optarg;
            break;
        case 'p':
            o.port = atoi(optarg);
            break;
        case 'c':
            o.connections = atoi(optarg);
            break;
        case 'd':
            o.duration = atof(optarg);
            break;
        case 's':
            o.scenario = optarg;
            break;
        case 'm':
            o.merchant = optarg;
            break;
        case 'k':
            o.secret = optarg;
            break;
        case 'P':
            o.path = optarg;
            break;
        default:
            fprintf(stderr, "usage: paybench [--host H] --port P --scenario "
                            "healthz|signed-get|create-trade [--merchant M --secret S] "
                            "[--path P] [--connections N] [--duration S]\n");
            return 2;
        }
    }
    if (strcmp(o.scenario, "healthz") && (!o.merchant || !o.secret)) {
        fprintf(stderr, "paybench: scenario %s needs --merchant and --secret\n", o.scenario);
        return 2;
    }
    pc_random_hex(run_id, sizeof run_id, 4);
    lat_hist = calloc(MAX_LAT_US, sizeof *lat_hist);
    settings.on_message_complete = on_complete;
    loop = uv_default_loop();
    conns = calloc((size_t)o.connections, sizeof *conns);
    struct sockaddr_in addr;
    uv_ip4_addr(o.host, o.port, &addr);
    start_ns = now_ns();
    end_ns = start_ns + (uint64_t)(o.duration * 1e9);
    for (int i = 0; i < o.connections; i++) {
        conn_t *c = &conns[i];
        c->idx = i;
        uv_tcp_init(loop, &c->tcp);
        c->tcp.data = c;
        c->creq.data = c;
        http_parser_init(&c->parser, HTTP_RESPONSE);
        c->parser.data = c;
        uv_tcp_connect(&c->creq, &c->tcp, (struct sockaddr *)&addr, connect_cb);
    }
    uv_run(loop, UV_RUN_DEFAULT);
    double secs = (double)(now_ns() - start_ns) / 1e9;
    printf("scenario %s: %llu requests in %.2f s over %d connections\n", o.scenario,
           (unsigned long long)done, secs, o.connections);
    printf("throughput %.0f req/s\n", (double)done / secs);
    printf("latency p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms\n",
           (double)percentile(0.50) / 1000, (double)percentile(0.90) / 1000,
           (double)percentile(0.99) / 1000, (double)lat_max / 1000);
    printf("answers:");
    for (int s = 0; s < 600; s++)
        if (by_status[s])
            printf(" %d=%llu", s, (unsigned long long)by_status[s]);
    printf("  connection errors=%llu\n", (unsigned long long)errors_conn);
    return 0;
}
