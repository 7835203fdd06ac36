/*
 * test_fault_burst.c — a burst of 50 callers against a slow connect (every
 * new connection takes 1 s: tcp_proxy in DELAY mode). Each caller does
 * acquire / SELECT 1 / release once. All must succeed, and the pool must
 * not open a connection per caller: with max_connecting 2 the first two
 * connections arrive after 1 s and serve the whole queue by hand-off, so
 * at most ~4 are opened. Prints `created=<n>`. PostgreSQL and MariaDB
 * (SQLite: tests/test_fault_burst_mock.c does the same on the mock
 * backend).
 */
#include "backend_common.h"
#include "servers.h"
#include "tcp_proxy.h"

#include <pthread.h>

#define CALLERS 50
#define DELAY_MS 1000

typedef struct caller {
    dbpool *p;
    pthread_barrier_t *start;
    int rc;
    int query_rc;
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
    dbpool_result *r = NULL;
    c->query_rc = dbpool_query(lease, "SELECT 1", NULL, 0, &r, &e);
    if (c->query_rc == DBPOOL_OK && dbpool_result_next(r, &e) != 1)
        c->query_rc = DBPOOL_EQUERY;
    if (c->query_rc != DBPOOL_OK)
        snprintf(c->msg, sizeof c->msg, "%s", e.message);
    dbpool_result_free(r);
    dbpool_release(lease);
    return NULL;
}

static void test_burst_against_slow_connect(void **state) {
    (void)state;
    dbt_proxy *px = dbt_proxy_start("127.0.0.1", dbt_url_port(bt_backend));
    assert_non_null(px);
    dbt_proxy_set_mode(px, DBT_PROXY_DELAY, DELAY_MS);
    dbpool_options o;
    bt_options(&o, 0, 10);
    o.lazy_connect = true;
    o.max_connecting = 2;
    o.acquire_timeout_ms = 10000;
    o.connect_timeout_ms = 5000;
    dbpool *p = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    BT_OK(dbpool_open(&p, dbt_url_via_port(bt_backend, dbt_proxy_port(px)), &o, &e), &e,
          "lazy open via proxy");

    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, CALLERS + 1);
    caller cs[CALLERS];
    pthread_t th[CALLERS];
    for (int i = 0; i < CALLERS; i++) {
        cs[i] = (caller){p, &start, -100, -100, ""};
        assert_int_equal(pthread_create(&th[i], NULL, caller_main, &cs[i]), 0);
    }
    int64_t t0 = dbt_now_ms();
    pthread_barrier_wait(&start);
    for (int i = 0; i < CALLERS; i++)
        pthread_join(th[i], NULL);
    int64_t took = dbt_now_ms() - t0;
    pthread_barrier_destroy(&start);

    dbpool_stats s = bt_stats(p);
    printf("created=%llu backend=%s callers=%d connect_delay_ms=%d took_ms=%lld peak_waiting=%d "
           "proxy_connections=%ld\n",
           (unsigned long long)s.created, bt_backend, CALLERS, DELAY_MS, (long long)took, s.peak_waiting,
           dbt_proxy_accepted(px));
    fflush(stdout);
    for (int i = 0; i < CALLERS; i++) {
        BT_CHECK(cs[i].rc == DBPOOL_OK, "caller %d: acquire failed: %s: %s", i, dbpool_errname(cs[i].rc),
                 cs[i].msg);
        BT_CHECK(cs[i].query_rc == DBPOOL_OK, "caller %d: query failed: %s: %s", i,
                 dbpool_errname(cs[i].query_rc), cs[i].msg);
    }
    BT_CHECK(s.created <= 4,
             "a burst of %d callers against a %d ms connect opened %llu connections (expected <= 4 "
             "with max_connecting 2)",
             CALLERS, DELAY_MS, (unsigned long long)s.created);
    BT_CHECK(s.acquired == CALLERS, "acquired %llu, expected %d", (unsigned long long)s.acquired, CALLERS);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
    dbt_proxy_destroy(px);
}

int main(int argc, char **argv) {
    bt_init(argc, argv);
    if (bt_is("sqlite")) {
        fprintf(stderr, "skipped: SQLite connects are local (tests/test_fault_burst_mock.c covers it)\n");
        return DBT_SKIP;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_against_slow_connect),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
