/* A connect job still queued when the pool stops wanting new sessions
 * must not be run when a connector picks it up:
 *
 * - after dbpool_close marked the pool closed: nobody can take what it
 *   would open (the waiters leave with DBPOOL_ECLOSED, the refill is
 *   over), so the connect only costs the database a session and the close
 *   up to connect_timeout_ms. A connector picked such a job up between the
 *   close's `closed` and its stopping of the connectors (while it joined
 *   the maintenance thread) and connected.
 * - after dbpool_suspend: "no new connection is opened" until
 *   dbpool_resume (a switchover), which asks again for the callers still
 *   in line. The connector connected during the suspension.
 *
 * The window is a connector's wake-up. This test widens it: the
 * executable is linked with -Wl,--wrap=pthread_cond_wait and
 * -Wl,--wrap=pthread_join. A connector woken while `hold_wakeups` is set
 * gives the pool's lock back and stays away (as if descheduled before it
 * could take the lock) until the test lets it go and waits until it is
 * back asleep, having run the job or not; for the close, the close's
 * first join does that (the maintenance thread's, after `closed` is set
 * and before the connectors are told to stop). */
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
int __real_pthread_join(pthread_t t, void **ret);

/* Set before the pool opens, so that the connector's first sleep counts.
 * Only connectors call pthread_cond_wait in this test (no keepalive
 * thread; a caller with a timeout waits with pthread_cond_timedwait). */
static atomic_bool watched;
static pthread_t main_thread;
static atomic_bool hold_wakeups;
static atomic_int held;             /* connectors kept away from the lock right now */
static atomic_int waiting;          /* connectors asleep in the wait for jobs */
static atomic_bool release_on_join; /* the close's first join lets the connector go */
static atomic_bool join_timed_out;

int __wrap_pthread_cond_wait(pthread_cond_t *c, pthread_mutex_t *m);
int __wrap_pthread_cond_wait(pthread_cond_t *c, pthread_mutex_t *m) {
    bool connector = atomic_load(&watched) && !pthread_equal(pthread_self(), main_thread);
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

/* Let the held connector go; false if it is not back asleep (it took the
 * job and connected, or dropped it) within 10 s. */
static bool let_connector_go(void) {
    atomic_store(&hold_wakeups, false);
    int64_t t0 = dbt_now_ms();
    while (atomic_load(&held) > 0 || atomic_load(&waiting) < 1) {
        if (dbt_now_ms() - t0 > 10000)
            return false;
        usleep(1000);
    }
    return true;
}

int __wrap_pthread_join(pthread_t t, void **ret);
int __wrap_pthread_join(pthread_t t, void **ret) {
    if (atomic_exchange(&release_on_join, false) && !let_connector_go())
        atomic_store(&join_timed_out, true);
    return __real_pthread_join(t, ret);
}

static long mock_connects(void) {
    dbpool__mock_counters m;
    dbpool__mock_get_counters(&m);
    return m.connects;
}

/* A lazy pool (max 1, one connector), its connector asleep. */
static dbpool *open_pool(bool fails_fast, int breaker_failures) {
    dbpool__mock_reset();
    atomic_store(&hold_wakeups, false);
    atomic_store(&join_timed_out, false);
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.lazy_connect = true;
    o.max_connecting = 1;
    o.max_retries = 0;
    o.maintenance_interval_ms = 3600 * 1000; /* a thread for the close to join, idle */
    o.suspend_fails_fast = fails_fast;
    o.breaker_failures = breaker_failures;
    o.breaker_cooldown_ms = 200;
    dbpool *p = NULL;
    dbpool_error e;
    main_thread = pthread_self();
    atomic_store(&watched, true);
    if (dbpool_open(&p, "mock:", &o, &e) != DBPOOL_OK)
        fail_msg("open: %s", e.message);
    int64_t t0 = dbt_now_ms();
    while (atomic_load(&waiting) < 1) {
        if (dbt_now_ms() - t0 > 10000)
            fail_msg("the connector did not go to sleep within 10 s");
        usleep(1000);
    }
    return p;
}

/* Put a caller in line whose job is queued while the connector woken for
 * it is held off the lock. */
static void hold_job(dbpool *p, dbt_timed_acquire *w, pthread_t *tw) {
    atomic_store(&hold_wakeups, true);
    *w = (dbt_timed_acquire){.p = p, .timeout_ms = 20000, .rc = -100};
    assert_int_equal(pthread_create(tw, NULL, dbt_timed_acquire_main, w), 0);
    int64_t t0 = dbt_now_ms();
    while (atomic_load(&held) < 1) {
        if (dbt_now_ms() - t0 > 10000)
            fail_msg("no connector woke for the caller's job within 10 s");
        usleep(1000);
    }
}

static void test_job_queued_at_close_is_not_run(void **state) {
    (void)state;
    dbt_timed_acquire w;
    pthread_t tw;
    dbpool *p = open_pool(true, 0);
    hold_job(p, &w, &tw);
    atomic_store(&release_on_join, true);
    assert_int_equal(dbpool_close(p), 0);
    atomic_store(&watched, false);
    assert_false(atomic_load(&join_timed_out));
    assert_int_equal(pthread_join(tw, NULL), 0);
    if (w.rc != DBPOOL_ECLOSED)
        fail_msg("the caller in line got %s (want DBPOOL_ECLOSED): %s", dbpool_errname(w.rc), w.message);
    if (mock_connects() != 0)
        fail_msg("%ld connect(s) during dbpool_close: a job queued before the close was run after it",
                 mock_connects());
    dbpool__mock_counters n;
    dbpool__mock_get_counters(&n);
    assert_int_equal(n.live, 0);
}

static void test_job_queued_at_suspend_waits_for_resume(void **state) {
    (void)state;
    dbt_timed_acquire w;
    pthread_t tw;
    dbpool *p = open_pool(false, 0); /* the caller waits through the suspension */
    hold_job(p, &w, &tw);
    assert_int_equal(dbpool_suspend(p), DBPOOL_OK);
    assert_true(let_connector_go());
    if (mock_connects() != 0)
        fail_msg("%ld connect(s) while the pool was suspended: a job queued before dbpool_suspend ran",
                 mock_connects());
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.connecting, 0);
    assert_int_equal(s.waiting, 1);
    /* The resume asks again for the caller still in line, who gets it. */
    assert_int_equal(dbpool_resume(p), DBPOOL_OK);
    assert_int_equal(pthread_join(tw, NULL), 0);
    if (w.rc != DBPOOL_OK)
        fail_msg("the caller in line got %s after the resume: %s", dbpool_errname(w.rc), w.message);
    assert_int_equal(mock_connects(), 1);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
    atomic_store(&watched, false);
    dbpool__mock_counters n;
    dbpool__mock_get_counters(&n);
    assert_int_equal(n.live, 0);
}

/* The job was the circuit breaker's half-open trial: not run, it must
 * not leave the breaker waiting for a trial that never comes (every
 * caller who needs a new connection would get DBPOOL_EUNAVAILABLE for
 * good). The resume's request is the trial. */
static void test_trial_queued_at_suspend_runs_after_resume(void **state) {
    (void)state;
    dbpool *p = open_pool(false, 1);
    dbpool__mock_fail_connect(1, 1, DBPOOL_ECONNECT);
    dbpool_conn *c = NULL;
    dbpool_error e;
    assert_int_equal(dbpool_acquire(p, 0, &c, &e), DBPOOL_ECONNECT); /* opens the breaker */
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.breaker, DBPOOL_BREAKER_OPEN);
    dbt_sleep_ms(300); /* past breaker_cooldown_ms: the next request is the trial */
    dbt_timed_acquire w;
    pthread_t tw;
    hold_job(p, &w, &tw);
    dbpool_get_stats(p, &s);
    assert_int_equal(s.breaker, DBPOOL_BREAKER_HALF_OPEN);
    assert_int_equal(dbpool_suspend(p), DBPOOL_OK);
    assert_true(let_connector_go());
    assert_int_equal(mock_connects(), 1); /* the failed one only */
    assert_int_equal(dbpool_resume(p), DBPOOL_OK);
    assert_int_equal(pthread_join(tw, NULL), 0);
    if (w.rc != DBPOOL_OK)
        fail_msg("the caller in line got %s after the resume: %s", dbpool_errname(w.rc), w.message);
    dbpool_get_stats(p, &s);
    assert_int_equal(s.breaker, DBPOOL_BREAKER_CLOSED);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
    atomic_store(&watched, false);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_job_queued_at_close_is_not_run),
        cmocka_unit_test(test_job_queued_at_suspend_waits_for_resume),
        cmocka_unit_test(test_trial_queued_at_suspend_runs_after_resume),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
