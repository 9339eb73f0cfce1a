/* The simulator object: start and graceful stop, reset, the business clock,
 * tasks (timers that outlive a request) and signed answers. */
#include "sim/sim.h"
#include "auth/sign.h"
#include "core/error.h"
#include "core/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t pc_sim_real_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec;
}

int64_t pc_sim_now_ms(const pc_sim_t *sim)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + sim->clock_offset_ms;
}

/* ---- Tasks ------------------------------------------------------------------ */

static void task_closed(uv_handle_t *h)
{
    free(h->data);
}

static void task_unlink(pc_sim_task_t *t)
{
    pc_sim_t *sim = t->sim;
    if (t->prev)
        t->prev->next = t->next;
    else
        sim->tasks = t->next;
    if (t->next)
        t->next->prev = t->prev;
    sim->ntasks--;
    if (t->counted_held)
        sim->stats.held--;
}

static void task_fire(uv_timer_t *h)
{
    pc_sim_task_t *t = h->data;
    task_unlink(t);
    t->cb(t, false);
    uv_close((uv_handle_t *)&t->timer, task_closed);
}

pc_sim_task_t *pc_sim_task_start(pc_sim_t *sim, uint64_t delay_ms, pc_sim_task_cb cb)
{
    if (sim->stopping)
        return NULL;
    pc_sim_task_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->sim = sim;
    t->cb = cb;
    uv_timer_init(sim->loop, &t->timer);
    t->timer.data = t;
    t->next = sim->tasks;
    if (sim->tasks)
        sim->tasks->prev = t;
    sim->tasks = t;
    sim->ntasks++;
    uv_timer_start(&t->timer, task_fire, delay_ms, 0);
    return t;
}

void pc_sim_task_cancel(pc_sim_task_t *t)
{
    task_unlink(t);
    uv_timer_stop(&t->timer);
    t->cb(t, true);
    uv_close((uv_handle_t *)&t->timer, task_closed);
}

void pc_sim_txn_cancel_timer(pc_sim_txn_t *t)
{
    pc_sim_task_t *task = t->timer;
    t->timer = NULL;
    if (task)
        pc_sim_task_cancel(task);
}

static void txn_evicted(void *data, pc_sim_txn_t *t)
{
    (void)data;
    pc_sim_txn_cancel_timer(t);
}

/* Ends every task now, each told it was cancelled. */
static void tasks_cancel_all(pc_sim_t *sim)
{
    while (sim->tasks)
        pc_sim_task_cancel(sim->tasks);
}

/* ---- Answers ---------------------------------------------------------------- */

void pc_sim_reply(pc_http_req_t *req, pc_sim_channel_t *ch, int status, const char *content_type,
                  const char *body, size_t len)
{
    if (ch) {
        char ts[24];
        snprintf(ts, sizeof ts, "%lld", (long long)pc_sim_real_s());
        const char *nonce = pc_http_req_header(req, "X-Nonce");
        if (!nonce || !pc_nonce_is_valid(nonce, strlen(nonce)))
            nonce = "";
        char *sig = pc_sim_sign_message(ch->secret, ts, nonce, body, len);
        pc_http_add_header(req, "X-Timestamp", ts);
        pc_http_add_header(req, "X-Nonce", nonce);
        if (sig)
            pc_http_add_header(req, "X-Signature", sig);
        free(sig);
    }
    pc_http_respond(req, status, content_type, body, len);
}

void pc_sim_reply_json(pc_http_req_t *req, pc_sim_channel_t *ch, int status, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(body);
    if (!text) {
        static const char oom[] =
            "{\"error\":{\"code\":\"UNAVAILABLE\",\"message\":\"out of memory\"}}";
        pc_sim_reply(req, ch, 503, "application/json", oom, sizeof oom - 1);
        return;
    }
    pc_sim_reply(req, ch, status, "application/json", text, strlen(text));
    free(text);
}

void pc_sim_reply_error(pc_http_req_t *req, pc_sim_channel_t *ch, pc_sim_err_t err,
                        const char *field, const char *message)
{
    json_t *e = json_pack("{s:s,s:s}", "code", pc_sim_err_code(err), "message",
                          message ? message : pc_sim_err_code(err));
    if (e && field)
        json_object_set_new(e, "field", json_string(field));
    pc_sim_reply_json(req, ch, pc_sim_err_status(err), e ? json_pack("{s:o}", "error", e) : NULL);
}

/* ---- Lifecycle ---------------------------------------------------------------- */

static void copy_base(char *out, size_t size, const char *in)
{
    snprintf(out, size, "%s", in ? in : "");
    size_t n = strlen(out);
    while (n > 0 && out[n - 1] == '/')
        out[--n] = 0;
}

pc_sim_t *pc_sim_start(uv_loop_t *loop, const pc_sim_opts_t *opts)
{
    pc_sim_t *sim = calloc(1, sizeof *sim);
    if (!sim)
        return NULL;
    sim->loop = loop;
    sim->opts = *opts;
    snprintf(sim->host, sizeof sim->host, "%s", opts->host ? opts->host : "127.0.0.1");
    sim->opts.host = sim->host;
    const char *cb = opts->callback_base && opts->callback_base[0] ? opts->callback_base
                                                                   : getenv("PAYSIM_CALLBACK_BASE");
    copy_base(sim->callback_base, sizeof sim->callback_base, cb);
    sim->opts.callback_base = sim->callback_base;
    if (!sim->opts.callback_retry_ms)
        sim->opts.callback_retry_ms = 1000;
    if (!sim->opts.callback_max_attempts)
        sim->opts.callback_max_attempts = 1000;
    if (!sim->opts.callback_timeout_ms)
        sim->opts.callback_timeout_ms = 5000;
    if (!sim->opts.max_pending_callbacks)
        sim->opts.max_pending_callbacks = 100000;
    sim->limits.max_txns = opts->max_txns;
    sim->limits.seed = opts->seed;
    sim->limits.on_evict = txn_evicted;
    sim->limits.on_evict_data = sim;

    sim->store = pc_sim_store_new(&sim->limits);
    sim->router = pc_router_new();
    if (!sim->store || !sim->router || pc_sim_routes_channel(sim) < 0 ||
        pc_sim_routes_control(sim) < 0) {
        pc_log_error("sim.start", "out of memory");
        goto fail;
    }
    pc_http_server_opts_t so = {
        .host = sim->host,
        .port = opts->port,
        .max_connections = 4096,
        .max_header_bytes = 16 * 1024,
        .max_body_bytes = 64 * 1024,
        .idle_timeout_ms = 60000,
        .request_timeout_ms = 10000,
        .access_log = opts->access_log,
        .name = "sim",
    };
    sim->server = pc_http_server_start(loop, &so, sim->router);
    if (!sim->server)
        goto fail;
    pc_http_client_opts_t co = {.max_host_connections = 16, .user_agent = "paysim"};
    sim->client = pc_http_client_new(loop, &co);
    if (!sim->client) {
        pc_log_error("sim.start", "cannot start the HTTP client");
        /* The server is running: stop it the graceful way and leak nothing. */
        pc_http_server_stop(sim->server, NULL, NULL);
        sim->server = NULL;
        goto fail;
    }
    if (opts->public_base && opts->public_base[0]) {
        copy_base(sim->public_base, sizeof sim->public_base, opts->public_base);
    } else {
        const char *h = strcmp(sim->host, "0.0.0.0") == 0 ? "127.0.0.1" : sim->host;
        snprintf(sim->public_base, sizeof sim->public_base,
                 strchr(h, ':') ? "http://[%s]:%d" : "http://%s:%d", h,
                 pc_http_server_port(sim->server));
    }
    return sim;
fail:
    pc_sim_store_free(sim->store);
    pc_router_free(sim->router);
    free(sim);
    return NULL;
}

int pc_sim_port(const pc_sim_t *sim)
{
    return pc_http_server_port(sim->server);
}

static void part_closed(void *data)
{
    pc_sim_t *sim = data;
    if (--sim->closing_parts > 0)
        return;
    void (*cb)(void *) = sim->stopped_cb;
    void *cb_data = sim->stopped_data;
    pc_sim_store_free(sim->store);
    pc_router_free(sim->router);
    free(sim);
    if (cb)
        cb(cb_data);
}

void pc_sim_stop(pc_sim_t *sim, void (*cb)(void *data), void *data)
{
    sim->stopping = true;
    sim->stopped_cb = cb;
    sim->stopped_data = data;
    size_t pending = sim->stats.callbacks_pending;
    tasks_cancel_all(sim);
    if (pending)
        pc_log_warn("sim.stopping", "%zu callbacks not yet acknowledged are dropped", pending);
    sim->closing_parts = 2;
    pc_http_client_close(sim->client, part_closed, sim);
    pc_http_server_stop(sim->server, part_closed, sim);
}

void pc_sim_reset(pc_sim_t *sim, uint64_t seed)
{
    /* Held answers go out now and waiting callbacks are dropped; callbacks in
     * flight are dropped when they come back (older generation). */
    tasks_cancel_all(sim);
    sim->generation++;
    sim->limits.seed = seed;
    pc_sim_store_t *fresh = pc_sim_store_new(&sim->limits);
    if (!fresh) {
        pc_log_error("sim.reset", "out of memory; state kept");
        return;
    }
    pc_sim_store_free(sim->store);
    sim->store = fresh;
    sim->clock_offset_ms = 0;
    size_t pending = sim->stats.callbacks_pending;
    memset(&sim->stats, 0, sizeof sim->stats);
    sim->stats.callbacks_pending = pending;
    pc_log_info("sim.reset", "state cleared, seed %llu", (unsigned long long)seed);
}
