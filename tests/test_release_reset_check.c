/* Release asks the driver whether a connection needs a reset only when
 * something may have changed its session since the driver last found it
 * clean: a statement, a ping, init_sql, or the native handle handed out
 * (dbpool__needs_reset). A lease that did none of these skips the check;
 * a lease that did any is checked, rolled back or closed as before.
 * Through the thread cache and through the ordinary path. Mock backend. */
#include "driver_mock.h"
#include "testsupport.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

static dbpool *open_pool(bool cache, dbpool_validation validation) {
    dbpool_options o;
    dbt_mock_options(&o, 1, 1, cache);
    o.validation = validation;
    o.validation_window_ms = 0;
    return dbt_open_mock(&o);
}

static long reset_checks(void) {
    dbpool__mock_counters n;
    dbpool__mock_get_counters(&n);
    return n.reset_checks;
}

/* The first release of a new connection is checked (init_sql ran on it);
 * later leases that ran nothing are not; one that ran a statement is. */
static void checks_only_touched_leases(bool cache) {
    dbpool *p = open_pool(cache, DBPOOL_VALIDATE_NEVER);
    dbpool_conn *c = dbt_acquire(p);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(reset_checks(), 1);
    for (int i = 0; i < 100; i++) {
        c = dbt_acquire(p);
        assert_int_equal(dbpool_release(c), DBPOOL_OK);
    }
    assert_int_equal(reset_checks(), 1);
    c = dbt_acquire(p);
    assert_int_equal(dbpool_exec(c, "SELECT 1", NULL, 0, NULL, NULL), DBPOOL_OK);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(reset_checks(), 2);
    c = dbt_acquire(p); /* found clean by that check: nothing to ask again */
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(reset_checks(), 2);
    assert_int_equal(dbt_stats(p).total, 1);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

static void test_untouched_leases_skip_the_check_cached(void **state) {
    (void)state;
    checks_only_touched_leases(true);
}

static void test_untouched_leases_skip_the_check_ordinary(void **state) {
    (void)state;
    checks_only_touched_leases(false);
}

/* A transaction left open is rolled back, and the lease after the reset
 * is checked no more. */
static void open_transaction_is_rolled_back(bool cache) {
    dbpool *p = open_pool(cache, DBPOOL_VALIDATE_NEVER);
    dbpool_conn *c = dbt_acquire(p);
    dbpool_release(c);
    c = dbt_acquire(p);
    assert_int_equal(dbpool_exec(c, "BEGIN", NULL, 0, NULL, NULL), DBPOOL_OK);
    void *native = dbpool_conn_native(c);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_false(dbpool__mock_in_transaction(native));
    assert_int_equal(dbt_stats(p).rollbacks, 1);
    c = dbt_acquire(p);
    assert_false(dbpool__mock_in_transaction(dbpool_conn_native(c)));
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbt_stats(p).rollbacks, 1);
    assert_int_equal(dbt_stats(p).total, 1);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_open_transaction_is_rolled_back_cached(void **state) {
    (void)state;
    open_transaction_is_rolled_back(true);
}

static void test_open_transaction_is_rolled_back_ordinary(void **state) {
    (void)state;
    open_transaction_is_rolled_back(false);
}

/* The native handle may have been used for anything: a lease that took
 * it is checked, and a session that died under it is closed at release,
 * not parked or made idle. */
static void native_handle_makes_the_release_check(bool cache) {
    dbpool *p = open_pool(cache, DBPOOL_VALIDATE_NEVER);
    dbpool_conn *c = dbt_acquire(p);
    dbpool_release(c);
    long before = reset_checks();
    c = dbt_acquire(p);
    dbpool__mock_kill(dbpool_conn_native(c));
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_true(reset_checks() > before); /* the cache's release asks, then the ordinary one again */
    dbpool_stats s = dbt_stats(p);
    assert_int_equal(s.destroyed_by[DBPOOL_CLOSE_BROKEN], 1);
    assert_int_equal(s.total, 0);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

static void test_native_handle_makes_the_release_check_cached(void **state) {
    (void)state;
    native_handle_makes_the_release_check(true);
}

static void test_native_handle_makes_the_release_check_ordinary(void **state) {
    (void)state;
    native_handle_makes_the_release_check(false);
}

/* A validation ping at hand-out talks to the server: that lease's release
 * is checked too. */
static void test_validated_lease_is_checked(void **state) {
    (void)state;
    dbpool *p = open_pool(false, DBPOOL_VALIDATE_ALWAYS);
    dbpool_conn *c = dbt_acquire(p);
    dbpool_release(c);
    dbpool__mock_counters before;
    dbpool__mock_get_counters(&before);
    c = dbt_acquire(p);
    dbpool__mock_counters after;
    dbpool__mock_get_counters(&after);
    assert_int_equal(after.pings, before.pings + 1);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(reset_checks(), before.reset_checks + 1);
    assert_int_equal(dbpool_close(p), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_untouched_leases_skip_the_check_cached, dbt_mock_setup),
        cmocka_unit_test_setup(test_untouched_leases_skip_the_check_ordinary, dbt_mock_setup),
        cmocka_unit_test_setup(test_open_transaction_is_rolled_back_cached, dbt_mock_setup),
        cmocka_unit_test_setup(test_open_transaction_is_rolled_back_ordinary, dbt_mock_setup),
        cmocka_unit_test_setup(test_native_handle_makes_the_release_check_cached, dbt_mock_setup),
        cmocka_unit_test_setup(test_native_handle_makes_the_release_check_ordinary, dbt_mock_setup),
        cmocka_unit_test_setup(test_validated_lease_is_checked, dbt_mock_setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
