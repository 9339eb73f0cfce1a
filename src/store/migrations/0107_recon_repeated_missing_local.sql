-- A line of no record of ours (MISSING_LOCAL) that an earlier day's
-- statement had already is a duplicate when a later day's lists it again
-- (src/recon/recon_match.c, SQL_REPEATED): the earlier difference is looked
-- up by channel and key, one probe per such line, not one per earlier run.
CREATE INDEX recon_diffs_missing_local ON recon_diffs (channel_id, diff_key)
    WHERE kind = 'MISSING_LOCAL';
