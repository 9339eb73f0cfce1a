#include "sim/codes.h"

static const struct {
    int status;
    const char *code;
} g_codes[PC_SIM_ERR_COUNT] = {
    [PC_SIM_OK] = {200, "OK"},
    [PC_SIM_INVALID_REQUEST] = {400, "INVALID_REQUEST"},
    [PC_SIM_INVALID_SIGNATURE] = {401, "INVALID_SIGNATURE"},
    [PC_SIM_TIMESTAMP_EXPIRED] = {401, "TIMESTAMP_EXPIRED"},
    [PC_SIM_NONCE_REUSED] = {401, "NONCE_REUSED"},
    [PC_SIM_NOT_FOUND] = {404, "NOT_FOUND"},
    [PC_SIM_INVALID_STATE] = {409, "INVALID_STATE"},
    [PC_SIM_DUPLICATE_PAYMENT_NO] = {409, "DUPLICATE_PAYMENT_NO"},
    [PC_SIM_DUPLICATE_REFUND_NO] = {409, "DUPLICATE_REFUND_NO"},
    [PC_SIM_DUPLICATE_PAYOUT_NO] = {409, "DUPLICATE_PAYOUT_NO"},
    [PC_SIM_REFERENCE_IN_USE] = {409, "REFERENCE_IN_USE"},
    [PC_SIM_AMOUNT_EXCEEDS_REFUNDABLE] = {422, "AMOUNT_EXCEEDS_REFUNDABLE"},
    [PC_SIM_INVALID_CARD] = {422, "INVALID_CARD"},
    [PC_SIM_EXPIRED] = {409, "EXPIRED"},
    [PC_SIM_UNAVAILABLE] = {503, "UNAVAILABLE"},
    [PC_SIM_TIMEOUT] = {504, "TIMEOUT"},
};

int pc_sim_err_status(pc_sim_err_t err)
{
    if ((unsigned)err >= PC_SIM_ERR_COUNT)
        return 500;
    return g_codes[err].status;
}

const char *pc_sim_err_code(pc_sim_err_t err)
{
    if ((unsigned)err >= PC_SIM_ERR_COUNT)
        return "INTERNAL";
    return g_codes[err].code;
}
