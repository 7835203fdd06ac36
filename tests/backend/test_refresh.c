/*
 * test_refresh.c — dbpool_refresh against a real database: every session
 * the pool had is replaced, none is cut off under its holder, and the
 * server sees the old sessions go.
 *
 * - An idle session is closed at once; the server no longer lists it.
 * - A lease inside a transaction when the refresh comes keeps its
 *   session: its statements and its COMMIT work, and the committed row is
 *   there. Its release closes the session.
 * - min_size is refilled at once with new sessions, and no old one is
 *   handed out again.
 *
 * SQLite has no session id: there the counts are checked, and the lease's
 * transaction.
 */
#include "backend_common.h"

static const char *session_count_sql(void) {
    if (bt_is("pg"))
        return "SELECT count(*) FROM pg_stat_activity WHERE pid = ?";
    return "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ?";
}

static void test_refresh_replaces_every_session(void **state) {
    (void)state;
    dbpool_options o;
    bt_options(&o, 2, 4);
    o.maintenance_interval_ms = 3600 * 1000; /* the refill must not wait for a pass */
    o.thread_cache = false;
    dbpool *p = bt_open(&o, NULL);

    dbpool_conn *setup = bt_acquire(p);
    bt_exec(setup, "DROP TABLE IF EXISTS refresh_t");
    bt_exec(setup, "CREATE TABLE refresh_t (id INTEGER PRIMARY KEY)");
    bt_release(setup);

    dbpool_conn *idle = bt_acquire(p), *held = bt_acquire(p);
    int64_t idle_id = bt_query_int(idle, bt_session_id_sql(), NULL, 0);
    int64_t held_id = bt_query_int(held, bt_session_id_sql(), NULL, 0);
    bt_release(idle);
    bt_exec(held, "BEGIN");
    bt_exec(held, "INSERT INTO refresh_t (id) VALUES (1)");
    dbpool_stats before = bt_stats(p);

    int closed = dbpool_refresh(p);
    BT_CHECK(closed == before.idle, "dbpool_refresh closed %d at once, %d were idle", closed, before.idle);
    dbpool_stats s = bt_stats(p);
    BT_CHECK(s.destroyed_by[DBPOOL_CLOSE_REFRESHED] == (uint64_t)closed,
             "%llu closed as refreshed, expected %d",
             (unsigned long long)s.destroyed_by[DBPOOL_CLOSE_REFRESHED], closed);
    if (!bt_is("sqlite"))
        dbt_wait_count_zero(dbt_backend_url(bt_backend), session_count_sql(), idle_id, 10000);

    /* The lease is its holder's until released: the transaction goes on. */
    bt_exec(held, "INSERT INTO refresh_t (id) VALUES (2)");
    bt_exec(held, "COMMIT");
    BT_CHECK(bt_query_int(held, bt_session_id_sql(), NULL, 0) == held_id, "the lease's session changed");
    bt_release(held);
    s = bt_stats(p);
    BT_CHECK(s.destroyed_by[DBPOOL_CLOSE_REFRESHED] == (uint64_t)closed + 1,
             "after the lease's release: %llu closed as refreshed, expected %d",
             (unsigned long long)s.destroyed_by[DBPOOL_CLOSE_REFRESHED], closed + 1);
    if (!bt_is("sqlite"))
        dbt_wait_count_zero(dbt_backend_url(bt_backend), session_count_sql(), held_id, 10000);

    /* New sessions only, min_size among them. */
    dbpool_conn *c[4];
    for (int i = 0; i < 4; i++) {
        c[i] = bt_acquire(p);
        int64_t id = bt_query_int(c[i], bt_session_id_sql(), NULL, 0);
        if (!bt_is("sqlite"))
            BT_CHECK(id != idle_id && id != held_id, "session %lld, from before the refresh, handed out",
                     (long long)id);
    }
    BT_CHECK(bt_query_int(c[0], "SELECT COUNT(*) FROM refresh_t", NULL, 0) == 2,
             "the rows the lease committed across the refresh are not both there");
    bt_exec(c[0], "DROP TABLE refresh_t");
    for (int i = 0; i < 4; i++)
        bt_release(c[i]);
    s = bt_stats(p);
    BT_CHECK(s.destroyed_by[DBPOOL_CLOSE_REFRESHED] == (uint64_t)closed + 1,
             "new connections were closed as refreshed (%llu)",
             (unsigned long long)s.destroyed_by[DBPOOL_CLOSE_REFRESHED]);
    dbpool_close(p);
}

int main(int argc, char **argv) {
    bt_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refresh_replaces_every_session),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
