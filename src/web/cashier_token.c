#include "web/cashier_token.h"
#include "auth/sign.h"
#include "core/error.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DOMAIN "paycore-cashier-v1"

static int valid_trade_no(const char *s, size_t n)
{
    if (n == 0 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-'))
            return 0;
    return 1;
}

/* The MAC of (trade_no, expires) as base64url text; the caller frees it. */
static char *mac_text(const char *key, const char *trade_no, size_t tlen, long long expires)
{
    char msg[128];
    int n = snprintf(msg, sizeof msg, DOMAIN "\n%.*s\n%lld\n", (int)tlen, trade_no, expires);
    uint8_t mac[PC_SHA256_LEN];
    if (n < 0 || (size_t)n >= sizeof msg ||
        pc_hmac_sha256(key, strlen(key), msg, (size_t)n, mac) != 0)
        return NULL;
    return pc_base64url_encode(mac, sizeof mac);
}

int pc_cashier_token_make(const char *key, const char *trade_no, int64_t expires, char *out,
                          size_t len)
{
    if (!key || !key[0] || !trade_no || !valid_trade_no(trade_no, strlen(trade_no)) || expires < 0)
        return PC_EINVAL;
    char *mac = mac_text(key, trade_no, strlen(trade_no), (long long)expires);
    if (!mac)
        return PC_EIO;
    int n = snprintf(out, len, "%s.%lld.%s", trade_no, (long long)expires, mac);
    free(mac);
    return n < 0 || (size_t)n >= len ? PC_ELIMIT : 0;
}

int pc_cashier_token_check(const char *key, const char *token, int64_t now, char *trade_no,
                           size_t len)
{
    if (!key || !key[0] || !token)
        return PC_EINVAL;
    const char *d1 = strchr(token, '.');
    const char *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    if (!d1 || !d2 || strchr(d2 + 1, '.'))
        return PC_EINVAL;
    size_t tlen = (size_t)(d1 - token), elen = (size_t)(d2 - d1 - 1);
    if (!valid_trade_no(token, tlen) || elen == 0 || elen > 12 || tlen >= len)
        return PC_EINVAL;
    long long expires = 0;
    for (const char *p = d1 + 1; p < d2; p++) {
        if (*p < '0' || *p > '9')
            return PC_EINVAL;
        expires = expires * 10 + (*p - '0');
    }
    /* One spelling per value: no leading zeros. */
    if (elen > 1 && d1[1] == '0')
        return PC_EINVAL;
    char *want = mac_text(key, token, tlen, expires);
    if (!want)
        return PC_EINVAL;
    const char *got = d2 + 1;
    size_t wl = strlen(want);
    int ok = strlen(got) == wl && CRYPTO_memcmp(want, got, wl) == 0;
    free(want);
    if (!ok)
        return PC_EINVAL;
    if (expires <= now)
        return PC_ETIMEDOUT;
    memcpy(trade_no, token, tlen);
    trade_no[tlen] = '\0';
    return 0;
}

int pc_cashier_url(const pc_config_t *cfg, const char *trade_no, int64_t trade_expires_at,
                   char *out, size_t len)
{
    char token[PC_CASHIER_TOKEN_MAX];
    int rc = pc_cashier_token_make(pc_config_str(cfg, "cashier.token_key"), trade_no,
                                   trade_expires_at + PC_CASHIER_LINK_GRACE_S, token, sizeof token);
    if (rc < 0)
        return rc;
    const char *base = pc_config_str(cfg, "http.public_url");
    size_t bl = strlen(base);
    while (bl > 0 && base[bl - 1] == '/')
        bl--;
    int n = bl ? snprintf(out, len, "%.*s/cashier/%s", (int)bl, base, token)
               : snprintf(out, len, "http://127.0.0.1:%d/cashier/%s",
                          (int)pc_config_int(cfg, "http.port"), token);
    return n < 0 || (size_t)n >= len ? PC_ELIMIT : 0;
}
