#include "auth/auth.h"
#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A nonce is remembered longer than the ±300 s timestamp window is wide,
 * with a margin for clocks of nodes that disagree a little. */
#define NONCE_TTL_S "660"
/* This node takes nonces in PostgreSQL only (Redis unreachable): every node
 * records its own there too until a nonce's lifetime after this (migration
 * 0085). */
#define MARK_FALLBACK_SQL                                                                          \
    "INSERT INTO auth_nonce_fallback (until) VALUES (now() + interval '" NONCE_TTL_S               \
    " seconds') ON CONFLICT (id) DO UPDATE SET until = EXCLUDED.until"
/* A nonce into auth_nonces, kept a nonce's lifetime: the rest of the
 * statement gives merchant ($1) and nonce ($2). */
#define INSERT_NONCE "INSERT INTO auth_nonces (merchant_id, nonce, expires_at) "
#define NONCE_EXPIRES "now() + interval '" NONCE_TTL_S " seconds'"
/* Seconds after this node began taking nonces in PostgreSQL only before it
 * takes a request signed then: the other nodes read the mark at most a
 * second late, and clocks are read in whole seconds. */
#define FALLBACK_SETTLE_S 3

/* Nonces live in Redis, and Redis may forget them: a restart without
 * persistence or a flush (a request signed before it could then be replayed,
 * with a fresh Idempotency-Key, which is not signed, within its timestamp
 * window), or an outage during which nodes recorded nonces in PostgreSQL
 * only.
 *  - Lost memory: Redis keeps a floor beside the nonces, and requests whose
 *    X-Timestamp is older are refused as expired. When the floor is missing
 *    (Redis lost its memory, or never had one) the script sets it to ARGV[3]:
 *    one past the newest timestamp this node accepted, at least the second
 *    before now and at most the next second. A fresh system refuses nothing
 *    signed a moment ago, and the node that finds the loss cannot be sent
 *    its own last requests again; see README for what is left.
 *  - Outage: the node that recorded nonces in PostgreSQL copies the unexpired
 *    ones back into Redis once Redis answers again (copy_back).
 * The script checks the floor and takes the nonce in one step. Returns 1
 * (fresh), 0 (nonce used) or -1 (timestamp under the floor). */
/* Redis restarted from an older snapshot (RDB persistence, a replica that
 * was behind) keeps a floor, but not the nonces taken since the snapshot:
 * those requests were replayable with a fresh Idempotency-Key. Its run_id
 * changes at every start, so every node, on each new connection and before
 * anything else on it, compares it with the one recorded beside the floor;
 * another (or none) raises the floor as a missing one is set (ARGV[1]).
 * Returns 1 (raised), 0 (the same Redis) or -1 (no run_id to read). */
static const char runid_script[] =
    "local rid = string.match(redis.call('info', 'server'), 'run_id:(%w+)')\n"
    "if not rid then return -1 end\n"
    "if redis.call('get', KEYS[1]) == rid then return 0 end\n"
    "local f = tonumber(redis.call('get', KEYS[2]))\n"
    "if not f or f < tonumber(ARGV[1]) then redis.call('set', KEYS[2], ARGV[1]) end\n"
    "redis.call('set', KEYS[1], rid)\n"
    "return 1";

static const char nonce_script[] =
    "local f = tonumber(redis.call('get', KEYS[2]))\n"
    "if not f then f = tonumber(ARGV[3]); redis.call('set', KEYS[2], ARGV[3]) end\n"
    "if tonumber(ARGV[2]) < f then return -1 end\n"
    "if redis.call('set', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 1 end\n"
    "return 0";

struct pc_auth {
    pc_merchants_t *merchants;
    pc_kv_t *kv;
    pc_db_t *db;
    pc_idem_t *idem;
    char floor_key[128], runid_key[128];
    int64_t newest_ts; /* the newest X-Timestamp this node accepted */
    /* The run_id check of the present connection (check_runid): 0 not made
     * or failed, 1 made, 2 on its way. */
    int runid_state;
    int64_t started_s; /* when this node started (Unix time) */
    /* Redis's first error answer to a nonce since it last took or refused
     * one here (0: it answers well) */
    int64_t err_since_s;
    /* This node recorded nonces in PostgreSQL only (Redis unreachable) that
     * Redis has not been given yet. */
    bool nonces_in_pg_only;
    /* The copy back into Redis under way: where the next page starts. */
    bool copying, copy_failed, copy_more;
    int copy_in_flight;
    long long copied;
    char copy_mid[65], copy_nonce[65];
    /* Some node records nonces in PostgreSQL only (auth_nonce_fallback,
     * migration 0085): this one then records there too the nonces it takes
     * through Redis. Read with a request's nonce at most once a second
     * (fallback_read_s), and held until the next read. */
    bool fallback_active;
    int64_t fallback_read_s;
    int64_t fallback_marked_s; /* this node last said so */
    int64_t fallback_since_s;  /* this node's mark stored at (0: none since Redis answered) */
    bool fallback_marking;     /* the mark is on its way */
};

/* What the filter leaves on the request for handlers. */
typedef struct {
    pc_auth_t *auth;
    pc_http_req_t *req;
    pc_merchant_t *merchant; /* one reference, dropped when the request ends */
    pc_idem_req_t *idem;
    const char *nonce;
    int64_t ts;
} auth_ctx_t;

/* The floor to set when Redis has lost nonces: one past the newest
 * timestamp this node accepted, at least the second before now and at most
 * the next second (further would refuse every request signed now until
 * then). */
static int64_t fresh_floor(const pc_auth_t *a)
{
    int64_t t_now = (int64_t)time(NULL), t_next = t_now + 1;
    int64_t f = a->newest_ts + 1 > t_now - 1 ? a->newest_ts + 1 : t_now - 1;
    return f > t_next ? t_next : f;
}

static void runid_checked_cb(void *data, int status, const pc_kv_reply_t *reply)
{
    pc_auth_t *a = data;
    const char *err = status                                     ? pc_strerror(status)
                      : pc_kv_reply_type(reply) != PC_KV_INTEGER ? pc_kv_reply_str(reply, NULL)
                      : pc_kv_reply_int(reply) < 0               ? "no run_id in INFO"
                                                                 : NULL;
    if (err && (status || !strncmp(err, "LOADING", 7) || !strncmp(err, "BUSY", 4))) {
        /* Made again before the next request is taken (merchant_cb): a Redis
         * still loading its snapshot, or busy, or no answer in time; its old
         * floor would stand meanwhile. */
        a->runid_state = 0;
        pc_log_warn("auth.runid_unchecked",
                    "could not compare Redis's run_id with the nonce floor's: %s; requests "
                    "wait (503) until it is done",
                    err);
        return;
    }
    a->runid_state = 1;
    if (err) {
        /* A server that will not run it (no INFO in scripts, no run_id):
         * serving goes on, without this check. */
        pc_log_error("auth.runid_unavailable",
                     "Redis's run_id cannot be compared with the nonce floor's (%s): a Redis "
                     "restored from an older snapshot keeps its floor, and nonces taken since it "
                     "was saved can be replayed for their 300 s",
                     err);
        return;
    }
    if (pc_kv_reply_int(reply) == 1)
        pc_log_warn("auth.nonce_floor_raised",
                    "Redis is not the one the nonce floor was set in (restarted, or restored "
                    "from a snapshot): requests signed before now must be signed again");
}

static void check_runid(void *data)
{
    pc_auth_t *a = data;
    char f[24];
    snprintf(f, sizeof f, "%lld", (long long)fresh_floor(a));
    const char *argv[] = {"EVAL", runid_script, "2", a->runid_key, a->floor_key, f};
    a->runid_state = pc_kv_command(a->kv, runid_checked_cb, a, 6, argv, NULL) < 0 ? 0 : 2;
}

pc_auth_t *pc_auth_new(pc_merchants_t *merchants, pc_kv_t *kv, pc_db_t *db, pc_idem_t *idem)
{
    pc_auth_t *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->merchants = merchants;
    a->kv = kv;
    a->db = db;
    a->idem = idem;
    pc_kv_key(kv, a->floor_key, sizeof a->floor_key, "auth:nonce_floor");
    pc_kv_key(kv, a->runid_key, sizeof a->runid_key, "auth:nonce_runid");
    /* A node that died before copying its outage nonces back leaves them in
     * PostgreSQL only: each node looks once, on its first check (normally
     * nothing is there and that is one small query). */
    a->nonces_in_pg_only = true;
    a->started_s = (int64_t)time(NULL);
    pc_metrics_describe("pc_auth_failures_total", PC_METRIC_COUNTER,
                        "requests refused by authentication, by code");
    pc_kv_on_connect(kv, check_runid, a);
    return a;
}

/* The kv's on-connect hook is not touched here: kv is closed (and freed)
 * before (main's stop), and pc_kv_close drops its hook. */
void pc_auth_free(pc_auth_t *auth)
{
    free(auth);
}

const pc_merchant_t *pc_auth_merchant(const pc_http_req_t *req)
{
    const auth_ctx_t *c = pc_http_req_user(req);
    return c ? c->merchant : NULL;
}

pc_idem_req_t *pc_auth_idem(const pc_http_req_t *req)
{
    const auth_ctx_t *c = pc_http_req_user(req);
    return c ? c->idem : NULL;
}

static void refuse(pc_http_req_t *req, pc_api_err_t err, const char *field, const char *msg)
{
    char labels[64];
    snprintf(labels, sizeof labels, "code=\"%s\"", pc_api_err_code(err));
    pc_metrics_add("pc_auth_failures_total", labels, 1);
    pc_http_respond_error(req, err, field, msg);
}

/* A request paycore cannot tell from a replay because its nonce store
 * forgot, or cannot be asked about, nonces of its time: nothing of it runs.
 * A dependency's state, not the client's fault: 503, which clients retry
 * (api.md), signing again as every attempt does — with the current time
 * it passes. (It was 401 TIMESTAMP_EXPIRED, which clients do not retry:
 * every request in flight at a Redis blip failed for good.) */
static void refuse_resign(pc_http_req_t *req, const char *why)
{
    char msg[256];
    snprintf(msg, sizeof msg, "%s: sign it again with the current time and retry", why);
    pc_metrics_add("pc_auth_failures_total", "code=\"RESIGN\"", 1);
    pc_http_add_header(req, "Retry-After", "1");
    pc_http_respond_error(req, PC_API_UNAVAILABLE, "X-Timestamp", msg);
}

static void release_merchant(void *arg)
{
    auth_ctx_t *c = arg;
    if (c->merchant)
        pc_merchant_unref(c->merchant);
}

static void proceed(auth_ctx_t *c)
{
    if (strcmp(pc_http_req_method(c->req), "POST") == 0)
        pc_idem_run(c->auth->idem, c->req, c->merchant->id, &c->idem);
    else
        pc_http_next(c->req);
}

static void nonce_pg_cb(void *data, int status, pc_db_res_t *res)
{
    auth_ctx_t *c = data;
    if (status) {
        pc_http_respond_error(c->req, PC_API_UNAVAILABLE, NULL, "nonce store unavailable");
        return;
    }
    /* A renewal (record_in_pg's mark) found the mark lapsed: the node took
     * no request for its lifetime, and the other nodes have taken nonces
     * through Redis only since. Nothing was taken: the node marks afresh,
     * with the settling time of a first mark, before it takes one. Before,
     * it went on, and a request another node took meanwhile could be
     * replayed here. */
    if (pc_db_rows(res) == 1 && pc_db_get(res, 0, 0)[0] != 't') {
        c->auth->fallback_since_s = 0;
        pc_http_respond_error(c->req, PC_API_UNAVAILABLE, NULL,
                              "this node's fallback notice had lapsed and is being renewed: try "
                              "again in a few seconds (switching to its fallback)");
        return;
    }
    if (pc_db_rows(res) == 1 ? pc_db_get(res, 0, 1)[0] != 't' : pc_db_affected(res) == 0) {
        refuse(c->req, PC_API_NONCE_REUSED, "X-Nonce", "this nonce was already used");
        return;
    }
    proceed(c);
}

/* Rows per page of the copy (the LIMIT of its query): an outage under load
 * leaves many nonces, and the loop must not hold them, or their Redis
 * commands, all at once. */
#define COPY_PAGE 2000

static void copy_page(pc_auth_t *a);

/* The copy ends, well or not; a failed one is tried again by the next
 * check that Redis answers. */
static void copy_done(pc_auth_t *a, bool ok)
{
    a->copying = false;
    if (!ok) {
        a->nonces_in_pg_only = true;
        pc_log_warn("auth.nonces_copy_failed",
                    "copying nonces taken while Redis was unreachable back into Redis failed "
                    "after %lld; it starts again with the next check",
                    (long long)a->copied);
    } else if (a->copied > 0) {
        pc_log_info("auth.nonces_copied",
                    "%lld nonces taken while Redis was unreachable are in Redis again",
                    (long long)a->copied);
    }
}

/* One SET of a page answered. Redis answers in order, so when the page's
 * last one is in, all are: only then comes the next page (the copy never
 * has more than a page of commands in flight), and a page with a failed SET
 * fails the copy instead of losing the nonce. */
static void copy_set_cb(void *data, int status, const pc_kv_reply_t *reply)
{
    pc_auth_t *a = data;
    if (status || (reply && pc_kv_reply_type(reply) == PC_KV_ERROR))
        a->copy_failed = true;
    if (--a->copy_in_flight > 0)
        return;
    if (a->copy_failed)
        copy_done(a, false);
    else if (a->copy_more)
        copy_page(a);
    else
        copy_done(a, true);
}

static void copied_back_cb(void *data, int status, pc_db_res_t *res)
{
    pc_auth_t *a = data;
    if (status) {
        copy_done(a, false);
        return;
    }
    int n = pc_db_rows(res);
    a->copy_more = n == COPY_PAGE;
    if (n > 0) {
        snprintf(a->copy_mid, sizeof a->copy_mid, "%s", pc_db_get(res, n - 1, 0));
        snprintf(a->copy_nonce, sizeof a->copy_nonce, "%s", pc_db_get(res, n - 1, 1));
    }
    a->copy_in_flight = 1; /* held until every SET of the page is queued */
    for (int i = 0; i < n; i++) {
        char name[200], key[300];
        snprintf(name, sizeof name, "nonce:%s:%s", pc_db_get(res, i, 0), pc_db_get(res, i, 1));
        pc_kv_key(a->kv, key, sizeof key, name);
        a->copy_in_flight++;
        if (pc_kv_cmd(a->kv, copy_set_cb, a, "SET", key, "1", "NX", "EX", pc_db_get(res, i, 2),
                      NULL) < 0) {
            a->copy_in_flight--;
            a->copy_failed = true;
        }
    }
    a->copied += n;
    copy_set_cb(a, 0, NULL); /* drops the hold */
}

static void copy_page(pc_auth_t *a)
{
    const char *p[] = {a->copy_mid, a->copy_nonce};
    if (pc_db_query(a->db,
                    "SELECT merchant_id, nonce, greatest(1, ceil(extract(epoch FROM expires_at - "
                    "now())))::int FROM auth_nonces WHERE expires_at > now() AND (merchant_id, "
                    "nonce) > ($1, $2) ORDER BY merchant_id, nonce LIMIT 2000",
                    2, p, copied_back_cb, a) < 0)
        copy_done(a, false);
}

/* Redis answers again after this node recorded nonces in PostgreSQL: every
 * unexpired nonce there goes back into Redis, page by page (the table only
 * ever holds nonces of outages), so that none can be used twice. */
static void copy_back(pc_auth_t *a)
{
    if (a->copying)
        return;
    a->nonces_in_pg_only = false;
    a->copying = true;
    a->copy_failed = false;
    a->copied = 0;
    a->copy_mid[0] = a->copy_nonce[0] = '\0';
    copy_page(a);
}

/* This node's mark is stored (or not: the next request tries again). */
static void fallback_marked_cb(void *data, int status, pc_db_res_t *res)
{
    (void)res;
    pc_auth_t *a = data;
    a->fallback_marking = false;
    if (status)
        return;
    a->fallback_since_s = (int64_t)time(NULL);
    a->fallback_marked_s = a->fallback_since_s;
}

/* The answer to checked_in_pg: whether some node records nonces in
 * PostgreSQL only, and whether this nonce was recorded here now. */
static void fallback_checked_cb(void *data, int status, pc_db_res_t *res)
{
    auth_ctx_t *c = data;
    pc_auth_t *a = c->auth;
    if (status || pc_db_rows(res) != 1) {
        pc_http_respond_error(c->req, PC_API_UNAVAILABLE, NULL, "nonce store unavailable");
        return;
    }
    a->fallback_active = pc_db_get(res, 0, 0)[0] == 't';
    a->fallback_read_s = (int64_t)time(NULL);
    if (a->fallback_active && pc_db_get(res, 0, 1)[0] != 't')
        refuse(c->req, PC_API_NONCE_REUSED, "X-Nonce", "this nonce was already used");
    else
        proceed(c);
}

/* A nonce Redis took, on a node that has not read auth_nonce_fallback in
 * the last second: one statement reads it and, when some node records
 * nonces in PostgreSQL only, records this one there too. The answer holds
 * for the next second. */
static void checked_in_pg(auth_ctx_t *c)
{
    const char *p[] = {c->merchant->id, c->nonce};
    if (pc_db_query(c->auth->db,
                    "WITH f AS (SELECT coalesce((SELECT until > now() FROM auth_nonce_fallback), "
                    "false) AS active), i AS (" INSERT_NONCE "SELECT $1, $2, " NONCE_EXPIRES
                    " FROM f WHERE f.active ON CONFLICT DO NOTHING RETURNING 1) SELECT f.active, "
                    "EXISTS (SELECT 1 FROM i) FROM f",
                    2, p, fallback_checked_cb, c) < 0)
        pc_http_respond_error(c->req, PC_API_UNAVAILABLE, NULL, "nonce store unavailable");
}

/* Records the request's nonce in auth_nonces: the single-use guard while
 * this node cannot reach Redis (cut_off: it also says so in
 * auth_nonce_fallback, every few seconds), or, while another node cannot, as
 * well as in Redis. */
static void record_in_pg(auth_ctx_t *c, bool cut_off)
{
    pc_auth_t *a = c->auth;
    int64_t now = (int64_t)time(NULL);
    bool mark = cut_off && now - a->fallback_marked_s >= 5;
    if (mark)
        a->fallback_marked_s = now;
    const char *p[] = {c->merchant->id, c->nonce};
    /* A renewal also reads whether the mark was still live (o: the
     * statement's snapshot, before its own upsert): the nonce is taken only
     * then, and one row says both (nonce_pg_cb). */
    if (pc_db_query(a->db,
                    mark ? "WITH o AS (SELECT coalesce((SELECT until > now() FROM "
                           "auth_nonce_fallback), false) AS live), f AS (" MARK_FALLBACK_SQL
                           "), i AS (" INSERT_NONCE "SELECT $1, $2, " NONCE_EXPIRES
                           " FROM o WHERE o.live ON CONFLICT DO NOTHING RETURNING 1) SELECT "
                           "o.live, EXISTS (SELECT 1 FROM i) FROM o"
                         : INSERT_NONCE "VALUES ($1, $2, " NONCE_EXPIRES ") ON CONFLICT DO NOTHING",
                    2, p, nonce_pg_cb, c) < 0)
        pc_http_respond_error(c->req, PC_API_UNAVAILABLE, NULL, "nonce store unavailable");
}

static void nonce_kv_cb(void *data, int status, const pc_kv_reply_t *reply)
{
    auth_ctx_t *c = data;
    pc_auth_t *a = c->auth;
    if (status == 0 && pc_kv_reply_type(reply) == PC_KV_INTEGER) {
        a->fallback_since_s = 0; /* Redis answers this node again */
        a->err_since_s = 0;
        if (a->nonces_in_pg_only)
            copy_back(a);
        long long v = pc_kv_reply_int(reply);
        if (v == 1 && c->ts > a->newest_ts)
            a->newest_ts = c->ts;
        if (v == 1 && (int64_t)time(NULL) - a->fallback_read_s >= 1)
            checked_in_pg(c);
        else if (v == 1 && a->fallback_active)
            record_in_pg(c, false); /* single-use against the cut-off node's too */
        else if (v == 1)
            proceed(c);
        else if (v == 0)
            refuse(c->req, PC_API_NONCE_REUSED, "X-Nonce", "this nonce was already used");
        else
            refuse_resign(c->req, "X-Timestamp is older than the nonce store's memory (it "
                                  "restarted or was unreachable)");
        return;
    }
    /* Redis is unreachable: PostgreSQL's primary key keeps nonces single-use,
     * and Redis gets them once it is back. But the nonces every node took
     * through Redis are not in PostgreSQL: a request signed before Redis
     * last answered this node (or before this node started) may have been
     * taken there, and its replay with a fresh Idempotency-Key (not signed)
     * would run again. Such a request is refused: signed again with the
     * current time it passes. A Redis that answers with an error (out of
     * memory, read-only, loading) still answers PINGs: there the floor is
     * the second after the first error this node met since Redis last
     * answered it well (before, there was none, and a request taken through
     * Redis just before could be replayed while it answered errors). (Left:
     * a request from a merchant whose clock runs ahead, taken through Redis
     * just before it went away, and one another node took in its last
     * moments.) */
    int64_t seen = pc_kv_last_reply_s(a->kv);
    int64_t floor_s = seen > a->started_s ? seen : a->started_s;
    if (status == 0) {
        /* From the first error this node met: another node may have had
         * nonces taken through Redis until the errors began, long after
         * this node's last good answer when it was idle. */
        if (a->err_since_s == 0)
            a->err_since_s = (int64_t)time(NULL);
        floor_s = a->err_since_s + 1 > a->started_s ? a->err_since_s + 1 : a->started_s;
    }
    /* This node starts taking nonces in PostgreSQL only (none taken so
     * yet, or Redis answered it since the last time began, or its mark had
     * lapsed: nonce_pg_cb): it says so, and the other nodes, which read
     * that at most a second late, record theirs there too from then on.
     * Until the mark is stored nothing is taken; after, a request signed
     * before they can all know it may have been taken through Redis there:
     * refused here, like one signed before Redis last answered. The same
     * when Redis answers with errors (another node's Redis may answer
     * well): before, a node meeting errors took nonces at once, and a
     * request another node took through Redis meanwhile could be replayed
     * here. */
    if (!a->fallback_marking &&
        (a->fallback_since_s == 0 || (status != 0 && seen > a->fallback_since_s))) {
        a->fallback_since_s = 0;
        a->fallback_marking = true;
        if (pc_db_query(a->db, MARK_FALLBACK_SQL, 0, NULL, fallback_marked_cb, a) < 0)
            a->fallback_marking = false;
    }
    if (a->fallback_since_s == 0) {
        pc_http_respond_error(c->req, PC_API_UNAVAILABLE, NULL,
                              status != 0 ? "the nonce store is unreachable and this node is "
                                            "switching to its fallback: try again in a few seconds"
                                          : "the nonce store answers with errors and this node is "
                                            "switching to its fallback: try again in a few "
                                            "seconds");
        return;
    }
    if (a->fallback_since_s + FALLBACK_SETTLE_S > floor_s)
        floor_s = a->fallback_since_s + FALLBACK_SETTLE_S;
    if (c->ts < floor_s) {
        refuse_resign(c->req, status != 0 ? "X-Timestamp is older than the nonce store's last "
                                            "answer (it is unreachable)"
                                          : "X-Timestamp is older than the nonce store's last "
                                            "good answer (it answers with errors)");
        return;
    }
    a->nonces_in_pg_only = true;
    if (c->ts > a->newest_ts)
        a->newest_ts = c->ts;
    record_in_pg(c, true);
}

static int verify_signature(pc_http_req_t *req, const pc_merchant_t *m, const char *ts,
                            const char *nonce, const char *sig)
{
    size_t blen, slen;
    const char *body = pc_http_req_body(req, &blen);
    char *tosign = pc_sign_request_string(pc_http_req_method(req), pc_http_req_target(req), ts,
                                          nonce, body, blen, &slen);
    if (!tosign)
        return PC_ENOMEM;
    int rc;
    if (m->sign_type == PC_SIGN_HMAC)
        rc = pc_hmac_sha256_verify(m->secret, strlen(m->secret), tosign, slen, sig, strlen(sig));
    else
        rc = m->pub ? pc_rsa_sha256_verify(m->pub, tosign, slen, sig, strlen(sig)) : PC_EINVAL;
    /* Within a rotation's grace period the previous secret or key signs too. */
    if (rc != 0 && m->prev_until_s > (int64_t)time(NULL)) {
        if (m->sign_type == PC_SIGN_HMAC && m->secret_prev)
            rc = pc_hmac_sha256_verify(m->secret_prev, strlen(m->secret_prev), tosign, slen, sig,
                                       strlen(sig));
        else if (m->sign_type == PC_SIGN_RSA2 && m->pub_prev)
            rc = pc_rsa_sha256_verify(m->pub_prev, tosign, slen, sig, strlen(sig));
    }
    if (rc != 0 && m->secret_prev2 && m->prev2_until_s > (int64_t)time(NULL))
        rc = pc_hmac_sha256_verify(m->secret_prev2, strlen(m->secret_prev2), tosign, slen, sig,
                                   strlen(sig));
    free(tosign);
    return rc;
}

static void merchant_cb(void *data, int status, pc_merchant_t *m)
{
    auth_ctx_t *c = data;
    pc_http_req_t *req = c->req;
    if (status == PC_ENOTFOUND) {
        refuse(req, PC_API_UNKNOWN_MERCHANT, "X-Merchant-Id", "unknown merchant");
        return;
    }
    if (status) {
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "merchant store unavailable");
        return;
    }
    const char *ts = pc_http_req_header(req, "X-Timestamp");
    const char *sig = pc_http_req_header(req, "X-Signature");
    if (verify_signature(req, m, ts, c->nonce, sig) != 0) {
        refuse(req, PC_API_INVALID_SIGNATURE, "X-Signature", "signature does not match");
        return;
    }
    /* Status is told only to a caller who proved to be the merchant. */
    if (!m->active) {
        refuse(req, PC_API_MERCHANT_DISABLED, NULL, "merchant is disabled");
        return;
    }
    c->merchant = pc_merchant_ref(m);
    pc_auth_t *a = c->auth;
    /* The check of a Redis connected again failed (it was loading, say):
     * made again, and this request waits for it. A check on its way is
     * ahead of this request's nonce on the connection. */
    if (a->runid_state == 0 && pc_kv_ready(a->kv)) {
        check_runid(a);
        pc_http_add_header(req, "Retry-After", "1");
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL,
                              "the nonce store is being checked after it came back: retry in a "
                              "moment");
        return;
    }
    char name[200], key[300], tsv[24], now[24];
    snprintf(name, sizeof name, "nonce:%s:%s", m->id, c->nonce);
    pc_kv_key(a->kv, key, sizeof key, name);
    snprintf(tsv, sizeof tsv, "%lld", (long long)c->ts);
    snprintf(now, sizeof now, "%lld", (long long)fresh_floor(a));
    const char *argv[] = {"EVAL", nonce_script, "2", key, a->floor_key, NONCE_TTL_S, tsv, now};
    if (pc_kv_command(a->kv, nonce_kv_cb, c, 8, argv, NULL) < 0)
        nonce_kv_cb(c, PC_EUNAVAIL, NULL);
}

static int valid_merchant_id(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (!((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= 'A' && s[n] <= 'Z') ||
              (s[n] >= '0' && s[n] <= '9') || s[n] == '_' || s[n] == '-'))
            return 0;
    return n > 0 && n <= 64;
}

void pc_auth_filter(pc_http_req_t *req, void *data)
{
    pc_auth_t *auth = data;
    const char *mid = pc_http_req_header(req, "X-Merchant-Id");
    const char *ts = pc_http_req_header(req, "X-Timestamp");
    const char *nonce = pc_http_req_header(req, "X-Nonce");
    const char *sig = pc_http_req_header(req, "X-Signature");
    if (!mid || !valid_merchant_id(mid)) {
        refuse(req, PC_API_UNKNOWN_MERCHANT, "X-Merchant-Id", "X-Merchant-Id missing or malformed");
        return;
    }
    if (!sig || !sig[0]) {
        refuse(req, PC_API_INVALID_SIGNATURE, "X-Signature", "X-Signature is required");
        return;
    }
    if (!nonce || !pc_nonce_is_valid(nonce, strlen(nonce))) {
        refuse(req, PC_API_INVALID_REQUEST, "X-Nonce", "X-Nonce must be 16-64 of [A-Za-z0-9_-]");
        return;
    }
    int64_t t;
    if (!ts || pc_timestamp_parse(ts, strlen(ts), &t) != 0) {
        refuse(req, PC_API_INVALID_REQUEST, "X-Timestamp", "X-Timestamp must be Unix seconds");
        return;
    }
    if (!pc_timestamp_in_window(t, (int64_t)time(NULL), PC_TIMESTAMP_WINDOW_S)) {
        refuse(req, PC_API_TIMESTAMP_EXPIRED, "X-Timestamp",
               "X-Timestamp is more than 300 s from the server clock");
        return;
    }
    auth_ctx_t *c = pc_http_req_alloc(req, sizeof *c);
    c->auth = auth;
    c->req = req;
    c->nonce = nonce;
    c->ts = t;
    pc_http_req_set_user(req, c);
    pc_http_req_on_done(req, release_merchant, c);
    if (pc_merchants_get(auth->merchants, mid, merchant_cb, c) < 0)
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "merchant store unavailable");
}
