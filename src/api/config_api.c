/* The server's side of hot-reloadable configuration: loads rules/ and
 * channels/ at start, reloads them on a file change (debounced watch), on
 * SIGHUP (pc_app_reload) and on POST /admin/reload; GET /admin/rules; the
 * channels' admin view and their ops switches, kept in PostgreSQL so every
 * node agrees and announced over Redis pub/sub (each node re-reads the table,
 * at once on a notice and every few seconds anyway). */
#include "api/app.h"
#include "store/migrate.h"
#include "channel/config.h"
#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"
#include "http/forwarded.h"
#include "kv/kv.h"
#include "rules/rules.h"
#include "rules/watch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define OVERRIDE_CHANNEL "channel-override"

static pc_watch_t *g_watch;
static uv_timer_t g_override_timer;

/* ---------- overrides ---------- */

/* Switches this node made: a read that started before one of them (its
 * snapshot taken before the switch committed) answers with the old value,
 * and applied after the switch it undid it here until the next read. */
static unsigned g_override_gen;

/* One read at a time. Under a slow database (a lock held on the table, say)
 * a read every second would each keep a pooled connection until the pool
 * had none left for requests. A notice, reload or switch during the read
 * asks for one more read after it. */
static int g_override_reading, g_override_again;
static unsigned g_override_read_gen; /* g_override_gen when the read began */

static void refresh_overrides(pc_app_t *app);

/* The rows of channel_overrides (channel_id, enabled), read by the pool or
 * by the start's own connection, made this node's switches. Channels
 * without a row have no override. */
typedef const char *(*cell_fn)(const void *res, int row, int col);

static void apply_switches(pc_app_t *app, const void *res, int nrows, cell_fn cell)
{
    const pc_channel_set_t *set = pc_channels_current(app->channels);
    for (size_t i = 0; set && i < pc_channel_set_count(set); i++) {
        const char *id = pc_channel_set_at(set, i)->id;
        int want = -1;
        for (int r = 0; r < nrows; r++)
            if (!strcmp(cell(res, r, 0), id))
                want = cell(res, r, 1)[0] == 't';
        if (pc_channels_override(app->channels, id) != want)
            pc_channels_set_override(app->channels, id, want);
    }
}

static const char *db_cell(const void *res, int row, int col)
{
    return pc_db_get((pc_db_res_t *)res, row, col);
}

static const char *json_cell(const void *rows, int row, int col)
{
    const char *v = json_string_value(json_array_get(json_array_get(rows, (size_t)row), col));
    return v ? v : "";
}

/* A start waits this long for a table another session holds locked. */
#define STARTUP_LOCK_TIMEOUT_MS 10000

/* At start, before anything is served: the switches ops set are read once
 * on a connection of the start's own (blocking, as the migrations are, and
 * before the loop runs). Read only later by the pool, a node just started
 * answered its first requests with the files' "enabled" — a channel ops had
 * switched off (double-charging, say) was offered and paid through. */
static int read_switches_at_start(pc_app_t *app, char *err, size_t errlen)
{
    char why[200];
    json_t *rows = pc_db_startup_exec(pc_config_str(app->cfg, "db.url"),
                                      "SELECT channel_id, enabled FROM channel_overrides", 0, NULL,
                                      STARTUP_LOCK_TIMEOUT_MS, why, sizeof why);
    if (!rows) {
        snprintf(err, errlen, "cannot read the channel switches: %s", why);
        return PC_EUNAVAIL;
    }
    apply_switches(app, rows, (int)json_array_size(rows), json_cell);
    json_decref(rows);
    return 0;
}

static void overrides_cb(void *data, int status, pc_db_res_t *res)
{
    pc_app_t *app = data;
    int stale = g_override_read_gen != g_override_gen;
    g_override_reading = 0;
    if (status || stale) {
        if (stale || g_override_again)
            refresh_overrides(app); /* read again, after the switch */
        return;
    }
    apply_switches(app, res, pc_db_rows(res), db_cell);
    if (g_override_again)
        refresh_overrides(app);
}

static void refresh_overrides(pc_app_t *app)
{
    if (g_override_reading) {
        g_override_again = 1;
        return;
    }
    g_override_again = 0;
    g_override_read_gen = g_override_gen;
    g_override_reading = 1; /* before: a failure may be answered at once */
    if (pc_db_query(app->db, "SELECT channel_id, enabled FROM channel_overrides", 0, NULL,
                    overrides_cb, app) < 0)
        g_override_reading = 0;
}

static void override_notice(void *data, const char *channel, const char *msg, size_t len)
{
    (void)channel;
    (void)msg;
    (void)len;
    refresh_overrides(data);
}

static void override_timer_cb(uv_timer_t *t)
{
    refresh_overrides(t->data);
}

/* ---------- volume caps: each node's reading ---------- */

static uv_timer_t g_volume_timer;
static int g_volume_reading;

static void volume_cb(void *data, int status, pc_db_res_t *res)
{
    pc_app_t *app = data;
    g_volume_reading = 0;
    for (int r = 0; !status && r < pc_db_rows(res); r++)
        pc_channels_note_volume(app->channels, pc_db_get(res, r, 0), pc_db_get(res, r, 1),
                                pc_db_get(res, r, 2), strtoll(pc_db_get(res, r, 3), NULL, 10));
}

/* About every second while some channel has a cap: what the cashier offers
 * and routes leaves out channels that are full (the take before a send is
 * the exact check). */
static void volume_timer_cb(uv_timer_t *t)
{
    pc_app_t *app = t->data;
    if (g_volume_reading || app->shutting_down || !pc_channels_capped(app->channels))
        return;
    if (pc_db_query(app->db,
                    "SELECT channel_id, currency, period, amount FROM channel_volume WHERE period "
                    "IN (to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD'), to_char(now() AT TIME "
                    "ZONE 'UTC', 'YYYY-MM'))",
                    0, NULL, volume_cb, app) == 0)
        g_volume_reading = 1;
}

/* ---------- reloads ---------- */

static void rules_reloaded(pc_rules_t *rules, int status, void *data)
{
    (void)rules;
    (void)data;
    if (status == PC_ECLOSED)
        return;
    pc_log(status ? PC_LOG_WARN : PC_LOG_INFO, "rules.reloaded", "%s",
           status ? "some rules were refused; the old versions keep serving (GET /admin/rules)"
                  : "all rules current");
}

static void channels_reloaded(pc_channels_t *chs, int status, void *data)
{
    (void)chs;
    if (status == PC_ECLOSED)
        return;
    pc_log(status ? PC_LOG_WARN : PC_LOG_INFO, "channels.reloaded", "%s",
           status ? "channel files refused; the old set keeps serving (GET /admin/channels)"
                  : "channel set current");
    /* (pc_channel_reloads_total is counted by the channel set itself.) */
    refresh_overrides(data);
}

void pc_app_reload(pc_app_t *app, int rules, int channels)
{
    if (rules)
        pc_rules_reload_async(app->rules, app->loop, rules_reloaded, app);
    if (channels)
        pc_channels_reload_async(app->channels, app->loop, channels_reloaded, app);
}

/* ---------- the configuration file ---------- */

typedef struct {
    uv_work_t work;
    pc_app_t *app;
    pc_config_t *fresh;
    char err[512];
    pc_app_config_cb done;
    void *data;
} config_reload_t;

/* What a start refuses that the file's own checks cannot see (they belong
 * to the listeners and the pool): a reload refuses it too, rather than
 * report "reloaded" and leave the next restart to fail. */
static int startable(const pc_config_t *cfg, char *err, size_t errlen)
{
    char why[256] = "out of memory";
    if (pc_db_url_check(pc_config_str(cfg, "db.url"), why, sizeof why) < 0) {
        snprintf(err, errlen, "db.url: %s", why);
        return PC_EINVAL;
    }
    if (pc_kv_url_check(pc_config_str(cfg, "redis.url")) < 0) {
        snprintf(err, errlen, "redis.url: not " PC_KV_URL_FORMS);
        return PC_EINVAL;
    }
    pc_proxy_list_t *l =
        pc_proxy_list_parse(pc_config_str(cfg, "http.trusted_proxies"), why, sizeof why);
    if (!l) {
        snprintf(err, errlen, "http.trusted_proxies: %s", why);
        return PC_EINVAL;
    }
    pc_proxy_list_free(l);
    return 0;
}

static void config_load_work(uv_work_t *w)
{
    config_reload_t *c = w->data;
    c->fresh = pc_config_load_again(c->app->cfg, c->err, sizeof c->err);
    if (c->fresh && startable(c->fresh, c->err, sizeof c->err) < 0) {
        pc_config_free(c->fresh);
        c->fresh = NULL;
    }
}

static void config_load_done(uv_work_t *w, int status)
{
    config_reload_t *c = w->data;
    json_t *outcome;
    if (status || !c->fresh) {
        pc_log_warn("config.reload_refused", "configuration not reloaded, the old one serves: %s",
                    status ? "cancelled" : c->err);
        pc_metrics_add("pc_config_reloads_total", "result=\"refused\"", 1);
        outcome = json_pack("{s:b,s:s}", "ok", 0, "error", status ? "cancelled" : c->err);
    } else {
        json_t *changed = json_array(), *restart = json_array();
        pc_config_take_runtime(c->app->cfg, c->fresh, changed, restart);
        pc_config_free(c->fresh);
        pc_log_level_t level;
        if (pc_log_parse_level(pc_config_str(c->app->cfg, "log.level"), &level) == 0)
            pc_log_set_level(level);
        char *ch = json_dumps(changed, JSON_COMPACT), *rs = json_dumps(restart, JSON_COMPACT);
        pc_log_info("config.reloaded", "configuration reloaded: changed %s; need a restart: %s",
                    ch ? ch : "?", rs ? rs : "?");
        free(ch);
        free(rs);
        pc_metrics_add("pc_config_reloads_total", "result=\"ok\"", 1);
        outcome =
            json_pack("{s:b,s:o,s:o}", "ok", 1, "changed", changed, "restart_needed", restart);
    }
    if (c->done)
        c->done(outcome, c->data);
    else
        json_decref(outcome);
    free(c);
}

void pc_app_reload_config(pc_app_t *app, pc_app_config_cb done, void *data)
{
    config_reload_t *c = calloc(1, sizeof *c);
    if (c) {
        c->app = app;
        c->done = done;
        c->data = data;
        c->work.data = c;
    }
    if (!c || uv_queue_work(app->loop, &c->work, config_load_work, config_load_done) != 0) {
        free(c);
        if (done)
            done(json_pack("{s:b,s:s}", "ok", 0, "error", "cannot start the reload"), data);
    }
}

static void watch_cb(pc_watch_t *w, unsigned changed, void *data)
{
    (void)w;
    /* dirs: rules, rules/tests, channels */
    pc_app_reload(data, (changed & 3) != 0, (changed & 4) != 0);
}

/* ---------- admin routes ---------- */

static void get_rules(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    pc_http_respond_json(req, 200, json_pack("{s:o}", "rules", pc_rules_status(app->rules)));
}

typedef struct {
    pc_http_req_t *req;
    pc_app_t *app;
    int waiting;
    json_t *config;
} reload_t;

static void reload_free(void *arg)
{
    reload_t *r = arg;
    json_decref(r->config);
}

static void reload_answer(reload_t *r)
{
    if (--r->waiting > 0)
        return;
    pc_http_respond_json(r->req, 200,
                         json_pack("{s:o,s:o,s:O}", "rules", pc_rules_status(r->app->rules),
                                   "channels", pc_channels_status(r->app->channels), "config",
                                   r->config ? r->config : json_null()));
}

static void admin_config_done(json_t *outcome, void *data)
{
    reload_t *r = data;
    r->config = outcome;
    reload_answer(r);
}

static void admin_rules_done(pc_rules_t *rules, int status, void *data)
{
    rules_reloaded(rules, status, NULL);
    reload_answer(data);
}

static void admin_channels_done(pc_channels_t *chs, int status, void *data)
{
    reload_t *r = data;
    channels_reloaded(chs, status, r->app);
    reload_answer(r);
}

static void post_reload(pc_http_req_t *req, void *data)
{
    reload_t *r = pc_http_req_alloc(req, sizeof *r);
    r->req = req;
    r->app = data;
    r->waiting = 4;
    pc_http_req_on_done(req, reload_free, r);
    pc_app_reload_config(r->app, admin_config_done, r);
    if (pc_rules_reload_async(r->app->rules, r->app->loop, admin_rules_done, r) < 0)
        r->waiting--;
    if (pc_channels_reload_async(r->app->channels, r->app->loop, admin_channels_done, r) < 0)
        r->waiting--;
    reload_answer(r);
}

static json_t *channels_view(pc_app_t *app)
{
    json_t *list = json_array();
    const pc_channel_set_t *set = pc_channels_current(app->channels);
    for (size_t i = 0; set && i < pc_channel_set_count(set); i++) {
        const pc_channel_t *ch = pc_channel_set_at(set, i);
        json_t *o = json_pack("{s:O}", "config", json_null());
        json_object_set_new(o, "config", pc_channel_to_json(ch));
        json_object_set_new(o, "channel_id", json_string(ch->id));
        int ov = pc_channels_override(app->channels, ch->id);
        json_object_set_new(o, "override", ov < 0 ? json_null() : json_boolean(ov));
        json_object_set_new(o, "enabled",
                            json_boolean(pc_channels_effective_enabled(app->channels, ch->id)));
        if (app->channel_health)
            json_object_set_new(o, "health", app->channel_health(app, ch->id));
        json_object_set_new(o, "volume",
                            pc_channels_volume_json(app->channels, ch, (int64_t)time(NULL)));
        json_array_append_new(list, o);
    }
    return json_pack("{s:o,s:o}", "channels", list, "status", pc_channels_status(app->channels));
}

static void get_channels(pc_http_req_t *req, void *data)
{
    pc_http_respond_json(req, 200, channels_view(data));
}

typedef struct {
    pc_http_req_t *req;
    pc_app_t *app;
    char id[96];
    int enabled;
} switch_t;

static void switch_cb(void *data, int status, pc_db_res_t *res)
{
    (void)res;
    switch_t *s = data;
    if (status) {
        pc_respond_db_error(s->req, status);
        return;
    }
    pc_channels_set_override(s->app->channels, s->id, s->enabled);
    g_override_gen++;
    char ch[128];
    pc_kv_key(s->app->kv, ch, sizeof ch, OVERRIDE_CHANNEL);
    pc_kv_cmd(s->app->kv, NULL, NULL, "PUBLISH", ch, s->id, NULL);
    pc_log_info("channel.switch", "channel %s %s by %s", s->id, s->enabled ? "enabled" : "disabled",
                pc_operator_of(s->req));
    json_t *o =
        json_pack("{s:s,s:b,s:b}", "channel_id", s->id, "enabled",
                  pc_channels_effective_enabled(s->app->channels, s->id), "override", s->enabled);
    pc_http_respond_json(s->req, 200, o);
}

static void switch_channel(pc_http_req_t *req, pc_app_t *app, int enabled)
{
    const char *id = pc_http_req_param(req, "id");
    if (!pc_channels_find(app->channels, id)) {
        pc_http_respond_error(req, PC_API_NOT_FOUND, NULL, "no such channel");
        return;
    }
    size_t len = 0;
    pc_http_req_body(req, &len);
    json_t *b = pc_http_req_json(req);
    int bad = 0;
    const char *reason = b ? pc_json_str(b, "reason", 500, 0, &bad) : NULL;
    /* A reason that cannot be kept is refused, not dropped: the switch would
     * stand with no word of why. */
    if ((len && !b) || bad) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "reason",
                              "a JSON body {\"reason\": 1-500 characters}, or none");
        return;
    }
    switch_t *s = pc_http_req_alloc(req, sizeof *s);
    s->req = req;
    s->app = app;
    s->enabled = enabled;
    snprintf(s->id, sizeof s->id, "%s", id);
    /* The switch in force and, in the same statement, its line in the
     * channel's history: who, when, why. */
    const char *p[] = {s->id, enabled ? "true" : "false", reason, pc_operator_of(req)};
    if (pc_db_query(app->db,
                    "WITH o AS (INSERT INTO channel_overrides (channel_id, enabled, reason, "
                    "operator) VALUES ($1, $2, $3, $4) ON CONFLICT (channel_id) DO UPDATE SET "
                    "enabled = EXCLUDED.enabled, reason = EXCLUDED.reason, operator = "
                    "EXCLUDED.operator, updated_at = now() RETURNING channel_id, enabled, reason, "
                    "operator) INSERT INTO channel_switches (channel_id, enabled, reason, "
                    "operator) SELECT channel_id, enabled, reason, operator FROM o",
                    4, p, switch_cb, s) < 0)
        pc_respond_db_error(req, PC_EUNAVAIL);
}

/* GET /admin/channels/{id}/switches?limit=: the channel's ops switches,
 * newest first (a channel no longer configured still has its history). */
static void list_switches(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    const char *id = pc_http_req_param(req, "id");
    int bad = 0;
    char lim[8];
    const char *limit = pc_limit_param(req, 50, lim, &bad);
    if (bad || !pc_id_valid(id, 32)) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, bad ? "limit" : "id",
                              bad ? "limit must be 1-1000" : "not a channel id");
        return;
    }
    const char *p[] = {id, limit};
    if (pc_db_query(app->db,
                    "SELECT json_build_object('channel_id', $1::text, 'switches', "
                    "coalesce(json_agg(json_build_object('enabled', enabled, 'reason', reason, "
                    "'operator', operator, 'at', to_char(at AT TIME ZONE 'UTC', "
                    "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')) ORDER BY id DESC), '[]'))::text FROM "
                    "(SELECT * FROM channel_switches WHERE channel_id = $1 ORDER BY id DESC LIMIT "
                    "$2::int) s",
                    2, p, pc_respond_json_row_cb, req) < 0)
        pc_respond_db_error(req, PC_EUNAVAIL);
}

static void enable_channel(pc_http_req_t *req, void *data)
{
    switch_channel(req, data, 1);
}

static void disable_channel(pc_http_req_t *req, void *data)
{
    switch_channel(req, data, 0);
}

/* ---------- start / stop ---------- */

int pc_app_config_start(pc_app_t *app, char *err, size_t errlen)
{
    const char *rdir = pc_config_str(app->cfg, "rules.dir");
    const char *cdir = pc_config_str(app->cfg, "channels.dir");
    pc_rules_opts_t ropts = {
        .max_example_us = pc_rules_example_limit(pc_config_int(app->cfg, "rules.max_example_us")),
        .plain_lists = !pc_config_bool(app->cfg, "rules.list_builder")};
    app->rules = pc_rules_new(rdir, &ropts);
    app->channels = pc_channels_new(cdir, pc_config_bool(app->cfg, "demo"));
    if (!app->rules || !app->channels) {
        snprintf(err, errlen, "out of memory");
        return PC_ENOMEM;
    }
    pc_metrics_describe("pc_config_reloads_total", PC_METRIC_COUNTER,
                        "configuration reloads (SIGHUP, POST /admin/reload) by result");
    /* At start a refused rule or channel file is fatal: there is no old
     * version to keep serving. */
    if (pc_rules_reload(app->rules) < 0 && !pc_rules_ready(app->rules)) {
        char *st = json_dumps(pc_rules_status(app->rules), JSON_COMPACT);
        snprintf(err, errlen, "rules in %s could not be loaded: %s", rdir, st ? st : "");
        free(st);
        return PC_EINVAL;
    }
    if (pc_channels_reload(app->channels) < 0) {
        json_t *s = pc_channels_status(app->channels);
        char *st = json_dumps(s, JSON_COMPACT);
        snprintf(err, errlen, "channels in %s could not be loaded: %s", cdir, st ? st : "");
        free(st);
        json_decref(s);
        return PC_EINVAL;
    }
    if (read_switches_at_start(app, err, errlen) < 0)
        return PC_EUNAVAIL;
    pc_kv_subscribe(app->kv, OVERRIDE_CHANNEL, override_notice, app);
    uv_timer_init(app->loop, &g_override_timer);
    g_override_timer.data = app;
    /* Every second: with Redis down there is no notice, and a switch must
     * reach every node within a second all the same. */
    uv_timer_start(&g_override_timer, override_timer_cb, 50, 1000);
    uv_timer_init(app->loop, &g_volume_timer);
    g_volume_timer.data = app;
    uv_timer_start(&g_volume_timer, volume_timer_cb, 100, 1000);
    if (pc_config_bool(app->cfg, "rules.watch")) {
        char tests[1024];
        snprintf(tests, sizeof tests, "%s/tests", rdir);
        const char *dirs[] = {rdir, tests, cdir};
        if (pc_watch_start(app->loop, dirs, 3, 50, watch_cb, app, &g_watch) < 0)
            pc_log_warn("rules.watch",
                        "cannot watch %s, %s, %s: reload by SIGHUP or "
                        "POST /admin/reload",
                        rdir, tests, cdir);
    }
    pc_router_add(app->admin, "GET", "/admin/rules", get_rules, app);
    pc_router_add(app->admin, "POST", "/admin/reload", post_reload, app);
    pc_router_add(app->admin, "GET", "/admin/channels", get_channels, app);
    pc_router_add(app->admin, "POST", "/admin/channels/{id}/enable", enable_channel, app);
    pc_router_add(app->admin, "POST", "/admin/channels/{id}/disable", disable_channel, app);
    pc_router_add(app->admin, "GET", "/admin/channels/{id}/switches", list_switches, app);
    return 0;
}

void pc_app_config_stop(pc_app_t *app)
{
    if (g_watch)
        pc_watch_close(g_watch);
    g_watch = NULL;
    uv_close((uv_handle_t *)&g_override_timer, NULL);
    uv_close((uv_handle_t *)&g_volume_timer, NULL);
    (void)app;
}

void pc_app_config_free(pc_app_t *app)
{
    pc_rules_free(app->rules);
    pc_channels_free(app->channels);
}
