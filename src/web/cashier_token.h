/* Cashier links: the hosted cashier page of a trade is reached at
 * {http.public_url}/cashier/{token}, and the token is the buyer's only
 * credential there (no merchant signature). A token names exactly one trade
 * and a moment after which it is refused, and is signed with the server key
 * cashier.token_key:
 *
 *     <trade_no>.<expires>.<mac>
 *     expires = Unix seconds
 *     mac     = base64url, unpadded, of HMAC-SHA256(key,
 *               "paycore-cashier-v1\n<trade_no>\n<expires>\n")
 *
 * A link lives until the trade's own expiry plus PC_CASHIER_LINK_GRACE_S, so a
 * buyer who paid at the last minute still sees the result; paying after the
 * trade expired is refused by the cashier's own checks anyway. Pure functions:
 * no I/O, no clock (callers pass "now"). Needs auth/sign (libcrypto). */
#ifndef PC_WEB_CASHIER_TOKEN_H
#define PC_WEB_CASHIER_TOKEN_H
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"

/* Room for any token (64-character trade number, 20 digits, 43 of MAC). */
#define PC_CASHIER_TOKEN_MAX 160
#define PC_CASHIER_LINK_GRACE_S 3600

/* Writes the token for trade_no, valid until expires, into out (len ≥
 * PC_CASHIER_TOKEN_MAX). trade_no must be 1-64 of [A-Za-z0-9_-]. Returns 0,
 * PC_EINVAL for a bad trade number or an empty key, PC_EIO when libcrypto
 * fails. */
int pc_cashier_token_make(const char *key, const char *trade_no, int64_t expires, char *out,
                          size_t len);

/* Checks token at time now. Returns 0 and copies its trade number into
 * trade_no (len ≥ 65) when the MAC matches and it has not expired;
 * PC_EINVAL when it is malformed or its MAC does not match (forged or
 * signed with another key); PC_ETIMEDOUT when it is genuine but expired.
 * The MAC is compared in constant time. */
int pc_cashier_token_check(const char *key, const char *token, int64_t now, char *trade_no,
                           size_t len);

/* The cashier link of a trade that expires at trade_expires_at:
 * http.public_url (or http://127.0.0.1:<http.port>) + "/cashier/" + token,
 * signed with cashier.token_key, into out. Returns 0 or a negative code as
 * pc_cashier_token_make, PC_ELIMIT when out is too small. */
int pc_cashier_url(const pc_config_t *cfg, const char *trade_no, int64_t trade_expires_at,
                   char *out, size_t len);

#endif
