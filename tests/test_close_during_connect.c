/* dbpool_close wakes every waiter, and they return DBPOOL_ECLOSED
 * (docs/threading.md), also when a connector's connect fails while they
 * are on their way out: a failure the connector reports after the close
 * must not reach them as the connect error, nor take them out of the line
 * (which keeps the pool alive) before they have run, letting the close
 * free the pool under them.
 *
 * The window is a waiter's wake-up: the close signals it, and before it
 * takes the lock, the connector (woken from its retry backoff by the same
 * close) reports its failure to the waiters still in line. This test
 * widens it: the executable is linked with
 * -Wl,--wrap=pthread_cond_timedwait, and the waiting caller, once woken
 * while `hold_waiter` is set, gives the pool's lock back and stays away (as
 * if descheduled before it could take the lock) until the test lets it
 * go. */
#include "driver_mock.h"
#include "testsupport.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

int __real_pthread_cond_timedwait(pthread_cond_t *c, pthread_mutex_t *m, const struct timespec *ts);

static _Thread_local bool armed; /* the waiting caller's thread */
static atomic_bool hold_waiter;
static atomic_int held;

int __wrap_pthread_cond_timedwait(pthread_cond_t *c, pthread_mutex_t *m, const struct timespec *ts);
int __wrap_pthread_cond_timedwait(pthread_cond_t *c, pthread_mutex_t *m, const struct timespec *ts) {
    int rc = __real_pthread_cond_timedwait(c, m, ts);
    if (armed && atomic_load(&hold_waiter)) {
        atomic_fetch_add(&held, 1);
        pthread_mutex_unlock(m);
        /* At most 10 s: a test that hangs would say less than one that fails. */
        for (int i = 0; i < 10000 && atomic_load(&hold_waiter); i++)
            usleep(1000);
        pthread_mutex_lock(m);
        atomic_fetch_sub(&held, 1);
    }
    return rc;
}

typedef struct caller {
    dbpool *p;
    int rc;
    char message[512];
    atomic_bool done;
} caller;

static void *acquire_armed(void *arg) {
    caller *a = arg;
    armed = true;
    dbpool_conn *c = NULL;
    dbpool_error e;
    a->rc = dbpool_acquire(a->p, 20000, &c, &e);
    snprintf(a->message, sizeof a->message, "%s", a->rc == DBPOOL_OK ? "" : e.message);
    if (a->rc == DBPOOL_OK)
        dbpool_release(c);
    atomic_store(&a->done, true);
    return NULL;
}

static void *close_pool(void *arg) {
    dbpool_close(arg);
    return NULL;
}

static long mock_connects(void) {
    dbpool__mock_counters m;
    dbpool__mock_get_counters(&m);
    return m.connects;
}

static void test_waiter_gets_eclosed_when_connect_fails_during_close(void **state) {
    (void)state;
    dbpool__mock_reset();
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.lazy_connect = true;
    o.maintenance_interval_ms = 0;
    o.breaker_failures = 0;
    o.max_retries = 3;
    o.backoff_base_ms = 10000; /* the connector sleeps in its backoff until the close */
    o.backoff_max_ms = 10000;
    dbpool *p = NULL;
    dbpool_error e;
    if (dbpool_open(&p, "mock:", &o, &e) != DBPOOL_OK)
        fail_msg("open: %s", e.message);
    dbpool__mock_fail_connect(1, -1, DBPOOL_ECONNECT);
    caller w = {.p = p, .rc = -100};
    pthread_t tw, tc;
    assert_int_equal(pthread_create(&tw, NULL, acquire_armed, &w), 0);
    dbt_wait_for_waiters(p, 1, 10000);
    int64_t t0 = dbt_now_ms();
    while (mock_connects() < 1) {
        if (dbt_now_ms() - t0 > 10000)
            fail_msg("the connect did not start within 10 s");
        usleep(1000);
    }
    /* The caller is asleep in line, the connector failed once and backs
     * off. The close wakes both; the caller is held off the lock. (Should
     * the close free the pool meanwhile, the caller blocks on its freed
     * lock inside the wait, before it counts as held: the ASan build
     * reports the use after free.) */
    atomic_store(&hold_waiter, true);
    assert_int_equal(pthread_create(&tc, NULL, close_pool, p), 0);
    t0 = dbt_now_ms();
    while (atomic_load(&held) < 1) {
        if (dbt_now_ms() - t0 > 10000)
            fail_msg("the waiting caller was not woken by the close within 10 s");
        usleep(1000);
    }
    /* The close joins the connector: its failure is reported by then. */
    assert_int_equal(pthread_join(tc, NULL), 0);
    atomic_store(&hold_waiter, false);
    /* Freed under it, the caller would hang on the pool's lock. */
    t0 = dbt_now_ms();
    while (!atomic_load(&w.done)) {
        if (dbt_now_ms() - t0 > 10000)
            fail_msg("the caller in line did not return within 10 s of the close");
        usleep(1000);
    }
    assert_int_equal(pthread_join(tw, NULL), 0);
    if (w.rc != DBPOOL_ECLOSED)
        fail_msg("a caller in line when the pool closed got %s (want DBPOOL_ECLOSED): %s",
                 dbpool_errname(w.rc), w.message);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_waiter_gets_eclosed_when_connect_fails_during_close),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
