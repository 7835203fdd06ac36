/* The hand-out path under concurrency (acquire.c, release.c, sticky.c,
 * pool.c): many threads, a small pool, every path at once (thread cache,
 * hand-off to waiters, leases released on another thread, try_acquire,
 * timeouts of 0, discards, dirty returns, resizes, stats read while the
 * pool works). No connection is ever held by two callers at once, none is
 * lost, and the counters add up during and after the run. Mock backend. */
#include "driver_mock.h"
#include "testsupport.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

/* Mock connection id -> holders now, at id % MAX_IDS. The ids grow with
 * the run: with 2-3 ms lifetimes and failing checks a run on a loaded
 * machine (load 10+, 50 s instead of 2 s) opened 6000 connections, and a
 * table indexed by the id alone counted each id past its end as a double
 * use. Two leases share a slot only if one is held while 65536 other
 * connections are opened (minutes of this test's churn, past its timeout). */
#define MAX_IDS 65536
static atomic_int held_by[MAX_IDS];
static atomic_int double_use;

static int setup(void **state) {
    (void)state;
    dbpool__mock_reset();
    for (int i = 0; i < MAX_IDS; i++)
        atomic_store(&held_by[i], 0);
    atomic_store(&double_use, 0);
    return 0;
}

static void take(dbpool_conn *c) {
    int id = dbt_conn_id(c);
    if (id <= 0 || atomic_fetch_add(&held_by[id % MAX_IDS], 1) != 0)
        atomic_fetch_add(&double_use, 1);
}
static void give(dbpool_conn *c) {
    int id = dbt_conn_id(c);
    if (id > 0)
        atomic_fetch_sub(&held_by[id % MAX_IDS], 1);
}

typedef struct hand {
    pthread_mutex_t m;
    pthread_cond_t cv;
    dbpool_conn *c;
    bool stop;
} hand;

typedef struct worker {
    dbpool *p;
    unsigned seed;
    int cycles;
    hand *h; /* leases passed to the releaser thread */
    long ok;
    long bad; /* errors other than timeouts and busy */
} worker;

static void *releaser(void *arg) {
    hand *h = arg;
    pthread_mutex_lock(&h->m);
    for (;;) {
        while (!h->c && !h->stop)
            pthread_cond_wait(&h->cv, &h->m);
        if (h->c) {
            dbpool_conn *c = h->c;
            h->c = NULL;
            pthread_cond_broadcast(&h->cv);
            pthread_mutex_unlock(&h->m);
            give(c);
            dbpool_release(c);
            pthread_mutex_lock(&h->m);
        } else if (h->stop) {
            break;
        }
    }
    pthread_mutex_unlock(&h->m);
    return NULL;
}

static void *work(void *arg) {
    worker *a = arg;
    unsigned r = a->seed;
    for (int i = 0; i < a->cycles; i++) {
        r = r * 1103515245u + 12345u;
        unsigned k = (r >> 16) % 20;
        dbpool_conn *c = NULL;
        dbpool_error e;
        int rc = k == 0   ? dbpool_try_acquire(a->p, &c, &e)
                 : k == 1 ? dbpool_acquire(a->p, 0, &c, &e)
                          : dbpool_acquire(a->p, 3000, &c, &e);
        if (rc != DBPOOL_OK) {
            if (rc != DBPOOL_EBUSY && !(rc == DBPOOL_ETIMEDOUT && k <= 1)) {
                fprintf(stderr, "acquire (%u): %s\n", k, e.message);
                a->bad++;
            }
            continue;
        }
        a->ok++;
        take(c);
        unsigned what = (r >> 24) % 16;
        if (what == 0) {
            give(c);
            dbpool_discard(c);
        } else if (what == 1) {
            dbpool_exec(c, "BEGIN", NULL, 0, NULL, NULL);
            give(c);
            dbpool_release(c);
        } else if (what == 2 && a->h) {
            pthread_mutex_lock(&a->h->m);
            while (a->h->c)
                pthread_cond_wait(&a->h->cv, &a->h->m);
            a->h->c = c;
            pthread_cond_broadcast(&a->h->cv);
            pthread_mutex_unlock(&a->h->m);
        } else {
            if (what == 3)
                dbt_sleep_ms(1);
            else if (what < 8)
                sched_yield();
            give(c);
            dbpool_release(c);
        }
    }
    return NULL;
}

static void run(int threads, int min, int max, int64_t window_us, int64_t maint_ms, bool resize, int cycles,
                int64_t lifetime_ms, bool validate) {
    dbpool_options o;
    dbt_options(&o, min, max);
    o.thread_cache = true;
    o.maintenance_interval_ms = maint_ms;
    o.validation = validate ? DBPOOL_VALIDATE_IF_IDLE : DBPOOL_VALIDATE_NEVER;
    o.validation_window_ms = 0;
    o.max_lifetime_ms = lifetime_ms;
    o.barging_window_us = window_us;
    o.acquire_timeout_ms = 3000;
    dbpool *p = NULL;
    dbpool_error e;
    if (dbpool_open(&p, "mock:", &o, &e) != DBPOOL_OK)
        fail_msg("open: %s", e.message);
    hand h = {.c = NULL, .stop = false};
    pthread_mutex_init(&h.m, NULL);
    pthread_cond_init(&h.cv, NULL);
    pthread_t rt;
    pthread_create(&rt, NULL, releaser, &h);
    worker w[16];
    pthread_t t[16];
    for (int i = 0; i < threads; i++) {
        w[i] = (worker){.p = p, .seed = (unsigned)(i * 7919 + 1), .cycles = cycles, .h = &h};
        pthread_create(&t[i], NULL, work, &w[i]);
    }
    for (int k = 0; k < 40; k++) {
        dbpool_stats s;
        dbpool_get_stats(p, &s);
        assert_true(s.in_use >= 0 && s.idle >= 0 && s.in_use <= 2 * max);
        assert_int_equal(s.total, s.idle + s.in_use + s.connecting);
        if (resize)
            dbpool_resize(p, min, k % 2 ? max : max + 1, NULL);
        dbt_sleep_ms(2);
    }
    long ok = 0, bad = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        ok += w[i].ok;
        bad += w[i].bad;
    }
    pthread_mutex_lock(&h.m);
    h.stop = true;
    pthread_cond_broadcast(&h.cv);
    pthread_mutex_unlock(&h.m);
    pthread_join(rt, NULL);
    assert_int_equal(atomic_load(&double_use), 0);
    assert_int_equal(bad, 0);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.in_use, 0);
    assert_int_equal(s.waiting, 0);
    assert_int_equal((long)s.acquired, ok);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
    dbpool__mock_counters mc;
    dbpool__mock_get_counters(&mc);
    print_message("%ld leases, %ld connections opened\n", ok, mc.connects);
    assert_int_equal(mc.live, 0);
    pthread_cond_destroy(&h.cv);
    pthread_mutex_destroy(&h.m);
}

static void test_default_window(void **state) {
    (void)state;
    run(8, 1, 3, 50, 5, false, 3000, 0, false);
}
static void test_strict_handoff(void **state) {
    (void)state;
    run(8, 0, 2, 0, 0, false, 2000, 0, false);
}
static void test_wide_window_resize(void **state) {
    (void)state;
    run(8, 1, 3, 5000, 3, true, 2000, 0, false);
}

static void test_checks_fail(void **state) {
    (void)state;
    dbpool__mock_fail_ping(50, 400);
    run(8, 1, 3, 0, 2, false, 2000, 3, true);
}
static void test_checks_fail_window(void **state) {
    (void)state;
    dbpool__mock_fail_ping(20, 300);
    run(8, 1, 3, 50, 0, true, 2000, 2, true);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_default_window, setup),
        cmocka_unit_test_setup(test_strict_handoff, setup),
        cmocka_unit_test_setup(test_wide_window_resize, setup),
        cmocka_unit_test_setup(test_checks_fail, setup),
        cmocka_unit_test_setup(test_checks_fail_window, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
