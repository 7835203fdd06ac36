/* test_pg_abandoned_statement.c — a statement the pool gives up on does
 * not keep a server session. When init_sql outlasts connect_timeout_ms (a
 * connect attempt) or validation_timeout_ms (a release whose reset cleared
 * the session), the pool closes the connection; the server's backend,
 * still running the statement, must notice and end too, instead of staying
 * for as long as the statement runs (here 60 s of pg_sleep, in real life a
 * lock wait with no end), one more session per attempt. Each test's
 * sessions carry their own application_name and are counted in
 * pg_stat_activity through a second pool. Needs DBPOOL_TEST_PG_URL, and
 * PostgreSQL 14 or later (client_connection_check_interval). */
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

static char app[64];    /* the application_name of the pool under test */
static char table[64];  /* per process: tests may run in parallel */
static dbpool *watcher; /* counts the sessions */

static int64_t first_int(dbpool_conn *c, const char *sql, const dbpool_param *params, size_t n) {
    dbpool_result *r = dbt_query_ok(c, sql, params, n);
    assert_int_equal(dbt_next_ok(r), 1);
    int64_t v = dbpool_result_int64(r, 0);
    dbpool_result_free(r);
    return v;
}

static int64_t sessions_of(const char *name) {
    dbpool_conn *c = dbt_acquire(watcher);
    dbpool_param p = dbpool_param_text(name);
    int64_t n = first_int(c, "SELECT count(*) FROM pg_stat_activity WHERE application_name = ?", &p, 1);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    return n;
}

/* Wait (up to 10 s; without the check the sessions stay 60 s) until no
 * session of `name` is left; fail with the count otherwise. */
static void expect_no_session_left(const char *name) {
    int64_t n = -1;
    for (int i = 0; i < 100; i++) {
        n = sessions_of(name);
        if (n == 0)
            return;
        dbt_sleep_ms(100);
    }
    fail_msg("%lld server session(s) of connections the pool closed still there after 10 s", (long long)n);
}

static int setup(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 1, 1);
    o.maintenance_interval_ms = 0;
    dbpool_error e;
    if (dbpool_open(&watcher, dbt_backend_url("pg"), &o, &e) != DBPOOL_OK)
        fail_msg("dbpool_open: %s", e.message);
    dbpool_conn *c = dbt_acquire(watcher);
    int64_t version = first_int(c, "SELECT current_setting('server_version_num')::int", NULL, 0);
    snprintf(table, sizeof table, "dbpool_abandon_%ld", (long)getpid());
    char sql[160];
    snprintf(sql, sizeof sql, "CREATE TABLE IF NOT EXISTS %s (s float8)", table);
    dbt_exec_ok(c, sql, NULL, 0);
    snprintf(sql, sizeof sql, "DELETE FROM %s", table);
    dbt_exec_ok(c, sql, NULL, 0);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    if (version < 140000) {
        fprintf(stderr, "skipped: PostgreSQL %lld has no client_connection_check_interval\n",
                (long long)version);
        dbpool_close(watcher);
        exit(DBT_SKIP);
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    dbpool_conn *c = dbt_acquire(watcher);
    char sql[128];
    snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s", table);
    dbt_exec_ok(c, sql, NULL, 0);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_close(watcher), 0);
    return 0;
}

static const char *url_named(const char *what) {
    snprintf(app, sizeof app, "dbpool_%s_%ld", what, (long)getpid());
    char extra[96];
    snprintf(extra, sizeof extra, "application_name=%s", app);
    return dbt_backend_url_with("pg", extra);
}

/* init_sql past connect_timeout_ms: every attempt fails, none stays. */
static void test_connect_attempts(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 1, 2);
    o.max_retries = 2;
    o.backoff_base_ms = 1;
    o.backoff_max_ms = 2;
    o.connect_timeout_ms = 300;
    o.acquire_timeout_ms = 5000;
    o.breaker_failures = 0;
    o.init_sql = "SELECT pg_sleep(60)";
    dbpool *p = NULL;
    dbpool_error e;
    assert_int_equal(dbpool_open(&p, url_named("connect"), &o, &e), DBPOOL_ETIMEDOUT);
    assert_null(p);
    expect_no_session_left(app);
}

/* init_sql past validation_timeout_ms at a release whose reset cleared the
 * session: the connection is closed, and its session with it. */
static void test_reset(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 1, 1);
    o.maintenance_interval_ms = 0;
    o.validation_timeout_ms = 300;
    char init[160];
    snprintf(init, sizeof init, "SELECT pg_sleep(coalesce((SELECT max(s) FROM %s), 0))", table);
    o.init_sql = init;
    dbpool *p = NULL;
    dbpool_error e;
    if (dbpool_open(&p, url_named("reset"), &o, &e) != DBPOOL_OK)
        fail_msg("dbpool_open: %s", e.message);
    dbpool_conn *c = dbt_acquire(p);
    char sql[128];
    snprintf(sql, sizeof sql, "INSERT INTO %s VALUES (60)", table);
    dbt_exec_ok(c, sql, NULL, 0);
    dbt_exec_ok(c, "SET search_path = public", NULL, 0); /* the release resets the session */
    assert_int_equal(sessions_of(app), 1);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.total, 0); /* the reset failed: closed */
    assert_int_equal(dbpool_close(p), 0);
    expect_no_session_left(app);
    snprintf(sql, sizeof sql, "DELETE FROM %s", table);
    c = dbt_acquire(watcher);
    dbt_exec_ok(c, sql, NULL, 0);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
}

int main(void) {
    (void)dbt_backend_url("pg"); /* skips without a server */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_attempts),
        cmocka_unit_test(test_reset),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

#else /* !DBPOOL_HAVE_PG */

int main(void) {
    fprintf(stderr, "skipped: this build has no PostgreSQL backend\n");
    return DBT_SKIP;
}

#endif
