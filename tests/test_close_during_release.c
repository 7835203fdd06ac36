/* A release that closes its connection while dbpool_close runs on another
 * thread (allowed: docs/threading.md) must not touch the pool once close
 * could free it. The release that closes a connection logs a breaker
 * event after its unlock (the cooldown is over and a caller waits): the
 * pool must be held until that log is written.
 *
 * The window is a few instructions after an unlock. This test widens it:
 * the executable is linked with -Wl,--wrap=pthread_mutex_unlock, and the
 * releasing thread sleeps 200 ms after its next unlock of the pool's lock,
 * as if preempted there, while another thread closes the pool. The ASan
 * and TSan builds report a use after free if the pool is not held. */
#include "driver_mock.h"
#include "pool_internal.h"
#include "testsupport.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

int __real_pthread_mutex_unlock(pthread_mutex_t *m);

static _Thread_local bool slow_next_unlock;
static atomic_int releasing;
static pthread_mutex_t *pool_lock;

int __wrap_pthread_mutex_unlock(pthread_mutex_t *m);
int __wrap_pthread_mutex_unlock(pthread_mutex_t *m) {
    int rc = __real_pthread_mutex_unlock(m);
    if (slow_next_unlock && m == pool_lock) {
        slow_next_unlock = false;
        atomic_store(&releasing, 1);
        usleep(200 * 1000);
    }
    return rc;
}

static dbpool *pool;
static _Thread_local bool armed; /* the thread whose release is slowed */
static atomic_int half_open_logged;

static void on_log(void *user, dbpool_log_level level, const char *msg) {
    (void)user, (void)level;
    /* Logged just before the accounting whose unlock comes next. */
    if (armed && strstr(msg, "closing connection"))
        slow_next_unlock = true;
    if (strstr(msg, "half-open"))
        atomic_store(&half_open_logged, 1);
}

static void *wait_in_line(void *arg) {
    (void)arg;
    dbpool_conn *c = NULL;
    if (dbpool_acquire(pool, 10000, &c, NULL) == DBPOOL_OK)
        dbpool_release(c);
    return NULL;
}

static void *closer(void *arg) {
    (void)arg;
    /* Until the release is in its slowed unlock (at most 10 s: a test
     * that hangs would say less than one that fails). */
    for (int i = 0; i < 10000 && !atomic_load(&releasing); i++)
        usleep(1000);
    dbpool_close(pool); /* while the release is under way */
    return NULL;
}

static void test_breaker_log_after_close(void **state) {
    (void)state;
    dbpool__mock_reset();
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.max_retries = 0;
    o.breaker_failures = 1;
    o.breaker_cooldown_ms = 50;
    o.maintenance_interval_ms = 0;
    o.thread_cache = false;
    o.max_connecting = 1;
    o.acquire_timeout_ms = 10000;
    o.log_fn = on_log;
    o.log_level = DBPOOL_LOG_INFO;
    dbpool_error e;
    if (dbpool_open(&pool, "mock:", &o, &e) != DBPOOL_OK)
        fail_msg("open: %s", e.message);
    dbpool_conn *held = dbt_acquire(pool);
    dbpool__mock_fail_connect(1, -1, DBPOOL_ECONNECT); /* the database goes away */
    dbpool__mock_set_connect_delay_ms(500);            /* both callers queue before it fails */
    pthread_t w[2];
    for (int i = 0; i < 2; i++) { /* the connector's failure fails the first; the second waits on */
        assert_int_equal(pthread_create(&w[i], NULL, wait_in_line, NULL), 0);
        dbt_wait_for_waiters(pool, i + 1, 5000);
    }
    /* The connect fails, the breaker opens and fails the first caller;
     * then its cooldown passes with the second still in line. */
    dbpool_stats s;
    int64_t until = dbt_now_ms() + 10000;
    do {
        dbt_sleep_ms(5);
        dbpool_get_stats(pool, &s);
    } while ((s.breaker != DBPOOL_BREAKER_OPEN || s.waiting != 1) && dbt_now_ms() < until);
    assert_int_equal(s.breaker, DBPOOL_BREAKER_OPEN);
    assert_int_equal(s.waiting, 1);
    dbt_sleep_ms(o.breaker_cooldown_ms + 50);
    pthread_t cl;
    assert_int_equal(pthread_create(&cl, NULL, closer, NULL), 0);
    pool_lock = &pool->lock;
    armed = true;
    assert_int_equal(dbpool_discard(held), DBPOOL_OK); /* the last lease comes back while close runs */
    armed = false;
    assert_int_equal(pthread_join(cl, NULL), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(w[i], NULL), 0);
    /* The release's breaker event was written (while the pool was held). */
    assert_int_equal(atomic_load(&half_open_logged), 1);
    dbpool__mock_counters n;
    dbpool__mock_get_counters(&n);
    assert_int_equal(n.live, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_breaker_log_after_close),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
