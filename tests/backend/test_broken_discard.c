/*
 * test_broken_discard.c — dbpool_discard closes a connection instead of
 * pooling it; misuse of a lease (double release, NULL, release after
 * discard) is an error code, never a crash; and on the server backends a
 * connection killed behind the pool's back is never handed out again.
 */
#include "backend_common.h"

static void test_discard_closes_connection(void **state) {
    (void)state;
    dbpool_options o;
    bt_options(&o, 0, 2);
    dbpool *p = bt_open(&o, NULL);
    dbpool_stats before = bt_stats(p);
    BT_CHECK(before.created == 1 && before.idle == 1,
             "open should leave one idle connection (created %llu, idle %d)",
             (unsigned long long)before.created, before.idle);

    dbpool_conn *c = bt_acquire(p);
    BT_RC(dbpool_discard(c), DBPOOL_OK, "dbpool_discard");
    dbpool_stats s = bt_stats(p);
    BT_CHECK(s.destroyed_by[DBPOOL_CLOSE_DISCARDED] == 1, "destroyed_by[discarded] is %llu, expected 1",
             (unsigned long long)s.destroyed_by[DBPOOL_CLOSE_DISCARDED]);
    BT_CHECK(s.destroyed == 1, "destroyed is %llu, expected 1", (unsigned long long)s.destroyed);
    BT_CHECK(s.idle == 0 && s.in_use == 0 && s.total == 0, "after discard: idle %d in_use %d total %d",
             s.idle, s.in_use, s.total);

    c = bt_acquire(p);
    assert_int_equal(bt_query_int(c, "SELECT 1", NULL, 0), 1);
    s = bt_stats(p);
    BT_CHECK(s.created == 2, "the acquire after a discard should open a new connection (created %llu)",
             (unsigned long long)s.created);
    bt_release(c);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

static void test_double_release_is_misuse(void **state) {
    (void)state;
    dbpool_options o;
    bt_options(&o, 0, 2);
    dbpool *p = bt_open(&o, NULL);

    dbpool_conn *c = bt_acquire(p);
    bt_release(c);
    dbpool_stats before = bt_stats(p);
    BT_RC(dbpool_release(c), DBPOOL_EMISUSE, "second dbpool_release of the same lease");
    dbpool_stats s = bt_stats(p);
    BT_CHECK(s.idle == before.idle && s.in_use == before.in_use && s.destroyed == before.destroyed,
             "a refused release must touch nothing (idle %d->%d, in_use %d->%d)", before.idle, s.idle,
             before.in_use, s.in_use);

    /* The connection is on the idle list once, not twice: two leases held
     * together are two different connections. */
    dbpool_conn *a = bt_acquire(p), *b = bt_acquire(p);
    BT_CHECK(dbpool_conn_native(a) != dbpool_conn_native(b),
             "after a double release the same connection was handed out twice");
    s = bt_stats(p);
    BT_CHECK(s.in_use == 2 && s.idle == 0 && s.total == 2, "in_use %d idle %d total %d", s.in_use, s.idle,
             s.total);
    bt_release(a);
    bt_release(b);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

static void test_null_and_stale_leases_are_misuse(void **state) {
    (void)state;
    BT_RC(dbpool_release(NULL), DBPOOL_EMISUSE, "dbpool_release(NULL)");
    BT_RC(dbpool_discard(NULL), DBPOOL_EMISUSE, "dbpool_discard(NULL)");

    dbpool_options o;
    bt_options(&o, 0, 2);
    dbpool *p = bt_open(&o, NULL);

    /* Discard after release: the connection is idle and must stay so. */
    dbpool_conn *c = bt_acquire(p);
    bt_release(c);
    dbpool_stats before = bt_stats(p);
    BT_RC(dbpool_discard(c), DBPOOL_EMISUSE, "dbpool_discard after dbpool_release");
    dbpool_stats s = bt_stats(p);
    BT_CHECK(s.idle == before.idle && s.destroyed == before.destroyed,
             "the refused discard closed something (idle %d->%d, destroyed %llu->%llu)", before.idle, s.idle,
             (unsigned long long)before.destroyed, (unsigned long long)s.destroyed);
    BT_CHECK(dbpool_conn_native(c) == NULL, "dbpool_conn_native of a released lease should be NULL");

    /* Release and discard after discard. */
    c = bt_acquire(p);
    BT_RC(dbpool_discard(c), DBPOOL_OK, "dbpool_discard");
    BT_RC(dbpool_release(c), DBPOOL_EMISUSE, "dbpool_release after dbpool_discard");
    BT_RC(dbpool_discard(c), DBPOOL_EMISUSE, "dbpool_discard twice");

    c = bt_acquire(p);
    assert_int_equal(bt_query_int(c, "SELECT 1", NULL, 0), 1);
    bt_release(c);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

/* The server's id for this session, and SQL that kills a session by id. */
static bool kill_sql(const char **id_sql, const char **kill) {
    if (bt_is("pg")) {
        *id_sql = "SELECT pg_backend_pid()";
        /* The second argument waits until the backend is gone (PG 14+). */
        *kill = "SELECT pg_terminate_backend(CAST(? AS INTEGER), 5000)";
        return true;
    }
    if (bt_is("mysql")) {
        *id_sql = "SELECT CONNECTION_ID()";
        *kill = "KILL ?";
        return true;
    }
    return false; /* SQLite: nothing can close a connection behind the pool's back */
}

static void kill_session(dbpool_conn *killer, int64_t id) {
    const char *id_sql = NULL, *kill = NULL;
    assert_true(kill_sql(&id_sql, &kill));
    dbpool_param p = dbpool_param_int64(id);
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int rc = dbpool_exec(killer, kill, &p, 1, NULL, &e);
    if (rc != DBPOOL_OK)
        fail_msg("[%s] killing session %lld failed: %s: %s", bt_backend, (long long)id, dbpool_errname(rc),
                 e.message);
    dbt_sleep_ms(200); /* let the server finish closing the session */
}

static void test_killed_leased_connection_is_discarded(void **state) {
    (void)state;
    const char *id_sql = NULL, *kill = NULL;
    if (!kill_sql(&id_sql, &kill))
        skip();
    dbpool_options o;
    bt_options(&o, 0, 2);
    dbpool *p = bt_open(&o, NULL);
    dbpool_conn *victim = bt_acquire(p), *killer = bt_acquire(p);
    int64_t id = bt_query_int(victim, id_sql, NULL, 0);
    kill_session(killer, id);
    bt_release(killer);

    dbpool_error e;
    memset(&e, 0, sizeof e);
    int rc = dbpool_exec(victim, "SELECT 1", NULL, 0, NULL, &e);
    BT_CHECK(rc != DBPOOL_OK, "a query on a killed session should fail");
    print_message("[%s] query on the killed session: %s: %s\n", bt_backend, dbpool_errname(rc), e.message);
    dbpool_stats before = bt_stats(p);
    BT_RC(dbpool_release(victim), DBPOOL_OK, "releasing the killed connection");
    dbpool_stats s = bt_stats(p);
    uint64_t closed = s.destroyed - before.destroyed;
    BT_CHECK(closed == 1, "the killed connection should be closed on release, destroyed grew by %llu",
             (unsigned long long)closed);
    BT_CHECK(s.destroyed_by[DBPOOL_CLOSE_BROKEN] + s.destroyed_by[DBPOOL_CLOSE_RESET_FAILED] ==
                 before.destroyed_by[DBPOOL_CLOSE_BROKEN] + before.destroyed_by[DBPOOL_CLOSE_RESET_FAILED] +
                     1,
             "the close should be counted as broken (or reset failed)");

    /* Every connection handed out from now on works. */
    for (int i = 0; i < 3; i++) {
        dbpool_conn *c = bt_acquire(p);
        assert_int_equal(bt_query_int(c, "SELECT 1", NULL, 0), 1);
        bt_release(c);
    }
    assert_int_equal(dbpool_close(p), 0);
}

static void test_killed_idle_connection_fails_validation(void **state) {
    (void)state;
    const char *id_sql = NULL, *kill = NULL;
    if (!kill_sql(&id_sql, &kill))
        skip();
    dbpool_options o;
    bt_options(&o, 0, 2);
    o.validation = DBPOOL_VALIDATE_ALWAYS;
    dbpool *p = bt_open(&o, NULL);
    dbpool_conn *victim = bt_acquire(p), *killer = bt_acquire(p);
    int64_t id = bt_query_int(victim, id_sql, NULL, 0);
    bt_release(victim); /* idle, and the only idle one */
    kill_session(killer, id);

    dbpool_stats before = bt_stats(p);
    dbpool_conn *c = bt_acquire(p);
    int64_t id2 = bt_query_int(c, id_sql, NULL, 0);
    BT_CHECK(id2 != id, "the killed session %lld was handed out again", (long long)id);
    dbpool_stats s = bt_stats(p);
    BT_CHECK(
        s.destroyed_by[DBPOOL_CLOSE_VALIDATION] == before.destroyed_by[DBPOOL_CLOSE_VALIDATION] + 1,
        "the killed idle connection should be closed by validation (destroyed_by[validation] %llu -> %llu)",
        (unsigned long long)before.destroyed_by[DBPOOL_CLOSE_VALIDATION],
        (unsigned long long)s.destroyed_by[DBPOOL_CLOSE_VALIDATION]);
    BT_CHECK(s.validation_failures == before.validation_failures + 1, "validation_failures %llu -> %llu",
             (unsigned long long)before.validation_failures, (unsigned long long)s.validation_failures);
    bt_release(c);
    bt_release(killer);
    assert_int_equal(dbpool_close(p), 0);
}

int main(int argc, char **argv) {
    bt_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_discard_closes_connection),
        cmocka_unit_test(test_double_release_is_misuse),
        cmocka_unit_test(test_null_and_stale_leases_are_misuse),
        cmocka_unit_test(test_killed_leased_connection_is_discarded),
        cmocka_unit_test(test_killed_idle_connection_fails_validation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
