/* What happens to a lease on its way out and back in: validation before
 * hand-out, reset on release, broken connections discarded, and the
 * maintenance thread's refill and keepalive. Uses the mock backend. */
#include "driver_mock.h"
#include "testsupport.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

/* A mock pool of one connection at most, without a maintenance thread. */
static dbpool *open_one_mock(void) {
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.maintenance_interval_ms = 0;
    return dbt_open_mock(&o);
}

static void test_validation_failure_replaced(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.validation = DBPOOL_VALIDATE_ALWAYS;
    o.maintenance_interval_ms = 0;
    dbpool *p = dbt_open_mock(&o);
    dbpool_conn *c;
    assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
    int first = dbt_conn_id(c);
    dbpool_release(c);
    dbpool__mock_fail_ping(1, 1);
    assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
    assert_int_not_equal(dbt_conn_id(c), first);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.validation_failures, 1);
    assert_int_equal(s.destroyed_by[DBPOOL_CLOSE_VALIDATION], 1);
    assert_int_equal(s.created, 2);
    dbpool_release(c);
    dbpool_close(p);
}

static void test_validation_window(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.validation = DBPOOL_VALIDATE_IF_IDLE;
    /* Wide enough that the connect and the first lease fit in it even on a
     * thread descheduled for a few hundred ms (TSan, a loaded machine). */
    o.validation_window_ms = 400;
    o.maintenance_interval_ms = 0;
    dbpool *p = dbt_open_mock(&o);
    dbpool_conn *c;
    dbpool__mock_counters n;
    assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
    dbpool_release(c);
    assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK); /* idle < window */
    dbpool_release(c);
    dbpool__mock_get_counters(&n);
    assert_int_equal(n.pings, 0);
    dbt_sleep_ms(450);
    assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK); /* idle > window */
    dbpool__mock_get_counters(&n);
    assert_int_equal(n.pings, 1);
    dbpool_release(c);
    dbpool_close(p);
}

static void test_killed_behind_back_is_discarded(void **state) {
    (void)state;
    dbpool *p = open_one_mock();
    dbpool_conn *c;
    assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
    int first = dbt_conn_id(c);
    dbpool__mock_kill(dbpool_conn_native(c));
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.destroyed_by[DBPOOL_CLOSE_BROKEN], 1);
    assert_int_equal(s.idle, 0);
    assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
    assert_int_not_equal(dbt_conn_id(c), first);
    assert_int_equal(dbpool_exec(c, "SELECT 1", NULL, 0, NULL, NULL), DBPOOL_OK);
    dbpool_release(c);
    dbpool_close(p);
}

static void test_broken_error_marks_lease(void **state) {
    (void)state;
    dbpool *p = open_one_mock();
    dbpool_conn *c;
    dbpool_error e;
    assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
    assert_int_equal(dbpool_exec(c, "FAIL", NULL, 0, NULL, &e), DBPOOL_EQUERY);
    dbpool_release(c); /* an ordinary query error keeps the connection */
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.idle, 1);
    assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
    assert_int_equal(dbpool_exec(c, "BREAK", NULL, 0, NULL, &e), DBPOOL_EBROKEN);
    dbpool_release(c);
    dbpool_get_stats(p, &s);
    assert_int_equal(s.idle, 0);
    assert_int_equal(s.destroyed_by[DBPOOL_CLOSE_BROKEN], 1);
    dbpool_close(p);
}

static void test_open_transaction_rolled_back(void **state) {
    (void)state;
    dbpool *p = open_one_mock();
    dbpool_conn *c;
    assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
    void *native = dbpool_conn_native(c);
    assert_int_equal(dbpool_exec(c, "BEGIN", NULL, 0, NULL, NULL), DBPOOL_OK);
    assert_true(dbpool__mock_in_transaction(native));
    dbpool_release(c);
    assert_false(dbpool__mock_in_transaction(native)); /* still pooled: safe to look */
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.rollbacks, 1);
    assert_int_equal(s.idle, 1);
    dbpool_close(p);
}

static void test_failed_reset_discards(void **state) {
    (void)state;
    dbpool *p = open_one_mock();
    dbpool_conn *c;
    assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
    assert_int_equal(dbpool_exec(c, "BEGIN", NULL, 0, NULL, NULL), DBPOOL_OK);
    dbpool__mock_fail_reset(1, 1);
    dbpool_release(c);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.destroyed_by[DBPOOL_CLOSE_RESET_FAILED], 1);
    assert_int_equal(s.idle, 0);
    assert_int_equal(s.total, 0);
    dbpool_close(p);
}

/* A reset that cleared the session runs init_sql again on the releasing
 * thread, within the reset's own bound (validation_timeout_ms): a rerun
 * that does not finish closes the connection (reset_failed) instead of
 * holding the release for the statement's 2.5 s. */
static void test_init_sql_rerun_bounded_on_release(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.maintenance_interval_ms = 0;
    o.connect_timeout_ms = 10000; /* the new connection's init_sql may take its time */
    o.validation_timeout_ms = 200;
    o.init_sql = "SLEEP 2500";
    dbpool *p = dbt_open_mock(&o);
    dbpool_conn *c;
    dbpool_error e;
    if (dbpool_acquire(p, 10000, &c, &e) != DBPOOL_OK)
        fail_msg("acquire: %s", e.message);
    assert_int_equal(dbpool_exec(c, "BEGIN", NULL, 0, NULL, NULL), DBPOOL_OK);
    dbpool__mock_set_reset_clears_session(true);
    int64_t t0 = dbt_now_ms();
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    int64_t took = dbt_now_ms() - t0;
    if (took > 200 + 1500)
        fail_msg("the release took %lld ms with validation_timeout_ms 200", (long long)took);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.destroyed_by[DBPOOL_CLOSE_RESET_FAILED], 1);
    assert_int_equal(s.total, 0);
    assert_int_equal(s.rollbacks, 0);
    dbpool__mock_counters n;
    dbpool__mock_get_counters(&n);
    assert_int_equal(n.resets, 1);
    assert_int_equal(n.live, 0);
    dbpool_close(p);
}

static void test_misuse_is_an_error(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 1);
    dbpool *p = dbt_open_mock(&o);
    dbpool_conn *c;
    assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_release(c), DBPOOL_EMISUSE);
    assert_int_equal(dbpool_discard(c), DBPOOL_EMISUSE);
    assert_null(dbpool_conn_native(c));
    assert_int_equal(dbpool_exec(c, "SELECT 1", NULL, 0, NULL, NULL), DBPOOL_EMISUSE);
    assert_int_equal(dbpool_release(NULL), DBPOOL_EMISUSE);
    int not_a_lease[16] = {0};
    assert_int_equal(dbpool_release((dbpool_conn *)not_a_lease), DBPOOL_EMISUSE);
    /* A discarded lease's slot is kept: releasing it again is caught too. */
    assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
    assert_int_equal(dbpool_discard(c), DBPOOL_OK);
    assert_int_equal(dbpool_release(c), DBPOOL_EMISUSE);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.total, 0);
    dbpool_close(p);
}

static void test_maintenance_refills_min(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 2, 4);
    o.maintenance_interval_ms = 20;
    dbpool *p = dbt_open_mock(&o);
    dbpool_conn *a, *b;
    assert_int_equal(dbpool_acquire(p, 1000, &a, NULL), DBPOOL_OK);
    assert_int_equal(dbpool_acquire(p, 1000, &b, NULL), DBPOOL_OK);
    dbpool_discard(a);
    dbpool_discard(b);
    dbpool_stats s;
    int64_t until = dbt_now_ms() + 2000;
    do {
        dbt_sleep_ms(10);
        dbpool_get_stats(p, &s);
    } while (s.idle < 2 && dbt_now_ms() < until);
    assert_int_equal(s.idle, 2);
    assert_int_equal(s.created, 4);
    assert_true(dbt_invariant_holds(p));
    dbpool_close(p);
}

static void test_keepalive_finds_dead_idle(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 1, 2);
    o.maintenance_interval_ms = 20;
    o.keepalive_ms = 40;
    o.validation = DBPOOL_VALIDATE_NEVER;
    dbpool *p = dbt_open_mock(&o);
    dbpool_conn *c;
    assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
    int first = dbt_conn_id(c);
    void *native = dbpool_conn_native(c);
    dbpool_release(c);
    dbpool__mock_kill(native); /* the server dropped it while idle */
    dbpool_stats s;
    int64_t until = dbt_now_ms() + 2000;
    do {
        dbt_sleep_ms(10);
        dbpool_get_stats(p, &s);
    } while ((s.destroyed_by[DBPOOL_CLOSE_BROKEN] < 1 || s.idle < 1) && dbt_now_ms() < until);
    assert_int_equal(s.destroyed_by[DBPOOL_CLOSE_BROKEN], 1);
    assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
    assert_int_not_equal(dbt_conn_id(c), first); /* never handed the dead one */
    dbpool_release(c);
    dbpool_close(p);
}

/* dbpool_close while an acquire validates an idle connection whose ping
 * then fails: the acquire ends with DBPOOL_ECLOSED and the pool is freed
 * once, after it (it used to lock the freed pool: a hang, or a sanitizer
 * abort). Through the ordinary path and through the thread cache. */
typedef struct close_race {
    dbpool *p;
    int rc;
} close_race;

static void *acquire_once(void *arg) {
    close_race *r = arg;
    dbpool_conn *c = NULL;
    r->rc = dbpool_acquire(r->p, 2000, &c, NULL);
    if (r->rc == DBPOOL_OK)
        dbpool_release(c);
    return NULL;
}

static void close_during_validation(bool thread_cache) {
    dbpool__mock_reset();
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.validation_window_ms = 20;
    o.maintenance_interval_ms = 0;
    o.thread_cache = thread_cache;
    close_race r = {dbt_open_mock(&o), -100};
    if (thread_cache) { /* park a connection for the acquiring thread itself */
        pthread_t t;
        pthread_create(&t, NULL, acquire_once, &r);
        pthread_join(t, NULL);
        assert_int_equal(r.rc, DBPOOL_OK);
    } else {
        dbpool_conn *c;
        assert_int_equal(dbpool_acquire(r.p, 1000, &c, NULL), DBPOOL_OK);
        dbpool_release(c);
    }
    dbt_sleep_ms(60); /* idle past the window: the next acquire validates */
    /* Long enough for the close below to land inside the ping, however
     * late a loaded machine runs this thread after it sees the ping start. */
    dbpool__mock_set_ping_delay_ms(1000);
    dbpool__mock_fail_ping(1, -1);
    /* The lease above may have been validated too (handed over more than
     * the 20 ms window after its connect, on a loaded machine): count from
     * here, or the close below frees the pool before the acquire starts. */
    dbpool__mock_counters n0;
    dbpool__mock_get_counters(&n0);
    pthread_t t;
    pthread_create(&t, NULL, acquire_once, &r);
    int64_t until = dbt_now_ms() + 2000;
    dbpool__mock_counters n;
    do {
        dbt_sleep_ms(5);
        dbpool__mock_get_counters(&n);
    } while (n.pings < n0.pings + 1 && dbt_now_ms() < until);
    assert_int_equal(n.pings, n0.pings + 1); /* the acquire is inside its ping */
    dbpool_close(r.p);
    pthread_join(t, NULL);
    assert_int_equal(r.rc, DBPOOL_ECLOSED);
    dbpool__mock_get_counters(&n);
    assert_int_equal(n.live, 0);
}

static void test_close_during_validation(void **state) {
    (void)state;
    close_during_validation(false);
    close_during_validation(true);
}

/* A connection being validated on its way out is not a leak: its lease
 * starts at this acquire, not at the previous one's start. */
static int leak_logs;
static void count_leak_logs(void *user, dbpool_log_level level, const char *message) {
    (void)user, (void)level;
    if (strstr(message, "leak") || strstr(message, "held for"))
        leak_logs++;
}

static void test_validating_acquire_is_not_a_leak(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 1);
    /* The lease below is held for its 150 ms validation and the few steps
     * after it: 600 ms leaves room for a descheduled thread (TSan, a
     * loaded machine). Counted from the previous lease's start, it would
     * be past the threshold before its validation even began. */
    o.leak_threshold_ms = 600;
    o.maintenance_interval_ms = 20;
    o.validation_window_ms = 20;
    o.log_fn = count_leak_logs;
    leak_logs = 0;
    dbpool *p = dbt_open_mock(&o);
    dbpool_conn *c;
    assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
    dbpool_release(c);
    dbt_sleep_ms(700); /* idle longer than the leak threshold */
    dbpool__mock_set_ping_delay_ms(150);
    assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK); /* validated: 150 ms */
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.leaks_detected, 0);
    assert_int_equal(leak_logs, 0);
    dbpool_release(c);
    dbpool_close(p);
}

/* A keepalive ping borrows an idle connection: it stays idle in the
 * statistics, and neither in_use nor the peak counts it. */
static void test_keepalive_ping_is_not_in_use(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 2, 2);
    o.maintenance_interval_ms = 10;
    o.keepalive_ms = 20;
    dbpool *p = dbt_open_mock(&o);
    dbpool__mock_set_ping_delay_ms(50);
    dbpool_stats s;
    int most_in_use = 0, pings_seen = 0;
    int64_t until = dbt_now_ms() + 500;
    while (dbt_now_ms() < until) {
        dbpool_get_stats(p, &s);
        if (s.in_use > most_in_use)
            most_in_use = s.in_use;
        assert_int_equal(s.idle + s.in_use + s.connecting, s.total);
        dbt_sleep_ms(5);
    }
    dbpool__mock_counters n;
    dbpool__mock_get_counters(&n);
    pings_seen = (int)n.pings;
    assert_true(pings_seen >= 2);
    assert_int_equal(most_in_use, 0);
    dbpool_get_stats(p, &s);
    assert_int_equal(s.peak_in_use, 0);
    assert_int_equal(s.acquired, 0);
    dbpool_close(p);
}

typedef struct in_line {
    dbpool *p;
    atomic_int *served; /* order of service, shared */
    int order;          /* 1 = served first */
    int rc;
} in_line;

static void *acquire_and_hold(void *arg) {
    in_line *a = arg;
    dbpool_conn *c = NULL;
    a->rc = dbpool_acquire(a->p, 10000, &c, NULL);
    a->order = atomic_fetch_add(a->served, 1) + 1;
    if (a->rc == DBPOOL_OK) {
        dbt_sleep_ms(1000);
        dbpool_release(c);
    }
    return NULL;
}

/* A waiter handed a connection that fails validation keeps its place in
 * line: the next connection is its, not that of a caller who came after
 * it (it would otherwise wait out that caller's whole lease, or time out). */
static void test_failed_validation_keeps_place_in_line(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.validation = DBPOOL_VALIDATE_ALWAYS;
    o.maintenance_interval_ms = 0;
    dbpool *p = dbt_open_mock(&o);
    dbpool_conn *held;
    assert_int_equal(dbpool_acquire(p, 1000, &held, NULL), DBPOOL_OK); /* fresh: not validated */
    atomic_int served;
    atomic_init(&served, 0);
    static in_line a, b; /* static: a failed check must not leave the threads a dead stack frame */
    a = (in_line){.p = p, .served = &served, .rc = -100};
    b = (in_line){.p = p, .served = &served, .rc = -100};
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, acquire_and_hold, &a), 0);
    dbt_wait_for_waiters(p, 1, 5000);
    assert_int_equal(pthread_create(&tb, NULL, acquire_and_hold, &b), 0);
    dbt_wait_for_waiters(p, 2, 5000);
    dbpool__mock_fail_ping(1, 1); /* the first in line gets a connection that fails validation */
    dbpool_release(held);
    assert_int_equal(pthread_join(ta, NULL), 0);
    assert_int_equal(pthread_join(tb, NULL), 0);
    assert_int_equal(a.rc, DBPOOL_OK);
    assert_int_equal(b.rc, DBPOOL_OK);
    if (a.order != 1)
        fail_msg("the first waiter, handed a connection that failed validation, was served after the one "
                 "who came after it");
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.validation_failures, 1);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

/* A connection released while the first waiter's failed one is being
 * closed goes to that waiter, not to the one behind it: it is back in line
 * before the close (which the log line below announces). */
static dbpool_conn *release_on_close_log;

static void release_when_closing(void *user, dbpool_log_level level, const char *line) {
    (void)user, (void)level;
    if (release_on_close_log && strstr(line, "closing connection") && strstr(line, "(validation_failed)")) {
        dbpool_conn *c = release_on_close_log;
        release_on_close_log = NULL;
        dbpool_release(c); /* a clean release: no I/O, allowed in a callback */
    }
}

typedef struct got_conn {
    dbpool *p;
    int rc;
    int id;
} got_conn;

static void *acquire_note_hold(void *arg) {
    got_conn *a = arg;
    dbpool_conn *c = NULL;
    a->rc = dbpool_acquire(a->p, 10000, &c, NULL);
    if (a->rc == DBPOOL_OK) {
        a->id = dbt_conn_id(c);
        dbt_sleep_ms(300);
        dbpool_release(c);
    }
    return NULL;
}

static void test_failed_validation_back_in_line_before_close(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.validation = DBPOOL_VALIDATE_ALWAYS;
    o.maintenance_interval_ms = 0;
    o.log_fn = release_when_closing;
    dbpool *p = dbt_open_mock(&o);
    dbpool_conn *c1, *c2;
    assert_int_equal(dbpool_acquire(p, 1000, &c1, NULL), DBPOOL_OK); /* fresh ones: not validated */
    assert_int_equal(dbpool_acquire(p, 1000, &c2, NULL), DBPOOL_OK);
    int second = dbt_conn_id(c2);
    static got_conn a, b; /* static: a failed check must not leave the threads a dead stack frame */
    a = (got_conn){.p = p, .rc = -100};
    b = (got_conn){.p = p, .rc = -100};
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, acquire_note_hold, &a), 0);
    dbt_wait_for_waiters(p, 1, 5000);
    assert_int_equal(pthread_create(&tb, NULL, acquire_note_hold, &b), 0);
    dbt_wait_for_waiters(p, 2, 5000);
    release_on_close_log = c2;
    dbpool__mock_fail_ping(1, 1); /* c1 fails the first waiter's validation */
    dbpool_release(c1);
    assert_int_equal(pthread_join(ta, NULL), 0);
    assert_int_equal(pthread_join(tb, NULL), 0);
    assert_null(release_on_close_log);
    assert_int_equal(a.rc, DBPOOL_OK);
    assert_int_equal(b.rc, DBPOOL_OK);
    if (a.id != second)
        fail_msg(
            "connection #%d, released while the first waiter's failed one was closed, went to the waiter "
            "behind it",
            second);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

/* A keepalive ping is not a use: it leaves the idle list in the order of
 * last use, so the next acquire still gets the most recently used
 * connection (LIFO). A pinged connection used to go to the tail, so that
 * one pass over three idle connections turned the list around and handed
 * out the least recently used one first. The pass runs here, on the test's
 * thread (the maintenance thread's interval is an hour). */
void dbpool__maint_pass(dbpool *p);

static void test_keepalive_keeps_lifo_order(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 3, 3);
    o.maintenance_interval_ms = 3600 * 1000;
    o.keepalive_ms = 1;
    o.validation = DBPOOL_VALIDATE_NEVER;
    o.thread_cache = false;
    dbpool *p = dbt_open_mock(&o);
    dbpool_conn *c[3];
    for (int i = 0; i < 3; i++)
        assert_int_equal(dbpool_acquire(p, 1000, &c[i], NULL), DBPOOL_OK);
    int newest = dbt_conn_id(c[0]);
    for (int i = 2; i >= 0; i--) /* c[0] last: the most recently used */
        assert_int_equal(dbpool_release(c[i]), DBPOOL_OK);
    dbt_sleep_ms(5); /* all three due a ping */
    dbpool__maint_pass(p);
    dbpool__mock_counters n;
    dbpool__mock_get_counters(&n);
    assert_int_equal(n.pings, 3);
    dbpool_conn *got;
    assert_int_equal(dbpool_acquire(p, 1000, &got, NULL), DBPOOL_OK);
    if (dbt_conn_id(got) != newest)
        fail_msg("keepalive pings reordered the idle list: got connection %d, the most recently used is %d",
                 dbt_conn_id(got), newest);
    dbpool_release(got);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

/* Keepalive pings connections not used for keepalive_ms: one just used
 * is not pinged, whenever its last ping was (configuration.md). */
static void test_keepalive_skips_recently_used(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 1, 1);
    o.maintenance_interval_ms = 3600 * 1000; /* passes run here, below */
    o.keepalive_ms = 10000;
    o.validation = DBPOOL_VALIDATE_NEVER;
    o.thread_cache = false; /* released to the idle list, where keepalive looks */
    dbpool *p = dbt_open_mock(&o);
    dbpool_conn *c;
    assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    dbpool__mock_counters before, after;
    dbpool__mock_get_counters(&before);
    dbpool__maint_pass(p);
    dbpool__mock_get_counters(&after);
    if (after.pings != before.pings)
        fail_msg("a connection used just now was pinged by keepalive (keepalive_ms 10000): %ld ping(s)",
                 after.pings - before.pings);
    assert_int_equal(dbpool_close(p), 0);
}

/* idle_timeout_ms counts from the last use, not from the connect: a
 * connection used again and again stays, however old (configuration.md). */
static void test_idle_timeout_counts_from_last_use(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.maintenance_interval_ms = 0;
    o.idle_timeout_ms = 1000;
    o.max_lifetime_ms = 0;
    dbpool *p = dbt_open_mock(&o);
    int64_t until = dbt_now_ms() + 1500;
    while (dbt_now_ms() < until) {
        dbpool_conn *c;
        assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
        assert_int_equal(dbpool_release(c), DBPOOL_OK);
        dbt_sleep_ms(50); /* idle far less than idle_timeout_ms */
    }
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    if (s.created != 1 || s.destroyed_by[DBPOOL_CLOSE_IDLE_TIMEOUT] != 0)
        fail_msg("a connection reused every 50 ms was closed for idle time (idle_timeout_ms 1000): "
                 "created %llu, destroyed_by[idle_timeout] %llu",
                 (unsigned long long)s.created,
                 (unsigned long long)s.destroyed_by[DBPOOL_CLOSE_IDLE_TIMEOUT]);
    assert_int_equal(dbpool_close(p), 0);
}

/* A maintenance pass returns to the idle list only the parked connections
 * unused for a whole interval. With an interval longer than the monotonic
 * clock's reading (the time since boot), "unused since now - interval" was
 * a negative time, which means "every parked connection, in use or not":
 * each pass took the thread caches away. */
static void test_long_maintenance_interval_keeps_thread_cache(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.maintenance_interval_ms = INT64_C(100) * 365 * 24 * 3600 * 1000; /* a century: beyond any uptime */
    o.validation = DBPOOL_VALIDATE_NEVER;
    o.thread_cache = true;
    dbpool *p = dbt_open_mock(&o);
    dbpool_conn *c;
    assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
    assert_int_equal(dbpool_release(c), DBPOOL_OK); /* parked for this thread */
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.thread_cached, 1);
    dbpool__maint_pass(p);
    dbpool_get_stats(p, &s);
    if (s.thread_cached != 1)
        fail_msg("a maintenance pass took back a connection parked a moment ago");
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

/* dbpool_check_health takes at most acquire_timeout_ms +
 * validation_timeout_ms (include/dbpool.h). Its acquire may validate the
 * connection with a round trip; the check then ran a second one of its
 * own, so a slow but working database took up to acquire_timeout_ms plus
 * two validation_timeout_ms (here 3 s against a promised 2.1 s). */
static void test_health_check_within_its_bound(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 1, 1);
    o.validation = DBPOOL_VALIDATE_ALWAYS;
    o.acquire_timeout_ms = 100;
    o.validation_timeout_ms = 2000;
    o.maintenance_interval_ms = 0;
    dbpool *p = dbt_open_mock(&o);
    dbpool_conn *c;
    assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
    assert_int_equal(dbpool_release(c), DBPOOL_OK); /* used once: validated from now on */
    dbpool__mock_counters before, after;
    dbpool__mock_get_counters(&before);
    dbpool__mock_set_ping_delay_ms(1500); /* slow, within validation_timeout_ms */
    dbpool_health h;
    dbpool_error e;
    int64_t t0 = dbt_now_ms();
    assert_int_equal(dbpool_check_health(p, &h, &e), DBPOOL_OK);
    int64_t took = dbt_now_ms() - t0;
    dbpool__mock_set_ping_delay_ms(0);
    assert_int_equal(h.status, DBPOOL_HEALTHY);
    if (took >= o.acquire_timeout_ms + o.validation_timeout_ms)
        fail_msg("dbpool_check_health took %lld ms, past acquire_timeout_ms + validation_timeout_ms (%lld)",
                 (long long)took, (long long)(o.acquire_timeout_ms + o.validation_timeout_ms));
    dbpool__mock_get_counters(&after);
    assert_int_equal(after.pings - before.pings, 1);
    if (h.round_trip_ms < 1400)
        fail_msg("round_trip_ms %.3f is not the round trip made (about 1500 ms)", h.round_trip_ms);
    /* Without a validation in the acquire, the check makes its own. */
    o.validation = DBPOOL_VALIDATE_NEVER;
    dbpool *q = dbt_open_mock(&o);
    dbpool__mock_get_counters(&before);
    assert_int_equal(dbpool_check_health(q, &h, &e), DBPOOL_OK);
    dbpool__mock_get_counters(&after);
    assert_int_equal(after.pings - before.pings, 1);
    assert_int_equal(dbpool_close(q), 0);
    assert_int_equal(dbpool_close(p), 0);
}

/* An unhealthy check: dbpool_check_health returns the failure, and
 * out->status says the same (include/dbpool.h: "out->status says the same
 * either way"), with out->error and err saying why. No test asserted
 * DBPOOL_UNHEALTHY: with the status left at DBPOOL_HEALTHY on failure, the
 * tests that call the check (and the command's) passed. Both ways to fail:
 * the round trip, and the acquire. */
static void test_unhealthy_check_says_so(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 1, 1);
    o.validation = DBPOOL_VALIDATE_NEVER;
    o.maintenance_interval_ms = 0;
    o.max_retries = 0;
    o.acquire_timeout_ms = 2000;
    dbpool *p = dbt_open_mock(&o);
    dbpool__mock_fail_ping(1, 1);
    dbpool_health h;
    memset(&h, 0x5a, sizeof h);
    dbpool_error e;
    int rc = dbpool_check_health(p, &h, &e);
    assert_int_not_equal(rc, DBPOOL_OK);
    assert_int_equal(h.status, DBPOOL_UNHEALTHY);
    assert_string_equal(h.backend, "mock");
    assert_int_equal(h.error.code, rc);
    assert_int_equal(e.code, rc);
    assert_true(h.error.message[0] != '\0');
    assert_string_equal(e.message, h.error.message);
    /* The connection that failed is not kept; the next check is healthy. */
    assert_int_equal(dbpool_check_health(p, &h, &e), DBPOOL_OK);
    assert_int_equal(h.status, DBPOOL_HEALTHY);
    assert_int_equal(h.error.code, DBPOOL_OK);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.created, 2);
    /* The acquire fails: no connection can be opened. */
    dbpool_conn *c;
    assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
    assert_int_equal(dbpool_discard(c), DBPOOL_OK);
    dbpool__mock_fail_connect(1, -1, DBPOOL_ECONNECT);
    memset(&h, 0x5a, sizeof h);
    rc = dbpool_check_health(p, &h, &e);
    assert_int_equal(rc, DBPOOL_ECONNECT);
    assert_int_equal(h.status, DBPOOL_UNHEALTHY);
    assert_int_equal(h.error.code, DBPOOL_ECONNECT);
    assert_int_equal(e.code, DBPOOL_ECONNECT);
    assert_int_equal(dbpool_close(p), 0);
}

/* A caller who does not wait (try_acquire, or a timeout of 0) validates at
 * most one connection: with every idle connection failing its validation
 * by timing out (a network gone silent), it went through them all, one
 * validation_timeout_ms each (here 4 x 200 ms), before its one connect. */
static void test_non_waiting_acquire_validates_once(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 4);
    o.validation = DBPOOL_VALIDATE_ALWAYS;
    o.validation_window_ms = 0;
    o.validation_timeout_ms = 200;
    o.maintenance_interval_ms = 0;
    dbpool *p = dbt_open_mock(&o);
    for (int round = 0; round < 2; round++) {
        dbpool_conn *cs[4];
        for (int i = 0; i < 4; i++)
            assert_int_equal(dbpool_acquire(p, 1000, &cs[i], NULL), DBPOOL_OK);
        for (int i = 0; i < 4; i++)
            assert_int_equal(dbpool_release(cs[i]), DBPOOL_OK); /* used: validated from now on */
        dbpool__mock_set_ping_delay_ms(1000);                   /* every validation times out */
        dbpool_conn *c = NULL;
        dbpool_error e;
        int64_t t0 = dbt_now_ms();
        int rc = round == 0 ? dbpool_try_acquire(p, &c, &e) : dbpool_acquire(p, 0, &c, &e);
        int64_t took = dbt_now_ms() - t0;
        dbpool__mock_set_ping_delay_ms(0);
        if (took >= 2 * o.validation_timeout_ms)
            fail_msg("%s took %lld ms with validation_timeout_ms %lld: more than one validation",
                     round == 0 ? "try_acquire" : "acquire(0)", (long long)took,
                     (long long)o.validation_timeout_ms);
        /* The connection that failed is replaced by a new one. */
        assert_int_equal(rc, DBPOOL_OK);
        assert_int_equal(dbpool_release(c), DBPOOL_OK);
    }
    assert_int_equal(dbpool_close(p), 0);
}

/* An acquire whose connection failed a validation that outlasted its
 * timeout takes a connection released meanwhile that needs no check (no
 * I/O past the deadline), as a waiter's last look at its deadline does:
 * it returned DBPOOL_ETIMEDOUT, "(0 in use, 1 idle, ...)", with that
 * connection ready. */
static void *acquire_short(void *arg) {
    got_conn *a = arg;
    dbpool_conn *c = NULL;
    a->rc = dbpool_acquire(a->p, 100, &c, NULL);
    if (a->rc == DBPOOL_OK) {
        a->id = dbt_conn_id(c);
        dbpool_release(c);
    }
    return NULL;
}

static void test_ready_connection_taken_after_slow_failed_validation(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.validation = DBPOOL_VALIDATE_IF_IDLE;
    o.validation_window_ms = 1000; /* a, released during b's validation, is within it after */
    o.validation_timeout_ms = 300;
    o.maintenance_interval_ms = 0;
    o.thread_cache = false;
    dbpool *p = dbt_open_mock(&o);
    dbpool_conn *a, *b;
    assert_int_equal(dbpool_acquire(p, 1000, &a, NULL), DBPOOL_OK);
    assert_int_equal(dbpool_acquire(p, 1000, &b, NULL), DBPOOL_OK);
    int fresh = dbt_conn_id(a);
    assert_int_equal(dbpool_release(b), DBPOOL_OK);
    dbt_sleep_ms(1100);                   /* b idle past validation_window_ms: its next lease validates it */
    dbpool__mock_set_ping_delay_ms(1000); /* ... and the validation times out */
    dbpool__mock_counters mc;
    dbpool__mock_get_counters(&mc);
    long pings = mc.pings;
    static got_conn g;
    g = (got_conn){.p = p, .rc = -100};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, acquire_short, &g), 0);
    int64_t until = dbt_now_ms() + 5000;
    for (dbpool__mock_get_counters(&mc); mc.pings == pings && dbt_now_ms() < until;
         dbpool__mock_get_counters(&mc))
        dbt_sleep_ms(1); /* until its validation has begun */
    assert_true(mc.pings > pings);
    assert_int_equal(dbpool_release(a), DBPOOL_OK); /* idle, and fresh: ready without a check */
    assert_int_equal(pthread_join(t, NULL), 0);
    dbpool__mock_set_ping_delay_ms(0);
    if (g.rc != DBPOOL_OK)
        fail_msg("the acquire returned %s with a connection idle and ready", dbpool_errname(g.rc));
    assert_int_equal(g.id, fresh);
    assert_int_equal(dbpool_close(p), 0);
}

/* A lease released twice is refused until the connection is leased
 * again, also while a keepalive ping borrows it from the idle list (it is
 * counted leased then, but no caller's). That second release was taken
 * for a real one: the connection went into the idle list while the ping
 * still used it, and again when the ping ended, which made the idle list
 * a cycle: the keepalive thread then spun under the pool's lock and every
 * call on the pool hung. */
/* A full pool with a caller in line: a lease discarded (or closed as
 * broken) gives its place back, and a new connection is opened for the
 * caller at once, not left for a timeout. */
static void test_discard_opens_one_for_caller_in_line(void **state) {
    (void)state;
    dbpool *p = open_one_mock();
    dbpool_conn *held;
    assert_int_equal(dbpool_acquire(p, 1000, &held, NULL), DBPOOL_OK);
    dbt_timed_acquire a = {.p = p, .timeout_ms = 5000};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, dbt_timed_acquire_main, &a), 0);
    dbt_wait_for_waiters(p, 1, 5000);
    assert_int_equal(dbpool_discard(held), DBPOOL_OK);
    pthread_join(t, NULL);
    if (a.rc != DBPOOL_OK)
        fail_msg("the caller in line when the only lease was discarded got %s: %s", dbpool_errname(a.rc),
                 a.message);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.created, 2);
    dbpool_close(p);
}

static void test_release_twice_during_keepalive_ping_is_misuse(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 1, 1);
    o.maintenance_interval_ms = 5;
    o.keepalive_ms = 10;
    o.validation = DBPOOL_VALIDATE_NEVER;
    dbpool *p = dbt_open_mock(&o);
    dbpool_conn *c;
    assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    dbpool__mock_set_ping_delay_ms(1000); /* the next ping lasts */
    dbpool__mock_counters mc;
    int64_t until = dbt_now_ms() + 10000;
    for (dbpool__mock_get_counters(&mc); mc.pings < 1 && dbt_now_ms() < until; dbpool__mock_get_counters(&mc))
        dbt_sleep_ms(1);
    assert_true(mc.pings >= 1); /* a ping of c is under way */
    assert_null(dbpool_conn_native(c));
    assert_int_equal(dbpool_release(c), DBPOOL_EMISUSE);
    assert_int_equal(dbpool_discard(c), DBPOOL_EMISUSE);
    dbpool__mock_set_ping_delay_ms(0);
    /* The pool still works: its one connection, then no more. */
    dbpool_conn *again, *more;
    assert_int_equal(dbpool_acquire(p, 3000, &again, NULL), DBPOOL_OK);
    assert_int_equal(dbpool_try_acquire(p, &more, NULL), DBPOOL_EBUSY);
    assert_int_equal(dbpool_release(again), DBPOOL_OK);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.in_use, 0);
    assert_int_equal(s.total, 1);
    assert_int_equal(dbpool_close(p), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_validation_failure_replaced, dbt_mock_setup),
        cmocka_unit_test_setup(test_validation_window, dbt_mock_setup),
        cmocka_unit_test_setup(test_killed_behind_back_is_discarded, dbt_mock_setup),
        cmocka_unit_test_setup(test_broken_error_marks_lease, dbt_mock_setup),
        cmocka_unit_test_setup(test_open_transaction_rolled_back, dbt_mock_setup),
        cmocka_unit_test_setup(test_failed_reset_discards, dbt_mock_setup),
        cmocka_unit_test_setup(test_misuse_is_an_error, dbt_mock_setup),
        cmocka_unit_test_setup(test_maintenance_refills_min, dbt_mock_setup),
        cmocka_unit_test_setup(test_keepalive_finds_dead_idle, dbt_mock_setup),
        cmocka_unit_test_setup(test_close_during_validation, dbt_mock_setup),
        cmocka_unit_test_setup(test_validating_acquire_is_not_a_leak, dbt_mock_setup),
        cmocka_unit_test_setup(test_keepalive_ping_is_not_in_use, dbt_mock_setup),
        cmocka_unit_test_setup(test_failed_validation_keeps_place_in_line, dbt_mock_setup),
        cmocka_unit_test_setup(test_failed_validation_back_in_line_before_close, dbt_mock_setup),
        cmocka_unit_test_setup(test_keepalive_keeps_lifo_order, dbt_mock_setup),
        cmocka_unit_test_setup(test_keepalive_skips_recently_used, dbt_mock_setup),
        cmocka_unit_test_setup(test_idle_timeout_counts_from_last_use, dbt_mock_setup),
        cmocka_unit_test_setup(test_init_sql_rerun_bounded_on_release, dbt_mock_setup),
        cmocka_unit_test_setup(test_long_maintenance_interval_keeps_thread_cache, dbt_mock_setup),
        cmocka_unit_test_setup(test_health_check_within_its_bound, dbt_mock_setup),
        cmocka_unit_test_setup(test_unhealthy_check_says_so, dbt_mock_setup),
        cmocka_unit_test_setup(test_non_waiting_acquire_validates_once, dbt_mock_setup),
        cmocka_unit_test_setup(test_ready_connection_taken_after_slow_failed_validation, dbt_mock_setup),
        cmocka_unit_test_setup(test_release_twice_during_keepalive_ping_is_misuse, dbt_mock_setup),
        cmocka_unit_test_setup(test_discard_opens_one_for_caller_in_line, dbt_mock_setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
