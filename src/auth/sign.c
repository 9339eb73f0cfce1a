#include "auth/sign.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "core/error.h"

struct pc_rsa_key_s {
    EVP_PKEY *pkey;
    bool is_private;
};

/* ---- Strings to sign ------------------------------------------------------ */

/* Joins parts with a '\n' after each one into one malloc'd buffer. */
static char *join_lines(const char *const *parts, const size_t *lens, size_t n, size_t *out_len)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (lens[i] > SIZE_MAX - total - 2)
            return NULL;
        total += lens[i] + 1;
    }
    char *buf = malloc(total + 1);
    if (!buf)
        return NULL;
    char *p = buf;
    for (size_t i = 0; i < n; i++) {
        if (lens[i])
            memcpy(p, parts[i], lens[i]);
        p += lens[i];
        *p++ = '\n';
    }
    *p = '\0';
    if (out_len)
        *out_len = total;
    return buf;
}

char *pc_sign_request_string(const char *method, const char *path_with_query, const char *timestamp,
                             const char *nonce, const void *body, size_t body_len, size_t *out_len)
{
    if (!method || !path_with_query || !timestamp || !nonce || (!body && body_len))
        return NULL;
    /* A GET signs an empty body whatever arrived with it, so a client and the
     * server always agree on the string for reads. */
    if (strcmp(method, "GET") == 0)
        body_len = 0;
    const char *parts[] = {method, path_with_query, timestamp, nonce, body};
    size_t lens[] = {strlen(method), strlen(path_with_query), strlen(timestamp), strlen(nonce),
                     body_len};
    return join_lines(parts, lens, 5, out_len);
}

char *pc_sign_notify_string(const char *timestamp, const char *nonce, const void *body,
                            size_t body_len, size_t *out_len)
{
    if (!timestamp || !nonce || (!body && body_len))
        return NULL;
    const char *parts[] = {timestamp, nonce, body};
    size_t lens[] = {strlen(timestamp), strlen(nonce), body_len};
    return join_lines(parts, lens, 3, out_len);
}

/* ---- Base64 ---------------------------------------------------------------- */

static const char b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64_url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t pc_base64_encoded_len(size_t n)
{
    return (n + 2) / 3 * 4;
}

static char *b64_encode(const uint8_t *in, size_t len, const char *alphabet, bool pad)
{
    if (!in && len)
        return NULL;
    if (len > (SIZE_MAX - 1) / 4 * 3 - 2)
        return NULL;
    char *out = malloc(pc_base64_encoded_len(len) + 1);
    if (!out)
        return NULL;
    char *p = out;
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *p++ = alphabet[v >> 18 & 63];
        *p++ = alphabet[v >> 12 & 63];
        *p++ = alphabet[v >> 6 & 63];
        *p++ = alphabet[v & 63];
    }
    size_t rest = len - i;
    if (rest) {
        uint32_t v = (uint32_t)in[i] << 16 | (rest == 2 ? (uint32_t)in[i + 1] << 8 : 0);
        *p++ = alphabet[v >> 18 & 63];
        *p++ = alphabet[v >> 12 & 63];
        if (rest == 2)
            *p++ = alphabet[v >> 6 & 63];
        if (pad) {
            if (rest == 1)
                *p++ = '=';
            *p++ = '=';
        }
    }
    *p = '\0';
    return out;
}

char *pc_base64_encode(const void *data, size_t len)
{
    return b64_encode(data, len, b64_std, true);
}

char *pc_base64url_encode(const void *data, size_t len)
{
    return b64_encode(data, len, b64_url, false);
}

/* Value of a standard base64 digit, or -1. Written as comparisons rather than
 * a table so that it reads as the alphabet it accepts. */
static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

int pc_base64_decode(const char *in, size_t in_len, uint8_t *out, size_t out_cap, size_t *out_len)
{
    if ((!in && in_len) || !out_len || in_len % 4 != 0)
        return PC_EINVAL;
    size_t pad = 0;
    if (in_len >= 4) {
        if (in[in_len - 1] == '=')
            pad = in[in_len - 2] == '=' ? 2 : 1;
    }
    size_t need = in_len / 4 * 3 - pad;
    if (need > out_cap)
        return PC_ELIMIT;
    size_t o = 0;
    for (size_t i = 0; i < in_len; i += 4) {
        bool last = i + 4 == in_len;
        size_t digits = last ? 4 - pad : 4;
        uint32_t v = 0;
        for (size_t k = 0; k < 4; k++) {
            int d = 0;
            if (k < digits) {
                d = b64_value((unsigned char)in[i + k]);
                if (d < 0)
                    return PC_EINVAL;
            }
            v = v << 6 | (uint32_t)d;
        }
        /* Non-zero bits under the padding would let two strings decode to
         * the same bytes; refuse them so a signature has one spelling. */
        if ((pad == 1 && last && (v & 0xff)) || (pad == 2 && last && (v & 0xffff)))
            return PC_EINVAL;
        out[o++] = (uint8_t)(v >> 16);
        if (digits >= 3)
            out[o++] = (uint8_t)(v >> 8);
        if (digits == 4)
            out[o++] = (uint8_t)v;
    }
    *out_len = o;
    return 0;
}

/* ---- HMAC-SHA256 ------------------------------------------------------------ */

int pc_hmac_sha256(const void *key, size_t key_len, const void *msg, size_t msg_len,
                   uint8_t mac[PC_SHA256_LEN])
{
    static const uint8_t empty[1];
    unsigned int mac_len = 0;
    if (key_len > INT32_MAX)
        return PC_EINVAL;
    /* OpenSSL's HMAC API gives a NULL key a special meaning (keep the
     * previous key); pass a real pointer so an empty key means an empty key. */
    if (!HMAC(EVP_sha256(), key_len ? key : empty, (int)key_len, msg_len ? msg : empty, msg_len,
              mac, &mac_len) ||
        mac_len != PC_SHA256_LEN) {
        ERR_clear_error();
        return PC_EIO;
    }
    return 0;
}

char *pc_hmac_sha256_sign(const char *secret, size_t secret_len, const void *msg, size_t msg_len)
{
    uint8_t mac[PC_SHA256_LEN];
    if ((!secret && secret_len) || (!msg && msg_len))
        return NULL;
    if (pc_hmac_sha256(secret, secret_len, msg, msg_len, mac) != 0)
        return NULL;
    char *sig = pc_base64_encode(mac, sizeof mac);
    OPENSSL_cleanse(mac, sizeof mac);
    return sig;
}

int pc_hmac_sha256_verify(const char *secret, size_t secret_len, const void *msg, size_t msg_len,
                          const char *sig_b64, size_t sig_len)
{
    uint8_t want[PC_SHA256_LEN], got[PC_SHA256_LEN];
    size_t got_len = 0;
    int rc;
    if ((!secret && secret_len) || (!msg && msg_len) || !sig_b64)
        return PC_EINVAL;
    /* Decoding the untrusted signature first costs no secret-dependent time. */
    if (pc_base64_decode(sig_b64, sig_len, got, sizeof got, &got_len) != 0 || got_len != sizeof got)
        return PC_EINVAL;
    rc = pc_hmac_sha256(secret, secret_len, msg, msg_len, want);
    if (rc != 0)
        goto out;
    rc = CRYPTO_memcmp(want, got, sizeof want) == 0 ? 0 : PC_EINVAL;
out:
    OPENSSL_cleanse(want, sizeof want);
    return rc;
}

/* ---- RSA2 ---------------------------------------------------------------------- */

/* Refuses to prompt for a pass phrase: without this callback OpenSSL would
 * read one from the terminal, blocking the process. */
static int no_passphrase_cb(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

static pc_rsa_key_t *key_wrap(EVP_PKEY *pkey, bool is_private)
{
    if (!EVP_PKEY_is_a(pkey, "RSA") || EVP_PKEY_get_bits(pkey) < PC_RSA_MIN_BITS ||
        EVP_PKEY_get_bits(pkey) > PC_RSA_MAX_BITS)
        goto fail;
    pc_rsa_key_t *key = calloc(1, sizeof *key);
    if (!key)
        goto fail;
    key->pkey = pkey;
    key->is_private = is_private;
    return key;
fail:
    EVP_PKEY_free(pkey);
    return NULL;
}

pc_rsa_key_t *pc_rsa_key_new_public_pem(const char *pem, size_t pem_len)
{
    BIO *bio = NULL;
    char *name = NULL, *header = NULL;
    unsigned char *der = NULL;
    long der_len = 0;
    EVP_PKEY *pkey = NULL;

    if (!pem || pem_len == 0 || pem_len > INT32_MAX)
        return NULL;
    bio = BIO_new_mem_buf(pem, (int)pem_len);
    if (!bio)
        goto fail;
    /* Reading the block ourselves lets us look at its label: a private key
     * pasted where a public one belongs is refused instead of kept. */
    if (!PEM_read_bio(bio, &name, &header, &der, &der_len))
        goto fail;
    const unsigned char *p = der;
    if (strcmp(name, "PUBLIC KEY") == 0)
        pkey = d2i_PUBKEY(NULL, &p, der_len);
    else if (strcmp(name, "RSA PUBLIC KEY") == 0)
        pkey = d2i_PublicKey(EVP_PKEY_RSA, NULL, &p, der_len);
    if (!pkey || p != der + der_len)
        goto fail;
    BIO_free(bio);
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(der);
    return key_wrap(pkey, false);
fail:
    ERR_clear_error();
    EVP_PKEY_free(pkey);
    BIO_free(bio);
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(der);
    return NULL;
}

pc_rsa_key_t *pc_rsa_key_new_private_pem(const char *pem, size_t pem_len)
{
    if (!pem || pem_len == 0 || pem_len > INT32_MAX)
        return NULL;
    BIO *bio = BIO_new_mem_buf(pem, (int)pem_len);
    if (!bio) {
        ERR_clear_error();
        return NULL;
    }
    EVP_PKEY *pkey = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase_cb, NULL);
    BIO_free(bio);
    if (!pkey) {
        ERR_clear_error();
        return NULL;
    }
    return key_wrap(pkey, true);
}

void pc_rsa_key_free(pc_rsa_key_t *key)
{
    if (!key)
        return;
    EVP_PKEY_free(key->pkey);
    free(key);
}

int pc_rsa_key_fingerprint(const pc_rsa_key_t *key, char out[65])
{
    unsigned char *der = NULL;
    int len = key ? i2d_PUBKEY(key->pkey, &der) : -1;
    if (len <= 0) {
        ERR_clear_error();
        return PC_EINVAL;
    }
    int rc = pc_sha256_hex(der, (size_t)len, out);
    OPENSSL_free(der);
    return rc;
}

bool pc_rsa_key_is_private(const pc_rsa_key_t *key)
{
    return key && key->is_private;
}

char *pc_rsa_key_public_pem(const pc_rsa_key_t *key)
{
    char *out = NULL;
    BUF_MEM *mem = NULL;
    if (!key)
        return NULL;
    BIO *bio = BIO_new(BIO_s_mem());
    if (!bio || !PEM_write_bio_PUBKEY(bio, key->pkey))
        goto fail;
    BIO_get_mem_ptr(bio, &mem);
    out = malloc(mem->length + 1);
    if (!out)
        goto fail;
    memcpy(out, mem->data, mem->length);
    out[mem->length] = '\0';
    BIO_free(bio);
    return out;
fail:
    ERR_clear_error();
    BIO_free(bio);
    return NULL;
}

/* Creates a digest context set up for RSA PKCS#1 v1.5 with SHA-256, for
 * signing or verifying. The padding is set explicitly rather than relying on
 * the provider's default. */
static EVP_MD_CTX *rsa_ctx_new(const pc_rsa_key_t *key, bool sign)
{
    EVP_PKEY_CTX *pctx = NULL;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx)
        return NULL;
    int ok = sign ? EVP_DigestSignInit(ctx, &pctx, EVP_sha256(), NULL, key->pkey)
                  : EVP_DigestVerifyInit(ctx, &pctx, EVP_sha256(), NULL, key->pkey);
    if (ok != 1 || EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1) {
        EVP_MD_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

char *pc_rsa_sha256_sign(const pc_rsa_key_t *key, const void *msg, size_t msg_len)
{
    static const uint8_t empty[1];
    EVP_MD_CTX *ctx = NULL;
    unsigned char *sig = NULL;
    size_t sig_len = 0;
    char *out = NULL;

    if (!key || !key->is_private || (!msg && msg_len))
        return NULL;
    ctx = rsa_ctx_new(key, true);
    if (!ctx)
        goto fail;
    if (EVP_DigestSign(ctx, NULL, &sig_len, msg_len ? msg : empty, msg_len) != 1)
        goto fail;
    sig = malloc(sig_len);
    if (!sig)
        goto fail;
    if (EVP_DigestSign(ctx, sig, &sig_len, msg_len ? msg : empty, msg_len) != 1)
        goto fail;
    out = pc_base64_encode(sig, sig_len);
fail:
    if (!out)
        ERR_clear_error();
    free(sig);
    EVP_MD_CTX_free(ctx);
    return out;
}

int pc_rsa_sha256_verify(const pc_rsa_key_t *key, const void *msg, size_t msg_len,
                         const char *sig_b64, size_t sig_len)
{
    static const uint8_t empty[1];
    uint8_t sig[PC_RSA_MAX_BITS / 8];
    size_t len = 0;
    EVP_MD_CTX *ctx = NULL;
    int rc = PC_EINVAL;

    if (!key || (!msg && msg_len) || !sig_b64)
        return PC_EINVAL;
    int modulus = EVP_PKEY_get_size(key->pkey);
    /* A PKCS#1 v1.5 signature is exactly as long as the modulus. */
    if (pc_base64_decode(sig_b64, sig_len, sig, sizeof sig, &len) != 0 || modulus <= 0 ||
        len != (size_t)modulus)
        return PC_EINVAL;
    ctx = rsa_ctx_new(key, false);
    if (!ctx) {
        rc = PC_ENOMEM;
        goto out;
    }
    int ok = EVP_DigestVerify(ctx, sig, len, msg_len ? msg : empty, msg_len);
    /* 0 is a bad signature; negative values are failures to check at all. */
    rc = ok == 1 ? 0 : ok == 0 ? PC_EINVAL : PC_EIO;
out:
    if (rc != 0)
        ERR_clear_error();
    EVP_MD_CTX_free(ctx);
    return rc;
}

/* ---- Header validation ---------------------------------------------------------- */

bool pc_nonce_is_valid(const char *s, size_t len)
{
    if (!s || len < PC_NONCE_MIN_LEN || len > PC_NONCE_MAX_LEN)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

int pc_timestamp_parse(const char *s, size_t len, int64_t *out)
{
    if (!s || !out || len == 0)
        return PC_EINVAL;
    /* One spelling per value: a leading zero would let "0017…" and "17…"
     * name the same second. */
    if (len > 1 && s[0] == '0')
        return PC_EINVAL;
    int64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return PC_EINVAL;
        int d = s[i] - '0';
        if (v > (INT64_MAX - d) / 10)
            return PC_EINVAL;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

bool pc_timestamp_in_window(int64_t ts, int64_t now, int64_t window_s)
{
    if (window_s < 0)
        return false;
    /* The difference of two int64_t values always fits in uint64_t when the
     * larger is taken first, so no input can overflow. */
    uint64_t diff = ts >= now ? (uint64_t)ts - (uint64_t)now : (uint64_t)now - (uint64_t)ts;
    return diff <= (uint64_t)window_s;
}

bool pc_idempotency_key_is_valid(const char *s, size_t len)
{
    if (!s || len < 1 || len > PC_IDEMPOTENCY_KEY_MAX_LEN)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c > 0x7e)
            return false;
    }
    return true;
}

/* ---- Randomness ------------------------------------------------------------------- */

int pc_secret_generate(char *out, size_t out_size)
{
    uint8_t raw[PC_SECRET_BYTES];
    if (!out || out_size < PC_SECRET_STR_LEN + 1)
        return PC_ELIMIT;
    if (RAND_bytes(raw, sizeof raw) != 1) {
        ERR_clear_error();
        return PC_EIO;
    }
    char *s = pc_base64url_encode(raw, sizeof raw);
    OPENSSL_cleanse(raw, sizeof raw);
    if (!s)
        return PC_ENOMEM;
    memcpy(out, s, PC_SECRET_STR_LEN + 1);
    OPENSSL_cleanse(s, PC_SECRET_STR_LEN);
    free(s);
    return 0;
}

static void hex_encode(const uint8_t *in, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = '\0';
}

int pc_random_hex(char *out, size_t out_size, size_t nbytes)
{
    uint8_t raw[256];
    if (!out || nbytes == 0 || nbytes > sizeof raw)
        return PC_EINVAL;
    if (out_size < 2 * nbytes + 1)
        return PC_ELIMIT;
    if (RAND_bytes(raw, (int)nbytes) != 1) {
        ERR_clear_error();
        return PC_EIO;
    }
    hex_encode(raw, nbytes, out);
    OPENSSL_cleanse(raw, nbytes);
    return 0;
}

/* ---- SHA-256 ----------------------------------------------------------------------- */

int pc_sha256_hex(const void *data, size_t len, char out[PC_SHA256_HEX_LEN + 1])
{
    static const uint8_t empty[1];
    uint8_t md[PC_SHA256_LEN];
    if (!data && len)
        return PC_EINVAL;
    if (EVP_Digest(len ? data : empty, len, md, NULL, EVP_sha256(), NULL) != 1) {
        ERR_clear_error();
        return PC_EIO;
    }
    hex_encode(md, sizeof md, out);
    return 0;
}

/* Feeds one length-prefixed field into the digest. */
static int digest_field(EVP_MD_CTX *ctx, const void *data, size_t len)
{
    uint8_t prefix[8];
    uint64_t n = len;
    for (int i = 7; i >= 0; i--) {
        prefix[i] = (uint8_t)(n & 0xff);
        n >>= 8;
    }
    if (EVP_DigestUpdate(ctx, prefix, sizeof prefix) != 1)
        return PC_EIO;
    if (len && EVP_DigestUpdate(ctx, data, len) != 1)
        return PC_EIO;
    return 0;
}

int pc_request_hash_hex(const void *key, size_t key_len, const char *method, const char *path,
                        const void *body, size_t body_len, char out[PC_SHA256_HEX_LEN + 1])
{
    uint8_t md[PC_SHA256_LEN];
    int rc = PC_EIO;
    if (!key || !key_len || !method || !path || (!body && body_len))
        return PC_EINVAL;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx)
        return PC_ENOMEM;
    if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
        goto fail;
    if (digest_field(ctx, method, strlen(method)) != 0 ||
        digest_field(ctx, path, strlen(path)) != 0 || digest_field(ctx, body, body_len) != 0)
        goto fail;
    if (EVP_DigestFinal_ex(ctx, md, NULL) != 1)
        goto fail;
    uint8_t mac[PC_SHA256_LEN];
    if (pc_hmac_sha256(key, key_len, md, sizeof md, mac) != 0)
        goto fail;
    hex_encode(mac, sizeof mac, out);
    rc = 0;
fail:
    if (rc != 0)
        ERR_clear_error();
    EVP_MD_CTX_free(ctx);
    return rc;
}
