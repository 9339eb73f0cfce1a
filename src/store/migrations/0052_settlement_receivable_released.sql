-- Money the platform owes a merchant on its receivable account (a positive
-- balance: a refund funded in advance, recovered by a statement, then
-- failed, gives its amount back there) is paid to available by the next
-- statement. Nothing else ever moved it: settlement only recovered a
-- negative receivable, and payouts spend available only.
ALTER TABLE settlements ADD COLUMN receivable_released bigint NOT NULL DEFAULT 0
    CHECK (receivable_released >= 0);
ALTER TABLE settlements DROP CONSTRAINT settlements_adds_up;
ALTER TABLE settlements ADD CONSTRAINT settlements_adds_up CHECK (
    moved_amount + shortfall_amount = gross_amount
    AND moved_amount + receivable_released = fee_amount - fee_owed + owed_recovered + net_amount);

CREATE OR REPLACE FUNCTION settlement_json(s settlements) RETURNS json
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
        'receivable_released', s.receivable_released,
        'net_amount', s.net_amount, 'reserve_held', s.reserve_held,
        'created_at', to_char(s.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
$$;
