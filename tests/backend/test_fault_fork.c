/*
 * test_fault_fork.c — a process forks while it holds a pool (one lease out,
 * one connection idle, maintenance and connector threads running). In the
 * child: dbpool_acquire fails with DBPOOL_EMISUSE, releasing the inherited
 * lease is refused (DBPOOL_EMISUSE, nothing touched), so are statements on
 * it (dbpool_exec, dbpool_query: they would run on the parent's session),
 * and dbpool_close
 * returns without touching any connection. The parent's connections keep
 * working after the child has exited — on PostgreSQL and MariaDB the same
 * server sessions (same backend id) answer, which proves the child sent no
 * Terminate / COM_QUIT on the shared sockets. All backends (SQLite: a file
 * database).
 */
#include "backend_common.h"

#include <unistd.h>

/* Child exit codes: which check failed. */
enum {
    CHILD_OK = 0,
    CHILD_ACQUIRE_NOT_MISUSE = 10,
    CHILD_ACQUIRE_NO_MESSAGE,
    CHILD_TRY_ACQUIRE_NOT_MISUSE,
    CHILD_RELEASE_NOT_MISUSE,
    CHILD_DISCARD_NOT_MISUSE,
    CHILD_CLOSE_NOT_ZERO,
    CHILD_EXEC_NOT_MISUSE,
    CHILD_EXEC_NO_MESSAGE,
    CHILD_QUERY_NOT_MISUSE,
    CHILD_NEXT_NOT_MISUSE,
    CHILD_ACQUIRE_ADVISES_OPEN_HERE,
};

static const char *child_failure(int code) {
    switch (code) {
    case CHILD_ACQUIRE_NOT_MISUSE:
        return "dbpool_acquire in the child did not return DBPOOL_EMISUSE";
    case CHILD_ACQUIRE_NO_MESSAGE:
        return "dbpool_acquire in the child gave no message";
    case CHILD_TRY_ACQUIRE_NOT_MISUSE:
        return "dbpool_try_acquire in the child did not return DBPOOL_EMISUSE";
    case CHILD_RELEASE_NOT_MISUSE:
        return "dbpool_release of the inherited lease in the child did not return DBPOOL_EMISUSE";
    case CHILD_DISCARD_NOT_MISUSE:
        return "dbpool_discard of the inherited lease in the child did not return DBPOOL_EMISUSE";
    case CHILD_CLOSE_NOT_ZERO:
        return "dbpool_close in the child did not return 0";
    case CHILD_EXEC_NOT_MISUSE:
        return "dbpool_exec on the inherited lease in the child did not return DBPOOL_EMISUSE (it ran on "
               "the parent's connection)";
    case CHILD_EXEC_NO_MESSAGE:
        return "dbpool_exec in the child gave no message";
    case CHILD_QUERY_NOT_MISUSE:
        return "dbpool_query on the inherited lease in the child did not return DBPOOL_EMISUSE (it ran on "
               "the parent's connection)";
    case CHILD_NEXT_NOT_MISUSE:
        return "dbpool_result_next of a result inherited from the parent did not return DBPOOL_EMISUSE";
    case CHILD_ACQUIRE_ADVISES_OPEN_HERE:
        return "the child's error does not point to exec: opening a new pool in a child that has not "
               "called exec can deadlock (docs/threading.md)";
    default:
        return "unknown";
    }
}

/* Runs in the child: no cmocka, no atexit handlers (they would remove the
 * parent's temporary directory): _exit with a code. */
static void child_main(dbpool *p, dbpool_conn *inherited, dbpool_result *open_result) {
    dbpool_conn *c = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    /* A statement would go out on the parent's socket (or file): refused. */
    if (dbpool_exec(inherited, "SELECT 1", NULL, 0, NULL, &e) != DBPOOL_EMISUSE)
        _exit(CHILD_EXEC_NOT_MISUSE);
    if (e.message[0] == '\0')
        _exit(CHILD_EXEC_NO_MESSAGE);
    dbpool_result *r = NULL;
    if (dbpool_query(inherited, "SELECT 1", NULL, 0, &r, &e) != DBPOOL_EMISUSE || r)
        _exit(CHILD_QUERY_NOT_MISUSE);
    if (dbpool_result_next(open_result, &e) != DBPOOL_EMISUSE)
        _exit(CHILD_NEXT_NOT_MISUSE);
    if (dbpool_acquire(p, 1000, &c, &e) != DBPOOL_EMISUSE)
        _exit(CHILD_ACQUIRE_NOT_MISUSE);
    if (e.message[0] == '\0')
        _exit(CHILD_ACQUIRE_NO_MESSAGE);
    /* What to do instead: exec, where a new pool is safe (docs/threading.md);
     * not "open a new pool" here, which can deadlock. */
    if (!strstr(e.message, "exec"))
        _exit(CHILD_ACQUIRE_ADVISES_OPEN_HERE);
    if (dbpool_try_acquire(p, &c, &e) != DBPOOL_EMISUSE)
        _exit(CHILD_TRY_ACQUIRE_NOT_MISUSE);
    if (dbpool_release(inherited) != DBPOOL_EMISUSE)
        _exit(CHILD_RELEASE_NOT_MISUSE);
    if (dbpool_discard(inherited) != DBPOOL_EMISUSE)
        _exit(CHILD_DISCARD_NOT_MISUSE);
    if (dbpool_close(p) != 0)
        _exit(CHILD_CLOSE_NOT_ZERO);
    _exit(CHILD_OK);
}

static void test_fork_while_holding_a_pool(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 2, 2);
    o.maintenance_interval_ms = 50;
    o.validation = DBPOOL_VALIDATE_ALWAYS; /* a dead connection would be replaced: compare session ids */
    dbpool *p = bt_open(&o, NULL);
    dbpool_conn *held = bt_acquire(p), *other = bt_acquire(p);
    int64_t held_id = bt_query_int(held, bt_session_id_sql(), NULL, 0);
    int64_t other_id = bt_query_int(other, bt_session_id_sql(), NULL, 0);
    bt_release(other); /* idle in the parent's pool at fork time */
    if (!bt_is("sqlite")) {
        bt_exec(held, "DROP TABLE IF EXISTS fault_fork");
        bt_exec(held, "CREATE TABLE fault_fork (id INTEGER)");
    }

    /* A result open on the held lease at fork time (two rows: one read). */
    dbpool_result *open_result = NULL;
    dbpool_error qe;
    BT_CHECK(dbpool_query(held, "SELECT 1 UNION ALL SELECT 2", NULL, 0, &open_result, &qe) == DBPOOL_OK,
             "query: %s", qe.message);
    BT_CHECK(dbpool_result_next(open_result, &qe) == 1, "first row: %s", qe.message);

    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        child_main(p, held, open_result);

    bt_expect_child_ok(pid, child_failure);

    /* The parent reads its result on: the child took nothing from it. */
    BT_CHECK(dbpool_result_next(open_result, &qe) == 1, "second row: %s", qe.message);
    BT_CHECK(dbpool_result_int64(open_result, 0) == 2, "second row is %lld",
             (long long)dbpool_result_int64(open_result, 0));
    dbpool_result_free(open_result);

    dbt_sleep_ms(100); /* let a Terminate, had one been sent, reach the server */
    /* The parent's lease still works, on the same session. */
    BT_CHECK(bt_query_int(held, bt_session_id_sql(), NULL, 0) == held_id, "the held lease changed session");
    if (!bt_is("sqlite")) {
        dbpool_param v = dbpool_param_int64(7);
        bt_exec_params(held, "INSERT INTO fault_fork (id) VALUES (?)", &v, 1);
        BT_CHECK(bt_query_int(held, "SELECT COUNT(*) FROM fault_fork", NULL, 0) == 1, "insert lost");
    }
    /* The idle one too, on its session from before the fork. */
    bt_expect_idle_kept(p, NULL, NULL, other_id, 2);
    bt_release(held);
    if (!bt_is("sqlite")) {
        dbpool_conn *c = bt_acquire(p);
        bt_exec(c, "DROP TABLE fault_fork");
        bt_release(c);
    }
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

int main(int argc, char **argv) {
    bt_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fork_while_holding_a_pool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
