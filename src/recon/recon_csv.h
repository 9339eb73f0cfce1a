/* A channel's daily statement (src/sim/PROTOCOL.md "Daily statement") read
 * line by line, with no I/O and nothing but libc:
 *
 *   channel_ref,paycore_ref,type,amount,currency,fee,status,time
 *   pay_1a2b3c0000000001,PM1,PAY,1999,CNY,12,SUCCESS,2026-11-22T08:00:00Z
 *
 * RFC 4180: comma separated, "\n" or "\r\n" line ends, the header row always
 * present, fields quoted when they hold a comma, a quote or a line break.
 * Columns are found by name in the header, so a channel may add columns (they
 * are ignored) or reorder them; the eight above are required. Every value is
 * checked (a statement that cannot be read whole must not be half
 * reconciled): references 1-80 printable characters (paycore_ref may be
 * empty), type and status 1-23 of [A-Z_], amounts and fees integers 0-10^15,
 * currency three upper-case letters, time RFC 3339 ("Z" or an offset,
 * optional fraction, which is dropped).
 *
 * The reader also notices a line that repeats an earlier line's type and
 * channel_ref (the channel reports one transaction twice), both SUCCESS or
 * both not (a FAILED line and a SUCCESS line under one reference are a
 * declined authorisation and the capture or retry that paid: a status that
 * changed, not a repeat), and a SUCCESS line whose type and paycore_ref an
 * earlier SUCCESS line had (the channel took one of our numbers twice):
 * such a line is returned with duplicate set, so the caller can report it
 * instead of matching it a second time. A line of a reference an earlier
 * line had with the other kind of status is returned with status_changed
 * set. Keys are compared exactly, not by hash alone.
 *
 * Speed: one pass, no allocation per line apart from the duplicate index
 * (about 60 bytes per line). Unit tests: tests/unit/test_recon_csv.c. */
#ifndef PC_RECON_RECON_CSV_H
#define PC_RECON_RECON_CSV_H
#include <stddef.h>
#include <stdint.h>

#define PC_RECON_REF_MAX 80
#define PC_RECON_WORD_MAX 23

/* One statement line, as plain data (copies): valid until the next call. */
typedef struct {
    int64_t row; /* 1 for the first line after the header */
    char channel_ref[PC_RECON_REF_MAX + 1];
    char paycore_ref[PC_RECON_REF_MAX + 1]; /* "" when the channel gave none */
    char type[PC_RECON_WORD_MAX + 1];       /* PAY, REFUND, PAYOUT, PAYOUT_RETURN, ... */
    int64_t amount;
    char currency[4];
    int64_t fee;
    char status[PC_RECON_WORD_MAX + 1]; /* SUCCESS, FAILED, CLOSED, ... */
    int64_t time_s;                     /* Unix seconds, UTC */
    int duplicate;      /* an earlier line has this type and channel_ref (both SUCCESS or
                         * both not), or (both SUCCESS) this type and paycore_ref */
    int status_changed; /* an earlier line has this type and channel_ref, SUCCESS where
                         * this one is not or the other way round (not a duplicate) */
} pc_recon_line_t;

typedef struct pc_recon_csv pc_recon_csv_t;

/* Opens a reader over text (borrowed: it must outlive the reader) and reads
 * the header. Returns 0 with *out set (free with pc_recon_csv_free), PC_EINVAL
 * with a sentence in err for a missing or malformed header, or PC_ENOMEM. */
int pc_recon_csv_open(const char *text, size_t len, pc_recon_csv_t **out, char *err, size_t errlen);

/* Reads the next line into *line. Returns 1, 0 at the end of the text, or
 * PC_EINVAL with "row N: ..." in err (the reader is then finished: later calls
 * return the same error), or PC_ENOMEM. Blank lines are skipped. */
int pc_recon_csv_next(pc_recon_csv_t *r, pc_recon_line_t *line, char *err, size_t errlen);

/* Bytes of the text consumed so far (for hashing the statement as it is read). */
size_t pc_recon_csv_offset(const pc_recon_csv_t *r);

void pc_recon_csv_free(pc_recon_csv_t *r);

/* Parses an RFC 3339 UTC or offset time ("2026-11-22T08:00:00Z",
 * "2026-11-22T16:00:00.250+08:00") of len bytes into Unix seconds. Returns 0
 * or PC_EINVAL. */
int pc_recon_parse_time(const char *s, size_t len, int64_t *out);

/* Parses a business date "YYYY-MM-DD" (a real calendar day) into the Unix
 * second of its midnight UTC. Returns 0 or PC_EINVAL. */
int pc_recon_parse_date(const char *s, int64_t *out);

#endif
