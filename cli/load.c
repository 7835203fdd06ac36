/*
 * load.c — the workload behind `dbpool bench` and `dbpool stat`: worker
 * threads doing pool operations until stopped or until a count is reached,
 * with every failure counted by its code and none of them ending the run.
 */
#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

/* Small stacks, so that `--threads 1000` costs 128 MiB of address space
 * rather than 8 GiB. Sanitizers make frames several times larger. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define WORKER_STACK (1024 * 1024)
#else
#define WORKER_STACK (128 * 1024)
#endif

/* Op latency: 8 linear sub-buckets per power of two of nanoseconds (within
 * 12.5%), up to 2^40 ns (18 minutes). */
#define LAT_SUB 8
#define LAT_BUCKETS (40 * LAT_SUB)

typedef struct worker {
    /* Written by the worker, read live by the main thread. */
    _Alignas(64) atomic_uint_fast64_t ops;
    atomic_uint_fast64_t errors;
    atomic_uint_fast64_t opened;
    atomic_uint_fast64_t errors_by[CLI_ERR_SLOTS];
    /* Written by the worker only (relaxed loads and stores, plain moves),
     * read by the main thread once the worker has ended, or, when an op
     * never returns, while the worker may still come back to them. */
    atomic_uint_fast64_t lat[LAT_BUCKETS];
    atomic_uint_fast64_t lat_max_ns;
    atomic_uint_fast64_t lat_sum_ns;
    atomic_int_fast64_t last_end_ns; /* when its last op ended (0: none yet) */
    /* The worker's own until it is joined. */
    struct cli_load *load;
    pthread_t tid;
    uint64_t rng;
    bool exited; /* under the load's mu */
} worker;

struct cli_load {
    cli_load_config cfg;
    worker *w;
    int started; /* threads that exist */
    pthread_mutex_t mu;
    pthread_cond_t gate_cv;
    bool gate_open;
    pthread_cond_t exit_cv;     /* CLOCK_MONOTONIC; signalled as each worker ends */
    int exited;                 /* workers that ended, under mu */
    struct cli_load *next_left; /* in left_behind */
    int64_t start_ns;
    int64_t stop_ns; /* when the stop began */
    _Alignas(64) atomic_bool stop;
    atomic_bool suspended;                      /* set just before the pool is suspended at the stop */
    atomic_int waiting_at_stop;                 /* the pool's callers in line as it was suspended */
    _Alignas(64) atomic_uint_fast64_t tickets;  /* ops handed out (max_ops mode) */
    _Alignas(64) atomic_uint_fast64_t finished; /* ops finished (max_ops mode) */
    atomic_int_fast64_t done_ns;                /* when the max_ops-th op finished */
    char samples[CLI_ERR_SLOTS][256];           /* first message per slot, under mu */
    atomic_bool sampled[CLI_ERR_SLOTS];         /* set under mu, read without */
};

int64_t cli_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_ns(int64_t ns) {
    if (ns <= 0)
        return;
    struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---- stop signals ------------------------------------------------------- */

static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig) {
    (void)sig;
    stop_signal = 1;
}

void cli_stop_signals_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    /* A second Ctrl-C, when the clean stop is stuck, kills as usual. */
    sa.sa_flags = (int)SA_RESETHAND;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

bool cli_stop_requested(void) { return stop_signal != 0; }

static bool stopping(const cli_load *l) { return atomic_load_explicit(&l->stop, memory_order_relaxed); }

/* Sleep ns in slices of at most slice_ns, returning early once the load l
 * stops (with l NULL: once a stop signal came). The signal may land on any
 * thread, so poll rather than rely on EINTR. */
static void nap_sliced(int64_t ns, int64_t slice_ns, const cli_load *l) {
    int64_t end = cli_now_ns() + ns;
    for (int64_t now = cli_now_ns(); now < end && !(l ? stopping(l) : cli_stop_requested());
         now = cli_now_ns())
        sleep_ns(end - now < slice_ns ? end - now : slice_ns);
}

void cli_nap_ns(int64_t ns) { nap_sliced(ns, 20 * 1000000, NULL); }

/* ---- errors and latency ---------------------------------------------- */

static int err_slot(int code) { return code < 0 && code > -CLI_ERR_SLOTS ? -code : 0; }

const char *cli_err_slot_name(int slot) { return slot > 0 ? dbpool_errname(-slot) : "other"; }

static int lat_bucket(uint64_t ns) {
    if (ns < LAT_SUB)
        return (int)ns;
    int msb = 63 - __builtin_clzll(ns); /* >= 3 */
    int b = (msb - 2) * LAT_SUB + (int)((ns >> (msb - 3)) & (LAT_SUB - 1));
    return b < LAT_BUCKETS ? b : LAT_BUCKETS - 1;
}

/* The largest value that falls in bucket b. */
static double lat_upper_ns(int b) {
    if (b < LAT_SUB)
        return b;
    int msb = b / LAT_SUB + 2, sub = b % LAT_SUB;
    return ldexp((double)(LAT_SUB + sub + 1), msb - 3) - 1;
}

static double lat_quantile_ms(const uint64_t *lat, uint64_t count, double max_ns, double q) {
    if (count == 0)
        return 0;
    uint64_t rank = (uint64_t)ceil(q * (double)count), seen = 0;
    if (rank == 0)
        rank = 1;
    for (int b = 0; b < LAT_BUCKETS; b++) {
        seen += lat[b];
        if (seen >= rank) {
            double v = lat_upper_ns(b);
            return (v < max_ns ? v : max_ns) / 1e6;
        }
    }
    return max_ns / 1e6;
}

static void count_error(worker *w, int code, const dbpool_error *e) {
    int slot = err_slot(code);
    atomic_fetch_add_explicit(&w->errors, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&w->errors_by[slot], 1, memory_order_relaxed);
    cli_load *l = w->load;
    if (atomic_load_explicit(&l->sampled[slot], memory_order_acquire))
        return;
    pthread_mutex_lock(&l->mu);
    if (!atomic_load_explicit(&l->sampled[slot], memory_order_relaxed)) {
        /* The code is shown next to it; library messages carry no password. */
        snprintf(l->samples[slot], sizeof l->samples[slot], "%s",
                 e && e->message[0] ? e->message : dbpool_strerror(code));
        atomic_store_explicit(&l->sampled[slot], true, memory_order_release);
    }
    pthread_mutex_unlock(&l->mu);
}

/* ---- one op ----------------------------------------------------------- */

static uint64_t next_rand(uint64_t *s) { /* xorshift64 */
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* How often a hold looks at the stop flag: a stop ends the run this soon
 * after it, however long --hold-ms is. */
#define HOLD_SLICE_NS (10 * 1000000)
/* The end of a hold is waited for on the clock rather than asleep: a
 * sleep ends tens of microseconds late (timer slack, wake-up), which made
 * a 10 us hold last 84 us and a 100 us one 173 us. */
#define HOLD_SPIN_NS (20 * 1000)

/* Keep the lease for the configured time, in slices, returning as soon as
 * the load is stopped: otherwise each queued caller would still hold its
 * lease in full after Ctrl-C or the end of --duration. */
static void hold(worker *w) {
    cli_load *l = w->load;
    const cli_load_config *c = &l->cfg;
    int64_t ns = c->hold_ns;
    if (c->hold_jitter_ns > 0)
        ns += (int64_t)(next_rand(&w->rng) % (uint64_t)c->hold_jitter_ns);
    if (ns <= 0)
        return;
    int64_t end = cli_now_ns() + ns;
    for (int64_t now = cli_now_ns(); now < end && !stopping(l); now = cli_now_ns()) {
        int64_t left = end - now;
        if (left > HOLD_SPIN_NS)
            sleep_ns(left - HOLD_SPIN_NS < HOLD_SLICE_NS ? left - HOLD_SPIN_NS : HOLD_SLICE_NS);
    }
}

static int run_query(dbpool_conn *c, const char *sql, dbpool_error *e) {
    dbpool_result *r = NULL;
    int rc = dbpool_query(c, sql, NULL, 0, &r, e);
    if (rc != DBPOOL_OK)
        return rc;
    while ((rc = dbpool_result_next(r, e)) > 0) {
    }
    dbpool_result_free(r);
    return rc < 0 ? rc : DBPOOL_OK;
}

/* What op_on_pool returns for an acquire the suspended pool refused as the
 * load stopped: not an op, so that it is not counted as one. */
#define OP_ABANDONED 1

static int op_on_pool(worker *w, dbpool *p, bool query, bool may_abandon, dbpool_error *e) {
    const cli_load_config *c = &w->load->cfg;
    dbpool_conn *conn = NULL;
    int rc = dbpool_acquire(p, c->acquire_timeout_ms, &conn, e);
    if (rc == DBPOOL_EBUSY && may_abandon && atomic_load_explicit(&w->load->suspended, memory_order_relaxed))
        return OP_ABANDONED; /* the pool was suspended as the load stopped */
    if (rc != DBPOOL_OK)
        return rc;
    /* Every lease is an op, even one handed out as the load stops: the
     * pool counted it in its acquire and use histograms, and the report
     * reads both side by side. Its hold ends at the stop (hold is sliced). */
    if (query)
        rc = run_query(conn, c->query, e);
    hold(w);
    int rr = dbpool_release(conn);
    return rc != DBPOOL_OK ? rc : rr;
}

/* Connect per query through the public API only: a pool of exactly one
 * connection, without a maintenance thread or retries, opened for the op
 * and closed after it. This is what an application without a pool pays. */
static int op_connect(worker *w, dbpool_error *e) {
    const cli_load_config *c = &w->load->cfg;
    dbpool_options o;
    dbpool_options_init(&o);
    o.name = "bench-connect";
    o.min_size = 1;
    o.max_size = 1;
    o.max_retries = 0;
    o.maintenance_interval_ms = 0;
    o.breaker_failures = 0;
    o.acquire_timeout_ms = c->acquire_timeout_ms;
    if (o.connect_timeout_ms > c->acquire_timeout_ms)
        o.connect_timeout_ms = c->acquire_timeout_ms;
    dbpool *p = NULL;
    int rc = dbpool_open(&p, c->url, &o, e);
    if (rc != DBPOOL_OK)
        return rc;
    atomic_fetch_add_explicit(&w->opened, 1, memory_order_relaxed);
    /* Never abandoned: the connection this op opened is counted, and so
     * must the op be. */
    rc = op_on_pool(w, p, true, false, e);
    dbpool_close(p);
    return rc;
}

/* Add to a counter only its worker writes: a relaxed load and store, no
 * locked instruction, yet no data race with a reader on another thread. */
static void bump(atomic_uint_fast64_t *c, uint64_t by) {
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + by, memory_order_relaxed);
}

static void *worker_main(void *arg) {
    worker *w = arg;
    cli_load *l = w->load;
    /* Sleeps of a hold end on time, not up to 50 us late (the default
     * slack); the timer merges fewer wake-ups, which a load test can spare. */
#ifdef PR_SET_TIMERSLACK
    prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
#endif
    pthread_mutex_lock(&l->mu);
    while (!l->gate_open)
        pthread_cond_wait(&l->gate_cv, &l->mu);
    pthread_mutex_unlock(&l->mu);

    const uint64_t max = l->cfg.max_ops;
    dbpool_error e;
    while (!stopping(l)) {
        if (max && atomic_fetch_add_explicit(&l->tickets, 1, memory_order_relaxed) >= max)
            break;
        e.code = 0;
        e.message[0] = '\0';
        int64_t t0 = cli_now_ns();
        int rc;
        switch (l->cfg.mode) {
        case CLI_MODE_CYCLE:
            rc = op_on_pool(w, l->cfg.pool, false, true, &e);
            break;
        case CLI_MODE_STATEMENT:
            rc = op_on_pool(w, l->cfg.pool, true, true, &e);
            break;
        default:
            rc = op_connect(w, &e);
            break;
        }
        if (rc == OP_ABANDONED)
            break; /* the load is stopping (the stop flag follows the suspend) */
        int64_t t1 = cli_now_ns();
        uint64_t ns = t1 > t0 ? (uint64_t)(t1 - t0) : 0;
        bump(&w->lat[lat_bucket(ns)], 1);
        bump(&w->lat_sum_ns, ns);
        if (ns > atomic_load_explicit(&w->lat_max_ns, memory_order_relaxed))
            atomic_store_explicit(&w->lat_max_ns, ns, memory_order_relaxed);
        atomic_store_explicit(&w->last_end_ns, t1, memory_order_relaxed);
        if (rc != DBPOOL_OK)
            count_error(w, rc, &e);
        atomic_fetch_add_explicit(&w->ops, 1, memory_order_relaxed);
        if (max && atomic_fetch_add_explicit(&l->finished, 1, memory_order_acq_rel) + 1 == max)
            atomic_store_explicit(&l->done_ns, t1, memory_order_release);
        if (rc != DBPOOL_OK && l->cfg.pause_after_error_ns > 0)
            nap_sliced(l->cfg.pause_after_error_ns, HOLD_SLICE_NS, l);
    }
    pthread_mutex_lock(&l->mu);
    w->exited = true;
    l->exited++;
    pthread_cond_broadcast(&l->exit_cv);
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* ---- the load --------------------------------------------------------- */

static void open_gate(cli_load *l) {
    pthread_mutex_lock(&l->mu);
    l->start_ns = cli_now_ns();
    l->gate_open = true;
    pthread_cond_broadcast(&l->gate_cv);
    pthread_mutex_unlock(&l->mu);
}

static void stop_all(cli_load *l) {
    l->stop_ns = cli_now_ns();
    /* Callers still queued would each get a connection as the holds end,
     * and every such lease is an op in the pool's histograms: the pool is
     * suspended first, so that they fail at once instead (DBPOOL_EBUSY,
     * suspend_fails_fast, not counted), and only then are the holds cut.
     * In the other order the cut holds hand the connections round the
     * whole queue (a review measured 200 zero-length ops on 300). */
    if (l->cfg.pool && l->cfg.mode != CLI_MODE_CONNECT) {
        /* The pool's own count of callers in line: a worker refused by the
         * suspended pool may have just come to it, without waiting. */
        if (!atomic_load(&l->suspended)) {
            dbpool_stats s;
            dbpool_get_stats(l->cfg.pool, &s);
            atomic_store(&l->waiting_at_stop, s.waiting);
        }
        atomic_store(&l->suspended, true);
        dbpool_suspend(l->cfg.pool);
    }
    atomic_store(&l->stop, true);
    if (!l->gate_open)
        open_gate(l);
}

static void join_all(cli_load *l) {
    stop_all(l);
    for (int i = 0; i < l->started; i++)
        pthread_join(l->w[i].tid, NULL);
}

/* Loads left behind with workers stuck in an op: never freed (the workers
 * may yet come back to them), and kept reachable. */
static cli_load *_Atomic left_behind;

/* Stop the workers and join those that end within grace_ns (< 0: wait for
 * all). Returns how many are still in an op: they are detached, and the
 * load must then not be freed. */
static int stop_and_join_within(cli_load *l, int64_t grace_ns) {
    stop_all(l);
    int64_t deadline = cli_now_ns() + grace_ns;
    pthread_mutex_lock(&l->mu);
    while (l->exited < l->started) {
        if (grace_ns < 0) {
            pthread_cond_wait(&l->exit_cv, &l->mu);
            continue;
        }
        if (cli_now_ns() >= deadline)
            break;
        struct timespec ts = {(time_t)(deadline / 1000000000), (long)(deadline % 1000000000)};
        pthread_cond_timedwait(&l->exit_cv, &l->mu, &ts); /* exit_cv runs on CLOCK_MONOTONIC */
    }
    int stuck = 0;
    for (int i = 0; i < l->started; i++) {
        if (l->w[i].exited)
            pthread_join(l->w[i].tid, NULL);
        else {
            pthread_detach(l->w[i].tid);
            stuck++;
        }
    }
    pthread_mutex_unlock(&l->mu);
    return stuck;
}

static void free_load(cli_load *l) {
    pthread_cond_destroy(&l->exit_cv);
    pthread_cond_destroy(&l->gate_cv);
    pthread_mutex_destroy(&l->mu);
    free(l->w);
    free(l);
}

bool cli_load_start(cli_load **out, const cli_load_config *cfg, char *why, size_t whycap) {
    *out = NULL;
    cli_load *l = calloc(1, sizeof *l);
    worker *w = l ? calloc((size_t)cfg->threads, sizeof *w) : NULL;
    if (!w) {
        free(l);
        snprintf(why, whycap, "out of memory for %d worker threads", cfg->threads);
        return false;
    }
    l->cfg = *cfg;
    l->w = w;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->gate_cv, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&l->exit_cv, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&l->stop, false);
    atomic_init(&l->suspended, false);
    atomic_init(&l->waiting_at_stop, 0);
    atomic_init(&l->tickets, 0);
    atomic_init(&l->finished, 0);
    atomic_init(&l->done_ns, 0);

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    size_t stack = WORKER_STACK;
#ifdef PTHREAD_STACK_MIN
    if (stack < (size_t)PTHREAD_STACK_MIN)
        stack = (size_t)PTHREAD_STACK_MIN;
#endif
    pthread_attr_setstacksize(&attr, stack);
    uint64_t seed = (uint64_t)cli_now_ns() | 1;
    int err = 0;
    for (int i = 0; i < cfg->threads; i++) {
        w[i].load = l;
        w[i].rng = (seed ^ ((uint64_t)(i + 1) * 0x9E3779B97F4A7C15ULL)) | 1;
        err = pthread_create(&w[i].tid, &attr, worker_main, &w[i]);
        if (err != 0)
            break;
        l->started++;
    }
    pthread_attr_destroy(&attr);
    if (err != 0) {
        int started = l->started;
        join_all(l);
        free_load(l);
        snprintf(why, whycap, "could start only %d of %d worker threads (%s)", started, cfg->threads,
                 strerror(err));
        return false;
    }
    open_gate(l);
    *out = l;
    return true;
}

int64_t cli_load_started_ns(const cli_load *l) { return l->start_ns; }

bool cli_load_done(const cli_load *l) {
    return l->cfg.max_ops &&
           atomic_load_explicit(&((cli_load *)l)->finished, memory_order_acquire) >= l->cfg.max_ops;
}

void cli_load_snapshot(const cli_load *l, cli_load_report *r) {
    r->ops = r->errors = r->opened = 0;
    r->abandoned = (uint64_t)atomic_load(&((cli_load *)l)->waiting_at_stop);
    memset(r->errors_by, 0, sizeof r->errors_by);
    for (int i = 0; i < l->started; i++) {
        worker *w = &l->w[i];
        r->ops += atomic_load_explicit(&w->ops, memory_order_relaxed);
        r->errors += atomic_load_explicit(&w->errors, memory_order_relaxed);
        r->opened += atomic_load_explicit(&w->opened, memory_order_relaxed);
        for (int s = 0; s < CLI_ERR_SLOTS; s++)
            r->errors_by[s] += atomic_load_explicit(&w->errors_by[s], memory_order_relaxed);
    }
}

bool cli_load_error_sample(cli_load *l, int slot, char *buf, size_t cap) {
    if (slot < 0 || slot >= CLI_ERR_SLOTS || !atomic_load_explicit(&l->sampled[slot], memory_order_acquire))
        return false;
    pthread_mutex_lock(&l->mu);
    snprintf(buf, cap, "%s", l->samples[slot]);
    pthread_mutex_unlock(&l->mu);
    return true;
}

void cli_load_finish(cli_load *l, cli_load_report *r) { cli_load_finish_within(l, r, -1); }

int cli_load_finish_within(cli_load *l, cli_load_report *r, int64_t grace_ns) {
    int stuck = stop_and_join_within(l, grace_ns);
    memset(r, 0, sizeof *r);
    r->unfinished = stuck;
    cli_load_snapshot(l, r);
    pthread_mutex_lock(&l->mu);
    memcpy(r->error_sample, l->samples, sizeof r->error_sample);
    pthread_mutex_unlock(&l->mu);
    /* The time ops ran: to the stop, or to the end of an op that ran on
     * past it; not the time taken to join the workers (0.44 s for 10000)
     * nor the wait for ops that never returned, in which no op started. */
    int64_t end_ns = l->stop_ns;
    for (int i = 0; i < l->started; i++) {
        int64_t last = atomic_load_explicit(&l->w[i].last_end_ns, memory_order_relaxed);
        if (last > end_ns)
            end_ns = last;
    }
    r->elapsed_s = (double)(end_ns - l->start_ns) / 1e9;
    int64_t done = atomic_load(&l->done_ns);
    r->burst_s = l->cfg.max_ops && done ? (double)(done - l->start_ns) / 1e9 : -1.0;

    uint64_t *lat = calloc(LAT_BUCKETS, sizeof *lat);
    double sum = 0, max = 0;
    uint64_t count = 0;
    for (int i = 0; i < l->started; i++) {
        worker *w = &l->w[i];
        for (int b = 0; lat && b < LAT_BUCKETS; b++)
            lat[b] += atomic_load_explicit(&w->lat[b], memory_order_relaxed);
        sum += (double)atomic_load_explicit(&w->lat_sum_ns, memory_order_relaxed);
        uint64_t wmax = atomic_load_explicit(&w->lat_max_ns, memory_order_relaxed);
        if ((double)wmax > max)
            max = (double)wmax;
    }
    if (lat) {
        for (int b = 0; b < LAT_BUCKETS; b++)
            count += lat[b];
        r->op.count = count;
        r->op.mean_ms = count ? sum / (double)count / 1e6 : 0;
        r->op.p50_ms = lat_quantile_ms(lat, count, max, 0.50);
        r->op.p95_ms = lat_quantile_ms(lat, count, max, 0.95);
        r->op.p99_ms = lat_quantile_ms(lat, count, max, 0.99);
        r->op.max_ms = max / 1e6;
        free(lat);
    }
    if (stuck == 0) {
        free_load(l);
    } else {
        /* A stuck worker may still return from its op, and then reads and
         * writes l: it is left to the end of the process. */
        l->next_left = atomic_load(&left_behind);
        atomic_store(&left_behind, l);
    }
    return stuck;
}
