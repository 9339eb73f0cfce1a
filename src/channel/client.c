/* paycore's side of the channel protocol. Each call is a small state machine:
 * look the channel up and copy what the call needs (the registry may reload
 * under us), build the body, sign it, send it over pc_http_client; then, when
 * the answer comes, verify the answer's signature, map it (channel/health.c),
 * record metrics, a log line and the channel's health, and report.
 *
 * The wire, as paysim implements it (src/sim/channel_api.c, wire.c, sim.c,
 * notify.c):
 *   requests   X-Timestamp, X-Nonce, X-Signature = base64 HMAC-SHA256(secret,
 *              "METHOD\nTARGET\nTIMESTAMP\nNONCE\nBODY\n"), body empty for GET;
 *   answers    the same three headers, X-Nonce echoing ours, signed over
 *              "TIMESTAMP\nNONCE\nBODY\n" — an answer that fails this check is
 *              not believed (UNKNOWN), so a man in the middle or a confused
 *              proxy cannot turn a charge into a "decline";
 *   callbacks  POST {callback_base}/channel-callbacks/{channel_id}, signed over
 *              "TIMESTAMP\nNONCE\nBODY\n" with a fresh nonce.
 *
 * Health: every call adds to a per-channel bucket hash in Redis,
 *   {prefix}chstat:{channel}:{bucket_s}:{index}  fields n (attempts),
 *   f (failures), d (declines), l (latency ms summed), EXPIREd a bucket after
 *   the window, so all nodes count together; reading sums the window's buckets
 *   in one EVAL, cached per node for HEALTH_CACHE_MS. The same buckets are
 *   kept in memory and answer while Redis does not. */
#include "channel/client.h"
#include "auth/sign.h"
#include "channel/health.h"
#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"
#include "http/client.h"
#include "ledger/ledger.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ANSWER_WINDOW_S 300     /* an answer's X-Timestamp, as for requests */
#define CALLBACK_WINDOW_S 300   /* a callback's X-Timestamp */
#define HEALTH_CACHE_MS 1000    /* how long a node serves its last Redis read */
#define HEALTH_STALE_MS 5000    /* after this, without a Redis read, local numbers */
#define MAX_HEALTH_ENTRIES 1024 /* channels tracked; far above any real set */
#define MAX_REF_LEN 64          /* paycore's numbers, as the protocol takes them */

/* One channel's health as this node knows it. */
typedef struct health {
    struct health *next;
    char channel_id[33];
    pc_ch_ring_t local;    /* this node's own calls */
    pc_ch_tally_t remote;  /* all nodes, as Redis last said */
    int64_t remote_window; /* the window remote was summed over */
    uint64_t remote_at;    /* uv_now of that answer; 0: never */
    uint64_t asked_at;     /* uv_now of the last refresh sent */
    int refreshing;
    int last_healthy; /* -1 before the first evaluation */
    int demo_warned;
    /* Callbacks this node refused and took in the current window
     * (CALLBACK_TALLY_MS; pc_channel_callbacks_failing). */
    uint64_t cb_window_at, cb_refused_at;
    long long cb_refused, cb_accepted;
    char cb_why[96], cb_peer[64];
} health_t;

struct pc_channel_client {
    uv_loop_t *loop;
    pc_channels_t *chs;
    pc_kv_t *kv;
    pc_http_client_t *http;
    char *callback_base;
    health_t *health;
    size_t nhealth;
    size_t kv_pending; /* refreshes whose callback points at us */
    int closing;
    void (*close_cb)(void *data);
    void *close_data;
};

/* One call in flight. */
typedef struct {
    pc_channel_client_t *cli;
    pc_ch_op_t op;
    const char *method; /* static */
    char channel_id[33];
    char ref[MAX_REF_LEN + 1]; /* paycore's number, "" for tokenize and files */
    char nonce[33];
    char *secret; /* wiped when the call ends */
    int64_t window_s;
    uint64_t start_ns;
    pc_ch_cb cb;
    pc_ch_file_cb file_cb;
    void *data;
} call_t;

/* Adds the arguments pairwise to the bucket hash KEYS[1], then sets its TTL
 * (the last argument). One round trip, and the hash never lives forever. */
static const char RECORD_SCRIPT[] =
    "for i = 1, #ARGV - 1, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end "
    "redis.call('EXPIRE', KEYS[1], ARGV[#ARGV]) return 1";
/* Sums n, f, d, l over the bucket hashes given as keys. */
static const char SUM_SCRIPT[] = "local s = {0, 0, 0, 0} "
                                 "for _, k in ipairs(KEYS) do "
                                 "local v = redis.call('HMGET', k, 'n', 'f', 'd', 'l') "
                                 "for i = 1, 4 do s[i] = s[i] + (tonumber(v[i]) or 0) end end "
                                 "return s";

static const char *const g_status_names[] = {
    [PC_CH_SUCCESS] = "SUCCESS", [PC_CH_PROCESSING] = "PROCESSING", [PC_CH_FAILED] = "FAILED",
    [PC_CH_UNKNOWN] = "UNKNOWN", [PC_CH_RETURNED] = "RETURNED",
};
static const char *const g_status_labels[] = {
    [PC_CH_SUCCESS] = "success", [PC_CH_PROCESSING] = "processing", [PC_CH_FAILED] = "failed",
    [PC_CH_UNKNOWN] = "unknown", [PC_CH_RETURNED] = "returned",
};

static int64_t wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec;
}

/* ---- Small helpers ---------------------------------------------------------- */

/* paycore's numbers as the protocol takes them: 1 to 64 printable ASCII
 * characters without spaces. */
static bool valid_no(const char *s)
{
    if (!s || !*s || strlen(s) > MAX_REF_LEN)
        return false;
    for (; *s; s++)
        if (*s < 0x21 || *s > 0x7e)
            return false;
    return true;
}

/* A growable buffer; wiped when freed because it may hold card data. */
typedef struct {
    char *p;
    size_t len, cap;
    bool oom;
} buf_t;

static void buf_add(buf_t *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = malloc(cap);
        if (!p) {
            b->oom = true;
            return;
        }
        if (b->p) {
            memcpy(p, b->p, b->len);
            explicit_bzero(b->p, b->cap);
            free(b->p);
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void buf_str(buf_t *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

/* s as a JSON string literal. */
static void buf_json_str(buf_t *b, const char *s)
{
    buf_add(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            buf_add(b, esc, 2);
        } else if (*p < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            buf_add(b, esc, 6);
        } else {
            buf_add(b, (const char *)p, 1);
        }
    }
    buf_add(b, "\"", 1);
}

static void buf_free(buf_t *b)
{
    if (b->p) {
        explicit_bzero(b->p, b->cap);
        free(b->p);
    }
    memset(b, 0, sizeof *b);
}

/* The card's fields, "pan":…,"exp_month":…, without braces. Card data is
 * written by hand into a buffer we wipe, rather than through jansson, whose
 * copies would be freed unwiped. */
static void buf_card(buf_t *b, const pc_ch_card_t *card, bool holder)
{
    char num[32];
    buf_str(b, "\"pan\":");
    buf_json_str(b, card->pan);
    snprintf(num, sizeof num, ",\"exp_month\":%d,\"exp_year\":%d", card->exp_month, card->exp_year);
    buf_str(b, num);
    if (card->cvv) {
        buf_str(b, ",\"cvv\":");
        buf_json_str(b, card->cvv);
    }
    if (holder && card->holder) {
        buf_str(b, ",\"holder_name\":");
        buf_json_str(b, card->holder);
    }
}

/* Percent-encodes s for a query string into b (everything but unreserved). */
static void buf_query_value(buf_t *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '.' || *p == '_' || *p == '~') {
            buf_add(b, (const char *)p, 1);
        } else {
            char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            buf_add(b, e, 3);
        }
    }
}

/* ---- Health entries ------------------------------------------------------------ */

static health_t *health_find(pc_channel_client_t *cli, const char *id)
{
    for (health_t *h = cli->health; h; h = h->next)
        if (strcmp(h->channel_id, id) == 0)
            return h;
    return NULL;
}

/* The entry of a channel, created on first use; NULL when out of memory or
 * past the cap (health then only lives in Redis). */
static health_t *health_entry(pc_channel_client_t *cli, const char *id)
{
    health_t *h = health_find(cli, id);
    if (h || cli->nhealth >= MAX_HEALTH_ENTRIES)
        return h;
    h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    snprintf(h->channel_id, sizeof h->channel_id, "%s", id);
    h->last_healthy = -1;
    h->next = cli->health;
    cli->health = h;
    cli->nhealth++;
    return h;
}

/* ---- Secrets ------------------------------------------------------------------- */

/* The channel's secret: the environment variable its file names in
 * secret_ref, else, in demo mode only, the public demo secret paysim also
 * defaults to (warned once per channel). Outside demo mode a channel without
 * its secret is refused when the files load; should one still get here, it
 * gets no secret at all. A new string the caller wipes and frees; NULL when
 * out of memory or without a secret. */
static char *channel_secret(pc_channel_client_t *cli, const pc_channel_t *ch)
{
    const char *env = ch->secret_ref[0] ? getenv(ch->secret_ref) : NULL;
    if (env && env[0])
        return strdup(env);
    if (!pc_channels_demo_secrets(cli->chs)) {
        pc_log_error("channel.no_secret", "%s is not set: channel %s cannot sign or verify",
                     ch->secret_ref[0] ? ch->secret_ref : "(no secret_ref)", ch->id);
        return NULL;
    }
    health_t *h = health_entry(cli, ch->id);
    if (!h || !h->demo_warned) {
        pc_log_warn("channel.demo_secret",
                    "%s is not set: channel %s uses the public demo secret \"demo-secret-%s\"; "
                    "never in production",
                    ch->secret_ref[0] ? ch->secret_ref : "(no secret_ref)", ch->id, ch->id);
        if (h)
            h->demo_warned = 1;
    }
    size_t n = strlen(ch->id) + 16;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "demo-secret-%s", ch->id);
    return s;
}

static void secret_free(char *s)
{
    if (s) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

/* ---- Health: recording and reading ------------------------------------------------- */

static void health_key(pc_channel_client_t *cli, char *out, size_t size, const char *id,
                       int64_t window_s, int64_t idx)
{
    char name[128];
    snprintf(name, sizeof name, "chstat:%s:%lld:%lld", id,
             (long long)pc_ch_health_bucket_s(window_s), (long long)idx);
    pc_kv_key(cli->kv, out, size, name);
}

static void health_record(pc_channel_client_t *cli, const char *id, int64_t window_s,
                          pc_ch_count_t count, uint64_t latency_ms)
{
    int64_t now = wall_s();
    health_t *h = health_entry(cli, id);
    if (h)
        pc_ch_ring_add(&h->local, window_s, now, count, latency_ms);
    if (!cli->kv)
        return;
    char key[320], f[4], d[4], l[24], ttl[24];
    int64_t idx = pc_ch_health_bucket_of(window_s, now);
    health_key(cli, key, sizeof key, id, window_s, idx);
    snprintf(f, sizeof f, "%d", count == PC_CH_COUNT_FAILURE);
    snprintf(d, sizeof d, "%d", count == PC_CH_COUNT_DECLINE);
    snprintf(l, sizeof l, "%llu", (unsigned long long)latency_ms);
    snprintf(ttl, sizeof ttl, "%lld",
             (long long)(pc_ch_health_bucket_s(window_s) * (pc_ch_health_buckets(window_s) + 1)));
    const char *argv[] = {"EVAL", RECORD_SCRIPT, "1", key, "n", "1", "f", f, "d", d, "l", l, ttl};
    /* Without Redis the local buckets still count; nothing to wait for. */
    if (pc_kv_command(cli->kv, NULL, NULL, (int)(sizeof argv / sizeof argv[0]), argv, NULL) < 0)
        pc_metrics_add("pc_channel_health_errors_total", "kind=\"record\"", 1);
}

/* The numbers to serve for ch: Redis's when recent and for this window, else
 * this node's own. */
static pc_ch_tally_t health_tally(pc_channel_client_t *cli, health_t *h, const pc_channel_t *ch,
                                  const char **source)
{
    uint64_t now = uv_now(cli->loop);
    if (h->remote_at && now - h->remote_at <= HEALTH_STALE_MS &&
        h->remote_window == ch->alert.window_s) {
        *source = "redis";
        return h->remote;
    }
    *source = "local";
    return pc_ch_ring_sum(&h->local, ch->alert.window_s, wall_s());
}

/* Gauges, and a log line when the verdict changes (the alert's log line). */
static void health_publish(pc_channel_client_t *cli, health_t *h, const pc_channel_t *ch)
{
    const char *source;
    pc_ch_tally_t t = health_tally(cli, h, ch, &source);
    pc_ch_health_t v;
    pc_ch_health_eval(&t, ch->alert.failure_rate_bp, &v);
    char labels[64];
    snprintf(labels, sizeof labels, "channel=\"%s\"", ch->id);
    pc_metrics_set("pc_channel_success_rate_bp", labels, v.success_rate_bp);
    pc_metrics_set("pc_channel_healthy", labels, v.healthy);
    if (v.healthy == h->last_healthy || (h->last_healthy == -1 && v.healthy)) {
        h->last_healthy = v.healthy;
        return;
    }
    h->last_healthy = v.healthy;
    json_t *f = json_pack("{s:s,s:i,s:I,s:I,s:I,s:I,s:I,s:s}", "channel", ch->id, "success_rate_bp",
                          v.success_rate_bp, "attempts", (json_int_t)t.attempts, "failures",
                          (json_int_t)t.failures, "declines", (json_int_t)t.declines,
                          "threshold_bp", (json_int_t)ch->alert.failure_rate_bp, "window_s",
                          (json_int_t)ch->alert.window_s, "source", source);
    if (v.healthy)
        pc_log_fields(PC_LOG_INFO, "channel.healthy", f, "channel %s is healthy again", ch->id);
    else
        pc_log_fields(PC_LOG_WARN, "channel.unhealthy", f,
                      "channel %s failure rate passed its threshold", ch->id);
}

typedef struct {
    pc_channel_client_t *cli;
    char channel_id[33];
    int64_t window_s;
    void (*cb)(void *data);
    void *data;
} refresh_t;

static void client_maybe_free(pc_channel_client_t *cli);

static bool reply_int(const pc_kv_reply_t *r, long long *out)
{
    if (pc_kv_reply_type(r) != PC_KV_INTEGER)
        return false;
    *out = pc_kv_reply_int(r);
    return true;
}

static void refresh_cb(void *data, int status, const pc_kv_reply_t *reply)
{
    refresh_t *rf = data;
    pc_channel_client_t *cli = rf->cli;
    cli->kv_pending--;
    health_t *h = health_find(cli, rf->channel_id);
    if (h)
        h->refreshing = 0;
    long long v[4];
    bool ok = status == 0 && reply && pc_kv_reply_type(reply) == PC_KV_ARRAY &&
              pc_kv_reply_count(reply) == 4;
    for (size_t i = 0; ok && i < 4; i++)
        ok = reply_int(pc_kv_reply_at(reply, i), &v[i]);
    if (h && !cli->closing) {
        if (ok) {
            h->remote = (pc_ch_tally_t){v[0], v[1], v[2], v[3]};
            h->remote_window = rf->window_s;
            h->remote_at = uv_now(cli->loop);
        } else {
            pc_metrics_add("pc_channel_health_errors_total", "kind=\"read\"", 1);
        }
        const pc_channel_t *ch = pc_channels_find(cli->chs, rf->channel_id);
        if (ch)
            health_publish(cli, h, ch);
    }
    if (rf->cb)
        rf->cb(rf->data);
    free(rf);
    client_maybe_free(cli);
}

static int health_refresh(pc_channel_client_t *cli, health_t *h, const pc_channel_t *ch,
                          void (*cb)(void *data), void *data)
{
    if (!cli->kv)
        return PC_EUNAVAIL;
    int64_t window = ch->alert.window_s;
    int64_t nb = pc_ch_health_buckets(window);
    int64_t cur = pc_ch_health_bucket_of(window, wall_s());
    refresh_t *rf = calloc(1, sizeof *rf);
    char(*keys)[320] = calloc((size_t)nb, sizeof *keys);
    const char **argv = calloc((size_t)nb + 3, sizeof *argv);
    int rc = PC_ENOMEM;
    if (!rf || !keys || !argv)
        goto done;
    char count[16];
    snprintf(count, sizeof count, "%lld", (long long)nb);
    argv[0] = "EVAL";
    argv[1] = SUM_SCRIPT;
    argv[2] = count;
    for (int64_t i = 0; i < nb; i++) {
        health_key(cli, keys[i], sizeof keys[i], ch->id, window, cur - i);
        argv[3 + i] = keys[i];
    }
    rf->cli = cli;
    snprintf(rf->channel_id, sizeof rf->channel_id, "%s", ch->id);
    rf->window_s = window;
    rf->cb = cb;
    rf->data = data;
    rc = pc_kv_command(cli->kv, refresh_cb, rf, (int)nb + 3, argv, NULL);
    if (rc == 0) {
        rf = NULL;
        cli->kv_pending++;
        if (h) {
            h->refreshing = 1;
            h->asked_at = uv_now(cli->loop);
        }
    } else {
        rc = PC_EUNAVAIL;
    }
done:
    free(rf);
    free(keys);
    free(argv);
    return rc;
}

/* How long a request sent age_ms ago may still be open (0: certainly ended). */
static int64_t request_open_ms(pc_channel_client_t *cli, const char *channel_id, int64_t age_ms)
{
    const pc_channel_t *ch = channel_id ? pc_channels_find(cli->chs, channel_id) : NULL;
    int64_t left = ch ? ch->timeouts.open_ms + PC_CH_SEND_MARGIN_MS - age_ms : 0;
    return left > 0 ? left : 0;
}

int64_t pc_channel_failure_wait_ms(pc_channel_client_t *cli, const char *channel_id, int64_t age_ms,
                                   const pc_ch_result_t *res, int64_t not_found_after_ms,
                                   int acknowledged)
{
    if (res->status != PC_CH_FAILED)
        return 0;
    int64_t wait = request_open_ms(cli, channel_id, age_ms);
    if (strcmp(res->code, "NOT_FOUND") != 0)
        return wait;
    if (not_found_after_ms - age_ms > wait)
        wait = not_found_after_ms - age_ms;
    return wait > 0 || !acknowledged ? wait : PC_CH_FORGOTTEN;
}

int pc_channel_health_refresh(pc_channel_client_t *cli, const char *channel_id,
                              void (*cb)(void *data), void *data)
{
    if (cli->closing)
        return PC_ECLOSED;
    const pc_channel_t *ch = channel_id ? pc_channels_find(cli->chs, channel_id) : NULL;
    if (!ch)
        return PC_ENOTFOUND;
    return health_refresh(cli, health_entry(cli, ch->id), ch, cb, data);
}

/* The cached verdict for ch, starting a refresh when the cache has aged. */
static health_t *health_current(pc_channel_client_t *cli, const pc_channel_t *ch, pc_ch_tally_t *t,
                                pc_ch_health_t *v, const char **source)
{
    health_t *h = health_entry(cli, ch->id);
    if (!h)
        return NULL;
    if (!cli->closing && !h->refreshing && uv_now(cli->loop) - h->asked_at >= HEALTH_CACHE_MS) {
        /* Asked at most once per cache period, even while Redis refuses; and
         * then this node's own numbers are published instead. */
        h->asked_at = uv_now(cli->loop);
        if (health_refresh(cli, h, ch, NULL, NULL) < 0)
            health_publish(cli, h, ch);
    }
    *t = health_tally(cli, h, ch, source);
    pc_ch_health_eval(t, ch->alert.failure_rate_bp, v);
    return h;
}

json_t *pc_channel_health(pc_channel_client_t *cli, const char *channel_id)
{
    const pc_channel_t *ch = channel_id ? pc_channels_find(cli->chs, channel_id) : NULL;
    if (!ch)
        return NULL;
    pc_ch_tally_t t = {0};
    pc_ch_health_t v = {10000, 0, 1};
    const char *source = "none";
    health_current(cli, ch, &t, &v, &source);
    return json_pack("{s:i,s:i,s:I,s:I,s:I,s:b,s:I,s:I,s:s}", "success_rate_bp", v.success_rate_bp,
                     "latency_ms", v.latency_ms, "attempts", (json_int_t)t.attempts, "failures",
                     (json_int_t)t.failures, "declines", (json_int_t)t.declines, "healthy",
                     v.healthy, "window_s", (json_int_t)ch->alert.window_s, "threshold_bp",
                     (json_int_t)ch->alert.failure_rate_bp, "source", source);
}

void pc_channel_health_get(pc_channel_client_t *cli, const char *channel_id, int *success_rate_bp,
                           int *latency_ms, int *healthy)
{
    const pc_channel_t *ch = channel_id ? pc_channels_find(cli->chs, channel_id) : NULL;
    pc_ch_tally_t t = {0};
    pc_ch_health_t v = {0, 0, 0}; /* an unknown channel is no candidate */
    const char *source;
    if (ch && !health_current(cli, ch, &t, &v, &source))
        v = (pc_ch_health_t){10000, 0, 1};
    if (success_rate_bp)
        *success_rate_bp = v.success_rate_bp;
    if (latency_ms)
        *latency_ms = v.latency_ms;
    if (healthy)
        *healthy = v.healthy;
}

/* ---- Calls ---------------------------------------------------------------------------- */

static void call_free(call_t *c)
{
    secret_free(c->secret);
    free(c);
}

/* A call for ch; NULL when out of memory. */
static call_t *call_new(pc_channel_client_t *cli, const pc_channel_t *ch, pc_ch_op_t op,
                        const char *method, const char *ref)
{
    call_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->cli = cli;
    c->op = op;
    c->method = method;
    snprintf(c->channel_id, sizeof c->channel_id, "%s", ch->id);
    snprintf(c->ref, sizeof c->ref, "%s", ref ? ref : "");
    c->window_s = ch->alert.window_s;
    c->secret = channel_secret(cli, ch);
    if (!c->secret || pc_random_hex(c->nonce, sizeof c->nonce, 16) < 0) {
        call_free(c);
        return NULL;
    }
    return c;
}

static pc_ch_count_t set_unknown(pc_ch_result_t *r, const char *code, const char *message)
{
    r->status = PC_CH_UNKNOWN;
    r->retryable = 0;
    snprintf(r->code, sizeof r->code, "%s", code);
    snprintf(r->message, sizeof r->message, "%s", message);
    return PC_CH_COUNT_FAILURE;
}

/* A request that ended without an answer. CONNECT_FAILED means the request
 * never reached the channel (refused, unreachable, not resolved): still
 * UNKNOWN by this module's contract, but a caller may treat it as not done. */
static pc_ch_count_t transport_unknown(pc_ch_result_t *r, const pc_http_response_t *resp)
{
    const char *code;
    switch (resp->error) {
    case PC_HTTP_ETIMEOUT:
        code = "TIMEOUT";
        break;
    case PC_HTTP_ECONNREFUSED:
    case PC_HTTP_ECONNECT:
    case PC_HTTP_ERESOLVE:
        code = "CONNECT_FAILED";
        break;
    case PC_HTTP_ETOOLARGE:
    case PC_HTTP_EPROTOCOL:
        code = "BAD_ANSWER";
        break;
    default:
        code = "TRANSPORT_ERROR";
        break;
    }
    char msg[160];
    snprintf(msg, sizeof msg, "%s: %s", pc_http_strerror(resp->error), resp->error_message);
    return set_unknown(r, code, msg);
}

/* True when the answer carries our nonce, a timestamp in the window and a
 * valid signature over "TIMESTAMP\nNONCE\nBODY\n" with the channel's secret. */
static bool answer_verified(const call_t *c, const pc_http_response_t *resp)
{
    size_t tl, nl, sl;
    const char *ts = pc_http_response_header(resp, "X-Timestamp", &tl);
    const char *nonce = pc_http_response_header(resp, "X-Nonce", &nl);
    const char *sig = pc_http_response_header(resp, "X-Signature", &sl);
    if (!ts || !nonce || !sig || nl != strlen(c->nonce) || memcmp(nonce, c->nonce, nl) != 0)
        return false;
    int64_t t;
    char tsbuf[24];
    if (tl >= sizeof tsbuf || pc_timestamp_parse(ts, tl, &t) < 0 ||
        !pc_timestamp_in_window(t, wall_s(), ANSWER_WINDOW_S))
        return false;
    memcpy(tsbuf, ts, tl);
    tsbuf[tl] = 0;
    size_t len;
    char *msg = pc_sign_notify_string(tsbuf, c->nonce, resp->body, resp->body_len, &len);
    if (!msg)
        return false;
    int rc = pc_hmac_sha256_verify(c->secret, strlen(c->secret), msg, len, sig, sl);
    free(msg);
    return rc == 0;
}

/* Metrics, the log line and health for one finished call. No body is ever
 * logged: a request may hold a card number, an answer a card token. */
static void call_observe(call_t *c, const pc_ch_result_t *r, pc_ch_count_t count, int http_status,
                         bool record)
{
    pc_channel_client_t *cli = c->cli;
    const char *op = pc_ch_op_name(c->op);
    char labels[160];
    snprintf(labels, sizeof labels, "channel=\"%s\",op=\"%s\",status=\"%s\"", c->channel_id, op,
             g_status_labels[r->status]);
    pc_metrics_add("pc_channel_calls_total", labels, 1);
    snprintf(labels, sizeof labels, "channel=\"%s\",op=\"%s\"", c->channel_id, op);
    pc_metrics_observe("pc_channel_latency_seconds", labels, (double)r->elapsed_ms / 1000.0);
    json_t *f =
        json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:i,s:I}", "channel", c->channel_id, "op", op, "method",
                  c->method, "reference", c->ref, "status", g_status_names[r->status], "code",
                  r->code, "http_status", http_status, "elapsed_ms", (json_int_t)r->elapsed_ms);
    pc_log_fields(r->status == PC_CH_UNKNOWN ? PC_LOG_WARN : PC_LOG_INFO, "channel.call", f,
                  "%s %s", c->method, op);
    if (record && count != PC_CH_COUNT_NONE)
        health_record(cli, c->channel_id, c->window_s, count, r->elapsed_ms);
}

/* A daily file's answer as the file callback's status. */
static int file_status(const call_t *c, const pc_http_response_t *resp, bool verified,
                       pc_ch_result_t *r, pc_ch_count_t *count)
{
    if (resp->error == PC_HTTP_ECANCELLED) {
        *count = set_unknown(r, "CANCELLED", "the client closed");
        return PC_ECLOSED;
    }
    if (resp->error != PC_HTTP_OK) {
        *count = transport_unknown(r, resp);
        return resp->error == PC_HTTP_ETIMEOUT ? PC_ETIMEDOUT : PC_EUNAVAIL;
    }
    if (!verified) {
        *count = set_unknown(r, "BAD_SIGNATURE", "the answer's signature does not verify");
        return PC_EIO;
    }
    if (resp->status == 200) {
        r->status = PC_CH_SUCCESS;
        *count = PC_CH_COUNT_NONE;
        return 0;
    }
    json_t *action;
    *count = pc_ch_map_answer(c->op, resp->status, resp->body, resp->body_len, NULL, r, &action);
    json_decref(action);
    if (r->status == PC_CH_UNKNOWN)
        return PC_EUNAVAIL;
    if (!strcmp(r->code, "NOT_FOUND")) {
        *count = PC_CH_COUNT_NONE; /* no such file: the channel answered */
        return PC_ENOTFOUND;
    }
    return PC_EINVAL;
}

static void call_done_cb(void *data, const pc_http_response_t *resp)
{
    call_t *c = data;
    pc_ch_result_t r;
    memset(&r, 0, sizeof r);
    r.elapsed_ms = (uv_hrtime() - c->start_ns) / 1000000;
    json_t *action = NULL;
    pc_ch_count_t count;
    bool cancelled = resp->error == PC_HTTP_ECANCELLED;
    bool verified = resp->error == PC_HTTP_OK && answer_verified(c, resp);
    if (c->file_cb) {
        int st = file_status(c, resp, verified, &r, &count);
        call_observe(c, &r, count, resp->status, !cancelled);
        c->file_cb(c->data, st, st == 0 ? resp->body : NULL, st == 0 ? resp->body_len : 0);
        call_free(c);
        return;
    }
    if (cancelled)
        count = set_unknown(&r, "CANCELLED", "the client closed before the channel answered");
    else if (resp->error != PC_HTTP_OK)
        count = transport_unknown(&r, resp);
    else if (!verified)
        count = set_unknown(&r, "BAD_SIGNATURE", "the answer's signature does not verify");
    else
        count = pc_ch_map_answer(c->op, resp->status, resp->body, resp->body_len,
                                 c->ref[0] ? c->ref : NULL, &r, &action);
    r.action = action;
    call_observe(c, &r, count, resp->status, !cancelled);
    c->cb(c->data, &r);
    json_decref(action);
    call_free(c);
}

/* Signs and sends; on success the call belongs to the HTTP client until
 * call_done_cb. path_rest follows the endpoint ("/payments?payment_no=…"). */
static int call_send(call_t *c, const pc_channel_t *ch, const char *path_rest, const char *body,
                     size_t body_len)
{
    /* The endpoint's path (what the channel sees as the target) prefixes
     * path_rest, both in the URL and in the string to sign. */
    const char *ep = ch->endpoint;
    size_t eplen = strlen(ep);
    while (eplen > 0 && ep[eplen - 1] == '/')
        eplen--;
    const char *scheme_end = strstr(ep, "://");
    const char *path = scheme_end ? strchr(scheme_end + 3, '/') : NULL;
    if (!scheme_end)
        return PC_EINVAL;
    size_t plen = path && path < ep + eplen ? (size_t)(ep + eplen - path) : 0;
    buf_t url = {0}, target = {0};
    buf_add(&url, ep, eplen);
    buf_str(&url, path_rest);
    buf_add(&target, plen ? path : "", plen);
    buf_str(&target, path_rest);
    char ts[24];
    snprintf(ts, sizeof ts, "%lld", (long long)wall_s());
    char *msg = NULL, *sig = NULL;
    size_t len = 0;
    int rc = PC_ENOMEM;
    if (url.oom || target.oom)
        goto done;
    msg =
        pc_sign_request_string(c->method, target.p, ts, c->nonce, body ? body : "", body_len, &len);
    sig = msg ? pc_hmac_sha256_sign(c->secret, strlen(c->secret), msg, len) : NULL;
    if (!sig)
        goto done;
    char h_ts[48], h_nonce[64], h_sig[128];
    snprintf(h_ts, sizeof h_ts, "X-Timestamp: %s", ts);
    snprintf(h_nonce, sizeof h_nonce, "X-Nonce: %s", c->nonce);
    snprintf(h_sig, sizeof h_sig, "X-Signature: %s", sig);
    const char *headers[] = {h_ts, h_nonce, h_sig, "Accept: application/json",
                             "Content-Type: application/json"};
    bool post = strcmp(c->method, "POST") == 0;
    uint32_t total = (uint32_t)ch->timeouts.request_ms;
    uint32_t connect = (uint32_t)ch->timeouts.connect_ms;
    pc_http_request_t req = {
        .method = c->method,
        .url = url.p,
        .headers = headers,
        .header_count = post ? 5 : 4,
        .body = post ? body : NULL,
        .body_len = post ? body_len : 0,
        .timeout_ms = total,
        .connect_timeout_ms = connect < total ? connect : total,
        /* Files are large; an answer to a call is a small object (a channel
         * or proxy sending more is refused, not buffered: 256 connections
         * of 16 MiB each would be 4 GiB). */
        .max_response_bytes = c->op == PC_CH_OP_FILE ? 0 : PC_CH_ANSWER_MAX_BYTES,
    };
    c->start_ns = uv_hrtime();
    rc = pc_http_client_request(c->cli->http, &req, call_done_cb, c);
done:
    if (msg) {
        explicit_bzero(msg, len);
        free(msg);
    }
    free(sig);
    buf_free(&url);
    buf_free(&target);
    return rc;
}

/* Looks the channel up for an operation. */
static int find_channel(pc_channel_client_t *cli, const char *id, bool for_pay,
                        const pc_channel_t **out)
{
    if (cli->closing)
        return PC_ECLOSED;
    if (!id)
        return PC_EINVAL;
    *out = pc_channels_find(cli->chs, id);
    if (!*out || (for_pay && !pc_channels_effective_enabled(cli->chs, id)))
        return PC_ENOTFOUND;
    return 0;
}

/* Starts c with path_rest and body; frees c when it could not start. */
static int call_start(call_t *c, const pc_channel_t *ch, const char *path_rest, const char *body,
                      size_t len)
{
    int rc = call_send(c, ch, path_rest, body, len);
    if (rc < 0) {
        pc_log_error("channel.call", "%s %s on %s could not start: %s", c->method,
                     pc_ch_op_name(c->op), c->channel_id, pc_strerror(rc));
        call_free(c);
    }
    return rc;
}

/* A JSON body for calls without card data, with callback_base added. */
static char *json_body(pc_channel_client_t *cli, json_t *o)
{
    if (o && cli->callback_base)
        json_object_set_new(o, "callback_base", json_string(cli->callback_base));
    char *text = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    return text;
}

static int start_json(pc_channel_client_t *cli, const pc_channel_t *ch, pc_ch_op_t op,
                      const char *ref, const char *path, json_t *o, pc_ch_cb cb, void *data)
{
    char *body = json_body(cli, o);
    if (!body)
        return PC_ENOMEM;
    call_t *c = call_new(cli, ch, op, "POST", ref);
    int rc = PC_ENOMEM;
    if (c) {
        c->cb = cb;
        c->data = data;
        rc = call_start(c, ch, path, body, strlen(body));
    }
    free(body);
    return rc;
}

static bool card_valid(const pc_ch_card_t *card)
{
    return card && card->pan && card->pan[0];
}

int pc_channel_pay(pc_channel_client_t *cli, const pc_ch_pay_t *req, pc_ch_cb cb, void *data)
{
    if (!req || !cb || !valid_no(req->payment_no) || req->amount <= 0 ||
        !pc_ledger_currency_ok(req->currency) || !req->method)
        return PC_EINVAL;
    const pc_channel_t *ch;
    int rc = find_channel(cli, req->channel_id, true, &ch);
    if (rc < 0)
        return rc;
    pc_pay_method_t m;
    if (pc_pay_method_parse(req->method, &m) < 0 || !(ch->methods & (1u << m)))
        return PC_EINVAL;
    bool by_card = m == PC_METHOD_CARD && req->card;
    if (by_card && !card_valid(req->card))
        return PC_EINVAL;
    if ((m == PC_METHOD_CARD || m == PC_METHOD_QUICK_PAY || m == PC_METHOD_AGREEMENT) && !by_card &&
        !(req->card_token && req->card_token[0]))
        return PC_EINVAL;
    if (m == PC_METHOD_QR_BUYER && !(req->buyer_code && req->buyer_code[0]))
        return PC_EINVAL;
    if (req->expire_seconds < 0)
        return PC_EINVAL;
    json_t *o =
        json_pack("{s:s,s:I,s:s,s:s}", "payment_no", req->payment_no, "amount",
                  (json_int_t)req->amount, "currency", req->currency, "method", req->method);
    if (o && !by_card && req->card_token)
        json_object_set_new(o, "card_token", json_string(req->card_token));
    if (o && m == PC_METHOD_QR_BUYER)
        json_object_set_new(o, "buyer_code", json_string(req->buyer_code));
    if (o && req->expire_seconds > 0)
        json_object_set_new(o, "expire_seconds", json_integer(req->expire_seconds));
    if (!by_card)
        return start_json(cli, ch, PC_CH_OP_PAY, req->payment_no, "/payments", o, cb, data);
    /* With card data: the JSON without it, then the card spliced in by hand
     * into a buffer that is wiped after sending. */
    char *head = json_body(cli, o);
    if (!head)
        return PC_ENOMEM;
    buf_t b = {0};
    buf_add(&b, head, strlen(head) - 1); /* without the closing brace */
    free(head);
    buf_str(&b, ",\"card\":{");
    buf_card(&b, req->card, true);
    buf_str(&b, "}}");
    rc = PC_ENOMEM;
    call_t *c = b.oom ? NULL : call_new(cli, ch, PC_CH_OP_PAY, "POST", req->payment_no);
    if (c) {
        c->cb = cb;
        c->data = data;
        rc = call_start(c, ch, "/payments", b.p, b.len);
    }
    buf_free(&b);
    return rc;
}

int pc_channel_tokenize(pc_channel_client_t *cli, const char *channel_id, const pc_ch_card_t *card,
                        pc_ch_cb cb, void *data)
{
    if (!cb || !card_valid(card))
        return PC_EINVAL;
    const pc_channel_t *ch;
    int rc = find_channel(cli, channel_id, false, &ch);
    if (rc < 0)
        return rc;
    buf_t b = {0};
    buf_str(&b, "{");
    buf_card(&b, card, true);
    buf_str(&b, "}");
    rc = PC_ENOMEM;
    call_t *c = b.oom ? NULL : call_new(cli, ch, PC_CH_OP_TOKENIZE, "POST", NULL);
    if (c) {
        c->cb = cb;
        c->data = data;
        rc = call_start(c, ch, "/cards/tokenize", b.p, b.len);
    }
    buf_free(&b);
    return rc;
}

int pc_channel_refund(pc_channel_client_t *cli, const pc_ch_refund_t *req, pc_ch_cb cb, void *data)
{
    if (!req || !cb || !valid_no(req->refund_no) || req->amount <= 0 ||
        (req->currency && !pc_ledger_currency_ok(req->currency)))
        return PC_EINVAL;
    bool by_txn = req->channel_txn_id && req->channel_txn_id[0];
    if (!by_txn && !valid_no(req->payment_no))
        return PC_EINVAL;
    const pc_channel_t *ch;
    int rc = find_channel(cli, req->channel_id, false, &ch);
    if (rc < 0)
        return rc;
    json_t *o =
        json_pack("{s:s,s:I}", "refund_no", req->refund_no, "amount", (json_int_t)req->amount);
    if (o && by_txn)
        json_object_set_new(o, "channel_txn_id", json_string(req->channel_txn_id));
    if (o && req->payment_no && req->payment_no[0])
        json_object_set_new(o, "payment_no", json_string(req->payment_no));
    if (o && req->currency)
        json_object_set_new(o, "currency", json_string(req->currency));
    return start_json(cli, ch, PC_CH_OP_REFUND, req->refund_no, "/refunds", o, cb, data);
}

int pc_channel_payout(pc_channel_client_t *cli, const pc_ch_payout_t *req, pc_ch_cb cb, void *data)
{
    if (!req || !cb || !valid_no(req->payout_no) || req->amount <= 0 ||
        !pc_ledger_currency_ok(req->currency) || !json_is_object(req->payee))
        return PC_EINVAL;
    const pc_channel_t *ch;
    int rc = find_channel(cli, req->channel_id, false, &ch);
    if (rc < 0)
        return rc;
    json_t *o = json_pack("{s:s,s:I,s:s,s:O}", "payout_no", req->payout_no, "amount",
                          (json_int_t)req->amount, "currency", req->currency, "payee",
                          (json_t *)req->payee);
    return start_json(cli, ch, PC_CH_OP_PAYOUT, req->payout_no, "/payouts", o, cb, data);
}

/* A call without a body about transaction ref at path (built into path,
 * freed here) of channel_id: queries and a payment's close. */
static int start_bodyless(pc_channel_client_t *cli, pc_ch_op_t op, const char *method,
                          const char *channel_id, const char *ref, buf_t *path, pc_ch_cb cb,
                          void *data)
{
    const pc_channel_t *ch;
    int rc = find_channel(cli, channel_id, false, &ch);
    if (rc == 0) {
        rc = PC_ENOMEM;
        call_t *c = path->oom ? NULL : call_new(cli, ch, op, method, ref);
        if (c) {
            c->cb = cb;
            c->data = data;
            rc = call_start(c, ch, path->p, NULL, 0);
        }
    }
    buf_free(path);
    return rc;
}

static int query(pc_channel_client_t *cli, pc_ch_op_t op, const char *channel_id, const char *what,
                 const char *no, pc_ch_cb cb, void *data)
{
    if (!cb || !valid_no(no))
        return PC_EINVAL;
    /* "/payments?payment_no=…" from what = "payment". */
    buf_t path = {0};
    buf_str(&path, "/");
    buf_str(&path, what);
    buf_str(&path, "s?");
    buf_str(&path, what);
    buf_str(&path, "_no=");
    buf_query_value(&path, no);
    return start_bodyless(cli, op, "GET", channel_id, no, &path, cb, data);
}

int pc_channel_query_payment(pc_channel_client_t *cli, const char *channel_id,
                             const char *payment_no, pc_ch_cb cb, void *data)
{
    return query(cli, PC_CH_OP_QUERY, channel_id, "payment", payment_no, cb, data);
}

int pc_channel_query_refund(pc_channel_client_t *cli, const char *channel_id, const char *refund_no,
                            pc_ch_cb cb, void *data)
{
    return query(cli, PC_CH_OP_REFUND_QUERY, channel_id, "refund", refund_no, cb, data);
}

int pc_channel_query_payout(pc_channel_client_t *cli, const char *channel_id, const char *payout_no,
                            pc_ch_cb cb, void *data)
{
    return query(cli, PC_CH_OP_PAYOUT_QUERY, channel_id, "payout", payout_no, cb, data);
}

int pc_channel_close_payment(pc_channel_client_t *cli, const char *channel_id,
                             const char *payment_no, const char *channel_txn_id, pc_ch_cb cb,
                             void *data)
{
    if (!cb || !valid_no(payment_no) || !valid_no(channel_txn_id))
        return PC_EINVAL;
    buf_t path = {0};
    buf_str(&path, "/payments/");
    buf_query_value(&path, channel_txn_id);
    buf_str(&path, "/close");
    return start_bodyless(cli, PC_CH_OP_CLOSE, "POST", channel_id, payment_no, &path, cb, data);
}

static bool valid_date(const char *d)
{
    if (!d || strlen(d) != 10 || d[4] != '-' || d[7] != '-')
        return false;
    for (int i = 0; i < 10; i++)
        if (i != 4 && i != 7 && (d[i] < '0' || d[i] > '9'))
            return false;
    return true;
}

int pc_channel_fetch_file(pc_channel_client_t *cli, const char *channel_id, const char *kind,
                          const char *date, pc_ch_file_cb cb, void *data)
{
    if (!cb || !kind || (strcmp(kind, "statements") != 0 && strcmp(kind, "chargebacks") != 0) ||
        !valid_date(date))
        return PC_EINVAL;
    const pc_channel_t *ch;
    int rc = find_channel(cli, channel_id, false, &ch);
    if (rc < 0)
        return rc;
    char path[64], ref[32];
    snprintf(path, sizeof path, "/%s/%s.csv", kind, date);
    snprintf(ref, sizeof ref, "%.11s/%s", kind, date);
    call_t *c = call_new(cli, ch, PC_CH_OP_FILE, "GET", ref);
    if (!c)
        return PC_ENOMEM;
    c->file_cb = cb;
    c->data = data;
    return call_start(c, ch, path, NULL, 0);
}

/* ---- Callbacks from channels ------------------------------------------------------- */

#define CALLBACK_TALLY_MS 600000 /* refused vs taken callbacks are counted over this */
#define CALLBACK_REFUSED_MIN 3   /* refused ones, none taken, that make a channel failing */

void pc_channel_callback_seen(pc_channel_client_t *cli, const char *channel_id, int accepted,
                              const char *why, const char *peer)
{
    if (!channel_id || !pc_channels_find(cli->chs, channel_id))
        return; /* junk naming no channel is nobody's to page about */
    char labels[96];
    snprintf(labels, sizeof labels, "channel=\"%s\",result=\"%s\"", channel_id,
             accepted ? "accepted" : "refused");
    pc_metrics_add("pc_channel_callbacks_seen_total", labels, 1);
    health_t *h = health_entry(cli, channel_id);
    if (!h)
        return;
    uint64_t now = uv_now(cli->loop);
    if (!h->cb_window_at || now - h->cb_window_at > CALLBACK_TALLY_MS) {
        h->cb_window_at = now;
        h->cb_refused = h->cb_accepted = 0;
    }
    if (accepted) {
        h->cb_accepted++;
        return;
    }
    h->cb_refused++;
    h->cb_refused_at = now;
    snprintf(h->cb_why, sizeof h->cb_why, "%s", why ? why : "invalid");
    snprintf(h->cb_peer, sizeof h->cb_peer, "%s", peer ? peer : "");
}

int pc_channel_callbacks_failing(pc_channel_client_t *cli, const char *channel_id, char *msg,
                                 size_t len)
{
    health_t *h = health_find(cli, channel_id);
    uint64_t now = uv_now(cli->loop);
    if (!h || h->cb_refused < CALLBACK_REFUSED_MIN || h->cb_accepted > 0 ||
        now - h->cb_refused_at > CALLBACK_TALLY_MS)
        return 0;
    snprintf(msg, len,
             "channel %s: %lld callbacks refused and none taken in %d minutes (last: %s, from "
             "%s): payments wait for status queries; check its secret and clocks",
             channel_id, h->cb_refused, CALLBACK_TALLY_MS / 60000, h->cb_why,
             h->cb_peer[0] ? h->cb_peer : "?");
    return 1;
}

int pc_channel_verify_callback(pc_channel_client_t *cli, const char *channel_id, const char *method,
                               const char *target, const char *timestamp, const char *nonce,
                               const char *signature, const char *body, size_t len,
                               pc_ch_callback_t *out, const char **why)
{
    /* The protocol signs a callback's timestamp, nonce and body, not its
     * target: the channel id of the path is checked against the body's. A
     * replayed callback is not refused here — no nonce store — because every
     * state change it leads to in paycore is conditional (… WHERE status =
     * expected): the second delivery finds the state already moved and
     * changes nothing. */
    (void)target;
    const char *dummy;
    if (!why)
        why = &dummy;
    *why = NULL;
    const pc_channel_t *ch = channel_id ? pc_channels_find(cli->chs, channel_id) : NULL;
    if (!ch) {
        *why = "no channel has this id";
        return PC_ENOTFOUND;
    }
    if (method && strcmp(method, "POST") != 0) {
        *why = "callbacks are POSTed";
        return PC_EINVAL;
    }
    if (!timestamp || !nonce || !signature || !body) {
        *why = "X-Timestamp, X-Nonce and X-Signature are required";
        return PC_EINVAL;
    }
    int64_t ts;
    if (!pc_nonce_is_valid(nonce, strlen(nonce))) {
        *why = "X-Nonce must be 16 to 64 of [A-Za-z0-9_-]";
        return PC_EINVAL;
    }
    if (pc_timestamp_parse(timestamp, strlen(timestamp), &ts) < 0) {
        *why = "X-Timestamp must be Unix seconds";
        return PC_EINVAL;
    }
    if (!pc_timestamp_in_window(ts, wall_s(), CALLBACK_WINDOW_S)) {
        *why = "X-Timestamp is more than 300 s away from our clock";
        return PC_EINVAL;
    }
    char *secret = channel_secret(cli, ch);
    size_t mlen;
    char *msg = secret ? pc_sign_notify_string(timestamp, nonce, body, len, &mlen) : NULL;
    int rc =
        msg ? pc_hmac_sha256_verify(secret, strlen(secret), msg, mlen, signature, strlen(signature))
            : PC_ENOMEM;
    free(msg);
    secret_free(secret);
    if (rc == PC_ENOMEM || rc == PC_EIO) {
        *why = "the signature could not be checked";
        return rc;
    }
    if (rc < 0) {
        *why = "X-Signature does not match the callback";
        return PC_EINVAL;
    }
    json_t *ev = json_loadb(body, len, 0, NULL);
    json_t *d = json_object_get(ev, "data");
    const char *body_channel = json_string_value(json_object_get(ev, "channel_id"));
    const char *object = json_string_value(json_object_get(d, "object"));
    rc = PC_EINVAL;
    if (!json_is_object(d) || !object) {
        *why = "the body is not a callback event with a data object";
        goto done;
    }
    if (body_channel && strcmp(body_channel, ch->id) != 0) {
        *why = "the body is about another channel";
        goto done;
    }
    static const struct {
        const char *object, *no;
        pc_cb_kind_t kind;
        pc_ch_op_t op;
    } kinds[] = {
        {"payment", "payment_no", PC_CB_PAYMENT, PC_CH_OP_QUERY},
        {"refund", "refund_no", PC_CB_REFUND, PC_CH_OP_REFUND_QUERY},
        {"payout", "payout_no", PC_CB_PAYOUT, PC_CH_OP_PAYOUT_QUERY},
    };
    size_t k = 0;
    while (k < 3 && strcmp(object, kinds[k].object) != 0)
        k++;
    const char *no = k < 3 ? json_string_value(json_object_get(d, kinds[k].no)) : NULL;
    if (!no || !valid_no(no)) {
        *why = "the body names no payment, refund or payout of ours";
        goto done;
    }
    memset(out, 0, sizeof *out);
    out->kind = kinds[k].kind;
    snprintf(out->ref, sizeof out->ref, "%s", no);
    json_t *action = NULL;
    pc_ch_map_object(kinds[k].op, d, no, &out->result, &action);
    json_decref(action);
    out->result.action = NULL;
    if (out->result.status == PC_CH_UNKNOWN) {
        *why = "the body's transaction is malformed";
        goto done;
    }
    rc = 0;
done:
    json_decref(ev);
    return rc;
}

/* ---- Lifecycle ----------------------------------------------------------------------- */

pc_channel_client_t *pc_channel_client_new(uv_loop_t *loop, pc_channels_t *chs, pc_kv_t *kv,
                                           const char *callback_base)
{
    pc_channel_client_t *cli = calloc(1, sizeof *cli);
    if (!cli)
        return NULL;
    cli->loop = loop;
    cli->chs = chs;
    cli->kv = kv;
    if (callback_base && callback_base[0]) {
        cli->callback_base = strdup(callback_base);
        if (!cli->callback_base)
            goto fail;
        size_t n = strlen(cli->callback_base);
        while (n > 0 && cli->callback_base[n - 1] == '/')
            cli->callback_base[--n] = 0;
    }
    /* Channels are few hosts carrying all payment traffic: allow many
     * connections to each. */
    pc_http_client_opts_t opts = {
        .max_host_connections = 64,
        .max_total_connections = 256,
        .max_response_bytes = 16 * 1024 * 1024, /* daily files */
        .user_agent = "paycore-channel",
    };
    cli->http = pc_http_client_new(loop, &opts);
    if (!cli->http)
        goto fail;
    pc_metrics_describe("pc_channel_calls_total", PC_METRIC_COUNTER,
                        "channel calls by channel, operation and result status");
    pc_metrics_describe("pc_channel_latency_seconds", PC_METRIC_HISTOGRAM,
                        "channel call latency by channel and operation");
    pc_metrics_describe("pc_channel_success_rate_bp", PC_METRIC_GAUGE,
                        "channel success rate over its alert window, basis points");
    pc_metrics_describe("pc_channel_healthy", PC_METRIC_GAUGE,
                        "1 while the channel's failure rate is under its alert threshold");
    pc_metrics_describe("pc_channel_health_errors_total", PC_METRIC_COUNTER,
                        "channel health counters not written to or read from Redis");
    return cli;
fail:
    free(cli->callback_base);
    free(cli);
    return NULL;
}

static void client_maybe_free(pc_channel_client_t *cli)
{
    if (!cli->closing || cli->http || cli->kv_pending)
        return;
    while (cli->health) {
        health_t *h = cli->health;
        cli->health = h->next;
        free(h);
    }
    void (*cb)(void *) = cli->close_cb;
    void *data = cli->close_data;
    free(cli->callback_base);
    free(cli);
    if (cb)
        cb(data);
}

static void http_closed_cb(void *data)
{
    pc_channel_client_t *cli = data;
    cli->http = NULL;
    client_maybe_free(cli);
}

void pc_channel_client_close(pc_channel_client_t *cli, void (*cb)(void *data), void *data)
{
    cli->closing = 1;
    cli->close_cb = cb;
    cli->close_data = data;
    /* In-flight calls end now, each with UNKNOWN (files: PC_ECLOSED). */
    pc_http_client_close(cli->http, http_closed_cb, cli);
}
