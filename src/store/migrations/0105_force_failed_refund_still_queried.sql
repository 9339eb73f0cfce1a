-- A refund ops force-fail while it is at its channel (API or PAYOUT,
-- PROCESSING) is still queried there: the channel may pay it after all, and
-- with its callback lost nothing else would say so until reconciliation.
-- Its queries run the schedule once more and stop at the channel's final
-- answer (a success is flagged for ops as a contradiction). The runner's
-- claim index takes FAILED refunds that still have a query due.
DROP INDEX IF EXISTS refunds_due;
CREATE INDEX refunds_due ON refunds (next_query_at)
    WHERE status IN ('ACCEPTED', 'PROCESSING', 'FAILED') AND method IN ('API', 'PAYOUT')
      AND next_query_at IS NOT NULL;
