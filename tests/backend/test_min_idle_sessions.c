/*
 * test_min_idle_sessions.c — spare connections (min_idle) against a real database:
 * while leases are held, the pool opens real sessions beside them in the
 * background, each lease that takes one gets it replaced, and the cap
 * bounds them.
 */
#include "backend_common.h"

/* Settled within 10 s: the spares open in the background. */
static void wait_settled(dbpool *p, int idle, int total) { dbt_wait_settled(p, idle, total, 10000); }

static void test_spares_are_sessions_beside_the_leases(void **state) {
    (void)state;
    dbpool_options o;
    bt_options(&o, 0, 5);
    o.min_idle = 2;
    o.maintenance_interval_ms = 3600 * 1000; /* no pass opens them: the leases ask */
    o.thread_cache = false;
    dbpool *p = bt_open(&o, NULL);
    wait_settled(p, 2, 2);

    dbpool_conn *c[5];
    int64_t id[5];
    for (int i = 0; i < 2; i++) {
        c[i] = bt_acquire(p);
        id[i] = bt_query_int(c[i], bt_session_id_sql(), NULL, 0);
    }
    bt_exec(c[0], "BEGIN"); /* a lease busy in a transaction: the spares are other sessions */
    wait_settled(p, 2, 4);
    for (int i = 2; i < 4; i++) {
        c[i] = bt_acquire(p);
        id[i] = bt_query_int(c[i], bt_session_id_sql(), NULL, 0);
    }
    /* The cap (5) leaves room for one spare. */
    wait_settled(p, 1, 5);
    c[4] = bt_acquire(p);
    id[4] = bt_query_int(c[4], bt_session_id_sql(), NULL, 0);
    dbpool_stats s = bt_stats(p);
    BT_CHECK(s.in_use == 5 && s.total == 5 && s.connecting == 0,
             "at the cap: in use %d, total %d, connecting %d", s.in_use, s.total, s.connecting);
    if (!bt_is("sqlite"))
        for (int i = 0; i < 5; i++)
            for (int j = i + 1; j < 5; j++)
                BT_CHECK(id[i] != id[j], "leases %d and %d share session %lld", i, j, (long long)id[i]);
    bt_exec(c[0], "ROLLBACK");
    for (int i = 0; i < 5; i++)
        bt_release(c[i]);
    wait_settled(p, 5, 5);
    s = bt_stats(p);
    BT_CHECK(s.created == 5 && s.destroyed == 0, "created %llu, destroyed %llu: expected 5 and 0",
             (unsigned long long)s.created, (unsigned long long)s.destroyed);
    dbpool_close(p);
}

int main(int argc, char **argv) {
    bt_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spares_are_sessions_beside_the_leases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
