/* Tests for rules/sandbox.c and rules/lib.c: every escape attempt from rule
 * code is contained, rules cannot keep state between calls, and runaway rules
 * (loops, memory, pathological patterns) are stopped with the right outcome
 * and the safe default. Each attack runs in a risk rule that passes its
 * examples and misbehaves only when the call's context says "attack". */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "files.h"

#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/metrics.h"
#include "core/log.h"
#include "rules/points.h"
#include "rules/rules.h"
#include "rules/sandbox.h"

typedef struct {
    char dir[64];
    pc_rules_t *rules;
} fixture_t;

static const char *RISK_EXAMPLES =
    "{\"examples\": [{\"name\": \"plain\", \"ctx\": {\"amount\": 100},"
    " \"expect\": {\"decision\": \"ACCEPT\", \"score\": 1}}]}";

static int setup_with(void **state, const pc_rules_opts_t *opts)
{
    fixture_t *fx = calloc(1, sizeof *fx);
    pc_t_rules_tmpdir(fx->dir, sizeof fx->dir, "pc_sandbox_");
    pc_t_write_file(fx->dir, "tests/risk.json", RISK_EXAMPLES);
    pc_metrics_reset();
    fx->rules = pc_rules_new(fx->dir, opts);
    assert_non_null(fx->rules);
    *state = fx;
    return 0;
}

static int setup(void **state)
{
    /* Small budgets keep the runaway tests fast. */
    pc_rules_opts_t opts = {
        .timeout_us = 50000, .max_instructions = 200000, .memory_limit = 4u << 20};
    return setup_with(state, &opts);
}

static int setup_default_budgets(void **state)
{
    /* The engine's own budgets: a million instructions or 10 ms. */
    pc_rules_opts_t opts = {.memory_limit = 4u << 20};
    return setup_with(state, &opts);
}

static int setup_wall_clock(void **state)
{
    /* An instruction budget too large to matter: only the clock can stop it. */
    pc_rules_opts_t opts = {
        .timeout_us = 5000, .max_instructions = 1000000000000ull, .memory_limit = 4u << 20};
    return setup_with(state, &opts);
}

static int setup_hook_memory_cap(void **state)
{
    pc_rules_opts_t opts = {.timeout_us = 200000,
                            .max_instructions = 50000000,
                            .memory_limit = 4u << 20,
                            .cap_from_hook = true};
    return setup_with(state, &opts);
}

static int teardown(void **state)
{
    fixture_t *fx = *state;
    pc_rules_free(fx->rules);
    pc_t_rm_tree(fx->dir);
    free(fx);
    return 0;
}

/* Reloads and checks that the risk rule is serving the file on disk (the
 * fixture has no other rules, so the reload as a whole reports them). */
static void reload_risk(fixture_t *fx)
{
    int rc = pc_rules_reload(fx->rules);
    json_t *st = pc_rules_status(fx->rules);
    json_t *risk = json_array_get(st, 1);
    if (strcmp(json_string_value(json_object_get(risk, "status")), "ok") != 0) {
        char *s = json_dumps(risk, 0);
        fail_msg("risk rule did not load (rc %d): %s", rc, s);
    }
    json_decref(st);
}

/* Installs a risk rule that runs snippet when ctx.attack is set, then calls
 * it with the attack on. The rule must load: the snippet only runs on demand. */
static void run_attack(fixture_t *fx, const char *snippet, pc_rule_result_t *res)
{
    char lua[4096];
    snprintf(lua, sizeof lua,
             "return function(ctx)\n"
             "  if ctx.attack then\n"
             "%s\n"
             "  end\n"
             "  return {decision = 'ACCEPT', score = 1, reasons = {}}\n"
             "end\n",
             snippet);
    pc_t_write_file(fx->dir, "risk.lua", lua);
    reload_risk(fx);
    json_t *ctx = json_pack("{s:b, s:i}", "attack", 1, "amount", 100);
    pc_rules_risk(fx->rules, ctx, res);
    json_decref(ctx);
}

/* The attack failed, the call fell back to REVIEW, and the message says why. */
static void assert_contained(fixture_t *fx, const char *snippet, const char *why)
{
    pc_rule_result_t res;
    run_attack(fx, snippet, &res);
    if (res.outcome == PC_RULE_OK)
        fail_msg("attack succeeded: %s", snippet);
    assert_int_equal(res.outcome, PC_RULE_ERROR);
    assert_string_equal(json_string_value(json_object_get(res.answer, "decision")), "REVIEW");
    if (!strstr(res.error.message, why))
        fail_msg("attack %s: message \"%s\" does not mention \"%s\"", snippet, res.error.message,
                 why);
    assert_string_equal(res.error.file, "rules/risk.lua");
    assert_int_equal(res.error.line, 3);
    pc_rule_result_clear(&res);
}

/* After an attack, an honest call on the same state still answers. */
static void assert_still_answers(fixture_t *fx)
{
    pc_rule_result_t res;
    json_t *ctx = json_pack("{s:i}", "amount", 100);
    pc_rules_risk(fx->rules, ctx, &res);
    json_decref(ctx);
    assert_int_equal(res.outcome, PC_RULE_OK);
    assert_string_equal(json_string_value(json_object_get(res.answer, "decision")), "ACCEPT");
    pc_rule_result_clear(&res);
}

/* ---- escapes ----------------------------------------------------------------------- */

static void test_os_execute_is_not_reachable(void **state)
{
    fixture_t *fx = *state;
    char marker[128], snippet[256];
    snprintf(marker, sizeof marker, "%s/pwned", fx->dir);
    snprintf(snippet, sizeof snippet, "os.execute('touch %s')", marker);
    assert_contained(fx, snippet, "undeclared global 'os'");
    assert_int_not_equal(access(marker, F_OK), 0);
}

static void test_io_open_is_not_reachable(void **state)
{
    assert_contained(*state, "return io.open('/etc/passwd'):read('*a')", "undeclared global 'io'");
}

static void test_require_and_modules_are_not_reachable(void **state)
{
    fixture_t *fx = *state;
    assert_contained(fx, "require('os')", "undeclared global 'require'");
    assert_contained(fx, "package.loaded.os.exit()", "undeclared global 'package'");
    assert_contained(fx, "jit.on()", "undeclared global 'jit'");
    assert_contained(fx, "ffi.C.system('true')", "undeclared global 'ffi'");
    assert_contained(fx, "module('x')", "undeclared global 'module'");
}

static void test_code_loading_is_not_reachable(void **state)
{
    fixture_t *fx = *state;
    assert_contained(fx, "loadstring('\\027LJ\\002')()", "undeclared global 'loadstring'");
    assert_contained(fx, "load(function() return nil end)", "undeclared global 'load'");
    assert_contained(fx, "loadfile('/etc/passwd')", "undeclared global 'loadfile'");
    assert_contained(fx, "dofile('/etc/passwd')", "undeclared global 'dofile'");
}

static void test_string_dump_is_not_reachable(void **state)
{
    fixture_t *fx = *state;
    assert_contained(fx, "local b = string.dump(function() end)", "dump");
    /* Through the string metatable, too. */
    assert_contained(fx, "local dump = ('x').dump; dump(function() end)", "dump");
}

static void test_debug_and_registry_are_not_reachable(void **state)
{
    fixture_t *fx = *state;
    assert_contained(fx, "local r = debug.getregistry()", "undeclared global 'debug'");
    assert_contained(fx, "local g = _G.os", "undeclared global '_G'");
    assert_contained(fx, "local e = getfenv(1)", "undeclared global 'getfenv'");
    assert_contained(fx, "setfenv(1, {})", "undeclared global 'setfenv'");
    assert_contained(fx, "local p = newproxy(true)", "undeclared global 'newproxy'");
    assert_contained(fx, "collectgarbage('stop')", "undeclared global 'collectgarbage'");
}

static void test_setting_a_global_is_refused(void **state)
{
    fixture_t *fx = *state;
    assert_contained(fx, "decision = 'ACCEPT'", "assignment to global 'decision'");
    assert_contained(fx, "function helper() end", "assignment to global 'helper'");
}

static void test_error_text_that_looks_like_a_position_is_kept_whole(void **state)
{
    fixture_t *fx = *state;
    pc_rule_result_t res;
    run_attack(fx, "error('amount: 12: too big', 0)", &res);
    assert_int_equal(res.outcome, PC_RULE_ERROR);
    assert_string_equal(res.error.message, "amount: 12: too big");
    assert_string_equal(res.error.file, "rules/risk.lua");
    assert_int_equal(res.error.line, 3);
    pc_rule_result_clear(&res);
}

static void test_reading_an_undeclared_global_is_an_error_not_nil(void **state)
{
    assert_contained(*state, "if ammount > 0 then end", "undeclared global 'ammount'");
}

static void test_standard_tables_are_read_only(void **state)
{
    fixture_t *fx = *state;
    assert_contained(fx, "string.upper = function() return 'pwned' end", "string is read-only");
    assert_contained(fx, "table.insert = nil", "table is read-only");
    assert_contained(fx, "math.floor = nil", "math is read-only");
    assert_contained(fx, "paycore.log = nil", "paycore is read-only");
    assert_contained(fx, "rawset(string, 'upper', 1)", "undeclared global 'rawset'");
}

/* table.insert, remove and sort write into a table directly, past
 * __newindex: the library tables refuse them. Before, table.insert(math, x)
 * kept x for the next call and the state's whole life (a rule could answer
 * REVIEW twice and ACCEPT the third time for the same context, or fill the
 * state until every call ran out of memory). */
static void test_library_tables_cannot_be_written_by_table_functions(void **state)
{
    fixture_t *fx = *state;
    assert_contained(fx, "table.insert(math, 1)", "table expected");
    assert_contained(fx, "table.insert(string, 'persist')", "table expected");
    assert_contained(fx, "table.insert(paycore, {})", "table expected");
    assert_contained(fx, "table.insert(table, 1, 'x')", "table expected");
    assert_contained(fx, "table.remove(math)", "table expected");
    assert_contained(fx, "table.sort(string, function(a, b) return a < b end)", "table expected");
    assert_still_answers(fx);
    /* The libraries still read as before. */
    pc_rule_result_t res;
    run_attack(fx,
               "if string.upper('a') ~= 'A' or math.floor(1.5) ~= 1 or ('x'):rep(2) ~= 'xx'\n"
               "  or not paycore.contains({1}, 1) or type(string.find) ~= 'function' then\n"
               "  error('libraries broke') end",
               &res);
    if (res.outcome != PC_RULE_OK)
        fail_msg("%s", res.error.message);
    pc_rule_result_clear(&res);
}

static void test_protected_metatables_cannot_be_reached_or_replaced(void **state)
{
    fixture_t *fx = *state;
    /* getmetatable answers a string instead of the real metatable. */
    assert_contained(fx, "getmetatable(string).__index = {upper = 1}", "attempt to index");
    /* The library proxies are not tables at all (see the test above). */
    assert_contained(fx, "setmetatable(string, {})", "table expected, got userdata");
    assert_contained(fx, "setmetatable(paycore, nil)", "table expected, got userdata");
    /* A table the rule was given keeps its protected metatable, if any: the
     * string metatable is reached only through getmetatable. */
    assert_contained(fx, "setmetatable(getmetatable(''), nil)", "table expected");
}

static void test_string_metatable_tampering_is_refused(void **state)
{
    fixture_t *fx = *state;
    assert_contained(fx, "getmetatable('').__index = {upper = function() return 'x' end}",
                     "attempt to index");
    assert_contained(fx, "getmetatable('').__index.upper = nil", "attempt to index");
    /* String methods still work afterwards. */
    pc_rule_result_t res;
    run_attack(fx,
               "if ('abc'):upper() ~= 'ABC' or getmetatable('') ~= 'protected' then\n"
               "  error('string methods were changed')\nend",
               &res);
    assert_int_equal(res.outcome, PC_RULE_OK);
    pc_rule_result_clear(&res);
}

static void test_random_and_coroutines_and_pcall_are_absent(void **state)
{
    fixture_t *fx = *state;
    assert_contained(fx, "local r = math.random()", "random");
    assert_contained(fx, "coroutine.wrap(function() end)()", "undeclared global 'coroutine'");
    /* pcall would let a rule swallow its own budget errors. */
    assert_contained(fx, "pcall(error, 'x')", "undeclared global 'pcall'");
    assert_contained(fx, "xpcall(error, error)", "undeclared global 'xpcall'");
}

static void test_rules_cannot_keep_state_between_calls(void **state)
{
    fixture_t *fx = *state;
    /* Upvalues and module-level tables would carry state if the chunk ran
     * only once; the engine runs it afresh for every call. */
    pc_t_write_file(fx->dir, "risk.lua",
                    "local calls = 0\n"
                    "local seen = {}\n"
                    "return function(ctx)\n"
                    "  calls = calls + 1\n"
                    "  seen[#seen + 1] = ctx.amount\n"
                    "  return {decision = 'ACCEPT', score = calls, reasons = {tostring(#seen)}}\n"
                    "end\n");
    reload_risk(fx);
    for (int i = 0; i < 3; i++) {
        pc_rule_result_t res;
        json_t *ctx = json_pack("{s:i}", "amount", 100);
        pc_rules_risk(fx->rules, ctx, &res);
        json_decref(ctx);
        assert_int_equal(res.outcome, PC_RULE_OK);
        assert_int_equal(json_integer_value(json_object_get(res.answer, "score")), 1);
        assert_string_equal(
            json_string_value(json_array_get(json_object_get(res.answer, "reasons"), 0)), "1");
        pc_rule_result_clear(&res);
    }
}

static void test_sort_orders_numbers_like_lua_and_keeps_its_errors(void **state)
{
    fixture_t *fx = *state;
    /* Short number lists take a fast path in C; the answers must be the ones
     * of Lua's own sort, and what that sort refuses stays refused. */
    pc_t_write_file(fx->dir, "risk.lua",
                    "local function s(t, f) table.sort(t, f) return table.concat(t, ' ') end\n"
                    "return function(ctx)\n"
                    "  local long = {}\n"
                    "  for i = 1, 70 do long[i] = (i * 37) % 71 end\n"
                    "  local r = {\n"
                    "    s({3, -1, 2.5, 3, 0, -7, 1e9}),\n"
                    "    s({}),\n"
                    "    s({42}),\n"
                    "    s({3, 1, 2}, function(a, b) return a > b end),\n"
                    "    s({'b', 'a', 'c'}),\n"
                    "    string.sub(s(long), 1, 20),\n"
                    "  }\n"
                    "  if ctx.mixed then table.sort({1, 'x', 2}) end\n"
                    "  return {decision = 'ACCEPT', score = 1, reasons = r}\n"
                    "end\n");
    reload_risk(fx);
    pc_rule_result_t res;
    json_t *ctx = json_pack("{s:i}", "amount", 100);
    pc_rules_risk(fx->rules, ctx, &res);
    json_decref(ctx);
    assert_int_equal(res.outcome, PC_RULE_OK);
    json_t *r = json_object_get(res.answer, "reasons");
    assert_string_equal(json_string_value(json_array_get(r, 0)), "-7 -1 0 2.5 3 3 1000000000");
    assert_string_equal(json_string_value(json_array_get(r, 1)), "");
    assert_string_equal(json_string_value(json_array_get(r, 2)), "42");
    assert_string_equal(json_string_value(json_array_get(r, 3)), "3 2 1");
    assert_string_equal(json_string_value(json_array_get(r, 4)), "a b c");
    assert_string_equal(json_string_value(json_array_get(r, 5)), "1 2 3 4 5 6 7 8 9 10");
    pc_rule_result_clear(&res);
    /* A number beside a string cannot be ordered: the rule fails, as with
     * Lua's sort. */
    ctx = json_pack("{s:i, s:b}", "amount", 100, "mixed", 1);
    pc_rules_risk(fx->rules, ctx, &res);
    json_decref(ctx);
    assert_int_equal(res.outcome, PC_RULE_ERROR);
    assert_non_null(strstr(res.error.message, "compare"));
    pc_rule_result_clear(&res);
}

/* ---- runaway rules ------------------------------------------------------------------ */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void test_infinite_loop_times_out_to_review(void **state)
{
    fixture_t *fx = *state;
    pc_rule_result_t res;
    uint64_t t0 = now_ms();
    run_attack(fx, "while true do end", &res);
    assert_true(now_ms() - t0 < 1000);
    assert_int_equal(res.outcome, PC_RULE_TIMEOUT);
    assert_string_equal(json_string_value(json_object_get(res.answer, "decision")), "REVIEW");
    assert_string_equal(
        json_string_value(json_array_get(json_object_get(res.answer, "reasons"), 0)),
        "RULE_TIMEOUT");
    assert_non_null(strstr(res.error.message, "instructions"));
    assert_string_equal(res.error.file, "rules/risk.lua");
    assert_int_equal(res.error.line, 3);
    pc_rule_result_clear(&res);
    assert_int_equal(pc_metrics_get("pc_rules_calls_total", "rule=\"risk\",outcome=\"timeout\""),
                     1);
    assert_still_answers(fx);
}

static void test_loop_inside_a_library_callback_times_out(void **state)
{
    fixture_t *fx = *state;
    pc_rule_result_t res;
    /* The comparator runs in Lua below a C function (table.sort). */
    run_attack(fx, "table.sort({3, 2, 1}, function(a, b) while true do end end)", &res);
    assert_int_equal(res.outcome, PC_RULE_TIMEOUT);
    pc_rule_result_clear(&res);
    assert_still_answers(fx);
}

static void test_wall_clock_budget_stops_a_rule_the_instruction_budget_allows(void **state)
{
    fixture_t *fx = *state;
    pc_rule_result_t res;
    uint64_t t0 = now_ms();
    run_attack(fx, "local i = 0 while true do i = i + 1 end", &res);
    uint64_t took = now_ms() - t0;
    assert_int_equal(res.outcome, PC_RULE_TIMEOUT);
    assert_non_null(strstr(res.error.message, "time budget"));
    assert_true(res.elapsed_ns >= 5000000u);
    assert_true(took < 1000);
    pc_rule_result_clear(&res);
    assert_still_answers(fx);
}

static void test_memory_bomb_is_stopped_as_oom(void **state)
{
    fixture_t *fx = *state;
    pc_rule_result_t res;
    run_attack(fx,
               "local t = {} local i = 0\n"
               "while true do i = i + 1 t[i] = string.rep('x', 4096) .. i end",
               &res);
    assert_int_equal(res.outcome, PC_RULE_OOM);
    assert_string_equal(json_string_value(json_object_get(res.answer, "decision")), "REVIEW");
    assert_string_equal(
        json_string_value(json_array_get(json_object_get(res.answer, "reasons"), 0)), "RULE_OOM");
    assert_non_null(strstr(res.error.message, "memory limit"));
    assert_string_equal(res.error.file, "rules/risk.lua");
    assert_int_equal(res.error.line, 4);
    pc_rule_result_clear(&res);
    assert_int_equal(pc_metrics_get("pc_rules_calls_total", "rule=\"risk\",outcome=\"oom\""), 1);
    /* The garbage is collected: the next honest call fits again. */
    assert_still_answers(fx);
    assert_still_answers(fx);
}

static void test_single_huge_allocation_is_stopped_as_oom(void **state)
{
    fixture_t *fx = *state;
    pc_rule_result_t res;
    run_attack(fx, "local s = string.rep('x', 1e9)", &res);
    assert_int_equal(res.outcome, PC_RULE_OOM);
    pc_rule_result_clear(&res);
    /* rep stops at 256 KiB; one concatenation of 20 such strings is 5 MiB. */
    run_attack(
        fx,
        "local s = string.rep('abcdefgh', 32768)\n"
        "local t = s .. s .. s .. s .. s .. s .. s .. s .. s .. s .. s .. s .. s .. s .. s .. "
        "s .. s .. s .. s .. s",
        &res);
    assert_int_equal(res.outcome, PC_RULE_OOM);
    pc_rule_result_clear(&res);
    assert_still_answers(fx);
}

static void test_memory_cap_from_the_hook_also_stops_a_bomb(void **state)
{
    fixture_t *fx = *state;
    pc_rule_result_t res;
    run_attack(fx,
               "local t = {} local i = 0\n"
               "while true do i = i + 1 t[i] = {i, i + 1, i + 2, tostring(i)} end",
               &res);
    assert_int_equal(res.outcome, PC_RULE_OOM);
    assert_string_equal(json_string_value(json_object_get(res.answer, "decision")), "REVIEW");
    pc_rule_result_clear(&res);
    assert_still_answers(fx);
}

static void test_catastrophic_pattern_is_refused_before_it_runs(void **state)
{
    fixture_t *fx = *state;
    pc_rule_result_t res;
    uint64_t t0 = now_ms();
    /* Backtracking like this takes seconds in C, where no hook can stop it. */
    run_attack(fx, "local s = string.rep('a', 300) local x = s:find('.-.-.-b')", &res);
    assert_true(now_ms() - t0 < 500);
    assert_int_equal(res.outcome, PC_RULE_ERROR);
    assert_non_null(strstr(res.error.message, "too costly"));
    pc_rule_result_clear(&res);
    /* Ordinary patterns keep working. */
    run_attack(fx,
               "local a, b = ('u_42@example'):match('^(%w+)_(%d+)@')\n"
               "if a ~= 'u' or b ~= '42' then error('match broke') end\n"
               "if not ('4242424242424242'):find('4242', 1, true) then error('find broke') end\n"
               "local n = select(2, ('a,b,c'):gsub(',', ';'))\n"
               "if n ~= 2 then error('gsub broke') end",
               &res);
    assert_int_equal(res.outcome, PC_RULE_OK);
    pc_rule_result_clear(&res);
}

/* ---- work out of the hook's sight ---------------------------------------------------- */

/* What these snippets do runs in C (a library function, or the conversion of
 * an answer for display), where the instruction hook never fires: only the
 * guards can stop it, and the call must still end quickly in a fallback. */
static void assert_stopped_quickly(fixture_t *fx, const char *snippet, pc_rule_outcome_t want,
                                   const char *why)
{
    pc_rule_result_t res;
    uint64_t t0 = now_ms();
    run_attack(fx, snippet, &res);
    uint64_t took = now_ms() - t0;
    if (took >= 2000)
        fail_msg("took %llu ms: %s", (unsigned long long)took, snippet);
    if (res.outcome != want)
        fail_msg("outcome %s (%s), expected %s: %s", pc_rule_outcome_name(res.outcome),
                 res.error.message, pc_rule_outcome_name(want), snippet);
    assert_string_equal(json_string_value(json_object_get(res.answer, "decision")), "REVIEW");
    if (why && !strstr(res.error.message, why))
        fail_msg("message \"%s\" does not mention \"%s\": %s", res.error.message, why, snippet);
    pc_rule_result_clear(&res);
}

/* Runs the examples of a risk rule that answers lua_answer (malformed) and
 * returns what the report shows the rule returned, as compact JSON. */
static char *shown_answer(fixture_t *fx, const char *lua_answer, uint64_t *took)
{
    char lua[512];
    snprintf(lua, sizeof lua, "return function(ctx)\n%s\nend\n", lua_answer);
    pc_t_write_file(fx->dir, "risk.lua", lua);
    uint64_t t0 = now_ms();
    json_t *report = pc_rules_test_dir(fx->dir, NULL);
    *took = now_ms() - t0;
    json_t *ex = json_array_get(
        json_object_get(json_array_get(json_object_get(report, "rules"), 1), "examples"), 0);
    assert_string_equal(json_string_value(json_object_get(ex, "outcome")), "malformed");
    char *got = json_dumps(json_object_get(ex, "got"), JSON_COMPACT | JSON_ENCODE_ANY);
    assert_non_null(got);
    json_decref(report);
    return got;
}

static void test_an_answer_that_holds_itself_is_shown_small_and_quickly(void **state)
{
    fixture_t *fx = *state;
    uint64_t took;
    /* Walked naively: 2^33 nodes, outside the memory cap. */
    char *got = shown_answer(fx, "local t = {} t[1] = t t[2] = t return t", &took);
    assert_true(took < 2000);
    assert_string_equal(got, "[\"<cycle>\",\"<cycle>\"]");
    free(got);
    /* No cycle, but 2^40 paths through 40 tables. */
    got = shown_answer(fx, "local a = {} for i = 1, 40 do a = {a, a} end return a", &took);
    assert_true(took < 2000);
    assert_non_null(strstr(got, "<truncated>"));
    assert_true(strlen(got) < 100000);
    free(got);
    /* Wide and long answers are cut too. */
    got = shown_answer(fx,
                       "local t = {} for i = 1, 100000 do t[i] = i end\n"
                       "return {list = t, text = ('x'):rep(2^17), decision = 'MAYBE'}",
                       &took);
    assert_true(took < 2000);
    assert_non_null(strstr(got, "<truncated>"));
    assert_true(strlen(got) < 100000);
    free(got);
    /* A table met twice on different paths is shown twice, not as a cycle. */
    got = shown_answer(fx, "local r = {'x'} return {a = r, b = r}", &took);
    assert_true(strstr(got, "\"a\":[\"x\"]") && strstr(got, "\"b\":[\"x\"]"));
    free(got);
}

static const char *const RECURSION_THROUGH_C[] = {
    "local function f() return (('x'):gsub('x', f)) end f()",
    "local t t = setmetatable({}, {__index = function() return (('x'):gsub('x', t)) end}) "
    "local _ = ('x'):gsub('x', t)",
    "local function f(a, b) table.sort({2, 1}, f) return a < b end table.sort({2, 1}, f)",
    "local mt = {} mt.__lt = function() table.sort({setmetatable({}, mt), setmetatable({}, mt)}) "
    "return false end table.sort({setmetatable({}, mt), setmetatable({}, mt)})",
    "local t = setmetatable({}, {__tostring = function(self) return string.format('%s', self) "
    "end}) local _ = string.format('%s', t)",
};

static void test_recursion_through_library_callbacks_is_an_error_not_a_crash(void **state)
{
    fixture_t *fx = *state;
    /* Each level is a C library function calling back into the rule: C stack
     * that no budget sees, until the process crashes. */
    for (size_t i = 0; i < sizeof RECURSION_THROUGH_C / sizeof *RECURSION_THROUGH_C; i++)
        assert_contained(fx, RECURSION_THROUGH_C[i], "nested too deeply");
    assert_still_answers(fx);
    /* A few levels are fine. */
    pc_rule_result_t res;
    run_attack(fx,
               "local function f(d) if d == 0 then return 'y' end\n"
               "  return (('x'):gsub('x', function() return f(d - 1) end)) end\n"
               "if f(8) ~= 'y' then error('nesting broke') end",
               &res);
    assert_int_equal(res.outcome, PC_RULE_OK);
    pc_rule_result_clear(&res);
}

typedef struct {
    fixture_t *fx;
    pc_rule_result_t res;
} thread_call_t;

static void *call_attack_on_thread(void *arg)
{
    thread_call_t *tc = arg;
    json_t *ctx = json_pack("{s:b, s:i}", "attack", 1, "amount", 100);
    pc_rules_risk(tc->fx->rules, ctx, &tc->res);
    json_decref(ctx);
    return NULL;
}

static void test_recursion_through_gsub_is_stopped_on_a_small_thread_stack(void **state)
{
    fixture_t *fx = *state;
    /* Worker threads can have far less stack than the main thread's 8 MiB. */
    char lua[512];
    snprintf(lua, sizeof lua,
             "return function(ctx)\n"
             "  if ctx.attack then\n"
             "%s\n"
             "  end\n"
             "  return {decision = 'ACCEPT', score = 1, reasons = {}}\n"
             "end\n",
             RECURSION_THROUGH_C[0]);
    pc_t_write_file(fx->dir, "risk.lua", lua);
    reload_risk(fx);
    thread_call_t tc = {.fx = fx};
    pthread_attr_t attr;
    pthread_t thread;
    assert_int_equal(pthread_attr_init(&attr), 0);
    assert_int_equal(pthread_attr_setstacksize(&attr, 512 * 1024), 0);
    assert_int_equal(pthread_create(&thread, &attr, call_attack_on_thread, &tc), 0);
    assert_int_equal(pthread_join(thread, NULL), 0);
    pthread_attr_destroy(&attr);
    assert_int_equal(tc.res.outcome, PC_RULE_ERROR);
    assert_non_null(strstr(tc.res.error.message, "nested too deeply"));
    pc_rule_result_clear(&tc.res);
}

static void test_work_in_library_functions_cannot_escape_the_budget(void **state)
{
    fixture_t *fx = *state;
    /* Strings a rule builds are at most 256 KiB... */
    assert_stopped_quickly(fx, "local s = ('a'):rep(2^21) local x = s:find(('a'):rep(2^20) .. 'b')",
                           PC_RULE_ERROR, "256 KiB");
    assert_stopped_quickly(fx,
                           "local t = {} for i = 1, 300 do t[i] = ('x'):rep(1000) end\n"
                           "local s = table.concat(t)",
                           PC_RULE_ERROR, "256 KiB");
    assert_stopped_quickly(fx, "local s = ('x'):rep(2^17) s = s:gsub('x', 'yyy')", PC_RULE_ERROR,
                           "256 KiB");
    /* ... but .. can join them: a literal pattern costs n * m, plain or not. */
    assert_stopped_quickly(fx,
                           "local a = ('a'):rep(2^18) local s = a .. a .. a .. a\n"
                           "local x = s:find(a .. a .. 'b')",
                           PC_RULE_ERROR, "too costly");
    assert_stopped_quickly(fx,
                           "local a = ('a'):rep(2^18) local s = a .. a .. a .. a\n"
                           "local x = s:find(a .. a .. 'b', 1, true)",
                           PC_RULE_ERROR, "too costly");
    /* gmatch reads a leading '^' as a character, not an anchor. */
    assert_stopped_quickly(fx,
                           "local a = ('^'):rep(2^18) local s = a .. a .. a .. a\n"
                           "for x in s:gmatch('^.-b') do end",
                           PC_RULE_ERROR, "too costly");
    /* A back-reference compares as much as its capture holds. */
    assert_stopped_quickly(fx,
                           "local a = ('a'):rep(2^18) local s = a .. a .. a .. a\n"
                           "local x = s:find('^(.-)%1b')",
                           PC_RULE_ERROR, "too costly");
    /* Sorting long equal strings without a comparison function. */
    assert_stopped_quickly(fx,
                           "local s = ('a'):rep(2^18) local t = {}\n"
                           "for i = 1, 20000 do t[i] = s end table.sort(t)",
                           PC_RULE_ERROR, "too costly");
    /* Calls each below the limit add up: hundreds run between two ticks. */
    assert_stopped_quickly(fx,
                           "local s = ('a'):rep(2^18) local p = ('a'):rep(37) .. 'b'\n"
                           "while true do local x = s:match(p) end",
                           PC_RULE_TIMEOUT, "time budget");
    assert_still_answers(fx);
    /* What rules normally do with strings is unaffected. */
    pc_rule_result_t res;
    run_attack(fx,
               "local t = {} for w in ('VISA,MASTERCARD,UNIONPAY'):gmatch('[^,]+') do\n"
               "  t[#t + 1] = w:lower() end\n"
               "table.sort(t) local s = table.concat(t, ' ')\n"
               "if s ~= 'mastercard unionpay visa' then error('strings broke: ' .. s) end\n"
               "if string.format('%s/%d', 'a', 2) ~= 'a/2' then error('format broke') end\n"
               "local big = ('x'):rep(2^18) if #big:gsub('x', 'y') ~= 2^18 then error('gsub') end",
               &res);
    if (res.outcome != PC_RULE_OK)
        fail_msg("%s", res.error.message);
    pc_rule_result_clear(&res);
}

static uint64_t thread_cpu_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* Runs attack (rule code, run when ctx.attack is set) and checks it timed
 * out within max_us of thread CPU. */
static void assert_times_out_within(fixture_t *fx, const char *attack, uint64_t max_us)
{
    char lua[1024];
    snprintf(lua, sizeof lua,
             "return function(ctx)\n"
             "  if ctx.attack then\n"
             "    %s\n"
             "  end\n"
             "  return {decision = 'ACCEPT', score = 1, reasons = {}}\n"
             "end\n",
             attack);
    pc_t_write_file(fx->dir, "risk.lua", lua);
    reload_risk(fx);
    json_t *ctx = json_pack("{s:b, s:i}", "attack", 1, "amount", 100);
    pc_rule_result_t res;
    uint64_t t0 = thread_cpu_us();
    pc_rules_risk(fx->rules, ctx, &res);
    uint64_t used = thread_cpu_us() - t0;
    json_decref(ctx);
    assert_int_equal(res.outcome, PC_RULE_TIMEOUT);
    if (used > max_us)
        fail_msg("used %llu us of CPU (at most %llu): %s", (unsigned long long)used,
                 (unsigned long long)max_us, attack);
    pc_rule_result_clear(&res);
}

static void test_instructions_on_large_objects_do_not_overrun_the_budget(void **state)
{
    fixture_t *fx = *state;
    /* One '<' on two 1 MiB strings compares them in C for ~0.1 ms: with a
     * thousand instructions between two hook ticks the call would run for
     * several times its 5 ms budget (30 ms when this test was written).
     * Five times the budget: the strings' making counts too, and CI on a
     * shared machine once measured 15.5 ms (a bound of three times failed). */
    assert_times_out_within(
        fx,
        "local a = ('a'):rep(2^18) local s = a .. a .. a .. a local t = s .. ''\n"
        "    while true do local x = s < t end",
        25000);
    assert_still_answers(fx);
}

/* Work in C that is linear in a list or a string (paycore.contains,
 * table.concat, upper) is charged to the budget, and a list of 16384
 * elements tightens the hook: a loop of such calls stops near its 5 ms
 * budget. Before, paycore.contains on 16384 elements in a loop ran for about
 * six budgets (a thousand instructions, each a call, between two ticks). */
static void test_linear_library_work_is_charged_to_the_budget(void **state)
{
    fixture_t *fx = *state;
    /* Five times the budget, as above: building the list counts too. */
    assert_times_out_within(
        fx,
        "local t = {} for i = 1, 16384 do t[i] = i end local c = paycore.contains\n"
        "    while true do c(t, 'z') c(t, 'z') c(t, 'z') c(t, 'z') c(t, 'z') c(t, 'z') end",
        25000);
    assert_times_out_within(fx,
                            "local t = {} for i = 1, 16000 do t[i] = 'x' end\n"
                            "    while true do local s = table.concat(t) end",
                            25000);
    assert_times_out_within(fx,
                            "local s = ('x'):rep(250000)\n"
                            "    while true do local u = s:upper() end",
                            25000);
    assert_still_answers(fx);
}

/* paycore.log writes 20 lines a call, then one saying the rest are
 * dropped: a rule logging in a loop wrote megabytes per payment to stderr,
 * on the loop thread (a slow pipe blocks it, using no CPU the budget sees). */
static void test_a_rule_logs_at_most_twenty_lines_a_call(void **state)
{
    fixture_t *fx = *state;
    char path[128];
    snprintf(path, sizeof path, "%s/stderr.txt", fx->dir);
    /* Log lines are written by a thread of their own: each side of the
     * capture waits until they are out. */
    assert_int_equal(pc_log_flush(5000), 0);
    int saved = dup(2);
    FILE *f = fopen(path, "w+");
    assert_non_null(f);
    dup2(fileno(f), 2);
    pc_rule_result_t res;
    run_attack(fx, "for i = 1, 500 do paycore.log('error', 'line ' .. i) end", &res);
    assert_int_equal(pc_log_flush(5000), 0);
    dup2(saved, 2);
    close(saved);
    assert_int_equal(res.outcome, PC_RULE_OK);
    pc_rule_result_clear(&res);
    rewind(f);
    char line[2048];
    int lines = 0, dropped = 0;
    while (fgets(line, sizeof line, f)) {
        if (strstr(line, "\"msg\":\"line "))
            lines++;
        if (strstr(line, "more than 20 paycore.log lines in one call"))
            dropped++;
    }
    fclose(f);
    assert_int_equal(lines, 20);
    assert_int_equal(dropped, 1);
}

/* ---- the cashier_rank state: the JIT is on there, for the list builder ---------- */

static const char *CASHIER_EXAMPLES =
    "{\"examples\": [{\"name\": \"plain\", \"ctx\": {\"amount\": 100},"
    " \"methods\": [{\"method_id\": \"m1\", \"type\": \"CARD\", \"available\": true}],"
    " \"expect\": {\"order\": [\"m1\"]}}]}";

/* Installs a cashier_rank rule that runs body (at the top of the rule
 * function) when ctx.attack is set, with prelude at the top of the file, and
 * calls it with the attack on. */
static void run_cashier_attack(fixture_t *fx, const char *prelude, const char *body,
                               pc_rule_result_t *res)
{
    char lua[4096];
    snprintf(lua, sizeof lua,
             "%s\n"
             "return function(ctx, methods)\n"
             "  if ctx.attack then\n"
             "%s\n"
             "  end\n"
             "  return methods\n"
             "end\n",
             prelude, body);
    pc_t_write_file(fx->dir, "cashier_rank.lua", lua);
    pc_t_write_file(fx->dir, "tests/cashier_rank.json", CASHIER_EXAMPLES);
    pc_rules_reload(fx->rules);
    json_t *st = pc_rules_status(fx->rules);
    json_t *cr = json_array_get(st, 0);
    if (strcmp(json_string_value(json_object_get(cr, "status")), "ok") != 0) {
        char *dump = json_dumps(cr, 0);
        fail_msg("cashier_rank did not load: %s", dump);
    }
    json_decref(st);
    json_t *ctx = json_pack("{s:b, s:i}", "attack", 1, "amount", 100);
    json_t *methods =
        json_pack("[{s:s, s:s, s:b}, {s:s, s:s, s:b}]", "method_id", "m1", "type", "CARD",
                  "available", 1, "method_id", "m2", "type", "WALLET", "available", 1);
    pc_rules_cashier_rank(fx->rules, ctx, methods, res);
    json_decref(ctx);
    json_decref(methods);
}

static void assert_cashier_still_answers(fixture_t *fx)
{
    pc_rule_result_t res;
    json_t *ctx = json_pack("{s:i}", "amount", 100);
    json_t *methods =
        json_pack("[{s:s, s:s, s:b}]", "method_id", "m9", "type", "CARD", "available", 1);
    pc_rules_cashier_rank(fx->rules, ctx, methods, &res);
    assert_int_equal(res.outcome, PC_RULE_OK);
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(res.answer, 0), "method_id")), "m9");
    pc_rule_result_clear(&res);
    json_decref(ctx);
    json_decref(methods);
}

/* Loops LuaJIT would compile within a few dozen iterations, where the budget's
 * count hook never runs: each must be stopped, at the instruction budget and
 * at the clock alike (the wall-clock fixture's instruction budget is out of
 * reach), in the rule function, in a function defined inside it, in a
 * function at the file's top, and in a library callback. */
static const char *const hot_loops[][2] = {
    {"", "local x = 0 for i = 1, 1e15 do x = x + i end"},
    {"", "local n = 0 while true do n = n + 1 end"},
    {"", "local function spin() local n = 0 repeat n = n + 1 until n < 0 end spin()"},
    {"local function spin(t) local s = 0 while true do for i = 1, #t do s = s + t[i] end end end",
     "spin({1, 2, 3})"},
    {"", "table.sort({3, 2, 1}, function(a, b) local n = 0 while n >= 0 do n = n + 1 end end)"},
};

static void assert_hot_loops_stopped(fixture_t *fx)
{
    for (size_t i = 0; i < sizeof hot_loops / sizeof hot_loops[0]; i++) {
        pc_rule_result_t res;
        uint64_t t0 = now_ms();
        run_cashier_attack(fx, hot_loops[i][0], hot_loops[i][1], &res);
        uint64_t took = now_ms() - t0;
        if (res.outcome != PC_RULE_TIMEOUT)
            fail_msg("loop %zu (%s): outcome %s, %s", i, hot_loops[i][1],
                     pc_rule_outcome_name(res.outcome), res.error.message);
        if (took > 1000)
            fail_msg("loop %zu (%s) ran %llu ms", i, hot_loops[i][1], (unsigned long long)took);
        /* The safe default: the methods as given. */
        assert_int_equal(json_array_size(res.answer), 2);
        assert_string_equal(res.error.file, "rules/cashier_rank.lua");
        pc_rule_result_clear(&res);
        assert_cashier_still_answers(fx);
    }
}

static void test_hot_loops_in_the_jit_state_hit_the_instruction_budget(void **state)
{
    assert_hot_loops_stopped(*state);
}

static void test_hot_loops_in_the_jit_state_hit_the_clock(void **state)
{
    assert_hot_loops_stopped(*state);
}

static void test_memory_bomb_in_the_jit_state_is_stopped_as_oom(void **state)
{
    fixture_t *fx = *state;
    pc_rule_result_t res;
    run_cashier_attack(fx, "", "local t = {} for i = 1, 1e12 do t[i] = {i} end", &res);
    assert_int_equal(res.outcome, PC_RULE_OOM);
    pc_rule_result_clear(&res);
    assert_cashier_still_answers(fx);
}

/* LuaJIT writes a few library functions in Lua (table.remove among them):
 * with the JIT on in the state they must stay in the interpreter too, or the
 * work inside them escapes the instruction count. Here the million
 * instructions are spent in a few milliseconds when every one is counted;
 * compiled, table.remove's loop counts for nothing and only the 10-ms clock
 * stops the rule. */
static void test_library_functions_written_in_lua_stay_counted_in_the_jit_state(void **state)
{
    fixture_t *fx = *state;
    pc_rule_result_t res;
    run_cashier_attack(fx, "",
                       "local t = {} for i = 1, 3000 do t[i] = i end\n"
                       "for k = 1, 1e9 do table.remove(t, 1) t[#t + 1] = k end",
                       &res);
    assert_int_equal(res.outcome, PC_RULE_TIMEOUT);
    if (!strstr(res.error.message, "instructions"))
        fail_msg("stopped by: %s", res.error.message);
    pc_rule_result_clear(&res);
    assert_cashier_still_answers(fx);
}

/* paycore's own Lua code (the argument builder, the answer's checker) is not
 * counted against the rule's budget, and a long list does not leave the
 * builder uncompiled: a trivial rule over 4,000 methods, many times, stays
 * within an instruction budget of 200,000. */
static void test_a_long_list_is_not_charged_to_the_rule(void **state)
{
    fixture_t *fx = *state;
    pc_rule_result_t res;
    run_cashier_attack(fx, "", "", &res); /* installs the plain rule */
    pc_rule_result_clear(&res);
    json_t *ctx = json_pack("{s:i}", "amount", 100);
    json_t *methods = json_array();
    for (int i = 0; i < 4000; i++) {
        char id[32];
        snprintf(id, sizeof id, "m%d", i);
        json_array_append_new(methods, json_pack("{s:s, s:s, s:b, s:i}", "method_id", id, "type",
                                                 "CARD", "available", 1, "max_amount", 100));
    }
    for (int round = 0; round < 40; round++) {
        pc_rules_cashier_rank(fx->rules, ctx, methods, &res);
        if (res.outcome != PC_RULE_OK)
            fail_msg("round %d: %s %s", round, pc_rule_outcome_name(res.outcome),
                     res.error.message);
        assert_int_equal(json_array_size(res.answer), 4000);
        pc_rule_result_clear(&res);
    }
    json_decref(ctx);
    json_decref(methods);
    assert_cashier_still_answers(fx);
}

/* The JIT and the FFI are loaded into that state for paycore's own builder:
 * a rule reaches neither, nor anything else beyond its allow-list. */
static void test_jit_and_ffi_are_not_reachable_from_the_jit_state(void **state)
{
    fixture_t *fx = *state;
    const char *attacks[] = {
        "return jit.off()",          "return ffi.C",
        "return require('ffi')",     "return _G.jit",
        "return getfenv(0)",         "return rawget(_G, 'jit')",
        "return package.loaded.ffi",
    };
    for (size_t i = 0; i < sizeof attacks / sizeof attacks[0]; i++) {
        pc_rule_result_t res;
        run_cashier_attack(fx, "", attacks[i], &res);
        if (res.outcome != PC_RULE_ERROR || !strstr(res.error.message, "undeclared global"))
            fail_msg("%s: outcome %s, %s", attacks[i], pc_rule_outcome_name(res.outcome),
                     res.error.message);
        pc_rule_result_clear(&res);
    }
    assert_cashier_still_answers(fx);
}

static long resident_kib(void)
{
    long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    assert_non_null(f);
    assert_int_equal(fscanf(f, "%ld %ld", &size, &resident), 2);
    fclose(f);
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static void make_and_free_sandboxes(int n)
{
    for (int i = 0; i < n; i++) {
        char err[128];
        pc__sandbox_t *sb = pc__sandbox_new("risk", NULL, err, sizeof err);
        assert_non_null(sb);
        /* Every other one with the JIT on and its machine code, as a
         * cashier_rank state has. */
        if (i % 2)
            assert_int_equal(pc__sandbox_use_records(
                                 sb, pc__point(PC_RULE_CASHIER_RANK)->list_shape,
                                 pc__point(PC_RULE_CASHIER_RANK)->ctx_shape, err, sizeof err),
                             0);
        pc_rule_error_t rerr;
        int ref = pc__sandbox_load(sb, "return function(ctx) return ctx end", 35, &rerr);
        assert_true(ref >= 0);
        pc__sandbox_free(sb);
    }
}

static void test_freed_sandboxes_give_their_memory_back(void **state)
{
    (void)state;
    /* Every reload swap and every refused build frees a state. */
    make_and_free_sandboxes(20);
    long before = resident_kib();
    make_and_free_sandboxes(500);
    long grown = resident_kib() - before;
    if (grown > 4096)
        fail_msg("500 freed sandboxes left %ld KiB resident", grown);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_os_execute_is_not_reachable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_io_open_is_not_reachable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_require_and_modules_are_not_reachable, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_code_loading_is_not_reachable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_string_dump_is_not_reachable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_debug_and_registry_are_not_reachable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_setting_a_global_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_text_that_looks_like_a_position_is_kept_whole,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_reading_an_undeclared_global_is_an_error_not_nil,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_standard_tables_are_read_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_library_tables_cannot_be_written_by_table_functions,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_protected_metatables_cannot_be_reached_or_replaced,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_string_metatable_tampering_is_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_random_and_coroutines_and_pcall_are_absent, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_rules_cannot_keep_state_between_calls, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_sort_orders_numbers_like_lua_and_keeps_its_errors,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_infinite_loop_times_out_to_review, setup, teardown),
        cmocka_unit_test_setup_teardown(test_loop_inside_a_library_callback_times_out, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_wall_clock_budget_stops_a_rule_the_instruction_budget_allows, setup_wall_clock,
            teardown),
        cmocka_unit_test_setup_teardown(test_memory_bomb_is_stopped_as_oom, setup, teardown),
        cmocka_unit_test_setup_teardown(test_single_huge_allocation_is_stopped_as_oom, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_memory_cap_from_the_hook_also_stops_a_bomb,
                                        setup_hook_memory_cap, teardown),
        cmocka_unit_test_setup_teardown(test_catastrophic_pattern_is_refused_before_it_runs, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_an_answer_that_holds_itself_is_shown_small_and_quickly,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_recursion_through_library_callbacks_is_an_error_not_a_crash, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_recursion_through_gsub_is_stopped_on_a_small_thread_stack, setup, teardown),
        cmocka_unit_test_setup_teardown(test_work_in_library_functions_cannot_escape_the_budget,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_instructions_on_large_objects_do_not_overrun_the_budget, setup_wall_clock,
            teardown),
        cmocka_unit_test_setup_teardown(test_linear_library_work_is_charged_to_the_budget,
                                        setup_wall_clock, teardown),
        cmocka_unit_test_setup_teardown(test_a_rule_logs_at_most_twenty_lines_a_call, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_hot_loops_in_the_jit_state_hit_the_instruction_budget,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_hot_loops_in_the_jit_state_hit_the_clock,
                                        setup_wall_clock, teardown),
        cmocka_unit_test_setup_teardown(test_memory_bomb_in_the_jit_state_is_stopped_as_oom, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_jit_and_ffi_are_not_reachable_from_the_jit_state,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_library_functions_written_in_lua_stay_counted_in_the_jit_state,
            setup_default_budgets, teardown),
        cmocka_unit_test_setup_teardown(test_a_long_list_is_not_charged_to_the_rule, setup,
                                        teardown),
        cmocka_unit_test(test_freed_sandboxes_give_their_memory_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
