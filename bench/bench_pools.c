/* bench_pools — dbpool and its C peers side by side, on the same harness.
 * A program that prints figures, not a test.
 *
 *   bench_pools cycle   IMPL BACKEND URL SIZE SECONDS THREADS[,THREADS...]
 *   bench_pools stmt    IMPL BACKEND URL SIZE SECONDS THREADS[,THREADS...]
 *   bench_pools stmt-share IMPL BACKEND URL SIZE SECONDS THREADS[,THREADS...]
 *   bench_pools latency IMPL BACKEND URL SIZE SECONDS THREADS HOLD_US
 *
 * cycle:   acquire + release, nothing else, as fast as possible.
 * stmt:    acquire + SELECT 1 (read the value) + release, measured in
 *          alternating slices with one dedicated raw connection per thread
 *          doing the same SELECT 1; prints both rates and their ratio. For
 *          dbpool the dedicated connection is the thread's own pooled
 *          session, leased for the whole slice and driven with the raw
 *          client library: both sides then talk to the same server process,
 *          and the ratio is the pool's cost alone.
 * stmt-share: dbpool's statement cycle alone, timing the time spent inside
 *          dbpool_acquire and dbpool_release against the whole cycle. A
 *          direct measure of the pool's share, which the stmt ratio cannot
 *          resolve below the few per cent that two runs of the same loop
 *          differ by here. The cost of a clock read is measured and taken
 *          out of both.
 * latency: time each acquire while every holder keeps its connection
 *          HOLD_US microseconds (busy-wait); THREADS > SIZE oversubscribes.
 * latency-sleep: the same, but holders sleep HOLD_US (nanosleep, with the
 *          kernel's default 50 us timer slack), as a thread does while its
 *          query waits on the server.
 * stall:   bench_pools stall SECONDS [THREADS]: the longest pause the machine
 *          itself imposes on threads that only read the clock (the noise
 *          floor of any latency maximum); one thread, or one per CPU.
 *
 * IMPL      dbpool        dbpool_acquire / dbpool_release (stmt: dbpool_query)
 *           dbpool-native stmt only: dbpool lease, SELECT 1 on the native handle
 *           zdb           libzdb ConnectionPool_getConnection / Connection_close
 *                         (returns NULL when the pool is full: we retry after
 *                         sched_yield and count the failed attempts)
 *           apr           apr_reslist_acquire / apr_reslist_release, with a
 *                         constructor that opens a raw connection
 *           mutex         cycle only: lock+unlock of a mutex private to the thread
 *           mutex-shared  cycle only: lock+unlock of one mutex shared by all threads
 *           clock-mono    cycle only: one clock_gettime(CLOCK_MONOTONIC), for scale
 *           clock-coarse  cycle only: one clock_gettime(CLOCK_MONOTONIC_COARSE)
 *           tsc-pair      cycle only: two reads of the time-stamp counter, the
 *                         clock reads a lease that times its hold makes (x86-64)
 *           raw           stmt only: one dedicated raw connection per thread
 *           cpq           stmt only: connect, SELECT 1, disconnect, every time
 *           raw-vs-raw    stmt only: the raw loop against itself, interleaved
 *                         like the pools, each side with its own connections:
 *                         the ratio shows how much two sessions differ
 *           raw-vs-self   stmt only: the raw loop against itself on the same
 *                         connection, interleaved as dbpool is (whose
 *                         baseline is its own session): the method's
 *                         control, all it reads is its own noise and bias
 * BACKEND   sqlite | pg | mysql
 * URL       dbpool's URL (sqlite:///abs/path.db, postgresql://..., mysql://...)
 */
#include "bench_util.h"
#include "dbpool.h"

#ifdef BENCH_HAVE_ZDB
#include <zdb.h>
#endif
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <x86intrin.h>
#define BENCH_HAVE_TSC 1
#endif
#ifdef BENCH_HAVE_APR
#include <apr_general.h>
#include <apr_pools.h>
#include <apr_reslist.h>
#endif

typedef enum { M_CYCLE, M_STMT, M_LATENCY, M_SHARE } bench_mode;
typedef enum {
    I_DBPOOL,
    I_DBPOOL_NATIVE,
    I_ZDB,
    I_APR,
    I_MUTEX,
    I_MUTEX_SHARED,
    I_RAW,
    I_CPQ,
    I_CLOCK_MONO,
    I_CLOCK_COARSE,
    I_TSC_PAIR,
    I_RAW_AA,
    I_RAW_SELF
} impl_kind;

static const char *const impl_names[] = {"dbpool",
                                         "dbpool-native",
                                         "libzdb",
                                         "apr_reslist",
                                         "mutex",
                                         "mutex-shared",
                                         "raw",
                                         "connect-per-query",
                                         "clock_gettime-monotonic",
                                         "clock_gettime-coarse",
                                         "tsc-pair",
                                         "raw-vs-raw",
                                         "raw-vs-self"};

/* What every worker reads. */
static struct {
    bench_mode mode;
    impl_kind impl;
    bench_backend backend;
    const char *url;
    int size;
    int64_t hold_ns;
    bool hold_sleeps; /* latency-sleep: holders sleep (like a query waiting on its server) */
    dbpool *dp;
#ifdef BENCH_HAVE_ZDB
    ConnectionPool_T zp;
    URL_T zurl;
#endif
#ifdef BENCH_HAVE_APR
    apr_pool_t *apool;
    apr_reslist_t *rl;
#endif
    pthread_mutex_t shared_mutex;
    void *raw_conns[64];  /* stmt: the dedicated raw connection of each thread slot */
    void *raw_conns2[64]; /* raw-vs-raw: the other side's */
} G;

/* ---------------------------------------------------------------------- */
/* libzdb                                                                 */
/* ---------------------------------------------------------------------- */

#ifdef BENCH_HAVE_ZDB
static void zdb_abort(const char *error) { bench_die("libzdb: %s", error); }

static void zdb_open(void) {
    G.zurl = URL_new(G.url);
    if (!G.zurl)
        bench_die("libzdb cannot parse the URL");
    G.zp = ConnectionPool_new(G.zurl);
    ConnectionPool_setAbortHandler(G.zp, zdb_abort);
    ConnectionPool_setInitialConnections(G.zp, G.size);
    ConnectionPool_setMaxConnections(G.zp, G.size);
    ConnectionPool_start(G.zp);
}

static void zdb_close(void) {
    ConnectionPool_free(&G.zp);
    URL_free(&G.zurl);
}

static int zdb_select1(Connection_T c) {
    volatile int v = 0;
    TRY {
        ResultSet_T r = Connection_executeQuery(c, "SELECT 1");
        if (ResultSet_next(r))
            v = ResultSet_getInt(r, 1);
    }
    ELSE { v = 0; }
    END_TRY;
    return v == 1;
}
#endif

/* ---------------------------------------------------------------------- */
/* APR apr_reslist                                                        */
/* ---------------------------------------------------------------------- */

#ifdef BENCH_HAVE_APR
static apr_status_t apr_ctor(void **res, void *params, apr_pool_t *pool) {
    (void)params;
    (void)pool;
    void *c = bench_raw_open(G.backend, G.url, false);
    if (!c)
        return APR_EGENERAL;
    *res = c;
    return APR_SUCCESS;
}

static apr_status_t apr_dtor(void *res, void *params, apr_pool_t *pool) {
    (void)params;
    (void)pool;
    bench_raw_close(G.backend, res);
    return APR_SUCCESS;
}

static void apr_open(void) {
    apr_initialize();
    if (apr_pool_create(&G.apool, NULL) != APR_SUCCESS)
        bench_die("apr_pool_create failed");
    if (apr_reslist_create(&G.rl, G.size, G.size, G.size, 0, apr_ctor, apr_dtor, NULL, G.apool) !=
        APR_SUCCESS)
        bench_die("apr_reslist_create failed (could not open %d connections)", G.size);
}

static void apr_close(void) {
    apr_reslist_destroy(G.rl);
    apr_pool_destroy(G.apool);
    apr_terminate();
}
#endif

/* ---------------------------------------------------------------------- */
/* dbpool                                                                 */
/* ---------------------------------------------------------------------- */

static void dbpool_bench_open(void) {
    dbpool_options o;
    dbpool_options_init(&o);
    o.name = "bench";
    o.min_size = G.size;
    o.max_size = G.size;
    /* Everything else stays at its default: what a user gets. */
    dbpool_error e;
    if (dbpool_open(&G.dp, G.url, &o, &e) != DBPOOL_OK)
        bench_die("dbpool_open: %s", e.message);
}

static int dbpool_select1(dbpool_conn *c) {
    dbpool_result *r = NULL;
    if (dbpool_query(c, "SELECT 1", NULL, 0, &r, NULL) != DBPOOL_OK)
        return 0;
    int ok = dbpool_result_next(r, NULL) == 1 && dbpool_result_int64(r, 0) == 1;
    dbpool_result_free(r);
    return ok;
}

/* ---------------------------------------------------------------------- */
/* The workers                                                            */
/* ---------------------------------------------------------------------- */

/* A holder keeps its connection for hold_ns: busy (latency) or asleep
 * (latency-sleep, as a thread waiting on its database is). */
static inline void bench_hold(int64_t ns) {
    if (G.hold_sleeps)
        bench_sleep_ns(ns);
    else
        bench_spin_ns(ns);
}

/* latency: the wait just measured, then the hold. */
static inline void sample_and_hold(bench_worker *w, int64_t t0) {
    int64_t t1 = bench_now_ns();
    bench_sample(w, t1 - t0);
    bench_hold(G.hold_ns);
    int64_t held = bench_now_ns() - t1;
    if (held > w->max_hold_ns)
        w->max_hold_ns = held;
}

/* One acquire (retrying while libzdb's pool is full), the work of the
 * mode, one release. Returns 1 when an operation was completed. The
 * switch is on a constant for the whole run: the branch predictor makes it
 * free, and every implementation pays the same for it. */
static inline int one_op(bench_worker *w, void *raw, impl_kind impl) {
    int ok = 1;
    int64_t t0 = 0;
    if (G.mode == M_LATENCY || G.mode == M_SHARE)
        t0 = bench_now_ns();
    switch (impl) {
    case I_DBPOOL:
    case I_DBPOOL_NATIVE: {
        dbpool_conn *c;
        if (dbpool_acquire(G.dp, -1, &c, NULL) != DBPOOL_OK) {
            w->errors++;
            return 0;
        }
        /* stmt-share times the inside of dbpool_acquire and dbpool_release
         * and the whole statement cycle; each interval holds one clock
         * read too. */
        int64_t t1 = 0, t2 = 0;
        if (G.mode == M_LATENCY)
            sample_and_hold(w, t0);
        if (G.mode == M_SHARE)
            t1 = bench_now_ns();
        if (G.mode == M_STMT || G.mode == M_SHARE)
            ok = impl == I_DBPOOL ? dbpool_select1(c)
                                  : bench_raw_select1_kept(G.backend, dbpool_conn_native(c));
        if (G.mode == M_SHARE)
            t2 = bench_now_ns();
        dbpool_release(c);
        if (G.mode == M_SHARE) {
            int64_t t3 = bench_now_ns();
            w->pool_ns += (t1 - t0) + (t3 - t2);
            w->op_ns += t3 - t0;
        }
        break;
    }
#ifdef BENCH_HAVE_ZDB
    case I_ZDB: {
        Connection_T c;
        while (!(c = ConnectionPool_getConnection(G.zp))) {
            w->fails++;
            if (!bench_running()) {
                /* A wait still going at the end is a wait too, at least
                 * this long: a thread that never got a connection would
                 * otherwise leave no sample at all, and the maximum would
                 * miss the starvation it is there to show. */
                if (G.mode == M_LATENCY)
                    bench_sample(w, bench_now_ns() - t0);
                return 0;
            }
            sched_yield();
        }
        if (G.mode == M_LATENCY)
            sample_and_hold(w, t0);
        else if (G.mode == M_STMT)
            ok = zdb_select1(c);
        Connection_close(c);
        break;
    }
#endif
#ifdef BENCH_HAVE_APR
    case I_APR: {
        void *c;
        if (apr_reslist_acquire(G.rl, &c) != APR_SUCCESS) {
            w->errors++;
            return 0;
        }
        if (G.mode == M_LATENCY)
            sample_and_hold(w, t0);
        else if (G.mode == M_STMT)
            ok = bench_raw_select1_kept(G.backend, c);
        apr_reslist_release(G.rl, c);
        break;
    }
#endif
    case I_MUTEX: {
        pthread_mutex_t *m = raw; /* the worker's own mutex */
        pthread_mutex_lock(m);
        pthread_mutex_unlock(m);
        break;
    }
    case I_MUTEX_SHARED:
        pthread_mutex_lock(&G.shared_mutex);
        pthread_mutex_unlock(&G.shared_mutex);
        break;
    case I_CLOCK_MONO:
    case I_CLOCK_COARSE: {
        struct timespec ts;
        clock_gettime(impl == I_CLOCK_MONO ? CLOCK_MONOTONIC : CLOCK_MONOTONIC_COARSE, &ts);
        w->errors += ts.tv_sec < 0; /* keep the call */
        break;
    }
    case I_TSC_PAIR: {
#ifdef BENCH_HAVE_TSC
        /* dbpool's fast clock reads the counter once when a lease starts
         * and once when it ends; the subtraction keeps both reads. */
        uint64_t start = __rdtsc();
        w->errors += __rdtsc() < start;
#else
        bench_die("tsc-pair needs x86-64");
#endif
        break;
    }
    case I_RAW:
    case I_RAW_AA:
    case I_RAW_SELF:
        ok = bench_raw_select1_kept(G.backend, raw);
        break;
    case I_CPQ: {
        void *c = bench_raw_open(G.backend, G.url, false);
        if (!c) {
            w->errors++;
            return 0;
        }
        ok = bench_raw_select1(G.backend, c);
        bench_raw_close(G.backend, c);
        break;
    }
    default:
        bench_die("implementation not built in");
    }
    if (!ok) {
        w->errors++;
        return 0;
    }
    return 1;
}

static void *worker_main(void *arg) {
    bench_worker *w = arg;
    void *raw = NULL;
    pthread_mutex_t own;
    if (G.impl == I_MUTEX) {
        pthread_mutex_init(&own, NULL);
        raw = &own;
    } else if (G.impl == I_RAW || G.impl == I_RAW_AA || G.impl == I_RAW_SELF) {
        /* Opened once per thread slot in main, before any clock runs. */
        raw = G.raw_conns[w->index];
    }
    bench_worker_start();
    while (bench_running()) {
        /* Check the stop flag once per 16 operations at most; cheap either way. */
        for (int i = 0; i < 16; i++)
            w->ops += (unsigned long)one_op(w, raw, G.impl);
    }
    if (G.impl == I_MUTEX)
        pthread_mutex_destroy(&own);
    return NULL;
}

/*
 * The statement benchmark compares a pool with a dedicated raw connection per
 * thread. On a shared 2-core virtual machine the speed of a round trip
 * drifts by tens of percent within seconds, and with a few threads it also
 * depends on where the scheduler puts each thread and its server process.
 * So one set of threads runs the whole measurement and switches between the
 * two sides in alternating slices of about 0.1 s (ABBA order): both sides
 * see the same machine, the same threads and the same placements. Each
 * operation counts for the side it started on; main times the slices.
 */
typedef struct ab_result {
    double ops_s, raw_ops_s;
    unsigned long errors;
} ab_result;

/* 0: the dedicated connection, 1: the implementation measured; AB_SETTLE
 * and AB_SETTLE + 1: the same, before the clock runs (not counted). */
static atomic_int ab_side;
#define AB_SETTLE 2

/* The baseline side's connection for this slice (see the header). */
static void *ab_dedicated(bench_worker *w, dbpool_conn **held) {
    switch (G.impl) {
    case I_DBPOOL:
    case I_DBPOOL_NATIVE:
        if (dbpool_acquire(G.dp, -1, held, NULL) != DBPOOL_OK)
            bench_die("dbpool_acquire failed for the baseline side");
        return dbpool_conn_native(*held);
    default:
        return G.raw_conns[w->index];
    }
}

static void *ab_worker_main(void *arg) {
    bench_worker *w = arg;
    void *other = G.impl == I_RAW_AA ? G.raw_conns2[w->index] : G.raw_conns[w->index];
    dbpool_conn *held = NULL;
    void *dedicated = NULL;
    bench_worker_start();
    while (bench_running()) {
        int phase = atomic_load_explicit(&ab_side, memory_order_relaxed);
        int side = phase & 1, slot = phase < 2 ? phase : 2;
        if (side == 0 && !dedicated)
            dedicated = ab_dedicated(w, &held);
        if (side == 1 && dedicated) {
            if (held)
                dbpool_release(held);
            held = NULL;
            dedicated = NULL;
        }
        /* Every operation counts for the side it started on: the phase is
         * read again before each one, so that a side whose operations are
         * slow (connect-per-query: milliseconds each) does not run on into
         * the other side's slice and count that time as its own. */
        for (int i = 0; i < 16 && atomic_load_explicit(&ab_side, memory_order_relaxed) == phase; i++)
            w->ops_by_side[slot] +=
                (unsigned long)(side ? one_op(w, other, G.impl) : one_op(w, dedicated, I_RAW));
    }
    if (held)
        dbpool_release(held);
    return NULL;
}

static ab_result run_interleaved(int nthreads, double seconds) {
    int slices = (int)(seconds / 0.1);
    if (slices < 4)
        slices = 4;
    slices += slices % 2;
    double slice_s = seconds / slices;
    double t_side[2] = {0, 0};
    ab_result out;
    memset(&out, 0, sizeof out);
    atomic_store(&ab_side, AB_SETTLE);
    bench_run r = {.nthreads = nthreads, .fn = ab_worker_main};
    bench_start_threads(&r);
    /* Untimed first: a new thread's first tenth of a second runs faster
     * or slower than the rest (placement), and would favour one side. */
    bench_sleep_s(0.05);
    atomic_store(&ab_side, AB_SETTLE + 1);
    bench_sleep_s(0.05);
    for (int k = 0; k < slices; k++) {
        for (int half = 0; half < 2; half++) {
            int side = (k % 2 == 0) == (half == 0) ? 0 : 1;
            int64_t t0 = bench_now_ns();
            atomic_store_explicit(&ab_side, side, memory_order_relaxed);
            bench_sleep_s(slice_s);
            t_side[side] += (double)(bench_now_ns() - t0) / 1e9;
        }
    }
    bench_join_threads(&r);
    unsigned long ops[2] = {0, 0};
    for (int i = 0; i < nthreads; i++) {
        ops[0] += r.w[i].ops_by_side[0];
        ops[1] += r.w[i].ops_by_side[1];
    }
    out.errors = r.errors;
    out.ops_s = (double)ops[1] / t_side[1];
    out.raw_ops_s = (double)ops[0] / t_side[0];
    bench_run_free(&r);
    return out;
}

/* What one bench_now_ns() costs here: the median gap between two
 * back-to-back reads. */
static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double clock_read_ns(void) {
    enum { N = 2001 };
    static int64_t gap[N];
    for (int i = 0; i < N; i++) {
        int64_t a = bench_now_ns();
        gap[i] = bench_now_ns() - a;
    }
    qsort(gap, N, sizeof gap[0], cmp_i64);
    return (double)gap[N / 2];
}

static impl_kind impl_parse(const char *s) {
    if (strcmp(s, "dbpool") == 0)
        return I_DBPOOL;
    if (strcmp(s, "dbpool-native") == 0)
        return I_DBPOOL_NATIVE;
    if (strcmp(s, "zdb") == 0 || strcmp(s, "libzdb") == 0)
        return I_ZDB;
    if (strcmp(s, "apr") == 0 || strcmp(s, "apr_reslist") == 0)
        return I_APR;
    if (strcmp(s, "mutex") == 0)
        return I_MUTEX;
    if (strcmp(s, "mutex-shared") == 0)
        return I_MUTEX_SHARED;
    if (strcmp(s, "raw") == 0)
        return I_RAW;
    if (strcmp(s, "raw-vs-raw") == 0)
        return I_RAW_AA;
    if (strcmp(s, "raw-vs-self") == 0)
        return I_RAW_SELF;
    if (strcmp(s, "clock-mono") == 0)
        return I_CLOCK_MONO;
    if (strcmp(s, "clock-coarse") == 0)
        return I_CLOCK_COARSE;
    if (strcmp(s, "tsc-pair") == 0)
        return I_TSC_PAIR;
    if (strcmp(s, "cpq") == 0 || strcmp(s, "connect-per-query") == 0)
        return I_CPQ;
    bench_die("unknown implementation '%s'", s);
    return I_DBPOOL;
}

static void pool_open(void) {
    switch (G.impl) {
    case I_DBPOOL:
    case I_DBPOOL_NATIVE:
        dbpool_bench_open();
        break;
    case I_ZDB:
#ifdef BENCH_HAVE_ZDB
        zdb_open();
        break;
#else
        bench_die("built without libzdb");
#endif
    case I_APR:
#ifdef BENCH_HAVE_APR
        apr_open();
        break;
#else
        bench_die("built without APR");
#endif
    default:
        break;
    }
}

static void pool_close(void) {
    switch (G.impl) {
    case I_DBPOOL:
    case I_DBPOOL_NATIVE:
        dbpool_close(G.dp);
        break;
#ifdef BENCH_HAVE_ZDB
    case I_ZDB:
        zdb_close();
        break;
#endif
#ifdef BENCH_HAVE_APR
    case I_APR:
        apr_close();
        break;
#endif
    default:
        break;
    }
}

/* stall SECONDS [THREADS]: how long the machine itself stops a running
 * thread. Each thread reads the clock in a loop and keeps the longest gap
 * between two readings (and counts those over 0.5 ms): waits that long
 * happen to any pool here, whatever its algorithm, and bound what a
 * fairness ratio can show. One thread leaves the other CPUs idle, and the
 * kernel runs its own threads there; one per CPU is the machine as eight
 * spinning holders see it, where a kernel thread must stop one of them. */
typedef struct stall_probe {
    pthread_t tid;
    double seconds;
    int64_t max_gap;
    long over;
} stall_probe;

static void *stall_thread(void *arg) {
    stall_probe *sp = arg;
    int64_t t0 = bench_now_ns(), prev = t0;
    while (prev - t0 < (int64_t)(sp->seconds * 1e9)) {
        int64_t t = bench_now_ns();
        if (t - prev > sp->max_gap)
            sp->max_gap = t - prev;
        if (t - prev > 500000)
            sp->over++;
        prev = t;
    }
    return NULL;
}

static int stall_main(double seconds, int nthreads) {
    if (nthreads < 1 || nthreads > 64)
        bench_die("stall: 1 to 64 threads");
    stall_probe probes[64];
    memset(probes, 0, sizeof probes);
    for (int i = 0; i < nthreads; i++) {
        probes[i].seconds = seconds;
        if (pthread_create(&probes[i].tid, NULL, stall_thread, &probes[i]) != 0)
            bench_die("stall: pthread_create failed");
    }
    int64_t max_gap = 0;
    long over = 0;
    for (int i = 0; i < nthreads; i++) {
        pthread_join(probes[i].tid, NULL);
        max_gap = probes[i].max_gap > max_gap ? probes[i].max_gap : max_gap;
        over += probes[i].over;
    }
    printf("R\tstall\tmachine\t-\t0\t%d\tmax_gap_us=%.1f\tgaps_over_500us=%ld\n", nthreads,
           (double)max_gap / 1e3, over);
    return 0;
}

int main(int argc, char **argv) {
    if ((argc == 3 || argc == 4) && strcmp(argv[1], "stall") == 0)
        return stall_main(atof(argv[2]), argc == 4 ? atoi(argv[3]) : 1);
    if (argc < 8) {
        fprintf(stderr,
                "usage: bench_pools cycle|stmt IMPL BACKEND URL SIZE SECONDS THREADS[,...]\n"
                "       bench_pools stmt-share dbpool|dbpool-native BACKEND URL SIZE SECONDS THREADS[,...]\n"
                "       bench_pools latency|latency-sleep IMPL BACKEND URL SIZE SECONDS THREADS HOLD_US\n"
                "       bench_pools stall SECONDS [THREADS]\n");
        return 2;
    }
    const char *mode = argv[1];
    G.mode = strcmp(mode, "cycle") == 0        ? M_CYCLE
             : strcmp(mode, "stmt") == 0       ? M_STMT
             : strcmp(mode, "stmt-share") == 0 ? M_SHARE
                                               : M_LATENCY;
    if (G.mode == M_LATENCY && strcmp(mode, "latency") != 0 && strcmp(mode, "latency-sleep") != 0)
        bench_die("unknown mode '%s'", mode);
    G.hold_sleeps = strcmp(mode, "latency-sleep") == 0;
    G.impl = impl_parse(argv[2]);
    if (G.mode == M_SHARE && G.impl != I_DBPOOL && G.impl != I_DBPOOL_NATIVE)
        bench_die("stmt-share times dbpool's own calls: use dbpool or dbpool-native");
    G.backend = bench_backend_parse(argv[3]);
    G.url = bench_url_arg(argv[4]);
    G.size = atoi(argv[5]);
    double seconds = atof(argv[6]);
    int threads[16];
    int nthreads = bench_parse_list(argv[7], threads, 16);
    int max_threads = 0;
    for (int k = 0; k < nthreads; k++)
        max_threads = threads[k] > max_threads ? threads[k] : max_threads;
    if (max_threads > 64 || max_threads < 1)
        bench_die("1 to 64 threads");
    G.hold_ns = argc > 8 ? (int64_t)(atof(argv[8]) * 1000.0) : 100000;
    pthread_mutex_init(&G.shared_mutex, NULL);
    /* BENCH_IMPL_LABEL names a variant (dbpool with a non-default option)
     * so that its lines are not mixed with the default's. */
    const char *label = getenv("BENCH_IMPL_LABEL");
    const char *impl = label && *label ? label : impl_names[G.impl];
    bool floor = G.impl == I_MUTEX || G.impl == I_MUTEX_SHARED || G.impl == I_CLOCK_MONO ||
                 G.impl == I_CLOCK_COARSE || G.impl == I_TSC_PAIR;
    const char *backend = floor ? "-" : bench_backend_name(G.backend);
    int size = G.impl == I_RAW || G.impl == I_RAW_AA || G.impl == I_RAW_SELF || G.impl == I_CPQ || floor
                   ? 0
                   : G.size;

    pool_open();
    if (G.mode == M_STMT)
        for (int i = 0; i < max_threads; i++)
            if (!(G.raw_conns[i] = bench_raw_open(G.backend, G.url, false)) ||
                (G.impl == I_RAW_AA && !(G.raw_conns2[i] = bench_raw_open(G.backend, G.url, false))))
                bench_die("cannot open a raw connection");
    /* A short untimed run first: caches, lazily built statements, the
     * first connections' server-side state. */
    if (G.mode == M_STMT && G.impl != I_RAW) {
        (void)run_interleaved(threads[0], 0.4); /* both sides */
    } else {
        bench_run warm = {.nthreads = threads[0], .seconds = 0.2, .fn = worker_main};
        if (G.mode == M_LATENCY)
            warm.sample_cap = 1 << 16;
        bench_run_threads(&warm);
        bench_run_free(&warm);
    }
    if (G.mode == M_LATENCY) {
        /* A fresh pool for the measurement, so that dbpool's own histogram
         * holds exactly the measured acquisitions. */
        pool_close();
        pool_open();
    }

    for (int k = 0; k < nthreads && G.mode == M_STMT; k++) {
        if (G.impl == I_RAW) {
            bench_run r = {.nthreads = threads[k], .seconds = seconds, .fn = worker_main};
            bench_run_threads(&r);
            printf("R\tstmt\traw\t%s\t0\t%d\tops_s=%.0f\terrors=%lu\n", backend, threads[k],
                   (double)r.ops / r.elapsed_s, r.errors);
            bench_run_free(&r);
        } else {
            ab_result ab = run_interleaved(threads[k], seconds);
            printf("R\tstmt\t%s\t%s\t%d\t%d\tops_s=%.0f\traw_ops_s=%.0f\tratio=%.4f\terrors=%lu\n", impl,
                   backend, size, threads[k], ab.ops_s, ab.raw_ops_s, ab.ops_s / ab.raw_ops_s, ab.errors);
        }
        fflush(stdout);
    }
    for (int k = 0; k < nthreads && G.mode != M_STMT; k++) {
        bench_run r = {.nthreads = threads[k], .seconds = seconds, .fn = worker_main};
        if (G.mode == M_LATENCY)
            r.sample_cap =
                (size_t)(seconds * 1e6 / (double)(G.hold_ns / 1000 + 1) * (double)G.size * 2.0) + 1024;
        bench_run_threads(&r);
        double ops_s = (double)r.ops / r.elapsed_s;
        if (G.mode == M_LATENCY) {
            bench_latency L = bench_latency_of(&r);
            printf("R\t%s\t%s\t%s\t%d\t%d\tops_s=%.0f\tcount=%zu\tmean_us=%.1f\tp50_us=%.1f\tp99_us=%.1f"
                   "\tmax_us=%.1f\tfairness=%.2f\tmin_thread_ops=%lu\tmax_thread_ops=%lu\tmax_hold_us=%.1f"
                   "\tfails=%lu\terrors=%lu\n",
                   mode, impl, backend, size, threads[k], ops_s, L.count, L.mean_us, L.p50_us, L.p99_us,
                   L.max_us, L.mean_us > 0 ? L.max_us / L.mean_us : 0.0, L.min_per_thread, L.max_per_thread,
                   L.max_hold_us, r.fails, r.errors);
            if (G.impl == I_DBPOOL && impl == impl_names[G.impl]) {
                dbpool_stats st;
                dbpool_get_stats(G.dp, &st);
                if (st.acquire_wait.count > 0)
                    printf("R\t%s\tdbpool-histogram\t%s\t%d\t%d\tcount=%llu\tmean_us=%.1f\tp50_us=%.1f"
                           "\tp99_us=%.1f\tmax_us=%.1f\tfairness=%.2f\thandoffs=%llu\thandoff_p99_us=%.1f"
                           "\thandoff_max_us=%.1f\n",
                           mode, backend, size, threads[k], (unsigned long long)st.acquire_wait.count,
                           st.acquire_wait.mean_ms * 1e3, st.acquire_wait.p50_ms * 1e3,
                           st.acquire_wait.p99_ms * 1e3, st.acquire_wait.max_ms * 1e3,
                           st.acquire_wait.mean_ms > 0 ? st.acquire_wait.max_ms / st.acquire_wait.mean_ms
                                                       : 0.0,
                           (unsigned long long)st.handoff_delay.count, st.handoff_delay.p99_ms * 1e3,
                           st.handoff_delay.max_ms * 1e3);
                else
                    printf("R\t%s\tdbpool-histogram\t%s\t%d\t%d\tcount=0\tnote=no_histogram_data\n", mode,
                           backend, size, threads[k]);
            }
        } else if (G.mode == M_SHARE) {
            int64_t pool_ns = 0, op_ns = 0;
            for (int i = 0; i < r.nthreads; i++) {
                pool_ns += r.w[i].pool_ns;
                op_ns += r.w[i].op_ns;
            }
            /* Two timed intervals per cycle for the pool, one for the
             * cycle: each holds about one clock read. */
            double clock_ns = clock_read_ns();
            double n = r.ops ? (double)r.ops : 1.0;
            double pool_per_op = (double)pool_ns / n - 2 * clock_ns;
            double op_per_op = (double)op_ns / n - clock_ns;
            printf("R\tstmt-share\t%s\t%s\t%d\t%d\tops_s=%.0f\tpool_ns=%.1f\tcycle_ns=%.1f\tshare=%.5f"
                   "\tclock_ns=%.1f\terrors=%lu\n",
                   impl, backend, size, threads[k], ops_s, pool_per_op, op_per_op,
                   op_per_op > 0 ? pool_per_op / op_per_op : 0.0, clock_ns, r.errors);
        } else {
            printf("R\t%s\t%s\t%s\t%d\t%d\tops_s=%.0f\tns_op=%.1f\tfails=%lu\terrors=%lu\n", mode, impl,
                   backend, size, threads[k], ops_s, r.ops ? r.elapsed_s * 1e9 / (double)r.ops : 0.0, r.fails,
                   r.errors);
        }
        fflush(stdout);
        bench_run_free(&r);
    }
    pool_close();
    for (int i = 0; i < max_threads; i++) {
        bench_raw_close(G.backend, G.raw_conns[i]);
        bench_raw_close(G.backend, G.raw_conns2[i]);
    }
    return 0;
}
