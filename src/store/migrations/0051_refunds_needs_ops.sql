-- A refund whose channel contradicts its final state (paid out, SUCCESS,
-- then the payee's bank returned the money) is flagged for a person, like
-- payments and payouts (GET /admin/needs-ops).
ALTER TABLE refunds ADD COLUMN needs_ops boolean NOT NULL DEFAULT false;
CREATE INDEX refunds_needs_ops ON refunds (status) WHERE needs_ops;
