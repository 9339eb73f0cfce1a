#include "sim/format.h"
#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void pc_sim_format_time(int64_t ms, char out[PC_SIM_TIME_LEN])
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, PC_SIM_TIME_LEN, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void pc_sim_format_date(int64_t ms, char out[PC_SIM_DATE_LEN])
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, PC_SIM_DATE_LEN, "%Y-%m-%d", &tm);
}

static int digits(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

bool pc_sim_date_valid(const char *s)
{
    if (strlen(s) != 10 || s[4] != '-' || s[7] != '-')
        return false;
    int y = digits(s, 4), m = digits(s + 5, 2), d = digits(s + 8, 2);
    if (y < 1970 || m < 1 || m > 12 || d < 1)
        return false;
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    int max = mdays[m - 1] + (m == 2 && leap);
    return d <= max;
}

int pc_sim_date_from_file(const char *name, const char *ext, char out[PC_SIM_DATE_LEN])
{
    size_t n = strlen(name), e = strlen(ext);
    if (n != 10 + e || strcmp(name + 10, ext) != 0)
        return PC_EINVAL;
    memcpy(out, name, 10);
    out[10] = 0;
    return pc_sim_date_valid(out) ? 0 : PC_EINVAL;
}

void pc_sim_csv_field(pc_buf_t *b, const char *s)
{
    if (!s)
        return;
    if (strpbrk(s, ",\"\r\n") == NULL) {
        pc_buf_str(b, s);
        return;
    }
    pc_buf_add(b, "\"", 1);
    for (const char *p = s; *p; p++) {
        if (*p == '"')
            pc_buf_add(b, "\"\"", 2);
        else
            pc_buf_add(b, p, 1);
    }
    pc_buf_add(b, "\"", 1);
}

static void csv_int(pc_buf_t *b, int64_t v)
{
    pc_buf_printf(b, "%lld", (long long)v);
}

static void csv_sep(pc_buf_t *b)
{
    pc_buf_add(b, ",", 1);
}

void pc_sim_stmt_header(pc_buf_t *b)
{
    pc_buf_str(b, "channel_ref,paycore_ref,type,amount,currency,fee,status,time\n");
}

void pc_sim_stmt_row(pc_buf_t *b, const pc_sim_stmt_row_t *row)
{
    char when[PC_SIM_TIME_LEN];
    pc_sim_format_time(row->time_ms, when);
    pc_sim_csv_field(b, row->channel_ref);
    csv_sep(b);
    pc_sim_csv_field(b, row->paycore_ref);
    csv_sep(b);
    pc_sim_csv_field(b, row->type);
    csv_sep(b);
    csv_int(b, row->amount);
    csv_sep(b);
    pc_sim_csv_field(b, row->currency);
    csv_sep(b);
    csv_int(b, row->fee);
    csv_sep(b);
    pc_sim_csv_field(b, row->status);
    csv_sep(b);
    pc_sim_csv_field(b, when);
    pc_buf_add(b, "\n", 1);
}

void pc_sim_cb_header(pc_buf_t *b)
{
    pc_buf_str(b, "chargeback_ref,channel_ref,paycore_ref,amount,currency,reason_code,time,"
                  "respond_by\n");
}

void pc_sim_cb_row(pc_buf_t *b, const pc_sim_cb_row_t *row)
{
    char when[PC_SIM_TIME_LEN], due[PC_SIM_TIME_LEN];
    pc_sim_format_time(row->time_ms, when);
    pc_sim_format_time(row->respond_by_ms, due);
    pc_sim_csv_field(b, row->chargeback_ref);
    csv_sep(b);
    pc_sim_csv_field(b, row->channel_ref);
    csv_sep(b);
    pc_sim_csv_field(b, row->paycore_ref);
    csv_sep(b);
    csv_int(b, row->amount);
    csv_sep(b);
    pc_sim_csv_field(b, row->currency);
    csv_sep(b);
    pc_sim_csv_field(b, row->reason_code);
    csv_sep(b);
    pc_sim_csv_field(b, when);
    csv_sep(b);
    pc_sim_csv_field(b, due);
    pc_buf_add(b, "\n", 1);
}
