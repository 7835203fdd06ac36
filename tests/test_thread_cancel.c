/* Application threads cancelled (pthread_cancel, deferred: the default) or
 * ended with pthread_exit inside a dbpool call or holding a lease. A
 * cancelled caller waiting in dbpool_acquire leaves the line at once; the
 * pool lock is not left held, the counts stay right, and the pool goes on
 * working (docs/threading.md, "Cancellation"). Mock backend. */
#include "driver_mock.h"
#include "testsupport.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

/* One acquire on a thread of its own, and then the lease given back, or
 * kept by a thread that ends with pthread_exit(lease). */
typedef struct acquirer {
    dbpool *p;
    dbpool_manager *m; /* when set, through this manager's pool "cancelled" */
    int64_t timeout_ms;
    bool exit_holding; /* the lease never comes back */
    int rc;
    bool returned; /* not when the thread was cancelled in the call */
} acquirer;

static void *acquire_main(void *arg) {
    acquirer *a = arg;
    dbpool_conn *c = NULL;
    dbpool_error e;
    a->rc = a->m ? dbpool_manager_acquire(a->m, "cancelled", a->timeout_ms, &c, &e)
                 : dbpool_acquire(a->p, a->timeout_ms, &c, &e);
    a->returned = true;
    if (c && a->exit_holding)
        pthread_exit(c);
    if (c)
        dbpool_release(c); /* kept in this thread's cache where it has one */
    return NULL;
}

/* The checks after a cancel, on a thread of their own: a pool lock left held
 * would hang them, and the test must fail, not hang. */
typedef struct after_cancel {
    dbpool *p;
    dbpool_conn *held;
    dbpool_stats before_release;
    int acquire_rc;
    int close_rc;
} after_cancel;

static void *after_cancel_main(void *arg) {
    after_cancel *a = arg;
    dbpool_get_stats(a->p, &a->before_release);
    dbpool_release(a->held);
    dbpool_conn *c = NULL;
    dbpool_error e;
    a->acquire_rc = dbpool_acquire(a->p, 2000, &c, &e);
    if (c)
        dbpool_release(c);
    a->close_rc = dbpool_close(a->p);
    return NULL;
}

static void test_cancelled_waiter_leaves_the_line(void **state) {
    (void)state;
    dbpool__mock_reset();
    dbpool_options o;
    dbt_options(&o, 0, 1);
    dbpool *p = dbt_open_lazy_mock(&o);
    dbpool_conn *held = dbt_acquire(p);

    acquirer a = {.p = p, .timeout_ms = 60000};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, acquire_main, &a), 0);
    dbt_wait_for_waiters(p, 1, 5000);
    assert_int_equal(pthread_cancel(t), 0);
    void *ret = NULL;
    if (!dbt_join_within(t, 5000, &ret))
        fail_msg("a caller cancelled while waiting in dbpool_acquire did not end");
    assert_ptr_equal(ret, PTHREAD_CANCELED);
    assert_false(a.returned);

    after_cancel ac = {.p = p, .held = held, .acquire_rc = -999, .close_rc = -999};
    pthread_t checker;
    assert_int_equal(pthread_create(&checker, NULL, after_cancel_main, &ac), 0);
    if (!dbt_join_within(checker, 10000, NULL))
        fail_msg("the pool hangs after a waiter was cancelled (its lock left held?)");
    assert_int_equal(ac.before_release.waiting, 0);
    assert_int_equal(ac.before_release.in_use, 1);
    assert_int_equal(ac.acquire_rc, DBPOOL_OK);
    assert_int_equal(ac.close_rc, 0);
}

/* A cancel that races a hand-off: the connection released while the waiter
 * is being cancelled is either handed to it (and must come back to the pool
 * when the cancel ends it) or stays idle; in either case none is lost. */
static void test_connection_handed_to_a_cancelled_waiter_comes_back(void **state) {
    (void)state;
    dbpool__mock_reset();
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.thread_cache = false; /* the release hands off under the lock, not parks */
    dbpool *p = dbt_open_lazy_mock(&o);
    for (int round = 0; round < 40; round++) {
        dbpool_conn *held = dbt_acquire(p);
        acquirer a = {.p = p, .timeout_ms = 60000};
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, acquire_main, &a), 0);
        dbt_wait_for_waiters(p, 1, 5000);
        assert_int_equal(pthread_cancel(t), 0);
        assert_int_equal(dbpool_release(held), DBPOOL_OK);
        if (!dbt_join_within(t, 5000, NULL))
            fail_msg("round %d: a cancelled waiter did not end", round);
        dbpool_stats s;
        dbpool_get_stats(p, &s);
        if (s.in_use != 0 || s.waiting != 0 || s.idle != 1)
            fail_msg("round %d (the waiter %s): in use %d, waiting %d, idle %d; want 0, 0, 1", round,
                     a.returned ? "got it" : "was cancelled", s.in_use, s.waiting, s.idle);
    }
    dbpool_conn *c = dbt_acquire(p);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_close(p), 0);
}

/* dbpool_manager_acquire holds the pool while it waits: a cancel there must
 * let that hold go, or the pool is never freed (LeakSanitizer reports it). */
static void test_cancelled_manager_acquire_lets_the_pool_go(void **state) {
    (void)state;
    dbpool__mock_reset();
    dbpool_manager *m = NULL;
    assert_int_equal(dbpool_manager_new(&m), DBPOOL_OK);
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.lazy_connect = true;
    o.maintenance_interval_ms = 0;
    o.thread_cache = false; /* no thread-local reference keeps the pool reachable for LeakSanitizer */
    dbpool_error e;
    assert_int_equal(dbpool_manager_open(m, "cancelled", "mock:", &o, &e), DBPOOL_OK);
    dbpool *p = dbpool_manager_get(m, "cancelled");
    assert_non_null(p);
    dbpool_conn *held = dbt_acquire(p);
    acquirer a = {.m = m, .timeout_ms = 60000, .rc = -999};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, acquire_main, &a), 0);
    dbt_wait_for_waiters(p, 1, 5000);
    assert_int_equal(pthread_cancel(t), 0);
    if (!dbt_join_within(t, 5000, NULL))
        fail_msg("a caller cancelled in dbpool_manager_acquire did not end");
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.waiting, 0);
    assert_int_equal(dbpool_release(held), DBPOOL_OK);
    assert_int_equal(dbpool_manager_close_pool(m, "cancelled"), DBPOOL_OK);
    assert_int_equal(dbpool_manager_free(m), 0);
}

/* A cancelled thread's lease: it was handed out (the acquire ran whole) and
 * the thread's cleanup handler gives it back, as an application's does. */
static void release_on_cancel(void *arg) { dbpool_release(*(dbpool_conn **)arg); }

typedef struct validating {
    dbpool *p;
    bool cached;     /* lease and release once first, on this thread: its cache keeps the connection */
    volatile int go; /* the cached connection has idled past the window */
    int rc;
    bool returned;
} validating;

static void *validating_acquire_main(void *arg) {
    validating *a = arg;
    dbpool_conn *c = NULL;
    dbpool_error e;
    if (a->cached) {
        if (dbpool_acquire(a->p, 5000, &c, &e) != DBPOOL_OK)
            return NULL;
        dbpool_release(c);
        c = NULL;
    }
    while (!__atomic_load_n(&a->go, __ATOMIC_SEQ_CST))
        dbt_sleep_ms(1);
    pthread_cleanup_push(release_on_cancel, &c);
    a->rc = dbpool_acquire(a->p, 5000, &c, &e);
    a->returned = true;
    pthread_testcancel();
    pthread_cleanup_pop(1);
    return NULL;
}

/* A validation round trip before hand-out (a cancellation point in every
 * backend's ping: poll, or a sleep here) is not cut off by a cancel: cut
 * off, it left the connection counted as being checked and in use for
 * good, and dbpool_close reported a lease out that nobody held. Both for a
 * connection from the idle list and one from the thread's cache. */
static void cancel_during_validation(bool cached) {
    dbpool__mock_reset();
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.validation = DBPOOL_VALIDATE_IF_IDLE;
    o.validation_window_ms = 50;
    o.validation_timeout_ms = 5000;
    o.thread_cache = cached;
    dbpool *p = dbt_open_lazy_mock(&o);
    dbpool_conn *c = dbt_acquire(p); /* a new connection: not validated */
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    dbpool__mock_set_ping_delay_ms(400);

    validating a = {.p = p, .cached = cached, .rc = -999};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, validating_acquire_main, &a), 0);
    dbt_sleep_ms(150); /* the connection idles past validation_window_ms: a time, not an event */
    __atomic_store_n(&a.go, 1, __ATOMIC_SEQ_CST);
    dbpool__mock_counters n;
    int64_t give_up = dbt_now_ms() + 5000;
    do {
        dbpool__mock_get_counters(&n);
    } while (n.pings == 0 && dbt_now_ms() < give_up);
    assert_true(n.pings > 0);
    assert_int_equal(pthread_cancel(t), 0);
    if (!dbt_join_within(t, 5000, NULL))
        fail_msg("a thread cancelled during a validation did not end");
    assert_true(a.returned);
    assert_int_equal(a.rc, DBPOOL_OK);
    dbpool__mock_set_ping_delay_ms(0);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.in_use, 0);
    assert_int_equal(s.idle, 1);
    c = dbt_acquire(p);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_cancel_during_validation(void **state) {
    (void)state;
    cancel_during_validation(false);
}

static void test_cancel_during_validation_of_a_cached_connection(void **state) {
    (void)state;
    cancel_during_validation(true);
}

/* after_connect, run again after a reset that cleared the session, blocks
 * in a cancellation point (poll) while `armed`. */
static int g_pipe[2];
static volatile int g_armed, g_entered;

static int blocking_after_connect(void *native, void *user) {
    (void)native, (void)user;
    if (!__atomic_load_n(&g_armed, __ATOMIC_SEQ_CST))
        return 0;
    __atomic_store_n(&g_entered, 1, __ATOMIC_SEQ_CST);
    struct pollfd pfd = {.fd = g_pipe[0], .events = POLLIN};
    poll(&pfd, 1, 5000);
    return 0;
}

typedef struct releaser {
    dbpool_conn *c;
    int rc;
    bool returned;
} releaser;

static void *release_main(void *arg) {
    releaser *r = arg;
    r->rc = dbpool_release(r->c);
    r->returned = true;
    pthread_testcancel();
    return NULL;
}

/* A cancel during dbpool_release's reset (here in after_connect, which the
 * reset runs again) does not end the release half-way: cut off, it left
 * the connection "returning" for good, counted in use, and dbpool_close
 * reported a lease out. */
static void test_cancel_during_release_reset(void **state) {
    (void)state;
    dbpool__mock_reset();
    dbpool__mock_set_reset_clears_session(true);
    assert_int_equal(pipe(g_pipe), 0);
    g_armed = 0;
    g_entered = 0;
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.thread_cache = false;
    o.after_connect = blocking_after_connect;
    dbpool *p = dbt_open_lazy_mock(&o);
    dbpool_conn *c = dbt_acquire(p);
    dbt_exec_ok(c, "BEGIN", NULL, 0); /* the release must reset */
    __atomic_store_n(&g_armed, 1, __ATOMIC_SEQ_CST);
    releaser r = {.c = c, .rc = -999};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, release_main, &r), 0);
    int64_t give_up = dbt_now_ms() + 5000;
    while (!__atomic_load_n(&g_entered, __ATOMIC_SEQ_CST) && dbt_now_ms() < give_up)
        dbt_sleep_ms(2);
    assert_true(g_entered);
    assert_int_equal(pthread_cancel(t), 0);
    dbt_sleep_ms(100); /* a cancel acted on at once ends the thread meanwhile (nothing to wait for) */
    assert_int_equal(write(g_pipe[1], "x", 1), 1); /* lets the callback return */
    if (!dbt_join_within(t, 10000, NULL))
        fail_msg("a thread cancelled during a release's reset did not end");
    __atomic_store_n(&g_armed, 0, __ATOMIC_SEQ_CST);
    assert_true(r.returned);
    assert_int_equal(r.rc, DBPOOL_OK);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.in_use, 0);
    assert_int_equal(s.idle, 1);
    c = dbt_acquire(p);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_close(p), 0);
    close(g_pipe[0]);
    close(g_pipe[1]);
    dbpool__mock_set_reset_clears_session(false);
}

/* A thread that ends with pthread_exit while holding a lease: leak detection
 * reports it (it cannot know the thread is gone), and leak_reclaim_ms gives
 * its place back, so the pool does not stay one short. */
static void test_thread_exiting_with_a_lease_is_reported_as_a_leak(void **state) {
    (void)state;
    dbpool__mock_reset();
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.lazy_connect = true;
    o.maintenance_interval_ms = 20;
    o.leak_threshold_ms = 50;
    o.leak_reclaim_ms = 100;
    dbpool *p = NULL;
    dbpool_error e;
    assert_int_equal(dbpool_open(&p, "mock:", &o, &e), DBPOOL_OK);
    acquirer a = {.p = p, .timeout_ms = 5000, .exit_holding = true};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, acquire_main, &a), 0);
    void *lease = NULL;
    assert_true(dbt_join_within(t, 5000, &lease));
    assert_non_null(lease);
    /* The reclaim gives the place back: a new connection within the wait. */
    dbpool_conn *c = NULL;
    assert_int_equal(dbpool_acquire(p, 5000, &c, &e), DBPOOL_OK);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.leaks_detected, 1);
    assert_int_equal(s.leaks_reclaimed, 1);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_release(lease), DBPOOL_OK); /* late, but still valid */
    assert_int_equal(dbpool_close(p), 0);
}

/* A connection kept in the cache of a thread that has ended is not lost:
 * another thread gets it at once. */
static void test_connection_cached_by_an_ended_thread_is_not_lost(void **state) {
    (void)state;
    dbpool__mock_reset();
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.thread_cache = true;
    dbpool *p = dbt_open_lazy_mock(&o);
    acquirer a = {.p = p, .timeout_ms = 5000}; /* its release parks the connection in its cache */
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, acquire_main, &a), 0);
    assert_true(dbt_join_within(t, 5000, NULL));
    assert_int_equal(a.rc, DBPOOL_OK);
    dbpool_conn *c = NULL;
    dbpool_error e;
    int64_t t0 = dbt_now_ms();
    assert_int_equal(dbpool_acquire(p, 2000, &c, &e), DBPOOL_OK);
    assert_true(dbt_now_ms() - t0 < 1000);
    dbpool__mock_counters n;
    dbpool__mock_get_counters(&n);
    assert_int_equal(n.connects, 1);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_close(p), 0);
}

int main(int argc, char **argv) {
    if (argc > 1) /* one test by name (a cancel that wrecks the pool wrecks the tests after it) */
        cmocka_set_test_filter(argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cancelled_waiter_leaves_the_line),
        cmocka_unit_test(test_connection_handed_to_a_cancelled_waiter_comes_back),
        cmocka_unit_test(test_cancelled_manager_acquire_lets_the_pool_go),
        cmocka_unit_test(test_cancel_during_validation),
        cmocka_unit_test(test_cancel_during_validation_of_a_cached_connection),
        cmocka_unit_test(test_cancel_during_release_reset),
        cmocka_unit_test(test_thread_exiting_with_a_lease_is_reported_as_a_leak),
        cmocka_unit_test(test_connection_cached_by_an_ended_thread_is_not_lost),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
