/*
 * test_fault_deaf_listener.c — connecting to a listener that accepts TCP
 * connections but never answers (tcp_proxy in DEAF mode: the kernel
 * completes the handshake, nobody reads or writes). The protocol handshake
 * never completes, so only the pool's connect deadline can end the wait:
 * with connect_timeout_ms 300 both dbpool_open and dbpool_acquire (through
 * the connector threads) fail within a margin, and the error says it timed
 * out. Runs for the pg and mysql URL schemes; user and password are dummies
 * (nothing answers).
 */
#include "backend_common.h"
#include "servers.h"
#include "tcp_proxy.h"

#define CONNECT_MS 300
#define MARGIN_MS 400

static const char *deaf_url(const dbt_proxy *px) {
    static char url[256];
    snprintf(url, sizeof url, "%s://dummy:dummy@127.0.0.1:%d/dbpool_test",
             bt_is("pg") ? "postgresql" : "mysql", dbt_proxy_port(px));
    return url;
}

static bool says_timed_out(int rc, const char *msg) {
    return rc == DBPOOL_ETIMEDOUT &&
           (strstr(msg, "timed out") || strstr(msg, "deadline") || strstr(msg, "timeout"));
}

static void deaf_options(dbpool_options *o) {
    dbpool_options_init(o);
    o->connect_timeout_ms = CONNECT_MS;
    o->max_retries = 0;
    o->acquire_timeout_ms = 3000;
    o->breaker_failures = 0;
    o->maintenance_interval_ms = 0;
}

static void test_open_against_deaf_listener(void **state) {
    (void)state;
    dbt_proxy *px = dbt_proxy_start(NULL, 0); /* DEAF only */
    assert_non_null(px);
    dbpool_options o;
    deaf_options(&o);
    dbpool *p = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int64_t t0 = dbt_now_ms();
    int rc = dbpool_open(&p, deaf_url(px), &o, &e);
    int64_t took = dbt_now_ms() - t0;
    print_message("[%s] open against a deaf listener: %s after %lld ms: %s\n", bt_backend, dbpool_errname(rc),
                  (long long)took, e.message);
    BT_CHECK(rc != DBPOOL_OK && p == NULL, "dbpool_open against a deaf listener succeeded");
    BT_CHECK(took >= CONNECT_MS - 20 && took <= CONNECT_MS + MARGIN_MS,
             "the connect deadline (%d ms) should end the wait: took %lld ms", CONNECT_MS, (long long)took);
    BT_CHECK(says_timed_out(rc, e.message), "the error should say it timed out: %s: %s", dbpool_errname(rc),
             e.message);
    BT_CHECK(dbt_proxy_accepted(px) >= 1, "the client never reached the deaf listener");
    dbt_proxy_destroy(px);
}

static void test_acquire_against_deaf_listener(void **state) {
    (void)state;
    dbt_proxy *px = dbt_proxy_start(NULL, 0);
    assert_non_null(px);
    dbpool_options o;
    deaf_options(&o);
    o.lazy_connect = true;
    dbpool *p = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    BT_OK(dbpool_open(&p, deaf_url(px), &o, &e), &e, "lazy dbpool_open");
    dbpool_conn *c = NULL;
    int64_t t0 = dbt_now_ms();
    int rc = dbpool_acquire(p, 3000, &c, &e);
    int64_t took = dbt_now_ms() - t0;
    print_message("[%s] acquire against a deaf listener: %s after %lld ms: %s\n", bt_backend,
                  dbpool_errname(rc), (long long)took, e.message);
    BT_CHECK(rc != DBPOOL_OK, "acquire against a deaf listener succeeded");
    if (rc == DBPOOL_OK)
        dbpool_release(c);
    /* One attempt (max_retries 0): the caller hears of its failure, not
     * only of its own 3 s timeout. */
    BT_CHECK(took <= CONNECT_MS + MARGIN_MS,
             "the acquire should fail when the connect deadline (%d ms) fires: "
             "took %lld ms",
             CONNECT_MS, (long long)took);
    BT_CHECK(says_timed_out(rc, e.message), "the error should say the connect timed out: %s: %s",
             dbpool_errname(rc), e.message);
    assert_true(dbt_invariant_holds(p));
    dbpool_stats s = bt_stats(p);
    BT_CHECK(s.connecting == 0 && s.total == 0, "after the failed connect: connecting %d total %d",
             s.connecting, s.total);
    /* Close is not held up by anything left behind. A connect still
     * running would count in s.connecting above; the bound is for a close
     * that blocks on the deaf socket or on a thread that never ends, with
     * room for a descheduled thread (TSan, a loaded machine). */
    t0 = dbt_now_ms();
    assert_int_equal(dbpool_close(p), 0);
    BT_CHECK(dbt_now_ms() - t0 < 1000, "close took %lld ms", (long long)(dbt_now_ms() - t0));
    dbt_proxy_destroy(px);
}

int main(int argc, char **argv) {
    bt_init(argc, argv);
    if (bt_is("sqlite")) {
        fprintf(stderr, "skipped: SQLite does not connect over the network\n");
        return DBT_SKIP;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_against_deaf_listener),
        cmocka_unit_test(test_acquire_against_deaf_listener),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
