-- When the error refund of a payment last could not be written (a row the
-- database refuses): the sweep takes such a payment after every other, and
-- not again before refund.error_retry_ms, on any node. It was a list in each
-- node's memory, which a node without it, or more than its 64 entries,
-- defeated: the payment then held back every buyer's error refund again.
ALTER TABLE payments ADD COLUMN error_refund_failed_at timestamptz;
