-- Chargeback file lines that open no case were kept here and shown nowhere
-- but in the import's answer: a channel that debited a dispute paycore
-- could not place (an unknown or refunded payment, a wallet top-up) went
-- unnoticed. They are now listed for ops (GET /admin/chargebacks/unmatched),
-- raise CHARGEBACKS_UNMATCHED until each is resolved (by hand, with a why,
-- or by the case opening from a later file or an offline entry), and a line
-- that comes again keeps its row with the latest reason.
ALTER TABLE chargeback_unmatched
    ADD COLUMN resolved_at timestamptz,
    ADD COLUMN resolved_by text,
    ADD COLUMN resolution  text,
    ADD COLUMN updated_at  timestamptz NOT NULL DEFAULT now();
CREATE INDEX chargeback_unmatched_open ON chargeback_unmatched (created_at)
    WHERE resolved_at IS NULL;
