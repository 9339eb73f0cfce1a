-- X-Merchant-Id is not part of the signed string, so two RSA2 merchants with
-- the same public key could each be sent the other's signed requests: one
-- key, one merchant. The fingerprint is the SHA-256 of the key's DER form,
-- the same however its PEM is written. (Keys registered before this have
-- none and are not compared.)
ALTER TABLE merchants ADD COLUMN public_key_sha256 text;
CREATE UNIQUE INDEX merchants_public_key_unique ON merchants (public_key_sha256)
    WHERE public_key_sha256 IS NOT NULL;
