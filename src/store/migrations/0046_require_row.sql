-- A conditional write that touches no row is not an error in PostgreSQL, so
-- it aborts nothing: the rest of its transaction would commit without it
-- (a payment went on with a coupon another payment had locked a moment
-- before). Statements whose row must exist wrap the write and call this,
-- which raises check_violation with the given name as the constraint, so
-- the transaction can only roll back and the caller sees why:
--   WITH w AS (UPDATE ... RETURNING 1) SELECT pc_require(EXISTS (SELECT 1 FROM w), 'name')
CREATE FUNCTION pc_require(ok boolean, what text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT ok THEN
        RAISE EXCEPTION '% did not apply', what
            USING ERRCODE = 'check_violation', CONSTRAINT = what;
    END IF;
    RETURN true;
END $$;
