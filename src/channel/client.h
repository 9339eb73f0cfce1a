/* paycore's side of the channel protocol (src/sim/PROTOCOL.md): pay, query,
 * refund, refund query, payout, payout query, card tokenize, daily files, and
 * verification of the channels' signed callbacks. Requests go out over
 * pc_http_client (curl multi on the loop), signed with the channel's secret
 * (the environment variable named by the channel file's secret_ref, else the
 * clearly marked demo secret "demo-secret-<channel_id>"), with the channel's
 * timeouts. A card number and CVV only pass through memory to the channel's
 * tokenize/pay endpoint: never logged, never stored.
 *
 * Every operation reports through one result type. A timeout, a transport
 * error or an unreadable answer is PC_CH_UNKNOWN — never FAILED on a guess:
 * the repair job queries the channel later. Each answer (and timeout) is
 * recorded in the channel's health (success rate, latency) shared by all
 * nodes through Redis. Needs http/client, channel/config, kv, auth/sign. */
#ifndef PC_CHANNEL_CLIENT_H
#define PC_CHANNEL_CLIENT_H
#include <jansson.h>
#include <stdint.h>
#include <uv.h>

#include "channel/config.h"
#include "kv/kv.h"

typedef struct pc_channel_client pc_channel_client_t;

typedef enum {
    PC_CH_SUCCESS = 0,
    PC_CH_PROCESSING, /* accepted, final state comes by callback or query */
    PC_CH_FAILED,     /* definitely not done (declined, refused) */
    PC_CH_UNKNOWN,    /* no usable answer (timeout, transport error, 5xx) */
    PC_CH_RETURNED,   /* payouts: paid, then sent back by the bank */
} pc_ch_status_t;

/* The outcome of any channel operation; valid during the callback only. */
typedef struct {
    pc_ch_status_t status;
    int retryable; /* FAILED only: another channel may succeed */
    char code[48]; /* failure code, e.g. "CARD_DECLINED"; "" otherwise */
    char message[160];
    char channel_txn_id[80]; /* the channel's reference, "" when unknown */
    int64_t amount;          /* as the channel reports it (0 when absent); a SUCCESS
                                always has one, above zero */
    char currency[4];        /* with amount: a SUCCESS always has one */
    int64_t fee;             /* channel fee, when reported */
    json_t *action;          /* PROCESSING payments: {"type":"REDIRECT|VA|OTC|QR",
                                "url"|"va_number"|"otc_code"|"qr_payload", "expires_at"}
                                (borrowed; NULL otherwise) */
    char card_token[80];     /* card payments/tokenize: what may be kept */
    char card_brand[24];
    char card_bin[12];
    char card_last4[8];
    uint64_t elapsed_ms;
} pc_ch_result_t;

typedef void (*pc_ch_cb)(void *data, const pc_ch_result_t *result);

/* Card data as the buyer typed it; only read during the call. */
typedef struct {
    const char *pan;
    int exp_month, exp_year;
    const char *cvv;    /* may be NULL for tokenize without CVV */
    const char *holder; /* may be NULL */
} pc_ch_card_t;

typedef struct {
    const char *channel_id;
    const char *payment_no; /* paycore's reference; the channel dedupes on it */
    int64_t amount;
    const char *currency;
    const char *method;       /* "CARD", "QUICK_PAY", "VA", ... */
    const char *card_token;   /* QUICK_PAY / AGREEMENT */
    const pc_ch_card_t *card; /* CARD */
    const char *buyer_code;   /* QR_BUYER */
    int64_t expire_seconds;   /* asynchronous methods; 0: channel default */
} pc_ch_pay_t;

typedef struct {
    const char *channel_id;
    const char *refund_no;
    const char *payment_no;
    const char *channel_txn_id; /* of the payment */
    int64_t amount;
    const char *currency;
} pc_ch_refund_t;

typedef struct {
    const char *channel_id;
    const char *payout_no;
    int64_t amount;
    const char *currency;
    const json_t *payee; /* {"type":"CARD|ACCOUNT","card_token"|"account_no","name","bank_code"} */
} pc_ch_payout_t;

/* callback_base: the URL channels call back ("http://127.0.0.1:8080"); the
 * client appends /channel-callbacks/{channel_id}. Borrows chs and kv. */
pc_channel_client_t *pc_channel_client_new(uv_loop_t *loop, pc_channels_t *chs, pc_kv_t *kv,
                                           const char *callback_base);
/* Cancels in-flight calls (their callbacks run with PC_CH_UNKNOWN), then frees
 * once handles are closed; cb may be NULL. */
void pc_channel_client_close(pc_channel_client_t *cli, void (*cb)(void *data), void *data);

/* Each returns 0 (cb runs exactly once, later) or a negative code (unknown or
 * disabled channel for pay: PC_ENOTFOUND; bad arguments: PC_EINVAL), and then
 * never calls cb. */
int pc_channel_pay(pc_channel_client_t *cli, const pc_ch_pay_t *req, pc_ch_cb cb, void *data);
int pc_channel_query_payment(pc_channel_client_t *cli, const char *channel_id,
                             const char *payment_no, pc_ch_cb cb, void *data);
/* Asks the channel to close payment_no (its channel_txn_id), which paycore
 * no longer wants (its trade closed): a FAILED answer (CLOSED, code CLOSED or
 * CLOSED_BY_REQUEST) means it will not be paid; anything else (a success, a
 * refusal: UNKNOWN; NOT_FOUND: FAILED, retryable) is for a status query to
 * settle. Not counted in the channel's health. */
int pc_channel_close_payment(pc_channel_client_t *cli, const char *channel_id,
                             const char *payment_no, const char *channel_txn_id, pc_ch_cb cb,
                             void *data);
int pc_channel_refund(pc_channel_client_t *cli, const pc_ch_refund_t *req, pc_ch_cb cb, void *data);
int pc_channel_query_refund(pc_channel_client_t *cli, const char *channel_id, const char *refund_no,
                            pc_ch_cb cb, void *data);
int pc_channel_payout(pc_channel_client_t *cli, const pc_ch_payout_t *req, pc_ch_cb cb, void *data);
int pc_channel_query_payout(pc_channel_client_t *cli, const char *channel_id, const char *payout_no,
                            pc_ch_cb cb, void *data);
/* A request may still be open, or still reach the channel, for the
 * channel's request timeout plus this margin after its send was recorded
 * (the send is recorded in a transaction that commits before the request
 * leaves). */
#define PC_CH_SEND_MARGIN_MS 1000

/* The largest answer taken from a channel call other than a file fetch
 * (which may take the client's 16 MiB). */
#define PC_CH_ANSWER_MAX_BYTES (256 * 1024)

/* For a status query's answer about an operation sent to channel_id age_ms
 * ago: how many milliseconds must pass before the answer may close it. 0 for
 * anything but PC_CH_FAILED; for a failure, until paycore's own request has
 * certainly ended (the largest request timeout this node has loaded for the
 * channel, timeouts.open_ms, plus PC_CH_SEND_MARGIN_MS; an unknown channel
 * has no request open), and for NOT_FOUND ("no record") also until
 * not_found_after_ms, for a request that left before paycore gave up to
 * arrive. After that, "no record" of an operation the channel acknowledged
 * (answered with its reference) never closes it: PC_CH_FORGOTTEN, for ops
 * (the channel purged it, or the endpoint moved; failing it released money
 * that may have been paid). */
#define PC_CH_FORGOTTEN (-1)
int64_t pc_channel_failure_wait_ms(pc_channel_client_t *cli, const char *channel_id, int64_t age_ms,
                                   const pc_ch_result_t *res, int64_t not_found_after_ms,
                                   int acknowledged);

/* Tokenizes a card for binding (QUICK_PAY); result carries token/brand/bin/last4. */
int pc_channel_tokenize(pc_channel_client_t *cli, const char *channel_id, const pc_ch_card_t *card,
                        pc_ch_cb cb, void *data);

/* Fetches a daily file ("statements" or "chargebacks") for date "YYYY-MM-DD".
 * status 0 with the body (valid during the callback), or a negative code. */
typedef void (*pc_ch_file_cb)(void *data, int status, const char *body, size_t len);
int pc_channel_fetch_file(pc_channel_client_t *cli, const char *channel_id, const char *kind,
                          const char *date, pc_ch_file_cb cb, void *data);

/* A channel's callback as verified and parsed. */
typedef enum { PC_CB_PAYMENT, PC_CB_REFUND, PC_CB_PAYOUT } pc_cb_kind_t;
typedef struct {
    pc_cb_kind_t kind;
    char ref[80];          /* paycore's payment_no / refund_no / payout_no */
    pc_ch_result_t result; /* status SUCCESS / FAILED / RETURNED, code, channel_txn_id, ... */
} pc_ch_callback_t;

/* Notes a callback to channel_id's endpoint this node took (accepted) or
 * refused (why, from peer): counted in pc_channel_callbacks_seen_total and
 * kept for pc_channel_callbacks_failing. Callbacks naming no configured
 * channel are not counted. */
void pc_channel_callback_seen(pc_channel_client_t *cli, const char *channel_id, int accepted,
                              const char *why, const char *peer);

/* 1, with a message for ops in msg, when this node refused several of the
 * channel's callbacks and took none over the last ten minutes (a rotated
 * secret, a clock off by minutes); else 0. */
int pc_channel_callbacks_failing(pc_channel_client_t *cli, const char *channel_id, char *msg,
                                 size_t len);

/* Verifies a callback's signature headers (X-Timestamp, X-Nonce, X-Signature
 * over the protocol's string) with the channel's secret, checks its
 * timestamp window, and parses the body into out. Returns 0, PC_ENOTFOUND
 * (unknown channel), PC_EINVAL (bad signature, stale timestamp or malformed
 * body; *why receives a static explanation). */
int pc_channel_verify_callback(pc_channel_client_t *cli, const char *channel_id, const char *method,
                               const char *target, const char *timestamp, const char *nonce,
                               const char *signature, const char *body, size_t len,
                               pc_ch_callback_t *out, const char **why);

/* Live health of a channel from the shared counters (over the channel's alert
 * window): {"success_rate_bp","latency_ms","attempts","failures","healthy"}.
 * Served from a per-node cache refreshed about every second. New reference. */
json_t *pc_channel_health(pc_channel_client_t *cli, const char *channel_id);
/* The same as numbers, for routing. healthy is 0 when the failure rate over
 * the window passed the channel's alert threshold (with enough attempts). */
void pc_channel_health_get(pc_channel_client_t *cli, const char *channel_id, int *success_rate_bp,
                           int *latency_ms, int *healthy);

#endif
