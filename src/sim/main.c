/* paysim: the channel simulator process. Parses the command line, starts the
 * simulator on the default loop, and stops it gracefully on SIGTERM/SIGINT.
 * State lives in memory only. */
#include "core/log.h"
#include "sim/sim.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    pc_sim_t *sim;
    uv_signal_t sigterm, sigint;
    uv_timer_t overdue;
    bool stopping;
} proc_t;

static void usage(FILE *out)
{
    fprintf(out, "usage: paysim --port N [--host 127.0.0.1] [--seed S] [--callback-base URL]\n"
                 "              [--public-base URL] [--max-txns N] [--callback-retry-ms N]\n"
                 "              [--log-level debug|info|warn|error] [--access-log]\n"
                 "Environment: PAYSIM_PORT, PAYSIM_HOST, PAYSIM_SEED, PAYSIM_CALLBACK_BASE,\n"
                 "PAYSIM_SECRET_<CHANNEL_ID> (else the demo secret \"demo-secret-<channel_id>\").\n"
                 "The channel protocol is described in src/sim/PROTOCOL.md.\n");
}

static void closed_noop(uv_handle_t *h)
{
    (void)h;
}

static void sim_stopped(void *data)
{
    proc_t *p = data;
    p->sim = NULL;
    uv_close((uv_handle_t *)&p->sigterm, closed_noop);
    uv_close((uv_handle_t *)&p->sigint, closed_noop);
    uv_close((uv_handle_t *)&p->overdue, closed_noop);
    pc_log_info("sim.stopped", "paysim stopped");
}

static void overdue_cb(uv_timer_t *t)
{
    (void)t;
    pc_log_warn("sim.shutdown_overdue", "requests still open after the grace period; exiting");
    exit(1);
}

static void signal_cb(uv_signal_t *h, int signum)
{
    proc_t *p = h->data;
    if (p->stopping)
        return;
    p->stopping = true;
    pc_log_info("sim.stopping", "%s: finishing", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    uv_timer_start(&p->overdue, overdue_cb, 10000, 0);
    uv_unref((uv_handle_t *)&p->overdue);
    pc_sim_stop(p->sim, sim_stopped, p);
}

static int parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s || *s == '-')
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    pc_log_flush_on_crash();
    pc_sim_opts_t o = {0};
    const char *env;
    uint64_t v;
    o.host = getenv("PAYSIM_HOST");
    if ((env = getenv("PAYSIM_PORT")) && parse_u64(env, &v) == 0 && v < 65536)
        o.port = (int)v;
    bool seed_given = false;
    if ((env = getenv("PAYSIM_SEED")) && parse_u64(env, &o.seed) == 0)
        seed_given = true;
    static const struct option longopts[] = {
        {"port", required_argument, NULL, 'p'},
        {"host", required_argument, NULL, 'H'},
        {"seed", required_argument, NULL, 's'},
        {"callback-base", required_argument, NULL, 'c'},
        {"public-base", required_argument, NULL, 'b'},
        {"max-txns", required_argument, NULL, 'm'},
        {"callback-retry-ms", required_argument, NULL, 'r'},
        {"log-level", required_argument, NULL, 'l'},
        {"access-log", no_argument, NULL, 'a'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "p:H:s:c:b:m:r:l:ah", longopts, NULL)) != -1) {
        switch (ch) {
        case 'p':
            if (parse_u64(optarg, &v) < 0 || v > 65535)
                goto bad;
            o.port = (int)v;
            break;
        case 'H':
            o.host = optarg;
            break;
        case 's':
            if (parse_u64(optarg, &o.seed) < 0)
                goto bad;
            seed_given = true;
            break;
        case 'c':
            o.callback_base = optarg;
            break;
        case 'b':
            o.public_base = optarg;
            break;
        case 'm':
            if (parse_u64(optarg, &v) < 0 || v < 100 || v > 100000000)
                goto bad;
            o.max_txns = (size_t)v;
            break;
        case 'r':
            if (parse_u64(optarg, &v) < 0 || v < 1 || v > 3600000)
                goto bad;
            o.callback_retry_ms = (uint32_t)v;
            break;
        case 'l': {
            pc_log_level_t level;
            if (pc_log_parse_level(optarg, &level) < 0)
                goto bad;
            pc_log_set_level(level);
            break;
        }
        case 'a':
            o.access_log = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            goto bad;
        }
    }
    if (optind != argc)
        goto bad;
    if (!seed_given) {
        /* Unseeded runs still log their seed, so any run can be replayed. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        o.seed = ((uint64_t)ts.tv_sec * 1000000007ULL) ^ (uint64_t)ts.tv_nsec ^
                 ((uint64_t)getpid() << 32);
        o.seed &= INT64_MAX;
    }

    signal(SIGPIPE, SIG_IGN);
    uv_loop_t *loop = uv_default_loop();
    static proc_t p;
    p.sim = pc_sim_start(loop, &o);
    if (!p.sim)
        return 1;
    uv_signal_init(loop, &p.sigterm);
    uv_signal_init(loop, &p.sigint);
    uv_timer_init(loop, &p.overdue);
    p.sigterm.data = p.sigint.data = &p;
    uv_signal_start(&p.sigterm, signal_cb, SIGTERM);
    uv_signal_start(&p.sigint, signal_cb, SIGINT);

    json_t *f = json_pack("{s:s,s:i,s:I,s:s,s:s}", "host", p.sim->host, "port", pc_sim_port(p.sim),
                          "seed", (json_int_t)o.seed, "callback_base", p.sim->callback_base,
                          "public_base", p.sim->public_base);
    pc_log_fields(PC_LOG_INFO, "sim.listening", f, "paysim on %s:%d, seed %" PRIu64, p.sim->host,
                  pc_sim_port(p.sim), o.seed);
    pc_log_warn("sim.demo_secrets",
                "channels without PAYSIM_SECRET_<ID> use the public demo secret "
                "\"demo-secret-<channel_id>\": for development and tests only");

    uv_run(loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(loop);
    if (rc != 0)
        pc_log_warn("sim.loop", "handles still open at exit");
    return 0;
bad:
    usage(stderr);
    return 2;
}
