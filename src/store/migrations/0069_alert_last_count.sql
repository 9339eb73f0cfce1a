-- An alert was announced (webhook, log) only when its row was inserted; while
-- it stayed active, new items behind it (a second duplicate payment, a new
-- refund waiting for ops) only changed its message, and nobody was paged.
-- last_count is how many items the alert was about at the last check: a
-- count above it announces the alert again.
ALTER TABLE alerts ADD COLUMN last_count bigint NOT NULL DEFAULT 0;
