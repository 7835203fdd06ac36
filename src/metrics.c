/*
 * metrics.c — lock-free latency histograms.
 *
 * Recording. Each histogram is a log-linear set of fine buckets (8 per power
 * of two of nanoseconds, exact below 16 ns, so at most 12.5% wide) from 0 to
 * 2^42 ns (73.3 min: long transactions, batch jobs, acquires with long
 * timeouts) plus one overflow bucket. The 18 Prometheus bounds
 * (0.0001 s ... 30 s) are not powers of two, so the fine bucket holding a
 * bound is split in two at that bound: every bound is then the exact upper
 * edge of a "slot", the cumulative Prometheus counts are sums of whole slots,
 * and a record is still one relaxed add. Recording does
 *
 *     slot = split[fine].base + (ns > split[fine].at)
 *     stripe->slot[kind][slot] += 1; stripe->sum[kind] += ns; max = max(max, ns)
 *
 * with relaxed atomics on the calling thread's stripe. Stripes are
 * cache-line aligned (128 bytes: the adjacent-line prefetcher pairs lines),
 * one per power of two >= 2 x CPUs, 4 to 16; a thread's stripe is fixed by an
 * index it takes once from a global counter. The count is the sum of the
 * slots, so a snapshot's +Inf bucket always equals its count.
 *
 * Snapshots sum the stripes with relaxed loads: an observation in flight may
 * be in the sum but not yet in a slot (or the other way round); nothing is
 * ever lost or counted twice.
 *
 * The sums are 64-bit nanoseconds, which wrap after 2^64 ns (584 years) of
 * observed time: 1000 connections leased around the clock get there in about
 * 7 months. Rather than widen the hot path's add, every snapshot adds the
 * growth of the 64-bit total since the previous snapshot (mod 2^64, so a
 * wrap in between is counted) to a 128-bit total, under a mutex that only
 * snapshots take. The sum is exact as long as the histogram is read at least
 * once per 2^64 ns of observations.
 */
#include "metrics.h"

#include "internal.h"
#include "pool_internal.h"

#include <math.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------------- */
/* Bucket layout                                                          */
/* ---------------------------------------------------------------------- */

#define SUB_BITS 3
#define SUB (1u << SUB_BITS)                       /* fine buckets per power of two */
#define TOP_BIT 42                                 /* 2^42 ns = 73.3 min: start of the overflow bucket */
#define NFINE ((TOP_BIT - SUB_BITS + 1) * SUB + 1) /* 320 log-linear + overflow = 321 */
#define NSLOTS (NFINE + DBPOOL_HISTOGRAM_BUCKETS)  /* room for every split */
#define MAX_STRIPES 16u

static const uint64_t coarse_ns[DBPOOL_HISTOGRAM_BUCKETS] = {
    UINT64_C(100000),      UINT64_C(250000),     UINT64_C(500000),     UINT64_C(1000000),
    UINT64_C(2500000),     UINT64_C(5000000),    UINT64_C(10000000),   UINT64_C(25000000),
    UINT64_C(50000000),    UINT64_C(100000000),  UINT64_C(250000000),  UINT64_C(500000000),
    UINT64_C(1000000000),  UINT64_C(2500000000), UINT64_C(5000000000), UINT64_C(10000000000),
    UINT64_C(20000000000), UINT64_C(30000000000)};
static const double coarse_s[DBPOOL_HISTOGRAM_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30};

typedef struct split_entry {
    uint64_t at;   /* values > at go to base + 1; UINT64_MAX: no split */
    uint32_t base; /* slot of the fine bucket's (lower part's) values */
} split_entry;

/* Filled once (pthread_once in dbpool__metrics_new) and read-only after. */
static split_entry g_split[NFINE];
static uint64_t g_slot_lo[NSLOTS]; /* slot covers [lo, hi) nanoseconds */
static uint64_t g_slot_hi[NSLOTS]; /* UINT64_MAX for the overflow slot */
static uint32_t g_nslots;
static uint32_t g_coarse_last_slot[DBPOOL_HISTOGRAM_BUCKETS]; /* last slot <= bound */
static pthread_once_t g_layout_once = PTHREAD_ONCE_INIT;

static inline uint32_t fine_index(uint64_t v) {
    if (v < 2 * SUB)
        return (uint32_t)v;
    if (v >= (UINT64_C(1) << TOP_BIT))
        return NFINE - 1;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    return (uint32_t)((msb - SUB_BITS + 1) * SUB + ((v >> (msb - SUB_BITS)) & (SUB - 1)));
}

static void fine_edges(uint32_t fi, uint64_t *lo, uint64_t *hi) {
    if (fi == NFINE - 1) {
        *lo = UINT64_C(1) << TOP_BIT;
        *hi = UINT64_MAX;
    } else if (fi < 2 * SUB) {
        *lo = fi;
        *hi = fi + 1u;
    } else {
        unsigned msb = fi / SUB + SUB_BITS - 1;
        uint64_t sub = fi % SUB;
        *lo = (SUB + sub) << (msb - SUB_BITS);
        *hi = (SUB + sub + 1) << (msb - SUB_BITS);
    }
}

static void layout_init(void) {
    uint32_t slot = 0;
    for (uint32_t fi = 0; fi < NFINE; fi++) {
        uint64_t lo, hi;
        fine_edges(fi, &lo, &hi);
        g_split[fi].base = slot;
        g_split[fi].at = UINT64_MAX;
        for (int b = 0; b < DBPOOL_HISTOGRAM_BUCKETS; b++) {
            /* A bound b needs a split when [lo, b] and [b+1, hi) are both
             * non-empty. Buckets are narrower than the gap between bounds,
             * so at most one bound falls inside one fine bucket. */
            if (coarse_ns[b] >= lo && coarse_ns[b] + 1 < hi) {
                g_split[fi].at = coarse_ns[b];
                g_slot_lo[slot] = lo;
                g_slot_hi[slot] = coarse_ns[b] + 1;
                slot++;
                lo = coarse_ns[b] + 1;
                break;
            }
        }
        g_slot_lo[slot] = lo;
        g_slot_hi[slot] = hi;
        slot++;
    }
    g_nslots = slot;
    for (int b = 0; b < DBPOOL_HISTOGRAM_BUCKETS; b++) {
        uint32_t s = 0;
        while (s + 1 < g_nslots && g_slot_hi[s + 1] - 1 <= coarse_ns[b])
            s++;
        g_coarse_last_slot[b] = s;
    }
}

/* ---------------------------------------------------------------------- */
/* Storage                                                                */
/* ---------------------------------------------------------------------- */

typedef struct stripe {
    alignas(128) _Atomic uint64_t sum[DBPOOL_HIST_COUNT]; /* nanoseconds */
    _Atomic uint64_t max[DBPOOL_HIST_COUNT];
    _Atomic uint64_t slot[DBPOOL_HIST_COUNT][NSLOTS];
} stripe;

/* The sums carried past 64 bits (see the top of the file). */
typedef struct sum_total {
    pthread_mutex_t lock;
    uint64_t last[DBPOOL_HIST_COUNT];                      /* the 64-bit total at the last snapshot */
    uint64_t lo[DBPOOL_HIST_COUNT], hi[DBPOOL_HIST_COUNT]; /* the 128-bit total */
} sum_total;

struct dbpool_metrics {
    stripe *stripes;
    uint32_t mask;   /* nstripes - 1 */
    sum_total *sums; /* written by snapshots of a const dbpool_metrics */
};

static _Atomic uint32_t g_next_thread_index;
#if defined(__GNUC__) || defined(__clang__)
__attribute__((tls_model("initial-exec")))
#endif
static _Thread_local uint32_t tl_thread_index; /* index + 1; 0 = not assigned */

static inline uint32_t thread_index(void) {
    uint32_t i = tl_thread_index;
    if (__builtin_expect(i == 0, 0)) {
        i = atomic_fetch_add_explicit(&g_next_thread_index, 1, memory_order_relaxed) + 1;
        if (i == 0) /* wrapped after 2^32 threads */
            i = 1;
        tl_thread_index = i;
    }
    return i - 1;
}

dbpool_metrics *dbpool__metrics_new(void) {
    pthread_once(&g_layout_once, layout_init);
    /* Calibrate the clock now, at pool open, rather than on the first
     * acquire. */
    (void)dbpool__fast_now_ns();

    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu < 1)
        ncpu = 1;
    uint32_t n = 4;
    while (n < MAX_STRIPES && (long)n < 2 * ncpu)
        n *= 2;

    dbpool_metrics *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->sums = calloc(1, sizeof *m->sums);
    if (!m->sums || pthread_mutex_init(&m->sums->lock, NULL) != 0) {
        free(m->sums);
        free(m);
        return NULL;
    }
    m->stripes = aligned_alloc(alignof(stripe), n * sizeof(stripe));
    if (!m->stripes) {
        pthread_mutex_destroy(&m->sums->lock);
        free(m->sums);
        free(m);
        return NULL;
    }
    memset(m->stripes, 0, n * sizeof(stripe)); /* all-zero is a valid atomic 0 here */
    m->mask = n - 1;
    return m;
}

void dbpool__metrics_free(dbpool_metrics *m) {
    if (!m)
        return;
    pthread_mutex_destroy(&m->sums->lock);
    free(m->sums);
    free(m->stripes);
    free(m);
}

void dbpool__metrics_record(dbpool_metrics *m, dbpool_histogram_kind kind, int64_t ns) {
    if (!m || (unsigned)kind >= DBPOOL_HIST_COUNT)
        return;
    uint64_t v = ns > 0 ? (uint64_t)ns : 0;
    stripe *s = &m->stripes[thread_index() & m->mask];
    const split_entry *e = &g_split[fine_index(v)];
    uint32_t slot = e->base + (v > e->at);
    atomic_fetch_add_explicit(&s->slot[kind][slot], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->sum[kind], v, memory_order_relaxed);
    uint64_t cur = atomic_load_explicit(&s->max[kind], memory_order_relaxed);
    while (v > cur && !atomic_compare_exchange_weak_explicit(&s->max[kind], &cur, v, memory_order_relaxed,
                                                             memory_order_relaxed)) {
    }
}

/* ---------------------------------------------------------------------- */
/* Snapshots                                                              */
/* ---------------------------------------------------------------------- */

typedef struct snapshot {
    uint64_t slot[NSLOTS];
    uint64_t count, max_ns;
    double sum_ns; /* of the 128-bit total */
} snapshot;

static void take(const dbpool_metrics *m, dbpool_histogram_kind kind, snapshot *out) {
    memset(out, 0, sizeof *out);
    if (!m || (unsigned)kind >= DBPOOL_HIST_COUNT)
        return;
    for (uint32_t i = 0; i <= m->mask; i++) {
        stripe *s = &m->stripes[i];
        for (uint32_t k = 0; k < g_nslots; k++)
            out->slot[k] += atomic_load_explicit(&s->slot[kind][k], memory_order_relaxed);
        uint64_t mx = atomic_load_explicit(&s->max[kind], memory_order_relaxed);
        if (mx > out->max_ns)
            out->max_ns = mx;
    }
    for (uint32_t k = 0; k < g_nslots; k++)
        out->count += out->slot[k];
    /* A record adds to its slot before it raises the maximum, so a snapshot
     * can see an observation in its slot with the maximum not yet raised
     * (a first 1 us observation: count 1, p50 1 us, max 0). The maximum is
     * at least the lower edge of the highest slot that holds one: never
     * below a percentile, nor below a bucket with counts. */
    for (uint32_t k = g_nslots; k-- > 0;) {
        if (out->slot[k] == 0)
            continue;
        if (out->max_ns < g_slot_lo[k])
            out->max_ns = g_slot_lo[k];
        break;
    }
    /* The sums are read under the lock, so each snapshot's reads come after
     * the previous one's and the 64-bit total only grows (mod 2^64) from
     * one to the next. */
    sum_total *t = m->sums;
    pthread_mutex_lock(&t->lock);
    uint64_t now = 0;
    for (uint32_t i = 0; i <= m->mask; i++)
        now += atomic_load_explicit(&m->stripes[i].sum[kind], memory_order_relaxed);
    uint64_t grew = now - t->last[kind];
    t->last[kind] = now;
    t->lo[kind] += grew;
    t->hi[kind] += t->lo[kind] < grew; /* carry */
    out->sum_ns = (double)t->hi[kind] * 18446744073709551616.0 + (double)t->lo[kind];
    pthread_mutex_unlock(&t->lock);
}

void dbpool__metrics_histogram(const dbpool_metrics *m, dbpool_histogram_kind kind, dbpool_histogram *out) {
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    for (int b = 0; b < DBPOOL_HISTOGRAM_BUCKETS; b++)
        out->upper_bound_s[b] = coarse_s[b];
    if (!m)
        return;
    snapshot snap;
    take(m, kind, &snap);
    uint64_t cum = 0;
    uint32_t k = 0;
    for (int b = 0; b < DBPOOL_HISTOGRAM_BUCKETS; b++) {
        for (; k <= g_coarse_last_slot[b]; k++)
            cum += snap.slot[k];
        out->cumulative[b] = cum;
    }
    out->count = snap.count;
    out->sum_s = snap.sum_ns / 1e9;
    out->max_s = (double)snap.max_ns / 1e9;
}

/* The q-quantile in nanoseconds: find the slot holding rank q*count and
 * interpolate linearly inside it, never above the exact maximum. A slot
 * [lo, hi) holds whole nanoseconds lo .. hi - 1, so that is the range
 * interpolated over: a slot one nanosecond wide (every value below 16 ns)
 * gives its value exactly. The overflow slot (2^42 ns and more) has no
 * upper edge to interpolate towards: a rank there is reported as the
 * maximum, which is in that slot. */
static double quantile_ns(const snapshot *s, double q) {
    if (s->count == 0)
        return 0;
    double rank = q * (double)s->count;
    if (rank < 1)
        rank = 1;
    double max = (double)s->max_ns;
    uint64_t before = 0;
    for (uint32_t k = 0; k < g_nslots; k++) {
        uint64_t c = s->slot[k];
        if (c == 0)
            continue;
        if ((double)(before + c) >= rank) {
            double lo = (double)g_slot_lo[k];
            /* The maximum can lag the slot by an observation in flight:
             * never report less than the slot's lower edge. */
            if (g_slot_hi[k] == UINT64_MAX)
                return max > lo ? max : lo;
            double hi = (double)(g_slot_hi[k] - 1);
            if (hi > max)
                hi = max;
            if (hi < lo)
                hi = lo;
            return lo + (hi - lo) * ((rank - (double)before) / (double)c);
        }
        before += c;
    }
    return max;
}

void dbpool__metrics_latency(const dbpool_metrics *m, dbpool_histogram_kind kind, dbpool_latency *out) {
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!m)
        return;
    snapshot snap;
    take(m, kind, &snap);
    out->count = snap.count;
    if (snap.count == 0)
        return;
    /* Whole nanoseconds: finer digits would be noise (the buckets are 12.5%
     * wide) and make the JSON harder to read. */
    /* The sum is read after the buckets, so it can hold observations made
     * during the snapshot that the count does not: on a young histogram
     * enough to put the mean above the maximum (7.2 ms against 0.16 ms). */
    double mean_ns = round(snap.sum_ns / (double)snap.count);
    out->mean_ms = (mean_ns < (double)snap.max_ns ? mean_ns : (double)snap.max_ns) / 1e6;
    out->p50_ms = round(quantile_ns(&snap, 0.50)) / 1e6;
    out->p95_ms = round(quantile_ns(&snap, 0.95)) / 1e6;
    out->p99_ms = round(quantile_ns(&snap, 0.99)) / 1e6;
    out->max_ms = (double)snap.max_ns / 1e6;
}

void dbpool__metrics_record_zeros(dbpool_metrics *m, dbpool_histogram_kind kind, uint64_t n) {
    if (!m || (unsigned)kind >= DBPOOL_HIST_COUNT || n == 0)
        return;
    stripe *s = &m->stripes[thread_index() & m->mask];
    atomic_fetch_add_explicit(&s->slot[kind][g_split[0].base], n, memory_order_relaxed);
}

void dbpool_get_histogram(dbpool *p, dbpool_histogram_kind kind, dbpool_histogram *out) {
    if (p && kind == DBPOOL_HIST_ACQUIRE) {
        dbpool__lock(p);
        dbpool__fold_fast_leases_locked(p);
        dbpool__unlock(p);
    }
    /* The bounds are filled even for a NULL pool or an unknown kind. */
    dbpool__metrics_histogram(p ? p->metrics : NULL, kind, out);
}
