-- The claim of a payment's or payout's last scheduled status query used to
-- clear next_query_at before the query was made, and a flagged one was never
-- queried again: a node that died between that claim and the answer left a
-- payment (or payout) in flight that nothing looked at and nobody was told
-- about, and a late answer to a flagged one was never heard. The claim now
-- always sets the next query (at the schedule's last pace past its end);
-- rows left without one are queried now.
UPDATE payments SET next_query_at = now()
    WHERE status IN ('PROCESSING', 'UNKNOWN') AND next_query_at IS NULL;
UPDATE payouts SET next_query_at = now()
    WHERE status = 'PROCESSING' AND next_query_at IS NULL;
