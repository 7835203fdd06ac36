/*
 * test_process_stop.c — a process whose pool is stopped (SIGSTOP, Ctrl-Z,
 * a debugger, a paused VM) for seconds and continued: every time the pool
 * keeps runs on the monotonic clock, which went on during the stop. A
 * caller waiting in line times out as soon as the process runs again (not
 * a timeout later, nor never), a lease held across the stop has been held
 * for it (leak report, lifetime over at release), and nothing spins
 * afterwards. docs/operations.md, leak detection. Uses the mock backend, in
 * a child process the test stops and continues.
 */
#include "driver_mock.h"
#include "testsupport.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#define WAIT_MS 1000  /* the waiter's acquire timeout */
#define STOP_MS 2000  /* how long the child is stopped */
#define LIFE_MS 1000  /* max_lifetime_ms: over during the stop */
#define LEAK_MS 300   /* leak_threshold_ms: passed during the stop */
#define SLACK_MS 1500 /* a loaded machine's scheduling, at most */

/* What the child saw, sent to the test through a pipe. */
typedef struct report {
    char failure[200]; /* empty: every step ran */
    int waiter_rc;
    int64_t waiter_start_ms, waiter_end_ms;
    uint64_t leaks_detected, lifetime_closes;
    int64_t cpu_ms, cpu_window_ms; /* CPU time used while nothing happened, and over how long */
} report;

typedef struct waiter_arg {
    dbpool *p;
    report *r;
} waiter_arg;

static void *waiter_main(void *arg) {
    waiter_arg *a = arg;
    dbpool_conn *c = NULL;
    a->r->waiter_start_ms = dbt_now_ms();
    a->r->waiter_rc = dbpool_acquire(a->p, WAIT_MS, &c, NULL);
    a->r->waiter_end_ms = dbt_now_ms();
    if (c)
        dbpool_release(c);
    return NULL;
}

static int64_t cpu_ms(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (int64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000 +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
}

/* The child's part: no cmocka here (it is a copy of the test process). */
static void child_main(int ready_fd, int report_fd) {
    report r;
    memset(&r, 0, sizeof r);
    dbpool__mock_reset();
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.maintenance_interval_ms = 50;
    o.max_lifetime_ms = LIFE_MS;
    o.leak_threshold_ms = LEAK_MS;
    o.validation = DBPOOL_VALIDATE_NEVER;
    dbpool *p = NULL;
    dbpool_conn *held = NULL;
    pthread_t t;
    bool started = false;
    waiter_arg a = {.r = &r};
    if (dbpool_open(&p, "mock:", &o, NULL) != DBPOOL_OK) {
        snprintf(r.failure, sizeof r.failure, "dbpool_open failed");
        goto out;
    }
    if (dbpool_acquire(p, 1000, &held, NULL) != DBPOOL_OK) {
        snprintf(r.failure, sizeof r.failure, "the first acquire failed");
        goto out;
    }
    a.p = p;
    if (pthread_create(&t, NULL, waiter_main, &a) != 0) {
        snprintf(r.failure, sizeof r.failure, "pthread_create failed");
        goto out;
    }
    started = true;
    dbpool_stats s;
    int64_t until = dbt_now_ms() + 10000;
    for (dbpool_get_stats(p, &s); s.waiting < 1 && dbt_now_ms() < until; dbpool_get_stats(p, &s))
        dbt_sleep_ms(1);
    if (s.waiting < 1) {
        snprintf(r.failure, sizeof r.failure, "the waiter never waited");
        goto out;
    }
    /* In line: the test stops this process now. */
    char one = 1;
    if (write(ready_fd, &one, 1) != 1) {
        snprintf(r.failure, sizeof r.failure, "write to the test failed");
        goto out;
    }
    pthread_join(t, NULL);
    started = false;
    /* The lease held across the stop is reported (held well past
     * LEAK_MS by now) at a maintenance pass. */
    until = dbt_now_ms() + 10000;
    for (dbpool_get_stats(p, &s); s.leaks_detected < 1 && dbt_now_ms() < until; dbpool_get_stats(p, &s))
        dbt_sleep_ms(5);
    r.leaks_detected = s.leaks_detected;
    /* Nothing to do for the pool now: its threads must sleep. */
    int64_t c0 = cpu_ms(), w0 = dbt_now_ms();
    dbt_sleep_ms(500);
    r.cpu_ms = cpu_ms() - c0;
    r.cpu_window_ms = dbt_now_ms() - w0;
    /* Its lifetime ran out during the stop: closed at release. */
    dbpool_release(held);
    held = NULL;
    dbpool_get_stats(p, &s);
    r.lifetime_closes = s.destroyed_by[DBPOOL_CLOSE_LIFETIME];
out:
    if (started)
        pthread_join(t, NULL);
    if (held)
        dbpool_release(held);
    if (p)
        dbpool_close(p);
    ssize_t n = write(report_fd, &r, sizeof r);
    _exit(n == (ssize_t)sizeof r ? 0 : 1);
}

/* Read exactly len bytes from fd within timeout_ms (the test fails else). */
static void read_all(int fd, void *buf, size_t len, int64_t timeout_ms) {
    size_t got = 0;
    int64_t until = dbt_now_ms() + timeout_ms;
    while (got < len) {
        int left = (int)(until - dbt_now_ms());
        if (left <= 0)
            fail_msg("no answer from the child within %lld ms", (long long)timeout_ms);
        struct pollfd pfd = {.fd = fd, .events = POLLIN, .revents = 0};
        int rc = poll(&pfd, 1, left);
        if (rc < 0 && errno == EINTR)
            continue;
        assert_true(rc >= 0);
        if (rc == 0)
            continue;
        ssize_t n = read(fd, (char *)buf + got, len - got);
        if (n <= 0)
            fail_msg("the child ended before it reported (read %zd of %zu bytes)", got, len);
        got += (size_t)n;
    }
}

static void test_stopped_and_continued(void **state) {
    (void)state;
    int ready[2], rep[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(rep), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(ready[0]);
        close(rep[0]);
        child_main(ready[1], rep[1]);
    }
    close(ready[1]);
    close(rep[1]);
    char one;
    read_all(ready[0], &one, 1, 20000);
    int64_t stopped = dbt_now_ms();
    assert_int_equal(kill(pid, SIGSTOP), 0);
    int st;
    assert_int_equal(waitpid(pid, &st, WUNTRACED), pid);
    assert_true(WIFSTOPPED(st));
    dbt_sleep_ms(STOP_MS);
    int64_t resumed = dbt_now_ms();
    assert_int_equal(kill(pid, SIGCONT), 0);
    report r;
    read_all(rep[0], &r, sizeof r, 30000);
    assert_int_equal(waitpid(pid, &st, 0), pid);
    close(ready[0]);
    close(rep[0]);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    if (r.failure[0])
        fail_msg("in the child: %s", r.failure);

    /* Nobody released anything: the waiter timed out, not early, and as
     * soon as it could (its deadline or the resume, whichever is later). */
    assert_int_equal(r.waiter_rc, DBPOOL_ETIMEDOUT);
    int64_t deadline = r.waiter_start_ms + WAIT_MS;
    if (r.waiter_end_ms < deadline)
        fail_msg("the waiter gave up %lld ms before its deadline", (long long)(deadline - r.waiter_end_ms));
    int64_t due = deadline > resumed ? deadline : resumed;
    if (r.waiter_end_ms > due + SLACK_MS)
        fail_msg("the waiter timed out %lld ms after it could (deadline %lld ms after the stop, resumed "
                 "after %lld ms)",
                 (long long)(r.waiter_end_ms - due), (long long)(deadline - stopped),
                 (long long)(resumed - stopped));
    assert_int_equal(r.leaks_detected, 1);
    assert_int_equal(r.lifetime_closes, 1);
    /* Asleep, the pool's threads use next to nothing; spinning, one core. */
    if (r.cpu_ms * 2 > r.cpu_window_ms)
        fail_msg("the child used %lld ms of CPU in %lld ms with nothing to do", (long long)r.cpu_ms,
                 (long long)r.cpu_window_ms);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stopped_and_continued),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
