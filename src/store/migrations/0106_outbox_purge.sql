-- Finished notifications (delivered, given up, or with nowhere to go) are
-- purged after 90 days with their attempts (pc_idem_purge, oldest first in
-- batches). Before, nothing deleted them: the outbox and its attempts grew
-- for good, and GET /admin/notifications without a filter read it all.
CREATE INDEX outbox_finished_created ON outbox (created_at)
    WHERE status IN ('DELIVERED', 'FAILED', 'SKIPPED');
