/* Tests for rules/records.c, the JIT-compiled builder of cashier_rank's
 * method list: a rule must see exactly what the C API conversion
 * (rules/convert.c) gives it, and an answer must be judged exactly as
 * before, whatever the input. Both are checked on random inputs against the
 * plain path: the lists as the two conversions leave them in Lua, the
 * refusals word for word, and whole calls through two engines, one with the
 * builder and one without (rules.list_builder off). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "files.h"
#include "rng.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lua.h>

#include "core/log.h"
#include "rules/convert.h"
#include "rules/points.h"
#include "rules/records.h"
#include "rules/rules.h"
#include "rules/sandbox.h"

/* ---- random inputs ----------------------------------------------------------- */

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint32_t rnd(uint32_t n)
{
    return pc_t_rnd(&rng, n);
}

/* Strings: a small vocabulary (cache hits), many distinct ones (cache slots
 * taken twice in one list), long ones (not cached), odd bytes. */
static json_t *random_string(void)
{
    static const char *vocab[] = {
        "BALANCE", "CARD",         "WALLET",         "m_1", "m_2", "sim_card",
        "Visa",    "Balance 9.00", "LIMIT_EXCEEDED", "",    "é",   "x"};
    char buf[80];
    switch (rnd(5)) {
    case 0:
    case 1:
        return json_string(vocab[rnd(sizeof vocab / sizeof vocab[0])]);
    case 2:
        snprintf(buf, sizeof buf, "s%u", rnd(5000));
        return json_string(buf);
    case 3: {
        size_t len = 8 + rnd(60);
        for (size_t i = 0; i < len; i++)
            buf[i] = (char)('a' + rnd(26));
        return json_stringn(buf, len);
    }
    default: {
        /* Lengths around the word boundaries, some with a NUL inside. */
        size_t len = 1 + rnd(33);
        memcpy(buf, "0123456789abcdefghijklmnopqrstuvwxyzABCD", len);
        if (rnd(4) == 0)
            buf[rnd((uint32_t)len)] = '\0';
        return json_stringn(buf, len);
    }
    }
}

static json_t *random_value(int depth)
{
    switch (rnd(depth > 2 ? 9 : 12)) {
    case 0:
    case 1:
    case 2:
        return random_string();
    case 3:
        return json_integer((json_int_t)rnd(100000) - 50);
    case 4:
        return rnd(3) ? json_integer(9007199254740991LL) : json_integer(9007199254740993LL);
    case 5:
        return json_real((double)rnd(1000) / 8.0);
    case 6:
        return json_true();
    case 7:
        return json_false();
    case 8:
        return json_null();
    case 9: {
        json_t *o = json_object();
        json_object_set_new(o, "coupon_id", random_string());
        json_object_set_new(o, "amount", random_value(depth + 1));
        return o;
    }
    case 10: {
        json_t *a = json_array();
        for (uint32_t i = rnd(3); i > 0; i--)
            json_array_append_new(a, random_value(depth + 1));
        return a;
    }
    default: {
        /* Nested deep enough to pass the 32 levels only sometimes. */
        json_t *v = json_integer(1);
        for (uint32_t i = 28 + rnd(6); i > 0; i--) {
            json_t *o = json_object();
            json_object_set_new(o, "k", v);
            v = o;
        }
        return v;
    }
    }
}

/* A method as the cashier makes it, then disturbed now and then. */
static json_t *random_method(size_t i)
{
    static const char *keys[] = {"method_id", "type",       "label",      "available",
                                 "reason",    "max_amount", "channel_id", "recommended"};
    json_t *m = json_object();
    char id[32];
    snprintf(id, sizeof id, "m_%zu", i);
    json_object_set_new(m, "method_id", json_string(id));
    json_object_set_new(m, "type", random_string());
    json_object_set_new(m, "label", random_string());
    json_object_set_new(m, "available", json_boolean(rnd(4) != 0));
    if (rnd(3) == 0)
        json_object_set_new(m, "reason", json_string("LIMIT_EXCEEDED"));
    json_object_set_new(m, "max_amount", json_integer(rnd(100000)));
    json_object_set_new(m, rnd(2) ? "channel_id" : "card", rnd(2) ? random_string() : json_null());
    json_object_set_new(m, "recommended", json_boolean(rnd(5) == 0));
    uint32_t disturb = rnd(4);
    for (uint32_t k = 0; k < disturb; k++) {
        switch (rnd(4)) {
        case 0: /* a field of the shape with any value */
            json_object_set_new(m, keys[rnd(8)], random_value(1));
            break;
        case 1: /* a field beyond the shape */
            json_object_set_new(m, rnd(2) ? "coupon" : "extra_field_with_a_long_name",
                                random_value(1));
            break;
        case 2:
            json_object_del(m, keys[rnd(8)]);
            break;
        default: /* a duplicate id now and then */
            json_object_set_new(m, "method_id", json_string(rnd(2) ? "m_0" : id));
            break;
        }
    }
    return m;
}

static json_t *random_list(void)
{
    json_t *list = json_array();
    size_t n = rnd(8) == 0 ? rnd(60) : rnd(14);
    for (size_t i = 0; i < n; i++) {
        uint32_t r = rnd(40);
        json_array_append_new(list, r == 0   ? json_null()
                                    : r == 1 ? random_string()
                                    : r == 2 ? json_array()
                                             : random_method(i));
    }
    return list;
}

/* ---- one list through both conversions --------------------------------------- */

typedef struct {
    pc__sandbox_t *sb;
    const json_t *list;
    json_t *plain, *built; /* as Lua has them, shown as JSON */
    int plain_rc, built_rc;
    char plain_err[256], built_err[256];
    int ids_ok;
} both_t;

static int convert_both(lua_State *L)
{
    both_t *b = lua_touserdata(L, 1);
    lua_settop(L, 0);
    b->plain_rc = pc__json_push(L, b->list, "methods", b->plain_err, sizeof b->plain_err);
    if (b->plain_rc == 0) {
        b->plain = pc__lua_to_json(L, -1);
        lua_pop(L, 1);
    }
    size_t n = json_array_size(b->list);
    lua_createtable(L, (int)n, (int)n);
    int ids = lua_gettop(L);
    b->built_rc = pc__records_push(L, b->sb->records, b->list, "methods", ids, b->built_err,
                                   sizeof b->built_err);
    if (b->built_rc == 0) {
        b->built = pc__lua_to_json(L, -1);
        /* ids[i] is element i's id field as converted, and the pointer the
         * builder hands C is that very string's. */
        b->ids_ok = 1;
        for (size_t i = 0; i < n; i++) {
            lua_rawgeti(L, -1, (int)i + 1);
            int is_table = lua_istable(L, -1);
            if (is_table) {
                lua_getfield(L, -1, "method_id");
            } else {
                lua_pushnil(L);
            }
            lua_rawgeti(L, ids, (int)i + 1);
            if (!lua_rawequal(L, -1, -2))
                b->ids_ok = 0;
            const char *p = pc__records_id(b->sb->records, i);
            if (p && (lua_type(L, -1) != LUA_TSTRING || p != lua_tostring(L, -1)))
                b->ids_ok = 0;
            if (lua_type(L, -1) == LUA_TSTRING) {
                lua_rawget(L, ids);
                if (lua_tonumber(L, -1) < 1)
                    b->ids_ok = 0;
                lua_pop(L, 1);
            } else {
                lua_pop(L, 1);
            }
            lua_pop(L, 2);
        }
    }
    lua_settop(L, 0);
    return 0;
}

/* A cashier_rank state with builders for its ctx and, unless list is NULL,
 * for the list of this shape. */
static pc__sandbox_t *cashier_sandbox(const pc__record_shape_t *list)
{
    char err[128];
    pc__sandbox_t *sb = pc__sandbox_new("cashier_rank", NULL, err, sizeof err);
    assert_non_null(sb);
    assert_int_equal(pc__sandbox_use_records(sb, list, pc__point(PC_RULE_CASHIER_RANK)->ctx_shape,
                                             err, sizeof err),
                     0);
    return sb;
}

static void test_the_builder_gives_a_rule_what_the_c_api_gives(void **state)
{
    (void)state;
    pc__sandbox_t *sb = cashier_sandbox(pc__point(PC_RULE_CASHIER_RANK)->list_shape);
    int refused = 0, differing_keys = 0;
    for (int round = 0; round < 3000; round++) {
        json_t *list = random_list();
        both_t b = {.sb = sb, .list = list};
        assert_int_equal(lua_cpcall(sb->L, convert_both, &b), 0);
        if (b.plain_rc != b.built_rc || (b.plain_rc < 0 && strcmp(b.plain_err, b.built_err))) {
            char *dump = json_dumps(list, 0);
            fail_msg("round %d: plain %d \"%s\", builder %d \"%s\" for %s", round, b.plain_rc,
                     b.plain_err, b.built_rc, b.built_err, dump);
        }
        if (b.plain_rc == 0) {
            if (!json_equal(b.plain, b.built)) {
                char *a = json_dumps(b.plain, JSON_SORT_KEYS),
                     *c = json_dumps(b.built, JSON_SORT_KEYS);
                fail_msg("round %d: plain %s\nbuilder %s", round, a, c);
            }
            if (!b.ids_ok) {
                char *dump = json_dumps(list, 0);
                fail_msg("round %d: ids table wrong for %s", round, dump);
            }
        } else {
            refused++;
        }
        differing_keys += b.plain_rc == 0 && json_array_size(list) > 0;
        json_decref(b.plain);
        json_decref(b.built);
        json_decref(list);
    }
    /* Both kinds of input were met. */
    assert_true(refused > 50);
    assert_true(differing_keys > 1000);
    pc__sandbox_free(sb);
}

/* ---- ctx through both conversions ------------------------------------------------ */

/* A cashier_rank ctx as consult.c makes it, then disturbed now and then. */
static json_t *random_ctx(void)
{
    json_t *ctx = json_pack("{s:I, s:s, s:s, s:s, s:I}", "amount", (json_int_t)rnd(100000),
                            "currency", rnd(2) ? "CNY" : "USD", "product", "INSTANT", "platform",
                            rnd(2) ? "WEB" : "APP", "now", (json_int_t)1795000000);
    if (rnd(6))
        json_object_set_new(ctx, "merchant", json_pack("{s:s}", "id", "m_demo"));
    if (rnd(6)) {
        json_t *buyer = json_pack("{s:s, s:I}", "id", "u_42", "balance", (json_int_t)rnd(5000));
        if (rnd(2))
            json_object_set_new(buyer, "last_method_id", random_string());
        if (rnd(3)) {
            json_t *counts = json_object();
            for (uint32_t k = rnd(4); k > 0; k--)
                json_object_set_new(counts, rnd(2) ? "CARD" : "WALLET",
                                    rnd(8) ? json_integer(rnd(9)) : random_value(2));
            json_object_set_new(buyer, "type_counts", counts);
        }
        json_object_set_new(ctx, "buyer", buyer);
    }
    if (rnd(4))
        json_object_set_new(ctx, "policy", json_pack("{s:b}", "hide_unavailable", rnd(2)));
    static const char *top[] = {"amount", "currency", "product", "platform",
                                "now",    "merchant", "buyer",   "policy"};
    static const char *inner[] = {"id",          "balance",          "last_method_id",
                                  "type_counts", "hide_unavailable", "other"};
    for (uint32_t k = rnd(4); k > 0; k--) {
        switch (rnd(4)) {
        case 0:
            json_object_set_new(ctx, top[rnd(8)], random_value(1));
            break;
        case 1:
            json_object_set_new(ctx, rnd(2) ? "extra" : "spec", random_value(1));
            break;
        case 2: {
            json_t *o = json_object_get(ctx, top[5 + rnd(3)]);
            if (json_is_object(o))
                json_object_set_new(o, inner[rnd(6)], random_value(2));
            break;
        }
        default:
            json_object_del(ctx, top[rnd(8)]);
            break;
        }
    }
    return ctx;
}

typedef struct {
    pc__sandbox_t *sb;
    const json_t *ctx;
    json_t *plain, *built;
    int plain_rc, built_rc;
    char plain_err[256], built_err[256];
} ctx_both_t;

static int convert_ctx_both(lua_State *L)
{
    ctx_both_t *b = lua_touserdata(L, 1);
    lua_settop(L, 0);
    b->plain_rc = pc__json_push(L, b->ctx, "ctx", b->plain_err, sizeof b->plain_err);
    if (b->plain_rc == 0)
        b->plain = pc__lua_to_json(L, -1);
    lua_settop(L, 0);
    b->built_rc = pc__records_push_one(L, b->sb->ctx_records, b->ctx, "ctx", b->built_err,
                                       sizeof b->built_err);
    if (b->built_rc == 0) {
        b->built = pc__lua_to_json(L, -1);
        if (lua_gettop(L) != 1)
            b->built_rc = 99; /* one value pushed, nothing else */
    } else if (lua_gettop(L) != 0) {
        b->built_rc = 98;
    }
    lua_settop(L, 0);
    return 0;
}

static void test_ctx_through_the_builder_is_what_the_c_api_gives(void **state)
{
    (void)state;
    pc__sandbox_t *sb = cashier_sandbox(NULL);
    int refused = 0, taken = 0;
    for (int round = 0; round < 5000; round++) {
        json_t *ctx = random_ctx();
        ctx_both_t b = {.sb = sb, .ctx = ctx};
        assert_int_equal(lua_cpcall(sb->L, convert_ctx_both, &b), 0);
        if (b.plain_rc != b.built_rc || (b.plain_rc < 0 && strcmp(b.plain_err, b.built_err)) ||
            (b.plain_rc == 0 && !json_equal(b.plain, b.built))) {
            char *dump = json_dumps(ctx, 0), *x = json_dumps(b.plain, JSON_SORT_KEYS),
                 *y = json_dumps(b.built, JSON_SORT_KEYS);
            fail_msg("round %d, ctx %s:\nplain %d \"%s\" %s\nbuilder %d \"%s\" %s", round, dump,
                     b.plain_rc, b.plain_err, x, b.built_rc, b.built_err, y);
        }
        if (b.plain_rc < 0)
            refused++;
        else
            taken++;
        json_decref(b.plain);
        json_decref(b.built);
        json_decref(ctx);
    }
    assert_true(refused > 50);
    assert_true(taken > 3000);
    pc__sandbox_free(sb);
}

/* ---- whole calls, two engines ------------------------------------------------- */

typedef struct {
    char dir[64];
    pc_rules_t *with, *without;
} engines_t;

/* A rule that answers what ctx.spec says: picks of input methods (as they
 * are, copied, with another id or another flag), made-up entries, values that
 * are not tables, holes and extra keys. */
static const char *SPEC_RULE =
    "return function(ctx, methods)\n"
    "  if ctx.show then\n" /* what the rule sees of one method, as an error */
    "    local fields = {}\n"
    "    for k, v in pairs(methods[ctx.show]) do\n"
    "      if type(v) == 'table' then v = '{}' end\n"
    "      fields[#fields + 1] = k .. '=' .. type(v) .. ':' .. tostring(v)\n"
    "    end\n"
    "    table.sort(fields)\n"
    "    error(table.concat(fields, ';'), 0)\n"
    "  end\n"
    "  local spec = ctx.spec\n"
    "  if not spec then return methods end\n"
    "  local out = {}\n"
    "  for i, s in ipairs(spec) do\n"
    "    local v\n"
    "    if s.pick then\n"
    "      v = methods[s.pick]\n"
    "      if v and s.copy then v = {method_id = v.method_id, recommended = v.recommended} end\n"
    "      if v and s.set_id then v.method_id = s.set_id end\n"
    "      if v and s.rec ~= nil then v.recommended = s.rec end\n"
    "      if v and s.clear_rec then v.recommended = nil end\n"
    "      if v and s.meta then setmetatable(v, {__index = function() return 'm_0' end}) end\n"
    "    elseif s.id then v = {method_id = s.id, recommended = s.rec}\n"
    "    elseif s.str then v = s.str\n"
    "    elseif s.num then v = s.num\n"
    "    end\n"
    "    out[i] = v\n"
    "  end\n"
    "  if ctx.extra_key then out.x = 1 end\n"
    "  if ctx.hole then out[#out + 2] = methods[1] end\n"
    "  return out\n"
    "end\n";

static const char *SPEC_EXAMPLES =
    "{\"examples\": [{\"name\": \"as given\", \"ctx\": {},"
    " \"methods\": [{\"method_id\": \"a\", \"available\": true}, {\"method_id\": \"b\"}],"
    " \"expect\": {\"order\": [\"a\", \"b\"]}}]}";

static int engines_setup(void **state)
{
    engines_t *e = calloc(1, sizeof *e);
    pc_t_rules_tmpdir(e->dir, sizeof e->dir, "pc_records_");
    pc_t_write_file(e->dir, "cashier_rank.lua", SPEC_RULE);
    pc_t_write_file(e->dir, "tests/cashier_rank.json", SPEC_EXAMPLES);
    pc_rules_opts_t plain = {.plain_lists = true};
    e->with = pc_rules_new(e->dir, NULL);
    e->without = pc_rules_new(e->dir, &plain);
    pc_rules_reload(e->with); /* the other rules are missing: only cashier_rank loads */
    pc_rules_reload(e->without);
    *state = e;
    return 0;
}

static int engines_teardown(void **state)
{
    engines_t *e = *state;
    pc_rules_free(e->with);
    pc_rules_free(e->without);
    pc_t_rm_tree(e->dir);
    free(e);
    return 0;
}

static json_t *random_flag(void)
{
    switch (rnd(6)) {
    case 0:
        return json_string("yes");
    case 1:
        return json_integer(1);
    case 2:
    case 3:
        return json_true();
    default:
        return json_false();
    }
}

static json_t *random_spec(size_t n)
{
    json_t *spec = json_array();
    size_t len = rnd(4) == 0 ? rnd((uint32_t)n + 3) : n;
    for (size_t i = 0; i < len; i++) {
        json_t *s = json_object();
        uint32_t r = rnd(30);
        if (r == 0) {
            json_object_set_new(s, "id", rnd(2) ? json_string("nobody") : json_string("m_1"));
        } else if (r == 1) {
            json_object_set_new(s, "str", json_string("m_1"));
        } else if (r == 2) {
            json_object_set_new(s, "num", json_integer(1));
        } else {
            /* Mostly a permutation; sometimes the same method twice. */
            size_t pick = rnd(10) == 0 ? 1 + rnd((uint32_t)n + 1) : 1 + (i * 7 + 3) % (n ? n : 1);
            json_object_set_new(s, "pick", json_integer((json_int_t)pick));
            if (rnd(15) == 0)
                json_object_set_new(s, "copy", json_true());
            if (rnd(25) == 0)
                json_object_set_new(s, "set_id", json_string(rnd(2) ? "m_0" : "zz"));
            if (rnd(3) == 0)
                json_object_set_new(s, "rec", random_flag());
            if (rnd(20) == 0)
                json_object_set_new(s, "clear_rec", json_true());
            if (rnd(30) == 0)
                json_object_set_new(s, "meta", json_true());
        }
        json_array_append_new(spec, s);
    }
    return spec;
}

static void test_answers_are_judged_alike_with_and_without_the_builder(void **state)
{
    engines_t *e = *state;
    int ok = 0, fell_back = 0;
    for (int round = 0; round < 3000; round++) {
        size_t n = 1 + rnd(rnd(6) == 0 ? 45 : 12);
        json_t *methods = json_array();
        for (size_t i = 0; i < n; i++) {
            json_t *m = json_pack("{s:s, s:s, s:b, s:I, s:b}", "method_id", "m", "type",
                                  rnd(2) ? "CARD" : "BALANCE", "available", rnd(4) != 0,
                                  "max_amount", (json_int_t)rnd(5000), "recommended", 0);
            char id[32];
            snprintf(id, sizeof id, "m_%zu", i);
            json_object_set_new(m, "method_id", json_string(id));
            if (rnd(10) == 0)
                json_object_set_new(m, "coupon", json_pack("{s:s}", "coupon_id", "c1"));
            /* Now and then an input paycore refuses, in one place or two. */
            switch (rnd(300)) {
            case 0:
                json_decref(m);
                m = json_null();
                break;
            case 1:
                json_object_del(m, "method_id");
                break;
            case 2:
                json_object_set_new(m, "method_id", json_string("m_0"));
                break;
            case 3:
                json_object_set_new(m, "max_amount", json_integer(9007199254740993LL));
                break;
            case 4:
                json_object_set_new(m, "method_id", json_integer(7));
                break;
            default:
                break;
            }
            json_array_append_new(methods, m);
        }
        json_t *ctx = json_pack("{s:o}", "spec", random_spec(n));
        if (rnd(40) == 0)
            json_object_set_new(ctx, "too_big", json_integer(-9007199254740993LL));
        if (rnd(20) == 0)
            json_object_set_new(ctx, "extra_key", json_true());
        if (rnd(20) == 0)
            json_object_set_new(ctx, "hole", json_true());
        pc_rule_result_t a, b;
        pc_rules_cashier_rank(e->with, ctx, methods, &a);
        pc_rules_cashier_rank(e->without, ctx, methods, &b);
        if (a.outcome != b.outcome || strcmp(a.error.message, b.error.message) ||
            !json_equal(a.answer, b.answer)) {
            char *c = json_dumps(ctx, 0), *x = json_dumps(a.answer, 0),
                 *y = json_dumps(b.answer, 0);
            fail_msg("round %d, ctx %s:\nbuilder %s \"%s\" %s\nplain %s \"%s\" %s", round, c,
                     pc_rule_outcome_name(a.outcome), a.error.message, x,
                     pc_rule_outcome_name(b.outcome), b.error.message, y);
        }
        if (a.outcome == PC_RULE_OK)
            ok++;
        else
            fell_back++;
        pc_rule_result_clear(&a);
        pc_rule_result_clear(&b);
        json_decref(ctx);
        json_decref(methods);
    }
    print_message("%d answers taken, %d fell back\n", ok, fell_back);
    /* Past the plain path's limit of elements, both refuse the list alike. */
    json_t *many = json_array();
    for (int i = 0; i < 8100; i++)
        json_array_append_new(many, json_pack("{s:s+}", "method_id", "m", i % 2 ? "a" : "b"));
    for (int i = 0; i < 8100; i++) {
        char id[32];
        snprintf(id, sizeof id, "m%d", i);
        json_object_set_new(json_array_get(many, i), "method_id", json_string(id));
    }
    json_t *ctx = json_object();
    pc_rule_result_t a, b;
    pc_rules_cashier_rank(e->with, ctx, many, &a);
    pc_rules_cashier_rank(e->without, ctx, many, &b);
    assert_int_equal(a.outcome, PC_RULE_ERROR);
    assert_int_equal(b.outcome, PC_RULE_ERROR);
    assert_string_equal(a.error.message, b.error.message);
    assert_non_null(strstr(a.error.message, "too many elements"));
    pc_rule_result_clear(&a);
    pc_rule_result_clear(&b);
    json_decref(ctx);
    json_decref(many);
    assert_true(ok > 300);
    assert_true(fell_back > 500);
}

/* ---- methods as C values ------------------------------------------------------------ */

enum { MAX_TYPED = 64 };

typedef struct {
    pc_rank_method_t m[MAX_TYPED];
    char text[MAX_TYPED][5][80];
    json_t *obj[MAX_TYPED];
    size_t n;
} typed_list_t;

/* A text of the kinds random_string makes, or absent. */
static const char *random_text(char *buf, size_t size)
{
    if (rnd(6) == 0)
        return NULL;
    json_t *s = random_string();
    snprintf(buf, size, "%s", json_string_value(s));
    json_decref(s);
    return buf;
}

/* -1 and 1 as documented, and other values of the same sign now and then. */
static signed char random_bool(void)
{
    return (signed char)((int)rnd(5) - 2);
}

static void random_typed(typed_list_t *t)
{
    t->n = 1 + rnd(rnd(6) == 0 ? MAX_TYPED - 1 : 12);
    for (size_t i = 0; i < t->n; i++) {
        pc_rank_method_t *m = &t->m[i];
        char *id = t->text[i][0];
        snprintf(id, 80, "m_%zu", i);
        uint32_t odd = rnd(200);
        *m = (pc_rank_method_t){
            .method_id = odd == 0   ? NULL
                         : odd == 1 ? "m_0"
                                    : id,
            .type = random_text(t->text[i][1], 80),
            .label = random_text(t->text[i][2], 80),
            .reason = rnd(3) == 0 ? "LIMIT_EXCEEDED" : NULL,
            .channel_id = random_text(t->text[i][3], 80),
            .max_amount = odd == 2       ? 9007199254740993LL
                          : odd == 3     ? -9007199254740992LL
                          : rnd(10) == 0 ? PC_RANK_NO_AMOUNT
                                         : (int64_t)rnd(100000) - 100,
            .available = random_bool(),
            .recommended = random_bool(),
        };
        t->obj[i] = NULL;
        if (rnd(10) == 0) { /* a coupon's method: JSON with its object */
            t->obj[i] = pc_rank_method_json(m);
            json_object_set_new(t->obj[i], "coupon", json_pack("{s:s}", "coupon_id", "c1"));
            m->object = t->obj[i];
        }
    }
}

/* The answer of a typed call against that of the same methods as JSON. */
static void assert_same_answer(const typed_list_t *t, const pc_rule_result_t *j,
                               const pc_rule_result_t *r, const pc_rank_answer_t *a, int round)
{
    if (r->outcome != j->outcome || strcmp(r->error.message, j->error.message) ||
        strcmp(r->version, j->version) || r->answer != NULL)
        fail_msg("round %d: typed %s \"%s\", JSON %s \"%s\"", round,
                 pc_rule_outcome_name(r->outcome), r->error.message,
                 pc_rule_outcome_name(j->outcome), j->error.message);
    assert_int_equal(a->count, json_array_size(j->answer));
    for (size_t k = 0; k < a->count; k++) {
        const json_t *e = json_array_get(j->answer, k);
        assert_true(a->order[k] < t->n);
        if (j->outcome == PC_RULE_OK) {
            const pc_rank_method_t *m = &t->m[a->order[k]];
            const char *id = m->object ? json_string_value(json_object_get(m->object, "method_id"))
                                       : m->method_id;
            assert_string_equal(id, json_string_value(json_object_get(e, "method_id")));
        } else {
            assert_int_equal(a->order[k], k);
        }
        if (a->recommended[k] != json_is_true(json_object_get(e, "recommended")))
            fail_msg("round %d: entry %zu flag %d", round, k, a->recommended[k]);
    }
}

static void test_methods_as_c_values_are_judged_as_their_json(void **state)
{
    engines_t *e = *state;
    int ok = 0, shown = 0, fell_back = 0;
    for (int round = 0; round < 3000; round++) {
        typed_list_t t;
        random_typed(&t);
        json_t *list = json_array();
        for (size_t i = 0; i < t.n; i++)
            json_array_append_new(list, pc_rank_method_json(&t.m[i]));
        json_t *ctx = json_pack("{s:o}", "spec", random_spec(t.n));
        int show = rnd(3) == 0;
        if (show)
            json_object_set_new(ctx, "show", json_integer(1 + rnd((uint32_t)t.n)));
        pc_rule_result_t j;
        int jrc = pc_rules_cashier_rank(e->with, ctx, list, &j);
        pc_rules_t *engines[2] = {e->with, e->without};
        for (int k = 0; k < 2; k++) {
            size_t order[MAX_TYPED];
            unsigned char rec[MAX_TYPED];
            pc_rank_answer_t a = {order, rec, 0};
            pc_rule_result_t r;
            int rc = pc_rules_cashier_rank_methods(engines[k], ctx, t.m, t.n, &a, &r);
            assert_int_equal(rc, jrc);
            assert_same_answer(&t, &j, &r, &a, round);
            pc_rule_result_clear(&r);
        }
        ok += j.outcome == PC_RULE_OK;
        shown += show && j.outcome == PC_RULE_ERROR && strstr(j.error.message, "method_id=");
        fell_back += !show && j.outcome != PC_RULE_OK;
        pc_rule_result_clear(&j);
        json_decref(ctx);
        json_decref(list);
        for (size_t i = 0; i < t.n; i++)
            json_decref(t.obj[i]);
    }
    print_message("%d answers taken, %d methods shown, %d fell back\n", ok, shown, fell_back);
    assert_true(ok > 300);
    assert_true(shown > 500);
    assert_true(fell_back > 300);
    /* No rule loaded: the safe default, each method's own flag. */
    pc_rules_t *none = pc_rules_new("/nonexistent", NULL);
    pc_rank_method_t m[2] = {{.method_id = "a", .recommended = 1, .max_amount = PC_RANK_NO_AMOUNT},
                             {.method_id = "b", .recommended = -1, .max_amount = 5}};
    size_t order[2];
    unsigned char rec[2];
    pc_rank_answer_t a = {order, rec, 0};
    pc_rule_result_t r;
    json_t *ctx = json_object();
    pc_rules_cashier_rank_methods(none, ctx, m, 2, &a, &r);
    assert_int_equal(r.outcome, PC_RULE_ERROR);
    assert_int_equal(a.count, 2);
    assert_int_equal(order[0], 0);
    assert_int_equal(order[1], 1);
    assert_int_equal(rec[0], 1);
    assert_int_equal(rec[1], 0);
    json_decref(ctx);
    pc_rules_free(none);
}

int main(void)
{
    pc_log_set_level(PC_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_builder_gives_a_rule_what_the_c_api_gives),
        cmocka_unit_test(test_ctx_through_the_builder_is_what_the_c_api_gives),
        cmocka_unit_test_setup_teardown(test_answers_are_judged_alike_with_and_without_the_builder,
                                        engines_setup, engines_teardown),
        cmocka_unit_test_setup_teardown(test_methods_as_c_values_are_judged_as_their_json,
                                        engines_setup, engines_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
