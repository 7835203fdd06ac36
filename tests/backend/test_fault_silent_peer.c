/*
 * test_fault_silent_peer.c — the network between pool and server goes
 * silent (tcp_proxy in SILENT mode: sockets stay open, nothing is
 * forwarded), as when a firewall drops a connection's packets:
 *  - validation (DBPOOL_VALIDATE_ALWAYS) of each idle connection gives up
 *    after validation_timeout_ms, and the acquire returns within its own
 *    timeout plus one validation timeout;
 *  - the rollback on release of a lease left in a transaction is bounded by
 *    validation_timeout_ms too, and the connection is closed;
 *  - no capacity is lost: after switching back to PASS, max_size leases can
 *    be held at once and each works.
 * PostgreSQL and MariaDB only (through the proxy on 127.0.0.1).
 */
#include "backend_common.h"
#include "servers.h"
#include "tcp_proxy.h"

#define MAX 3
#define VALIDATION_MS 300
#define ACQUIRE_MS 700
#define MARGIN_MS 500
/* Not what is measured here (the acquire's own timeout bounds it through
 * the silent peer): room for a TSan build on a loaded machine to open a
 * PostgreSQL connection once the network is back. */
#define CONNECT_MS 2000

static dbt_proxy *start_proxy(void) {
    dbt_proxy *px = dbt_proxy_start("127.0.0.1", dbt_url_port(bt_backend));
    assert_non_null(px);
    return px;
}

static dbpool *open_via(dbt_proxy *px, const dbpool_options *o) {
    dbpool *p = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    BT_OK(dbpool_open(&p, dbt_url_via_port(bt_backend, dbt_proxy_port(px)), o, &e), &e,
          "dbpool_open via the proxy");
    return p;
}

static void test_silent_peer(void **state) {
    (void)state;
    dbt_proxy *px = start_proxy();
    dbpool_options o;
    bt_options(&o, 0, MAX);
    o.validation = DBPOOL_VALIDATE_ALWAYS;
    o.validation_timeout_ms = VALIDATION_MS;
    o.acquire_timeout_ms = ACQUIRE_MS;
    o.connect_timeout_ms = CONNECT_MS;
    o.max_retries = 0;
    o.breaker_failures = 0;
    dbpool *p = open_via(px, &o);

    /* Three connections; one stays leased inside a transaction. */
    dbpool_conn *cs[MAX];
    for (int i = 0; i < MAX; i++) {
        cs[i] = bt_acquire(p);
        assert_int_equal(bt_query_int(cs[i], "SELECT 1", NULL, 0), 1);
    }
    bt_exec(cs[0], "BEGIN");
    bt_release(cs[1]);
    bt_release(cs[2]);
    assert_int_equal(bt_stats(p).idle, 2);

    dbt_proxy_set_mode(px, DBT_PROXY_SILENT, 0);
    dbt_sleep_ms(50);

    /* Acquire: both idle connections fail validation (each bounded by
     * VALIDATION_MS), then a new connection cannot be made in time. */
    dbpool_stats before = bt_stats(p);
    dbpool_conn *c = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int64_t t0 = dbt_now_ms();
    int rc = dbpool_acquire(p, -1, &c, &e);
    int64_t took = dbt_now_ms() - t0;
    print_message("[%s] acquire through a silent peer: %s after %lld ms: %s\n", bt_backend,
                  dbpool_errname(rc), (long long)took, e.message);
    BT_CHECK(rc != DBPOOL_OK, "acquire through a silent peer succeeded");
    if (rc == DBPOOL_OK)
        bt_release(c);
    BT_CHECK(took <= ACQUIRE_MS + VALIDATION_MS + MARGIN_MS,
             "acquire took %lld ms: not bounded by acquire_timeout %d + one validation_timeout %d (+%d)",
             (long long)took, ACQUIRE_MS, VALIDATION_MS, MARGIN_MS);
    dbpool_stats s = bt_stats(p);
    uint64_t failed = s.validation_failures - before.validation_failures;
    BT_CHECK(failed >= 1, "no validation failed through the silent peer");
    BT_CHECK(took >= (int64_t)failed * VALIDATION_MS - 50,
             "%llu validations failed in %lld ms: faster than their timeout, so not because of it",
             (unsigned long long)failed, (long long)took);
    BT_CHECK(s.destroyed_by[DBPOOL_CLOSE_VALIDATION] - before.destroyed_by[DBPOOL_CLOSE_VALIDATION] == failed,
             "connections failing validation should be closed");

    /* Release of the lease in a transaction: the rollback cannot get
     * through; it is bounded and the connection closed. */
    before = bt_stats(p);
    t0 = dbt_now_ms();
    bt_release(cs[0]);
    took = dbt_now_ms() - t0;
    s = bt_stats(p);
    print_message("[%s] release (rollback) through a silent peer took %lld ms\n", bt_backend,
                  (long long)took);
    BT_CHECK(took <= VALIDATION_MS + MARGIN_MS,
             "release with a rollback took %lld ms (validation_timeout %d)", (long long)took, VALIDATION_MS);
    BT_CHECK(s.destroyed_by[DBPOOL_CLOSE_RESET_FAILED] - before.destroyed_by[DBPOOL_CLOSE_RESET_FAILED] == 1,
             "the connection whose rollback timed out should be closed (reset failed)");
    assert_true(dbt_invariant_holds(p));

    /* A connect the failed acquire asked for may still be waiting on the
     * silent peer (the steps above take less than its connect_timeout_ms):
     * it fails, and with max_retries 0 its error would go to the first
     * caller in line below. Let it end first. */
    int64_t end = dbt_now_ms() + CONNECT_MS + 3000;
    while (bt_stats(p).connecting > 0 && dbt_now_ms() < end)
        dbt_sleep_ms(10);
    BT_CHECK(bt_stats(p).connecting == 0, "a connect through the silent peer outlived connect_timeout_ms %d",
             CONNECT_MS);

    /* The network comes back: no capacity was lost. */
    dbt_proxy_set_mode(px, DBT_PROXY_PASS, 0);
    dbpool_conn *all[MAX];
    for (int i = 0; i < MAX; i++) {
        memset(&e, 0, sizeof e);
        rc = dbpool_acquire(p, 5000, &all[i], &e);
        BT_CHECK(rc == DBPOOL_OK, "lease %d of max_size %d after the network came back: %s: %s", i + 1, MAX,
                 dbpool_errname(rc), e.message);
        assert_int_equal(bt_query_int(all[i], "SELECT 1", NULL, 0), 1);
    }
    s = bt_stats(p);
    BT_CHECK(s.in_use == MAX && s.total == MAX, "in_use %d total %d, expected %d", s.in_use, s.total, MAX);
    for (int i = 0; i < MAX; i++)
        bt_release(all[i]);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
    dbt_proxy_destroy(px);
}

/* Keepalive pings of idle connections are bounded the same way and do not
 * hold up the callers: while the maintenance thread's pings hang on the
 * silent peer, a caller is not blocked for longer than its timeout. */
static void test_keepalive_through_silent_peer(void **state) {
    (void)state;
    dbt_proxy *px = start_proxy();
    dbpool_options o;
    bt_options(&o, 0, MAX);
    o.validation = DBPOOL_VALIDATE_NEVER;
    o.validation_timeout_ms = VALIDATION_MS;
    o.keepalive_ms = 100;
    o.maintenance_interval_ms = 50;
    o.connect_timeout_ms = CONNECT_MS;
    o.max_retries = 0;
    o.breaker_failures = 0;
    dbpool *p = open_via(px, &o);
    dbpool_conn *cs[MAX];
    for (int i = 0; i < MAX; i++)
        cs[i] = bt_acquire(p);
    for (int i = 0; i < MAX; i++)
        bt_release(cs[i]);

    dbt_proxy_set_mode(px, DBT_PROXY_SILENT, 0);
    /* Keepalive finds all three dead within ~100 ms + 3 x 300 ms. */
    int64_t end = dbt_now_ms() + 3000;
    dbpool_stats s = bt_stats(p);
    while (dbt_now_ms() < end && s.destroyed_by[DBPOOL_CLOSE_BROKEN] < MAX) {
        dbt_sleep_ms(20);
        s = bt_stats(p);
    }
    BT_CHECK(s.destroyed_by[DBPOOL_CLOSE_BROKEN] == MAX,
             "keepalive pings through the silent peer should close the %d idle connections within 3 s "
             "(closed %llu)",
             MAX, (unsigned long long)s.destroyed_by[DBPOOL_CLOSE_BROKEN]);
    assert_true(dbt_invariant_holds(p));
    dbt_proxy_set_mode(px, DBT_PROXY_PASS, 0);
    for (int i = 0; i < MAX; i++) {
        dbpool_error e;
        memset(&e, 0, sizeof e);
        int rc = dbpool_acquire(p, 5000, &cs[i], &e);
        BT_CHECK(rc == DBPOOL_OK, "lease %d after the network came back: %s: %s", i + 1, dbpool_errname(rc),
                 e.message);
        assert_int_equal(bt_query_int(cs[i], "SELECT 1", NULL, 0), 1);
    }
    for (int i = 0; i < MAX; i++)
        bt_release(cs[i]);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
    dbt_proxy_destroy(px);
}

int main(int argc, char **argv) {
    bt_init(argc, argv);
    if (bt_is("sqlite")) {
        fprintf(stderr, "skipped: SQLite has no network\n");
        return DBT_SKIP;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_silent_peer),
        cmocka_unit_test(test_keepalive_through_silent_peer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
