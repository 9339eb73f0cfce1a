/* Unit tests for web/cashier_token: the token of a cashier link against a
 * fixed vector made independently with the openssl command-line tool,
 *   printf 'paycore-cashier-v1\nT20261122abcdef0123456789\n1795000000\n' |
 *     openssl dgst -sha256 -hmac test-only-cashier-key -binary |
 *     base64 -w0 | tr '+/' '-_' | tr -d '='
 * and every way a token must be refused: forged, expired, another trade's,
 * malformed; plus the link built from the configuration. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core/error.h"
#include "web/cashier_token.h"

#define KEY "test-only-cashier-key"
#define TRADE "T20261122abcdef0123456789"
#define VECTOR TRADE ".1795000000.z8woJknwoiIp62PFBkbkIfjp7DZW7gdTLNNjPN3PRc4"

static void test_token_matches_the_openssl_vector(void **state)
{
    (void)state;
    char tok[PC_CASHIER_TOKEN_MAX];
    assert_int_equal(pc_cashier_token_make(KEY, TRADE, 1795000000, tok, sizeof tok), 0);
    assert_string_equal(tok, VECTOR);
}

static void test_genuine_token_names_its_trade_until_it_expires(void **state)
{
    (void)state;
    char trade[65] = "";
    assert_int_equal(pc_cashier_token_check(KEY, VECTOR, 1794999999, trade, sizeof trade), 0);
    assert_string_equal(trade, TRADE);
    assert_int_equal(pc_cashier_token_check(KEY, VECTOR, 1795000000, trade, sizeof trade),
                     PC_ETIMEDOUT);
    assert_int_equal(pc_cashier_token_check(KEY, VECTOR, 1795009999, trade, sizeof trade),
                     PC_ETIMEDOUT);
}

static void test_forged_or_rebound_token_is_refused(void **state)
{
    (void)state;
    char trade[65], tok[PC_CASHIER_TOKEN_MAX];
    /* Another key. */
    assert_int_equal(pc_cashier_token_check("another-key", VECTOR, 1, trade, sizeof trade),
                     PC_EINVAL);
    /* One MAC character changed. */
    snprintf(tok, sizeof tok, "%s", VECTOR);
    tok[strlen(tok) - 1] = tok[strlen(tok) - 1] == 'A' ? 'B' : 'A';
    assert_int_equal(pc_cashier_token_check(KEY, tok, 1, trade, sizeof trade), PC_EINVAL);
    /* The MAC of one trade on another trade's number, or a later expiry. */
    snprintf(tok, sizeof tok, "T20261122abcdef0123456788.1795000000.%s", strrchr(VECTOR, '.') + 1);
    assert_int_equal(pc_cashier_token_check(KEY, tok, 1, trade, sizeof trade), PC_EINVAL);
    snprintf(tok, sizeof tok, TRADE ".1795000001.%s", strrchr(VECTOR, '.') + 1);
    assert_int_equal(pc_cashier_token_check(KEY, tok, 1, trade, sizeof trade), PC_EINVAL);
    /* The same expiry spelt with a leading zero. */
    snprintf(tok, sizeof tok, TRADE ".01795000000.%s", strrchr(VECTOR, '.') + 1);
    assert_int_equal(pc_cashier_token_check(KEY, tok, 1, trade, sizeof trade), PC_EINVAL);
}

static void test_malformed_tokens_are_refused(void **state)
{
    (void)state;
    char trade[65];
    const char *bad[] = {"",
                         "T1",
                         "T1.123",
                         "T1.123.abc.def",
                         "T 1.123.abc",
                         ".123.abc",
                         "T1..abc",
                         "T1.12a.abc",
                         "T1.1234567890123.abc",
                         "T1.123.",
                         TRADE ".1795000000.z8woJknwoiIp62PFBkbkIfjp7DZW7gdTLNNjPN3PRc4="};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(pc_cashier_token_check(KEY, bad[i], 1, trade, sizeof trade), PC_EINVAL);
    assert_int_equal(pc_cashier_token_check("", VECTOR, 1, trade, sizeof trade), PC_EINVAL);
    assert_int_equal(pc_cashier_token_check(KEY, NULL, 1, trade, sizeof trade), PC_EINVAL);
}

static void test_make_refuses_bad_input(void **state)
{
    (void)state;
    char tok[PC_CASHIER_TOKEN_MAX];
    assert_int_equal(pc_cashier_token_make("", TRADE, 1, tok, sizeof tok), PC_EINVAL);
    assert_int_equal(pc_cashier_token_make(KEY, "T.1", 1, tok, sizeof tok), PC_EINVAL);
    assert_int_equal(pc_cashier_token_make(KEY, "", 1, tok, sizeof tok), PC_EINVAL);
    assert_int_equal(pc_cashier_token_make(KEY, TRADE, 1, tok, 20), PC_ELIMIT);
}

static void test_url_uses_public_url_and_the_grace_after_expiry(void **state)
{
    (void)state;
    setenv("PAYCORE_CASHIER_TOKEN_KEY", KEY, 1);
    setenv("PAYCORE_ADMIN_TOKEN", "unit-test-admin-token", 1);
    setenv("PAYCORE_CARD_KEY", "unit-test-card-key", 1);
    setenv("PAYCORE_PUBLIC_URL", "https://pay.example/", 1);
    char err[256], url[512], trade[65];
    pc_config_t *cfg = pc_config_load(NULL, err, sizeof err);
    assert_non_null(cfg);
    assert_int_equal(
        pc_cashier_url(cfg, TRADE, 1795000000 - PC_CASHIER_LINK_GRACE_S, url, sizeof url), 0);
    assert_string_equal(url, "https://pay.example/cashier/" VECTOR);
    const char *tok = strstr(url, "/cashier/") + 9;
    assert_int_equal(pc_cashier_token_check(KEY, tok, 1794999999, trade, sizeof trade), 0);
    pc_config_free(cfg);
    unsetenv("PAYCORE_PUBLIC_URL");
    setenv("PAYCORE_HTTP_PORT", "18080", 1);
    cfg = pc_config_load(NULL, err, sizeof err);
    assert_non_null(cfg);
    assert_int_equal(pc_cashier_url(cfg, TRADE, 1, url, sizeof url), 0);
    assert_true(strncmp(url, "http://127.0.0.1:18080/cashier/" TRADE ".", 40) == 0);
    pc_config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_matches_the_openssl_vector),
        cmocka_unit_test(test_genuine_token_names_its_trade_until_it_expires),
        cmocka_unit_test(test_forged_or_rebound_token_is_refused),
        cmocka_unit_test(test_malformed_tokens_are_refused),
        cmocka_unit_test(test_make_refuses_bad_input),
        cmocka_unit_test(test_url_uses_public_url_and_the_grace_after_expiry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
