/* calls.c — library calls that must succeed, for tests: on failure the test
 * fails with the pool's own message. */
#include "testsupport.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

dbpool_conn *dbt_acquire(dbpool *p) {
    dbpool_conn *c = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int rc = dbpool_acquire(p, 5000, &c, &e);
    if (rc != DBPOOL_OK)
        fail_msg("dbpool_acquire: %s: %s", dbpool_errname(rc), e.message);
    return c;
}

void dbt_exec_ok(dbpool_conn *c, const char *sql, const dbpool_param *params, size_t n) {
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int rc = dbpool_exec(c, sql, params, n, NULL, &e);
    if (rc != DBPOOL_OK)
        fail_msg("exec \"%s\": %s: %s", sql, dbpool_errname(rc), e.message);
}

dbpool_result *dbt_query_ok(dbpool_conn *c, const char *sql, const dbpool_param *params, size_t n) {
    dbpool_result *r = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int rc = dbpool_query(c, sql, params, n, &r, &e);
    if (rc != DBPOOL_OK)
        fail_msg("query \"%s\": %s: %s", sql, dbpool_errname(rc), e.message);
    assert_non_null(r);
    return r;
}

int dbt_next_ok(dbpool_result *r) {
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int rc = dbpool_result_next(r, &e);
    if (rc < 0)
        fail_msg("dbpool_result_next: %s: %s", dbpool_errname(rc), e.message);
    return rc;
}

void dbt_wait_for_waiters(dbpool *p, int n, int64_t timeout_ms) {
    int64_t end = dbt_now_ms() + timeout_ms;
    for (;;) {
        dbpool_stats s;
        dbpool_get_stats(p, &s);
        if (s.waiting == n)
            return;
        if (dbt_now_ms() > end)
            fail_msg("expected %d waiters within %lld ms, the pool shows %d", n, (long long)timeout_ms,
                     s.waiting);
        dbt_sleep_ms(1);
    }
}

void dbt_wait_settled(dbpool *p, int idle, int total, int64_t timeout_ms) {
    int64_t end = dbt_now_ms() + timeout_ms;
    for (;;) {
        dbpool_stats s;
        dbpool_get_stats(p, &s);
        if (s.idle == idle && s.total == total && s.connecting == 0)
            return;
        if (dbt_now_ms() > end)
            fail_msg("within %lld ms: idle %d (expected %d), total %d (expected %d), connecting %d",
                     (long long)timeout_ms, s.idle, idle, s.total, total, s.connecting);
        dbt_sleep_ms(1);
    }
}

void dbt_expect_slow_init_sql_bounded(dbpool *p, dbpool_conn *c, dbpool_conn *admin, const char *flag_table,
                                      int64_t bound_ms) {
    char sql[256];
    snprintf(sql, sizeof sql, "INSERT INTO %s VALUES (1)", flag_table);
    dbt_exec_ok(admin, sql, NULL, 0);
    int64_t t0 = dbt_now_ms();
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    int64_t took = dbt_now_ms() - t0;
    if (took > bound_ms + 1500)
        fail_msg("the release took %lld ms with validation_timeout_ms %lld", (long long)took,
                 (long long)bound_ms);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.destroyed_by[DBPOOL_CLOSE_RESET_FAILED], 1);
    assert_int_equal(s.total, 0);

    /* A new connection while the flag is up: the attempt times out. */
    dbpool_error err;
    memset(&err, 0, sizeof err);
    t0 = dbt_now_ms();
    int rc = dbpool_acquire(p, 5000, &c, &err);
    took = dbt_now_ms() - t0;
    if (rc != DBPOOL_ETIMEDOUT || took > bound_ms + 1500)
        fail_msg("acquire with a slow init_sql: %s after %lld ms: %s", dbpool_errname(rc), (long long)took,
                 err.message);
    assert_non_null(strstr(err.message, "init_sql"));

    snprintf(sql, sizeof sql, "DELETE FROM %s", flag_table);
    dbt_exec_ok(admin, sql, NULL, 0);
}

void *dbt_timed_acquire_main(void *arg) {
    dbt_timed_acquire *a = arg;
    dbpool_conn *c = NULL;
    dbpool_error e;
    int64_t t0 = dbt_now_ms();
    a->rc = dbpool_acquire(a->p, a->timeout_ms, &c, &e);
    a->took_ms = dbt_now_ms() - t0;
    snprintf(a->message, sizeof a->message, "%s", a->rc == DBPOOL_OK ? "" : e.message);
    if (a->rc == DBPOOL_OK)
        dbpool_release(c);
    return NULL;
}

dbpool *dbt_open_mock(const dbpool_options *o) {
    dbpool *p = NULL;
    dbpool_error e;
    if (dbpool_open(&p, "mock:", o, &e) != DBPOOL_OK)
        fail_msg("open: %s", e.message);
    return p;
}

dbpool *dbt_open_lazy_mock(dbpool_options *o) {
    o->lazy_connect = true;
    o->maintenance_interval_ms = 0;
    return dbt_open_mock(o);
}

int64_t dbt_query_int(dbpool_conn *c, const char *sql, const dbpool_param *params, size_t n) {
    dbpool_result *r = dbt_query_ok(c, sql, params, n);
    dbpool_error e;
    memset(&e, 0, sizeof e);
    if (dbpool_result_next(r, &e) != 1)
        fail_msg("\"%s\" returned no row: %s", sql, e.message);
    int64_t v = dbpool_result_int64(r, 0);
    dbpool_result_free(r);
    return v;
}

void dbt_wait_count_zero(const char *url, const char *count_sql, int64_t id, int64_t timeout_ms) {
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.maintenance_interval_ms = 0;
    dbpool *w = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    if (dbpool_open(&w, url, &o, &e) != DBPOOL_OK)
        fail_msg("watcher: %s", e.message);
    dbpool_conn *c = dbt_acquire(w);
    dbpool_param prm = dbpool_param_int64(id);
    int64_t t0 = dbt_now_ms();
    while (dbt_query_int(c, count_sql, &prm, 1) != 0) {
        if (dbt_now_ms() - t0 > timeout_ms)
            fail_msg("%lld still counted by \"%s\" after %lld ms", (long long)id, count_sql,
                     (long long)timeout_ms);
        dbt_sleep_ms(20);
    }
    dbpool_release(c);
    dbpool_close(w);
}
