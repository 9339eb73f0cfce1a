-- Refunds that wait for a person: held (SUSPENDED, by risk or by ops) or to
-- be returned by hand (OFFLINE, still PROCESSING: e.g. an error refund the
-- channel refused). The alert job counts them every alerts.check_ms on each
-- node and GET /admin/refunds?waiting=true lists them; this index keeps both
-- from reading every refund.
CREATE INDEX refunds_waiting ON refunds (created_at)
    WHERE status = 'SUSPENDED' OR (status = 'PROCESSING' AND method = 'OFFLINE');
