-- Repair bookkeeping and alerts.
ALTER TABLE payments ADD COLUMN needs_ops boolean NOT NULL DEFAULT false;
-- A payment handed to a channel is queried if nothing is heard of it; rows
-- written before this migration get a first query now.
UPDATE payments SET next_query_at = now()
    WHERE status IN ('PROCESSING', 'UNKNOWN') AND next_query_at IS NULL;

CREATE TABLE alerts (
    alert_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind       text NOT NULL,
    subject    text NOT NULL,
    status     text NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'RESOLVED')),
    message    text NOT NULL,
    raised_at  timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz
);
-- One active alert per kind and subject, whatever the number of nodes.
CREATE UNIQUE INDEX alerts_one_active ON alerts (kind, subject) WHERE status = 'ACTIVE';
