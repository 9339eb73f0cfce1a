#include "ctl/ctl_rules.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "rules/rules.h"

static void print_json_line(const char *label, const json_t *v)
{
    char *s = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER) : NULL;
    printf("      %-9s %s\n", label, s ? s : "null");
    free(s);
}

static void print_example_failure(const char *dir, const char *rule, const json_t *ex)
{
    const json_t *err = json_object_get(ex, "error");
    const json_t *got = json_object_get(ex, "got");
    const char *outcome = json_string_value(json_object_get(ex, "outcome"));
    const char *message = json_string_value(json_object_get(err, "message"));
    printf("  FAIL example \"%s\" (%s/tests/%s.json:%d)\n",
           json_string_value(json_object_get(ex, "name")), dir, rule,
           (int)json_integer_value(json_object_get(ex, "line")));
    print_json_line("expected:", json_object_get(ex, "expected"));
    if (got && !json_is_null(got))
        print_json_line("got:", got);
    if (outcome && strcmp(outcome, "ok") != 0) {
        /* The rule did not answer properly: say where it went wrong. */
        const char *file = json_string_value(json_object_get(err, "file"));
        int line = (int)json_integer_value(json_object_get(err, "line"));
        if (file && *file && line > 0)
            printf("      %-9s %s at %s:%d: %s\n", "error:", outcome, file, line,
                   message ? message : "");
        else
            printf("      %-9s %s in %s: %s\n", "error:", outcome, file && *file ? file : "?",
                   message ? message : "");
    } else if (message && *message) {
        printf("      %-9s %s\n", "why:", message);
    }
}

int pc_ctl_rules_test(int argc, char **argv)
{
    if (argc > 1) {
        fprintf(stderr, "usage: payctl rules test [rules-dir]\n");
        return 2;
    }
    const char *dir = argc == 1 ? argv[0] : "rules";
    /* The server's limit on an example's CPU, when set for it here too. */
    pc_rules_opts_t opts = {0};
    const char *slow = getenv("PAYCORE_RULES_MAX_EXAMPLE_US");
    if (slow && *slow) {
        char *end;
        long long us = strtoll(slow, &end, 10);
        if (*end || us < 0) {
            fprintf(stderr, "payctl: PAYCORE_RULES_MAX_EXAMPLE_US must be a whole number of "
                            "microseconds (0: no limit)\n");
            return 2;
        }
        opts.max_example_us = pc_rules_example_limit(us);
    }
    json_t *report = pc_rules_test_dir(dir, &opts);
    if (!report) {
        fprintf(stderr, "payctl: out of memory\n");
        return 1;
    }
    size_t i;
    const json_t *rule;
    int failures = 0;
    json_array_foreach(json_object_get(report, "rules"), i, rule)
    {
        const json_t *examples = json_object_get(rule, "examples");
        size_t total = json_array_size(examples), passed = 0, j;
        long long slowest = 0;
        const json_t *ex;
        json_array_foreach(examples, j, ex)
        {
            passed += json_is_true(json_object_get(ex, "ok"));
            long long us = json_integer_value(json_object_get(ex, "cpu_us"));
            if (us > slowest)
                slowest = us;
        }
        const char *version = json_string_value(json_object_get(rule, "version"));
        if (json_is_true(json_object_get(rule, "ok"))) {
            printf("ok    %-28s %zu/%zu examples  version %.12s  slowest %lld us\n",
                   json_string_value(json_object_get(rule, "file")), passed, total,
                   version ? version : "", slowest);
            continue;
        }
        failures++;
        printf("FAIL  %-28s %zu/%zu examples\n", json_string_value(json_object_get(rule, "file")),
               passed, total);
        json_array_foreach(examples, j, ex)
        {
            if (!json_is_true(json_object_get(ex, "ok")))
                print_example_failure(dir, json_string_value(json_object_get(rule, "name")), ex);
        }
        const json_t *err = json_object_get(rule, "error");
        /* Problems not tied to one example: the rule does not compile, a file
         * is missing, the examples file is malformed. */
        if (total == passed && err) {
            printf("  error %s:%d: %s\n", json_string_value(json_object_get(err, "file")),
                   (int)json_integer_value(json_object_get(err, "line")),
                   json_string_value(json_object_get(err, "message")));
        }
    }
    printf("%s\n", failures ? "rules test: FAILED" : "rules test: all rules pass their examples");
    json_decref(report);
    return failures ? 1 : 0;
}
