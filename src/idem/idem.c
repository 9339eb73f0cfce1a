#include "idem/idem.h"
#include "auth/sign.h"
#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char release_script[] =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) "
    "else return 0 end";
static const char renew_script[] =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], "
    "ARGV[2]) else return 0 end";

struct pc_idem {
    pc_db_t *db;
    pc_kv_t *kv;
    uv_loop_t *loop;
    char lock_ms[24];                /* how long a claim holds without renewal, as sent */
    uint64_t renew_ms;               /* a running request renews it this often (a third) */
    uint8_t hash_key[PC_SHA256_LEN]; /* keys the stored request hashes */
    int purging;                     /* a purge is under way (pc_idem_purge) */
    int purge_rounds;
    int purge_step; /* which table (g_purges) */
    long long purged;
};

struct pc_idem_req {
    pc_idem_t *idem;
    pc_http_req_t *req;
    char mid[65];
    char key[PC_IDEMPOTENCY_KEY_MAX_LEN + 1];
    char hash[PC_SHA256_HEX_LEN + 1];
    char token[33];
    char rkey[320];
    char ckey[330]; /* the key's read-only (consult) record in Redis */
    int redis_locked;
    int used_by_consult; /* the key answered a consult: not for this request */
    /* Renews the claim while the handler runs (a pay may wait on slow
     * channels longer than one lock period); NULL when not running. */
    uv_timer_t *renew;
    /* The answer queued by pc_idem_store_in_tx. It is the record only if
     * that transaction committed; then the handler answers exactly it. */
    int stored;
    int stored_status;
    char *stored_body;
    /* What an earlier run of this request set going outside its own
     * transaction (idempotency_keys.effect_ref), read when this one took
     * its claim over: "" for none. */
    char effect[64];
    /* The answer being stored while the client waits. */
    int status;
    char *body;
    size_t len;
    int store_tries; /* writes of it sent */
};

pc_idem_t *pc_idem_new(uv_loop_t *loop, pc_db_t *db, pc_kv_t *kv, int64_t lock_ms,
                       const char *secret)
{
    if (!secret || !secret[0])
        return NULL;
    pc_idem_t *idem = calloc(1, sizeof *idem);
    if (!idem)
        return NULL;
    /* A key of its own, derived from the secret: the secret's other uses
     * never see these hashes. */
    static const char purpose[] = "paycore idempotency request hash";
    if (pc_hmac_sha256(secret, strlen(secret), purpose, sizeof purpose - 1, idem->hash_key) != 0) {
        free(idem);
        return NULL;
    }
    idem->loop = loop;
    idem->db = db;
    idem->kv = kv;
    snprintf(idem->lock_ms, sizeof idem->lock_ms, "%lld", (long long)lock_ms);
    idem->renew_ms = (uint64_t)lock_ms / 3;
    pc_metrics_describe(
        "pc_idempotency_total", PC_METRIC_COUNTER,
        "idempotency outcomes (executed, replayed, conflict, reused, redis_fallback)");
    return idem;
}

void pc_idem_free(pc_idem_t *idem)
{
    free(idem);
}

static void count(const char *what)
{
    char labels[64];
    snprintf(labels, sizeof labels, "outcome=\"%s\"", what);
    pc_metrics_add("pc_idempotency_total", labels, 1);
}

static void release_lock(pc_idem_req_t *ir)
{
    if (!ir->redis_locked)
        return;
    ir->redis_locked = 0;
    const char *argv[] = {"EVAL", release_script, "1", ir->rkey, ir->token};
    /* If this fails the lock expires by itself (PX). */
    pc_kv_command(ir->idem->kv, NULL, NULL, 5, argv, NULL);
}

/* --- while the handler runs: keep the claim --- */

static void renew_closed(uv_handle_t *h)
{
    free(h);
}

static void renew_stop(pc_idem_req_t *ir)
{
    if (!ir->renew)
        return;
    uv_close((uv_handle_t *)ir->renew, renew_closed);
    ir->renew = NULL;
}

/* Extends this request's own Redis lock and PostgreSQL claim (both only if
 * still ours): a claim that lapsed while its handler still ran would let a
 * retry with the same key run the request a second time. A claim whose
 * holder died is not renewed and lapses as before. */
static void renew_tick(uv_timer_t *t)
{
    pc_idem_req_t *ir = t->data;
    if (ir->redis_locked) {
        const char *argv[] = {"EVAL", renew_script, "1", ir->rkey, ir->token, ir->idem->lock_ms};
        pc_kv_command(ir->idem->kv, NULL, NULL, 6, argv, NULL);
    }
    const char *p[] = {ir->mid, ir->key, ir->token, ir->idem->lock_ms};
    pc_db_query(ir->idem->db,
                "UPDATE idempotency_keys SET locked_until = now() + $4::int * interval '1 "
                "millisecond' WHERE merchant_id = $1 AND idem_key = $2 AND lock_token = $3 AND "
                "status = 'IN_PROGRESS'",
                4, p, NULL, NULL);
}

static void renew_start(pc_idem_req_t *ir)
{
    ir->renew = malloc(sizeof *ir->renew);
    if (!ir->renew)
        return; /* the claim then holds one lock period, as before */
    uv_timer_init(ir->idem->loop, ir->renew);
    ir->renew->data = ir;
    uv_timer_start(ir->renew, renew_tick, ir->idem->renew_ms, ir->idem->renew_ms);
}

static void on_req_done(void *arg)
{
    pc_idem_req_t *ir = arg;
    renew_stop(ir);
    release_lock(ir);
    free(ir->body);
    free(ir->stored_body);
}

/* --- after the handler: store the answer, then send it --- */

static void send_stored_answer(pc_idem_req_t *ir)
{
    pc_http_send(ir->req, ir->status, "application/json", ir->body, ir->len);
}

static int store_answer(pc_idem_req_t *ir);

static void store_done_cb(void *data, int status, pc_db_res_t *res)
{
    pc_idem_req_t *ir = data;
    /* Written again once (a connection reset, most often, which the pool
     * has replaced by now): an answer not recorded leaves the key claimed
     * until its lock lapses, and a retry after that runs the request
     * again. The claim is still this request's (it lapses lock_ms after
     * the last renewal), so a second write is as good as the first. */
    if (status && ir->store_tries < 2 && store_answer(ir) == 0)
        return;
    if (status)
        pc_log_warn("idem.store_failed", "could not record the answer for key %s of %s: %s",
                    ir->key, ir->mid, pc_db_errmsg(res));
    send_stored_answer(ir);
}

/* The read-only (consult) record of the key, in Redis only, kept 25 h:
 * "<request hash>\n<status>\n<body>". */
static void put_light_record(pc_idem_req_t *ir, int status, const char *body, size_t len)
{
    size_t n = strlen(ir->hash) + 16 + len;
    char *rec = malloc(n);
    if (!rec)
        return;
    int hl = snprintf(rec, n, "%s\n%d\n", ir->hash, status);
    memcpy(rec + hl, body, len);
    const char *argv[] = {"SET", ir->ckey, rec, "EX", "90000"};
    size_t lens[] = {3, strlen(ir->ckey), (size_t)hl + len, 2, 5};
    pc_kv_command(ir->idem->kv, NULL, NULL, 5, argv, lens);
    free(rec);
}

/* Whether a read-only record was made by this very request (same hash). */
static int light_record_is_this(const pc_idem_req_t *ir, const char *rec, size_t len)
{
    size_t hl = strlen(ir->hash);
    return len > hl && memcmp(rec, ir->hash, hl) == 0 && rec[hl] == '\n';
}

/* Marks the key as taken in the read-only records too, so that a consult
 * sent with it later is told the key was used for another request (422) as
 * the durable record would tell any other POST. Best effort: Redis only. */
static void mark_for_consults(pc_idem_req_t *ir)
{
    put_light_record(ir, 0, "", 0);
}

static void responder(pc_http_req_t *req, int status, const char *ctype, const char *body,
                      size_t len, void *data)
{
    pc_idem_req_t *ir = data;
    (void)ctype;
    renew_stop(ir);
    if (status < 500)
        mark_for_consults(ir);
    /* Recorded with the business change: the answer is the one stored. Any
     * other answer means that transaction did not commit (the handler then
     * answers an error, or the state as it is), so it is recorded below. */
    if (ir->stored && status < 500 && status == ir->stored_status &&
        len == strlen(ir->stored_body) && memcmp(body, ir->stored_body, len) == 0) {
        pc_http_send(req, status, "application/json", body, len);
        return;
    }
    ir->status = status;
    ir->body = malloc(len + 1);
    if (!ir->body) {
        pc_http_send(req, status, "application/json", body, len);
        return;
    }
    memcpy(ir->body, body, len);
    ir->body[len] = 0;
    ir->len = len;
    if (store_answer(ir) < 0)
        send_stored_answer(ir);
}

/* Records ir's answer (status, body), or, for a 5xx, lets the key go; then
 * store_done_cb sends it. Returns 0, or < 0 when nothing was sent. */
static int store_answer(pc_idem_req_t *ir)
{
    char st[16];
    snprintf(st, sizeof st, "%d", ir->status);
    int rc;
    ir->store_tries++;
    if (ir->status >= 500) {
        /* Not stored: the client may retry. A record already final (the
         * business transaction committed it) is left alone; one whose
         * request set something going (effect_ref) is kept, its claim
         * lapsed at once, so that the retry takes it over and is answered
         * with that (pc_idem_effect) instead of doing it again. */
        const char *p[] = {ir->mid, ir->key, ir->token};
        rc = pc_db_query(ir->idem->db,
                         "WITH d AS (DELETE FROM idempotency_keys WHERE merchant_id = $1 AND "
                         "idem_key = $2 AND lock_token = $3 AND status = 'IN_PROGRESS' AND "
                         "effect_ref IS NULL) UPDATE idempotency_keys SET locked_until = now() "
                         "WHERE merchant_id = $1 AND idem_key = $2 AND lock_token = $3 AND "
                         "status = 'IN_PROGRESS' AND effect_ref IS NOT NULL",
                         3, p, store_done_cb, ir);
    } else {
        const char *p[] = {ir->mid, ir->key, ir->token, st, ir->body};
        rc = pc_db_query(ir->idem->db,
                         "UPDATE idempotency_keys SET status = 'DONE', response_status = $4, "
                         "response_body = $5, finished_at = now() WHERE merchant_id = $1 AND "
                         "idem_key = $2 AND lock_token = $3 AND status = 'IN_PROGRESS'",
                         5, p, store_done_cb, ir);
    }
    return rc < 0 ? rc : 0;
}

int pc_idem_store_in_tx(pc_idem_req_t *ir, pc_db_tx_t *tx, int status, const char *body)
{
    if (!ir)
        return 0;
    char st[16];
    snprintf(st, sizeof st, "%d", status);
    const char *p[] = {ir->mid, ir->key, ir->token, st, body};
    char *copy = strdup(body);
    if (!copy)
        return PC_ENOMEM;
    /* The claim must still be this request's: one that lapsed (the node
     * stalled past its lease) may have been taken over by a retry on another
     * node, which does the same change again. Then this transaction must not
     * commit: pc_require fails it, and the retry's answer stands. */
    int rc = pc_db_tx_query(tx,
                            "WITH w AS (UPDATE idempotency_keys SET status = 'DONE', "
                            "response_status = $4, response_body = $5, finished_at = now() WHERE "
                            "merchant_id = $1 AND idem_key = $2 AND lock_token = $3 AND status = "
                            "'IN_PROGRESS' RETURNING 1) SELECT pc_require(EXISTS (SELECT 1 FROM "
                            "w), 'idempotency_claim')",
                            5, p, NULL, NULL);
    if (rc < 0) {
        free(copy);
        return rc;
    }
    free(ir->stored_body);
    ir->stored_body = copy;
    ir->stored_status = status;
    ir->stored = 1;
    return 0;
}

int pc_idem_note_effect_in_tx(pc_idem_req_t *ir, pc_db_tx_t *tx, const char *ref)
{
    if (!ir)
        return 0;
    const char *p[] = {ir->mid, ir->key, ir->token, ref};
    /* As pc_idem_store_in_tx: only while the claim is this request's. */
    return pc_db_tx_query(tx,
                          "WITH w AS (UPDATE idempotency_keys SET effect_ref = $4 WHERE "
                          "merchant_id = $1 AND idem_key = $2 AND lock_token = $3 AND status = "
                          "'IN_PROGRESS' RETURNING 1) SELECT pc_require(EXISTS (SELECT 1 FROM w), "
                          "'idempotency_claim')",
                          4, p, NULL, NULL);
}

int pc_idem_claim_params(const pc_idem_req_t *ir, const char *out[3])
{
    out[0] = ir ? ir->mid : NULL;
    out[1] = ir ? ir->key : NULL;
    out[2] = ir ? ir->token : NULL;
    return ir ? 3 : 0;
}

const char *pc_idem_effect(const pc_idem_req_t *ir)
{
    return ir && ir->effect[0] ? ir->effect : NULL;
}

/* --- before the handler: claim the key --- */

static void answer_existing_cb(void *data, int status, pc_db_res_t *res)
{
    pc_idem_req_t *ir = data;
    pc_http_req_t *req = ir->req;
    if (status) {
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "idempotency store unavailable");
        return;
    }
    if (pc_db_rows(res) == 0) {
        /* Another node holds the Redis lock and has not written its record yet. */
        count("conflict");
        pc_http_respond_error(req, PC_API_REQUEST_IN_PROGRESS, NULL,
                              "a request with this Idempotency-Key is still running");
        return;
    }
    if (strcmp(pc_db_val(res, 0, "request_hash"), ir->hash) != 0) {
        count("reused");
        pc_http_respond_error(req, PC_API_IDEMPOTENCY_KEY_REUSED, "Idempotency-Key",
                              "this Idempotency-Key was used for a different request");
        return;
    }
    if (strcmp(pc_db_val(res, 0, "status"), "DONE") != 0) {
        count("conflict");
        pc_http_respond_error(req, PC_API_REQUEST_IN_PROGRESS, NULL,
                              "a request with this Idempotency-Key is still running");
        return;
    }
    count("replayed");
    pc_http_add_header(req, "Idempotent-Replayed", "true");
    const char *body = pc_db_val(res, 0, "response_body");
    pc_http_send(req, (int)pc_db_val_i64(res, 0, "response_status"), "application/json", body,
                 strlen(body));
}

static void answer_existing(pc_idem_req_t *ir)
{
    const char *p[] = {ir->mid, ir->key};
    if (pc_db_query(ir->idem->db,
                    "SELECT request_hash, status, response_status, response_body FROM "
                    "idempotency_keys WHERE merchant_id = $1 AND idem_key = $2",
                    2, p, answer_existing_cb, ir) < 0)
        pc_http_respond_error(ir->req, PC_API_UNAVAILABLE, NULL, "idempotency store unavailable");
}

static void claim_cb(void *data, int status, pc_db_res_t *res)
{
    pc_idem_req_t *ir = data;
    if (status) {
        pc_http_respond_error(ir->req, PC_API_UNAVAILABLE, NULL, "idempotency store unavailable");
        return;
    }
    if (pc_db_rows(res) == 1 && strcmp(pc_db_get(res, 0, 0), ir->token) == 0) {
        snprintf(ir->effect, sizeof ir->effect, "%s", pc_db_get(res, 0, 1));
        count("executed");
        renew_start(ir);
        pc_http_set_responder(ir->req, responder, ir);
        pc_http_next(ir->req);
        return;
    }
    answer_existing(ir);
}

static void claim(pc_idem_req_t *ir)
{
    const char *p[] = {ir->mid,
                       ir->key,
                       ir->hash,
                       pc_http_req_method(ir->req),
                       pc_http_req_target(ir->req),
                       ir->token,
                       ir->idem->lock_ms};
    /* Insert, or take over a claim whose holder died (lock expired) for the
     * same request; anything else returns no row.
     * The claim commits without waiting for its WAL flush (synchronous_commit
     * off for this statement's own transaction): whatever the request then
     * commits durably flushes the claim with it, as WAL is written in order,
     * and a claim lost in a crash before that guarded nothing that happened.
     * Other sessions see it at once either way. One flush wait less per POST
     * (scripts/bench, README "Performance"). */
    if (pc_db_query(ir->idem->db,
                    "INSERT INTO idempotency_keys (merchant_id, idem_key, request_hash, method, "
                    "path, status, lock_token, locked_until) SELECT $1, $2, $3, $4, $5, "
                    "'IN_PROGRESS', $6, now() + $7::int * interval '1 millisecond' WHERE "
                    "set_config('synchronous_commit', 'off', true) = 'off' "
                    "ON CONFLICT (merchant_id, idem_key) DO UPDATE SET lock_token = "
                    "EXCLUDED.lock_token, locked_until = EXCLUDED.locked_until "
                    "WHERE idempotency_keys.status = 'IN_PROGRESS' AND "
                    "idempotency_keys.locked_until < now() AND "
                    "idempotency_keys.request_hash = EXCLUDED.request_hash RETURNING "
                    "lock_token, coalesce(effect_ref, '')",
                    7, p, claim_cb, ir) < 0)
        pc_http_respond_error(ir->req, PC_API_UNAVAILABLE, NULL, "idempotency store unavailable");
}

static void consult_seen_cb(void *data, int status, const pc_kv_reply_t *reply)
{
    pc_idem_req_t *ir = data;
    if (status || pc_kv_reply_type(reply) != PC_KV_STRING)
        return;
    /* This request's own mark (a replay) is no reuse. */
    size_t len;
    const char *rec = pc_kv_reply_str(reply, &len);
    if (!light_record_is_this(ir, rec, len))
        ir->used_by_consult = 1;
}

static void lock_cb(void *data, int status, const pc_kv_reply_t *reply)
{
    pc_idem_req_t *ir = data;
    if (status == 0 && pc_kv_reply_type(reply) == PC_KV_STATUS)
        ir->redis_locked = 1; /* released when the request is done */
    if (ir->used_by_consult) {
        /* Its read-only record came back just before (same connection,
         * replies in order). */
        count("reused");
        pc_http_respond_error(ir->req, PC_API_IDEMPOTENCY_KEY_REUSED, "Idempotency-Key",
                              "this Idempotency-Key was used for a different request");
        return;
    }
    if (status == 0 && pc_kv_reply_type(reply) == PC_KV_NIL) {
        /* Held by a request still running (or just finished): PostgreSQL says which. */
        answer_existing(ir);
        return;
    }
    if (status == 0 && pc_kv_reply_type(reply) == PC_KV_STATUS) {
        ir->redis_locked = 1;
    } else {
        /* No answer (a timeout, a dropped connection) does not mean the SET
         * did not land: released by its token when done all the same (a
         * no-op if it did not), not left to expire while retries of a
         * finished request are told it is in progress. */
        if (status)
            ir->redis_locked = 1;
        count("redis_fallback");
    }
    claim(ir);
}

/* --- read-only POSTs (consult): the record lives in Redis only --- */

/* POSTs that change nothing: replaying them needs no lock and no durable
 * record, so they stay cheap; with Redis down they simply run again. */
static int read_only_post(const char *path)
{
    return strcmp(path, "/v1/cashier/consult") == 0;
}

static void light_responder(pc_http_req_t *req, int status, const char *ctype, const char *body,
                            size_t len, void *data)
{
    pc_idem_req_t *ir = data;
    (void)ctype;
    if (status < 500)
        put_light_record(ir, status, body, len);
    pc_http_send(req, status, "application/json", body, len);
}

static void light_get_cb(void *data, int status, const pc_kv_reply_t *reply)
{
    pc_idem_req_t *ir = data;
    if (status == 0 && pc_kv_reply_type(reply) == PC_KV_STRING) {
        size_t len;
        const char *rec = pc_kv_reply_str(reply, &len);
        const char *nl1 = memchr(rec, '\n', len);
        const char *nl2 = nl1 ? memchr(nl1 + 1, '\n', len - (size_t)(nl1 + 1 - rec)) : NULL;
        if (nl2) {
            if (!light_record_is_this(ir, rec, len)) {
                count("reused");
                pc_http_respond_error(ir->req, PC_API_IDEMPOTENCY_KEY_REUSED, "Idempotency-Key",
                                      "this Idempotency-Key was used for a different request");
                return;
            }
            count("replayed");
            pc_http_add_header(ir->req, "Idempotent-Replayed", "true");
            pc_http_send(ir->req, atoi(nl1 + 1), "application/json", nl2 + 1,
                         len - (size_t)(nl2 + 1 - rec));
            return;
        }
    }
    pc_http_set_responder(ir->req, light_responder, ir);
    pc_http_next(ir->req);
}

void pc_idem_run(pc_idem_t *idem, pc_http_req_t *req, const char *merchant_id, pc_idem_req_t **slot)
{
    const char *key = pc_http_req_header(req, "Idempotency-Key");
    if (!key || !pc_idempotency_key_is_valid(key, strlen(key))) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "Idempotency-Key",
                              key ? "Idempotency-Key must be 1-64 printable ASCII characters"
                                  : "Idempotency-Key header is required for POST");
        return;
    }
    pc_idem_req_t *ir = pc_http_req_alloc(req, sizeof *ir);
    ir->idem = idem;
    ir->req = req;
    *slot = ir;
    snprintf(ir->mid, sizeof ir->mid, "%s", merchant_id);
    snprintf(ir->key, sizeof ir->key, "%s", key);
    size_t blen;
    const char *body = pc_http_req_body(req, &blen);
    /* Unchecked, a failure left an empty hash (another body under the same
     * key would be replayed this request's answer) and an empty lock token
     * (every such request holding every other's lock). */
    if (pc_request_hash_hex(idem->hash_key, sizeof idem->hash_key, pc_http_req_method(req),
                            pc_http_req_target(req), body, blen, ir->hash) != 0 ||
        pc_random_hex(ir->token, sizeof ir->token, 16) != 0) {
        *slot = NULL;
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL,
                              "the request could not be hashed; nothing was run: retry");
        return;
    }
    char name[300];
    snprintf(name, sizeof name, "idem:%s:%s", ir->mid, ir->key);
    pc_kv_key(idem->kv, ir->rkey, sizeof ir->rkey, name);
    char rname[310];
    snprintf(rname, sizeof rname, "idemr:%s:%s", ir->mid, ir->key);
    pc_kv_key(idem->kv, ir->ckey, sizeof ir->ckey, rname);
    if (read_only_post(pc_http_req_path(req))) {
        *slot = NULL;
        if (pc_kv_cmd(idem->kv, light_get_cb, ir, "GET", ir->ckey, NULL) < 0)
            light_get_cb(ir, PC_EUNAVAIL, NULL);
        return;
    }
    pc_http_req_on_done(req, on_req_done, ir);
    /* A consult's record of this key, read just ahead of the lock (one round
     * trip for both). */
    pc_kv_cmd(idem->kv, consult_seen_cb, ir, "GET", ir->ckey, NULL);
    if (pc_kv_cmd(idem->kv, lock_cb, ir, "SET", ir->rkey, ir->token, "NX", "PX", idem->lock_ms,
                  NULL) < 0)
        lock_cb(ir, PC_EUNAVAIL, NULL);
}

/* Idempotency records older than 25 h, then expired nonces, then finished
 * merchant notifications older than 90 days (the notifier has no clean-up
 * of its own; their attempts go with them, ON DELETE CASCADE) are purged in
 * batches of PURGE_BATCH, oldest first, one batch after another until one
 * comes back short (at most PURGE_ROUNDS a table and call): one DELETE of a
 * backlog (a node down for a day, a busy hour, the nonces of a Redis outage)
 * would run past the pool's statement deadline, be cut off and rolled back,
 * and so never succeed again while the table grew. Nodes purging together
 * skip each other's rows instead of waiting for them. */
#define PURGE_BATCH 5000
#define PURGE_ROUNDS 200

static const struct {
    const char *sql, *what;
} g_purges[] = {
    {"DELETE FROM idempotency_keys WHERE ctid = ANY (ARRAY(SELECT ctid FROM idempotency_keys "
     "WHERE created_at < now() - interval '25 hours' ORDER BY created_at LIMIT $1::int FOR "
     "UPDATE SKIP LOCKED))",
     "idempotency records older than 25 h"},
    {"DELETE FROM auth_nonces WHERE ctid = ANY (ARRAY(SELECT ctid FROM auth_nonces WHERE "
     "expires_at < now() ORDER BY expires_at LIMIT $1::int FOR UPDATE SKIP LOCKED))",
     "expired nonces"},
    {"DELETE FROM outbox WHERE ctid = ANY (ARRAY(SELECT ctid FROM outbox WHERE status IN "
     "('DELIVERED', 'FAILED', 'SKIPPED') AND created_at < now() - interval '90 days' ORDER BY "
     "created_at LIMIT $1::int FOR UPDATE SKIP LOCKED))",
     "finished notifications older than 90 days"},
};

static void purge_batch(pc_idem_t *idem);

/* The next table, or the end of this purge. */
static void purge_next(pc_idem_t *idem)
{
    if (idem->purged > 0)
        pc_log_info("idem.purged", "%lld %s", idem->purged, g_purges[idem->purge_step].what);
    idem->purged = 0;
    idem->purge_rounds = 0;
    if (++idem->purge_step < (int)(sizeof g_purges / sizeof g_purges[0]))
        purge_batch(idem);
    else
        idem->purging = 0;
}

static void purge_cb(void *data, int status, pc_db_res_t *res)
{
    pc_idem_t *idem = data;
    long long n = status ? 0 : pc_db_affected(res);
    idem->purged += n;
    if (!status && n == PURGE_BATCH && ++idem->purge_rounds < PURGE_ROUNDS) {
        purge_batch(idem);
        return;
    }
    if (status)
        pc_log_warn("idem.purge_failed", "purging %s: %s (again in a minute)",
                    g_purges[idem->purge_step].what, pc_strerror(status));
    purge_next(idem);
}

static void purge_batch(pc_idem_t *idem)
{
    char batch[16];
    snprintf(batch, sizeof batch, "%d", PURGE_BATCH);
    const char *p[] = {batch};
    if (pc_db_query(idem->db, g_purges[idem->purge_step].sql, 1, p, purge_cb, idem) < 0)
        idem->purging = 0;
}

void pc_idem_purge(pc_idem_t *idem)
{
    if (!idem->purging) {
        idem->purging = 1;
        idem->purged = 0;
        idem->purge_rounds = 0;
        idem->purge_step = 0;
        purge_batch(idem);
    }
}
