/* Resources stay bounded over long runs and thread churn: memory, file
 * descriptors, threads, writer numbers, parked connections and statement
 * caches come back to a steady state when threads come and go by the
 * thousand, pools are opened and closed by the thousand, distinct SQL
 * texts run by the hundred thousand, and connections churn under tiny
 * lifetimes. Mock and SQLite (no servers needed). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* mallinfo2 */
#endif
#include "driver_mock.h"
#include "metrics.h"
#include "pool_internal.h"
#include "testsupport.h"

#include <dirent.h>
#include <malloc.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define DBT_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define DBT_SANITIZED 1
#endif
#endif
#ifndef DBT_SANITIZED
#define DBT_SANITIZED 0
#endif

static int count_dir(const char *path) {
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}
static int fds(void) { return count_dir("/proc/self/fd"); }
static int tasks(void) { return count_dir("/proc/self/task"); }

/* Bytes malloc has handed out and not had back (0 under a sanitizer,
 * whose allocator mallinfo2 does not see). */
static long heap_in_use(void) {
    if (DBT_SANITIZED)
        return 0;
    malloc_trim(0);
    struct mallinfo2 mi = mallinfo2();
    return (long)(mi.uordblks + mi.hblkhd);
}

/* Wait (bounded) until the process is back to `n` threads: a thread that
 * returned from its function may still be on its way out after the join. */
static int tasks_settle(int n) {
    int64_t t0 = dbt_now_ms();
    int now = tasks();
    /* Long enough for a machine busy with other work: a joined thread
     * stays listed until it has run its last steps in the kernel, and
     * twice (under parallel test runs) three were still listed after 5 s. */
    while (now > n && dbt_now_ms() - t0 < 20000) {
        dbt_sleep_ms(5);
        now = tasks();
    }
    return now;
}

/* ------------------------------------------------------------------ */
/* 10,000 short-lived threads on one pool                              */
/* ------------------------------------------------------------------ */

#define CHURN_THREADS 10000
#define CHURN_WAVE 100 /* at once: more than the 64 writer numbers */

typedef struct churn_arg {
    dbpool *p;
    atomic_int failures;
    char message[256];
} churn_arg;

static void *churn_main(void *arg) {
    churn_arg *a = arg;
    dbpool_conn *c = NULL;
    dbpool_error e;
    if (dbpool_acquire(a->p, 10000, &c, &e) != DBPOOL_OK) {
        if (atomic_fetch_add(&a->failures, 1) == 0)
            snprintf(a->message, sizeof a->message, "acquire: %s", e.message);
        return NULL;
    }
    if (dbpool_exec(c, "SELECT 1", NULL, 0, NULL, &e) != DBPOOL_OK) {
        if (atomic_fetch_add(&a->failures, 1) == 0)
            snprintf(a->message, sizeof a->message, "exec: %s", e.message);
    }
    if (dbpool_release(c) != DBPOOL_OK)
        atomic_fetch_add(&a->failures, 1);
    return NULL;
}

static void run_wave(churn_arg *a, int n) {
    pthread_t t[CHURN_WAVE];
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 128 * 1024);
    for (int i = 0; i < n; i++)
        if (pthread_create(&t[i], &attr, churn_main, a) != 0)
            fail_msg("pthread_create failed at thread %d", i);
    pthread_attr_destroy(&attr);
    for (int i = 0; i < n; i++)
        pthread_join(t[i], NULL);
}

static void thread_churn(bool cache, int64_t maint_ms) {
    const int max = 4;
    dbpool_options o;
    dbt_options(&o, 0, max);
    o.thread_cache = cache;
    o.maintenance_interval_ms = maint_ms;
    o.validation = DBPOOL_VALIDATE_NEVER;
    o.acquire_timeout_ms = 10000;
    dbpool *p = NULL;
    dbpool_error e;
    int fds0 = fds();
    int tasks0 = tasks();
    uint32_t writers0 = dbpool__metrics_writers_held();
    assert_int_equal(dbpool_open(&p, "mock:", &o, &e), DBPOOL_OK);
    int tasks_open = tasks_settle(tasks0 + 2 + (maint_ms > 0));
    churn_arg a = {.p = p};
    /* Warm-up: the pool's connections, stripes and malloc's arenas. */
    for (int done = 0; done < 10 * CHURN_WAVE; done += CHURN_WAVE)
        run_wave(&a, CHURN_WAVE);
    long heap_warm = heap_in_use();
    for (int done = 10 * CHURN_WAVE; done < CHURN_THREADS; done += CHURN_WAVE)
        run_wave(&a, CHURN_WAVE);
    long heap_end = heap_in_use();
    if (atomic_load(&a.failures))
        fail_msg("%d of %d threads failed; first: %s", atomic_load(&a.failures), CHURN_THREADS, a.message);

    /* Every thread is gone: its writer number is free again (the pool's
     * own threads and this one may hold one each), and the pool has no
     * more stripes of its own than there are numbers. */
    assert_int_equal(tasks_settle(tasks_open), tasks_open);
    uint32_t own_threads = 1u + (uint32_t)o.max_connecting + (maint_ms > 0);
    if (dbpool__metrics_writers_held() > writers0 + own_threads)
        fail_msg("writer numbers held: %u after the threads exited, %u before",
                 dbpool__metrics_writers_held(), writers0);
    assert_true(dbpool__metrics_own_stripes(p->metrics) <= 64);

    dbpool_stats s = dbt_stats(p);
    assert_int_equal(s.in_use, 0);
    assert_int_equal(s.waiting, 0);
    assert_true(s.total <= max);
    assert_int_equal(s.idle, s.total);
    assert_true(s.created <= (uint64_t)max); /* reused, never churned */
    assert_int_equal(s.acquired, CHURN_THREADS);
    assert_true(dbt_invariant_holds(p));
    if (!cache)
        assert_int_equal(s.thread_cached, 0);
    if (maint_ms > 0) {
        /* No connection stays parked for a thread that no longer exists:
         * maintenance gives them back to the idle list. */
        int64_t t0 = dbt_now_ms();
        while (dbt_stats(p).thread_cached > 0 && dbt_now_ms() - t0 < 5000)
            dbt_sleep_ms(maint_ms);
        assert_int_equal(dbt_stats(p).thread_cached, 0);
    }
    /* Parked or idle, every connection serves someone else: max leases at
     * once on this thread, without a new connect. */
    dbpool_conn *held[4];
    for (int i = 0; i < max; i++)
        held[i] = dbt_acquire(p);
    s = dbt_stats(p);
    assert_int_equal(s.in_use, max);
    for (int i = 0; i < max; i++)
        dbpool_release(held[i]);
    assert_true(s.created <= (uint64_t)max);

    /* Memory: 9,000 threads after the warm-up added nothing that stays. */
    if (heap_end - heap_warm > 256 * 1024)
        fail_msg("heap grew by %ld bytes over %d threads after the warm-up", heap_end - heap_warm,
                 CHURN_THREADS - 10 * CHURN_WAVE);
    assert_int_equal(dbpool_close(p), 0);
    assert_int_equal(tasks_settle(tasks0), tasks0);
    assert_int_equal(fds(), fds0);
    if (dbpool__metrics_writers_held() > writers0 + 1)
        fail_msg("writer numbers held: %u after the pool closed, %u before it opened",
                 dbpool__metrics_writers_held(), writers0);
    assert_int_equal(dbt_mock_live(), 0);
}

static void test_thread_churn_cache_on(void **state) {
    (void)state;
    thread_churn(true, 0);
}
static void test_thread_churn_cache_on_maintenance(void **state) {
    (void)state;
    thread_churn(true, 20);
}
static void test_thread_churn_cache_off(void **state) {
    (void)state;
    thread_churn(false, 20);
}

/* ------------------------------------------------------------------ */
/* The pools' own threads take no writer number                         */
/* ------------------------------------------------------------------ */

#define MANY_POOLS 40

static void *lease_once(void *arg) {
    dbpool_conn *c = dbt_acquire(arg);
    dbpool_release(c);
    return NULL;
}

/* A connector thread records a connect's duration now and then: were it
 * to hold one of the 64 writer numbers for its pool's life, 32 open pools
 * (two connectors each) would hold them all, and every application thread
 * would record through the shared stripes, with locked adds, for good. */
static void test_pool_threads_take_no_writer_numbers(void **state) {
    (void)state;
    uint32_t writers0 = dbpool__metrics_writers_held();
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.lazy_connect = true;
    o.maintenance_interval_ms = 5;
    o.max_connecting = 2;
    dbpool *pools[MANY_POOLS];
    for (int i = 0; i < MANY_POOLS; i++) {
        dbpool_error e;
        if (dbpool_open(&pools[i], "mock:", &o, &e) != DBPOOL_OK)
            fail_msg("open %d: %s", i, e.message);
        /* Two connects, made by the connector threads for a caller in line. */
        dbpool_conn *a = dbt_acquire(pools[i]), *b = dbt_acquire(pools[i]);
        dbpool_release(a);
        dbpool_release(b);
        assert_true(dbt_stats(pools[i]).created == 2);
    }
    if (dbpool__metrics_writers_held() > writers0 + 1)
        fail_msg("%u writer numbers held with %d pools open and idle, %u before (this thread may hold one)",
                 dbpool__metrics_writers_held(), MANY_POOLS, writers0);
    /* An application thread still gets a stripe of its own. */
    uint32_t own0 = dbpool__metrics_own_stripes(pools[0]->metrics);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, lease_once, pools[0]), 0);
    pthread_join(t, NULL);
    assert_int_equal(dbpool__metrics_own_stripes(pools[0]->metrics), own0 + 1);
    for (int i = 0; i < MANY_POOLS; i++)
        assert_int_equal(dbpool_close(pools[i]), 0);
}

/* ------------------------------------------------------------------ */
/* A thread's cache after pools it used were closed                     */
/* ------------------------------------------------------------------ */

static dbpool *open_cached(void) {
    dbpool_options o;
    dbt_options(&o, 1, 2);
    o.maintenance_interval_ms = 0;
    o.validation = DBPOOL_VALIDATE_NEVER;
    dbpool *p = NULL;
    dbpool_error e;
    if (dbpool_open(&p, "mock:", &o, &e) != DBPOOL_OK)
        fail_msg("open: %s", e.message);
    return p;
}

/* Leases handed out through the thread cache so far. */
static uint64_t fast_leases(dbpool *p) {
    (void)dbt_stats(p); /* folds them in */
    dbpool__lock(p);
    uint64_t n = p->fast_folded;
    dbpool__unlock(p);
    return n;
}

static void lease(dbpool *p) {
    dbpool_conn *c = dbt_acquire(p);
    dbpool_release(c);
}

/* A thread keeps its connections for four pools at most. The entries of
 * pools it used and that were closed since must not stay in the way: a
 * long-lived thread that went through a few short-lived pools (a manager
 * replacing them, say) would otherwise keep one entry for all the pools it
 * uses now, and two of them taking turns would each push the other's
 * connection out at every release: no lease would come from the cache. */
static void test_closed_pools_leave_the_thread_cache(void **state) {
    (void)state;
    dbpool *a = open_cached();
    lease(a); /* parked for this thread */
    /* Three pools used and closed: with a's, the table is full. */
    for (int i = 0; i < 3; i++) {
        dbpool *gone = open_cached();
        lease(gone);
        assert_int_equal(dbpool_close(gone), 0);
    }
    /* A live pool whose entry would go where a's is. */
    dbpool *b = NULL;
    while (!b) {
        dbpool *q = open_cached();
        if (q->serial % 4 == a->serial % 4) {
            b = q;
        } else {
            lease(q);
            assert_int_equal(dbpool_close(q), 0);
        }
    }
    lease(b);
    lease(a);
    uint64_t fa = fast_leases(a), fb = fast_leases(b);
    for (int i = 0; i < 200; i++) {
        lease(a);
        lease(b);
    }
    uint64_t got_a = fast_leases(a) - fa, got_b = fast_leases(b) - fb;
    if (got_a < 190 || got_b < 190)
        fail_msg("of 200 leases each, %llu and %llu came from the thread cache", (unsigned long long)got_a,
                 (unsigned long long)got_b);
    assert_int_equal(dbpool_close(a), 0);
    assert_int_equal(dbpool_close(b), 0);
}

/* ------------------------------------------------------------------ */
/* Pools opened and closed by the thousand                             */
/* ------------------------------------------------------------------ */

#define OPEN_CLOSE_ROUNDS 2000

static void open_close(bool maintenance) {
    dbpool_options o;
    dbt_options(&o, 1, 3);
    o.maintenance_interval_ms = maintenance ? 1 : 0;
    o.leak_threshold_ms = maintenance ? 60000 : 0;
    o.keepalive_ms = maintenance ? 1 : 0;
    int fds0 = fds(), tasks0 = tasks();
    long heap_warm = 0;
    int64_t slowest = 0;
    for (int i = 0; i < OPEN_CLOSE_ROUNDS; i++) {
        if (i == 100)
            heap_warm = heap_in_use();
        dbpool *p = NULL;
        dbpool_error e;
        if (dbpool_open(&p, "mock:", &o, &e) != DBPOOL_OK)
            fail_msg("open %d: %s", i, e.message);
        dbpool_conn *c = dbt_acquire(p);
        dbt_exec_ok(c, "SELECT 1", NULL, 0);
        dbpool_release(c);
        int64_t t0 = dbt_now_ms();
        assert_int_equal(dbpool_close(p), 0);
        int64_t took = dbt_now_ms() - t0;
        if (took > slowest)
            slowest = took;
    }
    long heap_end = heap_in_use();
    if (slowest > 2000)
        fail_msg("a dbpool_close took %lld ms", (long long)slowest);
    assert_int_equal(tasks_settle(tasks0), tasks0);
    assert_int_equal(fds(), fds0);
    if (heap_end - heap_warm > 128 * 1024)
        fail_msg("heap grew by %ld bytes over %d opens and closes", heap_end - heap_warm,
                 OPEN_CLOSE_ROUNDS - 100);
    assert_int_equal(dbt_mock_live(), 0);
}

static void test_open_close_many(void **state) {
    (void)state;
    open_close(false);
}
static void test_open_close_many_with_threads(void **state) {
    (void)state;
    open_close(true);
}

static void test_manager_add_remove_many(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.maintenance_interval_ms = 5;
    int fds0 = fds(), tasks0 = tasks();
    dbpool_manager *m = NULL;
    assert_int_equal(dbpool_manager_new(&m), DBPOOL_OK);
    dbpool_error e;
    assert_int_equal(dbpool_manager_open(m, "steady", "mock:", &o, &e), DBPOOL_OK);
    long heap_warm = 0;
    char name[32];
    for (int i = 0; i < OPEN_CLOSE_ROUNDS; i++) {
        if (i == 100)
            heap_warm = heap_in_use();
        snprintf(name, sizeof name, "p%d", i % 7);
        if (dbpool_manager_open(m, name, "mock:", &o, &e) != DBPOOL_OK)
            fail_msg("open %s: %s", name, e.message);
        dbpool_conn *c = dbt_acquire(dbpool_manager_get(m, name));
        dbpool_release(c);
        assert_int_equal(dbpool_manager_count(m), 2);
        assert_int_equal(dbpool_manager_close_pool(m, name), DBPOOL_OK);
    }
    long heap_end = heap_in_use();
    assert_int_equal(dbpool_manager_count(m), 1);
    assert_int_equal(dbpool_manager_free(m), DBPOOL_OK);
    assert_int_equal(tasks_settle(tasks0), tasks0);
    assert_int_equal(fds(), fds0);
    if (heap_end - heap_warm > 128 * 1024)
        fail_msg("heap grew by %ld bytes over %d pools added and removed", heap_end - heap_warm,
                 OPEN_CLOSE_ROUNDS - 100);
}

/* ------------------------------------------------------------------ */
/* 100,000 distinct SQL texts: SQLite's statement cache stays bounded   */
/* ------------------------------------------------------------------ */

static int live_statements(sqlite3 *db) {
    int n = 0;
    for (sqlite3_stmt *st = sqlite3_next_stmt(db, NULL); st; st = sqlite3_next_stmt(db, st))
        n++;
    return n;
}

static void test_sqlite_distinct_sql(void **state) {
    (void)state;
    char url[512];
    snprintf(url, sizeof url, "sqlite:%s/distinct.db", dbt_tmpdir());
    dbpool_options o;
    dbt_options(&o, 1, 1);
    dbpool *p = NULL;
    dbpool_error e;
    assert_int_equal(dbpool_open(&p, url, &o, &e), DBPOOL_OK);
    dbpool_conn *c = dbt_acquire(p);
    dbt_exec_ok(c, "CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER)", NULL, 0);
    dbpool_release(c);
    sqlite3_int64 mem_warm = 0;
    long heap_warm = 0;
    char sql[128];
    for (int i = 0; i < 100000; i++) {
        if (i % 1000 == 0)
            c = dbt_acquire(p);
        /* Half through exec, half through query, every text new. */
        if (i % 2) {
            snprintf(sql, sizeof sql, "INSERT OR REPLACE INTO t(id, v) VALUES (%d, ?)", i % 50);
            dbpool_param v = dbpool_param_int64(i);
            dbt_exec_ok(c, sql, &v, 1);
        } else {
            snprintf(sql, sizeof sql, "SELECT v FROM t WHERE id = %d", i);
            dbpool_result *r = dbt_query_ok(c, sql, NULL, 0);
            while (dbt_next_ok(r) == 1) {
            }
            dbpool_result_free(r);
        }
        sqlite3 *db = dbpool_conn_native(c);
        int live = live_statements(db);
        /* The statement cache's 16, and the one the driver keeps to see
         * whether a caller changed the handle's flags (driver_sqlite.c,
         * canary_arm). */
        if (live > 16 + 1)
            fail_msg("%d statements live on the connection after %d distinct texts", live, i + 1);
        if (i % 1000 == 999)
            dbpool_release(c);
        if (i == 5000) {
            mem_warm = sqlite3_memory_used();
            heap_warm = heap_in_use();
        }
    }
    sqlite3_int64 mem_end = sqlite3_memory_used();
    long heap_end = heap_in_use();
    if (mem_end - mem_warm > 256 * 1024)
        fail_msg("SQLite's memory grew by %lld bytes over 95,000 distinct texts",
                 (long long)(mem_end - mem_warm));
    if (heap_end - heap_warm > 512 * 1024)
        fail_msg("heap grew by %ld bytes over 95,000 distinct texts", heap_end - heap_warm);
    dbpool_stats s = dbt_stats(p);
    assert_int_equal(s.created, 1);
    assert_int_equal(dbpool_close(p), 0);
}

/* The same on the servers (when their URLs are set): distinct
 * parameterised texts, each run twice so that it is kept, push the least
 * recently used out, and what leaves the cache leaves the server. */

static int64_t first_int64(dbpool_conn *c, const char *sql, int col) {
    dbpool_result *r = dbt_query_ok(c, sql, NULL, 0);
    assert_int_equal(dbt_next_ok(r), 1);
    int64_t v = dbpool_result_int64(r, col);
    dbpool_result_free(r);
    return v;
}

static dbpool *open_server(const char *var) {
    const char *url = getenv(var);
    if (!url || !*url) {
        if (getenv("DBPOOL_TEST_REQUIRE_SERVERS") && strcmp(getenv("DBPOOL_TEST_REQUIRE_SERVERS"), "1") == 0)
            fail_msg("%s is not set", var);
        return NULL;
    }
    dbpool_options o;
    dbt_options(&o, 1, 1);
    o.validation = DBPOOL_VALIDATE_NEVER;
    o.maintenance_interval_ms = 0;
    dbpool *p = NULL;
    dbpool_error e;
    if (dbpool_open(&p, url, &o, &e) != DBPOOL_OK)
        fail_msg("open: %s", e.message); /* the redactor keeps the password out */
    return p;
}

#define SERVER_TEXTS 3000

static void test_pg_distinct_sql(void **state) {
    (void)state;
    dbpool *p = open_server("DBPOOL_TEST_PG_URL");
    if (!p)
        skip();
    dbpool_conn *c = dbt_acquire(p);
    char sql[128];
    for (int k = 0; k < SERVER_TEXTS; k++) {
        snprintf(sql, sizeof sql, "SELECT ?::int + %d", k);
        for (int i = 0; i < 2; i++) {
            dbpool_param v = dbpool_param_int64(i);
            dbpool_result *r = dbt_query_ok(c, sql, &v, 1);
            assert_int_equal(dbt_next_ok(r), 1);
            assert_int_equal(dbpool_result_int64(r, 0), i + k);
            dbpool_result_free(r);
        }
        if (k % 500 == 499) {
            int64_t kept = first_int64(
                c, "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE '\\_dbpool\\_s%'", 0);
            if (kept > 32)
                fail_msg("%lld statements kept on the server after %d distinct texts", (long long)kept,
                         k + 1);
        }
    }
    /* Run once each: never prepared, nothing left behind. */
    int64_t before =
        first_int64(c, "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE '\\_dbpool\\_s%'", 0);
    for (int k = 0; k < SERVER_TEXTS; k++) {
        snprintf(sql, sizeof sql, "SELECT ?::int - %d", k);
        dbpool_param v = dbpool_param_int64(k);
        dbt_exec_ok(c, sql, &v, 1);
    }
    int64_t after =
        first_int64(c, "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE '\\_dbpool\\_s%'", 0);
    assert_true(after <= before);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_mysql_distinct_sql(void **state) {
    (void)state;
    dbpool *p = open_server("DBPOOL_TEST_MYSQL_URL");
    if (!p)
        skip();
    dbpool_conn *c = dbt_acquire(p);
    dbt_exec_ok(c, "CREATE TEMPORARY TABLE dbpool_distinct (a INT)", NULL, 0);
    char sql[128];
    for (int k = 0; k < SERVER_TEXTS; k++) {
        snprintf(sql, sizeof sql, "INSERT INTO dbpool_distinct (a) VALUES (? + %d)", k);
        dbpool_param v = dbpool_param_int64(k);
        dbt_exec_ok(c, sql, &v, 1);
        if (k % 500 == 499) {
            /* The server's count of this session's statements: the
             * process-wide figure counts other sessions too. */
            int64_t open_now = first_int64(c, "SHOW SESSION STATUS LIKE 'Com_stmt_prepare'", 1) -
                               first_int64(c, "SHOW SESSION STATUS LIKE 'Com_stmt_close'", 1);
            if (open_now < 1)
                fail_msg("no statement kept after %d distinct texts: the count sees nothing", k + 1);
            if (open_now > 16)
                fail_msg("%lld statements open on the server after %d distinct texts", (long long)open_now,
                         k + 1);
        }
    }
    assert_int_equal(dbpool_discard(c), DBPOOL_OK);
    assert_int_equal(dbpool_close(p), 0);
}

/* ------------------------------------------------------------------ */
/* Tiny lifetimes and idle timeouts under continuous load               */
/* ------------------------------------------------------------------ */

typedef struct load_arg {
    dbpool *p;
    atomic_bool stop;
    atomic_int failures;
    atomic_long cycles;
    char message[256];
} load_arg;

static void *load_main(void *arg) {
    load_arg *a = arg;
    unsigned n = 0;
    while (!atomic_load(&a->stop)) {
        dbpool_conn *c = NULL;
        dbpool_error e;
        if (dbpool_acquire(a->p, 5000, &c, &e) != DBPOOL_OK) {
            if (atomic_fetch_add(&a->failures, 1) == 0)
                snprintf(a->message, sizeof a->message, "acquire: %s", e.message);
            continue;
        }
        dbpool_result *r = NULL;
        if (dbpool_query(c, "SELECT count(*) FROM sqlite_master", NULL, 0, &r, &e) != DBPOOL_OK) {
            if (atomic_fetch_add(&a->failures, 1) == 0)
                snprintf(a->message, sizeof a->message, "query: %s", e.message);
        } else {
            while (dbpool_result_next(r, &e) == 1) {
            }
            dbpool_result_free(r);
        }
        dbpool_release(c);
        atomic_fetch_add(&a->cycles, 1);
        if (++n % 64 == 0)
            dbt_sleep_ms(3); /* let idle connections reach their idle timeout now and then */
    }
    return NULL;
}

static void test_tiny_lifetimes_under_load(void **state) {
    (void)state;
    char url[512];
    snprintf(url, sizeof url, "sqlite:%s/churn.db", dbt_tmpdir());
    dbpool_options o;
    dbt_options(&o, 1, 4);
    o.max_lifetime_ms = 20;
    o.idle_timeout_ms = 5;
    o.maintenance_interval_ms = 2;
    o.acquire_timeout_ms = 5000;
    int fds0 = fds(), tasks0 = tasks();
    dbpool *p = NULL;
    dbpool_error e;
    if (dbpool_open(&p, url, &o, &e) != DBPOOL_OK)
        fail_msg("open: %s", e.message);
    load_arg a = {.p = p};
    enum { N = 6 };
    pthread_t t[N];
    for (int i = 0; i < N; i++)
        assert_int_equal(pthread_create(&t[i], NULL, load_main, &a), 0);
    int max_fds = 0;
    int64_t t0 = dbt_now_ms();
    while (dbt_now_ms() - t0 < 8000) {
        dbt_sleep_ms(50);
        int f = fds();
        if (f > max_fds)
            max_fds = f;
    }
    atomic_store(&a.stop, true);
    for (int i = 0; i < N; i++)
        pthread_join(t[i], NULL);
    if (atomic_load(&a.failures))
        fail_msg("%d failures; first: %s", atomic_load(&a.failures), a.message);
    /* Connections churn on (a maintenance pass every 2 ms): one taken out
     * to be closed has left total at once but counts in destroyed only
     * when its close is over, and one being opened is in total before it
     * counts in created. Read at a moment with neither in flight. */
    dbpool_stats s = dbt_stats(p);
    for (int64_t until = dbt_now_ms() + 5000;
         s.created - s.destroyed != (uint64_t)s.total && dbt_now_ms() < until; s = dbt_stats(p))
        dbt_sleep_ms(1);
    /* Connections churned, and every one counted where it went. */
    assert_true(s.created > 20);
    uint64_t by = 0;
    for (int r = 0; r < DBPOOL_CLOSE_REASON_COUNT; r++)
        by += s.destroyed_by[r];
    assert_int_equal(by, s.destroyed);
    /* By age: its lifetime, or its idle timeout when the loaded machine
     * let it sit 5 ms first (once, none of 8 s reached its 20 ms). */
    if (s.destroyed_by[DBPOOL_CLOSE_LIFETIME] + s.destroyed_by[DBPOOL_CLOSE_IDLE_TIMEOUT] == 0)
        fail_msg("%llu connections closed, none by lifetime or idle timeout",
                 (unsigned long long)s.destroyed);
    assert_int_equal(s.created - s.destroyed, (uint64_t)s.total);
    assert_true(s.total <= 4);
    /* At most 4 connections (a database file and its journal each) at once,
     * plus the connectors' brief overlap: never a pile. */
    if (max_fds > fds0 + 2 * (4 + 2) + 2)
        fail_msg("up to %d descriptors open under churn, %d before the pool", max_fds, fds0);
    assert_int_equal(dbpool_close(p), 0);
    assert_int_equal(tasks_settle(tasks0), tasks0);
    assert_int_equal(fds(), fds0);
    printf("# %ld cycles\n", atomic_load(&a.cycles));
}

static void *nothing(void *arg) { return arg; }

int main(void) {
    /* What the runtime opens once (a sanitizer's files, the first thread's
     * set-up) is not counted against the tests. */
    pthread_t t;
    if (pthread_create(&t, NULL, nothing, NULL) == 0)
        pthread_join(t, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_thread_churn_cache_on, dbt_mock_setup),
        cmocka_unit_test_setup(test_thread_churn_cache_on_maintenance, dbt_mock_setup),
        cmocka_unit_test_setup(test_thread_churn_cache_off, dbt_mock_setup),
        cmocka_unit_test_setup(test_pool_threads_take_no_writer_numbers, dbt_mock_setup),
        cmocka_unit_test_setup(test_closed_pools_leave_the_thread_cache, dbt_mock_setup),
        cmocka_unit_test_setup(test_open_close_many, dbt_mock_setup),
        cmocka_unit_test_setup(test_open_close_many_with_threads, dbt_mock_setup),
        cmocka_unit_test_setup(test_manager_add_remove_many, dbt_mock_setup),
        cmocka_unit_test_setup(test_sqlite_distinct_sql, dbt_mock_setup),
        cmocka_unit_test_setup(test_pg_distinct_sql, dbt_mock_setup),
        cmocka_unit_test_setup(test_mysql_distinct_sql, dbt_mock_setup),
        cmocka_unit_test_setup(test_tiny_lifetimes_under_load, dbt_mock_setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
