/* The four decision points as data (internal to rules/): for each, how its
 * arguments are passed to Lua, how its answer is validated and turned into
 * JSON, its safe default, and how an example's expectation is compared with
 * an answer. Adding a decision point means adding one entry here and one rule
 * file.
 *
 * Answers, as returned in pc_rule_result_t.answer:
 *   cashier_rank   array of the input method objects in the rule's order,
 *                  each with "recommended" set to the rule's flag (objects
 *                  whose flag is unchanged are the caller's own, shared;
 *                  the others are copies)
 *   risk           {"decision": "...", "score": int 0..1000, "reasons": [str]}
 *   route          array of channel_id strings, most preferred first
 *   refund_method  string "API" | "PAYOUT" | "FILE" | "OFFLINE"
 *
 * Needs LuaJIT, jansson and rules/sandbox.h (pc__call_t). */
#ifndef PC_RULES_POINTS_H
#define PC_RULES_POINTS_H
#include <jansson.h>
#include <lua.h>
#include <stdbool.h>
#include <stddef.h>

#include "rules/rules.h"
#include "rules/sandbox.h"

typedef struct pc__point {
    pc_rule_id_t id;
    const char *name;
    /* Key of the list argument in examples ("methods", "candidates"), or NULL
     * when the rule takes only ctx. */
    const char *list_key;
    /* The list elements' shape when they are flat records the JIT-compiled
     * builder takes (records.h), or NULL to convert them with convert.h. */
    const pc__record_shape_t *list_shape;
    /* Likewise for ctx, or NULL. */
    const pc__record_shape_t *ctx_shape;
    int (*push_args)(lua_State *L, pc__call_t *call);
    int (*check)(lua_State *L, pc__call_t *call, int idx);
    /* Returns a new reference to the safe default answer for these inputs. */
    json_t *(*safe_default)(const json_t *ctx, const json_t *list, pc_rule_outcome_t why);
    /* Returns 1 when answer satisfies an example's expectation, 0 with why
     * filled when it does not, -1 with why filled when the expectation itself
     * is not understood. */
    int (*matches)(const json_t *answer, const json_t *expect, char *why, size_t whylen);
    /* Returns a new reference to a short form of answer for people to read
     * (cashier_rank: {"order":[ids],"recommended":[ids]}; others: answer). */
    json_t *(*summarize)(const json_t *answer);
} pc__point_t;

/* The decision point with this id (id < PC_RULE_COUNT). Static. */
const pc__point_t *pc__point(pc_rule_id_t id);

/* Checks the JSON types of a call's inputs before anything runs: ctx an
 * object, list an array where the point has one (its elements, which need
 * unique string ids, are checked as they are converted; a typed call has
 * no JSON list). Returns 0, or -1 with why filled. */
int pc__point_check_input(const pc__point_t *pt, const json_t *ctx, const json_t *list, bool typed,
                          char *why, size_t whylen);

/* The safe default of a typed call (sandbox.h): every method in input
 * order with its own flag. */
void pc__typed_default(const pc__typed_list_t *typed);

#endif
