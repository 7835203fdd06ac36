/*
 * test_shared_memory_db.c — `sqlite::memory:` is one database shared by
 * every connection of the pool, and it lives as long as the pool: closing
 * every connection does not lose it. SQLite only.
 */
#include "backend_common.h"

static dbpool *open_memory_pool(int max) {
    dbpool_options o;
    bt_options(&o, 0, max);
    dbpool *p = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    BT_OK(dbpool_open(&p, "sqlite::memory:", &o, &e), &e, "dbpool_open(sqlite::memory:)");
    assert_non_null(p);
    return p;
}

static int64_t count(dbpool_conn *c) { return bt_query_int(c, "SELECT COUNT(*) FROM shared_t", NULL, 0); }

static void test_memory_db_shared_by_all_connections(void **state) {
    (void)state;
    dbpool *p = open_memory_pool(3);
    dbpool_conn *c[3];
    for (int i = 0; i < 3; i++)
        c[i] = bt_acquire(p);
    BT_CHECK(dbpool_conn_native(c[0]) != dbpool_conn_native(c[1]) &&
                 dbpool_conn_native(c[1]) != dbpool_conn_native(c[2]) &&
                 dbpool_conn_native(c[0]) != dbpool_conn_native(c[2]),
             "three leases held together must be three connections");

    bt_exec(c[0], "CREATE TABLE shared_t (id INTEGER PRIMARY KEY, label TEXT)");
    dbpool_param row[2] = {dbpool_param_int64(1), dbpool_param_text("one")};
    bt_exec_params(c[0], "INSERT INTO shared_t (id, label) VALUES (?, ?)", row, 2);
    for (int i = 1; i < 3; i++) {
        int64_t n = count(c[i]);
        BT_CHECK(n == 1, "connection %d sees %lld rows of the table made on connection 0", i, (long long)n);
    }
    row[0] = dbpool_param_int64(2);
    row[1] = dbpool_param_text("two");
    bt_exec_params(c[2], "INSERT INTO shared_t (id, label) VALUES (?, ?)", row, 2);
    BT_CHECK(count(c[0]) == 2, "connection 0 should see the row inserted by connection 2");
    for (int i = 0; i < 3; i++)
        bt_release(c[i]);

    /* Close every connection: the database must survive. */
    int n = dbpool_shrink(p, 0);
    BT_CHECK(n == 3, "shrink(0) closed %d of 3 connections", n);
    dbpool_stats s = bt_stats(p);
    BT_CHECK(s.total == 0, "no connection should be left, total %d", s.total);

    dbpool_conn *d = bt_acquire(p);
    s = bt_stats(p);
    BT_CHECK(s.created == 4, "a fresh connection should have been opened (created %llu)",
             (unsigned long long)s.created);
    int64_t rows = count(d);
    BT_CHECK(rows == 2, "after every connection was closed the database holds %lld rows, expected 2",
             (long long)rows);
    bt_release(d);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_each_pool_has_its_own_memory_db(void **state) {
    (void)state;
    dbpool *p = open_memory_pool(2);
    dbpool_conn *c = bt_acquire(p);
    bt_exec(c, "CREATE TABLE shared_t (id INTEGER PRIMARY KEY, label TEXT)");
    bt_release(c);

    dbpool *q = open_memory_pool(2);
    dbpool_conn *d = bt_acquire(q);
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int rc = dbpool_exec(d, "SELECT COUNT(*) FROM shared_t", NULL, 0, NULL, &e);
    BT_CHECK(rc != DBPOOL_OK, "a second pool on sqlite::memory: should not see the first pool's table");
    bt_release(d);
    assert_int_equal(dbpool_close(q), 0);
    assert_int_equal(dbpool_close(p), 0);

    /* A pool opened after the first one closed starts empty. */
    p = open_memory_pool(1);
    c = bt_acquire(p);
    memset(&e, 0, sizeof e);
    rc = dbpool_exec(c, "SELECT COUNT(*) FROM shared_t", NULL, 0, NULL, &e);
    BT_CHECK(rc != DBPOOL_OK, "the memory database should die with its pool");
    bt_release(c);
    assert_int_equal(dbpool_close(p), 0);
}

int main(int argc, char **argv) {
    const char *backend = dbt_backend_arg(argc, argv);
    if (strcmp(backend, "sqlite") != 0) {
        fprintf(stderr, "skipped: sqlite::memory: is a SQLite feature (backend %s)\n", backend);
        return DBT_SKIP;
    }
    bt_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_memory_db_shared_by_all_connections),
        cmocka_unit_test(test_each_pool_has_its_own_memory_db),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
