-- The error-refund sweep (src/refund/refund.c, every refund.poll_ms) looks for
-- successful payments flagged for an automatic error refund. Without an index
-- for that it read the whole payments table on every poll: 58 ms at 100,000
-- payments, twice a second on each node, growing with the table. Flagged
-- payments are rare, so this index stays tiny.
CREATE INDEX payments_error_refund_due ON payments (finished_at)
    WHERE needs_error_refund AND status = 'SUCCESS';
