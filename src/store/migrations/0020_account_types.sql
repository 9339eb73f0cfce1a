-- Named account types a merchant may recharge into (e.g. a platform's in-app
-- credit): each buyer has one wallet per (merchant, type), ledger account
-- buyer:<buyer_id>@<merchant_id>.<type>:wallet:<CUR>, apart from the plain
-- wallet buyer:<buyer_id>:wallet:<CUR>.
CREATE TABLE merchant_account_types (
    merchant_id  text NOT NULL REFERENCES merchants (merchant_id),
    account_type text NOT NULL CHECK (account_type ~ '^[A-Za-z0-9_-]{1,16}$'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, account_type)
);

-- The type a RECHARGE trade credits (NULL: the plain wallet); it must be one
-- its merchant configured.
ALTER TABLE trades ADD COLUMN account_type text;
ALTER TABLE trades ADD CONSTRAINT trades_account_type_fk FOREIGN KEY (merchant_id, account_type)
    REFERENCES merchant_account_types (merchant_id, account_type);
