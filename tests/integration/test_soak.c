/* Convergence under channel faults (issue 9): payments and refunds through a
 * channel that times out, loses and duplicates callbacks and succeeds after
 * timeouts. After the repair jobs run, every payment and refund is final, the
 * platform agrees with the channel's own records one for one, nothing is
 * charged twice, the ledger check holds and the day's reconciliation has no
 * open difference. PC_SOAK_PAYMENTS / PC_SOAK_REFUNDS scale it (defaults
 * 240 / 40; the long form is 2000 / 300). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "harness.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define THREADS 4

static pc_stack_t g_stack;
static pc_t_merchant_t g_m;
static char g_dir[512];
static int g_payments = 240, g_refunds = 40;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int setup(void **state)
{
    (void)state;
    if (getenv("PC_SOAK_PAYMENTS"))
        g_payments = atoi(getenv("PC_SOAK_PAYMENTS"));
    if (getenv("PC_SOAK_REFUNDS"))
        g_refunds = atoi(getenv("PC_SOAK_REFUNDS"));
    snprintf(g_dir, sizeof g_dir, "%s/test-soak-%d", pc_t_binary_dir(), (int)getpid());
    pc_t_sh("rm -rf %s && mkdir -p %s && cp -r %s/channels %s/rules %s/", g_dir, g_dir,
            pc_t_source_dir(), pc_t_source_dir(), g_dir);
    /* One card channel with short timeouts, so faults cost seconds. */
    pc_t_sh("sed -i 's/\"request_ms\": *[0-9]*/\"request_ms\": 1000/' %s/channels/sim_card.json "
            "&& sed -i 's/\"enabled\": *true/\"enabled\": false/' %s/channels/sim_card2.json",
            g_dir, g_dir);
    /* Risk is not under test: accept everything (many payments by one buyer). */
    pc_t_sh("printf 'return function(ctx) return {decision = \"ACCEPT\", score = 0, reasons = {}} "
            "end\\n' > %s/rules/risk.lua",
            g_dir);
    pc_t_sh("printf '{\"examples\":[{\"name\":\"accept all\",\"ctx\":{\"amount\":1,\"currency\":"
            "\"CNY\"},\"expect\":{\"decision\":\"ACCEPT\"}}]}\\n' > %s/rules/tests/risk.json",
            g_dir);
    pc_stack_init(&g_stack, "soak");
    char p[700];
    snprintf(p, sizeof p, "%s/channels", g_dir);
    pc_stack_env(&g_stack, "PAYCORE_CHANNELS_DIR", p);
    snprintf(p, sizeof p, "%s/rules", g_dir);
    pc_stack_env(&g_stack, "PAYCORE_RULES_DIR", p);
    pc_stack_env(&g_stack, "PAYCORE_REPAIR_FIRST_QUERY_MS", "500");
    pc_stack_env(&g_stack, "PAYCORE_REPAIR_SCHEDULE_MS", "500,500,1000,1000,2000,2000,4000");
    pc_stack_env(&g_stack, "PAYCORE_REPAIR_POLL_MS", "100");
    pc_stack_env(&g_stack, "PAYCORE_REPAIR_NOT_FOUND_AFTER_S", "3");
    pc_stack_env(&g_stack, "PAYCORE_REFUND_POLL_MS", "100");
    pc_stack_env(&g_stack, "PAYCORE_REFUND_QUERY_SCHEDULE_MS", "500,500,1000,1000,2000,2000");
    pc_stack_env(&g_stack, "PAYCORE_LIMIT_BUYER_DAILY", "1000000000");
    pc_stack_env(&g_stack, "PAYCORE_LIMIT_CARD_DAILY", "1000000000");
    pc_stack_env(&g_stack, "PAYCORE_LIMIT_BUYER_MONTHLY", "1000000000");
    pc_stack_start_paysim(&g_stack);
    pc_stack_start_node(&g_stack, 0);
    pc_stack_start_node(&g_stack, 1);
    g_m = pc_t_create_merchant(&g_stack, NULL);
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", "/admin/buyers", "{\"buyer_id\":\"soak\"}");
    pc_t_resp_free(&r);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    pc_stack_stop(&g_stack);
    pc_t_sh("rm -rf %s", g_dir);
    return 0;
}

static const char *str(json_t *j, const char *k)
{
    const char *s = json_string_value(json_object_get(j, k));
    return s ? s : "";
}

typedef struct {
    int from, to;
} span_t;

static void *payer(void *arg)
{
    span_t *s = arg;
    for (int i = s->from; i < s->to; i++) {
        char body[512], key[64], tn[64], pan[32];
        snprintf(body, sizeof body,
                 "{\"out_trade_no\":\"S%d\",\"product\":\"INSTANT\",\"amount\":%d,\"currency\":"
                 "\"CNY\",\"subject\":\"soak\",\"buyer_id\":\"soak\"}",
                 i, 1000 + i);
        snprintf(key, sizeof key, "st-%d", i);
        pc_t_resp_t r = pc_t_call(&g_stack, &g_m, "POST", "/v1/trades", body, key);
        json_t *j = pc_t_json(&r);
        snprintf(tn, sizeof tn, "%s", str(j, "trade_no"));
        json_decref(j);
        pc_t_resp_free(&r);
        /* A distinct Luhn-valid card each time (paysim approves them). */
        pc_t_card_number(pan, "411113", i * 7 + 1);
        snprintf(body, sizeof body,
                 "{\"trade_no\":\"%s\",\"buyer_id\":\"soak\",\"method_id\":\"CARD\",\"card\":"
                 "{\"pan\":\"%s\",\"exp_month\":12,\"exp_year\":2030,\"cvv\":\"123\"}}",
                 tn, pan);
        snprintf(key, sizeof key, "sp-%d", i);
        r = pc_t_call(&g_stack, &g_m, "POST", "/v1/cashier/pay", body, key);
        pc_t_resp_free(&r);
    }
    return NULL;
}

static long long count(const char *sql)
{
    return pc_t_sql_int(&g_stack, "%s", sql);
}

static void test_faulty_channel_converges_to_the_truth(void **state)
{
    (void)state;
    pc_t_resp_t f = pc_t_sim(&g_stack, "POST", "/sim/faults",
                             "{\"channel_id\":\"sim_card\",\"timeout_rate\":0.10,"
                             "\"lost_callback_rate\":0.05,\"success_after_timeout_rate\":0.02,"
                             "\"duplicate_callback_rate\":0.01,\"hang_ms\":1500,\"seed\":5}");
    assert_int_equal(f.status, 200);
    pc_t_resp_free(&f);
    double t0 = now_s();
    pthread_t th[THREADS];
    span_t spans[THREADS];
    for (int k = 0; k < THREADS; k++) {
        spans[k].from = g_payments * k / THREADS;
        spans[k].to = g_payments * (k + 1) / THREADS;
        pthread_create(&th[k], NULL, payer, &spans[k]);
    }
    for (int k = 0; k < THREADS; k++)
        pthread_join(th[k], NULL);
    printf("%d payments sent in %.1f s\n", g_payments, now_s() - t0);

    /* Payments converge: nothing left in flight. */
    t0 = now_s();
    while (now_s() - t0 < 90 &&
           count("SELECT count(*) FROM payments WHERE status IN ('PROCESSING', 'UNKNOWN')") > 0)
        usleep(500000);
    assert_int_equal(
        count("SELECT count(*) FROM payments WHERE status IN ('PROCESSING', 'UNKNOWN')"), 0);
    long long ok = count("SELECT count(*) FROM payments WHERE status = 'SUCCESS'");
    printf("payments: %lld succeeded, %lld failed, converged in %.1f s\n", ok,
           count("SELECT count(*) FROM payments WHERE status = 'FAILED'"), now_s() - t0);
    assert_true(ok > 0);

    /* Refunds of some paid trades, through the same faulty channel. */
    char *list = pc_t_sql(&g_stack,
                          "SELECT string_agg(trade_no || ':' || amount, ',') FROM (SELECT "
                          "trade_no, amount FROM trades WHERE status = 'TRADE_SUCCESS' ORDER BY "
                          "trade_no LIMIT %d) x",
                          g_refunds);
    int refunds = 0;
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(tok, ':');
        *colon = 0;
        long amount = atol(colon + 1);
        char body[256], key[64];
        snprintf(body, sizeof body,
                 "{\"trade_no\":\"%s\",\"out_refund_no\":\"RF%d\",\"amount\":%ld,\"reason\":"
                 "\"soak\"}",
                 tok, refunds, refunds % 2 ? amount : amount / 2);
        snprintf(key, sizeof key, "sr-%d", refunds);
        pc_t_resp_t r = pc_t_call(&g_stack, &g_m, "POST", "/v1/refunds", body, key);
        assert_int_equal(r.status, 200);
        pc_t_resp_free(&r);
        refunds++;
    }
    free(list);
    t0 = now_s();
    while (now_s() - t0 < 90 &&
           count("SELECT count(*) FROM refunds WHERE status NOT IN ('SUCCESS', 'FAILED')") > 0)
        usleep(500000);
    assert_int_equal(
        count("SELECT count(*) FROM refunds WHERE status NOT IN ('SUCCESS', 'FAILED')"), 0);
    printf("refunds: %d sent, %lld succeeded, converged in %.1f s\n", refunds,
           count("SELECT count(*) FROM refunds WHERE status = 'SUCCESS'"), now_s() - t0);

    /* One for one with the channel's own records. */
    pc_t_resp_t t =
        pc_t_sim(&g_stack, "GET", "/sim/txns?channel_id=sim_card&type=PAY&status=SUCCESS", NULL);
    json_t *j = pc_t_json(&t);
    pc_t_resp_free(&t);
    json_t *txns = json_object_get(j, "txns");
    size_t n = json_array_size(txns);
    printf("channel charges: %zu, platform successes: %lld\n", n, ok);
    assert_int_equal((long long)n, ok);
    size_t i;
    json_t *x;
    json_array_foreach(txns, i, x)
    {
        long long here = pc_t_sql_int(&g_stack,
                                      "SELECT count(*) FROM payments WHERE payment_no = '%s' AND "
                                      "status = 'SUCCESS'",
                                      str(x, "paycore_ref"));
        if (here != 1)
            fail_msg("channel charged %s, platform has %lld successes for it",
                     str(x, "paycore_ref"), here);
    }
    json_decref(j);
    /* Nothing charged twice, books balanced. */
    assert_int_equal(count("SELECT count(*) FROM (SELECT trade_no FROM payments WHERE status = "
                           "'SUCCESS' GROUP BY trade_no HAVING count(*) > 1) d"),
                     0);
    assert_true(pc_t_ledger_ok(&g_stack));

    /* The day's reconciliation: no open difference (nothing faked in the statement). */
    char body[128], today[16];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(today, sizeof today, "%Y-%m-%d", &tm);
    snprintf(body, sizeof body, "{\"channel_id\":\"sim_card\",\"date\":\"%s\"}", today);
    pc_t_resp_t rr = pc_t_admin(&g_stack, "POST", "/admin/recon/runs", body);
    assert_int_equal(rr.status / 100, 2);
    pc_t_resp_free(&rr);
    long long open = count("SELECT count(*) FROM recon_diffs WHERE status = 'OPEN'");
    if (open)
        pc_t_sh("psql '%s' -c \"SELECT kind, local_ref, status FROM recon_diffs WHERE status = "
                "'OPEN' LIMIT 10\" >&2",
                g_stack.db_url);
    assert_int_equal(open, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_faulty_channel_converges_to_the_truth),
    };
    return cmocka_run_group_tests_name("soak", tests, setup, teardown);
}
