/*
 * test_results.c — what a query hands back reads the same on every
 * backend: SQL NULL apart from the empty string, large values intact, many
 * rows, column names and counts, the typed getters on text, neutral values
 * outside the rows (include/dbpool.h: "a NULL or out-of-range column reads
 * as 0 / 0.0 / NULL"), two results open at once on one lease, `?`
 * parameters, NULL among them, binary values, and broken constraints.
 */
#include "backend_common.h"

#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <unistd.h>

#define BIG_LEN (100 * 1024)
#define MANY_ROWS 1000

/* A table of this process's own (tests against one server may run from
 * several builds at once). */
static char table[64];

static int64_t affected_by(dbpool_conn *c, const char *sql);

static void fmt_sql(char *buf, size_t cap, const char *fmt) {
    /* fmt holds one %s, the table name. */
    int n = snprintf(buf, cap, fmt, table);
    assert_true(n > 0 && (size_t)n < cap);
}

static dbpool_conn *conn_of(void **state) { return *state; }

/* Per test: a pool of one, its lease, and an empty table. */
static dbpool *pool;

static int setup(void **state) {
    snprintf(table, sizeof table, "bt_results_%ld", (long)getpid());
    dbpool_options o;
    bt_options(&o, 0, 1);
    pool = bt_open(&o, NULL);
    dbpool_conn *c = bt_acquire(pool);
    char sql[256];
    fmt_sql(sql, sizeof sql, "DROP TABLE IF EXISTS %s");
    bt_exec(c, sql);
    /* MariaDB's TEXT holds 64 KiB; LONGTEXT is MySQL only. */
    const char *big_type = bt_is("mysql") ? "LONGTEXT" : "TEXT";
    char fmt[256];
    snprintf(fmt, sizeof fmt,
             "CREATE TABLE %%s (id INTEGER NOT NULL, label TEXT, val INTEGER, num DOUBLE PRECISION, big %s)",
             big_type);
    fmt_sql(sql, sizeof sql, fmt);
    bt_exec(c, sql);
    *state = c;
    return 0;
}

static int teardown(void **state) {
    dbpool_conn *c = conn_of(state);
    char sql[256];
    fmt_sql(sql, sizeof sql, "DROP TABLE IF EXISTS %s");
    bt_exec(c, sql);
    bt_release(c);
    dbpool_stats s = bt_stats(pool);
    /* Nothing a test did may have broken the connection. */
    BT_CHECK(s.destroyed == 0 && s.idle == 1, "the lease should be pooled again (destroyed %llu, idle %d)",
             (unsigned long long)s.destroyed, s.idle);
    assert_int_equal(dbpool_close(pool), 0);
    pool = NULL;
    return 0;
}

static void insert_row(dbpool_conn *c, int64_t id, dbpool_param label, dbpool_param val) {
    char sql[256];
    fmt_sql(sql, sizeof sql, "INSERT INTO %s (id, label, val) VALUES (?, ?, ?)");
    dbpool_param ps[3] = {dbpool_param_int64(id), label, val};
    bt_exec_params(c, sql, ps, 3);
}

static int64_t count_where(dbpool_conn *c, const char *cond) {
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM %s WHERE %s", table, cond);
    return bt_query_int(c, sql, NULL, 0);
}

/* Every getter reads the neutral value of "no value here". */
static void check_neutral(const dbpool_result *r, int col, const char *where) {
    size_t len = 99;
    const char *t = dbpool_result_text(r, col, &len);
    BT_CHECK(t == NULL && len == 0, "%s, column %d: text should be NULL with length 0", where, col);
    BT_CHECK(dbpool_result_is_null(r, col), "%s, column %d: should read as NULL", where, col);
    BT_CHECK(dbpool_result_int64(r, col) == 0, "%s, column %d: int64 should read 0", where, col);
    BT_CHECK(dbpool_result_double(r, col) == 0.0, "%s, column %d: double should read 0.0", where, col);
}

static void test_null_and_empty_string(void **state) {
    dbpool_conn *c = conn_of(state);
    insert_row(c, 1, dbpool_param_null(), dbpool_param_null());
    insert_row(c, 2, dbpool_param_text(""), dbpool_param_int64(0));
    insert_row(c, 3, dbpool_param_text(NULL), dbpool_param_null()); /* NULL text is SQL NULL */
    insert_row(c, 4, dbpool_param_text("x"), dbpool_param_int64(4));
    BT_CHECK(count_where(c, "label IS NULL") == 2, "two labels are SQL NULL");
    BT_CHECK(count_where(c, "label = ''") == 1, "one label is the empty string");
    BT_CHECK(count_where(c, "val IS NULL") == 2, "two values are SQL NULL");

    char sql[256];
    fmt_sql(sql, sizeof sql, "SELECT id, label, val FROM %s ORDER BY id");
    dbpool_result *r = dbt_query_ok(c, sql, NULL, 0);
    for (int id = 1; id <= 4; id++) {
        BT_CHECK(dbt_next_ok(r) == 1, "row %d should be there", id);
        BT_CHECK(dbpool_result_int64(r, 0) == id, "rows in id order");
        size_t len = 99;
        const char *t = dbpool_result_text(r, 1, &len);
        switch (id) {
        case 1:
        case 3:
            check_neutral(r, 1, "a NULL label");
            check_neutral(r, 2, "a NULL value");
            break;
        case 2:
            BT_CHECK(t != NULL && len == 0 && t[0] == '\0', "the empty string reads as \"\", not NULL");
            BT_CHECK(!dbpool_result_is_null(r, 1), "the empty string is not NULL");
            BT_CHECK(!dbpool_result_is_null(r, 2), "the integer 0 is not NULL");
            BT_CHECK(dbpool_result_int64(r, 2) == 0, "the integer 0 reads 0");
            t = dbpool_result_text(r, 2, &len);
            BT_CHECK(t && len == 1 && strcmp(t, "0") == 0, "the integer 0 reads as the text \"0\"");
            break;
        default:
            BT_CHECK(t && len == 1 && strcmp(t, "x") == 0, "the label \"x\"");
            break;
        }
    }
    BT_CHECK(dbt_next_ok(r) == 0, "four rows only");
    dbpool_result_free(r);

    /* The same from literals, without a table. */
    r = dbt_query_ok(c, "SELECT NULL AS n, '' AS e", NULL, 0);
    BT_CHECK(dbt_next_ok(r) == 1, "one row");
    check_neutral(r, 0, "literal NULL");
    size_t len = 99;
    const char *t = dbpool_result_text(r, 1, &len);
    BT_CHECK(t && len == 0 && !dbpool_result_is_null(r, 1), "literal '' is the empty string, not NULL");
    dbpool_result_free(r);
}

static void test_large_text_value(void **state) {
    dbpool_conn *c = conn_of(state);
    char *big = malloc(BIG_LEN + 1);
    assert_non_null(big);
    for (size_t i = 0; i < BIG_LEN; i++)
        big[i] = (char)('a' + (i * 7 + i / 26) % 26);
    big[BIG_LEN] = '\0';
    memcpy(big + BIG_LEN - 4, "-end", 4);

    char sql[256];
    fmt_sql(sql, sizeof sql, "INSERT INTO %s (id, big) VALUES (?, ?)");
    dbpool_param ps[2] = {dbpool_param_int64(1), dbpool_param_text(big)};
    bt_exec_params(c, sql, ps, 2);
    ps[0] = dbpool_param_int64(2);
    ps[1] = dbpool_param_text("small");
    bt_exec_params(c, sql, ps, 2);

    fmt_sql(sql, sizeof sql, "SELECT LENGTH(big) FROM %s WHERE id = 1");
    BT_CHECK(bt_query_int(c, sql, NULL, 0) == BIG_LEN, "the server stores all %d bytes", BIG_LEN);

    /* Read back without and with parameters (on MySQL: the text and the
     * binary protocol), and straight back from a parameter. */
    char without[256], with[256];
    fmt_sql(without, sizeof without, "SELECT id, big FROM %s ORDER BY id");
    fmt_sql(with, sizeof with, "SELECT id, big FROM %s WHERE id >= ? ORDER BY id");
    dbpool_param one = dbpool_param_int64(1);
    dbpool_param big_param = dbpool_param_text(big);
    for (int how = 0; how < 3; how++) {
        dbpool_result *r = how == 0   ? dbt_query_ok(c, without, NULL, 0)
                           : how == 1 ? dbt_query_ok(c, with, &one, 1)
                                      : dbt_query_ok(c, "SELECT 1 AS id, ? AS big", &big_param, 1);
        BT_CHECK(dbt_next_ok(r) == 1, "way %d: the big row", how);
        size_t len = 0;
        const char *t = dbpool_result_text(r, 1, &len);
        BT_CHECK(t != NULL && len == BIG_LEN, "way %d: %d bytes back, got %zu", how, BIG_LEN, len);
        BT_CHECK(memcmp(t, big, BIG_LEN) == 0 && t[BIG_LEN] == '\0',
                 "way %d: the value comes back intact and NUL-terminated", how);
        if (how < 2) {
            BT_CHECK(dbt_next_ok(r) == 1, "way %d: the small row after the big one", how);
            t = dbpool_result_text(r, 1, &len);
            BT_CHECK(t && len == 5 && strcmp(t, "small") == 0, "way %d: the small row", how);
        }
        BT_CHECK(dbt_next_ok(r) == 0, "way %d: no more rows", how);
        dbpool_result_free(r);
    }
    free(big);
}

static void test_many_rows(void **state) {
    dbpool_conn *c = conn_of(state);
    bt_exec(c, "BEGIN");
    for (int i = 1; i <= MANY_ROWS; i++) {
        char label[32];
        snprintf(label, sizeof label, "row-%d", i);
        insert_row(c, i, dbpool_param_text(label), dbpool_param_int64((int64_t)i * 3));
    }
    bt_exec(c, "COMMIT");

    int64_t want_ids = (int64_t)MANY_ROWS * (MANY_ROWS + 1) / 2;
    char sql[256];
    fmt_sql(sql, sizeof sql, "SELECT COUNT(*) FROM %s");
    BT_CHECK(bt_query_int(c, sql, NULL, 0) == MANY_ROWS, "%d rows stored", MANY_ROWS);
    fmt_sql(sql, sizeof sql, "SELECT SUM(val) FROM %s");
    BT_CHECK(bt_query_int(c, sql, NULL, 0) == 3 * want_ids, "the server's sum");

    fmt_sql(sql, sizeof sql, "SELECT id, val, label FROM %s ORDER BY id");
    dbpool_result *r = dbt_query_ok(c, sql, NULL, 0);
    int rows = 0;
    int64_t sum_ids = 0, sum_vals = 0;
    while (dbt_next_ok(r) == 1) {
        rows++;
        int64_t id = dbpool_result_int64(r, 0);
        sum_ids += id;
        sum_vals += dbpool_result_int64(r, 1);
        char want[32];
        snprintf(want, sizeof want, "row-%d", rows);
        const char *label = dbpool_result_text(r, 2, NULL);
        if (id != rows || !label || strcmp(label, want) != 0)
            fail_msg("[%s] row %d reads id %lld label %s", bt_backend, rows, (long long)id,
                     label ? label : "(null)");
    }
    BT_CHECK(rows == MANY_ROWS, "%d rows read, expected %d", rows, MANY_ROWS);
    BT_CHECK(sum_ids == want_ids && sum_vals == 3 * want_ids, "sums of the rows read: %lld and %lld",
             (long long)sum_ids, (long long)sum_vals);
    BT_CHECK(dbt_next_ok(r) == 0 && dbt_next_ok(r) == 0, "next stays at 0 after the end");
    dbpool_result_free(r);
}

static void test_column_names_and_counts(void **state) {
    dbpool_conn *c = conn_of(state);
    insert_row(c, 1, dbpool_param_text("one"), dbpool_param_int64(10));
    char sql[256];
    static const char *const names[] = {"id", "renamed", "val"};
    /* Without and with a parameter (on MySQL: the text and the binary
     * protocol); with rows and without. */
    static const char *const forms[] = {
        "SELECT id, label AS renamed, val FROM %s WHERE id >= 1",
        "SELECT id, label AS renamed, val FROM %s WHERE id >= 2",
        "SELECT id, label AS renamed, val FROM %s WHERE id >= ?",
        "SELECT id, label AS renamed, val FROM %s WHERE id >= ?",
    };
    for (int how = 0; how < 4; how++) {
        fmt_sql(sql, sizeof sql, forms[how]);
        dbpool_param from = dbpool_param_int64(how == 2 ? 1 : 2);
        dbpool_result *r = how < 2 ? dbt_query_ok(c, sql, NULL, 0) : dbt_query_ok(c, sql, &from, 1);
        bool has_row = how % 2 == 0;
        for (int step = 0; step < 2; step++) { /* before the first row, and after next */
            BT_CHECK(dbpool_result_columns(r) == 3, "way %d, step %d: 3 columns, got %d", how, step,
                     dbpool_result_columns(r));
            for (int i = 0; i < 3; i++) {
                const char *n = dbpool_result_column_name(r, i);
                BT_CHECK(n && strcmp(n, names[i]) == 0, "way %d, step %d: column %d named %s, got %s", how,
                         step, i, names[i], n ? n : "(null)");
            }
            BT_CHECK(dbpool_result_column_name(r, -1) == NULL && dbpool_result_column_name(r, 3) == NULL,
                     "way %d: a column out of range has no name", how);
            if (step == 0)
                BT_CHECK(dbt_next_ok(r) == (has_row ? 1 : 0), "way %d: %s", how,
                         has_row ? "one row" : "no row");
        }
        dbpool_result_free(r);
    }

    dbpool_result *r = dbt_query_ok(c, "SELECT 1 AS one", NULL, 0);
    BT_CHECK(dbpool_result_columns(r) == 1, "SELECT 1 has one column");
    BT_CHECK(strcmp(dbpool_result_column_name(r, 0), "one") == 0, "named by its alias");
    dbpool_result_free(r);

    /* A statement without a result set. */
    fmt_sql(sql, sizeof sql, "UPDATE %s SET val = 11 WHERE id = 1");
    r = dbt_query_ok(c, sql, NULL, 0);
    BT_CHECK(dbpool_result_columns(r) == 0, "an UPDATE through dbpool_query has no columns");
    BT_CHECK(dbt_next_ok(r) == 0, "and no rows");
    check_neutral(r, 0, "the result of an UPDATE");
    dbpool_result_free(r);
    BT_CHECK(count_where(c, "val = 11") == 1, "the UPDATE ran");
}

static void test_numeric_getters_on_text(void **state) {
    dbpool_conn *c = conn_of(state);
    /* Text converted the way strtoll / strtod do (include/dbpool.h). */
    static const struct {
        const char *text;
        int64_t i64;
        double dbl;
    } cases[] = {
        {"42", 42, 42.0},
        {"-7", -7, -7.0},
        {" 12", 12, 12.0},
        {"3.75", 3, 3.75},
        {"-0.5", 0, -0.5},
        {"abc", 0, 0.0},
        {"8 apples", 8, 8.0},
        {"1e3", 1, 1000.0},
        {"", 0, 0.0},
        {"007", 7, 7.0},
        {"+5", 5, 5.0},
        {"9007199254740993", 9007199254740993, 9007199254740992.0},
        /* strtod's words for the infinities, and its hex: SQLite's own
         * conversion read these 0. */
        {"Infinity", 0, INFINITY},
        {"-inf", 0, -INFINITY},
        {"0x10", 0, 16.0},
    };
    size_t ncases = sizeof cases / sizeof *cases;
    for (size_t i = 0; i < ncases; i++)
        insert_row(c, (int64_t)i, dbpool_param_text(cases[i].text), dbpool_param_int64((int64_t)i * 10));

    char sql[256];
    fmt_sql(sql, sizeof sql, "SELECT label, val, id FROM %s ORDER BY id");
    dbpool_result *r = dbt_query_ok(c, sql, NULL, 0);
    for (size_t i = 0; i < ncases; i++) {
        BT_CHECK(dbt_next_ok(r) == 1, "row %zu", i);
        int64_t i64 = dbpool_result_int64(r, 0);
        double d = dbpool_result_double(r, 0);
        if (i64 != cases[i].i64 || d != cases[i].dbl)
            fail_msg("[%s] text \"%s\" reads int64 %lld and double %.17g; expected %lld and %.17g",
                     bt_backend, cases[i].text, (long long)i64, d, (long long)cases[i].i64, cases[i].dbl);
        BT_CHECK(strcmp(dbpool_result_text(r, 0, NULL), cases[i].text) == 0, "the text itself is unchanged");
        /* And an integer column read as text and double. */
        char want[32];
        snprintf(want, sizeof want, "%lld", (long long)i * 10);
        BT_CHECK(strcmp(dbpool_result_text(r, 1, NULL), want) == 0, "integer %s as text", want);
        BT_CHECK(dbpool_result_double(r, 1) == (double)i * 10, "integer %s as double", want);
    }
    BT_CHECK(dbt_next_ok(r) == 0, "no more rows");
    dbpool_result_free(r);

    r = dbt_query_ok(c, "SELECT 2.5 AS d, -3 AS i", NULL, 0);
    BT_CHECK(dbt_next_ok(r) == 1, "one row");
    BT_CHECK(dbpool_result_double(r, 0) == 2.5, "2.5 as double");
    BT_CHECK(dbpool_result_int64(r, 0) == 2, "2.5 as int64 is 2");
    BT_CHECK(dbpool_result_int64(r, 1) == -3 && dbpool_result_double(r, 1) == -3.0, "-3");
    dbpool_result_free(r);
}

/* dbpool_result_int64 of a double column reads its value truncated toward
 * zero and saturated, as SQLite's sqlite3_column_int64 reads a REAL, on
 * every backend. Before, PostgreSQL and MySQL/MariaDB, whose doubles come
 * as text, read it with strtoll: 1e20 ("1e+20") read 1, 1.5e-7
 * ("1.5e-07") read 1, 5e-324 read 5. */
static void test_int64_of_double_columns(void **state) {
    dbpool_conn *c = conn_of(state);
    static const struct {
        double v;
        int64_t i64;
    } cases[] = {
        {1e20, INT64_MAX},  {-1e20, INT64_MIN},
        {1e300, INT64_MAX}, {1.5e-7, 0},
        {-1.5e-7, 0},       {5e-324, 0},
        {2.75, 2},          {-2.75, -2},
        {123456.0, 123456}, {4.5e15, 4500000000000000},
    };
    size_t ncases = sizeof cases / sizeof *cases;
    char sql[256];
    fmt_sql(sql, sizeof sql, "INSERT INTO %s (id, num) VALUES (?, ?)");
    for (size_t i = 0; i < ncases; i++) {
        dbpool_param ps[2] = {dbpool_param_int64((int64_t)i), dbpool_param_double(cases[i].v)};
        bt_exec_params(c, sql, ps, 2);
    }
    /* Without and with a parameter (on MySQL: the text and the binary
     * protocol). */
    char without[256], with[256];
    fmt_sql(without, sizeof without, "SELECT num, id FROM %s ORDER BY id");
    fmt_sql(with, sizeof with, "SELECT num, id FROM %s WHERE id >= ? ORDER BY id");
    dbpool_param zero = dbpool_param_int64(0);
    for (int how = 0; how < 2; how++) {
        dbpool_result *r = how == 0 ? dbt_query_ok(c, without, NULL, 0) : dbt_query_ok(c, with, &zero, 1);
        for (size_t i = 0; i < ncases; i++) {
            BT_CHECK(dbt_next_ok(r) == 1, "way %d: row %zu", how, i);
            int64_t got = dbpool_result_int64(r, 0);
            double d = dbpool_result_double(r, 0);
            if (got != cases[i].i64 || d != cases[i].v)
                fail_msg("[%s] way %d: the double %.17g (text \"%s\") reads int64 %lld and double %.17g; "
                         "expected %lld",
                         bt_backend, how, cases[i].v, dbpool_result_text(r, 0, NULL), (long long)got, d,
                         (long long)cases[i].i64);
        }
        BT_CHECK(dbt_next_ok(r) == 0, "way %d: no more rows", how);
        dbpool_result_free(r);
    }
    /* Infinity, where the backend stores it (MySQL/MariaDB cannot). */
    if (!bt_is("mysql")) {
        dbpool_param inf[2] = {dbpool_param_double(INFINITY), dbpool_param_double(-INFINITY)};
        dbpool_result *r = dbt_query_ok(c, "SELECT ?, ?", inf, 2);
        BT_CHECK(dbt_next_ok(r) == 1, "one row");
        BT_CHECK(dbpool_result_int64(r, 0) == INT64_MAX && dbpool_result_int64(r, 1) == INT64_MIN,
                 "infinities read INT64_MAX and INT64_MIN, got %lld and %lld",
                 (long long)dbpool_result_int64(r, 0), (long long)dbpool_result_int64(r, 1));
        dbpool_result_free(r);
    }
}

/* NaN and the infinities as double parameters: PostgreSQL keeps them,
 * SQLite keeps the infinities and stores NaN as NULL (as SQLite does), and
 * MySQL/MariaDB, which have neither, refuse them with DBPOOL_EINVAL.
 * Before, MariaDB read them as 0 where no column stored them: SELECT ?
 * gave 0, and "WHERE num < ?" with +infinity compared with 0. */
static void test_nan_and_infinity_parameters(void **state) {
    dbpool_conn *c = conn_of(state);
    insert_row(c, 1, dbpool_param_text("a"), dbpool_param_int64(1));
    char sql[256];
    fmt_sql(sql, sizeof sql, "UPDATE %s SET num = 5.5");
    bt_exec(c, sql);
    const double values[] = {NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < 3; i++) {
        dbpool_param p = dbpool_param_double(values[i]);
        dbpool_error e;
        memset(&e, 0, sizeof e);
        dbpool_result *r = NULL;
        int rc = dbpool_query(c, "SELECT ?", &p, 1, &r, &e);
        if (bt_is("mysql")) {
            BT_CHECK(rc == DBPOOL_EINVAL && r == NULL && strstr(e.message, "parameter 1"),
                     "%g: expected DBPOOL_EINVAL naming the parameter, got %s: %s", values[i],
                     dbpool_errname(rc), e.message);
            fmt_sql(sql, sizeof sql, "SELECT COUNT(*) FROM %s WHERE num < ?");
            rc = dbpool_query(c, sql, &p, 1, &r, &e);
            BT_CHECK(rc == DBPOOL_EINVAL && r == NULL, "%g in a comparison: expected DBPOOL_EINVAL, got %s",
                     values[i], dbpool_errname(rc));
            continue;
        }
        BT_OK(rc, &e, "SELECT ? of NaN or an infinity");
        BT_CHECK(dbt_next_ok(r) == 1, "one row");
        double d = dbpool_result_double(r, 0);
        if (isnan(values[i]) && bt_is("sqlite"))
            BT_CHECK(dbpool_result_is_null(r, 0), "SQLite stores NaN as NULL");
        else if (isnan(values[i]))
            BT_CHECK(isnan(d), "NaN reads NaN, got %g", d);
        else
            BT_CHECK(d == values[i], "%g reads %g", values[i], d);
        dbpool_result_free(r);
    }
    if (!bt_is("mysql")) {
        fmt_sql(sql, sizeof sql, "SELECT COUNT(*) FROM %s WHERE num < ?");
        dbpool_param inf = dbpool_param_double(INFINITY);
        BT_CHECK(bt_query_int(c, sql, &inf, 1) == 1, "5.5 < infinity");
    }
    BT_CHECK(count_where(c, "num = 5.5") == 1, "the lease still works");
}

/* dbpool_query runs one statement: SQL that holds several is refused and
 * none of it runs (DBPOOL_EINVAL on SQLite and PostgreSQL, the server's
 * syntax error on MySQL/MariaDB). Before, PostgreSQL ran every statement
 * and returned the last one's rows: the UPDATE in front of the SELECT
 * changed the table, and its result was silently dropped. */
static void test_query_of_several_statements(void **state) {
    dbpool_conn *c = conn_of(state);
    insert_row(c, 1, dbpool_param_text("a"), dbpool_param_int64(1));
    char sql[256];
    snprintf(sql, sizeof sql, "UPDATE %s SET val = 2; SELECT val FROM %s", table, table);
    dbpool_error e;
    memset(&e, 0, sizeof e);
    dbpool_result *r = NULL;
    int rc = dbpool_query(c, sql, NULL, 0, &r, &e);
    int want = bt_is("mysql") ? DBPOOL_EQUERY : DBPOOL_EINVAL;
    BT_CHECK(rc == want && r == NULL, "two statements through dbpool_query: expected %s, got %s: %s",
             dbpool_errname(want), dbpool_errname(rc), e.message);
    if (r)
        dbpool_result_free(r);
    BT_CHECK(count_where(c, "val = 1") == 1, "the UPDATE did not run");
    /* One statement with a trailing semicolon and comment is one. */
    fmt_sql(sql, sizeof sql, "SELECT val FROM %s; -- the end");
    BT_CHECK(bt_query_int(c, sql, NULL, 0) == 1, "one statement, a semicolon and a comment");
}

/* A bit-field column (MySQL BIT, PostgreSQL bit) reads through the
 * numeric getters as its number. Before, MySQL/MariaDB's BIT, sent as raw
 * bytes, read 0 whatever its bits (strtoll of "\x05"), and PostgreSQL's
 * "101" read 101. SQLite has no bit type. */
static void test_bit_columns_read_as_numbers(void **state) {
    dbpool_conn *c = conn_of(state);
    if (bt_is("sqlite"))
        return;
    char bits[96], sql[256];
    snprintf(bits, sizeof bits, "%s_bits", table);
    snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s", bits);
    bt_exec(c, sql);
    snprintf(sql, sizeof sql, "CREATE TABLE %s (id INTEGER NOT NULL, flag BIT(1), b BIT(8))", bits);
    bt_exec(c, sql);
    snprintf(sql, sizeof sql, "INSERT INTO %s VALUES (1, B'1', B'00000101'), (2, B'0', B'11111111')", bits);
    bt_exec(c, sql);
    char without[256], with[256];
    snprintf(without, sizeof without, "SELECT flag, b FROM %s ORDER BY id", bits);
    snprintf(with, sizeof with, "SELECT flag, b FROM %s WHERE id >= ? ORDER BY id", bits);
    dbpool_param one = dbpool_param_int64(1);
    for (int how = 0; how < 2; how++) {
        dbpool_result *r = how == 0 ? dbt_query_ok(c, without, NULL, 0) : dbt_query_ok(c, with, &one, 1);
        BT_CHECK(dbt_next_ok(r) == 1, "way %d: row 1", how);
        BT_CHECK(dbpool_result_int64(r, 0) == 1 && dbpool_result_double(r, 0) == 1.0,
                 "way %d: BIT(1) 1 reads 1, got %lld", how, (long long)dbpool_result_int64(r, 0));
        BT_CHECK(dbpool_result_int64(r, 1) == 5 && dbpool_result_double(r, 1) == 5.0,
                 "way %d: BIT(8) 00000101 reads 5, got %lld and %g", how,
                 (long long)dbpool_result_int64(r, 1), dbpool_result_double(r, 1));
        BT_CHECK(dbt_next_ok(r) == 1, "way %d: row 2", how);
        BT_CHECK(dbpool_result_int64(r, 0) == 0, "way %d: BIT(1) 0 reads 0", how);
        BT_CHECK(dbpool_result_int64(r, 1) == 255 && dbpool_result_double(r, 1) == 255.0,
                 "way %d: BIT(8) 11111111 reads 255, got %lld", how, (long long)dbpool_result_int64(r, 1));
        BT_CHECK(dbt_next_ok(r) == 0, "way %d: two rows", how);
        dbpool_result_free(r);
    }
    snprintf(sql, sizeof sql, "DROP TABLE %s", bits);
    bt_exec(c, sql);
}

/* A result freed before its last row leaves nothing behind on the
 * connection: the next statements, a write to the same table and a DROP
 * of another, run at once on every backend (SQLite streams its rows, and
 * a statement left stepping would hold its table). */
static void test_result_freed_before_the_end(void **state) {
    dbpool_conn *c = conn_of(state);
    bt_exec(c, "BEGIN");
    for (int i = 1; i <= 50; i++)
        insert_row(c, i, dbpool_param_text("x"), dbpool_param_int64(i));
    bt_exec(c, "COMMIT");
    char sql[256], other[96];
    snprintf(other, sizeof other, "%s_early", table);
    snprintf(sql, sizeof sql, "CREATE TABLE %s (a INTEGER)", other);
    bt_exec(c, sql);
    dbpool_param from = dbpool_param_int64(0);
    for (int how = 0; how < 2; how++) {
        char q[256];
        snprintf(q, sizeof q, "SELECT o.a, t.id FROM %s t LEFT JOIN %s o ON o.a = t.id WHERE t.id > %s",
                 table, other, how ? "?" : "0");
        dbpool_result *r = how ? dbt_query_ok(c, q, &from, 1) : dbt_query_ok(c, q, NULL, 0);
        for (int i = 0; i < 3; i++)
            BT_CHECK(dbt_next_ok(r) == 1, "way %d: row %d of 50", how, i + 1);
        dbpool_result_free(r);
        fmt_sql(sql, sizeof sql, "UPDATE %s SET val = val + 1");
        BT_CHECK(affected_by(c, sql) == 50, "way %d: the UPDATE after the early free changes 50 rows", how);
    }
    snprintf(sql, sizeof sql, "DROP TABLE %s", other);
    BT_CHECK(affected_by(c, sql) == 0, "the joined table drops after the early frees");
    BT_CHECK(count_where(c, "val = id + 2") == 50, "both UPDATEs ran");
}

/* The text of a double reads back as the same double on every backend.
 * Before, SQLite wrote 15 significant digits: 0.1 + 0.2 read "0.3" and
 * 1.0 / 3 lost its last digit, while PostgreSQL and MySQL/MariaDB send
 * the shortest text that reads back. */
static void test_double_text_reads_back(void **state) {
    dbpool_conn *c = conn_of(state);
    const double values[] = {0.1 + 0.2, 1.0 / 3, 2.0, -1.5e-7, 123456789.12345679, 1e20, 0.1};
    size_t n = sizeof values / sizeof *values;
    char sql[256];
    fmt_sql(sql, sizeof sql, "INSERT INTO %s (id, num) VALUES (?, ?)");
    for (size_t i = 0; i < n; i++) {
        dbpool_param ps[2] = {dbpool_param_int64((int64_t)i), dbpool_param_double(values[i])};
        bt_exec_params(c, sql, ps, 2);
    }
    fmt_sql(sql, sizeof sql, "SELECT num FROM %s ORDER BY id");
    dbpool_result *r = dbt_query_ok(c, sql, NULL, 0);
    for (size_t i = 0; i < n; i++) {
        BT_CHECK(dbt_next_ok(r) == 1, "row %zu", i);
        size_t len = 0, blen = 0;
        const char *t = dbpool_result_text(r, 0, &len);
        BT_CHECK(t && len == strlen(t), "row %zu: text with its length", i);
        char *end = NULL;
        double back = strtod(t, &end);
        if (back != values[i] || *end != '\0')
            fail_msg("[%s] the double %.17g reads as the text \"%s\", which is %.17g", bt_backend, values[i],
                     t, back);
        const char *b = dbpool_result_blob(r, 0, &blen);
        BT_CHECK(b && blen == len && memcmp(b, t, len) == 0, "row %zu: the blob getter reads the same text",
                 i);
        BT_CHECK(dbpool_result_double(r, 0) == values[i], "row %zu: the double itself", i);
    }
    BT_CHECK(dbt_next_ok(r) == 0, "no more rows");
    dbpool_result_free(r);
}

/* A comparison's true and false read as 1 and 0 through the numeric
 * getters on every backend (PostgreSQL sends them as "t" and "f"). */
static void test_booleans_read_as_numbers(void **state) {
    dbpool_conn *c = conn_of(state);
    insert_row(c, 1, dbpool_param_text("one"), dbpool_param_int64(10));
    char sql[256];
    fmt_sql(sql, sizeof sql, "SELECT val = 10, val = 11, val > 5 AND label = 'one', id FROM %s");
    dbpool_result *r = dbt_query_ok(c, sql, NULL, 0);
    BT_CHECK(dbt_next_ok(r) == 1, "one row");
    BT_CHECK(dbpool_result_int64(r, 0) == 1 && dbpool_result_double(r, 0) == 1.0,
             "true reads 1 (int64 %lld, double %g, text '%s')", (long long)dbpool_result_int64(r, 0),
             dbpool_result_double(r, 0), dbpool_result_text(r, 0, NULL));
    BT_CHECK(dbpool_result_int64(r, 1) == 0 && dbpool_result_double(r, 1) == 0.0, "false reads 0");
    BT_CHECK(dbpool_result_int64(r, 2) == 1, "a compound condition's true reads 1");
    BT_CHECK(dbpool_result_int64(r, 3) == 1, "the integer beside them reads as itself");
    dbpool_result_free(r);
    /* A NULL boolean is NULL, and reads 0. */
    r = dbt_query_ok(c, "SELECT NULL = 1", NULL, 0);
    BT_CHECK(dbt_next_ok(r) == 1, "one row");
    check_neutral(r, 0, "a NULL comparison");
    dbpool_result_free(r);
}

static void test_getters_outside_the_rows(void **state) {
    dbpool_conn *c = conn_of(state);
    insert_row(c, 1, dbpool_param_text("one"), dbpool_param_int64(10));
    insert_row(c, 2, dbpool_param_text("two"), dbpool_param_int64(20));
    char sql[256];
    fmt_sql(sql, sizeof sql, "SELECT id, label, val FROM %s ORDER BY id");
    dbpool_result *r = dbt_query_ok(c, sql, NULL, 0);
    for (int col = -1; col <= 3; col++)
        check_neutral(r, col, "before the first row");
    BT_CHECK(dbt_next_ok(r) == 1, "row 1");
    BT_CHECK(dbpool_result_int64(r, 0) == 1 && strcmp(dbpool_result_text(r, 1, NULL), "one") == 0, "row 1");
    check_neutral(r, -1, "row 1, column -1");
    check_neutral(r, 3, "row 1, past the last column");
    check_neutral(r, 1000, "row 1, far past the last column");
    BT_CHECK(dbt_next_ok(r) == 1, "row 2");
    BT_CHECK(dbpool_result_int64(r, 2) == 20, "row 2");
    BT_CHECK(dbt_next_ok(r) == 0, "the end");
    for (int col = -1; col <= 3; col++)
        check_neutral(r, col, "after the last row");
    BT_CHECK(dbt_next_ok(r) == 0, "still the end");
    check_neutral(r, 0, "after next past the end");
    BT_CHECK(dbpool_result_columns(r) == 3, "the columns are still known after the end");
    dbpool_result_free(r);

    /* An empty result. */
    fmt_sql(sql, sizeof sql, "SELECT id, label FROM %s WHERE id < 0");
    r = dbt_query_ok(c, sql, NULL, 0);
    check_neutral(r, 0, "an empty result before next");
    BT_CHECK(dbt_next_ok(r) == 0, "no row");
    check_neutral(r, 0, "an empty result after next");
    dbpool_result_free(r);

    /* A NULL result: neutral, and freeing it is a no-op. */
    BT_CHECK(dbpool_result_columns(NULL) == 0, "no columns");
    BT_CHECK(dbpool_result_column_name(NULL, 0) == NULL, "no names");
    check_neutral(NULL, 0, "a NULL result");
    dbpool_error e;
    memset(&e, 0, sizeof e);
    BT_CHECK(dbpool_result_next(NULL, &e) < 0, "dbpool_result_next(NULL) is an error");
    dbpool_result_free(NULL);
}

static void test_two_results_open_at_once(void **state) {
    dbpool_conn *c = conn_of(state);
    for (int i = 1; i <= 10; i++) {
        char label[16];
        snprintf(label, sizeof label, "l%d", i);
        insert_row(c, i, dbpool_param_text(label), dbpool_param_int64(i * i));
    }
    char up[256], down[256];
    fmt_sql(up, sizeof up, "SELECT id, val FROM %s ORDER BY id");
    fmt_sql(down, sizeof down, "SELECT label FROM %s WHERE id >= ? ORDER BY id DESC");
    dbpool_param from = dbpool_param_int64(6);
    dbpool_result *a = dbt_query_ok(c, up, NULL, 0);
    BT_CHECK(dbt_next_ok(a) == 1, "a: first row before b is opened");
    dbpool_result *b = dbt_query_ok(c, down, &from, 1);
    dbpool_result *a2 = dbt_query_ok(c, up, NULL, 0); /* the same text as a, open with it */
    for (int i = 1; i <= 10; i++) {
        BT_CHECK(dbpool_result_int64(a, 0) == i && dbpool_result_int64(a, 1) == i * i, "a: row %d", i);
        BT_CHECK(dbt_next_ok(a2) == 1 && dbpool_result_int64(a2, 0) == i, "a2: row %d", i);
        if (i <= 5) {
            BT_CHECK(dbt_next_ok(b) == 1, "b: row %d", i);
            char want[16];
            snprintf(want, sizeof want, "l%d", 11 - i);
            const char *t = dbpool_result_text(b, 0, NULL);
            BT_CHECK(t && strcmp(t, want) == 0, "b: row %d reads %s, got %s", i, want, t ? t : "(null)");
        }
        BT_CHECK(dbt_next_ok(a) == (i < 10 ? 1 : 0), "a: after row %d", i);
    }
    BT_CHECK(dbt_next_ok(b) == 0 && dbt_next_ok(a2) == 0, "b and a2 at their ends");
    dbpool_result_free(a); /* not in reverse order of opening */
    dbpool_result_free(b);

    /* The lease still works with one result still open. */
    insert_row(c, 11, dbpool_param_text("l11"), dbpool_param_int64(121));
    BT_CHECK(count_where(c, "id = 11") == 1, "a write while a result is open");
    dbpool_result_free(a2);
    BT_CHECK(count_where(c, "id > 0") == 11, "eleven rows");
}

/* include/dbpool.h: "The result must be freed before the lease is
 * released." Releasing (or discarding) with a result still open is
 * refused with DBPOOL_EMISUSE and touches nothing: the result stays
 * readable, and once it is freed the release goes through. Before, the
 * release went through and the open result kept its statement on the
 * pooled connection: on SQLite the next holder of the same connection
 * could not drop the table ("database table is locked"), and reading the
 * result read the next holder's connection. */
static void test_release_with_open_result_is_refused(void **state) {
    dbpool_conn *c = conn_of(state);
    for (int i = 1; i <= 3; i++)
        insert_row(c, i, dbpool_param_text("x"), dbpool_param_int64(i));
    char sql[256];
    fmt_sql(sql, sizeof sql, "SELECT id FROM %s ORDER BY id");
    dbpool_result *r = dbt_query_ok(c, sql, NULL, 0);
    dbpool_result *r2 = dbt_query_ok(c, sql, NULL, 0);
    BT_CHECK(dbt_next_ok(r) == 1 && dbpool_result_int64(r, 0) == 1, "first row");
    BT_RC(dbpool_release(c), DBPOOL_EMISUSE, "dbpool_release with two results open");
    BT_RC(dbpool_discard(c), DBPOOL_EMISUSE, "dbpool_discard with two results open");
    /* Still the caller's lease, and the results still read. */
    BT_CHECK(dbpool_conn_native(c) != NULL, "the refused release left the lease with its holder");
    BT_CHECK(dbt_next_ok(r) == 1 && dbpool_result_int64(r, 0) == 2, "second row after the refused release");
    dbpool_result_free(r);
    BT_RC(dbpool_release(c), DBPOOL_EMISUSE, "dbpool_release with one result open");
    BT_CHECK(dbt_next_ok(r2) == 1 && dbpool_result_int64(r2, 0) == 1, "the other result reads too");
    dbpool_result_free(r2);
    dbpool_stats s = bt_stats(pool);
    BT_CHECK(s.in_use == 1 && s.idle == 0, "the lease stayed out (in use %d, idle %d)", s.in_use, s.idle);

    /* With both freed the lease goes back, and the next holder (the same
     * connection: a pool of one) finds no statement of the last one in
     * its way. */
    bt_release(c);
    dbpool_conn *next = bt_acquire(pool);
    char drop[256];
    fmt_sql(drop, sizeof drop, "DROP TABLE %s");
    bt_exec(next, drop);
    fmt_sql(sql, sizeof sql,
            "CREATE TABLE %s (id INTEGER NOT NULL, label TEXT, val INTEGER, num DOUBLE PRECISION, big TEXT)");
    bt_exec(next, sql);
    *state = next; /* the teardown releases it */
}

/* SQL with nothing in it (white space and semicolons) reads the same on
 * every backend: dbpool_exec runs nothing and succeeds, dbpool_query is
 * DBPOOL_EINVAL, and a blank init_sql (an empty setting) is no init_sql.
 * Before, MySQL/MariaDB failed all three with "Query was empty" (a blank
 * init_sql failed every connect), PostgreSQL returned an empty result from
 * dbpool_query, and SQLite refused only the query. */
static void test_blank_sql_is_the_same_everywhere(void **state) {
    dbpool_conn *c = conn_of(state);
    const char *blank[] = {"", "   ", ";", " ;\n; \t"};
    for (size_t i = 0; i < sizeof blank / sizeof *blank; i++) {
        dbpool_error e;
        int64_t affected = 99;
        int rc = dbpool_exec(c, blank[i], NULL, 0, &affected, &e);
        BT_CHECK(rc == DBPOOL_OK, "dbpool_exec of blank SQL #%zu: %s %s", i, dbpool_errname(rc), e.message);
        BT_CHECK(affected == 0, "blank SQL #%zu affected %lld rows", i, (long long)affected);
        dbpool_result *r = (dbpool_result *)&e; /* not left as it was */
        rc = dbpool_query(c, blank[i], NULL, 0, &r, &e);
        BT_CHECK(rc == DBPOOL_EINVAL, "dbpool_query of blank SQL #%zu: %s %s", i, dbpool_errname(rc),
                 e.message);
        BT_CHECK(r == NULL, "a failed dbpool_query leaves *out NULL");
        BT_CHECK(strstr(e.message, "empty") != NULL, "the message says the query is empty: %s", e.message);
    }
    BT_CHECK(count_where(c, "1 = 1") == 0, "the lease still works");

    dbpool_options o;
    bt_options(&o, 0, 1);
    o.init_sql = " ; ";
    dbpool *p = bt_open(&o, NULL); /* fails the test if the open fails */
    dbpool_conn *c2 = bt_acquire(p);
    BT_CHECK(bt_query_int(c2, "SELECT 1", NULL, 0) == 1, "a lease of that pool works");
    bt_release(c2);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_parameters_with_null(void **state) {
    dbpool_conn *c = conn_of(state);
    char sql[256];
    fmt_sql(sql, sizeof sql, "INSERT INTO %s (id, label, val, num) VALUES (?, ?, ?, ?)");
    dbpool_param row1[4] = {dbpool_param_int64(1), dbpool_param_text("a"), dbpool_param_int64(5),
                            dbpool_param_double(0.25)};
    dbpool_param row2[4] = {dbpool_param_int64(2), dbpool_param_null(), dbpool_param_null(),
                            dbpool_param_null()};
    dbpool_param row3[4] = {dbpool_param_int64(3), dbpool_param_text("c"), dbpool_param_null(),
                            dbpool_param_double(-1.5)};
    bt_exec_params(c, sql, row1, 4);
    bt_exec_params(c, sql, row2, 4);
    bt_exec_params(c, sql, row3, 4);

    /* Every type as a parameter in one query, a `?` inside a string
     * literal left alone. */
    fmt_sql(sql, sizeof sql,
            "SELECT id, label, val, num, '?' AS q FROM %s WHERE id >= ? AND id <= ? ORDER BY id");
    dbpool_param range[2] = {dbpool_param_int64(1), dbpool_param_int64(3)};
    dbpool_result *r = dbt_query_ok(c, sql, range, 2);
    BT_CHECK(dbt_next_ok(r) == 1, "row 1");
    BT_CHECK(strcmp(dbpool_result_text(r, 1, NULL), "a") == 0 && dbpool_result_int64(r, 2) == 5 &&
                 dbpool_result_double(r, 3) == 0.25,
             "row 1 as inserted");
    BT_CHECK(strcmp(dbpool_result_text(r, 4, NULL), "?") == 0, "a ? in a string literal is text");
    BT_CHECK(dbt_next_ok(r) == 1, "row 2");
    for (int col = 1; col <= 3; col++)
        check_neutral(r, col, "row 2, inserted from NULL parameters");
    BT_CHECK(dbt_next_ok(r) == 1, "row 3");
    BT_CHECK(dbpool_result_is_null(r, 2) && dbpool_result_double(r, 3) == -1.5, "row 3 as inserted");
    BT_CHECK(dbt_next_ok(r) == 0, "three rows");
    dbpool_result_free(r);

    /* A NULL parameter compares as SQL NULL: never equal. */
    fmt_sql(sql, sizeof sql, "SELECT COUNT(*) FROM %s WHERE label = ?");
    dbpool_param null_label = dbpool_param_text(NULL);
    BT_CHECK(bt_query_int(c, sql, &null_label, 1) == 0, "label = NULL matches nothing");
    dbpool_param a_label = dbpool_param_text("a");
    BT_CHECK(bt_query_int(c, sql, &a_label, 1) == 1, "label = 'a' matches one row");

    /* Mixed parameter types in a WHERE clause. */
    fmt_sql(sql, sizeof sql, "SELECT COUNT(*) FROM %s WHERE id > ? AND num < ? AND label <> ?");
    dbpool_param mixed[3] = {dbpool_param_int64(0), dbpool_param_double(1.0), dbpool_param_text("zzz")};
    BT_CHECK(bt_query_int(c, sql, mixed, 3) == 2, "rows 1 and 3 match (row 2's NULLs do not)");

    /* A NULL parameter as a value of its own. */
    dbpool_param two[2] = {dbpool_param_null(), dbpool_param_text("fallback")};
    r = dbt_query_ok(c, "SELECT COALESCE(?, ?) AS v", two, 2);
    BT_CHECK(dbt_next_ok(r) == 1, "one row");
    BT_CHECK(strcmp(dbpool_result_text(r, 0, NULL), "fallback") == 0, "COALESCE(NULL, 'fallback')");
    dbpool_result_free(r);

    /* A wrong number of parameters fails as DBPOOL_EINVAL, and the lease
     * goes on working. */
    dbpool_error e;
    memset(&e, 0, sizeof e);
    r = NULL;
    BT_RC(dbpool_query(c, sql, mixed, 2, &r, &e), DBPOOL_EINVAL, "3 placeholders, 2 parameters");
    BT_CHECK(r == NULL && e.message[0], "no result, and a message");
    memset(&e, 0, sizeof e);
    fmt_sql(sql, sizeof sql, "SELECT COUNT(*) FROM %s WHERE id > ?");
    BT_RC(dbpool_query(c, sql, mixed, 3, &r, &e), DBPOOL_EINVAL, "1 placeholder, 3 parameters");
    BT_CHECK(bt_query_int(c, sql, mixed, 1) == 3, "the same query with the right count");
}

/* dbpool_exec's *affected is the rows the statement inserted, updated or
 * deleted: 0 for DDL, a SELECT or BEGIN, even right after a statement that
 * changed rows (SQLite's sqlite3_changes keeps the last DML's count). */
static int64_t affected_by(dbpool_conn *c, const char *sql) {
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int64_t n = -1;
    BT_OK(dbpool_exec(c, sql, NULL, 0, &n, &e), &e, sql);
    return n;
}

static void test_affected_counts(void **state) {
    dbpool_conn *c = conn_of(state);
    char sql[256], other[64];
    snprintf(other, sizeof other, "%s_other", table);
    fmt_sql(sql, sizeof sql, "INSERT INTO %s (id) VALUES (1), (2), (3)");
    BT_CHECK(affected_by(c, sql) == 3, "a three-row INSERT changes 3 rows");
    char ddl[160];
    snprintf(ddl, sizeof ddl, "CREATE TABLE %s (a INTEGER)", other);
    BT_CHECK(affected_by(c, ddl) == 0, "CREATE TABLE right after the INSERT changes no rows");
    fmt_sql(sql, sizeof sql, "SELECT id FROM %s");
    BT_CHECK(affected_by(c, sql) == 0, "a SELECT run through dbpool_exec changes no rows");
    fmt_sql(sql, sizeof sql, "UPDATE %s SET val = 1 WHERE id > 1");
    BT_CHECK(affected_by(c, sql) == 2, "the UPDATE matches 2 rows");
    fmt_sql(sql, sizeof sql, "UPDATE %s SET val = 2 WHERE id > 100");
    BT_CHECK(affected_by(c, sql) == 0, "an UPDATE that matches nothing");
    BT_CHECK(affected_by(c, "BEGIN") == 0 && affected_by(c, "COMMIT") == 0,
             "BEGIN and COMMIT change no rows");
    snprintf(ddl, sizeof ddl, "DROP TABLE %s", other);
    BT_CHECK(affected_by(c, ddl) == 0, "DROP TABLE changes no rows");
    fmt_sql(sql, sizeof sql, "DELETE FROM %s WHERE id = 3");
    BT_CHECK(affected_by(c, sql) == 1, "the DELETE removes 1 row");

    /* DDL that fills or copies rows changes none either. Before,
     * MySQL/MariaDB reported the rows a CREATE TABLE ... SELECT filled
     * (also with a parameter) and those a copying ALTER TABLE copied. */
    snprintf(sql, sizeof sql, "CREATE TABLE %s AS SELECT id, val FROM %s", other, table);
    BT_CHECK(affected_by(c, sql) == 0, "CREATE TABLE ... AS SELECT of 2 rows changes no rows");
    snprintf(ddl, sizeof ddl, "DROP TABLE %s", other);
    BT_CHECK(affected_by(c, ddl) == 0, "DROP TABLE changes no rows");
    snprintf(sql, sizeof sql, "CREATE TABLE %s AS SELECT id, val FROM %s WHERE id > ?", other, table);
    dbpool_param zero = dbpool_param_int64(0);
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int64_t n = -1;
    BT_OK(dbpool_exec(c, sql, &zero, 1, &n, &e), &e, sql);
    BT_CHECK(n == 0, "CREATE TABLE ... AS SELECT with a parameter changes no rows, got %lld", (long long)n);
    BT_CHECK(affected_by(c, ddl) == 0, "DROP TABLE changes no rows");
    if (!bt_is("sqlite")) { /* SQLite cannot change a column's type */
        snprintf(sql, sizeof sql,
                 bt_is("pg") ? "ALTER TABLE %s ALTER COLUMN val TYPE BIGINT"
                             : "ALTER TABLE %s MODIFY val BIGINT",
                 table);
        BT_CHECK(affected_by(c, sql) == 0, "ALTER TABLE that rewrites 2 rows changes no rows");
    }
}

/* A text parameter built by hand with a NULL pointer is SQL NULL on every
 * backend (dbpool_param_text(NULL) gives a NULL parameter too); parameters
 * for SQL that holds no statement are refused, not ignored. */
static void test_null_text_pointer_and_stray_parameters(void **state) {
    dbpool_conn *c = conn_of(state);
    dbpool_param p;
    memset(&p, 0, sizeof p);
    p.type = DBPOOL_TYPE_TEXT;
    p.v.text.ptr = NULL;
    p.v.text.len = 0;
    dbpool_result *r = dbt_query_ok(c, "SELECT COALESCE(?, 'was null')", &p, 1);
    BT_CHECK(dbt_next_ok(r) == 1, "one row");
    BT_CHECK(strcmp(dbpool_result_text(r, 0, NULL), "was null") == 0,
             "a TEXT parameter with a NULL pointer is SQL NULL (got '%s')", dbpool_result_text(r, 0, NULL));
    dbpool_result_free(r);
    dbpool_param one = dbpool_param_int64(1);
    /* Only SQLite reads the comment here: a server reports its own error. */
    const char *empty[] = {"", " ;\n", " \v ", "-- nothing here"};
    size_t nempty = bt_is("sqlite") ? 4 : 3;
    for (size_t i = 0; i < nempty; i++) {
        dbpool_error e;
        memset(&e, 0, sizeof e);
        int64_t n = -1;
        int rc = dbpool_exec(c, empty[i], &one, 1, &n, &e);
        BT_CHECK(rc == DBPOOL_EINVAL && e.message[0],
                 "dbpool_exec('%s') with a parameter: expected DBPOOL_EINVAL, got %s: %s", empty[i],
                 dbpool_errname(rc), e.message);
    }
    BT_CHECK(bt_query_int(c, "SELECT ? -- a trailing comment", &one, 1) == 1,
             "a statement followed by a comment takes its parameter");
}

/* Bytes with NULs and every value 0-255, a large value, an empty one and
 * NULL go in as blob parameters and come back intact through
 * dbpool_result_blob (PostgreSQL decodes bytea's hex text); two blob
 * cells of one row are readable at once; a text column reads as its text. */
static void check_blob(dbpool_result *r, int col, const void *want, size_t want_len, const char *what) {
    size_t len = 12345;
    const unsigned char *got = dbpool_result_blob(r, col, &len);
    BT_CHECK(got != NULL, "%s: a value, not NULL", what);
    BT_CHECK(len == want_len, "%s: %zu bytes expected, got %zu", what, want_len, len);
    BT_CHECK(want_len == 0 || memcmp(got, want, want_len) == 0, "%s: the bytes differ", what);
    BT_CHECK(!dbpool_result_is_null(r, col), "%s: not SQL NULL", what);
}

static void test_blob_round_trip(void **state) {
    dbpool_conn *c = conn_of(state);
    char blobs[96], sql[256];
    snprintf(blobs, sizeof blobs, "%s_blob", table);
    const char *type = bt_is("pg") ? "BYTEA" : bt_is("mysql") ? "LONGBLOB" : "BLOB";
    snprintf(sql, sizeof sql, "CREATE TABLE %s (id INTEGER NOT NULL, a %s, b %s)", blobs, type, type);
    bt_exec(c, sql);

    unsigned char all[512];
    for (size_t i = 0; i < sizeof all; i++)
        all[i] = (unsigned char)(i % 256);
    size_t big_len = 300 * 1024;
    unsigned char *big = malloc(big_len);
    assert_non_null(big);
    for (size_t i = 0; i < big_len; i++)
        big[i] = (unsigned char)((i * 7919u) >> 3);

    snprintf(sql, sizeof sql, "INSERT INTO %s (id, a, b) VALUES (?, ?, ?)", blobs);
    dbpool_param r1[3] = {dbpool_param_int64(1), dbpool_param_blob(all, sizeof all),
                          dbpool_param_blob(big, big_len)};
    dbpool_param r2[3] = {dbpool_param_int64(2), dbpool_param_blob("", 0), dbpool_param_blob(NULL, 0)};
    bt_exec_params(c, sql, r1, 3);
    bt_exec_params(c, sql, r2, 3);

    snprintf(sql, sizeof sql, "SELECT a, b FROM %s ORDER BY id", blobs);
    dbpool_result *r = dbt_query_ok(c, sql, NULL, 0);
    BT_CHECK(dbt_next_ok(r) == 1, "row 1");
    check_blob(r, 0, all, sizeof all, "bytes 0-255 twice");
    check_blob(r, 1, big, big_len, "300 KiB");
    check_blob(r, 0, all, sizeof all, "the first cell again, after the second was read");
    BT_CHECK(dbt_next_ok(r) == 1, "row 2");
    check_blob(r, 0, "", 0, "an empty blob");
    size_t len = 99;
    BT_CHECK(dbpool_result_blob(r, 1, &len) == NULL && len == 0 && dbpool_result_is_null(r, 1),
             "a NULL blob parameter is SQL NULL");
    BT_CHECK(dbpool_result_blob(r, 2, &len) == NULL && len == 0, "a column past the end reads NULL");
    BT_CHECK(dbt_next_ok(r) == 0, "two rows");
    dbpool_result_free(r);

    /* A blob parameter read straight back, and a text column through the
     * blob getter. */
    dbpool_param one = dbpool_param_blob(all, 300);
    r = dbt_query_ok(c, "SELECT ?, 'plain'", &one, 1);
    BT_CHECK(dbt_next_ok(r) == 1, "one row");
    check_blob(r, 0, all, 300, "SELECT ? of a blob");
    check_blob(r, 1, "plain", 5, "a text column through dbpool_result_blob");
    dbpool_result_free(r);

    /* A hand-made blob parameter with a NULL pointer and a length is refused. */
    dbpool_param bad;
    memset(&bad, 0, sizeof bad);
    bad.type = DBPOOL_TYPE_BLOB;
    bad.v.blob.len = 3;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    BT_CHECK(dbpool_exec(c, "SELECT ?", &bad, 1, NULL, &e) == DBPOOL_EINVAL &&
                 strstr(e.message, "NULL pointer"),
             "a blob of 3 bytes at NULL: expected DBPOOL_EINVAL, got: %s", e.message);

    snprintf(sql, sizeof sql, "DROP TABLE %s", blobs);
    bt_exec(c, sql);
    free(big);
}

/* Run one statement made from a printf format (table names). */
/* The bytes dbpool_result_blob lends stay valid, and where they are, until
 * the next row, whatever other getter reads the same cell in between. On
 * SQLite dbpool_result_text of a BLOB cell made SQLite add a NUL to the
 * value in place, which moved it and freed the bytes the blob getter had
 * returned (a use after free under ASan; a dangling pointer otherwise). */
static void test_blob_stays_put_while_other_getters_read_it(void **state) {
    dbpool_conn *c = conn_of(state);
    unsigned char bytes[1000];
    for (size_t i = 0; i < sizeof bytes; i++)
        bytes[i] = (unsigned char)(i * 7 + 1);
    dbpool_param p = dbpool_param_blob(bytes, sizeof bytes);
    /* SQLite: a value a function made, which SQLite holds in a buffer of
     * its exact size; the server backends: the parameter back. */
    bool sqlite = bt_is("sqlite");
    dbpool_result *r =
        dbt_query_ok(c, sqlite ? "SELECT randomblob(1000)" : "SELECT ?", sqlite ? NULL : &p, sqlite ? 0 : 1);
    BT_CHECK(dbt_next_ok(r) == 1, "a row");
    size_t len = 0;
    const unsigned char *b = dbpool_result_blob(r, 0, &len);
    BT_CHECK(b && len == sizeof bytes, "the blob's %zu bytes", len);
    unsigned char seen[sizeof bytes];
    memcpy(seen, b, len);
    if (!sqlite)
        BT_CHECK(memcmp(seen, bytes, len) == 0, "the parameter's bytes");
    size_t tlen = 0;
    const char *t = dbpool_result_text(r, 0, &tlen);
    BT_CHECK(t && t[tlen] == '\0', "the cell as NUL-terminated text");
    if (!bt_is("pg")) /* PostgreSQL sends bytea as hex text */
        BT_CHECK(tlen == len && memcmp(t, seen, len) == 0, "the text is the blob's bytes");
    (void)dbpool_result_int64(r, 0);
    (void)dbpool_result_double(r, 0);
    BT_CHECK(!dbpool_result_is_null(r, 0), "not NULL");
    const char *t2 = dbpool_result_text(r, 0, NULL);
    BT_CHECK(t2 == t, "the text stays where it is within the row");
    size_t len2 = 0;
    const unsigned char *b2 = dbpool_result_blob(r, 0, &len2);
    BT_CHECK(b2 == b && len2 == len, "the blob moved (%p, then %p) after the other getters read the cell",
             (const void *)b, (const void *)b2);
    BT_CHECK(memcmp(b, seen, len) == 0, "the blob's bytes changed under the caller");
    BT_CHECK(dbt_next_ok(r) == 0, "one row");
    dbpool_result_free(r);
}

static void exec_f(dbpool_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void exec_f(dbpool_conn *c, const char *fmt, ...) {
    char sql[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    assert_true(n > 0 && (size_t)n < sizeof sql);
    bt_exec(c, sql);
}

static void expect_query_sqlstate(dbpool_conn *c, const char *sql, const char *want, const char *what) {
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int rc = dbpool_exec(c, sql, NULL, 0, NULL, &e);
    BT_CHECK(rc == DBPOOL_EQUERY && strcmp(e.sqlstate, want) == 0,
             "%s: %s with SQLSTATE '%s', expected '%s': %s", what, dbpool_errname(rc), e.sqlstate, want,
             e.message);
}

/* Each broken constraint is DBPOOL_EQUERY with a class 23 SQLSTATE on every
 * backend (SQLite has none of its own: it gets PostgreSQL's), and leaves
 * the lease usable. */
static void test_constraint_violations(void **state) {
    dbpool_conn *c = conn_of(state);
    char parent[96], child[96], sql[512];
    snprintf(parent, sizeof parent, "%s_parent", table);
    snprintf(child, sizeof child, "%s_child", table);
    exec_f(c, "DROP TABLE IF EXISTS %s", child);
    exec_f(c, "DROP TABLE IF EXISTS %s", parent);
    exec_f(c, "CREATE TABLE %s (id INTEGER PRIMARY KEY)", parent);
    exec_f(c,
           "CREATE TABLE %s (id INTEGER PRIMARY KEY, code VARCHAR(20) NOT NULL UNIQUE, "
           "qty INTEGER CHECK (qty > 0), parent_id INTEGER REFERENCES %s(id))",
           child, parent);
    exec_f(c, "INSERT INTO %s (id) VALUES (1)", parent);
    snprintf(sql, sizeof sql, "INSERT INTO %s (id, code, qty, parent_id) VALUES (?, ?, ?, ?)", child);
    dbpool_param ok[4] = {dbpool_param_int64(1), dbpool_param_text("a"), dbpool_param_int64(1),
                          dbpool_param_int64(1)};
    bt_exec_params(c, sql, ok, 4);

    struct {
        const char *what, *pg_state; /* PostgreSQL's SQLSTATE, which SQLite's mapping copies */
        dbpool_param row[4];
    } cases[] = {
        {"a second row with the same code",
         "23505",
         {dbpool_param_int64(2), dbpool_param_text("a"), dbpool_param_int64(1), dbpool_param_int64(1)}},
        {"a second row with the same primary key",
         "23505",
         {dbpool_param_int64(1), dbpool_param_text("b"), dbpool_param_int64(1), dbpool_param_int64(1)}},
        {"a NULL code",
         "23502",
         {dbpool_param_int64(3), dbpool_param_null(), dbpool_param_int64(1), dbpool_param_int64(1)}},
        {"qty 0 against CHECK (qty > 0)",
         "23514",
         {dbpool_param_int64(4), dbpool_param_text("d"), dbpool_param_int64(0), dbpool_param_int64(1)}},
        {"a parent that does not exist",
         "23503",
         {dbpool_param_int64(5), dbpool_param_text("e"), dbpool_param_int64(1), dbpool_param_int64(99)}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dbpool_error e;
        memset(&e, 0, sizeof e);
        int rc = dbpool_exec(c, sql, cases[i].row, 4, NULL, &e);
        BT_CHECK(rc == DBPOOL_EQUERY && e.code == DBPOOL_EQUERY, "%s: expected DBPOOL_EQUERY, got %s: %s",
                 cases[i].what, dbpool_errname(rc), e.message);
        BT_CHECK(strncmp(e.sqlstate, "23", 2) == 0 && strlen(e.sqlstate) == 5,
                 "%s: SQLSTATE '%s' is not an integrity constraint violation (class 23): %s", cases[i].what,
                 e.sqlstate, e.message);
        if (!bt_is("mysql")) /* MySQL/MariaDB say 23000 for every one of them */
            BT_CHECK(strcmp(e.sqlstate, cases[i].pg_state) == 0, "%s: SQLSTATE '%s', expected '%s': %s",
                     cases[i].what, e.sqlstate, cases[i].pg_state, e.message);
    }
    BT_CHECK(count_where(c, "1 = 1") == 0, "the results table is untouched");
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM %s", child);
    BT_CHECK(bt_query_int(c, sql, NULL, 0) == 1, "only the valid row was stored");

    /* An error that is no constraint carries no class 23 code. */
    dbpool_error e;
    memset(&e, 0, sizeof e);
    BT_CHECK(dbpool_exec(c, "SELECT * FROM no_such_table_here", NULL, 0, NULL, &e) == DBPOOL_EQUERY &&
                 strncmp(e.sqlstate, "23", 2) != 0,
             "a missing table: SQLSTATE '%s': %s", e.sqlstate, e.message);

    /* What SQLite files under "constraint" but is no table rule gets what
     * PostgreSQL says for its like: a trigger's RAISE(ABORT) is PL/pgSQL's
     * RAISE EXCEPTION (P0001), a STRICT column refusing a type is an
     * invalid text representation (22P02). */
    if (bt_is("sqlite")) {
        exec_f(c,
               "CREATE TRIGGER %s_no_big BEFORE INSERT ON %s WHEN NEW.qty > 100 "
               "BEGIN SELECT RAISE(ABORT, 'too many'); END",
               child, child);
        snprintf(sql, sizeof sql, "INSERT INTO %s (id, code, qty) VALUES (7, 'g', 500)", child);
        expect_query_sqlstate(c, sql, "P0001", "RAISE(ABORT) in a trigger");
        exec_f(c, "CREATE TABLE %s_strict (n INTEGER) STRICT", child);
        snprintf(sql, sizeof sql, "INSERT INTO %s_strict VALUES ('abc')", child);
        expect_query_sqlstate(c, sql, "22P02", "text into a STRICT INTEGER column");
        exec_f(c, "DROP TABLE %s_strict", child);
    }

    exec_f(c, "DROP TABLE %s", child);
    exec_f(c, "DROP TABLE %s", parent);
}

/* dbpool_result_double reads text the way strtod does (include/dbpool.h),
 * but a server writes its numbers with a '.': under an application's
 * LC_NUMERIC with a decimal comma (setlocale(LC_ALL, "") on a German
 * desktop), strtod read PostgreSQL's and MySQL's "2.5" as 2. */
/* Is s whole UTF-8 (no sequence cut short, no stray continuation byte)? */
static bool valid_utf8(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        size_t n = *p < 0x80             ? 1
                   : (*p & 0xE0) == 0xC0 ? 2
                   : (*p & 0xF0) == 0xE0 ? 3
                   : (*p & 0xF8) == 0xF0 ? 4
                                         : 0;
        if (n == 0)
            return false;
        for (size_t i = 1; i < n; i++)
            if ((p[i] & 0xC0) != 0x80)
                return false;
        p += n;
    }
    return true;
}

/* A server's error text longer than dbpool_error's buffer, all of it
 * two-byte characters (é): the message is cut to fit, and wherever the
 * cut falls (one test text shifted by one byte against the other) it ends
 * on a whole character, so the message stays UTF-8 (the CLI's JSON, a
 * log); the SQLSTATE is kept in its field. */
static void test_long_error_message_stays_utf8(void **state) {
    dbpool_conn *c = conn_of(state);
    const char *want_state = bt_is("pg") ? "22012" : bt_is("mysql") ? "45001" : "";
    for (int shift = 0; shift < 2; shift++) {
        char text[1024] = "";
        if (shift)
            strcat(text, "a");
        for (int i = 0; i < 400; i++)
            strcat(text, "\xc3\xa9");
        char sql[1200];
        if (bt_is("pg"))
            snprintf(sql, sizeof sql,
                     "DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '22012', MESSAGE = '%s'; END $$", text);
        else if (bt_is("mysql"))
            snprintf(sql, sizeof sql, "SIGNAL SQLSTATE '45001' SET MESSAGE_TEXT = '%s'", text);
        else
            snprintf(sql, sizeof sql, "SELECT * FROM \"%s\"", text);
        for (int q = 0; q < 2; q++) {
            dbpool_error e;
            memset(&e, 0, sizeof e);
            dbpool_result *r = NULL;
            int rc = q ? dbpool_query(c, sql, NULL, 0, &r, &e) : dbpool_exec(c, sql, NULL, 0, NULL, &e);
            BT_CHECK(rc == DBPOOL_EQUERY, "%s (shift %d): %s, expected DBPOOL_EQUERY", q ? "query" : "exec",
                     shift, dbpool_errname(rc));
            BT_CHECK(strlen(e.message) + 4 >= sizeof e.message, "the message should be cut to fit: %zu bytes",
                     strlen(e.message));
            BT_CHECK(valid_utf8(e.message), "%s (shift %d): the message is no longer UTF-8: ...%s",
                     q ? "query" : "exec", shift, e.message + strlen(e.message) - 8);
            BT_CHECK(strcmp(e.sqlstate, want_state) == 0, "SQLSTATE '%s', expected '%s'", e.sqlstate,
                     want_state);
        }
    }
    assert_int_equal(bt_query_int(c, "SELECT 7", NULL, 0), 7);
}

static void test_double_getter_ignores_lc_numeric(void **state) {
    dbpool_conn *c = conn_of(state);
    if (!setlocale(LC_NUMERIC, "de_DE.UTF-8"))
        fail_msg("the machine has no de_DE.UTF-8 locale (scripts/install-deps.sh test makes it)");
    dbpool_result *r = dbt_query_ok(c, "SELECT 2.5 AS d, '-0.125' AS t", NULL, 0);
    BT_CHECK(dbt_next_ok(r) == 1, "one row");
    double d = dbpool_result_double(r, 0), t = dbpool_result_double(r, 1);
    dbpool_result_free(r);
    setlocale(LC_NUMERIC, "C");
    if (d != 2.5 || t != -0.125)
        fail_msg("[%s] under LC_NUMERIC de_DE, 2.5 read %.17g and '-0.125' read %.17g", bt_backend, d, t);
}

/* A double parameter reaches the server as the same number under an
 * application's LC_NUMERIC with a decimal comma: PostgreSQL's driver
 * wrote it with printf's "%.17g", so 2.25 went out as "2,25" and the
 * statement failed ("invalid input syntax for type double precision"). */
static void test_double_parameter_ignores_lc_numeric(void **state) {
    dbpool_conn *c = conn_of(state);
    if (!setlocale(LC_NUMERIC, "de_DE.UTF-8"))
        fail_msg("the machine has no de_DE.UTF-8 locale (scripts/install-deps.sh test makes it)");
    char sql[256];
    fmt_sql(sql, sizeof sql, "INSERT INTO %s (id, num) VALUES (1, ?)");
    dbpool_param p = dbpool_param_double(2.25);
    dbpool_error e;
    int rc = dbpool_exec(c, sql, &p, 1, NULL, &e);
    setlocale(LC_NUMERIC, "C");
    if (rc != DBPOOL_OK)
        fail_msg("[%s] a double parameter under LC_NUMERIC de_DE: %s: %s", bt_backend, dbpool_errname(rc),
                 e.message);
    BT_CHECK(count_where(c, "num = 2.25") == 1, "the value stored is 2.25");
}

int main(int argc, char **argv) {
    bt_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_null_and_empty_string, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_text_value, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_column_names_and_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_numeric_getters_on_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_int64_of_double_columns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nan_and_infinity_parameters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_query_of_several_statements, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bit_columns_read_as_numbers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_result_freed_before_the_end, setup, teardown),
        cmocka_unit_test_setup_teardown(test_double_text_reads_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_double_getter_ignores_lc_numeric, setup, teardown),
        cmocka_unit_test_setup_teardown(test_double_parameter_ignores_lc_numeric, setup, teardown),
        cmocka_unit_test_setup_teardown(test_booleans_read_as_numbers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_getters_outside_the_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_results_open_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_release_with_open_result_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_blank_sql_is_the_same_everywhere, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parameters_with_null, setup, teardown),
        cmocka_unit_test_setup_teardown(test_affected_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_null_text_pointer_and_stray_parameters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_blob_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_blob_stays_put_while_other_getters_read_it, setup, teardown),
        cmocka_unit_test_setup_teardown(test_constraint_violations, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_error_message_stays_utf8, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
