#include "core/config.h"
#include "core/currency.h"
#include "core/error.h"
#include "core/log.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef enum { OPT_INT, OPT_STR, OPT_BOOL } opt_type_t;

/* What a string option must look like beyond its length; checked wherever a
 * value is read (default, file, environment), so a reload refuses what a
 * start would. True when text has the form. */
typedef bool (*opt_form_t)(const char *text);

static bool delays_ok(const char *text);
static bool delays_or_none_ok(const char *text);
static bool time_of_day_ok(const char *text);
static bool log_level_ok(const char *text);

typedef struct {
    const char *name;
    opt_type_t type;
    const char *env;
    const char *def; /* default, as text */
    int64_t min, max;
    int runtime; /* may change on reload without restart */
    const char *help;
} opt_def_t;

/* The numbers of the delays' message (PC_CONFIG_MAX_DELAYS,
 * PC_CONFIG_MAX_NOTIFY_DELAYS, INT32_MAX), as text. */
_Static_assert(PC_CONFIG_MAX_DELAYS == 32 && PC_CONFIG_MAX_NOTIFY_DELAYS == 64 &&
                   INT32_MAX == 2147483647,
               "DELAYS_WHY's numbers");
#define DELAYS_WHY(from_to)                                                                        \
    "must be " from_to " comma-separated delays in milliseconds, each at most 2147483647"

/* String options with a form of their own, and what to say when a value
 * has not. */
typedef struct {
    const char *name;
    opt_form_t ok;
    const char *why;
} opt_check_t;

static const opt_check_t opt_checks[] = {
    {"log.level", log_level_ok, "must be one of debug, info, warn, error"},
    {"repair.schedule_ms", delays_ok, DELAYS_WHY("1 to 32")},
    {"refund.query_schedule_ms", delays_ok, DELAYS_WHY("1 to 32")},
    {"payout.query_schedule_ms", delays_ok, DELAYS_WHY("1 to 32")},
    {"notify.schedule_ms", delays_or_none_ok, DELAYS_WHY("up to 64")},
    {"recon.daily_at", time_of_day_ok, "must be a UTC time of day HH:MM, e.g. 00:30"},
    {"ledger.check_at", time_of_day_ok, "must be a UTC time of day HH:MM, e.g. 02:00"},
    {"chargeback.import_at", time_of_day_ok, "must be a UTC time of day HH:MM, e.g. 01:00"},
};

static const opt_check_t *check_of(const char *name)
{
    for (size_t i = 0; i < sizeof opt_checks / sizeof opt_checks[0]; i++)
        if (!strcmp(opt_checks[i].name, name))
            return &opt_checks[i];
    return NULL;
}

/* The one table of options. Secrets have demo defaults that are clearly marked;
 * production sets them through the environment. */
static const opt_def_t opts[] = {
    {"demo", OPT_BOOL, "PAYCORE_DEMO", "false", 0, 0, 0,
     "development and tests only: accept the public DEMO admin token, cashier link key and "
     "channel secrets, and keep challenge codes readable"},
    {"node_name", OPT_STR, "PAYCORE_NODE_NAME", "", 0, 64, 0, "name of this process in logs"},
    {"http.host", OPT_STR, "PAYCORE_HTTP_HOST", "127.0.0.1", 0, 0, 0, "merchant API address"},
    {"http.port", OPT_INT, "PAYCORE_HTTP_PORT", "8080", 0, 65535, 0, "merchant API port"},
    {"http.max_connections", OPT_INT, "PAYCORE_HTTP_MAX_CONNECTIONS", "10000", 1, 1000000, 0,
     "open connections per listener"},
    {"http.max_inflight", OPT_INT, "PAYCORE_HTTP_MAX_INFLIGHT", "4096", 1, 1000000, 0,
     "requests in progress (waiting for the database, Redis or a channel) beyond which a new one "
     "is answered 503 at once"},
    {"http.max_header_bytes", OPT_INT, NULL, "16384", 1024, 1048576, 0, "request line+headers"},
    {"http.max_body_bytes", OPT_INT, NULL, "65536", 1024, 16777216, 0, "request body (413 above)"},
    {"http.idle_timeout_ms", OPT_INT, "PAYCORE_HTTP_IDLE_TIMEOUT_MS", "60000", 100, 3600000, 0,
     "keep-alive idle time"},
    {"http.request_timeout_ms", OPT_INT, "PAYCORE_HTTP_REQUEST_TIMEOUT_MS", "10000", 100, 600000, 0,
     "time to receive a whole request"},
    {"http.trusted_proxies", OPT_STR, "PAYCORE_TRUSTED_PROXIES", "", 0, 1024, 0,
     "reverse proxies (addresses or CIDR blocks) whose X-Forwarded-For names the client"},
    {"http.access_log", OPT_BOOL, "PAYCORE_ACCESS_LOG", "true", 0, 0, 0,
     "one log line per request"},
    {"admin.host", OPT_STR, "PAYCORE_ADMIN_HOST", "127.0.0.1", 0, 0, 0, "admin API address"},
    {"admin.port", OPT_INT, "PAYCORE_ADMIN_PORT", "8081", 0, 65535, 0, "admin API port"},
    {"admin.token", OPT_STR, "PAYCORE_ADMIN_TOKEN", "demo-admin-token-change-me", 0, 0, 0,
     "DEMO default bearer token for the admin API"},
    {"admin.max_connections", OPT_INT, "PAYCORE_ADMIN_MAX_CONNECTIONS", "256", 1, 100000, 0,
     "open connections to the admin listener"},
    {"admin.max_inflight", OPT_INT, "PAYCORE_ADMIN_MAX_INFLIGHT", "256", 1, 100000, 0,
     "admin requests in progress beyond which a new one is answered 503 at once"},
    {"admin.max_body_bytes", OPT_INT, "PAYCORE_ADMIN_MAX_BODY_BYTES", "67108864", 1024, 1073741824,
     0, "admin request body (413 above): uploaded statements and files"},
    {"health.ready_without_redis", OPT_BOOL, "PAYCORE_READY_WITHOUT_REDIS", "false", 0, 0, 1,
     "/readyz answers 200 (\"redis\": \"down\") while Redis is unreachable: the node serves "
     "without it"},
    {"metrics.on_admin", OPT_BOOL, "PAYCORE_METRICS_ON_ADMIN", "false", 0, 0, 0,
     "serve /metrics on the admin listener instead of the main one"},
    {"db.url", OPT_STR, "PAYCORE_DATABASE_URL", "postgresql://paycore@127.0.0.1:5432/paycore", 0, 0,
     0, "PostgreSQL connection string"},
    {"db.pool_size", OPT_INT, "PAYCORE_DB_POOL_SIZE", "0", 0, 256, 0,
     "connections per process (0: two per CPU core, at least 4)"},
    {"db.query_timeout_ms", OPT_INT, "PAYCORE_DB_QUERY_TIMEOUT_MS", "5000", 50, 600000, 0,
     "a query or a wait for a connection longer than this fails with 503"},
    {"db.pipeline_depth", OPT_INT, NULL, "32", 1, 1024, 0,
     "autocommit queries queued on one connection"},
    {"redis.url", OPT_STR, "PAYCORE_REDIS_URL", "redis://127.0.0.1:6379/0", 0, 0, 0,
     "Redis address"},
    {"redis.timeout_ms", OPT_INT, "PAYCORE_REDIS_TIMEOUT_MS", "1000", 10, 60000, 0,
     "command timeout"},
    {"redis.prefix", OPT_STR, "PAYCORE_REDIS_PREFIX", "pc:", 0, 64, 0, "key prefix"},
    {"idempotency.lock_ms", OPT_INT, "PAYCORE_IDEMPOTENCY_LOCK_MS", "60000", 300, 3600000, 0,
     "an Idempotency-Key claim lapses this long after its node stops renewing it (it died)"},
    {"log.level", OPT_STR, "PAYCORE_LOG_LEVEL", "info", 0, 0, 1, "debug|info|warn|error"},
    {"rules.dir", OPT_STR, "PAYCORE_RULES_DIR", "rules", 0, 0, 0, "Lua rules folder"},
    {"channels.dir", OPT_STR, "PAYCORE_CHANNELS_DIR", "channels", 0, 0, 0, "channel files"},
    {"shutdown.grace_ms", OPT_INT, "PAYCORE_SHUTDOWN_GRACE_MS", "30000", 1000, 3600000, 0,
     "a stopping node (SIGTERM) finishes the requests and jobs in flight for at most this "
     "long, then exits with status 1 (paycore.shutdown_overdue); keep it above the longest "
     "channel request_ms, and below the time the orchestrator gives before SIGKILL"},
    {"jobs.trade_sweep_ms", OPT_INT, "PAYCORE_TRADE_SWEEP_MS", "1000", 50, 3600000, 0,
     "how often expired trades are closed and old ones finished"},
    {"jobs.ledger_fold_ms", OPT_INT, "PAYCORE_LEDGER_FOLD_MS", "200", 10, 60000, 0,
     "how often queued movements of hot ledger accounts are folded into their balances"},
    {"trades.refund_window_s", OPT_INT, "PAYCORE_REFUND_WINDOW_S", "15552000", 86400, 315360000, 0,
     "after this long a paid trade is TRADE_FINISHED (no refunds); at least a day: a value "
     "read as \"no window\" would finish every paid trade at the next sweep"},
    {"limits.buyer_daily", OPT_INT, "PAYCORE_LIMIT_BUYER_DAILY", "5000000", 0, 1000000000000000, 1,
     "most a buyer may pay in 24 h (minor units)"},
    {"limits.buyer_monthly", OPT_INT, "PAYCORE_LIMIT_BUYER_MONTHLY", "50000000", 0,
     1000000000000000, 1, "most a buyer may pay in 30 days"},
    {"limits.card_daily", OPT_INT, "PAYCORE_LIMIT_CARD_DAILY", "2000000", 0, 1000000000000000, 1,
     "most one card may pay in 24 h, whoever pays with it"},
    {"limits.card_monthly", OPT_INT, "PAYCORE_LIMIT_CARD_MONTHLY", "1000000000000000", 0,
     1000000000000000, 1, "most one card may pay in 30 days (default: no cap of its own)"},
    {"limits.buyer_single", OPT_INT, "PAYCORE_LIMIT_BUYER_SINGLE", "1000000000000000", 0,
     1000000000000000, 1, "most one payment of a buyer (default: no cap but the daily one)"},
    {"limits.card_single", OPT_INT, "PAYCORE_LIMIT_CARD_SINGLE", "1000000000000000", 0,
     1000000000000000, 1, "most one payment by one card (default: no cap but the daily one)"},
    {"limits.by_currency", OPT_STR, "PAYCORE_LIMITS_BY_CURRENCY", "{}", 0, 8192, 1,
     "the limits of a currency whose minor unit is worth another amount, e.g. {\"KRW\": "
     "{\"buyer_daily\": 10000000, \"buyer_monthly\": 100000000, \"card_daily\": 4000000}} "
     "(any of the limits.* names; the others are the figures above; "
     "config/paycore.example.json has ten currencies)"},
    {"cashier.demo_challenges", OPT_BOOL, "PAYCORE_DEMO_CHALLENGES", "true", 0, 0, 0,
     "keep challenge codes readable at GET /admin/challenges/{id} (only with demo on)"},
    {"http.public_url", OPT_STR, "PAYCORE_PUBLIC_URL", "", 0, 512, 0,
     "base URL channels call back (default http://127.0.0.1:<http.port>)"},
    {"cashier.token_key", OPT_STR, "PAYCORE_CASHIER_TOKEN_KEY", "demo-cashier-token-key-change-me",
     0, 0, 0, "DEMO default key signing cashier links (trade creation's cashier_url)"},
    {"cashier.card_key", OPT_STR, "PAYCORE_CARD_KEY", "demo-card-key-change-me", 0, 0, 0,
     "DEMO default key of the keyed hash cards are known by (velocity, challenges); keep it "
     "stable: changing it forgets every card's history"},
    {"cashier.max_failed_attempts", OPT_INT, "PAYCORE_CASHIER_MAX_FAILED_ATTEMPTS", "10", 1, 1000,
     1,
     "failed payments a trade may have: past them it takes no more (422 LIMIT_EXCEEDED; "
     "stolen cards are not tried one after another through one cashier link)"},
    {"cashier.hide_unavailable", OPT_BOOL, NULL, "false", 0, 0, 1,
     "drop unavailable methods from consult (passed to cashier_rank.lua)"},
    {"cashier.page_asset_challenge", OPT_BOOL, "PAYCORE_CASHIER_PAGE_ASSET_CHALLENGE", "true", 0, 0,
     1,
     "challenge a hosted-page payment that takes the buyer's balance, a coupon or a saved card "
     "(the link is the page's only credential); needs the challenge code to reach the buyer"},
    {"repair.schedule_ms", OPT_STR, "PAYCORE_REPAIR_SCHEDULE_MS",
     "5000,10000,30000,60000,300000,900000,1800000,3600000,7200000", 0, 1000, 0,
     "status queries of open payments: delays between attempts (ms)"},
    {"repair.first_query_ms", OPT_INT, "PAYCORE_REPAIR_FIRST_QUERY_MS", "10000", 10, 3600000, 0,
     "a payment left open by its channel is first queried this long after"},
    {"repair.poll_ms", OPT_INT, "PAYCORE_REPAIR_POLL_MS", "500", 20, 60000, 0,
     "how often due status queries are claimed"},
    {"repair.not_found_after_s", OPT_INT, "PAYCORE_REPAIR_NOT_FOUND_AFTER_S", "120", 0, 86400, 0,
     "a payment the channel does not know fails only once this old"},
    {"refund.poll_ms", OPT_INT, "PAYCORE_REFUND_POLL_MS", "500", 20, 60000, 0,
     "how often the refund runner claims refunds to send or query and creates error refunds"},
    {"refund.query_schedule_ms", OPT_STR, "PAYCORE_REFUND_QUERY_SCHEDULE_MS",
     "2000,5000,15000,60000,300000,900000,1800000,3600000", 0, 1000, 0,
     "status queries of refunds at their channel: delays between attempts (ms; the last repeats)"},
    {"refund.error_retry_ms", OPT_INT, "PAYCORE_REFUND_ERROR_RETRY_MS", "60000", 100, 86400000, 0,
     "an error refund the database refused is tried again after this (every other first)"},
    {"refund.send_grace_ms", OPT_INT, "PAYCORE_REFUND_SEND_GRACE_MS", "5000", 100, 3600000, 0,
     "an accepted refund its node has not sent after this long is sent by any node's runner"},
    {"alerts.webhook_url", OPT_STR, "PAYCORE_ALERTS_WEBHOOK_URL", "", 0, 512, 0,
     "ops webhook: alerts are POSTed here (empty: none)"},
    {"alerts.webhook_retry_ms", OPT_STR, "PAYCORE_ALERTS_WEBHOOK_RETRY_MS",
     "5000,30000,120000,600000,1800000", 0, 200, 0,
     "ops webhook: delays between attempts of an event it did not take (ms)"},
    {"alerts.check_ms", OPT_INT, "PAYCORE_ALERTS_CHECK_MS", "5000", 100, 600000, 0,
     "how often alert conditions are evaluated"},
    {"alerts.channel_volume_pct", OPT_INT, "PAYCORE_ALERTS_CHANNEL_VOLUME_PCT", "90", 1, 100, 0,
     "alert when a channel has sent this share of a daily or monthly volume cap"},
    {"alerts.platform_key_wait_s", OPT_INT, "PAYCORE_ALERTS_PLATFORM_KEY_WAIT_S", "60", 1, 86400, 0,
     "NOTIFY_NO_PLATFORM_KEY: RSA2 merchants' notifications have waited this long for a platform "
     "key this node cannot load or make"},
    {"alerts.outbox_age_s", OPT_INT, "PAYCORE_ALERTS_OUTBOX_AGE_S", "600", 1, 86400, 0,
     "alert when the oldest due notification has waited this long past its time"},
    {"alerts.review_age_s", OPT_INT, "PAYCORE_ALERTS_REVIEW_AGE_S", "900", 1, 86400, 0,
     "REVIEWS_WAITING: payments held for review longer than this (their buyers wait, their "
     "trades expire)"},
    {"alerts.error_refund_age_s", OPT_INT, "PAYCORE_ALERTS_ERROR_REFUND_AGE_S", "600", 1, 86400, 0,
     "a payment held for an error refund longer than this without one raises an alert"},
    {"alerts.query_overdue_s", OPT_INT, "PAYCORE_ALERTS_QUERY_OVERDUE_S", "300", 1, 86400, 0,
     "a status query of a payment, payout or refund in flight this long overdue raises an "
     "alert"},
    {"alerts.trade_close_lag_s", OPT_INT, "PAYCORE_ALERTS_TRADE_CLOSE_LAG_S", "300", 1, 86400, 0,
     "a trade still open this long after its expiry raises an alert"},
    {"alerts.ledger_fold_age_s", OPT_INT, "PAYCORE_ALERTS_LEDGER_FOLD_AGE_S", "60", 1, 86400, 0,
     "alert when the oldest queued movement of a hot ledger account is older than this"},
    {"cards.bin_file", OPT_STR, "PAYCORE_CARD_BIN_FILE", "config/card_bins.csv", 0, 1024, 0,
     "card BIN table loaded at start (CSV)"},
    {"rules.watch", OPT_BOOL, "PAYCORE_RULES_WATCH", "true", 0, 0, 0, "reload on file change"},
    {"rules.list_builder", OPT_BOOL, "PAYCORE_RULES_LIST_BUILDER", "true", 0, 0, 0,
     "hand the cashier's methods to cashier_rank.lua through a JIT-compiled builder (rule code "
     "itself always runs in the interpreter); false: through the C API only, slower, the same "
     "answers"},
    {"rules.max_example_us", OPT_INT, "PAYCORE_RULES_MAX_EXAMPLE_US", "2000", 0, 10000000, 0,
     "a rule version whose examples take more CPU per call than this is refused as too slow "
     "(0: no limit)"},
    {"notify.private_targets", OPT_BOOL, "PAYCORE_NOTIFY_PRIVATE_TARGETS", "false", 0, 0, 0,
     "let notify_url reach loopback and private addresses (merchants on an internal network, "
     "development); off, they fail as address_not_public"},
    {"notify.schedule_ms", OPT_STR, "PAYCORE_NOTIFY_SCHEDULE_MS",
     "15000,15000,30000,180000,600000,1200000,1800000,1800000,1800000,3600000,10800000,10800000,"
     "10800000,21600000,21600000",
     0, 0, 0, "delays between notification attempts (comma-separated ms); then FAILED"},
    {"notify.poll_ms", OPT_INT, "PAYCORE_NOTIFY_POLL_MS", "500", 10, 60000, 0,
     "how often the notifier looks for due notifications"},
    {"notify.batch", OPT_INT, "PAYCORE_NOTIFY_BATCH", "200", 1, 5000, 0,
     "notifications claimed per query"},
    {"notify.timeout_ms", OPT_INT, "PAYCORE_NOTIFY_TIMEOUT_MS", "5000", 100, 120000, 0,
     "total time for one notification request"},
    {"notify.lease_ms", OPT_INT, "PAYCORE_NOTIFY_LEASE_MS", "60000", 3000, 3600000, 0,
     "how long a node holds a claimed notification (a dead node's claims return after it)"},
    {"notify.host_connections", OPT_INT, "PAYCORE_NOTIFY_HOST_CONNECTIONS", "16", 1, 256, 0,
     "notification requests at once to one merchant host"},
    {"notify.max_inflight", OPT_INT, "PAYCORE_NOTIFY_MAX_INFLIGHT", "2000", 1, 100000, 0,
     "notifications one node holds (queued or in flight)"},
    {"notify.platform_key_file", OPT_STR, "PAYCORE_NOTIFY_PLATFORM_KEY_FILE", "", 0, 0, 0,
     "PEM RSA private key signing notifications to RSA2 merchants (empty: one key generated "
     "once and shared by every node through PostgreSQL)"},
    {"chargeback.evidence_days", OPT_INT, "PAYCORE_CHARGEBACK_EVIDENCE_DAYS", "7", 1, 90, 0,
     "days a merchant has for evidence when the channel gives no respond-by time"},
    {"chargeback.daily_import", OPT_BOOL, "PAYCORE_CHARGEBACK_DAILY_IMPORT", "true", 0, 0, 0,
     "import yesterday's chargeback file of every channel once chargeback.import_at has passed"},
    {"chargeback.import_at", OPT_STR, "PAYCORE_CHARGEBACK_IMPORT_AT", "01:00", 0, 5, 0,
     "UTC time of day (HH:MM) after which yesterday's chargeback files are imported"},
    {"alerts.chargeback_files_after_min", OPT_INT, "PAYCORE_ALERTS_CHARGEBACK_FILES_AFTER_MIN",
     "120", 0, 1380, 0,
     "CHARGEBACK_FILES_MISSING: yesterday's file not imported this long after "
     "chargeback.import_at"},
    {"alerts.recon_after_min", OPT_INT, "PAYCORE_ALERTS_RECON_AFTER_MIN", "120", 0, 1439, 0,
     "alert when a channel reconciled before has no reconciliation of yesterday this many "
     "minutes after recon.daily_at (UTC)"},
    {"chargeback.daily_poll_ms", OPT_INT, "PAYCORE_CHARGEBACK_DAILY_POLL_MS", "60000", 100, 3600000,
     0, "how often the daily chargeback import looks for files not imported"},
    {"chargeback.rate_refresh_ms", OPT_INT, "PAYCORE_CHARGEBACK_RATE_REFRESH_MS", "60000", 100,
     3600000, 0, "how often the chargeback rate gauges are recomputed"},
    {"settlement.auto", OPT_BOOL, "PAYCORE_SETTLEMENT_AUTO", "true", 0, 0, 0,
     "settle each UTC day automatically (any node; each day once)"},
    {"settlement.hour_utc", OPT_INT, "PAYCORE_SETTLEMENT_HOUR_UTC", "2", 0, 23, 0,
     "the automatic settlement of a day runs from this hour (UTC) on"},
    {"settlement.poll_ms", OPT_INT, "PAYCORE_SETTLEMENT_POLL_MS", "60000", 50, 3600000, 0,
     "how often the settlement job checks whether the day is due"},
    {"payout.channel", OPT_STR, "PAYCORE_PAYOUT_CHANNEL", "", 0, 32, 0,
     "channel for payouts, when on and taking the currency (else, or empty: the first enabled "
     "channel with PAYOUT among its refund methods that takes it)"},
    {"payout.poll_ms", OPT_INT, "PAYCORE_PAYOUT_POLL_MS", "500", 20, 60000, 0,
     "how often unsent and unanswered payouts are looked for"},
    {"payout.first_query_ms", OPT_INT, "PAYCORE_PAYOUT_FIRST_QUERY_MS", "10000", 10, 3600000, 0,
     "first status query of a sent payout (and resend of an accepted one) after this"},
    {"payout.query_schedule_ms", OPT_STR, "PAYCORE_PAYOUT_QUERY_SCHEDULE_MS",
     "5000,15000,60000,300000,900000,3600000,10800000", 0, 0, 0,
     "delays between payout status queries (comma-separated ms); then flagged for ops"},
    {"payout.not_found_after_s", OPT_INT, "PAYCORE_PAYOUT_NOT_FOUND_AFTER_S", "120", 0, 86400, 0,
     "a payout the channel does not know this long after sending failed (money back)"},
    {"ledger.check_daily", OPT_BOOL, "PAYCORE_LEDGER_CHECK_DAILY", "true", 0, 0, 0,
     "check the whole ledger once a day after ledger.check_at (one node; LEDGER_CHECK_FAILED)"},
    {"ledger.check_at", OPT_STR, "PAYCORE_LEDGER_CHECK_AT", "02:00", 0, 5, 0,
     "UTC time of day (HH:MM) after which the day's ledger check runs"},
    {"recon.daily", OPT_BOOL, "PAYCORE_RECON_DAILY", "true", 0, 0, 0,
     "reconcile yesterday for every enabled channel once recon.daily_at (UTC) has passed"},
    {"recon.daily_at", OPT_STR, "PAYCORE_RECON_DAILY_AT", "00:30", 0, 5, 0,
     "UTC time of day (HH:MM) after which yesterday's statements are reconciled"},
    {"recon.poll_ms", OPT_INT, "PAYCORE_RECON_POLL_MS", "60000", 50, 3600000, 0,
     "how often the daily reconciliation job looks for days to run"},
    {"recon.run_timeout_s", OPT_INT, "PAYCORE_RECON_RUN_TIMEOUT_S", "1800", 10, 86400, 0,
     "a run still RUNNING after this long (its node died) is taken over"},
    {"recon.retry_s", OPT_INT, "PAYCORE_RECON_RETRY_S", "900", 1, 86400, 0,
     "the daily job runs a failed day again after this long"},
    {"recon.work_mem_mb", OPT_INT, "PAYCORE_RECON_WORK_MEM_MB", "256", 0, 8192, 0,
     "PostgreSQL work_mem of a reconciliation's transaction (hash joins in memory; 0: server's)"},
    {"recon.statement_timeout_ms", OPT_INT, "PAYCORE_RECON_STATEMENT_TIMEOUT_MS", "600000", 1000,
     3600000, 0, "a statement of a reconciliation match (its own connection) may take this long"},
};
#define NOPTS (sizeof opts / sizeof opts[0])

typedef struct {
    int64_t i;
    char *s;
} opt_val_t;

/* limits.by_currency, parsed: the figures set for each currency named. */
#define MAX_LIMIT_CURRENCIES 64
static const char *const limit_names[] = {"buyer_daily",  "buyer_monthly", "card_daily",
                                          "card_monthly", "buyer_single",  "card_single"};
#define NLIMITS (sizeof limit_names / sizeof limit_names[0])
typedef struct {
    char currency[4];
    int64_t value[NLIMITS];
    int set[NLIMITS];
} currency_limits_t;

struct pc_config {
    char *path; /* the file it was loaded from, NULL for none */
    opt_val_t v[NOPTS];
    currency_limits_t limits[MAX_LIMIT_CURRENCIES];
    int nlimits;
    int limit_opt[NLIMITS]; /* index of limits.<name> in v, resolved at load */
};

/* Options by name: an open-addressing index of opts, made once. Every
 * request reads a dozen options by name (pc_config_int and friends); a
 * linear search compared up to NOPTS names each time. */
#define OPT_SLOTS 1024
_Static_assert(NOPTS * 2 <= OPT_SLOTS, "the option index must stay at most half full");
static int16_t opt_slot[OPT_SLOTS]; /* option index + 1; 0: empty */
static pthread_once_t opt_once = PTHREAD_ONCE_INIT;

static uint32_t name_hash(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static int lookup(const char *name)
{
    for (uint32_t h = name_hash(name) & (OPT_SLOTS - 1);; h = (h + 1) & (OPT_SLOTS - 1)) {
        int i = opt_slot[h] - 1;
        if (i < 0 || strcmp(opts[i].name, name) == 0)
            return i;
    }
}

static void index_opts(void)
{
    for (size_t i = 0; i < NOPTS; i++) {
        uint32_t h = name_hash(opts[i].name) & (OPT_SLOTS - 1);
        while (opt_slot[h])
            h = (h + 1) & (OPT_SLOTS - 1);
        opt_slot[h] = (int16_t)(i + 1);
    }
    /* Every option is found under its name, and no name is given twice. */
    for (size_t i = 0; i < NOPTS; i++)
        if (lookup(opts[i].name) != (int)i) {
            fprintf(stderr, "paycore: config option %s is defined twice\n", opts[i].name);
            abort();
        }
}

static int find_opt(const char *name)
{
    pthread_once(&opt_once, index_opts);
    return lookup(name);
}

int pc_config_parse_bool(const char *text, int *out)
{
    if (text && (!strcmp(text, "true") || !strcmp(text, "1") || !strcmp(text, "yes")))
        *out = 1;
    else if (text && (!strcmp(text, "false") || !strcmp(text, "0") || !strcmp(text, "no")))
        *out = 0;
    else
        return -1;
    return 0;
}

static int parse_value(const opt_def_t *o, const char *text, opt_val_t *out, char *err,
                       size_t errlen, const char *origin)
{
    int b;
    switch (o->type) {
    case OPT_INT: {
        char *end;
        errno = 0;
        long long v = strtoll(text, &end, 10);
        if (errno || end == text || *end || v < o->min || v > o->max) {
            snprintf(err, errlen, "%s: %s must be an integer from %lld to %lld (got \"%s\")",
                     origin, o->name, (long long)o->min, (long long)o->max, text);
            return PC_EINVAL;
        }
        out->i = v;
        return 0;
    }
    case OPT_BOOL:
        if (pc_config_parse_bool(text, &b) == 0)
            out->i = b;
        else {
            snprintf(err, errlen, "%s: %s must be true or false (got \"%s\")", origin, o->name,
                     text);
            return PC_EINVAL;
        }
        return 0;
    case OPT_STR: {
        if (o->max && (int64_t)strlen(text) > o->max) {
            snprintf(err, errlen, "%s: %s is longer than %lld characters", origin, o->name,
                     (long long)o->max);
            return PC_EINVAL;
        }
        const opt_check_t *check = check_of(o->name);
        if (check && !check->ok(text)) {
            snprintf(err, errlen, "%s: %s %s (got \"%s\")", origin, o->name, check->why, text);
            return PC_EINVAL;
        }
        free(out->s);
        out->s = strdup(text);
        return out->s ? 0 : PC_ENOMEM;
    }
    }
    return PC_EINVAL;
}

/* Flattens {"http":{"port":1}} into "http.port" lookups. */
static int apply_json(pc_config_t *cfg, json_t *obj, const char *prefix, const char *path,
                      char *err, size_t errlen)
{
    const char *key;
    json_t *val;
    json_object_foreach(obj, key, val)
    {
        char name[128];
        snprintf(name, sizeof name, "%s%s%s", prefix, prefix[0] ? "." : "", key);
        if (json_is_object(val) && !strcmp(name, "limits.by_currency")) {
            /* Kept as its JSON text, parsed with the rest (parse_limits). */
            char *text = json_dumps(val, JSON_COMPACT);
            int i = find_opt(name);
            int rc = text ? parse_value(&opts[i], text, &cfg->v[i], err, errlen, path) : PC_ENOMEM;
            free(text);
            if (rc)
                return rc;
            continue;
        }
        if (json_is_object(val)) {
            int rc = apply_json(cfg, val, name, path, err, errlen);
            if (rc)
                return rc;
            continue;
        }
        int i = find_opt(name);
        if (i < 0) {
            snprintf(err, errlen, "%s: unknown option %s", path, name);
            return PC_EINVAL;
        }
        char text[4096];
        if (json_is_string(val))
            snprintf(text, sizeof text, "%s", json_string_value(val));
        else if (json_is_integer(val))
            snprintf(text, sizeof text, "%" JSON_INTEGER_FORMAT, json_integer_value(val));
        else if (json_is_boolean(val))
            snprintf(text, sizeof text, "%s", json_is_true(val) ? "true" : "false");
        else {
            snprintf(err, errlen, "%s: %s has the wrong type", path, name);
            return PC_EINVAL;
        }
        int rc = parse_value(&opts[i], text, &cfg->v[i], err, errlen, path);
        if (rc)
            return rc;
    }
    return 0;
}

/* Options whose built-in default is a public secret, printed in this file and
 * the README: a process that keeps one of them (or an empty value) would let
 * anyone call the admin API or forge cashier links. Only demo mode takes them. */
static const char *const demo_secret_opts[] = {"admin.token", "cashier.token_key",
                                               "cashier.card_key", NULL};

#define MIN_SECRET_LEN 16

static int refuse_demo_secrets(const pc_config_t *cfg, char *err, size_t errlen)
{
    if (cfg->v[find_opt("demo")].i)
        return 0;
    for (const char *const *n = demo_secret_opts; *n; n++) {
        int i = find_opt(*n);
        size_t len = strlen(cfg->v[i].s);
        if (len && len < MIN_SECRET_LEN) {
            /* "x" or a word is guessed before anyone notices the attempts. */
            snprintf(err, errlen,
                     "%s is %zu characters: set %s to a random secret of at least %d (e.g. "
                     "openssl rand -hex 32)",
                     *n, len, opts[i].env, MIN_SECRET_LEN);
            return PC_EINVAL;
        }
        if (len && strcmp(cfg->v[i].s, opts[i].def) != 0)
            continue;
        snprintf(err, errlen,
                 "%s is %s: set %s to a secret of your own (PAYCORE_DEMO=true accepts the public "
                 "demo values, for development and tests only)",
                 *n, cfg->v[i].s[0] ? "the public demo value" : "empty", opts[i].env);
        return PC_EINVAL;
    }
    return 0;
}

/* A month below a day, for the general figures or a currency's (its own or
 * the general ones it falls back to): a currency that set only its daily
 * figure in by_currency (IDR 600,000,000) was capped by the general monthly
 * one (50,000,000) without anyone noticing. Refused with what to set. */
static int check_limit_order(const pc_config_t *cfg, char *err, size_t errlen)
{
    static const char *const pairs[][2] = {{"buyer_daily", "buyer_monthly"},
                                           {"card_daily", "card_monthly"}};
    for (int i = -1; i < cfg->nlimits; i++) {
        const char *cur = i < 0 ? NULL : cfg->limits[i].currency;
        for (size_t p = 0; p < 2; p++) {
            int64_t day = pc_config_limit(cfg, pairs[p][0], cur);
            int64_t month = pc_config_limit(cfg, pairs[p][1], cur);
            if (month >= day)
                continue;
            if (cur)
                snprintf(err, errlen,
                         "limits.by_currency.%s: %s (%lld) is below %s (%lld): give %s its own "
                         "%s",
                         cur, pairs[p][1], (long long)month, pairs[p][0], (long long)day, cur,
                         pairs[p][1]);
            else
                snprintf(err, errlen, "limits.%s (%lld) is below limits.%s (%lld)", pairs[p][1],
                         (long long)month, pairs[p][0], (long long)day);
            return PC_EINVAL;
        }
    }
    return 0;
}

/* limits.by_currency: {"CUR": {"buyer_daily"|"buyer_monthly"|"card_daily": N}}
 * with N in minor units of CUR, 0..10^15. */
static int parse_limits(pc_config_t *cfg, char *err, size_t errlen)
{
    for (size_t k = 0; k < NLIMITS; k++) {
        char opt[48];
        snprintf(opt, sizeof opt, "limits.%s", limit_names[k]);
        cfg->limit_opt[k] = find_opt(opt);
    }
    const char *text = cfg->v[find_opt("limits.by_currency")].s;
    json_error_t jerr;
    json_t *root = json_loads(text, 0, &jerr);
    int rc = 0;
    if (!json_is_object(root)) {
        snprintf(err, errlen, "limits.by_currency must be a JSON object of currencies: %s",
                 root ? "not an object" : jerr.text);
        rc = PC_EINVAL;
    }
    const char *cur;
    json_t *figures;
    json_object_foreach(rc ? NULL : root, cur, figures)
    {
        int ok = pc_currency_known(cur) && json_is_object(figures) &&
                 cfg->nlimits < MAX_LIMIT_CURRENCIES;
        currency_limits_t *l = &cfg->limits[cfg->nlimits];
        const char *name;
        json_t *v;
        json_object_foreach(ok ? figures : NULL, name, v)
        {
            size_t k = 0;
            while (k < NLIMITS && strcmp(limit_names[k], name))
                k++;
            if (k == NLIMITS || !json_is_integer(v) || json_integer_value(v) < 0 ||
                json_integer_value(v) > 1000000000000000) {
                snprintf(err, errlen,
                         "limits.by_currency.%s.%s: one of buyer_single, buyer_daily, "
                         "buyer_monthly, card_single, card_daily, card_monthly, a whole number "
                         "of minor units (0 to 10^15)",
                         cur, name);
                rc = PC_EINVAL;
                break;
            }
            l->value[k] = json_integer_value(v);
            l->set[k] = 1;
        }
        if (!ok) {
            snprintf(err, errlen,
                     "limits.by_currency: %s is not a currency code (three capital letters) with "
                     "an object of limits, or there are more than %d",
                     cur, MAX_LIMIT_CURRENCIES);
            rc = PC_EINVAL;
        }
        if (rc)
            break;
        snprintf(l->currency, sizeof l->currency, "%s", cur);
        cfg->nlimits++;
    }
    json_decref(root);
    return rc ? rc : check_limit_order(cfg, err, errlen);
}

int64_t pc_config_limit(const pc_config_t *cfg, const char *name, const char *currency)
{
    size_t k = 0;
    while (k < NLIMITS && strcmp(limit_names[k], name))
        k++;
    for (int i = 0; k < NLIMITS && currency && i < cfg->nlimits; i++)
        if (!strcmp(cfg->limits[i].currency, currency) && cfg->limits[i].set[k])
            return cfg->limits[i].value[k];
    return k < NLIMITS ? cfg->v[cfg->limit_opt[k]].i : pc_config_int(cfg, name);
}

pc_config_t *pc_config_load(const char *path, char *err, size_t errlen)
{
    pc_config_t *cfg = calloc(1, sizeof *cfg);
    if (!cfg) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < NOPTS; i++)
        if (parse_value(&opts[i], opts[i].def, &cfg->v[i], err, errlen, "default"))
            goto fail;
    if (path) {
        json_error_t jerr;
        json_t *root = json_load_file(path, 0, &jerr);
        if (!root) {
            snprintf(err, errlen, "%s:%d: %s", path, jerr.line, jerr.text);
            goto fail;
        }
        int rc = json_is_object(root) ? apply_json(cfg, root, "", path, err, errlen) : PC_EINVAL;
        if (rc && !json_is_object(root))
            snprintf(err, errlen, "%s: the top level must be an object", path);
        json_decref(root);
        if (rc)
            goto fail;
    }
    for (size_t i = 0; i < NOPTS; i++) {
        const char *e = opts[i].env ? getenv(opts[i].env) : NULL;
        /* Set but empty is most often a secrets template that rendered
         * nothing: refused, rather than quietly serving the default (a
         * database at 127.0.0.1, the demo token). An option whose default
         * is empty takes it. */
        if (e && !*e && opts[i].def[0]) {
            snprintf(err, errlen, "%s is set but empty: give it a value or unset it (%s)",
                     opts[i].env, opts[i].help);
            goto fail;
        }
        if (e && *e && parse_value(&opts[i], e, &cfg->v[i], err, errlen, opts[i].env))
            goto fail;
    }
    if (refuse_demo_secrets(cfg, err, errlen) < 0 || parse_limits(cfg, err, errlen) < 0)
        goto fail;
    if (path && !(cfg->path = strdup(path))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    return cfg;
fail:
    pc_config_free(cfg);
    return NULL;
}

void pc_config_free(pc_config_t *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < NOPTS; i++)
        free(cfg->v[i].s);
    free(cfg->path);
    free(cfg);
}

pc_config_t *pc_config_load_again(const pc_config_t *cfg, char *err, size_t errlen)
{
    return pc_config_load(cfg->path, err, errlen);
}

static int same_value(const opt_def_t *o, const opt_val_t *a, const opt_val_t *b)
{
    return o->type == OPT_STR ? !strcmp(a->s ? a->s : "", b->s ? b->s : "") : a->i == b->i;
}

void pc_config_take_runtime(pc_config_t *cfg, pc_config_t *fresh, json_t *changed, json_t *restart)
{
    for (size_t i = 0; i < NOPTS; i++) {
        if (same_value(&opts[i], &cfg->v[i], &fresh->v[i]))
            continue;
        /* Secrets are named, never shown. */
        json_array_append_new(opts[i].runtime ? changed : restart, json_string(opts[i].name));
        if (!opts[i].runtime)
            continue;
        opt_val_t keep = cfg->v[i];
        cfg->v[i] = fresh->v[i];
        fresh->v[i] = keep; /* freed with fresh */
    }
    memcpy(cfg->limits, fresh->limits, sizeof cfg->limits);
    cfg->nlimits = fresh->nlimits;
}

static int must_find(const char *name, opt_type_t type)
{
    int i = find_opt(name);
    if (i < 0 || opts[i].type != type) {
        fprintf(stderr, "paycore: config option %s missing or of another type\n", name);
        abort();
    }
    return i;
}

int64_t pc_config_int(const pc_config_t *cfg, const char *name)
{
    return cfg->v[must_find(name, OPT_INT)].i;
}

const char *pc_config_str(const pc_config_t *cfg, const char *name)
{
    return cfg->v[must_find(name, OPT_STR)].s;
}

int pc_config_bool(const pc_config_t *cfg, const char *name)
{
    return (int)cfg->v[must_find(name, OPT_BOOL)].i;
}

/* Comma-separated non-negative integers into out (at most max): their
 * number, or PC_EINVAL. */
static int parse_ms_list(const char *s, int64_t *out, int max)
{
    int n = 0;
    while (*s) {
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (errno || end == s || v < 0 || n >= max)
            return PC_EINVAL;
        out[n++] = v;
        s = end;
        while (*s == ',' || *s == ' ')
            s++;
    }
    return n;
}

int pc_config_ms_list(const pc_config_t *cfg, const char *name, int64_t *out, int max)
{
    return parse_ms_list(pc_config_str(cfg, name), out, max);
}

/* least to most delays, each a non-negative int32 (the jobs read them as a
 * PostgreSQL int[]). */
static bool delays_fit(const char *text, int least, int most)
{
    int64_t ms[PC_CONFIG_MAX_NOTIFY_DELAYS];
    int n = parse_ms_list(text, ms, most);
    for (int i = 0; i < n; i++)
        if (ms[i] > INT32_MAX)
            return false;
    return n >= least;
}

static bool delays_ok(const char *text)
{
    return delays_fit(text, 1, PC_CONFIG_MAX_DELAYS);
}

static bool delays_or_none_ok(const char *text)
{
    return delays_fit(text, 0, PC_CONFIG_MAX_NOTIFY_DELAYS);
}

int pc_config_parse_time_of_day(const char *text, int *minutes)
{
    int hh, mm;
    char extra;
    if (strlen(text) != 5 || sscanf(text, "%2d:%2d%c", &hh, &mm, &extra) != 2 || hh < 0 ||
        hh > 23 || mm < 0 || mm > 59 || text[2] != ':')
        return PC_EINVAL;
    *minutes = hh * 60 + mm;
    return 0;
}

int pc_utc_daily_due(int at_min, int days_back, char day[11])
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    if (tm.tm_hour * 60 + tm.tm_min < at_min)
        return 0;
    time_t then = now - (time_t)days_back * 86400;
    gmtime_r(&then, &tm);
    strftime(day, 11, "%Y-%m-%d", &tm);
    return 1;
}

static bool time_of_day_ok(const char *text)
{
    int m;
    return pc_config_parse_time_of_day(text, &m) == 0;
}

static bool log_level_ok(const char *text)
{
    pc_log_level_t level;
    return pc_log_parse_level(text, &level) == 0;
}
