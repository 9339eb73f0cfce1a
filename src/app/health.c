/* /healthz, /readyz and /metrics. */
#include "api/app.h"
#include "core/error.h"
#include "core/metrics.h"
#include "rules/rules.h"

#include <stdlib.h>
#include <string.h>

static void healthz(pc_http_req_t *req, void *data)
{
    (void)data;
    static const char body[] = "{\"status\":\"ok\"}";
    pc_http_respond(req, 200, "application/json", body, sizeof body - 1);
}

/* Readiness: one probe (a SELECT 1 and a PING) at a time per node, every
 * /readyz that arrives meanwhile answered with its result. The endpoint is
 * unauthenticated on the public port: one statement and one command per
 * request let anyone queue work for the pool and Redis as fast as they
 * could send, ahead of real traffic. */
typedef struct waiter {
    pc_http_req_t *req;
    struct waiter *next;
} waiter_t;

typedef struct {
    pc_app_t *app;
    int waiting;
    int pg_ok, kv_ok;
    waiter_t *reqs;
} probe_t;

static probe_t *g_probe; /* the one in flight, or NULL */

static void probe_finish(probe_t *r)
{
    if (--r->waiting > 0)
        return;
    g_probe = NULL;
    int rules_ok = pc_rules_ready(r->app->rules);
    /* api.md: PostgreSQL and Redis reachable, rules loaded. A node serves
     * without Redis (idempotency and nonces fall back to PostgreSQL), so ops
     * whose load balancer acts on this may say so: a Redis outage then does
     * not take every node out of rotation at once. */
    int ok = r->pg_ok && rules_ok &&
             (r->kv_ok || pc_config_bool(r->app->cfg, "health.ready_without_redis"));
    waiter_t *w = r->reqs;
    while (w) {
        /* Answering may free the request and w with it. */
        pc_http_req_t *req = w->req;
        w = w->next;
        json_t *body = json_pack("{s:s,s:s,s:s,s:s}", "status", ok ? "ready" : "unavailable",
                                 "postgres", r->pg_ok ? "ok" : "down", "redis",
                                 r->kv_ok ? "ok" : "down", "rules", rules_ok ? "ok" : "missing");
        pc_http_respond_json(req, ok ? 200 : 503, body);
    }
    free(r);
}

static void ready_pg_cb(void *data, int status, pc_db_res_t *res)
{
    probe_t *r = data;
    r->pg_ok = status == 0 && pc_db_rows(res) == 1;
    probe_finish(r);
}

static void ready_kv_cb(void *data, int status, const pc_kv_reply_t *reply)
{
    probe_t *r = data;
    r->kv_ok = status == 0 && pc_kv_reply_type(reply) == PC_KV_STATUS;
    probe_finish(r);
}

static void readyz(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    waiter_t *w = pc_http_req_alloc(req, sizeof *w);
    w->req = req;
    if (g_probe) {
        w->next = g_probe->reqs;
        g_probe->reqs = w;
        return;
    }
    probe_t *r = calloc(1, sizeof *r);
    if (!r) {
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "out of memory");
        return;
    }
    r->app = app;
    r->reqs = w;
    w->next = NULL;
    r->waiting = 3; /* one for each check, one for this function */
    g_probe = r;
    pc_metrics_add("pc_readiness_probes_total", "", 1);
    if (pc_db_query(app->db, "SELECT 1", 0, NULL, ready_pg_cb, r) < 0)
        r->waiting--;
    if (pc_kv_cmd(app->kv, ready_kv_cb, r, "PING", NULL) < 0)
        r->waiting--;
    probe_finish(r);
}

static void render_metrics(pc_http_req_t *req, pc_app_t *app, int with_private)
{
    pc_metrics_set("pc_db_pool_in_use", "", pc_db_busy_count(app->db));
    pc_metrics_set("pc_db_pool_ready", "", pc_db_ready_count(app->db));
    pc_metrics_set("pc_kv_up", "", pc_kv_ready(app->kv));
    size_t len;
    char *text = pc_metrics_render(&len, with_private);
    pc_http_respond(req, 200, "text/plain; version=0.0.4", text, len);
    free(text);
}

/* The API port is public: families for ops only (per-merchant business
 * figures such as chargeback rates) are shown on the admin port alone. */
static void metrics(pc_http_req_t *req, void *data)
{
    render_metrics(req, data, 0);
}

static void metrics_admin(pc_http_req_t *req, void *data)
{
    render_metrics(req, data, 1);
}

void pc_app_routes_health(pc_app_t *app)
{
    pc_metrics_describe("pc_kv_up", PC_METRIC_GAUGE, "Redis command connection up");
    pc_metrics_describe("pc_readiness_probes_total", PC_METRIC_COUNTER,
                        "readiness probes made (one serves every /readyz waiting on it)");
    pc_router_add(app->api, "GET", "/healthz", healthz, app);
    pc_router_add(app->api, "GET", "/readyz", readyz, app);
    /* The API port is shared by every node (SO_REUSEPORT): whichever node
     * the kernel picks answers there. A node's own admin port answers for
     * that node alone (a check per node, or a node just restarted). */
    pc_router_add(app->admin, "GET", "/healthz", healthz, app);
    pc_router_add(app->admin, "GET", "/readyz", readyz, app);
    /* On the API port as api.md says, unless metrics.on_admin moves it; on
     * each node's admin port always: scraped there, the figures are one
     * node's, where the shared API port answers from whichever node. */
    if (!pc_config_bool(app->cfg, "metrics.on_admin"))
        pc_router_add(app->api, "GET", "/metrics", metrics, app);
    pc_router_add(app->admin, "GET", "/metrics", metrics_admin, app);
}
