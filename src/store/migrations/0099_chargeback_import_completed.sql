-- A chargeback import's row is written before its first case is opened: one
-- that stopped half way (a database error on line k) looked done to the
-- daily import and to CHARGEBACK_FILES_MISSING, and the file's later lines
-- never opened their cases. completed_at is set when every line was gone
-- through (src/chargeback/chargeback.c); both look for it. Imports from
-- before are taken as complete.
ALTER TABLE chargeback_imports ADD COLUMN completed_at timestamptz;
UPDATE chargeback_imports SET completed_at = created_at;
