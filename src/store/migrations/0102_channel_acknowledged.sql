-- A payment or payout the channel said it holds (PROCESSING) is never
-- failed on a later "no record" (the bank may still pay it): ops look
-- instead. That was known only from the channel's reference, kept with the
-- answer: a PROCESSING answer that carried none (a channel that gives its
-- reference only with the outcome) left nothing behind, and a later "no
-- record" failed the payment or payout, giving the money back while the
-- bank could still pay it. The acknowledgement is now kept on its own.
ALTER TABLE payments ADD COLUMN acknowledged_at timestamptz;
ALTER TABLE payouts ADD COLUMN acknowledged_at timestamptz;
