/* test_mysql_driver.c — what is particular to the MySQL/MariaDB backend:
 * its URL syntax, fail-over hosts, the unix socket, value round trips, a
 * text-protocol result, native error detail, killed connections, rollback on release, no reset
 * for init_sql's own session changes, the result sets of a CALL, wrong
 * passwords and ssl-mode=REQUIRED. Needs DBPOOL_TEST_MYSQL_URL (and
 * DBPOOL_TEST_MYSQL_ADMIN_URL / _SOCKET, written by scripts/mysql-server.sh). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "dbpool.h"
#include "loopback.h"
#include "testsupport.h"

#include <arpa/inet.h>
#include <mysql.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *base_url;

/* "mysql://USERINFO@HOSTS/REST": copy the three parts out of the test URL. */
static void split_url(const char *url, char *userinfo, size_t ulen, char *hosts, size_t hlen, char *rest,
                      size_t rlen) {
    const char *p = strstr(url, "://");
    assert_non_null(p);
    p += 3;
    const char *slash = strchr(p, '/');
    assert_non_null(slash);
    const char *at = NULL;
    for (const char *s = p; s < slash; s++)
        if (*s == '@')
            at = s;
    assert_non_null(at);
    snprintf(userinfo, ulen, "%.*s", (int)(at - p), p);
    snprintf(hosts, hlen, "%.*s", (int)(slash - at - 1), at + 1);
    snprintf(rest, rlen, "%s", slash);
}

/* Options for a pool without maintenance. */
static void pool_options(dbpool_options *o, int max, dbpool_validation v) {
    dbt_options(o, 0, max);
    o->validation = v;
    o->maintenance_interval_ms = 0;
}

static dbpool *open_pool_opts(const char *url, const dbpool_options *o) {
    dbpool *p = NULL;
    dbpool_error err;
    int rc = dbpool_open(&p, url, o, &err);
    if (rc != DBPOOL_OK)
        fail_msg("dbpool_open: %s: %s", dbpool_errname(rc), err.message);
    return p;
}

/* A pool without maintenance; init_sql may be NULL. */
static dbpool *open_pool_init(const char *url, int max, dbpool_validation v, const char *init_sql) {
    dbpool_options o;
    pool_options(&o, max, v);
    o.init_sql = init_sql;
    return open_pool_opts(url, &o);
}

static dbpool *open_pool(const char *url, int max, dbpool_validation v) {
    return open_pool_init(url, max, v, NULL);
}

static int64_t query_int_params(dbpool_conn *c, const char *sql, const dbpool_param *params, size_t n) {
    dbpool_result *r = NULL;
    dbpool_error err;
    int rc = dbpool_query(c, sql, params, n, &r, &err);
    if (rc != DBPOOL_OK)
        fail_msg("%s: %s", sql, err.message);
    assert_int_equal(dbpool_result_next(r, &err), 1);
    int64_t v = dbpool_result_int64(r, 0);
    dbpool_result_free(r);
    return v;
}

static int64_t query_int(dbpool_conn *c, const char *sql) { return query_int_params(c, sql, NULL, 0); }

/* Open a pool and get a connection; returns the first failure's code. The
 * core dials during dbpool_open, so a connect error may come from either. */
static int open_and_acquire(const char *url, int64_t timeout_ms, dbpool_error *err) {
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.maintenance_interval_ms = 0;
    o.validation = DBPOOL_VALIDATE_NEVER;
    dbpool *p = NULL;
    int rc = dbpool_open(&p, url, &o, err);
    if (rc != DBPOOL_OK)
        return rc;
    dbpool_conn *c = NULL;
    rc = dbpool_acquire(p, timeout_ms, &c, err);
    if (rc == DBPOOL_OK)
        dbpool_release(c);
    dbpool_close(p);
    return rc;
}

static const char *admin_url(void) {
    const char *u = getenv("DBPOOL_TEST_MYSQL_ADMIN_URL");
    if (!u || !*u)
        fail_msg("DBPOOL_TEST_MYSQL_ADMIN_URL is not set (scripts/mysql-server.sh writes it)");
    return u;
}

/* ---- URL parsing (nothing is connected to but the test server) ---- */

static void test_unknown_key_rejected(void **state) {
    (void)state;
    char url[2048];
    snprintf(url, sizeof url, "%s?sslmode=require", base_url);
    dbpool *p = NULL;
    dbpool_error err;
    assert_int_equal(dbpool_open(&p, url, NULL, &err), DBPOOL_EINVAL);
    assert_null(p);
    assert_non_null(strstr(err.message, "sslmode"));
}

static void test_bad_ssl_mode_rejected(void **state) {
    (void)state;
    char url[2048];
    snprintf(url, sizeof url, "%s?ssl-mode=SOMETIMES", base_url);
    dbpool *p = NULL;
    dbpool_error err;
    assert_int_equal(dbpool_open(&p, url, NULL, &err), DBPOOL_EINVAL);
    assert_non_null(strstr(err.message, "ssl-mode"));
    assert_non_null(strstr(err.message, "SOMETIMES"));
}

static void test_bad_values_rejected(void **state) {
    (void)state;
    static const char *const bad[] = {
        "mysql://user:secretpw@127.0.0.1:0/db",
        "mysql://user:secretpw@127.0.0.1:70000/db",
        "mysql://user:secretpw@::1/db",
        "mysql://user:secretpw@[::1/db",
        "mysql://user:secretpw@127.0.0.1/db?read_timeout=soon",
        "mysql://user:secretpw@127.0.0.1/db?charset=utf8;DROP",
        "mysql://user:secretpw@127.0.0.1/db?connect_timeout=0",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        dbpool *p = NULL;
        dbpool_error err;
        int rc = dbpool_open(&p, bad[i], NULL, &err);
        if (rc != DBPOOL_EINVAL)
            fail_msg("%s: want DBPOOL_EINVAL, got %s", bad[i], dbpool_errname(rc));
    }
}

/* A timeout key out of range says the range: one over a year was told
 * "want whole seconds, 1 or more", which it was. */
static void test_timeout_range_named(void **state) {
    (void)state;
    static const char *const bad[] = {"connect_timeout=31536001", "read_timeout=0", "write_timeout=-1"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char url[256];
        snprintf(url, sizeof url, "mysql://user:secretpw@127.0.0.1/db?%s", bad[i]);
        dbpool *p = NULL;
        dbpool_error err;
        int rc = dbpool_open(&p, url, NULL, &err);
        if (rc != DBPOOL_EINVAL || !strstr(err.message, "from 1 to 31536000"))
            fail_msg("%s: %s: %s", bad[i], dbpool_errname(rc), err.message);
    }
}

/* A charset Connector/C does not know, or one no client may use (UTF-16):
 * refused by dbpool_open as the URL's mistake, not retried as a failed
 * connect on every attempt. */
static void test_bad_charset_rejected(void **state) {
    (void)state;
    static const char *const bad[] = {"nosuchcs", "utf16", "ucs2"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char url[2048];
        snprintf(url, sizeof url, "%s%scharset=%s", base_url, strchr(base_url, '?') ? "&" : "?", bad[i]);
        dbpool *p = NULL;
        dbpool_error err;
        int rc = dbpool_open(&p, url, NULL, &err);
        if (rc == DBPOOL_OK)
            dbpool_close(p);
        if (rc != DBPOOL_EINVAL || !strstr(err.message, "charset"))
            fail_msg("charset=%s: want DBPOOL_EINVAL naming the charset, got %s: %s", bad[i],
                     dbpool_errname(rc), err.message);
    }
    /* Names are matched as Connector/C matches them, in any case. */
    char url[2048];
    snprintf(url, sizeof url, "%s%scharset=LATIN1", base_url, strchr(base_url, '?') ? "&" : "?");
    dbpool *p = open_pool(url, 1, DBPOOL_VALIDATE_NEVER);
    dbpool_conn *c = dbt_acquire(p);
    char got[64];
    dbpool_result *r = dbt_query_ok(c, "SELECT @@character_set_client", NULL, 0);
    assert_int_equal(dbt_next_ok(r), 1);
    snprintf(got, sizeof got, "%s", dbpool_result_text(r, 0, NULL));
    dbpool_result_free(r);
    dbpool_release(c);
    dbpool_close(p);
    assert_string_equal(got, "latin1");
}

static void test_ipv6_host_parses(void **state) {
    (void)state;
    /* dbpool_open dials the first host; the bracketed IPv6 entries come after
     * the real server in the fail-over list, so they are parsed but never
     * dialled. A misparse would fail the open with DBPOOL_EINVAL. */
    char userinfo[512], hosts[512], rest[512], url[2048];
    split_url(base_url, userinfo, sizeof userinfo, hosts, sizeof hosts, rest, sizeof rest);
    snprintf(url, sizeof url, "mariadb://%s@%s,[::1]:3307,[::1],localhost%s", userinfo, hosts, rest);
    dbpool *p = open_pool(url, 1, DBPOOL_VALIDATE_NEVER);
    assert_string_equal(dbpool_backend(p), "mysql");
    dbpool_conn *c = NULL;
    dbpool_error err;
    assert_int_equal(dbpool_acquire(p, -1, &c, &err), DBPOOL_OK);
    assert_int_equal(query_int(c, "SELECT 3"), 3);
    dbpool_release(c);
    assert_int_equal(dbpool_close(p), 0);

    /* The port after ']' is read: an impossible one is refused. */
    static const char *const bad[] = {"mysql://user:secretpw@[::1]:99999/db",
                                      "mysql://user:secretpw@[::1]x/db", "mysql://user:secretpw@[]/db"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        p = NULL;
        int rc = dbpool_open(&p, bad[i], NULL, &err);
        if (rc != DBPOOL_EINVAL)
            fail_msg("%s: want DBPOOL_EINVAL, got %s", bad[i], dbpool_errname(rc));
        assert_null(strstr(err.message, "secretpw"));
    }
}

/* A password with every character that has a meaning in a URL. */
static void test_percent_encoded_password(void **state) {
    (void)state;
    static const char pw_raw[] = "p@ss:w/rd?x#1";
    static const char pw_enc[] = "p%40ss%3Aw%2Frd%3Fx%231";
    char userinfo[512], hosts[512], rest[512], url[2048];
    split_url(base_url, userinfo, sizeof userinfo, hosts, sizeof hosts, rest, sizeof rest);

    dbpool *admin = open_pool(admin_url(), 1, DBPOOL_VALIDATE_NEVER);
    dbpool_conn *a = NULL;
    dbpool_error err;
    assert_int_equal(dbpool_acquire(admin, -1, &a, &err), DBPOOL_OK);
    dbpool_param pw = dbpool_param_text(pw_raw);
    dbt_exec_ok(a, "DROP USER IF EXISTS 'dbpool_pct'@'127.0.0.1'", NULL, 0);
    /* CREATE USER cannot be prepared: bind the password to a variable and
     * let the server quote it. */
    dbt_exec_ok(a, "SET @dbpool_pw = ?", &pw, 1);
    dbt_exec_ok(a,
                "EXECUTE IMMEDIATE CONCAT('CREATE USER ''dbpool_pct''@''127.0.0.1'' IDENTIFIED BY ', "
                "QUOTE(@dbpool_pw))",
                NULL, 0);
    dbt_exec_ok(a, "GRANT ALL PRIVILEGES ON dbpool_test.* TO 'dbpool_pct'@'127.0.0.1'", NULL, 0);

    snprintf(url, sizeof url, "mysql://dbpool_pct:%s@%s%s", pw_enc, hosts, rest);
    dbpool *p = open_pool(url, 1, DBPOOL_VALIDATE_NEVER);
    dbpool_conn *c = NULL;
    int rc = dbpool_acquire(p, -1, &c, &err);
    if (rc != DBPOOL_OK)
        fail_msg("connect with the decoded password: %s", err.message);
    assert_int_equal(query_int(c, "SELECT 7"), 7);
    dbpool_release(c);
    dbpool_close(p);

    /* A failing connect must not echo the password in either form. */
    snprintf(url, sizeof url, "mysql://dbpool_pct:%s@%s/no_such_db_dbpool", pw_enc, hosts);
    rc = open_and_acquire(url, 3000, &err);
    /* Without rights there, the server answers 1044 rather than say the database is missing. */
    assert_int_equal(rc, DBPOOL_EAUTH);
    assert_int_equal(err.native_code, 1044);
    assert_null(strstr(err.message, pw_raw));
    assert_null(strstr(err.message, pw_enc));
    assert_null(strstr(err.message, "w/rd"));

    dbt_exec_ok(a, "DROP USER 'dbpool_pct'@'127.0.0.1'", NULL, 0);
    dbpool_release(a);
    dbpool_close(admin);
}

static void test_unknown_database_not_found(void **state) {
    (void)state;
    /* The admin may see every database, so the server says 1049. */
    char userinfo[512], hosts[512], rest[512], url[2048];
    split_url(admin_url(), userinfo, sizeof userinfo, hosts, sizeof hosts, rest, sizeof rest);
    snprintf(url, sizeof url, "mysql://%s@%s/no_such_db_dbpool", userinfo, hosts);
    dbpool_error err;
    assert_int_equal(open_and_acquire(url, 3000, &err), DBPOOL_ENOTFOUND);
    assert_int_equal(err.native_code, 1049);
}

static void test_failover_host_list(void **state) {
    (void)state;
    char userinfo[512], hosts[512], rest[512], url[2048];
    split_url(base_url, userinfo, sizeof userinfo, hosts, sizeof hosts, rest, sizeof rest);
    snprintf(url, sizeof url, "mysql://%s@127.0.0.1:%d,%s%s", userinfo, dbt_free_port(), hosts, rest);
    dbpool *p = open_pool(url, 1, DBPOOL_VALIDATE_NEVER);
    dbpool_conn *c = NULL;
    dbpool_error err;
    int rc = dbpool_acquire(p, -1, &c, &err);
    if (rc != DBPOOL_OK)
        fail_msg("fail-over to the second host: %s", err.message);
    assert_int_equal(query_int(c, "SELECT 1"), 1);
    dbpool_release(c);
    dbpool_close(p);
}

/* The message says how many hosts of the list were tried: a refusal that
 * no other host would change (here the URL's ssl-ca file, missing) ends
 * the list at its first host, and said "all 2 hosts failed". */
static void test_host_list_message_counts_hosts_tried(void **state) {
    (void)state;
    char userinfo[512], hosts[512], rest[512], url[2048];
    split_url(base_url, userinfo, sizeof userinfo, hosts, sizeof hosts, rest, sizeof rest);
    snprintf(url, sizeof url, "mysql://%s@%s,%s%s%cssl-mode=VERIFY_CA&ssl-ca=/nonexistent/dbpool-ca.pem",
             userinfo, hosts, hosts, rest, strchr(rest, '?') ? '&' : '?');
    dbpool_error err;
    assert_int_equal(open_and_acquire(url, 3000, &err), DBPOOL_EINVAL);
    if (strstr(err.message, "hosts") || !strstr(err.message, "/nonexistent/dbpool-ca.pem"))
        fail_msg("a URL error at the first of two hosts: %s", err.message);

    /* Both tried, neither listening: all of them failed. */
    snprintf(url, sizeof url, "mysql://%s@127.0.0.1:%d,127.0.0.1:%d%s", userinfo, dbt_free_port(),
             dbt_free_port(), rest);
    assert_int_equal(open_and_acquire(url, 3000, &err), DBPOOL_ECONNECT);
    if (!strstr(err.message, "all 2 hosts failed"))
        fail_msg("two hosts not listening: %s", err.message);

    /* The first not listening, the second refusing the database: both
     * tried. */
    snprintf(url, sizeof url, "mysql://%s@127.0.0.1:%d,%s/no_such_db_dbpool", userinfo, dbt_free_port(),
             hosts);
    int rc = open_and_acquire(url, 3000, &err);
    assert_true(rc == DBPOOL_ENOTFOUND || rc == DBPOOL_EAUTH);
    if (!strstr(err.message, "all 2 hosts failed"))
        fail_msg("the second host refusing: %s", err.message);
}

/* A port where nothing listens, the newcomer's first mistake (the server is
 * not started, or the port is PostgreSQL's): the message names the host
 * and port and says what to check. Connector/C alone said "Can't connect to
 * server on '127.0.0.1' (115)", an errno that is not the refusal's. The
 * same for a unix socket that is not there. */
static void test_nothing_listening_says_what_to_check(void **state) {
    (void)state;
    int port = dbt_free_port();
    char url[256], where[64];
    snprintf(url, sizeof url, "mysql://u:pw@127.0.0.1:%d/db", port);
    snprintf(where, sizeof where, "127.0.0.1:%d", port);
    dbpool_options o;
    pool_options(&o, 1, DBPOOL_VALIDATE_NEVER);
    o.max_retries = 0;
    dbpool *p = NULL;
    dbpool_error err;
    assert_int_equal(dbpool_open(&p, url, &o, &err), DBPOOL_ECONNECT);
    assert_null(p);
    if (!strstr(err.message, where) || !strstr(err.message, "server running on that host and port"))
        fail_msg("refused connect: %s", err.message);

    assert_int_equal(dbpool_open(&p, "mysql://u:pw@localhost/db?socket=/nonexistent/mysqld.sock", &o, &err),
                     DBPOOL_ECONNECT);
    if (!strstr(err.message, "/nonexistent/mysqld.sock") || !strstr(err.message, "path of its socket"))
        fail_msg("missing socket: %s", err.message);
}

static void test_unix_socket(void **state) {
    (void)state;
    const char *sock = getenv("DBPOOL_TEST_MYSQL_SOCKET");
    if (!sock || !*sock) {
        print_message("DBPOOL_TEST_MYSQL_SOCKET not set; socket test not run\n");
        skip();
    }
    char userinfo[512], hosts[512], rest[512], url[2048];
    split_url(base_url, userinfo, sizeof userinfo, hosts, sizeof hosts, rest, sizeof rest);
    snprintf(url, sizeof url, "mysql://%s@localhost%s%csocket=%s", userinfo, rest,
             strchr(rest, '?') ? '&' : '?', sock);
    dbpool *p = open_pool(url, 1, DBPOOL_VALIDATE_NEVER);
    dbpool_conn *c = NULL;
    dbpool_error err;
    int rc = dbpool_acquire(p, -1, &c, &err);
    if (rc != DBPOOL_OK)
        fail_msg("socket connect: %s", err.message);
    /* The server sees a socket client as plain "localhost", a TCP one as host:port. */
    dbpool_result *r = NULL;
    assert_int_equal(dbpool_query(c,
                                  "SELECT HOST FROM information_schema.PROCESSLIST WHERE ID = "
                                  "CONNECTION_ID()",
                                  NULL, 0, &r, &err),
                     DBPOOL_OK);
    assert_int_equal(dbpool_result_next(r, &err), 1);
    assert_string_equal(dbpool_result_text(r, 0, NULL), "localhost");
    dbpool_result_free(r);
    dbpool_release(c);
    dbpool_close(p);
}

/* ---- values ---- */

static void check_row(dbpool_result *r, const char *big, size_t biglen) {
    dbpool_error err;
    assert_int_equal(dbpool_result_next(r, &err), 1);
    assert_int_equal(dbpool_result_columns(r), 6);
    assert_true(dbpool_result_int64(r, 0) == INT64_MIN);
    assert_true(dbpool_result_int64(r, 1) == INT64_MAX);
    assert_true(dbpool_result_double(r, 2) == 3.25);
    size_t len = 0;
    assert_string_equal(dbpool_result_text(r, 3, &len), "h\xc3\xa9llo 'quoted'");
    assert_true(dbpool_result_is_null(r, 4));
    assert_null(dbpool_result_text(r, 4, NULL));
    const char *t = dbpool_result_text(r, 5, &len);
    assert_int_equal(len, biglen);
    assert_memory_equal(t, big, biglen);
    assert_int_equal(dbpool_result_next(r, &err), 0);
}

static void test_round_trip(void **state) {
    (void)state;
    dbpool *p = open_pool(base_url, 1, DBPOOL_VALIDATE_NEVER);
    dbpool_conn *c = NULL;
    dbpool_error err;
    assert_int_equal(dbpool_acquire(p, -1, &c, &err), DBPOOL_OK);

    size_t biglen = 100 * 1024;
    char *big = malloc(biglen + 1);
    assert_non_null(big);
    for (size_t i = 0; i < biglen; i++)
        big[i] = (char)('a' + i % 26);
    big[biglen] = '\0';

    dbt_exec_ok(c,
                "CREATE TEMPORARY TABLE rt (id INT PRIMARY KEY, i BIGINT, j BIGINT, d DOUBLE, "
                "t VARCHAR(64), n INT NULL, body LONGTEXT)",
                NULL, 0);
    dbpool_param ps[7] = {dbpool_param_int64(1),
                          dbpool_param_int64(INT64_MIN),
                          dbpool_param_int64(INT64_MAX),
                          dbpool_param_double(3.25),
                          dbpool_param_text("h\xc3\xa9llo 'quoted'"),
                          dbpool_param_null(),
                          dbpool_param_text(big)};
    int64_t affected = -1;
    assert_int_equal(dbpool_exec(c, "INSERT INTO rt VALUES (?, ?, ?, ?, ?, ?, ?)", ps, 7, &affected, &err),
                     DBPOOL_OK);
    assert_int_equal(affected, 1);

    /* Prepared statement path (binary protocol, truncated cells fetched again). */
    dbpool_result *r = NULL;
    dbpool_param id = dbpool_param_int64(1);
    assert_int_equal(dbpool_query(c, "SELECT i, j, d, t, n, body FROM rt WHERE id = ?", &id, 1, &r, &err),
                     DBPOOL_OK);
    assert_string_equal(dbpool_result_column_name(r, 5), "body");
    check_row(r, big, biglen);
    dbpool_result_free(r);

    /* Text protocol path (no parameters). */
    assert_int_equal(dbpool_query(c, "SELECT i, j, d, t, n, body FROM rt", NULL, 0, &r, &err), DBPOOL_OK);
    check_row(r, big, biglen);
    dbpool_result_free(r);

    /* Parameters straight back, with NULL and text that is not NUL-terminated. */
    dbpool_param echo[4] = {dbpool_param_int64(-42),
                            dbpool_param_double(-0.5),
                            dbpool_param_null(),
                            {.type = DBPOOL_TYPE_TEXT, .v.text = {"abcdef", 3}}};
    assert_int_equal(dbpool_query(c, "SELECT ?, ?, ?, ?", echo, 4, &r, &err), DBPOOL_OK);
    assert_int_equal(dbpool_result_next(r, &err), 1);
    assert_true(dbpool_result_int64(r, 0) == -42);
    assert_true(dbpool_result_double(r, 1) == -0.5);
    assert_true(dbpool_result_is_null(r, 2));
    assert_string_equal(dbpool_result_text(r, 3, NULL), "abc");
    dbpool_result_free(r);

    /* An UPDATE that changes nothing still counts the matched row. */
    dbpool_param same[2] = {dbpool_param_int64(INT64_MIN), dbpool_param_int64(1)};
    assert_int_equal(dbpool_exec(c, "UPDATE rt SET i = ? WHERE id = ?", same, 2, &affected, &err), DBPOOL_OK);
    assert_int_equal(affected, 1);

    free(big);
    dbpool_release(c);
    dbpool_close(p);
}

/* A text-protocol result (no parameters): names, NULL against the empty
 * string, a value with a NUL byte inside, no row before the first next or
 * after the last, and rows that stay readable while the lease runs other
 * statements. */
static void test_text_result(void **state) {
    (void)state;
    dbpool *p = open_pool(base_url, 1, DBPOOL_VALIDATE_NEVER);
    dbpool_conn *c = dbt_acquire(p);
    dbpool_error err;
    dbpool_result *r = NULL;
    assert_int_equal(dbpool_query(c,
                                  "SELECT 'x' AS a, 0x610062 AS b, NULL AS n UNION ALL SELECT 'y', '', 'z'",
                                  NULL, 0, &r, &err),
                     DBPOOL_OK);
    assert_int_equal(dbpool_result_columns(r), 3);
    assert_string_equal(dbpool_result_column_name(r, 0), "a");
    assert_string_equal(dbpool_result_column_name(r, 2), "n");
    size_t len = 99;
    assert_null(dbpool_result_text(r, 0, &len));
    assert_int_equal(len, 0);
    assert_true(dbpool_result_is_null(r, 0));

    assert_int_equal(query_int(c, "SELECT 7"), 7);

    assert_int_equal(dbpool_result_next(r, &err), 1);
    assert_string_equal(dbpool_result_text(r, 0, NULL), "x");
    const char *b = dbpool_result_text(r, 1, &len);
    assert_int_equal(len, 3);
    assert_memory_equal(b, "a\0b", 3);
    assert_true(dbpool_result_is_null(r, 2));
    assert_int_equal(dbpool_result_next(r, &err), 1);
    assert_string_equal(dbpool_result_text(r, 0, NULL), "y");
    assert_false(dbpool_result_is_null(r, 1));
    assert_string_equal(dbpool_result_text(r, 1, &len), "");
    assert_int_equal(len, 0);
    assert_string_equal(dbpool_result_text(r, 2, NULL), "z");
    assert_int_equal(dbpool_result_next(r, &err), 0);
    assert_true(dbpool_result_is_null(r, 0));
    assert_null(dbpool_result_text(r, 0, NULL));
    dbpool_result_free(r);
    dbpool_release(c);
    dbpool_close(p);
}

static void test_native_error_detail(void **state) {
    (void)state;
    dbpool *p = open_pool(base_url, 1, DBPOOL_VALIDATE_NEVER);
    dbpool_conn *c = NULL;
    dbpool_error err;
    assert_int_equal(dbpool_acquire(p, -1, &c, &err), DBPOOL_OK);

    assert_int_equal(dbpool_exec(c, "SELECT * FROM no_such_table_dbpool", NULL, 0, NULL, &err),
                     DBPOOL_EQUERY);
    assert_int_equal(err.native_code, 1146);
    assert_string_equal(err.sqlstate, "42S02");

    dbpool_param one = dbpool_param_int64(1);
    assert_int_equal(dbpool_exec(c, "SELECT * FROM no_such_table_dbpool WHERE a = ?", &one, 1, NULL, &err),
                     DBPOOL_EQUERY);
    assert_int_equal(err.native_code, 1146);
    assert_string_equal(err.sqlstate, "42S02");

    assert_int_equal(dbpool_exec(c, "SELEC 1", NULL, 0, NULL, &err), DBPOOL_EQUERY);
    assert_int_equal(err.native_code, 1064);
    assert_string_equal(err.sqlstate, "42000");

    /* The connection survives a statement error. */
    assert_int_equal(query_int(c, "SELECT 5"), 5);
    dbpool_release(c);
    dbpool_close(p);
}

/* ---- lifecycle ---- */

static void kill_connection(int64_t id) {
    dbpool *admin = open_pool(admin_url(), 1, DBPOOL_VALIDATE_NEVER);
    dbpool_conn *a = NULL;
    dbpool_error err;
    assert_int_equal(dbpool_acquire(admin, -1, &a, &err), DBPOOL_OK);
    /* KILL cannot be prepared; the id is a number we read, never user text. */
    char sql[64];
    snprintf(sql, sizeof sql, "KILL CONNECTION %lld", (long long)id);
    dbt_exec_ok(a, sql, NULL, 0);
    dbpool_release(a);
    dbpool_close(admin);
    dbt_sleep_ms(100);
}

static void test_killed_connection_discarded(void **state) {
    (void)state;
    /* No validation: the dead connection is handed out and must be noticed. */
    dbpool *p = open_pool(base_url, 1, DBPOOL_VALIDATE_NEVER);
    dbpool_conn *c = NULL;
    dbpool_error err;
    assert_int_equal(dbpool_acquire(p, -1, &c, &err), DBPOOL_OK);
    int64_t id = query_int(c, "SELECT CONNECTION_ID()");
    assert_int_equal(dbpool_release(c), DBPOOL_OK);

    kill_connection(id);

    assert_int_equal(dbpool_acquire(p, -1, &c, &err), DBPOOL_OK);
    int rc = dbpool_exec(c, "SELECT 1", NULL, 0, NULL, &err);
    assert_int_not_equal(rc, DBPOOL_OK);
    assert_true(err.native_code == 2006 || err.native_code == 2013 || err.native_code == 1927 ||
                err.native_code == 4031 || err.native_code == 2055);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);

    assert_int_equal(dbpool_acquire(p, -1, &c, &err), DBPOOL_OK);
    int64_t id2 = query_int(c, "SELECT CONNECTION_ID()");
    assert_true(id2 != id);
    dbpool_release(c);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_true(s.destroyed_by[DBPOOL_CLOSE_BROKEN] >= 1);
    assert_true(dbt_invariant_holds(p));
    dbpool_close(p);

    /* With validation on every hand-out, the caller never sees the dead one. */
    p = open_pool(base_url, 1, DBPOOL_VALIDATE_ALWAYS);
    assert_int_equal(dbpool_acquire(p, -1, &c, &err), DBPOOL_OK);
    id = query_int(c, "SELECT CONNECTION_ID()");
    dbpool_release(c);
    kill_connection(id);
    assert_int_equal(dbpool_acquire(p, -1, &c, &err), DBPOOL_OK);
    assert_true(query_int(c, "SELECT CONNECTION_ID()") != id);
    dbpool_release(c);
    dbpool_close(p);
}

static void test_open_transaction_rolled_back(void **state) {
    (void)state;
    dbpool *p = open_pool(base_url, 1, DBPOOL_VALIDATE_NEVER);
    dbpool_conn *c = NULL;
    dbpool_error err;
    assert_int_equal(dbpool_acquire(p, -1, &c, &err), DBPOOL_OK);
    dbt_exec_ok(c, "DROP TABLE IF EXISTS dbpool_tx_test", NULL, 0);
    dbt_exec_ok(c, "CREATE TABLE dbpool_tx_test (a INT) ENGINE=InnoDB", NULL, 0);
    int64_t id = query_int(c, "SELECT CONNECTION_ID()");
    dbt_exec_ok(c, "START TRANSACTION", NULL, 0);
    dbpool_param v = dbpool_param_int64(42);
    dbt_exec_ok(c, "INSERT INTO dbpool_tx_test VALUES (?)", &v, 1);
    dbt_exec_ok(c, "SET @leftover = 'x'", NULL, 0);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);

    assert_int_equal(dbpool_acquire(p, -1, &c, &err), DBPOOL_OK);
    /* Same connection (max 1), clean session, nothing committed. */
    assert_int_equal(query_int(c, "SELECT CONNECTION_ID()"), id);
    assert_int_equal(query_int(c, "SELECT @@in_transaction"), 0);
    assert_int_equal(query_int(c, "SELECT COUNT(*) FROM dbpool_tx_test"), 0);
    assert_int_equal(query_int(c, "SELECT @leftover IS NULL"), 1);
    /* The reset must not lose the connection's character set. */
    dbpool_result *r = NULL;
    assert_int_equal(dbpool_query(c, "SELECT @@character_set_client", NULL, 0, &r, &err), DBPOOL_OK);
    assert_int_equal(dbpool_result_next(r, &err), 1);
    assert_string_equal(dbpool_result_text(r, 0, NULL), "utf8mb4");
    dbpool_result_free(r);
    dbt_exec_ok(c, "DROP TABLE dbpool_tx_test", NULL, 0);
    dbpool_release(c);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_true(s.rollbacks >= 1);
    dbpool_close(p);
}

/* What the server does not report as a session change is reset too: a
 * table lock, a named lock and a user variable set inside a SELECT would
 * otherwise stay with the pooled connection (the lock blocking every other
 * session while it sits idle) and reach the next caller. */
static void test_untracked_session_state_reset(void **state) {
    (void)state;
    char lock_name[64], t1[64], t2[64], sql[256];
    snprintf(lock_name, sizeof lock_name, "dbpool_test_lock_%ld", (long)getpid());
    snprintf(t1, sizeof t1, "dbpool_lk1_%ld", (long)getpid());
    snprintf(t2, sizeof t2, "dbpool_lk2_%ld", (long)getpid());
    dbpool *p = open_pool(base_url, 1, DBPOOL_VALIDATE_NEVER);
    dbpool_conn *c = dbt_acquire(p);
    int64_t id = query_int(c, "SELECT CONNECTION_ID()");
    snprintf(sql, sizeof sql, "CREATE TABLE IF NOT EXISTS %s (a INT)", t1);
    dbt_exec_ok(c, sql, NULL, 0);
    snprintf(sql, sizeof sql, "CREATE TABLE IF NOT EXISTS %s (a INT)", t2);
    dbt_exec_ok(c, sql, NULL, 0);
    dbpool_release(c);
    dbpool_stats before;
    dbpool_get_stats(p, &before);

    c = dbt_acquire(p);
    snprintf(sql, sizeof sql, "LOCK TABLES %s WRITE", t1);
    dbt_exec_ok(c, sql, NULL, 0);
    dbpool_param name = dbpool_param_text(lock_name);
    assert_int_equal(query_int_params(c, "SELECT GET_LOCK(?, 0)", &name, 1), 1);
    assert_int_equal(query_int(c, "SELECT LENGTH(@leak := 'lease one')"), 9);
    dbpool_release(c);
    dbpool_stats after;
    dbpool_get_stats(p, &after);
    assert_int_equal(after.rollbacks, before.rollbacks + 1);

    c = dbt_acquire(p);
    assert_int_equal(query_int(c, "SELECT CONNECTION_ID()"), id); /* the same session */
    assert_int_equal(query_int(c, "SELECT @leak IS NULL"), 1);
    /* Under LOCK TABLES t1 this would fail: t2 "was not locked". */
    snprintf(sql, sizeof sql, "INSERT INTO %s VALUES (1)", t2);
    dbt_exec_ok(c, sql, NULL, 0);
    dbpool_release(c);

    dbpool *other = open_pool(base_url, 1, DBPOOL_VALIDATE_NEVER);
    dbpool_conn *o = dbt_acquire(other);
    assert_int_equal(query_int_params(o, "SELECT IS_FREE_LOCK(?)", &name, 1), 1);
    snprintf(sql, sizeof sql, "INSERT INTO %s VALUES (2)", t1); /* would wait for the table lock */
    dbt_exec_ok(o, sql, NULL, 0);
    snprintf(sql, sizeof sql, "DROP TABLE %s, %s", t1, t2);
    dbt_exec_ok(o, sql, NULL, 0);
    dbpool_release(o);
    dbpool_close(other);
    dbpool_close(p);
}

/* A kept (prepared) statement belongs to the database it was prepared in:
 * after USE, the same SQL must reach the new default database. */
static void test_use_reprepares_kept_statements(void **state) {
    (void)state;
    char db2[64], table[64], sql[256];
    snprintf(db2, sizeof db2, "dbpool_use_%ld", (long)getpid());
    snprintf(table, sizeof table, "dbpool_ct_%ld", (long)getpid());
    dbpool *p = open_pool(admin_url(), 1, DBPOOL_VALIDATE_NEVER);
    dbpool_conn *c = dbt_acquire(p);
    char home[64];
    dbpool_result *r = dbt_query_ok(c, "SELECT DATABASE()", NULL, 0);
    assert_int_equal(dbt_next_ok(r), 1);
    snprintf(home, sizeof home, "%s", dbpool_result_text(r, 0, NULL));
    dbpool_result_free(r);
    snprintf(sql, sizeof sql, "CREATE DATABASE IF NOT EXISTS %s", db2);
    dbt_exec_ok(c, sql, NULL, 0);
    snprintf(sql, sizeof sql, "CREATE TABLE IF NOT EXISTS %s (v INT)", table);
    dbt_exec_ok(c, sql, NULL, 0);
    snprintf(sql, sizeof sql, "CREATE TABLE IF NOT EXISTS %s.%s (v INT)", db2, table);
    dbt_exec_ok(c, sql, NULL, 0);
    char insert[128];
    snprintf(insert, sizeof insert, "INSERT INTO %s VALUES (?)", table);
    dbpool_param one = dbpool_param_int64(1);
    dbt_exec_ok(c, insert, &one, 1); /* prepared and kept, in the home database */
    snprintf(sql, sizeof sql, "USE %s", db2);
    dbt_exec_ok(c, sql, NULL, 0);
    dbt_exec_ok(c, insert, &one, 1); /* must land in db2 now */
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM %s.%s", db2, table);
    assert_int_equal(query_int(c, sql), 1);
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM %s.%s", home, table);
    assert_int_equal(query_int(c, sql), 1);
    snprintf(sql, sizeof sql, "DROP DATABASE %s", db2);
    dbt_exec_ok(c, sql, NULL, 0);
    snprintf(sql, sizeof sql, "DROP TABLE %s.%s", home, table);
    dbt_exec_ok(c, sql, NULL, 0);
    dbpool_release(c);
    dbpool_close(p);
}

/* The next lease of the same session, with its text or 0 for NULL. */
static void text_of(dbpool_conn *c, const char *sql, char *buf, size_t cap) {
    dbpool_result *r = dbt_query_ok(c, sql, NULL, 0);
    assert_int_equal(dbt_next_ok(r), 1);
    const char *v = dbpool_result_text(r, 0, NULL);
    snprintf(buf, cap, "%s", v ? v : "0");
    dbpool_result_free(r);
}

/* A pool of one session on the admin URL, with a table, a procedure that
 * fails after a write, and a second database. */
typedef struct left_clean {
    dbpool *p;
    int64_t id;
    char db2[64], proc[64], proc2[64], table[64], home[64];
} left_clean;

static void left_clean_open(left_clean *t) {
    char sql[300];
    snprintf(t->db2, sizeof t->db2, "dbpool_lc_%ld", (long)getpid());
    snprintf(t->proc, sizeof t->proc, "dbpool_pfail_%ld", (long)getpid());
    snprintf(t->proc2, sizeof t->proc2, "dbpool_pfail2_%ld", (long)getpid());
    snprintf(t->table, sizeof t->table, "dbpool_pt_%ld", (long)getpid());
    t->p = open_pool(admin_url(), 1, DBPOOL_VALIDATE_NEVER);
    dbpool_conn *c = dbt_acquire(t->p);
    t->id = query_int(c, "SELECT CONNECTION_ID()");
    text_of(c, "SELECT DATABASE()", t->home, sizeof t->home);
    snprintf(sql, sizeof sql, "CREATE DATABASE IF NOT EXISTS %s", t->db2);
    dbt_exec_ok(c, sql, NULL, 0);
    snprintf(sql, sizeof sql, "CREATE TABLE IF NOT EXISTS %s (v INT) ENGINE=InnoDB", t->table);
    dbt_exec_ok(c, sql, NULL, 0);
    snprintf(sql, sizeof sql, "DROP PROCEDURE IF EXISTS %s", t->proc);
    dbt_exec_ok(c, sql, NULL, 0);
    snprintf(sql, sizeof sql,
             "CREATE PROCEDURE %s() BEGIN START TRANSACTION; INSERT INTO %s VALUES (1); "
             "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'fails after a write'; END",
             t->proc, t->table);
    dbt_exec_ok(c, sql, NULL, 0);
    /* The same after a first result: the error comes with the next one. */
    snprintf(sql, sizeof sql, "DROP PROCEDURE IF EXISTS %s", t->proc2);
    dbt_exec_ok(c, sql, NULL, 0);
    snprintf(sql, sizeof sql,
             "CREATE PROCEDURE %s(IN x INT) BEGIN SELECT x; START TRANSACTION; INSERT INTO %s VALUES (x); "
             "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'fails after a result'; END",
             t->proc2, t->table);
    dbt_exec_ok(c, sql, NULL, 0);
    dbpool_release(c);
}

static void left_clean_close(left_clean *t) {
    char sql[300];
    dbpool_conn *c = dbt_acquire(t->p);
    snprintf(sql, sizeof sql, "DROP PROCEDURE %s", t->proc);
    dbt_exec_ok(c, sql, NULL, 0);
    snprintf(sql, sizeof sql, "DROP PROCEDURE %s", t->proc2);
    dbt_exec_ok(c, sql, NULL, 0);
    snprintf(sql, sizeof sql, "DROP TABLE %s.%s", t->home, t->table);
    dbt_exec_ok(c, sql, NULL, 0);
    snprintf(sql, sizeof sql, "DROP DATABASE %s", t->db2);
    dbt_exec_ok(c, sql, NULL, 0);
    dbpool_release(c);
    dbpool_close(t->p);
}

/* USE otherdb: the next lease is in the URL's database again. */
static void test_use_undone_at_release(void **state) {
    (void)state;
    left_clean t;
    left_clean_open(&t);
    char sql[300], got[64];
    dbpool_conn *c = dbt_acquire(t.p);
    snprintf(sql, sizeof sql, "USE %s", t.db2);
    dbt_exec_ok(c, sql, NULL, 0);
    dbpool_release(c);
    c = dbt_acquire(t.p);
    assert_int_equal(query_int(c, "SELECT CONNECTION_ID()"), t.id);
    text_of(c, "SELECT DATABASE()", got, sizeof got);
    dbpool_release(c);
    if (strcmp(got, t.home) != 0)
        fail_msg("after USE %s the next lease is in '%s', not the URL's '%s'", t.db2, got, t.home);
    left_clean_close(&t);
}

/* A statement that fails after opening a transaction (the error reply
 * carries no status): the transaction does not reach the next lease. */
static void test_failed_statement_resets(void **state) {
    (void)state;
    left_clean t;
    left_clean_open(&t);
    char sql[300];
    /* The error as the first reply, after a first result (text), and after
     * a first result of a prepared CALL. */
    char calls[3][128];
    snprintf(calls[0], sizeof calls[0], "CALL %s()", t.proc);
    snprintf(calls[1], sizeof calls[1], "CALL %s(1)", t.proc2);
    snprintf(calls[2], sizeof calls[2], "CALL %s(?)", t.proc2);
    for (int i = 0; i < 3; i++) {
        dbpool_conn *c = dbt_acquire(t.p);
        dbpool_param one = dbpool_param_int64(1);
        dbpool_error e;
        assert_int_not_equal(dbpool_exec(c, calls[i], &one, i == 2 ? 1 : 0, NULL, &e), DBPOOL_OK);
        dbpool_release(c);
        c = dbt_acquire(t.p);
        dbt_exec_ok(c, "COMMIT", NULL, 0);
        snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM %s", t.table);
        int64_t rows = query_int(c, sql);
        dbpool_release(c);
        if (rows != 0)
            fail_msg(
                "%s failed with a transaction open; it reached the next lease, whose COMMIT kept its row",
                calls[i]);
    }
    left_clean_close(&t);
}

/* A URL's percent-encoded user info, decoded (the test servers' are plain). */
static void pct_decode(const char *in, char *out, size_t cap) {
    size_t o = 0;
    for (; *in && o + 1 < cap; in++) {
        unsigned v;
        if (in[0] == '%' && in[1] && in[2] && sscanf(in + 1, "%2x", &v) == 1) {
            out[o++] = (char)v;
            in += 2;
        } else {
            out[o++] = *in;
        }
    }
    out[o] = '\0';
}

/* mysql_change_user on the native handle makes the session another
 * account's, and a reset keeps the account: the connection must not serve
 * the next lease with those privileges. */
static void test_native_change_user_not_pooled(void **state) {
    (void)state;
    char userinfo[512], hosts[512], rest[512];
    split_url(admin_url(), userinfo, sizeof userinfo, hosts, sizeof hosts, rest, sizeof rest);
    char *colon = strchr(userinfo, ':');
    assert_non_null(colon); /* the admin URL has a password */
    *colon = '\0';
    char admin_pw[256];
    pct_decode(colon + 1, admin_pw, sizeof admin_pw);
    dbpool *p = open_pool(base_url, 1, DBPOOL_VALIDATE_NEVER);
    dbpool_conn *c = dbt_acquire(p);
    char mine[128], got[128];
    text_of(c, "SELECT CURRENT_USER()", mine, sizeof mine);
    MYSQL *m = dbpool_conn_native(c);
    if (mysql_change_user(m, userinfo, admin_pw, NULL) != 0)
        fail_msg("mysql_change_user: %s", mysql_error(m));
    dbpool_release(c);
    c = dbt_acquire(p);
    text_of(c, "SELECT CURRENT_USER()", got, sizeof got);
    dbpool_release(c);
    dbpool_close(p);
    if (strcmp(got, mine) != 0)
        fail_msg("the lease after a mysql_change_user runs as %s, not as the URL's %s", got, mine);
}

/* A statement that fails on the native handle after opening a transaction
 * (a procedure's START TRANSACTION and INSERT, then an error): the error
 * reply carries no status, and the transaction must not reach the next
 * lease, which would see the row and could commit it. */
static void test_native_failed_statement_resets(void **state) {
    (void)state;
    left_clean t;
    left_clean_open(&t);
    char sql[300];
    dbpool_conn *c = dbt_acquire(t.p);
    MYSQL *m = dbpool_conn_native(c);
    snprintf(sql, sizeof sql, "CALL %s()", t.proc);
    assert_int_not_equal(mysql_query(m, sql), 0);
    dbpool_release(c);
    c = dbt_acquire(t.p);
    int64_t in_tx = query_int(c, "SELECT @@in_transaction");
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM %s", t.table);
    int64_t rows = query_int(c, sql);
    dbt_exec_ok(c, "ROLLBACK", NULL, 0);
    dbpool_release(c);
    if (in_tx != 0 || rows != 0)
        fail_msg("after a failed CALL on the native handle the next lease is %sin a transaction and sees "
                 "%lld uncommitted row(s)",
                 in_tx ? "" : "not ", (long long)rows);
    left_clean_close(&t);
}

/* Changes made on the native handle are seen from the server's reports. */
static void test_native_changes_reset(void **state) {
    (void)state;
    left_clean t;
    left_clean_open(&t);
    dbpool_conn *c = dbt_acquire(t.p);
    MYSQL *m = dbpool_conn_native(c);
    assert_int_equal(mysql_query(m, "SET autocommit=0"), 0);
    assert_int_equal(mysql_query(m, "SET SESSION sql_mode='ANSI_QUOTES'"), 0);
    assert_int_equal(mysql_query(m, "SET @native_var = 9"), 0);
    dbpool_release(c);
    c = dbt_acquire(t.p);
    int64_t autocommit = query_int(c, "SELECT @@autocommit");
    int64_t var_gone = query_int(c, "SELECT @native_var IS NULL");
    int64_t ansi = query_int(c, "SELECT @@sql_mode LIKE '%ANSI_QUOTES%'");
    dbpool_release(c);
    if (autocommit != 1 || var_gone != 1 || ansi != 0)
        fail_msg("the next lease has autocommit %lld, @native_var %s, ANSI_QUOTES %s", (long long)autocommit,
                 var_gone ? "gone" : "kept", ansi ? "on" : "off");
    left_clean_close(&t);
}

/* SET @@name = ... without a scope changes the session, but MariaDB does
 * not report it: autocommit turned off that way would make the next
 * caller's writes a transaction that its release rolls back. */
static void test_unscoped_system_variable_reset(void **state) {
    (void)state;
    left_clean t;
    left_clean_open(&t);
    char sql[300], tz[64];
    dbpool_conn *c = dbt_acquire(t.p);
    dbt_exec_ok(c, "SET @@autocommit = 0", NULL, 0);
    dbt_exec_ok(c, "SET @@time_zone = '+04:00'", NULL, 0);
    dbpool_release(c);
    c = dbt_acquire(t.p);
    assert_int_equal(query_int(c, "SELECT CONNECTION_ID()"), t.id);
    int64_t autocommit = query_int(c, "SELECT @@autocommit");
    text_of(c, "SELECT @@time_zone", tz, sizeof tz);
    snprintf(sql, sizeof sql, "INSERT INTO %s VALUES (3)", t.table);
    dbt_exec_ok(c, sql, NULL, 0); /* autocommit, as far as this caller knows */
    dbpool_release(c);
    c = dbt_acquire(t.p);
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM %s WHERE v = 3", t.table);
    int64_t rows = query_int(c, sql);
    dbpool_release(c);
    if (autocommit != 1 || rows != 1 || strcmp(tz, "+04:00") == 0)
        fail_msg("after SET @@autocommit = 0 and SET @@time_zone the next lease had autocommit %lld, "
                 "time_zone %s, and its INSERT %s",
                 (long long)autocommit, tz, rows == 1 ? "was kept" : "was rolled back");
    left_clean_close(&t);
}

/* FLUSH TABLES t FOR EXPORT keeps t locked for the session until UNLOCK
 * TABLES, unreported: pooled as it was, the idle connection would block
 * every writer of t. */
static void test_flush_for_export_reset(void **state) {
    (void)state;
    left_clean t;
    left_clean_open(&t);
    char sql[300];
    dbpool_conn *c = dbt_acquire(t.p);
    snprintf(sql, sizeof sql, "FLUSH TABLES %s FOR EXPORT", t.table);
    dbt_exec_ok(c, sql, NULL, 0);
    dbpool_release(c);
    dbpool *other = open_pool(admin_url(), 1, DBPOOL_VALIDATE_NEVER);
    dbpool_conn *o = dbt_acquire(other);
    dbt_exec_ok(o, "SET SESSION lock_wait_timeout = 2", NULL, 0);
    snprintf(sql, sizeof sql, "INSERT INTO %s VALUES (9)", t.table);
    dbpool_error e;
    int rc = dbpool_exec(o, sql, NULL, 0, NULL, &e);
    dbpool_release(o);
    dbpool_close(other);
    if (rc != DBPOOL_OK) {
        /* Close the locking session first: the clean-up's DROP would wait for it. */
        dbpool_close(t.p);
        t.p = open_pool(admin_url(), 1, DBPOOL_VALIDATE_NEVER);
        left_clean_close(&t);
        fail_msg("a writer of the table after the lease's FLUSH ... FOR EXPORT: %s", e.message);
    }
    left_clean_close(&t);
}

/* EXECUTE IMMEDIATE runs SQL from a string: a named lock or a SET
 * @@autocommit inside it is no more reported than outside, and the scan
 * cannot read it, so the statement itself asks for the reset. */
static void test_execute_immediate_reset(void **state) {
    (void)state;
    left_clean t;
    left_clean_open(&t);
    char lock_name[64], sql[300];
    snprintf(lock_name, sizeof lock_name, "dbpool_ei_lock_%ld", (long)getpid());
    dbpool_conn *c = dbt_acquire(t.p);
    snprintf(sql, sizeof sql, "EXECUTE IMMEDIATE 'DO GET_LOCK(''%s'', 0)'", lock_name);
    dbt_exec_ok(c, sql, NULL, 0);
    dbt_exec_ok(c, "EXECUTE IMMEDIATE 'SET @@autocommit = 0'", NULL, 0);
    dbpool_release(c);
    c = dbt_acquire(t.p);
    int64_t autocommit = query_int(c, "SELECT @@autocommit");
    dbpool_param name = dbpool_param_text(lock_name);
    int64_t free_lock = query_int_params(c, "SELECT IS_FREE_LOCK(?)", &name, 1);
    dbpool_release(c);
    if (autocommit != 1 || free_lock != 1)
        fail_msg("after EXECUTE IMMEDIATE the next lease had autocommit %lld and the named lock %s",
                 (long long)autocommit, free_lock ? "free" : "still held by the pooled session");
    left_clean_close(&t);
}

/* A lease that prepares an XA transaction and releases it: MariaDB's reset
 * would leave that session failing every InnoDB statement (error 1031)
 * and the transaction orphaned with its locks. The connection is closed
 * instead; the prepared transaction stays for XA ROLLBACK from elsewhere. */
static void test_xa_prepared_not_reset(void **state) {
    (void)state;
    left_clean t;
    left_clean_open(&t);
    char sql[300], xid[64];
    snprintf(xid, sizeof xid, "dbpool_xa_%ld", (long)getpid());
    dbpool_conn *c = dbt_acquire(t.p);
    snprintf(sql, sizeof sql, "XA START '%s'", xid);
    dbt_exec_ok(c, sql, NULL, 0);
    snprintf(sql, sizeof sql, "INSERT INTO %s VALUES (7)", t.table);
    dbt_exec_ok(c, sql, NULL, 0);
    snprintf(sql, sizeof sql, "XA END '%s'", xid);
    dbt_exec_ok(c, sql, NULL, 0);
    snprintf(sql, sizeof sql, "XA PREPARE '%s'", xid);
    dbt_exec_ok(c, sql, NULL, 0);
    dbpool_release(c);

    c = dbt_acquire(t.p);
    int64_t id = query_int(c, "SELECT CONNECTION_ID()");
    snprintf(sql, sizeof sql, "INSERT INTO %s VALUES (8)", t.table);
    dbpool_error e;
    int rc = dbpool_exec(c, sql, NULL, 0, NULL, &e);
    if (rc != DBPOOL_OK) /* no clean-up: the orphaned transaction locks the table */
        fail_msg("the lease after an XA PREPARE (session %lld, first %lld) cannot write: %s", (long long)id,
                 (long long)t.id, e.message);
    assert_int_not_equal(id, t.id); /* closed, not reset */
    snprintf(sql, sizeof sql, "XA ROLLBACK '%s'", xid);
    dbt_exec_ok(c, sql, NULL, 0); /* the prepared transaction was kept */
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM %s WHERE v IN (7, 8)", t.table);
    assert_int_equal(query_int(c, sql), 1);
    dbpool_release(c);
    left_clean_close(&t);
}

/* SET TRANSACTION READ ONLY, for the next transaction only. */
static void test_set_transaction_reset(void **state) {
    (void)state;
    left_clean t;
    left_clean_open(&t);
    char sql[300];
    dbpool_conn *c = dbt_acquire(t.p);
    dbt_exec_ok(c, "SET TRANSACTION READ ONLY", NULL, 0);
    dbpool_release(c);
    c = dbt_acquire(t.p);
    snprintf(sql, sizeof sql, "INSERT INTO %s VALUES (2)", t.table);
    dbpool_error e;
    int rc = dbpool_exec(c, sql, NULL, 0, NULL, &e);
    dbpool_release(c);
    if (rc != DBPOOL_OK)
        fail_msg("the next lease inherited a read-only transaction: %s", e.message);
    left_clean_close(&t);
}

/* A result left unread on the native handle: not pooled again. */
static void test_unread_native_result_not_pooled(void **state) {
    (void)state;
    left_clean t;
    left_clean_open(&t);
    dbpool_conn *c = dbt_acquire(t.p);
    MYSQL *m = dbpool_conn_native(c);
    assert_int_equal(mysql_query(m, "SELECT 1 UNION ALL SELECT 2"), 0);
    MYSQL_RES *half = mysql_use_result(m);
    assert_non_null(half);
    assert_non_null(mysql_fetch_row(half)); /* one of two rows read */
    dbpool_release(c);                      /* closes the connection: the result's handle is gone */
    half->handle = NULL;
    mysql_free_result(half);
    c = dbt_acquire(t.p);
    dbpool_error e;
    dbpool_result *r = NULL;
    int rc = dbpool_query(c, "SELECT 5", NULL, 0, &r, &e);
    dbpool_result_free(r);
    int64_t id = rc == DBPOOL_OK ? query_int(c, "SELECT CONNECTION_ID()") : t.id;
    dbpool_release(c);
    if (rc != DBPOOL_OK || id == t.id)
        fail_msg("the connection with an unread result was pooled again: %s",
                 rc ? e.message : "same session");
    left_clean_close(&t);
}

/* After a reset the session is set up in the order of a new connection:
 * init_command first, then the pool's statement timeout, which wins. */
static void test_reset_restores_in_connect_order(void **state) {
    (void)state;
    char url[1200];
    snprintf(url, sizeof url, "%s%sinit_command=SET%%20SESSION%%20max_statement_time%%3D7", base_url,
             strchr(base_url, '?') ? "&" : "?");
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.validation = DBPOOL_VALIDATE_NEVER;
    o.statement_timeout_ms = 1000;
    dbpool *p = NULL;
    dbpool_error e;
    if (dbpool_open(&p, url, &o, &e) != DBPOOL_OK)
        fail_msg("open: %s", e.message);
    dbpool_conn *c = dbt_acquire(p);
    int64_t fresh = query_int(c, "SELECT @@max_statement_time * 1000");
    dbt_exec_ok(c, "SET @dirty = 1", NULL, 0); /* the release resets */
    dbpool_release(c);
    c = dbt_acquire(p);
    int64_t after = query_int(c, "SELECT @@max_statement_time * 1000");
    dbpool_release(c);
    dbpool_close(p);
    if (fresh != 1000 || after != fresh)
        fail_msg("max_statement_time: %lld ms on a new connection, %lld ms after a reset", (long long)fresh,
                 (long long)after);
}

/* A procedure of five 200 ms sleeps, each a statement of its own: each
 * stays under a 400 ms server limit, the CALL as a whole runs past the
 * client's backstop. The caller drops it (DROP PROCEDURE dbpool_naps). */
static void create_naps(dbpool_conn *c) {
    dbt_exec_ok(c, "DROP PROCEDURE IF EXISTS dbpool_naps", NULL, 0);
    dbt_exec_ok(c,
                "CREATE PROCEDURE dbpool_naps() BEGIN DO SLEEP(0.2); DO SLEEP(0.2); DO SLEEP(0.2); "
                "DO SLEEP(0.2); DO SLEEP(0.2); END",
                NULL, 0);
}

/* The URL's init_command runs before the pool sets its own statement limit,
 * so naming max_statement_time there leaves the session with the pool's
 * limit: the client-side backstop still holds. A CALL whose statements each
 * stay under the server's limit but together run past the backstop is cut
 * off, as on a pool without init_command (before, such an init_command
 * turned the backstop off for the connection's life, and a frozen server
 * held callers for ever). */
static void test_init_command_limit_keeps_backstop(void **state) {
    (void)state;
    char url[1200];
    snprintf(url, sizeof url, "%s%sinit_command=SET%%20SESSION%%20max_statement_time%%3D0", base_url,
             strchr(base_url, '?') ? "&" : "?");
    dbpool_options o;
    pool_options(&o, 1, DBPOOL_VALIDATE_NEVER);
    o.statement_timeout_ms = 400;
    o.validation_timeout_ms = 150;
    dbpool *p = open_pool_opts(url, &o);
    dbpool_conn *c = dbt_acquire(p);
    /* This statement names the limit: the backstop stands aside until the release. */
    assert_int_equal(query_int(c, "SELECT @@max_statement_time * 1000"), 400);
    dbpool_release(c);
    c = dbt_acquire(p);
    create_naps(c);
    dbpool_error err;
    memset(&err, 0, sizeof err);
    int64_t t0 = dbt_now_ms();
    int rc = dbpool_exec(c, "CALL dbpool_naps()", NULL, 0, NULL, &err);
    int64_t took = dbt_now_ms() - t0;
    dbpool_release(c);
    c = dbt_acquire(p);
    dbt_exec_ok(c, "DROP PROCEDURE dbpool_naps", NULL, 0);
    dbpool_release(c);
    dbpool_close(p);
    if (rc != DBPOOL_ETIMEDOUT)
        fail_msg("a CALL past statement_timeout_ms + validation_timeout_ms (550 ms) on a pool whose "
                 "init_command names max_statement_time: %s after %lld ms (the backstop should end it): %s",
                 dbpool_errname(rc), (long long)took, err.message);
}

/* A lease whose statement the backstop cut off refuses later statements at
 * once, saying why: also one that names the server's statement limit,
 * which the pool sends without a deadline (before, that one reached
 * Connector/C and failed with "Server has gone away", as if the server had
 * closed the connection). */
static void test_given_up_lease_refuses_unbounded_statement(void **state) {
    (void)state;
    dbpool_options o;
    pool_options(&o, 1, DBPOOL_VALIDATE_NEVER);
    o.statement_timeout_ms = 400;
    o.validation_timeout_ms = 150;
    dbpool *p = open_pool_opts(base_url, &o);
    dbpool_conn *c = dbt_acquire(p);
    create_naps(c);
    dbpool_error err;
    memset(&err, 0, sizeof err);
    assert_int_equal(dbpool_exec(c, "CALL dbpool_naps()", NULL, 0, NULL, &err), DBPOOL_ETIMEDOUT);
    const char *const later[] = {"SELECT 1", "SELECT @@max_statement_time"};
    int rc[2];
    char msg[2][sizeof err.message];
    for (int i = 0; i < 2; i++) {
        memset(&err, 0, sizeof err);
        rc[i] = dbpool_exec(c, later[i], NULL, 0, NULL, &err);
        memcpy(msg[i], err.message, sizeof msg[i]);
    }
    dbpool_release(c);
    c = dbt_acquire(p);
    dbt_exec_ok(c, "DROP PROCEDURE dbpool_naps", NULL, 0);
    dbpool_release(c);
    dbpool_close(p);
    for (int i = 0; i < 2; i++)
        if (rc[i] != DBPOOL_EBROKEN || !strstr(msg[i], "given up"))
            fail_msg("\"%s\" on a lease given up on: %s: %s (expected DBPOOL_EBROKEN saying the connection "
                     "was given up on)",
                     later[i], dbpool_errname(rc[i]), msg[i]);
}

static void count_attempts(void *user, dbpool_log_level level, const char *line) {
    (void)level;
    if (strstr(line, "connect attempt"))
        (*(int *)user)++;
}

/* An init_command the server refuses fails every attempt alike: the open
 * fails at once with the statement's error, as a failing init_sql does,
 * not as a connect error retried max_retries times. */
static void test_failing_init_command_not_retried(void **state) {
    (void)state;
    char url[1200];
    snprintf(url, sizeof url, "%s%sinit_command=SELEC%%20wrong", base_url, strchr(base_url, '?') ? "&" : "?");
    int attempts = 0;
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.maintenance_interval_ms = 0;
    o.max_retries = 3;
    o.backoff_base_ms = 10;
    o.log_fn = count_attempts;
    o.log_user = &attempts;
    dbpool *p = NULL;
    dbpool_error err;
    int rc = dbpool_open(&p, url, &o, &err);
    if (rc == DBPOOL_OK)
        dbpool_close(p);
    if (rc != DBPOOL_EQUERY || attempts != 1 || !strstr(err.message, "init_command"))
        fail_msg("a failing init_command: %s after %d attempt(s): %s", dbpool_errname(rc), attempts,
                 err.message);
    assert_int_equal(err.native_code, 1064); /* ER_PARSE_ERROR */
}

/* An init_command that calls a procedure returning a result set: the
 * reset runs it again and must read every result, or the statements after
 * it fail "out of sync" and every reset closes the connection. */
static void test_reset_reads_init_command_results(void **state) {
    (void)state;
    char proc[64], sql[256], url[1200];
    snprintf(proc, sizeof proc, "dbpool_init_rs_%ld", (long)getpid());
    dbpool *admin = open_pool(base_url, 1, DBPOOL_VALIDATE_NEVER);
    dbpool_conn *a = dbt_acquire(admin);
    snprintf(sql, sizeof sql, "DROP PROCEDURE IF EXISTS %s", proc);
    dbt_exec_ok(a, sql, NULL, 0);
    snprintf(sql, sizeof sql, "CREATE PROCEDURE %s() BEGIN SET @dbpool_ic = 5; SELECT @dbpool_ic AS v; END",
             proc);
    dbt_exec_ok(a, sql, NULL, 0);
    snprintf(url, sizeof url, "%s%sinit_command=CALL%%20%s()", base_url, strchr(base_url, '?') ? "&" : "?",
             proc);
    dbpool *p = open_pool(url, 1, DBPOOL_VALIDATE_NEVER);
    dbpool_conn *c = dbt_acquire(p);
    int64_t id = query_int(c, "SELECT CONNECTION_ID()");
    assert_int_equal(query_int(c, "SELECT @dbpool_ic"), 5);
    dbt_exec_ok(c, "SET @dbpool_ic = 6", NULL, 0); /* the release resets */
    dbpool_release(c);
    c = dbt_acquire(p);
    int64_t id2 = query_int(c, "SELECT CONNECTION_ID()");
    int64_t v = query_int(c, "SELECT @dbpool_ic");
    dbpool_release(c);
    dbpool_stats st;
    dbpool_get_stats(p, &st);
    dbpool_close(p);
    snprintf(sql, sizeof sql, "DROP PROCEDURE %s", proc);
    dbt_exec_ok(a, sql, NULL, 0);
    dbpool_release(a);
    dbpool_close(admin);
    if (id2 != id || v != 5 || st.rollbacks != 1)
        fail_msg("init_command CALL: after the reset session %lld (was %lld), @dbpool_ic %lld, %llu reset(s)",
                 (long long)id2, (long long)id, (long long)v, (unsigned long long)st.rollbacks);
}

/* An init_command that sets the character set (SET NAMES, as older set-ups
 * do) overrides the URL's charset on a new connection: the same after a
 * reset, or the next lease reads and writes in another character set. */
static void test_reset_keeps_init_command_charset(void **state) {
    (void)state;
    char url[1200], fresh[64], after[64];
    snprintf(url, sizeof url, "%s%sinit_command=SET%%20NAMES%%20latin1", base_url,
             strchr(base_url, '?') ? "&" : "?");
    dbpool *p = open_pool(url, 1, DBPOOL_VALIDATE_NEVER);
    dbpool_conn *c = dbt_acquire(p);
    int64_t id = query_int(c, "SELECT CONNECTION_ID()");
    text_of(c, "SELECT CONCAT(@@character_set_client, '/', @@character_set_results)", fresh, sizeof fresh);
    dbt_exec_ok(c, "SET @dirty = 1", NULL, 0); /* the release resets */
    dbpool_release(c);
    c = dbt_acquire(p);
    assert_int_equal(query_int(c, "SELECT CONNECTION_ID()"), id);
    text_of(c, "SELECT CONCAT(@@character_set_client, '/', @@character_set_results)", after, sizeof after);
    dbpool_release(c);
    dbpool_close(p);
    assert_string_equal(fresh, "latin1/latin1");
    if (strcmp(after, fresh) != 0)
        fail_msg("character set %s on a new connection, %s after a reset", fresh, after);
}

/* MariaDB's reset keeps the current role: a caller's SET ROLE must not
 * give the next caller that role's privileges. The role the connection
 * started with (none here) is set again after the reset. */
static void test_role_undone_at_release(void **state) {
    (void)state;
    dbpool *p = open_pool(admin_url(), 1, DBPOOL_VALIDATE_NEVER);
    dbpool_conn *c = dbt_acquire(p);
    /* The creator of a role is granted it (WITH ADMIN OPTION). */
    dbt_exec_ok(c, "DROP ROLE IF EXISTS dbpool_test_role", NULL, 0);
    dbt_exec_ok(c, "CREATE ROLE dbpool_test_role", NULL, 0);
    int64_t fresh = query_int(c, "SELECT CURRENT_ROLE() IS NULL");
    dbt_exec_ok(c, "SET ROLE dbpool_test_role", NULL, 0);
    assert_int_equal(query_int(c, "SELECT CURRENT_ROLE() = 'dbpool_test_role'"), 1);
    dbpool_release(c);
    c = dbt_acquire(p);
    int64_t after = query_int(c, "SELECT CURRENT_ROLE() IS NULL");
    dbt_exec_ok(c, "DROP ROLE dbpool_test_role", NULL, 0);
    dbpool_release(c);
    dbpool_close(p);
    assert_int_equal(fresh, 1);
    if (after != 1)
        fail_msg("the previous lease's SET ROLE is still in force after the release");
}

/* The server's max_prepared_stmt_count reached by kept statements: they
 * make room, and the new statement runs. */
static void test_prepared_statement_limit(void **state) {
    (void)state;
    dbpool *p = open_pool(admin_url(), 1, DBPOOL_VALIDATE_NEVER);
    dbpool_conn *c = dbt_acquire(p);
    int64_t old_limit = query_int(c, "SELECT @@GLOBAL.max_prepared_stmt_count");
    int64_t in_use = query_int(c, "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS "
                                  "WHERE VARIABLE_NAME = 'PREPARED_STMT_COUNT'");
    char sql[128];
    snprintf(sql, sizeof sql, "SET GLOBAL max_prepared_stmt_count = %lld", (long long)(in_use + 4));
    dbt_exec_ok(c, sql, NULL, 0);
    int rc = DBPOOL_OK;
    dbpool_error e;
    for (int i = 0; i < 10 && rc == DBPOOL_OK; i++) {
        snprintf(sql, sizeof sql, "DO ? + %d", i);
        dbpool_param one = dbpool_param_int64(1);
        rc = dbpool_exec(c, sql, &one, 1, NULL, &e); /* kept: no result set */
    }
    snprintf(sql, sizeof sql, "SET GLOBAL max_prepared_stmt_count = %lld", (long long)old_limit);
    dbt_exec_ok(c, sql, NULL, 0);
    if (rc != DBPOOL_OK)
        fail_msg("with room for 4 prepared statements: %s: %s", dbpool_errname(rc), e.message);
    dbpool_release(c);
    dbpool_close(p);
}

/* The pool's init_sql changes the session (a user variable) but is not a
 * caller's change: clean leases go back without a reset. A caller's own
 * change is reset once, with init_sql applied again, and the connection is
 * clean from then on. */
static void test_init_sql_leaves_connection_clean(void **state) {
    (void)state;
    dbpool *p = open_pool_init(base_url, 1, DBPOOL_VALIDATE_NEVER, "SET @dbpool_init = 1");
    for (int i = 0; i < 10; i++) {
        dbpool_conn *c = dbt_acquire(p);
        assert_int_equal(query_int(c, "SELECT 1"), 1);
        dbpool_release(c);
    }
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    if (s.rollbacks != 0)
        fail_msg("10 clean leases after init_sql made %llu resets on release",
                 (unsigned long long)s.rollbacks);

    dbpool_conn *c = dbt_acquire(p);
    int64_t id = query_int(c, "SELECT CONNECTION_ID()");
    assert_int_equal(query_int(c, "SELECT @dbpool_init"), 1);
    dbt_exec_ok(c, "SET @dbpool_caller = 2", NULL, 0);
    dbpool_release(c);
    dbpool_get_stats(p, &s);
    assert_int_equal((int)s.rollbacks, 1);
    for (int i = 0; i < 5; i++) {
        c = dbt_acquire(p);
        assert_int_equal(query_int(c, "SELECT CONNECTION_ID()"), id); /* reset, not replaced */
        assert_int_equal(query_int(c, "SELECT @dbpool_caller IS NULL"), 1);
        assert_int_equal(query_int(c, "SELECT @dbpool_init"), 1);
        dbpool_release(c);
    }
    dbpool_get_stats(p, &s);
    if (s.rollbacks != 1)
        fail_msg("clean leases after a reset with init_sql: %llu resets, want 1",
                 (unsigned long long)s.rollbacks);
    assert_int_equal(dbpool_close(p), 0);
}

/* init_sql that sleeps 5 s while the test's flag table holds a row: fast
 * while the flag is down, a server that does not answer it once it is up.
 * The rerun after the reset on release is bounded by validation_timeout_ms
 * (the release returns and closes the connection, reset_failed), and a new
 * connection's by connect_timeout_ms. */
static void test_slow_init_sql_bounded(void **state) {
    (void)state;
    char flag[64], sql[512], init_sql[256];
    snprintf(flag, sizeof flag, "dbpool_slow_flag_%ld", (long)getpid());
    dbpool *admin = open_pool(base_url, 1, DBPOOL_VALIDATE_NEVER);
    dbpool_conn *a = dbt_acquire(admin);
    snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s", flag);
    dbt_exec_ok(a, sql, NULL, 0);
    snprintf(sql, sizeof sql, "CREATE TABLE %s (x INT)", flag);
    dbt_exec_ok(a, sql, NULL, 0);
    snprintf(init_sql, sizeof init_sql,
             "SELECT SLEEP(IF(EXISTS(SELECT 1 FROM %s), 5, 0)) INTO @dbpool_slow_init", flag);
    dbpool_options o;
    pool_options(&o, 1, DBPOOL_VALIDATE_NEVER);
    o.max_retries = 0;
    o.connect_timeout_ms = 500;
    o.validation_timeout_ms = 500;
    o.init_sql = init_sql;
    dbpool *p = open_pool_opts(base_url, &o);
    dbpool_conn *c = dbt_acquire(p);
    int64_t id = query_int(c, "SELECT CONNECTION_ID()");
    assert_int_equal(query_int(c, "SELECT @dbpool_slow_init"), 0);
    dbt_exec_ok(c, "SET @dbpool_caller = 1", NULL, 0); /* the release resets, then runs init_sql */
    dbt_expect_slow_init_sql_bounded(p, c, a, flag, 500);

    /* Flag down: the next connection is a new one, set up by init_sql. */
    c = dbt_acquire(p);
    assert_int_not_equal(query_int(c, "SELECT CONNECTION_ID()"), id);
    assert_int_equal(query_int(c, "SELECT @dbpool_slow_init"), 0);
    dbpool_release(c);
    assert_int_equal(dbpool_close(p), 0);
    /* The timed-out statements still sleep on the server, holding a lock
     * on the table: end them before dropping it. */
    snprintf(sql, sizeof sql,
             "SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() "
             "AND COMMAND = 'Query' AND INFO LIKE '%%%s%%'",
             flag);
    int64_t ids[8];
    int n = 0;
    dbpool_result *r = dbt_query_ok(a, sql, NULL, 0);
    while (dbt_next_ok(r) && n < 8)
        ids[n++] = dbpool_result_int64(r, 0);
    dbpool_result_free(r);
    for (int i = 0; i < n; i++) {
        snprintf(sql, sizeof sql, "KILL QUERY %lld", (long long)ids[i]);
        dbpool_exec(a, sql, NULL, 0, NULL, NULL); /* it may have ended meanwhile */
    }
    snprintf(sql, sizeof sql, "DROP TABLE %s", flag);
    dbt_exec_ok(a, sql, NULL, 0);
    dbpool_release(a);
    assert_int_equal(dbpool_close(admin), 0);
}

/* after_connect sets a user variable on the native handle. */
static int set_native_variable(void *native, void *user) {
    int *calls = user;
    (*calls)++;
    return mysql_query(native, "SET @dbpool_hook = 7") == 0 ? 0 : 1;
}

/* What after_connect sets up is where every lease starts: a reset (an open
 * transaction here) clears the session, and after_connect runs again on
 * the same connection, which is clean from then on. */
static void test_after_connect_rerun_after_reset(void **state) {
    (void)state;
    int calls = 0;
    dbpool_options o;
    pool_options(&o, 1, DBPOOL_VALIDATE_NEVER);
    o.after_connect = set_native_variable;
    o.after_connect_user = &calls;
    dbpool *p = open_pool_opts(base_url, &o);
    dbpool_conn *c = dbt_acquire(p);
    int64_t id = query_int(c, "SELECT CONNECTION_ID()");
    assert_int_equal(query_int(c, "SELECT @dbpool_hook"), 7);
    dbt_exec_ok(c, "START TRANSACTION", NULL, 0);
    dbpool_release(c);
    assert_int_equal(calls, 2);
    c = dbt_acquire(p);
    assert_int_equal(query_int(c, "SELECT CONNECTION_ID()"), id); /* reset, not replaced */
    assert_int_equal(query_int(c, "SELECT @dbpool_hook"), 7);
    dbpool_release(c);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal((int)s.rollbacks, 1); /* after_connect's SET is the baseline */
    assert_int_equal(calls, 2);
    assert_int_equal(dbpool_close(p), 0);
}

/* A CALL answers with one result set per SELECT in the procedure, then a
 * status: the query hands out the first set and must read the rest, or
 * the next statement on the connection fails "out of sync". An error in a
 * later set is the call's error, and the connection stays usable. */
static void test_procedure_result_sets_drained(void **state) {
    (void)state;
    dbpool *p = open_pool(base_url, 1, DBPOOL_VALIDATE_NEVER);
    dbpool_conn *c = dbt_acquire(p);
    dbpool_error err;
    dbt_exec_ok(c, "DROP PROCEDURE IF EXISTS dbpool_two_sets", NULL, 0);
    dbt_exec_ok(c, "CREATE PROCEDURE dbpool_two_sets() BEGIN SELECT 1 AS a; SELECT 2 AS b, 3 AS c; END", NULL,
                0);
    dbt_exec_ok(c, "DROP PROCEDURE IF EXISTS dbpool_second_fails", NULL, 0);
    dbt_exec_ok(
        c, "CREATE PROCEDURE dbpool_second_fails() BEGIN SELECT 1; SELECT * FROM dbpool_no_such_table; END",
        NULL, 0);

    dbpool_result *r = NULL;
    assert_int_equal(dbpool_query(c, "CALL dbpool_two_sets()", NULL, 0, &r, &err), DBPOOL_OK);
    assert_int_equal(dbpool_result_columns(r), 1);
    assert_string_equal(dbpool_result_column_name(r, 0), "a");
    assert_int_equal(dbpool_result_next(r, &err), 1);
    assert_int_equal(dbpool_result_int64(r, 0), 1);
    assert_int_equal(dbpool_result_next(r, &err), 0);
    dbpool_result_free(r);
    assert_int_equal(query_int(c, "SELECT 4"), 4);

    dbt_exec_ok(c, "CALL dbpool_two_sets()", NULL, 0);
    assert_int_equal(query_int(c, "SELECT 5"), 5);

    r = NULL;
    assert_int_equal(dbpool_query(c, "CALL dbpool_second_fails()", NULL, 0, &r, &err), DBPOOL_EQUERY);
    assert_null(r);
    assert_int_equal(err.native_code, 1146); /* ER_NO_SUCH_TABLE */
    assert_int_equal(query_int(c, "SELECT 6"), 6);

    dbt_exec_ok(c, "DROP PROCEDURE dbpool_two_sets", NULL, 0);
    dbt_exec_ok(c, "DROP PROCEDURE dbpool_second_fails", NULL, 0);
    dbpool_release(c);
    dbpool_close(p);
}

/* A server that answers every connection with one error packet in place of
 * its greeting, as MariaDB does for a client host no account may connect
 * from, and counts the connections. */
typedef struct refusing_server {
    int fd;
    int accepted;
    pthread_t thread;
} refusing_server;

static void *refuse_all(void *arg) {
    refusing_server *s = arg;
    static const char msg[] = "Host '127.0.0.1' is not allowed to connect to this MariaDB server";
    unsigned char pkt[128];
    size_t body = 3 + sizeof msg - 1; /* 0xFF, the error number, the text */
    pkt[0] = (unsigned char)body;
    pkt[1] = pkt[2] = 0;
    pkt[3] = 0; /* sequence number */
    pkt[4] = 0xFF;
    pkt[5] = 1130 & 0xFF; /* ER_HOST_NOT_PRIVILEGED, little-endian */
    pkt[6] = 1130 >> 8;
    memcpy(pkt + 7, msg, sizeof msg - 1);
    for (;;) {
        int c = accept(s->fd, NULL, NULL);
        if (c < 0)
            return NULL; /* the listener was shut down */
        s->accepted++;
        ssize_t w = write(c, pkt, 4 + body);
        (void)w;
        close(c);
    }
}

/* Open a pool of one connection, with up to 3 retries, against a fake
 * server on a loopback port that `serve` runs; stops the server and
 * closes the pool again. Returns dbpool_open's code; s->accepted says how
 * many connections the server saw. */
static int open_against_fake(void *(*serve)(void *), refusing_server *s, dbpool_error *err) {
    int port;
    s->accepted = 0;
    s->fd = dbt_loopback_socket(&port, 16);
    assert_int_equal(pthread_create(&s->thread, NULL, serve, s), 0);
    char url[256];
    snprintf(url, sizeof url, "mysql://dbpool:not-used@127.0.0.1:%d/dbpool_test", port);
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.maintenance_interval_ms = 0;
    o.max_retries = 3;
    o.backoff_base_ms = 10;
    dbpool *p = NULL;
    int rc = dbpool_open(&p, url, &o, err);
    shutdown(s->fd, SHUT_RDWR);
    pthread_join(s->thread, NULL);
    close(s->fd);
    if (rc == DBPOOL_OK)
        dbpool_close(p);
    return rc;
}

/* "Host is not allowed to connect" (1130) fails on every attempt, like a
 * wrong password: DBPOOL_EAUTH at once, not retried as a network error
 * (PostgreSQL's "no pg_hba.conf entry" is DBPOOL_EAUTH too). */
static void test_host_not_allowed_auth_error(void **state) {
    (void)state;
    refusing_server s;
    dbpool_error err;
    int rc = open_against_fake(refuse_all, &s, &err);
    if (rc != DBPOOL_EAUTH || s.accepted != 1)
        fail_msg("host not allowed: %s after %d connection(s): %s", dbpool_errname(rc), s.accepted,
                 err.message);
    assert_int_equal(err.native_code, 1130);
}

/* Write one protocol packet: 3-byte length, sequence number, payload. */
static void put_packet(int fd, const unsigned char *body, size_t len, unsigned seq) {
    unsigned char h[4] = {(unsigned char)len, (unsigned char)(len >> 8), (unsigned char)(len >> 16),
                          (unsigned char)seq};
    ssize_t w = write(fd, h, sizeof h);
    w = write(fd, body, len);
    (void)w;
}

/* A server that greets like MariaDB (mysql_native_password), reads the
 * client's answer and asks it to switch to an authentication plugin no
 * client has, as a server does for an account made with a plugin whose
 * client side is not installed. Counts the connections. */
static void *ask_unknown_plugin(void *arg) {
    refusing_server *s = arg;
    unsigned char g[128];
    size_t n = 0;
    static const char version[] = "5.5.5-10.11.0-MariaDB-fake";
    static const char native[] = "mysql_native_password";
    g[n++] = 10; /* protocol version */
    memcpy(g + n, version, sizeof version);
    n += sizeof version;
    memcpy(g + n, "\1\0\0\0abcdefgh\0", 13); /* connection id, scramble 1, filler */
    n += 13;
    /* capabilities: long password, found rows, long flag, connect with db,
     * protocol 41, transactions, secure connection; multi results, plugin auth */
    memcpy(g + n, "\x0f\xa2\x2d\x02\x00\x0a\x00\x15", 8); /* caps low, charset, status, caps high, 21 */
    n += 8;
    memset(g + n, 0, 10);
    n += 10;
    memcpy(g + n, "ijklmnopqrst", 13); /* scramble 2 and its NUL */
    n += 13;
    memcpy(g + n, native, sizeof native);
    n += sizeof native;
    unsigned char sw[64];
    size_t m = 0;
    static const char plugin[] = "dbpool_no_such_auth_plugin";
    sw[m++] = 0xFE; /* authentication switch request */
    memcpy(sw + m, plugin, sizeof plugin);
    m += sizeof plugin;
    memcpy(sw + m, "abcdefghijklmnopqrst", 21);
    m += 21;
    for (;;) {
        int c = accept(s->fd, NULL, NULL);
        if (c < 0)
            return NULL;
        s->accepted++;
        put_packet(c, g, n, 0);
        unsigned char buf[1024];
        ssize_t r = read(c, buf, sizeof buf); /* the client's answer */
        if (r > 0)
            put_packet(c, sw, m, 2);
        r = read(c, buf, sizeof buf); /* until the client gives up */
        (void)r;
        close(c);
    }
}

/* An authentication plugin the client cannot load fails every attempt the
 * same way: DBPOOL_EAUTH at once, not retried as a lost connection. */
static void test_missing_auth_plugin_auth_error(void **state) {
    (void)state;
    refusing_server s;
    dbpool_error err;
    int rc = open_against_fake(ask_unknown_plugin, &s, &err);
    if (rc != DBPOOL_EAUTH || s.accepted != 1 || !strstr(err.message, "dbpool_no_such_auth_plugin"))
        fail_msg("auth plugin missing: %s after %d connection(s): %s", dbpool_errname(rc), s.accepted,
                 err.message);
}

static void test_wrong_password_fast_auth_error(void **state) {
    (void)state;
    static const char secret[] = "Wr0ngSecretPw";
    char userinfo[512], hosts[512], rest[512], url[2048];
    split_url(base_url, userinfo, sizeof userinfo, hosts, sizeof hosts, rest, sizeof rest);
    char *colon = strchr(userinfo, ':');
    if (colon)
        *colon = '\0';
    snprintf(url, sizeof url, "mysql://%s:%s@%s%s", userinfo, secret, hosts, rest);
    dbpool_error err;
    int64_t t0 = dbt_now_ms();
    int rc = open_and_acquire(url, 10000, &err);
    int64_t took = dbt_now_ms() - t0;
    assert_int_equal(rc, DBPOOL_EAUTH);
    assert_int_equal(err.native_code, 1045);
    assert_null(strstr(err.message, secret));
    if (took > 3000)
        fail_msg("wrong password took %lld ms to report", (long long)took);
}

/* A locked account, and an expired password (the server lets the session
 * in, but it runs nothing until the password is changed), are
 * authentication errors: not retried, and no connection is pooled. */
static void test_locked_or_expired_account_auth_error(void **state) {
    (void)state;
    char userinfo[512], hosts[512], rest[512], url[2048];
    split_url(base_url, userinfo, sizeof userinfo, hosts, sizeof hosts, rest, sizeof rest);
    snprintf(url, sizeof url, "mysql://dbpool_locked:Pw4Locked@%s%s", hosts, rest);
    dbpool *admin = open_pool(admin_url(), 1, DBPOOL_VALIDATE_NEVER);
    dbpool_conn *c = dbt_acquire(admin);
    dbt_exec_ok(c, "DROP USER IF EXISTS dbpool_locked", NULL, 0);
    dbt_exec_ok(c, "CREATE USER dbpool_locked IDENTIFIED BY 'Pw4Locked'", NULL, 0);
    dbt_exec_ok(c, "GRANT ALL ON *.* TO dbpool_locked", NULL, 0);
    dbpool_error err;
    dbt_exec_ok(c, "ALTER USER dbpool_locked ACCOUNT LOCK", NULL, 0);
    int locked = open_and_acquire(url, 5000, &err);
    dbt_exec_ok(c, "ALTER USER dbpool_locked ACCOUNT UNLOCK PASSWORD EXPIRE", NULL, 0);
    int expired = open_and_acquire(url, 5000, &err);
    dbt_exec_ok(c, "DROP USER dbpool_locked", NULL, 0);
    dbpool_release(c);
    dbpool_close(admin);
    if (locked != DBPOOL_EAUTH || expired != DBPOOL_EAUTH)
        fail_msg("locked account: %s, expired password: %s (want DBPOOL_EAUTH for both)",
                 dbpool_errname(locked), dbpool_errname(expired));
}

/* A parameter larger than max_allowed_packet: the server answers with
 * error 1153 and closes the connection, so the lease is broken at once
 * (not a query error that leaves a dead connection to a reset), and the
 * message says what helps (a retry on another connection does not). */
static void test_packet_too_large_is_broken(void **state) {
    (void)state;
    dbpool *p = open_pool(base_url, 1, DBPOOL_VALIDATE_NEVER);
    dbpool_conn *c = dbt_acquire(p);
    int64_t max = query_int(c, "SELECT @@max_allowed_packet");
    size_t n = (size_t)max + 1024;
    char *big = calloc(1, n);
    assert_non_null(big);
    dbpool_param v = dbpool_param_blob(big, n);
    dbpool_error err;
    int rc = dbpool_exec(c, "DO LENGTH(?)", &v, 1, NULL, &err);
    free(big);
    dbpool_release(c);
    dbpool_close(p);
    if (rc != DBPOOL_EBROKEN)
        fail_msg("a packet over max_allowed_packet: %s (%s), want DBPOOL_EBROKEN", dbpool_errname(rc),
                 err.message);
    assert_int_equal(err.native_code, 1153);
    /* Not the advice for a lost connection ("acquire another"): another
     * connection fails the same way. */
    if (!strstr(err.message, "send less per statement") || strstr(err.message, "acquire another"))
        fail_msg("the message should say what helps: %s", err.message);
}

/* One lazy pool, one acquire with retries allowed: the code, and how many
 * connect attempts failed (1: not retried). */
static int acquire_counting_attempts(const char *url, uint64_t *attempts, dbpool_error *err) {
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.lazy_connect = true;
    o.maintenance_interval_ms = 0;
    o.max_retries = 3;
    o.backoff_base_ms = 1;
    o.breaker_failures = 0;
    dbpool *p = NULL;
    int rc = dbpool_open(&p, url, &o, err);
    if (rc != DBPOOL_OK)
        fail_msg("open: %s: %s", dbpool_errname(rc), err->message);
    dbpool_conn *c = NULL;
    rc = dbpool_acquire(p, 5000, &c, err);
    if (rc == DBPOOL_OK)
        dbpool_release(c);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    *attempts = s.connect_errors;
    dbpool_close(p);
    return rc;
}

/* ssl-mode=REQUIRED (or a verify mode) against a server that offers no
 * TLS: the session the URL asks for cannot be had there, so the connect
 * fails at once with DBPOOL_EAUTH and is not retried (a retry of
 * REQUIRED would log in in the clear again, docs/configuration.md). */
static void test_ssl_required_without_tls_fails(void **state) {
    (void)state;
    /* A server started with DBPOOL_TEST_TLS=1 takes TLS: test_mysql_tls
     * covers this through a proxy that takes the TLS offer away. */
    const char *tls_ca = getenv("DBPOOL_TEST_MYSQL_SSL_CA");
    if (tls_ca && *tls_ca) {
        fprintf(stderr, "skipped: the test server takes TLS (DBPOOL_TEST_MYSQL_SSL_CA is set)\n");
        skip();
    }
    char url[2048];
    snprintf(url, sizeof url, "%s%cssl-mode=REQUIRED", base_url, strchr(base_url, '?') ? '&' : '?');
    dbpool_error err;
    uint64_t attempts = 0;
    int rc = acquire_counting_attempts(url, &attempts, &err);
    if (rc == DBPOOL_OK)
        fail_msg("ssl-mode=REQUIRED connected to a server without TLS");
    if (rc != DBPOOL_EAUTH || attempts != 1)
        fail_msg("ssl-mode=REQUIRED without TLS: %s after %llu attempts (want DBPOOL_EAUTH, not retried): %s",
                 dbpool_errname(rc), (unsigned long long)attempts, err.message);
    /* dbpool's TLS gate refuses before the login (the "not encrypted"
     * check after it is a second line that a server without TLS never
     * reaches). */
    if (!strstr(err.message, "does not offer TLS") || !strstr(err.message, "nothing was sent"))
        fail_msg("ssl-mode=REQUIRED without TLS: the message does not say the server offers no TLS and "
                 "nothing was sent: %s",
                 err.message);
    /* A verify mode: Connector/C refuses before logging in; as final. */
    static const char bundle[] = "/etc/ssl/certs/ca-certificates.crt";
    if (access(bundle, R_OK) != 0)
        return;
    snprintf(url, sizeof url, "%s%cssl-mode=VERIFY_CA&ssl-ca=%s", base_url, strchr(base_url, '?') ? '&' : '?',
             bundle);
    rc = acquire_counting_attempts(url, &attempts, &err);
    if (rc != DBPOOL_EAUTH || attempts != 1)
        fail_msg(
            "ssl-mode=VERIFY_CA without TLS: %s after %llu attempts (want DBPOOL_EAUTH, not retried): %s",
            dbpool_errname(rc), (unsigned long long)attempts, err.message);
    assert_non_null(strstr(err.message, "does not support it"));
}

int main(void) {
    base_url = dbt_backend_url("mysql");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unknown_key_rejected),
        cmocka_unit_test(test_bad_ssl_mode_rejected),
        cmocka_unit_test(test_bad_values_rejected),
        cmocka_unit_test(test_timeout_range_named),
        cmocka_unit_test(test_bad_charset_rejected),
        cmocka_unit_test(test_ipv6_host_parses),
        cmocka_unit_test(test_percent_encoded_password),
        cmocka_unit_test(test_unknown_database_not_found),
        cmocka_unit_test(test_failover_host_list),
        cmocka_unit_test(test_host_list_message_counts_hosts_tried),
        cmocka_unit_test(test_nothing_listening_says_what_to_check),
        cmocka_unit_test(test_unix_socket),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_text_result),
        cmocka_unit_test(test_native_error_detail),
        cmocka_unit_test(test_killed_connection_discarded),
        cmocka_unit_test(test_open_transaction_rolled_back),
        cmocka_unit_test(test_init_sql_leaves_connection_clean),
        cmocka_unit_test(test_slow_init_sql_bounded),
        cmocka_unit_test(test_after_connect_rerun_after_reset),
        cmocka_unit_test(test_untracked_session_state_reset),
        cmocka_unit_test(test_use_reprepares_kept_statements),
        cmocka_unit_test(test_use_undone_at_release),
        cmocka_unit_test(test_failed_statement_resets),
        cmocka_unit_test(test_native_changes_reset),
        cmocka_unit_test(test_native_failed_statement_resets),
        cmocka_unit_test(test_native_change_user_not_pooled),
        cmocka_unit_test(test_set_transaction_reset),
        cmocka_unit_test(test_unscoped_system_variable_reset),
        cmocka_unit_test(test_xa_prepared_not_reset),
        cmocka_unit_test(test_execute_immediate_reset),
        cmocka_unit_test(test_flush_for_export_reset),
        cmocka_unit_test(test_unread_native_result_not_pooled),
        cmocka_unit_test(test_prepared_statement_limit),
        cmocka_unit_test(test_reset_restores_in_connect_order),
        cmocka_unit_test(test_init_command_limit_keeps_backstop),
        cmocka_unit_test(test_given_up_lease_refuses_unbounded_statement),
        cmocka_unit_test(test_reset_keeps_init_command_charset),
        cmocka_unit_test(test_reset_reads_init_command_results),
        cmocka_unit_test(test_failing_init_command_not_retried),
        cmocka_unit_test(test_role_undone_at_release),
        cmocka_unit_test(test_procedure_result_sets_drained),
        cmocka_unit_test(test_wrong_password_fast_auth_error),
        cmocka_unit_test(test_host_not_allowed_auth_error),
        cmocka_unit_test(test_missing_auth_plugin_auth_error),
        cmocka_unit_test(test_locked_or_expired_account_auth_error),
        cmocka_unit_test(test_packet_too_large_is_broken),
        cmocka_unit_test(test_ssl_required_without_tls_fails),
    };
    return cmocka_run_group_tests_name("mysql_driver", tests, NULL, NULL);
}
