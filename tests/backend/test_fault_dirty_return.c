/*
 * test_fault_dirty_return.c — connections given back dirty:
 *  - inside a transaction with uncommitted writes;
 *  - inside a transaction with an error pending (a failed statement);
 *  - after a query whose result was only partly read (the result is freed
 *    first, as the API requires: "The result must be freed before the lease
 *    is released"; releasing with a result still open is misuse and is not
 *    tested here);
 * each is rolled back or discarded, and the next caller sees a clean
 * session (not in a transaction: its own writes are visible at once to
 * another connection) and none of the uncommitted data. All backends.
 */
#include "backend_common.h"

#define TABLE "fault_dirty_return"

static dbpool *open_pool(void) {
    dbpool_options o;
    bt_options(&o, 0, 2);
    dbpool *p = bt_open(&o, NULL);
    dbpool_conn *c = bt_acquire(p);
    bt_exec(c, "DROP TABLE IF EXISTS " TABLE);
    bt_exec(c, "CREATE TABLE " TABLE " (id INTEGER PRIMARY KEY, v VARCHAR(40))");
    bt_release(c);
    return p;
}

static void insert(dbpool_conn *c, int64_t id) {
    dbpool_param prm[2] = {dbpool_param_int64(id), dbpool_param_text("uncommitted?")};
    bt_exec_params(c, "INSERT INTO " TABLE " (id, v) VALUES (?, ?)", prm, 2);
}

static int64_t count_id(dbpool_conn *c, int64_t id) {
    dbpool_param prm = dbpool_param_int64(id);
    return bt_query_int(c, "SELECT COUNT(*) FROM " TABLE " WHERE id = ?", &prm, 1);
}

/* The next caller (the same connection if it was kept: LIFO) sees a clean
 * session: none of the uncommitted rows, and a write of its own is
 * autocommitted (another connection sees it at once). */
static void check_clean(dbpool *p, const int64_t *gone, int ngone, int64_t probe_id, const char *what) {
    dbpool_conn *next = bt_acquire(p);
    for (int i = 0; i < ngone; i++)
        BT_CHECK(count_id(next, gone[i]) == 0, "%s: the next caller sees uncommitted row %lld", what,
                 (long long)gone[i]);
    insert(next, probe_id);
    dbpool_conn *other = bt_acquire(p);
    BT_CHECK(
        count_id(other, probe_id) == 1,
        "%s: the next caller's write is not visible to another connection: its session was left inside a "
        "transaction",
        what);
    bt_release(other);
    bt_release(next);
}

static void report(dbpool *p, const dbpool_stats *before, const char *what) {
    dbpool_stats s = bt_stats(p);
    uint64_t rolled = s.rollbacks - before->rollbacks;
    uint64_t closed = s.destroyed - before->destroyed;
    print_message("[%s] %s: rolled back %llu, closed %llu\n", bt_backend, what, (unsigned long long)rolled,
                  (unsigned long long)closed);
    BT_CHECK(rolled + closed >= 1, "%s: the dirty connection was neither rolled back nor closed", what);
}

static void test_returned_in_transaction(void **state) {
    (void)state;
    dbpool *p = open_pool();
    dbpool_stats before = bt_stats(p);
    dbpool_conn *c = bt_acquire(p);
    bt_exec(c, "BEGIN");
    insert(c, 1);
    insert(c, 2);
    bt_release(c);
    report(p, &before, "returned inside a transaction");
    int64_t gone[] = {1, 2};
    check_clean(p, gone, 2, 100, "returned inside a transaction");
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

static void test_returned_with_error_pending(void **state) {
    (void)state;
    dbpool *p = open_pool();
    dbpool_stats before = bt_stats(p);
    dbpool_conn *c = bt_acquire(p);
    bt_exec(c, "BEGIN");
    insert(c, 3);
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int rc = dbpool_exec(c, "SELECT * FROM fault_no_such_table", NULL, 0, NULL, &e);
    BT_CHECK(rc != DBPOOL_OK, "a query on a missing table succeeded");
    /* A duplicate key too: on PostgreSQL the transaction is now aborted,
     * on the others it is still open with row 3 in it. */
    memset(&e, 0, sizeof e);
    dbpool_param dup[2] = {dbpool_param_int64(3), dbpool_param_text("dup")};
    (void)dbpool_exec(c, "INSERT INTO " TABLE " (id, v) VALUES (?, ?)", dup, 2, NULL, &e);
    bt_release(c);
    report(p, &before, "returned with an error pending");
    int64_t gone[] = {3};
    check_clean(p, gone, 1, 101, "returned with an error pending");
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

static void partial_read(dbpool_conn *c) {
    dbpool_result *r = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    BT_OK(dbpool_query(c, "SELECT id, v FROM " TABLE " ORDER BY id", NULL, 0, &r, &e), &e, "query");
    BT_CHECK(dbpool_result_next(r, &e) == 1, "expected a first row");
    dbpool_result_free(r); /* the other rows are never read */
}

static void test_returned_with_unread_result(void **state) {
    (void)state;
    dbpool *p = open_pool();
    dbpool_conn *c = bt_acquire(p);
    for (int64_t id = 10; id < 30; id++)
        insert(c, id);
    bt_release(c);

    /* Outside a transaction. */
    dbpool_stats before = bt_stats(p);
    c = bt_acquire(p);
    partial_read(c);
    bt_release(c);
    dbpool_stats s = bt_stats(p);
    print_message("[%s] unread result, no transaction: rolled back %llu, closed %llu\n", bt_backend,
                  (unsigned long long)(s.rollbacks - before.rollbacks),
                  (unsigned long long)(s.destroyed - before.destroyed));
    check_clean(p, NULL, 0, 102, "returned after a partly read result");
    c = bt_acquire(p);
    BT_CHECK(bt_query_int(c, "SELECT COUNT(*) FROM " TABLE " WHERE id >= 10 AND id < 30", NULL, 0) == 20,
             "the committed rows should all be there");
    bt_release(c);

    /* Inside a transaction with a write. */
    before = bt_stats(p);
    c = bt_acquire(p);
    bt_exec(c, "BEGIN");
    insert(c, 4);
    partial_read(c);
    bt_release(c);
    report(p, &before, "unread result inside a transaction");
    int64_t gone[] = {4};
    check_clean(p, gone, 1, 103, "returned after a partly read result inside a transaction");
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

/* The same connection again and again: a dirty return never leaks into
 * the next lease even when only one connection exists. */
static void test_single_connection_cycle(void **state) {
    (void)state;
    dbpool_options o;
    bt_options(&o, 0, 1);
    dbpool *p = bt_open(&o, NULL);
    dbpool_conn *c = bt_acquire(p);
    bt_exec(c, "DROP TABLE IF EXISTS " TABLE);
    bt_exec(c, "CREATE TABLE " TABLE " (id INTEGER PRIMARY KEY, v VARCHAR(40))");
    bt_release(c);
    for (int64_t i = 0; i < 5; i++) {
        c = bt_acquire(p);
        BT_CHECK(bt_query_int(c, "SELECT COUNT(*) FROM " TABLE, NULL, 0) == 0,
                 "round %lld: uncommitted rows seen", (long long)i);
        bt_exec(c, "BEGIN");
        insert(c, 200 + i);
        if (i % 2)
            (void)dbpool_exec(c, "SELECT * FROM fault_no_such_table", NULL, 0, NULL, NULL);
        bt_release(c);
    }
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

int main(int argc, char **argv) {
    bt_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_returned_in_transaction),
        cmocka_unit_test(test_returned_with_error_pending),
        cmocka_unit_test(test_returned_with_unread_result),
        cmocka_unit_test(test_single_connection_cycle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
