#include "notify/outbox.h"
#include "auth/sign.h"
#include "core/error.h"
#include "core/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const event_types[] = {
    "trade.paid",       "trade.succeeded",   "trade.closed",      "trade.finished",
    "refund.succeeded", "refund.failed",     "payout.succeeded",  "payout.failed",
    "payout.returned",  "chargeback.opened", "chargeback.judged", "chargeback.closed",
};

int pc_outbox_type_is_valid(const char *type)
{
    if (!type)
        return 0;
    for (size_t i = 0; i < sizeof event_types / sizeof event_types[0]; i++)
        if (strcmp(type, event_types[i]) == 0)
            return 1;
    return 0;
}

static void format_rfc3339(long long unix_s, char buf[32])
{
    time_t t = (time_t)unix_s;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

char *pc_outbox_payload(const char *event_id, const char *type, long long created_at,
                        const char *merchant_id, json_t *data)
{
    if (!json_is_object(data))
        return NULL;
    char ts[32];
    format_rfc3339(created_at, ts);
    /* Insertion order is kept by jansson, so the body reads in the documented
     * order; "O" takes a reference of our own, dropped with body. */
    json_t *body = json_pack("{s:s,s:s,s:s,s:O,s:s}", "event_id", event_id, "type", type,
                             "created_at", ts, "data", data, "merchant_id", merchant_id);
    if (!body)
        return NULL;
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    return text;
}

int pc_outbox_add_id(pc_db_tx_t *tx, const char *merchant_id, const char *type,
                     const char *notify_url, json_t *data, char event_id[PC_EVENT_ID_LEN + 1])
{
    if (!tx || !merchant_id || !merchant_id[0] || !pc_outbox_type_is_valid(type) ||
        !json_is_object(data))
        return PC_EINVAL;
    int has_url = notify_url && notify_url[0];
    if (has_url && strncmp(notify_url, "http://", 7) != 0 &&
        strncmp(notify_url, "https://", 8) != 0) {
        /* A stored URL no check refused when it was written (before URLs
         * were checked, or by hand): the event is kept, undelivered, rather
         * than failing the transaction that made it (every sweep round,
         * every state move of that object). */
        pc_log_error("outbox.bad_url",
                     "%s for merchant %s: notify_url is not http(s); recorded "
                     "without delivery (SKIPPED)",
                     type, merchant_id);
        has_url = 0;
        notify_url = NULL;
    }

    char hex[33];
    if (pc_random_hex(hex, sizeof hex, 16) != 0)
        return PC_EIO;
    char id[PC_EVENT_ID_LEN + 1];
    snprintf(id, sizeof id, "evt_%s", hex);

    long long now = (long long)time(NULL);
    char *payload = pc_outbox_payload(id, type, now, merchant_id, data);
    if (!payload)
        return PC_ENOMEM;
    char created[32];
    format_rfc3339(now, created);

    /* The row's created_at is the payload's, so ops and merchants see the
     * same time; next_attempt_at defaults to now(), i.e. due at commit. */
    const char *p[] = {id,
                       merchant_id,
                       type,
                       has_url ? notify_url : NULL,
                       payload,
                       created,
                       has_url ? "PENDING" : "SKIPPED"};
    int rc = pc_db_tx_query(tx,
                            "INSERT INTO outbox (event_id, merchant_id, type, notify_url, payload, "
                            "created_at, status, last_error) VALUES ($1, $2, $3, $4, $5, "
                            "$6::timestamptz, $7, CASE WHEN $7 = 'SKIPPED' THEN 'no notify_url' "
                            "END)",
                            7, p, NULL, NULL);
    free(payload);
    if (rc == 0 && event_id)
        memcpy(event_id, id, sizeof id);
    return rc;
}

int pc_outbox_add(pc_db_tx_t *tx, const char *merchant_id, const char *type, const char *notify_url,
                  json_t *data)
{
    return pc_outbox_add_id(tx, merchant_id, type, notify_url, data, NULL);
}
