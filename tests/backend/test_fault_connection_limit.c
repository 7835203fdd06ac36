/*
 * test_fault_connection_limit.c — a server whose connection limit for the
 * test user (PostgreSQL: ALTER ROLE ... CONNECTION LIMIT 2; MariaDB: ALTER
 * USER ... WITH MAX_USER_CONNECTIONS 2) is below the pool's max_size.
 *
 * Callers beyond the limit wait for their timeout (served by a lease
 * released meanwhile) and then get DBPOOL_ETIMEDOUT quoting the refusal; a
 * caller who will not wait gets DBPOOL_ECONNECT; both messages name the
 * limit and what to do. The refusals do not open
 * the circuit breaker (the server is up: before, a few of them opened it,
 * and every caller needing a new connection got DBPOOL_EUNAVAILABLE for the
 * whole cooldown); a released lease serves the next caller at once; once
 * the limit is raised, the next acquire connects at once.
 *
 * Changes the test user's limit on the server: registered RUN_SERIAL
 * (SERVER_WIDE_TESTS in tests/CMakeLists.txt); the teardown lifts it.
 */
#include "backend_common.h"
#include "servers.h"

#include <pthread.h>

#define LIMIT 2

static char user[128];

/* The user name of the test URL: between "://" and the next ':' or '@'. */
static void find_user(void) {
    const char *url = dbt_backend_url(bt_backend);
    const char *s = strstr(url, "://");
    assert_non_null(s);
    s += 3;
    size_t n = strcspn(s, ":@/");
    assert_true(n > 0 && n < sizeof user);
    memcpy(user, s, n);
    user[n] = '\0';
    for (size_t i = 0; i < n; i++)
        assert_true((user[i] >= 'a' && user[i] <= 'z') || (user[i] >= '0' && user[i] <= '9') ||
                    user[i] == '_');
}

static void admin_exec(const char *sql) {
    const char *url = getenv(bt_is("pg") ? "DBPOOL_TEST_PG_ADMIN_URL" : "DBPOOL_TEST_MYSQL_ADMIN_URL");
    if (!url || !*url)
        fail_msg("[%s] no admin URL in the environment", bt_backend);
    dbpool_options o;
    bt_options(&o, 0, 1);
    o.breaker_failures = 0;
    dbpool *a = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    if (dbpool_open(&a, url, &o, &e) != DBPOOL_OK) {
        dbt_scrub_secrets(e.message, sizeof e.message, NULL);
        fail_msg("[%s] opening the admin pool: %s", bt_backend, e.message);
    }
    dbpool_conn *c = bt_acquire(a);
    bt_exec(c, sql);
    bt_release(c);
    dbpool_close(a);
}

static void set_limit(int limit) {
    char sql[256];
    if (bt_is("pg")) {
        snprintf(sql, sizeof sql, "ALTER ROLE %s CONNECTION LIMIT %d", user, limit);
        admin_exec(sql);
    } else {
        /* The scripts make the account for both ways in. */
        snprintf(sql, sizeof sql, "ALTER USER '%s'@'127.0.0.1' WITH MAX_USER_CONNECTIONS %d", user, limit);
        admin_exec(sql);
        snprintf(sql, sizeof sql, "ALTER USER '%s'@'localhost' WITH MAX_USER_CONNECTIONS %d", user, limit);
        admin_exec(sql);
    }
}

static void lift_limit(void) { set_limit(bt_is("pg") ? -1 : 0); }

static int setup(void **state) {
    (void)state;
    find_user();
    set_limit(LIMIT);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    lift_limit();
    return 0;
}

static void test_limit_below_max_size(void **state) {
    (void)state;
    dbpool_options o;
    bt_options(&o, 0, LIMIT + 2);
    o.max_retries = 3;
    o.breaker_failures = 3;
    o.breaker_cooldown_ms = 60000; /* open, it would refuse for the rest of the test */
    o.acquire_timeout_ms = 10000;
    dbpool *p = bt_open(&o, NULL);
    dbpool_conn *held[LIMIT];
    for (int i = 0; i < LIMIT; i++)
        held[i] = bt_acquire(p);

    /* Beyond the limit, a caller who waits: the connector retries the
     * refusal for as long as it waits (past max_retries, spaced out by the
     * backoff), and its timeout quotes the limit. Three such callers make
     * more refused connects than breaker_failures. */
    for (int i = 0; i < 3; i++) {
        dbpool_conn *c = NULL;
        dbpool_error e;
        memset(&e, 0, sizeof e);
        int64_t t0 = dbt_now_ms();
        int rc = dbpool_acquire(p, 400, &c, &e);
        int64_t took = dbt_now_ms() - t0;
        print_message("[%s] caller %d beyond the limit: %s after %lld ms: %s\n", bt_backend, i,
                      dbpool_errname(rc), (long long)took, e.message);
        BT_CHECK(rc == DBPOOL_ETIMEDOUT, "caller %d beyond the limit: expected DBPOOL_ETIMEDOUT, got %s: %s",
                 i, dbpool_errname(rc), e.message);
        BT_CHECK(strstr(e.message, "connection limit") && strstr(e.message, "max_size"),
                 "the message should name the server's limit and max_size: %s", e.message);
        BT_CHECK(took >= 400 && took < 5000, "caller %d returned after %lld ms (timeout 400)", i,
                 (long long)took);
        BT_CHECK(!dbt_has_secret(e.message, NULL), "a password in the message");
    }
    /* One who will not wait: one connect, on its own thread, and its error. */
    {
        dbpool_conn *c = NULL;
        dbpool_error e;
        memset(&e, 0, sizeof e);
        int rc = dbpool_acquire(p, 0, &c, &e);
        print_message("[%s] caller who will not wait: %s: %s\n", bt_backend, dbpool_errname(rc), e.message);
        BT_CHECK(rc == DBPOOL_ECONNECT && strstr(e.message, "connection limit"),
                 "a caller who will not wait: expected DBPOOL_ECONNECT naming the limit, got %s: %s",
                 dbpool_errname(rc), e.message);
    }
    dbpool_stats s = bt_stats(p);
    BT_CHECK(s.breaker == DBPOOL_BREAKER_CLOSED && s.breaker_opens == 0,
             "a server at its connection limit opened the circuit breaker (%s, %llu opens)",
             dbpool_breaker_state_name(s.breaker), (unsigned long long)s.breaker_opens);
    /* That the refusals were retried past max_retries shows in the waits
     * above, each ended by its timeout (before, by the connector giving up
     * within tens of milliseconds); how many attempts fit in 400 ms depends
     * on the machine (11 under TSan once), so only the count's floor here:
     * each caller met at least one refusal. */
    BT_CHECK(s.connect_errors >= 4, "expected every caller's refusals counted, %llu connect errors",
             (unsigned long long)s.connect_errors);

    /* A connection freed: the next caller gets it at once. */
    bt_release(held[0]);
    held[0] = bt_acquire(p);

    /* The limit raised: a new connection at once, not after a cooldown. */
    lift_limit();
    dbpool_conn *c = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int rc = dbpool_acquire(p, 5000, &c, &e);
    BT_CHECK(rc == DBPOOL_OK, "after the limit was raised: %s: %s", dbpool_errname(rc), e.message);
    bt_release(c);
    for (int i = 0; i < LIMIT; i++)
        bt_release(held[i]);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

/* A caller beyond the limit waits for its timeout, not for max_retries
 * refusals: a lease released after them serves it. Before, the connector
 * gave up after max_retries + 1 refusals (tens of milliseconds) and failed
 * the caller with DBPOOL_ECONNECT, whatever its timeout. */
static void test_waiter_served_by_release(void **state) {
    (void)state;
    dbpool_options o;
    bt_options(&o, 0, LIMIT + 1);
    o.max_retries = 1;
    o.breaker_failures = 0;
    dbpool *p = bt_open(&o, NULL);
    dbpool_conn *held[LIMIT];
    for (int i = 0; i < LIMIT; i++)
        held[i] = bt_acquire(p);
    dbt_timed_acquire a = {.p = p, .timeout_ms = 20000};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, dbt_timed_acquire_main, &a), 0);
    dbt_wait_for_waiters(p, 1, 10000);
    /* Until the connector has gone past max_retries + 1 refusals (or the
     * caller has left). */
    int64_t t0 = dbt_now_ms();
    dbpool_stats s = bt_stats(p);
    while (s.waiting == 1 && s.connect_errors < (uint64_t)o.max_retries + 3 && dbt_now_ms() - t0 < 10000) {
        dbt_sleep_ms(10);
        s = bt_stats(p);
    }
    print_message("[%s] %llu refused connects, %d waiting\n", bt_backend,
                  (unsigned long long)s.connect_errors, s.waiting);
    bt_release(held[0]);
    assert_int_equal(pthread_join(t, NULL), 0);
    print_message("[%s] the waiter: %s after %lld ms: %s\n", bt_backend, dbpool_errname(a.rc),
                  (long long)a.took_ms, a.message);
    BT_CHECK(a.rc == DBPOOL_OK, "the caller in line: expected a released lease, got %s after %lld ms: %s",
             dbpool_errname(a.rc), (long long)a.took_ms, a.message);
    bt_release(held[1]);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

int main(int argc, char **argv) {
    bt_init(argc, argv);
    if (bt_is("sqlite")) {
        fprintf(stderr, "skipped: SQLite has no connection limit\n");
        return DBT_SKIP;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_limit_below_max_size, setup, teardown),
        cmocka_unit_test_setup_teardown(test_waiter_served_by_release, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
