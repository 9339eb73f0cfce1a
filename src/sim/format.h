/* Text formats of the channel protocol: RFC 3339 times and business dates
 * (UTC), and the daily statement and chargeback files as CSV (RFC 4180: comma
 * separated, LF line ends, a header row, fields quoted when they hold a comma,
 * quote, CR or LF, quotes doubled). Pure functions over a growable buffer.
 * Needs nothing. */
#ifndef PC_SIM_FORMAT_H
#define PC_SIM_FORMAT_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

/* "2026-11-22T08:00:00Z" plus NUL. */
#define PC_SIM_TIME_LEN 21
/* "2026-11-22" plus NUL. */
#define PC_SIM_DATE_LEN 11

/* Formats Unix milliseconds as an RFC 3339 UTC time (whole seconds). */
void pc_sim_format_time(int64_t ms, char out[PC_SIM_TIME_LEN]);
/* The UTC business date of Unix milliseconds. */
void pc_sim_format_date(int64_t ms, char out[PC_SIM_DATE_LEN]);
/* True when s is exactly "YYYY-MM-DD" naming a real calendar date (leap
 * years included) in years 1970–9999. */
bool pc_sim_date_valid(const char *s);
/* Splits a file name "YYYY-MM-DD<ext>" (ext such as ".csv") into its date.
 * Returns 0 and fills out, or PC_EINVAL. */
int pc_sim_date_from_file(const char *name, const char *ext, char out[PC_SIM_DATE_LEN]);

/* Appends one CSV field (quoted when needed), without a separator. */
void pc_sim_csv_field(pc_buf_t *b, const char *s);

/* One statement line. Strings are borrowed. */
typedef struct {
    const char *channel_ref; /* the channel's transaction id */
    const char *paycore_ref; /* payment_no, refund_no or payout_no */
    const char *type;        /* PAY, REFUND, PAYOUT, PAYOUT_RETURN */
    int64_t amount;          /* minor units */
    const char *currency;
    int64_t fee; /* minor units, charged by the channel */
    const char *status;
    int64_t time_ms;
} pc_sim_stmt_row_t;

/* One chargeback line. Strings are borrowed. */
typedef struct {
    const char *chargeback_ref;
    const char *channel_ref; /* the disputed payment's channel transaction id */
    const char *paycore_ref; /* its payment_no */
    int64_t amount;
    const char *currency;
    const char *reason_code;
    int64_t time_ms;
    int64_t respond_by_ms;
} pc_sim_cb_row_t;

/* Header rows; the column names are part of the protocol. */
void pc_sim_stmt_header(pc_buf_t *b);
void pc_sim_stmt_row(pc_buf_t *b, const pc_sim_stmt_row_t *row);
void pc_sim_cb_header(pc_buf_t *b);
void pc_sim_cb_row(pc_buf_t *b, const pc_sim_cb_row_t *row);

#endif
