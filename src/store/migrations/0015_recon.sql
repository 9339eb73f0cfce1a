-- Reconciliation (system.md §2.9): per channel per business day (UTC), the
-- channel's statement is matched against payments, refunds and payouts, and
-- each difference is recorded by kind. The C side is src/recon/.
--
-- A day is one row of recon_runs, whatever the number of times it is run:
-- the unique key (channel_id, business_date) is what lets every node's
-- daily job try the same day and only one run it, and what makes running a
-- day again replace its result instead of adding a second one. attempts
-- counts the runs; each difference remembers the attempt that last found it
-- (seen_attempt), so a re-run keeps what it finds again (never a duplicate,
-- never a second repair), adds what is new, and closes open differences it
-- no longer finds.

CREATE TABLE recon_runs (
    run_id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel_id       text NOT NULL CHECK (channel_id ~ '^[a-z0-9_]{1,32}$'),
    business_date    date NOT NULL,
    status           text NOT NULL CHECK (status IN ('RUNNING', 'DONE', 'FAILED')),
    attempts         integer NOT NULL DEFAULT 1 CHECK (attempts >= 1),
    -- CHANNEL: fetched from the channel; UPLOAD: a file ops sent.
    source           text NOT NULL CHECK (source IN ('CHANNEL', 'UPLOAD')),
    statement_sha256 text,
    lines            bigint NOT NULL DEFAULT 0,
    duplicate_lines  bigint NOT NULL DEFAULT 0,
    -- Lines of no money (FAILED/CLOSED) for which there is no local record:
    -- e.g. a declined attempt that fell back to another channel.
    unmatched_lines  bigint NOT NULL DEFAULT 0,
    -- Differences the last attempt found, by kind ({"MISSING_LOCAL": 2, ...}),
    -- and how many of those were new.
    counts           jsonb NOT NULL DEFAULT '{}',
    new_diffs        integer NOT NULL DEFAULT 0,
    auto_repaired    integer NOT NULL DEFAULT 0,
    error            text,
    node             text,
    requested_by     text,
    started_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT recon_runs_one_per_day UNIQUE (channel_id, business_date),
    CONSTRAINT recon_runs_finished CHECK ((status = 'RUNNING') = (finished_at IS NULL))
);

CREATE TABLE recon_diffs (
    diff_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id         bigint NOT NULL REFERENCES recon_runs (run_id),
    channel_id     text NOT NULL,
    business_date  date NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('MISSING_LOCAL', 'MISSING_CHANNEL',
                                                 'AMOUNT_MISMATCH', 'STATUS_MISMATCH',
                                                 'FEE_MISMATCH', 'CURRENCY_MISMATCH',
                                                 'DUPLICATE_LINE')),
    -- What the difference is about, stable across re-runs of the day:
    -- "S:<type>:<channel_ref>" for a statement line ("...#<row>" for a
    -- repeated line), "L:<table>:<ref>" for a local record missing from the
    -- statement.
    diff_key       text NOT NULL,
    -- The statement's transaction type (PAY, REFUND, PAYOUT, PAYOUT_RETURN).
    obj            text NOT NULL,
    -- The statement line (NULL for MISSING_CHANNEL).
    line_no        bigint,
    channel_ref    text,
    paycore_ref    text,
    line_amount    bigint,
    line_currency  text,
    line_fee       bigint,
    line_status    text,
    line_time      timestamptz,
    -- Our record (NULL when we have none).
    local_table    text CHECK (local_table IN ('payments', 'refunds', 'payouts')),
    local_ref      text,
    local_status   text,
    -- SUCCESS, FAILED or PENDING (in flight): what local_status means for money.
    local_state    text,
    local_amount   bigint,
    local_currency text,
    expected_fee   bigint, -- the channel file's fee for our amount
    -- The automatic repair this difference allows ('PAYMENT': advance the
    -- payment as its lost callback would have), NULL when ops must decide.
    repair          text,
    repair_attempts integer NOT NULL DEFAULT 0,
    repair_at       timestamptz,
    status         text NOT NULL DEFAULT 'OPEN'
                   CHECK (status IN ('OPEN', 'AUTO_REPAIRED', 'RESOLVED')),
    reason         text,
    resolved_by    text,
    resolved_at    timestamptz,
    -- The ledger adjustment ops made through the suspense account, if any.
    ledger_txn_id  bigint REFERENCES ledger_txns (txn_id),
    seen_attempt   integer NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT recon_diffs_once UNIQUE (run_id, kind, diff_key),
    CONSTRAINT recon_diffs_resolution CHECK ((status = 'OPEN') = (resolved_at IS NULL)
                                             AND (status = 'OPEN' OR reason IS NOT NULL)),
    CONSTRAINT recon_diffs_adjusted_resolved CHECK (ledger_txn_id IS NULL OR status = 'RESOLVED')
);
-- GET /admin/recon/diffs?status=OPEN and the open-differences alert.
CREATE INDEX recon_diffs_open ON recon_diffs (diff_id) WHERE status = 'OPEN';
CREATE INDEX recon_diffs_run ON recon_diffs (run_id, diff_id);
-- A record missing from one day's statement that shows up on another's.
CREATE INDEX recon_diffs_missing_channel ON recon_diffs (channel_id, local_table, local_ref)
    WHERE kind = 'MISSING_CHANNEL' AND status = 'OPEN';

-- Local records whose line is on the statement of another business day
-- than the one our own times put them on (a success just before midnight at
-- the channel and just after it here; a lost callback repaired days later).
-- A day's recon does not report such a record as missing from its own
-- statement. Small: only the records that cross a day boundary are kept.
CREATE TABLE recon_carried (
    run_id      bigint NOT NULL REFERENCES recon_runs (run_id),
    channel_id  text NOT NULL,
    local_table text NOT NULL,
    local_ref   text NOT NULL,
    PRIMARY KEY (channel_id, local_table, local_ref, run_id)
);
CREATE INDEX recon_carried_run ON recon_carried (run_id);

-- What a day's match reads of our records: one channel's records that
-- reached a final state on one day (the rest is found by primary key).
CREATE INDEX recon_payments_day ON payments (channel_id, finished_at);
CREATE INDEX recon_refunds_day ON refunds (channel_id, finished_at);

-- The matching rules for a statement line and our record of it, in one place
-- (src/recon/recon_match.c generates the statements that call them). l_* is
-- the line; x_state is our record's SUCCESS / FAILED / PENDING; x_fee the fee
-- we expect (NULL: not checked); x_in_day whether our record belongs to this
-- business day. recon_pair_ok is true exactly when recon_pair_kinds is
-- empty; it is the cheap test every matched line goes through, the kinds are
-- only computed for the lines that fail it. Both are inlined by the planner.
CREATE FUNCTION recon_pair_ok(l_status text, l_amount bigint, l_cur text, l_fee bigint,
                              x_state text, x_amount bigint, x_cur text, x_fee bigint,
                              x_in_day boolean)
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT l_cur = x_cur AND x_in_day
       AND CASE WHEN l_status = 'SUCCESS'
                THEN x_state = 'SUCCESS' AND l_amount = x_amount
                     AND (x_fee IS NULL OR l_fee = x_fee)
                ELSE x_state = 'FAILED' END
$$;

-- Kinds for one line and its record:
--  CURRENCY_MISMATCH  the currencies differ (nothing else is compared);
--  MISSING_LOCAL      the channel has a success we never heard of: our record
--                     is still in flight (a lost callback: repaired
--                     automatically for payments);
--  STATUS_MISMATCH    the channel's success is a failure here, or the other
--                     way round, or the channel failed what is still in
--                     flight here (the status query settles it);
--  AMOUNT_MISMATCH    both succeeded with different amounts;
--  FEE_MISMATCH       both succeeded and the channel kept another fee than
--                     its file says;
--  CARRIED            (a marker, not a difference) our record belongs to
--                     another day.
CREATE FUNCTION recon_pair_kinds(l_status text, l_amount bigint, l_cur text, l_fee bigint,
                                 x_state text, x_amount bigint, x_cur text, x_fee bigint,
                                 x_in_day boolean)
RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN l_cur <> x_cur THEN ARRAY['CURRENCY_MISMATCH']
           ELSE array_remove(ARRAY[
               CASE WHEN l_status = 'SUCCESS' AND x_state = 'PENDING' THEN 'MISSING_LOCAL'
                    WHEN l_status = 'SUCCESS' AND x_state = 'FAILED' THEN 'STATUS_MISMATCH'
                    WHEN l_status <> 'SUCCESS' AND x_state <> 'FAILED' THEN 'STATUS_MISMATCH'
               END,
               CASE WHEN l_status = 'SUCCESS' AND x_state = 'SUCCESS' AND l_amount <> x_amount
                    THEN 'AMOUNT_MISMATCH' END,
               CASE WHEN l_status = 'SUCCESS' AND x_state = 'SUCCESS' AND l_fee <> x_fee
                    THEN 'FEE_MISMATCH' END], NULL) END
        || CASE WHEN x_in_day THEN '{}'::text[] ELSE ARRAY['CARRIED'] END
$$;

CREATE FUNCTION recon_time(t timestamptz) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
$$;

-- The objects of the admin API.
CREATE FUNCTION recon_run_json(r recon_runs) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'run_id', r.run_id, 'channel_id', r.channel_id,
        'date', to_char(r.business_date, 'YYYY-MM-DD'), 'status', r.status,
        'attempts', r.attempts, 'source', r.source, 'statement_sha256', r.statement_sha256,
        'lines', r.lines, 'duplicate_lines', r.duplicate_lines,
        'unmatched_lines', r.unmatched_lines, 'found', r.counts, 'new_diffs', r.new_diffs,
        'auto_repaired', r.auto_repaired,
        'open_diffs', (SELECT count(*) FROM recon_diffs d
                        WHERE d.run_id = r.run_id AND d.status = 'OPEN'),
        'error', r.error, 'node', r.node, 'requested_by', r.requested_by,
        'started_at', recon_time(r.started_at), 'finished_at', recon_time(r.finished_at))
$$;

CREATE FUNCTION recon_diff_json(d recon_diffs) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'diff_id', d.diff_id, 'run_id', d.run_id, 'channel_id', d.channel_id,
        'date', to_char(d.business_date, 'YYYY-MM-DD'), 'kind', d.kind, 'type', d.obj,
        'status', d.status,
        'line', CASE WHEN d.line_no IS NULL THEN NULL ELSE json_build_object(
            'row', d.line_no, 'channel_ref', d.channel_ref, 'paycore_ref', d.paycore_ref,
            'amount', d.line_amount, 'currency', d.line_currency, 'fee', d.line_fee,
            'status', d.line_status, 'time', recon_time(d.line_time)) END,
        'local', CASE WHEN d.local_ref IS NULL THEN NULL ELSE json_build_object(
            'table', d.local_table, 'ref', d.local_ref, 'status', d.local_status,
            'amount', d.local_amount, 'currency', d.local_currency,
            'expected_fee', d.expected_fee) END,
        'repair', d.repair, 'repair_attempts', d.repair_attempts,
        'resolution', CASE WHEN d.status = 'OPEN' THEN NULL ELSE json_build_object(
            'reason', d.reason, 'by', d.resolved_by, 'at', recon_time(d.resolved_at),
            'ledger_txn_id', d.ledger_txn_id) END,
        'created_at', recon_time(d.created_at), 'updated_at', recon_time(d.updated_at))
$$;
