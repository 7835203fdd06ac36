/* A PostgreSQL or MySQL URL given to a build without that backend: the
 * error is DBPOOL_EUNSUPPORTED and names the library the backend needs and
 * the package that brings it, so that a user who built with `make demo`
 * (SQLite only) knows what to install. It used to say "install its client
 * library's -dev package", leaving the user to guess which one (MySQL's
 * is MariaDB Connector/C's libmariadb-dev, not libmysqlclient-dev).
 *
 * This build has every backend the machine's libraries allow, so the
 * registry is compiled here a second time, with the server backends left
 * out, under another name. */
#include "testsupport.h"

#undef DBPOOL_HAVE_PG
#undef DBPOOL_HAVE_MYSQL
#define dbpool__driver_for_url registry_without_server_backends
#include "../src/registry.c"
#undef dbpool__driver_for_url

#include <stdio.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

static void expect_names(const char *url, const char *library, const char *package) {
    dbpool_error e;
    memset(&e, 0, sizeof e);
    const dbpool_driver *d = registry_without_server_backends(url, &e);
    assert_null(d);
    assert_int_equal(e.code, DBPOOL_EUNSUPPORTED);
    if (!strstr(e.message, library) || !strstr(e.message, package) || !strstr(e.message, "not compiled"))
        fail_msg("%s: the message should say the backend is not compiled in and name %s and %s: %s", url,
                 library, package, e.message);
    /* The URL's password is never quoted: only the scheme is. */
    assert_null(strstr(e.message, "secret"));
}

static void test_names_library_and_package(void **state) {
    (void)state;
    expect_names("postgresql://app:secret@127.0.0.1/app", "libpq", "libpq-dev");
    expect_names("postgres://app:secret@127.0.0.1/app", "libpq", "libpq-dev");
    expect_names("mysql://app:secret@127.0.0.1/app", "MariaDB Connector/C", "libmariadb-dev");
    expect_names("MariaDB://app:secret@127.0.0.1/app", "MariaDB Connector/C", "libmariadb-dev");
}

/* The built-in backends are still found by the same registry. */
static void test_builtin_backends_found(void **state) {
    (void)state;
    dbpool_error e;
    assert_ptr_equal(registry_without_server_backends("sqlite::memory:", &e), &dbpool__driver_sqlite);
    assert_ptr_equal(registry_without_server_backends("mock:", &e), &dbpool__driver_mock);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_library_and_package),
        cmocka_unit_test(test_builtin_backends_found),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
