-- Real-name verification of merchants: required before a merchant can pay
-- out, and the name a payout to the merchant's own account must carry.
CREATE TABLE merchant_verifications (
    merchant_id  text PRIMARY KEY REFERENCES merchants (merchant_id),
    legal_name   text NOT NULL CHECK (length(legal_name) BETWEEN 1 AND 200),
    id_type      text NOT NULL CHECK (id_type IN ('BUSINESS_LICENSE', 'NATIONAL_ID', 'PASSPORT')),
    -- Only the last four characters of the document number are kept.
    id_last4     text NOT NULL CHECK (id_last4 ~ '^[A-Za-z0-9]{4}$'),
    verified_by  text NOT NULL,
    verified_at  timestamptz NOT NULL DEFAULT now()
);

-- Name comparison for payouts: case, accents of spacing and punctuation do
-- not make two names different.
CREATE FUNCTION pc_name_key(text) RETURNS text LANGUAGE sql IMMUTABLE AS
$$ SELECT regexp_replace(lower($1), '[^[:alnum:]]+', '', 'g') $$;
