-- Hot accounts (README "Performance"): every payment of a merchant credits
-- that merchant's pending account, every card payment a channel's clearing
-- account, and fees, coupons and escrow go to a handful of platform
-- accounts. Updating such a row in each payment's transaction makes all of
-- them queue on its row lock until the one before has committed: under load
-- most of PostgreSQL's time went into waiting for that lock and walking the
-- row's chain of dead versions.
--
-- So a posting no longer updates a hot account in place when it cannot take
-- it below zero: a credit (or any movement of an account allowed to go
-- negative) is queued as a row of ledger_balance_deltas, in the same
-- transaction as the entries, and folded into the balance later — by
-- ledger_fold_pending() (a job of every node, several times a second) or by
-- the next posting or reader that needs the exact balance under a lock
-- (ledger_lock_accounts()). Debits of never-negative accounts still lock the
-- row, take its queued deltas first and are refused below zero, as before.
--
-- What the database guarantees after this migration:
--  * an account's balance is balance + the sum of its queued deltas, and
--    equals the sum of its entries (the check query verifies it);
--  * a queued delta of a never-negative account is a credit: CHECK below,
--    decided from the account id, whose shape fixes its type
--    (ledger_accounts_id_shape), whoever writes;
--  * everything else of 0003_ledger.sql holds unchanged.

CREATE TABLE ledger_balance_deltas (
    delta_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id text NOT NULL,
    amount     bigint NOT NULL CONSTRAINT ledger_balance_deltas_nonzero CHECK (amount <> 0),
    txn_id     bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- No foreign key to ledger_accounts on purpose: checking one takes a
    -- KEY SHARE lock on the hot row, which is the contention this table is
    -- here to avoid. ledger_post opens the account in the same statement.
    CONSTRAINT ledger_balance_deltas_hot CHECK (account_id ~
        '^(merchant:[^:]+:pending|channel:[^:]+:clearing|platform:[a-z_]+):[A-Z]{3}$'),
    CONSTRAINT ledger_balance_deltas_never_negative CHECK (amount > 0 OR account_id ~
        '^(channel:[^:]+:clearing|platform:(fee_income|marketing|loss|suspense)):[A-Z]{3}$')
);
CREATE INDEX ledger_balance_deltas_account ON ledger_balance_deltas (account_id);

-- Accounts whose movements may be queued: per merchant, per channel and
-- platform-wide accounts (buyers' wallets and merchants' available,
-- reserve and receivable money are per person and rarely hot).
CREATE FUNCTION ledger_is_hot(p_account text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT p_account ~ '^(merchant:[^:]+:pending|channel:[^:]+:clearing|platform:[a-z_]+):[A-Z]{3}$'
$$;

-- What the account holds now: its balance plus its queued deltas.
CREATE FUNCTION ledger_balance(p_account text) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT a.balance + coalesce((SELECT sum(d.amount) FROM ledger_balance_deltas d
                                  WHERE d.account_id = a.account_id), 0)::bigint
      FROM ledger_accounts a WHERE a.account_id = p_account
$$;

-- Folds the queued deltas of accounts the caller has locked (FOR UPDATE) in
-- this transaction into their balances. Deltas of transactions that have not
-- committed yet stay queued; they are folded by a later call.
CREATE FUNCTION ledger_fold_locked(p_ids text[]) RETURNS void
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    -- Only deltas of accounts that exist: one without its account (which
    -- ledger_post never writes) stays queued for the check and the
    -- LEDGER_FOLD_LAG alert to show, rather than vanish.
    WITH f AS (
        DELETE FROM ledger_balance_deltas d
         WHERE d.account_id = ANY (p_ids)
           AND EXISTS (SELECT 1 FROM ledger_accounts a WHERE a.account_id = d.account_id)
        RETURNING d.account_id, d.amount
    )
    UPDATE ledger_accounts a
       SET balance = a.balance + s.delta, version = a.version + 1, updated_at = now()
      FROM (SELECT f.account_id, sum(f.amount)::bigint AS delta FROM f GROUP BY f.account_id) s
     WHERE a.account_id = s.account_id AND s.delta <> 0;
END $$;

-- Locks the accounts (in byte order of their ids, as ledger_post does, so the
-- two never deadlock), folds their queued deltas and returns the exact
-- balances, held until the caller's transaction ends. For code that decides
-- from balances and then posts: refunds, settlement, chargebacks.
CREATE FUNCTION ledger_lock_accounts(p_ids text[])
RETURNS TABLE (account_id text, balance bigint)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    PERFORM 1 FROM ledger_accounts a WHERE a.account_id = ANY (p_ids)
      ORDER BY a.account_id COLLATE "C" FOR UPDATE;
    PERFORM ledger_fold_locked(p_ids);
    RETURN QUERY SELECT a.account_id, a.balance FROM ledger_accounts a
                  WHERE a.account_id = ANY (p_ids) ORDER BY a.account_id COLLATE "C";
END $$;

-- The job: folds the deltas of up to p_limit queued rows' accounts. Returns
-- how many accounts it folded. Safe on any number of nodes at once (the
-- account locks serialize them; a delta is deleted exactly once).
CREATE FUNCTION ledger_fold_pending(p_limit integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_ids text[];
BEGIN
    SELECT array_agg(DISTINCT x.account_id) INTO v_ids
      FROM (SELECT d.account_id FROM ledger_balance_deltas d ORDER BY d.delta_id
             LIMIT p_limit) x;
    IF v_ids IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM 1 FROM ledger_lock_accounts(v_ids);
    RETURN cardinality(v_ids);
END $$;

-- ledger_post as in 0003_ledger.sql (same arguments, same errors), except
-- that the movements described above are queued instead of applied: only the
-- accounts updated in place are locked; a hot account updated in place (a
-- debit of merchant pending money or escrow) first takes its queued deltas,
-- so the overdraft check sees everything committed.
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
