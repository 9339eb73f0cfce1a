-- Cashier: indexes for limits and history, challenges (the buyer's second
-- accept), ops block lists.
CREATE INDEX payments_buyer_recent ON payments (buyer_id, created_at);
CREATE INDEX payments_card_recent ON payments (card_id, created_at) WHERE card_id IS NOT NULL;

-- A challenge sent to the buyer (3-D Secure style). The code goes to the
-- buyer out of band; only its hash is kept. In this platform the "SMS" is the
-- ops endpoint GET /admin/challenges/{id} (demo and tests).
CREATE TABLE challenges (
    challenge_id text PRIMARY KEY,
    payment_no   text NOT NULL,
    code_hash    text NOT NULL,
    demo_code    text,
    attempts     integer NOT NULL DEFAULT 0,
    status       text NOT NULL DEFAULT 'OPEN' CHECK (status IN ('OPEN', 'PASSED', 'FAILED')),
    expires_at   timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE block_list (
    kind       text NOT NULL CHECK (kind IN ('IP', 'DEVICE', 'CARD_BIN', 'BUYER')),
    value      text NOT NULL,
    reason     text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, value)
);

-- Error refunds to come (issue: refunds) reference the payment that needs one.
ALTER TABLE payments ADD COLUMN needs_error_refund boolean NOT NULL DEFAULT false;
ALTER TABLE payments ADD COLUMN attempt integer NOT NULL DEFAULT 1;
ALTER TABLE payments ADD COLUMN card_token text;
