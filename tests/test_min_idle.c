/* min_idle: spare connections kept ready for any caller. A lease that
 * takes one has another opened at once, in the background, up to the cap;
 * idle timeout leaves that many; nothing is opened while suspended; a
 * database that refuses connects gets no storm of them. Mock backend. */
#include "driver_mock.h"
#include "testsupport.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

/* A pool whose maintenance thread never runs a pass by itself within a
 * test: whatever opens the spares, it is not a pass. */
static void spare_options(dbpool_options *o, int min_idle, int max) {
    dbt_options(o, 0, max);
    o->min_idle = min_idle;
    o->maintenance_interval_ms = 3600 * 1000;
    o->thread_cache = false; /* every lease through the idle list */
    o->validation = DBPOOL_VALIDATE_NEVER;
}

/* Settled within 5 s: the spares open in the background. */
static void wait_settled(dbpool *p, int idle, int total) { dbt_wait_settled(p, idle, total, 5000); }

/* dbpool_open waits for its first connection only; the spares are asked
 * for before it returns and open in the background. */
static void test_open_asks_for_spares(void **state) {
    (void)state;
    dbpool_options o;
    spare_options(&o, 3, 10);
    dbpool__mock_set_connect_delay_ms(100);
    dbpool *p = dbt_open_mock(&o);
    dbpool_stats s = dbt_stats(p);
    assert_int_equal(s.min_idle, 3);
    assert_int_equal(s.idle + s.connecting, 3); /* one open, two asked for (max_connecting 2) */
    assert_int_equal(s.connecting, 2);
    wait_settled(p, 3, 3);
    assert_int_equal(dbt_stats(p).created, 3);
    dbpool_close(p);
}

/* Each lease that takes a spare has another asked for at once (not at the
 * next pass, an hour away here): the callers after it find one open. */
static void test_lease_replaces_its_spare(void **state) {
    (void)state;
    dbpool_options o;
    spare_options(&o, 2, 10);
    dbpool *p = dbt_open_mock(&o);
    wait_settled(p, 2, 2);
    dbpool__mock_set_connect_delay_ms(50);
    dbpool_conn *a = dbt_acquire(p);
    dbpool_stats s = dbt_stats(p);
    assert_int_equal(s.in_use, 1);
    assert_int_equal(s.idle, 1);
    assert_int_equal(s.connecting, 1); /* asked for by the acquire, before it returned */
    wait_settled(p, 2, 3);
    dbpool_conn *b = dbt_acquire(p);
    dbpool_conn *c = dbt_acquire(p);
    wait_settled(p, 2, 5);
    assert_int_equal(dbt_stats(p).acquired, 3);
    /* Back from their leases they are spares too: nothing more opens,
     * nothing closes (idle timeout is 10 minutes). */
    dbpool_release(a);
    dbpool_release(b);
    dbpool_release(c);
    wait_settled(p, 5, 5);
    assert_int_equal(dbt_stats(p).created, 5);
    assert_int_equal(dbt_stats(p).destroyed, 0);
    dbpool_close(p);
}

/* Never past the cap: with max_size 4 and three leases out, one spare. */
static void test_spares_stop_at_the_cap(void **state) {
    (void)state;
    dbpool_options o;
    spare_options(&o, 3, 4);
    dbpool *p = dbt_open_mock(&o);
    wait_settled(p, 3, 3);
    dbpool_conn *c[4];
    for (int i = 0; i < 3; i++)
        c[i] = dbt_acquire(p);
    wait_settled(p, 1, 4);
    c[3] = dbt_acquire(p); /* the last spare, at the cap: none asked for */
    dbpool_stats s = dbt_stats(p);
    assert_int_equal(s.connecting, 0);
    assert_int_equal(s.total, 4);
    for (int i = 0; i < 4; i++)
        dbpool_release(c[i]);
    wait_settled(p, 4, 4);
    assert_int_equal(dbt_stats(p).created, 4);
    dbpool_close(p);
}

/* Idle timeout closes the spares past min_idle, least recently used
 * first, and leaves min_idle of them: none is closed only to be opened
 * again. */
static void test_idle_timeout_leaves_spares(void **state) {
    (void)state;
    dbpool_options o;
    spare_options(&o, 2, 10);
    o.idle_timeout_ms = 50;
    o.maintenance_interval_ms = 20;
    dbpool *p = dbt_open_mock(&o);
    wait_settled(p, 2, 2);
    dbpool_conn *c[5];
    for (int i = 0; i < 5; i++)
        c[i] = dbt_acquire(p);
    wait_settled(p, 2, 7);
    for (int i = 0; i < 5; i++)
        dbpool_release(c[i]);
    wait_settled(p, 2, 2);
    dbpool_stats s = dbt_stats(p);
    assert_true(s.destroyed_by[DBPOOL_CLOSE_IDLE_TIMEOUT] >= 5);
    assert_int_equal(s.created - s.destroyed, 2);
    /* Many idle timeouts later (20 passes), the two are the same two. */
    dbt_sleep_ms(400);
    dbpool_stats later = dbt_stats(p);
    assert_int_equal(later.idle, 2);
    assert_int_equal(later.created, s.created);
    assert_int_equal(later.destroyed, s.destroyed);
    dbpool_close(p);
}

/* Suspended, no new session is opened, spares included; dbpool_resume
 * asks for them at once. */
static void test_no_spares_while_suspended(void **state) {
    (void)state;
    dbpool_options o;
    spare_options(&o, 2, 10);
    dbpool *p = dbt_open_mock(&o);
    wait_settled(p, 2, 2);
    assert_int_equal(dbpool_suspend(p), DBPOOL_OK);
    assert_int_equal(dbpool_shrink(p, 0), 2); /* a switchover empties the pool */
    wait_settled(p, 0, 0);
    dbt_sleep_ms(100);
    assert_int_equal(dbt_stats(p).total, 0);
    assert_int_equal(dbpool_resume(p), DBPOOL_OK);
    wait_settled(p, 2, 2);
    dbpool_close(p);
}

/* A database that refuses every connect: each lease taken asks for a
 * spare, but the failures open the breaker, and no more connects are made
 * than it lets through. */
static void test_refused_connects_no_storm(void **state) {
    (void)state;
    dbpool_options o;
    spare_options(&o, 1, 10);
    o.max_retries = 0;
    o.breaker_failures = 3;
    o.breaker_cooldown_ms = 3600 * 1000;
    dbpool *p = dbt_open_mock(&o);
    wait_settled(p, 1, 1);
    dbpool__mock_counters before, after;
    dbpool__mock_get_counters(&before);
    dbpool__mock_fail_connect(before.connects + 1, -1, DBPOOL_ECONNECT);
    /* Leases, each asking for a spare, until the failures open the breaker. */
    int64_t until = dbt_now_ms() + 5000;
    while (dbt_stats(p).breaker != DBPOOL_BREAKER_OPEN) {
        if (dbt_now_ms() > until)
            fail_msg("the breaker did not open within 5 s of failed connects");
        dbpool_release(dbt_acquire(p));
    }
    wait_settled(p, 1, 1);
    dbpool__mock_get_counters(&after);
    /* The three that opened it, and at most the connects already under way. */
    assert_true(after.connects - before.connects >= 3);
    assert_true(after.connects - before.connects <= 3 + o.max_connecting);
    /* Open, it lets none through: the leases go on, the connects do not. */
    for (int i = 0; i < 1000; i++)
        dbpool_release(dbt_acquire(p));
    dbt_sleep_ms(100);
    dbpool__mock_counters last;
    dbpool__mock_get_counters(&last);
    assert_int_equal(last.connects, after.connects);
    assert_int_equal(dbt_stats(p).total, 1);
    dbpool_close(p);
}

static void *acquire_main(void *arg) {
    dbpool *p = arg;
    dbpool_conn *c = NULL;
    dbpool_error e;
    int rc = dbpool_acquire(p, 5000, &c, &e);
    return rc == DBPOOL_OK ? c : NULL;
}

/* Callers in line come first: the connections opened while they wait are
 * theirs, and the spare comes after. */
static void test_callers_in_line_before_spares(void **state) {
    (void)state;
    dbpool_options o;
    spare_options(&o, 1, 10);
    dbpool *p = dbt_open_mock(&o);
    wait_settled(p, 1, 1);
    dbpool_conn *held = dbt_acquire(p); /* the spare: another is asked for */
    dbpool__mock_set_connect_delay_ms(100);
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&t[i], NULL, acquire_main, p), 0);
    dbpool_conn *c[3];
    for (int i = 0; i < 3; i++) {
        void *ret = NULL;
        assert_true(dbt_join_within(t[i], 10000, &ret));
        c[i] = ret;
        assert_non_null(c[i]);
    }
    wait_settled(p, 1, 5);
    assert_int_equal(dbt_stats(p).timeouts, 0);
    for (int i = 0; i < 3; i++)
        dbpool_release(c[i]);
    dbpool_release(held);
    wait_settled(p, 5, 5);
    dbpool_close(p);
}

static void expect_invalid(const dbpool_options *o, const char *url, const char *what) {
    dbpool *p = NULL;
    dbpool_error e;
    assert_int_equal(dbpool_open(&p, url, o, &e), DBPOOL_EINVAL);
    assert_null(p);
    if (!strstr(e.message, what))
        fail_msg("message \"%s\" does not say \"%s\"", e.message, what);
}

static void test_options_checked(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 10);
    o.min_idle = -1;
    expect_invalid(&o, "mock:", "min_idle must be 0 (none) or more (got -1)");
    o.min_idle = 11;
    expect_invalid(&o, "mock:", "min_idle (11) must not exceed max_size (10)");
    o.min_idle = 2;
    o.maintenance_interval_ms = 0;
    expect_invalid(&o, "mock:", "min_idle runs in the maintenance thread");
    dbt_options(&o, 0, 10);
    expect_invalid(&o, "mock:?pool_min_idle=two", "URL key pool_min_idle: 'two' is not a whole number");
    expect_invalid(&o, "mock:?pool_min_idle=11", "min_idle (11) must not exceed max_size (10)");

    /* The URL's key sets it, as the deployment's configuration. */
    o.maintenance_interval_ms = 3600 * 1000;
    dbpool *p = NULL;
    dbpool_error e;
    assert_int_equal(dbpool_open(&p, "mock:?pool_min_idle=3", &o, &e), DBPOOL_OK);
    assert_int_equal(dbt_stats(p).min_idle, 3);
    wait_settled(p, 3, 3);
    char json[8192];
    assert_true(dbpool_stats_json(p, json, sizeof json) > 0);
    assert_non_null(strstr(json, "\"min_idle\":3"));
    dbpool_close(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_open_asks_for_spares, dbt_mock_setup),
        cmocka_unit_test_setup(test_lease_replaces_its_spare, dbt_mock_setup),
        cmocka_unit_test_setup(test_spares_stop_at_the_cap, dbt_mock_setup),
        cmocka_unit_test_setup(test_idle_timeout_leaves_spares, dbt_mock_setup),
        cmocka_unit_test_setup(test_no_spares_while_suspended, dbt_mock_setup),
        cmocka_unit_test_setup(test_refused_connects_no_storm, dbt_mock_setup),
        cmocka_unit_test_setup(test_callers_in_line_before_spares, dbt_mock_setup),
        cmocka_unit_test_setup(test_options_checked, dbt_mock_setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
