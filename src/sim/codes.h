/* The channel protocol's error codes (src/sim/PROTOCOL.md "Errors") and the
 * one table that maps each to its HTTP status and wire code, so that handlers
 * return codes and never hand-build error JSON. These are the channel's own
 * codes: they overlap with api.md's merchant codes in spelling where the
 * meaning is the same. Business declines are not errors: a declined payment is
 * a 200 answer with status FAILED and a failure object. Needs nothing. */
#ifndef PC_SIM_CODES_H
#define PC_SIM_CODES_H

typedef enum {
    PC_SIM_OK = 0,
    PC_SIM_INVALID_REQUEST,           /* 400: malformed JSON, missing or invalid field */
    PC_SIM_INVALID_SIGNATURE,         /* 401 */
    PC_SIM_TIMESTAMP_EXPIRED,         /* 401 */
    PC_SIM_NONCE_REUSED,              /* 401 */
    PC_SIM_NOT_FOUND,                 /* 404: unknown object, channel or path */
    PC_SIM_INVALID_STATE,             /* 409: the object is not in a state that allows this */
    PC_SIM_DUPLICATE_PAYMENT_NO,      /* 409: same payment_no, different content */
    PC_SIM_DUPLICATE_REFUND_NO,       /* 409 */
    PC_SIM_DUPLICATE_PAYOUT_NO,       /* 409 */
    PC_SIM_REFERENCE_IN_USE,          /* 409: a QR_BUYER code already used by another payment */
    PC_SIM_AMOUNT_EXCEEDS_REFUNDABLE, /* 422 */
    PC_SIM_INVALID_CARD,              /* 422: tokenize with a bad number or expiry */
    PC_SIM_EXPIRED,                   /* 409: completing an async payment after it expired */
    PC_SIM_UNAVAILABLE,               /* 503: shutting down, or a memory cap was reached */
    PC_SIM_TIMEOUT,                   /* 504: the answer of a request the channel "lost" */
    PC_SIM_ERR_COUNT
} pc_sim_err_t;

/* HTTP status for err. */
int pc_sim_err_status(pc_sim_err_t err);
/* Wire code ("INVALID_REQUEST"); a static string. */
const char *pc_sim_err_code(pc_sim_err_t err);

#endif
