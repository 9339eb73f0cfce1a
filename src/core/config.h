/* paycore configuration: every option is declared once in a table in config.c
 * (name, type, bounds, default, environment variable, whether it may change at
 * run time). Loading reads a JSON file, then environment overrides, validates
 * everything, and only then returns a new config object: a bad file or value
 * changes nothing. Needs jansson; reads the file synchronously, so call it
 * before the loop runs or from a worker thread. */
#ifndef PC_CORE_CONFIG_H
#define PC_CORE_CONFIG_H
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

/* Accessors by option name; the option must exist and be of that type (a wrong
 * name is a programming error and aborts). Strings live as long as cfg. */
int64_t pc_config_int(const pc_config_t *cfg, const char *name);
const char *pc_config_str(const pc_config_t *cfg, const char *name);
int pc_config_bool(const pc_config_t *cfg, const char *name);

/* A buyer or card limit ("buyer_daily", "buyer_monthly", "card_daily") for
 * amounts in currency: the figure limits.by_currency sets for that currency,
 * else limits.<name> (one figure in minor units for every other currency). */
int64_t pc_config_limit(const pc_config_t *cfg, const char *name, const char *currency);

/* Comma-separated list of millisecond values (e.g. the notification retry
 * schedule) parsed into out (at most max); returns the count or PC_EINVAL. */
int pc_config_ms_list(const pc_config_t *cfg, const char *name, int64_t *out, int max);

#endif
