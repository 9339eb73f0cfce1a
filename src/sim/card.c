#include "sim/card.h"
#include "cardbin/cardbin.h"

#include <string.h>
#include <time.h>

bool pc_sim_pan_valid(const char *pan)
{
    size_t n = strlen(pan);
    return n >= 12 && n <= 19 && pc_card_luhn_valid(pan);
}

bool pc_sim_card_expired(int exp_month, int exp_year, int64_t now_ms)
{
    time_t now = (time_t)(now_ms / 1000);
    struct tm tm;
    gmtime_r(&now, &tm);
    int year = tm.tm_year + 1900, month = tm.tm_mon + 1;
    return exp_year < year || (exp_year == year && exp_month < month);
}

bool pc_sim_cvv_valid(const char *cvv)
{
    size_t n = strlen(cvv);
    if (n < 3 || n > 4)
        return false;
    for (size_t i = 0; i < n; i++)
        if (cvv[i] < '0' || cvv[i] > '9')
            return false;
    return true;
}

/* api.md "paysim test data": the simulator's test cards are the public
 * 4000 0000 0000 xxxx series card networks publish for testing (not real
 * cards; paycore never stores or logs them), told apart by their last four
 * digits. Only the whole number matches, so an ordinary card that happens to
 * end in the same digits is not declined. */
#define TEST_CARD_PREFIX "400000000000"

static const struct {
    const char *last4;
    pc_sim_card_rule_t rule;
} g_test_cards[] = {
    {"0002", {PC_SIM_CARD_DECLINE, "CARD_DECLINED", "the issuer declined the card", false}},
    {"9995", {PC_SIM_CARD_DECLINE, "INSUFFICIENT_FUNDS", "insufficient funds on the card", false}},
    {"0119",
     {PC_SIM_CARD_DECLINE, "PROCESSING_ERROR", "the issuer could not process the payment", true}},
    {"0259", {PC_SIM_CARD_DISPUTE, NULL, NULL, false}},
    {"3220", {PC_SIM_CARD_CHALLENGE, NULL, NULL, false}},
};

pc_sim_card_rule_t pc_sim_card_rule(const char *pan)
{
    size_t plen = sizeof TEST_CARD_PREFIX - 1;
    if (strlen(pan) == plen + 4 && strncmp(pan, TEST_CARD_PREFIX, plen) == 0)
        for (size_t i = 0; i < sizeof g_test_cards / sizeof g_test_cards[0]; i++)
            if (strcmp(pan + plen, g_test_cards[i].last4) == 0)
                return g_test_cards[i].rule;
    return (pc_sim_card_rule_t){PC_SIM_CARD_APPROVE, NULL, NULL, false};
}
