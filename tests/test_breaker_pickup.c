/* A connect job queued for a connector while the circuit breaker was
 * closed, and picked up only after the breaker opened, must not reach the
 * database: while the breaker is open no connect starts, and while it is
 * half-open only the one trial does. The waiters that job was for get the
 * breaker's error, not a wait to their timeout.
 *
 * The window is a connector's wake-up: the job is queued and the connector
 * signalled, and before it runs, another connect's failure opens the
 * breaker. This test widens it: the executable is linked with
 * -Wl,--wrap=pthread_cond_wait, and a connector woken while `hold_wakeups`
 * is set gives the pool's lock back and stays away (as if descheduled
 * before it could take the lock) until the test lets it go. */
#include "driver_mock.h"
#include "pool_internal.h"
#include "testsupport.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

int __real_pthread_cond_wait(pthread_cond_t *c, pthread_mutex_t *m);

static dbpool *pool;
static _Atomic(dbpool *) watched; /* pool, for the connector threads */
static atomic_bool hold_wakeups;
static atomic_int held;    /* connectors kept away from the lock right now */
static atomic_int waiting; /* connectors asleep in the wait for jobs */

int __wrap_pthread_cond_wait(pthread_cond_t *c, pthread_mutex_t *m);
int __wrap_pthread_cond_wait(pthread_cond_t *c, pthread_mutex_t *m) {
    dbpool *p = atomic_load(&watched);
    bool connector = p && c == &p->connector_cond;
    /* Counted with the lock held, which the wait gives up only once
     * asleep: whoever sees the count under the lock sees it asleep. */
    if (connector)
        atomic_fetch_add(&waiting, 1);
    int rc = __real_pthread_cond_wait(c, m);
    if (connector)
        atomic_fetch_sub(&waiting, 1);
    if (connector && atomic_load(&hold_wakeups)) {
        atomic_fetch_add(&held, 1);
        pthread_mutex_unlock(m);
        /* At most 10 s: a test that hangs would say less than one that fails. */
        for (int i = 0; i < 10000 && atomic_load(&hold_wakeups); i++)
            usleep(1000);
        pthread_mutex_lock(m);
        atomic_fetch_sub(&held, 1);
    }
    return rc;
}

static long mock_connects(void) {
    dbpool__mock_counters m;
    dbpool__mock_get_counters(&m);
    return m.connects;
}

static bool wait_until(bool (*cond)(void), int64_t ms) {
    int64_t t0 = dbt_now_ms();
    while (!cond()) {
        if (dbt_now_ms() - t0 > ms)
            return false;
        usleep(1000);
    }
    return true;
}

static long connects_before;
static bool one_connect_started(void) { return mock_connects() > connects_before; }
static bool one_connector_held(void) { return atomic_load(&held) >= 1; }
static bool one_connector_asleep(void) { return atomic_load(&waiting) == 1; }
static bool breaker_opened(void) {
    dbpool_stats s;
    dbpool_get_stats(pool, &s);
    return s.breaker == DBPOOL_BREAKER_OPEN;
}
static bool nothing_connecting(void) {
    dbpool_stats s;
    dbpool_get_stats(pool, &s);
    return s.connecting == 0 && atomic_load(&held) == 0;
}

/* lease_out: a lease is held throughout, so a failed connect fails only
 * the first waiter (a release could serve the others): the second caller
 * then depends on its own job's fate. */
static void job_picked_up_after_opening(bool lease_out) {
    dbpool__mock_reset();
    /* After a failed test: its pool's threads are no longer watched. */
    atomic_store(&watched, NULL);
    atomic_store(&hold_wakeups, false);
    atomic_store(&waiting, 0);
    dbpool_options o;
    dbt_options(&o, 0, 4);
    o.lazy_connect = true;
    o.maintenance_interval_ms = 0;
    o.max_connecting = 2;
    o.max_retries = 0;
    o.breaker_failures = 1;
    o.breaker_cooldown_ms = 60000; /* open for the whole test */
    dbpool_error e;
    if (dbpool_open(&pool, "mock:", &o, &e) != DBPOOL_OK)
        fail_msg("open: %s", e.message);
    atomic_store(&watched, pool);
    dbpool_conn *held_lease = NULL;
    if (lease_out)
        assert_int_equal(dbpool_acquire(pool, 1000, &held_lease, &e), DBPOOL_OK);
    connects_before = mock_connects();
    /* Every connect fails, after 300 ms. */
    dbpool__mock_fail_connect(1, -1, DBPOOL_ECONNECT);
    dbpool__mock_set_connect_delay_ms(300);

    /* W1: its job is picked up at once; the connect runs 300 ms. */
    dbt_timed_acquire w1 = {.p = pool, .timeout_ms = 8000, .rc = -100}, w2 = w1;
    pthread_t t1, t2;
    assert_int_equal(pthread_create(&t1, NULL, dbt_timed_acquire_main, &w1), 0);
    if (!wait_until(one_connect_started, 10000))
        fail_msg("the first connect did not start within 10 s");
    /* The other connector is back asleep: W2's job is what wakes it. */
    if (!wait_until(one_connector_asleep, 10000))
        fail_msg("the idle connector did not go back to sleep within 10 s");
    /* W2: its job is queued while the breaker is closed; the idle
     * connector woken for it is held off the lock. */
    atomic_store(&hold_wakeups, true);
    assert_int_equal(pthread_create(&t2, NULL, dbt_timed_acquire_main, &w2), 0);
    if (!wait_until(one_connector_held, 10000))
        fail_msg("no connector woke for the second caller's job within 10 s");
    /* The first connect fails and opens the breaker (threshold 1). */
    if (!wait_until(breaker_opened, 10000))
        fail_msg("the breaker did not open within 10 s");
    assert_int_equal(pthread_join(t1, NULL), 0);
    assert_int_equal(pthread_join(t2, NULL), 0);
    atomic_store(&hold_wakeups, false);
    if (!wait_until(nothing_connecting, 10000))
        fail_msg("connects still under way after 10 s");

    /* Only the first connect reached the database. */
    if (mock_connects() - connects_before != 1)
        fail_msg("%ld connect attempts: a job queued before the breaker opened ran while it was open",
                 mock_connects() - connects_before);
    dbpool_stats s;
    dbpool_get_stats(pool, &s);
    assert_int_equal(s.breaker, DBPOOL_BREAKER_OPEN);
    assert_int_equal((int)s.breaker_opens, 1);
    /* Neither caller waited out its 8 s: both were told the breaker's
     * error (or the first, the connect error itself). */
    assert_int_not_equal(w1.rc, DBPOOL_OK);
    if (w2.rc != DBPOOL_EUNAVAILABLE || w2.took_ms > 4000)
        fail_msg("the second caller got %s after %lld ms (want EUNAVAILABLE at once): %s",
                 dbpool_errname(w2.rc), (long long)w2.took_ms, w2.message);
    assert_non_null(strstr(w2.message, "injected"));
    assert_true(dbt_invariant_holds(pool));
    if (held_lease)
        dbpool_release(held_lease);
    atomic_store(&watched, NULL);
    assert_int_equal(dbpool_close(pool), 0);
    pool = NULL;
}

static void test_job_picked_up_after_opening_is_dropped(void **state) {
    (void)state;
    job_picked_up_after_opening(false);
}

static void test_dropped_job_fails_its_waiter_with_a_lease_out(void **state) {
    (void)state;
    job_picked_up_after_opening(true);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_job_picked_up_after_opening_is_dropped),
        cmocka_unit_test(test_dropped_job_fails_its_waiter_with_a_lease_out),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
