#include "rules/rule.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>
#include <openssl/evp.h>

#include "auth/sign.h"
#include "core/error.h"
#include "rules/examples.h"

/* Reads a whole file (at most PC_RULES_MAX_FILE bytes). Returns a malloc'd,
 * NUL-terminated buffer, or NULL with errno set (ENOENT, EFBIG, ...). */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = malloc(PC_RULES_MAX_FILE + 1);
    if (!buf) {
        fclose(f);
        errno = ENOMEM;
        return NULL;
    }
    size_t n = fread(buf, 1, PC_RULES_MAX_FILE + 1, f);
    int failed = ferror(f);
    fclose(f);
    if (failed || n > PC_RULES_MAX_FILE) {
        free(buf);
        errno = failed ? EIO : EFBIG;
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static void set_error(pc_rule_error_t *err, const char *file, int line, const char *msg)
{
    memset(err, 0, sizeof *err);
    snprintf(err->file, sizeof err->file, "%s", file);
    err->line = line;
    snprintf(err->message, sizeof err->message, "%s", msg);
}

void pc__rule_build(const char *dir, pc_rule_id_t id, const pc_rules_opts_t *opts,
                    const char *skip_version, const char *skip_examples, bool want_report,
                    pc__build_t *out)
{
    const pc__point_t *pt = pc__point(id);
    char path[4096], shown[96], shown_examples[96], msg[320];
    char *text = NULL, *examples = NULL;
    size_t len = 0, elen = 0;
    pc__rule_t *rule = NULL;
    memset(out, 0, sizeof *out);
    snprintf(shown, sizeof shown, "rules/%s.lua", pt->name);
    snprintf(shown_examples, sizeof shown_examples, "rules/tests/%s.json", pt->name);
    if (want_report)
        out->report = json_array();

    snprintf(path, sizeof path, "%s/%s.lua", dir, pt->name);
    text = read_file(path, &len);
    if (!text) {
        out->missing = errno == ENOENT;
        snprintf(msg, sizeof msg, "cannot read %s: %s", shown,
                 errno == EFBIG ? "larger than 1 MiB" : strerror(errno));
        set_error(&out->error, shown, 0, msg);
        goto done;
    }
    if (pc_sha256_hex(text, len, out->version) < 0)
        out->version[0] = 0;

    snprintf(path, sizeof path, "%s/tests/%s.json", dir, pt->name);
    examples = read_file(path, &elen);
    if (!examples) {
        /* A rule without examples is never loaded: the examples are how
         * product staff prove a change does what they meant. */
        snprintf(msg, sizeof msg, "cannot read the examples %s: %s", shown_examples,
                 errno == EFBIG ? "larger than 1 MiB" : strerror(errno));
        set_error(&out->error, shown_examples, 0, msg);
        goto done;
    }
    if (pc_sha256_hex(examples, elen, out->examples_hash) < 0)
        out->examples_hash[0] = 0;

    if (skip_version && skip_examples && strcmp(skip_version, out->version) == 0 &&
        strcmp(skip_examples, out->examples_hash) == 0) {
        out->unchanged = true;
        goto done;
    }

    rule = calloc(1, sizeof *rule);
    if (!rule) {
        set_error(&out->error, shown, 0, "out of memory");
        goto done;
    }
    rule->point = pt;
    rule->ref = -1;
    memcpy(rule->version, out->version, sizeof rule->version);
    memcpy(rule->examples_hash, out->examples_hash, sizeof rule->examples_hash);
    rule->sb = pc__sandbox_new(pt->name, opts, msg, sizeof msg);
    if (!rule->sb) {
        set_error(&out->error, shown, 0, msg);
        goto done;
    }
    /* Without a builder (a LuaJIT whose JIT cannot be had) the arguments go
     * through the C API: slower, the same answers. */
    if ((pt->list_shape || pt->ctx_shape) && !(opts && opts->plain_lists))
        (void)pc__sandbox_use_records(rule->sb, pt->list_shape, pt->ctx_shape, msg, sizeof msg);
    rule->ref = pc__sandbox_load(rule->sb, text, len, &out->error);
    if (rule->ref < 0)
        goto done;

    /* Examples run with logging off: this may be a worker thread. */
    rule->sb->quiet = true;
    size_t passed = 0;
    uint64_t max_cpu_us =
        opts && opts->max_example_us ? opts->max_example_us : PC_RULES_DEFAULT_MAX_EXAMPLE_US;
    int failed = pc__examples_run(rule, examples, elen, shown_examples, max_cpu_us, out->report,
                                  &out->error, &passed);
    if (failed != 0)
        goto done;
    rule->examples = passed;
    memset(&out->error, 0, sizeof out->error);
    out->rule = rule;
    rule = NULL;

done:
    pc__rule_free(rule);
    free(text);
    free(examples);
}

void pc__build_clear(pc__build_t *build)
{
    pc__rule_free(build->rule);
    build->rule = NULL;
    json_decref(build->report);
    build->report = NULL;
}

void pc__rule_free(pc__rule_t *rule)
{
    if (!rule)
        return;
    pc__sandbox_free(rule->sb);
    free(rule);
}

/* The point's safe default, into typed->answer for a typed call. */
static void safe_default(const pc__point_t *pt, const json_t *ctx, const json_t *list,
                         const pc__typed_list_t *typed, pc_rule_outcome_t outcome,
                         pc_rule_result_t *out)
{
    if (typed) {
        pc__typed_default(typed);
        out->answer = NULL;
    } else {
        out->answer = pt->safe_default(ctx, list, outcome);
    }
}

void pc__rule_fallback(const pc__point_t *pt, const json_t *ctx, const json_t *list,
                       const pc__typed_list_t *typed, pc_rule_outcome_t outcome, const char *file,
                       const char *message, pc_rule_result_t *out)
{
    out->outcome = outcome;
    safe_default(pt, ctx, list, typed, outcome, out);
    memset(&out->error, 0, sizeof out->error);
    snprintf(out->error.file, sizeof out->error.file, "%s", file ? file : "");
    snprintf(out->error.message, sizeof out->error.message, "%s", message);
}

int pc__rule_invoke(pc__rule_t *rule, const json_t *ctx, const json_t *list,
                    const pc__typed_list_t *typed, pc_rule_result_t *out, json_t **raw)
{
    const pc__point_t *pt = rule->point;
    char why[256];
    memcpy(out->version, rule->version, sizeof out->version);
    if (raw)
        *raw = NULL;
    if (pc__point_check_input(pt, ctx, list, typed != NULL, why, sizeof why) < 0) {
        char msg[300];
        snprintf(msg, sizeof msg, "input refused: %s", why);
        pc__rule_fallback(pt, ctx, list, typed, PC_RULE_ERROR, "", msg, out);
        return PC_EINVAL;
    }
    pc__call_t call = {.push_args = pt->push_args,
                       .check = pt->check,
                       .ctx = ctx,
                       .list = list,
                       .typed = typed,
                       .want_raw = raw != NULL};
    out->outcome = pc__sandbox_call(rule->sb, rule->ref, &call, &out->error);
    json_decref(call.typed_json);
    if (out->outcome == PC_RULE_OK) {
        out->answer = call.answer;
    } else {
        json_decref(call.answer);
        safe_default(pt, ctx, list, typed, out->outcome, out);
    }
    if (raw)
        *raw = call.raw;
    else
        json_decref(call.raw);
    return call.input_refused ? PC_EINVAL : 0;
}
