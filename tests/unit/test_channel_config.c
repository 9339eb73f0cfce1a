/* Tests for channel/config.c: validation of channel files with clear errors,
 * endpoint substitution, the set reloaded as a transaction, ops overrides on
 * top of the files, matching, fees, and the demo channels that ship. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "files.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "channel/config.h"
#include "core/error.h"
#include "core/metrics.h"

typedef struct {
    char dir[64];
    pc_channels_t *chs;
} fixture_t;

static const char *CARD =
    "{\n"
    "  \"id\": \"sim_card\", \"name\": \"Card\",\n"
    "  \"endpoint\": \"http://127.0.0.1:${PC_TEST_SIM_PORT:-8090}/ch/sim_card\",\n"
    "  \"secret_ref\": \"PAYCORE_SECRET_SIM_CARD\",\n"
    "  \"methods\": [\"CARD\", \"QUICK_PAY\"], \"currencies\": [\"CNY\", \"USD\"],\n"
    "  \"min_amount\": 100, \"max_amount\": 500000,\n"
    "  \"fee\": {\"rate_bp\": 60, \"fixed\": 5},\n"
    "  \"refund\": {\"methods\": [\"API\"], \"window_days\": 180, \"partial\": true}\n"
    "}\n";
static const char *WALLET =
    "{\"id\": \"sim_wallet\", \"name\": \"Wallet\", \"endpoint\": \"https://wallet.example/x\",\n"
    " \"secret_ref\": \"WALLET_SECRET\", \"methods\": [\"WALLET\", \"QR_MERCHANT\"],\n"
    " \"currencies\": [\"CNY\"], \"min_amount\": 1, \"max_amount\": 100000,\n"
    " \"fee\": {\"rate_bp\": 38}, \"refund\": {\"methods\": [\"API\", \"OFFLINE\"], "
    "\"window_days\": 30},\n"
    " \"weight\": 10, \"enabled\": false,\n"
    " \"alert\": {\"failure_rate_bp\": 800, \"window_s\": 60},\n"
    " \"_comment\": \"ignored\"}\n";

static int setup(void **state)
{
    fixture_t *fx = calloc(1, sizeof *fx);
    snprintf(fx->dir, sizeof fx->dir, "/tmp/pc_channels_XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    pc_t_write_file(fx->dir, "sim_card.json", CARD);
    pc_t_write_file(fx->dir, "sim_wallet.json", WALLET);
    unsetenv("PC_TEST_SIM_PORT");
    pc_metrics_reset();
    fx->chs = pc_channels_new(fx->dir, true);
    assert_non_null(fx->chs);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *fx = *state;
    pc_channels_free(fx->chs);
    pc_t_rm_tree(fx->dir);
    free(fx);
    return 0;
}

/* Parses text as channels/sim_card.json; returns the error messages joined. */
static int parse(const char *text, pc_channel_t *ch, char *messages, size_t len)
{
    json_t *errors = json_array();
    int rc = pc_channel_parse("channels/sim_card.json", "sim_card", text, strlen(text), ch, errors);
    messages[0] = '\0';
    size_t i;
    json_t *e;
    json_array_foreach(errors, i, e)
    {
        strncat(messages, json_string_value(json_object_get(e, "message")),
                len - strlen(messages) - 1);
        strncat(messages, "\n", len - strlen(messages) - 1);
    }
    json_decref(errors);
    return rc;
}

/* Replaces the first occurrence of from in CARD with to. */
static void card_with(const char *from, const char *to, char *out, size_t len)
{
    const char *at = strstr(CARD, from);
    assert_non_null(at);
    snprintf(out, len, "%.*s%s%s", (int)(at - CARD), CARD, to, at + strlen(from));
}

static void assert_refused_with(const char *text, const char *message)
{
    pc_channel_t ch;
    char msgs[2048];
    assert_int_equal(parse(text, &ch, msgs, sizeof msgs), PC_EINVAL);
    if (!strstr(msgs, message))
        fail_msg("expected \"%s\" among:\n%s", message, msgs);
}

/* ---- one file ------------------------------------------------------------------- */

static void test_valid_file_is_parsed_with_defaults(void **state)
{
    (void)state;
    pc_channel_t ch;
    char msgs[1024];
    assert_int_equal(parse(CARD, &ch, msgs, sizeof msgs), 0);
    assert_string_equal(ch.id, "sim_card");
    assert_string_equal(ch.endpoint, "http://127.0.0.1:8090/ch/sim_card");
    assert_true(ch.methods & (1u << PC_METHOD_CARD));
    assert_true(ch.methods & (1u << PC_METHOD_QUICK_PAY));
    assert_false(ch.methods & (1u << PC_METHOD_WALLET));
    assert_int_equal(ch.ncurrencies, 2);
    assert_int_equal(ch.min_amount, 100);
    assert_int_equal(ch.max_amount, 500000);
    assert_int_equal(ch.fee.rate_bp, 60);
    assert_int_equal(ch.fee.fixed, 5);
    assert_true(pc_channel_supports_refund(&ch, PC_REFUND_API));
    assert_false(pc_channel_supports_refund(&ch, PC_REFUND_FILE));
    assert_int_equal(ch.refund.window_days, 180);
    assert_true(ch.refund.partial);
    /* Optional fields take their documented defaults. */
    assert_int_equal(ch.timeouts.connect_ms, 3000);
    assert_int_equal(ch.timeouts.request_ms, 10000);
    assert_int_equal(ch.weight, 100);
    assert_true(ch.enabled);
    assert_int_equal(ch.alert.failure_rate_bp, 500);
    assert_int_equal(ch.alert.window_s, 300);
    assert_int_equal(strlen(ch.version), 64);
}

static void test_max_amount_below_min_amount_is_refused_with_file_name(void **state)
{
    (void)state;
    char text[2048];
    card_with("\"max_amount\": 500000", "\"max_amount\": 50", text, sizeof text);
    assert_refused_with(text, "channels/sim_card.json: max_amount must be an integer ≥ min_amount");
}

static void test_non_integer_amounts_and_fees_are_refused(void **state)
{
    (void)state;
    char text[2048];
    card_with("\"min_amount\": 100", "\"min_amount\": 1.5", text, sizeof text);
    assert_refused_with(text, "channels/sim_card.json: min_amount must be an integer");
    card_with("\"rate_bp\": 60", "\"rate_bp\": 20000", text, sizeof text);
    assert_refused_with(text, "fee.rate_bp must be an integer from 0 to 10000");
    card_with("\"max_amount\": 500000", "\"max_amount\": 9007199254740993", text, sizeof text);
    assert_refused_with(text, "max_amount must be an integer from 1 to 9007199254740991");
}

static void test_unknown_field_is_refused_not_ignored(void **state)
{
    (void)state;
    char text[2048];
    card_with("\"max_amount\": 500000", "\"max_amount\": 500000, \"max_ammount\": 1", text,
              sizeof text);
    assert_refused_with(text, "unknown field \"max_ammount\"");
    card_with("\"partial\": true", "\"partial\": true, \"windows\": 3", text, sizeof text);
    assert_refused_with(text, "unknown field \"refund.windows\"");
}

static void test_unknown_method_and_bad_currency_are_refused(void **state)
{
    (void)state;
    char text[2048];
    card_with("\"QUICK_PAY\"", "\"BITCOIN\"", text, sizeof text);
    assert_refused_with(text, "methods[1] must be one of BALANCE, COUPON, CARD");
    card_with("\"USD\"", "\"usd\"", text, sizeof text);
    assert_refused_with(text, "currencies[1] (usd) is not an upper-case ISO 4217 currency code");
    /* Three capital letters are not enough: "RMB" is what people call CNY. */
    card_with("\"USD\"", "\"RMB\"", text, sizeof text);
    assert_refused_with(text, "currencies[1] (RMB) is not an upper-case ISO 4217 currency code");
    card_with("[\"API\"]", "[\"CHEQUE\"]", text, sizeof text);
    assert_refused_with(text, "refund.methods[0] must be one of API, PAYOUT, FILE, OFFLINE");
}

static void test_missing_required_fields_are_all_reported(void **state)
{
    (void)state;
    pc_channel_t ch;
    char msgs[2048];
    assert_int_equal(parse("{\"id\": \"sim_card\"}", &ch, msgs, sizeof msgs), PC_EINVAL);
    assert_non_null(strstr(msgs, "name is required"));
    assert_non_null(strstr(msgs, "endpoint is required"));
    assert_non_null(strstr(msgs, "fee is required"));
    assert_non_null(strstr(msgs, "refund is required"));
    assert_refused_with("[1, 2]", "must be a JSON object");
    assert_refused_with("{\"id\": ", "invalid JSON");
}

static void test_id_must_match_file_name(void **state)
{
    (void)state;
    char text[2048];
    card_with("\"id\": \"sim_card\"", "\"id\": \"sim_card3\"", text, sizeof text);
    assert_refused_with(text, "id \"sim_card3\" must match the file name");
}

static void test_secret_ref_must_be_a_name_not_a_secret(void **state)
{
    (void)state;
    char text[2048];
    card_with("\"PAYCORE_SECRET_SIM_CARD\"", "\"sk_live 9f8e/7d==\"", text, sizeof text);
    assert_refused_with(text, "secret_ref must name an environment variable");
}

static void test_endpoint_port_comes_from_the_environment(void **state)
{
    (void)state;
    pc_channel_t ch;
    char msgs[1024];
    setenv("PC_TEST_SIM_PORT", "18123", 1);
    assert_int_equal(parse(CARD, &ch, msgs, sizeof msgs), 0);
    assert_string_equal(ch.endpoint, "http://127.0.0.1:18123/ch/sim_card");
    unsetenv("PC_TEST_SIM_PORT");

    char text[2048];
    card_with("${PC_TEST_SIM_PORT:-8090}", "${PC_TEST_SIM_PORT}", text, sizeof text);
    assert_refused_with(text, "PC_TEST_SIM_PORT is not set and has no default");
    card_with("http://", "ftp://", text, sizeof text);
    assert_refused_with(text, "endpoint must be an http:// or https:// URL");
    /* http://localhost:x@evil.example/ goes to evil.example (user
     * "localhost", password "x"): it passed for a loopback address, and
     * card data went out in clear. */
    card_with("http://127.0.0.1:", "http://localhost:x@evil.example:", text, sizeof text);
    assert_refused_with(text, "endpoint must not carry user information");
    card_with("http://127.0.0.1:", "https://user@acquirer.example:", text, sizeof text);
    assert_refused_with(text, "endpoint must not carry user information");
}

static void test_fee_rounds_half_up_and_adds_fixed(void **state)
{
    (void)state;
    pc_channel_t ch;
    char msgs[1024];
    assert_int_equal(parse(CARD, &ch, msgs, sizeof msgs), 0);
    assert_int_equal(pc_channel_fee(&ch, "CNY", 1999), 12 + 5);  /* 11.994 */
    assert_int_equal(pc_channel_fee(&ch, "CNY", 2500), 15 + 5);  /* 15.0 */
    assert_int_equal(pc_channel_fee(&ch, "USD", 12500), 75 + 5); /* 75.0 */
    assert_int_equal(pc_channel_fee(&ch, "CNY", 1250), 8 + 5);   /* 7.5 -> 8 */
    assert_int_equal(pc_channel_fee(&ch, "EUR", 1250), 0);       /* not taken */
    assert_true(pc_channel_accepts(&ch, PC_METHOD_CARD, "CNY", 100));
    assert_false(pc_channel_accepts(&ch, PC_METHOD_CARD, "CNY", 99));
    assert_false(pc_channel_accepts(&ch, PC_METHOD_CARD, "EUR", 1000));
    assert_false(pc_channel_accepts(&ch, PC_METHOD_VA, "CNY", 1000));
    /* Any currency and amount: binding a card (before, the binder asked for
     * CNY 0.01, and a channel without CNY or with a higher minimum could not
     * bind a card at all). */
    assert_true(pc_channel_accepts(&ch, PC_METHOD_QUICK_PAY, NULL, 0));
    assert_false(pc_channel_accepts(&ch, PC_METHOD_VA, NULL, 0));
}

/* A channel that takes CNY and JPY: a JPY minor unit is worth about a
 * twentieth of a CNY one, so one figure for both would let JPY 5,000,000 pass
 * a CNY 50,000 maximum and charge a CNY fixed fee in yen. */
static void test_currency_figures_apply_to_their_currency_only(void **state)
{
    (void)state;
    pc_channel_t ch;
    char msgs[1024], text[2048];
    card_with("\"currencies\": [\"CNY\", \"USD\"],",
              "\"currencies\": [\"CNY\", \"USD\", \"JPY\"], \"by_currency\": {\"JPY\": "
              "{\"min_amount\": 1000, \"max_amount\": 9000000, \"fee\": {\"fixed\": 30}}, "
              "\"USD\": {\"fee\": {\"rate_bp\": 290}}, \"_note\": \"comment\"},",
              text, sizeof text);
    assert_int_equal(parse(text, &ch, msgs, sizeof msgs), 0);
    /* JPY: its own bounds and fixed fee, the file's rate. */
    assert_true(pc_channel_accepts(&ch, PC_METHOD_CARD, "JPY", 9000000));
    assert_false(pc_channel_accepts(&ch, PC_METHOD_CARD, "JPY", 999));
    assert_false(pc_channel_accepts(&ch, PC_METHOD_CARD, "JPY", 9000001));
    assert_int_equal(pc_channel_fee(&ch, "JPY", 10000), 60 + 30);
    /* CNY: the file's figures. */
    assert_false(pc_channel_accepts(&ch, PC_METHOD_CARD, "CNY", 9000000));
    assert_true(pc_channel_accepts(&ch, PC_METHOD_CARD, "CNY", 100));
    assert_int_equal(pc_channel_fee(&ch, "CNY", 10000), 60 + 5);
    /* USD: its rate, the file's bounds and fixed fee. */
    assert_int_equal(pc_channel_fee(&ch, "USD", 10000), 290 + 5);
    assert_false(pc_channel_accepts(&ch, PC_METHOD_CARD, "USD", 99));
    const pc_channel_amounts_t *a = pc_channel_amounts(&ch, "JPY");
    assert_non_null(a);
    assert_int_equal(a->min_amount, 1000);
    assert_int_equal(a->fee_rate_bp, 60);
    assert_null(pc_channel_amounts(&ch, "EUR"));
    /* GET /admin/channels shows each currency's figures as they apply. */
    json_t *j = pc_channel_to_json(&ch);
    json_t *jpy = json_object_get(json_object_get(j, "by_currency"), "JPY");
    assert_int_equal(json_integer_value(json_object_get(jpy, "max_amount")), 9000000);
    json_t *cny = json_object_get(json_object_get(j, "by_currency"), "CNY");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(cny, "fee"), "fixed")), 5);
    json_decref(j);
}

static void test_bad_currency_figures_are_refused_with_their_path(void **state)
{
    (void)state;
    char text[2048];
    card_with("\"currencies\": [\"CNY\", \"USD\"],",
              "\"currencies\": [\"CNY\", \"USD\"], \"by_currency\": {\"JPY\": "
              "{\"min_amount\": 1}},",
              text, sizeof text);
    assert_refused_with(text, "channels/sim_card.json: by_currency has JPY, which is not in "
                              "currencies");
    card_with("\"currencies\": [\"CNY\", \"USD\"],",
              "\"currencies\": [\"CNY\", \"USD\"], \"by_currency\": {\"USD\": "
              "{\"min_amount\": 600000}},",
              text, sizeof text);
    assert_refused_with(text, "by_currency.USD: max_amount (500000) must be ≥ min_amount (600000)");
    card_with("\"currencies\": [\"CNY\", \"USD\"],",
              "\"currencies\": [\"CNY\", \"USD\"], \"by_currency\": {\"USD\": "
              "{\"max_ammount\": 6, \"fee\": {\"rate_bp\": 10001}}},",
              text, sizeof text);
    assert_refused_with(text, "unknown field \"by_currency.USD.max_ammount\"");
    assert_refused_with(text, "by_currency.USD.fee.rate_bp must be an integer from 0 to 10000");
    card_with("\"currencies\": [\"CNY\", \"USD\"],",
              "\"currencies\": [\"CNY\", \"USD\"], \"by_currency\": [\"USD\"],", text, sizeof text);
    assert_refused_with(text, "by_currency must be an object keyed by currency");
    card_with("\"currencies\": [\"CNY\", \"USD\"],",
              "\"currencies\": [\"CNY\", \"USD\"], \"by_currency\": {\"USD\": 5},", text,
              sizeof text);
    assert_refused_with(text, "by_currency.USD must be an object");
}

/* Volume caps: the file's apply to every currency, a by_currency entry's to
 * its own; a monthly cap below the daily one is refused. */
static void test_volume_caps_parse_per_currency(void **state)
{
    (void)state;
    pc_channel_t ch;
    char msgs[1024], text[2048];
    card_with("\"currencies\": [\"CNY\", \"USD\"],",
              "\"currencies\": [\"CNY\", \"USD\"], \"volume\": {\"daily\": 700000}, "
              "\"by_currency\": {\"USD\": {\"volume\": {\"monthly\": 900000}}},",
              text, sizeof text);
    assert_int_equal(parse(text, &ch, msgs, sizeof msgs), 0);
    const pc_channel_amounts_t *cny = pc_channel_amounts(&ch, "CNY"),
                               *usd = pc_channel_amounts(&ch, "USD");
    assert_int_equal(cny->daily_volume, 700000);
    assert_int_equal(cny->monthly_volume, 0);
    assert_int_equal(usd->daily_volume, 700000);
    assert_int_equal(usd->monthly_volume, 900000);
    json_t *j = pc_channel_to_json(&ch);
    json_t *v = json_object_get(
        json_object_get(json_object_get(json_object_get(j, "by_currency"), "CNY"), "volume"),
        "monthly");
    assert_true(json_is_null(v));
    json_decref(j);

    card_with("\"currencies\": [\"CNY\", \"USD\"],",
              "\"currencies\": [\"CNY\", \"USD\"], \"volume\": {\"daily\": 700000, "
              "\"monthly\": 600000},",
              text, sizeof text);
    assert_refused_with(text, "volume.monthly (600000) must be ≥ volume.daily (700000)");
    card_with("\"currencies\": [\"CNY\", \"USD\"],",
              "\"currencies\": [\"CNY\", \"USD\"], \"volume\": {\"daily\": 700000}, "
              "\"by_currency\": {\"USD\": {\"volume\": {\"monthly\": 500}}},",
              text, sizeof text);
    assert_refused_with(text, "by_currency.USD: volume.monthly (500) must be ≥ volume.daily "
                              "(700000)");
    card_with("\"currencies\": [\"CNY\", \"USD\"],",
              "\"currencies\": [\"CNY\", \"USD\"], \"volume\": {\"daily\": 0, "
              "\"weekly\": 5},",
              text, sizeof text);
    assert_refused_with(text, "volume.daily must be an integer from 1 to");
    assert_refused_with(text, "unknown field \"volume.weekly\"");
}

/* ---- the set and the registry ------------------------------------------------------ */

static void test_set_loads_and_finds_channels(void **state)
{
    fixture_t *fx = *state;
    assert_int_equal(pc_channels_reload(fx->chs), 0);
    const pc_channel_set_t *set = pc_channels_current(fx->chs);
    assert_int_equal(pc_channel_set_count(set), 2);
    assert_string_equal(pc_channel_set_at(set, 0)->id, "sim_card");
    assert_non_null(pc_channels_find(fx->chs, "sim_wallet"));
    assert_null(pc_channels_find(fx->chs, "sim_nowhere"));
    json_t *st = pc_channels_status(fx->chs);
    assert_string_equal(json_string_value(json_object_get(st, "status")), "ok");
    assert_int_equal(json_integer_value(json_object_get(st, "channels")), 2);
    assert_int_equal(json_array_size(json_object_get(st, "errors")), 0);
    json_decref(st);
    json_t *cfg = pc_channel_to_json(pc_channels_find(fx->chs, "sim_wallet"));
    assert_string_equal(json_string_value(json_array_get(json_object_get(cfg, "methods"), 1)),
                        "QR_MERCHANT");
    assert_false(json_is_true(json_object_get(cfg, "enabled")));
    json_decref(cfg);
}

static void test_bad_file_refuses_the_reload_and_old_set_keeps_serving(void **state)
{
    fixture_t *fx = *state;
    assert_int_equal(pc_channels_reload(fx->chs), 0);
    char version[65];
    snprintf(version, sizeof version, "%s", pc_channel_set_version(pc_channels_current(fx->chs)));

    char text[2048];
    card_with("\"max_amount\": 500000", "\"max_amount\": 50", text, sizeof text);
    pc_t_write_file(fx->dir, "sim_card.json", text);
    pc_t_write_file(fx->dir, "sim_va.json", "{\"id\": \"sim_va\"");
    assert_int_equal(pc_channels_reload(fx->chs), PC_EINVAL);

    /* Nothing changed for callers. */
    assert_string_equal(pc_channel_set_version(pc_channels_current(fx->chs)), version);
    assert_int_equal(pc_channels_find(fx->chs, "sim_card")->max_amount, 500000);
    assert_null(pc_channels_find(fx->chs, "sim_va"));

    json_t *st = pc_channels_status(fx->chs);
    assert_string_equal(json_string_value(json_object_get(st, "status")), "refused");
    json_t *errors = json_object_get(st, "errors");
    assert_int_equal(json_array_size(errors), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(errors, 0), "file")),
                        "channels/sim_card.json");
    assert_string_equal(json_string_value(json_object_get(json_array_get(errors, 1), "file")),
                        "channels/sim_va.json");
    json_decref(st);
    assert_int_equal(pc_metrics_get("pc_channel_reloads_total", "result=\"refused\""), 1);

    /* Fixed files go in. */
    pc_t_write_file(fx->dir, "sim_card.json", CARD);
    unlink(strcat(strcpy(text, fx->dir), "/sim_va.json"));
    assert_int_equal(pc_channels_reload(fx->chs), 0);
    st = pc_channels_status(fx->chs);
    assert_string_equal(json_string_value(json_object_get(st, "status")), "ok");
    json_decref(st);
}

static void test_reload_changes_version_and_held_sets_stay_valid(void **state)
{
    fixture_t *fx = *state;
    assert_int_equal(pc_channels_reload(fx->chs), 0);
    pc_channel_set_t *held = pc_channels_acquire(fx->chs);
    const pc_channel_t *old_card = pc_channel_set_find(held, "sim_card");
    char text[2048];
    card_with("\"max_amount\": 500000", "\"max_amount\": 600000", text, sizeof text);
    pc_t_write_file(fx->dir, "sim_card.json", text);
    assert_int_equal(pc_channels_reload(fx->chs), 0);
    assert_string_not_equal(pc_channel_set_version(held),
                            pc_channel_set_version(pc_channels_current(fx->chs)));
    assert_int_equal(pc_channels_find(fx->chs, "sim_card")->max_amount, 600000);
    /* A request that took the old set before the reload still reads it. */
    assert_int_equal(old_card->max_amount, 500000);
    pc_channel_set_release(held);
}

static void test_empty_directory_is_refused(void **state)
{
    fixture_t *fx = *state;
    char path[128];
    snprintf(path, sizeof path, "%s/sim_card.json", fx->dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/sim_wallet.json", fx->dir);
    unlink(path);
    assert_int_equal(pc_channels_reload(fx->chs), PC_EINVAL);
    json_t *st = pc_channels_status(fx->chs);
    assert_string_equal(json_string_value(json_object_get(st, "status")), "missing");
    json_decref(st);
}

static void test_override_applies_on_top_of_the_file_and_survives_reload(void **state)
{
    fixture_t *fx = *state;
    assert_int_equal(pc_channels_reload(fx->chs), 0);
    assert_true(pc_channels_effective_enabled(fx->chs, "sim_card"));
    assert_false(pc_channels_effective_enabled(fx->chs, "sim_wallet")); /* file says false */

    assert_int_equal(pc_channels_set_override(fx->chs, "sim_card", 0), 0);
    assert_int_equal(pc_channels_set_override(fx->chs, "sim_wallet", 1), 0);
    assert_false(pc_channels_effective_enabled(fx->chs, "sim_card"));
    assert_true(pc_channels_effective_enabled(fx->chs, "sim_wallet"));
    assert_int_equal(pc_channels_override(fx->chs, "sim_card"), 0);

    char text[2048];
    card_with("\"fixed\": 5", "\"fixed\": 6", text, sizeof text);
    pc_t_write_file(fx->dir, "sim_card.json", text);
    assert_int_equal(pc_channels_reload(fx->chs), 0);
    assert_false(pc_channels_effective_enabled(fx->chs, "sim_card"));

    assert_int_equal(pc_channels_set_override(fx->chs, "sim_card", -1), 0);
    assert_int_equal(pc_channels_override(fx->chs, "sim_card"), -1);
    assert_true(pc_channels_effective_enabled(fx->chs, "sim_card"));

    assert_int_equal(pc_channels_set_override(fx->chs, "sim_nowhere", 0), PC_ENOTFOUND);
    assert_int_equal(pc_channels_set_override(fx->chs, "sim_card", 2), PC_EINVAL);
    assert_false(pc_channels_effective_enabled(fx->chs, "sim_nowhere"));
}

static void test_match_honours_method_currency_amount_and_switch(void **state)
{
    fixture_t *fx = *state;
    assert_int_equal(pc_channels_reload(fx->chs), 0);
    const pc_channel_t *out[4];
    assert_int_equal(pc_channels_match(fx->chs, PC_METHOD_CARD, "USD", 1000, out, 4), 1);
    assert_string_equal(out[0]->id, "sim_card");
    assert_int_equal(pc_channels_match(fx->chs, PC_METHOD_CARD, "USD", 1000000, out, 4), 0);
    /* The wallet is disabled in its file until ops switch it on. */
    assert_int_equal(pc_channels_match(fx->chs, PC_METHOD_WALLET, "CNY", 1000, out, 4), 0);
    pc_channels_set_override(fx->chs, "sim_wallet", 1);
    assert_int_equal(pc_channels_match(fx->chs, PC_METHOD_WALLET, "CNY", 1000, out, 4), 1);
    pc_channels_set_override(fx->chs, "sim_card", 0);
    assert_int_equal(pc_channels_match(fx->chs, PC_METHOD_CARD, "USD", 1000, out, 4), 0);
}

/* What a node last read of a channel's volume counts it against the caps of
 * the UTC day and month that hold now; a reading of an earlier period counts
 * as nothing sent, an older reading does not replace a newer one, and a
 * reload keeps the readings. */
static void test_volume_room_follows_the_last_reading(void **state)
{
    fixture_t *fx = *state;
    char text[2048];
    card_with("\"currencies\": [\"CNY\", \"USD\"],",
              "\"currencies\": [\"CNY\", \"USD\"], \"by_currency\": {\"USD\": {\"volume\": "
              "{\"daily\": 10000, \"monthly\": 25000}}},",
              text, sizeof text);
    pc_t_write_file(fx->dir, "sim_card.json", text);
    assert_int_equal(pc_channels_reload(fx->chs), 0);
    assert_true(pc_channels_capped(fx->chs));
    const pc_channel_t *ch = pc_channels_find(fx->chs, "sim_card");
    int64_t now = 1796558400; /* 2026-12-06T12:00:00Z */
    assert_true(pc_channels_volume_room(fx->chs, ch, "USD", 10000, now));
    assert_false(pc_channels_volume_room(fx->chs, ch, "USD", 10001, now));
    assert_true(pc_channels_volume_room(fx->chs, ch, "CNY", 400000, now)); /* no caps */
    pc_channels_note_volume(fx->chs, "sim_card", "USD", "2026-12-06", 9000);
    pc_channels_note_volume(fx->chs, "sim_card", "USD", "2026-12", 20000);
    assert_true(pc_channels_volume_room(fx->chs, ch, "USD", 1000, now));
    assert_false(pc_channels_volume_room(fx->chs, ch, "USD", 1001, now));
    /* The next day: the day's count starts again, the month's does not. */
    assert_true(pc_channels_volume_room(fx->chs, ch, "USD", 5000, now + 86400));
    assert_false(pc_channels_volume_room(fx->chs, ch, "USD", 5001, now + 86400));
    /* An older reading arriving late changes nothing. */
    pc_channels_note_volume(fx->chs, "sim_card", "USD", "2026-12-05", 0);
    assert_false(pc_channels_volume_room(fx->chs, ch, "USD", 1001, now));
    assert_int_equal(pc_channels_reload(fx->chs), 0);
    ch = pc_channels_find(fx->chs, "sim_card");
    assert_false(pc_channels_volume_room(fx->chs, ch, "USD", 1001, now));
    pc_t_write_file(fx->dir, "sim_card.json", CARD);
    assert_int_equal(pc_channels_reload(fx->chs), 0);
    assert_false(pc_channels_capped(fx->chs));
    ch = pc_channels_find(fx->chs, "sim_card");
    assert_true(pc_channels_volume_room(fx->chs, ch, "USD", 400000, now));
}

static int async_status = 99;

static void on_reloaded(pc_channels_t *chs, int status, void *data)
{
    (void)chs;
    (void)data;
    async_status = status;
}

static void test_async_reload_applies_on_the_loop(void **state)
{
    fixture_t *fx = *state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(pc_channels_reload_async(fx->chs, &loop, on_reloaded, NULL), 0);
    assert_null(pc_channels_current(fx->chs));
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(async_status, 0);
    assert_int_equal(pc_channel_set_count(pc_channels_current(fx->chs)), 2);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_freeing_registry_during_async_reload_is_safe(void **state)
{
    fixture_t *fx = *state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    async_status = 99;
    assert_int_equal(pc_channels_reload_async(fx->chs, &loop, on_reloaded, NULL), 0);
    pc_channels_free(fx->chs);
    fx->chs = NULL;
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(async_status, PC_ECLOSED);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* The repository's channels/ folder. */
static void shipped_channels_dir(char *dir, size_t size)
{
    snprintf(dir, size, "%s", __FILE__);
    char *p = strstr(dir, "/tests/unit/");
    assert_non_null(p);
    snprintf(p, size - (size_t)(p - dir), "/channels");
}

static void test_shipped_demo_channels_are_valid(void **state)
{
    (void)state;
    char dir[512];
    shipped_channels_dir(dir, sizeof dir);
    json_t *errors = json_array();
    pc_channel_set_t *set = NULL;
    unsetenv("PAYSIM_PORT");
    int rc = pc_channel_set_load(dir, PC_CHANNELS_DEMO, &set, errors);
    if (rc != 0) {
        char *s = json_dumps(errors, JSON_INDENT(1));
        fail_msg("demo channels invalid: %s", s);
    }
    json_decref(errors);
    const char *ids[] = {"sim_card", "sim_card2", "sim_netbank", "sim_otc", "sim_va", "sim_wallet"};
    assert_int_equal(pc_channel_set_count(set), 6);
    for (size_t i = 0; i < 6; i++)
        assert_non_null(pc_channel_set_find(set, ids[i]));
    const pc_channel_t *va = pc_channel_set_find(set, "sim_va");
    assert_true(pc_channel_supports_refund(va, PC_REFUND_PAYOUT));
    assert_string_equal(va->endpoint, "http://127.0.0.1:8090/ch/sim_va");
    assert_true(
        pc_channel_supports_refund(pc_channel_set_find(set, "sim_netbank"), PC_REFUND_FILE));
    assert_true(pc_channel_supports_refund(pc_channel_set_find(set, "sim_otc"), PC_REFUND_OFFLINE));
    assert_true(pc_channel_set_find(set, "sim_wallet")->methods & (1u << PC_METHOD_QR_BUYER));
    pc_channel_set_release(set);
}

/* Outside demo mode a channel reached over plain http:// on another machine
 * is refused (card data in clear, and an answer's status line a man in the
 * middle could rewrite); https:// and loopback are fine, and demo mode
 * allows anything. */
static void test_plain_http_to_another_machine_is_refused_outside_demo_mode(void **state)
{
    fixture_t *fx = *state;
    setenv("PAYCORE_SECRET_SIM_CARD", "a-secret-of-our-own", 1);
    setenv("WALLET_SECRET", "a-secret-of-our-own", 1);
    const struct {
        const char *endpoint;
        int refused;
    } cases[] = {
        {"http://203.0.113.5/ch/sim_card", 1},
        {"http://acquirer.example:80/x", 1},
        {"http://127.0.0.1.example/x", 1},
        {"http://[2001:db8::1]:8090/x", 1},
        {"HTTP://203.0.113.5/x", 0 /* not http: refused by the parser as no URL */},
        {"https://203.0.113.5/ch/sim_card", 0},
        {"http://127.0.0.1:8090/ch/sim_card", 0},
        {"http://localhost:8090/ch/sim_card", 0},
        {"http://[::1]:8090/ch/sim_card", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[1024];
        const char *at = strstr(CARD, "http://127.0.0.1:${PC_TEST_SIM_PORT:-8090}/ch/sim_card");
        snprintf(text, sizeof text, "%.*s%s%s", (int)(at - CARD), CARD, cases[i].endpoint,
                 at + strlen("http://127.0.0.1:${PC_TEST_SIM_PORT:-8090}/ch/sim_card"));
        pc_t_write_file(fx->dir, "sim_card.json", text);
        json_t *errors = json_array();
        pc_channel_set_t *set = NULL;
        int rc = pc_channel_set_load(fx->dir, 0, &set, errors);
        const char *msg = json_string_value(json_object_get(json_array_get(errors, 0), "message"));
        int plain = msg && strstr(msg, "plain http://") != NULL;
        if (plain != cases[i].refused || (cases[i].refused && rc != PC_EINVAL))
            fail_msg("%s: rc %d, %s", cases[i].endpoint, rc, msg ? msg : "no error");
        if (!strncmp(cases[i].endpoint, "HTTP", 4))
            assert_int_equal(rc, PC_EINVAL);
        else if (!cases[i].refused)
            assert_int_equal(rc, 0);
        pc_channel_set_release(set);
        /* Demo mode: anything goes. */
        json_array_clear(errors);
        if (!cases[i].refused) {
            json_decref(errors);
            continue;
        }
        assert_int_equal(pc_channel_set_load(fx->dir, PC_CHANNELS_DEMO, &set, errors), 0);
        pc_channel_set_release(set);
        /* payctl on a machine without the secrets: still refused. */
        unsetenv("PAYCORE_SECRET_SIM_CARD");
        json_array_clear(errors);
        assert_int_equal(pc_channel_set_load(fx->dir, PC_CHANNELS_SECRETS_ELSEWHERE, &set, errors),
                         PC_EINVAL);
        msg = json_string_value(json_object_get(json_array_get(errors, 0), "message"));
        assert_non_null(strstr(msg, "plain http://"));
        setenv("PAYCORE_SECRET_SIM_CARD", "a-secret-of-our-own", 1);
        json_decref(errors);
    }
    unsetenv("PAYCORE_SECRET_SIM_CARD");
    unsetenv("WALLET_SECRET");
}

/* Outside demo mode a channel whose secret is not in the environment is
 * refused with its file and variable named (else it would sign and verify
 * with the public demo secret), and the whole set with it. */
static void test_channel_without_its_secret_is_refused_outside_demo_mode(void **state)
{
    (void)state;
    char dir[512];
    shipped_channels_dir(dir, sizeof dir);
    const char *vars[] = {
        "PAYCORE_CHANNEL_SECRET_SIM_CARD",    "PAYCORE_CHANNEL_SECRET_SIM_CARD2",
        "PAYCORE_CHANNEL_SECRET_SIM_NETBANK", "PAYCORE_CHANNEL_SECRET_SIM_OTC",
        "PAYCORE_CHANNEL_SECRET_SIM_VA",      "PAYCORE_CHANNEL_SECRET_SIM_WALLET"};
    for (size_t i = 1; i < 6; i++)
        setenv(vars[i], "a-secret-of-our-own", 1);
    unsetenv(vars[0]);
    json_t *errors = json_array();
    pc_channel_set_t *set = NULL;
    assert_int_equal(pc_channel_set_load(dir, 0, &set, errors), PC_EINVAL);
    assert_null(set);
    assert_int_equal(json_array_size(errors), 1);
    json_t *e = json_array_get(errors, 0);
    assert_string_equal(json_string_value(json_object_get(e, "file")), "channels/sim_card.json");
    const char *msg = json_string_value(json_object_get(e, "message"));
    assert_non_null(strstr(msg, "secret_ref PAYCORE_CHANNEL_SECRET_SIM_CARD is not set"));

    /* An empty value is no secret either. */
    setenv(vars[0], "", 1);
    json_array_clear(errors);
    assert_int_equal(pc_channel_set_load(dir, 0, &set, errors), PC_EINVAL);
    assert_int_equal(json_array_size(errors), 1);

    setenv(vars[0], "a-secret-of-our-own", 1);
    json_array_clear(errors);
    assert_int_equal(pc_channel_set_load(dir, 0, &set, errors), 0);
    assert_int_equal(pc_channel_set_count(set), 6);
    pc_channel_set_release(set);

    /* The registry refuses the reload the same way and keeps nothing. */
    unsetenv(vars[0]);
    pc_channels_t *chs = pc_channels_new(dir, false);
    assert_non_null(chs);
    assert_false(pc_channels_demo_secrets(chs));
    assert_int_equal(pc_channels_reload(chs), PC_EINVAL);
    assert_null(pc_channels_find(chs, "sim_wallet"));
    pc_channels_free(chs);
    for (size_t i = 0; i < 6; i++)
        unsetenv(vars[i]);
    json_decref(errors);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_file_is_parsed_with_defaults),
        cmocka_unit_test(test_max_amount_below_min_amount_is_refused_with_file_name),
        cmocka_unit_test(test_non_integer_amounts_and_fees_are_refused),
        cmocka_unit_test(test_unknown_field_is_refused_not_ignored),
        cmocka_unit_test(test_unknown_method_and_bad_currency_are_refused),
        cmocka_unit_test(test_missing_required_fields_are_all_reported),
        cmocka_unit_test(test_id_must_match_file_name),
        cmocka_unit_test(test_secret_ref_must_be_a_name_not_a_secret),
        cmocka_unit_test(test_endpoint_port_comes_from_the_environment),
        cmocka_unit_test(test_fee_rounds_half_up_and_adds_fixed),
        cmocka_unit_test(test_currency_figures_apply_to_their_currency_only),
        cmocka_unit_test(test_bad_currency_figures_are_refused_with_their_path),
        cmocka_unit_test(test_volume_caps_parse_per_currency),
        cmocka_unit_test_setup_teardown(test_volume_room_follows_the_last_reading, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_loads_and_finds_channels, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_file_refuses_the_reload_and_old_set_keeps_serving,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload_changes_version_and_held_sets_stay_valid, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_empty_directory_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_override_applies_on_top_of_the_file_and_survives_reload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_match_honours_method_currency_amount_and_switch, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_async_reload_applies_on_the_loop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_freeing_registry_during_async_reload_is_safe, setup,
                                        teardown),
        cmocka_unit_test(test_shipped_demo_channels_are_valid),
        cmocka_unit_test(test_channel_without_its_secret_is_refused_outside_demo_mode),
        cmocka_unit_test_setup_teardown(
            test_plain_http_to_another_machine_is_refused_outside_demo_mode, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
