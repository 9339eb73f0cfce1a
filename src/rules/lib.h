/* What paycore adds to, or changes in, the Lua a rule can use (internal to
 * rules/):
 *
 *   paycore.log(level, msg)            level "debug"|"info"|"warn"|"error"; logged
 *                                      as event "rules.log" with the rule and line;
 *                                      PC_RULES_LOG_LINES a call, the rest dropped
 *   paycore.percent_of(amount, bp)     amount * bp / 10000 in integer math, rounded
 *                                      half away from zero (fees: rate_bp)
 *   paycore.add(a, b, ...)             sum of integer amounts
 *   paycore.sub(a, b)                  a - b
 *   paycore.mul(a, n)                  a * n (n an integer)
 *   paycore.idiv(a, b)                 floor(a / b) for integers, b ~= 0
 *   paycore.is_amount(x)               true for an integer within ±(2^53 - 1)
 *   paycore.contains(list, value)      true when value is an element of list
 *   paycore.days_between(from, to)     whole days from one Unix time to another
 *   paycore.MAX_AMOUNT                 2^53 - 1
 *
 * Every money helper checks its arguments are integers and that the result is
 * still exact (within 2^53), and raises an error otherwise, so a rule can never
 * silently produce a rounded amount.
 *
 * The guards replace library functions whose work happens in C, where the
 * instruction hook cannot interrupt them: pattern functions (find, match,
 * gmatch, gsub, plain find included) refuse subject/pattern combinations whose
 * worst case is beyond ~10^7 steps (the pattern's length, each loop and each
 * back-reference multiply the subject's length); table.sort refuses lists
 * beyond 100000 elements and, without a comparison function, lists of long
 * strings; string.rep, table.concat, string.gsub and string.format refuse
 * results beyond 256 KiB (rep also beyond the state's memory cap). What the
 * guarded calls estimate is charged to the time budget, as is the work of
 * paycore.contains, table.concat, upper, lower, reverse and sub (linear in
 * their list or result). gsub with a function
 * or table, sort and format can call back into the rule: more than 16 such
 * calls inside each other are refused ("nested too deeply"), as each level
 * takes C stack that no budget sees.
 *
 * Needs LuaJIT, core/log.h and rules/sandbox.h (for the running rule). */
#ifndef PC_RULES_LIB_H
#define PC_RULES_LIB_H
#include <lua.h>

/* paycore.log lines one call may write. */
#define PC_RULES_LOG_LINES 20

/* Pushes a new table holding the paycore helpers. */
void pc__lib_push_paycore(lua_State *L);

/* Replaces the pattern functions and rep in the string table at idx by their
 * guarded versions. */
void pc__lib_guard_string(lua_State *L, int idx);

/* Replaces sort in the table library table at idx by its guarded version. */
void pc__lib_guard_table(lua_State *L, int idx);

#endif
