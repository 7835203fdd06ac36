/* SQLite itself out of memory. test_alloc_failure.c fails the library's own
 * allocations; SQLite's are made inside libsqlite3, where -Wl,--wrap does
 * not reach. This test installs an allocator of its own through
 * sqlite3_config (before SQLite initialises) that fails the Nth allocation
 * while armed, and runs a release that drops the lease's temporary objects
 * with each allocation failing in turn: the release must end in the
 * connection clean or closed, never crash.
 *
 * The database is UTF-16, so SQLite converts every text cell read back as
 * UTF-8 (sqlite3_column_text), an allocation that can fail and return NULL
 * for a cell that is not NULL; lookaside is off, so every allocation goes
 * through the allocator below. */
#include "testsupport.h"

#include <sqlite3.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>

#include <cmocka.h>

static sqlite3_mem_methods real;
static atomic_bool armed;
static atomic_long calls, fail_at, failed;

static bool inject(void) {
    if (!atomic_load(&armed))
        return false;
    long n = atomic_fetch_add(&calls, 1) + 1;
    if (n == atomic_load(&fail_at)) {
        atomic_fetch_add(&failed, 1);
        return true;
    }
    return false;
}

static void *oom_malloc(int n) { return inject() ? NULL : real.xMalloc(n); }
static void *oom_realloc(void *p, int n) { return inject() ? NULL : real.xRealloc(p, n); }

static void arm(long at) {
    atomic_store(&calls, 0);
    atomic_store(&failed, 0);
    atomic_store(&fail_at, at);
    atomic_store(&armed, true);
}

static int64_t count_of(dbpool_conn *c, const char *sql) { return dbt_query_int(c, sql, NULL, 0); }

static void test_release_drops_temp_objects_when_sqlite_runs_out(void **state) {
    (void)state;
    char path[512], url[600];
    snprintf(path, sizeof path, "%s/utf16.db", dbt_tmpdir());
    snprintf(url, sizeof url, "sqlite://%s", path);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA encoding='UTF-16le'; CREATE TABLE m(x)", NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);

    int runs = 0;
    for (long at = 1;; at++) {
        dbpool_options o;
        dbt_options(&o, 0, 1);
        o.maintenance_interval_ms = 0;
        dbpool *p = NULL;
        dbpool_error e;
        assert_int_equal(dbpool_open(&p, url, &o, &e), DBPOOL_OK);
        dbpool_conn *c = dbt_acquire(p);
        dbt_exec_ok(c, "CREATE TEMP TABLE scratch(v TEXT); CREATE TEMP VIEW v AS SELECT * FROM scratch", NULL,
                    0);
        arm(at);
        int rc = dbpool_release(c);
        atomic_store(&armed, false);
        runs++;
        /* Either way the next lease starts with no temporary object: the
         * reset dropped them, or the connection was closed. */
        assert_true(rc == DBPOOL_OK || rc < 0);
        c = dbt_acquire(p);
        assert_int_equal(count_of(c, "SELECT count(*) FROM temp.sqlite_master"), 0);
        dbpool_release(c);
        assert_true(dbt_invariant_holds(p));
        dbpool_close(p);
        if (atomic_load(&failed) == 0)
            break; /* the release made fewer than `at` allocations: all covered */
    }
    assert_true(runs > 1);
}

int main(void) {
    /* Before anything initialises SQLite. */
    if (sqlite3_config(SQLITE_CONFIG_GETMALLOC, &real) != SQLITE_OK)
        return 1;
    sqlite3_mem_methods ours = real;
    ours.xMalloc = oom_malloc;
    ours.xRealloc = oom_realloc;
    if (sqlite3_config(SQLITE_CONFIG_MALLOC, &ours) != SQLITE_OK ||
        sqlite3_config(SQLITE_CONFIG_LOOKASIDE, 0, 0) != SQLITE_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_release_drops_temp_objects_when_sqlite_runs_out),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
