/* Unit tests for paysim's data modules: src/sim/map.c (checked against a
 * plain array under random inserts and deletes), rng.c (reproducible,
 * streams per channel, rates), faults.c (validation, all-or-nothing), and
 * store.c (dedupe indexes, references, caps, statement discrepancies, cards
 * that never keep the number). The modules are compiled into this test
 * directly (paysim is not part of pclib). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "sim/card.c"
#include "sim/codes.c"
#include "sim/faults.c"
#include "sim/format.c"
#include "sim/map.c"
#include "sim/rng.c"
#include "sim/store.c"
#include "sim/wire.c"

#define NOW 1795334400000LL

/* ---- map ---- */

static void test_map_matches_reference_under_churn(void **state)
{
    (void)state;
    enum { N = 3000 };
    static char keys[N][16];
    static bool present[N];
    pc_sim_map_t *m = pc_sim_map_new();
    pc_sim_rng_t r;
    pc_sim_rng_seed(&r, 1);
    for (int i = 0; i < N; i++)
        snprintf(keys[i], sizeof keys[i], "k%d", i);
    size_t count = 0;
    for (int step = 0; step < 60000; step++) {
        int i = (int)pc_sim_rng_below(&r, N);
        if (pc_sim_rng_below(&r, 3) == 0) {
            void *v = pc_sim_map_del(m, keys[i]);
            assert_true((v != NULL) == present[i]);
            if (present[i])
                count--;
            present[i] = false;
        } else {
            assert_int_equal(pc_sim_map_put(m, keys[i], keys[i]), 0);
            if (!present[i])
                count++;
            present[i] = true;
        }
        if (step % 997 == 0) {
            for (int k = 0; k < N; k++)
                assert_true((pc_sim_map_get(m, keys[k]) == keys[k]) == present[k]);
        }
    }
    assert_int_equal(pc_sim_map_count(m), count);
    size_t pos = 0, seen = 0;
    const char *key;
    while (pc_sim_map_next(m, &pos, &key)) {
        assert_true(present[atoi(key + 1)]);
        seen++;
    }
    assert_int_equal(seen, count);
    pc_sim_map_free(m);
}

/* ---- rng ---- */

static void test_rng_reproducible_and_per_stream(void **state)
{
    (void)state;
    pc_sim_rng_t a, b, c;
    pc_sim_rng_seed(&a, pc_sim_rng_derive(42, "sim_card"));
    pc_sim_rng_seed(&b, pc_sim_rng_derive(42, "sim_card"));
    pc_sim_rng_seed(&c, pc_sim_rng_derive(42, "sim_card2"));
    int same_c = 0;
    for (int i = 0; i < 100; i++) {
        uint64_t x = pc_sim_rng_next(&a);
        assert_true(x == pc_sim_rng_next(&b));
        same_c += x == pc_sim_rng_next(&c);
    }
    assert_int_equal(same_c, 0);
}

static void test_rng_chance_rates(void **state)
{
    (void)state;
    pc_sim_rng_t r;
    pc_sim_rng_seed(&r, 7);
    int hits = 0;
    for (int i = 0; i < 100000; i++)
        hits += pc_sim_rng_chance(&r, 2500);
    assert_true(hits > 24000 && hits < 26000);
    /* 0 and 10000 are certain and draw nothing. */
    pc_sim_rng_t before = r;
    assert_false(pc_sim_rng_chance(&r, 0));
    assert_true(pc_sim_rng_chance(&r, 10000));
    assert_memory_equal(&before, &r, sizeof r);
    for (int i = 0; i < 1000; i++)
        assert_true(pc_sim_rng_below(&r, 7) < 7);
}

/* ---- faults ---- */

static json_t *js(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    assert_non_null(j);
    return j;
}

static void test_faults_apply_and_validate_all_or_nothing(void **state)
{
    (void)state;
    pc_sim_faults_t f;
    pc_sim_faults_defaults(&f, "sim_card");
    assert_int_equal(f.fee_bps, 60);
    assert_int_equal(f.payout_fee, 0);
    assert_int_equal(f.hang_ms, 30000);
    pc_sim_faults_extra_t x;
    const char *bad = NULL;
    json_t *b = js("{\"timeout_rate\":0.015,\"lost_callback_rate\":0.5,\"latency_ms\":20,"
                   "\"refund_delay_ms\":-1,\"seed\":9,\"statement_discrepancy\":{\"extra\":2,"
                   "\"missing\":1,\"currency\":\"USD\"}}");
    assert_int_equal(pc_sim_faults_apply(&f, "sim_card", b, &x, &bad), 0);
    json_decref(b);
    assert_int_equal(f.timeout_bps, 150);
    assert_int_equal(f.lost_callback_bps, 5000);
    assert_int_equal(f.latency_ms, 20);
    assert_int_equal(f.refund_delay_ms, -1);
    assert_int_equal(f.pending.missing, 1);
    assert_true(x.has_seed);
    assert_int_equal(x.seed, 9);
    assert_int_equal(x.extra_lines, 2);
    assert_string_equal(x.currency, "USD");
    /* One bad field: nothing changes, and the field is named. */
    pc_sim_faults_t before = f;
    static const char *const bads[][2] = {
        {"{\"decline_rate\":2,\"latency_ms\":1}", "decline_rate"},
        {"{\"latency_ms\":1,\"decline_rate\":-1}", "decline_rate"},
        {"{\"latency_ms\":1,\"timeout_rate\":1.5}", "timeout_rate"},
        {"{\"latency_ms\":\"10\"}", "latency_ms"},
        {"{\"refund_delay_ms\":-2}", "refund_delay_ms"},
        {"{\"seed\":-1}", "seed"},
        {"{\"statement_discrepancy\":[1]}", "statement_discrepancy"},
        {"{\"statement_discrepancy\":{\"currency\":\"usd\"}}", "currency"},
    };
    for (size_t i = 0; i < sizeof bads / sizeof bads[0]; i++) {
        b = js(bads[i][0]);
        assert_int_equal(pc_sim_faults_apply(&f, "sim_card", b, &x, &bad), PC_EINVAL);
        assert_string_equal(bad, bads[i][1]);
        assert_memory_equal(&f, &before, sizeof f);
        json_decref(b);
    }
    b = js("{\"reset\":true,\"decline_rate\":1}");
    assert_int_equal(pc_sim_faults_apply(&f, "sim_card", b, &x, &bad), 0);
    assert_int_equal(f.timeout_bps, 0);
    assert_int_equal(f.decline_bps, 10000); /* 1 is always, not one basis point */
    json_decref(b);
    json_t *out = pc_sim_faults_json(&f);
    assert_true(json_real_value(json_object_get(out, "decline_rate")) == 1.0);
    json_decref(out);
}

static void test_fee_rounds_half_up(void **state)
{
    (void)state;
    assert_int_equal(pc_sim_fee(1000, 60, 0), 6);
    assert_int_equal(pc_sim_fee(1999, 60, 0), 12); /* 11.994 */
    assert_int_equal(pc_sim_fee(2500, 30, 0), 8);  /* 7.5 -> 8 */
    assert_int_equal(pc_sim_fee(1, 60, 50), 50);
    assert_int_equal(pc_sim_fee(1000000000000LL, 10000, 0), 1000000000000LL);
}

/* ---- store ---- */

static pc_sim_store_t *store_new(size_t max_txns)
{
    pc_sim_limits_t lim = {.max_txns = max_txns, .seed = 42};
    pc_sim_store_t *s = pc_sim_store_new(&lim);
    assert_non_null(s);
    return s;
}

static void test_txns_indexed_by_ref_and_number(void **state)
{
    (void)state;
    pc_sim_store_t *s = store_new(0);
    pc_sim_channel_t *a = pc_sim_channel_get(s, "sim_card", true);
    pc_sim_channel_t *b = pc_sim_channel_get(s, "sim_card2", true);
    assert_null(pc_sim_channel_get(s, "Bad-Id", true));
    assert_null(pc_sim_channel_get(s, "sim_new", false));
    pc_sim_txn_t *p = pc_sim_txn_new(s, a, PC_SIM_PAY, "P1", NOW);
    pc_sim_txn_t *q = pc_sim_txn_new(s, b, PC_SIM_PAY, "P1", NOW);
    pc_sim_txn_t *r = pc_sim_txn_new(s, a, PC_SIM_REFUND, "P1", NOW);
    assert_ptr_equal(pc_sim_txn_by_no(a, PC_SIM_PAY, "P1"), p);
    assert_ptr_equal(pc_sim_txn_by_no(b, PC_SIM_PAY, "P1"), q);
    assert_ptr_equal(pc_sim_txn_by_no(a, PC_SIM_REFUND, "P1"), r);
    assert_null(pc_sim_txn_by_no(b, PC_SIM_REFUND, "P1"));
    assert_ptr_equal(pc_sim_txn_by_ref(s, p->ref), p);
    assert_string_not_equal(p->ref, q->ref);
    assert_int_equal(strncmp(p->ref, "pay_", 4), 0);
    assert_int_equal(strncmp(r->ref, "rfd_", 4), 0);
    assert_int_equal(pc_sim_txn_set_reference(s, p, "8808000000000001"), 0);
    assert_int_equal(pc_sim_txn_set_reference(s, q, "8808000000000001"), PC_ECONFLICT);
    assert_ptr_equal(pc_sim_txn_by_reference(s, "8808000000000001"), p);
    assert_int_equal(pc_sim_txn_count(s), 3);
    pc_sim_store_free(s);
}

static void test_oldest_txns_forgotten_past_cap(void **state)
{
    (void)state;
    pc_sim_store_t *s = store_new(100);
    pc_sim_channel_t *ch = pc_sim_channel_get(s, "sim_va", true);
    char first_ref[PC_SIM_REF_LEN], no[16];
    for (int i = 0; i < 1000; i++) {
        snprintf(no, sizeof no, "N%d", i);
        pc_sim_txn_t *t = pc_sim_txn_new(s, ch, PC_SIM_PAY, no, NOW);
        char ref[32];
        snprintf(ref, sizeof ref, "va%d", i);
        assert_int_equal(pc_sim_txn_set_reference(s, t, ref), 0);
        if (i == 0)
            snprintf(first_ref, sizeof first_ref, "%s", t->ref);
    }
    assert_int_equal(pc_sim_txn_count(s), 100);
    assert_null(pc_sim_txn_by_ref(s, first_ref));
    assert_null(pc_sim_txn_by_no(ch, PC_SIM_PAY, "N0"));
    assert_null(pc_sim_txn_by_reference(s, "va0"));
    assert_non_null(pc_sim_txn_by_no(ch, PC_SIM_PAY, "N999"));
    assert_non_null(pc_sim_txn_by_reference(s, "va900"));
    assert_int_equal(pc_sim_map_count(s->by_ref), 100);
    assert_int_equal(pc_sim_map_count(s->by_reference), 100);
    size_t n = 0;
    for (pc_sim_txn_t *t = pc_sim_txn_oldest(s); t; t = t->newer)
        n++;
    assert_int_equal(n, 100);
    pc_sim_store_free(s);
}

static void test_cards_keep_no_number(void **state)
{
    (void)state;
    pc_sim_store_t *s = store_new(0);
    pc_sim_channel_t *ch = pc_sim_channel_get(s, "sim_card", true);
    const char *pan = "4000000000000002";
    char fp[33], fp2[33];
    assert_int_equal(pc_sim_store_fingerprint(s, pan, fp), 0);
    assert_int_equal(pc_sim_store_fingerprint(s, pan, fp2), 0);
    assert_string_equal(fp, fp2);
    assert_null(strstr(fp, "0002"));
    pc_sim_card_t *c =
        pc_sim_card_put(s, ch, fp, "VISA", "400000", "0002", 12, 2030, pc_sim_card_rule(pan));
    pc_sim_card_t *again =
        pc_sim_card_put(s, ch, fp, "VISA", "400000", "0002", 1, 2031, pc_sim_card_rule(pan));
    assert_ptr_equal(c, again);
    assert_int_equal(c->exp_year, 2031);
    assert_ptr_equal(pc_sim_card_get(ch, c->token), c);
    assert_int_equal(c->rule.behaviour, PC_SIM_CARD_DECLINE);
    /* Nothing in the record spells the number. */
    assert_null(memmem(c, sizeof *c, pan, strlen(pan)));
    assert_null(memmem(c, sizeof *c, "000000000000", 12));
    pc_sim_store_free(s);
}

static void test_statement_discrepancies_decided_when_written(void **state)
{
    (void)state;
    pc_sim_store_t *s = store_new(0);
    pc_sim_channel_t *ch = pc_sim_channel_get(s, "sim_card", true);
    ch->faults.pending = (pc_sim_discrepancy_t){.missing = 1, .amount_mismatch = 1};
    pc_sim_txn_t *failed = pc_sim_txn_new(s, ch, PC_SIM_PAY, "F", NOW);
    memcpy(failed->currency, "CNY", 4);
    failed->amount = 100;
    assert_int_equal(pc_sim_line_add(s, failed, "PAY", "FAILED", 100, 0, NOW), 0);
    for (int i = 0; i < 3; i++) {
        char no[8];
        snprintf(no, sizeof no, "S%d", i);
        pc_sim_txn_t *t = pc_sim_txn_new(s, ch, PC_SIM_PAY, no, NOW);
        memcpy(t->currency, "CNY", 4);
        t->amount = 500;
        assert_int_equal(pc_sim_line_add(s, t, "PAY", "SUCCESS", 500, 3, NOW), 0);
    }
    assert_int_equal(pc_sim_line_add_extra(s, ch, 1, "CNY", NOW), 0);
    pc_buf_t b = {0};
    pc_sim_statement_csv(ch, "2026-11-22", &b);
    /* FAILED lines are never victims; the first SUCCESS goes missing, the
     * second is off by one, the third is true. */
    assert_non_null(strstr(b.p, ",F,PAY,100,CNY,0,FAILED,"));
    assert_null(strstr(b.p, ",S0,"));
    assert_non_null(strstr(b.p, ",S1,PAY,499,CNY,3,SUCCESS,"));
    assert_non_null(strstr(b.p, ",S2,PAY,500,CNY,3,SUCCESS,"));
    assert_non_null(strstr(b.p, ",SIMEXTRA"));
    assert_int_equal(pc_sim_faked_total(s, NULL), 3);
    assert_int_equal(pc_sim_faked_total(s, "STATEMENT_MISSING_LINE"), 1);
    size_t pos = 0;
    const pc_sim_faked_t *f = pc_sim_faked_next(s, &pos);
    assert_string_equal(f->kind, "STATEMENT_MISSING_LINE");
    assert_string_equal(f->paycore_ref, "S0");
    assert_string_equal(f->date, "2026-11-22");
    pc_buf_free(&b);
    /* The chargeback file of the day. */
    pc_sim_txn_t *t = pc_sim_txn_by_no(ch, PC_SIM_PAY, "S2");
    assert_non_null(pc_sim_chargeback_add(s, t, 200, "10.4", NOW));
    pc_sim_chargebacks_csv(ch, "2026-11-22", &b);
    assert_non_null(strstr(b.p, ",S2,200,CNY,10.4,2026-11-22T08:00:00Z,2026-11-29T08:00:00Z\n"));
    pc_buf_free(&b);
    pc_sim_store_free(s);
}

static void test_lines_bounded_by_dropping_oldest_day(void **state)
{
    (void)state;
    pc_sim_limits_t lim = {.max_txns = 1000, .max_lines = 50};
    pc_sim_store_t *s = pc_sim_store_new(&lim);
    pc_sim_channel_t *ch = pc_sim_channel_get(s, "sim_card", true);
    pc_sim_txn_t *t = pc_sim_txn_new(s, ch, PC_SIM_PAY, "X", NOW);
    memcpy(t->currency, "CNY", 4);
    for (int day = 0; day < 10; day++)
        for (int i = 0; i < 10; i++)
            assert_int_equal(pc_sim_line_add(s, t, "PAY", "SUCCESS", 1, 0, NOW + day * 86400000LL),
                             0);
    assert_true(pc_sim_line_count(s) <= 50);
    pc_buf_t b = {0};
    pc_sim_statement_csv(ch, "2026-11-22", &b); /* the oldest day: gone */
    assert_null(strstr(b.p, ",X,"));
    pc_buf_free(&b);
    pc_sim_statement_csv(ch, "2026-12-01", &b); /* the newest: kept */
    assert_non_null(strstr(b.p, ",X,"));
    pc_buf_free(&b);
    pc_sim_store_free(s);
}

static void test_faked_log_is_a_bounded_ring(void **state)
{
    (void)state;
    pc_sim_limits_t lim = {.max_faked = 5};
    pc_sim_store_t *s = pc_sim_store_new(&lim);
    for (int i = 0; i < 12; i++) {
        pc_sim_faked_t f = {.kind = i % 2 ? "TIMEOUT" : "DECLINE", .op = "PAY"};
        pc_sim_faked_add(s, &f);
    }
    size_t pos = 0, n = 0;
    const pc_sim_faked_t *f;
    uint64_t last = 7;
    while ((f = pc_sim_faked_next(s, &pos))) {
        assert_int_equal(f->seq, last + 1);
        last = f->seq;
        n++;
    }
    assert_int_equal(n, 5);
    assert_int_equal(pc_sim_faked_total(s, "TIMEOUT"), 6);
    assert_int_equal(pc_sim_faked_total(s, NULL), 12);
    pc_sim_store_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_map_matches_reference_under_churn),
        cmocka_unit_test(test_rng_reproducible_and_per_stream),
        cmocka_unit_test(test_rng_chance_rates),
        cmocka_unit_test(test_faults_apply_and_validate_all_or_nothing),
        cmocka_unit_test(test_fee_rounds_half_up),
        cmocka_unit_test(test_txns_indexed_by_ref_and_number),
        cmocka_unit_test(test_oldest_txns_forgotten_past_cap),
        cmocka_unit_test(test_cards_keep_no_number),
        cmocka_unit_test(test_statement_discrepancies_decided_when_written),
        cmocka_unit_test(test_lines_bounded_by_dropping_oldest_day),
        cmocka_unit_test(test_faked_log_is_a_bounded_ring),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
