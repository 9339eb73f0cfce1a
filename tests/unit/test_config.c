/* Config loading: a process that keeps a public demo secret refuses to start
 * unless it runs in demo mode. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/config.h"

static void clear_env(void)
{
    unsetenv("PAYCORE_DEMO");
    unsetenv("PAYCORE_ADMIN_TOKEN");
    unsetenv("PAYCORE_CASHIER_TOKEN_KEY");
    unsetenv("PAYCORE_CARD_KEY");
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
    pc_config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_demo_admin_token_is_refused_outside_demo_mode, reset),
        cmocka_unit_test_setup(test_demo_cashier_key_is_refused_outside_demo_mode, reset),
        cmocka_unit_test_setup(test_own_secrets_or_demo_mode_load, reset),
        cmocka_unit_test_setup(test_example_file_loads, reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
