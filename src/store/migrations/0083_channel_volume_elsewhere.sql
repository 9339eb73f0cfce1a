-- A channel a payment fell back from (its retryable decline, or no answer in
-- time) that charges the buyer after all has moved that money: it counts on
-- that channel's volume (0080), once, on the day it is known, whatever the
-- cap, as a failed payment's late success does. The payment itself stays
-- with the channel it moved on to (its count is there); ops deal with the
-- second charge (the payment is flagged, charged_elsewhere).
-- channel_volume_elsewhere records which (payment, channel) pairs were
-- counted, so that the channel saying so twice counts once.
CREATE TABLE channel_volume_elsewhere (
    payment_no text NOT NULL,
    channel_id text NOT NULL,
    day        date NOT NULL,
    PRIMARY KEY (payment_no, channel_id)
);

-- Counts payment p_payment's channel part on channel p_channel, the first
-- time only, and only for a channel the payment was sent to and left (one
-- before its current attempt in its route: a channel of the route never
-- tried has moved nothing); true when it counted now. Called with the
-- payment's row locked (the engine's flag), the counters' rows then locked
-- month before day, the order of channel_volume_take.
CREATE FUNCTION channel_volume_count_elsewhere(p_payment text, p_channel text)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_day date := (now() AT TIME ZONE 'UTC')::date;
    v_cur text;
    v_amount bigint;
    v_left boolean;
BEGIN
    SELECT p.currency, p.external_amount,
           coalesce((SELECT min(e.n) FROM jsonb_array_elements_text(p.route)
                         WITH ORDINALITY AS e(channel_id, n)
                     WHERE e.channel_id = p_channel) < p.attempt, false)
        INTO v_cur, v_amount, v_left FROM payments p WHERE p.payment_no = p_payment;
    IF NOT coalesce(v_left, false) OR coalesce(v_amount, 0) <= 0 THEN
        RETURN false;
    END IF;
    INSERT INTO channel_volume_elsewhere VALUES (p_payment, p_channel, v_day)
        ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO channel_volume VALUES
        (p_channel, v_cur, to_char(v_day, 'YYYY-MM'), v_amount),
        (p_channel, v_cur, to_char(v_day, 'YYYY-MM-DD'), v_amount)
        ON CONFLICT (channel_id, currency, period)
        DO UPDATE SET amount = channel_volume.amount + EXCLUDED.amount;
    RETURN true;
END $$;
