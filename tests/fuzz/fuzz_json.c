/* Fuzz target: JSON request validation of POST /v1/trades
 * (pc_trade_create_parse) and POST /v1/cashier/pay (pc_pay_request_parse),
 * fed any bytes as the body. Checked beyond "does not crash": what a
 * validator accepts has the shape api.md promises — ids of 1-64
 * [A-Za-z0-9_-], amounts in range, an upper-case currency, splits only on
 * INSTANT trades and adding up to at most the amount, a card with a 3-4
 * digit CVV and a real month — and nothing leaks (LeakSanitizer). */
#include "acquiring/trade.h"
#include "cashier/cashier.h"
#include "http/errors.h"

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void must(int ok)
{
    if (!ok)
        abort();
}

static int id_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 1 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '-')
            return 0;
    return 1;
}

static void check_trade(json_t *body)
{
    pc_trade_create_req_t r;
    const char *field = NULL, *message = NULL;
    pc_api_err_t err = pc_trade_create_parse(body, "m_fuzz", &r, &field, &message);
    if (err != PC_API_OK) {
        must(message != NULL && r.meta_text == NULL && r.split_text == NULL);
        return;
    }
    must(id_ok(r.out_trade_no));
    must(r.amount >= 1 && r.amount <= 1000000000000000LL);
    must(strlen(r.currency) == 3 && isupper((unsigned char)r.currency[0]) &&
         isupper((unsigned char)r.currency[1]) && isupper((unsigned char)r.currency[2]));
    /* 1-256 characters (UTF-8, so at most 1024 bytes). */
    size_t chars = 0;
    for (const char *c = r.subject; c && *c; c++)
        chars += ((unsigned char)*c & 0xC0) != 0x80;
    must(r.subject && chars >= 1 && chars <= 256 && strlen(r.subject) <= 1024);
    must(!r.buyer_id || id_ok(r.buyer_id));
    must(!strcmp(r.product, "INSTANT") || !strcmp(r.product, "GUARANTEE") ||
         !strcmp(r.product, "RECHARGE"));
    must(strcmp(r.product, "RECHARGE") || r.buyer_id);
    must(r.expire_seconds >= 60 && r.expire_seconds <= 604800);
    must(!r.notify_url || !strncmp(r.notify_url, "http://", 7) ||
         !strncmp(r.notify_url, "https://", 8));
    json_t *meta = json_loads(r.meta_text, 0, NULL);
    must(json_is_object(meta) && strlen(r.meta_text) <= 4096);
    json_decref(meta);
    json_t *splits = json_loads(r.split_text, 0, NULL);
    must(json_is_array(splits));
    must(json_array_size(splits) == 0 || !strcmp(r.product, "INSTANT"));
    long long total = 0;
    size_t i;
    json_t *s;
    json_array_foreach(splits, i, s)
    {
        const char *acct = json_string_value(json_object_get(s, "account"));
        long long a = json_integer_value(json_object_get(s, "amount"));
        must(id_ok(acct) && strcmp(acct, "m_fuzz") != 0 && a >= 1);
        total += a;
    }
    must(total <= r.amount);
    json_decref(splits);
    pc_trade_create_req_clear(&r);
}

static void check_pay(json_t *body)
{
    pc_pay_request_t r;
    const char *field = NULL, *message = NULL;
    if (pc_pay_request_parse(body, &r, &field, &message) != PC_API_OK) {
        must(message != NULL);
        /* Any member at fault is named. */
        must(field != NULL || !json_is_object(body));
        return;
    }
    must(!r.platform || !strcmp(r.platform, "WEB") || !strcmp(r.platform, "H5") ||
         !strcmp(r.platform, "APP"));
    must(id_ok(r.trade_no));
    must(r.method_id || id_ok(r.challenge_id));
    must(!r.method_id || (strlen(r.method_id) >= 1 && strlen(r.method_id) <= 100));
    must(!r.buyer_id || id_ok(r.buyer_id));
    must(!r.coupon_id || id_ok(r.coupon_id));
    must(r.balance_amount >= 0 && r.balance_amount <= 1000000000000000LL);
    if (r.has_card) {
        size_t cl = strlen(r.card.cvv);
        must(r.card.pan && strlen(r.card.pan) >= 1 && strlen(r.card.pan) <= 19);
        must(cl >= 3 && cl <= 4 && strspn(r.card.cvv, "0123456789") == cl);
        must(r.card.exp_month >= 1 && r.card.exp_month <= 12);
        must(r.card.exp_year >= 2000 && r.card.exp_year <= 2199);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t jerr;
    /* As the server reads a body: duplicate keys refused. */
    json_t *body = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &jerr);
    if (!body)
        return 0;
    check_trade(body);
    check_pay(body);
    json_decref(body);
    return 0;
}
