-- Settles of GUARANTEE trades, and the trade side of the ledger check.

CREATE TABLE trade_settles (
    settle_no   text PRIMARY KEY,
    trade_no    text NOT NULL REFERENCES trades (trade_no),
    merchant_id text NOT NULL,
    amount      bigint NOT NULL CHECK (amount > 0),
    splits      jsonb NOT NULL DEFAULT '[]',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX trade_settles_trade ON trade_settles (trade_no);
CREATE INDEX trades_finish ON trades (paid_at) WHERE status = 'TRADE_SUCCESS';

-- trades_over_refunded: a trade whose refunds exceed what was paid.
-- duplicate_charges: a trade with more successful payments than one plus the
-- error refunds that return the extra ones. Later migrations that add refund
-- tables replace this function with the fuller query.
CREATE OR REPLACE FUNCTION ledger_check_trades(OUT trades_over_refunded bigint,
                                               OUT duplicate_charges bigint)
LANGUAGE sql STABLE AS $$
    SELECT (SELECT count(*) FROM trades WHERE refunded_amount > paid_amount),
           (SELECT count(*) FROM (SELECT trade_no FROM payments WHERE status = 'SUCCESS'
                                  GROUP BY trade_no HAVING count(*) > 1) d)
$$;
