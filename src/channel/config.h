/* Channel configuration: one JSON file per payment channel in channels/,
 * loaded and reloaded as a set, with a runtime on/off switch per channel that
 * ops set on top of the files.
 *
 * A file channels/<id>.json:
 *
 *   {
 *     "id": "sim_card",                       must equal the file name; [a-z0-9_], <= 32
 *     "name": "Simulated card acquirer",
 *     "endpoint": "http://127.0.0.1:${PAYSIM_PORT:-8090}/ch/sim_card",
 *     "secret_ref": "PAYCORE_SECRET_SIM_CARD", name of the environment variable that
 *                                             holds the secret; never the secret itself
 *     "methods": ["CARD", "QUICK_PAY"],       subset of the method types below
 *     "currencies": ["CNY", "USD"],           ISO 4217, upper case
 *     "min_amount": 1, "max_amount": 5000000, integers, minor units, max >= min
 *     "fee": {"rate_bp": 60, "fixed": 0},     rate in basis points 0..10000, fixed >= 0
 *     "volume": {"daily": 50000000, "monthly": 900000000},   optional caps on what is
 *                                             sent per UTC day / month in each currency;
 *                                             either or both, monthly >= daily
 *     "by_currency": {"JPY": {"min_amount": 100, "max_amount": 300000,
 *                             "fee": {"fixed": 10}, "volume": {"daily": 9000000}}},
 *                                             optional: figures of a listed
 *                                             currency, in its own minor units; what an
 *                                             entry leaves out is the figure above
 *     "refund": {"methods": ["API"], "window_days": 180, "partial": true},
 *     "timeouts": {"connect_ms": 2000, "request_ms": 10000},   optional
 *     "weight": 100,                          optional, 0..1000, default 100
 *     "enabled": true,                        optional, default true
 *     "alert": {"failure_rate_bp": 500, "window_s": 300}       optional
 *   }
 *
 * Keys starting with "_" are comments and ignored; any other unknown key is
 * an error (a typo must not silently fall back to a default).
 *
 * Endpoint substitution: "${NAME}" and "${NAME:-default}" in endpoint are
 * replaced by the environment variable NAME when the set is loaded (the
 * default applies when NAME is unset or empty; NAME unset without a default
 * is an error). The demo channels use ${PAYSIM_PORT:-8090} so that tests can
 * run paysim on any port. Nothing else in a file is substituted.
 *
 * Reload is a transaction: every file is read and validated, and only a set
 * in which every file is valid (and ids are unique, at least one channel)
 * replaces the serving one; otherwise the old set keeps serving and the
 * errors (all of them, one per problem, "channels/<file>: message") are in
 * pc_channels_status.
 *
 * Threading: one loop thread uses the registry; pc_channels_reload_async
 * reads and validates files on a libuv worker thread and swaps on the loop
 * thread. Needs jansson, libuv (async reload only), OpenSSL libcrypto
 * (SHA-256 versions), core/log.h, core/metrics.h (pc_channel_reloads_total). */
#ifndef PC_CHANNEL_CONFIG_H
#define PC_CHANNEL_CONFIG_H
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct uv_loop_s;

/* Payment method types (api.md "Method types"). */
typedef enum {
    PC_METHOD_BALANCE = 0,
    PC_METHOD_COUPON,
    PC_METHOD_CARD,
    PC_METHOD_QUICK_PAY,
    PC_METHOD_AGREEMENT,
    PC_METHOD_NETBANK,
    PC_METHOD_VA,
    PC_METHOD_OTC,
    PC_METHOD_WALLET,
    PC_METHOD_QR_MERCHANT,
    PC_METHOD_QR_BUYER,
    PC_METHOD_COUNT
} pc_pay_method_t;

/* How a refund can run (system.md 2.4). */
typedef enum {
    PC_REFUND_API = 0,
    PC_REFUND_PAYOUT,
    PC_REFUND_FILE,
    PC_REFUND_OFFLINE,
    PC_REFUND_WAY_COUNT
} pc_refund_way_t;

/* Static upper-case names ("QUICK_PAY", "OFFLINE"); "?" when out of range. */
const char *pc_pay_method_name(pc_pay_method_t m);
const char *pc_refund_way_name(pc_refund_way_t w);
/* Return 0 and set *out for a known name, PC_EINVAL otherwise. */
int pc_pay_method_parse(const char *name, pc_pay_method_t *out);
int pc_refund_way_parse(const char *name, pc_refund_way_t *out);

#define PC_CHANNEL_MAX_CURRENCIES 16

/* What a channel takes and charges in one currency, in its minor units. */
typedef struct {
    int64_t min_amount, max_amount;
    int64_t fee_rate_bp, fee_fixed;
    /* Volume caps per UTC day and month ("volume"): 0 for none. */
    int64_t daily_volume, monthly_volume;
} pc_channel_amounts_t;

/* One validated channel file. Plain data: no pointers to free. */
typedef struct {
    char id[33];
    char name[129];
    char endpoint[513]; /* after ${...} substitution */
    char secret_ref[129];
    uint32_t methods; /* bit (1u << pc_pay_method_t) */
    char currencies[PC_CHANNEL_MAX_CURRENCIES][4];
    size_t ncurrencies;
    /* The file's figures; by_currency may give a currency others (amounts). */
    int64_t min_amount, max_amount;
    struct {
        int64_t rate_bp, fixed;
    } fee;
    struct {
        int64_t daily, monthly; /* 0: no cap */
    } volume;
    pc_channel_amounts_t amounts[PC_CHANNEL_MAX_CURRENCIES]; /* of currencies[i] */
    struct {
        uint32_t methods; /* bit (1u << pc_refund_way_t) */
        int64_t window_days;
        bool partial;
    } refund;
    struct {
        int64_t connect_ms, request_ms;
        /* Not from the file: the largest request_ms this node has loaded for
         * the channel since it started. A request sent under an earlier file
         * may be open that long, whatever the file says now. */
        int64_t open_ms;
    } timeouts;
    int64_t weight;
    bool enabled; /* the file's switch; see pc_channels_effective_enabled */
    struct {
        int64_t failure_rate_bp, window_s;
    } alert;
    char version[65]; /* SHA-256 hex of the file */
} pc_channel_t;

/* Parses and validates one channel file's content. label names the file in
 * messages (e.g. "channels/sim_card.json"); expected_id, when not NULL, is the
 * id the file must declare (its base name). Returns 0 with *out filled, or
 * PC_EINVAL after appending one {"file","message"} object per problem to
 * errors (which may be NULL). */
int pc_channel_parse(const char *label, const char *expected_id, const char *text, size_t len,
                     pc_channel_t *out, json_t *errors);

/* True when the channel takes this method type / currency / amount; with
 * currency NULL, the method type in any currency (binding a card, which moves
 * no money). */
bool pc_channel_accepts(const pc_channel_t *ch, pc_pay_method_t method, const char *currency,
                        int64_t amount);
bool pc_channel_supports_refund(const pc_channel_t *ch, pc_refund_way_t way);

/* The channel's figures for a currency, or NULL when it does not take it. */
const pc_channel_amounts_t *pc_channel_amounts(const pc_channel_t *ch, const char *currency);

/* The channel's fee for an amount in a currency it takes: amount * rate_bp /
 * 10000 rounded half up, plus fixed, with the currency's figures; 0 for a
 * currency it does not take. */
int64_t pc_channel_fee(const pc_channel_t *ch, const char *currency, int64_t amount);

/* A new JSON object with the channel's configuration (for GET
 * /admin/channels); the caller owns it. secret_ref is included, never a
 * secret. */
json_t *pc_channel_to_json(const pc_channel_t *ch);

/* ---- the set of channels ----------------------------------------------------- */

/* An immutable, loaded set of channels. Reference-counted so that a caller
 * can keep using a channel across callbacks while a reload swaps in a new
 * set. */
typedef struct pc_channel_set pc_channel_set_t;

size_t pc_channel_set_count(const pc_channel_set_t *set);
/* The i-th channel (sorted by id); valid while the set is referenced. */
const pc_channel_t *pc_channel_set_at(const pc_channel_set_t *set, size_t i);

/* The set's channel ids as a PostgreSQL array literal, "{a,b}" (ids are
 * [a-z0-9_]: safe unquoted), into out; returns how many, or -1 when out is
 * too small (out then holds "{}"). */
int pc_channel_set_ids_literal(const pc_channel_set_t *set, char *out, size_t cap);
/* The channel with this id or NULL; valid while the set is referenced. */
const pc_channel_t *pc_channel_set_find(const pc_channel_set_t *set, const char *id);
/* SHA-256 over every file's name and hash; static for the set's life. */
const char *pc_channel_set_version(const pc_channel_set_t *set);
void pc_channel_set_release(pc_channel_set_t *set);

/* Reads and validates every *.json in dir as one set. Returns 0 and a new set
 * the caller owns (release with pc_channel_set_release), or PC_EINVAL (any
 * file invalid, duplicate ids, no channel) / PC_EIO (dir unreadable) with
 * every problem appended to errors (may be NULL) as {"file","message"}.
 * Outside demo mode (flags without PC_CHANNELS_DEMO) a channel whose
 * secret_ref names an environment variable that is not set is invalid
 * (without it the channel would sign and verify with the public demo
 * secret, and anyone could forge its callbacks) unless
 * PC_CHANNELS_SECRETS_ELSEWHERE (payctl checking files on a machine that
 * does not hold the secrets), and so is an endpoint of plain http:// to
 * another machine. Touches no global state: safe on a worker thread. */
enum {
    PC_CHANNELS_DEMO = 1,              /* public demo secrets and plain http accepted */
    PC_CHANNELS_SECRETS_ELSEWHERE = 2, /* a secret not set here is not checked */
};
int pc_channel_set_load(const char *dir, unsigned flags, pc_channel_set_t **out, json_t *errors);

/* ---- the registry: serving set, runtime switches, reload, status ----------- */

typedef struct pc_channels pc_channels_t;

/* Creates a registry for the files in dir; nothing is loaded until a reload.
 * demo_secrets: channels whose secret is not in the environment are loaded
 * and use the public demo secret (development and tests only). Returns NULL
 * on allocation failure; free with pc_channels_free. */
pc_channels_t *pc_channels_new(const char *dir, bool demo_secrets);

/* Whether the registry accepts the public demo secrets (pc_channels_new). */
bool pc_channels_demo_secrets(const pc_channels_t *chs);

/* Frees the registry. With an async reload still running the memory goes when
 * it finishes (the loop must run) and its callbacks get PC_ECLOSED. Sets
 * acquired by callers stay valid until they release them. */
void pc_channels_free(pc_channels_t *chs);

/* Loads the directory synchronously and swaps the set in if every file is
 * valid. Returns 0, or the error of pc_channel_set_load (the old set keeps
 * serving; the errors are in pc_channels_status). */
int pc_channels_reload(pc_channels_t *chs);

typedef void (*pc_channels_reload_cb)(pc_channels_t *chs, int status, void *data);

/* The same with reading and validation on a worker thread of loop; cb (may be
 * NULL) runs on the loop thread after the swap (or refusal), or with
 * PC_ECLOSED when the registry was freed. Requests made while one runs share a
 * second run. Returns 0 or a negative PC_E code (then cb is never called). */
int pc_channels_reload_async(pc_channels_t *chs, struct uv_loop_s *loop, pc_channels_reload_cb cb,
                             void *data);

/* The serving set, or NULL before the first successful load. Borrowed: valid
 * until the next reload swap; take a reference with pc_channels_acquire to
 * keep it longer. */
const pc_channel_set_t *pc_channels_current(const pc_channels_t *chs);

/* A new reference to the serving set (NULL if none); release it with
 * pc_channel_set_release. */
pc_channel_set_t *pc_channels_acquire(pc_channels_t *chs);

/* The channel with this id in the serving set, or NULL. Borrowed like
 * pc_channels_current. */
const pc_channel_t *pc_channels_find(const pc_channels_t *chs, const char *id);

/* Sets the ops switch of a channel: 1 enabled, 0 disabled, -1 no override
 * (the file's "enabled" applies). Overrides are kept across reloads (the
 * server also stores them durably and re-applies them at start). Returns 0,
 * PC_ENOTFOUND when no channel has this id in the serving set, PC_EINVAL for
 * another value. */
int pc_channels_set_override(pc_channels_t *chs, const char *id, int enabled_or_minus1_for_none);

/* The override for id: 1, 0, or -1 when there is none. */
int pc_channels_override(const pc_channels_t *chs, const char *id);

/* Whether the channel may take payments now: the ops override if there is
 * one, else the file's "enabled". False for an unknown id. */
bool pc_channels_effective_enabled(const pc_channels_t *chs, const char *id);

/* How many channel files a set may hold: a caller of pc_channels_match with
 * room for this many sees every channel that matches. */
#define PC_CHANNELS_MAX 256

/* Fills out (up to max) with the effectively enabled channels of the serving
 * set that accept this method, currency and amount (pc_channel_accepts:
 * currency NULL for the method in any currency), sorted by id; returns how
 * many matched (which may exceed max). Pointers are borrowed like
 * pc_channels_current. */
size_t pc_channels_match(const pc_channels_t *chs, pc_pay_method_t method, const char *currency,
                         int64_t amount, const pc_channel_t **out, size_t max);

/* The same, switched on or not: the channels configured to take the payment. */
size_t pc_channels_configured(const pc_channels_t *chs, pc_pay_method_t method,
                              const char *currency, int64_t amount, const pc_channel_t **out,
                              size_t max);

/* Volume caps ("volume" in a channel file, per currency). What a channel
 * was sent in a currency in a UTC day ("YYYY-MM-DD") or month ("YYYY-MM")
 * is counted in PostgreSQL (channel_volume, taken exactly just before a
 * payment is sent: channel_volume_take); each node keeps its last reading
 * here, refreshed about every second and after each take, to leave full
 * channels out of what the cashier offers and routes. Kept across reloads. */
void pc_channels_note_volume(pc_channels_t *chs, const char *id, const char *currency,
                             const char *period, int64_t used);
/* Whether amount more fits under ch's caps in currency by the last reading
 * (true for a channel without caps); now is Unix seconds (UTC periods). */
bool pc_channels_volume_room(const pc_channels_t *chs, const pc_channel_t *ch, const char *currency,
                             int64_t amount, int64_t now);
/* A capped currency of a channel by this node's last reading: what was sent
 * in the UTC day and month that hold now, and the caps (0: none). */
typedef struct {
    const char *currency; /* borrowed from the channel */
    char day[11], month[8];
    int64_t day_sent, daily, month_sent, monthly;
} pc_channel_volume_t;
/* Fills out for ch's currency i (0 .. ncurrencies-1); false when that
 * currency has no cap. */
bool pc_channels_volume_at(const pc_channels_t *chs, const pc_channel_t *ch, size_t i, int64_t now,
                           pc_channel_volume_t *out);
/* For GET /admin/channels: each capped currency of ch, {"day", "day_sent",
 * "daily", "month", "month_sent", "monthly"} by this node's last reading (a
 * cap null when there is none). A new object. */
json_t *pc_channels_volume_json(const pc_channels_t *chs, const pc_channel_t *ch, int64_t now);
/* Whether any channel of the serving set has a volume cap. */
bool pc_channels_capped(const pc_channels_t *chs);

/* Status for the admin API, a new object the caller owns:
 * {"status":"ok"|"refused"|"missing", "version", "loaded_at", "channels": n,
 *  "errors": [{"file","message"}]} (errors of the last refused reload, else []). */
json_t *pc_channels_status(const pc_channels_t *chs);

#endif
