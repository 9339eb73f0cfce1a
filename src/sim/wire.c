#include "sim/wire.h"
#include "auth/sign.h"
#include "core/error.h"
#include "sim/map.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int pc_sim_secret(const char *channel_id, char *out, size_t out_size, bool *is_demo)
{
    char var[96] = "PAYSIM_SECRET_";
    size_t n = strlen(var);
    for (const char *p = channel_id; *p && n + 1 < sizeof var; p++)
        var[n++] = (char)toupper((unsigned char)*p);
    var[n] = 0;
    const char *env = getenv(var);
    int len;
    if (env && env[0]) {
        *is_demo = false;
        len = snprintf(out, out_size, "%s", env);
    } else {
        *is_demo = true;
        len = snprintf(out, out_size, "demo-secret-%s", channel_id);
    }
    return len < 0 || (size_t)len >= out_size ? PC_ELIMIT : 0;
}

pc_sim_err_t pc_sim_verify_request(const char *secret, const char *method, const char *target,
                                   const char *timestamp, const char *nonce, const char *signature,
                                   const void *body, size_t body_len, int64_t now_s,
                                   const char **why)
{
    const char *dummy;
    if (!why)
        why = &dummy;
    if (!timestamp || !nonce || !signature) {
        *why = "X-Timestamp, X-Nonce and X-Signature are required";
        return PC_SIM_INVALID_SIGNATURE;
    }
    if (!pc_nonce_is_valid(nonce, strlen(nonce))) {
        *why = "X-Nonce must be 16 to 64 of [A-Za-z0-9_-]";
        return PC_SIM_INVALID_SIGNATURE;
    }
    int64_t ts;
    if (pc_timestamp_parse(timestamp, strlen(timestamp), &ts) < 0) {
        *why = "X-Timestamp must be Unix seconds";
        return PC_SIM_INVALID_SIGNATURE;
    }
    if (!pc_timestamp_in_window(ts, now_s, PC_SIM_TS_WINDOW_S)) {
        *why = "X-Timestamp is more than 300 s away from the channel's clock";
        return PC_SIM_TIMESTAMP_EXPIRED;
    }
    size_t len;
    char *msg = pc_sign_request_string(method, target, timestamp, nonce, body, body_len, &len);
    if (!msg) {
        *why = "out of memory";
        return PC_SIM_UNAVAILABLE;
    }
    int rc = pc_hmac_sha256_verify(secret, strlen(secret), msg, len, signature, strlen(signature));
    free(msg);
    if (rc < 0) {
        *why = "X-Signature does not match the request";
        return PC_SIM_INVALID_SIGNATURE;
    }
    return PC_SIM_OK;
}

char *pc_sim_sign_message(const char *secret, const char *timestamp, const char *nonce,
                          const void *body, size_t body_len)
{
    size_t len;
    char *msg = pc_sign_notify_string(timestamp, nonce, body, body_len, &len);
    if (!msg)
        return NULL;
    char *sig = pc_hmac_sha256_sign(secret, strlen(secret), msg, len);
    free(msg);
    return sig;
}

/* ---- Nonce cache ---------------------------------------------------------- */

typedef struct {
    char nonce[65];
    int64_t at;
} nonce_slot_t;

struct pc_sim_nonces {
    nonce_slot_t *ring; /* oldest at head; keys of map point into it */
    size_t cap, head, count;
    pc_sim_map_t *map;
};

pc_sim_nonces_t *pc_sim_nonces_new(size_t cap)
{
    pc_sim_nonces_t *n = calloc(1, sizeof *n);
    if (!n)
        return NULL;
    n->cap = cap ? cap : 1;
    n->ring = calloc(n->cap, sizeof *n->ring);
    n->map = pc_sim_map_new();
    if (!n->ring || !n->map) {
        pc_sim_nonces_free(n);
        return NULL;
    }
    return n;
}

void pc_sim_nonces_free(pc_sim_nonces_t *n)
{
    if (!n)
        return;
    pc_sim_map_free(n->map);
    free(n->ring);
    free(n);
}

static void drop_oldest(pc_sim_nonces_t *n)
{
    nonce_slot_t *s = &n->ring[n->head];
    /* The map may already point at a newer slot for the same nonce (a reuse
     * after expiry); only remove the entry if it is this slot's. */
    if (pc_sim_map_get(n->map, s->nonce) == s)
        pc_sim_map_del(n->map, s->nonce);
    n->head = (n->head + 1) % n->cap;
    n->count--;
}

int pc_sim_nonces_use(pc_sim_nonces_t *n, const char *nonce, int64_t now_s)
{
    if (strlen(nonce) >= sizeof n->ring[0].nonce)
        return PC_EINVAL;
    while (n->count && n->ring[n->head].at + PC_SIM_NONCE_TTL_S < now_s)
        drop_oldest(n);
    nonce_slot_t *seen = pc_sim_map_get(n->map, nonce);
    if (seen && seen->at + PC_SIM_NONCE_TTL_S >= now_s)
        return PC_ECONFLICT;
    if (n->count == n->cap)
        drop_oldest(n);
    nonce_slot_t *s = &n->ring[(n->head + n->count) % n->cap];
    snprintf(s->nonce, sizeof s->nonce, "%s", nonce);
    s->at = now_s;
    if (pc_sim_map_put(n->map, s->nonce, s) < 0)
        return PC_ENOMEM;
    n->count++;
    return 0;
}
