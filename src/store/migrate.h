/* Schema migrations: the SQL files under src/store/migrations/ (compiled into
 * the binary, applied in file-name order, each once, each in its own
 * transaction, recorded in schema_migrations). Safe when several processes
 * start at once: a PostgreSQL advisory lock serialises them. Uses a blocking
 * libpq connection, so call it at start-up before the loop serves, never
 * from the loop. */
#ifndef PC_STORE_MIGRATE_H
#define PC_STORE_MIGRATE_H

/* Connects to url (retrying for up to wait_s seconds while PostgreSQL comes
 * up) and applies pending migrations. Returns 0, or a negative code with a
 * message in err. */
int pc_migrate(const char *url, int wait_s, char *err, unsigned errlen);

#endif
