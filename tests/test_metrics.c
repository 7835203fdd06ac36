/* Latency histograms (recorded through metrics.h directly), the fast clock,
 * and the two renderings of the statistics: JSON checked with jansson
 * against dbpool_get_stats, Prometheus text checked line by line against the
 * exposition format's rules. Uses the mock backend. */
#include "metrics.h"
#include "pool_internal.h"
#include "testsupport.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

static const double bounds_s[DBPOOL_HISTOGRAM_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30};

static int64_t bound_ns(int b) { return (int64_t)llround(bounds_s[b] * 1e9); }

/* ---------------------------------------------------------------------- */
/* Histograms                                                             */
/* ---------------------------------------------------------------------- */

static void assert_histogram_sane(const dbpool_histogram *h) {
    uint64_t prev = 0;
    for (int b = 0; b < DBPOOL_HISTOGRAM_BUCKETS; b++) {
        assert_true(h->upper_bound_s[b] == bounds_s[b]);
        assert_true(h->cumulative[b] >= prev);
        prev = h->cumulative[b];
    }
    assert_true(h->count >= prev);
}

/* Each Prometheus bound is an exact bucket edge: a value equal to the
 * bound is counted in it (le means <=), one nanosecond more is not. */
static void test_bounds_are_exact(void **state) {
    (void)state;
    dbpool_metrics *m = dbpool__metrics_new();
    assert_non_null(m);
    double sum_ns = 0;
    for (int b = 0; b < DBPOOL_HISTOGRAM_BUCKETS; b++) {
        dbpool__metrics_record(m, DBPOOL_HIST_USE, bound_ns(b));
        dbpool__metrics_record(m, DBPOOL_HIST_USE, bound_ns(b) + 1);
        sum_ns += (double)(2 * bound_ns(b) + 1);
    }
    dbpool__metrics_record(m, DBPOOL_HIST_USE, 0);
    dbpool__metrics_record(m, DBPOOL_HIST_USE, -5);                     /* clamped to 0 */
    dbpool__metrics_record(m, DBPOOL_HIST_USE, INT64_C(1000000000000)); /* 1000 s: +Inf only */
    sum_ns += 1e12;

    dbpool_histogram h;
    dbpool__metrics_histogram(m, DBPOOL_HIST_USE, &h);
    assert_histogram_sane(&h);
    for (int b = 0; b < DBPOOL_HISTOGRAM_BUCKETS; b++) {
        /* bounds 0..b, bounds 0..b-1 plus one, and the two zeros */
        assert_int_equal(h.cumulative[b], (uint64_t)(2 * b + 1 + 2));
    }
    assert_int_equal(h.count, 2 * DBPOOL_HISTOGRAM_BUCKETS + 3);
    assert_true(fabs(h.sum_s - sum_ns / 1e9) < 1e-6);
    assert_true(h.max_s == 1000.0);

    /* The other kinds are untouched. */
    dbpool__metrics_histogram(m, DBPOOL_HIST_ACQUIRE, &h);
    assert_int_equal(h.count, 0);
    assert_int_equal(h.cumulative[DBPOOL_HISTOGRAM_BUCKETS - 1], 0);
    dbpool_latency l;
    dbpool__metrics_latency(m, DBPOOL_HIST_CONNECT, &l);
    assert_int_equal(l.count, 0);
    assert_true(l.p99_ms == 0 && l.max_ms == 0);
    dbpool__metrics_free(m);
    dbpool__metrics_free(NULL);
}

/* Every value lands in the bucket whose bounds hold it. */
static void test_values_land_in_right_bucket(void **state) {
    (void)state;
    uint64_t seed = 88172645463325252ull;
    for (int i = 0; i < 2000; i++) {
        dbpool_metrics *m = dbpool__metrics_new();
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        /* log-uniform over 1 ns .. ~70 s */
        int64_t v = (int64_t)exp((double)(seed % 1000000) / 1000000.0 * log(7e10));
        dbpool__metrics_record(m, DBPOOL_HIST_ACQUIRE, v);
        dbpool_histogram h;
        dbpool__metrics_histogram(m, DBPOOL_HIST_ACQUIRE, &h);
        for (int b = 0; b < DBPOOL_HISTOGRAM_BUCKETS; b++)
            assert_int_equal(h.cumulative[b], v <= bound_ns(b) ? 1u : 0u);
        assert_int_equal(h.count, 1);
        assert_true(h.max_s == (double)v / 1e9);
        dbpool_latency l;
        dbpool__metrics_latency(m, DBPOOL_HIST_ACQUIRE, &l);
        /* One observation: every percentile is within its bucket and never
         * above the exact maximum. */
        assert_true(l.p50_ms <= l.max_ms);
        assert_true(l.p50_ms >= (double)v / 1e6 * 0.87 - 1e-6);
        /* And, the only one, it is every percentile exactly. */
        if (l.p50_ms != l.max_ms || l.p95_ms != l.max_ms || l.p99_ms != l.max_ms)
            fail_msg("one observation of %lld ns: p50 %.9f, p95 %.9f, p99 %.9f ms, max %.9f ms", (long long)v,
                     l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms);
        dbpool__metrics_free(m);
    }
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Percentiles within one fine bucket (12.5%) of the true value. */
static void check_percentiles(int64_t *v, size_t n) {
    dbpool_metrics *m = dbpool__metrics_new();
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        dbpool__metrics_record(m, DBPOOL_HIST_CONNECT, v[i]);
        sum += (double)v[i];
    }
    qsort(v, n, sizeof *v, cmp_i64);
    dbpool_latency l;
    dbpool__metrics_latency(m, DBPOOL_HIST_CONNECT, &l);
    assert_int_equal(l.count, n);
    assert_true(fabs(l.mean_ms - sum / (double)n / 1e6) <= 0.5e-6 + 1e-12); /* whole ns */
    assert_true(l.max_ms == (double)v[n - 1] / 1e6);
    const double qs[3] = {0.50, 0.95, 0.99};
    const double got[3] = {l.p50_ms, l.p95_ms, l.p99_ms};
    for (int i = 0; i < 3; i++) {
        double truth = (double)v[(size_t)ceil(qs[i] * (double)n) - 1] / 1e6;
        if (fabs(got[i] - truth) > truth * 0.125 + 1e-6)
            fail_msg("p%g: got %.6f ms, true %.6f ms", qs[i] * 100, got[i], truth);
    }
    dbpool__metrics_free(m);
}

static void test_percentiles_known_distributions(void **state) {
    (void)state;
    enum { N = 100000 };
    int64_t *v = malloc(N * sizeof *v);
    assert_non_null(v);
    /* uniform 1 us .. 100 ms */
    for (int i = 0; i < N; i++)
        v[i] = (int64_t)(i + 1) * 1000;
    check_percentiles(v, N);
    /* log-normal around 2 ms, sigma 1 */
    uint64_t seed = 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < N; i++) {
        double u1, u2;
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        u1 = ((double)(seed >> 11) + 1) / 9007199254740993.0;
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        u2 = (double)(seed >> 11) / 9007199254740992.0;
        double z = sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
        v[i] = (int64_t)(2e6 * exp(z));
    }
    check_percentiles(v, N);
    /* sub-microsecond values (an idle connection handed out at once) */
    for (int i = 0; i < N; i++)
        v[i] = 100 + i % 400;
    check_percentiles(v, N);
    free(v);
}

/* Long holds and waits (a batch job's lease, an acquire with a long
 * timeout): the fine buckets reach 2^42 ns (73 min), so percentiles stay
 * within one bucket of the truth up there too. */
static void test_percentiles_above_a_minute(void **state) {
    (void)state;
    static const int64_t s = INT64_C(1000000000);
    dbpool_metrics *m = dbpool__metrics_new();
    for (int i = 0; i < 4; i++)
        dbpool__metrics_record(m, DBPOOL_HIST_USE, 90 * s);
    dbpool_latency l;
    dbpool__metrics_latency(m, DBPOOL_HIST_USE, &l);
    /* Every observation is 90 s: no percentile may be below the lower edge
     * of its fine bucket, 10 x 2^33 ns = 85.9 s (p50 was 79.4 s), nor above
     * it. */
    const double edge_ms = (double)(INT64_C(10) << 33) / 1e6;
    const double got[3] = {l.p50_ms, l.p95_ms, l.p99_ms};
    for (int i = 0; i < 3; i++)
        if (got[i] < edge_ms || got[i] > 90000.0)
            fail_msg("4 x 90 s: percentile %d is %.3f ms", i, got[i]);
    assert_true(l.max_ms == 90000.0);
    dbpool__metrics_free(m);

    m = dbpool__metrics_new();
    for (int i = 0; i < 100; i++)
        dbpool__metrics_record(m, DBPOOL_HIST_ACQUIRE, 600 * s);
    dbpool__metrics_latency(m, DBPOOL_HIST_ACQUIRE, &l);
    if (l.p50_ms < 600000.0 * 0.875 || l.p50_ms > 600000.0) /* was 334 s */
        fail_msg("100 x 600 s: p50 is %.3f ms", l.p50_ms);
    assert_true(l.p99_ms >= 600000.0 * 0.875 && l.p99_ms <= 600000.0);
    dbpool__metrics_free(m);

    /* Log-uniform 1 ms .. 70 min: every percentile within 12.5%. */
    enum { N = 20000 };
    int64_t *v = malloc(N * sizeof *v);
    assert_non_null(v);
    uint64_t seed = 0x2545F4914F6CDD1Dull;
    for (int i = 0; i < N; i++) {
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        v[i] = (int64_t)(1e6 * exp((double)(seed % 1000000) / 1000000.0 * log(4.2e6)));
    }
    check_percentiles(v, N);
    /* All of them between 1 and 60 minutes (multiples of 16 ns: the test's
     * double sum stays exact). */
    for (int i = 0; i < N; i++)
        v[i] = 60 * s + (int64_t)i * (59 * 60 * s / N);
    check_percentiles(v, N);
    free(v);
}

/* Past the last fine bucket (2^42 ns, 73 min) a percentile is the exact
 * maximum: never below the bucket's lower edge, never above the maximum. */
static void test_percentiles_past_last_bucket(void **state) {
    (void)state;
    static const int64_t hour = INT64_C(3600000000000);
    const double top_ms = (double)(INT64_C(1) << 42) / 1e6;
    dbpool_metrics *m = dbpool__metrics_new();
    for (int i = 0; i < 9; i++)
        dbpool__metrics_record(m, DBPOOL_HIST_USE, 2 * hour);
    dbpool__metrics_record(m, DBPOOL_HIST_USE, 5 * hour);
    dbpool_latency l;
    dbpool__metrics_latency(m, DBPOOL_HIST_USE, &l);
    assert_true(l.max_ms == 5.0 * 3600000.0);
    const double got[3] = {l.p50_ms, l.p95_ms, l.p99_ms};
    for (int i = 0; i < 3; i++) {
        if (got[i] < top_ms || got[i] > l.max_ms)
            fail_msg("percentile %d is %.3f ms, outside [%.3f, %.3f]", i, got[i], top_ms, l.max_ms);
        assert_true(got[i] == l.max_ms); /* documented: the maximum */
    }
    /* A few long ones among short ones do not move p50. */
    for (int i = 0; i < 1000; i++)
        dbpool__metrics_record(m, DBPOOL_HIST_USE, 1000000);
    dbpool__metrics_latency(m, DBPOOL_HIST_USE, &l);
    assert_true(l.p50_ms >= 0.875 && l.p50_ms <= 1.0);
    assert_true(l.p99_ms >= 0.875 && l.p99_ms <= 1.0); /* rank 999.9 of 1010 */
    for (int i = 0; i < 10; i++)                       /* now 20 of 1020 are long */
        dbpool__metrics_record(m, DBPOOL_HIST_USE, 3 * hour);
    dbpool__metrics_latency(m, DBPOOL_HIST_USE, &l);
    assert_true(l.p99_ms == l.max_ms);
    dbpool__metrics_free(m);
}

/* Below 16 ns every value has its own bucket: percentiles are exact, not
 * one nanosecond above (a pool whose waits were nearly all 0 ns reported
 * p50 = 1 ns). */
static void test_small_values_exact(void **state) {
    (void)state;
    dbpool_metrics *m = dbpool__metrics_new();
    dbpool__metrics_record_zeros(m, DBPOOL_HIST_ACQUIRE, 1000); /* the fast path's waits */
    dbpool__metrics_record(m, DBPOOL_HIST_ACQUIRE, 500);
    dbpool_latency l;
    dbpool__metrics_latency(m, DBPOOL_HIST_ACQUIRE, &l);
    assert_int_equal(l.count, 1001);
    assert_true(l.p50_ms == 0 && l.p95_ms == 0 && l.p99_ms == 0);
    assert_true(l.max_ms == 500e-6);
    dbpool__metrics_free(m);

    m = dbpool__metrics_new();
    for (int i = 0; i < 100; i++)
        dbpool__metrics_record(m, DBPOOL_HIST_USE, 5);
    dbpool__metrics_record(m, DBPOOL_HIST_USE, 10);
    dbpool__metrics_latency(m, DBPOOL_HIST_USE, &l);
    assert_true(l.p50_ms == 5e-6 && l.p99_ms == 5e-6);
    dbpool__metrics_free(m);

    /* 0 .. 15 ns, ten of each: the true percentiles, exactly. */
    m = dbpool__metrics_new();
    for (int v = 0; v < 16; v++)
        for (int i = 0; i < 10; i++)
            dbpool__metrics_record(m, DBPOOL_HIST_CONNECT, v);
    dbpool__metrics_latency(m, DBPOOL_HIST_CONNECT, &l);
    assert_true(l.p50_ms == 7e-6);  /* the 80th of 160 */
    assert_true(l.p95_ms == 15e-6); /* the 152nd */
    assert_true(l.p99_ms == 15e-6);
    dbpool__metrics_free(m);
}

/* The sum is kept in 64-bit nanoseconds per stripe, which wraps after 2^64
 * ns (584 years) of observed time: 1000 connections leased around the
 * clock reach that in about 7 months. Snapshots carry the wrap over, so a
 * histogram that is read now and then keeps an exact sum. */
static void test_sum_survives_wrap(void **state) {
    (void)state;
    dbpool_metrics *m = dbpool__metrics_new();
    const int64_t big = INT64_MAX / 4; /* 73 years */
    double want_s = 0;
    dbpool_histogram h;
    dbpool_latency l;
    for (int i = 1; i <= 12; i++) { /* 12 x 2^61 ns = 1.5 x 2^64 ns */
        dbpool__metrics_record(m, DBPOOL_HIST_USE, big);
        want_s += (double)big / 1e9;
        dbpool__metrics_histogram(m, DBPOOL_HIST_USE, &h); /* a scrape */
        if (fabs(h.sum_s - want_s) > want_s * 1e-12)
            fail_msg("after %d: sum %.6g s, want %.6g s", i, h.sum_s, want_s);
        dbpool__metrics_latency(m, DBPOOL_HIST_USE, &l);
        if (fabs(l.mean_ms - (double)big / 1e6) > (double)big / 1e6 * 1e-12)
            fail_msg("after %d: mean %.6g ms, want %.6g ms", i, l.mean_ms, (double)big / 1e6);
    }
    dbpool__metrics_free(m);
}

enum { THREADS = 4, PER_THREAD = 250000 };

typedef struct {
    dbpool_metrics *m;
    int t;
} rec_arg;

static void *recorder(void *arg) {
    rec_arg *a = arg;
    for (int i = 0; i < PER_THREAD; i++)
        dbpool__metrics_record(a->m, DBPOOL_HIST_ACQUIRE, (int64_t)(i % 1000) * 1000 + a->t);
    return NULL;
}

/* Four threads record at once: nothing is lost or counted twice. */
static void test_concurrent_recording(void **state) {
    (void)state;
    dbpool_metrics *m = dbpool__metrics_new();
    pthread_t th[THREADS];
    rec_arg args[THREADS];
    for (int t = 0; t < THREADS; t++) {
        args[t] = (rec_arg){m, t};
        assert_int_equal(pthread_create(&th[t], NULL, recorder, &args[t]), 0);
    }
    /* Snapshots while recording stay well-formed. */
    for (int i = 0; i < 50; i++) {
        dbpool_histogram h;
        dbpool__metrics_histogram(m, DBPOOL_HIST_ACQUIRE, &h);
        assert_histogram_sane(&h);
    }
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    dbpool_histogram h;
    dbpool__metrics_histogram(m, DBPOOL_HIST_ACQUIRE, &h);
    assert_int_equal(h.count, (uint64_t)THREADS * PER_THREAD);
    uint64_t sum = 0;
    for (int t = 0; t < THREADS; t++)
        for (int i = 0; i < PER_THREAD; i++)
            sum += (uint64_t)(i % 1000) * 1000 + (uint64_t)t;
    assert_true(fabs(h.sum_s - (double)sum / 1e9) < 1e-6);
    assert_true(h.max_s == (999.0 * 1000 + THREADS - 1) / 1e9);
    /* 0 .. 999 us: 100 us holds i in 0..100 (101 values per 1000) */
    assert_int_equal(h.cumulative[0], (uint64_t)THREADS * (PER_THREAD / 1000) * 100 +
                                          (uint64_t)(PER_THREAD / 1000)); /* t == 0 at exactly 100 us */
    assert_int_equal(h.cumulative[3], h.count);                           /* all <= 1 ms */
    dbpool__metrics_free(m);
}

/* More threads at once than there are writer numbers (64), in waves: the
 * threads past the 64th record into the shared stripes, and each wave's
 * threads take the numbers the last wave's gave back as they exited,
 * continuing those stripes. Nothing is lost or counted twice, and a pool
 * never holds more than 64 stripes of its own. */
static void *record_once(void *arg) {
    dbpool__metrics_record(arg, DBPOOL_HIST_USE, 5);
    return NULL;
}

enum { WAVE_THREADS = 80, WAVES = 3, WAVE_RECORDS = 2000 };

typedef struct wave_arg {
    dbpool_metrics *m;
    pthread_barrier_t *all_alive; /* every thread of the wave holds its number at once */
    int t;
} wave_arg;

static void *wave_recorder(void *arg) {
    wave_arg *a = arg;
    dbpool__metrics_record(a->m, DBPOOL_HIST_USE, a->t);
    pthread_barrier_wait(a->all_alive);
    for (int i = 1; i < WAVE_RECORDS; i++)
        dbpool__metrics_record(a->m, DBPOOL_HIST_USE, (int64_t)i * 1000 + a->t);
    return NULL;
}

static void test_more_threads_than_writer_numbers(void **state) {
    (void)state;
    dbpool_metrics *m = dbpool__metrics_new();
    assert_non_null(m);
    pthread_barrier_t all_alive;
    assert_int_equal(pthread_barrier_init(&all_alive, NULL, WAVE_THREADS), 0);
    uint64_t want_count = 0, want_sum = 0, want_max = 0;
    for (int w = 0; w < WAVES; w++) {
        pthread_t th[WAVE_THREADS];
        wave_arg args[WAVE_THREADS];
        for (int t = 0; t < WAVE_THREADS; t++) {
            args[t] = (wave_arg){m, &all_alive, w * WAVE_THREADS + t};
            assert_int_equal(pthread_create(&th[t], NULL, wave_recorder, &args[t]), 0);
        }
        for (int t = 0; t < WAVE_THREADS; t++) {
            pthread_join(th[t], NULL);
            uint64_t id = (uint64_t)args[t].t;
            want_count += WAVE_RECORDS;
            want_sum += id + (uint64_t)WAVE_RECORDS * (WAVE_RECORDS - 1) / 2 * 1000 + (WAVE_RECORDS - 1) * id;
            uint64_t top = (uint64_t)(WAVE_RECORDS - 1) * 1000 + id;
            if (top > want_max)
                want_max = top;
        }
        dbpool_histogram h;
        dbpool__metrics_histogram(m, DBPOOL_HIST_USE, &h);
        if (h.count != want_count)
            fail_msg("after wave %d: count %llu, want %llu", w + 1, (unsigned long long)h.count,
                     (unsigned long long)want_count);
        if (fabs(h.sum_s - (double)want_sum / 1e9) > 1e-9)
            fail_msg("after wave %d: sum %.9f s, want %.9f s", w + 1, h.sum_s, (double)want_sum / 1e9);
        assert_true(h.max_s == (double)want_max / 1e9);
        assert_true(dbpool__metrics_own_stripes(m) <= 64);
    }
    /* 80 at once: the numbers were all held (the main thread may hold
     * one too), and the later waves reused them rather than growing. */
    assert_true(dbpool__metrics_own_stripes(m) >= 63);
    /* The last wave's numbers were given back at its exit: a new thread
     * gets one, and a stripe of its own in a new pool. */
    dbpool_metrics *fresh = dbpool__metrics_new();
    assert_non_null(fresh);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, record_once, fresh), 0);
    pthread_join(t, NULL);
    assert_int_equal(dbpool__metrics_own_stripes(fresh), 1);
    dbpool__metrics_free(fresh);
    pthread_barrier_destroy(&all_alive);
    dbpool__metrics_free(m);
}

/* Threads parked holding writer numbers, for the fork test. */
typedef struct holder_arg {
    dbpool_metrics *m;
    pthread_barrier_t *recorded;
    pthread_mutex_t *lock;
    pthread_cond_t *cond;
    bool *done;
} holder_arg;

static void *number_holder(void *arg) {
    holder_arg *a = arg;
    dbpool__metrics_record(a->m, DBPOOL_HIST_USE, 1);
    pthread_barrier_wait(a->recorded);
    pthread_mutex_lock(a->lock);
    while (!*a->done)
        pthread_cond_wait(a->cond, a->lock);
    pthread_mutex_unlock(a->lock);
    return NULL;
}

/* A thread that comes while every writer number is held records through
 * the shared stripes, but only until a number is free again: it used to
 * stay there for its whole life, so that the threads a burst had started
 * (a thread pool grown past 64 and shrunk back) kept paying atomic adds on
 * shared cache lines for good. */
typedef struct late_arg {
    dbpool_metrics *m;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int phase; /* 1: recorded while all were held; 2: record again; 3: done */
} late_arg;

static void *late_recorder(void *arg) {
    late_arg *a = arg;
    dbpool__metrics_record(a->m, DBPOOL_HIST_USE, 7);
    pthread_mutex_lock(&a->lock);
    a->phase = 1;
    pthread_cond_broadcast(&a->cond);
    while (a->phase != 2)
        pthread_cond_wait(&a->cond, &a->lock);
    pthread_mutex_unlock(&a->lock);
    dbpool__metrics_record(a->m, DBPOOL_HIST_USE, 9);
    pthread_mutex_lock(&a->lock);
    a->phase = 3;
    pthread_cond_broadcast(&a->cond);
    pthread_mutex_unlock(&a->lock);
    return NULL;
}

static void test_late_thread_takes_a_number_given_back(void **state) {
    (void)state;
    dbpool_metrics *m = dbpool__metrics_new();
    assert_non_null(m);
    dbpool__metrics_record(m, DBPOOL_HIST_USE, 1); /* this thread's number, if it can have one */
    int holders = 64 - (int)dbpool__metrics_writers_held();
    assert_true(holders > 0 && holders <= 64);
    pthread_t th[64];
    holder_arg *args = calloc((size_t)holders, sizeof *args);
    assert_non_null(args);
    pthread_barrier_t recorded;
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
    bool done = false;
    assert_int_equal(pthread_barrier_init(&recorded, NULL, (unsigned)holders + 1), 0);
    for (int i = 0; i < holders; i++) {
        args[i] = (holder_arg){m, &recorded, &lock, &cond, &done};
        assert_int_equal(pthread_create(&th[i], NULL, number_holder, &args[i]), 0);
    }
    pthread_barrier_wait(&recorded);
    assert_int_equal(dbpool__metrics_writers_held(), 64);

    /* The late thread records into a pool of its own: a stripe of its own
     * there says it holds a number. */
    late_arg late = {.m = dbpool__metrics_new(), .phase = 0};
    assert_non_null(late.m);
    pthread_mutex_init(&late.lock, NULL);
    pthread_cond_init(&late.cond, NULL);
    pthread_t lt;
    assert_int_equal(pthread_create(&lt, NULL, late_recorder, &late), 0);
    pthread_mutex_lock(&late.lock);
    while (late.phase != 1)
        pthread_cond_wait(&late.cond, &late.lock);
    pthread_mutex_unlock(&late.lock);
    assert_int_equal(dbpool__metrics_own_stripes(late.m), 0); /* all held: the shared stripes */

    /* The burst is over: the holders exit and give their numbers back. */
    pthread_mutex_lock(&lock);
    done = true;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
    for (int i = 0; i < holders; i++)
        pthread_join(th[i], NULL);

    pthread_mutex_lock(&late.lock);
    late.phase = 2;
    pthread_cond_broadcast(&late.cond);
    while (late.phase != 3)
        pthread_cond_wait(&late.cond, &late.lock);
    pthread_mutex_unlock(&late.lock);
    assert_int_equal(dbpool__metrics_own_stripes(late.m), 1);
    assert_true(dbpool__metrics_writers_held() <= 2); /* this thread's and the late one's */
    pthread_join(lt, NULL);
    dbpool_histogram h;
    dbpool__metrics_histogram(late.m, DBPOOL_HIST_USE, &h);
    assert_int_equal(h.count, 2); /* one in a shared stripe, one in its own */
    assert_true(fabs(h.sum_s - 16e-9) < 1e-15);

    pthread_barrier_destroy(&recorded);
    pthread_mutex_destroy(&late.lock);
    pthread_cond_destroy(&late.cond);
    free(args);
    dbpool__metrics_free(late.m);
    dbpool__metrics_free(m);
}

/* A fork child has only the forking thread: the numbers the parent's other
 * threads held are free there (when they stayed held, every thread the
 * child started recorded through the shared stripes for its whole life). */
static void test_fork_child_frees_writer_numbers(void **state) {
    (void)state;
    enum { HOLDERS = 70 };
    dbpool__fork_watch(); /* what dbpool_open does: installs the fork handlers */
    dbpool_metrics *m = dbpool__metrics_new();
    assert_non_null(m);
    pthread_barrier_t recorded;
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
    bool done = false;
    assert_int_equal(pthread_barrier_init(&recorded, NULL, HOLDERS + 1), 0);
    pthread_t th[HOLDERS];
    holder_arg arg = {m, &recorded, &lock, &cond, &done};
    for (int t = 0; t < HOLDERS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, number_holder, &arg), 0);
    pthread_barrier_wait(&recorded);
    assert_int_equal(dbpool__metrics_writers_held(), 64); /* 70 holders: every number is held */
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) /* at most the forking thread's own (no thread is started here: TSan cannot) */
        _exit(dbpool__metrics_writers_held() <= 1 ? 0 : 3);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    pthread_mutex_lock(&lock);
    done = true;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
    for (int t = 0; t < HOLDERS; t++)
        pthread_join(th[t], NULL);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    dbpool_histogram h;
    dbpool__metrics_histogram(m, DBPOOL_HIST_USE, &h);
    assert_int_equal(h.count, HOLDERS);
    pthread_barrier_destroy(&recorded);
    dbpool__metrics_free(m);
}

/* A recorder of ever larger values (each a new maximum, in a higher
 * bucket), restarting on a fresh histogram when told. */
typedef struct growing_arg {
    dbpool_metrics *_Atomic m;
    atomic_bool stop;
} growing_arg;

static void *grow(void *arg) {
    growing_arg *a = arg;
    while (!atomic_load(&a->stop)) {
        dbpool_metrics *m = atomic_load(&a->m);
        for (int64_t v = 1000; v < (INT64_C(1) << 40) && atomic_load(&a->m) == m; v += v / 7 + 1)
            dbpool__metrics_record(m, DBPOOL_HIST_USE, v);
    }
    return NULL;
}

/* A snapshot taken while an observation is in flight (in its bucket, the
 * maximum not yet raised; in the sum, not yet counted) never reports a
 * percentile or a mean above the maximum: it did, e.g. count 1, p50
 * 0.00096 ms, max 0; or count 37, mean 7.2 ms, max 0.16 ms. Bounded: GROW_ROUNDS
 * fresh histograms, 40 snapshots each, while another thread records
 * (about a second; without the fix nearly every run failed in the first
 * few hundred). */
#define GROW_ROUNDS 1000
static void test_percentiles_never_above_max_while_recording(void **state) {
    (void)state;
    growing_arg a;
    atomic_init(&a.m, dbpool__metrics_new());
    atomic_init(&a.stop, false);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, grow, &a), 0);
    dbpool_metrics *old[GROW_ROUNDS];
    int nold = 0, bad = 0;
    for (int r = 0; r < GROW_ROUNDS && !bad; r++) {
        dbpool_metrics *m = atomic_load(&a.m);
        for (int i = 0; i < 40 && !bad; i++) {
            dbpool_latency l;
            dbpool__metrics_latency(m, DBPOOL_HIST_USE, &l);
            dbpool_histogram h;
            dbpool__metrics_histogram(m, DBPOOL_HIST_USE, &h);
            if (l.p50_ms > l.max_ms || l.p95_ms > l.max_ms || l.p99_ms > l.max_ms || l.mean_ms > l.max_ms) {
                fprintf(stderr, "count %llu: mean %.9g p50 %.9g p95 %.9g p99 %.9g; max %.9g ms\n",
                        (unsigned long long)l.count, l.mean_ms, l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms);
                bad = 1;
            }
            /* Nor a bucket holding observations above the maximum. */
            for (int b = 1; b < DBPOOL_HISTOGRAM_BUCKETS && !bad; b++)
                if (h.cumulative[b] > h.cumulative[b - 1] && h.max_s <= h.upper_bound_s[b - 1]) {
                    fprintf(stderr, "bucket le=%g holds %llu, the maximum is %.9g s\n", h.upper_bound_s[b],
                            (unsigned long long)(h.cumulative[b] - h.cumulative[b - 1]), h.max_s);
                    bad = 1;
                }
        }
        old[nold++] = m;
        atomic_store(&a.m, dbpool__metrics_new()); /* the recorder moves on to it */
    }
    atomic_store(&a.stop, true);
    pthread_join(th, NULL);
    for (int r = 0; r < nold; r++)
        dbpool__metrics_free(old[r]);
    dbpool__metrics_free(atomic_load(&a.m));
    assert_int_equal(bad, 0);
}

static int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A fast-clock reading and a CLOCK_MONOTONIC reading taken together: the
 * tightest bracket of a few tries, so a preemption does not skew them. */
static void pair_now(int64_t *fast, int64_t *mono) {
    int64_t best = INT64_MAX;
    for (int i = 0; i < 20; i++) {
        int64_t a = mono_ns(), f = dbpool__fast_now_ns(), b = mono_ns();
        if (b - a < best) {
            best = b - a;
            *fast = f;
            *mono = a + (b - a) / 2;
        }
    }
}

static void test_fast_clock(void **state) {
    (void)state;
    int64_t prev = dbpool__fast_now_ns();
    for (int i = 0; i < 1000000; i++) {
        int64_t now = dbpool__fast_now_ns();
        assert_true(now >= prev);
        prev = now;
    }
    int64_t f0 = 0, m0 = 0, f1 = 0, m1 = 0;
    pair_now(&f0, &m0);
    dbt_sleep_ms(200);
    pair_now(&f1, &m1);
    double ratio = (double)(f1 - f0) / (double)(m1 - m0);
    if (ratio < 0.99 || ratio > 1.01)
        fail_msg("fast clock ran %.5f x CLOCK_MONOTONIC", ratio);
}

/* ---------------------------------------------------------------------- */
/* A pool to render                                                       */
/* ---------------------------------------------------------------------- */

/* Quote, backslash, space and a two-byte character: the characters a valid
 * name (UTF-8, no control characters) can hold that need care. */
static const char weird_name[] = "we\"ird\\pool name \xc3\xa9";

static dbpool *open_pool_max(const char *name, const char *url, int max_size) {
    dbpool_options o;
    dbt_options(&o, 1, max_size);
    o.maintenance_interval_ms = 0; /* nothing changes the stats behind our back */
    o.name = name;
    dbpool *p = NULL;
    dbpool_error e;
    if (dbpool_open(&p, url, &o, &e) != DBPOOL_OK)
        fail_msg("open: %s", e.message);
    return p;
}

static dbpool *open_pool(const char *name, const char *url) { return open_pool_max(name, url, 4); }

/* Some traffic: acquires, releases, a discard, a failed connect. */
static void exercise(dbpool *p) {
    dbpool_conn *c[3];
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < 3; i++)
            assert_int_equal(dbpool_acquire(p, 1000, &c[i], NULL), DBPOOL_OK);
        for (int i = 0; i < 3; i++)
            assert_int_equal(dbpool_release(c[i]), DBPOOL_OK);
    }
    assert_int_equal(dbpool_acquire(p, 1000, &c[0], NULL), DBPOOL_OK);
    assert_int_equal(dbpool_discard(c[0]), DBPOOL_OK);
}

/* Size, allocate, render; again if the text grew in between (the JSON's
 * uptime_s changes from call to call). */
static char *render(int (*fn)(dbpool *, char *, size_t), dbpool *p) {
    int n = fn(p, NULL, 0);
    for (int tries = 0; tries < 10; tries++) {
        assert_true(n > 0);
        char *buf = malloc((size_t)n + 1);
        assert_non_null(buf);
        int m = fn(p, buf, (size_t)n + 1);
        if (m <= n) {
            assert_int_equal(strlen(buf), (size_t)m);
            return buf;
        }
        free(buf);
        n = m;
    }
    fail_msg("rendering keeps growing");
    return NULL;
}

/* The histograms the pool records: one acquire-wait and one use-time per
 * lease, one connect-time per connection opened, one hand-off delay per
 * lease that was handed over to a waiting caller. */
static void test_pool_records_histograms(void **state) {
    (void)state;
    dbpool *p = open_pool("hist", "mock:");
    exercise(p);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    dbpool_histogram h;
    dbpool_get_histogram(p, DBPOOL_HIST_ACQUIRE, &h);
    assert_histogram_sane(&h);
    assert_int_equal(h.count, s.acquired);
    assert_int_equal(s.acquire_wait.count, s.acquired);
    dbpool_get_histogram(p, DBPOOL_HIST_USE, &h);
    assert_int_equal(h.count, s.acquired); /* every lease was given back */
    assert_int_equal(s.use_time.count, s.acquired);
    dbpool_get_histogram(p, DBPOOL_HIST_CONNECT, &h);
    assert_int_equal(h.count, s.created);
    assert_int_equal(s.connect_time.count, s.created);
    /* Callers that waited for a connector's new connection were handed
     * it: at most one hand-off per lease. */
    dbpool_get_histogram(p, DBPOOL_HIST_HANDOFF, &h);
    assert_int_equal(h.count, s.handoff_delay.count);
    assert_true(s.handoff_delay.count <= s.acquired);
    dbpool_close(p);

    /* NULL pool and unknown kind: zero counts, bounds still filled. */
    dbpool_get_histogram(NULL, DBPOOL_HIST_USE, &h);
    assert_int_equal(h.count, 0);
    assert_true(h.upper_bound_s[17] == 30.0);
    dbpool_get_histogram(NULL, DBPOOL_HIST_COUNT, &h);
    assert_int_equal(h.count, 0);
}

static void *acquire_and_release(void *arg) {
    dbpool_conn *c = NULL;
    if (dbpool_acquire(arg, 5000, &c, NULL) == DBPOOL_OK)
        dbpool_release(c);
    return c;
}

/* A connection handed to a waiter is one hand-off observation: from the
 * release that handed it over until the waiter ran again. Leases that
 * did not wait record none. */
static void test_handoff_delay_recorded(void **state) {
    (void)state;
    dbpool *p = open_pool_max("handoff", "mock:", 1);
    dbpool_conn *c = NULL;
    for (int i = 0; i < 3; i++) { /* no waiting: no hand-off */
        assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
        assert_int_equal(dbpool_release(c), DBPOOL_OK);
    }
    assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, acquire_and_release, p), 0);
    dbt_wait_for_waiters(p, 1, 5000);
    dbt_sleep_ms(20); /* past any barging window: the release hands over */
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    void *got = NULL;
    pthread_join(th, &got);
    assert_non_null(got);

    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.acquired, 5);
    assert_int_equal(s.handoff_delay.count, 1);
    assert_true(s.handoff_delay.max_ms >= 0.0);
    assert_true(s.handoff_delay.max_ms <= s.acquire_wait.max_ms); /* a part of that wait */
    assert_true(s.acquire_wait.max_ms >= 20.0);
    dbpool_histogram h;
    dbpool_get_histogram(p, DBPOOL_HIST_HANDOFF, &h);
    assert_histogram_sane(&h);
    assert_int_equal(h.count, 1);
    dbpool_close(p);
}

/* ---------------------------------------------------------------------- */
/* JSON                                                                   */
/* ---------------------------------------------------------------------- */

static json_int_t jint(json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    if (!json_is_integer(v))
        fail_msg("JSON field %s missing or not an integer", k);
    return json_integer_value(v);
}

static double jnum(json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    if (!json_is_number(v))
        fail_msg("JSON field %s missing or not a number", k);
    return json_number_value(v);
}

static void check_latency(json_t *root, const char *k, const dbpool_latency *l) {
    json_t *o = json_object_get(root, k);
    assert_true(json_is_object(o));
    assert_int_equal(json_object_size(o), 6);
    assert_int_equal(jint(o, "count"), (json_int_t)l->count);
    assert_true(jnum(o, "mean_ms") == l->mean_ms); /* the shortest exact form reads back exactly */
    assert_true(jnum(o, "p50_ms") == l->p50_ms);
    assert_true(jnum(o, "p95_ms") == l->p95_ms);
    assert_true(jnum(o, "p99_ms") == l->p99_ms);
    assert_true(jnum(o, "max_ms") == l->max_ms);
}

/* The gauges of dbpool_stats as include/dbpool.h defines them, read
 * directly (the JSON test compares the JSON with dbpool_get_stats, so a
 * gauge wrong in both passed it): utilisation is in_use / cap, cap is
 * max_size without autoscale, min_size and max_size are the pool's, total
 * is idle + in_use + connecting, uptime_s grows. With utilisation or
 * uptime_s written as 0 in dbpool_get_stats, the tests of statistics
 * passed. */
static void test_stats_gauges_as_defined(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 1, 4);
    o.maintenance_interval_ms = 0;
    o.thread_cache = false;
    dbpool *p = NULL;
    dbpool_error e;
    if (dbpool_open(&p, "mock:", &o, &e) != DBPOOL_OK)
        fail_msg("open: %s", e.message);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.min_size, 1);
    assert_int_equal(s.max_size, 4);
    assert_int_equal(s.cap, 4);
    assert_int_equal(s.idle, 1);
    assert_int_equal(s.in_use, 0);
    assert_true(s.utilisation == 0.0);
    double up0 = s.uptime_s;
    assert_true(up0 >= 0);
    dbpool_conn *c[3];
    for (int i = 0; i < 3; i++)
        assert_int_equal(dbpool_acquire(p, 1000, &c[i], NULL), DBPOOL_OK);
    assert_int_equal(dbpool_release(c[2]), DBPOOL_OK);
    dbt_sleep_ms(30);
    dbpool_get_stats(p, &s);
    assert_int_equal(s.in_use, 2);
    assert_int_equal(s.idle, 1);
    assert_int_equal(s.connecting, 0);
    assert_int_equal(s.total, s.idle + s.in_use + s.connecting);
    assert_int_equal(s.peak_in_use, 3);
    assert_true(s.utilisation == 0.5);
    if (s.uptime_s < up0 + 0.025)
        fail_msg("uptime_s %.6f, 30 ms after %.6f", s.uptime_s, up0);
    assert_int_equal(dbpool_resize(p, 2, 8, &e), DBPOOL_OK);
    dbpool_get_stats(p, &s);
    assert_int_equal(s.min_size, 2);
    assert_int_equal(s.max_size, 8);
    assert_int_equal(s.cap, 8);
    assert_true(s.utilisation == 0.25);
    for (int i = 0; i < 2; i++)
        assert_int_equal(dbpool_release(c[i]), DBPOOL_OK);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_json_matches_stats(void **state) {
    (void)state;
    dbpool *p = open_pool(weird_name, "mock:");
    exercise(p);
    char *text = render(dbpool_stats_json, p);
    dbpool_stats s;
    dbpool_get_stats(p, &s);

    json_error_t je;
    json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        fail_msg("JSON does not parse: %s at %d: %s", je.text, je.position, text);
    assert_true(json_is_object(root));
    assert_string_equal(json_string_value(json_object_get(root, "name")), weird_name);
    assert_string_equal(json_string_value(json_object_get(root, "backend")), "mock");
    assert_string_equal(json_string_value(json_object_get(root, "version")), dbpool_version());
    assert_true(jnum(root, "uptime_s") >= 0);

    assert_int_equal(jint(root, "created"), (json_int_t)s.created);
    assert_int_equal(jint(root, "reused"), (json_int_t)s.reused);
    assert_int_equal(jint(root, "destroyed"), (json_int_t)s.destroyed);
    json_t *by = json_object_get(root, "destroyed_by");
    assert_true(json_is_object(by));
    assert_int_equal(json_object_size(by), DBPOOL_CLOSE_REASON_COUNT);
    for (int r = 0; r < DBPOOL_CLOSE_REASON_COUNT; r++)
        assert_int_equal(jint(by, dbpool_close_reason_name((dbpool_close_reason)r)),
                         (json_int_t)s.destroyed_by[r]);
    assert_int_equal(jint(by, "discarded"), 1);
    assert_int_equal(jint(root, "acquired"), (json_int_t)s.acquired);
    assert_int_equal(jint(root, "acquired"), 16);
    assert_int_equal(jint(root, "timeouts"), (json_int_t)s.timeouts);
    assert_int_equal(jint(root, "connect_errors"), (json_int_t)s.connect_errors);
    assert_int_equal(jint(root, "validation_failures"), (json_int_t)s.validation_failures);
    assert_int_equal(jint(root, "rollbacks"), (json_int_t)s.rollbacks);
    assert_int_equal(jint(root, "idle"), s.idle);
    assert_int_equal(jint(root, "in_use"), s.in_use);
    assert_int_equal(jint(root, "connecting"), s.connecting);
    assert_int_equal(jint(root, "waiting"), s.waiting);
    assert_int_equal(jint(root, "total"), s.total);
    assert_int_equal(jint(root, "peak_in_use"), s.peak_in_use);
    assert_int_equal(jint(root, "peak_in_use"), 3);
    assert_int_equal(jint(root, "peak_waiting"), s.peak_waiting);
    assert_int_equal(jint(root, "min_size"), s.min_size);
    assert_int_equal(jint(root, "max_size"), s.max_size);
    assert_int_equal(jint(root, "cap"), s.cap);
    assert_int_equal(jint(root, "min_idle"), s.min_idle);
    assert_true(json_is_boolean(json_object_get(root, "suspended")));
    assert_int_equal(json_boolean_value(json_object_get(root, "suspended")), s.suspended);
    assert_true(jnum(root, "utilisation") == s.utilisation);
    assert_string_equal(json_string_value(json_object_get(root, "breaker")),
                        dbpool_breaker_state_name(s.breaker));
    assert_int_equal(jint(root, "breaker_opens"), (json_int_t)s.breaker_opens);
    assert_int_equal(jint(root, "breaker_half_opens"), (json_int_t)s.breaker_half_opens);
    assert_int_equal(jint(root, "breaker_closes"), (json_int_t)s.breaker_closes);
    assert_int_equal(jint(root, "leaks_detected"), (json_int_t)s.leaks_detected);
    assert_int_equal(jint(root, "leaks_reclaimed"), (json_int_t)s.leaks_reclaimed);
    assert_int_equal(jint(root, "reclaimed_out"), s.reclaimed_out);
    assert_int_equal(jint(root, "thread_cached"), s.thread_cached);
    check_latency(root, "acquire_wait", &s.acquire_wait);
    check_latency(root, "use_time", &s.use_time);
    check_latency(root, "connect_time", &s.connect_time);
    check_latency(root, "handoff_delay", &s.handoff_delay);
    assert_int_equal(json_object_size(root), 38);

    json_decref(root);
    free(text);
    dbpool_close(p);
}

/* Both renderers return the needed length like snprintf, but leave the whole
 * text or nothing (never a cut one). `stable` is how many leading bytes
 * do not change between calls on an idle pool (all of the Prometheus text;
 * the JSON up to its uptime_s). */
static void check_snprintf_contract(int (*fn)(dbpool *, char *, size_t), dbpool *p, bool json) {
    char *full = render(fn, p);
    size_t n = strlen(full), stable = n;
    if (json) {
        const char *u = strstr(full, "\"uptime_s\":");
        assert_non_null(u);
        stable = (size_t)(u - full);
    }
    size_t sizes[] = {1, 2, 10, stable / 2, stable, n / 2, n - 1, n, n + 1};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t len = sizes[i];
        char *buf = malloc(len + 8);
        memset(buf, 'X', len + 8);
        int got = fn(p, buf, len);
        if (!json)
            assert_int_equal(got, (int)n);
        else /* uptime_s may have grown or shrunk by a few digits */
            assert_true(got > 0 && (size_t)got + 20 > n && (size_t)got < n + 20);
        /* The whole text or nothing: never a cut document. */
        size_t written = (size_t)got < len ? (size_t)got : 0;
        assert_int_equal(strlen(buf), written);
        assert_memory_equal(buf, full, written < stable ? written : stable);
        size_t untouched = (size_t)got < len ? written + 1 : len;
        for (size_t k = untouched; k < len + 8; k++)
            assert_int_equal(buf[k], 'X'); /* nothing past the text, nor past len */
        free(buf);
    }
    char one = 'X';
    int got = fn(p, &one, 0);
    assert_true(got > 0);
    assert_int_equal(one, 'X'); /* len 0: nothing written */
    if (!json)
        assert_int_equal(got, (int)n);
    assert_true(fn(p, NULL, 0) > 0);
    assert_true(fn(p, NULL, 10) < 0);
    char small[4] = "abc";
    assert_true(fn(NULL, small, sizeof small) < 0);
    assert_int_equal(small[0], '\0');
    free(full);
}

static void test_snprintf_contract(void **state) {
    (void)state;
    dbpool *p = open_pool("contract", "mock:");
    exercise(p);
    check_snprintf_contract(dbpool_stats_json, p, true);
    check_snprintf_contract(dbpool_stats_prometheus, p, false);
    dbpool_close(p);
}

/* ---------------------------------------------------------------------- */
/* Prometheus text format 0.0.4, checked line by line                     */
/* ---------------------------------------------------------------------- */

typedef struct label {
    char name[64];
    char value[256]; /* unescaped */
} label;

typedef struct sample {
    char name[128];
    label labels[8];
    int nlabels;
    double value;
} sample;

typedef struct family {
    char name[128];
    char type[16];
    bool help, typed, has_samples, closed;
} family;

typedef struct parsed {
    family fam[64];
    int nfam;
    sample smp[512];
    int nsmp;
    char series[512][512]; /* name{sorted labels} for the duplicate check */
} parsed;

static bool is_name_start(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
}
static bool is_name_char(char c) { return is_name_start(c) || (c >= '0' && c <= '9'); }

/* [a-zA-Z_:][a-zA-Z0-9_:]* (colons only for metric names) */
static size_t scan_name(const char *s, bool colon) {
    size_t n = 0;
    if (!is_name_start(s[0]) || (!colon && s[0] == ':'))
        return 0;
    while (is_name_char(s[n]) && (colon || s[n] != ':'))
        n++;
    return n;
}

static family *find_family(parsed *P, const char *name) {
    for (int i = 0; i < P->nfam; i++)
        if (strcmp(P->fam[i].name, name) == 0)
            return &P->fam[i];
    return NULL;
}

/* The family a sample belongs to: histograms own name_bucket/_sum/_count. */
static family *family_of(parsed *P, const char *sname) {
    family *f = find_family(P, sname);
    if (f)
        return f;
    static const char *const suffixes[] = {"_bucket", "_sum", "_count"};
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(sname), k = strlen(suffixes[i]);
        if (n > k && strcmp(sname + n - k, suffixes[i]) == 0) {
            char base[128];
            snprintf(base, sizeof base, "%.*s", (int)(n - k), sname);
            f = find_family(P, base);
            if (f && strcmp(f->type, "histogram") == 0)
                return f;
        }
    }
    return NULL;
}

static double parse_value(const char *s, const char **end) {
    if (strncmp(s, "+Inf", 4) == 0) {
        *end = s + 4;
        return INFINITY;
    }
    if (strncmp(s, "-Inf", 4) == 0) {
        *end = s + 4;
        return -INFINITY;
    }
    if (strncmp(s, "NaN", 3) == 0) {
        *end = s + 3;
        return NAN;
    }
    char *e;
    double v = strtod(s, &e);
    if (e == s)
        fail_msg("value does not parse: %s", s);
    /* strtod would accept "inf", "nan", hex: the format wants a Go float */
    for (const char *c = s; c < e; c++)
        if (!strchr("0123456789.eE+-", *c))
            fail_msg("value not in Prometheus float form: %s", s);
    *end = e;
    return v;
}

static int cmp_label(const void *a, const void *b) {
    return strcmp(((const label *)a)->name, ((const label *)b)->name);
}

static void parse_sample(parsed *P, const char *line) {
    assert_true(P->nsmp < 512);
    sample *s = &P->smp[P->nsmp];
    memset(s, 0, sizeof *s);
    size_t n = scan_name(line, true);
    if (n == 0 || n >= sizeof s->name)
        fail_msg("bad metric name: %s", line);
    memcpy(s->name, line, n);
    const char *c = line + n;
    if (*c == '{') {
        c++;
        while (*c != '}') {
            assert_true(s->nlabels < 8);
            label *l = &s->labels[s->nlabels++];
            size_t k = scan_name(c, false);
            if (k == 0 || k >= sizeof l->name)
                fail_msg("bad label name: %s", line);
            memcpy(l->name, c, k);
            if (strncmp(l->name, "__", 2) == 0)
                fail_msg("reserved label name: %s", line);
            c += k;
            if (c[0] != '=' || c[1] != '"')
                fail_msg("label without =\": %s", line);
            c += 2;
            size_t v = 0;
            while (*c != '"') {
                if (*c == '\0')
                    fail_msg("unterminated label value: %s", line);
                char ch = *c++;
                if (ch == '\\') {
                    char e = *c++;
                    if (e == 'n')
                        ch = '\n';
                    else if (e == '\\' || e == '"')
                        ch = e;
                    else
                        fail_msg("bad escape in label value: %s", line);
                }
                assert_true(v + 1 < sizeof l->value);
                l->value[v++] = ch;
            }
            c++;
            if (*c == ',')
                c++;
            else if (*c != '}')
                fail_msg("bad label separator: %s", line);
        }
        c++;
    }
    if (*c != ' ')
        fail_msg("no space before value: %s", line);
    c++;
    const char *end;
    s->value = parse_value(c, &end);
    if (*end != '\0')
        fail_msg("trailing text after value (timestamps are not expected): %s", line);

    /* labels unique within the series; the series unique in the text */
    qsort(s->labels, (size_t)s->nlabels, sizeof(label), cmp_label);
    char key[512];
    int off = snprintf(key, sizeof key, "%s{", s->name);
    for (int i = 0; i < s->nlabels; i++) {
        if (i > 0 && strcmp(s->labels[i].name, s->labels[i - 1].name) == 0)
            fail_msg("duplicate label %s: %s", s->labels[i].name, line);
        off += snprintf(key + off, sizeof key - (size_t)off, "%s=%s,", s->labels[i].name, s->labels[i].value);
    }
    for (int i = 0; i < P->nsmp; i++)
        if (strcmp(P->series[i], key) == 0)
            fail_msg("duplicate series: %s", line);
    snprintf(P->series[P->nsmp], sizeof P->series[0], "%s", key);
    P->nsmp++;
}

static const char *label_of(const sample *s, const char *name) {
    for (int i = 0; i < s->nlabels; i++)
        if (strcmp(s->labels[i].name, name) == 0)
            return s->labels[i].value;
    return NULL;
}

/* Check the whole text against the format's rules; fill P. */
static void check_exposition(const char *text, parsed *P) {
    memset(P, 0, sizeof *P);
    size_t len = strlen(text);
    assert_true(len > 0 && text[len - 1] == '\n');
    family *current = NULL;
    const char *line = text;
    while (*line) {
        const char *nl = strchr(line, '\n');
        assert_non_null(nl);
        char buf[1024];
        assert_true((size_t)(nl - line) < sizeof buf);
        memcpy(buf, line, (size_t)(nl - line));
        buf[nl - line] = '\0';
        line = nl + 1;
        if (buf[0] == '\0')
            fail_msg("empty line");
        if (buf[0] == '#') {
            bool help = strncmp(buf, "# HELP ", 7) == 0, type = strncmp(buf, "# TYPE ", 7) == 0;
            if (!help && !type)
                continue; /* a comment */
            const char *name = buf + 7;
            size_t n = scan_name(name, true);
            if (n == 0 || (name[n] != ' '))
                fail_msg("bad HELP/TYPE line: %s", buf);
            char fname[128];
            snprintf(fname, sizeof fname, "%.*s", (int)n, name);
            family *f = find_family(P, fname);
            if (!f) {
                assert_true(P->nfam < 64);
                f = &P->fam[P->nfam++];
                snprintf(f->name, sizeof f->name, "%s", fname);
            }
            if (f->has_samples)
                fail_msg("HELP/TYPE after the samples of %s", fname);
            if (current && current != f)
                current->closed = true;
            current = f;
            if (help) {
                if (f->help)
                    fail_msg("second HELP for %s", fname);
                f->help = true;
                assert_true(strlen(name + n + 1) > 0);
            } else {
                if (f->typed)
                    fail_msg("second TYPE for %s", fname);
                f->typed = true;
                const char *t = name + n + 1;
                if (strcmp(t, "counter") && strcmp(t, "gauge") && strcmp(t, "histogram") &&
                    strcmp(t, "summary") && strcmp(t, "untyped"))
                    fail_msg("bad TYPE: %s", buf);
                snprintf(f->type, sizeof f->type, "%s", t);
            }
            continue;
        }
        parse_sample(P, buf);
        sample *s = &P->smp[P->nsmp - 1];
        family *f = family_of(P, s->name);
        if (!f || !f->help || !f->typed)
            fail_msg("sample without HELP and TYPE before it: %s", buf);
        if (f->closed)
            fail_msg("family %s is not one group: %s", f->name, buf);
        if (current && current != f)
            current->closed = true;
        current = f;
        f->has_samples = true;
        if (strcmp(f->type, "counter") == 0 &&
            (s->value < 0 || strlen(s->name) < 7 || strcmp(s->name + strlen(s->name) - 6, "_total") != 0))
            fail_msg("counter sample must be >= 0 and end in _total: %s", buf);
    }
    for (int i = 0; i < P->nfam; i++)
        if (!P->fam[i].has_samples)
            fail_msg("family %s has no samples", P->fam[i].name);
}

/* Buckets cumulative, non-decreasing, ending in le="+Inf" == _count. */
static void check_histogram(parsed *P, const char *name, const char *pool, uint64_t want_count) {
    char bucket[160], cnt[160], sum[160];
    snprintf(bucket, sizeof bucket, "%s_bucket", name);
    snprintf(cnt, sizeof cnt, "%s_count", name);
    snprintf(sum, sizeof sum, "%s_sum", name);
    double prev_le = -INFINITY, prev = 0, inf = -1, count = -1;
    bool have_sum = false;
    int nb = 0;
    for (int i = 0; i < P->nsmp; i++) {
        sample *s = &P->smp[i];
        if (strcmp(label_of(s, "pool"), pool) != 0)
            continue;
        if (strcmp(s->name, bucket) == 0) {
            const char *le = label_of(s, "le");
            assert_non_null(le);
            const char *end;
            double b = parse_value(le, &end);
            assert_true(*end == '\0');
            assert_true(b > prev_le);
            assert_true(s->value >= prev);
            if (nb < DBPOOL_HISTOGRAM_BUCKETS)
                assert_true(b == bounds_s[nb]);
            prev_le = b;
            prev = s->value;
            nb++;
            if (isinf(b))
                inf = s->value;
        } else if (strcmp(s->name, cnt) == 0) {
            count = s->value;
        } else if (strcmp(s->name, sum) == 0) {
            have_sum = true;
            assert_true(s->value >= 0);
        }
    }
    assert_int_equal(nb, DBPOOL_HISTOGRAM_BUCKETS + 1);
    assert_true(isinf(prev_le));
    assert_true(have_sum);
    assert_true(inf == count);
    assert_true(count == (double)want_count);
}

static const sample *find_sample(parsed *P, const char *name, const char *lname, const char *lvalue) {
    for (int i = 0; i < P->nsmp; i++) {
        const sample *s = &P->smp[i];
        if (strcmp(s->name, name) != 0)
            continue;
        if (!lname || (label_of(s, lname) && strcmp(label_of(s, lname), lvalue) == 0))
            return s;
    }
    fail_msg("no sample %s{%s=%s}", name, lname ? lname : "", lvalue ? lvalue : "");
    return NULL;
}

static void check_prometheus_for(dbpool *p, const char *name) {
    char *text = render(dbpool_stats_prometheus, p);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    parsed *P = calloc(1, sizeof *P);
    assert_non_null(P);
    check_exposition(text, P);

    /* Only these labels, and pool is the pool's name on every series. */
    for (int i = 0; i < P->nsmp; i++) {
        const sample *x = &P->smp[i];
        const char *pool = label_of(x, "pool");
        if (!pool || strcmp(pool, name) != 0)
            fail_msg("series %s has pool label %s", x->name, pool ? pool : "(none)");
        for (int k = 0; k < x->nlabels; k++) {
            const char *l = x->labels[k].name;
            if (strcmp(l, "pool") && strcmp(l, "state") && strcmp(l, "reason") && strcmp(l, "to") &&
                strcmp(l, "le") && strcmp(l, "version"))
                fail_msg("unexpected label %s on %s", l, x->name);
        }
    }

    static const struct {
        const char *name, *type;
    } want[] = {
        {"dbpool_connections", "gauge"},
        {"dbpool_connections_max", "gauge"},
        {"dbpool_connections_min_idle", "gauge"},
        {"dbpool_pending_requests", "gauge"},
        {"dbpool_acquire_timeouts_total", "counter"},
        {"dbpool_connections_created_total", "counter"},
        {"dbpool_connections_closed_total", "counter"},
        {"dbpool_connect_errors_total", "counter"},
        {"dbpool_leaked_connections_total", "counter"},
        {"dbpool_acquire_duration_seconds", "histogram"},
        {"dbpool_use_duration_seconds", "histogram"},
        {"dbpool_connect_duration_seconds", "histogram"},
        {"dbpool_handoff_delay_seconds", "histogram"},
        {"dbpool_breaker_state", "gauge"},
        {"dbpool_breaker_transitions_total", "counter"},
        {"dbpool_build_info", "gauge"},
    };
    assert_int_equal(P->nfam, sizeof want / sizeof want[0]);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        family *f = find_family(P, want[i].name);
        if (!f)
            fail_msg("missing family %s", want[i].name);
        assert_string_equal(f->type, want[i].type);
    }

    assert_true(find_sample(P, "dbpool_connections", "state", "idle")->value == s.idle);
    assert_true(find_sample(P, "dbpool_connections", "state", "used")->value == s.in_use);
    assert_true(find_sample(P, "dbpool_connections_max", NULL, NULL)->value == s.max_size);
    assert_true(find_sample(P, "dbpool_connections_min_idle", NULL, NULL)->value ==
                (s.min_size > s.min_idle ? s.min_size : s.min_idle));
    assert_true(find_sample(P, "dbpool_pending_requests", NULL, NULL)->value == s.waiting);
    assert_true(find_sample(P, "dbpool_acquire_timeouts_total", NULL, NULL)->value == (double)s.timeouts);
    assert_true(find_sample(P, "dbpool_connections_created_total", NULL, NULL)->value == (double)s.created);
    for (int r = 0; r < DBPOOL_CLOSE_REASON_COUNT; r++)
        assert_true(find_sample(P, "dbpool_connections_closed_total", "reason",
                                dbpool_close_reason_name((dbpool_close_reason)r))
                        ->value == (double)s.destroyed_by[r]);
    assert_true(find_sample(P, "dbpool_connect_errors_total", NULL, NULL)->value == (double)s.connect_errors);
    assert_true(find_sample(P, "dbpool_leaked_connections_total", NULL, NULL)->value ==
                (double)s.leaks_detected);
    assert_true(find_sample(P, "dbpool_breaker_state", NULL, NULL)->value == (double)s.breaker);
    const sample *bi = find_sample(P, "dbpool_build_info", NULL, NULL);
    assert_true(bi->value == 1);
    assert_string_equal(label_of(bi, "version"), dbpool_version());

    check_histogram(P, "dbpool_acquire_duration_seconds", name, s.acquire_wait.count);
    check_histogram(P, "dbpool_use_duration_seconds", name, s.use_time.count);
    check_histogram(P, "dbpool_connect_duration_seconds", name, s.connect_time.count);
    check_histogram(P, "dbpool_handoff_delay_seconds", name, s.handoff_delay.count);
    free(P);
    free(text);
}

static void test_prometheus_format(void **state) {
    (void)state;
    dbpool *p = open_pool("main", "mock:");
    exercise(p);
    check_prometheus_for(p, "main");
    dbpool_close(p);
}

/* Quotes and backslashes in the name are escaped; the label round-trips to
 * the exact name. */
static void test_prometheus_escapes_pool_name(void **state) {
    (void)state;
    dbpool *p = open_pool(weird_name, "mock:");
    exercise(p);
    check_prometheus_for(p, weird_name);
    char *text = render(dbpool_stats_prometheus, p);
    assert_non_null(strstr(text, "pool=\"we\\\"ird\\\\pool name \xc3\xa9\""));
    free(text);
    dbpool_close(p);
}

/* A name that is not UTF-8 or holds a control character is refused at
 * open (test_options.c). Should one get into a pool all the same, both
 * renderings still parse: invalid UTF-8 becomes U+FFFD, a line feed is
 * escaped. */
static void test_invalid_utf8_name(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 1, 4);
    o.name = "bad\xff\xc3(";
    dbpool *p = NULL;
    dbpool_error e;
    assert_int_equal(dbpool_open(&p, "mock:", &o, &e), DBPOOL_EINVAL);
    assert_null(p);

    p = open_pool("ok", "mock:");
    char *bad = strdup("bad\xff\xc3(\nx");
    assert_non_null(bad);
    free(p->name); /* behind validation's back */
    p->name = bad;
    p->opt.name = bad;
    char *json = render(dbpool_stats_json, p);
    json_t *root = json_loads(json, 0, NULL);
    assert_non_null(root);
    assert_string_equal(json_string_value(json_object_get(root, "name")), "bad\xef\xbf\xbd\xef\xbf\xbd(\nx");
    json_decref(root);
    char *prom = render(dbpool_stats_prometheus, p);
    assert_non_null(strstr(prom, "pool=\"bad\xef\xbf\xbd\xef\xbf\xbd(\\nx\""));
    free(json);
    free(prom);
    dbpool_close(p);
}

/* Nothing from the URL reaches either rendering: only the pool's name. */
static void test_no_url_parts_in_output(void **state) {
    (void)state;
    dbpool *p = open_pool("orders", "mock://alice:pw123secret@db-7.internal.example:5432/ordersdb");
    exercise(p);
    char *json = render(dbpool_stats_json, p);
    char *prom = render(dbpool_stats_prometheus, p);
    static const char *const leaks[] = {"pw123secret", "alice",    "db-7",   "internal.example",
                                        "5432",        "ordersdb", "mock://"};
    for (size_t i = 0; i < sizeof leaks / sizeof leaks[0]; i++) {
        if (strstr(json, leaks[i]))
            fail_msg("JSON contains %s", leaks[i]);
        if (strstr(prom, leaks[i]))
            fail_msg("Prometheus text contains %s", leaks[i]);
    }
    free(json);
    free(prom);
    dbpool_close(p);
}

/* ---------------------------------------------------------------------- */
/* Scrapes while the pool works                                           */
/* ---------------------------------------------------------------------- */

typedef struct churn {
    dbpool *p;
    atomic_bool stop;
    atomic_int generations; /* short-lived worker threads started so far */
} churn;

/* One short-lived worker: a few leases, some discarded, then it exits and
 * gives its writer number back. */
static void *churn_worker(void *arg) {
    churn *c = arg;
    for (int i = 0; i < 20; i++) {
        dbpool_conn *conn;
        if (dbpool_acquire(c->p, 50, &conn, NULL) != DBPOOL_OK)
            continue;
        if (i % 7 == 3)
            dbpool_discard(conn);
        else
            dbpool_release(conn);
    }
    return NULL;
}

/* Keeps 8 workers alive at a time, each replaced when it exits, so that
 * far more than 64 threads record over the test; and resizes, suspends
 * and resumes the pool between them. */
static void *churn_driver(void *arg) {
    churn *c = arg;
    unsigned round = 0;
    while (!atomic_load(&c->stop)) {
        /* Now and then more threads at once than there are writer
         * numbers: the rest record into the shared stripes. */
        pthread_t t[72];
        int nt = round % 5 == 4 ? 72 : 8;
        for (int i = 0; i < nt; i++)
            assert_int_equal(pthread_create(&t[i], NULL, churn_worker, c), 0);
        atomic_fetch_add(&c->generations, nt);
        switch (round++ % 4) {
        case 0:
            dbpool_resize(c->p, 1, 2, NULL);
            break;
        case 1:
            dbpool_resize(c->p, 0, 6, NULL);
            break;
        case 2:
            dbpool_suspend(c->p);
            dbpool_resume(c->p);
            break;
        default:
            dbpool_shrink(c->p, 0);
        }
        for (int i = 0; i < nt; i++)
            pthread_join(t[i], NULL);
    }
    return NULL;
}

/* Every value a scrape takes from a counter or a histogram series, by
 * series, to compare with the next scrape. */
typedef struct scrape_values {
    char series[512][512];
    double value[512];
    int n;
} scrape_values;

static bool is_monotonic_series(const char *name) {
    size_t n = strlen(name);
    return (n > 6 && strcmp(name + n - 6, "_total") == 0) ||
           (n > 7 && strcmp(name + n - 7, "_bucket") == 0) ||
           (n > 6 && strcmp(name + n - 6, "_count") == 0) || (n > 4 && strcmp(name + n - 4, "_sum") == 0);
}

static void check_scrape(const char *text, scrape_values *prev) {
    parsed *P = calloc(1, sizeof *P);
    assert_non_null(P);
    check_exposition(text, P);
    static const char *const hists[] = {"dbpool_acquire_duration_seconds", "dbpool_use_duration_seconds",
                                        "dbpool_connect_duration_seconds", "dbpool_handoff_delay_seconds"};
    for (size_t h = 0; h < 4; h++) {
        char cnt[160];
        snprintf(cnt, sizeof cnt, "%s_count", hists[h]);
        check_histogram(P, hists[h], "scraped", (uint64_t)find_sample(P, cnt, NULL, NULL)->value);
    }
    for (int i = 0; i < P->nsmp; i++) {
        const sample *s = &P->smp[i];
        if (isnan(s->value))
            fail_msg("%s is NaN", P->series[i]);
        if (strcmp(s->name, "dbpool_connections") == 0 || strcmp(s->name, "dbpool_pending_requests") == 0)
            assert_true(s->value >= 0);
        if (!is_monotonic_series(s->name))
            continue;
        int k = 0;
        while (k < prev->n && strcmp(prev->series[k], P->series[i]) != 0)
            k++;
        if (k == prev->n) {
            assert_true(prev->n < 512);
            snprintf(prev->series[k], sizeof prev->series[k], "%s", P->series[i]);
            prev->n++;
        } else if (s->value < prev->value[k]) {
            fail_msg("%s went down: %.17g -> %.17g", P->series[i], prev->value[k], s->value);
        }
        prev->value[k] = s->value;
    }
    free(P);
}

/* The JSON of one scrape: gauges agree with each other, counters and
 * latency counts never go down from the previous scrape. */
static void check_json_scrape(const char *text, uint64_t prev[32]) {
    json_error_t je;
    json_t *root = json_loads(text, 0, &je);
    if (!root)
        fail_msg("JSON does not parse: %s", je.text);
    int idle = (int)json_integer_value(json_object_get(root, "idle"));
    int in_use = (int)json_integer_value(json_object_get(root, "in_use"));
    int connecting = (int)json_integer_value(json_object_get(root, "connecting"));
    int waiting = (int)json_integer_value(json_object_get(root, "waiting"));
    int total = (int)json_integer_value(json_object_get(root, "total"));
    assert_true(idle >= 0 && in_use >= 0 && connecting >= 0 && waiting >= 0);
    assert_int_equal(total, idle + in_use + connecting);
    int peak_in_use = (int)json_integer_value(json_object_get(root, "peak_in_use"));
    int peak_waiting = (int)json_integer_value(json_object_get(root, "peak_waiting"));
    assert_true(peak_in_use >= in_use && peak_in_use >= (int)prev[30]);
    assert_true(peak_waiting >= waiting && peak_waiting >= (int)prev[31]);
    prev[30] = (uint64_t)peak_in_use;
    prev[31] = (uint64_t)peak_waiting;
    int min_size = (int)json_integer_value(json_object_get(root, "min_size"));
    int max_size = (int)json_integer_value(json_object_get(root, "max_size"));
    int cap = (int)json_integer_value(json_object_get(root, "cap"));
    assert_true(0 <= min_size && min_size <= max_size && cap <= max_size && cap >= 1);
    assert_true(json_is_number(json_object_get(root, "utilisation")));
    uint64_t by = 0;
    json_t *dby = json_object_get(root, "destroyed_by");
    const char *k;
    json_t *v;
    json_object_foreach(dby, k, v) by += (uint64_t)json_integer_value(v);
    assert_int_equal(by, (uint64_t)json_integer_value(json_object_get(root, "destroyed")));
    static const char *const counters[] = {"created",   "reused",        "destroyed",
                                           "acquired",  "timeouts",      "connect_errors",
                                           "rollbacks", "breaker_opens", "leaks_detected"};
    static const char *const lats[] = {"acquire_wait", "use_time", "connect_time", "handoff_delay"};
    int n = 0;
    for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++, n++) {
        json_t *x = json_object_get(root, counters[i]);
        assert_true(json_is_integer(x));
        uint64_t now = (uint64_t)json_integer_value(x);
        if (now < prev[n])
            fail_msg("%s went down: %llu -> %llu", counters[i], (unsigned long long)prev[n],
                     (unsigned long long)now);
        prev[n] = now;
    }
    for (size_t i = 0; i < 4; i++, n++) {
        json_t *l = json_object_get(root, lats[i]);
        uint64_t now = (uint64_t)json_integer_value(json_object_get(l, "count"));
        if (now < prev[n])
            fail_msg("%s.count went down: %llu -> %llu", lats[i], (unsigned long long)prev[n],
                     (unsigned long long)now);
        prev[n] = now;
        double mx = json_number_value(json_object_get(l, "max_ms"));
        static const char *const fields[] = {"mean_ms", "p50_ms", "p95_ms", "p99_ms"};
        for (int f = 0; f < 4; f++) {
            json_t *x = json_object_get(l, fields[f]);
            assert_true(json_is_number(x));
            double d = json_number_value(x);
            if (!(d >= 0 && d <= mx))
                fail_msg("%s.%s %g, max %g", lats[i], fields[f], d, mx);
        }
    }
    json_decref(root);
}

/* Counters and histogram series never go down from one scrape to the
 * next, +Inf equals _count, no gauge is negative, while threads come and
 * go (more than the 64 writer numbers over time), connections are opened,
 * discarded and shrunk away, and the pool is resized and suspended. */
static void scrapes_while_pool_works(bool thread_cache) {
    dbpool_options o;
    dbt_options(&o, 1, 4);
    o.name = "scraped";
    o.thread_cache = thread_cache;
    /* Maintenance at work too: keepalive pings (a pinged connection
     * counts as idle), idle timeouts and lifetimes closing connections. */
    o.maintenance_interval_ms = 5;
    o.keepalive_ms = 10;
    o.idle_timeout_ms = 20;
    o.max_lifetime_ms = 100;
    dbpool *p = NULL;
    dbpool_error e;
    if (dbpool_open(&p, "mock:", &o, &e) != DBPOOL_OK)
        fail_msg("open: %s", e.message);
    churn c = {.p = p};
    atomic_init(&c.stop, false);
    atomic_init(&c.generations, 0);
    pthread_t driver;
    assert_int_equal(pthread_create(&driver, NULL, churn_driver, &c), 0);
    scrape_values *prev = calloc(1, sizeof *prev);
    assert_non_null(prev);
    uint64_t jprev[32] = {0};
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int scrapes = 0;
    for (;;) {
        char *text = render(dbpool_stats_prometheus, p);
        check_scrape(text, prev);
        free(text);
        text = render(dbpool_stats_json, p);
        check_json_scrape(text, jprev);
        free(text);
        scrapes++;
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double el = (double)(now.tv_sec - t0.tv_sec) + (double)(now.tv_nsec - t0.tv_nsec) / 1e9;
        if ((atomic_load(&c.generations) > 400 && scrapes >= 50 && el > 1) || el > 20)
            break;
    }
    atomic_store(&c.stop, true);
    pthread_join(driver, NULL);
    assert_true(atomic_load(&c.generations) > 64);
    char *text = render(dbpool_stats_prometheus, p);
    check_scrape(text, prev);
    free(text);
    free(prev);
    dbpool_stats st;
    dbpool_get_stats(p, &st);
    /* At rest, every lease is in the acquire and use histograms, every
     * connection opened in the connect one. */
    assert_int_equal(st.acquire_wait.count, st.acquired);
    assert_int_equal(st.use_time.count, st.acquired);
    assert_int_equal(st.connect_time.count, st.created);
    dbpool_close(p);
}

static void test_scrapes_while_pool_works(void **state) {
    (void)state;
    scrapes_while_pool_works(false);
}

/* The same with the thread cache: leases through the fast path are folded
 * into the counters and the acquire histogram at each scrape. */
static void test_scrapes_while_cached_pool_works(void **state) {
    (void)state;
    scrapes_while_pool_works(true);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bounds_are_exact),
        cmocka_unit_test(test_values_land_in_right_bucket),
        cmocka_unit_test(test_percentiles_known_distributions),
        cmocka_unit_test(test_percentiles_above_a_minute),
        cmocka_unit_test(test_percentiles_past_last_bucket),
        cmocka_unit_test(test_small_values_exact),
        cmocka_unit_test(test_sum_survives_wrap),
        cmocka_unit_test(test_concurrent_recording),
        cmocka_unit_test(test_more_threads_than_writer_numbers),
        cmocka_unit_test(test_late_thread_takes_a_number_given_back),
        cmocka_unit_test(test_fork_child_frees_writer_numbers),
        cmocka_unit_test(test_percentiles_never_above_max_while_recording),
        cmocka_unit_test(test_fast_clock),
        cmocka_unit_test_setup(test_pool_records_histograms, dbt_mock_setup),
        cmocka_unit_test_setup(test_handoff_delay_recorded, dbt_mock_setup),
        cmocka_unit_test_setup(test_json_matches_stats, dbt_mock_setup),
        cmocka_unit_test_setup(test_snprintf_contract, dbt_mock_setup),
        cmocka_unit_test_setup(test_prometheus_format, dbt_mock_setup),
        cmocka_unit_test_setup(test_prometheus_escapes_pool_name, dbt_mock_setup),
        cmocka_unit_test_setup(test_invalid_utf8_name, dbt_mock_setup),
        cmocka_unit_test_setup(test_no_url_parts_in_output, dbt_mock_setup),
        cmocka_unit_test_setup(test_scrapes_while_pool_works, dbt_mock_setup),
        cmocka_unit_test_setup(test_scrapes_while_cached_pool_works, dbt_mock_setup),
        cmocka_unit_test_setup(test_stats_gauges_as_defined, dbt_mock_setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
