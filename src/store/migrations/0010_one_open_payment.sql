-- The database's own guard against two attempts of one trade running at once
-- (the engine also locks the trade row and checks): at most one payment per
-- trade may be in flight.
CREATE UNIQUE INDEX payments_one_open_per_trade ON payments (trade_no)
    WHERE status IN ('CREATED', 'PROCESSING', 'UNKNOWN', 'REVIEW');
