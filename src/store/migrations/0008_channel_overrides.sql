-- Ops switches of channels: a durable override of the file's "enabled",
-- shared by every paycore process (propagated over Redis pub/sub, re-read
-- periodically as a safety net).
CREATE TABLE channel_overrides (
    channel_id text PRIMARY KEY,
    enabled    boolean NOT NULL,
    reason     text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
