-- Who switched a channel off or on, when and why: channel_overrides holds the
-- switch in force (now with who set it), channel_switches every switch made
-- (GET /admin/channels/{id}/switches). Before, a switch kept only its latest
-- reason and no name: the 3 a.m. question "who turned the card channel off,
-- and why" had no answer once someone had switched it again.
ALTER TABLE channel_overrides ADD COLUMN operator text;

CREATE TABLE channel_switches (
    id         bigserial PRIMARY KEY,
    channel_id text NOT NULL,
    enabled    boolean NOT NULL,
    reason     text,
    operator   text NOT NULL,
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX channel_switches_by_channel ON channel_switches (channel_id, id);
