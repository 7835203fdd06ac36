/*
 * test_fault_killed_backends.c — the server sessions behind idle pooled
 * connections are killed through the admin URL (pg_terminate_backend /
 * KILL CONNECTION of every session of the test user): the next acquires all
 * succeed, each with a fresh session. Two ways to get there:
 *  - validation on hand-out (DBPOOL_VALIDATE_ALWAYS, and the default
 *    IF_IDLE once the window has passed): each dead connection is found by
 *    its round trip and replaced;
 *  - keepalive (validation off): the maintenance thread's ping finds the
 *    dead connections before any caller gets them, and refills.
 * PostgreSQL and MariaDB only.
 */
#include "backend_common.h"
#include "servers.h"

#define N 4

/* Hold N leases at once and record their session ids. */
static void hold_all(dbpool *p, dbpool_conn **cs, int64_t *ids) {
    for (int i = 0; i < N; i++) {
        cs[i] = bt_acquire(p);
        ids[i] = bt_query_int(cs[i], bt_session_id_sql(), NULL, 0);
    }
}

static bool was_killed(int64_t id, const int64_t *killed) {
    for (int i = 0; i < N; i++)
        if (killed[i] == id)
            return true;
    return false;
}

static void kill_sessions(void) {
    char msg[512] = "";
    int n = dbt_kill_user_sessions(bt_backend, msg, sizeof msg);
    BT_CHECK(n >= N, "killing the test user's sessions: %d killed (%s)", n, msg);
}

/* After the kill, N acquires at once all work, with new sessions. */
static void check_fresh(dbpool *p, const int64_t *old_ids, const char *how) {
    dbpool_conn *cs[N];
    for (int i = 0; i < N; i++) {
        dbpool_error e;
        memset(&e, 0, sizeof e);
        int rc = dbpool_acquire(p, 5000, &cs[i], &e);
        BT_CHECK(rc == DBPOOL_OK, "%s: acquire %d after the kill failed: %s: %s", how, i + 1,
                 dbpool_errname(rc), e.message);
        dbpool_result *r = NULL;
        rc = dbpool_query(cs[i], bt_session_id_sql(), NULL, 0, &r, &e);
        BT_CHECK(rc == DBPOOL_OK, "%s: the first query on lease %d after the kill failed: %s: %s", how, i + 1,
                 dbpool_errname(rc), e.message);
        BT_CHECK(dbpool_result_next(r, &e) == 1, "%s: no row", how);
        int64_t id = dbpool_result_int64(r, 0);
        dbpool_result_free(r);
        BT_CHECK(!was_killed(id, old_ids), "%s: lease %d runs on killed session %lld", how, i + 1,
                 (long long)id);
    }
    for (int i = 0; i < N; i++)
        bt_release(cs[i]);
}

static void run_validation_case(dbpool_validation mode, const char *how) {
    dbpool_options o;
    bt_options(&o, 0, N);
    o.validation = mode;
    o.validation_window_ms = 100;
    dbpool *p = bt_open(&o, NULL);
    dbpool_conn *cs[N];
    int64_t ids[N];
    hold_all(p, cs, ids);
    for (int i = 0; i < N; i++)
        bt_release(cs[i]);
    assert_int_equal(bt_stats(p).idle, N);

    kill_sessions();
    if (mode == DBPOOL_VALIDATE_IF_IDLE)
        dbt_sleep_ms(150); /* past the window */
    dbpool_stats before = bt_stats(p);
    check_fresh(p, ids, how);
    dbpool_stats s = bt_stats(p);
    uint64_t replaced =
        s.destroyed_by[DBPOOL_CLOSE_VALIDATION] - before.destroyed_by[DBPOOL_CLOSE_VALIDATION];
    print_message("[%s] %s: %llu connections replaced by validation, %llu created\n", bt_backend, how,
                  (unsigned long long)replaced, (unsigned long long)(s.created - before.created));
    BT_CHECK(replaced == N, "%s: expected the %d killed connections to fail validation, %llu did", how, N,
             (unsigned long long)replaced);
    BT_CHECK(s.created - before.created == N, "%s: expected %d new connections, %llu were opened", how, N,
             (unsigned long long)(s.created - before.created));
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

static void test_validate_always(void **state) {
    (void)state;
    run_validation_case(DBPOOL_VALIDATE_ALWAYS, "validate always");
}

static void test_validate_if_idle(void **state) {
    (void)state;
    run_validation_case(DBPOOL_VALIDATE_IF_IDLE, "validate if idle (100 ms window)");
}

static void test_keepalive_finds_them_first(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, N, N);
    o.validation = DBPOOL_VALIDATE_NEVER;
    o.keepalive_ms = 100;
    o.maintenance_interval_ms = 50;
    dbpool *p = bt_open(&o, NULL);
    dbpool_conn *cs[N];
    int64_t ids[N];
    hold_all(p, cs, ids);
    for (int i = 0; i < N; i++)
        bt_release(cs[i]);
    dbpool_stats before = bt_stats(p);

    kill_sessions();
    /* Wait until keepalive has closed the N dead ones and refill has
     * replaced them (bounded). */
    int64_t end = dbt_now_ms() + 5000;
    dbpool_stats s = bt_stats(p);
    while (
        dbt_now_ms() < end &&
        (s.destroyed_by[DBPOOL_CLOSE_BROKEN] - before.destroyed_by[DBPOOL_CLOSE_BROKEN] < N || s.idle < N)) {
        dbt_sleep_ms(20);
        s = bt_stats(p);
    }
    print_message(
        "[%s] keepalive: %llu closed as broken, %d idle after refill\n", bt_backend,
        (unsigned long long)(s.destroyed_by[DBPOOL_CLOSE_BROKEN] - before.destroyed_by[DBPOOL_CLOSE_BROKEN]),
        s.idle);
    BT_CHECK(
        s.destroyed_by[DBPOOL_CLOSE_BROKEN] - before.destroyed_by[DBPOOL_CLOSE_BROKEN] == N,
        "keepalive should close the %d killed connections within 5 s, closed %llu", N,
        (unsigned long long)(s.destroyed_by[DBPOOL_CLOSE_BROKEN] - before.destroyed_by[DBPOOL_CLOSE_BROKEN]));
    BT_CHECK(s.idle == N, "refill should bring back %d idle connections, %d idle", N, s.idle);
    /* Validation is off: only keepalive protects these callers. */
    check_fresh(p, ids, "keepalive");
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

int main(int argc, char **argv) {
    bt_init(argc, argv);
    if (bt_is("sqlite")) {
        fprintf(stderr, "skipped: SQLite has no server sessions to kill\n");
        return DBT_SKIP;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validate_always),
        cmocka_unit_test(test_validate_if_idle),
        cmocka_unit_test(test_keepalive_finds_them_first),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
