-- Cashier and payment engine: buyers, bound cards (tokens only), coupons,
-- payments and their attempts at channels, risk decisions, ops reviews.

CREATE TABLE buyers (
    buyer_id   text PRIMARY KEY CHECK (buyer_id ~ '^[A-Za-z0-9_-]{1,64}$'),
    name       text,
    status     text NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'BLOCKED')),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- A card is kept as the channel's token plus what may be shown: never the
-- number or the CVV.
CREATE TABLE cards (
    card_id    text PRIMARY KEY,
    buyer_id   text NOT NULL REFERENCES buyers (buyer_id),
    channel_id text NOT NULL,
    token      text NOT NULL,
    brand      text NOT NULL,
    bin        text NOT NULL CHECK (bin ~ '^[0-9]{6,8}$'),
    last4      text NOT NULL CHECK (last4 ~ '^[0-9]{4}$'),
    exp_month  integer NOT NULL CHECK (exp_month BETWEEN 1 AND 12),
    exp_year   integer NOT NULL,
    holder     text,
    status     text NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'REMOVED')),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT cards_token_unique UNIQUE (channel_id, token)
);
CREATE INDEX cards_buyer ON cards (buyer_id) WHERE status = 'ACTIVE';

CREATE TABLE coupons (
    coupon_id   text PRIMARY KEY,
    buyer_id    text NOT NULL REFERENCES buyers (buyer_id),
    amount      bigint NOT NULL CHECK (amount > 0),
    currency    text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    min_amount  bigint NOT NULL DEFAULT 0 CHECK (min_amount >= 0),
    funded_by   text NOT NULL DEFAULT 'PLATFORM' CHECK (funded_by IN ('PLATFORM', 'MERCHANT')),
    merchant_id text REFERENCES merchants (merchant_id),
    status      text NOT NULL DEFAULT 'AVAILABLE'
                CHECK (status IN ('AVAILABLE', 'LOCKED', 'USED', 'EXPIRED')),
    payment_no  text,
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (funded_by = 'PLATFORM' OR merchant_id IS NOT NULL)
);
CREATE INDEX coupons_buyer ON coupons (buyer_id) WHERE status = 'AVAILABLE';

-- One row per payment attempt of a trade. Several attempts of one trade may
-- exist (continue-pay after a failure); more than one SUCCESS is a duplicate
-- payment, refunded by the platform (the trade records which one won).
CREATE TABLE payments (
    payment_no      text PRIMARY KEY,
    trade_no        text NOT NULL REFERENCES trades (trade_no),
    merchant_id     text NOT NULL,
    buyer_id        text,
    status          text NOT NULL CHECK (status IN ('CREATED', 'PROCESSING', 'UNKNOWN',
                                         'SUCCESS', 'FAILED', 'REVIEW', 'CHALLENGE')),
    amount          bigint NOT NULL CHECK (amount > 0),
    currency        text NOT NULL,
    method_type     text NOT NULL,
    balance_amount  bigint NOT NULL DEFAULT 0 CHECK (balance_amount >= 0),
    coupon_id       text,
    coupon_amount   bigint NOT NULL DEFAULT 0 CHECK (coupon_amount >= 0),
    external_amount bigint NOT NULL DEFAULT 0 CHECK (external_amount >= 0),
    channel_id      text,
    channel_txn_id  text,
    card_id         text,
    card_brand      text,
    card_last4      text,
    action          jsonb,
    route           jsonb,
    failure_code    text,
    failure_message text,
    risk_decision   text,
    risk_score      integer,
    risk_reasons    jsonb,
    rule_versions   jsonb NOT NULL DEFAULT '{}',
    client_ip       text,
    device_id       text,
    challenge_id    text,
    query_attempts  integer NOT NULL DEFAULT 0,
    next_query_at   timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT payments_parts_add_up
        CHECK (balance_amount + coupon_amount + external_amount = amount)
);
CREATE INDEX payments_trade ON payments (trade_no);
CREATE INDEX payments_repair ON payments (next_query_at) WHERE status IN ('PROCESSING', 'UNKNOWN');
CREATE UNIQUE INDEX payments_channel_txn ON payments (channel_id, channel_txn_id)
    WHERE channel_txn_id IS NOT NULL;
CREATE INDEX payments_review ON payments (created_at) WHERE status = 'REVIEW';

ALTER TABLE trades ADD COLUMN cashier_token_hash text;
