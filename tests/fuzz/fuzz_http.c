/* Fuzz target: HTTP/1.1 request parsing in http/server.c, through the real
 * server. A server runs on a libuv loop in this process with a few routes
 * whose handler reads everything a handler can read (method, path, target,
 * query parameters, headers, path parameters, body, body as JSON) and answers
 * at once; each input is written to a fresh loopback connection, the write
 * side is shut down, and the loop runs until the server has closed the
 * connection. Checked beyond "does not crash" (ASan/UBSan): every answer the
 * server sends starts with a status line, and the server holds no
 * connection once the input has been handled. */
#include "core/log.h"
#include "http/server.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static uv_loop_t loop;
static pc_router_t *router;
static pc_http_server_t *server;
static int port;

static void handler(pc_http_req_t *req, void *data)
{
    (void)data;
    size_t n = 0;
    volatile size_t sink = strlen(pc_http_req_method(req)) + strlen(pc_http_req_path(req)) +
                           strlen(pc_http_req_target(req)) + strlen(pc_http_req_query(req));
    const char *q = pc_http_req_query_param(req, "out_trade_no");
    if (q)
        sink += strlen(q);
    const char *names[] = {"Host",    "Content-Type",    "X-Merchant-Id", "X-Signature",
                           "X-Nonce", "Idempotency-Key", "X-Request-Id"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *h = pc_http_req_header(req, names[i]);
        if (h)
            sink += strlen(h);
    }
    const char *tn = pc_http_req_param(req, "trade_no");
    if (tn)
        sink += strlen(tn);
    pc_http_req_body(req, &n);
    sink += n;
    json_t *j = pc_http_req_json(req);
    if (j)
        sink += json_object_size(j);
    (void)sink;
    pc_http_respond(req, 200, "text/plain", "ok", 2);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    pc_log_set_level(PC_LOG_ERROR);
    uv_loop_init(&loop);
    router = pc_router_new();
    pc_router_add(router, "GET", "/healthz", handler, NULL);
    pc_router_add(router, "GET", "/v1/trades", handler, NULL);
    pc_router_add(router, "GET", "/v1/trades/{trade_no}", handler, NULL);
    pc_router_add(router, "POST", "/v1/trades", handler, NULL);
    pc_router_add(router, "POST", "/v1/trades/{trade_no}/close", handler, NULL);
    pc_http_server_opts_t o = {.host = "127.0.0.1",
                               .port = 0,
                               .max_connections = 64,
                               .max_header_bytes = 8192,
                               .max_body_bytes = 16384,
                               .idle_timeout_ms = 5000,
                               .request_timeout_ms = 5000,
                               .access_log = 0,
                               .name = "fuzz"};
    server = pc_http_server_start(&loop, &o, router);
    if (!server)
        abort();
    port = pc_http_server_port(server);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = -1;
    /* A connect can fail for the machine's reasons (no ephemeral port free
     * for a moment): try again, letting the server's loop run meanwhile. */
    for (int tries = 0; fd < 0 && tries < 200; tries++) {
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
            if (tries == 199)
                fprintf(stderr, "fuzz_http: connect: %s\n", strerror(errno));
            close(fd);
            fd = -1;
            uv_run(&loop, UV_RUN_NOWAIT);
            usleep(5000);
        }
    }
    if (fd < 0)
        abort();
    /* Lingering 0: the close sends a reset, so no TIME_WAIT piles up. */
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    /* Most inputs end with a reset once the server has gone quiet: a client
     * that sends FIN first keeps its port in TIME_WAIT for a minute, and at
     * thousands of inputs a second that runs out of ports. One in 64 ends
     * with a half close instead, so the end-of-input paths run too; the
     * server must then close the connection itself. */
    int half_close = size % 64 == 0;
    size_t off = 0;
    char in[65536], head[10] = "";
    size_t got = 0, total = 0;
    int eof = 0, idle = 0;
    for (int rounds = 0; !eof && rounds < 100000; rounds++) {
        int progress = 0;
        if (off < size) {
            ssize_t w = write(fd, data + off, size - off);
            if (w > 0) {
                off += (size_t)w;
                progress = 1;
            } else if (w < 0 && errno != EAGAIN) {
                off = size; /* the server closed early: fine */
            }
            if (off == size && half_close)
                shutdown(fd, SHUT_WR);
        } else if (size == 0 && rounds == 0 && half_close) {
            shutdown(fd, SHUT_WR);
        }
        uv_run(&loop, UV_RUN_NOWAIT);
        struct pollfd pf = {fd, POLLIN, 0};
        /* Busy for the first rounds (most inputs finish there), then wait a little. */
        if (poll(&pf, 1, rounds < 64 ? 0 : 1) > 0) {
            ssize_t r = read(fd, in + got, sizeof in - 1 - got);
            if (r > 0) {
                if (total < 9)
                    memcpy(head + total, in + got, (size_t)r < 9 - total ? (size_t)r : 9 - total);
                got += (size_t)r;
                total += (size_t)r;
                progress = 1;
            } else if (r == 0 || errno != EAGAIN) {
                eof = 1;
            }
            if (got == sizeof in - 1)
                got = 0; /* long answers: only the start is checked */
        }
        idle = progress ? 0 : idle + 1;
        /* Quiet for a while (the loop ran each round): the server is done. */
        if (!half_close && off == size && idle >= 12 && rounds >= 24)
            break;
    }
    if (half_close && !eof)
        abort(); /* the server never closed the connection */
    if (total && strncmp(head, "HTTP/1.1 ", total < 9 ? total : 9) != 0)
        abort();
    close(fd);
    for (int i = 0; i < 100 && pc_http_server_connections(server) > 0; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    if (pc_http_server_connections(server) != 0)
        abort();
    return 0;
}
