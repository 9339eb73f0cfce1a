#include "rules/convert.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
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
    int base; /* levels above the value pushed, for the nesting limit */
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
        if (st->depth + st->base >= MAX_DEPTH) {
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
        if (st->depth + st->base >= MAX_DEPTH) {
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
    return pc__json_push_nested(L, v, path, 0, err, errlen);
}

int pc__json_push_nested(lua_State *L, const json_t *v, const char *path, int levels, char *err,
                         size_t errlen)
{
    push_state_t st = {.root = path, .depth = 0, .err = err, .errlen = errlen, .base = levels};
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

/* ---- showing a rule's answer ------------------------------------------------ */

/* A malformed answer is shown to a person (examples, errors), so it is walked
 * in C, out of reach of the rule's budgets and outside its memory cap. A rule
 * can return a table that holds itself, or a few tables that each hold the
 * next one twice: walked naively, 40 such tables are 2^40 nodes. So the walk
 * marks a table met again on its own path as "<cycle>", and stops at a node
 * and a byte budget, after which what is left is shown as "<truncated>". */
#define SHOW_MAX_NODES 1000
#define SHOW_MAX_BYTES (64 * 1024)
#define TRUNCATED "<truncated>"

typedef struct {
    lua_State *L;
    const void *path[MAX_DEPTH + 1]; /* the tables being shown, outermost first */
    int depth;
    size_t nodes, bytes;
    int full; /* a budget is spent: nothing more is shown */
} show_state_t;

/* Counts one node of about bytes bytes; returns 0 (and marks the walk full)
 * when that is beyond a budget. */
static int show_charge(show_state_t *st, size_t bytes)
{
    if (st->full || st->nodes >= SHOW_MAX_NODES || bytes > SHOW_MAX_BYTES - st->bytes) {
        st->full = 1;
        return 0;
    }
    st->nodes++;
    st->bytes += bytes;
    return 1;
}

static json_t *show_value(show_state_t *st, int idx);

/* A table is shown as an array when its keys are exactly 1..n. Only as many
 * keys are looked at as could still be shown: a longer table is cut short
 * anyway, and is shown as an array when the keys seen were all numbers. */
static int is_sequence(show_state_t *st, int idx, size_t *len)
{
    lua_State *L = st->L;
    size_t n = lua_objlen(L, idx), count = 0;
    size_t limit = SHOW_MAX_NODES - st->nodes + 1;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        count++;
        if (lua_type(L, -1) != LUA_TNUMBER) {
            lua_pop(L, 1);
            return 0;
        }
        if (count > limit) {
            lua_pop(L, 1);
            *len = n;
            return n > 0;
        }
    }
    *len = n;
    return count == n;
}

static json_t *show_table(show_state_t *st, int idx)
{
    lua_State *L = st->L;
    const void *self = lua_topointer(L, idx);
    for (int i = 0; i < st->depth; i++)
        if (st->path[i] == self)
            return json_string("<cycle>");
    if (st->depth >= MAX_DEPTH || !lua_checkstack(L, 4))
        return json_string("<too deep>");
    st->path[st->depth++] = self;
    size_t n;
    json_t *out;
    if (is_sequence(st, idx, &n)) {
        out = json_array();
        for (size_t i = 1; out && i <= n; i++) {
            if (st->full) {
                json_array_append_new(out, json_string(TRUNCATED));
                break;
            }
            lua_rawgeti(L, idx, (int)i);
            json_array_append_new(out, show_value(st, lua_gettop(L)));
            lua_pop(L, 1);
        }
    } else {
        out = json_object();
        lua_pushnil(L);
        while (out && lua_next(L, idx) != 0) {
            if (st->full) {
                lua_pop(L, 2);
                json_object_set_new(out, TRUNCATED, json_string(TRUNCATED));
                break;
            }
            char keybuf[64];
            const char *key;
            size_t klen;
            if (lua_type(L, -2) == LUA_TSTRING) {
                key = lua_tolstring(L, -2, &klen);
            } else if (lua_type(L, -2) == LUA_TNUMBER) {
                klen = (size_t)snprintf(keybuf, sizeof keybuf, "%.17g", lua_tonumber(L, -2));
                key = keybuf;
            } else {
                klen = (size_t)snprintf(keybuf, sizeof keybuf, "<%s>", luaL_typename(L, -2));
                key = keybuf;
            }
            if (klen > SHOW_MAX_BYTES - st->bytes) {
                st->full = 1;
                lua_pop(L, 2);
                json_object_set_new(out, TRUNCATED, json_string(TRUNCATED));
                break;
            }
            st->bytes += klen;
            json_object_setn_new(out, key, klen, show_value(st, lua_gettop(L)));
            lua_pop(L, 1);
        }
    }
    st->depth--;
    return out;
}

/* A string longer than what is left of the byte budget is cut, at a
 * character boundary, and marked. */
static json_t *show_string(show_state_t *st, int idx)
{
    size_t len;
    const char *s = lua_tolstring(st->L, idx, &len);
    size_t room = SHOW_MAX_BYTES - st->bytes;
    json_t *str;
    if (len <= room) {
        st->bytes += len;
        str = json_stringn(s, len);
    } else {
        size_t cut = room;
        while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80)
            cut--;
        char *buf = malloc(cut + sizeof TRUNCATED);
        if (!buf)
            return NULL;
        memcpy(buf, s, cut);
        memcpy(buf + cut, TRUNCATED, sizeof TRUNCATED);
        str = json_stringn(buf, cut + sizeof TRUNCATED - 1);
        free(buf);
        st->bytes = SHOW_MAX_BYTES;
        st->full = 1;
    }
    /* jansson only holds valid UTF-8; a rule may build arbitrary bytes. */
    return str ? str : json_string("<binary string>");
}

static json_t *show_value(show_state_t *st, int idx)
{
    lua_State *L = st->L;
    int64_t i;
    if (!show_charge(st, 8))
        return json_string(TRUNCATED);
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        return json_null();
    case LUA_TBOOLEAN:
        return json_boolean(lua_toboolean(L, idx));
    case LUA_TNUMBER:
        if (pc__lua_to_int(L, idx, &i) == 0)
            return json_integer(i);
        return json_real(lua_tonumber(L, idx));
    case LUA_TSTRING:
        return show_string(st, idx);
    case LUA_TTABLE:
        return show_table(st, idx);
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
    show_state_t st = {.L = L};
    return show_value(&st, idx);
}
