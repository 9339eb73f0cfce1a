#include "monitor/ledger_daily.h"
#include "core/config.h"
#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TICK_MS 60000

struct pc_ledger_daily {
    pc_app_t *app;
    uv_timer_t timer;
    int enabled, at_min;
    int busy;          /* a claim or a check is out: the next tick skips */
    char day[11];      /* the day being claimed or checked */
    char done_day[11]; /* the last day known checked (by any node) */
};

void pc_ledger_check_record(pc_app_t *app, const char *day, const char *who, int status,
                            const pc_ledger_check_t *check)
{
    if (status) {
        if (!day)
            return; /* ops were answered 503; nothing was claimed */
        const char *p[] = {day, who, pc_strerror(status)};
        pc_db_query(app->db,
                    "UPDATE ledger_checks SET status = 'FAILED', error = $3, finished_at = now() "
                    "WHERE day = $1::date AND node = $2 AND status = 'RUNNING'",
                    3, p, NULL, NULL);
        return;
    }
    pc_metrics_set("pc_ledger_check_ok", "", check->ok);
    json_t *j = pc_ledger_check_json(check);
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(j);
    if (!text)
        return;
    const char *p[] = {day, who, check->ok ? "t" : "f", text};
    /* Ops' check of a day whose own is still running leaves that row to it. */
    pc_db_query(app->db,
                "INSERT INTO ledger_checks AS l (day, node, status, ok, result, finished_at) "
                "VALUES (coalesce($1::date, (now() AT TIME ZONE 'UTC')::date), $2, 'DONE', "
                "$3::boolean, $4::jsonb, now()) ON CONFLICT (day) DO UPDATE SET node = "
                "EXCLUDED.node, status = 'DONE', ok = EXCLUDED.ok, result = EXCLUDED.result, "
                "error = NULL, finished_at = now() WHERE l.status <> 'RUNNING' OR l.node = $2",
                4, p, NULL, NULL);
    free(text);
}

static void checked_cb(void *data, int status, const pc_ledger_check_t *check)
{
    pc_ledger_daily_t *d = data;
    d->busy = 0;
    pc_ledger_check_record(d->app, d->day, d->app->node_id, status, check);
    if (status) {
        pc_log_error("ledger.check_failed", "the daily ledger check of %s could not run: %s",
                     d->day, pc_strerror(status));
        return;
    }
    snprintf(d->done_day, sizeof d->done_day, "%s", d->day);
    json_t *j = pc_ledger_check_json(check);
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(j);
    if (check->ok)
        pc_log_info("ledger.checked", "the daily ledger check of %s: ok", d->day);
    else
        pc_log_error("ledger.check_wrong", "the daily ledger check of %s found the books wrong: %s",
                     d->day, text ? text : "");
    free(text);
}

static void claimed_cb(void *data, int status, pc_db_res_t *res)
{
    pc_ledger_daily_t *d = data;
    if (status || pc_db_rows(res) != 1) {
        d->busy = 0;
        return;
    }
    if (pc_db_val(res, 0, "claimed")[0] != 't') {
        d->busy = 0;
        if (!strcmp(pc_db_val(res, 0, "status"), "DONE"))
            snprintf(d->done_day, sizeof d->done_day, "%s", d->day);
        return;
    }
    pc_log_info("ledger.check_started", "the daily ledger check of %s", d->day);
    int rc = pc_ledger_check(d->app->db, checked_cb, d);
    if (rc < 0)
        checked_cb(d, rc, NULL);
}

static void tick(uv_timer_t *t)
{
    pc_ledger_daily_t *d = t->data;
    if (!d->enabled || d->busy || d->app->shutting_down)
        return;
    if (!pc_utc_daily_due(d->at_min, 0, d->day))
        return;
    if (!strcmp(d->day, d->done_day))
        return;
    /* The day's row, new, or taken over when its check failed (at most
     * three tries, ten minutes apart) or its node died mid-check, or when
     * ops checked before the day's check time (GET /admin/ledger/check at
     * 01:00 with check_at 02:00): what moved between the two is checked.
     * Before, ops' row counted as the day's check. */
    char at[12];
    snprintf(at, sizeof at, "%d", d->at_min);
    const char *p[] = {d->day, d->app->node_id, at};
    d->busy = 1;
    if (pc_db_query(d->app->db,
                    "WITH c AS (INSERT INTO ledger_checks AS l (day, node, status) VALUES "
                    "($1::date, $2, 'RUNNING') ON CONFLICT (day) DO UPDATE SET node = "
                    "EXCLUDED.node, status = 'RUNNING', ok = NULL, result = NULL, attempts = "
                    "l.attempts + 1, started_at = "
                    "now(), finished_at = NULL, error = NULL WHERE (l.status = 'FAILED' AND "
                    "l.attempts < 3 AND l.finished_at < now() - interval '10 minutes') OR "
                    "(l.status = 'RUNNING' AND l.started_at < now() - interval '30 minutes') OR "
                    "(l.status = 'DONE' AND l.node = 'ops' AND l.finished_at < ($1::date + "
                    "make_interval(mins => $3::int)) AT TIME ZONE 'UTC') "
                    "RETURNING 1) SELECT EXISTS (SELECT 1 FROM c) AS claimed, coalesce((SELECT "
                    "status FROM ledger_checks WHERE day = $1::date), '') AS status",
                    3, p, claimed_cb, d) < 0)
        d->busy = 0;
}

pc_ledger_daily_t *pc_ledger_daily_new(pc_app_t *app)
{
    int at_min;
    if (pc_config_parse_time_of_day(pc_config_str(app->cfg, "ledger.check_at"), &at_min) < 0)
        return NULL;
    pc_ledger_daily_t *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->app = app;
    d->at_min = at_min;
    d->enabled = pc_config_bool(app->cfg, "ledger.check_daily");
    uv_timer_init(app->loop, &d->timer);
    d->timer.data = d;
    return d;
}

void pc_ledger_daily_start(pc_ledger_daily_t *d)
{
    /* The first look soon after start: a node started after check_at on
     * a day nobody checked yet runs it. */
    uv_timer_start(&d->timer, tick, 5000, TICK_MS);
}

void pc_ledger_daily_stop(pc_ledger_daily_t *d)
{
    uv_timer_stop(&d->timer);
    uv_close((uv_handle_t *)&d->timer, NULL);
}

void pc_ledger_daily_free(pc_ledger_daily_t *d)
{
    free(d);
}
