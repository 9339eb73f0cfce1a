#include "rules/lib.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "core/log.h"
#include "rules/convert.h"
#include "rules/sandbox.h"

/* Worst-case steps a pattern function (or a sort without a comparison
 * function) may take before it is refused. The matcher runs in C, out of reach
 * of the instruction hook; at roughly a few nanoseconds per step this keeps one
 * call within the default time budget. What a call did estimate is also
 * charged to the time budget afterwards (pc__sandbox_charge), so that many
 * calls just below the limit cannot add up unseen between two hook ticks. */
#define PATTERN_STEP_LIMIT 1e7
#define SORT_STEP_LIMIT 1e7
#define SORT_LIMIT 100000
/* Library calls that call back into the rule, one inside another. */
#define MAX_NESTING 16
/* The longest string rep, concat, gsub and format may return. Every C
 * function is at least linear in its input, and a loop of calls on one long
 * string runs hundreds of them between two ticks of the hook. */
#define MAX_STRING (256 * 1024)

/* Counts work done in C by a library function against the call's time
 * budget (see pc__sandbox_charge). */
static void charge(lua_State *L, double steps)
{
    pc__sandbox_t *sb = pc__sandbox_current();
    if (sb)
        pc__sandbox_charge(sb, L, steps);
}

/* ---- money helpers --------------------------------------------------------- */

/* Reads argument arg as an exact integer amount or raises an error naming
 * the helper and the argument. */
static int64_t check_integer(lua_State *L, int arg, const char *fn, const char *what)
{
    int64_t v;
    if (pc__lua_to_int(L, arg, &v) == 0)
        return v;
    if (lua_type(L, arg) == LUA_TNUMBER)
        luaL_error(L, "paycore.%s: %s must be an integer within 2^53 (got %f)", fn, what,
                   lua_tonumber(L, arg));
    else
        luaL_error(L, "paycore.%s: %s must be an integer (got %s)", fn, what,
                   luaL_typename(L, arg));
    return 0;
}

static void push_checked(lua_State *L, __int128 v, const char *fn)
{
    if (v > PC_RULES_MAX_SAFE_INTEGER || v < -PC_RULES_MAX_SAFE_INTEGER)
        luaL_error(L, "paycore.%s: result is beyond 2^53 and would lose precision", fn);
    lua_pushnumber(L, (lua_Number)(int64_t)v);
}

static int l_percent_of(lua_State *L)
{
    int64_t amount = check_integer(L, 1, "percent_of", "amount");
    int64_t bp = check_integer(L, 2, "percent_of", "basis points");
    __int128 p = (__int128)amount * bp;
    __int128 q = p / 10000, r = p % 10000;
    /* Half away from zero: 0.5 of a minor unit is charged, as acquirers do. */
    if (r * 2 >= 10000)
        q++;
    else if (r * 2 <= -10000)
        q--;
    push_checked(L, q, "percent_of");
    return 1;
}

static int l_add(lua_State *L)
{
    int n = lua_gettop(L);
    __int128 sum = 0;
    for (int i = 1; i <= n; i++) {
        sum += check_integer(L, i, "add", "every argument");
        if (sum > PC_RULES_MAX_SAFE_INTEGER || sum < -PC_RULES_MAX_SAFE_INTEGER)
            luaL_error(L, "paycore.add: result is beyond 2^53 and would lose precision");
    }
    push_checked(L, sum, "add");
    return 1;
}

static int l_sub(lua_State *L)
{
    int64_t a = check_integer(L, 1, "sub", "a");
    int64_t b = check_integer(L, 2, "sub", "b");
    push_checked(L, (__int128)a - b, "sub");
    return 1;
}

static int l_mul(lua_State *L)
{
    int64_t a = check_integer(L, 1, "mul", "amount");
    int64_t n = check_integer(L, 2, "mul", "factor");
    push_checked(L, (__int128)a * n, "mul");
    return 1;
}

static int l_idiv(lua_State *L)
{
    int64_t a = check_integer(L, 1, "idiv", "a");
    int64_t b = check_integer(L, 2, "idiv", "b");
    if (b == 0)
        return luaL_error(L, "paycore.idiv: division by zero");
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0)))
        q--;
    lua_pushnumber(L, (lua_Number)q);
    return 1;
}

static int l_is_amount(lua_State *L)
{
    int64_t v;
    lua_pushboolean(L, pc__lua_to_int(L, 1, &v) == 0);
    return 1;
}

static int l_contains(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TTABLE) {
        lua_pushboolean(L, 0);
        return 1;
    }
    size_t n = lua_objlen(L, 1), i;
    int found = 0;
    for (i = 1; i <= n && !found; i++) {
        lua_rawgeti(L, 1, (int)i);
        found = lua_rawequal(L, -1, 2);
        lua_pop(L, 1);
    }
    /* Linear in the list, in C: charged, or a loop of calls on a long list
     * ran for several budgets between two ticks of the hook. */
    charge(L, (double)i);
    lua_pushboolean(L, found);
    return 1;
}

static int l_days_between(lua_State *L)
{
    int64_t from = check_integer(L, 1, "days_between", "from");
    int64_t to = check_integer(L, 2, "days_between", "to");
    int64_t d = to - from;
    int64_t q = d / 86400;
    if (d % 86400 != 0 && d < 0)
        q--;
    lua_pushnumber(L, (lua_Number)q);
    return 1;
}

static int l_log(lua_State *L)
{
    const char *level = luaL_checkstring(L, 1);
    size_t len;
    const char *msg = lua_tolstring(L, 2, &len);
    if (!msg)
        msg = luaL_typename(L, 2);
    pc_log_level_t lv;
    if (pc_log_parse_level(level, &lv) != 0)
        return luaL_error(L, "paycore.log: level must be \"debug\", \"info\", \"warn\" or "
                             "\"error\"");
    pc__sandbox_t *sb = pc__sandbox_current();
    if (!sb || sb->quiet)
        return 0;
    /* A rule logging in a loop would write megabytes per payment, on the
     * loop thread, out of the time budget's sight (a slow stderr blocks,
     * using no CPU): PC_RULES_LOG_LINES lines a call, then one saying so. */
    if (sb->log_lines > PC_RULES_LOG_LINES)
        return 0;
    if (sb->log_lines++ == PC_RULES_LOG_LINES) {
        pc_log_warn("rules.log",
                    "rule %s: more than %d paycore.log lines in one call: the rest "
                    "of this call's are dropped",
                    sb->rule_name, PC_RULES_LOG_LINES);
        return 0;
    }
    json_t *fields = json_object();
    json_object_set_new(fields, "rule", json_string(sb->rule_name));
    lua_Debug ar;
    if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "Sl", &ar) && ar.source[0] == '@') {
        json_object_set_new(fields, "file", json_string(ar.source + 1));
        json_object_set_new(fields, "line", json_integer(ar.currentline));
    }
    pc_log_fields(lv, "rules.log", fields, "%.1000s", msg);
    return 0;
}

void pc__lib_push_paycore(lua_State *L)
{
    static const luaL_Reg fns[] = {{"log", l_log},
                                   {"percent_of", l_percent_of},
                                   {"add", l_add},
                                   {"sub", l_sub},
                                   {"mul", l_mul},
                                   {"idiv", l_idiv},
                                   {"is_amount", l_is_amount},
                                   {"contains", l_contains},
                                   {"days_between", l_days_between},
                                   {NULL, NULL}};
    lua_newtable(L);
    for (const luaL_Reg *r = fns; r->name; r++) {
        lua_pushcfunction(L, r->func);
        lua_setfield(L, -2, r->name);
    }
    lua_pushnumber(L, (lua_Number)PC_RULES_MAX_SAFE_INTEGER);
    lua_setfield(L, -2, "MAX_AMOUNT");
}

/* ---- guards --------------------------------------------------------------- */

/* Calls the original library function kept in upvalue 1 with all arguments. */
static int call_original(lua_State *L)
{
    int n = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, n, LUA_MULTRET);
    return lua_gettop(L);
}

/* Calls the original of a library function that can call back into the rule
 * (gsub with a function or table, sort with a comparison function or __lt,
 * format with __tostring). Each level of such calls puts the C frames of the
 * library function (gsub alone keeps an 8 KiB buffer there) and of lua_call on
 * the thread's C stack, which no Lua budget sees: a rule recursing through gsub
 * would overflow it and crash the process long before its instruction budget
 * or memory cap stop it. So the levels are counted and refused beyond
 * MAX_NESTING. The count is not unwound by an error; the sandbox resets it at
 * the start of every call, and rules cannot catch errors (no pcall), so an
 * error always ends the call. */
static int call_back_in(lua_State *L, const char *fn)
{
    pc__sandbox_t *sb = pc__sandbox_current();
    if (!sb)
        return call_original(L);
    if (sb->nesting >= MAX_NESTING)
        return luaL_error(L,
                          "%s: nested too deeply (more than %d library calls that call back into "
                          "the rule, e.g. gsub with a function, sort with a comparison, inside "
                          "each other)",
                          fn, MAX_NESTING);
    sb->nesting++;
    int n = call_original(L);
    sb->nesting--;
    return n;
}

/* Refuses a string result (at idx) longer than MAX_STRING. The work to build it
 * is bounded by the memory cap; refusing the result keeps later calls on it
 * (which the instruction hook cannot interrupt either) cheap. */
static void check_result_length(lua_State *L, int idx, const char *fn)
{
    size_t len = 0;
    if (lua_type(L, idx) == LUA_TSTRING)
        lua_tolstring(L, idx, &len);
    if (len > MAX_STRING)
        luaL_error(L, "%s: a result of %d bytes is beyond the %d KiB limit on strings in rules", fn,
                   (int)len, MAX_STRING / 1024);
}

/* Charges a string result (at idx) by its length: work done in C. */
static void charge_result(lua_State *L, int idx)
{
    size_t len = 0;
    if (lua_type(L, idx) == LUA_TSTRING)
        lua_tolstring(L, idx, &len);
    charge(L, (double)len);
}

/* Estimates the worst-case number of matcher steps for a Lua pattern over a
 * subject of n bytes. Every pattern item is tried at each position of the
 * subject a match can reach, so the pattern's length is one factor; each
 * unbounded quantifier (*, +, -), balance match (%b) and back-reference
 * (%1-%9, a comparison as long as the capture) can make the matcher retry over
 * the whole rest of the subject, an unanchored pattern is retried from every
 * start position, and each '?' doubles the alternatives. caret_anchors is 0
 * for gmatch, which in LuaJIT reads a leading '^' as a plain character. The
 * estimate errs on the high side. */
static double pattern_cost(const char *p, size_t plen, size_t n, int caret_anchors)
{
    size_t i = 0;
    int loops = 0, optional = 0, anchored = 0;
    if (caret_anchors && plen > 0 && p[0] == '^') {
        anchored = 1;
        i = 1;
    }
    while (i < plen) {
        char c = p[i];
        if (c == '(' || c == ')') {
            i++;
            continue;
        }
        if (c == '%' && i + 1 < plen) {
            if (p[i + 1] == 'b') {
                loops++;
                i += 4;
                continue;
            }
            if (p[i + 1] == 'f') {
                i += 2;
                continue; /* the set that follows is read next */
            }
            if (p[i + 1] >= '0' && p[i + 1] <= '9')
                loops++;
            i += 2;
        } else if (c == '[') {
            size_t j = i + 1;
            if (j < plen && p[j] == '^')
                j++;
            if (j < plen && p[j] == ']')
                j++;
            while (j < plen && p[j] != ']') {
                if (p[j] == '%')
                    j++;
                j++;
            }
            i = j + 1;
        } else {
            i++;
        }
        if (i < plen && (p[i] == '*' || p[i] == '+' || p[i] == '-')) {
            loops++;
            i++;
        } else if (i < plen && p[i] == '?') {
            optional++;
            i++;
        }
    }
    double base = n > 1 ? (double)n : 1.0;
    int exponent = loops + (anchored ? 0 : 1);
    return pow(base, exponent) * pow(2.0, optional > 60 ? 60 : optional) *
           (plen > 1 ? (double)plen : 1.0);
}

/* A plain search (find with plain = true, or a pattern without special
 * characters) compares the pattern at every start position: memcmp does a
 * matcher step's work on several bytes at once. */
static double plain_cost(size_t plen, size_t n)
{
    if (plen == 0 || plen > n)
        return 1.0;
    return (double)(n - plen + 1) * (1.0 + (double)plen / 8.0);
}

typedef enum { PAT_FIND, PAT_MATCH, PAT_GMATCH, PAT_GSUB } pattern_fn_t;

static const char *const pattern_fn_names[] = {"string.find", "string.match", "string.gmatch",
                                               "string.gsub"};

static int guarded_pattern(lua_State *L, pattern_fn_t fn)
{
    const char *name = pattern_fn_names[fn];
    double cost = 0;
    int ts = lua_type(L, 1), tp = lua_type(L, 2);
    if ((ts == LUA_TSTRING || ts == LUA_TNUMBER) && (tp == LUA_TSTRING || tp == LUA_TNUMBER)) {
        size_t n, plen;
        lua_tolstring(L, 1, &n);
        const char *p = lua_tolstring(L, 2, &plen);
        if (fn == PAT_FIND && lua_toboolean(L, 4))
            cost = plain_cost(plen, n);
        else
            cost = pattern_cost(p, plen, n, fn != PAT_GMATCH);
        if (cost > PATTERN_STEP_LIMIT) {
            /* lua_pushfstring has no precision: the pattern is cut here. */
            char shown[48];
            snprintf(shown, sizeof shown, "%.40s%s", p, plen > 40 ? "..." : "");
            return luaL_error(L,
                              "%s: pattern \"%s\" (%d bytes) is too costly on a %d-byte string "
                              "(its worst case is beyond 10^7 steps); use a simpler or shorter "
                              "pattern, an anchor (^), or a shorter input",
                              name, shown, (int)plen, (int)n);
        }
    }
    int nres;
    if (fn == PAT_GSUB && (lua_type(L, 3) == LUA_TFUNCTION || lua_type(L, 3) == LUA_TTABLE))
        nres = call_back_in(L, name);
    else
        nres = call_original(L);
    if (fn == PAT_GSUB)
        check_result_length(L, 1, name);
    /* gmatch only makes the iterator here; its steps together scan the subject
     * once, within the same estimate, which is charged now, before they run. */
    charge(L, cost);
    return nres;
}

static int g_find(lua_State *L)
{
    return guarded_pattern(L, PAT_FIND);
}

static int g_match(lua_State *L)
{
    return guarded_pattern(L, PAT_MATCH);
}

static int g_gmatch(lua_State *L)
{
    return guarded_pattern(L, PAT_GMATCH);
}

static int g_gsub(lua_State *L)
{
    return guarded_pattern(L, PAT_GSUB);
}

static int g_format(lua_State *L)
{
    int nres = call_back_in(L, "string.format");
    check_result_length(L, 1, "string.format");
    return nres;
}

static int g_concat(lua_State *L)
{
    int nres = call_original(L);
    check_result_length(L, 1, "table.concat");
    charge_result(L, 1);
    return nres;
}

/* String functions linear in what they return (upper, lower, reverse, sub):
 * charged by its length. */
static int g_linear(lua_State *L)
{
    int nres = call_original(L);
    charge_result(L, 1);
    return nres;
}

static int g_rep(lua_State *L)
{
    size_t len = 0, seplen = 0;
    if (lua_type(L, 1) == LUA_TSTRING || lua_type(L, 1) == LUA_TNUMBER)
        lua_tolstring(L, 1, &len);
    if (lua_type(L, 3) == LUA_TSTRING || lua_type(L, 3) == LUA_TNUMBER)
        lua_tolstring(L, 3, &seplen);
    double n = lua_tonumber(L, 2);
    double total = n > 0 ? (double)len * n + (double)seplen * (n - 1) : 0;
    pc__sandbox_t *sb = pc__sandbox_current();
    /* Checked here, not only by the allocator, because with the hook-based cap
     * a single rep could allocate far past the limit between two hook ticks. */
    if (sb && total > (double)sb->limit) {
        sb->oom = true;
        return luaL_error(L, "string.rep: a result of %f bytes is beyond the rule's memory limit",
                          total);
    }
    if (total > MAX_STRING) {
        char bytes[32]; /* lua_pushfstring has no precision */
        snprintf(bytes, sizeof bytes, "%.0f", total);
        return luaL_error(L,
                          "string.rep: a result of %s bytes is beyond the %d KiB limit on strings "
                          "in rules",
                          bytes, MAX_STRING / 1024);
    }
    return call_original(L);
}

/* A short list of plain numbers without a comparison function is what
 * ranking rules sort most (keys packed into numbers). LuaJIT's sort compares
 * through the C API (lua_lessthan per comparison); reading the numbers out,
 * an insertion sort and writing them back is several times cheaper and gives
 * the same result: the same raw reads and writes, and equal numbers cannot be
 * told apart. NaN (no order) and anything else take the original. */
#define FAST_SORT_MAX 64

static int sort_numbers(lua_State *L, size_t n)
{
    lua_Number v[FAST_SORT_MAX];
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, 1, (int)i + 1);
        if (lua_type(L, -1) != LUA_TNUMBER) {
            lua_pop(L, 1);
            return 0;
        }
        v[i] = lua_tonumber(L, -1);
        lua_pop(L, 1);
        if (v[i] != v[i])
            return 0;
    }
    for (size_t i = 1; i < n; i++) {
        lua_Number x = v[i];
        size_t j = i;
        for (; j > 0 && x < v[j - 1]; j--)
            v[j] = v[j - 1];
        v[j] = x;
    }
    for (size_t i = 0; i < n; i++) {
        lua_pushnumber(L, v[i]);
        lua_rawseti(L, 1, (int)i + 1);
    }
    return 1;
}

/* The length of the longest string among the list's first n elements. */
static size_t longest_string(lua_State *L, size_t n)
{
    size_t longest = 0;
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, (int)i);
        if (lua_type(L, -1) == LUA_TSTRING) {
            size_t len = lua_objlen(L, -1);
            if (len > longest)
                longest = len;
        }
        lua_pop(L, 1);
    }
    return longest;
}

static int g_sort(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TTABLE)
        return call_original(L); /* for its error */
    size_t n = lua_objlen(L, 1);
    if (n > SORT_LIMIT)
        return luaL_error(L, "table.sort: lists longer than %d elements cannot be sorted in a rule",
                          SORT_LIMIT);
    if (!lua_isnoneornil(L, 2))
        return call_back_in(L, "table.sort"); /* comparisons run in Lua, under the hook */
    if (n <= FAST_SORT_MAX && sort_numbers(L, n))
        return 0;
    /* Without a comparison function the sort runs in C from start to end, and
     * comparing two strings reads them up to their first difference: many
     * long, equal strings make every one of its n log n comparisons long. */
    size_t longest = longest_string(L, n);
    double cost = (double)n * log2((double)n + 1) * (1.0 + (double)longest / 16.0);
    if (cost > SORT_STEP_LIMIT)
        return luaL_error(L,
                          "table.sort: sorting %d elements with strings of up to %d bytes is too "
                          "costly (its worst case is beyond 10^7 steps); sort shorter keys",
                          (int)n, (int)longest);
    int nres = call_back_in(L, "table.sort"); /* __lt metamethods can call into Lua */
    charge(L, cost);
    return nres;
}

static void wrap(lua_State *L, int idx, const char *name, lua_CFunction guard)
{
    lua_getfield(L, idx, name);
    lua_pushcclosure(L, guard, 1);
    lua_setfield(L, idx, name);
}

void pc__lib_guard_string(lua_State *L, int idx)
{
    wrap(L, idx, "find", g_find);
    wrap(L, idx, "match", g_match);
    wrap(L, idx, "gmatch", g_gmatch);
    wrap(L, idx, "gsub", g_gsub);
    wrap(L, idx, "rep", g_rep);
    wrap(L, idx, "format", g_format);
    wrap(L, idx, "upper", g_linear);
    wrap(L, idx, "lower", g_linear);
    wrap(L, idx, "reverse", g_linear);
    wrap(L, idx, "sub", g_linear);
}

void pc__lib_guard_table(lua_State *L, int idx)
{
    wrap(L, idx, "sort", g_sort);
    wrap(L, idx, "concat", g_concat);
}
