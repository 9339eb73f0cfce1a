-- Payments and payouts flagged for a person (needs_ops): found without
-- reading either table whole, by the admin list and the alerts. Keyed by
-- status so that the alerts' counts (status IN ...) are index conditions,
-- cheaper than a scan even in a plan made while the table was empty.
CREATE INDEX payments_needs_ops ON payments (status) WHERE needs_ops;
CREATE INDEX payouts_needs_ops ON payouts (status) WHERE needs_ops;

-- A flag cleared by ops once they dealt with what it pointed at (a final
-- state the channel contradicts): who, why, and the state it had.
CREATE TABLE needs_ops_resolutions (
    resolution_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('payment', 'payout', 'refund')),
    ref           text NOT NULL,
    status        text NOT NULL,
    who           text NOT NULL,
    why           text NOT NULL,
    at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX needs_ops_resolutions_ref ON needs_ops_resolutions (kind, ref);
