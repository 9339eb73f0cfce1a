/* paycore: the server process. Loads configuration, migrates the schema,
 * connects to PostgreSQL and Redis, serves the merchant and admin APIs, and
 * shuts down gracefully on SIGTERM/SIGINT. */
#include "api/app.h"
#include "cardbin/cardbin.h"
#include "channel/client.h"
#include "engine/engine.h"
#include "monitor/alerts.h"
#include "monitor/ledger_daily.h"
#include "refund/refund.h"
#include "repair/repair.h"
#include "chargeback/chargeback.h"
#include "payout/payout.h"
#include "recon/recon.h"
#include "settlement/settlement.h"
#include "acquiring/trade_state.h"
#include "auth/auth.h"
#include "idem/idem.h"
#include "ledger/ledger.h"
#include "merchant/merchant.h"
#include "notify/notifier.h"
#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"
#include "store/migrate.h"

#include <getopt.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    pc_app_t app;
    pc_http_server_t *api_srv, *admin_srv;
    uv_signal_t sigterm, sigint, sighup;
    uv_timer_t shutdown_timer;
    int64_t grace_ms; /* shutdown.grace_ms */
    uv_timer_t housekeeping;
    uv_timer_t trade_jobs;
    uv_timer_t ledger_fold;
    int folding; /* a fold is running: the next tick skips */
    int servers_open;
    pc_notifier_t *notifier;
    pc_repair_t *repair;
    pc_chargebacks_t *chargebacks;
    pc_settlement_t *settlement;
    pc_payouts_t *payouts;
    pc_recon_t *recon;
    pc_alerts_t *alerts;
    pc_ledger_daily_t *ledger_daily;
} server_t;

/* Whether req carries the admin token (Authorization: Bearer). */
static int admin_token_ok(const pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    const char *want = pc_config_str(app->cfg, "admin.token");
    const char *h = pc_http_req_header(req, "Authorization");
    size_t wl = strlen(want);
    return h && strncmp(h, "Bearer ", 7) == 0 && strlen(h + 7) == wl &&
           CRYPTO_memcmp(h + 7, want, wl) == 0;
}

static void admin_auth(pc_http_req_t *req, void *data)
{
    if (!admin_token_ok(req, data)) {
        pc_http_add_header(req, "WWW-Authenticate", "Bearer");
        pc_http_respond_error(req, PC_API_UNAUTHORIZED, NULL, "missing or wrong admin token");
        return;
    }
    pc_http_next(req);
}

static json_t *channel_health_view(pc_app_t *app, const char *channel_id)
{
    return pc_channel_health(app->channel_client, channel_id);
}

static void closed_noop(uv_handle_t *h)
{
    (void)h;
}

static void stop_loop_parts(server_t *s)
{
    pc_app_t *app = &s->app;
    pc_app_config_stop(app);
    pc_repair_stop(s->repair);
    pc_chargebacks_stop(s->chargebacks);
    pc_settlement_stop(s->settlement);
    pc_payouts_stop(s->payouts);
    pc_recon_stop(s->recon);
    pc_refunds_stop(app->refunds);
    pc_alerts_stop(s->alerts);
    pc_ledger_daily_stop(s->ledger_daily);
    pc_channel_client_close(app->channel_client, NULL, NULL);
    uv_close((uv_handle_t *)&s->sigterm, closed_noop);
    uv_close((uv_handle_t *)&s->sigint, closed_noop);
    uv_close((uv_handle_t *)&s->sighup, closed_noop);
    uv_close((uv_handle_t *)&s->housekeeping, closed_noop);
    uv_close((uv_handle_t *)&s->trade_jobs, closed_noop);
    uv_close((uv_handle_t *)&s->ledger_fold, closed_noop);
    pc_db_close(app->db, NULL, NULL);
    pc_kv_close(app->kv, NULL, NULL);
}

static void server_stopped(void *data)
{
    server_t *s = data;
    if (--s->servers_open == 0) {
        pc_log_info("paycore.stopped", "all requests answered");
        stop_loop_parts(s);
    }
}

static void shutdown_overdue(uv_timer_t *t)
{
    server_t *s = t->data;
    pc_log_warn("paycore.shutdown_overdue",
                "%s still running %lld ms after SIGTERM (shutdown.grace_ms); exiting",
                s->servers_open ? "requests" : "jobs", (long long)s->grace_ms);
    exit(1);
}

static void begin_shutdown(server_t *s, const char *why)
{
    if (s->app.shutting_down)
        return;
    s->app.shutting_down = 1;
    pc_log_info("paycore.stopping", "%s: no new connections; finishing in-flight requests", why);
    /* Kept until the loop ends: jobs that outlive the servers (a
     * reconciliation's statement) are bounded by it too. */
    s->shutdown_timer.data = s;
    uv_timer_start(&s->shutdown_timer, shutdown_overdue, (uint64_t)s->grace_ms, 0);
    uv_unref((uv_handle_t *)&s->shutdown_timer);
    pc_http_server_stop(s->api_srv, server_stopped, s);
    pc_http_server_stop(s->admin_srv, server_stopped, s);
    /* Counted with the servers: PostgreSQL closes only after its last outcomes are written. */
    pc_notifier_stop(s->notifier, server_stopped, s);
}

static void signal_cb(uv_signal_t *h, int signum)
{
    server_t *s = h->data;
    if (signum == SIGHUP) {
        pc_log_info("paycore.sighup", "reloading the configuration, rules and channels");
        pc_app_reload_config(&s->app, NULL, NULL);
        pc_app_reload(&s->app, 1, 1);
        return;
    }
    begin_shutdown(s, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* Periodic clean-up that any node may do (the statements are idempotent). */
static void housekeeping_cb(uv_timer_t *t)
{
    server_t *s = t->data;
    pc_idem_purge(s->app.idem);
}

/* Expiry, the refund window, and payments left waiting on a trade or a
 * challenge that is over: frequent, cheap when there is nothing to do. */
static void trade_jobs_cb(uv_timer_t *t)
{
    server_t *s = t->data;
    if (!s->app.shutting_down) {
        pc_trades_housekeeping(&s->app);
        if (s->app.engine)
            pc_engine_sweep_waiting(s->app.engine);
    }
}

static void ledger_folded(void *data, int status, int folded)
{
    server_t *s = data;
    (void)status;
    (void)folded;
    s->folding = 0;
}

/* Queued movements of hot accounts (ledger.h) become balances here. */
static void ledger_fold_cb(uv_timer_t *t)
{
    server_t *s = t->data;
    if (s->app.shutting_down || s->folding)
        return;
    if (pc_ledger_fold_pending(s->app.db, 5000, ledger_folded, s) == 0)
        s->folding = 1;
}

static void usage(void)
{
    fprintf(stderr, "usage: paycore [--config FILE] [--migrate-only]\n"
                    "Options also come from PAYCORE_* environment variables (see README).\n");
}

int main(int argc, char **argv)
{
    pc_log_flush_on_crash();
    const char *config_path = getenv("PAYCORE_CONFIG");
    int migrate_only = 0;
    static const struct option longopts[] = {{"config", required_argument, NULL, 'c'},
                                             {"migrate-only", no_argument, NULL, 'm'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "c:mh", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            config_path = optarg;
            break;
        case 'm':
            migrate_only = 1;
            break;
        default:
            usage();
            return ch == 'h' ? 0 : 2;
        }
    }
    char err[1024];
    pc_config_t *cfg = pc_config_load(config_path, err, sizeof err);
    if (!cfg) {
        fprintf(stderr, "paycore: %s\n", err);
        return 2;
    }
    pc_log_level_t level;
    if (pc_log_parse_level(pc_config_str(cfg, "log.level"), &level) == 0)
        pc_log_set_level(level);
    if (pc_db_url_check(pc_config_str(cfg, "db.url"), err, sizeof err) < 0) {
        fprintf(stderr, "paycore: %s\n", err);
        pc_config_free(cfg);
        return 2;
    }

    signal(SIGPIPE, SIG_IGN);
    if (pc_migrate(pc_config_str(cfg, "db.url"), 30, err, sizeof err) < 0) {
        pc_log_error("paycore.migrate", "%s", err);
        pc_config_free(cfg);
        return 1;
    }
    {
        /* BIN data: a missing or bad file is reported, not fatal (lookups
         * then answer 404). */
        int n = pc_cardbin_load_file(pc_config_str(cfg, "db.url"),
                                     pc_config_str(cfg, "cards.bin_file"), err, sizeof err);
        if (n < 0)
            pc_log_warn("cardbin.load", "%s", err);
        else
            pc_log_info("cardbin.loaded", "%d BIN rows", n);
    }
    if (migrate_only) {
        pc_config_free(cfg);
        return 0;
    }

    static server_t s;
    pc_app_t *app = &s.app;
    app->loop = uv_default_loop();
    app->cfg = cfg;
    const char *nn = pc_config_str(cfg, "node_name");
    if (nn[0])
        snprintf(app->node_id, sizeof app->node_id, "%s", nn);
    else {
        char host[48] = "host";
        gethostname(host, sizeof host - 1);
        snprintf(app->node_id, sizeof app->node_id, "%s-%d", host, (int)getpid());
    }
    /* Two connections per core by default: on this project's 2-core machine
     * 4 answered 6 % more consults than 8 (fewer backends taking turns on
     * the cores; README "Performance"), and payments no fewer. */
    int pool = (int)pc_config_int(cfg, "db.pool_size");
    if (pool == 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        pool = cores > 2 ? (int)(cores < 64 ? 2 * cores : 128) : 4;
    }
    pc_db_opts_t dbo = {pc_config_str(cfg, "db.url"), pool,
                        (uint64_t)pc_config_int(cfg, "db.query_timeout_ms"),
                        (int)pc_config_int(cfg, "db.pipeline_depth")};
    app->db = pc_db_new(app->loop, &dbo);
    app->kv = pc_kv_new(app->loop, pc_config_str(cfg, "redis.url"),
                        (uint64_t)pc_config_int(cfg, "redis.timeout_ms"),
                        pc_config_str(cfg, "redis.prefix"));
    if (!app->db || !app->kv)
        return 1;
    app->api = pc_router_new();
    app->admin = pc_router_new();
    pc_router_set_filter(app->admin, "/admin", admin_auth, app);
    app->merchants = pc_merchants_new(app->db, app->kv, 2000);
    app->idem = pc_idem_new(app->loop, app->db, app->kv, pc_config_int(cfg, "idempotency.lock_ms"),
                            pc_config_str(cfg, "cashier.card_key"));
    if (!app->idem) {
        pc_log_error("paycore.config", "cashier.card_key is empty: it keys idempotency hashes");
        return 1;
    }
    app->auth = pc_auth_new(app->merchants, app->kv, app->db, app->idem);
    pc_router_set_filter(app->api, "/v1/", pc_auth_filter, app->auth);
    if (pc_app_config_start(app, err, sizeof err) < 0) {
        pc_log_error("paycore.config", "%s", err);
        return 1;
    }
    char public_url[600];
    const char *pu = pc_config_str(cfg, "http.public_url");
    if (pu[0])
        snprintf(public_url, sizeof public_url, "%s", pu);
    else
        snprintf(public_url, sizeof public_url, "http://127.0.0.1:%d",
                 (int)pc_config_int(cfg, "http.port"));
    app->channel_client = pc_channel_client_new(app->loop, app->channels, app->kv, public_url);
    app->engine = pc_engine_new(app, app->channel_client);
    app->channel_health = channel_health_view;
    if (!app->channel_client || !app->engine)
        return 1;
    pc_app_routes_health(app);
    pc_app_routes_merchants(app);
    pc_app_routes_trades(app);
    pc_app_routes_buyers(app);
    pc_app_routes_trade_state(app);
    pc_app_routes_consult(app);
    pc_app_routes_pay(app);
    pc_app_routes_cardbins(app);
    pc_app_routes_cashier_page(app);
    pc_app_routes_console(app);
    if (!pc_refunds_new(app)) {
        pc_log_error("paycore.jobs", "refund.query_schedule_ms is not a list of delays");
        return 1;
    }
    pc_app_routes_refunds(app);
    s.repair = pc_repair_new(app);
    s.alerts = pc_alerts_new(app);
    if (!s.repair || !s.alerts) {
        pc_log_error("paycore.jobs", "repair.schedule_ms is not a list of delays");
        return 1;
    }
    s.ledger_daily = pc_ledger_daily_new(app);
    if (!s.ledger_daily) {
        pc_log_error("paycore.jobs", "ledger.check_at is not a time of day (HH:MM)");
        return 1;
    }
    s.chargebacks = pc_chargebacks_new(app);
    s.settlement = pc_settlement_new(app);
    app->settlement = s.settlement;
    s.payouts = pc_payouts_new(app);
    if (!s.chargebacks || !s.settlement || !s.payouts) {
        pc_log_error("paycore.jobs", "payout.query_schedule_ms is not a list of delays");
        return 1;
    }
    s.recon = pc_recon_new(app);
    if (!s.recon) {
        pc_log_error("paycore.jobs", "recon.daily_at is not a UTC time HH:MM");
        return 1;
    }
    pc_app_routes_recon(app, s.recon);
    s.notifier =
        pc_notifier_new(app->loop, cfg, app->db, app->merchants, app->node_id, err, sizeof err);
    if (!s.notifier) {
        pc_log_error("paycore.notifier", "%s", err);
        return 1;
    }
    pc_app_routes_notify(app, s.notifier);
    pc_alerts_watch_notifier(s.alerts, s.notifier);

    pc_http_server_opts_t o = {
        .host = pc_config_str(cfg, "http.host"),
        .port = (int)pc_config_int(cfg, "http.port"),
        .max_connections = (int)pc_config_int(cfg, "http.max_connections"),
        .max_inflight = (int)pc_config_int(cfg, "http.max_inflight"),
        .max_header_bytes = (size_t)pc_config_int(cfg, "http.max_header_bytes"),
        .max_body_bytes = (size_t)pc_config_int(cfg, "http.max_body_bytes"),
        .idle_timeout_ms = (uint64_t)pc_config_int(cfg, "http.idle_timeout_ms"),
        .request_timeout_ms = (uint64_t)pc_config_int(cfg, "http.request_timeout_ms"),
        .access_log = pc_config_bool(cfg, "http.access_log"),
        .name = "api",
        .trusted_proxies = pc_config_str(cfg, "http.trusted_proxies"),
    };
    s.api_srv = pc_http_server_start(app->loop, &o, app->api);
    o.host = pc_config_str(cfg, "admin.host");
    o.port = (int)pc_config_int(cfg, "admin.port");
    o.name = "admin";
    o.max_connections = (int)pc_config_int(cfg, "admin.max_connections");
    o.max_inflight = (int)pc_config_int(cfg, "admin.max_inflight");
    o.trusted_proxies = NULL;
    o.own_port = 1;
    o.max_body_bytes = (size_t)pc_config_int(cfg, "admin.max_body_bytes");
    /* Without the token, a body no larger than the API's. */
    o.trusted = admin_token_ok;
    o.trusted_data = app;
    o.untrusted_max_body_bytes = (size_t)pc_config_int(cfg, "http.max_body_bytes");
    s.admin_srv = pc_http_server_start(app->loop, &o, app->admin);
    if (!s.api_srv || !s.admin_srv)
        return 1;
    s.servers_open = 2;
    pc_notifier_start(s.notifier);
    pc_repair_start(s.repair);
    pc_chargebacks_start(s.chargebacks);
    pc_settlement_start(s.settlement);
    pc_payouts_start(s.payouts);
    pc_recon_start(s.recon);
    pc_refunds_start(app->refunds);
    pc_alerts_start(s.alerts);
    pc_ledger_daily_start(s.ledger_daily);
    s.servers_open++;

    uv_signal_init(app->loop, &s.sigterm);
    uv_signal_init(app->loop, &s.sigint);
    uv_signal_init(app->loop, &s.sighup);
    uv_timer_init(app->loop, &s.shutdown_timer);
    s.grace_ms = pc_config_int(cfg, "shutdown.grace_ms");
    s.sigterm.data = s.sigint.data = s.sighup.data = &s;
    uv_signal_start(&s.sigterm, signal_cb, SIGTERM);
    uv_signal_start(&s.sigint, signal_cb, SIGINT);
    uv_signal_start(&s.sighup, signal_cb, SIGHUP);
    uv_timer_init(app->loop, &s.housekeeping);
    s.housekeeping.data = &s;
    uv_timer_start(&s.housekeeping, housekeeping_cb, 60000, 60000);
    uv_timer_init(app->loop, &s.trade_jobs);
    s.trade_jobs.data = &s;
    uint64_t jobs_ms = (uint64_t)pc_config_int(cfg, "jobs.trade_sweep_ms");
    uv_timer_start(&s.trade_jobs, trade_jobs_cb, jobs_ms, jobs_ms);
    uv_timer_init(app->loop, &s.ledger_fold);
    s.ledger_fold.data = &s;
    uint64_t fold_ms = (uint64_t)pc_config_int(cfg, "jobs.ledger_fold_ms");
    uv_timer_start(&s.ledger_fold, ledger_fold_cb, fold_ms, fold_ms);

    json_t *f = json_pack("{s:s,s:i,s:i,s:s}", "node", app->node_id, "http_port",
                          pc_http_server_port(s.api_srv), "admin_port",
                          pc_http_server_port(s.admin_srv), "http_host", o.host);
    pc_log_fields(PC_LOG_INFO, "paycore.listening", f, "serving on %s:%d (admin %s:%d)",
                  pc_config_str(cfg, "http.host"), pc_http_server_port(s.api_srv),
                  pc_config_str(cfg, "admin.host"), pc_http_server_port(s.admin_srv));

    uv_run(app->loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&s.shutdown_timer, closed_noop);
    uv_run(app->loop, UV_RUN_NOWAIT);
    pc_router_free(app->api);
    pc_router_free(app->admin);
    pc_auth_free(app->auth);
    pc_idem_free(app->idem);
    pc_notifier_free(s.notifier);
    pc_merchants_free(app->merchants);
    pc_engine_free(app->engine);
    pc_repair_free(s.repair);
    pc_chargebacks_free(s.chargebacks);
    pc_settlement_free(s.settlement);
    pc_payouts_free(s.payouts);
    pc_recon_free(s.recon);
    pc_refunds_free(app->refunds);
    pc_alerts_free(s.alerts);
    pc_ledger_daily_free(s.ledger_daily);
    pc_app_config_free(app);
    int rc = uv_loop_close(app->loop);
    if (rc)
        pc_log_warn("paycore.loop_close", "handles left open at exit");
    pc_config_free(cfg);
    pc_metrics_reset();
    return 0;
}
