/* The SQLite backend's URL keys and the pragmas they set. */
#include "testsupport.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
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

static void test_missing_file_not_created(void **state) {
    (void)state;
    const char *forms[] = {"mode=rw", "create_if_missing=false", "mode=ro"};
    for (size_t i = 0; i < 3; i++) {
        char url[600], path[600];
        snprintf(path, sizeof path, "%s/missing%zu.db", dbt_tmpdir(), i);
        snprintf(url, sizeof url, "sqlite:%s?%s", path, forms[i]);
        dbpool *p = NULL;
        dbpool_error e;
        assert_int_equal(dbpool_open(&p, url, NULL, &e), DBPOOL_ENOTFOUND);
        assert_non_null(strstr(e.message, path));
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
    char path[600], url[620];
    snprintf(path, sizeof path, "%s/junk.db", dbt_tmpdir());
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < 200; i++)
        fputs("this is not an sqlite file ", f);
    fclose(f);
    snprintf(url, sizeof url, "sqlite:%s", path);
    open_fails_saying(url, "not a database");
}

/* A directory where the file should be: said so, rather than SQLite's
 * "unable to open database file" alone. */
static void test_directory_as_path(void **state) {
    (void)state;
    char url[620];
    snprintf(url, sizeof url, "sqlite:%s", dbt_tmpdir());
    open_fails_saying(url, "is a directory");
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
        /* the baseline trigger, rewritten by the rename, fires on base_old */
        "ALTER TABLE base RENAME TO base_old; CREATE TABLE base(a INTEGER)",
    };
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_file_defaults),
        cmocka_unit_test(test_keys_applied),
        cmocka_unit_test(test_absolute_url_form),
        cmocka_unit_test(test_missing_file_not_created),
        cmocka_unit_test(test_read_only),
        cmocka_unit_test(test_invalid_path_retried_then_reported),
        cmocka_unit_test(test_not_a_database),
        cmocka_unit_test(test_directory_as_path),
        cmocka_unit_test(test_memory_shared_and_typed),
        cmocka_unit_test(test_two_memory_pools_are_separate),
        cmocka_unit_test(test_temporary_objects_dropped_at_release),
        cmocka_unit_test(test_after_connect_objects_kept),
        cmocka_unit_test(test_temporary_objects_dropped_while_main_is_locked),
        cmocka_unit_test(test_changed_baseline_replaces_connection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
