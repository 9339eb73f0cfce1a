/* A channel's daily chargeback file (src/sim/PROTOCOL.md "Daily chargeback
 * file") parsed into plain lines, with no I/O:
 *
 *   chargeback_ref,channel_ref,paycore_ref,amount,currency,reason_code,time,respond_by
 *   cbk_…,pay_…,PM7,4200,CNY,10.4,2026-11-22T08:00:05Z,2026-11-29T08:00:05Z
 *
 * Columns are found by their header names (any order; unknown columns are
 * ignored). chargeback_ref, channel_ref, amount and currency are required;
 * paycore_ref, reason_code, time and respond_by may be absent or empty.
 * Fields may be double-quoted ("" inside quotes is a quote). CRLF line ends,
 * a UTF-8 byte order mark and blank lines are accepted. Each data line is
 * either valid or carries a reason, so one bad line never hides the others.
 * Needs nothing but libc (tests/unit/test_chargeback_csv.c). */
#ifndef PC_CHARGEBACK_CHARGEBACK_CSV_H
#define PC_CHARGEBACK_CHARGEBACK_CSV_H
#include <stddef.h>
#include <stdint.h>

/* At most this many data lines per file. */
#define PC_CB_CSV_MAX_LINES 100000

typedef struct {
    int line_no; /* 1-based line number in the file (header is 1) */
    int ok;      /* 0: see error */
    /* The channel's reference (and ours), the amount: read, whatever came
     * after them. A line unusable for another field (its currency, reason
     * code or times) still names the disputed payment and sum, which are
     * held until ops resolve it. */
    int names_payment;
    char error[96]; /* why the line is unusable, "" when ok */
    char raw[256];  /* the line as written (cut at 255 bytes) */
    char chargeback_ref[129];
    char channel_ref[81];
    char paycore_ref[81]; /* "" when absent */
    int64_t amount;       /* 1 .. 10^15 */
    char currency[4];
    char reason_code[33]; /* "" when absent */
    long long time;       /* Unix seconds; 0 when absent */
    long long respond_by; /* Unix seconds; 0 when absent */
} pc_cb_csv_line_t;

/* Parses text (len bytes, need not be NUL-terminated). On success returns 0
 * with *lines a malloc'd array of *nlines entries (NULL and 0 for a file with
 * a header only) that the caller frees with free(). Returns PC_EINVAL (no
 * header, a required column missing, too many lines; err says which) or
 * PC_ENOMEM, and then *lines is NULL. */
int pc_cb_csv_parse(const char *text, size_t len, pc_cb_csv_line_t **lines, size_t *nlines,
                    char *err, size_t errlen);

/* Parses an RFC 3339 UTC time "YYYY-MM-DDTHH:MM:SSZ" (fractional seconds
 * and a numeric offset "+08:00" are accepted too) into Unix seconds.
 * Returns 0 or PC_EINVAL. */
int pc_cb_parse_time(const char *s, long long *out);

/* A reference as chargeback files write them: printable ASCII without
 * spaces, not empty. Offline entry keeps to the same, so that one case is
 * one reference however it arrives. */
int pc_cb_ref_ok(const char *s);

/* Parses a business date "YYYY-MM-DD" (a real calendar date) into the Unix
 * time of its 00:00 UTC. Returns 0 or PC_EINVAL. */
int pc_cb_parse_date(const char *s, long long *out);

#endif
