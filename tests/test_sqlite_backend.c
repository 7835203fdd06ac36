/* The SQLite backend's URL keys and the pragmas they set. */
#include "testsupport.h"

#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

static dbpool *open_url(const char *url) {
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.max_retries = 0;
    dbpool *p = NULL;
    dbpool_error e;
    if (dbpool_open(&p, url, &o, &e) != DBPOOL_OK)
        fail_msg("open %s: %s", url, e.message);
    return p;
}

static char *pragma_text(dbpool_conn *c, const char *sql, char *buf, size_t cap) {
    dbpool_result *r = NULL;
    dbpool_error e;
    if (dbpool_query(c, sql, NULL, 0, &r, &e) != DBPOOL_OK)
        fail_msg("%s: %s", sql, e.message);
    assert_int_equal(dbpool_result_next(r, NULL), 1);
    snprintf(buf, cap, "%s", dbpool_result_text(r, 0, NULL));
    dbpool_result_free(r);
    return buf;
}

static void test_file_defaults(void **state) {
    (void)state;
    char url[600];
    snprintf(url, sizeof url, "sqlite:%s/defaults.db", dbt_tmpdir());
    dbpool *p = open_url(url);
    dbpool_conn *c;
    char buf[64];
    assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
    assert_string_equal(pragma_text(c, "PRAGMA journal_mode", buf, sizeof buf), "wal");
    assert_string_equal(pragma_text(c, "PRAGMA synchronous", buf, sizeof buf), "1"); /* NORMAL */
    assert_string_equal(pragma_text(c, "PRAGMA busy_timeout", buf, sizeof buf), "5000");
    assert_string_equal(pragma_text(c, "PRAGMA foreign_keys", buf, sizeof buf), "1");
    /* foreign keys really enforced */
    assert_int_equal(dbpool_exec(c,
                                 "CREATE TABLE a(id INTEGER PRIMARY KEY); "
                                 "CREATE TABLE b(a_id INTEGER REFERENCES a(id))",
                                 NULL, 0, NULL, NULL),
                     DBPOOL_OK);
    dbpool_error e;
    dbpool_param one = dbpool_param_int64(1);
    assert_int_equal(dbpool_exec(c, "INSERT INTO b VALUES(?)", &one, 1, NULL, &e), DBPOOL_EQUERY);
    assert_int_equal(e.native_code, SQLITE_CONSTRAINT_FOREIGNKEY);
    dbpool_release(c);
    dbpool_close(p);
}

static void test_keys_applied(void **state) {
    (void)state;
    char url[600];
    snprintf(url, sizeof url,
             "sqlite:%s/keys.db?journal_mode=delete&synchronous=full&busy_timeout=1234&foreign_keys=off",
             dbt_tmpdir());
    dbpool *p = open_url(url);
    dbpool_conn *c;
    char buf[64];
    assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
    assert_string_equal(pragma_text(c, "PRAGMA journal_mode", buf, sizeof buf), "delete");
    assert_string_equal(pragma_text(c, "PRAGMA synchronous", buf, sizeof buf), "2");
    assert_string_equal(pragma_text(c, "PRAGMA busy_timeout", buf, sizeof buf), "1234");
    assert_string_equal(pragma_text(c, "PRAGMA foreign_keys", buf, sizeof buf), "0");
    dbpool_release(c);
    dbpool_close(p);
}

static void test_absolute_url_form(void **state) {
    (void)state;
    char url[600];
    snprintf(url, sizeof url, "sqlite://%s/abs.db", dbt_tmpdir()); /* sqlite:///tmp/... */
    dbpool *p = open_url(url);
    dbpool_close(p);
    char path[600];
    snprintf(path, sizeof path, "%s/abs.db", dbt_tmpdir());
    assert_int_equal(access(path, F_OK), 0);
}

/* The message names the key that forbade creating the file, and its advice
 * is not what the URL already says: with create_if_missing=false and
 * mode=rwc it used to say "(mode=rw): ... or use mode=rwc". */
static void test_missing_file_not_created(void **state) {
    (void)state;
    static const struct {
        const char *query, *named, *not_advised;
    } forms[] = {
        {"mode=rw", "mode=rw", NULL},
        {"create_if_missing=false", "create_if_missing=false", "use mode=rwc"},
        {"mode=ro", "mode=ro", NULL},
        {"create_if_missing=false&mode=rwc", "create_if_missing=false", "use mode=rwc"},
        {"mode=rwc&create_if_missing=no", "create_if_missing=false", "use mode=rwc"},
    };
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        char url[600], path[600];
        snprintf(path, sizeof path, "%s/missing%zu.db", dbt_tmpdir(), i);
        snprintf(url, sizeof url, "sqlite:%s?%s", path, forms[i].query);
        dbpool *p = NULL;
        dbpool_error e;
        assert_int_equal(dbpool_open(&p, url, NULL, &e), DBPOOL_ENOTFOUND);
        assert_non_null(strstr(e.message, path));
        if (!strstr(e.message, forms[i].named) ||
            (forms[i].not_advised && strstr(e.message, forms[i].not_advised)))
            fail_msg("?%s: the message should name %s%s%s: %s", forms[i].query, forms[i].named,
                     forms[i].not_advised ? " and not say " : "",
                     forms[i].not_advised ? forms[i].not_advised : "", e.message);
        assert_int_not_equal(access(path, F_OK), 0);
    }
}

static void test_read_only(void **state) {
    (void)state;
    char url[600];
    snprintf(url, sizeof url, "sqlite:%s/ro.db", dbt_tmpdir());
    dbpool *p = open_url(url);
    dbpool_conn *c;
    assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
    assert_int_equal(dbpool_exec(c, "CREATE TABLE t(x)", NULL, 0, NULL, NULL), DBPOOL_OK);
    dbpool_release(c);
    dbpool_close(p);
    snprintf(url, sizeof url, "sqlite:%s/ro.db?mode=ro", dbt_tmpdir());
    p = open_url(url);
    assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
    dbpool_error e;
    assert_int_equal(dbpool_exec(c, "INSERT INTO t VALUES(1)", NULL, 0, NULL, &e), DBPOOL_EQUERY);
    assert_int_equal(e.native_code & 0xff, SQLITE_READONLY);
    dbpool_release(c);
    dbpool_close(p);
}

static void test_invalid_path_retried_then_reported(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.max_retries = 2;
    o.backoff_base_ms = 1;
    o.lazy_connect = true;
    dbpool *p = NULL;
    dbpool_error e;
    assert_int_equal(dbpool_open(&p, "sqlite:/nonexistent/dir/db.sqlite", &o, &e), DBPOOL_OK);
    dbpool_conn *c = NULL;
    assert_int_equal(dbpool_acquire(p, 2000, &c, &e), DBPOOL_ECONNECT);
    assert_non_null(strstr(e.message, "/nonexistent/dir"));
    assert_non_null(strstr(e.message, "does not exist"));
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.connect_errors, 3);
    dbpool_close(p);
    /* Without lazy_connect the open itself reports it. */
    o.lazy_connect = false;
    assert_int_equal(dbpool_open(&p, "sqlite:/nonexistent/dir/db.sqlite", &o, &e), DBPOOL_ECONNECT);
    assert_non_null(strstr(e.message, "/nonexistent/dir"));
}

/* dbpool_open of url fails, no retry, with needle in its message. */
static void open_fails_saying(const char *url, const char *needle) {
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.max_retries = 0;
    dbpool *p = NULL;
    dbpool_error e;
    assert_int_not_equal(dbpool_open(&p, url, &o, &e), DBPOOL_OK);
    if (!strstr(e.message, needle))
        fail_msg("opening '%s': the error should say '%s': %s", url, needle, e.message);
}

static void test_not_a_database(void **state) {
    (void)state;
    open_fails_saying(dbt_not_a_database_url("junk.db"), "not a database");
}

/* A directory where the file should be: said so, rather than SQLite's
 * "unable to open database file" alone. */
/* A path longer than SQLite takes (its VFS's 512 bytes, less the
 * "-journal" suffix) is named as the cause, not retried. */
static void test_path_too_long(void **state) {
    (void)state;
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", dbt_tmpdir());
    while (strlen(dir) < 520) {
        strcat(dir, "/dddddddddddddddddddddddddddddddddddddddd");
        assert_int_equal(mkdir(dir, 0755), 0);
    }
    char url[1100];
    snprintf(url, sizeof url, "sqlite:%s/x.db", dir);
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.max_retries = 3;
    o.backoff_base_ms = 2000; /* a retry would take seconds */
    dbpool *p = NULL;
    dbpool_error e;
    int64_t t0 = dbt_now_ms();
    int rc = dbpool_open(&p, url, &o, &e);
    int64_t took = dbt_now_ms() - t0;
    if (rc != DBPOOL_EINVAL || !strstr(e.message, "bytes long"))
        fail_msg("a %zu-byte path: %s: %s", strlen(url) - 7, dbpool_errname(rc), e.message);
    if (took > 1500)
        fail_msg("a path too long was retried (%lld ms)", (long long)took);
}

static void test_directory_as_path(void **state) {
    (void)state;
    char url[620];
    snprintf(url, sizeof url, "sqlite:%s", dbt_tmpdir());
    open_fails_saying(url, "is a directory");
    /* No retry makes a directory a file: not retried, as a path too long
     * is not. */
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.max_retries = 3;
    o.backoff_base_ms = 2000; /* a retry would take seconds */
    dbpool *p = NULL;
    dbpool_error e;
    int64_t t0 = dbt_now_ms();
    int rc = dbpool_open(&p, url, &o, &e);
    int64_t took = dbt_now_ms() - t0;
    if (rc != DBPOOL_EINVAL || took > 1500)
        fail_msg("a directory as the database: %s after %lld ms: %s", dbpool_errname(rc), (long long)took,
                 e.message);
}

static void test_memory_shared_and_typed(void **state) {
    (void)state;
    dbpool *p = open_url("sqlite::memory:");
    dbpool_conn *a, *b;
    assert_int_equal(dbpool_acquire(p, 1000, &a, NULL), DBPOOL_OK);
    assert_int_equal(dbpool_acquire(p, 1000, &b, NULL), DBPOOL_OK);
    assert_ptr_not_equal(dbpool_conn_native(a), dbpool_conn_native(b));
    assert_int_equal(dbpool_exec(a, "CREATE TABLE t(i INTEGER, d REAL, s TEXT, n TEXT)", NULL, 0, NULL, NULL),
                     DBPOOL_OK);
    dbpool_param ps[4] = {dbpool_param_int64(INT64_C(-9007199254740993)), dbpool_param_double(2.5),
                          dbpool_param_text("h\xc3\xa9llo ' ; DROP TABLE t"), dbpool_param_null()};
    int64_t affected = 0;
    assert_int_equal(dbpool_exec(a, "INSERT INTO t VALUES(?, ?, ?, ?)", ps, 4, &affected, NULL), DBPOOL_OK);
    assert_int_equal(affected, 1);
    dbpool_result *r;
    assert_int_equal(dbpool_query(b, "SELECT i, d, s, n FROM t", NULL, 0, &r, NULL), DBPOOL_OK);
    assert_int_equal(dbpool_result_columns(r), 4);
    assert_string_equal(dbpool_result_column_name(r, 2), "s");
    assert_int_equal(dbpool_result_next(r, NULL), 1);
    assert_true(dbpool_result_int64(r, 0) == INT64_C(-9007199254740993));
    assert_true(dbpool_result_double(r, 1) == 2.5);
    assert_string_equal(dbpool_result_text(r, 2, NULL), "h\xc3\xa9llo ' ; DROP TABLE t");
    assert_true(dbpool_result_is_null(r, 3));
    assert_null(dbpool_result_text(r, 3, NULL));
    assert_true(dbpool_result_is_null(r, 99)); /* out of range reads as NULL */
    assert_int_equal(dbpool_result_next(r, NULL), 0);
    dbpool_result_free(r);
    /* Parameter count mismatch is a clear error, not a crash. */
    dbpool_error e;
    assert_int_equal(dbpool_exec(a, "INSERT INTO t VALUES(?, ?, ?, ?)", ps, 2, NULL, &e), DBPOOL_EINVAL);
    assert_non_null(strstr(e.message, "placeholders"));
    dbpool_release(a);
    dbpool_release(b);
    dbpool_close(p);
}

/* sqlite::memory: holds as much as plain :memory: would: no 1 GiB cap
 * (the memdb VFS's default), the same for every connection. */
static void test_memory_not_capped(void **state) {
    (void)state;
    dbpool *p = open_url("sqlite::memory:");
    dbpool_conn *a = dbt_acquire(p), *b = dbt_acquire(p);
    sqlite3_int64 limit = -1;
    assert_int_equal(sqlite3_file_control(dbpool_conn_native(a), "main", SQLITE_FCNTL_SIZE_LIMIT, &limit),
                     SQLITE_OK);
    if (limit <= (sqlite3_int64)1 << 40)
        fail_msg("the shared in-memory database is capped at %lld bytes", (long long)limit);
    sqlite3_int64 other = -1;
    assert_int_equal(sqlite3_file_control(dbpool_conn_native(b), "main", SQLITE_FCNTL_SIZE_LIMIT, &other),
                     SQLITE_OK);
    assert_true(other == limit);
    dbpool_release(a);
    dbpool_release(b);
    dbpool_close(p);
}

static void test_two_memory_pools_are_separate(void **state) {
    (void)state;
    dbpool *p1 = open_url("sqlite::memory:"), *p2 = open_url("sqlite::memory:");
    dbpool_conn *a, *b;
    assert_int_equal(dbpool_acquire(p1, 1000, &a, NULL), DBPOOL_OK);
    assert_int_equal(dbpool_acquire(p2, 1000, &b, NULL), DBPOOL_OK);
    assert_int_equal(dbpool_exec(a, "CREATE TABLE only_in_one(x)", NULL, 0, NULL, NULL), DBPOOL_OK);
    assert_int_equal(dbpool_exec(b, "CREATE TABLE only_in_one(x)", NULL, 0, NULL, NULL), DBPOOL_OK);
    dbpool_release(a);
    dbpool_release(b);
    dbpool_close(p1);
    dbpool_close(p2);
}

/* ---- what a caller leaves in the session ---- */

static int64_t int_of(dbpool_conn *c, const char *sql) {
    dbpool_result *r = NULL;
    dbpool_error e;
    if (dbpool_query(c, sql, NULL, 0, &r, &e) != DBPOOL_OK)
        fail_msg("%s: %s", sql, e.message);
    assert_int_equal(dbpool_result_next(r, NULL), 1);
    int64_t v = dbpool_result_int64(r, 0);
    dbpool_result_free(r);
    return v;
}

static void exec_ok(dbpool_conn *c, const char *sql) {
    dbpool_error e;
    if (dbpool_exec(c, sql, NULL, 0, NULL, &e) != DBPOOL_OK)
        fail_msg("%s: %s", sql, e.message);
}

static dbpool *open_one(const char *url, dbpool_options *o) {
    dbpool *p = NULL;
    dbpool_error e;
    if (dbpool_open(&p, url, o, &e) != DBPOOL_OK)
        fail_msg("open %s: %s", url, e.message);
    return p;
}

static const char *temp_and_attached =
    "SELECT (SELECT count(*) FROM temp.sqlite_master) * 100 + "
    "(SELECT count(*) FROM pragma_database_list WHERE name NOT IN ('main', 'temp'))";

/* Temporary tables, views and triggers, and attached databases, do not
 * reach the next caller of the same connection: a TEMP table would even
 * shadow the main table of its name. Also when the statement that made one
 * is run again (a statement cache must not hide it). */
static void test_temporary_objects_dropped_at_release(void **state) {
    (void)state;
    char url[512], other[512], sql[700];
    snprintf(url, sizeof url, "sqlite://%s/temp_objects.db", dbt_tmpdir());
    snprintf(other, sizeof other, "%s/attached.db", dbt_tmpdir());
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.maintenance_interval_ms = 0;
    dbpool *p = open_one(url, &o);
    dbpool_conn *c = dbt_acquire(p);
    void *first = dbpool_conn_native(c);
    exec_ok(c, "CREATE TABLE accounts(id INTEGER); INSERT INTO accounts VALUES (1)");
    dbpool_release(c);

    c = dbt_acquire(p);
    exec_ok(c, "CREATE TEMP TABLE accounts(id INTEGER)"); /* shadows main.accounts */
    exec_ok(c, "CREATE TEMP TABLE scratch(v TEXT); INSERT INTO scratch VALUES ('private')");
    exec_ok(c, "CREATE TEMP VIEW v AS SELECT * FROM scratch");
    exec_ok(c, "CREATE TEMP TRIGGER tr AFTER INSERT ON scratch BEGIN SELECT 1; END");
    /* A temporary trigger on a main table, named by schema. */
    exec_ok(c, "CREATE TRIGGER temp.on_main AFTER INSERT ON main.accounts BEGIN SELECT 1; END");
    /* Tables linked by a foreign key (foreign_keys is on by default). */
    exec_ok(c, "CREATE TEMP TABLE parent(id INTEGER PRIMARY KEY); INSERT INTO parent VALUES (1); "
               "CREATE TEMP TABLE child(p INTEGER REFERENCES parent(id)); INSERT INTO child VALUES (1)");
    snprintf(sql, sizeof sql, "ATTACH DATABASE '%s' AS other", other);
    exec_ok(c, sql);
    assert_int_equal(int_of(c, "SELECT count(*) FROM accounts"), 0); /* the shadow */
    dbpool_release(c);

    c = dbt_acquire(p);
    assert_ptr_equal(dbpool_conn_native(c), first); /* the same connection, reset */
    assert_int_equal(int_of(c, "SELECT count(*) FROM accounts"), 1);
    assert_int_equal(int_of(c, temp_and_attached), 0);
    dbpool_release(c);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.rollbacks, 1);
    assert_int_equal(s.destroyed, 0);

    /* The same statement twice: the second run must be seen too. */
    for (int i = 0; i < 2; i++) {
        c = dbt_acquire(p);
        exec_ok(c, "CREATE TEMP TABLE IF NOT EXISTS again(a INTEGER)");
        dbpool_release(c);
        c = dbt_acquire(p);
        assert_int_equal(int_of(c, temp_and_attached), 0);
        dbpool_release(c);
    }
    /* Clean leases cost no reset. */
    dbpool_get_stats(p, &s);
    uint64_t resets = s.rollbacks;
    for (int i = 0; i < 5; i++) {
        c = dbt_acquire(p);
        assert_int_equal(int_of(c, "SELECT count(*) FROM accounts"), 1);
        dbpool_release(c);
    }
    dbpool_get_stats(p, &s);
    assert_int_equal(s.rollbacks, resets);
    dbpool_close(p);
}

/* A caller's own authorizer on the native handle (or none) replaces the
 * one that sees temporary objects, attached databases and PRAGMAs: what
 * the lease left after that went unseen, and the next caller of the same
 * connection got its TEMP table (shadowing the main one) and its
 * query_only. The release notices and replaces the connection; a lease
 * that took the handle and left the authorizer alone keeps it. */
static int allow_all(void *arg, int action, const char *a, const char *b, const char *c, const char *d) {
    (void)arg, (void)action, (void)a, (void)b, (void)c, (void)d;
    return SQLITE_OK;
}

/* A caller's own authorizer: the release finds dbpool's gone and replaces
 * the connection. Removing it (NULL) is found the same way when the lease
 * then changed the schema (a temporary table), which expires statements as
 * setting an authorizer does; after a PRAGMA alone it goes unnoticed, as
 * documented (operations.md): the PRAGMA reaches the next caller. */
static void test_replaced_authorizer_replaces_connection(void **state) {
    (void)state;
    enum { OWN, REMOVED_THEN_TEMP_TABLE, REMOVED_THEN_PRAGMA, CASES };
    for (int how = 0; how < CASES; how++) {
        dbpool_options o;
        dbt_options(&o, 0, 1);
        o.maintenance_interval_ms = 0;
        dbpool *p = open_one("sqlite::memory:", &o);
        dbpool_conn *c = dbt_acquire(p);
        exec_ok(c, "CREATE TABLE accounts(id INTEGER); INSERT INTO accounts VALUES (1)");
        dbpool_release(c);

        c = dbt_acquire(p);
        void *first = dbpool_conn_native(c); /* taken, authorizer left alone: kept */
        dbpool_release(c);
        c = dbt_acquire(p);
        assert_ptr_equal(dbpool_conn_native(c), first);
        sqlite3_set_authorizer(first, how == OWN ? allow_all : NULL, NULL);
        if (how == REMOVED_THEN_PRAGMA) {
            /* Not an on/off PRAGMA: SQLite expires statements after one of
             * those (query_only), which the release sees too. */
            exec_ok(c, "PRAGMA cache_size = 123");
        } else {
            exec_ok(c, "CREATE TEMP TABLE accounts(id INTEGER)"); /* shadows main.accounts */
            exec_ok(c, "PRAGMA query_only = ON");
        }
        dbpool_release(c);

        c = dbt_acquire(p);
        dbpool_stats s;
        dbpool_get_stats(p, &s);
        if (how != REMOVED_THEN_PRAGMA) {
            assert_int_equal(int_of(c, "SELECT count(*) FROM accounts"), 1);
            assert_int_equal(int_of(c, temp_and_attached), 0);
            assert_int_equal(int_of(c, "PRAGMA query_only"), 0);
            assert_int_equal(s.created, 2); /* the one whose authorizer was replaced is gone */
        } else {
            assert_ptr_equal(dbpool_conn_native(c), first);
            assert_int_equal(int_of(c, "PRAGMA cache_size"), 123);
            assert_int_equal(s.created, 1);
        }
        dbpool_release(c);
        dbpool_close(p);
    }
}

/* after_connect's own authorizer would leave every lease unwatched: the
 * connect fails and says why. */
static int set_authorizer(void *native, void *user) {
    (void)user;
    sqlite3_set_authorizer(native, allow_all, NULL);
    return 0;
}

static void test_after_connect_authorizer_refused(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.maintenance_interval_ms = 0;
    o.max_retries = 0;
    o.after_connect = set_authorizer;
    dbpool *p = NULL;
    dbpool_error e;
    int rc = dbpool_open(&p, "sqlite::memory:", &o, &e); /* opens its first connection */
    if (rc == DBPOOL_OK)
        dbpool_close(p);
    assert_int_equal(rc, DBPOOL_EINVAL);
    if (!strstr(e.message, "after_connect replaced dbpool's SQLite authorizer"))
        fail_msg("the error does not say why: %s", e.message);
}

/* An in-memory database that went into WAL mode (possible under an
 * exclusive lock only: memdb has no shared memory for the WAL index)
 * could not be opened by any other connection: after the connection
 * that did it was replaced, every new one failed with "unable to open
 * database file", the pool broken until closed. Refused, saying why. */
static void test_memory_wal_refused(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.maintenance_interval_ms = 0;
    o.max_retries = 0;
    dbpool *p = open_one("sqlite::memory:", &o);
    dbpool_conn *c = dbt_acquire(p);
    exec_ok(c, "CREATE TABLE kept(x); INSERT INTO kept VALUES (1)");
    exec_ok(c, "PRAGMA locking_mode = EXCLUSIVE");
    dbpool_error e;
    int rc = dbpool_exec(c, "PRAGMA journal_mode = WAL", NULL, 0, NULL, &e);
    if (rc != DBPOOL_EQUERY || !strstr(e.message, "cannot go into WAL mode"))
        fail_msg("journal_mode=WAL on sqlite::memory: under an exclusive lock: %s: %s", dbpool_errname(rc),
                 rc ? e.message : "accepted");
    exec_ok(c, "INSERT INTO kept VALUES (2)");
    dbpool_release(c); /* replaced: locking_mode cannot be put back */

    dbpool_conn *a = NULL, *b = NULL;
    if (dbpool_acquire(p, 2000, &a, &e) != DBPOOL_OK)
        fail_msg("a new connection: %s", e.message);
    if (dbpool_acquire(p, 2000, &b, &e) != DBPOOL_OK)
        fail_msg("a second new connection: %s", e.message);
    assert_int_equal(int_of(a, "SELECT count(*) FROM kept"), 2);
    assert_int_equal(int_of(b, "SELECT count(*) FROM kept"), 2);
    dbpool_release(a);
    dbpool_release(b);

    /* Through init_sql: the connect fails and says why. */
    o.init_sql = "PRAGMA locking_mode = EXCLUSIVE; PRAGMA journal_mode = WAL";
    dbpool *q = NULL;
    rc = dbpool_open(&q, "sqlite::memory:", &o, &e);
    if (rc == DBPOOL_OK)
        dbpool_close(q);
    if (rc == DBPOOL_OK || !strstr(e.message, "cannot go into WAL mode"))
        fail_msg("init_sql putting sqlite::memory: in WAL mode: %s: %s", dbpool_errname(rc),
                 rc ? e.message : "accepted");
    dbpool_close(p);
}

/* What after_connect sets up is where every lease starts: it stays, while
 * what a caller adds goes. */
static int attach_and_prepare(void *native, void *user) {
    sqlite3 *db = native;
    char sql[600];
    snprintf(sql, sizeof sql,
             "ATTACH DATABASE '%s' AS shared; CREATE TEMP TABLE setup(v INTEGER); "
             "CREATE TABLE IF NOT EXISTS base(a INTEGER); "
             "CREATE TEMP TRIGGER btr AFTER INSERT ON base BEGIN SELECT 1; END;",
             (const char *)user);
    return sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : 1;
}

/* The last warning about a changed baseline, as logged. */
static char baseline_log[1024];

static void keep_baseline_warning(void *user, dbpool_log_level level, const char *msg) {
    (void)user;
    (void)level;
    if (strstr(msg, "dropped or changed") || strstr(msg, "cannot put back"))
        snprintf(baseline_log, sizeof baseline_log, "%s", msg);
}

/* A pool of one on tmpdir/file whose after_connect attaches tmpdir/shared
 * (the path kept in *shared, which must outlive the pool). */
static dbpool *open_with_baseline(const char *file, const char *attached, char *shared, size_t cap) {
    char url[512];
    snprintf(url, sizeof url, "sqlite://%s/%s", dbt_tmpdir(), file);
    snprintf(shared, cap, "%s/%s", dbt_tmpdir(), attached);
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.maintenance_interval_ms = 0;
    o.after_connect = attach_and_prepare;
    o.after_connect_user = shared;
    o.log_fn = keep_baseline_warning;
    o.log_level = DBPOOL_LOG_WARN;
    return open_one(url, &o);
}

static void test_after_connect_objects_kept(void **state) {
    (void)state;
    char shared[512];
    dbpool *p = open_with_baseline("after_connect.db", "shared.db", shared, sizeof shared);
    dbpool_conn *c = dbt_acquire(p);
    exec_ok(c, "CREATE TEMP TABLE mine(v INTEGER)");
    dbpool_release(c);
    c = dbt_acquire(p);
    assert_int_equal(int_of(c, "SELECT count(*) FROM pragma_database_list WHERE name = 'shared'"), 1);
    assert_int_equal(int_of(c, "SELECT count(*) FROM temp.sqlite_master WHERE name = 'setup'"), 1);
    assert_int_equal(int_of(c, "SELECT count(*) FROM temp.sqlite_master WHERE name = 'mine'"), 0);
    dbpool_release(c);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.rollbacks, 1);
    dbpool_close(p);
}

/* Odd names are dropped too, and the reset needs no lock on the main
 * database: another connection's exclusive transaction neither delays the
 * release nor costs the connection. */
static void test_temporary_objects_dropped_while_main_is_locked(void **state) {
    (void)state;
    char url[512];
    snprintf(url, sizeof url, "sqlite://%s/locked_main.db?journal_mode=delete&busy_timeout=3000",
             dbt_tmpdir());
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.maintenance_interval_ms = 0;
    o.validation = DBPOOL_VALIDATE_NEVER;
    dbpool *p = open_one(url, &o);
    dbpool_conn *a = dbt_acquire(p);
    exec_ok(a, "CREATE TABLE IF NOT EXISTS t(v INTEGER)");
    dbpool_conn *b = dbt_acquire(p);
    void *first = dbpool_conn_native(a);
    exec_ok(a, "CREATE TEMP TABLE \"odd\nname \"\"quoted\"\"\"(x)");
    exec_ok(a, "CREATE TEMP TABLE plain(x)");
    exec_ok(b, "BEGIN EXCLUSIVE");
    int64_t t0 = dbt_now_ms();
    assert_int_equal(dbpool_release(a), DBPOOL_OK);
    int64_t took = dbt_now_ms() - t0;
    if (took > 1000)
        fail_msg("the release waited %lld ms for the main database's lock", (long long)took);
    exec_ok(b, "ROLLBACK");
    dbpool_release(b);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.destroyed, 0);
    /* LIFO: the connection released last (b) comes first; take both. */
    a = dbt_acquire(p);
    b = dbt_acquire(p);
    dbpool_conn *same = dbpool_conn_native(a) == first ? a : b;
    assert_ptr_equal(dbpool_conn_native(same), first);
    assert_int_equal(int_of(same, temp_and_attached), 0);
    dbpool_release(a);
    dbpool_release(b);
    dbpool_close(p);
}

/* A caller that drops and remakes what after_connect set up leaves a
 * session that cannot be put back: the connection is replaced, and the
 * next caller gets the baseline fresh, without the caller's rows. */
static void test_changed_baseline_replaces_connection(void **state) {
    (void)state;
    /* Each leaves the baseline's names in place, with other contents. */
    static const char *const changes[] = {
        "DROP TABLE temp.setup; CREATE TEMP TABLE setup(secret TEXT); INSERT INTO setup VALUES ('caller A')",
        /* the same text again: the table is new, its rows the caller's */
        "DROP TABLE temp.setup; CREATE TEMP TABLE setup(v INTEGER); INSERT INTO setup VALUES (42)",
        /* another file behind the baseline's database name */
        "DETACH shared; ATTACH DATABASE ':memory:' AS shared",
        /* the same, the name not written as a literal (SQLite does not
         * tell the authorizer which database DETACH ? detaches) */
        "DETACH 'sha' || 'red'; ATTACH DATABASE ':memory:' AS shared",
        /* the baseline trigger, rewritten by the rename, fires on base_old */
        "ALTER TABLE base RENAME TO base_old; CREATE TABLE base(a INTEGER)",
        /* a new temp_store deletes every temporary object */
        "PRAGMA temp_store = MEMORY",
    };
    /* What the warning names: the object the caller changed. */
    static const char *const named[] = {"table 'setup'",     "table 'setup'", "database 'shared'",
                                        "database 'shared'", "trigger 'btr'", "trigger 'btr'"};
    for (size_t i = 0; i < sizeof changes / sizeof changes[0]; i++) {
        char file[64], shared[512];
        snprintf(file, sizeof file, "changed_baseline_%zu.db", i);
        dbpool *p = open_with_baseline(file, "shared2.db", shared, sizeof shared);
        dbpool_conn *c = dbt_acquire(p);
        exec_ok(c, changes[i]);
        dbpool_release(c);
        dbpool_stats s;
        dbpool_get_stats(p, &s);
        if (s.destroyed_by[DBPOOL_CLOSE_RESET_FAILED] != 1)
            fail_msg("after \"%s\": the connection was kept", changes[i]);
        if (!strstr(baseline_log, named[i]))
            fail_msg("after \"%s\": the warning should name the %s: %s", changes[i], named[i], baseline_log);
        c = dbt_acquire(p);
        assert_int_equal(int_of(c, "SELECT count(*) FROM temp.setup"), 0);
        assert_int_equal(int_of(c, "SELECT count(*) FROM pragma_database_list WHERE name = 'shared' AND file "
                                   "LIKE '%shared2.db'"),
                         1);
        assert_int_equal(int_of(c, "SELECT count(*) FROM temp.sqlite_master WHERE name = 'btr' AND sql LIKE "
                                   "'%ON base %'"),
                         1);
        dbpool_release(c);
        dbpool_close(p);
    }
}

/* PRAGMAs a caller sets do not reach the next caller of the connection:
 * the URL's foreign_keys, busy_timeout and synchronous hold for every
 * lease, query_only does not refuse the next caller's writes, and what
 * init_sql set is what comes back. Also when set on the native handle, or
 * by a statement run a second time (a statement cache must not hide it),
 * and without waiting for another connection's lock on the database. A
 * setting that cannot be put back costs the connection. */
static void test_pragmas_restored_at_release(void **state) {
    (void)state;
    char url[512];
    snprintf(url, sizeof url,
             "sqlite://%s/pragmas.db?journal_mode=delete&busy_timeout=3000&synchronous=normal", dbt_tmpdir());
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.maintenance_interval_ms = 0;
    o.validation = DBPOOL_VALIDATE_NEVER;
    o.init_sql = "PRAGMA cache_size = -1234";
    o.log_fn = keep_baseline_warning;
    o.log_level = DBPOOL_LOG_WARN;
    dbpool *p = open_one(url, &o);
    dbpool_conn *a = dbt_acquire(p);
    exec_ok(a, "CREATE TABLE IF NOT EXISTS t(v INTEGER CHECK (v > 0))");
    dbpool_conn *b = dbt_acquire(p);
    void *first = dbpool_conn_native(a);
    static const char *const checks[] = {
        "PRAGMA query_only",        "PRAGMA foreign_keys",
        "PRAGMA busy_timeout",      "PRAGMA synchronous",
        "PRAGMA cache_size",        "PRAGMA recursive_triggers",
        "PRAGMA full_column_names", "PRAGMA ignore_check_constraints",
    };
    static const int64_t want[] = {0, 1, 3000, 1, -1234, 0, 0, 0};
    exec_ok(a, "PRAGMA query_only = 1; PRAGMA foreign_keys = off; PRAGMA busy_timeout = 7; "
               "PRAGMA main.synchronous = OFF; PRAGMA cache_size = 10; PRAGMA full_column_names = 1; "
               "PRAGMA IGNORE_CHECK_CONSTRAINTS(1)");
    assert_int_equal(sqlite3_exec(dbpool_conn_native(a), "PRAGMA recursive_triggers = 1", NULL, NULL, NULL),
                     SQLITE_OK);
    for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++)
        if (int_of(a, checks[i]) == want[i])
            fail_msg("%s did not change in the lease", checks[i]);
    exec_ok(b, "BEGIN EXCLUSIVE; INSERT INTO t VALUES (1)");
    int64_t t0 = dbt_now_ms();
    assert_int_equal(dbpool_release(a), DBPOOL_OK);
    int64_t took = dbt_now_ms() - t0;
    if (took > 1000)
        fail_msg("the release waited %lld ms for the main database's lock", (long long)took);
    exec_ok(b, "ROLLBACK");
    dbpool_release(b);
    a = dbt_acquire(p);
    b = dbt_acquire(p);
    dbpool_conn *same = dbpool_conn_native(a) == first ? a : b;
    assert_ptr_equal(dbpool_conn_native(same), first);
    for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++) {
        int64_t v = int_of(same, checks[i]);
        if (v != want[i])
            fail_msg("the next lease found %s = %lld, not %lld", checks[i], (long long)v, (long long)want[i]);
    }
    dbpool_error e;
    assert_int_equal(dbpool_exec(same, "INSERT INTO t VALUES (-1)", NULL, 0, NULL, &e), DBPOOL_EQUERY);
    assert_int_equal(e.native_code, SQLITE_CONSTRAINT_CHECK);
    dbpool_release(a);
    dbpool_release(b);

    /* The same statement twice, on the same connection. Setting the
     * journal and locking modes the connection has changes nothing. */
    for (int i = 0; i < 2; i++) {
        a = dbt_acquire(p);
        exec_ok(a, "PRAGMA journal_mode = DELETE; PRAGMA locking_mode = normal");
        exec_ok(a, "PRAGMA foreign_keys = 0");
        assert_int_equal(int_of(a, "PRAGMA foreign_keys"), 0);
        dbpool_release(a);
        a = dbt_acquire(p);
        assert_int_equal(int_of(a, "PRAGMA foreign_keys"), 1);
        dbpool_release(a);
    }
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.destroyed, 0);

    /* locking_mode=exclusive would keep its locks from every other
     * connection, whoever holds this one next. */
    a = dbt_acquire(p);
    exec_ok(a, "PRAGMA locking_mode = EXCLUSIVE");
    baseline_log[0] = '\0';
    dbpool_release(a);
    dbpool_get_stats(p, &s);
    assert_int_equal(s.destroyed_by[DBPOOL_CLOSE_RESET_FAILED], 1);
    if (!strstr(baseline_log, "locking_mode"))
        fail_msg("the warning should name locking_mode: %s", baseline_log);
    a = dbt_acquire(p);
    b = dbt_acquire(p);
    exec_ok(a, "INSERT INTO t VALUES (2)");
    exec_ok(b, "INSERT INTO t VALUES (3)");
    dbpool_release(a);
    dbpool_release(b);
    dbpool_close(p);
}

/* A pool of one connection on `file`, validating at every hand-out. */
static dbpool *open_single(const char *file, const char *keys) {
    char url[700];
    snprintf(url, sizeof url, "sqlite:%s%s%s", file, keys ? "?" : "", keys ? keys : "");
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.max_retries = 0;
    o.validation = DBPOOL_VALIDATE_ALWAYS;
    return open_one(url, &o);
}

static void raw_exec(const char *file, const char *sql) {
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(file, &db), SQLITE_OK);
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg);
    sqlite3_close(db);
}

/* dbpool_open of url in a child process, as user nobody when we are root
 * (root may write anywhere): its code, and its message in msg; 1 when the
 * child could not become nobody (a user namespace without that user). */
static int open_as_nobody(const char *url, char *msg, size_t cap) {
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0))
            _exit(77);
        dbpool_options o;
        dbpool_options_init(&o);
        o.max_retries = 0;
        dbpool *p = NULL;
        dbpool_error e;
        int rc = dbpool_open(&p, url, &o, &e);
        if (rc == DBPOOL_OK)
            dbpool_close(p);
        char out[600];
        int n = snprintf(out, sizeof out, "%d %s", rc, rc == DBPOOL_OK ? "" : e.message);
        if (write(fds[1], out, (size_t)n) != n)
            _exit(3);
        _exit(0);
    }
    close(fds[1]);
    char in[600];
    size_t got = 0;
    ssize_t n;
    while (got < sizeof in - 1 && (n = read(fds[0], in + got, sizeof in - 1 - got)) > 0)
        got += (size_t)n;
    in[got] = '\0';
    close(fds[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 77)
        return 1;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("the child opening %s failed (status %d)", url, status);
    int rc = atoi(in);
    const char *space = strchr(in, ' ');
    snprintf(msg, cap, "%s", space ? space + 1 : "");
    return rc;
}

/* A database opened with mode=ro that still cannot be read says why, and
 * does not advise the mode=ro it already has. */
static void test_read_only_errors_say_why(void **state) {
    (void)state;
    char path[600], url[700];
    dbpool_error e;
    dbpool *p = NULL;
    /* A journal mode other than the file's: mode=ro cannot write it. */
    snprintf(path, sizeof path, "%s/ro_journal.db", dbt_tmpdir());
    raw_exec(path, "PRAGMA journal_mode=delete; CREATE TABLE t(x)");
    snprintf(url, sizeof url, "sqlite:%s?mode=ro&journal_mode=wal", path);
    int rc = dbpool_open(&p, url, NULL, &e);
    if (rc != DBPOOL_EINVAL || !strstr(e.message, "journal_mode=unchanged") ||
        strstr(e.message, "with mode=ro"))
        fail_msg("mode=ro&journal_mode=wal on a rollback-journal file: %s: %s", dbpool_errname(rc),
                 e.message);
    snprintf(url, sizeof url, "sqlite:%s?mode=ro&journal_mode=delete", path); /* the file's own: fine */
    dbpool_close(open_url(url));

    /* A WAL database in a directory this process may not write: SQLite
     * cannot make its -shm file, even to read. */
    char dir[600];
    snprintf(dir, sizeof dir, "%s/ro_dir", dbt_tmpdir());
    assert_int_equal(mkdir(dir, 0755), 0);
    snprintf(path, sizeof path, "%s/wal.db", dir);
    raw_exec(path, "PRAGMA journal_mode=wal; CREATE TABLE t(x)"); /* closed: no -wal, no -shm */
    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(chmod(dir, 0555), 0);
    assert_int_equal(chmod(dbt_tmpdir(), 0755), 0); /* for nobody */
    snprintf(url, sizeof url, "sqlite:%s?mode=ro", path);
    char msg[600];
    rc = open_as_nobody(url, msg, sizeof msg);
    assert_int_equal(chmod(dbt_tmpdir(), 0700), 0);
    assert_int_equal(chmod(dir, 0755), 0);
    if (rc == 1)
        print_message("not checked: cannot run as user nobody here\n");
    else if (rc != DBPOOL_EPERM || !strstr(msg, "-shm") || !strstr(msg, "write access to that directory") ||
             strstr(msg, "with mode=ro"))
        fail_msg("mode=ro on a WAL database in a read-only directory: %s: %s", dbpool_errname(rc), msg);
}

/* A file attached to sqlite::memory: (in a lease, or in after_connect) is
 * that file: SQLite opens an attached database through the VFS of the
 * main one, and memdb's made every path an empty database in memory, so
 * the ATTACH succeeded, its tables were not there and what was written
 * to it vanished. In WAL mode and with a rollback journal; and VACUUM
 * INTO, whose backup went nowhere. */
static void test_memory_attaches_files(void **state) {
    (void)state;
    const char *modes[] = {"delete", "wal"};
    for (int i = 0; i < 2; i++) {
        char file[600], sql[800];
        snprintf(file, sizeof file, "%s/attached_to_memory_%s.db", dbt_tmpdir(), modes[i]);
        snprintf(sql, sizeof sql, "PRAGMA journal_mode=%s; CREATE TABLE t(x); INSERT INTO t VALUES (1)",
                 modes[i]);
        raw_exec(file, sql);
        dbpool_options o;
        dbt_options(&o, 0, 2);
        o.maintenance_interval_ms = 0;
        dbpool *p = open_one("sqlite::memory:", &o);
        dbpool_conn *c = dbt_acquire(p);
        exec_ok(c, "CREATE TABLE in_memory(x)");
        if (i == 0) { /* VACUUM INTO attaches its target the same way: a backup to nowhere */
            char backup[700];
            snprintf(backup, sizeof backup, "%s/memory_backup.db", dbt_tmpdir());
            snprintf(sql, sizeof sql, "VACUUM INTO '%s'", backup);
            exec_ok(c, sql);
            if (access(backup, F_OK) != 0)
                fail_msg("VACUUM INTO '%s' from sqlite::memory: made no file", backup);
        }
        snprintf(sql, sizeof sql, "ATTACH DATABASE '%s' AS disk", file);
        exec_ok(c, sql);
        assert_int_equal(int_of(c, "SELECT count(*) FROM disk.t"), 1);
        exec_ok(c, "INSERT INTO disk.t VALUES (2)");
        dbpool_conn *other = dbt_acquire(p); /* the memory database is still the pool's, shared */
        assert_int_equal(int_of(other, "SELECT count(*) FROM sqlite_master WHERE name = 'in_memory'"), 1);
        dbpool_release(other);
        dbpool_release(c);
        assert_int_equal(dbpool_close(p), 0);

        sqlite3 *db = NULL;
        assert_int_equal(sqlite3_open(file, &db), SQLITE_OK);
        sqlite3_stmt *st = NULL;
        assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM t", -1, &st, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        int n = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
        sqlite3_close(db);
        if (n != 2)
            fail_msg("the row written through the attached %s file is not in it (%d rows)", modes[i], n);
    }
}

/* A writable rollback-journal database in a directory this process may
 * not write: the pool opened it, and every write failed with "attempt
 * to write a readonly database" (SQLite cannot make the -journal file).
 * Refused at the connect, as a file that can only be opened read-only
 * is; a journal mode that makes no file is fine. */
static void test_read_only_directory_refused_at_connect(void **state) {
    (void)state;
    char dir[600], path[700], url[800], msg[600];
    snprintf(dir, sizeof dir, "%s/ro_journal_dir", dbt_tmpdir());
    assert_int_equal(mkdir(dir, 0755), 0);
    snprintf(path, sizeof path, "%s/rollback.db", dir);
    raw_exec(path, "PRAGMA journal_mode=delete; CREATE TABLE t(x)");
    assert_int_equal(chmod(path, 0666), 0); /* the file itself may be written */
    assert_int_equal(chmod(dir, 0555), 0);
    assert_int_equal(chmod(dbt_tmpdir(), 0755), 0); /* for nobody */
    snprintf(url, sizeof url, "sqlite:%s?journal_mode=unchanged", path);
    int rc = open_as_nobody(url, msg, sizeof msg);
    char msg_memory[600];
    snprintf(url, sizeof url, "sqlite:%s?journal_mode=memory", path);
    int rc_memory = rc == 1 ? 1 : open_as_nobody(url, msg_memory, sizeof msg_memory);
    assert_int_equal(chmod(dbt_tmpdir(), 0700), 0);
    assert_int_equal(chmod(dir, 0755), 0);
    if (rc == 1) {
        print_message("not checked: cannot run as user nobody here\n");
        return;
    }
    if (rc != DBPOOL_EPERM || !strstr(msg, "-journal") || !strstr(msg, "write access to that directory"))
        fail_msg("a rollback-journal database in a read-only directory: %s: %s", dbpool_errname(rc), msg);
    if (rc_memory != DBPOOL_OK)
        fail_msg("journal_mode=memory there: %s: %s", dbpool_errname(rc_memory), msg_memory);
}

/* The same with a -journal file left in that directory (by an earlier
 * journal mode, or a crash) that may be written: delete mode deletes it at
 * every commit, which takes the directory. The connect passed, and every
 * write then failed with "disk I/O error". In persist mode it is enough. */
static void test_read_only_directory_with_a_journal_left(void **state) {
    (void)state;
    char dir[600], path[700], journal[720], url[800], msg[600], msg_persist[600];
    snprintf(dir, sizeof dir, "%s/ro_journal_left", dbt_tmpdir());
    assert_int_equal(mkdir(dir, 0755), 0);
    snprintf(path, sizeof path, "%s/rollback.db", dir);
    raw_exec(path, "PRAGMA journal_mode=delete; CREATE TABLE t(x)");
    snprintf(journal, sizeof journal, "%s-journal", path);
    FILE *f = fopen(journal, "w");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(chmod(path, 0666), 0);
    assert_int_equal(chmod(journal, 0666), 0);
    assert_int_equal(chmod(dir, 0555), 0);
    assert_int_equal(chmod(dbt_tmpdir(), 0755), 0); /* for nobody */
    snprintf(url, sizeof url, "sqlite:%s?journal_mode=unchanged", path);
    int rc = open_as_nobody(url, msg, sizeof msg);
    snprintf(url, sizeof url, "sqlite:%s?journal_mode=persist", path);
    int rc_persist = rc == 1 ? 1 : open_as_nobody(url, msg_persist, sizeof msg_persist);
    assert_int_equal(chmod(dbt_tmpdir(), 0700), 0);
    assert_int_equal(chmod(dir, 0755), 0);
    if (rc == 1) {
        print_message("not checked: cannot run as user nobody here\n");
        return;
    }
    if (rc != DBPOOL_EPERM || !strstr(msg, "creates and deletes") ||
        !strstr(msg, "write access to that directory"))
        fail_msg("delete mode, a -journal left in a read-only directory: %s: %s", dbpool_errname(rc), msg);
    if (rc_persist != DBPOOL_OK)
        fail_msg("journal_mode=persist there: %s: %s", dbpool_errname(rc_persist), msg_persist);
}

/* A statement stepped on the native handle and left unfinished holds a
 * read snapshot: the release resets it, and the next lease sees rows
 * committed since and can write. */
static void test_unfinished_statement_reset_at_release(void **state) {
    (void)state;
    char file[600];
    snprintf(file, sizeof file, "%s/midstep.db", dbt_tmpdir());
    dbpool *p = open_single(file, NULL);
    dbpool_conn *c = dbt_acquire(p);
    exec_ok(c, "CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3)");
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(dbpool_conn_native(c), "SELECT x FROM t", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW); /* and left there */
    dbpool_release(c);
    raw_exec(file, "INSERT INTO t VALUES (4)");
    c = dbt_acquire(p);
    int64_t n = int_of(c, "SELECT count(*) FROM t");
    dbpool_error e;
    int rc = dbpool_exec(c, "INSERT INTO t VALUES (5)", NULL, 0, NULL, &e);
    if (n != 4 || rc != DBPOOL_OK)
        fail_msg("the next lease read %lld rows of 4 and its INSERT gave %s: %s", (long long)n,
                 dbpool_errname(rc), rc ? e.message : "");
    dbpool_release(c);
    sqlite3_finalize(st);
    assert_int_equal(dbpool_close(p), 0);
}

/* The database file renamed over while a connection is pooled: validation
 * notices, and the next lease reads (and writes) the new file. (In
 * rollback-journal mode: a WAL database's -wal file would be read with
 * whatever file carries its name, which SQLite warns against.) */
static void test_replaced_file_noticed(void **state) {
    (void)state;
    char file[600], other[620];
    snprintf(file, sizeof file, "%s/replaced.db", dbt_tmpdir());
    snprintf(other, sizeof other, "%s/replacement.db", dbt_tmpdir());
    dbpool *p = open_single(file, "journal_mode=delete");
    dbpool_conn *c = dbt_acquire(p);
    exec_ok(c, "CREATE TABLE t(v TEXT); INSERT INTO t VALUES ('old')");
    dbpool_release(c);
    raw_exec(other, "CREATE TABLE t(v TEXT); INSERT INTO t VALUES ('new')");
    assert_int_equal(rename(other, file), 0);
    c = dbt_acquire(p);
    char buf[32];
    pragma_text(c, "SELECT v FROM t", buf, sizeof buf);
    if (strcmp(buf, "new") != 0)
        fail_msg("after the file was replaced the pool still read '%s'", buf);
    dbpool_release(c);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.destroyed, 1); /* the connection to the old file */
    assert_int_equal(dbpool_close(p), 0);
}

/* In rollback-journal mode a write to a moved file fails with
 * SQLITE_READONLY_DBMOVED: that connection is not pooled again. */
static void test_moved_file_write_closes_connection(void **state) {
    (void)state;
    char file[600], moved[620];
    snprintf(file, sizeof file, "%s/moved.db", dbt_tmpdir());
    snprintf(moved, sizeof moved, "%s/moved-away.db", dbt_tmpdir());
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.max_retries = 0;
    o.validation = DBPOOL_VALIDATE_NEVER;
    char url[700];
    snprintf(url, sizeof url, "sqlite:%s?journal_mode=delete", file);
    dbpool *p = open_one(url, &o);
    dbpool_conn *c = dbt_acquire(p);
    exec_ok(c, "CREATE TABLE t(x)");
    dbpool_release(c);
    assert_int_equal(rename(file, moved), 0);
    c = dbt_acquire(p);
    dbpool_error e;
    assert_int_equal(dbpool_exec(c, "INSERT INTO t VALUES (1)", NULL, 0, NULL, &e), DBPOOL_EQUERY);
    assert_int_equal(e.native_code, SQLITE_READONLY_DBMOVED);
    /* Said as what it is, not as SQLite's "attempt to write a readonly
     * database", which points at permissions. */
    if (!strstr(e.message, "renamed, replaced or deleted") || !strstr(e.message, file))
        fail_msg("a write to a moved database file: %s", e.message);
    dbpool_release(c);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.destroyed, 1);
    assert_int_equal(dbpool_close(p), 0);
}

/* A caller's mistake about a file it attaches is not the connection's
 * fault: the connection stays in the pool. */
static void test_failed_attach_keeps_connection(void **state) {
    (void)state;
    char file[600];
    snprintf(file, sizeof file, "%s/attach-fail.db", dbt_tmpdir());
    dbpool *p = open_single(file, NULL);
    dbpool_conn *c = dbt_acquire(p);
    dbpool_error e;
    assert_int_equal(dbpool_exec(c, "ATTACH '/nonexistent/dir/x.db' AS x", NULL, 0, NULL, &e), DBPOOL_EQUERY);
    assert_int_equal(e.native_code & 0xff, SQLITE_CANTOPEN);
    dbpool_release(c);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    if (s.destroyed != 0)
        fail_msg("a failed ATTACH of another file closed the connection");
    assert_int_equal(dbpool_close(p), 0);
}

/* A busy_timeout out of range says the range it must be in (it said only
 * "is not a number of milliseconds", of -5 and of 99999999999 alike). */
static void test_busy_timeout_range_named(void **state) {
    (void)state;
    const char *urls[] = {"sqlite::memory:?busy_timeout=-5", "sqlite::memory:?busy_timeout=99999999999",
                          "sqlite::memory:?busy_timeout=soon"};
    for (size_t i = 0; i < sizeof urls / sizeof *urls; i++) {
        dbpool *p = NULL;
        dbpool_error e;
        int rc = dbpool_open(&p, urls[i], NULL, &e);
        if (rc != DBPOOL_EINVAL || !strstr(e.message, "busy_timeout") ||
            !strstr(e.message, "from 0 to 2147483647"))
            fail_msg("%s: %s: %s", urls[i], dbpool_errname(rc), e.message);
        assert_null(p);
    }
}

/* Keys that cannot take effect are refused, not ignored; key order does
 * not matter; paths are paths. */
static void test_keys_that_cannot_apply(void **state) {
    (void)state;
    dbpool_error e;
    dbpool *p = NULL;
    int rc = dbpool_open(&p, "sqlite::memory:?journal_mode=wal", NULL, &e);
    if (rc != DBPOOL_EINVAL || !strstr(e.message, "journal_mode"))
        fail_msg("sqlite::memory:?journal_mode=wal: %s: %s", dbpool_errname(rc), e.message);
    rc = dbpool_open(&p, "sqlite::memory:?mode=ro", NULL, &e);
    if (rc != DBPOOL_EINVAL)
        fail_msg("sqlite::memory:?mode=ro: %s: %s", dbpool_errname(rc), e.message);
    rc = dbpool_open(&p, "sqlite:%3Amemory%3A?create_if_missing=false", NULL, &e);
    if (rc != DBPOOL_EINVAL)
        fail_msg("sqlite:%%3Amemory%%3A?create_if_missing=false: %s: %s", dbpool_errname(rc), e.message);

    char path[600], url[700];
    snprintf(path, sizeof path, "%s/order.db", dbt_tmpdir());
    snprintf(url, sizeof url, "sqlite:%s?create_if_missing=false&mode=rwc", path);
    assert_int_equal(dbpool_open(&p, url, NULL, &e), DBPOOL_ENOTFOUND);
    assert_int_not_equal(access(path, F_OK), 0);

    /* A WAL file opened with journal_mode=unchanged runs synchronous=normal. */
    snprintf(path, sizeof path, "%s/walfile.db", dbt_tmpdir());
    raw_exec(path, "PRAGMA journal_mode=wal; CREATE TABLE t(x)");
    snprintf(url, sizeof url, "sqlite:%s?journal_mode=unchanged", path);
    p = open_url(url);
    dbpool_conn *c = dbt_acquire(p);
    assert_int_equal(int_of(c, "PRAGMA synchronous"), 1);
    dbpool_release(c);
    assert_int_equal(dbpool_close(p), 0);

    /* Percent-encoded :memory: is the pool's shared in-memory database. */
    dbpool_options o;
    dbt_options(&o, 2, 2);
    p = open_one("sqlite:%3Amemory%3A", &o);
    dbpool_conn *a = dbt_acquire(p), *b = dbt_acquire(p);
    exec_ok(a, "CREATE TABLE shared(x); INSERT INTO shared VALUES (7)");
    assert_int_equal(int_of(b, "SELECT x FROM shared"), 7);
    dbpool_release(a);
    dbpool_release(b);
    assert_int_equal(dbpool_close(p), 0);

    /* A relative path that starts with "file:" is a file of that name. */
    char cwd[600];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(dbt_tmpdir()), 0);
    p = open_url("sqlite:file:plain.db");
    c = dbt_acquire(p);
    exec_ok(c, "CREATE TABLE t(x)");
    dbpool_release(c);
    assert_int_equal(dbpool_close(p), 0);
    bool made = access("file:plain.db", F_OK) == 0 && access("plain.db", F_OK) != 0;
    assert_int_equal(chdir(cwd), 0);
    if (!made)
        fail_msg("sqlite:file:plain.db should make the file 'file:plain.db'");
}

/* A relative path is resolved once, at dbpool_open: a connection opened
 * after the process changed its working directory opens the same database,
 * not a new empty one there. */
static void test_relative_path_fixed_at_open(void **state) {
    (void)state;
    char cwd[600], sub[700];
    assert_non_null(getcwd(cwd, sizeof cwd));
    snprintf(sub, sizeof sub, "%s/relative_dir", dbt_tmpdir());
    assert_int_equal(mkdir(sub, 0700), 0);
    assert_int_equal(chdir(sub), 0);
    dbpool *p = open_url("sqlite:relative.db");
    dbpool_conn *c = dbt_acquire(p);
    exec_ok(c, "CREATE TABLE t(x); INSERT INTO t VALUES (5)");
    assert_int_equal(dbpool_discard(c), DBPOOL_OK);
    assert_int_equal(chdir(dbt_tmpdir()), 0);
    c = dbt_acquire(p); /* a new connection, opened from elsewhere */
    dbpool_result *r = NULL;
    dbpool_error e;
    int rc = dbpool_query(c, "SELECT x FROM t", NULL, 0, &r, &e);
    bool stray = access("relative.db", F_OK) == 0;
    assert_int_equal(chdir(cwd), 0);
    if (rc != DBPOOL_OK)
        fail_msg("after chdir the pool opened another database (%s)%s", e.message,
                 stray ? ", made in the new working directory" : "");
    assert_int_equal(dbpool_result_next(r, NULL), 1);
    assert_int_equal(dbpool_result_int64(r, 0), 5);
    dbpool_result_free(r);
    dbpool_release(c);
    assert_int_equal(dbpool_close(p), 0);
    assert_false(stray);
}

/* mode=rw on a file deleted after dbpool_open: not found, not retried. */
static void test_deleted_file_not_found(void **state) {
    (void)state;
    char path[600], url[700];
    snprintf(path, sizeof path, "%s/deleted.db", dbt_tmpdir());
    raw_exec(path, "CREATE TABLE t(x)");
    snprintf(url, sizeof url, "sqlite:%s?mode=rw", path);
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.lazy_connect = true;
    o.max_retries = 3;
    o.backoff_base_ms = 1;
    dbpool *p = open_one(url, &o);
    assert_int_equal(unlink(path), 0);
    dbpool_conn *c = NULL;
    dbpool_error e;
    int rc = dbpool_acquire(p, 2000, &c, &e);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    if (rc != DBPOOL_ENOTFOUND || s.connect_errors != 1 || !strstr(e.message, "does not exist"))
        fail_msg("%s after %llu attempts: %s", dbpool_errname(rc), (unsigned long long)s.connect_errors,
                 e.message);
    assert_int_equal(dbpool_close(p), 0);
}

/* Lock conflicts between connections say what happened and what to do,
 * with an SQLSTATE a retry loop can test on every backend: a transaction
 * that read and then could not write (another connection wrote since its
 * snapshot) must be run again (40001, as PostgreSQL and MySQL report
 * theirs), a statement that waited busy_timeout in vain may be tried again
 * (55P03, PostgreSQL's lock_not_available). The transaction is rolled back
 * at release and the connection stays usable. */
static void test_busy_errors_say_what_to_do(void **state) {
    (void)state;
    char file[600];
    snprintf(file, sizeof file, "%s/busy.db", dbt_tmpdir());
    dbpool *p = open_single(file, "busy_timeout=50");
    dbpool_conn *c = dbt_acquire(p);
    exec_ok(c, "CREATE TABLE t(x)");
    sqlite3 *other = NULL;
    assert_int_equal(sqlite3_open(file, &other), SQLITE_OK);

    /* Read, another connection writes, then write: SQLITE_BUSY_SNAPSHOT. */
    exec_ok(c, "BEGIN");
    assert_int_equal(int_of(c, "SELECT count(*) FROM t"), 0);
    assert_int_equal(sqlite3_exec(other, "INSERT INTO t VALUES (1)", NULL, NULL, NULL), SQLITE_OK);
    dbpool_error e;
    int rc = dbpool_exec(c, "INSERT INTO t VALUES (2)", NULL, 0, NULL, &e);
    if (rc != DBPOOL_EQUERY || strcmp(e.sqlstate, "40001") != 0 || !strstr(e.message, "run it again") ||
        !strstr(e.message, "BEGIN IMMEDIATE"))
        fail_msg("a write after another connection's: %s, SQLSTATE '%s': %s", dbpool_errname(rc), e.sqlstate,
                 e.message);
    assert_int_equal(e.native_code, SQLITE_BUSY_SNAPSHOT);
    dbpool_release(c);

    /* The lock held past busy_timeout: the statement may be tried again. */
    c = dbt_acquire(p);
    assert_int_equal(sqlite3_get_autocommit(dbpool_conn_native(c)), 1);
    assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    rc = dbpool_exec(c, "INSERT INTO t VALUES (3)", NULL, 0, NULL, &e);
    if (rc != DBPOOL_EQUERY || strcmp(e.sqlstate, "55P03") != 0 || !strstr(e.message, "busy_timeout (50 ms)"))
        fail_msg("a write while another connection holds the lock: %s, SQLSTATE '%s': %s", dbpool_errname(rc),
                 e.sqlstate, e.message);
    assert_int_equal(e.native_code & 0xff, SQLITE_BUSY);
    assert_int_equal(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    exec_ok(c, "INSERT INTO t VALUES (3)");
    assert_int_equal(int_of(c, "SELECT count(*) FROM t"), 2);
    dbpool_release(c);
    sqlite3_close(other);
    assert_int_equal(dbpool_close(p), 0);
}

/* In WAL mode (the default) SQLite goes on writing through a connection
 * whose database file was deleted, into a file gone once it closes, and
 * reports success: the write is refused as in rollback-journal mode
 * (SQLITE_READONLY_DBMOVED), also after a BEGIN IMMEDIATE and through
 * dbpool_query, and the connection is replaced at release. */
static void test_write_to_deleted_wal_file_refused(void **state) {
    (void)state;
    char file[600], side[620];
    snprintf(file, sizeof file, "%s/deleted-wal.db", dbt_tmpdir());
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.max_retries = 0;
    o.validation = DBPOOL_VALIDATE_NEVER; /* no ping to notice it first */
    char url[700];
    snprintf(url, sizeof url, "sqlite:%s", file);
    dbpool *p = open_one(url, &o);
    static const char *const writes[] = {"INSERT INTO t VALUES (1)", "BEGIN IMMEDIATE",
                                         "INSERT INTO t VALUES (1) RETURNING x"};
    for (int round = 0; round < 3; round++) {
        dbpool_conn *c = dbt_acquire(p);
        char buf[32];
        assert_string_equal(pragma_text(c, "PRAGMA journal_mode", buf, sizeof buf), "wal");
        exec_ok(c, "CREATE TABLE t(x)");
        dbpool_release(c);
        assert_int_equal(unlink(file), 0);
        snprintf(side, sizeof side, "%s-wal", file);
        unlink(side);
        snprintf(side, sizeof side, "%s-shm", file);
        unlink(side);
        c = dbt_acquire(p);
        dbpool_error e;
        dbpool_result *r = NULL;
        int rc = round == 2 ? dbpool_query(c, writes[round], NULL, 0, &r, &e)
                            : dbpool_exec(c, writes[round], NULL, 0, NULL, &e);
        if (rc != DBPOOL_EQUERY || e.native_code != SQLITE_READONLY_DBMOVED ||
            !strstr(e.message, "renamed, replaced or deleted"))
            fail_msg("%s on a deleted WAL database: %s (native %d): %s", writes[round], dbpool_errname(rc),
                     rc ? e.native_code : 0, rc ? e.message : "");
        dbpool_release(c);
        dbpool_stats s;
        dbpool_get_stats(p, &s);
        assert_int_equal(s.destroyed, round + 1);
        /* The next lease opens (here: makes) the file at the path. */
        c = dbt_acquire(p);
        assert_int_equal(int_of(c, "SELECT count(*) FROM sqlite_master"), 0);
        dbpool_release(c);
        assert_int_equal(access(file, F_OK), 0);
    }
    assert_int_equal(dbpool_close(p), 0);
}

/* ---- a VFS that keeps a lock as another process would ----
 *
 * Wraps the default VFS for main database files whose name holds
 * "deadline": their SHARED lock is refused (SQLITE_BUSY, so the busy
 * handler waits and asks again) until free_at_ms, granted once after it,
 * and refused for ever after: the database is written by others, and a
 * connect's statements each wait their turn. */
static sqlite3_vfs *real_vfs, locker_vfs;
static sqlite3_io_methods locker_methods;
static const sqlite3_io_methods *real_methods;
static int64_t free_at_ms;
static int shared_granted;

static int locker_lock(sqlite3_file *f, int level) {
    if (level == SQLITE_LOCK_SHARED) {
        if (dbt_now_ms() < free_at_ms || shared_granted > 0)
            return SQLITE_BUSY;
        shared_granted++;
    }
    return real_methods->xLock(f, level);
}

static int locker_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *f, int flags, int *out) {
    (void)vfs;
    int rc = real_vfs->xOpen(real_vfs, name, f, flags, out);
    if (rc == SQLITE_OK && (flags & SQLITE_OPEN_MAIN_DB) && name && strstr(name, "deadline") && f->pMethods) {
        if (!real_methods) {
            real_methods = f->pMethods;
            locker_methods = *real_methods;
            locker_methods.xLock = locker_lock;
        }
        if (f->pMethods == real_methods)
            f->pMethods = &locker_methods;
    }
    return rc;
}

/* Every statement of a connect that waits for a lock waits within what is
 * left of connect_timeout_ms, not each from the whole of it: a database
 * busy with writers made one connect take the sum of the waits. */
static void test_connect_lock_waits_end_at_its_deadline(void **state) {
    (void)state;
    char file[600];
    snprintf(file, sizeof file, "%s/deadline.db", dbt_tmpdir());
    raw_exec(file, "PRAGMA journal_mode=delete; CREATE TABLE t(x)");
    real_vfs = sqlite3_vfs_find(NULL);
    locker_vfs = *real_vfs;
    locker_vfs.zName = "dbpool-test-locker";
    locker_vfs.xOpen = locker_open;
    assert_int_equal(sqlite3_vfs_register(&locker_vfs, 1), SQLITE_OK);
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.max_retries = 0;
    o.connect_timeout_ms = 1500;
    char url[700];
    snprintf(url, sizeof url, "sqlite:%s?journal_mode=delete", file);
    dbpool *p = NULL;
    dbpool_error e;
    int64_t t0 = dbt_now_ms();
    free_at_ms = t0 + 900; /* the first wait ends well within the deadline */
    shared_granted = 0;
    int rc = dbpool_open(&p, url, &o, &e);
    int64_t took = dbt_now_ms() - t0;
    sqlite3_vfs_unregister(&locker_vfs);
    if (rc == DBPOOL_OK)
        dbpool_close(p);
    /* ECONNECT here: the statement after the one granted waits in vain
     * (an SQLite whose connect takes the lock once only would connect). */
    if ((rc != DBPOOL_ECONNECT && rc != DBPOOL_OK) || took > 1500 + 400)
        fail_msg("a connect with connect_timeout_ms 1500 took %lld ms: %s: %s", (long long)took,
                 dbpool_errname(rc), rc ? e.message : "");
}

/* A lock wait under an application's interval timer whose handler has no
 * SA_RESTART: SQLite's busy handler counts the sleeps it asked for, and
 * each usleep a signal cut short counted whole, so the statement gave up
 * with "database is locked" after a few milliseconds of a 5000 ms
 * busy_timeout. Here the lock is held until the waiting thread has taken
 * 300 signals (about 60 would have used up its busy_timeout before), or
 * for 1.5 s. */
static atomic_int storm_signals;
static void on_storm_signal(int sig) {
    (void)sig;
    atomic_fetch_add(&storm_signals, 1);
}

typedef struct lock_holder {
    dbpool_conn *c;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool holding;
    int rc;
} lock_holder;

static void *hold_write_lock(void *arg) {
    lock_holder *h = arg;
    sigset_t alrm;
    sigemptyset(&alrm);
    sigaddset(&alrm, SIGALRM);
    pthread_sigmask(SIG_BLOCK, &alrm, NULL); /* the waiting thread takes them */
    dbpool_error e;
    int rc = dbpool_exec(h->c, "BEGIN IMMEDIATE", NULL, 0, NULL, &e);
    pthread_mutex_lock(&h->lock);
    h->holding = rc == DBPOOL_OK;
    h->rc = rc;
    pthread_cond_signal(&h->cond);
    pthread_mutex_unlock(&h->lock);
    if (rc != DBPOOL_OK)
        return NULL;
    /* Until the waiter has taken 300 signals, or for 1.5 s (a third of its
     * busy_timeout) where they come less often (ThreadSanitizer merges
     * pending signals). */
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while (atomic_load(&storm_signals) < 300 &&
             (now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000 < 1500);
    h->rc = dbpool_exec(h->c, "COMMIT", NULL, 0, NULL, &e);
    return NULL;
}

static void lock_wait_outlasts_signals(const char *url) {
    dbpool *p = open_url(url);
    dbpool_conn *waiter = NULL, *holder_conn = NULL;
    dbpool_error e;
    assert_int_equal(dbpool_acquire(p, 5000, &waiter, &e), DBPOOL_OK);
    assert_int_equal(dbpool_acquire(p, 5000, &holder_conn, &e), DBPOOL_OK);
    assert_int_equal(dbpool_exec(waiter, "CREATE TABLE storm (x INTEGER)", NULL, 0, NULL, &e), DBPOOL_OK);

    struct sigaction sa, old_sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_storm_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART */
    assert_int_equal(sigaction(SIGALRM, &sa, &old_sa), 0);
    lock_holder h = {.c = holder_conn, .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, hold_write_lock, &h), 0);
    pthread_mutex_lock(&h.lock);
    while (!h.holding && h.rc == DBPOOL_OK)
        pthread_cond_wait(&h.cond, &h.lock);
    pthread_mutex_unlock(&h.lock);
    assert_true(h.holding);

    atomic_store(&storm_signals, 0);
    struct itimerval every = {{0, 200}, {0, 200}}, off = {{0, 0}, {0, 0}};
    assert_int_equal(setitimer(ITIMER_REAL, &every, NULL), 0);
    int rc = dbpool_exec(waiter, "INSERT INTO storm (x) VALUES (1)", NULL, 0, NULL, &e);
    setitimer(ITIMER_REAL, &off, NULL);
    int took = atomic_load(&storm_signals);
    pthread_join(t, NULL);
    sigaction(SIGALRM, &old_sa, NULL);

    if (rc != DBPOOL_OK)
        fail_msg("the insert gave up after %d signals, the lock held for less than busy_timeout: %s (%s)",
                 took, dbpool_errname(rc), e.message);
    assert_int_equal(h.rc, DBPOOL_OK);
    assert_true(took >= 10);
    dbpool_release(waiter);
    dbpool_release(holder_conn);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_lock_wait_outlasts_signals(void **state) {
    (void)state;
    char url[512];
    snprintf(url, sizeof url, "sqlite:%s/storm.db?busy_timeout=5000", dbt_tmpdir());
    lock_wait_outlasts_signals(url);
}

/* The same on sqlite::memory:, whose lock waits SQLite's memdb VFS slept
 * through the default VFS's usleep: they ended early as the file's did. */
static void test_memory_lock_wait_outlasts_signals(void **state) {
    (void)state;
    lock_wait_outlasts_signals("sqlite::memory:?busy_timeout=5000");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_file_defaults),
        cmocka_unit_test(test_keys_applied),
        cmocka_unit_test(test_absolute_url_form),
        cmocka_unit_test(test_missing_file_not_created),
        cmocka_unit_test(test_read_only),
        cmocka_unit_test(test_read_only_errors_say_why),
        cmocka_unit_test(test_read_only_directory_refused_at_connect),
        cmocka_unit_test(test_read_only_directory_with_a_journal_left),
        cmocka_unit_test(test_memory_attaches_files),
        cmocka_unit_test(test_invalid_path_retried_then_reported),
        cmocka_unit_test(test_not_a_database),
        cmocka_unit_test(test_directory_as_path),
        cmocka_unit_test(test_path_too_long),
        cmocka_unit_test(test_memory_shared_and_typed),
        cmocka_unit_test(test_two_memory_pools_are_separate),
        cmocka_unit_test(test_memory_not_capped),
        cmocka_unit_test(test_temporary_objects_dropped_at_release),
        cmocka_unit_test(test_after_connect_objects_kept),
        cmocka_unit_test(test_replaced_authorizer_replaces_connection),
        cmocka_unit_test(test_after_connect_authorizer_refused),
        cmocka_unit_test(test_memory_wal_refused),
        cmocka_unit_test(test_temporary_objects_dropped_while_main_is_locked),
        cmocka_unit_test(test_changed_baseline_replaces_connection),
        cmocka_unit_test(test_pragmas_restored_at_release),
        cmocka_unit_test(test_unfinished_statement_reset_at_release),
        cmocka_unit_test(test_replaced_file_noticed),
        cmocka_unit_test(test_moved_file_write_closes_connection),
        cmocka_unit_test(test_write_to_deleted_wal_file_refused),
        cmocka_unit_test(test_failed_attach_keeps_connection),
        cmocka_unit_test(test_busy_timeout_range_named),
        cmocka_unit_test(test_keys_that_cannot_apply),
        cmocka_unit_test(test_deleted_file_not_found),
        cmocka_unit_test(test_relative_path_fixed_at_open),
        cmocka_unit_test(test_busy_errors_say_what_to_do),
        cmocka_unit_test(test_connect_lock_waits_end_at_its_deadline),
        cmocka_unit_test(test_lock_wait_outlasts_signals),
        cmocka_unit_test(test_memory_lock_wait_outlasts_signals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
