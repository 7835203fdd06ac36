/*
 * fast_clock.h — the pool's one bookkeeping clock: monotonic nanoseconds,
 * read from the TSC on x86-64 (calibrated once against CLOCK_MONOTONIC),
 * clock_gettime(CLOCK_MONOTONIC) elsewhere.
 *
 * Every timestamp the pool keeps about a connection (created, expires, last
 * used, leased since, last pinged) and every "now" it compares them with
 * comes from here. The TSC and CLOCK_MONOTONIC drift apart slowly (the
 * calibration is good to about 1e-5, and NTP slews CLOCK_MONOTONIC but not
 * the TSC), so timestamps from the two must never be compared: after days
 * of uptime the difference is seconds. Durations measured on one clock
 * stay within that 1e-5.
 *
 * The reader is inline: the thread-cache lease reads it twice per cycle,
 * and the TSC itself (about 10 ns on a virtual machine) is a large part of
 * that cycle.
 */
#ifndef DBPOOL_FAST_CLOCK_H
#define DBPOOL_FAST_CLOCK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(DBPOOL_NO_TSC)
#include <x86intrin.h>
#define DBPOOL_HAVE_TSC 1
#endif

/* Written once, by the calibration, before `ready` is published. */
typedef struct dbpool_fast_clock {
    _Atomic int ready;
    bool use_tsc;
    uint64_t tsc0; /* a TSC reading ... */
    int64_t ns0;   /* ... and the CLOCK_MONOTONIC time it stands for */
    uint64_t mult; /* nanoseconds per tick, << DBPOOL_FAST_CLOCK_SHIFT */
} dbpool_fast_clock;

#define DBPOOL_FAST_CLOCK_SHIFT 32

extern dbpool_fast_clock dbpool__fast_clock;

/* Calibrates on first use, and handles what the inline path does not. */
int64_t dbpool__fast_now_slow(void);

static inline int64_t dbpool__fast_now_ns(void) {
#ifdef DBPOOL_HAVE_TSC
    if (__builtin_expect(atomic_load_explicit(&dbpool__fast_clock.ready, memory_order_acquire) &&
                             dbpool__fast_clock.use_tsc,
                         1)) {
        uint64_t t = __rdtsc();
        /* t < tsc0 only on a CPU whose TSC lags the calibrating one's. */
        if (__builtin_expect(t >= dbpool__fast_clock.tsc0, 1)) {
            __extension__ typedef unsigned __int128 u128;
            u128 ns = (u128)(t - dbpool__fast_clock.tsc0) * dbpool__fast_clock.mult;
            return dbpool__fast_clock.ns0 + (int64_t)(uint64_t)(ns >> DBPOOL_FAST_CLOCK_SHIFT);
        }
    }
#endif
    return dbpool__fast_now_slow();
}

#endif
