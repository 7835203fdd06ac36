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
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct canceller {
    dbpool *p;
    const char *sql;
    volatile int stage; /* 1: the statement is about to run */
    int rc;
    bool returned;
} canceller;

static void release_on_cancel(void *arg) { dbpool_release(arg); }

/* A lease for a thread about to be cancelled, or NULL with *rc -1000. */
static dbpool_conn *lease_or_note(dbpool *p, int *rc) {
    dbpool_conn *c = NULL;
    dbpool_error e;
    if (dbpool_acquire(p, 5000, &c, &e) != DBPOOL_OK) {
        *rc = -1000;
        return NULL;
    }
    return c;
}

static void *statement_main(void *arg) {
    canceller *a = arg;
    dbpool_error e;
    dbpool_conn *c = lease_or_note(a->p, &a->rc);
    if (!c)
        return NULL;
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
    dbpool_error e;
    dbpool_conn *c = lease_or_note(a->p, &a->failed_rc);
    if (!c)
        return NULL;
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

/* More of SQLite's I/O with a cancel pending: steps of SQL (a leading '?'
 * reads the rows), then optionally a function on the lease. */
typedef struct pending_steps {
    dbpool *p;
    const char *const *sql; /* NULL-terminated */
    int (*fn)(dbpool_conn *c, void *arg);
    void *arg;
    bool journal_before; /* for the hot journal: was it still there after the acquire? */
    const char *journal;
    int done;
    char failed[512];
} pending_steps;

static void *pending_steps_main(void *arg) {
    pending_steps *a = arg;
    dbpool_conn *c = NULL;
    dbpool_error e;
    if (dbpool_acquire(a->p, 5000, &c, &e) != DBPOOL_OK) {
        snprintf(a->failed, sizeof a->failed, "acquire: %s", e.message);
        return NULL;
    }
    struct stat st;
    a->journal_before = a->journal && stat(a->journal, &st) == 0 && st.st_size > 0;
    pthread_cleanup_push(release_on_cancel, c);
    pthread_cancel(pthread_self()); /* deferred: acts at the next cancellation point */
    for (size_t i = 0; a->sql[i] && !a->failed[0]; i++) {
        const char *sql = a->sql[i];
        int rc;
        if (sql[0] == '?') {
            dbpool_result *r = NULL;
            rc = dbpool_query(c, sql + 1, NULL, 0, &r, &e);
            if (rc == DBPOOL_OK) {
                while ((rc = dbpool_result_next(r, &e)) == 1) {
                }
                dbpool_result_free(r);
            }
        } else {
            rc = dbpool_exec(c, sql, NULL, 0, NULL, &e);
        }
        if (rc < 0)
            snprintf(a->failed, sizeof a->failed, "%s: %s", sql, e.message);
        else
            a->done++;
    }
    if (a->fn && !a->failed[0]) {
        if (a->fn(c, a->arg) != 0)
            snprintf(a->failed, sizeof a->failed, "the function on the lease failed");
        else
            a->done++;
    }
    pthread_testcancel();
    pthread_cleanup_pop(1);
    return NULL;
}

/* NULL when every step ran and the thread was cancelled after them, else
 * what went wrong (a static buffer). */
static const char *pending_steps_run(pending_steps *a) {
    static char why[700];
    int n = 0;
    while (a->sql[n])
        n++;
    n += a->fn ? 1 : 0;
    pthread_t t;
    if (pthread_create(&t, NULL, pending_steps_main, a) != 0)
        return "pthread_create failed";
    void *ret = NULL;
    if (!dbt_join_within(t, 60000, &ret))
        return "the thread with a pending cancel did not end";
    if (a->failed[0])
        snprintf(why, sizeof why, "a step failed: %s", a->failed);
    else if (ret != PTHREAD_CANCELED)
        snprintf(why, sizeof why, "the thread was not cancelled");
    else if (a->done != n)
        snprintf(why, sizeof why, "the pending cancel ended the thread inside step %d of %d (%s)",
                 a->done + 1, n,
                 a->done < n && a->sql[a->done] ? a->sql[a->done] : "the function on the lease");
    else
        return NULL;
    return why;
}

static dbpool *open_sqlite(const char *file, const char *keys) {
    char url[900];
    if (file)
        snprintf(url, sizeof url, "sqlite:%s/%s%s%s", dbt_tmpdir(), file, keys ? "?" : "", keys ? keys : "");
    else
        snprintf(url, sizeof url, "sqlite::memory:%s%s", keys ? "?" : "", keys ? keys : "");
    dbpool_options o;
    bt_options(&o, 1, 1);
    o.thread_cache = false;
    dbpool *p = NULL;
    dbpool_error e;
    BT_OK(dbpool_open(&p, url, &o, &e), &e, url);
    return p;
}

#define FILL_T                                                                                               \
    "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 20000) "                       \
    "INSERT INTO t SELECT x, randomblob(100) FROM n"

static void pending_on(const char *what, const char *file, const char *keys, const char *const *sql) {
    dbpool *p = open_sqlite(file, keys);
    pending_steps a = {.p = p, .sql = sql};
    const char *why = pending_steps_run(&a);
    if (why)
        fail_msg("[sqlite] %s: %s", what, why);
    assert_int_equal(dbpool_close(p), 0);
}

/* Memory-mapped reads (xFetch, xUnfetch), temporary files (a sort that
 * spills, a temporary table), VACUUM and VACUUM INTO, exclusive locking
 * (in WAL: the wal-index in heap memory), every rollback journal mode, and
 * a file attached to a file database (a transaction over both: a
 * super-journal) and to a memory one. */
static void test_pending_cancel_reaches_no_sqlite_io_of_other_kinds(void **state) {
    (void)state;
    char vacuum_into[700], attach[700], attach_mem[700];
    snprintf(vacuum_into, sizeof vacuum_into, "VACUUM INTO '%s/vacuum-copy.db'", dbt_tmpdir());
    snprintf(attach, sizeof attach, "ATTACH '%s/attached.db' AS o", dbt_tmpdir());
    snprintf(attach_mem, sizeof attach_mem, "ATTACH '%s/attached-mem.db' AS o", dbt_tmpdir());
    pending_on("mmap_size in WAL", "mmap-wal.db", NULL,
               (const char *const[]){"PRAGMA mmap_size=268435456", "CREATE TABLE t (a, b)", FILL_T,
                                     "?SELECT sum(a) FROM t", "UPDATE t SET a = a + 1",
                                     "PRAGMA wal_checkpoint(TRUNCATE)", "?SELECT sum(length(b)) FROM t",
                                     NULL});
    pending_on("mmap_size in delete mode", "mmap-delete.db", "journal_mode=delete",
               (const char *const[]){"PRAGMA mmap_size=268435456", "CREATE TABLE t (a, b)", FILL_T,
                                     "?SELECT sum(a) FROM t", "UPDATE t SET a = a + 1", NULL});
    pending_on("temp_store=file", "temp.db", NULL,
               (const char *const[]){"PRAGMA temp_store=file", "PRAGMA cache_size=10",
                                     "CREATE TABLE t (a, b)", FILL_T, "?SELECT b FROM t ORDER BY b",
                                     "CREATE TEMP TABLE tt AS SELECT * FROM t", "?SELECT DISTINCT b FROM tt",
                                     "DROP TABLE tt", NULL});
    pending_on("VACUUM", "vacuum.db", "journal_mode=delete",
               (const char *const[]){"CREATE TABLE t (a, b)", FILL_T, "DELETE FROM t WHERE a % 2 = 1",
                                     "VACUUM", vacuum_into, NULL});
    pending_on("locking_mode=exclusive in WAL", "exclusive-wal.db", NULL,
               (const char *const[]){"PRAGMA locking_mode=exclusive", "CREATE TABLE t (a, b)", FILL_T,
                                     "UPDATE t SET a = a + 1", "PRAGMA wal_checkpoint(TRUNCATE)",
                                     "PRAGMA locking_mode=normal", "?SELECT count(*) FROM t", NULL});
    pending_on("locking_mode=exclusive in delete mode", "exclusive-delete.db", "journal_mode=delete",
               (const char *const[]){"PRAGMA locking_mode=exclusive", "CREATE TABLE t (a, b)", FILL_T,
                                     "UPDATE t SET a = a + 1", "PRAGMA locking_mode=normal",
                                     "?SELECT count(*) FROM t", NULL});
    static const char *const modes[] = {"truncate", "persist", "memory", "off"};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        char file[64], keys[64];
        snprintf(file, sizeof file, "journal-%s.db", modes[i]);
        snprintf(keys, sizeof keys, "journal_mode=%s", modes[i]);
        pending_on(keys, file, keys,
                   (const char *const[]){"CREATE TABLE t (a, b)", FILL_T, "BEGIN", "UPDATE t SET a = a + 1",
                                         "COMMIT", "DELETE FROM t", NULL});
    }
    pending_on("ATTACH to a file database", "attach-main.db", "journal_mode=delete",
               (const char *const[]){attach, "CREATE TABLE t (a, b)", "CREATE TABLE o.t (a, b)", "BEGIN",
                                     FILL_T, "INSERT INTO o.t SELECT * FROM t", "COMMIT", "DETACH o", NULL});
    pending_on("ATTACH to sqlite::memory:", NULL, NULL,
               (const char *const[]){attach_mem, "CREATE TABLE t (a, b)", "CREATE TABLE o.t (a, b)", "BEGIN",
                                     FILL_T, "INSERT INTO o.t SELECT * FROM t", "COMMIT",
                                     "?SELECT b FROM o.t ORDER BY b", "DETACH o", NULL});
}

/* The backup API from one lease's handle into another's. */
static int backup_into(dbpool_conn *c, void *arg) {
    sqlite3_backup *b = sqlite3_backup_init(arg, "main", dbpool_conn_native(c), "main");
    if (!b)
        return -1;
    int rc;
    while ((rc = sqlite3_backup_step(b, 8)) == SQLITE_OK) {
    }
    return sqlite3_backup_finish(b) == SQLITE_OK && rc == SQLITE_DONE ? 0 : -1;
}

static void test_pending_cancel_reaches_no_sqlite_io_in_a_backup(void **state) {
    (void)state;
    dbpool *p = open_sqlite("backup-from.db", NULL);
    dbpool *to = open_sqlite("backup-to.db", "journal_mode=delete");
    dbpool_conn *c = bt_acquire(p);
    bt_exec(c, "CREATE TABLE t (a, b)");
    bt_exec(c, FILL_T);
    bt_release(c);
    dbpool_conn *dest = bt_acquire(to);
    pending_steps a = {
        .p = p, .sql = (const char *const[]){NULL}, .fn = backup_into, .arg = dbpool_conn_native(dest)};
    const char *why = pending_steps_run(&a);
    if (why)
        fail_msg("[sqlite] a backup between two leases: %s", why);
    BT_CHECK(bt_query_int(dest, "SELECT count(*) FROM t", NULL, 0) == 20000,
             "the backup did not copy the table");
    bt_release(dest);
    assert_int_equal(dbpool_close(to), 0);
    assert_int_equal(dbpool_close(p), 0);
}

/* A process killed in the middle of writing leaves a hot journal (delete
 * mode) or a WAL that no wal-index describes. The writer is this program
 * run anew (main: --killed-writer): a child that only forked would share
 * the pool's SQLite state (its table of locks, its open files). */
static int killed_writer_main(const char *path, const char *sql) {
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, "unix") != SQLITE_OK ||
        sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK) {
        fprintf(stderr, "killed writer: %s: %s\n", sql, sqlite3_errmsg(db));
        return 2;
    }
    raise(SIGKILL);
    return 3;
}

static void plain_setup(const char *path, const char *sql) {
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, "unix"),
                     SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static void kill_a_writer(const char *path, const char *doomed) {
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        execl("/proc/self/exe", "test_cancel_statement", "--killed-writer", path, doomed, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    BT_CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "the writer was not killed (status %d)",
             status);
}

/* The pool's connection is open (its connect read the schema) before the
 * writer dies, so that the hot journal is rolled back in the statement. */
static void test_pending_cancel_rolls_back_a_hot_journal(void **state) {
    (void)state;
    char path[640], journal[700];
    snprintf(path, sizeof path, "%s/hot.db", dbt_tmpdir());
    snprintf(journal, sizeof journal, "%s-journal", path);
    plain_setup(path, "PRAGMA journal_mode=delete; CREATE TABLE t (a, b); "
                      "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 5000) "
                      "INSERT INTO t SELECT x, randomblob(200) FROM n");
    dbpool *p = open_sqlite("hot.db", "journal_mode=delete");
    /* The update spills pages into the database file (a cache of 10
     * pages) before the writer dies: only the journal can undo them. */
    kill_a_writer(path, "PRAGMA cache_size=10; BEGIN; UPDATE t SET a = -a, b = randomblob(200)");
    struct stat st;
    BT_CHECK(stat(journal, &st) == 0 && st.st_size > 0, "the killed writer left no journal");
    pending_steps a = {.p = p,
                       .journal = journal,
                       .sql = (const char *const[]){"?SELECT sum(a) FROM t", "?PRAGMA integrity_check",
                                                    "INSERT INTO t VALUES (0, NULL)", NULL}};
    const char *why = pending_steps_run(&a);
    BT_CHECK(a.journal_before, "the journal was rolled back before the statement");
    if (why)
        fail_msg("[sqlite] rolling back a hot journal: %s", why);
    dbpool_conn *c = bt_acquire(p);
    BT_CHECK(bt_query_int(c, "SELECT sum(a) FROM t", NULL, 0) == 5000 * 5001 / 2,
             "the killed writer's update was not rolled back");
    bt_release(c);
    assert_int_equal(dbpool_close(p), 0);
    BT_CHECK(stat(journal, &st) != 0, "the hot journal is still there");
}

/* The connect rebuilds the wal-index from the WAL (its schema read); the
 * statements then read through the WAL and checkpoint it. */
static void test_pending_cancel_after_a_wal_recovery(void **state) {
    (void)state;
    char path[640], wal[700];
    snprintf(path, sizeof path, "%s/recover.db", dbt_tmpdir());
    snprintf(wal, sizeof wal, "%s-wal", path);
    plain_setup(path, "PRAGMA journal_mode=wal; CREATE TABLE t (a, b)");
    kill_a_writer(path, "PRAGMA wal_autocheckpoint=0; "
                        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 3000) "
                        "INSERT INTO t SELECT x, randomblob(200) FROM n; "
                        "INSERT INTO t SELECT a + 3000, b FROM t; "
                        "BEGIN; UPDATE t SET a = 0");
    struct stat st;
    BT_CHECK(stat(wal, &st) == 0 && st.st_size > 0, "the killed writer left no WAL");
    dbpool *p = open_sqlite("recover.db", NULL);
    pending_steps a = {.p = p,
                       .sql = (const char *const[]){"?SELECT sum(a) FROM t", "?PRAGMA integrity_check",
                                                    "PRAGMA wal_checkpoint(TRUNCATE)", NULL}};
    const char *why = pending_steps_run(&a);
    if (why)
        fail_msg("[sqlite] after a WAL recovery: %s", why);
    dbpool_conn *c = bt_acquire(p);
    BT_CHECK(bt_query_int(c, "SELECT sum(a) FROM t", NULL, 0) == 6000 * 6001 / 2,
             "the killed writer's two commits are not both there, or its uncommitted update is");
    bt_release(c);
    assert_int_equal(dbpool_close(p), 0);
}

/* A process forked after its pools were closed (threading.md, "fork()")
 * opens a pool of its own. SQLite's Unix VFS resets the random number
 * generator at the first file it opens in a new process, and the next
 * statement that needs a random number (randomblob(), a journal's header,
 * a WAL's salt) seeds it again through the default VFS, which reads
 * /dev/urandom: open, read and close, with the caller's cancellation
 * state. */
static void test_pending_cancel_in_a_forked_child(void **state) {
    (void)state;
    dbpool *p = open_sqlite("forked.db", "journal_mode=delete");
    dbpool_conn *c = bt_acquire(p);
    bt_exec(c, "CREATE TABLE t (a, b)");
    bt_release(c);
    assert_int_equal(dbpool_close(p), 0);
    fflush(NULL);
    pid_t pid = fork(); /* no pool is open */
    assert_true(pid >= 0);
    if (pid == 0) {
        char url[700];
        snprintf(url, sizeof url, "sqlite:%s/forked.db?journal_mode=delete", dbt_tmpdir());
        dbpool_options o;
        dbpool_options_init(&o);
        o.min_size = 1;
        o.max_size = 1;
        o.thread_cache = false;
        dbpool_error e;
        if (dbpool_open(&p, url, &o, &e) != DBPOOL_OK) {
            fprintf(stderr, "child: open: %s\n", e.message);
            _exit(2);
        }
        pending_steps a = {
            .p = p,
            .sql = (const char *const[]){"?SELECT randomblob(16)", "INSERT INTO t VALUES (1, 2)", NULL}};
        const char *why = pending_steps_run(&a);
        if (why) {
            fprintf(stderr, "child: %s\n", why);
            _exit(1);
        }
        dbpool_close(p);
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    BT_CHECK(
        WIFEXITED(status) && WEXITSTATUS(status) == 0,
        "in a forked child, statements with a cancel pending failed (status %d, the child's message above)",
        status);
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "--killed-writer") == 0)
        return killed_writer_main(argv[2], argv[3]);
    bt_init(argc, argv);
    if (bt_is("sqlite")) {
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_cancel_during_sqlite_lock_wait_on_a_file),
            cmocka_unit_test(test_cancel_during_sqlite_lock_wait_in_memory),
            cmocka_unit_test(test_pending_cancel_reaches_no_sqlite_io),
            cmocka_unit_test(test_pending_cancel_reaches_no_sqlite_io_of_other_kinds),
            cmocka_unit_test(test_pending_cancel_reaches_no_sqlite_io_in_a_backup),
            cmocka_unit_test(test_pending_cancel_rolls_back_a_hot_journal),
            cmocka_unit_test(test_pending_cancel_after_a_wal_recovery),
            cmocka_unit_test(test_pending_cancel_in_a_forked_child),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cancel_during_statement),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
