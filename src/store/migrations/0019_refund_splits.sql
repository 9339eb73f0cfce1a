-- Refunds of split trades and coupons on refund (README "Refunds").
--
-- splits: what a refund takes back from each split receiver of the trade,
-- with where it was taken from (so that a failed refund returns it exactly):
--   [{"account", "amount", "from_pending", "from_available", "from_receivable"}]
-- from_receivable is the paying merchant's receivable (advance funding
-- covering a receiver without the balance). split_amount is their sum; the
-- merchant's own sources (from_*) fund the rest of the refund.
-- The running total taken back from a receiver is the sum over the trade's
-- live (not FAILED or TERMINATED) refunds; it never exceeds what the
-- receiver got (trades.splits for INSTANT, trade_settles.splits for
-- GUARANTEE): the accepting transaction checks it under the trade lock and
-- ledger_check_refund_splits() proves it.
-- coupon_returned: the refund that returned the whole rest of the payment
-- gave the coupon back to the buyer (it had not expired).
ALTER TABLE refunds
    ADD COLUMN splits jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN split_amount bigint NOT NULL DEFAULT 0 CHECK (split_amount >= 0),
    ADD COLUMN coupon_returned boolean NOT NULL DEFAULT false;

ALTER TABLE refunds DROP CONSTRAINT refunds_sources_add_up;
ALTER TABLE refunds ADD CONSTRAINT refunds_sources_add_up
    CHECK (from_escrow + from_pending + from_available + from_wallet + from_receivable
           + split_amount = amount);
ALTER TABLE refunds ADD CONSTRAINT refunds_error_no_splits CHECK (type = 'NORMAL' OR split_amount = 0);

-- What each split receiver of a trade got.
CREATE OR REPLACE FUNCTION trade_split_received(p_trade text)
RETURNS TABLE (account text, received bigint)
LANGUAGE sql STABLE AS $$
    SELECT s->>'account', sum((s->>'amount')::bigint)::bigint
      FROM (SELECT jsonb_array_elements(t.splits) AS s FROM trades t
             WHERE t.trade_no = p_trade AND t.product = 'INSTANT'
            UNION ALL
            SELECT jsonb_array_elements(ts.splits) FROM trade_settles ts
             WHERE ts.trade_no = p_trade) x
     GROUP BY 1
$$;

-- What live refunds of a trade take back from each split receiver.
CREATE OR REPLACE FUNCTION trade_split_refunded(p_trade text)
RETURNS TABLE (account text, refunded bigint)
LANGUAGE sql STABLE AS $$
    SELECT s->>'account', sum((s->>'amount')::bigint)::bigint
      FROM refunds r, jsonb_array_elements(r.splits) s
     WHERE r.trade_no = p_trade AND r.type = 'NORMAL' AND r.status NOT IN ('FAILED', 'TERMINATED')
     GROUP BY 1
$$;

-- The ledger check's split side: receivers of a trade whose live refunds
-- take back more than they got (0 when all is well).
CREATE OR REPLACE FUNCTION ledger_check_refund_splits()
RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT count(*) FROM (SELECT DISTINCT trade_no FROM refunds WHERE split_amount > 0) t,
           LATERAL trade_split_refunded(t.trade_no) f
           LEFT JOIN LATERAL trade_split_received(t.trade_no) g ON g.account = f.account
     WHERE f.refunded > coalesce(g.received, 0)
$$;
