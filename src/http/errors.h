/* The API's error codes (api.md "Conventions") and the one table that maps each
 * to its HTTP status and wire code. Handlers return these; nothing else builds
 * error JSON. Needs nothing. */
#ifndef PC_HTTP_ERRORS_H
#define PC_HTTP_ERRORS_H

typedef enum {
    PC_API_OK = 0,
    PC_API_INVALID_REQUEST,
    PC_API_INVALID_SIGNATURE,
    PC_API_TIMESTAMP_EXPIRED,
    PC_API_NONCE_REUSED,
    PC_API_UNKNOWN_MERCHANT,
    PC_API_UNAUTHORIZED, /* admin API without a valid bearer token */
    PC_API_MERCHANT_DISABLED,
    PC_API_PRODUCT_NOT_ALLOWED,
    PC_API_NOT_FOUND,
    PC_API_METHOD_NOT_ALLOWED,
    PC_API_INVALID_STATE,
    PC_API_DUPLICATE_OUT_TRADE_NO,
    PC_API_DUPLICATE_OUT_REFUND_NO,
    PC_API_DUPLICATE_OUT_PAYOUT_NO,
    PC_API_REQUEST_IN_PROGRESS,
    PC_API_PAYLOAD_TOO_LARGE,
    PC_API_HEADERS_TOO_LARGE,
    PC_API_REQUEST_TIMEOUT,
    PC_API_IDEMPOTENCY_KEY_REUSED,
    PC_API_AMOUNT_EXCEEDS_REFUNDABLE,
    PC_API_INSUFFICIENT_BALANCE,
    PC_API_LIMIT_EXCEEDED,
    PC_API_SPLIT_EXCEEDS_AMOUNT,
    PC_API_INTERNAL,
    PC_API_UNAVAILABLE,
    PC_API_ERR_COUNT
} pc_api_err_t;

/* HTTP status for an error code. */
int pc_api_err_status(pc_api_err_t err);
/* Wire code ("INVALID_REQUEST"); static string. */
const char *pc_api_err_code(pc_api_err_t err);

#endif
