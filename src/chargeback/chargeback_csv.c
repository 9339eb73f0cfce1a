#include "chargeback/chargeback_csv.h"
#include "ledger/ledger.h"
#include "core/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_FIELDS 32
#define FIELD_MAX 256

enum { C_CBREF = 0, C_CHREF, C_PCREF, C_AMOUNT, C_CUR, C_REASON, C_TIME, C_RESPOND, C_COUNT };
static const char *const col_names[C_COUNT] = {"chargeback_ref", "channel_ref", "paycore_ref",
                                               "amount",         "currency",    "reason_code",
                                               "time",           "respond_by"};

/* Splits one line (no line end) into fields. Returns the field count, or -1
 * for a malformed quote or too many / too long fields. */
static int split_fields(const char *s, size_t len, char fields[MAX_FIELDS][FIELD_MAX])
{
    int n = 0;
    size_t i = 0;
    for (;;) {
        if (n == MAX_FIELDS)
            return -1;
        size_t o = 0;
        if (i < len && s[i] == '"') {
            i++;
            for (;;) {
                if (i >= len)
                    return -1; /* unterminated quote */
                if (s[i] == '"') {
                    if (i + 1 < len && s[i + 1] == '"') {
                        if (o + 1 >= FIELD_MAX)
                            return -1;
                        fields[n][o++] = '"';
                        i += 2;
                        continue;
                    }
                    i++;
                    break;
                }
                if (o + 1 >= FIELD_MAX)
                    return -1;
                fields[n][o++] = s[i++];
            }
            if (i < len && s[i] != ',')
                return -1;
        } else {
            while (i < len && s[i] != ',') {
                if (o + 1 >= FIELD_MAX)
                    return -1;
                fields[n][o++] = s[i++];
            }
        }
        fields[n][o] = 0;
        n++;
        if (i >= len)
            return n;
        i++; /* the comma */
    }
}

static int is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in(int y, int m)
{
    static const int d[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : d[m - 1];
}

static int digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

static int parse_ymd(const char *s, struct tm *tm)
{
    int y, m, d;
    if (digits(s, 4, &y) || s[4] != '-' || digits(s + 5, 2, &m) || s[7] != '-' ||
        digits(s + 8, 2, &d))
        return PC_EINVAL;
    if (y < 1970 || m < 1 || m > 12 || d < 1 || d > days_in(y, m))
        return PC_EINVAL;
    memset(tm, 0, sizeof *tm);
    tm->tm_year = y - 1900;
    tm->tm_mon = m - 1;
    tm->tm_mday = d;
    return 0;
}

int pc_cb_parse_date(const char *s, long long *out)
{
    struct tm tm;
    if (!s || strlen(s) != 10 || parse_ymd(s, &tm))
        return PC_EINVAL;
    *out = (long long)timegm(&tm);
    return 0;
}

int pc_cb_parse_time(const char *s, long long *out)
{
    struct tm tm;
    if (!s || strlen(s) < 20 || parse_ymd(s, &tm) || (s[10] != 'T' && s[10] != 't'))
        return PC_EINVAL;
    int hh, mm, ss;
    if (digits(s + 11, 2, &hh) || s[13] != ':' || digits(s + 14, 2, &mm) || s[16] != ':' ||
        digits(s + 17, 2, &ss) || hh > 23 || mm > 59 || ss > 60)
        return PC_EINVAL;
    const char *p = s + 19;
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9')
            return PC_EINVAL;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    long long offset = 0;
    if ((p[0] == 'Z' || p[0] == 'z') && p[1] == 0) {
        offset = 0;
    } else if ((p[0] == '+' || p[0] == '-') && strlen(p) == 6 && p[3] == ':') {
        int oh, om;
        if (digits(p + 1, 2, &oh) || digits(p + 4, 2, &om) || oh > 23 || om > 59)
            return PC_EINVAL;
        offset = (oh * 3600LL + om * 60LL) * (p[0] == '+' ? 1 : -1);
    } else {
        return PC_EINVAL;
    }
    tm.tm_hour = hh;
    tm.tm_min = mm;
    tm.tm_sec = ss;
    *out = (long long)timegm(&tm) - offset;
    return 0;
}

int pc_cb_ref_ok(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (*s <= ' ' || *s > '~')
            return 0;
    return 1;
}

static void bad(pc_cb_csv_line_t *l, const char *why)
{
    l->ok = 0;
    snprintf(l->error, sizeof l->error, "%s", why);
}

static void parse_line(pc_cb_csv_line_t *l, char f[MAX_FIELDS][FIELD_MAX], int nf,
                       const int col[C_COUNT])
{
    l->ok = 1;
    const char *v[C_COUNT];
    for (int c = 0; c < C_COUNT; c++)
        v[c] = col[c] >= 0 && col[c] < nf ? f[col[c]] : "";
    if (!pc_cb_ref_ok(v[C_CBREF]) || strlen(v[C_CBREF]) >= sizeof l->chargeback_ref)
        return bad(l, "chargeback_ref: 1-128 printable characters");
    snprintf(l->chargeback_ref, sizeof l->chargeback_ref, "%s", v[C_CBREF]);
    if (!pc_cb_ref_ok(v[C_CHREF]) || strlen(v[C_CHREF]) >= sizeof l->channel_ref)
        return bad(l, "channel_ref: 1-80 printable characters");
    snprintf(l->channel_ref, sizeof l->channel_ref, "%s", v[C_CHREF]);
    if (v[C_PCREF][0] && (!pc_cb_ref_ok(v[C_PCREF]) || strlen(v[C_PCREF]) >= sizeof l->paycore_ref))
        return bad(l, "paycore_ref: at most 80 printable characters");
    snprintf(l->paycore_ref, sizeof l->paycore_ref, "%s", v[C_PCREF]);
    const char *a = v[C_AMOUNT];
    size_t al = strlen(a);
    int amount_ok = al >= 1 && al <= 16 && a[0] != '0';
    for (size_t i = 0; amount_ok && i < al; i++)
        amount_ok = a[i] >= '0' && a[i] <= '9';
    if (!amount_ok || strtoll(a, NULL, 10) > 1000000000000000LL)
        return bad(l, "amount: an integer 1-10^15 in minor units");
    l->amount = strtoll(a, NULL, 10);
    l->names_payment = 1;
    const char *c = v[C_CUR];
    if (!pc_ledger_currency_ok(c))
        return bad(l, "currency: ISO 4217, upper case");
    snprintf(l->currency, sizeof l->currency, "%s", c);
    if (v[C_REASON][0] && (!pc_cb_ref_ok(v[C_REASON]) || strlen(v[C_REASON]) >= 33))
        return bad(l, "reason_code: at most 32 printable characters");
    snprintf(l->reason_code, sizeof l->reason_code, "%s", v[C_REASON]);
    if (v[C_TIME][0] && pc_cb_parse_time(v[C_TIME], &l->time))
        return bad(l, "time: an RFC 3339 time");
    if (v[C_RESPOND][0] && pc_cb_parse_time(v[C_RESPOND], &l->respond_by))
        return bad(l, "respond_by: an RFC 3339 time");
}

int pc_cb_csv_parse(const char *text, size_t len, pc_cb_csv_line_t **lines, size_t *nlines,
                    char *err, size_t errlen)
{
    *lines = NULL;
    *nlines = 0;
    if (len >= 3 && (unsigned char)text[0] == 0xEF && (unsigned char)text[1] == 0xBB &&
        (unsigned char)text[2] == 0xBF) {
        text += 3;
        len -= 3;
    }
    /* Fields are read as C strings: a NUL inside one cut it short, and an
     * amount written 1\0000 was read as 1 (a hold of 1 for a dispute of
     * 1000). No CSV holds one: refused. */
    if (memchr(text, '\0', len)) {
        snprintf(err, errlen, "the file holds a NUL byte");
        return PC_EINVAL;
    }
    char fields[MAX_FIELDS][FIELD_MAX]; /* 8 KiB */
    int col[C_COUNT];
    for (int c = 0; c < C_COUNT; c++)
        col[c] = -1;
    int have_header = 0, line_no = 0;
    size_t cap = 0, n = 0;
    pc_cb_csv_line_t *out = NULL;
    size_t pos = 0;
    while (pos < len) {
        size_t end = pos;
        while (end < len && text[end] != '\n')
            end++;
        size_t l = end - pos;
        if (l > 0 && text[pos + l - 1] == '\r')
            l--;
        const char *s = text + pos;
        pos = end + 1;
        line_no++;
        if (l == 0)
            continue;
        if (!have_header) {
            int nf = split_fields(s, l, fields);
            if (nf < 0) {
                snprintf(err, errlen, "line %d: malformed header", line_no);
                return PC_EINVAL;
            }
            for (int i = 0; i < nf; i++)
                for (int c = 0; c < C_COUNT; c++)
                    if (!strcmp(fields[i], col_names[c]) && col[c] < 0)
                        col[c] = i;
            const int required[] = {C_CBREF, C_CHREF, C_AMOUNT, C_CUR};
            for (size_t r = 0; r < sizeof required / sizeof required[0]; r++) {
                if (col[required[r]] < 0) {
                    snprintf(err, errlen, "header: column %s is missing", col_names[required[r]]);
                    return PC_EINVAL;
                }
            }
            have_header = 1;
            continue;
        }
        if (n == PC_CB_CSV_MAX_LINES) {
            free(out);
            snprintf(err, errlen, "more than %d lines", PC_CB_CSV_MAX_LINES);
            return PC_EINVAL;
        }
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            pc_cb_csv_line_t *grown = realloc(out, ncap * sizeof *out);
            if (!grown) {
                free(out);
                return PC_ENOMEM;
            }
            out = grown;
            cap = ncap;
        }
        pc_cb_csv_line_t *cur = &out[n++];
        memset(cur, 0, sizeof *cur);
        cur->line_no = line_no;
        snprintf(cur->raw, sizeof cur->raw, "%.*s", (int)(l < 255 ? l : 255), s);
        int nf = split_fields(s, l, fields);
        if (nf < 0)
            bad(cur, "malformed line (quotes, too many or too long fields)");
        else
            parse_line(cur, fields, nf, col);
    }
    if (!have_header) {
        free(out);
        snprintf(err, errlen, "no header line");
        return PC_EINVAL;
    }
    *lines = out;
    *nlines = n;
    return 0;
}
