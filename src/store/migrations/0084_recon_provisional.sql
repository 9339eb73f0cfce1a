-- Whether a reconciliation run started once its business day was over for
-- reconciling: after the day had ended (UTC) and, unless the daily job ran
-- it (the job starts a day only after recon.daily_at), after daily_at
-- (p_daily_at minutes after midnight UTC) on the next day, when the
-- channel's statement is taken to be complete. A run that started earlier
-- (ops looking at today so far, or at yesterday before the statement was
-- published) saw part of the day: it is provisional, and the daily job runs
-- the day again once it is over. The job's own runs are judged by midnight
-- alone, so neither a node's clock a little ahead of PostgreSQL's nor a
-- later daily_at makes it run its own days again. A plain expression: the
-- planner inlines it where src/recon/ uses it in a set-wise query.
CREATE FUNCTION recon_day_over(p_started timestamptz, p_day date, p_by text, p_daily_at integer)
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT p_started >= (p_day + 1)::timestamp AT TIME ZONE 'UTC'
       AND (p_by = 'job'
            OR p_started >= (p_day + 1)::timestamp AT TIME ZONE 'UTC'
                            + p_daily_at * interval '1 minute')
$$;

-- A run as the admin API shows it (0015's recon_run_json) with
-- `provisional` (see above), judged by the answering node's recon.daily_at.
CREATE FUNCTION recon_run_json(r recon_runs, p_daily_at integer) RETURNS json
LANGUAGE sql STABLE AS $$
    SELECT (recon_run_json(r)::jsonb
            || jsonb_build_object('provisional',
                                  NOT recon_day_over(r.started_at, r.business_date,
                                                     r.requested_by, p_daily_at)))::json
$$;
