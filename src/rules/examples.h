/* A rule's examples (internal to rules/): the file rules/tests/<rule>.json
 * that a rule version must pass before it is loaded. Format:
 *
 *   {
 *     "base_ctx": { ... },            optional, merged under every example's ctx
 *     "examples": [
 *       {
 *         "name": "blocked card is rejected",
 *         "ctx": { ... },             merged over base_ctx (objects key by key)
 *         "methods": [ ... ],         cashier_rank only: the list argument
 *         "candidates": [ ... ],      route only: the list argument
 *         "expect": ...               see below
 *       }
 *     ]
 *   }
 *
 * expect per rule:
 *   cashier_rank   ["m_balance", "m_card"] (the order) or
 *                  {"order": [...], "recommended": [...]} (either key optional)
 *   risk           {"decision": "REJECT", "score": 100, "reasons": [...],
 *                   "reasons_include": [...]} (every key optional)
 *   route          ["sim_card", "sim_card2"]
 *   refund_method  "API"
 *
 * An example passes when the rule answers (outcome OK, answer valid) and the
 * answer satisfies expect. Needs rules/rule.h. */
#ifndef PC_RULES_EXAMPLES_H
#define PC_RULES_EXAMPLES_H
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "rules/rule.h"

/* Runs every example in text (the content of file, named in messages) against
 * rule. An example that answers as expected but costs more than max_cpu_us
 * of this thread's CPU (the least of three calls) fails as too slow.
 * Returns the number of failed examples, or -1 when the file itself is
 * malformed. err receives the first problem (file and line point at the
 * example, or at the rule line for a rule error); *passed the number that
 * passed. When report is non-NULL one object per example is appended to it:
 * {"name","line","ok","expected","got","outcome","error","cpu_us"}. */
int pc__examples_run(pc__rule_t *rule, const char *text, size_t len, const char *file,
                     uint64_t max_cpu_us, json_t *report, pc_rule_error_t *err, size_t *passed);

#endif
