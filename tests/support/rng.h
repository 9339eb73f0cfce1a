/* A small seeded random number generator for tests (xorshift64): the same
 * inputs on every run, so that a failure names a round that fails again.
 * Header only, for unit tests too. */
#ifndef PC_TEST_RNG_H
#define PC_TEST_RNG_H
#include <stdint.h>

/* A number in [0, n) from the generator whose state is *state (not 0). */
static inline uint32_t pc_t_rnd(uint64_t *state, uint32_t n)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return (uint32_t)(x % n);
}

#endif
