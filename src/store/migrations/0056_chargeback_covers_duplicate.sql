-- A payment held in escrow for its error refund (a trade's second success)
-- whose buyer disputes it at the channel gets the money back through the
-- chargeback. The error refund would pay the buyer a second time, so it waits
-- while a chargeback covers the payment: one still open, or one the
-- cardholder won (as chargeback_frozen counts them). A withdrawn or lost
-- dispute covers nothing, and the error refund goes ahead.
CREATE FUNCTION chargeback_covers_payment(p_payment_no text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM chargebacks c
                    WHERE c.payment_no = p_payment_no
                      AND (c.status IN ('WAIT_JUDGE', 'IN_JUDGE')
                           OR (c.status = 'JUDGE_FINISH' AND c.liable IN ('MERCHANT', 'PLATFORM'))))
$$;

-- The ledger check does not call such a payment a duplicate charge: the
-- chargeback gives the buyer the money back.
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
                                                  AND r.type = 'ERROR')))
$$;
