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
 * instruction budget and a wall-clock deadline, and a custom allocator refuses
 * growth past the memory cap. LuaJIT builds without GC64 refuse a custom
 * allocator in lua_newstate; there the cap is checked from the hook with
 * lua_gc(LUA_GCCOUNT) instead, which can be overshot by a single C library
 * call between two hook ticks (string.rep is guarded separately).
 *
 * A state is used by one thread at a time. Needs LuaJIT and rules/lib.h. */
#ifndef PC_RULES_SANDBOX_H
#define PC_RULES_SANDBOX_H
#include <jansson.h>
#include <lua.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rules/rules.h"

typedef struct pc__sandbox {
    lua_State *L;
    char rule_name[32];
    char file[96]; /* "rules/<rule>.lua": the chunk name without '@' */
    /* Memory accounting (allocator mode) and limits. */
    size_t used, limit;
    bool cap_from_hook;
    /* Per-call budget, reset by each call. */
    uint64_t max_instructions, instructions;
    uint64_t timeout_ns, deadline_ns;
    bool timed_out, oom, tight_hook;
    /* Where memory ran out, found from the allocator when it refuses. */
    char oom_file[96];
    int oom_line;
    /* paycore.log is silent while examples run on a worker thread (core/log.h
     * is not thread-safe). */
    bool quiet;
    int env_ref; /* registry ref of the rule environment proxy */
    struct pc__run *run;
} pc__sandbox_t;

/* Creates a state for rule_name with the given limits (zero fields take the
 * engine defaults). Returns NULL and writes a reason into err on failure. The
 * caller owns the sandbox (pc__sandbox_free). */
pc__sandbox_t *pc__sandbox_new(const char *rule_name, const pc_rules_opts_t *opts, char *err,
                               size_t errlen);
void pc__sandbox_free(pc__sandbox_t *sb);

/* Compiles text (source only: bytecode is refused) as chunk "@rules/<rule>.lua"
 * with the sandbox environment. Returns a registry reference to the chunk, or
 * -1 with err filled (file and line of a syntax error). */
int pc__sandbox_load(pc__sandbox_t *sb, const char *text, size_t len, pc_rule_error_t *err);

/* What a decision point does around the rule call. Both callbacks run in
 * protected mode inside the call and may raise Lua errors (e.g. out of
 * memory). hidden is a stack slot the point may fill (lua_replace) with values
 * the rule must not see, such as an index of the input list. */
typedef struct pc__call pc__call_t;
struct pc__call {
    /* Pushes the rule's arguments; returns their count, or -1 after writing
     * why the input cannot be passed into detail. */
    int (*push_args)(lua_State *L, pc__call_t *call, int hidden);
    /* Validates the answer at idx; returns 0 after setting answer, or -1 after
     * writing what is wrong into detail. */
    int (*check)(lua_State *L, pc__call_t *call, int idx, int hidden);
    const json_t *ctx;
    const json_t *list;
    json_t *answer; /* owned by the caller after the call */
    char detail[256];
};

/* Runs the chunk ref (which returns the rule function) and the rule with the
 * call's arguments under the budgets. Returns the outcome; err is filled for
 * anything but PC_RULE_OK, call->answer is set only for PC_RULE_OK. */
pc_rule_outcome_t pc__sandbox_call(pc__sandbox_t *sb, int ref, pc__call_t *call,
                                   pc_rule_error_t *err);

/* The sandbox running on this thread right now, or NULL (for lib.c helpers). */
pc__sandbox_t *pc__sandbox_current(void);

#endif
