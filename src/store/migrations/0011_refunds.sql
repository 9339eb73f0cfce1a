-- Refunds (system.md §2.4): merchant refunds (NORMAL) and the platform's
-- error refunds of duplicate or late payments (ERROR), the four ways they
-- run (API, PAYOUT, FILE, OFFLINE), ops actions on them, and the batches in
-- which FILE and OFFLINE refunds leave. The C side is src/refund/.

-- A batch of FILE refunds of one channel (the CSV uploaded to the channel),
-- or of OFFLINE refunds (the work list ops handle by hand).
CREATE TABLE refund_batches (
    batch_id     text PRIMARY KEY,
    method       text NOT NULL CHECK (method IN ('FILE', 'OFFLINE')),
    channel_id   text,
    status       text NOT NULL DEFAULT 'EXPORTED' CHECK (status IN ('EXPORTED', 'COMPLETED')),
    refund_count integer NOT NULL DEFAULT 0 CHECK (refund_count >= 0),
    csv          text NOT NULL DEFAULT '',
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    CHECK (method = 'OFFLINE' OR channel_id IS NOT NULL)
);

CREATE TABLE refunds (
    refund_no       text PRIMARY KEY,
    out_refund_no   text NOT NULL,
    merchant_id     text NOT NULL REFERENCES merchants (merchant_id),
    trade_no        text NOT NULL REFERENCES trades (trade_no),
    payment_no      text NOT NULL REFERENCES payments (payment_no),
    type            text NOT NULL CHECK (type IN ('NORMAL', 'ERROR')),
    method          text NOT NULL CHECK (method IN ('API', 'PAYOUT', 'FILE', 'OFFLINE')),
    status          text NOT NULL CHECK (status IN ('ACCEPTED', 'PROCESSING', 'SUCCESS',
                                         'FAILED', 'SUSPENDED', 'TERMINATED')),
    amount          bigint NOT NULL CHECK (amount > 0),
    currency        text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    -- What goes back to the buyer, part by part of the payment (external
    -- channel, wallet balance, coupon), in that order (README "Refunds").
    external_amount bigint NOT NULL CHECK (external_amount >= 0),
    balance_amount  bigint NOT NULL CHECK (balance_amount >= 0),
    coupon_amount   bigint NOT NULL CHECK (coupon_amount >= 0),
    -- Where the money was taken from at acceptance (the reverse of this is
    -- what a failed or terminated refund gives back).
    from_escrow     bigint NOT NULL DEFAULT 0 CHECK (from_escrow >= 0),
    from_pending    bigint NOT NULL DEFAULT 0 CHECK (from_pending >= 0),
    from_available  bigint NOT NULL DEFAULT 0 CHECK (from_available >= 0),
    from_wallet     bigint NOT NULL DEFAULT 0 CHECK (from_wallet >= 0),
    from_receivable bigint NOT NULL DEFAULT 0 CHECK (from_receivable >= 0),
    channel_id      text,
    channel_txn_id  text,
    -- The payment as the channel knows it.
    payment_channel_txn_id text,
    buyer_id        text,
    coupon_funder   text,
    -- PAYOUT: {"type":"CARD","card_token"} or {"type":"ACCOUNT","account_no",
    -- "name","bank_code"}; never a card number.
    payee           jsonb,
    reason          text,
    notify_url      text,
    failure_code    text,
    failure_message text,
    hold_reason     text,
    rule_version    text,
    risk_decision   text,
    risk_reasons    jsonb,
    risk_version    text,
    batch_id        text REFERENCES refund_batches (batch_id),
    query_attempts  integer NOT NULL DEFAULT 0,
    next_query_at   timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    CONSTRAINT refunds_out_refund_no_unique UNIQUE (merchant_id, out_refund_no),
    CONSTRAINT refunds_parts_add_up
        CHECK (external_amount + balance_amount + coupon_amount = amount),
    CONSTRAINT refunds_sources_add_up
        CHECK (from_escrow + from_pending + from_available + from_wallet + from_receivable = amount),
    -- An error refund returns a whole payment that the platform holds in escrow.
    CONSTRAINT refunds_error_from_escrow CHECK (type = 'NORMAL' OR from_escrow = amount),
    CONSTRAINT refunds_payout_payee CHECK (method <> 'PAYOUT' OR payee IS NOT NULL),
    CONSTRAINT refunds_final_finished
        CHECK ((status IN ('SUCCESS', 'FAILED', 'TERMINATED')) = (finished_at IS NOT NULL)),
    -- Error refunds are never failed back or terminated: the money is the
    -- buyer's and leaves, by hand if need be.
    CONSTRAINT refunds_error_never_fails CHECK (type = 'NORMAL' OR status NOT IN ('FAILED',
                                                                                  'TERMINATED'))
);
CREATE INDEX refunds_trade ON refunds (trade_no);
CREATE INDEX refunds_payment ON refunds (payment_no);
-- A payment gets at most one error refund, whichever node creates it.
CREATE UNIQUE INDEX refunds_one_error_per_payment ON refunds (payment_no) WHERE type = 'ERROR';
-- The runner's claims: refunds to send to a channel or to query there.
CREATE INDEX refunds_due ON refunds (next_query_at)
    WHERE status IN ('ACCEPTED', 'PROCESSING') AND method IN ('API', 'PAYOUT');
-- What the next FILE / OFFLINE batch takes.
CREATE INDEX refunds_batchable ON refunds (method, channel_id, created_at)
    WHERE status = 'ACCEPTED' AND method IN ('FILE', 'OFFLINE');
CREATE INDEX refunds_batch ON refunds (batch_id) WHERE batch_id IS NOT NULL;

-- Every change of a refund by a person or a rule: who, what, why, when.
CREATE TABLE refund_actions (
    action_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    refund_no   text NOT NULL REFERENCES refunds (refund_no),
    who         text NOT NULL,
    action      text NOT NULL,
    why         text,
    from_status text,
    to_status   text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refund_actions_refund ON refund_actions (refund_no, action_id);

-- The trade side of the ledger check, now with refunds:
--  trades_over_refunded: a trade whose merchant refunds that are not failed
--    or terminated add up to more than was paid (or whose running total
--    says so);
--  duplicate_charges: a trade with more successful payments than one plus
--    the error refunds (accepted or further along) that return the extras.
CREATE OR REPLACE FUNCTION ledger_check_trades(OUT trades_over_refunded bigint,
                                               OUT duplicate_charges bigint)
LANGUAGE sql STABLE AS $$
    SELECT (SELECT count(*) FROM trades t
             WHERE t.refunded_amount > t.paid_amount
                OR (SELECT coalesce(sum(r.amount), 0) FROM refunds r
                     WHERE r.trade_no = t.trade_no AND r.type = 'NORMAL'
                       AND r.status NOT IN ('FAILED', 'TERMINATED')) > t.paid_amount),
           (SELECT count(*) FROM (SELECT p.trade_no, count(*) AS n FROM payments p
                                   WHERE p.status = 'SUCCESS' GROUP BY p.trade_no) s
             WHERE s.n > 1 + (SELECT count(*) FROM refunds r
                               WHERE r.trade_no = s.trade_no AND r.type = 'ERROR'
                                 AND r.status NOT IN ('FAILED', 'TERMINATED')))
$$;
