-- Merchants, their signing credentials and contracts; nonces (PostgreSQL
-- fallback when Redis is down) and idempotency records.

CREATE TABLE merchants (
    merchant_id       text PRIMARY KEY CHECK (merchant_id ~ '^[A-Za-z0-9_-]{1,64}$'),
    name              text NOT NULL,
    status            text NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'DISABLED')),
    sign_type         text NOT NULL CHECK (sign_type IN ('HMAC-SHA256', 'RSA2')),
    -- The HMAC secret must be readable to verify signatures; access to this
    -- table is access to merchants' credentials.
    secret            text,
    public_key        text,
    allowed_products  text[] NOT NULL DEFAULT '{INSTANT,GUARANTEE,RECHARGE}',
    fee_rate_bp       integer NOT NULL DEFAULT 60 CHECK (fee_rate_bp BETWEEN 0 AND 10000),
    settle_cycle_days integer NOT NULL DEFAULT 1 CHECK (settle_cycle_days BETWEEN 0 AND 90),
    notify_url        text,
    advance_funding   boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK ((sign_type = 'HMAC-SHA256' AND secret IS NOT NULL)
        OR (sign_type = 'RSA2' AND public_key IS NOT NULL))
);

-- Used only while Redis is unreachable: the primary key is the single-use guard.
CREATE TABLE auth_nonces (
    merchant_id text NOT NULL,
    nonce       text NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (merchant_id, nonce)
);

-- One row per (merchant, Idempotency-Key). The primary key is the real guard
-- against running a request twice; Redis only keeps concurrent duplicates
-- from reaching PostgreSQL.
CREATE TABLE idempotency_keys (
    merchant_id     text NOT NULL,
    idem_key        text NOT NULL,
    request_hash    text NOT NULL,
    method          text NOT NULL,
    path            text NOT NULL,
    status          text NOT NULL CHECK (status IN ('IN_PROGRESS', 'DONE')),
    lock_token      text NOT NULL,
    locked_until    timestamptz NOT NULL,
    response_status integer,
    response_body   text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    PRIMARY KEY (merchant_id, idem_key),
    CHECK (status = 'IN_PROGRESS' OR response_status IS NOT NULL)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
