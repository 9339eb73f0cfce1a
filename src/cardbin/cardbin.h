/* Card BIN data (issuer bank, brand, card type, country/province): loaded
 * from a CSV file (config/card_bins.csv, option cards.bin_file) into
 * PostgreSQL at start, looked up by the longest matching prefix (8 then 6
 * digits) for bound cards, payout cards and GET /v1/card-bins/{bin}. */
#ifndef PC_CARDBIN_CARDBIN_H
#define PC_CARDBIN_CARDBIN_H
#include <jansson.h>
#include <stdbool.h>

#include "api/app.h"

/* Parses the CSV text into a JSON array of rows; lines starting with '#'
 * and the header are skipped. Returns NULL with a message (file line) in err
 * on the first malformed line. Pure: used at start and by tests. */
json_t *pc_cardbin_parse(const char *text, char *err, size_t errlen);

/* Loads path into the database with a blocking connection: call at start,
 * before the loop serves (like migrations). Returns rows loaded or -1. */
int pc_cardbin_load_file(const char *db_url, const char *path, char *err, size_t errlen);

/* SQL fragment: a row of card_bins for the longest prefix of the card number
 * or BIN in parameter $1 (as a correlated subquery source). */
#define PC_CARDBIN_MATCH_SQL                                                                       \
    "(SELECT b.* FROM card_bins b WHERE b.bin = left($1, 8) OR b.bin = left($1, 6) ORDER BY "      \
    "length(b.bin) DESC LIMIT 1)"

/* The card scheme ("VISA", "MASTERCARD", "AMEX", "UNIONPAY", "JCB",
 * "DISCOVER" or "UNKNOWN") from the leading digits of a card number or BIN
 * (at least 6): the schemes' own prefix ranges, no table needed. */
const char *pc_card_scheme(const char *pan);

/* True when digits is all decimal digits (at least one) and passes the
 * Luhn check. */
bool pc_card_luhn_valid(const char *digits);

/* True when s reads as a card number: 13 to 19 digits, Luhn-valid, with
 * the leading digits of a card scheme. Such a number must not be kept where
 * another kind of number is (a bank account number): it would be a card
 * number in a database row. */
bool pc_card_number_like(const char *s);

/* Why acct cannot be a payee's bank account number (a payout's, a refund
 * paid out): not 6 to 34 digits, or a card number (pc_card_number_like:
 * such a payee is a CARD with its card_token). NULL when it can. */
const char *pc_account_no_refusal(const char *acct);

void pc_app_routes_cardbins(pc_app_t *app);

#endif
