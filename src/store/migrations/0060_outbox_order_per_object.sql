-- Notifications of one object reach the merchant in the order they
-- happened. Each event was claimed on its own, so a trade.paid that the
-- merchant's endpoint refused once (retried 15 s later) arrived after the
-- trade.succeeded written meanwhile, and a merchant that applies what it
-- receives moved the order back to "paid". An event is now claimed only when
-- no earlier event of the same object (the merchant's trade, refund, payout
-- or chargeback, by its number in the snapshot) is still PENDING: delivered
-- or given up (FAILED) before the next one goes. seq is the order the events
-- were written in; the writers of one object hold its row lock, so that is
-- also the order their transactions committed in.
ALTER TABLE outbox ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY;
ALTER TABLE outbox ADD COLUMN subject text GENERATED ALWAYS AS (
    merchant_id || ':' || split_part(type, '.', 1) || ':' ||
    coalesce((payload::jsonb) -> 'data' ->> (split_part(type, '.', 1) || '_no'), event_id)
) STORED;
CREATE INDEX outbox_pending_subject ON outbox (subject, seq) WHERE status = 'PENDING';
