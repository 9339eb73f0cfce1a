-- A record carried to another day's statement is now kept with whether that
-- statement listed it paid (src/recon/recon_match.c, SQL_CARRIED_ADD). Only
-- a SUCCESS line is a listing that makes a later day's SUCCESS line of the
-- record a DUPLICATE_LINE (SQL_REPEATED, TPL_LISTED_BEFORE): a FAILED line
-- (an authorisation the channel declined, then a capture or a retry under
-- the same reference that paid the next day) is a status that changed.
-- Before, any carried line counted, and the paid line was taken for money
-- claimed twice. Every carried line still says the record is not missing
-- (SQL_RESOLVE_CARRIED_ELSEWHERE, SQL_CARRIED_RESOLVE).
ALTER TABLE recon_carried ADD COLUMN listed boolean NOT NULL DEFAULT true;

-- Rows from before: a FAILED line carried for a record that succeeded, or
-- was in flight, left a difference of that line (STATUS_MISMATCH) in its
-- run's latest attempt, and a SUCCESS line never does; a record with such a
-- difference and none of a SUCCESS line was carried unpaid. (A FAILED line
-- that agreed with a failed record left nothing, and stays listed until its
-- day is run again, which rewrites the day's rows; a day whose statement
-- had both a FAILED line and an agreeing SUCCESS line of one carried record,
-- under two references, is taken for unpaid.)
UPDATE recon_carried c SET listed = false
  FROM recon_runs r
 WHERE r.run_id = c.run_id
   AND EXISTS (SELECT 1 FROM recon_diffs d
                WHERE d.run_id = c.run_id AND d.seen_attempt = r.attempts
                  AND d.local_table = c.local_table AND d.local_ref = c.local_ref
                  AND c.obj IN ('', d.obj) AND d.line_no IS NOT NULL
                  AND d.line_status <> 'SUCCESS')
   AND NOT EXISTS (SELECT 1 FROM recon_diffs d
                    WHERE d.run_id = c.run_id AND d.seen_attempt = r.attempts
                      AND d.local_table = c.local_table AND d.local_ref = c.local_ref
                      AND c.obj IN ('', d.obj) AND d.line_status = 'SUCCESS');
