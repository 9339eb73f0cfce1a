/* The double-entry ledger (system.md §2.7): every money movement is one
 * ledger transaction of two or more entries whose signed amounts sum to zero
 * per currency, posted inside the caller's own PostgreSQL transaction so the
 * business change and its money movement commit or roll back together.
 * Needs store/db.h (a transaction or the pool) and the tables of migration
 * 0003_ledger.sql; nothing else.
 *
 * Sign convention. An account's balance is the sum of its entries' amounts.
 * A positive balance is money the platform owes the holder: a buyer's wallet,
 * a merchant's pending / available / reserve money, escrow, the platform's
 * fee income. A negative balance is money owed to the platform: a channel's
 * clearing account after the channel collected a payment it has not remitted
 * yet, a merchant's receivable (advance-funded refunds, chargeback losses),
 * what coupons (marketing) and losses have cost. So a buyer paying 100 by
 * card for an instant trade is {channel:c:clearing:CNY -100,
 * merchant:m:pending:CNY +100}; a 3 fee is {merchant:m:pending:CNY -3,
 * platform:fee_income:CNY +3}.
 *
 * Accounts are named by readable, stable ids, and the id says everything
 * about the account (type, owner, currency, whether it may go negative):
 *   buyer:<buyer_id>:wallet:<CUR>            BUYER_WALLET         never < 0
 *   merchant:<merchant_id>:pending:<CUR>     MERCHANT_PENDING     never < 0
 *   merchant:<merchant_id>:available:<CUR>   MERCHANT_AVAILABLE   never < 0
 *   merchant:<merchant_id>:reserve:<CUR>     MERCHANT_RESERVE     never < 0
 *   merchant:<merchant_id>:receivable:<CUR>  MERCHANT_RECEIVABLE  may be < 0
 *   channel:<channel_id>:clearing:<CUR>      CHANNEL_CLEARING     may be < 0
 *   platform:escrow:<CUR>                    PLATFORM_ESCROW      never < 0
 *   platform:fee_income:<CUR>                PLATFORM_FEE_INCOME  may be < 0
 *   platform:marketing:<CUR>                 PLATFORM_MARKETING   may be < 0
 *   platform:loss:<CUR>                      PLATFORM_LOSS        may be < 0
 *   platform:suspense:<CUR>                  SUSPENSE             may be < 0
 * Owner ids are 1-64 characters of [A-Za-z0-9_.@-]; CUR is an ISO 4217 code.
 * An account is opened by its first posting (or by pc_ledger_open_account);
 * an id of any other shape is refused before anything is sent.
 *
 * Nothing else in the codebase writes balances, ledger transactions or
 * entries: pc_ledger_post (through the SQL function ledger_post()) is the
 * only writer. The database refuses overdrafts of "never < 0" accounts,
 * a second posting of the same business event, unbalanced transactions and
 * any change to posted rows, whoever asks (0003_ledger.sql says how);
 * pc_ledger_check finds the rest (a balance edited by hand).
 *
 * Cost: one statement per posting, SELECT ledger_post(...) — a PL/pgSQL
 * function whose plans stay prepared on each connection — so a posting is
 * one round trip, and with the COMMIT queued behind it a whole transaction
 * is one round trip too.
 *
 * Hot accounts (0040_hot_accounts.sql): a posting does not update a
 * merchant's pending account, a channel's clearing account or a platform
 * account in place when that cannot take it below zero (credits, and any
 * movement of an account allowed to go negative); it queues the movement as
 * a delta row, folded into the balance by pc_ledger_fold_pending (a job of
 * every node) or by the next debit or ledger_lock_accounts() on it. Balances
 * read through this module (and the SQL function ledger_balance()) include
 * the queued deltas, so callers see no difference; code that reads
 * ledger_accounts.balance itself must use ledger_balance(id) or, to decide
 * under a lock, ledger_lock_accounts(ids).
 *
 * Concurrency: a posting locks the accounts it updates in place in byte
 * order of their ids (queued ones are not locked), so postings never
 * deadlock with each other. A database transaction that
 * makes several postings locks each posting's accounts in order but not
 * across postings; should two such transactions deadlock, PostgreSQL breaks
 * the tie and one gets PC_ERETRY (retry it). Prefer one posting per
 * business event. */
#ifndef PC_LEDGER_LEDGER_H
#define PC_LEDGER_LEDGER_H
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "store/db.h"

/* Results beyond core/error.h. Callers turn PC_LEDGER_INSUFFICIENT into the
 * API's 422 INSUFFICIENT_BALANCE; the others are programming errors or races
 * the caller resolves. */
enum {
    /* A never-negative account would go below zero; nothing was posted. */
    PC_LEDGER_INSUFFICIENT = -100,
    /* This (kind, ref_type, ref_id) has been posted already. */
    PC_LEDGER_DUPLICATE = -101,
    /* The legs do not sum to zero per currency. */
    PC_LEDGER_UNBALANCED = -102,
    /* An account id of unknown shape, or a leg whose currency is not its
     * account's. */
    PC_LEDGER_BAD_ACCOUNT = -103,
};

typedef enum {
    PC_LEDGER_BUYER_WALLET = 0,
    PC_LEDGER_MERCHANT_PENDING,
    PC_LEDGER_MERCHANT_AVAILABLE,
    PC_LEDGER_MERCHANT_RESERVE,
    PC_LEDGER_MERCHANT_RECEIVABLE,
    PC_LEDGER_PLATFORM_ESCROW,
    PC_LEDGER_PLATFORM_FEE_INCOME,
    PC_LEDGER_PLATFORM_MARKETING,
    PC_LEDGER_PLATFORM_LOSS,
    PC_LEDGER_CHANNEL_CLEARING,
    PC_LEDGER_SUSPENSE,
    PC_LEDGER_TYPE_COUNT
} pc_ledger_type_t;

#define PC_LEDGER_ID_MAX 96    /* longest account id */
#define PC_LEDGER_OWNER_MAX 64 /* longest owner id inside an account id */
#define PC_LEDGER_MAX_LEGS 64  /* most legs in one transaction */

/* What an account id says about its account. */
typedef struct {
    pc_ledger_type_t type;
    char owner_id[PC_LEDGER_OWNER_MAX + 1]; /* "platform" for platform accounts */
    char currency[4];
    int allow_negative;
} pc_ledger_shape_t;

/* Parses an account id. Returns 0 and fills out, or PC_LEDGER_BAD_ACCOUNT. */
int pc_ledger_parse_account(const char *account_id, pc_ledger_shape_t *out);

/* Whether account_id is an account of type type. Tells a merchant's
 * accounts apart where a word of the id cannot: a merchant named
 * "receivable" has that word in every id of its own. */
int pc_ledger_is_type(const char *account_id, pc_ledger_type_t type);

/* Whether s has the form of a currency code as the ledger keeps them: three
 * letters A-Z (account ids, and what a channel's answer may name). Whether it
 * is a currency money may be taken in: pc_currency_known (core/currency.h). */
int pc_ledger_currency_ok(const char *s);

/* Writes the id of type's account for owner (ignored for platform accounts,
 * may be NULL) in currency into buf. Returns 0, PC_LEDGER_BAD_ACCOUNT for an
 * owner or currency that cannot form an id, or PC_ELIMIT when len is short. */
int pc_ledger_account_id(char *buf, size_t len, pc_ledger_type_t type, const char *owner_id,
                         const char *currency);

/* "BUYER_WALLET" …; a static string (NULL for an unknown value). */
const char *pc_ledger_type_name(pc_ledger_type_t type);

/* A static string describing a ledger result code or any core code. */
const char *pc_ledger_strerror(int code);

/* One entry of a transaction: amount > 0 credits the account (the platform
 * owes its holder more), amount < 0 debits it. currency must be the
 * account's. */
typedef struct {
    const char *account_id;
    int64_t amount;
    const char *currency;
} pc_ledger_leg_t;

/* A transaction to post. (kind, ref_type, ref_id) names the business event
 * and is unique: e.g. ("TRADE_PAY", "payment", "P2026…"). kind is upper case
 * [A-Z][A-Z0-9_]*, at most 64; ref_type 1-64 and ref_id 1-128 printable
 * characters; memo is optional free text (at most 256 bytes). The same
 * account may appear in several legs (its balance moves by their sum). */
typedef struct {
    const char *kind;
    const char *ref_type;
    const char *ref_id;
    const char *memo;
    const pc_ledger_leg_t *legs;
    size_t nlegs;
} pc_ledger_txn_t;

/* Checks txn as pc_ledger_post would, without a database: 2..MAX legs,
 * well-formed accounts and names, non-zero amounts, legs summing to zero per
 * currency with no int64 overflow anywhere (sums of either sign, per-account
 * movements). Returns 0 or PC_EINVAL / PC_LEDGER_UNBALANCED /
 * PC_LEDGER_BAD_ACCOUNT with a sentence in err (may be NULL). */
int pc_ledger_validate(const pc_ledger_txn_t *txn, char *err, size_t errlen);

/* A posting finished: status 0 with the new txn_id, or PC_LEDGER_INSUFFICIENT,
 * PC_LEDGER_DUPLICATE, PC_ERETRY (deadlock or serialization failure:
 * retry the whole transaction), PC_ELIMIT (a balance would leave int64),
 * PC_EUNAVAIL, PC_ECLOSED or PC_EIO (also when tx had failed before), with
 * txn_id 0. PC_LEDGER_UNBALANCED / PC_LEDGER_BAD_ACCOUNT here would mean the
 * database disagreed with C's validation (logged). After any failure the
 * caller's transaction is aborted (PostgreSQL's rule) and can only be rolled
 * back; nothing of the posting remains once it is. */
typedef void (*pc_ledger_post_cb)(void *data, int status, int64_t txn_id);

/* Posts txn inside tx: opens accounts seen for the first time, locks the
 * accounts in id order, inserts the transaction and its entries and moves
 * the balances, all in one statement (one round trip). txn and its strings
 * are only read during the call (copied). The caller may queue more
 * statements on tx, or its commit, right away without waiting for cb:
 * callbacks run in queue order, and a commit after a failed posting
 * reports failure. Returns 0 (cb called once, later) or a validation error
 * as pc_ledger_validate, PC_ENOMEM or tx's error (cb never called; nothing
 * was sent, tx is untouched). */
int pc_ledger_post(pc_db_tx_t *tx, const pc_ledger_txn_t *txn, pc_ledger_post_cb cb, void *data);

/* An account opened (or already there): status 0, or a db error. */
typedef void (*pc_ledger_open_cb)(void *data, int status);

/* Opens account_id with a zero balance inside tx if it does not exist (e.g.
 * when a merchant is created, so that its accounts are listed before their
 * first posting). Idempotent. Returns 0 (cb called once) or
 * PC_LEDGER_BAD_ACCOUNT / PC_ENOMEM / tx's error (cb never called). */
int pc_ledger_open_account(pc_db_tx_t *tx, const char *account_id, pc_ledger_open_cb cb,
                           void *data);

/* An account as read. Its strings live as long as the callback. exists is 0
 * for a well-formed account that was never opened: balance and version are
 * then 0, the rest comes from the id. */
typedef struct {
    const char *account_id;
    pc_ledger_type_t type;
    const char *owner_id;
    const char *currency;
    int64_t balance;
    int allow_negative;
    int64_t version; /* +1 on every balance change */
    int exists;
} pc_ledger_account_t;

/* status 0 and acct, or a db error and NULL. */
typedef void (*pc_ledger_balance_cb)(void *data, int status, const pc_ledger_account_t *acct);

/* Reads an account's balance (autocommit, any pooled connection). Returns 0
 * (cb called once) or PC_LEDGER_BAD_ACCOUNT / a db error (cb never called). */
int pc_ledger_balance(pc_db_t *db, const char *account_id, pc_ledger_balance_cb cb, void *data);
/* The same inside tx (sees tx's own postings). */
int pc_ledger_balance_tx(pc_db_tx_t *tx, const char *account_id, pc_ledger_balance_cb cb,
                         void *data);

/* The invariants of GET /admin/ledger/check, computed from one snapshot of
 * the database. ok is 1 when every count and entries_sum are 0. */
typedef struct {
    int ok;
    int64_t entries_sum;          /* all entries, all currencies: 0 */
    int64_t txns_unbalanced;      /* transactions without entries or not summing
                                     to zero in some currency */
    int64_t accounts_mismatched;  /* balance != sum of the account's entries */
    int64_t accounts_overdrawn;   /* never-negative accounts below zero */
    int64_t trades_over_refunded; /* from ledger_check_trades() */
    int64_t duplicate_charges;    /* from ledger_check_trades() */
} pc_ledger_check_t;

/* status 0 and the result (valid during the callback), or an error and NULL. */
typedef void (*pc_ledger_check_cb)(void *data, int status, const pc_ledger_check_t *check);

/* Runs the invariant queries (full scans: an ops call, not a request path).
 * The trade counts come from the SQL function ledger_check_trades(), 0 while
 * no "trades" table exists; the migration that creates trades replaces that
 * function with the real queries (until it does, the check fails with
 * PC_EIO rather than say "ok"). Returns 0 (cb called once) or a db error. */
int pc_ledger_check(pc_db_t *db, pc_ledger_check_cb cb, void *data);

/* status 0 and how many accounts were folded, or a db error. */
typedef void (*pc_ledger_fold_cb)(void *data, int status, int folded);

/* Folds the queued deltas of the accounts of up to limit queued rows into
 * their balances (SELECT ledger_fold_pending(limit), one short transaction).
 * Safe on every node at once. cb may be NULL. Returns 0 (cb called once, if
 * given) or a db error (cb never called). */
int pc_ledger_fold_pending(pc_db_t *db, int limit, pc_ledger_fold_cb cb, void *data);

/* The api.md body {"ok","entries_sum","accounts_mismatched",
 * "trades_over_refunded","duplicate_charges"} plus "txns_unbalanced" and
 * "accounts_overdrawn". New reference for the caller (NULL on no memory). */
json_t *pc_ledger_check_json(const pc_ledger_check_t *check);

#endif
