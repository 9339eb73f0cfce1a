/* paybench: a load generator for paycore. It drives whole signed, idempotent
 * merchant flows — create trade, consult, pay by balance or by card through
 * paysim, refund — over keep-alive connections, either closed loop (a fixed
 * number of flows in flight) or open loop (flows start at a fixed rate
 * whatever the answers do, and every latency counts from the moment the flow
 * was due, so queueing inside paybench is part of it). It prints throughput,
 * p50/p90/p99/max per step and per whole flow, answers that were not 2xx by
 * step, HTTP status and error code, and the ledger check.
 *
 * Set-up (unless --merchant is given): a merchant is created on the admin
 * port; with balance payments, --buyers buyers are created and each funded
 * through a RECHARGE trade paid by card at paysim.
 *
 *   paybench --scenario healthz -c 64 -d 10
 *   paybench --scenario pay-balance --admin-port 8081 --admin-token T -c 64 -d 30
 *   paybench --scenario full --admin-port 8081 --admin-token T --rate 1000 -d 30
 *
 * One thread, one libuv loop; signing is part of the client's work. */
#include "auth/sign.h"
#include "bench/pool.h"

#include <dirent.h>
#include <getopt.h>
#include <http_parser.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <uv.h>

/* ---------- options ---------- */

typedef struct {
    const char *host;
    int port, admin_port;
    const char *admin_token;
    int connections;
    double duration, warmup, drain;
    const char *scenario;
    const char *merchant, *secret;
    const char *path;
    double rate; /* flows per second; 0: closed loop */
    int buyers;
    long long amount, fund;
    int card_percent, refund_percent, consult;
    int retries;
    long timeout_ms;
    const char *record;
    int notify_port;
    const char *note;
    int ledger_check;
    int progress;
    const char *buyer_prefix;
    int merchants;
    int history;
    int expire_seconds; /* the trades' expire_seconds; 0: the server's default */
} opts_t;

static opts_t o = {
    .host = "127.0.0.1",
    .port = 8080,
    .connections = 64,
    .duration = 10,
    .drain = 15,
    .scenario = "healthz",
    .path = "/healthz",
    .buyers = 1000,
    .amount = 100,
    .fund = 1000000,
    .refund_percent = 0,
    .timeout_ms = 30000,
    .ledger_check = 1,
    .merchants = 1,
};

/* ---------- latency histograms (log-linear, about 1.5 % resolution) ---------- */

#define H_LINEAR 128
#define H_SUB 64
#define H_BUCKETS (H_LINEAR + 40 * H_SUB)

typedef struct {
    uint64_t n, max_us;
    uint32_t b[H_BUCKETS];
} hist_t;

static int hist_index(uint64_t us)
{
    if (us < H_LINEAR)
        return (int)us;
    int e = 63 - __builtin_clzll(us); /* us >= 128 so e >= 7 */
    int sub = (int)((us >> (e - 6)) & (H_SUB - 1));
    int i = H_LINEAR + (e - 7) * H_SUB + sub;
    return i < H_BUCKETS ? i : H_BUCKETS - 1;
}

static uint64_t hist_value(int i)
{
    if (i < H_LINEAR)
        return (uint64_t)i;
    int e = (i - H_LINEAR) / H_SUB + 7, sub = (i - H_LINEAR) % H_SUB;
    uint64_t lo = ((uint64_t)(H_SUB + sub)) << (e - 6);
    return lo + ((1ull << (e - 6)) >> 1); /* middle of the bucket */
}

static void hist_add(hist_t *h, uint64_t us)
{
    h->b[hist_index(us)]++;
    h->n++;
    if (us > h->max_us)
        h->max_us = us;
}

static double hist_pct_ms(const hist_t *h, double q)
{
    if (!h->n)
        return 0;
    uint64_t target = (uint64_t)ceil((double)h->n * q), acc = 0;
    if (target == 0)
        target = 1;
    for (int i = 0; i < H_BUCKETS; i++) {
        acc += h->b[i];
        if (acc >= target) {
            uint64_t v = hist_value(i);
            return (double)(v < h->max_us ? v : h->max_us) / 1000.0;
        }
    }
    return (double)h->max_us / 1000.0;
}

/* ---------- steps, flows and what they count ---------- */

typedef enum {
    S_HEALTHZ,
    S_GET,
    S_CREATE,
    S_CONSULT,
    S_PAY_BALANCE,
    S_PAY_CARD,
    S_REFUND,
    S_COUNT
} step_t;

static const char *const step_names[S_COUNT] = {"healthz",     "signed-get", "create", "consult",
                                                "pay-balance", "pay-card",   "refund"};

typedef struct {
    hist_t lat;
    uint64_t ok;
} step_stats_t;

typedef struct {
    char key[128];
    uint64_t n;
} counter_t;

#define MAX_COUNTERS 128

typedef struct {
    step_stats_t step[S_COUNT];
    hist_t flow;    /* whole flow, from the moment it was due */
    hist_t payment; /* create + pay of flows that paid, from the moment due */
    uint64_t flows_done, flows_failed, payments, payments_in_window, flows_in_window;
    counter_t errors[MAX_COUNTERS];
    int nerrors;
    counter_t pay_status[16];
    int npay_status;
    uint64_t retries;
} stats_t;

static stats_t st;       /* the measured phase */
static stats_t setup_st; /* buyer funding */

static void count(counter_t *tab, int *n, int cap, const char *key)
{
    for (int i = 0; i < *n; i++)
        if (!strcmp(tab[i].key, key)) {
            tab[i].n++;
            return;
        }
    if (*n == cap)
        return;
    snprintf(tab[*n].key, sizeof tab[*n].key, "%s", key);
    tab[*n].n = 1;
    (*n)++;
}

typedef struct flow {
    struct flow *next; /* retry list */
    stats_t *stats;    /* NULL: warm-up, not counted */
    uint64_t due_ns, step_ns, retry_at;
    step_t steps[4];
    int nsteps, si;
    int attempts;
    int buyer;
    int merchant; /* index into merchant_ids; -1: chosen by seq */
    int kind;     /* FLOW_* */
    long long amount, seq;
    char trade_no[48];
    char body[768];
    char idem[64];
    char path[300];
    const char *method;
} flow_t;

static uv_loop_t *loop;
static pb_pool_t *api, *admin;
static char run_id[9];
static long long seq;
static uint64_t start_ns, warm_end_ns, end_ns, drain_end_ns, last_done_ns;
static uint64_t flows_started, flows_inflight;
static int phase; /* 0 set-up, 1 running, 2 draining, 3 done */
static flow_t *retry_head;
/* What a flow is for: the scenario's own, or a set-up step. */
enum { FLOW_SCENARIO, FLOW_FUND, FLOW_HISTORY, FLOW_OPEN_TRADE };
/* consult: one open trade per buyer, created during set-up. */
static char (*open_trades)[48];
static uv_timer_t ticker;
static FILE *record_file;
#define MAX_MERCHANTS 256
static char merchant_ids[MAX_MERCHANTS][80], merchant_secrets[MAX_MERCHANTS][200];
static int nmerchants, merchants_pending;
static char **buyer_ids;
static int nbuyers;
static uint64_t notifications;
static int scen_pay, scen_card_percent, scen_consult;
static step_t scen_single = S_HEALTHZ;

static uint64_t now_ns(void)
{
    return uv_hrtime();
}

static void die(const char *fmt, const char *arg)
{
    fprintf(stderr, "paybench: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    exit(2);
}

/* A Luhn-valid card number outside paysim's test table, new for every call
 * (the default risk rule challenges a card seen more than 3 times an hour). */
static void fresh_pan(char pan[20])
{
    static uint64_t n;
    uint64_t v = (strtoull(run_id, NULL, 16) * 7919u + ++n) % 1000000000ull;
    snprintf(pan, 20, "411111%09llu", (unsigned long long)v);
    int sum = 0;
    for (int i = 14; i >= 0; i--) {
        int d = pan[i] - '0';
        if ((14 - i) % 2 == 0) {
            d *= 2;
            if (d > 9)
                d -= 9;
        }
        sum += d;
    }
    pan[15] = (char)('0' + (10 - sum % 10) % 10);
    pan[16] = 0;
}

static void step_send(flow_t *f);
static void flow_end(flow_t *f, int ok);

/* Builds the request of the flow's current step into f (kept for retries:
 * a retry sends the same body with the same Idempotency-Key). */
static void step_build(flow_t *f)
{
    step_t s = f->steps[f->si];
    const char *buyer = f->buyer >= 0 ? buyer_ids[f->buyer] : NULL;
    char client[160];
    snprintf(client, sizeof client,
             "\"client\":{\"ip\":\"10.%lld.%lld.%lld\",\"device_id\":\"pbd%s%lld\","
             "\"platform\":\"WEB\"}",
             (f->seq >> 16) & 255, (f->seq >> 8) & 255, f->seq & 255, run_id, f->seq);
    f->body[0] = 0;
    f->idem[0] = 0;
    f->method = "POST";
    switch (s) {
    case S_HEALTHZ:
        f->method = "GET";
        snprintf(f->path, sizeof f->path, "/healthz");
        break;
    case S_GET:
        f->method = "GET";
        snprintf(f->path, sizeof f->path, "%s", o.path);
        break;
    case S_CREATE:
        snprintf(f->path, sizeof f->path, "/v1/trades");
        char expiry[40] = "";
        if (o.expire_seconds > 0)
            snprintf(expiry, sizeof expiry, ",\"expire_seconds\":%d", o.expire_seconds);
        snprintf(f->body, sizeof f->body,
                 "{\"out_trade_no\":\"pb%s%lld\",\"product\":\"%s\",\"amount\":%lld,"
                 "\"currency\":\"CNY\",\"subject\":\"paybench\"%s%s%s%s}",
                 run_id, f->seq, f->kind == FLOW_FUND ? "RECHARGE" : "INSTANT", f->amount,
                 buyer ? ",\"buyer_id\":\"" : "", buyer ? buyer : "", buyer ? "\"" : "", expiry);
        break;
    case S_CONSULT:
        snprintf(f->path, sizeof f->path, "/v1/cashier/consult");
        snprintf(f->body, sizeof f->body, "{\"trade_no\":\"%s\",\"buyer_id\":\"%s\",%s}",
                 f->trade_no, buyer, client);
        break;
    case S_PAY_BALANCE:
        snprintf(f->path, sizeof f->path, "/v1/cashier/pay");
        snprintf(f->body, sizeof f->body,
                 "{\"trade_no\":\"%s\",\"buyer_id\":\"%s\",\"method_id\":\"BALANCE\",%s}",
                 f->trade_no, buyer, client);
        break;
    case S_PAY_CARD: {
        char pan[20];
        fresh_pan(pan);
        snprintf(f->path, sizeof f->path, "/v1/cashier/pay");
        snprintf(f->body, sizeof f->body,
                 "{\"trade_no\":\"%s\"%s%s%s,\"method_id\":\"CARD\",\"card\":{\"pan\":\"%s\","
                 "\"exp_month\":12,\"exp_year\":2030,\"cvv\":\"123\"},%s}",
                 f->trade_no, buyer ? ",\"buyer_id\":\"" : "", buyer ? buyer : "",
                 buyer ? "\"" : "", pan, client);
        break;
    }
    case S_REFUND:
        snprintf(f->path, sizeof f->path, "/v1/refunds");
        snprintf(f->body, sizeof f->body,
                 "{\"trade_no\":\"%s\",\"out_refund_no\":\"pbr%s%lld\",\"amount\":%lld,"
                 "\"reason\":\"paybench\"}",
                 f->trade_no, run_id, f->seq, f->amount);
        break;
    case S_COUNT:
        break;
    }
    if (!strcmp(f->method, "POST"))
        snprintf(f->idem, sizeof f->idem, "pb-%s-%lld-%d", run_id, f->seq, f->si);
}

static int retryable(int status, json_t *j)
{
    if (status == 0 || status == 502 || status == 503)
        return 1;
    const char *code = json_string_value(json_object_get(json_object_get(j, "error"), "code"));
    return status == 409 && code && !strcmp(code, "REQUEST_IN_PROGRESS");
}

/* A consult's answer, not parsed: an object that starts with the trade and
 * ends with its list of methods (api.md), as paycore writes it. */
static int consult_shaped(const char *body)
{
    size_t n = strlen(body);
    return n > 16 && !strncmp(body, "{\"trade_no\":\"", 13) &&
           strstr(body, ",\"methods\":[") != NULL && !strcmp(body + n - 2, "]}");
}

static void step_answer(void *data, int status, json_t *j, const char *body)
{
    flow_t *f = data;
    step_t s = f->steps[f->si];
    uint64_t now = now_ns();
    if (phase == 3)
        return;
    if (s == S_CONSULT && status >= 200 && status <= 299 && !consult_shaped(body)) {
        if (f->stats)
            count(f->stats->errors, &f->stats->nerrors, MAX_COUNTERS,
                  "consult 2xx with an answer not shaped as a consult");
        flow_end(f, 0);
        return;
    }
    if (status < 200 || status > 299) {
        if (retryable(status, j) && f->attempts < o.retries) {
            f->attempts++;
            if (f->stats)
                f->stats->retries++;
            uint64_t backoff = 50000000ull << (f->attempts < 5 ? f->attempts : 5);
            f->retry_at = now + backoff;
            f->next = retry_head;
            retry_head = f;
            return;
        }
        if (f->stats) {
            const char *code =
                json_string_value(json_object_get(json_object_get(j, "error"), "code"));
            char key[128];
            snprintf(key, sizeof key, "%s %d %s", step_names[s], status,
                     status ? (code ? code : "-") : "no answer (connection or timeout)");
            count(f->stats->errors, &f->stats->nerrors, MAX_COUNTERS, key);
        }
        flow_end(f, 0);
        return;
    }
    if (f->stats) {
        /* The first step of an open-loop flow counts from when it was due. */
        uint64_t from = f->si == 0 ? f->due_ns : f->step_ns;
        hist_add(&f->stats->step[s].lat, (now - from) / 1000);
        f->stats->step[s].ok++;
    }
    if (s == S_CREATE) {
        const char *tn = json_string_value(json_object_get(j, "trade_no"));
        if (!tn) {
            flow_end(f, 0);
            return;
        }
        snprintf(f->trade_no, sizeof f->trade_no, "%s", tn);
        if (f->kind == FLOW_OPEN_TRADE && f->buyer >= 0)
            snprintf(open_trades[f->buyer], sizeof open_trades[0], "%s", tn);
        if (record_file) {
            fprintf(record_file, "- %s CREATED\n", tn);
            fflush(record_file);
        }
    }
    if (s == S_PAY_BALANCE || s == S_PAY_CARD) {
        const char *pst = json_string_value(json_object_get(j, "status"));
        const char *pno = json_string_value(json_object_get(j, "payment_no"));
        if (record_file && pno) {
            fprintf(record_file, "%s %s %s\n", pno, f->trade_no, pst ? pst : "-");
            fflush(record_file);
        }
        if (f->stats) {
            count(f->stats->pay_status, &f->stats->npay_status, 16, pst ? pst : "-");
            if (pst && !strcmp(pst, "SUCCESS")) {
                f->stats->payments++;
                if (now <= end_ns)
                    f->stats->payments_in_window++;
                hist_add(&f->stats->payment, (now - f->due_ns) / 1000);
            }
        }
        if (!pst || strcmp(pst, "SUCCESS") != 0) {
            flow_end(f, 1); /* nothing to refund */
            return;
        }
    }
    f->si++;
    f->attempts = 0;
    if (f->si == f->nsteps) {
        flow_end(f, 1);
        return;
    }
    step_build(f);
    f->step_ns = now;
    step_send(f);
}

static void step_send(flow_t *f)
{
    int m = f->merchant >= 0 ? f->merchant : nmerchants ? (int)(f->seq % nmerchants) : 0;
    /* A consult's answer is only checked for its shape (step_answer). */
    step_t s = f->steps[f->si];
    pb_pool_call_as(api, nmerchants ? merchant_ids[m] : NULL,
                    nmerchants ? merchant_secrets[m] : NULL, f->method, f->path,
                    f->body[0] ? f->body : NULL, f->idem[0] ? f->idem : NULL, s != S_CONSULT,
                    step_answer, f);
}

static void flow_start(uint64_t due, int kind, int buyer, stats_t *stats)
{
    flow_t *f = calloc(1, sizeof *f);
    if (!f)
        abort();
    f->due_ns = due;
    f->step_ns = now_ns();
    f->stats = stats;
    f->seq = ++seq;
    f->kind = kind;
    f->buyer = buyer;
    f->merchant = kind == FLOW_OPEN_TRADE && nmerchants ? buyer % nmerchants : -1;
    f->amount = kind == FLOW_FUND ? o.fund : o.amount;
    if (kind == FLOW_FUND) {
        f->steps[f->nsteps++] = S_CREATE;
        f->steps[f->nsteps++] = S_PAY_CARD;
    } else if (kind == FLOW_HISTORY) {
        f->steps[f->nsteps++] = S_CREATE;
        f->steps[f->nsteps++] = S_PAY_BALANCE;
    } else if (kind == FLOW_OPEN_TRADE) {
        f->steps[f->nsteps++] = S_CREATE;
    } else if (scen_consult) {
        /* The buyer's open trade, at the merchant that created it. */
        f->buyer = (int)(f->seq % (unsigned long long)nbuyers);
        f->merchant = nmerchants ? f->buyer % nmerchants : 0;
        snprintf(f->trade_no, sizeof f->trade_no, "%s", open_trades[f->buyer]);
        f->steps[f->nsteps++] = S_CONSULT;
    } else if (scen_pay) {
        f->steps[f->nsteps++] = S_CREATE;
        if (o.consult)
            f->steps[f->nsteps++] = S_CONSULT;
        int card = (int)(f->seq % 100) < scen_card_percent;
        f->steps[f->nsteps++] = card ? S_PAY_CARD : S_PAY_BALANCE;
        if ((int)((f->seq * 37) % 100) < o.refund_percent)
            f->steps[f->nsteps++] = S_REFUND;
    } else {
        f->steps[f->nsteps++] = scen_single;
    }
    if (f->buyer < 0 && nbuyers > 0)
        f->buyer = (int)(f->seq % (unsigned long long)nbuyers);
    flows_started++;
    flows_inflight++;
    step_build(f);
    step_send(f);
}

static void maybe_start_closed(void);

static void flow_end(flow_t *f, int ok)
{
    uint64_t now = now_ns();
    if (f->stats) {
        f->stats->flows_done++;
        if (!ok)
            f->stats->flows_failed++;
        else
            hist_add(&f->stats->flow, (now - f->due_ns) / 1000);
        if (ok && now <= end_ns)
            f->stats->flows_in_window++;
    }
    last_done_ns = now;
    flows_inflight--;
    free(f);
    maybe_start_closed();
}

/* ---------- phases ---------- */

static stats_t *stats_for(uint64_t due)
{
    return due >= warm_end_ns ? &st : NULL;
}

static void maybe_start_closed(void)
{
    if (phase != 1 || o.rate > 0)
        return;
    uint64_t now = now_ns();
    if (now >= end_ns)
        return;
    while (flows_inflight < (uint64_t)o.connections)
        flow_start(now, FLOW_SCENARIO, -1, stats_for(now));
}

static void report(void);
static void cpu_sample(int end);

static void ticker_cb(uv_timer_t *t)
{
    (void)t;
    uint64_t now = now_ns();
    /* Retries whose back-off is over. */
    for (flow_t **pp = &retry_head; *pp;) {
        flow_t *f = *pp;
        if (f->retry_at <= now) {
            *pp = f->next;
            step_send(f);
        } else {
            pp = &f->next;
        }
    }
    if (phase == 1) {
        static int cpu_started;
        if (!cpu_started && now >= warm_end_ns) {
            cpu_started = 1;
            cpu_sample(0);
        }
        if (o.rate > 0) {
            /* Flows due by now: flow k is due at start + k / rate, so k = 0
             * at once. (Counting floor(elapsed * rate) started each flow one
             * interval after it was due, and added that interval, 20 ms at
             * 50 flows/s, to every open-loop latency.) */
            uint64_t due = (uint64_t)((double)(now - start_ns) / 1e9 * o.rate) + 1;
            while (flows_started < due && now < end_ns) {
                uint64_t at = start_ns + (uint64_t)((double)flows_started * 1e9 / o.rate);
                flow_start(at, FLOW_SCENARIO, -1, stats_for(at));
            }
        }
        if (o.progress) {
            static uint64_t last_print, last_done;
            if (now - last_print >= 5000000000ull) {
                fprintf(stderr, "paybench: %.0f s, %llu flows done (+%llu), %llu in flight\n",
                        (double)(now - start_ns) / 1e9, (unsigned long long)st.flows_done,
                        (unsigned long long)(st.flows_done - last_done),
                        (unsigned long long)flows_inflight);
                last_print = now;
                last_done = st.flows_done;
            }
        }
        if (now >= end_ns) {
            phase = 2;
            cpu_sample(1);
            drain_end_ns = now + (uint64_t)(o.drain * 1e9);
        }
    }
    if (phase == 2 && (flows_inflight == 0 || now >= drain_end_ns)) {
        phase = 3;
        uv_timer_stop(&ticker);
        report();
    }
}

static void start_measuring(void)
{
    phase = 1;
    start_ns = now_ns();
    warm_end_ns = start_ns + (uint64_t)(o.warmup * 1e9);
    end_ns = warm_end_ns + (uint64_t)(o.duration * 1e9);
    flows_started = 0;
    maybe_start_closed();
}

/* --- set-up: merchant, buyers, funding --- */

static int setup_pending, setup_failed;
static uint64_t setup_t0;
static int setup_kind; /* FLOW_* of the set-up stage running */

static void setup_next_stage(void);

/* Waits until the set-up flows of a stage have finished, reports them and
 * goes on to the next stage. */
static void setup_wait(uv_timer_t *t)
{
    if (flows_inflight > 0)
        return;
    uv_timer_stop(t);
    uv_close((uv_handle_t *)t, (uv_close_cb)free);
    static const char *const stage_names[] = {[FLOW_FUND] = "funding",
                                              [FLOW_HISTORY] = "history payments",
                                              [FLOW_OPEN_TRADE] = "open trades"};
    const char *what = stage_names[setup_kind];
    uint64_t done = setup_st.flows_done - setup_st.flows_failed;
    double secs = (double)(now_ns() - setup_t0) / 1e9;
    /* Scripts wait for "setup: … funded" (tests/crash/crash_test.sh). */
    if (setup_kind == FLOW_FUND)
        fprintf(stdout, "setup: %d buyers funded with %lld each (%llu of %d paid) in %.1f s\n",
                nbuyers, o.fund, (unsigned long long)setup_st.payments, nbuyers, secs);
    else
        fprintf(stdout, "setup: %s: %llu of %llu done in %.1f s\n", what, (unsigned long long)done,
                (unsigned long long)setup_st.flows_done, secs);
    if (setup_st.flows_failed || (setup_kind == FLOW_FUND && setup_st.payments < done)) {
        for (int i = 0; i < setup_st.nerrors; i++)
            fprintf(stdout, "setup error: %s = %llu\n", setup_st.errors[i].key,
                    (unsigned long long)setup_st.errors[i].n);
        for (int i = 0; i < setup_st.npay_status; i++)
            fprintf(stdout, "setup pay status: %s = %llu\n", setup_st.pay_status[i].key,
                    (unsigned long long)setup_st.pay_status[i].n);
        if (setup_st.flows_failed * 100 > setup_st.flows_done)
            die("more than 1%% of the set-up flows (%s) failed", what);
    }
    setup_next_stage();
}

/* Starts n set-up flows of one kind, buyer i % nbuyers for the i-th. */
static void setup_flows(int kind, int n)
{
    memset(&setup_st, 0, sizeof setup_st);
    setup_t0 = now_ns();
    setup_kind = kind;
    for (int i = 0; i < n; i++)
        flow_start(now_ns(), kind, i % nbuyers, &setup_st);
    uv_timer_t *t = malloc(sizeof *t);
    uv_timer_init(loop, t);
    uv_timer_start(t, setup_wait, 10, 10);
}

static void buyer_created(void *data, int status, json_t *j, const char *body)
{
    (void)data;
    (void)j;
    if (status != 201 && status != 200 && status != 409) {
        setup_failed++;
        if (setup_failed < 3)
            fprintf(stderr, "paybench: POST /admin/buyers: %d %s\n", status, body);
    }
    if (--setup_pending == 0) {
        if (setup_failed)
            die("%s", "could not create the buyers");
        setup_next_stage();
    }
}

static int stage;

static void setup_next_stage(void)
{
    stage++;
    if (stage == 1 && nbuyers > 0 && !o.buyer_prefix) {
        setup_pending = nbuyers;
        for (int i = 0; i < nbuyers; i++) {
            char b[160];
            snprintf(b, sizeof b, "{\"buyer_id\":\"%s\",\"name\":\"paybench\"}", buyer_ids[i]);
            pb_pool_call(admin, "POST", "/admin/buyers", b, NULL, buyer_created, NULL);
        }
        return;
    }
    if (stage <= 1)
        stage = 2;
    if (stage == 2 && nbuyers > 0 && !o.buyer_prefix &&
        ((scen_pay && scen_card_percent < 100) || scen_consult)) {
        setup_flows(FLOW_FUND, nbuyers);
        return;
    }
    if (stage <= 2)
        stage = 3;
    if (stage == 3 && nbuyers > 0 && o.history > 0) {
        setup_flows(FLOW_HISTORY, nbuyers * o.history);
        return;
    }
    if (stage <= 3)
        stage = 4;
    if (stage == 4 && scen_consult) {
        setup_flows(FLOW_OPEN_TRADE, nbuyers);
        return;
    }
    start_measuring();
}

static void merchant_created(void *data, int status, json_t *j, const char *body)
{
    (void)data;
    const char *id = json_string_value(json_object_get(j, "merchant_id"));
    const char *secret = json_string_value(json_object_get(j, "secret"));
    if (status != 201 || !id || !secret) {
        if (status == 0)
            fprintf(stderr, "paybench: POST /admin/merchants: no answer from %s:%d\n", o.host,
                    o.admin_port);
        else
            fprintf(stderr, "paybench: POST /admin/merchants: %d %s\n", status, body);
        exit(2);
    }
    snprintf(merchant_ids[nmerchants], sizeof merchant_ids[0], "%s", id);
    snprintf(merchant_secrets[nmerchants], sizeof merchant_secrets[0], "%s", secret);
    nmerchants++;
    if (--merchants_pending > 0)
        return;
    fprintf(stdout, "setup: %d merchant(s) created (%s%s)\n", nmerchants, merchant_ids[0],
            nmerchants > 1 ? ", …" : "");
    setup_next_stage();
}

static void rules_cb(void *data, int status, json_t *j, const char *body)
{
    (void)data;
    (void)body;
    json_t *list = json_is_array(j) ? j : json_object_get(j, "rules");
    size_t i;
    json_t *r;
    json_array_foreach(list, i, r)
    {
        const char *name = json_string_value(json_object_get(r, "name"));
        const char *ver = json_string_value(json_object_get(r, "version"));
        if (name && ver && !strcmp(name, "risk"))
            fprintf(stdout, "risk rule version: %.20s…%s%s\n", ver, o.note ? " — " : "",
                    o.note ? o.note : "");
    }
    if (status != 200)
        fprintf(stdout, "risk rule version: unknown (GET /admin/rules answered %d)\n", status);
}

/* --- a notification sink: answers every request 200 "success" --- */

typedef struct {
    uv_tcp_t tcp;
    http_parser parser;
} sink_conn_t;

static http_parser_settings sink_settings;

static void sink_closed(uv_handle_t *h)
{
    free(h->data);
}

static void sink_write_cb(uv_write_t *w, int status)
{
    (void)status;
    free(w);
}

static int sink_complete(http_parser *hp)
{
    sink_conn_t *c = hp->data;
    static char answer[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                           "7\r\n\r\nsuccess";
    uv_write_t *w = malloc(sizeof *w);
    uv_buf_t b = uv_buf_init(answer, sizeof answer - 1);
    if (w && uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, sink_write_cb) < 0)
        free(w);
    notifications++;
    return 0;
}

static void sink_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
    (void)h;
    (void)s;
    static char buf[65536];
    *b = uv_buf_init(buf, sizeof buf);
}

static void sink_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    sink_conn_t *c = s->data;
    if (n < 0) {
        uv_close((uv_handle_t *)&c->tcp, sink_closed);
        return;
    }
    http_parser_execute(&c->parser, &sink_settings, b->base, (size_t)n);
    if (HTTP_PARSER_ERRNO(&c->parser) != HPE_OK)
        uv_close((uv_handle_t *)&c->tcp, sink_closed);
}

static void sink_accept(uv_stream_t *server, int status)
{
    if (status < 0)
        return;
    sink_conn_t *c = calloc(1, sizeof *c);
    uv_tcp_init(loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        uv_close((uv_handle_t *)&c->tcp, sink_closed);
        return;
    }
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    uv_read_start((uv_stream_t *)&c->tcp, sink_alloc, sink_read);
}

static void sink_start(void)
{
    static uv_tcp_t srv;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", o.notify_port, &a);
    sink_settings.on_message_complete = sink_complete;
    uv_tcp_init(loop, &srv);
    if (uv_tcp_bind(&srv, (struct sockaddr *)&a, 0) < 0 ||
        uv_listen((uv_stream_t *)&srv, 1024, sink_accept) < 0)
        die("cannot listen on the notification port %s", "");
}

/* ---------- CPU accounting: --cpu NAME=PID,… ---------- */

/* CPU time (ms) of pid and, when with_children, of its direct children (a
 * postmaster's backends), read from /proc. */
static double proc_cpu_ms(long pid, int with_children)
{
    double ms = 0;
    DIR *d = opendir("/proc");
    struct dirent *e;
    long tck = sysconf(_SC_CLK_TCK);
    while (d && (e = readdir(d))) {
        char *end;
        long p = strtol(e->d_name, &end, 10);
        if (*end || p <= 0)
            continue;
        char path[64], buf[1024];
        snprintf(path, sizeof path, "/proc/%ld/stat", p);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        const char *rp = strrchr(buf, ')');
        if (!rp)
            continue;
        /* Fields after the command: state ppid … utime (12th) stime (13th). */
        char state;
        long ppid;
        unsigned long ut = 0, stt = 0;
        if (sscanf(rp + 2, "%c %ld %*s %*s %*s %*s %*s %*s %*s %*s %*s %lu %lu", &state, &ppid, &ut,
                   &stt) != 4)
            continue;
        if (p == pid || (with_children && ppid == pid))
            ms += (double)(ut + stt) * 1000.0 / (double)tck;
    }
    if (d)
        closedir(d);
    return ms;
}

#define MAX_CPU 8
static struct {
    char name[32];
    long pid;
    double start_ms, end_ms;
} cpu_of[MAX_CPU];
static int ncpu;
static double self_start_ms, self_end_ms;

static double self_cpu_ms(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000.0 +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000.0;
}

static void parse_cpu(const char *spec)
{
    char *copy = strdup(spec), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t && ncpu < MAX_CPU;
         t = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(t, '=');
        if (!eq)
            continue;
        *eq = 0;
        snprintf(cpu_of[ncpu].name, sizeof cpu_of[ncpu].name, "%s", t);
        cpu_of[ncpu].pid = atol(eq + 1);
        ncpu++;
    }
    free(copy);
}

/* Samples at the start and the end of the measured window (warm-up excluded). */
static void cpu_sample(int end)
{
    for (int i = 0; i < ncpu; i++) {
        double v = proc_cpu_ms(cpu_of[i].pid, 1);
        if (end)
            cpu_of[i].end_ms = v;
        else
            cpu_of[i].start_ms = v;
    }
    if (end)
        self_end_ms = self_cpu_ms();
    else
        self_start_ms = self_cpu_ms();
}

static void cpu_report(uint64_t units, const char *what)
{
    if (!ncpu || !units)
        return;
    double total = self_end_ms - self_start_ms;
    printf("CPU ms per %s (measured window):", what);
    for (int i = 0; i < ncpu; i++) {
        double d = cpu_of[i].end_ms - cpu_of[i].start_ms;
        total += d;
        printf(" %s %.3f", cpu_of[i].name, d / (double)units);
    }
    printf(" paybench %.3f; total %.3f\n", (self_end_ms - self_start_ms) / (double)units,
           total / (double)units);
}

/* ---------- report ---------- */

static void print_stats(void)
{
    double secs = o.duration;
    printf("flows: %llu finished (%llu failed) — %.0f flows/s completed in the %.1f s window\n",
           (unsigned long long)st.flows_done, (unsigned long long)st.flows_failed,
           (double)st.flows_in_window / secs, secs);
    if (scen_pay)
        printf("payments: %llu SUCCESS — %.0f payments/s in the window\n",
               (unsigned long long)st.payments, (double)st.payments_in_window / secs);
    printf("%-12s %9s %9s %8s %8s %8s %8s   (ms)\n", "step", "ok", "ok/s", "p50", "p90", "p99",
           "max");
    for (int s = 0; s < S_COUNT; s++) {
        const step_stats_t *x = &st.step[s];
        if (!x->ok)
            continue;
        printf("%-12s %9llu %9.0f %8.2f %8.2f %8.2f %8.2f\n", step_names[s],
               (unsigned long long)x->ok, (double)x->ok / secs, hist_pct_ms(&x->lat, 0.5),
               hist_pct_ms(&x->lat, 0.9), hist_pct_ms(&x->lat, 0.99), (double)x->lat.max_us / 1000);
    }
    if (st.payment.n)
        printf("%-12s %9llu %9.0f %8.2f %8.2f %8.2f %8.2f\n", "payment",
               (unsigned long long)st.payment.n, (double)st.payment.n / secs,
               hist_pct_ms(&st.payment, 0.5), hist_pct_ms(&st.payment, 0.9),
               hist_pct_ms(&st.payment, 0.99), (double)st.payment.max_us / 1000);
    if (st.flow.n)
        printf("%-12s %9llu %9.0f %8.2f %8.2f %8.2f %8.2f\n", "whole flow",
               (unsigned long long)st.flow.n, (double)st.flow.n / secs, hist_pct_ms(&st.flow, 0.5),
               hist_pct_ms(&st.flow, 0.9), hist_pct_ms(&st.flow, 0.99),
               (double)st.flow.max_us / 1000);
    if (st.npay_status) {
        printf("payment statuses:");
        for (int i = 0; i < st.npay_status; i++)
            printf(" %s=%llu", st.pay_status[i].key, (unsigned long long)st.pay_status[i].n);
        printf("\n");
    }
    uint64_t errs = 0;
    for (int i = 0; i < st.nerrors; i++) {
        printf("error: %s = %llu\n", st.errors[i].key, (unsigned long long)st.errors[i].n);
        errs += st.errors[i].n;
    }
    printf("errors: %llu; retries: %llu; connection errors: %llu; unfinished flows: %llu\n",
           (unsigned long long)errs, (unsigned long long)st.retries,
           (unsigned long long)pb_pool_conn_errors(api), (unsigned long long)flows_inflight);
    cpu_report(scen_pay ? st.payments_in_window : st.flows_in_window,
               scen_pay ? "payment" : "flow");
    if (o.notify_port)
        printf("notifications received so far: %llu\n", (unsigned long long)notifications);
}

static int ledger_ok = -1;

static void finish(void)
{
    const step_stats_t *pay =
        scen_pay ? (scen_card_percent >= 100 ? &st.step[S_PAY_CARD] : &st.step[S_PAY_BALANCE])
                 : &st.step[scen_single];
    printf("summary: flows_per_s=%.0f payments_per_s=%.0f step_p99_ms=%.2f payment_p99_ms=%.2f "
           "flow_p99_ms=%.2f errors=%llu ledger_ok=%d\n",
           (double)st.flows_in_window / o.duration, (double)st.payments_in_window / o.duration,
           hist_pct_ms(&pay->lat, 0.99), hist_pct_ms(&st.payment, 0.99),
           hist_pct_ms(&st.flow, 0.99), (unsigned long long)st.flows_failed, ledger_ok);
    fflush(stdout);
    if (record_file)
        fclose(record_file);
    exit(ledger_ok == 0 ? 3 : 0);
}

static void ledger_cb(void *data, int status, json_t *j, const char *body)
{
    (void)data;
    (void)j;
    ledger_ok = status == 200 && json_is_true(json_object_get(j, "ok"));
    printf("ledger check: %d %s\n", status, body);
    finish();
}

static void report(void)
{
    print_stats();
    if (admin && o.ledger_check) {
        pb_pool_call(admin, "GET", "/admin/ledger/check", NULL, NULL, ledger_cb, NULL);
        return;
    }
    finish();
}

/* ---------- main ---------- */

static void usage(void)
{
    fprintf(
        stderr,
        "usage: paybench [options]\n"
        "  --host H --port P             merchant API (127.0.0.1:8080)\n"
        "  --admin-port P --admin-token T  admin API, for set-up and the ledger check\n"
        "  --scenario S                  healthz | signed-get | create-trade | pay-balance |\n"
        "                                pay-card | pay (see --card-percent) | full | consult\n"
        "                                (full = pay with --consult, 50%% card, 10%% refunds;\n"
        "                                consult = consult again and again one open trade per\n"
        "                                buyer, each buyer funded and with --history payments)\n"
        "  -c, --connections N           connections (closed loop: flows in flight) [64]\n"
        "  -r, --rate R                  open loop: R flows per second\n"
        "  -d, --duration S  --warmup S  measured seconds, and unmeasured ones before\n"
        "  --drain S                     wait this long for flows in flight at the end [15]\n"
        "  --merchant M --secret S       an existing merchant (else one is created)\n"
        "  --buyers N                    buyers created and funded for balance payments [1000]\n"
        "  --history N                   balance payments per buyer made during set-up [0]\n"
        "  --amount A --fund F           payment amount [100], wallet top-up [1000000]\n"
        "  --card-percent P  --refund-percent P  --consult\n"
        "  --retries N                   retry on no answer / 503 / REQUEST_IN_PROGRESS with\n"
        "                                the same Idempotency-Key [0]\n"
        "  --timeout-ms T                answer timeout [30000]\n"
        "  --record FILE                 append every 2xx payment: payment_no trade_no status\n"
        "  --notify-port P               merchant notify_url → a sink here answering success\n"
        "  --note TEXT                   printed beside the risk rule version\n"
        "  --expire-seconds S            the trades' expire_seconds (60-604800) [server's]\n"
        "  --no-ledger-check  --progress  --path P (signed-get)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {{"host", 1, NULL, 'H'},
                                       {"port", 1, NULL, 'p'},
                                       {"admin-port", 1, NULL, 'A'},
                                       {"admin-token", 1, NULL, 'T'},
                                       {"connections", 1, NULL, 'c'},
                                       {"duration", 1, NULL, 'd'},
                                       {"warmup", 1, NULL, 'w'},
                                       {"drain", 1, NULL, 'D'},
                                       {"scenario", 1, NULL, 's'},
                                       {"merchant", 1, NULL, 'm'},
                                       {"secret", 1, NULL, 'k'},
                                       {"path", 1, NULL, 'P'},
                                       {"rate", 1, NULL, 'r'},
                                       {"buyers", 1, NULL, 'b'},
                                       {"buyer-prefix", 1, NULL, 'B'},
                                       {"amount", 1, NULL, 'a'},
                                       {"fund", 1, NULL, 'f'},
                                       {"card-percent", 1, NULL, 'C'},
                                       {"refund-percent", 1, NULL, 'R'},
                                       {"consult", 0, NULL, 'Q'},
                                       {"retries", 1, NULL, 'y'},
                                       {"timeout-ms", 1, NULL, 't'},
                                       {"record", 1, NULL, 'o'},
                                       {"notify-port", 1, NULL, 'n'},
                                       {"note", 1, NULL, 'N'},
                                       {"no-ledger-check", 0, NULL, 'L'},
                                       {"progress", 0, NULL, 'G'},
                                       {"merchants", 1, NULL, 'M'},
                                       {"cpu", 1, NULL, 'U'},
                                       {"history", 1, NULL, 'h'},
                                       {"expire-seconds", 1, NULL, 'E'},
                                       {NULL, 0, NULL, 0}};
    int ch;
    int card_set = 0, refund_set = 0;
    while ((ch = getopt_long(argc, argv, "c:d:r:", lo, NULL)) != -1) {
        switch (ch) {
        case 'H':
            o.host = optarg;
            break;
        case 'p':
            o.port = atoi(optarg);
            break;
        case 'A':
            o.admin_port = atoi(optarg);
            break;
        case 'T':
            o.admin_token = optarg;
            break;
        case 'c':
            o.connections = atoi(optarg);
            break;
        case 'd':
            o.duration = atof(optarg);
            break;
        case 'w':
            o.warmup = atof(optarg);
            break;
        case 'D':
            o.drain = atof(optarg);
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
        case 'r':
            o.rate = atof(optarg);
            break;
        case 'b':
            o.buyers = atoi(optarg);
            break;
        case 'B':
            o.buyer_prefix = optarg;
            break;
        case 'a':
            o.amount = atoll(optarg);
            break;
        case 'f':
            o.fund = atoll(optarg);
            break;
        case 'C':
            o.card_percent = atoi(optarg);
            card_set = 1;
            break;
        case 'R':
            o.refund_percent = atoi(optarg);
            refund_set = 1;
            break;
        case 'Q':
            o.consult = 1;
            break;
        case 'y':
            o.retries = atoi(optarg);
            break;
        case 't':
            o.timeout_ms = atol(optarg);
            break;
        case 'o':
            o.record = optarg;
            break;
        case 'n':
            o.notify_port = atoi(optarg);
            break;
        case 'N':
            o.note = optarg;
            break;
        case 'L':
            o.ledger_check = 0;
            break;
        case 'U':
            parse_cpu(optarg);
            break;
        case 'M':
            o.merchants = atoi(optarg);
            break;
        case 'G':
            o.progress = 1;
            break;
        case 'h':
            o.history = atoi(optarg);
            break;
        case 'E':
            o.expire_seconds = atoi(optarg);
            break;
        default:
            usage();
        }
    }
    if (o.duration <= 0 || o.connections < 1 || o.merchants < 1 || o.merchants > MAX_MERCHANTS)
        usage();
    const char *sc = o.scenario;
    if (!strcmp(sc, "healthz")) {
        scen_single = S_HEALTHZ;
    } else if (!strcmp(sc, "signed-get")) {
        scen_single = S_GET;
    } else if (!strcmp(sc, "create-trade")) {
        scen_single = S_CREATE;
    } else if (!strcmp(sc, "pay-balance")) {
        scen_pay = 1;
        scen_card_percent = 0;
    } else if (!strcmp(sc, "pay-card")) {
        scen_pay = 1;
        scen_card_percent = 100;
    } else if (!strcmp(sc, "pay")) {
        scen_pay = 1;
        scen_card_percent = o.card_percent;
    } else if (!strcmp(sc, "consult")) {
        scen_consult = 1;
        scen_single = S_CONSULT;
    } else if (!strcmp(sc, "full")) {
        scen_pay = 1;
        o.consult = 1;
        scen_card_percent = card_set ? o.card_percent : 50;
        if (!refund_set)
            o.refund_percent = 10;
    } else {
        usage();
    }
    nbuyers = scen_pay || scen_consult ? o.buyers : 0;
    if (scen_consult && (nbuyers == 0 || o.buyer_prefix))
        die("%s", "consult needs --buyers > 0 (created and funded here)");
    if (scen_single == S_GET && !strcmp(o.path, "/healthz"))
        o.path = "/v1/trades?out_trade_no=x";
    if (scen_pay && scen_card_percent < 100 && nbuyers == 0)
        die("%s", "balance payments need --buyers > 0");
    int needs_merchant = scen_pay || scen_single != S_HEALTHZ;
    if (needs_merchant && !o.merchant && !(o.admin_port && o.admin_token))
        die("%s", "give --merchant/--secret, or --admin-port/--admin-token to create one");
    if (nbuyers > 0 && !o.buyer_prefix && !(o.admin_port && o.admin_token))
        die("%s", "creating buyers needs --admin-port and --admin-token");

    /* Line by line, so that a script can follow the set-up as it happens. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    pc_random_hex(run_id, sizeof run_id, 4);
    buyer_ids = calloc((size_t)(nbuyers ? nbuyers : 1), sizeof *buyer_ids);
    open_trades = calloc((size_t)(nbuyers ? nbuyers : 1), sizeof *open_trades);
    for (int i = 0; i < nbuyers; i++) {
        char b[96];
        snprintf(b, sizeof b, "%s%s_%d", o.buyer_prefix ? o.buyer_prefix : "pb",
                 o.buyer_prefix ? "" : run_id, i);
        buyer_ids[i] = strdup(b);
    }
    if (o.record && !(record_file = fopen(o.record, "a")))
        die("cannot open %s", o.record);

    loop = uv_default_loop();
    uv_timer_init(loop, &ticker);
    uv_timer_start(&ticker, ticker_cb, 1, 1);
    if (o.notify_port)
        sink_start();
    pb_pool_opts_t ao = {o.host,     o.port,   o.connections, (uint64_t)o.timeout_ms,
                         o.merchant, o.secret, NULL};
    if (!(api = pb_pool_new(loop, &ao)))
        die("bad address %s", o.host);
    if (o.admin_port && o.admin_token) {
        pb_pool_opts_t ad = {o.host, o.admin_port, 16, 120000, NULL, NULL, o.admin_token};
        admin = pb_pool_new(loop, &ad);
        pb_pool_call(admin, "GET", "/admin/rules", NULL, NULL, rules_cb, NULL);
    }
    if (needs_merchant && !o.merchant) {
        char b[300];
        char url[96] = "";
        if (o.notify_port)
            snprintf(url, sizeof url, ",\"notify_url\":\"http://127.0.0.1:%d/notify\"",
                     o.notify_port);
        snprintf(b, sizeof b, "{\"name\":\"paybench %s\",\"advance_funding\":true%s}", run_id, url);
        merchants_pending = o.merchants;
        for (int i = 0; i < o.merchants; i++)
            pb_pool_call(admin, "POST", "/admin/merchants", b, NULL, merchant_created, NULL);
    } else {
        setup_next_stage();
    }
    printf("paybench: scenario %s (card %d%%, consult %s, refunds %d%%), %s %d connections, "
           "%.1f s measured after %.1f s warm-up\n",
           sc, scen_pay ? scen_card_percent : 0, o.consult ? "yes" : "no", o.refund_percent,
           o.rate > 0 ? "open loop," : "closed loop,", o.connections, o.duration, o.warmup);
    if (o.rate > 0)
        printf("open loop: %.0f flows/s due; latency counts from when each flow was due\n", o.rate);
    fflush(stdout);
    uv_run(loop, UV_RUN_DEFAULT);
    return 0;
}
