/*
 * test_fault_outage.c — the server is down (stopped at once) for longer
 * than the acquire timeout:
 *  - with the circuit breaker off, every acquire fails within
 *    acquire_timeout_ms + a small margin, and its error carries the cause
 *    (the connect error);
 *  - with breaker_failures 3 the breaker opens (stats.breaker ==
 *    DBPOOL_BREAKER_OPEN), acquires then fail fast with DBPOOL_EUNAVAILABLE
 *    naming the cause; after the restart and the cooldown it closes again
 *    and queries work. Prints `recovery_ms=<n>` (restart done -> first
 *    successful query).
 * PostgreSQL and MariaDB only; needs the servers of $DBPOOL_SERVER_DIR.
 */
#include "backend_common.h"
#include "servers.h"

#define ACQUIRE_TIMEOUT_MS 800
#define MARGIN_MS 400
#define COOLDOWN_MS 1000

static void outage_options(dbpool_options *o) {
    dbt_options(o, 1, 3);
    o->acquire_timeout_ms = ACQUIRE_TIMEOUT_MS;
    o->connect_timeout_ms = 500;
    o->max_retries = 1;
    o->validation_window_ms = 100;
    o->maintenance_interval_ms = 100;
    o->breaker_cooldown_ms = COOLDOWN_MS;
}

/* Does the message say why (the connect error), not just "timed out"? */
static bool names_cause(const char *msg) {
    static const char *const words[] = {"refused", "connect", "Connection", "server", "Lost connection"};
    for (size_t i = 0; i < sizeof words / sizeof *words; i++)
        if (strstr(msg, words[i]))
            return true;
    return false;
}

/* Hand the warm-up connection out once before the outage. (A connection
 * never handed out before the outage is test_fault_restart's case.) */
static void use_once(dbpool *p) {
    dbpool_conn *c = bt_acquire(p);
    assert_int_equal(bt_query_int(c, "SELECT 1", NULL, 0), 1);
    bt_release(c);
}

static void stop_server(void) {
    int rc = dbt_server_kill(bt_backend);
    BT_CHECK(rc == 0, "stopping the %s server failed (script exit %d)", bt_backend, rc);
}

static void test_every_acquire_fails_in_time(void **state) {
    (void)state;
    dbpool_options o;
    outage_options(&o);
    o.breaker_failures = 0; /* off: each acquire meets the outage itself */
    dbpool *p = bt_open(&o, NULL);
    use_once(p);
    stop_server();
    dbt_sleep_ms(150); /* past the validation window: the idle connection is checked */
    for (int i = 0; i < 4; i++) {
        dbpool_conn *c = NULL;
        dbpool_error e;
        memset(&e, 0, sizeof e);
        int64_t t0 = dbt_now_ms();
        int rc = dbpool_acquire(p, -1, &c, &e);
        int64_t took = dbt_now_ms() - t0;
        char msg[600];
        snprintf(msg, sizeof msg, "%s", e.message);
        dbt_scrub_secrets(msg, sizeof msg, NULL);
        print_message("[%s] acquire %d during the outage: %s after %lld ms: %s\n", bt_backend, i + 1,
                      dbpool_errname(rc), (long long)took, msg);
        BT_CHECK(rc != DBPOOL_OK, "acquire %d succeeded while the server is down", i + 1);
        if (rc == DBPOOL_OK)
            dbpool_release(c);
        BT_CHECK(rc == DBPOOL_ETIMEDOUT || rc == DBPOOL_ECONNECT,
                 "acquire %d: expected ETIMEDOUT or ECONNECT, got %s", i + 1, dbpool_errname(rc));
        BT_CHECK(took <= ACQUIRE_TIMEOUT_MS + MARGIN_MS, "acquire %d took %lld ms (timeout %d + margin %d)",
                 i + 1, (long long)took, ACQUIRE_TIMEOUT_MS, MARGIN_MS);
        BT_CHECK(names_cause(msg), "acquire %d: the error does not name the cause: %s", i + 1, msg);
        BT_CHECK(!dbt_has_secret(e.message, NULL), "acquire %d: a password in the error", i + 1);
    }
    assert_true(dbt_invariant_holds(p));
    BT_CHECK(dbt_server_restart(bt_backend) == 0, "restarting the %s server failed", bt_backend);
    dbpool_conn *c = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int64_t t0 = dbt_now_ms();
    int rc = DBPOOL_ETIMEDOUT;
    while (dbt_now_ms() - t0 < 10000 && (rc = dbpool_acquire(p, 2000, &c, &e)) != DBPOOL_OK)
        dbt_sleep_ms(50);
    BT_OK(rc, &e, "acquire after the restart");
    assert_int_equal(bt_query_int(c, "SELECT 1", NULL, 0), 1);
    bt_release(c);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_breaker_opens_and_closes(void **state) {
    (void)state;
    dbpool_options o;
    outage_options(&o);
    o.breaker_failures = 3;
    dbpool *p = bt_open(&o, NULL);
    use_once(p);
    stop_server();
    dbt_sleep_ms(150);

    /* Fail until the breaker opens (3 consecutive failed connects; each
     * acquire makes up to 2 attempts, maintenance's refill counts too). */
    int64_t t0 = dbt_now_ms();
    int attempts = 0;
    dbpool_stats s = bt_stats(p);
    while (s.breaker != DBPOOL_BREAKER_OPEN && dbt_now_ms() - t0 < 10000) {
        dbpool_conn *c = NULL;
        dbpool_error e;
        memset(&e, 0, sizeof e);
        int64_t a0 = dbt_now_ms();
        int rc = dbpool_acquire(p, -1, &c, &e);
        int64_t took = dbt_now_ms() - a0;
        attempts++;
        BT_CHECK(rc != DBPOOL_OK, "acquire succeeded while the server is down");
        BT_CHECK(took <= ACQUIRE_TIMEOUT_MS + MARGIN_MS, "acquire took %lld ms", (long long)took);
        BT_CHECK(!dbt_has_secret(e.message, NULL), "a password in the error");
        s = bt_stats(p);
    }
    BT_CHECK(s.breaker == DBPOOL_BREAKER_OPEN,
             "the breaker did not open within 10 s (%d acquires, %llu connect errors)", attempts,
             (unsigned long long)s.connect_errors);
    BT_CHECK(s.breaker_opens >= 1, "breaker_opens is %llu", (unsigned long long)s.breaker_opens);
    print_message("[%s] breaker open after %d acquires (%llu connect errors)\n", bt_backend, attempts,
                  (unsigned long long)s.connect_errors);

    /* Open: fail fast with EUNAVAILABLE and the cause. Waiting would take
     * this acquire's 5000 ms, or what is left of the 1000 ms cooldown (it
     * has only just begun): both far above the bound below, which leaves
     * room for a descheduled thread (TSan, a loaded machine). */
    dbpool_conn *c = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int64_t a0 = dbt_now_ms();
    int rc = dbpool_acquire(p, 5000, &c, &e);
    int64_t took = dbt_now_ms() - a0;
    char msg[600];
    snprintf(msg, sizeof msg, "%s", e.message);
    dbt_scrub_secrets(msg, sizeof msg, NULL);
    print_message("[%s] acquire with the breaker open: %s after %lld ms: %s\n", bt_backend,
                  dbpool_errname(rc), (long long)took, msg);
    BT_CHECK(rc == DBPOOL_EUNAVAILABLE, "with the breaker open, expected DBPOOL_EUNAVAILABLE, got %s",
             dbpool_errname(rc));
    BT_CHECK(took < 500, "with the breaker open the acquire should fail fast, took %lld ms", (long long)took);
    BT_CHECK(names_cause(msg), "the breaker error does not name the cause: %s", msg);
    BT_CHECK(!dbt_has_secret(e.message, NULL), "a password in the breaker error");
    assert_true(dbt_invariant_holds(p));

    /* Back up: after the cooldown one trial closes the breaker. */
    BT_CHECK(dbt_server_restart(bt_backend) == 0, "restarting the %s server failed", bt_backend);
    int64_t back = dbt_now_ms();
    int64_t first_ok = 0;
    while (dbt_now_ms() - back < 15000) {
        c = NULL;
        memset(&e, 0, sizeof e);
        rc = dbpool_acquire(p, 1000, &c, &e);
        if (rc == DBPOOL_OK) {
            dbpool_result *r = NULL;
            rc = dbpool_query(c, "SELECT 1", NULL, 0, &r, &e);
            if (rc == DBPOOL_OK && dbpool_result_next(r, &e) == 1 && dbpool_result_int64(r, 0) == 1)
                first_ok = dbt_now_ms();
            dbpool_result_free(r);
            BT_CHECK(first_ok, "the first query after the restart failed: %s: %s", dbpool_errname(rc),
                     e.message);
            bt_release(c);
            break;
        }
        BT_CHECK(rc == DBPOOL_EUNAVAILABLE || rc == DBPOOL_ECONNECT || rc == DBPOOL_ETIMEDOUT,
                 "unexpected error while the breaker recovers: %s", dbpool_errname(rc));
        dbt_sleep_ms(20);
    }
    BT_CHECK(first_ok, "no successful query within 15 s of the restart");
    printf("recovery_ms=%lld backend=%s phase=breaker (cooldown %d ms)\n", (long long)(first_ok - back),
           bt_backend, COOLDOWN_MS);
    fflush(stdout);
    s = bt_stats(p);
    BT_CHECK(s.breaker == DBPOOL_BREAKER_CLOSED, "the breaker is %s after a successful connect",
             dbpool_breaker_state_name(s.breaker));
    for (int i = 0; i < 3; i++) {
        c = bt_acquire(p);
        assert_int_equal(bt_query_int(c, "SELECT 1", NULL, 0), 1);
        bt_release(c);
    }
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

static int server_up(void **state) {
    (void)state;
    return dbt_server_ensure_up(bt_backend) == 0 ? 0 : -1;
}

int main(int argc, char **argv) {
    bt_init(argc, argv);
    if (bt_is("sqlite")) {
        fprintf(stderr, "skipped: an outage needs a server backend (pg or mysql)\n");
        return DBT_SKIP;
    }
    dbt_require_server_control(bt_backend);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_every_acquire_fails_in_time, server_up),
        cmocka_unit_test_teardown(test_breaker_opens_and_closes, server_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
