/* ISO 4217 currency codes: which codes money may be in, and how many digits
 * their minor unit has.
 *
 * Every amount is in minor units; a code that is not a currency ("RMB" for
 * CNY, "EURO") would make a trade that no channel takes and a ledger account
 * no statement ever matches, so every place money comes in (the API, the
 * admin routes that create money, channel files, the configuration) asks
 * pc_currency_known; what channels send back (answers, statements,
 * chargeback files) is checked for its form (pc_ledger_currency_ok) and
 * compared with what was asked. The list is ISO 4217's currencies in circulation, with
 * its fund codes (CLF, UYI, ...); the precious metals, special drawing rights
 * and test codes (XAU, XDR, XTS, XXX, ...) are left out: nothing is paid in
 * them. */
#ifndef PC_CORE_CURRENCY_H
#define PC_CORE_CURRENCY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Whether code is an ISO 4217 currency (three upper-case letters, listed). */
bool pc_currency_known(const char *code);

/* How many digits the minor unit of code has: 0 (JPY, KRW, VND, CLP, ...),
 * 3 (KWD, BHD, JOD, OMR, TND, ...), 4 (CLF, UYW), else 2 (also for codes
 * not listed). Amounts are minor units everywhere; this is only for showing
 * them. */
int pc_currency_digits(const char *code);

/* "12.30" style text of a minor-unit amount, with the currency's ISO 4217
 * digits (0 for JPY, 3 for KWD: pc_currency_digits). */
const char *pc_money_text(int64_t amount, const char *currency, char *buf, size_t len);

#endif
