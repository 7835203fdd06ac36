/* test_pg_read_only.c — a write refused because the transaction is read
 * only (SQLSTATE 25006) fails with DBPOOL_EQUERY and keeps the connection
 * when the server is not a standby: the caller's own BEGIN READ ONLY, or a
 * server (here: the session, through the URL's options) whose
 * default_transaction_read_only is on. Before, every such write marked
 * the connection broken (WARN "is broken") and closed it on release: one
 * reconnect per refused write. It is still replaced when the URL asks for
 * a server that takes writes (target_session_attrs=read-write): a new
 * connection finds one. (A standby, in_hot_standby on, is replaced too.)
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
#include <unistd.h>

#ifdef DBPOOL_HAVE_PG

static char table[64]; /* unique per process: tests may run in parallel */

static dbpool *open_pool(const char *extra) {
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.maintenance_interval_ms = 0;
    dbpool *p = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int rc = dbpool_open(&p, dbt_backend_url_with("pg", extra), &o, &e);
    if (rc != DBPOOL_OK)
        fail_msg("dbpool_open: %s: %s", dbpool_errname(rc), e.message);
    return p;
}

static void exec_ok(dbpool_conn *c, const char *sql) {
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int rc = dbpool_exec(c, sql, NULL, 0, NULL, &e);
    if (rc != DBPOOL_OK)
        fail_msg("\"%s\": %s: %s", sql, dbpool_errname(rc), e.message);
}

/* An INSERT into the table: refused with 25006. */
static void write_refused(dbpool_conn *c) {
    char sql[128];
    snprintf(sql, sizeof sql, "INSERT INTO %s VALUES (1)", table);
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int rc = dbpool_exec(c, sql, NULL, 0, NULL, &e);
    print_message("write in a read-only transaction: %s [%s] %s\n", dbpool_errname(rc), e.sqlstate,
                  e.message);
    if (rc != DBPOOL_EQUERY || strcmp(e.sqlstate, "25006") != 0)
        fail_msg("expected DBPOOL_EQUERY with SQLSTATE 25006, got %s [%s]: %s", dbpool_errname(rc),
                 e.sqlstate, e.message);
}

static unsigned long long closed_broken(dbpool *p) {
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    return (unsigned long long)s.destroyed_by[DBPOOL_CLOSE_BROKEN];
}

static unsigned long long created(dbpool *p) {
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    return (unsigned long long)s.created;
}

static int setup(void **state) {
    (void)state;
    snprintf(table, sizeof table, "ro_test_%ld", (long)getpid());
    dbpool *p = open_pool(NULL);
    dbpool_conn *c = dbt_acquire(p);
    char sql[128];
    snprintf(sql, sizeof sql, "CREATE TABLE IF NOT EXISTS %s (x int)", table);
    exec_ok(c, sql);
    dbpool_release(c);
    dbpool_close(p);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    dbpool *p = open_pool(NULL);
    dbpool_conn *c = dbt_acquire(p);
    char sql[128];
    snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s", table);
    exec_ok(c, sql);
    dbpool_release(c);
    dbpool_close(p);
    return 0;
}

static void test_own_read_only_transaction_keeps_connection(void **state) {
    (void)state;
    dbpool *p = open_pool(NULL);
    dbpool_conn *c = dbt_acquire(p);
    exec_ok(c, "BEGIN READ ONLY");
    write_refused(c);
    exec_ok(c, "ROLLBACK");
    exec_ok(c, "SELECT 1");
    dbpool_release(c);
    c = dbt_acquire(p);
    exec_ok(c, "SELECT 1");
    dbpool_release(c);
    assert_int_equal(closed_broken(p), 0);
    assert_int_equal(created(p), 1);
    dbpool_close(p);
}

static void test_read_only_server_keeps_connection(void **state) {
    (void)state;
    /* default_transaction_read_only on for every session of this pool, as
     * a server set read-only (ALTER SYSTEM) gives it: a new connection
     * would be just as read-only. */
    dbpool *p = open_pool("options=-c%20default_transaction_read_only%3Don");
    for (int i = 0; i < 3; i++) {
        dbpool_conn *c = dbt_acquire(p);
        write_refused(c);
        exec_ok(c, "SELECT 1");
        dbpool_release(c);
    }
    assert_int_equal(closed_broken(p), 0);
    assert_int_equal(created(p), 1);
    dbpool_close(p);
}

static void test_read_only_replaced_when_url_wants_writes(void **state) {
    (void)state;
    dbpool *p = open_pool("target_session_attrs=read-write");
    dbpool_conn *c = dbt_acquire(p);
    /* Reported to the client, as a server made read-only would report it. */
    exec_ok(c, "SET default_transaction_read_only = on");
    write_refused(c);
    dbpool_release(c);
    assert_int_equal(closed_broken(p), 1);
    c = dbt_acquire(p);
    exec_ok(c, "SELECT 1");
    dbpool_release(c);
    assert_int_equal(created(p), 2);
    dbpool_close(p);
}

int main(void) {
    (void)dbt_backend_url("pg"); /* skips without a server */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_own_read_only_transaction_keeps_connection),
        cmocka_unit_test(test_read_only_server_keeps_connection),
        cmocka_unit_test(test_read_only_replaced_when_url_wants_writes),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

#else /* !DBPOOL_HAVE_PG */

int main(void) {
    fprintf(stderr, "skipped: this build has no PostgreSQL backend\n");
    return DBT_SKIP;
}

#endif
