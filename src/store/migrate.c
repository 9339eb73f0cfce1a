#include "store/migrate.h"
#include "core/embed.h"
#include "core/error.h"
#include "core/log.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

extern const pc_embedded_file_t pc_migrations[];
extern const size_t pc_migrations_count;

/* An arbitrary constant naming paycore's migration lock. */
#define MIGRATION_LOCK_KEY "7305021923"

/* A migration waits this long for a table lock (every other session's
 * statement on that table queues behind it meanwhile), then gives way and
 * tries again, MIGRATION_LOCK_TRIES times in all. Waiting without a bound, an
 * ALTER TABLE queued behind one long reader (the daily ledger check, a
 * reconciliation) made every other session's statements on that table queue
 * behind it: every node answered 503 for as long as the reader ran. */
#define MIGRATION_LOCK_TIMEOUT "500ms"
#define MIGRATION_LOCK_TRIES 90 /* 2 s apart: about four minutes */

static int exec_ok(PGconn *pg, const char *sql, char *err, unsigned errlen)
{
    PGresult *r = PQexec(pg, sql);
    ExecStatusType st = PQresultStatus(r);
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    int rc = 0;
    if (!ok) {
        snprintf(err, errlen, "%s", PQresultErrorMessage(r));
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        rc = state && !strcmp(state, "55P03") ? PC_ETIMEDOUT : PC_EIO; /* lock_not_available */
    }
    PQclear(r);
    return rc;
}

int pc_migrate(const char *url, int wait_s, char *err, unsigned errlen)
{
    return pc_migrate_files(url, pc_migrations, pc_migrations_count, wait_s, err, errlen);
}

int pc_migrate_files(const char *url, const pc_embedded_file_t *files, size_t nfiles, int wait_s,
                     char *err, unsigned errlen)
{
    PGconn *pg = NULL;
    for (int waited = 0;; waited++) {
        pg = PQconnectdb(url);
        if (PQstatus(pg) == CONNECTION_OK)
            break;
        if (waited >= wait_s * 4) {
            snprintf(err, errlen, "cannot connect to PostgreSQL: %s", PQerrorMessage(pg));
            PQfinish(pg);
            return PC_EUNAVAIL;
        }
        PQfinish(pg);
        usleep(250000);
    }
    int rc = PC_EIO;
    if (exec_ok(pg, "SET client_min_messages = warning", err, errlen) ||
        exec_ok(pg, "SELECT pg_advisory_lock(" MIGRATION_LOCK_KEY ")", err, errlen) ||
        exec_ok(pg, "SET lock_timeout = '" MIGRATION_LOCK_TIMEOUT "'", err, errlen))
        goto done;
    if (exec_ok(pg,
                "CREATE TABLE IF NOT EXISTS schema_migrations (version text PRIMARY KEY, "
                "applied_at timestamptz NOT NULL DEFAULT now())",
                err, errlen))
        goto unlock;
    /* The newest migration applied: one not applied that sorts before it
     * (a file added in a gap of the numbering, or a row lost) would run
     * after it here but before it on a fresh database, leaving the two with
     * different schemas. Refused: renumber the file after the newest. */
    char newest[256] = "";
    PGresult *r = PQexec(pg, "SELECT coalesce(max(version), '') FROM schema_migrations");
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        snprintf(err, errlen, "cannot read schema_migrations: %s", PQresultErrorMessage(r));
        PQclear(r);
        goto unlock;
    }
    snprintf(newest, sizeof newest, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    /* A schema newer than this binary (a node of the previous release
     * started after a newer one migrated): served, as a rolling deploy
     * needs, but said, as its SQL was not tested against it. */
    if (nfiles && strcmp(newest, files[nfiles - 1].name) > 0)
        pc_log_warn("db.schema_newer",
                    "the database's schema is at %s, newer than this binary's newest migration "
                    "(%s): an older release is starting against a newer schema",
                    newest, files[nfiles - 1].name);
    int lock_waits = 0;
    for (size_t i = 0; i < nfiles; i++) {
        const pc_embedded_file_t *m = &files[i];
        const char *params[1] = {m->name};
        r = PQexecParams(pg, "SELECT 1 FROM schema_migrations WHERE version = $1", 1, NULL, params,
                         NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            snprintf(err, errlen, "cannot read schema_migrations: %s", PQresultErrorMessage(r));
            PQclear(r);
            goto unlock;
        }
        int applied = PQntuples(r) == 1;
        PQclear(r);
        if (applied)
            continue;
        if (strcmp(m->name, newest) < 0) {
            snprintf(err, errlen,
                     "migration %s is not applied but sorts before %s, which is: it would run "
                     "out of order here; number it after the newest",
                     m->name, newest);
            goto unlock;
        }
        if (exec_ok(pg, "BEGIN", err, errlen))
            goto unlock;
        int ran = exec_ok(pg, m->data, err, errlen);
        if (ran == PC_ETIMEDOUT && ++lock_waits < MIGRATION_LOCK_TRIES) {
            /* Another session holds a table it changes: give way (nothing
             * queues behind this one meanwhile), then run it again. */
            PQclear(PQexec(pg, "ROLLBACK"));
            pc_log_warn("db.migration_waits",
                        "migration %s waits for a table lock another session holds (try %d of "
                        "%d): %s",
                        m->name, lock_waits, MIGRATION_LOCK_TRIES, err);
            sleep(2);
            i--;
            continue;
        }
        if (ran) {
            char detail[512];
            snprintf(detail, sizeof detail, "%s", err);
            snprintf(err, errlen, "migration %s failed%s: %s", m->name,
                     ran == PC_ETIMEDOUT ? " (a table it changes stayed locked by another session: "
                                           "start again once that ends)"
                                         : "",
                     detail);
            PQclear(PQexec(pg, "ROLLBACK"));
            goto unlock;
        }
        r = PQexecParams(pg, "INSERT INTO schema_migrations(version) VALUES ($1)", 1, NULL, params,
                         NULL, NULL, 0);
        int recorded = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!recorded)
            snprintf(err, errlen, "migration %s could not be recorded: %s", m->name,
                     PQresultErrorMessage(r));
        PQclear(r);
        if (!recorded) {
            PQclear(PQexec(pg, "ROLLBACK"));
            goto unlock;
        }
        /* COMMIT of a transaction that failed answers OK with the tag
         * ROLLBACK: the migration would be logged as applied, not being. */
        r = PQexec(pg, "COMMIT");
        int committed =
            PQresultStatus(r) == PGRES_COMMAND_OK && strcmp(PQcmdStatus(r), "COMMIT") == 0;
        if (!committed)
            snprintf(err, errlen, "migration %s did not commit: %s", m->name,
                     PQresultErrorMessage(r));
        PQclear(r);
        if (!committed)
            goto unlock;
        pc_log_info("db.migrated", "applied %s", m->name);
    }
    rc = 0;
unlock:
    PQclear(PQexec(pg, "SELECT pg_advisory_unlock(" MIGRATION_LOCK_KEY ")"));
done:
    PQfinish(pg);
    return rc;
}

json_t *pc_db_startup_exec(const char *url, const char *sql, int nparams, const char *const *params,
                           int lock_timeout_ms, char *err, size_t errlen)
{
    PGconn *pg = PQconnectdb(url);
    if (PQstatus(pg) != CONNECTION_OK) {
        snprintf(err, errlen, "cannot connect to PostgreSQL: %s", PQerrorMessage(pg));
        PQfinish(pg);
        return NULL;
    }
    char set[64];
    snprintf(set, sizeof set, "SET lock_timeout = %d", lock_timeout_ms);
    PGresult *r = PQexec(pg, set);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    r = ok ? PQexecParams(pg, sql, nparams, NULL, params, NULL, NULL, 0) : NULL;
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    json_t *rows = NULL;
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        snprintf(err, errlen, "%s", r ? PQresultErrorMessage(r) : PQerrorMessage(pg));
    } else {
        rows = json_array();
        for (int i = 0; rows && i < PQntuples(r); i++) {
            json_t *row = json_array();
            for (int c = 0; c < PQnfields(r); c++)
                json_array_append_new(row, PQgetisnull(r, i, c) ? json_null()
                                                                : json_string(PQgetvalue(r, i, c)));
            json_array_append_new(rows, row);
        }
        if (!rows)
            snprintf(err, errlen, "out of memory");
    }
    PQclear(r);
    PQfinish(pg);
    return rows;
}
