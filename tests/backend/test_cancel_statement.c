/* A thread cancelled (pthread_cancel, deferred) while its statement runs on
 * a server (pg_sleep, SLEEP), or on SQLite while it waits for a lock
 * another lease holds, and whose cleanup handler releases its lease, as an
 * application that cleans up on cancel does. The cancel must not cut the
 * statement off half-way: the statement ends (it is bounded by the pool's
 * statement_timeout_ms, or by busy_timeout), the thread is cancelled when
 * the call has returned, and the connection the pool hands out next is not
 * in the middle of the cancelled statement (docs/threading.md,
 * "Cancellation"). On SQLite the lock wait sleeps in dbpool's VFS, which
 * sleeps with cancellation off (sqlite_vfs.c); the core does not disable
 * it around SQLite's statements. */
#include "backend_common.h"

#include <pthread.h>
#include <time.h>

typedef struct canceller {
    dbpool *p;
    const char *sql;
    volatile int stage; /* 1: the statement is about to run */
    int rc;
    bool returned;
} canceller;

static void release_on_cancel(void *arg) { dbpool_release(arg); }

static void *statement_main(void *arg) {
    canceller *a = arg;
    dbpool_conn *c = NULL;
    dbpool_error e;
    if (dbpool_acquire(a->p, 5000, &c, &e) != DBPOOL_OK) {
        a->rc = -1000;
        return NULL;
    }
    pthread_cleanup_push(release_on_cancel, c);
    __atomic_store_n(&a->stage, 1, __ATOMIC_SEQ_CST);
    a->rc = dbpool_exec(c, a->sql, NULL, 0, NULL, &e);
    a->returned = true;
    pthread_testcancel();
    pthread_cleanup_pop(1);
    return NULL;
}

static void test_cancel_during_statement(void **state) {
    (void)state;
    dbpool_options o;
    bt_options(&o, 1, 1);
    o.thread_cache = false;
    dbpool *p = bt_open(&o, NULL);
    canceller a = {.p = p, .sql = bt_is("pg") ? "SELECT pg_sleep(1.5)" : "SELECT SLEEP(1.5)", .rc = -999};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, statement_main, &a), 0);
    int64_t give_up = dbt_now_ms() + 5000;
    while (__atomic_load_n(&a.stage, __ATOMIC_SEQ_CST) == 0 && dbt_now_ms() < give_up)
        dbt_sleep_ms(5);
    BT_CHECK(a.stage == 1, "the statement thread did not start");
    /* Cancel once the server runs the statement (seen from another pool). */
    dbpool_options ao;
    bt_options(&ao, 1, 1);
    dbpool *admin = bt_open(&ao, NULL);
    dbpool_conn *ac = bt_acquire(admin);
    const char *running =
        bt_is("pg")
            ? "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE "
              "'SELECT pg_sleep(1.5)%'"
            : "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP(1.5)%'";
    while (bt_query_int(ac, running, NULL, 0) == 0 && dbt_now_ms() < give_up)
        dbt_sleep_ms(10);
    BT_CHECK(dbt_now_ms() < give_up, "the server never ran the statement");
    bt_release(ac);
    assert_int_equal(dbpool_close(admin), 0);
    assert_int_equal(pthread_cancel(t), 0);
    void *ret = NULL;
    if (!dbt_join_within(t, 10000, &ret))
        fail_msg("[%s] a thread cancelled in dbpool_exec did not end", bt_backend);
    BT_CHECK(ret == PTHREAD_CANCELED, "the thread was not cancelled");
    /* The statement was not cut off: it ran to its end and said so. */
    BT_CHECK(a.returned, "the cancel ended dbpool_exec half-way through its statement");
    BT_CHECK(a.rc == DBPOOL_OK, "the cancelled thread's statement failed: %s", dbpool_errname(a.rc));

    /* The next lease gets a connection that answers its own statement. */
    dbpool_stats s = bt_stats(p);
    BT_CHECK(s.in_use == 0, "%d connections still in use after the cancelled thread's release", s.in_use);
    dbpool_conn *c = bt_acquire(p);
    int64_t t0 = dbt_now_ms();
    BT_CHECK(bt_query_int(c, "SELECT 7", NULL, 0) == 7, "the next lease's statement got another answer");
    int64_t took = dbt_now_ms() - t0;
    BT_CHECK(took < 1000, "the next lease's statement took %lld ms (waited for the cancelled one)",
             (long long)took);
    bt_release(c);
    assert_int_equal(dbpool_close(p), 0);
}

/* SQLite: the statement waits in SQLite's busy handler (the VFS's sleep)
 * for the write lock another lease holds, and is cancelled there. */
static void cancel_during_sqlite_lock_wait(dbpool *p) {
    dbpool_conn *holder = bt_acquire(p);
    bt_exec(holder, "CREATE TABLE IF NOT EXISTS cancel_t (v INTEGER)");
    bt_exec(holder, "DELETE FROM cancel_t");
    bt_exec(holder, "BEGIN IMMEDIATE");
    canceller a = {.p = p, .sql = "INSERT INTO cancel_t VALUES (1)", .rc = -999};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, statement_main, &a), 0);
    int64_t give_up = dbt_now_ms() + 5000;
    while (__atomic_load_n(&a.stage, __ATOMIC_SEQ_CST) == 0 && dbt_now_ms() < give_up)
        dbt_sleep_ms(5);
    BT_CHECK(a.stage == 1, "the statement thread did not start");
    dbt_sleep_ms(150); /* in the busy handler's sleeps by now (busy_timeout 5000 ms) */
    BT_CHECK(!a.returned, "the INSERT did not wait for the lock (rc %d)", a.rc);
    assert_int_equal(pthread_cancel(t), 0);
    dbt_sleep_ms(200);
    bt_exec(holder, "COMMIT"); /* the waiting INSERT gets the lock now */
    void *ret = NULL;
    if (!dbt_join_within(t, 10000, &ret))
        fail_msg("[%s] a thread cancelled in dbpool_exec did not end", bt_backend);
    BT_CHECK(ret == PTHREAD_CANCELED, "the thread was not cancelled");
    BT_CHECK(a.returned, "the cancel ended dbpool_exec half-way through its lock wait");
    BT_CHECK(a.rc == DBPOOL_OK, "the cancelled thread's INSERT failed: %s", dbpool_errname(a.rc));
    BT_CHECK(bt_query_int(holder, "SELECT count(*) FROM cancel_t", NULL, 0) == 1,
             "the cancelled thread's INSERT is not in the table");
    bt_release(holder);

    dbpool_stats s = bt_stats(p);
    BT_CHECK(s.in_use == 0, "%d connections still in use after the cancelled thread's release", s.in_use);
    dbpool_conn *c = bt_acquire(p);
    BT_CHECK(bt_query_int(c, "SELECT 7", NULL, 0) == 7, "the next lease's statement got another answer");
    bt_exec(c, "INSERT INTO cancel_t VALUES (2)"); /* the write lock is free again */
    bt_release(c);
}

static void test_cancel_during_sqlite_lock_wait_on_a_file(void **state) {
    (void)state;
    dbpool_options o;
    bt_options(&o, 2, 2);
    o.thread_cache = false;
    dbpool *p = bt_open(&o, NULL);
    cancel_during_sqlite_lock_wait(p);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_cancel_during_sqlite_lock_wait_in_memory(void **state) {
    (void)state;
    dbpool_options o;
    bt_options(&o, 2, 2);
    o.thread_cache = false;
    dbpool *p = NULL;
    dbpool_error e;
    BT_OK(dbpool_open(&p, "sqlite::memory:", &o, &e), &e, "dbpool_open sqlite::memory:");
    cancel_during_sqlite_lock_wait(p);
    assert_int_equal(dbpool_close(p), 0);
}

/* A cancel already pending when the statements start: any cancellation
 * point they reached would end the thread there, so this reaches every
 * system call SQLite makes on the way (schema reads, journal and WAL
 * files opened, written, synced, truncated and deleted, a checkpoint). */
typedef struct pending_cancel {
    dbpool *p;
    int done; /* statements that returned DBPOOL_OK */
    int failed_rc;
} pending_cancel;

static void *pending_cancel_main(void *arg) {
    pending_cancel *a = arg;
    dbpool_conn *c = NULL;
    dbpool_error e;
    if (dbpool_acquire(a->p, 5000, &c, &e) != DBPOOL_OK) {
        a->failed_rc = -1000;
        return NULL;
    }
    pthread_cleanup_push(release_on_cancel, c);
    pthread_cancel(pthread_self()); /* deferred: acts at the next cancellation point */
    static const char *const steps[] = {
        "CREATE TABLE IF NOT EXISTS pending_t (v INTEGER)",
        ("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 20000) "
         "INSERT INTO pending_t SELECT x FROM n"),
        "BEGIN",
        "UPDATE pending_t SET v = v + 1",
        "COMMIT",
        "PRAGMA wal_checkpoint(TRUNCATE)",
        "DELETE FROM pending_t",
    };
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        int rc = dbpool_exec(c, steps[i], NULL, 0, NULL, &e);
        if (rc != DBPOOL_OK) {
            a->failed_rc = rc;
            break;
        }
        a->done++;
    }
    if (a->failed_rc == 0) {
        dbpool_result *r = NULL;
        if (dbpool_query(c, "SELECT count(*) FROM pending_t", NULL, 0, &r, &e) == DBPOOL_OK) {
            if (dbpool_result_next(r, &e) == 1 && dbpool_result_int64(r, 0) == 0)
                a->done++;
            dbpool_result_free(r);
        }
    }
    pthread_testcancel();
    pthread_cleanup_pop(1);
    return NULL;
}

static void pending_cancel_on(dbpool *p) {
    pending_cancel a = {.p = p};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, pending_cancel_main, &a), 0);
    void *ret = NULL;
    if (!dbt_join_within(t, 20000, &ret))
        fail_msg("[%s] the thread with a pending cancel did not end", bt_backend);
    BT_CHECK(ret == PTHREAD_CANCELED, "the thread was not cancelled");
    BT_CHECK(a.failed_rc == 0, "a statement failed: %s", dbpool_errname(a.failed_rc));
    BT_CHECK(a.done == 8, "the pending cancel ended the thread inside statement %d of 8", a.done + 1);
    dbpool_stats s = bt_stats(p);
    BT_CHECK(s.in_use == 0, "%d connections still in use after the cancelled thread's release", s.in_use);
    dbpool_conn *c = bt_acquire(p);
    bt_exec(c, "INSERT INTO pending_t VALUES (1)");
    bt_release(c);
}

static void test_pending_cancel_reaches_no_sqlite_io(void **state) {
    (void)state;
    static const char *const urls[] = {NULL, "journal_mode=delete&synchronous=full", "sqlite::memory:"};
    for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
        dbpool_options o;
        bt_options(&o, 1, 1);
        o.thread_cache = false;
        dbpool *p = NULL;
        if (urls[i] && strncmp(urls[i], "sqlite:", 7) == 0) {
            dbpool_error e;
            BT_OK(dbpool_open(&p, urls[i], &o, &e), &e, "dbpool_open sqlite::memory:");
        } else {
            p = bt_open(&o, urls[i]);
            dbpool_conn *c = bt_acquire(p);
            bt_exec(c, "DROP TABLE IF EXISTS pending_t");
            bt_release(c);
        }
        pending_cancel_on(p);
        assert_int_equal(dbpool_close(p), 0);
    }
}

int main(int argc, char **argv) {
    bt_init(argc, argv);
    if (bt_is("sqlite")) {
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_cancel_during_sqlite_lock_wait_on_a_file),
            cmocka_unit_test(test_cancel_during_sqlite_lock_wait_in_memory),
            cmocka_unit_test(test_pending_cancel_reaches_no_sqlite_io),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cancel_during_statement),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
