/* A growable byte buffer, always NUL-terminated once anything was added.
 * Allocation failures are sticky (oom set, later appends ignored) so callers
 * check once at the end. Zero-initialise; release with pc_buf_free.
 * Needs nothing. */
#ifndef PC_CORE_BUF_H
#define PC_CORE_BUF_H
#include <stdbool.h>
#include <stddef.h>

typedef struct {
    char *p;
    size_t len, cap;
    bool oom;
} pc_buf_t;

/* Makes room for extra more bytes (and the NUL); false when out of memory. */
bool pc_buf_reserve(pc_buf_t *b, size_t extra);
void pc_buf_add(pc_buf_t *b, const char *s, size_t n);
void pc_buf_str(pc_buf_t *b, const char *s);
void pc_buf_printf(pc_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void pc_buf_free(pc_buf_t *b);

/* Decodes n bytes of src into dst (room for n + 1): %XX escapes, and '+' as a
 * space when plus_is_space (query strings); a '%' not followed by two hex
 * digits is kept. NUL-terminates; returns the decoded length. */
size_t pc_url_decode(char *dst, const char *src, size_t n, bool plus_is_space);

#endif
