/* The log lines of the pool's state changes (circuit breaker transitions,
 * resize, suspend, resume) come out once each, in the order of the
 * changes, while several threads make them at once: a breaker flapping
 * under callers that connect on their own thread, and another thread
 * suspending, resuming and resizing. The lines are read back as a state
 * machine and counted against the pool's statistics. The log callback
 * reads the pool's statistics, as a callback may (docs/threading.md):
 * logging holds no lock the callback needs. Mock backend; bounded in
 * time. */
#include "driver_mock.h"
#include "testsupport.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#define RUN_MS 1500
#define WORKERS 3
#define MAX_LINES 200000

typedef enum {
    L_OPENED,
    L_HALF_OPEN,
    L_REOPENED,
    L_CLOSED,
    L_SUSPENDED,
    L_RESUMED,
    L_RESIZED,
    L_LOST, /* "N events ... not logged": where they were lost */
    L_KINDS
} line_kind;

static const char *const kind_text[L_KINDS] = {
    "circuit breaker opened (",
    "circuit breaker half-open",
    "circuit breaker opened again",
    "circuit breaker closed",
    "': suspended",
    "': resumed",
    "': resized to min",
    " events of the pool were not logged",
};

static pthread_mutex_t lines_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned char *lines; /* line_kind of each state-change line, in order */
static int n_lines;
static unsigned long lost_events;
static dbpool *pool;
static atomic_bool stop;

static void on_line(void *user, dbpool_log_level level, const char *msg) {
    (void)user, (void)level;
    /* What a callback may do on any thread: read the pool. */
    dbpool_stats s;
    dbpool_get_stats(pool, &s);
    const char *lost = strstr(msg, " events of the pool were not logged");
    int kind = -1;
    for (int k = 0; k < L_KINDS && kind < 0; k++)
        if (strstr(msg, kind_text[k]))
            kind = k;
    pthread_mutex_lock(&lines_lock);
    if (lost) {
        const char *digits = strstr(msg, "': ");
        lost_events += strtoul(digits ? digits + 3 : msg, NULL, 10);
    }
    if (kind >= 0 && n_lines < MAX_LINES) {
        lines[n_lines++] = (unsigned char)kind;
    }
    pthread_mutex_unlock(&lines_lock);
    /* A thread slow to log what it did (it writes to a slow disk): each
     * thread used to log its own change after this, so others' came out
     * first. */
    if (strstr(msg, "connect attempt"))
        nanosleep(&(struct timespec){.tv_nsec = 200000}, NULL);
}

static void *connect_on_own_thread(void *arg) {
    (void)arg;
    while (!atomic_load(&stop)) {
        dbpool_conn *c;
        if (dbpool_try_acquire(pool, &c, NULL) == DBPOOL_OK)
            dbpool_discard(c); /* the next one connects again */
        dbt_sleep_ms(1);
    }
    return NULL;
}

typedef struct sizer_counts {
    long suspends, resumes, resizes;
} sizer_counts;

static void *suspend_resume_resize(void *arg) {
    sizer_counts *n = arg;
    for (int i = 0; !atomic_load(&stop); i++) {
        assert_int_equal(dbpool_suspend(pool), DBPOOL_OK);
        n->suspends++;
        assert_int_equal(dbpool_resume(pool), DBPOOL_OK);
        n->resumes++;
        assert_int_equal(dbpool_resize(pool, 0, 3 + i % 2, NULL), DBPOOL_OK);
        n->resizes++;
        dbt_sleep_ms(1);
    }
    return NULL;
}

/* The database goes down and comes back, over and over. */
static void flap_database(void) {
    int64_t end = dbt_now_ms() + RUN_MS;
    for (int i = 0; dbt_now_ms() < end; i++) {
        if (i % 2 == 0)
            dbpool__mock_fail_connect(1, -1, DBPOOL_ECONNECT);
        else
            dbpool__mock_fail_connect(0, 0, 0);
        dbt_sleep_ms(7);
    }
}

/* Each breaker line must be a transition from the state the lines before
 * it left: closed -> opened -> half-open -> opened again or closed; a
 * success of a connect admitted before the breaker opened closes it from
 * open as well. Suspend and resume alternate (one thread makes them).
 * After a count of lost lines, the next line of each kind starts from
 * whatever state it says. */
static void check_order(void) {
    enum { CLOSED, OPEN, HALF_OPEN } breaker = CLOSED;
    bool suspended = false, breaker_known = true, suspend_known = true;
    for (int i = 0; i < n_lines; i++) {
        bool ok;
        line_kind k = (line_kind)lines[i];
        if (k == L_LOST) {
            breaker_known = suspend_known = false;
            continue;
        }
        bool known = k == L_SUSPENDED || k == L_RESUMED ? suspend_known : breaker_known;
        switch (k) {
        case L_OPENED:
            ok = breaker == CLOSED, breaker = OPEN;
            break;
        case L_HALF_OPEN:
            ok = breaker == OPEN, breaker = HALF_OPEN;
            break;
        case L_REOPENED:
            ok = breaker == HALF_OPEN, breaker = OPEN;
            break;
        case L_CLOSED:
            ok = breaker != CLOSED, breaker = CLOSED;
            break;
        case L_SUSPENDED:
            ok = !suspended, suspended = true;
            break;
        case L_RESUMED:
            ok = suspended, suspended = false;
            break;
        default:
            ok = true;
            break;
        }
        if (k == L_SUSPENDED || k == L_RESUMED)
            suspend_known = true;
        else if (k != L_RESIZED)
            breaker_known = true;
        if (!ok && known)
            fail_msg("line %d of %d (\"%s\") does not follow from the lines before it", i, n_lines,
                     kind_text[lines[i]]);
    }
}

static void test_state_changes_logged_in_order(void **state) {
    (void)state;
    dbpool__mock_reset();
    lines = calloc(MAX_LINES, 1);
    assert_non_null(lines);
    dbpool_options o;
    dbt_options(&o, 0, 4);
    o.max_retries = 0;
    o.breaker_failures = 1;
    o.breaker_cooldown_ms = 2;
    o.suspend_fails_fast = true;
    o.log_fn = on_line;
    o.log_level = DBPOOL_LOG_INFO;
    pool = dbt_open_lazy_mock(&o);

    pthread_t workers[WORKERS], sizer;
    sizer_counts sized = {0};
    for (int i = 0; i < WORKERS; i++)
        assert_int_equal(pthread_create(&workers[i], NULL, connect_on_own_thread, NULL), 0);
    assert_int_equal(pthread_create(&sizer, NULL, suspend_resume_resize, &sized), 0);
    flap_database();
    atomic_store(&stop, true);
    for (int i = 0; i < WORKERS; i++)
        assert_int_equal(pthread_join(workers[i], NULL), 0);
    assert_int_equal(pthread_join(sizer, NULL), 0);

    dbpool_stats s;
    dbpool_get_stats(pool, &s);
    assert_int_equal(dbpool_close(pool), 0);

    long seen[L_KINDS] = {0};
    check_order(); /* with lines lost, from the line after their count */
    for (int i = 0; i < n_lines; i++)
        seen[lines[i]]++;
    print_message(
        "%d lines: %ld opened, %ld half-open, %ld opened again, %ld closed, %ld suspend/resume, %ld "
        "resized; %lu not logged\n",
        n_lines, seen[L_OPENED], seen[L_HALF_OPEN], seen[L_REOPENED], seen[L_CLOSED], seen[L_SUSPENDED],
        seen[L_RESIZED], lost_events);
    assert_true(n_lines < MAX_LINES);
    /* The run must have made the changes it is about. */
    assert_true(s.breaker_opens >= 2 && s.breaker_half_opens >= 2 && s.breaker_closes >= 1);
    assert_true(sized.resizes >= 10);

    long made = (long)(s.breaker_opens + s.breaker_half_opens + s.breaker_closes) + sized.suspends +
                sized.resumes + sized.resizes;
    if (lost_events > 0) {
        /* A logging thread descheduled while more than the queue holds
         * happened (a loaded machine): the order has a gap there, but
         * nothing is logged twice or goes missing unsaid. */
        assert_int_equal((long)n_lines - seen[L_LOST] + (long)lost_events, made);
    } else {
        assert_int_equal(seen[L_OPENED] + seen[L_REOPENED], (long)s.breaker_opens);
        assert_int_equal(seen[L_HALF_OPEN], (long)s.breaker_half_opens);
        assert_int_equal(seen[L_CLOSED], (long)s.breaker_closes);
        assert_int_equal(seen[L_SUSPENDED], sized.suspends);
        assert_int_equal(seen[L_RESUMED], sized.resumes);
        assert_int_equal(seen[L_RESIZED], sized.resizes);
    }
    free(lines);
}

/* While changes come faster than log_fn returns, the thread logging the
 * queue logs a bounded number of lines and leaves the rest to the
 * maintenance thread: other threads leave their lines to it, and it used
 * to log until the queue was empty, so one dbpool_suspend took as long as
 * the changes went on (3 s of a 3 s run, r57's measurement). */
static void slow_log(void *user, dbpool_log_level level, const char *msg) {
    (void)user, (void)level, (void)msg;
    dbt_sleep_ms(1);
}

static _Atomic int64_t longest_call_ms;

/* Held, a call took the whole run; bounded, 75 ms on an idle machine and
 * up to 1 s with the two cores loaded 8 times over (ASan, load 16). */
#define HELD_RUN_MS 3000

static void *suspend_resume_timed(void *arg) {
    (void)arg;
    while (!atomic_load(&stop)) {
        int64_t t0 = dbt_now_ms();
        assert_int_equal(dbpool_suspend(pool), DBPOOL_OK);
        assert_int_equal(dbpool_resume(pool), DBPOOL_OK);
        int64_t took = dbt_now_ms() - t0;
        if (took > atomic_load(&longest_call_ms))
            atomic_store(&longest_call_ms, took);
    }
    return NULL;
}

static void test_logging_thread_not_held_by_others_lines(void **state) {
    (void)state;
    dbpool__mock_reset();
    atomic_store(&stop, false);
    atomic_store(&longest_call_ms, 0);
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.lazy_connect = true;
    o.maintenance_interval_ms = 50;
    o.log_fn = slow_log;
    o.log_level = DBPOOL_LOG_INFO;
    pool = dbt_open_mock(&o);
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&t[i], NULL, suspend_resume_timed, NULL), 0);
    dbt_sleep_ms(HELD_RUN_MS);
    atomic_store(&stop, true);
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    assert_int_equal(dbpool_close(pool), 0);
    /* 64 lines of 1 ms, then the maintenance thread takes over: far
     * below the run's 3 s, with room for a loaded machine. */
    int64_t longest = atomic_load(&longest_call_ms);
    print_message("longest suspend + resume: %lld ms\n", (long long)longest);
    if (longest >= HELD_RUN_MS * 2 / 3)
        fail_msg("a suspend + resume took %lld ms of a %d ms run: held logging others' lines",
                 (long long)longest, HELD_RUN_MS);
}

/* One thread's log_fn blocks on its own change's line while others make
 * more: the gate below holds every line from `gate_allowed` on until it
 * is raised. */
#define GATED_MAX 64
static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static char gated[GATED_MAX][160];
static int n_gated, gate_allowed;

static void gated_log(void *user, dbpool_log_level level, const char *msg) {
    (void)user, (void)level;
    pthread_mutex_lock(&gate_lock);
    int me = n_gated < GATED_MAX ? n_gated++ : GATED_MAX - 1;
    snprintf(gated[me], sizeof gated[me], "%s", msg);
    pthread_cond_broadcast(&gate_cond);
    int64_t until = dbt_now_ms() + 10000; /* never a hang, whatever goes wrong */
    while (me >= gate_allowed && dbt_now_ms() < until) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 10 * 1000000;
        if (ts.tv_nsec >= 1000000000)
            ts.tv_sec++, ts.tv_nsec -= 1000000000;
        pthread_cond_timedwait(&gate_cond, &gate_lock, &ts);
    }
    pthread_mutex_unlock(&gate_lock);
}

/* Let lines up to `allowed` through, then wait until `want` have come. */
static void gate_to(int allowed, int want) {
    pthread_mutex_lock(&gate_lock);
    gate_allowed = allowed;
    pthread_cond_broadcast(&gate_cond);
    int64_t until = dbt_now_ms() + 10000;
    while (n_gated < want && dbt_now_ms() < until) {
        pthread_mutex_unlock(&gate_lock);
        dbt_sleep_ms(1);
        pthread_mutex_lock(&gate_lock);
    }
    int n = n_gated;
    pthread_mutex_unlock(&gate_lock);
    if (n < want)
        fail_msg("%d log lines came within 10 s, expected %d", n, want);
}

static void *resize_to_5(void *arg) {
    (void)arg;
    assert_int_equal(dbpool_resize(pool, 0, 5, NULL), DBPOOL_OK);
    return NULL;
}

static int gated_lines(void) {
    pthread_mutex_lock(&gate_lock);
    int n = n_gated;
    pthread_mutex_unlock(&gate_lock);
    for (int i = 0; i < n; i++)
        print_message("%2d %s\n", i, gated[i]);
    return n;
}

static void expect_line(int i, const char *text, const char *what) {
    if (!strstr(gated[i], text))
        fail_msg("line %d: \"%s\", expected %s", i, gated[i], what);
}

/* The count of the lines lost while log_fn blocked comes out where they
 * were lost. 16 lines wait at most: with one thread's log_fn held on its
 * own resize's line, this thread makes 20 more (4 lost), then, two of
 * them logged, one more. The count used to come out once the queue was
 * empty, after that last one. */
static void test_lost_lines_said_where_they_were_lost(void **state) {
    (void)state;
    dbpool__mock_reset();
    dbpool_options o;
    dbt_options(&o, 0, 10);
    o.log_fn = gated_log;
    o.log_level = DBPOOL_LOG_INFO;
    pool = dbt_open_lazy_mock(&o);
    pthread_mutex_lock(&gate_lock);
    n_gated = 0, gate_allowed = 0;
    pthread_mutex_unlock(&gate_lock);

    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, resize_to_5, NULL), 0);
    gate_to(0, 1); /* its own line, held in log_fn */
    for (int i = 0; i < 20; i++)
        assert_int_equal(dbpool_resize(pool, 0, 3, NULL), DBPOOL_OK); /* left to it: 16 wait, 4 lost */
    gate_to(2, 3);                                                    /* two of them logged */
    assert_int_equal(dbpool_resize(pool, 0, 7, NULL), DBPOOL_OK);
    gate_to(GATED_MAX, 19);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(dbpool_close(pool), 0);

    assert_true(gated_lines() >= 19);
    expect_line(0, "resized to min 0, max 5", "the first resize");
    for (int i = 1; i <= 16; i++)
        expect_line(i, "resized to min 0, max 3", "one of the 16 resizes to max 3 that waited");
    expect_line(17, "4 events of the pool were not logged", "the count of the 4 lost after them");
    expect_line(18, "resized to min 0, max 7", "the resize made after the loss");
}

/* Autoscale's cap change is queued with the other changes: it used to be
 * logged by the maintenance pass at once, ahead of the changes made
 * before it that were waiting for a blocked log_fn. The pass runs on a
 * thread of the test's, once: the pool's maintenance thread sleeps
 * through the test (a pass of its own could log the first line itself,
 * and be the one held). */
void dbpool__maint_pass(dbpool *p);

static void *refresh_pool(void *arg) {
    (void)arg;
    assert_int_equal(dbpool_refresh(pool), 0);
    return NULL;
}

static void *one_pass(void *arg) {
    (void)arg;
    dbpool__maint_pass(pool);
    return NULL;
}

static void test_autoscale_line_in_order(void **state) {
    (void)state;
    dbpool__mock_reset();
    dbpool_options o;
    dbt_options(&o, 0, 10); /* autoscale starts at a cap of 5 */
    o.lazy_connect = true;
    o.maintenance_interval_ms = 3600 * 1000;
    o.autoscale = true;
    o.autoscale_interval_ms = 1;
    o.log_fn = gated_log;
    o.log_level = DBPOOL_LOG_INFO;
    pool = dbt_open_mock(&o);
    pthread_mutex_lock(&gate_lock);
    n_gated = 0, gate_allowed = 0;
    pthread_mutex_unlock(&gate_lock);

    pthread_t t, pass;
    assert_int_equal(pthread_create(&t, NULL, refresh_pool, NULL), 0);
    gate_to(0, 1);   /* its line held in log_fn */
    dbt_sleep_ms(5); /* past autoscale_interval_ms */
    /* Nothing in use: the pass brings the cap down from 5 to 4. */
    assert_int_equal(pthread_create(&pass, NULL, one_pass, NULL), 0);
    dbpool_stats s;
    int64_t until = dbt_now_ms() + 5000;
    do {
        dbt_sleep_ms(2);
        dbpool_get_stats(pool, &s);
    } while (s.cap == 5 && dbt_now_ms() < until);
    assert_int_equal(s.cap, 4);
    dbt_sleep_ms(100); /* room for a line logged out of turn to reach log_fn */
    pthread_mutex_lock(&gate_lock);
    int early = n_gated;
    pthread_mutex_unlock(&gate_lock);
    gate_to(GATED_MAX, 2);
    assert_true(dbt_join_within(pass, 15000, NULL));
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(dbpool_close(pool), 0);

    gated_lines();
    if (early != 1)
        fail_msg("%d lines reached log_fn while the first was held in it: the cap change jumped the queue",
                 early);
    expect_line(0, "refreshed: 0 idle connections closed now", "the refresh");
    expect_line(1, "autoscale: cap 5 -> 4", "the cap change after it");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_changes_logged_in_order),
        cmocka_unit_test(test_logging_thread_not_held_by_others_lines),
        cmocka_unit_test(test_lost_lines_said_where_they_were_lost),
        cmocka_unit_test(test_autoscale_line_in_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
