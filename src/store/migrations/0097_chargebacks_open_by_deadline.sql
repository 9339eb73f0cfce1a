-- The alert on chargeback cases open past their evidence deadline
-- (src/monitor/alerts.c, CHARGEBACKS_OVERDUE) finds them by deadline among
-- the open ones only.
CREATE INDEX chargebacks_open_due ON chargebacks (evidence_due_at)
    WHERE status IN ('WAIT_JUDGE', 'IN_JUDGE');
