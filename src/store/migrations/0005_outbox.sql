-- Transactional outbox for merchant notifications (system.md §2.2, api.md
-- "Notifications"); the C side is src/notify/outbox.h (writers) and
-- src/notify/notifier.h (the delivery job).
--
-- A row is inserted in the same transaction as the state change it reports,
-- so an event exists exactly when its change committed. Any number of paycore
-- nodes deliver together: a node claims due rows by moving next_attempt_at
-- forward by a lease and stamping claim_token (FOR UPDATE SKIP LOCKED picks
-- them), sends each once, and records the outcome only where its token still
-- matches. A node that dies holding claims simply lets the lease run out.
CREATE TABLE outbox (
    event_id        text PRIMARY KEY CHECK (event_id ~ '^evt_[0-9a-f]{32}$'),
    merchant_id     text NOT NULL REFERENCES merchants (merchant_id),
    type            text NOT NULL CHECK (type IN (
                        'trade.paid', 'trade.succeeded', 'trade.closed', 'trade.finished',
                        'refund.succeeded', 'refund.failed',
                        'payout.succeeded', 'payout.failed', 'payout.returned',
                        'chargeback.opened', 'chargeback.judged', 'chargeback.closed')),
    notify_url      text,
    -- The exact body that is POSTed: {"event_id","type","created_at","data"}.
    payload         text NOT NULL,
    -- SKIPPED: the event had no notify_url, so there is nothing to deliver;
    -- the row still records that the event happened.
    status          text NOT NULL DEFAULT 'PENDING'
                        CHECK (status IN ('PENDING', 'DELIVERED', 'FAILED', 'SKIPPED')),
    -- Attempts made since the event was created or last redelivered by ops.
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- Which claim (node and batch) may record the running attempt; NULL when
    -- nobody holds the row.
    claim_token     text,
    last_attempt_at timestamptz,
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    CHECK (status <> 'PENDING' OR notify_url IS NOT NULL),
    CHECK ((status = 'DELIVERED') = (delivered_at IS NOT NULL))
);

-- The claim query: due PENDING rows in next_attempt_at order. Partial, so
-- that delivered history does not slow it down.
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE status = 'PENDING';
-- Ops: a merchant's recent events, and the events that gave up.
CREATE INDEX outbox_merchant ON outbox (merchant_id, created_at);
CREATE INDEX outbox_failed ON outbox (created_at) WHERE status = 'FAILED';

-- Every attempt, for ops answering "did you ever send it, and what did we
-- get back?".
CREATE TABLE outbox_attempts (
    id          bigserial PRIMARY KEY,
    event_id    text NOT NULL REFERENCES outbox (event_id) ON DELETE CASCADE,
    attempt     integer NOT NULL,
    node        text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    http_status integer,
    error       text,
    elapsed_ms  integer NOT NULL
);
CREATE INDEX outbox_attempts_event ON outbox_attempts (event_id, id);
