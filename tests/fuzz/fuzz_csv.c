/* Fuzz target: channel statement CSV import (recon/recon_csv.h), two ways.
 *   - Raw: the input is a statement file; the reader must not crash, must
 *     stop at the first error for good, and every line it returns must hold
 *     what the format allows (references 1-80 printable characters, upper-case
 *     words, amounts and fees 0-10^15, a three-letter currency).
 *   - Round trip: the input drives paysim's writer (sim/format.h) to produce
 *     a statement; the reader must read back exactly the rows written. */
#include "core/error.h"
#include "recon/recon_csv.h"
#include "sim/format.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void must(int ok)
{
    if (!ok)
        abort();
}

static int word_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > PC_RECON_WORD_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'A' && s[i] <= 'Z') || s[i] == '_'))
            return 0;
    return 1;
}

static void raw(const uint8_t *data, size_t size)
{
    pc_recon_csv_t *r = NULL;
    char err[256];
    if (pc_recon_csv_open((const char *)data, size, &r, err, sizeof err) != 0)
        return;
    pc_recon_line_t line;
    int rc, last_rc = 1;
    int64_t last_row = 0;
    while ((rc = pc_recon_csv_next(r, &line, err, sizeof err)) == 1) {
        must(line.row > last_row);
        last_row = line.row;
        size_t cl = strlen(line.channel_ref);
        must(cl >= 1 && cl <= PC_RECON_REF_MAX && strlen(line.paycore_ref) <= PC_RECON_REF_MAX);
        must(word_ok(line.type) && word_ok(line.status));
        must(line.amount >= 0 && line.amount <= 1000000000000000LL);
        must(line.fee >= 0 && line.fee <= 1000000000000000LL);
        must(strlen(line.currency) == 3 && word_ok(line.currency));
        must(pc_recon_csv_offset(r) <= size);
    }
    last_rc = rc;
    if (last_rc < 0) /* an error is final */
        must(pc_recon_csv_next(r, &line, err, sizeof err) == last_rc);
    pc_recon_csv_free(r);
}

/* Bytes → a reference of printable characters (commas, quotes included). */
static void take_ref(const uint8_t **p, const uint8_t *end, char *out, size_t min)
{
    size_t n = 0;
    size_t want = *p < end ? (size_t)(**p % 40) + min : min;
    if (*p < end)
        (*p)++;
    for (; n < want && *p < end; n++, (*p)++)
        out[n] = (char)(' ' + **p % 95);
    for (; n < min; n++)
        out[n] = 'x';
    out[n] = 0;
}

static void round_trip(const uint8_t *data, size_t size)
{
    static const char *const types[] = {"PAY", "REFUND", "PAYOUT", "PAYOUT_RETURN"};
    static const char *const statuses[] = {"SUCCESS", "FAILED", "CLOSED"};
    static const char *const curs[] = {"CNY", "USD", "EUR", "JPY"};
    enum { MAX_ROWS = 32 };
    char cref[MAX_ROWS][48], pref[MAX_ROWS][48];
    pc_sim_stmt_row_t rows[MAX_ROWS];
    const uint8_t *p = data, *end = data + size;
    int n = 0;
    pc_buf_t b = {0};
    pc_sim_stmt_header(&b);
    while (p < end && n < MAX_ROWS) {
        pc_sim_stmt_row_t *r = &rows[n];
        take_ref(&p, end, cref[n], 1);
        /* Unique per row, so that no line repeats another's channel_ref. */
        char suffix[8];
        snprintf(suffix, sizeof suffix, "#%d", n);
        strncat(cref[n], suffix, sizeof cref[n] - strlen(cref[n]) - 1);
        take_ref(&p, end, pref[n], 0);
        uint64_t v = 0;
        for (int k = 0; k < 8 && p < end; k++, p++)
            v = v << 8 | *p;
        r->channel_ref = cref[n];
        r->paycore_ref = pref[n];
        r->type = types[v % 4];
        r->amount = (int64_t)(v % 1000000000000001ull);
        r->currency = curs[(v >> 3) % 4];
        r->fee = (int64_t)((v >> 7) % 100000);
        r->status = statuses[(v >> 11) % 3];
        r->time_ms = (int64_t)(v % 253402300799ull) * 1000; /* up to 9999-12-31 */
        pc_sim_stmt_row(&b, r);
        n++;
    }
    if (b.oom) {
        pc_buf_free(&b);
        return;
    }
    pc_recon_csv_t *rd = NULL;
    char err[256];
    must(pc_recon_csv_open(b.p, b.len, &rd, err, sizeof err) == 0);
    pc_recon_line_t line;
    for (int i = 0; i < n; i++) {
        int rc = pc_recon_csv_next(rd, &line, err, sizeof err);
        if (rc != 1) {
            fprintf(stderr, "row %d not read back: %s\n", i + 1, err);
            abort();
        }
        must(!strcmp(line.channel_ref, rows[i].channel_ref));
        must(!strcmp(line.paycore_ref, rows[i].paycore_ref));
        must(!strcmp(line.type, rows[i].type) && !strcmp(line.status, rows[i].status));
        must(line.amount == rows[i].amount && line.fee == rows[i].fee);
        must(!strcmp(line.currency, rows[i].currency));
        must(line.time_s == rows[i].time_ms / 1000);
        /* channel_refs are unique; a second SUCCESS of one type and
         * paycore_ref is a duplicate (the channel took a number twice). */
        int dup = 0;
        for (int j = 0; j < i && rows[i].paycore_ref[0] && !strcmp(rows[i].status, "SUCCESS"); j++)
            dup |= !strcmp(rows[j].status, "SUCCESS") && !strcmp(rows[j].type, rows[i].type) &&
                   !strcmp(rows[j].paycore_ref, rows[i].paycore_ref);
        must(line.duplicate == dup);
    }
    must(pc_recon_csv_next(rd, &line, err, sizeof err) == 0);
    pc_recon_csv_free(rd);
    pc_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    raw(data, size);
    round_trip(data, size);
    return 0;
}
