#include "rules/convert.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#define MAX_DEPTH 32

/* The path to the value being converted is kept as a stack of keys (or array
 * positions) and only formatted when something is refused, so the common case
 * pays nothing for good error messages. */
typedef struct {
    const char *root;
    const char *key[MAX_DEPTH + 1];
    size_t index[MAX_DEPTH + 1];
    int depth;
    char *err;
    size_t errlen;
} push_state_t;

static void refuse(push_state_t *st, const char *why)
{
    char path[512];
    size_t n = (size_t)snprintf(path, sizeof path, "%s", st->root);
    for (int i = 0; i < st->depth && n < sizeof path; i++) {
        if (st->key[i])
            n += (size_t)snprintf(path + n, sizeof path - n, ".%s", st->key[i]);
        else
            n += (size_t)snprintf(path + n, sizeof path - n, "[%zu]", st->index[i] + 1);
    }
    snprintf(st->err, st->errlen, "%s: %s", path, why);
}

static int push_value(lua_State *L, const json_t *v, push_state_t *st)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        if (st->depth >= MAX_DEPTH) {
            refuse(st, "nested deeper than 32 levels");
            return -1;
        }
        lua_createtable(L, 0, (int)json_object_size(v));
        /* Raw sets with known key lengths: lua_setfield would strlen each key
         * and look for metamethods on a table that has none. */
        for (void *it = json_object_iter((json_t *)v); it;
             it = json_object_iter_next((json_t *)v, it)) {
            json_t *item = json_object_iter_value(it);
            if (json_is_null(item))
                continue;
            const char *k = json_object_iter_key(it);
            lua_pushlstring(L, k, json_object_iter_key_len(it));
            st->key[st->depth] = k;
            st->depth++;
            int rc = push_value(L, item, st);
            st->depth--;
            if (rc < 0) {
                lua_pop(L, 2);
                return -1;
            }
            lua_rawset(L, -3);
        }
        return 0;
    }
    case JSON_ARRAY: {
        if (st->depth >= MAX_DEPTH) {
            refuse(st, "nested deeper than 32 levels");
            return -1;
        }
        size_t n = json_array_size(v);
        lua_createtable(L, (int)n, 0);
        for (size_t i = 0; i < n; i++) {
            json_t *item = json_array_get(v, i);
            st->key[st->depth] = NULL;
            st->index[st->depth] = i;
            st->depth++;
            int rc;
            if (json_is_null(item)) {
                refuse(st, "null inside a list cannot be passed to a rule");
                rc = -1;
            } else {
                rc = push_value(L, item, st);
            }
            st->depth--;
            if (rc < 0) {
                lua_pop(L, 1);
                return -1;
            }
            lua_rawseti(L, -2, (int)i + 1);
        }
        return 0;
    }
    case JSON_STRING:
        lua_pushlstring(L, json_string_value(v), json_string_length(v));
        return 0;
    case JSON_INTEGER: {
        json_int_t i = json_integer_value(v);
        if (i > PC_RULES_MAX_SAFE_INTEGER || i < -PC_RULES_MAX_SAFE_INTEGER) {
            char why[96];
            snprintf(why, sizeof why, "integer %lld is beyond 2^53 and cannot be passed exactly",
                     (long long)i);
            refuse(st, why);
            return -1;
        }
        lua_pushnumber(L, (lua_Number)i);
        return 0;
    }
    case JSON_REAL:
        lua_pushnumber(L, json_real_value(v));
        return 0;
    case JSON_TRUE:
        lua_pushboolean(L, 1);
        return 0;
    case JSON_FALSE:
        lua_pushboolean(L, 0);
        return 0;
    case JSON_NULL:
        lua_pushnil(L);
        return 0;
    }
    refuse(st, "unsupported JSON value");
    return -1;
}

int pc__json_push(lua_State *L, const json_t *v, const char *path, char *err, size_t errlen)
{
    push_state_t st = {.root = path, .depth = 0, .err = err, .errlen = errlen};
    if (!v) {
        lua_pushnil(L);
        return 0;
    }
    return push_value(L, v, &st);
}

int pc__lua_to_int(lua_State *L, int idx, int64_t *out)
{
    if (lua_type(L, idx) != LUA_TNUMBER)
        return -1;
    lua_Number n = lua_tonumber(L, idx);
    if (!(n >= -(lua_Number)PC_RULES_MAX_SAFE_INTEGER &&
          n <= (lua_Number)PC_RULES_MAX_SAFE_INTEGER))
        return -1;
    if (floor(n) != n)
        return -1;
    *out = (int64_t)n;
    return 0;
}

static json_t *to_json(lua_State *L, int idx, int depth);

/* A table is shown as an array when its keys are exactly 1..n. */
static int is_sequence(lua_State *L, int idx, size_t *len)
{
    size_t n = lua_objlen(L, idx), count = 0;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        count++;
        if (lua_type(L, -1) != LUA_TNUMBER) {
            lua_pop(L, 1);
            return 0;
        }
    }
    *len = n;
    return count == n;
}

static json_t *table_to_json(lua_State *L, int idx, int depth)
{
    if (depth > MAX_DEPTH)
        return json_string("<too deep>");
    if (!lua_checkstack(L, 4))
        return json_string("<too deep>");
    size_t n;
    if (is_sequence(L, idx, &n)) {
        json_t *arr = json_array();
        for (size_t i = 1; arr && i <= n; i++) {
            lua_rawgeti(L, idx, (int)i);
            json_array_append_new(arr, to_json(L, lua_gettop(L), depth + 1));
            lua_pop(L, 1);
        }
        return arr;
    }
    json_t *obj = json_object();
    lua_pushnil(L);
    while (obj && lua_next(L, idx) != 0) {
        char keybuf[64];
        const char *key;
        if (lua_type(L, -2) == LUA_TSTRING) {
            key = lua_tostring(L, -2);
        } else if (lua_type(L, -2) == LUA_TNUMBER) {
            snprintf(keybuf, sizeof keybuf, "%.17g", lua_tonumber(L, -2));
            key = keybuf;
        } else {
            snprintf(keybuf, sizeof keybuf, "<%s>", luaL_typename(L, -2));
            key = keybuf;
        }
        json_object_set_new(obj, key, to_json(L, lua_gettop(L), depth + 1));
        lua_pop(L, 1);
    }
    return obj;
}

static json_t *to_json(lua_State *L, int idx, int depth)
{
    int64_t i;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        return json_null();
    case LUA_TBOOLEAN:
        return json_boolean(lua_toboolean(L, idx));
    case LUA_TNUMBER:
        if (pc__lua_to_int(L, idx, &i) == 0)
            return json_integer(i);
        return json_real(lua_tonumber(L, idx));
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        json_t *str = json_stringn(s, len);
        /* jansson only holds valid UTF-8; a rule may build arbitrary bytes. */
        return str ? str : json_string("<binary string>");
    }
    case LUA_TTABLE:
        return table_to_json(L, idx, depth);
    default: {
        char buf[32];
        snprintf(buf, sizeof buf, "<%s>", luaL_typename(L, idx));
        return json_string(buf);
    }
    }
}

json_t *pc__lua_to_json(lua_State *L, int idx)
{
    if (idx < 0 && idx > LUA_REGISTRYINDEX)
        idx = lua_gettop(L) + idx + 1;
    return to_json(L, idx, 0);
}
