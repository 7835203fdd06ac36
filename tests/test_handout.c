/* Hand-outs to waiters (src/acquire.c, src/pool.c) in the orders that are
 * hard to reach by chance: a connection handed to a waiter while that
 * waiter is still busy with the previous one, which failed its checks.
 * Mock backend. */
#include "driver_mock.h"
#include "testsupport.h"

#include <pthread.h>
#include <stdatomic.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

/* A rendezvous between the log callback, on the waiter's thread, and the
 * test's main thread. */
typedef struct cue {
    pthread_mutex_t m;
    pthread_cond_t cv;
    int stage; /* 1: the validation failure was logged; 2: main acted */
} cue;

static cue g_cue = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};

static bool cue_wait(int stage, int64_t ms) {
    int64_t until = dbt_now_ms() + ms;
    pthread_mutex_lock(&g_cue.m);
    while (g_cue.stage < stage && dbt_now_ms() < until) {
        pthread_mutex_unlock(&g_cue.m);
        dbt_sleep_ms(1);
        pthread_mutex_lock(&g_cue.m);
    }
    bool ok = g_cue.stage >= stage;
    pthread_mutex_unlock(&g_cue.m);
    return ok;
}

static void cue_set(int stage) {
    pthread_mutex_lock(&g_cue.m);
    g_cue.stage = stage;
    pthread_cond_broadcast(&g_cue.cv);
    pthread_mutex_unlock(&g_cue.m);
}

/* On the waiter's thread, between putting the waiter back in line and
 * closing the connection that failed validation: let main release another
 * connection now (it is handed to the waiter, first in line). */
static void on_log(void *user, dbpool_log_level level, const char *line) {
    (void)user, (void)level;
    if (strstr(line, "failed validation")) {
        dbpool__mock_set_ping_delay_ms(0);
        cue_set(1);
        cue_wait(2, 5000);
    }
}

typedef struct waiter_arg {
    dbpool *p;
    int64_t timeout_ms;
    int rc;
    dbpool_conn *c;
    char message[512];
} waiter_arg;

static void *waiter_thread(void *arg) {
    waiter_arg *a = arg;
    dbpool_error e;
    a->rc = dbpool_acquire(a->p, a->timeout_ms, &a->c, &e);
    if (a->rc != DBPOOL_OK)
        snprintf(a->message, sizeof a->message, "%s", e.message);
    return NULL;
}

static dbpool *open_strict_validating(int max_size) {
    g_cue.stage = 0;
    dbpool_options o;
    dbt_options(&o, 0, max_size);
    o.thread_cache = false;
    o.barging_window_us = 0; /* strict hand-off: a release goes to the first waiter */
    o.validation = DBPOOL_VALIDATE_IF_IDLE;
    o.validation_window_ms = 0; /* every hand-out is validated */
    o.log_fn = on_log;
    o.log_level = DBPOOL_LOG_WARN;
    return dbt_open_lazy_mock(&o);
}

/* A waiter (300 ms) is handed a, whose check outlasts its deadline and
 * fails; while a is being closed, b is released and handed to the waiter
 * (first in line again, at its old place), then `then` (if any) is
 * released, to the idle list. The waiter's acquire is over on return. */
static void fail_a_then_hand_b(dbpool *p, dbpool_conn *a, dbpool_conn *b, dbpool_conn *then, waiter_arg *w) {
    *w = (waiter_arg){.p = p, .timeout_ms = 300};
    pthread_t t;
    pthread_create(&t, NULL, waiter_thread, w);
    dbt_wait_for_waiters(p, 1, 5000);
    dbpool__mock_counters mc;
    dbpool__mock_get_counters(&mc);
    dbpool__mock_fail_ping(mc.pings + 1, 1);
    dbpool__mock_set_ping_delay_ms(500);
    dbpool_release(a);
    bool cued = cue_wait(1, 5000);
    dbpool_release(b); /* handed to the waiter, back in line */
    if (then) {
        dbt_sleep_ms(2); /* a later last use than b's, on any clock */
        dbpool_release(then);
    }
    cue_set(2);
    pthread_join(t, NULL);
    assert_true(cued);
}

/* A waiter is handed connection A, which fails validation after the
 * waiter's deadline; while A is being closed, B is released and handed to
 * the waiter. The acquire ends in a timeout (the deadline has passed), but
 * B must not be lost with it: it goes back to the pool, and the pool's
 * counts still add up. */
static void test_handoff_during_failed_check_past_deadline(void **state) {
    (void)state;
    dbpool *p = open_strict_validating(2);
    dbpool_error e;
    dbpool_conn *a = dbt_acquire(p);
    dbpool_conn *b = dbt_acquire(p);
    waiter_arg w;
    fail_a_then_hand_b(p, a, b, NULL, &w);

    assert_int_equal(w.rc, DBPOOL_ETIMEDOUT);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.in_use, 0); /* B is nobody's lease */
    assert_int_equal(s.idle, 1);
    assert_int_equal(s.total, 1);
    assert_true(dbt_invariant_holds(p));
    dbpool_conn *c = NULL;
    assert_int_equal(dbpool_try_acquire(p, &c, &e), DBPOOL_OK);
    dbpool_release(c);
    assert_int_equal(dbpool_close(p), 0);
    assert_int_equal(dbt_mock_live(), 0);
}

/* The same, with C released to the idle list after B was handed over: B,
 * given back when the waiter's acquire times out, was last used before C
 * and must take its place behind it. It went to the head of the idle
 * list, so the next acquire got B, not the most recently used C, and a
 * shrink closed C, not the least recently used B. */
static void test_handoff_given_back_keeps_last_used_order(void **state) {
    (void)state;
    dbpool *p = open_strict_validating(3);
    dbpool_conn *a = dbt_acquire(p);
    dbpool_conn *b = dbt_acquire(p);
    dbpool_conn *c = dbt_acquire(p);
    int b_id = dbt_conn_id(b);
    int c_id = dbt_conn_id(c);
    waiter_arg w;
    fail_a_then_hand_b(p, a, b, c, &w);
    assert_int_equal(w.rc, DBPOOL_ETIMEDOUT);

    dbpool_conn *next = NULL;
    dbpool_error e;
    assert_int_equal(dbpool_try_acquire(p, &next, &e), DBPOOL_OK);
    int next_id = dbt_conn_id(next);
    dbpool_release(next); /* the most recently used again */
    assert_int_equal(dbpool_shrink(p, 1), 1);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.idle, 1);
    assert_int_equal(dbpool_try_acquire(p, &next, &e), DBPOOL_OK);
    int kept_id = dbt_conn_id(next);
    dbpool_release(next);
    assert_int_equal(dbpool_close(p), 0);
    if (next_id != c_id)
        fail_msg("the next acquire got connection %d (b), not %d (c, used last)", next_id, c_id);
    if (kept_id != c_id)
        fail_msg("shrink kept connection %d, not %d (c): it closed the more recently used (b was %d)",
                 kept_id, c_id, b_id);
}

/* The same hand-off, then the pool is suspended (suspend_fails_fast)
 * before the waiter looks again: the hand-off came first and counts; the
 * waiter leaves with B instead of DBPOOL_EBUSY and a lost connection. */
static void test_handoff_during_failed_check_then_suspend(void **state) {
    (void)state;
    g_cue.stage = 0;
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.thread_cache = false;
    o.barging_window_us = 0;
    o.validation = DBPOOL_VALIDATE_IF_IDLE;
    o.validation_window_ms = 0;
    o.suspend_fails_fast = true;
    o.log_fn = on_log;
    o.log_level = DBPOOL_LOG_WARN;
    dbpool *p = dbt_open_lazy_mock(&o);
    dbpool_conn *a = dbt_acquire(p);
    dbpool_conn *b = dbt_acquire(p);
    int b_id = dbt_conn_id(b);

    waiter_arg w = {.p = p, .timeout_ms = 5000};
    pthread_t t;
    pthread_create(&t, NULL, waiter_thread, &w);
    dbt_wait_for_waiters(p, 1, 5000);
    dbpool__mock_counters mc;
    dbpool__mock_get_counters(&mc);
    dbpool__mock_fail_ping(mc.pings + 1, 1);
    dbpool_release(a);
    assert_true(cue_wait(1, 5000));
    dbpool_release(b); /* handed to the waiter */
    assert_int_equal(dbpool_suspend(p), DBPOOL_OK);
    cue_set(2);
    pthread_join(t, NULL);

    if (w.rc != DBPOOL_OK)
        fail_msg("acquire: %s", w.message);
    assert_int_equal(dbt_conn_id(w.c), b_id);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.in_use, 1);
    assert_true(dbt_invariant_holds(p));
    dbpool_release(w.c);
    dbpool_get_stats(p, &s);
    assert_int_equal(s.in_use, 0);
    assert_int_equal(s.idle, 1);
    assert_int_equal(dbpool_close(p), 0);
    dbpool__mock_get_counters(&mc);
    assert_int_equal(mc.live, 0);
}

/* try_acquire finds the pool's only connection in a keepalive ping: it is
 * idle (dbpool_get_stats says so), held by maintenance for a moment, and
 * the DBPOOL_EBUSY message must say that, not that a caller holds it. */
static void test_try_acquire_busy_message_counts_a_ping_apart(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 1, 1);
    o.validation = DBPOOL_VALIDATE_NEVER;
    o.maintenance_interval_ms = 5;
    o.keepalive_ms = 10;
    dbpool__mock_set_ping_delay_ms(2000); /* before the first ping */
    dbpool *p = NULL;
    dbpool_error e;
    if (dbpool_open(&p, "mock:", &o, &e) != DBPOOL_OK)
        fail_msg("open: %s", e.message);
    dbpool__mock_counters mc;
    int64_t until = dbt_now_ms() + 5000;
    do {
        dbt_sleep_ms(2);
        dbpool__mock_get_counters(&mc);
    } while (mc.pings == 0 && dbt_now_ms() < until);
    assert_true(mc.pings > 0); /* the ping is under way for two seconds */
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.in_use, 0);
    assert_int_equal(s.idle, 1);
    dbpool_conn *c = NULL;
    assert_int_equal(dbpool_try_acquire(p, &c, &e), DBPOOL_EBUSY);
    if (!strstr(e.message, "(0 in use, max 1; 1 in a keepalive ping)"))
        fail_msg("message: %s", e.message);
    dbpool__mock_set_ping_delay_ms(0);
    assert_int_equal(dbpool_close(p), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_handoff_during_failed_check_past_deadline, dbt_mock_setup),
        cmocka_unit_test_setup(test_handoff_during_failed_check_then_suspend, dbt_mock_setup),
        cmocka_unit_test_setup(test_handoff_given_back_keeps_last_used_order, dbt_mock_setup),
        cmocka_unit_test_setup(test_try_acquire_busy_message_counts_a_ping_apart, dbt_mock_setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
