/* A JSON text written straight into a buffer, for answers built on every
 * request of a hot path (the cashier's consult), where making a jansson tree
 * only to dump it cost more than the rest of paycore's work on the request
 * (README "Performance"). The output is what jansson's
 * json_dumps(..., JSON_COMPACT) writes for the same values, byte for byte:
 * no spaces, strings with '"', '\\' and control characters escaped
 * (\b \f \n \r \t, others as \u00XX), other characters as they are in UTF-8.
 * A string that is not valid UTF-8 (jansson would refuse it) has each bad
 * byte written as U+FFFD, so that the text stays JSON; callers pass texts
 * that are UTF-8 (database text, configuration read by jansson).
 *
 * The writer puts commas itself: after pc_jw_key or inside an array, each
 * value is separated from the one before. Out of memory is remembered
 * (pc_jw_done returns NULL), nothing else can fail.
 *
 * Needs jansson (pc_jw_json) and core/buf.h. */
#ifndef PC_CORE_JSONW_H
#define PC_CORE_JSONW_H
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

#define PC_JW_MAX_DEPTH 16

typedef struct {
    pc_buf_t b;
    int depth;
    bool too_deep;               /* nested deeper than PC_JW_MAX_DEPTH */
    bool first[PC_JW_MAX_DEPTH]; /* no value yet at this level */
} pc_jw_t;

/* Starts an empty text with room for hint bytes. */
void pc_jw_init(pc_jw_t *w, size_t hint);

void pc_jw_object(pc_jw_t *w); /* { */
void pc_jw_array(pc_jw_t *w);  /* [ */
void pc_jw_end_object(pc_jw_t *w);
void pc_jw_end_array(pc_jw_t *w);

/* A member's key inside an object; the value written next is its value. */
void pc_jw_key(pc_jw_t *w, const char *key);

void pc_jw_str(pc_jw_t *w, const char *s); /* NULL writes null */
void pc_jw_int(pc_jw_t *w, int64_t v);
void pc_jw_bool(pc_jw_t *w, bool v);
void pc_jw_null(pc_jw_t *w);
/* A jansson value, dumped as json_dumps(v, JSON_COMPACT) would. */
void pc_jw_json(pc_jw_t *w, const json_t *v);

/* The text (NUL-terminated, *len set when len is not NULL), which the
 * caller frees; NULL when memory ran out, objects and arrays do not balance
 * or nest deeper than PC_JW_MAX_DEPTH (the buffer is freed then). */
char *pc_jw_done(pc_jw_t *w, size_t *len);

/* Frees what was written, for a text given up. */
void pc_jw_free(pc_jw_t *w);

/* A jansson string of s, each byte of it that is not UTF-8 as U+FFFD (a
 * message cut in the middle of a character, say: json_string refuses it, and
 * a log line or an error report went without its text). NULL for NULL. */
json_t *pc_json_string_lossy(const char *s);

#endif
