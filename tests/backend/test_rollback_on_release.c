/*
 * test_rollback_on_release.c — a lease released inside a transaction is
 * rolled back: the next caller never sees another's uncommitted work and
 * starts with a clean session, even after a failed statement.
 */
#include "backend_common.h"

#define TABLE "bt_rollback_on_release"

static dbpool *open_pool_with_table(void) {
    dbpool_options o;
    /* One connection: the next lease is the very session that was left
     * inside a transaction. */
    bt_options(&o, 0, 1);
    dbpool *p = bt_open(&o, NULL);
    dbpool_conn *c = bt_acquire(p);
    bt_exec(c, "DROP TABLE IF EXISTS " TABLE);
    bt_exec(c, "CREATE TABLE IF NOT EXISTS " TABLE " (id INTEGER NOT NULL, label TEXT)");
    bt_release(c);
    return p;
}

static int64_t count_rows(dbpool_conn *c) { return bt_query_int(c, "SELECT COUNT(*) FROM " TABLE, NULL, 0); }

static void insert_row(dbpool_conn *c, int64_t id, const char *label) {
    dbpool_param params[2] = {dbpool_param_int64(id), dbpool_param_text(label)};
    bt_exec_params(c, "INSERT INTO " TABLE " (id, label) VALUES (?, ?)", params, 2);
}

static void drop_table(dbpool *p) {
    dbpool_conn *c = bt_acquire(p);
    bt_exec(c, "DROP TABLE IF EXISTS " TABLE);
    bt_release(c);
}

static void test_uncommitted_work_is_rolled_back(void **state) {
    (void)state;
    dbpool *p = open_pool_with_table();
    dbpool_stats before = bt_stats(p);

    dbpool_conn *c = bt_acquire(p);
    void *native = dbpool_conn_native(c);
    bt_exec(c, "BEGIN");
    insert_row(c, 1, "uncommitted");
    BT_CHECK(count_rows(c) == 1, "the inserting session should see its own row");
    bt_release(c); /* no COMMIT */

    dbpool_stats s = bt_stats(p);
    BT_CHECK(s.rollbacks == before.rollbacks + 1, "stats.rollbacks should go from %llu to %llu, is %llu",
             (unsigned long long)before.rollbacks, (unsigned long long)before.rollbacks + 1,
             (unsigned long long)s.rollbacks);
    BT_CHECK(s.destroyed == before.destroyed && s.idle == 1,
             "a connection rolled back cleanly is pooled again (destroyed %llu -> %llu, idle %d)",
             (unsigned long long)before.destroyed, (unsigned long long)s.destroyed, s.idle);

    c = bt_acquire(p);
    BT_CHECK(dbpool_conn_native(c) == native, "pool of 1: the next lease is the same session");
    int64_t n = count_rows(c);
    BT_CHECK(n == 0, "the next lease sees %lld uncommitted row(s) of the previous one", (long long)n);
    /* A new transaction can start: the session is not still inside one. */
    bt_exec(c, "BEGIN");
    insert_row(c, 2, "committed");
    bt_exec(c, "COMMIT");
    bt_release(c);

    c = bt_acquire(p);
    n = count_rows(c);
    BT_CHECK(n == 1, "after a committed insert the table should hold 1 row, holds %lld", (long long)n);
    bt_release(c);
    s = bt_stats(p);
    BT_CHECK(s.created == before.created, "no new connection should have been opened (%llu -> %llu)",
             (unsigned long long)before.created, (unsigned long long)s.created);
    drop_table(p);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_failed_statement_in_transaction(void **state) {
    (void)state;
    dbpool *p = open_pool_with_table();
    dbpool_stats before = bt_stats(p);

    dbpool_conn *c = bt_acquire(p);
    bt_exec(c, "BEGIN");
    insert_row(c, 1, "before the error");
    dbpool_error e;
    memset(&e, 0, sizeof e);
    dbpool_param one = dbpool_param_int64(1);
    int rc = dbpool_exec(c, "INSERT INTO bt_rollback_missing_table (id) VALUES (?)", &one, 1, NULL, &e);
    BT_CHECK(rc != DBPOOL_OK, "inserting into a missing table should fail");
    BT_CHECK(e.code == rc && e.message[0], "the error struct should carry the code and a message");
    print_message("[%s] expected error: %s: %s\n", bt_backend, dbpool_errname(rc), e.message);
    bt_release(c);

    dbpool_stats s = bt_stats(p);
    BT_CHECK(s.rollbacks == before.rollbacks + 1, "stats.rollbacks should go from %llu to %llu, is %llu",
             (unsigned long long)before.rollbacks, (unsigned long long)before.rollbacks + 1,
             (unsigned long long)s.rollbacks);
    BT_CHECK(s.destroyed_by[DBPOOL_CLOSE_BROKEN] == before.destroyed_by[DBPOOL_CLOSE_BROKEN],
             "a failed statement does not make the connection broken");

    c = bt_acquire(p);
    int64_t n = count_rows(c);
    BT_CHECK(n == 0, "the next lease sees %lld row(s) of the failed transaction", (long long)n);
    bt_exec(c, "BEGIN");
    insert_row(c, 3, "clean");
    bt_exec(c, "COMMIT");
    n = count_rows(c);
    BT_CHECK(n == 1, "the next lease's own transaction should commit 1 row, table holds %lld", (long long)n);
    bt_release(c);
    drop_table(p);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_other_leases_never_see_uncommitted_rows(void **state) {
    (void)state;
    dbpool_options o;
    bt_options(&o, 0, 2);
    dbpool *p = bt_open(&o, NULL);
    dbpool_conn *c = bt_acquire(p);
    bt_exec(c, "DROP TABLE IF EXISTS " TABLE);
    bt_exec(c, "CREATE TABLE IF NOT EXISTS " TABLE " (id INTEGER NOT NULL, label TEXT)");
    bt_release(c);

    /* Leave several transactions open on release, on whichever connection
     * comes; every later lease must see an empty table. */
    for (int i = 0; i < 5; i++) {
        dbpool_conn *a = bt_acquire(p);
        dbpool_conn *b = bt_acquire(p);
        bt_exec(a, "BEGIN");
        insert_row(a, i, "a");
        bt_release(a);
        int64_t n = count_rows(b);
        BT_CHECK(n == 0, "round %d: another lease sees %lld row(s)", i, (long long)n);
        bt_release(b);
    }
    c = bt_acquire(p);
    BT_CHECK(count_rows(c) == 0, "no uncommitted row may survive its lease");
    bt_exec(c, "DROP TABLE IF EXISTS " TABLE);
    bt_release(c);
    assert_int_equal(dbpool_close(p), 0);
}

int main(int argc, char **argv) {
    bt_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uncommitted_work_is_rolled_back),
        cmocka_unit_test(test_failed_statement_in_transaction),
        cmocka_unit_test(test_other_leases_never_see_uncommitted_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
