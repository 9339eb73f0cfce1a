-- The latest statement of each merchant and currency gets its scan bound
-- (0073) by the rule the job uses: past every posting made more than an hour
-- before its cut-off, or before it ran when the cut-off was still ahead; it
-- took every credit made before that. Without it the first statement after
-- 0073 read the whole history once more, which for the merchants this is
-- for ran past the pool's deadline, failed, and so never set the bound.
-- One pass over each such account's postings, here.
UPDATE settlements s
   SET scan_from_txn = coalesce((SELECT max(e.txn_id) + 1 FROM ledger_entries e
                                  WHERE e.account_id = 'merchant:' || s.merchant_id || ':pending:' || s.currency
                                    AND e.created_at < least(s.cutoff, s.created_at) - interval '1 hour'), 0)
 WHERE s.scan_from_txn = 0
   AND s.statement_no IN (SELECT DISTINCT ON (merchant_id, currency) statement_no
                            FROM settlements ORDER BY merchant_id, currency, cutoff DESC);
