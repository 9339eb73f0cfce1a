-- Core tables. Every later subsystem adds its own numbered file; a file that
-- has been applied anywhere is never edited, only followed by a new one.

-- Process heartbeats: which paycore nodes are alive (ops view, job ownership).
CREATE TABLE nodes (
    node_id     text PRIMARY KEY,
    started_at  timestamptz NOT NULL DEFAULT now(),
    seen_at     timestamptz NOT NULL DEFAULT now(),
    info        jsonb NOT NULL DEFAULT '{}'
);
