-- ledger_accounts' checks of type, customer money and id shape are a CASE
-- of eleven patterns and two lists of names. PostgreSQL reads a table's
-- CHECK expressions from their stored text and prepares them again in every
-- statement that writes the table, and every posting writes it twice (the
-- lock-or-open insert and the balance update): perf on a backend running
-- ledger_post alone (pgbench, one client, rolled back) put about a fifth of
-- its time in parsing them. The same rules now live in one IMMUTABLE
-- plpgsql function, which is compiled once per connection; the constraint
-- only names it. A violation is still reported as check_violation under the
-- old constraint names (ledger_accounts_type, ledger_accounts_customer_funds,
-- ledger_accounts_id_shape), raised by the function.
-- Test: test_ledger_db "database refuses what C would" checks each refusal
-- and the constraint it names.

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
