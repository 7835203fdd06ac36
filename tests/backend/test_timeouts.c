/*
 * test_timeouts.c — acquire waits as long as it was told and no longer, a
 * zero timeout and try_acquire do not wait, a negative timeout means the
 * pool's acquire_timeout_ms, and max_waiters turns extra callers away.
 */
#include "backend_common.h"

#include <pthread.h>

static void test_acquire_times_out_on_time(void **state) {
    (void)state;
    dbpool_options o;
    bt_options(&o, 0, 1);
    o.acquire_timeout_ms = 5000; /* what an acquire that ignored its 200 ms would wait */
    dbpool *p = bt_open(&o, NULL);
    dbpool_conn *held = bt_acquire(p);
    dbpool_stats before = bt_stats(p);

    dbpool_conn *c = (dbpool_conn *)&c; /* must be reset to NULL on failure */
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int64_t t0 = dbt_now_ms();
    int rc = dbpool_acquire(p, 200, &c, &e);
    int64_t waited = dbt_now_ms() - t0;
    BT_RC(rc, DBPOOL_ETIMEDOUT, "acquire(200 ms) on a full pool");
    assert_int_equal(e.code, DBPOOL_ETIMEDOUT);
    assert_null(c);
    /* The upper bound leaves room for a descheduled thread (TSan, a loaded
     * machine), far below the pool's 5000 ms. */
    BT_CHECK(waited >= 195 && waited < 1000, "acquire(200 ms) returned after %lld ms", (long long)waited);
    print_message("[%s] timeout message: %s\n", bt_backend, e.message);
    BT_CHECK(strstr(e.message, "in use") && strstr(e.message, "idle") && strstr(e.message, "waiting") &&
                 strstr(e.message, "max"),
             "the timeout message should describe the pool (in use, idle, waiting, max): \"%s\"", e.message);
    dbpool_stats s = bt_stats(p);
    BT_CHECK(s.timeouts == before.timeouts + 1, "stats.timeouts %llu, expected %llu",
             (unsigned long long)s.timeouts, (unsigned long long)before.timeouts + 1);
    BT_CHECK(s.waiting == 0, "the timed-out caller is still counted as waiting (%d)", s.waiting);

    bt_release(held);
    /* The pool is fine afterwards. */
    c = bt_acquire(p);
    bt_release(c);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_zero_timeout_does_not_wait(void **state) {
    (void)state;
    dbpool_options o;
    bt_options(&o, 0, 1);
    o.acquire_timeout_ms = 5000; /* what a wait would last */
    dbpool *p = bt_open(&o, NULL);
    dbpool_conn *held = bt_acquire(p);

    dbpool_conn *c = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int64_t t0 = dbt_now_ms();
    int rc = dbpool_acquire(p, 0, &c, &e);
    int64_t waited = dbt_now_ms() - t0;
    BT_RC(rc, DBPOOL_ETIMEDOUT, "acquire(timeout 0) on a full pool");
    BT_CHECK(waited < 1000, "acquire(timeout 0) took %lld ms", (long long)waited);
    assert_null(c);

    /* With a free connection a zero timeout succeeds. */
    bt_release(held);
    memset(&e, 0, sizeof e);
    BT_OK(dbpool_acquire(p, 0, &c, &e), &e, "acquire(timeout 0) with an idle connection");
    bt_release(c);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_negative_timeout_uses_pool_default(void **state) {
    (void)state;
    dbpool_options o;
    bt_options(&o, 0, 1);
    o.acquire_timeout_ms = 300;
    dbpool *p = bt_open(&o, NULL);
    dbpool_conn *held = bt_acquire(p);

    dbpool_conn *c = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int64_t t0 = dbt_now_ms();
    int rc = dbpool_acquire(p, -1, &c, &e);
    int64_t waited = dbt_now_ms() - t0;
    BT_RC(rc, DBPOOL_ETIMEDOUT, "acquire(-1) with acquire_timeout_ms 300");
    BT_CHECK(waited >= 295 && waited < 1000,
             "acquire(-1) should wait acquire_timeout_ms = 300 ms, waited %lld ms", (long long)waited);
    bt_release(held);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_try_acquire_never_waits(void **state) {
    (void)state;
    dbpool_options o;
    bt_options(&o, 0, 1);
    o.acquire_timeout_ms = 5000; /* what a wait would last */
    dbpool *p = bt_open(&o, NULL);

    dbpool_conn *c = NULL, *d = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    BT_OK(dbpool_try_acquire(p, &c, &e), &e, "try_acquire with an idle connection");
    assert_non_null(c);

    memset(&e, 0, sizeof e);
    int64_t t0 = dbt_now_ms();
    int rc = dbpool_try_acquire(p, &d, &e);
    int64_t waited = dbt_now_ms() - t0;
    BT_RC(rc, DBPOOL_EBUSY, "try_acquire on a full pool");
    BT_CHECK(waited < 1000, "try_acquire took %lld ms", (long long)waited);
    assert_null(d);
    assert_true(e.message[0] != '\0');
    bt_release(c);
    assert_int_equal(dbpool_close(p), 0);
}

typedef struct waiter_arg {
    dbpool *p;
    int64_t timeout_ms;
    int rc;
    int release_rc;
    int64_t waited_ms;
    char msg[512];
} waiter_arg;

static void *waiter_main(void *arg) {
    waiter_arg *a = arg;
    dbpool_conn *c = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int64_t t0 = dbt_now_ms();
    a->rc = dbpool_acquire(a->p, a->timeout_ms, &c, &e);
    a->waited_ms = dbt_now_ms() - t0;
    snprintf(a->msg, sizeof a->msg, "%s", e.message);
    if (a->rc == DBPOOL_OK)
        a->release_rc = dbpool_release(c);
    return NULL;
}

static void test_max_waiters_rejects_at_once(void **state) {
    (void)state;
    dbpool_options o;
    bt_options(&o, 0, 1);
    o.max_waiters = 1;
    dbpool *p = bt_open(&o, NULL);
    dbpool_conn *held = bt_acquire(p);

    waiter_arg w;
    memset(&w, 0, sizeof w);
    w.p = p;
    w.timeout_ms = 5000;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, waiter_main, &w), 0);
    dbt_wait_for_waiters(p, 1, 5000);

    dbpool_conn *c = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int64_t t0 = dbt_now_ms();
    int rc = dbpool_acquire(p, 5000, &c, &e);
    int64_t waited = dbt_now_ms() - t0;
    BT_RC(rc, DBPOOL_EBUSY, "acquire with max_waiters=1 already waiting");
    BT_CHECK(waited < 1000, "the refused acquire took %lld ms instead of returning at once",
             (long long)waited);
    assert_null(c);
    BT_CHECK(strstr(e.message, "max_waiters") != NULL, "the EBUSY message should name max_waiters: \"%s\"",
             e.message);

    /* The one waiter is served when the connection comes back. */
    bt_release(held);
    pthread_join(th, NULL);
    BT_CHECK(w.rc == DBPOOL_OK, "the admitted waiter failed: %s: %s", dbpool_errname(w.rc), w.msg);
    assert_int_equal(w.release_rc, DBPOOL_OK);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_waiter_is_served_before_its_deadline(void **state) {
    (void)state;
    dbpool_options o;
    bt_options(&o, 0, 1);
    dbpool *p = bt_open(&o, NULL);
    dbpool_conn *held = bt_acquire(p);

    waiter_arg w;
    memset(&w, 0, sizeof w);
    w.p = p;
    w.timeout_ms = 3000;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, waiter_main, &w), 0);
    dbt_wait_for_waiters(p, 1, 5000);
    dbt_sleep_ms(100);
    bt_release(held);
    pthread_join(th, NULL);
    BT_CHECK(w.rc == DBPOOL_OK, "waiter failed: %s: %s", dbpool_errname(w.rc), w.msg);
    BT_CHECK(w.waited_ms >= 90 && w.waited_ms < 1500,
             "the waiter should get the connection right after the release (~100 ms), waited %lld ms",
             (long long)w.waited_ms);
    assert_int_equal(dbpool_close(p), 0);
}

int main(int argc, char **argv) {
    bt_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_acquire_times_out_on_time),
        cmocka_unit_test(test_zero_timeout_does_not_wait),
        cmocka_unit_test(test_negative_timeout_uses_pool_default),
        cmocka_unit_test(test_try_acquire_never_waits),
        cmocka_unit_test(test_max_waiters_rejects_at_once),
        cmocka_unit_test(test_waiter_is_served_before_its_deadline),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
