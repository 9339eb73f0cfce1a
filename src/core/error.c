#include "core/error.h"

const char *pc_strerror(int code)
{
    switch (code) {
    case PC_OK:
        return "ok";
    case PC_EINVAL:
        return "invalid argument";
    case PC_ENOMEM:
        return "out of memory";
    case PC_EIO:
        return "i/o error";
    case PC_EUNAVAIL:
        return "dependency unavailable";
    case PC_ETIMEDOUT:
        return "timed out";
    case PC_ENOTFOUND:
        return "not found";
    case PC_ECONFLICT:
        return "conflict";
    case PC_ECLOSED:
        return "closed";
    case PC_ELIMIT:
        return "limit exceeded";
    case PC_ERETRY:
        return "rolled back by a deadlock; retry";
    default:
        return "unknown error";
    }
}
