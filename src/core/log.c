#include "core/log.h"
#include "core/error.h"
#include "core/jsonw.h"

#include <errno.h>
#include <pthread.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* ---------- the writer ----------
 *
 * Lines go into a ring of LOG_RING bytes; a thread of their own writes them
 * to stderr. A process whose stderr is a pipe that its reader stopped
 * draining (a stuck log shipper) used to stop in fprintf, its event loop
 * with it: every request waited for the log. Now a line that does not fit
 * is dropped and counted, and a "log.dropped" line says how many once there
 * is room again. At exit the ring is written out, waiting at most
 * LOG_EXIT_WAIT_S for a reader. */
#define LOG_RING (1u << 20)
#define LOG_CHUNK 65536
#define LOG_EXIT_WAIT_S 2

static struct {
    pthread_mutex_t mu;
    pthread_cond_t more, drained;
    pthread_once_t once;
    char ring[LOG_RING];
    size_t head, len; /* bytes queued start at head (mod LOG_RING) */
    unsigned long long dropped;
    _Atomic int writing; /* the writer holds a chunk it took from the ring */
    int started;
    _Atomic int crashing; /* a fatal signal: the writer takes no more chunks */
} g_w = {.mu = PTHREAD_MUTEX_INITIALIZER,
         .more = PTHREAD_COND_INITIALIZER,
         .drained = PTHREAD_COND_INITIALIZER,
         .once = PTHREAD_ONCE_INIT};

/* Writes n bytes to stderr; returns how many lines of them were lost (a
 * stderr that stays full for a second though made non-blocking by whoever
 * opened it, or closed). */
static unsigned long long write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pfd = {.fd = STDERR_FILENO, .events = POLLOUT};
            if (poll(&pfd, 1, 1000) > 0)
                continue;
        }
        if (w <= 0) {
            unsigned long long lost = 0;
            for (size_t i = 0; i < n; i++)
                lost += p[i] == '\n';
            return lost;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void *writer_main(void *arg)
{
    (void)arg;
    static char chunk[LOG_CHUNK];
    pthread_mutex_lock(&g_w.mu);
    for (;;) {
        while ((g_w.len == 0 && !g_w.dropped) || g_w.crashing)
            pthread_cond_wait(&g_w.more, &g_w.mu);
        size_t n = g_w.len < LOG_CHUNK ? g_w.len : LOG_CHUNK;
        size_t first = LOG_RING - g_w.head < n ? LOG_RING - g_w.head : n;
        memcpy(chunk, g_w.ring + g_w.head, first);
        memcpy(chunk + first, g_w.ring, n - first);
        g_w.head = (g_w.head + n) % LOG_RING;
        g_w.len -= n;
        unsigned long long dropped = g_w.len == 0 ? g_w.dropped : 0;
        g_w.dropped -= dropped;
        g_w.writing = 1;
        pthread_mutex_unlock(&g_w.mu);
        dropped += write_all(chunk, n);
        if (dropped) {
            char line[256];
            int m = snprintf(line, sizeof line,
                             "{\"level\":\"warn\",\"event\":\"log.dropped\",\"msg\":\"%llu log "
                             "lines dropped: stderr was not read fast enough\",\"dropped\":%llu}\n",
                             dropped, dropped);
            write_all(line, (size_t)m);
        }
        pthread_mutex_lock(&g_w.mu);
        g_w.writing = 0;
        if (g_w.len == 0 && !g_w.dropped)
            pthread_cond_broadcast(&g_w.drained);
    }
    return NULL;
}

static void flush_at_exit(void)
{
    pc_log_flush(LOG_EXIT_WAIT_S * 1000);
}

static void start_writer(void)
{
    pthread_attr_t attr;
    pthread_t t;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    /* Signals go to the loop's thread (uv_signal), not this one. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    g_w.started = pthread_create(&t, &attr, writer_main, NULL) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (g_w.started)
        atexit(flush_at_exit);
}

/* Queues text (n bytes, newline included), or writes it at once when the
 * writer could not be started. */
static void enqueue(const char *text, size_t n)
{
    pthread_once(&g_w.once, start_writer);
    if (!g_w.started) {
        write_all(text, n);
        return;
    }
    pthread_mutex_lock(&g_w.mu);
    if (n > LOG_RING - g_w.len) {
        g_w.dropped++;
    } else {
        size_t tail = (g_w.head + g_w.len) % LOG_RING;
        size_t first = LOG_RING - tail < n ? LOG_RING - tail : n;
        memcpy(g_w.ring + tail, text, first);
        memcpy(g_w.ring, text + first, n - first);
        g_w.len += n;
    }
    pthread_cond_signal(&g_w.more);
    pthread_mutex_unlock(&g_w.mu);
}

/* ---------- a crash ----------
 *
 * A process that dies on a fatal signal (a segfault, an abort) took the lines
 * still in the ring with it: the last ones before the crash, the ones that
 * say what it was doing. The handler stops the writer taking more, waits a
 * moment for the chunk it is writing (so that the two do not interleave),
 * writes what is left with write(2) (async-signal-safe; the ring is read
 * without its lock, which the crashed thread may hold: best effort), then
 * lets the signal do what it would have done. */
#if defined(__SANITIZE_ADDRESS__)
#define PC_LOG_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PC_LOG_ASAN 1
#endif
#endif

#ifndef PC_LOG_ASAN
static void crash_flush(int sig)
{
    /* A reader of stderr that stopped reading must not keep a crashed
     * process alive: SIGALRM ends it in 3 s whatever. */
    alarm(3);
    g_w.crashing = 1;
    for (int i = 0; i < 1000 && g_w.writing; i++) {
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    size_t len = g_w.len, head = g_w.head;
    if (len > LOG_RING || head >= LOG_RING)
        len = 0;
    size_t first = LOG_RING - head < len ? LOG_RING - head : len;
    write_all(g_w.ring + head, first);
    write_all(g_w.ring, len - first);
    /* SA_RESETHAND put the default action back: the core dump, the exit
     * status the supervisor sees. */
    raise(sig);
}

#endif

void pc_log_flush_on_crash(void)
{
#ifdef PC_LOG_ASAN
    /* ASan's own report of a fault matters more than queued lines. */
    return;
#else
    static const int sigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = crash_flush;
    sa.sa_flags = (int)SA_RESETHAND | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        sigaction(sigs[i], &sa, NULL);
#endif
}

int pc_log_flush(int timeout_ms)
{
    if (!g_w.started)
        return 0;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    int rc = 0;
    pthread_mutex_lock(&g_w.mu);
    while ((g_w.len || g_w.dropped || g_w.writing) && rc == 0)
        rc = pthread_cond_timedwait(&g_w.drained, &g_w.mu, &until);
    int left = g_w.len || g_w.dropped || g_w.writing;
    pthread_mutex_unlock(&g_w.mu);
    return left ? PC_ETIMEDOUT : 0;
}

/* Read by any thread that logs (libuv's workers too), set on reloads. */
static _Atomic int g_level = PC_LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void pc_log_set_level(pc_log_level_t level)
{
    atomic_store(&g_level, (int)level);
}

int pc_log_parse_level(const char *s, pc_log_level_t *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (pc_log_level_t)i;
            return 0;
        }
    }
    return PC_EINVAL;
}

static void emit(pc_log_level_t level, const char *event, json_t *fields, const char *fmt,
                 va_list ap)
{
    char msg[2048];
    vsnprintf(msg, sizeof msg, fmt, ap);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[40];
    size_t n = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + n, sizeof when - n, ".%03ldZ", ts.tv_nsec / 1000000);

    json_t *line = json_object();
    json_object_set_new(line, "ts", json_string(when));
    json_object_set_new(line, "level", json_string(level_names[level]));
    json_object_set_new(line, "event", json_string(event));
    if (msg[0])
        json_object_set_new(line, "msg", pc_json_string_lossy(msg));
    if (fields)
        json_object_update_missing(line, fields);
    char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (text) {
        size_t len = strlen(text);
        char *nl = realloc(text, len + 2);
        if (nl) {
            nl[len] = '\n';
            enqueue(nl, len + 1);
            text = nl;
        }
        free(text);
    }
    json_decref(line);
}

void pc_log(pc_log_level_t level, const char *event, const char *fmt, ...)
{
    if ((int)level < atomic_load(&g_level))
        return;
    va_list ap;
    va_start(ap, fmt);
    emit(level, event, NULL, fmt, ap);
    va_end(ap);
}

void pc_log_fields(pc_log_level_t level, const char *event, json_t *fields, const char *fmt, ...)
{
    if ((int)level >= atomic_load(&g_level)) {
        va_list ap;
        va_start(ap, fmt);
        emit(level, event, fields, fmt, ap);
        va_end(ap);
    }
    json_decref(fields);
}

int pc_log_due(long long *last_s, long long every_s)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    /* Monotonic time is small after boot: a first call always logs. */
    if (*last_s && (long long)ts.tv_sec - *last_s < every_s)
        return 0;
    *last_s = (long long)ts.tv_sec ? (long long)ts.tv_sec : 1;
    return 1;
}
