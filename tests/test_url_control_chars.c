/* A control character in a URL (raw, or percent-encoded anywhere but in a
 * password) is refused by dbpool_open with DBPOOL_EINVAL. Left in, a URL
 * read from a file or an environment variable with its line feed opened
 * (and created) another SQLite file, "app.db\n", and a %0A or %1B in a
 * path, a database or a host name went on, decoded, into error messages
 * and log lines: a line feed split a log line into one that looked like
 * the pool's own, an escape sequence drove the terminal. A password is
 * never shown, so it may hold any byte, percent-encoded. A raw space (or
 * no-break space) at the very end of a URL is refused for the first reason:
 * "app.db " was another file. */
#include "testsupport.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static char dir[512];

/* Opened without connecting (only the URL is read), or with one
 * connection when `connect`. */
static int open_url_connecting(const char *url, bool connect, dbpool_error *e) {
    dbpool_options o;
    dbpool_options_init(&o);
    o.lazy_connect = !connect;
    o.max_retries = 0;
    o.maintenance_interval_ms = 0;
    dbpool *p = NULL;
    int rc = dbpool_open(&p, url, &o, e);
    if (rc == DBPOOL_OK)
        dbpool_close(p);
    else
        assert_null(p);
    return rc;
}

static int open_url(const char *url, dbpool_error *e) { return open_url_connecting(url, false, e); }

/* Refused, saying why, without quoting the URL's control character. */
static void expect_refused_connecting(const char *url, bool connect, const char *needle) {
    dbpool_error e;
    int rc = open_url_connecting(url, connect, &e);
    if (rc == DBPOOL_EUNSUPPORTED)
        return; /* a backend not built in: its URLs are not read */
    if (rc != DBPOOL_EINVAL || !strstr(e.message, "control character") || !strstr(e.message, needle))
        fail_msg("URL '%s': want DBPOOL_EINVAL saying 'control character' and '%s', got %s: %s", url, needle,
                 dbpool_errname(rc), e.message);
    for (const char *s = e.message; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            fail_msg("URL '%s': the message holds the control character 0x%02x: %s", url, (unsigned)*s,
                     e.message);
}

static void expect_refused(const char *url, const char *needle) {
    expect_refused_connecting(url, false, needle);
}

static void expect_accepted(const char *url) {
    dbpool_error e;
    int rc = open_url(url, &e);
    if (rc != DBPOOL_OK && rc != DBPOOL_EUNSUPPORTED)
        fail_msg("URL '%s' should be accepted: %s: %s", url, dbpool_errname(rc), e.message);
}

/* The everyday case: a URL with the line feed of the file it was read from. */
static void test_trailing_line_feed_opens_no_other_file(void **state) {
    (void)state;
    char url[700], made[600];
    snprintf(url, sizeof url, "sqlite:%s/app.db\n", dir);
    snprintf(made, sizeof made, "%s/app.db\n", dir);
    expect_refused_connecting(url, true, "line feed");
    assert_int_not_equal(access(made, F_OK), 0); /* no "app.db\n" */
    snprintf(url, sizeof url, "sqlite:%s/app.db?journal_mode=wal\r\n", dir);
    expect_refused(url, "carriage return");
    snprintf(url, sizeof url, "sqlite:%s/app.db\t", dir);
    expect_refused(url, "tab");
}

/* A space at the end, as a configuration file or a paste from a web page
 * (a no-break space) leaves it: "app.db " would be another file too. */
static void test_trailing_space_opens_no_other_file(void **state) {
    (void)state;
    static const char *const tails[] = {" ", "\xc2\xa0", "?journal_mode=wal ", "  "};
    for (size_t i = 0; i < sizeof tails / sizeof *tails; i++) {
        char url[700];
        snprintf(url, sizeof url, "sqlite:%s/space.db%s", dir, tails[i]);
        dbpool_error e;
        int rc = open_url_connecting(url, true, &e);
        if (rc != DBPOOL_EINVAL || !strstr(e.message, "ends in a space"))
            fail_msg("URL '%s': want DBPOOL_EINVAL saying 'ends in a space', got %s: %s", url,
                     dbpool_errname(rc), e.message);
    }
    char made[600];
    snprintf(made, sizeof made, "%s/space.db ", dir);
    assert_int_not_equal(access(made, F_OK), 0);
    dbpool_error e;
    int rc = open_url("postgresql://u@127.0.0.1:5432/db ", &e);
    assert_true(rc == DBPOOL_EUNSUPPORTED || (rc == DBPOOL_EINVAL && strstr(e.message, "ends in a space")));
    /* Written %20, it is meant: a file named so. */
    char url[700];
    snprintf(url, sizeof url, "sqlite:%s/space.db%%20", dir);
    assert_int_equal(open_url_connecting(url, true, &e), DBPOOL_OK);
    assert_int_equal(access(made, F_OK), 0);
}

static void test_raw_control_characters(void **state) {
    (void)state;
    static const char *const urls[] = {
        "sqlite::memory:?journal_mode=memory\n",
        "mock:?pool_max=2\n",
        "postgresql://u@127.0.0.1:5432/db\n",
        "postgresql://u@127.0.0.1:5432/db?application_name=a\x1b[31mred",
        "mysql://u@127.0.0.1:3306/db\x7f",
        /* Raw in a password too: write it %-encoded. */
        "postgresql://u:pass\tword@127.0.0.1:5432/db",
        "mysql://u:pass\nword@127.0.0.1:3306/db",
    };
    for (size_t i = 0; i < sizeof urls / sizeof *urls; i++)
        expect_refused(urls[i], "U+00");
}

static void test_encoded_control_characters(void **state) {
    (void)state;
    char url[700];
    /* A path holding a line feed and a made-up log line. */
    snprintf(url, sizeof url, "sqlite:%s/x%%0Apool%%20'default'%%3A%%20circuit%%20breaker%%20closed.db", dir);
    expect_refused(url, "path");
    snprintf(url, sizeof url, "sqlite:%s/x%%1B%%5B31m.db", dir);
    expect_refused(url, "U+001B");
    snprintf(url, sizeof url, "sqlite:%s/x%%7F.db", dir);
    expect_refused(url, "U+007F");
    /* C1 controls, U+0080..U+009F (CSI is U+009B), in UTF-8. */
    snprintf(url, sizeof url, "sqlite:%s/x%%C2%%9B31m.db", dir);
    expect_refused(url, "U+009B");
    snprintf(url, sizeof url, "sqlite:%s/x\xc2%%9b31m.db", dir);
    expect_refused(url, "U+009B");
    static const struct {
        const char *url, *needle;
    } cases[] = {
        {"postgresql://u@127.0.0.1:5432/x%0Ay", "database"},
        {"postgresql://u%0Ax@127.0.0.1:5432/db", "user"},
        {"postgresql://u@host%0Ax:5432/db", "host"},
        {"postgresql://u@127.0.0.1:5432/db?application_name=a%0Db", "application_name"},
        {"postgresql://u@127.0.0.1:5432/db?sslmode=require%0A", "sslmode"},
        {"mysql://u@127.0.0.1:3306/x%1By", "database"},
        {"mysql://u%0A@127.0.0.1:3306/db", "user"},
        {"mysql://u@127.0.0.1:3306/db?init_command=SET%20a%3D1%0A", "init_command"},
        {"mysql://u@127.0.0.1:3306/db?socket=%2Ftmp%2Fs%0A", "socket"},
        {"mock:?pool_name=a%0Ab", "pool_name"},
        {"mock:?pool_max=2%0A", "pool_max"},
        /* A key holding one is not quoted. */
        {"mock:?a%0Ab=1", "key"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        expect_refused(cases[i].url, cases[i].needle);
}

/* A password is masked wherever it would show: any byte, %-encoded. */
static void test_password_may_hold_any_byte(void **state) {
    (void)state;
    static const char *const urls[] = {
        "postgresql://u:a%0Ab%09c%1Bd%7F@127.0.0.1:5432/db",
        "postgresql://u@127.0.0.1:5432/db?password=a%0Ab%1B",
        "postgresql://u@127.0.0.1:5432/db?sslpassword=a%0Ab",
        "postgresql://u:a%C2%9Bb@127.0.0.1:5432/db",
        "mysql://u:a%0Ab%09c%1B@127.0.0.1:3306/db",
    };
    for (size_t i = 0; i < sizeof urls / sizeof *urls; i++)
        expect_accepted(urls[i]);
    /* Other characters keep working: a space, a quote, UTF-8. */
    char url[700];
    snprintf(url, sizeof url, "sqlite:%s/caf%%C3%%A9%%20it's.db", dir);
    expect_accepted(url);
    expect_accepted("postgresql://u@127.0.0.1:5432/db?application_name=a%20b'c");
}

int main(void) {
    snprintf(dir, sizeof dir, "%s", dbt_tmpdir());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_trailing_line_feed_opens_no_other_file),
        cmocka_unit_test(test_trailing_space_opens_no_other_file),
        cmocka_unit_test(test_raw_control_characters),
        cmocka_unit_test(test_encoded_control_characters),
        cmocka_unit_test(test_password_may_hold_any_byte),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
