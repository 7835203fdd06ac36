/* test_pg_stmt_cache_transaction.c — inside a long transaction the
 * PostgreSQL statement cache stays bounded on the server too. Nothing
 * forgotten can be deallocated inside a transaction, so a statement the
 * cache has no room for there, or one run while forgotten statements wait
 * for the transaction's end, runs unnamed: a transaction over hundreds of
 * distinct parameterised statements (a batch job) leaves at most the 32
 * kept ones on the server, not one per distinct statement, and so does a
 * transaction that changes the session (an advisory lock per job) over
 * and over. After the transaction the cache works as before. And in a
 * long lease, a session change that has "discard" only inside a longer
 * word (SET application_name = 'discarded-items-job') retires the kept
 * statements for deallocation rather than forgetting them, which left one
 * more on the server per job. The server's pg_prepared_statements is the
 * witness. Needs DBPOOL_TEST_PG_URL. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "dbpool.h"
#include "testsupport.h"

#include <stdio.h>
#include <string.h>

#ifdef DBPOOL_HAVE_PG

/* One connection, no maintenance, no validation round trips. */
static dbpool *open_one(void) {
    dbpool_options o;
    dbt_options(&o, 1, 1);
    o.validation = DBPOOL_VALIDATE_NEVER;
    o.maintenance_interval_ms = 0;
    dbpool *p = NULL;
    dbpool_error err;
    if (dbpool_open(&p, dbt_backend_url("pg"), &o, &err) != DBPOOL_OK)
        fail_msg("dbpool_open: %s", err.message);
    return p;
}

static int64_t first_int(dbpool_conn *c, const char *sql, const dbpool_param *params, size_t n) {
    dbpool_result *r = dbt_query_ok(c, sql, params, n);
    assert_int_equal(dbt_next_ok(r), 1);
    int64_t v = dbpool_result_int64(r, 0);
    dbpool_result_free(r);
    return v;
}

/* dbpool's statements on the server for this session. */
static int64_t kept_on_server(dbpool_conn *c) {
    return first_int(c, "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE '\\_dbpool\\_s%'", NULL,
                     0);
}

/* n distinct statements, each run three times (prepared at the second). */
static void run_distinct(dbpool_conn *c, int n) {
    char sql[64];
    for (int k = 0; k < n; k++) {
        snprintf(sql, sizeof sql, "SELECT ?::int + %d", k);
        for (int64_t i = 1; i <= 3; i++) {
            dbpool_param v = dbpool_param_int64(i);
            assert_int_equal(first_int(c, sql, &v, 1), i + k);
        }
    }
}

static void test_many_statements_in_one_transaction(void **state) {
    (void)state;
    dbpool *p = open_one();
    dbpool_conn *c = dbt_acquire(p);
    dbt_exec_ok(c, "BEGIN", NULL, 0);
    run_distinct(c, 300);
    int64_t inside = kept_on_server(c);
    if (inside > 32)
        fail_msg("%lld of dbpool's statements on the server inside one transaction over 300 distinct "
                 "statements: the cache keeps 32",
                 (long long)inside);
    dbt_exec_ok(c, "COMMIT", NULL, 0);
    /* Outside the transaction: prepared and evicted as usual. */
    run_distinct(c, 40);
    assert_int_equal(kept_on_server(c), 32);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_session_changes_in_one_transaction(void **state) {
    (void)state;
    dbpool *p = open_one();
    dbpool_conn *c = dbt_acquire(p);
    dbt_exec_ok(c, "BEGIN", NULL, 0);
    for (int64_t job = 0; job < 100; job++) {
        dbpool_param key = dbpool_param_int64(4243);
        /* Flagged as a session change: the kept statements are forgotten. */
        dbt_exec_ok(c, "SELECT pg_advisory_lock(?)", &key, 1);
        for (int64_t i = 0; i < 3; i++) {
            dbpool_param v = dbpool_param_int64(i);
            assert_int_equal(first_int(c, "SELECT ?::bigint + 1", &v, 1), i + 1);
        }
        dbt_exec_ok(c, "SELECT pg_advisory_unlock(?)", &key, 1);
    }
    int64_t inside = kept_on_server(c);
    if (inside > 32)
        fail_msg("%lld of dbpool's statements on the server after 100 session changes in one "
                 "transaction",
                 (long long)inside);
    dbt_exec_ok(c, "COMMIT", NULL, 0);
    dbpool_param v = dbpool_param_int64(5);
    assert_int_equal(first_int(c, "SELECT ?::bigint + 1", &v, 1), 6);
    assert_true(kept_on_server(c) <= 32);
    /* The lease changed the session: the release resets it. */
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_word_inside_another_word(void **state) {
    (void)state;
    dbpool *p = open_one();
    dbpool_conn *c = dbt_acquire(p);
    for (int64_t job = 0; job < 100; job++) {
        dbt_exec_ok(c, "SET application_name = 'discarded-items-job'", NULL, 0);
        for (int64_t i = 0; i < 3; i++) {
            dbpool_param v = dbpool_param_int64(i);
            assert_int_equal(first_int(c, "SELECT ?::bigint + 1", &v, 1), i + 1);
        }
    }
    int64_t left = kept_on_server(c);
    if (left > 32)
        fail_msg("%lld of dbpool's statements on the server after 100 jobs in one lease", (long long)left);
    /* A real DEALLOCATE ALL through dbpool still empties the cache at once. */
    dbt_exec_ok(c, "DEALLOCATE ALL", NULL, 0);
    assert_int_equal(kept_on_server(c), 0);
    for (int64_t i = 0; i < 3; i++) {
        dbpool_param v = dbpool_param_int64(i);
        assert_int_equal(first_int(c, "SELECT ?::bigint + 1", &v, 1), i + 1);
    }
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_close(p), 0);
}

int main(void) {
    (void)dbt_backend_url("pg"); /* skips without a server */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_many_statements_in_one_transaction),
        cmocka_unit_test(test_session_changes_in_one_transaction),
        cmocka_unit_test(test_word_inside_another_word),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#else /* !DBPOOL_HAVE_PG */

int main(void) {
    fprintf(stderr, "skipped: this build has no PostgreSQL backend\n");
    return DBT_SKIP;
}

#endif
