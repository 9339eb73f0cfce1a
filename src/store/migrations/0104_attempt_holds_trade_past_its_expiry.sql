-- A payment at a channel keeps its expired trade open until its answer
-- comes, but only for a day after the payment was sent: long enough for the
-- status queries, not for a pay code. A code lives as long as its trade (the
-- engine gives it the trade's time left, and a trade may last 7 days): a
-- buyer who paid a 7-day trade's OTC code in its last minutes, issued on its
-- first day, had the trade closed under the channel's report a few minutes
-- after the expiry, and the payment refunded as an error. The day now
-- counts from the later of the payment's sending and the trade's expiry.
-- PC_TRADE_ATTEMPT_AT_CHANNEL (src/acquiring/trade_state.h) is the same
-- condition; keep the two alike.
CREATE OR REPLACE FUNCTION trade_attempt_at_channel_now(p_trade text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM payments ip JOIN trades t ON t.trade_no = ip.trade_no
                    WHERE ip.trade_no = p_trade
                      AND ip.status IN ('CREATED', 'PROCESSING', 'UNKNOWN')
                      AND greatest(coalesce(ip.sent_at, ip.created_at), t.expires_at)
                          > now() - interval '1 day');
END $$;
