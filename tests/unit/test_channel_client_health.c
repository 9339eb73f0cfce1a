/* Unit tests for what channel answers mean (channel/health.c): the failure
 * code table, the mapping of every kind of answer to a pc_ch_result_t, the
 * action shape api.md fixes, how each outcome counts for health, and the
 * health arithmetic (buckets, window sums, thresholds). No I/O. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "channel/health.h"

#include <string.h>

static pc_ch_count_t map(pc_ch_op_t op, int status, const char *body, const char *ref,
                         pc_ch_result_t *r, json_t **action)
{
    memset(r, 0, sizeof *r);
    return pc_ch_map_answer(op, status, body, body ? strlen(body) : 0, ref, r, action);
}

/* ---- The code table ----------------------------------------------------------- */

static void test_code_table_decides_retryable_and_blame(void **state)
{
    (void)state;
    static const struct {
        const char *code;
        bool retryable, blames;
    } want[] = {
        {"CARD_DECLINED", false, false},
        {"INSUFFICIENT_FUNDS", false, false},
        {"PROCESSING_ERROR", true, true},
        {"INVALID_CARD_NUMBER", false, false},
        {"EXPIRED_CARD", false, false},
        {"INVALID_CVV", false, false},
        {"TOKEN_NOT_FOUND", false, false},
        {"ISSUER_UNAVAILABLE", true, true},
        {"BANK_UNAVAILABLE", true, true},
        {"ACCOUNT_INVALID", false, false},
        {"EXPIRED", false, false},
        {"CLOSED_BY_REQUEST", false, false},
        {"BUYER_CANCELLED", false, false},
        {"AUTHENTICATION_FAILED", false, false},
        {"REFUND_REJECTED", false, false},
        {"PAYOUT_REJECTED", false, false},
        {"INVALID_REQUEST", false, false},
        {"INVALID_SIGNATURE", true, true},
        {"TIMESTAMP_EXPIRED", true, true},
        {"NONCE_REUSED", true, true},
        {"NOT_FOUND", false, false},
        {"INVALID_STATE", false, false},
        {"DUPLICATE_PAYMENT_NO", false, false},
        {"AMOUNT_EXCEEDS_REFUNDABLE", false, false},
        {"INVALID_CARD", false, false},
        {"REFERENCE_IN_USE", false, false},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const pc_ch_code_t *c = pc_ch_code_find(want[i].code);
        if (!c)
            fail_msg("%s is not in the table", want[i].code);
        if (c->retryable != want[i].retryable || c->blames_channel != want[i].blames)
            fail_msg("%s: retryable %d blames %d", want[i].code, c->retryable, c->blames_channel);
    }
    assert_null(pc_ch_code_find("SOMETHING_NEW"));
    assert_null(pc_ch_code_find(NULL));
}

/* ---- Payments ------------------------------------------------------------------------ */

static void test_success_carries_card_token_brand_bin_last4(void **state)
{
    (void)state;
    const char *body = "{\"object\":\"payment\",\"channel_txn_id\":\"pay_1\",\"payment_no\":\"P1\","
                       "\"status\":\"SUCCESS\",\"amount\":1999,\"currency\":\"CNY\",\"fee\":12,"
                       "\"failure\":null,\"card\":{\"token\":\"tok_a\",\"brand\":\"VISA\","
                       "\"bin\":\"424242\",\"last4\":\"4242\",\"exp_month\":12,\"exp_year\":2030},"
                       "\"action\":null}";
    pc_ch_result_t r;
    json_t *action;
    assert_int_equal(map(PC_CH_OP_PAY, 200, body, "P1", &r, &action), PC_CH_COUNT_OK);
    assert_int_equal(r.status, PC_CH_SUCCESS);
    assert_string_equal(r.channel_txn_id, "pay_1");
    assert_int_equal(r.amount, 1999);
    assert_string_equal(r.currency, "CNY");
    assert_int_equal(r.fee, 12);
    assert_string_equal(r.card_token, "tok_a");
    assert_string_equal(r.card_brand, "VISA");
    assert_string_equal(r.card_bin, "424242");
    assert_string_equal(r.card_last4, "4242");
    assert_string_equal(r.code, "");
    assert_null(action);
    /* A success is believed for the sum and currency it names: one without
     * them (or with an amount that is not a positive integer) cannot be
     * compared with what was asked, and is not believed. */
    const char *unsaid[] = {
        "{\"payment_no\":\"P1\",\"status\":\"SUCCESS\",\"currency\":\"CNY\"}",
        "{\"payment_no\":\"P1\",\"status\":\"SUCCESS\",\"amount\":\"1999\",\"currency\":\"CNY\"}",
        "{\"payment_no\":\"P1\",\"status\":\"SUCCESS\",\"amount\":0,\"currency\":\"CNY\"}",
        "{\"payment_no\":\"P1\",\"status\":\"SUCCESS\",\"amount\":1999}",
        "{\"payment_no\":\"P1\",\"status\":\"SUCCESS\",\"amount\":1999,\"currency\":\"cny\"}",
        "{\"payment_no\":\"P1\",\"status\":\"SUCCESS\",\"amount\":1999,\"currency\":\"CNYX\"}",
    };
    for (size_t i = 0; i < sizeof unsaid / sizeof unsaid[0]; i++) {
        map(PC_CH_OP_PAY, 200, unsaid[i], "P1", &r, &action);
        if (r.status != PC_CH_UNKNOWN || strcmp(r.code, "BAD_ANSWER") != 0)
            fail_msg("believed: %s", unsaid[i]);
        map(PC_CH_OP_QUERY, 200, unsaid[i], "P1", &r, &action);
        assert_int_equal(r.status, PC_CH_UNKNOWN);
    }
}

static void test_failed_takes_retryable_from_table_before_channel_flag(void **state)
{
    (void)state;
    pc_ch_result_t r;
    json_t *action;
    /* A channel that calls a decline retryable is overruled by the table. */
    const char *declined = "{\"payment_no\":\"P\",\"status\":\"FAILED\",\"failure\":{\"code\":"
                           "\"CARD_DECLINED\",\"message\":\"no\",\"retryable\":true}}";
    assert_int_equal(map(PC_CH_OP_PAY, 200, declined, "P", &r, &action), PC_CH_COUNT_DECLINE);
    assert_int_equal(r.status, PC_CH_FAILED);
    assert_string_equal(r.code, "CARD_DECLINED");
    assert_string_equal(r.message, "no");
    assert_int_equal(r.retryable, 0);
    const char *down = "{\"payment_no\":\"P\",\"status\":\"FAILED\",\"failure\":{\"code\":"
                       "\"ISSUER_UNAVAILABLE\",\"retryable\":false}}";
    assert_int_equal(map(PC_CH_OP_PAY, 200, down, "P", &r, &action), PC_CH_COUNT_FAILURE);
    assert_int_equal(r.retryable, 1);
    /* Codes the table lacks: the channel's flag, except INVALID_* ones. */
    const char *novel = "{\"payment_no\":\"P\",\"status\":\"FAILED\",\"failure\":{\"code\":"
                        "\"SWITCH_OFFLINE\",\"retryable\":true}}";
    assert_int_equal(map(PC_CH_OP_PAY, 200, novel, "P", &r, &action), PC_CH_COUNT_FAILURE);
    assert_int_equal(r.retryable, 1);
    const char *novel_decline = "{\"payment_no\":\"P\",\"status\":\"FAILED\",\"failure\":{"
                                "\"code\":\"DO_NOT_HONOR\",\"retryable\":false}}";
    assert_int_equal(map(PC_CH_OP_PAY, 200, novel_decline, "P", &r, &action), PC_CH_COUNT_DECLINE);
    assert_int_equal(r.retryable, 0);
    const char *invalid = "{\"payment_no\":\"P\",\"status\":\"FAILED\",\"failure\":{\"code\":"
                          "\"INVALID_PIN\",\"retryable\":true}}";
    map(PC_CH_OP_PAY, 200, invalid, "P", &r, &action);
    assert_int_equal(r.retryable, 0);
    /* No failure object at all: still definitely failed. */
    map(PC_CH_OP_PAY, 200, "{\"payment_no\":\"P\",\"status\":\"FAILED\"}", "P", &r, &action);
    assert_int_equal(r.status, PC_CH_FAILED);
    assert_string_equal(r.code, "UNSPECIFIED");
}

static void test_closed_payment_is_failed_and_final(void **state)
{
    (void)state;
    pc_ch_result_t r;
    json_t *action;
    map(PC_CH_OP_QUERY, 200,
        "{\"payment_no\":\"P\",\"status\":\"CLOSED\",\"failure\":{\"code\":\"EXPIRED\"}}", "P", &r,
        &action);
    assert_int_equal(r.status, PC_CH_FAILED);
    assert_string_equal(r.code, "EXPIRED");
    assert_int_equal(r.retryable, 0);
    map(PC_CH_OP_QUERY, 200, "{\"payment_no\":\"P\",\"status\":\"CLOSED\"}", "P", &r, &action);
    assert_string_equal(r.code, "CLOSED");
}

static void test_processing_actions_take_api_shape(void **state)
{
    (void)state;
    static const struct {
        const char *channel_action;
        const char *type, *key, *value;
    } cases[] = {
        {"{\"type\":\"REDIRECT\",\"reference\":\"wl_1\",\"url\":\"http://s/sim/redirect/wl_1\","
         "\"app_link\":\"paysim-wallet://pay\",\"expires_at\":\"2026-11-22T08:15:00Z\"}",
         "REDIRECT", "url", "http://s/sim/redirect/wl_1"},
        {"{\"type\":\"REDIRECT\",\"reference\":\"3ds_1\",\"url\":\"http://s/3ds_1\","
         "\"three_ds\":true,\"expires_at\":\"2026-11-22T08:15:00Z\"}",
         "REDIRECT", "url", "http://s/3ds_1"},
        {"{\"type\":\"VA\",\"reference\":\"8808123\",\"va_number\":\"8808123\",\"bank_code\":"
         "\"SIMBANK\",\"expires_at\":\"2026-11-22T08:15:00Z\"}",
         "VA", "va_number", "8808123"},
        {"{\"type\":\"OTC\",\"reference\":\"123\",\"otc_code\":\"123\",\"store_network\":"
         "\"SIMMART\",\"expires_at\":\"2026-11-22T08:15:00Z\"}",
         "OTC", "otc_code", "123"},
        {"{\"type\":\"QR\",\"reference\":\"paysim://qr/1\",\"qr_payload\":\"paysim://qr/1\","
         "\"expires_at\":\"2026-11-22T08:15:00Z\"}",
         "QR", "qr_payload", "paysim://qr/1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char body[600];
        snprintf(body, sizeof body,
                 "{\"payment_no\":\"P\",\"status\":\"PROCESSING\",\"channel_txn_id\":\"pay_9\","
                 "\"action\":%s}",
                 cases[i].channel_action);
        pc_ch_result_t r;
        json_t *a;
        assert_int_equal(map(PC_CH_OP_PAY, 200, body, "P", &r, &a), PC_CH_COUNT_OK);
        assert_int_equal(r.status, PC_CH_PROCESSING);
        assert_non_null(a);
        assert_int_equal(json_object_size(a), 3);
        assert_string_equal(json_string_value(json_object_get(a, "type")), cases[i].type);
        assert_string_equal(json_string_value(json_object_get(a, cases[i].key)), cases[i].value);
        assert_string_equal(json_string_value(json_object_get(a, "expires_at")),
                            "2026-11-22T08:15:00Z");
        json_decref(a);
    }
    /* Nothing for the buyer to do, or nothing usable: no action. */
    json_t *confirm =
        json_pack("{s:s,s:s,s:n}", "type", "BUYER_CONFIRM", "reference", "28123", "expires_at");
    assert_null(pc_ch_action_from(confirm));
    json_decref(confirm);
    json_t *no_url = json_pack("{s:s}", "type", "REDIRECT");
    assert_null(pc_ch_action_from(no_url));
    json_decref(no_url);
    assert_null(pc_ch_action_from(NULL));
    /* A missing expiry is null, not absent. */
    json_t *va = json_pack("{s:s,s:s}", "type", "VA", "va_number", "8808");
    json_t *a = pc_ch_action_from(va);
    assert_true(json_is_null(json_object_get(a, "expires_at")));
    assert_int_equal(json_object_size(a), 3);
    json_decref(a);
    json_decref(va);
    /* Refunds never carry an action. */
    pc_ch_result_t r;
    json_t *none;
    map(PC_CH_OP_REFUND, 200,
        "{\"refund_no\":\"R\",\"status\":\"PROCESSING\",\"action\":{\"type\":\"QR\","
        "\"qr_payload\":\"x\"}}",
        "R", &r, &none);
    assert_int_equal(r.status, PC_CH_PROCESSING);
    assert_null(none);
}

/* ---- Refusals, errors, unreadable answers ------------------------------------------------ */

static void test_refusals_are_failed_with_the_channel_code(void **state)
{
    (void)state;
    pc_ch_result_t r;
    json_t *a;
    assert_int_equal(map(PC_CH_OP_REFUND, 422,
                         "{\"error\":{\"code\":\"AMOUNT_EXCEEDS_REFUNDABLE\",\"message\":\"m\"}}",
                         "R", &r, &a),
                     PC_CH_COUNT_DECLINE);
    assert_int_equal(r.status, PC_CH_FAILED);
    assert_string_equal(r.code, "AMOUNT_EXCEEDS_REFUNDABLE");
    assert_string_equal(r.message, "m");
    assert_int_equal(r.retryable, 0);
    /* The link to this channel is broken: another may work. */
    assert_int_equal(
        map(PC_CH_OP_PAY, 401, "{\"error\":{\"code\":\"INVALID_SIGNATURE\"}}", "P", &r, &a),
        PC_CH_COUNT_FAILURE);
    assert_int_equal(r.status, PC_CH_FAILED);
    assert_int_equal(r.retryable, 1);
    /* A query for something the channel never took: retryable; the
     * channel answered (a read: not counted). */
    assert_int_equal(map(PC_CH_OP_QUERY, 404, "{\"error\":{\"code\":\"NOT_FOUND\"}}", "P", &r, &a),
                     PC_CH_COUNT_NONE);
    assert_int_equal(r.status, PC_CH_FAILED);
    assert_string_equal(r.code, "NOT_FOUND");
    assert_int_equal(r.retryable, 1);
    /* Any other refusal of a query says nothing of the transaction: it
     * stays unknown (it failed payments and payouts on a guess). */
    pc_ch_op_t queries[] = {PC_CH_OP_QUERY, PC_CH_OP_REFUND_QUERY, PC_CH_OP_PAYOUT_QUERY};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(
            map(queries[i], 401, "{\"error\":{\"code\":\"INVALID_SIGNATURE\"}}", "P", &r, &a),
            PC_CH_COUNT_FAILURE);
        assert_int_equal(r.status, PC_CH_UNKNOWN);
        assert_string_equal(r.code, "INVALID_SIGNATURE");
        map(queries[i], 429, "{\"error\":{\"code\":\"RATE_LIMITED\",\"message\":\"slow down\"}}",
            "P", &r, &a);
        assert_int_equal(r.status, PC_CH_UNKNOWN);
        assert_string_equal(r.message, "slow down");
    }
    /* A money request the channel has seen before (a nonce it had, a number
     * it has): an earlier copy may have been done (libcurl sends a request
     * again when a kept-alive connection dies before the answer). Not a
     * decline that may fall back to another channel: unknown, for a query. */
    pc_ch_op_t money[] = {PC_CH_OP_PAY, PC_CH_OP_REFUND, PC_CH_OP_PAYOUT};
    const char *seen[] = {"{\"error\":{\"code\":\"NONCE_REUSED\",\"message\":\"used\"}}",
                          "{\"error\":{\"code\":\"TIMESTAMP_EXPIRED\"}}",
                          "{\"error\":{\"code\":\"DUPLICATE_PAYMENT_NO\"}}",
                          "{\"error\":{\"code\":\"DUPLICATE_REFUND_NO\"}}",
                          "{\"error\":{\"code\":\"DUPLICATE_PAYOUT_NO\"}}"};
    /* (A copy sent again carries the first's X-Timestamp: refused as too
     * old, after the first was done.) */
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 5; k++) {
            map(money[i], k < 2 ? 401 : 409, seen[k], "P", &r, &a);
            assert_int_equal(r.status, PC_CH_UNKNOWN);
            assert_int_equal(r.retryable, 0);
        }
    assert_string_equal(r.code, "DUPLICATE_PAYOUT_NO");
    map(PC_CH_OP_PAY, 401, seen[0], "P", &r, &a);
    assert_string_equal(r.code, "NONCE_REUSED");
    assert_string_equal(r.message, "used");
    /* A refusal with a code the protocol does not define (a 504's TIMEOUT
     * under a rewritten status line, a channel's new code) is no decline. */
    const char *odd[] = {"{\"error\":{\"code\":\"TIMEOUT\"}}",
                         "{\"error\":{\"code\":\"UNAVAILABLE\"}}",
                         "{\"error\":{\"code\":\"SOMETHING_NEW\"}}"};
    for (int i = 0; i < 3; i++) {
        for (int k = 0; k < 3; k++) {
            map(money[k], 400, odd[i], "P", &r, &a);
            assert_int_equal(r.status, PC_CH_UNKNOWN);
        }
    }
    /* A refund of a payment the channel does not know is final. */
    map(PC_CH_OP_REFUND, 404, "{\"error\":{\"code\":\"NOT_FOUND\"}}", "R", &r, &a);
    assert_int_equal(r.retryable, 0);
    /* A 4xx that is not the protocol's error object cannot be believed. */
    assert_int_equal(map(PC_CH_OP_PAY, 400, "{\"oops\":1}", "P", &r, &a), PC_CH_COUNT_FAILURE);
    assert_int_equal(r.status, PC_CH_UNKNOWN);
}

static void test_5xx_408_and_unreadable_answers_are_unknown(void **state)
{
    (void)state;
    static const struct {
        int status;
        const char *body, *code;
    } cases[] = {
        {504, "{\"error\":{\"code\":\"TIMEOUT\"}}", "TIMEOUT"},
        {503, "{\"error\":{\"code\":\"UNAVAILABLE\"}}", "UNAVAILABLE"},
        {500, "<html>oops</html>", "CHANNEL_ERROR"},
        {502, NULL, "CHANNEL_ERROR"},
        {408, NULL, "CHANNEL_ERROR"},
        {200, "not json", "BAD_ANSWER"},
        {200, "[1,2]", "BAD_ANSWER"},
        {200, "{\"payment_no\":\"P\"}", "BAD_ANSWER"},
        {200, "{\"payment_no\":\"P\",\"status\":\"MAYBE\"}", "BAD_ANSWER"},
        {200, "{\"payment_no\":\"OTHER\",\"status\":\"SUCCESS\"}", "BAD_ANSWER"},
        {200, "{\"status\":\"SUCCESS\"}", "BAD_ANSWER"},
        {302, "{}", "BAD_ANSWER"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pc_ch_result_t r;
        json_t *a;
        pc_ch_count_t c = map(PC_CH_OP_PAY, cases[i].status, cases[i].body, "P", &r, &a);
        if (r.status != PC_CH_UNKNOWN || strcmp(r.code, cases[i].code) != 0 ||
            c != PC_CH_COUNT_FAILURE || r.retryable)
            fail_msg("case %zu (%d): status %d code %s", i, cases[i].status, r.status, r.code);
        assert_null(a);
    }
}

static void test_query_answers_are_not_counted_whatever_the_transaction_status(void **state)
{
    (void)state;
    pc_ch_result_t r;
    json_t *a;
    const char *failed = "{\"payment_no\":\"P\",\"status\":\"FAILED\",\"failure\":{\"code\":"
                         "\"ISSUER_UNAVAILABLE\"}}";
    /* The payment's failure was counted when it happened, not again now;
     * nor is the answer itself (a success would dilute the failure rate). */
    assert_int_equal(map(PC_CH_OP_QUERY, 200, failed, "P", &r, &a), PC_CH_COUNT_NONE);
    assert_int_equal(r.status, PC_CH_FAILED);
    assert_int_equal(r.retryable, 1);
    assert_int_equal(pc_ch_count_of(&r), PC_CH_COUNT_FAILURE);
}

static void test_tokenize_refund_and_payout_answers(void **state)
{
    (void)state;
    pc_ch_result_t r;
    json_t *a;
    map(PC_CH_OP_TOKENIZE, 200,
        "{\"card_token\":\"tok_z\",\"brand\":\"MASTERCARD\",\"bin\":\"555555\",\"last4\":"
        "\"4444\",\"exp_month\":1,\"exp_year\":2031,\"fingerprint\":\"ab\"}",
        NULL, &r, &a);
    assert_int_equal(r.status, PC_CH_SUCCESS);
    assert_string_equal(r.card_token, "tok_z");
    assert_string_equal(r.card_brand, "MASTERCARD");
    assert_string_equal(r.card_bin, "555555");
    assert_string_equal(r.card_last4, "4444");
    map(PC_CH_OP_TOKENIZE, 200, "{\"brand\":\"VISA\"}", NULL, &r, &a);
    assert_int_equal(r.status, PC_CH_UNKNOWN);

    map(PC_CH_OP_REFUND_QUERY, 200,
        "{\"object\":\"refund\",\"refund_no\":\"R1\",\"channel_txn_id\":\"ref_1\",\"status\":"
        "\"SUCCESS\",\"amount\":400,\"currency\":\"CNY\",\"fee\":0}",
        "R1", &r, &a);
    assert_int_equal(r.status, PC_CH_SUCCESS);
    assert_string_equal(r.channel_txn_id, "ref_1");
    assert_int_equal(r.amount, 400);
    assert_string_equal(r.currency, "CNY");
    /* A refund answer about another refund. */
    map(PC_CH_OP_REFUND, 200, "{\"refund_no\":\"R2\",\"status\":\"SUCCESS\"}", "R1", &r, &a);
    assert_int_equal(r.status, PC_CH_UNKNOWN);

    map(PC_CH_OP_PAYOUT_QUERY, 200,
        "{\"object\":\"payout\",\"payout_no\":\"O1\",\"status\":\"RETURNED\",\"amount\":7000,"
        "\"fee\":100,\"return_reason\":\"R03\"}",
        "O1", &r, &a);
    assert_int_equal(r.status, PC_CH_RETURNED);
    assert_string_equal(r.code, "R03");
    assert_int_equal(r.fee, 100);
    assert_int_equal(pc_ch_count_of(&r), PC_CH_COUNT_OK);
}

static void test_count_of_results(void **state)
{
    (void)state;
    pc_ch_result_t r = {0};
    r.status = PC_CH_UNKNOWN;
    assert_int_equal(pc_ch_count_of(&r), PC_CH_COUNT_FAILURE);
    r.status = PC_CH_PROCESSING;
    assert_int_equal(pc_ch_count_of(&r), PC_CH_COUNT_OK);
    r.status = PC_CH_FAILED;
    strcpy(r.code, "INSUFFICIENT_FUNDS");
    assert_int_equal(pc_ch_count_of(&r), PC_CH_COUNT_DECLINE);
    strcpy(r.code, "BANK_UNAVAILABLE");
    r.retryable = 1;
    assert_int_equal(pc_ch_count_of(&r), PC_CH_COUNT_FAILURE);
    assert_string_equal(pc_ch_op_name(PC_CH_OP_REFUND_QUERY), "refund_query");
    assert_string_equal(pc_ch_op_name(PC_CH_OP_COUNT), "?");
}

/* ---- Health arithmetic --------------------------------------------------------------------- */

static void test_bucket_widths_keep_windows_under_sixty_buckets(void **state)
{
    (void)state;
    static const struct {
        int64_t window, width, buckets;
    } cases[] = {
        {10, 10, 1},    {15, 10, 2},       {300, 10, 30}, {600, 10, 60}, {601, 20, 31},
        {3600, 60, 60}, {86400, 1440, 60}, {0, 10, 1},    {-5, 10, 1},   {7200, 120, 60},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(pc_ch_health_bucket_s(cases[i].window), cases[i].width);
        assert_int_equal(pc_ch_health_buckets(cases[i].window), cases[i].buckets);
        assert_true(pc_ch_health_buckets(cases[i].window) <= PC_CH_HEALTH_MAX_BUCKETS);
    }
    assert_int_equal(pc_ch_health_bucket_of(300, 1000000005), 100000000);
}

static void test_health_needs_enough_attempts_and_a_rate_above_threshold(void **state)
{
    (void)state;
    pc_ch_health_t v;
    pc_ch_tally_t none = {0};
    pc_ch_health_eval(&none, 500, &v);
    assert_int_equal(v.success_rate_bp, 10000);
    assert_int_equal(v.latency_ms, 0);
    assert_int_equal(v.healthy, 1);
    pc_ch_tally_t few = {19, 19, 0, 1900};
    pc_ch_health_eval(&few, 500, &v);
    assert_int_equal(v.success_rate_bp, 0);
    assert_int_equal(v.latency_ms, 100);
    assert_int_equal(v.healthy, 1);
    pc_ch_tally_t enough = {20, 20, 0, 0};
    pc_ch_health_eval(&enough, 500, &v);
    assert_int_equal(v.healthy, 0);
    /* Exactly at the threshold is not above it. */
    pc_ch_tally_t at = {100, 5, 30, 0};
    pc_ch_health_eval(&at, 500, &v);
    assert_int_equal(v.success_rate_bp, 9500);
    assert_int_equal(v.healthy, 1);
    pc_ch_tally_t above = {100, 6, 0, 0};
    pc_ch_health_eval(&above, 500, &v);
    assert_int_equal(v.healthy, 0);
    /* Declines alone never matter. */
    pc_ch_tally_t declines = {1000, 0, 1000, 5000};
    pc_ch_health_eval(&declines, 1, &v);
    assert_int_equal(v.success_rate_bp, 10000);
    assert_int_equal(v.latency_ms, 5);
    assert_int_equal(v.healthy, 1);
}

static void test_ring_sums_only_the_window(void **state)
{
    (void)state;
    pc_ch_ring_t ring;
    memset(&ring, 0, sizeof ring);
    int64_t t0 = 1800000000; /* a bucket boundary for 10 s buckets */
    pc_ch_ring_add(&ring, 300, t0, PC_CH_COUNT_FAILURE, 100);
    pc_ch_ring_add(&ring, 300, t0 + 5, PC_CH_COUNT_DECLINE, 50);
    pc_ch_ring_add(&ring, 300, t0 + 150, PC_CH_COUNT_OK, 30);
    pc_ch_tally_t t = pc_ch_ring_sum(&ring, 300, t0 + 200);
    assert_int_equal(t.attempts, 3);
    assert_int_equal(t.failures, 1);
    assert_int_equal(t.declines, 1);
    assert_int_equal(t.latency_ms_sum, 180);
    /* 30 buckets later the first bucket is out of the window. */
    t = pc_ch_ring_sum(&ring, 300, t0 + 300);
    assert_int_equal(t.attempts, 1);
    /* A slot reused by a newer bucket starts from zero (64 slots of 10 s). */
    pc_ch_ring_add(&ring, 300, t0 + 640, PC_CH_COUNT_OK, 1);
    t = pc_ch_ring_sum(&ring, 300, t0 + 640);
    assert_int_equal(t.attempts, 1);
    assert_int_equal(t.failures, 0);
    /* Another window, other buckets: the ring starts again. */
    t = pc_ch_ring_sum(&ring, 3600, t0 + 640);
    assert_int_equal(t.attempts, 0);
    pc_ch_ring_add(&ring, 3600, t0 + 640, PC_CH_COUNT_FAILURE, 7);
    t = pc_ch_ring_sum(&ring, 3600, t0 + 641);
    assert_int_equal(t.attempts, 1);
    assert_int_equal(t.failures, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_code_table_decides_retryable_and_blame),
        cmocka_unit_test(test_success_carries_card_token_brand_bin_last4),
        cmocka_unit_test(test_failed_takes_retryable_from_table_before_channel_flag),
        cmocka_unit_test(test_closed_payment_is_failed_and_final),
        cmocka_unit_test(test_processing_actions_take_api_shape),
        cmocka_unit_test(test_refusals_are_failed_with_the_channel_code),
        cmocka_unit_test(test_5xx_408_and_unreadable_answers_are_unknown),
        cmocka_unit_test(test_query_answers_are_not_counted_whatever_the_transaction_status),
        cmocka_unit_test(test_tokenize_refund_and_payout_answers),
        cmocka_unit_test(test_count_of_results),
        cmocka_unit_test(test_bucket_widths_keep_windows_under_sixty_buckets),
        cmocka_unit_test(test_health_needs_enough_attempts_and_a_rate_above_threshold),
        cmocka_unit_test(test_ring_sums_only_the_window),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
