-- A payment refused by risk was recorded FAILED with its coupon LOCKED, and
-- nothing releases a payment that is already failed, so the buyer lost the
-- coupon for good (fixed in the engine: a FAILED payment locks no coupon).
-- Free the coupons such payments still hold. A failed payment never holds a
-- coupon legitimately: every path that fails a payment frees its coupon in
-- the same transaction.
UPDATE coupons SET status = 'AVAILABLE', payment_no = NULL
WHERE status = 'LOCKED'
  AND payment_no IN (SELECT payment_no FROM payments WHERE status = 'FAILED');
