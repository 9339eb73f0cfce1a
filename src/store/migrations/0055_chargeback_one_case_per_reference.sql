-- A channel's case reference names one case, however it reached us: a case
-- ops entered from the channel's letter (source OFFLINE) and the same case in
-- the channel's next chargeback file (ONLINE) are one chargeback. The key
-- included the source, so the file opened the case a second time and froze
-- its amount twice. (A database that already holds such a pair refuses this
-- migration: close the second case of each pair first.)
ALTER TABLE chargebacks DROP CONSTRAINT chargebacks_source_ref_unique;
ALTER TABLE chargebacks ADD CONSTRAINT chargebacks_source_ref_unique UNIQUE (channel_id, source_ref);
