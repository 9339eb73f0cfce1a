-- When paycore last sent a payment's request to its channel. A status query
-- may only close a payment as FAILED once that request has certainly ended
-- (the channel's request timeout has passed since sent_at): before that the
-- request may still reach the channel, or its decline may already be moving
-- the payment to the next channel of its route. The age for
-- repair.not_found_after_s counts from here too, not from created_at: a
-- payment held for review is sent when it is released, maybe hours later.
ALTER TABLE payments ADD COLUMN sent_at timestamptz;

-- A payment released from review or a challenge was moved to PROCESSING
-- without a next status query, so a crash before the channel answered left
-- it open with nothing to look at it again. Schedule those now.
UPDATE payments SET next_query_at = now()
    WHERE status IN ('PROCESSING', 'UNKNOWN') AND next_query_at IS NULL AND query_attempts = 0;
