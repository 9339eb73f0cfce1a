-- A chargeback takes back the channel (card) part of its own payment. Refunds
-- counted chargebacks over the whole trade and against no part in particular:
-- a refund after a dispute of the card part was still split onto the card
-- (the cardholder paid back twice, or a refund the channel refuses forever,
-- the balance part never refundable while the dispute stands), and a dispute
-- of a trade's duplicate payment (held for its error refund, not the
-- merchant's money) made the real payment unrefundable. Refunds now count
-- the chargebacks of the trade's payment only, against its channel part.
CREATE FUNCTION payment_chargeback_frozen(p_payment_no text) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(amount), 0)::bigint FROM chargebacks
     WHERE payment_no = p_payment_no
       AND (status IN ('WAIT_JUDGE', 'IN_JUDGE')
            OR (status = 'JUDGE_FINISH' AND liable IN ('MERCHANT', 'PLATFORM')))
$$;

DROP FUNCTION chargeback_frozen(text);

-- The same count says whether a chargeback covers a payment (0056).
CREATE OR REPLACE FUNCTION chargeback_covers_payment(p_payment_no text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT payment_chargeback_frozen(p_payment_no) > 0
$$;
