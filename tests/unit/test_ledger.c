/* The ledger's C side without a database: account ids, validation of legs
 * (sums, overflow, shapes), the one statement a posting sends (accounts in
 * lock order, legs in entry order), and how database answers become ledger
 * results. store/db is replaced by a fake that records statements and lets
 * the test answer them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/error.h"
#include "cashier/cashier.h"
#include "core/currency.h"
#include "ledger/ledger.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------- a fake store/db ---------- */

struct pc_db_tx {
    int refuse; /* pc_db_tx_query fails with this code */
};
struct pc_db {
    int unused;
};
struct pc_db_res {
    int rows;
    const char *vals[8];
    const char *sqlstate;
    const char *constraint;
};

static struct {
    int nsent;
    char *sql;
    int nparams;
    char *params[16];
    pc_db_query_cb cb;
    void *data;
} sent;

static void sent_clear(void)
{
    free(sent.sql);
    for (int i = 0; i < sent.nparams; i++)
        free(sent.params[i]);
    memset(&sent, 0, sizeof sent);
}

static int record(const char *sql, int nparams, const char *const *params, pc_db_query_cb cb,
                  void *data)
{
    sent_clear();
    sent.nsent = 1;
    sent.sql = strdup(sql);
    sent.nparams = nparams;
    for (int i = 0; i < nparams; i++)
        sent.params[i] = params[i] ? strdup(params[i]) : NULL;
    sent.cb = cb;
    sent.data = data;
    return 0;
}

int pc_db_tx_query(pc_db_tx_t *tx, const char *sql, int nparams, const char *const *params,
                   pc_db_query_cb cb, void *data)
{
    if (tx->refuse)
        return tx->refuse;
    return record(sql, nparams, params, cb, data);
}

int pc_db_query(pc_db_t *db, const char *sql, int nparams, const char *const *params,
                pc_db_query_cb cb, void *data)
{
    (void)db;
    return record(sql, nparams, params, cb, data);
}

int pc_db_query_long(pc_db_t *db, const char *sql, int nparams, const char *const *params,
                     uint64_t timeout_ms, pc_db_query_cb cb, void *data)
{
    (void)db;
    assert_true(timeout_ms >= 60000); /* the check reads the whole ledger */
    return record(sql, nparams, params, cb, data);
}

int pc_db_rows(const pc_db_res_t *res)
{
    return res ? res->rows : 0;
}

const char *pc_db_get(const pc_db_res_t *res, int row, int col)
{
    (void)row;
    return res->vals[col] ? res->vals[col] : "";
}

const char *pc_db_sqlstate(const pc_db_res_t *res)
{
    return res && res->sqlstate ? res->sqlstate : "";
}

const char *pc_db_constraint(const pc_db_res_t *res)
{
    return res && res->constraint ? res->constraint : "";
}

const char *pc_db_errmsg(const pc_db_res_t *res)
{
    (void)res;
    return "fake error";
}

/* Answers the statement last sent. */
static void answer(int status, pc_db_res_t *res)
{
    pc_db_query_cb cb = sent.cb;
    void *data = sent.data;
    sent.cb = NULL;
    assert_non_null(cb);
    cb(data, status, res);
}

/* ---------- helpers ---------- */

typedef struct {
    int calls;
    int status;
    int64_t txn_id;
} post_result_t;

static void on_post(void *data, int status, int64_t txn_id)
{
    post_result_t *r = data;
    r->calls++;
    r->status = status;
    r->txn_id = txn_id;
}

static int teardown(void **state)
{
    (void)state;
    sent_clear();
    return 0;
}

static pc_ledger_txn_t txn_of(const pc_ledger_leg_t *legs, size_t n)
{
    pc_ledger_txn_t t = {"TRADE_PAY", "payment", "P1", NULL, legs, n};
    return t;
}

/* ---------- account ids ---------- */

static void test_every_known_account_shape_parses(void **state)
{
    (void)state;
    static const struct {
        const char *id;
        pc_ledger_type_t type;
        const char *owner;
        int neg;
    } cases[] = {
        {"buyer:u_42:wallet:CNY", PC_LEDGER_BUYER_WALLET, "u_42", 0},
        {"merchant:m1:pending:CNY", PC_LEDGER_MERCHANT_PENDING, "m1", 0},
        {"merchant:m1:available:USD", PC_LEDGER_MERCHANT_AVAILABLE, "m1", 0},
        {"merchant:m1:reserve:CNY", PC_LEDGER_MERCHANT_RESERVE, "m1", 0},
        {"merchant:m1:receivable:CNY", PC_LEDGER_MERCHANT_RECEIVABLE, "m1", 1},
        {"channel:sim_card:clearing:CNY", PC_LEDGER_CHANNEL_CLEARING, "sim_card", 1},
        {"platform:escrow:CNY", PC_LEDGER_PLATFORM_ESCROW, "platform", 0},
        {"platform:fee_income:CNY", PC_LEDGER_PLATFORM_FEE_INCOME, "platform", 1},
        {"platform:marketing:CNY", PC_LEDGER_PLATFORM_MARKETING, "platform", 1},
        {"platform:loss:CNY", PC_LEDGER_PLATFORM_LOSS, "platform", 1},
        {"platform:suspense:CNY", PC_LEDGER_SUSPENSE, "platform", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pc_ledger_shape_t s;
        assert_int_equal(pc_ledger_parse_account(cases[i].id, &s), 0);
        assert_int_equal(s.type, cases[i].type);
        assert_string_equal(s.owner_id, cases[i].owner);
        assert_string_equal(s.currency, strrchr(cases[i].id, ':') + 1);
        assert_int_equal(s.allow_negative, cases[i].neg);
    }
}

static void test_unknown_account_shapes_are_refused(void **state)
{
    (void)state;
    char long_owner[128] = "buyer:";
    memset(long_owner + 6, 'a', 65);
    strcpy(long_owner + 71, ":wallet:CNY");
    const char *bad[] = {"",
                         "buyer:u1:wallet",
                         "buyer:u1:wallet:cny",
                         "buyer:u1:wallet:CNYX",
                         "buyer:u1:wallet:CN",
                         "buyer::wallet:CNY",
                         "buyer:u:1:wallet:CNY",
                         "buyer:u 1:wallet:CNY",
                         "buyer:u\"1:wallet:CNY",
                         "merchant:m1:wallet:CNY",
                         "platform:escrow:x:CNY",
                         "platform:fee_income",
                         "platform:fee:CNY",
                         "channel:sim:clearing:CNY:",
                         "Buyer:u1:wallet:CNY",
                         long_owner};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pc_ledger_shape_t s;
        if (pc_ledger_parse_account(bad[i], &s) != PC_LEDGER_BAD_ACCOUNT)
            fail_msg("accepted %s", bad[i]);
    }
    assert_int_equal(pc_ledger_parse_account(NULL, NULL), PC_LEDGER_BAD_ACCOUNT);
}

/* A merchant named after an account type ("receivable", "pending") has
 * that word in all its ids: the type is read from the id's shape. */
static void test_an_accounts_type_is_its_shape_not_a_word_in_it(void **state)
{
    (void)state;
    assert_true(pc_ledger_is_type("merchant:receivable:reserve:CNY", PC_LEDGER_MERCHANT_RESERVE));
    assert_false(
        pc_ledger_is_type("merchant:receivable:reserve:CNY", PC_LEDGER_MERCHANT_RECEIVABLE));
    assert_true(pc_ledger_is_type("merchant:pending:available:CNY", PC_LEDGER_MERCHANT_AVAILABLE));
    assert_false(pc_ledger_is_type("merchant:pending:available:CNY", PC_LEDGER_MERCHANT_PENDING));
    assert_true(pc_ledger_is_type("merchant:pending:pending:CNY", PC_LEDGER_MERCHANT_PENDING));
    assert_false(pc_ledger_is_type("not an id", PC_LEDGER_MERCHANT_PENDING));
    assert_false(pc_ledger_is_type(NULL, PC_LEDGER_MERCHANT_PENDING));
}

static void test_account_id_builds_what_parse_reads(void **state)
{
    (void)state;
    char buf[PC_LEDGER_ID_MAX + 1];
    assert_int_equal(pc_ledger_account_id(buf, sizeof buf, PC_LEDGER_MERCHANT_PENDING, "m9", "CNY"),
                     0);
    assert_string_equal(buf, "merchant:m9:pending:CNY");
    assert_int_equal(
        pc_ledger_account_id(buf, sizeof buf, PC_LEDGER_PLATFORM_FEE_INCOME, NULL, "USD"), 0);
    assert_string_equal(buf, "platform:fee_income:USD");
    for (int t = 0; t < PC_LEDGER_TYPE_COUNT; t++) {
        pc_ledger_shape_t s;
        assert_int_equal(pc_ledger_account_id(buf, sizeof buf, (pc_ledger_type_t)t, "o1", "EUR"),
                         0);
        assert_int_equal(pc_ledger_parse_account(buf, &s), 0);
        assert_int_equal(s.type, t);
        assert_non_null(pc_ledger_type_name((pc_ledger_type_t)t));
    }
    /* An owner with ':' would make an id of another account. */
    assert_int_equal(
        pc_ledger_account_id(buf, sizeof buf, PC_LEDGER_BUYER_WALLET, "x:wallet:CNY:y", "CNY"),
        PC_LEDGER_BAD_ACCOUNT);
    assert_int_equal(pc_ledger_account_id(buf, sizeof buf, PC_LEDGER_BUYER_WALLET, NULL, "CNY"),
                     PC_LEDGER_BAD_ACCOUNT);
    assert_int_equal(pc_ledger_account_id(buf, 8, PC_LEDGER_BUYER_WALLET, "u1", "CNY"), PC_ELIMIT);
}

/* ---------- validation ---------- */

static void test_fewer_than_two_or_too_many_legs_are_refused(void **state)
{
    (void)state;
    pc_ledger_leg_t legs[PC_LEDGER_MAX_LEGS + 1];
    for (size_t i = 0; i < PC_LEDGER_MAX_LEGS + 1; i++)
        legs[i] = (pc_ledger_leg_t){"platform:suspense:CNY", i % 2 ? -1 : 1, "CNY"};
    pc_ledger_txn_t t = txn_of(legs, 1);
    char err[256];
    assert_int_equal(pc_ledger_validate(&t, err, sizeof err), PC_EINVAL);
    assert_non_null(strstr(err, "legs"));
    t.nlegs = 0;
    assert_int_equal(pc_ledger_validate(&t, err, sizeof err), PC_EINVAL);
    t.nlegs = PC_LEDGER_MAX_LEGS + 1;
    assert_int_equal(pc_ledger_validate(&t, err, sizeof err), PC_EINVAL);
    t.nlegs = PC_LEDGER_MAX_LEGS; /* even: balanced */
    assert_int_equal(pc_ledger_validate(&t, err, sizeof err), 0);
    t.legs = NULL;
    assert_int_equal(pc_ledger_validate(&t, err, sizeof err), PC_EINVAL);
    assert_int_equal(pc_ledger_validate(NULL, NULL, 0), PC_EINVAL);
}

static void test_zero_amount_leg_is_refused(void **state)
{
    (void)state;
    pc_ledger_leg_t legs[] = {{"buyer:u1:wallet:CNY", 5, "CNY"},
                              {"platform:suspense:CNY", 0, "CNY"},
                              {"channel:c1:clearing:CNY", -5, "CNY"}};
    pc_ledger_txn_t t = txn_of(legs, 3);
    char err[256];
    assert_int_equal(pc_ledger_validate(&t, err, sizeof err), PC_EINVAL);
    assert_non_null(strstr(err, "leg 1"));
}

static void test_legs_must_sum_to_zero_per_currency(void **state)
{
    (void)state;
    char err[256];
    pc_ledger_leg_t off_by_one[] = {{"buyer:u1:wallet:CNY", 100, "CNY"},
                                    {"channel:c1:clearing:CNY", -99, "CNY"}};
    pc_ledger_txn_t t = txn_of(off_by_one, 2);
    assert_int_equal(pc_ledger_validate(&t, err, sizeof err), PC_LEDGER_UNBALANCED);
    assert_non_null(strstr(err, "CNY legs sum to 1"));

    /* Zero in total is not enough: each currency balances on its own. */
    pc_ledger_leg_t across[] = {{"buyer:u1:wallet:CNY", 100, "CNY"},
                                {"channel:c1:clearing:USD", -100, "USD"}};
    t = txn_of(across, 2);
    assert_int_equal(pc_ledger_validate(&t, err, sizeof err), PC_LEDGER_UNBALANCED);

    pc_ledger_leg_t fx[] = {{"buyer:u1:wallet:CNY", 700, "CNY"},
                            {"platform:suspense:CNY", -700, "CNY"},
                            {"platform:suspense:USD", 100, "USD"},
                            {"channel:c1:clearing:USD", -100, "USD"}};
    t = txn_of(fx, 4);
    assert_int_equal(pc_ledger_validate(&t, err, sizeof err), 0);
}

static void test_amount_overflow_is_refused_whatever_the_order(void **state)
{
    (void)state;
    char err[256];
    /* Sums to zero, but the credits alone exceed int64: a running sum in
     * this order would overflow, and in another order would not notice. */
    pc_ledger_leg_t legs[] = {{"buyer:u1:wallet:CNY", INT64_MAX, "CNY"},
                              {"buyer:u2:wallet:CNY", 1, "CNY"},
                              {"channel:c1:clearing:CNY", -INT64_MAX, "CNY"},
                              {"channel:c2:clearing:CNY", -1, "CNY"}};
    pc_ledger_txn_t t = txn_of(legs, 4);
    assert_int_equal(pc_ledger_validate(&t, err, sizeof err), PC_EINVAL);
    assert_non_null(strstr(err, "overflow"));
    pc_ledger_leg_t reordered[] = {legs[0], legs[2], legs[1], legs[3]};
    t = txn_of(reordered, 4);
    assert_int_equal(pc_ledger_validate(&t, err, sizeof err), PC_EINVAL);

    pc_ledger_leg_t min[] = {{"channel:c1:clearing:CNY", INT64_MIN, "CNY"},
                             {"buyer:u1:wallet:CNY", INT64_MAX, "CNY"},
                             {"buyer:u2:wallet:CNY", 1, "CNY"}};
    t = txn_of(min, 3);
    assert_int_equal(pc_ledger_validate(&t, err, sizeof err), PC_EINVAL);

    pc_ledger_leg_t edge[] = {{"buyer:u1:wallet:CNY", INT64_MAX, "CNY"},
                              {"channel:c1:clearing:CNY", -INT64_MAX, "CNY"}};
    t = txn_of(edge, 2);
    assert_int_equal(pc_ledger_validate(&t, err, sizeof err), 0);
}

static void test_leg_currency_must_be_the_accounts(void **state)
{
    (void)state;
    char err[256];
    pc_ledger_leg_t legs[] = {{"buyer:u1:wallet:CNY", 5, "USD"},
                              {"platform:suspense:USD", -5, "USD"}};
    pc_ledger_txn_t t = txn_of(legs, 2);
    assert_int_equal(pc_ledger_validate(&t, err, sizeof err), PC_LEDGER_BAD_ACCOUNT);
    legs[0].currency = NULL;
    assert_int_equal(pc_ledger_validate(&t, err, sizeof err), PC_LEDGER_BAD_ACCOUNT);
    legs[0] = (pc_ledger_leg_t){"wallet:u1:CNY", 5, "CNY"};
    assert_int_equal(pc_ledger_validate(&t, err, sizeof err), PC_LEDGER_BAD_ACCOUNT);
    assert_non_null(strstr(err, "wallet:u1:CNY"));
}

static void test_event_names_are_checked(void **state)
{
    (void)state;
    pc_ledger_leg_t legs[] = {{"buyer:u1:wallet:CNY", 5, "CNY"},
                              {"platform:suspense:CNY", -5, "CNY"}};
    pc_ledger_txn_t t = txn_of(legs, 2);
    assert_int_equal(pc_ledger_validate(&t, NULL, 0), 0);
    const char *bad_kinds[] = {NULL, "", "pay", "1PAY", "TRADE-PAY"};
    for (size_t i = 0; i < sizeof bad_kinds / sizeof bad_kinds[0]; i++) {
        t.kind = bad_kinds[i];
        assert_int_equal(pc_ledger_validate(&t, NULL, 0), PC_EINVAL);
    }
    t.kind = "REFUND";
    t.ref_id = "";
    assert_int_equal(pc_ledger_validate(&t, NULL, 0), PC_EINVAL);
    t.ref_id = "R\n1";
    assert_int_equal(pc_ledger_validate(&t, NULL, 0), PC_EINVAL);
    t.ref_id = "R1";
    t.ref_type = NULL;
    assert_int_equal(pc_ledger_validate(&t, NULL, 0), PC_EINVAL);
    t.ref_type = "refund";
    char memo[300];
    memset(memo, 'm', sizeof memo - 1);
    memo[sizeof memo - 1] = 0;
    t.memo = memo;
    assert_int_equal(pc_ledger_validate(&t, NULL, 0), PC_EINVAL);
    t.memo = "ok";
    assert_int_equal(pc_ledger_validate(&t, NULL, 0), 0);
}

/* ---------- posting ---------- */

static void test_post_sends_accounts_in_lock_order_and_legs_in_entry_order(void **state)
{
    (void)state;
    pc_db_tx_t tx = {0};
    /* Upper case sorts before lower case in byte order, whatever the
     * database's collation: the SQL sorts with COLLATE "C" too. */
    pc_ledger_leg_t legs[] = {
        {"merchant:m1:pending:CNY", 100, "CNY"}, {"channel:c1:clearing:CNY", -100, "CNY"},
        {"merchant:m1:pending:CNY", -3, "CNY"},  {"platform:fee_income:CNY", 3, "CNY"},
        {"buyer:zed:wallet:CNY", 1, "CNY"},      {"buyer:Zed:wallet:CNY", -1, "CNY"}};
    pc_ledger_txn_t t = {"TRADE_PAY", "payment", "P\"1", "memo", legs, 6};
    post_result_t r = {0};
    assert_int_equal(pc_ledger_post(&tx, &t, on_post, &r), 0);
    assert_int_equal(sent.nsent, 1);
    assert_int_equal(r.calls, 0);
    assert_non_null(strstr(sent.sql, "ledger_post("));
    assert_int_equal(sent.nparams, 12);
    assert_string_equal(sent.params[0], "TRADE_PAY");
    assert_string_equal(sent.params[1], "payment");
    assert_string_equal(sent.params[2], "P\"1"); /* a parameter: never quoted into SQL */
    assert_string_equal(sent.params[3], "memo");
    assert_string_equal(sent.params[4], "{\"buyer:Zed:wallet:CNY\",\"buyer:zed:wallet:CNY\","
                                        "\"channel:c1:clearing:CNY\",\"merchant:m1:pending:CNY\","
                                        "\"platform:fee_income:CNY\"}");
    assert_string_equal(sent.params[5], "{\"BUYER_WALLET\",\"BUYER_WALLET\",\"CHANNEL_CLEARING\","
                                        "\"MERCHANT_PENDING\",\"PLATFORM_FEE_INCOME\"}");
    assert_string_equal(sent.params[6], "{\"Zed\",\"zed\",\"c1\",\"m1\",\"platform\"}");
    assert_string_equal(sent.params[7], "{\"CNY\",\"CNY\",\"CNY\",\"CNY\",\"CNY\"}");
    assert_string_equal(sent.params[8], "{f,f,t,f,t}");
    assert_string_equal(sent.params[9], "{\"merchant:m1:pending:CNY\",\"channel:c1:clearing:CNY\","
                                        "\"merchant:m1:pending:CNY\",\"platform:fee_income:CNY\","
                                        "\"buyer:zed:wallet:CNY\",\"buyer:Zed:wallet:CNY\"}");
    assert_string_equal(sent.params[10], "{100,-100,-3,3,1,-1}");
    assert_string_equal(sent.params[11], "{\"CNY\",\"CNY\",\"CNY\",\"CNY\",\"CNY\",\"CNY\"}");

    pc_db_res_t ok = {.rows = 1, .vals = {"42"}};
    answer(0, &ok);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.txn_id, 42);
}

static void test_post_with_extreme_amounts_writes_exact_literals(void **state)
{
    (void)state;
    pc_db_tx_t tx = {0};
    pc_ledger_leg_t legs[] = {{"channel:c1:clearing:CNY", -INT64_MAX, "CNY"},
                              {"buyer:u1:wallet:CNY", INT64_MAX, "CNY"}};
    pc_ledger_txn_t t = txn_of(legs, 2);
    post_result_t r = {0};
    assert_int_equal(pc_ledger_post(&tx, &t, on_post, &r), 0);
    assert_string_equal(sent.params[10], "{-9223372036854775807,9223372036854775807}");
    assert_null(sent.params[3]); /* no memo: SQL NULL */
    answer(PC_EUNAVAIL, NULL);
    assert_int_equal(r.status, PC_EUNAVAIL);
}

static void test_invalid_posting_sends_nothing_and_never_calls_back(void **state)
{
    (void)state;
    pc_db_tx_t tx = {0};
    pc_ledger_leg_t legs[] = {{"buyer:u1:wallet:CNY", 5, "CNY"},
                              {"platform:suspense:CNY", -4, "CNY"}};
    pc_ledger_txn_t t = txn_of(legs, 2);
    post_result_t r = {0};
    assert_int_equal(pc_ledger_post(&tx, &t, on_post, &r), PC_LEDGER_UNBALANCED);
    assert_int_equal(sent.nsent, 0);
    assert_int_equal(r.calls, 0);

    /* A transaction that cannot take the statement: the error comes back,
     * no callback, nothing leaks (the sanitizer build checks). */
    legs[1].amount = -5;
    tx.refuse = PC_EUNAVAIL;
    assert_int_equal(pc_ledger_post(&tx, &t, on_post, &r), PC_EUNAVAIL);
    assert_int_equal(r.calls, 0);
}

static void post_and_answer(const char *sqlstate, const char *constraint, int status,
                            post_result_t *r)
{
    pc_db_tx_t tx = {0};
    pc_ledger_leg_t legs[] = {{"buyer:u1:wallet:CNY", -5, "CNY"},
                              {"merchant:m1:pending:CNY", 5, "CNY"}};
    pc_ledger_txn_t t = txn_of(legs, 2);
    memset(r, 0, sizeof *r);
    assert_int_equal(pc_ledger_post(&tx, &t, on_post, r), 0);
    pc_db_res_t res = {.sqlstate = sqlstate, .constraint = constraint};
    answer(status, &res);
    assert_int_equal(r->calls, 1);
    assert_int_equal(r->txn_id, 0);
}

static void test_database_refusals_become_ledger_results(void **state)
{
    (void)state;
    post_result_t r;
    post_and_answer("23514", "ledger_accounts_no_overdraft", PC_EIO, &r);
    assert_int_equal(r.status, PC_LEDGER_INSUFFICIENT);
    post_and_answer("23505", "ledger_txns_dedupe", PC_ECONFLICT, &r);
    assert_int_equal(r.status, PC_LEDGER_DUPLICATE);
    post_and_answer("23514", "ledger_txn_balanced", PC_EIO, &r);
    assert_int_equal(r.status, PC_LEDGER_UNBALANCED);
    post_and_answer("23514", "ledger_accounts_id_shape", PC_EIO, &r);
    assert_int_equal(r.status, PC_LEDGER_BAD_ACCOUNT);
    post_and_answer("23503", "ledger_entries_account_fkey", PC_EIO, &r);
    assert_int_equal(r.status, PC_LEDGER_BAD_ACCOUNT);
    post_and_answer("22003", "", PC_EIO, &r);
    assert_int_equal(r.status, PC_ELIMIT);
    /* A deadlock is retryable, not a duplicate. */
    post_and_answer("40P01", "", PC_ERETRY, &r);
    assert_int_equal(r.status, PC_ERETRY);
    /* Another unique key (not the dedupe one) stays a plain conflict. */
    post_and_answer("23505", "something_else", PC_ECONFLICT, &r);
    assert_int_equal(r.status, PC_ECONFLICT);
    post_and_answer("25P02", "", PC_EIO, &r);
    assert_int_equal(r.status, PC_EIO);
}

static void test_malformed_success_answer_is_an_error(void **state)
{
    (void)state;
    pc_db_tx_t tx = {0};
    pc_ledger_leg_t legs[] = {{"buyer:u1:wallet:CNY", -5, "CNY"},
                              {"merchant:m1:pending:CNY", 5, "CNY"}};
    pc_ledger_txn_t t = txn_of(legs, 2);
    post_result_t r = {0};
    assert_int_equal(pc_ledger_post(&tx, &t, on_post, &r), 0);
    pc_db_res_t res = {.rows = 1, .vals = {"x1"}};
    answer(0, &res);
    assert_int_equal(r.status, PC_EIO);
    assert_int_equal(r.txn_id, 0);
}

/* ---------- reading ---------- */

typedef struct {
    int calls, status, exists, neg;
    int64_t balance, version;
    pc_ledger_type_t type;
    char owner[80];
} bal_result_t;

static void on_balance(void *data, int status, const pc_ledger_account_t *a)
{
    bal_result_t *r = data;
    r->calls++;
    r->status = status;
    if (a) {
        r->exists = a->exists;
        r->balance = a->balance;
        r->version = a->version;
        r->type = a->type;
        r->neg = a->allow_negative;
        snprintf(r->owner, sizeof r->owner, "%s", a->owner_id);
    }
}

static void test_balance_of_unopened_account_is_zero(void **state)
{
    (void)state;
    pc_db_t db = {0};
    bal_result_t r = {0};
    assert_int_equal(pc_ledger_balance(&db, "merchant:m7:available:CNY", on_balance, &r), 0);
    assert_string_equal(sent.params[0], "merchant:m7:available:CNY");
    pc_db_res_t none = {.rows = 0};
    answer(0, &none);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.exists, 0);
    assert_int_equal(r.balance, 0);
    assert_int_equal(r.type, PC_LEDGER_MERCHANT_AVAILABLE);
    assert_string_equal(r.owner, "m7");

    memset(&r, 0, sizeof r);
    assert_int_equal(pc_ledger_balance(&db, "merchant:m7:available:CNY", on_balance, &r), 0);
    pc_db_res_t row = {.rows = 1, .vals = {"MERCHANT_AVAILABLE", "m7", "CNY", "-12", "f", "9"}};
    answer(0, &row);
    assert_int_equal(r.exists, 1);
    assert_int_equal(r.balance, -12);
    assert_int_equal(r.version, 9);

    assert_int_equal(pc_ledger_balance(&db, "nope", on_balance, &r), PC_LEDGER_BAD_ACCOUNT);
}

/* ---------- invariants ---------- */

typedef struct {
    int calls, status;
    pc_ledger_check_t c;
} check_result_t;

static void on_check(void *data, int status, const pc_ledger_check_t *c)
{
    check_result_t *r = data;
    r->calls++;
    r->status = status;
    if (c)
        r->c = *c;
}

static void test_check_is_ok_only_when_every_count_is_zero(void **state)
{
    (void)state;
    pc_db_t db = {0};
    check_result_t r = {0};
    assert_int_equal(pc_ledger_check(&db, on_check, &r), 0);
    assert_non_null(strstr(sent.sql, "ledger_check_trades()"));
    pc_db_res_t clean = {.rows = 1, .vals = {"0", "0", "0", "0", "0", "0"}};
    answer(0, &clean);
    assert_int_equal(r.status, 0);
    assert_true(r.c.ok);

    const char *col[6] = {"0", "0", "0", "0", "0", "0"};
    for (int i = 0; i < 6; i++) {
        memset(&r, 0, sizeof r);
        assert_int_equal(pc_ledger_check(&db, on_check, &r), 0);
        pc_db_res_t bad = {.rows = 1};
        for (int j = 0; j < 6; j++)
            bad.vals[j] = i == j ? "3" : col[j];
        answer(0, &bad);
        assert_int_equal(r.status, 0);
        assert_false(r.c.ok);
    }

    /* A sum beyond int64 (numeric in SQL) is reported, not an error. */
    memset(&r, 0, sizeof r);
    assert_int_equal(pc_ledger_check(&db, on_check, &r), 0);
    pc_db_res_t huge = {.rows = 1, .vals = {"-99999999999999999999", "0", "0", "0", "0", "0"}};
    answer(0, &huge);
    assert_int_equal(r.status, 0);
    assert_false(r.c.ok);
    assert_true(r.c.entries_sum == INT64_MIN);
}

static void test_check_json_has_the_api_fields(void **state)
{
    (void)state;
    pc_ledger_check_t c = {.ok = 0, .accounts_mismatched = 2};
    json_t *j = pc_ledger_check_json(&c);
    assert_non_null(j);
    assert_true(json_is_false(json_object_get(j, "ok")));
    assert_int_equal(json_integer_value(json_object_get(j, "accounts_mismatched")), 2);
    const char *keys[] = {"entries_sum", "trades_over_refunded", "duplicate_charges",
                          "txns_unbalanced", "accounts_overdrawn"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        assert_true(json_is_integer(json_object_get(j, keys[i])));
    json_decref(j);
}

/* A merchant's "RMB" (for CNY) had the form of a code and made a trade no
 * channel takes: money comes in only in ISO 4217 currencies. */
static void test_only_iso_4217_currencies_are_known(void **state)
{
    (void)state;
    const char *known[] = {"CNY", "USD", "EUR", "JPY", "KWD", "CLF", "XOF", "AED", "ZWG"};
    const char *unknown[] = {"RMB", "EURO", "XAU", "XXX", "XTS", "usd", "US", "", "CNY "};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        assert_true(pc_currency_known(known[i]));
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++)
        assert_false(pc_currency_known(unknown[i]));
    assert_false(pc_currency_known(NULL));
    /* The ledger's own check is the form only (account ids). */
    assert_true(pc_ledger_currency_ok("RMB"));
}

/* Amounts are shown with their currency's ISO 4217 digits: before, every
 * currency but JPY and KRW got two, so 1.500 KWD showed as "15.00" on the
 * buyer's pay button and 50,000 VND as "500.00". */
static void test_amounts_are_shown_with_their_currencys_digits(void **state)
{
    (void)state;
    static const struct {
        const char *cur;
        int digits;
    } d[] = {{"CNY", 2}, {"USD", 2}, {"IDR", 2}, {"JPY", 0}, {"KRW", 0},
             {"VND", 0}, {"CLP", 0}, {"XOF", 0}, {"KWD", 3}, {"BHD", 3},
             {"TND", 3}, {"CLF", 4}, {"PY", 2},  {"", 2},    {"JP", 2}};
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
        assert_int_equal(pc_currency_digits(d[i].cur), d[i].digits);
    assert_int_equal(pc_currency_digits(NULL), 2);
    char buf[48];
    assert_string_equal(pc_money_text(1500, "KWD", buf, sizeof buf), "1.500");
    assert_string_equal(pc_money_text(50000, "VND", buf, sizeof buf), "50000");
    assert_string_equal(pc_money_text(1230, "CNY", buf, sizeof buf), "12.30");
    assert_string_equal(pc_money_text(-5, "CNY", buf, sizeof buf), "-0.05");
    assert_string_equal(pc_money_text(7, "CLF", buf, sizeof buf), "0.0007");
    assert_string_equal(pc_money_text(INT64_MIN, "USD", buf, sizeof buf), "-92233720368547758.08");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_every_known_account_shape_parses, teardown),
        cmocka_unit_test_teardown(test_unknown_account_shapes_are_refused, teardown),
        cmocka_unit_test_teardown(test_account_id_builds_what_parse_reads, teardown),
        cmocka_unit_test_teardown(test_fewer_than_two_or_too_many_legs_are_refused, teardown),
        cmocka_unit_test_teardown(test_zero_amount_leg_is_refused, teardown),
        cmocka_unit_test_teardown(test_legs_must_sum_to_zero_per_currency, teardown),
        cmocka_unit_test_teardown(test_amount_overflow_is_refused_whatever_the_order, teardown),
        cmocka_unit_test_teardown(test_leg_currency_must_be_the_accounts, teardown),
        cmocka_unit_test_teardown(test_event_names_are_checked, teardown),
        cmocka_unit_test_teardown(test_post_sends_accounts_in_lock_order_and_legs_in_entry_order,
                                  teardown),
        cmocka_unit_test_teardown(test_post_with_extreme_amounts_writes_exact_literals, teardown),
        cmocka_unit_test_teardown(test_invalid_posting_sends_nothing_and_never_calls_back,
                                  teardown),
        cmocka_unit_test_teardown(test_database_refusals_become_ledger_results, teardown),
        cmocka_unit_test_teardown(test_malformed_success_answer_is_an_error, teardown),
        cmocka_unit_test_teardown(test_balance_of_unopened_account_is_zero, teardown),
        cmocka_unit_test_teardown(test_check_is_ok_only_when_every_count_is_zero, teardown),
        cmocka_unit_test_teardown(test_check_json_has_the_api_fields, teardown),
        cmocka_unit_test(test_an_accounts_type_is_its_shape_not_a_word_in_it),
        cmocka_unit_test(test_amounts_are_shown_with_their_currencys_digits),
        cmocka_unit_test(test_only_iso_4217_currencies_are_known),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
