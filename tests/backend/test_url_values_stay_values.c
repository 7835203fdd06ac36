/*
 * test_url_values_stay_values.c — a piece of a URL (a database name, a
 * path, a value, a password) reaches the backend as that piece, decoded
 * once, whatever it holds: a space, a quote, '=', '&', '%', or text that
 * reads as another setting. Nothing dbpool does on the way (the pool_*
 * keys taken out and the rest encoded again, libpq's expand_dbname,
 * Connector/C's arguments, SQLite's open) lets it become a host, an
 * sslmode, a VFS or a second statement.
 *
 * The "other host" in the values is 192.0.2.1 (TEST-NET-1, never routed):
 * a value that became a host would fail the connect by its deadline
 * instead of with the answers checked here.
 */
#include "backend_common.h"

#include <unistd.h>

/* The server URL with its database name (from the last '/') replaced. */
static const char *with_database(const char *db) {
    static char url[2048];
    const char *base = dbt_backend_url(bt_backend);
    const char *slash = strrchr(base, '/');
    assert_non_null(slash);
    snprintf(url, sizeof url, "%.*s/%s", (int)(slash - base), base, db);
    return url;
}

static int open_pool(const char *url, dbpool **p, dbpool_error *e) {
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.max_retries = 0;
    o.connect_timeout_ms = 3000;
    *p = NULL;
    return dbpool_open(p, url, &o, e);
}

static void expect_fails_naming(const char *url, int want, const char *needle) {
    dbpool *p;
    dbpool_error e;
    int rc = open_pool(url, &p, &e);
    if (rc == DBPOOL_OK)
        dbpool_close(p);
    BT_CHECK(rc == want && strstr(e.message, needle), "want %s naming \"%s\", got %s: %s",
             dbpool_errname(want), needle, dbpool_errname(rc), rc == DBPOOL_OK ? "" : e.message);
}

/* The first column of the first row of sql, as text, into out. */
static void query_text(dbpool *p, const char *sql, char *out, size_t cap) {
    dbpool_conn *c = bt_acquire(p);
    dbpool_result *r = dbt_query_ok(c, sql, NULL, 0);
    assert_int_equal(dbt_next_ok(r), 1);
    const char *v = dbpool_result_text(r, 0, NULL);
    snprintf(out, cap, "%s", v ? v : "(null)");
    dbpool_result_free(r);
    bt_release(c);
}

static void test_pg(void) {
    /* A database name that reads as conninfo stays a database name. */
    expect_fails_naming(with_database("x%20host%3D192.0.2.1%20sslmode%3Ddisable"), DBPOOL_ENOTFOUND,
                        "\"x host=192.0.2.1 sslmode=disable\"");
    expect_fails_naming(with_database("x'%20host%3D'192.0.2.1"), DBPOOL_ENOTFOUND, "\"x' host='192.0.2.1\"");
    /* So does a dbname key that holds conninfo or a URL: only the URL
     * itself is expanded. */
    const char *url = dbt_backend_url_with("pg", "dbname=host%3D192.0.2.1%20port%3D1");
    expect_fails_naming(url, DBPOOL_ENOTFOUND, "\"host=192.0.2.1 port=1\"");
    url = dbt_backend_url_with("pg", "dbname=postgresql%3A%2F%2F192.0.2.1%2Fx");
    expect_fails_naming(url, DBPOOL_ENOTFOUND, "\"postgresql://192.0.2.1/x\"");

    /* A value with quotes, spaces, '=', '&' and a '%', through the pool_*
     * key that makes dbpool encode the rest again: decoded once, whole. */
    url = dbt_backend_url_with("pg", "application_name=a'%20host%3D192.0.2.1%20dbname%3Dpostgres%26"
                                     "sslmode%3Ddisable%2541&pool_max=2");
    dbpool *p;
    dbpool_error e;
    int rc = open_pool(url, &p, &e);
    BT_CHECK(rc == DBPOOL_OK, "open: %s: %s", dbpool_errname(rc), e.message);
    char got[256];
    query_text(p, "SELECT current_setting('application_name')", got, sizeof got);
    assert_string_equal(got, "a' host=192.0.2.1 dbname=postgres&sslmode=disable%41");
    query_text(p, "SELECT current_database()", got, sizeof got);
    const char *want_db = strrchr(dbt_backend_url("pg"), '/') + 1;
    BT_CHECK(strncmp(got, want_db, strlen(got)) == 0 && strlen(got) > 0, "connected to database '%s'", got);
    assert_int_equal(dbpool_close(p), DBPOOL_OK);

    /* A wrong password that reads as conninfo is a wrong password. */
    char bad[2048];
    const char *base = dbt_backend_url("pg");
    const char *at = strrchr(base, '@'), *colon = strchr(strstr(base, "://") + 3, ':');
    assert_true(at && colon && colon < at);
    snprintf(bad, sizeof bad, "%.*s:x'%%20host%%3D'192.0.2.1'%%20sslmode%%3D'disable%s", (int)(colon - base),
             base, at);
    expect_fails_naming(bad, DBPOOL_EAUTH, "password authentication failed");
}

static void test_mysql(void) {
    /* A database name with a backquote, ';' and '#' is one name. */
    dbpool *p;
    dbpool_error e;
    int rc = open_pool(with_database("x%60%3B%20SELECT%201%3B%20%23%2541"), &p, &e);
    if (rc == DBPOOL_OK)
        dbpool_close(p);
    BT_CHECK((rc == DBPOOL_EAUTH || rc == DBPOOL_ENOTFOUND) && strstr(e.message, "'x`; SELECT 1; #%41'"),
             "want the database 'x`; SELECT 1; #%%41' refused, got %s: %s", dbpool_errname(rc), e.message);

    /* init_command is one value, decoded once: its '&' and '=' do not
     * start another key, its quote stays in the string. */
    const char *url = dbt_backend_url_with("mysql", "init_command=SET%20%40dbpool_v%3D'a%26b%3Dc''%2541'"
                                                    "&pool_max=2");
    rc = open_pool(url, &p, &e);
    BT_CHECK(rc == DBPOOL_OK, "open: %s: %s", dbpool_errname(rc), e.message);
    char got[256];
    query_text(p, "SELECT @dbpool_v", got, sizeof got);
    assert_string_equal(got, "a&b=c'%41");
    assert_int_equal(dbpool_close(p), DBPOOL_OK);
}

static void test_sqlite(void) {
    /* A path is a file name: never read as SQLite's URI, so what follows
     * a '?' in it is part of the name, not a VFS or a flag that turns
     * locking off (immutable, nolock). */
    char url[1024], want[1024];
    snprintf(url, sizeof url, "sqlite:%s/a%%3Fvfs%%3Dunix-none%%26immutable%%3D1%%2541.db", dbt_tmpdir());
    snprintf(want, sizeof want, "%s/a?vfs=unix-none&immutable=1%%41.db", dbt_tmpdir());
    dbpool *p;
    dbpool_error e;
    int rc = open_pool(url, &p, &e);
    BT_CHECK(rc == DBPOOL_OK, "open: %s: %s", dbpool_errname(rc), e.message);
    char got[1024];
    query_text(p, "SELECT file FROM pragma_database_list WHERE name = 'main'", got, sizeof got);
    assert_string_equal(got, want);
    assert_int_equal(access(want, F_OK), 0);
    assert_int_equal(dbpool_close(p), DBPOOL_OK);

    /* SQLite's URI parameters are no keys of dbpool's. */
    static const char *const keys[] = {"vfs=unix-none", "immutable=1", "nolock=1",
                                       "cache=shared",  "psow=0",      "modeof=/etc/passwd"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        snprintf(url, sizeof url, "sqlite:%s/b.db?%s", dbt_tmpdir(), keys[i]);
        char key[32];
        snprintf(key, sizeof key, "'%.*s'", (int)strcspn(keys[i], "="), keys[i]);
        expect_fails_naming(url, DBPOOL_EINVAL, key);
    }
    /* A PRAGMA value with more after it is refused, not run. */
    snprintf(url, sizeof url, "sqlite:%s/b.db?journal_mode=wal%%3BDROP%%20TABLE%%20t", dbt_tmpdir());
    expect_fails_naming(url, DBPOOL_EINVAL, "journal_mode");
    snprintf(url, sizeof url, "sqlite:%s/b.db?synchronous=1%%3BATTACH%%20'x'%%20AS%%20y", dbt_tmpdir());
    expect_fails_naming(url, DBPOOL_EINVAL, "synchronous");
}

static void test_values_stay_values(void **state) {
    (void)state;
    if (bt_is("pg"))
        test_pg();
    else if (bt_is("mysql"))
        test_mysql();
    else
        test_sqlite();
}

int main(int argc, char **argv) {
    bt_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values_stay_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
