-- The ledger functions reach accounts and queued deltas by key only. Their
-- statements run on generic plans (plan_cache_mode = force_generic_plan),
-- made once per connection from the statistics of that moment: on a young
-- database with a few hundred accounts the planner found a sequential scan
-- of ledger_accounts cheaper than its primary key (a hash join of the whole
-- table against the two or three accounts of a posting) and kept that plan
-- for the connection's life, while every balance update added a row version
-- to scan. scripts/bench's full scenario measured 6,593 sequential scans of
-- ledger_accounts reading 7.7 million rows in 5 s, and one ledger_post at
-- 0.88 ms where the same call by key takes 0.64 ms.
--
-- Sequential scans are priced out inside these functions (enable_seqscan
-- only makes them a last resort; nothing is refused). A later CREATE OR
-- REPLACE of any of them must restate both SET clauses.
-- Test: test_ledger_db "postings reach accounts by key only".
ALTER FUNCTION ledger_post(text, text, text, text, text[], text[], text[], text[], boolean[],
                           text[], bigint[], text[])
    SET enable_seqscan = off;
ALTER FUNCTION ledger_fold_locked(text[]) SET enable_seqscan = off;
ALTER FUNCTION ledger_lock_accounts(text[]) SET enable_seqscan = off;
