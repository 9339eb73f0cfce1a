-- A challenged card payment is answered with the card again (its number is
-- never stored), so the card risk scored must be the card the answer brings:
-- the challenge keeps the keyed hash the cashier knows the card by
-- ("c" + HMAC, never the number), and an answer with another card, or a card
-- on a challenge issued for none, does not pass.
ALTER TABLE challenges ADD COLUMN card_key text CHECK (card_key IS NULL OR card_key ~ '^c[0-9a-f]{24}$');
