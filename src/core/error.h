/* Error codes returned by paycore functions: 0 on success or a negative
 * PC_E… value. Domain errors that reach a client are pc_api_err_t values
 * (http/errors.h); these are the infrastructure ones. */
#ifndef PC_CORE_ERROR_H
#define PC_CORE_ERROR_H

enum {
    PC_OK = 0,
    PC_EINVAL = -1,   /* bad argument or input */
    PC_ENOMEM = -2,   /* allocation failed */
    PC_EIO = -3,      /* I/O error */
    PC_EUNAVAIL = -4, /* a dependency (PostgreSQL, Redis, channel) is unreachable */
    PC_ETIMEDOUT = -5,
    PC_ENOTFOUND = -6,
    PC_ECONFLICT = -7, /* a conditional update lost a race, or a unique key exists */
    PC_ECLOSED = -8,   /* the object is shutting down */
    PC_ELIMIT = -9,    /* a limit or budget was exceeded */
    PC_ERETRY = -10,   /* the transaction lost a deadlock or serialization check and was
                        * rolled back: nothing changed, the same request may simply run again */
};

/* True for failures a client may retry as they are (answered 503 UNAVAILABLE):
 * a dependency down or slow, shutting down, or a transaction rolled back by a
 * deadlock. */
static inline int pc_retryable(int code)
{
    return code == PC_EUNAVAIL || code == PC_ETIMEDOUT || code == PC_ECLOSED || code == PC_ERETRY;
}

/* Returns a static string naming the code. */
const char *pc_strerror(int code);

#endif
