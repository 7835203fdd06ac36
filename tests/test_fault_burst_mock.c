/*
 * test_fault_burst_mock.c — test_fault_burst on the mock backend: a burst
 * of 50 callers against a 1 s connect (dbpool__mock_set_connect_delay_ms).
 * Each caller does acquire / hold 1-2 ms / release once; all succeed and
 * the pool opens far fewer than 50 connections (max_connecting 2: <= 4).
 * Prints `created=<n>`.
 */
#include "driver_mock.h"
#include "testsupport.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#define CALLERS 50
#define DELAY_MS 1000

typedef struct caller {
    dbpool *p;
    pthread_barrier_t *start;
    int index;
    int rc;
    char msg[512];
} caller;

static void *caller_main(void *arg) {
    caller *c = arg;
    pthread_barrier_wait(c->start);
    dbpool_conn *lease = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    c->rc = dbpool_acquire(c->p, -1, &lease, &e);
    if (c->rc != DBPOOL_OK) {
        snprintf(c->msg, sizeof c->msg, "%s", e.message);
        return NULL;
    }
    dbt_sleep_ms(1 + c->index % 2);
    dbpool_release(lease);
    return NULL;
}

static void run_burst(int max_connecting, uint64_t max_created) {
    dbpool__mock_reset();
    dbpool__mock_set_connect_delay_ms(DELAY_MS);
    dbpool_options o;
    dbt_options(&o, 0, 10);
    o.lazy_connect = true;
    o.max_connecting = max_connecting;
    o.acquire_timeout_ms = 10000;
    o.maintenance_interval_ms = 0;
    dbpool *p = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    if (dbpool_open(&p, "mock:", &o, &e) != DBPOOL_OK)
        fail_msg("open: %s", e.message);

    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, CALLERS + 1);
    caller cs[CALLERS];
    pthread_t th[CALLERS];
    for (int i = 0; i < CALLERS; i++) {
        cs[i] = (caller){p, &start, i, -100, ""};
        assert_int_equal(pthread_create(&th[i], NULL, caller_main, &cs[i]), 0);
    }
    int64_t t0 = dbt_now_ms();
    pthread_barrier_wait(&start);
    for (int i = 0; i < CALLERS; i++)
        pthread_join(th[i], NULL);
    int64_t took = dbt_now_ms() - t0;
    pthread_barrier_destroy(&start);

    dbpool_stats s;
    dbpool_get_stats(p, &s);
    dbpool__mock_counters mc;
    dbpool__mock_get_counters(&mc);
    printf("created=%llu backend=mock callers=%d connect_delay_ms=%d max_connecting=%d took_ms=%lld "
           "connect_attempts=%ld\n",
           (unsigned long long)s.created, CALLERS, DELAY_MS, max_connecting, (long long)took, mc.connects);
    fflush(stdout);
    for (int i = 0; i < CALLERS; i++)
        if (cs[i].rc != DBPOOL_OK)
            fail_msg("caller %d: %s: %s", i, dbpool_errname(cs[i].rc), cs[i].msg);
    if (s.created > max_created)
        fail_msg(
            "a burst of %d callers against a %d ms connect opened %llu connections (expected <= %llu with "
            "max_connecting %d)",
            CALLERS, DELAY_MS, (unsigned long long)s.created, (unsigned long long)max_created,
            max_connecting);
    assert_true(s.acquired == CALLERS);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
    dbpool__mock_get_counters(&mc);
    assert_int_equal(mc.live, 0);
}

static void test_burst_default_max_connecting(void **state) {
    (void)state;
    run_burst(2, 4);
}

static void test_burst_one_connector(void **state) {
    (void)state;
    run_burst(1, 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_default_max_connecting),
        cmocka_unit_test(test_burst_one_connector),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
