/*
 * perturb.c — the test-only schedule perturbation behind DBPOOL_PERTURB()
 * (perturb.h). Compiled only with -DDBPOOL_PERTURB=ON.
 *
 * At each mark, out of 64: 40 do nothing, 16 spin for up to about a
 * microsecond (a window stretched while the other core runs on), 6 yield
 * the CPU, 2 sleep 1-64 us (the other threads run through whole steps).
 * DBPOOL_PERTURB_ODDS in the environment scales the share that acts: 0
 * turns it off, 1-64 acts at that many marks out of 64 (default 24),
 * with the same mix. A thread's generator is seeded from its address and
 * the time, so runs differ; the seed is not reported (a schedule cannot
 * be replayed anyway).
 */
#include "perturb.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

static _Atomic int odds = -1; /* of 64; read once (threads racing to set it set the same value) */

static int odds_now(void) {
    int o = atomic_load_explicit(&odds, memory_order_relaxed);
    if (o >= 0)
        return o;
    o = 24;
    const char *s = getenv("DBPOOL_PERTURB_ODDS");
    if (s && *s) {
        long v = strtol(s, NULL, 10);
        o = v < 0 ? 0 : v > 64 ? 64 : (int)v;
    }
    atomic_store_explicit(&odds, o, memory_order_relaxed);
    return o;
}

static _Thread_local uint64_t state;

static uint64_t next(void) {
    if (state == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        state = ((uint64_t)ts.tv_nsec * UINT64_C(0x9e3779b97f4a7c15)) ^ (uint64_t)(uintptr_t)&state;
        if (state == 0)
            state = 1;
    }
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

void dbpool__perturb(void) {
    int o = odds_now();
    if (o == 0)
        return;
    uint64_t r = next();
    unsigned pick = (unsigned)(r & 63u);
    if (pick >= (unsigned)o)
        return;
    /* The mix, scaled to o: 16/24 spin, 6/24 yield, 2/24 sleep. */
    unsigned k = pick * 24u / (unsigned)o;
    if (k < 16) {
        unsigned n = (unsigned)((r >> 8) & 1023u);
        for (volatile unsigned i = 0; i < n; i++) {
        }
    } else if (k < 22) {
        sched_yield();
    } else {
        /* nanosleep is a cancellation point; the marks are in code that
         * reaches none (the thread cache's fast path): keep it so. */
        int cs;
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cs);
        struct timespec ts = {0, (long)(1000u * (1u + ((r >> 20) & 63u)))};
        nanosleep(&ts, NULL);
        pthread_setcancelstate(cs, &cs);
    }
}
