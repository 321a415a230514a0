/* test_rand.h — the unit tests' deterministic PRNG (xorshift64*): seeded
 * per test, so a failing random case reproduces. Header-only, static. */
#ifndef TEST_RAND_H
#define TEST_RAND_H

#include <stdint.h>

static uint64_t rng_state;

static inline uint64_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

#endif
