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
 * on the calling thread's stripe.
 *
 * Own stripes. A thread takes one of 64 process-wide writer numbers at its
 * first record (a bit in g_writers_taken; given back by a thread-specific
 * destructor when the thread exits) and, in each pool it records into, a
 * stripe that only the holder of that number writes: its adds are a
 * relaxed load and a relaxed store, with no locked instruction. Two locked
 * adds were a fifth of a thread-cache lease (33 ns -> 27 ns single-threaded
 * here), and a stripe no other thread writes never bounces between
 * caches. A pool's own stripes are allocated at a writer's first record in
 * it (10.7 KiB each, at most 64 per pool). A number passes to a new thread
 * only after its old holder has exited (release at the give-back, acquire
 * at the take), so the new holder continues the old one's counts.
 *
 * Shared stripes take the rest: threads that come while all 64 numbers
 * are held (until one is given back: they look again at each record, one
 * relaxed load of g_writers_taken, while all are held), a thread whose
 * own stripe could not be allocated, records made by thread-specific
 * destructors after the give-back, and the pools' own threads
 * (connectors, maintenance, keepalive: dbpool__metrics_thread_shared).
 * Those record a connect now and then and live as long as their pool:
 * holding numbers, 32 idle pools' connectors took all 64, and every
 * application thread recorded through the shared stripes. Their adds are relaxed atomic adds;
 * they are cache-line aligned (128 bytes: the adjacent-line prefetcher
 * pairs lines), one per power of two >= 2 x CPUs, 4 to 16, and a thread's
 * one is fixed by an index it takes once from a global counter. The count
 * is the sum of the slots, so a snapshot's +Inf bucket always equals its
 * count.
 *
 * Snapshots sum all stripes with relaxed loads: an observation in flight may
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
#include "perturb.h"
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

#define WRITERS 64u

struct dbpool_metrics {
    stripe *stripes; /* shared */
    uint32_t mask;   /* nstripes - 1 */
    sum_total *sums; /* written by snapshots of a const dbpool_metrics */
    /* Own stripes by writer number; set once, by the number's holder. */
    _Atomic(stripe *) own[WRITERS];
};

/* Writer numbers (see the top of the file). */
static _Atomic uint64_t g_writers_taken; /* bit n: number n is held */
static pthread_key_t g_writer_key;       /* its value: the number + 1, for the give-back */
static bool g_writer_key_made;
static pthread_once_t g_writer_once = PTHREAD_ONCE_INIT;
#define WRITER_SHARED UINT32_MAX /* no number: this thread uses the shared stripes */
/* No number yet: all were held at this thread's last try. It records
 * through the shared stripes and tries again once one is free. */
#define WRITER_WAITING (UINT32_MAX - 1u)
#if defined(__GNUC__) || defined(__clang__)
__attribute__((tls_model("initial-exec")))
#endif
static _Thread_local uint32_t tl_writer; /* number + 1; 0: not asked for yet; or WRITER_SHARED */

static void writer_give_back(void *value) {
    uint32_t n = (uint32_t)(uintptr_t)value - 1u;
    /* Whatever this thread records from here on (a later destructor that
     * releases a connection) goes to the shared stripes. */
    tl_writer = WRITER_SHARED;
    DBPOOL_PERTURB(); /* the number still held: a new thread must not get it yet */
    if (n < WRITERS)
        atomic_fetch_and_explicit(&g_writers_taken, ~(UINT64_C(1) << n), memory_order_release);
}

static void writer_key_make(void) {
    g_writer_key_made = pthread_key_create(&g_writer_key, writer_give_back) == 0;
}

#if defined(__GNUC__) || defined(__clang__)
/* A library unloaded with dlclose must not leave its destructor behind for
 * the threads that outlive it. */
__attribute__((destructor)) static void writer_key_unmake(void) {
    if (g_writer_key_made)
        pthread_key_delete(g_writer_key);
}
#endif

/* The calling thread's writer number + 1, taken now if it has none;
 * WRITER_WAITING when all are held, WRITER_SHARED when the thread can
 * never hold one (no thread-specific key for the give-back). */
static uint32_t writer_take(void) {
    pthread_once(&g_writer_once, writer_key_make);
    if (!g_writer_key_made)
        return tl_writer = WRITER_SHARED;
    uint64_t taken = atomic_load_explicit(&g_writers_taken, memory_order_relaxed);
    while (~taken) {
        unsigned n = (unsigned)__builtin_ctzll(~taken);
        uint64_t bit = UINT64_C(1) << n;
        DBPOOL_PERTURB(); /* another thread may take the same number, or give one back */
        if (!atomic_compare_exchange_weak_explicit(&g_writers_taken, &taken, taken | bit,
                                                   memory_order_acquire, memory_order_relaxed))
            continue;
        if (pthread_setspecific(g_writer_key, (void *)(uintptr_t)(n + 1u)) != 0) {
            atomic_fetch_and_explicit(&g_writers_taken, ~bit, memory_order_release);
            break;
        }
        return tl_writer = n + 1u;
    }
    /* Not for good: a thread that came while a burst of threads held every
     * number recorded through the shared stripes (atomic adds, cache lines
     * shared with other threads) for its whole life, however many numbers
     * were given back once the burst was over. */
    return tl_writer = ~taken ? WRITER_SHARED : WRITER_WAITING;
}

void dbpool__metrics_thread_shared(void) { tl_writer = WRITER_SHARED; }

uint32_t dbpool__metrics_own_stripes(const dbpool_metrics *m) {
    uint32_t n = 0;
    for (uint32_t w = 0; w < WRITERS; w++)
        n += atomic_load_explicit(&((dbpool_metrics *)m)->own[w], memory_order_relaxed) != NULL;
    return n;
}

uint32_t dbpool__metrics_writers_held(void) {
    return (uint32_t)__builtin_popcountll(atomic_load_explicit(&g_writers_taken, memory_order_relaxed));
}

void dbpool__metrics_forked_child(void) {
    /* Only the forking thread lives on: every other number is free. */
    uint32_t w = tl_writer;
    atomic_store_explicit(&g_writers_taken, w - 1u < WRITERS ? UINT64_C(1) << (w - 1u) : 0,
                          memory_order_relaxed);
}

static stripe *stripe_new(void) {
    stripe *s = aligned_alloc(alignof(stripe), sizeof(stripe));
    if (s)
        memset(s, 0, sizeof *s); /* all-zero is a valid atomic 0 here */
    return s;
}

/* The calling thread's own stripe in m, or NULL: record into a shared one. */
static inline stripe *own_stripe(dbpool_metrics *m) {
    uint32_t w = tl_writer;
    if (__builtin_expect(w - 1u >= WRITERS, 0)) {
        if (w == WRITER_SHARED ||
            (w == WRITER_WAITING && !~atomic_load_explicit(&g_writers_taken, memory_order_relaxed)))
            return NULL;
        w = writer_take();
        if (w - 1u >= WRITERS)
            return NULL;
    }
    /* Relaxed: only this number's holders ever store it, and a new holder
     * took the number after the old one's last store (acquire at the take). */
    stripe *s = atomic_load_explicit(&m->own[w - 1u], memory_order_relaxed);
    if (__builtin_expect(s == NULL, 0)) {
        s = stripe_new();
        if (!s)
            return NULL; /* the shared stripes, until an allocation works */
        /* Release: a snapshot that sees the pointer sees the zeros. */
        atomic_store_explicit(&m->own[w - 1u], s, memory_order_release);
    }
    return s;
}

/* An add that only one thread makes to this counter at a time. */
static inline void own_add(_Atomic uint64_t *a, uint64_t v) {
    atomic_store_explicit(a, atomic_load_explicit(a, memory_order_relaxed) + v, memory_order_relaxed);
}

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
    for (uint32_t w = 0; w < WRITERS; w++)
        free(atomic_load_explicit(&m->own[w], memory_order_acquire));
    free(m);
}

void dbpool__metrics_record(dbpool_metrics *m, dbpool_histogram_kind kind, int64_t ns) {
    if (!m || (unsigned)kind >= DBPOOL_HIST_COUNT)
        return;
    uint64_t v = ns > 0 ? (uint64_t)ns : 0;
    const split_entry *e = &g_split[fine_index(v)];
    uint32_t slot = e->base + (v > e->at);
    stripe *s = own_stripe(m);
    if (__builtin_expect(s != NULL, 1)) {
        own_add(&s->slot[kind][slot], 1);
        DBPOOL_PERTURB(); /* a snapshot between the slot and the sum and maximum */
        own_add(&s->sum[kind], v);
        if (v > atomic_load_explicit(&s->max[kind], memory_order_relaxed))
            atomic_store_explicit(&s->max[kind], v, memory_order_relaxed);
        return;
    }
    s = &m->stripes[thread_index() & m->mask];
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

/* Stripe i of all: the shared ones first, then the own ones (NULL where
 * no writer has recorded yet). */
static const stripe *stripe_at(const dbpool_metrics *m, uint32_t i) {
    if (i <= m->mask)
        return &m->stripes[i];
    return atomic_load_explicit(&((dbpool_metrics *)m)->own[i - m->mask - 1u], memory_order_acquire);
}

typedef struct snapshot {
    uint64_t slot[NSLOTS];
    uint64_t count, max_ns;
    double sum_ns; /* of the 128-bit total */
} snapshot;

static void take(const dbpool_metrics *m, dbpool_histogram_kind kind, snapshot *out) {
    memset(out, 0, sizeof *out);
    if (!m || (unsigned)kind >= DBPOOL_HIST_COUNT)
        return;
    for (uint32_t i = 0; i <= m->mask + WRITERS; i++) {
        const stripe *s = stripe_at(m, i);
        if (!s)
            continue;
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
    DBPOOL_PERTURB(); /* records land between the slots' reading and the sums' */
    sum_total *t = m->sums;
    pthread_mutex_lock(&t->lock);
    uint64_t now = 0;
    for (uint32_t i = 0; i <= m->mask + WRITERS; i++) {
        const stripe *s = stripe_at(m, i);
        if (s)
            now += atomic_load_explicit(&s->sum[kind], memory_order_relaxed);
    }
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
    stripe *s = own_stripe(m);
    if (s)
        own_add(&s->slot[kind][g_split[0].base], n);
    else
        atomic_fetch_add_explicit(&m->stripes[thread_index() & m->mask].slot[kind][g_split[0].base], n,
                                  memory_order_relaxed);
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
