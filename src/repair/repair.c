#include "repair/repair.h"
#include "channel/client.h"
#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"
#include "engine/engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pc_repair {
    pc_app_t *app;
    uv_timer_t timer;
    char schedule[512]; /* "{2000,5000,…}" as a PostgreSQL int array literal */
    long long not_found_after_s;
    int claiming;
    int in_flight;
};

typedef struct {
    pc_repair_t *r;
    char payment_no[40];
    long long age_s;
    int last;
} job_t;

static void count(const char *result)
{
    char labels[64];
    snprintf(labels, sizeof labels, "kind=\"payment\",result=\"%s\"", result);
    pc_metrics_add("pc_repairs_total", labels, 1);
}

static void flag_cb(void *data, int status, pc_db_res_t *res)
{
    (void)data;
    (void)status;
    (void)res;
}

static void flag_for_ops(job_t *j)
{
    pc_log_warn("repair.exhausted",
                "payment %s still has no final answer after the last scheduled query: "
                "flagged for ops",
                j->payment_no);
    count("flagged");
    const char *p[] = {j->payment_no};
    pc_db_query(j->r->app->db, "UPDATE payments SET needs_ops = true WHERE payment_no = $1", 1, p,
                flag_cb, NULL);
}

static void applied_cb(void *data, pc_api_err_t err, const char *message, json_t *payment)
{
    job_t *j = data;
    (void)message;
    json_decref(payment);
    if (err != PC_API_OK)
        pc_log_warn("repair.apply_failed", "payment %s: %s", j->payment_no, pc_api_err_code(err));
    j->r->in_flight--;
    free(j);
}

static void queried_cb(void *data, const pc_ch_result_t *res)
{
    job_t *j = data;
    pc_repair_t *r = j->r;
    int final = res->status == PC_CH_SUCCESS || res->status == PC_CH_FAILED;
    /* The request may still be on its way to the channel. The age is in
     * whole seconds rounded down: rounded to the nearest, a payment 1.5 s
     * old passed a 2-s limit while its request (1.5-s timeout) was still in
     * flight, as test_repair caught once in CI. */
    if (res->status == PC_CH_FAILED && !strcmp(res->code, "NOT_FOUND") &&
        j->age_s < r->not_found_after_s)
        final = 0;
    if (final) {
        count(res->status == PC_CH_SUCCESS ? "success" : "failed");
        pc_log_info("repair.applied", "payment %s: channel says %s%s%s", j->payment_no,
                    res->status == PC_CH_SUCCESS ? "SUCCESS" : "FAILED", res->code[0] ? " " : "",
                    res->code);
        if (pc_engine_apply(r->app->engine, j->payment_no, res, applied_cb, j) == 0)
            return;
    } else {
        count("pending");
        if (j->last)
            flag_for_ops(j);
    }
    r->in_flight--;
    free(j);
}

static void claimed_cb(void *data, int status, pc_db_res_t *res)
{
    pc_repair_t *r = data;
    r->claiming = 0;
    if (status)
        return;
    for (int i = 0; i < pc_db_rows(res); i++) {
        job_t *j = calloc(1, sizeof *j);
        j->r = r;
        snprintf(j->payment_no, sizeof j->payment_no, "%s", pc_db_val(res, i, "payment_no"));
        j->age_s = pc_db_val_i64(res, i, "age");
        j->last = pc_db_val(res, i, "last")[0] == 't';
        const char *ch = pc_db_val(res, i, "channel_id");
        r->in_flight++;
        if (!ch[0] || pc_channel_query_payment(r->app->channel_client, ch, j->payment_no,
                                               queried_cb, j) < 0) {
            if (j->last)
                flag_for_ops(j);
            r->in_flight--;
            free(j);
        }
    }
}

static void tick(uv_timer_t *t)
{
    pc_repair_t *r = t->data;
    if (r->claiming || r->in_flight > 200 || r->app->shutting_down)
        return;
    r->claiming = 1;
    const char *p[] = {r->schedule};
    /* Claim by moving each payment's next query forward: another node's
     * claim skips these rows (SKIP LOCKED) and sees the new time after. */
    if (pc_db_query(
            r->app->db,
            "WITH due AS (SELECT payment_no FROM payments WHERE status IN ('PROCESSING', "
            "'UNKNOWN') AND next_query_at <= now() ORDER BY next_query_at LIMIT 50 FOR "
            "UPDATE SKIP LOCKED) UPDATE payments p SET query_attempts = p.query_attempts "
            "+ 1, next_query_at = CASE WHEN p.query_attempts + 1 > "
            "array_length($1::int[], 1) THEN NULL ELSE now() + ($1::int[])[p.query_attempts "
            "+ 1] * interval '1 millisecond' END FROM due WHERE p.payment_no = "
            "due.payment_no RETURNING p.payment_no, coalesce(p.channel_id, '') AS "
            "channel_id, floor(extract(epoch FROM now() - p.created_at))::bigint AS age, "
            "(p.query_attempts > array_length($1::int[], 1)) AS last",
            1, p, claimed_cb, r) < 0)
        r->claiming = 0;
}

pc_repair_t *pc_repair_new(pc_app_t *app)
{
    pc_repair_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->app = app;
    int64_t ms[32];
    int n = pc_config_ms_list(app->cfg, "repair.schedule_ms", ms, 32);
    if (n <= 0) {
        free(r);
        return NULL;
    }
    size_t off = (size_t)snprintf(r->schedule, sizeof r->schedule, "{");
    for (int i = 0; i < n; i++)
        off += (size_t)snprintf(r->schedule + off, sizeof r->schedule - off, "%s%lld", i ? "," : "",
                                (long long)ms[i]);
    snprintf(r->schedule + off, sizeof r->schedule - off, "}");
    r->not_found_after_s = pc_config_int(app->cfg, "repair.not_found_after_s");
    pc_metrics_describe("pc_repairs_total", PC_METRIC_COUNTER,
                        "status queries of open payments, by result");
    uv_timer_init(app->loop, &r->timer);
    r->timer.data = r;
    return r;
}

void pc_repair_start(pc_repair_t *r)
{
    uint64_t ms = (uint64_t)pc_config_int(r->app->cfg, "repair.poll_ms");
    uv_timer_start(&r->timer, tick, ms, ms);
}

void pc_repair_stop(pc_repair_t *r)
{
    uv_timer_stop(&r->timer);
    uv_close((uv_handle_t *)&r->timer, NULL);
}

void pc_repair_free(pc_repair_t *r)
{
    free(r);
}
