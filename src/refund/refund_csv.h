/* The CSV files of refund batches (RFC 4180: comma separated, "\n" line
 * ends, header row first, fields quoted when they hold a comma, a quote or a
 * line break), with no I/O:
 *
 *   export (paycore → channel or ops), one line per refund of the batch:
 *     refund_no,payment_no,channel_id,channel_txn_id,amount,currency,trade_no,reason
 *     (amount: what goes back through the channel or by hand, i.e. the
 *     refund's external part; channel_txn_id: the payment's at the channel)
 *   result (channel or ops → paycore), one line per refund, columns found by
 *   name in the header (others ignored):
 *     refund_no,status,channel_ref,failure_code,failure_message
 *     status is SUCCESS or FAILED; the last three may be empty.
 *
 * Needs nothing but libc. Unit tests: tests/unit/test_refund_csv.c. */
#ifndef PC_REFUND_REFUND_CSV_H
#define PC_REFUND_REFUND_CSV_H
#include <stddef.h>

/* A growing text buffer. Zero-initialise; free with pc_refund_csv_free. oom is
 * set (and appending stops) when memory runs out. */
typedef struct {
    char *p; /* NUL-terminated once anything was written */
    size_t len, cap;
    int oom;
} pc_refund_csv_t;

/* Appends one record of n fields and "\n", quoting fields as needed (NULL
 * fields are empty). */
void pc_refund_csv_row(pc_refund_csv_t *c, const char *const *fields, size_t n);
/* Ops open batch files in a spreadsheet, which runs a cell that starts with
 * = + - @ (or a tab or CR) as a formula: a merchant's refund reason
 * "=HYPERLINK(...)" would run on the ops workstation, and could send the
 * file's other cells away. For a free-text field: text itself, or, when it
 * starts so, text with a leading apostrophe in buf (len: strlen(text) + 2 at
 * least; shorter cuts it). Channel references are left as they are: the
 * file goes to the channel too. */
const char *pc_refund_csv_inert(const char *text, char *buf, size_t len);
/* The text so far ("" when nothing was written); owned by c. */
const char *pc_refund_csv_text(const pc_refund_csv_t *c);
void pc_refund_csv_free(pc_refund_csv_t *c);

/* The export's header row as written by the module. */
#define PC_REFUND_CSV_EXPORT_HEADER                                                                \
    "refund_no,payment_no,channel_id,channel_txn_id,amount,currency,trade_no,reason"

/* Reads records one by one from text (not necessarily NUL-terminated). */
typedef struct {
    const char *p, *end;
    int line; /* line number of the record just read, 1-based */
} pc_refund_csv_reader_t;

void pc_refund_csv_reader_init(pc_refund_csv_reader_t *r, const char *text, size_t len);

#define PC_REFUND_CSV_MAX_FIELDS 16

/* The most lines a batch's result file may have: a batch holds at most
 * 5000 refunds (the export's LIMIT), a file may repeat some. Without a
 * cap, a 64 MiB upload of short lines took gigabytes of the server's
 * memory before the first line was applied. */
#define PC_REFUND_RESULT_MAX_LINES 20000

/* Reads the next record: its fields (unquoted, NUL-terminated) are written
 * into buf and pointed at by fields (at most max). Returns the number of
 * fields, 0 at the end of the text, or -1 for a malformed record (an
 * unterminated quote, text after a closing quote, more than max fields, or a
 * record longer than buf). A blank line is skipped; "\r\n" is accepted. */
int pc_refund_csv_next(pc_refund_csv_reader_t *r, char *buf, size_t buflen, const char **fields,
                       int max);

/* One line of a result file. Pointers borrow the reader's buffer. */
typedef struct {
    const char *refund_no;
    int success;                 /* 1 SUCCESS, 0 FAILED */
    const char *channel_ref;     /* "" when absent */
    const char *failure_code;    /* "" when absent */
    const char *failure_message; /* "" when absent */
} pc_refund_result_line_t;

/* Column positions of a result file, from its header. */
typedef struct {
    int refund_no, status, channel_ref, failure_code, failure_message;
} pc_refund_result_cols_t;

/* Finds the columns in a header record; refund_no and status are required.
 * Returns 0, or -1 with a static reason in *why. */
int pc_refund_result_header(const char *const *fields, int n, pc_refund_result_cols_t *cols,
                            const char **why);
/* Reads one result record. Returns 0, or -1 with a static reason in *why (a
 * missing or malformed refund_no, a status other than SUCCESS/FAILED). */
int pc_refund_result_line(const pc_refund_result_cols_t *cols, const char *const *fields, int n,
                          pc_refund_result_line_t *out, const char **why);

#endif
