-- The finish sweep (TRADE_SUCCESS to TRADE_FINISHED once the refund window
-- has passed) leaves a trade alone while a refund of it is in flight. It
-- read that with its statement's snapshot: a refund accepted after the
-- statement began, and committed before the sweep locked the trade (the
-- accept holds the trade's row), was not seen, and the trade was finished
-- under it (a full refund then left it TRADE_FINISHED, refunded in full,
-- with no trade.closed). This reads it again once the trade is locked,
-- with a fresh snapshot (a VOLATILE function's statements each take one),
-- as trade_attempt_at_channel_now (0082) does for the close sweep. The
-- sweep's first read is this same function.
CREATE FUNCTION trade_refund_in_flight_now(p_trade text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM refunds r WHERE r.trade_no = p_trade AND r.type = 'NORMAL'
                     AND r.status NOT IN ('SUCCESS', 'FAILED', 'TERMINATED'));
END $$;
