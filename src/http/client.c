#include "http/client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "core/error.h"
#include "core/log.h"

#define DEFAULT_MAX_HOST_CONNECTIONS 4
#define DEFAULT_MAX_TOTAL_CONNECTIONS 64
#define DEFAULT_MAX_RESPONSE_BYTES (1024 * 1024)
#define DEFAULT_TIMEOUT_MS 30000
#define DEFAULT_CONNECT_TIMEOUT_MS 5000
/* Response headers beyond this fail the request; no peer of ours needs more. */
#define MAX_RESPONSE_HEADER_BYTES (64 * 1024)

typedef struct {
    char *data;
    size_t len;
    size_t cap;
} buf_t;

typedef struct pc_http_req_s pc_http_req_t;

/* One accepted request: everything curl needs, owned here until the
 * completion callback has returned. */
struct pc_http_req_s {
    pc_http_client_t *client;
    CURL *easy;
    struct curl_slist *headers;
    char *body; /* our copy; curl reads it in place via CURLOPT_POSTFIELDS */
    size_t body_len;
    buf_t resp_body;
    buf_t resp_headers; /* raw header lines of the latest response only */
    bool too_large;
    size_t max_response; /* this request's bound on the response body */
    bool blocked;        /* public_only refused the address curl was to connect to */
    uint64_t start_ns;
    pc_http_done_cb done_cb;
    void *data;
    pc_http_req_t *prev, *next;
    char errbuf[CURL_ERROR_SIZE];
};

/* One socket curl asked us to watch. Lives until its poll handle's close
 * callback, which may come after curl has forgotten the socket. */
typedef struct sock_ctx_s sock_ctx_t;
struct sock_ctx_s {
    uv_poll_t poll;
    pc_http_client_t *client;
    curl_socket_t fd;
    sock_ctx_t *prev, *next;
};

struct pc_http_client_s {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    pc_http_client_opts_t opts;
    char *user_agent;
    char *proxy;
    pc_http_req_t *reqs; /* in flight */
    size_t pending;
    sock_ctx_t *socks;     /* with an open poll handle */
    unsigned open_handles; /* uv handles whose close callback has not run */
    int dispatching;       /* depth of completion callbacks on the stack */
    bool closing;
    bool torn_down;
    pc_http_client_close_cb close_cb;
    void *close_data;
};

static void process_completed(pc_http_client_t *c);
static void teardown(pc_http_client_t *c);

/* ---- Small helpers ------------------------------------------------------- */

static int buf_append(buf_t *b, const char *p, size_t n, size_t limit)
{
    if (n > limit || b->len > limit - n)
        return PC_ELIMIT;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d)
            return PC_ENOMEM;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

static void list_remove_req(pc_http_client_t *c, pc_http_req_t *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        c->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

static void list_remove_sock(pc_http_client_t *c, sock_ctx_t *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        c->socks = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
}

static uint64_t elapsed_ms_since(uint64_t start_ns)
{
    return (uv_hrtime() - start_ns) / 1000000u;
}

/* ---- Closing uv handles -------------------------------------------------- */

/* Runs after each uv handle the client owns is closed; the last one frees the
 * client, because libuv may touch a handle until its close callback. */
static void handle_released(pc_http_client_t *c)
{
    if (--c->open_handles > 0 || !c->torn_down)
        return;
    pc_http_client_close_cb cb = c->close_cb;
    void *data = c->close_data;
    free(c->user_agent);
    free(c->proxy);
    free(c);
    curl_global_cleanup();
    if (cb)
        cb(data);
}

static void sock_closed_cb(uv_handle_t *h)
{
    sock_ctx_t *s = h->data;
    pc_http_client_t *c = s->client;
    free(s);
    handle_released(c);
}

static void timer_closed_cb(uv_handle_t *h)
{
    handle_released(h->data);
}

static void sock_close(pc_http_client_t *c, sock_ctx_t *s)
{
    list_remove_sock(c, s);
    uv_poll_stop(&s->poll);
    uv_close((uv_handle_t *)&s->poll, sock_closed_cb);
}

/* ---- curl → libuv: sockets and timer ------------------------------------- */

static void poll_cb(uv_poll_t *h, int status, int events)
{
    sock_ctx_t *s = h->data;
    pc_http_client_t *c = s->client;
    int flags = 0;
    int running = 0;

    /* libuv reports a socket error (e.g. a refused connect) as a negative
     * status and stops the handle; curl reads the cause from the socket. */
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    /* s may be closed (not freed) during this call if curl drops the socket. */
    curl_multi_socket_action(c->multi, s->fd, flags, &running);
    process_completed(c);
}

static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    pc_http_client_t *c = userp;
    sock_ctx_t *s = socketp;
    (void)easy;

    if (what == CURL_POLL_REMOVE) {
        if (s) {
            /* Stop watching before curl closes the descriptor, so the fd
             * number can be reused for a new socket right away. */
            sock_close(c, s);
            if (!c->torn_down)
                curl_multi_assign(c->multi, fd, NULL);
        }
        return 0;
    }
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s)
            return -1;
        s->client = c;
        s->fd = fd;
        if (uv_poll_init_socket(c->loop, &s->poll, fd) != 0) {
            free(s);
            return -1;
        }
        s->poll.data = s;
        c->open_handles++;
        s->next = c->socks;
        if (c->socks)
            c->socks->prev = s;
        c->socks = s;
        curl_multi_assign(c->multi, fd, s);
    }
    int events = 0;
    if (what & CURL_POLL_IN)
        events |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    if (events == 0) {
        uv_poll_stop(&s->poll);
        return 0;
    }
    return uv_poll_start(&s->poll, events, poll_cb) == 0 ? 0 : -1;
}

static void timer_fired_cb(uv_timer_t *t)
{
    pc_http_client_t *c = t->data;
    int running = 0;
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    process_completed(c);
}

/* curl asks for one timer: -1 stops it, 0 means "as soon as possible".
 * socket_action is never called from here, because curl forbids re-entering
 * it from its own callbacks; a 0 ms uv timer runs it on the next turn. */
static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    pc_http_client_t *c = userp;
    (void)multi;
    if (timeout_ms < 0)
        return uv_timer_stop(&c->timer) == 0 ? 0 : -1;
    return uv_timer_start(&c->timer, timer_fired_cb, (uint64_t)timeout_ms, 0) == 0 ? 0 : -1;
}

/* ---- curl → request: response data -------------------------------------- */

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    pc_http_req_t *r = userdata;
    size_t n = size * nmemb;
    int rc = buf_append(&r->resp_body, ptr, n, r->max_response);
    if (rc == PC_ELIMIT)
        r->too_large = true;
    /* Returning less than n makes curl abort the transfer. */
    return rc == 0 ? n : 0;
}

static size_t header_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    pc_http_req_t *r = userdata;
    size_t n = size * nmemb;
    /* A status line starts a new response (after 100 Continue, for
     * instance): keep only the headers of the final one. */
    if (n >= 5 && memcmp(ptr, "HTTP/", 5) == 0)
        r->resp_headers.len = 0;
    int rc = buf_append(&r->resp_headers, ptr, n, MAX_RESPONSE_HEADER_BYTES);
    if (rc == PC_ELIMIT)
        r->too_large = true;
    return rc == 0 ? n : 0;
}

/* ---- Public addresses only --------------------------------------------------- */

static bool v4_is_public(uint32_t a)
{
    static const struct {
        uint32_t net, mask;
    } blocked[] = {
        {0x00000000, 0xff000000}, /* 0/8 "this network" */
        {0x0a000000, 0xff000000}, /* 10/8 private */
        {0x64400000, 0xffc00000}, /* 100.64/10 shared (carrier NAT) */
        {0x7f000000, 0xff000000}, /* 127/8 loopback */
        {0xa9fe0000, 0xffff0000}, /* 169.254/16 link-local (cloud metadata) */
        {0xac100000, 0xfff00000}, /* 172.16/12 private */
        {0xc0000000, 0xffffff00}, /* 192.0.0/24 protocol assignments */
        {0xc0a80000, 0xffff0000}, /* 192.168/16 private */
        {0xc6120000, 0xfffe0000}, /* 198.18/15 benchmarking */
        {0xe0000000, 0xe0000000}, /* 224/3 multicast, reserved, broadcast */
    };
    for (size_t i = 0; i < sizeof blocked / sizeof blocked[0]; i++)
        if ((a & blocked[i].mask) == blocked[i].net)
            return false;
    return true;
}

static bool v6_is_public(const unsigned char *b)
{
    static const unsigned char zero[12];
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const unsigned char translated[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const unsigned char nat64[12] = {0, 0x64, 0xff, 0x9b};
    static const unsigned char nat64_local[6] = {0, 0x64, 0xff, 0x9b, 0, 1};
    uint32_t v4 = (uint32_t)b[12] << 24 | (uint32_t)b[13] << 16 | (uint32_t)b[14] << 8 | b[15];
    /* ::, ::1 and the deprecated IPv4-compatible form. */
    if (!memcmp(b, zero, 12))
        return false;
    /* An IPv4 address written as IPv6 is judged as IPv4: mapped, translated,
     * the well-known NAT64 prefix, and 6to4 (2002::/16, the address in bytes 2-5). */
    if (!memcmp(b, mapped, 12) || !memcmp(b, translated, 12) || !memcmp(b, nat64, 12))
        return v4_is_public(v4);
    /* 64:ff9b:1::/48, local-use NAT64: the IPv4 address may sit at several
     * places (prefixes /48 to /96) and the translator is local anyway. */
    if (!memcmp(b, nat64_local, 6))
        return false;
    if (b[0] == 0x20 && b[1] == 0x02)
        return v4_is_public((uint32_t)b[2] << 24 | (uint32_t)b[3] << 16 | (uint32_t)b[4] << 8 |
                            b[5]);
    if ((b[0] & 0xfe) == 0xfc) /* fc00::/7 unique local */
        return false;
    if (b[0] == 0xfe && (b[1] & 0x80) == 0x80) /* fe80::/10 link-local, fec0::/10 site-local */
        return false;
    if (b[0] == 0xff) /* multicast */
        return false;
    return true;
}

/* curl asks for each socket it is about to connect with the address it
 * resolved: the one place a check cannot be fooled by what a name resolves
 * to at some other moment. */
static curl_socket_t open_public_socket(void *clientp, curlsocktype purpose,
                                        struct curl_sockaddr *a)
{
    pc_http_req_t *r = clientp;
    bool ok = true;
    if (purpose == CURLSOCKTYPE_IPCXN) {
        if (a->family == AF_INET) {
            const struct sockaddr_in *in = (const struct sockaddr_in *)&a->addr;
            ok = v4_is_public(ntohl(in->sin_addr.s_addr));
        } else if (a->family == AF_INET6) {
            const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&a->addr;
            ok = v6_is_public(in6->sin6_addr.s6_addr);
        } else {
            ok = false;
        }
    }
    if (!ok) {
        r->blocked = true;
        return CURL_SOCKET_BAD;
    }
    return socket(a->family, a->socktype, a->protocol);
}

/* ---- Completion ------------------------------------------------------------ */

static pc_http_error_t map_curl_error(pc_http_req_t *r, CURLcode rc)
{
    long os_errno = 0;
    switch (rc) {
    case CURLE_OK:
        return PC_HTTP_OK;
    case CURLE_OPERATION_TIMEDOUT:
        return PC_HTTP_ETIMEOUT;
    case CURLE_COULDNT_CONNECT:
        curl_easy_getinfo(r->easy, CURLINFO_OS_ERRNO, &os_errno);
        return os_errno == ECONNREFUSED ? PC_HTTP_ECONNREFUSED : PC_HTTP_ECONNECT;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return PC_HTTP_ERESOLVE;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_USE_SSL_FAILED:
        return PC_HTTP_ETLS;
    case CURLE_SEND_ERROR:
        return PC_HTTP_ESEND;
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
        return PC_HTTP_ERECV;
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_HTTP3:
    case CURLE_BAD_CONTENT_ENCODING:
        return PC_HTTP_EPROTOCOL;
    case CURLE_FILESIZE_EXCEEDED:
        return PC_HTTP_ETOOLARGE;
    case CURLE_WRITE_ERROR:
        return r->too_large ? PC_HTTP_ETOOLARGE : PC_HTTP_EOTHER;
    default:
        return PC_HTTP_EOTHER;
    }
}

static void req_free(pc_http_req_t *r)
{
    if (r->easy)
        curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->headers);
    /* A channel's pay or tokenize body holds a card number and CVV: they
     * pass through memory only, so they do not stay in freed heap either. */
    if (r->body)
        explicit_bzero(r->body, r->body_len);
    free(r->body);
    free(r->resp_body.data);
    free(r->resp_headers.data);
    free(r);
}

/* Ends r: detaches it from curl and the client, reports to its owner, frees
 * it. cancelled means the client is closing and r had not finished. */
static void req_finish(pc_http_req_t *r, CURLcode rc, bool cancelled)
{
    pc_http_client_t *c = r->client;
    pc_http_response_t resp = {0};

    /* A host with several addresses may have had a private one refused and
     * a public one answer: blocked counts only when nothing answered. */
    resp.error = cancelled                      ? PC_HTTP_ECANCELLED
                 : r->blocked && rc != CURLE_OK ? PC_HTTP_EBLOCKED
                                                : map_curl_error(r, rc);
    if (resp.error == PC_HTTP_OK) {
        long status = 0;
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
        resp.status = (int)status;
        resp.body = r->resp_body.data ? r->resp_body.data : "";
        resp.body_len = r->resp_body.len;
        resp.error_message = "";
    } else {
        resp.body = "";
        if (cancelled)
            resp.error_message = "client closed";
        else if (resp.error == PC_HTTP_EBLOCKED)
            resp.error_message = "the host's address is loopback, private or otherwise not public";
        else if (resp.error == PC_HTTP_ETOOLARGE)
            resp.error_message = "response larger than max_response_bytes";
        else
            resp.error_message = r->errbuf[0] ? r->errbuf : curl_easy_strerror(rc);
    }
    resp.elapsed_ms = elapsed_ms_since(r->start_ns);
    resp.internal = r;

    curl_multi_remove_handle(c->multi, r->easy);
    list_remove_req(c, r);
    c->pending--;
    r->done_cb(r->data, &resp);
    req_free(r);
}

/* Reports every transfer curl has finished. A completion callback may start
 * requests (curl allows adding handles here) or close the client; closing is
 * deferred until no callback is on the stack, then every request left is
 * cancelled. */
static void process_completed(pc_http_client_t *c)
{
    CURLMsg *msg;
    int left = 0;

    if (c->torn_down)
        return;
    c->dispatching++;
    while (!c->closing && (msg = curl_multi_info_read(c->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        char *priv = NULL;
        CURLcode rc = msg->data.result;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
        req_finish((pc_http_req_t *)(void *)priv, rc, false);
    }
    c->dispatching--;
    if (c->closing && c->dispatching == 0)
        teardown(c);
}

/* ---- Lifecycle --------------------------------------------------------------- */

pc_http_client_t *pc_http_client_new(uv_loop_t *loop, const pc_http_client_opts_t *opts)
{
    pc_http_client_t *c = NULL;
    bool global = false;

    if (!loop)
        return NULL;
    /* curl_global_init is reference-counted and, in this libcurl, thread-safe. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return NULL;
    global = true;
    /* Without an asynchronous resolver a host name lookup would block the
     * loop for as long as DNS takes. */
    if (!(curl_version_info(CURLVERSION_NOW)->features & CURL_VERSION_ASYNCHDNS))
        pc_log_warn("http.client.sync_dns",
                    "libcurl resolves names synchronously; use numeric hosts only");

    c = calloc(1, sizeof *c);
    if (!c)
        goto fail;
    c->loop = loop;
    if (opts)
        c->opts = *opts;
    if (!c->opts.max_host_connections)
        c->opts.max_host_connections = DEFAULT_MAX_HOST_CONNECTIONS;
    if (!c->opts.max_total_connections)
        c->opts.max_total_connections = DEFAULT_MAX_TOTAL_CONNECTIONS;
    if (!c->opts.max_response_bytes)
        c->opts.max_response_bytes = DEFAULT_MAX_RESPONSE_BYTES;
    c->user_agent = strdup(opts && opts->user_agent ? opts->user_agent : "paycore");
    c->proxy = strdup(opts && opts->proxy ? opts->proxy : "");
    if (!c->user_agent || !c->proxy)
        goto fail;
    c->opts.user_agent = c->user_agent;
    c->opts.proxy = c->proxy;

    c->multi = curl_multi_init();
    if (!c->multi)
        goto fail;
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)c->opts.max_host_connections);
    curl_multi_setopt(c->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS,
                      (long)c->opts.max_total_connections);
    /* Keep as many idle connections as may be open, for reuse. */
    curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, (long)c->opts.max_total_connections);

    if (uv_timer_init(loop, &c->timer) != 0)
        goto fail;
    c->timer.data = c;
    c->open_handles = 1;
    return c;
fail:
    if (c) {
        if (c->multi)
            curl_multi_cleanup(c->multi);
        free(c->user_agent);
        free(c->proxy);
        free(c);
    }
    if (global)
        curl_global_cleanup();
    return NULL;
}

size_t pc_http_client_pending(const pc_http_client_t *client)
{
    return client ? client->pending : 0;
}

/* Cancels what is left, lets curl close its connections, and closes every uv
 * handle; the last close callback frees the client. */
static void teardown(pc_http_client_t *c)
{
    c->torn_down = true;
    while (c->reqs)
        req_finish(c->reqs, CURLE_OK, true);
    /* curl may report its cached connections' sockets as removed here. */
    curl_multi_cleanup(c->multi);
    c->multi = NULL;
    while (c->socks)
        sock_close(c, c->socks);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, timer_closed_cb);
}

void pc_http_client_close(pc_http_client_t *client, pc_http_client_close_cb close_cb, void *data)
{
    if (!client || client->closing)
        return;
    client->closing = true;
    client->close_cb = close_cb;
    client->close_data = data;
    if (client->dispatching == 0)
        teardown(client);
}

/* ---- Requests ------------------------------------------------------------------ */

static bool method_is_valid(const char *m)
{
    size_t n = strlen(m);
    if (n == 0 || n > 16)
        return false;
    for (size_t i = 0; i < n; i++)
        if (m[i] < 'A' || m[i] > 'Z')
            return false;
    return true;
}

/* A URL is accepted only when curl parses it and its scheme is http or
 * https; checking here lets a bad notify_url fail at submission. */
static bool url_is_valid(const char *url)
{
    bool ok = false;
    char *scheme = NULL;
    CURLU *u = curl_url();
    if (!u)
        return false;
    if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK)
        ok = strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0;
    curl_free(scheme);
    curl_url_cleanup(u);
    return ok;
}

static bool header_is_valid(const char *h)
{
    const char *colon = strchr(h, ':');
    if (!colon || colon == h)
        return false;
    for (const char *p = h; p < colon; p++)
        if (*p <= ' ' || *p >= 0x7f)
            return false;
    return strpbrk(h, "\r\n") == NULL;
}

static bool has_header(const pc_http_request_t *req, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < req->header_count; i++)
        if (strncasecmp(req->headers[i], name, n) == 0 && req->headers[i][n] == ':')
            return true;
    return false;
}

static int req_set_method(pc_http_req_t *r, const char *method, size_t body_len)
{
    CURLcode rc;
    if (strcmp(method, "GET") == 0 && body_len == 0) {
        rc = curl_easy_setopt(r->easy, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(method, "HEAD") == 0 && body_len == 0) {
        rc = curl_easy_setopt(r->easy, CURLOPT_NOBODY, 1L);
    } else {
        rc = curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, r->body);
        if (rc == CURLE_OK)
            rc = curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        if (rc == CURLE_OK && strcmp(method, "POST") != 0)
            rc = curl_easy_setopt(r->easy, CURLOPT_CUSTOMREQUEST, method);
    }
    return rc == CURLE_OK ? 0 : PC_EIO;
}

static int req_build_headers(pc_http_req_t *r, const pc_http_request_t *req)
{
    for (size_t i = 0; i < req->header_count; i++) {
        struct curl_slist *l = curl_slist_append(r->headers, req->headers[i]);
        if (!l)
            return PC_ENOMEM;
        r->headers = l;
    }
    /* An empty Expect stops curl from waiting up to a second for
     * "100 Continue" before sending a larger body. */
    if (!has_header(req, "Expect")) {
        struct curl_slist *l = curl_slist_append(r->headers, "Expect:");
        if (!l)
            return PC_ENOMEM;
        r->headers = l;
    }
    return 0;
}

int pc_http_client_request(pc_http_client_t *client, const pc_http_request_t *req,
                           pc_http_done_cb done_cb, void *data)
{
    pc_http_req_t *r = NULL;
    int rc = PC_EINVAL;

    if (!client || !req || !done_cb || !req->url || (!req->body && req->body_len) ||
        (!req->headers && req->header_count))
        return PC_EINVAL;
    if (client->closing)
        return PC_ECLOSED;
    const char *method = req->method ? req->method : "GET";
    if (!method_is_valid(method) || !url_is_valid(req->url))
        return PC_EINVAL;
    for (size_t i = 0; i < req->header_count; i++)
        if (!req->headers[i] || !header_is_valid(req->headers[i]))
            return PC_EINVAL;

    uint32_t timeout = req->timeout_ms ? req->timeout_ms : DEFAULT_TIMEOUT_MS;
    uint32_t connect_timeout = req->connect_timeout_ms;
    if (!connect_timeout)
        connect_timeout =
            timeout < DEFAULT_CONNECT_TIMEOUT_MS ? timeout : DEFAULT_CONNECT_TIMEOUT_MS;

    rc = PC_ENOMEM;
    r = calloc(1, sizeof *r);
    if (!r)
        goto fail;
    r->client = client;
    r->done_cb = done_cb;
    r->data = data;
    r->max_response =
        req->max_response_bytes && req->max_response_bytes < client->opts.max_response_bytes
            ? req->max_response_bytes
            : client->opts.max_response_bytes;
    r->body = malloc(req->body_len ? req->body_len : 1);
    if (!r->body)
        goto fail;
    if (req->body_len)
        memcpy(r->body, req->body, req->body_len);
    r->body_len = req->body_len;
    if (req_build_headers(r, req) != 0)
        goto fail;
    r->easy = curl_easy_init();
    if (!r->easy)
        goto fail;

    rc = PC_EIO;
    CURL *e = r->easy;
    /* Each option below is a deliberate choice for payment traffic:
     * no signals (we share the process with libuv), only http(s), no
     * redirects, bounded time and size, no proxy from the environment. */
    if (curl_easy_setopt(e, CURLOPT_URL, req->url) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_PRIVATE, (void *)r) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_PROXY, client->proxy) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)timeout) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)connect_timeout) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)r->max_response) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_USERAGENT, client->user_agent) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_WRITEDATA, (void *)r) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_HEADERDATA, (void *)r) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf) != CURLE_OK ||
        (client->opts.public_only && !client->proxy[0] &&
         (curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_public_socket) != CURLE_OK ||
          curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, (void *)r) != CURLE_OK)))
        goto fail;
    if (req_set_method(r, method, req->body_len) != 0)
        goto fail;

    r->start_ns = uv_hrtime();
    /* Adding a handle only arms curl's timer: the transfer starts on a later
     * loop turn, so done_cb can never run inside this call. */
    if (curl_multi_add_handle(client->multi, e) != CURLM_OK)
        goto fail;
    r->next = client->reqs;
    if (client->reqs)
        client->reqs->prev = r;
    client->reqs = r;
    client->pending++;
    return 0;
fail:
    if (r)
        req_free(r);
    return rc;
}

/* ---- Response access ---------------------------------------------------------- */

const char *pc_http_response_header(const pc_http_response_t *resp, const char *name, size_t *len)
{
    if (!resp || !resp->internal || !name || !len)
        return NULL;
    const pc_http_req_t *r = resp->internal;
    const char *p = r->resp_headers.data;
    const char *end = p ? p + r->resp_headers.len : NULL;
    size_t n = strlen(name);

    while (p && p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol ? eol : end;
        if ((size_t)(line_end - p) > n && p[n] == ':' && strncasecmp(p, name, n) == 0) {
            const char *v = p + n + 1;
            const char *ve = line_end;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            *len = (size_t)(ve - v);
            return v;
        }
        p = eol ? eol + 1 : end;
    }
    return NULL;
}

const char *pc_http_strerror(pc_http_error_t err)
{
    switch (err) {
    case PC_HTTP_OK:
        return "ok";
    case PC_HTTP_ETIMEOUT:
        return "timeout";
    case PC_HTTP_ECONNREFUSED:
        return "connection_refused";
    case PC_HTTP_ECONNECT:
        return "connect_failed";
    case PC_HTTP_ERESOLVE:
        return "resolve_failed";
    case PC_HTTP_ETLS:
        return "tls_failed";
    case PC_HTTP_ESEND:
        return "send_failed";
    case PC_HTTP_ERECV:
        return "receive_failed";
    case PC_HTTP_EPROTOCOL:
        return "protocol_error";
    case PC_HTTP_ETOOLARGE:
        return "response_too_large";
    case PC_HTTP_ECANCELLED:
        return "cancelled";
    case PC_HTTP_EBLOCKED:
        return "address_not_public";
    case PC_HTTP_EOTHER:
        return "other";
    }
    return "unknown";
}
