-- A channel answer that contradicts a final refund (a success after it was
-- failed, a return after its success, a success for one ops were paying by
-- hand) flags the refund for ops once: a retried callback saying the same
-- must not flag again what ops resolved. "Once" was told by any resolution
-- of the refund, and an outcome ops record by hand (POST
-- /admin/needs-ops/refund/{no}/resolve with "outcome") is one: a refund ops
-- recorded FAILED, then paid by its channel after all, was never flagged,
-- and the merchant could refund the amount again. What the channel said
-- when the refund was flagged is now kept; only the same answer again is
-- not flagged again. FAILED: a batch's result file failing a refund already
-- SUCCESS (ops confirmed it paid by hand; the bank says it was not).
ALTER TABLE refunds ADD COLUMN contradicted_by text
    CHECK (contradicted_by IN ('SUCCESS', 'RETURNED', 'FAILED'));
