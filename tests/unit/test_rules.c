/* Tests for rules/rules.c: decision points, outcomes and their safe defaults,
 * answer validation, transactional reload, status, metrics, and the shipped
 * default rules. Sandbox escapes and budgets are in test_rules_sandbox.c. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "files.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <uv.h>

#include "core/error.h"
#include "core/metrics.h"
#include "rules/rules.h"

typedef struct {
    char dir[64];
    pc_rules_t *rules;
} fixture_t;

/* ---- helpers --------------------------------------------------------------------- */

static void put_rule(fixture_t *fx, const char *name, const char *lua, const char *examples)
{
    char file[96];
    snprintf(file, sizeof file, "%s.lua", name);
    pc_t_write_file(fx->dir, file, lua);
    if (examples) {
        snprintf(file, sizeof file, "tests/%s.json", name);
        pc_t_write_file(fx->dir, file, examples);
    }
}

static json_t *js(const char *text)
{
    json_error_t err;
    json_t *v = json_loads(text, 0, &err);
    if (!v)
        fail_msg("bad JSON in test: %s: %s", text, err.text);
    return v;
}

static void sha256_hex(const char *text, char out[65])
{
    unsigned char md[32];
    unsigned int n;
    EVP_Digest(text, strlen(text), md, &n, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        sprintf(out + 2 * i, "%02x", md[i]);
}

static const char *RISK_OK = "return function(ctx)\n"
                             "  return {decision = \"ACCEPT\", score = 0, reasons = {}}\n"
                             "end\n";
static const char *RISK_EXAMPLES =
    "{\"examples\": [{\"name\": \"plain\", \"ctx\": {\"amount\": 100},"
    " \"expect\": {\"decision\": \"ACCEPT\"}}]}";

static const char *CASHIER_BY_MODE =
    "return function(ctx, methods)\n"
    "  if ctx.mode == 'invent' then return {{method_id = 'm_evil'}} end\n"
    "  if ctx.mode == 'twice' then return {methods[1], methods[1]} end\n"
    "  if ctx.mode == 'string' then return 'm_a' end\n"
    "  if ctx.mode == 'holes' then return {methods[1], nil, methods[2]} end\n"
    "  if ctx.mode == 'flag' then methods[1].recommended = 'yes' return methods end\n"
    "  if ctx.mode == 'second' then methods[2].recommended = true return methods end\n"
    "  local out = {}\n"
    "  for i = #methods, 1, -1 do out[#out + 1] = methods[i] end\n"
    "  out[1].recommended = true\n"
    "  return out\n"
    "end\n";
static const char *CASHIER_EXAMPLES =
    "{\"examples\": [{\"name\": \"reverses\", \"ctx\": {},"
    " \"methods\": [{\"method_id\": \"m_a\", \"type\": \"CARD\"},"
    "               {\"method_id\": \"m_b\", \"type\": \"VA\"}],"
    " \"expect\": {\"order\": [\"m_b\", \"m_a\"], \"recommended\": [\"m_b\"]}}]}";

static const char *ROUTE_BY_MODE =
    "return function(ctx, candidates)\n"
    "  if ctx.mode == 'unknown' then return {'sim_nowhere'} end\n"
    "  if ctx.mode == 'twice' then return {'sim_a', 'sim_a'} end\n"
    "  if ctx.mode == 'number' then return 42 end\n"
    "  if ctx.mode == 'error' then error('route exploded') end\n"
    "  if ctx.mode == 'tables' then return {candidates[2], candidates[1]} end\n"
    "  local ids = {}\n"
    "  for i, c in ipairs(candidates) do ids[i] = c.channel_id end\n"
    "  return ids\n"
    "end\n";
static const char *ROUTE_EXAMPLES =
    "{\"examples\": [{\"name\": \"keeps order\", \"ctx\": {},"
    " \"candidates\": [{\"channel_id\": \"sim_a\"}, {\"channel_id\": \"sim_b\"}],"
    " \"expect\": [\"sim_a\", \"sim_b\"]}]}";

static const char *REFUND_BY_MODE = "return function(ctx)\n"
                                    "  if ctx.mode == 'bogus' then return 'CHEQUE' end\n"
                                    "  if ctx.mode == 'nul' then return 'API\\0x' end\n"
                                    "  if ctx.mode == 'api' then return 'API' end\n"
                                    "  if ctx.mode == 'payout' then return 'PAYOUT' end\n"
                                    "  return 'OFFLINE'\n"
                                    "end\n";
static const char *REFUND_EXAMPLES =
    "{\"examples\": [{\"name\": \"offline\", \"ctx\": {}, \"expect\": \"OFFLINE\"}]}";

static int setup(void **state)
{
    fixture_t *fx = calloc(1, sizeof *fx);
    pc_t_rules_tmpdir(fx->dir, sizeof fx->dir, "pc_rules_");
    put_rule(fx, "cashier_rank", CASHIER_BY_MODE, CASHIER_EXAMPLES);
    put_rule(fx, "risk", RISK_OK, RISK_EXAMPLES);
    put_rule(fx, "route", ROUTE_BY_MODE, ROUTE_EXAMPLES);
    put_rule(fx, "refund_method", REFUND_BY_MODE, REFUND_EXAMPLES);
    pc_metrics_reset();
    fx->rules = pc_rules_new(fx->dir, NULL);
    assert_non_null(fx->rules);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *fx = *state;
    pc_rules_free(fx->rules);
    pc_t_rm_tree(fx->dir);
    free(fx);
    return 0;
}

/* Loads the fixture's rules and checks they all went in. */
static void load_all(fixture_t *fx)
{
    assert_int_equal(pc_rules_reload(fx->rules), 0);
    assert_true(pc_rules_ready(fx->rules));
}

static const char *rule_status(fixture_t *fx, const char *name, json_t **status_out)
{
    json_t *st = pc_rules_status(fx->rules);
    size_t i;
    json_t *o;
    json_array_foreach(st, i, o)
    {
        if (strcmp(json_string_value(json_object_get(o, "name")), name) == 0) {
            *status_out = st;
            return json_string_value(json_object_get(o, "status"));
        }
    }
    fail_msg("no status for %s", name);
    return NULL;
}

static json_t *status_of(json_t *st, const char *name)
{
    size_t i;
    json_t *o;
    json_array_foreach(st, i, o)
    {
        if (strcmp(json_string_value(json_object_get(o, "name")), name) == 0)
            return o;
    }
    return NULL;
}

static const char *METHODS =
    "[{\"method_id\": \"m_a\", \"type\": \"CARD\", \"recommended\": false},"
    " {\"method_id\": \"m_b\", \"type\": \"VA\", \"recommended\": false},"
    " {\"method_id\": \"m_c\", \"type\": \"OTC\", \"recommended\": false}]";

static void cashier_with_mode(fixture_t *fx, const char *mode, pc_rule_result_t *res)
{
    char ctx[128];
    snprintf(ctx, sizeof ctx, "{\"mode\": \"%s\"}", mode);
    json_t *c = js(ctx), *m = js(METHODS);
    assert_int_equal(pc_rules_cashier_rank(fx->rules, c, m, res), 0);
    json_decref(c);
    json_decref(m);
}

static void assert_input_order(const json_t *answer)
{
    assert_int_equal(json_array_size(answer), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(answer, 0), "method_id")),
                        "m_a");
    assert_string_equal(json_string_value(json_object_get(json_array_get(answer, 1), "method_id")),
                        "m_b");
    assert_string_equal(json_string_value(json_object_get(json_array_get(answer, 2), "method_id")),
                        "m_c");
    for (size_t i = 0; i < 3; i++)
        assert_false(json_is_true(json_object_get(json_array_get(answer, i), "recommended")));
}

/* ---- decision points ---------------------------------------------------------------- */

static void test_cashier_rank_answer_maps_back_to_input_methods(void **state)
{
    fixture_t *fx = *state;
    load_all(fx);
    pc_rule_result_t res;
    cashier_with_mode(fx, "normal", &res);
    assert_int_equal(res.outcome, PC_RULE_OK);
    assert_int_equal(json_array_size(res.answer), 3);
    json_t *first = json_array_get(res.answer, 0);
    assert_string_equal(json_string_value(json_object_get(first, "method_id")), "m_c");
    /* The caller's fields come back untouched, with the rule's flag. */
    assert_string_equal(json_string_value(json_object_get(first, "type")), "OTC");
    assert_true(json_is_true(json_object_get(first, "recommended")));
    assert_true(json_is_false(json_object_get(json_array_get(res.answer, 1), "recommended")));
    assert_int_equal(strlen(res.version), 64);
    assert_true(res.elapsed_ns > 0);
    pc_rule_result_clear(&res);
}

static void test_cashier_rank_invented_method_is_malformed_and_keeps_input_order(void **state)
{
    fixture_t *fx = *state;
    load_all(fx);
    pc_rule_result_t res;
    cashier_with_mode(fx, "invent", &res);
    assert_int_equal(res.outcome, PC_RULE_MALFORMED);
    assert_non_null(strstr(res.error.message, "m_evil"));
    assert_string_equal(res.error.file, "rules/cashier_rank.lua");
    assert_input_order(res.answer);
    pc_rule_result_clear(&res);
}

static void test_cashier_rank_duplicate_method_is_malformed(void **state)
{
    fixture_t *fx = *state;
    load_all(fx);
    pc_rule_result_t res;
    cashier_with_mode(fx, "twice", &res);
    assert_int_equal(res.outcome, PC_RULE_MALFORMED);
    assert_non_null(strstr(res.error.message, "twice"));
    assert_input_order(res.answer);
    pc_rule_result_clear(&res);
}

static void test_cashier_rank_wrong_answer_types_are_malformed(void **state)
{
    fixture_t *fx = *state;
    load_all(fx);
    const char *modes[] = {"string", "holes", "flag"};
    for (size_t i = 0; i < 3; i++) {
        pc_rule_result_t res;
        cashier_with_mode(fx, modes[i], &res);
        assert_int_equal(res.outcome, PC_RULE_MALFORMED);
        assert_input_order(res.answer);
        pc_rule_result_clear(&res);
    }
    assert_int_equal(
        pc_metrics_get("pc_rules_calls_total", "rule=\"cashier_rank\",outcome=\"malformed\""), 3);
}

static void test_cashier_rank_recommending_an_unavailable_method_is_malformed(void **state)
{
    fixture_t *fx = *state;
    load_all(fx);
    /* The buyer would be steered to a method that cannot pay now. */
    json_t *c = js("{\"mode\": \"second\"}");
    json_t *m = js("[{\"method_id\": \"m_a\", \"available\": true, \"recommended\": false},"
                   " {\"method_id\": \"m_b\", \"available\": false, \"recommended\": false},"
                   " {\"method_id\": \"m_c\", \"recommended\": false}]");
    pc_rule_result_t res;
    assert_int_equal(pc_rules_cashier_rank(fx->rules, c, m, &res), 0);
    assert_int_equal(res.outcome, PC_RULE_MALFORMED);
    assert_non_null(strstr(res.error.message, "m_b"));
    assert_non_null(strstr(res.error.message, "not available"));
    assert_input_order(res.answer);
    pc_rule_result_clear(&res);
    /* Available, or not said to be unavailable: the flag is taken. */
    json_object_set_new(json_array_get(m, 1), "available", json_true());
    assert_int_equal(pc_rules_cashier_rank(fx->rules, c, m, &res), 0);
    assert_int_equal(res.outcome, PC_RULE_OK);
    assert_true(json_is_true(json_object_get(json_array_get(res.answer, 1), "recommended")));
    pc_rule_result_clear(&res);
    json_object_del(json_array_get(m, 1), "available");
    assert_int_equal(pc_rules_cashier_rank(fx->rules, c, m, &res), 0);
    assert_int_equal(res.outcome, PC_RULE_OK);
    pc_rule_result_clear(&res);
    json_decref(c);
    json_decref(m);
}

static void route_with_mode(fixture_t *fx, const char *mode, pc_rule_result_t *res)
{
    char ctx[128];
    snprintf(ctx, sizeof ctx, "{\"mode\": \"%s\"}", mode);
    json_t *c = js(ctx);
    json_t *cands =
        js("[{\"channel_id\": \"sim_a\", \"healthy\": false, \"success_rate_bp\": 9900},"
           " {\"channel_id\": \"sim_b\", \"healthy\": true, \"success_rate_bp\": 9000},"
           " {\"channel_id\": \"sim_c\", \"healthy\": true, \"success_rate_bp\": 9500}]");
    assert_int_equal(pc_rules_route(fx->rules, c, cands, res), 0);
    json_decref(c);
    json_decref(cands);
}

static void assert_route_default(const json_t *answer)
{
    json_t *want = js("[\"sim_c\", \"sim_b\", \"sim_a\"]");
    assert_true(json_equal((json_t *)answer, want));
    json_decref(want);
}

static void test_route_unknown_channel_is_malformed_and_falls_back_to_healthy_first(void **state)
{
    fixture_t *fx = *state;
    load_all(fx);
    pc_rule_result_t res;
    route_with_mode(fx, "unknown", &res);
    assert_int_equal(res.outcome, PC_RULE_MALFORMED);
    assert_non_null(strstr(res.error.message, "sim_nowhere"));
    assert_route_default(res.answer);
    pc_rule_result_clear(&res);

    const char *modes[] = {"twice", "number"};
    for (size_t i = 0; i < 2; i++) {
        route_with_mode(fx, modes[i], &res);
        assert_int_equal(res.outcome, PC_RULE_MALFORMED);
        assert_route_default(res.answer);
        pc_rule_result_clear(&res);
    }
}

static void test_route_error_falls_back_with_file_and_line(void **state)
{
    fixture_t *fx = *state;
    load_all(fx);
    pc_rule_result_t res;
    route_with_mode(fx, "error", &res);
    assert_int_equal(res.outcome, PC_RULE_ERROR);
    assert_string_equal(res.error.file, "rules/route.lua");
    assert_int_equal(res.error.line, 5);
    assert_string_equal(res.error.message, "route exploded");
    assert_route_default(res.answer);
    pc_rule_result_clear(&res);
}

static void test_route_error_with_no_candidates_falls_back_to_empty_list(void **state)
{
    fixture_t *fx = *state;
    load_all(fx);
    pc_rule_result_t res;
    json_t *ctx = js("{\"mode\": \"error\"}"), *none = js("[]");
    assert_int_equal(pc_rules_route(fx->rules, ctx, none, &res), 0);
    assert_int_equal(res.outcome, PC_RULE_ERROR);
    assert_true(json_is_array(res.answer));
    assert_int_equal(json_array_size(res.answer), 0);
    pc_rule_result_clear(&res);
    json_decref(ctx);
    json_decref(none);
}

static void test_route_accepts_candidate_tables_as_answer(void **state)
{
    fixture_t *fx = *state;
    load_all(fx);
    pc_rule_result_t res;
    route_with_mode(fx, "tables", &res);
    assert_int_equal(res.outcome, PC_RULE_OK);
    json_t *want = js("[\"sim_b\", \"sim_a\"]");
    assert_true(json_equal(res.answer, want));
    json_decref(want);
    pc_rule_result_clear(&res);
}

static void refund_with(fixture_t *fx, const char *ctx_text, pc_rule_result_t *res)
{
    json_t *c = js(ctx_text);
    assert_int_equal(pc_rules_refund_method(fx->rules, c, res), 0);
    json_decref(c);
}

static void test_refund_method_unknown_answer_falls_back_to_offline(void **state)
{
    fixture_t *fx = *state;
    load_all(fx);
    pc_rule_result_t res;
    refund_with(fx, "{\"mode\": \"bogus\"}", &res);
    assert_int_equal(res.outcome, PC_RULE_MALFORMED);
    assert_string_equal(json_string_value(res.answer), "OFFLINE");
    pc_rule_result_clear(&res);
    /* "API" and then a NUL byte is not "API" (before: read as a C string,
     * it was). */
    refund_with(fx, "{\"mode\": \"nul\", \"channel\": {\"refund_methods\": [\"API\"]}}", &res);
    assert_int_equal(res.outcome, PC_RULE_MALFORMED);
    assert_string_equal(json_string_value(res.answer), "OFFLINE");
    pc_rule_result_clear(&res);
}

static void test_refund_method_must_be_possible_for_the_channel(void **state)
{
    fixture_t *fx = *state;
    load_all(fx);
    pc_rule_result_t res;
    refund_with(fx, "{\"mode\": \"api\", \"channel\": {\"refund_methods\": [\"FILE\"]}}", &res);
    assert_int_equal(res.outcome, PC_RULE_MALFORMED);
    assert_string_equal(json_string_value(res.answer), "OFFLINE");
    pc_rule_result_clear(&res);

    refund_with(fx, "{\"mode\": \"api\", \"channel\": {\"refund_methods\": [\"API\"]}}", &res);
    assert_int_equal(res.outcome, PC_RULE_OK);
    assert_string_equal(json_string_value(res.answer), "API");
    pc_rule_result_clear(&res);

    /* PAYOUT needs the buyer's payee details, and a channel that pays out
     * to them: one that lists PAYOUT, or the card whose token it holds. An
     * account on a channel that pays nothing out (before: taken). */
    refund_with(fx, "{\"mode\": \"payout\", \"channel\": {\"refund_methods\": [\"PAYOUT\"]}}",
                &res);
    assert_int_equal(res.outcome, PC_RULE_MALFORMED);
    pc_rule_result_clear(&res);
    refund_with(fx,
                "{\"mode\": \"payout\", \"payee_available\": true, \"payee_type\": \"ACCOUNT\", "
                "\"channel\": {\"refund_methods\": [\"OFFLINE\"]}}",
                &res);
    assert_int_equal(res.outcome, PC_RULE_MALFORMED);
    assert_string_equal(json_string_value(res.answer), "OFFLINE");
    pc_rule_result_clear(&res);
    refund_with(fx,
                "{\"mode\": \"payout\", \"payee_available\": true, \"payee_type\": \"ACCOUNT\", "
                "\"channel\": {\"refund_methods\": [\"PAYOUT\"]}}",
                &res);
    assert_int_equal(res.outcome, PC_RULE_OK);
    assert_string_equal(json_string_value(res.answer), "PAYOUT");
    pc_rule_result_clear(&res);
    refund_with(fx, "{\"mode\": \"payout\", \"payee_available\": true, \"payee_type\": \"CARD\"}",
                &res);
    assert_int_equal(res.outcome, PC_RULE_OK);
    assert_string_equal(json_string_value(res.answer), "PAYOUT");
    pc_rule_result_clear(&res);
}

static void risk_call(fixture_t *fx, const char *ctx_text, pc_rule_result_t *res)
{
    json_t *c = js(ctx_text);
    pc_rules_risk(fx->rules, c, res);
    json_decref(c);
}

static void assert_review(const pc_rule_result_t *res)
{
    assert_string_equal(json_string_value(json_object_get(res->answer, "decision")), "REVIEW");
}

static void test_risk_rule_error_falls_back_to_review(void **state)
{
    fixture_t *fx = *state;
    put_rule(fx, "risk",
             "return function(ctx)\n"
             "  if ctx.fail then\n"
             "    local t = nil\n"
             "    return t.decision\n"
             "  end\n"
             "  return {decision = \"ACCEPT\", score = 0, reasons = {}}\n"
             "end\n",
             NULL);
    load_all(fx);
    pc_rule_result_t res;
    risk_call(fx, "{\"amount\": 100, \"fail\": true}", &res);
    assert_int_equal(res.outcome, PC_RULE_ERROR);
    assert_review(&res);
    json_t *reasons = json_object_get(res.answer, "reasons");
    assert_string_equal(json_string_value(json_array_get(reasons, 0)), "RULE_ERROR");
    assert_string_equal(res.error.file, "rules/risk.lua");
    assert_int_equal(res.error.line, 4);
    assert_non_null(strstr(res.error.message, "attempt to index"));
    pc_rule_result_clear(&res);
    assert_int_equal(pc_metrics_get("pc_rules_calls_total", "rule=\"risk\",outcome=\"error\""), 1);
}

static void test_risk_malformed_answers_fall_back_to_review_never_accept(void **state)
{
    fixture_t *fx = *state;
    put_rule(fx, "risk",
             "return function(ctx)\n"
             "  if ctx.mode == 'maybe' then return {decision = 'MAYBE', score = 1} end\n"
             "  if ctx.mode == 'fraction' then return {decision = 'ACCEPT', score = 1.5} end\n"
             "  if ctx.mode == 'huge' then return {decision = 'ACCEPT', score = 5000} end\n"
             "  if ctx.mode == 'reasons' then return {decision = 'ACCEPT', score = 1, reasons = "
             "{1}} end\n"
             "  if ctx.mode == 'nothing' then return end\n"
             "  if ctx.mode == 'lower' then return {decision = 'accept', score = 0} end\n"
             "  return {decision = 'ACCEPT', score = 0, reasons = {}}\n"
             "end\n",
             NULL);
    load_all(fx);
    const char *modes[] = {"maybe", "fraction", "huge", "reasons", "nothing", "lower"};
    for (size_t i = 0; i < 6; i++) {
        char ctx[96];
        snprintf(ctx, sizeof ctx, "{\"amount\": 1, \"mode\": \"%s\"}", modes[i]);
        pc_rule_result_t res;
        risk_call(fx, ctx, &res);
        assert_int_equal(res.outcome, PC_RULE_MALFORMED);
        assert_review(&res);
        pc_rule_result_clear(&res);
    }
}

static void test_risk_fallback_review_has_the_highest_score(void **state)
{
    fixture_t *fx = *state;
    put_rule(fx, "risk",
             "return function(ctx)\n"
             "  if ctx.mode == 'error' then error('risk exploded') end\n"
             "  if ctx.mode == 'nothing' then return end\n"
             "  return {decision = 'ACCEPT', score = 0, reasons = {}}\n"
             "end\n",
             NULL);
    load_all(fx);
    /* A review stored with score 0 would rank as the least risky payment. */
    const char *ctxs[] = {"{\"mode\": \"error\"}", "{\"mode\": \"nothing\"}", "[]"};
    const pc_rule_outcome_t outcomes[] = {PC_RULE_ERROR, PC_RULE_MALFORMED, PC_RULE_ERROR};
    for (size_t i = 0; i < 3; i++) {
        pc_rule_result_t res;
        json_t *c = js(ctxs[i]);
        pc_rules_risk(fx->rules, c, &res);
        json_decref(c);
        assert_int_equal(res.outcome, outcomes[i]);
        assert_review(&res);
        assert_int_equal(json_integer_value(json_object_get(res.answer, "score")), 1000);
        pc_rule_result_clear(&res);
    }
    /* And 1000 is a score an answer may give: the fallback is a valid answer. */
    put_rule(fx, "risk",
             "return function(ctx) return {decision = 'REVIEW', score = 1000, reasons = {}} end\n",
             "{\"examples\": [{\"name\": \"most\", \"ctx\": {},"
             " \"expect\": {\"decision\": \"REVIEW\", \"score\": 1000}}]}");
    load_all(fx);
    pc_rule_result_t res;
    risk_call(fx, "{}", &res);
    assert_int_equal(res.outcome, PC_RULE_OK);
    pc_rule_result_clear(&res);
}

static void test_rule_not_loaded_answers_safe_default(void **state)
{
    fixture_t *fx = *state;
    pc_rule_result_t res;
    assert_false(pc_rules_ready(fx->rules));
    risk_call(fx, "{\"amount\": 1}", &res);
    assert_int_equal(res.outcome, PC_RULE_ERROR);
    assert_review(&res);
    assert_string_equal(res.version, "");
    assert_non_null(strstr(res.error.message, "not loaded"));
    pc_rule_result_clear(&res);
}

static void test_amount_beyond_2_pow_53_is_refused_not_rounded(void **state)
{
    fixture_t *fx = *state;
    load_all(fx);
    pc_rule_result_t res;
    risk_call(fx, "{\"amount\": 9007199254740993}", &res);
    assert_int_equal(res.outcome, PC_RULE_ERROR);
    assert_non_null(strstr(res.error.message, "ctx.amount"));
    assert_non_null(strstr(res.error.message, "2^53"));
    assert_review(&res);
    pc_rule_result_clear(&res);

    risk_call(fx, "{\"amount\": 9007199254740991}", &res);
    assert_int_equal(res.outcome, PC_RULE_OK);
    pc_rule_result_clear(&res);
}

static void test_wrong_input_types_return_einval_with_default(void **state)
{
    fixture_t *fx = *state;
    load_all(fx);
    pc_rule_result_t res;
    json_t *ctx = js("{}"), *notlist = js("{\"a\": 1}"), *noid = js("[{\"type\": \"CARD\"}]");
    json_t *dup = js("[{\"method_id\": \"m\"}, {\"method_id\": \"m\"}]");
    assert_int_equal(pc_rules_cashier_rank(fx->rules, ctx, notlist, &res), PC_EINVAL);
    assert_int_equal(res.outcome, PC_RULE_ERROR);
    assert_true(json_is_array(res.answer));
    pc_rule_result_clear(&res);
    assert_int_equal(pc_rules_cashier_rank(fx->rules, ctx, noid, &res), PC_EINVAL);
    pc_rule_result_clear(&res);
    assert_int_equal(pc_rules_risk(fx->rules, notlist, &res), 0);
    assert_int_equal(res.outcome, PC_RULE_OK); /* any object is a context */
    pc_rule_result_clear(&res);
    assert_int_equal(pc_rules_risk(fx->rules, noid, &res), PC_EINVAL);
    assert_review(&res);
    pc_rule_result_clear(&res);
    /* Duplicate ids in the input cannot be mapped back: refused as input. */
    pc_rules_cashier_rank(fx->rules, ctx, dup, &res);
    assert_int_equal(res.outcome, PC_RULE_ERROR);
    assert_non_null(strstr(res.error.message, "twice"));
    pc_rule_result_clear(&res);
    json_decref(ctx);
    json_decref(notlist);
    json_decref(noid);
    json_decref(dup);
}

static void test_paycore_money_helpers_use_integer_math(void **state)
{
    fixture_t *fx = *state;
    put_rule(
        fx, "risk",
        "return function(ctx)\n"
        "  local r = {}\n"
        "  if ctx.check then\n"
        "    r[1] = tostring(paycore.percent_of(1999, 60))\n"  /* 11.994 -> 12 */
        "    r[2] = tostring(paycore.percent_of(1925, 20))\n"  /* 3.85 -> 4 */
        "    r[3] = tostring(paycore.percent_of(-1925, 20))\n" /* -3.85 -> -4 */
        "    r[4] = tostring(paycore.add(1, 2, 3))\n"
        "    r[5] = tostring(paycore.idiv(-7, 2))\n"
        "    r[6] = tostring(paycore.days_between(0, 86400 * 3 - 1))\n"
        "    r[7] = tostring(paycore.is_amount(1.5))\n"
        "    r[8] = tostring(paycore.contains({'A', 'B'}, 'B'))\n"
        "    r[9] = tostring(paycore.percent_of(9007199254740991, 10000) == paycore.MAX_AMOUNT)\n"
        "  end\n"
        "  if ctx.overflow then paycore.add(paycore.MAX_AMOUNT, 1) end\n"
        "  if ctx.fraction then paycore.percent_of(10.5, 100) end\n"
        "  return {decision = 'ACCEPT', score = 0, reasons = r}\n"
        "end\n",
        NULL);
    load_all(fx);
    pc_rule_result_t res;
    risk_call(fx, "{\"check\": true}", &res);
    assert_int_equal(res.outcome, PC_RULE_OK);
    json_t *want =
        js("[\"12\", \"4\", \"-4\", \"6\", \"-4\", \"2\", \"false\", \"true\", \"true\"]");
    if (!json_equal(json_object_get(res.answer, "reasons"), want)) {
        char *got = json_dumps(json_object_get(res.answer, "reasons"), 0);
        fail_msg("helpers gave %s", got);
    }
    json_decref(want);
    pc_rule_result_clear(&res);

    risk_call(fx, "{\"overflow\": true}", &res);
    assert_int_equal(res.outcome, PC_RULE_ERROR);
    assert_non_null(strstr(res.error.message, "2^53"));
    assert_int_equal(res.error.line, 14);
    pc_rule_result_clear(&res);

    risk_call(fx, "{\"fraction\": true}", &res);
    assert_int_equal(res.outcome, PC_RULE_ERROR);
    assert_non_null(strstr(res.error.message, "integer"));
    pc_rule_result_clear(&res);
}

/* ---- reload --------------------------------------------------------------------------- */

static void test_reload_swaps_version_hash(void **state)
{
    fixture_t *fx = *state;
    load_all(fx);
    char want[65];
    sha256_hex(RISK_OK, want);
    assert_string_equal(pc_rules_version(fx->rules, PC_RULE_RISK), want);

    const char *v2 = "return function(ctx)\n"
                     "  return {decision = 'ACCEPT', score = 1, reasons = {'V2'}}\n"
                     "end\n";
    put_rule(fx, "risk", v2, NULL);
    assert_int_equal(pc_rules_reload(fx->rules), 0);
    sha256_hex(v2, want);
    assert_string_equal(pc_rules_version(fx->rules, PC_RULE_RISK), want);

    pc_rule_result_t res;
    risk_call(fx, "{}", &res);
    assert_string_equal(res.version, want);
    assert_string_equal(
        json_string_value(json_array_get(json_object_get(res.answer, "reasons"), 0)), "V2");
    pc_rule_result_clear(&res);
    assert_int_equal(pc_metrics_get("pc_rule_reloads_total", "rule=\"risk\",result=\"ok\""), 2);
    /* Unchanged rules are not rebuilt or counted again. */
    assert_int_equal(pc_metrics_get("pc_rule_reloads_total", "rule=\"route\",result=\"ok\""), 1);
}

static void
test_syntax_error_is_refused_with_file_line_and_old_version_keeps_answering(void **state)
{
    fixture_t *fx = *state;
    load_all(fx);
    char v1[65];
    snprintf(v1, sizeof v1, "%s", pc_rules_version(fx->rules, PC_RULE_RISK));

    put_rule(fx, "risk",
             "return function(ctx)\n"
             "  local x = \n"
             "  if then\n"
             "end\n",
             NULL);
    assert_int_equal(pc_rules_reload(fx->rules), PC_EINVAL);
    assert_string_equal(pc_rules_version(fx->rules, PC_RULE_RISK), v1);

    json_t *st;
    assert_string_equal(rule_status(fx, "risk", &st), "refused");
    json_t *risk = status_of(st, "risk");
    json_t *err = json_object_get(risk, "last_error");
    assert_string_equal(json_string_value(json_object_get(err, "file")), "rules/risk.lua");
    assert_int_equal(json_integer_value(json_object_get(err, "line")), 3);
    assert_non_null(strstr(json_string_value(json_object_get(err, "message")), "near"));
    assert_string_equal(json_string_value(json_object_get(risk, "version")), v1);
    assert_non_null(json_object_get(risk, "refused_version"));
    assert_string_equal(json_string_value(json_object_get(status_of(st, "route"), "status")), "ok");
    json_decref(st);

    pc_rule_result_t res;
    risk_call(fx, "{}", &res);
    assert_int_equal(res.outcome, PC_RULE_OK);
    assert_string_equal(res.version, v1);
    assert_string_equal(json_string_value(json_object_get(res.answer, "decision")), "ACCEPT");
    pc_rule_result_clear(&res);
    assert_int_equal(pc_metrics_get("pc_rule_reloads_total", "rule=\"risk\",result=\"refused\""),
                     1);

    /* Fixing the file brings the rule back to "ok". */
    put_rule(fx, "risk", RISK_OK, NULL);
    assert_int_equal(pc_rules_reload(fx->rules), 0);
    assert_string_equal(rule_status(fx, "risk", &st), "ok");
    assert_true(json_is_null(json_object_get(status_of(st, "risk"), "last_error")));
    json_decref(st);
}

/* Puts lua as the risk rule and reloads: the version is refused at the
 * example on line 1 of rules/tests/risk.json, and v1 keeps serving. Returns
 * the refusal's message, owned by *st (the caller frees it). */
static const char *refused_risk(fixture_t *fx, const char *lua, const char *v1, json_t **st)
{
    put_rule(fx, "risk", lua, NULL);
    assert_int_equal(pc_rules_reload(fx->rules), PC_EINVAL);
    assert_string_equal(pc_rules_version(fx->rules, PC_RULE_RISK), v1);
    assert_string_equal(rule_status(fx, "risk", st), "refused");
    json_t *err = json_object_get(status_of(*st, "risk"), "last_error");
    assert_string_equal(json_string_value(json_object_get(err, "file")), "rules/tests/risk.json");
    assert_int_equal(json_integer_value(json_object_get(err, "line")), 1);
    return json_string_value(json_object_get(err, "message"));
}

static void test_failing_example_is_refused_and_old_version_keeps_serving(void **state)
{
    fixture_t *fx = *state;
    load_all(fx);
    char v1[65];
    snprintf(v1, sizeof v1, "%s", pc_rules_version(fx->rules, PC_RULE_RISK));
    /* Compiles fine, but contradicts the example that expects ACCEPT. */
    json_t *st;
    const char *msg = refused_risk(fx,
                                   "return function(ctx)\n"
                                   "  return {decision = 'REJECT', score = 100, reasons = {}}\n"
                                   "end\n",
                                   v1, &st);
    assert_non_null(strstr(msg, "\"plain\""));
    json_decref(st);

    pc_rule_result_t res;
    risk_call(fx, "{}", &res);
    assert_string_equal(json_string_value(json_object_get(res.answer, "decision")), "ACCEPT");
    pc_rule_result_clear(&res);
}

/* Right but slow: a risk rule that spins through a million additions answers
 * as its example expects, well inside a generous time and instruction
 * budget, but costs milliseconds of CPU per call, which every pay would wait
 * for. It is refused as too slow (the old version keeps serving, the
 * message says how slow, where, and which setting); with no limit the same
 * rule loads. */
#define RISK_SLOW                                                                                  \
    "return function(ctx)\n"                                                                       \
    "  local x = 0\n"                                                                              \
    "  for i = 1, 1000000 do x = x + i % 7 end\n"                                                  \
    "  return {decision = 'ACCEPT', score = x > 0 and 0 or 1, reasons = {}}\n"                     \
    "end\n"

static void test_slow_rule_is_refused_unless_the_limit_allows_it(void **state)
{
    fixture_t *fx = *state;
    pc_rules_free(fx->rules);
    pc_rules_opts_t opts = {
        .timeout_us = 5000000, .max_instructions = 500000000, .max_example_us = 500};
    fx->rules = pc_rules_new(fx->dir, &opts);
    load_all(fx); /* the fixture's rules, microseconds each, pass */
    char v1[65];
    snprintf(v1, sizeof v1, "%s", pc_rules_version(fx->rules, PC_RULE_RISK));
    json_t *st;
    const char *msg = refused_risk(fx, RISK_SLOW, v1, &st);
    assert_non_null(strstr(msg, "example 1 \"plain\": too slow: the call took "));
    assert_non_null(strstr(msg, "the limit is 0.50 ms (rules.max_example_us)"));
    json_decref(st);

    /* payctl's report says the same, with each example's cost. */
    json_t *report = pc_rules_test_dir(fx->dir, &opts);
    json_t *risk = json_array_get(json_object_get(report, "rules"), PC_RULE_RISK);
    assert_true(json_is_false(json_object_get(risk, "ok")));
    json_t *ex = json_array_get(json_object_get(risk, "examples"), 0);
    assert_true(json_is_false(json_object_get(ex, "ok")));
    assert_true(json_integer_value(json_object_get(ex, "cpu_us")) > 500);
    json_decref(report);

    opts.max_example_us = UINT64_MAX;
    pc_rules_free(fx->rules);
    fx->rules = pc_rules_new(fx->dir, &opts);
    load_all(fx);
    assert_string_not_equal(pc_rules_version(fx->rules, PC_RULE_RISK), v1);
}

static void test_rule_without_examples_is_refused(void **state)
{
    fixture_t *fx = *state;
    char path[128];
    snprintf(path, sizeof path, "%s/tests/route.json", fx->dir);
    unlink(path);
    assert_int_equal(pc_rules_reload(fx->rules), PC_EINVAL);
    assert_false(pc_rules_ready(fx->rules));
    assert_string_equal(pc_rules_version(fx->rules, PC_RULE_ROUTE), "");
    json_t *st;
    assert_string_equal(rule_status(fx, "route", &st), "refused");
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(status_of(st, "route"), "last_error"), "file")),
                        "rules/tests/route.json");
    json_decref(st);
}

static void test_missing_rule_file_reports_missing(void **state)
{
    fixture_t *fx = *state;
    char path[128];
    snprintf(path, sizeof path, "%s/refund_method.lua", fx->dir);
    unlink(path);
    assert_int_equal(pc_rules_reload(fx->rules), PC_EINVAL);
    json_t *st;
    assert_string_equal(rule_status(fx, "refund_method", &st), "missing");
    json_decref(st);
    pc_rule_result_t res;
    refund_with(fx, "{}", &res);
    assert_string_equal(json_string_value(res.answer), "OFFLINE");
    pc_rule_result_clear(&res);
}

static void test_bytecode_rule_file_is_refused(void **state)
{
    fixture_t *fx = *state;
    load_all(fx);
    /* A LuaJIT bytecode dump starts with ESC 'L' 'J'. */
    put_rule(fx, "risk", "\033LJ\002\000garbage", NULL);
    assert_int_equal(pc_rules_reload(fx->rules), PC_EINVAL);
    json_t *st;
    assert_string_equal(rule_status(fx, "risk", &st), "refused");
    const char *msg = json_string_value(
        json_object_get(json_object_get(status_of(st, "risk"), "last_error"), "message"));
    assert_non_null(strstr(msg, "bytecode"));
    json_decref(st);
}

static int reload_done_status = 99;
static int reload_done_calls;

static void on_reload_done(pc_rules_t *rules, int status, void *data)
{
    (void)rules;
    (void)data;
    reload_done_status = status;
    reload_done_calls++;
}

static void test_async_reload_swaps_on_the_loop_thread(void **state)
{
    fixture_t *fx = *state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    reload_done_calls = 0;
    assert_int_equal(pc_rules_reload_async(fx->rules, &loop, on_reload_done, NULL), 0);
    /* A second request while the first runs is served by a second run. */
    assert_int_equal(pc_rules_reload_async(fx->rules, &loop, on_reload_done, NULL), 0);
    assert_false(pc_rules_ready(fx->rules));
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(reload_done_calls, 2);
    assert_int_equal(reload_done_status, 0);
    assert_true(pc_rules_ready(fx->rules));

    put_rule(fx, "risk", "return function(ctx) return {decision = 'ACCEPT', score = 2} end\n",
             NULL);
    assert_int_equal(pc_rules_reload_async(fx->rules, &loop, on_reload_done, NULL), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(reload_done_status, 0);
    pc_rule_result_t res;
    risk_call(fx, "{}", &res);
    assert_int_equal(json_integer_value(json_object_get(res.answer, "score")), 2);
    pc_rule_result_clear(&res);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_freeing_engine_during_async_reload_is_safe(void **state)
{
    fixture_t *fx = *state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    reload_done_calls = 0;
    assert_int_equal(pc_rules_reload_async(fx->rules, &loop, on_reload_done, NULL), 0);
    pc_rules_free(fx->rules);
    fx->rules = NULL;
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(reload_done_calls, 1);
    assert_int_equal(reload_done_status, PC_ECLOSED);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- the shipped rules ------------------------------------------------------------------ */

static void repo_rules_dir(char *out, size_t len)
{
    /* This file is <repo>/tests/unit/test_rules.c. */
    snprintf(out, len, "%s", __FILE__);
    char *p = strstr(out, "/tests/unit/");
    assert_non_null(p);
    snprintf(p, len - (size_t)(p - out), "/rules");
}

static void test_shipped_default_rules_pass_their_examples(void **state)
{
    (void)state;
    char dir[512];
    repo_rules_dir(dir, sizeof dir);
    json_t *report = pc_rules_test_dir(dir, NULL);
    assert_non_null(report);
    if (!json_is_true(json_object_get(report, "ok"))) {
        char *s = json_dumps(report, JSON_INDENT(1));
        print_error("%s\n", s);
        free(s);
    }
    assert_true(json_is_true(json_object_get(report, "ok")));
    size_t i, total = 0;
    json_t *r;
    json_array_foreach(json_object_get(report, "rules"), i, r)
    {
        /* Several examples per rule, so every branch is exercised. */
        assert_true(json_array_size(json_object_get(r, "examples")) >= 5);
        total += json_array_size(json_object_get(r, "examples"));
    }
    assert_int_equal(i, 4);
    assert_true(total >= 30);
    json_decref(report);

    pc_rules_t *rules = pc_rules_new(dir, NULL);
    assert_int_equal(pc_rules_reload(rules), 0);
    assert_true(pc_rules_ready(rules));
    pc_rules_free(rules);
}

static void test_shipped_risk_rule_rejects_blocked_card(void **state)
{
    (void)state;
    char dir[512];
    repo_rules_dir(dir, sizeof dir);
    pc_rules_t *rules = pc_rules_new(dir, NULL);
    assert_int_equal(pc_rules_reload(rules), 0);
    json_t *ctx =
        js("{\"amount\": 1000, \"method\": \"CARD\", \"lists\": {\"card_blocked\": true}}");
    pc_rule_result_t res;
    pc_rules_risk(rules, ctx, &res);
    assert_int_equal(res.outcome, PC_RULE_OK);
    assert_string_equal(json_string_value(json_object_get(res.answer, "decision")), "REJECT");
    pc_rule_result_clear(&res);
    json_decref(ctx);
    pc_rules_free(rules);
}

static void test_test_dir_reports_each_failing_example(void **state)
{
    fixture_t *fx = *state;
    pc_t_write_file(fx->dir, "tests/risk.json",
                    "{\"examples\": [\n"
                    "  {\"name\": \"good\", \"ctx\": {}, \"expect\": {\"decision\": \"ACCEPT\"}},\n"
                    "  {\"name\": \"bad\", \"ctx\": {}, \"expect\": {\"decision\": \"REJECT\"}}\n"
                    "]}\n");
    json_t *report = pc_rules_test_dir(fx->dir, NULL);
    assert_false(json_is_true(json_object_get(report, "ok")));
    json_t *risk = json_array_get(json_object_get(report, "rules"), PC_RULE_RISK);
    assert_false(json_is_true(json_object_get(risk, "ok")));
    json_t *ex = json_object_get(risk, "examples");
    assert_int_equal(json_array_size(ex), 2);
    assert_true(json_is_true(json_object_get(json_array_get(ex, 0), "ok")));
    json_t *bad = json_array_get(ex, 1);
    assert_false(json_is_true(json_object_get(bad, "ok")));
    assert_int_equal(json_integer_value(json_object_get(bad, "line")), 3);
    assert_string_equal(json_string_value(json_object_get(json_object_get(bad, "got"), "decision")),
                        "ACCEPT");
    json_t *route = json_array_get(json_object_get(report, "rules"), PC_RULE_ROUTE);
    assert_true(json_is_true(json_object_get(route, "ok")));
    json_decref(report);
}

/* An example whose expect asserts nothing ({}) passed whatever the rule
 * answered, so a file of such examples let any rule in (REJECT for
 * everyone included). It is refused, naming the example. */
static void test_an_example_that_asserts_nothing_is_refused(void **state)
{
    fixture_t *fx = *state;
    load_all(fx);
    char v1[65];
    snprintf(v1, sizeof v1, "%s", pc_rules_version(fx->rules, PC_RULE_RISK));
    pc_t_write_file(fx->dir, "tests/risk.json",
                    "{\"examples\": [\n"
                    "  {\"name\": \"anything\", \"ctx\": {}, \"expect\": {}}\n"
                    "]}\n");
    pc_t_write_file(fx->dir, "risk.lua",
                    "return function(ctx)\n"
                    "  return {decision = 'REJECT', score = 100, reasons = {}}\n"
                    "end\n");
    assert_int_equal(pc_rules_reload(fx->rules), PC_EINVAL);
    assert_string_equal(pc_rules_version(fx->rules, PC_RULE_RISK), v1);
    json_t *report = pc_rules_test_dir(fx->dir, NULL);
    json_t *risk = json_array_get(json_object_get(report, "rules"), PC_RULE_RISK);
    assert_false(json_is_true(json_object_get(risk, "ok")));
    char *text = json_dumps(risk, 0);
    assert_non_null(strstr(text, "asserts nothing"));
    free(text);
    json_decref(report);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cashier_rank_answer_maps_back_to_input_methods, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_cashier_rank_invented_method_is_malformed_and_keeps_input_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cashier_rank_duplicate_method_is_malformed, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_cashier_rank_recommending_an_unavailable_method_is_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cashier_rank_wrong_answer_types_are_malformed, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_route_unknown_channel_is_malformed_and_falls_back_to_healthy_first, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_route_error_falls_back_with_file_and_line, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_route_error_with_no_candidates_falls_back_to_empty_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_route_accepts_candidate_tables_as_answer, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_refund_method_unknown_answer_falls_back_to_offline,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_refund_method_must_be_possible_for_the_channel, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_risk_rule_error_falls_back_to_review, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_risk_malformed_answers_fall_back_to_review_never_accept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_risk_fallback_review_has_the_highest_score, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_rule_not_loaded_answers_safe_default, setup, teardown),
        cmocka_unit_test_setup_teardown(test_amount_beyond_2_pow_53_is_refused_not_rounded, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_wrong_input_types_return_einval_with_default, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_paycore_money_helpers_use_integer_math, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_reload_swaps_version_hash, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_syntax_error_is_refused_with_file_line_and_old_version_keeps_answering, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_failing_example_is_refused_and_old_version_keeps_serving, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_rule_is_refused_unless_the_limit_allows_it, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_rule_without_examples_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_rule_file_reports_missing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bytecode_rule_file_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_async_reload_swaps_on_the_loop_thread, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_freeing_engine_during_async_reload_is_safe, setup,
                                        teardown),
        cmocka_unit_test(test_shipped_default_rules_pass_their_examples),
        cmocka_unit_test(test_shipped_risk_rule_rejects_blocked_card),
        cmocka_unit_test_setup_teardown(test_test_dir_reports_each_failing_example, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_an_example_that_asserts_nothing_is_refused, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
