/* fast_clock.c — calibrating the TSC against CLOCK_MONOTONIC, and keeping
 * it there (fast_clock.h). */
#include "fast_clock.h"

#include "internal.h"

#include <pthread.h>
#include <string.h>
#include <time.h>

#ifdef DBPOOL_HAVE_TSC
#include <cpuid.h>
#endif

dbpool_fast_clock dbpool__fast_clock;

#ifdef DBPOOL_HAVE_TSC
static pthread_once_t g_clock_once = PTHREAD_ONCE_INIT;

/* The anchors, published in turn: the current one is
 * g_anchors[(g_count - 1) % ANCHOR_RING]. A slot is written again only
 * ANCHOR_RING anchors later, which the give-up rule (recheck_locked) puts
 * at least an hour after the anchor it held stopped being current: a
 * reader that loaded the pointer reads a whole anchor unless it stalled
 * that long between two loads (and then reads a newer, whole one, unless
 * it resumes in the nanoseconds the slot is being written). Written under g_recheck_lock (or by the
 * calibration, before anyone can recheck). */
#define ANCHOR_RING 64
static dbpool_clock_anchor g_anchors[ANCHOR_RING];
static uint64_t g_count;
static int g_steps; /* re-anchors in a row that were steps */
/* Shorter spans say nothing of the rate: the readings' own error. */
#define MIN_SPAN_NS INT64_C(100000000)
#define MAX_STEPS_IN_A_ROW 8
static pthread_mutex_t g_recheck_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic int64_t g_next_check_ns;
#define NS_PER_SEC INT64_C(1000000000)
#define HOUR_NS (3600 * NS_PER_SEC)

/* A rate between 100 MHz and 20 GHz; anything else is a broken or
 * virtualised counter we do not trust. */
static bool sane_rate(double ns_per_tick) { return ns_per_tick > 0.05 && ns_per_tick < 10.0; }

static uint64_t mult_of(double ns_per_tick) {
    return (uint64_t)(ns_per_tick * (double)(UINT64_C(1) << DBPOOL_FAST_CLOCK_SHIFT) + 0.5);
}

static bool invariant_tsc(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(0x80000007u, &a, &b, &c, &d)) /* checks the max leaf */
        return false;
    return (d >> 8) & 1u;
}

uint64_t dbpool__clock_pair(uint64_t *tsc, int64_t *ns) {
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
    return best;
}

static void calibrate(void) {
    dbpool_fast_clock *k = &dbpool__fast_clock;
    if (invariant_tsc()) {
        uint64_t tsc0 = 0, tsc1 = 0;
        int64_t ns0 = 0, ns1 = 0;
        dbpool__clock_pair(&tsc0, &ns0);
        struct timespec ts = {0, 5000000}; /* 5 ms: +-20 ns pairs give 1e-5 */
        while (nanosleep(&ts, &ts) != 0) {
        }
        dbpool__clock_pair(&tsc1, &ns1);
        if (tsc1 > tsc0 && ns1 > ns0) {
            double npt = (double)(ns1 - ns0) / (double)(tsc1 - tsc0);
            if (sane_rate(npt)) {
                g_anchors[0] = (dbpool_clock_anchor){.tsc0 = tsc1, .ns0 = ns1, .mult = mult_of(npt)};
                g_count = 1;
                atomic_store_explicit(&k->anchor, &g_anchors[0], memory_order_release);
            }
        }
    }
    atomic_store_explicit(&g_next_check_ns, dbpool__now_ns() + NS_PER_SEC, memory_order_relaxed);
    atomic_store_explicit(&k->ready, 1, memory_order_release);
}

int64_t dbpool__fast_now_slow(void) {
    dbpool_fast_clock *k = &dbpool__fast_clock;
    if (!atomic_load_explicit(&k->ready, memory_order_acquire))
        pthread_once(&g_clock_once, calibrate);
    const dbpool_clock_anchor *a = atomic_load_explicit(&k->anchor, memory_order_acquire);
    if (!a)
        return dbpool__now_ns();
    return dbpool__clock_anchor_at(a, __rdtsc());
}

dbpool_clock_verdict dbpool__fast_clock_judge(const dbpool_clock_anchor *cur, bool measure, uint64_t tsc,
                                              int64_t mono, dbpool_clock_anchor *next) {
    int64_t err = dbpool__clock_anchor_at(cur, tsc) - mono;
    if (err <= DBPOOL_FAST_CLOCK_TOLERANCE_NS && err >= -DBPOOL_FAST_CLOCK_TOLERANCE_NS)
        return DBPOOL_CLOCK_KEEP;
    /* The rate since the anchor, where that span is long enough for the
     * pairs' own error (tens of ns) not to matter. */
    int64_t span = mono - cur->ns0;
    double rate = tsc > cur->tsc0 && span >= MIN_SPAN_NS ? (double)span / (double)(tsc - cur->tsc0) : 0.0;
    /* An error that grew slowly (under 1% of the time since the anchor)
     * is the rate's: the rate measured over that time replaces it. A
     * larger one is a jump of the TSC (or of its rate), whose size says
     * nothing of the rate: keep the rate, and measure it next time, over
     * a span that starts after the jump. */
    double err_share = rate > 0.0 ? (double)(err < 0 ? -err : err) / (double)span : 1.0;
    if (sane_rate(rate) && (measure || err_share < 0.01)) {
        *next = (dbpool_clock_anchor){.tsc0 = tsc, .ns0 = mono, .mult = mult_of(rate)};
        return DBPOOL_CLOCK_DRIFTED;
    }
    *next = (dbpool_clock_anchor){.tsc0 = tsc, .ns0 = mono, .mult = cur->mult};
    return DBPOOL_CLOCK_STEPPED;
}

/* g_recheck_lock held. */
static dbpool_clock_verdict recheck_locked(uint64_t tsc, int64_t mono) {
    dbpool_fast_clock *k = &dbpool__fast_clock;
    const dbpool_clock_anchor *cur = atomic_load_explicit(&k->anchor, memory_order_relaxed);
    if (!cur)
        return DBPOOL_CLOCK_KEEP; /* CLOCK_MONOTONIC already */
    dbpool_clock_anchor next;
    dbpool_clock_verdict v = dbpool__fast_clock_judge(cur, g_steps > 0, tsc, mono, &next);
    if (v == DBPOOL_CLOCK_KEEP) {
        /* The clock kept since the last step: that run of jumps is over,
         * and its rate is right. Counted on, a laptop's ninth suspend
         * (a TSC that restarts) gave the TSC up however long it had kept
         * time between them, and a jump hours after a step was taken for
         * the rate of the whole time since (a clock off by the jump's
         * share until the next looks put it right). */
        g_steps = 0;
        return v;
    }
    g_steps = v == DBPOOL_CLOCK_STEPPED ? g_steps + 1 : 0;
    /* A TSC that jumps at every look, or needs a new anchor more than
     * DBPOOL_FAST_CLOCK_MAX_ANCHORS_PER_HOUR times an hour, is no clock to
     * keep. (NTP's wandering correction alone, a few ppm, needs one every
     * hour or so.) */
    const uint64_t per_hour = DBPOOL_FAST_CLOCK_MAX_ANCHORS_PER_HOUR;
    bool too_often =
        g_count >= per_hour && next.ns0 - g_anchors[(g_count - per_hour) % ANCHOR_RING].ns0 < HOUR_NS;
    if (g_steps > MAX_STEPS_IN_A_ROW || too_often) {
        atomic_store_explicit(&k->anchor, NULL, memory_order_release);
        return DBPOOL_CLOCK_GIVE_UP;
    }
    dbpool_clock_anchor *slot = &g_anchors[g_count % ANCHOR_RING];
    *slot = next;
    atomic_store_explicit(&k->anchor, slot, memory_order_release);
    g_count++;
    return v;
}

dbpool_clock_verdict dbpool__fast_clock_recheck_with(uint64_t tsc, int64_t mono) {
    (void)dbpool__fast_now_ns(); /* calibrated first */
    pthread_mutex_lock(&g_recheck_lock);
    dbpool_clock_verdict v = recheck_locked(tsc, mono);
    pthread_mutex_unlock(&g_recheck_lock);
    return v;
}

void dbpool__fast_clock_reset_for_tests(void) {
    pthread_mutex_lock(&g_recheck_lock);
    (void)dbpool__fast_now_ns(); /* the first calibration done, not run again later */
    atomic_store_explicit(&dbpool__fast_clock.anchor, NULL, memory_order_release);
    g_count = 0;
    g_steps = 0;
    calibrate();
    pthread_mutex_unlock(&g_recheck_lock);
}

/* Only the forking thread lives on in the child: a recheck another thread
 * was in at fork() never unlocks there, and without this the child's
 * clock was never checked again (the passes' trylock failed each time)
 * and dbpool__fast_clock_recheck_with hung. No recheck runs in the child
 * yet (one thread), so the lock is made anew; the anchors it may have
 * been writing are the parent thread's, whole or not yet published. */
void dbpool__fast_clock_forked_child(void) {
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    memcpy(&g_recheck_lock, &fresh, sizeof fresh);
}

void dbpool__fast_clock_hold_for_tests(bool hold) {
    if (hold)
        pthread_mutex_lock(&g_recheck_lock);
    else
        pthread_mutex_unlock(&g_recheck_lock);
}

void dbpool__fast_clock_recheck(void) {
    if (!atomic_load_explicit(&dbpool__fast_clock.ready, memory_order_acquire))
        return; /* nothing to check before the calibration */
    int64_t now = dbpool__now_ns();
    int64_t due = atomic_load_explicit(&g_next_check_ns, memory_order_relaxed);
    /* One caller per second does it, the others go on at once. */
    if (now < due || !atomic_compare_exchange_strong_explicit(&g_next_check_ns, &due, now + NS_PER_SEC,
                                                              memory_order_relaxed, memory_order_relaxed))
        return;
    if (pthread_mutex_trylock(&g_recheck_lock) != 0)
        return;
    if (atomic_load_explicit(&dbpool__fast_clock.anchor, memory_order_relaxed)) {
        uint64_t tsc = 0;
        int64_t mono = 0;
        /* A pair whose every try was cut by a preemption (a virtual CPU
         * descheduled) could be off by the preemption: not judged, and
         * the next look comes in a second. At 100 MHz and up, 10,000
         * ticks are 100 us at most. */
        if (dbpool__clock_pair(&tsc, &mono) < 10000)
            (void)recheck_locked(tsc, mono);
    }
    pthread_mutex_unlock(&g_recheck_lock);
}
#else
int64_t dbpool__fast_now_slow(void) { return dbpool__now_ns(); }
void dbpool__fast_clock_reset_for_tests(void) {}
void dbpool__fast_clock_recheck(void) {}
void dbpool__fast_clock_forked_child(void) {}
void dbpool__fast_clock_hold_for_tests(bool hold) { (void)hold; }
#endif
