/* tests/test_rng.h — the tests' own PRNG (xorshift64*), for fixed random
 * data in kernel and gradient tests: every test seeds it, so each sees the
 * same numbers whatever ran before. Not runtime/params.h's generator on
 * purpose: test data must not change when the weights' initialisation does.
 * Header-only (static), one state per test program. */
#ifndef KILN_TESTS_TEST_RNG_H
#define KILN_TESTS_TEST_RNG_H

#include <stdint.h>

static uint64_t rng_s = 1;

/* Reset the test PRNG, so every test sees fixed data. */
static inline void rng_seed(uint64_t s) { rng_s = s * 0x9E3779B97F4A7C15ull + 1; }

/* Uniform in [0, 1). */
static inline double urand(void)
{
    rng_s ^= rng_s >> 12;
    rng_s ^= rng_s << 25;
    rng_s ^= rng_s >> 27;
    return (double)((rng_s * 2685821657736338717ull) >> 11) * 0x1p-53;
}

/* Uniform integer in [lo, hi]. */
static inline int irand(int lo, int hi) { return lo + (int)(urand() * (hi - lo + 1)); }

#endif
