/* Merchant authentication and idempotency against real paycore processes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "auth/sign.h"
#include "harness.h"
#include <uv.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static pc_stack_t g_stack;
static pc_t_merchant_t g_m;

static int setup(void **state)
{
    (void)state;
    pc_stack_init(&g_stack, "auth");
    pc_stack_start_node(&g_stack, 0);
    pc_stack_start_node(&g_stack, 1);
    g_m = pc_t_create_merchant(&g_stack, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    pc_stack_stop(&g_stack);
    return 0;
}

static char *trade_body(const char *otn, long amount)
{
    static char b[512];
    snprintf(b, sizeof b,
             "{\"out_trade_no\":\"%s\",\"product\":\"INSTANT\",\"amount\":%ld,\"currency\":\"CNY\","
             "\"subject\":\"Coffee beans\",\"buyer_id\":\"u_42\"}",
             otn, amount);
    return b;
}

static void test_valid_hmac_request_passes(void **state)
{
    (void)state;
    pc_t_resp_t r = pc_t_call(&g_stack, &g_m, "POST", "/v1/trades", trade_body("A1", 1999), "k-a1");
    assert_int_equal(r.status, 201);
    char trade_no[64];
    snprintf(trade_no, sizeof trade_no, "%s", pc_t_jstr(&r, "trade_no"));
    assert_string_equal(pc_t_jstr(&r, "status"), "WAIT_BUYER_PAY");
    pc_t_resp_free(&r);
    char path[128];
    snprintf(path, sizeof path, "/v1/trades/%s", trade_no);
    r = pc_t_call(&g_stack, &g_m, "GET", path, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(pc_t_jstr(&r, "out_trade_no"), "A1");
    assert_string_equal(pc_t_jstr(&r, "amount"), "1999");
    pc_t_resp_free(&r);
    r = pc_t_call(&g_stack, &g_m, "GET", "/v1/trades?out_trade_no=A1", NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(pc_t_jstr(&r, "trade_no"), trade_no);
    pc_t_resp_free(&r);
}

/* A path or query escape that is not text is the client's error (400), never
 * a 500 or a 503 ("retry") from the database refusing the bytes, for every
 * object a merchant looks up. */
static void test_escapes_that_are_not_text_get_400(void **state)
{
    (void)state;
    const char *paths[] = {
        "/v1/trades/%FF",
        "/v1/trades?out_trade_no=%FF",
        "/v1/refunds/%FF",
        "/v1/refunds?out_refund_no=%C3%28",
        "/v1/payments/%ED%A0%80",
        "/v1/payouts/%FF",
        "/v1/chargebacks/%C0%AF",
        "/v1/trades/T1%00x",
        "/v1/trades?out_trade_no=A1%00",
    };
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        pc_t_resp_t r = pc_t_call(&g_stack, &g_m, "GET", paths[i], NULL, NULL);
        if (r.status != 400)
            fail_msg("GET %s answered %ld: %s", paths[i], r.status, r.body ? r.body : "");
        assert_string_equal(pc_t_errcode(&r), "INVALID_REQUEST");
        pc_t_resp_free(&r);
    }
    pc_t_resp_t r = pc_t_call(&g_stack, &g_m, "POST", "/v1/trades/%FF/close", "{}", "k-bad-close");
    assert_int_equal(r.status, 400);
    pc_t_resp_free(&r);
    /* Text that is not an object's id is simply not found. */
    r = pc_t_call(&g_stack, &g_m, "GET", "/v1/refunds/%C3%A9t%C3%A9", NULL, NULL);
    assert_int_equal(r.status, 404);
    pc_t_resp_free(&r);
}

/* Reads dir/name (a PEM) into buf. */
static void read_pem(const char *dir, const char *name, char *buf, size_t size)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    buf[fread(buf, 1, size - 1, f)] = 0;
    fclose(f);
}

/* A new 2048-bit RSA key pair in dir: name.pem (private), name.pub. */
static void rsa_key_pair(const char *dir, const char *name)
{
    assert_int_equal(pc_t_sh("mkdir -p %s && openssl genpkey -algorithm RSA -pkeyopt "
                             "rsa_keygen_bits:2048 -out %s/%s.pem 2>/dev/null && openssl pkey -in "
                             "%s/%s.pem -pubout -out %s/%s.pub",
                             dir, dir, name, dir, name, dir, name),
                     0);
}

/* An RSA2 merchant registered with dir/name.pub, signing with name.pem. */
static pc_t_merchant_t rsa_merchant(const char *dir, const char *name)
{
    char pub[4096], file[64];
    snprintf(file, sizeof file, "%s.pub", name);
    read_pem(dir, file, pub, sizeof pub);
    json_t *extra = json_pack("{s:s,s:s}", "sign_type", "RSA2", "public_key", pub);
    char *ej = json_dumps(extra, JSON_COMPACT);
    ej[strlen(ej) - 1] = 0; /* drop the closing brace to merge */
    pc_t_merchant_t m = pc_t_create_merchant(&g_stack, ej + 1);
    free(ej);
    json_decref(extra);
    snprintf(file, sizeof file, "%s.pem", name);
    read_pem(dir, file, m.secret, sizeof m.secret);
    return m;
}

static void test_valid_rsa2_request_passes(void **state)
{
    (void)state;
    char dir[256], path[512], pub[4096];
    size_t n;
    FILE *f;
    snprintf(dir, sizeof dir, "%s/test-rsa-%d", pc_t_binary_dir(), (int)getpid());
    rsa_key_pair(dir, "key");
    pc_t_merchant_t rsa = rsa_merchant(dir, "key");
    pc_t_resp_t r = pc_t_call(&g_stack, &rsa, "POST", "/v1/trades", trade_body("R1", 500), "k-r1");
    assert_int_equal(r.status, 201);
    pc_t_resp_free(&r);
    /* Signed with another key: refused. */
    pc_t_merchant_t wrong = rsa;
    snprintf(wrong.secret, sizeof wrong.secret, "%s", g_m.secret);
    r = pc_t_call(&g_stack, &wrong, "GET", "/v1/trades?out_trade_no=R1", NULL, NULL);
    assert_int_equal(r.status, 401);
    assert_string_equal(pc_t_errcode(&r), "INVALID_SIGNATURE");
    pc_t_resp_free(&r);
    /* The same key for a second merchant, even written as PKCS#1 PEM: refused
     * (X-Merchant-Id is not signed, so a request signed for one merchant
     * would pass as the other's). */
    assert_int_equal(pc_t_sh("openssl rsa -in %s/key.pem -RSAPublicKey_out -out %s/pub1.pem "
                             "2>/dev/null",
                             dir, dir),
                     0);
    snprintf(path, sizeof path, "%s/pub1.pem", dir);
    f = fopen(path, "r");
    n = fread(pub, 1, sizeof pub - 1, f);
    pub[n] = 0;
    fclose(f);
    assert_non_null(strstr(pub, "BEGIN RSA PUBLIC KEY"));
    json_t *again =
        json_pack("{s:s,s:s,s:s}", "name", "Same key", "sign_type", "RSA2", "public_key", pub);
    char *aj = json_dumps(again, JSON_COMPACT);
    r = pc_t_admin(&g_stack, "POST", "/admin/merchants", aj);
    free(aj);
    json_decref(again);
    assert_int_equal(r.status, 409);
    assert_non_null(strstr(r.body, "\"field\":\"public_key\""));
    pc_t_resp_free(&r);
    /* A public_key that is no text is said to be one (before: 400 blamed on
     * notify_url, which the request did not even have). */
    r = pc_t_admin(&g_stack, "POST", "/admin/merchants", "{\"name\":\"x\",\"public_key\":123}");
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "\"field\":\"public_key\""));
    pc_t_resp_free(&r);
    pc_t_sh("rm -rf %s", dir);
}

/* The largest RSA2 key paycore takes (PC_RSA_MAX_BITS, 8192 bits): its
 * signatures are 1,024 bytes (1,368 characters of base64), which fill
 * paycore's decode buffer exactly and its header whole. A test-only key
 * kept in the tree (tests/integration/keys), as generating one takes
 * seconds to a minute. */
static void test_an_8192_bit_rsa2_key_signs_requests(void **state)
{
    (void)state;
    char dir[256];
    snprintf(dir, sizeof dir, "%s/test-rsa8192-%d", pc_t_binary_dir(), (int)getpid());
    assert_int_equal(pc_t_sh("mkdir -p %s && openssl pkey -in "
                             "%s/tests/integration/keys/TEST-ONLY-rsa-8192.pem -out %s/big.pem && "
                             "openssl pkey -in %s/big.pem -pubout -out %s/big.pub",
                             dir, pc_t_source_dir(), dir, dir, dir),
                     0);
    pc_t_merchant_t big = rsa_merchant(dir, "big");
    pc_t_resp_t r =
        pc_t_call(&g_stack, &big, "POST", "/v1/trades", trade_body("R8192", 700), "k-8192");
    assert_int_equal(r.status, 201);
    pc_t_resp_free(&r);
    r = pc_t_call(&g_stack, &big, "GET", "/v1/trades?out_trade_no=R8192", NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(pc_t_jstr(&r, "out_trade_no"), "R8192");
    pc_t_resp_free(&r);
    /* Signed by a 2048-bit key (its 344-character signature): refused. */
    char small[300];
    snprintf(small, sizeof small, "%s/small", dir);
    rsa_key_pair(small, "key");
    pc_t_merchant_t other = big;
    read_pem(small, "key.pem", other.secret, sizeof other.secret);
    r = pc_t_call(&g_stack, &other, "GET", "/v1/trades?out_trade_no=R8192", NULL, NULL);
    assert_int_equal(r.status, 401);
    assert_string_equal(pc_t_errcode(&r), "INVALID_SIGNATURE");
    pc_t_resp_free(&r);
    pc_t_sh("rm -rf %s", dir);
}

/* Whether merchant m's signed GET is accepted (anything but 401). Every
 * node must agree: a change reaches the other node's merchant cache over
 * Redis pub/sub a moment later, so the answer is awaited (3 s at most). */
static int signs_on_every_node(const pc_t_merchant_t *m, int want)
{
    int agreed = 0;
    for (int i = 0; i < 60 && agreed < 6; i++) {
        pc_t_resp_t r = pc_t_call(&g_stack, m, "GET", "/v1/trades?out_trade_no=none", NULL, NULL);
        int ok = r.status != 401;
        pc_t_resp_free(&r);
        agreed = ok == want ? agreed + 1 : 0;
        if (agreed < 6)
            usleep(50000);
    }
    return agreed >= 6;
}
#define signs(m) signs_on_every_node(m, 1)
#define refused(m) signs_on_every_node(m, 0)

/* Rotating a secret may keep the previous one working for a grace period
 * (time to deploy the new one; a lost answer is rotated again meanwhile);
 * without one, or once a later rotation says so, it stops at once. Before,
 * every rotation locked the merchant out until it deployed the new one. */
static void test_rotation_keeps_the_previous_secret_for_its_grace_period(void **state)
{
    (void)state;
    pc_t_merchant_t m = pc_t_create_merchant(&g_stack, NULL);
    pc_t_merchant_t old = m;
    char path[160];
    snprintf(path, sizeof path, "/admin/merchants/%s/rotate-secret", m.id);
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", path, "{\"grace_seconds\":-1}");
    assert_int_equal(r.status, 400);
    pc_t_resp_free(&r);
    r = pc_t_admin(&g_stack, "POST", path, "{\"grace_seconds\":600}");
    assert_int_equal(r.status, 200);
    snprintf(m.secret, sizeof m.secret, "%s", pc_t_jstr(&r, "secret"));
    assert_true(strlen(pc_t_jstr(&r, "previous_valid_until")) == 20);
    pc_t_resp_free(&r);
    assert_string_not_equal(m.secret, old.secret);
    assert_true(signs(&m));
    assert_true(signs(&old)); /* within the grace period */
    /* Rotated again with grace while the first grace runs (its answer lost,
     * or the merchant deployed it and rotates again): the secret before and
     * the one in between both keep working, each until its own deadline.
     * Before, the secret before stopped at once. */
    pc_t_merchant_t between = m;
    r = pc_t_admin(&g_stack, "POST", path, "{\"grace_seconds\":600}");
    assert_int_equal(r.status, 200);
    snprintf(m.secret, sizeof m.secret, "%s", pc_t_jstr(&r, "secret"));
    pc_t_resp_free(&r);
    assert_true(signs(&m));
    assert_true(signs(&old));
    assert_true(signs(&between));
    /* Rotated again without grace (the secret leaked): only the newest. */
    pc_t_merchant_t second = m;
    r = pc_t_admin(&g_stack, "POST", path, NULL);
    assert_int_equal(r.status, 200);
    snprintf(m.secret, sizeof m.secret, "%s", pc_t_jstr(&r, "secret"));
    assert_string_equal(pc_t_jstr(&r, "previous_valid_until"), "");
    pc_t_resp_free(&r);
    assert_true(signs(&m));
    assert_true(refused(&second));
    assert_true(refused(&old));
    assert_true(refused(&between));
}

/* An RSA2 merchant replaces its public key (it could not before: a leaked
 * private key left only disabling the merchant), with the same grace. */
/* POST path {"public_key": pem, "grace_seconds": grace (when > 0)}: the status. */
static long new_public_key(const char *path, const char *pem, int grace)
{
    json_t *body = json_pack("{s:s}", "public_key", pem);
    if (grace > 0)
        json_object_set_new(body, "grace_seconds", json_integer(grace));
    char *bj = json_dumps(body, JSON_COMPACT);
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", path, bj);
    free(bj);
    json_decref(body);
    long st = r.status;
    pc_t_resp_free(&r);
    return st;
}

static void test_rsa2_merchant_replaces_its_public_key(void **state)
{
    (void)state;
    char dir[256], pem[2][4096], path[512];
    snprintf(dir, sizeof dir, "%s/test-rsa-rot-%d", pc_t_binary_dir(), (int)getpid());
    rsa_key_pair(dir, "a");
    rsa_key_pair(dir, "b");
    read_pem(dir, "a.pub", pem[0], sizeof pem[0]);
    read_pem(dir, "b.pub", pem[1], sizeof pem[1]);
    pc_t_merchant_t a = rsa_merchant(dir, "a");
    pc_t_merchant_t b = a;
    read_pem(dir, "b.pem", b.secret, sizeof b.secret);
    assert_true(signs(&a));
    assert_true(refused(&b));
    snprintf(path, sizeof path, "/admin/merchants/%s/public-key", a.id);
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", path, "{\"public_key\":\"not a key\"}");
    assert_int_equal(r.status, 400);
    pc_t_resp_free(&r);
    assert_int_equal(new_public_key(path, pem[1], 300), 200);
    assert_true(signs(&b));
    assert_true(signs(&a)); /* the grace period */
    assert_int_equal(new_public_key(path, pem[1], 0), 200);
    assert_true(signs(&b));
    assert_true(refused(&a));
    /* An HMAC merchant has no public key to replace, nor an RSA2 one a
     * secret: 409, saying which route changes its key (it was 404, as if
     * the merchant did not exist); an unknown merchant is 404. */
    snprintf(path, sizeof path, "/admin/merchants/%s/public-key", g_m.id);
    assert_int_equal(new_public_key(path, pem[0], 0), 409);
    snprintf(path, sizeof path, "/admin/merchants/%s/rotate-secret", a.id);
    r = pc_t_admin(&g_stack, "POST", path, NULL);
    assert_int_equal(r.status, 409);
    assert_non_null(strstr(r.body, "public-key"));
    pc_t_resp_free(&r);
    assert_int_equal(new_public_key("/admin/merchants/m_nosuchmerchant/public-key", pem[0], 0),
                     404);
    pc_t_sh("rm -rf %s", dir);
}

static pc_t_resp_t raw(const char *secret, const char *method, const char *path, const char *body,
                       long long ts, const char *sign_path, const char *sign_body)
{
    char nonce[33];
    pc_random_hex(nonce, sizeof nonce, 16);
    return pc_t_call_raw(g_stack.http_port, g_m.id, secret, method, path, body,
                         body ? "k-neg" : NULL, ts, nonce, sign_path, sign_body);
}

static void expect(pc_t_resp_t r, long status, const char *code)
{
    assert_int_equal(r.status, status);
    assert_string_equal(pc_t_errcode(&r), code);
    pc_t_resp_free(&r);
}

/* A request the nonce store cannot vouch for (signed before it forgot, or
 * before it went away): refused with 503 UNAVAILABLE, to be signed again
 * with the current time. */
static void expect_resign(pc_t_resp_t r)
{
    if (r.status != 503 || !r.body || !strstr(r.body, "sign it again with the current time"))
        fprintf(stderr, "want a re-sign 503: %ld %s\n", r.status, r.body ? r.body : "");
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.body, "sign it again with the current time"));
    expect(r, 503, "UNAVAILABLE");
}

static void test_bad_signatures_are_refused(void **state)
{
    (void)state;
    long long now = (long long)time(NULL);
    char b[512], other[512];
    snprintf(b, sizeof b, "%s", trade_body("NEG1", 100));
    snprintf(other, sizeof other, "%s", trade_body("NEG1", 1));
    expect(raw("wrong-secret", "POST", "/v1/trades", b, now, NULL, NULL), 401, "INVALID_SIGNATURE");
    /* Body changed after signing. */
    expect(raw(g_m.secret, "POST", "/v1/trades", b, now, NULL, other), 401, "INVALID_SIGNATURE");
    /* Path changed after signing. */
    expect(raw(g_m.secret, "GET", "/v1/trades?out_trade_no=A1", NULL, now,
               "/v1/trades?out_trade_no=A2", NULL),
           401, "INVALID_SIGNATURE");
    expect(raw(g_m.secret, "GET", "/v1/trades?out_trade_no=A1", NULL, now - 301, NULL, NULL), 401,
           "TIMESTAMP_EXPIRED");
    expect(raw(g_m.secret, "GET", "/v1/trades?out_trade_no=A1", NULL, now + 301, NULL, NULL), 401,
           "TIMESTAMP_EXPIRED");
    /* Nothing was created by any of them. */
    assert_int_equal(pc_t_sql_int(&g_stack, "SELECT count(*) FROM trades WHERE out_trade_no = "
                                            "'NEG1'"),
                     0);
}

/* The status of an unsigned, token-less request for target on port. */
static int bare_status(int port, const char *method, const char *target)
{
    int fd = pc_t_connect(port);
    char req[512], buf[4096];
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: "
                     "close\r\n\r\n",
                     method, target);
    assert_int_equal(write(fd, req, (size_t)n), n);
    pc_t_read_all(fd, buf, sizeof buf, 5000);
    close(fd);
    int status = 0;
    if (sscanf(buf, "HTTP/1.1 %d", &status) != 1)
        fprintf(stderr, "%s %s: no answer\n", method, target);
    return status;
}

static void test_other_spellings_of_a_path_reach_no_route(void **state)
{
    (void)state;
    /* A merchant route spelt another way ran without the signature check:
     * with no merchant behind it the handler crashed the node. */
    const char *api[] = {"//v1/balance", "/v1//balance", "/v1/balance/", "//v1/trades"};
    for (size_t i = 0; i < sizeof api / sizeof *api; i++)
        assert_int_equal(bare_status(g_stack.http_port, "GET", api[i]), 404);
    assert_int_equal(bare_status(g_stack.http_port, "POST", "//v1/buyers/u_x/cards"), 404);
    /* Admin routes the same: no token, no answer but 404. */
    const char *admin[] = {"//admin/alerts", "/admin//alerts", "/admin/alerts/"};
    for (size_t i = 0; i < sizeof admin / sizeof *admin; i++)
        assert_int_equal(bare_status(g_stack.admin_port[0], "GET", admin[i]), 404);
    /* The canonical spellings still ask for credentials, and both nodes
     * are up. */
    assert_int_equal(bare_status(g_stack.http_port, "GET", "/v1/balance"), 401);
    assert_int_equal(bare_status(g_stack.admin_port[0], "GET", "/admin/alerts"), 401);
    assert_int_equal(bare_status(g_stack.admin_port[1], "GET", "/admin/alerts"), 401);
    for (int i = 0; i < 4; i++)
        assert_int_equal(bare_status(g_stack.http_port, "GET", "/healthz"), 200);
}

static void test_reused_nonce_is_refused(void **state)
{
    (void)state;
    long long now = (long long)time(NULL);
    const char *nonce = "nonce-reuse-0000000001";
    pc_t_resp_t r = pc_t_call_raw(g_stack.http_port, g_m.id, g_m.secret, "GET",
                                  "/v1/trades?out_trade_no=A1", NULL, NULL, now, nonce, NULL, NULL);
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    expect(pc_t_call_raw(g_stack.http_port, g_m.id, g_m.secret, "GET", "/v1/trades?out_trade_no=A1",
                         NULL, NULL, now, nonce, NULL, NULL),
           401, "NONCE_REUSED");
}

static void test_unknown_and_disabled_merchants_are_refused(void **state)
{
    (void)state;
    char nonce[33];
    pc_random_hex(nonce, sizeof nonce, 16);
    expect(pc_t_call_raw(g_stack.http_port, "m_nobody", "x", "GET", "/v1/trades?out_trade_no=A1",
                         NULL, NULL, (long long)time(NULL), nonce, NULL, NULL),
           401, "UNKNOWN_MERCHANT");
    pc_t_merchant_t m2 = pc_t_create_merchant(&g_stack, NULL);
    char path[128];
    snprintf(path, sizeof path, "/admin/merchants/%s/disable", m2.id);
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", path, NULL);
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    /* Both nodes refuse it (the cache is invalidated everywhere). */
    for (int i = 0; i < 10; i++)
        expect(pc_t_call(&g_stack, &m2, "GET", "/v1/trades?out_trade_no=A1", NULL, NULL), 403,
               "MERCHANT_DISABLED");
}

static void test_merchant_cannot_read_another_merchants_trade(void **state)
{
    (void)state;
    pc_t_merchant_t other = pc_t_create_merchant(&g_stack, NULL);
    pc_t_resp_t r = pc_t_call(&g_stack, &g_m, "GET", "/v1/trades?out_trade_no=A1", NULL, NULL);
    char path[128];
    snprintf(path, sizeof path, "/v1/trades/%s", pc_t_jstr(&r, "trade_no"));
    pc_t_resp_free(&r);
    expect(pc_t_call(&g_stack, &other, "GET", path, NULL, NULL), 404, "NOT_FOUND");
    expect(pc_t_call(&g_stack, &other, "GET", "/v1/trades?out_trade_no=A1", NULL, NULL), 404,
           "NOT_FOUND");
}

static void test_product_not_allowed(void **state)
{
    (void)state;
    pc_t_merchant_t m = pc_t_create_merchant(&g_stack, "\"allowed_products\":[\"GUARANTEE\"]");
    expect(pc_t_call(&g_stack, &m, "POST", "/v1/trades", trade_body("P1", 100), "k-p1"), 403,
           "PRODUCT_NOT_ALLOWED");
}

/* The field pc_t_call's answer names, for a pay body. */
/* POSTs body to path and expects 400 naming field. */
static void expect_field_at(const char *path, const char *body, const char *field)
{
    static int n;
    char key[32], want[64];
    snprintf(key, sizeof key, "k-payf-%d", ++n);
    pc_t_resp_t r = pc_t_call(&g_stack, &g_m, "POST", path, body, key);
    assert_int_equal(r.status, 400);
    snprintf(want, sizeof want, "\"field\":\"%s\"", field);
    if (!strstr(r.body, want))
        fprintf(stderr, "%s -> %s\n", body, r.body);
    assert_non_null(strstr(r.body, want));
    pc_t_resp_free(&r);
}

static void expect_pay_field(const char *body, const char *field)
{
    expect_field_at("/v1/cashier/pay", body, field);
}

static void test_invalid_fields_are_named(void **state)
{
    (void)state;
    /* A pay body names the member at fault (one answer without a field
     * covered five of them), and the client is checked as consult checks
     * it (it was ignored). */
    expect_pay_field("{\"method_id\":\"CARD\"}", "trade_no");
    expect_pay_field("{\"trade_no\":\"T1\"}", "method_id");
    expect_pay_field("{\"trade_no\":\"T1\",\"method_id\":\"CARD\",\"coupon_id\":\"no spaces\"}",
                     "coupon_id");
    expect_pay_field("{\"trade_no\":\"T 1\",\"method_id\":\"CARD\"}", "trade_no");
    expect_pay_field("{\"trade_no\":\"T1\",\"method_id\":\"CARD\",\"buyer_id\":\"a/b\"}",
                     "buyer_id");
    expect_pay_field("{\"trade_no\":\"T1\",\"method_id\":\"CARD\",\"client\":{\"platform\":"
                     "\"TV\"}}",
                     "client.platform");
    expect_pay_field("{\"trade_no\":\"T1\",\"method_id\":\"CARD\",\"client\":\"web\"}", "client");
    expect_field_at("/v1/trades",
                    "{\"out_trade_no\":\"X\",\"product\":\"INSTANT\",\"amount\":1.5,"
                    "\"currency\":\"CNY\",\"subject\":\"s\"}",
                    "amount");
    /* Three capital letters that are no currency: a trade no channel would
     * ever take, refused up front. */
    expect_field_at("/v1/trades",
                    "{\"out_trade_no\":\"RMB1\",\"product\":\"INSTANT\",\"amount\":150,"
                    "\"currency\":\"RMB\",\"subject\":\"s\"}",
                    "currency");
    /* A notify_url with no host, or with a space, could never be called:
     * refused (it was taken, and every notification of the trade failed). */
    expect_field_at("/v1/trades",
                    "{\"out_trade_no\":\"URL1\",\"product\":\"INSTANT\",\"amount\":150,"
                    "\"currency\":\"CNY\",\"subject\":\"s\",\"notify_url\":\"https://\"}",
                    "notify_url");
    expect_field_at("/v1/trades",
                    "{\"out_trade_no\":\"URL2\",\"product\":\"INSTANT\",\"amount\":150,"
                    "\"currency\":\"CNY\",\"subject\":\"s\",\"notify_url\":\"https://x "
                    "y/n\"}",
                    "notify_url");
    expect(pc_t_call(&g_stack, &g_m, "POST", "/v1/trades", "not json", "k-nj"), 400,
           "INVALID_REQUEST");
    expect(pc_t_call(&g_stack, &g_m, "POST", "/v1/trades", trade_body("NOKEY", 1), NULL), 400,
           "INVALID_REQUEST");
    expect(pc_t_call(&g_stack, &g_m, "POST", "/v1/trades",
                     "{\"out_trade_no\":\"S1\",\"product\":\"INSTANT\",\"amount\":100,"
                     "\"currency\":\"CNY\",\"subject\":\"s\",\"splits\":[{\"account\":\"m_x\","
                     "\"amount\":101}]}",
                     "k-split"),
           422, "SPLIT_EXCEEDS_AMOUNT");
}

/* One key, one request, whichever endpoint: a key a consult answered is
 * refused to a trade (422), and a key a trade took is refused to a consult;
 * the trade's own replay still replays. */
static void test_key_used_by_consult_is_not_another_posts(void **state)
{
    (void)state;
    pc_t_resp_t r =
        pc_t_call(&g_stack, &g_m, "POST", "/v1/trades", trade_body("XK1", 700), "xk-trade");
    assert_int_equal(r.status, 201);
    char tn[64], consult[256];
    snprintf(tn, sizeof tn, "%s", pc_t_jstr(&r, "trade_no"));
    pc_t_resp_free(&r);
    snprintf(consult, sizeof consult, "{\"trade_no\":\"%s\",\"buyer_id\":\"u_42\"}", tn);
    r = pc_t_call(&g_stack, &g_m, "POST", "/v1/cashier/consult", consult, "xk-consult");
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    r = pc_t_call(&g_stack, &g_m, "POST", "/v1/trades", trade_body("XK2", 700), "xk-consult");
    assert_int_equal(r.status, 422);
    assert_string_equal(pc_t_errcode(&r), "IDEMPOTENCY_KEY_REUSED");
    pc_t_resp_free(&r);
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "SELECT count(*) FROM trades WHERE merchant_id = '%s' AND "
                                  "out_trade_no = 'XK2'",
                                  g_m.id),
                     0);
    r = pc_t_call(&g_stack, &g_m, "POST", "/v1/cashier/consult", consult, "xk-trade");
    assert_int_equal(r.status, 422);
    assert_string_equal(pc_t_errcode(&r), "IDEMPOTENCY_KEY_REUSED");
    pc_t_resp_free(&r);
    r = pc_t_call(&g_stack, &g_m, "POST", "/v1/trades", trade_body("XK1", 700), "xk-trade");
    assert_int_equal(r.status, 201);
    assert_non_null(pc_t_header(&r, "Idempotent-Replayed"));
    assert_string_equal(pc_t_jstr(&r, "trade_no"), tn);
    pc_t_resp_free(&r);
    r = pc_t_call(&g_stack, &g_m, "POST", "/v1/cashier/consult", consult, "xk-consult");
    assert_int_equal(r.status, 200);
    assert_non_null(pc_t_header(&r, "Idempotent-Replayed"));
    pc_t_resp_free(&r);
}

static void test_replay_returns_identical_answer(void **state)
{
    (void)state;
    pc_t_resp_t a = pc_t_call(&g_stack, &g_m, "POST", "/v1/trades", trade_body("I1", 700), "k-i1");
    assert_int_equal(a.status, 201);
    assert_null(pc_t_header(&a, "Idempotent-Replayed"));
    for (int i = 0; i < 3; i++) {
        pc_t_resp_t b =
            pc_t_call(&g_stack, &g_m, "POST", "/v1/trades", trade_body("I1", 700), "k-i1");
        assert_int_equal(b.status, 201);
        assert_string_equal(b.body, a.body);
        assert_non_null(pc_t_header(&b, "Idempotent-Replayed"));
        assert_string_equal(pc_t_header(&b, "Idempotent-Replayed"), "true");
        pc_t_resp_free(&b);
    }
    /* Same key, other body. */
    expect(pc_t_call(&g_stack, &g_m, "POST", "/v1/trades", trade_body("I1", 701), "k-i1"), 422,
           "IDEMPOTENCY_KEY_REUSED");
    /* A new key for the same out_trade_no is a business duplicate. */
    expect(pc_t_call(&g_stack, &g_m, "POST", "/v1/trades", trade_body("I1", 700), "k-i1b"), 409,
           "DUPLICATE_OUT_TRADE_NO");
    /* That answer is recorded too: the same request again replays it (the
     * refused transaction had carried the record, so it was written after). */
    pc_t_resp_t d = pc_t_call(&g_stack, &g_m, "POST", "/v1/trades", trade_body("I1", 700), "k-i1b");
    assert_int_equal(d.status, 409);
    assert_string_equal(pc_t_errcode(&d), "DUPLICATE_OUT_TRADE_NO");
    assert_non_null(pc_t_header(&d, "Idempotent-Replayed"));
    pc_t_resp_free(&d);
    assert_int_equal(
        pc_t_sql_int(&g_stack, "SELECT count(*) FROM trades WHERE out_trade_no = 'I1'"), 1);
    pc_t_resp_free(&a);
}

/* --- 50 concurrent identical requests over two processes --- */

typedef struct {
    pthread_barrier_t *barrier;
    const char *otn;
    const char *key;
    long status;
    char body[2048];
    char code[64];
} racer_t;

static void *race(void *arg)
{
    racer_t *r = arg;
    char body[512];
    snprintf(body, sizeof body,
             "{\"out_trade_no\":\"%s\",\"product\":\"INSTANT\",\"amount\":1234,"
             "\"currency\":\"CNY\",\"subject\":\"Coffee beans\",\"buyer_id\":\"u_42\"}",
             r->otn);
    pthread_barrier_wait(r->barrier);
    pc_t_resp_t resp = pc_t_call(&g_stack, &g_m, "POST", "/v1/trades", body, r->key);
    r->status = resp.status;
    snprintf(r->body, sizeof r->body, "%s", resp.body);
    snprintf(r->code, sizeof r->code, "%s", pc_t_errcode(&resp));
    pc_t_resp_free(&resp);
    return NULL;
}

static void run_race(const char *otn, const char *key, int n)
{
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, (unsigned)n);
    racer_t *rs = calloc((size_t)n, sizeof *rs);
    pthread_t *th = calloc((size_t)n, sizeof *th);
    for (int i = 0; i < n; i++) {
        rs[i].barrier = &barrier;
        rs[i].otn = otn;
        rs[i].key = key;
        pthread_create(&th[i], NULL, race, &rs[i]);
    }
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    /* Executed exactly once. */
    assert_int_equal(
        pc_t_sql_int(&g_stack, "SELECT count(*) FROM trades WHERE out_trade_no = '%s'", otn), 1);
    /* Every answer is the first answer or 409 REQUEST_IN_PROGRESS. */
    pc_t_resp_t first = pc_t_call(&g_stack, &g_m, "POST", "/v1/trades", trade_body(otn, 1234), key);
    assert_int_equal(first.status, 201);
    int ok = 0, busy = 0;
    for (int i = 0; i < n; i++) {
        if (rs[i].status == 201) {
            assert_string_equal(rs[i].body, first.body);
            ok++;
        } else {
            assert_int_equal(rs[i].status, 409);
            assert_string_equal(rs[i].code, "REQUEST_IN_PROGRESS");
            busy++;
        }
    }
    assert_true(ok >= 1);
    printf("race %s: %d answered with the trade, %d with 409\n", otn, ok, busy);
    pc_t_resp_free(&first);
    free(rs);
    free(th);
    pthread_barrier_destroy(&barrier);
}

static void test_50_concurrent_identical_requests_execute_once(void **state)
{
    (void)state;
    run_race("RACE1", "k-race-1", 50);
}

/* --- Redis down: PostgreSQL alone keeps requests single --- */

/* The node's answer to a signed GET of trade NOREDIS1 at ts with nonce. */
static pc_t_resp_t noredis1(long long ts, const char *nonce)
{
    return pc_t_call_raw(g_stack.http_port, g_m.id, g_m.secret, "GET",
                         "/v1/trades?out_trade_no=NOREDIS1", NULL, NULL, ts, nonce, NULL, NULL);
}

/* Waits until the one node left uses Redis (its /readyz says so). */
static void wait_redis_ready(void)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/readyz", g_stack.http_port);
    int up = 0;
    for (int i = 0; i < 200 && !up; i++) {
        pc_t_resp_t r = pc_t_http("GET", url, NULL, NULL);
        up = r.body && strstr(r.body, "\"redis\":\"ok\"") != NULL;
        pc_t_resp_free(&r);
        if (!up)
            usleep(50000);
    }
    assert_true(up);
}

/* Restarts the private Redis (it keeps nothing) and waits until the node
 * has reconnected. */
static void restart_redis(const char *dir, int port)
{
    pc_t_sh("%s/scripts/services redis-stop %s", pc_t_source_dir(), dir);
    assert_int_equal(pc_t_sh("%s/scripts/services redis-start %s %d", pc_t_source_dir(), dir, port),
                     0);
    wait_redis_ready();
}

/* A signed GET of path, sent again while the node answers 503 (its
 * fallback mark not stored yet), for up to 3 s; the last answer. */
static pc_t_resp_t call_past_503(int port, const char *path, long long ts, const char *nonce)
{
    pc_t_resp_t r = {0};
    for (int i = 0; i < 30; i++) {
        r = pc_t_call_raw(port, g_m.id, g_m.secret, "GET", path, NULL, NULL, ts, nonce, NULL, NULL);
        if (r.status != 503 || !r.body || !strstr(r.body, "switching to its fallback"))
            break;
        pc_t_resp_free(&r);
        usleep(100000);
    }
    return r;
}

/* A signed GET of path with nonce, taken on the node at port taken (404:
 * no such trade), then the same request at port replay: refused as a nonce
 * used before. */
static void taken_then_replayed(int taken, int replay, const char *path, long long ts,
                                const char *nonce)
{
    pc_t_resp_t r =
        pc_t_call_raw(taken, g_m.id, g_m.secret, "GET", path, NULL, NULL, ts, nonce, NULL, NULL);
    assert_int_equal(r.status, 404);
    pc_t_resp_free(&r);
    expect(
        pc_t_call_raw(replay, g_m.id, g_m.secret, "GET", path, NULL, NULL, ts, nonce, NULL, NULL),
        401, "NONCE_REUSED");
}

/* Only one node loses Redis (its link, a partition, Redis's client limit):
 * node 1 records nonces in PostgreSQL only, node 0 in Redis. A request taken
 * on either, replayed to the other within its window, is refused. Before,
 * node 0 never looked at PostgreSQL and node 1 never at Redis: both replays
 * ran again. */
static void test_a_node_cut_off_from_redis_shares_its_nonces(void **state)
{
    (void)state;
    pc_stack_stop(&g_stack);
    pc_stack_init(&g_stack, "auth_partial");
    pc_stack_start_node(&g_stack, 0);
    int cut_port = pc_t_free_port(), dead = pc_t_free_port();
    char url[128], port[16];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", dead);
    snprintf(port, sizeof port, "%d", cut_port);
    pc_stack_env(&g_stack, "PAYCORE_REDIS_URL", url);
    pc_stack_env(&g_stack, "PAYCORE_HTTP_PORT", port);
    pc_stack_env(&g_stack, "PAYCORE_READY_WITHOUT_REDIS", "true");
    pc_stack_start_node(&g_stack, 1);
    g_m = pc_t_create_merchant(&g_stack, NULL);
    const char *path = "/v1/trades?out_trade_no=PARTIAL0";
    /* Taken on node 0 (Redis) before node 1 has said it is cut off, replayed
     * to node 1: refused (signed before node 1 began taking nonces in
     * PostgreSQL, and node 0 could not know). */
    long long now = (long long)time(NULL);
    pc_t_resp_t r = pc_t_call_raw(g_stack.http_port, g_m.id, g_m.secret, "GET", path, NULL, NULL,
                                  now, "nonce-partial-0000", NULL, NULL);
    assert_int_equal(r.status, 404);
    pc_t_resp_free(&r);
    /* Its first request switches it to its fallback: not served until the
     * mark is stored (503), then refused as signed too early. */
    expect(pc_t_call_raw(cut_port, g_m.id, g_m.secret, "GET", path, NULL, NULL, now,
                         "nonce-partial-0000", NULL, NULL),
           503, "UNAVAILABLE");
    expect_resign(call_past_503(cut_port, path, now, "nonce-partial-0000"));
    sleep(4); /* node 1's settling time; node 0 reads its mark */
    /* Taken on the cut-off node (PostgreSQL), replayed to node 0; taken on
     * node 0 (Redis), replayed to the cut-off node. */
    now = (long long)time(NULL);
    taken_then_replayed(cut_port, g_stack.http_port, path, now, "nonce-partial-0001");
    taken_then_replayed(g_stack.http_port, cut_port, path, now, "nonce-partial-0002");

    /* The cut-off node's notice lapses (it took no request for its
     * lifetime: the same state): node 0 goes back to Redis only, and takes
     * a request there. Replayed to the cut-off node, it is refused: that
     * node finds its notice lapsed when it renews it, and marks afresh with
     * a first mark's settling time. Before, it took the replay (404 here:
     * run again). */
    free(
        pc_t_sql(&g_stack,
                 "UPDATE auth_nonce_fallback SET until = now() - interval '1 second' RETURNING 1"));
    sleep(6); /* node 0 reads it; the cut-off node's next nonce renews its mark */
    now = (long long)time(NULL);
    pc_t_resp_t t = pc_t_call_raw(g_stack.http_port, g_m.id, g_m.secret, "GET", path, NULL, NULL,
                                  now, "nonce-partial-0003", NULL, NULL);
    assert_int_equal(t.status, 404);
    pc_t_resp_free(&t);
    expect_resign(call_past_503(cut_port, path, now, "nonce-partial-0003"));
    sleep(4);
    now = (long long)time(NULL);
    taken_then_replayed(g_stack.http_port, cut_port, path, now, "nonce-partial-0004");
}

/* On the stack the test above left (node 1 without Redis, so without the
 * switch notice): a channel switched off through node 0 is off on node 1
 * within a second and a half (its fallback read runs every second; it ran
 * every 5 s). */
static int channel_enabled_on(int node, const char *id)
{
    pc_t_resp_t r = pc_t_admin_node(&g_stack, node, "GET", "/admin/channels", NULL);
    json_t *j = pc_t_json(&r);
    pc_t_resp_free(&r);
    int enabled = -1;
    size_t i;
    json_t *ch;
    json_array_foreach(json_object_get(j, "channels"), i, ch)
    {
        const char *cid = json_string_value(json_object_get(ch, "channel_id"));
        if (cid && !strcmp(cid, id))
            enabled = json_is_true(json_object_get(ch, "enabled"));
    }
    json_decref(j);
    return enabled;
}

static void test_a_switch_reaches_a_node_without_redis_within_a_second(void **state)
{
    (void)state;
    assert_int_equal(channel_enabled_on(1, "sim_wallet"), 1);
    /* Off, then on 2.5 s later: each must reach node 1 within 1.5 s. A
     * read every 5 s cannot fall in both windows. */
    static const char *const paths[] = {"/admin/channels/sim_wallet/disable",
                                        "/admin/channels/sim_wallet/enable"};
    for (int round = 0; round < 2; round++) {
        uint64_t t0 = uv_hrtime();
        pc_t_resp_t r = pc_t_admin(&g_stack, "POST", paths[round], NULL);
        assert_int_equal(r.status, 200);
        pc_t_resp_free(&r);
        int want = round == 1, seen = 0;
        while (!seen && uv_hrtime() - t0 < 1500000000ull) {
            seen = channel_enabled_on(1, "sim_wallet") == want;
            if (!seen)
                usleep(50000);
        }
        /* Node 0, which made it, has it at once. */
        assert_int_equal(channel_enabled_on(0, "sim_wallet"), want);
        if (!seen)
            fail_msg("switch %d: node 1 did not have it 1.5 s later", round);
        while (uv_hrtime() - t0 < 2500000000ull)
            usleep(50000);
    }
}

/* Once Redis is unreachable, each node switches to its fallback with its
 * first request (it answers 503 until it has told the others, in
 * PostgreSQL): two dozen requests on new connections reach every node. */
static void enter_fallback(void)
{
    for (int i = 0; i < 24; i++) {
        char warm[40];
        snprintf(warm, sizeof warm, "nonce-warm-%lld-%02d", (long long)time(NULL), i);
        pc_t_resp_t w = pc_t_call_raw(g_stack.http_port, g_m.id, g_m.secret, "GET",
                                      "/v1/trades?out_trade_no=NOREDIS0", NULL, NULL,
                                      (long long)time(NULL), warm, NULL, NULL);
        pc_t_resp_free(&w);
    }
}

static void test_redis_down_still_executes_once(void **state)
{
    (void)state;
    /* A stack of its own with a private Redis that the test stops. */
    char dir[256];
    snprintf(dir, sizeof dir, "%s/test-redis-%d", pc_t_binary_dir(), (int)getpid());
    int port = pc_t_free_port();
    assert_int_equal(pc_t_sh("%s/scripts/services redis-start %s %d", pc_t_source_dir(), dir, port),
                     0);
    pc_stack_stop(&g_stack);
    pc_stack_init(&g_stack, "auth_noredis");
    char url[128];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", port);
    pc_stack_env(&g_stack, "PAYCORE_REDIS_URL", url);
    /* These nodes serve without Redis, and say so to a load balancer. */
    pc_stack_env(&g_stack, "PAYCORE_READY_WITHOUT_REDIS", "true");
    pc_stack_start_node(&g_stack, 0);
    pc_stack_start_node(&g_stack, 1);
    g_m = pc_t_create_merchant(&g_stack, NULL);
    /* A request taken through Redis, replayed once Redis is unreachable:
     * PostgreSQL never saw its nonce. Refused (signed before Redis last
     * answered), not run again. */
    long long t0 = (long long)time(NULL);
    pc_t_resp_t pre = pc_t_call_raw(g_stack.http_port, g_m.id, g_m.secret, "GET",
                                    "/v1/trades?out_trade_no=NOREDIS0", NULL, NULL, t0,
                                    "nonce-noredis-pre001", NULL, NULL);
    assert_int_equal(pre.status, 404);
    pc_t_resp_free(&pre);
    usleep(2100000); /* Redis answers the nodes' PINGs meanwhile */
    pc_t_sh("%s/scripts/services redis-stop %s", pc_t_source_dir(), dir);
    usleep(300000);
    enter_fallback();
    expect_resign(call_past_503(g_stack.http_port, "/v1/trades?out_trade_no=NOREDIS0", t0,
                                "nonce-noredis-pre001"));
    sleep(4); /* past each node's first seconds without Redis */
    char ready[128];
    snprintf(ready, sizeof ready, "http://127.0.0.1:%d/readyz", g_stack.admin_port[0]);
    pc_t_resp_t rz = pc_t_http("GET", ready, NULL, NULL);
    assert_int_equal(rz.status, 200);
    assert_non_null(strstr(rz.body, "\"redis\":\"down\""));
    pc_t_resp_free(&rz);
    run_race("NOREDIS1", "k-noredis-1", 20);
    /* Nonces stay single-use through the PostgreSQL fallback. */
    long long now = (long long)time(NULL);
    pc_t_resp_t r = noredis1(now, "nonce-noredis-000001");
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    expect(noredis1(now, "nonce-noredis-000001"), 401, "NONCE_REUSED");

    /* Risk cannot read the velocity counters: a payment is not accepted as
     * if nobody had tried anything (before: counts of 0, ACCEPT). The
     * default rule holds it for review (a card would be challenged). */
    char tbody[256], pbody[512], tn[40];
    snprintf(tbody, sizeof tbody,
             "{\"out_trade_no\":\"NOREDIS-VEL\",\"product\":\"INSTANT\",\"amount\":1200,"
             "\"currency\":\"CNY\",\"subject\":\"Goods\",\"buyer_id\":\"u_noredis\"}");
    pc_t_resp_t tr = pc_t_call(&g_stack, &g_m, "POST", "/v1/trades", tbody, "k-noredis-vel-t");
    assert_int_equal(tr.status, 201);
    snprintf(tn, sizeof tn, "%s", pc_t_jstr(&tr, "trade_no"));
    pc_t_resp_free(&tr);
    snprintf(pbody, sizeof pbody,
             "{\"trade_no\":\"%s\",\"buyer_id\":\"u_noredis\",\"method_id\":\"VA\","
             "\"client\":{\"ip\":\"10.7.0.1\",\"device_id\":\"dev-noredis\",\"platform\":"
             "\"WEB\"}}",
             tn);
    tr = pc_t_call(&g_stack, &g_m, "POST", "/v1/cashier/pay", pbody, "k-noredis-vel-p");
    if (tr.status != 200)
        fprintf(stderr, "pay: %ld %s\n", tr.status, tr.body);
    assert_int_equal(tr.status, 200);
    assert_string_equal(pc_t_jstr(&tr, "status"), "REVIEW");
    assert_non_null(strstr(tr.body, "VELOCITY_UNKNOWN"));
    pc_t_resp_free(&tr);

    /* Redis comes back empty. The request whose nonce only PostgreSQL
     * recorded, replayed within its timestamp window: refused, not run. One
     * node from here, so that every request meets the Redis it reconnected. */
    pc_stack_stop_node(&g_stack, 1, SIGTERM);
    restart_redis(dir, port);
    expect_resign(noredis1(now, "nonce-noredis-000001"));

    /* A request taken with Redis up, then Redis restarts and forgets its
     * nonce: the replay is refused as well. */
    sleep(2);
    long long t2 = (long long)time(NULL);
    r = pc_t_call_raw(g_stack.http_port, g_m.id, g_m.secret, "GET",
                      "/v1/trades?out_trade_no=NOREDIS1", NULL, NULL, t2, "nonce-noredis-000002",
                      NULL, NULL);
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    sleep(2);
    restart_redis(dir, port);
    expect_resign(noredis1(t2, "nonce-noredis-000002"));
    /* Requests signed now pass. */
    r = noredis1((long long)time(NULL) + 1, "nonce-noredis-000003");
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);

    /* Redis is away for a while and comes back with its memory (saved to
     * disk here, as a persistent Redis would). A request from a merchant
     * whose clock runs 200 s ahead goes through PostgreSQL meanwhile. Once
     * Redis is back, requests signed from the next second pass (the outage
     * locks nobody out; a restarted Redis raises the floor to it, below),
     * and the nonce taken during it was given to Redis: its replay is
     * refused. */
    assert_int_equal(pc_t_sh("redis-cli -p %d SAVE >/dev/null", port), 0);
    pc_t_sh("%s/scripts/services redis-stop %s", pc_t_source_dir(), dir);
    usleep(300000);
    enter_fallback();
    long long ahead = (long long)time(NULL) + 200;
    r = call_past_503(g_stack.http_port, "/v1/trades?out_trade_no=NOREDIS1", ahead,
                      "nonce-noredis-000004");
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    /* A busy outage leaves many nonces (other nodes' too): the copy goes
     * page by page and misses none. */
    assert_int_equal(pc_t_sql_int(&g_stack,
                                  "WITH x AS (INSERT INTO auth_nonces SELECT 'm_copy', "
                                  "'nonce-copy-' || lpad(i::text, 6, '0'), now() + interval "
                                  "'600 seconds' FROM generate_series(1, 4500) i RETURNING 1) "
                                  "SELECT count(*) FROM x"),
                     4500);
    assert_int_equal(pc_t_sh("%s/scripts/services redis-start %s %d", pc_t_source_dir(), dir, port),
                     0);
    wait_redis_ready();
    r = noredis1((long long)time(NULL) + 1, "nonce-noredis-000005");
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    usleep(300000); /* the copy back into Redis is on its way */
    expect(noredis1(ahead, "nonce-noredis-000004"), 401, "NONCE_REUSED");
    int copied = 0;
    for (int i = 0; i < 100 && !copied; i++) {
        copied =
            pc_t_sh("redis-cli -p %d EXISTS '%snonce:m_copy:nonce-copy-000001' "
                    "'%snonce:m_copy:nonce-copy-002001' '%snonce:m_copy:nonce-copy-004500' "
                    "| grep -qx 3",
                    port, g_stack.redis_prefix, g_stack.redis_prefix, g_stack.redis_prefix) == 0;
        if (!copied)
            usleep(50000);
    }
    assert_true(copied);

    /* Redis restarted from an older snapshot: it keeps its floor but not a
     * nonce taken after the snapshot, whose request was replayable (200).
     * Its run_id is new: the floor is raised, the replay refused. (Long
     * after the outage above: the nodes no longer record nonces in
     * PostgreSQL too.) */
    free(pc_t_sql(&g_stack, "UPDATE auth_nonce_fallback SET until = now() - interval '1 second' "
                            "RETURNING 1"));
    sleep(2);
    assert_int_equal(pc_t_sh("redis-cli -p %d SAVE >/dev/null", port), 0);
    long long t3 = (long long)time(NULL);
    r = pc_t_call_raw(g_stack.http_port, g_m.id, g_m.secret, "GET",
                      "/v1/trades?out_trade_no=NOREDIS1", NULL, NULL, t3, "nonce-noredis-000006",
                      NULL, NULL);
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    pc_t_sh("%s/scripts/services redis-stop %s", pc_t_source_dir(), dir);
    assert_int_equal(pc_t_sh("%s/scripts/services redis-start %s %d", pc_t_source_dir(), dir, port),
                     0);
    wait_redis_ready();
    expect_resign(noredis1(t3, "nonce-noredis-000006"));
    r = noredis1((long long)time(NULL) + 1, "nonce-noredis-000007");
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);

    /* Redis answers with errors (out of memory here; read-only or loading
     * the same) while it still answers PINGs. A request taken through it
     * just before, replayed now: refused (signed before its last good
     * answer), not run again; signed again it passes, and its nonce, kept
     * in PostgreSQL, is single-use. Before, the replay ran (PostgreSQL had
     * never seen its nonce). */
    sleep(1);
    long long t4 = (long long)time(NULL);
    r = noredis1(t4, "nonce-noredis-000008");
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    sleep(1);
    assert_int_equal(pc_t_sh("redis-cli -p %d CONFIG SET maxmemory-policy noeviction >/dev/null "
                             "&& redis-cli -p %d CONFIG SET maxmemory 1 >/dev/null",
                             port, port),
                     0);
    expect_resign(call_past_503(g_stack.http_port, "/v1/trades?out_trade_no=NOREDIS1", t4,
                                "nonce-noredis-000008"));
    /* The node met errors: it said so in PostgreSQL (as a node cut off
     * does), and takes no request signed before the other nodes can know
     * it, here one signed a second after the errors began. Before, it took
     * it at once (another node's Redis may answer well, and have taken
     * it). */
    long long t5 = (long long)time(NULL) + 1;
    expect_resign(noredis1(t5, "nonce-noredis-000009"));
    sleep(4);
    t5 = (long long)time(NULL);
    r = noredis1(t5, "nonce-noredis-000010");
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    expect(noredis1(t5, "nonce-noredis-000010"), 401, "NONCE_REUSED");
    assert_int_equal(pc_t_sh("redis-cli -p %d CONFIG SET maxmemory 0 >/dev/null", port), 0);
    pc_t_sh("%s/scripts/services redis-stop %s", pc_t_source_dir(), dir);
    pc_t_sh("rm -rf %s", dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_hmac_request_passes),
        cmocka_unit_test(test_valid_rsa2_request_passes),
        cmocka_unit_test(test_an_8192_bit_rsa2_key_signs_requests),
        cmocka_unit_test(test_rotation_keeps_the_previous_secret_for_its_grace_period),
        cmocka_unit_test(test_rsa2_merchant_replaces_its_public_key),
        cmocka_unit_test(test_bad_signatures_are_refused),
        cmocka_unit_test(test_other_spellings_of_a_path_reach_no_route),
        cmocka_unit_test(test_reused_nonce_is_refused),
        cmocka_unit_test(test_unknown_and_disabled_merchants_are_refused),
        cmocka_unit_test(test_merchant_cannot_read_another_merchants_trade),
        cmocka_unit_test(test_product_not_allowed),
        cmocka_unit_test(test_escapes_that_are_not_text_get_400),
        cmocka_unit_test(test_invalid_fields_are_named),
        cmocka_unit_test(test_replay_returns_identical_answer),
        cmocka_unit_test(test_key_used_by_consult_is_not_another_posts),
        cmocka_unit_test(test_50_concurrent_identical_requests_execute_once),
        cmocka_unit_test(test_a_node_cut_off_from_redis_shares_its_nonces),
        cmocka_unit_test(test_a_switch_reaches_a_node_without_redis_within_a_second),
        cmocka_unit_test(test_redis_down_still_executes_once),
    };
    return cmocka_run_group_tests_name("auth", tests, setup, teardown);
}
