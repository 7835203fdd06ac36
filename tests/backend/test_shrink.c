/*
 * test_shrink.c — dbpool_shrink closes idle connections down to a target
 * and never touches a leased one.
 */
#include "backend_common.h"

static void test_shrink_closes_idle_down_to_target(void **state) {
    (void)state;
    dbpool_options o;
    bt_options(&o, 0, 4);
    dbpool *p = bt_open(&o, NULL);
    dbpool_conn *c[4];
    for (int i = 0; i < 4; i++)
        c[i] = bt_acquire(p);
    for (int i = 0; i < 4; i++)
        bt_release(c[i]);
    dbpool_stats s = bt_stats(p);
    BT_CHECK(s.idle == 4 && s.created == 4, "4 leases released: idle %d created %llu", s.idle,
             (unsigned long long)s.created);

    int n = dbpool_shrink(p, 1);
    BT_CHECK(n == 3, "shrink(1) with 4 idle should close 3, returned %d", n);
    s = bt_stats(p);
    BT_CHECK(s.idle == 1 && s.total == 1, "after shrink(1): idle %d total %d", s.idle, s.total);
    BT_CHECK(s.destroyed_by[DBPOOL_CLOSE_SHRINK] == 3, "destroyed_by[shrink] %llu, expected 3",
             (unsigned long long)s.destroyed_by[DBPOOL_CLOSE_SHRINK]);
    BT_CHECK(s.destroyed == 3, "destroyed %llu, expected 3", (unsigned long long)s.destroyed);

    /* Nothing left to close: shrinking again to the same target is a no-op. */
    n = dbpool_shrink(p, 1);
    BT_CHECK(n == 0, "a second shrink(1) closed %d", n);

    /* The remaining connection is reused. */
    dbpool_conn *x = bt_acquire(p);
    assert_int_equal(bt_query_int(x, "SELECT 1", NULL, 0), 1);
    bt_release(x);
    s = bt_stats(p);
    BT_CHECK(s.created == 4, "the acquire after shrink(1) should reuse the idle connection (created %llu)",
             (unsigned long long)s.created);

    BT_RC(dbpool_shrink(p, -1), DBPOOL_EINVAL, "shrink(-1)");
    BT_RC(dbpool_shrink(NULL, 0), DBPOOL_EINVAL, "shrink(NULL)");
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

static void test_shrink_never_touches_leases(void **state) {
    (void)state;
    dbpool_options o;
    bt_options(&o, 0, 4);
    dbpool *p = bt_open(&o, NULL);
    dbpool_conn *c[4];
    void *native[4];
    for (int i = 0; i < 4; i++) {
        c[i] = bt_acquire(p);
        native[i] = dbpool_conn_native(c[i]);
    }
    bt_release(c[2]);
    bt_release(c[3]);

    int n = dbpool_shrink(p, 0);
    BT_CHECK(n == 2, "shrink(0) with 2 idle and 2 leased should close 2, returned %d", n);
    dbpool_stats s = bt_stats(p);
    BT_CHECK(s.idle == 0 && s.in_use == 2 && s.total == 2, "after shrink(0): idle %d in_use %d total %d",
             s.idle, s.in_use, s.total);
    BT_CHECK(s.destroyed_by[DBPOOL_CLOSE_SHRINK] == 2, "destroyed_by[shrink] %llu, expected 2",
             (unsigned long long)s.destroyed_by[DBPOOL_CLOSE_SHRINK]);

    /* The held leases are untouched and still work. */
    for (int i = 0; i < 2; i++) {
        BT_CHECK(dbpool_conn_native(c[i]) == native[i], "lease %d lost its connection to shrink", i);
        dbpool_param v = dbpool_param_int64(40 + i);
        int64_t got = bt_query_int(c[i], "SELECT ?", &v, 1);
        BT_CHECK(got == 40 + i, "lease %d: SELECT ? returned %lld", i, (long long)got);
    }
    bt_release(c[0]);
    bt_release(c[1]);
    s = bt_stats(p);
    BT_CHECK(s.idle == 2 && s.in_use == 0 && s.destroyed == 2,
             "held leases go back to idle (idle %d, destroyed %llu)", s.idle,
             (unsigned long long)s.destroyed);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

int main(int argc, char **argv) {
    bt_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shrink_closes_idle_down_to_target),
        cmocka_unit_test(test_shrink_never_touches_leases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
