#include "refund/refund_csv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void put(pc_refund_csv_t *c, const char *s, size_t n)
{
    if (c->oom)
        return;
    if (c->len + n + 1 > c->cap) {
        size_t cap = c->cap ? c->cap : 256;
        while (cap < c->len + n + 1)
            cap *= 2;
        char *p = realloc(c->p, cap);
        if (!p) {
            c->oom = 1;
            return;
        }
        c->p = p;
        c->cap = cap;
    }
    memcpy(c->p + c->len, s, n);
    c->len += n;
    c->p[c->len] = 0;
}

const char *pc_refund_csv_inert(const char *text, char *buf, size_t len)
{
    if (!text || !text[0] || !strchr("=+-@\t\r", text[0]))
        return text;
    snprintf(buf, len, "'%s", text);
    return buf;
}

void pc_refund_csv_row(pc_refund_csv_t *c, const char *const *fields, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char *f = fields[i] ? fields[i] : "";
        if (i)
            put(c, ",", 1);
        if (!strpbrk(f, ",\"\r\n")) {
            put(c, f, strlen(f));
            continue;
        }
        put(c, "\"", 1);
        for (const char *q = f; *q; q++) {
            if (*q == '"')
                put(c, "\"\"", 2);
            else
                put(c, q, 1);
        }
        put(c, "\"", 1);
    }
    put(c, "\n", 1);
}

const char *pc_refund_csv_text(const pc_refund_csv_t *c)
{
    return c->p ? c->p : "";
}

void pc_refund_csv_free(pc_refund_csv_t *c)
{
    free(c->p);
    memset(c, 0, sizeof *c);
}

void pc_refund_csv_reader_init(pc_refund_csv_reader_t *r, const char *text, size_t len)
{
    r->p = text;
    r->end = text + len;
    r->line = 0;
}

int pc_refund_csv_next(pc_refund_csv_reader_t *r, char *buf, size_t buflen, const char **fields,
                       int max)
{
    /* Blank lines between records are skipped. */
    while (r->p < r->end && (*r->p == '\n' || *r->p == '\r')) {
        if (*r->p == '\n')
            r->line++;
        r->p++;
    }
    if (r->p >= r->end || buflen == 0)
        return 0;
    r->line++;
    size_t o = 0;
    int n = 0;
    for (;;) {
        if (n >= max)
            return -1;
        fields[n++] = buf + o;
        if (r->p < r->end && *r->p == '"') {
            r->p++;
            for (;;) {
                if (r->p >= r->end)
                    return -1; /* unterminated quote */
                char ch = *r->p++;
                if (ch == '"') {
                    if (r->p < r->end && *r->p == '"') {
                        r->p++;
                    } else {
                        break;
                    }
                } else if (ch == '\n') {
                    r->line++;
                }
                if (o + 1 >= buflen)
                    return -1;
                buf[o++] = ch;
            }
            /* After a closing quote only a separator or the record's end. */
            if (r->p < r->end && *r->p != ',' && *r->p != '\n' && *r->p != '\r')
                return -1;
        } else {
            while (r->p < r->end && *r->p != ',' && *r->p != '\n' && *r->p != '\r') {
                if (*r->p == '"')
                    return -1; /* a quote inside an unquoted field */
                if (o + 1 >= buflen)
                    return -1;
                buf[o++] = *r->p++;
            }
        }
        if (o + 1 > buflen)
            return -1;
        buf[o++] = 0;
        if (r->p < r->end && *r->p == ',') {
            r->p++;
            continue;
        }
        if (r->p < r->end && *r->p == '\r')
            r->p++;
        if (r->p < r->end && *r->p == '\n')
            r->p++;
        return n;
    }
}

int pc_refund_result_header(const char *const *fields, int n, pc_refund_result_cols_t *cols,
                            const char **why)
{
    cols->refund_no = cols->status = cols->channel_ref = cols->failure_code =
        cols->failure_message = -1;
    for (int i = 0; i < n; i++) {
        const char *f = fields[i];
        if (!strcmp(f, "refund_no"))
            cols->refund_no = i;
        else if (!strcmp(f, "status"))
            cols->status = i;
        else if (!strcmp(f, "channel_ref"))
            cols->channel_ref = i;
        else if (!strcmp(f, "failure_code"))
            cols->failure_code = i;
        else if (!strcmp(f, "failure_message"))
            cols->failure_message = i;
    }
    if (cols->refund_no < 0 || cols->status < 0) {
        *why = "the header must name the columns refund_no and status";
        return -1;
    }
    return 0;
}

static const char *col(const char *const *fields, int n, int i)
{
    return i >= 0 && i < n ? fields[i] : "";
}

/* Refund numbers are what paycore issues: 1-64 of [A-Za-z0-9_-]. */
static int valid_no(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

int pc_refund_result_line(const pc_refund_result_cols_t *cols, const char *const *fields, int n,
                          pc_refund_result_line_t *out, const char **why)
{
    memset(out, 0, sizeof *out);
    out->refund_no = col(fields, n, cols->refund_no);
    const char *st = col(fields, n, cols->status);
    out->channel_ref = col(fields, n, cols->channel_ref);
    out->failure_code = col(fields, n, cols->failure_code);
    out->failure_message = col(fields, n, cols->failure_message);
    if (!valid_no(out->refund_no)) {
        *why = "refund_no is missing or malformed";
        return -1;
    }
    if (!strcmp(st, "SUCCESS"))
        out->success = 1;
    else if (!strcmp(st, "FAILED"))
        out->success = 0;
    else {
        *why = "status must be SUCCESS or FAILED";
        return -1;
    }
    return 0;
}
