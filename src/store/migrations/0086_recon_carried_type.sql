-- A payout that succeeded and came back the same day is two statement
-- lines (PAYOUT and PAYOUT_RETURN) for one record: a record carried to
-- another day's statement is now kept per line type, so that the line of
-- one type does not strike off, or resolve, the other's difference (a
-- missing return went unreported). Rows from before say '' (any type).
ALTER TABLE recon_carried ADD COLUMN obj text NOT NULL DEFAULT '';
ALTER TABLE recon_carried DROP CONSTRAINT recon_carried_pkey,
    ADD PRIMARY KEY (channel_id, local_table, local_ref, obj, run_id);

-- A return's MISSING_CHANNEL difference is keyed apart from its payout's
-- now (src/recon/recon_match.c: '...:RETURN'). One recorded before under
-- the shared key takes the new one, or a re-run of its day would find the
-- payout's difference under that key and keep the return's type for it.
UPDATE recon_diffs SET diff_key = diff_key || ':RETURN'
 WHERE kind = 'MISSING_CHANNEL' AND obj = 'PAYOUT_RETURN' AND line_no IS NULL
   AND diff_key NOT LIKE '%:RETURN';
