-- A second previous HMAC secret. A rotation with grace while an earlier
-- grace still runs cannot tell "the answer was lost" (the merchant still signs
-- with the secret before) from "the merchant deployed it and rotates again"
-- (it signs with the one in between): both stay valid, each until its own
-- deadline, never extended. A rotation without grace (a leak) clears both.
ALTER TABLE merchants
    ADD COLUMN secret_prev2 text,
    ADD COLUMN prev2_until timestamptz,
    ADD CONSTRAINT merchants_prev2_until CHECK ((secret_prev2 IS NULL) = (prev2_until IS NULL));
