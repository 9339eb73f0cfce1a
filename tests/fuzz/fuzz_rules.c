/* Fuzz target: the Lua context builder (rules/convert.c) through
 * pc_rules_call, with arbitrary JSON as ctx (and as the list for the list
 * rules), against the real rules/ of the source tree. Checked beyond "does
 * not crash": every call ends with one of the documented outcomes and an
 * answer (the safe default when not OK); risk answers a known decision;
 * a refused input (PC_EINVAL) comes back as PC_RULE_ERROR. The JSON is also
 * pushed onto a bare Lua state and read back, which must give a JSON value.
 * And cashier_rank runs twice, with the JIT-compiled list builder
 * (rules/records.c) and without it: outcome, message and answer must agree;
 * and a third time over the list as C values (pc_rules_cashier_rank_methods,
 * what the cashier calls), which must answer the same positions and flags. */
#include "core/error.h"
#include "core/log.h"
#include "rules/convert.h"
#include "rules/rules.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef PC_FUZZ_RULES_DIR
#error "PC_FUZZ_RULES_DIR must name the rules folder"
#endif

static pc_rules_t *rules, *plain;
static lua_State *bare;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    pc_log_set_level(PC_LOG_ERROR);
    rules = pc_rules_new(PC_FUZZ_RULES_DIR, NULL);
    if (!rules || pc_rules_reload(rules) != 0) {
        fprintf(stderr, "fuzz_rules: cannot load %s\n", PC_FUZZ_RULES_DIR);
        abort();
    }
    pc_rules_opts_t opts = {.plain_lists = true};
    plain = pc_rules_new(PC_FUZZ_RULES_DIR, &opts);
    if (!plain || pc_rules_reload(plain) != 0) {
        fprintf(stderr, "fuzz_rules: cannot load %s without the list builder\n", PC_FUZZ_RULES_DIR);
        abort();
    }
    bare = luaL_newstate();
    return 0;
}

static void check(int rc, const pc_rule_result_t *r, pc_rule_id_t id)
{
    if (rc != 0 && rc != PC_EINVAL)
        abort();
    if (rc == PC_EINVAL && r->outcome != PC_RULE_ERROR)
        abort();
    if (r->outcome > PC_RULE_MALFORMED || !r->answer)
        abort();
    if (id == PC_RULE_RISK) {
        const char *d = json_string_value(json_object_get(r->answer, "decision"));
        if (!d || (strcmp(d, "ACCEPT") && strcmp(d, "REVIEW") && strcmp(d, "CHALLENGE") &&
                   strcmp(d, "REJECT")))
            abort();
        if (r->outcome != PC_RULE_OK && strcmp(d, "REVIEW") != 0)
            abort(); /* the safe default of risk is REVIEW, never ACCEPT */
    }
}

/* The method el as C values when they say all of it (strings without NUL,
 * booleans, an integer amount; null as absent), else as its JSON. */
static void typed_of(const json_t *el, pc_rank_method_t *m)
{
    static const char *const strs[] = {"method_id", "type", "label", "reason", "channel_id"};
    const char **to[] = {&m->method_id, &m->type, &m->label, &m->reason, &m->channel_id};
    *m = (pc_rank_method_t){.max_amount = PC_RANK_NO_AMOUNT, .available = -1, .recommended = -1};
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)el, key, v)
    {
        if (json_is_null(v))
            continue;
        int known = 0;
        for (size_t k = 0; k < 5; k++)
            if (!strcmp(key, strs[k]) && json_is_string(v) &&
                strlen(json_string_value(v)) == json_string_length(v)) {
                *to[k] = json_string_value(v);
                known = 1;
            }
        if (!strcmp(key, "available") && json_is_boolean(v))
            m->available = (signed char)json_is_true(v), known = 1;
        if (!strcmp(key, "recommended") && json_is_boolean(v))
            m->recommended = (signed char)json_is_true(v), known = 1;
        if (!strcmp(key, "max_amount") && json_is_integer(v) &&
            json_integer_value(v) != PC_RANK_NO_AMOUNT)
            m->max_amount = json_integer_value(v), known = 1;
        if (!known)
            break;
    }
    if (!json_is_object(el) || key)
        *m = (pc_rank_method_t){.object = el};
}

/* cashier_rank over the list as C values must answer as over its JSON. */
static void compare_typed(const json_t *ctx, const json_t *list, int rc, const pc_rule_result_t *r)
{
    size_t n = json_array_size(list);
    pc_rank_method_t *ms = calloc(n + 1, sizeof *ms);
    size_t *order = calloc(n + 1, sizeof *order);
    unsigned char *rec = calloc(n + 1, 1);
    for (size_t i = 0; i < n; i++)
        typed_of(json_array_get(list, i), &ms[i]);
    pc_rank_answer_t ans = {order, rec, 0};
    pc_rule_result_t t;
    int trc = pc_rules_cashier_rank_methods(rules, ctx, ms, n, &ans, &t);
    if (trc != rc || t.outcome != r->outcome || strcmp(t.error.message, r->error.message) ||
        t.answer || ans.count != json_array_size(r->answer))
        abort();
    for (size_t k = 0; k < ans.count; k++) {
        const json_t *e = json_array_get(r->answer, k);
        if (r->outcome == PC_RULE_OK
                ? !json_equal(json_object_get(json_array_get(list, order[k]), "method_id"),
                              json_object_get(e, "method_id"))
                : order[k] != k)
            abort();
        if (rec[k] != json_is_true(json_object_get(e, "recommended")))
            abort();
    }
    pc_rule_result_clear(&t);
    free(ms);
    free(order);
    free(rec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t err;
    json_t *v = json_loadb((const char *)data, size, JSON_DECODE_ANY, &err);
    if (!v)
        return 0;
    /* The context builder on its own. */
    char msg[256];
    int top = lua_gettop(bare);
    if (pc__json_push(bare, v, "ctx", msg, sizeof msg) == 0) {
        json_t *back = pc__lua_to_json(bare, -1);
        if (!back)
            abort();
        json_decref(back);
        lua_pop(bare, 1);
    }
    if (lua_gettop(bare) != top)
        abort();
    /* Through the decision points: an object as ctx, an array as the list. */
    json_t *ctx = json_is_object(v) ? v : json_pack("{s:O}", "value", v);
    json_t *list = json_is_array(v) ? v : json_object_get(v, "methods");
    for (int id = 0; id < PC_RULE_COUNT; id++) {
        pc_rule_result_t r;
        memset(&r, 0, sizeof r);
        json_t *l = list ? list : json_array();
        int rc = pc_rules_call(rules, (pc_rule_id_t)id, ctx, l, &r);
        check(rc, &r, (pc_rule_id_t)id);
        if (id == PC_RULE_CASHIER_RANK) {
            pc_rule_result_t p;
            memset(&p, 0, sizeof p);
            int prc = pc_rules_call(plain, (pc_rule_id_t)id, ctx, l, &p);
            if (prc != rc || p.outcome != r.outcome || strcmp(p.error.message, r.error.message) ||
                !json_equal(p.answer, r.answer))
                abort(); /* the builder changed what the rule saw or how it was judged */
            pc_rule_result_clear(&p);
            if (json_is_array(l))
                compare_typed(ctx, l, rc, &r);
        }
        pc_rule_result_clear(&r);
        if (!list)
            json_decref(l);
    }
    if (ctx != v)
        json_decref(ctx);
    json_decref(v);
    lua_gc(bare, LUA_GCCOLLECT, 0);
    return 0;
}
