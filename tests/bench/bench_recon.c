/* Reconciliation benchmark: one business day of one channel with N payments
 * (default 1,000,000) and their statement of N lines, matched by the real
 * matcher (src/recon/recon_match.c: CSV read, load through column arrays,
 * set-based matching in PostgreSQL, differences upserted), timed from the
 * call to the commit. A second run of the same day (a re-run) is timed too.
 *
 * The statement carries planted differences, a few of each kind, and the
 * benchmark fails (exit 1) unless exactly those are found: a fast wrong
 * matcher does not pass.
 *
 * Usage: bench_recon [--lines N] [--keep]
 *   PC_BENCH_PG_URL  PostgreSQL server (default
 *                    postgresql://paycore@127.0.0.1:5432/postgres); the
 *                    benchmark creates (and with --keep, reuses) the database
 *                    "paycore_bench_recon" there.
 * Setting up the payments takes longer than matching them; with --keep a
 * database already holding N payments is reused (its recon tables are
 * emptied first). */
#include <libpq-fe.h>
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "core/log.h"
#include "recon/recon_match.h"
#include "store/migrate.h"

#define CHANNEL "sim_bench"
#define DATE "2026-11-20"
#define FEE_BP 60
#define PLANT_EVERY 100000 /* one of each planted difference per this many lines */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench_recon: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static PGresult *sql(PGconn *c, const char *q)
{
    PGresult *r = PQexec(c, q);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        die("%s\n  in: %.200s", PQerrorMessage(c), q);
    return r;
}

static void exec(PGconn *c, const char *q)
{
    PQclear(sql(c, q));
}

static long long sql_int(PGconn *c, const char *q)
{
    PGresult *r = sql(c, q);
    long long v = PQntuples(r) ? atoll(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return v;
}

/* The planted differences, by i % PLANT_EVERY (i from 1). */
enum { P_MISSING = 11, P_AMOUNT, P_FEE, P_STATUS, P_CURRENCY, P_PENDING, P_DUP, P_EXTRA };

static long long fee_of(long long amount)
{
    return (amount * FEE_BP + 5000) / 10000;
}

static long long amount_of(long long i)
{
    return 1000 + i % 50000;
}

static void setup_payments(PGconn *c, long long n)
{
    char q[2048];
    printf("setting up %lld payments (not timed)...\n", n);
    fflush(stdout);
    exec(c, "INSERT INTO merchants (merchant_id, name, sign_type, secret) VALUES ('m_bench', "
            "'bench', 'HMAC-SHA256', 'x') ON CONFLICT DO NOTHING");
    snprintf(q, sizeof q,
             "INSERT INTO trades (trade_no, merchant_id, out_trade_no, product, status, amount, "
             "currency, paid_amount, subject, created_at, expires_at) SELECT 'TB' || g, "
             "'m_bench', 'OB' || g, 'INSTANT', 'TRADE_SUCCESS', 1000 + g %% 50000, 'CNY', 1000 + "
             "g %% 50000, 'bench', '%sT00:00:00Z', '%sT23:00:00Z' FROM generate_series(1, %lld) g",
             DATE, DATE, n);
    exec(c, q);
    /* Payments finish through the day; the planted "pending" ones are still
     * in flight here (a lost callback). */
    snprintf(q, sizeof q,
             "INSERT INTO payments (payment_no, trade_no, merchant_id, status, amount, currency, "
             "method_type, external_amount, channel_id, channel_txn_id, created_at, finished_at) "
             "SELECT 'PB' || g, 'TB' || g, 'm_bench', CASE WHEN g %% %d = %d THEN 'PROCESSING' "
             "ELSE 'SUCCESS' END, 1000 + g %% 50000, 'CNY', 'CARD', 1000 + g %% 50000, '%s', "
             "'pay_b' || g, '%sT00:00:00Z'::timestamptz + (g %% 86000) * interval '1 second', "
             "CASE WHEN g %% %d = %d THEN NULL ELSE '%sT00:00:00Z'::timestamptz + (g %% 86000) * "
             "interval '1 second' + interval '200 ms' END FROM generate_series(1, %lld) g",
             PLANT_EVERY, P_PENDING, CHANNEL, DATE, PLANT_EVERY, P_PENDING, DATE, n);
    exec(c, q);
    exec(c, "ANALYZE trades");
    exec(c, "ANALYZE payments");
    snprintf(q, sizeof q,
             "CREATE TABLE IF NOT EXISTS bench_marker (n bigint); TRUNCATE "
             "bench_marker; INSERT INTO bench_marker VALUES (%lld)",
             n);
    exec(c, q);
}

/* The channel's statement for the day, with the planted differences. */
static char *statement(long long n, size_t *len)
{
    size_t cap = (size_t)n * 96 + 4096;
    char *s = malloc(cap);
    if (!s)
        die("out of memory");
    size_t l = (size_t)snprintf(s, cap,
                                "channel_ref,paycore_ref,type,amount,currency,fee,status,"
                                "time\n");
    for (long long i = 1; i <= n; i++) {
        int p = (int)(i % PLANT_EVERY);
        if (p == P_MISSING)
            continue;
        long long amount = amount_of(i), fee = fee_of(amount);
        const char *status = "SUCCESS", *cur = "CNY";
        if (p == P_AMOUNT)
            amount -= 1;
        else if (p == P_FEE)
            fee += 1;
        else if (p == P_STATUS)
            status = "FAILED", fee = 0;
        else if (p == P_CURRENCY)
            cur = "USD";
        long long t = 1795132800LL + i % 86000; /* 2026-11-20T00:00:00Z + … */
        time_t tt = (time_t)t;
        struct tm tm;
        gmtime_r(&tt, &tm);
        char ts[32];
        strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
        int reps = p == P_DUP ? 2 : 1;
        for (int r = 0; r < reps; r++)
            l += (size_t)snprintf(s + l, cap - l, "pay_b%lld,PB%lld,PAY,%lld,%s,%lld,%s,%s\n", i, i,
                                  amount, cur, fee, status, ts);
        if (p == P_EXTRA)
            l += (size_t)snprintf(s + l, cap - l,
                                  "pay_x%lld,SIMEXTRA%lld,PAY,777,CNY,5,SUCCESS,%s\n", i, i, ts);
    }
    *len = l;
    return s;
}

typedef struct {
    int done, status;
    pc_recon_match_result_t res;
} outcome_t;

static void matched_cb(void *data, int status, const pc_recon_match_result_t *res)
{
    outcome_t *o = data;
    o->done = 1;
    o->status = status;
    o->res = *res;
}

/* CPU seconds (user + system) of a process from /proc, with those of its
 * children that have ended when children is set. On a shared machine the
 * wall time mostly measures the neighbours; this does not. */
static double proc_cpu_s(long pid, int children, long *ppid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    /* After the command name (which may hold spaces): state, ppid, … utime
     * and stime are fields 14 and 15, cutime and cstime 16 and 17. */
    char *p = strrchr(buf, ')');
    long pp = 0;
    unsigned long long ut = 0, st = 0;
    long long cut = 0, cst = 0;
    if (!p || sscanf(p + 2, "%*c %ld %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %lld %lld", &pp,
                     &ut, &st, &cut, &cst) != 5)
        return 0;
    if (ppid)
        *ppid = pp;
    return (double)(ut + st + (children ? (unsigned long long)(cut + cst) : 0)) /
           (double)sysconf(_SC_CLK_TCK);
}

/* The PostgreSQL server's CPU so far: the postmaster with its ended
 * children, plus every running child. */
static double server_cpu_s(long postmaster)
{
    double sum = proc_cpu_s(postmaster, 1, NULL);
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        long pid = atol(e->d_name), pp = 0;
        if (pid <= 0 || pid == postmaster)
            continue;
        double c = proc_cpu_s(pid, 0, &pp);
        if (pp == postmaster)
            sum += c;
    }
    if (d)
        closedir(d);
    return sum;
}

static double run_once(uv_loop_t *loop, const char *url, PGconn *c, long postmaster, int attempt,
                       const char *text, size_t len, outcome_t *o)
{
    char q[256];
    snprintf(q, sizeof q,
             "UPDATE recon_runs SET attempts = %d, status = 'RUNNING', finished_at = NULL WHERE "
             "channel_id = '%s'",
             attempt, CHANNEL);
    exec(c, q);
    long long run_id = sql_int(c, "SELECT run_id FROM recon_runs WHERE channel_id = '" CHANNEL "'");
    /* As paycore runs it: recon.work_mem_mb and recon.statement_timeout_ms. */
    static const pc_recon_fee_t fees[] = {{"CNY", FEE_BP, 0}};
    pc_recon_match_opts_t opts = {.run_id = run_id,
                                  .attempt = attempt,
                                  .channel_id = CHANNEL,
                                  .date = DATE,
                                  .fees = fees,
                                  .nfees = 1,
                                  .work_mem_mb = 256,
                                  .statement_timeout_ms = 600000};
    memset(o, 0, sizeof *o);
    double pg0 = server_cpu_s(postmaster), me0 = (double)clock() / CLOCKS_PER_SEC;
    double t0 = now_s();
    if (pc_recon_match(loop, url, &opts, text, len, matched_cb, o) < 0)
        die("pc_recon_match refused to start");
    while (!o->done)
        uv_run(loop, UV_RUN_ONCE);
    double dt = now_s() - t0;
    if (o->status)
        die("match failed: %s", o->res.error);
    /* The match's server process has ended: its CPU is the postmaster's now. */
    usleep(200000);
    double pg = server_cpu_s(postmaster) - pg0, me = (double)clock() / CLOCKS_PER_SEC - me0;
    printf("attempt %d: %.2f s wall; CPU: PostgreSQL %.2f s + paycore %.2f s = %.2f s\n", attempt,
           dt, pg, me, pg + me);
    return dt;
}

static int check(const outcome_t *o, long long n, int rerun)
{
    long long planted = n / PLANT_EVERY + (n % PLANT_EVERY >= P_EXTRA ? 1 : 0);
    long long want[PC_RECON_KIND_COUNT] = {0};
    want[PC_RECON_MISSING_LOCAL] = 2 * planted; /* extra lines + the pending ones */
    want[PC_RECON_MISSING_CHANNEL] = planted;
    want[PC_RECON_AMOUNT_MISMATCH] = planted;
    want[PC_RECON_FEE_MISMATCH] = planted;
    want[PC_RECON_STATUS_MISMATCH] = planted;
    want[PC_RECON_CURRENCY_MISMATCH] = planted;
    want[PC_RECON_DUPLICATE_LINE] = planted;
    int ok = 1;
    for (int k = 0; k < PC_RECON_KIND_COUNT; k++) {
        long long added = o->res.added[k];
        printf("    %-18s found %lld (new %lld), expected %lld\n", pc_recon_kind_name(k),
               (long long)o->res.found[k], added, want[k]);
        if (o->res.found[k] != want[k] || added != (rerun ? 0 : want[k]))
            ok = 0;
    }
    long long lines = n - planted + 2 * planted; /* missing, duplicate and extra lines */
    if (o->res.lines != lines || o->res.duplicate_lines != planted || o->res.closed != 0) {
        printf("    lines %lld (expected %lld), duplicates %lld, closed %lld\n",
               (long long)o->res.lines, lines, (long long)o->res.duplicate_lines,
               (long long)o->res.closed);
        ok = 0;
    }
    return ok;
}

int main(int argc, char **argv)
{
    long long n = 1000000;
    int keep = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--lines") && i + 1 < argc)
            n = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--keep"))
            keep = 1;
        else
            die("usage: bench_recon [--lines N] [--keep]");
    }
    if (n < PLANT_EVERY)
        die("--lines must be at least %d", PLANT_EVERY);
    pc_log_set_level(PC_LOG_WARN);
    const char *server = getenv("PC_BENCH_PG_URL");
    if (!server || !server[0])
        server = "postgresql://paycore@127.0.0.1:5432/postgres";
    PGconn *admin = PQconnectdb(server);
    if (PQstatus(admin) != CONNECTION_OK)
        die("%s: %s", server, PQerrorMessage(admin));
    char url[1024];
    snprintf(url, sizeof url, "%s", server);
    char *slash = strrchr(url, '/');
    if (!slash || slash < url + 14)
        die("PC_BENCH_PG_URL must end in /<database>");
    snprintf(slash + 1, sizeof url - (size_t)(slash + 1 - url), "paycore_bench_recon");

    int exists = sql_int(admin, "SELECT count(*) FROM pg_database WHERE datname = "
                                "'paycore_bench_recon'") == 1;
    if (exists && !keep) {
        exec(admin, "DROP DATABASE paycore_bench_recon");
        exists = 0;
    }
    if (!exists)
        exec(admin, "CREATE DATABASE paycore_bench_recon");
    PQfinish(admin);
    char err[512];
    if (pc_migrate(url, 10, err, sizeof err) < 0)
        die("migrate: %s", err);
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK)
        die("%s", PQerrorMessage(c));
    PQclear(PQexec(c, "SET client_min_messages = warning"));
    long long have = 0;
    if (sql_int(c, "SELECT count(*) FROM pg_class WHERE relname = 'bench_marker'") > 0)
        have = sql_int(c, "SELECT coalesce(max(n), 0) FROM bench_marker");
    if (have != n) {
        if (have)
            die("database paycore_bench_recon holds %lld payments; drop it or run without --keep",
                have);
        setup_payments(c, n);
    }
    exec(c, "DELETE FROM recon_carried; DELETE FROM recon_diffs; DELETE FROM recon_runs");
    exec(c, "INSERT INTO recon_runs (channel_id, business_date, status, source) VALUES ('" CHANNEL
            "', '" DATE "', 'RUNNING', 'UPLOAD')");

    size_t len;
    char *text = statement(n, &len);
    printf("statement: %.1f MB\n", (double)len / 1e6);

    uv_loop_t *loop = uv_default_loop();
    long postmaster = 0;
    proc_cpu_s(sql_int(c, "SELECT pg_backend_pid()"), 0, &postmaster);

    outcome_t o;
    double first = run_once(loop, url, c, postmaster, 1, text, len, &o);
    printf("first run:  %lld lines matched in %.2f s (%.0f lines/s)\n", (long long)o.res.lines,
           first, (double)o.res.lines / first);
    int ok = check(&o, n, 0);
    double again = run_once(loop, url, c, postmaster, 2, text, len, &o);
    printf("re-run:     %lld lines matched in %.2f s, nothing duplicated\n", (long long)o.res.lines,
           again);
    ok &= check(&o, n, 1);
    long long rows = sql_int(c, "SELECT count(*) FROM recon_diffs");
    long long to_repair = sql_int(c, "SELECT count(*) FROM recon_diffs WHERE repair = 'PAYMENT'");
    printf("recon_diffs rows: %lld; flagged for automatic repair: %lld\n", rows, to_repair);
    if (to_repair != n / PLANT_EVERY)
        ok = 0;

    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    PQfinish(c);
    free(text);
    printf("%s\n", ok ? "OK: every planted difference found, nothing else"
                      : "FAILED: the differences found are not the planted ones");
    return ok ? 0 : 1;
}
