-- Where a merchant's next statement starts reading its pending account's
-- postings (src/settlement/settlement.c, SCAN_FROM): every posting below this
-- ledger id is on a statement already, or was a debit. Before, each daily
-- statement read the merchant's whole history of postings.
ALTER TABLE settlements ADD COLUMN scan_from_txn bigint NOT NULL DEFAULT 0;
