#include "monitor/alerts.h"
#include "acquiring/trade_state.h"
#include "channel/client.h"
#include "channel/config.h"
#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"
#include "http/client.h"
#include "notify/notifier.h"
#include "refund/refund.h"
#include "rules/rules.h"
#include "settlement/settlement.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_RETRIES 16

typedef struct hook_post hook_post_t;

struct pc_alerts {
    pc_app_t *app;
    uv_timer_t timer;
    pc_http_client_t *http;
    int64_t retry_ms[MAX_RETRIES]; /* alerts.webhook_retry_ms */
    int nretry;
    hook_post_t *posts; /* webhook posts not yet answered with 2xx */
    int stopping;
    /* The last check's facts are not in yet: under a slow database the
     * next check is skipped rather than queued behind it. */
    int checking;
    /* The oldest overdue notification at the last check ("" none). */
    char overdue_event[40];
    /* The last check's overdue seconds and count of due events (-1: no
     * check yet on this node). */
    long long overdue_prev, due_prev;
    struct pc_notifier *notifier; /* this node's, when watched */
};

/* One event for the ops webhook, posted until it answers 2xx or the retries
 * (alerts.webhook_retry_ms) are spent: a page lost to one failed POST (the
 * receiver restarting, a network blip) reached nobody, and the alert never
 * paged again while it stood. */
struct hook_post {
    pc_alerts_t *a;
    char *text;
    char what[160];
    char alert_id[24]; /* a page (raised, grew): recorded as taken (paged_at) */
    long long count;
    int attempts;
    uv_timer_t timer;
    hook_post_t *next;
};

typedef struct {
    pc_alerts_t *a;
    char kind[48], subject[96], message[256];
    long long count;
} raise_t;

static void hook_closed(uv_handle_t *h)
{
    hook_post_t *p = h->data;
    free(p->text);
    free(p);
}

static void hook_release(hook_post_t *p)
{
    for (hook_post_t **q = &p->a->posts; *q; q = &(*q)->next)
        if (*q == p) {
            *q = p->next;
            break;
        }
    uv_close((uv_handle_t *)&p->timer, hook_closed);
}

static void hook_send(hook_post_t *p);

/* A webhook request's deadline and connect timeout. */
#define HOOK_TIMEOUT_MS 5000
#define HOOK_CONNECT_MS 2000

/* How long the node that posts a page keeps it to itself: its retries
 * (alerts.webhook_retry_ms) and two checks more; each retry it schedules
 * keeps it longer if need be (hook_failed: attempts that ran to their
 * deadline). */
static int64_t page_hold_ms(const pc_alerts_t *a)
{
    int64_t ms = 2 * pc_config_int(a->app->cfg, "alerts.check_ms");
    for (int i = 0; i < a->nretry; i++)
        ms += a->retry_ms[i];
    return ms;
}

static void hook_retry(uv_timer_t *t)
{
    hook_send(t->data);
}

static void hook_failed(hook_post_t *p, const char *why)
{
    pc_alerts_t *a = p->a;
    if (a->stopping || p->attempts > a->nretry) {
        pc_log_error("alerts.webhook_failed", "ops webhook: %s for %s; given up after %d attempts",
                     why, p->what, p->attempts);
        hook_release(p);
        return;
    }
    int64_t wait = a->retry_ms[p->attempts - 1];
    pc_log_error("alerts.webhook_failed", "ops webhook: %s for %s; again in %lld ms", why, p->what,
                 (long long)wait);
    if (p->alert_id[0]) {
        /* No other node posts it while this one still tries. */
        char ms[24];
        snprintf(ms, sizeof ms, "%lld",
                 (long long)(wait + HOOK_TIMEOUT_MS +
                             2 * pc_config_int(a->app->cfg, "alerts.check_ms")));
        const char *q[] = {p->alert_id, ms};
        pc_db_query(a->app->db,
                    "UPDATE alerts SET page_due_at = greatest(page_due_at, now() + $2::bigint * "
                    "interval '1 millisecond') WHERE alert_id = $1::bigint AND paged_at IS NULL",
                    2, q, NULL, NULL);
    }
    uv_timer_start(&p->timer, hook_retry, (uint64_t)wait, 0);
}

static void webhook_done(void *data, const pc_http_response_t *resp)
{
    hook_post_t *p = data;
    if (resp->error == PC_HTTP_OK && resp->status / 100 == 2) {
        if (p->alert_id[0]) {
            /* Taken: no node posts it again (unless it grows past count). */
            char n[24];
            snprintf(n, sizeof n, "%lld", p->count);
            const char *q[] = {p->alert_id, n};
            pc_db_query(p->a->app->db,
                        "UPDATE alerts SET paged_at = now() WHERE alert_id = $1::bigint AND "
                        "status = 'ACTIVE' AND last_count <= $2::bigint",
                        2, q, NULL, NULL);
        }
        hook_release(p);
        return;
    }
    char why[96];
    snprintf(why, sizeof why, "answered %d (%s)", resp->status, pc_http_strerror(resp->error));
    hook_failed(p, why);
}

static void hook_send(hook_post_t *p)
{
    pc_alerts_t *a = p->a;
    const char *url = pc_config_str(a->app->cfg, "alerts.webhook_url");
    p->attempts++;
    if (!url[0] || !a->http) {
        hook_failed(p, "no webhook");
        return;
    }
    const char *hdrs[] = {"Content-Type: application/json"};
    pc_http_request_t req = {.method = "POST",
                             .url = url,
                             .headers = hdrs,
                             .header_count = 1,
                             .body = p->text,
                             .body_len = strlen(p->text),
                             .timeout_ms = HOOK_TIMEOUT_MS,
                             .connect_timeout_ms = HOOK_CONNECT_MS};
    int rc = pc_http_client_request(a->http, &req, webhook_done, p);
    if (rc)
        hook_failed(p, pc_strerror(rc));
}

/* POSTs an event about an alert to alerts.webhook_url, when set. */
static void announce(pc_alerts_t *a, const char *event, const char *alert_id, const char *kind,
                     const char *subject, const char *message, long long count)
{
    const char *url = pc_config_str(a->app->cfg, "alerts.webhook_url");
    if (!url[0] || !a->http || a->stopping)
        return;
    json_t *body = json_pack("{s:s,s:s,s:s,s:s,s:s}", "event", event, "kind", kind, "subject",
                             subject, "message", message, "alert_id", alert_id);
    if (count > 0)
        json_object_set_new(body, "count", json_integer(count));
    hook_post_t *p = calloc(1, sizeof *p);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!p || !text) {
        pc_log_error("alerts.webhook_failed", "ops webhook not called for %s %s %s: out of memory",
                     event, kind, subject);
        free(p);
        free(text);
        return;
    }
    p->a = a;
    p->text = text;
    snprintf(p->what, sizeof p->what, "%s %s %s", event, kind, subject);
    if (strcmp(event, "alert.resolved") != 0) {
        snprintf(p->alert_id, sizeof p->alert_id, "%s", alert_id);
        p->count = count;
    }
    uv_timer_init(a->app->loop, &p->timer);
    p->timer.data = p;
    p->next = a->posts;
    a->posts = p;
    hook_send(p);
}

static void raised_cb(void *data, int status, pc_db_res_t *res)
{
    raise_t *r = data;
    if (status)
        pc_log_error("alerts.raise_failed",
                     "alert %s (%s) could not be recorded: %s; tried again "
                     "at the next check",
                     r->kind, r->subject, pc_strerror(status));
    for (int i = 0; status == 0 && i < pc_db_rows(res); i++) {
        /* This node inserted it, or saw it grow first: it tells the world,
         * once per growth. */
        const char *event = pc_db_get(res, i, 1);
        json_t *f = json_pack("{s:s,s:s}", "kind", r->kind, "subject", r->subject);
        pc_log_fields(PC_LOG_WARN, event, f, "%s", r->message);
        announce(r->a, event, pc_db_get(res, i, 0), r->kind, r->subject, r->message, r->count);
    }
    free(r);
}

/* Raises the alert kind/subject, or keeps it raised with msg as its message.
 * count: how many items it is about (0: not a count); an active alert whose
 * count rose since the last check is announced again (alert.grew): a new
 * duplicate payment or a new refund for ops behind an alert already up
 * pages too. */
static void raise_alert(pc_alerts_t *a, const char *kind, const char *subject, const char *msg,
                        long long count)
{
    raise_t *r = calloc(1, sizeof *r);
    r->a = a;
    snprintf(r->kind, sizeof r->kind, "%s", kind);
    snprintf(r->subject, sizeof r->subject, "%s", subject);
    snprintf(r->message, sizeof r->message, "%s", msg);
    r->count = count;
    char n[24], hold[24];
    snprintf(n, sizeof n, "%lld", count);
    snprintf(hold, sizeof hold, "%lld", (long long)page_hold_ms(a));
    const char *p[] = {kind, subject, msg, n, hold};
    /* An alert already raised keeps its row, but its message follows the
     * facts: ops reading "1 refund waits" while seven do would be misled.
     * This node's seeing it is recorded (confirmed_at: see resolve_alert).
     * The row lock orders the nodes: the second to see a growth reads the
     * count the first recorded. Returned: a new row (alert.raised) or a
     * growth (alert.grew). */
    if (pc_db_query(
            a->app->db,
            "WITH cur AS (SELECT alert_id, last_count FROM alerts WHERE kind = $1 AND subject "
            "= $2 AND status = 'ACTIVE' FOR UPDATE), upd AS (UPDATE alerts t SET message = $3, "
            "confirmed_at = now(), last_count = $4::bigint, paged_at = CASE WHEN cur.last_count "
            "< $4::bigint THEN NULL ELSE t.paged_at END, page_due_at = CASE WHEN "
            "cur.last_count < $4::bigint THEN now() + $5::bigint * interval '1 millisecond' "
            "ELSE t.page_due_at END FROM cur WHERE t.alert_id = "
            "cur.alert_id RETURNING t.alert_id, cur.last_count < $4::bigint AS grew), ins AS "
            "(INSERT INTO alerts (kind, subject, message, last_count, page_due_at) SELECT $1, "
            "$2, $3, $4::bigint, now() + $5::bigint * interval '1 millisecond' WHERE NOT EXISTS "
            "(SELECT 1 FROM cur) ON "
            "CONFLICT (kind, subject) WHERE status = 'ACTIVE' DO NOTHING RETURNING alert_id) "
            "SELECT alert_id::text, 'alert.raised' FROM ins UNION ALL SELECT alert_id::text, "
            "'alert.grew' FROM upd WHERE grew",
            5, p, raised_cb, r) < 0)
        free(r);
}

static void paged_again_cb(void *data, int status, pc_db_res_t *res)
{
    pc_alerts_t *a = data;
    for (int i = 0; status == 0 && i < pc_db_rows(res); i++) {
        /* Still being posted by this node (its retries outran the hold). */
        int posting = 0;
        for (hook_post_t *p = a->posts; p && !posting; p = p->next)
            posting = !strcmp(p->alert_id, pc_db_val(res, i, "alert_id"));
        if (posting)
            continue;
        pc_log_warn("alerts.page_again",
                    "alert %s %s was never taken by the ops webhook: posted again",
                    pc_db_val(res, i, "kind"), pc_db_val(res, i, "subject"));
        announce(a, "alert.raised", pc_db_val(res, i, "alert_id"), pc_db_val(res, i, "kind"),
                 pc_db_val(res, i, "subject"), pc_db_val(res, i, "message"),
                 pc_db_val_i64(res, i, "last_count"));
    }
}

/* Standing alerts whose page the webhook never took, once the raising
 * node's own retries are over (or it stopped): one node posts each again,
 * with its retries, and so on until the webhook takes it. */
static void page_again(pc_alerts_t *a)
{
    char hold[24];
    snprintf(hold, sizeof hold, "%lld", (long long)page_hold_ms(a));
    const char *p[] = {hold};
    pc_db_query(a->app->db,
                "UPDATE alerts t SET page_due_at = now() + $1::bigint * interval '1 "
                "millisecond' WHERE t.alert_id IN (SELECT alert_id FROM alerts WHERE status = "
                "'ACTIVE' AND paged_at IS NULL AND page_due_at <= now() ORDER BY page_due_at "
                "LIMIT 10 FOR UPDATE SKIP LOCKED) RETURNING t.alert_id::text AS alert_id, t.kind, "
                "t.subject, t.message, t.last_count",
                1, p, paged_again_cb, a);
}

static void resolved_cb(void *data, int status, pc_db_res_t *res)
{
    pc_alerts_t *a = data;
    if (status)
        pc_log_error("alerts.check_failed", "resolving alerts failed: %s", pc_strerror(status));
    for (int i = 0; status == 0 && i < pc_db_rows(res); i++) {
        pc_log_info("alert.resolved", "%s %s resolved", pc_db_get(res, i, 0), pc_db_get(res, i, 1));
        announce(a, "alert.resolved", pc_db_get(res, i, 2), pc_db_get(res, i, 0),
                 pc_db_get(res, i, 1), "the condition cleared", 0);
    }
}

/* An alert about what every node reads alike (database facts) is resolved
 * by the first node that finds the condition gone. One about what a node
 * sees on its own (local: a channel's health, its rules) is resolved only
 * once no node has confirmed it for two and a half check periods: a node
 * that saw nothing wrong resolved what another had just raised, which raised
 * it again at its next check, a new alert and a new page every few seconds. */
static void resolve_alert(pc_alerts_t *a, int local, const char *kind, const char *subject)
{
    char grace[24];
    snprintf(grace, sizeof grace, "%lld",
             local ? (long long)pc_config_int(a->app->cfg, "alerts.check_ms") * 5 / 2 : 0);
    const char *p[] = {kind, subject, grace};
    pc_db_query(a->app->db,
                "UPDATE alerts SET status = 'RESOLVED', resolved_at = now() WHERE kind = $1 AND "
                "subject = $2 AND status = 'ACTIVE' AND confirmed_at <= now() - $3::bigint * "
                "interval '1 millisecond' RETURNING kind, subject, alert_id::text",
                3, p, resolved_cb, a);
}

static void set_alert(pc_alerts_t *a, int on, int local, const char *kind, const char *subject,
                      const char *msg, long long count)
{
    if (on)
        raise_alert(a, kind, subject, msg, count);
    else
        resolve_alert(a, local, kind, subject);
}

/* An alert on database facts, which every node reads alike, about count
 * items (0: not a count). */
static void set(pc_alerts_t *a, int on, const char *kind, const char *subject, const char *msg,
                long long count)
{
    set_alert(a, on, 0, kind, subject, msg, count);
}

/* An alert on an age or a delay in seconds (column col of the facts) over
 * its limit (config option opt); fmt takes the oldest item's name (column
 * first), then the age and the limit. */
static void set_over(pc_alerts_t *a, pc_db_res_t *res, const char *col, const char *first,
                     const char *opt, const char *kind, const char *subject, const char *fmt)
    __attribute__((format(printf, 8, 0)));
static void set_over(pc_alerts_t *a, pc_db_res_t *res, const char *col, const char *first,
                     const char *opt, const char *kind, const char *subject, const char *fmt)
{
    long long v = pc_db_val_i64(res, 0, col), limit = pc_config_int(a->app->cfg, opt);
    char msg[320];
    snprintf(msg, sizeof msg, fmt, pc_db_val(res, 0, first), v, limit);
    set(a, v > limit, kind, subject, msg, 0);
}

/* A count alert on column col, its message fmt filled with the count and
 * column first (the oldest item's reference). */
static void set_counted(pc_alerts_t *a, pc_db_res_t *res, const char *col, const char *first,
                        const char *kind, const char *subject, const char *fmt)
    __attribute__((format(printf, 7, 0)));
static void set_counted(pc_alerts_t *a, pc_db_res_t *res, const char *col, const char *first,
                        const char *kind, const char *subject, const char *fmt)
{
    long long n = pc_db_val_i64(res, 0, col);
    char msg[320];
    snprintf(msg, sizeof msg, fmt, n, pc_db_val(res, 0, first));
    set(a, n > 0, kind, subject, msg, n);
}

static void facts_cb(void *data, int status, pc_db_res_t *res)
{
    pc_alerts_t *a = data;
    a->checking = 0;
    if (status) {
        /* Every alert on database facts is dark while this fails: the
         * gauge says so (a dashboard must not show the last good ages). */
        pc_log_error("alerts.check_failed", "reading the alert facts failed: %s",
                     pc_strerror(status));
        pc_metrics_set("pc_alerts_check_ok", "", 0);
        pc_metrics_set("pc_outbox_oldest_pending_seconds", "", -1);
        pc_metrics_set("pc_outbox_overdue_seconds", "", -1);
        pc_metrics_set("pc_ledger_oldest_queued_seconds", "", -1);
        return;
    }
    pc_metrics_set("pc_alerts_check_ok", "", 1);
    long long outbox_age = pc_db_val_i64(res, 0, "outbox_age");
    long long needs_ops = pc_db_val_i64(res, 0, "needs_ops");
    long long recon_open = pc_db_val_i64(res, 0, "recon_open");
    long long fold_age = pc_db_val_i64(res, 0, "fold_age");
    long long refunds_waiting = pc_db_val_i64(res, 0, "refunds_waiting");
    long long contradicted = pc_db_val_i64(res, 0, "contradicted");
    long long recon_failed = pc_db_val_i64(res, 0, "recon_failed");
    long long cb_unmatched = pc_db_val_i64(res, 0, "cb_unmatched");
    long long notify_failed = pc_db_val_i64(res, 0, "notify_failed");
    char msg[256];
    /* Due notifications nobody sends: the notifier is not running or
     * cannot claim (or a merchant's endpoint is so slow that its queue
     * waits past its time). Not the age of the oldest one: a merchant
     * whose endpoint is down keeps events pending, on their retry schedule,
     * for a day, and that alert stood for a day and hid a notifier that
     * then stopped for everyone. */
    /* The same event oldest at two checks in a row: one that has just
     * become first of its object's queue (the event before it finished)
     * is due since it was written, and is claimed within a poll. Or, at two
     * checks in a row, the oldest past the limit while the due events did
     * not grow fewer: a notifier that runs but falls behind claims the
     * oldest first, so the oldest changes at every check (before, that
     * never paged), while one draining a backlog (a merchant's endpoint
     * back after a day) makes it smaller. A node's first check cannot tell
     * and leaves the alert as it is (before, it resolved it). */
    const char *overdue_event = pc_db_val(res, 0, "outbox_overdue_event");
    int same = overdue_event[0] && !strcmp(overdue_event, a->overdue_event);
    snprintf(a->overdue_event, sizeof a->overdue_event, "%s", overdue_event);
    long long overdue = pc_db_val_i64(res, 0, "outbox_overdue"),
              due = pc_db_val_i64(res, 0, "outbox_due"),
              overdue_limit = pc_config_int(a->app->cfg, "alerts.outbox_age_s");
    int behind = a->overdue_prev > overdue_limit && due >= a->due_prev && due > 0;
    int first = a->overdue_prev < 0;
    a->overdue_prev = overdue;
    a->due_prev = due;
    snprintf(msg, sizeof msg,
             "the oldest due merchant notification (%.40s) has waited %lld s past its time "
             "(limit %lld s), %lld due: is the notifier running, and keeping up? (log "
             "notify.claim_failed; GET /admin/notifications?status=PENDING)",
             overdue_event, overdue, overdue_limit, due);
    if (!(first && overdue > overdue_limit))
        set(a, (same || behind) && overdue > overdue_limit, "OUTBOX_AGE", "notifications", msg, 0);
    /* A notification that gave up leaves a merchant who never heard of a
     * payment or refund: counted by merchant, so one dead endpoint pages
     * once, not per event. */
    snprintf(msg, sizeof msg,
             "%lld merchants have notifications that gave up in the last 8 days (no 'success' "
             "after every retry): GET /admin/notifications?status=FAILED, then POST "
             "/admin/notifications/{event_id}/redeliver once the endpoint answers",
             notify_failed);
    set(a, notify_failed > 0, "NOTIFICATIONS_FAILED", "notifications", msg, notify_failed);
    snprintf(msg, sizeof msg,
             "%lld payments, payouts or refunds without a final answer after every status query "
             "(needs_ops): GET /admin/needs-ops; ask the channel, then POST "
             "/admin/needs-ops/{kind}/{ref}/resolve {\"why\",\"outcome\"}",
             needs_ops);
    set(a, needs_ops > 0, "REPAIR_EXHAUSTED", "payments", msg, needs_ops);
    snprintf(msg, sizeof msg,
             "%lld final payments, payouts or refunds a channel contradicts (a success after a "
             "failure, another sum, money returned after success): GET /admin/needs-ops, then "
             "resolve each",
             contradicted);
    set(a, contradicted > 0, "CHANNEL_CONTRADICTION", "payments", msg, contradicted);
    snprintf(msg, sizeof msg,
             "%lld refunds wait for a person: held (SUSPENDED), to be returned by hand "
             "(OFFLINE), or for a day in no batch (OFFLINE, FILE) or with no result file "
             "(FILE); GET /admin/refunds?waiting=true",
             refunds_waiting);
    set(a, refunds_waiting > 0, "REFUNDS_WAITING", "refunds", msg, refunds_waiting);
    snprintf(msg, sizeof msg,
             "%lld reconciliation differences wait for ops: GET /admin/recon/diffs?status=OPEN, "
             "then POST /admin/recon/diffs/{id}/resolve {\"reason\"} for each",
             recon_open);
    set(a, recon_open > 0, "RECON_DIFFERENCES", "recon", msg, recon_open);
    /* The daily job retries a failed day until the next day's turn comes:
     * a day before yesterday is retried no more, and one that failed three
     * times will most likely fail again. Nothing else would tell anyone. */
    snprintf(msg, sizeof msg,
             "%lld reconciliation days failed and are not retried (before yesterday) or failed "
             "3 times: GET /admin/recon/runs, then POST /admin/recon/runs to run each again",
             recon_failed);
    set(a, recon_failed > 0, "RECON_FAILED", "recon", msg, recon_failed);
    snprintf(msg, sizeof msg,
             "%lld chargeback file lines opened no case (a channel debited a dispute paycore "
             "could not place): GET /admin/chargebacks/unmatched, then resolve each",
             cb_unmatched);
    set(a, cb_unmatched > 0, "CHARGEBACKS_UNMATCHED", "chargebacks", msg, cb_unmatched);
    /* Cases whose judgement nobody started by the channel's respond-by
     * date (WAIT_JUDGE: a case in judgement waits for the channel's
     * decision, past the date by design): the dispute is lost by default at
     * the channel, the merchant's money stays frozen, and an error refund
     * waiting behind the case waits too. Only ops move a case on. */
    set_counted(a, res, "cb_overdue", "cb_overdue_first", "CHARGEBACKS_OVERDUE", "chargebacks",
                "%lld chargeback cases wait past their evidence deadline with no judgement "
                "started (oldest: %.40s): GET /admin/chargebacks/{chargeback_no}, then POST "
                ".../start-judge (or .../close)");
    /* Payouts risk held for review: the merchant's money is out of its
     * balance (escrow) until ops release or reject each. Held refunds page
     * (REFUNDS_WAITING); held payouts did not. */
    /* The books do not balance (the daily check, or ops' last one, said
     * so), or the day's check could not run at all. */
    const char *ledger_bad = pc_db_val(res, 0, "ledger_bad");
    snprintf(msg, sizeof msg, "%.180s: GET /admin/ledger/check runs it again (clears once ok)",
             ledger_bad);
    set(a, ledger_bad[0] != 0, "LEDGER_CHECK_FAILED", "ledger", msg, 0);
    /* A channel's chargeback file of yesterday nobody imported: disputes
     * the channel has debited open no case, freeze nothing, and the
     * merchant can settle and withdraw that money meanwhile. */
    const char *cb_missing = pc_db_val(res, 0, "cb_files_missing");
    snprintf(msg, sizeof msg,
             "yesterday's chargeback file not imported for %.80s: log "
             "chargeback.daily_import_failed; POST /admin/chargebacks/import "
             "{\"channel_id\",\"date\"} by hand",
             cb_missing);
    set(a, cb_missing[0] != 0, "CHARGEBACK_FILES_MISSING", "chargebacks", msg, 0);
    const char *recon_missing = pc_db_val(res, 0, "recon_missing");
    snprintf(msg, sizeof msg,
             "yesterday not reconciled for %.80s: is recon.daily on on some node? (log "
             "recon.job_failed); POST /admin/recon/runs {\"channel_id\",\"date\"} by hand",
             recon_missing);
    set(a, recon_missing[0] != 0, "RECON_NOT_RUN", "recon", msg, 0);
    /* Payments risk held for review: the buyer waits at the cashier, and
     * when the trade expires the sweep fails them (a lost sale) with only an
     * info line. */
    set_counted(a, res, "reviews_waiting", "reviews_waiting_first", "REVIEWS_WAITING", "payments",
                "%lld payments have waited for review longer than alerts.review_age_s (oldest: "
                "%.40s); their trades expire meanwhile: GET /admin/reviews, then POST "
                "/admin/payments/{payment_no}/release or /reject");
    set_counted(a, res, "payouts_held", "payouts_held_first", "PAYOUTS_HELD", "payouts",
                "%lld payouts are held for review, their money taken from the merchants' "
                "balances (oldest: %.40s): GET /admin/payouts?held=true, then POST "
                "/admin/payouts/{payout_no}/release or /reject");
    /* Payments the platform must give back (paid twice, or after their trade
     * closed) whose error refund the sweep has not made: it is not running,
     * or a payment's refund cannot be written (log refund.error_refund_failed). */
    long long error_refunds_due = pc_db_val_i64(res, 0, "error_refunds_due");
    snprintf(msg, sizeof msg,
             "%lld payment(s) held for an error refund (paid twice, or after the trade closed) "
             "have none after %lld s: is the refund runner running? log "
             "refund.error_refund_failed names a payment whose refund cannot be written",
             error_refunds_due, (long long)pc_config_int(a->app->cfg, "alerts.error_refund_age_s"));
    set(a, error_refunds_due > 0, "ERROR_REFUNDS_STUCK", "payments", msg, error_refunds_due);
    /* Trades past their expiry still open: the sweep that closes them (and
     * tells the merchant, trade.closed) is not running or cannot. Buyers
     * cannot pay them (the cashier checks the expiry). */
    set_over(a, res, "close_lag", "close_first", "alerts.trade_close_lag_s", "TRADES_NOT_CLOSED",
             "trades",
             "the oldest open trade past its expiry (%.40s) expired %lld s ago and is not closed "
             "(limit %lld s): merchants are not told trade.closed; is the expiry sweep running? "
             "(log trade.sweep)");
    /* Paid trades past their refund window still TRADE_SUCCESS: the sweep
     * that finishes them (trade.finished to the merchant; refunds refused
     * from then on) is not running or cannot. */
    set_over(a, res, "finish_lag", "finish_first", "alerts.trade_close_lag_s",
             "TRADES_NOT_FINISHED", "trades",
             "the oldest paid trade past its refund window (%.40s) has waited %lld s to be "
             "finished (limit %lld s): merchants are not told trade.finished; is the finish "
             "sweep running? (log trade.sweep)");
    /* Status queries of payments, payouts and refunds in flight that are due
     * and not made: the jobs that make them (and flag for ops what they
     * cannot finish, REPAIR_EXHAUSTED) are not running or cannot claim. */
    set_over(a, res, "query_overdue", "query_oldest", "alerts.query_overdue_s", "QUERIES_OVERDUE",
             "status queries",
             "the oldest due status query (%.60s) is %lld s overdue (limit %lld s): are the "
             "repair, payout and refund jobs running? (logs repair.claim_failed, "
             "payout.claim_failed, refund.claim_failed)");
    /* Queued movements of hot accounts (ledger.h) are folded within a
     * fraction of a second; an old one means the fold job is not running or
     * cannot fold it. Balances stay right meanwhile (readers add the queue). */
    set_over(a, res, "fold_age", "fold_first", "alerts.ledger_fold_age_s", "LEDGER_FOLD_LAG",
             "ledger",
             "the oldest queued ledger movement (of %.80s) is %lld s old (limit %lld s): is the "
             "fold job running, or is this account's movement one it cannot fold? (log "
             "ledger.fold_failed; GET /admin/ledger/check)");
    pc_metrics_set("pc_outbox_oldest_pending_seconds", "", outbox_age);
    pc_metrics_set("pc_outbox_overdue_seconds", "", pc_db_val_i64(res, 0, "outbox_overdue"));
    pc_metrics_set("pc_ledger_oldest_queued_seconds", "", fold_age);
}

/* Alerts of kind about subjects no longer checked (a channel a reload
 * removed, a cap taken out) are resolved: they would stay raised for good.
 * subjects: a PostgreSQL array literal of those still checked. */
static void resolve_unchecked(pc_alerts_t *a, const char *kind, const char *subjects)
{
    const char *p[] = {kind, subjects};
    pc_db_query(a->app->db,
                "UPDATE alerts SET status = 'RESOLVED', resolved_at = now() WHERE kind = $1 AND "
                "status = 'ACTIVE' AND subject <> ALL ($2::text[]) RETURNING kind, subject, "
                "alert_id::text",
                2, p, resolved_cb, a);
}

/* Channels near a volume cap, by this node's reading of the counts: once
 * full, a channel's payments go elsewhere or fail (CHANNEL_LIMIT_EXCEEDED),
 * so ops hear of it before. Subject "<channel>:<currency>". */
static void check_channel_volume(pc_alerts_t *a)
{
    pc_app_t *app = a->app;
    const pc_channel_set_t *set_ = pc_channels_current(app->channels);
    if (!set_)
        return;
    long long pct = pc_config_int(app->cfg, "alerts.channel_volume_pct");
    /* Caps taken out, channels removed: their gauges go, not stay at the
     * last figures (set again below for what is still there). */
    pc_metrics_unset_all("pc_channel_volume_sent");
    pc_metrics_unset_all("pc_channel_volume_cap");
    char subjects[4096];
    size_t off = (size_t)snprintf(subjects, sizeof subjects, "{");
    for (size_t i = 0; i < pc_channel_set_count(set_); i++) {
        const pc_channel_t *ch = pc_channel_set_at(set_, i);
        pc_channel_volume_t v;
        for (size_t c = 0; c < ch->ncurrencies; c++) {
            if (!pc_channels_volume_at(app->channels, ch, c, (int64_t)time(NULL), &v))
                continue;
            const char *cur = v.currency;
            long long ds = v.day_sent, d = v.daily, ms = v.month_sent, m = v.monthly;
            /* Amounts stay below 2^53: times 100 fits. */
            int day_high = d && ds * 100 >= d * pct, month_high = m && ms * 100 >= m * pct;
            char subject[48], msg[320];
            snprintf(subject, sizeof subject, "%s:%s", ch->id, cur);
            snprintf(msg, sizeof msg,
                     "channel %s has sent %lld %s of its %s cap of %lld (alert at %lld %%); "
                     "when full, its payments go to other channels or fail "
                     "CHANNEL_LIMIT_EXCEEDED: GET /admin/channels",
                     ch->id, day_high ? ds : ms, cur, day_high ? "daily" : "monthly",
                     day_high ? d : m, pct);
            set_alert(a, day_high || month_high, 1, "CHANNEL_VOLUME_HIGH", subject, msg, 0);
            const char *windows[] = {"day", "month"};
            long long sent[] = {ds, ms}, cap[] = {d, m};
            for (int w = 0; w < 2; w++) {
                char labels[96];
                snprintf(labels, sizeof labels, "channel=\"%s\",currency=\"%s\",window=\"%s\"",
                         ch->id, cur, windows[w]);
                pc_metrics_set("pc_channel_volume_sent", labels, sent[w]);
                if (cap[w])
                    pc_metrics_set("pc_channel_volume_cap", labels, cap[w]);
            }
            if (off + strlen(subject) + 3 < sizeof subjects)
                off += (size_t)snprintf(subjects + off, sizeof subjects - off, "%s%s",
                                        off > 1 ? "," : "", subject);
        }
    }
    snprintf(subjects + off, sizeof subjects - off, "}");
    resolve_unchecked(a, "CHANNEL_VOLUME_HIGH", subjects);
}

static void check(uv_timer_t *t)
{
    pc_alerts_t *a = t->data;
    pc_app_t *app = a->app;
    if (app->shutting_down || a->checking)
        return;
    if (pc_config_str(app->cfg, "alerts.webhook_url")[0])
        page_again(a);
    /* Channels: what routing sees is what ops are told. */
    const pc_channel_set_t *set_ = pc_channels_current(app->channels);
    for (size_t i = 0; set_ && i < pc_channel_set_count(set_); i++) {
        const pc_channel_t *ch = pc_channel_set_at(set_, i);
        int rate = 10000, lat = 0, healthy = 1;
        pc_channel_health_get(app->channel_client, ch->id, &rate, &lat, &healthy);
        char msg[200];
        snprintf(msg, sizeof msg,
                 "channel %s success rate %d.%02d %% over %lld s is below its threshold "
                 "(failures above %lld bp): routed around",
                 ch->id, rate / 100, rate % 100, (long long)ch->alert.window_s,
                 (long long)ch->alert.failure_rate_bp);
        set_alert(a, !healthy, 1, "CHANNEL_FAILURE_RATE", ch->id, msg, 0);
        char cbmsg[256];
        int failing =
            pc_channel_callbacks_failing(app->channel_client, ch->id, cbmsg, sizeof cbmsg);
        set_alert(a, failing, 1, "CALLBACKS_REFUSED", ch->id, failing ? cbmsg : "", 0);
        char labels[96];
        snprintf(labels, sizeof labels, "channel=\"%s\"", ch->id);
        pc_metrics_set("pc_channel_healthy", labels, healthy);
    }
    /* A channel a reload removed is checked no more: its alert would stay
     * raised for good, about a channel that no longer exists (the same for
     * its failed reconciliations, RECON_FAILED, which could never be run
     * again: the run is refused 404). Channel ids
     * are [a-z0-9_] (channels/ validation), safe in an array literal. */
    char ids[4096];
    /* ("{}" without a set: nothing is then resolved as unchecked.) */
    if (pc_channel_set_ids_literal(set_, ids, sizeof ids) >= 0 && set_) {
        resolve_unchecked(a, "CHANNEL_FAILURE_RATE", ids);
        resolve_unchecked(a, "CALLBACKS_REFUSED", ids);
    }
    check_channel_volume(a);
    /* RSA2 merchants' notifications waiting for a platform key this node
     * cannot load or make: they wait, untouched, and no other alert says
     * so (their next try is always a few seconds away). */
    if (a->notifier) {
        long long waited = pc_notifier_key_wait_s(a->notifier),
                  limit = pc_config_int(app->cfg, "alerts.platform_key_wait_s");
        char kmsg[256];
        snprintf(kmsg, sizeof kmsg,
                 "notifications to RSA2 merchants have waited %lld s for the platform key, which "
                 "this node cannot load or make (log notify.platform_key): none of them is sent "
                 "until it can",
                 waited);
        set_alert(a, waited > limit, 1, "NOTIFY_NO_PLATFORM_KEY", "notifications", kmsg, 0);
    }
    /* Rules refused at the last reload. */
    json_t *st = pc_rules_status(app->rules);
    size_t i;
    json_t *r;
    json_array_foreach(st, i, r)
    {
        const char *name = json_string_value(json_object_get(r, "name"));
        const char *s = json_string_value(json_object_get(r, "status"));
        json_t *e = json_object_get(r, "last_error");
        const char *efile = json_string_value(json_object_get(e, "file"));
        const char *emsg = json_string_value(json_object_get(e, "message"));
        char msg[256];
        snprintf(msg, sizeof msg,
                 "rule %s was refused at the last reload (%s:%lld: %.100s); the old version "
                 "serves: GET /admin/rules",
                 name, efile ? efile : "?",
                 (long long)json_integer_value(json_object_get(e, "line")), emsg ? emsg : "?");
        set_alert(a, s && strcmp(s, "ok") != 0, 1, "RULE_REFUSED", name, msg, 0);
    }
    json_decref(st);
    /* The daily settlement failing run after run on this node: the
     * merchants' money stays pending. */
    char day[11] = "", first[200] = "", smsg[320];
    int failing = pc_settlement_failing(app->settlement, day, first, sizeof first);
    /* Not a count for paging: each node has its own, which would read as a
     * growth at every check of another node (alert.grew, again and again). */
    if (failing < 0)
        snprintf(smsg, sizeof smsg,
                 "settlement of %s failed at the last %d runs: %.120s; merchants' money stays "
                 "pending",
                 day, PC_SETTLEMENT_FAILING_RUNS, first);
    else
        snprintf(smsg, sizeof smsg,
                 "settlement of %s: %d statement(s) failed %d runs in a row (first: %.80s); "
                 "money stays pending: log settlement.failed, POST /admin/settlements/run",
                 day, failing, PC_SETTLEMENT_FAILING_RUNS, first);
    set_alert(a, failing != 0, 1, "SETTLEMENT_FAILING", "settlement", smsg, 0);
    char age[24];
    snprintf(age, sizeof age, "%lld",
             (long long)pc_config_int(app->cfg, "alerts.error_refund_age_s"));
    /* Yesterday's chargeback files are due imported a while
     * (alerts.chargeback_files_after_min) after chargeback.import_at, from
     * the channels whose files were imported before (a channel that
     * publishes none is not waited for), by the daily import or by hand. */
    int import_at = 0;
    pc_config_parse_time_of_day(pc_config_str(app->cfg, "chargeback.import_at"), &import_at);
    char yday[11];
    pc_utc_daily_due(0, 1, yday); /* yesterday, whatever the time */
    /* (At the latest by the day's last minute: import_at + the wait may
     * pass midnight.) */
    int64_t files_at = import_at + pc_config_int(app->cfg, "alerts.chargeback_files_after_min");
    int files_due = pc_utc_daily_due(files_at < 1439 ? (int)files_at : 1439, 1, yday);
    char review_age[24];
    snprintf(review_age, sizeof review_age, "%lld",
             (long long)pc_config_int(app->cfg, "alerts.review_age_s"));
    /* Yesterday's reconciliation likewise, alerts.recon_after_min after
     * recon.daily_at, of the channels reconciled before: with the daily job
     * off on every node (or failing before it records a run) nothing else
     * would say that a day was never reconciled. */
    int recon_at = 0;
    pc_config_parse_time_of_day(pc_config_str(app->cfg, "recon.daily_at"), &recon_at);
    int64_t runs_at = recon_at + pc_config_int(app->cfg, "alerts.recon_after_min");
    int runs_due = pc_utc_daily_due(runs_at < 1439 ? (int)runs_at : 1439, 1, yday);
    char window[24];
    snprintf(window, sizeof window, "%lld",
             (long long)pc_config_int(app->cfg, "trades.refund_window_s"));
    const char *fp[] = {age,   ids, yday, files_due ? "t" : "f", review_age, runs_due ? "t" : "f",
                        window};
    a->checking = 1; /* cleared by facts_cb, whenever it runs */
    int rc = pc_db_query(
        app->db,
        /* The oldest due notification first of its object's queue. */
        "WITH od AS (SELECT o.event_id, o.next_attempt_at AS at FROM outbox o WHERE o.status = "
        "'PENDING' AND o.next_attempt_at <= now() AND NOT EXISTS (SELECT 1 FROM outbox e WHERE "
        "e.subject = o.subject AND e.status = 'PENDING' AND e.seq < o.seq) ORDER BY "
        "o.next_attempt_at LIMIT 1), "
        /* The oldest due status query of a payment, payout or refund. */
        /* The oldest open trade past its expiry (none at a channel), and
         * the oldest queued movement of a hot ledger account. */
        "ct AS (SELECT trade_no, expires_at FROM trades t WHERE status = 'WAIT_BUYER_PAY' AND "
        "expires_at < now() AND NOT " PC_TRADE_ATTEMPT_AT_CHANNEL(
            "t") " ORDER BY expires_at "
                 "LIMIT 1), fd AS (SELECT account_id, created_at FROM ledger_balance_deltas ORDER "
                 "BY created_at LIMIT 1), "
                 /* The oldest paid trade past its refund window (none with
                  * a refund in flight, which holds it back by design). */
                 "ft AS (SELECT trade_no, paid_at + make_interval(secs => $7::bigint) AS due FROM "
                 "trades t WHERE status = 'TRADE_SUCCESS' AND paid_at <= now() - "
                 "make_interval(secs => $7::bigint) AND NOT trade_refund_in_flight_now(t.trade_no) "
                 "ORDER BY paid_at LIMIT 1), "
                 "qo AS (SELECT * FROM ((SELECT 'payment' AS kind, payment_no AS ref, "
                 "next_query_at AS at "
                 "FROM payments WHERE status IN ('PROCESSING', 'UNKNOWN') AND next_query_at IS NOT "
                 "NULL "
                 "ORDER BY next_query_at LIMIT 1) UNION ALL (SELECT 'payout', payout_no, "
                 "next_query_at FROM "
                 "payouts WHERE status IN ('ACCEPTED', 'PROCESSING') AND hold_reason IS NULL AND "
                 "next_query_at IS NOT NULL ORDER BY next_query_at LIMIT 1) UNION ALL (SELECT "
                 "'refund', "
                 "refund_no, next_query_at FROM refunds WHERE status IN ('ACCEPTED', 'PROCESSING') "
                 "AND "
                 "method IN ('API', 'PAYOUT') AND next_query_at IS NOT NULL ORDER BY next_query_at "
                 "LIMIT "
                 "1)) q ORDER BY at LIMIT 1) "
                 "SELECT coalesce((SELECT extract(epoch FROM now() - min(created_at))::bigint FROM "
                 "outbox WHERE status = 'PENDING'), 0) AS outbox_age, coalesce((SELECT "
                 "extract(epoch FROM now() - at)::bigint FROM od), 0) AS outbox_overdue, "
                 "coalesce((SELECT "
                 "event_id FROM od), '') AS outbox_overdue_event, (SELECT count(*) FROM "
                 "(SELECT 1 FROM outbox o WHERE o.status = 'PENDING' AND o.next_attempt_at <= "
                 "now() AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.subject = o.subject AND "
                 "e.status = 'PENDING' AND e.seq < o.seq) LIMIT 100000) x) AS outbox_due, "
                 "(SELECT count(DISTINCT "
                 "merchant_id) FROM outbox WHERE status = 'FAILED' AND created_at > now() - "
                 "interval "
                 "'8 days') AS notify_failed, (SELECT count(*) FROM "
                 "payments WHERE needs_ops AND status IN ('PROCESSING', 'UNKNOWN')) + (SELECT "
                 "count(*) "
                 "FROM payouts WHERE needs_ops AND status IN ('ACCEPTED', 'PROCESSING') AND "
                 "hold_reason IS NULL) + (SELECT count(*) FROM refunds WHERE needs_ops AND status "
                 "= "
                 "'PROCESSING') AS needs_ops, "
                 "(SELECT count(*) FROM recon_diffs WHERE status = 'OPEN') AS recon_open, (SELECT "
                 "count(*) FROM chargebacks WHERE status = 'WAIT_JUDGE' AND evidence_due_at < "
                 "now()) AS "
                 "cb_overdue, coalesce((SELECT chargeback_no FROM chargebacks WHERE status = "
                 "'WAIT_JUDGE' "
                 "AND evidence_due_at < now() ORDER BY "
                 "evidence_due_at LIMIT 1), '') AS cb_overdue_first, (SELECT count(*) FROM payouts "
                 "WHERE "
                 "hold_reason IS NOT NULL AND status = 'ACCEPTED') AS payouts_held, "
                 "coalesce((SELECT "
                 "payout_no FROM payouts WHERE hold_reason IS NOT NULL AND status = 'ACCEPTED' "
                 "ORDER BY "
                 "created_at LIMIT 1), '') AS payouts_held_first, coalesce((SELECT CASE WHEN "
                 "status = "
                 "'DONE' AND NOT ok THEN 'the ledger check of ' || day || ' (' || node || ') found "
                 "the "
                 "books wrong: ' || (SELECT string_agg(e.key || ' ' || e.value, ', ' ORDER BY "
                 "e.key) FROM "
                 "jsonb_each(result) e WHERE e.key <> 'ok' AND e.value <> '0'::jsonb) WHEN status "
                 "= "
                 "'FAILED' AND attempts >= 3 THEN 'the "
                 "ledger check of ' || day || ' could not run, 3 times: ' || coalesce(error, '') "
                 "END "
                 "FROM ledger_checks WHERE status = 'DONE' OR (status = 'FAILED' AND attempts >= "
                 "3) "
                 "ORDER BY day DESC LIMIT 1), '') AS "
                 "ledger_bad, coalesce((SELECT string_agg(c, ', ' ORDER BY c) FROM "
                 "unnest($2::text[]) "
                 "c WHERE $4::boolean AND NOT EXISTS (SELECT 1 FROM chargeback_imports i WHERE "
                 "i.channel_id = c AND i.business_date = $3::date AND i.completed_at IS NOT NULL) "
                 "AND "
                 "EXISTS (SELECT 1 FROM "
                 "chargeback_imports i WHERE i.channel_id = c AND i.business_date < $3::date)), "
                 "'') AS "
                 "cb_files_missing, coalesce((SELECT string_agg(c, ', ' ORDER BY c) FROM "
                 "unnest($2::text[]) c WHERE $6::boolean AND NOT EXISTS (SELECT 1 FROM recon_runs "
                 "r "
                 "WHERE r.channel_id = c AND r.business_date = $3::date) AND EXISTS (SELECT 1 FROM "
                 "recon_runs r WHERE r.channel_id = c AND r.business_date < $3::date)), '') AS "
                 "recon_missing, (SELECT count(*) FROM payments WHERE status = 'REVIEW' AND "
                 "created_at < now() - $5::int * interval '1 second') AS reviews_waiting, "
                 "coalesce((SELECT payment_no FROM payments WHERE status = 'REVIEW' AND created_at "
                 "< "
                 "now() - $5::int * interval '1 second' ORDER BY created_at LIMIT 1), '') AS "
                 "reviews_waiting_first, (SELECT "
                 "count(*) FROM recon_runs WHERE status = 'FAILED' AND channel_id = "
                 "ANY ($2::text[]) AND (attempts >= 3 OR "
                 "business_date < "
                 "(now() AT TIME ZONE 'UTC')::date - 1)) AS recon_failed, (SELECT count(*) FROM "
                 "chargeback_unmatched WHERE resolved_at IS NULL) AS "
                 "cb_unmatched, (SELECT count(*) FROM payments WHERE needs_error_refund AND status "
                 "= "
                 "'SUCCESS' AND NOT error_refund_made AND NOT needs_ops AND finished_at < now() - "
                 "$1::int "
                 "* interval '1 second' AND NOT chargeback_open_on_payment(payment_no) AND amount "
                 "> "
                 "payment_chargeback_frozen(payment_no)) AS error_refunds_due, "
                 "coalesce(extract(epoch FROM "
                 "now() - "
                 "(SELECT at FROM qo))::bigint, 0) AS query_overdue, coalesce((SELECT kind || ' ' "
                 "|| ref "
                 "FROM qo), '') AS query_oldest, coalesce(extract(epoch FROM now() - (SELECT "
                 "expires_at "
                 "FROM ct))::bigint, 0) AS close_lag, coalesce((SELECT trade_no FROM ct), '') AS "
                 "close_first, coalesce(extract(epoch FROM now() - (SELECT created_at FROM "
                 "fd))::bigint, "
                 "0) AS fold_age, coalesce((SELECT account_id FROM fd), '') AS fold_first, "
                 "coalesce(extract(epoch FROM now() - (SELECT due FROM ft))::bigint, 0) AS "
                 "finish_lag, coalesce((SELECT trade_no FROM ft), '') AS finish_first, (SELECT "
                 "count(*) FROM refunds "
                 "WHERE " PC_REFUND_WAITING_WHERE
                 ") AS refunds_waiting, (SELECT count(*) FROM payments "
                 "WHERE needs_ops AND status IN ('SUCCESS', 'FAILED')) + (SELECT count(*) FROM "
                 "payouts "
                 "WHERE needs_ops AND status IN ('SUCCESS', 'FAILED', 'RETURNED')) + (SELECT "
                 "count(*) "
                 "FROM refunds WHERE needs_ops AND status IN ('SUCCESS', 'FAILED', 'TERMINATED')) "
                 "AS "
                 "contradicted",
        7, fp, facts_cb, a);
    if (rc < 0)
        /* No connection up (PostgreSQL down): the check failed as surely as
         * when the query does; the gauges must not keep the last good ages. */
        facts_cb(a, rc, NULL);
}

static void list_alerts(pc_http_req_t *req, void *data)
{
    pc_alerts_t *a = data;
    if (pc_db_query(
            a->app->db,
            "SELECT json_build_object('alerts', coalesce(json_agg(json_build_object("
            "'alert_id', alert_id, 'kind', kind, 'subject', subject, 'status', status, "
            "'message', message, 'raised_at', to_char(raised_at AT TIME ZONE 'UTC', "
            "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), 'resolved_at', to_char(resolved_at AT TIME "
            "ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')) ORDER BY status, alert_id DESC), "
            "'[]'))::text FROM (SELECT * FROM alerts WHERE status = 'ACTIVE' OR "
            "resolved_at > now() - interval '24 hours' ORDER BY alert_id DESC LIMIT 500) "
            "x",
            0, NULL, pc_respond_json_row_cb, req) < 0)
        pc_respond_db_error(req, PC_EUNAVAIL);
}

void pc_alerts_watch_notifier(pc_alerts_t *a, struct pc_notifier *n)
{
    a->notifier = n;
}

pc_alerts_t *pc_alerts_new(pc_app_t *app)
{
    pc_alerts_t *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->app = app;
    a->overdue_prev = -1;
    a->nretry = pc_config_ms_list(app->cfg, "alerts.webhook_retry_ms", a->retry_ms, MAX_RETRIES);
    if (a->nretry < 0)
        a->nretry = 0;
    pc_http_client_opts_t o = {0};
    a->http = pc_http_client_new(app->loop, &o);
    uv_timer_init(app->loop, &a->timer);
    a->timer.data = a;
    pc_metrics_describe("pc_channel_volume_sent", PC_METRIC_GAUGE,
                        "what a channel with volume caps was sent this UTC day / month, by "
                        "currency (this node's reading of the counts)");
    pc_metrics_describe("pc_channel_volume_cap", PC_METRIC_GAUGE,
                        "a channel's volume cap per UTC day / month, by currency");
    /* Business figures: the admin listener's /metrics only. */
    pc_metrics_private("pc_channel_volume_sent");
    pc_metrics_private("pc_channel_volume_cap");
    pc_metrics_describe("pc_channel_healthy", PC_METRIC_GAUGE,
                        "1 while a channel's failure rate is under its alert threshold");
    pc_metrics_describe("pc_outbox_oldest_pending_seconds", PC_METRIC_GAUGE,
                        "age of the oldest undelivered notification");
    pc_metrics_describe("pc_outbox_overdue_seconds", PC_METRIC_GAUGE,
                        "how long the oldest due notification has waited past its time");
    pc_metrics_describe("pc_ledger_oldest_queued_seconds", PC_METRIC_GAUGE,
                        "age of the oldest queued movement of a hot ledger account (-1: unknown, "
                        "the alert check failed)");
    pc_metrics_describe("pc_alerts_check_ok", PC_METRIC_GAUGE,
                        "1 while this node's last check of the alert facts succeeded; 0: every "
                        "alert on database facts is dark");
    pc_router_add(app->admin, "GET", "/admin/alerts", list_alerts, a);
    return a;
}

void pc_alerts_start(pc_alerts_t *a)
{
    uint64_t ms = (uint64_t)pc_config_int(a->app->cfg, "alerts.check_ms");
    uv_timer_start(&a->timer, check, ms, ms);
}

void pc_alerts_stop(pc_alerts_t *a)
{
    /* Posts waiting to be retried are dropped (said in the log); those in
     * flight end with the client's close. */
    a->stopping = 1;
    for (hook_post_t *p = a->posts, *next; p; p = next) {
        next = p->next;
        if (uv_is_active((uv_handle_t *)&p->timer)) {
            pc_log_error("alerts.webhook_failed", "ops webhook: %s not delivered (stopping)",
                         p->what);
            hook_release(p);
        }
    }
    uv_timer_stop(&a->timer);
    uv_close((uv_handle_t *)&a->timer, NULL);
    if (a->http)
        pc_http_client_close(a->http, NULL, NULL);
    a->http = NULL;
}

void pc_alerts_free(pc_alerts_t *a)
{
    free(a);
}
