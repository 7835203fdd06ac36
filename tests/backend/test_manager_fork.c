/*
 * test_manager_fork.c — a process forks while a dbpool_manager holds a pool
 * of this backend (one lease out, one connection idle). In the child the
 * manager hands out nothing of the parent's: dbpool_manager_get is NULL,
 * dbpool_manager_acquire is DBPOOL_EMISUSE, the pool is neither counted
 * nor in the JSON; dbpool_manager_close_pool and dbpool_manager_free return
 * without closing a descriptor (no Terminate / COM_QUIT on the parent's
 * sockets, no sqlite3_close of the parent's file, whose last close could
 * checkpoint and remove its WAL). The parent's connections keep working on
 * the same server sessions afterwards. All backends (SQLite: a file
 * database).
 */
#include "backend_common.h"

#include <dirent.h>
#include <unistd.h>

enum {
    CHILD_OK = 0,
    CHILD_GET = 10,
    CHILD_ACQUIRE,
    CHILD_LISTED,
    CHILD_JSON,
    CHILD_CLOSE_POOL,
    CHILD_FREE,
    CHILD_DESCRIPTORS,
};

static const char *child_failure(int code) {
    switch (code) {
    case CHILD_GET:
        return "dbpool_manager_get handed the child the parent's pool";
    case CHILD_ACQUIRE:
        return "dbpool_manager_acquire in the child was not DBPOOL_EMISUSE";
    case CHILD_LISTED:
        return "the child's manager counted the parent's pool";
    case CHILD_JSON:
        return "the child's JSON held the parent's pool";
    case CHILD_CLOSE_POOL:
        return "dbpool_manager_close_pool in the child was not DBPOOL_OK";
    case CHILD_FREE:
        return "dbpool_manager_free in the child was not DBPOOL_OK";
    case CHILD_DESCRIPTORS:
        return "the child's close or free closed descriptors it shares with the parent (its connections)";
    default:
        return "it died";
    }
}

/* Open descriptors of this process (-1 if they cannot be counted). */
static int open_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

/* In the child: no cmocka, no atexit handlers (they would remove the
 * parent's temporary directory): _exit with a code. */
static void child_main(dbpool_manager *m) {
    int fds = open_fds();
    if (dbpool_manager_get(m, "a") || dbpool_manager_get(m, "b"))
        _exit(CHILD_GET);
    dbpool_conn *c = NULL;
    dbpool_error e;
    if (dbpool_manager_acquire(m, "a", 1000, &c, &e) != DBPOOL_EMISUSE || c)
        _exit(CHILD_ACQUIRE);
    if (dbpool_manager_count(m) != 0)
        _exit(CHILD_LISTED);
    char buf[256];
    int n = dbpool_manager_stats_json(m, buf, sizeof buf);
    if (n < 0 || (size_t)n >= sizeof buf || strcmp(buf, "{\"pools\": {}}") != 0)
        _exit(CHILD_JSON);
    if (dbpool_manager_close_pool(m, "a") != DBPOOL_OK)
        _exit(CHILD_CLOSE_POOL);
    if (dbpool_manager_free(m) != DBPOOL_OK) /* closes "b" */
        _exit(CHILD_FREE);
    if (fds < 0 || open_fds() != fds)
        _exit(CHILD_DESCRIPTORS);
    _exit(CHILD_OK);
}

static void test_fork_with_a_manager(void **state) {
    (void)state;
    dbpool_manager *m = NULL;
    assert_int_equal(dbpool_manager_new(&m), DBPOOL_OK);
    dbpool_options o;
    bt_options(&o, 2, 2);
    o.validation = DBPOOL_VALIDATE_ALWAYS; /* a dead connection would be replaced: compare session ids */
    dbpool_error e;
    const char *url = dbt_backend_url(bt_backend);
    BT_OK(dbpool_manager_open(m, "a", url, &o, &e), &e, "dbpool_manager_open a");
    BT_OK(dbpool_manager_open(m, "b", url, &o, &e), &e, "dbpool_manager_open b");
    dbpool_conn *held = NULL, *other = NULL;
    BT_OK(dbpool_manager_acquire(m, "a", 5000, &held, &e), &e, "dbpool_manager_acquire");
    BT_OK(dbpool_manager_acquire(m, "a", 5000, &other, &e), &e, "dbpool_manager_acquire");
    int64_t held_id = bt_query_int(held, bt_session_id_sql(), NULL, 0);
    int64_t other_id = bt_query_int(other, bt_session_id_sql(), NULL, 0);
    bt_release(other); /* idle in the parent's pool at fork time */

    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        child_main(m);

    bt_expect_child_ok(pid, child_failure);

    dbt_sleep_ms(100); /* let a Terminate, had one been sent, reach the server */
    BT_CHECK(bt_query_int(held, bt_session_id_sql(), NULL, 0) == held_id, "the held lease changed session");
    dbpool *a = dbpool_manager_get(m, "a");
    assert_non_null(a);
    bt_expect_idle_kept(a, m, "a", other_id, 2);
    bt_release(held);
    assert_int_equal(dbpool_manager_count(m), 2);
    assert_int_equal(dbpool_manager_free(m), DBPOOL_OK);
}

int main(int argc, char **argv) {
    bt_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fork_with_a_manager),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
