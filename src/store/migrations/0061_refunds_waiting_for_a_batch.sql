-- Refunds that wait for a person also include OFFLINE and FILE refunds that
-- nobody has put in a batch for a day (nothing exports them but ops), and
-- FILE refunds whose batch went out a day ago with no result file imported:
-- the buyer's money waited, and no alert said so. The index covers every
-- refund the condition (PC_REFUND_WAITING_WHERE, src/refund/refund.h) can
-- count, so that counting and listing still read only the index.
DROP INDEX refunds_waiting;
CREATE INDEX refunds_waiting ON refunds (created_at)
    WHERE status = 'SUSPENDED' OR (status IN ('ACCEPTED', 'PROCESSING') AND method IN ('OFFLINE', 'FILE'));
