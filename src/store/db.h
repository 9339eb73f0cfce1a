/* PostgreSQL access for the whole process: a pool of non-blocking libpq
 * connections, each in pipeline mode and driven by uv_poll on its socket, so
 * no call here ever blocks the loop. Parameterised queries only (text
 * parameters, text results).
 *
 * Two ways to run SQL:
 *  - pc_db_query: one autocommitted statement on any connection (several may
 *    be pipelined on one connection);
 *  - a transaction: pc_db_begin gives a pc_db_tx_t holding one connection;
 *    statements sent on it may be queued without waiting (they are pipelined
 *    and their callbacks run in order); pc_db_tx_commit / pc_db_tx_rollback
 *    end it and give the connection back.
 *
 * Failures: a statement's callback gets 0, PC_ECONFLICT (unique violation or
 * serialization failure: see pc_db_sqlstate), PC_EUNAVAIL (no connection, the
 * connection broke, or the query/wait timed out) or PC_EIO (any other SQL
 * error). Broken connections are re-established in the background with
 * backoff; while none is up, new work fails at once with PC_EUNAVAIL instead
 * of waiting. Domain code includes this header only, never libpq. */
#ifndef PC_STORE_DB_H
#define PC_STORE_DB_H
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct pc_db pc_db_t;
typedef struct pc_db_tx pc_db_tx_t;
typedef struct pc_db_res pc_db_res_t;

typedef struct {
    const char *url;
    int pool_size;
    uint64_t query_timeout_ms;
    int pipeline_depth;
} pc_db_opts_t;

/* A statement finished. res is valid only during the callback (NULL when
 * status is PC_EUNAVAIL). */
typedef void (*pc_db_query_cb)(void *data, int status, pc_db_res_t *res);
/* A transaction began (status 0, tx usable) or could not (tx NULL). */
typedef void (*pc_db_begin_cb)(void *data, int status, pc_db_tx_t *tx);
/* A commit finished: 0, PC_ECONFLICT (serialization), PC_EUNAVAIL or PC_EIO. */
typedef void (*pc_db_done_cb)(void *data, int status);

/* Creates the pool and starts connecting. The pool does not own opts' strings
 * beyond this call (they are copied). */
/* Refuses a URL paycore cannot serve without blocking its event loop: a
 * list of hosts with a name among them (libpq would resolve it on every
 * connect). Returns 0, or PC_EINVAL with a sentence in err. */
int pc_db_url_check(const char *url, char *err, size_t errlen);
/* For a connection of its own to the pool's database (recon's): when the
 * URL's host is a name, the "host" and "hostaddr" lists of its addresses as
 * the pool last resolved them off the loop (libpq would resolve the name
 * itself, blocking); NULL both when the URL needs no resolving. PC_EUNAVAIL
 * when it does and no address is known yet. Valid until the pool resolves
 * again (copy them, or use them at once). */
int pc_db_resolved(const pc_db_t *db, const char **hosts, const char **hostaddrs);
pc_db_t *pc_db_new(uv_loop_t *loop, const pc_db_opts_t *opts);
/* Fails all queued work with PC_ECLOSED, closes connections and frees the pool
 * once every handle is closed; cb (may be NULL) runs then. */
void pc_db_close(pc_db_t *db, void (*cb)(void *data), void *data);

/* Connections up and usable now. */
int pc_db_ready_count(const pc_db_t *db);
/* Connections checked out by transactions or running queries. */
int pc_db_busy_count(const pc_db_t *db);

/* Runs one autocommitted statement. params may contain NULL for SQL NULL.
 * Returns 0 (cb will be called once) or a negative code (cb never called). */
int pc_db_query(pc_db_t *db, const char *sql, int nparams, const char *const *params,
                pc_db_query_cb cb, void *data);

/* The same for a statement that may run long (a check over whole tables): it
 * has a connection to itself (nothing is pipelined behind it to wait, time
 * out and take it down) and timeout_ms instead of the pool's timeout. */
int pc_db_query_long(pc_db_t *db, const char *sql, int nparams, const char *const *params,
                     uint64_t timeout_ms, pc_db_query_cb cb, void *data);

/* Starts a transaction (BEGIN, or BEGIN ISOLATION LEVEL ... when isolation is
 * non-NULL, e.g. "REPEATABLE READ"). Returns 0 (cb called once) or negative. */
int pc_db_begin(pc_db_t *db, const char *isolation, pc_db_begin_cb cb, void *data);
/* Queues a statement in the transaction; callbacks run in queue order. After a
 * failed statement, later ones fail too (PostgreSQL's aborted transaction).
 * A broken connection fails it through its callback too, never inside this
 * call: 0 is returned whatever the connection's state, so a caller's error
 * path never frees what earlier statements' callbacks still use. Non-zero
 * only for a transaction already ended (a caller's mistake). */
int pc_db_tx_query(pc_db_tx_t *tx, const char *sql, int nparams, const char *const *params,
                   pc_db_query_cb cb, void *data);
/* Commits and releases tx (invalid after the call). cb may be NULL. A
 * statement asked for afterwards, from the callback of one queued before
 * (where tx is still alive), is refused (PC_EINVAL): it would have run
 * after the COMMIT, outside the transaction. */
void pc_db_tx_commit(pc_db_tx_t *tx, pc_db_done_cb cb, void *data);
/* Rolls back and releases tx (invalid after the call). */
void pc_db_tx_rollback(pc_db_tx_t *tx);
/* Non-zero once a statement of tx failed (the transaction can only roll back). */
int pc_db_tx_failed(const pc_db_tx_t *tx);

/* --- results (valid during the callback only) --- */
int pc_db_rows(const pc_db_res_t *res);
int pc_db_cols(const pc_db_res_t *res);
/* Rows changed by INSERT/UPDATE/DELETE. */
int64_t pc_db_affected(const pc_db_res_t *res);
int pc_db_col(const pc_db_res_t *res, const char *name); /* -1 when absent */
int pc_db_isnull(const pc_db_res_t *res, int row, int col);
/* Text value ("" for NULL). */
const char *pc_db_get(const pc_db_res_t *res, int row, int col);
int64_t pc_db_get_i64(const pc_db_res_t *res, int row, int col);
/* By column name; the column must exist (aborts otherwise: a programming error). */
const char *pc_db_val(const pc_db_res_t *res, int row, const char *col);
int64_t pc_db_val_i64(const pc_db_res_t *res, int row, const char *col);
/* SQLSTATE of a failed statement ("" otherwise) and its message. */
const char *pc_db_sqlstate(const pc_db_res_t *res);
const char *pc_db_errmsg(const pc_db_res_t *res);
/* Name of the violated constraint for 23xxx errors, "" otherwise. */
const char *pc_db_constraint(const pc_db_res_t *res);

#endif
