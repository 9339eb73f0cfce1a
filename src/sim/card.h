/* Card rules of the simulated acquirers: number checks (digits, Luhn), brand
 * from the number's prefix, expiry, and the api.md "paysim test data" table
 * that decides each test card's outcome. Pure functions; they read the card
 * number and never keep or print it. Needs nothing. */
#ifndef PC_SIM_CARD_H
#define PC_SIM_CARD_H
#include <stdbool.h>
#include <stdint.h>

/* What the issuer does with a card. */
typedef enum {
    PC_SIM_CARD_APPROVE = 0, /* success */
    PC_SIM_CARD_DECLINE,     /* failure with code, message, retryable */
    PC_SIM_CARD_CHALLENGE,   /* success only after a 3-D Secure-style challenge */
    PC_SIM_CARD_DISPUTE,     /* success, then a chargeback in the chargeback file */
} pc_sim_card_behaviour_t;

typedef struct {
    pc_sim_card_behaviour_t behaviour;
    const char *code;    /* decline code (static), NULL unless DECLINE */
    const char *message; /* static, NULL unless DECLINE */
    bool retryable;
} pc_sim_card_rule_t;

/* True for 12 to 19 digits that pass the Luhn check. */
bool pc_sim_pan_valid(const char *pan);
/* "VISA", "MASTERCARD", "AMEX", "UNIONPAY", "JCB", "DISCOVER" or "UNKNOWN"
 * (static). */
/* True when month/year (1–12, four-digit year) is before the month of now_ms
 * (Unix milliseconds, UTC): a card is valid through the end of its month. */
bool pc_sim_card_expired(int exp_month, int exp_year, int64_t now_ms);
/* True for a 3- or 4-digit CVV. */
bool pc_sim_cvv_valid(const char *cvv);
/* The outcome of a valid number per the test data table; any other valid
 * number is approved. */
pc_sim_card_rule_t pc_sim_card_rule(const char *pan);

#endif
