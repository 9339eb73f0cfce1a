-- The ledger check also counts split receivers who gave back more than they
-- received (ledger_check_refund_splits, 0019), as over-refunded trades.
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
                                 AND r.status NOT IN ('FAILED', 'TERMINATED')))
$$;
