-- The wallet a payment's balance part came from: NULL is the buyer's own
-- wallet (buyer:<buyer_id>:wallet), otherwise the owner of a named account
-- type at one merchant ("<buyer_id>@<merchant_id>.<type>", see 0020). Holds,
-- releases and refunds of the balance part use the same wallet.
ALTER TABLE payments ADD COLUMN wallet_owner text;
