/* Request signing primitives for merchant authentication and notifications
 * (api.md "Merchant authentication", "Notifications"): the strings to sign,
 * base64, HMAC-SHA256 and RSA2 (RSA PKCS#1 v1.5 with SHA-256) sign/verify,
 * header validation (nonce, timestamp window, Idempotency-Key), secrets and
 * random tokens from the CSPRNG, and SHA-256 hashes for idempotency.
 * Pure functions: no I/O, no clock (callers pass "now"), no global state.
 * Needs OpenSSL 3 libcrypto. Failures of libcrypto calls clear the OpenSSL
 * error queue so that a stale entry cannot confuse a later TLS call made by
 * libpq or libcurl on the same thread. */
#ifndef PC_AUTH_SIGN_H
#define PC_AUTH_SIGN_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- Strings to sign ------------------------------------------------------ */

/* Builds "METHOD\nPATH_WITH_QUERY\nTIMESTAMP\nNONCE\nRAW_BODY\n". The method,
 * path, timestamp and nonce are used byte for byte as received (the caller
 * validates them first); the body is ignored when method is "GET", because
 * api.md signs an empty RAW_BODY for GET. Returns a malloc'd, NUL-terminated
 * string the caller frees (the body may contain NULs: use *out_len), or NULL
 * when memory runs out or an argument is NULL. out_len may be NULL. */
char *pc_sign_request_string(const char *method, const char *path_with_query, const char *timestamp,
                             const char *nonce, const void *body, size_t body_len, size_t *out_len);

/* Builds the notification string "TIMESTAMP\nNONCE\nRAW_BODY\n". Same
 * ownership as pc_sign_request_string. */
char *pc_sign_notify_string(const char *timestamp, const char *nonce, const void *body,
                            size_t body_len, size_t *out_len);

/* ---- Base64 ---------------------------------------------------------------- */

/* Length of the standard, padded encoding of n bytes, without the NUL. */
size_t pc_base64_encoded_len(size_t n);

/* Encodes len bytes with the standard alphabet and '=' padding. Returns a
 * malloc'd, NUL-terminated string the caller frees, or NULL when out of memory. */
char *pc_base64_encode(const void *data, size_t len);

/* Decodes standard, padded base64 of in_len characters into out (capacity
 * out_cap; in_len / 4 * 3 always suffices) and stores the decoded length in
 * *out_len. Strict: no white space, length a multiple of 4, '=' only as the
 * final one or two characters, unused bits zero (one canonical spelling per
 * value). Returns 0, PC_EINVAL for malformed input, PC_ELIMIT when out is too
 * small. out is unspecified on failure. */
int pc_base64_decode(const char *in, size_t in_len, uint8_t *out, size_t out_cap, size_t *out_len);

/* Encodes with the URL-safe alphabet ('-' and '_') and no padding, as used for
 * secrets and tokens that travel in URLs, headers and config files. Returns a
 * malloc'd string the caller frees, or NULL when out of memory. */
char *pc_base64url_encode(const void *data, size_t len);

/* ---- HMAC-SHA256 (sign_type "HMAC-SHA256") -------------------------------- */

#define PC_SHA256_LEN 32

/* Computes HMAC-SHA256 of msg with key into mac. Returns 0 or PC_EIO when
 * libcrypto fails. */
int pc_hmac_sha256(const void *key, size_t key_len, const void *msg, size_t msg_len,
                   uint8_t mac[PC_SHA256_LEN]);

/* Returns the base64 of HMAC-SHA256(secret, msg) as a malloc'd string the
 * caller frees, or NULL on failure. The key is the secret's bytes exactly as
 * issued to the merchant (the url-safe string, not its decoding). */
char *pc_hmac_sha256_sign(const char *secret, size_t secret_len, const void *msg, size_t msg_len);

/* Checks that sig_b64 (sig_len characters, e.g. the X-Signature header) is
 * the base64 of HMAC-SHA256(secret, msg). The MACs are compared in constant
 * time. Returns 0 when it matches, PC_EINVAL when it does not or when the
 * signature is not well-formed base64 of 32 bytes, PC_EIO when libcrypto
 * fails. Borrows everything. */
int pc_hmac_sha256_verify(const char *secret, size_t secret_len, const void *msg, size_t msg_len,
                          const char *sig_b64, size_t sig_len);

/* ---- RSA2: RSA PKCS#1 v1.5 with SHA-256 ----------------------------------- */

/* A parsed RSA key, public or private. Parse once (at merchant load or
 * platform start-up) and reuse it on every request. Immutable after creation,
 * so one key may serve any number of requests. */
typedef struct pc_rsa_key_s pc_rsa_key_t;

/* Keys shorter than this are refused, because RSA below 2048 bits is no
 * longer considered safe for signatures. */
#define PC_RSA_MIN_BITS 2048
/* Signatures are decoded into a buffer of this size (bits / 8 bytes): a
 * larger key could be registered but never verify. */
#define PC_RSA_MAX_BITS 8192
/* The longest signature in base64 text (the largest key's), without the NUL. */
#define PC_SIG_B64_MAX (4 * ((PC_RSA_MAX_BITS / 8 + 2) / 3))

/* Parses a PEM public key: "BEGIN PUBLIC KEY" (SubjectPublicKeyInfo) or
 * "BEGIN RSA PUBLIC KEY" (PKCS#1). pem need not be NUL-terminated. Returns a
 * new key the caller frees with pc_rsa_key_free, or NULL when the PEM is
 * malformed, is not RSA, holds a private key, or is shorter than
 * PC_RSA_MIN_BITS or longer than PC_RSA_MAX_BITS. */
pc_rsa_key_t *pc_rsa_key_new_public_pem(const char *pem, size_t pem_len);

/* Parses an unencrypted PEM private key ("BEGIN PRIVATE KEY" or "BEGIN RSA
 * PRIVATE KEY"); an encrypted one is refused rather than prompting for a
 * pass phrase. Same ownership and refusals as pc_rsa_key_new_public_pem. The
 * key can both sign and verify. */
pc_rsa_key_t *pc_rsa_key_new_private_pem(const char *pem, size_t pem_len);

/* Frees a key; NULL is allowed. */
void pc_rsa_key_free(pc_rsa_key_t *key);

/* True when key holds private material, i.e. can sign. */
bool pc_rsa_key_is_private(const pc_rsa_key_t *key);

/* SHA-256 (hex) of the key's public part in DER (SubjectPublicKeyInfo): the
 * same for the same key however its PEM is written. Returns 0, or PC_EINVAL. */
int pc_rsa_key_fingerprint(const pc_rsa_key_t *key, char out[65]);

/* Returns the PEM SubjectPublicKeyInfo of key (what GET /v1/platform-key
 * serves) as a malloc'd, NUL-terminated string the caller frees, or NULL. */
char *pc_rsa_key_public_pem(const pc_rsa_key_t *key);

/* Signs msg with a private key and returns the base64 signature as a malloc'd
 * string the caller frees, or NULL on failure (including a public-only key). */
char *pc_rsa_sha256_sign(const pc_rsa_key_t *key, const void *msg, size_t msg_len);

/* Checks that sig_b64 (sig_len characters) is the base64 of a valid
 * signature of msg under key. Returns 0 when valid, PC_EINVAL when not (bad
 * signature, malformed base64, wrong length), PC_ENOMEM / PC_EIO when
 * libcrypto cannot run the check. Borrows everything. */
int pc_rsa_sha256_verify(const pc_rsa_key_t *key, const void *msg, size_t msg_len,
                         const char *sig_b64, size_t sig_len);

/* ---- Header validation ------------------------------------------------------ */

#define PC_NONCE_MIN_LEN 16
#define PC_NONCE_MAX_LEN 64
#define PC_TIMESTAMP_WINDOW_S 300
#define PC_IDEMPOTENCY_KEY_MAX_LEN 64

/* True when s (len bytes) is an X-Nonce: 16 to 64 of [A-Za-z0-9_-]. */
bool pc_nonce_is_valid(const char *s, size_t len);

/* Parses an X-Timestamp: decimal Unix seconds, digits only (no sign, space or
 * leading zero except "0" itself), no overflow of int64_t. Stores the value in
 * *out and returns 0, or returns PC_EINVAL. */
int pc_timestamp_parse(const char *s, size_t len, int64_t *out);

/* True when |now - ts| <= window_s (api.md: PC_TIMESTAMP_WINDOW_S). Exact for
 * every int64_t input; a negative window accepts nothing. */
bool pc_timestamp_in_window(int64_t ts, int64_t now, int64_t window_s);

/* True when s (len bytes) is an Idempotency-Key: 1 to 64 printable ASCII
 * characters (0x20 to 0x7E). */
bool pc_idempotency_key_is_valid(const char *s, size_t len);

/* ---- Randomness ---------------------------------------------------------------- */

/* Random bytes behind a merchant secret; 256 bits. */
#define PC_SECRET_BYTES 32
/* Length of the secret string: base64url of PC_SECRET_BYTES, no padding. */
#define PC_SECRET_STR_LEN 43

/* Generates a merchant secret from the CSPRNG: PC_SECRET_STR_LEN characters of
 * [A-Za-z0-9_-] and a NUL into out (capacity out_size, at least
 * PC_SECRET_STR_LEN + 1). Returns 0, PC_ELIMIT when out is too small, PC_EIO
 * when the CSPRNG fails (never falls back to a weaker source). */
int pc_secret_generate(char *out, size_t out_size);

/* Writes nbytes random bytes from the CSPRNG as 2 * nbytes lowercase hex
 * digits and a NUL into out (capacity out_size), for lock tokens, nonces and
 * ids. Returns 0, PC_EINVAL for nbytes 0, PC_ELIMIT when out is too small, or
 * PC_EIO when the CSPRNG fails. */
int pc_random_hex(char *out, size_t out_size, size_t nbytes);

/* ---- SHA-256 ------------------------------------------------------------------- */

#define PC_SHA256_HEX_LEN 64

/* Writes the lowercase hex SHA-256 of data and a NUL into out. Returns 0 or
 * PC_EIO. */
int pc_sha256_hex(const void *data, size_t len, char out[PC_SHA256_HEX_LEN + 1]);

/* Hash of a request for idempotency: HMAC-SHA256 under key of the SHA-256
 * over method, path and body, each framed as an 8-byte big-endian length
 * followed by its bytes, so that no two different (method, path, body)
 * triples hash the same input. Keyed because it is stored: a plain hash of a
 * body holding a card number (its BIN, last four and expiry known) gives the
 * number back in milliseconds of guessing. Writes lowercase hex and a NUL
 * into out. Returns 0, PC_EINVAL for a NULL or empty key, NULL method or
 * path, or PC_EIO. */
int pc_request_hash_hex(const void *key, size_t key_len, const char *method, const char *path,
                        const void *body, size_t body_len, char out[PC_SHA256_HEX_LEN + 1]);

#endif
