/*
 * test_sqlite_statement_cache.c — the SQLite backend's per-connection cache
 * of prepared statements (docs/design.md, "Statements and results") is
 * invisible through the public API: bindings are fresh on every call,
 * nested results of the same text, wrong parameter counts, eviction, schema
 * changes and dropped tables behave as without a cache, a statement handed
 * back holds no lock, an open transaction is still rolled back on release,
 * a release with a result still out (against the contract) is refused
 * without harm, and closing a connection finalizes its statements, so that the
 * database file is really closed (run under ASan for the leak side).
 */
#include "testsupport.h"

#include <dirent.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h> /* result codes only, to read dbpool_error.native_code */

/* More than the cache holds (docs/design.md: 16 statements). */
#define MORE_THAN_CACHED 20

static dbpool *open_pool(const char *file, int max_size, const char *keys) {
    char url[700];
    snprintf(url, sizeof url, "sqlite:%s/%s%s%s", dbt_tmpdir(), file, keys ? "?" : "", keys ? keys : "");
    dbpool_options o;
    dbt_options(&o, 0, max_size);
    o.maintenance_interval_ms = 0;
    dbpool *p = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    if (dbpool_open(&p, url, &o, &e) != DBPOOL_OK)
        fail_msg("dbpool_open %s: %s", url, e.message);
    return p;
}

/* How many of this process's open files are the database `file` in the
 * temporary directory, or its -wal, -shm or -journal: 0 once every
 * connection to it is really closed (SQLite keeps a connection whose
 * statements are not all finalized open as a "zombie"). -1 without /proc. */
static int open_files_of(const char *file) {
    char dir[PATH_MAX], path[PATH_MAX + 64];
    if (!realpath(dbt_tmpdir(), dir))
        return -1;
    snprintf(path, sizeof path, "%s/%s", dir, file);
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        char link[300], target[PATH_MAX];
        snprintf(link, sizeof link, "/proc/self/fd/%s", de->d_name);
        ssize_t len = readlink(link, target, sizeof target - 1);
        if (len <= 0)
            continue;
        target[len] = '\0';
        if (strncmp(target, path, strlen(path)) == 0)
            n++;
    }
    closedir(d);
    return n;
}

static void expect_closed(const char *file, const char *when) {
    int n = open_files_of(file);
    if (n > 0)
        fail_msg("%s: %d file(s) of %s still open: a connection was not closed (statements not finalized?)",
                 when, n, file);
}

static void release(dbpool_conn *c) { assert_int_equal(dbpool_release(c), DBPOOL_OK); }

/* The first column of the only row. */
static int64_t query_int(dbpool_conn *c, const char *sql, const dbpool_param *params, size_t n) {
    dbpool_result *r = dbt_query_ok(c, sql, params, n);
    if (dbt_next_ok(r) != 1)
        fail_msg("query \"%s\" returned no row", sql);
    int64_t v = dbpool_result_int64(r, 0);
    assert_int_equal(dbt_next_ok(r), 0);
    dbpool_result_free(r);
    return v;
}

/* dbpool_query and, when it succeeded, the first dbpool_result_next: where
 * a failing re-prepare reports (docs/design.md allows either). */
static int query_first_row(dbpool_conn *c, const char *sql, dbpool_error *e) {
    dbpool_result *r = NULL;
    int rc = dbpool_query(c, sql, NULL, 0, &r, e);
    if (rc != DBPOOL_OK)
        return rc;
    rc = dbpool_result_next(r, e);
    dbpool_result_free(r);
    return rc;
}

static void create_numbers(dbpool_conn *c, int rows) {
    dbt_exec_ok(c, "DROP TABLE IF EXISTS numbers", NULL, 0);
    dbt_exec_ok(c, "CREATE TABLE numbers (id INTEGER NOT NULL, label TEXT)", NULL, 0);
    dbt_exec_ok(c, "BEGIN", NULL, 0);
    for (int i = 0; i < rows; i++) {
        char label[32];
        snprintf(label, sizeof label, "n%d", i);
        dbpool_param ps[2] = {dbpool_param_int64(i), dbpool_param_text(label)};
        dbt_exec_ok(c, "INSERT INTO numbers (id, label) VALUES (?, ?)", ps, 2);
    }
    dbt_exec_ok(c, "COMMIT", NULL, 0);
}

static void test_same_insert_rebinds_every_call(void **state) {
    (void)state;
    dbpool *p = open_pool("rebind.db", 1, NULL);
    dbpool_conn *c = dbt_acquire(p);
    dbt_exec_ok(c, "CREATE TABLE t (id INTEGER NOT NULL, label TEXT, score REAL)", NULL, 0);

    /* One text, 100 calls: every call binds its own values, including a
     * NULL after a text and a text after a NULL. */
    for (int i = 0; i < 100; i++) {
        char label[32];
        snprintf(label, sizeof label, "label-%d", i);
        dbpool_param ps[3] = {dbpool_param_int64(i), dbpool_param_text(i % 10 == 0 ? NULL : label),
                              dbpool_param_double(i + 0.5)};
        int64_t affected = -1;
        dbpool_error e;
        memset(&e, 0, sizeof e);
        int rc = dbpool_exec(c, "INSERT INTO t (id, label, score) VALUES (?, ?, ?)", ps, 3, &affected, &e);
        if (rc != DBPOOL_OK)
            fail_msg("insert %d: %s: %s", i, dbpool_errname(rc), e.message);
        assert_int_equal(affected, 1);
    }
    assert_int_equal(query_int(c, "SELECT COUNT(*) FROM t", NULL, 0), 100);
    assert_int_equal(query_int(c, "SELECT COUNT(DISTINCT id) FROM t", NULL, 0), 100);
    assert_int_equal(query_int(c, "SELECT COUNT(*) FROM t WHERE label IS NULL", NULL, 0), 10);
    assert_int_equal(query_int(c, "SELECT COUNT(DISTINCT label) FROM t", NULL, 0), 90);

    /* Every row as inserted, read through one query text. */
    dbpool_result *r = dbt_query_ok(c, "SELECT id, label, score FROM t ORDER BY id", NULL, 0);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(dbt_next_ok(r), 1);
        assert_int_equal(dbpool_result_int64(r, 0), i);
        if (i % 10 == 0) {
            assert_true(dbpool_result_is_null(r, 1));
        } else {
            char want[32];
            snprintf(want, sizeof want, "label-%d", i);
            assert_string_equal(dbpool_result_text(r, 1, NULL), want);
        }
        assert_true(dbpool_result_double(r, 2) == i + 0.5);
    }
    assert_int_equal(dbt_next_ok(r), 0);
    dbpool_result_free(r);

    /* The same parameterised query 100 times, each answering for its own
     * parameter. */
    for (int i = 99; i >= 0; i--) {
        dbpool_param id = dbpool_param_int64(i);
        r = dbt_query_ok(c, "SELECT id, label FROM t WHERE id = ?", &id, 1);
        assert_int_equal(dbt_next_ok(r), 1);
        assert_int_equal(dbpool_result_int64(r, 0), i);
        assert_int_equal(dbpool_result_is_null(r, 1), i % 10 == 0);
        assert_int_equal(dbt_next_ok(r), 0);
        dbpool_result_free(r);
    }
    release(c);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_nested_results_of_the_same_text(void **state) {
    (void)state;
    dbpool *p = open_pool("nested.db", 1, NULL);
    dbpool_conn *c = dbt_acquire(p);
    create_numbers(c, 10);
    const char *sql = "SELECT id, label FROM numbers ORDER BY id";

    /* Cache the text first, so that the outer result is the cached one. */
    dbpool_result *r = dbt_query_ok(c, sql, NULL, 0);
    dbpool_result_free(r);

    dbpool_result *outer = dbt_query_ok(c, sql, NULL, 0);
    assert_int_equal(dbt_next_ok(outer), 1);
    dbpool_result *inner = dbt_query_ok(c, sql, NULL, 0);
    dbpool_result *third = dbt_query_ok(c, sql, NULL, 0);
    /* Interleaved: outer at row i + 1, inner at row i, third every other
     * step; each keeps its own position. */
    int third_rows = 0;
    for (int i = 0; i < 10; i++) {
        assert_int_equal(dbt_next_ok(inner), 1);
        assert_int_equal(dbpool_result_int64(inner, 0), i);
        assert_int_equal(dbpool_result_int64(outer, 0), i);
        char want[16];
        snprintf(want, sizeof want, "n%d", i);
        assert_string_equal(dbpool_result_text(outer, 1, NULL), want);
        assert_string_equal(dbpool_result_text(inner, 1, NULL), want);
        assert_int_equal(dbt_next_ok(outer), i < 9 ? 1 : 0);
        if (i % 2 == 0) {
            assert_int_equal(dbt_next_ok(third), 1);
            assert_int_equal(dbpool_result_int64(third, 0), third_rows);
            third_rows++;
        }
    }
    assert_int_equal(dbt_next_ok(inner), 0);
    assert_int_equal(third_rows, 5);
    /* Freed in the order they were opened, not the reverse. */
    dbpool_result_free(outer);
    dbpool_result_free(inner);
    dbpool_result_free(third);

    /* Same text, different parameters, open together. */
    const char *from = "SELECT id FROM numbers WHERE id >= ? ORDER BY id";
    dbpool_param p5 = dbpool_param_int64(5), p8 = dbpool_param_int64(8);
    dbpool_result *a = dbt_query_ok(c, from, &p5, 1);
    dbpool_result *b = dbt_query_ok(c, from, &p8, 1);
    for (int i = 5; i < 10; i++) {
        assert_int_equal(dbt_next_ok(a), 1);
        assert_int_equal(dbpool_result_int64(a, 0), i);
        if (i >= 8) {
            assert_int_equal(dbt_next_ok(b), 1);
            assert_int_equal(dbpool_result_int64(b, 0), i);
        }
    }
    assert_int_equal(dbt_next_ok(a), 0);
    assert_int_equal(dbt_next_ok(b), 0);
    dbpool_result_free(b);
    dbpool_result_free(a);

    /* A result freed half-way: the same text starts again at the first row. */
    r = dbt_query_ok(c, sql, NULL, 0);
    assert_int_equal(dbt_next_ok(r), 1);
    assert_int_equal(dbt_next_ok(r), 1);
    assert_int_equal(dbpool_result_int64(r, 0), 1);
    dbpool_result_free(r);
    r = dbt_query_ok(c, sql, NULL, 0);
    int rows = 0;
    while (dbt_next_ok(r) == 1) {
        assert_int_equal(dbpool_result_int64(r, 0), rows);
        rows++;
    }
    assert_int_equal(rows, 10);
    dbpool_result_free(r);
    release(c);
    assert_int_equal(dbpool_close(p), 0);
}

static void expect_einval(int rc, const dbpool_error *e, const char *what) {
    if (rc != DBPOOL_EINVAL)
        fail_msg("%s: expected DBPOOL_EINVAL, got %s (%d)", what, dbpool_errname(rc), rc);
    assert_int_equal(e->code, DBPOOL_EINVAL);
    if (!strstr(e->message, "placeholder"))
        fail_msg("%s: the message should talk about placeholders: \"%s\"", what, e->message);
}

static void test_wrong_parameter_count(void **state) {
    (void)state;
    dbpool *p = open_pool("params.db", 1, NULL);
    dbpool_conn *c = dbt_acquire(p);
    create_numbers(c, 5);
    const char *sel = "SELECT label FROM numbers WHERE id = ?";
    const char *ins = "INSERT INTO numbers (id, label) VALUES (?, ?)";
    dbpool_param two[2] = {dbpool_param_int64(3), dbpool_param_text("extra")};
    dbpool_error e;

    for (int round = 0; round < 2; round++) {
        /* Round 0: the first call of the text is the wrong one; round 1:
         * the text is cached by then. */
        dbpool_result *r = NULL;
        memset(&e, 0, sizeof e);
        expect_einval(dbpool_query(c, sel, NULL, 0, &r, &e), &e, "query with 0 of 1 parameters");
        assert_null(r);
        memset(&e, 0, sizeof e);
        expect_einval(dbpool_query(c, sel, two, 2, &r, &e), &e, "query with 2 of 1 parameters");
        assert_null(r);
        /* The next correct call binds its own value. */
        r = dbt_query_ok(c, sel, &two[0], 1);
        assert_int_equal(dbt_next_ok(r), 1);
        assert_string_equal(dbpool_result_text(r, 0, NULL), "n3");
        assert_int_equal(dbt_next_ok(r), 0);
        dbpool_result_free(r);

        memset(&e, 0, sizeof e);
        expect_einval(dbpool_exec(c, ins, two, 1, NULL, &e), &e, "insert with 1 of 2 parameters");
        dbpool_param row[2] = {dbpool_param_int64(100 + round), dbpool_param_text("ok")};
        dbt_exec_ok(c, ins, row, 2);
    }
    assert_int_equal(query_int(c, "SELECT COUNT(*) FROM numbers", NULL, 0), 7);
    assert_int_equal(query_int(c, "SELECT COUNT(*) FROM numbers WHERE label = 'extra'", NULL, 0), 0);
    release(c);

    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.destroyed, 0); /* a misuse does not break the connection */
    assert_int_equal(s.idle, 1);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_more_statements_than_the_cache_holds(void **state) {
    (void)state;
    dbpool *p = open_pool("evict.db", 1, NULL);
    dbpool_conn *c = dbt_acquire(p);
    create_numbers(c, MORE_THAN_CACHED);
    const char *hot = "SELECT COUNT(*) FROM numbers WHERE id < ?";

    /* Three rounds over more distinct texts than the cache holds, each
     * answer checked, with one text used between every two others. */
    for (int round = 0; round < 3; round++) {
        for (int k = 0; k < 2 * MORE_THAN_CACHED; k++) {
            char sql[96];
            snprintf(sql, sizeof sql, "SELECT id + %d FROM numbers WHERE id = ?", k);
            dbpool_param id = dbpool_param_int64((k + round) % MORE_THAN_CACHED);
            int64_t want = k + (k + round) % MORE_THAN_CACHED;
            assert_int_equal(query_int(c, sql, &id, 1), want);
            dbpool_param lim = dbpool_param_int64(k % MORE_THAN_CACHED);
            assert_int_equal(query_int(c, hot, &lim, 1), k % MORE_THAN_CACHED);
        }
    }

    /* The same through dbpool_exec: distinct INSERT texts. */
    dbt_exec_ok(c, "CREATE TABLE sums (k INTEGER, v INTEGER)", NULL, 0);
    int64_t want_sum = 0;
    for (int round = 0; round < 3; round++) {
        for (int k = 0; k < 2 * MORE_THAN_CACHED; k++) {
            char sql[96];
            snprintf(sql, sizeof sql, "INSERT INTO sums (k, v) VALUES (%d, ?)", k);
            dbpool_param v = dbpool_param_int64(round * 1000 + k);
            dbt_exec_ok(c, sql, &v, 1);
            want_sum += round * 1000 + k;
        }
    }
    assert_int_equal(query_int(c, "SELECT COUNT(*) FROM sums", NULL, 0), 6 * MORE_THAN_CACHED);
    assert_int_equal(query_int(c, "SELECT SUM(v) FROM sums", NULL, 0), want_sum);
    assert_int_equal(query_int(c, "SELECT COUNT(DISTINCT k) FROM sums", NULL, 0), 2 * MORE_THAN_CACHED);

    /* More distinct results open at once than the cache has entries: the
     * ones that do not fit are prepared on their own. */
    dbpool_result *open[MORE_THAN_CACHED];
    for (int k = 0; k < MORE_THAN_CACHED; k++) {
        char sql[96];
        snprintf(sql, sizeof sql, "SELECT id * %d FROM numbers WHERE id >= ? ORDER BY id", k + 1);
        dbpool_param from = dbpool_param_int64(k);
        open[k] = dbt_query_ok(c, sql, &from, 1);
    }
    for (int row = 0; row < MORE_THAN_CACHED; row++)
        for (int k = 0; k < MORE_THAN_CACHED; k++) {
            if (row + k >= MORE_THAN_CACHED)
                continue;
            assert_int_equal(dbt_next_ok(open[k]), 1);
            assert_int_equal(dbpool_result_int64(open[k], 0), (int64_t)(row + k) * (k + 1));
        }
    for (int k = 0; k < MORE_THAN_CACHED; k++)
        assert_int_equal(dbt_next_ok(open[k]), 0);
    for (int k = 0; k < MORE_THAN_CACHED; k++)
        dbpool_result_free(open[(k * 7) % MORE_THAN_CACHED]); /* any order: 7 and 20 are coprime */
    /* And every one of them again, now that they were returned. */
    for (int k = 0; k < MORE_THAN_CACHED; k++) {
        char sql[96];
        snprintf(sql, sizeof sql, "SELECT id * %d FROM numbers WHERE id >= ? ORDER BY id", k + 1);
        dbpool_param from = dbpool_param_int64(MORE_THAN_CACHED - 1);
        assert_int_equal(query_int(c, sql, &from, 1), (int64_t)(MORE_THAN_CACHED - 1) * (k + 1));
    }
    release(c);
    assert_int_equal(dbpool_close(p), 0);
}

/* Texts of one length that differ only in a few bytes away from their
 * start, middle and end: the cache keys a text by its length and some of
 * its bytes, and only the whole text may decide which statement runs. */
#define ALIKE_TEXTS 12
static void alike_text(char *buf, size_t cap, int k) {
    /* k's two digits at bytes 24-25 and again at 98-99 of 118. */
    int n = snprintf(buf, cap,
                     "SELECT x.v FROM (SELECT %02d AS v, 'padding-padding-padding-padding-padding-padding-"
                     "padding-' AS p, %02d AS w) AS x -- end",
                     k, k);
    assert_int_equal(n, 118);
}

static void test_texts_alike_but_at_a_few_bytes(void **state) {
    (void)state;
    dbpool *p = open_pool("alike.db", 1, NULL);
    dbpool_conn *c = dbt_acquire(p);
    char sql[ALIKE_TEXTS][160];
    for (int k = 0; k < ALIKE_TEXTS; k++)
        alike_text(sql[k], sizeof sql[k], k);
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < ALIKE_TEXTS; i++) {
            int k = round == 1 ? ALIKE_TEXTS - 1 - i : (i * 5) % ALIKE_TEXTS; /* 5, 12 coprime */
            assert_int_equal(query_int(c, sql[k], NULL, 0), k);
            dbt_exec_ok(c, sql[k], NULL, 0); /* through dbpool_exec's lookup too */
        }
    /* Two of them open at once, and one text in a reused buffer. */
    dbpool_result *a = dbt_query_ok(c, sql[3], NULL, 0);
    dbpool_result *b = dbt_query_ok(c, sql[4], NULL, 0);
    assert_int_equal(dbt_next_ok(b), 1);
    assert_int_equal(dbt_next_ok(a), 1);
    assert_int_equal(dbpool_result_int64(a, 0), 3);
    assert_int_equal(dbpool_result_int64(b, 0), 4);
    dbpool_result_free(a);
    dbpool_result_free(b);
    char reused[160];
    for (int k = 0; k < ALIKE_TEXTS; k++) {
        alike_text(reused, sizeof reused, k);
        assert_int_equal(query_int(c, reused, NULL, 0), k);
    }
    release(c);
    assert_int_equal(dbpool_close(p), 0);
}

/* SELECT * on t, read to its first row: its column count and the last
 * column's name. (Before the first row, SQLite may still report the shape
 * it knew: a change made by another connection is only seen when the
 * statement starts to run, with or without the cache.) */
static void check_select_star(dbpool_conn *c, int want_cols, const char *last_name, const char *when) {
    dbpool_result *r = dbt_query_ok(c, "SELECT * FROM t ORDER BY a", NULL, 0);
    assert_int_equal(dbt_next_ok(r), 1);
    int cols = dbpool_result_columns(r);
    const char *name = dbpool_result_column_name(r, want_cols - 1);
    char name_copy[64];
    snprintf(name_copy, sizeof name_copy, "%s", name ? name : "(null)");
    dbpool_result_free(r);
    if (cols != want_cols || strcmp(name_copy, last_name) != 0)
        fail_msg("%s: SELECT * has %d columns, column %d named %s; expected %d, the last named %s", when,
                 cols, want_cols - 1, name_copy, want_cols, last_name);
}

static void test_schema_change_on_the_same_connection(void **state) {
    (void)state;
    dbpool *p = open_pool("schema_same.db", 1, NULL);
    dbpool_conn *c = dbt_acquire(p);
    dbt_exec_ok(c, "CREATE TABLE t (a INTEGER, b TEXT)", NULL, 0);
    dbt_exec_ok(c, "INSERT INTO t (a, b) VALUES (1, 'one')", NULL, 0);
    check_select_star(c, 2, "b", "before ALTER");
    check_select_star(c, 2, "b", "cached, before ALTER");

    dbt_exec_ok(c, "ALTER TABLE t ADD COLUMN c INTEGER DEFAULT 7", NULL, 0);
    check_select_star(c, 3, "c", "after ALTER on the same connection");
    dbpool_result *r = dbt_query_ok(c, "SELECT * FROM t ORDER BY a", NULL, 0);
    assert_int_equal(dbt_next_ok(r), 1);
    assert_int_equal(dbpool_result_int64(r, 0), 1);
    assert_string_equal(dbpool_result_text(r, 1, NULL), "one");
    assert_int_equal(dbpool_result_int64(r, 2), 7);
    dbpool_result_free(r);

    /* A cached INSERT naming its columns still works with the new one. */
    dbpool_param ps[2] = {dbpool_param_int64(2), dbpool_param_text("two")};
    dbt_exec_ok(c, "INSERT INTO t (a, b) VALUES (?, ?)", ps, 2);
    dbt_exec_ok(c, "ALTER TABLE t ADD COLUMN d TEXT DEFAULT 'dd'", NULL, 0);
    ps[0] = dbpool_param_int64(3);
    ps[1] = dbpool_param_text("three");
    dbt_exec_ok(c, "INSERT INTO t (a, b) VALUES (?, ?)", ps, 2);
    /* ADD COLUMN with a default fills the rows already there. */
    assert_int_equal(query_int(c, "SELECT COUNT(*) FROM t WHERE c = 7 AND d = 'dd'", NULL, 0), 3);
    check_select_star(c, 4, "d", "after a second ALTER");
    release(c);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_columns_before_the_first_row_after_alter(void **state) {
    (void)state;
    /* dbpool_query returns a result whose shape can be read before the
     * first row (as on PostgreSQL and MySQL, and as an SQLite statement
     * prepared afresh on the connection that ran the ALTER): a cache hit
     * must not report the shape from before an ALTER on its own
     * connection. */
    dbpool *p = open_pool("schema_shape.db", 1, NULL);
    dbpool_conn *c = dbt_acquire(p);
    const char *sql = "SELECT * FROM t";
    dbt_exec_ok(c, "CREATE TABLE t (a INTEGER, b TEXT)", NULL, 0);
    dbt_exec_ok(c, "INSERT INTO t (a, b) VALUES (1, 'one')", NULL, 0);
    dbpool_result *r = dbt_query_ok(c, sql, NULL, 0); /* cached from here on */
    assert_int_equal(dbpool_result_columns(r), 2);
    dbpool_result_free(r);

    dbt_exec_ok(c, "ALTER TABLE t ADD COLUMN c INTEGER DEFAULT 7", NULL, 0);
    r = dbt_query_ok(c, sql, NULL, 0);
    int before = dbpool_result_columns(r);
    const char *name = dbpool_result_column_name(r, 2);
    char name_before[64];
    snprintf(name_before, sizeof name_before, "%s", name ? name : "(null)");
    assert_int_equal(dbt_next_ok(r), 1);
    int after = dbpool_result_columns(r);
    dbpool_result_free(r);
    release(c);
    assert_int_equal(dbpool_close(p), 0);
    if (before != 3 || strcmp(name_before, "c") != 0)
        fail_msg("after ALTER TABLE ADD COLUMN on the same connection, the cached SELECT * reports %d "
                 "columns (column 2: %s) before its first row and %d after it; expected 3 (column 2: c)",
                 before, name_before, after);
}

static void test_schema_change_from_another_connection(void **state) {
    (void)state;
    dbpool *p = open_pool("schema_other.db", 2, NULL);
    dbpool_conn *a = dbt_acquire(p);
    dbpool_conn *b = dbt_acquire(p);
    assert_ptr_not_equal(dbpool_conn_native(a), dbpool_conn_native(b));
    dbt_exec_ok(a, "CREATE TABLE t (a INTEGER, b TEXT)", NULL, 0);
    dbt_exec_ok(a, "INSERT INTO t (a, b) VALUES (1, 'one')", NULL, 0);
    check_select_star(a, 2, "b", "before ALTER");
    dbpool_param ps[2] = {dbpool_param_int64(2), dbpool_param_text("two")};
    dbt_exec_ok(a, "INSERT INTO t (a, b) VALUES (?, ?)", ps, 2);

    dbt_exec_ok(b, "ALTER TABLE t ADD COLUMN c TEXT DEFAULT 'new'", NULL, 0);
    check_select_star(a, 3, "c", "after ALTER on another connection");
    dbpool_result *r = dbt_query_ok(a, "SELECT * FROM t ORDER BY a", NULL, 0);
    assert_int_equal(dbt_next_ok(r), 1);
    assert_string_equal(dbpool_result_text(r, 2, NULL), "new");
    dbpool_result_free(r);
    ps[0] = dbpool_param_int64(3);
    ps[1] = dbpool_param_text("three");
    dbt_exec_ok(a, "INSERT INTO t (a, b) VALUES (?, ?)", ps, 2);
    assert_int_equal(query_int(a, "SELECT COUNT(*) FROM t WHERE c = 'new'", NULL, 0), 3);

    /* The same once both were pooled and leased again. */
    release(a);
    release(b);
    a = dbt_acquire(p);
    b = dbt_acquire(p);
    dbt_exec_ok(a, "ALTER TABLE t ADD COLUMN d INTEGER DEFAULT 4", NULL, 0);
    check_select_star(b, 4, "d", "after ALTER on a connection leased again");
    check_select_star(a, 4, "d", "on the connection that ran the ALTER");
    release(a);
    release(b);
    assert_int_equal(dbpool_close(p), 0);
}

static void expect_missing_table(int rc, const dbpool_error *e, const char *what) {
    if (rc != DBPOOL_EQUERY)
        fail_msg("%s: expected DBPOOL_EQUERY, got %s (%d): %s", what, dbpool_errname(rc), rc, e->message);
    assert_int_equal(e->code, DBPOOL_EQUERY);
    assert_int_equal(e->native_code & 0xff, SQLITE_ERROR);
    if (!strstr(e->message, "no such table"))
        fail_msg("%s: the message should name the missing table: \"%s\"", what, e->message);
}

static void test_dropped_table(void **state) {
    (void)state;
    dbpool *p = open_pool("dropped.db", 2, NULL);
    dbpool_conn *a = dbt_acquire(p);
    dbpool_conn *b = dbt_acquire(p);
    const char *sel = "SELECT b FROM t WHERE a = 1";
    const char *ins = "INSERT INTO t (a, b) VALUES (?, ?)";
    dbpool_param ps[2] = {dbpool_param_int64(1), dbpool_param_text("one")};
    dbpool_error e;

    /* Dropped by another connection, then by the same one. */
    for (int round = 0; round < 2; round++) {
        dbpool_conn *dropper = round == 0 ? b : a;
        dbt_exec_ok(a, "CREATE TABLE t (a INTEGER, b TEXT)", NULL, 0);
        dbt_exec_ok(a, ins, ps, 2); /* cached on a */
        assert_int_equal(query_int(a, "SELECT COUNT(*) FROM t", NULL, 0), 1);
        dbpool_result *r = dbt_query_ok(a, sel, NULL, 0);
        assert_int_equal(dbt_next_ok(r), 1);
        dbpool_result_free(r);

        dbt_exec_ok(dropper, "DROP TABLE t", NULL, 0);
        for (int attempt = 0; attempt < 2; attempt++) {
            memset(&e, 0, sizeof e);
            expect_missing_table(query_first_row(a, sel, &e), &e, "cached SELECT of a dropped table");
            memset(&e, 0, sizeof e);
            expect_missing_table(query_first_row(a, "SELECT COUNT(*) FROM t", &e), &e,
                                 "cached COUNT of a dropped table");
            memset(&e, 0, sizeof e);
            expect_missing_table(dbpool_exec(a, ins, ps, 2, NULL, &e), &e,
                                 "cached INSERT into a dropped table");
        }
        /* The connection still works, and the same texts work again once
         * the table is back (with a different shape). */
        assert_int_equal(query_int(a, "SELECT 41 + 1", NULL, 0), 42);
        dbt_exec_ok(a, "CREATE TABLE t (z TEXT, b TEXT, a INTEGER)", NULL, 0);
        dbt_exec_ok(a, ins, ps, 2);
        r = dbt_query_ok(a, sel, NULL, 0);
        assert_int_equal(dbt_next_ok(r), 1);
        assert_string_equal(dbpool_result_text(r, 0, NULL), "one");
        assert_int_equal(dbt_next_ok(r), 0);
        dbpool_result_free(r);
        dbt_exec_ok(a, "DROP TABLE t", NULL, 0);
    }
    release(a);
    release(b);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.destroyed, 0); /* a failed statement does not break the connection */
    assert_int_equal(s.idle, 2);
    assert_int_equal(dbpool_close(p), 0);
}

/* An INSERT on `c` in autocommit mode: DBPOOL_OK, or the error when another
 * connection holds a lock for longer than busy_timeout. */
static int try_insert(dbpool_conn *c, int64_t id, dbpool_error *e) {
    memset(e, 0, sizeof *e);
    dbpool_param v = dbpool_param_int64(id);
    return dbpool_exec(c, "INSERT INTO t (id) VALUES (?)", &v, 1, NULL, e);
}

static void expect_busy(int rc, const dbpool_error *e, const char *what) {
    if (rc != DBPOOL_EQUERY || (e->native_code & 0xff) != SQLITE_BUSY)
        fail_msg("%s: expected SQLITE_BUSY (the test cannot see locks otherwise), got %s: %s", what,
                 dbpool_errname(rc), e->message);
}

static void test_returned_statement_holds_no_lock(void **state) {
    (void)state;
    /* Rollback journal (a reader's SHARED lock blocks a writer's commit)
     * and a short busy timeout: a lock left behind shows as SQLITE_BUSY. */
    dbpool *p = open_pool("locks.db", 2, "journal_mode=delete&busy_timeout=100");
    dbpool_conn *a = dbt_acquire(p);
    dbpool_conn *b = dbt_acquire(p);
    dbt_exec_ok(a, "CREATE TABLE t (id INTEGER)", NULL, 0);
    dbpool_error e;
    for (int i = 0; i < 5; i++)
        assert_int_equal(try_insert(a, i, &e), DBPOOL_OK);

    const char *sel = "SELECT id FROM t ORDER BY id";
    for (int round = 0; round < 3; round++) {
        /* A result in the middle of its rows reads: writers wait. */
        dbpool_result *r = dbt_query_ok(a, sel, NULL, 0);
        assert_int_equal(dbt_next_ok(r), 1);
        expect_busy(try_insert(b, 100 + round, &e), &e, "insert while a result is half read");
        /* Freed half-way: its (cached) statement holds nothing. */
        dbpool_result_free(r);
        int rc = try_insert(b, 100 + round, &e);
        if (rc != DBPOOL_OK)
            fail_msg("round %d: insert after the result was freed: %s: %s", round, dbpool_errname(rc),
                     e.message);
    }
    /* Read to the end and not freed yet: SQLite released the lock at the
     * last step; freed, the statement still holds none. */
    dbpool_result *r = dbt_query_ok(a, sel, NULL, 0);
    while (dbt_next_ok(r) == 1) {
    }
    dbpool_result_free(r);
    assert_int_equal(try_insert(b, 200, &e), DBPOOL_OK);
    assert_int_equal(query_int(b, "SELECT COUNT(*) FROM t", NULL, 0), 9);
    release(a);
    release(b);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_open_transaction_rolled_back_on_release(void **state) {
    (void)state;
    dbpool *p = open_pool("txn.db", 2, "journal_mode=delete&busy_timeout=100");
    dbpool_conn *a = dbt_acquire(p);
    dbpool_conn *b = dbt_acquire(p);
    void *native_a = dbpool_conn_native(a);
    dbt_exec_ok(a, "CREATE TABLE t (id INTEGER)", NULL, 0);
    dbpool_error e;
    assert_int_equal(try_insert(a, 1, &e), DBPOOL_OK); /* committed; the INSERT is now cached on a */
    assert_int_equal(try_insert(b, 2, &e), DBPOOL_OK); /* and on b */
    dbpool_stats before;
    dbpool_get_stats(p, &before);

    for (int round = 0; round < 3; round++) {
        dbt_exec_ok(a, "BEGIN", NULL, 0);
        assert_int_equal(try_insert(a, 1000 + round, &e), DBPOOL_OK);
        assert_int_equal(query_int(a, "SELECT COUNT(*) FROM t WHERE id >= 1000", NULL, 0), 1);
        dbpool_result *r = dbt_query_ok(a, "SELECT id FROM t ORDER BY id", NULL, 0);
        assert_int_equal(dbt_next_ok(r), 1); /* a cached statement half read, then freed */
        dbpool_result_free(r);
        /* While the transaction is open, b cannot write. */
        expect_busy(try_insert(b, 3, &e), &e, "insert while another connection's transaction is open");
        release(a); /* no COMMIT */

        /* Right after the release b can write: nothing of a's transaction
         * and none of its cached statements holds a lock. */
        int rc = try_insert(b, 10 + round, &e);
        if (rc != DBPOOL_OK)
            fail_msg("round %d: insert right after the release: %s: %s", round, dbpool_errname(rc),
                     e.message);
        assert_int_equal(query_int(b, "SELECT COUNT(*) FROM t WHERE id >= 1000", NULL, 0), 0);

        /* The next lease is the same connection (b is still out), in
         * autocommit mode, without the row, with working cached texts. */
        a = dbt_acquire(p);
        assert_ptr_equal(dbpool_conn_native(a), native_a);
        assert_int_equal(query_int(a, "SELECT COUNT(*) FROM t WHERE id >= 1000", NULL, 0), 0);
        assert_int_equal(query_int(a, "SELECT COUNT(*) FROM t", NULL, 0), 3 + round);
    }
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.rollbacks, before.rollbacks + 3);
    assert_int_equal(s.destroyed, before.destroyed); /* rolled back cleanly, pooled again */
    /* Nothing of the rounds is left open: a's own INSERT commits at once. */
    assert_int_equal(try_insert(a, 4, &e), DBPOOL_OK);
    assert_int_equal(query_int(b, "SELECT COUNT(*) FROM t", NULL, 0), 6);
    release(a);
    release(b);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_result_outlives_its_lease(void **state) {
    (void)state;
    /* Against the contract (free results before release): a release or
     * discard with a result open, one of them lent the cached statement,
     * is refused and touches nothing; the results still read, and once
     * they are freed the connection goes, cache and all. */
    dbpool *p = open_pool("orphan.db", 1, NULL);
    dbpool_conn *c = dbt_acquire(p);
    create_numbers(c, 3);
    const char *sql = "SELECT id, label FROM numbers ORDER BY id";
    dbpool_result *r = dbt_query_ok(c, sql, NULL, 0); /* first use: caches it */
    dbpool_result_free(r);
    dbpool_result *cached = dbt_query_ok(c, sql, NULL, 0); /* a cache hit */
    dbpool_result *nested = dbt_query_ok(c, sql, NULL, 0); /* prepared on its own */
    assert_int_equal(dbt_next_ok(cached), 1);
    assert_int_equal(dbt_next_ok(nested), 1);
    assert_int_equal(dbpool_discard(c), DBPOOL_EMISUSE);
    assert_int_equal(dbt_next_ok(cached), 1);
    assert_int_equal(dbt_next_ok(nested), 1);
    dbpool_result_free(nested);
    assert_int_equal(dbpool_discard(c), DBPOOL_EMISUSE); /* the cached one is still out */
    dbpool_result_free(cached);
    assert_int_equal(dbpool_discard(c), DBPOOL_OK);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.destroyed_by[DBPOOL_CLOSE_DISCARDED], 1);
    assert_int_equal(s.total, 0);
    expect_closed("orphan.db", "the discarded connection");

    /* The pool goes on with a new connection and a new cache. */
    c = dbt_acquire(p);
    assert_int_equal(query_int(c, "SELECT COUNT(*) FROM numbers", NULL, 0), 3);
    /* A release with a result out is refused too, also once the pool is
     * closed; after the free it goes through and closes the connection. */
    r = dbt_query_ok(c, sql, NULL, 0);
    assert_int_equal(dbt_next_ok(r), 1);
    assert_int_equal(dbpool_release(c), DBPOOL_EMISUSE);
    assert_int_equal(dbpool_close(p), 1); /* the lease is still out */
    assert_int_equal(dbpool_release(c), DBPOOL_EMISUSE);
    assert_int_equal(dbt_next_ok(r), 1);
    dbpool_result_free(r);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    expect_closed("orphan.db", "the pool closed and its last lease released");
}

static void test_disconnect_finalizes_the_cache(void **state) {
    (void)state;
    dbpool *p = open_pool("finalize.db", 2, NULL);
    dbpool_conn *a = dbt_acquire(p);
    dbpool_conn *b = dbt_acquire(p);
    create_numbers(a, 3);
    /* Fill both caches, and then some. */
    for (int k = 0; k < MORE_THAN_CACHED; k++) {
        char sql[96];
        snprintf(sql, sizeof sql, "SELECT id + %d FROM numbers WHERE id = 2", k);
        assert_int_equal(query_int(a, sql, NULL, 0), k + 2);
        assert_int_equal(query_int(b, sql, NULL, 0), k + 2);
    }
    release(a);
    release(b);
    /* The check can see open connections (-1: no /proc, it sees nothing). */
    assert_int_not_equal(open_files_of("finalize.db"), 0);
    /* Closed by a shrink while the pool stays open, then by the close. */
    assert_int_equal(dbpool_shrink(p, 1), 1);
    a = dbt_acquire(p);
    assert_int_equal(query_int(a, "SELECT COUNT(*) FROM numbers", NULL, 0), 3);
    release(a);
    assert_int_equal(dbpool_shrink(p, 0), 1);
    expect_closed("finalize.db", "every connection shrunk away");
    a = dbt_acquire(p); /* a new connection, a new cache */
    assert_int_equal(query_int(a, "SELECT id + 5 FROM numbers WHERE id = 2", NULL, 0), 7);
    release(a);
    assert_int_equal(dbpool_close(p), 0);
    expect_closed("finalize.db", "the pool closed");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_insert_rebinds_every_call),
        cmocka_unit_test(test_nested_results_of_the_same_text),
        cmocka_unit_test(test_wrong_parameter_count),
        cmocka_unit_test(test_more_statements_than_the_cache_holds),
        cmocka_unit_test(test_texts_alike_but_at_a_few_bytes),
        cmocka_unit_test(test_schema_change_on_the_same_connection),
        cmocka_unit_test(test_columns_before_the_first_row_after_alter),
        cmocka_unit_test(test_schema_change_from_another_connection),
        cmocka_unit_test(test_dropped_table),
        cmocka_unit_test(test_returned_statement_holds_no_lock),
        cmocka_unit_test(test_open_transaction_rolled_back_on_release),
        cmocka_unit_test(test_result_outlives_its_lease),
        cmocka_unit_test(test_disconnect_finalizes_the_cache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
