/* Production settings (PAYCORE_DEMO unset): paycore refuses to start with a
 * public demo secret, and with its own secrets it serves and refuses what is
 * signed with the public ones. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

static pc_stack_t g_stack;

static const char *const g_channels[] = {"SIM_CARD", "SIM_CARD2", "SIM_NETBANK",
                                         "SIM_OTC",  "SIM_VA",    "SIM_WALLET"};

/* Runs paycore with only the given environment (plus PATH); returns its exit
 * status and leaves what it printed in out. */
static int run_alone(const char *env, char *out, size_t outlen)
{
    char log[600];
    snprintf(log, sizeof log, "%s/%s-alone.log", g_stack.log_dir, g_stack.name);
    int rc = pc_t_sh("env -i PATH=\"$PATH\" PAYCORE_RULES_DIR=%s/rules "
                     "PAYCORE_CHANNELS_DIR=%s/channels PAYCORE_HTTP_PORT=%d PAYCORE_ADMIN_PORT=%d "
                     "%s timeout 60 %s/paycore >%s 2>&1",
                     pc_t_source_dir(), pc_t_source_dir(), pc_t_free_port(), pc_t_free_port(), env,
                     pc_t_binary_dir(), log);
    FILE *f = fopen(log, "r");
    size_t n = f ? fread(out, 1, outlen - 1, f) : 0;
    out[n] = '\0';
    if (f)
        fclose(f);
    return rc;
}

static void test_public_demo_secrets_stop_the_start(void **state)
{
    (void)state;
    /* The whole start log: every migration applied is a line of it. */
    static char out[1 << 17];
    char env[2048];
    /* A list of hosts with a name in it: libpq would look the name up on
     * the event loop at every connect (README "The database"). */
    assert_int_equal(run_alone("PAYCORE_DEMO=true PAYCORE_DATABASE_URL='postgresql://"
                               "paycore@127.0.0.1,db.invalid:5432/postgres'",
                               out, sizeof out),
                     2);
    assert_non_null(strstr(out, "db.url lists several hosts, db.invalid among them by name"));

    /* Nothing set: the admin token is the public one. */
    assert_int_equal(run_alone("", out, sizeof out), 2);
    assert_non_null(strstr(out, "admin.token is the public demo value"));

    /* A token anyone could guess. */
    assert_int_equal(run_alone("PAYCORE_ADMIN_TOKEN=admin", out, sizeof out), 2);
    assert_non_null(strstr(out, "admin.token is 5 characters"));

    assert_int_equal(run_alone("PAYCORE_ADMIN_TOKEN=prod-admin-token-0123456789", out, sizeof out),
                     2);
    assert_non_null(strstr(out, "cashier.token_key is the public demo value"));

    assert_int_equal(run_alone("PAYCORE_ADMIN_TOKEN=prod-admin-token-0123456789 "
                               "PAYCORE_CASHIER_TOKEN_KEY=prod-link-key-0123456789",
                               out, sizeof out),
                     2);
    assert_non_null(strstr(out, "cashier.card_key is the public demo value"));

    /* Own admin token and keys, but a channel whose secret is missing:
     * refused once the files are read, naming the file and the variable. */
    snprintf(env, sizeof env,
             "PAYCORE_ADMIN_TOKEN=prod-admin-token-0123456789 "
             "PAYCORE_CASHIER_TOKEN_KEY=prod-link-key-0123456789 "
             "PAYCORE_CARD_KEY=prod-card-key-0123456789 PAYCORE_DATABASE_URL='%s' "
             "PAYCORE_REDIS_URL='%s' PAYCORE_CHANNEL_SECRET_SIM_CARD2=x "
             "PAYCORE_CHANNEL_SECRET_SIM_NETBANK=x PAYCORE_CHANNEL_SECRET_SIM_OTC=x "
             "PAYCORE_CHANNEL_SECRET_SIM_VA=x PAYCORE_CHANNEL_SECRET_SIM_WALLET=x",
             g_stack.db_url, g_stack.redis_url);
    assert_int_equal(run_alone(env, out, sizeof out), 1);
    assert_non_null(strstr(out, "channels/sim_card.json"));
    assert_non_null(strstr(out, "secret_ref PAYCORE_CHANNEL_SECRET_SIM_CARD is not set"));
}

typedef struct {
    char trade_no[64], payment_no[64], va[64];
} va_payment_t;

/* A trade of 15.00 for u_prod, paid by bank transfer: waits for the buyer. */
static va_payment_t start_va_payment(const pc_t_merchant_t *m, const char *otn)
{
    va_payment_t p;
    char body[256], key[32];
    snprintf(body, sizeof body,
             "{\"out_trade_no\":\"%s\",\"product\":\"INSTANT\",\"amount\":1500,"
             "\"currency\":\"CNY\",\"subject\":\"Goods\",\"buyer_id\":\"u_prod\"}",
             otn);
    snprintf(key, sizeof key, "trade-%s", otn);
    pc_t_resp_t r = pc_t_call(&g_stack, m, "POST", "/v1/trades", body, key);
    assert_int_equal(r.status, 201);
    snprintf(p.trade_no, sizeof p.trade_no, "%s", pc_t_jstr(&r, "trade_no"));
    pc_t_resp_free(&r);
    snprintf(body, sizeof body,
             "{\"trade_no\":\"%s\",\"buyer_id\":\"u_prod\",\"method_id\":\"VA\",\"client\":"
             "{\"ip\":\"203.0.113.7\",\"platform\":\"WEB\"}}",
             p.trade_no);
    snprintf(key, sizeof key, "pay-%s", otn);
    r = pc_t_call(&g_stack, m, "POST", "/v1/cashier/pay", body, key);
    assert_int_equal(r.status, 200);
    assert_string_equal(pc_t_jstr(&r, "status"), "PROCESSING");
    snprintf(p.payment_no, sizeof p.payment_no, "%s", pc_t_jstr(&r, "payment_no"));
    json_t *j = pc_t_json(&r);
    const char *va = json_string_value(json_object_get(json_object_get(j, "action"), "va_number"));
    assert_non_null(va);
    snprintf(p.va, sizeof p.va, "%s", va);
    json_decref(j);
    pc_t_resp_free(&r);
    return p;
}

static void test_own_secrets_serve_and_public_ones_are_refused(void **state)
{
    (void)state;
    char name[96], value[96];
    pc_stack_env(&g_stack, "PAYCORE_DEMO", "false");
    pc_stack_env(&g_stack, "PAYCORE_CASHIER_TOKEN_KEY", "prod-link-key-0123456789");
    pc_stack_env(&g_stack, "PAYCORE_CARD_KEY", "prod-card-key-0123456789");
    for (size_t i = 0; i < sizeof g_channels / sizeof *g_channels; i++) {
        snprintf(value, sizeof value, "own-secret-%s-%d", g_channels[i], (int)getpid());
        snprintf(name, sizeof name, "PAYCORE_CHANNEL_SECRET_%s", g_channels[i]);
        pc_stack_env(&g_stack, name, value);
        /* paysim inherits the test's environment. */
        snprintf(name, sizeof name, "PAYSIM_SECRET_%s", g_channels[i]);
        setenv(name, value, 1);
    }
    pc_stack_start_paysim(&g_stack);
    pc_stack_start_node(&g_stack, 0);
    pc_t_merchant_t m = pc_t_create_merchant(&g_stack, NULL);
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", "/admin/buyers", "{\"buyer_id\":\"u_prod\"}");
    assert_int_equal(r.status, 201);
    pc_t_resp_free(&r);

    /* A bank transfer: paysim's callback, signed with the channel's own
     * secret, pays the trade. */
    va_payment_t p1 = start_va_payment(&m, "P1");
    char body[128];
    snprintf(body, sizeof body, "{\"reference\":\"%s\"}", p1.va);
    r = pc_t_sim(&g_stack, "POST", "/sim/complete", body);
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    assert_int_equal(pc_t_sql_wait(&g_stack, "TRADE_SUCCESS", 10,
                                   "SELECT status FROM trades WHERE trade_no = '%s'", p1.trade_no),
                     1);

    /* A callback signed with the public demo secret is not believed. */
    va_payment_t p2 = start_va_payment(&m, "P2");
    assert_int_equal(
        pc_t_channel_callback(&g_stack, "sim_va", "payment", p2.payment_no, "SUCCESS", 1500), 401);
    const char *tn = p2.trade_no;
    char *st = pc_t_sql(&g_stack, "SELECT status FROM trades WHERE trade_no = '%s'", tn);
    assert_string_equal(st, "WAIT_BUYER_PAY");
    free(st);
    assert_true(pc_t_ledger_ok(&g_stack));
}

static int setup(void **state)
{
    (void)state;
    pc_stack_init(&g_stack, "prodsecrets");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    pc_stack_stop(&g_stack);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_public_demo_secrets_stop_the_start),
        cmocka_unit_test(test_own_secrets_serve_and_public_ones_are_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
