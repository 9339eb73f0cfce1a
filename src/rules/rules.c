#include "rules/rules.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uv.h>

#include "core/error.h"
#include "core/jsonw.h"
#include "core/log.h"
#include "core/metrics.h"
#include "rules/rule.h"

#define OUTCOME_COUNT 5

/* A failing rule under load would log on every call; one line per rule per
 * second (with a count of what was left out) is enough to act on. */
#define LOG_INTERVAL_NS 1000000000ull

typedef struct {
    pc__rule_t *rule; /* the serving version, or NULL */
    const char *status;
    bool has_error;
    pc_rule_error_t last_error;
    char refused_version[65];
    char refused_examples[65];
    /* Prometheus label strings, built once. */
    char call_labels[OUTCOME_COUNT][64];
    char rule_label[48];
    char reload_ok[64], reload_refused[64];
    uint64_t last_log_ns;
    uint64_t suppressed_logs;
} slot_t;

typedef struct waiter {
    pc_rules_reload_cb cb;
    void *data;
    struct waiter *next;
} waiter_t;

typedef struct job job_t;

struct pc_rules {
    char *dir;
    pc_rules_opts_t opts;
    slot_t slots[PC_RULE_COUNT];
    uv_loop_t *loop;
    job_t *job;        /* the async reload running, if any */
    waiter_t *pending; /* requests that arrived while it ran */
    bool closing;
};

struct job {
    uv_work_t req;
    pc_rules_t *rules;
    char skip_version[PC_RULE_COUNT][65];
    char skip_examples[PC_RULE_COUNT][65];
    pc__build_t builds[PC_RULE_COUNT];
    waiter_t *waiters;
};

static const char *const rule_names[PC_RULE_COUNT] = {"cashier_rank", "risk", "route",
                                                      "refund_method"};
static const char *const outcome_names[OUTCOME_COUNT] = {"ok", "error", "timeout", "oom",
                                                         "malformed"};

const char *pc_rule_name(pc_rule_id_t id)
{
    return id < PC_RULE_COUNT ? rule_names[id] : "?";
}

int pc_rule_from_name(const char *name, pc_rule_id_t *out)
{
    for (int i = 0; i < PC_RULE_COUNT; i++) {
        if (strcmp(name, rule_names[i]) == 0) {
            *out = (pc_rule_id_t)i;
            return 0;
        }
    }
    return PC_ENOTFOUND;
}

const char *pc_rule_outcome_name(pc_rule_outcome_t outcome)
{
    return (unsigned)outcome < OUTCOME_COUNT ? outcome_names[outcome] : "?";
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

pc_rules_t *pc_rules_new(const char *dir, const pc_rules_opts_t *opts)
{
    pc_rules_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->dir = strdup(dir);
    if (!r->dir) {
        free(r);
        return NULL;
    }
    if (opts)
        r->opts = *opts;
    for (int i = 0; i < PC_RULE_COUNT; i++) {
        slot_t *s = &r->slots[i];
        s->status = "missing";
        for (int o = 0; o < OUTCOME_COUNT; o++)
            snprintf(s->call_labels[o], sizeof s->call_labels[o], "rule=\"%s\",outcome=\"%s\"",
                     rule_names[i], outcome_names[o]);
        snprintf(s->rule_label, sizeof s->rule_label, "rule=\"%s\"", rule_names[i]);
        snprintf(s->reload_ok, sizeof s->reload_ok, "rule=\"%s\",result=\"ok\"", rule_names[i]);
        snprintf(s->reload_refused, sizeof s->reload_refused, "rule=\"%s\",result=\"refused\"",
                 rule_names[i]);
    }
    pc_metrics_describe("pc_rules_calls_total", PC_METRIC_COUNTER,
                        "Rule calls by rule and outcome (ok, error, timeout, oom, malformed).");
    pc_metrics_describe("pc_rule_reloads_total", PC_METRIC_COUNTER,
                        "Rule reload attempts that changed something, by rule and result.");
    pc_metrics_describe("pc_rules_seconds", PC_METRIC_HISTOGRAM,
                        "Time spent in a rule call, conversion and validation included.");
    return r;
}

static void destroy(pc_rules_t *r)
{
    for (int i = 0; i < PC_RULE_COUNT; i++)
        pc__rule_free(r->slots[i].rule);
    free(r->dir);
    free(r);
}

static void notify_waiters(waiter_t *w, pc_rules_t *r, int status)
{
    while (w) {
        waiter_t *next = w->next;
        if (w->cb)
            w->cb(r, status, w->data);
        free(w);
        w = next;
    }
}

void pc_rules_free(pc_rules_t *rules)
{
    if (!rules)
        return;
    if (rules->job) {
        /* The worker still reads rules->dir; finish in the after-work callback. */
        rules->closing = true;
        return;
    }
    notify_waiters(rules->pending, rules, PC_ECLOSED);
    rules->pending = NULL;
    destroy(rules);
}

/* ---- applying a reload ------------------------------------------------------ */

static void log_refusal(const char *name, const pc__build_t *b)
{
    json_t *fields = json_pack("{s:s, s:s, s:i, s:s}", "rule", name, "file", b->error.file, "line",
                               b->error.line, "version", b->version);
    pc_log_fields(PC_LOG_ERROR, "rules.reload_refused", fields,
                  "rule %s refused, the previous version keeps serving: %s", name,
                  b->error.message);
}

/* Swaps in what a reload built, on the loop thread. Returns 0 when every rule
 * is current, PC_EINVAL when any was refused. */
static int apply_builds(pc_rules_t *r, pc__build_t *builds)
{
    int status = 0;
    for (int i = 0; i < PC_RULE_COUNT; i++) {
        slot_t *s = &r->slots[i];
        pc__build_t *b = &builds[i];
        if (b->unchanged) {
            s->status = "ok";
            s->has_error = false;
            s->refused_version[0] = s->refused_examples[0] = '\0';
            continue;
        }
        if (b->rule) {
            pc__rule_t *old = s->rule;
            s->rule = b->rule;
            b->rule = NULL;
            s->rule->sb->quiet = false;
            s->rule->loaded_at = time(NULL);
            /* Calls are synchronous on this thread, so nothing runs on the old
             * state any more: it can go now. */
            pc__rule_free(old);
            s->status = "ok";
            s->has_error = false;
            s->refused_version[0] = s->refused_examples[0] = '\0';
            pc_metrics_add("pc_rule_reloads_total", s->reload_ok, 1);
            pc_log_fields(PC_LOG_INFO, "rules.reload",
                          json_pack("{s:s, s:s, s:i}", "rule", rule_names[i], "version",
                                    s->rule->version, "examples", (int)s->rule->examples),
                          "rule %s loaded", rule_names[i]);
            continue;
        }
        status = PC_EINVAL;
        /* The same refused files with the same problem are reported once, not
         * at every reload that other files trigger. */
        bool repeat = s->has_error && strcmp(s->refused_version, b->version) == 0 &&
                      strcmp(s->refused_examples, b->examples_hash) == 0 &&
                      strcmp(s->last_error.message, b->error.message) == 0;
        s->status = (b->missing && !s->rule) ? "missing" : "refused";
        s->has_error = true;
        s->last_error = b->error;
        memcpy(s->refused_version, b->version, sizeof s->refused_version);
        memcpy(s->refused_examples, b->examples_hash, sizeof s->refused_examples);
        if (!repeat) {
            pc_metrics_add("pc_rule_reloads_total", s->reload_refused, 1);
            log_refusal(rule_names[i], b);
        }
    }
    return status;
}

int pc_rules_reload(pc_rules_t *rules)
{
    pc__build_t builds[PC_RULE_COUNT];
    for (int i = 0; i < PC_RULE_COUNT; i++) {
        const pc__rule_t *cur = rules->slots[i].rule;
        pc__rule_build(rules->dir, (pc_rule_id_t)i, &rules->opts, cur ? cur->version : NULL,
                       cur ? cur->examples_hash : NULL, false, &builds[i]);
    }
    int status = apply_builds(rules, builds);
    for (int i = 0; i < PC_RULE_COUNT; i++)
        pc__build_clear(&builds[i]);
    return status;
}

/* ---- async reload -------------------------------------------------------------- */

static void reload_work_cb(uv_work_t *req)
{
    job_t *job = req->data;
    pc_rules_t *r = job->rules;
    for (int i = 0; i < PC_RULE_COUNT; i++)
        pc__rule_build(r->dir, (pc_rule_id_t)i, &r->opts,
                       job->skip_version[i][0] ? job->skip_version[i] : NULL,
                       job->skip_examples[i][0] ? job->skip_examples[i] : NULL, false,
                       &job->builds[i]);
}

static int start_job(pc_rules_t *r, waiter_t *waiters);

static void reload_after_work_cb(uv_work_t *req, int status)
{
    job_t *job = req->data;
    pc_rules_t *r = job->rules;
    r->job = NULL;
    int result;
    if (r->closing || status == UV_ECANCELED) {
        result = PC_ECLOSED;
    } else {
        result = apply_builds(r, job->builds);
    }
    for (int i = 0; i < PC_RULE_COUNT; i++)
        pc__build_clear(&job->builds[i]);
    waiter_t *waiters = job->waiters;
    free(job);
    if (r->closing) {
        notify_waiters(waiters, r, PC_ECLOSED);
        notify_waiters(r->pending, r, PC_ECLOSED);
        r->pending = NULL;
        destroy(r);
        return;
    }
    notify_waiters(waiters, r, result);
    if (r->pending && !r->closing) {
        waiter_t *next = r->pending;
        r->pending = NULL;
        int rc = start_job(r, next);
        if (rc < 0)
            notify_waiters(next, r, rc);
    }
}

static int start_job(pc_rules_t *r, waiter_t *waiters)
{
    job_t *job = calloc(1, sizeof *job);
    if (!job)
        return PC_ENOMEM;
    job->rules = r;
    job->req.data = job;
    job->waiters = waiters;
    for (int i = 0; i < PC_RULE_COUNT; i++) {
        const pc__rule_t *cur = r->slots[i].rule;
        if (cur) {
            memcpy(job->skip_version[i], cur->version, 65);
            memcpy(job->skip_examples[i], cur->examples_hash, 65);
        }
    }
    int rc = uv_queue_work(r->loop, &job->req, reload_work_cb, reload_after_work_cb);
    if (rc < 0) {
        free(job);
        return PC_EIO;
    }
    r->job = job;
    return 0;
}

int pc_rules_reload_async(pc_rules_t *rules, struct uv_loop_s *loop, pc_rules_reload_cb cb,
                          void *data)
{
    if (!rules || !loop || rules->closing)
        return PC_EINVAL;
    waiter_t *w = calloc(1, sizeof *w);
    if (!w)
        return PC_ENOMEM;
    w->cb = cb;
    w->data = data;
    rules->loop = loop;
    if (rules->job) {
        /* The running job may have read the files before this change: queue a
         * second run rather than joining the first. */
        w->next = rules->pending;
        rules->pending = w;
        return 0;
    }
    int rc = start_job(rules, w);
    if (rc < 0)
        free(w);
    return rc;
}

/* ---- status ------------------------------------------------------------------------ */

static json_t *iso_time(time_t t)
{
    struct tm tm;
    char buf[32];
    gmtime_r(&t, &tm);
    strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return json_string(buf);
}

json_t *pc_rules_status(pc_rules_t *rules)
{
    json_t *arr = json_array();
    for (int i = 0; arr && i < PC_RULE_COUNT; i++) {
        const slot_t *s = &rules->slots[i];
        json_t *o = json_object();
        json_object_set_new(o, "name", json_string(rule_names[i]));
        json_object_set_new(o, "version", s->rule ? json_string(s->rule->version) : json_null());
        json_object_set_new(o, "loaded_at", s->rule ? iso_time(s->rule->loaded_at) : json_null());
        json_object_set_new(o, "status", json_string(s->status));
        json_object_set_new(o, "examples",
                            s->rule ? json_integer((json_int_t)s->rule->examples) : json_null());
        if (s->has_error) {
            json_object_set_new(o, "last_error",
                                json_pack("{s:o, s:i, s:o}", "file",
                                          pc_json_string_lossy(s->last_error.file), "line",
                                          s->last_error.line, "message",
                                          pc_json_string_lossy(s->last_error.message)));
            if (s->refused_version[0])
                json_object_set_new(o, "refused_version", json_string(s->refused_version));
        } else {
            json_object_set_new(o, "last_error", json_null());
        }
        json_array_append_new(arr, o);
    }
    return arr;
}

bool pc_rules_ready(const pc_rules_t *rules)
{
    for (int i = 0; i < PC_RULE_COUNT; i++)
        if (!rules->slots[i].rule)
            return false;
    return true;
}

const char *pc_rules_version(const pc_rules_t *rules, pc_rule_id_t id)
{
    if (id >= PC_RULE_COUNT || !rules->slots[id].rule)
        return "";
    return rules->slots[id].rule->version;
}

/* ---- calls --------------------------------------------------------------------------- */

static void log_failure(slot_t *s, const char *name, const pc_rule_result_t *res)
{
    uint64_t now = now_ns();
    if (s->last_log_ns && now - s->last_log_ns < LOG_INTERVAL_NS) {
        s->suppressed_logs++;
        return;
    }
    json_t *fields = json_pack("{s:s, s:s, s:s, s:i, s:s}", "rule", name, "outcome",
                               pc_rule_outcome_name(res->outcome), "file", res->error.file, "line",
                               res->error.line, "version", res->version);
    if (fields && s->suppressed_logs)
        json_object_set_new(fields, "suppressed", json_integer((json_int_t)s->suppressed_logs));
    pc_log_fields(PC_LOG_WARN, "rules.fallback", fields,
                  "rule %s fell back to its safe default: %s", name, res->error.message);
    s->last_log_ns = now;
    s->suppressed_logs = 0;
}

static int call_point(pc_rules_t *rules, pc_rule_id_t id, const json_t *ctx, const json_t *list,
                      const pc__typed_list_t *typed, pc_rule_result_t *out)
{
    memset(out, 0, sizeof *out);
    if (!rules || id >= PC_RULE_COUNT) {
        out->outcome = PC_RULE_ERROR;
        if (typed)
            pc__typed_default(typed);
        return PC_EINVAL;
    }
    slot_t *s = &rules->slots[id];
    const pc__point_t *pt = pc__point(id);
    uint64_t t0 = now_ns();
    int rc = 0;
    if (s->rule) {
        rc = pc__rule_invoke(s->rule, ctx, list, typed, out, NULL);
    } else {
        char msg[128];
        snprintf(msg, sizeof msg, "rule %s is not loaded", rule_names[id]);
        pc__rule_fallback(pt, ctx, list, typed, PC_RULE_ERROR, "", msg, out);
    }
    out->elapsed_ns = now_ns() - t0;

    pc_metrics_add("pc_rules_calls_total", s->call_labels[out->outcome], 1);
    pc_metrics_observe("pc_rules_seconds", s->rule_label, (double)out->elapsed_ns / 1e9);
    if (out->outcome != PC_RULE_OK)
        log_failure(s, rule_names[id], out);
    return rc;
}

int pc_rules_call(pc_rules_t *rules, pc_rule_id_t id, const json_t *ctx, const json_t *list,
                  pc_rule_result_t *out)
{
    return call_point(rules, id, ctx, list, NULL, out);
}

int pc_rules_cashier_rank(pc_rules_t *rules, const json_t *ctx, const json_t *methods,
                          pc_rule_result_t *out)
{
    return pc_rules_call(rules, PC_RULE_CASHIER_RANK, ctx, methods, out);
}

int pc_rules_cashier_rank_methods(pc_rules_t *rules, const json_t *ctx,
                                  const pc_rank_method_t *methods, size_t n, pc_rank_answer_t *ans,
                                  pc_rule_result_t *out)
{
    pc__typed_list_t typed = {methods, n, ans};
    return call_point(rules, PC_RULE_CASHIER_RANK, ctx, NULL, &typed, out);
}

int pc_rules_risk(pc_rules_t *rules, const json_t *ctx, pc_rule_result_t *out)
{
    return pc_rules_call(rules, PC_RULE_RISK, ctx, NULL, out);
}

int pc_rules_route(pc_rules_t *rules, const json_t *ctx, const json_t *candidates,
                   pc_rule_result_t *out)
{
    return pc_rules_call(rules, PC_RULE_ROUTE, ctx, candidates, out);
}

int pc_rules_refund_method(pc_rules_t *rules, const json_t *ctx, pc_rule_result_t *out)
{
    return pc_rules_call(rules, PC_RULE_REFUND_METHOD, ctx, NULL, out);
}

void pc_rule_result_clear(pc_rule_result_t *result)
{
    if (!result)
        return;
    json_decref(result->answer);
    result->answer = NULL;
}

uint64_t pc_rules_example_limit(int64_t configured_us)
{
    return configured_us > 0 ? (uint64_t)configured_us : UINT64_MAX;
}

/* ---- payctl ------------------------------------------------------------------------------ */

json_t *pc_rules_test_dir(const char *dir, const pc_rules_opts_t *opts)
{
    json_t *rules = json_array();
    bool all_ok = true;
    for (int i = 0; i < PC_RULE_COUNT; i++) {
        pc__build_t b;
        pc__rule_build(dir, (pc_rule_id_t)i, opts, NULL, NULL, true, &b);
        bool ok = b.rule != NULL;
        all_ok = all_ok && ok;
        char file[4200];
        snprintf(file, sizeof file, "%s/%s.lua", dir, rule_names[i]);
        json_t *o =
            json_pack("{s:s, s:s, s:s, s:b, s:O}", "name", rule_names[i], "file", file, "version",
                      b.version, "ok", ok, "examples", b.report ? b.report : json_array());
        if (o && !ok)
            json_object_set_new(o, "error",
                                json_pack("{s:s, s:i, s:s}", "file", b.error.file, "line",
                                          b.error.line, "message", b.error.message));
        else if (o)
            json_object_set_new(o, "error", json_null());
        json_array_append_new(rules, o);
        pc__build_clear(&b);
    }
    return json_pack("{s:b, s:o}", "ok", all_ok, "rules", rules);
}
