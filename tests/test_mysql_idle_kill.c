/* test_mysql_idle_kill.c — sessions the server closes while idle
 * (wait_timeout, set to 1 s per session by init_sql, so nothing
 * server-wide changes).
 *
 * - Idle in the pool: validation (the default, if idle) replaces it, and
 *   the caller never sees it.
 * - Held by a caller: the next statement fails with DBPOOL_EBROKEN and a
 *   message that says what to do (release the lease, acquire another):
 *   before, only Connector/C's "Server has gone away (error 2006)". A new
 *   lease works.
 * Needs DBPOOL_TEST_MYSQL_URL (written by scripts/mysql-server.sh). */
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

#ifdef DBPOOL_HAVE_MYSQL

static dbpool *open_pool(void) {
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.maintenance_interval_ms = 0;
    o.init_sql = "SET SESSION wait_timeout = 1";
    dbpool *p = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int rc = dbpool_open(&p, dbt_backend_url("mysql"), &o, &e);
    if (rc != DBPOOL_OK)
        fail_msg("dbpool_open: %s: %s", dbpool_errname(rc), e.message);
    return p;
}

/* Wait (up to 15 s) until the server has closed session `id`. */
static void wait_session_gone(int64_t id) {
    dbt_wait_count_zero(dbt_backend_url("mysql"),
                        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ?", id, 15000);
}

static void test_idle_in_pool_replaced(void **state) {
    (void)state;
    dbpool *p = open_pool();
    dbpool_conn *c = dbt_acquire(p);
    int64_t id = dbt_query_int(c, "SELECT CONNECTION_ID()", NULL, 0);
    dbpool_release(c);
    wait_session_gone(id);
    c = dbt_acquire(p);
    assert_int_equal(dbt_query_int(c, "SELECT 1", NULL, 0), 1);
    dbpool_release(c);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.destroyed_by[DBPOOL_CLOSE_VALIDATION], 1);
    dbpool_close(p);
}

static void test_idle_lease_broken_says_what_to_do(void **state) {
    (void)state;
    dbpool *p = open_pool();
    dbpool_conn *c = dbt_acquire(p);
    int64_t id = dbt_query_int(c, "SELECT CONNECTION_ID()", NULL, 0);
    wait_session_gone(id);
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int rc = dbpool_exec(c, "SELECT 1", NULL, 0, NULL, &e);
    print_message("a statement on a closed session: %s: %s\n", dbpool_errname(rc), e.message);
    if (rc != DBPOOL_EBROKEN)
        fail_msg("expected DBPOOL_EBROKEN, got %s: %s", dbpool_errname(rc), e.message);
    if (!strstr(e.message, "acquire another"))
        fail_msg("the message should say to acquire another lease: %s", e.message);
    dbpool_release(c);
    c = dbt_acquire(p);
    assert_int_equal(dbt_query_int(c, "SELECT 1", NULL, 0), 1);
    dbpool_release(c);
    dbpool_close(p);
}

int main(void) {
    (void)dbt_backend_url("mysql"); /* skips without a server */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idle_in_pool_replaced),
        cmocka_unit_test(test_idle_lease_broken_says_what_to_do),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#else /* !DBPOOL_HAVE_MYSQL */

int main(void) {
    fprintf(stderr, "skipped: this build has no MySQL/MariaDB backend\n");
    return DBT_SKIP;
}

#endif
