-- A chargeback on a payment the platform holds in escrow for its error
-- refund (a duplicate payment, or one that landed on a closed trade): the
-- merchant never had that money, yet the case froze the amount from the
-- merchant's pending and available money (or made it owed), and a MERCHANT
-- judgement paid the cardholder with it, while escrow still held the same
-- amount with nothing to move it. Such a case now holds its amount where it
-- already is: from_escrow, and nothing is frozen from the merchant. A
-- judgement that pays the cardholder pays from escrow; one the cardholder
-- loses, or a close, moves nothing and the error refund goes ahead.
ALTER TABLE chargebacks ADD COLUMN from_escrow bigint NOT NULL DEFAULT 0 CHECK (from_escrow >= 0);
ALTER TABLE chargebacks DROP CONSTRAINT chargebacks_hold_adds_up;
ALTER TABLE chargebacks ADD CONSTRAINT chargebacks_hold_adds_up
    CHECK (from_pending + from_available + owed + from_escrow = amount);

CREATE OR REPLACE FUNCTION chargeback_json(c chargebacks) RETURNS json
LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'chargeback_no', c.chargeback_no, 'trade_no', c.trade_no, 'payment_no', c.payment_no,
        'amount', c.amount, 'currency', c.currency, 'reason_code', c.reason_code,
        'source', c.source, 'channel_id', c.channel_id, 'status', c.status, 'liable', c.liable,
        'judge_note', c.judge_note,
        'evidence_due_at', to_char(c.evidence_due_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
        'evidence', c.evidence,
        'hold', json_build_object('from_pending', c.from_pending,
                                  'from_available', c.from_available, 'owed', c.owed,
                                  'from_escrow', c.from_escrow),
        'created_at', to_char(c.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
        'judged_at', to_char(c.judged_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
        'closed_at', to_char(c.closed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
$$;
