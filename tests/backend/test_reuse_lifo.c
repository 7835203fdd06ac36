/*
 * test_reuse_lifo.c — a released connection is reused instead of a new one
 * being opened, and idle connections are handed out last-in first-out.
 */
#include "backend_common.h"

static void test_released_connection_is_reused(void **state) {
    (void)state;
    dbpool_options o;
    bt_options(&o, 0, 3);
    dbpool *p = bt_open(&o, NULL);

    dbpool_conn *c = bt_acquire(p);
    void *first = dbpool_conn_native(c);
    assert_non_null(first);
    assert_int_equal(bt_query_int(c, "SELECT 1", NULL, 0), 1);
    bt_release(c);
    dbpool_stats before = bt_stats(p);
    BT_CHECK(before.created == 1, "one connection opened so far, stats say %llu",
             (unsigned long long)before.created);

    for (int i = 1; i <= 5; i++) {
        c = bt_acquire(p);
        BT_CHECK(dbpool_conn_native(c) == first, "cycle %d: the one released connection should come back", i);
        assert_int_equal(bt_query_int(c, "SELECT 1", NULL, 0), 1);
        bt_release(c);
        dbpool_stats s = bt_stats(p);
        BT_CHECK(s.created == 1, "cycle %d: created should stay 1, is %llu", i,
                 (unsigned long long)s.created);
        BT_CHECK(s.reused == before.reused + (uint64_t)i, "cycle %d: reused should be %llu, is %llu", i,
                 (unsigned long long)(before.reused + (uint64_t)i), (unsigned long long)s.reused);
        BT_CHECK(s.idle == 1 && s.in_use == 0 && s.total == 1, "cycle %d: idle %d in_use %d total %d", i,
                 s.idle, s.in_use, s.total);
    }
    assert_int_equal(dbpool_close(p), 0);
}

static void test_idle_connections_are_lifo(void **state) {
    (void)state;
    dbpool_options o;
    bt_options(&o, 0, 3);
    dbpool *p = bt_open(&o, NULL);

    dbpool_conn *a = bt_acquire(p), *b = bt_acquire(p), *c = bt_acquire(p);
    void *na = dbpool_conn_native(a), *nb = dbpool_conn_native(b), *nc = dbpool_conn_native(c);
    BT_CHECK(na && nb && nc && na != nb && nb != nc && na != nc,
             "three leases held at once must be three connections (%p %p %p)", na, nb, nc);
    dbpool_stats s = bt_stats(p);
    BT_CHECK(s.created == 3 && s.in_use == 3, "created %llu in_use %d, expected 3 and 3",
             (unsigned long long)s.created, s.in_use);

    bt_release(a);
    bt_release(b);
    bt_release(c);

    /* Last in, first out: C, then B, then A. */
    dbpool_conn *x = bt_acquire(p);
    BT_CHECK(dbpool_conn_native(x) == nc, "first acquire after releasing A, B, C should get C (got %s)",
             dbpool_conn_native(x) == na   ? "A"
             : dbpool_conn_native(x) == nb ? "B"
                                           : "a new one");
    dbpool_conn *y = bt_acquire(p);
    BT_CHECK(dbpool_conn_native(y) == nb, "second acquire should get B (got %s)",
             dbpool_conn_native(y) == na   ? "A"
             : dbpool_conn_native(y) == nc ? "C"
                                           : "a new one");
    dbpool_conn *z = bt_acquire(p);
    BT_CHECK(dbpool_conn_native(z) == na, "third acquire should get A");
    s = bt_stats(p);
    BT_CHECK(s.created == 3, "no new connection should be opened, created is %llu",
             (unsigned long long)s.created);

    /* Release in another order: the most recently released comes first. */
    bt_release(y);
    bt_release(x);
    dbpool_conn *w = bt_acquire(p);
    BT_CHECK(dbpool_conn_native(w) == nc, "after releasing B then C, acquire should get C");
    bt_release(w);
    bt_release(z);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

int main(int argc, char **argv) {
    bt_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_released_connection_is_reused),
        cmocka_unit_test(test_idle_connections_are_lifo),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
