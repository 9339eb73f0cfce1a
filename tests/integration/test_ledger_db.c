/* The ledger against a real PostgreSQL: postings driven from C through a
 * libuv loop and the store/db pool, on a fresh database per test (copied
 * from one migrated with pc_migrate). Proves that the invariants hold under
 * 10,000 random concurrent postings, that refused postings leave nothing
 * behind, that the database itself refuses what C would, and measures
 * postings per second. Needs PC_TEST_PG_URL (scripts/test sets it); no Redis,
 * no paycore process. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/error.h"
#include "ledger/ledger.h"
#include "store/db.h"
#include "store/migrate.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define POOL 4

static char g_base[64];       /* migrated template database */
static char g_admin_url[512]; /* PC_TEST_PG_URL */

typedef struct {
    char name[64];
    char url[512];
    PGconn *pg; /* blocking, for assertions only */
    uv_loop_t loop;
    pc_db_t *db;
} fx_t;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* The URL of database name on the server of PC_TEST_PG_URL. */
static void url_for(char *out, size_t len, const char *name)
{
    const char *slash = strrchr(g_admin_url, '/');
    snprintf(out, len, "%.*s/%s", (int)(slash - g_admin_url), g_admin_url, name);
}

static void admin_exec(const char *sql)
{
    PGconn *pg = PQconnectdb(g_admin_url);
    if (PQstatus(pg) != CONNECTION_OK)
        fail_msg("cannot connect to %s: %s", g_admin_url, PQerrorMessage(pg));
    PGresult *r = PQexec(pg, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(pg);
}

/* ---------- blocking SQL for assertions ---------- */

static PGresult *sql_res(fx_t *fx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static PGresult *sql_res(fx_t *fx, const char *fmt, ...)
{
    char sql[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    PGresult *r = PQexec(fx->pg, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    return r;
}

static long long sql_int(fx_t *fx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static long long sql_int(fx_t *fx, const char *fmt, ...)
{
    char sql[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    PGresult *r = sql_res(fx, "%s", sql);
    if (PQntuples(r) != 1)
        fail_msg("%s: %d rows", sql, PQntuples(r));
    long long v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return v;
}

/* The constraint named by the last refusal of sql_refused ("" if none). */
static char g_refused_constraint[64];

/* Runs sql expecting the database to refuse it; returns its SQLSTATE. */
static char *sql_refused(fx_t *fx, const char *sql)
{
    static char state[8];
    PGresult *r = PQexec(fx->pg, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
        fail_msg("the database accepted: %s", sql);
    const char *s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    snprintf(state, sizeof state, "%s", s ? s : "");
    const char *c = PQresultErrorField(r, PG_DIAG_CONSTRAINT_NAME);
    snprintf(g_refused_constraint, sizeof g_refused_constraint, "%s", c ? c : "");
    PQclear(r);
    PQclear(PQexec(fx->pg, "ROLLBACK"));
    return state;
}

static int64_t balance_of(fx_t *fx, const char *account_id)
{
    return sql_int(fx, "SELECT coalesce(ledger_balance('%s'), 0)", account_id);
}

/* Every ledger invariant, straight from the tables (not through C). */
static void assert_invariants_in_sql(fx_t *fx)
{
    assert_int_equal(sql_int(fx, "SELECT coalesce(sum(amount), 0) FROM ledger_entries"), 0);
    assert_int_equal(sql_int(fx, "SELECT count(*) FROM (SELECT 1 FROM ledger_entries "
                                 "GROUP BY txn_id, currency HAVING sum(amount) <> 0) x"),
                     0);
    assert_int_equal(sql_int(fx, "SELECT count(*) FROM (SELECT 1 FROM ledger_entries "
                                 "GROUP BY currency HAVING sum(amount) <> 0) x"),
                     0);
    /* A balance is the row's balance plus the account's queued deltas
     * (0040_hot_accounts.sql). */
    assert_int_equal(sql_int(fx, "SELECT count(*) FROM ledger_accounts a WHERE "
                                 "ledger_balance(a.account_id) <> (SELECT coalesce(sum(amount), "
                                 "0) FROM ledger_entries e WHERE e.account_id = a.account_id)"),
                     0);
    assert_int_equal(sql_int(fx, "SELECT count(*) FROM ledger_accounts WHERE NOT allow_negative "
                                 "AND ledger_balance(account_id) < 0"),
                     0);
    assert_int_equal(sql_int(fx, "SELECT count(*) FROM ledger_balance_deltas d WHERE NOT EXISTS "
                                 "(SELECT 1 FROM ledger_accounts a WHERE a.account_id = "
                                 "d.account_id)"),
                     0);
    assert_int_equal(sql_int(fx, "SELECT count(*) FROM ledger_txns t WHERE (SELECT count(*) "
                                 "FROM ledger_entries e WHERE e.txn_id = t.txn_id) < 2"),
                     0);
}

/* ---------- the loop ---------- */

static void run_until(fx_t *fx, const int *flag, double timeout_s)
{
    double t0 = now_s();
    while (!*flag) {
        uv_run(&fx->loop, UV_RUN_ONCE);
        if (now_s() - t0 > timeout_s)
            fail_msg("timed out after %.0f s", timeout_s);
    }
}

static int group_setup(void **state)
{
    (void)state;
    const char *url = getenv("PC_TEST_PG_URL");
    if (!url) {
        fprintf(stderr, "PC_TEST_PG_URL is not set: run the tests through scripts/test\n");
        return -1;
    }
    snprintf(g_admin_url, sizeof g_admin_url, "%s", url);
    snprintf(g_base, sizeof g_base, "t_ledger_base_%d", (int)getpid());
    char sql[256], base_url[600], err[512];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", g_base);
    admin_exec(sql);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", g_base);
    admin_exec(sql);
    url_for(base_url, sizeof base_url, g_base);
    if (pc_migrate(base_url, 10, err, sizeof err)) {
        fprintf(stderr, "migrations failed: %s\n", err);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    char sql[256];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", g_base);
    admin_exec(sql);
    return 0;
}

static int setup(void **state)
{
    static int n;
    fx_t *fx = calloc(1, sizeof *fx);
    snprintf(fx->name, sizeof fx->name, "t_ledger_%d_%d", (int)getpid(), ++n);
    char sql[256];
    snprintf(sql, sizeof sql, "CREATE DATABASE %s TEMPLATE %s", fx->name, g_base);
    admin_exec(sql);
    url_for(fx->url, sizeof fx->url, fx->name);
    fx->pg = PQconnectdb(fx->url);
    assert_int_equal(PQstatus(fx->pg), CONNECTION_OK);
    PQclear(PQexec(fx->pg, "SET client_min_messages = error"));
    assert_int_equal(uv_loop_init(&fx->loop), 0);
    pc_db_opts_t opts = {
        .url = fx->url, .pool_size = POOL, .query_timeout_ms = 60000, .pipeline_depth = 16};
    fx->db = pc_db_new(&fx->loop, &opts);
    assert_non_null(fx->db);
    double t0 = now_s();
    while (pc_db_ready_count(fx->db) < POOL) {
        uv_run(&fx->loop, UV_RUN_ONCE);
        if (now_s() - t0 > 20)
            fail_msg("the pool did not connect");
    }
    *state = fx;
    return 0;
}

static void on_closed(void *data)
{
    *(int *)data = 1;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    int closed = 0;
    pc_db_close(fx->db, on_closed, &closed);
    run_until(fx, &closed, 20);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    PQfinish(fx->pg);
    char sql[256];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", fx->name);
    admin_exec(sql);
    free(fx);
    return 0;
}

/* ---------- one posting in its own transaction ---------- */

/* A posting with its transaction: BEGIN, pc_ledger_post, then COMMIT. In
 * "pipelined" mode the COMMIT is queued right behind the posting, so the
 * whole transaction is one round trip; otherwise it waits for the posting's
 * answer and commits or rolls back (how a handler that has more to decide
 * works). biz_sql, when set, is a business change in the same transaction. */
typedef struct job job_t;
struct job {
    fx_t *fx;
    pc_ledger_txn_t txn;
    pc_ledger_leg_t legs[12];
    char ref_id[32];
    const char *biz_sql;
    int pipelined;
    pc_db_tx_t *tx;
    int post_status, commit_status, status, done;
    int64_t txn_id;
    void (*on_done)(job_t *);
    void *data;
};

static void job_finish(job_t *j, int status)
{
    j->status = status;
    j->done = 1;
    if (j->on_done)
        j->on_done(j);
}

static void job_committed(void *data, int status)
{
    job_t *j = data;
    j->commit_status = status;
    job_finish(j, j->post_status ? j->post_status : status);
}

static void job_posted(void *data, int status, int64_t txn_id)
{
    job_t *j = data;
    j->post_status = status;
    j->txn_id = txn_id;
    if (j->pipelined)
        return; /* the queued COMMIT answers next */
    if (status) {
        pc_db_tx_rollback(j->tx);
        job_finish(j, status);
        return;
    }
    pc_db_tx_commit(j->tx, job_committed, j);
}

static void job_biz_done(void *data, int status, pc_db_res_t *res)
{
    (void)res;
    assert_int_equal(status, 0);
    (void)data;
}

static void job_began(void *data, int status, pc_db_tx_t *tx)
{
    job_t *j = data;
    if (status) {
        job_finish(j, status);
        return;
    }
    j->tx = tx;
    if (j->biz_sql)
        assert_int_equal(pc_db_tx_query(tx, j->biz_sql, 0, NULL, job_biz_done, j), 0);
    int rc = pc_ledger_post(tx, &j->txn, job_posted, j);
    if (rc) {
        pc_db_tx_rollback(tx);
        job_finish(j, rc);
        return;
    }
    if (j->pipelined)
        pc_db_tx_commit(tx, job_committed, j);
}

static void job_start(job_t *j)
{
    j->done = 0;
    j->post_status = j->commit_status = j->status = 0;
    j->txn_id = 0;
    assert_int_equal(pc_db_begin(j->fx->db, NULL, job_began, j), 0);
}

static int post_sync(fx_t *fx, const char *kind, const char *ref_id, const pc_ledger_leg_t *legs,
                     size_t n, int64_t *txn_id)
{
    job_t j = {.fx = fx};
    memcpy(j.legs, legs, n * sizeof legs[0]);
    j.txn = (pc_ledger_txn_t){kind, "test", ref_id, NULL, j.legs, n};
    job_start(&j);
    run_until(fx, &j.done, 30);
    if (txn_id)
        *txn_id = j.txn_id;
    return j.status;
}

/* ---------- reading through C ---------- */

typedef struct {
    int done, status;
    pc_ledger_account_t a;
    pc_ledger_check_t c;
} read_t;

typedef struct {
    int done, status, folded;
} fold_t;

static void on_fold(void *data, int status, int folded)
{
    fold_t *f = data;
    f->status = status;
    f->folded = folded;
    f->done = 1;
}

static void on_balance(void *data, int status, const pc_ledger_account_t *a)
{
    read_t *r = data;
    r->status = status;
    if (a)
        r->a = *a; /* strings are not used after the callback */
    r->done = 1;
}

static void on_check(void *data, int status, const pc_ledger_check_t *c)
{
    read_t *r = data;
    r->status = status;
    if (c)
        r->c = *c;
    r->done = 1;
}

static pc_ledger_check_t check_sync(fx_t *fx, int *status)
{
    read_t r = {0};
    assert_int_equal(pc_ledger_check(fx->db, on_check, &r), 0);
    run_until(fx, &r.done, 60);
    *status = r.status;
    return r.c;
}

/* ---------- tests ---------- */

static void test_posting_moves_balances_and_records_entries(void **state)
{
    fx_t *fx = *state;
    pc_ledger_leg_t pay[] = {{"channel:sim:clearing:CNY", -10000, "CNY"},
                             {"merchant:m1:pending:CNY", 10000, "CNY"},
                             {"merchant:m1:pending:CNY", -60, "CNY"},
                             {"platform:fee_income:CNY", 60, "CNY"}};
    int64_t txn_id = 0;
    assert_int_equal(post_sync(fx, "TRADE_PAY", "P1", pay, 4, &txn_id), 0);
    assert_true(txn_id > 0);
    assert_int_equal(balance_of(fx, "channel:sim:clearing:CNY"), -10000);
    assert_int_equal(balance_of(fx, "merchant:m1:pending:CNY"), 9940);
    assert_int_equal(balance_of(fx, "platform:fee_income:CNY"), 60);
    assert_int_equal(
        sql_int(fx, "SELECT count(*) FROM ledger_entries WHERE txn_id = %lld", (long long)txn_id),
        4);
    /* Entries keep the legs' order; the account's type and owner come from
     * its id; the balance moved once, by the net. */
    assert_int_equal(sql_int(fx,
                             "SELECT amount FROM ledger_entries WHERE txn_id = %lld AND leg = 3",
                             (long long)txn_id),
                     -60);
    assert_int_equal(sql_int(fx, "SELECT count(*) FROM ledger_accounts WHERE account_id = "
                                 "'merchant:m1:pending:CNY' AND type = 'MERCHANT_PENDING' AND "
                                 "owner_id = 'm1' AND NOT allow_negative"),
                     1);
    /* A merchant's pending account is hot: the credit is queued, not applied
     * in place (no row lock shared by all of the merchant's payments), and
     * the fold job applies it once. */
    assert_int_equal(sql_int(fx, "SELECT balance FROM ledger_accounts WHERE account_id = "
                                 "'merchant:m1:pending:CNY'"),
                     0);
    assert_int_equal(sql_int(fx, "SELECT sum(amount) FROM ledger_balance_deltas WHERE "
                                 "account_id = 'merchant:m1:pending:CNY'"),
                     9940);
    fold_t fold = {0};
    assert_int_equal(pc_ledger_fold_pending(fx->db, 100, on_fold, &fold), 0);
    run_until(fx, &fold.done, 10);
    assert_int_equal(fold.status, 0);
    assert_true(fold.folded >= 2); /* the merchant and the fee account */
    assert_int_equal(sql_int(fx, "SELECT count(*) FROM ledger_accounts WHERE account_id = "
                                 "'merchant:m1:pending:CNY' AND balance = 9940 AND version = 1"),
                     1);
    assert_int_equal(sql_int(fx, "SELECT count(*) FROM ledger_balance_deltas"), 0);

    /* The merchant's money is read back through C, too. */
    read_t r = {0};
    assert_int_equal(pc_ledger_balance(fx->db, "merchant:m1:pending:CNY", on_balance, &r), 0);
    run_until(fx, &r.done, 10);
    assert_int_equal(r.status, 0);
    assert_true(r.a.exists);
    assert_int_equal(r.a.balance, 9940);
    assert_int_equal(r.a.type, PC_LEDGER_MERCHANT_PENDING);
    memset(&r, 0, sizeof r);
    assert_int_equal(pc_ledger_balance(fx->db, "buyer:nobody:wallet:CNY", on_balance, &r), 0);
    run_until(fx, &r.done, 10);
    assert_int_equal(r.status, 0);
    assert_false(r.a.exists);
    assert_int_equal(r.a.balance, 0);
    assert_invariants_in_sql(fx);
}

static void test_overdraft_is_refused_and_nothing_of_it_remains(void **state)
{
    fx_t *fx = *state;
    pc_ledger_leg_t topup[] = {{"channel:sim:clearing:CNY", -500, "CNY"},
                               {"buyer:u1:wallet:CNY", 500, "CNY"}};
    assert_int_equal(post_sync(fx, "RECHARGE", "R1", topup, 2, NULL), 0);
    assert_int_equal(sql_int(fx, "CREATE TABLE biz (id text PRIMARY KEY); SELECT 0"), 0);

    /* The wallet pays 501 for a 500 balance: credits to other accounts come
     * first in lock order (a brand-new merchant account, the escrow), so a
     * partial posting would show. The business row goes down with it. */
    job_t j = {.fx = fx, .biz_sql = "INSERT INTO biz VALUES ('order-1')"};
    j.legs[0] = (pc_ledger_leg_t){"merchant:fresh:pending:CNY", 300, "CNY"};
    j.legs[1] = (pc_ledger_leg_t){"platform:escrow:CNY", 201, "CNY"};
    j.legs[2] = (pc_ledger_leg_t){"buyer:u1:wallet:CNY", -501, "CNY"};
    j.txn = (pc_ledger_txn_t){"BALANCE_PAY", "test", "B1", NULL, j.legs, 3};
    for (int pipelined = 0; pipelined < 2; pipelined++) {
        j.pipelined = pipelined;
        job_start(&j);
        run_until(fx, &j.done, 30);
        assert_int_equal(j.status, PC_LEDGER_INSUFFICIENT);
        assert_int_equal(j.txn_id, 0);
        if (pipelined)
            assert_int_not_equal(j.commit_status, 0); /* COMMIT of the aborted transaction */
        assert_int_equal(balance_of(fx, "buyer:u1:wallet:CNY"), 500);
        assert_int_equal(sql_int(fx, "SELECT count(*) FROM ledger_accounts WHERE account_id IN "
                                     "('merchant:fresh:pending:CNY', 'platform:escrow:CNY')"),
                         0);
        assert_int_equal(sql_int(fx, "SELECT count(*) FROM ledger_txns WHERE ref_id = 'B1'"), 0);
        /* Nor were the credits queued (only the top-up's clearing movement is). */
        assert_int_equal(sql_int(fx, "SELECT count(*) FROM ledger_balance_deltas WHERE "
                                     "account_id <> 'channel:sim:clearing:CNY'"),
                         0);
        assert_int_equal(sql_int(fx, "SELECT count(*) FROM ledger_entries"), 2);
        assert_int_equal(sql_int(fx, "SELECT count(*) FROM biz"), 0);
    }

    /* Exactly the balance is fine, and then the business row is there too. */
    j.legs[1].amount = 200;
    j.legs[2].amount = -500;
    j.pipelined = 1;
    job_start(&j);
    run_until(fx, &j.done, 30);
    assert_int_equal(j.status, 0);
    assert_int_equal(balance_of(fx, "buyer:u1:wallet:CNY"), 0);
    assert_int_equal(sql_int(fx, "SELECT count(*) FROM biz"), 1);
    assert_invariants_in_sql(fx);
}

/* A migration not applied that sorts before the newest applied one (a file
 * added in a gap of the numbering, or its row lost) would run out of order
 * here and in order on a fresh database: the runner refuses it, naming both,
 * and applies nothing. Before, it ran it. */
static void test_a_migration_out_of_order_is_refused(void **state)
{
    fx_t *fx = *state;
    PGresult *r = sql_res(fx, "DELETE FROM schema_migrations WHERE version = (SELECT version FROM "
                              "schema_migrations ORDER BY version OFFSET 1 LIMIT 1) RETURNING "
                              "version");
    char gone[256];
    snprintf(gone, sizeof gone, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    long long before = sql_int(fx, "SELECT count(*) FROM schema_migrations");
    char err[512] = "";
    assert_int_not_equal(pc_migrate(fx->url, 5, err, sizeof err), 0);
    assert_non_null(strstr(err, gone));
    assert_non_null(strstr(err, "sorts before"));
    assert_int_equal(sql_int(fx, "SELECT count(*) FROM schema_migrations"), before);
    /* Its row back: nothing to do, and no complaint. */
    PQclear(sql_res(fx, "INSERT INTO schema_migrations (version) VALUES ('%s')", gone));
    assert_int_equal(pc_migrate(fx->url, 5, err, sizeof err), 0);
}

extern const pc_embedded_file_t pc_migrations[];
extern const size_t pc_migrations_count;

typedef struct {
    const char *url;
    const pc_embedded_file_t *files;
    size_t n;
    int rc;
    char err[512];
} migrating_t;

static void *migrate_main(void *arg)
{
    migrating_t *m = arg;
    m->rc = pc_migrate_files(m->url, m->files, m->n, 5, m->err, sizeof m->err);
    return NULL;
}

/* A migration that needs a table another session reads (an ALTER TABLE
 * behind a long report) gives way while it waits: the other sessions'
 * statements on that table still run. Before, it waited without a bound,
 * and every statement on the table queued behind it (every node answered
 * 503 until the reader ended). Once the reader ends it is applied. */
static void test_a_migration_waiting_for_a_lock_does_not_stall_the_table(void **state)
{
    fx_t *fx = *state;
    pc_embedded_file_t *files = calloc(pc_migrations_count + 1, sizeof *files);
    memcpy(files, pc_migrations, pc_migrations_count * sizeof *files);
    static const char alter[] = "ALTER TABLE refunds ADD COLUMN test_lock_probe int";
    files[pc_migrations_count] =
        (pc_embedded_file_t){"9999_test_lock_probe.sql", alter, sizeof alter - 1};
    /* A long reader of refunds. */
    PGconn *reader = PQconnectdb(fx->url);
    assert_int_equal(PQstatus(reader), CONNECTION_OK);
    PQclear(PQexec(reader, "BEGIN"));
    PGresult *r = PQexec(reader, "SELECT count(*) FROM refunds");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    PQclear(r);
    migrating_t m = {.url = fx->url, .files = files, .n = pc_migrations_count + 1, .rc = 1};
    pthread_t th;
    pthread_create(&th, NULL, migrate_main, &m);
    /* Others go on reading it meanwhile (each statement waits at most for
     * one of the migration's short tries). */
    PGconn *other = PQconnectdb(fx->url);
    assert_int_equal(PQstatus(other), CONNECTION_OK);
    PQclear(PQexec(other, "SET statement_timeout = 1500"));
    for (int i = 0; i < 6; i++) {
        usleep(400000);
        r = PQexec(other, "SELECT count(*) FROM refunds");
        if (PQresultStatus(r) != PGRES_TUPLES_OK)
            fail_msg("a reader stalled behind the waiting migration: %s", PQresultErrorMessage(r));
        PQclear(r);
    }
    assert_int_equal(m.rc, 1); /* still waiting */
    PQclear(PQexec(reader, "COMMIT"));
    PQfinish(reader);
    pthread_join(th, NULL);
    if (m.rc != 0)
        fail_msg("the migration: %s", m.err);
    assert_int_equal(sql_int(fx, "SELECT count(*) FROM schema_migrations WHERE version = "
                                 "'9999_test_lock_probe.sql'"),
                     1);
    PQfinish(other);
    free(files);
}

static void test_same_business_event_is_posted_once(void **state)
{
    fx_t *fx = *state;
    pc_ledger_leg_t pay[] = {{"channel:sim:clearing:CNY", -700, "CNY"},
                             {"merchant:m1:pending:CNY", 700, "CNY"}};
    assert_int_equal(post_sync(fx, "TRADE_PAY", "P7", pay, 2, NULL), 0);
    /* Same key, even with other amounts: refused, nothing moves. */
    pc_ledger_leg_t again[] = {{"channel:sim:clearing:CNY", -900, "CNY"},
                               {"merchant:m1:pending:CNY", 900, "CNY"}};
    assert_int_equal(post_sync(fx, "TRADE_PAY", "P7", again, 2, NULL), PC_LEDGER_DUPLICATE);
    assert_int_equal(balance_of(fx, "merchant:m1:pending:CNY"), 700);
    assert_int_equal(sql_int(fx, "SELECT count(*) FROM ledger_txns"), 1);
    assert_int_equal(sql_int(fx, "SELECT count(*) FROM ledger_entries"), 2);
    /* Another kind of event on the same reference is another posting. */
    pc_ledger_leg_t fee[] = {{"merchant:m1:pending:CNY", -7, "CNY"},
                             {"platform:fee_income:CNY", 7, "CNY"}};
    assert_int_equal(post_sync(fx, "TRADE_FEE", "P7", fee, 2, NULL), 0);

    /* Two postings of one event racing on two connections: one wins. */
    job_t a = {.fx = fx}, b = {.fx = fx};
    job_t *jobs[2] = {&a, &b};
    for (int i = 0; i < 2; i++) {
        memcpy(jobs[i]->legs, pay, sizeof pay);
        jobs[i]->txn = (pc_ledger_txn_t){"TRADE_PAY", "test", "P8", NULL, jobs[i]->legs, 2};
        job_start(jobs[i]);
    }
    run_until(fx, &a.done, 30);
    run_until(fx, &b.done, 30);
    assert_true((a.status == 0 && b.status == PC_LEDGER_DUPLICATE) ||
                (b.status == 0 && a.status == PC_LEDGER_DUPLICATE));
    assert_int_equal(balance_of(fx, "merchant:m1:pending:CNY"), 700 - 7 + 700);
    assert_int_equal(sql_int(fx, "SELECT count(*) FROM ledger_txns WHERE ref_id = 'P8'"), 1);
    assert_invariants_in_sql(fx);
}

typedef struct {
    fx_t *fx;
    pc_db_tx_t *tx;
    int posted, done;
    int64_t inside, outside;
} peek_t;

static void peek_posted(void *data, int status, int64_t txn_id)
{
    peek_t *k = data;
    assert_int_equal(status, 0);
    assert_true(txn_id > 0);
    k->posted = 1;
}

static void peek_outside(void *data, int status, const pc_ledger_account_t *a)
{
    peek_t *k = data;
    assert_int_equal(status, 0);
    k->outside = a->balance;
    pc_db_tx_rollback(k->tx);
    k->done = 1;
}

static void peek_inside(void *data, int status, const pc_ledger_account_t *a)
{
    peek_t *k = data;
    assert_int_equal(status, 0);
    assert_true(k->posted); /* callbacks of one transaction run in queue order */
    assert_true(a->exists);
    k->inside = a->balance;
    assert_int_equal(pc_ledger_balance(k->fx->db, "buyer:u9:wallet:CNY", peek_outside, k), 0);
}

static void peek_began(void *data, int status, pc_db_tx_t *tx)
{
    peek_t *k = data;
    assert_int_equal(status, 0);
    k->tx = tx;
    static const pc_ledger_leg_t legs[] = {{"channel:sim:clearing:CNY", -250, "CNY"},
                                           {"buyer:u9:wallet:CNY", 250, "CNY"}};
    pc_ledger_txn_t t = {"RECHARGE", "test", "R9", NULL, legs, 2};
    /* Queued back to back: the read is pipelined behind the posting. */
    assert_int_equal(pc_ledger_post(tx, &t, peek_posted, k), 0);
    assert_int_equal(pc_ledger_balance_tx(tx, "buyer:u9:wallet:CNY", peek_inside, k), 0);
}

static void test_balance_in_the_transaction_sees_its_own_posting(void **state)
{
    fx_t *fx = *state;
    peek_t k = {.fx = fx};
    assert_int_equal(pc_db_begin(fx->db, NULL, peek_began, &k), 0);
    run_until(fx, &k.done, 30);
    assert_int_equal(k.inside, 250);
    assert_int_equal(k.outside, 0); /* not committed: nobody else sees it */
    /* Let the rollback go through before looking. */
    for (int i = 0; i < 20 && pc_db_busy_count(fx->db) > 0; i++)
        uv_run(&fx->loop, UV_RUN_ONCE);
    assert_int_equal(sql_int(fx, "SELECT count(*) FROM ledger_txns"), 0);
}

static void on_opened(void *data, int status)
{
    read_t *r = data;
    r->status = status;
    r->done = 1;
}

static int g_opened_committed;

static void opened_committed(void *data, int status)
{
    (void)data;
    assert_int_equal(status, 0);
    g_opened_committed = 1;
}

static void opened_began(void *data, int status, pc_db_tx_t *tx)
{
    read_t *r = data;
    assert_int_equal(status, 0);
    assert_int_equal(pc_ledger_open_account(tx, "merchant:m2:available:USD", on_opened, r), 0);
    assert_int_equal(pc_ledger_open_account(tx, "merchant:m2:available:USD", on_opened, r), 0);
    assert_int_equal(pc_ledger_open_account(tx, "merchant:m2:wallet:USD", on_opened, r),
                     PC_LEDGER_BAD_ACCOUNT);
    pc_db_tx_commit(tx, opened_committed, r);
}

static void test_open_account_is_idempotent_and_checks_shape(void **state)
{
    fx_t *fx = *state;
    read_t r = {0};
    g_opened_committed = 0;
    assert_int_equal(pc_db_begin(fx->db, NULL, opened_began, &r), 0);
    run_until(fx, &r.done, 10);
    /* Read back only once the transaction has committed. */
    run_until(fx, &g_opened_committed, 10);
    assert_int_equal(r.status, 0);
    assert_int_equal(sql_int(fx, "SELECT count(*) FROM ledger_accounts WHERE account_id = "
                                 "'merchant:m2:available:USD' AND balance = 0 AND "
                                 "type = 'MERCHANT_AVAILABLE'"),
                     1);
}

static void test_database_refuses_what_c_would(void **state)
{
    fx_t *fx = *state;
    pc_ledger_leg_t topup[] = {{"channel:sim:clearing:CNY", -500, "CNY"},
                               {"buyer:u1:wallet:CNY", 500, "CNY"}};
    int64_t txn_id = 0;
    assert_int_equal(post_sync(fx, "RECHARGE", "R1", topup, 2, &txn_id), 0);

    /* A wallet driven below zero by hand. */
    assert_string_equal(sql_refused(fx, "UPDATE ledger_accounts SET balance = -1 WHERE "
                                        "account_id = 'buyer:u1:wallet:CNY'"),
                        "23514");
    assert_string_equal(g_refused_constraint, "ledger_accounts_no_overdraft");
    /* Customer money that may go negative, an id that lies about its type or
     * its currency, a type that does not exist; each under its own name. */
    assert_string_equal(
        sql_refused(fx, "INSERT INTO ledger_accounts (account_id, type, owner_id, currency, "
                        "allow_negative) VALUES ('merchant:m1:available:CNY', "
                        "'MERCHANT_AVAILABLE', 'm1', 'CNY', true)"),
        "23514");
    assert_string_equal(g_refused_constraint, "ledger_accounts_customer_funds");
    assert_string_equal(
        sql_refused(fx, "INSERT INTO ledger_accounts (account_id, type, owner_id, currency, "
                        "allow_negative) VALUES ('platform:loss:CNY', 'BUYER_WALLET', 'x', "
                        "'CNY', false)"),
        "23514");
    assert_string_equal(g_refused_constraint, "ledger_accounts_id_shape");
    assert_string_equal(
        sql_refused(fx, "INSERT INTO ledger_accounts (account_id, type, owner_id, currency, "
                        "allow_negative) VALUES ('buyer:u9:wallet:CNY', 'BUYER_WALLET', 'u9', "
                        "'USD', false)"),
        "23514");
    assert_string_equal(g_refused_constraint, "ledger_accounts_id_shape");
    assert_string_equal(
        sql_refused(fx, "INSERT INTO ledger_accounts (account_id, type, owner_id, currency, "
                        "allow_negative) VALUES ('buyer:u9:wallet:CNY', 'BUYER_PURSE', 'u9', "
                        "'CNY', false)"),
        "23514");
    assert_string_equal(g_refused_constraint, "ledger_accounts_type");
    /* Changing an account's shape afterwards is refused the same way. */
    assert_string_equal(sql_refused(fx, "UPDATE ledger_accounts SET allow_negative = true WHERE "
                                        "account_id = 'buyer:u1:wallet:CNY'"),
                        "23514");
    assert_string_equal(g_refused_constraint, "ledger_accounts_customer_funds");
    /* A transaction without entries, an unbalanced one, an entry in another
     * currency than its account's. */
    assert_string_equal(
        sql_refused(fx, "INSERT INTO ledger_txns (kind, ref_type, ref_id) VALUES ('X', 'y', 'z')"),
        "23503");
    assert_string_equal(
        sql_refused(fx, "WITH t AS (INSERT INTO ledger_txns (kind, ref_type, ref_id) VALUES ('X', "
                        "'y', 'z') RETURNING txn_id) INSERT INTO ledger_entries (txn_id, leg, "
                        "account_id, amount, currency) SELECT txn_id, g, 'buyer:u1:wallet:CNY', "
                        "CASE g WHEN 1 THEN 5 ELSE -4 END, 'CNY' FROM t, generate_series(1, 2) g"),
        "23514");
    assert_string_equal(
        sql_refused(fx, "SELECT ledger_post('X', 'y', 'z', NULL, "
                        "'{buyer:u1:wallet:CNY,channel:sim:clearing:CNY}', "
                        "'{BUYER_WALLET,CHANNEL_CLEARING}', '{u1,sim}', '{CNY,CNY}', '{f,t}', "
                        "'{buyer:u1:wallet:CNY,channel:sim:clearing:CNY}', '{5,-5}', "
                        "'{USD,USD}')"),
        "23514");
    /* A currency pattern instead of a code: a CNY and a USD account
     * "balanced" under '___' (the account check compared the id's suffix
     * with it as a LIKE pattern; found by the fifth audit). */
    assert_string_equal(
        sql_refused(fx, "SELECT ledger_post('X', 'y', 'z2', NULL, "
                        "'{buyer:u1:wallet:CNY,channel:sim:clearing:USD}', "
                        "'{BUYER_WALLET,CHANNEL_CLEARING}', '{u1,sim}', '{CNY,USD}', '{f,t}', "
                        "'{buyer:u1:wallet:CNY,channel:sim:clearing:USD}', '{5,-5}', "
                        "'{___,___}')"),
        "23514");
    /* An entry slipped into a transaction posted earlier. */
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO ledger_entries (txn_id, leg, account_id, amount, currency) VALUES "
             "(%lld, 3, 'buyer:u1:wallet:CNY', 5, 'CNY')",
             (long long)txn_id);
    assert_string_equal(sql_refused(fx, sql), "23514");
    /* Posted rows are never edited or removed. */
    assert_string_equal(sql_refused(fx, "UPDATE ledger_entries SET amount = amount * 2"), "23000");
    assert_string_equal(sql_refused(fx, "DELETE FROM ledger_txns"), "23000");
    /* Refused by the append-only trigger, or earlier by a foreign key of a
     * table that points into the ledger (later migrations add those). */
    const char *trunc = sql_refused(fx, "TRUNCATE ledger_entries, ledger_txns");
    assert_true(!strcmp(trunc, "23000") || !strcmp(trunc, "0A000"));
    /* A posting that names an account it did not lock. */
    assert_string_equal(
        sql_refused(fx, "SELECT ledger_post('X', 'y', 'z', NULL, '{buyer:u1:wallet:CNY}', "
                        "'{BUYER_WALLET}', '{u1}', '{CNY}', '{f}', "
                        "'{buyer:u1:wallet:CNY,channel:sim:clearing:CNY}', '{5,-5}', "
                        "'{CNY,CNY}')"),
        "22023");
    assert_int_equal(balance_of(fx, "buyer:u1:wallet:CNY"), 500);
    assert_invariants_in_sql(fx);
}

static void test_balance_beyond_int64_is_refused(void **state)
{
    fx_t *fx = *state;
    pc_ledger_leg_t big[] = {{"platform:suspense:CNY", -INT64_MAX, "CNY"},
                             {"buyer:u1:wallet:CNY", INT64_MAX, "CNY"}};
    assert_int_equal(post_sync(fx, "ADJUST", "A1", big, 2, NULL), 0);
    pc_ledger_leg_t one[] = {{"platform:suspense:CNY", -1, "CNY"},
                             {"buyer:u1:wallet:CNY", 1, "CNY"}};
    assert_int_equal(post_sync(fx, "ADJUST", "A2", one, 2, NULL), PC_ELIMIT);
    assert_int_equal(balance_of(fx, "buyer:u1:wallet:CNY"), INT64_MAX);
}

static void test_check_reports_a_broken_invariant(void **state)
{
    fx_t *fx = *state;
    int status;
    pc_ledger_check_t c = check_sync(fx, &status);
    assert_int_equal(status, 0);
    assert_true(c.ok); /* an empty ledger is consistent */

    pc_ledger_leg_t pay[] = {{"channel:sim:clearing:CNY", -300, "CNY"},
                             {"merchant:m1:pending:CNY", 300, "CNY"}};
    assert_int_equal(post_sync(fx, "TRADE_PAY", "P1", pay, 2, NULL), 0);
    c = check_sync(fx, &status);
    assert_int_equal(status, 0);
    assert_true(c.ok);

    /* Someone "fixes" a balance by hand: the check sees it. */
    sql_int(fx, "UPDATE ledger_accounts SET balance = balance + 1 WHERE account_id = "
                "'merchant:m1:pending:CNY' RETURNING 0");
    c = check_sync(fx, &status);
    assert_int_equal(status, 0);
    assert_false(c.ok);
    assert_int_equal(c.accounts_mismatched, 1);
    assert_int_equal(c.entries_sum, 0);
    json_t *j = pc_ledger_check_json(&c);
    assert_true(json_is_false(json_object_get(j, "ok")));
    assert_int_equal(json_integer_value(json_object_get(j, "accounts_mismatched")), 1);
    json_decref(j);

    /* The trade counts are whatever ledger_check_trades() finds (the trade
     * migrations own that function); here it is made to find faults. */
    sql_int(fx, "UPDATE ledger_accounts SET balance = balance - 1 WHERE account_id = "
                "'merchant:m1:pending:CNY' RETURNING 0");
    c = check_sync(fx, &status);
    assert_int_equal(status, 0);
    assert_true(c.ok);
    sql_int(fx, "CREATE OR REPLACE FUNCTION ledger_check_trades(OUT trades_over_refunded "
                "bigint, OUT duplicate_charges bigint) LANGUAGE sql STABLE AS "
                "'SELECT 2::bigint, 1::bigint'; SELECT 0");
    c = check_sync(fx, &status);
    assert_int_equal(status, 0);
    assert_false(c.ok);
    assert_int_equal(c.trades_over_refunded, 2);
    assert_int_equal(c.duplicate_charges, 1);
    assert_int_equal(c.accounts_mismatched, 0);
    sql_int(fx, "CREATE OR REPLACE FUNCTION ledger_check_trades(OUT trades_over_refunded "
                "bigint, OUT duplicate_charges bigint) LANGUAGE sql STABLE AS "
                "'SELECT 0::bigint, 0::bigint'; SELECT 0");

    /* A balanced pair slipped into an old transaction keeps every
     * transaction balanced, so the database lets it in (see 0003); the check
     * sees the two balances that no longer match their entries. */
    long long txn_id = sql_int(fx, "SELECT min(txn_id) FROM ledger_txns");
    sql_int(fx,
            "INSERT INTO ledger_entries (txn_id, leg, account_id, amount, currency) VALUES "
            "(%lld, 3, 'merchant:m1:pending:CNY', 5, 'CNY'), "
            "(%lld, 4, 'channel:sim:clearing:CNY', -5, 'CNY'); SELECT 0",
            txn_id, txn_id);
    c = check_sync(fx, &status);
    assert_int_equal(status, 0);
    assert_false(c.ok);
    assert_int_equal(c.accounts_mismatched, 2);
    assert_int_equal(c.txns_unbalanced, 0);
    assert_int_equal(c.entries_sum, 0);
}

/* ---------- 10,000 random postings ---------- */

#define PROP_N 10000
#define PROP_WINDOW 16
#define NACCT 50

typedef struct {
    char id[PC_LEDGER_ID_MAX + 1];
    const char *cur;
    int nonneg;
    int64_t committed;    /* the balance after every posting that succeeded */
    int64_t inflight_pos; /* credits of postings in flight */
    int64_t inflight_neg; /* debits of postings in flight */
    int no_credit;        /* overdraws in flight: new postings do not credit it */
    int no_debit;         /* racy debits in flight: new postings do not debit it */
} macct_t;

enum { CAT_REGULAR, CAT_OVERDRAW, CAT_RACY };

typedef struct {
    job_t job;
    int cat;
    int acct[12]; /* model index per leg, -1 for an account that must not exist */
    char fresh[3][PC_LEDGER_ID_MAX + 1];
    int64_t net[NACCT];
    int target; /* the overdrawn or racily debited account */
} pjob_t;

typedef struct {
    fx_t *fx;
    macct_t acct[NACCT];
    int nacct;
    pjob_t *jobs;
    int launched, finished, inflight;
    int by_status[3]; /* ok, insufficient, other */
    int max_busy;
    uint64_t rng;
    int all_done;
} prop_t;

static uint64_t rnd(prop_t *p)
{
    /* xorshift64*: reproducible from the printed seed. */
    p->rng ^= p->rng >> 12;
    p->rng ^= p->rng << 25;
    p->rng ^= p->rng >> 27;
    return p->rng * 2685821657736338717ULL;
}

static int64_t rnd_in(prop_t *p, int64_t lo, int64_t hi)
{
    return lo + (int64_t)(rnd(p) % (uint64_t)(hi - lo + 1));
}

static void prop_accounts(prop_t *p)
{
    static const char *cny[] = {"merchant:m%d:pending:CNY", "merchant:m%d:available:CNY",
                                "merchant:m%d:reserve:CNY", "merchant:m%d:receivable:CNY"};
    int n = 0;
    for (int i = 0; i < 12; i++)
        snprintf(p->acct[n++].id, PC_LEDGER_ID_MAX + 1, "buyer:b%02d:wallet:CNY", i);
    for (int m = 0; m < 6; m++)
        for (int k = 0; k < 4; k++)
            snprintf(p->acct[n++].id, PC_LEDGER_ID_MAX + 1, cny[k], m);
    for (int c = 0; c < 4; c++)
        snprintf(p->acct[n++].id, PC_LEDGER_ID_MAX + 1, "channel:ch%d:clearing:CNY", c);
    const char *fixed[] = {"platform:escrow:CNY",      "platform:fee_income:CNY",
                           "platform:marketing:CNY",   "platform:loss:CNY",
                           "platform:suspense:CNY",    "buyer:b00:wallet:USD",
                           "buyer:b01:wallet:USD",     "merchant:m0:pending:USD",
                           "channel:ch0:clearing:USD", "platform:suspense:USD"};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        snprintf(p->acct[n++].id, PC_LEDGER_ID_MAX + 1, "%s", fixed[i]);
    assert_int_equal(n, NACCT);
    p->nacct = n;
    for (int i = 0; i < n; i++) {
        pc_ledger_shape_t s;
        assert_int_equal(pc_ledger_parse_account(p->acct[i].id, &s), 0);
        p->acct[i].cur = strstr(p->acct[i].id, ":USD") ? "USD" : "CNY";
        p->acct[i].nonneg = !s.allow_negative;
    }
}

static int pick(prop_t *p, const char *cur, int nonneg) /* nonneg: 1 yes, 0 no, -1 any */
{
    for (;;) {
        int i = (int)(rnd(p) % (uint64_t)p->nacct);
        if (strcmp(p->acct[i].cur, cur) == 0 && (nonneg < 0 || p->acct[i].nonneg == nonneg))
            return i;
    }
}

static void add_leg(pjob_t *pj, int acct, const char *id, int64_t amount, const char *cur)
{
    job_t *j = &pj->job;
    assert_true(j->txn.nlegs < 12);
    pj->acct[j->txn.nlegs] = acct;
    j->legs[j->txn.nlegs++] = (pc_ledger_leg_t){id, amount, cur};
    if (acct >= 0)
        pj->net[acct] += amount;
}

/* Outcomes are designed so that they cannot depend on the order in which
 * the postings in flight reach the database, including postings launched
 * later (a posting may wait for a connection or a lock while later ones
 * commit):
 *  - a regular debit of a never-negative account takes at most what is
 *    committed minus every debit in flight (credits in flight are not
 *    counted on), so it succeeds whatever lands first;
 *  - an overdraw debits more than the account could hold if every credit in
 *    flight landed, and no posting launched while it is in flight credits
 *    that account, so it fails whatever lands first;
 *  - a racy debit targets an account with no other debit in flight and none
 *    started while it is in flight, so it cannot take money a regular debit
 *    counted on; whether credits land before it decides its fate. */

/* A posting that must succeed. */
static void gen_regular(prop_t *p, pjob_t *pj, const char *cur)
{
    int64_t sum = 0;
    int k = (int)rnd_in(p, 1, 4);
    for (int i = 0; i < k; i++) {
        int a;
        int64_t amt;
        for (;;) {
            a = pick(p, cur, -1);
            macct_t *m = &p->acct[a];
            if (!m->nonneg) {
                amt = rnd_in(p, -50000, 50000);
                if (amt == 0)
                    amt = 1;
                break;
            }
            int64_t room = m->no_debit ? 0 : m->committed + m->inflight_neg + pj->net[a];
            int can_debit = room >= 1, can_credit = !m->no_credit;
            if (!can_debit && !can_credit)
                continue;
            int debit = can_debit && (!can_credit || rnd(p) % 5 < 2);
            amt = debit ? -rnd_in(p, 1, room) : rnd_in(p, 1, 50000);
            break;
        }
        add_leg(pj, a, p->acct[a].id, amt, cur);
        sum += amt;
    }
    /* An allow-negative account balances the posting (legs that cancel out
     * already are a valid posting as they are). */
    if (sum != 0) {
        int b = pick(p, cur, 0);
        add_leg(pj, b, p->acct[b].id, -sum, cur);
    }
}

/* A posting that must fail. Its credits go to other accounts, some of them
 * never seen before, so that a partial posting would leave a trace. */
static void gen_overdraw(prop_t *p, pjob_t *pj, int idx)
{
    const char *cur = rnd(p) % 6 == 0 ? "USD" : "CNY";
    int x = pick(p, cur, 1);
    macct_t *m = &p->acct[x];
    if (rnd(p) % 2)
        gen_regular(p, pj, cur);
    /* The most x could hold: every credit in flight, and this posting's own
     * credits to it. */
    int64_t own = pj->net[x] > 0 ? pj->net[x] : 0;
    int64_t d = m->committed + m->inflight_pos + own + rnd_in(p, 1, 10000);
    int parts = d >= 3 ? (int)rnd_in(p, 1, 3) : 1;
    int64_t left = d;
    for (int i = 0; i < parts; i++) {
        int64_t amt = i == parts - 1 ? left : rnd_in(p, 1, left - (parts - 1 - i));
        left -= amt;
        if (rnd(p) % 3 == 0) {
            snprintf(pj->fresh[i], sizeof pj->fresh[i], "buyer:fresh%05d_%d:wallet:%s", idx, i,
                     cur);
            add_leg(pj, -1, pj->fresh[i], amt, cur);
        } else {
            int t;
            do
                t = pick(p, cur, -1);
            while (t == x);
            add_leg(pj, t, p->acct[t].id, amt, cur);
        }
    }
    add_leg(pj, x, m->id, -d, cur);
    pj->target = x;
    /* The overdrawing leg goes anywhere in the posting. */
    job_t *j = &pj->job;
    size_t at = (size_t)(rnd(p) % j->txn.nlegs), last = j->txn.nlegs - 1;
    pc_ledger_leg_t leg = j->legs[at];
    j->legs[at] = j->legs[last];
    j->legs[last] = leg;
    int ai = pj->acct[at];
    pj->acct[at] = pj->acct[last];
    pj->acct[last] = ai;
}

/* A posting whose fate depends on the race: it debits about what a
 * never-negative account holds now. Either answer is right; the final
 * balances must agree with whichever it got. Returns 0 when no account
 * qualifies. */
static int gen_racy(prop_t *p, pjob_t *pj)
{
    for (int tries = 0; tries < 20; tries++) {
        int x = pick(p, "CNY", 1);
        macct_t *m = &p->acct[x];
        if (m->inflight_neg != 0 || m->no_debit || m->committed < 1)
            continue;
        int64_t d = m->committed + rnd_in(p, -300, 300);
        if (d < 1)
            d = 1;
        int b = pick(p, "CNY", 0);
        add_leg(pj, x, m->id, -d, "CNY");
        add_leg(pj, b, p->acct[b].id, d, "CNY");
        pj->target = x;
        return 1;
    }
    return 0;
}

static void prop_launch(prop_t *p);

static void prop_job_done(job_t *j)
{
    pjob_t *pj = (pjob_t *)j;
    prop_t *p = j->data;
    for (int a = 0; a < p->nacct; a++) {
        int64_t n = pj->net[a];
        if (n > 0)
            p->acct[a].inflight_pos -= n;
        else
            p->acct[a].inflight_neg -= n;
        if (j->status == 0)
            p->acct[a].committed += n;
    }
    if (pj->cat == CAT_OVERDRAW)
        p->acct[pj->target].no_credit--;
    else if (pj->cat == CAT_RACY)
        p->acct[pj->target].no_debit--;
    if (j->status == 0)
        p->by_status[0]++;
    else if (j->status == PC_LEDGER_INSUFFICIENT)
        p->by_status[1]++;
    else
        p->by_status[2]++;
    int busy = pc_db_busy_count(p->fx->db);
    if (busy > p->max_busy)
        p->max_busy = busy;
    p->inflight--;
    p->finished++;
    prop_launch(p);
    if (p->finished == PROP_N)
        p->all_done = 1;
}

static void prop_launch(prop_t *p)
{
    while (p->launched < PROP_N && p->inflight < PROP_WINDOW) {
        int idx = p->launched++;
        pjob_t *pj = &p->jobs[idx];
        job_t *j = &pj->job;
        j->fx = p->fx;
        j->on_done = prop_job_done;
        j->data = p;
        j->pipelined = (int)(rnd(p) % 2);
        snprintf(j->ref_id, sizeof j->ref_id, "J%05d", idx);
        j->txn = (pc_ledger_txn_t){"PROP", "prop", j->ref_id, NULL, j->legs, 0};
        uint64_t r = rnd(p) % 100;
        if (r < 12) {
            pj->cat = CAT_OVERDRAW;
            gen_overdraw(p, pj, idx);
        } else if (r < 20 && gen_racy(p, pj)) {
            pj->cat = CAT_RACY;
        } else {
            pj->cat = CAT_REGULAR;
            const char *cur = rnd(p) % 7 == 0 ? "USD" : "CNY";
            gen_regular(p, pj, cur);
            if (rnd(p) % 10 == 0)
                gen_regular(p, pj, strcmp(cur, "USD") ? "USD" : "CNY");
        }
        for (int a = 0; a < p->nacct; a++) {
            if (pj->net[a] > 0)
                p->acct[a].inflight_pos += pj->net[a];
            else
                p->acct[a].inflight_neg += pj->net[a];
        }
        if (pj->cat == CAT_OVERDRAW)
            p->acct[pj->target].no_credit++;
        else if (pj->cat == CAT_RACY)
            p->acct[pj->target].no_debit++;
        p->inflight++;
        job_start(j);
    }
}

static void test_10000_random_concurrent_postings_keep_every_invariant(void **state)
{
    fx_t *fx = *state;
    prop_t *p = calloc(1, sizeof *p);
    p->fx = fx;
    p->jobs = calloc(PROP_N, sizeof *p->jobs);
    const char *seed = getenv("PC_LEDGER_SEED");
    p->rng = seed ? strtoull(seed, NULL, 10) : (uint64_t)time(NULL) * 2654435761u + 1;
    if (p->rng == 0)
        p->rng = 1;
    printf("ledger property test: seed %llu (PC_LEDGER_SEED to replay)\n",
           (unsigned long long)p->rng);
    prop_accounts(p);

    double t0 = now_s();
    prop_launch(p);
    run_until(fx, &p->all_done, 600);
    double secs = now_s() - t0;
    printf("ledger property test: %d postings in %.2f s = %.0f postings/s "
           "(%d ok, %d insufficient, %d other; up to %d connections busy)\n",
           PROP_N, secs, PROP_N / secs, p->by_status[0], p->by_status[1], p->by_status[2],
           p->max_busy);
    fflush(stdout);

    /* Every posting got the answer its design dictates, and none hit a
     * deadlock (sorted locking) or any other error. */
    int overdraws = 0, racy[2] = {0, 0};
    for (int i = 0; i < PROP_N; i++) {
        pjob_t *pj = &p->jobs[i];
        switch (pj->cat) {
        case CAT_REGULAR:
            if (pj->job.status != 0)
                fail_msg("regular posting %d failed: %s", i, pc_ledger_strerror(pj->job.status));
            break;
        case CAT_OVERDRAW:
            overdraws++;
            if (pj->job.status != PC_LEDGER_INSUFFICIENT) {
                for (size_t l = 0; l < pj->job.txn.nlegs; l++)
                    fprintf(stderr, "  leg %s %lld (model %d: committed %lld)\n",
                            pj->job.legs[l].account_id, (long long)pj->job.legs[l].amount,
                            pj->acct[l],
                            pj->acct[l] >= 0 ? (long long)p->acct[pj->acct[l]].committed : 0LL);
                fail_msg("overdraw %d answered %s", i, pc_ledger_strerror(pj->job.status));
            }
            break;
        default:
            if (pj->job.status != 0 && pj->job.status != PC_LEDGER_INSUFFICIENT)
                fail_msg("racy posting %d answered %s", i, pc_ledger_strerror(pj->job.status));
            racy[pj->job.status != 0]++;
        }
    }
    printf("ledger property test: %d overdraws refused, racy debits %d ok / %d refused\n",
           overdraws, racy[0], racy[1]);
    assert_true(overdraws > 500);
    assert_int_equal(p->by_status[2], 0);
    assert_true(p->max_busy >= 2); /* postings really overlapped */

    /* Balances are exactly the sum of the postings that succeeded: a refused
     * posting moved nothing, not even partly. */
    PGresult *r = sql_res(fx, "SELECT account_id, ledger_balance(account_id) FROM ledger_accounts");
    int seen = 0;
    for (int row = 0; row < PQntuples(r); row++) {
        const char *id = PQgetvalue(r, row, 0);
        int a = 0;
        while (a < p->nacct && strcmp(p->acct[a].id, id))
            a++;
        if (a == p->nacct)
            fail_msg("account %s exists but only failed postings named it", id);
        if (strtoll(PQgetvalue(r, row, 1), NULL, 10) != p->acct[a].committed)
            fail_msg("%s: balance %s, expected %lld", id, PQgetvalue(r, row, 1),
                     (long long)p->acct[a].committed);
        seen++;
    }
    PQclear(r);
    for (int a = 0; a < p->nacct; a++)
        if (p->acct[a].committed != 0)
            seen--;
    assert_true(seen >= 0);

    /* The transactions present are exactly the successful ones, with all
     * their entries; no refused posting left a transaction or an entry. */
    char *present = calloc(PROP_N, 1);
    r = sql_res(fx, "SELECT t.ref_id, count(e.*) FROM ledger_txns t JOIN ledger_entries e "
                    "USING (txn_id) WHERE t.ref_type = 'prop' GROUP BY t.ref_id");
    for (int row = 0; row < PQntuples(r); row++) {
        int i = atoi(PQgetvalue(r, row, 0) + 1);
        assert_true(i >= 0 && i < PROP_N);
        present[i] = 1;
        assert_int_equal(atoi(PQgetvalue(r, row, 1)), (int)p->jobs[i].job.txn.nlegs);
    }
    assert_int_equal(PQntuples(r), p->by_status[0]);
    PQclear(r);
    for (int i = 0; i < PROP_N; i++)
        if (present[i] != (p->jobs[i].job.status == 0))
            fail_msg("posting %d: status %d but present %d", i, p->jobs[i].job.status, present[i]);
    free(present);
    assert_int_equal(sql_int(fx, "SELECT count(*) FROM ledger_txns"), p->by_status[0]);

    assert_invariants_in_sql(fx);
    int status;
    pc_ledger_check_t c = check_sync(fx, &status);
    assert_int_equal(status, 0);
    assert_true(c.ok);
    free(p->jobs);
    free(p);
}

/* ---------- throughput ---------- */

typedef struct {
    fx_t *fx;
    job_t *jobs;
    int n, launched, finished, inflight, pipelined, failed, all_done;
} bench_t;

static void bench_launch(bench_t *b);

static void bench_done(job_t *j)
{
    bench_t *b = j->data;
    b->failed += j->status != 0;
    b->inflight--;
    if (++b->finished == b->n)
        b->all_done = 1;
    bench_launch(b);
}

/* An instant-trade payment with its fee: channel -> merchant pending, fee
 * to the platform. Every posting touches the platform fee account, the
 * hottest row a real ledger has. */
static void bench_launch(bench_t *b)
{
    while (b->launched < b->n && b->inflight < PROP_WINDOW) {
        int i = b->launched++;
        job_t *j = &b->jobs[i];
        j->fx = b->fx;
        j->on_done = bench_done;
        j->data = b;
        j->pipelined = b->pipelined;
        snprintf(j->ref_id, sizeof j->ref_id, "B%d_%06d", b->pipelined, i);
        static char ch[4][32], mp[20][32];
        if (!ch[0][0]) {
            for (int k = 0; k < 4; k++)
                snprintf(ch[k], sizeof ch[k], "channel:ch%d:clearing:CNY", k);
            for (int k = 0; k < 20; k++)
                snprintf(mp[k], sizeof mp[k], "merchant:m%d:pending:CNY", k);
        }
        int64_t amount = 1000 + i % 9000, fee = amount * 6 / 1000 + 1;
        j->legs[0] = (pc_ledger_leg_t){ch[i % 4], -amount, "CNY"};
        j->legs[1] = (pc_ledger_leg_t){mp[i % 20], amount - fee, "CNY"};
        j->legs[2] = (pc_ledger_leg_t){"platform:fee_income:CNY", fee, "CNY"};
        j->txn = (pc_ledger_txn_t){"TRADE_PAY", "bench", j->ref_id, NULL, j->legs, 3};
        b->inflight++;
        job_start(j);
    }
}

static double bench_run(fx_t *fx, int n, int pipelined)
{
    bench_t b = {.fx = fx, .n = n, .pipelined = pipelined};
    b.jobs = calloc((size_t)n, sizeof *b.jobs);
    double t0 = now_s();
    bench_launch(&b);
    run_until(fx, &b.all_done, 600);
    double rate = n / (now_s() - t0);
    assert_int_equal(b.failed, 0);
    free(b.jobs);
    return rate;
}

static void test_postings_per_second(void **state)
{
    fx_t *fx = *state;
    int n = 5000;
    double wait = bench_run(fx, n, 0);
    double pipe = bench_run(fx, n, 1);
    printf("ledger throughput (%d connections, %d in flight, 3-leg postings each in its own "
           "transaction): %.0f postings/s committing after the answer, %.0f postings/s with "
           "COMMIT pipelined behind the posting\n",
           POOL, PROP_WINDOW, wait, pipe);
    fflush(stdout);
    assert_int_equal(sql_int(fx, "SELECT count(*) FROM ledger_txns"), 2 * n);
    assert_invariants_in_sql(fx);
}

/* ---------- hot accounts (0040_hot_accounts.sql) ---------- */

static void test_credits_to_a_hot_account_do_not_wait_for_each_other(void **state)
{
    fx_t *fx = *state;
    pc_ledger_leg_t topup[] = {{"channel:sim:clearing:CNY", -1001, "CNY"},
                               {"buyer:u1:wallet:CNY", 500, "CNY"},
                               {"buyer:u2:wallet:CNY", 500, "CNY"},
                               {"merchant:m1:pending:CNY", 1, "CNY"}};
    /* The merchant's account exists (opening one is a one-time wait). */
    assert_int_equal(post_sync(fx, "RECHARGE", "R1", topup, 4, NULL), 0);
    PGconn *a = PQconnectdb(fx->url), *b = PQconnectdb(fx->url);
    assert_int_equal(PQstatus(a), CONNECTION_OK);
    assert_int_equal(PQstatus(b), CONNECTION_OK);
    /* Two payments to one merchant, the first still open: before, the second
     * waited for the first's row lock on the merchant's pending account. */
    PQclear(PQexec(a, "BEGIN"));
    PGresult *r = PQexec(a, "SELECT 1");
    PQclear(r);
    r = PQexec(a, "SELECT ledger_post('TRADE_PAY', 'test', 'P1', NULL, "
                  "ARRAY['buyer:u1:wallet:CNY', 'merchant:m1:pending:CNY'], "
                  "ARRAY['BUYER_WALLET', 'MERCHANT_PENDING'], ARRAY['u1', 'm1'], "
                  "ARRAY['CNY', 'CNY'], ARRAY[false, false], "
                  "ARRAY['buyer:u1:wallet:CNY', 'merchant:m1:pending:CNY'], "
                  "ARRAY[-100, 100]::bigint[], ARRAY['CNY', 'CNY'])");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    PQclear(r);
    PQclear(PQexec(b, "SET statement_timeout = '2s'"));
    double t0 = now_s();
    r = PQexec(b, "SELECT ledger_post('TRADE_PAY', 'test', 'P2', NULL, "
                  "ARRAY['buyer:u2:wallet:CNY', 'merchant:m1:pending:CNY'], "
                  "ARRAY['BUYER_WALLET', 'MERCHANT_PENDING'], ARRAY['u2', 'm1'], "
                  "ARRAY['CNY', 'CNY'], ARRAY[false, false], "
                  "ARRAY['buyer:u2:wallet:CNY', 'merchant:m1:pending:CNY'], "
                  "ARRAY[-200, 200]::bigint[], ARRAY['CNY', 'CNY'])");
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("the second payment waited for the first: %s", PQresultErrorMessage(r));
    PQclear(r);
    assert_true(now_s() - t0 < 1.0);
    PQclear(PQexec(a, "COMMIT"));
    assert_int_equal(balance_of(fx, "merchant:m1:pending:CNY"), 301);
    /* A buyer's wallet is not hot: debits of it still lock and check. */
    assert_int_equal(balance_of(fx, "buyer:u1:wallet:CNY"), 400);
    PQfinish(a);
    PQfinish(b);
    assert_invariants_in_sql(fx);
}

/* The deadlock scripts/bench found (0041_ledger_lock_strength.sql): the fold
 * job (or a refund) holds a hot account locked while a posting that has
 * locked another account writes entries against the first one. The entries'
 * foreign key must not wait for that lock, or the two wait for each other. */
static void test_entries_for_a_locked_account_do_not_wait_for_its_lock(void **state)
{
    fx_t *fx = *state;
    pc_ledger_leg_t pay[] = {{"channel:sim:clearing:CNY", -1000, "CNY"},
                             {"merchant:m1:pending:CNY", 900, "CNY"},
                             {"platform:fee_income:CNY", 100, "CNY"}};
    assert_int_equal(post_sync(fx, "TRADE_PAY", "P1", pay, 3, NULL), 0);
    PGconn *a = PQconnectdb(fx->url), *b = PQconnectdb(fx->url);
    assert_int_equal(PQstatus(a), CONNECTION_OK);
    assert_int_equal(PQstatus(b), CONNECTION_OK);
    /* a: the fold job's lock on the platform account, held. */
    PQclear(PQexec(a, "BEGIN"));
    PGresult *r = PQexec(a, "SELECT * FROM ledger_lock_accounts(ARRAY['platform:fee_income:CNY'])");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    PQclear(r);
    /* b: a refund that gives the fee back — it locks the merchant's account
     * and writes an entry (a queued delta) for the platform account. */
    PQclear(PQexec(b, "SET lock_timeout = '2s'"));
    double t0 = now_s();
    r = PQexec(b, "SELECT ledger_post('REFUND', 'test', 'F1', NULL, "
                  "ARRAY['merchant:m1:pending:CNY', 'platform:fee_income:CNY', "
                  "'channel:sim:clearing:CNY'], "
                  "ARRAY['MERCHANT_PENDING', 'PLATFORM_FEE_INCOME', 'CHANNEL_CLEARING'], "
                  "ARRAY['m1', 'platform', 'sim'], ARRAY['CNY', 'CNY', 'CNY'], "
                  "ARRAY[false, true, true], "
                  "ARRAY['merchant:m1:pending:CNY', 'platform:fee_income:CNY', "
                  "'channel:sim:clearing:CNY'], "
                  "ARRAY[-90, -10, 100]::bigint[], ARRAY['CNY', 'CNY', 'CNY'])");
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("the posting waited for the lock on the platform account: %s",
                 PQresultErrorMessage(r));
    PQclear(r);
    assert_true(now_s() - t0 < 1.0);
    /* Two lockers of one account still exclude each other. */
    r = PQexec(b, "SELECT * FROM ledger_lock_accounts(ARRAY['platform:fee_income:CNY'])");
    assert_int_equal(PQresultStatus(r), PGRES_FATAL_ERROR);
    assert_string_equal(PQresultErrorField(r, PG_DIAG_SQLSTATE), "55P03");
    PQclear(r);
    PQclear(PQexec(a, "COMMIT"));
    assert_int_equal(balance_of(fx, "merchant:m1:pending:CNY"), 810);
    assert_int_equal(balance_of(fx, "platform:fee_income:CNY"), 90);
    PQfinish(a);
    PQfinish(b);
    assert_invariants_in_sql(fx);
}

/* The ledger functions find accounts and queued deltas by key, however few
 * rows the tables hold when a connection makes its generic plans. On a young
 * database the planner preferred a sequential scan of ledger_accounts and
 * kept it while the table filled with row versions; under paybench that was
 * over a thousand rows read per posting. */
static void test_postings_reach_accounts_by_key_only(void **state)
{
    fx_t *fx = *state;
    pc_ledger_leg_t fund[] = {{"channel:sim:clearing:CNY", -5000, "CNY"},
                              {"buyer:u1:wallet:CNY", 5000, "CNY"}};
    assert_int_equal(post_sync(fx, "RECHARGE", "R1", fund, 2, NULL), 0);
    PGconn *c = PQconnectdb(fx->url);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PQclear(PQexec(c, "BEGIN"));
    /* A balance payment (the buyer's wallet in place, the merchant's pending
     * account queued) twice, so that the cached plans serve; then a debit of
     * the hot account, which folds its queue first. */
    char steps[4][1024];
    for (int i = 0; i < 2; i++)
        snprintf(steps[i], sizeof steps[i],
                 "SELECT ledger_post('TRADE_PAY', 'test', 'P%d', NULL, "
                 "ARRAY['buyer:u1:wallet:CNY', 'merchant:m1:pending:CNY'], "
                 "ARRAY['BUYER_WALLET', 'MERCHANT_PENDING'], ARRAY['u1', 'm1'], "
                 "ARRAY['CNY', 'CNY'], ARRAY[false, false], "
                 "ARRAY['buyer:u1:wallet:CNY', 'merchant:m1:pending:CNY'], "
                 "ARRAY[-100, 100]::bigint[], ARRAY['CNY', 'CNY'])",
                 i + 1);
    snprintf(steps[2], sizeof steps[2], "%s",
             "SELECT * FROM ledger_lock_accounts(ARRAY['merchant:m1:pending:CNY', "
             "'buyer:u1:wallet:CNY'])");
    snprintf(steps[3], sizeof steps[3], "%s",
             "SELECT ledger_fold_locked(ARRAY['merchant:m1:pending:CNY'])");
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        PGresult *r = PQexec(c, steps[i]);
        if (PQresultStatus(r) != PGRES_TUPLES_OK)
            fail_msg("%s: %s", steps[i], PQresultErrorMessage(r));
        PQclear(r);
    }
    PGresult *r = PQexec(c, "SELECT coalesce(sum(seq_scan), 0) FROM pg_stat_xact_user_tables "
                            "WHERE relname IN ('ledger_accounts', 'ledger_balance_deltas')");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    if (strcmp(PQgetvalue(r, 0, 0), "0") != 0)
        fail_msg("the ledger functions scanned whole tables %s times", PQgetvalue(r, 0, 0));
    PQclear(r);
    PQclear(PQexec(c, "COMMIT"));
    PQfinish(c);
    assert_int_equal(balance_of(fx, "buyer:u1:wallet:CNY"), 4800);
    assert_int_equal(balance_of(fx, "merchant:m1:pending:CNY"), 200);
    assert_invariants_in_sql(fx);
}

static void test_a_debit_of_a_hot_account_sees_its_queued_credits(void **state)
{
    fx_t *fx = *state;
    pc_ledger_leg_t pay[] = {{"channel:sim:clearing:CNY", -100, "CNY"},
                             {"merchant:m1:pending:CNY", 100, "CNY"}};
    assert_int_equal(post_sync(fx, "TRADE_PAY", "P1", pay, 2, NULL), 0);
    assert_int_equal(post_sync(fx, "TRADE_PAY", "P1", pay, 2, NULL), PC_LEDGER_DUPLICATE);
    pc_ledger_leg_t pay2[] = {{"channel:sim:clearing:CNY", -50, "CNY"},
                              {"merchant:m1:pending:CNY", 50, "CNY"}};
    assert_int_equal(post_sync(fx, "TRADE_PAY", "P3", pay2, 2, NULL), 0);
    assert_int_equal(sql_int(fx, "SELECT balance FROM ledger_accounts WHERE account_id = "
                                 "'merchant:m1:pending:CNY'"),
                     0);
    /* A refund of 120 from the pending money: more than the row says, less
     * than the account holds with its queued credits. */
    pc_ledger_leg_t refund[] = {{"merchant:m1:pending:CNY", -120, "CNY"},
                                {"channel:sim:clearing:CNY", 120, "CNY"}};
    assert_int_equal(post_sync(fx, "REFUND", "F1", refund, 2, NULL), 0);
    assert_int_equal(sql_int(fx, "SELECT balance FROM ledger_accounts WHERE account_id = "
                                 "'merchant:m1:pending:CNY'"),
                     30);
    assert_int_equal(sql_int(fx, "SELECT count(*) FROM ledger_balance_deltas WHERE account_id = "
                                 "'merchant:m1:pending:CNY'"),
                     0);
    /* And one beyond what it holds is refused, queued credits or not. */
    assert_int_equal(post_sync(fx, "TRADE_PAY", "P4", pay2, 2, NULL), 0);
    pc_ledger_leg_t too_much[] = {{"merchant:m1:pending:CNY", -81, "CNY"},
                                  {"channel:sim:clearing:CNY", 81, "CNY"}};
    assert_int_equal(post_sync(fx, "REFUND", "F2", too_much, 2, NULL), PC_LEDGER_INSUFFICIENT);
    assert_int_equal(balance_of(fx, "merchant:m1:pending:CNY"), 80);
    /* Locking readers get the exact balance too. */
    assert_int_equal(sql_int(fx, "SELECT balance FROM ledger_lock_accounts("
                                 "ARRAY['merchant:m1:pending:CNY'])"),
                     80);
    /* Whoever writes: a queued debit of customer money is refused. */
    assert_string_equal(sql_refused(fx, "INSERT INTO ledger_balance_deltas (account_id, amount, "
                                        "txn_id) VALUES ('merchant:m1:pending:CNY', -1, 1)"),
                        "23514");
    assert_string_equal(sql_refused(fx, "INSERT INTO ledger_balance_deltas (account_id, amount, "
                                        "txn_id) VALUES ('buyer:u1:wallet:CNY', 1, 1)"),
                        "23514");
    assert_invariants_in_sql(fx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_posting_moves_balances_and_records_entries, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_overdraft_is_refused_and_nothing_of_it_remains, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_same_business_event_is_posted_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_migration_out_of_order_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_migration_waiting_for_a_lock_does_not_stall_the_table, setup, teardown),
        cmocka_unit_test_setup_teardown(test_credits_to_a_hot_account_do_not_wait_for_each_other,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_entries_for_a_locked_account_do_not_wait_for_its_lock,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_postings_reach_accounts_by_key_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_debit_of_a_hot_account_sees_its_queued_credits,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_balance_in_the_transaction_sees_its_own_posting, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_open_account_is_idempotent_and_checks_shape, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_database_refuses_what_c_would, setup, teardown),
        cmocka_unit_test_setup_teardown(test_balance_beyond_int64_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_reports_a_broken_invariant, setup, teardown),
        cmocka_unit_test_setup_teardown(test_10000_random_concurrent_postings_keep_every_invariant,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_postings_per_second, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
