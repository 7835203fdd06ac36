/*
 * backend_common.h — small helpers shared by the per-backend behavioural
 * tests in tests/backend/. Every test there runs unchanged on SQLite,
 * PostgreSQL and MySQL/MariaDB, so it uses the unified query API only.
 *
 * Include after <cmocka.h>'s prerequisites; this header includes cmocka.
 * Helpers that assert must be called from the cmocka thread only: worker
 * threads record what happened and the main thread asserts.
 */
#ifndef DBPOOL_BACKEND_COMMON_H
#define DBPOOL_BACKEND_COMMON_H

#include "testsupport.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include <cmocka.h>

/* The backend this executable runs against (argv[1]). */
static const char *bt_backend = "sqlite";

/* Call first in main(): exits 77 (skipped) for a server backend whose URL
 * variable is not set, before cmocka starts. */
static inline void bt_init(int argc, char **argv) {
    bt_backend = dbt_backend_arg(argc, argv);
    (void)dbt_backend_url(bt_backend);
}

static inline bool bt_is(const char *backend) { return strcmp(bt_backend, backend) == 0; }

/* A statement that names the server session a connection is (SQLite has
 * none: "SELECT 1"). */
static inline const char *bt_session_id_sql(void) {
    if (bt_is("pg"))
        return "SELECT pg_backend_pid()";
    if (bt_is("mysql"))
        return "SELECT CONNECTION_ID()";
    return "SELECT 1";
}

/* Fail the test with the error's name and message when rc is not OK. */
#define BT_OK(rc_expr, errp, what)                                                                           \
    do {                                                                                                     \
        int bt_rc_ = (rc_expr);                                                                              \
        if (bt_rc_ != DBPOOL_OK)                                                                             \
            fail_msg("%s failed on backend %s: %s (%d): %s", (what), bt_backend, dbpool_errname(bt_rc_),     \
                     bt_rc_, (errp)->message);                                                               \
    } while (0)

/* Fail unless rc_expr == want, naming both codes. */
#define BT_RC(rc_expr, want, what)                                                                           \
    do {                                                                                                     \
        int bt_rc_ = (rc_expr);                                                                              \
        if (bt_rc_ != (want))                                                                                \
            fail_msg("%s on backend %s: expected %s, got %s (%d)", (what), bt_backend, dbpool_errname(want), \
                     dbpool_errname(bt_rc_), bt_rc_);                                                        \
    } while (0)

/* Fail with a formatted message unless cond holds. */
#define BT_CHECK(cond, ...)                                                                                  \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            char bt_msg_[768];                                                                               \
            snprintf(bt_msg_, sizeof bt_msg_, __VA_ARGS__);                                                  \
            fail_msg("[%s] %s (failed: %s)", bt_backend, bt_msg_, #cond);                                    \
        }                                                                                                    \
    } while (0)

/* Open a pool on this backend with the given options and URL keys. */
static inline dbpool *bt_open(const dbpool_options *o, const char *extra) {
    dbpool *p = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    const char *url = dbt_backend_url_with(bt_backend, extra);
    BT_OK(dbpool_open(&p, url, o, &e), &e, "dbpool_open");
    assert_non_null(p);
    return p;
}

/* dbt_options(min, max) with no maintenance thread, so that only the
 * operations a test performs change the pool. */
static inline void bt_options(dbpool_options *o, int min_size, int max_size) {
    dbt_options(o, min_size, max_size);
    o->maintenance_interval_ms = 0;
}

static inline dbpool_conn *bt_acquire(dbpool *p) {
    dbpool_conn *c = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    BT_OK(dbpool_acquire(p, 5000, &c, &e), &e, "dbpool_acquire");
    assert_non_null(c);
    return c;
}

static inline void bt_release(dbpool_conn *c) { BT_RC(dbpool_release(c), DBPOOL_OK, "dbpool_release"); }

static inline void bt_exec(dbpool_conn *c, const char *sql) {
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int rc = dbpool_exec(c, sql, NULL, 0, NULL, &e);
    if (rc != DBPOOL_OK)
        fail_msg("[%s] exec \"%s\" failed: %s: %s", bt_backend, sql, dbpool_errname(rc), e.message);
}

static inline void bt_exec_params(dbpool_conn *c, const char *sql, const dbpool_param *params, size_t n) {
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int rc = dbpool_exec(c, sql, params, n, NULL, &e);
    if (rc != DBPOOL_OK)
        fail_msg("[%s] exec \"%s\" failed: %s: %s", bt_backend, sql, dbpool_errname(rc), e.message);
}

/* The first column of the first row of a query, as an integer. */
static inline int64_t bt_query_int(dbpool_conn *c, const char *sql, const dbpool_param *params, size_t n) {
    dbpool_error e;
    memset(&e, 0, sizeof e);
    dbpool_result *r = NULL;
    int rc = dbpool_query(c, sql, params, n, &r, &e);
    if (rc != DBPOOL_OK)
        fail_msg("[%s] query \"%s\" failed: %s: %s", bt_backend, sql, dbpool_errname(rc), e.message);
    rc = dbpool_result_next(r, &e);
    if (rc != 1) {
        dbpool_result_free(r);
        fail_msg("[%s] query \"%s\" returned no row (%d): %s", bt_backend, sql, rc, e.message);
    }
    int64_t v = dbpool_result_int64(r, 0);
    dbpool_result_free(r);
    return v;
}

static inline dbpool_stats bt_stats(dbpool *p) {
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    return s;
}

/* After fork(): wait up to 10 s for the child, which reports what it found
 * by its exit code (0 all well); fail with failure(code) otherwise. */
static inline void bt_expect_child_ok(pid_t pid, const char *(*failure)(int code)) {
    int st = dbt_child_status(pid, 10000);
    BT_CHECK(st != -1,
             "the child did not exit within 10 s (a deadlock on a lock inherited from the parent?)");
    BT_CHECK(st < 128, "the child died of signal %d", st - 128);
    BT_CHECK(st == 0, "child: %s (exit %d)", failure(st), st);
}

/* After fork(), once the child has exited: the connection that was idle in
 * pool p at fork time (server session idle_id) is alive in the parent.
 * The next lease (through manager m's pool `name` when m is not NULL)
 * passes validation (p must validate always), is on the same server
 * session, and p has opened no connection beyond the `created` it had. */
static inline void bt_expect_idle_kept(dbpool *p, dbpool_manager *m, const char *name, int64_t idle_id,
                                       uint64_t created) {
    dbpool_stats before = bt_stats(p);
    dbpool_conn *again = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    if (m)
        BT_OK(dbpool_manager_acquire(m, name, 5000, &again, &e), &e, "dbpool_manager_acquire after the fork");
    else
        again = bt_acquire(p);
    int64_t again_id = bt_query_int(again, bt_session_id_sql(), NULL, 0);
    dbpool_stats s = bt_stats(p);
    bt_release(again);
    BT_CHECK(s.validation_failures == before.validation_failures,
             "the idle connection failed validation after the child exited: the child closed it");
    if (!bt_is("sqlite"))
        BT_CHECK(again_id == idle_id, "the idle connection's session changed (%lld -> %lld)",
                 (long long)idle_id, (long long)again_id);
    BT_CHECK(s.created == created, "the pool opened %llu connections, expected the %llu from before the fork",
             (unsigned long long)s.created, (unsigned long long)created);
}

#endif
