-- Rotating a merchant's HMAC secret replaced it at once: every request the
-- merchant signed until it deployed the new secret was refused, and a lost
-- rotation answer (the one place the secret is shown) locked it out. A
-- rotation may now keep the previous secret valid for a grace period (for a
-- leaked secret: none, the default). RSA2 merchants may replace their public
-- key the same way.
ALTER TABLE merchants
    ADD COLUMN secret_prev text,
    ADD COLUMN public_key_prev text,
    ADD COLUMN prev_until timestamptz,
    ADD CONSTRAINT merchants_prev_until CHECK (
        (secret_prev IS NULL AND public_key_prev IS NULL) = (prev_until IS NULL));
