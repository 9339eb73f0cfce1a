-- Double-entry ledger (system.md §2.7); the C side is src/ledger/ledger.h.
--
-- Sign convention: an account's balance is the sum of its entries' signed
-- amounts, and a positive balance is money the platform owes the account's
-- holder (a buyer's wallet, a merchant's pending/available/reserve money,
-- escrow held for trades, the platform's own fee income). A negative balance
-- is money owed to the platform: a channel that collected a buyer's payment
-- and has not yet remitted it (channel clearing), a merchant's debt
-- (receivable), what marketing coupons and losses cost the platform. Every
-- transaction's entries sum to zero per currency, so all balances together
-- sum to zero as well.
--
-- What the database itself guarantees, whoever writes:
--  * customer money never goes below zero: CHECK (allow_negative OR
--    balance >= 0), and accounts holding customer money cannot be opened
--    with allow_negative;
--  * one business event is posted once: UNIQUE (ref_type, ref_id, kind);
--  * a transaction has entries, and the entries inserted by any statement
--    sum to zero per transaction and currency, so (entries being
--    append-only) every transaction is balanced and has two entries or more;
--    ledger_post inserts a transaction and all its entries in one statement;
--  * an entry's currency is its account's currency;
--  * transactions and entries are append-only: mistakes are corrected by a
--    new posting (to the suspense account if need be), never by editing rows.
-- The one invariant it cannot state as a constraint -- an account's balance
-- equals the sum of its entries -- holds because ledger_post() is the only
-- writer of balances and derives them from the entries it inserts; the
-- check query in ledger.c verifies it.

CREATE TABLE ledger_accounts (
    account_id     text PRIMARY KEY,
    type           text NOT NULL,
    owner_id       text NOT NULL,
    currency       char(3) NOT NULL,
    balance        bigint NOT NULL DEFAULT 0,
    allow_negative boolean NOT NULL,
    version        bigint NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_accounts_no_overdraft CHECK (allow_negative OR balance >= 0),
    CONSTRAINT ledger_accounts_type CHECK (type IN ('BUYER_WALLET', 'MERCHANT_PENDING',
        'MERCHANT_AVAILABLE', 'MERCHANT_RESERVE', 'MERCHANT_RECEIVABLE', 'PLATFORM_ESCROW',
        'PLATFORM_FEE_INCOME', 'PLATFORM_MARKETING', 'PLATFORM_LOSS', 'CHANNEL_CLEARING',
        'SUSPENSE')),
    -- Customer money and escrow may never be allowed to go negative, even by
    -- an account opened by hand.
    CONSTRAINT ledger_accounts_customer_funds CHECK (NOT allow_negative OR type NOT IN (
        'BUYER_WALLET', 'MERCHANT_PENDING', 'MERCHANT_AVAILABLE', 'MERCHANT_RESERVE',
        'PLATFORM_ESCROW')),
    -- The readable id and the type agree, so a report grouping by id prefix
    -- and one grouping by type cannot disagree.
    CONSTRAINT ledger_accounts_id_shape CHECK (
        account_id LIKE '%:' || currency AND currency ~ '^[A-Z]{3}$' AND
        CASE type
            WHEN 'BUYER_WALLET' THEN account_id LIKE 'buyer:%:wallet:___'
            WHEN 'MERCHANT_PENDING' THEN account_id LIKE 'merchant:%:pending:___'
            WHEN 'MERCHANT_AVAILABLE' THEN account_id LIKE 'merchant:%:available:___'
            WHEN 'MERCHANT_RESERVE' THEN account_id LIKE 'merchant:%:reserve:___'
            WHEN 'MERCHANT_RECEIVABLE' THEN account_id LIKE 'merchant:%:receivable:___'
            WHEN 'CHANNEL_CLEARING' THEN account_id LIKE 'channel:%:clearing:___'
            WHEN 'PLATFORM_ESCROW' THEN account_id LIKE 'platform:escrow:___'
            WHEN 'PLATFORM_FEE_INCOME' THEN account_id LIKE 'platform:fee\_income:___'
            WHEN 'PLATFORM_MARKETING' THEN account_id LIKE 'platform:marketing:___'
            WHEN 'PLATFORM_LOSS' THEN account_id LIKE 'platform:loss:___'
            WHEN 'SUSPENSE' THEN account_id LIKE 'platform:suspense:___'
        END)
    -- No other unique key here: ledger_post opens accounts with INSERT .. ON
    -- CONFLICT (account_id), and a second unique index (not an arbiter)
    -- would turn two postings opening the same account at once into a
    -- unique violation instead of a wait.
);
CREATE INDEX ledger_accounts_owner ON ledger_accounts (owner_id);

CREATE TABLE ledger_txns (
    txn_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind       text NOT NULL CHECK (kind ~ '^[A-Z][A-Z0-9_]{0,63}$'),
    ref_type   text NOT NULL CHECK (length(ref_type) BETWEEN 1 AND 64),
    ref_id     text NOT NULL CHECK (length(ref_id) BETWEEN 1 AND 128),
    memo       text,
    created_at timestamptz NOT NULL DEFAULT now(),
    first_leg  smallint NOT NULL DEFAULT 1 CONSTRAINT ledger_txns_first_leg CHECK (first_leg = 1),
    -- Posting the same business event twice is refused here, whatever Redis
    -- or the caller believed.
    -- In this column order the key also answers "everything posted for this
    -- trade / refund / payout" (by ref_type, ref_id) without another index.
    CONSTRAINT ledger_txns_dedupe UNIQUE (ref_type, ref_id, kind)
);

CREATE TABLE ledger_entries (
    txn_id     bigint NOT NULL REFERENCES ledger_txns,
    leg        smallint NOT NULL,
    account_id text NOT NULL REFERENCES ledger_accounts,
    amount     bigint NOT NULL CONSTRAINT ledger_entries_amount_nonzero CHECK (amount <> 0),
    currency   char(3) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (txn_id, leg),
    CONSTRAINT ledger_entries_leg CHECK (leg >= 1),
    -- An account id ends with its currency (ledger_accounts_id_shape), so
    -- this pins an entry's currency to its account's without a second key.
    CONSTRAINT ledger_entries_currency CHECK (account_id LIKE '%:' || currency)
);
CREATE INDEX ledger_entries_account ON ledger_entries (account_id, txn_id);

CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: correct a posting with a new posting', TG_TABLE_NAME
        USING ERRCODE = 'integrity_constraint_violation';
END $$;
CREATE TRIGGER ledger_txns_append_only BEFORE UPDATE OR DELETE ON ledger_txns
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_txns_no_truncate BEFORE TRUNCATE ON ledger_txns
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

-- A transaction has entries: it references its own first entry (a foreign
-- key in the other direction from the entries' one; first_leg is always 1).
-- PostgreSQL checks it at the end of the inserting statement with an index
-- lookup, so a transaction inserted without entries is refused.
ALTER TABLE ledger_txns ADD CONSTRAINT ledger_txns_has_entries
    FOREIGN KEY (txn_id, first_leg) REFERENCES ledger_entries (txn_id, leg);

-- Entries sum to zero per transaction and currency: checked once at the end
-- of every statement that inserts entries, over the rows that statement
-- inserted (the transition table new_rows). As entries are never updated or
-- deleted, every transaction stays balanced for good; as amounts are never
-- zero and every transaction has an entry, every transaction has at least
-- two. The check reads only new_rows, never the (large) table, so its cost
-- does not grow with the ledger and no stale plan can make it slow.
-- Caveat: a balanced set of entries added to an old transaction by a later
-- statement is not refused here (it is still balanced); its accounts'
-- balances then no longer match their entries, which the check query
-- reports as accounts_mismatched.
CREATE FUNCTION ledger_assert_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad bigint;
BEGIN
    SELECT txn_id INTO bad FROM new_rows
     GROUP BY txn_id, currency HAVING sum(amount) <> 0 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger transaction % is not balanced', bad
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_txn_balanced';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER ledger_entries_balanced AFTER INSERT ON ledger_entries
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_assert_balanced();

-- Posts one transaction: opens missing accounts, locks every account of the
-- posting in one sorted pass, inserts the transaction and its entries and
-- moves the balances. One call is one round trip from C, and PL/pgSQL keeps
-- the plans of the statements below for the life of the connection.
--
-- p_accounts .. p_allow_negative describe each distinct account of the
-- posting (how to open it if it does not exist yet); the legs are the
-- entries in order. Balances are derived here from the legs, never passed
-- in, so a balance cannot drift from its entries.
--
-- Lock order: the INSERT .. ON CONFLICT DO UPDATE .. WHERE false locks every
-- existing account (documented: rows are locked even when the WHERE is
-- false) and inserts missing ones, in byte order of account_id, so two
-- postings sharing accounts always lock them in the same order and cannot
-- deadlock with each other. The UPDATE afterwards only touches rows already
-- locked, in whatever order its plan likes.
--
-- p_accounts must be distinct (ON CONFLICT may not meet a row twice).
--
-- Errors: 23505 on ledger_txns_dedupe (already posted), 23514 on
-- ledger_accounts_no_overdraft (a non-negative account would go below zero),
-- 23514 on ledger_txn_balanced, ledger_entries_currency or an account
-- constraint, 22003 when a balance leaves bigint, 22023 when a leg names an
-- account missing from p_accounts.
CREATE FUNCTION ledger_post(p_kind text, p_ref_type text, p_ref_id text, p_memo text,
                            p_accounts text[], p_types text[], p_owners text[],
                            p_currencies text[], p_allow_negative boolean[],
                            p_leg_accounts text[], p_leg_amounts bigint[],
                            p_leg_currencies text[])
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_txn bigint;
BEGIN
    IF NOT (p_leg_accounts <@ p_accounts) THEN
        RAISE EXCEPTION 'ledger_post: a leg names an account that is not locked'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    INSERT INTO ledger_accounts (account_id, type, owner_id, currency, allow_negative)
    SELECT a.id, a.type, a.owner, a.cur, a.neg
      FROM unnest(p_accounts, p_types, p_owners, p_currencies, p_allow_negative)
           AS a(id, type, owner, cur, neg)
     ORDER BY a.id COLLATE "C"
        ON CONFLICT (account_id) DO UPDATE SET version = ledger_accounts.version WHERE false;

    WITH txn AS (
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
    ), moved AS (
        UPDATE ledger_accounts a
           SET balance = a.balance + d.delta, version = a.version + 1, updated_at = now()
          FROM (SELECT account_id, sum(amount)::bigint AS delta FROM legs GROUP BY account_id) d
         WHERE a.account_id = d.account_id AND d.delta <> 0
    )
    SELECT txn.txn_id INTO v_txn FROM txn;
    RETURN v_txn;
END $$;

-- Trade-level invariants of GET /admin/ledger/check (system.md §2.7: for
-- every trade refunded <= paid; nothing charged twice for one trade without
-- an error refund). The trade and refund tables belong to a later migration;
-- until a table named "trades" exists there is nothing to check and both
-- counts are 0. The migration that creates trades must replace this function
-- (CREATE OR REPLACE, same signature) with the real queries; until it does,
-- the check fails loudly instead of reporting a false "ok".
CREATE FUNCTION ledger_check_trades(OUT trades_over_refunded bigint,
                                    OUT duplicate_charges bigint)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF to_regclass('trades') IS NULL THEN
        trades_over_refunded := 0;
        duplicate_charges := 0;
        RETURN;
    END IF;
    RAISE EXCEPTION 'ledger_check_trades() must be replaced by the migration that creates trades'
        USING ERRCODE = 'feature_not_supported';
END $$;
