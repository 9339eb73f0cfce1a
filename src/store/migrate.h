/* Schema migrations: the SQL files under src/store/migrations/ (compiled into
 * the binary, applied in file-name order, each once, each in its own
 * transaction, recorded in schema_migrations). Safe when several processes
 * start at once: a PostgreSQL advisory lock serialises them. Uses a blocking
 * libpq connection, so call it at start-up before the loop serves, never
 * from the loop. */
#ifndef PC_STORE_MIGRATE_H
#define PC_STORE_MIGRATE_H
#include "core/embed.h"

#include <jansson.h>
#include <stddef.h>

/* Connects to url (retrying for up to wait_s seconds while PostgreSQL comes
 * up) and applies pending migrations. Returns 0, or a negative code with a
 * message in err. */
int pc_migrate(const char *url, int wait_s, char *err, unsigned errlen);

/* The same with another list of migrations (sorted by name): paycore's own
 * (pc_migrate), or, in tests, those and more. */
int pc_migrate_files(const char *url, const pc_embedded_file_t *files, size_t nfiles, int wait_s,
                     char *err, unsigned errlen);

/* One statement at start, on a blocking connection of its own, before the
 * loop serves (channel switches, card BINs; never from the loop). A lock
 * it would wait for (a migration, an ops transaction holding the table) is
 * waited for at most lock_timeout_ms, then the start fails with a message
 * instead of hanging. Returns its rows as a JSON array of arrays of strings
 * (null for NULL; empty for a command), a new reference, or NULL with a
 * message in err. */
json_t *pc_db_startup_exec(const char *url, const char *sql, int nparams, const char *const *params,
                           int lock_timeout_ms, char *err, size_t errlen);

#endif
