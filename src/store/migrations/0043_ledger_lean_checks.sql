-- Two costs of every posting, found with pgbench calling ledger_post alone
-- (one client, rolled back) and perf on its backend:
--
-- 1. ledger_accounts' checks of type, customer money and id shape are a
--    CASE of eleven patterns and two lists of names. PostgreSQL reads a
--    table's CHECK expressions from their stored text and prepares them
--    again in every statement that writes the table, and every posting
--    writes it twice (the lock-or-open insert and the balance update):
--    about a fifth of ledger_post's time went into parsing them. The same
--    rules now live in one IMMUTABLE plpgsql function, which is compiled
--    once per connection; the constraint only names it. A violation is
--    still reported as check_violation under the old constraint names
--    (ledger_accounts_type, ledger_accounts_customer_funds,
--    ledger_accounts_id_shape), raised by the function.
-- 2. ledger_post locked the accounts it updates in place with INSERT … ON
--    CONFLICT DO UPDATE … WHERE false, which also opened missing ones. It
--    now locks existing accounts with SELECT … FOR NO KEY UPDATE in the
--    same id order and runs that insert only when an account is missing.
--
-- ledger_post is otherwise as in 0041_ledger_lock_strength.sql, with both
-- SET clauses of 0042_ledger_by_key.sql restated.
-- Tests: test_ledger_db (every refusal of "database refuses what C would",
-- the concurrent-postings property test, "postings reach accounts by key").

CREATE FUNCTION ledger_account_ok(p_id text, p_type text, p_currency text,
                                  p_allow_negative boolean)
RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_type NOT IN ('BUYER_WALLET', 'MERCHANT_PENDING', 'MERCHANT_AVAILABLE',
                      'MERCHANT_RESERVE', 'MERCHANT_RECEIVABLE', 'PLATFORM_ESCROW',
                      'PLATFORM_FEE_INCOME', 'PLATFORM_MARKETING', 'PLATFORM_LOSS',
                      'CHANNEL_CLEARING', 'SUSPENSE') THEN
        RAISE EXCEPTION 'account % has an unknown type %', p_id, p_type
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_accounts_type',
                  TABLE = 'ledger_accounts';
    END IF;
    -- Customer money and escrow may never be allowed to go negative, even by
    -- an account opened by hand.
    IF p_allow_negative AND p_type IN ('BUYER_WALLET', 'MERCHANT_PENDING',
                                       'MERCHANT_AVAILABLE', 'MERCHANT_RESERVE',
                                       'PLATFORM_ESCROW') THEN
        RAISE EXCEPTION 'account % holds customer money and cannot be allowed below zero', p_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_accounts_customer_funds',
                  TABLE = 'ledger_accounts';
    END IF;
    -- The readable id and the type agree, so a report grouping by id prefix
    -- and one grouping by type cannot disagree.
    IF NOT (p_id LIKE '%:' || p_currency AND p_currency ~ '^[A-Z]{3}$' AND
            CASE p_type
                WHEN 'BUYER_WALLET' THEN p_id LIKE 'buyer:%:wallet:___'
                WHEN 'MERCHANT_PENDING' THEN p_id LIKE 'merchant:%:pending:___'
                WHEN 'MERCHANT_AVAILABLE' THEN p_id LIKE 'merchant:%:available:___'
                WHEN 'MERCHANT_RESERVE' THEN p_id LIKE 'merchant:%:reserve:___'
                WHEN 'MERCHANT_RECEIVABLE' THEN p_id LIKE 'merchant:%:receivable:___'
                WHEN 'CHANNEL_CLEARING' THEN p_id LIKE 'channel:%:clearing:___'
                WHEN 'PLATFORM_ESCROW' THEN p_id LIKE 'platform:escrow:___'
                WHEN 'PLATFORM_FEE_INCOME' THEN p_id LIKE 'platform:fee\_income:___'
                WHEN 'PLATFORM_MARKETING' THEN p_id LIKE 'platform:marketing:___'
                WHEN 'PLATFORM_LOSS' THEN p_id LIKE 'platform:loss:___'
                WHEN 'SUSPENSE' THEN p_id LIKE 'platform:suspense:___'
            END) THEN
        RAISE EXCEPTION 'account id % does not match its type % and currency %',
                        p_id, p_type, p_currency
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_accounts_id_shape',
                  TABLE = 'ledger_accounts';
    END IF;
    RETURN true;
END $$;

ALTER TABLE ledger_accounts
    DROP CONSTRAINT ledger_accounts_type,
    DROP CONSTRAINT ledger_accounts_customer_funds,
    DROP CONSTRAINT ledger_accounts_id_shape,
    ADD CONSTRAINT ledger_accounts_id_shape
        CHECK (ledger_account_ok(account_id, type, currency, allow_negative));

CREATE OR REPLACE FUNCTION ledger_post(p_kind text, p_ref_type text, p_ref_id text, p_memo text,
                                       p_accounts text[], p_types text[], p_owners text[],
                                       p_currencies text[], p_allow_negative boolean[],
                                       p_leg_accounts text[], p_leg_amounts bigint[],
                                       p_leg_currencies text[])
RETURNS bigint LANGUAGE plpgsql
-- One generic plan per statement for the connection's life: custom plans
-- (sized for the real two or three legs) look cheaper to the planner, so
-- without this every call planned its statements again (~0.9 ms).
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off AS $$
DECLARE
    v_txn bigint;
    v_now text[];   -- updated in place: locked, checked against overdraft
    v_fold text[];  -- the hot ones among them
    v_later text[]; -- queued
    v_locked bigint;
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
        -- Existing accounts are locked by a plain row lock in id order; the
        -- insert (which also locks, through its conflict clause) only runs
        -- when one of them is missing, i.e. on an account's first posting.
        PERFORM 1 FROM ledger_accounts a WHERE a.account_id = ANY (v_now)
          ORDER BY a.account_id COLLATE "C" FOR NO KEY UPDATE;
        GET DIAGNOSTICS v_locked = ROW_COUNT;
        IF v_locked < cardinality(v_now) THEN
            INSERT INTO ledger_accounts (account_id, type, owner_id, currency, allow_negative)
            SELECT a.id, a.type, a.owner, a.cur, a.neg
              FROM unnest(p_accounts, p_types, p_owners, p_currencies, p_allow_negative)
                   AS a(id, type, owner, cur, neg)
             WHERE a.id = ANY (v_now)
             ORDER BY a.id COLLATE "C"
                ON CONFLICT (account_id) DO UPDATE SET version = ledger_accounts.version
                   WHERE false;
        END IF;
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
