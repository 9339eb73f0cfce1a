-- The alert on chargeback cases left waiting past their evidence deadline
-- (src/monitor/alerts.c, CHARGEBACKS_OVERDUE) finds them by deadline among
-- the cases waiting for ops to start the judgement (WAIT_JUDGE) only: a case
-- in judgement waits for the channel's decision, past its deadline by
-- design.
CREATE INDEX chargebacks_waiting_due ON chargebacks (evidence_due_at)
    WHERE status = 'WAIT_JUDGE';
