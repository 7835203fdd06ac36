/* test_mysql_statement_cache.c — the MySQL/MariaDB backend keeps each
 * connection's prepared parameterised statements without a result set: one
 * run again is executed without being prepared again (one round trip, not
 * two), also after its table changed; statements with a result set are
 * prepared every time; the cache empties on a reset and on eviction, and a
 * failing statement is not kept. The server's
 * own counters (Com_stmt_prepare, Com_stmt_execute, Com_stmt_close) are the
 * witness. Needs DBPOOL_TEST_MYSQL_URL. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "dbpool.h"
#include "testsupport.h"

#include <stdio.h>
#include <string.h>

static const char *base_url;

static dbpool *open_one(void) {
    dbpool_options o;
    dbt_options(&o, 1, 1); /* one connection: every lease is the same session */
    o.validation = DBPOOL_VALIDATE_NEVER;
    o.maintenance_interval_ms = 0;
    dbpool *p = NULL;
    dbpool_error err;
    if (dbpool_open(&p, base_url, &o, &err) != DBPOOL_OK)
        fail_msg("dbpool_open: %s", err.message);
    return p;
}

/* Column `col` of the first row of sql, as an integer. */
static int64_t first_int(dbpool_conn *c, const char *sql, int col) {
    dbpool_result *r = dbt_query_ok(c, sql, NULL, 0);
    assert_int_equal(dbt_next_ok(r), 1);
    int64_t v = dbpool_result_int64(r, col);
    dbpool_result_free(r);
    return v;
}

/* This session's count of a statement command (text protocol: not counted
 * as a prepared statement itself). */
static long long com(dbpool_conn *c, const char *name) {
    char sql[128];
    snprintf(sql, sizeof sql, "SHOW SESSION STATUS LIKE '%s'", name);
    return (long long)first_int(c, sql, 1);
}

/* A table of one INT column, empty. */
static void make_table(dbpool_conn *c) {
    dbt_exec_ok(c, "DROP TABLE IF EXISTS dbpool_stmt_cache", NULL, 0);
    dbt_exec_ok(c, "CREATE TABLE dbpool_stmt_cache (a INT)", NULL, 0);
}

static void insert(dbpool_conn *c, int64_t x) {
    dbpool_param v = dbpool_param_int64(x);
    dbt_exec_ok(c, "INSERT INTO dbpool_stmt_cache (a) VALUES (?)", &v, 1);
}

static int64_t count_rows(dbpool_conn *c) {
    return first_int(c, "SELECT COUNT(*) FROM dbpool_stmt_cache", 0);
}

static void test_second_run_is_not_prepared_again(void **state) {
    (void)state;
    dbpool *p = open_one();
    dbpool_conn *c = dbt_acquire(p);
    make_table(c);
    long long prepared = com(c, "Com_stmt_prepare"), executed = com(c, "Com_stmt_execute");
    for (int i = 0; i < 5; i++)
        insert(c, i);
    assert_int_equal(com(c, "Com_stmt_prepare") - prepared, 1);
    assert_int_equal(com(c, "Com_stmt_execute") - executed, 5);
    assert_int_equal(count_rows(c), 5);
    /* Kept across leases of the same connection too. */
    dbpool_release(c);
    c = dbt_acquire(p);
    insert(c, 5);
    assert_int_equal(com(c, "Com_stmt_prepare") - prepared, 1);
    assert_int_equal(count_rows(c), 6);
    dbt_exec_ok(c, "DROP TABLE dbpool_stmt_cache", NULL, 0);
    dbpool_release(c);
    assert_int_equal(dbpool_close(p), 0);
}

/* A statement with a result set is prepared every time: Connector/C fails
 * a kept one whose result gained columns, after the server ran it. */
static void test_statements_with_results_are_not_kept(void **state) {
    (void)state;
    dbpool *p = open_one();
    dbpool_conn *c = dbt_acquire(p);
    make_table(c);
    insert(c, 1);
    const char *sql = "SELECT * FROM dbpool_stmt_cache WHERE a = ?";
    dbpool_param one = dbpool_param_int64(1);
    dbpool_result *r = NULL;
    dbpool_error err;
    long long prepared = com(c, "Com_stmt_prepare");
    assert_int_equal(dbpool_query(c, sql, &one, 1, &r, &err), DBPOOL_OK);
    assert_int_equal(dbpool_result_columns(r), 1);
    dbpool_result_free(r);
    dbt_exec_ok(c, "ALTER TABLE dbpool_stmt_cache ADD COLUMN b INT NOT NULL DEFAULT 7", NULL, 0);
    if (dbpool_query(c, sql, &one, 1, &r, &err) != DBPOOL_OK)
        fail_msg("after ALTER TABLE: %s", err.message);
    assert_int_equal(dbpool_result_columns(r), 2);
    assert_string_equal(dbpool_result_column_name(r, 1), "b");
    assert_int_equal(dbpool_result_next(r, &err), 1);
    assert_int_equal(dbpool_result_int64(r, 1), 7);
    dbpool_result_free(r);
    assert_int_equal(com(c, "Com_stmt_prepare") - prepared, 2);
    dbt_exec_ok(c, "DROP TABLE dbpool_stmt_cache", NULL, 0);
    dbpool_release(c);
    assert_int_equal(dbpool_close(p), 0);
}

/* A kept INSERT after its table changed runs (the server prepares it again
 * itself); after its table is gone it fails with the server's error, is
 * dropped, and the next run prepares it again. */
static void test_kept_statement_after_the_table_changes(void **state) {
    (void)state;
    dbpool *p = open_one();
    dbpool_conn *c = dbt_acquire(p);
    make_table(c);
    insert(c, 1);
    dbt_exec_ok(c, "ALTER TABLE dbpool_stmt_cache ADD COLUMN b INT NOT NULL DEFAULT 7", NULL, 0);
    insert(c, 2);
    assert_int_equal(count_rows(c), 2);
    dbt_exec_ok(c, "DROP TABLE dbpool_stmt_cache", NULL, 0);
    dbpool_param v = dbpool_param_int64(3);
    dbpool_error err;
    long long prepared = com(c, "Com_stmt_prepare");
    for (int i = 0; i < 2; i++) {
        assert_int_not_equal(
            dbpool_exec(c, "INSERT INTO dbpool_stmt_cache (a) VALUES (?)", &v, 1, NULL, &err), DBPOOL_OK);
        assert_non_null(strstr(err.message, "dbpool_stmt_cache"));
    }
    assert_true(com(c, "Com_stmt_prepare") - prepared >= 1);
    make_table(c);
    insert(c, 4);
    assert_int_equal(count_rows(c), 1);
    dbt_exec_ok(c, "DROP TABLE dbpool_stmt_cache", NULL, 0);
    dbpool_release(c);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_reset_empties_the_cache(void **state) {
    (void)state;
    dbpool *p = open_one();
    dbpool_conn *c = dbt_acquire(p);
    make_table(c);
    insert(c, 1);
    dbt_exec_ok(c, "SET @dirty = 1", NULL, 0); /* the release resets the session */
    dbpool_release(c);
    c = dbt_acquire(p);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_true(s.rollbacks >= 1);
    /* COM_RESET_CONNECTION closed the statement on the server: it is
     * prepared again, and runs. */
    long long prepared = com(c, "Com_stmt_prepare");
    insert(c, 2);
    assert_int_equal(com(c, "Com_stmt_prepare") - prepared, 1);
    assert_int_equal(count_rows(c), 2);
    dbt_exec_ok(c, "DROP TABLE dbpool_stmt_cache", NULL, 0);
    dbpool_release(c);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_least_recently_used_is_closed(void **state) {
    (void)state;
    dbpool *p = open_one();
    dbpool_conn *c = dbt_acquire(p);
    make_table(c);
    long long closed = com(c, "Com_stmt_close");
    /* 20 distinct statements: the cache keeps 16 and closes the rest. */
    for (int i = 0; i < 20; i++) {
        char sql[80];
        snprintf(sql, sizeof sql, "INSERT INTO dbpool_stmt_cache (a) VALUES (? + %d)", i);
        dbpool_param v = dbpool_param_int64(i);
        dbt_exec_ok(c, sql, &v, 1);
    }
    assert_int_equal(com(c, "Com_stmt_close") - closed, 4);
    assert_int_equal(count_rows(c), 20);
    /* The most recent ones are still kept. */
    long long prepared = com(c, "Com_stmt_prepare");
    dbpool_param v = dbpool_param_int64(1);
    dbt_exec_ok(c, "INSERT INTO dbpool_stmt_cache (a) VALUES (? + 19)", &v, 1);
    assert_int_equal(com(c, "Com_stmt_prepare") - prepared, 0);
    dbt_exec_ok(c, "DROP TABLE dbpool_stmt_cache", NULL, 0);
    dbpool_release(c);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_wrong_parameter_count_on_a_kept_statement(void **state) {
    (void)state;
    dbpool *p = open_one();
    dbpool_conn *c = dbt_acquire(p);
    make_table(c);
    insert(c, 1);
    dbpool_param two[2] = {dbpool_param_int64(1), dbpool_param_int64(2)};
    dbpool_error err;
    assert_int_equal(dbpool_exec(c, "INSERT INTO dbpool_stmt_cache (a) VALUES (?)", two, 2, NULL, &err),
                     DBPOOL_EINVAL);
    assert_non_null(strstr(err.message, "1 placeholders but 2 parameters"));
    /* Nothing was run for it, and the statement is still kept. */
    long long prepared = com(c, "Com_stmt_prepare");
    insert(c, 2);
    assert_int_equal(com(c, "Com_stmt_prepare") - prepared, 0);
    assert_int_equal(count_rows(c), 2);
    dbt_exec_ok(c, "DROP TABLE dbpool_stmt_cache", NULL, 0);
    dbpool_release(c);
    assert_int_equal(dbpool_close(p), 0);
}

int main(void) {
    base_url = dbt_backend_url("mysql");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_second_run_is_not_prepared_again),
        cmocka_unit_test(test_statements_with_results_are_not_kept),
        cmocka_unit_test(test_kept_statement_after_the_table_changes),
        cmocka_unit_test(test_reset_empties_the_cache),
        cmocka_unit_test(test_least_recently_used_is_closed),
        cmocka_unit_test(test_wrong_parameter_count_on_a_kept_statement),
    };
    return cmocka_run_group_tests_name("mysql_statement_cache", tests, NULL, NULL);
}
