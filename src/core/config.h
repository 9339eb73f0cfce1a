/* paycore configuration: every option is declared once in a table in config.c
 * (name, type, bounds, default, environment variable, whether it may change at
 * run time). Loading reads a JSON file, then environment overrides, validates
 * everything, and only then returns a new config object: a bad file or value
 * changes nothing. Needs jansson; reads the file synchronously, so call it
 * before the loop runs or from a worker thread. */
#ifndef PC_CORE_CONFIG_H
#define PC_CORE_CONFIG_H
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pc_config pc_config_t;

/* Loads path (NULL: defaults only) plus environment overrides. On failure
 * returns NULL and writes a message (file, option, reason) into err. Unless the
 * option demo is true, an admin token or cashier link key left at its public
 * demo default (or empty) is such a failure. The caller owns the result and
 * frees it with pc_config_free. */
pc_config_t *pc_config_load(const char *path, char *err, size_t errlen);
void pc_config_free(pc_config_t *cfg);

/* Reloading while serving (SIGHUP, POST /admin/reload). pc_config_load_again
 * reads cfg's file (the one it was loaded from) and the environment anew, as
 * pc_config_load does, into a new config: safe on a worker thread while cfg
 * serves. pc_config_take_runtime then, on the thread that reads cfg, takes
 * from fresh the options marked as changing at run time (the buyer and card
 * limits, limits.by_currency, log.level, cashier.hide_unavailable), appending
 * the names of those that changed to changed, and the names of other options
 * whose value differs (they need a restart; nothing of them is taken) to
 * restart. Names only: values may be secrets. The caller frees fresh. */
pc_config_t *pc_config_load_again(const pc_config_t *cfg, char *err, size_t errlen);
void pc_config_take_runtime(pc_config_t *cfg, pc_config_t *fresh, json_t *changed, json_t *restart);

/* Reads a boolean as options are written ("true"/"1"/"yes", "false"/"0"/
 * "no") into *out; returns 0, or -1 for anything else (NULL too). */
int pc_config_parse_bool(const char *text, int *out);

/* Accessors by option name; the option must exist and be of that type (a wrong
 * name is a programming error and aborts). Strings live as long as cfg. */
int64_t pc_config_int(const pc_config_t *cfg, const char *name);
const char *pc_config_str(const pc_config_t *cfg, const char *name);
int pc_config_bool(const pc_config_t *cfg, const char *name);

/* A buyer or card limit ("buyer_daily", "buyer_monthly", "card_daily") for
 * amounts in currency: the figure limits.by_currency sets for that currency,
 * else limits.<name> (one figure in minor units for every other currency). */
int64_t pc_config_limit(const pc_config_t *cfg, const char *name, const char *currency);

/* The most delays a schedule option (*.schedule_ms) holds; the
 * notifications' schedule may hold more. Each delay is at most INT32_MAX ms
 * (about 24 days): the jobs read them as a PostgreSQL int[]. */
#define PC_CONFIG_MAX_DELAYS 32
#define PC_CONFIG_MAX_NOTIFY_DELAYS 64

/* Comma-separated list of millisecond values (e.g. the notification retry
 * schedule) parsed into out (at most max); returns the count or PC_EINVAL.
 * The schedule options are checked at load: 1 to PC_CONFIG_MAX_DELAYS
 * values (notify.schedule_ms: 0 to PC_CONFIG_MAX_NOTIFY_DELAYS). */
int pc_config_ms_list(const pc_config_t *cfg, const char *name, int64_t *out, int max);

/* "HH:MM" (UTC, 00:00 to 23:59) as minutes after midnight; PC_EINVAL
 * otherwise. recon.daily_at is checked with it at load. */
int pc_config_parse_time_of_day(const char *text, int *minutes);

/* For a daily job due at at_min minutes into the UTC day: 1 when that time
 * of today has passed, with the date days_back days before today (UTC,
 * YYYY-MM-DD) in day; else 0 and day untouched. */
int pc_utc_daily_due(int at_min, int days_back, char day[11]);

#endif
