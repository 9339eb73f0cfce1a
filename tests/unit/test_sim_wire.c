/* Unit tests for src/sim/wire.c: the channel secrets, request verification,
 * answer/callback signatures (checked against an independent HMAC
 * computation), and the nonce cache. The modules are compiled into this test
 * directly (paysim is not part of pclib). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "sim/codes.c"
#include "sim/map.c"
#include "sim/wire.c"

#include <openssl/evp.h>
#include <openssl/hmac.h>

static const char SECRET[] = "demo-secret-sim_card";

static char *sign_req(const char *method, const char *target, const char *ts, const char *nonce,
                      const char *body)
{
    size_t len;
    char *msg = pc_sign_request_string(method, target, ts, nonce, body, strlen(body), &len);
    char *sig = pc_hmac_sha256_sign(SECRET, strlen(SECRET), msg, len);
    free(msg);
    return sig;
}

static void test_secret_from_env_or_demo(void **state)
{
    (void)state;
    char out[PC_SIM_SECRET_MAX];
    bool demo;
    unsetenv("PAYSIM_SECRET_SIM_WALLET");
    assert_int_equal(pc_sim_secret("sim_wallet", out, sizeof out, &demo), 0);
    assert_string_equal(out, "demo-secret-sim_wallet");
    assert_true(demo);
    setenv("PAYSIM_SECRET_SIM_WALLET", "s3cr3t-from-env", 1);
    assert_int_equal(pc_sim_secret("sim_wallet", out, sizeof out, &demo), 0);
    assert_string_equal(out, "s3cr3t-from-env");
    assert_false(demo);
    unsetenv("PAYSIM_SECRET_SIM_WALLET");
    char tiny[8];
    assert_int_equal(pc_sim_secret("sim_wallet", tiny, sizeof tiny, &demo), PC_ELIMIT);
}

static void test_signed_request_verifies(void **state)
{
    (void)state;
    const char *body = "{\"payment_no\":\"P1\"}";
    char *sig =
        sign_req("POST", "/ch/sim_card/payments", "1795334400", "nonce-0123456789abcd", body);
    assert_int_equal(pc_sim_verify_request(SECRET, "POST", "/ch/sim_card/payments", "1795334400",
                                           "nonce-0123456789abcd", sig, body, strlen(body),
                                           1795334400 + 299, NULL),
                     PC_SIM_OK);
    /* Any change breaks it: body, path, method, secret. */
    const char *why = NULL;
    assert_int_equal(pc_sim_verify_request(SECRET, "POST", "/ch/sim_card/payments", "1795334400",
                                           "nonce-0123456789abcd", sig, "{}", 2, 1795334400, &why),
                     PC_SIM_INVALID_SIGNATURE);
    assert_non_null(why);
    assert_int_equal(pc_sim_verify_request(SECRET, "POST", "/ch/sim_card2/payments", "1795334400",
                                           "nonce-0123456789abcd", sig, body, strlen(body),
                                           1795334400, NULL),
                     PC_SIM_INVALID_SIGNATURE);
    assert_int_equal(pc_sim_verify_request("other", "POST", "/ch/sim_card/payments", "1795334400",
                                           "nonce-0123456789abcd", sig, body, strlen(body),
                                           1795334400, NULL),
                     PC_SIM_INVALID_SIGNATURE);
    free(sig);
}

static void test_get_signs_the_query_and_no_body(void **state)
{
    (void)state;
    char *sig = sign_req("GET", "/ch/sim_card/payments?payment_no=P1", "1795334400",
                         "nonce-0123456789abcd", "");
    assert_int_equal(pc_sim_verify_request(SECRET, "GET", "/ch/sim_card/payments?payment_no=P1",
                                           "1795334400", "nonce-0123456789abcd", sig, "junk", 4,
                                           1795334400, NULL),
                     PC_SIM_OK);
    assert_int_equal(pc_sim_verify_request(SECRET, "GET", "/ch/sim_card/payments?payment_no=P2",
                                           "1795334400", "nonce-0123456789abcd", sig, "", 0,
                                           1795334400, NULL),
                     PC_SIM_INVALID_SIGNATURE);
    free(sig);
}

static void test_stale_or_malformed_headers_refused(void **state)
{
    (void)state;
    char *sig = sign_req("GET", "/x", "1795334400", "nonce-0123456789abcd", "");
    assert_int_equal(pc_sim_verify_request(SECRET, "GET", "/x", "1795334400",
                                           "nonce-0123456789abcd", sig, "", 0, 1795334400 + 301,
                                           NULL),
                     PC_SIM_TIMESTAMP_EXPIRED);
    assert_int_equal(pc_sim_verify_request(SECRET, "GET", "/x", "1795334400",
                                           "nonce-0123456789abcd", sig, "", 0, 1795334400 - 301,
                                           NULL),
                     PC_SIM_TIMESTAMP_EXPIRED);
    assert_int_equal(pc_sim_verify_request(SECRET, "GET", "/x", "17953344OO",
                                           "nonce-0123456789abcd", sig, "", 0, 1795334400, NULL),
                     PC_SIM_INVALID_SIGNATURE);
    assert_int_equal(pc_sim_verify_request(SECRET, "GET", "/x", "1795334400", "short", sig, "", 0,
                                           1795334400, NULL),
                     PC_SIM_INVALID_SIGNATURE);
    assert_int_equal(pc_sim_verify_request(SECRET, "GET", "/x", NULL, "nonce-0123456789abcd", sig,
                                           "", 0, 1795334400, NULL),
                     PC_SIM_INVALID_SIGNATURE);
    assert_int_equal(pc_sim_verify_request(SECRET, "GET", "/x", "1795334400",
                                           "nonce-0123456789abcd", NULL, "", 0, 1795334400, NULL),
                     PC_SIM_INVALID_SIGNATURE);
    free(sig);
}

static void test_answer_signature_matches_independent_hmac(void **state)
{
    (void)state;
    const char *body = "{\"status\":\"SUCCESS\"}";
    char *sig =
        pc_sim_sign_message(SECRET, "1795334400", "nonce-0123456789abcd", body, strlen(body));
    assert_non_null(sig);
    const char msg[] = "1795334400\nnonce-0123456789abcd\n{\"status\":\"SUCCESS\"}\n";
    unsigned char mac[32];
    unsigned int maclen = 0;
    HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET), (const unsigned char *)msg, sizeof msg - 1, mac,
         &maclen);
    assert_int_equal(maclen, 32);
    char b64[64];
    EVP_EncodeBlock((unsigned char *)b64, mac, 32);
    assert_string_equal(sig, b64);
    free(sig);
}

static void test_nonce_used_once_within_ttl(void **state)
{
    (void)state;
    pc_sim_nonces_t *n = pc_sim_nonces_new(4);
    assert_int_equal(pc_sim_nonces_use(n, "aaaaaaaaaaaaaaaa", 1000), 0);
    assert_int_equal(pc_sim_nonces_use(n, "aaaaaaaaaaaaaaaa", 1000 + PC_SIM_NONCE_TTL_S),
                     PC_ECONFLICT);
    /* After the TTL the nonce is forgotten (the timestamp window rejects
     * such a replay anyway). */
    assert_int_equal(pc_sim_nonces_use(n, "aaaaaaaaaaaaaaaa", 1001 + PC_SIM_NONCE_TTL_S), 0);
    assert_int_equal(pc_sim_nonces_use(n, "aaaaaaaaaaaaaaaa", 1002 + PC_SIM_NONCE_TTL_S),
                     PC_ECONFLICT);
    pc_sim_nonces_free(n);
}

static void test_nonce_cache_is_bounded(void **state)
{
    (void)state;
    pc_sim_nonces_t *n = pc_sim_nonces_new(3);
    char nonce[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(nonce, sizeof nonce, "nonce-%010d", i);
        assert_int_equal(pc_sim_nonces_use(n, nonce, 5000), 0);
        assert_true(pc_sim_map_count(n->map) <= 3);
    }
    /* The three newest are still remembered. */
    assert_int_equal(pc_sim_nonces_use(n, "nonce-0000000999", 5000), PC_ECONFLICT);
    assert_int_equal(pc_sim_nonces_use(n, "nonce-0000000997", 5000), PC_ECONFLICT);
    assert_int_equal(pc_sim_nonces_use(n, "nonce-0000000001", 5000), 0);
    pc_sim_nonces_free(n);
}

static void test_error_table(void **state)
{
    (void)state;
    assert_int_equal(pc_sim_err_status(PC_SIM_INVALID_REQUEST), 400);
    assert_int_equal(pc_sim_err_status(PC_SIM_NONCE_REUSED), 401);
    assert_int_equal(pc_sim_err_status(PC_SIM_AMOUNT_EXCEEDS_REFUNDABLE), 422);
    assert_int_equal(pc_sim_err_status(PC_SIM_TIMEOUT), 504);
    assert_string_equal(pc_sim_err_code(PC_SIM_DUPLICATE_PAYMENT_NO), "DUPLICATE_PAYMENT_NO");
    for (int e = 1; e < PC_SIM_ERR_COUNT; e++) {
        assert_non_null(pc_sim_err_code((pc_sim_err_t)e));
        assert_true(pc_sim_err_status((pc_sim_err_t)e) >= 400);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_secret_from_env_or_demo),
        cmocka_unit_test(test_signed_request_verifies),
        cmocka_unit_test(test_get_signs_the_query_and_no_body),
        cmocka_unit_test(test_stale_or_malformed_headers_refused),
        cmocka_unit_test(test_answer_signature_matches_independent_hmac),
        cmocka_unit_test(test_nonce_used_once_within_ttl),
        cmocka_unit_test(test_nonce_cache_is_bounded),
        cmocka_unit_test(test_error_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
