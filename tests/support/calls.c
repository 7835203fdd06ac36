/* calls.c — library calls that must succeed, for tests: on failure the test
 * fails with the pool's own message. */
#include "testsupport.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
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
