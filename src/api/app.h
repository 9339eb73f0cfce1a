/* The paycore process: what every handler and job of the server shares (the
 * loop, configuration, PostgreSQL pool, Redis, routers) and the registration
 * functions of each subsystem's routes. Owned by main.c; lives as long as the
 * process. */
#ifndef PC_API_APP_H
#define PC_API_APP_H
#include <uv.h>

#include "core/config.h"
#include "http/server.h"
#include "kv/kv.h"
#include "store/db.h"

struct pc_merchants;
struct pc_rules;
struct pc_channels;
struct pc_engine;
struct pc_channel_client;
struct pc_idem;
struct pc_auth;
struct pc_notifier;
struct pc_refunds;
struct pc_settlement;

typedef struct pc_app pc_app_t;
struct pc_app {
    uv_loop_t *loop;
    pc_config_t *cfg;
    pc_db_t *db;
    pc_kv_t *kv;
    pc_router_t *api;   /* merchant API, cashier, health */
    pc_router_t *admin; /* ops API */
    struct pc_merchants *merchants;
    struct pc_idem *idem;
    struct pc_auth *auth;
    struct pc_rules *rules;
    struct pc_channels *channels;
    struct pc_channel_client *channel_client;
    struct pc_engine *engine;
    struct pc_refunds *refunds;       /* refund runner (refund/refund.h) */
    struct pc_settlement *settlement; /* the daily job (settlement/settlement.h); may be NULL */
    /* Channel callbacks for refunds and payouts go to these when set (the
     * refund and payout modules set them); each must answer req (200 once the
     * result is applied or known to be a duplicate, 5xx to make the channel
     * retry). cb is a const pc_ch_callback_t * (channel/client.h). */
    void (*on_refund_callback)(struct pc_app *app, const void *cb, pc_http_req_t *req);
    void (*on_payout_callback)(struct pc_app *app, const void *cb, pc_http_req_t *req);
    /* Live health of a channel for the admin view (set by the channel
     * health module; may be NULL). Returns a new JSON object. */
    json_t *(*channel_health)(struct pc_app *app, const char *channel_id);
    char node_id[64];
    int shutting_down;
};

/* Route registration, one per subsystem. */
void pc_app_routes_health(pc_app_t *app);
void pc_app_routes_merchants(pc_app_t *app);
void pc_app_routes_trades(pc_app_t *app);
/* Platform key (/v1/) and ops notification routes; n is borrowed for the process. */
void pc_app_routes_notify(pc_app_t *app, struct pc_notifier *n);
void pc_app_routes_buyers(pc_app_t *app);
void pc_app_routes_trade_state(pc_app_t *app);
void pc_app_routes_consult(pc_app_t *app);
void pc_app_routes_pay(pc_app_t *app);
/* Merchant refunds (/v1/refunds) and their ops routes; needs app->refunds. */
void pc_app_routes_refunds(pc_app_t *app);
/* Reconciliation's admin routes (/admin/recon/..., recon/recon_api.c); rc is
 * borrowed for the process. */
struct pc_recon;
void pc_app_routes_recon(pc_app_t *app, struct pc_recon *rc);

/* The hosted cashier page (/cashier/{token}, web/cashier_page.c) and the
 * ops console on the admin listener (/console, web/console.c). */
void pc_app_routes_cashier_page(pc_app_t *app);
void pc_app_routes_console(pc_app_t *app);

/* Rules and channels (api/config_api.c): loads both (a refusal at start is
 * fatal: err says why), watches their folders, registers the admin routes. */
int pc_app_config_start(pc_app_t *app, char *err, size_t errlen);
/* Reloads rules and/or channels in the background (SIGHUP, file change). */
void pc_app_reload(pc_app_t *app, int rules, int channels);
/* Reads the configuration file and environment again on a worker thread
 * and takes the options that may change while serving (SIGHUP, POST
 * /admin/reload; see pc_config_take_runtime); logs what changed and what
 * needs a restart. done (may be NULL) gets {"ok","changed","restart_needed"}
 * or {"ok":false,"error"}, which it owns. */
typedef void (*pc_app_config_cb)(json_t *outcome, void *data);
void pc_app_reload_config(pc_app_t *app, pc_app_config_cb done, void *data);
void pc_app_config_stop(pc_app_t *app);
void pc_app_config_free(pc_app_t *app);

/* Helpers shared by handlers. */
/* Answers JSON text produced by PostgreSQL (json_build_object) re-encoded
 * compactly, like every other answer. */
void pc_respond_json_text(pc_http_req_t *req, int status, const char *text);
/* Answers a failed database call: 503 UNAVAILABLE when the database could not
 * be reached (safe to retry), 500 INTERNAL otherwise. */
void pc_respond_db_error(pc_http_req_t *req, int status);
/* A query callback (data: the request) answering 200 with the JSON text in
 * row 0, column 0, or the database error. */
void pc_respond_json_row_cb(void *data, int status, pc_db_res_t *res);
/* Formats a Unix time as RFC 3339 UTC ("2026-11-22T08:00:00Z") into buf (≥ 21 bytes). */
const char *pc_rfc3339(long long unix_s, char *buf, size_t len);
/* Reads an integer member that must be a JSON integer within [min, max];
 * returns 0, 1 when absent (out untouched), or -1 when present but invalid. */
int pc_json_int(json_t *obj, const char *name, long long min, long long max, long long *out);
/* A string member of 1..max chars, optionally restricted to [A-Za-z0-9_-];
 * returns it, NULL when absent, or sets *bad when present but invalid. */
const char *pc_json_str(json_t *obj, const char *name, size_t max, int idchars, int *bad);
/* Whether s is 1..max characters, none of them a control character. */
int pc_printable(const char *s, size_t max);
/* obj's member name as a URL paycore may call or send a buyer to: absent
 * (NULL, *bad untouched), or http(s)://host... of at most 512 visible ASCII
 * characters; anything else sets *bad. */
const char *pc_json_url(json_t *obj, const char *name, int *bad);
/* Whether s is 1..max of [A-Za-z0-9_-]. */
int pc_id_valid(const char *s, size_t max);
/* The ?limit= of a list (1..1000, def when absent) as text in buf, or NULL
 * with *bad set when it is not such a number. */
const char *pc_limit_param(pc_http_req_t *req, int def, char buf[8], int *bad);
/* The ?limit= and ?after= of a list paged by id: *limit as pc_limit_param
 * gives it, *after NULL or an id of 1-64 [A-Za-z0-9_-] (the next_after of
 * the page before). When either is bad, answers 400 (after_hint says what
 * `after` must be) and returns -1. */
int pc_page_params(pc_http_req_t *req, int def, char buf[8], const char **limit, const char **after,
                   const char *after_hint);
/* Who acts on the admin API, for audit rows: the X-Operator header (1-64
 * printable characters), else "ops". */
const char *pc_operator_of(pc_http_req_t *req);

#endif
