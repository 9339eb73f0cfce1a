/* The finer points of issue 12 that are not payouts, against a real paycore,
 * PostgreSQL, Redis and paysim: return_url on trade creation (only http(s)
 * URLs are taken) and the hosted cashier's way back to it
 * (GET /cashier/{token}/api/return: nothing until the trade is final, then
 * the URL with trade_no, status, timestamp and an HMAC the merchant checks). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "harness.h"

#include "auth/sign.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

static pc_stack_t g_stack;
static pc_t_merchant_t g_m;
static int g_seq;

static int setup(void **state)
{
    (void)state;
    pc_stack_init(&g_stack, "finer");
    /* The tests reach the node from loopback, as a TLS proxy would. */
    pc_stack_env(&g_stack, "PAYCORE_TRUSTED_PROXIES", "127.0.0.1");
    pc_stack_start_paysim(&g_stack);
    pc_stack_start_node(&g_stack, 0);
    g_m = pc_t_create_merchant(&g_stack, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    pc_stack_stop(&g_stack);
    return 0;
}

/* POST /v1/trades with return_url_json (a JSON value, or NULL for none). */
static pc_t_resp_t create_trade(const char *return_url_json)
{
    char body[2048], key[64];
    g_seq++;
    snprintf(body, sizeof body,
             "{\"out_trade_no\":\"FP%d-%d\",\"product\":\"INSTANT\",\"amount\":1200,\"currency\":"
             "\"CNY\",\"subject\":\"Goods\"%s%s}",
             g_seq, (int)getpid(), return_url_json ? ",\"return_url\":" : "",
             return_url_json ? return_url_json : "");
    snprintf(key, sizeof key, "fp-trade-%d", g_seq);
    return pc_t_call(&g_stack, &g_m, "POST", "/v1/trades", body, key);
}

static void expect_return_url_refused(const char *json_value)
{
    pc_t_resp_t r = create_trade(json_value);
    if (r.status != 400)
        fprintf(stderr, "return_url %s: %ld %s\n", json_value, r.status, r.body);
    assert_int_equal(r.status, 400);
    assert_string_equal(pc_t_errcode(&r), "INVALID_REQUEST");
    json_t *j = pc_t_json(&r);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "field")),
                        "return_url");
    json_decref(j);
    pc_t_resp_free(&r);
}

static void test_return_url_that_is_not_http_is_refused(void **state)
{
    (void)state;
    expect_return_url_refused("\"javascript:alert(1)\"");
    expect_return_url_refused("\"ftp://shop.example/back\"");
    expect_return_url_refused("\"//shop.example/back\"");
    expect_return_url_refused("\"http://\"");
    expect_return_url_refused("\"https:///back\"");
    expect_return_url_refused("\"https://shop.example/a b\"");
    expect_return_url_refused("\"\"");
    expect_return_url_refused("42");
    char longer[600];
    snprintf(longer, sizeof longer, "\"https://shop.example/%0500d\"", 0);
    expect_return_url_refused(longer);
    long long before =
        pc_t_sql_int(&g_stack, "SELECT count(*) FROM trades WHERE merchant_id = '%s'", g_m.id);
    assert_int_equal(before, 0);
    /* A good one is kept with the trade. */
    pc_t_resp_t r = create_trade("\"https://shop.example/back?o=1\"");
    assert_int_equal(r.status, 201);
    char *kept = pc_t_sql(&g_stack, "SELECT return_url FROM trades WHERE trade_no = '%s'",
                          pc_t_jstr(&r, "trade_no"));
    assert_string_equal(kept, "https://shop.example/back?o=1");
    free(kept);
    pc_t_resp_free(&r);
}

/* The value of query parameter name in url (static buffer; "" when absent). */
static const char *query_param(const char *url, const char *name)
{
    static char out[256];
    out[0] = 0;
    const char *q = strchr(url, '?');
    size_t n = strlen(name);
    for (const char *p = q; p && *p;) {
        p++;
        if (!strncmp(p, name, n) && p[n] == '=') {
            size_t len = strcspn(p + n + 1, "&#");
            snprintf(out, sizeof out, "%.*s", (int)len, p + n + 1);
            return out;
        }
        p = strchr(p, '&');
    }
    return out;
}

static void test_cashier_return_is_signed_once_the_trade_is_paid(void **state)
{
    (void)state;
    pc_t_resp_t r = create_trade("\"https://shop.example/back?o=7#done\"");
    assert_int_equal(r.status, 201);
    char tn[40], url[1100];
    snprintf(tn, sizeof tn, "%s", pc_t_jstr(&r, "trade_no"));
    snprintf(url, sizeof url, "%s/api/return", pc_t_jstr(&r, "cashier_url"));
    pc_t_resp_free(&r);
    /* Waiting for payment: not final, no way back yet. */
    r = pc_t_http("GET", url, NULL, NULL);
    assert_int_equal(r.status, 409);
    assert_string_equal(pc_t_errcode(&r), "INVALID_STATE");
    pc_t_resp_free(&r);
    char st[24], pno[48];
    snprintf(pno, sizeof pno, "PFP%d-%d", (int)getpid(), ++g_seq);
    assert_int_equal(
        pc_t_mark_paid(&g_stack, tn, pno, 1200, "CNY", "channel:sim_card:clearing:CNY", st), 0);
    r = pc_t_http("GET", url, NULL, NULL);
    assert_int_equal(r.status, 200);
    char back[1100];
    snprintf(back, sizeof back, "%s", pc_t_jstr(&r, "url"));
    pc_t_resp_free(&r);
    assert_true(!strncmp(back, "https://shop.example/back?o=7&trade_no=", 39));
    assert_non_null(strstr(back, "#done"));
    assert_string_equal(query_param(back, "trade_no"), tn);
    assert_string_equal(query_param(back, "status"), "SUCCESS");
    char ts[24];
    snprintf(ts, sizeof ts, "%s", query_param(back, "timestamp"));
    assert_true(llabs(atoll(ts) - (long long)time(NULL)) < 300);
    /* The merchant's check: base64url(HMAC-SHA256(secret,
     * "trade_no\nstatus\ntimestamp\n")). */
    char msg[160];
    snprintf(msg, sizeof msg, "%s\nSUCCESS\n%s\n", tn, ts);
    uint8_t mac[PC_SHA256_LEN];
    assert_int_equal(pc_hmac_sha256(g_m.secret, strlen(g_m.secret), msg, strlen(msg), mac), 0);
    char *want = pc_base64url_encode(mac, sizeof mac);
    assert_string_equal(query_param(back, "signature"), want);
    free(want);
    /* Asked again a day later (a kept or forwarded link): the moment it was
     * paid, not a fresh one the shop would take for a buyer who just paid. */
    free(pc_t_sql(&g_stack,
                  "UPDATE trades SET paid_at = paid_at - interval '1 day' WHERE trade_no = '%s' "
                  "RETURNING 1",
                  tn));
    r = pc_t_http("GET", url, NULL, NULL);
    assert_int_equal(r.status, 200);
    snprintf(back, sizeof back, "%s", pc_t_jstr(&r, "url"));
    pc_t_resp_free(&r);
    assert_true(llabs(atoll(query_param(back, "timestamp")) - (atoll(ts) - 86400)) <= 1);
    /* A trade without return_url has nowhere to go. */
    r = create_trade(NULL);
    snprintf(url, sizeof url, "%s/api/return", pc_t_jstr(&r, "cashier_url"));
    pc_t_resp_free(&r);
    r = pc_t_http("GET", url, NULL, NULL);
    assert_int_equal(r.status, 404);
    pc_t_resp_free(&r);
}

static long long bal(const char *account)
{
    return pc_t_sql_int(&g_stack, "SELECT coalesce(ledger_balance('%s'), 0)", account);
}

static pc_t_resp_t recharge_trade(const pc_t_merchant_t *m, const char *product, const char *buyer,
                                  const char *type)
{
    char body[512], key[64];
    g_seq++;
    snprintf(body, sizeof body,
             "{\"out_trade_no\":\"FPR%d-%d\",\"product\":\"%s\",\"amount\":5000,\"currency\":"
             "\"CNY\",\"subject\":\"Credit\",\"buyer_id\":\"%s\",\"account_type\":\"%s\"}",
             g_seq, (int)getpid(), product, buyer, type);
    snprintf(key, sizeof key, "fp-rc-%d", g_seq);
    return pc_t_call(&g_stack, m, "POST", "/v1/trades", body, key);
}

/* An INSTANT trade of amount for buyer at merchant m (Idempotency-Key key):
 * its number into tn. */
static void instant_trade(pc_t_merchant_t *m, long amount, const char *buyer, const char *key,
                          char tn[40])
{
    char body[256];
    snprintf(body, sizeof body,
             "{\"out_trade_no\":\"FPI%d\",\"product\":\"INSTANT\",\"amount\":%ld,"
             "\"currency\":\"CNY\",\"subject\":\"s\",\"buyer_id\":\"%s\"}",
             ++g_seq, amount, buyer);
    pc_t_resp_t r = pc_t_call(&g_stack, m, "POST", "/v1/trades", body, key);
    assert_int_equal(r.status, 201);
    snprintf(tn, 40, "%s", pc_t_jstr(&r, "trade_no"));
    pc_t_resp_free(&r);
}

/* Pays trade tn of buyer at merchant m from the buyer's "credit" account. */
static pc_t_resp_t pay_from_credit(pc_t_merchant_t *m, const char *tn, const char *buyer,
                                   const char *key)
{
    char body[256];
    snprintf(body, sizeof body,
             "{\"trade_no\":\"%s\",\"buyer_id\":\"%s\",\"method_id\":\"BALANCE:credit\"}", tn,
             buyer);
    return pc_t_call(&g_stack, m, "POST", "/v1/cashier/pay", body, key);
}

static void test_recharge_into_an_account_type(void **state)
{
    (void)state;
    char buyer[32], body[96], path[128];
    snprintf(buyer, sizeof buyer, "fpb_%d", (int)getpid());
    snprintf(body, sizeof body, "{\"buyer_id\":\"%s\"}", buyer);
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", "/admin/buyers", body);
    assert_int_equal(r.status, 201);
    pc_t_resp_free(&r);
    /* Not configured yet: refused. */
    r = recharge_trade(&g_m, "RECHARGE", buyer, "credit");
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "account_type"));
    pc_t_resp_free(&r);
    snprintf(path, sizeof path, "/admin/merchants/%s/account-types", g_m.id);
    r = pc_t_admin(&g_stack, "POST", path, "{\"account_type\":\"credit\"}");
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    r = pc_t_admin(&g_stack, "POST", path, "{\"account_type\":\"credit\"}");
    assert_int_equal(r.status, 200); /* again: no error */
    pc_t_resp_free(&r);
    r = pc_t_admin(&g_stack, "POST", path, "{\"account_type\":\"no spaces\"}");
    assert_int_equal(r.status, 400);
    pc_t_resp_free(&r);
    r = pc_t_admin(&g_stack, "POST", "/admin/merchants/M_nobody/account-types",
                   "{\"account_type\":\"credit\"}");
    assert_int_equal(r.status, 404);
    pc_t_resp_free(&r);
    /* Only RECHARGE trades name an account type. */
    r = recharge_trade(&g_m, "INSTANT", buyer, "credit");
    assert_int_equal(r.status, 400);
    pc_t_resp_free(&r);
    /* Another merchant cannot use this merchant's type. */
    pc_t_merchant_t other = pc_t_create_merchant(&g_stack, NULL);
    r = recharge_trade(&other, "RECHARGE", buyer, "credit");
    assert_int_equal(r.status, 400);
    pc_t_resp_free(&r);

    r = recharge_trade(&g_m, "RECHARGE", buyer, "credit");
    assert_int_equal(r.status, 201);
    assert_string_equal(pc_t_jstr(&r, "account_type"), "credit");
    char tn[40], st[24], pno[48];
    snprintf(tn, sizeof tn, "%s", pc_t_jstr(&r, "trade_no"));
    pc_t_resp_free(&r);
    snprintf(pno, sizeof pno, "PFR%d-%d", (int)getpid(), ++g_seq);
    assert_int_equal(
        pc_t_mark_paid(&g_stack, tn, pno, 5000, "CNY", "channel:sim_card:clearing:CNY", st), 0);
    assert_string_equal(st, "TRADE_SUCCESS");
    char typed[160], plain[96];
    snprintf(typed, sizeof typed, "buyer:%s@%s.credit:wallet:CNY", buyer, g_m.id);
    snprintf(plain, sizeof plain, "buyer:%s:wallet:CNY", buyer);
    assert_int_equal(bal(typed), 5000);
    assert_int_equal(bal(plain), 0);
    assert_true(pc_t_ledger_ok(&g_stack));

    /* Spend it through BALANCE at this merchant. */
    char body2[512];
    instant_trade(&g_m, 1200, buyer, "fps-t1", tn);
    snprintf(body2, sizeof body2, "{\"trade_no\":\"%s\",\"buyer_id\":\"%s\"}", tn, buyer);
    r = pc_t_call(&g_stack, &g_m, "POST", "/v1/cashier/consult", body2, "fps-c1");
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"BALANCE:credit\""));
    pc_t_resp_free(&r);
    r = pay_from_credit(&g_m, tn, buyer, "fps-p1");
    assert_int_equal(r.status, 200);
    assert_string_equal(pc_t_jstr(&r, "status"), "SUCCESS");
    pc_t_resp_free(&r);
    assert_int_equal(bal(typed), 3800);
    assert_int_equal(bal(plain), 0);
    /* Not at another merchant. */
    char tn2[40];
    instant_trade(&other, 100, buyer, "fps-t2", tn2);
    r = pay_from_credit(&other, tn2, buyer, "fps-p2");
    assert_int_equal(r.status, 400);
    pc_t_resp_free(&r);
    assert_int_equal(bal(typed), 3800);
    /* A buyer id so long that its typed wallet has no account id: no such
     * account type (before, the owner was cut to fit and named another
     * account). */
    char longb[64];
    snprintf(longb, sizeof longb, "%s-%056d", "lb", ++g_seq);
    snprintf(body2, sizeof body2, "{\"buyer_id\":\"%s\"}", longb);
    r = pc_t_admin(&g_stack, "POST", "/admin/buyers", body2);
    assert_int_equal(r.status, 201);
    pc_t_resp_free(&r);
    instant_trade(&g_m, 100, longb, "fps-t9", tn2);
    r = pay_from_credit(&g_m, tn2, longb, "fps-p9");
    if (r.status != 400 || !strstr(r.body, "no such account type"))
        fail_msg("a typed wallet without an account id: %ld %s", r.status, r.body);
    pc_t_resp_free(&r);
    /* A refund of the balance part goes back to the same typed wallet. */
    snprintf(body2, sizeof body2,
             "{\"trade_no\":\"%s\",\"out_refund_no\":\"FPR%d\",\"amount\":1200}", tn, ++g_seq);
    r = pc_t_call(&g_stack, &g_m, "POST", "/v1/refunds", body2, "fps-r1");
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    for (int i = 0; i < 100 && bal(typed) != 5000; i++)
        usleep(50000);
    assert_int_equal(bal(typed), 5000);
    assert_int_equal(bal(plain), 0);

    /* A recharge paid by card is refunded out of the typed wallet it
     * credited, not out of the plain one (which before paid it, or, empty,
     * left the recharge unrefundable). */
    r = recharge_trade(&g_m, "RECHARGE", buyer, "credit");
    assert_int_equal(r.status, 201);
    snprintf(tn, sizeof tn, "%s", pc_t_jstr(&r, "trade_no"));
    pc_t_resp_free(&r);
    snprintf(body2, sizeof body2,
             "{\"trade_no\":\"%s\",\"buyer_id\":\"%s\",\"method_id\":\"CARD\",\"card\":{"
             "\"pan\":\"5555555555554444\",\"exp_month\":12,\"exp_year\":2030,\"cvv\":"
             "\"123\"}}",
             tn, buyer);
    r = pc_t_call(&g_stack, &g_m, "POST", "/v1/cashier/pay", body2, "fps-p3");
    if (r.status != 200)
        fprintf(stderr, "recharge pay: %ld %s\n", r.status, r.body);
    assert_string_equal(pc_t_jstr(&r, "status"), "SUCCESS");
    pc_t_resp_free(&r);
    assert_int_equal(bal(typed), 10000);
    snprintf(body2, sizeof body2,
             "{\"trade_no\":\"%s\",\"out_refund_no\":\"FPR%d\",\"amount\":2000}", tn, ++g_seq);
    r = pc_t_call(&g_stack, &g_m, "POST", "/v1/refunds", body2, "fps-r2");
    if (r.status != 200)
        fprintf(stderr, "recharge refund: %ld %s\n", r.status, r.body);
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
    assert_int_equal(bal(typed), 8000);
    assert_int_equal(bal(plain), 0);
    assert_true(pc_t_ledger_ok(&g_stack));
}

/* Behind a trusted reverse proxy the hosted cashier records the buyer's
 * address the proxy forwarded for, not the proxy's: every buyer had the
 * proxy's address (one IP velocity counter for everyone, an IP block list
 * entry that blocks them all). The address is read from the right, over
 * every line of the header: a buyer who writes X-Forwarded-For itself
 * cannot choose its own. */
/* Pays the trade of created (a 201 of POST /v1/trades, freed here) with a
 * new card at its hosted cashier, with up to two extra headers. */
static void cashier_card_pay(pc_t_resp_t *created, const char *h1, const char *h2)
{
    char url[1100];
    snprintf(url, sizeof url, "%s/api/pay", pc_t_jstr(created, "cashier_url"));
    pc_t_resp_free(created);
    char body[300];
    snprintf(body, sizeof body,
             "{\"method_id\":\"CARD\",\"card\":{\"pan\":\"%s\",\"exp_month\":12,"
             "\"exp_year\":2030,\"cvv\":\"123\"},\"client\":{\"platform\":\"WEB\","
             "\"ip\":\"192.0.2.1\"}}",
             pc_t_fresh_pan());
    const char *h[] = {"Content-Type: application/json", h1, h2, NULL};
    pc_t_resp_t r = pc_t_http("POST", url, h, body);
    if (r.status != 200)
        fprintf(stderr, "pay: %ld %s\n", r.status, r.body);
    assert_int_equal(r.status, 200);
    pc_t_resp_free(&r);
}

/* POST {cashier_url}/api/pay with body; the answer as JSON. */
static json_t *page_pay(const char *cashier_url, const char *body)
{
    char url[1100];
    snprintf(url, sizeof url, "%s/api/pay", cashier_url);
    const char *h[] = {"Content-Type: application/json", NULL};
    pc_t_resp_t r = pc_t_http("POST", url, h, body);
    if (r.status != 200)
        fail_msg("page pay: %ld %s", r.status, r.body);
    json_t *j = pc_t_json(&r);
    pc_t_resp_free(&r);
    return j;
}

/* On the hosted page the link is the buyer's only credential: paying from
 * the buyer's balance there asks for the one-time code sent to the buyer,
 * and only the right code pays. Before, whoever held the link (mailed,
 * forwarded, in a shared browser's history) spent the balance in one
 * click. The merchant API, where the merchant answers for its buyer, pays
 * at once as before. */
static void test_the_buyers_balance_on_the_hosted_page_needs_the_buyers_code(void **state)
{
    (void)state;
    char buyer[40], body[512], tn[40], tn2[40];
    snprintf(buyer, sizeof buyer, "fpb-%d-%d", (int)getpid(), ++g_seq);
    snprintf(body, sizeof body, "{\"buyer_id\":\"%s\"}", buyer);
    pc_t_resp_t r = pc_t_admin(&g_stack, "POST", "/admin/buyers", body);
    assert_int_equal(r.status, 201);
    pc_t_resp_free(&r);
    /* 3000 in the wallet: a top-up paid by card through the merchant API. */
    snprintf(body, sizeof body,
             "{\"out_trade_no\":\"FPW%d\",\"product\":\"RECHARGE\",\"amount\":3000,"
             "\"currency\":\"CNY\",\"subject\":\"Top-up\",\"buyer_id\":\"%s\"}",
             ++g_seq, buyer);
    r = pc_t_call(&g_stack, &g_m, "POST", "/v1/trades", body, "fpw-t1");
    assert_int_equal(r.status, 201);
    snprintf(tn, sizeof tn, "%s", pc_t_jstr(&r, "trade_no"));
    pc_t_resp_free(&r);
    snprintf(body, sizeof body,
             "{\"trade_no\":\"%s\",\"buyer_id\":\"%s\",\"method_id\":\"CARD\",\"card\":{\"pan\":"
             "\"%s\",\"exp_month\":12,\"exp_year\":2030,\"cvv\":\"123\"},\"client\":{\"ip\":"
             "\"192.0.2.7\"}}",
             tn, buyer, pc_t_fresh_pan());
    r = pc_t_call(&g_stack, &g_m, "POST", "/v1/cashier/pay", body, "fpw-p1");
    assert_string_equal(pc_t_jstr(&r, "status"), "SUCCESS");
    pc_t_resp_free(&r);
    char wallet[96];
    snprintf(wallet, sizeof wallet, "buyer:%s:wallet:CNY", buyer);
    assert_int_equal(bal(wallet), 3000);

    /* The hosted page: a challenge first, nothing spent. */
    snprintf(body, sizeof body,
             "{\"out_trade_no\":\"FPW%d\",\"product\":\"INSTANT\",\"amount\":1000,"
             "\"currency\":\"CNY\",\"subject\":\"Goods\",\"buyer_id\":\"%s\"}",
             ++g_seq, buyer);
    r = pc_t_call(&g_stack, &g_m, "POST", "/v1/trades", body, "fpw-t2");
    assert_int_equal(r.status, 201);
    char path[128], cashier_url[1024];
    snprintf(cashier_url, sizeof cashier_url, "%s", pc_t_jstr(&r, "cashier_url"));
    pc_t_resp_free(&r);
    json_t *j =
        page_pay(cashier_url, "{\"method_id\":\"BALANCE\",\"client\":{\"platform\":\"WEB\"}}");
    json_t *action = json_object_get(j, "action");
    const char *type = json_string_value(json_object_get(action, "type"));
    if (!type || strcmp(type, "CHALLENGE") != 0)
        fail_msg("the balance on the hosted page, no challenge: status %s",
                 json_string_value(json_object_get(j, "status")));
    char cid[64];
    snprintf(cid, sizeof cid, "%s", json_string_value(json_object_get(action, "challenge_id")));
    json_decref(j);
    assert_int_equal(bal(wallet), 3000);
    snprintf(path, sizeof path, "/admin/challenges/%s", cid);
    r = pc_t_admin(&g_stack, "GET", path, NULL);
    assert_int_equal(r.status, 200);
    char code[16];
    snprintf(code, sizeof code, "%s", pc_t_jstr(&r, "code"));
    pc_t_resp_free(&r);
    snprintf(body, sizeof body,
             "{\"challenge_id\":\"%s\",\"challenge_answer\":\"%s\",\"client\":{\"platform\":"
             "\"WEB\"}}",
             cid, code);
    j = page_pay(cashier_url, body);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "SUCCESS");
    json_decref(j);
    assert_int_equal(bal(wallet), 2000);

    /* The merchant API: at once. */
    instant_trade(&g_m, 500, buyer, "fpw-t3", tn2);
    snprintf(body, sizeof body,
             "{\"trade_no\":\"%s\",\"buyer_id\":\"%s\",\"method_id\":\"BALANCE\",\"client\":{"
             "\"ip\":\"192.0.2.7\"}}",
             tn2, buyer);
    r = pc_t_call(&g_stack, &g_m, "POST", "/v1/cashier/pay", body, "fpw-p3");
    assert_string_equal(pc_t_jstr(&r, "status"), "SUCCESS");
    pc_t_resp_free(&r);
    assert_int_equal(bal(wallet), 1500);
    assert_true(pc_t_ledger_ok(&g_stack));
}

static void test_cashier_behind_a_proxy_sees_the_buyers_address(void **state)
{
    (void)state;
    /* The third: the buyer's own line, then the proxy's appended line (as
     * HAProxy adds one): before, only the first line was read, and the
     * buyer chose its address. */
    const char *xff[][2] = {{"X-Forwarded-For: 203.0.113.9", NULL},
                            {"X-Forwarded-For: 198.51.100.66, 203.0.113.10", NULL},
                            {"X-Forwarded-For: 198.51.100.77", "X-Forwarded-For: 203.0.113.11"}};
    const char *want[] = {"203.0.113.9", "203.0.113.10", "203.0.113.11"};
    for (int i = 0; i < 3; i++) {
        pc_t_resp_t r = create_trade(NULL);
        assert_int_equal(r.status, 201);
        char tn[40];
        snprintf(tn, sizeof tn, "%s", pc_t_jstr(&r, "trade_no"));
        cashier_card_pay(&r, xff[i][0], xff[i][1]);
        char *ip = pc_t_sql(&g_stack, "SELECT client_ip FROM payments WHERE trade_no = '%s'", tn);
        assert_string_equal(ip, want[i]);
        free(ip);
    }
}

/* A buyer who hangs up right after sending its pay still pays from its
 * address: the request waits for the trade's row (here, a lock on trades),
 * the buyer closes the connection, and the pay goes on. The address was
 * read from the connection when the pay ran: "" once it had closed, so the
 * payment went without its IP's block list and velocity counters. */
static void test_a_buyer_who_hangs_up_still_pays_from_its_address(void **state)
{
    (void)state;
    pc_t_resp_t r = create_trade(NULL);
    assert_int_equal(r.status, 201);
    char tn[40], path[1100], body[300], req[2048];
    snprintf(tn, sizeof tn, "%s", pc_t_jstr(&r, "trade_no"));
    const char *url = pc_t_jstr(&r, "cashier_url");
    const char *at = strstr(url, "/cashier/");
    assert_non_null(at);
    snprintf(path, sizeof path, "%s/api/pay", at);
    pc_t_resp_free(&r);
    snprintf(body, sizeof body,
             "{\"method_id\":\"CARD\",\"card\":{\"pan\":\"%s\",\"exp_month\":12,"
             "\"exp_year\":2030,\"cvv\":\"123\"},\"client\":{\"platform\":\"WEB\"}}",
             pc_t_fresh_pan());
    int n = snprintf(req, sizeof req,
                     "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     path, strlen(body), body);
    assert_true(pc_t_lock_tables(&g_stack, "trades", 2));
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_stack.http_port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(write(fd, req, (size_t)n), n);
    usleep(300000);
    close(fd);
    assert_true(pc_t_tables_unlocked(&g_stack, "trades", 10));
    assert_true(pc_t_sql_wait(&g_stack, "127.0.0.1", 15,
                              "SELECT coalesce(client_ip, '-') FROM payments WHERE trade_no = '%s'",
                              tn));
}

/* A sweep's fresh read of a trade (function fn, whose answer is the
 * EXISTS query exists, as its migration has it) with a pause of 2 s first
 * for trade slow_tn: a test version made with CREATE OR REPLACE, so the
 * sweep's prepared statement calls it. */
static void check_with_pause(const char *fn, const char *exists, const char *slow_tn)
{
    free(pc_t_sql(&g_stack,
                  "CREATE OR REPLACE FUNCTION %s(p_trade text) RETURNS boolean LANGUAGE plpgsql "
                  "VOLATILE AS $$ BEGIN IF p_trade = '%s' THEN PERFORM pg_sleep(2); END IF; "
                  "RETURN EXISTS (%s); END $$",
                  fn, slow_tn ? slow_tn : "", exists));
}

/* The close sweep's second read of "a payment at a channel" (0082). */
static void sweep_check_with_pause(const char *slow_tn)
{
    check_with_pause("trade_attempt_at_channel_now",
                     "SELECT 1 FROM payments ip JOIN trades t ON t.trade_no = ip.trade_no WHERE "
                     "ip.trade_no = p_trade AND ip.status IN ('CREATED', 'PROCESSING', "
                     "'UNKNOWN') AND greatest(coalesce(ip.sent_at, ip.created_at), t.expires_at) "
                     "> now() - interval '1 day'",
                     slow_tn);
}

/* The close sweep decides "no payment at a channel" with its statement's
 * snapshot; a pay that commits a payment after that snapshot, but before
 * the sweep locks the trade, went unseen and the trade was closed under its
 * payment (the buyer charged, then refunded as an error). The sweep now
 * reads it again for each trade it has locked, with a fresh snapshot. Here
 * two trades expired; the sweep locks the first and pauses on it; meanwhile
 * a pay commits a card payment on the second, which the sweep then locks:
 * it stays open. (With the second read answering "none" the second trade
 * was closed.) */
static void test_a_payment_committed_during_the_sweep_keeps_its_trade_open(void **state)
{
    (void)state;
    char t1[40], t2[40];
    pc_t_resp_t r = create_trade(NULL);
    snprintf(t1, sizeof t1, "%s", pc_t_jstr(&r, "trade_no"));
    pc_t_resp_free(&r);
    r = create_trade(NULL);
    snprintf(t2, sizeof t2, "%s", pc_t_jstr(&r, "trade_no"));
    pc_t_resp_free(&r);
    sweep_check_with_pause(t1);
    free(pc_t_sql(&g_stack,
                  "UPDATE trades SET expires_at = now() - CASE WHEN trade_no = '%s' THEN interval "
                  "'2 seconds' ELSE interval '1 second' END WHERE trade_no IN ('%s', '%s') "
                  "RETURNING 1",
                  t1, t1, t2));
    assert_true(pc_t_sql_wait(&g_stack, "1", 5,
                              "SELECT count(*) FROM pg_stat_activity WHERE wait_event = "
                              "'PgSleep' AND datname = current_database()"));
    /* A pay, as the engine makes one: the trade locked, its payment sent. */
    char *pno = pc_t_sql(&g_stack,
                         "WITH l AS (SELECT trade_no, merchant_id FROM trades WHERE trade_no = "
                         "'%s' AND status = 'WAIT_BUYER_PAY' FOR UPDATE) INSERT INTO payments "
                         "(payment_no, trade_no, merchant_id, status, amount, currency, "
                         "method_type, external_amount, channel_id, sent_at) SELECT 'PSW' || "
                         "substr(md5(trade_no), 1, 16), trade_no, merchant_id, 'PROCESSING', 1200, "
                         "'CNY', 'CARD', 1200, 'sim_card', now() FROM l RETURNING payment_no",
                         t2);
    assert_true(pno[0] != 0);
    assert_true(pc_t_sql_wait(&g_stack, "TRADE_CLOSED", 10,
                              "SELECT status FROM trades WHERE trade_no = '%s'", t1));
    usleep(300000);
    char *st = pc_t_sql(&g_stack, "SELECT status FROM trades WHERE trade_no = '%s'", t2);
    sweep_check_with_pause(NULL);
    free(pc_t_sql(&g_stack,
                  "UPDATE payments SET status = 'FAILED', failure_code = 'TEST' WHERE "
                  "payment_no = '%s' RETURNING 1",
                  pno));
    free(pno);
    assert_string_equal(st, "WAIT_BUYER_PAY");
    free(st);
}

/* A payment sent days before its trade expires (a pay code of a 7-day
 * trade, issued on its first day, paid in its last minutes) keeps the
 * expired trade open for the channel's report: the day of grace counts
 * from the trade's expiry too. Before, it counted from the sending only,
 * and the sweep closed the trade under the buyer's payment (then refunded
 * as an error). One sent a day before an expiry a day past is no longer
 * waited for. */
static void test_an_old_attempt_keeps_its_freshly_expired_trade_open(void **state)
{
    (void)state;
    char tn[2][40];
    for (int i = 0; i < 2; i++) {
        pc_t_resp_t r = create_trade(NULL);
        snprintf(tn[i], sizeof tn[i], "%s", pc_t_jstr(&r, "trade_no"));
        pc_t_resp_free(&r);
        char *pno = pc_t_sql(&g_stack,
                             "INSERT INTO payments (payment_no, trade_no, merchant_id, status, "
                             "amount, currency, method_type, external_amount, channel_id, sent_at) "
                             "SELECT 'POLD' || substr(md5(trade_no), 1, 16), trade_no, "
                             "merchant_id, 'PROCESSING', 1200, 'CNY', 'OTC', 1200, 'sim_otc', "
                             "now() - interval '6 days' FROM trades WHERE trade_no = '%s' "
                             "RETURNING payment_no",
                             tn[i]);
        assert_true(pno && pno[0]);
        free(pno);
    }
    free(pc_t_sql(&g_stack,
                  "UPDATE trades SET expires_at = now() - CASE WHEN trade_no = '%s' THEN interval "
                  "'1 second' ELSE interval '25 hours' END WHERE trade_no IN ('%s', '%s') "
                  "RETURNING 1",
                  tn[0], tn[0], tn[1]));
    assert_true(pc_t_sql_wait(&g_stack, "TRADE_CLOSED", 10,
                              "SELECT status FROM trades WHERE trade_no = '%s'", tn[1]));
    usleep(1500000); /* more sweeps */
    char *st = pc_t_sql(&g_stack, "SELECT status FROM trades WHERE trade_no = '%s'", tn[0]);
    assert_string_equal(st, "WAIT_BUYER_PAY");
    free(st);
    free(pc_t_sql(&g_stack,
                  "UPDATE payments SET status = 'FAILED', failure_code = 'TEST' WHERE trade_no IN "
                  "('%s', '%s') AND status = 'PROCESSING' RETURNING 1",
                  tn[0], tn[1]));
}

/* The finish sweep's read of "a refund of the trade in flight" (0087). */
static void finish_check_with_pause(const char *slow_tn)
{
    check_with_pause("trade_refund_in_flight_now",
                     "SELECT 1 FROM refunds r WHERE r.trade_no = p_trade AND r.type = 'NORMAL' AND "
                     "r.status NOT IN ('SUCCESS', 'FAILED', 'TERMINATED')",
                     slow_tn);
}

/* The finish sweep (the refund window over: TRADE_FINISHED, no refunds
 * from then on) leaves a trade alone while a refund of it is in flight. It
 * decided that with its statement's snapshot: a refund accepted after the
 * statement began, before the sweep locked the trade, went unseen and the
 * trade was finished under it (refunded in full, it stayed TRADE_FINISHED
 * and no trade.closed went out). Two paid trades past the window; the
 * sweep pauses on the first; meanwhile a refund of the second is accepted
 * (as the API records one: the refund row and the trade's refunded amount
 * in one transaction). The second stays TRADE_SUCCESS. (With the read made
 * STABLE, the statement's snapshot, the second was finished.) */
static void test_a_refund_accepted_during_the_finish_sweep_keeps_its_trade(void **state)
{
    (void)state;
    char t1[40], t2[40];
    pc_t_resp_t r = create_trade(NULL);
    snprintf(t1, sizeof t1, "%s", pc_t_jstr(&r, "trade_no"));
    cashier_card_pay(&r, NULL, NULL);
    r = create_trade(NULL);
    snprintf(t2, sizeof t2, "%s", pc_t_jstr(&r, "trade_no"));
    cashier_card_pay(&r, NULL, NULL);
    finish_check_with_pause(t1);
    free(pc_t_sql(&g_stack,
                  "UPDATE trades SET paid_at = now() - interval '181 days' - CASE WHEN trade_no = "
                  "'%s' THEN interval '1 second' ELSE interval '0' END WHERE trade_no IN ('%s', "
                  "'%s') AND status = 'TRADE_SUCCESS' RETURNING 1",
                  t1, t1, t2));
    assert_true(pc_t_sql_wait(&g_stack, "1", 5,
                              "SELECT count(*) FROM pg_stat_activity WHERE wait_event = "
                              "'PgSleep' AND datname = current_database()"));
    char *rno = pc_t_sql(
        &g_stack,
        "WITH p AS (SELECT payment_no, trade_no, merchant_id, currency FROM "
        "payments WHERE trade_no = '%s' AND status = 'SUCCESS'), f AS (INSERT "
        "INTO refunds (refund_no, out_refund_no, merchant_id, trade_no, "
        "payment_no, type, method, status, amount, currency, external_amount, "
        "balance_amount, coupon_amount, from_pending) SELECT 'RFW' || substr(md5(trade_no), 1, "
        "16), 'out-fw', merchant_id, trade_no, payment_no, 'NORMAL', 'OFFLINE', "
        "'ACCEPTED', 100, currency, 100, 0, 0, 100 FROM p RETURNING refund_no, "
        "trade_no), t AS (UPDATE trades SET refunded_amount = refunded_amount + "
        "100 WHERE trade_no IN (SELECT trade_no FROM f)) SELECT refund_no FROM f",
        t2);
    assert_true(rno[0] != 0);
    assert_true(pc_t_sql_wait(&g_stack, "TRADE_FINISHED", 15,
                              "SELECT status FROM trades WHERE trade_no = '%s'", t1));
    usleep(300000);
    char *st = pc_t_sql(&g_stack, "SELECT status FROM trades WHERE trade_no = '%s'", t2);
    finish_check_with_pause(NULL);
    free(pc_t_sql(&g_stack,
                  "WITH f AS (DELETE FROM refunds WHERE refund_no = '%s' RETURNING trade_no) "
                  "UPDATE trades SET refunded_amount = refunded_amount - 100 WHERE trade_no IN "
                  "(SELECT trade_no FROM f) RETURNING 1",
                  rno));
    free(rno);
    assert_string_equal(st, "TRADE_SUCCESS");
    free(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_return_url_that_is_not_http_is_refused),
        cmocka_unit_test(test_cashier_return_is_signed_once_the_trade_is_paid),
        cmocka_unit_test(test_the_buyers_balance_on_the_hosted_page_needs_the_buyers_code),
        cmocka_unit_test(test_cashier_behind_a_proxy_sees_the_buyers_address),
        cmocka_unit_test(test_a_buyer_who_hangs_up_still_pays_from_its_address),
        cmocka_unit_test(test_recharge_into_an_account_type),
        cmocka_unit_test(test_a_payment_committed_during_the_sweep_keeps_its_trade_open),
        cmocka_unit_test(test_an_old_attempt_keeps_its_freshly_expired_trade_open),
        cmocka_unit_test(test_a_refund_accepted_during_the_finish_sweep_keeps_its_trade),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
