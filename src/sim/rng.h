/* Deterministic pseudo-random numbers for fault injection, so that a test run
 * with the same --seed and the same sequence of requests sees the same faults.
 * xoshiro256** seeded through splitmix64; each channel has its own stream
 * (seed mixed with the channel id), so faults on one channel do not shift the
 * decisions on another. Not for secrets: tokens come from the CSPRNG
 * (auth/sign.h). Needs nothing. */
#ifndef PC_SIM_RNG_H
#define PC_SIM_RNG_H
#include <stdbool.h>
#include <stdint.h>

typedef struct {
    uint64_t s[4];
} pc_sim_rng_t;

/* Rates are basis points: 10000 means always. */
#define PC_SIM_BPS_ALL 10000

void pc_sim_rng_seed(pc_sim_rng_t *r, uint64_t seed);
uint64_t pc_sim_rng_next(pc_sim_rng_t *r);
/* Uniform in [0, n) without modulo bias; 0 when n is 0. */
uint64_t pc_sim_rng_below(pc_sim_rng_t *r, uint64_t n);
/* True with probability bps / 10000. Draws a number only when 0 < bps <
 * 10000, so that a fault switched off (or fully on) does not move the
 * sequence the other decisions see. */
bool pc_sim_rng_chance(pc_sim_rng_t *r, int bps);
/* The seed of a named stream derived from a base seed. */
uint64_t pc_sim_rng_derive(uint64_t seed, const char *name);

#endif
