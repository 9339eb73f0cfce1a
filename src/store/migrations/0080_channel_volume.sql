-- A channel's daily and monthly volume caps (channels/*.json "volume", per
-- currency): what the acquirer's contract lets through it per UTC day and
-- month. channel_volume counts what was sent to a channel; a payment's
-- channel part is taken from it (channel_volume_take) just before it is sent,
-- and given back when the payment fails or moves on to another channel (the
-- trigger below, whatever path fails it: the engine, a callback, a status
-- query, ops). payments.volume_day says a payment was counted, and on which
-- UTC day: NULL for one that was not (no cap, or given back).
ALTER TABLE payments ADD COLUMN volume_day date;

CREATE TABLE channel_volume (
    channel_id text NOT NULL,
    currency   text NOT NULL,
    -- 'YYYY-MM-DD' (a UTC day) or 'YYYY-MM' (a UTC month)
    period     text NOT NULL CHECK (period ~ '^[0-9]{4}-[0-9]{2}(-[0-9]{2})?$'),
    amount     bigint NOT NULL CHECK (amount >= 0),
    PRIMARY KEY (channel_id, currency, period)
);

-- Takes a payment's channel part from its channel's counters when both fit
-- under the caps (0: no cap). Outcomes: TAKEN (counted now, or already by an
-- earlier call), OVER_DAILY / OVER_MONTHLY (nothing counted), GONE (the
-- payment is no longer PROCESSING at this channel: not to be sent). The
-- counters' rows are locked month first, then day, as the give-back does, so
-- two payments never wait on each other in opposite orders. It commits
-- durably before the send (a take lost in a database crash would let the
-- money through uncounted): a capped channel's payments take turns on its
-- counters for about one WAL flush each.
CREATE FUNCTION channel_volume_take(p_payment text, p_channel text, p_daily bigint,
                                    p_monthly bigint,
                                    OUT outcome text, OUT day text, OUT day_used bigint,
                                    OUT month text, OUT month_used bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_day date := (now() AT TIME ZONE 'UTC')::date;
    v_cur text;
    v_amount bigint;
    v_counted date;
BEGIN
    day := to_char(v_day, 'YYYY-MM-DD');
    month := to_char(v_day, 'YYYY-MM');
    SELECT currency, external_amount, volume_day INTO v_cur, v_amount, v_counted FROM payments
        WHERE payment_no = p_payment AND channel_id = p_channel AND status = 'PROCESSING'
        FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        outcome := 'GONE';
        RETURN;
    END IF;
    INSERT INTO channel_volume VALUES (p_channel, v_cur, month, 0), (p_channel, v_cur, day, 0)
        ON CONFLICT DO NOTHING;
    SELECT amount INTO month_used FROM channel_volume
        WHERE channel_id = p_channel AND currency = v_cur AND period = month FOR NO KEY UPDATE;
    SELECT amount INTO day_used FROM channel_volume
        WHERE channel_id = p_channel AND currency = v_cur AND period = day FOR NO KEY UPDATE;
    IF v_counted IS NOT NULL THEN
        outcome := 'TAKEN'; -- by an earlier call: counted once
        RETURN;
    END IF;
    IF p_monthly > 0 AND month_used + v_amount > p_monthly THEN
        outcome := 'OVER_MONTHLY';
        RETURN;
    END IF;
    IF p_daily > 0 AND day_used + v_amount > p_daily THEN
        outcome := 'OVER_DAILY';
        RETURN;
    END IF;
    UPDATE channel_volume SET amount = amount + v_amount
        WHERE channel_id = p_channel AND currency = v_cur AND period = month
        RETURNING amount INTO month_used;
    UPDATE channel_volume SET amount = amount + v_amount
        WHERE channel_id = p_channel AND currency = v_cur AND period = day
        RETURNING amount INTO day_used;
    UPDATE payments SET volume_day = v_day WHERE payment_no = p_payment;
    outcome := 'TAKEN';
END $$;

-- Gives a counted payment's channel part back when it fails or leaves for
-- another channel (a retryable decline's fallback). A success keeps it.
CREATE FUNCTION payments_volume_back() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE channel_volume SET amount = amount - OLD.external_amount
        WHERE channel_id = OLD.channel_id AND currency = OLD.currency
          AND period = to_char(OLD.volume_day, 'YYYY-MM');
    UPDATE channel_volume SET amount = amount - OLD.external_amount
        WHERE channel_id = OLD.channel_id AND currency = OLD.currency
          AND period = to_char(OLD.volume_day, 'YYYY-MM-DD');
    NEW.volume_day := NULL;
    RETURN NEW;
END $$;

CREATE TRIGGER payments_volume_back BEFORE UPDATE ON payments FOR EACH ROW
    WHEN (OLD.volume_day IS NOT NULL AND (NEW.status = 'FAILED'
          OR NEW.channel_id IS DISTINCT FROM OLD.channel_id))
    EXECUTE FUNCTION payments_volume_back();

-- A payment failed (its count given back) that the channel then reports
-- paid after all (a late success: the decline or "no record" was wrong)
-- went through the channel: it is counted again, on the day it is known,
-- whatever the cap (the money has moved). Any channel: which ones have caps
-- is the nodes' configuration, and such successes are rare.
CREATE FUNCTION payments_volume_late() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_day date := (now() AT TIME ZONE 'UTC')::date;
BEGIN
    INSERT INTO channel_volume VALUES
        (NEW.channel_id, NEW.currency, to_char(v_day, 'YYYY-MM'), NEW.external_amount),
        (NEW.channel_id, NEW.currency, to_char(v_day, 'YYYY-MM-DD'), NEW.external_amount)
        ON CONFLICT (channel_id, currency, period)
        DO UPDATE SET amount = channel_volume.amount + EXCLUDED.amount;
    NEW.volume_day := v_day;
    RETURN NEW;
END $$;

CREATE TRIGGER payments_volume_late BEFORE UPDATE ON payments FOR EACH ROW
    WHEN (OLD.status = 'FAILED' AND NEW.status = 'SUCCESS' AND NEW.volume_day IS NULL
          AND NEW.external_amount > 0 AND NEW.channel_id IS NOT NULL)
    EXECUTE FUNCTION payments_volume_late();
