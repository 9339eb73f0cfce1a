-- The error-refund sweep (src/refund/refund.c, every refund.poll_ms on every
-- node) finds payments flagged for an error refund through
-- payments_error_refund_due (0045). A payment keeps its flag after its error
-- refund is made (the flag says what the payment was), so the index held
-- every such payment ever, and each poll walked all of them, asking each
-- whether it had its refund yet: work that grew without end. The index now
-- holds only those still waiting; the flag that takes a payment out is set
-- by the database itself when the error refund row is written, whatever
-- writes it.
ALTER TABLE payments ADD COLUMN error_refund_made boolean NOT NULL DEFAULT false;

UPDATE payments p SET error_refund_made = true
 WHERE p.needs_error_refund
   AND EXISTS (SELECT 1 FROM refunds r WHERE r.payment_no = p.payment_no AND r.type = 'ERROR');

CREATE FUNCTION payments_mark_error_refund_made() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE payments SET error_refund_made = true
     WHERE payment_no = NEW.payment_no AND NOT error_refund_made;
    RETURN NULL;
END
$$;

CREATE TRIGGER refunds_error_refund_made AFTER INSERT ON refunds
    FOR EACH ROW WHEN (NEW.type = 'ERROR')
    EXECUTE FUNCTION payments_mark_error_refund_made();

DROP INDEX payments_error_refund_due;
CREATE INDEX payments_error_refund_due ON payments (finished_at)
    WHERE needs_error_refund AND status = 'SUCCESS' AND NOT error_refund_made;
