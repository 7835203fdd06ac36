/*
 * test_expiry.c — connections past max_lifetime_ms are never handed out
 * again, idle connections above min_size are closed after idle_timeout_ms:
 * on acquire and release without a maintenance thread, and by the
 * maintenance thread when there is one.
 */
#include "backend_common.h"

/* Poll until cond(p) or the deadline; returns whether it became true. */
static bool wait_until(dbpool *p, bool (*cond)(const dbpool_stats *, int), int arg, int64_t timeout_ms) {
    int64_t end = dbt_now_ms() + timeout_ms;
    for (;;) {
        dbpool_stats s = bt_stats(p);
        if (cond(&s, arg))
            return true;
        if (dbt_now_ms() > end)
            return false;
        dbt_sleep_ms(10);
    }
}

static bool idle_timeouts_at_least(const dbpool_stats *s, int n) {
    return s->destroyed_by[DBPOOL_CLOSE_IDLE_TIMEOUT] >= (uint64_t)n;
}
static bool lifetimes_at_least(const dbpool_stats *s, int n) {
    return s->destroyed_by[DBPOOL_CLOSE_LIFETIME] >= (uint64_t)n && s->total >= s->min_size;
}

static void test_lifetime_expired_idle_connection_not_reused(void **state) {
    (void)state;
    dbpool_options o;
    bt_options(&o, 0, 2);
    /* Long enough for the connect and two leases below even on a thread
     * descheduled for a few hundred ms (TSan, a loaded machine). */
    o.max_lifetime_ms = 600;
    dbpool *p = bt_open(&o, NULL);

    /* Well within its lifetime the connection is reused. */
    dbpool_conn *c = bt_acquire(p);
    bt_release(c);
    c = bt_acquire(p);
    bt_release(c);
    dbpool_stats s = bt_stats(p);
    BT_CHECK(s.created == 1 && s.destroyed == 0, "before expiry: created %llu destroyed %llu",
             (unsigned long long)s.created, (unsigned long long)s.destroyed);

    dbt_sleep_ms(700);
    c = bt_acquire(p);
    assert_int_equal(bt_query_int(c, "SELECT 1", NULL, 0), 1);
    s = bt_stats(p);
    BT_CHECK(s.created == 2,
             "after 700 ms (lifetime 600 ms) acquire should open a new connection, created %llu",
             (unsigned long long)s.created);
    BT_CHECK(s.destroyed_by[DBPOOL_CLOSE_LIFETIME] >= 1, "destroyed_by[lifetime] %llu, expected >= 1",
             (unsigned long long)s.destroyed_by[DBPOOL_CLOSE_LIFETIME]);
    bt_release(c);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

static void test_lifetime_expired_lease_closed_on_release(void **state) {
    (void)state;
    dbpool_options o;
    bt_options(&o, 0, 2);
    o.max_lifetime_ms = 300;
    dbpool *p = bt_open(&o, NULL);
    dbpool_conn *c = bt_acquire(p);
    dbt_sleep_ms(400);
    /* A lease is never taken away while held. */
    assert_int_equal(bt_query_int(c, "SELECT 1", NULL, 0), 1);
    bt_release(c);
    dbpool_stats s = bt_stats(p);
    BT_CHECK(s.destroyed_by[DBPOOL_CLOSE_LIFETIME] == 1 && s.idle == 0 && s.total == 0,
             "a lease released after its lifetime should be closed: destroyed_by[lifetime] %llu, idle %d",
             (unsigned long long)s.destroyed_by[DBPOOL_CLOSE_LIFETIME], s.idle);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_idle_timeout_enforced_on_release(void **state) {
    (void)state;
    dbpool_options o;
    bt_options(&o, 0, 2);
    o.idle_timeout_ms = 200;
    dbpool *p = bt_open(&o, NULL);
    dbpool_conn *a = bt_acquire(p), *b = bt_acquire(p);
    bt_release(a);
    dbt_sleep_ms(300);
    dbpool_stats s = bt_stats(p);
    BT_CHECK(s.idle == 1 && s.destroyed == 0, "without maintenance nothing closes by itself (idle %d)",
             s.idle);
    bt_release(b); /* A has now been idle 300 ms > 200 ms */
    s = bt_stats(p);
    BT_CHECK(s.destroyed_by[DBPOOL_CLOSE_IDLE_TIMEOUT] == 1,
             "releasing B should close A, idle for 300 ms: destroyed_by[idle_timeout] %llu",
             (unsigned long long)s.destroyed_by[DBPOOL_CLOSE_IDLE_TIMEOUT]);
    BT_CHECK(s.idle == 1 && s.total == 1, "B, just released, stays: idle %d total %d", s.idle, s.total);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_idle_timeout_enforced_on_acquire(void **state) {
    (void)state;
    dbpool_options o;
    bt_options(&o, 0, 2);
    o.idle_timeout_ms = 200;
    dbpool *p = bt_open(&o, NULL);
    dbpool_conn *a = bt_acquire(p), *b = bt_acquire(p);
    bt_release(a);
    bt_release(b);
    dbt_sleep_ms(300); /* both idle for longer than idle_timeout_ms */
    dbpool_conn *c = bt_acquire(p);
    assert_int_equal(bt_query_int(c, "SELECT 1", NULL, 0), 1);
    dbpool_stats s = bt_stats(p);
    /* Both have been idle past the timeout: neither stays in the pool, and
     * neither is the caller's (a stale connection is closed instead of
     * being handed out), whichever path (thread cache, idle list) it
     * would have come by. */
    BT_CHECK(s.destroyed_by[DBPOOL_CLOSE_IDLE_TIMEOUT] == 2 && s.idle == 0,
             "acquire after 300 ms idle (idle_timeout 200 ms) should close both expired idle "
             "connections and open a new one: destroyed_by[idle_timeout] %llu, idle %d",
             (unsigned long long)s.destroyed_by[DBPOOL_CLOSE_IDLE_TIMEOUT], s.idle);
    bt_release(c);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_maintenance_closes_idle_connections(void **state) {
    (void)state;
    dbpool_options o;
    bt_options(&o, 0, 2);
    o.idle_timeout_ms = 200;
    o.maintenance_interval_ms = 50;
    dbpool *p = bt_open(&o, NULL);
    dbpool_conn *a = bt_acquire(p), *b = bt_acquire(p);
    /* Before the releases: a stall between them and this reading would
     * otherwise age the connections unseen. */
    int64_t t0 = dbt_now_ms();
    bt_release(a);
    bt_release(b);
    dbt_sleep_ms(100);
    dbpool_stats s = bt_stats(p);
    if (dbt_now_ms() - t0 < 180) /* only meaningful if we were not descheduled */
        BT_CHECK(s.idle == 2 && s.destroyed == 0, "closed too early: after ~100 ms idle %d destroyed %llu",
                 s.idle, (unsigned long long)s.destroyed);
    bool done = wait_until(p, idle_timeouts_at_least, 2, 3000);
    s = bt_stats(p);
    BT_CHECK(done,
             "the maintenance thread should close both idle connections: destroyed_by[idle_timeout] %llu",
             (unsigned long long)s.destroyed_by[DBPOOL_CLOSE_IDLE_TIMEOUT]);
    BT_CHECK(s.idle == 0 && s.total == 0, "idle %d total %d", s.idle, s.total);
    /* The pool still works after being emptied. */
    dbpool_conn *c = bt_acquire(p);
    bt_release(c);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_idle_timeout_keeps_min_size(void **state) {
    (void)state;
    dbpool_options o;
    bt_options(&o, 1, 3);
    o.idle_timeout_ms = 200;
    o.maintenance_interval_ms = 50;
    dbpool *p = bt_open(&o, NULL);
    dbpool_conn *c[3];
    for (int i = 0; i < 3; i++)
        c[i] = bt_acquire(p);
    for (int i = 0; i < 3; i++)
        bt_release(c[i]);
    bool done = wait_until(p, idle_timeouts_at_least, 2, 3000);
    dbpool_stats s = bt_stats(p);
    BT_CHECK(done, "two of three idle connections should be closed: destroyed_by[idle_timeout] %llu",
             (unsigned long long)s.destroyed_by[DBPOOL_CLOSE_IDLE_TIMEOUT]);
    dbt_sleep_ms(400); /* several more passes */
    s = bt_stats(p);
    BT_CHECK(s.total == 1 && s.idle == 1, "min_size 1 must stay open: total %d idle %d", s.total, s.idle);
    BT_CHECK(s.destroyed_by[DBPOOL_CLOSE_IDLE_TIMEOUT] == 2, "destroyed_by[idle_timeout] %llu, expected 2",
             (unsigned long long)s.destroyed_by[DBPOOL_CLOSE_IDLE_TIMEOUT]);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_maintenance_retires_and_refills(void **state) {
    (void)state;
    dbpool_options o;
    bt_options(&o, 1, 2);
    o.max_lifetime_ms = 300;
    o.maintenance_interval_ms = 50;
    dbpool *p = bt_open(&o, NULL);
    bool done = wait_until(p, lifetimes_at_least, 1, 3000);
    dbpool_stats s = bt_stats(p);
    BT_CHECK(done,
             "the maintenance thread should retire the connection after its lifetime: "
             "destroyed_by[lifetime] %llu",
             (unsigned long long)s.destroyed_by[DBPOOL_CLOSE_LIFETIME]);
    /* ... and open a replacement to keep min_size. */
    int64_t end = dbt_now_ms() + 3000;
    while ((s = bt_stats(p)).idle < 1 && dbt_now_ms() < end)
        dbt_sleep_ms(10);
    BT_CHECK(s.idle == 1 && s.created >= 2, "min_size 1 should be refilled: idle %d created %llu", s.idle,
             (unsigned long long)s.created);
    dbpool_conn *c = bt_acquire(p);
    assert_int_equal(bt_query_int(c, "SELECT 1", NULL, 0), 1);
    bt_release(c);
    assert_int_equal(dbpool_close(p), 0);
}

int main(int argc, char **argv) {
    bt_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lifetime_expired_idle_connection_not_reused),
        cmocka_unit_test(test_lifetime_expired_lease_closed_on_release),
        cmocka_unit_test(test_idle_timeout_enforced_on_release),
        cmocka_unit_test(test_idle_timeout_enforced_on_acquire),
        cmocka_unit_test(test_maintenance_closes_idle_connections),
        cmocka_unit_test(test_idle_timeout_keeps_min_size),
        cmocka_unit_test(test_maintenance_retires_and_refills),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
