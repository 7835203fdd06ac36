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

#include <limits.h>
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
static atomic_long calls, fail_at, fail_len = 1, failed; /* fail_len: calls failing from fail_at on */

static bool inject(void) {
    if (!atomic_load(&armed))
        return false;
    long n = atomic_fetch_add(&calls, 1) + 1, at = atomic_load(&fail_at);
    if (n >= at && n - at < atomic_load(&fail_len)) {
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

/* A UTF-16 database `name` in the test's directory made with `schema`
 * (SQLite allocates to convert its texts), its URL in url. */
static void make_utf16_db(const char *name, const char *schema, char *url, size_t url_len) {
    char path[512], sql[512];
    snprintf(path, sizeof path, "%s/%s.db", dbt_tmpdir(), name);
    snprintf(url, url_len, "sqlite://%s", path);
    snprintf(sql, sizeof sql, "PRAGMA encoding='UTF-16le'; %s", schema);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

static void test_release_drops_temp_objects_when_sqlite_runs_out(void **state) {
    (void)state;
    char url[600];
    make_utf16_db("utf16", "CREATE TABLE m(x)", url, sizeof url);

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
        atomic_store(&fail_len, 1);
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

/* Each allocation of a whole pool's life fails in turn, with the
 * `failing` - 1 after it (1: alone; LONG_MAX: memory stays short): open
 * with an init_sql, a lease that makes temporary objects and reads rows
 * back, release, close. Each run ends in success or an error, never a
 * crash or a leak (the ASan build). */
static void pool_life(const char *name, long failing) {
    char url[600];
    make_utf16_db(name,
                  "CREATE TABLE m(x TEXT, y REAL, z BLOB); "
                  "INSERT INTO m VALUES ('one', 0.1, x'00ff'), ('two', 2.5, NULL)",
                  url, sizeof url);
    int runs = 0;
    for (long at = 1;; at++) {
        dbpool_options o;
        dbt_options(&o, 1, 2);
        o.maintenance_interval_ms = 0;
        o.init_sql = "CREATE TEMP TABLE base(a)";
        dbpool *p = NULL;
        dbpool_error e;
        atomic_store(&fail_len, failing);
        arm(at);
        if (dbpool_open(&p, url, &o, &e) == DBPOOL_OK) {
            dbpool_conn *c = NULL;
            if (dbpool_acquire(p, 2000, &c, &e) == DBPOOL_OK) {
                dbpool_exec(c, "CREATE TEMP TABLE t(v TEXT); INSERT INTO t VALUES ('x')", NULL, 0, NULL, &e);
                dbpool_result *r = NULL;
                if (dbpool_query(c, "SELECT x, y, z FROM m UNION ALL SELECT v, 1, NULL FROM t", NULL, 0, &r,
                                 &e) == DBPOOL_OK) {
                    while (dbpool_result_next(r, &e) == 1) {
                        size_t len = 0;
                        for (int i = 0; i < 3; i++) {
                            (void)dbpool_result_column_name(r, i);
                            /* NULL: SQL NULL, or out of memory, both with no length */
                            if (!dbpool_result_text(r, i, &len) && len != 0)
                                fail_msg("allocation %ld failing: a NULL text with length %zu", at, len);
                            (void)dbpool_result_blob(r, i, &len);
                            (void)dbpool_result_double(r, i);
                        }
                    }
                    dbpool_result_free(r);
                }
                dbpool_release(c);
            }
            dbpool_close(p);
        }
        atomic_store(&armed, false);
        runs++;
        if (atomic_load(&failed) == 0)
            break;
    }
    assert_true(runs > 1);
}

static void test_pool_life_one_allocation_fails(void **state) {
    (void)state;
    pool_life("one", 1);
}

static void test_pool_life_memory_stays_short(void **state) {
    (void)state;
    pool_life("short", LONG_MAX);
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
        cmocka_unit_test(test_pool_life_one_allocation_fails),
        cmocka_unit_test(test_pool_life_memory_stays_short),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
