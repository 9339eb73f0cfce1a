-- A card's daily limit is the card's, whoever pays with it and however it is
-- given: before, only a bound card's payments by its own buyer were counted
-- (by card_id), so a card typed in (no card_id) had no limit at all, and a
-- stolen card could be spent without end over guest trades or new buyers.
-- card_fp is what paycore knows a card by: a keyed hash of its number (never
-- the number), kept on the payment and, for a bound card, on the card.
ALTER TABLE cards ADD COLUMN card_fp text;
ALTER TABLE payments ADD COLUMN card_fp text;
CREATE INDEX payments_card_fp ON payments (card_fp, created_at) WHERE card_fp IS NOT NULL;
-- Cards bound before this have no number to hash any more: they keep being
-- known by their card_id, and so are their payments of the last month (a
-- daily limit reads no older ones: a payment counts from when it was sent,
-- and one held for review is sent when released).
UPDATE cards SET card_fp = card_id WHERE card_fp IS NULL;
UPDATE payments SET card_fp = card_id
    WHERE card_id IS NOT NULL AND card_fp IS NULL AND created_at >= now() - interval '31 days';
