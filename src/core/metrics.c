#include "core/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Series live in an open-addressing hash table keyed by (name, labels); families
 * (descriptions) in a small list. The table only grows: series are few (hundreds). */

#define PC_HIST_BUCKETS 14
static const double hist_bounds[PC_HIST_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                    0.1,    0.25,  0.5,    1,     2.5,  5,     10};

typedef struct series {
    char *name;
    char *labels;
    uint64_t hash;
    int is_hist;
    int absent; /* pc_metrics_unset_all: not rendered until set again */
    int64_t value;
    uint64_t buckets[PC_HIST_BUCKETS];
    uint64_t count;
    double sum;
} series_t;

typedef struct family {
    char *name;
    pc_metric_type_t type;
    char *help;
    int private_; /* ops only (pc_metrics_private) */
    struct family *next;
} family_t;

static series_t **g_slots;
static size_t g_cap, g_len;
static family_t *g_families;

/* Mixes all 64 bits into all 64 (murmur3's finaliser): the table index is
 * the low bits, and series that differ in one byte must not share them. */
static uint64_t mix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDULL;
    h ^= h >> 33;
    h *= 0xC4CEB9FE1A85EC53ULL;
    return h ^ (h >> 33);
}

/* Hashes a string eight bytes at a time (every metric update looks its
 * series up by name and labels, so this is on every request's path). */
static uint64_t hash_str(uint64_t h, const char *s)
{
    size_t len = strlen(s), i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        h = (h ^ w) * 0x9E3779B97F4A7C15ULL;
        h = h << 31 | h >> 33;
    }
    uint64_t tail = 0;
    for (size_t k = 0; i + k < len; k++)
        tail |= (uint64_t)(unsigned char)s[i + k] << (8 * k);
    return mix64(h ^ tail ^ ((uint64_t)len << 56));
}

static uint64_t hash2(const char *a, const char *b)
{
    return hash_str(hash_str(1469598103934665603ULL, a) + 0x9E3779B97F4A7C15ULL, b);
}

static void grow(void)
{
    size_t ncap = g_cap ? g_cap * 2 : 256;
    series_t **n = calloc(ncap, sizeof *n);
    if (!n)
        abort();
    for (size_t i = 0; i < g_cap; i++) {
        series_t *s = g_slots[i];
        if (!s)
            continue;
        size_t j = s->hash & (ncap - 1);
        while (n[j])
            j = (j + 1) & (ncap - 1);
        n[j] = s;
    }
    free(g_slots);
    g_slots = n;
    g_cap = ncap;
}

static series_t *lookup(const char *name, const char *labels, int create)
{
    if (!labels)
        labels = "";
    if (g_len * 2 >= g_cap) {
        if (!create && g_cap == 0)
            return NULL;
        grow();
    }
    uint64_t h = hash2(name, labels);
    size_t j = h & (g_cap - 1);
    while (g_slots[j]) {
        series_t *s = g_slots[j];
        if (s->hash == h && strcmp(s->name, name) == 0 && strcmp(s->labels, labels) == 0)
            return s;
        j = (j + 1) & (g_cap - 1);
    }
    if (!create)
        return NULL;
    series_t *s = calloc(1, sizeof *s);
    if (!s)
        abort();
    s->name = strdup(name);
    s->labels = strdup(labels);
    s->hash = h;
    g_slots[j] = s;
    g_len++;
    return s;
}

void pc_metrics_describe(const char *name, pc_metric_type_t type, const char *help)
{
    for (family_t *f = g_families; f; f = f->next)
        if (strcmp(f->name, name) == 0)
            return;
    family_t *f = calloc(1, sizeof *f);
    if (!f)
        abort();
    f->name = strdup(name);
    f->type = type;
    f->help = strdup(help ? help : "");
    f->next = g_families;
    g_families = f;
}

void pc_metrics_add(const char *name, const char *labels, int64_t delta)
{
    series_t *s = lookup(name, labels, 1);
    s->absent = 0;
    s->value += delta;
}

void pc_metrics_set(const char *name, const char *labels, int64_t value)
{
    series_t *s = lookup(name, labels, 1);
    s->absent = 0;
    s->value = value;
}

void pc_metrics_unset_all(const char *name)
{
    for (size_t i = 0; i < g_cap; i++) {
        series_t *s = g_slots[i];
        if (s && !s->is_hist && strcmp(s->name, name) == 0) {
            s->absent = 1;
            s->value = 0;
        }
    }
}

void pc_metrics_observe(const char *name, const char *labels, double seconds)
{
    series_t *s = lookup(name, labels, 1);
    s->is_hist = 1;
    for (int i = 0; i < PC_HIST_BUCKETS; i++)
        if (seconds <= hist_bounds[i])
            s->buckets[i]++;
    s->count++;
    s->sum += seconds;
}

int64_t pc_metrics_get(const char *name, const char *labels)
{
    series_t *s = lookup(name, labels, 0);
    return s ? s->value : 0;
}

typedef struct {
    char *buf;
    size_t len, cap;
} sbuf_t;

static void sb_printf(sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#include <stdarg.h>
static void sb_printf(sbuf_t *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->buf + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        b->cap = b->cap * 2 + (size_t)(n > 0 ? n : 0) + 256;
        b->buf = realloc(b->buf, b->cap);
        if (!b->buf)
            abort();
    }
}

static int cmp_series(const void *a, const void *b)
{
    const series_t *x = *(series_t *const *)a, *y = *(series_t *const *)b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->labels, y->labels);
}

static const family_t *family_of(const char *name)
{
    for (family_t *f = g_families; f; f = f->next)
        if (strcmp(f->name, name) == 0)
            return f;
    return NULL;
}

void pc_metrics_private(const char *name)
{
    for (family_t *f = g_families; f; f = f->next)
        if (strcmp(f->name, name) == 0)
            f->private_ = 1;
}

char *pc_metrics_render(size_t *len, int with_private)
{
    sbuf_t b = {malloc(4096), 0, 4096};
    if (!b.buf)
        abort();
    b.buf[0] = 0;
    series_t **all = malloc((g_len + 1) * sizeof *all);
    size_t n = 0;
    for (size_t i = 0; i < g_cap; i++)
        if (g_slots[i] && !g_slots[i]->absent)
            all[n++] = g_slots[i];
    qsort(all, n, sizeof *all, cmp_series);
    static const char *const tnames[] = {"counter", "gauge", "histogram"};
    const char *last = "";
    int hidden = 0;
    for (size_t i = 0; i < n; i++) {
        series_t *s = all[i];
        if (strcmp(last, s->name) != 0) {
            const family_t *f = family_of(s->name);
            last = s->name;
            hidden = f && f->private_ && !with_private;
            if (f && !hidden)
                sb_printf(&b, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name,
                          tnames[f->type]);
        }
        if (hidden)
            continue;
        const char *sep = s->labels[0] ? "," : "";
        if (s->is_hist) {
            for (int k = 0; k < PC_HIST_BUCKETS; k++)
                sb_printf(&b, "%s_bucket{%s%sle=\"%g\"} %llu\n", s->name, s->labels, sep,
                          hist_bounds[k], (unsigned long long)s->buckets[k]);
            sb_printf(&b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", s->name, s->labels, sep,
                      (unsigned long long)s->count);
            sb_printf(&b, "%s_sum{%s} %.6f\n%s_count{%s} %llu\n", s->name, s->labels, s->sum,
                      s->name, s->labels, (unsigned long long)s->count);
        } else if (s->labels[0]) {
            sb_printf(&b, "%s{%s} %lld\n", s->name, s->labels, (long long)s->value);
        } else {
            sb_printf(&b, "%s %lld\n", s->name, (long long)s->value);
        }
    }
    free(all);
    *len = b.len;
    return b.buf;
}

void pc_metrics_reset(void)
{
    for (size_t i = 0; i < g_cap; i++) {
        if (g_slots[i]) {
            free(g_slots[i]->name);
            free(g_slots[i]->labels);
            free(g_slots[i]);
        }
    }
    free(g_slots);
    g_slots = NULL;
    g_cap = g_len = 0;
    while (g_families) {
        family_t *f = g_families;
        g_families = f->next;
        free(f->name);
        free(f->help);
        free(f);
    }
}
