/* Microbenchmark for the rules engine with the shipped rules:
 *   - ns per cashier_rank call over 12 methods (conversion, rule, validation,
 *     metrics included: what a request pays);
 *   - ns per risk call, and per call of a trivial rule (the fixed overhead);
 *   - reload-to-active: from a rule file write to the new version serving,
 *     through the file watcher (50 ms debounce), the worker-thread build with
 *     examples, and the swap on the loop thread.
 *
 * Usage: bench_rules [repo-dir]   (default: found from this file's path)
 * PC_BENCH_ONLY=cashier_rank runs that call alone, ten times over: long
 * enough to profile, and ten medians to compare on a noisy machine. */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "core/log.h"
#include "rules/rules.h"
#include "rules/watch.h"

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Thread CPU time: on a shared machine wall time mostly measures the
 * neighbours; the reload benchmark below uses wall time on purpose. */
static uint64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static json_t *example(const char *rules_dir, const char *rule, size_t index, const char *list_key,
                       json_t **list)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/%s.json", rules_dir, rule);
    json_error_t err;
    json_t *doc = json_load_file(path, 0, &err);
    if (!doc) {
        fprintf(stderr, "cannot read %s: %s\n", path, err.text);
        exit(1);
    }
    json_t *ex = json_array_get(json_object_get(doc, "examples"), index);
    json_t *ctx = json_deep_copy(json_object_get(doc, "base_ctx"));
    json_object_update_recursive(ctx, json_object_get(ex, "ctx"));
    if (list)
        *list = json_deep_copy(json_object_get(ex, list_key));
    json_decref(doc);
    return ctx;
}

/* Runs fn n times in batches and reports the median batch's ns per call. */
typedef int (*call_fn)(pc_rules_t *r, json_t *ctx, json_t *list);

static int call_cashier(pc_rules_t *r, json_t *ctx, json_t *list)
{
    pc_rule_result_t res;
    pc_rules_cashier_rank(r, ctx, list, &res);
    int ok = res.outcome == PC_RULE_OK;
    pc_rule_result_clear(&res);
    return ok;
}

/* The methods as C values, as cashier/consult.c passes them. */
static pc_rank_method_t typed[16];
static size_t ntyped;

static const char *str_field(const json_t *m, const char *key)
{
    return json_string_value(json_object_get(m, key));
}

static signed char bool_field(const json_t *m, const char *key)
{
    const json_t *b = json_object_get(m, key);
    return json_is_boolean(b) ? json_is_true(b) : -1;
}

static void type_methods(const json_t *methods)
{
    size_t i;
    const json_t *m;
    json_array_foreach(methods, i, m)
    {
        if (i == sizeof typed / sizeof typed[0])
            break;
        const json_t *amount = json_object_get(m, "max_amount");
        typed[i] = (pc_rank_method_t){
            .method_id = str_field(m, "method_id"),
            .type = str_field(m, "type"),
            .label = str_field(m, "label"),
            .reason = str_field(m, "reason"),
            .channel_id = str_field(m, "channel_id"),
            .max_amount = json_is_integer(amount) ? json_integer_value(amount) : PC_RANK_NO_AMOUNT,
            .available = bool_field(m, "available"),
            .recommended = bool_field(m, "recommended"),
        };
        /* A bound card or a coupon: the whole object. */
        if (json_is_object(json_object_get(m, "card")) ||
            json_is_object(json_object_get(m, "coupon")))
            typed[i].object = m;
        ntyped = i + 1;
    }
}

static int call_cashier_typed(pc_rules_t *r, json_t *ctx, json_t *list)
{
    (void)list;
    size_t order[16];
    unsigned char rec[16];
    pc_rank_answer_t ans = {order, rec, 0};
    pc_rule_result_t res;
    pc_rules_cashier_rank_methods(r, ctx, typed, ntyped, &ans, &res);
    int ok = res.outcome == PC_RULE_OK && ans.count > 0;
    pc_rule_result_clear(&res);
    return ok;
}

static int call_risk(pc_rules_t *r, json_t *ctx, json_t *list)
{
    (void)list;
    pc_rule_result_t res;
    pc_rules_risk(r, ctx, &res);
    int ok = res.outcome == PC_RULE_OK;
    pc_rule_result_clear(&res);
    return ok;
}

static int call_route(pc_rules_t *r, json_t *ctx, json_t *list)
{
    pc_rule_result_t res;
    pc_rules_route(r, ctx, list, &res);
    int ok = res.outcome == PC_RULE_OK;
    pc_rule_result_clear(&res);
    return ok;
}

static void measure(const char *what, pc_rules_t *r, call_fn fn, json_t *ctx, json_t *list)
{
    enum { BATCHES = 21, PER_BATCH = 2000 };
    uint64_t per_call[BATCHES];
    for (int i = 0; i < 2000; i++) /* warm up caches and the allocator */
        if (!fn(r, ctx, list)) {
            fprintf(stderr, "%s: the rule did not answer OK\n", what);
            exit(1);
        }
    for (int b = 0; b < BATCHES; b++) {
        uint64_t t0 = cpu_ns();
        for (int i = 0; i < PER_BATCH; i++)
            fn(r, ctx, list);
        per_call[b] = (cpu_ns() - t0) / PER_BATCH;
    }
    qsort(per_call, BATCHES, sizeof per_call[0], cmp_u64);
    printf("%-44s median %6llu ns/call  (best batch %llu, worst %llu)\n", what,
           (unsigned long long)per_call[BATCHES / 2], (unsigned long long)per_call[0],
           (unsigned long long)per_call[BATCHES - 1]);
}

/* ---- reload-to-active through the watcher -------------------------------------------- */

enum { ROUNDS = 20 };

typedef struct {
    uv_loop_t *loop;
    pc_rules_t *rules;
    pc_watch_t *watch;
    uv_timer_t timer;
    char dir[64];
    char risk_source[16384];
    int round;
    uint64_t wrote_ns;
    char old_version[65];
    uint64_t took[ROUNDS];
    int refused;
} reload_bench_t;

static void write_next_version(uv_timer_t *t);

static void on_reloaded(pc_rules_t *rules, int status, void *data)
{
    reload_bench_t *b = data;
    if (strcmp(pc_rules_version(rules, PC_RULE_RISK), b->old_version) == 0)
        return; /* an event from an earlier write; the new version is not in yet */
    if (status != 0)
        b->refused++;
    b->took[b->round] = now_ns() - b->wrote_ns;
    b->round++;
    if (b->round == ROUNDS) {
        pc_watch_close(b->watch);
        uv_close((uv_handle_t *)&b->timer, NULL);
        return;
    }
    /* Let the file system settle before the next write. */
    uv_timer_start(&b->timer, write_next_version, 100, 0);
}

static void on_change(pc_watch_t *w, unsigned changed, void *data)
{
    (void)w;
    (void)changed;
    reload_bench_t *b = data;
    pc_rules_reload_async(b->rules, b->loop, on_reloaded, b);
}

static void write_next_version(uv_timer_t *t)
{
    reload_bench_t *b = t->data;
    char path[128];
    snprintf(path, sizeof path, "%s/risk.lua", b->dir);
    snprintf(b->old_version, sizeof b->old_version, "%s", pc_rules_version(b->rules, PC_RULE_RISK));
    b->wrote_ns = now_ns();
    FILE *f = fopen(path, "w");
    fprintf(f, "%s-- bench revision %d\n", b->risk_source, b->round);
    fclose(f);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    if (!in || !out) {
        fprintf(stderr, "cannot copy %s\n", from);
        exit(1);
    }
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        fwrite(buf, 1, n, out);
    fclose(in);
    fclose(out);
}

static void bench_reload(const char *rules_dir)
{
    reload_bench_t b = {0};
    snprintf(b.dir, sizeof b.dir, "/tmp/pc_bench_rules_XXXXXX");
    if (!mkdtemp(b.dir))
        exit(1);
    char sub[128], from[1200], to[256];
    snprintf(sub, sizeof sub, "%s/tests", b.dir);
    mkdir(sub, 0755);
    const char *names[] = {"cashier_rank", "risk", "route", "refund_method"};
    for (int i = 0; i < 4; i++) {
        snprintf(from, sizeof from, "%s/%s.lua", rules_dir, names[i]);
        snprintf(to, sizeof to, "%s/%s.lua", b.dir, names[i]);
        copy_file(from, to);
        snprintf(from, sizeof from, "%s/tests/%s.json", rules_dir, names[i]);
        snprintf(to, sizeof to, "%s/tests/%s.json", b.dir, names[i]);
        copy_file(from, to);
    }
    snprintf(from, sizeof from, "%s/risk.lua", rules_dir);
    FILE *f = fopen(from, "rb");
    size_t n = fread(b.risk_source, 1, sizeof b.risk_source - 1, f);
    b.risk_source[n] = '\0';
    fclose(f);

    uv_loop_t loop;
    uv_loop_init(&loop);
    b.loop = &loop;
    b.rules = pc_rules_new(b.dir, NULL);
    if (pc_rules_reload(b.rules) != 0) {
        fprintf(stderr, "the shipped rules do not load\n");
        exit(1);
    }
    char tests_dir[128];
    snprintf(tests_dir, sizeof tests_dir, "%s/tests", b.dir);
    const char *dirs[] = {b.dir, tests_dir};
    if (pc_watch_start(&loop, dirs, 2, 50, on_change, &b, &b.watch) != 0)
        exit(1);
    uv_timer_init(&loop, &b.timer);
    b.timer.data = &b;
    uv_timer_start(&b.timer, write_next_version, 50, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    pc_rules_free(b.rules);
    if (uv_loop_close(&loop) != 0)
        fprintf(stderr, "loop did not close cleanly\n");
    nftw(b.dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);

    qsort(b.took, ROUNDS, sizeof b.took[0], cmp_u64);
    printf("%-44s median %6.1f ms  (min %.1f, max %.1f; %d rounds, debounce 50 ms%s)\n",
           "reload-to-active after a write (watcher)", (double)b.took[ROUNDS / 2] / 1e6,
           (double)b.took[0] / 1e6, (double)b.took[ROUNDS - 1] / 1e6, ROUNDS,
           b.refused ? ", SOME REFUSED" : "");

    /* The part that is not the debounce: build with examples and swap. */
    pc_rules_t *r = pc_rules_new(rules_dir, NULL);
    uint64_t t0 = now_ns();
    pc_rules_reload(r);
    printf("%-44s %6.2f ms\n", "full synchronous build of all four rules",
           (double)(now_ns() - t0) / 1e6);
    pc_rules_free(r);
}

int main(int argc, char **argv)
{
    char repo[1024];
    if (argc > 1) {
        snprintf(repo, sizeof repo, "%s", argv[1]);
    } else {
        snprintf(repo, sizeof repo, "%s", __FILE__);
        char *p = strstr(repo, "/tests/bench/");
        if (p)
            *p = '\0';
    }
    char rules_dir[1100];
    snprintf(rules_dir, sizeof rules_dir, "%s/rules", repo);
    pc_log_set_level(PC_LOG_WARN);

    pc_rules_t *rules = pc_rules_new(rules_dir, NULL);
    if (pc_rules_reload(rules) != 0) {
        fprintf(stderr, "cannot load the rules in %s\n", rules_dir);
        return 1;
    }
    json_t *methods, *candidates;
    /* Example 12 of cashier_rank.json is the full cashier of twelve methods. */
    json_t *cctx = example(rules_dir, "cashier_rank", 11, "methods", &methods);
    if (json_array_size(methods) != 12) {
        fprintf(stderr, "expected 12 methods in the benchmark example\n");
        return 1;
    }
    /* As the cashier passes them: every method starts not recommended. */
    size_t i;
    json_t *m;
    json_array_foreach(methods, i, m)
    {
        json_object_set_new(m, "recommended", json_false());
    }
    json_t *rctx = example(rules_dir, "risk", 12, NULL, NULL);
    json_t *octx = example(rules_dir, "route", 2, "candidates", &candidates);

    printf("rules engine, shipped rules, one thread, rule code in the interpreter\n");
    const char *only = getenv("PC_BENCH_ONLY");
    int cashier_only = only && strcmp(only, "cashier_rank") == 0;
    type_methods(methods);
    for (int k = 0; k < (cashier_only ? 10 : 1); k++)
        measure("cashier_rank, 12 methods", rules, call_cashier_typed, cctx, methods);
    if (!cashier_only) {
        measure("cashier_rank, 12 methods as JSON", rules, call_cashier, cctx, methods);
        measure("risk (velocity, lists, history)", rules, call_risk, rctx, NULL);
        measure("route, 2 candidates", rules, call_route, octx, candidates);
    }

    /* The fixed cost of a call: a rule that does nothing. */
    char tdir[] = "/tmp/pc_bench_trivial_XXXXXX";
    if (!cashier_only && mkdtemp(tdir)) {
        char p[128];
        snprintf(p, sizeof p, "%s/tests", tdir);
        mkdir(p, 0755);
        snprintf(p, sizeof p, "%s/risk.lua", tdir);
        FILE *f = fopen(p, "w");
        fputs("return function(ctx) return {decision = 'ACCEPT', score = 0} end\n", f);
        fclose(f);
        snprintf(p, sizeof p, "%s/tests/risk.json", tdir);
        f = fopen(p, "w");
        fputs("{\"examples\": [{\"name\": \"x\", \"ctx\": {}, \"expect\": {\"decision\": "
              "\"ACCEPT\"}}]}",
              f);
        fclose(f);
        /* The other rules as shipped, so that the reload has nothing to report. */
        const char *others[] = {"cashier_rank", "route", "refund_method"};
        for (int k = 0; k < 3; k++) {
            char from[1200], to[128];
            snprintf(from, sizeof from, "%s/%s.lua", rules_dir, others[k]);
            snprintf(to, sizeof to, "%s/%s.lua", tdir, others[k]);
            copy_file(from, to);
            snprintf(from, sizeof from, "%s/tests/%s.json", rules_dir, others[k]);
            snprintf(to, sizeof to, "%s/tests/%s.json", tdir, others[k]);
            copy_file(from, to);
        }
        pc_rules_t *trivial = pc_rules_new(tdir, NULL);
        pc_rules_reload(trivial);
        json_t *empty = json_object();
        measure("risk, trivial rule, empty ctx (overhead)", trivial, call_risk, empty, NULL);
        measure("risk, trivial rule, full risk ctx", trivial, call_risk, rctx, NULL);
        json_decref(empty);
        pc_rules_free(trivial);
        nftw(tdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    }

    json_decref(cctx);
    json_decref(methods);
    json_decref(rctx);
    json_decref(octx);
    json_decref(candidates);
    pc_rules_free(rules);

    if (!cashier_only)
        bench_reload(rules_dir);
    return 0;
}
