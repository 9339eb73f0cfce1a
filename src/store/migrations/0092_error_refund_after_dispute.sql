-- A payment held in escrow for its error refund (paid twice, or after its
-- trade closed) whose buyer disputes part of it at the channel: the error
-- refund waits while the case is open (chargeback_open_on_payment), then
-- returns what the chargeback did not — the whole payment when the
-- cardholder lost, the rest (its balance and coupon parts, and the card
-- part not disputed) when the cardholder won. Before, a won case stopped
-- the error refund for good, and that rest stayed in escrow.
CREATE FUNCTION chargeback_open_on_payment(p_payment_no text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM chargebacks c
                    WHERE c.payment_no = p_payment_no
                      AND c.status IN ('WAIT_JUDGE', 'IN_JUDGE'))
$$;
