/* Sizing at run time: resize, suspend/resume and the utilisation-driven
 * autoscale cap. Mock backend. */
#include "driver_mock.h"
#include "testsupport.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

static dbpool *open_pool(int min, int max, void (*tweak)(dbpool_options *)) {
    dbpool_options o;
    dbt_options(&o, min, max);
    o.maintenance_interval_ms = 0;
    if (tweak)
        tweak(&o);
    dbpool *p = NULL;
    dbpool_error e;
    if (dbpool_open(&p, "mock:", &o, &e) != DBPOOL_OK)
        fail_msg("open: %s", e.message);
    return p;
}

static void test_resize_down_and_up(void **state) {
    (void)state;
    dbpool *p = open_pool(0, 6, NULL);
    dbpool_conn *c[6];
    for (int i = 0; i < 6; i++)
        assert_int_equal(dbpool_acquire(p, 1000, &c[i], NULL), DBPOOL_OK);
    for (int i = 0; i < 3; i++)
        dbpool_release(c[i]);
    dbpool_error e;
    assert_int_equal(dbpool_resize(p, 0, 2, &e), DBPOOL_OK);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.idle, 0); /* idle ones above the new max closed now */
    assert_int_equal(s.in_use, 3);
    assert_int_equal(s.max_size, 2);
    /* Leased ones above it are closed as they come back. */
    dbpool_release(c[3]);
    dbpool_get_stats(p, &s);
    assert_int_equal(s.total, 2);
    assert_int_equal(s.idle, 0);
    dbpool_release(c[4]);
    dbpool_release(c[5]);
    dbpool_get_stats(p, &s);
    assert_int_equal(s.total, 2);
    assert_int_equal(s.idle, 2);
    assert_true(s.destroyed_by[DBPOOL_CLOSE_SHRINK] >= 4);
    /* Bad sizes are refused and change nothing. */
    assert_int_equal(dbpool_resize(p, 3, 2, &e), DBPOOL_EINVAL);
    assert_non_null(strstr(e.message, "min_size"));
    assert_int_equal(dbpool_resize(p, 0, 0, &e), DBPOOL_EINVAL);
    assert_int_equal(dbpool_resize(p, 1, 8, &e), DBPOOL_OK);
    dbpool_conn *eight[8];
    for (int i = 0; i < 8; i++)
        assert_int_equal(dbpool_acquire(p, 1000, &eight[i], NULL), DBPOOL_OK);
    dbpool_get_stats(p, &s);
    assert_int_equal(s.max_size, 8);
    assert_int_equal(s.in_use, 8);
    for (int i = 0; i < 8; i++)
        dbpool_release(eight[i]);
    assert_true(dbt_invariant_holds(p));
    dbpool_close(p);
}

static void fail_fast_off(dbpool_options *o) { o->suspend_fails_fast = false; }

typedef struct waiter_arg {
    dbpool *p;
    int rc;
    int64_t waited_ms;
} waiter_arg;

static void *acquire_and_release(void *arg) {
    waiter_arg *w = arg;
    dbpool_conn *c = NULL;
    int64_t t0 = dbt_now_ms();
    w->rc = dbpool_acquire(w->p, 3000, &c, NULL);
    w->waited_ms = dbt_now_ms() - t0;
    if (w->rc == DBPOOL_OK)
        dbpool_release(c);
    return NULL;
}

/* A caller in line: a thread in acquire_and_release on p, started and
 * seen waiting. */
static pthread_t start_waiter(waiter_arg *w, dbpool *p) {
    *w = (waiter_arg){p, -100, 0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, acquire_and_release, w), 0);
    dbt_wait_for_waiters(p, 1, 2000);
    return t;
}

/* A larger min_size is filled by a maintenance pass at once, not at the
 * end of the interval. */
static void test_resize_fills_new_min_at_once(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 8);
    o.lazy_connect = true;
    o.maintenance_interval_ms = 5000;
    dbpool *p = NULL;
    dbpool_error e;
    if (dbpool_open(&p, "mock:", &o, &e) != DBPOOL_OK)
        fail_msg("open: %s", e.message);
    dbt_sleep_ms(50);
    assert_int_equal(dbpool_resize(p, 4, 8, &e), DBPOOL_OK);
    int64_t t0 = dbt_now_ms();
    dbpool_stats s;
    do {
        dbt_sleep_ms(5);
        dbpool_get_stats(p, &s);
    } while (s.total < 4 && dbt_now_ms() - t0 < 3000);
    if (s.total < 4)
        fail_msg("min_size 4 not reached within 3 s of dbpool_resize (maintenance interval 5 s): total %d",
                 s.total);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_suspend_resume(void **state) {
    (void)state;
    dbpool *p = open_pool(1, 2, NULL);
    dbpool_conn *c;
    assert_int_equal(dbpool_suspend(p), DBPOOL_OK);
    dbpool_error e;
    assert_int_equal(dbpool_acquire(p, 1000, &c, &e), DBPOOL_EBUSY);
    assert_non_null(strstr(e.message, "suspended"));
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_true(s.suspended);
    assert_int_equal(dbpool_resume(p), DBPOOL_OK);
    assert_int_equal(dbpool_acquire(p, 1000, &c, &e), DBPOOL_OK);
    dbpool_release(c);
    dbpool_close(p);

    /* Blocking mode: callers wait until resume. */
    p = open_pool(1, 2, fail_fast_off);
    dbpool_suspend(p);
    waiter_arg w;
    pthread_t t = start_waiter(&w, p);
    dbt_sleep_ms(100);
    dbpool_resume(p);
    pthread_join(t, NULL);
    assert_int_equal(w.rc, DBPOOL_OK);
    assert_true(w.waited_ms >= 100);
    dbpool_close(p);
}

/* include/dbpool.h: while suspended "no connection is opened
 * (maintenance refills min_size after the resume)". No test covered the
 * refill: with the suspended checks dropped from both the refill request
 * and the connector thread in src/create.c (mutation by hand), the sizing
 * tests passed (test_connector_pickup notices the connector's alone, for
 * callers in line; the refill's alone is held off by it). A lease's
 * leak report marks a maintenance pass that ran after the loss: the pass
 * scans for leaks and asks for its refill under one hold of the lock, so
 * a refill asked for by then shows in total (a connect under way counts). */
static void suspend_refill_opts(dbpool_options *o) {
    o->maintenance_interval_ms = 10;
    o->leak_threshold_ms = 100;
}

static void test_no_refill_while_suspended(void **state) {
    (void)state;
    dbpool *p = open_pool(2, 3, suspend_refill_opts);
    dbpool_conn *a = NULL, *b = NULL;
    assert_int_equal(dbpool_acquire(p, 1000, &a, NULL), DBPOOL_OK);
    assert_int_equal(dbpool_acquire(p, 1000, &b, NULL), DBPOOL_OK);
    assert_int_equal(dbpool_suspend(p), DBPOOL_OK);
    assert_int_equal(dbpool_discard(a), DBPOOL_OK); /* below min_size now */
    dbpool_stats s;
    int64_t until = dbt_now_ms() + 10000;
    for (dbpool_get_stats(p, &s); s.leaks_detected == 0; dbpool_get_stats(p, &s)) {
        if (dbt_now_ms() > until)
            fail_msg("no maintenance pass reported the held lease within 10 s");
        dbt_sleep_ms(5);
    }
    assert_int_equal(s.total, 1);
    assert_int_equal(s.created, 2);
    assert_int_equal(dbpool_resume(p), DBPOOL_OK);
    until = dbt_now_ms() + 10000;
    for (dbpool_get_stats(p, &s); s.total < 2 || s.connecting > 0; dbpool_get_stats(p, &s)) {
        if (dbt_now_ms() > until)
            fail_msg("min_size not refilled within 10 s of the resume (total %d)", s.total);
        dbt_sleep_ms(5);
    }
    assert_int_equal(s.created, 3);
    assert_int_equal(dbpool_release(b), DBPOOL_OK);
    assert_int_equal(dbpool_close(p), 0);
}

/* Callers already waiting when the pool is suspended (fail-fast, the
 * default) get DBPOOL_EBUSY then, as a caller arriving after it does, not
 * a timeout at the end of their wait. */
static void test_suspend_fails_waiters_in_line(void **state) {
    (void)state;
    dbpool *p = open_pool(1, 1, NULL);
    dbpool_conn *held;
    assert_int_equal(dbpool_acquire(p, 1000, &held, NULL), DBPOOL_OK);
    waiter_arg w[2] = {{p, -100, 0}, {p, -100, 0}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, acquire_and_release, &w[i]);
    dbt_wait_for_waiters(p, 2, 2000);
    assert_int_equal(dbpool_suspend(p), DBPOOL_OK);
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].rc, DBPOOL_EBUSY);
        assert_true(w[i].waited_ms < 2500); /* the acquire's timeout is 3000 ms */
    }
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.waiting, 0);
    assert_int_equal(s.timeouts, 0);
    dbpool_release(held);
    assert_int_equal(dbpool_resume(p), DBPOOL_OK);
    dbpool_close(p);
}

/* Not fail-fast: a waiter that times out while the pool is suspended is
 * told so, not only that a connection sat idle. */
static void test_timeout_while_suspended_says_so(void **state) {
    (void)state;
    dbpool *p = open_pool(1, 1, fail_fast_off);
    dbpool_suspend(p);
    dbpool_conn *c;
    dbpool_error e;
    assert_int_equal(dbpool_acquire(p, 50, &c, &e), DBPOOL_ETIMEDOUT);
    assert_non_null(strstr(e.message, "suspended"));
    dbpool_resume(p);
    dbpool_close(p);
}

static void wide_window_waits(dbpool_options *o) {
    o->suspend_fails_fast = false;
    o->barging_window_us = 3000000;
}

/* Resume hands the idle connections to those who waited, at once, even to
 * a waiter still inside its barging window. */
static void test_resume_serves_waiters_at_once(void **state) {
    (void)state;
    dbpool *p = open_pool(1, 1, wide_window_waits);
    assert_int_equal(dbpool_suspend(p), DBPOOL_OK);
    waiter_arg w;
    pthread_t t = start_waiter(&w, p);
    assert_int_equal(dbpool_resume(p), DBPOOL_OK);
    /* Handed over inside dbpool_resume: nobody in line when it returns
     * (else the waiter would sleep to its window's end, 3 s). */
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    if (s.waiting != 0)
        fail_msg("dbpool_resume returned with %d caller(s) still in line beside %d idle connection(s)",
                 s.waiting, s.idle);
    pthread_join(t, NULL);
    assert_int_equal(w.rc, DBPOOL_OK);
    dbpool_close(p);
}

static void strict_fifo_waits(dbpool_options *o) {
    o->suspend_fails_fast = false;
    o->barging_window_us = 0; /* every release handed to the first waiter */
}

/* A lease released while the pool is suspended goes to the idle list, not
 * to a caller in line, even with strict hand-off: nothing is handed out
 * until dbpool_resume (operations.md), which then serves the caller. */
static void test_release_while_suspended_hands_nothing_out(void **state) {
    (void)state;
    dbpool *p = open_pool(0, 1, strict_fifo_waits);
    dbpool_conn *held;
    assert_int_equal(dbpool_acquire(p, 1000, &held, NULL), DBPOOL_OK);
    assert_int_equal(dbpool_suspend(p), DBPOOL_OK);
    waiter_arg w;
    pthread_t t = start_waiter(&w, p);
    assert_int_equal(dbpool_release(held), DBPOOL_OK);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    if (s.waiting != 1 || s.idle != 1 || s.in_use != 0)
        fail_msg("a release while suspended was handed to the caller in line: waiting %d, idle %d, in use %d "
                 "(want 1, 1, 0)",
                 s.waiting, s.idle, s.in_use);
    assert_int_equal(dbpool_resume(p), DBPOOL_OK);
    pthread_join(t, NULL);
    assert_int_equal(w.rc, DBPOOL_OK);
    dbpool_close(p);
}

/* A lease released while the pool is suspended is not kept in the
 * releasing thread's cache (its next acquire could not take it anyway):
 * it is idle, and dbpool_resume serves the caller in line with it at
 * once, inside the caller's barging window. */
static void test_release_while_suspended_not_cached(void **state) {
    (void)state;
    dbpool *p = open_pool(0, 1, wide_window_waits);
    dbpool_conn *held;
    assert_int_equal(dbpool_acquire(p, 1000, &held, NULL), DBPOOL_OK);
    assert_int_equal(dbpool_suspend(p), DBPOOL_OK);
    assert_int_equal(dbpool_release(held), DBPOOL_OK); /* nobody in line yet */
    waiter_arg w;
    pthread_t t = start_waiter(&w, p);
    assert_int_equal(dbpool_resume(p), DBPOOL_OK);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    if (s.waiting != 0)
        fail_msg("dbpool_resume left the caller in line: the lease released while suspended was kept in "
                 "the releasing thread's cache");
    pthread_join(t, NULL);
    assert_int_equal(w.rc, DBPOOL_OK);
    dbpool_close(p);
}

/* A thread that keeps a connection in its thread cache: it takes it,
 * gives it back through the cache (no lock, nobody woken: a waiter finds
 * it at its window's end), and lives on until told to stop, so that the
 * connection stays parked in its cache. */
typedef struct cache_holder {
    dbpool *p;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stage; /* 1: holding, 2: told to release, 3: released, 4: told to stop */
} cache_holder;

static void holder_set(cache_holder *h, int stage) {
    pthread_mutex_lock(&h->mu);
    h->stage = stage;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

static void holder_await(cache_holder *h, int stage) {
    pthread_mutex_lock(&h->mu);
    while (h->stage < stage)
        pthread_cond_wait(&h->cv, &h->mu);
    pthread_mutex_unlock(&h->mu);
}

static void *hold_through_cache(void *arg) {
    cache_holder *h = arg;
    dbpool_conn *c = NULL;
    if (dbpool_acquire(h->p, 3000, &c, NULL) != DBPOOL_OK)
        return (void *)"first acquire failed";
    dbpool_release(c); /* parked in this thread's cache */
    if (dbpool_acquire(h->p, 3000, &c, NULL) != DBPOOL_OK)
        return (void *)"second acquire failed";
    holder_set(h, 1);
    holder_await(h, 2);
    dbpool_release(c);
    holder_set(h, 3);
    holder_await(h, 4);
    return NULL;
}

typedef enum { BY_SHRINK, BY_RESIZE } recall_by;

/* A connection in a thread's cache, given back while a caller waits inside
 * its (wide) barging window: a shrink or a resize that takes it back from
 * the cache hands it to that caller at once, rather than closing it
 * (shrink) or leaving it idle beside a caller asleep until its window's
 * end. */
static void recall_serves_waiter(recall_by how) {
    dbpool *p = open_pool(0, 1, wide_window_waits);
    cache_holder h = {.p = p, .stage = 0};
    pthread_mutex_init(&h.mu, NULL);
    pthread_cond_init(&h.cv, NULL);
    pthread_t ht, wt;
    assert_int_equal(pthread_create(&ht, NULL, hold_through_cache, &h), 0);
    holder_await(&h, 1);
    waiter_arg w = {p, -100, 0};
    assert_int_equal(pthread_create(&wt, NULL, acquire_and_release, &w), 0);
    dbt_wait_for_waiters(p, 1, 2000);
    holder_set(&h, 2);
    holder_await(&h, 3);
    /* Every thread is joined before any check: a failed check must not
     * leave a thread behind on this stack frame. */
    dbpool_stats before;
    dbpool_get_stats(p, &before); /* the waiter still asleep: the cache woke nobody */
    int rc = how == BY_SHRINK ? dbpool_shrink(p, 0) : dbpool_resize(p, 0, 1, NULL);
    pthread_join(wt, NULL);
    holder_set(&h, 4);
    void *why = NULL;
    pthread_join(ht, &why);
    dbpool_stats after;
    dbpool_get_stats(p, &after);
    bool invariant = dbt_invariant_holds(p);
    dbpool_close(p);
    pthread_mutex_destroy(&h.mu);
    pthread_cond_destroy(&h.cv);

    if (why)
        fail_msg("holder: %s", (const char *)why);
    assert_int_equal(before.waiting, 1);
    /* shrink: nothing idle once the waiter has it; resize: OK */
    assert_int_equal(rc, how == BY_SHRINK ? 0 : DBPOOL_OK);
    assert_int_equal(w.rc, DBPOOL_OK);
    if (w.waited_ms >= 1500)
        fail_msg("the waiter got its connection after %lld ms: the %s left it asleep", (long long)w.waited_ms,
                 how == BY_SHRINK ? "shrink" : "resize");
    assert_int_equal(after.created, 1); /* the same connection, not a new one */
    assert_true(invariant);
}

static void test_shrink_serves_waiter_before_closing(void **state) {
    (void)state;
    recall_serves_waiter(BY_SHRINK);
}

static void test_resize_serves_waiter_at_once(void **state) {
    (void)state;
    recall_serves_waiter(BY_RESIZE);
}

/* A connect that failed and sleeps in its retry backoff when the pool is
 * suspended: no further attempt while suspended (a switchover wants no new
 * session), and the caller in line is not failed with the old connect
 * error either: it waits for the resume, which opens its connection. */
static void test_connect_retry_waits_for_resume(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.suspend_fails_fast = false;
    o.max_retries = 3;
    o.backoff_base_ms = 1000; /* the first backoff: 500-1000 ms */
    o.backoff_max_ms = 1000;
    dbpool *p = dbt_open_lazy_mock(&o);
    dbpool__mock_fail_connect(1, 1, DBPOOL_ECONNECT);
    waiter_arg w = {p, -100, 0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, acquire_and_release, &w), 0);
    dbpool__mock_counters mc;
    int64_t until = dbt_now_ms() + 3000;
    do {
        dbt_sleep_ms(1);
        dbpool__mock_get_counters(&mc);
    } while (mc.connect_failures < 1 && dbt_now_ms() < until);
    assert_int_equal(dbpool_suspend(p), DBPOOL_OK); /* in the backoff */
    dbt_sleep_ms(1300);                             /* past the backoff */
    dbpool__mock_counters suspended;
    dbpool__mock_get_counters(&suspended);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(dbpool_resume(p), DBPOOL_OK);
    pthread_join(t, NULL);
    dbpool__mock_get_counters(&mc);
    dbpool_close(p);
    assert_int_equal(suspended.connects, 1); /* no attempt while suspended */
    assert_int_equal(s.waiting, 1);          /* still in line, not failed */
    assert_int_equal(w.rc, DBPOOL_OK);       /* served after the resume */
    assert_int_equal(mc.connects, 2);
}

static void maintained(dbpool_options *o) { o->maintenance_interval_ms = 10; }

/* Suspended means no new session: maintenance does not refill min_size
 * until resume (a switchover suspends to keep the old primary free). */
static void test_suspended_pool_is_not_refilled(void **state) {
    (void)state;
    dbpool *p = open_pool(2, 2, maintained);
    assert_int_equal(dbpool_suspend(p), DBPOOL_OK);
    dbpool_shrink(p, 0);
    dbpool__mock_counters before, after;
    dbpool__mock_get_counters(&before);
    dbt_sleep_ms(300); /* thirty maintenance rounds */
    dbpool__mock_get_counters(&after);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.total, 0);
    assert_int_equal((int)(after.connects - before.connects), 0);
    assert_int_equal(dbpool_resume(p), DBPOOL_OK);
    int64_t end = dbt_now_ms() + 3000;
    do {
        dbt_sleep_ms(5);
        dbpool_get_stats(p, &s);
    } while (s.total < 2 && dbt_now_ms() < end);
    assert_int_equal(s.total, 2); /* and back to min_size once resumed */
    dbpool_close(p);
}

void dbpool__maint_pass(dbpool *p);

typedef struct pass_arg {
    dbpool *p;
} pass_arg;

static void *one_pass(void *arg) {
    dbpool__maint_pass(((pass_arg *)arg)->p);
    return NULL;
}

/* A connection in a keepalive ping during a resize below the pool's size
 * is not closed by the resize (it is not idle then). Back on the idle
 * list, above the new cap, it is closed, not handed out: a pool of
 * max_size 1 never has two leases out. */
static void test_pinged_connection_over_cap_not_handed_out(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.maintenance_interval_ms = 3600 * 1000; /* the pass runs on a thread of the test's */
    o.keepalive_ms = 1;
    o.validation = DBPOOL_VALIDATE_NEVER;
    o.thread_cache = false;
    dbpool *p = NULL;
    dbpool_error e;
    if (dbpool_open(&p, "mock:", &o, &e) != DBPOOL_OK)
        fail_msg("open: %s", e.message);
    dbpool_conn *held, *other;
    assert_int_equal(dbpool_acquire(p, 1000, &held, NULL), DBPOOL_OK);
    assert_int_equal(dbpool_acquire(p, 1000, &other, NULL), DBPOOL_OK);
    assert_int_equal(dbpool_release(other), DBPOOL_OK);
    dbt_sleep_ms(5); /* due a ping */
    dbpool__mock_set_ping_delay_ms(1000);
    pass_arg a = {p};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, one_pass, &a), 0);
    dbpool__mock_counters n;
    do {
        dbt_sleep_ms(1);
        dbpool__mock_get_counters(&n);
    } while (n.pings == 0);
    assert_int_equal(dbpool_resize(p, 0, 1, NULL), DBPOOL_OK); /* during the ping */
    pthread_join(t, NULL);
    dbpool_conn *second = NULL;
    int rc = dbpool_try_acquire(p, &second, &e);
    if (rc == DBPOOL_OK) {
        dbpool_stats s;
        dbpool_get_stats(p, &s);
        dbpool_release(second);
        fail_msg("a max_size 1 pool handed out a second lease (in use %d, cap %d)", s.in_use, s.cap);
    }
    assert_int_equal(rc, DBPOOL_EBUSY);
    assert_int_equal(dbpool_release(held), DBPOOL_OK);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.total, 1);
    assert_int_equal(dbpool_close(p), 0);
}

static void autoscale_slow(dbpool_options *o) {
    o->autoscale = true;
    o->autoscale_interval_ms = 600000; /* the cap moves only by the resize below */
    o->maintenance_interval_ms = 10;
}

/* With autoscale, the cap lies between min_size and max_size: a resize
 * that raises min_size above the cap raises the cap with it, and the pool
 * fills to the new min_size. */
static void test_resize_raises_autoscale_cap_to_min(void **state) {
    (void)state;
    dbpool *p = open_pool(0, 10, autoscale_slow);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.cap, 5); /* starts half way */
    assert_int_equal(dbpool_resize(p, 8, 10, NULL), DBPOOL_OK);
    dbpool_get_stats(p, &s);
    if (s.cap < 8)
        fail_msg("after dbpool_resize(8, 10) the autoscale cap is %d, below min_size 8", s.cap);
    int64_t end = dbt_now_ms() + 3000;
    while (s.total < 8 && dbt_now_ms() < end) {
        dbt_sleep_ms(5);
        dbpool_get_stats(p, &s);
    }
    assert_int_equal(s.total, 8);
    dbpool_close(p);
}

static void autoscale_fast(dbpool_options *o) {
    o->autoscale = true;
    o->autoscale_interval_ms = 60;
    o->maintenance_interval_ms = 10;
}

static void test_autoscale(void **state) {
    (void)state;
    dbpool *p = open_pool(0, 10, autoscale_fast);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.cap, 5); /* starts half way */
    /* Hold every place: utilisation 100% -> the cap grows by 20% steps. */
    dbpool_conn *held[10];
    int n = 0;
    int64_t until = dbt_now_ms() + 3000;
    while (dbt_now_ms() < until) {
        while (n < 10 && dbpool_try_acquire(p, &held[n], NULL) == DBPOOL_OK)
            n++;
        dbpool_get_stats(p, &s);
        if (s.cap == 10 && n == 10)
            break;
        dbt_sleep_ms(10);
    }
    assert_int_equal(s.cap, 10);
    assert_int_equal(n, 10);
    /* Idle: it comes down again, not below max(min_size, 1). */
    for (int i = 0; i < n; i++)
        dbpool_release(held[i]);
    until = dbt_now_ms() + 3000;
    do {
        dbt_sleep_ms(20);
        dbpool_get_stats(p, &s);
    } while (s.cap > 1 && dbt_now_ms() < until);
    assert_int_equal(s.cap, 1);
    assert_true(s.total <= 1);
    assert_true(dbt_invariant_holds(p));
    /* Closed because the cap came down: a shrink, not an idle timeout. */
    if (s.destroyed_by[DBPOOL_CLOSE_IDLE_TIMEOUT] != 0 || s.destroyed_by[DBPOOL_CLOSE_SHRINK] < 9)
        fail_msg("autoscale closed %llu as shrink and %llu as idle timeout",
                 (unsigned long long)s.destroyed_by[DBPOOL_CLOSE_SHRINK],
                 (unsigned long long)s.destroyed_by[DBPOOL_CLOSE_IDLE_TIMEOUT]);
    dbpool_close(p);
}

/* The autoscale cap grows by steps but never past max_size, also when the
 * last step would overshoot it (max 9: 5, 6, 8, then 9, not 10). */
static void test_autoscale_cap_stops_at_max(void **state) {
    (void)state;
    dbpool *p = open_pool(0, 9, autoscale_fast);
    dbpool_stats s;
    dbpool_conn *held[10];
    int n = 0;
    int64_t until = dbt_now_ms() + 3000;
    for (;;) {
        while (n < 10 && dbpool_try_acquire(p, &held[n], NULL) == DBPOOL_OK)
            n++;
        dbpool_get_stats(p, &s);
        if (s.cap > 9 || n > 9)
            fail_msg("the autoscale cap grew to %d with %d leases out, past max_size 9", s.cap, n);
        if ((s.cap == 9 && n == 9) || dbt_now_ms() >= until)
            break;
        dbt_sleep_ms(10);
    }
    assert_int_equal(s.cap, 9);
    for (int i = 0; i < n; i++)
        dbpool_release(held[i]);
    dbpool_close(p);
}

/* Callers waiting while the pool is suspended wait for dbpool_resume, not
 * for room under the cap: autoscale must not count them as demand. It did
 * (waiters count as full use), so a switchover grew the cap towards
 * max_size, and on resume the pool opened that many more connections. The
 * passes run here, on the test's thread (the thread's interval is a day). */

static void autoscale_suspended(dbpool_options *o) {
    o->autoscale = true;
    o->autoscale_interval_ms = 1;
    o->maintenance_interval_ms = 24 * 3600 * 1000;
    o->suspend_fails_fast = false;
}

static void test_autoscale_ignores_waiters_while_suspended(void **state) {
    (void)state;
    dbpool *p = open_pool(0, 10, autoscale_suspended);
    dbpool_conn *held;
    assert_int_equal(dbpool_acquire(p, 1000, &held, NULL), DBPOOL_OK);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    int cap = s.cap;
    assert_int_equal(dbpool_suspend(p), DBPOOL_OK);
    waiter_arg w;
    pthread_t t = start_waiter(&w, p);
    for (int i = 0; i < 3; i++) {
        dbt_sleep_ms(3); /* past autoscale_interval_ms: each pass decides */
        dbpool__maint_pass(p);
    }
    dbpool_get_stats(p, &s);
    int suspended_cap = s.cap;
    assert_int_equal(dbpool_resume(p), DBPOOL_OK);
    dbpool_release(held);
    pthread_join(t, NULL);
    assert_int_equal(w.rc, DBPOOL_OK);
    if (suspended_cap > cap)
        fail_msg("a caller waiting for dbpool_resume grew the autoscale cap from %d to %d", cap,
                 suspended_cap);
    dbpool_close(p);
}

/* While the pool is suspended nothing is handed out, so in use / cap
 * falls to 0 whatever the demand: the callers are in line for the resume.
 * Autoscale took that for a quiet pool, shrank the cap step by step
 * through a switchover and closed the idle connections above it, so the
 * resumed pool had less room than the load it had before (5 -> 1 here),
 * and got it back only one interval at a time. */
static void test_autoscale_does_not_shrink_while_suspended(void **state) {
    (void)state;
    dbpool *p = open_pool(0, 10, autoscale_suspended);
    dbpool_conn *held[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(dbpool_acquire(p, 1000, &held[i], NULL), DBPOOL_OK);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    int cap = s.cap; /* 4 of 5 in use: 80%, neither above the high mark nor below the low one */
    assert_int_equal(dbpool_suspend(p), DBPOOL_OK);
    for (int i = 0; i < 4; i++)
        dbpool_release(held[i]); /* the work under way ends; new work waits */
    waiter_arg w;
    pthread_t t = start_waiter(&w, p);
    for (int i = 0; i < 5; i++) {
        dbt_sleep_ms(3); /* past autoscale_interval_ms: each pass decides */
        dbpool__maint_pass(p);
    }
    dbpool_stats suspended;
    dbpool_get_stats(p, &suspended);
    assert_int_equal(dbpool_resume(p), DBPOOL_OK);
    pthread_join(t, NULL);
    dbpool_close(p);
    assert_int_equal(w.rc, DBPOOL_OK);
    if (suspended.cap < cap || suspended.destroyed_by[DBPOOL_CLOSE_SHRINK] != 0)
        fail_msg("while suspended the autoscale cap went from %d to %d and %llu idle connections were closed",
                 cap, suspended.cap, (unsigned long long)suspended.destroyed_by[DBPOOL_CLOSE_SHRINK]);
}

/* After a suspension longer than autoscale_interval_ms, the first pass
 * after the resume decided at once, from what it saw at that instant
 * (nothing in use yet: the callers told to come back later had not), and
 * shrank the cap. The interval starts again at the resume. */
static void autoscale_slow_manual(dbpool_options *o) {
    autoscale_suspended(o);
    o->autoscale_interval_ms = 300;
}

static void test_autoscale_waits_an_interval_after_resume(void **state) {
    (void)state;
    dbpool *p = open_pool(0, 10, autoscale_slow_manual);
    dbpool_conn *held[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(dbpool_acquire(p, 1000, &held[i], NULL), DBPOOL_OK);
    dbt_sleep_ms(320);
    dbpool__maint_pass(p); /* decides: 80%, the cap stays */
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    int cap = s.cap;
    assert_int_equal(dbpool_suspend(p), DBPOOL_OK);
    for (int i = 0; i < 4; i++)
        dbpool_release(held[i]);
    dbt_sleep_ms(320);
    dbpool__maint_pass(p); /* suspended: no sample */
    assert_int_equal(dbpool_resume(p), DBPOOL_OK);
    dbpool__maint_pass(p); /* the instant after the resume */
    dbpool_get_stats(p, &s);
    dbpool_close(p);
    assert_int_equal(cap, 5);
    if (s.cap != cap)
        fail_msg("the first pass after a resume moved the autoscale cap from %d to %d", cap, s.cap);
}

/* The samples of an interval were shares of the cap at the time they were
 * taken, averaged and then read against the cap at the decision. After a
 * dbpool_resize moved the cap, that mixed two scales: two leases out, 40%
 * of cap 5 before a resize to max 3 and 67% of cap 3 after, averaged to
 * 48%, below the low mark, and the cap shrank to 2, where the same two
 * leases are 100%. The load seen is now averaged in connections and read
 * against the cap in force. */
static void test_autoscale_after_resize_reads_load_against_new_cap(void **state) {
    (void)state;
    dbpool *p = open_pool(0, 10, autoscale_slow_manual);
    dbpool_conn *held[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(dbpool_acquire(p, 1000, &held[i], NULL), DBPOOL_OK);
    for (int i = 0; i < 5; i++)
        dbpool__maint_pass(p); /* within the interval: samples only, 2 of cap 5 */
    dbpool_error e;
    assert_int_equal(dbpool_resize(p, 0, 3, &e), DBPOOL_OK);
    dbpool__maint_pass(p); /* 2 of cap 3 */
    dbt_sleep_ms(320);
    dbpool__maint_pass(p); /* decides */
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    for (int i = 0; i < 2; i++)
        dbpool_release(held[i]);
    dbpool_close(p);
    if (s.cap != 3)
        fail_msg("with two leases out the autoscale cap went from 3 (after the resize) to %d", s.cap);
}

/* autoscale_high may be 1 (the documented range is low < x <= 1): grow
 * only when the pool was full the whole interval. But utilisation never
 * goes above 1 (callers waiting count as 1), and the cap grew only above
 * the mark, so with 1 it never grew: every place in use and a caller in
 * line at every sample, and the cap stayed where it started. */
static void autoscale_high_one(dbpool_options *o) {
    autoscale_suspended(o);
    o->autoscale_high = 1.0;
}

static void test_autoscale_high_one_grows_when_full(void **state) {
    (void)state;
    dbpool *p = open_pool(0, 10, autoscale_high_one);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    int cap = s.cap;
    dbpool_conn *held[5];
    for (int i = 0; i < cap; i++)
        assert_int_equal(dbpool_acquire(p, 1000, &held[i], NULL), DBPOOL_OK);
    waiter_arg w;
    pthread_t t = start_waiter(&w, p);
    dbt_sleep_ms(3);       /* past autoscale_interval_ms: the pass decides */
    dbpool__maint_pass(p); /* a larger cap opens a connection for the waiter */
    dbpool_get_stats(p, &s);
    int grown = s.cap;
    for (int i = 0; i < cap; i++)
        dbpool_release(held[i]); /* the waiter is served either way */
    pthread_join(t, NULL);
    dbpool_close(p);
    assert_int_equal(cap, 5);
    if (grown <= cap)
        fail_msg("with autoscale_high 1 a full pool with a caller in line kept its cap at %d", grown);
    assert_int_equal(w.rc, DBPOOL_OK);
}

/* A steady load at the top of the smallest cap: one lease out 90% of the
 * time. At cap 1 that is above autoscale_high, so the cap grows to 2; at
 * cap 2 it is 45%, below autoscale_low, and the cap shrank back to 1,
 * where the same load is above the high mark again: the cap went up and
 * down every interval, closing and opening a connection each time. A
 * shrink must not go so far that the load it saw would be above the high
 * mark. The passes run here: 9 samples with the lease out, 1 without,
 * then the decision. */
static void autoscale_manual(dbpool_options *o) {
    o->autoscale = true;
    o->autoscale_interval_ms = 500;
    o->maintenance_interval_ms = 24 * 3600 * 1000;
}

static void test_autoscale_steady_load_does_not_oscillate(void **state) {
    (void)state;
    dbpool *p = open_pool(0, 2, autoscale_manual);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.cap, 1);
    int caps[4];
    for (int round = 0; round < 4; round++) {
        dbpool_conn *c;
        assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
        for (int i = 0; i < 9; i++)
            dbpool__maint_pass(p); /* within the interval: samples only */
        dbpool_release(c);
        dbt_sleep_ms(520); /* past autoscale_interval_ms: the next pass decides */
        dbpool__maint_pass(p);
        dbpool_get_stats(p, &s);
        caps[round] = s.cap;
    }
    dbpool_stats end;
    dbpool_get_stats(p, &end);
    dbpool_close(p);
    if (caps[0] != 2 || caps[1] != 2 || caps[2] != 2 || caps[3] != 2)
        fail_msg("under a steady 90%% load of one lease the cap went 1 -> %d -> %d -> %d -> %d", caps[0],
                 caps[1], caps[2], caps[3]);
    assert_int_equal(end.destroyed_by[DBPOOL_CLOSE_SHRINK], 0);
}

/* Callers waiting while the circuit breaker is open wait on a dead
 * database (for a lease to come back), not for room under the cap:
 * counting them as full use grew the cap towards max_size during the
 * outage, and once the database was back the pool opened that many more
 * connections. */
static void autoscale_breaker(dbpool_options *o) {
    autoscale_suspended(o);
    o->suspend_fails_fast = true;
    o->breaker_failures = 1;
    o->breaker_cooldown_ms = 60000;
    o->max_retries = 0;
    o->max_connecting = 1;
}

static void test_autoscale_ignores_waiters_while_breaker_open(void **state) {
    (void)state;
    dbpool *p = open_pool(0, 10, autoscale_breaker);
    dbpool_conn *held;
    assert_int_equal(dbpool_acquire(p, 1000, &held, NULL), DBPOOL_OK);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    int cap = s.cap;
    /* The database goes away: both callers queue behind one slow failing
     * connect, which opens the breaker and fails the first of them; the
     * second waits for the lease out. */
    dbpool__mock_set_connect_delay_ms(100);
    dbpool__mock_fail_connect(2, -1, DBPOOL_ECONNECT);
    waiter_arg w[2] = {{p, -100, 0}, {p, -100, 0}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, acquire_and_release, &w[i]), 0);
    dbt_wait_for_waiters(p, 2, 2000);
    int64_t until = dbt_now_ms() + 2000;
    do {
        dbt_sleep_ms(5);
        dbpool_get_stats(p, &s);
    } while ((s.breaker != DBPOOL_BREAKER_OPEN || s.waiting != 1) && dbt_now_ms() < until);
    dbpool_breaker_state breaker = s.breaker;
    int waiting = s.waiting;
    for (int i = 0; i < 3; i++) {
        dbt_sleep_ms(3); /* past autoscale_interval_ms: each pass decides */
        dbpool__maint_pass(p);
    }
    dbpool_get_stats(p, &s);
    int open_cap = s.cap;
    dbpool_release(held);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    dbpool_close(p);
    assert_int_equal(breaker, DBPOOL_BREAKER_OPEN);
    assert_int_equal(waiting, 1);
    assert_true((w[0].rc == DBPOOL_OK) != (w[1].rc == DBPOOL_OK)); /* one failed, one got the lease */
    if (open_cap > cap)
        fail_msg("a caller waiting behind an open circuit breaker grew the autoscale cap from %d to %d", cap,
                 open_cap);
}

static void autoscale_slow_connects(dbpool_options *o) {
    autoscale_suspended(o);
    o->breaker_failures = 0; /* no breaker: callers wait on the connects */
    o->max_connecting = 2;
}

/* Callers waiting while the pool has room under its cap wait for connects
 * under way (a slow database), not for the cap: they count as the demand
 * they are, not as a full pool, else the cap grew to max_size behind
 * slow connects (5 -> 10 here) with one lease out. */
static void test_autoscale_waiters_under_the_cap_are_demand_not_full(void **state) {
    (void)state;
    dbpool *p = open_pool(0, 10, autoscale_slow_connects);
    dbpool_conn *held;
    assert_int_equal(dbpool_acquire(p, 1000, &held, NULL), DBPOOL_OK);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    int cap = s.cap;
    dbpool__mock_set_connect_delay_ms(1500);
    waiter_arg w[2] = {{p, -100, 0}, {p, -100, 0}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, acquire_and_release, &w[i]), 0);
    dbt_wait_for_waiters(p, 2, 2000);
    for (int i = 0; i < 4; i++) {
        dbt_sleep_ms(3); /* past autoscale_interval_ms: each pass decides */
        dbpool__maint_pass(p);
    }
    dbpool_get_stats(p, &s);
    int slow_cap = s.cap, total = s.total;
    dbpool__mock_set_connect_delay_ms(0);
    dbpool_release(held);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    dbpool_close(p);
    assert_true(total < cap); /* room under the cap: the connects were what they waited for */
    for (int i = 0; i < 2; i++)
        assert_int_equal(w[i].rc, DBPOOL_OK);
    if (slow_cap > cap)
        fail_msg("callers waiting on slow connects with room under the cap grew it from %d to %d", cap,
                 slow_cap);
}

/* dbpool_shrink closes idle connections down to target_idle, including one
 * that a keepalive ping borrowed at that moment (idle to dbpool_get_stats
 * and to every caller): it was left out, and stayed open and idle after
 * its ping (so a suspend, shrink(0), resume switchover kept a session to
 * the old server). It is closed when its ping ends. */
static void keepalive_often(dbpool_options *o) {
    o->maintenance_interval_ms = 5;
    o->keepalive_ms = 10;
    o->validation = DBPOOL_VALIDATE_NEVER;
}

static void test_shrink_includes_connection_in_keepalive_ping(void **state) {
    (void)state;
    dbpool *p = open_pool(0, 2, keepalive_often);
    dbpool_conn *a, *b;
    assert_int_equal(dbpool_acquire(p, 1000, &a, NULL), DBPOOL_OK);
    assert_int_equal(dbpool_acquire(p, 1000, &b, NULL), DBPOOL_OK);
    assert_int_equal(dbpool_release(a), DBPOOL_OK);
    assert_int_equal(dbpool_release(b), DBPOOL_OK);
    dbpool__mock_set_ping_delay_ms(300); /* a ping lasts */
    dbpool__mock_counters mc;
    int64_t until = dbt_now_ms() + 10000;
    for (dbpool__mock_get_counters(&mc); mc.pings < 1 && dbt_now_ms() < until; dbpool__mock_get_counters(&mc))
        dbt_sleep_ms(1);
    assert_true(mc.pings >= 1); /* one of the two is in a ping */
    assert_int_equal(dbpool_shrink(p, 0), 2);
    dbpool__mock_set_ping_delay_ms(0);
    dbpool_stats s;
    until = dbt_now_ms() + 5000;
    /* Until both are closed: one taken out to close has left total at
     * once, and counts in destroyed when its disconnect is over. */
    for (dbpool_get_stats(p, &s); (s.total > 0 || s.destroyed < s.created) && dbt_now_ms() < until;
         dbpool_get_stats(p, &s))
        dbt_sleep_ms(5);
    if (s.total != 0 || s.destroyed != s.created)
        fail_msg(
            "shrink(0): %d connection%s still open (idle %d, %llu of %llu closed) after the keepalive ping",
            s.total, s.total == 1 ? "" : "s", s.idle, (unsigned long long)s.destroyed,
            (unsigned long long)s.created);
    assert_int_equal(s.destroyed_by[DBPOOL_CLOSE_SHRINK], 2);
    dbpool__mock_get_counters(&mc);
    assert_int_equal(mc.live, 0);
    assert_int_equal(dbpool_close(p), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_resize_down_and_up, dbt_mock_setup),
        cmocka_unit_test_setup(test_resize_fills_new_min_at_once, dbt_mock_setup),
        cmocka_unit_test_setup(test_suspend_resume, dbt_mock_setup),
        cmocka_unit_test_setup(test_suspend_fails_waiters_in_line, dbt_mock_setup),
        cmocka_unit_test_setup(test_timeout_while_suspended_says_so, dbt_mock_setup),
        cmocka_unit_test_setup(test_suspended_pool_is_not_refilled, dbt_mock_setup),
        cmocka_unit_test_setup(test_resume_serves_waiters_at_once, dbt_mock_setup),
        cmocka_unit_test_setup(test_release_while_suspended_hands_nothing_out, dbt_mock_setup),
        cmocka_unit_test_setup(test_release_while_suspended_not_cached, dbt_mock_setup),
        cmocka_unit_test_setup(test_resize_raises_autoscale_cap_to_min, dbt_mock_setup),
        cmocka_unit_test_setup(test_pinged_connection_over_cap_not_handed_out, dbt_mock_setup),
        cmocka_unit_test_setup(test_shrink_serves_waiter_before_closing, dbt_mock_setup),
        cmocka_unit_test_setup(test_shrink_includes_connection_in_keepalive_ping, dbt_mock_setup),
        cmocka_unit_test_setup(test_resize_serves_waiter_at_once, dbt_mock_setup),
        cmocka_unit_test_setup(test_connect_retry_waits_for_resume, dbt_mock_setup),
        cmocka_unit_test_setup(test_autoscale_ignores_waiters_while_suspended, dbt_mock_setup),
        cmocka_unit_test_setup(test_autoscale_does_not_shrink_while_suspended, dbt_mock_setup),
        cmocka_unit_test_setup(test_autoscale_waits_an_interval_after_resume, dbt_mock_setup),
        cmocka_unit_test_setup(test_autoscale_after_resize_reads_load_against_new_cap, dbt_mock_setup),
        cmocka_unit_test_setup(test_autoscale_high_one_grows_when_full, dbt_mock_setup),
        cmocka_unit_test_setup(test_autoscale, dbt_mock_setup),
        cmocka_unit_test_setup(test_autoscale_cap_stops_at_max, dbt_mock_setup),
        cmocka_unit_test_setup(test_autoscale_steady_load_does_not_oscillate, dbt_mock_setup),
        cmocka_unit_test_setup(test_autoscale_ignores_waiters_while_breaker_open, dbt_mock_setup),
        cmocka_unit_test_setup(test_autoscale_waiters_under_the_cap_are_demand_not_full, dbt_mock_setup),
        cmocka_unit_test_setup(test_no_refill_while_suspended, dbt_mock_setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
