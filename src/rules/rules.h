/* The rules engine: business decisions written in Lua by product staff, run
 * by paycore in a sandbox, reloaded while payments flow.
 *
 * Four decision points, each one file under the rules directory that returns
 * one function (api.md, "Rules"):
 *
 *   cashier_rank   (ctx, methods)    -> methods, reordered / filtered / flagged
 *   risk           (ctx)             -> {decision, score, reasons}
 *   route          (ctx, candidates) -> {channel_id, ...} in order of preference
 *   refund_method  (ctx)             -> "API" | "PAYOUT" | "FILE" | "OFFLINE"
 *
 * The C caller fills the context (all I/O is done in C; rules are pure), the
 * engine converts it to Lua tables, runs the rule under an instruction, time
 * and memory budget, validates the answer and returns it as JSON together with
 * a typed outcome. Every outcome other than PC_RULE_OK comes with the decision
 * point's documented safe default as the answer, so a caller always gets a
 * usable decision:
 *
 *   cashier_rank   the input methods, unchanged, in their original order
 *                  (a copy of the array; the method objects are shared); an
 *                  answer that recommends a method given with available=false
 *                  is malformed
 *   risk           {"decision":"REVIEW","score":1000,"reasons":["RULE_<OUTCOME>"]}
 *                  (never ACCEPT; 1000 is the highest score an answer may have)
 *   route          the candidates' ids, healthy first, then by success_rate_bp
 *                  (highest first), ties in input order
 *   refund_method  "OFFLINE" (manual handling is always possible)
 *
 * The context fields each rule receives are documented at the top of each
 * rule file; those comments are the contract between C callers and rules.
 *
 * Reload is a transaction per rule: the file is read, hashed (the version is
 * the SHA-256 of the file content), compiled into a fresh sandboxed state and
 * run against its examples (rules/tests/<rule>.json); only a rule that passes
 * all its examples, none of them slower than max_example_us of CPU, replaces
 * the serving one. A refused rule keeps its old
 * version serving and reports why in pc_rules_status().
 *
 * Threading: calls, status and reload swaps happen on one thread (the loop
 * thread). pc_rules_reload_async() does file reading, compilation and
 * examples on a libuv worker thread and swaps on the loop thread.
 *
 * Needs: LuaJIT, jansson, libuv (for the async reload only), OpenSSL libcrypto
 * (SHA-256), core/log.h and core/metrics.h (pc_rules_calls_total,
 * pc_rule_reloads_total, pc_rules_seconds). */
#ifndef PC_RULES_RULES_H
#define PC_RULES_RULES_H
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct uv_loop_s;

typedef enum {
    PC_RULE_CASHIER_RANK = 0,
    PC_RULE_RISK,
    PC_RULE_ROUTE,
    PC_RULE_REFUND_METHOD,
    PC_RULE_COUNT
} pc_rule_id_t;

/* How a call ended (modelled on haproxy's enum hlua_exec). */
typedef enum {
    PC_RULE_OK = 0,    /* the rule answered and the answer is valid */
    PC_RULE_ERROR,     /* the rule raised an error, is not loaded, or the input was refused */
    PC_RULE_TIMEOUT,   /* instruction or wall-clock budget exhausted */
    PC_RULE_OOM,       /* the state's memory cap was reached */
    PC_RULE_MALFORMED, /* the rule answered something the decision point does not accept */
} pc_rule_outcome_t;

/* Where a failure happened. file is "rules/<rule>.lua" (or the examples file)
 * and line is 0 when unknown. */
typedef struct {
    char message[320];
    char file[96];
    int line;
} pc_rule_error_t;

typedef struct {
    pc_rule_outcome_t outcome;
    /* The validated answer, or the safe default when outcome != PC_RULE_OK.
     * Owned by the result (release with pc_rule_result_clear); may share
     * unmodified elements with the input list. */
    json_t *answer;
    /* SHA-256 hex of the rule file that decided, "" when no version is loaded. */
    char version[65];
    pc_rule_error_t error; /* empty when outcome == PC_RULE_OK */
    uint64_t elapsed_ns;
} pc_rule_result_t;

/* Limits per rule state; zero fields take the defaults shown. */
typedef struct {
    uint64_t timeout_us;       /* time budget per call, default 10000 (10 ms); see sandbox.h */
    uint64_t max_instructions; /* VM instruction budget per call, default 1000000 */
    size_t memory_limit;       /* bytes per state, default 16 MiB */
    /* A version whose examples cost more CPU than this per call (the least
     * of three tries) is refused as too slow: a rule that is correct but
     * takes milliseconds holds up every consult or pay on the loop thread.
     * Default 2000 (2 ms, a fifth of the time budget); UINT64_MAX: no limit. */
    uint64_t max_example_us;
    /* Enforce the memory cap from the instruction hook (lua_gc count) instead
     * of the allocator wrapper. Weaker (see rules/sandbox.h); only for a
     * LuaJIT without a working lua_setallocf. Default false. */
    bool cap_from_hook;
    /* Convert every list argument through the C API (rules/convert.h), never
     * through the JIT-compiled list builder (rules/records.h). Slower, the
     * same answers; for tests that compare the two, and a way out should a
     * LuaJIT build misbehave with its JIT on. Default false. */
    bool plain_lists;
} pc_rules_opts_t;

/* rules.max_example_us as configured (0: no limit) as max_example_us. */
uint64_t pc_rules_example_limit(int64_t configured_us);

typedef struct pc_rules pc_rules_t;

/* Static names: "cashier_rank", "risk", "route", "refund_method". */
const char *pc_rule_name(pc_rule_id_t id);
/* Returns 0 and sets *out for a known rule name, PC_ENOTFOUND otherwise. */
int pc_rule_from_name(const char *name, pc_rule_id_t *out);
/* Static lower-case names: "ok", "error", "timeout", "oom", "malformed". */
const char *pc_rule_outcome_name(pc_rule_outcome_t outcome);

/* Creates an engine for the rule files in dir (e.g. "rules"; examples are read
 * from dir/tests). Nothing is loaded until pc_rules_reload or
 * pc_rules_reload_async. opts may be NULL (defaults). Returns NULL on
 * allocation failure. The caller owns the engine; free with pc_rules_free. */
pc_rules_t *pc_rules_new(const char *dir, const pc_rules_opts_t *opts);

/* Frees the engine and every loaded state. If an async reload is still running
 * on a worker thread, the memory is released when it finishes (the loop must
 * keep running until then) and its callbacks get PC_ECLOSED. */
void pc_rules_free(pc_rules_t *rules);

/* Reloads every rule synchronously on the calling thread (payctl, tests,
 * startup). Rules whose file and examples are unchanged are kept as they are.
 * Returns 0 when every rule is loaded and current, PC_EINVAL when at least one
 * was refused (its old version, if any, keeps serving; details in
 * pc_rules_status). */
int pc_rules_reload(pc_rules_t *rules);

/* Called on the loop thread when an async reload has been applied. status is
 * as for pc_rules_reload, or PC_ECLOSED if the engine was freed meanwhile (do
 * not touch rules then). */
typedef void (*pc_rules_reload_cb)(pc_rules_t *rules, int status, void *data);

/* Reloads on a worker thread of loop and swaps on the loop thread, then calls
 * cb (which may be NULL). A request made while one is running is served by a
 * second run started when the first ends (requests made meanwhile share it).
 * Returns 0, or a negative PC_E code (and then never calls cb). */
int pc_rules_reload_async(pc_rules_t *rules, struct uv_loop_s *loop, pc_rules_reload_cb cb,
                          void *data);

/* Status for the admin API: a new array the caller owns, one object per rule:
 * {"name","version","loaded_at","status","examples","last_error"} where
 * status is "ok" (the file on disk is what serves), "refused" (the last
 * attempt failed; version is the one still serving, or null) or "missing"
 * (never loaded), and last_error is {"file","line","message"} or null;
 * "refused_version" names the refused file's hash when there is one. */
json_t *pc_rules_status(pc_rules_t *rules);

/* True when all four rules have a loaded version (for /readyz). */
bool pc_rules_ready(const pc_rules_t *rules);

/* The serving version of a rule (SHA-256 hex), or "" if none. The string is
 * owned by the engine and valid until the next reload swap. */
const char *pc_rules_version(const pc_rules_t *rules, pc_rule_id_t id);

/* The decision points. ctx must be a JSON object (filled as documented at the
 * top of the rule file); list is the methods / candidates array. The caller
 * keeps ownership of ctx and list. *out is always filled (answer is the safe
 * default when the outcome is not OK) and must be released with
 * pc_rule_result_clear. Returns 0, or PC_EINVAL when the input is refused
 * (wrong JSON type, list elements without a string id or with repeated ids,
 * integers beyond 2^53); *out then holds the safe default with
 * PC_RULE_ERROR. */
int pc_rules_cashier_rank(pc_rules_t *rules, const json_t *ctx, const json_t *methods,
                          pc_rule_result_t *out);
/* cashier_rank over methods given as C values rather than JSON: what the
 * cashier assembles (cashier/consult.c) goes to the rule without being
 * written into JSON objects and read back out of them, and the answer comes
 * back as positions. The rule sees exactly the tables pc_rules_cashier_rank
 * would give it for the same methods as pc_rank_method_json makes them, and
 * every outcome, version and error is the same (test_rules_records compares
 * the two). Texts are UTF-8, as JSON's are (one that is not is refused
 * where the call needs the methods as JSON). */
#define PC_RANK_NO_AMOUNT INT64_MIN
typedef struct {
    const char *method_id;                          /* required, unique in the list */
    const char *type, *label, *reason, *channel_id; /* NULL: absent */
    int64_t max_amount;                             /* minor units; PC_RANK_NO_AMOUNT: absent */
    signed char available;   /* 1 (any positive) true, 0 false, -1 (any negative) absent */
    signed char recommended; /* likewise */
    /* A method with more than these fields (a bound card's or a coupon's
     * object) as its whole JSON object; the fields above are then ignored. */
    const json_t *object;
} pc_rank_method_t;

/* The method as a new JSON object: object's copy when set, else the fields
 * that are present (NULL when out of memory or a text is not UTF-8). */
json_t *pc_rank_method_json(const pc_rank_method_t *m);

/* The answer of pc_rules_cashier_rank_methods: order[0..count) are input
 * positions in the rule's order (methods it left out are hidden), and
 * recommended[i] the flag of order[i]. The caller gives room for n of each.
 * On any outcome but PC_RULE_OK it is the safe default: every method in
 * input order with its own flag (absent: false). */
typedef struct {
    size_t *order;
    unsigned char *recommended;
    size_t count;
} pc_rank_answer_t;

/* As pc_rules_cashier_rank; out->answer stays NULL, the answer is in *ans. */
int pc_rules_cashier_rank_methods(pc_rules_t *rules, const json_t *ctx,
                                  const pc_rank_method_t *methods, size_t n, pc_rank_answer_t *ans,
                                  pc_rule_result_t *out);

int pc_rules_risk(pc_rules_t *rules, const json_t *ctx, pc_rule_result_t *out);
int pc_rules_route(pc_rules_t *rules, const json_t *ctx, const json_t *candidates,
                   pc_rule_result_t *out);
int pc_rules_refund_method(pc_rules_t *rules, const json_t *ctx, pc_rule_result_t *out);

/* The same for any decision point; list is ignored (may be NULL) for risk and
 * refund_method. */
int pc_rules_call(pc_rules_t *rules, pc_rule_id_t id, const json_t *ctx, const json_t *list,
                  pc_rule_result_t *out);

/* Releases the answer held by a result; the struct may be reused. */
void pc_rule_result_clear(pc_rule_result_t *result);

/* Loads every rule in dir into throw-away states and runs its examples, for
 * `payctl rules test`. Returns a new object the caller owns:
 * {"ok":bool, "rules":[{"name","file","version","ok","error":{file,line,message}|null,
 *   "examples":[{"name","line","ok","expected","got","outcome","error"}]}]}. */
json_t *pc_rules_test_dir(const char *dir, const pc_rules_opts_t *opts);

#endif
