/* dbpool-unix, the VFS a pool opens SQLite files through (src/sqlite_vfs.c),
 * wraps the files of SQLite's Unix VFS. What SQLite does through it must be
 * what it does through the Unix VFS itself:
 * - each Unix VFS an application makes the default (unix, unix-excl,
 *   unix-dotfile, unix-none) keeps its locking: unix-excl keeps other
 *   processes out of a database, unix-dotfile locks with a .lock
 *   directory, WAL is refused where SQLite refuses it (no shared memory);
 * - a pool's files and an application's own connections to the same file
 *   share the Unix VFS's table of POSIX locks: closing one of them does not
 *   drop the locks another holds (POSIX drops every lock a process holds on
 *   a file when any descriptor of it is closed);
 * - the file controls an application sends through a lease's native handle
 *   reach the Unix VFS's file (persistent WAL, the file pointer's methods,
 *   the VFS name).
 * The default VFS is chosen once a process, so each case that changes it
 * runs in a child process of its own; other processes that must see the
 * locks are children too. */
#include "testsupport.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

static dbpool *open_pool(const char *path, const char *keys, dbpool_error *e) {
    char url[800];
    snprintf(url, sizeof url, "sqlite:%s%s%s", path, keys ? "?" : "", keys ? keys : "");
    dbpool_options o;
    dbt_options(&o, 1, 1);
    o.max_retries = 0;
    o.thread_cache = false;
    dbpool *p = NULL;
    return dbpool_open(&p, url, &o, e) == DBPOOL_OK ? p : NULL;
}

static void fresh_path(char *path, size_t cap, const char *name) {
    snprintf(path, cap, "%s/%s", dbt_tmpdir(), name);
    static const char *const suffixes[] = {"", "-journal", "-wal", "-shm"};
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        char f[700];
        snprintf(f, sizeof f, "%s%s", path, suffixes[i]);
        unlink(f);
    }
}

/* In another process, through SQLite's own Unix VFS: the SQLite result
 * code of `sql` on path, without waiting for a lock (busy_timeout 0). The
 * process is this program run anew (main: --other-process): a child that
 * only forked would inherit SQLite's table of the locks this process
 * holds, and answer from it without asking the kernel. */
static int other_process_rc(const char *path, const char *sql) {
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        execl("/proc/self/exe", "test_sqlite_vfs", "--other-process", path, sql, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_not_equal(WEXITSTATUS(status), 127);
    return WEXITSTATUS(status);
}

static int other_process_main(const char *path, const char *sql) {
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, "unix");
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    sqlite3_close(db);
    return rc & 0xff;
}

/* Run fn in a child process (where it may make any VFS the default before
 * dbpool first opens a database) and fail unless it returns 0. The child
 * prints what went wrong. */
static void in_child(int (*fn)(const char *vfs), const char *vfs) {
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(fn(vfs));
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("with %s as the default VFS: the child failed (status %d, its message above)", vfs, status);
}

#define CHILD_CHECK(cond, ...)                                                                               \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "child: ");                                                                      \
            fprintf(stderr, __VA_ARGS__);                                                                    \
            fprintf(stderr, " (failed: %s)\n", #cond);                                                       \
            return 1;                                                                                        \
        }                                                                                                    \
    } while (0)

static int child_exec(dbpool_conn *c, const char *sql) {
    dbpool_error e;
    int rc = dbpool_exec(c, sql, NULL, 0, NULL, &e);
    if (rc != DBPOOL_OK)
        fprintf(stderr, "child: %s: %s\n", sql, e.message);
    return rc;
}

/* The default VFS `vfs`, then a pool in rollback-journal mode: its writes
 * and reads work, and the variant's locking is the one in force. */
static int default_vfs_locks(const char *vfs) {
    CHILD_CHECK(sqlite3_vfs_register(sqlite3_vfs_find(vfs), 1) == SQLITE_OK, "cannot make %s the default",
                vfs);
    char path[640];
    fresh_path(path, sizeof path, "variant.db");
    dbpool_error e;
    dbpool *p = open_pool(path, "journal_mode=delete", &e);
    CHILD_CHECK(p, "open: %s", e.message);
    dbpool_conn *c = NULL;
    CHILD_CHECK(dbpool_acquire(p, 5000, &c, &e) == DBPOOL_OK, "acquire: %s", e.message);
    CHILD_CHECK(child_exec(c, "CREATE TABLE t (v INTEGER)") == 0, "create");
    CHILD_CHECK(child_exec(c, "BEGIN IMMEDIATE") == 0, "begin");
    CHILD_CHECK(child_exec(c, "INSERT INTO t VALUES (1), (2), (3)") == 0, "insert");
    char lock_dir[700];
    snprintf(lock_dir, sizeof lock_dir, "%s.lock", path);
    struct stat st;
    bool dot_lock = stat(lock_dir, &st) == 0;
    CHILD_CHECK(dot_lock == (strcmp(vfs, "unix-dotfile") == 0), "%s: a write transaction %s %s", vfs,
                dot_lock ? "made" : "did not make", lock_dir);
    CHILD_CHECK(child_exec(c, "COMMIT") == 0, "commit");
    dbpool_result *r = NULL;
    CHILD_CHECK(dbpool_query(c, "SELECT sum(v) FROM t", NULL, 0, &r, &e) == DBPOOL_OK, "query: %s",
                e.message);
    CHILD_CHECK(dbpool_result_next(r, &e) == 1 && dbpool_result_int64(r, 0) == 6, "sum(v) is not 6");
    dbpool_result_free(r);
    /* unix-excl holds the database for this process while it has it open:
     * another process cannot even read it. The others let it read. */
    int other = other_process_rc(path, "SELECT count(*) FROM t");
    int want = strcmp(vfs, "unix-excl") == 0 ? SQLITE_BUSY : SQLITE_OK;
    CHILD_CHECK(other == want, "%s: another process's read of the open database gave %d (%s), not %d (%s)",
                vfs, other, sqlite3_errstr(other), want, sqlite3_errstr(want));
    dbpool_release(c);
    dbpool_close(p);
    CHILD_CHECK(other_process_rc(path, "SELECT count(*) FROM t") == SQLITE_OK,
                "%s: another process cannot read the database once the pool is closed", vfs);
    return 0;
}

static void test_each_unix_vfs_as_the_default_keeps_its_locking(void **state) {
    (void)state;
    static const char *const vfses[] = {"unix", "unix-excl", "unix-dotfile", "unix-none"};
    for (size_t i = 0; i < sizeof vfses / sizeof vfses[0]; i++)
        in_child(default_vfs_locks, vfses[i]);
}

/* An application's own default VFS is left alone, even when its name
 * starts with "unix": the pool's connections open through it, and it sees
 * their files opened. (dbpool wrapped any default VFS named "unix...",
 * as if it were SQLite's Unix VFS.) */
static int app_vfs_opens;
static sqlite3_vfs app_vfs;
static int app_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out) {
    (void)vfs;
    app_vfs_opens++;
    sqlite3_vfs *u = sqlite3_vfs_find("unix");
    return u->xOpen(u, name, f, flags, out);
}

static int default_app_vfs(const char *vfs) {
    app_vfs = *sqlite3_vfs_find("unix");
    app_vfs.zName = vfs;
    app_vfs.pNext = NULL;
    app_vfs.xOpen = app_open;
    CHILD_CHECK(sqlite3_vfs_register(&app_vfs, 1) == SQLITE_OK, "cannot register %s", vfs);
    char path[640];
    fresh_path(path, sizeof path, "app-vfs.db");
    dbpool_error e;
    dbpool *p = open_pool(path, NULL, &e);
    CHILD_CHECK(p, "open: %s", e.message);
    dbpool_conn *c = NULL;
    CHILD_CHECK(dbpool_acquire(p, 5000, &c, &e) == DBPOOL_OK, "acquire: %s", e.message);
    CHILD_CHECK(child_exec(c, "CREATE TABLE t (v INTEGER)") == 0, "create");
    sqlite3_vfs *used = NULL;
    sqlite3_file_control(dbpool_conn_native(c), "main", SQLITE_FCNTL_VFS_POINTER, &used);
    CHILD_CHECK(used == &app_vfs, "the pool's connection opened through '%s', not the default '%s'",
                used ? used->zName : "?", vfs);
    CHILD_CHECK(app_vfs_opens > 0, "the application's VFS saw no open");
    dbpool_release(c);
    dbpool_close(p);
    return 0;
}

static void test_an_application_vfs_named_unix_is_left_alone(void **state) {
    (void)state;
    in_child(default_app_vfs, "unix-app");
}

/* WAL where SQLite allows it (shared memory: unix, unix-excl), refused
 * where it does not (unix-dotfile, unix-none), as SQLite's own VFS does. */
static int default_vfs_wal(const char *vfs) {
    CHILD_CHECK(sqlite3_vfs_register(sqlite3_vfs_find(vfs), 1) == SQLITE_OK, "cannot make %s the default",
                vfs);
    char path[640];
    fresh_path(path, sizeof path, "variant-wal.db");
    /* What SQLite's own VFS gives. */
    sqlite3 *db = NULL;
    CHILD_CHECK(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs) == SQLITE_OK,
                "open");
    sqlite3_stmt *st = NULL;
    CHILD_CHECK(sqlite3_prepare_v2(db, "PRAGMA journal_mode=wal", -1, &st, NULL) == SQLITE_OK, "prepare");
    CHILD_CHECK(sqlite3_step(st) == SQLITE_ROW, "step");
    bool sqlite_wal = strcmp((const char *)sqlite3_column_text(st, 0), "wal") == 0;
    sqlite3_finalize(st);
    sqlite3_close(db);
    fresh_path(path, sizeof path, "variant-wal.db");
    bool want_wal = strcmp(vfs, "unix") == 0 || strcmp(vfs, "unix-excl") == 0;
    CHILD_CHECK(sqlite_wal == want_wal, "%s: SQLite's own VFS %s WAL", vfs,
                sqlite_wal ? "allows" : "refuses");

    dbpool_error e;
    dbpool *p = open_pool(path, "journal_mode=wal", &e);
    if (!want_wal) {
        CHILD_CHECK(!p, "%s: a pool opened in WAL mode, which SQLite's own VFS refuses", vfs);
        CHILD_CHECK(strstr(e.message, "journal_mode 'delete'"), "%s: the refusal says: %s", vfs, e.message);
        return 0;
    }
    CHILD_CHECK(p, "%s: open in WAL mode: %s", vfs, e.message);
    dbpool_conn *c = NULL;
    CHILD_CHECK(dbpool_acquire(p, 5000, &c, &e) == DBPOOL_OK, "acquire: %s", e.message);
    CHILD_CHECK(child_exec(c, "CREATE TABLE t (v INTEGER)") == 0, "create");
    CHILD_CHECK(child_exec(c, "INSERT INTO t VALUES (1)") == 0, "insert");
    CHILD_CHECK(child_exec(c, "PRAGMA wal_checkpoint(TRUNCATE)") == 0, "checkpoint");
    dbpool_release(c);
    dbpool_close(p);
    return 0;
}

static void test_wal_where_sqlite_allows_it(void **state) {
    (void)state;
    static const char *const vfses[] = {"unix", "unix-excl", "unix-dotfile", "unix-none"};
    for (size_t i = 0; i < sizeof vfses / sizeof vfses[0]; i++)
        in_child(default_vfs_wal, vfses[i]);
}

static void plain_exec(sqlite3 *db, const char *sql) {
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg ? msg : "?");
}

/* A read lock held by an application's own connection (SQLite's "unix")
 * survives a pool's connection to the same file being opened, used and
 * closed, and the other way round: the Unix VFS keeps one table of locks
 * per file for the process and defers closing a descriptor while another
 * connection of the process holds a lock. Were the pool's files outside
 * that table, the pool's close(2) would drop the application's lock, and
 * another process could write under a reader that believes the file
 * cannot change. */
static void test_pool_and_application_connections_share_the_locks(void **state) {
    (void)state;
    char path[640];
    fresh_path(path, sizeof path, "shared-locks.db");
    sqlite3 *app = NULL;
    assert_int_equal(sqlite3_open_v2(path, &app, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, "unix"),
                     SQLITE_OK);
    plain_exec(app, "PRAGMA journal_mode=delete; CREATE TABLE t (v INTEGER); INSERT INTO t VALUES (1)");

    /* The application reads in a transaction: a shared lock on the file. */
    plain_exec(app, "BEGIN; SELECT count(*) FROM t");
    assert_int_equal(other_process_rc(path, "BEGIN EXCLUSIVE; COMMIT"), SQLITE_BUSY);
    dbpool_error e;
    dbpool *p = open_pool(path, "journal_mode=delete", &e);
    if (!p)
        fail_msg("open: %s", e.message);
    dbpool_conn *c = dbt_acquire(p);
    assert_int_equal(dbt_query_int(c, "SELECT count(*) FROM t", NULL, 0), 1);
    dbpool_release(c);
    assert_int_equal(dbpool_close(p), 0); /* closes the pool's descriptor of the file */
    int rc = other_process_rc(path, "BEGIN EXCLUSIVE; COMMIT");
    if (rc != SQLITE_BUSY)
        fail_msg("closing the pool dropped the application's read lock: another process took an exclusive "
                 "lock (%d, %s)",
                 rc, sqlite3_errstr(rc));
    plain_exec(app, "COMMIT");
    assert_int_equal(other_process_rc(path, "BEGIN EXCLUSIVE; COMMIT"), SQLITE_OK);

    /* The other way round: the pool's lease reads in a transaction, the
     * application opens, uses and closes a connection of its own. */
    p = open_pool(path, "journal_mode=delete", &e);
    if (!p)
        fail_msg("open: %s", e.message);
    c = dbt_acquire(p);
    dbt_exec_ok(c, "BEGIN", NULL, 0);
    assert_int_equal(dbt_query_int(c, "SELECT count(*) FROM t", NULL, 0), 1);
    plain_exec(app, "SELECT count(*) FROM t");
    sqlite3_close(app);
    rc = other_process_rc(path, "BEGIN EXCLUSIVE; COMMIT");
    if (rc != SQLITE_BUSY)
        fail_msg("closing the application's connection dropped the lease's read lock: another process took "
                 "an exclusive lock (%d, %s)",
                 rc, sqlite3_errstr(rc));
    dbt_exec_ok(c, "COMMIT", NULL, 0);
    dbpool_release(c);
    assert_int_equal(dbpool_close(p), 0);
}

/* File controls sent through a lease's native handle reach the Unix VFS's
 * file. */
static void test_file_controls_through_the_native_handle(void **state) {
    (void)state;
    char path[640], wal[700];
    fresh_path(path, sizeof path, "fcntl.db");
    snprintf(wal, sizeof wal, "%s-wal", path);
    dbpool_error e;
    dbpool *p = open_pool(path, NULL, &e);
    if (!p)
        fail_msg("open: %s", e.message);
    dbpool_conn *c = dbt_acquire(p);
    dbt_exec_ok(c, "CREATE TABLE t (v INTEGER)", NULL, 0);
    dbt_exec_ok(c, "INSERT INTO t VALUES (1)", NULL, 0);
    sqlite3 *db = dbpool_conn_native(c);

    /* The VFS's name: dbpool's, over the Unix VFS's (SQLite's convention
     * for a VFS that wraps another: "outer/inner"). */
    char *name = NULL;
    assert_int_equal(sqlite3_file_control(db, "main", SQLITE_FCNTL_VFSNAME, &name), SQLITE_OK);
    assert_non_null(name);
    if (strcmp(name, "dbpool-unix/unix") != 0)
        fail_msg("SQLITE_FCNTL_VFSNAME says '%s', not 'dbpool-unix/unix'", name);
    sqlite3_free(name);
    sqlite3_vfs *vfs = NULL;
    assert_int_equal(sqlite3_file_control(db, "main", SQLITE_FCNTL_VFS_POINTER, &vfs), SQLITE_OK);
    assert_string_equal(vfs->zName, "dbpool-unix");

    /* The file pointer's own methods. */
    sqlite3_file *f = NULL;
    assert_int_equal(sqlite3_file_control(db, "main", SQLITE_FCNTL_FILE_POINTER, &f), SQLITE_OK);
    assert_non_null(f);
    sqlite3_int64 size = 0;
    assert_int_equal(f->pMethods->xFileSize(f, &size), SQLITE_OK);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(size, st.st_size);
    char header[16];
    assert_int_equal(f->pMethods->xRead(f, header, sizeof header, 0), SQLITE_OK);
    assert_memory_equal(header, "SQLite format 3", 16);
    assert_true(f->pMethods->xSectorSize(f) > 0);
    int reserved = -1;
    assert_int_equal(f->pMethods->xCheckReservedLock(f, &reserved), SQLITE_OK);
    assert_int_equal(reserved, 0);

    /* Persistent WAL: the -wal file stays when the last connection closes. */
    int persist = 1;
    assert_int_equal(sqlite3_file_control(db, "main", SQLITE_FCNTL_PERSIST_WAL, &persist), SQLITE_OK);
    persist = -1;
    assert_int_equal(sqlite3_file_control(db, "main", SQLITE_FCNTL_PERSIST_WAL, &persist), SQLITE_OK);
    assert_int_equal(persist, 1);
    dbpool_release(c);
    assert_int_equal(dbpool_close(p), 0);
    if (stat(wal, &st) != 0)
        fail_msg(
            "SQLITE_FCNTL_PERSIST_WAL set through the native handle, but %s went with the last connection",
            wal);
    /* Without it, the -wal file goes. */
    p = open_pool(path, NULL, &e);
    if (!p)
        fail_msg("open: %s", e.message);
    c = dbt_acquire(p);
    assert_int_equal(dbt_query_int(c, "SELECT count(*) FROM t", NULL, 0), 1);
    dbpool_release(c);
    assert_int_equal(dbpool_close(p), 0);
    assert_int_equal(stat(wal, &st), -1);
    assert_int_equal(errno, ENOENT);
}

/* The backup API between a lease's native handle and an application's own
 * connection, both ways. */
static void test_backup_through_the_native_handle(void **state) {
    (void)state;
    char path[640], copy[640];
    fresh_path(path, sizeof path, "backup.db");
    fresh_path(copy, sizeof copy, "backup-copy.db");
    dbpool_error e;
    dbpool *p = open_pool(path, NULL, &e);
    if (!p)
        fail_msg("open: %s", e.message);
    dbpool_conn *c = dbt_acquire(p);
    dbt_exec_ok(c, "CREATE TABLE t (v INTEGER, b BLOB)", NULL, 0);
    dbt_exec_ok(c,
                "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 2000) "
                "INSERT INTO t SELECT x, randomblob(500) FROM n",
                NULL, 0);
    sqlite3 *app = NULL;
    assert_int_equal(sqlite3_open_v2(copy, &app, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, "unix"),
                     SQLITE_OK);
    /* From the lease to the application's file, a few pages a step. */
    sqlite3_backup *b = sqlite3_backup_init(app, "main", dbpool_conn_native(c), "main");
    assert_non_null(b);
    int rc;
    while ((rc = sqlite3_backup_step(b, 16)) == SQLITE_OK) {
    }
    assert_int_equal(rc, SQLITE_DONE);
    assert_int_equal(sqlite3_backup_finish(b), SQLITE_OK);
    plain_exec(app, "UPDATE t SET v = v * 2");
    /* And back into the lease's database. */
    b = sqlite3_backup_init(dbpool_conn_native(c), "main", app, "main");
    assert_non_null(b);
    assert_int_equal(sqlite3_backup_step(b, -1), SQLITE_DONE);
    assert_int_equal(sqlite3_backup_finish(b), SQLITE_OK);
    sqlite3_close(app);
    assert_int_equal(dbt_query_int(c, "SELECT sum(v) FROM t", NULL, 0), 2000 * 2001);
    dbpool_result *r = dbt_query_ok(c, "PRAGMA integrity_check", NULL, 0);
    assert_int_equal(dbt_next_ok(r), 1);
    assert_string_equal(dbpool_result_text(r, 0, NULL), "ok");
    dbpool_result_free(r);
    dbpool_release(c);
    assert_int_equal(dbpool_close(p), 0);
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "--other-process") == 0)
        return other_process_main(argv[2], argv[3]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_unix_vfs_as_the_default_keeps_its_locking),
        cmocka_unit_test(test_an_application_vfs_named_unix_is_left_alone),
        cmocka_unit_test(test_wal_where_sqlite_allows_it),
        cmocka_unit_test(test_pool_and_application_connections_share_the_locks),
        cmocka_unit_test(test_file_controls_through_the_native_handle),
        cmocka_unit_test(test_backup_through_the_native_handle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
