#include "channel/config.h"
#include "auth/sign.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/evp.h>
#include <uv.h>

#include "core/currency.h"
#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"

#define MAX_AMOUNT 9007199254740991LL /* 2^53 - 1: amounts stay exact in Lua rules */
#define MAX_FILE (256u * 1024u)
#define MAX_CHANNELS PC_CHANNELS_MAX

static const char *const method_names[PC_METHOD_COUNT] = {
    "BALANCE", "COUPON", "CARD",   "QUICK_PAY",   "AGREEMENT", "NETBANK",
    "VA",      "OTC",    "WALLET", "QR_MERCHANT", "QR_BUYER"};
static const char *const refund_names[PC_REFUND_WAY_COUNT] = {"API", "PAYOUT", "FILE", "OFFLINE"};

const char *pc_pay_method_name(pc_pay_method_t m)
{
    return (unsigned)m < PC_METHOD_COUNT ? method_names[m] : "?";
}

const char *pc_refund_way_name(pc_refund_way_t w)
{
    return (unsigned)w < PC_REFUND_WAY_COUNT ? refund_names[w] : "?";
}

static int parse_name(const char *name, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (strcmp(name, names[i]) == 0)
            return i;
    return -1;
}

int pc_pay_method_parse(const char *name, pc_pay_method_t *out)
{
    int i = name ? parse_name(name, method_names, PC_METHOD_COUNT) : -1;
    if (i < 0)
        return PC_EINVAL;
    *out = (pc_pay_method_t)i;
    return 0;
}

int pc_refund_way_parse(const char *name, pc_refund_way_t *out)
{
    int i = name ? parse_name(name, refund_names, PC_REFUND_WAY_COUNT) : -1;
    if (i < 0)
        return PC_EINVAL;
    *out = (pc_refund_way_t)i;
    return 0;
}

/* ---- one file ------------------------------------------------------------------ */

/* Every option is declared once here: name, type, bounds, default, where it
 * goes. Parsing walks the table; checks that involve two fields (max_amount
 * >= min_amount) and formats (id, endpoint, currencies) follow it. */
typedef enum {
    F_STRING,
    F_INT,
    F_BOOL,
    F_METHODS,
    F_REFUND_METHODS,
    F_CURRENCIES,
    F_OBJECT,
    F_BY_CURRENCY /* read after the rest: see parse_by_currency */
} ftype_t;

typedef struct field {
    const char *name;
    ftype_t type;
    bool required;
    int64_t min, max; /* F_INT bounds; F_STRING: max is the capacity */
    int64_t def;      /* F_INT / F_BOOL default when optional and absent */
    size_t offset;
    const struct field *sub; /* F_OBJECT members, ending with a NULL name */
} field_t;

#define OFF(m) offsetof(pc_channel_t, m)

static const field_t fee_fields[] = {
    {"rate_bp", F_INT, true, 0, 10000, 0, OFF(fee.rate_bp), NULL},
    {"fixed", F_INT, false, 0, MAX_AMOUNT, 0, OFF(fee.fixed), NULL},
    {NULL, 0, 0, 0, 0, 0, 0, NULL}};
static const field_t refund_fields[] = {
    {"methods", F_REFUND_METHODS, true, 0, 0, 0, OFF(refund.methods), NULL},
    {"window_days", F_INT, true, 0, 3650, 0, OFF(refund.window_days), NULL},
    {"partial", F_BOOL, false, 0, 0, 0, OFF(refund.partial), NULL},
    {NULL, 0, 0, 0, 0, 0, 0, NULL}};
static const field_t timeout_fields[] = {
    {"connect_ms", F_INT, false, 1, 60000, 3000, OFF(timeouts.connect_ms), NULL},
    {"request_ms", F_INT, false, 1, 300000, 10000, OFF(timeouts.request_ms), NULL},
    {NULL, 0, 0, 0, 0, 0, 0, NULL}};
static const field_t alert_fields[] = {
    {"failure_rate_bp", F_INT, false, 1, 10000, 500, OFF(alert.failure_rate_bp), NULL},
    {"window_s", F_INT, false, 10, 86400, 300, OFF(alert.window_s), NULL},
    {NULL, 0, 0, 0, 0, 0, 0, NULL}};
/* Volume caps: what the acquirer's contract lets through the channel per UTC
 * day and month, in each currency's minor units (src/store/migrations/
 * 0080_channel_volume.sql). */
static const field_t volume_fields[] = {
    {"daily", F_INT, false, 1, MAX_AMOUNT, 0, OFF(volume.daily), NULL},
    {"monthly", F_INT, false, 1, MAX_AMOUNT, 0, OFF(volume.monthly), NULL},
    {NULL, 0, 0, 0, 0, 0, 0, NULL}};
static const field_t channel_fields[] = {
    {"id", F_STRING, true, 0, 33, 0, OFF(id), NULL},
    {"name", F_STRING, true, 0, 129, 0, OFF(name), NULL},
    {"endpoint", F_STRING, true, 0, 513, 0, OFF(endpoint), NULL},
    {"secret_ref", F_STRING, true, 0, 129, 0, OFF(secret_ref), NULL},
    {"methods", F_METHODS, true, 0, 0, 0, OFF(methods), NULL},
    {"currencies", F_CURRENCIES, true, 0, 0, 0, 0, NULL},
    {"min_amount", F_INT, true, 0, MAX_AMOUNT, 0, OFF(min_amount), NULL},
    {"max_amount", F_INT, true, 1, MAX_AMOUNT, 0, OFF(max_amount), NULL},
    {"fee", F_OBJECT, true, 0, 0, 0, 0, fee_fields},
    {"volume", F_OBJECT, false, 0, 0, 0, 0, volume_fields},
    {"refund", F_OBJECT, true, 0, 0, 0, 0, refund_fields},
    {"timeouts", F_OBJECT, false, 0, 0, 0, 0, timeout_fields},
    {"weight", F_INT, false, 0, 1000, 100, OFF(weight), NULL},
    {"enabled", F_BOOL, false, 0, 0, 1, OFF(enabled), NULL},
    {"alert", F_OBJECT, false, 0, 0, 0, 0, alert_fields},
    {"by_currency", F_BY_CURRENCY, false, 0, 0, 0, 0, NULL},
    {NULL, 0, 0, 0, 0, 0, 0, NULL}};

/* One currency's entry of by_currency, read into a scratch channel: -1 (below
 * every bound) marks a figure the entry leaves to the file's. */
static const field_t currency_fee_fields[] = {
    {"rate_bp", F_INT, false, 0, 10000, -1, OFF(fee.rate_bp), NULL},
    {"fixed", F_INT, false, 0, MAX_AMOUNT, -1, OFF(fee.fixed), NULL},
    {NULL, 0, 0, 0, 0, 0, 0, NULL}};
static const field_t currency_volume_fields[] = {
    {"daily", F_INT, false, 1, MAX_AMOUNT, -1, OFF(volume.daily), NULL},
    {"monthly", F_INT, false, 1, MAX_AMOUNT, -1, OFF(volume.monthly), NULL},
    {NULL, 0, 0, 0, 0, 0, 0, NULL}};
static const field_t currency_fields[] = {
    {"min_amount", F_INT, false, 0, MAX_AMOUNT, -1, OFF(min_amount), NULL},
    {"max_amount", F_INT, false, 1, MAX_AMOUNT, -1, OFF(max_amount), NULL},
    {"fee", F_OBJECT, false, 0, 0, 0, 0, currency_fee_fields},
    {"volume", F_OBJECT, false, 0, 0, 0, 0, currency_volume_fields},
    {NULL, 0, 0, 0, 0, 0, 0, NULL}};

typedef struct {
    const char *label;
    json_t *errors;
    int count;
} problems_t;

static void problem(problems_t *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(problems_t *p, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    p->count++;
    if (p->errors) {
        char full[600];
        snprintf(full, sizeof full, "%s: %s", p->label, msg);
        json_array_append_new(p->errors,
                              json_pack("{s:s, s:s}", "file", p->label, "message", full));
    }
}

/* Parses a list of names into a bit mask. */
static void parse_name_list(problems_t *p, const char *path, const json_t *v,
                            const char *const *names, int n, uint32_t *out)
{
    *out = 0;
    if (!json_is_array(v) || json_array_size(v) == 0) {
        problem(p, "%s must be a non-empty list", path);
        return;
    }
    size_t i;
    const json_t *item;
    json_array_foreach(v, i, item)
    {
        int k = json_is_string(item) ? parse_name(json_string_value(item), names, n) : -1;
        if (k < 0) {
            char all[200] = "";
            for (int j = 0; j < n; j++) {
                strncat(all, names[j], sizeof all - strlen(all) - 1);
                if (j + 1 < n)
                    strncat(all, ", ", sizeof all - strlen(all) - 1);
            }
            problem(p, "%s[%zu] must be one of %s", path, i, all);
            continue;
        }
        if (*out & (1u << k))
            problem(p, "%s lists %s twice", path, names[k]);
        *out |= 1u << k;
    }
}

static void parse_currencies(problems_t *p, const json_t *v, pc_channel_t *ch)
{
    if (!json_is_array(v) || json_array_size(v) == 0 ||
        json_array_size(v) > PC_CHANNEL_MAX_CURRENCIES) {
        problem(p, "currencies must be a list of 1 to %d ISO 4217 codes",
                PC_CHANNEL_MAX_CURRENCIES);
        return;
    }
    size_t i;
    const json_t *item;
    json_array_foreach(v, i, item)
    {
        const char *s = json_string_value(item);
        if (!pc_currency_known(s)) {
            /* Shown whole or not at all: a cut could split a character. */
            const char *shown = !s ? "not a string" : strlen(s) <= 16 ? s : "too long";
            problem(p,
                    "currencies[%zu] (%s) is not an upper-case ISO 4217 currency code like \"CNY\"",
                    i, shown);
            continue;
        }
        for (size_t j = 0; j < ch->ncurrencies; j++)
            if (strcmp(ch->currencies[j], s) == 0)
                problem(p, "currencies lists %s twice", s);
        memcpy(ch->currencies[ch->ncurrencies++], s, 4);
    }
}

static void parse_fields(problems_t *p, const char *prefix, const json_t *obj,
                         const field_t *fields, pc_channel_t *ch)
{
    char *base = (char *)ch;
    /* Unknown keys first: "max_ammount" must not pass as "absent, default". */
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        if (key[0] == '_')
            continue;
        const field_t *f = fields;
        while (f->name && strcmp(f->name, key) != 0)
            f++;
        if (!f->name)
            problem(p, "unknown field \"%s%s\"", prefix, key);
    }
    for (const field_t *f = fields; f->name; f++) {
        char path[64];
        snprintf(path, sizeof path, "%s%s", prefix, f->name);
        v = json_object_get(obj, f->name);
        if (!v) {
            if (f->required)
                problem(p, "%s is required", path);
            else if (f->type == F_INT)
                *(int64_t *)(base + f->offset) = f->def;
            else if (f->type == F_BOOL)
                *(bool *)(base + f->offset) = f->def != 0;
            else if (f->type == F_OBJECT) {
                json_t *empty = json_object(); /* an absent object: all defaults */
                parse_fields(p, "", empty, f->sub, ch);
                json_decref(empty);
            }
            continue;
        }
        switch (f->type) {
        case F_STRING: {
            const char *s = json_string_value(v);
            if (!s || !*s || strlen(s) >= (size_t)f->max)
                problem(p, "%s must be a non-empty string of at most %d characters", path,
                        (int)f->max - 1);
            else
                memcpy(base + f->offset, s, strlen(s) + 1);
            break;
        }
        case F_INT: {
            if (!json_is_integer(v) || json_integer_value(v) < f->min ||
                json_integer_value(v) > f->max)
                problem(p, "%s must be an integer from %lld to %lld", path, (long long)f->min,
                        (long long)f->max);
            else
                *(int64_t *)(base + f->offset) = json_integer_value(v);
            break;
        }
        case F_BOOL:
            if (!json_is_boolean(v))
                problem(p, "%s must be true or false", path);
            else
                *(bool *)(base + f->offset) = json_is_true(v);
            break;
        case F_METHODS:
            parse_name_list(p, path, v, method_names, PC_METHOD_COUNT,
                            (uint32_t *)(base + f->offset));
            break;
        case F_REFUND_METHODS:
            parse_name_list(p, path, v, refund_names, PC_REFUND_WAY_COUNT,
                            (uint32_t *)(base + f->offset));
            break;
        case F_CURRENCIES:
            parse_currencies(p, v, ch);
            break;
        case F_BY_CURRENCY:
            break;
        case F_OBJECT: {
            if (!json_is_object(v)) {
                problem(p, "%s must be an object", path);
                break;
            }
            char sub[80];
            snprintf(sub, sizeof sub, "%s.", path);
            parse_fields(p, sub, v, f->sub, ch);
            break;
        }
        }
    }
}

static int64_t or_default(int64_t v, int64_t def)
{
    return v >= 0 ? v : def;
}

/* Fills amounts[] with the file's figures, then with each by_currency entry's
 * (a listed currency, keyed by its code). */
static void parse_by_currency(problems_t *p, const json_t *v, pc_channel_t *ch)
{
    for (size_t i = 0; i < ch->ncurrencies; i++)
        ch->amounts[i] =
            (pc_channel_amounts_t){ch->min_amount, ch->max_amount,   ch->fee.rate_bp,
                                   ch->fee.fixed,  ch->volume.daily, ch->volume.monthly};
    if (!v)
        return;
    if (!json_is_object(v)) {
        problem(p, "by_currency must be an object keyed by currency, like {\"JPY\": "
                   "{\"min_amount\": 100}}");
        return;
    }
    const char *code;
    const json_t *entry;
    json_object_foreach((json_t *)v, code, entry)
    {
        if (code[0] == '_')
            continue;
        size_t i = 0;
        while (i < ch->ncurrencies && strcmp(ch->currencies[i], code) != 0)
            i++;
        if (i == ch->ncurrencies) {
            problem(p, "by_currency has %s, which is not in currencies", code);
            continue;
        }
        char prefix[64];
        snprintf(prefix, sizeof prefix, "by_currency.%s.", code);
        if (!json_is_object(entry)) {
            problem(p, "by_currency.%s must be an object", code);
            continue;
        }
        pc_channel_t scratch;
        memset(&scratch, 0, sizeof scratch);
        parse_fields(p, prefix, entry, currency_fields, &scratch);
        pc_channel_amounts_t *a = &ch->amounts[i];
        a->min_amount = or_default(scratch.min_amount, a->min_amount);
        a->max_amount = or_default(scratch.max_amount, a->max_amount);
        a->fee_rate_bp = or_default(scratch.fee.rate_bp, a->fee_rate_bp);
        a->fee_fixed = or_default(scratch.fee.fixed, a->fee_fixed);
        a->daily_volume = or_default(scratch.volume.daily, a->daily_volume);
        a->monthly_volume = or_default(scratch.volume.monthly, a->monthly_volume);
        if (a->max_amount < a->min_amount)
            problem(p, "by_currency.%s: max_amount (%lld) must be ≥ min_amount (%lld)", code,
                    (long long)a->max_amount, (long long)a->min_amount);
        if (a->daily_volume && a->monthly_volume && a->monthly_volume < a->daily_volume)
            problem(p, "by_currency.%s: volume.monthly (%lld) must be ≥ volume.daily (%lld)", code,
                    (long long)a->monthly_volume, (long long)a->daily_volume);
    }
}

/* Replaces ${NAME} and ${NAME:-default} with the environment. */
static int expand_env(problems_t *p, const char *in, char *out, size_t outlen)
{
    size_t o = 0;
    for (const char *s = in; *s;) {
        if (s[0] == '$' && s[1] == '{') {
            const char *end = strchr(s, '}');
            if (!end) {
                problem(p, "endpoint has \"${\" without a closing \"}\"");
                return -1;
            }
            char name[64] = "", def[256] = "";
            const char *colon = strstr(s, ":-");
            bool has_def = colon && colon < end;
            const char *name_end = has_def ? colon : end;
            size_t nlen = (size_t)(name_end - (s + 2));
            if (nlen == 0 || nlen >= sizeof name) {
                problem(p, "endpoint has an invalid ${...} variable name");
                return -1;
            }
            memcpy(name, s + 2, nlen);
            for (size_t i = 0; i < nlen; i++) {
                char c = name[i];
                if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')) {
                    problem(p, "endpoint variable \"%s\" must be upper case letters, digits, _",
                            name);
                    return -1;
                }
            }
            if (has_def) {
                size_t dlen = (size_t)(end - (colon + 2));
                if (dlen >= sizeof def)
                    dlen = sizeof def - 1;
                memcpy(def, colon + 2, dlen);
                def[dlen] = '\0';
            }
            const char *val = getenv(name);
            if (!val || !*val) {
                if (!has_def) {
                    problem(p,
                            "endpoint uses ${%s} but %s is not set and has no default "
                            "(write ${%s:-value})",
                            name, name, name);
                    return -1;
                }
                val = def;
            }
            size_t vlen = strlen(val);
            if (o + vlen >= outlen) {
                problem(p, "endpoint is too long after substitution");
                return -1;
            }
            memcpy(out + o, val, vlen);
            o += vlen;
            s = end + 1;
            continue;
        }
        if (o + 1 >= outlen) {
            problem(p, "endpoint is too long after substitution");
            return -1;
        }
        out[o++] = *s++;
    }
    out[o] = '\0';
    return 0;
}

static bool valid_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 32)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return false;
    return true;
}

static bool valid_ref(const char *s)
{
    if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || *s == '_'))
        return false;
    for (; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == '.'))
            return false;
    return true;
}

int pc_channel_parse(const char *label, const char *expected_id, const char *text, size_t len,
                     pc_channel_t *out, json_t *errors)
{
    problems_t p = {.label = label, .errors = errors};
    memset(out, 0, sizeof *out);
    json_error_t jerr;
    json_t *doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        problem(&p, "invalid JSON at line %d: %s", jerr.line, jerr.text);
        return PC_EINVAL;
    }
    if (!json_is_object(doc)) {
        problem(&p, "must be a JSON object");
        json_decref(doc);
        return PC_EINVAL;
    }
    parse_fields(&p, "", doc, channel_fields, out);
    parse_by_currency(&p, json_object_get(doc, "by_currency"), out);

    if (out->id[0] && !valid_id(out->id))
        problem(&p, "id must be 1 to 32 of [a-z0-9_]");
    if (out->id[0] && expected_id && strcmp(out->id, expected_id) != 0)
        problem(&p, "id \"%s\" must match the file name (\"%s\")", out->id, expected_id);
    if (out->max_amount && out->max_amount < out->min_amount)
        problem(&p, "max_amount must be an integer ≥ min_amount");
    if (out->volume.daily && out->volume.monthly && out->volume.monthly < out->volume.daily)
        problem(&p, "volume.monthly (%lld) must be ≥ volume.daily (%lld)",
                (long long)out->volume.monthly, (long long)out->volume.daily);
    if (out->secret_ref[0] && !valid_ref(out->secret_ref))
        problem(&p, "secret_ref must name an environment variable or config key "
                    "([A-Za-z_][A-Za-z0-9_.]*), not hold a secret");
    if (out->endpoint[0]) {
        char expanded[sizeof out->endpoint];
        if (expand_env(&p, out->endpoint, expanded, sizeof expanded) == 0) {
            const char *auth = strstr(expanded, "://");
            if (strncmp(expanded, "http://", 7) != 0 && strncmp(expanded, "https://", 8) != 0)
                problem(&p, "endpoint must be an http:// or https:// URL");
            else if (memchr(auth + 3, '@', strcspn(auth + 3, "/?#")))
                /* user:password@host: credentials in a file, and a host
                 * that is not where the text before "@" seems to point
                 * (http://localhost:x@elsewhere/ is elsewhere). */
                problem(&p, "endpoint must not carry user information (user@host): the "
                            "channel's secret comes from secret_ref");
            else
                memcpy(out->endpoint, expanded, sizeof expanded);
        }
    }
    out->timeouts.open_ms = out->timeouts.request_ms;
    if (pc_sha256_hex(text, len, out->version) < 0)
        out->version[0] = 0;
    json_decref(doc);
    return p.count ? PC_EINVAL : 0;
}

const pc_channel_amounts_t *pc_channel_amounts(const pc_channel_t *ch, const char *currency)
{
    for (size_t i = 0; currency && i < ch->ncurrencies; i++)
        if (strcmp(ch->currencies[i], currency) == 0)
            return &ch->amounts[i];
    return NULL;
}

bool pc_channel_accepts(const pc_channel_t *ch, pc_pay_method_t method, const char *currency,
                        int64_t amount)
{
    if ((unsigned)method >= PC_METHOD_COUNT || !(ch->methods & (1u << method)))
        return false;
    if (!currency)
        return true;
    const pc_channel_amounts_t *a = pc_channel_amounts(ch, currency);
    return a && amount >= a->min_amount && amount <= a->max_amount;
}

bool pc_channel_supports_refund(const pc_channel_t *ch, pc_refund_way_t way)
{
    return (unsigned)way < PC_REFUND_WAY_COUNT && (ch->refund.methods & (1u << way));
}

int64_t pc_channel_fee(const pc_channel_t *ch, const char *currency, int64_t amount)
{
    const pc_channel_amounts_t *a = pc_channel_amounts(ch, currency);
    if (!a)
        return 0;
    __int128 p = (__int128)amount * a->fee_rate_bp;
    __int128 q = p / 10000;
    if ((p % 10000) * 2 >= 10000)
        q++;
    return (int64_t)q + a->fee_fixed;
}

static json_t *name_list(uint32_t mask, const char *const *names, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        if (mask & (1u << i))
            json_array_append_new(a, json_string(names[i]));
    return a;
}

/* A volume cap as shown: null for none. */
static json_t *cap_json(int64_t cap)
{
    return cap ? json_integer((json_int_t)cap) : json_null();
}

json_t *pc_channel_to_json(const pc_channel_t *ch)
{
    json_t *cur = json_array(), *by = json_object();
    for (size_t i = 0; i < ch->ncurrencies; i++) {
        const pc_channel_amounts_t *a = &ch->amounts[i];
        json_array_append_new(cur, json_string(ch->currencies[i]));
        json_object_set_new(by, ch->currencies[i],
                            json_pack("{s:I, s:I, s:{s:I, s:I}, s:{s:o, s:o}}", "min_amount",
                                      (json_int_t)a->min_amount, "max_amount",
                                      (json_int_t)a->max_amount, "fee", "rate_bp",
                                      (json_int_t)a->fee_rate_bp, "fixed", (json_int_t)a->fee_fixed,
                                      "volume", "daily", cap_json(a->daily_volume), "monthly",
                                      cap_json(a->monthly_volume)));
    }
    /* by_currency: every currency's figures as they apply, the file's where
     * its by_currency gives none. */
    return json_pack(
        "{s:s, s:s, s:s, s:s, s:o, s:o, s:I, s:I, s:{s:I, s:I}, s:{s:o, s:o}, s:o,"
        " s:{s:o, s:I, s:b}, s:{s:I, s:I}, s:I, s:b, s:{s:I, s:I}, s:s}",
        "id", ch->id, "name", ch->name, "endpoint", ch->endpoint, "secret_ref", ch->secret_ref,
        "methods", name_list(ch->methods, method_names, PC_METHOD_COUNT), "currencies", cur,
        "min_amount", (json_int_t)ch->min_amount, "max_amount", (json_int_t)ch->max_amount, "fee",
        "rate_bp", (json_int_t)ch->fee.rate_bp, "fixed", (json_int_t)ch->fee.fixed, "volume",
        "daily", cap_json(ch->volume.daily), "monthly", cap_json(ch->volume.monthly), "by_currency",
        by, "refund", "methods", name_list(ch->refund.methods, refund_names, PC_REFUND_WAY_COUNT),
        "window_days", (json_int_t)ch->refund.window_days, "partial", ch->refund.partial,
        "timeouts", "connect_ms", (json_int_t)ch->timeouts.connect_ms, "request_ms",
        (json_int_t)ch->timeouts.request_ms, "weight", (json_int_t)ch->weight, "enabled",
        ch->enabled, "alert", "failure_rate_bp", (json_int_t)ch->alert.failure_rate_bp, "window_s",
        (json_int_t)ch->alert.window_s, "version", ch->version);
}

/* ---- a set ------------------------------------------------------------------------ */

struct pc_channel_set {
    int refs;
    size_t n;
    pc_channel_t *items; /* sorted by id */
    char version[65];
    time_t loaded_at;
};

size_t pc_channel_set_count(const pc_channel_set_t *set)
{
    return set ? set->n : 0;
}

const pc_channel_t *pc_channel_set_at(const pc_channel_set_t *set, size_t i)
{
    return set && i < set->n ? &set->items[i] : NULL;
}

static int cmp_id(const void *key, const void *item)
{
    return strcmp(key, ((const pc_channel_t *)item)->id);
}

const pc_channel_t *pc_channel_set_find(const pc_channel_set_t *set, const char *id)
{
    if (!set || !id)
        return NULL;
    return bsearch(id, set->items, set->n, sizeof *set->items, cmp_id);
}

const char *pc_channel_set_version(const pc_channel_set_t *set)
{
    return set ? set->version : "";
}

void pc_channel_set_release(pc_channel_set_t *set)
{
    if (set && --set->refs == 0) {
        free(set->items);
        free(set);
    }
}

static int json_file(const struct dirent *d)
{
    size_t n = strlen(d->d_name);
    return d->d_name[0] != '.' && n > 5 && strcmp(d->d_name + n - 5, ".json") == 0;
}

static int cmp_channel(const void *a, const void *b)
{
    return strcmp(((const pc_channel_t *)a)->id, ((const pc_channel_t *)b)->id);
}

static char *read_small_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = malloc(MAX_FILE + 1);
    size_t n = buf ? fread(buf, 1, MAX_FILE + 1, f) : 0;
    int bad = !buf || ferror(f) || n > MAX_FILE;
    fclose(f);
    if (bad) {
        free(buf);
        errno = buf ? EFBIG : ENOMEM;
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* Whether url is plain http:// to anything but this machine's loopback. */
static bool plain_http_off_host(const char *url)
{
    if (strncmp(url, "http://", 7) != 0)
        return false;
    const char *h = url + 7;
    if (memchr(h, '@', strcspn(h, "/?#")))
        return true; /* the host is after the user information */
    size_t n = h[0] == '[' ? strcspn(h, "]") + 1 : strcspn(h, ":/?#");
    if (n == 9 && !strncasecmp(h, "localhost", 9))
        return false;
    if (n == 5 && !strncmp(h, "[::1]", 5))
        return false;
    if (n >= 4 && !strncmp(h, "127.", 4) && strspn(h, "0123456789.") == n)
        return false;
    return true;
}

int pc_channel_set_load(const char *dir, unsigned flags, pc_channel_set_t **out, json_t *errors)
{
    struct dirent **names = NULL;
    int n = scandir(dir, &names, json_file, alphasort);
    *out = NULL;
    if (n < 0) {
        char msg[300];
        snprintf(msg, sizeof msg, "%.200s: cannot read the directory: %s", dir, strerror(errno));
        if (errors)
            json_array_append_new(errors, json_pack("{s:s, s:s}", "file", dir, "message", msg));
        return PC_EIO;
    }
    int rc = 0;
    pc_channel_set_t *set = calloc(1, sizeof *set);
    if (set)
        set->items = calloc((size_t)(n ? n : 1), sizeof *set->items);
    if (!set || !set->items) {
        rc = PC_ENOMEM;
        goto done;
    }
    problems_t p = {.label = "channels/", .errors = errors};
    if (n == 0) {
        problem(&p, "no channel files (*.json); a set without channels is refused (disable "
                    "channels instead of removing them all)");
        rc = PC_EINVAL;
        goto done;
    }
    if (n > MAX_CHANNELS) {
        problem(&p, "more than %d channel files", MAX_CHANNELS);
        rc = PC_EINVAL;
        goto done;
    }
    /* The set's version hashes every file's name and content hash, so any
     * change to any file gives a new version. */
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(md);
        rc = PC_ENOMEM;
        goto done;
    }
    for (int i = 0; i < n; i++) {
        char path[4096], label[300], id[256];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
        snprintf(label, sizeof label, "channels/%s", names[i]->d_name);
        snprintf(id, sizeof id, "%.*s", (int)(strlen(names[i]->d_name) - 5), names[i]->d_name);
        size_t len;
        char *text = read_small_file(path, &len);
        if (!text) {
            problems_t fp = {.label = label, .errors = errors};
            problem(&fp, "cannot read: %s",
                    errno == EFBIG ? "larger than 256 KiB" : strerror(errno));
            rc = PC_EINVAL;
            continue;
        }
        pc_channel_t *ch = &set->items[set->n];
        int prc = pc_channel_parse(label, id, text, len, ch, errors);
        const char *secret = prc == 0 ? getenv(ch->secret_ref) : NULL;
        bool demo = flags & PC_CHANNELS_DEMO;
        if (prc == 0 && !demo && !(flags & PC_CHANNELS_SECRETS_ELSEWHERE) &&
            (!secret || !secret[0])) {
            problems_t fp = {.label = label, .errors = errors};
            problem(&fp,
                    "secret_ref %s is not set in the environment: set it to this channel's "
                    "secret (PAYCORE_DEMO=true uses the public demo secret, for development "
                    "and tests only)",
                    ch->secret_ref);
            prc = PC_EINVAL;
        }
        if (prc == 0 && !demo && plain_http_off_host(ch->endpoint)) {
            /* Card numbers and CVVs go to the channel in the request body,
             * and a man in the middle of plain HTTP could also rewrite an
             * answer's status line, which the signature does not cover. */
            problems_t fp = {.label = label, .errors = errors};
            problem(&fp,
                    "endpoint %s is plain http:// to another machine: card data would cross "
                    "the network in clear; use https:// (plain http only to a loopback "
                    "address, such as a local TLS proxy)",
                    ch->endpoint);
            prc = PC_EINVAL;
        }
        if (prc == 0) {
            set->n++;
            EVP_DigestUpdate(md, names[i]->d_name, strlen(names[i]->d_name) + 1);
            EVP_DigestUpdate(md, ch->version, 64);
        } else {
            rc = PC_EINVAL;
        }
        free(text);
    }
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    EVP_DigestFinal_ex(md, digest, &dlen);
    EVP_MD_CTX_free(md);
    for (unsigned i = 0; i < 32 && dlen == 32; i++)
        snprintf(set->version + 2 * i, 3, "%02x", digest[i]);
    if (rc == 0) {
        /* File names equal ids, so this only sorts; duplicates cannot happen
         * but are checked in case the rule about names ever changes. */
        qsort(set->items, set->n, sizeof *set->items, cmp_channel);
        for (size_t i = 1; i < set->n; i++) {
            if (strcmp(set->items[i - 1].id, set->items[i].id) == 0) {
                problem(&p, "channel id \"%s\" is declared twice", set->items[i].id);
                rc = PC_EINVAL;
            }
        }
    }

done:
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
    if (rc == 0) {
        set->refs = 1;
        *out = set;
    } else if (set) {
        free(set->items);
        free(set);
    }
    return rc;
}

/* ---- the registry -------------------------------------------------------------------- */

typedef struct override {
    char id[33];
    int enabled;
    struct override *next;
} override_t;

/* What a channel was sent in a currency in a UTC day ("YYYY-MM-DD") or month
 * ("YYYY-MM"), as last read from channel_volume. */
typedef struct volume_use {
    char id[33];
    char currency[4];
    char period[11];
    int64_t used;
    struct volume_use *next;
} volume_use_t;

typedef struct waiter {
    pc_channels_reload_cb cb;
    void *data;
    struct waiter *next;
} waiter_t;

typedef struct job {
    uv_work_t req;
    pc_channels_t *chs;
    pc_channel_set_t *set;
    json_t *errors;
    int rc;
    waiter_t *waiters;
} job_t;

struct pc_channels {
    char *dir;
    bool demo_secrets;
    pc_channel_set_t *set;
    override_t *overrides;
    volume_use_t *volume;
    const char *status;
    json_t *errors; /* of the last refused reload */
    uv_loop_t *loop;
    job_t *job;
    waiter_t *pending;
    bool closing;
};

pc_channels_t *pc_channels_new(const char *dir, bool demo_secrets)
{
    pc_channels_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->demo_secrets = demo_secrets;
    c->dir = strdup(dir);
    c->errors = json_array();
    c->status = "missing";
    if (!c->dir || !c->errors) {
        free(c->dir);
        json_decref(c->errors);
        free(c);
        return NULL;
    }
    pc_metrics_describe("pc_channel_reloads_total", PC_METRIC_COUNTER,
                        "Channel configuration reloads by result (ok, refused).");
    return c;
}

bool pc_channels_demo_secrets(const pc_channels_t *chs)
{
    return chs && chs->demo_secrets;
}

static void notify(waiter_t *w, pc_channels_t *c, int status)
{
    while (w) {
        waiter_t *next = w->next;
        if (w->cb)
            w->cb(c, status, w->data);
        free(w);
        w = next;
    }
}

static void destroy(pc_channels_t *c)
{
    pc_channel_set_release(c->set);
    while (c->overrides) {
        override_t *o = c->overrides;
        c->overrides = o->next;
        free(o);
    }
    while (c->volume) {
        volume_use_t *u = c->volume;
        c->volume = u->next;
        free(u);
    }
    json_decref(c->errors);
    free(c->dir);
    free(c);
}

void pc_channels_free(pc_channels_t *chs)
{
    if (!chs)
        return;
    if (chs->job) {
        chs->closing = true;
        return;
    }
    notify(chs->pending, chs, PC_ECLOSED);
    destroy(chs);
}

/* Takes over set (may be NULL) and errors from a load, on the loop thread. */
static int apply_load(pc_channels_t *c, int rc, pc_channel_set_t *set, json_t *errors)
{
    if (rc == 0) {
        c->status = "ok";
        json_array_clear(c->errors);
        json_decref(errors);
        if (c->set && strcmp(c->set->version, set->version) == 0) {
            /* Same files: keep the serving set, so pointers callers borrowed
             * from it stay valid. */
            pc_channel_set_release(set);
            return 0;
        }
        set->loaded_at = time(NULL);
        /* A request timeout cut by this file does not cut the requests sent
         * under the one before: how long they may be open is kept. */
        for (size_t i = 0; c->set && i < set->n; i++) {
            const pc_channel_t *old = pc_channel_set_find(c->set, set->items[i].id);
            if (old && old->timeouts.open_ms > set->items[i].timeouts.open_ms)
                set->items[i].timeouts.open_ms = old->timeouts.open_ms;
        }
        pc_channel_set_release(c->set);
        c->set = set;
        {
            pc_metrics_add("pc_channel_reloads_total", "result=\"ok\"", 1);
            pc_log_fields(PC_LOG_INFO, "channels.reload",
                          json_pack("{s:s, s:i}", "version", set->version, "channels", (int)set->n),
                          "channel configuration loaded");
        }
        return 0;
    }
    c->status = c->set ? "refused" : "missing";
    bool repeat = json_equal(c->errors, errors);
    json_decref(c->errors);
    c->errors = errors;
    if (!repeat) {
        pc_metrics_add("pc_channel_reloads_total", "result=\"refused\"", 1);
        size_t i;
        json_t *e;
        json_array_foreach(errors, i, e)
        {
            pc_log_fields(PC_LOG_ERROR, "channels.reload_refused",
                          json_pack("{s:O}", "file", json_object_get(e, "file")), "%s",
                          json_string_value(json_object_get(e, "message")));
        }
    }
    return rc;
}

int pc_channels_reload(pc_channels_t *chs)
{
    json_t *errors = json_array();
    pc_channel_set_t *set = NULL;
    int rc = errors ? pc_channel_set_load(chs->dir, chs->demo_secrets ? PC_CHANNELS_DEMO : 0, &set,
                                          errors)
                    : PC_ENOMEM;
    return apply_load(chs, rc, set, errors ? errors : json_array());
}

static void reload_work_cb(uv_work_t *req)
{
    job_t *job = req->data;
    job->rc = pc_channel_set_load(job->chs->dir, job->chs->demo_secrets ? PC_CHANNELS_DEMO : 0,
                                  &job->set, job->errors);
}

static int start_job(pc_channels_t *c, waiter_t *waiters);

static void reload_after_work_cb(uv_work_t *req, int status)
{
    job_t *job = req->data;
    pc_channels_t *c = job->chs;
    c->job = NULL;
    waiter_t *waiters = job->waiters;
    if (c->closing || status == UV_ECANCELED) {
        pc_channel_set_release(job->set);
        json_decref(job->errors);
        free(job);
        notify(waiters, c, PC_ECLOSED);
        notify(c->pending, c, PC_ECLOSED);
        c->pending = NULL;
        if (c->closing)
            destroy(c);
        return;
    }
    int rc = apply_load(c, job->rc, job->set, job->errors);
    free(job);
    notify(waiters, c, rc);
    if (c->pending) {
        waiter_t *next = c->pending;
        c->pending = NULL;
        int src = start_job(c, next);
        if (src < 0)
            notify(next, c, src);
    }
}

static int start_job(pc_channels_t *c, waiter_t *waiters)
{
    job_t *job = calloc(1, sizeof *job);
    if (!job)
        return PC_ENOMEM;
    job->errors = json_array();
    if (!job->errors) {
        free(job);
        return PC_ENOMEM;
    }
    job->chs = c;
    job->req.data = job;
    job->waiters = waiters;
    if (uv_queue_work(c->loop, &job->req, reload_work_cb, reload_after_work_cb) < 0) {
        json_decref(job->errors);
        free(job);
        return PC_EIO;
    }
    c->job = job;
    return 0;
}

int pc_channels_reload_async(pc_channels_t *chs, struct uv_loop_s *loop, pc_channels_reload_cb cb,
                             void *data)
{
    if (!chs || !loop || chs->closing)
        return PC_EINVAL;
    waiter_t *w = calloc(1, sizeof *w);
    if (!w)
        return PC_ENOMEM;
    w->cb = cb;
    w->data = data;
    chs->loop = loop;
    if (chs->job) {
        w->next = chs->pending;
        chs->pending = w;
        return 0;
    }
    int rc = start_job(chs, w);
    if (rc < 0)
        free(w);
    return rc;
}

const pc_channel_set_t *pc_channels_current(const pc_channels_t *chs)
{
    return chs->set;
}

pc_channel_set_t *pc_channels_acquire(pc_channels_t *chs)
{
    if (chs->set)
        chs->set->refs++;
    return chs->set;
}

const pc_channel_t *pc_channels_find(const pc_channels_t *chs, const char *id)
{
    return pc_channel_set_find(chs->set, id);
}

static override_t *find_override(const pc_channels_t *chs, const char *id)
{
    for (override_t *o = chs->overrides; o; o = o->next)
        if (strcmp(o->id, id) == 0)
            return o;
    return NULL;
}

int pc_channels_set_override(pc_channels_t *chs, const char *id, int enabled_or_minus1_for_none)
{
    int v = enabled_or_minus1_for_none;
    if (!id || v < -1 || v > 1)
        return PC_EINVAL;
    if (!pc_channels_find(chs, id))
        return PC_ENOTFOUND;
    override_t *o = find_override(chs, id);
    if (v == -1) {
        for (override_t **pp = &chs->overrides; *pp; pp = &(*pp)->next) {
            if (*pp == o) {
                *pp = o->next;
                free(o);
                break;
            }
        }
        return 0;
    }
    if (!o) {
        o = calloc(1, sizeof *o);
        if (!o)
            return PC_ENOMEM;
        snprintf(o->id, sizeof o->id, "%s", id);
        o->next = chs->overrides;
        chs->overrides = o;
    }
    o->enabled = v;
    return 0;
}

int pc_channels_override(const pc_channels_t *chs, const char *id)
{
    const override_t *o = id ? find_override(chs, id) : NULL;
    return o ? o->enabled : -1;
}

bool pc_channels_effective_enabled(const pc_channels_t *chs, const char *id)
{
    const pc_channel_t *ch = pc_channels_find(chs, id);
    if (!ch)
        return false;
    int o = pc_channels_override(chs, id);
    return o >= 0 ? o == 1 : ch->enabled;
}

/* ---- volume caps ---- */

static volume_use_t *find_volume(const pc_channels_t *chs, const char *id, const char *currency,
                                 size_t period_len)
{
    for (volume_use_t *u = chs->volume; u; u = u->next)
        if (!strcmp(u->id, id) && !strcmp(u->currency, currency) && strlen(u->period) == period_len)
            return u;
    return NULL;
}

void pc_channels_note_volume(pc_channels_t *chs, const char *id, const char *currency,
                             const char *period, int64_t used)
{
    size_t len = period ? strlen(period) : 0;
    if (!id || !currency || (len != 10 && len != 7) || strlen(id) >= 33 || strlen(currency) >= 4)
        return;
    volume_use_t *u = find_volume(chs, id, currency, len);
    if (!u) {
        u = calloc(1, sizeof *u);
        if (!u)
            return;
        snprintf(u->id, sizeof u->id, "%s", id);
        snprintf(u->currency, sizeof u->currency, "%s", currency);
        u->next = chs->volume;
        chs->volume = u;
    } else if (strcmp(u->period, period) > 0) {
        return; /* an older reading than the one kept */
    }
    snprintf(u->period, sizeof u->period, "%s", period);
    u->used = used;
}

/* The UTC day ("YYYY-MM-DD") and month ("YYYY-MM") that hold at now. */
static void utc_periods(int64_t now, char day[11], char month[8])
{
    time_t t = (time_t)now;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(day, 11, "%Y-%m-%d", &tm);
    strftime(month, 8, "%Y-%m", &tm);
}

/* What was sent in the period of this length that holds now (0 when the
 * last reading was of an earlier one). */
static int64_t volume_used(const pc_channels_t *chs, const char *id, const char *currency,
                           const char *now_period)
{
    const volume_use_t *u = find_volume(chs, id, currency, strlen(now_period));
    return u && !strcmp(u->period, now_period) ? u->used : 0;
}

bool pc_channels_volume_at(const pc_channels_t *chs, const pc_channel_t *ch, size_t i, int64_t now,
                           pc_channel_volume_t *out)
{
    const pc_channel_amounts_t *a = i < ch->ncurrencies ? &ch->amounts[i] : NULL;
    if (!a || (!a->daily_volume && !a->monthly_volume))
        return false;
    out->currency = ch->currencies[i];
    utc_periods(now, out->day, out->month);
    out->day_sent = volume_used(chs, ch->id, out->currency, out->day);
    out->month_sent = volume_used(chs, ch->id, out->currency, out->month);
    out->daily = a->daily_volume;
    out->monthly = a->monthly_volume;
    return true;
}

bool pc_channels_volume_room(const pc_channels_t *chs, const pc_channel_t *ch, const char *currency,
                             int64_t amount, int64_t now)
{
    const pc_channel_amounts_t *a = pc_channel_amounts(ch, currency);
    pc_channel_volume_t v;
    if (!a || !pc_channels_volume_at(chs, ch, (size_t)(a - ch->amounts), now, &v))
        return true;
    return (!v.daily || v.day_sent + amount <= v.daily) &&
           (!v.monthly || v.month_sent + amount <= v.monthly);
}

json_t *pc_channels_volume_json(const pc_channels_t *chs, const pc_channel_t *ch, int64_t now)
{
    json_t *out = json_object();
    pc_channel_volume_t v;
    for (size_t i = 0; i < ch->ncurrencies; i++)
        if (pc_channels_volume_at(chs, ch, i, now, &v))
            json_object_set_new(
                out, v.currency,
                json_pack("{s:s, s:I, s:o, s:s, s:I, s:o}", "day", v.day, "day_sent",
                          (json_int_t)v.day_sent, "daily", cap_json(v.daily), "month", v.month,
                          "month_sent", (json_int_t)v.month_sent, "monthly", cap_json(v.monthly)));
    return out;
}

bool pc_channels_capped(const pc_channels_t *chs)
{
    for (size_t i = 0; i < pc_channel_set_count(chs->set); i++)
        for (size_t k = 0; k < chs->set->items[i].ncurrencies; k++)
            if (chs->set->items[i].amounts[k].daily_volume ||
                chs->set->items[i].amounts[k].monthly_volume)
                return true;
    return false;
}

/* The channels of the set that take method, currency and amount; with
 * switched_on, only those switched on now. */
static size_t match(const pc_channels_t *chs, pc_pay_method_t method, const char *currency,
                    int64_t amount, bool switched_on, const pc_channel_t **out, size_t max)
{
    size_t found = 0;
    for (size_t i = 0; i < pc_channel_set_count(chs->set); i++) {
        const pc_channel_t *ch = &chs->set->items[i];
        if (!pc_channel_accepts(ch, method, currency, amount) ||
            (switched_on && !pc_channels_effective_enabled(chs, ch->id)))
            continue;
        if (found < max)
            out[found] = ch;
        found++;
    }
    return found;
}

size_t pc_channels_match(const pc_channels_t *chs, pc_pay_method_t method, const char *currency,
                         int64_t amount, const pc_channel_t **out, size_t max)
{
    return match(chs, method, currency, amount, true, out, max);
}

size_t pc_channels_configured(const pc_channels_t *chs, pc_pay_method_t method,
                              const char *currency, int64_t amount, const pc_channel_t **out,
                              size_t max)
{
    return match(chs, method, currency, amount, false, out, max);
}

json_t *pc_channels_status(const pc_channels_t *chs)
{
    json_t *loaded = json_null();
    if (chs->set) {
        struct tm tm;
        char buf[32];
        gmtime_r(&chs->set->loaded_at, &tm);
        strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
        loaded = json_string(buf);
    }
    return json_pack("{s:s, s:o, s:o, s:i, s:O}", "status", chs->status, "version",
                     chs->set ? json_string(chs->set->version) : json_null(), "loaded_at", loaded,
                     "channels", (int)pc_channel_set_count(chs->set), "errors", chs->errors);
}

int pc_channel_set_ids_literal(const pc_channel_set_t *set, char *out, size_t cap)
{
    size_t off = (size_t)snprintf(out, cap, "{");
    size_t n = set ? pc_channel_set_count(set) : 0;
    for (size_t i = 0; i < n && off < cap; i++)
        off += (size_t)snprintf(out + off, cap - off, "%s%s", i ? "," : "",
                                pc_channel_set_at(set, i)->id);
    if (off + 2 > cap) {
        snprintf(out, cap, "{}");
        return -1;
    }
    snprintf(out + off, cap - off, "}");
    return (int)n;
}
