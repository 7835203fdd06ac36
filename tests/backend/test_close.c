/*
 * test_close.c — closing a pool: idle connections closed at once, waiters
 * woken with DBPOOL_ECLOSED, leases still out stay usable and free what is
 * left when they come back. Run under ASan this also checks that nothing
 * leaks and nothing is used after it is freed.
 */
#include "backend_common.h"

#include <pthread.h>

static void test_close_with_idle_connections_only(void **state) {
    (void)state;
    dbpool_options o;
    bt_options(&o, 0, 3);
    dbpool *p = bt_open(&o, NULL);
    dbpool_conn *a = bt_acquire(p), *b = bt_acquire(p);
    bt_release(a);
    bt_release(b);
    assert_int_equal(bt_stats(p).idle, 2);
    int rc = dbpool_close(p);
    BT_CHECK(rc == 0, "close with no lease out should return 0, returned %d", rc);
}

static void test_close_null(void **state) {
    (void)state;
    assert_int_equal(dbpool_close(NULL), 0);
}

typedef struct waiter_arg {
    dbpool *p;
    int rc;
    int64_t returned_ms;
    char msg[512];
} waiter_arg;

static void *waiter_main(void *arg) {
    waiter_arg *a = arg;
    dbpool_conn *c = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    a->rc = dbpool_acquire(a->p, 10000, &c, &e);
    a->returned_ms = dbt_now_ms();
    snprintf(a->msg, sizeof a->msg, "%s", e.message);
    if (a->rc == DBPOOL_OK)
        dbpool_release(c); /* wrong outcome; reported by the main thread */
    return NULL;
}

static void test_close_with_leases_and_waiter(void **state) {
    (void)state;
    dbpool_options o;
    bt_options(&o, 0, 2);
    o.acquire_timeout_ms = 10000;
    dbpool *p = bt_open(&o, NULL);
    dbpool_conn *l1 = bt_acquire(p), *l2 = bt_acquire(p);
    /* Leave a transaction open on one lease: its release after close must
     * still work. */
    bt_exec(l2, "BEGIN");

    waiter_arg w;
    memset(&w, 0, sizeof w);
    w.p = p;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, waiter_main, &w), 0);
    dbt_wait_for_waiters(p, 1, 5000);

    int64_t t0 = dbt_now_ms();
    int rc = dbpool_close(p);
    BT_CHECK(rc == 2, "close with 2 leases out should return 2, returned %d", rc);
    pthread_join(th, NULL);
    BT_CHECK(w.rc == DBPOOL_ECLOSED, "the waiter should wake with DBPOOL_ECLOSED, got %s: %s",
             dbpool_errname(w.rc), w.msg);
    BT_CHECK(w.returned_ms - t0 < 1000, "the waiter woke %lld ms after close",
             (long long)(w.returned_ms - t0));

    /* The pool is still allocated while leases are out: acquiring now is
     * legal and must say the pool is closed. */
    dbpool_conn *c = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    t0 = dbt_now_ms();
    rc = dbpool_acquire(p, 2000, &c, &e);
    BT_RC(rc, DBPOOL_ECLOSED, "acquire on a closed pool with leases out");
    BT_CHECK(dbt_now_ms() - t0 < 500, "acquire on a closed pool should not wait");
    assert_null(c);
    BT_RC(dbpool_try_acquire(p, &c, NULL), DBPOOL_ECLOSED, "try_acquire on a closed pool");
    assert_null(c);

    /* Leases still out stay valid. */
    assert_int_equal(bt_query_int(l1, "SELECT 1", NULL, 0), 1);
    assert_int_equal(bt_query_int(l2, "SELECT 2", NULL, 0), 2);
    BT_RC(dbpool_release(l1), DBPOOL_OK, "releasing a lease after close");
    BT_RC(dbpool_release(l2), DBPOOL_OK, "releasing the last lease (inside a transaction) after close");
    /* p is freed now; ASan reports a leak or a use after free. */
}

static void test_discard_after_close(void **state) {
    (void)state;
    dbpool_options o;
    bt_options(&o, 0, 2);
    dbpool *p = bt_open(&o, NULL);
    dbpool_conn *a = bt_acquire(p), *b = bt_acquire(p);
    int rc = dbpool_close(p);
    BT_CHECK(rc == 2, "close returned %d, expected 2", rc);
    BT_RC(dbpool_discard(a), DBPOOL_OK, "discard after close");
    BT_RC(dbpool_release(b), DBPOOL_OK, "release of the last lease after close");
}

typedef struct many_arg {
    dbpool *p;
    int rc;
} many_arg;

static void *many_waiter(void *arg) {
    many_arg *a = arg;
    dbpool_conn *c = NULL;
    a->rc = dbpool_acquire(a->p, 10000, &c, NULL);
    if (a->rc == DBPOOL_OK)
        dbpool_release(c);
    return NULL;
}

static void test_close_wakes_every_waiter(void **state) {
    (void)state;
    enum { N = 4 };
    dbpool_options o;
    bt_options(&o, 0, 1);
    o.acquire_timeout_ms = 10000;
    dbpool *p = bt_open(&o, NULL);
    dbpool_conn *held = bt_acquire(p);
    pthread_t th[N];
    many_arg args[N];
    for (int i = 0; i < N; i++) {
        args[i].p = p;
        args[i].rc = 1;
        assert_int_equal(pthread_create(&th[i], NULL, many_waiter, &args[i]), 0);
    }
    dbt_wait_for_waiters(p, N, 5000);
    int64_t t0 = dbt_now_ms();
    int rc = dbpool_close(p);
    BT_CHECK(rc == 1, "close returned %d, expected 1", rc);
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    int64_t took = dbt_now_ms() - t0;
    for (int i = 0; i < N; i++)
        BT_CHECK(args[i].rc == DBPOOL_ECLOSED, "waiter %d got %s, expected DBPOOL_ECLOSED", i,
                 dbpool_errname(args[i].rc));
    BT_CHECK(took < 1000, "all waiters should wake promptly, took %lld ms", (long long)took);
    BT_RC(dbpool_release(held), DBPOOL_OK, "release after close");
}

int main(int argc, char **argv) {
    bt_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_close_with_idle_connections_only), cmocka_unit_test(test_close_null),
        cmocka_unit_test(test_close_with_leases_and_waiter),     cmocka_unit_test(test_discard_after_close),
        cmocka_unit_test(test_close_wakes_every_waiter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
