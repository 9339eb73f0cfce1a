/* paysim against a real process: the card test data, the channel's own
 * dedupe, tokens, asynchronous methods completed by the "buyer", signed
 * requests, answers and callbacks, every fault type, statements with faked
 * discrepancies, chargeback files, reproducible faults, and 2,000 payments.
 * A tiny HTTP receiver on a thread plays paycore's callback endpoint. The
 * paysim process is started once for the group and reset before each test;
 * stopping it with SIGTERM must exit 0 (which, in a sanitizer build, also
 * means no leak). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "harness.h"

#include "auth/sign.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SEED 42

/* ---- Callback receiver ---------------------------------------------------- */

typedef struct {
    char *headers;
    char *body;
} received_t;

typedef struct {
    int fd;
    int port;
    pthread_t thread;
    volatile bool stop;
    pthread_mutex_t mu;
    received_t got[4096];
    int n;          /* requests received, acknowledged or not */
    int fail_first; /* answer 500 to this many requests first */
} receiver_t;

static receiver_t g_rx;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void handle_conn(int c)
{
    char buf[65536];
    size_t len = 0;
    char *end = NULL;
    double t0 = now_s();
    while (!end && len < sizeof buf - 1 && now_s() - t0 < 5) {
        struct pollfd p = {c, POLLIN, 0};
        if (poll(&p, 1, 200) <= 0)
            continue;
        ssize_t n = read(c, buf + len, sizeof buf - 1 - len);
        if (n <= 0)
            return;
        len += (size_t)n;
        buf[len] = 0;
        end = strstr(buf, "\r\n\r\n");
    }
    if (!end)
        return;
    size_t head = (size_t)(end - buf) + 4;
    size_t clen = 0;
    for (char *p = buf; p < end; p++)
        if (strncasecmp(p, "\nContent-Length:", 16) == 0)
            clen = (size_t)atol(p + 16);
    while (len < head + clen && len < sizeof buf - 1) {
        ssize_t n = read(c, buf + len, sizeof buf - 1 - len);
        if (n <= 0)
            return;
        len += (size_t)n;
    }
    buf[len] = 0;
    bool fail;
    pthread_mutex_lock(&g_rx.mu);
    fail = g_rx.n < g_rx.fail_first;
    if (g_rx.n < (int)(sizeof g_rx.got / sizeof g_rx.got[0])) {
        g_rx.got[g_rx.n].headers = strndup(buf, head);
        g_rx.got[g_rx.n].body = strndup(buf + head, clen);
        g_rx.n++;
    }
    pthread_mutex_unlock(&g_rx.mu);
    const char *ans =
        fail ? "HTTP/1.1 500 Oops\r\nContent-Length: 4\r\nConnection: close\r\n\r\nfail"
             : "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\n"
               "success";
    if (write(c, ans, strlen(ans)) < 0)
        return;
}

static void *receiver_main(void *arg)
{
    (void)arg;
    while (!g_rx.stop) {
        struct pollfd p = {g_rx.fd, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0)
            continue;
        int c = accept(g_rx.fd, NULL, NULL);
        if (c < 0)
            continue;
        handle_conn(c);
        close(c);
    }
    return NULL;
}

static void receiver_start(void)
{
    pthread_mutex_init(&g_rx.mu, NULL);
    g_rx.fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(g_rx.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(g_rx.fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t l = sizeof a;
    getsockname(g_rx.fd, (struct sockaddr *)&a, &l);
    g_rx.port = ntohs(a.sin_port);
    assert_int_equal(listen(g_rx.fd, 128), 0);
    pthread_create(&g_rx.thread, NULL, receiver_main, NULL);
}

static void receiver_clear(int fail_first)
{
    pthread_mutex_lock(&g_rx.mu);
    for (int i = 0; i < g_rx.n; i++) {
        free(g_rx.got[i].headers);
        free(g_rx.got[i].body);
    }
    g_rx.n = 0;
    g_rx.fail_first = fail_first;
    pthread_mutex_unlock(&g_rx.mu);
}

static void receiver_stop(void)
{
    g_rx.stop = true;
    pthread_join(g_rx.thread, NULL);
    close(g_rx.fd);
    receiver_clear(0);
    pthread_mutex_destroy(&g_rx.mu);
}

/* Waits until at least n callbacks arrived or timeout; returns the count. */
static int receiver_wait(int n, double timeout_s)
{
    double t0 = now_s();
    for (;;) {
        pthread_mutex_lock(&g_rx.mu);
        int have = g_rx.n;
        pthread_mutex_unlock(&g_rx.mu);
        if (have >= n || now_s() - t0 > timeout_s)
            return have;
        usleep(20000);
    }
}

/* A copy of callback i (caller frees both strings). */
static received_t receiver_get(int i)
{
    pthread_mutex_lock(&g_rx.mu);
    received_t r = {strdup(g_rx.got[i].headers), strdup(g_rx.got[i].body)};
    pthread_mutex_unlock(&g_rx.mu);
    return r;
}

static void received_free(received_t *r)
{
    free(r->headers);
    free(r->body);
}

/* Value of header name in raw headers, copied into out. */
static const char *raw_header(const char *headers, const char *name, char *out, size_t size)
{
    size_t nl = strlen(name);
    for (const char *p = headers; (p = strchr(p, '\n')); p++) {
        if (strncasecmp(p + 1, name, nl) == 0 && p[1 + nl] == ':') {
            const char *v = p + 2 + nl;
            while (*v == ' ')
                v++;
            size_t k = strcspn(v, "\r\n");
            snprintf(out, size, "%.*s", (int)k, v);
            return out;
        }
    }
    return NULL;
}

/* ---- The paysim process ----------------------------------------------------- */

typedef struct {
    pid_t pid;
    int port;
    char log[600];
    char base[64];
} paysim_t;

static paysim_t g_sim;

static void paysim_start(paysim_t *s, int callback_port, const char *max_txns)
{
    s->port = pc_t_reserve_port();
    snprintf(s->base, sizeof s->base, "http://127.0.0.1:%d", s->port);
    char logdir[520];
    snprintf(logdir, sizeof logdir, "%s/test-logs", pc_t_binary_dir());
    pc_t_sh("mkdir -p %s", logdir);
    snprintf(s->log, sizeof s->log, "%s/paysim-%d-%d.log", logdir, (int)getpid(), s->port);
    char port[16], cb[64], seed[16], bin[600];
    snprintf(port, sizeof port, "%d", s->port);
    snprintf(cb, sizeof cb, "http://127.0.0.1:%d/", callback_port);
    snprintf(seed, sizeof seed, "%d", SEED);
    snprintf(bin, sizeof bin, "%s/paysim", pc_t_binary_dir());
    pid_t parent = getpid();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        int fd = open(s->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        execl(bin, "paysim", "--port", port, "--seed", seed, "--callback-base", cb,
              "--callback-retry-ms", "100", "--max-txns", max_txns, (char *)NULL);
        _exit(127);
    }
    s->pid = pid;
    char url[128];
    snprintf(url, sizeof url, "%s/healthz", s->base);
    for (int i = 0; i < 200; i++) {
        pc_t_resp_t r = pc_t_http("GET", url, NULL, NULL);
        long st = r.status;
        pc_t_resp_free(&r);
        if (st == 200)
            return;
        int wst;
        if (waitpid(pid, &wst, WNOHANG) == pid) {
            pc_t_sh("cat %s >&2", s->log);
            fail_msg("paysim exited during start");
        }
        usleep(50000);
    }
    fail_msg("paysim did not come up");
}

/* SIGTERM; returns the exit status as waitpid reports it. */
static int paysim_stop(paysim_t *s)
{
    if (!s->pid)
        return -1;
    kill(s->pid, SIGTERM);
    int st = 0;
    for (int i = 0; i < 300; i++) {
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
            s->pid = 0;
            return st;
        }
        usleep(50000);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &st, 0);
    s->pid = 0;
    return st;
}

/* ---- Calls -------------------------------------------------------------------- */

static char *secret_of(const char *channel)
{
    char *s;
    assert_true(asprintf(&s, "demo-secret-%s", channel) > 0);
    return s;
}

/* A signed channel call; checks the answer's signature too (any status). */
static pc_t_resp_t ch_call(const char *method, const char *channel, const char *path_rest,
                           const char *body)
{
    char path[512], url[640], ts[24], nonce[40];
    snprintf(path, sizeof path, "/ch/%s%s", channel, path_rest);
    snprintf(url, sizeof url, "%s%s", g_sim.base, path);
    snprintf(ts, sizeof ts, "%lld", (long long)time(NULL));
    assert_int_equal(pc_random_hex(nonce, sizeof nonce, 16), 0);
    char *secret = secret_of(channel);
    size_t len;
    char *msg = pc_sign_request_string(method, path, ts, nonce, body ? body : "",
                                       body ? strlen(body) : 0, &len);
    char *sig = pc_hmac_sha256_sign(secret, strlen(secret), msg, len);
    char h1[64], h2[64], h3[128];
    snprintf(h1, sizeof h1, "X-Timestamp: %s", ts);
    snprintf(h2, sizeof h2, "X-Nonce: %s", nonce);
    snprintf(h3, sizeof h3, "X-Signature: %s", sig);
    const char *headers[] = {h1, h2, h3, NULL};
    pc_t_resp_t r = pc_t_http(method, url, headers, body);
    free(msg);
    free(sig);
    if (r.status && r.status != 504) {
        char rts[32], rnonce[80], rsig[128];
        assert_non_null(raw_header(r.headers, "X-Timestamp", rts, sizeof rts));
        assert_non_null(raw_header(r.headers, "X-Nonce", rnonce, sizeof rnonce));
        assert_non_null(raw_header(r.headers, "X-Signature", rsig, sizeof rsig));
        assert_string_equal(rnonce, nonce);
        char *m = pc_sign_notify_string(rts, nonce, r.body, r.len, &len);
        assert_int_equal(pc_hmac_sha256_verify(secret, strlen(secret), m, len, rsig, strlen(rsig)),
                         0);
        free(m);
    }
    free(secret);
    return r;
}

/* A signed call expected to answer with JSON; returns it (caller decrefs). */
static json_t *ch_json(const char *method, const char *channel, const char *path_rest,
                       const char *body, long want_status)
{
    pc_t_resp_t r = ch_call(method, channel, path_rest, body);
    if (r.status != want_status)
        fail_msg("%s %s%s: status %ld, want %ld: %s", method, channel, path_rest, r.status,
                 want_status, r.body);
    json_t *j = pc_t_json(&r);
    assert_non_null(j);
    pc_t_resp_free(&r);
    return j;
}

static json_t *sim_json(const char *method, const char *path, const char *body, long want_status)
{
    char url[640];
    snprintf(url, sizeof url, "%s%s", g_sim.base, path);
    pc_t_resp_t r = pc_t_http(method, url, NULL, body);
    if (r.status != want_status)
        fail_msg("%s %s: status %ld, want %ld: %s", method, path, r.status, want_status, r.body);
    json_t *j = pc_t_json(&r);
    assert_non_null(j);
    pc_t_resp_free(&r);
    return j;
}

static void set_faults(const char *json)
{
    json_decref(sim_json("POST", "/sim/faults", json, 200));
}

static const char *jstr(json_t *o, const char *path)
{
    /* "a.b.c" into nested objects. */
    char buf[128];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *v = o;
    for (char *save, *k = strtok_r(buf, ".", &save); k && v; k = strtok_r(NULL, ".", &save))
        v = json_object_get(v, k);
    return json_string_value(v);
}

static json_int_t jint(json_t *o, const char *key)
{
    return json_integer_value(json_object_get(o, key));
}

static char *card_pay_body(const char *no, long amount, const char *pan)
{
    char *b;
    assert_true(asprintf(&b,
                         "{\"payment_no\":\"%s\",\"amount\":%ld,\"currency\":\"CNY\","
                         "\"method\":\"CARD\",\"card\":{\"pan\":\"%s\",\"exp_month\":12,"
                         "\"exp_year\":2099,\"cvv\":\"123\"}}",
                         no, amount, pan) > 0);
    return b;
}

static json_t *pay_card(const char *channel, const char *no, long amount, const char *pan)
{
    char *b = card_pay_body(no, amount, pan);
    json_t *j = ch_json("POST", channel, "/payments", b, 200);
    free(b);
    return j;
}

static json_t *pay_method(const char *channel, const char *no, long amount, const char *method,
                          const char *extra)
{
    char b[512];
    snprintf(b, sizeof b,
             "{\"payment_no\":\"%s\",\"amount\":%ld,\"currency\":\"IDR\",\"method\":\"%s\"%s}", no,
             amount, method, extra ? extra : "");
    return ch_json("POST", channel, "/payments", b, 200);
}

static char *today(void)
{
    json_t *c = sim_json("GET", "/sim/clock", NULL, 200);
    char *d = strdup(jstr(c, "business_date"));
    json_decref(c);
    return d;
}

/* Checks the signature of received callback i with channel's secret and
 * returns its parsed body. */
static json_t *verified_callback(int i, const char *channel)
{
    received_t r = receiver_get(i);
    char ts[32], nonce[80], sig[128], chid[64], evid[64];
    assert_non_null(strstr(r.headers, "POST /channel-callbacks/"));
    assert_non_null(raw_header(r.headers, "X-Timestamp", ts, sizeof ts));
    assert_non_null(raw_header(r.headers, "X-Nonce", nonce, sizeof nonce));
    assert_non_null(raw_header(r.headers, "X-Signature", sig, sizeof sig));
    assert_non_null(raw_header(r.headers, "X-Channel-Id", chid, sizeof chid));
    assert_non_null(raw_header(r.headers, "X-Event-Id", evid, sizeof evid));
    assert_string_equal(chid, channel);
    char *secret = secret_of(channel);
    size_t len;
    char *m = pc_sign_notify_string(ts, nonce, r.body, strlen(r.body), &len);
    assert_int_equal(pc_hmac_sha256_verify(secret, strlen(secret), m, len, sig, strlen(sig)), 0);
    /* A forged body fails the same check. */
    char *forged = strdup(r.body);
    forged[strlen(forged) / 2] ^= 1;
    char *m2 = pc_sign_notify_string(ts, nonce, forged, strlen(forged), &len);
    assert_int_not_equal(pc_hmac_sha256_verify(secret, strlen(secret), m2, len, sig, strlen(sig)),
                         0);
    json_error_t err;
    json_t *j = json_loads(r.body, 0, &err);
    assert_non_null(j);
    assert_string_equal(jstr(j, "event_id"), evid);
    free(m);
    free(m2);
    free(forged);
    free(secret);
    received_free(&r);
    return j;
}

static int faked_count(const char *kind)
{
    char path[128];
    snprintf(path, sizeof path, "/sim/faked?kind=%s", kind);
    json_t *j = sim_json("GET", path, NULL, 200);
    int n = (int)json_array_size(json_object_get(j, "faked"));
    json_decref(j);
    return n;
}

/* ---- Fixtures --------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    receiver_start();
    paysim_start(&g_sim, g_rx.port, "200000");
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    int st = paysim_stop(&g_sim);
    receiver_stop();
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        pc_t_sh("tail -n 40 %s >&2", g_sim.log);
        fprintf(stderr, "paysim did not exit cleanly (status %d)\n", st);
        return -1;
    }
    return 0;
}

static int reset(void **state)
{
    (void)state;
    char body[64];
    snprintf(body, sizeof body, "{\"seed\":%d}", SEED);
    json_decref(sim_json("POST", "/sim/reset", body, 200));
    receiver_clear(0);
    return 0;
}

/* ---- Tests -------------------------------------------------------------------------- */

static void test_card_numbers_answer_per_test_data_table(void **state)
{
    (void)state;
    static const struct {
        const char *pan, *status, *code, *brand;
        bool retryable;
    } cases[] = {
        {"4242424242424242", "SUCCESS", NULL, "VISA", false},
        {"5555555555554444", "SUCCESS", NULL, "MASTERCARD", false},
        {"4000000000000002", "FAILED", "CARD_DECLINED", "VISA", false},
        {"4000000000009995", "FAILED", "INSUFFICIENT_FUNDS", "VISA", false},
        {"4000000000000119", "FAILED", "PROCESSING_ERROR", "VISA", true},
        {"4000000000000259", "SUCCESS", NULL, "VISA", false},
        {"4000000000003220", "PROCESSING", NULL, "VISA", false},
        {"4242424242424241", "FAILED", "INVALID_CARD_NUMBER", NULL, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char no[32];
        snprintf(no, sizeof no, "T-%zu", i);
        json_t *p = pay_card("sim_card", no, 1000, cases[i].pan);
        assert_string_equal(jstr(p, "status"), cases[i].status);
        assert_string_equal(jstr(p, "payment_no"), no);
        if (cases[i].code) {
            assert_string_equal(jstr(p, "failure.code"), cases[i].code);
            assert_int_equal(
                json_is_true(json_object_get(json_object_get(p, "failure"), "retryable")),
                cases[i].retryable);
        } else {
            assert_true(json_is_null(json_object_get(p, "failure")));
        }
        if (cases[i].brand) {
            assert_string_equal(jstr(p, "card.brand"), cases[i].brand);
            assert_string_equal(jstr(p, "card.last4"), cases[i].pan + 12);
        }
        if (!strcmp(cases[i].status, "SUCCESS"))
            assert_int_equal(jint(p, "fee"), 6); /* sim_card: 0.60 % of 1000 */
        json_decref(p);
    }
    /* An expired card. */
    char b[256];
    snprintf(b, sizeof b,
             "{\"payment_no\":\"T-exp\",\"amount\":10,\"currency\":\"CNY\",\"method\":\"CARD\","
             "\"card\":{\"pan\":\"4242424242424242\",\"exp_month\":1,\"exp_year\":2020,"
             "\"cvv\":\"123\"}}");
    json_t *p = ch_json("POST", "sim_card", "/payments", b, 200);
    assert_string_equal(jstr(p, "failure.code"), "EXPIRED_CARD");
    json_decref(p);
}

static void test_3ds_card_succeeds_after_challenge_with_callback(void **state)
{
    (void)state;
    json_t *p = pay_card("sim_card", "T3DS", 2500, "4000000000003220");
    assert_string_equal(jstr(p, "status"), "PROCESSING");
    assert_string_equal(jstr(p, "action.type"), "REDIRECT");
    assert_true(json_is_true(json_object_get(json_object_get(p, "action"), "three_ds")));
    const char *url = jstr(p, "action.url");
    assert_non_null(strstr(url, "/sim/redirect/3ds_"));
    /* The issuer's page is there for a browser. */
    pc_t_resp_t page = pc_t_http("GET", url, NULL, NULL);
    assert_int_equal(page.status, 200);
    assert_non_null(strstr(page.body, "Verify your card"));
    pc_t_resp_free(&page);
    char body[256];
    snprintf(body, sizeof body, "{\"reference\":\"%s\"}", jstr(p, "action.reference"));
    json_t *done = sim_json("POST", "/sim/complete", body, 200);
    assert_string_equal(jstr(done, "status"), "SUCCESS");
    assert_int_equal(receiver_wait(1, 5), 1);
    json_t *cb = verified_callback(0, "sim_card");
    assert_string_equal(jstr(cb, "type"), "payment.succeeded");
    assert_string_equal(jstr(cb, "data.payment_no"), "T3DS");
    assert_string_equal(jstr(cb, "data.status"), "SUCCESS");
    /* Completing twice is refused. */
    json_decref(sim_json("POST", "/sim/complete", body, 409));
    json_decref(cb);
    json_decref(done);
    json_decref(p);
}

static void test_same_payment_no_twice_charges_once(void **state)
{
    (void)state;
    json_t *a = pay_card("sim_card", "DUP-1", 1999, "4242424242424242");
    json_t *b = pay_card("sim_card", "DUP-1", 1999, "4242424242424242");
    assert_string_equal(jstr(a, "channel_txn_id"), jstr(b, "channel_txn_id"));
    assert_string_equal(jstr(b, "status"), "SUCCESS");
    /* Same number, different payment: refused, still nothing charged. */
    char *body = card_pay_body("DUP-1", 2999, "4242424242424242");
    pc_t_resp_t r = ch_call("POST", "sim_card", "/payments", body);
    assert_int_equal(r.status, 409);
    assert_non_null(strstr(r.body, "DUPLICATE_PAYMENT_NO"));
    pc_t_resp_free(&r);
    free(body);
    json_t *t = sim_json("GET", "/sim/txns?channel_id=sim_card&type=PAY", NULL, 200);
    assert_int_equal(jint(t, "count"), 1);
    json_t *only = json_array_get(json_object_get(t, "txns"), 0);
    assert_string_equal(jstr(only, "paycore_ref"), "DUP-1");
    assert_int_equal(jint(only, "amount"), 1999);
    /* Query by either id. */
    char path[128];
    snprintf(path, sizeof path, "/payments/%s", jstr(a, "channel_txn_id"));
    json_t *q1 = ch_json("GET", "sim_card", path, NULL, 200);
    json_t *q2 = ch_json("GET", "sim_card", "/payments?payment_no=DUP-1", NULL, 200);
    assert_string_equal(jstr(q1, "channel_txn_id"), jstr(q2, "channel_txn_id"));
    json_decref(ch_json("GET", "sim_card", "/payments?payment_no=NOPE", NULL, 404));
    /* Another channel never sees it. */
    json_decref(ch_json("GET", "sim_card2", path, NULL, 404));
    json_decref(q1);
    json_decref(q2);
    json_decref(t);
    json_decref(a);
    json_decref(b);
}

static void test_tokenize_then_pay_by_token(void **state)
{
    (void)state;
    const char *card = "{\"pan\":\"5555555555554444\",\"exp_month\":7,\"exp_year\":2031,"
                       "\"cvv\":\"321\",\"holder_name\":\"A Buyer\"}";
    pc_t_resp_t r = ch_call("POST", "sim_card", "/cards/tokenize", card);
    assert_int_equal(r.status, 200);
    assert_null(strstr(r.body, "5555555555554444"));
    /* No CVV: neither its field nor its value (the random token may contain
     * the digits 321, as a CI run once found). */
    assert_null(strstr(r.body, "cvv"));
    assert_null(strstr(r.body, "\"321\""));
    json_t *tok = pc_t_json(&r);
    pc_t_resp_free(&r);
    assert_string_equal(jstr(tok, "brand"), "MASTERCARD");
    assert_string_equal(jstr(tok, "bin"), "555555");
    assert_string_equal(jstr(tok, "last4"), "4444");
    const char *token = jstr(tok, "card_token");
    assert_non_null(token);
    /* The same card gets the same token. */
    json_t *again = ch_json("POST", "sim_card", "/cards/tokenize", card, 200);
    assert_string_equal(jstr(again, "card_token"), token);
    char b[256];
    snprintf(b, sizeof b,
             "{\"payment_no\":\"TOK-1\",\"amount\":800,\"currency\":\"CNY\",\"method\":"
             "\"QUICK_PAY\",\"card_token\":\"%s\"}",
             token);
    json_t *p = ch_json("POST", "sim_card", "/payments", b, 200);
    assert_string_equal(jstr(p, "status"), "SUCCESS");
    assert_string_equal(jstr(p, "card.token"), token);
    /* Tokens belong to their channel. */
    snprintf(b, sizeof b,
             "{\"payment_no\":\"TOK-2\",\"amount\":800,\"currency\":\"CNY\",\"method\":"
             "\"QUICK_PAY\",\"card_token\":\"%s\"}",
             token);
    json_t *other = ch_json("POST", "sim_card2", "/payments", b, 200);
    assert_string_equal(jstr(other, "failure.code"), "TOKEN_NOT_FOUND");
    /* A bad number is refused at tokenization. */
    json_t *bad = ch_json("POST", "sim_card", "/cards/tokenize",
                          "{\"pan\":\"4242424242424241\",\"exp_month\":7,\"exp_year\":2031}", 422);
    assert_string_equal(jstr(bad, "error.code"), "INVALID_CARD");
    assert_string_equal(jstr(bad, "error.field"), "pan");
    json_decref(bad);
    json_decref(other);
    json_decref(p);
    json_decref(again);
    json_decref(tok);
}

static void test_va_payment_completes_with_signed_callback(void **state)
{
    (void)state;
    json_t *p = pay_method("sim_va", "VA-1", 150000, "VA", NULL);
    assert_string_equal(jstr(p, "status"), "PROCESSING");
    assert_string_equal(jstr(p, "action.type"), "VA");
    const char *va = jstr(p, "action.va_number");
    assert_non_null(va);
    assert_int_equal(strlen(va), 16);
    assert_int_equal(receiver_wait(1, 0.3), 0);
    char body[128];
    snprintf(body, sizeof body, "{\"reference\":\"%s\"}", va);
    json_t *done = sim_json("POST", "/sim/complete", body, 200);
    assert_string_equal(jstr(done, "status"), "SUCCESS");
    assert_int_equal(jint(done, "fee"), 350); /* sim_va: 0.10 % plus 2.00 */
    assert_int_equal(receiver_wait(1, 5), 1);
    json_t *cb = verified_callback(0, "sim_va");
    assert_string_equal(jstr(cb, "type"), "payment.succeeded");
    assert_string_equal(jstr(cb, "channel_id"), "sim_va");
    assert_string_equal(jstr(cb, "data.payment_no"), "VA-1");
    assert_string_equal(jstr(cb, "data.channel_txn_id"), jstr(p, "channel_txn_id"));
    json_t *q = ch_json("GET", "sim_va", "/payments?payment_no=VA-1", NULL, 200);
    assert_string_equal(jstr(q, "status"), "SUCCESS");
    json_decref(q);
    json_decref(cb);
    json_decref(done);
    json_decref(p);
}

static void test_async_methods_issue_actions_and_complete(void **state)
{
    (void)state;
    json_t *otc = pay_method("sim_otc", "OTC-1", 5000, "OTC", NULL);
    assert_string_equal(jstr(otc, "action.type"), "OTC");
    assert_int_equal(strlen(jstr(otc, "action.otc_code")), 14);
    json_t *nb = pay_method("sim_netbank", "NB-1", 5000, "NETBANK", NULL);
    assert_string_equal(jstr(nb, "action.type"), "REDIRECT");
    json_t *wl = pay_method("sim_wallet", "WL-1", 5000, "WALLET", NULL);
    assert_non_null(strstr(jstr(wl, "action.app_link"), "paysim-wallet://"));
    json_t *qr = pay_method("sim_wallet", "QR-1", 5000, "QR_MERCHANT", NULL);
    assert_string_equal(jstr(qr, "action.type"), "QR");
    json_t *qb = pay_method("sim_wallet", "QB-1", 5000, "QR_BUYER",
                            ",\"buyer_code\":\"281234567890123456\"");
    assert_string_equal(jstr(qb, "status"), "PROCESSING");
    /* A buyer code is presented once. */
    pc_t_resp_t r = ch_call("POST", "sim_wallet", "/payments",
                            "{\"payment_no\":\"QB-2\",\"amount\":1,\"currency\":\"IDR\","
                            "\"method\":\"QR_BUYER\",\"buyer_code\":\"281234567890123456\"}");
    assert_int_equal(r.status, 409);
    pc_t_resp_free(&r);

    char body[256];
    snprintf(body, sizeof body, "{\"reference\":\"%s\"}", jstr(otc, "action.otc_code"));
    json_decref(sim_json("POST", "/sim/complete", body, 200));
    snprintf(body, sizeof body, "{\"reference\":\"%s\"}", jstr(qr, "action.qr_payload"));
    json_decref(sim_json("POST", "/sim/complete", body, 200));
    json_decref(sim_json("POST", "/sim/complete", "{\"reference\":\"281234567890123456\"}", 200));
    /* The buyer's browser submits the bank's form; the wallet buyer gives up. */
    pc_t_resp_t sub = pc_t_http("POST", jstr(nb, "action.url"), NULL, NULL);
    assert_int_equal(sub.status, 200);
    pc_t_resp_free(&sub);
    snprintf(body, sizeof body, "{\"reference\":\"%s\",\"outcome\":\"FAILED\"}",
             jstr(wl, "action.url"));
    json_t *gone = sim_json("POST", "/sim/complete", body, 200);
    assert_string_equal(jstr(gone, "status"), "FAILED");
    assert_string_equal(jstr(gone, "failure.code"), "BUYER_CANCELLED");
    assert_int_equal(receiver_wait(5, 5), 5);
    int succeeded = 0, failed = 0;
    for (int i = 0; i < 5; i++) {
        received_t rr = receiver_get(i);
        succeeded += strstr(rr.body, "\"payment.succeeded\"") != NULL;
        failed += strstr(rr.body, "\"payment.failed\"") != NULL;
        received_free(&rr);
    }
    assert_int_equal(succeeded, 4);
    assert_int_equal(failed, 1);
    json_decref(sim_json("POST", "/sim/complete", "{\"reference\":\"nothing-like-it\"}", 404));
    json_decref(gone);
    json_decref(otc);
    json_decref(nb);
    json_decref(wl);
    json_decref(qr);
    json_decref(qb);
}

static json_int_t stat_tasks(void)
{
    json_t *s = sim_json("GET", "/sim/stats", NULL, 200);
    json_int_t n = jint(s, "tasks");
    json_decref(s);
    return n;
}

static void test_unpaid_payment_expires_with_callback(void **state)
{
    (void)state;
    json_t *p = pay_method("sim_otc", "EXP-1", 1000, "OTC", ",\"expire_seconds\":1");
    assert_string_equal(jstr(p, "status"), "PROCESSING");
    assert_int_equal(stat_tasks(), 1);
    assert_int_equal(receiver_wait(1, 5), 1);
    json_t *cb = verified_callback(0, "sim_otc");
    assert_string_equal(jstr(cb, "type"), "payment.closed");
    assert_string_equal(jstr(cb, "data.failure.code"), "EXPIRED");
    char body[128];
    snprintf(body, sizeof body, "{\"reference\":\"%s\"}", jstr(p, "reference"));
    json_t *late = sim_json("POST", "/sim/complete", body, 409);
    assert_string_equal(jstr(late, "error.code"), "EXPIRED");
    /* A payment completed early leaves no timer behind. */
    json_t *q = pay_method("sim_otc", "EXP-2", 1000, "OTC", NULL);
    assert_int_equal(stat_tasks(), 1);
    snprintf(body, sizeof body, "{\"reference\":\"%s\"}", jstr(q, "reference"));
    json_decref(sim_json("POST", "/sim/complete", body, 200));
    assert_int_equal(receiver_wait(2, 5), 2);
    assert_int_equal(stat_tasks(), 0);
    json_decref(q);
    json_decref(late);
    json_decref(cb);
    json_decref(p);
}

static void test_closed_payment_cannot_be_paid(void **state)
{
    (void)state;
    json_t *p = pay_method("sim_va", "VA-CLOSE", 1000, "VA", NULL);
    char path[128];
    snprintf(path, sizeof path, "/payments/%s/close", jstr(p, "channel_txn_id"));
    json_t *c = ch_json("POST", "sim_va", path, "", 200);
    assert_string_equal(jstr(c, "status"), "CLOSED");
    char body[128];
    snprintf(body, sizeof body, "{\"reference\":\"%s\"}", jstr(p, "reference"));
    json_decref(sim_json("POST", "/sim/complete", body, 409));
    /* A successful payment cannot be closed. */
    json_t *s = pay_card("sim_card", "CLOSE-2", 100, "4242424242424242");
    snprintf(path, sizeof path, "/payments/%s/close", jstr(s, "channel_txn_id"));
    json_decref(ch_json("POST", "sim_card", path, "", 409));
    json_decref(s);
    json_decref(c);
    json_decref(p);
}

static void test_requests_must_be_signed(void **state)
{
    (void)state;
    char url[256];
    snprintf(url, sizeof url, "%s/ch/sim_card/payments?payment_no=x", g_sim.base);
    pc_t_resp_t r = pc_t_http("GET", url, NULL, NULL);
    assert_int_equal(r.status, 401);
    assert_non_null(strstr(r.body, "INVALID_SIGNATURE"));
    pc_t_resp_free(&r);
    char ts[24];
    snprintf(ts, sizeof ts, "X-Timestamp: %lld", (long long)time(NULL));
    const char *wrong[] = {ts, "X-Nonce: 0123456789abcdef0123", "X-Signature: AAAA", NULL};
    r = pc_t_http("GET", url, wrong, NULL);
    assert_int_equal(r.status, 401);
    pc_t_resp_free(&r);
    /* A stale timestamp, correctly signed. */
    const char *path = "/ch/sim_card/payments?payment_no=x";
    const char *nonce = "stale-nonce-0123456789";
    char old[24];
    snprintf(old, sizeof old, "%lld", (long long)time(NULL) - 3600);
    size_t len;
    char *msg = pc_sign_request_string("GET", path, old, nonce, "", 0, &len);
    char *sig = pc_hmac_sha256_sign("demo-secret-sim_card", 20, msg, len);
    char h1[64], h2[64], h3[128];
    snprintf(h1, sizeof h1, "X-Timestamp: %s", old);
    snprintf(h2, sizeof h2, "X-Nonce: %s", nonce);
    snprintf(h3, sizeof h3, "X-Signature: %s", sig);
    const char *stale[] = {h1, h2, h3, NULL};
    r = pc_t_http("GET", url, stale, NULL);
    assert_int_equal(r.status, 401);
    assert_non_null(strstr(r.body, "TIMESTAMP_EXPIRED"));
    pc_t_resp_free(&r);
    free(msg);
    free(sig);
    /* The same nonce twice. */
    snprintf(old, sizeof old, "%lld", (long long)time(NULL));
    msg = pc_sign_request_string("GET", path, old, nonce, "", 0, &len);
    sig = pc_hmac_sha256_sign("demo-secret-sim_card", 20, msg, len);
    snprintf(h1, sizeof h1, "X-Timestamp: %s", old);
    snprintf(h3, sizeof h3, "X-Signature: %s", sig);
    const char *fresh[] = {h1, h2, h3, NULL};
    r = pc_t_http("GET", url, fresh, NULL);
    assert_int_equal(r.status, 404);
    pc_t_resp_free(&r);
    r = pc_t_http("GET", url, fresh, NULL);
    assert_int_equal(r.status, 401);
    assert_non_null(strstr(r.body, "NONCE_REUSED"));
    pc_t_resp_free(&r);
    free(msg);
    free(sig);
}

static void test_refunds_and_payouts(void **state)
{
    (void)state;
    json_t *p = pay_card("sim_card", "RF-P", 1000, "4242424242424242");
    json_t *r1 = ch_json("POST", "sim_card", "/refunds",
                         "{\"refund_no\":\"RF-1\",\"payment_no\":\"RF-P\",\"amount\":400}", 200);
    assert_string_equal(jstr(r1, "status"), "SUCCESS");
    assert_string_equal(jstr(r1, "payment_channel_txn_id"), jstr(p, "channel_txn_id"));
    json_t *over = ch_json("POST", "sim_card", "/refunds",
                           "{\"refund_no\":\"RF-2\",\"payment_no\":\"RF-P\",\"amount\":601}", 422);
    assert_string_equal(jstr(over, "error.code"), "AMOUNT_EXCEEDS_REFUNDABLE");
    /* A refund that waits for the channel, then succeeds with a callback. */
    set_faults("{\"channel_id\":\"sim_card\",\"refund_delay_ms\":-1,\"payout_fee\":100}");
    json_t *r2 = ch_json("POST", "sim_card", "/refunds",
                         "{\"refund_no\":\"RF-3\",\"payment_no\":\"RF-P\",\"amount\":600}", 200);
    assert_string_equal(jstr(r2, "status"), "PROCESSING");
    json_t *q = ch_json("GET", "sim_card", "/refunds?refund_no=RF-3", NULL, 200);
    assert_string_equal(jstr(q, "status"), "PROCESSING");
    char body[128];
    snprintf(body, sizeof body, "{\"reference\":\"%s\"}", jstr(r2, "channel_txn_id"));
    json_decref(sim_json("POST", "/sim/complete", body, 200));
    assert_int_equal(receiver_wait(1, 5), 1);
    json_t *cb = verified_callback(0, "sim_card");
    assert_string_equal(jstr(cb, "type"), "refund.succeeded");
    assert_string_equal(jstr(cb, "data.refund_no"), "RF-3");
    /* And one that settles by itself. */
    set_faults("{\"channel_id\":\"sim_card2\",\"refund_delay_ms\":200}");
    json_t *p2 = pay_card("sim_card2", "RF-P2", 500, "4242424242424242");
    json_t *r3 = ch_json("POST", "sim_card2", "/refunds",
                         "{\"refund_no\":\"RF-4\",\"payment_no\":\"RF-P2\",\"amount\":500}", 200);
    assert_string_equal(jstr(r3, "status"), "PROCESSING");
    assert_int_equal(receiver_wait(2, 5), 2);
    json_t *q3 = ch_json("GET", "sim_card2", "/refunds?refund_no=RF-4", NULL, 200);
    assert_string_equal(jstr(q3, "status"), "SUCCESS");

    /* Payouts: to an account, returned later; to a bad account; to a card token. */
    json_t *po = ch_json("POST", "sim_card", "/payouts",
                         "{\"payout_no\":\"PO-1\",\"amount\":7000,\"currency\":\"CNY\","
                         "\"payee\":{\"type\":\"ACCOUNT\",\"account_no\":\"6222000011112222\","
                         "\"bank_code\":\"ICBC\",\"name\":\"M\"}}",
                         200);
    assert_string_equal(jstr(po, "status"), "SUCCESS");
    assert_string_equal(jstr(po, "payee.last4"), "2222");
    assert_int_equal(jint(po, "fee"), 100);
    snprintf(body, sizeof body, "{\"payout_ref\":\"%s\"}", jstr(po, "channel_txn_id"));
    json_t *ret = sim_json("POST", "/sim/return", body, 200);
    assert_string_equal(jstr(ret, "status"), "RETURNED");
    assert_int_equal(receiver_wait(3, 5), 3);
    json_t *cb3 = verified_callback(2, "sim_card");
    assert_string_equal(jstr(cb3, "type"), "payout.returned");
    json_t *bad = ch_json("POST", "sim_card", "/payouts",
                          "{\"payout_no\":\"PO-2\",\"amount\":7000,\"currency\":\"CNY\","
                          "\"payee\":{\"type\":\"ACCOUNT\",\"account_no\":\"6222000011110002\"}}",
                          200);
    assert_string_equal(jstr(bad, "failure.code"), "ACCOUNT_INVALID");
    json_t *tok = ch_json("POST", "sim_card", "/cards/tokenize",
                          "{\"pan\":\"4242424242424242\",\"exp_month\":7,\"exp_year\":2031}", 200);
    char pb[256];
    snprintf(pb, sizeof pb,
             "{\"payout_no\":\"PO-3\",\"amount\":100,\"currency\":\"CNY\",\"payee\":{\"type\":"
             "\"CARD\",\"card_token\":\"%s\"}}",
             jstr(tok, "card_token"));
    json_t *pc = ch_json("POST", "sim_card", "/payouts", pb, 200);
    assert_string_equal(jstr(pc, "status"), "SUCCESS");
    json_t *pq = ch_json("GET", "sim_card", "/payouts?payout_no=PO-3", NULL, 200);
    assert_string_equal(jstr(pq, "channel_txn_id"), jstr(pc, "channel_txn_id"));
    json_decref(pq);
    json_decref(pc);
    json_decref(tok);
    json_decref(bad);
    json_decref(cb3);
    json_decref(ret);
    json_decref(po);
    json_decref(q3);
    json_decref(r3);
    json_decref(p2);
    json_decref(cb);
    json_decref(q);
    json_decref(r2);
    json_decref(over);
    json_decref(r1);
    json_decref(p);
}

static void test_timeout_fault_hangs_and_nothing_happens(void **state)
{
    (void)state;
    set_faults("{\"channel_id\":\"sim_card\",\"timeout_rate\":1,\"hang_ms\":1200}");
    char *body = card_pay_body("TO-1", 1000, "4242424242424242");
    pc_t_resp_t r = ch_call("POST", "sim_card", "/payments", body);
    assert_int_equal(r.status, 504);
    assert_true(r.seconds >= 1.1);
    pc_t_resp_free(&r);
    free(body);
    set_faults("{\"channel_id\":\"sim_card\",\"timeout_rate\":0}");
    json_decref(ch_json("GET", "sim_card", "/payments?payment_no=TO-1", NULL, 404));
    json_t *f = sim_json("GET", "/sim/faked?kind=TIMEOUT", NULL, 200);
    json_t *one = json_array_get(json_object_get(f, "faked"), 0);
    assert_string_equal(jstr(one, "paycore_ref"), "TO-1");
    assert_string_equal(jstr(one, "op"), "PAY");
    assert_true(json_is_null(json_object_get(one, "channel_txn_id")));
    json_decref(f);
    /* A retry after the timeout is a fresh attempt and succeeds once. */
    json_t *p = pay_card("sim_card", "TO-1", 1000, "4242424242424242");
    assert_string_equal(jstr(p, "status"), "SUCCESS");
    json_decref(p);
}

static void test_success_after_timeout_fault_charges_and_calls_back(void **state)
{
    (void)state;
    set_faults("{\"channel_id\":\"sim_card\",\"success_after_timeout_rate\":1,"
               "\"hang_ms\":500}");
    char *body = card_pay_body("SAT-1", 1000, "4242424242424242");
    pc_t_resp_t r = ch_call("POST", "sim_card", "/payments", body);
    assert_int_equal(r.status, 504);
    pc_t_resp_free(&r);
    free(body);
    set_faults("{\"channel_id\":\"sim_card\",\"success_after_timeout_rate\":0}");
    json_t *q = ch_json("GET", "sim_card", "/payments?payment_no=SAT-1", NULL, 200);
    assert_string_equal(jstr(q, "status"), "SUCCESS");
    /* paycore never got the answer, so the channel tells it by callback. */
    assert_int_equal(receiver_wait(1, 5), 1);
    json_t *cb = verified_callback(0, "sim_card");
    assert_string_equal(jstr(cb, "data.payment_no"), "SAT-1");
    assert_int_equal(faked_count("SUCCESS_AFTER_TIMEOUT"), 1);
    char *d = today(), path[64];
    snprintf(path, sizeof path, "/statements/%s.csv", d);
    pc_t_resp_t st = ch_call("GET", "sim_card", path, NULL);
    assert_non_null(strstr(st.body, ",SAT-1,PAY,1000,CNY,6,SUCCESS,"));
    pc_t_resp_free(&st);
    free(d);
    json_decref(cb);
    json_decref(q);
}

static void test_lost_and_duplicate_callback_faults(void **state)
{
    (void)state;
    set_faults("{\"channel_id\":\"sim_otc\",\"lost_callback_rate\":1}");
    json_t *p = pay_method("sim_otc", "LOST-1", 100, "OTC", NULL);
    char body[128];
    snprintf(body, sizeof body, "{\"reference\":\"%s\"}", jstr(p, "reference"));
    json_decref(sim_json("POST", "/sim/complete", body, 200));
    assert_int_equal(receiver_wait(1, 1.0), 0);
    assert_int_equal(faked_count("LOST_CALLBACK"), 1);
    json_t *q = ch_json("GET", "sim_otc", "/payments?payment_no=LOST-1", NULL, 200);
    assert_string_equal(jstr(q, "status"), "SUCCESS");
    json_decref(q);
    json_decref(p);

    set_faults("{\"channel_id\":\"sim_otc\",\"lost_callback_rate\":0,"
               "\"duplicate_callback_rate\":1}");
    p = pay_method("sim_otc", "DUPCB-1", 100, "OTC", NULL);
    snprintf(body, sizeof body, "{\"reference\":\"%s\"}", jstr(p, "reference"));
    json_decref(sim_json("POST", "/sim/complete", body, 200));
    assert_int_equal(receiver_wait(2, 5), 2);
    json_t *a = verified_callback(0, "sim_otc"), *b = verified_callback(1, "sim_otc");
    assert_string_equal(jstr(a, "event_id"), jstr(b, "event_id"));
    assert_string_equal(jstr(a, "data.payment_no"), "DUPCB-1");
    assert_int_equal(faked_count("DUPLICATE_CALLBACK"), 1);
    json_decref(a);
    json_decref(b);
    json_decref(p);
}

static void test_callbacks_retry_until_acknowledged(void **state)
{
    (void)state;
    receiver_clear(2);
    json_t *p = pay_method("sim_va", "RETRY-1", 100, "VA", NULL);
    char body[128];
    snprintf(body, sizeof body, "{\"reference\":\"%s\"}", jstr(p, "reference"));
    json_decref(sim_json("POST", "/sim/complete", body, 200));
    assert_int_equal(receiver_wait(3, 10), 3);
    json_t *a = verified_callback(0, "sim_va"), *c = verified_callback(2, "sim_va");
    assert_string_equal(jstr(a, "event_id"), jstr(c, "event_id"));
    /* Acknowledged: nothing more comes. */
    assert_int_equal(receiver_wait(4, 1.0), 3);
    json_t *s = sim_json("GET", "/sim/stats", NULL, 200);
    json_t *cbs = json_object_get(s, "callbacks");
    assert_int_equal(jint(cbs, "delivered"), 1);
    assert_int_equal(jint(cbs, "attempts"), 3);
    assert_int_equal(jint(cbs, "pending"), 0);
    json_decref(s);
    json_decref(a);
    json_decref(c);
    json_decref(p);
}

static void test_decline_and_latency_faults(void **state)
{
    (void)state;
    set_faults("{\"channel_id\":\"sim_card2\",\"decline_rate\":1}");
    json_t *p = pay_card("sim_card2", "DEC-1", 100, "4242424242424242");
    assert_string_equal(jstr(p, "status"), "FAILED");
    assert_string_equal(jstr(p, "failure.code"), "ISSUER_UNAVAILABLE");
    assert_true(json_is_true(json_object_get(json_object_get(p, "failure"), "retryable")));
    assert_int_equal(faked_count("DECLINE"), 1);
    json_decref(p);
    set_faults("{\"channel_id\":\"sim_card2\",\"decline_rate\":0,\"latency_ms\":700}");
    char *body = card_pay_body("LAT-1", 100, "4242424242424242");
    pc_t_resp_t r = ch_call("POST", "sim_card2", "/payments", body);
    assert_int_equal(r.status, 200);
    assert_true(r.seconds >= 0.65);
    pc_t_resp_free(&r);
    free(body);
    /* Rates are fractions (the 1 above was "always"), shown as set; over 1
     * is refused. */
    json_t *f = sim_json("POST", "/sim/faults",
                         "{\"channel_id\":\"sim_card2\",\"decline_rate\":0.25}", 200);
    assert_true(json_real_value(json_object_get(json_object_get(f, "faults"), "decline_rate")) ==
                0.25);
    json_decref(f);
    json_decref(
        sim_json("POST", "/sim/faults", "{\"channel_id\":\"sim_card2\",\"decline_rate\":2}", 400));
}

static void test_statement_lists_lines_and_faked_discrepancies(void **state)
{
    (void)state;
    for (int i = 0; i < 3; i++) {
        char no[16];
        snprintf(no, sizeof no, "ST-%d", i);
        json_decref(pay_card("sim_card", no, 1000 + i, "4242424242424242"));
    }
    json_decref(pay_card("sim_card", "ST-F", 1000, "4000000000000002"));
    json_t *f = sim_json("POST", "/sim/faults",
                         "{\"channel_id\":\"sim_card\",\"statement_discrepancy\":{\"extra\":1,"
                         "\"missing\":1,\"amount_mismatch\":1,\"fee_mismatch\":1,"
                         "\"status_mismatch\":1}}",
                         200);
    assert_int_equal(jint(f, "extra_lines_added"), 1);
    json_decref(f);
    for (int i = 0; i < 5; i++) {
        char no[16];
        snprintf(no, sizeof no, "SD-%d", i);
        json_decref(pay_card("sim_card", no, 2000, "4242424242424242"));
    }
    char *d = today(), path[64];
    snprintf(path, sizeof path, "/statements/%s.csv", d);
    pc_t_resp_t st = ch_call("GET", "sim_card", path, NULL);
    assert_int_equal(st.status, 200);
    assert_non_null(strstr(st.body, "channel_ref,paycore_ref,type,amount,currency,fee,status,"
                                    "time\n"));
    assert_non_null(strstr(st.body, ",ST-0,PAY,1000,CNY,6,SUCCESS,"));
    assert_non_null(strstr(st.body, ",ST-2,PAY,1002,CNY,6,SUCCESS,"));
    assert_non_null(strstr(st.body, ",ST-F,PAY,1000,CNY,0,FAILED,"));
    /* The next SUCCESS lines after the order, in order: missing, amount, fee, status. */
    assert_null(strstr(st.body, ",SD-0,"));
    assert_non_null(strstr(st.body, ",SD-1,PAY,1999,CNY,12,SUCCESS,"));
    assert_non_null(strstr(st.body, ",SD-2,PAY,2000,CNY,13,SUCCESS,"));
    assert_non_null(strstr(st.body, ",SD-3,PAY,2000,CNY,0,FAILED,"));
    assert_non_null(strstr(st.body, ",SD-4,PAY,2000,CNY,12,SUCCESS,"));
    /* paysim says what it faked, and the extra line is in the file. */
    json_t *fk = sim_json("GET", "/sim/faked?channel_id=sim_card", NULL, 200);
    json_t *counts = json_object_get(fk, "counts");
    assert_int_equal(jint(counts, "STATEMENT_EXTRA_LINE"), 1);
    assert_int_equal(jint(counts, "STATEMENT_MISSING_LINE"), 1);
    assert_int_equal(jint(counts, "STATEMENT_AMOUNT_MISMATCH"), 1);
    assert_int_equal(jint(counts, "STATEMENT_FEE_MISMATCH"), 1);
    assert_int_equal(jint(counts, "STATEMENT_STATUS_MISMATCH"), 1);
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(fk, "faked"), i, e)
    {
        const char *kind = jstr(e, "kind");
        assert_string_equal(jstr(e, "statement_date"), d);
        if (!strcmp(kind, "STATEMENT_EXTRA_LINE")) {
            char line[160];
            snprintf(line, sizeof line, "%s,%s,PAY,%lld,CNY,", jstr(e, "channel_txn_id"),
                     jstr(e, "paycore_ref"), (long long)jint(e, "actual"));
            assert_non_null(strstr(st.body, line));
        } else if (!strcmp(kind, "STATEMENT_MISSING_LINE")) {
            assert_string_equal(jstr(e, "paycore_ref"), "SD-0");
        } else if (!strcmp(kind, "STATEMENT_AMOUNT_MISMATCH")) {
            assert_string_equal(jstr(e, "paycore_ref"), "SD-1");
            assert_int_equal(jint(e, "expected"), 2000);
            assert_int_equal(jint(e, "actual"), 1999);
        } else if (!strcmp(kind, "STATEMENT_STATUS_MISMATCH")) {
            assert_string_equal(jstr(e, "expected_status"), "SUCCESS");
            assert_string_equal(jstr(e, "actual_status"), "FAILED");
        }
    }
    /* The same file every time it is fetched. */
    pc_t_resp_t st2 = ch_call("GET", "sim_card", path, NULL);
    assert_string_equal(st.body, st2.body);
    pc_t_resp_free(&st2);
    /* Another day is empty but for the header; a bad name is 404. */
    pc_t_resp_t other = ch_call("GET", "sim_card", "/statements/2001-01-01.csv", NULL);
    assert_string_equal(other.body, "channel_ref,paycore_ref,type,amount,currency,fee,status,"
                                    "time\n");
    pc_t_resp_free(&other);
    pc_t_resp_t badname = ch_call("GET", "sim_card", "/statements/2001-02-30.csv", NULL);
    assert_int_equal(badname.status, 404);
    pc_t_resp_free(&badname);
    json_decref(fk);
    pc_t_resp_free(&st);
    free(d);
}

static void test_chargeback_file_has_the_0259_payment(void **state)
{
    (void)state;
    json_t *disputed = pay_card("sim_card", "CB-1", 4200, "4000000000000259");
    assert_string_equal(jstr(disputed, "status"), "SUCCESS");
    json_t *plain = pay_card("sim_card", "CB-2", 900, "4242424242424242");
    char body[160];
    snprintf(body, sizeof body,
             "{\"channel_txn_id\":\"%s\",\"amount\":500,\"reason_code\":\"13.1\"}",
             jstr(plain, "channel_txn_id"));
    json_t *cb = sim_json("POST", "/sim/chargeback", body, 200);
    assert_int_equal(jint(cb, "amount"), 500);
    char *d = today(), path[64], line[160];
    snprintf(path, sizeof path, "/chargebacks/%s.csv", d);
    pc_t_resp_t r = ch_call("GET", "sim_card", path, NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "chargeback_ref,channel_ref,paycore_ref,amount,currency,"
                                   "reason_code,time,respond_by\n"));
    snprintf(line, sizeof line, ",%s,CB-1,4200,CNY,10.4,", jstr(disputed, "channel_txn_id"));
    assert_non_null(strstr(r.body, line));
    snprintf(line, sizeof line, ",%s,CB-2,500,CNY,13.1,", jstr(plain, "channel_txn_id"));
    assert_non_null(strstr(r.body, line));
    pc_t_resp_free(&r);
    /* Only successful payments can be disputed. */
    json_t *failed = pay_card("sim_card", "CB-3", 900, "4000000000000002");
    snprintf(body, sizeof body, "{\"channel_txn_id\":\"%s\"}", jstr(failed, "channel_txn_id"));
    json_decref(sim_json("POST", "/sim/chargeback", body, 409));
    json_decref(failed);
    free(d);
    json_decref(cb);
    json_decref(plain);
    json_decref(disputed);
}

/* Which of 40 payments the decline fault hits, as a string of 0/1. */
static void decline_pattern(char out[41], const char *prefix)
{
    set_faults("{\"channel_id\":\"sim_card\",\"decline_rate\":0.5}");
    for (int i = 0; i < 40; i++) {
        char no[32];
        snprintf(no, sizeof no, "%s-%d", prefix, i);
        json_t *p = pay_card("sim_card", no, 100, "4242424242424242");
        out[i] = !strcmp(jstr(p, "status"), "FAILED") ? '1' : '0';
        json_decref(p);
    }
    out[40] = 0;
}

static void test_same_seed_gives_same_faults(void **state)
{
    char a[41], b[41], c[41];
    decline_pattern(a, "SEED-A");
    reset(state);
    decline_pattern(b, "SEED-B");
    assert_string_equal(a, b);
    assert_non_null(strchr(a, '0'));
    assert_non_null(strchr(a, '1'));
    /* Another seed, another pattern. */
    json_decref(sim_json("POST", "/sim/reset", "{\"seed\":4242}", 200));
    decline_pattern(c, "SEED-C");
    assert_string_not_equal(a, c);
}

static void test_2000_payments_each_charged_once(void **state)
{
    (void)state;
    for (int i = 0; i < 2000; i++) {
        char no[32];
        snprintf(no, sizeof no, "BULK-%04d", i);
        char *body = card_pay_body(no, 100 + i, "4242424242424242");
        int rounds = i % 10 == 0 ? 2 : 1; /* every tenth is retried */
        for (int k = 0; k < rounds; k++) {
            pc_t_resp_t r = ch_call("POST", "sim_card", "/payments", body);
            assert_int_equal(r.status, 200);
            pc_t_resp_free(&r);
        }
        free(body);
    }
    json_t *t = sim_json("GET", "/sim/txns?channel_id=sim_card&type=PAY&status=SUCCESS", NULL, 200);
    assert_int_equal(jint(t, "count"), 2000);
    json_t *seen = json_object();
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(t, "txns"), i, e)
    {
        assert_null(json_object_get(seen, jstr(e, "paycore_ref")));
        json_object_set_new(seen, jstr(e, "paycore_ref"), json_true());
    }
    assert_int_equal(json_object_size(seen), 2000);
    json_decref(seen);
    json_decref(t);
}

static void test_clock_offset_moves_the_business_date(void **state)
{
    (void)state;
    json_t *c = sim_json("POST", "/sim/clock", "{\"offset_seconds\":86400}", 200);
    char date[16];
    snprintf(date, sizeof date, "%s", jstr(c, "business_date"));
    json_decref(c);
    json_decref(pay_card("sim_card", "CLK-1", 100, "4242424242424242"));
    char path[64];
    snprintf(path, sizeof path, "/statements/%s.csv", date);
    pc_t_resp_t r = ch_call("GET", "sim_card", path, NULL);
    assert_non_null(strstr(r.body, ",CLK-1,PAY,100,"));
    pc_t_resp_free(&r);
}

static void test_memory_bounded_by_max_txns(void **state)
{
    (void)state;
    /* A second, small paysim; the shared one is put back afterwards. */
    paysim_t main_sim = g_sim, small;
    paysim_start(&small, g_rx.port, "100");
    g_sim = small;
    for (int i = 0; i < 250; i++) {
        char no[32];
        snprintf(no, sizeof no, "CAP-%d", i);
        json_decref(pay_method("sim_va", no, 1000, "VA", NULL));
    }
    json_t *s = sim_json("GET", "/sim/stats", NULL, 200);
    assert_int_equal(jint(s, "txns"), 100);
    /* Forgotten payments took their expiry timers with them. */
    assert_int_equal(jint(s, "tasks"), 100);
    json_decref(s);
    json_decref(ch_json("GET", "sim_va", "/payments?payment_no=CAP-0", NULL, 404));
    json_decref(ch_json("GET", "sim_va", "/payments?payment_no=CAP-249", NULL, 200));
    int st = paysim_stop(&g_sim);
    g_sim = main_sim;
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

/* Runs last: nothing paysim wrote in this whole run holds a card number or
 * a CVV. */
static void test_no_card_number_in_logs(void **state)
{
    (void)state;
    json_decref(pay_card("sim_card", "LOG-1", 100, "4000000000009995"));
    json_decref(pay_card("sim_card", "LOG-2", 100, "4000000000000119"));
    json_t *t = sim_json("GET", "/sim/txns", NULL, 200);
    char *text = json_dumps(t, 0);
    assert_null(strstr(text, "4242424242424242"));
    assert_null(strstr(text, "4000000000009995"));
    free(text);
    json_decref(t);
    /* The log did record the payments (written by paysim's log thread:
     * waited for, so that the checks below read what it wrote). */
    int written = 0;
    for (int i = 0; i < 100 && !written; i++) {
        written = pc_t_sh("grep -q LOG-2 %s", g_sim.log) == 0;
        if (!written)
            usleep(50000);
    }
    assert_true(written);
    static const char *const pans[] = {"4242424242424242", "5555555555554444", "4000000000000002",
                                       "4000000000009995", "4000000000000119", "4000000000000259",
                                       "4000000000003220"};
    for (size_t i = 0; i < sizeof pans / sizeof pans[0]; i++)
        assert_int_not_equal(pc_t_sh("grep -q %s %s", pans[i], g_sim.log), 0);
    assert_int_not_equal(pc_t_sh("grep -q '\"cvv\"' %s", g_sim.log), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_card_numbers_answer_per_test_data_table, reset),
        cmocka_unit_test_setup(test_3ds_card_succeeds_after_challenge_with_callback, reset),
        cmocka_unit_test_setup(test_same_payment_no_twice_charges_once, reset),
        cmocka_unit_test_setup(test_tokenize_then_pay_by_token, reset),
        cmocka_unit_test_setup(test_va_payment_completes_with_signed_callback, reset),
        cmocka_unit_test_setup(test_async_methods_issue_actions_and_complete, reset),
        cmocka_unit_test_setup(test_unpaid_payment_expires_with_callback, reset),
        cmocka_unit_test_setup(test_closed_payment_cannot_be_paid, reset),
        cmocka_unit_test_setup(test_requests_must_be_signed, reset),
        cmocka_unit_test_setup(test_refunds_and_payouts, reset),
        cmocka_unit_test_setup(test_timeout_fault_hangs_and_nothing_happens, reset),
        cmocka_unit_test_setup(test_success_after_timeout_fault_charges_and_calls_back, reset),
        cmocka_unit_test_setup(test_lost_and_duplicate_callback_faults, reset),
        cmocka_unit_test_setup(test_callbacks_retry_until_acknowledged, reset),
        cmocka_unit_test_setup(test_decline_and_latency_faults, reset),
        cmocka_unit_test_setup(test_statement_lists_lines_and_faked_discrepancies, reset),
        cmocka_unit_test_setup(test_chargeback_file_has_the_0259_payment, reset),
        cmocka_unit_test_setup(test_same_seed_gives_same_faults, reset),
        cmocka_unit_test_setup(test_2000_payments_each_charged_once, reset),
        cmocka_unit_test_setup(test_clock_offset_moves_the_business_date, reset),
        cmocka_unit_test_setup(test_memory_bounded_by_max_txns, reset),
        cmocka_unit_test_setup(test_no_card_number_in_logs, reset),
    };
    return cmocka_run_group_tests_name("paysim", tests, group_setup, group_teardown);
}
