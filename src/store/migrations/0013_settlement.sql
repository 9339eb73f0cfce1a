-- Settlement (system.md §2.6): merchants' pending money moves to their
-- available balance on their contract's cycle (T+N, merchants.
-- settle_cycle_days), net of fees and of what they owe; one statement per
-- merchant, currency and business day. The C side is src/settlement/.
--
-- What is due on a statement is tracked per ledger posting: every credit to a
-- merchant's pending account is settled once (settlement_items' primary key),
-- and a statement exists once per (merchant, currency, day), so running the
-- settlement of a day again, on any node, changes nothing.

CREATE TABLE settlements (
    statement_no     text PRIMARY KEY,
    merchant_id      text NOT NULL,
    currency         text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    settle_date      date NOT NULL,
    cycle_days       integer NOT NULL CHECK (cycle_days >= 0),
    -- Credits posted before this instant are due (00:00 UTC of the day
    -- after settle_date - cycle_days).
    cutoff           timestamptz NOT NULL,
    fee_rate_bp      integer NOT NULL CHECK (fee_rate_bp BETWEEN 0 AND 10000),
    item_count       integer NOT NULL DEFAULT 0,
    gross_amount     bigint NOT NULL DEFAULT 0 CHECK (gross_amount >= 0),
    sales_amount     bigint NOT NULL DEFAULT 0 CHECK (sales_amount >= 0),
    fee_amount       bigint NOT NULL DEFAULT 0 CHECK (fee_amount >= 0),
    moved_amount     bigint NOT NULL DEFAULT 0 CHECK (moved_amount >= 0),
    -- Due money that refunds or chargeback holds had taken from pending
    -- before this statement.
    shortfall_amount bigint NOT NULL DEFAULT 0 CHECK (shortfall_amount >= 0),
    fee_owed         bigint NOT NULL DEFAULT 0 CHECK (fee_owed >= 0),
    owed_before      bigint NOT NULL DEFAULT 0 CHECK (owed_before >= 0),
    owed_recovered   bigint NOT NULL DEFAULT 0 CHECK (owed_recovered >= 0),
    net_amount       bigint NOT NULL DEFAULT 0 CHECK (net_amount >= 0),
    -- The merchant's chargeback reserve when the statement was made.
    reserve_held     bigint NOT NULL DEFAULT 0,
    ledger_txn_id    bigint,
    node             text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT settlements_one_per_day UNIQUE (merchant_id, currency, settle_date),
    CONSTRAINT settlements_adds_up CHECK (moved_amount + shortfall_amount = gross_amount
        AND moved_amount = fee_amount - fee_owed + owed_recovered + net_amount)
);
CREATE INDEX settlements_date ON settlements (settle_date);

-- One row per ledger posting credited to a merchant's pending account and
-- settled: never settled twice. ref_type/ref_id/trade_no say what it was
-- (a payment, a guarantee settle, a refund's return, a released hold).
CREATE TABLE settlement_items (
    account_id   text NOT NULL,
    txn_id       bigint NOT NULL,
    statement_no text NOT NULL REFERENCES settlements (statement_no),
    kind         text NOT NULL,
    ref_type     text NOT NULL,
    ref_id       text NOT NULL,
    trade_no     text,
    amount       bigint NOT NULL CHECK (amount > 0),
    sale         boolean NOT NULL,
    posted_at    timestamptz NOT NULL,
    PRIMARY KEY (account_id, txn_id)
);
CREATE INDEX settlement_items_statement ON settlement_items (statement_no);
CREATE INDEX settlement_items_trade ON settlement_items (trade_no) WHERE trade_no IS NOT NULL;

CREATE FUNCTION settlement_json(s settlements) RETURNS json
LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'statement_no', s.statement_no, 'merchant_id', s.merchant_id, 'currency', s.currency,
        'date', to_char(s.settle_date, 'YYYY-MM-DD'), 'cycle_days', s.cycle_days,
        'cutoff', to_char(s.cutoff AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
        'fee_rate_bp', s.fee_rate_bp, 'item_count', s.item_count,
        'gross_amount', s.gross_amount, 'sales_amount', s.sales_amount,
        'fee_amount', s.fee_amount, 'moved_amount', s.moved_amount,
        'shortfall_amount', s.shortfall_amount, 'fee_owed', s.fee_owed,
        'owed_before', s.owed_before, 'owed_recovered', s.owed_recovered,
        'net_amount', s.net_amount, 'reserve_held', s.reserve_held,
        'created_at', to_char(s.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
$$;
