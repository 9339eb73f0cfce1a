#include "recon/recon_match.h"
#include "ledger/ledger.h"
#include "core/error.h"
#include "core/log.h"
#include "recon/recon_conn.h"
#include "recon/recon_csv.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const KIND_NAMES[PC_RECON_KIND_COUNT] = {
    "MISSING_LOCAL", "MISSING_CHANNEL",   "AMOUNT_MISMATCH", "STATUS_MISMATCH",
    "FEE_MISMATCH",  "CURRENCY_MISMATCH", "DUPLICATE_LINE",  "ADJUSTMENT_CONTRADICTED",
};

const char *pc_recon_kind_name(pc_recon_kind_t k)
{
    return (unsigned)k < PC_RECON_KIND_COUNT ? KIND_NAMES[k] : NULL;
}

int pc_recon_kind_parse(const char *name)
{
    for (int i = 0; name && i < PC_RECON_KIND_COUNT; i++)
        if (!strcmp(name, KIND_NAMES[i]))
            return i;
    return -1;
}

/* ---------- what we match: one row per kind of local record ----------
 *
 * Each row says, in SQL over the local table aliased x (and the run's
 * constants k: ch, day_from, day_to, fees, run, attempt), how a
 * statement type is matched against one of our tables. Several rows may
 * share a statement type (a PAYOUT line is a payout or a refund paid out):
 * the first row whose table exists matches the whole statement, the others
 * only the lines it left. Adding a kind of record is adding a row. */
typedef struct {
    const char *type;  /* statement type */
    const char *table; /* our table (matched only when it exists) */
    const char *ref;   /* our number: the line's paycore_ref */
    const char *txn;   /* the channel's reference: the line's channel_ref */
    const char *amount;
    const char *state;       /* 'SUCCESS' (money moved), 'FAILED' (final, no money), 'PENDING' */
    const char *success;     /* state = 'SUCCESS', written to match the day index */
    const char *day;         /* the time that puts the record on a business day */
    const char *filter;      /* which rows went through a channel this way */
    const char *fee;         /* the fee we expect, NULL::bigint when not checked */
    const char *repair_when; /* the record may be advanced from the line */
    const char *repair;      /* SQL literal naming that repair (recon.c runs it), or NULL */
} spec_t;

#define REFUND_STATE                                                                               \
    "CASE WHEN x.status = 'SUCCESS' THEN 'SUCCESS' WHEN x.status IN ('FAILED', 'TERMINATED') "     \
    "THEN 'FAILED' ELSE 'PENDING' END"

static const spec_t SPECS[] = {
    {"PAY", "payments", "payment_no", "channel_txn_id", "x.external_amount",
     "CASE x.status WHEN 'SUCCESS' THEN 'SUCCESS' WHEN 'FAILED' THEN 'FAILED' ELSE 'PENDING' END",
     "x.status = 'SUCCESS'", "x.finished_at", "x.external_amount > 0",
     "coalesce(x.channel_fee, (x.external_amount * (k.fees -> x.currency ->> 0)::bigint + "
     "5000) / 10000 + (k.fees -> x.currency ->> 1)::bigint)",
     "x.status IN ('PROCESSING', 'UNKNOWN')", "'PAYMENT'"},
    /* Refunds by API are on the statement; refunds paid out are PAYOUT lines;
     * FILE and OFFLINE refunds never pass the channel's API. Refunds are
     * free at the channel. */
    {"REFUND", "refunds", "refund_no", "channel_txn_id", "x.external_amount", REFUND_STATE,
     "x.status = 'SUCCESS'", "x.finished_at", "x.method = 'API' AND x.external_amount > 0",
     "0::bigint", "false", NULL},
    /* A payout's fee is what its channel said when it answered (no channel
     * file prices payouts): a statement charging another was never
     * compared (NULL), and the difference reached nobody. */
    {"PAYOUT", "payouts", "payout_no", "channel_txn_id", "x.amount",
     "CASE WHEN x.status IN ('SUCCESS', 'RETURNED') THEN 'SUCCESS' WHEN x.status = 'FAILED' "
     "THEN 'FAILED' ELSE 'PENDING' END",
     "x.status IN ('SUCCESS', 'RETURNED')", "x.finished_at", "true", "x.fee", "false", NULL},
    {"PAYOUT", "refunds", "refund_no", "channel_txn_id", "x.external_amount", REFUND_STATE,
     "x.status = 'SUCCESS'", "x.finished_at", "x.method = 'PAYOUT' AND x.external_amount > 0",
     "NULL::bigint", "false", NULL},
    /* The money a bank sent back after a successful payout. */
    /* Its callback lost, a return is only on the statement: the payout is
     * marked returned from the line (repair PAYOUT_RETURN). A payout still in
     * flight here is pending too (its query will bring the success and the
     * return): as FAILED, its difference could be adjusted, and the return
     * the query then applied was booked a second time. */
    {"PAYOUT_RETURN", "payouts", "payout_no", "channel_txn_id", "x.amount",
     "CASE x.status WHEN 'RETURNED' THEN 'SUCCESS' WHEN 'FAILED' THEN 'FAILED' ELSE 'PENDING' END",
     "x.status = 'RETURNED'", "x.returned_at", "true", "NULL::bigint", "x.status = 'SUCCESS'",
     "'PAYOUT_RETURN'"},
};
#define NSPECS (sizeof SPECS / sizeof SPECS[0])

/* The run's constants, bound as $1..$6 by every generated statement; fees is
 * {"CNY": [rate_bp, fixed], ...}. */
#define K                                                                                          \
    "WITH k AS NOT MATERIALIZED (SELECT $1::text AS ch, $2::timestamptz AS day_from, "             \
    "$3::timestamptz AS day_to, $4::jsonb AS fees, $5::bigint AS run, $6::int AS attempt) "
#define NK 6

#define FOUND_COLS                                                                                 \
    "kind, obj, line_no, channel_ref, paycore_ref, line_amount, line_currency, line_fee, "         \
    "line_status, line_at, local_table, local_ref, local_state, local_status, local_amount, "      \
    "local_currency, expected_fee, repair"
#define LINE_COLS                                                                                  \
    "l.type, l.line_no, l.channel_ref, l.paycore_ref, l.amount, l.currency, l.fee, l.status, "     \
    "l.at_s"
#define IN_DAY "coalesce({day} >= k.day_from AND {day} < k.day_to, false)"
#define PAIR_ARGS                                                                                  \
    "l.status, l.amount, l.currency, l.fee, {state}, {amount}, x.currency, {fee}, " IN_DAY

/* Every line of type T against the day's records of the first table of T,
 * in one hash full join on our number: a pair that agrees produces nothing;
 * a pair that differs produces its kinds; a line without a record of the
 * day an UNMATCHED marker (the fallbacks below look further); a success of
 * the day without a line a MISSING_CHANNEL candidate. Only the day's records
 * are hashed, whatever the size of the table (the day index). */
static const char TPL_PRIMARY[] =
    K "INSERT INTO recon_found (" FOUND_COLS ") "
      "SELECT kk.kind, '{type}', l.line_no, l.channel_ref, l.paycore_ref, l.amount, l.currency, "
      "l.fee, l.status, l.at_s, CASE WHEN x.{ref} IS NOT NULL THEN '{table}' END, x.{ref}, "
      "CASE WHEN x.{ref} IS NOT NULL THEN {state} END, x.status, {amount}, x.currency, {fee}, "
      "CASE WHEN x.{ref} IS NOT NULL AND {repair_when} THEN {repair} END "
      "FROM (SELECT * FROM recon_stage WHERE type = '{type}') l "
      "FULL JOIN (SELECT x.* FROM {table} x, k WHERE x.channel_id = k.ch AND {day} >= k.day_from "
      "AND {day} < k.day_to AND ({filter})) x ON x.{ref} = l.paycore_ref "
      "CROSS JOIN k "
      "CROSS JOIN LATERAL unnest(CASE WHEN x.{ref} IS NULL THEN '{UNMATCHED}'::text[] "
      "WHEN l.line_no IS NULL THEN '{MISSING_CHANNEL}'::text[] "
      "ELSE recon_pair_kinds(" PAIR_ARGS ") END) AS kk(kind) "
      "WHERE CASE WHEN l.line_no IS NULL THEN {success} WHEN x.{ref} IS NULL THEN true "
      "ELSE NOT recon_pair_ok(" PAIR_ARGS ") END";

/* The lines still unmatched, against a whole table on one column ({col} of
 * ours = {fcol} of the line): our number (a record of another day: a lost
 * callback repaired later, a success just across midnight; or a further
 * table of the type), then the channel's reference as the last resort. A
 * match leaves a MATCHED marker so that the record is not also reported
 * missing from the statement. */
static const char TPL_MARKERS[] =
    K ", m AS (DELETE FROM recon_found f USING k, {table} x "
      "WHERE f.kind = 'UNMATCHED' AND f.obj = '{type}' AND x.{col} = f.{fcol} AND x.channel_id = "
      "k.ch AND ({filter}) "
      "RETURNING f.obj, f.line_no, f.channel_ref, f.paycore_ref, f.line_amount, f.line_currency, "
      "f.line_fee, f.line_status, f.line_at, x.{ref} AS local_ref, {state} AS local_state, "
      "x.status AS local_status, {amount} AS local_amount, x.currency AS local_currency, {fee} AS "
      "expected_fee, CASE WHEN {repair_when} THEN {repair} END AS repair, " IN_DAY " AS in_day, "
      "{day} AS local_at) "
      "INSERT INTO recon_found (" FOUND_COLS ", local_at) "
      "SELECT kk.kind, m.obj, m.line_no, m.channel_ref, m.paycore_ref, m.line_amount, "
      "m.line_currency, m.line_fee, m.line_status, m.line_at, '{table}', m.local_ref, "
      "m.local_state, m.local_status, m.local_amount, m.local_currency, m.expected_fee, m.repair, "
      "m.local_at "
      "FROM m CROSS JOIN LATERAL unnest(recon_pair_kinds(m.line_status, m.line_amount, "
      "m.line_currency, m.line_fee, m.local_state, m.local_amount, m.local_currency, "
      "m.expected_fee, m.in_day) || '{MATCHED}'::text[]) AS kk(kind)";

/* Successes of the day of a table that takes no part in a full join (a
 * further table of a type, or a type without lines today): all candidates
 * for MISSING_CHANNEL; those a fallback matches to a line leave a MATCHED
 * marker and are struck off below. */
static const char TPL_MISSING_CHANNEL[] =
    K "INSERT INTO recon_found (" FOUND_COLS ") "
      "SELECT 'MISSING_CHANNEL', '{type}', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
      "'{table}', x.{ref}, 'SUCCESS', x.status, {amount}, x.currency, {fee}, NULL "
      "FROM k CROSS JOIN {table} x "
      "WHERE x.channel_id = k.ch AND {success} AND {day} >= k.day_from AND {day} < k.day_to AND "
      "({filter})";
/* A candidate is not missing when a fallback matched it to a line of its
 * type. One that another day's statement has (a payout's PAYOUT line says
 * nothing of its PAYOUT_RETURN; a carried row from before 0086 has no type
 * and stands for any) is recorded all the same, and resolved at once by
 * SQL_RESOLVE_CARRIED_ELSEWHERE: a day's run that records nothing about a
 * record of its day is what says its statement listed it (SQL_REPEATED). */
static const char SQL_NOT_MISSING[] =
    "DELETE FROM recon_found f WHERE f.kind = 'MISSING_CHANNEL' AND EXISTS (SELECT 1 "
    "FROM recon_found m WHERE m.kind = 'MATCHED' AND m.obj = f.obj AND m.local_table = "
    "f.local_table AND m.local_ref = f.local_ref)";

/* A line not paid (FAILED, CLOSED) whose type and channel_ref the
 * statement also lists SUCCESS, naming the same one of our numbers or none:
 * an authorisation the channel declined, then the capture or the retry that
 * paid, the same day. The paid line is the one matched; the other is a
 * status that changed and reports nothing of its own (the reader keeps both:
 * recon_csv.h), as a FAILED line another day's statement carried is no
 * listing (SQL_REPEATED). Its markers stay: the record is not missing.
 * Before, it was matched alone, and a payment the channel paid was a
 * STATUS_MISMATCH (adjusting it wrote the money off). Run only when the
 * reader saw such a pair (status_changed); the statement's lines are then
 * scanned once, and only when a line not paid has a difference. */
static const char SQL_SUPERSEDED[] =
    "WITH u AS MATERIALIZED (SELECT DISTINCT obj, channel_ref FROM recon_found WHERE line_status "
    "<> 'SUCCESS' AND kind NOT IN ('CARRIED', 'MATCHED')), "
    "p AS MATERIALIZED (SELECT l.type, l.channel_ref, l.paycore_ref FROM recon_stage l WHERE "
    "EXISTS (SELECT 1 FROM u) AND l.status = 'SUCCESS' AND (l.type, l.channel_ref) IN (SELECT "
    "u.obj, u.channel_ref FROM u)) "
    "DELETE FROM recon_found f USING p WHERE f.line_status <> 'SUCCESS' AND f.kind NOT IN "
    "('CARRIED', 'MATCHED') AND f.obj = p.type AND f.channel_ref = p.channel_ref AND "
    "(p.paycore_ref IN (f.paycore_ref, '') OR f.paycore_ref = '')";

/* The lines of the full join paired with a record of the day that the
 * statement of an earlier day carried already as paid (recon_carried,
 * listed: a FAILED line carried is no listing): each leaves a MATCHED marker
 * for SQL_REPEATED, whatever the pair's kinds. A pair that agrees otherwise
 * leaves nothing, and a record booked by the channel just before midnight
 * and finished here just after it (or repaired late), listed again on its
 * own day's statement, was matched in silence. Driven by the carried rows,
 * which are few: not by the day's records. */
static const char TPL_LISTED_BEFORE[] =
    K "INSERT INTO recon_found (" FOUND_COLS ", local_at) "
      "SELECT 'MATCHED', '{type}', l.line_no, l.channel_ref, l.paycore_ref, l.amount, l.currency, "
      "l.fee, l.status, l.at_s, '{table}', x.{ref}, {state}, x.status, {amount}, x.currency, "
      "{fee}, NULL, {day} "
      "FROM k CROSS JOIN (SELECT DISTINCT c.local_ref FROM recon_carried c JOIN recon_runs r ON "
      "r.run_id = c.run_id, k WHERE c.channel_id = k.ch AND c.listed AND c.local_table = "
      "'{table}' AND c.obj = '{type}' AND c.run_id <> k.run AND r.business_date < (k.day_from AT "
      "TIME ZONE 'UTC')::date) c JOIN {table} x ON x.{ref} = c.local_ref "
      "JOIN recon_stage l ON l.paycore_ref = c.local_ref AND l.type = '{type}' "
      "WHERE x.channel_id = k.ch AND {day} >= k.day_from AND {day} < k.day_to AND ({filter}) AND "
      "l.status = 'SUCCESS'";

/* The channel listing one transaction on two days' statements; the first
 * listing is the record's own day's, else the earliest, and every other one
 * is a DUPLICATE_LINE (across days):
 * - a SUCCESS line matched to a record of another day (CARRIED), when that
 *   record's own day listed it, or when the statement of a day before this
 *   one carried it already;
 * - a SUCCESS line matched to a record of this day (MATCHED: a marker of
 *   TPL_LISTED_BEFORE or of a fallback), when the statement of a day before
 *   this one carried it already (of this line's type only: a carried row
 *   from before 0086 stands for any type, and a payout's PAYOUT line is no
 *   listing of its PAYOUT_RETURN);
 * - a SUCCESS line of no record (MISSING_LOCAL) that a day before this one
 *   recorded as MISSING_LOCAL in its latest attempt: before, both were
 *   MISSING_LOCAL, and suspense could be credited twice.
 * A day listed the record when its run, started after the record succeeded
 * (finished_at is the capture's own time; five minutes spare a capture
 * still committing), recorded in its latest attempt nothing about it, or a
 * difference of a SUCCESS line of it (another amount or fee: listed all the
 * same) — a run of this rule (records_unlisted: runs before it dropped what
 * another day's statement had, and say nothing). Its MISSING_CHANNEL, or
 * only a FAILED line of it, is no listing: the line here is carried; nor is
 * its DUPLICATE_LINE (its line repeated an earlier day's carried one: that
 * one came first). Before, any difference was taken for no listing, and a
 * record listed with another amount on its day and again on a later day
 * went unnoticed. The line's other kinds go: it is not compared with the
 * record again, and it carries nothing (SQL_CARRIED_ADD takes CARRIED). A
 * later day's statement reconciled before an earlier one is found when that
 * later day is run again. An earlier day "carried it already" only with a
 * SUCCESS line (recon_carried.listed): a FAILED one (an authorisation the
 * channel declined, then a capture or a retry under the same reference that
 * paid on a later day) is a status that changed, and the later SUCCESS line
 * the first listing. Before, any carried line counted, and that SUCCESS line
 * was a DUPLICATE_LINE (its other kinds, and a contradicted adjustment,
 * dropped with it). */
static const char SQL_REPEATED[] =
    K ", rep AS (SELECT DISTINCT f.obj, f.line_no, f.kind FROM recon_found f CROSS JOIN k WHERE "
      "f.line_status = 'SUCCESS' AND ((f.kind = 'CARRIED' AND (EXISTS (SELECT 1 FROM recon_runs r "
      "WHERE r.channel_id = k.ch AND r.business_date = (f.local_at AT TIME ZONE 'UTC')::date AND "
      "r.status = 'DONE' AND r.records_unlisted AND r.run_id <> k.run AND r.started_at > "
      "f.local_at + interval '5 minutes' AND coalesce((SELECT bool_or(d.line_status IS NOT "
      "DISTINCT FROM 'SUCCESS') AND NOT bool_or(d.kind = 'DUPLICATE_LINE') FROM recon_diffs d "
      "WHERE d.run_id = r.run_id AND d.local_table = f.local_table AND d.local_ref = f.local_ref "
      "AND d.obj = f.obj AND d.seen_attempt = r.attempts), true)) OR EXISTS (SELECT 1 FROM "
      "recon_carried c JOIN recon_runs r ON r.run_id = c.run_id WHERE c.channel_id = k.ch AND "
      "c.listed AND c.local_table = f.local_table AND c.local_ref = f.local_ref AND c.obj IN ('', "
      "f.obj) AND c.run_id <> k.run AND r.business_date < (k.day_from AT TIME ZONE "
      "'UTC')::date))) "
      "OR (f.kind = 'MATCHED' AND coalesce(f.local_at >= k.day_from AND f.local_at < k.day_to, "
      "false) AND EXISTS (SELECT 1 FROM recon_carried c JOIN recon_runs r ON r.run_id = c.run_id "
      "WHERE c.channel_id = k.ch AND c.listed AND c.local_table = f.local_table AND c.local_ref = "
      "f.local_ref AND c.obj = f.obj AND c.run_id <> k.run AND r.business_date < (k.day_from AT "
      "TIME ZONE 'UTC')::date)) "
      "OR (f.kind = 'MISSING_LOCAL' AND f.local_table IS NULL AND EXISTS (SELECT 1 FROM "
      "recon_diffs d JOIN recon_runs r ON r.run_id = d.run_id WHERE d.channel_id = k.ch AND "
      "d.kind = 'MISSING_LOCAL' AND d.diff_key = 'S:' || f.obj || ':' || f.channel_ref AND "
      "d.seen_attempt = r.attempts AND r.status = 'DONE' AND r.run_id <> k.run AND "
      "r.business_date < (k.day_from AT TIME ZONE 'UTC')::date)))), "
      "gone AS (DELETE FROM recon_found g USING rep WHERE g.obj = rep.obj AND g.line_no = "
      "rep.line_no AND g.kind NOT IN ('CARRIED', 'MATCHED') AND g.kind <> rep.kind) "
      "UPDATE recon_found f SET kind = 'DUPLICATE_LINE', across_days = true FROM rep WHERE "
      "f.kind = rep.kind AND f.obj = rep.obj AND f.line_no = rep.line_no";

/* The SUCCESS lines paired with a record of the day (in the full join, on
 * our number) that an adjusted difference is about: each leaves a MATCHED
 * marker for SQL_CONTRADICTED. A pair that agrees leaves nothing else, and
 * a statement re-issued corrected, or the record's own day's statement after
 * another day's said it failed, listed paid in silence what ops had written
 * off. After SQL_REPEATED, so the marker is never taken for an earlier
 * listing. Driven by the adjusted differences, which are few: the
 * statement's lines (no statistics) are scanned once, and only when a
 * record of the day has one. */
static const char TPL_ADJUSTED_LISTED[] =
    K ", a AS MATERIALIZED (SELECT DISTINCT x.{ref} AS ref FROM k, recon_diffs e JOIN {table} x "
      "ON x.{ref} = e.local_ref WHERE e.local_table = '{table}' AND e.ledger_txn_id IS NOT NULL "
      "AND e.channel_id = k.ch AND e.obj = '{type}' AND x.channel_id = k.ch AND {day} >= "
      "k.day_from AND {day} < k.day_to AND ({filter})) "
      "INSERT INTO recon_found (" FOUND_COLS ", local_at) "
      "SELECT 'MATCHED', '{type}', l.line_no, l.channel_ref, l.paycore_ref, l.amount, l.currency, "
      "l.fee, l.status, l.at_s, '{table}', x.{ref}, {state}, x.status, {amount}, x.currency, "
      "{fee}, NULL, {day} "
      "FROM k CROSS JOIN recon_stage l JOIN {table} x ON x.{ref} = l.paycore_ref "
      "WHERE EXISTS (SELECT 1 FROM a) AND l.paycore_ref = ANY (ARRAY(SELECT a.ref FROM a)) AND "
      "l.type = '{type}' AND l.status = 'SUCCESS'";

/* A SUCCESS line of a record (CARRIED: of another day; MATCHED: matched by
 * a fallback, or of the day with an adjusted difference — TPL_ADJUSTED_LISTED;
 * after SQL_REPEATED, and not a repeat of an earlier listing) that a
 * difference about the record said the channel did not have — missing from
 * a day's statement, or listed there not paid — while ops resolved that
 * difference with an adjustment: the money written off to suspense was paid
 * after all. That difference may be another day's, or this day's own from
 * before its statement was re-issued. Each such adjusted difference is
 * reported once, naming it (contradicts), for ops to book it back; the run
 * that reported it finds the same one again (its key is the adjusted
 * difference's); a report the run of its day closed as no longer found does
 * not count. Before, the line was only carried: SQL_CARRIED_RESOLVE closes
 * open differences, not resolved ones, and the books kept a loss that never
 * happened; and only a line carried from another day, against another day's
 * difference, was looked at: a day's statement re-issued with the line paid
 * agreed with the record and said nothing. A difference resolved without an
 * adjustment moved no money, and is left as it is. Driven by the markers,
 * which are few, through the index of adjusted differences. */
static const char SQL_CONTRADICTED[] =
    K "INSERT INTO recon_found (" FOUND_COLS ", contradicts) "
      "SELECT DISTINCT ON (e.diff_id) 'ADJUSTMENT_CONTRADICTED', f.obj, f.line_no, f.channel_ref, "
      "f.paycore_ref, f.line_amount, f.line_currency, f.line_fee, f.line_status, f.line_at, "
      "f.local_table, f.local_ref, f.local_state, f.local_status, f.local_amount, "
      "f.local_currency, f.expected_fee, NULL, e.diff_id "
      "FROM k CROSS JOIN recon_found f JOIN recon_diffs e ON e.local_table = f.local_table AND "
      "e.local_ref = f.local_ref AND e.ledger_txn_id IS NOT NULL "
      "WHERE f.kind IN ('CARRIED', 'MATCHED') AND f.line_status = 'SUCCESS' AND e.channel_id = "
      "k.ch AND e.obj = f.obj AND e.kind IN ('MISSING_CHANNEL', 'STATUS_MISMATCH') "
      "AND e.local_state = 'SUCCESS' AND e.line_status IS DISTINCT FROM 'SUCCESS' AND NOT EXISTS "
      "(SELECT 1 FROM recon_found g WHERE g.kind = 'DUPLICATE_LINE' AND g.obj = f.obj AND "
      "g.line_no = f.line_no) AND NOT EXISTS "
      "(SELECT 1 FROM recon_diffs c WHERE c.contradicts = e.diff_id AND c.run_id <> k.run AND "
      "c.resolved_by IS DISTINCT FROM 'recon') "
      "ORDER BY e.diff_id, f.line_no";

/* ---------- fixed statements ---------- */

static const char SQL_LOCK[] = "SELECT 1 FROM recon_runs WHERE run_id = $1 AND attempts = $2 AND "
                               "status = 'RUNNING' FOR UPDATE";

static const char SQL_STAGE[] =
    "CREATE TEMP TABLE recon_stage (line_no bigint, channel_ref text, paycore_ref text, type "
    "text, amount bigint, currency text, fee bigint, status text, at_s bigint) ON "
    "COMMIT DROP";

static const char SQL_FOUND[] =
    "CREATE TEMP TABLE recon_found (kind text, obj text, line_no bigint, channel_ref text, "
    "paycore_ref text, line_amount bigint, line_currency text, line_fee bigint, line_status text, "
    "line_at bigint, local_table text, local_ref text, local_state text, local_status text, "
    "local_amount bigint, local_currency text, expected_fee bigint, repair text, local_at "
    "timestamptz, across_days boolean NOT NULL DEFAULT false, contradicts bigint) ON COMMIT DROP";

/* The statement's lines go in by COPY (text format), a chunk at a time. A
 * line that repeats an earlier one is not matched again: it goes straight to
 * the findings, as column arrays. */
static const char SQL_COPY[] = "COPY recon_stage (line_no, channel_ref, paycore_ref, type, "
                               "amount, currency, fee, status, at_s) FROM STDIN";
#define COPY_CHUNK_LINES 8000
static const char SQL_LOAD_DUPLICATES[] =
    "INSERT INTO recon_found (kind, obj, line_no, channel_ref, paycore_ref, line_amount, "
    "line_currency, line_fee, line_status, line_at) SELECT 'DUPLICATE_LINE', u.type, u.line_no, "
    "u.channel_ref, u.paycore_ref, u.amount, u.currency, u.fee, u.status, u.at_s FROM "
    "unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], "
    "$7::bigint[], $8::text[], $9::bigint[]) AS u(line_no, channel_ref, paycore_ref, type, "
    "amount, currency, fee, status, at_s)";
#define DUP_COLS 9
#define DUP_BATCH 20000

/* Lines no record claims: without money they are only counted (a declined
 * attempt that another channel then took), with money they are ours to
 * explain. */
static const char SQL_UNMATCHED_COUNT[] =
    "WITH d AS (DELETE FROM recon_found WHERE kind = 'UNMATCHED' AND line_status <> 'SUCCESS' "
    "RETURNING 1) SELECT count(*) AS n FROM d";
static const char SQL_UNMATCHED_MONEY[] =
    "UPDATE recon_found SET kind = 'MISSING_LOCAL' WHERE kind = 'UNMATCHED'";

/* The day's differences, upserted on (run, kind, key): what an earlier
 * attempt found keeps its row and its status; an open row takes the latest
 * values. A repeated line's key is its reference and which repeat of it it
 * is, not its row: a re-issued file with a line added above made the same
 * duplicate new again, and the one adjusted already could be adjusted
 * twice. */
static const char SQL_UPSERT[] =
    K ", up AS (INSERT INTO recon_diffs AS d (run_id, channel_id, business_date, kind, diff_key, "
      "obj, line_no, channel_ref, paycore_ref, line_amount, line_currency, line_fee, line_status, "
      "line_time, local_table, local_ref, local_status, local_state, local_amount, "
      "local_currency, expected_fee, repair, seen_attempt, contradicts) "
      "SELECT DISTINCT ON (f.kind, f.key) k.run, k.ch, (k.day_from AT TIME ZONE 'UTC')::date, "
      "f.kind, f.key, f.obj, f.line_no, f.channel_ref, f.paycore_ref, f.line_amount, "
      "f.line_currency, f.line_fee, f.line_status, to_timestamp(f.line_at), f.local_table, "
      "f.local_ref, f.local_status, f.local_state, f.local_amount, f.local_currency, "
      "f.expected_fee, CASE WHEN f.kind = 'MISSING_LOCAL' THEN f.repair END, k.attempt, "
      "f.contradicts "
      "FROM k CROSS JOIN (SELECT *, CASE WHEN contradicts IS NOT NULL THEN 'C:' || contradicts "
      "WHEN line_no IS NULL THEN 'L:' || local_table || ':' || "
      "local_ref || CASE WHEN obj = 'PAYOUT_RETURN' THEN ':RETURN' ELSE '' END "
      "WHEN kind = 'DUPLICATE_LINE' AND across_days THEN 'S:' || obj || ':' || channel_ref || "
      "'#0' WHEN kind = 'DUPLICATE_LINE' THEN 'S:' || obj || ':' || channel_ref || '#' || "
      "row_number() OVER (PARTITION BY kind, across_days, obj, channel_ref ORDER BY line_no) "
      "ELSE 'S:' || "
      "obj || ':' || channel_ref END AS key FROM recon_found "
      "WHERE kind NOT IN ('CARRIED', 'MATCHED')) f ORDER BY f.kind, f.key, f.line_no "
      "ON CONFLICT (run_id, kind, diff_key) DO UPDATE SET seen_attempt = EXCLUDED.seen_attempt, "
      "updated_at = now(), "
      "line_no = CASE WHEN d.status = 'OPEN' THEN EXCLUDED.line_no ELSE d.line_no END, "
      "paycore_ref = CASE WHEN d.status = 'OPEN' THEN EXCLUDED.paycore_ref ELSE d.paycore_ref END, "
      "line_amount = CASE WHEN d.status = 'OPEN' THEN EXCLUDED.line_amount ELSE d.line_amount END, "
      "line_fee = CASE WHEN d.status = 'OPEN' THEN EXCLUDED.line_fee ELSE d.line_fee END, "
      "line_status = CASE WHEN d.status = 'OPEN' THEN EXCLUDED.line_status ELSE d.line_status END, "
      "line_time = CASE WHEN d.status = 'OPEN' THEN EXCLUDED.line_time ELSE d.line_time END, "
      "local_table = CASE WHEN d.status = 'OPEN' THEN EXCLUDED.local_table ELSE d.local_table END, "
      "local_ref = CASE WHEN d.status = 'OPEN' THEN EXCLUDED.local_ref ELSE d.local_ref END, "
      "local_status = CASE WHEN d.status = 'OPEN' THEN EXCLUDED.local_status ELSE d.local_status "
      "END, local_state = CASE WHEN d.status = 'OPEN' THEN EXCLUDED.local_state ELSE "
      "d.local_state END, local_amount = CASE WHEN d.status = 'OPEN' THEN EXCLUDED.local_amount "
      "ELSE d.local_amount END, local_currency = CASE WHEN d.status = 'OPEN' THEN "
      "EXCLUDED.local_currency ELSE d.local_currency END, expected_fee = CASE WHEN d.status = "
      "'OPEN' THEN EXCLUDED.expected_fee ELSE d.expected_fee END, repair = CASE WHEN d.status = "
      "'OPEN' THEN EXCLUDED.repair ELSE d.repair END "
      "RETURNING d.kind, d.status, d.repair, (d.xmax = 0) AS inserted) "
      "SELECT kind, count(*) AS found, count(*) FILTER (WHERE inserted) AS added, count(*) "
      "FILTER (WHERE status = 'OPEN' AND repair IS NOT NULL) AS to_repair FROM up GROUP BY kind";

static const char SQL_CLOSE_STALE[] =
    K "UPDATE recon_diffs d SET status = 'RESOLVED', resolved_by = 'recon', resolved_at = now(), "
      "updated_at = now(), reason = 'no longer found when the day was reconciled again "
      "(attempt ' || k.attempt || ')' FROM k WHERE d.run_id = k.run AND d.status = 'OPEN' AND "
      "d.seen_attempt <> k.attempt";

static const char SQL_CARRIED_CLEAR[] = K "DELETE FROM recon_carried c USING k WHERE c.run_id = "
                                          "k.run";
/* The records this day's statement carried, by type; listed when one of
 * their lines here was paid (SQL_REPEATED: only that is a listing; any line
 * carried says the record is not missing, SQL_RESOLVE_CARRIED_ELSEWHERE). */
static const char SQL_CARRIED_ADD[] =
    K "INSERT INTO recon_carried (run_id, channel_id, local_table, local_ref, obj, listed) "
      "SELECT k.run, k.ch, f.local_table, f.local_ref, f.obj, bool_or(f.line_status = 'SUCCESS') "
      "FROM k CROSS JOIN recon_found f WHERE f.kind = 'CARRIED' GROUP BY k.run, k.ch, "
      "f.local_table, f.local_ref, f.obj";
/* This day's records that another day's statement has: missing from this
 * one, and resolved (SQL_NOT_MISSING). */
static const char SQL_RESOLVE_CARRIED_ELSEWHERE[] =
    K "UPDATE recon_diffs d SET status = 'RESOLVED', resolved_by = 'recon', resolved_at = now(), "
      "updated_at = now(), reason = 'on the statement of ' || to_char(r.business_date, "
      "'YYYY-MM-DD') FROM k, recon_carried c JOIN recon_runs r ON r.run_id = c.run_id WHERE "
      "d.run_id = k.run AND d.kind = 'MISSING_CHANNEL' AND d.status = 'OPEN' AND c.channel_id = "
      "k.ch AND c.local_table = d.local_table AND c.local_ref = d.local_ref AND c.obj IN ('', "
      "d.obj) AND c.run_id <> k.run";

/* Another day reported one of these records missing from its statement: it
 * is on this day's. */
static const char SQL_CARRIED_RESOLVE[] =
    K "UPDATE recon_diffs d SET status = 'RESOLVED', resolved_by = 'recon', resolved_at = now(), "
      "updated_at = now(), reason = 'on the statement of ' || to_char((k.day_from AT TIME ZONE "
      "'UTC')::date, 'YYYY-MM-DD') FROM k, recon_carried c WHERE c.run_id = k.run AND "
      "d.channel_id = k.ch AND d.kind = 'MISSING_CHANNEL' AND d.status = 'OPEN' AND "
      "d.local_table = c.local_table AND d.local_ref = c.local_ref AND c.obj IN ('', d.obj) AND "
      "d.run_id <> k.run";

static const char SQL_DONE[] =
    "UPDATE recon_runs SET status = 'DONE', finished_at = now(), error = NULL, "
    "records_unlisted = true, lines = $3, "
    "duplicate_lines = $4, unmatched_lines = $5, statement_sha256 = $6, new_diffs = $7, counts = "
    "$8::jsonb WHERE run_id = $1 AND attempts = $2 AND status = 'RUNNING'";

/* ---------- the matcher's state ---------- */

/* What a statement's result feeds. */
typedef enum { R_NONE, R_LOCK, R_EXISTS, R_UNMATCHED, R_UPSERT, R_CLOSED, R_DONE } result_t;

typedef struct {
    char *sql;
    int nparams;
    char **params; /* own copies; NULL with nparams == NK: the run's constants */
    result_t result;
} stmt_t;

/* A growing text buffer. */
typedef struct {
    char *p;
    size_t len, cap;
} buf_t;

/* Where the run is: each phase is a list of statements, then what follows. */
typedef enum { P_SETUP, P_MATCH, P_RECORD } phase_t;

typedef struct {
    uv_loop_t *loop;
    pc_recon_conn_t *conn;
    pc_recon_match_cb cb;
    void *data;
    /* options */
    char channel_id[33], date[11];
    char kvals[NK][48];
    const char *kparams[NK];
    char *fees; /* kparams[3] */
    int64_t run_id;
    int attempt;
    int work_mem_mb;
    int64_t timeout_ms;
    /* reading */
    const char *text;
    size_t len;
    pc_recon_csv_t *csv;
    EVP_MD_CTX *sha;
    size_t hashed;
    int eof;
    buf_t chunk;          /* COPY text of the lines being sent */
    buf_t dcol[DUP_COLS]; /* repeated lines, as array literals */
    int ndups;            /* in dcol */
    char types_seen[16][PC_RECON_WORD_MAX + 1];
    int ntypes_seen;
    int many_types;
    int64_t status_changes; /* lines whose reference another line had with the other status */
    /* statements */
    int exists[NSPECS];
    stmt_t *stmts;
    int nstmts, next;
    phase_t phase;
    /* outcome */
    int status;
    pc_recon_match_result_t res;
} match_t;

static void set_error(match_t *m, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_error(match_t *m, int status, const char *fmt, ...)
{
    if (m->status)
        return;
    m->status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->res.error, sizeof m->res.error, fmt, ap);
    va_end(ap);
}

static void stmt_free(stmt_t *st)
{
    for (int i = 0; st->params && i < st->nparams; i++)
        free(st->params[i]);
    free(st->params);
    free(st->sql);
}

static void match_free(match_t *m)
{
    pc_recon_csv_free(m->csv);
    free(m->fees);
    EVP_MD_CTX_free(m->sha);
    free(m->chunk.p);
    for (int i = 0; i < DUP_COLS; i++)
        free(m->dcol[i].p);
    for (int i = 0; i < m->nstmts; i++)
        stmt_free(&m->stmts[i]);
    free(m->stmts);
    free(m);
}

/* Ends the match: closing the connection rolls back whatever was not
 * committed. */
static void finish(match_t *m)
{
    pc_recon_conn_close(m->conn);
    m->conn = NULL;
    m->cb(m->data, m->status, &m->res);
    match_free(m);
}

/* ---------- generating the SQL of the table ---------- */

/* Expands {name} in tpl with the spec's fields; extra holds "col" and "fcol". */
static char *expand(const char *tpl, const spec_t *s, const char *col, const char *fcol)
{
    const struct {
        const char *name, *value;
    } subst[] = {
        {"type", s->type},
        {"table", s->table},
        {"ref", s->ref},
        {"txn", s->txn},
        {"amount", s->amount},
        {"state", s->state},
        {"success", s->success},
        {"day", s->day},
        {"filter", s->filter},
        {"fee", s->fee},
        {"repair_when", s->repair_when},
        {"repair", s->repair ? s->repair : "NULL::text"},
        {"col", col ? col : ""},
        {"fcol", fcol ? fcol : ""},
    };
    size_t cap = strlen(tpl) * 2 + 1024, len = 0;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    for (const char *p = tpl; *p;) {
        const char *v = NULL;
        size_t skip = 0;
        if (*p == '{') {
            for (size_t i = 0; i < sizeof subst / sizeof subst[0]; i++) {
                size_t nl = strlen(subst[i].name);
                if (!strncmp(p + 1, subst[i].name, nl) && p[1 + nl] == '}') {
                    v = subst[i].value;
                    skip = nl + 2;
                    break;
                }
            }
        }
        size_t add = v ? strlen(v) : 1;
        if (len + add + 1 > cap) {
            cap = (len + add + 1) * 2;
            char *n = realloc(out, cap);
            if (!n) {
                free(out);
                return NULL;
            }
            out = n;
        }
        if (v) {
            memcpy(out + len, v, add);
            p += skip;
        } else {
            out[len] = *p++;
        }
        len += add;
    }
    out[len] = 0;
    return out;
}

/* Appends a statement that binds the run's constants (with_k) or nparams
 * params (copied); sql is taken over. */
static int add_stmt_params(match_t *m, char *sql, int nparams, const char *const *params,
                           result_t result)
{
    if (!sql)
        return PC_ENOMEM;
    stmt_t *n = realloc(m->stmts, (size_t)(m->nstmts + 1) * sizeof *n);
    if (!n) {
        free(sql);
        return PC_ENOMEM;
    }
    m->stmts = n;
    stmt_t st = {sql, nparams, NULL, result};
    if (params) {
        st.params = calloc((size_t)nparams, sizeof *st.params);
        for (int i = 0; st.params && i < nparams; i++) {
            if (params[i] && !(st.params[i] = strdup(params[i]))) {
                stmt_free(&st);
                return PC_ENOMEM;
            }
        }
        if (!st.params) {
            free(sql);
            return PC_ENOMEM;
        }
    }
    m->stmts[m->nstmts++] = st;
    return 0;
}

static int add_stmt(match_t *m, char *sql, int with_k, result_t result)
{
    return add_stmt_params(m, sql, with_k ? NK : 0, NULL, result);
}

static int type_seen(const match_t *m, const char *type)
{
    for (int i = 0; i < m->ntypes_seen; i++)
        if (!strcmp(m->types_seen[i], type))
            return 1;
    return 0;
}

/* Whether SPECS[i]'s table is fully joined with its type's lines: the first
 * existing table of a type the statement has. */
static int full_joined(const match_t *m, size_t i)
{
    if (!m->exists[i])
        return 0;
    for (size_t j = 0; j < i; j++)
        if (m->exists[j] && !strcmp(SPECS[j].type, SPECS[i].type))
            return 0;
    return m->many_types || type_seen(m, SPECS[i].type);
}

/* The statements of this run, in order, for the tables that exist. */
static int plan(match_t *m)
{
    int rc = 0;
    /* A temporary table has no statistics until analyzed; without them the
     * planner takes the statement for a few hundred lines and joins it by
     * index lookups, one per line. */
    /* The first existing table of each statement type is fully joined with
     * its lines; the others only look for missing successes of the day. */
    for (size_t i = 0; i < NSPECS; i++) {
        if (!m->exists[i])
            continue;
        if (full_joined(m, i)) {
            rc = rc ? rc : add_stmt(m, expand(TPL_PRIMARY, &SPECS[i], NULL, NULL), 1, R_NONE);
            rc = rc ? rc : add_stmt(m, expand(TPL_LISTED_BEFORE, &SPECS[i], NULL, NULL), 1, R_NONE);
        } else
            rc = rc ? rc
                    : add_stmt(m, expand(TPL_MISSING_CHANNEL, &SPECS[i], NULL, NULL), 1, R_NONE);
    }
    /* Lines of a type no existing table takes. */
    char unknown[512] = "";
    size_t ul = 0;
    {
        int any = m->many_types;
        for (int t = 0; t < m->ntypes_seen && !any; t++) {
            int known = 0;
            for (size_t i = 0; i < NSPECS; i++)
                known |= m->exists[i] && !strcmp(SPECS[i].type, m->types_seen[t]);
            any |= !known;
        }
        if (any) {
            ul += (size_t)snprintf(unknown + ul, sizeof unknown - ul,
                                   "INSERT INTO recon_found (" FOUND_COLS
                                   ") SELECT 'UNMATCHED', " LINE_COLS
                                   ", NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL "
                                   "FROM recon_stage l WHERE l.type <> ALL ('{");
            int n = 0;
            for (size_t i = 0; i < NSPECS; i++)
                if (m->exists[i] && ul < sizeof unknown - 40)
                    ul += (size_t)snprintf(unknown + ul, sizeof unknown - ul, "%s%s",
                                           n++ ? "," : "", SPECS[i].type);
            snprintf(unknown + ul, sizeof unknown - ul, "}'::text[])");
            rc = rc ? rc : add_stmt(m, strdup(unknown), 0, R_NONE);
        }
    }
    /* Only the small table of findings is analyzed (the statement's lines
     * need no statistics: a full join is always a hash or merge join), so
     * the fallbacks look markers up by index instead of hashing a table. */
    rc = rc ? rc : add_stmt(m, strdup("ANALYZE recon_found"), 0, R_NONE);
    /* Lines left: every table of their type on our number (any day), then on
     * the channel's reference. */
    for (size_t i = 0; i < NSPECS; i++)
        if (m->exists[i])
            rc = rc ? rc
                    : add_stmt(m, expand(TPL_MARKERS, &SPECS[i], SPECS[i].ref, "paycore_ref"), 1,
                               R_NONE);
    for (size_t i = 0; i < NSPECS; i++)
        if (m->exists[i])
            rc = rc ? rc
                    : add_stmt(m, expand(TPL_MARKERS, &SPECS[i], SPECS[i].txn, "channel_ref"), 1,
                               R_NONE);
    rc = rc ? rc : add_stmt(m, strdup(SQL_UNMATCHED_COUNT), 0, R_UNMATCHED);
    rc = rc ? rc : add_stmt(m, strdup(SQL_UNMATCHED_MONEY), 0, R_NONE);
    rc = rc ? rc : add_stmt(m, strdup(SQL_NOT_MISSING), 0, R_NONE);
    if (m->status_changes)
        rc = rc ? rc : add_stmt(m, strdup(SQL_SUPERSEDED), 0, R_NONE);
    rc = rc ? rc : add_stmt(m, strdup(SQL_REPEATED), 1, R_NONE);
    for (size_t i = 0; i < NSPECS; i++)
        if (full_joined(m, i))
            rc = rc ? rc
                    : add_stmt(m, expand(TPL_ADJUSTED_LISTED, &SPECS[i], NULL, NULL), 1, R_NONE);
    rc = rc ? rc : add_stmt(m, strdup(SQL_CONTRADICTED), 1, R_NONE);
    rc = rc ? rc : add_stmt(m, strdup(SQL_UPSERT), 1, R_UPSERT);
    rc = rc ? rc : add_stmt(m, strdup(SQL_RESOLVE_CARRIED_ELSEWHERE), 1, R_NONE);
    rc = rc ? rc : add_stmt(m, strdup(SQL_CLOSE_STALE), 1, R_CLOSED);
    rc = rc ? rc : add_stmt(m, strdup(SQL_CARRIED_CLEAR), 1, R_NONE);
    rc = rc ? rc : add_stmt(m, strdup(SQL_CARRIED_ADD), 1, R_NONE);
    rc = rc ? rc : add_stmt(m, strdup(SQL_CARRIED_RESOLVE), 1, R_NONE);
    return rc;
}

/* ---------- reading the statement ---------- */

static int buf_reserve(buf_t *b, size_t add)
{
    if (b->len + add + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 1 << 16;
    while (cap < b->len + add + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
        return PC_ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

static int put_raw(buf_t *b, const char *s, size_t n)
{
    if (buf_reserve(b, n) < 0)
        return PC_ENOMEM;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
    return 0;
}

/* Appends an integer's digits. */
static int put_digits(buf_t *b, int64_t v)
{
    char tmp[24];
    int n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (buf_reserve(b, 22) < 0)
        return PC_ENOMEM;
    char *o = b->p + b->len;
    if (v < 0)
        *o++ = '-';
    while (n)
        *o++ = tmp[--n];
    *o = 0;
    b->len = (size_t)(o - b->p);
    return 0;
}

/* A field of COPY's text format: backslash, tab and line ends escaped (the
 * reader let no other control character through). */
static int put_copy_field(buf_t *b, const char *s, char after)
{
    size_t n = strlen(s);
    if (buf_reserve(b, n * 2 + 1) < 0)
        return PC_ENOMEM;
    char *o = b->p + b->len;
    for (size_t i = 0; i < n; i++) {
        switch (s[i]) {
        case '\\':
            *o++ = '\\';
            *o++ = '\\';
            break;
        case '\t':
            *o++ = '\\';
            *o++ = 't';
            break;
        case '\n':
            *o++ = '\\';
            *o++ = 'n';
            break;
        case '\r':
            *o++ = '\\';
            *o++ = 'r';
            break;
        default:
            *o++ = s[i];
        }
    }
    *o++ = after;
    *o = 0;
    b->len = (size_t)(o - b->p);
    return 0;
}

static int put_copy_int(buf_t *b, int64_t v, char after)
{
    if (put_digits(b, v) < 0)
        return PC_ENOMEM;
    return put_raw(b, &after, 1);
}

static int copy_line(buf_t *b, const pc_recon_line_t *l)
{
    if (put_copy_int(b, l->row, '\t') < 0 || put_copy_field(b, l->channel_ref, '\t') < 0 ||
        put_copy_field(b, l->paycore_ref, '\t') < 0 || put_copy_field(b, l->type, '\t') < 0 ||
        put_copy_int(b, l->amount, '\t') < 0 || put_copy_field(b, l->currency, '\t') < 0 ||
        put_copy_int(b, l->fee, '\t') < 0 || put_copy_field(b, l->status, '\t') < 0 ||
        put_copy_int(b, l->time_s, '\n') < 0)
        return PC_ENOMEM;
    return 0;
}

/* An element of an array literal: always quoted, with the two characters
 * that need it escaped. */
static int put_array_text(buf_t *b, int first, const char *s)
{
    size_t n = strlen(s);
    if (buf_reserve(b, n * 2 + 3) < 0)
        return PC_ENOMEM;
    char *o = b->p + b->len;
    if (!first)
        *o++ = ',';
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\')
            *o++ = '\\';
        *o++ = s[i];
    }
    *o++ = '"';
    *o = 0;
    b->len = (size_t)(o - b->p);
    return 0;
}

static int put_array_int(buf_t *b, int first, int64_t v)
{
    if (!first && put_raw(b, ",", 1) < 0)
        return PC_ENOMEM;
    return put_digits(b, v);
}

/* Keeps a repeated line for the findings; a full batch becomes a
 * statement. */
static int keep_duplicate(match_t *m, const pc_recon_line_t *l)
{
    buf_t *c = m->dcol;
    int first = m->ndups == 0;
    for (int i = 0; first && i < DUP_COLS; i++) {
        c[i].len = 0;
        if (put_raw(&c[i], "{", 1) < 0)
            return PC_ENOMEM;
    }
    if (put_array_int(&c[0], first, l->row) < 0 ||
        put_array_text(&c[1], first, l->channel_ref) < 0 ||
        put_array_text(&c[2], first, l->paycore_ref) < 0 ||
        put_array_text(&c[3], first, l->type) < 0 || put_array_int(&c[4], first, l->amount) < 0 ||
        put_array_text(&c[5], first, l->currency) < 0 || put_array_int(&c[6], first, l->fee) < 0 ||
        put_array_text(&c[7], first, l->status) < 0 || put_array_int(&c[8], first, l->time_s) < 0)
        return PC_ENOMEM;
    return ++m->ndups == DUP_BATCH ? 1 : 0;
}

static int flush_duplicates(match_t *m)
{
    if (m->ndups == 0)
        return 0;
    const char *p[DUP_COLS];
    for (int i = 0; i < DUP_COLS; i++) {
        if (put_raw(&m->dcol[i], "}", 1) < 0)
            return PC_ENOMEM;
        p[i] = m->dcol[i].p;
    }
    m->ndups = 0;
    return add_stmt_params(m, strdup(SQL_LOAD_DUPLICATES), DUP_COLS, p, R_NONE);
}

static void note_type(match_t *m, const char *type)
{
    if (m->many_types || type_seen(m, type))
        return;
    if (m->ntypes_seen == (int)(sizeof m->types_seen / sizeof m->types_seen[0])) {
        m->many_types = 1;
        return;
    }
    snprintf(m->types_seen[m->ntypes_seen++], sizeof m->types_seen[0], "%s", type);
}

/* COPY asks for data: up to COPY_CHUNK_LINES lines read, checked and
 * written in COPY's text format, hashed on the way. */
static int fill_chunk(void *data, const char **buf, size_t *len)
{
    match_t *m = data;
    if (m->status)
        return -1;
    m->chunk.len = 0;
    pc_recon_line_t l;
    char err[200];
    int n = 0;
    /* A chunk of lines to match; repeated lines only go to the findings, so
     * reading goes on until there is something to send or nothing left. */
    while (!m->eof && n < COPY_CHUNK_LINES) {
        int rc = pc_recon_csv_next(m->csv, &l, err, sizeof err);
        if (rc == 0) {
            m->eof = 1;
            break;
        }
        if (rc < 0) {
            if (rc == PC_ENOMEM)
                set_error(m, PC_ENOMEM, "out of memory reading the statement");
            else
                set_error(m, PC_EINVAL, "statement %s", err);
            return -1;
        }
        m->res.lines++;
        note_type(m, l.type);
        m->status_changes += l.status_changed;
        if (l.duplicate) {
            m->res.duplicate_lines++;
            int full = keep_duplicate(m, &l);
            if (full < 0 || (full && flush_duplicates(m) < 0)) {
                set_error(m, PC_ENOMEM, "out of memory reading the statement");
                return -1;
            }
            continue;
        }
        if (copy_line(&m->chunk, &l) < 0) {
            set_error(m, PC_ENOMEM, "out of memory reading the statement");
            return -1;
        }
        n++;
    }
    size_t off = pc_recon_csv_offset(m->csv);
    EVP_DigestUpdate(m->sha, m->text + m->hashed, off - m->hashed);
    m->hashed = off;
    if (n == 0)
        return 0;
    *buf = m->chunk.p;
    *len = m->chunk.len;
    return 1;
}

/* ---------- running the statements ---------- */

static void run_next(match_t *m);
static void phase_done(match_t *m);

static void stmt_cb(void *data, int status, pc_recon_res_t *res, const char *error)
{
    match_t *m = data;
    const stmt_t *st = &m->stmts[m->next];
    if (status) {
        set_error(m, status == PC_EIO ? PC_EIO : PC_EUNAVAIL, "%s", error ? error : "failed");
        pc_log_error("recon.match_failed", "run %lld statement %d: %s", (long long)m->run_id,
                     m->next, m->res.error);
        finish(m);
        return;
    }
    switch (st->result) {
    case R_LOCK:
        if (pc_recon_res_rows(res) == 0) {
            set_error(m, PC_ECONFLICT, "the run is not this attempt's any more");
            finish(m);
            return;
        }
        break;
    case R_EXISTS:
        for (int i = 0; i < pc_recon_res_rows(res) && i < (int)NSPECS; i++)
            m->exists[i] = pc_recon_res_val(res, i, "e")[0] == 't';
        break;
    case R_UNMATCHED:
        m->res.unmatched_lines = pc_recon_res_i64(res, 0, "n");
        break;
    case R_UPSERT:
        for (int i = 0; i < pc_recon_res_rows(res); i++) {
            int k = pc_recon_kind_parse(pc_recon_res_val(res, i, "kind"));
            if (k < 0)
                continue;
            m->res.found[k] = pc_recon_res_i64(res, i, "found");
            m->res.added[k] = pc_recon_res_i64(res, i, "added");
            m->res.to_repair += pc_recon_res_i64(res, i, "to_repair");
        }
        break;
    case R_CLOSED:
        m->res.closed = pc_recon_res_affected(res);
        break;
    case R_DONE:
        if (pc_recon_res_affected(res) != 1) {
            set_error(m, PC_ECONFLICT, "another attempt took the day over");
            finish(m);
            return;
        }
        break;
    case R_NONE:
        break;
    }
    m->next++;
    run_next(m);
}

/* One statement at a time, on the match's own connection. */
static void run_next(match_t *m)
{
    if (m->next == m->nstmts) {
        phase_done(m);
        return;
    }
    const stmt_t *st = &m->stmts[m->next];
    const char *const *p =
        st->params ? (const char *const *)st->params : (st->nparams ? m->kparams : NULL);
    if (pc_recon_conn_query(m->conn, st->sql, st->nparams, p, stmt_cb, m) < 0) {
        set_error(m, PC_EUNAVAIL, "the database connection failed");
        finish(m);
    }
}

/* The run's row: DONE with what was found. */
static int add_record(match_t *m)
{
    char counts[512] = "{";
    size_t cl = 1;
    int64_t added = 0;
    for (int k = 0; k < PC_RECON_KIND_COUNT; k++) {
        added += m->res.added[k];
        if (m->res.found[k])
            cl += (size_t)snprintf(counts + cl, sizeof counts - cl, "%s\"%s\":%lld",
                                   cl > 1 ? "," : "", KIND_NAMES[k], (long long)m->res.found[k]);
    }
    snprintf(counts + cl, sizeof counts - cl, "}");
    char run[24], att[16], lines[24], dups[24], unm[24], add[24];
    snprintf(run, sizeof run, "%lld", (long long)m->run_id);
    snprintf(att, sizeof att, "%d", m->attempt);
    snprintf(lines, sizeof lines, "%lld", (long long)m->res.lines);
    snprintf(dups, sizeof dups, "%lld", (long long)m->res.duplicate_lines);
    snprintf(unm, sizeof unm, "%lld", (long long)m->res.unmatched_lines);
    snprintf(add, sizeof add, "%lld", (long long)added);
    const char *p[] = {run, att, lines, dups, unm, m->res.sha256, add, counts};
    int rc = add_stmt_params(m, strdup(SQL_DONE), 8, p, R_DONE);
    return rc ? rc : add_stmt_params(m, strdup("COMMIT"), 0, NULL, R_NONE);
}

static void copied_cb(void *data, int status, pc_recon_res_t *res, const char *error)
{
    match_t *m = data;
    (void)res;
    if (status || m->status) {
        set_error(m, status == PC_EIO ? PC_EIO : PC_EUNAVAIL, "loading the statement: %s",
                  error ? error : "failed");
        finish(m);
        return;
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    EVP_DigestFinal_ex(m->sha, md, &mdlen);
    for (unsigned i = 0; i < mdlen && i < 32; i++)
        snprintf(m->res.sha256 + 2 * i, 3, "%02x", md[i]);
    if (flush_duplicates(m) < 0 || plan(m) < 0) {
        set_error(m, PC_ENOMEM, "out of memory planning the match");
        finish(m);
        return;
    }
    m->phase = P_MATCH;
    run_next(m);
}

static void phase_done(match_t *m)
{
    if (m->phase == P_SETUP) {
        /* Set up: send the statement's lines. */
        if (pc_recon_conn_copy(m->conn, SQL_COPY, fill_chunk, copied_cb, m) < 0) {
            set_error(m, PC_EUNAVAIL, "the database connection failed");
            finish(m);
        }
        return;
    }
    if (m->phase == P_MATCH) {
        /* Matched: record the run and commit, in the same transaction. */
        if (add_record(m) < 0) {
            set_error(m, PC_ENOMEM, "out of memory recording the run");
            finish(m);
            return;
        }
        m->phase = P_RECORD;
        run_next(m);
        return;
    }
    finish(m); /* committed */
}

/* ---------- the transaction ---------- */

static void connected_cb(void *data, int status, pc_recon_res_t *res, const char *error)
{
    match_t *m = data;
    (void)res;
    if (status) {
        set_error(m, PC_EUNAVAIL, "cannot connect to the database: %s", error ? error : "");
        finish(m);
        return;
    }
    if (m->status) {
        /* A header that cannot be read: answered now that we are called back. */
        finish(m);
        return;
    }
    char mem[32], timeout[24], run[24], att[16], tables[256] = "{";
    size_t tl = 1;
    snprintf(mem, sizeof mem, "%dMB", m->work_mem_mb);
    snprintf(timeout, sizeof timeout, "%lld", (long long)m->timeout_ms);
    snprintf(run, sizeof run, "%lld", (long long)m->run_id);
    snprintf(att, sizeof att, "%d", m->attempt);
    for (size_t i = 0; i < NSPECS; i++)
        tl +=
            (size_t)snprintf(tables + tl, sizeof tables - tl, "%s%s", i ? "," : "", SPECS[i].table);
    snprintf(tables + tl, sizeof tables - tl, "}");
    const char *pc[] = {m->work_mem_mb > 0 ? mem : NULL, m->timeout_ms > 0 ? timeout : NULL};
    const char *pl[] = {run, att};
    const char *pt[] = {tables};
    /* JIT compiling costs more than it saves on these one-off joins. */
    int rc = add_stmt_params(m, strdup("BEGIN"), 0, NULL, R_NONE);
    rc = rc ? rc
            : add_stmt_params(m,
                              strdup("SELECT set_config('jit', 'off', true), CASE WHEN $1::text "
                                     "IS NULL THEN '' ELSE set_config('work_mem', $1::text, "
                                     "true) END, CASE WHEN $2::text IS NULL THEN '' ELSE "
                                     "set_config('statement_timeout', $2::text, true) END"),
                              2, pc, R_NONE);
    rc = rc ? rc : add_stmt_params(m, strdup(SQL_LOCK), 2, pl, R_LOCK);
    rc = rc ? rc
            : add_stmt_params(m,
                              strdup("SELECT to_regclass(t) IS NOT NULL AS e FROM "
                                     "unnest($1::text[]) WITH ORDINALITY AS u(t, o) ORDER BY o"),
                              1, pt, R_EXISTS);
    rc = rc ? rc : add_stmt_params(m, strdup(SQL_STAGE), 0, NULL, R_NONE);
    rc = rc ? rc : add_stmt_params(m, strdup(SQL_FOUND), 0, NULL, R_NONE);
    if (rc < 0) {
        set_error(m, PC_ENOMEM, "out of memory");
        finish(m);
        return;
    }
    m->phase = P_SETUP;
    run_next(m);
}

int pc_recon_match(uv_loop_t *loop, const char *db_url, const pc_recon_match_opts_t *o,
                   const char *csv, size_t len, pc_recon_match_cb cb, void *data)
{
    int64_t day;
    if (!loop || !db_url || !o || !cb || !o->channel_id || !o->date || o->run_id <= 0 ||
        o->attempt <= 0 || strlen(o->channel_id) == 0 || strlen(o->channel_id) > 32 ||
        strspn(o->channel_id, "abcdefghijklmnopqrstuvwxyz0123456789_") != strlen(o->channel_id) ||
        pc_recon_parse_date(o->date, &day) < 0 || o->nfees > PC_RECON_MAX_FEES ||
        (o->nfees && !o->fees))
        return PC_EINVAL;
    for (size_t i = 0; i < o->nfees; i++)
        if (!pc_ledger_currency_ok(o->fees[i].currency) || o->fees[i].rate_bp < 0 ||
            o->fees[i].rate_bp > 10000 || o->fees[i].fixed < 0)
            return PC_EINVAL;
    match_t *m = calloc(1, sizeof *m);
    if (!m)
        return PC_ENOMEM;
    m->loop = loop;
    m->cb = cb;
    m->data = data;
    m->text = csv;
    m->len = len;
    m->run_id = o->run_id;
    m->attempt = o->attempt;
    m->work_mem_mb = o->work_mem_mb;
    m->timeout_ms = o->statement_timeout_ms;
    snprintf(m->channel_id, sizeof m->channel_id, "%s", o->channel_id);
    snprintf(m->date, sizeof m->date, "%s", o->date);
    char err[200];
    int rc = pc_recon_csv_open(csv, len, &m->csv, err, sizeof err);
    if (rc == PC_EINVAL) {
        /* Reported through the callback like any other bad statement. */
        set_error(m, PC_EINVAL, "statement %s", err);
    } else if (rc < 0) {
        match_free(m);
        return rc;
    }
    m->sha = EVP_MD_CTX_new();
    if (!m->sha || EVP_DigestInit_ex(m->sha, EVP_sha256(), NULL) != 1) {
        match_free(m);
        return PC_ENOMEM;
    }
    /* The run's constants ($1..$6 of every generated statement). */
    json_t *fees = json_object();
    for (size_t i = 0; fees && i < o->nfees; i++)
        json_object_set_new(
            fees, o->fees[i].currency,
            json_pack("[I, I]", (json_int_t)o->fees[i].rate_bp, (json_int_t)o->fees[i].fixed));
    m->fees = fees ? json_dumps(fees, JSON_COMPACT) : NULL;
    json_decref(fees);
    if (!m->fees) {
        match_free(m);
        return PC_ENOMEM;
    }
    time_t from = (time_t)day, to = (time_t)(day + 86400);
    struct tm tf, tt;
    gmtime_r(&from, &tf);
    gmtime_r(&to, &tt);
    snprintf(m->kvals[0], sizeof m->kvals[0], "%s", m->channel_id);
    strftime(m->kvals[1], sizeof m->kvals[1], "%Y-%m-%dT%H:%M:%SZ", &tf);
    strftime(m->kvals[2], sizeof m->kvals[2], "%Y-%m-%dT%H:%M:%SZ", &tt);
    snprintf(m->kvals[4], sizeof m->kvals[4], "%lld", (long long)o->run_id);
    snprintf(m->kvals[5], sizeof m->kvals[5], "%d", o->attempt);
    for (int i = 0; i < NK; i++)
        m->kparams[i] = m->kvals[i];
    m->kparams[3] = m->fees;
    /* With a header that cannot be read the connection only serves to
     * answer later, as the contract says. */
    m->conn = pc_recon_conn_open(loop, db_url, o->host, o->hostaddr, connected_cb, m);
    if (!m->conn) {
        match_free(m);
        return PC_EUNAVAIL;
    }
    return 0;
}
