/* test_pg_idle_kill.c — sessions the server closes while idle
 * (idle_session_timeout, idle_in_transaction_session_timeout; set per
 * session by init_sql, so nothing server-wide changes).
 *
 * - Idle in the pool: validation (the default, if idle) replaces it, and
 *   the caller never sees it.
 * - Held by a caller: the next statement fails with DBPOOL_EBROKEN and a
 *   message that says why (the server's "terminating connection due to
 *   idle-session timeout", which libpq's result left out: before, the
 *   caller read only "server closed the connection unexpectedly ... the
 *   server terminated abnormally"); a further statement on the lease says
 *   to release it and acquire another (before: "no connection to the
 *   server"). A new lease works.
 * Needs DBPOOL_TEST_PG_URL (written by scripts/pg-server.sh). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "dbpool.h"
#include "testsupport.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef DBPOOL_HAVE_PG

static dbpool *open_pool(void) {
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.maintenance_interval_ms = 0;
    /* Idle longer than this: validated before hand-out (the default
     * window, 500 ms, is longer than these tests' idle timeouts). */
    o.validation_window_ms = 100;
    o.init_sql = "SET idle_session_timeout = 300; SET idle_in_transaction_session_timeout = 300";
    dbpool *p = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int rc = dbpool_open(&p, dbt_backend_url("pg"), &o, &e);
    if (rc != DBPOOL_OK)
        fail_msg("dbpool_open: %s: %s", dbpool_errname(rc), e.message);
    return p;
}

/* Wait (up to 10 s) until the server has closed backend `pid`. */
static void wait_backend_gone(int64_t pid) {
    dbt_wait_count_zero(dbt_backend_url("pg"), "SELECT count(*) FROM pg_stat_activity WHERE pid = ?", pid,
                        10000);
}

static int expect_broken(dbpool_conn *c, const char *sql, const char *words) {
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int rc = dbpool_exec(c, sql, NULL, 0, NULL, &e);
    print_message("\"%s\" on a closed session: %s: %s\n", sql, dbpool_errname(rc), e.message);
    if (rc != DBPOOL_EBROKEN)
        fail_msg("expected DBPOOL_EBROKEN, got %s: %s", dbpool_errname(rc), e.message);
    if (!strstr(e.message, words))
        fail_msg("the message should say \"%s\": %s", words, e.message);
    return rc;
}

static void test_idle_in_pool_replaced(void **state) {
    (void)state;
    dbpool *p = open_pool();
    dbpool_conn *c = dbt_acquire(p);
    int64_t pid = dbt_query_int(c, "SELECT pg_backend_pid()", NULL, 0);
    dbpool_release(c);
    wait_backend_gone(pid);
    c = dbt_acquire(p);
    assert_int_equal(dbt_query_int(c, "SELECT 1", NULL, 0), 1);
    dbpool_release(c);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.destroyed_by[DBPOOL_CLOSE_VALIDATION], 1);
    dbpool_close(p);
}

static void test_idle_lease_broken_says_why(void **state) {
    (void)state;
    dbpool *p = open_pool();
    dbpool_conn *c = dbt_acquire(p);
    int64_t pid = dbt_query_int(c, "SELECT pg_backend_pid()", NULL, 0);
    wait_backend_gone(pid);
    expect_broken(c, "SELECT 1", "idle-session timeout");
    expect_broken(c, "SELECT 1", "acquire another");
    dbpool_release(c);
    c = dbt_acquire(p);
    assert_int_equal(dbt_query_int(c, "SELECT 1", NULL, 0), 1);
    dbpool_release(c);
    dbpool_close(p);
}

static void test_idle_in_transaction_broken_says_why(void **state) {
    (void)state;
    dbpool *p = open_pool();
    dbpool_conn *c = dbt_acquire(p);
    int64_t pid = dbt_query_int(c, "SELECT pg_backend_pid()", NULL, 0);
    dbpool_error e;
    memset(&e, 0, sizeof e);
    assert_int_equal(dbpool_exec(c, "BEGIN", NULL, 0, NULL, &e), DBPOOL_OK);
    wait_backend_gone(pid);
    expect_broken(c, "SELECT 1", "idle-in-transaction timeout");
    dbpool_release(c);
    dbpool_close(p);
}

int main(void) {
    (void)dbt_backend_url("pg"); /* skips without a server */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idle_in_pool_replaced),
        cmocka_unit_test(test_idle_lease_broken_says_why),
        cmocka_unit_test(test_idle_in_transaction_broken_says_why),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#else /* !DBPOOL_HAVE_PG */

int main(void) {
    fprintf(stderr, "skipped: this build has no PostgreSQL backend\n");
    return DBT_SKIP;
}

#endif
