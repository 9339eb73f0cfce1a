-- The fee the channel's file asked for a payment's external part when it was
-- sent there (src/engine/engine.c). Reconciliation checks the statement's fee
-- against it: priced from the file of the run's day instead, a fee changed
-- on the first of a month turned the whole last day of the month before into
-- FEE_MISMATCH differences, and every re-run of a past day with it. NULL
-- (payments from before, a file that did not take the currency): the run's
-- file, as before.
ALTER TABLE payments ADD COLUMN channel_fee bigint CHECK (channel_fee >= 0);
