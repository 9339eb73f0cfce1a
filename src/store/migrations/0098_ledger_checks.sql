-- The daily ledger check (src/monitor/ledger_daily.c): one row per UTC day,
-- which makes one node run it, and its result. Ops' own checks (GET
-- /admin/ledger/check) record theirs in the day's row too. The latest
-- result that says the books are wrong, or a day's check that could not run
-- three times, raises LEDGER_CHECK_FAILED (src/monitor/alerts.c).
CREATE TABLE ledger_checks (
    day         date PRIMARY KEY,
    node        text NOT NULL,
    status      text NOT NULL CHECK (status IN ('RUNNING', 'DONE', 'FAILED')),
    attempts    integer NOT NULL DEFAULT 1,
    ok          boolean,
    result      jsonb,
    error       text,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    CHECK ((status = 'DONE') = (ok IS NOT NULL AND result IS NOT NULL))
);
