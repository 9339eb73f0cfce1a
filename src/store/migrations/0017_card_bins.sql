-- Card BINs (issuer identification numbers): loaded from config/card_bins.csv
-- at start; used to show bound cards and to validate payout cards.
CREATE TABLE card_bins (
    bin        text PRIMARY KEY CHECK (bin ~ '^[0-9]{6,8}$'),
    brand      text NOT NULL,
    issuer     text NOT NULL,
    card_type  text NOT NULL CHECK (card_type IN ('DEBIT', 'CREDIT', 'PREPAID')),
    country    text NOT NULL CHECK (country ~ '^[A-Z]{2}$'),
    province   text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
