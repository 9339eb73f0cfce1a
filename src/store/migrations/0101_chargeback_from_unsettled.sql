-- A chargeback on a guarantee trade's payment before the trade was settled
-- froze the disputed amount from the merchant's pending and available
-- money (or made it owed), though the merchant had not been paid any of it:
-- the money was still in escrow. And settling the trade ignored the case:
-- escrow paid the merchant all of it. A merchant without other money then
-- owed the platform what escrow had just handed it, the very risk escrow is
-- there to remove. Such a case now holds, from what escrow still keeps for
-- the trade, as much of the amount as it can (from_unsettled); only the
-- rest (the part of a trade settled in part) is frozen from the merchant.
-- The held part cannot be settled or refunded while the case is open, nor
-- after the cardholder won it with the merchant liable (the money went to
-- the channel from escrow). A judgement with the platform liable, one for
-- the merchant, or a close gives it back to the trade to settle.
ALTER TABLE chargebacks ADD COLUMN from_unsettled bigint NOT NULL DEFAULT 0
    CHECK (from_unsettled >= 0);
ALTER TABLE chargebacks DROP CONSTRAINT chargebacks_hold_adds_up;
ALTER TABLE chargebacks ADD CONSTRAINT chargebacks_hold_adds_up
    CHECK (from_pending + from_available + owed + from_escrow + from_unsettled = amount);

-- What a trade's chargebacks keep of its escrow: cases still open, and the
-- ones judged with the merchant liable (paid to the channel from escrow).
CREATE FUNCTION chargeback_unsettled_held(p_trade_no text) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(from_unsettled), 0)::bigint FROM chargebacks
     WHERE trade_no = p_trade_no AND from_unsettled > 0
       AND (status IN ('WAIT_JUDGE', 'IN_JUDGE')
            OR (status = 'JUDGE_FINISH' AND liable = 'MERCHANT'))
$$;

-- Whether a case still holds part of the trade's escrow, undecided.
CREATE FUNCTION chargeback_unsettled_open(p_trade_no text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM chargebacks
                    WHERE trade_no = p_trade_no AND from_unsettled > 0
                      AND status IN ('WAIT_JUDGE', 'IN_JUDGE'))
$$;

-- What escrow keeps for a guarantee trade that is free to settle, refund or
-- hold for a new case: paid, less settled, less what live refunds take
-- from escrow, less what chargebacks hold of it. Read under the trade's
-- row lock by a statement started after it was granted.
CREATE FUNCTION trade_escrow_free(p_trade_no text) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT (t.paid_amount - t.settled_amount
            - (SELECT coalesce(sum(r.from_escrow), 0) FROM refunds r
                WHERE r.trade_no = t.trade_no AND r.type = 'NORMAL'
                  AND r.status NOT IN ('FAILED', 'TERMINATED'))
            - chargeback_unsettled_held(t.trade_no))::bigint
      FROM trades t WHERE t.trade_no = p_trade_no
$$;

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
                                  'from_escrow', c.from_escrow,
                                  'from_unsettled', c.from_unsettled),
        'created_at', to_char(c.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
        'judged_at', to_char(c.judged_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
        'closed_at', to_char(c.closed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
$$;
