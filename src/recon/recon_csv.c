#include "recon/recon_csv.h"
#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The columns a statement must have, in the order of the header comment. */
enum {
    COL_CHANNEL_REF,
    COL_PAYCORE_REF,
    COL_TYPE,
    COL_AMOUNT,
    COL_CURRENCY,
    COL_FEE,
    COL_STATUS,
    COL_TIME,
    COL_COUNT
};
static const char *const COL_NAMES[COL_COUNT] = {"channel_ref", "paycore_ref", "type",   "amount",
                                                 "currency",    "fee",         "status", "time"};

#define MAX_FIELDS 64
#define MAX_RECORD 4096 /* bytes of one record's unquoted fields */
#define AMOUNT_MAX 1000000000000000LL

/* The duplicate index: exact keys "TYPE\x1fREF" in an arena, found through an
 * open-addressing table of (hash, offset) slots, each with the kinds of line
 * (SEEN_PAID, SEEN_UNPAID) that had the key. */
typedef struct {
    uint64_t hash;
    uint32_t off; /* into arena; 0 marks an empty slot (the arena starts with a byte) */
    uint16_t len;
    uint8_t seen;
} slot_t;

#define SEEN_PAID 1   /* a SUCCESS line */
#define SEEN_UNPAID 2 /* a line of another status */

struct pc_recon_csv {
    const char *p, *end, *start;
    int64_t row;
    int failed;
    char fail_msg[200];
    int col[COL_COUNT]; /* field index of each required column */
    int ncols;          /* fields in the header */
    /* current record */
    const char *fv[MAX_FIELDS];
    size_t fl[MAX_FIELDS];
    char scratch[MAX_RECORD];
    /* duplicate index */
    slot_t *slots;
    size_t nslots, used;
    char *arena;
    size_t alen, acap;
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Splits the record at r->p into fields. Returns the number of fields, 0 at
 * the end of the text (blank lines skipped), or -1 with a message in msg. */
static int read_record(pc_recon_csv_t *r, char *msg, size_t msglen)
{
    /* Skip blank lines. */
    while (r->p < r->end && (*r->p == '\n' || *r->p == '\r')) {
        if (*r->p == '\r' && (r->p + 1 >= r->end || r->p[1] != '\n')) {
            set_err(msg, msglen, "a carriage return must be followed by a line feed");
            return -1;
        }
        r->p++;
    }
    if (r->p >= r->end)
        return 0;
    int n = 0;
    size_t used = 0;
    const char *p = r->p, *end = r->end;
    for (;;) {
        if (n == MAX_FIELDS) {
            set_err(msg, msglen, "more than %d fields", MAX_FIELDS);
            return -1;
        }
        if (p < end && *p == '"') {
            /* Quoted: copy with "" unescaped into the scratch buffer. */
            char *dst = r->scratch + used;
            size_t len = 0;
            p++;
            for (;;) {
                if (p >= end) {
                    set_err(msg, msglen, "a quoted field is not closed");
                    return -1;
                }
                if (*p == '"') {
                    if (p + 1 < end && p[1] == '"') {
                        p += 2;
                    } else {
                        p++;
                        break;
                    }
                    if (used + len >= sizeof r->scratch)
                        goto too_long;
                    dst[len++] = '"';
                    continue;
                }
                if (used + len >= sizeof r->scratch)
                    goto too_long;
                dst[len++] = *p++;
            }
            r->fv[n] = dst;
            r->fl[n] = len;
            used += len;
        } else {
            const char *s = p;
            while (p < end && *p != ',' && *p != '\n' && *p != '\r') {
                if (*p == '"') {
                    set_err(msg, msglen, "a quote inside an unquoted field");
                    return -1;
                }
                p++;
            }
            r->fv[n] = s;
            r->fl[n] = (size_t)(p - s);
        }
        n++;
        if (p >= end) {
            break;
        } else if (*p == ',') {
            p++;
            continue;
        } else if (*p == '\n') {
            p++;
            break;
        } else if (*p == '\r' && p + 1 < end && p[1] == '\n') {
            p += 2;
            break;
        } else {
            set_err(msg, msglen, "text after a closing quote");
            return -1;
        }
    }
    r->p = p;
    return n;
too_long:
    set_err(msg, msglen, "a record longer than %d bytes", MAX_RECORD);
    return -1;
}

int pc_recon_csv_open(const char *text, size_t len, pc_recon_csv_t **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!text && len)
        return PC_EINVAL;
    pc_recon_csv_t *r = calloc(1, sizeof *r);
    if (!r)
        return PC_ENOMEM;
    r->start = r->p = text ? text : "";
    r->end = r->p + len;
    /* A UTF-8 byte order mark some spreadsheet tools write. */
    if (len >= 3 && !memcmp(r->p, "\xEF\xBB\xBF", 3))
        r->p += 3;
    char msg[160];
    int n = read_record(r, msg, sizeof msg);
    if (n <= 0) {
        set_err(err, errlen, "header: %s", n == 0 ? "the statement is empty" : msg);
        free(r);
        return PC_EINVAL;
    }
    for (int c = 0; c < COL_COUNT; c++)
        r->col[c] = -1;
    for (int i = 0; i < n; i++) {
        for (int c = 0; c < COL_COUNT; c++) {
            if (strlen(COL_NAMES[c]) == r->fl[i] && !memcmp(COL_NAMES[c], r->fv[i], r->fl[i])) {
                if (r->col[c] >= 0) {
                    set_err(err, errlen, "header: column %s appears twice", COL_NAMES[c]);
                    free(r);
                    return PC_EINVAL;
                }
                r->col[c] = i;
            }
        }
    }
    for (int c = 0; c < COL_COUNT; c++) {
        if (r->col[c] < 0) {
            set_err(err, errlen, "header: column %s is missing", COL_NAMES[c]);
            free(r);
            return PC_EINVAL;
        }
    }
    r->ncols = n;
    *out = r;
    return 0;
}

size_t pc_recon_csv_offset(const pc_recon_csv_t *r)
{
    return (size_t)(r->p - r->start);
}

void pc_recon_csv_free(pc_recon_csv_t *r)
{
    if (!r)
        return;
    free(r->slots);
    free(r->arena);
    free(r);
}

/* ---------- values ---------- */

static int copy_ref(const char *s, size_t len, char *out, int may_be_empty)
{
    if (len > PC_RECON_REF_MAX || (!len && !may_be_empty))
        return -1;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return -1;
    }
    memcpy(out, s, len);
    out[len] = 0;
    return 0;
}

static int copy_word(const char *s, size_t len, char *out)
{
    if (len == 0 || len > PC_RECON_WORD_MAX)
        return -1;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= 'A' && s[i] <= 'Z') || s[i] == '_'))
            return -1;
    memcpy(out, s, len);
    out[len] = 0;
    return 0;
}

/* Whether word is one of the NULL-ended list. */
static int one_of(const char *word, const char *const *list)
{
    for (; *list; list++)
        if (!strcmp(word, *list))
            return 1;
    return 0;
}

/* The statement's final statuses (src/sim/PROTOCOL.md). Any other is
 * refused with its row: read as "no money", a status the channel renamed
 * (PAID, SETTLED) dropped a paid line we hold no record of from the day,
 * counted only, and turned every matched one into a status mismatch. (A
 * type we keep no record of stays a line: its money is a MISSING_LOCAL
 * difference.) */
static const char *const LINE_STATUSES[] = {"SUCCESS", "FAILED", "CLOSED", NULL};

static int parse_amount(const char *s, size_t len, int64_t *out)
{
    if (len == 0 || len > 16)
        return -1;
    int64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v > AMOUNT_MAX)
        return -1;
    *out = v;
    return 0;
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

/* Days since 1970-01-01 of a proleptic Gregorian date: years counted from
 * March (so the leap day is last) in 400-year eras of 146097 days. */
static int64_t days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int days_in_month(int y, int m)
{
    static const int dim[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : dim[m - 1];
}

static int parse_ymd(const char *s, int *y, int *m, int *d)
{
    if (digits(s, 4, y) < 0 || s[4] != '-' || digits(s + 5, 2, m) < 0 || s[7] != '-' ||
        digits(s + 8, 2, d) < 0)
        return -1;
    if (*y < 1970 || *m < 1 || *m > 12 || *d < 1 || *d > days_in_month(*y, *m))
        return -1;
    return 0;
}

int pc_recon_parse_date(const char *s, int64_t *out)
{
    int y, m, d;
    if (!s || strlen(s) != 10 || parse_ymd(s, &y, &m, &d) < 0)
        return PC_EINVAL;
    *out = days_from_civil(y, m, d) * 86400;
    return 0;
}

int pc_recon_parse_time(const char *s, size_t len, int64_t *out)
{
    int y, mo, d, h, mi, sec;
    if (len < 20 || parse_ymd(s, &y, &mo, &d) < 0 || (s[10] != 'T' && s[10] != 't') ||
        digits(s + 11, 2, &h) < 0 || s[13] != ':' || digits(s + 14, 2, &mi) < 0 || s[16] != ':' ||
        digits(s + 17, 2, &sec) < 0 || h > 23 || mi > 59 || sec > 60)
        return PC_EINVAL;
    size_t i = 19;
    if (s[i] == '.') {
        size_t j = ++i;
        while (i < len && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == j || i - j > 9)
            return PC_EINVAL;
    }
    int64_t offset = 0;
    if (i < len && (s[i] == 'Z' || s[i] == 'z') && i + 1 == len) {
        offset = 0;
    } else if (i + 6 == len && (s[i] == '+' || s[i] == '-')) {
        int oh, om;
        if (digits(s + i + 1, 2, &oh) < 0 || s[i + 3] != ':' || digits(s + i + 4, 2, &om) < 0 ||
            oh > 23 || om > 59)
            return PC_EINVAL;
        offset = (oh * 3600 + om * 60) * (s[i] == '+' ? 1 : -1);
    } else {
        return PC_EINVAL;
    }
    *out = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset;
    return 0;
}

/* ---------- duplicates ---------- */

static uint64_t hash_key(const char *a, size_t al, const char *b, size_t bl)
{
    /* FNV-1a over both parts with a separator, then a final mix so that
     * linear probing sees well-spread low bits. */
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < al; i++)
        h = (h ^ (unsigned char)a[i]) * 1099511628211ULL;
    h = (h ^ 0x1f) * 1099511628211ULL;
    for (size_t i = 0; i < bl; i++)
        h = (h ^ (unsigned char)b[i]) * 1099511628211ULL;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
}

static int grow_slots(pc_recon_csv_t *r)
{
    size_t n = r->nslots ? r->nslots * 2 : 4096;
    slot_t *s = calloc(n, sizeof *s);
    if (!s)
        return PC_ENOMEM;
    for (size_t i = 0; i < r->nslots; i++) {
        if (!r->slots[i].off)
            continue;
        size_t j = r->slots[i].hash & (n - 1);
        while (s[j].off)
            j = (j + 1) & (n - 1);
        s[j] = r->slots[i];
    }
    free(r->slots);
    r->slots = s;
    r->nslots = n;
    return 0;
}

/* Returns 1 when (type, ref) was seen before by a line of kind (SEEN_PAID or
 * SEEN_UNPAID); else remembers it for that kind and returns 2 when a line of
 * the other kind had it, 0 when none did; or PC_ENOMEM. */
static int seen_before(pc_recon_csv_t *r, const char *type, const char *ref, uint8_t kind)
{
    size_t tl = strlen(type), rl = strlen(ref), kl = tl + 1 + rl;
    if ((r->used + 1) * 2 > r->nslots && grow_slots(r) < 0)
        return PC_ENOMEM;
    uint64_t h = hash_key(type, tl, ref, rl);
    size_t j = h & (r->nslots - 1);
    while (r->slots[j].off) {
        const slot_t *s = &r->slots[j];
        if (s->hash == h && s->len == kl) {
            const char *k = r->arena + s->off;
            if (!memcmp(k, type, tl) && k[tl] == 0x1f && !memcmp(k + tl + 1, ref, rl)) {
                if (r->slots[j].seen & kind)
                    return 1;
                r->slots[j].seen |= kind;
                return 2;
            }
        }
        j = (j + 1) & (r->nslots - 1);
    }
    if (r->alen == 0)
        r->alen = 1; /* offset 0 means "empty slot" */
    if (r->alen + kl > UINT32_MAX)
        return PC_ENOMEM;
    if (r->alen + kl > r->acap) {
        size_t cap = r->acap ? r->acap * 2 : 1 << 16;
        while (cap < r->alen + kl)
            cap *= 2;
        char *a = realloc(r->arena, cap);
        if (!a)
            return PC_ENOMEM;
        r->arena = a;
        r->acap = cap;
    }
    memcpy(r->arena + r->alen, type, tl);
    r->arena[r->alen + tl] = 0x1f;
    memcpy(r->arena + r->alen + tl + 1, ref, rl);
    r->slots[j] = (slot_t){h, (uint32_t)r->alen, (uint16_t)kl, kind};
    r->alen += kl;
    r->used++;
    return 0;
}

/* ---------- lines ---------- */

static int fail(pc_recon_csv_t *r, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(pc_recon_csv_t *r, char *err, size_t errlen, const char *fmt, ...)
{
    char msg[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    r->failed = 1;
    snprintf(r->fail_msg, sizeof r->fail_msg, "row %lld: %s", (long long)r->row, msg);
    set_err(err, errlen, "%s", r->fail_msg);
    return PC_EINVAL;
}

int pc_recon_csv_next(pc_recon_csv_t *r, pc_recon_line_t *line, char *err, size_t errlen)
{
    if (r->failed) {
        set_err(err, errlen, "%s", r->fail_msg);
        return PC_EINVAL;
    }
    char msg[160];
    r->row++;
    int n = read_record(r, msg, sizeof msg);
    if (n == 0) {
        r->row--;
        return 0;
    }
    if (n < 0)
        return fail(r, err, errlen, "%s", msg);
    if (n != r->ncols)
        return fail(r, err, errlen, "%d fields where the header has %d", n, r->ncols);
    const int *c = r->col;
    line->row = r->row;
    if (copy_ref(r->fv[c[COL_CHANNEL_REF]], r->fl[c[COL_CHANNEL_REF]], line->channel_ref, 0) < 0)
        return fail(r, err, errlen, "channel_ref must be 1-%d printable characters",
                    PC_RECON_REF_MAX);
    if (copy_ref(r->fv[c[COL_PAYCORE_REF]], r->fl[c[COL_PAYCORE_REF]], line->paycore_ref, 1) < 0)
        return fail(r, err, errlen, "paycore_ref must be at most %d printable characters",
                    PC_RECON_REF_MAX);
    if (copy_word(r->fv[c[COL_TYPE]], r->fl[c[COL_TYPE]], line->type) < 0)
        return fail(r, err, errlen, "type must be 1-%d of A-Z and _", PC_RECON_WORD_MAX);
    if (parse_amount(r->fv[c[COL_AMOUNT]], r->fl[c[COL_AMOUNT]], &line->amount) < 0)
        return fail(r, err, errlen, "amount must be an integer from 0 to 10^15");
    const char *cur = r->fv[c[COL_CURRENCY]];
    if (r->fl[c[COL_CURRENCY]] != 3 || cur[0] < 'A' || cur[0] > 'Z' || cur[1] < 'A' ||
        cur[1] > 'Z' || cur[2] < 'A' || cur[2] > 'Z')
        return fail(r, err, errlen, "currency must be an ISO 4217 code in upper case");
    memcpy(line->currency, cur, 3);
    line->currency[3] = 0;
    if (parse_amount(r->fv[c[COL_FEE]], r->fl[c[COL_FEE]], &line->fee) < 0)
        return fail(r, err, errlen, "fee must be an integer from 0 to 10^15");
    if (copy_word(r->fv[c[COL_STATUS]], r->fl[c[COL_STATUS]], line->status) < 0 ||
        !one_of(line->status, LINE_STATUSES))
        return fail(r, err, errlen, "status must be SUCCESS, FAILED or CLOSED");
    if (pc_recon_parse_time(r->fv[c[COL_TIME]], r->fl[c[COL_TIME]], &line->time_s) < 0)
        return fail(r, err, errlen, "time must be an RFC 3339 time");
    /* A repeat is of a SUCCESS line, or of one not paid: a line of each
     * under one channel_ref (an authorisation the channel declined, then the
     * capture or the retry that paid, the same day) is a status that
     * changed. Before, whichever came second was a DUPLICATE_LINE: a paid
     * one "money claimed twice", and the declined one, matched alone, a
     * STATUS_MISMATCH of a payment the channel paid. */
    int paid = !strcmp(line->status, "SUCCESS");
    int seen = seen_before(r, line->type, line->channel_ref, paid ? SEEN_PAID : SEEN_UNPAID);
    line->status_changed = seen == 2;
    /* A second success of one of our numbers under another channel_ref:
     * the channel took the money twice (each line would otherwise pair with
     * the same record and agree, and nobody would hear of it). Kept apart
     * from the channel_ref keys by a type no line can have. */
    if (seen != 1 && seen >= 0 && line->paycore_ref[0] && paid) {
        char t[PC_RECON_WORD_MAX + 4];
        snprintf(t, sizeof t, "%s#ok", line->type);
        seen = seen_before(r, t, line->paycore_ref, SEEN_PAID);
    }
    if (seen < 0)
        return seen;
    line->duplicate = seen == 1;
    return 1;
}
