#include "harness.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ADMIN_TOKEN PC_T_ADMIN_TOKEN

static pc_stack_t *g_stacks[8];
static int g_nstacks;

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "harness: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

const char *pc_t_source_dir(void)
{
    const char *d = getenv("PC_SOURCE_DIR");
    return d ? d : ".";
}

const char *pc_t_binary_dir(void)
{
    const char *d = getenv("PC_BINARY_DIR");
    return d ? d : ".";
}

int pc_t_sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* Ports handed out by pc_t_free_port in this process. The kernel may give
 * a port it has just released to the next bind(0), and paycore and paysim
 * both listen with SO_REUSEPORT, so a stack's API port once went to its
 * paysim as well: both listened on it and the kernel shared the test's
 * requests between them (404 "no such path" from paysim in CI). */
static int g_ports[512];
static size_t g_nports;
static pthread_mutex_t g_ports_lock = PTHREAD_MUTEX_INITIALIZER;

static int port_given(int port)
{
    for (size_t i = 0; i < g_nports; i++)
        if (g_ports[i] == port)
            return 1;
    return 0;
}

/* A port from bind(0) that this process was not given before. hold: the
 * probe socket stays bound, with SO_REUSEPORT, for the life of the process
 * (see pc_t_reserve_port); otherwise it is closed. */
static int probe_port(int hold)
{
    pthread_mutex_lock(&g_ports_lock);
    for (int tries = 0; tries < 100; tries++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        if (hold && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
            die("SO_REUSEPORT: %s", strerror(errno));
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0)
            die("bind: %s", strerror(errno));
        socklen_t l = sizeof a;
        getsockname(fd, (struct sockaddr *)&a, &l);
        int port = ntohs(a.sin_port);
        if (!hold || port_given(port))
            close(fd);
        if (port_given(port))
            continue;
        if (g_nports < sizeof g_ports / sizeof g_ports[0])
            g_ports[g_nports++] = port;
        pthread_mutex_unlock(&g_ports_lock);
        return port;
    }
    die("no free port that was not handed out before");
    return -1;
}

int pc_t_free_port(void)
{
    return probe_port(0);
}

int pc_t_reserve_port(void)
{
    return probe_port(1);
}

static PGconn *admin_pg(void)
{
    const char *url = getenv("PC_TEST_PG_URL");
    if (!url)
        die("PC_TEST_PG_URL is not set: run the tests through scripts/test");
    PGconn *pg = PQconnectdb(url);
    if (PQstatus(pg) != CONNECTION_OK)
        die("cannot connect to %s: %s", url, PQerrorMessage(pg));
    return pg;
}

static void exec_admin(const char *sql)
{
    PGconn *pg = admin_pg();
    PGresult *r = PQexec(pg, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        die("%s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(pg);
}

static void cleanup_all(void)
{
    for (int i = 0; i < g_nstacks; i++)
        if (g_stacks[i])
            pc_stack_stop(g_stacks[i]);
}

void pc_stack_init(pc_stack_t *s, const char *name)
{
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "t_%s", name);
    char sql[256];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", s->name);
    exec_admin(sql);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", s->name);
    exec_admin(sql);
    const char *base = getenv("PC_TEST_PG_URL");
    /* Replace the database name at the end of the URL. */
    const char *slash = strrchr(base, '/');
    snprintf(s->db_url, sizeof s->db_url, "%.*s/%s", (int)(slash - base), base, s->name);
    const char *redis = getenv("PC_TEST_REDIS_URL");
    if (!redis)
        die("PC_TEST_REDIS_URL is not set: run the tests through scripts/test");
    snprintf(s->redis_url, sizeof s->redis_url, "%s", redis);
    snprintf(s->redis_prefix, sizeof s->redis_prefix, "%s_%d:", s->name, (int)getpid());
    s->http_port = pc_t_reserve_port();
    snprintf(s->log_dir, sizeof s->log_dir, "%s/test-logs", pc_t_binary_dir());
    mkdir(s->log_dir, 0755);
    if (g_nstacks == 0)
        atexit(cleanup_all);
    if (g_nstacks < 8)
        g_stacks[g_nstacks++] = s;
}

void pc_stack_env(pc_stack_t *s, const char *name, const char *value)
{
    if (s->nextra == 16)
        die("too many env settings");
    snprintf(s->extra_env[s->nextra++], sizeof s->extra_env[0], "%s=%s", name, value);
}

static int port_answers(int port, const char *path)
{
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    pc_t_resp_t r = pc_t_http("GET", url, NULL, NULL);
    int ok = r.status == 200;
    pc_t_resp_free(&r);
    return ok;
}

void pc_stack_start_node(pc_stack_t *s, int i)
{
    if (i >= PC_T_MAX_NODES)
        die("node index");
    if (!s->admin_port[i])
        s->admin_port[i] = pc_t_reserve_port();
    char log[768];
    snprintf(log, sizeof log, "%s/%s-node%d.log", s->log_dir, s->name, i);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        /* The node dies with the test, whatever way the test ends. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        char buf[128];
        setenv("PAYCORE_DATABASE_URL", s->db_url, 1);
        setenv("PAYCORE_REDIS_URL", s->redis_url, 1);
        setenv("PAYCORE_REDIS_PREFIX", s->redis_prefix, 1);
        snprintf(buf, sizeof buf, "%d", s->http_port);
        setenv("PAYCORE_HTTP_PORT", buf, 1);
        snprintf(buf, sizeof buf, "%d", s->admin_port[i]);
        setenv("PAYCORE_ADMIN_PORT", buf, 1);
        setenv("PAYCORE_ADMIN_TOKEN", ADMIN_TOKEN, 1);
        snprintf(buf, sizeof buf, "%s-node%d", s->name, i);
        setenv("PAYCORE_NODE_NAME", buf, 1);
        setenv("PAYCORE_ACCESS_LOG", "false", 0);
        /* The demo channel secrets paysim signs with, and readable challenge
         * codes; a test of production settings passes PAYCORE_DEMO=false. */
        setenv("PAYCORE_DEMO", "true", 0);
        /* The daily ledger check reads every table at a time of its own:
         * on only where a test asks for it. */
        setenv("PAYCORE_LEDGER_CHECK_DAILY", "false", 0);
        /* So does the daily chargeback import (yesterday's files). */
        setenv("PAYCORE_CHARGEBACK_DAILY_IMPORT", "false", 0);
        /* Test receivers listen on loopback. */
        setenv("PAYCORE_NOTIFY_PRIVATE_TARGETS", "true", 0);
        char rules[600], channels[600];
        snprintf(rules, sizeof rules, "%s/rules", pc_t_source_dir());
        snprintf(channels, sizeof channels, "%s/channels", pc_t_source_dir());
        setenv("PAYCORE_RULES_DIR", rules, 0);
        setenv("PAYCORE_CHANNELS_DIR", channels, 0);
        char bins[640];
        snprintf(bins, sizeof bins, "%s/config/card_bins.csv", pc_t_source_dir());
        setenv("PAYCORE_CARD_BIN_FILE", bins, 0);
        for (int k = 0; k < s->nextra; k++)
            putenv(s->extra_env[k]);
        char bin[600];
        snprintf(bin, sizeof bin, "%s/paycore", pc_t_binary_dir());
        execl(bin, "paycore", (char *)NULL);
        _exit(127);
    }
    s->pids[i] = pid;
    if (i >= s->nnodes)
        s->nnodes = i + 1;
    for (int tries = 0; tries < 300; tries++) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            s->pids[i] = 0;
            pc_t_sh("tail -n 20 %s >&2", log);
            die("paycore node %d exited during start (see %s)", i, log);
        }
        if (port_answers(s->admin_port[i], "/healthz") || port_answers(s->http_port, "/healthz")) {
            /* /healthz is on the API listener; wait for this node's admin port too. */
            char url[256];
            snprintf(url, sizeof url, "http://127.0.0.1:%d/admin/none", s->admin_port[i]);
            pc_t_resp_t r = pc_t_http("GET", url, NULL, NULL);
            long st2 = r.status;
            pc_t_resp_free(&r);
            if (st2 != 0) {
                /* Up; wait (a while, not forever: some tests start nodes with a
                 * dependency down on purpose) until PostgreSQL and Redis are
                 * connected, so the first calls of a test do not race them.
                 * On this node's admin port: the API port is shared, and
                 * another node answered there while this one had no database
                 * connection yet (a ledger check then failed with 503). */
                snprintf(url, sizeof url, "http://127.0.0.1:%d/readyz", s->admin_port[i]);
                for (int k = 0; k < 100; k++) {
                    pc_t_resp_t rr = pc_t_http("GET", url, NULL, NULL);
                    long st3 = rr.status;
                    pc_t_resp_free(&rr);
                    if (st3 == 200)
                        break;
                    usleep(50000);
                }
                return;
            }
        }
        usleep(50000);
    }
    die("paycore node %d did not come up (see %s)", i, log);
}

int pc_stack_stop_node(pc_stack_t *s, int i, int sig)
{
    if (!s->pids[i])
        return -1;
    kill(s->pids[i], sig);
    int st = 0;
    for (int tries = 0; tries < 400; tries++) {
        if (waitpid(s->pids[i], &st, WNOHANG) == s->pids[i]) {
            s->pids[i] = 0;
            return st;
        }
        usleep(50000);
    }
    kill(s->pids[i], SIGKILL);
    waitpid(s->pids[i], &st, 0);
    s->pids[i] = 0;
    return st;
}

void pc_stack_start_paysim(pc_stack_t *s)
{
    s->paysim_port = pc_t_reserve_port();
    char port[16], cb[128], log[768];
    snprintf(port, sizeof port, "%d", s->paysim_port);
    snprintf(cb, sizeof cb, "http://127.0.0.1:%d", s->http_port);
    snprintf(log, sizeof log, "%s/%s-paysim.log", s->log_dir, s->name);
    pc_stack_env(s, "PAYSIM_PORT", port);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        char bin[600];
        snprintf(bin, sizeof bin, "%s/paysim", pc_t_binary_dir());
        execl(bin, "paysim", "--port", port, "--seed", "7", "--callback-base", cb,
              "--callback-retry-ms", "200", (char *)NULL);
        _exit(127);
    }
    s->paysim_pid = pid;
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/sim/faults?channel_id=sim_card", s->paysim_port);
    for (int i = 0; i < 200; i++) {
        pc_t_resp_t r = pc_t_http("GET", url, NULL, NULL);
        long st = r.status;
        pc_t_resp_free(&r);
        if (st == 200)
            return;
        usleep(25000);
    }
    die("paysim did not come up (see %s)", log);
}

pc_t_resp_t pc_t_sim(pc_stack_t *s, const char *method, const char *path, const char *body)
{
    char url[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", s->paysim_port, path);
    return pc_t_http(method, url, NULL, body);
}

void pc_stack_stop(pc_stack_t *s)
{
    if (s->paysim_pid) {
        kill(s->paysim_pid, SIGTERM);
        waitpid(s->paysim_pid, NULL, 0);
        s->paysim_pid = 0;
    }
    for (int i = 0; i < s->nnodes; i++)
        if (s->pids[i])
            pc_stack_stop_node(s, i, SIGTERM);
    for (int i = 0; i < g_nstacks; i++)
        if (g_stacks[i] == s)
            g_stacks[i] = NULL;
    if (s->name[0] && !getenv("PC_TEST_KEEP_DB")) {
        char sql[256];
        snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", s->name);
        exec_admin(sql);
    }
    s->name[0] = 0;
}

/* ---------- HTTP ---------- */

typedef struct {
    char *p;
    size_t len;
} growbuf_t;

static size_t collect(char *data, size_t sz, size_t n, void *ud)
{
    growbuf_t *b = ud;
    size_t add = sz * n;
    b->p = realloc(b->p, b->len + add + 1);
    memcpy(b->p + b->len, data, add);
    b->len += add;
    b->p[b->len] = 0;
    return add;
}

pc_t_resp_t pc_t_http(const char *method, const char *url, const char *const *headers,
                      const char *body)
{
    pc_t_resp_t r = {0};
    CURL *c = curl_easy_init();
    growbuf_t b = {0}, h = {0};
    struct curl_slist *hl = NULL;
    for (int i = 0; headers && headers[i]; i++)
        hl = curl_slist_append(hl, headers[i]);
    hl = curl_slist_append(hl, "Expect:");
    if (body)
        hl = curl_slist_append(hl, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 30000L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    } else if (!strcmp(method, "POST")) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
    }
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &h);
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    curl_easy_getinfo(c, CURLINFO_TOTAL_TIME, &r.seconds);
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    r.body = b.p ? b.p : strdup("");
    r.len = b.len;
    r.headers = h.p ? h.p : strdup("");
    return r;
}

void pc_t_resp_free(pc_t_resp_t *r)
{
    free(r->body);
    free(r->headers);
    r->body = r->headers = NULL;
}

json_t *pc_t_json(const pc_t_resp_t *r)
{
    return json_loadb(r->body, r->len, 0, NULL);
}

const char *pc_t_header(const pc_t_resp_t *r, const char *name)
{
    static _Thread_local char val[512];
    size_t nl = strlen(name);
    for (const char *line = r->headers; line && *line;) {
        const char *eol = strstr(line, "\r\n");
        size_t ll = eol ? (size_t)(eol - line) : strlen(line);
        if (ll > nl + 1 && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ')
                v++;
            snprintf(val, sizeof val, "%.*s", (int)(ll - (size_t)(v - line)), v);
            return val;
        }
        line = eol ? eol + 2 : NULL;
    }
    return NULL;
}

pc_t_resp_t pc_t_admin_node(pc_stack_t *s, int i, const char *method, const char *path,
                            const char *body)
{
    char url[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", s->admin_port[i], path);
    const char *h[] = {"Authorization: Bearer " ADMIN_TOKEN, NULL};
    return pc_t_http(method, url, h, body);
}

pc_t_resp_t pc_t_admin(pc_stack_t *s, const char *method, const char *path, const char *body)
{
    return pc_t_admin_node(s, 0, method, path, body);
}

pc_t_resp_t pc_t_admin_as(pc_stack_t *s, const char *operator, const char * method,
                          const char *path, const char *body)
{
    char url[512], who[96];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", s->admin_port[0], path);
    snprintf(who, sizeof who, "X-Operator: %s", operator);
    const char *h[] = {"Authorization: Bearer " ADMIN_TOKEN, who, NULL};
    return pc_t_http(method, url, h, body);
}

/* ---------- raw sockets ---------- */

int pc_t_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
        die("connect %d: %s", port, strerror(errno));
    return fd;
}

size_t pc_t_read_all(int fd, char *buf, size_t max, int timeout_ms)
{
    size_t got = 0;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (got + 1 < max) {
        struct timespec t1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        int left = timeout_ms -
                   (int)((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000);
        if (left <= 0)
            break;
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, left) <= 0)
            break;
        ssize_t n = read(fd, buf + got, max - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    buf[got] = 0;
    return got;
}

/* ---------- SQL ---------- */

static char *vsql(pc_stack_t *s, const char *fmt, va_list ap)
{
    char sql[8192];
    vsnprintf(sql, sizeof sql, fmt, ap);
    PGconn *pg = PQconnectdb(s->db_url);
    if (PQstatus(pg) != CONNECTION_OK)
        die("sql connect: %s", PQerrorMessage(pg));
    PGresult *r = PQexec(pg, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
        die("%s: %s", sql, PQresultErrorMessage(r));
    char *out = NULL;
    if (st == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
        out = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(pg);
    return out;
}

char *pc_t_sql(pc_stack_t *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *r = vsql(s, fmt, ap);
    va_end(ap);
    return r;
}

long long pc_t_sql_int(pc_stack_t *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *r = vsql(s, fmt, ap);
    va_end(ap);
    long long v = r ? strtoll(r, NULL, 10) : 0;
    free(r);
    return v;
}

int pc_t_sql_wait(pc_stack_t *s, const char *want, double secs, const char *fmt, ...)
{
    char sql[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        char *got = pc_t_sql(s, "%s", sql);
        int ok = got && !strcmp(got, want);
        free(got);
        if (ok)
            return 1;
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9 >= secs)
            return 0;
        usleep(50000);
    }
}

/* How many of tables (a comma-separated list) are held ACCESS EXCLUSIVE. */
#define LOCKED_OF(tables)                                                                          \
    "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = "     \
    "ANY (string_to_array(replace('" tables "', ' ', ''), ',')) AND l.mode = "                     \
    "'AccessExclusiveLock' AND l.granted"

int pc_t_lock_tables(pc_stack_t *s, const char *tables, int seconds)
{
    pc_t_sh("psql -qAt '%s' -c 'BEGIN' -c 'LOCK TABLE %s IN ACCESS EXCLUSIVE MODE' -c "
            "'SELECT pg_sleep(%d)' -c 'COMMIT' > /dev/null 2>&1 &",
            s->db_url, tables, seconds);
    char n[16];
    int commas = 0;
    for (const char *p = tables; *p; p++)
        commas += *p == ',';
    snprintf(n, sizeof n, "%d", commas + 1);
    return pc_t_sql_wait(s, n, 5, LOCKED_OF("%s"), tables);
}

int pc_t_tables_unlocked(pc_stack_t *s, const char *tables, double secs)
{
    return pc_t_sql_wait(s, "0", secs, LOCKED_OF("%s"), tables);
}

/* ---------- merchants and signing ---------- */

#include "auth/sign.h"

pc_t_merchant_t pc_t_create_merchant(pc_stack_t *s, const char *extra_json)
{
    pc_t_merchant_t m;
    memset(&m, 0, sizeof m);
    char body[4096];
    snprintf(body, sizeof body, "{\"name\":\"Test merchant\"%s%s}", extra_json ? "," : "",
             extra_json ? extra_json : "");
    pc_t_resp_t r = pc_t_admin(s, "POST", "/admin/merchants", body);
    for (int i = 0; i < 20 && r.status == 503; i++) {
        /* The pool may still be connecting right after a start. */
        pc_t_resp_free(&r);
        usleep(100000);
        r = pc_t_admin(s, "POST", "/admin/merchants", body);
    }
    if (r.status != 201)
        die("create merchant: %ld %s", r.status, r.body);
    snprintf(m.id, sizeof m.id, "%s", pc_t_jstr(&r, "merchant_id"));
    snprintf(m.secret, sizeof m.secret, "%s", pc_t_jstr(&r, "secret"));
    pc_t_resp_free(&r);
    return m;
}

pc_t_resp_t pc_t_call_raw(int port, const char *merchant_id, const char *secret, const char *method,
                          const char *path, const char *body, const char *idem_key,
                          long long timestamp, const char *nonce, const char *sign_path,
                          const char *sign_body)
{
    char ts[32];
    snprintf(ts, sizeof ts, "%lld", timestamp);
    const char *sb = sign_body ? sign_body : (body ? body : "");
    size_t len;
    char *tosign = pc_sign_request_string(method, sign_path ? sign_path : path, ts, nonce, sb,
                                          strlen(sb), &len);
    char *sig;
    if (strncmp(secret, "-----BEGIN", 10) == 0) {
        /* An RSA2 merchant: secret is its private key. */
        pc_rsa_key_t *k = pc_rsa_key_new_private_pem(secret, strlen(secret));
        if (!k)
            die("bad private key");
        sig = pc_rsa_sha256_sign(k, tosign, len);
        pc_rsa_key_free(k);
    } else {
        sig = pc_hmac_sha256_sign(secret, strlen(secret), tosign, len);
    }
    /* An 8192-bit key's signature is 1,368 characters of base64. */
    char h[6][1536];
    const char *hdrs[7];
    int n = 0;
    snprintf(h[n], sizeof h[n], "X-Merchant-Id: %s", merchant_id);
    hdrs[n] = h[n];
    n++;
    snprintf(h[n], sizeof h[n], "X-Timestamp: %s", ts);
    hdrs[n] = h[n];
    n++;
    snprintf(h[n], sizeof h[n], "X-Nonce: %s", nonce);
    hdrs[n] = h[n];
    n++;
    snprintf(h[n], sizeof h[n], "X-Signature: %s", sig);
    hdrs[n] = h[n];
    n++;
    if (idem_key) {
        snprintf(h[n], sizeof h[n], "Idempotency-Key: %s", idem_key);
        hdrs[n] = h[n];
        n++;
    }
    hdrs[n] = NULL;
    char url[1024];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    pc_t_resp_t r = pc_t_http(method, url, hdrs, body);
    free(tosign);
    free(sig);
    return r;
}

pc_t_resp_t pc_t_call(pc_stack_t *s, const pc_t_merchant_t *m, const char *method, const char *path,
                      const char *body, const char *idem_key)
{
    char nonce[33];
    pc_random_hex(nonce, sizeof nonce, 16);
    return pc_t_call_raw(s->http_port, m->id, m->secret, method, path, body, idem_key,
                         (long long)time(NULL), nonce, NULL, NULL);
}

const char *pc_t_jstr(const pc_t_resp_t *r, const char *key)
{
    static _Thread_local char out[1024];
    out[0] = 0;
    json_t *j = pc_t_json(r);
    json_t *v = j ? json_object_get(j, key) : NULL;
    if (json_is_string(v))
        snprintf(out, sizeof out, "%s", json_string_value(v));
    else if (json_is_integer(v))
        snprintf(out, sizeof out, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    json_decref(j);
    return out;
}

const char *pc_t_errcode(const pc_t_resp_t *r)
{
    static _Thread_local char out[64];
    out[0] = 0;
    json_t *j = pc_t_json(r);
    json_t *v = j ? json_object_get(json_object_get(j, "error"), "code") : NULL;
    if (json_is_string(v))
        snprintf(out, sizeof out, "%s", json_string_value(v));
    json_decref(j);
    return out;
}

/* ---------- internal operations ---------- */

#include "acquiring/trade_state.h"
#include "store/db.h"
#include <uv.h>

typedef struct {
    pc_db_t *db;
    const pc_trade_payment_t *pay;
    int status;
    int done;
    char trade_status[20];
    pc_db_tx_t *tx;
} mark_t;

static void mark_commit_cb(void *data, int status)
{
    mark_t *m = data;
    if (status && !m->status)
        m->status = status;
    m->done = 1;
}

static void mark_paid_cb(void *data, int status, const char *trade_status)
{
    mark_t *m = data;
    m->status = status;
    if (trade_status)
        snprintf(m->trade_status, sizeof m->trade_status, "%s", trade_status);
    if (status) {
        pc_db_tx_rollback(m->tx);
        m->done = 1;
        return;
    }
    pc_db_tx_commit(m->tx, mark_commit_cb, m);
}

static void mark_begin_cb(void *data, int status, pc_db_tx_t *tx)
{
    mark_t *m = data;
    if (status) {
        m->status = status;
        m->done = 1;
        return;
    }
    m->tx = tx;
    if (pc_trade_mark_paid(tx, m->pay, mark_paid_cb, m) < 0) {
        m->status = -1;
        pc_db_tx_rollback(tx);
        m->done = 1;
    }
}

static void mark_start(uv_timer_t *t)
{
    mark_t *m = t->data;
    if (pc_db_ready_count(m->db) == 0)
        return; /* still connecting */
    uv_timer_stop(t);
    if (pc_db_begin(m->db, NULL, mark_begin_cb, m) < 0) {
        m->status = -1;
        m->done = 1;
    }
}

int pc_t_mark_paid(pc_stack_t *s, const char *trade_no, const char *payment_no, long long amount,
                   const char *currency, const char *source_account, char *trade_status)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    pc_db_opts_t o = {s->db_url, 1, 5000, 4};
    pc_db_t *db = pc_db_new(&loop, &o);
    pc_ledger_leg_t src = {source_account, -amount, currency};
    pc_trade_payment_t pay = {trade_no, payment_no, amount, currency, &src, 1, NULL, NULL};
    mark_t m = {db, &pay, 0, 0, "", NULL};
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    t.data = &m;
    uv_timer_start(&t, mark_start, 10, 10);
    while (!m.done)
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    pc_db_close(db, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    if (trade_status)
        snprintf(trade_status, 20, "%s", m.trade_status);
    return m.status;
}

void pc_t_utc_today(char out[11])
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(out, 11, "%Y-%m-%d", &tm);
}

long pc_t_channel_callback(pc_stack_t *s, const char *channel, const char *object, const char *ref,
                           const char *status, long amount)
{
    return pc_t_channel_callback_in(s, channel, object, ref, status, amount, "CNY");
}

long pc_t_channel_callback_in(pc_stack_t *s, const char *channel, const char *object,
                              const char *ref, const char *status, long amount,
                              const char *currency)
{
    static int seq;
    char body[900], ts[24], nonce[48], h1[64], h2[80], h3[128], secret[64];
    int ok = !strcmp(status, "SUCCESS");
    seq++;
    snprintf(body, sizeof body,
             "{\"event_id\":\"evt_t%d_%d\",\"type\":\"%s.%s\",\"channel_id\":\"%s\","
             "\"created_at\":\"2026-01-01T00:00:00Z\",\"data\":{\"object\":\"%s\","
             "\"channel_id\":\"%s\",\"channel_txn_id\":\"t_%s\",\"%s_no\":\"%s\","
             "\"status\":\"%s\",\"amount\":%ld,\"currency\":\"%s\",\"fee\":0,\"failure\":%s,"
             "\"method\":\"CARD\"}}",
             (int)getpid(), seq, object, ok ? "succeeded" : "failed", channel, object, channel, ref,
             object, ref, status, amount, currency,
             ok ? "null" : "{\"code\":\"DO_NOT_HONOR\",\"message\":\"declined\"}");
    snprintf(ts, sizeof ts, "%lld", (long long)time(NULL));
    snprintf(nonce, sizeof nonce, "cbnonce%d_%dx%lld", (int)getpid(), seq, (long long)time(NULL));
    size_t len;
    char *msg = pc_sign_notify_string(ts, nonce, body, strlen(body), &len);
    snprintf(secret, sizeof secret, "demo-secret-%s", channel);
    char *sig = pc_hmac_sha256_sign(secret, strlen(secret), msg, len);
    snprintf(h1, sizeof h1, "X-Timestamp: %s", ts);
    snprintf(h2, sizeof h2, "X-Nonce: %s", nonce);
    snprintf(h3, sizeof h3, "X-Signature: %s", sig);
    const char *h[] = {h1, h2, h3, "Content-Type: application/json", NULL};
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/channel-callbacks/%s", s->http_port, channel);
    pc_t_resp_t r = pc_t_http("POST", url, h, body);
    long st = r.status;
    free(msg);
    free(sig);
    pc_t_resp_free(&r);
    return st;
}

int pc_t_needs_ops_listed(pc_stack_t *s, const char *kind, const char *ref)
{
    pc_t_resp_t r = pc_t_admin(s, "GET", "/admin/needs-ops", NULL);
    if (r.status != 200)
        die("GET /admin/needs-ops: %ld", r.status);
    json_t *j = pc_t_json(&r);
    pc_t_resp_free(&r);
    char list[32], key[32];
    snprintf(list, sizeof list, "%ss", kind);
    snprintf(key, sizeof key, "%s_no", kind);
    int found = 0;
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(j, list), i, o)
    {
        const char *no = json_string_value(json_object_get(o, key));
        if (no && !strcmp(no, ref))
            found = json_is_true(json_object_get(o, "final")) ? 2 : 1;
    }
    json_decref(j);
    return found;
}

long pc_t_needs_ops_resolve(pc_stack_t *s, const char *kind, const char *ref, const char *body)
{
    char path[160];
    snprintf(path, sizeof path, "/admin/needs-ops/%s/%s/resolve", kind, ref);
    pc_t_resp_t r = pc_t_admin(s, "POST", path, body);
    long st = r.status;
    pc_t_resp_free(&r);
    return st;
}

char *pc_t_alert_message(pc_stack_t *s, const char *kind, const char *subject)
{
    pc_t_resp_t r = pc_t_admin(s, "GET", "/admin/alerts", NULL);
    json_t *j = pc_t_json(&r);
    pc_t_resp_free(&r);
    char *msg = NULL;
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(j, "alerts"), i, a)
    {
        const char *k = json_string_value(json_object_get(a, "kind"));
        const char *sub = json_string_value(json_object_get(a, "subject"));
        const char *st = json_string_value(json_object_get(a, "status"));
        const char *m = json_string_value(json_object_get(a, "message"));
        if (!msg && k && !strcmp(k, kind) && (!subject || (sub && !strcmp(sub, subject))) && st &&
            !strcmp(st, "ACTIVE"))
            msg = strdup(m ? m : "");
    }
    json_decref(j);
    return msg;
}

int pc_t_alert_active(pc_stack_t *s, const char *kind, const char *subject)
{
    char *m = pc_t_alert_message(s, kind, subject);
    free(m);
    return m != NULL;
}

int pc_t_alert_wait(pc_stack_t *s, const char *kind, const char *subject, int want, double secs)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        if (!pc_t_alert_active(s, kind, subject) == !want)
            return 1;
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9 > secs)
            return 0;
        usleep(100000);
    }
}

int pc_t_ledger_ok(pc_stack_t *s)
{
    pc_t_resp_t r = pc_t_admin(s, "GET", "/admin/ledger/check", NULL);
    int ok = r.status == 200 && strstr(r.body, "\"ok\":true") != NULL;
    if (!ok)
        fprintf(stderr, "ledger check: %ld %s\n", r.status, r.body);
    pc_t_resp_free(&r);
    return ok;
}

void pc_t_card_number(char out[17], const char *bin, long serial)
{
    snprintf(out, 17, "%.6s%09ld", bin, serial % 1000000000L);
    int sum = 0;
    for (int i = 14; i >= 0; i--) {
        int d = out[i] - '0';
        if ((14 - i) % 2 == 0 && (d *= 2) > 9)
            d -= 9;
        sum += d;
    }
    out[15] = (char)('0' + (10 - sum % 10) % 10);
    out[16] = 0;
}

const char *pc_t_fresh_pan(void)
{
    static char pan[17];
    static long n = 0;
    pc_t_card_number(pan, "411111", ++n * 7919 + (long)getpid() % 1000);
    return pan;
}

const char *pc_t_fresh_card(void)
{
    static char json[160];
    snprintf(json, sizeof json,
             "\"card\":{\"pan\":\"%s\",\"exp_month\":12,\"exp_year\":2030,\"cvv\":\"123\"}",
             pc_t_fresh_pan());
    return json;
}
