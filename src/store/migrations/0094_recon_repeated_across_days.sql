-- A line that repeats, on a later day's statement, a record another day's
-- statement already listed is a duplicate (src/recon/recon_match.c). To know
-- whether a day listed a record, its run is asked whether it recorded any
-- difference about that record in its latest attempt: a difference of every
-- kind, MISSING_CHANNEL included, by run and record.
CREATE INDEX recon_diffs_run_local ON recon_diffs (run_id, local_table, local_ref);

-- Only a run that records every record of its day its statement did not
-- list (this rule; runs before it dropped those another day's statement
-- had) can say that its statement listed one by recording nothing:
-- SQL_DONE marks such runs.
ALTER TABLE recon_runs ADD COLUMN records_unlisted boolean NOT NULL DEFAULT false;
