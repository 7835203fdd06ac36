/*
 * test_fault_stress.c — the pool under sustained contention, on the mock
 * backend (no I/O, so the pool's own locking is what is exercised; the
 * suite runs it under TSan too):
 *  - 10,000 acquire/discard cycles on 4 threads: every discard closes its
 *    connection and the next acquire opens one; counters add up exactly;
 *  - 1,000 concurrent threads with small stacks (64 KiB) against a pool of
 *    10, each acquire / hold ~1 ms / release: every caller is served or
 *    times out cleanly (DBPOOL_ETIMEDOUT, never anything else), invariants
 *    hold while it runs and at the end, and nothing is left open.
 */
#include "driver_mock.h"
#include "testsupport.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#define CYCLE_THREADS 4
#define CYCLES 10000
#define MANY 1000
#define SMALL_STACK (64 * 1024)

static dbpool *open_mock(int min_size, int max_size, int64_t acquire_timeout_ms) {
    dbpool_options o;
    dbt_options(&o, min_size, max_size);
    o.acquire_timeout_ms = acquire_timeout_ms;
    o.maintenance_interval_ms = 10; /* maintenance runs alongside */
    return dbt_open_mock(&o);
}

typedef struct cycler {
    dbpool *p;
    int cycles;
    int ok, failed;
    int first_rc;
    char msg[512];
} cycler;

static void *cycler_main(void *arg) {
    cycler *c = arg;
    for (int i = 0; i < c->cycles; i++) {
        dbpool_conn *lease = NULL;
        dbpool_error e;
        memset(&e, 0, sizeof e);
        int rc = dbpool_acquire(c->p, 2000, &lease, &e);
        if (rc != DBPOOL_OK) {
            /* Stop at the first failure: the test stays bounded in time. */
            c->failed++;
            c->first_rc = rc;
            snprintf(c->msg, sizeof c->msg, "%s", e.message);
            break;
        }
        if (i % 3 == 0)
            (void)dbpool_exec(lease, "SELECT 1", NULL, 0, NULL, NULL);
        if (dbpool_discard(lease) != DBPOOL_OK)
            c->failed++;
        else
            c->ok++;
    }
    return NULL;
}

static void test_acquire_discard_cycles(void **state) {
    (void)state;
    dbpool *p = open_mock(0, 4, 5000);
    cycler cs[CYCLE_THREADS];
    pthread_t th[CYCLE_THREADS];
    int64_t t0 = dbt_now_ms();
    for (int i = 0; i < CYCLE_THREADS; i++) {
        cs[i] = (cycler){p, CYCLES / CYCLE_THREADS, 0, 0, 0, ""};
        assert_int_equal(pthread_create(&th[i], NULL, cycler_main, &cs[i]), 0);
    }
    int ok = 0;
    for (int i = 0; i < CYCLE_THREADS; i++) {
        pthread_join(th[i], NULL);
        ok += cs[i].ok;
    }
    int64_t took = dbt_now_ms() - t0;
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    for (int i = 0; i < CYCLE_THREADS; i++) {
        if (cs[i].failed) {
            dbpool_close(p); /* first, so that the next test starts clean */
            fail_msg("thread %d stopped after %d of %d cycles: %s: %s (at the end: in_use %d, idle %d, "
                     "connecting %d, waiting %d)",
                     i, cs[i].ok, cs[i].cycles, dbpool_errname(cs[i].first_rc), cs[i].msg, s.in_use, s.idle,
                     s.connecting, s.waiting);
        }
    }
    print_message("%d acquire/discard cycles on %d threads in %lld ms: created %llu, discarded %llu\n", ok,
                  CYCLE_THREADS, (long long)took, (unsigned long long)s.created,
                  (unsigned long long)s.destroyed_by[DBPOOL_CLOSE_DISCARDED]);
    assert_int_equal(ok, CYCLES);
    assert_int_equal((int)s.acquired, CYCLES);
    assert_int_equal((int)s.destroyed_by[DBPOOL_CLOSE_DISCARDED], CYCLES);
    /* Every discarded connection was opened by the pool; at most the one
     * warm-up connection and those now idle are extra. */
    assert_true(s.created == s.destroyed + (uint64_t)s.total);
    assert_int_equal(s.in_use, 0);
    assert_int_equal(s.waiting, 0);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
    dbpool__mock_counters mc;
    dbpool__mock_get_counters(&mc);
    assert_int_equal((int)mc.live, 0);
}

typedef struct many_ctx {
    dbpool *p;
    pthread_mutex_t gate_lock;
    pthread_cond_t gate;
    bool go;
    atomic_int served, timed_out, other;
    atomic_int other_rc;
} many_ctx;

static void *many_main(void *arg) {
    many_ctx *m = arg;
    pthread_mutex_lock(&m->gate_lock);
    while (!m->go)
        pthread_cond_wait(&m->gate, &m->gate_lock);
    pthread_mutex_unlock(&m->gate_lock);
    dbpool_conn *c = NULL;
    int rc = dbpool_acquire(m->p, -1, &c, NULL);
    if (rc == DBPOOL_OK) {
        dbt_sleep_ms(1);
        if (dbpool_release(c) == DBPOOL_OK)
            atomic_fetch_add(&m->served, 1);
        else
            atomic_fetch_add(&m->other, 1);
    } else if (rc == DBPOOL_ETIMEDOUT) {
        atomic_fetch_add(&m->timed_out, 1);
    } else {
        atomic_fetch_add(&m->other, 1);
        atomic_store(&m->other_rc, rc);
    }
    return NULL;
}

static void run_many(int64_t acquire_timeout_ms, bool expect_all_served) {
    dbpool *p = open_mock(2, 10, acquire_timeout_ms);
    many_ctx m;
    m.p = p;
    pthread_mutex_init(&m.gate_lock, NULL);
    pthread_cond_init(&m.gate, NULL);
    m.go = false;
    atomic_init(&m.served, 0);
    atomic_init(&m.timed_out, 0);
    atomic_init(&m.other, 0);
    atomic_init(&m.other_rc, 0);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    assert_int_equal(pthread_attr_setstacksize(&attr, SMALL_STACK), 0);
    static pthread_t th[MANY];
    int started = 0, create_rc = 0;
    for (; started < MANY; started++)
        if ((create_rc = pthread_create(&th[started], &attr, many_main, &m)) != 0)
            break;
    pthread_attr_destroy(&attr);
    /* Expecting timeouts: all ten connections stay out until a caller has
     * timed out, however slowly a loaded machine starts the threads. */
    dbpool_conn *held[10];
    int n_held = 0;
    if (!expect_all_served)
        for (; n_held < 10; n_held++)
            assert_int_equal(dbpool_acquire(p, 1000, &held[n_held], NULL), DBPOOL_OK);
    /* All at once. */
    int64_t t0 = dbt_now_ms();
    pthread_mutex_lock(&m.gate_lock);
    m.go = true;
    pthread_cond_broadcast(&m.gate);
    pthread_mutex_unlock(&m.gate_lock);
    bool invariant_ok = true;
    /* Sample the invariant while the threads run. */
    for (int i = 0; i < 50; i++) {
        invariant_ok &= dbt_invariant_holds(p);
        dbt_sleep_ms(2);
    }
    if (n_held) {
        dbpool_stats hs;
        int64_t end = dbt_now_ms() + 10000;
        do {
            dbt_sleep_ms(2);
            dbpool_get_stats(p, &hs);
        } while (hs.timeouts == 0 && dbt_now_ms() < end);
        for (int i = 0; i < n_held; i++)
            dbpool_release(held[i]);
    }
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    if (started < MANY)
        fail_msg("could only start %d of %d threads with %d KiB stacks (error %d)", started, MANY,
                 SMALL_STACK / 1024, create_rc);
    int64_t took = dbt_now_ms() - t0;
    pthread_cond_destroy(&m.gate);
    pthread_mutex_destroy(&m.gate_lock);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    int served = atomic_load(&m.served), timed_out = atomic_load(&m.timed_out), other = atomic_load(&m.other);
    print_message(
        "%d threads (stack %d KiB) on a pool of 10, acquire timeout %lld ms: served %d, timed out %d, "
        "other %d, in %lld ms; peak waiting %d, created %llu\n",
        MANY, SMALL_STACK / 1024, (long long)acquire_timeout_ms, served, timed_out, other, (long long)took,
        s.peak_waiting, (unsigned long long)s.created);
    if (other) {
        dbpool_close(p);
        fail_msg("%d callers failed with something other than a timeout (e.g. %s)", other,
                 dbpool_errname(atomic_load(&m.other_rc)));
    }
    assert_int_equal(served + timed_out, MANY);
    if (expect_all_served)
        assert_int_equal(served, MANY);
    else
        assert_true(timed_out > 0);
    assert_true(invariant_ok);
    assert_int_equal(s.in_use, 0);
    assert_int_equal(s.waiting, 0);
    assert_true(s.total <= 10 && s.peak_in_use <= 10);
    assert_int_equal((int)s.acquired, served + n_held);
    assert_int_equal((int)s.timeouts, timed_out);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
    dbpool__mock_counters mc;
    dbpool__mock_get_counters(&mc);
    assert_int_equal((int)mc.live, 0);
}

static void test_thousand_threads_all_served(void **state) {
    (void)state;
    run_many(20000, true);
}

static void test_thousand_threads_some_time_out(void **state) {
    (void)state;
    /* 1,000 holds of >= 1 ms on 10 connections need >= 100 ms: a 30 ms
     * timeout sends most callers away, each cleanly. */
    run_many(30, false);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_acquire_discard_cycles, dbt_mock_setup),
        cmocka_unit_test_setup(test_thousand_threads_all_served, dbt_mock_setup),
        cmocka_unit_test_setup(test_thousand_threads_some_time_out, dbt_mock_setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
