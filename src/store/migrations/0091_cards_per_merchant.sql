-- A bound card belongs to the merchant that bound it (POST
-- /v1/buyers/{id}/cards), and only that merchant's trades may charge it
-- (QUICK_PAY, AGREEMENT) or pay out to it: buyer ids are the merchants' own
-- names for their customers, so another merchant naming the same buyer id
-- could see the card in its consult and charge it.
ALTER TABLE cards ADD COLUMN merchant_id text REFERENCES merchants (merchant_id);
-- Cards bound before: the merchant of their first payment. A card never
-- used has no owner known; it is offered to no one (bound again, it is).
UPDATE cards c SET merchant_id = f.merchant_id
  FROM (SELECT DISTINCT ON (card_id) card_id, merchant_id FROM payments
         WHERE card_id IS NOT NULL ORDER BY card_id, created_at) f
 WHERE f.card_id = c.card_id;
-- The same card may be bound at several merchants (one row each). Cards
-- with no owner keep the old one-row-per-token guarantee through a partial
-- index (NULLS NOT DISTINCT would do both, but only from PostgreSQL 15).
ALTER TABLE cards DROP CONSTRAINT cards_token_unique;
ALTER TABLE cards ADD CONSTRAINT cards_token_unique UNIQUE (channel_id, token, merchant_id);
CREATE UNIQUE INDEX cards_token_unowned ON cards (channel_id, token) WHERE merchant_id IS NULL;
DROP INDEX cards_buyer;
CREATE INDEX cards_buyer ON cards (buyer_id, merchant_id) WHERE status = 'ACTIVE';
