/*
 * test_fault_leak.c — leak detection and reclaim, on the mock backend:
 *  - a lease held past leak_threshold_ms is reported once through the log
 *    callback with the holder's stack (the line names the function that
 *    acquired: this executable exports its symbols, ENABLE_EXPORTS in
 *    tests/CMakeLists.txt), counted in leaks_detected, and its return is
 *    reported too;
 *  - reclaim (leak_reclaim_ms): with max_size 1 and the only lease leaked
 *    past the reclaim threshold, another acquire succeeds; when the leaked
 *    lease finally comes back it is closed (destroyed_by[RECLAIMED]);
 *  - the acquire-timeout error names the holders: how many, the oldest hold
 *    time and, with leak detection on, where the oldest was acquired;
 *  - a connection handed to a waiter that has not run yet counts as held
 *    since the hand-off, not since its previous lease began;
 *  - a connection in a keepalive ping is not named as a holder;
 *  - the stack starts at the caller of dbpool_acquire / dbpool_try_acquire
 *    in every build (ASan's interceptor of backtrace() adds a frame), is
 *    cut at a whole frame when long, and is the current holder's when the
 *    connection was handed to a waiter or is in an acquire's validation;
 *  - a report names the holder thread by pthread_self() and, on Linux, by
 *    its kernel thread id (gettid), which a later thread does not reuse,
 *    and a forked child's thread by its own.
 */
#include "driver_mock.h"
#include "testsupport.h"

#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __linux__
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include <cmocka.h>

/* ---- a thread-safe collector of log lines ---- */

#define MAX_LINES 64

typedef struct log_lines {
    pthread_mutex_t lock;
    int n;
    char line[MAX_LINES][2048];
} log_lines;

static log_lines logs = {PTHREAD_MUTEX_INITIALIZER, 0, {{0}}};

static void collect(void *user, dbpool_log_level level, const char *message) {
    (void)user;
    (void)level;
    pthread_mutex_lock(&logs.lock);
    if (logs.n < MAX_LINES)
        snprintf(logs.line[logs.n++], sizeof logs.line[0], "%s", message);
    pthread_mutex_unlock(&logs.lock);
}

static void logs_clear(void) {
    pthread_mutex_lock(&logs.lock);
    logs.n = 0;
    pthread_mutex_unlock(&logs.lock);
}

/* Copy of the first line containing all of a and b (b may be NULL). */
/* A log line holding a (and b, unless NULL). The maintenance pass counts
 * a leak under the pool lock and logs it after unlocking, so a line may
 * come a moment after the count that a test waited for: wait for it, up
 * to 5 s. */
static bool logs_find(const char *a, const char *b, char *out, size_t len) {
    int64_t end = dbt_now_ms() + 5000;
    for (;;) {
        bool found = false;
        pthread_mutex_lock(&logs.lock);
        for (int i = 0; i < logs.n && !found; i++) {
            if (strstr(logs.line[i], a) && (!b || strstr(logs.line[i], b))) {
                snprintf(out, len, "%s", logs.line[i]);
                found = true;
            }
        }
        pthread_mutex_unlock(&logs.lock);
        if (found || dbt_now_ms() > end)
            return found;
        dbt_sleep_ms(5);
    }
}

/* How many log lines hold a and b, once that reaches want or 5 s pass. */
static int logs_count(const char *a, const char *b, int want) {
    int64_t end = dbt_now_ms() + 5000;
    for (;;) {
        int n = 0;
        pthread_mutex_lock(&logs.lock);
        for (int i = 0; i < logs.n; i++)
            if (strstr(logs.line[i], a) && strstr(logs.line[i], b))
                n++;
        pthread_mutex_unlock(&logs.lock);
        if (n >= want || dbt_now_ms() > end)
            return n;
        dbt_sleep_ms(5);
    }
}

static void logs_dump(void) {
    pthread_mutex_lock(&logs.lock);
    for (int i = 0; i < logs.n; i++)
        print_message("  log: %s\n", logs.line[i]);
    pthread_mutex_unlock(&logs.lock);
}

static int setup(void **state) {
    (void)state;
    dbpool__mock_reset();
    logs_clear();
    return 0;
}

static dbpool *open_mock(dbpool_options *o) {
    o->log_fn = collect;
    o->log_level = DBPOOL_LOG_DEBUG;
    return dbt_open_mock(o);
}

/* Whether this build records stacks (backtrace(), <execinfo.h>); a build
 * without (-DDBPOOL_NO_EXECINFO=ON, musl) names the holder thread alone. */
#ifdef DBPOOL_HAVE_EXECINFO
static const bool have_stacks = true;
#else
static const bool have_stacks = false;
#endif

/* First in a test of the stacks themselves: skipped without them. */
#define NEEDS_STACKS()                                                                                       \
    do {                                                                                                     \
        if (!have_stacks)                                                                                    \
            skip();                                                                                          \
    } while (0)

/* The holders: external (exported) and never inlined, so that
 * backtrace_symbols names them in the reports. */
dbpool_conn *fault_leak_forgetful_holder(dbpool *p);
dbpool_conn *fault_leak_second_holder(dbpool *p);

__attribute__((noinline)) dbpool_conn *fault_leak_forgetful_holder(dbpool *p) {
    dbpool_conn *c = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int rc = dbpool_acquire(p, 1000, &c, &e);
    if (rc != DBPOOL_OK)
        fail_msg("acquire: %s", e.message);
    /* Work after the call keeps it from being a tail call (the frame
     * stays on the stack). */
    __asm__ __volatile__("" ::: "memory");
    return c;
}

__attribute__((noinline)) dbpool_conn *fault_leak_second_holder(dbpool *p) {
    dbpool_conn *c = fault_leak_forgetful_holder(p);
    __asm__ __volatile__("" ::: "memory");
    return c;
}

/* A deep stack of long names: more frames than a report has room for,
 * whatever the path of this executable. */
#define DEEP_HOLDER(n, next)                                                                                 \
    dbpool_conn *fault_leak_holder_with_a_long_name_to_fill_the_report_##n(dbpool *p);                       \
    __attribute__((noinline))                                                                                \
    dbpool_conn *fault_leak_holder_with_a_long_name_to_fill_the_report_##n(dbpool *p) {                      \
        dbpool_conn *c = next(p);                                                                            \
        __asm__ __volatile__("" ::: "memory");                                                               \
        return c;                                                                                            \
    }
DEEP_HOLDER(1, fault_leak_forgetful_holder)
DEEP_HOLDER(2, fault_leak_holder_with_a_long_name_to_fill_the_report_1)
DEEP_HOLDER(3, fault_leak_holder_with_a_long_name_to_fill_the_report_2)
DEEP_HOLDER(4, fault_leak_holder_with_a_long_name_to_fill_the_report_3)
DEEP_HOLDER(5, fault_leak_holder_with_a_long_name_to_fill_the_report_4)
DEEP_HOLDER(6, fault_leak_holder_with_a_long_name_to_fill_the_report_5)
DEEP_HOLDER(7, fault_leak_holder_with_a_long_name_to_fill_the_report_6)
DEEP_HOLDER(8, fault_leak_holder_with_a_long_name_to_fill_the_report_7)
DEEP_HOLDER(9, fault_leak_holder_with_a_long_name_to_fill_the_report_8)
DEEP_HOLDER(10, fault_leak_holder_with_a_long_name_to_fill_the_report_9)
DEEP_HOLDER(11, fault_leak_holder_with_a_long_name_to_fill_the_report_10)
DEEP_HOLDER(12, fault_leak_holder_with_a_long_name_to_fill_the_report_11)
DEEP_HOLDER(13, fault_leak_holder_with_a_long_name_to_fill_the_report_12)
#define deep_holder fault_leak_holder_with_a_long_name_to_fill_the_report_13

/* The lines of a stack after "acquired at:\n" (a leak report or a
 * timeout error): each a whole frame as backtrace_symbols writes it
 * ("  #N name [0xaddr]"), or "  ..." for those left out; returns the
 * number of frames, or -1 (with the bad line in *bad) when one is cut. */
static int whole_frames(const char *text, char *bad, size_t badlen) {
    const char *s = strstr(text, "acquired at:\n");
    if (!s) {
        snprintf(bad, badlen, "(no stack)");
        return -1;
    }
    s += strlen("acquired at:\n");
    int frames = 0;
    while (*s) {
        const char *e = strchr(s, '\n');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        char l[600];
        snprintf(l, sizeof l, "%.*s", (int)len, s);
        bool ok = false;
        if (strcmp(l, "  ...") == 0) {
            ok = true;
        } else if (strncmp(l, "  #", 3) == 0 && len > 0 && l[len - 1] == ']') {
            const char *a = strrchr(l, '[');
            ok = a && strncmp(a, "[0x", 3) == 0 && strspn(a + 3, "0123456789abcdef") == strlen(a + 3) - 1;
            frames++;
        }
        if (!ok) {
            snprintf(bad, badlen, "%s", l);
            return -1;
        }
        s = e ? e + 1 : s + len;
    }
    return frames;
}

/* Whether the first frame of the stack in text ("acquired at:\n  #0 ...")
 * names fn. */
static bool first_frame_is(const char *text, const char *fn) {
    const char *f = strstr(text, "acquired at:\n  #0 ");
    if (!f)
        return false;
    const char *end = strchr(f + strlen("acquired at:\n"), '\n');
    const char *hit = strstr(f + strlen("acquired at:\n"), fn);
    return hit && (!end || hit < end);
}

dbpool_conn *fault_leak_trying_holder(dbpool *p);
__attribute__((noinline)) dbpool_conn *fault_leak_trying_holder(dbpool *p) {
    dbpool_conn *c = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int rc = dbpool_try_acquire(p, &c, &e);
    if (rc != DBPOOL_OK)
        fail_msg("try_acquire: %s", e.message);
    __asm__ __volatile__("" ::: "memory");
    return c;
}

static bool wait_until(dbpool *p, bool (*cond)(const dbpool_stats *), int64_t timeout_ms) {
    int64_t end = dbt_now_ms() + timeout_ms;
    for (;;) {
        dbpool_stats s = dbt_stats(p);
        if (cond(&s))
            return true;
        if (dbt_now_ms() > end)
            return false;
        dbt_sleep_ms(5);
    }
}

static bool one_leak(const dbpool_stats *s) { return s->leaks_detected >= 1; }

static void test_leak_reported_with_stack(void **state) {
    (void)state;
    NEEDS_STACKS();
    dbpool_options o;
    dbt_options(&o, 0, 2);
    /* The short lease below must stay under it even on a thread
     * descheduled for a few hundred ms (TSan, a loaded machine). */
    o.leak_threshold_ms = 400;
    o.maintenance_interval_ms = 20;
    dbpool *p = open_mock(&o);

    dbpool_conn *leaked = fault_leak_second_holder(p);
    /* A short lease is never reported. */
    dbpool_conn *brief = fault_leak_forgetful_holder(p);
    dbpool_release(brief);

    if (!wait_until(p, one_leak, 2000)) {
        logs_dump();
        fail_msg("no leak detected within 2 s of a 400 ms threshold");
    }
    dbt_sleep_ms(200); /* more maintenance passes: reported once only */
    dbpool_stats s = dbt_stats(p);
    assert_int_equal((int)s.leaks_detected, 1);

    char line[2048];
    if (!logs_find("leak", "fault_leak_forgetful_holder", line, sizeof line)) {
        logs_dump();
        fail_msg("no log line names the function that acquired the leaked lease "
                 "(fault_leak_forgetful_holder); is the executable built with ENABLE_EXPORTS / -rdynamic?");
    }
    print_message("leak report:\n%s\n", line);
    assert_non_null(strstr(line, "fault_leak_second_holder"));
    assert_non_null(strstr(line, "held for"));

    assert_int_equal(dbpool_release(leaked), DBPOOL_OK);
    if (!logs_find("came back", NULL, line, sizeof line)) {
        logs_dump();
        fail_msg("the leaked lease's return was not reported");
    }
    print_message("return report: %s\n", line);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

static void test_reclaim_restores_capacity(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.leak_threshold_ms = 50;
    /* The replacement lease below, and the one that checks capacity at
     * the end, must not be reclaimed in turn: held for a few ms each, they
     * stay under 400 ms even on a thread descheduled for a few hundred. */
    o.leak_reclaim_ms = 400;
    o.maintenance_interval_ms = 20;
    dbpool *p = open_mock(&o);

    dbpool_conn *leaked = fault_leak_forgetful_holder(p);
    int leaked_id = dbt_conn_id(leaked);

    /* The only connection is out: a second caller waits, and is served by
     * a replacement once the lease passes the reclaim threshold. */
    dbpool_conn *c = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int64_t t0 = dbt_now_ms();
    int rc = dbpool_acquire(p, 3000, &c, &e);
    int64_t took = dbt_now_ms() - t0;
    if (rc != DBPOOL_OK) {
        logs_dump();
        fail_msg("with the only lease leaked past leak_reclaim_ms, acquire failed after %lld ms: %s: %s",
                 (long long)took, dbpool_errname(rc), e.message);
    }
    print_message("acquire served after %lld ms by reclaim\n", (long long)took);
    assert_true(dbt_conn_id(c) != leaked_id);
    dbpool_stats s = dbt_stats(p);
    assert_int_equal((int)s.leaks_reclaimed, 1);
    assert_int_equal(s.reclaimed_out, 1);
    assert_true(s.leaks_detected >= 1);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_release(c), DBPOOL_OK);

    /* The holder still owns a working connection: never freed under it. */
    assert_int_equal(dbpool_exec(leaked, "SELECT 1", NULL, 0, NULL, &e), DBPOOL_OK);

    /* It finally comes back: closed, not pooled. */
    dbpool__mock_counters before;
    dbpool__mock_get_counters(&before);
    assert_int_equal(dbpool_release(leaked), DBPOOL_OK);
    s = dbt_stats(p);
    assert_int_equal((int)s.destroyed_by[DBPOOL_CLOSE_RECLAIMED], 1);
    assert_int_equal(s.reclaimed_out, 0);
    assert_true(s.total <= 1);
    dbpool__mock_counters after;
    dbpool__mock_get_counters(&after);
    assert_int_equal((int)(after.disconnects - before.disconnects), 1);
    char line[2048];
    if (!logs_find("came back", "reclaimed", line, sizeof line)) {
        logs_dump();
        fail_msg("the return of the reclaimed lease was not reported");
    }
    /* Capacity is exactly max_size again. */
    c = fault_leak_forgetful_holder(p);
    dbpool_conn *c2 = NULL;
    assert_int_equal(dbpool_acquire(p, 50, &c2, &e), DBPOOL_ETIMEDOUT);
    dbpool_release(c);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
    dbpool__mock_get_counters(&after);
    assert_int_equal((int)after.live, 0);
}

static void test_timeout_error_names_holders(void **state) {
    (void)state;
    /* With leak detection on: count, oldest hold time and where. */
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.leak_threshold_ms = 60000; /* on, but nothing is reported here */
    o.maintenance_interval_ms = 1000;
    dbpool *p = open_mock(&o);
    dbpool_conn *held = fault_leak_second_holder(p);
    dbt_sleep_ms(120);
    dbpool_conn *c = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    assert_int_equal(dbpool_acquire(p, 100, &c, &e), DBPOOL_ETIMEDOUT);
    print_message("timeout error (leak detection on):\n%s\n", e.message);
    if (!strstr(e.message, "1 holder") || !strstr(e.message, "holding its connection for") ||
        (have_stacks && !strstr(e.message, "fault_leak_forgetful_holder")))
        fail_msg("the timeout error should name the holders (count, oldest hold time, where): %s", e.message);
    long held_ms = 0;
    const char *f = strstr(e.message, "holding its connection for ");
    if (f)
        held_ms = strtol(f + strlen("holding its connection for "), NULL, 10);
    if (held_ms < 200)
        fail_msg("the oldest hold time should be >= 200 ms, the error says %ld", held_ms);
    dbpool_release(held);
    assert_int_equal(dbpool_close(p), 0);

    /* With leak detection off: count and time, no stack. */
    dbpool__mock_reset();
    dbt_options(&o, 0, 2);
    o.maintenance_interval_ms = 0;
    p = open_mock(&o);
    dbpool_conn *a = fault_leak_forgetful_holder(p), *b = fault_leak_forgetful_holder(p);
    memset(&e, 0, sizeof e);
    assert_int_equal(dbpool_acquire(p, 50, &c, &e), DBPOOL_ETIMEDOUT);
    print_message("timeout error (leak detection off):\n%s\n", e.message);
    if (!strstr(e.message, "2 holders") || !strstr(e.message, "holding its connection for"))
        fail_msg("the timeout error should name the holders: %s", e.message);
    dbpool_release(a);
    dbpool_release(b);
    assert_int_equal(dbpool_close(p), 0);
}

/* A waiter that cannot run: its thread sits in a signal handler until
 * released, while still queued in dbpool_acquire. */
static sem_t in_handler, resume;
static void pause_here(int sig) {
    (void)sig;
    sem_post(&in_handler);
    while (sem_wait(&resume) != 0) {
    }
}

static void *waiting_acquirer(void *arg) {
    dbpool *p = arg;
    dbpool_conn *c = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    if (dbpool_acquire(p, 10000, &c, &e) != DBPOOL_OK)
        fail_msg("the waiter's acquire: %s", e.message);
    dbpool_release(c);
    return NULL;
}

static void test_handed_connection_held_since_hand_off(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.maintenance_interval_ms = 0;
    o.barging_window_us = 0; /* a release hands the connection to the waiter */
    dbpool *p = open_mock(&o);
    assert_int_equal(sem_init(&in_handler, 0, 0), 0);
    assert_int_equal(sem_init(&resume, 0, 0), 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = pause_here;
    sigemptyset(&sa.sa_mask);
    struct sigaction old;
    assert_int_equal(sigaction(SIGUSR1, &sa, &old), 0);

    dbpool_conn *held = fault_leak_forgetful_holder(p);
    pthread_t waiter;
    assert_int_equal(pthread_create(&waiter, NULL, waiting_acquirer, p), 0);
    dbt_wait_for_waiters(p, 1, 5000);
    /* The lease now held is this old when it ends. */
    dbt_sleep_ms(600);
    assert_int_equal(pthread_kill(waiter, SIGUSR1), 0);
    while (sem_wait(&in_handler) != 0) {
    }
    assert_int_equal(dbpool_release(held), DBPOOL_OK); /* to the waiter, who is not running */

    dbpool_conn *c = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    assert_int_equal(dbpool_acquire(p, 100, &c, &e), DBPOOL_ETIMEDOUT);
    print_message("timeout error while the connection is handed over:\n%s\n", e.message);
    const char *f = strstr(e.message, "holding its connection for ");
    long held_ms = f ? strtol(f + strlen("holding its connection for "), NULL, 10) : -1;
    sem_post(&resume);
    assert_int_equal(pthread_join(waiter, NULL), 0);
    assert_int_equal(sigaction(SIGUSR1, &old, NULL), 0);
    /* Held since the hand-off: about this acquire's 100 ms, not the
     * previous lease's 600 ms and more. */
    if (held_ms < 0 || held_ms >= 500)
        fail_msg("the handed-over connection should count as held since the hand-off: %s", e.message);
    assert_int_equal(dbpool_close(p), 0);
    sem_destroy(&in_handler);
    sem_destroy(&resume);
}

/* The waiter's acquire, exported so that its stack names it. */
void *fault_leak_waiting_holder(void *arg);
__attribute__((noinline)) void *fault_leak_waiting_holder(void *arg) {
    dbpool *p = arg;
    dbpool_conn *c = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    if (dbpool_acquire(p, 10000, &c, &e) != DBPOOL_OK)
        fail_msg("the waiter's acquire: %s", e.message);
    __asm__ __volatile__("" ::: "memory");
    dbpool_release(c);
    return NULL;
}

/* With leak detection on, a connection handed to a waiter that has not run
 * yet is the waiter's lease: the stack a timeout error (or a leak report)
 * shows for it is the waiter's, not that of the lease that released it. */
static void test_handed_connection_has_the_waiters_stack(void **state) {
    (void)state;
    NEEDS_STACKS();
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.leak_threshold_ms = 60000; /* stacks recorded, nothing reported */
    o.maintenance_interval_ms = 1000;
    o.barging_window_us = 0; /* a release hands the connection to the waiter */
    dbpool *p = open_mock(&o);
    assert_int_equal(sem_init(&in_handler, 0, 0), 0);
    assert_int_equal(sem_init(&resume, 0, 0), 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = pause_here;
    sigemptyset(&sa.sa_mask);
    struct sigaction old;
    assert_int_equal(sigaction(SIGUSR1, &sa, &old), 0);

    dbpool_conn *held = fault_leak_forgetful_holder(p);
    pthread_t waiter;
    assert_int_equal(pthread_create(&waiter, NULL, fault_leak_waiting_holder, p), 0);
    dbt_wait_for_waiters(p, 1, 5000);
    assert_int_equal(pthread_kill(waiter, SIGUSR1), 0);
    while (sem_wait(&in_handler) != 0) {
    }
    assert_int_equal(dbpool_release(held), DBPOOL_OK); /* to the waiter, who is not running */

    dbpool_conn *c = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int rc = dbpool_acquire(p, 50, &c, &e);
    sem_post(&resume);
    assert_int_equal(pthread_join(waiter, NULL), 0);
    assert_int_equal(sigaction(SIGUSR1, &old, NULL), 0);
    print_message("timeout error while the connection is handed over:\n%s\n", e.message);
    assert_int_equal(rc, DBPOOL_ETIMEDOUT);
    if (strstr(e.message, "fault_leak_forgetful_holder") || !strstr(e.message, "fault_leak_waiting_holder"))
        fail_msg("the handed-over connection's stack should be the waiter's (fault_leak_waiting_holder), "
                 "not the released lease's: %s",
                 e.message);
    assert_int_equal(dbpool_close(p), 0);
    sem_destroy(&in_handler);
    sem_destroy(&resume);
}

/* A connection being validated for an acquire counts as held by that
 * caller: the stack a timeout error shows for it is that caller's, not
 * the one of the lease that used it before (and released it). */
static void test_connection_in_validation_has_its_callers_stack(void **state) {
    (void)state;
    NEEDS_STACKS();
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.leak_threshold_ms = 60000; /* stacks recorded, nothing reported */
    o.maintenance_interval_ms = 1000;
    o.validation = DBPOOL_VALIDATE_ALWAYS;
    o.validation_timeout_ms = 5000;
    dbpool *p = open_mock(&o);
    assert_int_equal(dbpool_release(fault_leak_forgetful_holder(p)), DBPOOL_OK);

    dbpool__mock_counters n0, n;
    dbpool__mock_get_counters(&n0);
    dbpool__mock_set_ping_delay_ms(1000);
    pthread_t waiter;
    assert_int_equal(pthread_create(&waiter, NULL, fault_leak_waiting_holder, p), 0);
    /* The mock counts a ping as it begins. */
    int64_t until = dbt_now_ms() + 5000;
    do {
        dbt_sleep_ms(2);
        dbpool__mock_get_counters(&n);
    } while (n.pings == n0.pings && dbt_now_ms() < until);
    if (n.pings == n0.pings)
        fail_msg("the acquire's validation did not start within 5 s");

    dbpool_conn *c = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int rc = dbpool_acquire(p, 50, &c, &e);
    assert_int_equal(pthread_join(waiter, NULL), 0);
    dbpool__mock_set_ping_delay_ms(0);
    print_message("timeout error while the connection is validated:\n%s\n", e.message);
    assert_int_equal(rc, DBPOOL_ETIMEDOUT);
    if (strstr(e.message, "fault_leak_forgetful_holder") ||
        !first_frame_is(e.message, "fault_leak_waiting_holder"))
        fail_msg("the connection in validation should show its caller's stack (fault_leak_waiting_holder), "
                 "not the previous lease's: %s",
                 e.message);
    assert_int_equal(dbpool_close(p), 0);
}

/* A connection that maintenance holds for a keepalive ping is no caller's:
 * the timeout error does not name it a holder, nor show the stack of the
 * lease that last used it. */
static void test_timeout_error_leaves_out_keepalive_ping(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.leak_threshold_ms = 60000; /* stacks recorded */
    o.maintenance_interval_ms = 20;
    o.keepalive_ms = 50;
    dbpool__mock_set_ping_delay_ms(1500);
    dbpool *p = open_mock(&o);
    dbpool_release(fault_leak_second_holder(p)); /* its stack stays on the connection */
    /* The mock counts a ping as it begins (it then takes 1.5 s). */
    dbpool__mock_counters n;
    int64_t until = dbt_now_ms() + 5000;
    do {
        dbt_sleep_ms(5);
        dbpool__mock_get_counters(&n);
    } while (n.pings < 1 && dbt_now_ms() < until);
    if (n.pings < 1)
        fail_msg("no keepalive ping within 5 s");
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.in_use, 0); /* the ping holds it, no caller does */
    dbpool_conn *c = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    assert_int_equal(dbpool_acquire(p, 100, &c, &e), DBPOOL_ETIMEDOUT);
    print_message("timeout error during a keepalive ping:\n%s\n", e.message);
    if (strstr(e.message, "holder") || strstr(e.message, "acquired at") ||
        strstr(e.message, "fault_leak_forgetful_holder") || !strstr(e.message, "1 in a keepalive ping"))
        fail_msg("the connection in a keepalive ping should not be named as a caller's: %s", e.message);
    assert_int_equal(dbpool_close(p), 0);
}

/* Keepalive pings go one at a time: while one hangs, the other idle
 * connections are there for callers. */
static void test_one_hung_ping_holds_one_connection(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 3, 3);
    o.maintenance_interval_ms = 20;
    o.keepalive_ms = 50;
    o.validation_timeout_ms = 5000;
    dbpool__mock_set_ping_delay_ms(2000); /* the first ping hangs for 2 s */
    dbpool *p = open_mock(&o);
    dbpool__mock_counters n;
    int64_t until = dbt_now_ms() + 5000;
    do {
        dbt_sleep_ms(1);
        dbpool__mock_get_counters(&n);
    } while (n.pings < 1 && dbt_now_ms() < until);
    if (n.pings < 1)
        fail_msg("no keepalive ping within 5 s");
    dbpool__mock_set_ping_delay_ms(0); /* later pings answer at once */
    dbpool_conn *a = NULL, *b = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int rc = dbpool_acquire(p, 500, &a, &e);
    if (rc != DBPOOL_OK)
        fail_msg("while one ping hangs, the first acquire: %s: %s", dbpool_errname(rc), e.message);
    rc = dbpool_acquire(p, 500, &b, &e);
    if (rc != DBPOOL_OK)
        fail_msg("while one ping hangs, the second acquire: %s: %s", dbpool_errname(rc), e.message);
    dbpool_release(a);
    dbpool_release(b);
    assert_int_equal(dbpool_close(p), 0);
}

/* leak_reclaim_ms equal to leak_threshold_ms (allowed): a lease passes
 * both in the same maintenance pass. It is still reported with the
 * holder's stack, not only as reclaimed (the stack was never printed). */
static bool one_reclaimed(const dbpool_stats *s) { return s->leaks_reclaimed >= 1; }

static void test_reclaim_in_same_pass_still_reports_stack(void **state) {
    (void)state;
    NEEDS_STACKS();
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.leak_threshold_ms = 100;
    o.leak_reclaim_ms = 100;
    o.maintenance_interval_ms = 20;
    dbpool *p = open_mock(&o);
    dbpool_conn *leaked = fault_leak_second_holder(p);
    if (!wait_until(p, one_reclaimed, 5000)) {
        logs_dump();
        fail_msg("the lease was not reclaimed within 5 s of a 100 ms threshold");
    }
    dbpool_stats s = dbt_stats(p);
    assert_int_equal((int)s.leaks_detected, 1);
    char line[2048];
    if (!logs_find("held for", "fault_leak_forgetful_holder", line, sizeof line)) {
        logs_dump();
        fail_msg("the lease reported and reclaimed in one pass: no log line names where it was acquired");
    }
    if (!logs_find("reclaimed", NULL, line, sizeof line)) {
        logs_dump();
        fail_msg("the reclaim was not logged");
    }
    assert_int_equal(dbpool_release(leaked), DBPOOL_OK);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

/* More leases past the threshold in one pass than a pass logs (8): each
 * one is still reported with its stack, in a later pass (the ones past
 * the eighth used to be marked reported and never logged). */
#define MANY_LEAKS 10
static bool many_leaks(const dbpool_stats *s) { return s->leaks_detected >= MANY_LEAKS; }

static void test_every_leak_is_logged(void **state) {
    (void)state;
    NEEDS_STACKS();
    dbpool_options o;
    dbt_options(&o, 0, MANY_LEAKS);
    o.leak_threshold_ms = 100;
    o.maintenance_interval_ms = 20;
    dbpool *p = open_mock(&o);
    dbpool_conn *leaked[MANY_LEAKS];
    for (int i = 0; i < MANY_LEAKS; i++)
        leaked[i] = fault_leak_forgetful_holder(p);
    if (!wait_until(p, many_leaks, 5000)) {
        logs_dump();
        fail_msg("not every leak was detected within 5 s");
    }
    int reported = logs_count("possible leak", "fault_leak_forgetful_holder", MANY_LEAKS);
    if (reported != MANY_LEAKS) {
        logs_dump();
        fail_msg("%d leaks counted, %d reported with their stack", MANY_LEAKS, reported);
    }
    for (int i = 0; i < MANY_LEAKS; i++)
        assert_int_equal(dbpool_release(leaked[i]), DBPOOL_OK);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

/* A stack deeper and longer than a report has room for: the report and
 * the timeout error end on a whole frame (then "  ..."), never in the
 * middle of a name or an address. */
static void test_long_stack_cut_at_a_whole_frame(void **state) {
    (void)state;
    NEEDS_STACKS();
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.leak_threshold_ms = 100;
    o.maintenance_interval_ms = 20;
    dbpool *p = open_mock(&o);
    dbpool_conn *leaked = deep_holder(p);

    dbpool_conn *c = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    assert_int_equal(dbpool_acquire(p, 50, &c, &e), DBPOOL_ETIMEDOUT);
    print_message("timeout error:\n%s\n", e.message);
    char bad[600];
    int n = whole_frames(e.message, bad, sizeof bad);
    if (n < 1)
        fail_msg("the timeout error's stack should be whole frames, at least one; this one is not: '%s'",
                 bad);
    if (!first_frame_is(e.message, "fault_leak_forgetful_holder"))
        fail_msg("the first frame should be the caller of dbpool_acquire: %s", e.message);
    assert_int_not_equal(e.message[strlen(e.message) - 1], '\n');

    if (!wait_until(p, one_leak, 5000)) {
        logs_dump();
        fail_msg("no leak detected within 5 s of a 100 ms threshold");
    }
    char line[2048];
    if (!logs_find("possible leak", NULL, line, sizeof line)) {
        logs_dump();
        fail_msg("no leak report");
    }
    print_message("leak report:\n%s\n", line);
    n = whole_frames(line, bad, sizeof bad);
    if (n < 2)
        fail_msg("the leak report's stack should be whole frames; this one is not: '%s'", bad);
    size_t ll = strlen(line);
    if (ll < 6 || strcmp(line + ll - 6, "\n  ...") != 0)
        fail_msg("the frames left out should be marked by a last line '  ...': %s", line);
    assert_int_equal(dbpool_release(leaked), DBPOOL_OK);
    assert_int_equal(dbpool_close(p), 0);
}

/* The first frame of a report is the caller of dbpool_acquire or
 * dbpool_try_acquire, in every build: not dbpool_acquire itself (a
 * sanitizer's interceptor of backtrace() adds a frame, which counting two
 * frames to skip did not see). */
static bool two_leaks(const dbpool_stats *s) { return s->leaks_detected >= 2; }

static void test_first_frame_is_the_caller(void **state) {
    (void)state;
    NEEDS_STACKS();
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.leak_threshold_ms = 100;
    o.maintenance_interval_ms = 20;
    dbpool *p = open_mock(&o);
    dbpool_conn *a = fault_leak_forgetful_holder(p);
    dbpool_conn *b = fault_leak_trying_holder(p);

    dbpool_conn *c = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    assert_int_equal(dbpool_acquire(p, 0, &c, &e), DBPOOL_ETIMEDOUT);
    /* The oldest: a, unless both began in the same clock tick. */
    if (!first_frame_is(e.message, "fault_leak_forgetful_holder") &&
        !first_frame_is(e.message, "fault_leak_trying_holder"))
        fail_msg("the timeout error's first frame should be the caller of the acquire: %s", e.message);

    if (!wait_until(p, two_leaks, 5000)) {
        logs_dump();
        fail_msg("two leaks not detected within 5 s of a 100 ms threshold");
    }
    char line[2048];
    if (!logs_find("possible leak", "fault_leak_forgetful_holder", line, sizeof line) ||
        !first_frame_is(line, "fault_leak_forgetful_holder")) {
        logs_dump();
        fail_msg("the report of the lease from dbpool_acquire should start at its caller");
    }
    if (!logs_find("possible leak", "fault_leak_trying_holder", line, sizeof line) ||
        !first_frame_is(line, "fault_leak_trying_holder")) {
        logs_dump();
        fail_msg("the report of the lease from dbpool_try_acquire should start at its caller");
    }
    /* A log line, like any other: no newline at its end (a logger adding
     * its own printed an empty line after each report). */
    if (line[strlen(line) - 1] == '\n')
        fail_msg("the leak report ends in a newline: '%s'", line);
    assert_int_equal(dbpool_release(a), DBPOOL_OK);
    assert_int_equal(dbpool_release(b), DBPOOL_OK);
    assert_int_equal(dbpool_close(p), 0);
}

/* A holder on a thread of its own, which ends holding the lease: who it
 * was, as a report should name it. */
typedef struct thread_holder {
    dbpool *p;
    dbpool_conn *lease;
    unsigned long self; /* pthread_self(): reused by the next thread */
    long tid;           /* the kernel's id (Linux), 0 elsewhere */
} thread_holder;

static void *hold_and_end_main(void *arg) {
    thread_holder *h = arg;
    h->self = (unsigned long)pthread_self();
#ifdef __linux__
    h->tid = (long)syscall(SYS_gettid);
#endif
    h->lease = fault_leak_forgetful_holder(h->p);
    return NULL;
}

/* Two leases taken by two threads, the second started after the first
 * ended (so it often gets the same pthread_t): each report names its
 * holder by pthread_self() and, on Linux, by the kernel's thread id,
 * which tells them apart. */
static void test_leak_report_names_the_holder_thread(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.leak_threshold_ms = 100;
    o.maintenance_interval_ms = 20;
    dbpool *p = open_mock(&o);
    thread_holder h[2] = {{.p = p}, {.p = p}};
    for (int i = 0; i < 2; i++) {
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, hold_and_end_main, &h[i]), 0);
        assert_true(dbt_join_within(t, 5000, NULL));
        assert_non_null(h[i].lease);
    }
    if (!wait_until(p, two_leaks, 5000)) {
        logs_dump();
        fail_msg("two leaks not detected within 5 s of a 100 ms threshold");
    }
    for (int i = 0; i < 2; i++) {
        char conn[64], holder[96], line[2048];
        snprintf(conn, sizeof conn, "connection #%d held", i + 1);
#ifdef __linux__
        snprintf(holder, sizeof holder, " by thread %lu (tid %ld), acquired at:", h[i].self, h[i].tid);
#else
        snprintf(holder, sizeof holder, " by thread %lu, acquired at:", h[i].self);
#endif
        if (!logs_find(conn, holder, line, sizeof line)) {
            logs_dump();
            fail_msg("no report of %s names its holder as '%s'", conn, holder);
        }
#ifndef DBPOOL_HAVE_EXECINFO
        /* No backtrace() in this build: the report says why no stack. */
        if (!strstr(line, "acquired at:\n  (stack not available on this platform"))
            fail_msg("a build without <execinfo.h>: the report should say the stack is not available: %s",
                     line);
#endif
    }
#ifdef __linux__
    assert_true(h[0].tid != h[1].tid);
#endif
    for (int i = 0; i < 2; i++)
        assert_int_equal(dbpool_release(h[i].lease), DBPOOL_OK);
    assert_int_equal(dbpool_close(p), 0);
}

#ifdef __linux__
/* A forked child's one thread has a tid of its own: a lease it takes in a
 * pool of its own is reported with that tid, not with the one of the
 * parent's thread that forked (which had taken leases before). */
static void test_leak_report_in_a_forked_child_names_the_childs_tid(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.leak_threshold_ms = 60000;
    dbpool *p = open_mock(&o);
    dbpool_conn *c = fault_leak_forgetful_holder(p); /* this thread's lease, traced */
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_close(p), 0);
    logs_clear();
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) { /* no cmocka here: the exit code says what failed */
        alarm(20);
        dbt_options(&o, 0, 1);
        o.leak_threshold_ms = 50;
        o.maintenance_interval_ms = 20;
        o.log_fn = collect;
        o.log_level = DBPOOL_LOG_DEBUG;
        dbpool *q = NULL;
        dbpool_error e;
        if (dbpool_open(&q, "mock:", &o, &e) != DBPOOL_OK)
            _exit(2);
        dbpool_conn *held = NULL;
        if (dbpool_acquire(q, 1000, &held, &e) != DBPOOL_OK)
            _exit(3);
        char want[64], line[2048];
        snprintf(want, sizeof want, "(tid %ld), acquired at:", (long)syscall(SYS_gettid));
        bool found = logs_find("possible leak", want, line, sizeof line);
        dbpool_release(held);
        dbpool_close(q);
        _exit(found ? 0 : 4);
    }
    int st = dbt_child_status(pid, 30000);
    if (st != 0)
        fail_msg("the child: %s (%d)",
                 st == 4   ? "its leak report does not name its own tid"
                 : st == 2 ? "dbpool_open failed"
                 : st == 3 ? "dbpool_acquire failed"
                           : "it did not end well",
                 st);
}
#endif

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_leak_reported_with_stack, setup),
        cmocka_unit_test_setup(test_reclaim_restores_capacity, setup),
        cmocka_unit_test_setup(test_reclaim_in_same_pass_still_reports_stack, setup),
        cmocka_unit_test_setup(test_every_leak_is_logged, setup),
        cmocka_unit_test_setup(test_timeout_error_names_holders, setup),
        cmocka_unit_test_setup(test_handed_connection_held_since_hand_off, setup),
        cmocka_unit_test_setup(test_handed_connection_has_the_waiters_stack, setup),
        cmocka_unit_test_setup(test_connection_in_validation_has_its_callers_stack, setup),
        cmocka_unit_test_setup(test_timeout_error_leaves_out_keepalive_ping, setup),
        cmocka_unit_test_setup(test_one_hung_ping_holds_one_connection, setup),
        cmocka_unit_test_setup(test_long_stack_cut_at_a_whole_frame, setup),
        cmocka_unit_test_setup(test_first_frame_is_the_caller, setup),
        cmocka_unit_test_setup(test_leak_report_names_the_holder_thread, setup),
#ifdef __linux__
        cmocka_unit_test_setup(test_leak_report_in_a_forked_child_names_the_childs_tid, setup),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
