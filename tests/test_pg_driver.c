/* test_pg_driver.c — what is particular to the PostgreSQL backend: the URL
 * handed to libpq, `?` numbering around quotes and comments, value round
 * trips, SQLSTATEs, statement_timeout, killed backends, rollback on
 * release, wrong passwords and a deaf listener. Needs DBPOOL_TEST_PG_URL and
 * DBPOOL_TEST_PG_ADMIN_URL (written by scripts/pg-server.sh). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "dbpool.h"
#include "loopback.h"
#include "testsupport.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef DBPOOL_HAVE_PG

#include <libpq-fe.h>

#include <arpa/inet.h>
#include <float.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static char base_url[1024];
static char admin_url[1024];
static char table[64]; /* unique per process: tests may run in parallel */

static dbpool *open_pool_opts(const char *url, dbpool_options *o) {
    dbpool *p = NULL;
    dbpool_error err;
    int rc = dbpool_open(&p, url, o, &err);
    if (rc != DBPOOL_OK)
        fail_msg("dbpool_open: %s: %s", dbpool_errname(rc), err.message);
    return p;
}

static dbpool *open_pool(const char *url, int max, dbpool_validation v) {
    dbpool_options o;
    dbt_options(&o, 0, max);
    o.validation = v;
    o.maintenance_interval_ms = 0;
    return open_pool_opts(url, &o);
}

static dbpool_conn *lease(dbpool *p) {
    dbpool_conn *c = NULL;
    dbpool_error err;
    int rc = dbpool_acquire(p, 5000, &c, &err);
    if (rc != DBPOOL_OK)
        fail_msg("dbpool_acquire: %s: %s", dbpool_errname(rc), err.message);
    return c;
}

static void exec_ok(dbpool_conn *c, const char *sql, const dbpool_param *p, size_t n) {
    dbpool_error err;
    int rc = dbpool_exec(c, sql, p, n, NULL, &err);
    if (rc != DBPOOL_OK)
        fail_msg("%s: %s: %s", sql, dbpool_errname(rc), err.message);
}

static int64_t query_int(dbpool_conn *c, const char *sql, const dbpool_param *p, size_t n) {
    dbpool_result *r = NULL;
    dbpool_error err;
    int rc = dbpool_query(c, sql, p, n, &r, &err);
    if (rc != DBPOOL_OK)
        fail_msg("%s: %s: %s", sql, dbpool_errname(rc), err.message);
    assert_int_equal(dbpool_result_next(r, &err), 1);
    int64_t v = dbpool_result_int64(r, 0);
    dbpool_result_free(r);
    return v;
}

/* The first column of the first row as a new string ("<NULL>" for NULL). */
static char *query_text(dbpool_conn *c, const char *sql, const dbpool_param *p, size_t n) {
    dbpool_result *r = NULL;
    dbpool_error err;
    int rc = dbpool_query(c, sql, p, n, &r, &err);
    if (rc != DBPOOL_OK)
        fail_msg("%s: %s: %s", sql, dbpool_errname(rc), err.message);
    assert_int_equal(dbpool_result_next(r, &err), 1);
    const char *t = dbpool_result_text(r, 0, NULL);
    char *copy = strdup(t ? t : "<NULL>");
    dbpool_result_free(r);
    return copy;
}

static int backend_pid(dbpool_conn *c) { return (int)query_int(c, "SELECT pg_backend_pid()", NULL, 0); }

/* Terminate a backend through the superuser URL and wait until it is gone. */
static void kill_backend(int pid) {
    dbpool *admin = open_pool(admin_url, 1, DBPOOL_VALIDATE_NEVER);
    dbpool_conn *c = lease(admin);
    dbpool_param p = dbpool_param_int64(pid);
    assert_int_equal(query_int(c, "SELECT pg_terminate_backend(?)::int", &p, 1), 1);
    int64_t until = dbt_now_ms() + 5000;
    while (query_int(c, "SELECT count(*) FROM pg_stat_activity WHERE pid = ?", &p, 1) != 0) {
        if (dbt_now_ms() > until)
            fail_msg("backend %d still alive 5 s after pg_terminate_backend", pid);
        dbt_sleep_ms(10);
    }
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_close(admin), 0);
}

/* base_url with its password replaced. */
static void url_with_password(char *out, size_t cap, const char *pw) {
    const char *s = strstr(base_url, "://");
    assert_non_null(s);
    s += 3;
    const char *at = strchr(s, '@');
    assert_non_null(at);
    const char *colon = memchr(s, ':', (size_t)(at - s));
    size_t user_len = colon ? (size_t)(colon - s) : (size_t)(at - s);
    snprintf(out, cap, "postgresql://%.*s:%s%s", (int)user_len, s, pw, at);
}

/* The test URL's own password (for checking it never leaks). */
static void real_password(char *out, size_t cap) {
    const char *s = strstr(base_url, "://") + 3;
    const char *at = strchr(s, '@');
    const char *colon = memchr(s, ':', (size_t)(at - s));
    if (!colon) {
        out[0] = '\0';
        return;
    }
    snprintf(out, cap, "%.*s", (int)(at - colon - 1), colon + 1);
}

/* ---- log capture: no line may contain a secret ---- */
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char log_secret[2][128];
static int log_leaks;

static void leak_watch(void *user, dbpool_log_level level, const char *message) {
    (void)user;
    (void)level;
    pthread_mutex_lock(&log_mu);
    for (int i = 0; i < 2; i++)
        if (log_secret[i][0] && strstr(message, log_secret[i])) {
            fprintf(stderr, "secret in a log line: %s\n", message);
            log_leaks++;
        }
    pthread_mutex_unlock(&log_mu);
}

/* ------------------------------------------------------------------------ */

/* pool_* keys configure the pool; everything else reaches libpq, and a key
 * set in the URL beats the driver's keepalive defaults. */
static void test_url_keys_reach_libpq(void **state) {
    (void)state;
    dbpool *p = open_pool(dbt_backend_url_with("pg", "pool_max=2&application_name=dbpool_t_keys"
                                                     "&keepalives_idle=45"),
                          5, DBPOOL_VALIDATE_NEVER);
    assert_string_equal(dbpool_backend(p), "postgresql");
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.max_size, 2);

    dbpool_conn *c = lease(p);
    char *app = query_text(c, "SELECT current_setting('application_name')", NULL, 0);
    assert_string_equal(app, "dbpool_t_keys");
    free(app);

    PGconn *pg = dbpool_conn_native(c);
    assert_non_null(pg);
    int seen = 0;
    PQconninfoOption *opts = PQconninfo(pg);
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val)
            continue;
        if (strcmp(o->keyword, "keepalives_idle") == 0) {
            assert_string_equal(o->val, "45"); /* the URL wins */
            seen++;
        } else if (strcmp(o->keyword, "tcp_user_timeout") == 0) {
            assert_string_equal(o->val, "30000");
            seen++;
        } else if (strcmp(o->keyword, "keepalives_count") == 0) {
            assert_string_equal(o->val, "3");
            seen++;
        }
    }
    PQconninfoFree(opts);
    assert_int_equal(seen, 3);
    /* Keepalives on (libpq's default, which dbpool leaves to it), with
     * the URL's idle time and dbpool's count. */
    int on = 0, idle = 0, count = 0;
    socklen_t len = sizeof on;
    assert_int_equal(getsockopt(PQsocket(pg), SOL_SOCKET, SO_KEEPALIVE, &on, &len), 0);
    len = sizeof idle;
    assert_int_equal(getsockopt(PQsocket(pg), IPPROTO_TCP, TCP_KEEPIDLE, &idle, &len), 0);
    len = sizeof count;
    assert_int_equal(getsockopt(PQsocket(pg), IPPROTO_TCP, TCP_KEEPCNT, &count, &len), 0);
    assert_int_equal(on, 1);
    assert_int_equal(idle, 45);
    assert_int_equal(count, 3);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_unknown_key_rejected(void **state) {
    (void)state;
    char pw[128];
    real_password(pw, sizeof pw);
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.maintenance_interval_ms = 0;
    dbpool *p = (dbpool *)1;
    dbpool_error err;
    int rc = dbpool_open(&p, dbt_backend_url_with("pg", "bogus_key=1"), &o, &err);
    assert_int_equal(rc, DBPOOL_EINVAL);
    assert_null(p);
    if (!strstr(err.message, "bogus_key"))
        fail_msg("the error does not name the key: %s", err.message);
    if (pw[0] && strstr(err.message, pw))
        fail_msg("the error shows the password: %s", err.message);
}

/* libpq's connect_timeout key does nothing here (dbpool's connects are
 * non-blocking and bounded by connect_timeout_ms): it was taken and
 * silently ignored, even as garbage, so `?connect_timeout=2` bounded
 * nothing. It is refused, naming what to use; its value is not quoted. */
static void test_connect_timeout_key_refused(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.maintenance_interval_ms = 0;
    int port = dbt_free_port();
    const char *values[] = {"2", "abc"};
    for (size_t i = 0; i < 2; i++) {
        char url[256];
        snprintf(url, sizeof url, "postgresql://u@127.0.0.1:%d/db?connect_timeout=%s", port, values[i]);
        dbpool *p = (dbpool *)1;
        dbpool_error err;
        int rc = dbpool_open(&p, url, &o, &err);
        if (rc != DBPOOL_EINVAL || !strstr(err.message, "connect_timeout") ||
            !strstr(err.message, "pool_connect_timeout"))
            fail_msg("connect_timeout=%s: rc=%s: %s", values[i], dbpool_errname(rc), err.message);
        assert_null(p);
    }
}

/* A value libpq refuses before connecting is a wrong URL (EINVAL, not
 * retried), not an unreachable server. */
static void test_bad_value_is_invalid_url(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.maintenance_interval_ms = 0;
    dbpool *p = (dbpool *)1;
    dbpool_error err;
    int rc = dbpool_open(&p, dbt_backend_url_with("pg", "sslmode=bogus"), &o, &err);
    if (rc != DBPOOL_EINVAL || !strstr(err.message, "sslmode"))
        fail_msg("rc=%d: %s", rc, err.message);
    assert_null(p);
    /* Checked per host, so libpq's message starts with the host's heading
     * ("connection to server at ... failed: invalid ..."); and ports that
     * do not match the hosts. Nothing listens on the port: a connect would
     * be ECONNECT. */
    int port = dbt_free_port();
    char url[256];
    snprintf(url, sizeof url, "postgresql://u@127.0.0.1:%d/db?keepalives=x", port);
    p = (dbpool *)1;
    rc = dbpool_open(&p, url, &o, &err);
    if (rc != DBPOOL_EINVAL || !strstr(err.message, "keepalives"))
        fail_msg("keepalives=x: rc=%s: %s", dbpool_errname(rc), err.message);
    assert_null(p);
    snprintf(url, sizeof url, "postgresql://u@127.0.0.1,127.0.0.1/db?port=%d,%d,%d", port, port, port);
    p = (dbpool *)1;
    rc = dbpool_open(&p, url, &o, &err);
    if (rc != DBPOOL_EINVAL)
        fail_msg("three ports for two hosts: rc=%s: %s", dbpool_errname(rc), err.message);
    assert_null(p);
}

/* libpq quotes the whole URL in some parse errors: a query password is
 * masked whole, a ',' in it included, encoded or not; a URL without the
 * "//" is refused before libpq sees it. */
static void test_parse_error_hides_query_password(void **state) {
    (void)state;
    static const char *const urls[] = {
        "postgresql://app@[::1/app?password=hunter2,XsecretX",
        "postgresql://app@[]/app?password=a%2CXsecretX",
        "postgresql://u:XsecretY@[::1/db?password=zz,XsecretX",
        /* Without the "//": libpq would read a key=value string. */
        "postgresql:u:XsecretX@127.0.0.1/db",
        "postgres:/u:XsecretX@127.0.0.1/db",
        "PostgreSQL:u:XsecretX@h/db",
        "postgresql:host=h password=XsecretX",
    };
    for (size_t i = 0; i < sizeof urls / sizeof *urls; i++) {
        dbpool *p = (dbpool *)1;
        dbpool_error err;
        int rc = dbpool_open(&p, urls[i], NULL, &err);
        if (rc != DBPOOL_EINVAL || strstr(err.message, "Xsecret") || strstr(err.message, "hunter2"))
            fail_msg("%s: rc=%s: %s", urls[i], dbpool_errname(rc), err.message);
        assert_null(p);
    }
}

/* `?` becomes $n only outside strings, quoted identifiers, dollar quotes
 * and comments. Each statement takes one text parameter "X". */
static void test_placeholders_outside_quotes(void **state) {
    (void)state;
    static const struct {
        const char *sql;
        const char *want;
    } cases[] = {
        {"SELECT ?::text", "X"},
        {"SELECT '?' || ?", "?X"},
        {"SELECT 'it''s ?' || ?", "it's ?X"},
        {"SELECT E'\\'?' || ?", "'?X"},
        {"SELECT 'a\\' || ?", "a\\X"}, /* standard strings: backslash is literal */
        {"SELECT \"?c\" || ? FROM (SELECT 'v'::text AS \"?c\") s", "vX"},
        {"SELECT \"q\"\"?\" || ? FROM (SELECT 'w'::text AS \"q\"\"?\") s", "wX"},
        {"SELECT $$?$$ || ?", "?X"},
        {"SELECT $tag$ $$ ? $x$ $tag$ || ?", " $$ ? $x$ X"},
        {"SELECT /* ? /* nested ? */ still ? */ ?::text -- ? at the end", "X"},
        {"SELECT -- ?\n?::text", "X"},
        {"SELECT U&'d\\0061t?' || ?", "dat?X"},
        {"SELECT repeat(?, 2)", "XX"},
    };
    dbpool *p = open_pool(base_url, 1, DBPOOL_VALIDATE_NEVER);
    dbpool_conn *c = lease(p);
    dbpool_param x = dbpool_param_text("X");
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *got = query_text(c, cases[i].sql, &x, 1);
        if (strcmp(got, cases[i].want) != 0)
            fail_msg("%s: got '%s', want '%s'", cases[i].sql, got, cases[i].want);
        free(got);
    }

    /* Several parameters, numbered in order. */
    dbpool_param abc[3] = {dbpool_param_text("a"), dbpool_param_text("b"), dbpool_param_text("c")};
    char *got = query_text(c, "SELECT ? || '?' || ? || $$?$$ || ?", abc, 3);
    assert_string_equal(got, "a?b?c");
    free(got);

    /* A ? against a word, as SQLite takes it: the number must
     * not join the word ("LIMIT$1" is an identifier, "$1AND" trailing
     * junk after a parameter). */
    dbpool_param xnn[3] = {dbpool_param_text("X"), dbpool_param_int64(1), dbpool_param_int64(1)};
    got = query_text(c, "SELECT ?::text WHERE 1=?AND true LIMIT?", xnn, 3);
    assert_string_equal(got, "X");
    free(got);

    /* Without parameters the SQL goes verbatim: jsonb's ? operator works. */
    got = query_text(c, "SELECT ('{\"k\": 1}'::jsonb ? 'k')::text", NULL, 0);
    assert_string_equal(got, "true");
    free(got);

    /* A count mismatch is the caller's error, found before any I/O. */
    dbpool_error err;
    assert_int_equal(dbpool_exec(c, "SELECT ?, '?'", abc, 2, NULL, &err), DBPOOL_EINVAL);
    assert_non_null(strstr(err.message, "placeholder"));
    /* PostgreSQL's own $1 where dbpool wants ?: the message says so. */
    assert_int_equal(dbpool_exec(c, "SELECT $1::text", abc, 1, NULL, &err), DBPOOL_EINVAL);
    if (!strstr(err.message, "write ? for each parameter, not $1"))
        fail_msg("$1 written: %s", err.message);
    /* A plain miscount carries no such advice. */
    assert_int_equal(dbpool_exec(c, "SELECT ?, '$1'", abc, 2, NULL, &err), DBPOOL_EINVAL);
    assert_null(strstr(err.message, "not $1"));
    /* And the lease is still fine. */
    assert_int_equal(query_int(c, "SELECT ?::int + 1", (dbpool_param[]){dbpool_param_int64(41)}, 1), 42);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_value_round_trip(void **state) {
    (void)state;
    dbpool *p = open_pool(base_url, 1, DBPOOL_VALIDATE_NEVER);
    dbpool_conn *c = lease(p);

    const int64_t ints[] = {
        0,         -1,       42, INT32_MAX, (int64_t)INT32_MAX + 1, INT32_MIN, (int64_t)INT32_MIN - 1,
        INT64_MAX, INT64_MIN};
    const double dbls[] = {0.0, 0.1, -2.5, 3.141592653589793, 1e-300, DBL_MAX, DBL_MIN, -1e308};
    const char *texts[] = {"", "plain", "it's a ? and a \"quote\"", "h\xc3\xa9llo w\xc3\xb6rld \xe2\x82\xac",
                           "back\\slash $1 $$"};

    for (size_t i = 0; i < sizeof ints / sizeof *ints; i++) {
        dbpool_param v = dbpool_param_int64(ints[i]);
        assert_true(query_int(c, "SELECT ?", &v, 1) == ints[i]);
    }
    for (size_t i = 0; i < sizeof dbls / sizeof *dbls; i++) {
        dbpool_param v = dbpool_param_double(dbls[i]);
        dbpool_result *r = NULL;
        dbpool_error err;
        assert_int_equal(dbpool_query(c, "SELECT ?", &v, 1, &r, &err), DBPOOL_OK);
        assert_int_equal(dbpool_result_next(r, &err), 1);
        if (dbpool_result_double(r, 0) != dbls[i])
            fail_msg("double %.17g came back as %s", dbls[i], dbpool_result_text(r, 0, NULL));
        dbpool_result_free(r);
    }

    /* Through a real table with typed columns, and NULLs both ways. */
    char sql[256];
    snprintf(sql, sizeof sql, "CREATE TABLE %s (id int PRIMARY KEY, i bigint, d double precision, t text)",
             table);
    exec_ok(c, sql, NULL, 0);
    snprintf(sql, sizeof sql, "INSERT INTO %s VALUES (?, ?, ?, ?)", table);
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
        dbpool_param row[4] = {dbpool_param_int64((int64_t)i), dbpool_param_int64(ints[i + 4]),
                               dbpool_param_double(dbls[i]), dbpool_param_text(texts[i])};
        int64_t affected = -1;
        dbpool_error err;
        assert_int_equal(dbpool_exec(c, sql, row, 4, &affected, &err), DBPOOL_OK);
        assert_int_equal(affected, 1);
    }
    dbpool_param nulls[4] = {dbpool_param_int64(100), dbpool_param_null(), dbpool_param_null(),
                             dbpool_param_text(NULL)};
    exec_ok(c, sql, nulls, 4);

    snprintf(sql, sizeof sql, "SELECT id, i, d, t FROM %s WHERE id >= ? ORDER BY id", table);
    dbpool_param from = dbpool_param_int64(0);
    dbpool_result *r = NULL;
    dbpool_error err;
    assert_int_equal(dbpool_query(c, sql, &from, 1, &r, &err), DBPOOL_OK);
    assert_int_equal(dbpool_result_columns(r), 4);
    assert_string_equal(dbpool_result_column_name(r, 3), "t");
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
        assert_int_equal(dbpool_result_next(r, &err), 1);
        assert_true(dbpool_result_int64(r, 0) == (int64_t)i);
        assert_true(dbpool_result_int64(r, 1) == ints[i + 4]);
        assert_true(dbpool_result_double(r, 2) == dbls[i]);
        size_t len = 0;
        const char *t = dbpool_result_text(r, 3, &len);
        assert_non_null(t);
        assert_int_equal(len, strlen(texts[i]));
        assert_string_equal(t, texts[i]);
        assert_false(dbpool_result_is_null(r, 3));
    }
    assert_int_equal(dbpool_result_next(r, &err), 1);
    assert_true(dbpool_result_is_null(r, 1));
    assert_true(dbpool_result_is_null(r, 2));
    assert_true(dbpool_result_is_null(r, 3));
    assert_null(dbpool_result_text(r, 3, NULL));
    assert_int_equal(dbpool_result_next(r, &err), 0);
    dbpool_result_free(r);

    /* exec reports rows changed. */
    snprintf(sql, sizeof sql, "UPDATE %s SET t = ? WHERE id < ?", table);
    dbpool_param upd[2] = {dbpool_param_text("z"), dbpool_param_int64(3)};
    int64_t affected = -1;
    assert_int_equal(dbpool_exec(c, sql, upd, 2, &affected, &err), DBPOOL_OK);
    assert_int_equal(affected, 3);

    /* Text with a NUL byte cannot be sent as PostgreSQL text. */
    dbpool_param nul;
    nul.type = DBPOOL_TYPE_TEXT;
    nul.v.text.ptr = "a\0b";
    nul.v.text.len = 3;
    assert_int_equal(dbpool_exec(c, "SELECT ?", &nul, 1, NULL, &err), DBPOOL_EINVAL);

    snprintf(sql, sizeof sql, "DROP TABLE %s", table);
    exec_ok(c, sql, NULL, 0);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_sqlstate_on_error(void **state) {
    (void)state;
    dbpool *p = open_pool(base_url, 1, DBPOOL_VALIDATE_NEVER);
    dbpool_conn *c = lease(p);
    int pid = backend_pid(c);
    dbpool_error err;
    int rc = dbpool_exec(c, "SELECT * FROM dbpool_no_such_table", NULL, 0, NULL, &err);
    assert_int_equal(rc, DBPOOL_EQUERY);
    assert_string_equal(err.sqlstate, "42P01");
    assert_non_null(strstr(err.message, "dbpool_no_such_table"));
    rc = dbpool_exec(c, "SELEC 1", NULL, 0, NULL, &err);
    assert_int_equal(rc, DBPOOL_EQUERY);
    assert_string_equal(err.sqlstate, "42601");
    dbpool_param zero = dbpool_param_int64(0);
    dbpool_result *r = NULL;
    rc = dbpool_query(c, "SELECT 1 / ?", &zero, 1, &r, &err);
    assert_int_equal(rc, DBPOOL_EQUERY);
    assert_null(r);
    assert_string_equal(err.sqlstate, "22012");
    /* An ordinary error does not cost the connection. */
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    c = lease(p);
    assert_int_equal(backend_pid(c), pid);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_statement_timeout(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.maintenance_interval_ms = 0;
    o.validation = DBPOOL_VALIDATE_NEVER;
    o.statement_timeout_ms = 100;
    dbpool *p = open_pool_opts(base_url, &o);
    dbpool_conn *c = lease(p);
    int pid = backend_pid(c);
    char *st = query_text(c, "SHOW statement_timeout", NULL, 0);
    assert_string_equal(st, "100ms");
    free(st);

    dbpool_error err;
    int64_t t0 = dbt_now_ms();
    int rc = dbpool_exec(c, "SELECT pg_sleep(2)", NULL, 0, NULL, &err);
    int64_t took = dbt_now_ms() - t0;
    assert_int_equal(rc, DBPOOL_EQUERY);
    assert_string_equal(err.sqlstate, "57014");
    if (took > 1500)
        fail_msg("statement_timeout=100ms but the statement ran %lld ms", (long long)took);
    /* Still usable, same lease and, after release, same connection. */
    assert_int_equal(query_int(c, "SELECT 7", NULL, 0), 7);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    c = lease(p);
    assert_int_equal(backend_pid(c), pid);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_close(p), 0);
}

/* RESET ALL and DISCARD ALL put statement_timeout back to the server's
 * default, not the pool's: the session's limit is another, and the
 * client's backstop, made from the pool's, stands aside until the release
 * (which sets the pool's again). Before, a working pg_sleep(0.6) after
 * them was cut off at 450 ms as if the server had stopped answering, and
 * the connection closed. */
static void test_reset_all_stands_backstop_aside(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.maintenance_interval_ms = 0;
    o.validation = DBPOOL_VALIDATE_NEVER;
    o.statement_timeout_ms = 300;
    o.validation_timeout_ms = 150;
    dbpool *p = open_pool_opts(base_url, &o);
    dbpool_conn *c = lease(p);
    int pid = backend_pid(c);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    const char *const resets[] = {"RESET ALL", "DISCARD ALL", "reset\n  all;"};
    for (size_t i = 0; i < sizeof resets / sizeof resets[0]; i++) {
        c = lease(p);
        dbt_exec_ok(c, resets[i], NULL, 0);
        dbpool_error err;
        memset(&err, 0, sizeof err);
        int64_t t0 = dbt_now_ms();
        int rc = dbpool_exec(c, "SELECT pg_sleep(0.6)", NULL, 0, NULL, &err);
        int64_t took = dbt_now_ms() - t0;
        /* The server's default limit decides: none on the test server. */
        if (rc != DBPOOL_OK && !(rc == DBPOOL_EQUERY && strcmp(err.sqlstate, "57014") == 0))
            fail_msg("after %s, a statement under the server's default limit: %s after %lld ms: %s",
                     resets[i], dbpool_errname(rc), (long long)took, err.message);
        assert_int_equal(dbpool_release(c), DBPOOL_OK);

        /* The release set the pool's limit again: the server ends a long statement. */
        c = lease(p);
        assert_int_equal(backend_pid(c), pid);
        memset(&err, 0, sizeof err);
        rc = dbpool_exec(c, "SELECT pg_sleep(2)", NULL, 0, NULL, &err);
        if (rc != DBPOOL_EQUERY || strcmp(err.sqlstate, "57014") != 0)
            fail_msg("the lease after %s should have the pool's limit: %s: %s", resets[i], dbpool_errname(rc),
                     err.message);
        assert_int_equal(dbpool_release(c), DBPOOL_OK);
    }
    assert_int_equal(dbpool_close(p), 0);
}

/* A backend killed while its connection is leased: the query fails, the
 * lease is marked broken and closed on release, the next acquire works. */
static void test_killed_backend_discarded(void **state) {
    (void)state;
    dbpool *p = open_pool(base_url, 1, DBPOOL_VALIDATE_NEVER);
    dbpool_conn *c = lease(p);
    int pid = backend_pid(c);
    kill_backend(pid);
    dbpool_error err;
    int rc = dbpool_exec(c, "SELECT 1", NULL, 0, NULL, &err);
    assert_true(rc != DBPOOL_OK);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.total, 0);
    assert_true(s.destroyed >= 1);

    c = lease(p);
    assert_true(backend_pid(c) != pid);
    assert_int_equal(query_int(c, "SELECT 1", NULL, 0), 1);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

/* A backend killed while its connection sits idle: libpq still says OK, so
 * only validation's round trip can tell; the caller gets a fresh one. */
static void test_killed_idle_backend_validated(void **state) {
    (void)state;
    dbpool *p = open_pool(base_url, 1, DBPOOL_VALIDATE_ALWAYS);
    dbpool_conn *c = lease(p);
    int pid = backend_pid(c);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    kill_backend(pid);

    c = lease(p);
    assert_true(backend_pid(c) != pid);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_true(s.validation_failures >= 1);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

static void test_open_transaction_rolled_back(void **state) {
    (void)state;
    dbpool *p = open_pool(base_url, 1, DBPOOL_VALIDATE_NEVER);
    char sql[160];
    dbpool_conn *c = lease(p);
    int pid = backend_pid(c);
    snprintf(sql, sizeof sql, "CREATE TABLE %s (v int)", table);
    exec_ok(c, sql, NULL, 0);
    exec_ok(c, "BEGIN", NULL, 0);
    snprintf(sql, sizeof sql, "INSERT INTO %s VALUES (?)", table);
    dbpool_param one = dbpool_param_int64(1);
    exec_ok(c, sql, &one, 1);
    assert_int_equal(PQtransactionStatus(dbpool_conn_native(c)), PQTRANS_INTRANS);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);

    c = lease(p);
    assert_int_equal(backend_pid(c), pid); /* rolled back, not replaced */
    assert_int_equal(PQtransactionStatus(dbpool_conn_native(c)), PQTRANS_IDLE);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", table);
    assert_int_equal(query_int(c, sql, NULL, 0), 0);

    /* A failed transaction (INERROR) is rolled back the same way. */
    exec_ok(c, "BEGIN", NULL, 0);
    dbpool_error err;
    assert_int_equal(dbpool_exec(c, "SELECT 1/0", NULL, 0, NULL, &err), DBPOOL_EQUERY);
    assert_int_equal(PQtransactionStatus(dbpool_conn_native(c)), PQTRANS_INERROR);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);

    c = lease(p);
    assert_int_equal(backend_pid(c), pid);
    assert_int_equal(PQtransactionStatus(dbpool_conn_native(c)), PQTRANS_IDLE);
    snprintf(sql, sizeof sql, "DROP TABLE %s", table);
    exec_ok(c, sql, NULL, 0);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_true(s.rollbacks >= 2);
    assert_int_equal(dbpool_close(p), 0);
}

/* Pipeline mode entered on the native handle: the caller's statements say
 * so (not "out of memory"), and the connection is not pooled again. */
static void test_pipeline_mode_not_pooled(void **state) {
    (void)state;
    dbpool *p = open_pool(base_url, 1, DBPOOL_VALIDATE_NEVER);
    dbpool_conn *c = lease(p);
    int pid = backend_pid(c);
    assert_int_equal(PQenterPipelineMode(dbpool_conn_native(c)), 1);
    dbpool_error err;
    int rc = dbpool_exec(c, "SELECT 1", NULL, 0, NULL, &err);
    if (rc == DBPOOL_OK || rc == DBPOOL_ENOMEM || !strstr(err.message, "pipeline"))
        fail_msg("a statement in pipeline mode: %s: %s", dbpool_errname(rc), err.message);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    /* Left in pipeline mode without a statement of ours: closed as well. */
    c = lease(p);
    assert_int_not_equal(backend_pid(c), pid);
    pid = backend_pid(c);
    assert_int_equal(PQenterPipelineMode(dbpool_conn_native(c)), 1);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    c = lease(p);
    assert_int_not_equal(backend_pid(c), pid);
    assert_int_equal(query_int(c, "SELECT 7", NULL, 0), 7);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_close(p), 0);
}

/* With parameters, one statement: several are DBPOOL_EINVAL before
 * anything is sent (as on SQLite). */
static void test_several_statements_with_parameters(void **state) {
    (void)state;
    dbpool *p = open_pool(base_url, 1, DBPOOL_VALIDATE_NEVER);
    dbpool_conn *c = lease(p);
    dbpool_param one = dbpool_param_int64(1);
    dbpool_error err;
    int rc = dbpool_exec(c, "SELECT ?; SELECT 2", &one, 1, NULL, &err);
    if (rc != DBPOOL_EINVAL || !strstr(err.message, "one statement"))
        fail_msg("two statements with a parameter: %s: %s", dbpool_errname(rc), err.message);
    assert_int_equal(query_int(c, "SELECT ?::int; -- one statement, a comment after", &one, 1), 1);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_wrong_password(void **state) {
    (void)state;
    static const char bad_pw[] = "Wr0ngPassw0rd-dbpool-test";
    char url[1024];
    url_with_password(url, sizeof url, bad_pw);
    pthread_mutex_lock(&log_mu);
    snprintf(log_secret[0], sizeof log_secret[0], "%s", bad_pw);
    real_password(log_secret[1], sizeof log_secret[1]);
    log_leaks = 0;
    pthread_mutex_unlock(&log_mu);

    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.maintenance_interval_ms = 0;
    o.max_retries = 3;
    o.log_fn = leak_watch;
    o.log_level = DBPOOL_LOG_DEBUG;
    dbpool *p = NULL;
    dbpool_error err;
    int64_t t0 = dbt_now_ms();
    int rc = dbpool_open(&p, url, &o, &err);
    dbpool_conn *c = NULL;
    if (rc == DBPOOL_OK)
        rc = dbpool_acquire(p, 5000, &c, &err);
    int64_t took = dbt_now_ms() - t0;
    assert_int_equal(rc, DBPOOL_EAUTH);
    assert_null(c);
    if (took >= 2000)
        fail_msg("a wrong password took %lld ms to report", (long long)took);
    if (strstr(err.message, bad_pw))
        fail_msg("the error shows the password: %s", err.message);
    if (log_secret[1][0] && strstr(err.message, log_secret[1]))
        fail_msg("the error shows the real password: %s", err.message);
    assert_non_null(strstr(err.message, "password authentication failed"));
    assert_int_equal(dbpool_close(p), 0);
    pthread_mutex_lock(&log_mu);
    assert_int_equal(log_leaks, 0);
    pthread_mutex_unlock(&log_mu);
}

static void admin_exec(const char *sql) {
    dbpool *admin = open_pool(admin_url, 1, DBPOOL_VALIDATE_NEVER);
    dbpool_conn *c = lease(admin);
    exec_ok(c, sql, NULL, 0);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_close(admin), 0);
}

/* One connect as user:pw to db: the code, after how long, the message. */
static int connect_as(const char *user, const char *pw, const char *db, int64_t *took, dbpool_error *err) {
    const char *host = strchr(strstr(base_url, "://") + 3, '@') + 1;
    char url[1024];
    snprintf(url, sizeof url, "postgresql://%s:%s@%.*s/%s", user, pw, (int)strcspn(host, "/?"), host, db);
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.maintenance_interval_ms = 0;
    o.max_retries = 3;
    o.backoff_base_ms = 1000; /* a retry would show in the time taken */
    o.backoff_max_ms = 1000;
    dbpool *p = NULL;
    int64_t t0 = dbt_now_ms();
    int rc = dbpool_open(&p, url, &o, err);
    *took = dbt_now_ms() - t0;
    if (rc == DBPOOL_OK)
        assert_int_equal(dbpool_close(p), 0);
    return rc;
}

/* A role that may not log in, and one without the CONNECT privilege on
 * the database: refusals no retry can change, so DBPOOL_EAUTH at once
 * (as a wrong password), not a retried DBPOOL_ECONNECT. */
static void test_login_refused_is_auth(void **state) {
    (void)state;
    char role[64], db[64], sql[512];
    snprintf(role, sizeof role, "dbpool_nologin_%ld", (long)getpid());
    snprintf(db, sizeof db, "dbpool_noconnect_%ld", (long)getpid());
    static const char pw[] = "Refused-Login-Pw-1";
    snprintf(sql, sizeof sql, "DROP ROLE IF EXISTS %s; CREATE ROLE %s NOLOGIN PASSWORD '%s'", role, role, pw);
    admin_exec(sql);
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s", db);
    admin_exec(sql);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s TEMPLATE template0", db);
    admin_exec(sql);
    snprintf(sql, sizeof sql, "REVOKE CONNECT ON DATABASE %s FROM PUBLIC", db);
    admin_exec(sql);

    dbpool_error err;
    int64_t took;
    int rc = connect_as(role, pw, "dbpool_test", &took, &err);
    if (rc != DBPOOL_EAUTH || took >= 1000 || strstr(err.message, pw))
        fail_msg("NOLOGIN role: %s after %lld ms: %s", dbpool_errname(rc), (long long)took, err.message);
    assert_non_null(strstr(err.message, "not permitted to log in"));

    char user_pw[256];
    real_password(user_pw, sizeof user_pw);
    const char *s = strstr(base_url, "://") + 3;
    char user[128];
    snprintf(user, sizeof user, "%.*s", (int)strcspn(s, ":@"), s);
    rc = connect_as(user, user_pw, db, &took, &err);
    if (rc != DBPOOL_EAUTH || took >= 1000 || (user_pw[0] && strstr(err.message, user_pw)))
        fail_msg("no CONNECT privilege: %s after %lld ms: %s", dbpool_errname(rc), (long long)took,
                 err.message);
    assert_non_null(strstr(err.message, "permission denied for database"));

    snprintf(sql, sizeof sql, "DROP DATABASE %s", db);
    admin_exec(sql);
    snprintf(sql, sizeof sql, "DROP ROLE %s", role);
    admin_exec(sql);
}

/* A listener that never accepts: the TCP handshake completes (the kernel
 * queues it) but the server never answers. The connect deadline fires. */
static void test_deaf_listener_deadline(void **state) {
    (void)state;
    int port;
    int ls = dbt_loopback_socket(&port, 16);

    char url[256];
    snprintf(url, sizeof url, "postgresql://dbpool:not-used@127.0.0.1:%d/dbpool_test", port);
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.maintenance_interval_ms = 0;
    o.connect_timeout_ms = 300;
    o.max_retries = 0;
    dbpool *p = NULL;
    dbpool_error err;
    int64_t t0 = dbt_now_ms();
    int rc = dbpool_open(&p, url, &o, &err);
    dbpool_conn *c = NULL;
    if (rc == DBPOOL_OK)
        rc = dbpool_acquire(p, 3000, &c, &err);
    int64_t took = dbt_now_ms() - t0;
    assert_int_equal(rc, DBPOOL_ETIMEDOUT);
    assert_null(c);
    if (took < 250 || took > 1000)
        fail_msg("connect_timeout_ms=300 but the attempt took %lld ms", (long long)took);
    char where[32];
    snprintf(where, sizeof where, "127.0.0.1:%d", port);
    if (!strstr(err.message, where))
        fail_msg("the error does not name %s: %s", where, err.message);
    assert_int_equal(dbpool_close(p), 0);
    close(ls);
}

/* Sanitizer runtimes reserve terabytes of address space: a limit on it
 * would stop them, not libpq. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define DBT_NO_ADDRESS_LIMIT 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define DBT_NO_ADDRESS_LIMIT 1
#endif
#endif

/* libpq running out of memory for a result ("out of memory for query
 * result": this process's trouble, not the statement's) is
 * DBPOOL_ENOMEM, not DBPOOL_EQUERY; a caller that retries or reports by
 * code must not take it for a wrong statement. Run in a child whose
 * address space is limited to a little above what it uses. */
static void test_libpq_out_of_memory_is_enomem(void **state) {
    (void)state;
#ifdef DBT_NO_ADDRESS_LIMIT
    skip();
#else
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* The child: no cmocka here; the exit status says what happened. */
        dbpool_options o;
        dbt_options(&o, 0, 1);
        o.maintenance_interval_ms = 0;
        dbpool *p = NULL;
        dbpool_conn *c = NULL;
        dbpool_error err;
        if (dbpool_open(&p, base_url, &o, &err) != DBPOOL_OK ||
            dbpool_acquire(p, 5000, &c, &err) != DBPOOL_OK)
            _exit(10);
        long pages = 0;
        FILE *f = fopen("/proc/self/statm", "r");
        if (!f || fscanf(f, "%ld", &pages) != 1)
            _exit(11);
        fclose(f);
        struct rlimit lim, was;
        if (getrlimit(RLIMIT_AS, &was) != 0)
            _exit(12);
        lim = was;
        lim.rlim_cur = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + (rlim_t)48 * 1024 * 1024;
        if (setrlimit(RLIMIT_AS, &lim) != 0)
            _exit(12);
        dbpool_result *r = NULL;
        /* About 400 MB of rows: far more than the limit leaves. */
        int rc = dbpool_query(c, "SELECT g, repeat('x', 100) FROM generate_series(1, 3000000) g", NULL, 0, &r,
                              &err);
        if (r)
            dbpool_result_free(r);
        fprintf(stderr, "child: %s: %s\n", dbpool_errname(rc), err.message);
        if (rc != DBPOOL_ENOMEM)
            _exit(rc == DBPOOL_OK ? 13 : rc == DBPOOL_EQUERY ? 14 : 15);
        /* libpq dropped the rest of the rows and stays in step: with
         * memory back, the same lease works (it is not marked broken). */
        if (setrlimit(RLIMIT_AS, &was) != 0)
            _exit(12);
        if (dbpool_exec(c, "SELECT 1", NULL, 0, NULL, &err) != DBPOOL_OK)
            _exit(16);
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) != 0)
        fail_msg(
            "libpq out of memory: the child exited with %d (13: the query passed, 14: DBPOOL_EQUERY, 15: "
            "another code; 16: the lease did not work afterwards; 10-12: set-up)",
            WEXITSTATUS(status));
#endif
}

/* sslmode=require against a server that offers no TLS: the session the
 * URL asks for cannot be had there, so DBPOOL_EAUTH at once, not a
 * retried DBPOOL_ECONNECT. (A server started with DBPOOL_TEST_TLS=1 takes
 * TLS: test_pg_tls covers this through a proxy that takes the offer away.) */
static void test_ssl_required_without_tls_not_retried(void **state) {
    (void)state;
    const char *tls_ca = getenv("DBPOOL_TEST_PG_SSL_CA");
    if (tls_ca && *tls_ca) {
        fprintf(stderr, "skipped: the test server takes TLS (DBPOOL_TEST_PG_SSL_CA is set)\n");
        skip();
    }
    char url[2048];
    snprintf(url, sizeof url, "%s%csslmode=require", base_url, strchr(base_url, '?') ? '&' : '?');
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.lazy_connect = true;
    o.maintenance_interval_ms = 0;
    o.max_retries = 3;
    o.backoff_base_ms = 1;
    o.breaker_failures = 0;
    dbpool *p = open_pool_opts(url, &o);
    dbpool_conn *c = NULL;
    dbpool_error err;
    int rc = dbpool_acquire(p, 5000, &c, &err);
    if (rc == DBPOOL_OK)
        dbpool_release(c);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(dbpool_close(p), 0);
    if (rc != DBPOOL_EAUTH || s.connect_errors != 1)
        fail_msg("sslmode=require without TLS: %s after %llu attempts (want DBPOOL_EAUTH, not retried)",
                 dbpool_errname(rc), (unsigned long long)s.connect_errors);
    assert_non_null(strstr(err.message, "server does not support SSL"));
}

int main(void) {
    snprintf(base_url, sizeof base_url, "%s", dbt_backend_url("pg"));
    const char *admin = getenv("DBPOOL_TEST_PG_ADMIN_URL");
    if (!admin || !*admin) {
        fprintf(stderr, "DBPOOL_TEST_PG_ADMIN_URL is not set (scripts/pg-server.sh writes it)\n");
        return 1;
    }
    snprintf(admin_url, sizeof admin_url, "%s", admin);
    snprintf(table, sizeof table, "dbpool_pgt_%ld", (long)getpid());

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_keys_reach_libpq),
        cmocka_unit_test(test_unknown_key_rejected),
        cmocka_unit_test(test_bad_value_is_invalid_url),
        cmocka_unit_test(test_connect_timeout_key_refused),
        cmocka_unit_test(test_parse_error_hides_query_password),
        cmocka_unit_test(test_placeholders_outside_quotes),
        cmocka_unit_test(test_value_round_trip),
        cmocka_unit_test(test_sqlstate_on_error),
        cmocka_unit_test(test_statement_timeout),
        cmocka_unit_test(test_reset_all_stands_backstop_aside),
        cmocka_unit_test(test_killed_backend_discarded),
        cmocka_unit_test(test_killed_idle_backend_validated),
        cmocka_unit_test(test_open_transaction_rolled_back),
        cmocka_unit_test(test_wrong_password),
        cmocka_unit_test(test_login_refused_is_auth),
        cmocka_unit_test(test_pipeline_mode_not_pooled),
        cmocka_unit_test(test_several_statements_with_parameters),
        cmocka_unit_test(test_deaf_listener_deadline),
        cmocka_unit_test(test_libpq_out_of_memory_is_enomem),
        cmocka_unit_test(test_ssl_required_without_tls_not_retried),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#else /* !DBPOOL_HAVE_PG */

int main(void) {
    fprintf(stderr, "skipped: this build has no PostgreSQL backend\n");
    return DBT_SKIP;
}

#endif
