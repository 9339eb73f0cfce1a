/* Small helpers for request handlers. */
#include "api/app.h"
#include "core/error.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

const char *pc_rfc3339(long long unix_s, char *buf, size_t len)
{
    time_t t = (time_t)unix_s;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

int pc_json_int(json_t *obj, const char *name, long long min, long long max, long long *out)
{
    json_t *v = json_object_get(obj, name);
    if (!v || json_is_null(v))
        return 1;
    if (!json_is_integer(v))
        return -1;
    long long x = json_integer_value(v);
    if (x < min || x > max)
        return -1;
    *out = x;
    return 0;
}

const char *pc_json_str(json_t *obj, const char *name, size_t max, int idchars, int *bad)
{
    json_t *v = json_object_get(obj, name);
    if (!v || json_is_null(v))
        return NULL;
    if (!json_is_string(v)) {
        *bad = 1;
        return NULL;
    }
    const char *s = json_string_value(v);
    size_t n = strlen(s);
    if (n == 0 || n > max || n != json_string_length(v)) {
        *bad = 1;
        return NULL;
    }
    if (idchars && !pc_id_valid(s, max)) {
        *bad = 1;
        return NULL;
    }
    return s;
}

int pc_id_valid(const char *s, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    return n > 0 && n <= max &&
           strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") == n;
}

void pc_respond_json_text(pc_http_req_t *req, int status, const char *text)
{
    json_t *j = json_loads(text, JSON_DECODE_ANY, NULL);
    if (!j) {
        pc_http_respond_error(req, PC_API_INTERNAL, NULL, "malformed stored JSON");
        return;
    }
    pc_http_respond_json(req, status, j);
}

void pc_respond_db_error(pc_http_req_t *req, int status)
{
    if (pc_retryable(status))
        pc_http_respond_error(req, PC_API_UNAVAILABLE, NULL, "database unavailable; retry");
    else
        pc_http_respond_error(req, PC_API_INTERNAL, NULL, "database error");
}

const char *pc_limit_param(pc_http_req_t *req, int def, char buf[8], int *bad)
{
    const char *l = pc_http_req_query_param(req, "limit");
    long long v = def;
    if (l && (!l[0] || strlen(l) > 4 || strspn(l, "0123456789") != strlen(l)))
        v = 0;
    else if (l)
        v = atoll(l);
    if (v < 1 || v > 1000) {
        *bad = 1;
        return NULL;
    }
    snprintf(buf, 8, "%lld", v);
    return buf;
}

int pc_page_params(pc_http_req_t *req, int def, char buf[8], const char **limit, const char **after,
                   const char *after_hint)
{
    int bad = 0;
    *limit = pc_limit_param(req, def, buf, &bad);
    *after = pc_http_req_query_param(req, "after");
    if (bad || (*after && !pc_id_valid(*after, 64))) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, bad ? "limit" : "after",
                              bad ? "limit: 1-1000" : after_hint);
        return -1;
    }
    return 0;
}

int pc_printable(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < ' ' || s[i] == 0x7f)
            return 0;
    return 1;
}

const char *pc_json_url(json_t *obj, const char *name, int *bad)
{
    int invalid = 0;
    const char *u = pc_json_str(obj, name, 512, 0, &invalid);
    if (invalid) {
        *bad = 1;
        return NULL;
    }
    if (!u)
        return NULL;
    size_t skip = !strncmp(u, "https://", 8) ? 8 : !strncmp(u, "http://", 7) ? 7 : 0;
    int ok =
        skip && u[skip] && u[skip] != '/' && u[skip] != '?' && u[skip] != '#' && u[skip] != ':';
    for (const char *s = u; ok && *s; s++)
        if ((unsigned char)*s <= ' ' || (unsigned char)*s >= 0x7f)
            ok = 0;
    if (!ok)
        *bad = 1;
    return ok ? u : NULL;
}

const char *pc_operator_of(pc_http_req_t *req)
{
    const char *who = pc_http_req_header(req, "X-Operator");
    if (!who || !pc_printable(who, 64))
        return "ops";
    /* ASCII only: a header's bytes are not checked as UTF-8, and a name
     * that is not would fail the action's audit row (and with it the
     * action) in PostgreSQL. */
    for (const char *c = who; *c; c++)
        if ((unsigned char)*c >= 0x80)
            return "ops";
    return who;
}

void pc_respond_json_row_cb(void *data, int status, pc_db_res_t *res)
{
    pc_http_req_t *req = data;
    if (status) {
        pc_respond_db_error(req, status);
        return;
    }
    pc_respond_json_text(req, 200, pc_db_get(res, 0, 0));
}
