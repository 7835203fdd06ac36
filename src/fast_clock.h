/*
 * fast_clock.h — the pool's one bookkeeping clock: monotonic nanoseconds,
 * read from the TSC on x86-64 (calibrated against CLOCK_MONOTONIC when the
 * first pool opens, and checked against it again at most once a second by
 * the maintenance passes), clock_gettime(CLOCK_MONOTONIC) elsewhere.
 *
 * Every timestamp the pool keeps about a connection (created, expires, last
 * used, leased since, last pinged) and every "now" it compares them with
 * comes from here. The TSC and CLOCK_MONOTONIC drift apart slowly (the
 * calibration is good to about 1e-5, and NTP slews CLOCK_MONOTONIC but not
 * the TSC), so timestamps from the two must never be compared. The recheck
 * keeps the fast clock within about a millisecond of CLOCK_MONOTONIC while
 * some pool's maintenance runs; a re-anchor for drift may move it back by
 * up to that much (durations across it may read short, and are clamped at
 * 0), one for a jump by the jump (design.md, Clocks).
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

/* A TSC reading, the CLOCK_MONOTONIC time it stands for, and the rate.
 * Written before it is published and never changed after: a reader that
 * loaded the pointer may use it however late (a re-anchor publishes a new
 * one, never rewrites an old one). */
typedef struct dbpool_clock_anchor {
    uint64_t tsc0;
    int64_t ns0;
    uint64_t mult; /* nanoseconds per tick, << DBPOOL_FAST_CLOCK_SHIFT */
} dbpool_clock_anchor;

typedef struct dbpool_fast_clock {
    /* The anchor in use; NULL: CLOCK_MONOTONIC (not calibrated yet, no
     * invariant TSC, or the TSC was given up by dbpool__fast_clock_recheck). */
    _Atomic(const dbpool_clock_anchor *) anchor;
    _Atomic int ready; /* calibrated (whatever the outcome) */
} dbpool_fast_clock;

#define DBPOOL_FAST_CLOCK_SHIFT 32

extern dbpool_fast_clock dbpool__fast_clock;

/* Calibrates on first use, and handles what the inline path does not. */
int64_t dbpool__fast_now_slow(void);

/* Compares the fast clock with CLOCK_MONOTONIC, at most once a second
 * whoever calls (every maintenance pass does), and re-anchors it when the
 * two have parted by more than DBPOOL_FAST_CLOCK_TOLERANCE_NS: a TSC whose
 * rate drifted from the calibration (NTP changed its correction), that
 * jumped or restarted (suspend, a virtual machine moved to another host),
 * or that runs at another rate since (a host with another TSC frequency).
 * When it needs a new anchor more than DBPOOL_FAST_CLOCK_MAX_ANCHORS_PER_HOUR
 * times within an hour, or jumped 8 times in a row (with no look on time
 * between), the TSC is given up for CLOCK_MONOTONIC. */
void dbpool__fast_clock_recheck(void);

/* Tests only: forget every re-anchor and calibrate again (no pool open,
 * no other thread reading the clock). */
void dbpool__fast_clock_reset_for_tests(void);

/* The fork() child's handler (fork.c): a recheck another thread of the
 * parent was in at fork() left its lock held in the child for good. */
void dbpool__fast_clock_forked_child(void);

/* Tests only: hold (true) or let go (false) the recheck's lock, as a
 * recheck under way on another thread does. */
void dbpool__fast_clock_hold_for_tests(bool hold);

#define DBPOOL_FAST_CLOCK_TOLERANCE_NS 1000000 /* 1 ms */
#define DBPOOL_FAST_CLOCK_MAX_ANCHORS_PER_HOUR 32

#ifdef DBPOOL_HAVE_TSC
typedef enum dbpool_clock_verdict {
    DBPOOL_CLOCK_KEEP,    /* within the tolerance */
    DBPOOL_CLOCK_DRIFTED, /* re-anchored, with the rate measured since the last anchor */
    DBPOOL_CLOCK_STEPPED, /* re-anchored, the rate kept: the TSC jumped (the next one measures it) */
    DBPOOL_CLOCK_GIVE_UP  /* (dbpool__fast_clock_recheck_with only) CLOCK_MONOTONIC from now on */
} dbpool_clock_verdict;

/* The decision alone (tests call it with made-up readings): `cur` read at
 * `tsc` against `mono`, the CLOCK_MONOTONIC time of that same moment. On
 * DRIFTED and STEPPED, *next is the anchor to publish. `measure` says the
 * last re-anchor was a step, so the rate since is the TSC's new rate
 * whatever the error. */
dbpool_clock_verdict dbpool__fast_clock_judge(const dbpool_clock_anchor *cur, bool measure, uint64_t tsc,
                                              int64_t mono, dbpool_clock_anchor *next);

/* One (tsc, monotonic) pair, the TSC read on both sides of clock_gettime;
 * keeps the tightest of a few tries so the pair is accurate to ~10 ns.
 * Returns the ticks between the tightest try's two reads. (The
 * calibration, the recheck and the tests' made-up readings.) */
uint64_t dbpool__clock_pair(uint64_t *tsc, int64_t *ns);

/* What dbpool__fast_clock_recheck does with one reading pair, now, without
 * the once-a-second limit (tests). Returns the verdict. */
dbpool_clock_verdict dbpool__fast_clock_recheck_with(uint64_t tsc, int64_t mono);

/* The reading of anchor `a` at `tsc` (which may be before a->tsc0: a CPU
 * whose TSC lags, or a TSC that went back). */
static inline int64_t dbpool__clock_anchor_at(const dbpool_clock_anchor *a, uint64_t tsc) {
    __extension__ typedef unsigned __int128 u128;
    if (tsc >= a->tsc0)
        return a->ns0 + (int64_t)(uint64_t)(((u128)(tsc - a->tsc0) * a->mult) >> DBPOOL_FAST_CLOCK_SHIFT);
    return a->ns0 - (int64_t)(uint64_t)(((u128)(a->tsc0 - tsc) * a->mult) >> DBPOOL_FAST_CLOCK_SHIFT);
}

#endif

static inline int64_t dbpool__fast_now_ns(void) {
#ifdef DBPOOL_HAVE_TSC
    const dbpool_clock_anchor *a = atomic_load_explicit(&dbpool__fast_clock.anchor, memory_order_acquire);
    if (__builtin_expect(a != NULL, 1)) {
        uint64_t t = __rdtsc();
        /* t < tsc0 only on a CPU whose TSC lags the anchoring one's. */
        if (__builtin_expect(t >= a->tsc0, 1)) {
            __extension__ typedef unsigned __int128 u128;
            u128 ns = (u128)(t - a->tsc0) * a->mult;
            return a->ns0 + (int64_t)(uint64_t)(ns >> DBPOOL_FAST_CLOCK_SHIFT);
        }
    }
#endif
    return dbpool__fast_now_slow();
}

#endif
