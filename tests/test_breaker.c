/* The circuit breaker: consecutive connect failures open it, acquires that
 * need a new connection then fail at once, one trial after the cooldown,
 * success closes it, failure reopens it, and a manual reset. Mock backend. */
#include "driver_mock.h"
#include "testsupport.h"

#include <pthread.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* The log callback runs on any pool thread: guard the lines. */
typedef struct log_lines {
    pthread_mutex_t mu;
    char text[32][256];
    int n;
} log_lines;

static void collect(void *user, dbpool_log_level level, const char *msg) {
    (void)level;
    log_lines *l = user;
    pthread_mutex_lock(&l->mu);
    if (l->n < 32)
        snprintf(l->text[l->n++], sizeof l->text[0], "%s", msg);
    pthread_mutex_unlock(&l->mu);
}

static bool logged(log_lines *l, const char *needle) {
    bool found = false;
    pthread_mutex_lock(&l->mu);
    for (int i = 0; i < l->n && !found; i++)
        found = strstr(l->text[i], needle) != NULL;
    pthread_mutex_unlock(&l->mu);
    return found;
}

/* A mock pool that opens nothing itself (no warm-up, no maintenance, no
 * retries), with the breaker's threshold and cooldown; logs collected when
 * logs is not NULL. */
static dbpool *open_pool_with_breaker(log_lines *logs, int failures, int64_t cooldown_ms) {
    dbpool_options o;
    dbt_options(&o, 0, 4);
    o.max_retries = 0;
    o.breaker_failures = failures;
    o.breaker_cooldown_ms = cooldown_ms;
    if (logs) {
        o.log_fn = collect;
        o.log_user = logs;
        o.log_level = DBPOOL_LOG_DEBUG;
    }
    dbpool *p = dbt_open_lazy_mock(&o);
    return p;
}

/* The cooldown covers the steps a test takes between the opening and an
 * acquire that must find the breaker still open, with room for a thread
 * descheduled for a few hundred ms (TSan, a loaded machine). */
static dbpool *open_breaker_pool(log_lines *logs) { return open_pool_with_breaker(logs, 3, 400); }

static void test_opens_fails_fast_and_recovers(void **state) {
    (void)state;
    log_lines logs = {.mu = PTHREAD_MUTEX_INITIALIZER};
    dbpool *p = open_breaker_pool(&logs);
    dbpool__mock_fail_connect(1, -1, DBPOOL_ECONNECT);
    dbpool_conn *c;
    dbpool_error e;
    for (int i = 0; i < 3; i++)
        assert_int_equal(dbpool_acquire(p, 1000, &c, &e), i < 2 ? DBPOOL_ECONNECT : DBPOOL_EUNAVAILABLE);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.breaker, DBPOOL_BREAKER_OPEN);
    assert_int_equal(s.breaker_opens, 1);
    assert_true(logged(&logs, "circuit breaker opened"));

    /* Open: fails at once, with the cause, without trying to connect. */
    dbpool__mock_counters before, after;
    dbpool__mock_get_counters(&before);
    int64_t t0 = dbt_now_ms();
    assert_int_equal(dbpool_acquire(p, 5000, &c, &e), DBPOOL_EUNAVAILABLE);
    /* At once, not after the acquire's 5000 ms; the bound leaves room for
     * a descheduled test thread (TSan, a loaded machine). Waiting out the
     * 400 ms cooldown instead would end in a trial connect: the connect
     * counter below catches that. */
    assert_true(dbt_now_ms() - t0 < 1000);
    assert_non_null(strstr(e.message, "injected"));
    /* When the next try comes: what is left of the 400 ms cooldown. */
    const char *when = strstr(e.message, "next try in ");
    if (!when || atoi(when + 12) > 400)
        fail_msg("the error should say how long is left of the cooldown: %s", e.message);
    dbpool__mock_get_counters(&after);
    assert_int_equal(after.connects, before.connects);

    /* After the cooldown one trial; it fails: open again. */
    dbt_sleep_ms(450);
    assert_int_not_equal(dbpool_acquire(p, 1000, &c, &e), DBPOOL_OK);
    dbpool_get_stats(p, &s);
    assert_int_equal(s.breaker, DBPOOL_BREAKER_OPEN);
    assert_int_equal(s.breaker_opens, 2);
    assert_true(logged(&logs, "half-open"));

    /* The database is back: the next trial closes the breaker. */
    dbpool__mock_fail_connect(0, 0, 0);
    dbt_sleep_ms(450);
    assert_int_equal(dbpool_acquire(p, 1000, &c, &e), DBPOOL_OK);
    dbpool_get_stats(p, &s);
    assert_int_equal(s.breaker, DBPOOL_BREAKER_CLOSED);
    assert_int_equal(s.breaker_half_opens, 2);
    assert_int_equal(s.breaker_closes, 1);
    assert_true(logged(&logs, "circuit breaker closed"));
    dbpool_release(c);
    assert_true(dbt_invariant_holds(p));
    dbpool_close(p);
}

static void test_manual_reset(void **state) {
    (void)state;
    log_lines logs = {.mu = PTHREAD_MUTEX_INITIALIZER};
    dbpool *p = open_breaker_pool(&logs);
    dbpool__mock_fail_connect(1, 3, DBPOOL_ECONNECT);
    dbpool_conn *c;
    for (int i = 0; i < 3; i++)
        dbpool_acquire(p, 1000, &c, NULL);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.breaker, DBPOOL_BREAKER_OPEN);
    dbpool_breaker_reset(p);
    dbpool_get_stats(p, &s);
    assert_int_equal(s.breaker, DBPOOL_BREAKER_CLOSED);
    assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
    dbpool_release(c);
    assert_true(logged(&logs, "reset by hand"));
    dbpool_close(p);
}

static void test_full_pool_still_serves_while_open(void **state) {
    (void)state;
    log_lines logs = {.mu = PTHREAD_MUTEX_INITIALIZER};
    dbpool *p = open_breaker_pool(&logs);
    dbpool_conn *a;
    assert_int_equal(dbpool_acquire(p, 1000, &a, NULL), DBPOOL_OK);
    dbpool_release(a);
    /* Open the breaker while one healthy connection is idle. */
    dbpool__mock_fail_connect(2, -1, DBPOOL_ECONNECT);
    dbpool_conn *held[2];
    assert_int_equal(dbpool_acquire(p, 1000, &held[0], NULL), DBPOOL_OK); /* the idle one */
    for (int i = 0; i < 3; i++)
        dbpool_acquire(p, 1000, &held[1], NULL);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.breaker, DBPOOL_BREAKER_OPEN);
    /* An existing connection still goes round: released and acquired. */
    dbpool_release(held[0]);
    assert_int_equal(dbpool_acquire(p, 1000, &held[0], NULL), DBPOOL_OK);
    dbpool_release(held[0]);
    dbpool_close(p);
}

/* While open, an acquire that needs a new connection fails at once with
 * EUNAVAILABLE also when a lease is out (operations.md, "While open"): it
 * does not wait in line for that lease, which may be held for long, and
 * end in a timeout that hides the outage. */
static void test_lease_out_still_fails_fast_while_open(void **state) {
    (void)state;
    dbpool *p = open_pool_with_breaker(NULL, 1, 60000);
    dbpool_conn *held, *c;
    dbpool_error e;
    assert_int_equal(dbpool_acquire(p, 1000, &held, NULL), DBPOOL_OK);
    dbpool__mock_fail_connect(1, -1, DBPOOL_ECONNECT);
    assert_int_not_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK); /* its connect opens the breaker */
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.breaker, DBPOOL_BREAKER_OPEN);
    int rc = dbpool_acquire(p, 3000, &c, &e);
    if (rc != DBPOOL_EUNAVAILABLE)
        fail_msg("an acquire needing a new connection while the breaker is open, one lease out, got %s "
                 "(want DBPOOL_EUNAVAILABLE): %s",
                 dbpool_errname(rc), e.message);
    dbpool_release(held);
    dbpool_close(p);
}

/* The failures that open the breaker are consecutive: a connect that
 * succeeds in between starts the count again (operations.md). */
static void test_success_restarts_failure_count(void **state) {
    (void)state;
    dbpool *p = open_pool_with_breaker(NULL, 3, 60000);
    dbpool_conn *c, *held;
    dbpool__mock_fail_connect(1, 2, DBPOOL_ECONNECT); /* attempts 1 and 2 */
    for (int i = 0; i < 2; i++)
        assert_int_not_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
    assert_int_equal(dbpool_acquire(p, 1000, &held, NULL), DBPOOL_OK); /* attempt 3 */
    dbpool__mock_fail_connect(4, 2, DBPOOL_ECONNECT);                  /* attempts 4 and 5 */
    for (int i = 0; i < 2; i++)
        assert_int_not_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    if (s.breaker != DBPOOL_BREAKER_CLOSED || s.breaker_opens != 0)
        fail_msg(
            "2 failed connects, 1 success, 2 failed: the breaker (breaker_failures 3) is %s, opened %llu "
            "time(s)",
            dbpool_breaker_state_name(s.breaker), (unsigned long long)s.breaker_opens);
    dbpool_release(held);
    dbpool_close(p);
}

/* A breaker pool whose acquires will not wait: every connect runs on the
 * caller's thread (try_acquire, acquire with a timeout of 0). */
static dbpool *open_no_wait_pool(int64_t cooldown_ms) { return open_pool_with_breaker(NULL, 2, cooldown_ms); }

static long mock_connects(void) {
    dbpool__mock_counters m;
    dbpool__mock_get_counters(&m);
    return m.connects;
}

/* The breaker stays open for the whole breaker_cooldown_ms: past half
 * of it, an acquire needing a connection is still refused without a
 * connect attempt. (The sleep is at least 3100 ms; only a test thread held
 * up for 2.9 s more could see the cooldown over.) */
static void test_open_for_the_whole_cooldown(void **state) {
    (void)state;
    dbpool *p = open_pool_with_breaker(NULL, 1, 6000);
    dbpool_conn *c;
    dbpool__mock_fail_connect(1, -1, DBPOOL_ECONNECT);
    assert_int_not_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK); /* opens it */
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.breaker, DBPOOL_BREAKER_OPEN);
    dbt_sleep_ms(3100);
    long before = mock_connects();
    assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_EUNAVAILABLE);
    if (mock_connects() != before)
        fail_msg("3.1 s into a 6 s cooldown the breaker let a connect through");
    dbpool_close(p);
}

/* Ten callers that will not wait, after the cooldown: one trial connects,
 * the others get EUNAVAILABLE, and the failed trial opens the breaker
 * again. try_only: try_acquire, else acquire with a timeout of 0. */
static void ten_after_cooldown(dbpool *p, bool try_only, int64_t cooldown_ms, int round) {
    dbt_sleep_ms(cooldown_ms + 50); /* the cooldown is a time: this waits it out, it synchronises nothing */
    long before = mock_connects();
    int unavailable = 0;
    for (int i = 0; i < 10; i++) {
        dbpool_conn *c = NULL;
        dbpool_error e;
        int rc = try_only ? dbpool_try_acquire(p, &c, &e) : dbpool_acquire(p, 0, &c, &e);
        assert_int_not_equal(rc, DBPOOL_OK);
        if (rc == DBPOOL_EUNAVAILABLE)
            unavailable++;
    }
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    if (mock_connects() - before != 1 || unavailable != 9)
        fail_msg("%s after the cooldown: %ld connect attempts and %d EUNAVAILABLE for 10 callers (want one "
                 "trial and 9); half_opens %llu, breaker %s",
                 try_only ? "try_acquire" : "acquire(0)", mock_connects() - before, unavailable,
                 (unsigned long long)s.breaker_half_opens, dbpool_breaker_state_name(s.breaker));
    assert_int_equal((int)s.breaker_half_opens, round);
    assert_int_equal(s.breaker, DBPOOL_BREAKER_OPEN); /* the trial failed: open again */
    assert_int_equal((int)s.breaker_opens, round + 1);
}

/* Callers who will not wait connect on their own thread; the breaker
 * admits them like the connectors: after the cooldown one trial, the
 * others refused while it runs, and a successful trial closes it. */
static void test_no_wait_callers_get_one_trial(void **state) {
    (void)state;
    /* The nine callers after each failed trial come within the cooldown
     * its failure restarts, even on a thread descheduled meanwhile. */
    const int64_t cooldown = 400;
    dbpool *p = open_no_wait_pool(cooldown);
    dbpool__mock_fail_connect(1, -1, DBPOOL_ECONNECT);
    dbpool_conn *c = NULL;
    dbpool_error e;
    for (int i = 0; i < 2; i++)
        assert_int_equal(dbpool_try_acquire(p, &c, &e), DBPOOL_ECONNECT);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.breaker, DBPOOL_BREAKER_OPEN);

    ten_after_cooldown(p, true, cooldown, 1);
    ten_after_cooldown(p, false, cooldown, 2);

    /* The database is back: the next trial, a try_acquire, closes it. */
    dbpool__mock_fail_connect(0, 0, 0);
    dbt_sleep_ms(cooldown + 50);
    assert_int_equal(dbpool_try_acquire(p, &c, &e), DBPOOL_OK);
    dbpool_get_stats(p, &s);
    assert_int_equal(s.breaker, DBPOOL_BREAKER_CLOSED);
    assert_int_equal((int)s.breaker_half_opens, 3);
    assert_int_equal((int)s.breaker_closes, 1);
    dbpool_release(c);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

typedef struct slow_attempt {
    dbpool *p;
    int rc;
    dbpool_conn *conn;
} slow_attempt;

static void *try_slowly(void *arg) {
    slow_attempt *a = arg;
    dbpool_conn *c = NULL;
    a->rc = dbpool_try_acquire(a->p, &c, NULL);
    if (a->rc == DBPOOL_OK)
        dbpool_release(c);
    return NULL;
}

/* A connect admitted before the breaker opened that fails after it opened
 * says the database is still down: the cooldown counts from that failure. */
static void test_failure_while_open_restarts_cooldown(void **state) {
    (void)state;
    const int64_t cooldown = 1000, slow = 2500;
    dbpool *p = open_no_wait_pool(cooldown);
    dbpool__mock_fail_connect(1, -1, DBPOOL_ECONNECT);
    /* A slow attempt, admitted while the breaker is closed. */
    dbpool__mock_set_connect_delay_ms(slow);
    slow_attempt a = {.p = p, .rc = -100};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, try_slowly, &a), 0);
    int64_t t0 = dbt_now_ms();
    while (mock_connects() < 1) {
        if (dbt_now_ms() - t0 > 10000)
            fail_msg("the slow connect did not start within 10 s");
        dbt_sleep_ms(1);
    }
    /* Two quick failures open the breaker while it runs. */
    dbpool__mock_set_connect_delay_ms(0);
    dbpool_conn *c = NULL;
    for (int i = 0; i < 2; i++)
        assert_int_equal(dbpool_try_acquire(p, &c, NULL), DBPOOL_ECONNECT);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.breaker, DBPOOL_BREAKER_OPEN);
    /* The slow one fails well after the cooldown from the opening ended
     * (it started before, and takes 2.5 s against a 1 s cooldown). */
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(a.rc, DBPOOL_ECONNECT);
    long before = mock_connects();
    dbpool_error e;
    int rc = dbpool_try_acquire(p, &c, &e);
    if (rc != DBPOOL_EUNAVAILABLE || mock_connects() != before)
        fail_msg("a failure while the breaker was open did not restart the cooldown: %s, %ld connect "
                 "attempt(s)",
                 dbpool_errname(rc), mock_connects() - before);
    dbpool_get_stats(p, &s);
    assert_int_equal((int)s.breaker_opens, 1); /* restarted, not opened again */
    assert_int_equal(dbpool_close(p), 0);
}

/* A connect admitted before the breaker opened that fails while the
 * half-open trial runs is not the trial's outcome: the breaker stays
 * half-open, is not counted as opened again, and admits no second trial
 * while the first is under way. */
static void test_stale_failure_is_not_the_trial(void **state) {
    (void)state;
    const int64_t cooldown = 200;
    dbpool *p = open_pool_with_breaker(NULL, 1, cooldown);
    dbpool__mock_fail_connect(1, -1, DBPOOL_ECONNECT);
    /* Y: slow, admitted while the breaker is closed. */
    dbpool__mock_set_connect_delay_ms(1500);
    slow_attempt y = {.p = p, .rc = -100};
    pthread_t ty;
    assert_int_equal(pthread_create(&ty, NULL, try_slowly, &y), 0);
    int64_t t0 = dbt_now_ms();
    while (mock_connects() < 1) {
        if (dbt_now_ms() - t0 > 10000)
            fail_msg("Y's connect did not start within 10 s");
        dbt_sleep_ms(1);
    }
    /* X: fails at once and opens the breaker (threshold 1). */
    dbpool__mock_set_connect_delay_ms(0);
    dbpool_conn *c = NULL;
    assert_int_equal(dbpool_try_acquire(p, &c, NULL), DBPOOL_ECONNECT);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.breaker, DBPOOL_BREAKER_OPEN);
    /* Z: after the cooldown, the trial; slow enough to outlast Y. */
    dbt_sleep_ms(cooldown + 100);
    dbpool__mock_set_connect_delay_ms(5000);
    slow_attempt z = {.p = p, .rc = -100};
    pthread_t tz;
    assert_int_equal(pthread_create(&tz, NULL, try_slowly, &z), 0);
    t0 = dbt_now_ms();
    while (mock_connects() < 3) {
        if (dbt_now_ms() - t0 > 10000)
            fail_msg("the trial did not start within 10 s");
        dbt_sleep_ms(1);
    }
    dbpool_get_stats(p, &s);
    assert_int_equal(s.breaker, DBPOOL_BREAKER_HALF_OPEN);
    /* Y fails during the trial. */
    assert_int_equal(pthread_join(ty, NULL), 0);
    assert_int_equal(y.rc, DBPOOL_ECONNECT);
    dbpool_get_stats(p, &s);
    if (s.breaker != DBPOOL_BREAKER_HALF_OPEN || s.breaker_opens != 1)
        fail_msg(
            "after a failure admitted before the trial: breaker %s, opened %llu times (want half_open, 1)",
            dbpool_breaker_state_name(s.breaker), (unsigned long long)s.breaker_opens);
    /* Past a cooldown from Y's failure, the trial still runs: no second. */
    dbt_sleep_ms(cooldown + 100);
    long before = mock_connects();
    int rc = dbpool_try_acquire(p, &c, NULL);
    if (rc != DBPOOL_EUNAVAILABLE || mock_connects() != before)
        fail_msg("while the trial runs: %s, %ld connect attempt(s) (want EUNAVAILABLE, none)",
                 dbpool_errname(rc), mock_connects() - before);
    dbpool_get_stats(p, &s);
    assert_int_equal((int)s.breaker_half_opens, 1);
    /* The trial fails: open again, counted once more. */
    assert_int_equal(pthread_join(tz, NULL), 0);
    assert_int_not_equal(z.rc, DBPOOL_OK); /* refused, or past its connect timeout */
    dbpool_get_stats(p, &s);
    assert_int_equal(s.breaker, DBPOOL_BREAKER_OPEN);
    assert_int_equal((int)s.breaker_opens, 2);
    assert_int_equal(dbpool_close(p), 0);
}

static void *acquire_for_3s(void *arg) {
    dbpool_conn *c = NULL;
    if (dbpool_acquire(arg, 3000, &c, NULL) == DBPOOL_OK)
        dbpool_release(c);
    return NULL;
}

/* A connect asleep in its retry backoff when another's failure opens the
 * breaker makes no more attempts: none run during the cooldown. */
static void test_backoff_sleeper_stops_when_breaker_opens(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 4);
    o.max_connecting = 2;
    o.max_retries = 5;
    o.backoff_base_ms = 500;
    o.backoff_max_ms = 500;
    o.breaker_failures = 2;
    o.breaker_cooldown_ms = 10000;
    dbpool *p = dbt_open_lazy_mock(&o);
    dbpool__mock_fail_connect(1, -1, DBPOOL_ECONNECT);
    dbpool__mock_set_connect_delay_ms(20);
    pthread_t a, b;
    assert_int_equal(pthread_create(&a, NULL, acquire_for_3s, p), 0);
    /* The second connect fails while the first sleeps 250-500 ms, even if
     * the second thread starts 200 ms late. */
    dbt_sleep_ms(10);
    assert_int_equal(pthread_create(&b, NULL, acquire_for_3s, p), 0);
    assert_int_equal(pthread_join(a, NULL), 0);
    assert_int_equal(pthread_join(b, NULL), 0);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.breaker, DBPOOL_BREAKER_OPEN);
    if (mock_connects() != 2)
        fail_msg("%ld connect attempts: the one asleep in its backoff tried again after the breaker opened",
                 mock_connects());
    assert_int_equal(dbpool_close(p), 0);
}

/* A connector's attempt that opens the breaker is its last, at once: the
 * caller it was for gets the breaker's error then, not after the backoff
 * before an attempt that will not be made (here 4 to 8 s). */
static void test_attempt_that_opens_breaker_is_the_last(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.max_retries = 3;
    o.backoff_base_ms = 8000;
    o.backoff_max_ms = 8000;
    o.breaker_failures = 1;
    o.breaker_cooldown_ms = 60000; /* open for the whole test */
    dbpool *p = dbt_open_lazy_mock(&o);
    dbpool__mock_fail_connect(1, -1, DBPOOL_ECONNECT);
    dbt_timed_acquire w = {.p = p, .timeout_ms = 20000, .rc = -100};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, dbt_timed_acquire_main, &w), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    if (w.rc != DBPOOL_EUNAVAILABLE || w.took_ms > 3000)
        fail_msg("the caller got %s after %lld ms (want EUNAVAILABLE at once): %s", dbpool_errname(w.rc),
                 (long long)w.took_ms, w.message);
    assert_int_equal(mock_connects(), 1);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

/* A caller waiting for a release (the pool was full) while the breaker
 * opened: when the lease it waited for is closed instead of coming back,
 * it needs a new connection the breaker refuses, and nothing else could
 * serve it (no lease out, no connect under way). It gets the breaker's
 * error then, not a wait to its timeout. */
static void test_waiter_failed_when_nothing_left_to_serve_it(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.max_retries = 0;
    o.breaker_failures = 1;
    o.breaker_cooldown_ms = 60000; /* open for the whole test */
    dbpool *p = dbt_open_lazy_mock(&o);
    dbpool_error e;
    dbpool_conn *held;
    assert_int_equal(dbpool_acquire(p, 1000, &held, &e), DBPOOL_OK);
    /* From now on connects fail, after 300 ms. */
    dbpool__mock_fail_connect(2, -1, DBPOOL_ECONNECT);
    dbpool__mock_set_connect_delay_ms(300);
    dbt_timed_acquire w1 = {.p = p, .timeout_ms = 8000, .rc = -100}, w2 = w1;
    pthread_t t1, t2;
    /* W1's connect runs; W2 finds the pool full (one lease, one connect)
     * and waits for a release. */
    assert_int_equal(pthread_create(&t1, NULL, dbt_timed_acquire_main, &w1), 0);
    dbt_wait_for_waiters(p, 1, 10000);
    assert_int_equal(pthread_create(&t2, NULL, dbt_timed_acquire_main, &w2), 0);
    dbt_wait_for_waiters(p, 2, 10000);
    /* W1's connect fails and opens the breaker: W1 is told; W2 waits on,
     * since the lease could come back. */
    assert_int_equal(pthread_join(t1, NULL), 0);
    assert_int_equal(w1.rc, DBPOOL_EUNAVAILABLE);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.breaker, DBPOOL_BREAKER_OPEN);
    /* It does not: it is closed. */
    dbpool_discard(held);
    assert_int_equal(pthread_join(t2, NULL), 0);
    if (w2.rc != DBPOOL_EUNAVAILABLE || w2.took_ms > 4000)
        fail_msg("the waiter left with nothing to serve it got %s after %lld ms (want EUNAVAILABLE at "
                 "once): %s",
                 dbpool_errname(w2.rc), (long long)w2.took_ms, w2.message);
    assert_non_null(strstr(w2.message, "injected"));
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

static void *try_acquire_and_hold(void *arg) {
    slow_attempt *a = arg;
    dbpool_conn *c = NULL;
    a->rc = dbpool_try_acquire(a->p, &c, NULL);
    a->conn = c;
    return NULL;
}

/* A trial that succeeds closes the breaker, and callers in line who need a
 * new connection get one opened for them then: not only at the next
 * maintenance pass, nor (without one) never. Here the trial is a
 * try_acquire's, which keeps its connection; the caller in line waited for
 * a lease that was closed while the trial ran. */
static void test_closing_breaker_serves_waiters(void **state) {
    (void)state;
    const int64_t cooldown = 300;
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.max_retries = 0;
    o.breaker_failures = 1;
    o.breaker_cooldown_ms = cooldown;
    dbpool *p = dbt_open_lazy_mock(&o);
    dbpool_error e;
    dbpool_conn *held = NULL, *c = NULL;
    assert_int_equal(dbpool_acquire(p, 1000, &held, &e), DBPOOL_OK);
    dbpool__mock_fail_connect(2, 1, DBPOOL_ECONNECT);
    assert_int_equal(dbpool_try_acquire(p, &c, &e), DBPOOL_ECONNECT); /* opens the breaker */
    dbt_sleep_ms(cooldown + 50); /* the cooldown is a time: this waits it out, it synchronises nothing */
    /* The trial: a try_acquire whose connect takes 500 ms and succeeds. */
    dbpool__mock_set_connect_delay_ms(500);
    slow_attempt trial = {.p = p, .rc = -100};
    pthread_t tt;
    assert_int_equal(pthread_create(&tt, NULL, try_acquire_and_hold, &trial), 0);
    int64_t t0 = dbt_now_ms();
    while (mock_connects() < 3) {
        if (dbt_now_ms() - t0 > 10000)
            fail_msg("the trial did not start within 10 s");
        dbt_sleep_ms(1);
    }
    dbpool__mock_set_connect_delay_ms(0);
    /* A caller finds the pool full (a lease, the trial) and waits. */
    dbt_timed_acquire w = {.p = p, .timeout_ms = 8000, .rc = -100};
    pthread_t tw;
    assert_int_equal(pthread_create(&tw, NULL, dbt_timed_acquire_main, &w), 0);
    dbt_wait_for_waiters(p, 1, 10000);
    /* The lease it waited for is closed instead of coming back. */
    dbpool_discard(held);
    assert_int_equal(pthread_join(tt, NULL), 0);
    assert_int_equal(trial.rc, DBPOOL_OK);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.breaker, DBPOOL_BREAKER_CLOSED);
    assert_int_equal(pthread_join(tw, NULL), 0);
    if (w.rc != DBPOOL_OK || w.took_ms > 4000)
        fail_msg("the caller in line got %s after %lld ms once the breaker closed (want a connection at "
                 "once): %s",
                 dbpool_errname(w.rc), (long long)w.took_ms, w.message);
    dbpool_release(trial.conn);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

static void test_disabled_breaker(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.lazy_connect = true;
    o.max_retries = 0;
    o.breaker_failures = 0;
    dbpool *p = NULL;
    assert_int_equal(dbpool_open(&p, "mock:", &o, NULL), DBPOOL_OK);
    dbpool__mock_fail_connect(1, 10, DBPOOL_ECONNECT);
    dbpool_conn *c;
    for (int i = 0; i < 10; i++)
        assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_ECONNECT);
    assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
    dbpool_release(c);
    dbpool_close(p);
}

/* Failures of this process, not of the database (out of memory, a setting
 * that is wrong before anything is sent), say nothing about whether the
 * server is reachable: they do not open the breaker, which would refuse
 * every new connection for a cooldown with "database unavailable" while
 * the database is fine, and they reach the caller with their own code. */
static void test_local_failures_do_not_open_breaker(void **state) {
    (void)state;
    static const int codes[] = {DBPOOL_ENOMEM, DBPOOL_EINVAL};
    for (size_t k = 0; k < sizeof codes / sizeof codes[0]; k++) {
        dbpool__mock_reset();
        dbpool *p = open_pool_with_breaker(NULL, 2, 60000);
        dbpool__mock_fail_connect(1, 5, codes[k]);
        dbpool_conn *c;
        dbpool_error e;
        for (int i = 0; i < 5; i++) {
            int rc = dbpool_acquire(p, 1000, &c, &e);
            if (rc != codes[k])
                fail_msg("acquire %d with %s injected returned %s: %s", i + 1, dbpool_errname(codes[k]),
                         dbpool_errname(rc), e.message);
        }
        dbpool_stats s;
        dbpool_get_stats(p, &s);
        assert_int_equal(s.breaker, DBPOOL_BREAKER_CLOSED);
        assert_int_equal(s.breaker_opens, 0);
        assert_int_equal(s.connect_errors, 5);
        /* The local trouble is over: the next acquire connects at once. */
        assert_int_equal(dbpool_acquire(p, 1000, &c, &e), DBPOOL_OK);
        dbpool_release(c);
        assert_true(dbt_invariant_holds(p));
        assert_int_equal(dbpool_close(p), 0);
    }
}

/* A failure that does say the server is unreachable, after local ones:
 * the local ones are not part of the run of consecutive failures. */
static void test_local_failures_do_not_count_towards_opening(void **state) {
    (void)state;
    dbpool *p = open_pool_with_breaker(NULL, 2, 60000);
    dbpool_conn *c;
    dbpool_error e;
    dbpool__mock_fail_connect(1, 3, DBPOOL_ENOMEM);
    for (int i = 0; i < 3; i++)
        assert_int_equal(dbpool_acquire(p, 1000, &c, &e), DBPOOL_ENOMEM);
    dbpool__mock_fail_connect(4, 1, DBPOOL_ECONNECT);
    assert_int_equal(dbpool_acquire(p, 1000, &c, &e), DBPOOL_ECONNECT);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.breaker, DBPOOL_BREAKER_CLOSED);
    /* The second refusal in a row opens it (that acquire already says so). */
    dbpool__mock_fail_connect(5, 1, DBPOOL_ECONNECT);
    assert_int_equal(dbpool_acquire(p, 1000, &c, &e), DBPOOL_EUNAVAILABLE);
    dbpool_get_stats(p, &s);
    assert_int_equal(s.breaker, DBPOOL_BREAKER_OPEN);
    assert_int_equal(dbpool_close(p), 0);
}

/* The half-open trial failing for a reason of this process (out of
 * memory) tells nothing about the database: the breaker neither opens
 * again nor stays stuck with a trial "in flight"; the next connect is the
 * trial, and it closes the breaker. */
static void test_trial_failing_locally_leaves_the_trial_to_the_next(void **state) {
    (void)state;
    dbpool *p = open_pool_with_breaker(NULL, 2, 300);
    dbpool_conn *c;
    dbpool_error e;
    dbpool__mock_fail_connect(1, 2, DBPOOL_ECONNECT);
    assert_int_equal(dbpool_acquire(p, 1000, &c, &e), DBPOOL_ECONNECT);
    assert_int_equal(dbpool_acquire(p, 1000, &c, &e), DBPOOL_EUNAVAILABLE);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.breaker, DBPOOL_BREAKER_OPEN);
    dbt_sleep_ms(350); /* the cooldown */
    dbpool__mock_fail_connect(3, 1, DBPOOL_ENOMEM);
    assert_int_equal(dbpool_try_acquire(p, &c, &e), DBPOOL_ENOMEM);
    dbpool_get_stats(p, &s);
    assert_int_equal(s.breaker, DBPOOL_BREAKER_HALF_OPEN);
    assert_int_equal(s.breaker_opens, 1);
    assert_int_equal(dbpool_acquire(p, 1000, &c, &e), DBPOOL_OK);
    dbpool_get_stats(p, &s);
    assert_int_equal(s.breaker, DBPOOL_BREAKER_CLOSED);
    dbpool_release(c);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

/* After an outage, the half-open trial finds the server at its connection
 * limit: the server answers, so the breaker closes, and the callers in
 * line wait for a lease to come back (or a session to end on the server),
 * as with a closed breaker. The trial used to end without a verdict: the
 * waiter got a quick DBPOOL_ECONNECT though a lease came back soon, and the
 * breaker stayed half-open until some connect succeeded. */
static void test_trial_at_connection_limit_closes_breaker(void **state) {
    (void)state;
    int64_t cooldown_ms = 200;
    dbpool *p = open_pool_with_breaker(NULL, 1, cooldown_ms);
    dbpool_conn *a = dbt_acquire(p); /* connect 1 */
    dbpool__mock_fail_connect(2, -1, DBPOOL_ECONNECT);
    dbpool_conn *c = NULL;
    dbpool_error e;
    assert_int_not_equal(dbpool_acquire(p, 2000, &c, &e), DBPOOL_OK); /* the outage opens the breaker */
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.breaker, DBPOOL_BREAKER_OPEN);
    dbpool__mock_set_connect_at_limit(true); /* back, but at its connection limit */
    dbt_sleep_ms(cooldown_ms + 50); /* the cooldown is a time: this waits it out, it synchronises nothing */
    dbt_timed_acquire w = {.p = p, .timeout_ms = 20000};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, dbt_timed_acquire_main, &w), 0);
    dbpool__mock_counters n;
    int64_t until = dbt_now_ms() + 5000;
    do {
        dbt_sleep_ms(5);
        dbpool__mock_get_counters(&n);
    } while (n.connect_failures < 2 && dbt_now_ms() < until);
    assert_true(n.connect_failures >= 2);           /* the trial, refused at the limit */
    assert_int_equal(dbpool_release(a), DBPOOL_OK); /* a lease comes back: the waiter's */
    assert_int_equal(pthread_join(t, NULL), 0);
    if (w.rc != DBPOOL_OK)
        fail_msg("waiter: %s after %lld ms: %s", dbpool_errname(w.rc), (long long)w.took_ms, w.message);
    dbpool_get_stats(p, &s);
    assert_int_equal(s.breaker, DBPOOL_BREAKER_CLOSED);
    assert_int_equal(s.breaker_half_opens, 1);
    assert_int_equal(s.breaker_closes, 1);
    assert_true(dbt_invariant_holds(p));
    dbpool_close(p);
}

/* The lines of the breaker's transitions come out in the order the
 * transitions happened, whichever threads make them. A thread logs after
 * dropping the lock; a trial's failure used to be logged by the thread
 * that tried, so when that thread was slow to log (here: held inside the
 * log callback by its own "connect attempt failed" line), the next trial's
 * "half-open" line, logged at once by another thread, came out before the
 * "opened again" of the trial before it. */
typedef struct ordered_log {
    log_lines lines;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool armed;   /* hold the next "connect attempt" line until released */
    bool holding; /* a thread is held in the callback */
    bool release;
} ordered_log;

static void collect_and_hold(void *user, dbpool_log_level level, const char *msg) {
    ordered_log *l = user;
    collect(&l->lines, level, msg);
    if (!strstr(msg, "connect attempt"))
        return;
    pthread_mutex_lock(&l->mu);
    if (l->armed) {
        l->armed = false;
        l->holding = true;
        pthread_cond_broadcast(&l->cv);
        while (!l->release)
            pthread_cond_wait(&l->cv, &l->mu);
    }
    pthread_mutex_unlock(&l->mu);
}

static void *try_once(void *arg) {
    dbpool_conn *c;
    dbpool_error e;
    assert_int_equal(dbpool_try_acquire(arg, &c, &e), DBPOOL_ECONNECT);
    return NULL;
}

static void test_transitions_logged_in_order(void **state) {
    (void)state;
    ordered_log l = {.lines = {.mu = PTHREAD_MUTEX_INITIALIZER},
                     .mu = PTHREAD_MUTEX_INITIALIZER,
                     .cv = PTHREAD_COND_INITIALIZER};
    dbpool_options o;
    dbt_options(&o, 0, 4);
    o.max_retries = 0;
    o.breaker_failures = 1;
    o.breaker_cooldown_ms = 100;
    o.log_fn = collect_and_hold;
    o.log_user = &l;
    o.log_level = DBPOOL_LOG_DEBUG;
    dbpool *p = dbt_open_lazy_mock(&o);
    dbpool__mock_fail_connect(1, -1, DBPOOL_ECONNECT);
    dbpool_conn *c;
    dbpool_error e;
    assert_int_equal(dbpool_try_acquire(p, &c, &e), DBPOOL_ECONNECT); /* opened */

    /* The first trial, on a thread held in the callback by its failure's
     * "connect attempt" line, after the failure has opened the breaker
     * again and before that thread logs it. */
    dbt_sleep_ms(200);
    pthread_mutex_lock(&l.mu);
    l.armed = true;
    pthread_mutex_unlock(&l.mu);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, try_once, p), 0);
    pthread_mutex_lock(&l.mu);
    while (!l.holding)
        pthread_cond_wait(&l.cv, &l.mu);
    pthread_mutex_unlock(&l.mu);

    /* The second trial, after the cooldown that the first's failure
     * started, on this thread. */
    dbt_sleep_ms(200);
    assert_int_equal(dbpool_try_acquire(p, &c, &e), DBPOOL_ECONNECT);
    pthread_mutex_lock(&l.mu);
    l.release = true;
    pthread_cond_broadcast(&l.cv);
    pthread_mutex_unlock(&l.mu);
    assert_int_equal(pthread_join(t, NULL), 0);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.breaker_half_opens, 2);
    assert_int_equal(s.breaker_opens, 3);
    dbpool_close(p);

    const char *want[] = {"circuit breaker opened (", "circuit breaker half-open",
                          "circuit breaker opened again", "circuit breaker half-open",
                          "circuit breaker opened again"};
    size_t n = 0;
    char got[1024] = "";
    for (int i = 0; i < l.lines.n; i++) {
        if (!strstr(l.lines.text[i], "circuit breaker"))
            continue;
        snprintf(got + strlen(got), sizeof got - strlen(got), "\n  %.60s", l.lines.text[i]);
        if (n < sizeof want / sizeof want[0] && strstr(l.lines.text[i], want[n]))
            n++;
        else
            n = 99;
    }
    if (n != sizeof want / sizeof want[0])
        fail_msg("the breaker's lines are not in the order of its transitions:%s", got);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_opens_fails_fast_and_recovers, dbt_mock_setup),
        cmocka_unit_test_setup(test_manual_reset, dbt_mock_setup),
        cmocka_unit_test_setup(test_full_pool_still_serves_while_open, dbt_mock_setup),
        cmocka_unit_test_setup(test_lease_out_still_fails_fast_while_open, dbt_mock_setup),
        cmocka_unit_test_setup(test_success_restarts_failure_count, dbt_mock_setup),
        cmocka_unit_test_setup(test_open_for_the_whole_cooldown, dbt_mock_setup),
        cmocka_unit_test_setup(test_disabled_breaker, dbt_mock_setup),
        cmocka_unit_test_setup(test_backoff_sleeper_stops_when_breaker_opens, dbt_mock_setup),
        cmocka_unit_test_setup(test_attempt_that_opens_breaker_is_the_last, dbt_mock_setup),
        cmocka_unit_test_setup(test_no_wait_callers_get_one_trial, dbt_mock_setup),
        cmocka_unit_test_setup(test_failure_while_open_restarts_cooldown, dbt_mock_setup),
        cmocka_unit_test_setup(test_stale_failure_is_not_the_trial, dbt_mock_setup),
        cmocka_unit_test_setup(test_waiter_failed_when_nothing_left_to_serve_it, dbt_mock_setup),
        cmocka_unit_test_setup(test_closing_breaker_serves_waiters, dbt_mock_setup),
        cmocka_unit_test_setup(test_local_failures_do_not_open_breaker, dbt_mock_setup),
        cmocka_unit_test_setup(test_local_failures_do_not_count_towards_opening, dbt_mock_setup),
        cmocka_unit_test_setup(test_trial_failing_locally_leaves_the_trial_to_the_next, dbt_mock_setup),
        cmocka_unit_test_setup(test_trial_at_connection_limit_closes_breaker, dbt_mock_setup),
        cmocka_unit_test_setup(test_transitions_logged_in_order, dbt_mock_setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
