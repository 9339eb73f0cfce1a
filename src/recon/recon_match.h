/* The statement matcher of reconciliation (system.md §2.9): loads one
 * channel's statement for one business day into PostgreSQL and matches it
 * there, set-based, against our payments, refunds and payouts, writing the
 * day's differences (recon_diffs) — all in one transaction, so a day's
 * result is never half written.
 *
 * How (numbers for 1,000,000 lines are in README "Performance"):
 *   - the match runs on a connection of its own (recon_conn.h), so a long
 *     match holds none of the request pool's and its statements have their
 *     own timeout (statement_timeout);
 *   - the statement is read with recon_csv.h, checked line by line, and
 *     streamed into a temporary table with COPY … FROM STDIN (text format),
 *     a chunk at a time as the socket takes it; the statement's SHA-256 is
 *     computed on the way;
 *   - each kind of local record is one row of a table in recon_match.c
 *     (statement type, table, columns, what its status means, the fee we
 *     expect, the repair it allows); the SQL is generated from those rows:
 *     one hash full join per statement type between its lines and the day's
 *     records (so one pass finds both the lines that differ and our
 *     successes the statement lacks), then fallbacks for the few lines left
 *     — our number in the whole table, then the channel's reference; the
 *     rules of what differs are the SQL functions recon_pair_ok /
 *     recon_pair_kinds (0015_recon.sql), evaluated in the joins;
 *   - the differences are upserted on (run, kind, key): a re-run of the day
 *     finds the same rows instead of adding new ones, keeps their status
 *     (a repaired or resolved difference stays so), and closes open ones it
 *     no longer finds.
 * Refunds and payouts are matched only when their tables exist (to_regclass),
 * so the matcher works while those modules are being built.
 *
 * The run row must exist and be claimed (status RUNNING with this attempt):
 * recon.c claims it; the matcher locks it for the transaction and refuses to
 * write when another attempt took the day over. Needs recon_conn.h (the only
 * libpq user), OpenSSL (SHA-256) and recon_csv.h. */
#ifndef PC_RECON_RECON_MATCH_H
#define PC_RECON_RECON_MATCH_H
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

/* Difference kinds, as stored in recon_diffs.kind. */
typedef enum {
    PC_RECON_MISSING_LOCAL = 0,
    PC_RECON_MISSING_CHANNEL,
    PC_RECON_AMOUNT_MISMATCH,
    PC_RECON_STATUS_MISMATCH,
    PC_RECON_FEE_MISMATCH,
    PC_RECON_CURRENCY_MISMATCH,
    PC_RECON_DUPLICATE_LINE,
    /* A later statement lists paid what an adjusted difference wrote off. */
    PC_RECON_ADJUSTMENT_CONTRADICTED,
    PC_RECON_KIND_COUNT
} pc_recon_kind_t;

/* "MISSING_LOCAL", …; NULL out of range. */
const char *pc_recon_kind_name(pc_recon_kind_t k);
/* The kind of a name, or -1. */
int pc_recon_kind_parse(const char *name);

#define PC_RECON_MAX_FEES 16

typedef struct {
    char currency[4];
    int64_t rate_bp, fixed;
} pc_recon_fee_t;

typedef struct {
    int64_t run_id;
    int attempt;            /* recon_runs.attempts of the claim */
    const char *channel_id; /* [a-z0-9_]{1,32} */
    const char *date;       /* business date "YYYY-MM-DD" (UTC) */
    /* The channel file's fee per currency, for FEE_MISMATCH: a line of a
     * currency not listed has no fee checked. */
    const pc_recon_fee_t *fees;
    size_t nfees;                 /* at most PC_RECON_MAX_FEES */
    int work_mem_mb;              /* for the transaction's joins; 0: the server's default */
    int64_t statement_timeout_ms; /* per statement of the match; 0: the server's default */
    /* The database's host name resolved beforehand (pc_db_resolved), or
     * NULL: see pc_recon_conn_open. */
    const char *host, *hostaddr;
} pc_recon_match_opts_t;

typedef struct {
    int64_t lines;                      /* statement lines read */
    int64_t duplicate_lines;            /* of which repeated an earlier line */
    int64_t unmatched_lines;            /* no-money lines without a local record */
    int64_t found[PC_RECON_KIND_COUNT]; /* differences found by this attempt */
    int64_t added[PC_RECON_KIND_COUNT]; /* of which new (not found by an earlier attempt) */
    int64_t closed;                     /* open differences this attempt no longer found */
    int64_t to_repair;                  /* open differences with an automatic repair */
    char sha256[65];
    char error[256]; /* a sentence when status != 0 */
} pc_recon_match_result_t;

/* status 0 and the result, or PC_EINVAL (the statement is malformed: error
 * says which row), PC_ECONFLICT (another attempt has the day), or a db error.
 * res is valid during the callback; on failure nothing was written. */
typedef void (*pc_recon_match_cb)(void *data, int status, const pc_recon_match_result_t *res);

/* Matches the statement text (borrowed: it must stay valid until cb runs)
 * for opts (copied), on a new connection to db_url. Returns 0 (cb runs once,
 * later) or PC_EINVAL (bad options), PC_ENOMEM, PC_EUNAVAIL (the connection
 * could not even start); then cb never runs. */
int pc_recon_match(uv_loop_t *loop, const char *db_url, const pc_recon_match_opts_t *opts,
                   const char *csv, size_t len, pc_recon_match_cb cb, void *data);

#endif
