/* Integration-test support: starts real paycore processes against the
 * PostgreSQL and Redis that scripts/test started (PC_TEST_PG_URL points at its
 * "postgres" database, PC_TEST_REDIS_URL at Redis), each test in a database of
 * its own and a Redis key prefix of its own, and stops them again — also when
 * the test fails or crashes (children die with their parent). Plus a blocking
 * HTTP client, raw sockets and SQL for assertions. Tests only: blocking calls
 * are fine here. */
#ifndef PC_TEST_HARNESS_H
#define PC_TEST_HARNESS_H
#include <jansson.h>
#include <stddef.h>
#include <sys/types.h>

#define PC_T_MAX_NODES 4
/* The admin token the stacks' nodes are started with (PAYCORE_ADMIN_TOKEN). */
#define PC_T_ADMIN_TOKEN "test-admin-token"

typedef struct {
    char name[64];
    char db_url[512];
    char redis_url[256];
    char redis_prefix[96];
    int http_port;
    int admin_port[PC_T_MAX_NODES];
    pid_t pids[PC_T_MAX_NODES];
    int nnodes;
    char log_dir[512];
    char extra_env[16][256]; /* "NAME=value" for every node */
    int nextra;
    int paysim_port; /* 0: no paysim */
    pid_t paysim_pid;
} pc_stack_t;

/* Creates a fresh database for name and fills s (no process yet). Add env with
 * pc_stack_env before starting nodes. */
void pc_stack_init(pc_stack_t *s, const char *name);
void pc_stack_env(pc_stack_t *s, const char *name, const char *value);
/* Starts paysim (before the nodes: they are pointed at it through
 * PAYSIM_PORT), calling back to the stack's API port. */
void pc_stack_start_paysim(pc_stack_t *s);
/* Starts node i (0…) of paycore and waits until /healthz answers on its admin
 * and API ports. All nodes share the API port (SO_REUSEPORT). */
void pc_stack_start_node(pc_stack_t *s, int i);
/* SIGTERM (graceful) or SIGKILL to node i and waits for it to exit; returns its
 * exit status as waitpid reports it. */
int pc_stack_stop_node(pc_stack_t *s, int i, int sig);
/* Stops every node and drops the database. */
void pc_stack_stop(pc_stack_t *s);

/* Source and binary folders (from the environment ctest sets). */
const char *pc_t_source_dir(void);
const char *pc_t_binary_dir(void);
/* A free TCP port on 127.0.0.1, never one this process was given before. */
int pc_t_free_port(void);
/* The same for a server that listens with SO_REUSEPORT (paycore, paysim):
 * the port stays bound by this process (SO_REUSEPORT, never listening, so
 * it takes no connections) until it exits, so that no other test process's
 * bind(0) can be given it meanwhile and start a second server on it, which
 * SO_REUSEPORT would let share the port's connections. */
int pc_t_reserve_port(void);
/* Runs a shell command; returns its exit status. */
int pc_t_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

typedef struct {
    long status; /* 0 when no answer */
    char *body;
    size_t len;
    char *headers; /* raw response headers */
    double seconds;
} pc_t_resp_t;

/* Blocking HTTP request; headers is a NULL-terminated list of "Name: value".
 * The caller frees with pc_t_resp_free. */
pc_t_resp_t pc_t_http(const char *method, const char *url, const char *const *headers,
                      const char *body);
void pc_t_resp_free(pc_t_resp_t *r);
/* Parses a response body as JSON (NULL if it is not). Caller decrefs. */
json_t *pc_t_json(const pc_t_resp_t *r);
/* Value of a response header (a buffer per thread; NULL when absent). */
const char *pc_t_header(const pc_t_resp_t *r, const char *name);

/* A request to paysim's control API (e.g. "/sim/faults"); caller frees. */
pc_t_resp_t pc_t_sim(pc_stack_t *s, const char *method, const char *path, const char *body);
/* Admin request with the stack's token to node 0 / to node i. */
pc_t_resp_t pc_t_admin(pc_stack_t *s, const char *method, const char *path, const char *body);
/* pc_t_admin as the ops engineer named operator (X-Operator). */
pc_t_resp_t pc_t_admin_as(pc_stack_t *s, const char *operator, const char * method,
                          const char *path, const char *body);
pc_t_resp_t pc_t_admin_node(pc_stack_t *s, int i, const char *method, const char *path,
                            const char *body);

/* Today's date in UTC as YYYY-MM-DD. */
void pc_t_utc_today(char out[11]);

/* A callback to paycore from channel, signed with its demo secret, about
 * object ("payment", "refund" or "payout") ref: status SUCCESS or FAILED
 * (code DO_NOT_HONOR) for amount. Returns the HTTP status. */
long pc_t_channel_callback(pc_stack_t *s, const char *channel, const char *object, const char *ref,
                           const char *status, long amount);
/* The same in another currency than CNY. */
long pc_t_channel_callback_in(pc_stack_t *s, const char *channel, const char *object,
                              const char *ref, const char *status, long amount,
                              const char *currency);
/* Whether GET /admin/needs-ops lists kind ("payment", "payout", "refund")
 * ref: 0 no, 1 still in flight, 2 final (for a person to resolve). */
int pc_t_needs_ops_listed(pc_stack_t *s, const char *kind, const char *ref);
/* POST /admin/needs-ops/{kind}/{ref}/resolve with body; the HTTP status. */
long pc_t_needs_ops_resolve(pc_stack_t *s, const char *kind, const char *ref, const char *body);
/* The message of the ACTIVE alert of kind (and subject, unless NULL) that
 * GET /admin/alerts lists, malloc'd; NULL when there is none. */
char *pc_t_alert_message(pc_stack_t *s, const char *kind, const char *subject);
/* True when GET /admin/alerts lists an ACTIVE alert of kind (and subject,
 * unless NULL). */
int pc_t_alert_active(pc_stack_t *s, const char *kind, const char *subject);
/* Whether that alert comes to be active (want 1) or not (want 0) within
 * secs seconds. */
int pc_t_alert_wait(pc_stack_t *s, const char *kind, const char *subject, int want, double secs);

/* Raw TCP to 127.0.0.1:port. Returns the fd. */
int pc_t_connect(int port);
/* Reads until the peer closes, timeout_ms passes, or max bytes arrive;
 * returns bytes read into buf (NUL-terminated). */
size_t pc_t_read_all(int fd, char *buf, size_t max, int timeout_ms);

/* Test card numbers paysim approves. pc_t_card_number: the Luhn-valid
 * 16-digit number of bin (6 digits) and serial (its last 9 digits before the
 * check digit). pc_t_fresh_pan: a new one of BIN 411111 on every call (one
 * card per payment, so that the risk rule's per-card velocity and the card's
 * daily limit do not see one card across tests); pc_t_fresh_card: the same
 * as a pay request's "card" member. Both return a static buffer. */
void pc_t_card_number(char out[17], const char *bin, long serial);
const char *pc_t_fresh_pan(void);
const char *pc_t_fresh_card(void);

/* One SQL statement on the stack's database; returns the first column of the
 * first row as a malloc'd string (NULL when no row). Aborts on SQL errors. */
char *pc_t_sql(pc_stack_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
long long pc_t_sql_int(pc_stack_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Runs the query every 50 ms for up to secs seconds until its first value
 * is want. Returns 1 when it was, 0 when time ran out. */
int pc_t_sql_wait(pc_stack_t *s, const char *want, double secs, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Holds an ACCESS EXCLUSIVE lock on tables ("a" or "a, b, c") from a
 * session of its own for seconds (a migration, a long ops transaction):
 * returns 1 once every one is granted, 0 when that took over 5 s. */
int pc_t_lock_tables(pc_stack_t *s, const char *tables, int seconds);
/* Waits up to secs seconds for those locks to be gone; returns 1 or 0. */
int pc_t_tables_unlocked(pc_stack_t *s, const char *tables, double secs);

#endif

/* --- merchants and signed calls --- */
typedef struct {
    char id[65];
    char secret[8192]; /* HMAC secret, or the PEM private key of an RSA2 merchant */
} pc_t_merchant_t;

/* Creates a merchant through POST /admin/merchants; extra_json is merged into
 * the body (e.g. "\"allowed_products\":[\"INSTANT\"]") or NULL. */
pc_t_merchant_t pc_t_create_merchant(pc_stack_t *s, const char *extra_json);
/* A signed /v1/ call (HMAC) to the shared API port; idem_key NULL for none.
 * A fresh nonce every call. */
pc_t_resp_t pc_t_call(pc_stack_t *s, const pc_t_merchant_t *m, const char *method, const char *path,
                      const char *body, const char *idem_key);
/* Signed call with every header given explicitly (for negative tests). */
pc_t_resp_t pc_t_call_raw(int port, const char *merchant_id, const char *secret, const char *method,
                          const char *path, const char *body, const char *idem_key,
                          long long timestamp, const char *nonce, const char *sign_path,
                          const char *sign_body);
/* The string value at key of a JSON response ("" when absent); a buffer per
 * thread, so that racing threads may call it. */
const char *pc_t_jstr(const pc_t_resp_t *r, const char *key);
/* The API error code of a response ("" when none); a buffer per thread. */
const char *pc_t_errcode(const pc_t_resp_t *r);

/* Calls the internal "trade paid" operation (acquiring/trade_state.h) against
 * the stack's database from inside the test, as the payment engine would:
 * the money comes from source_account (e.g. "channel:sim_card:clearing:CNY").
 * Returns the operation's status (0, or PC_ECONFLICT when the trade was not
 * payable) and writes the trade's new status into trade_status (≥ 20 bytes). */
int pc_t_mark_paid(pc_stack_t *s, const char *trade_no, const char *payment_no, long long amount,
                   const char *currency, const char *source_account, char *trade_status);
/* GET /admin/ledger/check on node 0: 1 when it answers 200 with "ok":true. */
int pc_t_ledger_ok(pc_stack_t *s);
