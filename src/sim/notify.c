/* Callbacks to paycore: POST {callback_base}/channel-callbacks/{channel_id}
 * with the transaction's current object, signed with the channel's secret,
 * retried with doubling delays until paycore answers 200. Each delivery owns
 * copies of everything it sends, so it outlives the transaction (which the
 * store may forget) and a reset (after which it is dropped). */
#include "auth/sign.h"
#include "core/log.h"
#include "sim/sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    pc_sim_t *sim;
    unsigned generation;
    char channel_id[PC_SIM_CHANNEL_LEN];
    char secret[PC_SIM_SECRET_MAX];
    char event_id[PC_SIM_REF_LEN];
    char *url;
    char *body;
    size_t len;
    uint32_t attempts;
} delivery_t;

static void delivery_free(delivery_t *d)
{
    d->sim->stats.callbacks_pending--;
    free(d->url);
    free(d->body);
    free(d);
}

static void send_attempt(delivery_t *d);

static void retry_due(pc_sim_task_t *task, bool cancelled)
{
    delivery_t *d = task->data;
    if (cancelled || d->generation != d->sim->generation) {
        delivery_free(d);
        return;
    }
    send_attempt(d);
}

static void schedule_retry(delivery_t *d)
{
    pc_sim_t *sim = d->sim;
    if (sim->stopping || d->generation != sim->generation) {
        delivery_free(d);
        return;
    }
    if (d->attempts >= sim->opts.callback_max_attempts) {
        pc_log_warn("sim.callback_abandoned", "callback %s given up after %u attempts", d->event_id,
                    d->attempts);
        sim->stats.callbacks_abandoned++;
        delivery_free(d);
        return;
    }
    /* Doubling from the base delay, capped at 30 times it. */
    uint64_t base = sim->opts.callback_retry_ms, delay = base;
    for (uint32_t i = 1; i < d->attempts && delay < 30 * base; i++)
        delay *= 2;
    if (delay > 30 * base)
        delay = 30 * base;
    pc_sim_task_t *task = pc_sim_task_start(sim, delay, retry_due);
    if (!task) {
        delivery_free(d);
        return;
    }
    task->data = d;
}

static void delivered_cb(void *data, const pc_http_response_t *resp)
{
    delivery_t *d = data;
    pc_sim_t *sim = d->sim;
    if (resp->error == PC_HTTP_OK && resp->status == 200) {
        sim->stats.callbacks_delivered++;
        pc_log_debug("sim.callback_delivered", "callback %s acknowledged after %u attempts",
                     d->event_id, d->attempts);
        delivery_free(d);
        return;
    }
    if (resp->error != PC_HTTP_ECANCELLED)
        pc_log_info("sim.callback_retry", "callback %s to %s: %s %d", d->event_id, d->url,
                    resp->error == PC_HTTP_OK ? "status" : pc_http_strerror(resp->error),
                    resp->status);
    schedule_retry(d);
}

static void send_attempt(delivery_t *d)
{
    pc_sim_t *sim = d->sim;
    char ts[24], nonce[33], hts[48], hnonce[64], hch[64], hev[64];
    snprintf(ts, sizeof ts, "%lld", (long long)pc_sim_real_s());
    if (pc_random_hex(nonce, sizeof nonce, 16) < 0) {
        schedule_retry(d);
        return;
    }
    /* Signed afresh each attempt so the timestamp stays inside paycore's window. */
    char *sig = pc_sim_sign_message(d->secret, ts, nonce, d->body, d->len);
    if (!sig) {
        schedule_retry(d);
        return;
    }
    char *hsig = malloc(strlen(sig) + 16);
    if (!hsig) {
        free(sig);
        schedule_retry(d);
        return;
    }
    snprintf(hsig, strlen(sig) + 16, "X-Signature: %s", sig);
    free(sig);
    snprintf(hts, sizeof hts, "X-Timestamp: %s", ts);
    snprintf(hnonce, sizeof hnonce, "X-Nonce: %s", nonce);
    snprintf(hch, sizeof hch, "X-Channel-Id: %s", d->channel_id);
    snprintf(hev, sizeof hev, "X-Event-Id: %s", d->event_id);
    const char *headers[] = {"Content-Type: application/json", hch, hev, hts, hnonce, hsig};
    pc_http_request_t req = {
        .method = "POST",
        .url = d->url,
        .headers = headers,
        .header_count = sizeof headers / sizeof headers[0],
        .body = d->body,
        .body_len = d->len,
        .timeout_ms = sim->opts.callback_timeout_ms,
    };
    d->attempts++;
    sim->stats.callback_attempts++;
    int rc = pc_http_client_request(sim->client, &req, delivered_cb, d);
    free(hsig);
    if (rc < 0) {
        pc_log_warn("sim.callback_retry", "callback %s to %s not sent: %d", d->event_id, d->url,
                    rc);
        schedule_retry(d);
    }
}

static void deliver(pc_sim_t *sim, const pc_sim_txn_t *t, const char *url, const char *event_id,
                    const char *body)
{
    if (sim->stats.callbacks_pending >= sim->opts.max_pending_callbacks) {
        sim->stats.callbacks_dropped++;
        pc_log_warn("sim.callback_dropped", "%zu callbacks pending already; %s dropped",
                    sim->stats.callbacks_pending, event_id);
        return;
    }
    delivery_t *d = calloc(1, sizeof *d);
    if (!d)
        goto oom;
    d->sim = sim;
    d->generation = sim->generation;
    snprintf(d->channel_id, sizeof d->channel_id, "%s", t->ch->id);
    snprintf(d->secret, sizeof d->secret, "%s", t->ch->secret);
    snprintf(d->event_id, sizeof d->event_id, "%s", event_id);
    d->url = strdup(url);
    d->body = strdup(body);
    if (!d->url || !d->body) {
        free(d->url);
        free(d->body);
        free(d);
        goto oom;
    }
    d->len = strlen(body);
    sim->stats.callbacks_pending++;
    sim->stats.callbacks_sent++;
    send_attempt(d);
    return;
oom:
    sim->stats.callbacks_dropped++;
    pc_log_error("sim.oom", "callback %s dropped", event_id);
}

void pc_sim_notify(pc_sim_t *sim, const pc_sim_txn_t *t, const char *type)
{
    if (sim->stopping)
        return;
    const char *base = t->callback_base ? t->callback_base : sim->callback_base;
    if (!base[0]) {
        sim->stats.callbacks_skipped++;
        pc_log_warn("sim.callback_skipped",
                    "no callback base for %s (give callback_base or --callback-base)", t->ref);
        return;
    }
    char event_id[PC_SIM_REF_LEN], created[PC_SIM_TIME_LEN];
    pc_sim_store_ref(sim->store, "evt", event_id);
    pc_sim_format_time(pc_sim_now_ms(sim), created);
    json_t *ev =
        json_pack("{s:s,s:s,s:s,s:s,s:o}", "event_id", event_id, "type", type, "channel_id",
                  t->ch->id, "created_at", created, "data", pc_sim_txn_json(sim, t));
    char *body = ev ? json_dumps(ev, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(ev);
    if (!body) {
        sim->stats.callbacks_dropped++;
        pc_log_error("sim.oom", "callback for %s dropped", t->ref);
        return;
    }
    pc_sim_channel_t *ch = t->ch;
    if (pc_sim_rng_chance(&ch->rng, ch->faults.lost_callback_bps)) {
        pc_sim_fake(sim, ch, "LOST_CALLBACK", t->kind, t->ref, t->no, event_id);
        free(body);
        return;
    }
    bool twice = pc_sim_rng_chance(&ch->rng, ch->faults.duplicate_callback_bps);
    size_t n = strlen(base) + strlen(ch->id) + 32;
    char *url = malloc(n);
    if (url) {
        snprintf(url, n, "%s/channel-callbacks/%s", base, ch->id);
        deliver(sim, t, url, event_id, body);
        if (twice) {
            pc_sim_fake(sim, ch, "DUPLICATE_CALLBACK", t->kind, t->ref, t->no, event_id);
            deliver(sim, t, url, event_id, body);
        }
        free(url);
    }
    free(body);
}
