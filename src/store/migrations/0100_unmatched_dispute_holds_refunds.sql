-- A dispute paycore opens no case for (a wallet top-up's: its money is the
-- buyer's wallet, not the merchant's; and any line kept for ops) froze
-- nothing: the merchant could refund the top-up in full, or its error
-- refund went out, while the bank had already given the cardholder the
-- money back — paid twice. Such a line now names its payment and sum, and
-- until ops resolve it the disputed sum is not refundable and the
-- payment's error refund waits, as for an open case.
ALTER TABLE chargeback_unmatched ADD COLUMN payment_no text, ADD COLUMN amount bigint;
CREATE INDEX chargeback_unmatched_open_payment ON chargeback_unmatched (payment_no)
    WHERE resolved_at IS NULL AND payment_no IS NOT NULL;

CREATE FUNCTION payment_disputed_unmatched(p_payment_no text) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(amount), 0)::bigint FROM chargeback_unmatched
     WHERE payment_no = p_payment_no AND resolved_at IS NULL
$$;

CREATE OR REPLACE FUNCTION chargeback_open_on_payment(p_payment_no text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM chargebacks c
                    WHERE c.payment_no = p_payment_no
                      AND c.status IN ('WAIT_JUDGE', 'IN_JUDGE'))
        OR EXISTS (SELECT 1 FROM chargeback_unmatched u
                    WHERE u.payment_no = p_payment_no AND u.resolved_at IS NULL)
$$;
