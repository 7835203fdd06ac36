/* dbpool_close called from a callback that runs on one of the pool's own
 * threads (a log line of the maintenance or the keepalive thread,
 * after_connect on a connector thread). Closing there would have to join the calling thread:
 * pthread_join returned EDEADLK, the close went on and freed the pool
 * while that thread still ran in it (a use after free, not the deadlock
 * the documentation promised). It returns DBPOOL_EMISUSE and touches
 * nothing; the pool goes on working and closes normally later. Mock
 * backend. */
#include "driver_mock.h"
#include "testsupport.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

static dbpool *pool;
static atomic_int close_rc;
static atomic_bool closed_from_callback;

static int setup(void **state) {
    (void)state;
    dbpool__mock_reset();
    pool = NULL;
    atomic_store(&close_rc, -1000);
    atomic_store(&closed_from_callback, false);
    return 0;
}

static void close_on_leak_report(void *user, dbpool_log_level level, const char *line) {
    (void)user, (void)level;
    if (strstr(line, "possible leak") && !atomic_load(&closed_from_callback)) {
        atomic_store(&close_rc, dbpool_close(pool));
        atomic_store(&closed_from_callback, true);
    }
}

static void wait_for_callback(void) {
    int64_t until = dbt_now_ms() + 5000;
    while (!atomic_load(&closed_from_callback) && dbt_now_ms() < until)
        dbt_sleep_ms(5);
    assert_true(atomic_load(&closed_from_callback));
}

static void test_close_from_maintenance_log(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.leak_threshold_ms = 20;
    o.maintenance_interval_ms = 10;
    o.log_fn = close_on_leak_report;
    dbpool_error e;
    if (dbpool_open(&pool, "mock:", &o, &e) != DBPOOL_OK)
        fail_msg("open: %s", e.message);
    dbpool_conn *c;
    assert_int_equal(dbpool_acquire(pool, 1000, &c, NULL), DBPOOL_OK);
    wait_for_callback();
    assert_int_equal(atomic_load(&close_rc), DBPOOL_EMISUSE);
    /* Still open and working. */
    dbpool_conn *c2;
    assert_int_equal(dbpool_acquire(pool, 1000, &c2, NULL), DBPOOL_OK);
    assert_int_equal(dbpool_release(c2), DBPOOL_OK);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_close(pool), 0);
    dbpool__mock_counters n;
    dbpool__mock_get_counters(&n);
    assert_int_equal(n.live, 0);
}

static int close_in_after_connect(void *native, void *user) {
    (void)native, (void)user;
    if (!atomic_load(&closed_from_callback)) {
        atomic_store(&close_rc, dbpool_close(pool));
        atomic_store(&closed_from_callback, true);
    }
    return 0;
}

static void test_close_from_connector_after_connect(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.lazy_connect = true;
    o.maintenance_interval_ms = 0;
    /* No connection at open: the first is a connector's, for the caller
     * below (a caller who waits does not connect on its own thread). */
    o.after_connect = close_in_after_connect;
    dbpool_error e;
    if (dbpool_open(&pool, "mock:", &o, &e) != DBPOOL_OK)
        fail_msg("open: %s", e.message);
    dbpool_conn *c;
    assert_int_equal(dbpool_acquire(pool, 2000, &c, &e), DBPOOL_OK);
    assert_true(atomic_load(&closed_from_callback));
    assert_int_equal(atomic_load(&close_rc), DBPOOL_EMISUSE);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_close(pool), 0);
    dbpool__mock_counters n;
    dbpool__mock_get_counters(&n);
    assert_int_equal(n.live, 0);
}

static void close_on_failed_ping(void *user, dbpool_log_level level, const char *line) {
    (void)user, (void)level;
    if (strstr(line, "keepalive ping of connection") && !atomic_load(&closed_from_callback)) {
        atomic_store(&close_rc, dbpool_close(pool));
        atomic_store(&closed_from_callback, true);
    }
}

/* The keepalive pings run on a thread of their own: a log line of a failed
 * ping is logged there, and a close from it is refused the same way. */
static void test_close_from_keepalive_log(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 1, 2);
    o.keepalive_ms = 5;
    o.maintenance_interval_ms = 5;
    o.log_fn = close_on_failed_ping;
    dbpool_error e;
    if (dbpool_open(&pool, "mock:", &o, &e) != DBPOOL_OK)
        fail_msg("open: %s", e.message);
    dbpool__mock_fail_ping(1, 1);
    wait_for_callback();
    assert_int_equal(atomic_load(&close_rc), DBPOOL_EMISUSE);
    /* Still open and working. */
    dbpool_conn *c;
    assert_int_equal(dbpool_acquire(pool, 1000, &c, NULL), DBPOOL_OK);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_close(pool), 0);
    dbpool__mock_counters n;
    dbpool__mock_get_counters(&n);
    assert_int_equal(n.live, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_close_from_maintenance_log, setup),
        cmocka_unit_test_setup(test_close_from_connector_after_connect, setup),
        cmocka_unit_test_setup(test_close_from_keepalive_log, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
