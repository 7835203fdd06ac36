/* The maintenance pass, one behaviour at a time: leak reports and
 * reclaims, keepalive, refill. Mock backend. */
#include "driver_mock.h"
#include "pool_internal.h"
#include "testsupport.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

typedef struct line_count {
    pthread_mutex_t lock;
    int leak_reports;
    int reclaims;
} line_count;

static void count_lines(void *user, dbpool_log_level level, const char *message) {
    (void)level;
    line_count *n = user;
    pthread_mutex_lock(&n->lock);
    if (strstr(message, "possible leak"))
        n->leak_reports++;
    if (strstr(message, ": reclaimed (no longer counted"))
        n->reclaims++;
    pthread_mutex_unlock(&n->lock);
}

/* More leases reclaimed in one pass than the pass has room to log (8):
 * those past the eighth were reclaimed without their WARN line, so a
 * connection stopped counting against max_size and nothing said so. */
#define LEAKED 12
static void test_every_reclaim_is_logged(void **state) {
    (void)state;
    line_count n = {.lock = PTHREAD_MUTEX_INITIALIZER};
    dbpool_options o;
    dbt_options(&o, 0, LEAKED + 2);
    o.maintenance_interval_ms = 100; /* all are past the thresholds at one pass */
    o.leak_threshold_ms = 10;
    o.leak_reclaim_ms = 10;
    o.log_fn = count_lines;
    o.log_user = &n;
    o.log_level = DBPOOL_LOG_WARN;
    dbpool *p = NULL;
    dbpool_error e;
    if (dbpool_open(&p, "mock:", &o, &e) != DBPOOL_OK)
        fail_msg("open: %s", e.message);
    dbpool_conn *c[LEAKED];
    for (int i = 0; i < LEAKED; i++)
        assert_int_equal(dbpool_acquire(p, 5000, &c[i], &e), DBPOOL_OK);
    dbpool_stats s;
    int64_t deadline = now_ms() + 10000;
    for (dbpool_get_stats(p, &s); s.leaks_reclaimed < LEAKED || s.leaks_detected < LEAKED;
         dbpool_get_stats(p, &s)) {
        if (now_ms() > deadline)
            fail_msg("%d of %d leases reclaimed, %d reported, within 10 s", (int)s.leaks_reclaimed, LEAKED,
                     (int)s.leaks_detected);
        sleep_ms(10);
    }
    assert_int_equal(s.reclaimed_out, LEAKED);
    /* Logged before the counters are read back: the pass logs under
     * leak_log_lock, and the next pass waits for it; a close joins it. */
    for (int i = 0; i < LEAKED; i++)
        dbpool_release(c[i]);
    dbpool_close(p);
    assert_int_equal(n.leak_reports, LEAKED);
    assert_int_equal(n.reclaims, LEAKED);
    pthread_mutex_destroy(&n.lock);
}

/* An acquire whose validation round trip outlasted leak_reclaim_ms: the
 * connection, counted as leased while the pool checked it, was reported as
 * a leak and reclaimed before the caller ever had it. The caller then got
 * a lease that counted nowhere (in_use 0), and the pool opened another
 * connection past max_size beside it. Nor may the lease, once handed out,
 * count the validation as held time: the next pass would reclaim it. */
static void test_validation_is_not_a_leak(void **state) {
    (void)state;
    line_count n = {.lock = PTHREAD_MUTEX_INITIALIZER};
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.maintenance_interval_ms = 5;
    o.leak_threshold_ms = 500;
    o.leak_reclaim_ms = 500;
    o.validation = DBPOOL_VALIDATE_ALWAYS;
    o.log_fn = count_lines;
    o.log_user = &n;
    o.log_level = DBPOOL_LOG_WARN;
    dbpool *p = NULL;
    dbpool_error e;
    if (dbpool_open(&p, "mock:", &o, &e) != DBPOOL_OK)
        fail_msg("open: %s", e.message);
    dbpool_conn *c = NULL;
    assert_int_equal(dbpool_acquire(p, 5000, &c, &e), DBPOOL_OK);
    dbpool_release(c);                   /* leased once: the next hand-out is validated */
    dbpool__mock_set_ping_delay_ms(700); /* many maintenance passes, past leak_reclaim_ms */
    assert_int_equal(dbpool_acquire(p, 5000, &c, &e), DBPOOL_OK);
    dbpool__mock_set_ping_delay_ms(0);
    /* Held for a fraction of leak_threshold_ms: passes run meanwhile. */
    sleep_ms(100);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.in_use, 1);
    assert_int_equal(s.reclaimed_out, 0);
    assert_int_equal(s.leaks_reclaimed, 0);
    assert_int_equal(s.leaks_detected, 0);
    /* max_size 1, held: nothing more to be had. */
    dbpool_conn *more = NULL;
    assert_int_equal(dbpool_try_acquire(p, &more, &e), DBPOOL_EBUSY);
    dbpool_release(c);
    dbpool_get_stats(p, &s);
    assert_int_equal(s.destroyed_by[DBPOOL_CLOSE_RECLAIMED], 0);
    dbpool_close(p);
    assert_int_equal(n.leak_reports, 0);
    assert_int_equal(n.reclaims, 0);
    pthread_mutex_destroy(&n.lock);
}

/* When the first "possible leak" line came, and what the mock had done by
 * then. */
typedef struct leak_seen {
    pthread_mutex_t lock;
    int64_t at_ms; /* 0: not yet */
    dbpool__mock_counters then;
} leak_seen;

static void note_leak(void *user, dbpool_log_level level, const char *message) {
    (void)level;
    leak_seen *s = user;
    if (!strstr(message, "possible leak"))
        return;
    pthread_mutex_lock(&s->lock);
    if (s->at_ms == 0) {
        s->at_ms = now_ms();
        dbpool__mock_get_counters(&s->then);
    }
    pthread_mutex_unlock(&s->lock);
}

/* The first leak report's time (0: none within timeout_ms) and the mock's
 * counters at that moment. */
static int64_t wait_for_leak_report(leak_seen *s, int64_t timeout_ms, dbpool__mock_counters *then) {
    int64_t until = now_ms() + timeout_ms;
    for (;;) {
        pthread_mutex_lock(&s->lock);
        int64_t at = s->at_ms;
        *then = s->then;
        pthread_mutex_unlock(&s->lock);
        if (at || now_ms() > until)
            return at;
        sleep_ms(5);
    }
}

static dbpool__mock_counters mock_now(void) {
    dbpool__mock_counters n;
    dbpool__mock_get_counters(&n);
    return n;
}

/* Refill to min_size connected on the maintenance thread: against a slow
 * database (here a 2 s connect) every other check of the pass waited for
 * it, and a lease held past leak_threshold_ms 100 was reported only when
 * the connect was over, 2 s late. Idle timeout, lifetime and keepalive
 * waited the same way. Refill's connects run on the connector threads; the
 * pass goes on. */
static void test_refill_does_not_hold_up_leak_reports(void **state) {
    (void)state;
    leak_seen seen = {.lock = PTHREAD_MUTEX_INITIALIZER};
    dbpool_options o;
    dbt_options(&o, 2, 4);
    o.maintenance_interval_ms = 5;
    o.leak_threshold_ms = 100;
    o.validation = DBPOOL_VALIDATE_NEVER;
    o.log_fn = note_leak;
    o.log_user = &seen;
    o.log_level = DBPOOL_LOG_WARN;
    dbpool *p = NULL;
    dbpool_error e;
    if (dbpool_open(&p, "mock:", &o, &e) != DBPOOL_OK)
        fail_msg("open: %s", e.message);
    dbpool_conn *held = NULL, *lost = NULL;
    assert_int_equal(dbpool_acquire(p, 5000, &lost, &e), DBPOOL_OK);
    dbpool__mock_set_connect_delay_ms(2000);
    dbpool_discard(lost); /* one below min_size: the next pass refills */
    int64_t until = now_ms() + 10000;
    while (mock_now().connects < 3) {
        if (now_ms() > until)
            fail_msg("no refill connect within 10 s");
        sleep_ms(1);
    }
    /* The refill's 2 s connect is under way: a lease from now on. */
    int64_t t0 = now_ms();
    assert_int_equal(dbpool_acquire(p, 5000, &held, &e), DBPOOL_OK);
    dbpool__mock_counters then;
    int64_t at = wait_for_leak_report(&seen, 10000, &then);
    if (at == 0)
        fail_msg("no leak report within 10 s");
    if (at - t0 > 100 + 900 || then.live != 1)
        fail_msg("a lease past leak_threshold_ms 100 was reported after %lld ms, %s the refill's 2 s "
                 "connect",
                 (long long)(at - t0), then.live != 1 ? "after" : "before");
    /* The refill itself still happens, and is counted as a connect. */
    dbpool_stats s;
    until = now_ms() + 10000;
    for (dbpool_get_stats(p, &s); s.total < 2 || s.connecting > 0; dbpool_get_stats(p, &s)) {
        if (now_ms() > until)
            fail_msg("min_size 2 not refilled within 10 s (total %d, connecting %d)", s.total, s.connecting);
        sleep_ms(10);
    }
    assert_int_equal(s.total, 2);
    assert_int_equal((int)s.created, 3);
    assert_int_equal((int)s.connect_time.count, 3);
    assert_int_equal((int)s.connect_errors, 0);
    assert_true(dbt_invariant_holds(p));
    dbpool_release(held);
    assert_int_equal(dbpool_close(p), 0);
    assert_int_equal(mock_now().live, 0);
    pthread_mutex_destroy(&seen.lock);
}

/* A keepalive ping ran on the maintenance thread: one ping that stalls (a
 * server that stops answering; here 3 s, under validation_timeout_ms 10 s)
 * held up the rest of maintenance, and a lease held past leak_threshold_ms
 * 200 was reported only after the ping. */
static void test_slow_keepalive_ping_does_not_hold_up_leak_reports(void **state) {
    (void)state;
    leak_seen seen = {.lock = PTHREAD_MUTEX_INITIALIZER};
    dbpool_options o;
    dbt_options(&o, 2, 2);
    o.maintenance_interval_ms = 5;
    o.keepalive_ms = 10;
    o.validation_timeout_ms = 10000;
    o.leak_threshold_ms = 200;
    o.validation = DBPOOL_VALIDATE_NEVER;
    o.log_fn = note_leak;
    o.log_user = &seen;
    o.log_level = DBPOOL_LOG_WARN;
    dbpool__mock_set_ping_delay_ms(3000);
    dbpool *p = NULL;
    dbpool_error e;
    if (dbpool_open(&p, "mock:", &o, &e) != DBPOOL_OK)
        fail_msg("open: %s", e.message);
    /* The first ping is under way (one at a time): the other connection
     * stays idle for a caller until it is due. */
    int64_t until = now_ms() + 10000;
    while (mock_now().pings < 1) {
        if (now_ms() > until)
            fail_msg("no keepalive ping within 10 s");
        sleep_ms(1);
    }
    dbpool_conn *held = NULL;
    int64_t t0 = now_ms();
    assert_int_equal(dbpool_acquire(p, 5000, &held, &e), DBPOOL_OK);
    dbpool__mock_counters then;
    int64_t at = wait_for_leak_report(&seen, 10000, &then);
    if (at == 0)
        fail_msg("no leak report within 10 s");
    if (at - t0 > 200 + 900)
        fail_msg("a lease past leak_threshold_ms 200 was reported after %lld ms, behind a 3 s keepalive "
                 "ping",
                 (long long)(at - t0));
    dbpool_release(held);
    assert_int_equal(dbpool_close(p), 0);
    assert_int_equal(mock_now().live, 0);
    pthread_mutex_destroy(&seen.lock);
}

/* Refill keeps the circuit breaker's rules: while it is open nothing is
 * connected, and after each cooldown one refill connect is the single
 * trial, though min_size wants two and max_connecting allows two. */
static void test_refill_keeps_breaker_rules(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 2, 4);
    o.maintenance_interval_ms = 5;
    o.max_connecting = 2;
    o.max_retries = 0;
    o.breaker_failures = 1;
    o.breaker_cooldown_ms = 300;
    o.log_level = DBPOOL_LOG_ERROR;
    dbpool *p = NULL;
    dbpool_error e;
    if (dbpool_open(&p, "mock:", &o, &e) != DBPOOL_OK)
        fail_msg("open: %s", e.message);
    dbpool_conn *a = NULL, *b = NULL;
    assert_int_equal(dbpool_acquire(p, 5000, &a, &e), DBPOOL_OK);
    assert_int_equal(dbpool_acquire(p, 5000, &b, &e), DBPOOL_OK);
    dbpool__mock_fail_connect(mock_now().connects + 1, -1, DBPOOL_ECONNECT);
    dbpool_discard(a);
    dbpool_discard(b); /* min_size 2, none left: refill, which fails and opens the breaker */
    dbpool_stats s;
    int64_t until = now_ms() + 10000;
    for (dbpool_get_stats(p, &s); s.breaker != DBPOOL_BREAKER_OPEN || s.connecting > 0;
         dbpool_get_stats(p, &s)) {
        if (now_ms() > until)
            fail_msg("the breaker did not open within 10 s");
        sleep_ms(1);
    }
    long n0 = mock_now().connects;
    uint64_t opens0 = s.breaker_opens;
    /* Two failed trials, one per cooldown; never a second connect beside
     * the trial. */
    until = now_ms() + 10000;
    while (s.breaker_opens < opens0 + 2) {
        long extra = mock_now().connects - n0;
        if (extra > (long)(s.breaker_opens - opens0) + 1)
            fail_msg("%ld refill connects after %d failed trials: more than the one trial at a time", extra,
                     (int)(s.breaker_opens - opens0));
        if (now_ms() > until)
            fail_msg("no two failed trials within 10 s (breaker_opens %d)", (int)(s.breaker_opens - opens0));
        sleep_ms(1);
        dbpool_get_stats(p, &s);
    }
    long extra = mock_now().connects - n0;
    if (extra < 2 || extra > 3)
        fail_msg("%ld refill connects for two failed trials", extra);
    /* The database is back: the next trial closes the breaker and the
     * refill fills min_size. */
    dbpool__mock_fail_connect(0, 0, 0);
    until = now_ms() + 10000;
    for (dbpool_get_stats(p, &s); s.total < 2 || s.connecting > 0 || s.breaker != DBPOOL_BREAKER_CLOSED;
         dbpool_get_stats(p, &s)) {
        if (now_ms() > until)
            fail_msg("min_size 2 not refilled within 10 s of the database coming back (total %d)", s.total);
        sleep_ms(5);
    }
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
    assert_int_equal(mock_now().live, 0);
}

/* A keepalive ping borrows an idle connection (counted leased for the
 * moment, held by no caller). The leak scan took it for a lease held since
 * its last real lease began: a ping that overlapped a maintenance pass on a
 * connection last leased more than leak_reclaim_ms ago was reported as a
 * leak and reclaimed, and its return to the idle list then counted it out
 * twice: in_use -1, reclaimed_out 1 with no lease out, and the debug
 * builds' invariant check aborted. */
static void test_keepalive_ping_is_not_a_leak(void **state) {
    (void)state;
    line_count n = {.lock = PTHREAD_MUTEX_INITIALIZER};
    dbpool_options o;
    dbt_options(&o, 1, 1);
    o.maintenance_interval_ms = 5;
    o.keepalive_ms = 10;
    o.leak_threshold_ms = 100;
    o.leak_reclaim_ms = 100;
    o.validation = DBPOOL_VALIDATE_NEVER;
    o.log_fn = count_lines;
    o.log_user = &n;
    o.log_level = DBPOOL_LOG_WARN;
    dbpool *p = NULL;
    dbpool_error e;
    if (dbpool_open(&p, "mock:", &o, &e) != DBPOOL_OK)
        fail_msg("open: %s", e.message);
    dbpool_conn *c = NULL;
    assert_int_equal(dbpool_acquire(p, 5000, &c, &e), DBPOOL_OK);
    dbpool_release(c);                   /* its last lease began now */
    dbpool__mock_set_ping_delay_ms(400); /* many maintenance passes, past leak_reclaim_ms */
    /* Until a second ping begins: the first is over, its connection back. */
    int64_t until = now_ms() + 10000;
    while (mock_now().pings < 2) {
        if (now_ms() > until)
            fail_msg("no second keepalive ping within 10 s");
        sleep_ms(1);
    }
    dbpool__mock_set_ping_delay_ms(0);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.leaks_detected, 0);
    assert_int_equal(s.leaks_reclaimed, 0);
    assert_int_equal(s.reclaimed_out, 0);
    assert_true(s.in_use >= 0);
    /* max_size 1, and the one connection is the pool's: a caller gets it,
     * and nothing more. */
    assert_int_equal(dbpool_acquire(p, 5000, &c, &e), DBPOOL_OK);
    dbpool_conn *more = NULL;
    assert_int_equal(dbpool_try_acquire(p, &more, &e), DBPOOL_EBUSY);
    dbpool_release(c);
    dbpool_get_stats(p, &s);
    assert_int_equal(s.destroyed_by[DBPOOL_CLOSE_RECLAIMED], 0);
    assert_int_equal(dbpool_close(p), 0);
    assert_int_equal(n.leak_reports, 0);
    assert_int_equal(n.reclaims, 0);
    pthread_mutex_destroy(&n.lock);
}

typedef struct limit_lines {
    pthread_mutex_t lock;
    int warn_limit;   /* WARN lines that name the connection limit */
    int opened_again; /* the episode's end */
} limit_lines;

static void count_limit_lines(void *user, dbpool_log_level level, const char *msg) {
    limit_lines *l = user;
    pthread_mutex_lock(&l->lock);
    if (level == DBPOOL_LOG_WARN && strstr(msg, "too many clients"))
        l->warn_limit++;
    if (strstr(msg, "opened again after"))
        l->opened_again++;
    pthread_mutex_unlock(&l->lock);
}

/* min_size above a server's (lowered) connection limit: the refill backs
 * off and logs the episode once, instead of max_connecting refused
 * connects and as many WARN lines every pass; once connects succeed again
 * it refills, and says after how many refusals. */
static void test_refill_at_connection_limit_backs_off(void **state) {
    (void)state;
    limit_lines lines = {.lock = PTHREAD_MUTEX_INITIALIZER};
    dbpool_options o;
    dbt_options(&o, 2, 4);
    o.maintenance_interval_ms = 50;
    o.max_retries = 0;
    o.log_fn = count_limit_lines;
    o.log_user = &lines;
    o.log_level = DBPOOL_LOG_DEBUG;
    dbpool *p = NULL;
    dbpool_error e;
    if (dbpool_open(&p, "mock:", &o, &e) != DBPOOL_OK)
        fail_msg("open: %s", e.message);
    dbpool_conn *a = dbt_acquire(p), *b = dbt_acquire(p);
    dbpool__mock_set_connect_at_limit(true);
    dbpool__mock_fail_connect(3, -1, DBPOOL_ECONNECT);
    assert_int_equal(dbpool_discard(a), DBPOOL_OK);
    assert_int_equal(dbpool_discard(b), DBPOOL_OK);
    /* A rate over a window: 1500 ms of passes every 50 ms used to make
     * about 60 refused connects (2 a pass). */
    sleep_ms(1500);
    dbpool__mock_counters n;
    dbpool__mock_get_counters(&n);
    pthread_mutex_lock(&lines.lock);
    int warns = lines.warn_limit;
    pthread_mutex_unlock(&lines.lock);
    if (n.connect_failures < 1 || n.connect_failures > 10 || warns != 1)
        fail_msg("%ld refused connects and %d WARN lines in 1500 ms", n.connect_failures, warns);
    dbpool__mock_set_connect_at_limit(false);
    dbpool__mock_fail_connect(0, 0, 0); /* the limit raised */
    dbpool_stats s;
    int64_t until = now_ms() + 10000;
    do {
        sleep_ms(10);
        dbpool_get_stats(p, &s);
    } while (s.total < 2 && now_ms() < until);
    assert_int_equal(s.total, 2);
    pthread_mutex_lock(&lines.lock);
    int again = lines.opened_again;
    pthread_mutex_unlock(&lines.lock);
    assert_int_equal(again, 1);
    assert_true(dbt_invariant_holds(p));
    dbpool_close(p);
}

/* max_lifetime_ms: each connection is retired "up to 2.5% sooner, jitter"
 * (include/dbpool.h), so that connections opened together do not expire
 * together. Read from the connections' own expiry: each within
 * [97.5%, 100%] of the lifetime after its creation, and not all the same.
 * A jitter of 10% went unnoticed by every test before. */
static void test_lifetime_jitter_within_its_bound(void **state) {
    (void)state;
    enum { N = 32 };
    dbpool_options o;
    dbt_options(&o, N, N);
    o.maintenance_interval_ms = 0;
    o.max_lifetime_ms = 1000000;
    dbpool *p = NULL;
    dbpool_error e;
    if (dbpool_open(&p, "mock:", &o, &e) != DBPOOL_OK)
        fail_msg("open: %s", e.message);
    const int64_t life = o.max_lifetime_ms * 1000000;
    int64_t shortest = INT64_MAX, longest = 0;
    int n = 0;
    dbpool__lock(p);
    for (dbpool_conn *c = p->all_slots; c; c = c->all_next) {
        if (c->magic != DBPOOL_CONN_MAGIC)
            continue;
        int64_t l = c->expires_ns - c->created_ns;
        shortest = l < shortest ? l : shortest;
        longest = l > longest ? l : longest;
        n++;
    }
    dbpool__unlock(p);
    assert_int_equal(n, N);
    if (longest > life || shortest < life - life / 40)
        fail_msg("lifetimes from %lld to %lld ns, outside [%lld, %lld]", (long long)shortest,
                 (long long)longest, (long long)(life - life / 40), (long long)life);
    if (longest == shortest)
        fail_msg("%d connections opened together all expire together (no jitter)", N);
    assert_int_equal(dbpool_close(p), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_every_reclaim_is_logged, dbt_mock_setup),
        cmocka_unit_test_setup(test_validation_is_not_a_leak, dbt_mock_setup),
        cmocka_unit_test_setup(test_refill_does_not_hold_up_leak_reports, dbt_mock_setup),
        cmocka_unit_test_setup(test_slow_keepalive_ping_does_not_hold_up_leak_reports, dbt_mock_setup),
        cmocka_unit_test_setup(test_refill_keeps_breaker_rules, dbt_mock_setup),
        cmocka_unit_test_setup(test_refill_at_connection_limit_backs_off, dbt_mock_setup),
        cmocka_unit_test_setup(test_keepalive_ping_is_not_a_leak, dbt_mock_setup),
        cmocka_unit_test_setup(test_lifetime_jitter_within_its_bound, dbt_mock_setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
