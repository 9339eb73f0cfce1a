#include "rules/sandbox.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lualib.h>
#include <luajit.h>

#include "rules/convert.h"
#include "rules/lib.h"

/* The hook runs every HOOK_EVERY VM instructions: often enough that a runaway
 * rule overshoots its deadline by microseconds, rarely enough that a normal
 * call (a few thousand instructions) pays for a handful of clock reads. */
#define HOOK_EVERY 1000
/* A call that allocates an object this large (a string of 32 KiB, a list of
 * 4096 elements) can spend tens of microseconds in C on
 * each instruction that touches it (.., <, upper, table.insert,
 * paycore.contains): from then on the hook runs every WATCH_EVERY
 * instructions, so the budget is checked after a few such instructions, not a
 * thousand. Normal calls never allocate anything near this. */
#define LARGE_ALLOC (32u * 1024)
#define WATCH_EVERY 16

#define DEFAULT_TIMEOUT_US 10000
#define DEFAULT_MAX_INSTRUCTIONS 1000000
#define DEFAULT_MEMORY_LIMIT (16u << 20)

/* The rule call in progress on this thread. The hook, the allocator's
 * location finder and the lib helpers find their sandbox through it; a thread
 * runs at most one rule call at a time (calls are synchronous, and nothing in
 * a rule can call back into the engine). */
static _Thread_local pc__sandbox_t *tl_current;

typedef enum { PHASE_CHUNK, PHASE_ARGS, PHASE_RULE, PHASE_CHECK } phase_t;

typedef struct pc__run {
    int ref;
    pc__call_t *call;
    phase_t phase;
    bool lua_failed, input_failed, malformed, not_function;
    bool have_err;
    pc_rule_error_t err;
} run_t;

pc__sandbox_t *pc__sandbox_current(void)
{
    return tl_current;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t pc__thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The wall-clock check. On a busy machine a thread can wait for a CPU for
 * milliseconds; a rule must not time out (and a good version must not be
 * refused by its examples) because its thread was not running. So passing
 * the wall-clock deadline only makes the hook look at the CPU time the call
 * really used. Reading a thread's CPU time is a system call (~0.5 us), too
 * dear for every call, so it is read once a call has run for a quarter of
 * its budget on the wall clock (a normal call never does) and taken as a
 * mark; the time before the mark counts as CPU time up to that quarter.
 * At the deadline, a call that used less than its budget gets a new deadline
 * for the rest. Returns true when the time budget is spent. */
static bool time_budget_spent(pc__sandbox_t *sb)
{
    uint64_t wall = now_ns();
    uint64_t quarter = sb->timeout_ns / 4;
    if (!sb->cpu_mark_ns && wall - sb->wall_start_ns >= quarter) {
        sb->cpu_mark_ns = pc__thread_cpu_ns();
        uint64_t before = wall - sb->wall_start_ns;
        sb->before_mark_ns = before < quarter ? before : quarter;
    }
    if (wall <= sb->deadline_ns)
        return false;
    uint64_t used = pc__thread_cpu_ns() - sb->cpu_mark_ns + sb->before_mark_ns;
    if (used >= sb->timeout_ns)
        return true;
    sb->deadline_ns = wall + (sb->timeout_ns - used);
    return false;
}

/* Finds the innermost frame of rule code (chunk names start with '@') and
 * records its file and line. Used for errors raised from C helpers and from
 * the hook, where the C frame itself has no line. */
static void locate_rule_frame(lua_State *L, char *file, size_t filelen, int *line)
{
    lua_Debug ar;
    for (int level = 0; lua_getstack(L, level, &ar); level++) {
        if (!lua_getinfo(L, "Sl", &ar))
            break;
        if (ar.source && ar.source[0] == '@' && ar.currentline > 0) {
            snprintf(file, filelen, "%s", ar.source + 1);
            *line = ar.currentline;
            return;
        }
    }
}

static void budget_hook(lua_State *L, lua_Debug *ar);

/* Re-arms the count hook; lua_sethook only stores the hook and the count in
 * the global state (the dispatch mode stays the same), so it is safe from the
 * allocator and from the hook itself. */
static void set_hook_every(pc__sandbox_t *sb, int every)
{
    lua_sethook(sb->L, budget_hook, LUA_MASKCOUNT, every);
    sb->hook_every = every;
    sb->tight_hook = every != HOOK_EVERY;
}

/* Allocator with a hard cap: growth past the limit is refused, which LuaJIT
 * turns into a memory error that unwinds the rule. Shrinking and freeing are
 * always allowed so that the collector can recover. The memory itself comes
 * from LuaJIT's own allocator (next_alloc), which is faster than malloc for
 * Lua's many small objects and, on non-GC64 builds, is the only one allowed
 * to hand out memory (it keeps addresses in the low 2 GiB). */
static void *sandbox_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    pc__sandbox_t *sb = ud;
    size_t old = ptr ? osize : 0;
    if (nsize > old && sb->used - old + nsize > sb->limit) {
        /* In paycore's own code (the argument builders, the checker) a
         * refusal is a memory error of the call, not the rule's OOM; and the
         * JIT, compiling that code, may swallow it and carry on. */
        if (sb->trusted)
            return NULL;
        if (!sb->oom && sb->run && sb->L)
            locate_rule_frame(sb->L, sb->oom_file, sizeof sb->oom_file, &sb->oom_line);
        sb->oom = true;
        return NULL;
    }
    if (nsize >= LARGE_ALLOC && sb->run && sb->hook_every > WATCH_EVERY) {
        if (sb->trusted)
            sb->large_deferred = true; /* tightened when the rule starts */
        else
            set_hook_every(sb, WATCH_EVERY);
    }
    void *p = sb->next_alloc(sb->next_ud, ptr, osize, nsize);
    if (p || nsize == 0)
        sb->used = (sb->used > old ? sb->used - old : 0) + nsize;
    return p;
}

static size_t gc_bytes(lua_State *L)
{
    return (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024u + (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
}

static size_t used_bytes(pc__sandbox_t *sb)
{
    return sb->cap_from_hook ? gc_bytes(sb->L) : sb->used;
}

/* Raises a budget error from the hook. lua_error rather than luaL_error: the
 * position is taken from the innermost rule frame by the message handler,
 * whereas luaL_where inside a hook would name the caller's line. */
static void budget_error(lua_State *L, const char *msg)
{
    lua_pushstring(L, msg);
    lua_error(L);
}

/* Budget hook. Once a budget is exhausted the hook is re-armed to fire on
 * every instruction, so that even code that somehow swallowed the first error
 * cannot get any further. */
static void budget_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    pc__sandbox_t *sb = tl_current;
    if (!sb || sb->L != L || !sb->run || sb->trusted)
        return; /* paycore's own Lua code is not the rule's to pay for */
    char msg[128];
    if (sb->oom) {
        snprintf(msg, sizeof msg, "rule exceeded its memory limit of %zu bytes", sb->limit);
        budget_error(L, msg);
    }
    if (sb->timed_out)
        budget_error(L, "rule stopped: its budget is exhausted");
    sb->instructions += (uint64_t)sb->hook_every;
    if (sb->instructions > sb->max_instructions || time_budget_spent(sb)) {
        if (sb->instructions > sb->max_instructions)
            snprintf(msg, sizeof msg, "rule exceeded its budget of %llu instructions",
                     (unsigned long long)sb->max_instructions);
        else
            snprintf(msg, sizeof msg, "rule exceeded its time budget of %llu us",
                     (unsigned long long)(sb->timeout_ns / 1000));
        sb->timed_out = true;
        set_hook_every(sb, 1);
        budget_error(L, msg);
    }
    if (sb->cap_from_hook && gc_bytes(L) > sb->limit) {
        sb->oom = true;
        locate_rule_frame(L, sb->oom_file, sizeof sb->oom_file, &sb->oom_line);
        snprintf(msg, sizeof msg, "rule exceeded its memory limit of %zu bytes", sb->limit);
        budget_error(L, msg);
    }
}

#define CHARGE_CHECK_STEPS 1e4

void pc__sandbox_charge(pc__sandbox_t *sb, lua_State *L, double steps)
{
    sb->c_steps += steps;
    if (sb->c_steps < CHARGE_CHECK_STEPS || !sb->run)
        return;
    sb->c_steps = 0;
    if (!time_budget_spent(sb))
        return;
    char msg[128];
    snprintf(msg, sizeof msg, "rule exceeded its time budget of %llu us",
             (unsigned long long)(sb->timeout_ns / 1000));
    sb->timed_out = true;
    set_hook_every(sb, 1);
    budget_error(L, msg);
}

/* Splits "rules/x.lua:12: message" into its parts; messages without a
 * position are kept whole. */
static void split_position(const char *msg, pc_rule_error_t *err)
{
    const char *colon = strchr(msg, ':');
    while (colon) {
        const char *p = colon + 1;
        const char *digits = p;
        while (*p >= '0' && *p <= '9')
            p++;
        size_t flen = (size_t)(colon - msg);
        /* Only positions Lua puts there: "<chunk>.lua:<line>:". A rule's own
         * text such as "amount: 12: too big" is not a position. */
        if (p > digits && *p == ':' && flen > 4 && flen < sizeof err->file &&
            strncmp(colon - 4, ".lua", 4) == 0) {
            memcpy(err->file, msg, flen);
            err->file[flen] = '\0';
            err->line = atoi(digits);
            p++;
            while (*p == ' ')
                p++;
            snprintf(err->message, sizeof err->message, "%s", p);
            return;
        }
        colon = strchr(colon + 1, ':');
    }
    snprintf(err->message, sizeof err->message, "%s", msg);
}

/* Message handler for rule code: records message, file and line while the
 * failing frame is still on the stack. */
static int on_rule_error(lua_State *L)
{
    pc__sandbox_t *sb = tl_current;
    run_t *run = sb ? sb->run : NULL;
    const char *msg = lua_tostring(L, 1);
    if (!msg)
        msg = lua_isnil(L, 1) ? "error raised without a message"
                              : "error raised with a non-string value";
    if (run && !run->have_err) {
        run->have_err = true;
        memset(&run->err, 0, sizeof run->err);
        split_position(msg, &run->err);
        char file[96] = "";
        int line = 0;
        locate_rule_frame(L, file, sizeof file, &line);
        /* The message's own position wins (error(msg, 2) blames the caller on
         * purpose); the innermost rule frame serves messages without one. */
        if (line > 0 && run->err.line == 0) {
            snprintf(run->err.file, sizeof run->err.file, "%s", file);
            run->err.line = line;
        }
    }
    lua_settop(L, 1);
    return 1;
}

/* Runs one call in protected mode: the fresh chunk, argument conversion, the
 * rule, and answer validation. Failures are recorded in the run; the return
 * value is unused. */
static int run_protected(lua_State *L)
{
    run_t *run = lua_touserdata(L, 1);
    pc__call_t *call = run->call;
    lua_settop(L, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, tl_current->handler_ref); /* 1: message handler */

    pc__sandbox_t *sb = tl_current;
    run->phase = PHASE_ARGS;
    sb->trusted = sb->jit; /* the argument builders run Lua code of paycore's own */
    int nargs = call->push_args(L, call);
    sb->trusted = false;
    if (sb->large_deferred && sb->hook_every > WATCH_EVERY)
        set_hook_every(sb, WATCH_EVERY);
    if (nargs < 0) {
        run->input_failed = true;
        return 0;
    }

    /* Running the chunk per call gives the rule fresh upvalues and fresh
     * module-level tables, so no state survives from one call to the next. */
    run->phase = PHASE_CHUNK;
    lua_rawgeti(L, LUA_REGISTRYINDEX, run->ref);
    if (lua_pcall(L, 0, 1, 1) != 0) {
        run->lua_failed = true;
        return 0;
    }
    int fn = lua_gettop(L) - nargs;
    lua_insert(L, fn); /* the rule function goes below its arguments */
    if (!lua_isfunction(L, fn)) {
        run->not_function = true;
        snprintf(call->detail, sizeof call->detail,
                 "the file must end with `return function(...) ... end` (it returned %s)",
                 luaL_typename(L, fn));
        return 0;
    }

    run->phase = PHASE_RULE;
    if (lua_pcall(L, nargs, 1, 1) != 0) {
        run->lua_failed = true;
        return 0;
    }

    run->phase = PHASE_CHECK;
    sb->trusted = sb->jit; /* the answer's checker, likewise */
    int checked = call->check(L, call, fn);
    sb->trusted = false;
    if (checked != 0) {
        run->malformed = true;
        if (call->want_raw)
            call->raw = pc__lua_to_json(L, fn);
    }
    return 0;
}

void pc__call_forget_ids(pc__call_t *call)
{
    if (call->ids != call->ids_small)
        free(call->ids);
    free(call->id_index);
    call->ids = NULL;
    call->id_index = NULL;
    call->nids = 0;
}

pc_rule_outcome_t pc__sandbox_call(pc__sandbox_t *sb, int ref, pc__call_t *call,
                                   pc_rule_error_t *err)
{
    lua_State *L = sb->L;
    run_t run = {.ref = ref, .call = call};
    memset(err, 0, sizeof *err);
    call->answer = NULL;
    call->records = sb->records;
    call->ctx_records = sb->ctx_records;
    call->ids_table = 0;
    call->detail[0] = '\0';
    call->ids = NULL;
    call->id_index = NULL;
    call->nids = 0;
    call->input_refused = false;
    call->raw = NULL;

    /* A rule's garbage is normally collected incrementally; after a heavy call
     * start from a clean heap so the cap measures this call, not the last. */
    if (used_bytes(sb) > sb->limit / 2)
        lua_gc(L, LUA_GCCOLLECT, 0);

    sb->instructions = 0;
    sb->nesting = 0;
    sb->c_steps = 0;
    sb->log_lines = 0;
    sb->timed_out = false;
    sb->oom = false;
    sb->oom_file[0] = '\0';
    sb->oom_line = 0;
    sb->trusted = false;
    sb->large_deferred = false;
    sb->wall_start_ns = now_ns();
    sb->deadline_ns = sb->wall_start_ns + sb->timeout_ns;
    sb->cpu_mark_ns = sb->before_mark_ns = 0;
    sb->run = &run;
    pc__sandbox_t *prev = tl_current;
    tl_current = sb;
    int rc = lua_cpcall(L, run_protected, &run);
    tl_current = prev;
    sb->run = NULL;

    pc_rule_outcome_t outcome;
    if (sb->oom) {
        outcome = PC_RULE_OOM;
        snprintf(err->message, sizeof err->message, "rule exceeded its memory limit of %zu bytes",
                 sb->limit);
        snprintf(err->file, sizeof err->file, "%s", sb->oom_file[0] ? sb->oom_file : sb->file);
        err->line = sb->oom_line;
        if (run.have_err && run.err.line > 0 && !sb->oom_file[0]) {
            snprintf(err->file, sizeof err->file, "%s", run.err.file);
            err->line = run.err.line;
        }
    } else if (sb->timed_out) {
        outcome = PC_RULE_TIMEOUT;
        *err = run.err;
        if (!err->file[0])
            snprintf(err->file, sizeof err->file, "%s", sb->file);
    } else if (run.lua_failed) {
        outcome = PC_RULE_ERROR;
        *err = run.err;
        if (!err->file[0])
            snprintf(err->file, sizeof err->file, "%s", sb->file);
    } else if (run.not_function) {
        outcome = PC_RULE_ERROR;
        snprintf(err->message, sizeof err->message, "%s", call->detail);
        snprintf(err->file, sizeof err->file, "%s", sb->file);
    } else if (run.input_failed) {
        outcome = PC_RULE_ERROR;
        snprintf(err->message, sizeof err->message, "input refused: %s", call->detail);
    } else if (rc != 0) {
        /* An error outside the rule's own code: conversion or validation ran
         * out of something. Report it as an error of the call. */
        outcome = PC_RULE_ERROR;
        const char *msg = lua_tostring(L, -1);
        snprintf(err->message, sizeof err->message, "%s", msg ? msg : "internal error");
        snprintf(err->file, sizeof err->file, "%s", sb->file);
    } else if (run.malformed) {
        outcome = PC_RULE_MALFORMED;
        snprintf(err->message, sizeof err->message, "malformed answer: %s", call->detail);
        snprintf(err->file, sizeof err->file, "%s", sb->file);
    } else {
        outcome = PC_RULE_OK;
    }

    lua_settop(L, 0);
    sb->trusted = false; /* an error may have left a phase without its end */
    sb->large_deferred = false;
    call->input_refused = run.input_failed;
    pc__call_forget_ids(call);
    if (sb->tight_hook)
        set_hook_every(sb, HOOK_EVERY);
    if (outcome == PC_RULE_OOM || outcome == PC_RULE_TIMEOUT)
        lua_gc(L, LUA_GCCOLLECT, 0);
    if (outcome != PC_RULE_OK) {
        json_decref(call->answer);
        call->answer = NULL;
    }
    return outcome;
}

/* ---- environment ---------------------------------------------------------- */

static int refuse_undeclared(lua_State *L)
{
    const char *name = lua_tostring(L, 2);
    return luaL_error(L,
                      "undeclared global '%s' (rules may use only their arguments, locals "
                      "and the allowed libraries)",
                      name ? name : "?");
}

static int refuse_global_write(lua_State *L)
{
    const char *name = lua_tostring(L, 2);
    return luaL_error(L, "assignment to global '%s' is not allowed in rules (declare it local)",
                      name ? name : "?");
}

static int refuse_library_write(lua_State *L)
{
    const char *lib = lua_tostring(L, lua_upvalueindex(1));
    const char *name = lua_tostring(L, 2);
    return luaL_error(L, "%s is read-only (cannot set field '%s')", lib ? lib : "library",
                      name ? name : "?");
}

/* Leaves on the stack a proxy whose reads go to the table at copy_idx and whose
 * writes raise; its metatable is hidden behind __metatable so neither
 * getmetatable nor setmetatable can reach the real table. The proxy is an
 * empty userdata, not a table: functions that write into a table directly
 * (table.insert, table.remove, table.sort), past __newindex, refuse it. A
 * table proxy let table.insert(math, x) keep what a call put there for the
 * next call, and for the rest of the state's life. */
static void push_readonly_proxy(lua_State *L, int copy_idx, const char *name)
{
    lua_newuserdata(L, 0); /* proxy */
    lua_createtable(L, 0, 3);
    lua_pushvalue(L, copy_idx);
    lua_setfield(L, -2, "__index");
    lua_pushstring(L, name);
    lua_pushcclosure(L, refuse_library_write, 1);
    lua_setfield(L, -2, "__newindex");
    lua_pushliteral(L, "protected");
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
}

/* Copies the listed fields of global table lib into a new table (left on the
 * stack). */
static void push_copy(lua_State *L, const char *lib, const char *const *names)
{
    lua_getglobal(L, lib);
    int src = lua_gettop(L);
    lua_newtable(L);
    for (; *names; names++) {
        lua_getfield(L, src, *names);
        lua_setfield(L, -2, *names);
    }
    lua_remove(L, src);
}

/* The allow-lists. Left out on purpose: load, loadstring, loadfile, dofile,
 * require, module, collectgarbage, getfenv, setfenv, rawset (would write
 * through the proxies), newproxy, gcinfo, pcall and xpcall (a rule could
 * swallow its own budget errors; a failing rule should fail visibly and fall
 * back), coroutine, string.dump, math.random and math.randomseed (rules must be
 * replayable from their recorded context), and the os, io, debug, package,
 * ffi, jit and bit modules. */
static const char *const base_names[] = {"assert",       "error",        "ipairs",   "next",
                                         "pairs",        "select",       "tonumber", "tostring",
                                         "type",         "unpack",       "rawequal", "rawget",
                                         "getmetatable", "setmetatable", "_VERSION", NULL};
static const char *const string_names[] = {"byte",    "char", "find",  "format", "gmatch",
                                           "gsub",    "len",  "lower", "match",  "rep",
                                           "reverse", "sub",  "upper", NULL};
static const char *const table_names[] = {"concat", "insert", "maxn", "remove", "sort", NULL};
static const char *const math_names[] = {"abs",  "ceil", "floor", "fmod",  "huge",
                                         "max",  "min",  "modf",  "pi",    "pow",
                                         "sqrt", "exp",  "log",   "log10", NULL};

static void open_lib(lua_State *L, lua_CFunction open, const char *name)
{
    lua_pushcfunction(L, open);
    lua_pushstring(L, name);
    lua_call(L, 1, 0);
}

static int setup_env(lua_State *L)
{
    pc__sandbox_t *sb = lua_touserdata(L, 1);
    lua_settop(L, 0);
    open_lib(L, luaopen_base, "");
    open_lib(L, luaopen_string, LUA_STRLIBNAME);
    open_lib(L, luaopen_table, LUA_TABLIBNAME);
    open_lib(L, luaopen_math, LUA_MATHLIBNAME);

    lua_newtable(L); /* 1: what rule code can see */
    for (const char *const *n = base_names; *n; n++) {
        lua_getglobal(L, *n);
        lua_setfield(L, 1, *n);
    }

    push_copy(L, LUA_STRLIBNAME, string_names);
    pc__lib_guard_string(L, 2);
    push_readonly_proxy(L, 2, "string");
    lua_setfield(L, 1, "string");
    /* Method calls on strings ("x"):upper() go through the string metatable:
     * point it at the same vetted copy (so ("").dump does not exist) and hide
     * it from getmetatable. */
    lua_pushliteral(L, "");
    if (lua_getmetatable(L, -1)) {
        lua_pushvalue(L, 2);
        lua_setfield(L, -2, "__index");
        lua_pushliteral(L, "protected");
        lua_setfield(L, -2, "__metatable");
        lua_pop(L, 1);
    }
    lua_settop(L, 1);

    push_copy(L, LUA_TABLIBNAME, table_names);
    pc__lib_guard_table(L, 2);
    push_readonly_proxy(L, 2, "table");
    lua_setfield(L, 1, "table");
    lua_settop(L, 1);

    push_copy(L, LUA_MATHLIBNAME, math_names);
    push_readonly_proxy(L, 2, "math");
    lua_setfield(L, 1, "math");
    lua_settop(L, 1);

    pc__lib_push_paycore(L);
    push_readonly_proxy(L, 2, "paycore");
    lua_setfield(L, 1, "paycore");
    lua_settop(L, 1);

    /* Reading a name that is not in the allow-list is an error, not nil, so a
     * typo in a rule fails its examples instead of quietly deciding wrong. */
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, refuse_undeclared);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, 1);

    lua_newtable(L); /* 2: the environment proxy, always empty */
    lua_createtable(L, 0, 3);
    lua_pushvalue(L, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, refuse_global_write);
    lua_setfield(L, -2, "__newindex");
    lua_pushliteral(L, "protected");
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, 2);
    sb->env_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    /* The message handler, made once: pushing a C function makes a closure. */
    lua_pushcfunction(L, on_rule_error);
    sb->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

pc__sandbox_t *pc__sandbox_new(const char *rule_name, const pc_rules_opts_t *opts, char *err,
                               size_t errlen)
{
    pc__sandbox_t *sb = calloc(1, sizeof *sb);
    if (!sb) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    snprintf(sb->rule_name, sizeof sb->rule_name, "%s", rule_name);
    snprintf(sb->file, sizeof sb->file, "rules/%s.lua", rule_name);
    uint64_t timeout_us = opts && opts->timeout_us ? opts->timeout_us : DEFAULT_TIMEOUT_US;
    sb->timeout_ns = timeout_us * 1000u;
    sb->max_instructions =
        opts && opts->max_instructions ? opts->max_instructions : DEFAULT_MAX_INSTRUCTIONS;
    sb->limit = opts && opts->memory_limit ? opts->memory_limit : DEFAULT_MEMORY_LIMIT;
    sb->cap_from_hook = opts && opts->cap_from_hook;
    sb->env_ref = LUA_NOREF;

    /* lua_newstate(custom allocator) works on Debian's GC64 LuaJIT but is
     * refused (returns NULL) by non-GC64 x86_64 builds. Wrapping the state's
     * own allocator with lua_setallocf works on both and keeps LuaJIT's fast
     * allocator; the accounting starts from what the state already holds. */
    sb->L = luaL_newstate();
    if (!sb->L) {
        snprintf(err, errlen, "cannot create a Lua state");
        goto fail;
    }
    if (!sb->cap_from_hook) {
        sb->next_alloc = lua_getallocf(sb->L, &sb->next_ud);
        sb->used = gc_bytes(sb->L);
        lua_setallocf(sb->L, sandbox_alloc, sb);
    }
    /* Count hooks never fire inside compiled traces: the interpreter is the
     * only engine that honours the budget. */
    if (!luaJIT_setmode(sb->L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF)) {
        snprintf(err, errlen, "cannot switch the JIT off for the rule state");
        goto fail;
    }
    if (lua_cpcall(sb->L, setup_env, sb) != 0) {
        snprintf(err, errlen, "cannot set up the rule sandbox: %s",
                 lua_tostring(sb->L, -1) ? lua_tostring(sb->L, -1) : "?");
        goto fail;
    }
    lua_settop(sb->L, 0);
    /* Every call leaves a few kilobytes of garbage around a live heap of about
     * 100 KiB; with the default pause the collector re-marks that heap every
     * few calls. Letting garbage reach 10x the live heap first costs far less
     * marking and stays well under the memory cap. */
    lua_gc(sb->L, LUA_GCSETPAUSE, 1000);
    set_hook_every(sb, HOOK_EVERY);
    return sb;

fail:
    pc__sandbox_free(sb);
    return NULL;
}

typedef struct {
    pc__sandbox_t *sb;
    const pc__record_shape_t *list, *ctx;
} records_args_t;

/* Keeps the Lua functions of a library table (LuaJIT writes a few of its
 * own in Lua: table.remove, string.len, ...) out of the JIT: a rule calls
 * them, and compiled, their loops would run past the budget's hook. */
static void keep_lua_functions_interpreted(lua_State *L, int t)
{
    lua_pushnil(L);
    while (lua_next(L, t) != 0) {
        if (lua_isfunction(L, -1) && !lua_iscfunction(L, -1) &&
            !luaJIT_setmode(L, -1, LUAJIT_MODE_ALLFUNC | LUAJIT_MODE_OFF))
            luaL_error(L, "cannot keep a library function out of the JIT");
        lua_pop(L, 1);
    }
}

static int open_records(lua_State *L)
{
    records_args_t *a = lua_touserdata(L, 1);
    lua_settop(L, 0);
    lua_pushvalue(L, LUA_GLOBALSINDEX);
    keep_lua_functions_interpreted(L, 1);
    const char *libs[] = {LUA_STRLIBNAME, LUA_TABLIBNAME, LUA_MATHLIBNAME};
    for (size_t i = 0; i < sizeof libs / sizeof libs[0]; i++) {
        lua_getglobal(L, libs[i]);
        keep_lua_functions_interpreted(L, lua_gettop(L));
        lua_pop(L, 1);
    }
    if (a->list)
        a->sb->records = pc__records_open(L, a->list);
    if (a->ctx)
        a->sb->ctx_records = pc__records_open(L, a->ctx);
    return 0;
}

int pc__sandbox_use_records(pc__sandbox_t *sb, const pc__record_shape_t *list,
                            const pc__record_shape_t *ctx, char *err, size_t errlen)
{
    records_args_t a = {.sb = sb, .list = list, .ctx = ctx};
    int rc = lua_cpcall(sb->L, open_records, &a);
    if (rc == 0 && luaJIT_setmode(sb->L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_ON)) {
        sb->jit = true;
        return 0;
    }
    snprintf(err, errlen, "no argument builder: %s",
             rc != 0 && lua_tostring(sb->L, -1) ? lua_tostring(sb->L, -1)
                                                : "the JIT cannot be switched on");
    lua_settop(sb->L, 0);
    /* The plain path then, with the JIT off as in every other state (what
     * was opened stays unused, out of the rules' reach). */
    sb->records = sb->ctx_records = NULL;
    luaJIT_setmode(sb->L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
    return -1;
}

void pc__sandbox_free(pc__sandbox_t *sb)
{
    if (!sb)
        return;
    if (sb->L) {
        /* LuaJIT releases its allocator's arena in lua_close only when the
         * state's allocator is its own: with ours still in place every closed
         * state would leave its arena mapped. Nothing in the closing needs the
         * accounting (no rule runs, and memory is only freed). */
        if (sb->next_alloc)
            lua_setallocf(sb->L, sb->next_alloc, sb->next_ud);
        lua_close(sb->L);
    }
    free(sb);
}

typedef struct {
    pc__sandbox_t *sb;
    const char *text;
    size_t len;
    char chunkname[100];
    int ref;
    int status;
    char message[320]; /* lua_cpcall drops return values: the error goes here */
} load_args_t;

static int load_protected(lua_State *L)
{
    load_args_t *a = lua_touserdata(L, 1);
    lua_settop(L, 0);
    a->status = luaL_loadbufferx(L, a->text, a->len, a->chunkname, "t");
    if (a->status != 0) {
        const char *msg = lua_tostring(L, -1);
        snprintf(a->message, sizeof a->message, "%s", msg ? msg : "cannot load the rule");
        return 0;
    }
    /* With the JIT on for a list builder, the rule's functions (the chunk
     * and every function inside it) are kept in the interpreter, where the
     * budget's count hook runs. */
    if (a->sb->jit && !luaJIT_setmode(L, -1, LUAJIT_MODE_ALLFUNC | LUAJIT_MODE_OFF)) {
        a->status = -1;
        snprintf(a->message, sizeof a->message, "cannot keep the rule out of the JIT compiler");
        return 0;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->sb->env_ref);
    lua_setfenv(L, -2);
    a->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

int pc__sandbox_load(pc__sandbox_t *sb, const char *text, size_t len, pc_rule_error_t *err)
{
    memset(err, 0, sizeof *err);
    snprintf(err->file, sizeof err->file, "%s", sb->file);
    /* luaL_loadbufferx with mode "t" refuses bytecode too; checking first
     * gives product staff a message they can act on. */
    if (len > 0 && text[0] == LUA_SIGNATURE[0]) {
        snprintf(err->message, sizeof err->message,
                 "precompiled bytecode is not accepted; rule files must be Lua source text");
        return -1;
    }
    load_args_t a = {.sb = sb, .text = text, .len = len, .ref = -1};
    snprintf(a.chunkname, sizeof a.chunkname, "@%s", sb->file);
    int rc = lua_cpcall(sb->L, load_protected, &a);
    if (rc != 0 || a.status != 0) {
        const char *msg = a.status != 0 ? a.message : lua_tostring(sb->L, -1);
        split_position(msg ? msg : "cannot load the rule", err);
        if (!err->file[0])
            snprintf(err->file, sizeof err->file, "%s", sb->file);
        lua_settop(sb->L, 0);
        return -1;
    }
    lua_settop(sb->L, 0);
    return a.ref;
}
