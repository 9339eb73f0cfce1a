#include "notify/notifier.h"
#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"
#include "http/client.h"

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* Retries in notify.schedule_ms; api.md's schedule has 15. */
#define MAX_SCHEDULE PC_CONFIG_MAX_NOTIFY_DELAYS
/* How often the backlog gauges are read from PostgreSQL. */
#define METRICS_EVERY_MS 5000
/* A row handed back unsent becomes due again after this, so that the next
 * claims prefer other rows to the ones that just had to wait. Rows of a host
 * that stopped answering wait as long as a first retry would (at least this),
 * so that a dead endpoint's backlog is not claimed and handed back over and
 * over while other merchants' rows wait behind it. */
#define RELEASE_DELAY_MS 1000
/* A stored platform key that cannot be used, or one that could not be
 * generated: read (or made) again this often, until ops mend it; RSA2
 * events wait as long meanwhile. */
#define KEY_BAD_RETRY_MS 5000
/* Time a row's lease must still cover beyond the request timeout before it is
 * sent: room for recording the outcome and for clock drift between the claim
 * statement and our loop clock. */
#define LEASE_MARGIN_MS 2000
/* Outcomes are written in batches: within this delay, or at once at this count. */
#define FLUSH_DELAY_MS 10
#define FLUSH_MAX 500
/* Per-host state of hosts idle this long is forgotten. */
#define HOST_IDLE_MS 300000
#define HOST_BUCKETS 256
/* Merchants remembered per host, and merchants left out of one claim. */
#define HOST_MERCHANTS 4
#define MAX_EXCLUDED 256
#define ERROR_TEXT_MAX 200
#define PLATFORM_KEY_MAX_BYTES 65536

typedef struct host host_t;
typedef struct delivery delivery_t;

enum { D_NEW, D_QUEUED, D_SENDING };

/* One claimed row, from the claim until its outcome is queued for recording. */
struct delivery {
    delivery_t *next; /* in its host's queue */
    pc_notifier_t *n;
    host_t *host;
    int state;
    char event_id[48];
    char merchant_id[72];
    char token[96];
    char *notify_url;
    char *payload;
    size_t payload_len;
    int attempts;           /* attempts made before this one */
    uint64_t claim_sent_ms; /* loop time the claim was sent: the lease began after it */
    uint64_t start_ms;      /* loop time the request was sent */
};

/* Deliveries to one scheme://host:port. */
struct host {
    host_t *next; /* hash chain */
    char *key;
    delivery_t *q_head, *q_tail;
    int queued, inflight;
    int unhealthy; /* the last request timed out or could not connect */
    int pumping;
    uint64_t last_used_ms;
    /* Merchants whose rows this host holds, so that claims can leave out
     * their other rows while the host is busy. */
    char merchants[HOST_MERCHANTS][72];
    int nmerchants;
};

struct pc_notifier {
    uv_loop_t *loop;
    pc_db_t *db;
    pc_merchants_t *merchants;
    pc_http_client_t *http;
    char node_id[64];
    int64_t schedule[MAX_SCHEDULE];
    int nschedule;
    uint64_t poll_ms, timeout_ms, lease_ms;
    long long claim_failed_logged_s; /* pc_log_due */
    int batch, host_conns, max_inflight;
    pc_rsa_key_t *key; /* NULL until generated when no file is configured */
    char *key_pem;
    struct pc_notifier_keygen *keygen; /* platform key being generated */
    uint64_t key_wait_since_ms;        /* an RSA2 event first waited for a key (0: none) */
    int key_query;                     /* the shared platform key being read or stored */
    uint64_t key_retry_at;             /* loop time to read it again (0: no retry due) */
    uv_timer_t poll_timer, flush_timer;
    int started, stopping, closing, handles_open;
    void (*stop_cb)(void *data);
    void *stop_data;
    int claiming;            /* a claim statement is in flight */
    int held;                /* deliveries alive (claimed, outcome not yet queued) */
    int starved;             /* a poll found no room; claim again once deliveries drain */
    int wait_drain;          /* a host is half full: claim again once one drains below half */
    int64_t dead_release_ms; /* release delay for rows of an unhealthy host */
    json_t *pending;         /* outcomes waiting to be written */
    int recording;           /* record statements in flight */
    int metrics_query;       /* backlog statement in flight */
    uint64_t next_metrics_ms, next_prune_ms;
    host_t *hosts[HOST_BUCKETS];
};

typedef struct {
    pc_notifier_t *n;
    int want;
    uint64_t sent_ms;
    char token[96];
} claim_t;

typedef struct {
    pc_notifier_t *n;
    size_t count;
} record_t;

static void poll_cb(uv_timer_t *t);
static void load_stored_key(pc_notifier_t *n);
static void flush_cb(uv_timer_t *t);
static void host_pump(pc_notifier_t *n, host_t *h);
static void maybe_finish(pc_notifier_t *n);

/* ---- Hosts ------------------------------------------------------------------ */

/* Writes the connection key of url ("http://example.com:80"): what libcurl's
 * per-host connection cap counts by. Returns 0 or PC_EINVAL. */
static int host_key(const char *url, char *out, size_t outlen)
{
    const char *sep = strstr(url, "://");
    if (!sep)
        return PC_EINVAL;
    size_t scheme_len = (size_t)(sep - url);
    const char *a = sep + 3;
    const char *end = a + strcspn(a, "/?#");
    const char *h = a;
    for (const char *q = a; q < end; q++)
        if (*q == '@')
            h = q + 1;
    if (h == end)
        return PC_EINVAL;
    const char *after_ipv6 = h;
    for (const char *q = h; q < end; q++)
        if (*q == ']')
            after_ipv6 = q;
    int has_port = 0;
    for (const char *q = after_ipv6; q < end; q++)
        if (*q == ':')
            has_port = 1;
    int https = scheme_len == 5 && strncasecmp(url, "https", 5) == 0;
    int w = snprintf(out, outlen, "%.*s://%.*s%s", (int)scheme_len, url, (int)(end - h), h,
                     has_port ? "" : (https ? ":443" : ":80"));
    if (w < 0 || (size_t)w >= outlen)
        return PC_EINVAL;
    for (char *p = out; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    return 0;
}

static unsigned host_hash(const char *s)
{
    unsigned h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h % HOST_BUCKETS;
}

static host_t *host_get(pc_notifier_t *n, const char *url)
{
    char key[600];
    if (host_key(url, key, sizeof key) != 0)
        snprintf(key, sizeof key, "invalid:"); /* every bad URL shares one queue */
    host_t **bucket = &n->hosts[host_hash(key)];
    for (host_t *h = *bucket; h; h = h->next)
        if (strcmp(h->key, key) == 0)
            return h;
    host_t *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->key = strdup(key);
    if (!h->key) {
        free(h);
        return NULL;
    }
    h->last_used_ms = uv_now(n->loop);
    h->next = *bucket;
    *bucket = h;
    return h;
}

/* Rows a host may hold (queued plus in flight). A healthy host may take a
 * quarter of the node's capacity, so a burst for one merchant flows at full
 * speed; a host that stopped answering keeps only what it can have in
 * flight, so its backlog cannot crowd out other merchants' events. */
static int host_limit(const pc_notifier_t *n, const host_t *h)
{
    if (h->unhealthy)
        return n->host_conns;
    int q = n->max_inflight / 4;
    return q > n->host_conns ? q : n->host_conns;
}

/* A host holding half of what it may, or so much that one more full claim
 * could overflow it: claims leave its merchants' rows in the table (no
 * churn of claiming and handing back) and the next claim comes when it
 * drains. (With only the half rule, a claim that came while a host drained
 * through 7 of 16 brought 10 rows and handed one back unsent; a loaded CI
 * machine, where the answers end one by one, caught it.) */
static int host_busy(const pc_notifier_t *n, const host_t *h)
{
    int limit = host_limit(n, h), held = h->queued + h->inflight;
    return held >= (limit + 1) / 2 || held + n->batch > limit;
}

static void host_note_merchant(host_t *h, const char *merchant_id)
{
    for (int i = 0; i < h->nmerchants; i++)
        if (strcmp(h->merchants[i], merchant_id) == 0)
            return;
    if (h->nmerchants < HOST_MERCHANTS)
        snprintf(h->merchants[h->nmerchants++], sizeof h->merchants[0], "%s", merchant_id);
}

/* Forgets idle hosts, so that the table stays as small as the set of hosts
 * recently notified. */
static void hosts_prune(pc_notifier_t *n, uint64_t now)
{
    for (int b = 0; b < HOST_BUCKETS; b++) {
        host_t **pp = &n->hosts[b];
        while (*pp) {
            host_t *h = *pp;
            if (!h->queued && !h->inflight && now - h->last_used_ms > HOST_IDLE_MS) {
                *pp = h->next;
                free(h->key);
                free(h);
            } else {
                pp = &h->next;
            }
        }
    }
}

/* ---- Outcomes ----------------------------------------------------------------- */

static void schedule_flush(pc_notifier_t *n);

/* Queues one outcome for the batched record statement. inc is 1 for an
 * attempt, 0 for a row handed back unsent. */
static void push_outcome(pc_notifier_t *n, const delivery_t *d, const char *status, int inc,
                         int64_t delay_ms, int http_status, const char *error, uint64_t elapsed_ms)
{
    json_t *o = json_pack("{s:s,s:s,s:s,s:i,s:I,s:o,s:s?,s:I}", "event_id", d->event_id, "token",
                          d->token, "status", status, "inc", inc, "delay_ms", (json_int_t)delay_ms,
                          "http_status", http_status ? json_integer(http_status) : json_null(),
                          "error", error, "elapsed_ms", (json_int_t)elapsed_ms);
    if (!o || json_array_append_new(n->pending, o) != 0) {
        /* The row keeps its claim until the lease ends, then comes back. */
        pc_metrics_add("pc_notify_record_errors_total", "", 1);
        return;
    }
    schedule_flush(n);
}

static void delivery_free(delivery_t *d)
{
    free(d->notify_url);
    free(d->payload);
    free(d);
}

/* The delivery's outcome is queued: drop it and let its host and the node
 * take more work. */
static void delivery_end(delivery_t *d)
{
    pc_notifier_t *n = d->n;
    host_t *h = d->host;
    if (d->state == D_SENDING && h)
        h->inflight--;
    if (h) {
        h->last_used_ms = uv_now(n->loop);
        if (!h->queued && !h->inflight)
            h->nmerchants = 0;
    }
    delivery_free(d);
    n->held--;
    pc_metrics_set("pc_notify_inflight", "", n->held);
    if (h && !n->stopping)
        host_pump(n, h);
    if (n->starved && !n->stopping && n->held <= n->max_inflight / 2) {
        n->starved = 0;
        uv_timer_start(&n->poll_timer, poll_cb, 0, 0);
    }
    /* A backlog for one busy host is claimed as the host drains, not on the
     * poll timer, so that it flows at the host's speed. */
    if (n->wait_drain && h && !n->stopping && !host_busy(n, h)) {
        n->wait_drain = 0;
        if (!n->claiming)
            uv_timer_start(&n->poll_timer, poll_cb, 0, 0);
    }
    maybe_finish(n);
}

/* Hands a row back unsent: it becomes due again shortly, for any node. */
/* Hands the event back untouched (no attempt counted), due again in
 * delay_ms. */
static void delivery_release_in(delivery_t *d, int64_t delay_ms)
{
    push_outcome(d->n, d, "PENDING", 0, delay_ms, 0, NULL, 0);
    pc_metrics_add("pc_notify_released_total", "", 1);
    delivery_end(d);
}

static void delivery_release(delivery_t *d)
{
    delivery_release_in(d,
                        d->host && d->host->unhealthy ? d->n->dead_release_ms : RELEASE_DELAY_MS);
}

/* Records one attempt and schedules what follows it. */
static void delivery_attempted(delivery_t *d, int delivered, const char *result, int http_status,
                               const char *error)
{
    pc_notifier_t *n = d->n;
    uint64_t elapsed = d->state == D_SENDING ? uv_now(n->loop) - d->start_ms : 0;
    int attempt = d->attempts + 1;
    char labels[64];
    snprintf(labels, sizeof labels, "result=\"%s\"", result);
    pc_metrics_add("pc_notify_attempts_total", labels, 1);
    if (d->state == D_SENDING)
        pc_metrics_observe("pc_notify_delivery_seconds", "", (double)elapsed / 1000.0);
    if (delivered) {
        push_outcome(n, d, "DELIVERED", 1, 0, http_status, NULL, elapsed);
    } else if (attempt > n->nschedule) {
        push_outcome(n, d, "FAILED", 1, 0, http_status, error, elapsed);
        pc_metrics_add("pc_notify_failed_total", "", 1);
        pc_log_warn("notify.failed", "event %s for merchant %s failed after %d attempts: %s",
                    d->event_id, d->merchant_id, attempt, error ? error : "");
    } else {
        push_outcome(n, d, "PENDING", 1, n->schedule[attempt - 1], http_status, error, elapsed);
    }
    delivery_end(d);
}

/* ---- Recording ---------------------------------------------------------------- */

/* Applies a batch of outcomes where the claim token still matches (a row whose
 * lease ran out and that another node claimed is that node's now), and logs
 * each attempt. */
static const char RECORD_SQL[] =
    "WITH v AS (SELECT * FROM jsonb_to_recordset($1::jsonb) AS v(event_id text, token text, "
    "status text, inc int, delay_ms bigint, http_status int, error text, elapsed_ms bigint)), "
    "u AS (UPDATE outbox o SET status = v.status, attempts = o.attempts + v.inc, "
    "next_attempt_at = CASE WHEN v.status = 'PENDING' "
    "THEN now() + v.delay_ms * interval '1 millisecond' ELSE o.next_attempt_at END, "
    "claim_token = NULL, "
    "last_attempt_at = CASE WHEN v.inc > 0 THEN now() ELSE o.last_attempt_at END, "
    "last_status = CASE WHEN v.inc > 0 THEN v.http_status ELSE o.last_status END, "
    "last_error = CASE WHEN v.inc > 0 THEN v.error ELSE o.last_error END, "
    "delivered_at = CASE WHEN v.status = 'DELIVERED' THEN now() ELSE o.delivered_at END "
    "FROM v WHERE o.event_id = v.event_id AND o.claim_token = v.token "
    "RETURNING o.event_id, o.attempts, v.inc, v.http_status, v.error, v.elapsed_ms) "
    "INSERT INTO outbox_attempts (event_id, attempt, node, http_status, error, elapsed_ms) "
    "SELECT event_id, attempts, $2, http_status, error, LEAST(elapsed_ms, 2147483647) "
    "FROM u WHERE inc > 0";

static void record_cb(void *data, int status, pc_db_res_t *res)
{
    record_t *r = data;
    pc_notifier_t *n = r->n;
    n->recording--;
    if (status) {
        /* The rows keep their claims until the leases end; then they are sent
         * again (delivery is at-least-once). */
        pc_metrics_add("pc_notify_record_errors_total", "", (int64_t)r->count);
        pc_log_warn("notify.record_failed", "could not record %zu outcomes: %s", r->count,
                    pc_strerror(status));
    }
    (void)res;
    free(r);
    maybe_finish(n);
}

static void flush_now(pc_notifier_t *n)
{
    size_t count = json_array_size(n->pending);
    if (!count)
        return;
    char *text = json_dumps(n->pending, JSON_COMPACT);
    json_array_clear(n->pending);
    record_t *r = malloc(sizeof *r);
    if (!text || !r)
        goto fail;
    r->n = n;
    r->count = count;
    const char *p[] = {text, n->node_id};
    int rc = pc_db_query(n->db, RECORD_SQL, 2, p, record_cb, r);
    if (rc < 0) {
        pc_log_warn("notify.record_failed", "could not record %zu outcomes: %s", count,
                    pc_strerror(rc));
        goto fail;
    }
    n->recording++;
    free(text);
    return;
fail:
    pc_metrics_add("pc_notify_record_errors_total", "", (int64_t)count);
    free(r);
    free(text);
}

static void flush_cb(uv_timer_t *t)
{
    flush_now(t->data);
}

static void schedule_flush(pc_notifier_t *n)
{
    if (json_array_size(n->pending) >= FLUSH_MAX) {
        uv_timer_stop(&n->flush_timer);
        flush_now(n);
    } else if (!uv_is_active((uv_handle_t *)&n->flush_timer)) {
        uv_timer_start(&n->flush_timer, flush_cb, FLUSH_DELAY_MS, 0);
    }
}

/* ---- Sending ------------------------------------------------------------------ */

/* True when the row's lease still covers a whole request from now. */
static int lease_covers(const pc_notifier_t *n, const delivery_t *d)
{
    uint64_t used = uv_now(n->loop) - d->claim_sent_ms;
    return used + n->timeout_ms + LEASE_MARGIN_MS <= n->lease_ms;
}

/* Whether body, with surrounding white space ignored, is exactly "success". */
static int is_success_body(const char *body, size_t len)
{
    size_t a = 0, b = len;
    while (a < b && (body[a] == ' ' || body[a] == '\t' || body[a] == '\r' || body[a] == '\n'))
        a++;
    while (b > a && (body[b - 1] == ' ' || body[b - 1] == '\t' || body[b - 1] == '\r' ||
                     body[b - 1] == '\n'))
        b--;
    return b - a == 7 && memcmp(body + a, "success", 7) == 0;
}

/* Leaves only what an unhealthy host may hold, handing the rest back. */
static void host_trim(pc_notifier_t *n, host_t *h)
{
    while (h->q_head && h->queued + h->inflight > host_limit(n, h)) {
        delivery_t *d = h->q_head;
        h->q_head = d->next;
        if (!h->q_head)
            h->q_tail = NULL;
        h->queued--;
        d->state = D_NEW;
        delivery_release(d);
    }
}

static void http_done_cb(void *data, const pc_http_response_t *resp)
{
    delivery_t *d = data;
    pc_notifier_t *n = d->n;
    host_t *h = d->host;
    if (resp->error == PC_HTTP_ECANCELLED) {
        delivery_release(d);
        return;
    }
    char error[ERROR_TEXT_MAX + 1];
    if (resp->error == PC_HTTP_OK) {
        h->unhealthy = 0;
        if (resp->status == 200 && is_success_body(resp->body, resp->body_len)) {
            delivery_attempted(d, 1, "delivered", resp->status, NULL);
            return;
        }
        if (resp->status != 200) {
            snprintf(error, sizeof error, "HTTP %d", resp->status);
            delivery_attempted(d, 0, "bad_status", resp->status, error);
            return;
        }
        /* Show ops what the merchant answered, printable characters only. */
        char shown[41];
        size_t k = 0;
        for (size_t i = 0; i < resp->body_len && k < sizeof shown - 1; i++) {
            unsigned char c = (unsigned char)resp->body[i];
            shown[k++] = c >= 0x20 && c < 0x7f && c != '"' ? (char)c : '?';
        }
        shown[k] = 0;
        snprintf(error, sizeof error, "answer was not \"success\": \"%s\"%s", shown,
                 resp->body_len > k ? "…" : "");
        delivery_attempted(d, 0, "bad_body", resp->status, error);
        return;
    }
    const char *result = "error";
    if (resp->error == PC_HTTP_ETIMEOUT)
        result = "timeout";
    else if (resp->error == PC_HTTP_ECONNREFUSED || resp->error == PC_HTTP_ECONNECT ||
             resp->error == PC_HTTP_ERESOLVE)
        result = "connect_error";
    snprintf(error, sizeof error, "%s: %s", pc_http_strerror(resp->error), resp->error_message);
    int became_unhealthy = 0;
    if (strcmp(result, "error") != 0) {
        became_unhealthy = !h->unhealthy;
        h->unhealthy = 1;
    } else {
        h->unhealthy = 0;
    }
    delivery_attempted(d, 0, result, 0, error);
    if (became_unhealthy && !n->stopping) {
        pc_log_warn("notify.host_unhealthy", "%s: %s; holding at most %d of its events", h->key,
                    error, n->host_conns);
        host_trim(n, h);
    }
}

static void merchant_cb(void *data, int status, pc_merchant_t *m)
{
    delivery_t *d = data;
    pc_notifier_t *n = d->n;
    char *tosign = NULL, *sig = NULL;
    if (status == PC_ENOTFOUND) {
        delivery_attempted(d, 0, "error", 0, "unknown merchant");
        return;
    }
    if (status || n->stopping || !lease_covers(n, d)) {
        delivery_release(d);
        return;
    }
    char ts[24], nonce[33];
    snprintf(ts, sizeof ts, "%lld", (long long)time(NULL));
    if (pc_random_hex(nonce, sizeof nonce, 16) != 0)
        goto sign_failed;
    size_t len;
    tosign = pc_sign_notify_string(ts, nonce, d->payload, d->payload_len, &len);
    if (!tosign)
        goto sign_failed;
    if (m->sign_type == PC_SIGN_RSA2 && !n->key) {
        /* No platform key yet: being read or generated, or the stored one
         * cannot be used (read again every KEY_BAD_RETRY_MS). The event
         * waits, its attempts untouched. Before, each try without a key
         * counted as an attempt, and every RSA2 merchant's events ended
         * FAILED without ever being sent. */
        free(tosign);
        if (!n->key_wait_since_ms)
            n->key_wait_since_ms = uv_now(n->loop);
        /* Soon while the key is on its way; with none coming, at the pace
         * the key is read again (not every second). */
        if (n->keygen || n->key_query)
            delivery_release(d);
        else
            delivery_release_in(d, KEY_BAD_RETRY_MS);
        return;
    }
    if (m->sign_type == PC_SIGN_RSA2)
        sig = pc_rsa_sha256_sign(n->key, tosign, len);
    else if (m->secret)
        sig = pc_hmac_sha256_sign(m->secret, strlen(m->secret), tosign, len);
    if (!sig)
        goto sign_failed;
    /* Room for the largest platform key's signature: an 8192-bit key's is
     * 1368 characters, which a 1 KiB header cut short (no merchant could
     * verify, and every RSA2 notification failed after its retries). */
    char h_ts[48], h_nonce[64], h_sig[sizeof "X-Signature: " + PC_SIG_B64_MAX];
    snprintf(h_ts, sizeof h_ts, "X-Timestamp: %s", ts);
    snprintf(h_nonce, sizeof h_nonce, "X-Nonce: %s", nonce);
    snprintf(h_sig, sizeof h_sig, "X-Signature: %s", sig);
    const char *headers[] = {"Content-Type: application/json", h_ts, h_nonce, h_sig};
    pc_http_request_t req = {
        .method = "POST",
        .url = d->notify_url,
        .headers = headers,
        .header_count = sizeof headers / sizeof headers[0],
        .body = d->payload,
        .body_len = d->payload_len,
        .timeout_ms = (uint32_t)n->timeout_ms,
    };
    d->start_ms = uv_now(n->loop);
    int rc = pc_http_client_request(n->http, &req, http_done_cb, d);
    free(tosign);
    free(sig);
    if (rc == PC_EINVAL)
        delivery_attempted(d, 0, "error", 0, "notify_url refused by the HTTP client");
    else if (rc)
        delivery_release(d);
    return;
sign_failed:
    free(tosign);
    free(sig);
    delivery_attempted(d, 0, "error", 0, "could not sign the notification");
}

static void host_pump(pc_notifier_t *n, host_t *h)
{
    /* A send that fails at once ends its delivery, which pumps again; the
     * loop below picks that slot up instead. */
    if (h->pumping)
        return;
    h->pumping = 1;
    while (h->q_head && h->inflight < n->host_conns && !n->stopping) {
        delivery_t *d = h->q_head;
        h->q_head = d->next;
        if (!h->q_head)
            h->q_tail = NULL;
        d->next = NULL;
        h->queued--;
        if (!lease_covers(n, d)) {
            d->state = D_NEW;
            delivery_release(d);
            continue;
        }
        d->state = D_SENDING;
        d->start_ms = uv_now(n->loop);
        h->inflight++;
        if (pc_merchants_get(n->merchants, d->merchant_id, merchant_cb, d) < 0)
            delivery_release(d);
    }
    h->pumping = 0;
}

/* ---- Claiming ----------------------------------------------------------------- */

/* An event goes only once every earlier event of its object (subject:
 * the merchant's trade, refund, payout or chargeback) is delivered or given
 * up: the merchant sees one object's states in the order they happened
 * (migration 0060). */
static const char CLAIM_SQL[] =
    "UPDATE outbox SET next_attempt_at = now() + $2::bigint * interval '1 millisecond', "
    "claim_token = $1 WHERE event_id IN (SELECT o.event_id FROM outbox o WHERE o.status = "
    "'PENDING' AND o.next_attempt_at <= now() AND o.merchant_id <> ALL ($4::text[]) AND NOT "
    "EXISTS (SELECT 1 FROM outbox e WHERE e.subject = o.subject AND e.status = 'PENDING' AND "
    "e.seq < o.seq) ORDER BY o.next_attempt_at LIMIT $3 FOR UPDATE OF o SKIP LOCKED) "
    "RETURNING event_id, merchant_id, notify_url, payload, attempts";

static delivery_t *delivery_from_row(pc_notifier_t *n, const claim_t *c, pc_db_res_t *res, int row)
{
    delivery_t *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->n = n;
    snprintf(d->event_id, sizeof d->event_id, "%s", pc_db_val(res, row, "event_id"));
    snprintf(d->merchant_id, sizeof d->merchant_id, "%s", pc_db_val(res, row, "merchant_id"));
    snprintf(d->token, sizeof d->token, "%s", c->token);
    d->notify_url = strdup(pc_db_val(res, row, "notify_url"));
    d->payload = strdup(pc_db_val(res, row, "payload"));
    d->payload_len = d->payload ? strlen(d->payload) : 0;
    d->attempts = (int)pc_db_val_i64(res, row, "attempts");
    d->claim_sent_ms = c->sent_ms;
    if (!d->notify_url || !d->payload) {
        delivery_free(d);
        return NULL;
    }
    return d;
}

static void claim_cb(void *data, int status, pc_db_res_t *res)
{
    claim_t *c = data;
    pc_notifier_t *n = c->n;
    n->claiming = 0;
    if (status) {
        /* Every poll while the database is away: once a minute is enough. */
        if (pc_log_due(&n->claim_failed_logged_s, 60))
            pc_log_warn("notify.claim_failed", "claiming due notifications failed: %s",
                        pc_strerror(status));
        if (!n->stopping)
            uv_timer_start(&n->poll_timer, poll_cb, n->poll_ms, 0);
        free(c);
        maybe_finish(n);
        return;
    }
    int rows = pc_db_rows(res);
    int busy = 0;
    for (int i = 0; i < rows; i++) {
        delivery_t *d = delivery_from_row(n, c, res, i);
        if (!d)
            continue; /* out of memory: the lease brings the row back */
        n->held++;
        host_t *h = n->stopping ? NULL : host_get(n, d->notify_url);
        d->host = h;
        if (!h || h->queued + h->inflight >= host_limit(n, h)) {
            busy |= h != NULL;
            delivery_release(d);
            continue;
        }
        host_note_merchant(h, d->merchant_id);
        d->state = D_QUEUED;
        if (h->q_tail)
            h->q_tail->next = d;
        else
            h->q_head = d;
        h->q_tail = d;
        h->queued++;
        host_pump(n, h);
        busy |= host_busy(n, h);
    }
    pc_metrics_set("pc_notify_inflight", "", n->held);
    /* A full batch means more rows are probably due: claim again at once
     * (busy hosts' merchants are left out of it). A busy host's backlog is
     * claimed again as the host drains, see delivery_end. */
    int again = rows == c->want;
    if (busy)
        n->wait_drain = 1;
    free(c);
    if (!n->stopping)
        uv_timer_start(&n->poll_timer, poll_cb, again ? 0 : n->poll_ms, 0);
    maybe_finish(n);
}

static void metrics_cb(void *data, int status, pc_db_res_t *res)
{
    pc_notifier_t *n = data;
    n->metrics_query = 0;
    if (status == 0 && pc_db_rows(res) == 1) {
        pc_metrics_set("pc_outbox_backlog", "", pc_db_val_i64(res, 0, "backlog"));
        pc_metrics_set("pc_outbox_oldest_age_seconds", "", pc_db_val_i64(res, 0, "oldest"));
    } else {
        /* Unknown, not the last good figures (the database is unreachable). */
        pc_metrics_set("pc_outbox_backlog", "", -1);
        pc_metrics_set("pc_outbox_oldest_age_seconds", "", -1);
    }
    maybe_finish(n);
}

static void refresh_metrics(pc_notifier_t *n)
{
    if (n->metrics_query)
        return;
    if (pc_db_query(n->db,
                    "SELECT count(*) AS backlog, COALESCE(floor(EXTRACT(EPOCH FROM now() - "
                    "min(created_at))), 0)::bigint AS oldest FROM outbox WHERE status = 'PENDING'",
                    0, NULL, metrics_cb, n) == 0)
        n->metrics_query = 1;
    else {
        pc_metrics_set("pc_outbox_backlog", "", -1);
        pc_metrics_set("pc_outbox_oldest_age_seconds", "", -1);
    }
}

/* The merchants of busy hosts as a PostgreSQL array literal ("{"m1","m2"}";
 * ids are [A-Za-z0-9_-], so quoting them needs no escapes, and quoted, "null"
 * stays a name), or NULL for none. At most MAX_EXCLUDED: rows of any others
 * that overflow a host are handed back. */
static char *busy_merchants(pc_notifier_t *n)
{
    size_t cap = 3 + (size_t)MAX_EXCLUDED * 75, len = 0;
    int count = 0;
    char *out = NULL;
    for (int b = 0; b < HOST_BUCKETS; b++)
        for (host_t *h = n->hosts[b]; h; h = h->next) {
            if (!host_busy(n, h))
                continue;
            for (int i = 0; i < h->nmerchants && count < MAX_EXCLUDED; i++, count++) {
                if (!out && !(out = malloc(cap)))
                    return NULL;
                len += (size_t)snprintf(out + len, cap - len, "%c\"%s\"", count ? ',' : '{',
                                        h->merchants[i]);
            }
        }
    if (out)
        snprintf(out + len, cap - len, "}");
    return out;
}

static void poll_cb(uv_timer_t *t)
{
    pc_notifier_t *n = t->data;
    if (n->stopping || n->claiming)
        return;
    uint64_t now = uv_now(n->loop);
    if (now >= n->next_metrics_ms) {
        n->next_metrics_ms = now + METRICS_EVERY_MS;
        refresh_metrics(n);
    }
    if (now >= n->next_prune_ms) {
        n->next_prune_ms = now + HOST_IDLE_MS / 5;
        hosts_prune(n, now);
    }
    if (n->key_retry_at && now >= n->key_retry_at) {
        n->key_retry_at = 0;
        load_stored_key(n);
    }
    int room = n->max_inflight - n->held;
    if (room <= 0) {
        n->starved = 1;
        uv_timer_start(&n->poll_timer, poll_cb, n->poll_ms, 0);
        return;
    }
    claim_t *c = calloc(1, sizeof *c);
    char hex[17];
    if (!c || pc_random_hex(hex, sizeof hex, 8) != 0) {
        free(c);
        uv_timer_start(&n->poll_timer, poll_cb, n->poll_ms, 0);
        return;
    }
    c->n = n;
    c->want = room < n->batch ? room : n->batch;
    c->sent_ms = now;
    snprintf(c->token, sizeof c->token, "%s:%s", n->node_id, hex);
    char lease[24], want[16];
    snprintf(lease, sizeof lease, "%llu", (unsigned long long)n->lease_ms);
    snprintf(want, sizeof want, "%d", c->want);
    char *excluded = busy_merchants(n);
    const char *p[] = {c->token, lease, want, excluded ? excluded : "{}"};
    int rc = pc_db_query(n->db, CLAIM_SQL, 4, p, claim_cb, c);
    free(excluded);
    if (rc < 0) {
        free(c);
        uv_timer_start(&n->poll_timer, poll_cb, n->poll_ms, 0);
        return;
    }
    n->claiming = 1;
}

/* ---- Platform key ---------------------------------------------------------------- */

/* Takes key as the platform key and derives the public PEM. Frees key on
 * failure. */
static int set_platform_key(pc_notifier_t *n, pc_rsa_key_t *key, const char *origin)
{
    n->key_pem = pc_rsa_key_public_pem(key);
    if (!n->key_pem) {
        pc_rsa_key_free(key);
        return PC_ENOMEM;
    }
    n->key = key;
    n->key_wait_since_ms = 0;
    char fp[PC_SHA256_HEX_LEN + 1] = "";
    pc_sha256_hex(n->key_pem, strlen(n->key_pem), fp);
    if (origin)
        pc_log_info("notify.platform_key", "platform key loaded from %s (public key sha256 %.16s)",
                    origin, fp);
    else
        pc_log_warn("notify.stored_platform_key",
                    "notify.platform_key_file is not set: signing with the platform key stored "
                    "in PostgreSQL (platform_keys; public key sha256 %.16s), one for every node "
                    "and restart; a key file kept out of the database is the production choice",
                    fp);
    return 0;
}

static int load_platform_key(pc_notifier_t *n, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "notify.platform_key_file: cannot open %s", path);
        return PC_EINVAL;
    }
    char *pem = malloc(PLATFORM_KEY_MAX_BYTES);
    pc_rsa_key_t *key = NULL;
    if (pem) {
        size_t len = fread(pem, 1, PLATFORM_KEY_MAX_BYTES, f);
        key = pc_rsa_key_new_private_pem(pem, len);
        OPENSSL_cleanse(pem, PLATFORM_KEY_MAX_BYTES);
        free(pem);
    }
    fclose(f);
    if (!key) {
        snprintf(err, errlen,
                 "notify.platform_key_file: %s is not an unencrypted PEM RSA private key of at "
                 "least %d bits",
                 path, PC_RSA_MIN_BITS);
        return PC_EINVAL;
    }
    if (set_platform_key(n, key, path) != 0) {
        snprintf(err, errlen, "notify: cannot export the platform public key");
        return PC_ENOMEM;
    }
    return 0;
}

/* Generating an RSA key costs from a few hundred milliseconds to seconds of
 * CPU, so the ephemeral key is made on libuv's thread pool: the process
 * serves at once, and RSA2 notifications are handed back until it exists. */
typedef struct pc_notifier_keygen {
    uv_work_t req;
    pc_notifier_t *n;
    char *pem; /* the private key's PEM, written by the worker thread */
} keygen_t;

/* Runs on a worker thread: touches nothing but its own keygen_t. */
static void keygen_work(uv_work_t *req)
{
    keygen_t *k = req->data;
    EVP_PKEY *pkey = EVP_RSA_gen(2048);
    BIO *bio = pkey ? BIO_new(BIO_s_mem()) : NULL;
    if (bio && PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL)) {
        char *data = NULL;
        long len = BIO_get_mem_data(bio, &data);
        if (len > 0 && data) {
            k->pem = strndup(data, (size_t)len);
            OPENSSL_cleanse(data, (size_t)len);
        }
    }
    if (!k->pem)
        ERR_clear_error();
    BIO_free(bio);
    EVP_PKEY_free(pkey);
}

static void free_pem(char *pem)
{
    if (pem) {
        OPENSSL_cleanse(pem, strlen(pem));
        free(pem);
    }
}

static void keygen_start(pc_notifier_t *n);

/* The shared key could not be read or stored now: poll_cb tries again in a
 * second. */
static void key_retry_later(pc_notifier_t *n)
{
    n->key_query = 0;
    n->key_retry_at = uv_now(n->loop) + 1000;
}

/* The stored key's row (none: this node generates one). */
static void stored_key_cb(void *data, int status, pc_db_res_t *res)
{
    pc_notifier_t *n = data;
    n->key_query = 0;
    if (!status && pc_db_rows(res) == 1 && !n->key && !n->stopping) {
        const char *pem = pc_db_get(res, 0, 0);
        pc_rsa_key_t *key = pc_rsa_key_new_private_pem(pem, strlen(pem));
        if (!key || set_platform_key(n, key, NULL) != 0) {
            pc_log_error("notify.platform_key",
                         "the platform key stored in PostgreSQL (platform_keys) cannot be "
                         "used: notifications to RSA2 merchants wait; read again in %d s",
                         KEY_BAD_RETRY_MS / 1000);
            n->key_retry_at = uv_now(n->loop) + KEY_BAD_RETRY_MS;
        }
    } else if (!status && pc_db_rows(res) == 0 && !n->stopping) {
        keygen_start(n);
    } else if (status && !n->stopping) {
        pc_log_warn("notify.platform_key",
                    "cannot read the stored platform key (%s): trying again in a second",
                    pc_strerror(status));
        key_retry_later(n);
    }
    maybe_finish(n);
}

/* Reads the key every node shares (PostgreSQL), or has one generated. */
static void load_stored_key(pc_notifier_t *n)
{
    if (n->key || n->keygen || n->key_query || n->stopping)
        return;
    n->key_query = 1;
    if (pc_db_query(n->db, "SELECT private_pem FROM platform_keys WHERE id = 1", 0, NULL,
                    stored_key_cb, n) < 0)
        key_retry_later(n);
}

static void key_stored_cb(void *data, int status, pc_db_res_t *res)
{
    pc_notifier_t *n = data;
    (void)res;
    /* Ours or another node's, stored first: read back what is there. */
    if (status) {
        key_retry_later(n);
    } else {
        n->key_query = 0;
        load_stored_key(n);
    }
    maybe_finish(n);
}

static void keygen_done(uv_work_t *req, int status)
{
    keygen_t *k = req->data;
    pc_notifier_t *n = k->n;
    n->keygen = NULL;
    if (status == 0 && k->pem && !n->stopping) {
        /* Stored if no node stored one first; then every node reads it. */
        const char *p[] = {k->pem};
        n->key_query = 1;
        if (pc_db_query(n->db,
                        "INSERT INTO platform_keys (id, private_pem) VALUES (1, $1) ON CONFLICT "
                        "(id) DO NOTHING",
                        1, p, key_stored_cb, n) < 0)
            key_retry_later(n);
    } else if (status != UV_ECANCELED && !n->stopping) {
        pc_log_error("notify.platform_key",
                     "could not generate a platform key: notifications to RSA2 merchants wait; "
                     "trying again in %d s (or configure notify.platform_key_file)",
                     KEY_BAD_RETRY_MS / 1000);
        n->key_retry_at = uv_now(n->loop) + KEY_BAD_RETRY_MS;
    }
    free_pem(k->pem);
    free(k);
    maybe_finish(n);
}

static void keygen_start(pc_notifier_t *n)
{
    keygen_t *k = calloc(1, sizeof *k);
    if (k) {
        k->req.data = k;
        k->n = n;
        if (uv_queue_work(n->loop, &k->req, keygen_work, keygen_done) == 0) {
            n->keygen = k;
            return;
        }
    }
    free(k);
    /* Tried again with the next event that needs it (KEY_BAD_RETRY_MS):
     * before, nothing did, and RSA2 events waited until a restart. */
    n->key_retry_at = uv_now(n->loop) + KEY_BAD_RETRY_MS;
    pc_log_error("notify.platform_key",
                 "could not start generating a platform key: trying "
                 "again in %d s",
                 KEY_BAD_RETRY_MS / 1000);
}

/* ---- Lifecycle ------------------------------------------------------------------ */

pc_notifier_t *pc_notifier_new(uv_loop_t *loop, const pc_config_t *cfg, pc_db_t *db,
                               pc_merchants_t *merchants, const char *node_id, char *err,
                               size_t errlen)
{
    pc_notifier_t *n = calloc(1, sizeof *n);
    if (!n) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    n->loop = loop;
    n->db = db;
    n->merchants = merchants;
    snprintf(n->node_id, sizeof n->node_id, "%s", node_id);
    n->nschedule = pc_config_ms_list(cfg, "notify.schedule_ms", n->schedule, MAX_SCHEDULE);
    if (n->nschedule < 0) {
        snprintf(err, errlen,
                 "notify.schedule_ms must be at most %d comma-separated non-negative "
                 "millisecond values",
                 MAX_SCHEDULE);
        goto fail;
    }
    n->poll_ms = (uint64_t)pc_config_int(cfg, "notify.poll_ms");
    n->batch = (int)pc_config_int(cfg, "notify.batch");
    n->timeout_ms = (uint64_t)pc_config_int(cfg, "notify.timeout_ms");
    n->lease_ms = (uint64_t)pc_config_int(cfg, "notify.lease_ms");
    n->host_conns = (int)pc_config_int(cfg, "notify.host_connections");
    n->max_inflight = (int)pc_config_int(cfg, "notify.max_inflight");
    n->dead_release_ms =
        n->nschedule > 0 && n->schedule[0] > RELEASE_DELAY_MS ? n->schedule[0] : RELEASE_DELAY_MS;
    if (n->lease_ms < n->timeout_ms + LEASE_MARGIN_MS + 1000) {
        snprintf(err, errlen, "notify.lease_ms must exceed notify.timeout_ms by at least %d ms",
                 LEASE_MARGIN_MS + 1000);
        goto fail;
    }
    const char *key_file = pc_config_str(cfg, "notify.platform_key_file");
    if (key_file[0] && load_platform_key(n, key_file, err, errlen) != 0)
        goto fail;
    n->pending = json_array();
    /* Total connections at least as many as the deliveries in flight, so that
     * busy hosts never make another host's requests wait inside libcurl
     * (where the wait counts against the request's timeout: a healthy
     * merchant's notification timed out unsent behind dead hosts' connects
     * when notify.max_inflight, 2000 by default, was above 1024). */
    pc_http_client_opts_t ho = {
        .max_host_connections = (unsigned)n->host_conns,
        .max_total_connections = n->max_inflight > 1024 ? (unsigned)n->max_inflight : 1024,
        .max_response_bytes = 64 * 1024,
        .user_agent = "paycore-notifier",
        /* notify_url is the merchant's to choose: it must not reach our own
         * listeners, Redis or the internal network. */
        .public_only = !pc_config_bool(cfg, "notify.private_targets"),
    };
    n->http = n->pending ? pc_http_client_new(loop, &ho) : NULL;
    if (!n->http) {
        snprintf(err, errlen, "notify: cannot create the HTTP client");
        goto fail;
    }
    pc_metrics_describe("pc_outbox_backlog", PC_METRIC_GAUGE,
                        "Notifications waiting for delivery (PENDING outbox rows); -1 "
                        "while the database cannot be read");
    pc_metrics_describe("pc_outbox_oldest_age_seconds", PC_METRIC_GAUGE,
                        "Age of the oldest PENDING outbox row; -1 while the database cannot be "
                        "read");
    pc_metrics_describe("pc_notify_attempts_total", PC_METRIC_COUNTER,
                        "Notification attempts by result");
    pc_metrics_describe("pc_notify_inflight", PC_METRIC_GAUGE,
                        "Notifications claimed by this node and not yet recorded");
    pc_metrics_describe("pc_notify_released_total", PC_METRIC_COUNTER,
                        "Claimed notifications handed back unsent");
    pc_metrics_describe("pc_notify_failed_total", PC_METRIC_COUNTER,
                        "Notifications that used up the retry schedule");
    pc_metrics_describe("pc_notify_record_errors_total", PC_METRIC_COUNTER,
                        "Outcomes that could not be written (rows retried after their lease)");
    pc_metrics_describe("pc_notify_delivery_seconds", PC_METRIC_HISTOGRAM,
                        "Time from sending a notification to its outcome");
    return n;
fail:
    pc_notifier_free(n);
    return NULL;
}

void pc_notifier_start(pc_notifier_t *n)
{
    uv_timer_init(n->loop, &n->poll_timer);
    uv_timer_init(n->loop, &n->flush_timer);
    n->poll_timer.data = n->flush_timer.data = n;
    n->handles_open = 2;
    n->started = 1;
    if (!n->key)
        load_stored_key(n);
    uv_timer_start(&n->poll_timer, poll_cb, 0, 0);
    pc_log_info("notify.started",
                "notifier running: %d retries, poll %llu ms, batch %d, timeout %llu ms, lease "
                "%llu ms, %d connections per host",
                n->nschedule, (unsigned long long)n->poll_ms, n->batch,
                (unsigned long long)n->timeout_ms, (unsigned long long)n->lease_ms, n->host_conns);
}

static void handle_closed(uv_handle_t *h)
{
    pc_notifier_t *n = h->data;
    if (--n->handles_open == 0 && n->stop_cb)
        n->stop_cb(n->stop_data);
}

static void http_closed_cb(void *data)
{
    pc_notifier_t *n = data;
    n->http = NULL;
    if (!n->started) {
        if (n->stop_cb)
            n->stop_cb(n->stop_data);
        return;
    }
    uv_close((uv_handle_t *)&n->poll_timer, handle_closed);
    uv_close((uv_handle_t *)&n->flush_timer, handle_closed);
}

/* Once stopping and nothing is left in flight, writes the last outcomes and
 * closes everything. */
static void maybe_finish(pc_notifier_t *n)
{
    if (!n->stopping || n->closing)
        return;
    if (n->claiming || n->held > 0 || n->metrics_query || n->keygen || n->key_query)
        return;
    if (json_array_size(n->pending) > 0) {
        if (n->started)
            uv_timer_stop(&n->flush_timer);
        flush_now(n);
    }
    if (n->recording)
        return;
    n->closing = 1;
    pc_log_info("notify.stopped", "notifier stopped");
    pc_http_client_close(n->http, http_closed_cb, n);
}

void pc_notifier_stop(pc_notifier_t *n, void (*cb)(void *data), void *data)
{
    n->stopping = 1;
    n->stop_cb = cb;
    n->stop_data = data;
    /* A generation not yet started is dropped; a running one is waited for. */
    if (n->keygen)
        uv_cancel((uv_req_t *)&n->keygen->req);
    if (n->started)
        uv_timer_stop(&n->poll_timer);
    /* Rows not yet sent go back at once, for another node to take. */
    for (int b = 0; b < HOST_BUCKETS; b++)
        for (host_t *h = n->hosts[b]; h; h = h->next)
            while (h->q_head) {
                delivery_t *d = h->q_head;
                h->q_head = d->next;
                if (!h->q_head)
                    h->q_tail = NULL;
                h->queued--;
                d->state = D_NEW;
                delivery_release(d);
            }
    if (n->held > 0)
        pc_log_info("notify.stopping", "waiting for %d notifications in flight", n->held);
    maybe_finish(n);
}

void pc_notifier_free(pc_notifier_t *n)
{
    if (!n)
        return;
    for (int b = 0; b < HOST_BUCKETS; b++) {
        host_t *h = n->hosts[b];
        while (h) {
            host_t *next = h->next;
            while (h->q_head) {
                delivery_t *d = h->q_head;
                h->q_head = d->next;
                delivery_free(d);
            }
            free(h->key);
            free(h);
            h = next;
        }
    }
    json_decref(n->pending);
    pc_rsa_key_free(n->key);
    free(n->key_pem);
    free(n);
}

const char *pc_notifier_platform_key_pem(const pc_notifier_t *n)
{
    return n->key_pem;
}

int pc_notifier_held(const pc_notifier_t *n)
{
    return n->held;
}

long long pc_notifier_key_wait_s(const pc_notifier_t *n)
{
    if (!n || n->key || !n->key_wait_since_ms)
        return 0;
    return (long long)((uv_now(n->loop) - n->key_wait_since_ms) / 1000);
}
