-- The periodic refresh of chargeback rates (every chargeback.rate_refresh_ms
-- on every node) recounted 90 days of successful payments for every
-- (merchant, channel) that ever had a rate row: a merchant with one
-- chargeback years ago was recounted every minute for good, and with a few
-- large merchants the statement ran past the pool's deadline on each node.
-- A rate row already at no chargeback, with no case in the window, is left
-- as it is (a new case refreshes its merchant at once); and one node at a
-- time refreshes all (chargeback_rates_refresh_all: the others skip).
CREATE OR REPLACE FUNCTION chargeback_rates_refresh(p_merchant_id text)
RETURNS TABLE (merchant_id text, channel_id text, rate_bp integer)
LANGUAGE sql AS $$
    WITH pairs AS (
        SELECT c.merchant_id, c.channel_id FROM chargebacks c
         WHERE c.created_at >= now() - interval '90 days'
           AND (p_merchant_id IS NULL OR c.merchant_id = p_merchant_id)
        UNION
        SELECT c.merchant_id, '' FROM chargebacks c
         WHERE c.created_at >= now() - interval '90 days'
           AND (p_merchant_id IS NULL OR c.merchant_id = p_merchant_id)
        UNION
        SELECT r.merchant_id, r.channel_id FROM chargeback_rates r
         WHERE (p_merchant_id IS NULL OR r.merchant_id = p_merchant_id)
           AND r.chargebacks_90d > 0
    ), counted AS (
        SELECT pr.merchant_id, pr.channel_id,
               (SELECT count(*) FROM chargebacks c
                 WHERE c.merchant_id = pr.merchant_id AND c.status <> 'CLOSE'
                   AND c.created_at >= now() - interval '90 days'
                   AND (pr.channel_id = '' OR c.channel_id = pr.channel_id)) AS cb,
               (SELECT count(*) FROM payments p
                 WHERE p.merchant_id = pr.merchant_id AND p.status = 'SUCCESS'
                   AND p.created_at >= now() - interval '90 days'
                   AND (pr.channel_id = '' OR p.channel_id = pr.channel_id)) AS pays
          FROM pairs pr
    )
    INSERT INTO chargeback_rates AS r (merchant_id, channel_id, chargebacks_90d, payments_90d,
                                       rate_bp, computed_at)
    SELECT merchant_id, channel_id, cb, pays,
           CASE WHEN cb = 0 THEN 0 ELSE least(10000, cb * 10000 / greatest(pays, 1)) END, now()
      FROM counted
        ON CONFLICT ON CONSTRAINT chargeback_rates_pkey DO UPDATE
       SET chargebacks_90d = EXCLUDED.chargebacks_90d, payments_90d = EXCLUDED.payments_90d,
           rate_bp = EXCLUDED.rate_bp, computed_at = EXCLUDED.computed_at
    RETURNING r.merchant_id, r.channel_id, r.rate_bp
$$;

CREATE FUNCTION chargeback_rates_refresh_all()
RETURNS TABLE (merchant_id text, channel_id text, rate_bp integer)
LANGUAGE plpgsql AS $$
BEGIN
    -- 'chargeback_rates_refresh' as a lock key: held until this statement's
    -- transaction ends; a node that does not get it has nothing to do.
    IF pg_try_advisory_xact_lock(hashtext('chargeback_rates_refresh')) THEN
        RETURN QUERY SELECT * FROM chargeback_rates_refresh(NULL);
    END IF;
END
$$;
