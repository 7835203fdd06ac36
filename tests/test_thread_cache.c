/* The thread cache (src/sticky.c): a thread's released connection is kept
 * for its next acquire, yet never ahead of a waiter, never lost when the
 * thread goes away, counted in the stats and given back for close,
 * suspend, resize and maintenance. Mock backend. */
#include "driver_mock.h"
#include "testsupport.h"

#include <pthread.h>
#include <stdatomic.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

static dbpool *open_pool(int min, int max, bool cache, int64_t maint_ms) {
    dbpool_options o;
    dbt_mock_options(&o, min, max, cache);
    o.maintenance_interval_ms = maint_ms;
    return dbt_open_mock(&o);
}

/* A lease taken from the thread cache that outlived max_lifetime_ms is
 * closed at its release (operations.md, "Lifetime"), not kept for the
 * thread's next acquire. */
static void test_expired_cached_lease_closed_on_release(void **state) {
    (void)state;
    dbpool_options o;
    dbt_mock_options(&o, 0, 1, true);
    o.max_lifetime_ms = 1000; /* room for a loaded machine before the second acquire */
    dbpool *p = dbt_open_mock(&o);
    dbpool_conn *c;
    assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
    assert_int_equal(dbpool_release(c), DBPOOL_OK); /* parked */
    assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
    dbpool_stats s = dbt_stats(p);
    assert_int_equal(s.reused, 1); /* the parked one, before its lifetime ended */
    dbt_sleep_ms(1200);            /* its lifetime ends while it is leased */
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    s = dbt_stats(p);
    if (s.destroyed_by[DBPOOL_CLOSE_LIFETIME] != 1 || s.total != 0)
        fail_msg(
            "an expired lease from the thread cache was kept at its release: destroyed_by[lifetime] %llu, "
            "total %d",
            (unsigned long long)s.destroyed_by[DBPOOL_CLOSE_LIFETIME], s.total);
    dbpool_close(p);
}

/* Leases taken back from the thread cache are counted in the acquire
 * histogram when it is read, also before any dbpool_get_stats. */
static void test_cached_leases_in_histogram(void **state) {
    (void)state;
    dbpool *p = open_pool(0, 1, true, 0);
    for (int i = 0; i < 5; i++) {
        dbpool_conn *c;
        assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
        assert_int_equal(dbpool_release(c), DBPOOL_OK);
    }
    dbpool_histogram h;
    dbpool_get_histogram(p, DBPOOL_HIST_ACQUIRE, &h);
    if (h.count != 5)
        fail_msg("5 acquires (4 from the thread cache): the acquire histogram counts %llu",
                 (unsigned long long)h.count);
    dbpool_close(p);
}

/* Released and acquired again on one thread: the same connection, and
 * every hand-out counted (stats and the acquire histogram). */
static void test_same_thread_gets_its_connection_back(void **state) {
    (void)state;
    dbpool *p = open_pool(2, 4, true, 0);
    dbpool_conn *c = dbt_acquire(p);
    int id = dbt_conn_id(c);
    dbpool_release(c);
    dbpool_stats s = dbt_stats(p);
    assert_int_equal(s.idle, 2); /* the parked one counts as idle */
    assert_int_equal(s.in_use, 0);
    assert_int_equal(s.thread_cached, 1);
    for (int i = 0; i < 1000; i++) {
        c = dbt_acquire(p);
        assert_int_equal(dbt_conn_id(c), id);
        if (i == 0) {
            s = dbt_stats(p);
            assert_int_equal(s.in_use, 1);
            assert_int_equal(s.idle, 1);
            assert_true(dbt_invariant_holds(p));
        }
        assert_int_equal(dbpool_release(c), DBPOOL_OK);
    }
    s = dbt_stats(p);
    assert_int_equal(s.acquired, 1001);
    assert_int_equal(s.reused, 1000); /* the first lease of a warm-up connection is no reuse */
    dbpool_histogram h;
    dbpool_get_histogram(p, DBPOOL_HIST_ACQUIRE, &h);
    assert_int_equal(h.count, 1001);
    dbpool_get_histogram(p, DBPOOL_HIST_USE, &h);
    assert_int_equal(h.count, 1001);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

/* The most recently released connection is the next one handed out, as
 * without the cache: the older parked one moves to the idle list. */
static void test_most_recent_first(void **state) {
    (void)state;
    dbpool *p = open_pool(0, 3, true, 0);
    dbpool_conn *a = dbt_acquire(p), *b = dbt_acquire(p), *c = dbt_acquire(p);
    int ids[3] = {dbt_conn_id(a), dbt_conn_id(b), dbt_conn_id(c)};
    dbpool_release(a);
    dbpool_release(b);
    dbpool_release(c);
    dbpool_conn *x = dbt_acquire(p), *y = dbt_acquire(p), *z = dbt_acquire(p);
    assert_int_equal(dbt_conn_id(x), ids[2]);
    assert_int_equal(dbt_conn_id(y), ids[1]);
    assert_int_equal(dbt_conn_id(z), ids[0]);
    dbpool_release(x);
    dbpool_release(y);
    dbpool_release(z);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

/* Misuse is still caught on the fast path. */
static void test_double_release_and_stale_handle(void **state) {
    (void)state;
    dbpool *p = open_pool(1, 2, true, 0);
    dbpool_conn *c = dbt_acquire(p);
    dbpool_release(c);
    c = dbt_acquire(p); /* the fast path */
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_release(c), DBPOOL_EMISUSE);
    assert_int_equal(dbpool_discard(c), DBPOOL_EMISUSE);
    assert_null(dbpool_conn_native(c));
    dbpool_stats s = dbt_stats(p);
    assert_int_equal(s.destroyed, 0);
    assert_int_equal(s.idle, 1);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

typedef struct handover {
    dbpool_conn *c;
    int rc;
} handover;

static void *release_there(void *arg) {
    handover *h = arg;
    h->rc = dbpool_release(h->c);
    return NULL;
}

/* A lease from this thread's cache released on another thread: accepted,
 * and the connection goes on serving both threads. */
static void test_released_on_another_thread(void **state) {
    (void)state;
    dbpool *p = open_pool(1, 1, true, 0);
    dbpool_conn *c = dbt_acquire(p);
    dbpool_release(c);
    c = dbt_acquire(p); /* the fast path */
    int id = dbt_conn_id(c);
    handover h = {.c = c, .rc = -100};
    pthread_t t;
    pthread_create(&t, NULL, release_there, &h);
    pthread_join(t, NULL);
    assert_int_equal(h.rc, DBPOOL_OK);
    dbpool_stats s = dbt_stats(p);
    assert_int_equal(s.in_use, 0);
    assert_int_equal(s.idle, 1);
    c = dbt_acquire(p);
    assert_int_equal(dbt_conn_id(c), id);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_release(c), DBPOOL_EMISUSE);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

/* A dirty or broken connection on the fast path goes the ordinary way:
 * rolled back, or closed. */
static void test_dirty_and_discarded_leave_the_cache(void **state) {
    (void)state;
    dbpool *p = open_pool(1, 2, true, 0);
    dbpool_conn *c = dbt_acquire(p);
    dbpool_release(c);
    c = dbt_acquire(p);
    assert_int_equal(dbpool_exec(c, "BEGIN", NULL, 0, NULL, NULL), DBPOOL_OK);
    void *native = dbpool_conn_native(c);
    dbpool_release(c);
    assert_false(dbpool__mock_in_transaction(native));
    assert_int_equal(dbt_stats(p).rollbacks, 1);
    c = dbt_acquire(p);
    assert_int_equal(dbpool_discard(c), DBPOOL_OK);
    dbpool_stats s = dbt_stats(p);
    assert_int_equal(s.destroyed_by[DBPOOL_CLOSE_DISCARDED], 1);
    assert_int_equal(s.total, 0);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

typedef struct waiter_arg {
    dbpool *p;
    atomic_int got_id;
    int64_t waited_ms;
} waiter_arg;

static void *wait_for_one(void *arg) {
    waiter_arg *w = arg;
    int64_t t0 = dbt_now_ms();
    dbpool_conn *c = NULL;
    if (dbpool_acquire(w->p, 5000, &c, NULL) == DBPOOL_OK) {
        w->waited_ms = dbt_now_ms() - t0;
        atomic_store(&w->got_id, dbt_conn_id(c));
        dbt_sleep_ms(50);
        dbpool_release(c);
    } else {
        atomic_store(&w->got_id, -1);
    }
    return NULL;
}

/* A waiter comes first: the holder's release hands the connection over,
 * and the holder's next acquire waits its turn instead of taking it back. */
static void test_waiter_is_served_before_the_owner(void **state) {
    (void)state;
    dbpool *p = open_pool(1, 1, true, 0);
    dbpool_conn *c = dbt_acquire(p);
    dbpool_release(c);
    c = dbt_acquire(p); /* parked for this thread, in use */
    int id = dbt_conn_id(c);
    waiter_arg w = {.p = p};
    pthread_t t;
    pthread_create(&t, NULL, wait_for_one, &w);
    dbt_wait_for_waiters(p, 1, 5000);
    /* Well past any barging window: the waiter wakes at the end of its own
     * (a timer that a loaded machine, e.g. under TSan, can delay by ms) and
     * turns the pool starving; from then on its turn comes first. */
    dbt_sleep_ms(200);
    dbpool_release(c);
    /* The owner asks again at once: the waiter must have it first. */
    dbpool_conn *again = dbt_acquire(p);
    assert_int_equal(atomic_load(&w.got_id), id);
    dbpool_release(again);
    pthread_join(t, NULL);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

/* A parked connection that is not in use is taken by another thread at
 * once (pool of one): parking never holds a connection back. */
static void test_free_parked_connection_serves_others(void **state) {
    (void)state;
    dbpool *p = open_pool(1, 1, true, 0);
    dbpool_conn *c = dbt_acquire(p);
    int id = dbt_conn_id(c);
    dbpool_release(c); /* parked for this thread, free */
    waiter_arg w = {.p = p};
    pthread_t t;
    pthread_create(&t, NULL, wait_for_one, &w);
    pthread_join(t, NULL);
    assert_int_equal(atomic_load(&w.got_id), id);
    assert_true(w.waited_ms < 1000);
    /* This thread's cache lost it; it gets it back the ordinary way. */
    c = dbt_acquire(p);
    assert_int_equal(dbt_conn_id(c), id);
    dbpool_release(c);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

static void *park_and_exit(void *arg) {
    dbpool *p = arg;
    dbpool_conn *c = dbt_acquire(p);
    dbpool_release(c);
    return NULL;
}

/* A thread that parks a connection and exits leaves nothing stranded. */
static void test_exited_thread_leaves_nothing_behind(void **state) {
    (void)state;
    dbpool *p = open_pool(0, 2, true, 0);
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        pthread_create(&t[i], NULL, park_and_exit, p);
        pthread_join(t[i], NULL);
    }
    dbpool_stats s = dbt_stats(p);
    assert_true(s.total >= 1 && s.idle == s.total);
    assert_true(s.thread_cached >= 1); /* left behind by the threads, free for anyone */
    dbpool_conn *a = dbt_acquire(p), *b = dbt_acquire(p);
    assert_int_equal(dbt_stats(p).in_use, 2);
    dbpool_release(a);
    dbpool_release(b);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
    assert_int_equal(dbt_mock_live(), 0);
}

/* Maintenance takes back a parked connection its thread stopped using, so
 * that idle timeout applies to it. */
static void test_maintenance_recalls_unused_parked(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.maintenance_interval_ms = 50;
    o.idle_timeout_ms = 100;
    dbpool *p = NULL;
    dbpool_error e;
    assert_int_equal(dbpool_open(&p, "mock:", &o, &e), DBPOOL_OK);
    dbpool_conn *c = dbt_acquire(p);
    dbpool_release(c);
    /* Wait for the close to be counted, not only for the total to drop:
     * the total leaves out a connection being closed, which maintenance
     * counts in destroyed_by once its disconnect has returned. */
    int64_t t0 = dbt_now_ms();
    dbpool_stats s = dbt_stats(p);
    while ((s.total > 0 || s.destroyed_by[DBPOOL_CLOSE_IDLE_TIMEOUT] == 0) && dbt_now_ms() - t0 < 3000) {
        dbt_sleep_ms(10);
        s = dbt_stats(p);
    }
    assert_int_equal(s.total, 0);
    assert_true(s.destroyed_by[DBPOOL_CLOSE_IDLE_TIMEOUT] >= 1);
    assert_int_equal(dbpool_close(p), 0);
}

typedef struct holder_arg {
    dbpool *p;
    atomic_int phase; /* 1: holding its parked connection; 2: release it */
} holder_arg;

static void *hold_parked(void *arg) {
    holder_arg *h = arg;
    dbpool_conn *c = dbt_acquire(h->p);
    dbpool_release(c);
    c = dbt_acquire(h->p); /* the fast path */
    atomic_store(&h->phase, 1);
    while (atomic_load(&h->phase) != 2)
        dbt_sleep_ms(1);
    dbpool_release(c);
    return NULL;
}

/* Close while another thread uses its parked connection: the connection
 * is closed at its release, and the pool is freed then (ASan checks). */
static void test_close_while_parked_connection_in_use(void **state) {
    (void)state;
    dbpool *p = open_pool(1, 2, true, 0);
    holder_arg h = {.p = p};
    pthread_t t;
    pthread_create(&t, NULL, hold_parked, &h);
    while (atomic_load(&h.phase) != 1)
        dbt_sleep_ms(1);
    assert_int_equal(dbpool_close(p), 1); /* one lease still out */
    atomic_store(&h.phase, 2);
    pthread_join(t, NULL);
    assert_int_equal(dbt_mock_live(), 0);
}

/* Suspend and resize give parked connections back to the pool. */
static void test_suspend_and_resize_recall(void **state) {
    (void)state;
    dbpool *p = open_pool(0, 3, true, 0);
    dbpool_conn *a = dbt_acquire(p), *b = dbt_acquire(p);
    dbpool_release(a);
    dbpool_release(b);
    assert_int_equal(dbpool_resize(p, 0, 1, NULL), DBPOOL_OK);
    dbpool_stats s = dbt_stats(p);
    assert_int_equal(s.total, 1);
    assert_int_equal(dbpool_suspend(p), DBPOOL_OK);
    dbpool_conn *c = NULL;
    assert_int_equal(dbpool_acquire(p, 100, &c, NULL), DBPOOL_EBUSY);
    assert_int_equal(dbpool_resume(p), DBPOOL_OK);
    c = dbt_acquire(p);
    dbpool_release(c);
    assert_int_equal(dbpool_shrink(p, 0), 1); /* the parked one counts as idle */
    assert_int_equal(dbt_stats(p).total, 0);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

/* Off: the release goes to the idle list. */
static void test_cache_off(void **state) {
    (void)state;
    dbpool *p = open_pool(1, 1, false, 0);
    dbpool_conn *c = dbt_acquire(p);
    dbpool_release(c);
    assert_int_equal(dbt_stats(p).thread_cached, 0);
    c = dbt_acquire(p);
    dbpool_release(c);
    dbpool_stats s = dbt_stats(p);
    assert_int_equal(s.acquired, 2);
    assert_int_equal(s.thread_cached, 0);
    assert_int_equal(s.idle, 1);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

/* include/dbpool.h: the cache is off while leak_threshold_ms, validation
 * "always" or autoscale is set, whatever thread_cache says: each needs the
 * lock on every lease (a stack to record, a round trip before every
 * hand-out, the utilisation samples). A release goes to the idle list, and
 * under "always" the next acquire on the same thread validates. */
static void set_leak_threshold(dbpool_options *o) { o->leak_threshold_ms = 600000; }
static void set_validate_always(dbpool_options *o) {
    o->validation = DBPOOL_VALIDATE_ALWAYS;
    o->validation_window_ms = 0;
}
static void set_autoscale(dbpool_options *o) { o->autoscale = true; }

static void test_cache_off_where_the_lock_is_needed(void **state) {
    (void)state;
    static const struct {
        void (*set)(dbpool_options *);
        const char *what;
    } cases[] = {
        {set_leak_threshold, "leak_threshold_ms"},
        {set_validate_always, "validation always"},
        {set_autoscale, "autoscale"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        dbpool__mock_reset();
        dbpool_options o;
        dbt_options(&o, 1, 2);
        o.thread_cache = true;
        o.validation = DBPOOL_VALIDATE_NEVER;
        cases[i].set(&o);
        dbpool *p = NULL;
        dbpool_error e;
        if (dbpool_open(&p, "mock:", &o, &e) != DBPOOL_OK)
            fail_msg("%s: open: %s", cases[i].what, e.message);
        for (int round = 0; round < 2; round++) {
            dbpool__mock_counters before, after;
            dbpool__mock_get_counters(&before);
            dbpool_conn *c = dbt_acquire(p);
            dbpool__mock_get_counters(&after);
            if (o.validation == DBPOOL_VALIDATE_ALWAYS && after.pings != before.pings + 1)
                fail_msg("%s: acquire %d made %ld pings, not 1", cases[i].what, round + 1,
                         after.pings - before.pings);
            assert_int_equal(dbpool_release(c), DBPOOL_OK);
            dbpool_stats s = dbt_stats(p);
            if (s.thread_cached != 0 || s.idle != 1)
                fail_msg("%s: after release %d: thread_cached %d, idle %d", cases[i].what, round + 1,
                         s.thread_cached, s.idle);
        }
        assert_true(dbt_invariant_holds(p));
        assert_int_equal(dbpool_close(p), 0);
    }
}

/* Many threads on few connections with every kind of return, while
 * another thread reads the stats and resizes: nothing lost, invariants
 * hold (a TSan build checks the races). */
#define STRESS_THREADS 8
#define STRESS_CYCLES 4000

typedef struct stress_arg {
    dbpool *p;
    int seed;
    atomic_long ok;
} stress_arg;

static void *stress(void *arg) {
    stress_arg *a = arg;
    unsigned r = (unsigned)a->seed;
    for (int i = 0; i < STRESS_CYCLES; i++) {
        r = r * 1103515245u + 12345u;
        dbpool_conn *c = NULL;
        int rc =
            (r >> 16) % 7 == 0 ? dbpool_try_acquire(a->p, &c, NULL) : dbpool_acquire(a->p, 2000, &c, NULL);
        if (rc != DBPOOL_OK)
            continue;
        atomic_fetch_add(&a->ok, 1);
        switch ((r >> 20) % 16) {
        case 0:
            dbpool_discard(c);
            break;
        case 1:
            dbpool_exec(c, "BEGIN", NULL, 0, NULL, NULL);
            dbpool_release(c);
            break;
        default:
            dbpool_release(c);
        }
    }
    return NULL;
}

static void test_stress(void **state) {
    (void)state;
    dbpool *p = open_pool(1, 3, true, 5);
    stress_arg a[STRESS_THREADS];
    pthread_t t[STRESS_THREADS];
    for (int i = 0; i < STRESS_THREADS; i++) {
        a[i].p = p;
        a[i].seed = i + 1;
        atomic_init(&a[i].ok, 0);
        pthread_create(&t[i], NULL, stress, &a[i]);
    }
    for (int k = 0; k < 50; k++) {
        dbpool_stats s = dbt_stats(p);
        /* Not in_use <= cap: right after a shrink from 4 to 2, up to 4
         * leases are still out until their holders release them. */
        assert_true(s.in_use <= 4 && s.in_use <= s.total && s.idle >= 0);
        dbpool_resize(p, 1, k % 2 ? 2 : 4, NULL);
        dbt_sleep_ms(2);
    }
    long ok = 0;
    for (int i = 0; i < STRESS_THREADS; i++) {
        pthread_join(t[i], NULL);
        ok += atomic_load(&a[i].ok);
    }
    dbpool_stats s = dbt_stats(p);
    assert_int_equal(s.in_use, 0);
    assert_int_equal((long)s.acquired, ok);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
    assert_int_equal(dbt_mock_live(), 0);
}

/* Zero-length leases from more threads than connections: the threads
 * that run overtake the sleeping ones (the thread cache, the short-lease
 * window), but only for a bounded time. With no maintenance thread to
 * recall the caches, a first waiter without a wake-up at its window's end
 * would wait until the run is over and on to its deadline; each one must
 * be served in a bounded time, far shorter. */
#define CONVOY_THREADS 6
#define CONVOY_RUN_MS 1500
#define CONVOY_ACQUIRE_MS 10000 /* a starved thread waits this long */
#define CONVOY_MAX_WAIT_MS 2500

typedef struct convoy_arg {
    dbpool *p;
    atomic_bool *stop;
    long leases;
    int64_t max_wait_ms;
    int errors;
} convoy_arg;

static void *convoy(void *arg) {
    convoy_arg *a = arg;
    while (!atomic_load(a->stop)) {
        int64_t t0 = dbt_now_ms();
        dbpool_conn *c = NULL;
        if (dbpool_acquire(a->p, CONVOY_ACQUIRE_MS, &c, NULL) != DBPOOL_OK) {
            a->errors++;
            continue;
        }
        int64_t waited = dbt_now_ms() - t0;
        if (waited > a->max_wait_ms)
            a->max_wait_ms = waited;
        a->leases++;
        dbpool_release(c);
    }
    return NULL;
}

static void test_short_leases_overtake_for_a_bounded_time(void **state) {
    (void)state;
    dbpool *p = open_pool(1, 1, true, 0);
    atomic_bool stop;
    atomic_init(&stop, false);
    convoy_arg a[CONVOY_THREADS];
    pthread_t t[CONVOY_THREADS];
    for (int i = 0; i < CONVOY_THREADS; i++) {
        a[i] = (convoy_arg){.p = p, .stop = &stop};
        pthread_create(&t[i], NULL, convoy, &a[i]);
    }
    dbt_sleep_ms(CONVOY_RUN_MS);
    atomic_store(&stop, true);
    for (int i = 0; i < CONVOY_THREADS; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < CONVOY_THREADS; i++) {
        print_message("thread %d: %ld leases, longest wait %lld ms\n", i, a[i].leases,
                      (long long)a[i].max_wait_ms);
        assert_int_equal(a[i].errors, 0);
        assert_true(a[i].leases > 0);
        /* The window is at most 10 ms; a loaded machine delays timers
         * and wake-ups: longest waits of 25-60 ms at load 11 (TSan), and
         * once 538 ms at load 12-16, over the 500 ms this bound was.
         * Starved (no wake-up at the window's end), a thread waits past
         * the run's end, until its acquire's deadline: 1 lease and a
         * 5000 ms wait with the 5 s it had, now 10 s, 4 times the bound. */
        assert_true(a[i].max_wait_ms < CONVOY_MAX_WAIT_MS);
    }
    assert_int_equal(dbt_stats(p).in_use, 0);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

/* One waiter is served and then cycles zero-length leases through its
 * cache until the next waiter, who went to sleep while the pool was
 * starving, is served (at most 2 s). */
typedef struct cycler_arg {
    dbpool *p;
    atomic_bool served;
    long leases;
    atomic_int *next_served; /* the next waiter's got_id: nonzero once it is through */
} cycler_arg;

static void *wait_then_cycle(void *arg) {
    cycler_arg *a = arg;
    dbpool_conn *c = NULL;
    if (dbpool_acquire(a->p, 5000, &c, NULL) != DBPOOL_OK)
        return NULL;
    atomic_store(&a->served, true);
    dbpool_release(c);
    int64_t end = dbt_now_ms() + 2000;
    while (dbt_now_ms() < end && atomic_load(a->next_served) == 0) {
        if (dbpool_acquire(a->p, 5000, &c, NULL) != DBPOOL_OK)
            break;
        a->leases++;
        dbpool_release(c);
    }
    return NULL;
}

/* The pool stops starving when the first in line is a recent arrival; that
 * one went to sleep while it starved, with no wake-up at its window's end
 * (starving needs none). It must get one: else the thread that cycles
 * through its cache, never taking the lock, keeps the connection for as
 * long as it likes. */
static void test_waiter_from_starving_mode_gets_its_turn(void **state) {
    (void)state;
    dbpool_options o;
    dbt_mock_options(&o, 1, 1, true); /* no maintenance: nothing else recalls the cache */
    o.barging_window_us = 100000;     /* 100 ms: wide enough to order the steps below */
    dbpool *p = dbt_open_mock(&o);
    dbpool_conn *held = dbt_acquire(p);

    waiter_arg c = {.p = p};
    cycler_arg b = {.p = p, .next_served = &c.got_id};
    pthread_t tb;
    pthread_create(&tb, NULL, wait_then_cycle, &b);
    dbt_wait_for_waiters(p, 1, 5000);
    dbt_sleep_ms(250); /* past B's window: it wakes up and the pool starves */

    pthread_t tc;
    pthread_create(&tc, NULL, wait_for_one, &c); /* C sleeps while the pool starves */
    dbt_wait_for_waiters(p, 2, 5000);
    dbt_sleep_ms(5);
    /* Handed to B; C, now first, has waited less than its window: the pool
     * stops starving, and B cycles through its cache. */
    dbpool_release(held);
    pthread_join(tc, NULL);
    pthread_join(tb, NULL);
    print_message("B: %ld fast leases; C waited %lld ms\n", b.leases, (long long)c.waited_ms);
    assert_true(atomic_load(&b.served));
    assert_true(atomic_load(&c.got_id) > 0);
    /* About its 100 ms window; never the whole of B's 2000 ms run. The
     * bound leaves room for a descheduled thread (TSan, a loaded machine);
     * B stops once C is through, so the long run costs nothing then. */
    assert_true(c.waited_ms < 1000);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

/* A thread that leases on cue, so that its connection ends up in its
 * cache and is then held through it. */
typedef struct cued {
    dbpool *p;
    atomic_int step; /* main: 1 lease once, 3 lease and hold, 5 release; the thread answers 2, 4, 6 */
    dbpool_conn *c;
} cued;

/* Poll (no sleep stands in for a signal) until *v == want; false after 10 s. */
static bool await_step(atomic_int *v, int want) {
    int64_t end = dbt_now_ms() + 10000;
    while (atomic_load(v) != want) {
        if (dbt_now_ms() > end)
            return false;
        dbt_sleep_ms(1);
    }
    return true;
}

static void *lease_on_cue(void *arg) {
    cued *a = arg;
    if (!await_step(&a->step, 1))
        return NULL;
    dbpool_release(dbt_acquire(a->p)); /* parked for this thread */
    atomic_store(&a->step, 2);
    if (!await_step(&a->step, 3))
        return NULL;
    a->c = dbt_acquire(a->p); /* its parked one, through the cache */
    atomic_store(&a->step, 4);
    if (!await_step(&a->step, 5))
        return NULL;
    dbpool_release(a->c);
    atomic_store(&a->step, 6);
    return NULL;
}

/* Start n cued threads, have each park a connection in turn (one lease at
 * a time), then all lease through their caches at once and hold. */
static void cued_hold(dbpool *p, cued *a, pthread_t *t, int n) {
    for (int i = 0; i < n; i++) {
        a[i] = (cued){.p = p};
        atomic_init(&a[i].step, 0);
        assert_int_equal(pthread_create(&t[i], NULL, lease_on_cue, &a[i]), 0);
    }
    for (int i = 0; i < n; i++) {
        atomic_store(&a[i].step, 1);
        if (!await_step(&a[i].step, 2))
            fail_msg("thread %d did not lease within 10 s", i);
    }
    for (int i = 0; i < n; i++)
        atomic_store(&a[i].step, 3);
    for (int i = 0; i < n; i++)
        if (!await_step(&a[i].step, 4))
            fail_msg("thread %d did not lease again within 10 s", i);
}

static void cued_release(cued *a, pthread_t *t, int n) {
    for (int i = 0; i < n; i++) {
        atomic_store(&a[i].step, 5);
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(atomic_load(&a[i].step), 6);
    }
}

/* Leases through the thread caches count in peak_in_use: four threads
 * that each used one connection at a time, then all four at once. */
static void test_peak_counts_cached_leases(void **state) {
    (void)state;
    dbpool *p = open_pool(4, 4, true, 0);
    static cued a[4]; /* static: a failed check must not leave the threads a dead stack frame */
    static pthread_t t[4];
    cued_hold(p, a, t, 4);
    dbpool_stats held = dbt_stats(p);
    cued_release(a, t, 4);
    assert_int_equal(held.in_use, 4);
    assert_int_equal(held.thread_cached, 4); /* all four through the caches */
    if (held.peak_in_use != 4)
        fail_msg("4 leases out at once through the thread caches, peak_in_use says %d", held.peak_in_use);
    dbpool_stats s = dbt_stats(p);
    assert_int_equal(s.in_use, 0);
    assert_int_equal(s.peak_in_use, 4);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

/* The peak is also noted where the cache's bookkeeping takes the lock
 * anyway, without a snapshot at that moment: an ordinary lease released
 * while three others are out through the caches makes four. */
static void test_peak_seen_by_release_beside_cached_leases(void **state) {
    (void)state;
    dbpool *p = open_pool(4, 4, true, 0);
    static cued a[3];
    static pthread_t t[3];
    cued_hold(p, a, t, 3);
    dbpool_conn *c = dbt_acquire(p); /* the idle one, the ordinary way */
    dbpool_release(c);
    cued_release(a, t, 3);
    dbpool_stats s = dbt_stats(p);
    assert_int_equal(s.in_use, 0);
    if (s.peak_in_use != 4)
        fail_msg("one ordinary lease beside 3 through the thread caches, peak_in_use says %d", s.peak_in_use);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

typedef struct timed_out {
    dbpool *p;
    int rc;
    dbpool_error e;
} timed_out;

static void *acquire_200ms(void *arg) {
    timed_out *a = arg;
    dbpool_conn *c = NULL;
    a->rc = dbpool_acquire(a->p, 200, &c, &a->e);
    if (a->rc == DBPOOL_OK)
        dbpool_release(c);
    return NULL;
}

/* An acquire timeout counts a lease taken through the thread cache as in
 * use, with its holder (stats.in_use says 1: so must the message). */
static void test_timeout_counts_cached_lease(void **state) {
    (void)state;
    dbpool *p = open_pool(1, 1, true, 0);
    dbpool_conn *c = dbt_acquire(p);
    dbpool_release(c);
    c = dbt_acquire(p); /* through the cache */
    assert_int_equal(dbt_stats(p).in_use, 1);
    timed_out a = {.p = p, .rc = -100};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, acquire_200ms, &a), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    print_message("timeout error: %s\n", a.e.message);
    assert_int_equal(a.rc, DBPOOL_ETIMEDOUT);
    if (!strstr(a.e.message, "(1 in use, 0 idle") ||
        !strstr(a.e.message, "; 1 holder (1 through a thread cache"))
        fail_msg("the timeout error should count the lease held through the thread cache: %s", a.e.message);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

/* A pool with a barging window longer than the waits below: a waiter is
 * inside its window for the whole of its wait. */
static dbpool *open_wide_window_pool_maintained(int64_t maint_ms) {
    dbpool_options o;
    dbt_mock_options(&o, 1, 1, true);
    o.maintenance_interval_ms = maint_ms;
    o.barging_window_us = 10000000; /* 10 s */
    return dbt_open_mock(&o);
}

static dbpool *open_wide_window_pool(void) { return open_wide_window_pool_maintained(0); }

typedef struct long_waiter {
    dbpool *p;
    int64_t timeout_ms;
    int rc;
    int64_t waited_ms;
    dbpool_error e;
} long_waiter;

static void *acquire_with_timeout(void *arg) {
    long_waiter *a = arg;
    dbpool_conn *c = NULL;
    int64_t t0 = dbt_now_ms();
    a->rc = dbpool_acquire(a->p, a->timeout_ms, &c, &a->e);
    a->waited_ms = dbt_now_ms() - t0;
    if (a->rc == DBPOOL_OK)
        dbpool_release(c);
    return NULL;
}

/* A release that parks the connection while someone waits (inside the
 * window) tells the first waiter, as a release to the idle list does: the
 * owner may take it back first, but nobody using it, the waiter gets it
 * now, not at its window's end or its deadline. */
static void test_waiter_is_told_of_a_parked_connection(void **state) {
    (void)state;
    dbpool *p = open_wide_window_pool();
    dbpool_conn *c = dbt_acquire(p); /* an ordinary lease: its release takes the lock and parks */
    long_waiter w = {.p = p, .timeout_ms = 3000, .rc = -100};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, acquire_with_timeout, &w), 0);
    dbt_wait_for_waiters(p, 1, 5000);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(pthread_join(t, NULL), 0);
    if (w.rc != DBPOOL_OK || w.waited_ms >= 1500)
        fail_msg("a waiter missed the connection parked beside it: %s after %lld ms (%s)",
                 dbpool_errname(w.rc), (long long)w.waited_ms, w.rc == DBPOOL_OK ? "" : w.e.message);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

/* A release through the thread cache (no lock) wakes nobody. A waiter
 * whose deadline comes before its window's end takes the connection at
 * its deadline instead of timing out beside it. */
static void test_waiter_takes_cached_connection_at_its_deadline(void **state) {
    (void)state;
    dbpool *p = open_wide_window_pool();
    dbpool_conn *c = dbt_acquire(p);
    dbpool_release(c);
    c = dbt_acquire(p); /* through the cache: its release is lock-free */
    /* The release must come before the deadline, even from a thread
     * stalled for a few hundred ms. */
    long_waiter w = {.p = p, .timeout_ms = 1500, .rc = -100};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, acquire_with_timeout, &w), 0);
    dbt_wait_for_waiters(p, 1, 5000);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(pthread_join(t, NULL), 0);
    if (w.rc != DBPOOL_OK)
        fail_msg("the waiter timed out beside a free connection: %s", w.e.message);
    dbpool_stats s = dbt_stats(p);
    assert_int_equal(s.timeouts, 0);
    assert_int_equal(s.in_use, 0);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

/* With a maintenance thread, a connection released through the cache
 * (which wakes nobody) reaches a waiter inside its window at the next
 * maintenance pass, not at the window's end or the waiter's deadline. */
static void test_maintenance_hands_cached_connection_to_waiter(void **state) {
    (void)state;
    dbpool *p = open_wide_window_pool_maintained(50);
    dbpool_conn *c = dbt_acquire(p);
    dbpool_release(c);
    c = dbt_acquire(p); /* through the cache: its release is lock-free */
    long_waiter w = {.p = p, .timeout_ms = 5000, .rc = -100};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, acquire_with_timeout, &w), 0);
    dbt_wait_for_waiters(p, 1, 5000);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(w.rc, DBPOOL_OK);
    if (w.waited_ms >= 2000)
        fail_msg("maintenance every 50 ms, yet the waiter got the free connection only after %lld ms",
                 (long long)w.waited_ms);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

/* A connection taken back from the thread's cache that is due for
 * validation is checked once, and a caller who does not wait
 * (dbpool_try_acquire, dbpool_acquire with 0) checks at most one
 * connection with a round trip, this one included: when it fails, the
 * next idle connection is not validated in turn (each could cost a
 * validation_timeout_ms on a network gone silent), a new one is opened. */
static void test_cached_connection_validated_once(void **state) {
    (void)state;
    for (int failing = 0; failing < 2; failing++) {
        for (int try_only = 0; try_only < 2; try_only++) {
            dbpool__mock_reset();
            dbpool_options o;
            dbt_mock_options(&o, 0, 3, true);
            o.validation = DBPOOL_VALIDATE_IF_IDLE;
            o.validation_window_ms = 20;
            dbpool *p = dbt_open_mock(&o);
            dbpool_conn *a = dbt_acquire(p), *b = dbt_acquire(p);
            int a_id = dbt_conn_id(a);
            dbpool_release(b); /* parked, then moved to the idle list by a's release */
            dbpool_release(a); /* parked for this thread */
            assert_int_equal(dbt_stats(p).thread_cached, 1);
            /* Both idle past the validation window. */
            dbt_sleep_ms(60);
            if (failing)
                dbpool__mock_fail_ping(1, -1);
            dbpool__mock_counters before, after;
            dbpool__mock_get_counters(&before);
            dbpool_conn *c = NULL;
            dbpool_error e;
            int rc = try_only ? dbpool_try_acquire(p, &c, &e) : dbpool_acquire(p, 0, &c, &e);
            dbpool__mock_get_counters(&after);
            if (rc != DBPOOL_OK)
                fail_msg("%s (pings failing: %d) returned %s: %s", try_only ? "try_acquire" : "acquire(0)",
                         failing, dbpool_errname(rc), e.message);
            if (after.pings - before.pings != 1)
                fail_msg("%s (pings failing: %d) made %ld validation round trips, want 1",
                         try_only ? "try_acquire" : "acquire(0)", failing, after.pings - before.pings);
            if (failing)
                assert_int_equal(after.connects - before.connects, 1); /* a new one, not b checked */
            else
                assert_int_equal(dbt_conn_id(c), a_id);
            dbpool_release(c);
            assert_true(dbt_invariant_holds(p));
            assert_int_equal(dbpool_close(p), 0);
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_same_thread_gets_its_connection_back, dbt_mock_setup),
        cmocka_unit_test_setup(test_expired_cached_lease_closed_on_release, dbt_mock_setup),
        cmocka_unit_test_setup(test_cached_leases_in_histogram, dbt_mock_setup),
        cmocka_unit_test_setup(test_most_recent_first, dbt_mock_setup),
        cmocka_unit_test_setup(test_double_release_and_stale_handle, dbt_mock_setup),
        cmocka_unit_test_setup(test_released_on_another_thread, dbt_mock_setup),
        cmocka_unit_test_setup(test_dirty_and_discarded_leave_the_cache, dbt_mock_setup),
        cmocka_unit_test_setup(test_waiter_is_served_before_the_owner, dbt_mock_setup),
        cmocka_unit_test_setup(test_free_parked_connection_serves_others, dbt_mock_setup),
        cmocka_unit_test_setup(test_exited_thread_leaves_nothing_behind, dbt_mock_setup),
        cmocka_unit_test_setup(test_maintenance_recalls_unused_parked, dbt_mock_setup),
        cmocka_unit_test_setup(test_close_while_parked_connection_in_use, dbt_mock_setup),
        cmocka_unit_test_setup(test_suspend_and_resize_recall, dbt_mock_setup),
        cmocka_unit_test_setup(test_cache_off, dbt_mock_setup),
        cmocka_unit_test_setup(test_stress, dbt_mock_setup),
        cmocka_unit_test_setup(test_short_leases_overtake_for_a_bounded_time, dbt_mock_setup),
        cmocka_unit_test_setup(test_waiter_from_starving_mode_gets_its_turn, dbt_mock_setup),
        cmocka_unit_test_setup(test_peak_counts_cached_leases, dbt_mock_setup),
        cmocka_unit_test_setup(test_peak_seen_by_release_beside_cached_leases, dbt_mock_setup),
        cmocka_unit_test_setup(test_timeout_counts_cached_lease, dbt_mock_setup),
        cmocka_unit_test_setup(test_waiter_is_told_of_a_parked_connection, dbt_mock_setup),
        cmocka_unit_test_setup(test_waiter_takes_cached_connection_at_its_deadline, dbt_mock_setup),
        cmocka_unit_test_setup(test_maintenance_hands_cached_connection_to_waiter, dbt_mock_setup),
        cmocka_unit_test_setup(test_cached_connection_validated_once, dbt_mock_setup),
        cmocka_unit_test_setup(test_cache_off_where_the_lock_is_needed, dbt_mock_setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
