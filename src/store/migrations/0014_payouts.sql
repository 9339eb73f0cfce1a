-- Payouts (withdrawals, system.md §2.6): a merchant's available money paid
-- out to a bank card or account through a payout channel. The C side is
-- src/payout/.
--
-- Ledger: accepting a payout moves the amount from the merchant's available
-- balance to platform escrow in the accepting transaction (PAYOUT_HOLD), so
-- concurrent payouts can never spend the same money (the balance's
-- non-negative constraint is the last guard). Then exactly one of:
--   SUCCESS   escrow -> the channel's clearing account (PAYOUT_SUCCESS)
--   FAILED    escrow -> available again (PAYOUT_RELEASE)
-- and, after SUCCESS, when the bank sends the money back:
--   RETURNED  channel clearing -> available (PAYOUT_RETURN).

CREATE TABLE payouts (
    payout_no       text PRIMARY KEY,
    out_payout_no   text NOT NULL,
    merchant_id     text NOT NULL REFERENCES merchants (merchant_id),
    amount          bigint NOT NULL CHECK (amount > 0),
    currency        text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    -- {"type":"CARD","card_token"} or {"type":"ACCOUNT","account_no","name",
    -- "bank_code"}: what the channel needs to pay; never a card number.
    payee           jsonb NOT NULL,
    status          text NOT NULL CHECK (status IN ('ACCEPTED', 'PROCESSING', 'SUCCESS',
                                                    'FAILED', 'RETURNED')),
    channel_id      text NOT NULL,
    channel_txn_id  text,
    fee             bigint NOT NULL DEFAULT 0 CHECK (fee >= 0),
    failure_code    text,
    failure_message text,
    return_reason   text,
    -- Set while risk holds the payout for ops (REVIEW); the money stays
    -- reserved until ops release or reject it.
    hold_reason     text,
    risk_decision   text NOT NULL,
    risk_score      integer,
    risk_reasons    jsonb NOT NULL DEFAULT '[]',
    risk_version    text,
    notify_url      text,
    query_attempts  integer NOT NULL DEFAULT 0,
    next_query_at   timestamptz,
    needs_ops       boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    finished_at     timestamptz,
    returned_at     timestamptz,
    CONSTRAINT payouts_out_payout_no_unique UNIQUE (merchant_id, out_payout_no),
    CONSTRAINT payouts_finished CHECK ((status IN ('SUCCESS', 'FAILED', 'RETURNED'))
                                       = (finished_at IS NOT NULL)),
    CONSTRAINT payouts_returned CHECK ((status = 'RETURNED') = (returned_at IS NOT NULL)),
    CONSTRAINT payouts_held_only_accepted CHECK (hold_reason IS NULL OR status IN ('ACCEPTED',
                                                                                  'FAILED'))
);
-- The runner's claims: payouts to send (not held) and payouts to query.
CREATE INDEX payouts_due ON payouts (next_query_at)
    WHERE status IN ('ACCEPTED', 'PROCESSING') AND hold_reason IS NULL;
CREATE INDEX payouts_merchant ON payouts (merchant_id, created_at);
CREATE INDEX payouts_held ON payouts (created_at) WHERE hold_reason IS NOT NULL
    AND status = 'ACCEPTED';

-- Every change of a payout by a person: who, what, why, when.
CREATE TABLE payout_actions (
    action_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payout_no   text NOT NULL REFERENCES payouts (payout_no),
    who         text NOT NULL,
    action      text NOT NULL,
    why         text,
    at          timestamptz NOT NULL DEFAULT now()
);

-- The payout object of api.md. The payee is shown masked: the type, the last
-- four digits of an account, the bank code and name; a card token as is.
CREATE FUNCTION payout_json(p payouts) RETURNS json
LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'payout_no', p.payout_no, 'out_payout_no', p.out_payout_no, 'amount', p.amount,
        'currency', p.currency, 'status', p.status,
        'failure', CASE WHEN p.failure_code IS NULL THEN NULL
                        ELSE json_build_object('code', p.failure_code,
                                               'message', p.failure_message) END,
        'payee', json_strip_nulls(json_build_object(
            'type', p.payee ->> 'type',
            'card_token', p.payee ->> 'card_token',
            'account_last4', right(p.payee ->> 'account_no', 4),
            'name', p.payee ->> 'name', 'bank_code', p.payee ->> 'bank_code')),
        'channel_id', p.channel_id, 'hold_reason', p.hold_reason,
        'return_reason', p.return_reason,
        'created_at', to_char(p.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
        'finished_at', to_char(p.finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
        'returned_at', to_char(p.returned_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
$$;
