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

static dbpool_conn *lease(dbpool *p) {
    dbpool_conn *c = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int rc = dbpool_acquire(p, 5000, &c, &e);
    if (rc != DBPOOL_OK)
        fail_msg("dbpool_acquire: %s: %s", dbpool_errname(rc), e.message);
    return c;
}

static int64_t query_int(dbpool_conn *c, const char *sql, const dbpool_param *prm, size_t n) {
    dbpool_result *r = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    if (dbpool_query(c, sql, prm, n, &r, &e) != DBPOOL_OK || dbpool_result_next(r, &e) != 1)
        fail_msg("\"%s\": %s", sql, e.message);
    int64_t v = dbpool_result_int64(r, 0);
    dbpool_result_free(r);
    return v;
}

/* Wait (up to 15 s) until the server has closed session `id`, watching
 * from a second pool's connection. */
static void wait_session_gone(int64_t id) {
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.maintenance_interval_ms = 0;
    dbpool *w = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    if (dbpool_open(&w, dbt_backend_url("mysql"), &o, &e) != DBPOOL_OK)
        fail_msg("watcher: %s", e.message);
    dbpool_conn *c = lease(w);
    dbpool_param prm = dbpool_param_int64(id);
    int64_t t0 = dbt_now_ms();
    while (query_int(c, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ?", &prm, 1) != 0) {
        if (dbt_now_ms() - t0 > 15000)
            fail_msg("session %lld still there after 15 s", (long long)id);
        dbt_sleep_ms(50);
    }
    dbpool_release(c);
    dbpool_close(w);
}

static void test_idle_in_pool_replaced(void **state) {
    (void)state;
    dbpool *p = open_pool();
    dbpool_conn *c = lease(p);
    int64_t id = query_int(c, "SELECT CONNECTION_ID()", NULL, 0);
    dbpool_release(c);
    wait_session_gone(id);
    c = lease(p);
    assert_int_equal(query_int(c, "SELECT 1", NULL, 0), 1);
    dbpool_release(c);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.destroyed_by[DBPOOL_CLOSE_VALIDATION], 1);
    dbpool_close(p);
}

static void test_idle_lease_broken_says_what_to_do(void **state) {
    (void)state;
    dbpool *p = open_pool();
    dbpool_conn *c = lease(p);
    int64_t id = query_int(c, "SELECT CONNECTION_ID()", NULL, 0);
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
    c = lease(p);
    assert_int_equal(query_int(c, "SELECT 1", NULL, 0), 1);
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
