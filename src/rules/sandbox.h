/* One sandboxed LuaJIT state for one rule file (internal to rules/).
 *
 * What a rule can reach is an allow-list: the safe base functions, string
 * (without dump), table and math (without random), and the paycore helper
 * table (lib.h), each behind a read-only proxy. The rule's environment errors
 * on reads of undeclared globals and on every global write. The chunk is run
 * afresh on every call, so upvalues and module-level tables cannot carry state
 * from one call to the next.
 *
 * Budgets: the JIT is switched off for the state (LuaJIT does not run count
 * hooks inside compiled traces), an instruction-count hook enforces both an
 * instruction budget and a wall-clock deadline (confirmed against the
 * thread's CPU time, so that a thread preempted on a busy machine does not
 * time out a rule that is not running), and an allocator wrapper refuses
 * growth past the memory cap. Work done in C, where the hook never fires, is
 * bounded by the guards in lib.h and charged to the time budget; and once a
 * call allocates a large object (a long string, a long list), whose every use
 * is work in C in proportion to its size, the hook fires every few
 * instructions for the rest of the call.
 *
 * About the allocator: Debian's LuaJIT 2.1 is a GC64 build, whose
 * lua_newstate accepts a custom allocator; non-GC64 x86_64 builds refuse one
 * (lua_newstate returns NULL). Rather than depend on that, the state is made
 * with luaL_newstate and its own allocator is wrapped with lua_setallocf: the
 * wrapper counts every byte and refuses growth past the cap, the memory still
 * comes from LuaJIT's allocator. That works on both kinds of build and is
 * faster than malloc. The option cap_from_hook instead checks
 * lua_gc(LUA_GCCOUNT) from the hook, a weaker cap (one C library call between
 * two hook ticks can overshoot it; string.rep is guarded separately) kept for
 * embedders whose LuaJIT has no working lua_setallocf.
 *
 * A state is used by one thread at a time. Needs LuaJIT and rules/lib.h. */
#ifndef PC_RULES_SANDBOX_H
#define PC_RULES_SANDBOX_H
#include <jansson.h>
#include <lua.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rules/records.h"
#include "rules/rules.h"

typedef struct pc__sandbox {
    lua_State *L;
    char rule_name[32];
    char file[96]; /* "rules/<rule>.lua": the chunk name without '@' */
    /* Memory accounting (allocator mode) and limits. */
    size_t used, limit;
    bool cap_from_hook;
    lua_Alloc next_alloc; /* LuaJIT's own allocator, which ours wraps */
    void *next_ud;
    /* Per-call budget, reset by each call. */
    uint64_t max_instructions, instructions;
    uint64_t timeout_ns, deadline_ns, wall_start_ns;
    uint64_t cpu_mark_ns, before_mark_ns; /* see time_budget_spent in sandbox.c */
    bool timed_out, oom, tight_hook;
    int hook_every; /* instructions between two hook ticks, now */
    /* Library calls that call back into the rule, open now (lib.c), and the
     * estimated C work not yet compared with the clock; reset by each call. */
    int nesting;
    double c_steps;
    int log_lines; /* paycore.log lines this call wrote (PC_RULES_LOG_LINES at most) */
    /* Where memory ran out, found from the allocator when it refuses. */
    char oom_file[96];
    int oom_line;
    /* paycore.log is silent while examples run on a worker thread (core/log.h
     * is not thread-safe). */
    bool quiet;
    int env_ref;     /* registry ref of the rule environment proxy */
    int handler_ref; /* registry ref of the rule error message handler */
    struct pc__run *run;
    /* The argument builders (records.h) of the list and of ctx, when the
     * decision point has them; jit: the JIT is on in this state then, and
     * every rule chunk is kept out of it. */
    pc__records_t *records, *ctx_records;
    bool jit;
    /* Set while paycore's own Lua code runs in a call (argument builders,
     * checker): the hook does not count it, and a large allocation tightens
     * the hook only when the rule starts (large_deferred). */
    bool trusted, large_deferred;
} pc__sandbox_t;

/* Creates a state for rule_name with the given limits (zero fields take the
 * engine defaults). Returns NULL and writes a reason into err on failure. The
 * caller owns the sandbox (pc__sandbox_free). */
pc__sandbox_t *pc__sandbox_new(const char *rule_name, const pc_rules_opts_t *opts, char *err,
                               size_t errlen);
void pc__sandbox_free(pc__sandbox_t *sb);

/* Gives the state builders for lists and for ctx of the given shapes
 * (records.h; either may be NULL), used by push_args through
 * pc__call_t.records and ctx_records, and switches the JIT on (the Lua
 * functions of the libraries rules see are kept out of it first; rule chunks
 * are when loaded). Call before loading any rule. Returns 0; or -1 with err
 * filled and the state as it was (no builder, the JIT off), still usable. */
int pc__sandbox_use_records(pc__sandbox_t *sb, const pc__record_shape_t *list,
                            const pc__record_shape_t *ctx, char *err, size_t errlen);

/* Compiles text (source only: bytecode is refused) as chunk "@rules/<rule>.lua"
 * with the sandbox environment. Returns a registry reference to the chunk, or
 * -1 with err filled (file and line of a syntax error). */
int pc__sandbox_load(pc__sandbox_t *sb, const char *text, size_t len, pc_rule_error_t *err);

/* What a decision point does around the rule call. Both callbacks run in
 * protected mode inside the call and may raise Lua errors (e.g. out of
 * memory). */
typedef struct {
    const char *ptr;
    size_t pos;
} pc__id_entry_t;

/* A cashier_rank call over methods given as C values (rules.h), and where
 * its checked answer goes. */
typedef struct {
    const pc_rank_method_t *methods;
    size_t n;
    pc_rank_answer_t *answer;
} pc__typed_list_t;

typedef struct pc__call pc__call_t;
struct pc__call {
    /* Pushes values the rule must not see (they stay below the rule function
     * for the whole call, e.g. anchored ids), then the rule's arguments;
     * returns the number of arguments, or -1 after writing why the input
     * cannot be passed into detail. */
    int (*push_args)(lua_State *L, pc__call_t *call);
    /* Validates the answer at idx; returns 0 after setting answer, or -1 after
     * writing what is wrong into detail. */
    int (*check)(lua_State *L, pc__call_t *call, int idx);
    const json_t *ctx;
    const json_t *list;
    /* Instead of list (NULL then): methods as C values, the answer written
     * into typed->answer (answer stays NULL). A path that needs the list as
     * JSON makes it into typed_json (owned by the call) and points list at
     * it. */
    const pc__typed_list_t *typed;
    json_t *typed_json;
    pc__records_t *records;     /* the state's list builder or NULL, set by the sandbox */
    pc__records_t *ctx_records; /* its ctx builder or NULL, likewise */
    int ids_table;              /* stack index of the records' ids table (points.c), or 0 */
    json_t *answer;             /* owned by the caller after the call */
    char detail[256];
    /* The list elements' interned id strings in input order (points.c), and
     * a sorted index of them for long lists. Released by the sandbox. */
    const char **ids;
    size_t nids;
    pc__id_entry_t *id_index;
    const char *ids_small[32];
    bool input_refused; /* set by the sandbox when push_args refused */
    /* When want_raw is set and the answer is malformed, the answer as the
     * rule gave it, for showing to a person (owned by the caller). */
    bool want_raw;
    json_t *raw;
};

/* Forgets the list ids a call recorded (points.c), freeing what was
 * allocated for them. */
void pc__call_forget_ids(pc__call_t *call);

/* Runs the chunk ref (which returns the rule function) and the rule with the
 * call's arguments under the budgets. Returns the outcome; err is filled for
 * anything but PC_RULE_OK, call->answer is set only for PC_RULE_OK. */
pc_rule_outcome_t pc__sandbox_call(pc__sandbox_t *sb, int ref, pc__call_t *call,
                                   pc_rule_error_t *err);

/* Counts steps of work a library function did in C, where the instruction
 * hook cannot see it, against the call's time budget: every 10^4 steps the
 * clock is read as the hook would, and once the budget is spent the call
 * stops as PC_RULE_TIMEOUT (a Lua error is raised from L). */
void pc__sandbox_charge(pc__sandbox_t *sb, lua_State *L, double steps);

/* The sandbox running on this thread right now, or NULL (for lib.c helpers). */
pc__sandbox_t *pc__sandbox_current(void);

/* CPU time of the calling thread in nanoseconds (a system call: the budget
 * reads it only once a call is getting long; examples time each call). */
uint64_t pc__thread_cpu_ns(void);

#endif
