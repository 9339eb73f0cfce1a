#include "sim/rng.h"
#include "sim/map.h"

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void pc_sim_rng_seed(pc_sim_rng_t *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t v, int k)
{
    return (v << k) | (v >> (64 - k));
}

uint64_t pc_sim_rng_next(pc_sim_rng_t *r)
{
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

uint64_t pc_sim_rng_below(pc_sim_rng_t *r, uint64_t n)
{
    if (n == 0)
        return 0;
    /* Reject the top partial block so every residue is equally likely. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t v;
    do
        v = pc_sim_rng_next(r);
    while (v >= limit);
    return v % n;
}

bool pc_sim_rng_chance(pc_sim_rng_t *r, int bps)
{
    if (bps <= 0)
        return false;
    if (bps >= PC_SIM_BPS_ALL)
        return true;
    return pc_sim_rng_below(r, PC_SIM_BPS_ALL) < (uint64_t)bps;
}

uint64_t pc_sim_rng_derive(uint64_t seed, const char *name)
{
    uint64_t x = seed ^ pc_sim_hash(name);
    return splitmix64(&x);
}
