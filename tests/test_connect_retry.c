/* New connections: retry with exponential backoff and jitter, never past
 * the caller's deadline; non-retriable causes reported at once; a timeout
 * carries the last connect error. Uses the mock backend. */
#include "driver_mock.h"
#include "testsupport.h"

#include <pthread.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

static void test_retried_then_reported(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.max_retries = 3;
    o.backoff_base_ms = 1;
    dbpool *p = dbt_open_lazy_mock(&o);
    dbpool__mock_fail_connect(1, -1, DBPOOL_ECONNECT);
    dbpool_conn *c = NULL;
    dbpool_error e;
    assert_int_equal(dbpool_acquire(p, 2000, &c, &e), DBPOOL_ECONNECT);
    assert_null(c);
    assert_non_null(strstr(e.message, "injected"));
    dbpool__mock_counters n;
    dbpool__mock_get_counters(&n);
    assert_int_equal(n.connects, 4); /* first try + 3 retries */
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.connect_errors, 4);
    assert_int_equal(s.total, 0);
    assert_true(dbt_invariant_holds(p));
    dbpool_close(p);
}

static void test_auth_error_not_retried(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.max_retries = 5;
    /* A retry would first sleep 2000..4000 ms (equal jitter): far above
     * the bound below, which leaves room for a descheduled thread. */
    o.backoff_base_ms = 4000;
    o.backoff_max_ms = 4000;
    dbpool *p = dbt_open_lazy_mock(&o);
    dbpool__mock_fail_connect(1, -1, DBPOOL_EAUTH);
    dbpool_conn *c = NULL;
    dbpool_error e;
    int64_t t0 = dbt_now_ms();
    assert_int_equal(dbpool_acquire(p, 5000, &c, &e), DBPOOL_EAUTH);
    assert_true(dbt_now_ms() - t0 < 1000);
    dbpool__mock_counters n;
    dbpool__mock_get_counters(&n);
    assert_int_equal(n.connects, 1);
    dbpool_close(p);
}

static void test_backoff_grows_with_jitter(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.max_retries = 3;
    o.backoff_base_ms = 40;
    o.backoff_max_ms = 1000;
    dbpool *p = dbt_open_lazy_mock(&o);
    dbpool__mock_fail_connect(1, 3, DBPOOL_ECONNECT); /* the 4th attempt works */
    dbpool_conn *c = NULL;
    dbpool_error e;
    int64_t t0 = dbt_now_ms();
    assert_int_equal(dbpool_acquire(p, 5000, &c, &e), DBPOOL_OK);
    int64_t took = dbt_now_ms() - t0;
    /* Delays 40, 80, 160 with "equal jitter": each at least half. */
    if (took < 140 || took > 1000)
        fail_msg("three backoffs took %lld ms, expected 140..1000", (long long)took);
    dbpool_release(c);
    dbpool_close(p);
}

static void test_backoff_capped(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.max_retries = 7;
    o.backoff_base_ms = 20;
    o.backoff_max_ms = 20;
    o.breaker_failures = 0; /* seven failures in a row */
    dbpool *p = dbt_open_lazy_mock(&o);
    dbpool__mock_fail_connect(1, 7, DBPOOL_ECONNECT);
    dbpool_conn *c = NULL;
    int64_t t0 = dbt_now_ms();
    assert_int_equal(dbpool_acquire(p, 5000, &c, NULL), DBPOOL_OK);
    int64_t took = dbt_now_ms() - t0;
    /* Capped: seven delays of 10..20 ms, 70..140. Uncapped they would be
     * 20, 40, ... 1280 ms, at least 1270 in all: the upper bound lies
     * between, with room for a descheduled thread. */
    if (took < 70 || took > 700)
        fail_msg("seven capped backoffs took %lld ms, expected 70..700", (long long)took);
    dbpool_release(c);
    dbpool_close(p);
}

/* A mock pool whose connects all fail, the first backoff 2000..4000 ms;
 * connect_timeout_ms 0: the default. */
static dbpool *open_failing_with_long_backoff(int64_t connect_timeout_ms) {
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.max_retries = 10;
    if (connect_timeout_ms > 0)
        o.connect_timeout_ms = connect_timeout_ms;
    o.backoff_base_ms = 4000;
    o.backoff_max_ms = 5000;
    dbpool *p = dbt_open_lazy_mock(&o);
    dbpool__mock_fail_connect(1, -1, DBPOOL_ECONNECT);
    return p;
}

/* dbpool_acquire with this timeout, which must fail; *took_ms: how long. */
static int acquire_fails(dbpool *p, int64_t timeout_ms, dbpool_error *e, int64_t *took_ms) {
    dbpool_conn *c = NULL;
    int64_t t0 = dbt_now_ms();
    int rc = dbpool_acquire(p, timeout_ms, &c, e);
    *took_ms = dbt_now_ms() - t0;
    assert_null(c);
    return rc;
}

/* A waiter leaves at its timeout, not after the backoff (an acquire that
 * waited for it would end far past its 300 ms, and past the bound below). */
static void test_never_past_deadline(void **state) {
    (void)state;
    dbpool *p = open_failing_with_long_backoff(0);
    dbpool_error e;
    int64_t took;
    int rc = acquire_fails(p, 300, &e, &took);
    assert_true(rc == DBPOOL_ECONNECT || rc == DBPOOL_ETIMEDOUT);
    assert_true(took < 1000);
    /* The cause, not a bare timeout. */
    assert_non_null(strstr(e.message, "injected"));
    dbpool_close(p);
}

/* The same for a caller who will not wait (timeout 0), whose connect runs
 * on its own thread within connect_timeout_ms, its retries included: a
 * backoff that would end past that deadline is not slept. */
static void test_own_connect_no_backoff_past_deadline(void **state) {
    (void)state;
    dbpool *p = open_failing_with_long_backoff(300);
    dbpool_error e;
    int64_t took;
    int rc = acquire_fails(p, 0, &e, &took);
    if (rc != DBPOOL_ECONNECT || took > 1500)
        fail_msg("acquire(timeout 0): %s after %lld ms (want ECONNECT within connect_timeout_ms 300): %s",
                 dbpool_errname(rc), (long long)took, e.message);
    assert_non_null(strstr(e.message, "injected"));
    dbpool__mock_counters n;
    dbpool__mock_get_counters(&n);
    assert_int_equal(n.connects, 1);
    dbpool_close(p);
}

static void test_slow_connect_bounded(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.max_retries = 0;
    o.connect_timeout_ms = 100;
    dbpool *p = dbt_open_lazy_mock(&o);
    dbpool__mock_set_connect_delay_ms(2000);
    dbpool_conn *c = NULL;
    dbpool_error e;
    int64_t t0 = dbt_now_ms();
    assert_int_equal(dbpool_acquire(p, 5000, &c, &e), DBPOOL_ETIMEDOUT);
    int64_t took = dbt_now_ms() - t0;
    /* Unbounded, the connect would take its 2000 ms. */
    if (took < 95 || took > 1000)
        fail_msg("connect_timeout 100 ms took %lld ms", (long long)took);
    dbpool_close(p);
}

static void test_timeout_carries_last_connect_error(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.max_retries = 0;
    o.breaker_failures = 0;
    dbpool *p = dbt_open_lazy_mock(&o);
    dbpool_conn *held = NULL;
    assert_int_equal(dbpool_acquire(p, 1000, &held, NULL), DBPOOL_OK);
    /* The database goes away: a caller gets the connect error itself... */
    dbpool__mock_fail_connect(2, -1, DBPOOL_ECONNECT);
    dbpool_conn *c = NULL;
    dbpool_error e;
    assert_int_equal(dbpool_acquire(p, 1000, &c, &e), DBPOOL_ECONNECT);
    /* ...and one whose wait ends before the next connect fails is told
     * what the pool looks like and why it could not grow. The connect
     * takes 600 ms: the 50 ms wait ends first even on a thread descheduled
     * for a few hundred ms (TSan, a loaded machine). */
    dbpool__mock_set_connect_delay_ms(600);
    assert_int_equal(dbpool_acquire(p, 50, &c, &e), DBPOOL_ETIMEDOUT);
    assert_non_null(strstr(e.message, "1 in use"));
    assert_non_null(strstr(e.message, "max 2"));
    assert_non_null(strstr(e.message, "last connect error"));
    assert_non_null(strstr(e.message, "injected"));
    assert_non_null(strstr(e.message, "1 holder"));
    dbpool_release(held);
    dbpool_close(p);
}

/* A permanent connect error fails every caller in line only when no lease
 * is out that could come back. A lease taken back through the thread cache
 * (this thread's parked connection, in use) is one: the caller waiting for
 * it is served when it comes back, not failed with the connect error. */
static void test_permanent_error_spares_waiter_of_cached_lease(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.max_retries = 0;
    o.breaker_failures = 0;
    dbpool *p = dbt_open_lazy_mock(&o);
    dbpool_conn *held = NULL;
    /* Released once, it is parked for this thread; acquired again, it is
     * in use through the thread cache. */
    assert_int_equal(dbpool_acquire(p, 1000, &held, NULL), DBPOOL_OK);
    dbpool_release(held);
    assert_int_equal(dbpool_acquire(p, 1000, &held, NULL), DBPOOL_OK);
    /* From now on connects fail for good, after 300 ms. */
    dbpool__mock_fail_connect(2, -1, DBPOOL_EAUTH);
    dbpool__mock_set_connect_delay_ms(300);
    /* W1's connect runs; W2 finds the pool full and waits for a release. */
    dbt_timed_acquire w1 = {.p = p, .timeout_ms = 5000, .rc = -100}, w2 = w1;
    pthread_t t1, t2;
    assert_int_equal(pthread_create(&t1, NULL, dbt_timed_acquire_main, &w1), 0);
    dbt_wait_for_waiters(p, 1, 10000);
    assert_int_equal(pthread_create(&t2, NULL, dbt_timed_acquire_main, &w2), 0);
    dbt_wait_for_waiters(p, 2, 10000);
    assert_int_equal(pthread_join(t1, NULL), 0);
    assert_int_equal(w1.rc, DBPOOL_EAUTH);
    /* W2 still waits for the lease, which now comes back to it. */
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    dbpool_release(held);
    assert_int_equal(pthread_join(t2, NULL), 0);
    if (w2.rc != DBPOOL_OK)
        fail_msg("the caller waiting for a lease held through the thread cache got %s after %lld ms (%d "
                 "waiting when the connect failed)",
                 dbpool_errname(w2.rc), (long long)w2.took_ms, s.waiting);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

static void test_open_fails_with_cause(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 2, 4);
    o.max_retries = 1;
    o.backoff_base_ms = 1;
    dbpool__mock_fail_connect(2, -1, DBPOOL_ECONNECT);
    dbpool *p = NULL;
    dbpool_error e;
    assert_int_equal(dbpool_open(&p, "mock:", &o, &e), DBPOOL_ECONNECT);
    assert_null(p);
    assert_non_null(strstr(e.message, "injected"));
    dbpool__mock_counters n;
    dbpool__mock_get_counters(&n);
    assert_int_equal(n.live, 0); /* the warm-up connection was closed */
}

static int reject_all(void *native, void *user) {
    (void)native;
    (*(int *)user)++;
    return 1;
}

static void test_after_connect_and_init_sql(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.max_retries = 0;
    int calls = 0;
    o.after_connect = reject_all;
    o.after_connect_user = &calls;
    dbpool *p = NULL;
    dbpool_error e;
    assert_int_equal(dbpool_open(&p, "mock:", &o, &e), DBPOOL_ECONNECT);
    assert_int_equal(calls, 1);
    assert_non_null(strstr(e.message, "after_connect"));
    o.after_connect = NULL;
    o.init_sql = "FAIL";
    assert_int_equal(dbpool_open(&p, "mock:", &o, &e), DBPOOL_EQUERY);
    assert_non_null(strstr(e.message, "init_sql"));
    dbpool__mock_counters n;
    dbpool__mock_get_counters(&n);
    assert_int_equal(n.live, 0);
}

/* init_sql is part of the connect attempt and ends with its deadline
 * (connect_timeout_ms): a server that does not answer it fails the attempt
 * with a message naming init_sql, not after the statement's 3 s. */
static void test_init_sql_bounded_by_connect_timeout(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 1, 1);
    o.max_retries = 0;
    o.connect_timeout_ms = 200;
    o.maintenance_interval_ms = 0;
    o.init_sql = "SLEEP 3000";
    dbpool *p = NULL;
    dbpool_error e;
    /* dbpool_open's warm-up connection. */
    int64_t t0 = dbt_now_ms();
    int rc = dbpool_open(&p, "mock:", &o, &e);
    int64_t took = dbt_now_ms() - t0;
    if (rc != DBPOOL_ETIMEDOUT || took > 1700)
        fail_msg("open: %s after %lld ms: %s", dbpool_errname(rc), (long long)took, e.message);
    assert_null(p);
    assert_non_null(strstr(e.message, "init_sql"));
    assert_non_null(strstr(e.message, "connect_timeout_ms"));
    /* A caller's acquire, the connect made by a connector thread. */
    o.min_size = 0;
    p = dbt_open_lazy_mock(&o);
    dbpool_conn *c = NULL;
    t0 = dbt_now_ms();
    rc = dbpool_acquire(p, 5000, &c, &e);
    took = dbt_now_ms() - t0;
    if (rc != DBPOOL_ETIMEDOUT || took > 1700)
        fail_msg("acquire: %s after %lld ms: %s", dbpool_errname(rc), (long long)took, e.message);
    assert_null(c);
    assert_non_null(strstr(e.message, "init_sql"));
    dbpool_close(p);
    dbpool__mock_counters n;
    dbpool__mock_get_counters(&n);
    assert_int_equal(n.live, 0); /* the timed-out connections were closed */
}

/* dbpool_close cuts short a retry backoff (here the maintenance thread's
 * refill, asleep for 5 s), and no attempt follows it. */
static void test_close_cuts_backoff_short(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 1, 2);
    o.maintenance_interval_ms = 50;
    o.connect_timeout_ms = 60000;
    o.backoff_base_ms = 5000;
    o.backoff_max_ms = 5000;
    o.max_retries = 3;
    o.breaker_failures = 0;
    dbpool *p = NULL;
    dbpool_error e;
    if (dbpool_open(&p, "mock:", &o, &e) != DBPOOL_OK)
        fail_msg("open: %s", e.message);
    dbpool_conn *c = dbt_acquire(p);
    dbpool__mock_fail_connect(1, -1, DBPOOL_ECONNECT);
    dbpool_discard(c); /* below min_size: the next pass refills, and fails */
    dbpool__mock_counters n;
    int64_t until = dbt_now_ms() + 5000;
    do {
        dbt_sleep_ms(5);
        dbpool__mock_get_counters(&n);
    } while (n.connects < 2 && dbt_now_ms() < until);
    assert_int_equal(n.connects, 2); /* the first, and the refill's failed one: now in its backoff */
    dbt_sleep_ms(50);
    int64_t t0 = dbt_now_ms();
    assert_int_equal(dbpool_close(p), 0);
    int64_t took = dbt_now_ms() - t0;
    dbpool__mock_get_counters(&n);
    if (took > 1000 || n.connects != 2)
        fail_msg("dbpool_close took %lld ms and %ld connect attempts followed it", (long long)took,
                 n.connects - 2);
}

/* A connection closed while a caller waits and a connector sleeps in a
 * backoff for it: the place given back is room for a connect now, and the
 * connector tries again at once. It used to finish its delay first, and
 * the waiter waited up to backoff_max_ms for a database that answered. */
static void test_close_cuts_connector_backoff_for_waiter(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.max_retries = 5;
    o.backoff_base_ms = 8000; /* a backoff sleeps 4000..8000 ms */
    o.backoff_max_ms = 8000;
    o.breaker_failures = 0;
    dbpool *p = dbt_open_lazy_mock(&o);
    dbpool_conn *a = dbt_acquire(p), *b = dbt_acquire(p);
    dbpool__mock_fail_connect(3, 1, DBPOOL_ECONNECT); /* the next connect fails, the one after works */
    dbt_timed_acquire w = {.p = p, .timeout_ms = 20000};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, dbt_timed_acquire_main, &w), 0);
    dbt_wait_for_waiters(p, 1, 5000);
    assert_int_equal(dbpool_discard(a), DBPOOL_OK); /* room: a connect for the waiter, which fails */
    dbpool__mock_counters n;
    int64_t until = dbt_now_ms() + 5000;
    do {
        dbt_sleep_ms(5);
        dbpool__mock_get_counters(&n);
    } while (n.connect_failures < 1 && dbt_now_ms() < until);
    assert_int_equal(n.connect_failures, 1); /* the connector now backs off */
    int64_t t0 = dbt_now_ms();
    assert_int_equal(dbpool_discard(b), DBPOOL_OK);
    pthread_join(t, NULL);
    int64_t took = dbt_now_ms() - t0;
    if (w.rc != DBPOOL_OK || took > 2000)
        fail_msg("waiter: %s %lld ms after the second discard: %s", dbpool_errname(w.rc), (long long)took,
                 w.message);
    assert_true(dbt_invariant_holds(p));
    dbpool_close(p);
}

/* A server at its connection limit while a caller waits: the connector
 * retries past max_retries at least 100 ms apart (documented), whatever
 * the backoff options. The jitter used to be applied after the 100 ms
 * floor, spacing the attempts 50..100 ms apart. */
static void test_limit_retries_at_least_100ms_apart(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.max_retries = 0;
    o.backoff_base_ms = 1;
    o.backoff_max_ms = 1;
    o.breaker_failures = 0;
    dbpool *p = dbt_open_lazy_mock(&o);
    dbpool__mock_set_connect_at_limit(true);
    dbpool__mock_fail_connect(1, -1, DBPOOL_ECONNECT);
    int64_t t0 = dbt_now_ms();
    dbpool_conn *c = NULL;
    dbpool_error e;
    assert_int_equal(dbpool_acquire(p, 2000, &c, &e), DBPOOL_ETIMEDOUT);
    int64_t took = dbt_now_ms() - t0;
    dbpool__mock_counters n;
    dbpool__mock_get_counters(&n);
    /* 100 ms apart: at most one attempt a 100 ms of the wait, plus the
     * first (50..100 ms apart made about 27 in 2 s). */
    if (n.connects < 2 || n.connects > took / 100 + 2)
        fail_msg("%ld connect attempts in %lld ms", n.connects, (long long)took);
    dbpool_close(p);
}

/* The same for a cap raised by dbpool_resize while a connector backs off
 * for a waiter: the room is there now, and the connector tries again at
 * once instead of after its delay. */
static void test_resize_cuts_connector_backoff_for_waiter(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.max_retries = 5;
    o.backoff_base_ms = 8000; /* a backoff sleeps 4000..8000 ms */
    o.backoff_max_ms = 8000;
    o.breaker_failures = 0;
    dbpool *p = dbt_open_lazy_mock(&o);
    dbpool_conn *a = dbt_acquire(p), *b = dbt_acquire(p);
    dbpool__mock_fail_connect(3, 1, DBPOOL_ECONNECT);
    dbt_timed_acquire w = {.p = p, .timeout_ms = 20000};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, dbt_timed_acquire_main, &w), 0);
    dbt_wait_for_waiters(p, 1, 5000);
    assert_int_equal(dbpool_discard(a), DBPOOL_OK); /* a connect for the waiter, which fails */
    dbpool__mock_counters n;
    int64_t until = dbt_now_ms() + 5000;
    do {
        dbt_sleep_ms(5);
        dbpool__mock_get_counters(&n);
    } while (n.connect_failures < 1 && dbt_now_ms() < until);
    assert_int_equal(n.connect_failures, 1);
    int64_t t0 = dbt_now_ms();
    dbpool_error e;
    assert_int_equal(dbpool_resize(p, 0, 3, &e), DBPOOL_OK);
    pthread_join(t, NULL);
    int64_t took = dbt_now_ms() - t0;
    if (w.rc != DBPOOL_OK || took > 2000)
        fail_msg("waiter: %s %lld ms after the resize: %s", dbpool_errname(w.rc), (long long)took, w.message);
    assert_int_equal(dbpool_release(b), DBPOOL_OK);
    assert_true(dbt_invariant_holds(p));
    dbpool_close(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_retried_then_reported, dbt_mock_setup),
        cmocka_unit_test_setup(test_auth_error_not_retried, dbt_mock_setup),
        cmocka_unit_test_setup(test_backoff_grows_with_jitter, dbt_mock_setup),
        cmocka_unit_test_setup(test_backoff_capped, dbt_mock_setup),
        cmocka_unit_test_setup(test_never_past_deadline, dbt_mock_setup),
        cmocka_unit_test_setup(test_own_connect_no_backoff_past_deadline, dbt_mock_setup),
        cmocka_unit_test_setup(test_slow_connect_bounded, dbt_mock_setup),
        cmocka_unit_test_setup(test_timeout_carries_last_connect_error, dbt_mock_setup),
        cmocka_unit_test_setup(test_permanent_error_spares_waiter_of_cached_lease, dbt_mock_setup),
        cmocka_unit_test_setup(test_open_fails_with_cause, dbt_mock_setup),
        cmocka_unit_test_setup(test_after_connect_and_init_sql, dbt_mock_setup),
        cmocka_unit_test_setup(test_init_sql_bounded_by_connect_timeout, dbt_mock_setup),
        cmocka_unit_test_setup(test_close_cuts_backoff_short, dbt_mock_setup),
        cmocka_unit_test_setup(test_close_cuts_connector_backoff_for_waiter, dbt_mock_setup),
        cmocka_unit_test_setup(test_limit_retries_at_least_100ms_apart, dbt_mock_setup),
        cmocka_unit_test_setup(test_resize_cuts_connector_backoff_for_waiter, dbt_mock_setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
