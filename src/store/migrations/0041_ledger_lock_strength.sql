-- Account locks without the key part (FOR NO KEY UPDATE instead of FOR
-- UPDATE). Found by scripts/bench's "full" scenario: a refund that had
-- locked the merchant's pending account inserted ledger entries for a
-- platform account; the foreign key of ledger_entries takes FOR KEY SHARE on
-- that account's row, which FOR UPDATE blocks. The fold job held that
-- platform row FOR UPDATE and waited for the merchant's row: a deadlock,
-- resolved by PostgreSQL after deadlock_timeout (1 s) by failing one of
-- them — a stall of every payment behind them, and a refund answered 5xx.
--
-- FOR NO KEY UPDATE is the lock an UPDATE of the balance takes anyway: two
-- lockers of one account still exclude each other (the overdraft check and
-- the fold stay serialized), but a foreign key check against the account no
-- longer waits for them, so the only locks taken on accounts are the sorted
-- ones and they cannot form a cycle.
CREATE OR REPLACE FUNCTION ledger_lock_accounts(p_ids text[])
RETURNS TABLE (account_id text, balance bigint)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    PERFORM 1 FROM ledger_accounts a WHERE a.account_id = ANY (p_ids)
      ORDER BY a.account_id COLLATE "C" FOR NO KEY UPDATE;
    PERFORM ledger_fold_locked(p_ids);
    RETURN QUERY SELECT a.account_id, a.balance FROM ledger_accounts a
                  WHERE a.account_id = ANY (p_ids) ORDER BY a.account_id COLLATE "C";
END $$;

-- The same test found a second wait: ledger_post opened the accounts of its
-- queued movements with INSERT … ON CONFLICT DO NOTHING even when they
-- existed, and a unique-index conflict with a row version written by a
-- transaction still in progress (the fold's balance update) waits for that
-- transaction. Accounts that exist are now skipped first, under the
-- statement's snapshot; only a missing account is inserted. ledger_post is
-- otherwise as in 0040_hot_accounts.sql.
CREATE OR REPLACE FUNCTION ledger_post(p_kind text, p_ref_type text, p_ref_id text, p_memo text,
                                       p_accounts text[], p_types text[], p_owners text[],
                                       p_currencies text[], p_allow_negative boolean[],
                                       p_leg_accounts text[], p_leg_amounts bigint[],
                                       p_leg_currencies text[])
RETURNS bigint LANGUAGE plpgsql
-- One generic plan per statement for the connection's life: custom plans
-- (sized for the real two or three legs) look cheaper to the planner, so
-- without this every call planned its statements again (~0.9 ms).
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_txn bigint;
    v_now text[];   -- updated in place: locked, checked against overdraft
    v_fold text[];  -- the hot ones among them
    v_later text[]; -- queued
BEGIN
    IF NOT (p_leg_accounts <@ p_accounts) THEN
        RAISE EXCEPTION 'ledger_post: a leg names an account that is not locked'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    SELECT array_agg(c.id ORDER BY c.id COLLATE "C") FILTER (WHERE NOT c.later),
           array_agg(c.id) FILTER (WHERE NOT c.later AND c.hot),
           array_agg(c.id) FILTER (WHERE c.later)
      INTO v_now, v_fold, v_later
      FROM (SELECT a.id, ledger_is_hot(a.id) AS hot,
                   ledger_is_hot(a.id) AND (coalesce(d.delta, 0) > 0 OR a.id ~
                       '^(channel:[^:]+:clearing|platform:(fee_income|marketing|loss|suspense)):[A-Z]{3}$')
                       AS later
              FROM unnest(p_accounts) AS a(id)
              LEFT JOIN (SELECT l.acc, sum(l.amt) AS delta
                           FROM unnest(p_leg_accounts, p_leg_amounts) AS l(acc, amt)
                          GROUP BY l.acc) d ON d.acc = a.id) c;

    IF v_now IS NOT NULL THEN
        INSERT INTO ledger_accounts (account_id, type, owner_id, currency, allow_negative)
        SELECT a.id, a.type, a.owner, a.cur, a.neg
          FROM unnest(p_accounts, p_types, p_owners, p_currencies, p_allow_negative)
               AS a(id, type, owner, cur, neg)
         WHERE a.id = ANY (v_now)
         ORDER BY a.id COLLATE "C"
            ON CONFLICT (account_id) DO UPDATE SET version = ledger_accounts.version WHERE false;
        IF v_fold IS NOT NULL THEN
            PERFORM ledger_fold_locked(v_fold);
        END IF;
    END IF;

    WITH opened AS (
        INSERT INTO ledger_accounts (account_id, type, owner_id, currency, allow_negative)
        SELECT a.id, a.type, a.owner, a.cur, a.neg
          FROM unnest(p_accounts, p_types, p_owners, p_currencies, p_allow_negative)
               AS a(id, type, owner, cur, neg)
         WHERE a.id = ANY (v_later)
           AND NOT EXISTS (SELECT 1 FROM ledger_accounts x WHERE x.account_id = a.id)
            ON CONFLICT (account_id) DO NOTHING
    ), txn AS (
        INSERT INTO ledger_txns (kind, ref_type, ref_id, memo)
        VALUES (p_kind, p_ref_type, p_ref_id, p_memo)
        RETURNING txn_id
    ), legs AS (
        SELECT l.account_id, l.amount, l.currency, l.leg
          FROM unnest(p_leg_accounts, p_leg_amounts, p_leg_currencies) WITH ORDINALITY
               AS l(account_id, amount, currency, leg)
    ), entries AS (
        INSERT INTO ledger_entries (txn_id, leg, account_id, amount, currency)
        SELECT txn.txn_id, legs.leg, legs.account_id, legs.amount, legs.currency
          FROM txn, legs
    ), sums AS (
        SELECT account_id, sum(amount)::bigint AS delta FROM legs GROUP BY account_id
    ), moved AS (
        UPDATE ledger_accounts a
           SET balance = a.balance + d.delta, version = a.version + 1, updated_at = now()
          FROM sums d
         WHERE a.account_id = d.account_id AND d.delta <> 0 AND a.account_id = ANY (v_now)
    ), queued AS (
        INSERT INTO ledger_balance_deltas (account_id, amount, txn_id)
        SELECT d.account_id, d.delta, txn.txn_id
          FROM txn, sums d
         WHERE d.delta <> 0 AND d.account_id = ANY (v_later)
    )
    SELECT txn.txn_id INTO v_txn FROM txn;
    RETURN v_txn;
END $$;
