/* fast_clock.c — calibrating the TSC against CLOCK_MONOTONIC (fast_clock.h). */
#include "fast_clock.h"

#include "internal.h"

#include <pthread.h>
#include <time.h>

#ifdef DBPOOL_HAVE_TSC
#include <cpuid.h>
#endif

dbpool_fast_clock dbpool__fast_clock;

#ifdef DBPOOL_HAVE_TSC
static pthread_once_t g_clock_once = PTHREAD_ONCE_INIT;

static bool invariant_tsc(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(0x80000007u, &a, &b, &c, &d)) /* checks the max leaf */
        return false;
    return (d >> 8) & 1u;
}

/* One (tsc, monotonic) pair, the TSC read on both sides of clock_gettime;
 * keep the tightest of a few tries so the pair is accurate to ~10 ns. */
static void pair(uint64_t *tsc, int64_t *ns) {
    uint64_t best = UINT64_MAX;
    for (int i = 0; i < 8; i++) {
        uint64_t t0 = __rdtsc();
        int64_t n = dbpool__now_ns();
        uint64_t t1 = __rdtsc();
        if (t1 >= t0 && t1 - t0 < best) {
            best = t1 - t0;
            *tsc = t0 + (t1 - t0) / 2;
            *ns = n;
        }
    }
}

static void calibrate(void) {
    dbpool_fast_clock *k = &dbpool__fast_clock;
    k->use_tsc = false;
    if (invariant_tsc()) {
        uint64_t tsc0 = 0, tsc1 = 0;
        int64_t ns0 = 0, ns1 = 0;
        pair(&tsc0, &ns0);
        struct timespec ts = {0, 5000000}; /* 5 ms: +-20 ns pairs give 1e-5 */
        while (nanosleep(&ts, &ts) != 0) {
        }
        pair(&tsc1, &ns1);
        if (tsc1 > tsc0 && ns1 > ns0) {
            double npt = (double)(ns1 - ns0) / (double)(tsc1 - tsc0);
            /* A TSC between 100 MHz and 20 GHz; anything else is a broken
             * or virtualised counter we do not trust. */
            if (npt > 0.05 && npt < 10.0) {
                k->tsc0 = tsc1;
                k->ns0 = ns1;
                k->mult = (uint64_t)(npt * (double)(UINT64_C(1) << DBPOOL_FAST_CLOCK_SHIFT) + 0.5);
                k->use_tsc = true;
            }
        }
    }
    atomic_store_explicit(&k->ready, 1, memory_order_release);
}

int64_t dbpool__fast_now_slow(void) {
    dbpool_fast_clock *k = &dbpool__fast_clock;
    if (!atomic_load_explicit(&k->ready, memory_order_acquire))
        pthread_once(&g_clock_once, calibrate);
    if (!k->use_tsc)
        return dbpool__now_ns();
    uint64_t t = __rdtsc();
    if (t >= k->tsc0)
        return dbpool__fast_now_ns();
    /* A CPU whose TSC lags the calibrating one's: before the anchor. */
    __extension__ typedef unsigned __int128 u128;
    u128 back = (u128)(k->tsc0 - t) * k->mult;
    return k->ns0 - (int64_t)(uint64_t)(back >> DBPOOL_FAST_CLOCK_SHIFT);
}
#else
int64_t dbpool__fast_now_slow(void) { return dbpool__now_ns(); }
#endif
