-- The close sweep reads once more, for each expired trade it has locked,
-- whether a payment of the trade is at a channel: with a fresh snapshot
-- (a VOLATILE function's statements each take one), so that a payment a
-- pay committed after the sweep's statement began, and before the sweep
-- locked the trade, is seen. The condition is PC_TRADE_ATTEMPT_AT_CHANNEL
-- (src/acquiring/trade_state.h); keep the two alike.
CREATE FUNCTION trade_attempt_at_channel_now(p_trade text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM payments ip WHERE ip.trade_no = p_trade
                     AND ip.status IN ('CREATED', 'PROCESSING', 'UNKNOWN')
                     AND coalesce(ip.sent_at, ip.created_at) > now() - interval '1 day');
END $$;
