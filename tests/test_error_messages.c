/* Error messages and log lines tell the truth: every figure in them is the
 * one that applied, and the log's order follows cause then effect. Uses the
 * mock backend (and a silent loopback listener where a real driver's
 * message is read). */
#include "driver_mock.h"
#include "loopback.h"
#include "testsupport.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

/* A connect that dbpool_open's acquire_timeout_ms cut short names that
 * bound, not connect_timeout_ms, which had not applied: with
 * acquire_timeout_ms 300 and connect_timeout_ms 10000 the open used to fail
 * after 300 ms with nothing (mock) or "(connect_timeout_ms 10000)"
 * (PostgreSQL) as the bound. */
static void expect_open_names_acquire_bound(const char *url) {
    dbpool_options o;
    dbt_options(&o, 1, 1);
    o.acquire_timeout_ms = 300;
    o.connect_timeout_ms = 10000;
    o.max_retries = 0;
    o.maintenance_interval_ms = 0;
    dbpool *p = NULL;
    dbpool_error e;
    int64_t t0 = dbt_now_ms();
    int rc = dbpool_open(&p, url, &o, &e);
    int64_t took = dbt_now_ms() - t0;
    assert_int_equal(rc, DBPOOL_ETIMEDOUT);
    if (took > 5000)
        fail_msg("the open took %lld ms with acquire_timeout_ms 300", (long long)took);
    if (!strstr(e.message, "acquire_timeout_ms 300") || strstr(e.message, "(connect_timeout_ms 10000)"))
        fail_msg("the open's timeout should name acquire_timeout_ms 300 as the bound: %s", e.message);
    if (!strstr(e.message, "gave up after "))
        fail_msg("the open's timeout should say how long the attempt ran: %s", e.message);
}

static void test_open_timeout_names_acquire_bound_mock(void **state) {
    (void)state;
    dbpool__mock_set_connect_delay_ms(5000);
    expect_open_names_acquire_bound("mock:");
}

#ifdef DBPOOL_HAVE_PG
static void test_open_timeout_names_acquire_bound_pg(void **state) {
    (void)state;
    int port;
    int ls = dbt_loopback_socket(&port, 16); /* listens, never accepts */
    char url[128];
    snprintf(url, sizeof url, "postgresql://nobody@127.0.0.1:%d/db", port);
    expect_open_names_acquire_bound(url);
    close(ls);
}
#endif

/* A connect that ran into connect_timeout_ms names that bound. */
static void test_connect_timeout_named(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.acquire_timeout_ms = 5000;
    o.connect_timeout_ms = 200;
    o.max_retries = 0;
    dbpool *p = dbt_open_lazy_mock(&o);
    dbpool_error e;
    dbpool__mock_set_connect_delay_ms(5000);
    dbpool_conn *c = NULL;
    assert_int_equal(dbpool_acquire(p, 0, &c, &e), DBPOOL_ETIMEDOUT);
    if (!strstr(e.message, "connect_timeout_ms 200"))
        fail_msg("the connect's timeout should name connect_timeout_ms 200: %s", e.message);
    dbpool_close(p);
}

/* The "N" of "timed out after N ms" in a timeout's message (-1: none). */
static long long timed_out_after(const char *msg) {
    const char *t = strstr(msg, "timed out after ");
    long long n = -1;
    if (t && sscanf(t, "timed out after %lld ms", &n) != 1)
        n = -1;
    return n;
}

/* A connection taken back from the thread cache that needs validation is
 * checked before the acquire's wait. The wait's deadline and the message's
 * "timed out after N ms" used to count from after that check: a validation
 * of 400 ms that failed, then a wait of 300 ms, took 700 ms while the
 * message said 300. They count from the call's start now. */
static void test_timeout_counts_thread_cache_validation(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.max_retries = 0;
    o.thread_cache = true;
    o.validation = DBPOOL_VALIDATE_IF_IDLE;
    o.validation_window_ms = 1;
    dbpool *p = dbt_open_lazy_mock(&o);
    dbpool_error e;
    dbpool_conn *c = dbt_acquire(p);
    dbpool_release(c);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.thread_cached, 1); /* parked for this thread */
    dbt_sleep_ms(20);                     /* idle past validation_window_ms: due for a check */
    dbpool__mock_set_ping_delay_ms(400);
    dbpool__mock_fail_ping(1, -1);
    dbpool__mock_set_connect_delay_ms(5000); /* the replacement does not come in time */
    int64_t t0 = dbt_now_ms();
    c = NULL;
    assert_int_equal(dbpool_acquire(p, 300, &c, &e), DBPOOL_ETIMEDOUT);
    int64_t took = dbt_now_ms() - t0;
    dbpool__mock_counters n;
    dbpool__mock_get_counters(&n);
    assert_int_equal(n.pings, 1); /* the check ran */
    long long said = timed_out_after(e.message);
    if (said < 0 || said + 100 < took || said > took + 5)
        fail_msg("the acquire took %lld ms, the message says: %s", (long long)took, e.message);
    if (took > 400 + 300 - 50)
        fail_msg("the acquire took %lld ms: its 300 ms timeout should count from the call's start, "
                 "validation included",
                 (long long)took);
    dbpool_close(p);
}

/* Log lines, collected in order. */
typedef struct log_lines {
    pthread_mutex_t lock;
    char text[32][512];
    int n;
} log_lines;

static void collect(void *user, dbpool_log_level level, const char *message) {
    (void)level;
    log_lines *l = user;
    pthread_mutex_lock(&l->lock);
    if (l->n < 32)
        snprintf(l->text[l->n++], sizeof l->text[0], "%s", message);
    pthread_mutex_unlock(&l->lock);
}

/* Index of the first line containing `needle`, -1 if none. */
static int line_with(log_lines *l, const char *needle) {
    pthread_mutex_lock(&l->lock);
    int at = -1;
    for (int i = 0; i < l->n && at < 0; i++)
        if (strstr(l->text[i], needle))
            at = i;
    pthread_mutex_unlock(&l->lock);
    return at;
}

/* The log follows cause then effect: the failed attempt that opened the
 * breaker is logged before "circuit breaker opened". It used to come after. */
static void test_breaker_opened_logged_after_its_cause(void **state) {
    (void)state;
    log_lines l = {.lock = PTHREAD_MUTEX_INITIALIZER};
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.max_retries = 0;
    o.breaker_failures = 1;
    o.log_fn = collect;
    o.log_user = &l;
    dbpool *p = dbt_open_lazy_mock(&o);
    dbpool_error e;
    dbpool__mock_fail_connect(1, 1, DBPOOL_ECONNECT);
    dbpool_conn *c = NULL;
    assert_int_equal(dbpool_acquire(p, 0, &c, &e), DBPOOL_ECONNECT);
    int failed = line_with(&l, "connect attempt 1 of 1 failed");
    int opened = line_with(&l, "circuit breaker opened");
    if (failed < 0 || opened < 0 || failed > opened)
        fail_msg("want the failed attempt (line %d) before the breaker it opened (line %d)", failed, opened);
    dbpool_close(p);
}

/* A timeout while the breaker is half-open (its trial connect under way)
 * says so: it used to say "circuit breaker open". */
static void test_timeout_says_half_open(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.max_retries = 0;
    o.breaker_failures = 1;
    o.breaker_cooldown_ms = 50;
    dbpool *p = dbt_open_lazy_mock(&o);
    dbpool_error e;
    dbpool__mock_fail_connect(1, 1, DBPOOL_ECONNECT);
    dbpool_conn *c = NULL;
    assert_int_equal(dbpool_acquire(p, 0, &c, &e), DBPOOL_ECONNECT); /* opens the breaker */
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.breaker, DBPOOL_BREAKER_OPEN);
    dbt_sleep_ms(100);                      /* past the cooldown */
    dbpool__mock_set_connect_delay_ms(800); /* the trial outlasts the wait below */
    assert_int_equal(dbpool_acquire(p, 200, &c, &e), DBPOOL_ETIMEDOUT);
    dbpool_get_stats(p, &s);
    assert_int_equal(s.breaker, DBPOOL_BREAKER_HALF_OPEN);
    if (!strstr(e.message, "circuit breaker half_open") || strstr(e.message, "circuit breaker open"))
        fail_msg("the breaker is half-open: %s", e.message);
    dbpool_close(p); /* waits for the trial (800 ms) */
}

static void *acquire_now(void *arg) {
    dbpool *p = arg;
    dbpool_conn *c = NULL;
    dbpool_error e;
    if (dbpool_acquire(p, 0, &c, &e) == DBPOOL_OK) /* connects on this thread */
        dbpool_release(c);
    return NULL;
}

/* Poll until the pool has n connects under way (fails after 5 s). */
static void wait_for_connecting(dbpool *p, int n) {
    int64_t until = dbt_now_ms() + 5000;
    dbpool_stats s;
    for (;;) {
        dbpool_get_stats(p, &s);
        if (s.connecting == n)
            return;
        if (dbt_now_ms() > until)
            fail_msg("%d connecting after 5 s, want %d", s.connecting, n);
        dbt_sleep_ms(1);
    }
}

/* try_acquire refused with one connection in use of max 2, the other
 * place taken by a connect under way: its message read "(1 in use, max
 * 2)", which does not explain the refusal. It names the connect now. */
static void test_try_acquire_names_connecting(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 2);
    dbpool *p = dbt_open_lazy_mock(&o);
    dbpool_error e;
    dbpool_conn *held = dbt_acquire(p);
    dbpool__mock_set_connect_delay_ms(500);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, acquire_now, p), 0);
    wait_for_connecting(p, 1);
    dbpool_conn *c = NULL;
    assert_int_equal(dbpool_try_acquire(p, &c, &e), DBPOOL_EBUSY);
    if (!strstr(e.message, "1 in use, max 2") || !strstr(e.message, "1 connecting"))
        fail_msg("the refusal should name the connect that holds the second place: %s", e.message);
    pthread_join(t, NULL);
    dbpool_release(held);
    dbpool_close(p);
}

/* A lease reclaimed as a leak holds no place: a timeout used to count it
 * as a holder, and name it the oldest, beside "1 in use" ("1 in use, ...;
 * 2 holders, the oldest holding its connection for 305 ms" with max 1).
 * It is said apart now. */
static void test_timeout_does_not_blame_reclaimed_lease(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.lazy_connect = true;
    o.maintenance_interval_ms = 10;
    o.leak_threshold_ms = 300;
    o.leak_reclaim_ms = 300;
    dbpool *p = NULL;
    dbpool_error e;
    assert_int_equal(dbpool_open(&p, "mock:", &o, &e), DBPOOL_OK);
    dbpool_conn *leaked = dbt_acquire(p);
    int64_t until = dbt_now_ms() + 5000;
    dbpool_stats s;
    for (dbpool_get_stats(p, &s); s.leaks_reclaimed == 0; dbpool_get_stats(p, &s)) {
        if (dbt_now_ms() > until)
            fail_msg("the leak was not reclaimed within 5 s");
        dbt_sleep_ms(5);
    }
    dbpool_conn *held = dbt_acquire(p); /* the place given back, 300 ms before it is reclaimed too */
    dbpool_conn *c = NULL;
    int rc = dbpool_acquire(p, 0, &c, &e);
    dbpool_get_stats(p, &s);
    if (rc != DBPOOL_ETIMEDOUT)
        fail_msg("want a timeout, got %s (%d reclaimed: the machine stalled?)", dbpool_errname(rc),
                 (int)s.leaks_reclaimed);
    if (!strstr(e.message, "1 in use") || !strstr(e.message, "; 1 holder,") ||
        !strstr(e.message, "1 reclaimed lease still out"))
        fail_msg("want 1 in use, 1 holder and the reclaimed lease said apart: %s", e.message);
    dbpool_release(held);
    dbpool_release(leaked);
    dbpool_close(p);
}

/* The last connect error is the likelier cause of a timeout, and it comes
 * last in the message: with a long pool name, a suspended pool, an open
 * breaker and holders to describe, it was cut off the 512-byte message.
 * Now the holders' part yields to it. */
static void test_timeout_keeps_last_connect_error(void **state) {
    (void)state;
    char name[128];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    dbpool_options o;
    dbt_options(&o, 0, 3);
    o.name = name;
    o.suspend_fails_fast = false; /* a suspended pool waits */
    o.max_retries = 0;
    o.breaker_failures = 1;
    o.breaker_cooldown_ms = 60000;
    dbpool *p = dbt_open_lazy_mock(&o);
    dbpool_error e;
    /* Two holders, one of them through this thread's cache. */
    dbpool_conn *a = dbt_acquire(p);
    dbpool_release(a);
    a = dbt_acquire(p);
    dbpool_conn *b = dbt_acquire(p);
    /* The third connect fails and opens the breaker. */
    dbpool__mock_fail_connect(3, -1, DBPOOL_ECONNECT);
    dbpool_conn *c = NULL;
    assert_int_not_equal(dbpool_acquire(p, 200, &c, &e), DBPOOL_OK);
    assert_int_equal(dbpool_suspend(p), DBPOOL_OK);
    int rc = dbpool_acquire(p, 100, &c, &e);
    if (rc != DBPOOL_ETIMEDOUT)
        fail_msg("want a timeout, got %s: %s", dbpool_errname(rc), e.message);
    if (!strstr(e.message, "suspended") || !strstr(e.message, "circuit breaker open") ||
        !strstr(e.message, "; last connect error (") || !strstr(e.message, "injected (attempt 3)"))
        fail_msg("the last connect error was cut off the message: %s", e.message);
    assert_true(strlen(e.message) < sizeof e.message);
    assert_int_equal(dbpool_resume(p), DBPOOL_OK);
    dbpool_release(a);
    dbpool_release(b);
    dbpool_close(p);
}

static void *acquire_and_release(void *arg) {
    dbpool *p = arg;
    dbpool_conn *c = NULL;
    dbpool_error e;
    if (dbpool_acquire(p, 5000, &c, &e) == DBPOOL_OK)
        dbpool_release(c);
    return NULL;
}

/* dbpool_resume that lets the breaker's trial connect in (a caller waited
 * through the suspend for a connection the open breaker had refused)
 * logged "circuit breaker half-open" before "resumed", the effect before
 * its cause. */
static void test_resume_logged_before_breaker_trial(void **state) {
    (void)state;
    log_lines l = {.lock = PTHREAD_MUTEX_INITIALIZER};
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.max_retries = 0;
    o.breaker_failures = 1;
    o.breaker_cooldown_ms = 50;
    o.suspend_fails_fast = false;
    o.log_fn = collect;
    o.log_user = &l;
    dbpool *p = dbt_open_lazy_mock(&o);
    dbpool_error e;
    dbpool__mock_fail_connect(1, 1, DBPOOL_ECONNECT);
    dbpool_conn *c = NULL;
    assert_int_equal(dbpool_acquire(p, 0, &c, &e), DBPOOL_ECONNECT); /* opens the breaker */
    assert_int_equal(dbpool_suspend(p), DBPOOL_OK);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, acquire_and_release, p), 0);
    dbt_wait_for_waiters(p, 1, 5000);
    dbt_sleep_ms(100); /* past the cooldown */
    assert_int_equal(dbpool_resume(p), DBPOOL_OK);
    pthread_join(t, NULL);
    int resumed = line_with(&l, "resumed");
    int trial = line_with(&l, "circuit breaker half-open");
    if (resumed < 0 || trial < 0 || resumed > trial)
        fail_msg("want \"resumed\" (line %d) before the trial it let in (line %d)", resumed, trial);
    dbpool_close(p);
}

/* A retry cut short by the deadline its connection's attempts share (here
 * a non-waiting acquire's, connect_timeout_ms from its first attempt) says
 * so; it used to blame "the caller's deadline", which read wrongly for the
 * maintenance thread's refill, where there is no caller. */
static void test_retry_cut_by_shared_deadline_named(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.connect_timeout_ms = 300;
    o.max_retries = 1;
    o.backoff_base_ms = 1;
    o.backoff_max_ms = 1;
    dbpool *p = dbt_open_lazy_mock(&o);
    dbpool_error e;
    /* Each attempt takes 250 ms; the first then fails, the second has
     * about 50 ms left of the 300. */
    dbpool__mock_set_connect_delay_ms(250);
    dbpool__mock_fail_connect(1, 1, DBPOOL_ECONNECT);
    dbpool_conn *c = NULL;
    assert_int_equal(dbpool_acquire(p, 0, &c, &e), DBPOOL_ETIMEDOUT);
    if (!strstr(e.message, "the deadline for this connection, its earlier attempts included") ||
        !strstr(e.message, "before connect_timeout_ms 300"))
        fail_msg("the second attempt was cut by the deadline both attempts share: %s", e.message);
    dbpool_close(p);
}

/* A failed half-open trial opens the breaker again after one failure: the
 * log line used to be the first opening's, "circuit breaker opened
 * (breaker_failures 3)", as if three more connects had failed. */
static void test_breaker_reopen_logged_as_failed_trial(void **state) {
    (void)state;
    log_lines l = {.lock = PTHREAD_MUTEX_INITIALIZER};
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.max_retries = 2;
    o.backoff_base_ms = 1;
    o.backoff_max_ms = 1;
    o.breaker_failures = 3;
    o.breaker_cooldown_ms = 50;
    o.log_fn = collect;
    o.log_user = &l;
    dbpool *p = dbt_open_lazy_mock(&o);
    dbpool_error e;
    dbpool__mock_fail_connect(1, -1, DBPOOL_ECONNECT);
    dbpool_conn *c = NULL;
    assert_int_equal(dbpool_acquire(p, 0, &c, &e), DBPOOL_ECONNECT); /* three attempts: opened */
    dbt_sleep_ms(100);                                               /* past the cooldown */
    assert_int_equal(dbpool_acquire(p, 0, &c, &e), DBPOOL_ECONNECT); /* the trial, failed */
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.breaker_opens, 2);
    int first = line_with(&l, "circuit breaker opened (breaker_failures 3)");
    int again = line_with(&l, "circuit breaker opened again: the trial connect failed");
    if (first < 0 || again < first)
        fail_msg("want the first opening (line %d), then the failed trial's (line %d)", first, again);
    pthread_mutex_lock(&l.lock);
    int openings = 0;
    for (int i = 0; i < l.n; i++)
        openings += strstr(l.text[i], "(breaker_failures 3)") != NULL;
    pthread_mutex_unlock(&l.lock);
    assert_int_equal(openings, 1);
    dbpool_close(p);
}

/* A logger slow to write the leak report (it waits, bounded, for the
 * leaked lease's "came back" line) and writes each line as it returns. */
static struct {
    pthread_mutex_t m;
    pthread_cond_t cv;
    bool reporting, came_back;
    log_lines lines;
} slow = {
    .m = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .lines.lock = PTHREAD_MUTEX_INITIALIZER};

static void slow_leak_logger(void *user, dbpool_log_level level, const char *message) {
    (void)user;
    if (strstr(message, "possible leak")) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 300 * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&slow.m);
        slow.reporting = true;
        pthread_cond_broadcast(&slow.cv);
        while (!slow.came_back)
            if (pthread_cond_timedwait(&slow.cv, &slow.m, &until) != 0)
                break;
        pthread_mutex_unlock(&slow.m);
        collect(&slow.lines, level, message);
        return;
    }
    collect(&slow.lines, level, message);
    if (strstr(message, "came back")) {
        pthread_mutex_lock(&slow.m);
        slow.came_back = true;
        pthread_cond_broadcast(&slow.cv);
        pthread_mutex_unlock(&slow.m);
    }
}

/* A leaked lease released while the maintenance thread was still logging
 * its report had its "reported as leaked came back" line written first:
 * the answer before the report. The release now waits for the report. */
static void test_leak_return_logged_after_report(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.lazy_connect = true;
    o.maintenance_interval_ms = 10;
    o.leak_threshold_ms = 50;
    o.log_fn = slow_leak_logger;
    dbpool *p = NULL;
    dbpool_error e;
    assert_int_equal(dbpool_open(&p, "mock:", &o, &e), DBPOOL_OK);
    dbpool_conn *c = dbt_acquire(p);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    pthread_mutex_lock(&slow.m);
    while (!slow.reporting)
        if (pthread_cond_timedwait(&slow.cv, &slow.m, &until) != 0)
            fail_msg("no leak report within 5 s");
    pthread_mutex_unlock(&slow.m);
    assert_int_equal(dbpool_release(c), DBPOOL_OK); /* while the report is being logged */
    dbpool_close(p);
    int report = line_with(&slow.lines, "possible leak");
    int back = line_with(&slow.lines, "reported as leaked came back");
    if (report < 0 || back < 0 || report > back)
        fail_msg("want the leak report (line %d) before the lease's return (line %d)", report, back);
}

/* Connections opened by the connector threads, for callers who wait (the
 * usual way a pool grows), were never logged: operations.md promises
 * "connection opened" at DEBUG, and only those opened on a caller's own
 * thread (dbpool_open, a timeout of 0, the maintenance refill) had it. */
static void test_connector_opened_connection_logged(void **state) {
    (void)state;
    log_lines l = {.lock = PTHREAD_MUTEX_INITIALIZER};
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.log_level = DBPOOL_LOG_DEBUG;
    o.log_fn = collect;
    o.log_user = &l;
    dbpool *p = dbt_open_lazy_mock(&o);
    dbpool_conn *c = dbt_acquire(p); /* waits: a connector opens it */
    dbpool_release(c);
    dbpool_close(p); /* joins the connector: its log line is in */
    if (line_with(&l, "opened connection #1") < 0)
        fail_msg("no \"opened connection #1\" line at DEBUG for the connector's connection");
}

/* Out of threads: the advice must be one that helps. The connector
 * message said "lower max_connecting or the process's thread limit" (the
 * limit wants raising), and the maintenance one offered
 * maintenance_interval_ms=0 even when leak detection needs the thread, a
 * setting dbpool_open then refuses. Run in a child as nobody, under
 * RLIMIT_NPROC (root ignores the limit; others may already be near it). */
static void test_out_of_threads_advice(void **state) {
    (void)state;
    if (getuid() != 0)
        skip();
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        struct rlimit r = {20, 20};
        if (setgid(65534) != 0 || setuid(65534) != 0 || setrlimit(RLIMIT_NPROC, &r) != 0)
            _exit(3);
        char out[2 * sizeof(((dbpool_error *)0)->message) + 2] = "";
        dbpool_options o;
        dbt_options(&o, 0, 1);
        o.lazy_connect = true;
        o.max_connecting = 100;
        dbpool *p = NULL;
        dbpool_error e;
        if (dbpool_open(&p, "mock:", &o, &e) != DBPOOL_ENOMEM)
            _exit(4);
        int started = 0;
        if (sscanf(e.message, "could not start connector thread %d", &started) != 1 || started < 2)
            _exit(5);
        snprintf(out, sizeof out, "%s\n", e.message);
        /* One connector fewer: then the maintenance thread is the one
         * that cannot start (once the first pool's threads are reaped). */
        o.max_connecting = started - 1;
        o.leak_threshold_ms = 1000;
        int rc = DBPOOL_OK;
        for (int i = 0; i < 200; i++) {
            rc = dbpool_open(&p, "mock:", &o, &e);
            if (rc == DBPOOL_OK)
                dbpool_close(p);
            if (rc != DBPOOL_ENOMEM || strstr(e.message, "maintenance thread"))
                break;
            usleep(10000);
        }
        if (rc != DBPOOL_ENOMEM || !strstr(e.message, "maintenance thread"))
            _exit(6);
        strncat(out, e.message, sizeof out - strlen(out) - 1);
        if (write(fds[1], out, strlen(out)) < 0)
            _exit(7);
        _exit(0);
    }
    close(fds[1]);
    char got[2 * sizeof(((dbpool_error *)0)->message) + 2];
    size_t n = 0;
    ssize_t k;
    while (n < sizeof got - 1 && (k = read(fds[0], got + n, sizeof got - 1 - n)) > 0)
        n += (size_t)k;
    got[n] = '\0';
    close(fds[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("the child could not set the scene (exit %d): %s", WEXITSTATUS(status), got);
    char *maint = strchr(got, '\n');
    assert_non_null(maint);
    *maint++ = '\0';
    if (!strstr(got, "raise the limit on threads"))
        fail_msg("the connector message should say to raise the thread limit: %s", got);
    if (strstr(maint, "maintenance_interval_ms=0") || !strstr(maint, "raise the limit on threads"))
        fail_msg("with leak detection on, maintenance_interval_ms=0 is refused: %s", maint);
}

/* A check bounded by validation_timeout_ms that ran out said only "no
 * answer in time" (the driver's words): which bound applied, and so what
 * to raise, was left to guess. The validation's log line and
 * dbpool_check_health's error name it now. */
static void test_validation_timeout_named(void **state) {
    (void)state;
    log_lines l = {.lock = PTHREAD_MUTEX_INITIALIZER};
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.validation = DBPOOL_VALIDATE_ALWAYS;
    o.validation_window_ms = 2000; /* the replacement, just opened, is not checked */
    o.validation_timeout_ms = 100;
    o.log_fn = collect;
    o.log_user = &l;
    dbpool *p = dbt_open_lazy_mock(&o);
    dbpool_error e;
    dbpool_release(dbt_acquire(p)); /* leased once: checked from now on */
    dbpool__mock_set_ping_delay_ms(2000);
    dbpool_health h;
    assert_int_equal(dbpool_check_health(p, &h, &e), DBPOOL_ETIMEDOUT);
    int line = line_with(&l, "failed validation");
    if (line < 0 || !strstr(l.text[line], "validation_timeout_ms 100"))
        fail_msg("the validation's log line should name validation_timeout_ms 100: %s",
                 line < 0 ? "(none)" : l.text[line]);
    if (!strstr(e.message, "validation_timeout_ms 100"))
        fail_msg("the health check's error should name validation_timeout_ms 100: %s", e.message);
    dbpool_close(p);
}

/* A statement that lost its connection says what to do next, after the
 * driver's words, however long those were: the end of the driver's message
 * gives way (on a whole UTF-8 character), not the advice. */
static void test_broken_statement_says_acquire_another(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 1);
    dbpool *p = dbt_open_lazy_mock(&o);
    static const char advice[] = "release the lease (it is closed) and acquire another";
    const char *words[] = {"BREAK", "BREAK server closed the connection"};
    for (size_t i = 0; i < 2; i++) {
        dbpool_conn *c = dbt_acquire(p);
        dbpool_error e;
        assert_int_equal(dbpool_exec(c, words[i], NULL, 0, NULL, &e), DBPOOL_EBROKEN);
        if (!strstr(e.message, advice))
            fail_msg("%s: the message should say what to do: %s", words[i], e.message);
        dbpool_release(c);
    }
    /* A message as long as the buffer, of two-byte characters. */
    char sql[2 * sizeof(((dbpool_error *)0)->message) + 8] = "BREAK ";
    for (size_t n = strlen(sql); n + 2 < sizeof sql; n += 2)
        memcpy(sql + n, "\xc3\xa9", 3);
    dbpool_conn *c = dbt_acquire(p);
    dbpool_error e;
    assert_int_equal(dbpool_exec(c, sql, NULL, 0, NULL, &e), DBPOOL_EBROKEN);
    size_t len = strlen(e.message), alen = strlen(advice);
    if (len < alen || strcmp(e.message + len - alen, advice) != 0)
        fail_msg("the advice should end the cut message: ...%s", e.message + (len > 80 ? len - 80 : 0));
    assert_true(len < sizeof e.message);
    assert_true(strncmp(e.message, "\xc3\xa9\xc3\xa9", 4) == 0);
    const char *semi = strstr(e.message, "; this connection");
    assert_non_null(semi);
    assert_true((semi - e.message) % 2 == 0); /* no half character before it */
    dbpool_release(c);
    dbpool_close(p);
}

/* A statement error is one line of printable text whatever the server
 * (here the driver) put in it: an application that logs e.message must not
 * log a forged second line, or send an escape sequence to a terminal. */
static void test_statement_error_is_one_printable_line(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 1);
    dbpool *p = dbt_open_lazy_mock(&o);
    dbpool_conn *c = dbt_acquire(p);
    dbpool_error e;
    assert_int_equal(dbpool_exec(c,
                                 "BREAK lost\npool 'x': forged\r\tline \x1b[31mred\x7f \xc2\x9b"
                                 "2J end",
                                 NULL, 0, NULL, &e),
                     DBPOOL_EBROKEN);
    static const char folded[] = "lost pool 'x': forged  line ?[31mred? ?2J end; ";
    if (strncmp(e.message, folded, sizeof folded - 1) != 0)
        fail_msg("the driver's message was not folded to one printable line: %s", e.message);
    dbpool_release(c);
    dbpool_close(p);

    /* SQLite's own message quotes the name the statement used. */
    char url[512];
    snprintf(url, sizeof url, "sqlite:%s/fold.db", dbt_tmpdir());
    dbt_options(&o, 0, 1);
    p = NULL;
    assert_int_equal(dbpool_open(&p, url, &o, &e), DBPOOL_OK);
    c = dbt_acquire(p);
    assert_int_equal(dbpool_exec(c, "SELECT * FROM \"a\nb\x1b\"", NULL, 0, NULL, &e), DBPOOL_EQUERY);
    if (!strstr(e.message, "no such table: a b?"))
        fail_msg("SQLite's message was not folded to one printable line: %s", e.message);
    for (const char *m = e.message; *m; m++)
        assert_true((unsigned char)*m >= 0x20 && *m != 0x7f);
    dbpool_release(c);
    dbpool_close(p);
}

/* A broken lease is logged once, when it breaks: each further statement
 * on it (which fails at once, saying to release it) used to log "is
 * broken and will be closed on release" again, a WARN line per call for a
 * caller that retries on the dead lease. */
static void test_broken_lease_logged_once(void **state) {
    (void)state;
    log_lines l = {.lock = PTHREAD_MUTEX_INITIALIZER};
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.log_fn = collect;
    o.log_user = &l;
    dbpool *p = dbt_open_lazy_mock(&o);
    dbpool_conn *c = dbt_acquire(p);
    dbpool_error e;
    assert_int_equal(dbpool_exec(c, "BREAK", NULL, 0, NULL, &e), DBPOOL_EBROKEN);
    for (int i = 0; i < 3; i++) {
        int rc = dbpool_exec(c, "SELECT 1", NULL, 0, NULL, &e);
        if (rc != DBPOOL_EBROKEN || !strstr(e.message, "acquire another"))
            fail_msg("a statement on the broken lease: %s: %s", dbpool_errname(rc), e.message);
    }
    pthread_mutex_lock(&l.lock);
    int lines = 0;
    for (int i = 0; i < l.n; i++)
        lines += strstr(l.text[i], "is broken and will be closed on release") != NULL;
    pthread_mutex_unlock(&l.lock);
    if (lines != 1)
        fail_msg("want one \"is broken\" line for the lease, got %d", lines);
    dbpool_release(c);
    dbpool_close(p);
}

/* log_level drops the lines less important than it, and every line that
 * reaches log_fn starts with "pool 'NAME': " and comes with log_user
 * (include/dbpool.h, docs/configuration.md). A retried connect (WARN),
 * open, suspend, resume and close (INFO), the connection opened and closed
 * by the close (DEBUG) are logged at each level in turn: no test noticed
 * when the filter or the prefix was dropped. */
typedef struct log_seen {
    pthread_mutex_t mu;
    int lines[DBPOOL_LOG_DEBUG + 1];
    int bad_level, wrong_user;
    char bad_line[256];
} log_seen;

static log_seen seen_log = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void count_lines(void *user, dbpool_log_level level, const char *line) {
    pthread_mutex_lock(&seen_log.mu);
    if (user != &seen_log)
        seen_log.wrong_user++;
    if (level < DBPOOL_LOG_ERROR || level > DBPOOL_LOG_DEBUG)
        seen_log.bad_level++;
    else
        seen_log.lines[level]++;
    if (strncmp(line, "pool 'logged': ", 15) != 0 && !seen_log.bad_line[0])
        snprintf(seen_log.bad_line, sizeof seen_log.bad_line, "%s", line);
    pthread_mutex_unlock(&seen_log.mu);
}

static void test_log_level_drops_and_prefix(void **state) {
    (void)state;
    for (int level = DBPOOL_LOG_ERROR; level <= DBPOOL_LOG_DEBUG; level++) {
        dbpool__mock_reset();
        dbpool__mock_fail_connect(1, 1, DBPOOL_ECONNECT); /* the first attempt: a WARN line */
        pthread_mutex_lock(&seen_log.mu);
        memset(seen_log.lines, 0, sizeof seen_log.lines);
        seen_log.bad_level = seen_log.wrong_user = 0;
        seen_log.bad_line[0] = '\0';
        pthread_mutex_unlock(&seen_log.mu);
        dbpool_options o;
        dbt_options(&o, 1, 1);
        o.name = "logged";
        o.max_retries = 1;
        o.backoff_base_ms = 0;
        o.backoff_max_ms = 0;
        o.maintenance_interval_ms = 0;
        o.log_fn = count_lines;
        o.log_user = &seen_log;
        o.log_level = (dbpool_log_level)level;
        dbpool *p = NULL;
        dbpool_error e;
        if (dbpool_open(&p, "mock:", &o, &e) != DBPOOL_OK)
            fail_msg("open: %s", e.message);
        assert_int_equal(dbpool_suspend(p), DBPOOL_OK);
        assert_int_equal(dbpool_resume(p), DBPOOL_OK);
        assert_int_equal(dbpool_close(p), 0); /* joins the pool's threads: no line comes later */
        pthread_mutex_lock(&seen_log.mu);
        log_seen got = seen_log;
        pthread_mutex_unlock(&seen_log.mu);
        if (got.bad_line[0])
            fail_msg("log_level %d: a line without the pool's prefix: '%s'", level, got.bad_line);
        assert_int_equal(got.bad_level, 0);
        assert_int_equal(got.wrong_user, 0);
        assert_int_equal(got.lines[DBPOOL_LOG_ERROR], 0); /* nothing here is an error */
        for (int l = DBPOOL_LOG_WARN; l <= DBPOOL_LOG_DEBUG; l++)
            if ((got.lines[l] > 0) != (l <= level))
                fail_msg("log_level %d: %d lines of level %d", level, got.lines[l], l);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_open_timeout_names_acquire_bound_mock, dbt_mock_setup),
#ifdef DBPOOL_HAVE_PG
        cmocka_unit_test_setup(test_open_timeout_names_acquire_bound_pg, dbt_mock_setup),
#endif
        cmocka_unit_test_setup(test_connect_timeout_named, dbt_mock_setup),
        cmocka_unit_test_setup(test_retry_cut_by_shared_deadline_named, dbt_mock_setup),
        cmocka_unit_test_setup(test_timeout_counts_thread_cache_validation, dbt_mock_setup),
        cmocka_unit_test_setup(test_breaker_opened_logged_after_its_cause, dbt_mock_setup),
        cmocka_unit_test_setup(test_timeout_says_half_open, dbt_mock_setup),
        cmocka_unit_test_setup(test_try_acquire_names_connecting, dbt_mock_setup),
        cmocka_unit_test_setup(test_timeout_does_not_blame_reclaimed_lease, dbt_mock_setup),
        cmocka_unit_test_setup(test_timeout_keeps_last_connect_error, dbt_mock_setup),
        cmocka_unit_test_setup(test_resume_logged_before_breaker_trial, dbt_mock_setup),
        cmocka_unit_test_setup(test_breaker_reopen_logged_as_failed_trial, dbt_mock_setup),
        cmocka_unit_test_setup(test_leak_return_logged_after_report, dbt_mock_setup),
        cmocka_unit_test_setup(test_connector_opened_connection_logged, dbt_mock_setup),
        cmocka_unit_test_setup(test_out_of_threads_advice, dbt_mock_setup),
        cmocka_unit_test_setup(test_validation_timeout_named, dbt_mock_setup),
        cmocka_unit_test_setup(test_broken_statement_says_acquire_another, dbt_mock_setup),
        cmocka_unit_test_setup(test_statement_error_is_one_printable_line, dbt_mock_setup),
        cmocka_unit_test_setup(test_broken_lease_logged_once, dbt_mock_setup),
        cmocka_unit_test_setup(test_log_level_drops_and_prefix, dbt_mock_setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
