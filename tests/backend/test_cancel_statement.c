/* A thread cancelled (pthread_cancel, deferred) while its statement runs on
 * a server (pg_sleep, SLEEP) and whose cleanup handler releases its lease,
 * as an application that cleans up on cancel does. The cancel must not cut
 * the statement off half-way: the statement ends (it is bounded by the
 * pool's statement_timeout_ms), the thread is cancelled when the call has
 * returned, and the connection the pool hands out next is not in the middle
 * of the cancelled statement (docs/threading.md, "Cancellation").
 * Server backends only. */
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

int main(int argc, char **argv) {
    bt_init(argc, argv);
    if (bt_is("sqlite")) {
        printf("SKIP: SQLite runs statements without a cancellation point\n");
        return DBT_SKIP;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cancel_during_statement),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
