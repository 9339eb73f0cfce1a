/* Config loading: a process that keeps a public demo secret refuses to start
 * unless it runs in demo mode. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/config.h"

static void clear_env(void)
{
    unsetenv("PAYCORE_DEMO");
    unsetenv("PAYCORE_ADMIN_TOKEN");
    unsetenv("PAYCORE_CASHIER_TOKEN_KEY");
    unsetenv("PAYCORE_CARD_KEY");
    unsetenv("PAYCORE_LIMITS_BY_CURRENCY");
}

static int reset(void **state)
{
    (void)state;
    clear_env();
    return 0;
}

static void test_demo_admin_token_is_refused_outside_demo_mode(void **state)
{
    (void)state;
    char err[512] = "";
    setenv("PAYCORE_CASHIER_TOKEN_KEY", "a-key-of-our-own-0123456789", 1);
    assert_null(pc_config_load(NULL, err, sizeof err));
    assert_non_null(strstr(err, "admin.token is the public demo value"));
    assert_non_null(strstr(err, "PAYCORE_ADMIN_TOKEN"));

    /* The same value written out by hand is still the public one. */
    setenv("PAYCORE_ADMIN_TOKEN", "demo-admin-token-change-me", 1);
    err[0] = '\0';
    assert_null(pc_config_load(NULL, err, sizeof err));
    assert_non_null(strstr(err, "admin.token is the public demo value"));
}

static void test_demo_cashier_key_is_refused_outside_demo_mode(void **state)
{
    (void)state;
    char err[512] = "";
    setenv("PAYCORE_ADMIN_TOKEN", "an-admin-token-of-our-own", 1);
    assert_null(pc_config_load(NULL, err, sizeof err));
    assert_non_null(strstr(err, "cashier.token_key is the public demo value"));
    assert_non_null(strstr(err, "PAYCORE_CASHIER_TOKEN_KEY"));
}

static void test_own_secrets_or_demo_mode_load(void **state)
{
    (void)state;
    char err[512] = "";
    setenv("PAYCORE_ADMIN_TOKEN", "an-admin-token-of-our-own", 1);
    setenv("PAYCORE_CASHIER_TOKEN_KEY", "a-key-of-our-own-0123456789", 1);
    /* The card key is the third public demo value. */
    assert_null(pc_config_load(NULL, err, sizeof err));
    assert_non_null(strstr(err, "cashier.card_key is the public demo value"));
    assert_non_null(strstr(err, "PAYCORE_CARD_KEY"));
    setenv("PAYCORE_CARD_KEY", "a-card-key-of-our-own-0123", 1);
    pc_config_t *cfg = pc_config_load(NULL, err, sizeof err);
    assert_non_null(cfg);
    assert_false(pc_config_bool(cfg, "demo"));
    assert_string_equal(pc_config_str(cfg, "admin.token"), "an-admin-token-of-our-own");
    pc_config_free(cfg);

    clear_env();
    setenv("PAYCORE_DEMO", "true", 1);
    cfg = pc_config_load(NULL, err, sizeof err);
    assert_non_null(cfg);
    assert_true(pc_config_bool(cfg, "demo"));
    assert_string_equal(pc_config_str(cfg, "admin.token"), "demo-admin-token-change-me");
    pc_config_free(cfg);
}

/* The example file the README points at holds only real options, and no
 * secret: the admin token and link key still come from the environment. */
static void test_example_file_loads(void **state)
{
    (void)state;
    char path[512], err[512] = "";
    snprintf(path, sizeof path, "%s", __FILE__);
    char *p = strstr(path, "/tests/unit/");
    assert_non_null(p);
    snprintf(p, sizeof path - (size_t)(p - path), "/config/paycore.example.json");
    assert_null(pc_config_load(path, err, sizeof err));
    assert_non_null(strstr(err, "admin.token is the public demo value"));
    setenv("PAYCORE_ADMIN_TOKEN", "an-admin-token-of-our-own", 1);
    setenv("PAYCORE_CASHIER_TOKEN_KEY", "a-key-of-our-own-0123456789", 1);
    setenv("PAYCORE_CARD_KEY", "a-card-key-of-our-own-0123", 1);
    pc_config_t *cfg = pc_config_load(path, err, sizeof err);
    if (!cfg)
        fail_msg("%s", err);
    assert_int_equal(pc_config_int(cfg, "http.port"), 8080);
    assert_string_equal(pc_config_str(cfg, "http.public_url"), "https://pay.example.com");
    /* Its limits per currency: IDR's are its own, CNY's the base figures. */
    assert_int_equal(pc_config_limit(cfg, "buyer_daily", "IDR"), 11000000000);
    assert_int_equal(pc_config_limit(cfg, "card_daily", "KWD"), 860000);
    assert_int_equal(pc_config_limit(cfg, "buyer_daily", "CNY"), 5000000);
    pc_config_free(cfg);
}

/* Limits of a currency whose minor unit is worth another amount, from the
 * file (an object under limits.by_currency) or the environment (its JSON);
 * anything malformed stops the start, naming what. */
static void test_limits_by_currency(void **state)
{
    (void)state;
    char err[512] = "", path[] = "/tmp/pc-test-config-XXXXXX";
    setenv("PAYCORE_DEMO", "true", 1);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "{\"limits\": {\"buyer_daily\": 5000000, \"card_single\": 900000, "
                       "\"by_currency\": {\"KRW\": {\"buyer_daily\": 700000000, \"buyer_monthly\": "
                       "7000000000, \"card_daily\": 280000000}}}}";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    pc_config_t *cfg = pc_config_load(path, err, sizeof err);
    if (!cfg)
        fail_msg("%s", err);
    assert_int_equal(pc_config_limit(cfg, "buyer_daily", "KRW"), 700000000);
    assert_int_equal(pc_config_limit(cfg, "card_daily", "KRW"), 280000000);
    assert_int_equal(pc_config_limit(cfg, "buyer_monthly", "KRW"), 7000000000);
    assert_int_equal(pc_config_limit(cfg, "card_single", "KRW"), 900000); /* not set */
    assert_int_equal(pc_config_limit(cfg, "card_single", "CNY"), 900000);
    /* Not set anywhere: no cap of its own. */
    assert_int_equal(pc_config_limit(cfg, "card_monthly", "CNY"), 1000000000000000);
    assert_int_equal(pc_config_limit(cfg, "buyer_daily", "CNY"), 5000000);
    assert_int_equal(pc_config_limit(cfg, "buyer_daily", NULL), 5000000);
    pc_config_free(cfg);
    unlink(path);
    setenv("PAYCORE_LIMITS_BY_CURRENCY", "{\"IDR\": {\"buyer_daily\": 1, \"buyer_monthly\": 1}}",
           1);
    cfg = pc_config_load(NULL, err, sizeof err);
    assert_non_null(cfg);
    assert_int_equal(pc_config_limit(cfg, "buyer_monthly", "IDR"), 1);
    pc_config_free(cfg);
    static const char *const bad[] = {
        "{\"krw\": {\"buyer_daily\": 1}}", "{\"RMB\": {\"buyer_daily\": 1}}",
        "{\"KRW\": {\"daily\": 1}}", "{\"KRW\": {\"buyer_daily\": -1}}",
        "{\"KRW\": {\"buyer_daily\": \"1\"}}", "{\"KRW\": 1}",
        /* a month below the day: the general monthly figure
         * (50,000,000) would cap KRW's 700,000,000 a day */
        "{\"KRW\": {\"buyer_daily\": 700000000}}", "[1]", "{"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv("PAYCORE_LIMITS_BY_CURRENCY", bad[i], 1);
        err[0] = 0;
        assert_null(pc_config_load(NULL, err, sizeof err));
        assert_non_null(strstr(err, "limits.by_currency"));
    }
}

/* A value the start would stumble on later (a job's schedule, the recon
 * time, the log level) is refused when the configuration is read, with the
 * option's name; so is an environment variable set but empty. */
static void test_values_are_checked_where_they_are_read(void **state)
{
    (void)state;
    setenv("PAYCORE_DEMO", "true", 1);
    char err[512];
    static const char *const bad[][3] = {
        {"PAYCORE_LOG_LEVEL", "warning", "log.level must be one of debug, info, warn, error"},
        {"PAYCORE_RECON_DAILY_AT", "0:30", "recon.daily_at must be a UTC time"},
        {"PAYCORE_RECON_DAILY_AT", "24:00", "recon.daily_at must be a UTC time"},
        {"PAYCORE_RECON_DAILY_AT", "12-30", "recon.daily_at must be a UTC time"},
        {"PAYCORE_REPAIR_SCHEDULE_MS", "5000,soon", "repair.schedule_ms must be 1 to 32"},
        {"PAYCORE_PAYOUT_QUERY_SCHEDULE_MS", ",", "payout.query_schedule_ms must be 1 to 32"},
        {"PAYCORE_REFUND_QUERY_SCHEDULE_MS", "-5", "refund.query_schedule_ms must be 1 to 32"},
        {"PAYCORE_REPAIR_SCHEDULE_MS",
         "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,"
         "32,33",
         "repair.schedule_ms must be 1 to 32"},
        /* The jobs read the delays as a PostgreSQL int[]. */
        {"PAYCORE_NOTIFY_SCHEDULE_MS", "15000,3000000000",
         "notify.schedule_ms must be up to 64 comma-separated delays in milliseconds, each at "
         "most 2147483647"},
        {"PAYCORE_REFUND_WINDOW_S", "0", "trades.refund_window_s must be an integer from 86400"},
        {"PAYCORE_DATABASE_URL", "", "PAYCORE_DATABASE_URL is set but empty"},
        {"PAYCORE_ADMIN_TOKEN", "", "PAYCORE_ADMIN_TOKEN is set but empty"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv(bad[i][0], bad[i][1], 1);
        err[0] = 0;
        pc_config_t *cfg = pc_config_load(NULL, err, sizeof err);
        if (cfg || !strstr(err, bad[i][2]))
            fail_msg("%s=%s: %s", bad[i][0], bad[i][1], cfg ? "loaded" : err);
        unsetenv(bad[i][0]);
    }
    /* What they accept; an empty value of an option whose default is empty. */
    setenv("PAYCORE_RECON_DAILY_AT", "23:59", 1);
    setenv("PAYCORE_TRUSTED_PROXIES", "", 1);
    setenv("PAYCORE_LOG_LEVEL", "WARN", 1);
    setenv("PAYCORE_REPAIR_SCHEDULE_MS", "1000, 2000,3000", 1);
    pc_config_t *cfg = pc_config_load(NULL, err, sizeof err);
    if (!cfg)
        fail_msg("%s", err);
    int64_t ms[PC_CONFIG_MAX_DELAYS];
    assert_int_equal(pc_config_ms_list(cfg, "repair.schedule_ms", ms, PC_CONFIG_MAX_DELAYS), 3);
    assert_int_equal(ms[2], 3000);
    int minutes;
    assert_int_equal(pc_config_parse_time_of_day(pc_config_str(cfg, "recon.daily_at"), &minutes),
                     0);
    assert_int_equal(minutes, 23 * 60 + 59);
    pc_config_free(cfg);
    unsetenv("PAYCORE_RECON_DAILY_AT");
    unsetenv("PAYCORE_TRUSTED_PROXIES");
    unsetenv("PAYCORE_LOG_LEVEL");
    unsetenv("PAYCORE_REPAIR_SCHEDULE_MS");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_demo_admin_token_is_refused_outside_demo_mode, reset),
        cmocka_unit_test_setup(test_demo_cashier_key_is_refused_outside_demo_mode, reset),
        cmocka_unit_test_setup(test_own_secrets_or_demo_mode_load, reset),
        cmocka_unit_test_setup(test_example_file_loads, reset),
        cmocka_unit_test_setup(test_limits_by_currency, reset),
        cmocka_unit_test_setup(test_values_are_checked_where_they_are_read, reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
