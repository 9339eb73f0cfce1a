/* Conversion between jansson values and Lua values for the rules engine.
 *
 * Amounts are integers everywhere in paycore; Lua (LuaJIT) only has doubles,
 * which hold integers exactly up to 2^53. Converting a JSON integer beyond
 * ±(2^53 - 1) is therefore refused rather than silently rounded, and a Lua
 * number comes back as a JSON integer only when it is integral and in range.
 * JSON null inside an object becomes an absent field (nil); null inside an
 * array would leave a hole that breaks ipairs, so it is refused.
 *
 * Needs: LuaJIT, jansson. The functions push onto / read from the given state
 * and may raise a Lua error on out-of-memory, so call them in protected mode
 * (lua_cpcall) when the state has a memory cap. */
#ifndef PC_RULES_CONVERT_H
#define PC_RULES_CONVERT_H
#include <jansson.h>
#include <lua.h>
#include <stddef.h>
#include <stdint.h>

/* The largest integer magnitude a Lua number holds exactly: 2^53 - 1. */
#define PC_RULES_MAX_SAFE_INTEGER 9007199254740991LL

/* Pushes v converted to a Lua value. On a value that cannot be passed exactly
 * (integer beyond 2^53, null in an array, nesting deeper than 32) pushes
 * nothing, writes "<path>: reason" into err and returns -1; path names the
 * argument (e.g. "ctx") so the message points at the field. Returns 0 after
 * pushing one value. */
int pc__json_push(lua_State *L, const json_t *v, const char *path, char *err, size_t errlen);

/* The same for a value found levels deep inside the argument path names
 * (e.g. "methods[3]", 1), so that the nesting limit counts from the top. */
int pc__json_push_nested(lua_State *L, const json_t *v, const char *path, int levels, char *err,
                         size_t errlen);

/* Returns a new JSON value describing the Lua value at idx (tables become
 * arrays when their keys are exactly 1..n, objects otherwise; functions and
 * other non-data values become "<function>" etc.). Meant for showing a rule's
 * answer to a person, so it is bounded whatever the answer: a table met again
 * inside itself becomes "<cycle>", nesting beyond 32 "<too deep>", and after
 * 1000 values or 64 KiB of text the rest is cut and marked "<truncated>".
 * Never fails on shape, returns NULL only if allocation fails. The caller owns
 * the returned reference. */
json_t *pc__lua_to_json(lua_State *L, int idx);

/* Reads the Lua number at idx as an integer within ±(2^53 - 1). Returns 0 and
 * stores it in *out, or -1 when the value is not a number, not integral or out
 * of range. */
int pc__lua_to_int(lua_State *L, int idx, int64_t *out);

#endif
