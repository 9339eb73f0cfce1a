/* Fuzz target: the merchant signature headers (auth/sign.h). The input is
 * split at newlines into X-Timestamp, X-Nonce, Idempotency-Key, X-Signature,
 * a method, a path and a body, the way a request hands them over. Checked
 * beyond "does not crash":
 *   - the validators agree with api.md's grammar, re-checked here by hand;
 *   - base64 decoding is strict: whatever decodes re-encodes to the same text;
 *   - HMAC-SHA256 verification accepts the signature computed for the same
 *     string, and accepts the fuzzed X-Signature only when it is exactly that
 *     signature. */
#include "auth/sign.h"
#include "core/error.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char secret[] = "fuzz-merchant-secret-0123456789abcdefghijk";

/* The next field of data up to a newline (or the end). */
static const char *field(const uint8_t **p, const uint8_t *end, size_t *len)
{
    const uint8_t *s = *p, *nl = memchr(s, '\n', (size_t)(end - s));
    const uint8_t *e = nl ? nl : end;
    *len = (size_t)(e - s);
    *p = nl ? nl + 1 : end;
    return (const char *)s;
}

static int nonce_by_hand(const char *s, size_t n)
{
    if (n < PC_NONCE_MIN_LEN || n > PC_NONCE_MAX_LEN)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static int key_by_hand(const char *s, size_t n)
{
    if (n < 1 || n > PC_IDEMPOTENCY_KEY_MAX_LEN)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *p = data, *end = data + size;
    size_t tl, nl, kl, sl, ml, pl;
    const char *ts = field(&p, end, &tl);
    const char *nonce = field(&p, end, &nl);
    const char *key = field(&p, end, &kl);
    const char *sig = field(&p, end, &sl);
    const char *method = field(&p, end, &ml);
    const char *path = field(&p, end, &pl);
    const char *body = (const char *)p;
    size_t bl = (size_t)(end - p);

    if (pc_nonce_is_valid(nonce, nl) != (bool)nonce_by_hand(nonce, nl))
        abort();
    if (pc_idempotency_key_is_valid(key, kl) != (bool)key_by_hand(key, kl))
        abort();
    int64_t t = 0;
    if (pc_timestamp_parse(ts, tl, &t) == 0) {
        /* Digits only, no leading zero: the value prints back as the text. */
        char back[24];
        int n = snprintf(back, sizeof back, "%lld", (long long)t);
        if (t < 0 || (size_t)n != tl || memcmp(back, ts, tl) != 0)
            abort();
        (void)pc_timestamp_in_window(t, 1795000000, PC_TIMESTAMP_WINDOW_S);
        if (!pc_timestamp_in_window(t, t, 0))
            abort();
    }

    /* Strict base64: a decoded signature re-encodes to the same text. */
    uint8_t raw[512];
    size_t rl = 0;
    if (pc_base64_decode(sig, sl, raw, sizeof raw, &rl) == 0) {
        char *again = pc_base64_encode(raw, rl);
        if (!again || strlen(again) != sl || memcmp(again, sig, sl) != 0)
            abort();
        free(again);
    }

    /* The string to sign takes NUL-terminated method, path and timestamp. */
    char *m = strndup(method, ml), *pa = strndup(path, pl), *tsz = strndup(ts, tl),
         *nz = strndup(nonce, nl);
    size_t slen = 0;
    char *tosign = pc_sign_request_string(m, pa, tsz, nz, body, bl, &slen);
    if (tosign) {
        char *good = pc_hmac_sha256_sign(secret, strlen(secret), tosign, slen);
        if (!good ||
            pc_hmac_sha256_verify(secret, strlen(secret), tosign, slen, good, strlen(good)) != 0)
            abort();
        int rc = pc_hmac_sha256_verify(secret, strlen(secret), tosign, slen, sig, sl);
        int same = sl == strlen(good) && memcmp(sig, good, sl) == 0;
        if ((rc == 0) != same)
            abort();
        free(good);
        free(tosign);
    }
    free(m);
    free(pa);
    free(tsz);
    free(nz);
    return 0;
}
