/* dbpool_refresh: every connection the pool has at the call is retired,
 * wherever it is (idle, parked in a thread cache, leased through either
 * path, being opened), and none of them is handed out again; new ones take
 * their place. Mock backend: each connection has its own number. */
#include "driver_mock.h"
#include "testsupport.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

static char last_refresh_line[256];
static pthread_mutex_t line_lock = PTHREAD_MUTEX_INITIALIZER;

static void keep_refresh_line(void *user, dbpool_log_level level, const char *msg) {
    (void)user, (void)level;
    if (!strstr(msg, "refreshed:"))
        return;
    pthread_mutex_lock(&line_lock);
    snprintf(last_refresh_line, sizeof last_refresh_line, "%s", msg);
    pthread_mutex_unlock(&line_lock);
}

/* A pool with a maintenance thread that never runs a pass by itself
 * (the refill after a refresh must not wait for one). */
static dbpool *open_pool(int min, int max, bool thread_cache) {
    dbpool_options o;
    dbt_mock_options(&o, min, max, thread_cache);
    o.maintenance_interval_ms = 3600 * 1000;
    o.lazy_connect = true; /* min_size 0: no first connection before the test's */
    o.log_fn = keep_refresh_line;
    o.log_level = DBPOOL_LOG_INFO;
    return dbt_open_mock(&o);
}

/* Wait (5 s at most) until the mock has seen `n` connect attempts begin:
 * a connect queued but not begun at a refresh is a new one. */
static void wait_connects(long n) {
    dbpool__mock_counters mc;
    int64_t until = dbt_now_ms() + 5000;
    do {
        dbpool__mock_get_counters(&mc);
        if (mc.connects >= n)
            return;
        dbt_sleep_ms(1);
    } while (dbt_now_ms() < until);
    fail_msg("%ld connect attempts within 5 s, expected %ld", mc.connects, n);
}

static uint64_t refreshed(dbpool *p) { return dbt_stats(p).destroyed_by[DBPOOL_CLOSE_REFRESHED]; }

/* Wait (5 s at most) until the pool holds `idle` idle connections and
 * opens none. */
static void wait_idle(dbpool *p, int idle) {
    dbpool_stats s;
    int64_t until = dbt_now_ms() + 5000;
    do {
        s = dbt_stats(p);
        if (s.idle == idle && s.connecting == 0)
            return;
        dbt_sleep_ms(2);
    } while (dbt_now_ms() < until);
    fail_msg("after 5 s: %d idle, %d connecting; expected %d idle", s.idle, s.connecting, idle);
}

/* Idle connections go at once, min_size is refilled with new ones at
 * once (no maintenance pass comes), and the log and the metrics say so. */
static void test_idle_closed_and_refilled(void **state) {
    (void)state;
    dbpool *p = open_pool(3, 6, false);
    wait_idle(p, 3);
    int newest = 0;
    dbpool_conn *c[3];
    for (int i = 0; i < 3; i++) {
        c[i] = dbt_acquire(p);
        if (dbt_conn_id(c[i]) > newest)
            newest = dbt_conn_id(c[i]);
    }
    for (int i = 0; i < 3; i++)
        assert_int_equal(dbpool_release(c[i]), DBPOOL_OK);

    assert_int_equal(dbpool_refresh(p), 3);
    assert_int_equal(refreshed(p), 3);
    pthread_mutex_lock(&line_lock);
    bool said = strstr(last_refresh_line, "refreshed: 3 idle connections closed now, 0 leased") != NULL;
    pthread_mutex_unlock(&line_lock);
    if (!said)
        fail_msg("the refresh's line: \"%s\"", last_refresh_line);
    wait_idle(p, 3);
    for (int i = 0; i < 3; i++) {
        c[i] = dbt_acquire(p);
        if (dbt_conn_id(c[i]) <= newest)
            fail_msg("connection %d, opened before the refresh (the newest then was %d), handed out after it",
                     dbt_conn_id(c[i]), newest);
    }
    for (int i = 0; i < 3; i++)
        assert_int_equal(dbpool_release(c[i]), DBPOOL_OK);

    char prom[16384];
    assert_true(dbpool_stats_prometheus(p, prom, sizeof prom) > 0);
    assert_non_null(strstr(prom, "dbpool_connections_closed_total{pool=\"default\",reason=\"refreshed\"} 3"));
    assert_string_equal(dbpool_close_reason_name(DBPOOL_CLOSE_REFRESHED), "refreshed");
    assert_int_equal(dbpool_close(p), 0);
}

/* A lease is never closed under its holder: it goes when released, and
 * the next caller gets a new connection. Through the ordinary path and
 * through the thread cache's (its connection parked for this thread and
 * taken again without the lock). */
static void lease_survives_then_goes(bool thread_cache) {
    dbpool *p = open_pool(0, 2, thread_cache);
    dbpool_conn *c = dbt_acquire(p);
    if (thread_cache) {
        assert_int_equal(dbpool_release(c), DBPOOL_OK); /* parked for this thread */
        c = dbt_acquire(p);                             /* and taken back from there */
    }
    int old = dbt_conn_id(c);
    assert_int_equal(dbpool_refresh(p), 0);
    assert_int_equal(refreshed(p), 0);
    assert_int_equal(dbt_conn_id(c), old); /* still the holder's (no statement: its release needs no reset) */
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(refreshed(p), 1);
    c = dbt_acquire(p);
    assert_int_not_equal(dbt_conn_id(c), old);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    /* The new one is kept as usual. */
    c = dbt_acquire(p);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(refreshed(p), 1);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

static void test_lease_closed_at_release(void **state) {
    (void)state;
    lease_survives_then_goes(false);
}

static void test_thread_cache_lease_closed_at_release(void **state) {
    (void)state;
    lease_survives_then_goes(true);
}

/* One parked for this thread and free is closed at once: the thread's
 * next acquire must not find it in its cache. */
static void test_parked_connection_closed_at_once(void **state) {
    (void)state;
    dbpool *p = open_pool(0, 2, true);
    dbpool_conn *c = dbt_acquire(p);
    int old = dbt_conn_id(c);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_refresh(p), 1);
    c = dbt_acquire(p);
    assert_int_not_equal(dbt_conn_id(c), old);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_close(p), 0);
}

typedef struct acquirer {
    dbpool *p;
    int64_t timeout_ms;
    int rc;
    int id;
} acquirer;

static void *acquire_and_release(void *arg) {
    acquirer *a = arg;
    dbpool_conn *c = NULL;
    a->rc = dbpool_acquire(a->p, a->timeout_ms, &c, NULL);
    if (a->rc == DBPOOL_OK) {
        a->id = dbt_conn_id(c);
        a->rc = dbpool_release(c);
    }
    return NULL;
}

/* An acquire with timeout_ms on a thread of its own, whose connect (300
 * ms) is under way when the pool is refreshed: what it got, once done. */
static acquirer refresh_during_connect(dbpool *p, int64_t timeout_ms) {
    dbpool__mock_set_connect_delay_ms(300);
    acquirer a = {.p = p, .timeout_ms = timeout_ms};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, acquire_and_release, &a), 0);
    wait_connects(1);
    assert_int_equal(dbpool_refresh(p), 0);
    assert_true(dbt_join_within(t, 5000, NULL));
    assert_int_equal(a.rc, DBPOOL_OK);
    assert_int_equal(refreshed(p), 1);
    dbpool__mock_set_connect_delay_ms(0);
    return a;
}

/* A connection whose connect began before the refresh is not used past
 * it. Opened by a connector thread for a caller in line, it is closed when
 * done (before the caller saw it), and the caller gets the next one. */
static void test_connect_under_way_retired(void **state) {
    (void)state;
    dbpool *p = open_pool(0, 2, false);
    acquirer a = refresh_during_connect(p, 5000);
    dbpool__mock_counters mc;
    dbpool__mock_get_counters(&mc);
    assert_int_equal(mc.connects, 2);
    dbpool_conn *c = dbt_acquire(p); /* the caller's, kept */
    assert_int_equal(dbt_conn_id(c), a.id);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(refreshed(p), 1);
    assert_int_equal(dbpool_close(p), 0);
}

/* Opened by the caller itself (an acquire that does not wait makes its
 * one connect on its own thread): it is the caller's for this lease, and
 * its release closes it. */
static void test_own_connect_under_way_retired_at_release(void **state) {
    (void)state;
    dbpool *p = open_pool(0, 2, false);
    acquirer a = refresh_during_connect(p, 0);
    dbpool_conn *c = dbt_acquire(p);
    assert_int_not_equal(dbt_conn_id(c), a.id);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_close(p), 0);
}

/* The refill opened for min_size before the refresh is not handed out
 * when it is done: the first acquire after it closes it and gets a new
 * one. */
static void test_refill_under_way_not_handed_out(void **state) {
    (void)state;
    dbpool__mock_set_connect_delay_ms(300);
    dbpool_options o;
    dbt_options(&o, 1, 2);
    o.maintenance_interval_ms = 3600 * 1000;
    o.lazy_connect = true; /* not the open's warm-up: the refill's connect */
    o.thread_cache = false;
    o.log_fn = keep_refresh_line;
    dbpool *p = dbt_open_mock(&o);
    /* The first connection, opened in dbpool_open (min_size 1): closed
     * by a refresh, whose refill then opens the next. */
    wait_idle(p, 1);
    assert_int_equal(dbpool_refresh(p), 1);
    wait_connects(2);
    assert_int_equal(dbpool_refresh(p), 0); /* while the refill is under way */
    wait_idle(p, 1);
    dbpool__mock_counters before;
    dbpool__mock_get_counters(&before);
    dbpool__mock_set_connect_delay_ms(0);
    dbpool_conn *c = dbt_acquire(p);
    dbpool__mock_counters after;
    dbpool__mock_get_counters(&after);
    assert_int_equal(after.connects, before.connects + 1); /* a new one, not the refill's */
    assert_int_equal(refreshed(p), 2);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_close(p), 0);
}

/* A caller in line when a retired lease comes back gets a new connection. */
static void test_waiter_served_by_new_connection(void **state) {
    (void)state;
    dbpool *p = open_pool(0, 1, false);
    dbpool_conn *held = dbt_acquire(p);
    int old = dbt_conn_id(held);
    acquirer a = {.p = p, .timeout_ms = 5000};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, acquire_and_release, &a), 0);
    dbt_wait_for_waiters(p, 1, 5000);
    assert_int_equal(dbpool_refresh(p), 0);
    assert_int_equal(dbpool_release(held), DBPOOL_OK);
    assert_true(dbt_join_within(t, 5000, NULL));
    assert_int_equal(a.rc, DBPOOL_OK);
    assert_int_not_equal(a.id, old);
    assert_int_equal(refreshed(p), 1);
    assert_int_equal(dbpool_close(p), 0);
}

/* A release resetting its session when the refresh comes (here: held in
 * after_connect, which a reset that cleared the session runs again): the
 * connection is closed once the reset is done, not put back. */
static atomic_bool hold_reset;
static atomic_bool in_reset;

static int hold_while_asked(void *native, void *user) {
    (void)native, (void)user;
    int64_t until = dbt_now_ms() + 10000;
    while (atomic_load(&hold_reset) && dbt_now_ms() < until) {
        atomic_store(&in_reset, true);
        dbt_sleep_ms(1);
    }
    return 0;
}

static void *release_on_thread(void *arg) { return (void *)(intptr_t)dbpool_release(arg); }

static void test_connection_in_reset_retired(void **state) {
    (void)state;
    dbpool__mock_set_reset_clears_session(true);
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.maintenance_interval_ms = 3600 * 1000;
    o.lazy_connect = true;
    o.thread_cache = false;
    o.after_connect = hold_while_asked;
    dbpool *p = dbt_open_mock(&o);
    dbpool_conn *c = dbt_acquire(p);
    int old = dbt_conn_id(c);
    dbt_exec_ok(c, "BEGIN", NULL, 0); /* its release must reset it */
    atomic_store(&in_reset, false);
    atomic_store(&hold_reset, true);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, release_on_thread, c), 0);
    int64_t until = dbt_now_ms() + 5000;
    while (!atomic_load(&in_reset) && dbt_now_ms() < until)
        dbt_sleep_ms(1);
    assert_true(atomic_load(&in_reset));
    assert_int_equal(dbpool_refresh(p), 0);
    atomic_store(&hold_reset, false);
    void *rc;
    assert_true(dbt_join_within(t, 5000, &rc));
    assert_int_equal((int)(intptr_t)rc, DBPOOL_OK);
    assert_int_equal(refreshed(p), 1);
    c = dbt_acquire(p);
    assert_int_not_equal(dbt_conn_id(c), old);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_close(p), 0);
}

/* Under load, with the thread caches on and a maintenance pass every
 * 2 ms: no acquire that begins after a refresh has returned gets a
 * connection whose connect began before that refresh, whichever way the
 * connection went meanwhile (a cache, the idle list, a reset, a connect
 * under way). Bounded: 1.5 s. */
#define LOAD_WORKERS 4
static atomic_long refreshed_below; /* attempts at most this began before a finished refresh */
static atomic_long stale_handouts;
static atomic_bool load_stop;

static void *load_worker(void *arg) {
    dbpool *p = arg;
    for (unsigned i = 1; !atomic_load(&load_stop); i++) {
        long before = atomic_load(&refreshed_below);
        dbpool_conn *c = NULL;
        if (dbpool_acquire(p, 2000, &c, NULL) != DBPOOL_OK)
            continue;
        if (dbpool__mock_conn_attempt(dbpool_conn_native(c)) <= before)
            atomic_fetch_add(&stale_handouts, 1);
        if (i % 7 == 0)
            dbpool_exec(c, "BEGIN", NULL, 0, NULL, NULL); /* its release resets it */
        if (i % 31 == 0)
            dbpool_discard(c);
        else
            dbpool_release(c);
    }
    return NULL;
}

static void test_refresh_under_load(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 2, 4);
    o.maintenance_interval_ms = 2;
    o.validation = DBPOOL_VALIDATE_NEVER;
    dbpool *p = dbt_open_mock(&o);
    atomic_store(&refreshed_below, 0);
    atomic_store(&stale_handouts, 0);
    atomic_store(&load_stop, false);
    pthread_t t[LOAD_WORKERS];
    for (int i = 0; i < LOAD_WORKERS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, load_worker, p), 0);
    long refreshes = 0;
    for (int64_t end = dbt_now_ms() + 1500; dbt_now_ms() < end; refreshes++) {
        dbpool__mock_counters mc;
        dbpool__mock_get_counters(&mc);
        assert_true(dbpool_refresh(p) >= 0);
        atomic_store(&refreshed_below, mc.connects);
        dbt_sleep_ms(1 + refreshes % 3);
    }
    atomic_store(&load_stop, true);
    for (int i = 0; i < LOAD_WORKERS; i++)
        assert_true(dbt_join_within(t[i], 10000, NULL));
    dbpool_stats s = dbt_stats(p);
    print_message("%ld refreshes, %llu acquires, %llu closed as refreshed, %ld stale hand-outs\n", refreshes,
                  (unsigned long long)s.acquired, (unsigned long long)s.destroyed_by[DBPOOL_CLOSE_REFRESHED],
                  atomic_load(&stale_handouts));
    assert_int_equal(atomic_load(&stale_handouts), 0);
    assert_true(refreshes > 100 && s.acquired > 1000 && s.destroyed_by[DBPOOL_CLOSE_REFRESHED] > 100);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

static void test_refresh_misuse(void **state) {
    (void)state;
    assert_int_equal(dbpool_refresh(NULL), DBPOOL_EINVAL);
    dbpool *p = open_pool(0, 1, false);
    dbpool_conn *c = dbt_acquire(p);
    assert_int_equal(dbpool_close(p), 1); /* one lease out: kept until it comes back */
    assert_int_equal(dbpool_refresh(p), DBPOOL_ECLOSED);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_idle_closed_and_refilled, dbt_mock_setup),
        cmocka_unit_test_setup(test_lease_closed_at_release, dbt_mock_setup),
        cmocka_unit_test_setup(test_thread_cache_lease_closed_at_release, dbt_mock_setup),
        cmocka_unit_test_setup(test_parked_connection_closed_at_once, dbt_mock_setup),
        cmocka_unit_test_setup(test_connect_under_way_retired, dbt_mock_setup),
        cmocka_unit_test_setup(test_own_connect_under_way_retired_at_release, dbt_mock_setup),
        cmocka_unit_test_setup(test_refill_under_way_not_handed_out, dbt_mock_setup),
        cmocka_unit_test_setup(test_waiter_served_by_new_connection, dbt_mock_setup),
        cmocka_unit_test_setup(test_connection_in_reset_retired, dbt_mock_setup),
        cmocka_unit_test_setup(test_refresh_under_load, dbt_mock_setup),
        cmocka_unit_test_setup(test_refresh_misuse, dbt_mock_setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
