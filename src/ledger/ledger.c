#include "ledger/ledger.h"
#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KIND_MAX 64
#define REF_TYPE_MAX 64
#define REF_ID_MAX 128
#define MEMO_MAX 256

/* The account id grammar, one row per type: "<head>:<owner>:<what>:<CUR>"
 * when owned, "<head>:<what>:<CUR>" otherwise. Whether a type may go
 * negative is decided here once; the database refuses allow_negative for
 * customer money whatever this table says (ledger_accounts_customer_funds). */
static const struct {
    const char *name;
    const char *head;
    const char *what;
    int owned;
    int allow_negative;
} kinds[PC_LEDGER_TYPE_COUNT] = {
    [PC_LEDGER_BUYER_WALLET] = {"BUYER_WALLET", "buyer", "wallet", 1, 0},
    [PC_LEDGER_MERCHANT_PENDING] = {"MERCHANT_PENDING", "merchant", "pending", 1, 0},
    [PC_LEDGER_MERCHANT_AVAILABLE] = {"MERCHANT_AVAILABLE", "merchant", "available", 1, 0},
    [PC_LEDGER_MERCHANT_RESERVE] = {"MERCHANT_RESERVE", "merchant", "reserve", 1, 0},
    [PC_LEDGER_MERCHANT_RECEIVABLE] = {"MERCHANT_RECEIVABLE", "merchant", "receivable", 1, 1},
    [PC_LEDGER_PLATFORM_ESCROW] = {"PLATFORM_ESCROW", "platform", "escrow", 0, 0},
    [PC_LEDGER_PLATFORM_FEE_INCOME] = {"PLATFORM_FEE_INCOME", "platform", "fee_income", 0, 1},
    [PC_LEDGER_PLATFORM_MARKETING] = {"PLATFORM_MARKETING", "platform", "marketing", 0, 1},
    [PC_LEDGER_PLATFORM_LOSS] = {"PLATFORM_LOSS", "platform", "loss", 0, 1},
    [PC_LEDGER_CHANNEL_CLEARING] = {"CHANNEL_CLEARING", "channel", "clearing", 1, 1},
    [PC_LEDGER_SUSPENSE] = {"SUSPENSE", "platform", "suspense", 0, 1},
};

/* One call, one statement: the SQL function does the locking and the
 * writes, so the posting costs one round trip and PL/pgSQL reuses its plans. */
static const char SQL_POST[] =
    "SELECT ledger_post($1, $2, $3, $4, $5::text[], $6::text[], $7::text[], $8::text[], "
    "$9::boolean[], $10::text[], $11::bigint[], $12::text[])";

static const char SQL_OPEN[] =
    "INSERT INTO ledger_accounts (account_id, type, owner_id, currency, allow_negative) "
    "VALUES ($1, $2, $3, $4, $5::boolean) ON CONFLICT (account_id) DO NOTHING";

/* The balance includes the account's queued deltas (0040_hot_accounts.sql). */
static const char SQL_BALANCE[] =
    "SELECT type, owner_id, currency, balance + coalesce((SELECT sum(d.amount) FROM "
    "ledger_balance_deltas d WHERE d.account_id = a.account_id), 0)::bigint AS balance, "
    "allow_negative, version FROM ledger_accounts a WHERE account_id = $1";

static const char SQL_FOLD[] = "SELECT ledger_fold_pending($1::integer)";

/* One statement, hence one snapshot: concurrent postings are either wholly
 * in it or wholly out. */
#define CHECK_TIMEOUT_MS (10 * 60 * 1000)

static const char SQL_CHECK[] =
    "SELECT (SELECT coalesce(sum(amount), 0) FROM ledger_entries) AS entries_sum, "
    "(SELECT count(DISTINCT txn_id) FROM (SELECT txn_id FROM ledger_entries "
    "  GROUP BY txn_id, currency HAVING sum(amount) <> 0) u) "
    "+ (SELECT count(*) FROM ledger_txns t "
    "  WHERE NOT EXISTS (SELECT 1 FROM ledger_entries e WHERE e.txn_id = t.txn_id)) "
    "  AS txns_unbalanced, "
    "(SELECT count(*) FROM ledger_accounts a LEFT JOIN (SELECT account_id, sum(amount) AS s "
    "  FROM ledger_entries GROUP BY account_id) e USING (account_id) "
    "  LEFT JOIN (SELECT account_id, sum(amount) AS s FROM ledger_balance_deltas "
    "  GROUP BY account_id) q USING (account_id) "
    "  WHERE a.balance + coalesce(q.s, 0) <> coalesce(e.s, 0)) "
    "+ (SELECT count(DISTINCT d.account_id) FROM ledger_balance_deltas d "
    "  WHERE NOT EXISTS (SELECT 1 FROM ledger_accounts a WHERE a.account_id = d.account_id)) "
    "  AS accounts_mismatched, "
    "(SELECT count(*) FROM ledger_accounts a LEFT JOIN (SELECT account_id, sum(amount) AS s "
    "  FROM ledger_balance_deltas GROUP BY account_id) q USING (account_id) "
    "  WHERE NOT a.allow_negative AND a.balance + coalesce(q.s, 0) < 0) "
    "  AS accounts_overdrawn, "
    "c.trades_over_refunded, c.duplicate_charges "
    "FROM ledger_check_trades() c";

/* ---------- account ids ---------- */

static int seg_is(const char *seg, size_t len, const char *word)
{
    return strlen(word) == len && memcmp(seg, word, len) == 0;
}

static int owner_ok(const char *s, size_t len)
{
    if (len == 0 || len > PC_LEDGER_OWNER_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '@' || c == '-'))
            return 0;
    }
    return 1;
}

static int currency_ok(const char *s, size_t len);

int pc_ledger_currency_ok(const char *s)
{
    return s && currency_ok(s, strlen(s));
}

static int currency_ok(const char *s, size_t len)
{
    if (len != 3)
        return 0;
    for (size_t i = 0; i < 3; i++)
        if (s[i] < 'A' || s[i] > 'Z')
            return 0;
    return 1;
}

int pc_ledger_is_type(const char *account_id, pc_ledger_type_t type)
{
    pc_ledger_shape_t shape;
    return account_id && pc_ledger_parse_account(account_id, &shape) == 0 && shape.type == type;
}

int pc_ledger_parse_account(const char *account_id, pc_ledger_shape_t *out)
{
    if (!account_id)
        return PC_LEDGER_BAD_ACCOUNT;
    size_t total = strnlen(account_id, PC_LEDGER_ID_MAX + 1);
    if (total == 0 || total > PC_LEDGER_ID_MAX)
        return PC_LEDGER_BAD_ACCOUNT;
    const char *seg[4];
    size_t len[4];
    int n = 0;
    for (const char *p = account_id;;) {
        if (n == 4)
            return PC_LEDGER_BAD_ACCOUNT;
        const char *colon = strchr(p, ':');
        seg[n] = p;
        len[n] = colon ? (size_t)(colon - p) : strlen(p);
        n++;
        if (!colon)
            break;
        p = colon + 1;
    }
    if (n < 3 || !currency_ok(seg[n - 1], len[n - 1]))
        return PC_LEDGER_BAD_ACCOUNT;
    for (int t = 0; t < PC_LEDGER_TYPE_COUNT; t++) {
        int owned = kinds[t].owned;
        if (n != (owned ? 4 : 3) || !seg_is(seg[0], len[0], kinds[t].head) ||
            !seg_is(seg[owned ? 2 : 1], len[owned ? 2 : 1], kinds[t].what))
            continue;
        if (owned && !owner_ok(seg[1], len[1]))
            return PC_LEDGER_BAD_ACCOUNT;
        if (out) {
            out->type = (pc_ledger_type_t)t;
            if (owned)
                snprintf(out->owner_id, sizeof out->owner_id, "%.*s", (int)len[1], seg[1]);
            else
                snprintf(out->owner_id, sizeof out->owner_id, "platform");
            memcpy(out->currency, seg[n - 1], 3);
            out->currency[3] = 0;
            out->allow_negative = kinds[t].allow_negative;
        }
        return 0;
    }
    return PC_LEDGER_BAD_ACCOUNT;
}

int pc_ledger_account_id(char *buf, size_t len, pc_ledger_type_t type, const char *owner_id,
                         const char *currency)
{
    if ((unsigned)type >= PC_LEDGER_TYPE_COUNT || !currency)
        return PC_LEDGER_BAD_ACCOUNT;
    if (kinds[type].owned && !owner_id)
        return PC_LEDGER_BAD_ACCOUNT;
    char id[PC_LEDGER_ID_MAX + 2];
    int n = kinds[type].owned
                ? snprintf(id, sizeof id, "%s:%s:%s:%s", kinds[type].head, owner_id,
                           kinds[type].what, currency)
                : snprintf(id, sizeof id, "%s:%s:%s", kinds[type].head, kinds[type].what, currency);
    /* Parsing what was built is the one definition of a valid id; it also
     * catches owners that contain ':' and would change the id's shape. */
    pc_ledger_shape_t shape;
    if (n < 0 || (size_t)n >= sizeof id || pc_ledger_parse_account(id, &shape) ||
        shape.type != type)
        return PC_LEDGER_BAD_ACCOUNT;
    if ((size_t)n >= len)
        return PC_ELIMIT;
    memcpy(buf, id, (size_t)n + 1);
    return 0;
}

const char *pc_ledger_type_name(pc_ledger_type_t type)
{
    return (unsigned)type < PC_LEDGER_TYPE_COUNT ? kinds[type].name : NULL;
}

static int type_from_name(const char *name, pc_ledger_type_t *out)
{
    for (int t = 0; t < PC_LEDGER_TYPE_COUNT; t++)
        if (!strcmp(kinds[t].name, name)) {
            *out = (pc_ledger_type_t)t;
            return 0;
        }
    return PC_EIO;
}

const char *pc_ledger_strerror(int code)
{
    switch (code) {
    case PC_LEDGER_INSUFFICIENT:
        return "insufficient balance";
    case PC_LEDGER_DUPLICATE:
        return "already posted";
    case PC_LEDGER_UNBALANCED:
        return "legs do not sum to zero";
    case PC_LEDGER_BAD_ACCOUNT:
        return "bad account";
    default:
        return pc_strerror(code);
    }
}

/* ---------- validation ---------- */

/* A distinct account of a posting, with its net movement. */
typedef struct {
    const char *id; /* the caller's string, valid during pc_ledger_post */
    pc_ledger_shape_t shape;
    int64_t net;
} plan_acct_t;

typedef struct {
    plan_acct_t acct[PC_LEDGER_MAX_LEGS]; /* sorted by id, byte order */
    size_t nacct;
} plan_t;

static int fail(int code, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(int code, char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* Printable text (UTF-8 allowed) of 1..max bytes. */
static int text_ok(const char *s, size_t max)
{
    if (!s)
        return 0;
    size_t n = strnlen(s, max + 1);
    if (n == 0 || n > max)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return 0;
    return 1;
}

static int kind_ok(const char *s)
{
    if (!s || !(s[0] >= 'A' && s[0] <= 'Z'))
        return 0;
    size_t n = strnlen(s, KIND_MAX + 1);
    if (n > KIND_MAX)
        return 0;
    for (size_t i = 1; i < n; i++)
        if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return 0;
    return 1;
}

/* Validates txn and works out its distinct accounts in lock order. */
static int plan_build(const pc_ledger_txn_t *txn, plan_t *plan, char *err, size_t errlen)
{
    if (!txn)
        return fail(PC_EINVAL, err, errlen, "no transaction");
    if (!kind_ok(txn->kind))
        return fail(PC_EINVAL, err, errlen, "kind must be [A-Z][A-Z0-9_]*, at most %d", KIND_MAX);
    if (!text_ok(txn->ref_type, REF_TYPE_MAX) || !text_ok(txn->ref_id, REF_ID_MAX))
        return fail(PC_EINVAL, err, errlen, "ref_type (1-%d) and ref_id (1-%d) are required",
                    REF_TYPE_MAX, REF_ID_MAX);
    if (txn->memo && strnlen(txn->memo, MEMO_MAX + 1) > MEMO_MAX)
        return fail(PC_EINVAL, err, errlen, "memo longer than %d bytes", MEMO_MAX);
    if (!txn->legs || txn->nlegs < 2 || txn->nlegs > PC_LEDGER_MAX_LEGS)
        return fail(PC_EINVAL, err, errlen, "a transaction has 2 to %d legs, not %zu",
                    PC_LEDGER_MAX_LEGS, txn->legs ? txn->nlegs : 0);

    /* Per currency, the credits and the debits are summed apart: each sum
     * must fit in int64 whatever the order of the legs, and they must
     * cancel. */
    char cur[PC_LEDGER_MAX_LEGS][4];
    int64_t credits[PC_LEDGER_MAX_LEGS], debits[PC_LEDGER_MAX_LEGS];
    size_t ncur = 0;
    plan->nacct = 0;
    for (size_t i = 0; i < txn->nlegs; i++) {
        const pc_ledger_leg_t *leg = &txn->legs[i];
        pc_ledger_shape_t shape;
        if (pc_ledger_parse_account(leg->account_id, &shape))
            return fail(PC_LEDGER_BAD_ACCOUNT, err, errlen,
                        "leg %zu: account id %.100s is not of a known shape", i,
                        leg->account_id ? leg->account_id : "(null)");
        if (!leg->currency || strcmp(leg->currency, shape.currency))
            return fail(PC_LEDGER_BAD_ACCOUNT, err, errlen,
                        "leg %zu: currency %.8s is not the currency of %s", i,
                        leg->currency ? leg->currency : "(null)", leg->account_id);
        if (leg->amount == 0)
            return fail(PC_EINVAL, err, errlen, "leg %zu: amount is zero", i);
        size_t c = 0;
        while (c < ncur && strcmp(cur[c], shape.currency))
            c++;
        if (c == ncur) {
            memcpy(cur[c], shape.currency, 4);
            credits[c] = debits[c] = 0;
            ncur++;
        }
        int64_t *sum = leg->amount > 0 ? &credits[c] : &debits[c];
        if (__builtin_add_overflow(*sum, leg->amount, sum))
            return fail(PC_EINVAL, err, errlen, "%s amounts overflow int64", cur[c]);

        /* Insert the account in id order, or add to its movement. */
        size_t k = 0;
        int cmp = 1;
        while (k < plan->nacct && (cmp = strcmp(plan->acct[k].id, leg->account_id)) < 0)
            k++;
        if (k < plan->nacct && cmp == 0) {
            if (__builtin_add_overflow(plan->acct[k].net, leg->amount, &plan->acct[k].net))
                return fail(PC_EINVAL, err, errlen, "movement of %s overflows int64",
                            leg->account_id);
            continue;
        }
        memmove(&plan->acct[k + 1], &plan->acct[k], (plan->nacct - k) * sizeof plan->acct[0]);
        plan->acct[k].id = leg->account_id;
        plan->acct[k].shape = shape;
        plan->acct[k].net = leg->amount;
        plan->nacct++;
    }
    for (size_t c = 0; c < ncur; c++) {
        /* credits >= 0 and debits <= 0, so this sum cannot overflow. */
        if (credits[c] + debits[c] != 0)
            return fail(PC_LEDGER_UNBALANCED, err, errlen,
                        "%s legs sum to %lld, not zero (credits %lld, debits %lld)", cur[c],
                        (long long)(credits[c] + debits[c]), (long long)credits[c],
                        (long long)debits[c]);
    }
    return 0;
}

int pc_ledger_validate(const pc_ledger_txn_t *txn, char *err, size_t errlen)
{
    plan_t plan;
    if (err && errlen)
        err[0] = 0;
    return plan_build(txn, &plan, err, errlen);
}

/* ---------- PostgreSQL array literals ---------- */

typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} sbuf_t;

static void sb_put(sbuf_t *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 128;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void sb_str(sbuf_t *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

/* Appends one element of a text[] literal: quoted, with '"' and '\' escaped,
 * so that no value can change the array's structure. */
static void sb_elem(sbuf_t *b, int first, const char *s)
{
    sb_str(b, first ? "{\"" : ",\"");
    for (const char *p = s; *p; p++) {
        if (*p == '"' || *p == '\\')
            sb_put(b, "\\", 1);
        sb_put(b, p, 1);
    }
    sb_put(b, "\"", 1);
}

static void sb_i64(sbuf_t *b, int first, int64_t v)
{
    char num[32];
    int n = snprintf(num, sizeof num, "%s%lld", first ? "{" : ",", (long long)v);
    sb_put(b, num, (size_t)n);
}

/* ---------- posting ---------- */

typedef struct {
    pc_ledger_post_cb cb;
    void *data;
} post_t;

static void count_posting(const char *result)
{
    static int described;
    if (!described) {
        pc_metrics_describe("pc_ledger_postings_total", PC_METRIC_COUNTER,
                            "Ledger postings by result");
        described = 1;
    }
    char labels[48];
    snprintf(labels, sizeof labels, "result=\"%s\"", result);
    pc_metrics_add("pc_ledger_postings_total", labels, 1);
}

/* Turns a failed statement into the ledger's answer: the constraint that
 * refused it says what went wrong. */
static int map_error(int status, pc_db_res_t *res)
{
    if (status == 0)
        return 0;
    const char *state = pc_db_sqlstate(res);
    const char *constraint = pc_db_constraint(res);
    if (!strcmp(state, "23514") && !strcmp(constraint, "ledger_accounts_no_overdraft"))
        return PC_LEDGER_INSUFFICIENT;
    if (!strcmp(state, "23505") && !strcmp(constraint, "ledger_txns_dedupe"))
        return PC_LEDGER_DUPLICATE;
    if (!strcmp(state, "23514") && !strcmp(constraint, "ledger_txn_balanced"))
        return PC_LEDGER_UNBALANCED;
    if (!strcmp(state, "23503") || !strcmp(state, "23514"))
        return PC_LEDGER_BAD_ACCOUNT; /* currency or shape the database refused */
    if (!strcmp(state, "22003"))
        return PC_ELIMIT; /* a balance would leave bigint */
    return status;
}

static int parse_i64(const char *s, int64_t *out)
{
    if (!s || !*s)
        return PC_EIO;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*end || errno)
        return PC_EIO;
    *out = v;
    return 0;
}

static void post_done(void *data, int status, pc_db_res_t *res)
{
    post_t *p = data;
    int64_t txn_id = 0;
    int rc = map_error(status, res);
    if (rc == 0 &&
        (pc_db_rows(res) != 1 || parse_i64(pc_db_get(res, 0, 0), &txn_id) || txn_id <= 0))
        rc = PC_EIO;
    switch (rc) {
    case 0:
        count_posting("ok");
        break;
    case PC_LEDGER_INSUFFICIENT:
        count_posting("insufficient");
        break;
    case PC_LEDGER_DUPLICATE:
        count_posting("duplicate");
        break;
    case PC_ECONFLICT:
        count_posting("conflict");
        break;
    case PC_ERETRY:
        count_posting("deadlock");
        break;
    default:
        count_posting("error");
        /* C validated the posting, so the database refusing it otherwise
         * means the two disagree: worth a line in the log. */
        if (rc != PC_EUNAVAIL && rc != PC_ECLOSED)
            pc_log_warn("ledger.post_failed", "%s: %s", pc_ledger_strerror(rc), pc_db_errmsg(res));
        break;
    }
    p->cb(p->data, rc, rc ? 0 : txn_id);
    free(p);
}

int pc_ledger_post(pc_db_tx_t *tx, const pc_ledger_txn_t *txn, pc_ledger_post_cb cb, void *data)
{
    plan_t plan;
    char err[256];
    int rc = plan_build(txn, &plan, err, sizeof err);
    if (rc) {
        pc_log_warn("ledger.invalid", "%s", err);
        return rc;
    }
    /* 0-4: accounts, types, owners, currencies, allow_negative (lock order);
     * 5-7: the legs' accounts, amounts, currencies (entry order). */
    sbuf_t a[8] = {{0}};
    post_t *p = NULL;
    rc = PC_ENOMEM;
    for (size_t i = 0; i < plan.nacct; i++) {
        const plan_acct_t *ac = &plan.acct[i];
        sb_elem(&a[0], i == 0, ac->id);
        sb_elem(&a[1], i == 0, kinds[ac->shape.type].name);
        sb_elem(&a[2], i == 0, ac->shape.owner_id);
        sb_elem(&a[3], i == 0, ac->shape.currency);
        sb_str(&a[4], i == 0 ? "{" : ",");
        sb_str(&a[4], ac->shape.allow_negative ? "t" : "f");
    }
    for (size_t i = 0; i < txn->nlegs; i++) {
        sb_elem(&a[5], i == 0, txn->legs[i].account_id);
        sb_i64(&a[6], i == 0, txn->legs[i].amount);
        sb_elem(&a[7], i == 0, txn->legs[i].currency);
    }
    for (int i = 0; i < 8; i++) {
        sb_str(&a[i], "}");
        if (a[i].oom)
            goto done;
    }
    p = malloc(sizeof *p);
    if (!p)
        goto done;
    p->cb = cb;
    p->data = data;
    const char *params[12] = {txn->kind, txn->ref_type, txn->ref_id, txn->memo, a[0].p, a[1].p,
                              a[2].p,    a[3].p,        a[4].p,      a[5].p,    a[6].p, a[7].p};
    rc = pc_db_tx_query(tx, SQL_POST, 12, params, post_done, p);
    if (rc == 0)
        p = NULL; /* post_done owns it now */
done:
    free(p);
    for (int i = 0; i < 8; i++)
        free(a[i].p);
    return rc;
}

/* ---------- opening accounts ---------- */

typedef struct {
    pc_ledger_open_cb cb;
    void *data;
} open_t;

static void open_done(void *data, int status, pc_db_res_t *res)
{
    open_t *o = data;
    o->cb(o->data, map_error(status, res));
    free(o);
}

int pc_ledger_open_account(pc_db_tx_t *tx, const char *account_id, pc_ledger_open_cb cb, void *data)
{
    pc_ledger_shape_t shape;
    if (pc_ledger_parse_account(account_id, &shape))
        return PC_LEDGER_BAD_ACCOUNT;
    open_t *o = malloc(sizeof *o);
    if (!o)
        return PC_ENOMEM;
    o->cb = cb;
    o->data = data;
    const char *params[5] = {account_id, kinds[shape.type].name, shape.owner_id, shape.currency,
                             shape.allow_negative ? "true" : "false"};
    int rc = pc_db_tx_query(tx, SQL_OPEN, 5, params, open_done, o);
    if (rc)
        free(o);
    return rc;
}

/* ---------- reading ---------- */

typedef struct {
    pc_ledger_balance_cb cb;
    void *data;
    pc_ledger_shape_t shape;
    char id[PC_LEDGER_ID_MAX + 1];
} balance_t;

static void balance_done(void *data, int status, pc_db_res_t *res)
{
    balance_t *b = data;
    pc_ledger_account_t acct = {
        .account_id = b->id,
        .type = b->shape.type,
        .owner_id = b->shape.owner_id,
        .currency = b->shape.currency,
        .allow_negative = b->shape.allow_negative,
    };
    int rc = status;
    if (rc == 0 && pc_db_rows(res) == 1) {
        acct.exists = 1;
        acct.owner_id = pc_db_get(res, 0, 1);
        acct.currency = pc_db_get(res, 0, 2);
        acct.allow_negative = !strcmp(pc_db_get(res, 0, 4), "t");
        if (type_from_name(pc_db_get(res, 0, 0), &acct.type) ||
            parse_i64(pc_db_get(res, 0, 3), &acct.balance) ||
            parse_i64(pc_db_get(res, 0, 5), &acct.version))
            rc = PC_EIO;
    }
    b->cb(b->data, rc, rc ? NULL : &acct);
    free(b);
}

static int balance_start(pc_db_t *db, pc_db_tx_t *tx, const char *account_id,
                         pc_ledger_balance_cb cb, void *data)
{
    pc_ledger_shape_t shape;
    if (pc_ledger_parse_account(account_id, &shape))
        return PC_LEDGER_BAD_ACCOUNT;
    balance_t *b = malloc(sizeof *b);
    if (!b)
        return PC_ENOMEM;
    b->cb = cb;
    b->data = data;
    b->shape = shape;
    snprintf(b->id, sizeof b->id, "%s", account_id);
    const char *params[1] = {account_id};
    int rc = tx ? pc_db_tx_query(tx, SQL_BALANCE, 1, params, balance_done, b)
                : pc_db_query(db, SQL_BALANCE, 1, params, balance_done, b);
    if (rc)
        free(b);
    return rc;
}

int pc_ledger_balance(pc_db_t *db, const char *account_id, pc_ledger_balance_cb cb, void *data)
{
    return balance_start(db, NULL, account_id, cb, data);
}

int pc_ledger_balance_tx(pc_db_tx_t *tx, const char *account_id, pc_ledger_balance_cb cb,
                         void *data)
{
    return balance_start(NULL, tx, account_id, cb, data);
}

/* ---------- invariants ---------- */

typedef struct {
    pc_ledger_check_cb cb;
    void *data;
} check_t;

static void check_done(void *data, int status, pc_db_res_t *res)
{
    check_t *c = data;
    pc_ledger_check_t r = {0};
    int rc = status;
    if (rc == 0) {
        int64_t *cols[6] = {&r.entries_sum,        &r.txns_unbalanced,      &r.accounts_mismatched,
                            &r.accounts_overdrawn, &r.trades_over_refunded, &r.duplicate_charges};
        if (pc_db_rows(res) != 1)
            rc = PC_EIO;
        for (int i = 0; rc == 0 && i < 6; i++) {
            if (parse_i64(pc_db_get(res, 0, i), cols[i]) == 0)
                continue;
            /* Only the sum of all entries (numeric) can leave int64; that is
             * as far from zero as it gets. */
            if (i == 0 && pc_db_get(res, 0, 0)[0])
                r.entries_sum = pc_db_get(res, 0, 0)[0] == '-' ? INT64_MIN : INT64_MAX;
            else
                rc = PC_EIO;
        }
        r.ok = r.entries_sum == 0 && r.txns_unbalanced == 0 && r.accounts_mismatched == 0 &&
               r.accounts_overdrawn == 0 && r.trades_over_refunded == 0 && r.duplicate_charges == 0;
    } else {
        pc_log_error("ledger.check_failed", "%s", pc_db_errmsg(res));
    }
    c->cb(c->data, rc, rc ? NULL : &r);
    free(c);
}

int pc_ledger_check(pc_db_t *db, pc_ledger_check_cb cb, void *data)
{
    check_t *c = malloc(sizeof *c);
    if (!c)
        return PC_ENOMEM;
    c->cb = cb;
    c->data = data;
    /* It reads every entry: minutes on a large ledger. With the pool's
     * timeout of seconds it failed at production size (503 each time, the
     * connection taken down with whatever was pipelined behind it). */
    int rc = pc_db_query_long(db, SQL_CHECK, 0, NULL, CHECK_TIMEOUT_MS, check_done, c);
    if (rc)
        free(c);
    return rc;
}

/* ---------- queued deltas ---------- */

typedef struct {
    pc_ledger_fold_cb cb;
    void *data;
} fold_t;

static void fold_done(void *data, int status, pc_db_res_t *res)
{
    fold_t *f = data;
    int64_t n = 0;
    if (status == 0 && (pc_db_rows(res) != 1 || parse_i64(pc_db_get(res, 0, 0), &n)))
        status = PC_EIO;
    static long long logged_s; /* every 200 ms while the database is away: once a minute */
    if (status && pc_log_due(&logged_s, 60))
        pc_log_warn("ledger.fold_failed", "%s", pc_db_errmsg(res));
    else if (n > 0) {
        static int described;
        if (!described) {
            pc_metrics_describe("pc_ledger_folds_total", PC_METRIC_COUNTER,
                                "Accounts whose queued deltas were folded into the balance");
            described = 1;
        }
        pc_metrics_add("pc_ledger_folds_total", NULL, n);
    }
    if (f->cb)
        f->cb(f->data, status, status ? 0 : (int)n);
    free(f);
}

int pc_ledger_fold_pending(pc_db_t *db, int limit, pc_ledger_fold_cb cb, void *data)
{
    fold_t *f = malloc(sizeof *f);
    if (!f)
        return PC_ENOMEM;
    f->cb = cb;
    f->data = data;
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit > 0 ? limit : 1);
    const char *params[1] = {lim};
    int rc = pc_db_query(db, SQL_FOLD, 1, params, fold_done, f);
    if (rc)
        free(f);
    return rc;
}

json_t *pc_ledger_check_json(const pc_ledger_check_t *check)
{
    return json_pack("{s:b,s:I,s:I,s:I,s:I,s:I,s:I}", "ok", check->ok, "entries_sum",
                     (json_int_t)check->entries_sum, "accounts_mismatched",
                     (json_int_t)check->accounts_mismatched, "trades_over_refunded",
                     (json_int_t)check->trades_over_refunded, "duplicate_charges",
                     (json_int_t)check->duplicate_charges, "txns_unbalanced",
                     (json_int_t)check->txns_unbalanced, "accounts_overdrawn",
                     (json_int_t)check->accounts_overdrawn);
}
