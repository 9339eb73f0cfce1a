#include "core/jsonw.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void put(pc_jw_t *w, const char *s, size_t n)
{
    pc_buf_add(&w->b, s, n);
}

static void put_char(pc_jw_t *w, char c)
{
    pc_buf_add(&w->b, &c, 1);
}

/* Before a value: a comma unless it is the first of its array or object
 * (a member's value follows its key, which wrote the comma). */
static void before_value(pc_jw_t *w)
{
    if (w->depth > 0 && w->depth <= PC_JW_MAX_DEPTH) {
        if (!w->first[w->depth - 1])
            put_char(w, ',');
        w->first[w->depth - 1] = false;
    }
}

void pc_jw_init(pc_jw_t *w, size_t hint)
{
    memset(w, 0, sizeof *w);
    if (hint)
        pc_buf_reserve(&w->b, hint);
}

static void open_level(pc_jw_t *w, char c)
{
    before_value(w);
    put_char(w, c);
    if (w->depth < PC_JW_MAX_DEPTH)
        w->first[w->depth] = true;
    else
        w->too_deep = true; /* commas are no longer tracked: refused at the end */
    w->depth++;
}

static void close_level(pc_jw_t *w, char c)
{
    w->depth--;
    put_char(w, c);
}

void pc_jw_object(pc_jw_t *w)
{
    open_level(w, '{');
}

void pc_jw_array(pc_jw_t *w)
{
    open_level(w, '[');
}

void pc_jw_end_object(pc_jw_t *w)
{
    close_level(w, '}');
}

void pc_jw_end_array(pc_jw_t *w)
{
    close_level(w, ']');
}

/* The length of the valid UTF-8 sequence at s (at most n bytes), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    /* Overlong forms, surrogates and beyond U+10FFFF are not UTF-8. */
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

static void put_string(pc_jw_t *w, const char *str)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t n = strlen(str), run = 0;
    put_char(w, '"');
    /* The characters jansson writes with a short escape. */
    static const char short_esc[0x60] = {['"'] = '"',  ['\\'] = '\\', ['\b'] = 'b', ['\f'] = 'f',
                                         ['\n'] = 'n', ['\r'] = 'r',  ['\t'] = 't'};
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        const char *esc = NULL;
        char u[8];
        size_t len = 1;
        if (c < 0x20 || c == '"' || c == '\\') {
            if (short_esc[c])
                snprintf(u, sizeof u, "\\%c", short_esc[c]);
            else
                snprintf(u, sizeof u, "\\u%04X", c);
            esc = u;
        } else if (c >= 0x80 && (len = utf8_len(s + i, n - i)) == 0) {
            esc = "\xEF\xBF\xBD"; /* U+FFFD for a byte that is not UTF-8 */
            len = 1;
        }
        if (esc) {
            put(w, (const char *)s + run, i - run);
            put(w, esc, strlen(esc));
            run = i + len;
        }
        i += len;
    }
    put(w, (const char *)s + run, n - run);
    put_char(w, '"');
}

void pc_jw_key(pc_jw_t *w, const char *key)
{
    before_value(w);
    put_string(w, key);
    put_char(w, ':');
    /* The value that follows takes no comma. */
    if (w->depth > 0 && w->depth <= PC_JW_MAX_DEPTH)
        w->first[w->depth - 1] = true;
}

void pc_jw_str(pc_jw_t *w, const char *s)
{
    if (!s) {
        pc_jw_null(w);
        return;
    }
    before_value(w);
    put_string(w, s);
}

static void put_value(pc_jw_t *w, const char *text, size_t n)
{
    before_value(w);
    put(w, text, n);
}

void pc_jw_int(pc_jw_t *w, int64_t v)
{
    char num[24];
    int n = snprintf(num, sizeof num, "%" PRId64, v);
    put_value(w, num, (size_t)n);
}

void pc_jw_bool(pc_jw_t *w, bool v)
{
    put_value(w, v ? "true" : "false", v ? 4 : 5);
}

void pc_jw_null(pc_jw_t *w)
{
    put_value(w, "null", 4);
}

void pc_jw_json(pc_jw_t *w, const json_t *v)
{
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text) {
        w->b.oom = true;
        return;
    }
    put_value(w, text, strlen(text));
    free(text);
}

char *pc_jw_done(pc_jw_t *w, size_t *len)
{
    if (w->depth != 0 || w->too_deep || !pc_buf_reserve(&w->b, 0)) {
        pc_jw_free(w);
        return NULL;
    }
    w->b.p[w->b.len] = '\0';
    if (len)
        *len = w->b.len;
    char *text = w->b.p;
    memset(&w->b, 0, sizeof w->b);
    return text;
}

void pc_jw_free(pc_jw_t *w)
{
    pc_buf_free(&w->b);
}

json_t *pc_json_string_lossy(const char *s)
{
    if (!s)
        return NULL;
    json_t *j = json_string(s);
    if (j)
        return j;
    size_t n = strlen(s);
    char *fixed = malloc(3 * n + 1);
    if (!fixed)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t len = utf8_len((const unsigned char *)s + i, n - i);
        if (len == 0) {
            memcpy(fixed + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        } else {
            memcpy(fixed + o, s + i, len);
            o += len;
            i += len;
        }
    }
    j = json_stringn(fixed, o);
    free(fixed);
    return j;
}
