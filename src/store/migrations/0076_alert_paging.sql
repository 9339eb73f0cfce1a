-- A page (alert.raised or alert.grew, POSTed to alerts.webhook_url) was kept
-- only in the memory of the node that raised the alert, posted again after
-- each delay of alerts.webhook_retry_ms: with the ops webhook down longer
-- than those delays (about 42 minutes by default), or that node stopping
-- meanwhile, the page was lost for good while the alert stood.
--   paged_at     when the webhook took the alert's last page (NULL: not yet)
--   page_due_at  when any node may post it again (the raising node's own
--                retries come first)
ALTER TABLE alerts ADD COLUMN paged_at timestamptz, ADD COLUMN page_due_at timestamptz;
-- Alerts standing now were paged as well as paycore could before: no page
-- storm after the upgrade.
UPDATE alerts SET paged_at = now() WHERE status = 'ACTIVE';
CREATE INDEX alerts_unpaged ON alerts (page_due_at) WHERE status = 'ACTIVE' AND paged_at IS NULL;
