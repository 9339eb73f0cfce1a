/* One PostgreSQL connection for reconciliation's bulk work: a statement at a
 * time, and COPY … FROM STDIN fed chunk by chunk — the fastest way into
 * PostgreSQL, which the shared pool (store/db.h) does not offer. Everything
 * is non-blocking: libpq in non-blocking mode, its socket watched by
 * uv_poll; a COPY chunk is only handed to libpq once the previous one has
 * left (PQflush), so memory stays bounded and the loop never waits.
 *
 * The connection is opened for one match and closed after it: a
 * transaction begun on it (BEGIN as a statement) ends with COMMIT, or is
 * rolled back by the server when the connection closes. Text parameters and
 * text results, as in store/db.h. This is the only place in recon that
 * includes libpq. */
#ifndef PC_RECON_RECON_CONN_H
#define PC_RECON_RECON_CONN_H
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct pc_recon_conn pc_recon_conn_t;
typedef struct pc_recon_res pc_recon_res_t;

/* An operation ended: status 0, PC_EIO (the server refused the statement:
 * error says why) or PC_EUNAVAIL (the connection failed or closed). res is
 * the last result of the statement (NULL on failure); res and error are
 * valid during the callback only. */
typedef void (*pc_recon_conn_cb)(void *data, int status, pc_recon_res_t *res, const char *error);

/* Supplies COPY data: sets *buf and *len to the next chunk (valid until the next
 * call) and returns 1, returns 0 at the end, or a negative code to abort the
 * COPY (the operation then ends with that code). */
typedef int (*pc_recon_copy_fill_cb)(void *data, const char **buf, size_t *len);

/* Starts connecting to url; cb runs once with 0 when the connection is up
 * or with an error (then close it). host and hostaddr (NULL: the URL's)
 * give the addresses of a host name resolved beforehand (pc_db_resolved):
 * libpq would look the name up itself, blocking the loop. Returns NULL when
 * the attempt cannot even start — out of memory, a malformed url — and cb
 * never runs. */
pc_recon_conn_t *pc_recon_conn_open(uv_loop_t *loop, const char *url, const char *host,
                                    const char *hostaddr, pc_recon_conn_cb cb, void *data);

/* Sends one statement (params copied; NULL entries are SQL NULL). One
 * operation at a time. Returns 0 (cb runs once, later) or PC_EINVAL /
 * PC_EUNAVAIL (cb never runs). */
int pc_recon_conn_query(pc_recon_conn_t *c, const char *sql, int nparams, const char *const *params,
                        pc_recon_conn_cb cb, void *data);

/* Runs copy_sql ("COPY t FROM STDIN"), feeding it from fill until fill
 * returns 0. Returns 0 (cb runs once, later) or PC_EINVAL / PC_EUNAVAIL. */
int pc_recon_conn_copy(pc_recon_conn_t *c, const char *copy_sql, pc_recon_copy_fill_cb fill,
                       pc_recon_conn_cb cb, void *data);

/* Closes the connection (a running operation's callback is not called any
 * more) and frees it once its handle is closed. */
void pc_recon_conn_close(pc_recon_conn_t *c);

/* Results (text), valid during the callback. */
int pc_recon_res_rows(const pc_recon_res_t *res);
int64_t pc_recon_res_affected(const pc_recon_res_t *res);
/* The value of column name in row ("" for NULL or an unknown column). */
const char *pc_recon_res_val(const pc_recon_res_t *res, int row, const char *name);
int64_t pc_recon_res_i64(const pc_recon_res_t *res, int row, const char *name);

#endif
