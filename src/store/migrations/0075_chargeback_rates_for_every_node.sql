-- chargeback_rates_refresh_all (0072) returned the rates only to the node
-- that held the lock and recounted: the others never set their gauges from
-- it, so a rate that aged out stayed at its old value on their admin
-- /metrics (and an alert on it kept firing). Every caller now gets the
-- current rates: those with chargebacks in the window, and those that
-- changed in the last day (a rate gone to zero is seen at zero).
CREATE OR REPLACE FUNCTION chargeback_rates_refresh_all()
RETURNS TABLE (merchant_id text, channel_id text, rate_bp integer)
LANGUAGE plpgsql AS $$
BEGIN
    -- 'chargeback_rates_refresh' as a lock key, held until this statement's
    -- transaction ends: two nodes never recount at the same moment.
    IF pg_try_advisory_xact_lock(hashtext('chargeback_rates_refresh')) THEN
        PERFORM chargeback_rates_refresh(NULL);
    END IF;
    RETURN QUERY SELECT r.merchant_id, r.channel_id, r.rate_bp FROM chargeback_rates r
                  WHERE r.chargebacks_90d > 0 OR r.computed_at > now() - interval '1 day';
END
$$;
