/*
 * test_statement_deadline.c — the core's client-side backstop for a
 * caller's statement, on the mock backend (whose "SLEEP ms" stands for a
 * server that does not answer for that long):
 *  - with statement_timeout_ms set, dbpool_exec and dbpool_query return
 *    DBPOOL_ETIMEDOUT by statement_timeout_ms + validation_timeout_ms, with
 *    a message naming both; the lease is closed at release, never pooled;
 *  - with statement_timeout_ms 0 nothing changes: a statement runs as long
 *    as it takes;
 *  - a statement that names the server's statement limit (the mock's
 *    "statement_limit") turns the backstop off until the release finds the
 *    session clean or resets it, and an init_sql that names it for every
 *    lease.
 * The real backends' versions (a silent network, a stopped PostgreSQL
 * backend) are in tests/backend/test_fault_statement_stall.c.
 */
#include "driver_mock.h"
#include "testsupport.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#define STATEMENT_MS 100
#define GRACE_MS 150
#define MARGIN_MS 400

static dbpool *open_mock(int64_t statement_ms) {
    dbpool__mock_reset();
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.maintenance_interval_ms = 0;
    o.statement_timeout_ms = statement_ms;
    o.validation_timeout_ms = GRACE_MS;
    dbpool *p = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    if (dbpool_open(&p, "mock:", &o, &e) != DBPOOL_OK)
        fail_msg("open: %s", e.message);
    return p;
}

static dbpool_conn *acquire(dbpool *p) {
    dbpool_conn *c = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    if (dbpool_acquire(p, -1, &c, &e) != DBPOOL_OK)
        fail_msg("acquire: %s", e.message);
    return c;
}

static void check_timed_out(int rc, const dbpool_error *e, int64_t took) {
    if (rc != DBPOOL_ETIMEDOUT)
        fail_msg("expected DBPOOL_ETIMEDOUT, got %s: %s", dbpool_errname(rc), e->message);
    if (took < STATEMENT_MS + GRACE_MS - 20 || took > STATEMENT_MS + GRACE_MS + MARGIN_MS)
        fail_msg("the statement gave up after %lld ms, not at its deadline %d ms", (long long)took,
                 STATEMENT_MS + GRACE_MS);
    if (!strstr(e->message, "statement_timeout_ms 100") || !strstr(e->message, "validation_timeout_ms 150") ||
        !strstr(e->message, "released"))
        fail_msg("the message should name both bounds and say what to do: %s", e->message);
}

static void test_backstop(void **state) {
    (void)state;
    dbpool *p = open_mock(STATEMENT_MS);
    dbpool_conn *a = acquire(p);
    dbpool_conn *b = acquire(p);
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int64_t t0 = dbt_now_ms();
    int rc = dbpool_exec(a, "SLEEP 5000", NULL, 0, NULL, &e);
    check_timed_out(rc, &e, dbt_now_ms() - t0);

    dbpool_result *r = NULL;
    memset(&e, 0, sizeof e);
    t0 = dbt_now_ms();
    rc = dbpool_query(b, "SLEEP 5000", NULL, 0, &r, &e);
    check_timed_out(rc, &e, dbt_now_ms() - t0);
    assert_null(r);

    dbpool_stats before, after;
    dbpool_get_stats(p, &before);
    assert_int_equal(dbpool_release(a), DBPOOL_OK);
    assert_int_equal(dbpool_release(b), DBPOOL_OK);
    dbpool_get_stats(p, &after);
    assert_int_equal(after.idle, 0);
    assert_int_equal(after.destroyed_by[DBPOOL_CLOSE_BROKEN] - before.destroyed_by[DBPOOL_CLOSE_BROKEN], 2);

    /* A statement that answers in time is not affected. */
    dbpool_conn *c = acquire(p);
    memset(&e, 0, sizeof e);
    assert_int_equal(dbpool_exec(c, "SLEEP 20", NULL, 0, NULL, &e), DBPOOL_OK);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    dbpool_get_stats(p, &after);
    assert_int_equal(after.idle, 1);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_no_statement_timeout_no_bound(void **state) {
    (void)state;
    dbpool *p = open_mock(0);
    dbpool_conn *c = acquire(p);
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int64_t t0 = dbt_now_ms();
    int rc = dbpool_exec(c, "SLEEP 600", NULL, 0, NULL, &e);
    int64_t took = dbt_now_ms() - t0;
    if (rc != DBPOOL_OK || took < 590)
        fail_msg("without statement_timeout_ms a statement must run to its end: %s after %lld ms: %s",
                 dbpool_errname(rc), (long long)took, e.message);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.idle, 1);
    assert_int_equal(dbpool_close(p), 0);
}

/* The mock connection behind a lease (its query's one row). */
static int conn_id(dbpool_conn *c) {
    dbpool_result *r = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    if (dbpool_query(c, "SELECT conn_id", NULL, 0, &r, &e) != DBPOOL_OK || dbpool_result_next(r, &e) != 1)
        fail_msg("conn_id: %s", e.message);
    int id = (int)dbpool_result_int64(r, 0);
    dbpool_result_free(r);
    return id;
}

/* A statement the backstop must not cut off: it runs to its end. */
static void runs_unbounded(dbpool_conn *c, const char *sql, const char *why) {
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int64_t t0 = dbt_now_ms();
    int rc = dbpool_exec(c, sql, NULL, 0, NULL, &e);
    int64_t took = dbt_now_ms() - t0;
    if (rc != DBPOOL_OK || took < 390)
        fail_msg("%s: \"%s\" should run to its end without the backstop: %s after %lld ms: %s", why, sql,
                 dbpool_errname(rc), (long long)took, e.message);
}

/* A statement the backstop cuts off: the session has the pool's limit. */
static void cut_off(dbpool_conn *c, const char *why) {
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int64_t t0 = dbt_now_ms();
    int rc = dbpool_exec(c, "SLEEP 5000", NULL, 0, NULL, &e);
    int64_t took = dbt_now_ms() - t0;
    if (rc != DBPOOL_ETIMEDOUT)
        fail_msg("%s: the backstop should cut the statement off: %s after %lld ms: %s", why,
                 dbpool_errname(rc), (long long)took, e.message);
    check_timed_out(rc, &e, took);
}

/* The core's policy (design.md#statement-deadlines), on the mock, whose
 * statements naming "statement_limit" stand for a caller's own limit
 * (SET statement_timeout, SET STATEMENT max_statement_time ... FOR, a
 * hint): from such a statement, itself included, to the release the
 * backstop stands aside; the release that finds the session clean, or the
 * reset of one that is not, brings it back for the next lease. */
static void test_caller_limit_stands_backstop_aside(void **state) {
    (void)state;
    dbpool *p = open_mock(STATEMENT_MS);

    dbpool_conn *c = acquire(p);
    int id = conn_id(c);
    runs_unbounded(c, "SLEEP 400 /* statement_limit */", "a statement naming the limit");
    runs_unbounded(c, "SLEEP 400", "a later statement of the same lease");
    dbpool_result *r = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int64_t t0 = dbt_now_ms();
    int rc = dbpool_query(c, "SLEEP 400", NULL, 0, &r, &e);
    if (rc != DBPOOL_OK || dbt_now_ms() - t0 < 390)
        fail_msg("dbpool_query after a statement naming the limit: %s: %s", dbpool_errname(rc), e.message);
    dbpool_result_free(r);
    assert_int_equal(dbpool_release(c), DBPOOL_OK); /* clean: no reset */
    c = acquire(p);
    assert_int_equal(conn_id(c), id);
    cut_off(c, "the lease after a clean release");
    assert_int_equal(dbpool_release(c), DBPOOL_OK);

    /* The same through a reset: an open transaction at release. */
    c = acquire(p);
    id = conn_id(c);
    dbt_exec_ok(c, "BEGIN", NULL, 0);
    dbt_exec_ok(c, "SET statement_limit = 0", NULL, 0);
    runs_unbounded(c, "SLEEP 400", "after SET statement_limit in a transaction");
    dbpool_stats before, after;
    dbpool_get_stats(p, &before);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    dbpool_get_stats(p, &after);
    assert_int_equal(after.rollbacks - before.rollbacks, 1);
    c = acquire(p);
    assert_int_equal(conn_id(c), id);
    cut_off(c, "the lease after a reset");
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_close(p), 0);

    /* init_sql names it: off for every lease, after a reset too. */
    dbpool__mock_reset();
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.maintenance_interval_ms = 0;
    o.statement_timeout_ms = STATEMENT_MS;
    o.validation_timeout_ms = GRACE_MS;
    o.init_sql = "SET statement_limit = 0";
    memset(&e, 0, sizeof e);
    if (dbpool_open(&p, "mock:", &o, &e) != DBPOOL_OK)
        fail_msg("open: %s", e.message);
    for (int i = 0; i < 2; i++) {
        c = acquire(p);
        dbt_exec_ok(c, "BEGIN", NULL, 0);
        runs_unbounded(c, "SLEEP 400", "with init_sql naming the limit");
        assert_int_equal(dbpool_release(c), DBPOOL_OK);
    }
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.rollbacks, 2);
    assert_int_equal(s.created, 1);
    assert_int_equal(dbpool_close(p), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backstop),
        cmocka_unit_test(test_no_statement_timeout_no_bound),
        cmocka_unit_test(test_caller_limit_stands_backstop_aside),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
