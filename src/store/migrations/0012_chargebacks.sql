-- Chargebacks (system.md §2.5): disputes that reach the platform online (a
-- channel's daily chargeback file) or offline (entered by ops). The C side is
-- src/chargeback/.
--
-- Money: on arrival the disputed amount is frozen into the merchant's reserve
-- (ledger CHARGEBACK_FREEZE), taken from the merchant's pending money first,
-- then from available money; what the balances cannot cover is recorded as
-- owed (merchant receivable) and recovered by the next settlement. The row
-- keeps the split (from_pending + from_available + owed = amount) so that a
-- release gives the money back where it came from.

CREATE TABLE chargeback_imports (
    import_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel_id    text NOT NULL,
    business_date date NOT NULL,
    origin        text NOT NULL CHECK (origin IN ('FETCH', 'UPLOAD')),
    sha256        text NOT NULL,
    lines         integer NOT NULL DEFAULT 0,
    created       integer NOT NULL DEFAULT 0,
    duplicates    integer NOT NULL DEFAULT 0,
    unmatched     integer NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- The same file imported again is the same import (its lines are all
    -- duplicates then); a changed file of the same day is a new one.
    CONSTRAINT chargeback_imports_file UNIQUE (channel_id, business_date, sha256)
);

CREATE TABLE chargebacks (
    chargeback_no   text PRIMARY KEY,
    source          text NOT NULL CHECK (source IN ('ONLINE', 'OFFLINE')),
    -- The channel's chargeback_ref (ONLINE) or the reference ops gave
    -- (OFFLINE, e.g. the bank's case number in the email).
    source_ref      text NOT NULL CHECK (length(source_ref) BETWEEN 1 AND 128),
    channel_id      text NOT NULL,
    merchant_id     text NOT NULL REFERENCES merchants (merchant_id),
    trade_no        text NOT NULL REFERENCES trades (trade_no),
    payment_no      text NOT NULL REFERENCES payments (payment_no),
    channel_txn_id  text NOT NULL,
    buyer_id        text,
    amount          bigint NOT NULL CHECK (amount > 0),
    currency        text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    reason_code     text NOT NULL CHECK (length(reason_code) BETWEEN 1 AND 32),
    status          text NOT NULL DEFAULT 'WAIT_JUDGE'
                    CHECK (status IN ('WAIT_JUDGE', 'IN_JUDGE', 'JUDGE_FINISH', 'CLOSE')),
    liable          text CHECK (liable IN ('MERCHANT', 'PLATFORM', 'NONE')),
    judge_note      text,
    evidence        jsonb NOT NULL DEFAULT '[]',
    evidence_due_at timestamptz NOT NULL,
    channel_time    timestamptz,
    -- Where the frozen money came from (the freeze posting's legs).
    from_pending    bigint NOT NULL CHECK (from_pending >= 0),
    from_available  bigint NOT NULL CHECK (from_available >= 0),
    owed            bigint NOT NULL CHECK (owed >= 0),
    -- Where a release (PLATFORM, NONE, CLOSE) sent the reserve.
    released_to_pending    bigint NOT NULL DEFAULT 0 CHECK (released_to_pending >= 0),
    released_to_available  bigint NOT NULL DEFAULT 0 CHECK (released_to_available >= 0),
    released_to_receivable bigint NOT NULL DEFAULT 0 CHECK (released_to_receivable >= 0),
    notify_url      text,
    import_id       bigint REFERENCES chargeback_imports (import_id),
    entered_by      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    judge_started_at timestamptz,
    judged_at       timestamptz,
    closed_at       timestamptz,
    -- Importing the same file again, or entering the same case twice, finds
    -- this key and changes nothing.
    CONSTRAINT chargebacks_source_ref_unique UNIQUE (channel_id, source, source_ref),
    CONSTRAINT chargebacks_hold_adds_up CHECK (from_pending + from_available + owed = amount),
    CONSTRAINT chargebacks_release_le_amount
        CHECK (released_to_pending + released_to_available + released_to_receivable <= amount),
    CONSTRAINT chargebacks_liable_iff_judged CHECK ((status = 'JUDGE_FINISH') = (liable IS NOT NULL)),
    CONSTRAINT chargebacks_closed_at CHECK ((status = 'CLOSE') = (closed_at IS NOT NULL))
);
CREATE INDEX chargebacks_merchant ON chargebacks (merchant_id, status, created_at);
CREATE INDEX chargebacks_trade ON chargebacks (trade_no);
CREATE INDEX chargebacks_payment ON chargebacks (payment_no);
CREATE INDEX chargebacks_buyer ON chargebacks (buyer_id, created_at) WHERE buyer_id IS NOT NULL;
CREATE INDEX chargebacks_channel ON chargebacks (merchant_id, channel_id, created_at);

-- Lines of a chargeback file that name no payment we know (or one that
-- cannot be disputed by that much): kept for ops, once per line.
CREATE TABLE chargeback_unmatched (
    channel_id     text NOT NULL,
    chargeback_ref text NOT NULL,
    import_id      bigint NOT NULL REFERENCES chargeback_imports (import_id),
    line           text NOT NULL,
    reason         text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel_id, chargeback_ref)
);

-- A merchant found liable paid the cardholder back through the channel:
-- the record of that compensation (owed_at_judgement: how much of it the
-- merchant's balances could not cover at arrival and is recovered from
-- settlements).
CREATE TABLE chargeback_compensations (
    chargeback_no     text PRIMARY KEY REFERENCES chargebacks (chargeback_no),
    merchant_id       text NOT NULL,
    channel_id        text NOT NULL,
    amount            bigint NOT NULL CHECK (amount > 0),
    currency          text NOT NULL,
    owed_at_judgement bigint NOT NULL CHECK (owed_at_judgement >= 0),
    created_at        timestamptz NOT NULL DEFAULT now()
);

-- How much of a trade no refund may use because of chargebacks: disputes
-- still open (WAIT_JUDGE, IN_JUDGE) and disputes the cardholder won
-- (JUDGE_FINISH with MERCHANT or PLATFORM liable: the money already went
-- back to the cardholder through the channel). Withdrawn (CLOSE) and lost
-- (liable NONE) disputes free the amount again. Refunds compute
--   refundable = paid_amount - refunds not FAILED/TERMINATED - chargeback_frozen(trade_no)
-- inside the transaction that holds the trade row lock (chargebacks lock the
-- same row before they freeze, so the two cannot interleave).
CREATE FUNCTION chargeback_frozen(p_trade_no text) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(amount), 0)::bigint FROM chargebacks
     WHERE trade_no = p_trade_no
       AND (status IN ('WAIT_JUDGE', 'IN_JUDGE')
            OR (status = 'JUDGE_FINISH' AND liable IN ('MERCHANT', 'PLATFORM')))
$$;

-- Chargeback rates (risk input and the pc_chargeback_rate_bp gauge):
-- chargebacks (not withdrawn) opened in the last 90 days per successful
-- payment in the same window, in basis points, rounded down, at most 10000;
-- per merchant and channel, and per merchant over all channels (channel_id
-- ''). Counting is done off the payment path: the rows are refreshed when a
-- case opens or closes and by a timer (so old cases age out), and the
-- cashier only reads one row.
CREATE INDEX payments_merchant_success ON payments (merchant_id, created_at)
    WHERE status = 'SUCCESS';

CREATE TABLE chargeback_rates (
    merchant_id     text NOT NULL,
    channel_id      text NOT NULL,
    chargebacks_90d integer NOT NULL,
    payments_90d    integer NOT NULL,
    rate_bp         integer NOT NULL CHECK (rate_bp BETWEEN 0 AND 10000),
    computed_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, channel_id)
);

-- Recomputes the rates of one merchant (or, with NULL, of every merchant
-- with a case in the window or a rate row already) and returns them.
CREATE FUNCTION chargeback_rates_refresh(p_merchant_id text)
RETURNS TABLE (merchant_id text, channel_id text, rate_bp integer)
LANGUAGE sql AS $$
    WITH pairs AS (
        SELECT c.merchant_id, c.channel_id FROM chargebacks c
         WHERE c.created_at >= now() - interval '90 days'
           AND (p_merchant_id IS NULL OR c.merchant_id = p_merchant_id)
        UNION
        SELECT c.merchant_id, '' FROM chargebacks c
         WHERE c.created_at >= now() - interval '90 days'
           AND (p_merchant_id IS NULL OR c.merchant_id = p_merchant_id)
        UNION
        SELECT r.merchant_id, r.channel_id FROM chargeback_rates r
         WHERE p_merchant_id IS NULL OR r.merchant_id = p_merchant_id
    ), counted AS (
        SELECT pr.merchant_id, pr.channel_id,
               (SELECT count(*) FROM chargebacks c
                 WHERE c.merchant_id = pr.merchant_id AND c.status <> 'CLOSE'
                   AND c.created_at >= now() - interval '90 days'
                   AND (pr.channel_id = '' OR c.channel_id = pr.channel_id)) AS cb,
               (SELECT count(*) FROM payments p
                 WHERE p.merchant_id = pr.merchant_id AND p.status = 'SUCCESS'
                   AND p.created_at >= now() - interval '90 days'
                   AND (pr.channel_id = '' OR p.channel_id = pr.channel_id)) AS pays
          FROM pairs pr
    )
    INSERT INTO chargeback_rates AS r (merchant_id, channel_id, chargebacks_90d, payments_90d,
                                       rate_bp, computed_at)
    SELECT merchant_id, channel_id, cb, pays,
           CASE WHEN cb = 0 THEN 0 ELSE least(10000, cb * 10000 / greatest(pays, 1)) END, now()
      FROM counted
        ON CONFLICT ON CONSTRAINT chargeback_rates_pkey DO UPDATE
       SET chargebacks_90d = EXCLUDED.chargebacks_90d, payments_90d = EXCLUDED.payments_90d,
           rate_bp = EXCLUDED.rate_bp, computed_at = EXCLUDED.computed_at
    RETURNING r.merchant_id, r.channel_id, r.rate_bp
$$;

-- The merchant's rate over all channels, as last computed (0 when none).
CREATE FUNCTION merchant_chargeback_rate_bp(p_merchant_id text) RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT rate_bp FROM chargeback_rates
                      WHERE merchant_id = p_merchant_id AND channel_id = ''), 0)
$$;

CREATE FUNCTION buyer_chargebacks_90d(p_buyer_id text) RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT count(*)::integer FROM chargebacks
     WHERE buyer_id = p_buyer_id AND status <> 'CLOSE'
       AND created_at >= now() - interval '90 days'
$$;

-- The chargeback object of api.md (plus where the money was held).
CREATE FUNCTION chargeback_json(c chargebacks) RETURNS json
LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'chargeback_no', c.chargeback_no, 'trade_no', c.trade_no, 'payment_no', c.payment_no,
        'amount', c.amount, 'currency', c.currency, 'reason_code', c.reason_code,
        'source', c.source, 'channel_id', c.channel_id, 'status', c.status, 'liable', c.liable,
        'judge_note', c.judge_note,
        'evidence_due_at', to_char(c.evidence_due_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
        'evidence', c.evidence,
        'hold', json_build_object('from_pending', c.from_pending,
                                  'from_available', c.from_available, 'owed', c.owed),
        'created_at', to_char(c.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
        'judged_at', to_char(c.judged_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
        'closed_at', to_char(c.closed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
$$;
