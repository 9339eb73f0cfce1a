/* paysim's memory: channels, transactions (payments, refunds, payouts),
 * tokenized cards, statement and chargeback lines per business day, and the
 * log of faults paysim faked. Everything is in memory and bounded: past the
 * configured caps the oldest transactions, cards and days are forgotten first
 * (a query for a forgotten transaction answers NOT_FOUND, as a real channel
 * does past its retention). Every lookup is a hash lookup. Card numbers are
 * never stored: a card keeps only its token, brand, BIN, last four, expiry, a
 * keyed fingerprint and the outcome its number decides. Pure data structure:
 * no I/O, no clock (callers pass times). Needs the CSPRNG and HMAC of
 * auth/sign, and sim/map, sim/rng, sim/faults, sim/card, sim/format. */
#ifndef PC_SIM_STORE_H
#define PC_SIM_STORE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sim/card.h"
#include "sim/faults.h"
#include "sim/format.h"
#include "sim/map.h"
#include "sim/rng.h"
#include "sim/wire.h"

#define PC_SIM_REF_LEN 32     /* channel ids "pay_1a2b3c0000000001" plus NUL, with room */
#define PC_SIM_NO_LEN 65      /* paycore's payment_no / refund_no / payout_no: 1–64 */
#define PC_SIM_CHANNEL_LEN 33 /* channel ids: 1–32 of [a-z0-9_] */
#define PC_SIM_REFERENCE_LEN 72
#define PC_SIM_MAX_CHANNELS 64

typedef enum { PC_SIM_PAY = 0, PC_SIM_REFUND, PC_SIM_PAYOUT } pc_sim_kind_t;

typedef enum {
    PC_SIM_PROCESSING = 0,
    PC_SIM_SUCCESS,
    PC_SIM_FAILED,
    PC_SIM_CLOSED,   /* payments: closed or expired before the buyer paid */
    PC_SIM_RETURNED, /* payouts: the bank sent the money back after success */
} pc_sim_status_t;

/* "PAY", "REFUND", "PAYOUT"; static. */
const char *pc_sim_kind_name(pc_sim_kind_t k);
/* "PROCESSING", "SUCCESS", …; static. */
const char *pc_sim_status_name(pc_sim_status_t s);
bool pc_sim_status_final(pc_sim_status_t s);

typedef struct pc_sim_channel pc_sim_channel_t;

/* A tokenized card. */
typedef struct pc_sim_card {
    pc_sim_channel_t *ch;
    char token[PC_SIM_REF_LEN];
    char fingerprint[33]; /* keyed hash of the number: same card, same value */
    char brand[12];
    char bin[7];
    char last4[5];
    int exp_month, exp_year;
    pc_sim_card_rule_t rule; /* what the number decides */
    struct pc_sim_card *older, *newer;
} pc_sim_card_t;

/* One payment, refund or payout. Fields not of its kind stay zero. */
typedef struct pc_sim_txn {
    pc_sim_kind_t kind;
    pc_sim_status_t status;
    pc_sim_channel_t *ch;
    char ref[PC_SIM_REF_LEN]; /* channel_txn_id */
    char no[PC_SIM_NO_LEN];   /* paycore's number */
    char currency[4];
    int64_t amount, fee;
    int64_t created_ms, finished_ms;
    const char *failure_code; /* static strings, NULL when none */
    const char *failure_message;
    bool retryable;
    const char *callback_base; /* interned by the store; NULL: paysim's default */
    /* PAY */
    char method[16];
    char action[16];                      /* REDIRECT, VA, OTC, QR, BUYER_CONFIRM or "" */
    char reference[PC_SIM_REFERENCE_LEN]; /* what POST /sim/complete takes */
    int64_t expires_ms;
    int64_t refunded; /* refunds accepted (PROCESSING or SUCCESS) */
    bool three_ds;    /* waiting for, or passed, the challenge */
    bool dispute;     /* a chargeback follows success */
    bool has_card;
    char card_token[PC_SIM_REF_LEN];
    char brand[12], bin[7], last4[5], fingerprint[33];
    int exp_month, exp_year;
    /* REFUND */
    char parent_ref[PC_SIM_REF_LEN];
    char parent_no[PC_SIM_NO_LEN];
    /* PAYOUT */
    char payee_type[8];
    char payee_last4[5];
    char bank_code[16];
    int64_t returned_ms;
    char return_reason[16];
    /* The simulator's pending timer for this transaction (expiry or delayed
     * settlement), opaque here; cancelled when the transaction finishes or is
     * forgotten, so timers never outnumber live transactions. */
    void *timer;
    struct pc_sim_txn *older, *newer;
} pc_sim_txn_t;

/* One statement line, kept by value so that it outlives its transaction. */
typedef struct {
    char channel_ref[PC_SIM_REF_LEN];
    char paycore_ref[PC_SIM_NO_LEN];
    char currency[4];
    const char *type;   /* static */
    const char *status; /* static; what the statement shows */
    int64_t amount, fee, time_ms;
    bool hidden; /* faked as missing */
} pc_sim_line_t;

typedef struct {
    char ref[PC_SIM_REF_LEN];
    char channel_ref[PC_SIM_REF_LEN];
    char paycore_ref[PC_SIM_NO_LEN];
    char currency[4];
    char reason_code[16];
    int64_t amount, time_ms, respond_by_ms;
} pc_sim_chargeback_t;

typedef struct {
    char date[PC_SIM_DATE_LEN];
    pc_sim_line_t *lines;
    size_t nlines, lines_cap;
    pc_sim_chargeback_t *cbs;
    size_t ncbs, cbs_cap;
} pc_sim_day_t;

struct pc_sim_channel {
    char id[PC_SIM_CHANNEL_LEN];
    char secret[PC_SIM_SECRET_MAX];
    bool demo_secret;
    pc_sim_faults_t faults;
    pc_sim_rng_t rng;
    pc_sim_map_t *pays, *refunds, *payouts; /* by paycore's number */
    pc_sim_map_t *cards, *card_fps;         /* by token, by fingerprint */
    pc_sim_map_t *days;                     /* by date */
    pc_sim_nonces_t *nonces;
};

/* A fault paysim faked, for GET /sim/faked. */
typedef struct {
    uint64_t seq;
    const char *kind; /* static: TIMEOUT, SUCCESS_AFTER_TIMEOUT, LOST_CALLBACK, … */
    const char *op;   /* static: PAY, REFUND, PAYOUT, CALLBACK, STATEMENT */
    char channel_id[PC_SIM_CHANNEL_LEN];
    char channel_ref[PC_SIM_REF_LEN];
    char paycore_ref[PC_SIM_NO_LEN];
    char date[PC_SIM_DATE_LEN];    /* statement kinds: the statement's date */
    char event_id[PC_SIM_REF_LEN]; /* callback kinds */
    bool has_values;
    int64_t expected, actual; /* the true and the faked amount or fee */
    const char *expected_status, *actual_status;
    int64_t time_ms;
} pc_sim_faked_t;

typedef struct {
    size_t max_txns;   /* 0: 200000 */
    size_t max_cards;  /* 0: 100000 */
    size_t max_lines;  /* statement + chargeback lines; 0: twice max_txns */
    size_t max_faked;  /* 0: 10000 */
    size_t max_nonces; /* per channel; 0: 65536 */
    uint64_t seed;     /* base of every channel's fault stream */
    /* Called with each transaction about to be forgotten (past max_txns),
     * before it is freed; may be NULL. */
    void (*on_evict)(void *data, pc_sim_txn_t *t);
    void *on_evict_data;
} pc_sim_limits_t;

typedef struct pc_sim_store pc_sim_store_t;

/* Returns an empty store (the caller frees it with pc_sim_store_free), or
 * NULL when memory runs out or the CSPRNG fails. limits is copied. */
pc_sim_store_t *pc_sim_store_new(const pc_sim_limits_t *limits);
void pc_sim_store_free(pc_sim_store_t *s);

/* The channel id, creating the channel on first use (defaults, demo or
 * environment secret, its own fault stream). Returns NULL when id is not
 * 1–32 of [a-z0-9_], or when PC_SIM_MAX_CHANNELS exist already, or out of
 * memory. The store owns the channel. */
pc_sim_channel_t *pc_sim_channel_get(pc_sim_store_t *s, const char *id, bool create);
/* Iterates channels: start with *pos = 0; NULL at the end. */
pc_sim_channel_t *pc_sim_channel_next(pc_sim_store_t *s, size_t *pos);
/* Re-seeds a channel's fault stream. */
void pc_sim_channel_seed(pc_sim_store_t *s, pc_sim_channel_t *ch, uint64_t seed);
bool pc_sim_channel_id_valid(const char *id);

/* A new transaction of kind on ch with paycore's number no (1–64 characters;
 * the caller validates), PROCESSING, indexed by its new channel reference and
 * by (channel, kind, no). Forgets the oldest transaction when over the cap.
 * Returns NULL when out of memory. The store owns the transaction; it stays
 * valid until pc_sim_store_free, pc_sim_store_evict or a later
 * pc_sim_txn_new that evicts it — so do not keep pointers across event-loop
 * turns: keep the reference and look it up again. */
pc_sim_txn_t *pc_sim_txn_new(pc_sim_store_t *s, pc_sim_channel_t *ch, pc_sim_kind_t kind,
                             const char *no, int64_t now_ms);
pc_sim_txn_t *pc_sim_txn_by_ref(pc_sim_store_t *s, const char *ref);
pc_sim_txn_t *pc_sim_txn_by_no(pc_sim_channel_t *ch, pc_sim_kind_t kind, const char *no);
/* Gives a payment the reference a buyer completes it with. Returns 0,
 * PC_ECONFLICT when another transaction has it, PC_ENOMEM. */
int pc_sim_txn_set_reference(pc_sim_store_t *s, pc_sim_txn_t *t, const char *reference);
pc_sim_txn_t *pc_sim_txn_by_reference(pc_sim_store_t *s, const char *reference);
/* The oldest transaction still kept; follow ->newer. */
pc_sim_txn_t *pc_sim_txn_oldest(pc_sim_store_t *s);
size_t pc_sim_txn_count(const pc_sim_store_t *s);

/* Interns a callback base URL so transactions share one copy. Returns the
 * interned string (lives as long as the store) or NULL when 1024 distinct
 * bases exist already or memory runs out. */
const char *pc_sim_store_intern(pc_sim_store_t *s, const char *str);

/* A new channel reference with prefix ("pay", "rfd", "pot", "cbk", "evt",
 * "xtr"): "<prefix>_<6 hex of this run><10 digits>", unique per run and
 * across runs with overwhelming probability. */
void pc_sim_store_ref(pc_sim_store_t *s, const char *prefix, char out[PC_SIM_REF_LEN]);

/* The keyed fingerprint of a card number (hex, 32 characters): stable for
 * the process, useless to anyone without its random key. */
int pc_sim_store_fingerprint(pc_sim_store_t *s, const char *pan, char out[33]);
/* The card with fingerprint fp on ch, or a new one filled from the arguments
 * (token from the CSPRNG). Returns NULL when out of memory or the CSPRNG
 * fails. Same lifetime rules as transactions. */
pc_sim_card_t *pc_sim_card_put(pc_sim_store_t *s, pc_sim_channel_t *ch, const char *fp,
                               const char *brand, const char *bin, const char *last4, int exp_month,
                               int exp_year, pc_sim_card_rule_t rule);
pc_sim_card_t *pc_sim_card_get(pc_sim_channel_t *ch, const char *token);
size_t pc_sim_card_count(const pc_sim_store_t *s);

/* Adds the statement line of a transaction that just reached a final state
 * (type "PAY", "REFUND", "PAYOUT" or "PAYOUT_RETURN"; status as shown), on
 * the business date of time_ms. Applies the channel's pending statement
 * discrepancies to SUCCESS lines and records each as faked. Returns 0 or
 * PC_ENOMEM. */
int pc_sim_line_add(pc_sim_store_t *s, const pc_sim_txn_t *t, const char *type, const char *status,
                    int64_t amount, int64_t fee, int64_t time_ms);
/* Adds n lines no transaction stands behind (STATEMENT_EXTRA_LINE) on the
 * date of now_ms. Returns 0 or PC_ENOMEM. */
int pc_sim_line_add_extra(pc_sim_store_t *s, pc_sim_channel_t *ch, int n, const char *currency,
                          int64_t now_ms);
/* Adds a chargeback against payment t to the file of the date of now_ms;
 * respond_by is 7 days later. Returns the line (valid until the day is
 * forgotten) or NULL when out of memory. */
const pc_sim_chargeback_t *pc_sim_chargeback_add(pc_sim_store_t *s, const pc_sim_txn_t *t,
                                                 int64_t amount, const char *reason_code,
                                                 int64_t now_ms);
/* Appends the statement CSV (header and the visible lines in the order they
 * happened) of ch for date. */
void pc_sim_statement_csv(pc_sim_channel_t *ch, const char *date, pc_buf_t *out);
void pc_sim_chargebacks_csv(pc_sim_channel_t *ch, const char *date, pc_buf_t *out);
size_t pc_sim_line_count(const pc_sim_store_t *s);

/* Records a copy of a faked fault, numbering it (f->seq is set); the caller
 * sets the time. Oldest are forgotten past the cap; counts per
 * kind are kept for ever. */
void pc_sim_faked_add(pc_sim_store_t *s, pc_sim_faked_t *f);
/* Iterates the kept faked faults oldest first: start with *pos = 0. */
const pc_sim_faked_t *pc_sim_faked_next(const pc_sim_store_t *s, size_t *pos);
/* How many of kind (NULL: all) were faked since the store was made. */
uint64_t pc_sim_faked_total(const pc_sim_store_t *s, const char *kind);

#endif
