/* The pool's own threads and the application's signals. A pool's threads
 * (connectors, maintenance, keepalive) start with the signal mask of the
 * thread that opened it; with nothing blocked there, a signal sent to the
 * process (SIGINT, SIGTERM, a timer's SIGALRM, SIGCHLD) could be delivered
 * to a pool thread: the application's handler then ran there, and a
 * sigwait thread of the application never got it. They block every signal
 * but a fault's. Mock backend. */
#include "driver_mock.h"
#include "testsupport.h"

#include <dirent.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

/* The SigBlk mask of one thread of this process, from /proc. */
static bool blocked_mask(const char *tid, unsigned long long *mask) {
    char path[96], line[256];
    snprintf(path, sizeof path, "/proc/self/task/%s/status", tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false; /* gone meanwhile */
    bool found = false;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "SigBlk: %llx", mask) == 1)
            found = true;
    fclose(f);
    return found;
}

static bool has(unsigned long long mask, int sig) { return (mask >> (sig - 1)) & 1; }

static void test_pool_threads_leave_signals_to_the_application(void **state) {
    (void)state;
    dbpool__mock_reset();
    sigset_t none, saved;
    sigemptyset(&none);
    assert_int_equal(pthread_sigmask(SIG_SETMASK, &none, &saved), 0);

    /* Threads from before the pool (a sanitizer's) are not the pool's. */
    static char before[64][32];
    int n_before = 0;
    DIR *d0 = opendir("/proc/self/task");
    assert_non_null(d0);
    struct dirent *de0;
    while ((de0 = readdir(d0)) != NULL && n_before < 64)
        if (de0->d_name[0] != '.')
            snprintf(before[n_before++], sizeof before[0], "%s", de0->d_name);
    closedir(d0);

    dbpool_options o;
    dbt_options(&o, 1, 4);
    o.max_connecting = 2;
    o.maintenance_interval_ms = 1000;
    o.keepalive_ms = 1000;
    dbpool *p = NULL;
    dbpool_error e;
    if (dbpool_open(&p, "mock:", &o, &e) != DBPOOL_OK)
        fail_msg("open: %s", e.message);
    /* The opening thread's own mask is as it was. */
    sigset_t now;
    assert_int_equal(pthread_sigmask(SIG_SETMASK, NULL, &now), 0);
    assert_false(sigismember(&now, SIGINT));

    char self[32];
    snprintf(self, sizeof self, "%d", (int)getpid()); /* the main thread's tid: this test runs on it */
    static const int app_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGALRM, SIGCHLD, SIGUSR1, SIGUSR2, SIGPIPE};
    /* A thread glibc has created but not yet run has every signal blocked
     * (start_thread then sets the mask it was created with), and so has a
     * sanitizer's own thread: such threads are not judged. Read again until
     * the pool's four threads (two connectors, maintenance, keepalive) are
     * past that, for up to 10 s. Any thread that takes an application's
     * signal fails at once. */
    int settled = 0;
    for (int round = 0; round < 1000 && settled < 4; round++) {
        settled = 0;
        DIR *d = opendir("/proc/self/task");
        assert_non_null(d);
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            bool old_thread = false;
            for (int i = 0; i < n_before; i++)
                old_thread |= strcmp(de->d_name, before[i]) == 0;
            unsigned long long mask = 0;
            if (de->d_name[0] == '.' || strcmp(de->d_name, self) == 0 || old_thread ||
                !blocked_mask(de->d_name, &mask))
                continue;
            for (size_t i = 0; i < sizeof app_signals / sizeof app_signals[0]; i++)
                if (!has(mask, app_signals[i]))
                    fail_msg("pool thread %s takes signal %d (%s) sent to the process (SigBlk %llx)",
                             de->d_name, app_signals[i], strsignal(app_signals[i]), mask);
            /* A fault in the thread itself is still delivered (blocked, it
             * would kill the process without the application's handler),
             * and so is a sampling profiler's SIGPROF. */
            if (!has(mask, SIGSEGV) && !has(mask, SIGBUS) && !has(mask, SIGPROF))
                settled++;
        }
        closedir(d);
        if (settled < 4)
            dbt_sleep_ms(10);
    }
    if (settled < 4)
        fail_msg("only %d threads with the pool's mask (application signals blocked, SIGSEGV, SIGBUS and "
                 "SIGPROF not) after 10 s, expected 4",
                 settled);

    assert_int_equal(dbpool_close(p), 0);
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pool_threads_leave_signals_to_the_application),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
