/* channel/client against a real paysim process and a real Redis: the api.md
 * test cards, tokens, every asynchronous method, queries after the buyer
 * paid, refunds, payouts, daily files, a timeout fault, answers that do not
 * verify, callbacks (real ones from paysim, received by an HTTP server on the
 * test's own loop, and hand-signed ones, tampered or stale), health shared by
 * two clients through Redis, and cancellation on close.
 *
 * paysim is started once for the group (reset before each test); each test
 * gets a fresh loop, Redis connection and key prefix (so health counters
 * never leak between tests), client and callback receiver, and asserts
 * uv_loop_close() == 0 at teardown. The channels directory is a copy of
 * channels/ in which sim_card2 answers within 1 s at most. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "harness.h"

#include "auth/sign.h"
#include "channel/client.h"
#include "channel/health.h"
#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"
#include "http/server.h"
#include "kv/kv.h"

#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SEED 7
#define SHORT_CHANNEL "sim_card2" /* request_ms lowered to SHORT_MS in the copy */
#define SHORT_MS 1000

static const char *const PANS[] = {"4242424242424242", "5555555555554444", "4000000000000002",
                                   "4000000000009995", "4000000000000119", "4000000000000259",
                                   "4000000000003220"};

/* ---- paysim and the channels directory ------------------------------------- */

static struct {
    pid_t pid;
    int port;
    char base[64];
    char log[600];
    char dir[64]; /* the channels copy */
    pc_channels_t *chs;
    int test_no;
} g;

static void paysim_start(void)
{
    g.port = pc_t_reserve_port();
    snprintf(g.base, sizeof g.base, "http://127.0.0.1:%d", g.port);
    char logdir[520], port[16], seed[16], bin[600];
    snprintf(logdir, sizeof logdir, "%s/test-logs", pc_t_binary_dir());
    pc_t_sh("mkdir -p %s", logdir);
    snprintf(g.log, sizeof g.log, "%s/paysim-chc-%d.log", logdir, (int)getpid());
    snprintf(port, sizeof port, "%d", g.port);
    snprintf(seed, sizeof seed, "%d", SEED);
    snprintf(bin, sizeof bin, "%s/paysim", pc_t_binary_dir());
    pid_t parent = getpid();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        int fd = open(g.log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        execl(bin, "paysim", "--port", port, "--seed", seed, "--callback-retry-ms", "100",
              (char *)NULL);
        _exit(127);
    }
    g.pid = pid;
    char url[128];
    snprintf(url, sizeof url, "%s/healthz", g.base);
    for (int i = 0; i < 200; i++) {
        pc_t_resp_t r = pc_t_http("GET", url, NULL, NULL);
        long st = r.status;
        pc_t_resp_free(&r);
        if (st == 200)
            return;
        int wst;
        if (waitpid(pid, &wst, WNOHANG) == pid)
            fail_msg("paysim exited during start; see %s", g.log);
        usleep(50000);
    }
    fail_msg("paysim did not come up");
}

static int paysim_stop(void)
{
    if (!g.pid)
        return -1;
    kill(g.pid, SIGTERM);
    int st = 0;
    for (int i = 0; i < 300; i++) {
        if (waitpid(g.pid, &st, WNOHANG) == g.pid) {
            g.pid = 0;
            return st;
        }
        usleep(50000);
    }
    kill(g.pid, SIGKILL);
    waitpid(g.pid, &st, 0);
    g.pid = 0;
    return st;
}

static json_t *sim_json(const char *method, const char *path, const char *body, long want)
{
    char url[640];
    snprintf(url, sizeof url, "%s%s", g.base, path);
    pc_t_resp_t r = pc_t_http(method, url, NULL, body);
    if (r.status != want)
        fail_msg("%s %s: status %ld, want %ld: %s", method, path, r.status, want, r.body);
    json_t *j = pc_t_json(&r);
    assert_non_null(j);
    pc_t_resp_free(&r);
    return j;
}

static void set_faults(const char *json)
{
    json_decref(sim_json("POST", "/sim/faults", json, 200));
}

static void sim_complete(const char *reference)
{
    char body[256];
    snprintf(body, sizeof body, "{\"reference\":\"%s\"}", reference);
    json_decref(sim_json("POST", "/sim/complete", body, 200));
}

/* Copies the channel files into a temporary directory, shortening one
 * channel's timeout, and loads it with PAYSIM_PORT pointing at our paysim. */
static void channels_load(void)
{
    snprintf(g.dir, sizeof g.dir, "/tmp/chc-channels-XXXXXX");
    assert_non_null(mkdtemp(g.dir));
    assert_int_equal(pc_t_sh("cp %s/channels/*.json %s/", pc_t_source_dir(), g.dir), 0);
    char path[128];
    snprintf(path, sizeof path, "%s/%s.json", g.dir, SHORT_CHANNEL);
    json_t *ch = json_load_file(path, 0, NULL);
    assert_non_null(ch);
    json_object_set_new(ch, "timeouts",
                        json_pack("{s:i,s:i}", "connect_ms", 500, "request_ms", SHORT_MS));
    assert_int_equal(json_dump_file(ch, path, JSON_INDENT(2)), 0);
    json_decref(ch);
    char port[16];
    snprintf(port, sizeof port, "%d", g.port);
    setenv("PAYSIM_PORT", port, 1);
    g.chs = pc_channels_new(g.dir, true);
    assert_non_null(g.chs);
    assert_int_equal(pc_channels_reload(g.chs), 0);
    const pc_channel_t *c = pc_channels_find(g.chs, "sim_card");
    assert_non_null(c);
    char want[128];
    snprintf(want, sizeof want, "http://127.0.0.1:%d/ch/sim_card", g.port);
    assert_string_equal(c->endpoint, want);
    assert_int_equal(pc_channels_find(g.chs, SHORT_CHANNEL)->timeouts.request_ms, SHORT_MS);
}

/* ---- The per-test fixture: loop, Redis, client, callback receiver ----------------- */

typedef struct {
    char channel[40];
    char ts[32], nonce[80], sig[128];
    char *body;
    size_t len;
    int rc;
    pc_ch_callback_t cb;
} received_t;

typedef struct {
    uv_loop_t loop;
    uv_timer_t tick;
    pc_kv_t *kv, *kv2;
    pc_channel_client_t *cli, *cli2;
    pc_router_t *router;
    pc_http_server_t *server;
    char prefix[64];
    char callback_base[64];
    received_t rx[32];
    int nrx;
    int closing; /* parts still closing at teardown */
} fx_t;

static fx_t *g_fx;

static void tick_cb(uv_timer_t *t)
{
    (void)t;
}

/* Runs the loop until *counter reaches want or timeout_ms passes; returns
 * whether it got there. A ticking timer keeps the loop from blocking forever. */
static bool run_until(fx_t *f, const int *counter, int want, uint64_t timeout_ms)
{
    uv_update_time(&f->loop);
    uint64_t deadline = uv_now(&f->loop) + timeout_ms;
    uv_timer_start(&f->tick, tick_cb, 10, 10);
    while (*counter < want && uv_now(&f->loop) < deadline)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_timer_stop(&f->tick);
    return *counter >= want;
}

static void run_for(fx_t *f, uint64_t ms)
{
    int never = 0;
    run_until(f, &never, 1, ms);
}

static void callback_handler(pc_http_req_t *req, void *data)
{
    fx_t *f = data;
    size_t len;
    const char *body = pc_http_req_body(req, &len);
    const char *ts = pc_http_req_header(req, "X-Timestamp");
    const char *nonce = pc_http_req_header(req, "X-Nonce");
    const char *sig = pc_http_req_header(req, "X-Signature");
    const char *channel = pc_http_req_param(req, "channel_id");
    const char *why = NULL;
    if (f->nrx < (int)(sizeof f->rx / sizeof f->rx[0])) {
        received_t *r = &f->rx[f->nrx];
        snprintf(r->channel, sizeof r->channel, "%s", channel ? channel : "");
        snprintf(r->ts, sizeof r->ts, "%s", ts ? ts : "");
        snprintf(r->nonce, sizeof r->nonce, "%s", nonce ? nonce : "");
        snprintf(r->sig, sizeof r->sig, "%s", sig ? sig : "");
        r->body = strndup(body ? body : "", len);
        r->len = len;
        r->rc = pc_channel_verify_callback(f->cli, channel, pc_http_req_method(req),
                                           pc_http_req_target(req), ts, nonce, sig, body, len,
                                           &r->cb, &why);
        f->nrx++;
        if (r->rc < 0) {
            pc_http_respond(req, 401, "text/plain", "refused", 7);
            return;
        }
    }
    pc_http_respond(req, 200, "text/plain", "success", 7);
}

static void wait_kv_ready(fx_t *f, pc_kv_t *kv)
{
    for (int i = 0; i < 300 && !pc_kv_ready(kv); i++)
        run_for(f, 10);
    assert_true(pc_kv_ready(kv));
}

static int setup(void **state)
{
    char body[64];
    snprintf(body, sizeof body, "{\"seed\":%d}", SEED);
    json_decref(sim_json("POST", "/sim/reset", body, 200));
    fx_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    uv_timer_init(&f->loop, &f->tick);
    const char *redis = getenv("PC_TEST_REDIS_URL");
    assert_non_null(redis);
    snprintf(f->prefix, sizeof f->prefix, "chc:%d:%d:", (int)getpid(), ++g.test_no);
    f->kv = pc_kv_new(&f->loop, redis, 1000, f->prefix);
    assert_non_null(f->kv);
    wait_kv_ready(f, f->kv);
    f->router = pc_router_new();
    assert_int_equal(
        pc_router_add(f->router, "POST", "/channel-callbacks/{channel_id}", callback_handler, f),
        0);
    pc_http_server_opts_t so = {.host = "127.0.0.1",
                                .port = 0,
                                .max_connections = 64,
                                .max_header_bytes = 16384,
                                .max_body_bytes = 65536,
                                .idle_timeout_ms = 10000,
                                .request_timeout_ms = 5000,
                                .name = "callbacks"};
    f->server = pc_http_server_start(&f->loop, &so, f->router);
    assert_non_null(f->server);
    snprintf(f->callback_base, sizeof f->callback_base, "http://127.0.0.1:%d/",
             pc_http_server_port(f->server));
    pc_metrics_reset();
    f->cli = pc_channel_client_new(&f->loop, g.chs, f->kv, f->callback_base);
    assert_non_null(f->cli);
    g_fx = f;
    *state = f;
    return 0;
}

static void part_closed(void *data)
{
    fx_t *f = data;
    f->closing--;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    int zero = 0;
    f->closing = 0;
    if (f->cli) {
        f->closing++;
        pc_channel_client_close(f->cli, part_closed, f);
    }
    if (f->cli2) {
        f->closing++;
        pc_channel_client_close(f->cli2, part_closed, f);
    }
    f->closing++;
    pc_http_server_stop(f->server, part_closed, f);
    /* Let the clients go first: they may still wait for Redis. */
    for (int i = 0; i < 500 && f->closing > 1; i++)
        run_for(f, 10);
    f->closing++;
    pc_kv_close(f->kv, part_closed, f);
    if (f->kv2) {
        f->closing++;
        pc_kv_close(f->kv2, part_closed, f);
    }
    for (int i = 0; i < 500 && f->closing > 0; i++)
        run_for(f, 10);
    assert_int_equal(f->closing, zero);
    uv_close((uv_handle_t *)&f->tick, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    pc_router_free(f->router);
    for (int i = 0; i < f->nrx; i++)
        free(f->rx[i].body);
    free(f);
    g_fx = NULL;
    return 0;
}

static int group_setup(void **state)
{
    (void)state;
    paysim_start();
    channels_load();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    pc_channels_free(g.chs);
    pc_t_sh("rm -rf %s", g.dir);
    int st = paysim_stop();
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "paysim did not exit cleanly (status %d); see %s\n", st, g.log);
        return -1;
    }
    return 0;
}

/* ---- Calls ------------------------------------------------------------------------------ */

typedef struct {
    int done;
    pc_ch_result_t r;
    json_t *action; /* a copy */
} got_t;

static void got_cb(void *data, const pc_ch_result_t *r)
{
    got_t *g2 = data;
    g2->r = *r;
    g2->r.action = NULL;
    g2->action = r->action ? json_deep_copy(r->action) : NULL;
    g2->done++;
}

static void got_free(got_t *x)
{
    json_decref(x->action);
    x->action = NULL;
}

static void wait_got(fx_t *f, got_t *x)
{
    if (!run_until(f, &x->done, 1, 15000))
        fail_msg("the channel call did not finish");
    assert_int_equal(x->done, 1);
}

static got_t pay(fx_t *f, const pc_ch_pay_t *req)
{
    got_t x = {0};
    int rc = pc_channel_pay(f->cli, req, got_cb, &x);
    if (rc < 0)
        fail_msg("pc_channel_pay: %s", pc_strerror(rc));
    wait_got(f, &x);
    return x;
}

static got_t pay_card_on(fx_t *f, const char *channel, const char *no, const char *pan,
                         int exp_year)
{
    pc_ch_card_t card = {.pan = pan, .exp_month = 12, .exp_year = exp_year, .cvv = "123"};
    pc_ch_pay_t req = {.channel_id = channel,
                       .payment_no = no,
                       .amount = 1000,
                       .currency = "CNY",
                       .method = "CARD",
                       .card = &card};
    return pay(f, &req);
}

static got_t pay_card(fx_t *f, const char *no, const char *pan)
{
    return pay_card_on(f, "sim_card", no, pan, 2099);
}

static got_t pay_method(fx_t *f, const char *channel, const char *no, const char *method,
                        const char *buyer_code)
{
    pc_ch_pay_t req = {.channel_id = channel,
                       .payment_no = no,
                       .amount = 5000,
                       .currency = "CNY",
                       .method = method,
                       .buyer_code = buyer_code};
    return pay(f, &req);
}

static got_t query_payment(fx_t *f, const char *channel, const char *no)
{
    got_t x = {0};
    assert_int_equal(pc_channel_query_payment(f->cli, channel, no, got_cb, &x), 0);
    wait_got(f, &x);
    return x;
}

static void assert_failed(const got_t *x, const char *code, int retryable)
{
    if (x->r.status != PC_CH_FAILED || strcmp(x->r.code, code) != 0 || x->r.retryable != retryable)
        fail_msg("want FAILED %s retryable %d, got status %d %s retryable %d (%s)", code, retryable,
                 x->r.status, x->r.code, x->r.retryable, x->r.message);
}

/* Reads a whole file into a new string. */
static char *slurp(const char *path)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *s = calloc(1, (size_t)n + 1);
    assert_non_null(s);
    assert_int_equal(fread(s, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    return s;
}

/* ---- Cards ------------------------------------------------------------------------------ */

static void test_each_test_card_maps_to_its_status_code_and_retryable(void **state)
{
    fx_t *f = *state;
    /* Everything this process logs during the payments goes to a file. */
    char logpath[600];
    snprintf(logpath, sizeof logpath, "%s/test-logs/chc-cards-%d.log", pc_t_binary_dir(),
             (int)getpid());
    /* Log lines are written by a thread of their own: each side of the
     * capture waits until they are out. */
    assert_int_equal(pc_log_flush(5000), 0);
    int saved = dup(2);
    int fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    dup2(fd, 2);
    close(fd);
    pc_log_set_level(PC_LOG_DEBUG);

    static const struct {
        const char *pan;
        pc_ch_status_t status;
        const char *code;
        int retryable;
        const char *brand;
    } cases[] = {
        {"4242424242424242", PC_CH_SUCCESS, "", 0, "VISA"},
        {"5555555555554444", PC_CH_SUCCESS, "", 0, "MASTERCARD"},
        {"4000000000000002", PC_CH_FAILED, "CARD_DECLINED", 0, "VISA"},
        {"4000000000009995", PC_CH_FAILED, "INSUFFICIENT_FUNDS", 0, "VISA"},
        {"4000000000000119", PC_CH_FAILED, "PROCESSING_ERROR", 1, "VISA"},
        {"4000000000000259", PC_CH_SUCCESS, "", 0, "VISA"},
        {"4000000000003220", PC_CH_PROCESSING, "", 0, "VISA"},
    };
    got_t got[7];
    for (size_t i = 0; i < 7; i++) {
        char no[32];
        snprintf(no, sizeof no, "CARD-%zu", i);
        got[i] = pay_card(f, no, cases[i].pan);
    }
    /* Content errors of the card are declines too, never retryable. */
    got_t expired = pay_card_on(f, "sim_card", "CARD-EXP", "4242424242424242", 2020);
    got_t luhn = pay_card(f, "CARD-LUHN", "4242424242424241");
    assert_int_equal(pc_log_flush(5000), 0);
    dup2(saved, 2);
    close(saved);
    pc_log_set_level(PC_LOG_INFO);

    for (size_t i = 0; i < 7; i++) {
        const pc_ch_result_t *r = &got[i].r;
        if (r->status != cases[i].status || strcmp(r->code, cases[i].code) != 0 ||
            r->retryable != cases[i].retryable)
            fail_msg("%s: got status %d code %s retryable %d", cases[i].pan, r->status, r->code,
                     r->retryable);
        assert_true(strncmp(r->channel_txn_id, "pay_", 4) == 0);
        assert_int_equal(r->amount, 1000);
        /* What may be kept about the card, never the number itself. */
        assert_true(strncmp(r->card_token, "tok_", 4) == 0);
        assert_string_equal(r->card_brand, cases[i].brand);
        assert_int_equal(strlen(r->card_bin), 6);
        assert_memory_equal(r->card_bin, cases[i].pan, 6);
        assert_string_equal(r->card_last4, cases[i].pan + 12);
        assert_null(strstr(r->card_token, cases[i].pan + 6));
        if (cases[i].status == PC_CH_SUCCESS)
            assert_int_equal(r->fee, 6); /* sim_card: 0.60 % of 10.00 */
    }
    /* The 3-D Secure card waits for the cardholder: a redirect to the challenge. */
    json_t *a = got[6].action;
    assert_non_null(a);
    assert_string_equal(json_string_value(json_object_get(a, "type")), "REDIRECT");
    assert_non_null(strstr(json_string_value(json_object_get(a, "url")), "/sim/redirect/3ds_"));
    assert_true(json_is_string(json_object_get(a, "expires_at")));
    assert_int_equal(json_object_size(a), 3);
    for (int i = 0; i < 7; i++)
        if (i != 6)
            assert_null(got[i].action);
    assert_failed(&expired, "EXPIRED_CARD", 0);
    assert_failed(&luhn, "INVALID_CARD_NUMBER", 0);

    /* The logs have a line per call, and no card number anywhere. */
    char *logs = slurp(logpath);
    assert_non_null(strstr(logs, "\"event\":\"channel.call\""));
    assert_non_null(strstr(logs, "\"reference\":\"CARD-4\""));
    assert_non_null(strstr(logs, "\"code\":\"PROCESSING_ERROR\""));
    for (size_t i = 0; i < sizeof PANS / sizeof PANS[0]; i++)
        if (strstr(logs, PANS[i]))
            fail_msg("card number %s found in our logs", PANS[i]);
    assert_null(strstr(logs, "4242424242424241"));
    assert_null(strstr(logs, "\"cvv\""));
    free(logs);
    char *simlog = slurp(g.log);
    for (size_t i = 0; i < sizeof PANS / sizeof PANS[0]; i++)
        assert_null(strstr(simlog, PANS[i]));
    free(simlog);

    assert_int_equal(pc_metrics_get("pc_channel_calls_total",
                                    "channel=\"sim_card\",op=\"pay\",status=\"success\""),
                     3);
    assert_int_equal(pc_metrics_get("pc_channel_calls_total",
                                    "channel=\"sim_card\",op=\"pay\",status=\"failed\""),
                     5);
    for (int i = 0; i < 7; i++)
        got_free(&got[i]);
}

static void test_tokenize_then_quick_pay_by_token(void **state)
{
    fx_t *f = *state;
    pc_ch_card_t card = {
        .pan = "5555555555554444", .exp_month = 7, .exp_year = 2031, .holder = "A. Buyer"};
    got_t t = {0};
    assert_int_equal(pc_channel_tokenize(f->cli, "sim_card", &card, got_cb, &t), 0);
    wait_got(f, &t);
    assert_int_equal(t.r.status, PC_CH_SUCCESS);
    assert_true(strncmp(t.r.card_token, "tok_", 4) == 0);
    assert_string_equal(t.r.card_brand, "MASTERCARD");
    assert_string_equal(t.r.card_bin, "555555");
    assert_string_equal(t.r.card_last4, "4444");

    pc_ch_pay_t req = {.channel_id = "sim_card",
                       .payment_no = "QP-1",
                       .amount = 2500,
                       .currency = "CNY",
                       .method = "QUICK_PAY",
                       .card_token = t.r.card_token};
    got_t p = pay(f, &req);
    assert_int_equal(p.r.status, PC_CH_SUCCESS);
    assert_string_equal(p.r.card_token, t.r.card_token);
    assert_string_equal(p.r.card_last4, "4444");
    assert_int_equal(p.r.amount, 2500);

    /* A token from another channel means nothing here. */
    req.channel_id = "sim_card2";
    req.payment_no = "QP-2";
    got_t other = pay(f, &req);
    assert_failed(&other, "TOKEN_NOT_FOUND", 0);

    /* A card the channel refuses to tokenize. */
    pc_ch_card_t bad = {.pan = "4242424242424241", .exp_month = 7, .exp_year = 2031};
    got_t b = {0};
    assert_int_equal(pc_channel_tokenize(f->cli, "sim_card", &bad, got_cb, &b), 0);
    wait_got(f, &b);
    assert_failed(&b, "INVALID_CARD", 0);
}

/* ---- Asynchronous methods ------------------------------------------------------------ */

static void assert_action(json_t *a, const char *type, const char *key)
{
    if (!a)
        fail_msg("no action for %s", type);
    assert_string_equal(json_string_value(json_object_get(a, "type")), type);
    const char *v = json_string_value(json_object_get(a, key));
    assert_non_null(v);
    assert_true(strlen(v) > 0);
    assert_true(json_is_string(json_object_get(a, "expires_at")));
    /* Exactly api.md's shape: type, one value, expires_at. */
    assert_int_equal(json_object_size(a), 3);
}

static void test_async_methods_answer_processing_with_api_actions(void **state)
{
    fx_t *f = *state;
    got_t va = pay_method(f, "sim_va", "VA-1", "VA", NULL);
    got_t otc = pay_method(f, "sim_otc", "OTC-1", "OTC", NULL);
    got_t qr = pay_method(f, "sim_wallet", "QR-1", "QR_MERCHANT", NULL);
    got_t nb = pay_method(f, "sim_netbank", "NB-1", "NETBANK", NULL);
    got_t wl = pay_method(f, "sim_wallet", "WL-1", "WALLET", NULL);
    got_t qb = pay_method(f, "sim_wallet", "QB-1", "QR_BUYER", "281234567890123456");
    got_t *all[] = {&va, &otc, &qr, &nb, &wl, &qb};
    for (size_t i = 0; i < 6; i++) {
        assert_int_equal(all[i]->r.status, PC_CH_PROCESSING);
        assert_true(strncmp(all[i]->r.channel_txn_id, "pay_", 4) == 0);
        assert_string_equal(all[i]->r.code, "");
    }
    assert_action(va.action, "VA", "va_number");
    assert_int_equal(strlen(json_string_value(json_object_get(va.action, "va_number"))), 16);
    assert_action(otc.action, "OTC", "otc_code");
    assert_action(qr.action, "QR", "qr_payload");
    assert_action(nb.action, "REDIRECT", "url");
    assert_action(wl.action, "REDIRECT", "url");
    /* The buyer confirms a presented code in their own app: nothing to show. */
    assert_null(qb.action);

    /* The buyer pays; a query then says SUCCESS, and the callback comes. */
    sim_complete(json_string_value(json_object_get(va.action, "va_number")));
    got_t q = query_payment(f, "sim_va", "VA-1");
    assert_int_equal(q.r.status, PC_CH_SUCCESS);
    assert_string_equal(q.r.channel_txn_id, va.r.channel_txn_id);
    assert_int_equal(q.r.amount, 5000);
    assert_int_equal(q.r.fee, 205); /* sim_va: 0.10 % + 2.00 */
    assert_null(q.action);
    assert_true(run_until(f, &f->nrx, 1, 5000));
    received_t *rx = &f->rx[0];
    assert_int_equal(rx->rc, 0);
    assert_string_equal(rx->channel, "sim_va");
    assert_int_equal(rx->cb.kind, PC_CB_PAYMENT);
    assert_string_equal(rx->cb.ref, "VA-1");
    assert_int_equal(rx->cb.result.status, PC_CH_SUCCESS);
    assert_string_equal(rx->cb.result.channel_txn_id, va.r.channel_txn_id);
    assert_int_equal(rx->cb.result.amount, 5000);

    /* The wallet's buyer gives up: FAILED, final, not the channel's fault. */
    char body[600];
    snprintf(body, sizeof body, "{\"reference\":\"%s\",\"outcome\":\"FAILED\"}",
             json_string_value(json_object_get(wl.action, "url")));
    json_decref(sim_json("POST", "/sim/complete", body, 200));
    got_t w = query_payment(f, "sim_wallet", "WL-1");
    assert_failed(&w, "BUYER_CANCELLED", 0);
    /* A payment still waiting is PROCESSING, with its action again. */
    got_t o = query_payment(f, "sim_otc", "OTC-1");
    assert_int_equal(o.r.status, PC_CH_PROCESSING);
    assert_action(o.action, "OTC", "otc_code");
    for (size_t i = 0; i < 6; i++)
        got_free(all[i]);
    got_free(&o);
}

/* ---- Callbacks ---------------------------------------------------------------------------- */

/* A callback signed the way paysim's notify.c signs one. */
static char *sign_callback(const char *channel, const char *ts, const char *nonce, const char *body)
{
    char secret[64];
    snprintf(secret, sizeof secret, "demo-secret-%s", channel);
    size_t len;
    char *msg = pc_sign_notify_string(ts, nonce, body, strlen(body), &len);
    char *sig = pc_hmac_sha256_sign(secret, strlen(secret), msg, len);
    free(msg);
    return sig;
}

static int verify(fx_t *f, const char *channel, const char *ts, const char *nonce, const char *sig,
                  const char *body, pc_ch_callback_t *out, const char **why)
{
    char target[64];
    snprintf(target, sizeof target, "/channel-callbacks/%s", channel);
    return pc_channel_verify_callback(f->cli, channel, "POST", target, ts, nonce, sig, body,
                                      strlen(body), out, why);
}

static void test_callbacks_verify_and_tampered_or_stale_ones_are_refused(void **state)
{
    fx_t *f = *state;
    /* A real refund callback from paysim. */
    got_t p = pay_card(f, "CB-P", "4242424242424242");
    set_faults("{\"channel_id\":\"sim_card\",\"refund_delay_ms\":200}");
    pc_ch_refund_t rf = {.channel_id = "sim_card",
                         .refund_no = "CB-R",
                         .channel_txn_id = p.r.channel_txn_id,
                         .amount = 300,
                         .currency = "CNY"};
    got_t r = {0};
    assert_int_equal(pc_channel_refund(f->cli, &rf, got_cb, &r), 0);
    wait_got(f, &r);
    assert_int_equal(r.r.status, PC_CH_PROCESSING);
    assert_true(run_until(f, &f->nrx, 1, 5000));
    received_t *rx = &f->rx[0];
    assert_int_equal(rx->rc, 0);
    assert_int_equal(rx->cb.kind, PC_CB_REFUND);
    assert_string_equal(rx->cb.ref, "CB-R");
    assert_int_equal(rx->cb.result.status, PC_CH_SUCCESS);
    assert_int_equal(rx->cb.result.amount, 300);
    assert_null(rx->cb.result.action);

    /* The same bytes verify again (a replay is harmless to paycore). */
    pc_ch_callback_t out;
    const char *why = NULL;
    assert_int_equal(verify(f, "sim_card", rx->ts, rx->nonce, rx->sig, rx->body, &out, &why), 0);
    /* One flipped bit in the body, the timestamp, or the nonce: refused. */
    char *tampered = strdup(rx->body);
    char *amount = strstr(tampered, "\"amount\":300");
    assert_non_null(amount);
    amount[10] = '9';
    assert_int_equal(verify(f, "sim_card", rx->ts, rx->nonce, rx->sig, tampered, &out, &why),
                     PC_EINVAL);
    assert_non_null(why);
    assert_non_null(strstr(why, "X-Signature"));
    char ts2[32];
    snprintf(ts2, sizeof ts2, "%lld", atoll(rx->ts) - 1);
    assert_int_equal(verify(f, "sim_card", ts2, rx->nonce, rx->sig, rx->body, &out, &why),
                     PC_EINVAL);
    /* Signed with another channel's secret. */
    assert_int_equal(verify(f, "sim_card2", rx->ts, rx->nonce, rx->sig, rx->body, &out, &why),
                     PC_EINVAL);
    assert_int_equal(verify(f, "no_such_channel", rx->ts, rx->nonce, rx->sig, rx->body, &out, &why),
                     PC_ENOTFOUND);
    assert_int_equal(verify(f, "sim_card", rx->ts, rx->nonce, NULL, rx->body, &out, &why),
                     PC_EINVAL);
    free(tampered);

    /* Hand-signed callbacks: a failed payment, a returned payout, a stale one. */
    char ts[32], nonce[33];
    snprintf(ts, sizeof ts, "%lld", (long long)time(NULL));
    assert_int_equal(pc_random_hex(nonce, sizeof nonce, 16), 0);
    const char *failed =
        "{\"event_id\":\"evt_1\",\"type\":\"payment.failed\",\"channel_id\":\"sim_card2\","
        "\"data\":{\"object\":\"payment\",\"channel_id\":\"sim_card2\",\"channel_txn_id\":"
        "\"pay_x1\",\"payment_no\":\"HS-1\",\"status\":\"FAILED\",\"amount\":700,\"currency\":"
        "\"CNY\",\"fee\":0,\"failure\":{\"code\":\"ISSUER_UNAVAILABLE\",\"message\":\"down\","
        "\"retryable\":true},\"card\":{\"token\":\"tok_9\",\"brand\":\"VISA\",\"bin\":\"424242\","
        "\"last4\":\"4242\"}}}";
    char *sig = sign_callback("sim_card2", ts, nonce, failed);
    assert_int_equal(verify(f, "sim_card2", ts, nonce, sig, failed, &out, &why), 0);
    assert_int_equal(out.kind, PC_CB_PAYMENT);
    assert_string_equal(out.ref, "HS-1");
    assert_int_equal(out.result.status, PC_CH_FAILED);
    assert_string_equal(out.result.code, "ISSUER_UNAVAILABLE");
    assert_int_equal(out.result.retryable, 1);
    assert_string_equal(out.result.card_token, "tok_9");
    /* The same body claimed by another channel's path. */
    char *sig_other = sign_callback("sim_card", ts, nonce, failed);
    assert_int_equal(verify(f, "sim_card", ts, nonce, sig_other, failed, &out, &why), PC_EINVAL);
    assert_non_null(strstr(why, "another channel"));
    free(sig_other);
    free(sig);

    const char *returned =
        "{\"event_id\":\"evt_2\",\"type\":\"payout.returned\",\"channel_id\":\"sim_card\","
        "\"data\":{\"object\":\"payout\",\"channel_id\":\"sim_card\",\"channel_txn_id\":"
        "\"po_x\",\"payout_no\":\"HS-PO\",\"status\":\"RETURNED\",\"amount\":900,\"currency\":"
        "\"CNY\",\"fee\":100,\"failure\":null,\"return_reason\":\"R03\"}}";
    sig = sign_callback("sim_card", ts, nonce, returned);
    assert_int_equal(verify(f, "sim_card", ts, nonce, sig, returned, &out, &why), 0);
    assert_int_equal(out.kind, PC_CB_PAYOUT);
    assert_string_equal(out.ref, "HS-PO");
    assert_int_equal(out.result.status, PC_CH_RETURNED);
    assert_string_equal(out.result.code, "R03");
    free(sig);

    char old[32];
    snprintf(old, sizeof old, "%lld", (long long)time(NULL) - 301);
    sig = sign_callback("sim_card", old, nonce, returned);
    assert_int_equal(verify(f, "sim_card", old, nonce, sig, returned, &out, &why), PC_EINVAL);
    assert_non_null(strstr(why, "X-Timestamp"));
    free(sig);
    /* Signed correctly, but not a callback we can read. */
    const char *junk = "{\"event_id\":\"evt_3\",\"data\":{\"object\":\"payment\"}}";
    sig = sign_callback("sim_card", ts, nonce, junk);
    assert_int_equal(verify(f, "sim_card", ts, nonce, sig, junk, &out, &why), PC_EINVAL);
    free(sig);
}

/* ---- Timeouts and answers that cannot be believed ------------------------------------------ */

static void test_timeout_fault_is_unknown_within_the_channel_timeout(void **state)
{
    fx_t *f = *state;
    set_faults("{\"channel_id\":\"" SHORT_CHANNEL "\",\"timeout_rate\":1,\"hang_ms\":4000}");
    uint64_t t0 = uv_hrtime();
    got_t x = pay_card_on(f, SHORT_CHANNEL, "TO-1", "4242424242424242", 2099);
    uint64_t ms = (uv_hrtime() - t0) / 1000000;
    assert_int_equal(x.r.status, PC_CH_UNKNOWN);
    assert_string_equal(x.r.code, "TIMEOUT");
    assert_true(ms >= SHORT_MS - 50 && ms < SHORT_MS + 1000);
    assert_true(x.r.elapsed_ms >= SHORT_MS - 50 && x.r.elapsed_ms < SHORT_MS + 1000);
    /* The request was "lost": the channel has no such payment, which a query
     * tells as a retryable FAILED (nothing happened there). */
    set_faults("{\"channel_id\":\"" SHORT_CHANNEL "\",\"timeout_rate\":0}");
    got_t q = query_payment(f, SHORT_CHANNEL, "TO-1");
    assert_failed(&q, "NOT_FOUND", 1);
    assert_int_equal(pc_metrics_get("pc_channel_calls_total",
                                    "channel=\"" SHORT_CHANNEL "\",op=\"pay\",status=\"unknown\""),
                     1);
}

static void test_success_after_timeout_is_unknown_then_found_by_query(void **state)
{
    fx_t *f = *state;
    set_faults("{\"channel_id\":\"" SHORT_CHANNEL "\",\"success_after_timeout_rate\":1,"
               "\"hang_ms\":3000}");
    got_t x = pay_card_on(f, SHORT_CHANNEL, "SAT-1", "4242424242424242", 2099);
    assert_int_equal(x.r.status, PC_CH_UNKNOWN);
    set_faults("{\"channel_id\":\"" SHORT_CHANNEL "\",\"success_after_timeout_rate\":0}");
    got_t q = query_payment(f, SHORT_CHANNEL, "SAT-1");
    assert_int_equal(q.r.status, PC_CH_SUCCESS);
    assert_string_equal(q.r.card_last4, "4242");
}

static void test_answer_signed_with_another_secret_is_unknown(void **state)
{
    fx_t *f = *state;
    /* Our secret for sim_card now differs from paysim's: paysim refuses the
     * request and signs its refusal with its secret, which we cannot verify —
     * so even the refusal is not believed. */
    setenv("PAYCORE_CHANNEL_SECRET_SIM_CARD", "not-the-channel-secret", 1);
    got_t x = pay_card(f, "SIG-1", "4242424242424242");
    unsetenv("PAYCORE_CHANNEL_SECRET_SIM_CARD");
    assert_int_equal(x.r.status, PC_CH_UNKNOWN);
    assert_string_equal(x.r.code, "BAD_SIGNATURE");
    /* With the right secret again, the same payment goes through. */
    got_t y = pay_card(f, "SIG-1", "4242424242424242");
    assert_int_equal(y.r.status, PC_CH_SUCCESS);
}

/* ---- Refunds, payouts, files ------------------------------------------------------------- */

static got_t refund(fx_t *f, const pc_ch_refund_t *rf)
{
    got_t x = {0};
    assert_int_equal(pc_channel_refund(f->cli, rf, got_cb, &x), 0);
    wait_got(f, &x);
    return x;
}

static void test_refund_and_refund_query(void **state)
{
    fx_t *f = *state;
    got_t p = pay_card(f, "RF-P", "4242424242424242");
    assert_int_equal(p.r.status, PC_CH_SUCCESS);
    pc_ch_refund_t rf = {.channel_id = "sim_card",
                         .refund_no = "RF-1",
                         .payment_no = "RF-P",
                         .channel_txn_id = p.r.channel_txn_id,
                         .amount = 400,
                         .currency = "CNY"};
    got_t r1 = refund(f, &rf);
    assert_int_equal(r1.r.status, PC_CH_SUCCESS);
    assert_true(strncmp(r1.r.channel_txn_id, "ref_", 4) == 0 || r1.r.channel_txn_id[0]);
    assert_int_equal(r1.r.amount, 400);
    got_t q = {0};
    assert_int_equal(pc_channel_query_refund(f->cli, "sim_card", "RF-1", got_cb, &q), 0);
    wait_got(f, &q);
    assert_int_equal(q.r.status, PC_CH_SUCCESS);
    assert_string_equal(q.r.channel_txn_id, r1.r.channel_txn_id);

    rf.refund_no = "RF-2";
    rf.amount = 601;
    got_t over = refund(f, &rf);
    assert_failed(&over, "AMOUNT_EXCEEDS_REFUNDABLE", 0);

    /* A refund that waits for the channel. */
    set_faults("{\"channel_id\":\"sim_card\",\"refund_delay_ms\":-1}");
    rf.refund_no = "RF-3";
    rf.amount = 600;
    rf.channel_txn_id = NULL; /* by our payment number only */
    got_t r3 = refund(f, &rf);
    assert_int_equal(r3.r.status, PC_CH_PROCESSING);
    assert_null(r3.action);
    got_t q3 = {0};
    assert_int_equal(pc_channel_query_refund(f->cli, "sim_card", "RF-3", got_cb, &q3), 0);
    wait_got(f, &q3);
    assert_int_equal(q3.r.status, PC_CH_PROCESSING);
    sim_complete(r3.r.channel_txn_id);
    got_t q4 = {0};
    assert_int_equal(pc_channel_query_refund(f->cli, "sim_card", "RF-3", got_cb, &q4), 0);
    wait_got(f, &q4);
    assert_int_equal(q4.r.status, PC_CH_SUCCESS);
    /* Unknown refund number. */
    got_t none = {0};
    assert_int_equal(pc_channel_query_refund(f->cli, "sim_card", "RF-NONE", got_cb, &none), 0);
    wait_got(f, &none);
    assert_failed(&none, "NOT_FOUND", 1);
}

static got_t payout(fx_t *f, const char *no, const char *account)
{
    json_t *payee = json_pack("{s:s,s:s,s:s,s:s}", "type", "ACCOUNT", "account_no", account,
                              "bank_code", "ICBC", "name", "M. Erchant");
    pc_ch_payout_t req = {.channel_id = "sim_card",
                          .payout_no = no,
                          .amount = 7000,
                          .currency = "CNY",
                          .payee = payee};
    got_t x = {0};
    assert_int_equal(pc_channel_payout(f->cli, &req, got_cb, &x), 0);
    json_decref(payee);
    wait_got(f, &x);
    return x;
}

static got_t query_payout(fx_t *f, const char *no)
{
    got_t x = {0};
    assert_int_equal(pc_channel_query_payout(f->cli, "sim_card", no, got_cb, &x), 0);
    wait_got(f, &x);
    return x;
}

static void test_payout_and_payout_query(void **state)
{
    fx_t *f = *state;
    set_faults("{\"channel_id\":\"sim_card\",\"payout_fee\":100}");
    got_t ok = payout(f, "PO-1", "6222000011112222");
    assert_int_equal(ok.r.status, PC_CH_SUCCESS);
    assert_int_equal(ok.r.amount, 7000);
    assert_int_equal(ok.r.fee, 100);
    got_t q = query_payout(f, "PO-1");
    assert_int_equal(q.r.status, PC_CH_SUCCESS);
    assert_string_equal(q.r.channel_txn_id, ok.r.channel_txn_id);
    got_t bad = payout(f, "PO-2", "6222000011110002");
    assert_failed(&bad, "ACCOUNT_INVALID", 0);
    got_t down = payout(f, "PO-3", "6222000011110119");
    assert_failed(&down, "BANK_UNAVAILABLE", 1);
    /* The bank sends the first one back. */
    char body[128];
    snprintf(body, sizeof body, "{\"payout_ref\":\"%s\"}", ok.r.channel_txn_id);
    json_decref(sim_json("POST", "/sim/return", body, 200));
    got_t back = query_payout(f, "PO-1");
    assert_int_equal(back.r.status, PC_CH_RETURNED);
    assert_true(back.r.code[0]);
    assert_true(run_until(f, &f->nrx, 1, 5000));
    assert_int_equal(f->rx[0].rc, 0);
    assert_int_equal(f->rx[0].cb.kind, PC_CB_PAYOUT);
    assert_string_equal(f->rx[0].cb.ref, "PO-1");
    assert_int_equal(f->rx[0].cb.result.status, PC_CH_RETURNED);
}

typedef struct {
    int done;
    int status;
    char *body;
} file_got_t;

static void file_cb(void *data, int status, const char *body, size_t len)
{
    file_got_t *x = data;
    x->status = status;
    x->body = body ? strndup(body, len) : NULL;
    x->done++;
}

static void test_statement_and_chargeback_files_are_fetched(void **state)
{
    fx_t *f = *state;
    got_t p = pay_card(f, "FILE-1", "4000000000000259");
    assert_int_equal(p.r.status, PC_CH_SUCCESS);
    json_t *clock = sim_json("GET", "/sim/clock", NULL, 200);
    char date[16];
    snprintf(date, sizeof date, "%s", json_string_value(json_object_get(clock, "business_date")));
    json_decref(clock);

    file_got_t st = {0};
    assert_int_equal(pc_channel_fetch_file(f->cli, "sim_card", "statements", date, file_cb, &st),
                     0);
    assert_true(run_until(f, &st.done, 1, 10000));
    assert_int_equal(st.status, 0);
    assert_non_null(st.body);
    assert_non_null(strstr(st.body, ",FILE-1,PAY,1000,CNY,6,SUCCESS,"));
    file_got_t cb = {0};
    assert_int_equal(pc_channel_fetch_file(f->cli, "sim_card", "chargebacks", date, file_cb, &cb),
                     0);
    assert_true(run_until(f, &cb.done, 1, 10000));
    assert_int_equal(cb.status, 0);
    assert_non_null(strstr(cb.body, "FILE-1"));
    free(st.body);
    free(cb.body);
    /* Arguments are checked before anything is sent. */
    assert_int_equal(
        pc_channel_fetch_file(f->cli, "sim_card", "statements", "2026-1-01", file_cb, &st),
        PC_EINVAL);
    assert_int_equal(pc_channel_fetch_file(f->cli, "sim_card", "secrets", date, file_cb, &st),
                     PC_EINVAL);
    assert_int_equal(pc_channel_fetch_file(f->cli, "nope", "statements", date, file_cb, &st),
                     PC_ENOTFOUND);
}

/* ---- Health --------------------------------------------------------------------------------- */

static int g_refreshed;

static void refreshed_cb(void *data)
{
    (void)data;
    g_refreshed++;
}

static void refresh(fx_t *f, pc_channel_client_t *cli, const char *channel)
{
    int before = g_refreshed;
    assert_int_equal(pc_channel_health_refresh(cli, channel, refreshed_cb, NULL), 0);
    assert_true(run_until(f, &g_refreshed, before + 1, 5000));
}

static json_int_t health_int(json_t *h, const char *key)
{
    return json_integer_value(json_object_get(h, key));
}

static void pay_many(fx_t *f, const char *prefix, int n, const char *pan,
                     pc_ch_status_t want_status, const char *want_code)
{
    for (int i = 0; i < n; i++) {
        char no[48];
        snprintf(no, sizeof no, "%s-%d", prefix, i);
        got_t x = pay_card(f, no, pan);
        assert_int_equal(x.r.status, want_status);
        assert_string_equal(x.r.code, want_code);
        got_free(&x);
    }
}

static void test_retryable_failures_make_channel_unhealthy_for_every_node(void **state)
{
    fx_t *f = *state;
    int rate, lat, healthy;
    refresh(f, f->cli, "sim_card");
    pc_channel_health_get(f->cli, "sim_card", &rate, &lat, &healthy);
    assert_int_equal(rate, 10000);
    assert_int_equal(healthy, 1);

    pay_many(f, "OK", 10, "4242424242424242", PC_CH_SUCCESS, "");
    set_faults("{\"channel_id\":\"sim_card\",\"decline_rate\":1}");
    pay_many(f, "DOWN", 9, "4242424242424242", PC_CH_FAILED, "ISSUER_UNAVAILABLE");
    /* 9 failures in 19 attempts: too few attempts to judge. */
    refresh(f, f->cli, "sim_card");
    pc_channel_health_get(f->cli, "sim_card", &rate, &lat, &healthy);
    assert_int_equal(rate, 10 * 10000 / 19);
    assert_int_equal(healthy, 1);
    pay_many(f, "DOWN2", 6, "4242424242424242", PC_CH_FAILED, "ISSUER_UNAVAILABLE");
    refresh(f, f->cli, "sim_card");
    pc_channel_health_get(f->cli, "sim_card", &rate, &lat, &healthy);
    assert_int_equal(rate, 10 * 10000 / 25);
    assert_int_equal(healthy, 0);
    assert_true(lat >= 0 && lat < 1000);
    json_t *h = pc_channel_health(f->cli, "sim_card");
    assert_int_equal(health_int(h, "attempts"), 25);
    assert_int_equal(health_int(h, "failures"), 15);
    assert_int_equal(health_int(h, "declines"), 0);
    assert_int_equal(health_int(h, "success_rate_bp"), 4000);
    assert_true(json_is_false(json_object_get(h, "healthy")));
    assert_string_equal(json_string_value(json_object_get(h, "source")), "redis");
    json_decref(h);
    assert_int_equal(pc_metrics_get("pc_channel_success_rate_bp", "channel=\"sim_card\""), 4000);
    assert_int_equal(pc_metrics_get("pc_channel_healthy", "channel=\"sim_card\""), 0);
    /* Status queries (of payments it knows and does not) are answered but
     * not counted: before, each counted as a success, and the repair job's
     * queries of waiting payments hid the pays' failure rate. */
    for (int i = 0; i < 30; i++) {
        got_t q = query_payment(f, "sim_card", i % 2 ? "OK-1" : "NOPE-1");
        got_free(&q);
    }
    refresh(f, f->cli, "sim_card");
    h = pc_channel_health(f->cli, "sim_card");
    assert_int_equal(health_int(h, "attempts"), 25);
    assert_true(json_is_false(json_object_get(h, "healthy")));
    json_decref(h);

    /* A second node (its own Redis connection and client, no calls of its
     * own) sees the same numbers. */
    const char *redis = getenv("PC_TEST_REDIS_URL");
    f->kv2 = pc_kv_new(&f->loop, redis, 1000, f->prefix);
    wait_kv_ready(f, f->kv2);
    f->cli2 = pc_channel_client_new(&f->loop, g.chs, f->kv2, f->callback_base);
    assert_non_null(f->cli2);
    refresh(f, f->cli2, "sim_card");
    json_t *h2 = pc_channel_health(f->cli2, "sim_card");
    assert_int_equal(health_int(h2, "attempts"), 25);
    assert_int_equal(health_int(h2, "failures"), 15);
    assert_true(json_is_false(json_object_get(h2, "healthy")));
    json_decref(h2);
    /* Other channels are untouched. */
    pc_channel_health_get(f->cli2, "sim_card2", &rate, &lat, &healthy);
    assert_int_equal(healthy, 1);
    /* An unknown channel is never a healthy candidate. */
    pc_channel_health_get(f->cli, "nope", &rate, &lat, &healthy);
    assert_int_equal(healthy, 0);
    assert_null(pc_channel_health(f->cli, "nope"));
}

static void test_business_declines_keep_channel_healthy(void **state)
{
    fx_t *f = *state;
    pay_many(f, "DECL", 15, "4000000000000002", PC_CH_FAILED, "CARD_DECLINED");
    pay_many(f, "NSF", 10, "4000000000009995", PC_CH_FAILED, "INSUFFICIENT_FUNDS");
    refresh(f, f->cli, "sim_card");
    int rate, lat, healthy;
    pc_channel_health_get(f->cli, "sim_card", &rate, &lat, &healthy);
    assert_int_equal(rate, 10000);
    assert_int_equal(healthy, 1);
    json_t *h = pc_channel_health(f->cli, "sim_card");
    assert_int_equal(health_int(h, "attempts"), 25);
    assert_int_equal(health_int(h, "failures"), 0);
    assert_int_equal(health_int(h, "declines"), 25);
    assert_true(json_is_true(json_object_get(h, "healthy")));
    json_decref(h);
    /* Against the same number of retryable ones, which do count. */
    pay_many(f, "RETRY", 25, "4000000000000119", PC_CH_FAILED, "PROCESSING_ERROR");
    refresh(f, f->cli, "sim_card");
    pc_channel_health_get(f->cli, "sim_card", &rate, &lat, &healthy);
    assert_int_equal(rate, 5000);
    assert_int_equal(healthy, 0);
}

/* Starts n card payments on cli at once and waits for all of them. */
static int pay_parallel(fx_t *f, pc_channel_client_t *cli, const char *prefix, int n,
                        pc_ch_status_t want)
{
    got_t x[32];
    memset(x, 0, sizeof x);
    pc_ch_card_t card = {.pan = "4242424242424242", .exp_month = 1, .exp_year = 2099, .cvv = "999"};
    for (int i = 0; i < n && i < 32; i++) {
        char no[32];
        snprintf(no, sizeof no, "%s-%d", prefix, i);
        pc_ch_pay_t req = {.channel_id = SHORT_CHANNEL,
                           .payment_no = no,
                           .amount = 100,
                           .currency = "CNY",
                           .method = "CARD",
                           .card = &card};
        assert_int_equal(pc_channel_pay(cli, &req, got_cb, &x[i]), 0);
    }
    int matched = 0;
    for (int i = 0; i < n && i < 32; i++) {
        wait_got(f, &x[i]);
        matched += x[i].r.status == want;
    }
    return matched;
}

static void test_timeouts_count_as_failures_and_local_numbers_serve_without_redis(void **state)
{
    fx_t *f = *state;
    set_faults("{\"channel_id\":\"" SHORT_CHANNEL "\",\"timeout_rate\":1,\"hang_ms\":2000}");
    assert_int_equal(pay_parallel(f, f->cli, "TOH", 20, PC_CH_UNKNOWN), 20);
    refresh(f, f->cli, SHORT_CHANNEL);
    json_t *h = pc_channel_health(f->cli, SHORT_CHANNEL);
    assert_int_equal(health_int(h, "attempts"), 20);
    assert_int_equal(health_int(h, "failures"), 20);
    assert_true(health_int(h, "latency_ms") >= SHORT_MS - 50);
    assert_true(json_is_false(json_object_get(h, "healthy")));
    assert_string_equal(json_string_value(json_object_get(h, "source")), "redis");
    json_decref(h);

    /* A node whose Redis is down keeps its own numbers and judges by them. */
    f->kv2 = pc_kv_new(&f->loop, "redis://127.0.0.1:1/0", 200, f->prefix);
    assert_non_null(f->kv2);
    f->cli2 = pc_channel_client_new(&f->loop, g.chs, f->kv2, f->callback_base);
    assert_non_null(f->cli2);
    assert_int_equal(pay_parallel(f, f->cli2, "TOL", 20, PC_CH_UNKNOWN), 20);
    h = pc_channel_health(f->cli2, SHORT_CHANNEL);
    assert_string_equal(json_string_value(json_object_get(h, "source")), "local");
    assert_int_equal(health_int(h, "attempts"), 20);
    assert_int_equal(health_int(h, "failures"), 20);
    assert_true(json_is_false(json_object_get(h, "healthy")));
    json_decref(h);
    int rate, lat, healthy;
    pc_channel_health_get(f->cli2, SHORT_CHANNEL, &rate, &lat, &healthy);
    assert_int_equal(rate, 0);
    assert_int_equal(healthy, 0);
    /* Its calls never reached Redis: the shared numbers did not move. */
    refresh(f, f->cli, SHORT_CHANNEL);
    h = pc_channel_health(f->cli, SHORT_CHANNEL);
    assert_int_equal(health_int(h, "attempts"), 20);
    json_decref(h);
    /* A healthy stretch on the same channel brings it back. */
    set_faults("{\"channel_id\":\"" SHORT_CHANNEL "\",\"timeout_rate\":0}");
    for (int round = 0; round < 15; round++) {
        char prefix[16];
        snprintf(prefix, sizeof prefix, "BACK%d", round);
        assert_int_equal(pay_parallel(f, f->cli, prefix, 32, PC_CH_SUCCESS), 32);
    }
    refresh(f, f->cli, SHORT_CHANNEL);
    pc_channel_health_get(f->cli, SHORT_CHANNEL, &rate, &lat, &healthy);
    assert_int_equal(rate, 480 * 10000 / 500);
    assert_int_equal(healthy, 1);
}

/* ---- Arguments, switches, close -------------------------------------------------------------- */

static void never_cb(void *data, const pc_ch_result_t *r)
{
    (void)data;
    (void)r;
    fail_msg("a refused call must never call back");
}

static void test_bad_arguments_and_disabled_channels_are_refused_at_once(void **state)
{
    fx_t *f = *state;
    pc_ch_card_t card = {.pan = "4242424242424242", .exp_month = 1, .exp_year = 2099, .cvv = "1"};
    pc_ch_pay_t req = {.channel_id = "sim_card",
                       .payment_no = "ARG-1",
                       .amount = 100,
                       .currency = "CNY",
                       .method = "CARD",
                       .card = &card};
    req.amount = 0;
    assert_int_equal(pc_channel_pay(f->cli, &req, never_cb, NULL), PC_EINVAL);
    req.amount = 100;
    req.payment_no = "has space";
    assert_int_equal(pc_channel_pay(f->cli, &req, never_cb, NULL), PC_EINVAL);
    req.payment_no = "ARG-1";
    req.method = "VA"; /* not a method of sim_card */
    assert_int_equal(pc_channel_pay(f->cli, &req, never_cb, NULL), PC_EINVAL);
    req.method = "QUICK_PAY"; /* needs a token */
    assert_int_equal(pc_channel_pay(f->cli, &req, never_cb, NULL), PC_EINVAL);
    req.method = "CARD";
    req.channel_id = "nope";
    assert_int_equal(pc_channel_pay(f->cli, &req, never_cb, NULL), PC_ENOTFOUND);
    /* An ops switch turns a channel off for payments, not for queries. */
    assert_int_equal(pc_channels_set_override(g.chs, "sim_card", 0), 0);
    req.channel_id = "sim_card";
    assert_int_equal(pc_channel_pay(f->cli, &req, never_cb, NULL), PC_ENOTFOUND);
    got_t q = {0};
    assert_int_equal(pc_channel_query_payment(f->cli, "sim_card", "ARG-1", got_cb, &q), 0);
    assert_int_equal(pc_channels_set_override(g.chs, "sim_card", -1), 0);
    wait_got(f, &q);
    assert_failed(&q, "NOT_FOUND", 1);
    got_t ok = pay_card(f, "ARG-1", "4242424242424242");
    assert_int_equal(ok.r.status, PC_CH_SUCCESS);
    assert_int_equal(pc_channel_query_payment(f->cli, "sim_card", "", never_cb, NULL), PC_EINVAL);
}

static int g_closed;

static void closed_cb(void *data)
{
    (void)data;
    g_closed++;
}

static void test_close_ends_calls_in_flight_as_unknown(void **state)
{
    fx_t *f = *state;
    set_faults("{\"channel_id\":\"sim_card\",\"timeout_rate\":1,\"hang_ms\":3000}");
    pc_ch_card_t card = {.pan = "4242424242424242", .exp_month = 1, .exp_year = 2099, .cvv = "123"};
    pc_ch_pay_t req = {.channel_id = "sim_card",
                       .payment_no = "CLOSE-1",
                       .amount = 100,
                       .currency = "CNY",
                       .method = "CARD",
                       .card = &card};
    got_t x = {0};
    assert_int_equal(pc_channel_pay(f->cli, &req, got_cb, &x), 0);
    file_got_t fl = {0};
    assert_int_equal(
        pc_channel_fetch_file(f->cli, "sim_card", "statements", "2026-01-01", file_cb, &fl), 0);
    run_for(f, 200);
    assert_int_equal(x.done, 0);
    int before = g_closed;
    pc_channel_client_close(f->cli, closed_cb, NULL);
    f->cli = NULL;
    /* Calls end as the close starts; the client goes once its handles do. */
    assert_int_equal(x.done, 1);
    assert_int_equal(x.r.status, PC_CH_UNKNOWN);
    assert_string_equal(x.r.code, "CANCELLED");
    assert_true(fl.done == 1 || run_until(f, &fl.done, 1, 1000));
    assert_true(fl.status == PC_ECLOSED || fl.status == 0);
    free(fl.body);
    assert_true(run_until(f, &g_closed, before + 1, 3000));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_each_test_card_maps_to_its_status_code_and_retryable,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_tokenize_then_quick_pay_by_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_async_methods_answer_processing_with_api_actions,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_callbacks_verify_and_tampered_or_stale_ones_are_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_fault_is_unknown_within_the_channel_timeout,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_success_after_timeout_is_unknown_then_found_by_query,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_answer_signed_with_another_secret_is_unknown, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_refund_and_refund_query, setup, teardown),
        cmocka_unit_test_setup_teardown(test_payout_and_payout_query, setup, teardown),
        cmocka_unit_test_setup_teardown(test_statement_and_chargeback_files_are_fetched, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_retryable_failures_make_channel_unhealthy_for_every_node, setup, teardown),
        cmocka_unit_test_setup_teardown(test_business_declines_keep_channel_healthy, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_timeouts_count_as_failures_and_local_numbers_serve_without_redis, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_bad_arguments_and_disabled_channels_are_refused_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_ends_calls_in_flight_as_unknown, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
