/* JSON log lines on stderr, one object per line:
 *   {"ts":"2026-11-22T08:00:00.123Z","level":"info","event":"http.start","msg":"…", …}
 * Written by a thread of their own, so that a slow or stuck reader of
 * stderr never holds up the caller's event loop: a line that finds the
 * queue (1 MiB) full is dropped and counted ("log.dropped"). Safe from any
 * thread. Never pass card numbers, CVVs or secrets to these functions. */
#ifndef PC_CORE_LOG_H
#define PC_CORE_LOG_H
#include <jansson.h>

typedef enum { PC_LOG_DEBUG = 0, PC_LOG_INFO, PC_LOG_WARN, PC_LOG_ERROR } pc_log_level_t;

void pc_log_set_level(pc_log_level_t level);
/* Parses "debug", "info", "warn", "error"; returns PC_EINVAL otherwise. */
int pc_log_parse_level(const char *s, pc_log_level_t *out);

/* Logs event with a printf-style message. */
void pc_log(pc_log_level_t level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Logs event with extra fields merged into the line; steals the reference to fields
 * (which may be NULL). */
void pc_log_fields(pc_log_level_t level, const char *event, json_t *fields, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* For a line that a failing poll would write on every poll: 1 (and *last_s
 * set to now) when every_s seconds have passed since *last_s, else 0. Start
 * *last_s at 0. */
int pc_log_due(long long *last_s, long long every_s);

/* Waits up to timeout_ms until every line logged so far has been written:
 * 0, or PC_ETIMEDOUT while stderr's reader does not take them. Runs at
 * exit by itself (2 s). */
int pc_log_flush(int timeout_ms);

/* Installs handlers of the fatal signals (SIGSEGV, SIGBUS, SIGFPE, SIGILL,
 * SIGABRT) that write out the lines still queued, then let the signal take
 * its default course (core dump, exit status). Not under ASan, whose report
 * comes first. Call once at start. */
void pc_log_flush_on_crash(void);

#define pc_log_debug(ev, ...) pc_log(PC_LOG_DEBUG, ev, __VA_ARGS__)
#define pc_log_info(ev, ...) pc_log(PC_LOG_INFO, ev, __VA_ARGS__)
#define pc_log_warn(ev, ...) pc_log(PC_LOG_WARN, ev, __VA_ARGS__)
#define pc_log_error(ev, ...) pc_log(PC_LOG_ERROR, ev, __VA_ARGS__)

#endif
