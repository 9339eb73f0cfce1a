/* One loaded rule (internal to rules/): a rule file compiled into its own
 * sandbox, with its version, proven against its examples. Built from files by
 * pc__rule_build, which is safe to run on a worker thread (it touches no
 * global state: no logging, no metrics), and invoked on the thread that owns
 * it.
 *
 * Needs rules/sandbox.h, rules/points.h, rules/examples.h and OpenSSL
 * libcrypto (SHA-256). */
#ifndef PC_RULES_RULE_H
#define PC_RULES_RULE_H
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "rules/points.h"
#include "rules/rules.h"
#include "rules/sandbox.h"

/* Rule and example files larger than this are refused. */
#define PC_RULES_MAX_FILE (1u << 20)
/* pc_rules_opts_t.max_example_us when not set. */
#define PC_RULES_DEFAULT_MAX_EXAMPLE_US 2000

typedef struct pc__rule {
    const pc__point_t *point;
    pc__sandbox_t *sb;
    int ref;                /* registry reference of the compiled chunk */
    char version[65];       /* SHA-256 hex of the rule file */
    char examples_hash[65]; /* SHA-256 hex of its examples file */
    size_t examples;        /* how many examples it passed */
    time_t loaded_at;       /* wall-clock time of the swap, set by the engine */
} pc__rule_t;

/* What building one rule produced. */
typedef struct {
    pc__rule_t *rule; /* the new rule, owned by the build until taken; NULL if none */
    bool unchanged;   /* files identical to the skip hashes: nothing was built */
    bool missing;     /* the rule file does not exist */
    char version[65]; /* hash of the file read ("" if unreadable) */
    char examples_hash[65];
    pc_rule_error_t error; /* why it was refused (when !rule && !unchanged) */
    json_t *report;        /* per-example results when asked for, else NULL */
} pc__build_t;

/* Reads dir/<rule>.lua and dir/tests/<rule>.json, compiles the rule and runs
 * the examples. When both file hashes equal skip_version / skip_examples
 * (either may be NULL), stops early with unchanged set. With want_report the
 * per-example results are kept in out->report. Always fills *out; release it
 * with pc__build_clear. */
void pc__rule_build(const char *dir, pc_rule_id_t id, const pc_rules_opts_t *opts,
                    const char *skip_version, const char *skip_examples, bool want_report,
                    pc__build_t *out);

/* Frees whatever the build still owns (a rule not taken, the report). */
void pc__build_clear(pc__build_t *build);

void pc__rule_free(pc__rule_t *rule);

/* Calls the rule. Always fills *out (the safe default when the outcome is not
 * OK; elapsed_ns is left to the caller). When raw is not NULL and the answer
 * is malformed, *raw receives the answer as the rule gave it (a new reference
 * the caller owns), else NULL. Returns 0, or PC_EINVAL when the
 * input was refused (wrong JSON shape, ids missing or repeated, integers
 * beyond 2^53). With typed (list NULL), the list is given as C values and
 * the answer, or the safe default, goes into typed->answer. */
int pc__rule_invoke(pc__rule_t *rule, const json_t *ctx, const json_t *list,
                    const pc__typed_list_t *typed, pc_rule_result_t *out, json_t **raw);

/* Fills *out with the safe default of a decision point for a call that could
 * not run, with the given outcome and message. */
void pc__rule_fallback(const pc__point_t *pt, const json_t *ctx, const json_t *list,
                       const pc__typed_list_t *typed, pc_rule_outcome_t outcome, const char *file,
                       const char *message, pc_rule_result_t *out);

#endif
