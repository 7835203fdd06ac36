/* test_pg_statement_cache.c — the PostgreSQL backend keeps each
 * connection's parameterised statements prepared from their second run
 * on: from then on one is only bound and executed, also with other values;
 * a statement run once is not prepared; the parameter types are part of
 * the key; the least recently used one goes (on the server too) when 32
 * are kept; a statement the server lost (DEALLOCATE on the native handle)
 * or must re-plan (its table changed shape) is prepared again outside a
 * transaction and reported inside one; a caller's DEALLOCATE or DISCARD
 * through dbpool and the reset at release empty the cache; a failed
 * prepare is not kept; pool_statement_cache=off keeps nothing. The
 * server's pg_prepared_statements (with its plan counts) is the witness.
 * One connection per pool, so every lease is the same session.
 * Needs DBPOOL_TEST_PG_URL (written by scripts/pg-server.sh). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "dbpool.h"
#include "testsupport.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef DBPOOL_HAVE_PG

#include <libpq-fe.h>

static char table[64]; /* unique per process: tests may run in parallel */

/* One connection on url, no maintenance, no validation round trips. */
static dbpool *open_one_at(const char *url) {
    dbpool_options o;
    dbt_options(&o, 1, 1);
    o.validation = DBPOOL_VALIDATE_NEVER;
    o.maintenance_interval_ms = 0;
    dbpool *p = NULL;
    dbpool_error err;
    if (dbpool_open(&p, url, &o, &err) != DBPOOL_OK)
        fail_msg("dbpool_open: %s", err.message);
    return p;
}

/* The test server's pool, with the URL keys in extra (NULL: none). */
static dbpool *open_one(const char *extra) {
    return open_one_at(extra ? dbt_backend_url_with("pg", extra) : dbt_backend_url("pg"));
}

/* The end of a test: the lease back and the pool closed, both cleanly. */
static void release_and_close(dbpool *p, dbpool_conn *c) {
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_close(p), 0);
}

/* The first column of the first row as an integer. */
static int64_t first_int(dbpool_conn *c, const char *sql, const dbpool_param *params, size_t n) {
    dbpool_result *r = dbt_query_ok(c, sql, params, n);
    assert_int_equal(dbt_next_ok(r), 1);
    int64_t v = dbpool_result_int64(r, 0);
    dbpool_result_free(r);
    return v;
}

static int64_t plus(dbpool_conn *c, int64_t v) {
    dbpool_param p = dbpool_param_int64(v);
    return first_int(c, "SELECT ?::bigint + 1", &p, 1);
}

/* dbpool's statements kept on the server for this session. */
static int64_t kept_on_server(dbpool_conn *c) {
    return first_int(c, "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE '\\_dbpool\\_s%'", NULL,
                     0);
}

/* How often the server ran the kept statement with this text. */
static int64_t runs_of(dbpool_conn *c, const char *statement) {
    dbpool_param p = dbpool_param_text(statement);
    return first_int(c,
                     "SELECT coalesce(sum(generic_plans + custom_plans), 0) FROM pg_prepared_statements "
                     "WHERE name LIKE '\\_dbpool\\_s%' AND statement = ?",
                     &p, 1);
}

/* n different statements ("SELECT ?::int + k"), each run twice: kept. */
static void run_distinct_twice(dbpool_conn *c, int n) {
    char sql[64];
    for (int k = 0; k < n; k++) {
        snprintf(sql, sizeof sql, "SELECT ?::int + %d", k);
        for (int64_t i = 1; i <= 2; i++) {
            dbpool_param v = dbpool_param_int64(i);
            assert_int_equal(first_int(c, sql, &v, 1), i + k);
        }
    }
}

static uint64_t rollbacks(dbpool *p) {
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    return s.rollbacks;
}

/* Ten runs with ten values: the first unnamed, then prepared once and run
 * nine times; the clean releases in between cost no reset. */
static void test_prepared_once(void **state) {
    (void)state;
    dbpool *p = open_one(NULL);
    for (int64_t i = 0; i < 10; i++) {
        dbpool_conn *c = dbt_acquire(p);
        assert_int_equal(plus(c, i * 100), i * 100 + 1);
        assert_int_equal(dbpool_release(c), DBPOOL_OK);
    }
    dbpool_conn *c = dbt_acquire(p);
    assert_int_equal(kept_on_server(c), 1);
    /* The witness queries above ran with a parameter too: kept as well. */
    assert_int_equal(runs_of(c, "SELECT $1::bigint + 1"), 9);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(rollbacks(p), 0);
    assert_int_equal(dbpool_close(p), 0);
}

/* An int64 that fits is sent as int4, one that does not as int8: two
 * statements, each right. */
static void test_types_are_part_of_the_key(void **state) {
    (void)state;
    dbpool *p = open_one(NULL);
    dbpool_conn *c = dbt_acquire(p);
    assert_int_equal(plus(c, 5), 6);
    assert_int_equal(plus(c, INT64_C(5000000000)), INT64_C(5000000001));
    assert_int_equal(plus(c, 7), 8);
    assert_int_equal(plus(c, INT64_C(6000000000)), INT64_C(6000000001));
    assert_int_equal(plus(c, 9), 10);
    assert_int_equal(kept_on_server(c), 2);
    release_and_close(p, c);
}

/* 40 different statements run twice each: 32 stay kept, the server holds
 * no more than that, and an evicted one is prepared again when it comes
 * back twice. */
static void test_least_recently_used_goes(void **state) {
    (void)state;
    dbpool *p = open_one(NULL);
    dbpool_conn *c = dbt_acquire(p);
    run_distinct_twice(c, 40);
    assert_int_equal(kept_on_server(c), 32);
    for (int64_t i = 1; i <= 2; i++) {
        dbpool_param v = dbpool_param_int64(i);
        assert_int_equal(first_int(c, "SELECT ?::int + 0", &v, 1), i);
    }
    assert_int_equal(kept_on_server(c), 32);
    assert_int_equal(runs_of(c, "SELECT $1::int + 0"), 1); /* prepared again: a new statement */
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(rollbacks(p), 0);
    assert_int_equal(dbpool_close(p), 0);
}

/* SELECT * over a table that gained a column: the kept plan cannot change
 * its result type. Outside a transaction the statement is prepared again
 * and answers with the new shape; inside one the caller gets the error,
 * and after the rollback the statement works again. */
static void test_table_changed_shape(void **state) {
    (void)state;
    char sql[160], select[160];
    dbpool *p = open_one(NULL);
    dbpool_conn *c = dbt_acquire(p);
    snprintf(sql, sizeof sql, "CREATE TABLE %s (a int)", table);
    dbt_exec_ok(c, sql, NULL, 0);
    snprintf(sql, sizeof sql, "INSERT INTO %s VALUES (1)", table);
    dbt_exec_ok(c, sql, NULL, 0);
    snprintf(select, sizeof select, "SELECT * FROM %s WHERE a = ?", table);
    dbpool_param one = dbpool_param_int64(1);

    dbpool_result *r = NULL;
    for (int i = 0; i < 2; i++) { /* the second run prepares it */
        r = dbt_query_ok(c, select, &one, 1);
        assert_int_equal(dbpool_result_columns(r), 1);
        dbpool_result_free(r);
    }
    assert_int_equal(kept_on_server(c), 1);
    snprintf(sql, sizeof sql, "ALTER TABLE %s ADD COLUMN b int DEFAULT 7", table);
    dbt_exec_ok(c, sql, NULL, 0);
    r = dbt_query_ok(c, select, &one, 1);
    assert_int_equal(dbpool_result_columns(r), 2);
    assert_int_equal(dbt_next_ok(r), 1);
    assert_int_equal(dbpool_result_int64(r, 1), 7);
    dbpool_result_free(r);

    snprintf(sql, sizeof sql, "ALTER TABLE %s ADD COLUMN c int DEFAULT 8", table);
    dbt_exec_ok(c, sql, NULL, 0);
    dbt_exec_ok(c, "BEGIN", NULL, 0);
    dbpool_error err;
    r = NULL;
    int rc = dbpool_query(c, select, &one, 1, &r, &err);
    if (rc != DBPOOL_EQUERY || strcmp(err.sqlstate, "0A000") != 0)
        fail_msg("inside a transaction: %s [%s] %s, want DBPOOL_EQUERY [0A000]", dbpool_errname(rc),
                 err.sqlstate, err.message);
    dbt_exec_ok(c, "ROLLBACK", NULL, 0);
    r = dbt_query_ok(c, select, &one, 1);
    assert_int_equal(dbpool_result_columns(r), 3);
    dbpool_result_free(r);
    /* The two stale ones are deallocated, and no reset is due for them. */
    assert_int_equal(kept_on_server(c), 0);

    snprintf(sql, sizeof sql, "DROP TABLE %s", table);
    dbt_exec_ok(c, sql, NULL, 0);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(rollbacks(p), 0);
    assert_int_equal(dbpool_close(p), 0);
}

/* The same on a server that answers in German (lc_messages, set as the
 * admin; skipped where no such locale is installed): the stale statement
 * is still known by its 0A000, prepared again and answers, also on the
 * next lease. */
static void test_changed_shape_in_another_language(void **state) {
    (void)state;
    const char *admin = getenv("DBPOOL_TEST_PG_ADMIN_URL");
    if (!admin || !*admin)
        fail_msg("DBPOOL_TEST_PG_ADMIN_URL is not set (scripts/pg-server.sh writes it)");
    dbpool *p = open_one_at(admin);
    dbpool_conn *c = dbt_acquire(p);
    /* On the native handle: a SET through dbpool would reset the session
     * (back to English) at the release. */
    PGresult *res = PQexec(dbpool_conn_native(c), "SET lc_messages = 'de_DE.UTF-8'");
    bool german = PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    if (!german) {
        assert_int_equal(dbpool_release(c), DBPOOL_OK);
        assert_int_equal(dbpool_close(p), 0);
        const char *required = getenv("DBPOOL_TEST_REQUIRE_SERVERS");
        if (required && strcmp(required, "1") == 0)
            fail_msg("the machine has no de_DE.UTF-8 locale (scripts/install-deps.sh test makes it)");
        skip();
    }
    char sql[160], select[160];
    snprintf(sql, sizeof sql, "CREATE TABLE %s_de (a int)", table);
    dbt_exec_ok(c, sql, NULL, 0);
    snprintf(sql, sizeof sql, "INSERT INTO %s_de VALUES (1)", table);
    dbt_exec_ok(c, sql, NULL, 0);
    snprintf(select, sizeof select, "SELECT * FROM %s_de WHERE a = ?", table);
    dbpool_param one = dbpool_param_int64(1);
    for (int i = 0; i < 2; i++) { /* the second run prepares it */
        dbpool_result *r = dbt_query_ok(c, select, &one, 1);
        assert_int_equal(dbpool_result_columns(r), 1);
        dbpool_result_free(r);
    }
    snprintf(sql, sizeof sql, "ALTER TABLE %s_de ADD COLUMN b int DEFAULT 7", table);
    dbt_exec_ok(c, sql, NULL, 0);
    for (int lease = 0; lease < 2; lease++) {
        dbpool_result *r = dbt_query_ok(c, select, &one, 1);
        assert_int_equal(dbpool_result_columns(r), 2);
        dbpool_result_free(r);
        assert_int_equal(dbpool_release(c), DBPOOL_OK);
        c = dbt_acquire(p);
    }
    snprintf(sql, sizeof sql, "DROP TABLE %s_de", table);
    dbt_exec_ok(c, sql, NULL, 0);
    release_and_close(p, c);
}

/* DEALLOCATE ALL on the native handle, which dbpool does not see: the next
 * run finds its statement gone and prepares it again. */
static void test_deallocated_behind_its_back(void **state) {
    (void)state;
    dbpool *p = open_one(NULL);
    dbpool_conn *c = dbt_acquire(p);
    assert_int_equal(plus(c, 0), 1);
    assert_int_equal(plus(c, 1), 2);
    assert_int_equal(kept_on_server(c), 1);
    PGresult *res = PQexec(dbpool_conn_native(c), "DEALLOCATE ALL");
    assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    assert_int_equal(plus(c, 2), 3);
    assert_int_equal(plus(c, 3), 4);
    assert_int_equal(runs_of(c, "SELECT $1::bigint + 1"), 2);
    release_and_close(p, c);
}

/* One kept statement deallocated on the native handle, the others still
 * there: the run that finds it gone must not forget the others while the
 * server keeps them (before, it forgot all 32, and the server held 63
 * after the next 32 distinct statements, more at each such event, for
 * the connection's life). They are deallocated instead. */
static void test_one_deallocated_behind_its_back(void **state) {
    (void)state;
    dbpool *p = open_one(NULL);
    dbpool_conn *c = dbt_acquire(p);
    run_distinct_twice(c, 32);
    assert_int_equal(kept_on_server(c), 32);
    dbpool_result *r = dbt_query_ok(
        c, "SELECT name FROM pg_prepared_statements WHERE statement = 'SELECT $1::int + 0'", NULL, 0);
    assert_int_equal(dbt_next_ok(r), 1);
    char sql[96];
    snprintf(sql, sizeof sql, "DEALLOCATE %s", dbpool_result_text(r, 0, NULL));
    dbpool_result_free(r);
    PGresult *res = PQexec(dbpool_conn_native(c), sql);
    assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    dbpool_param v = dbpool_param_int64(5);
    assert_int_equal(first_int(c, "SELECT ?::int + 0", &v, 1), 5); /* gone: prepared and run again */
    assert_int_equal(plus(c, 1), 2);
    assert_true(kept_on_server(c) <= 32);
    /* And so on, however many come after. */
    char more[64];
    for (int k = 100; k < 132; k++) {
        snprintf(more, sizeof more, "SELECT ?::int + %d", k);
        for (int64_t i = 1; i <= 2; i++) {
            dbpool_param w = dbpool_param_int64(i);
            assert_int_equal(first_int(c, more, &w, 1), i + k);
        }
    }
    int64_t kept = kept_on_server(c);
    if (kept > 32)
        fail_msg("%lld statements on the server, 32 kept at most", (long long)kept);
    release_and_close(p, c);
}

/* A function the statement calls runs EXECUTE of a statement that does
 * not exist: 26000, but not dbpool's statement. The call ran (its nextval
 * is not rolled back) and is not run again, and the statements dbpool
 * keeps are still kept, not forgotten while the server holds them. */
static void test_error_from_inside_is_the_callers(void **state) {
    (void)state;
    char sql[512], call[160];
    dbpool *p = open_one(NULL);
    dbpool_conn *c = dbt_acquire(p);
    snprintf(sql, sizeof sql, "CREATE SEQUENCE %s_seq", table);
    dbt_exec_ok(c, sql, NULL, 0);
    snprintf(sql, sizeof sql,
             "CREATE FUNCTION %s_f(x int) RETURNS int LANGUAGE plpgsql AS "
             "$$ BEGIN PERFORM nextval('%s_seq'); EXECUTE 'EXECUTE no_such_statement'; RETURN x; END $$",
             table, table);
    dbt_exec_ok(c, sql, NULL, 0);
    assert_int_equal(plus(c, 0), 1);
    assert_int_equal(plus(c, 1), 2);
    snprintf(call, sizeof call, "SELECT %s_f(?)", table);
    for (int i = 0; i < 3; i++) { /* unnamed, prepared, kept */
        dbpool_param v = dbpool_param_int64(i);
        dbpool_error err;
        int rc = dbpool_exec(c, call, &v, 1, NULL, &err);
        if (rc != DBPOOL_EQUERY || strcmp(err.sqlstate, "26000") != 0)
            fail_msg("run %d: %s [%s] %s, want DBPOOL_EQUERY [26000]", i, dbpool_errname(rc), err.sqlstate,
                     err.message);
    }
    snprintf(sql, sizeof sql, "SELECT last_value FROM %s_seq", table);
    assert_int_equal(first_int(c, sql, NULL, 0), 3);
    assert_int_equal(plus(c, 2), 3);
    assert_int_equal(kept_on_server(c), 2);
    assert_int_equal(runs_of(c, "SELECT $1::bigint + 1"), 2);
    snprintf(sql, sizeof sql, "DROP FUNCTION %s_f; DROP SEQUENCE %s_seq", table, table);
    dbt_exec_ok(c, sql, NULL, 0);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(rollbacks(p), 0);
    assert_int_equal(dbpool_close(p), 0);
}

/* DEALLOCATE ALL on the native handle with the cache full, then a new
 * statement inside a transaction: making room for it does not deallocate
 * the statement found gone there (which would abort the transaction), but
 * after it, and the transaction goes on. */
static void test_full_cache_in_a_transaction(void **state) {
    (void)state;
    dbpool *p = open_one(NULL);
    dbpool_conn *c = dbt_acquire(p);
    run_distinct_twice(c, 32);
    assert_int_equal(kept_on_server(c), 32);
    PGresult *res = PQexec(dbpool_conn_native(c), "DEALLOCATE ALL");
    assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    dbt_exec_ok(c, "BEGIN", NULL, 0);
    for (int64_t i = 1; i <= 3; i++) {
        dbpool_param v = dbpool_param_int64(i);
        assert_int_equal(first_int(c, "SELECT ?::int * 2", &v, 1), 2 * i);
    }
    dbt_exec_ok(c, "COMMIT", NULL, 0);
    assert_int_equal(plus(c, 1), 2);
    release_and_close(p, c);
}

/* A DEALLOCATE ALL through dbpool empties the cache at once: inside a
 * transaction the statement runs (prepared again), with no error. */
static void test_deallocate_through_dbpool(void **state) {
    (void)state;
    dbpool *p = open_one(NULL);
    dbpool_conn *c = dbt_acquire(p);
    assert_int_equal(plus(c, 0), 1);
    assert_int_equal(plus(c, 1), 2);
    assert_int_equal(kept_on_server(c), 1);
    dbt_exec_ok(c, "BEGIN", NULL, 0);
    dbt_exec_ok(c, "DEALLOCATE ALL", NULL, 0);
    assert_int_equal(plus(c, 2), 3);
    dbt_exec_ok(c, "COMMIT", NULL, 0);
    release_and_close(p, c);
}

/* A session change resets the session at release (DISCARD ALL): the kept
 * statements are gone with it and are prepared again on the next lease. */
static void test_reset_empties_the_cache(void **state) {
    (void)state;
    dbpool *p = open_one(NULL);
    dbpool_conn *c = dbt_acquire(p);
    int64_t pid = first_int(c, "SELECT pg_backend_pid()", NULL, 0);
    /* The change first: the statement kept after it is still kept when
     * the release resets the session. */
    dbt_exec_ok(c, "SET application_name = 'changed'", NULL, 0);
    assert_int_equal(plus(c, 0), 1);
    assert_int_equal(plus(c, 1), 2);
    assert_int_equal(kept_on_server(c), 1);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(rollbacks(p), 1);
    c = dbt_acquire(p);
    assert_int_equal(first_int(c, "SELECT pg_backend_pid()", NULL, 0), pid);
    assert_int_equal(kept_on_server(c), 0);
    /* In a transaction, where a statement found gone would be an error. */
    dbt_exec_ok(c, "BEGIN", NULL, 0);
    assert_int_equal(plus(c, 2), 3);
    assert_int_equal(plus(c, 3), 4);
    dbt_exec_ok(c, "COMMIT", NULL, 0);
    assert_int_equal(runs_of(c, "SELECT $1::bigint + 1"), 1);
    release_and_close(p, c);
}

/* A statement that changes the session (an advisory lock per job, in a
 * long lease) makes the kept statements be forgotten; the server's copies
 * are deallocated, not left to pile up until the release. */
static void test_forgotten_are_deallocated(void **state) {
    (void)state;
    dbpool *p = open_one(NULL);
    dbpool_conn *c = dbt_acquire(p);
    for (int64_t job = 0; job < 20; job++) {
        dbpool_param key = dbpool_param_int64(4242);
        dbt_exec_ok(c, "SELECT pg_advisory_lock(?)", &key, 1);
        for (int64_t i = 0; i < 3; i++)
            assert_int_equal(plus(c, i), i + 1);
        dbt_exec_ok(c, "SELECT pg_advisory_unlock(?)", &key, 1);
    }
    assert_int_equal(kept_on_server(c), 3);
    release_and_close(p, c);
}

/* A statement that does not prepare (a syntax error) is the caller's
 * error, every time, and nothing is kept; one that fails when it runs
 * stays kept. */
static void test_failures(void **state) {
    (void)state;
    dbpool *p = open_one(NULL);
    dbpool_conn *c = dbt_acquire(p);
    dbpool_param v = dbpool_param_int64(1);
    for (int i = 0; i < 2; i++) {
        dbpool_error err;
        int64_t affected = 0;
        int rc = dbpool_exec(c, "SELECT ?::int +", &v, 1, &affected, &err);
        if (rc != DBPOOL_EQUERY || strcmp(err.sqlstate, "42601") != 0)
            fail_msg("a syntax error: %s [%s] %s", dbpool_errname(rc), err.sqlstate, err.message);
    }
    assert_int_equal(kept_on_server(c), 0);
    dbpool_param zero = dbpool_param_int64(0), two = dbpool_param_int64(2);
    assert_int_equal(first_int(c, "SELECT 10 / ?::int", &two, 1), 5);
    for (int i = 0; i < 2; i++) { /* the first run prepares it */
        dbpool_result *r = NULL;
        dbpool_error err;
        int rc = dbpool_query(c, "SELECT 10 / ?::int", &zero, 1, &r, &err);
        if (rc != DBPOOL_EQUERY || strcmp(err.sqlstate, "22012") != 0)
            fail_msg("division by zero: %s [%s] %s", dbpool_errname(rc), err.sqlstate, err.message);
        assert_int_equal(kept_on_server(c), 1); /* prepared, then failed to run: kept */
    }
    assert_int_equal(first_int(c, "SELECT 10 / ?::int", &two, 1), 5);
    assert_int_equal(kept_on_server(c), 1);
    /* The failed runs' plans were not finished (10 / 0 folded while
     * planning): only the last run counts. */
    assert_int_equal(runs_of(c, "SELECT 10 / $1::int"), 1);
    release_and_close(p, c);
}

/* Statements run once each (SQL built with a varying literal) are never
 * prepared: nothing is kept, nothing is deallocated, and a statement that
 * does come back still gets kept among them. */
static void test_run_once_not_prepared(void **state) {
    (void)state;
    dbpool *p = open_one(NULL);
    dbpool_conn *c = dbt_acquire(p);
    char sql[64];
    for (int k = 0; k < 100; k++) {
        snprintf(sql, sizeof sql, "SELECT ?::int + %d", k);
        dbpool_param v = dbpool_param_int64(k);
        assert_int_equal(first_int(c, sql, &v, 1), 2 * k);
        if (k % 10 == 0)
            assert_int_equal(plus(c, k), k + 1);
    }
    assert_int_equal(kept_on_server(c), 1);
    assert_int_equal(runs_of(c, "SELECT $1::bigint + 1"), 9);
    release_and_close(p, c);
}

/* pool_statement_cache=off: every run is unnamed, nothing is kept. */
static void test_cache_off(void **state) {
    (void)state;
    dbpool *p = open_one("pool_statement_cache=off");
    dbpool_conn *c = dbt_acquire(p);
    for (int64_t i = 0; i < 5; i++)
        assert_int_equal(plus(c, i), i + 1);
    assert_int_equal(kept_on_server(c), 0);
    release_and_close(p, c);
}

int main(void) {
    snprintf(table, sizeof table, "dbpool_pgsc_%ld", (long)getpid());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prepared_once),
        cmocka_unit_test(test_types_are_part_of_the_key),
        cmocka_unit_test(test_least_recently_used_goes),
        cmocka_unit_test(test_table_changed_shape),
        cmocka_unit_test(test_changed_shape_in_another_language),
        cmocka_unit_test(test_deallocated_behind_its_back),
        cmocka_unit_test(test_one_deallocated_behind_its_back),
        cmocka_unit_test(test_error_from_inside_is_the_callers),
        cmocka_unit_test(test_full_cache_in_a_transaction),
        cmocka_unit_test(test_deallocate_through_dbpool),
        cmocka_unit_test(test_reset_empties_the_cache),
        cmocka_unit_test(test_forgotten_are_deallocated),
        cmocka_unit_test(test_failures),
        cmocka_unit_test(test_run_once_not_prepared),
        cmocka_unit_test(test_cache_off),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#else /* !DBPOOL_HAVE_PG */

int main(void) {
    fprintf(stderr, "skipped: this build has no PostgreSQL backend\n");
    return DBT_SKIP;
}

#endif
