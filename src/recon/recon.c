#include "recon/recon.h"
#include "channel/client.h"
#include "channel/config.h"
#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"
#include "engine/engine.h"
#include "payout/payout.h"
#include "ledger/ledger.h"
#include "recon/recon_adjust.h"
#include "recon/recon_csv.h"
#include "recon/recon_match.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_CHANNELS 64
/* How far back the daily job looks for days of a channel never reconciled. */
#define CATCH_UP_DAYS 7
#define REPAIR_MAX_ATTEMPTS 5
/* SQL: run r (of recon_runs) started once its business day was over for
 * reconciling, recon.daily_at being m minutes after midnight UTC: see
 * recon_day_over (migration 0084), which also says why. A run of a day not
 * yet over saw part of the day's statement or records: its DONE must not
 * keep the daily job off the day, and the admin API shows it provisional. */
#define RECON_DAY_OVER(r, m)                                                                       \
    "recon_day_over(" r ".started_at, " r ".business_date, " r ".requested_by, " m "::int)"

struct pc_recon {
    pc_app_t *app;
    int64_t statement_timeout_ms; /* of a match's statements (on its own connection) */
    uv_timer_t timer;
    int timer_on;
    int daily;
    int daily_at_min;     /* minutes after midnight UTC */
    char daily_at_arg[8]; /* the same as a statement parameter */
    int64_t poll_ms, run_timeout_s, retry_s;
    int work_mem_mb;
    /* the daily job: (channel, day) pairs to run */
    int job_busy;
    struct {
        char id[33];
        char date[11];
    } job_queue[MAX_CHANNELS * (CATCH_UP_DAYS + 1)];
    int job_n, job_next;
    char yesterday[11];
    /* channels whose open-differences gauge was set */
    char gauged[MAX_CHANNELS][33];
    int ngauged;
};

static int valid_channel_id(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    return n >= 1 && n <= 32 && strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_") == n;
}

/* ---------- metrics ---------- */

static void gauge_cb(void *data, int status, pc_db_res_t *res)
{
    pc_recon_t *rc = data;
    if (status)
        return;
    /* Channels that had open differences and have none now go to 0. */
    for (int g = 0; g < rc->ngauged; g++) {
        int seen = 0;
        for (int i = 0; i < pc_db_rows(res); i++)
            seen |= !strcmp(pc_db_val(res, i, "channel_id"), rc->gauged[g]);
        if (!seen) {
            char labels[64];
            snprintf(labels, sizeof labels, "channel=\"%s\"", rc->gauged[g]);
            pc_metrics_set("pc_recon_open_diffs", labels, 0);
        }
    }
    for (int i = 0; i < pc_db_rows(res); i++) {
        const char *ch = pc_db_val(res, i, "channel_id");
        char labels[64];
        snprintf(labels, sizeof labels, "channel=\"%s\"", ch);
        pc_metrics_set("pc_recon_open_diffs", labels, pc_db_val_i64(res, i, "n"));
        int known = 0;
        for (int g = 0; g < rc->ngauged; g++)
            known |= !strcmp(rc->gauged[g], ch);
        if (!known && rc->ngauged < MAX_CHANNELS)
            snprintf(rc->gauged[rc->ngauged++], sizeof rc->gauged[0], "%s", ch);
    }
}

/* Sets pc_recon_open_diffs from the database (every node shows the same). */
static void refresh_gauge(pc_recon_t *rc)
{
    pc_db_query(rc->app->db,
                "SELECT channel_id, count(*) AS n FROM recon_diffs WHERE status = 'OPEN' GROUP BY "
                "channel_id",
                0, NULL, gauge_cb, rc);
}

static void count(const char *metric, const char *channel, const char *label, const char *value,
                  int64_t n)
{
    char labels[160];
    snprintf(labels, sizeof labels, "channel=\"%s\",%s=\"%s\"", channel, label, value);
    pc_metrics_add(metric, labels, n);
}

/* ---------- a run ---------- */

typedef struct {
    pc_recon_t *rc;
    pc_recon_run_cb cb;
    void *data;
    char channel_id[33], date[11], requested_by[65];
    int job;
    const char *upload;
    size_t upload_len;
    char *fetched; /* our copy of a fetched statement */
    size_t fetched_len;
    pc_recon_fee_t fees[PC_RECON_MAX_FEES]; /* the channel file's, per currency */
    size_t nfees;
    int64_t run_id;
    int attempt;
    /* outcome */
    int status;
    char message[300];
    /* repairs */
    int repairs_pending;
    int repaired;
} run_t;

static void run_free(run_t *r)
{
    free(r->fetched);
    free(r);
}

static void answer(run_t *r, int status, const char *message, json_t *run)
{
    r->cb(r->data, status, message ? message : "", run);
    run_free(r);
}

/* Answers with the run row as it now is. */
static void answered_row_cb(void *data, int status, pc_db_res_t *res)
{
    run_t *r = data;
    json_t *run = NULL;
    if (!status && pc_db_rows(res) == 1)
        run = json_loads(pc_db_val(res, 0, "run"), 0, NULL);
    refresh_gauge(r->rc);
    if (r->status == 0 && !run)
        answer(r, status ? status : PC_EUNAVAIL, "the run could not be read back", NULL);
    else
        answer(r, r->status, r->message, run);
}

static void answer_with_run(run_t *r)
{
    char id[24];
    snprintf(id, sizeof id, "%lld", (long long)r->run_id);
    const char *p[] = {id, r->rc->daily_at_arg};
    if (pc_db_query(
            r->rc->app->db,
            "SELECT recon_run_json(r, $2::int)::text AS run FROM recon_runs r WHERE run_id = $1", 2,
            p, answered_row_cb, r) < 0)
        answer(r, r->status ? r->status : PC_EUNAVAIL, r->message, NULL);
}

static void failed_row_cb(void *data, int status, pc_db_res_t *res)
{
    run_t *r = data;
    (void)status;
    (void)res;
    answer_with_run(r);
}

/* The run could not finish: the row says why. */
static void fail_run(run_t *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail_run(run_t *r, int status, const char *fmt, ...)
{
    r->status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->message, sizeof r->message, fmt, ap);
    va_end(ap);
    pc_log_error("recon.run_failed", "%s %s (run %lld): %s", r->channel_id, r->date,
                 (long long)r->run_id, r->message);
    count("pc_recon_runs_total", r->channel_id, "status", "FAILED", 1);
    char id[24], att[16];
    snprintf(id, sizeof id, "%lld", (long long)r->run_id);
    snprintf(att, sizeof att, "%d", r->attempt);
    const char *p[] = {id, att, r->message};
    if (pc_db_query(r->rc->app->db,
                    "UPDATE recon_runs SET status = 'FAILED', error = $3, finished_at = now() "
                    "WHERE run_id = $1 AND attempts = $2 AND status = 'RUNNING'",
                    3, p, failed_row_cb, r) < 0)
        answer(r, status, r->message, NULL);
}

/* --- repair: lost callbacks --- */

static void repairs_counted_cb(void *data, int status, pc_db_res_t *res)
{
    run_t *r = data;
    (void)status;
    (void)res;
    answer_with_run(r);
}

static void repair_done(run_t *r)
{
    if (--r->repairs_pending > 0)
        return;
    char id[24];
    snprintf(id, sizeof id, "%lld", (long long)r->run_id);
    const char *p[] = {id};
    if (pc_db_query(r->rc->app->db,
                    "UPDATE recon_runs SET auto_repaired = (SELECT count(*) FROM recon_diffs WHERE "
                    "run_id = $1 AND status = 'AUTO_REPAIRED') WHERE run_id = $1",
                    1, p, repairs_counted_cb, r) < 0)
        answer_with_run(r);
}

typedef struct {
    run_t *r;
    char diff_id[24];
    char payment_no[81]; /* or the payout's number */
} repair_t;

static void repair_marked_cb(void *data, int status, pc_db_res_t *res)
{
    repair_t *x = data;
    run_t *r = x->r;
    if (!status && pc_db_affected(res) == 1) {
        r->repaired++;
        count("pc_recon_repairs_total", r->channel_id, "result", "repaired", 1);
    }
    free(x);
    repair_done(r);
}

static void mark_repaired(repair_t *x, const char *reason)
{
    run_t *r = x->r;
    const char *p[] = {x->diff_id, reason};
    if (pc_db_query(r->rc->app->db,
                    "UPDATE recon_diffs SET status = 'AUTO_REPAIRED', resolved_by = 'recon', "
                    "resolved_at = now(), updated_at = now(), reason = $2 WHERE diff_id = $1 AND "
                    "status = 'OPEN'",
                    2, p, repair_marked_cb, x) < 0) {
        free(x);
        repair_done(r);
    }
}

/* A repair's end: applied, the difference is marked repaired with reason;
 * not, it stays open for ops or the next run (another answer won, or the
 * database failed), and why_not says what happened. */
static void repair_outcome(repair_t *x, const char *what, const char *why_not, const char *reason)
{
    run_t *r = x->r;
    if (why_not) {
        pc_log_warn("recon.repair_not_applied", "%s %s (difference %s): %s", what, x->payment_no,
                    x->diff_id, why_not);
        count("pc_recon_repairs_total", r->channel_id, "result", "not_applied", 1);
        free(x);
        repair_done(r);
        return;
    }
    pc_log_info("recon.repaired", "%s %s repaired from the statement of %s %s", what, x->payment_no,
                r->channel_id, r->date);
    mark_repaired(x, reason);
}

static void repair_applied_cb(void *data, pc_api_err_t err, const char *message, json_t *payment)
{
    const char *st = payment ? json_string_value(json_object_get(payment, "status")) : NULL;
    int ok = err == PC_API_OK && st && !strcmp(st, "SUCCESS");
    repair_outcome(data, "payment",
                   ok                 ? NULL
                   : err != PC_API_OK ? (message ? message : "error")
                   : st               ? st
                                      : "?",
                   "lost callback: the payment was advanced as the channel's success on the "
                   "statement says");
    json_decref(payment);
}

static void payout_repaired_cb(void *data, int applied)
{
    repair_outcome(data, "payout", applied > 0 ? NULL : "not marked returned",
                   "lost callback: the payout was marked returned as the channel's statement "
                   "says");
}

static void repairs_claimed_cb(void *data, int status, pc_db_res_t *res)
{
    run_t *r = data;
    r->repairs_pending = 1; /* held while starting them */
    for (int i = 0; !status && i < pc_db_rows(res); i++) {
        const char *kind = pc_db_val(res, i, "repair");
        int payout = !strcmp(kind, "PAYOUT_RETURN");
        if (strcmp(kind, "PAYMENT") != 0 && !payout)
            continue; /* a repair this version does not know: left open */
        repair_t *x = calloc(1, sizeof *x);
        if (!x)
            break;
        x->r = r;
        snprintf(x->diff_id, sizeof x->diff_id, "%s", pc_db_val(res, i, "diff_id"));
        snprintf(x->payment_no, sizeof x->payment_no, "%s", pc_db_val(res, i, "local_ref"));
        /* The line as the channel's callback would have carried it. */
        pc_ch_result_t cr;
        memset(&cr, 0, sizeof cr);
        cr.status = payout ? PC_CH_RETURNED : PC_CH_SUCCESS;
        snprintf(cr.channel_txn_id, sizeof cr.channel_txn_id, "%s",
                 pc_db_val(res, i, "channel_ref"));
        cr.amount = pc_db_val_i64(res, i, "line_amount");
        snprintf(cr.currency, sizeof cr.currency, "%s", pc_db_val(res, i, "line_currency"));
        cr.fee = pc_db_val_i64(res, i, "line_fee");
        r->repairs_pending++;
        if (payout ? pc_payout_apply(r->rc->app, x->payment_no, &cr, payout_repaired_cb, x) < 0
                   : pc_engine_apply(r->rc->app->engine, r->channel_id, x->payment_no, &cr,
                                     repair_applied_cb, x) < 0) {
            r->repairs_pending--;
            free(x);
        }
    }
    repair_done(r);
}

/* Claims this run's repairable differences (a re-run within a minute does
 * not try the same ones again) and repairs them. Only lines that agree with
 * the payment in amount and currency are repaired: the payment is captured
 * with its own amounts. */
static void repair(run_t *r)
{
    char id[24], max[16];
    snprintf(id, sizeof id, "%lld", (long long)r->run_id);
    snprintf(max, sizeof max, "%d", REPAIR_MAX_ATTEMPTS);
    const char *p[] = {id, max};
    if (pc_db_query(r->rc->app->db,
                    "UPDATE recon_diffs SET repair_attempts = repair_attempts + 1, repair_at = "
                    "now(), updated_at = now() WHERE run_id = $1 AND status = 'OPEN' AND repair IS "
                    "NOT NULL AND repair_attempts < $2::int AND line_amount = local_amount AND "
                    "line_currency = local_currency AND (repair_at IS NULL OR repair_at < now() - "
                    "interval '1 minute') RETURNING diff_id, repair, local_ref, channel_ref, "
                    "line_amount, line_currency, line_fee",
                    2, p, repairs_claimed_cb, r) < 0)
        answer_with_run(r);
}

/* --- matching --- */

static void matched_cb(void *data, int status, const pc_recon_match_result_t *res)
{
    run_t *r = data;
    free(r->fetched);
    r->fetched = NULL;
    if (status == PC_ECONFLICT) {
        answer(r, PC_ECONFLICT, "another node took this day over", NULL);
        return;
    }
    if (status) {
        fail_run(r, status == PC_EINVAL ? PC_EINVAL : PC_EUNAVAIL, "%s", res->error);
        return;
    }
    int64_t found = 0;
    for (int k = 0; k < PC_RECON_KIND_COUNT; k++) {
        found += res->found[k];
        if (res->added[k])
            count("pc_recon_diffs_total", r->channel_id, "kind", pc_recon_kind_name(k),
                  res->added[k]);
    }
    count("pc_recon_runs_total", r->channel_id, "status", "DONE", 1);
    pc_log_info("recon.matched",
                "%s %s (run %lld, attempt %d): %lld lines, %lld differences (%lld closed), %lld "
                "to repair",
                r->channel_id, r->date, (long long)r->run_id, r->attempt, (long long)res->lines,
                (long long)found, (long long)res->closed, (long long)res->to_repair);
    repair(r);
}

static void match(run_t *r, const char *text, size_t len)
{
    pc_recon_match_opts_t o = {.run_id = r->run_id,
                               .attempt = r->attempt,
                               .channel_id = r->channel_id,
                               .date = r->date,
                               .fees = r->fees,
                               .nfees = r->nfees,
                               .work_mem_mb = r->rc->work_mem_mb,
                               .statement_timeout_ms = r->rc->statement_timeout_ms};
    pc_app_t *app = r->rc->app;
    if (pc_db_resolved(app->db, &o.host, &o.hostaddr) < 0) {
        fail_run(r, PC_EUNAVAIL,
                 "the database's host name is not resolved yet (no pooled "
                 "connection has been up): again at the next attempt");
        return;
    }
    int rc =
        pc_recon_match(app->loop, pc_config_str(app->cfg, "db.url"), &o, text, len, matched_cb, r);
    if (rc < 0)
        fail_run(r, PC_EUNAVAIL, "the match could not start: %s", pc_strerror(rc));
}

static void fetched_cb(void *data, int status, const char *body, size_t len)
{
    run_t *r = data;
    if (status) {
        fail_run(r, PC_EUNAVAIL, "the channel's statement could not be fetched: %s",
                 status == PC_ENOTFOUND ? "the channel has no such file" : pc_strerror(status));
        return;
    }
    /* The body lives only during this callback; the match takes longer. */
    r->fetched = malloc(len + 1);
    if (!r->fetched) {
        fail_run(r, PC_EUNAVAIL, "%s", "out of memory for the statement");
        return;
    }
    memcpy(r->fetched, body, len);
    r->fetched[len] = 0;
    r->fetched_len = len;
    match(r, r->fetched, r->fetched_len);
}

/* --- claim --- */

static void existing_cb(void *data, int status, pc_db_res_t *res)
{
    run_t *r = data;
    json_t *run = NULL;
    const char *st = "";
    if (!status && pc_db_rows(res) == 1) {
        run = json_loads(pc_db_val(res, 0, "run"), 0, NULL);
        st = pc_db_val(res, 0, "status");
    }
    char msg[200];
    if (r->job)
        snprintf(msg, sizeof msg, "the day is %s", st[0] ? st : "taken");
    else {
        const char *node = run ? json_string_value(json_object_get(run, "node")) : NULL;
        snprintf(msg, sizeof msg, "%s %s is being reconciled by another request (node %s)",
                 r->channel_id, r->date, node ? node : "?");
    }
    answer(r, status ? status : PC_ECONFLICT, msg, run);
}

static void claimed_cb(void *data, int status, pc_db_res_t *res)
{
    run_t *r = data;
    if (r->status) {
        answer(r, r->status, r->message, NULL);
        return;
    }
    if (status) {
        answer(r, PC_EUNAVAIL, "the database is unavailable", NULL);
        return;
    }
    if (pc_db_rows(res) == 0) {
        /* Running elsewhere (or, for the job, already run). */
        const char *p[] = {r->channel_id, r->date, r->rc->daily_at_arg};
        if (pc_db_query(r->rc->app->db,
                        "SELECT status, recon_run_json(r, $3::int)::text AS run FROM recon_runs r "
                        "WHERE channel_id = $1 AND business_date = $2::date",
                        3, p, existing_cb, r) < 0)
            answer(r, PC_EUNAVAIL, "the database is unavailable", NULL);
        return;
    }
    r->run_id = pc_db_val_i64(res, 0, "run_id");
    r->attempt = (int)pc_db_val_i64(res, 0, "attempts");
    pc_log_info("recon.run", "%s %s: run %lld attempt %d (%s, asked by %s)", r->channel_id, r->date,
                (long long)r->run_id, r->attempt, r->upload ? "upload" : "channel",
                r->requested_by);
    if (r->upload) {
        match(r, r->upload, r->upload_len);
        return;
    }
    int rc = pc_channel_fetch_file(r->rc->app->channel_client, r->channel_id, "statements", r->date,
                                   fetched_cb, r);
    if (rc < 0)
        fail_run(r, PC_EUNAVAIL, "the channel's statement could not be requested: %s",
                 pc_strerror(rc));
}

int pc_recon_run(pc_recon_t *rc, const pc_recon_run_req_t *req, pc_recon_run_cb cb, void *data)
{
    int64_t day;
    if (!rc || !req || !cb || !valid_channel_id(req->channel_id) || !req->date ||
        pc_recon_parse_date(req->date, &day) < 0)
        return PC_EINVAL;
    run_t *r = calloc(1, sizeof *r);
    if (!r)
        return PC_ENOMEM;
    r->rc = rc;
    r->cb = cb;
    r->data = data;
    r->job = req->job;
    snprintf(r->channel_id, sizeof r->channel_id, "%s", req->channel_id);
    snprintf(r->date, sizeof r->date, "%s", req->date);
    /* "job" names the daily job's runs, which RECON_DAY_OVER judges by
     * midnight alone: a person of that name is "ops" here. */
    int named = req->requested_by && req->requested_by[0] &&
                (req->job || strcmp(req->requested_by, "job") != 0);
    snprintf(r->requested_by, sizeof r->requested_by, "%s", named ? req->requested_by : "ops");
    if (req->csv) {
        r->upload = req->csv;
        r->upload_len = req->csv_len;
    }
    const pc_channel_t *ch = pc_channels_find(rc->app->channels, r->channel_id);
    if (!ch) {
        /* Answered later, as the contract says. */
        r->status = PC_ENOTFOUND;
        snprintf(r->message, sizeof r->message, "no channel has the id %s", r->channel_id);
    } else {
        for (size_t i = 0; i < ch->ncurrencies && i < PC_RECON_MAX_FEES; i++) {
            memcpy(r->fees[i].currency, ch->currencies[i], 4);
            r->fees[i].rate_bp = ch->amounts[i].fee_rate_bp;
            r->fees[i].fixed = ch->amounts[i].fee_fixed;
            r->nfees = i + 1;
        }
    }
    char stale[24], retry[24];
    snprintf(stale, sizeof stale, "%lld", (long long)rc->run_timeout_s);
    snprintf(retry, sizeof retry, "%lld", (long long)rc->retry_s);
    const char *p[] = {r->channel_id,
                       r->date,
                       r->upload ? "UPLOAD" : "CHANNEL",
                       rc->app->node_id,
                       r->requested_by,
                       r->job ? "job" : "manual",
                       stale,
                       retry,
                       rc->daily_at_arg};
    /* One row per day: the insert claims a new day; an existing one is taken
     * when it is not running (manual), when it failed a while ago (job), or
     * when the node running it must have died. */
    static const char claim[] =
        "INSERT INTO recon_runs AS r (channel_id, business_date, status, source, node, "
        "requested_by) VALUES ($1, $2::date, 'RUNNING', $3, $4, $5) ON CONFLICT (channel_id, "
        "business_date) DO UPDATE SET status = 'RUNNING', attempts = r.attempts + 1, source = "
        "EXCLUDED.source, node = EXCLUDED.node, requested_by = EXCLUDED.requested_by, started_at "
        "= now(), finished_at = NULL, error = NULL WHERE (r.status = 'RUNNING' AND r.started_at "
        "< now() - $7::bigint * interval '1 second') OR ($6::text = 'manual' AND r.status <> "
        "'RUNNING') OR ($6::text = 'job' AND r.status = 'FAILED' AND r.finished_at < now() - "
        "$8::bigint * interval '1 second') OR ($6::text = 'job' AND r.status = 'DONE' AND "
        "NOT " RECON_DAY_OVER("r", "$9") ") RETURNING run_id, attempts";
    int qrc = r->status ? pc_db_query(rc->app->db, "SELECT 1 WHERE false", 0, NULL, claimed_cb, r)
                        : pc_db_query(rc->app->db, claim, 9, p, claimed_cb, r);
    if (qrc < 0) {
        run_free(r);
        return qrc;
    }
    return 0;
}

/* ---------- resolving a difference ---------- */

typedef struct {
    pc_recon_t *rc;
    pc_recon_resolve_cb cb;
    void *data;
    pc_db_tx_t *tx;
    char diff_id[24];
    char reason[501], who[65];
    int adjust;
    char txn_id[24];
    int status;
    char message[200];
    json_t *diff;
} resolve_t;

static void resolve_end(resolve_t *x)
{
    if (x->tx) {
        pc_db_tx_rollback(x->tx);
        x->tx = NULL;
    }
    if (x->status == 0)
        refresh_gauge(x->rc);
    x->cb(x->data, x->status, x->message, x->diff);
    free(x);
}

static void resolve_fail(resolve_t *x, int status, const char *message)
{
    if (!x->status) {
        x->status = status;
        snprintf(x->message, sizeof x->message, "%s", message);
    }
    resolve_end(x);
}

static void resolve_committed_cb(void *data, int status)
{
    resolve_t *x = data;
    if (status) {
        json_decref(x->diff);
        x->diff = NULL;
        resolve_fail(x, status, "the resolution could not be committed");
        return;
    }
    pc_log_info("recon.resolved", "difference %s resolved by %s%s%s: %s", x->diff_id, x->who,
                x->txn_id[0] ? " with ledger transaction " : "", x->txn_id, x->reason);
    resolve_end(x);
}

static void resolved_row_cb(void *data, int status, pc_db_res_t *res)
{
    resolve_t *x = data;
    if (status || pc_db_rows(res) != 1) {
        resolve_fail(x, status ? status : PC_ECONFLICT, "the difference could not be resolved");
        return;
    }
    x->diff = json_loads(pc_db_val(res, 0, "diff"), 0, NULL);
    pc_db_tx_t *tx = x->tx;
    x->tx = NULL;
    pc_db_tx_commit(tx, resolve_committed_cb, x);
}

static void mark_resolved(resolve_t *x)
{
    const char *p[] = {x->diff_id, x->reason, x->who, x->txn_id[0] ? x->txn_id : NULL};
    if (pc_db_tx_query(x->tx,
                       "UPDATE recon_diffs d SET status = 'RESOLVED', reason = $2, resolved_by = "
                       "$3, resolved_at = now(), updated_at = now(), ledger_txn_id = $4::bigint "
                       "WHERE diff_id = $1::bigint AND status = 'OPEN' RETURNING "
                       "recon_diff_json(d)::text AS diff",
                       4, p, resolved_row_cb, x) < 0)
        resolve_fail(x, PC_EUNAVAIL, "the database is unavailable");
}

static void posted_cb(void *data, int status, int64_t txn_id)
{
    resolve_t *x = data;
    if (status) {
        resolve_fail(x, status == PC_LEDGER_DUPLICATE ? PC_ECONFLICT : PC_EUNAVAIL,
                     status == PC_LEDGER_DUPLICATE
                         ? "an adjustment for this difference was posted already"
                         : "the adjustment could not be posted");
        return;
    }
    snprintf(x->txn_id, sizeof x->txn_id, "%lld", (long long)txn_id);
    mark_resolved(x);
}

static int64_t col_i64(pc_db_res_t *res, const char *name, int *has)
{
    int c = pc_db_col(res, name);
    *has = !pc_db_isnull(res, 0, c);
    return *has ? pc_db_get_i64(res, 0, c) : 0;
}

static void locked_diff_cb(void *data, int status, pc_db_res_t *res)
{
    resolve_t *x = data;
    if (status) {
        resolve_fail(x, PC_EUNAVAIL, "the database is unavailable");
        return;
    }
    if (pc_db_rows(res) == 0) {
        resolve_fail(x, PC_ENOTFOUND, "no such difference");
        return;
    }
    if (strcmp(pc_db_val(res, 0, "status"), "OPEN") != 0) {
        x->diff = json_loads(pc_db_val(res, 0, "diff"), 0, NULL);
        char msg[120];
        snprintf(msg, sizeof msg, "difference %s is %s already", x->diff_id,
                 pc_db_val(res, 0, "status"));
        resolve_fail(x, PC_ECONFLICT, msg);
        return;
    }
    if (!x->adjust) {
        mark_resolved(x);
        return;
    }
    /* A success missing from the day's statement is often on the next day's
     * (paid here just before midnight, booked by the channel just after):
     * that run carries it and closes the difference, but only an open one.
     * Adjusted before, the adjustment stayed for money the channel did pay.
     * A later day's statement listing it (a weekend batch) reports the
     * adjustment contradicted (recon_match.c, SQL_CONTRADICTED). */
    if (pc_db_val(res, 0, "next_day_unread")[0] == 't') {
        resolve_fail(x, PC_ECONFLICT,
                     "a success missing from a day's statement is often on the next day's: "
                     "reconcile the next day first, then adjust what is still missing");
        return;
    }
    /* An adjustment is computed from the run's snapshot of our record: if
     * the record has moved since (a late callback or status query captured
     * the payment the statement said was paid), the money would be booked
     * twice. The live row is locked (a capture waits) and must still be as
     * the run saw it. */
    if (strcmp(pc_db_val(res, 0, "live_status"), pc_db_val(res, 0, "local_status")) != 0) {
        char msg[200];
        snprintf(msg, sizeof msg,
                 "the record is %s now, not %s as the run saw it: run the day again before "
                 "adjusting",
                 pc_db_val(res, 0, "live_status")[0] ? pc_db_val(res, 0, "live_status") : "gone",
                 pc_db_val(res, 0, "local_status"));
        resolve_fail(x, PC_ECONFLICT, msg);
        return;
    }
    /* A contradicted adjustment is booked back: the money is the adjusted
     * difference's, the other way round. */
    int reverse = !strcmp(pc_db_val(res, 0, "kind"), "ADJUSTMENT_CONTRADICTED");
    pc_recon_money_t m;
    memset(&m, 0, sizeof m);
    int has_amount, has_fee, has_local_amount, has_expected;
    m.kind = pc_db_val(res, 0, "money_kind");
    m.type = pc_db_val(res, 0, "obj");
    m.channel_id = pc_db_val(res, 0, "channel_id");
    m.line_amount = col_i64(res, "line_amount", &has_amount);
    m.line_fee = col_i64(res, "line_fee", &has_fee);
    m.has_line = has_amount;
    m.line_status = pc_db_val(res, 0, "line_status");
    m.line_currency = pc_db_val(res, 0, "line_currency");
    m.local_amount = col_i64(res, "local_amount", &has_local_amount);
    m.has_local = has_local_amount;
    m.local_state = pc_db_val(res, 0, "local_state");
    m.local_currency = pc_db_val(res, 0, "local_currency");
    m.expected_fee = col_i64(res, "expected_fee", &has_expected);
    m.has_expected_fee = has_expected;
    pc_recon_adjustment_t a;
    const char *why = "";
    if (pc_recon_adjustment(&m, &a, &why) < 0) {
        resolve_fail(x, PC_EINVAL,
                     reverse ? "the adjustment contradicted cannot be computed again" : why);
        return;
    }
    for (int i = 0; reverse && i < a.n; i++)
        a.legs[i].amount = -a.legs[i].amount;
    char memo[256];
    snprintf(memo, sizeof memo, "recon %s: %.200s", pc_db_val(res, 0, "kind"), x->reason);
    pc_ledger_txn_t t = {"RECON_ADJUST", "recon_diff", x->diff_id, memo, a.legs, (size_t)a.n};
    int rc = pc_ledger_post(x->tx, &t, posted_cb, x);
    if (rc < 0)
        resolve_fail(x, PC_EINVAL, pc_ledger_strerror(rc));
}

static void resolve_begun_cb(void *data, int status, pc_db_tx_t *tx)
{
    resolve_t *x = data;
    if (status) {
        resolve_fail(x, PC_EUNAVAIL, "the database is unavailable");
        return;
    }
    x->tx = tx;
    const char *p[] = {x->diff_id};
    if (pc_db_tx_query(
            tx,
            "SELECT d.status, d.kind, m.kind AS money_kind, m.obj, d.channel_id, m.line_amount, "
            "m.line_fee, m.line_status, m.line_currency, m.local_amount, m.local_state, "
            "m.local_currency, m.expected_fee, recon_diff_json(d)::text AS diff, "
            "coalesce(d.local_status, '') AS local_status, coalesce(CASE "
            "d.local_table WHEN 'payments' THEN (SELECT status FROM payments WHERE "
            "payment_no = d.local_ref FOR UPDATE) WHEN 'refunds' THEN (SELECT status "
            "FROM refunds WHERE refund_no = d.local_ref FOR UPDATE) WHEN 'payouts' THEN "
            "(SELECT status FROM payouts WHERE payout_no = d.local_ref FOR UPDATE) END, "
            "'') AS live_status, (d.kind = 'MISSING_CHANNEL' AND NOT EXISTS (SELECT 1 FROM "
            "recon_runs r WHERE r.channel_id = d.channel_id AND r.business_date = "
            "d.business_date + 1 AND r.status = 'DONE'))::text AS next_day_unread "
            "FROM recon_diffs d LEFT JOIN recon_diffs e ON e.diff_id = d.contradicts AND "
            "e.ledger_txn_id IS NOT NULL CROSS JOIN LATERAL (SELECT (CASE WHEN d.contradicts IS "
            "NULL THEN d ELSE e END).*) m WHERE d.diff_id = $1::bigint FOR UPDATE OF d",
            1, p, locked_diff_cb, x) < 0)
        resolve_fail(x, PC_EUNAVAIL, "the database is unavailable");
}

int pc_recon_resolve(pc_recon_t *rc, int64_t diff_id, const char *reason, int adjust,
                     const char *who, pc_recon_resolve_cb cb, void *data)
{
    size_t rl = reason ? strlen(reason) : 0;
    if (!rc || !cb || diff_id <= 0 || rl == 0 || rl > 500)
        return PC_EINVAL;
    resolve_t *x = calloc(1, sizeof *x);
    if (!x)
        return PC_ENOMEM;
    x->rc = rc;
    x->cb = cb;
    x->data = data;
    x->adjust = adjust;
    snprintf(x->diff_id, sizeof x->diff_id, "%lld", (long long)diff_id);
    snprintf(x->reason, sizeof x->reason, "%s", reason);
    snprintf(x->who, sizeof x->who, "%s", who && who[0] ? who : "ops");
    int qrc = pc_db_begin(rc->app->db, NULL, resolve_begun_cb, x);
    if (qrc < 0) {
        free(x);
        return qrc;
    }
    return 0;
}

/* ---------- the daily job ---------- */

static void job_next(pc_recon_t *rc);

static void job_ran_cb(void *data, int status, const char *message, json_t *run)
{
    pc_recon_t *rc = data;
    /* Done here or by another node: the next tick's query leaves the day
     * out. A failed day is tried again once recon.retry_s has passed (the
     * claim says when). */
    if (status && status != PC_ECONFLICT)
        pc_log_warn("recon.job", "%s %s: %s", rc->job_queue[rc->job_next].id,
                    rc->job_queue[rc->job_next].date, message);
    else if (!status && strcmp(rc->job_queue[rc->job_next].date, rc->yesterday) != 0)
        pc_log_warn("recon.caught_up", "%s %s had never been reconciled: reconciled now",
                    rc->job_queue[rc->job_next].id, rc->job_queue[rc->job_next].date);
    json_decref(run);
    rc->job_next++;
    job_next(rc);
}

static void job_next(pc_recon_t *rc)
{
    while (rc->job_next < rc->job_n && !rc->app->shutting_down) {
        pc_recon_run_req_t req = {
            rc->job_queue[rc->job_next].id, rc->job_queue[rc->job_next].date, NULL, 0, "job", 1};
        if (pc_recon_run(rc, &req, job_ran_cb, rc) == 0)
            return;
        rc->job_next++;
    }
    rc->job_busy = 0;
}

/* The days to run: yesterday for each channel (switched on or off), and
 * each of the CATCH_UP_DAYS before it that was never reconciled although an
 * earlier one was (nodes down over the job's hour, a new channel): the
 * job only ever looked at yesterday, so such a day was never reconciled and
 * nobody was told. Days done are left out, and so are earlier days that
 * failed three times (RECON_FAILED tells ops). */
static void days_cb(void *data, int status, pc_db_res_t *res)
{
    pc_recon_t *rc = data;
    rc->job_n = rc->job_next = 0;
    if (status)
        pc_log_error("recon.job_failed",
                     "the daily reconciliation job could not read which days to run: %s; tried "
                     "again at its next poll",
                     pc_strerror(status));
    int cap = (int)(sizeof rc->job_queue / sizeof rc->job_queue[0]);
    for (int i = 0; !status && i < pc_db_rows(res) && rc->job_n < cap; i++) {
        snprintf(rc->job_queue[rc->job_n].id, sizeof rc->job_queue[0].id, "%s",
                 pc_db_get(res, i, 0));
        snprintf(rc->job_queue[rc->job_n].date, sizeof rc->job_queue[0].date, "%s",
                 pc_db_get(res, i, 1));
        rc->job_n++;
    }
    if (rc->job_n == 0) {
        rc->job_busy = 0;
        return;
    }
    job_next(rc);
}

static void tick(uv_timer_t *t)
{
    pc_recon_t *rc = t->data;
    refresh_gauge(rc);
    if (rc->job_busy || rc->app->shutting_down)
        return;
    if (!pc_utc_daily_due(rc->daily_at_min, 1, rc->yesterday))
        return;
    pc_channel_set_t *set = pc_channels_acquire(rc->app->channels);
    if (!set)
        return;
    char ids[MAX_CHANNELS * 34 + 3] = "{";
    size_t off = 1;
    int n = 0;
    for (size_t i = 0; i < pc_channel_set_count(set) && n < MAX_CHANNELS; i++) {
        const char *id = pc_channel_set_at(set, i)->id;
        /* Switched off or not: a channel switched off still carries money
         * (payments in flight whose callbacks were lost, refunds of its
         * payments), and a day skipped while it stayed off for more than
         * the catch-up's week was never reconciled. */
        if (valid_channel_id(id)) {
            off += (size_t)snprintf(ids + off, sizeof ids - off, "%s%s", n ? "," : "", id);
            n++;
        }
    }
    pc_channel_set_release(set);
    if (n == 0)
        return;
    snprintf(ids + off, sizeof ids - off, "}");
    char back[8];
    snprintf(back, sizeof back, "%d", CATCH_UP_DAYS);
    const char *p[] = {ids, rc->yesterday, back, rc->daily_at_arg};
    rc->job_busy = 1;
    if (pc_db_query(
            rc->app->db,
            "SELECT c.id, d::date::text FROM unnest($1::text[]) c(id), "
            "generate_series($2::date - $3::int, $2::date, interval '1 day') d WHERE "
            "(d::date = $2::date OR EXISTS (SELECT 1 FROM recon_runs r WHERE "
            "r.channel_id = c.id AND r.status = 'DONE' AND r.business_date < d::date)) "
            "AND NOT EXISTS (SELECT 1 FROM recon_runs r WHERE r.channel_id = c.id AND "
            "r.business_date = d::date AND ((r.status = 'DONE' AND " RECON_DAY_OVER(
                "r",
                "$4") ") OR (d::date < $2::date AND r.status = 'FAILED' AND r.attempts >= 3))) "
                      "ORDER BY d, c.id",
            4, p, days_cb, rc) < 0)
        rc->job_busy = 0;
}

/* ---------- lifecycle ---------- */

pc_recon_t *pc_recon_new(pc_app_t *app)
{
    int daily_at_min;
    if (pc_config_parse_time_of_day(pc_config_str(app->cfg, "recon.daily_at"), &daily_at_min) < 0)
        return NULL;
    pc_recon_t *rc = calloc(1, sizeof *rc);
    if (!rc)
        return NULL;
    rc->app = app;
    rc->daily = pc_config_bool(app->cfg, "recon.daily");
    rc->daily_at_min = daily_at_min;
    snprintf(rc->daily_at_arg, sizeof rc->daily_at_arg, "%d", rc->daily_at_min);
    rc->poll_ms = pc_config_int(app->cfg, "recon.poll_ms");
    rc->run_timeout_s = pc_config_int(app->cfg, "recon.run_timeout_s");
    rc->retry_s = pc_config_int(app->cfg, "recon.retry_s");
    rc->work_mem_mb = (int)pc_config_int(app->cfg, "recon.work_mem_mb");
    pc_metrics_describe("pc_recon_diffs_total", PC_METRIC_COUNTER,
                        "reconciliation differences found, by channel and kind (each once)");
    pc_metrics_describe("pc_recon_open_diffs", PC_METRIC_GAUGE,
                        "reconciliation differences waiting for ops, by channel");
    pc_metrics_describe("pc_recon_runs_total", PC_METRIC_COUNTER,
                        "reconciliation runs finished, by channel and status");
    pc_metrics_describe("pc_recon_repairs_total", PC_METRIC_COUNTER,
                        "automatic repairs from statements, by channel and result");
    rc->statement_timeout_ms = pc_config_int(app->cfg, "recon.statement_timeout_ms");
    uv_timer_init(app->loop, &rc->timer);
    rc->timer.data = rc;
    rc->timer_on = 1;
    return rc;
}

void pc_recon_start(pc_recon_t *rc)
{
    if (rc && rc->daily)
        uv_timer_start(&rc->timer, tick, (uint64_t)rc->poll_ms, (uint64_t)rc->poll_ms);
}

static void timer_closed(uv_handle_t *h)
{
    (void)h;
}

void pc_recon_stop(pc_recon_t *rc)
{
    if (!rc || !rc->timer_on)
        return;
    rc->timer_on = 0;
    uv_timer_stop(&rc->timer);
    uv_close((uv_handle_t *)&rc->timer, timer_closed);
}

void pc_recon_free(pc_recon_t *rc)
{
    free(rc);
}

pc_app_t *pc_recon_app(const pc_recon_t *rc)
{
    return rc->app;
}

const char *pc_recon_daily_at_arg(const pc_recon_t *rc)
{
    return rc->daily_at_arg;
}
