-- A channel the payment fell back from reported a success: the buyer may be
-- charged twice. The payment is flagged for ops (needs_ops), and this keeps
-- the flag when the payment's own channel later captures or fails it (which
-- clears the flags that only meant "no answer yet").
ALTER TABLE payments ADD COLUMN charged_elsewhere boolean NOT NULL DEFAULT false;
