#include "core/log.h"
#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static pc_log_level_t g_level = PC_LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void pc_log_set_level(pc_log_level_t level)
{
    g_level = level;
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
        json_object_set_new(line, "msg", json_string(msg));
    if (fields)
        json_object_update_missing(line, fields);
    char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (text) {
        fprintf(stderr, "%s\n", text);
        free(text);
    }
    json_decref(line);
}

void pc_log(pc_log_level_t level, const char *event, const char *fmt, ...)
{
    if (level < g_level)
        return;
    va_list ap;
    va_start(ap, fmt);
    emit(level, event, NULL, fmt, ap);
    va_end(ap);
}

void pc_log_fields(pc_log_level_t level, const char *event, json_t *fields, const char *fmt, ...)
{
    if (level >= g_level) {
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
