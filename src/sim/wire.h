/* Signing of the channel protocol (src/sim/PROTOCOL.md "Signing"): per-channel
 * shared secrets, verification of paycore's requests, signatures on paysim's
 * answers and callbacks, and a bounded cache of recently seen nonces. Built
 * on auth/sign.h (HMAC-SHA256, base64, the strings to sign), so paycore's
 * adapters can use the very same functions on their side. Needs OpenSSL
 * through auth/sign; no I/O except reading the environment for secrets. */
#ifndef PC_SIM_WIRE_H
#define PC_SIM_WIRE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sim/codes.h"

/* A request's timestamp must be within this many seconds of paysim's clock. */
#define PC_SIM_TS_WINDOW_S 300
/* A nonce may be used once per channel within this many seconds. */
#define PC_SIM_NONCE_TTL_S 600
#define PC_SIM_SECRET_MAX 256

/* Writes the channel's secret into out: the environment variable
 * PAYSIM_SECRET_<CHANNEL_ID in upper case>, or the demo default
 * "demo-secret-<channel_id>" (is_demo set) which is public and for
 * development only. Returns 0, or PC_ELIMIT when out is too small. */
int pc_sim_secret(const char *channel_id, char *out, size_t out_size, bool *is_demo);

/* Checks a request's X-Timestamp, X-Nonce and X-Signature (any may be NULL,
 * which fails) against the string "METHOD\nTARGET\nTIMESTAMP\nNONCE\nBODY\n"
 * (body empty for GET) signed with secret. now_s is Unix seconds. Returns
 * PC_SIM_OK, PC_SIM_INVALID_SIGNATURE (missing or malformed headers, or a
 * wrong MAC) or PC_SIM_TIMESTAMP_EXPIRED. *why (may be NULL) receives a static
 * explanation for the error body. Does not check nonce reuse. */
pc_sim_err_t pc_sim_verify_request(const char *secret, const char *method, const char *target,
                                   const char *timestamp, const char *nonce, const char *signature,
                                   const void *body, size_t body_len, int64_t now_s,
                                   const char **why);

/* Signs "TIMESTAMP\nNONCE\nBODY\n" with secret: used for answers (NONCE is
 * the request's nonce, echoed, so an answer cannot be replayed onto another
 * request) and for callbacks (a fresh nonce). Returns a malloc'd base64
 * string the caller frees, or NULL on failure. */
char *pc_sim_sign_message(const char *secret, const char *timestamp, const char *nonce,
                          const void *body, size_t body_len);

/* Nonces seen recently on one channel: at most cap of them, each for
 * PC_SIM_NONCE_TTL_S; when full the oldest is forgotten first (the replay
 * window then shrinks under extreme load rather than memory growing). */
typedef struct pc_sim_nonces pc_sim_nonces_t;

/* Returns a new cache the caller frees with pc_sim_nonces_free, or NULL. */
pc_sim_nonces_t *pc_sim_nonces_new(size_t cap);
void pc_sim_nonces_free(pc_sim_nonces_t *n);
/* Records nonce (at most 64 characters) as used at now_s. Returns 0, or
 * PC_ECONFLICT when it was already used within the TTL. */
int pc_sim_nonces_use(pc_sim_nonces_t *n, const char *nonce, int64_t now_s);

#endif
