-- What a request still running had already set going outside its own
-- transaction (src/idem/idem.c): a pay's payment sent to its channel (its
-- payment_no). A retry of that request with the same key is answered with
-- that object as it stands, never run again: before, a pay whose answer was
-- not recorded (its node died, or it answered 503 after the payment had
-- gone to the channel) could be run a second time under the same key — a
-- 409 recorded for good while the first payment went on, or, once it had
-- failed, a second charge of the buyer.
ALTER TABLE idempotency_keys ADD COLUMN effect_ref text;
