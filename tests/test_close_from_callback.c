/* dbpool_close called from a callback that runs on one of the pool's own
 * threads (a log line of the maintenance or the keepalive thread,
 * after_connect on a connector thread). Closing there would have to join the calling thread:
 * pthread_join returned EDEADLK, the close went on and freed the pool
 * while that thread still ran in it (a use after free, not the deadlock
 * the documentation promised). It returns DBPOOL_EMISUSE and touches
 * nothing; the pool goes on working and closes normally later. From a
 * callback on the caller's own thread the close goes ahead, and the call
 * that ran the callback ends cleanly. Mock backend. */
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

/* A callback that runs on the caller's own thread (a log line of acquire,
 * release, discard, exec, resize, suspend or resume; after_connect of a connect
 * made by try_acquire or of a reset at release) is not on a thread the
 * close must join: dbpool_close goes ahead there. The call that ran the
 * callback then ends with one of its documented codes, touching nothing
 * that was freed (ASan), and everything is closed and freed in the end. */
/* Atomic: the pool's connector threads log too, and read them. */
static const char *_Atomic close_trigger; /* a log line containing it closes the pool */
static atomic_bool close_when_connected;

static void close_on_line(void *user, dbpool_log_level level, const char *line) {
    (void)user, (void)level;
    const char *trigger = atomic_load(&close_trigger);
    if (trigger && strstr(line, trigger) && !atomic_load(&closed_from_callback)) {
        atomic_store(&closed_from_callback, true);
        atomic_store(&close_rc, dbpool_close(pool));
    }
}

static int close_in_callback(void *native, void *user) {
    (void)native, (void)user;
    if (atomic_load(&close_when_connected) && !atomic_load(&closed_from_callback)) {
        atomic_store(&closed_from_callback, true);
        atomic_store(&close_rc, dbpool_close(pool));
    }
    return 0;
}

typedef enum {
    BY_TRY_ACQUIRE_CONNECT,
    BY_RELEASE_RESET,
    BY_DISCARD,
    BY_EXEC_BROKEN,
    BY_ACQUIRE_VALIDATION,
    BY_RESIZE,
    BY_RESUME,
    BY_SUSPEND,
    BY_COUNT
} close_site;

/* lease_out: a lease is out while the callback closes the pool (sites
 * that need none to run), so the close cannot free it yet. */
static void close_from_caller_thread(close_site site, bool lease_out) {
    setup(NULL);
    atomic_store(&close_trigger, NULL);
    atomic_store(&close_when_connected, false);
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.maintenance_interval_ms = 0;
    o.lazy_connect = true;
    o.thread_cache = false;
    o.log_fn = close_on_line;
    o.log_level = DBPOOL_LOG_DEBUG;
    o.after_connect = close_in_callback;
    if (site == BY_ACQUIRE_VALIDATION)
        o.validation = DBPOOL_VALIDATE_ALWAYS;
    dbpool_error e;
    if (dbpool_open(&pool, "mock:", &o, &e) != DBPOOL_OK)
        fail_msg("open: %s", e.message);
    dbpool_conn *c = NULL;
    int rc = DBPOOL_OK, want = DBPOOL_OK;
    if (site != BY_TRY_ACQUIRE_CONNECT) {
        assert_int_equal(dbpool_acquire(pool, 1000, &c, NULL), DBPOOL_OK);
        if (site == BY_ACQUIRE_VALIDATION || !lease_out) {
            assert_int_equal(dbpool_release(c), DBPOOL_OK);
            c = NULL;
        }
    }
    switch (site) {
    case BY_TRY_ACQUIRE_CONNECT:
        atomic_store(&close_when_connected, true);
        rc = dbpool_try_acquire(pool, &c, &e);
        want = DBPOOL_ECLOSED;
        break;
    case BY_RELEASE_RESET:
        assert_int_equal(dbpool_exec(c, "BEGIN", NULL, 0, NULL, NULL), DBPOOL_OK);
        dbpool__mock_set_reset_clears_session(true); /* the reset runs after_connect again */
        atomic_store(&close_when_connected, true);
        rc = dbpool_release(c);
        c = NULL;
        break;
    case BY_DISCARD:
        atomic_store(&close_trigger, "closing connection");
        rc = dbpool_discard(c);
        c = NULL;
        break;
    case BY_EXEC_BROKEN:
        atomic_store(&close_trigger, "is broken");
        rc = dbpool_exec(c, "BREAK", NULL, 0, NULL, &e);
        want = DBPOOL_EBROKEN;
        break;
    case BY_ACQUIRE_VALIDATION:
        dbpool__mock_fail_ping(1, 1000);
        atomic_store(&close_trigger, "failed validation");
        rc = dbpool_acquire(pool, 1000, &c, &e);
        want = DBPOOL_ECLOSED;
        break;
    case BY_RESIZE:
        atomic_store(&close_trigger, "resized");
        rc = dbpool_resize(pool, 0, 3, &e);
        break;
    case BY_RESUME:
        assert_int_equal(dbpool_suspend(pool), DBPOOL_OK);
        atomic_store(&close_trigger, "resumed");
        rc = dbpool_resume(pool);
        break;
    case BY_SUSPEND:
        atomic_store(&close_trigger, "suspended");
        rc = dbpool_suspend(pool);
        break;
    case BY_COUNT:
        break;
    }
    if (rc != want || !atomic_load(&closed_from_callback))
        fail_msg("site %d: rc %d (want %d), closed from the callback: %d", (int)site, rc, want,
                 (int)atomic_load(&closed_from_callback));
    /* The close went ahead: leases out (the one running the callback, if
     * any) are counted, nothing is refused. */
    assert_true(atomic_load(&close_rc) >= 0);
    if (c)
        assert_int_equal(dbpool_release(c), DBPOOL_OK); /* valid after the close; frees the pool */
    dbpool__mock_counters n;
    dbpool__mock_get_counters(&n);
    assert_int_equal(n.live, 0);
    dbpool__mock_reset();
}

static void test_close_from_caller_thread_callbacks(void **state) {
    (void)state;
    for (int site = 0; site < BY_COUNT; site++)
        close_from_caller_thread((close_site)site, true);
}

/* The same with no lease out, so that the close frees the pool at once:
 * resize, resume and suspend log their line through the pool's queue of
 * state changes, which read the queue again after the callback returned
 * (freed memory: the process aborted) until the logging thread held the
 * pool while logging. */
static void test_close_from_callback_with_no_lease_out(void **state) {
    (void)state;
    close_from_caller_thread(BY_RESIZE, false);
    close_from_caller_thread(BY_RESUME, false);
    close_from_caller_thread(BY_SUSPEND, false);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_close_from_maintenance_log, setup),
        cmocka_unit_test_setup(test_close_from_connector_after_connect, setup),
        cmocka_unit_test_setup(test_close_from_keepalive_log, setup),
        cmocka_unit_test_setup(test_close_from_caller_thread_callbacks, setup),
        cmocka_unit_test_setup(test_close_from_callback_with_no_lease_out, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
