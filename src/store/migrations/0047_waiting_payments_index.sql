-- Payments held for review or a challenge that can no longer go on (their
-- trade closed or was paid by another attempt; the challenge failed or
-- expired) are failed by a sweep (pc_engine_sweep_waiting, every
-- jobs.trade_sweep_ms on every node), which frees their coupons. This index
-- keeps that sweep from reading the whole payments table; waiting payments
-- are few.
CREATE INDEX payments_waiting ON payments (created_at) WHERE status IN ('REVIEW', 'CHALLENGE');
