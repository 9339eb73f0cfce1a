-- A payout that succeeded and came back the same day is two statement
-- lines (PAYOUT and PAYOUT_RETURN) for one record: a record carried to
-- another day's statement is now kept per line type, so that the line of
-- one type does not strike off, or resolve, the other's difference (a
-- missing return went unreported). Rows from before say '' (any type).
ALTER TABLE recon_carried ADD COLUMN obj text NOT NULL DEFAULT '';
ALTER TABLE recon_carried DROP CONSTRAINT recon_carried_pkey,
    ADD PRIMARY KEY (channel_id, local_table, local_ref, obj, run_id);
