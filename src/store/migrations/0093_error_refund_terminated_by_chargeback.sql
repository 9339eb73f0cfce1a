-- An error refund not sent yet (ACCEPTED, or SUSPENDED by ops) when the
-- buyer disputes the payment at the channel: the chargeback returns the
-- disputed money, so the error refund is terminated (as a merchant's unsent
-- refund is), nothing having moved (an error refund takes its money from
-- escrow only when it succeeds), and the payment waits in escrow again for
-- the case's judgement; then a new error refund returns what the chargeback
-- did not (0092). Before, an unsent error refund could not be stopped: the
-- case was refused (nothing left to dispute) and the buyer was paid twice,
-- by the bank and by the refund, the channel's debit booked nowhere.
--
-- So: an error refund is still never failed back, and terminated only for
-- a chargeback; one live error refund per payment (a terminated one does
-- not count); and terminating one marks its payment as waiting for an error
-- refund again.
ALTER TABLE refunds DROP CONSTRAINT refunds_error_never_fails;
ALTER TABLE refunds ADD CONSTRAINT refunds_error_never_fails CHECK (
    type = 'NORMAL' OR status <> 'FAILED' AND (status <> 'TERMINATED'
                                               OR failure_code IS NOT DISTINCT FROM 'CHARGEBACK'));
DROP INDEX refunds_one_error_per_payment;
CREATE UNIQUE INDEX refunds_one_error_per_payment ON refunds (payment_no)
    WHERE type = 'ERROR' AND status <> 'TERMINATED';

CREATE FUNCTION payments_unmark_error_refund_made() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE payments SET error_refund_made = false
     WHERE payment_no = NEW.payment_no AND error_refund_made;
    RETURN NULL;
END
$$;

CREATE TRIGGER refunds_error_refund_terminated AFTER UPDATE OF status ON refunds
    FOR EACH ROW WHEN (NEW.type = 'ERROR' AND NEW.status = 'TERMINATED'
                       AND OLD.status <> 'TERMINATED')
    EXECUTE FUNCTION payments_unmark_error_refund_made();

-- The ledger check's count of payments held for an error refund: one whose
-- error refund was terminated is held again.
CREATE OR REPLACE FUNCTION ledger_check_trades(OUT trades_over_refunded bigint,
                                               OUT duplicate_charges bigint)
LANGUAGE sql STABLE AS $$
    SELECT (SELECT count(*) FROM trades t
             WHERE t.refunded_amount > t.paid_amount
                OR (SELECT coalesce(sum(r.amount), 0) FROM refunds r
                     WHERE r.trade_no = t.trade_no AND r.type = 'NORMAL'
                       AND r.status NOT IN ('FAILED', 'TERMINATED')) > t.paid_amount)
           + ledger_check_refund_splits(),
           (SELECT count(*) FROM (SELECT p.trade_no, count(*) AS n FROM payments p
                                   WHERE p.status = 'SUCCESS' GROUP BY p.trade_no) s
             WHERE s.n > 1 + (SELECT count(*) FROM refunds r
                               WHERE r.trade_no = s.trade_no AND r.type = 'ERROR'
                                 AND r.status NOT IN ('FAILED', 'TERMINATED'))
                         + (SELECT count(*) FROM payments f
                             WHERE f.trade_no = s.trade_no AND f.status = 'SUCCESS'
                               AND f.needs_error_refund
                               AND (f.finished_at > now() - interval '10 minutes'
                                    OR chargeback_covers_payment(f.payment_no))
                               AND NOT EXISTS (SELECT 1 FROM refunds r
                                                WHERE r.payment_no = f.payment_no
                                                  AND r.type = 'ERROR'
                                                  AND r.status <> 'TERMINATED')))
$$;
