/*
 * test_manager_fork_locks.c — fork() while threads are inside a manager and
 * a pool. The locks involved are taken in one order everywhere: a
 * manager's lock, then a pool's lock (dbpool_manager_acquire and the
 * manager's statistics), then the list of open pools (a release that
 * drops a closed pool from its thread's cache asks that list with the
 * pool's lock held). fork()'s handlers took the list first and the
 * managers' locks after it when the manager was made before the first
 * pool was opened (handlers run in the reverse order of their
 * registration), so three threads could wait on each other for ever: the
 * forking one holding the list and waiting for a manager's readers, a
 * reader of that manager waiting for a pool's lock, and the pool's lock
 * holder waiting for the list.
 *
 * Its own process: the order of the handlers is decided by the first
 * dbpool_manager_new or dbpool_open of the process, here the manager.
 */
#include "pool_internal.h" /* dbpool__lock, dbpool__live_has: the pool's lock holder asks the list */
#include "testsupport.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

typedef struct ctx {
    dbpool_manager *m;
    dbpool *p;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int holder; /* 1: holds the pool's lock; 2: told to go on; 3: done */
    bool reader_done, forked;
    int child_status;
} ctx;

static void set(ctx *x, int *field, int v) {
    pthread_mutex_lock(&x->mu);
    *field = v;
    pthread_cond_broadcast(&x->cv);
    pthread_mutex_unlock(&x->mu);
}

/* Holds the pool's lock, as a release does, and asks the list of open
 * pools under it, as a release does when its thread's cache is full and
 * a pool was closed since. */
static void *hold_then_ask(void *arg) {
    ctx *x = arg;
    dbpool__lock(x->p);
    set(x, &x->holder, 1);
    pthread_mutex_lock(&x->mu);
    while (x->holder != 2)
        pthread_cond_wait(&x->cv, &x->mu);
    pthread_mutex_unlock(&x->mu);
    (void)dbpool__live_has(x->p, x->p->serial);
    dbpool__unlock(x->p);
    set(x, &x->holder, 3);
    return NULL;
}

/* Reads the manager's statistics: the manager's lock, then the pool's. */
static void *read_stats(void *arg) {
    ctx *x = arg;
    char buf[1 << 14];
    (void)dbpool_manager_stats_json(x->m, buf, sizeof buf);
    pthread_mutex_lock(&x->mu);
    x->reader_done = true;
    pthread_cond_broadcast(&x->cv);
    pthread_mutex_unlock(&x->mu);
    return NULL;
}

static void *fork_once(void *arg) {
    ctx *x = arg;
    pid_t pid = fork();
    if (pid == 0)
        _exit(0);
    int st = -1;
    if (pid > 0)
        waitpid(pid, &st, 0);
    pthread_mutex_lock(&x->mu);
    x->forked = true;
    x->child_status = st;
    pthread_cond_broadcast(&x->cv);
    pthread_mutex_unlock(&x->mu);
    return NULL;
}

static void test_fork_with_a_reader_waiting_for_a_pool(void **state) {
    (void)state;
    ctx x = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    assert_int_equal(dbpool_manager_new(&x.m), DBPOOL_OK); /* before any pool */
    dbpool_options o;
    dbt_options(&o, 1, 1);
    o.maintenance_interval_ms = 0;
    dbpool_error e;
    assert_int_equal(dbpool_manager_open(x.m, "p", "mock:", &o, &e), DBPOOL_OK);
    x.p = dbpool_manager_get(x.m, "p");
    fflush(stdout);
    fflush(stderr);

    pthread_t holder, reader, forker;
    assert_int_equal(pthread_create(&holder, NULL, hold_then_ask, &x), 0);
    pthread_mutex_lock(&x.mu);
    while (x.holder != 1)
        pthread_cond_wait(&x.cv, &x.mu);
    pthread_mutex_unlock(&x.mu);
    /* Nothing says from outside that a thread waits for a lock: these
     * pauses only make the bad interleaving likely (the reader waiting for
     * the pool's lock with the manager's held, the fork's handlers
     * started). Without them the test passes as well; with the old order
     * it hangs most of the time with them. */
    assert_int_equal(pthread_create(&reader, NULL, read_stats, &x), 0);
    dbt_sleep_ms(200);
    assert_int_equal(pthread_create(&forker, NULL, fork_once, &x), 0);
    dbt_sleep_ms(200);
    set(&x, &x.holder, 2);

    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 20;
    pthread_mutex_lock(&x.mu);
    while (!(x.forked && x.reader_done && x.holder == 3) &&
           pthread_cond_timedwait(&x.cv, &x.mu, &deadline) == 0)
        ;
    bool done = x.forked && x.reader_done && x.holder == 3;
    pthread_mutex_unlock(&x.mu);
    if (!done) {
        /* The three threads wait on each other and hold the list of open
         * pools: nothing else of this process can run. */
        fprintf(stderr,
                "deadlock: fork() %s, the manager's reader %s, the pool's lock holder %s after 20 s\n",
                x.forked ? "returned" : "hangs in its handlers", x.reader_done ? "returned" : "waits",
                x.holder == 3 ? "returned" : "waits for the list of open pools");
        fflush(stderr);
        _exit(1);
    }
    assert_int_equal(pthread_join(holder, NULL), 0);
    assert_int_equal(pthread_join(reader, NULL), 0);
    assert_int_equal(pthread_join(forker, NULL), 0);
    assert_true(WIFEXITED(x.child_status) && WEXITSTATUS(x.child_status) == 0);
    assert_int_equal(dbpool_manager_free(x.m), DBPOOL_OK);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fork_with_a_reader_waiting_for_a_pool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
