-- A payment failed here whose money ops booked by a reconciliation
-- adjustment (the statement said it was paid) is not captured by a late
-- success from its channel, which would book it twice: the capture looks for
-- such an adjustment, through this index, and flags the payment for ops.
CREATE INDEX recon_diffs_adjusted ON recon_diffs (local_table, local_ref)
    WHERE ledger_txn_id IS NOT NULL;
