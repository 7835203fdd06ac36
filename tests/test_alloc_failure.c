/* Out of memory and failing system calls: every allocation and
 * resource-creating call of the library fails in turn, and each run must
 * end in success or a clear error (DBPOOL_ENOMEM or the documented code,
 * with a message), never crash, hang or leak, and leave the pool usable or
 * cleanly unopened.
 *
 * The executable is linked with -Wl,--wrap for malloc, calloc, realloc,
 * strdup, aligned_alloc, pthread_create, pthread_mutex_init,
 * pthread_cond_init, pthread_rwlock_init, sqlite3_open_v2 and
 * backtrace_symbols (tests/CMakeLists.txt): the calls the library makes
 * from libdbpool.a go through the shims below, which fail the Nth call
 * counted while the injector is armed. Each scenario runs once to count
 * its calls, then once per call with that call failing. The library's
 * own threads (connectors, maintenance, keepalive) make calls too: their
 * failures must degrade (the connect is tried again, or the work waits
 * for the next pass), never abort or deadlock. Leaks are LeakSanitizer's
 * to find (the ASan build), with the mock backend's count of live
 * connections checked after every run. */
#include "driver_mock.h"
#include "testsupport.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

/* ---------------------------------------------------------------------- */
/* the injector                                                           */
/* ---------------------------------------------------------------------- */

static atomic_bool armed;
static atomic_long calls;    /* counted while armed */
static atomic_long fail_at;  /* 0: none; n: the nth call fails */
static atomic_long fail_len; /* calls failing from there on: 1, a few, or all (memory stays short) */
static atomic_long failed;   /* injected failures */

static bool inject(void) {
    if (!atomic_load(&armed))
        return false;
    long n = atomic_fetch_add(&calls, 1) + 1, at = atomic_load(&fail_at);
    if (at > 0 && n >= at && n - at < atomic_load(&fail_len)) {
        atomic_fetch_add(&failed, 1);
        return true;
    }
    return false;
}

static void arm(long n) {
    atomic_store(&calls, 0);
    atomic_store(&failed, 0);
    atomic_store(&fail_at, n);
    atomic_store(&armed, true);
}

static void disarm(void) { atomic_store(&armed, false); }

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
void *__real_aligned_alloc(size_t align, size_t n);
int __real_pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg);
int __real_pthread_mutex_init(pthread_mutex_t *m, const pthread_mutexattr_t *a);
int __real_pthread_cond_init(pthread_cond_t *c, const pthread_condattr_t *a);
int __real_pthread_rwlock_init(pthread_rwlock_t *l, const pthread_rwlockattr_t *a);
int __real_sqlite3_open_v2(const char *name, sqlite3 **db, int flags, const char *vfs);
char **__real_backtrace_symbols(void *const *frames, int n);

void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);
void *__wrap_aligned_alloc(size_t align, size_t n);
int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg);
int __wrap_pthread_mutex_init(pthread_mutex_t *m, const pthread_mutexattr_t *a);
int __wrap_pthread_cond_init(pthread_cond_t *c, const pthread_condattr_t *a);
int __wrap_pthread_rwlock_init(pthread_rwlock_t *l, const pthread_rwlockattr_t *a);
int __wrap_sqlite3_open_v2(const char *name, sqlite3 **db, int flags, const char *vfs);
char **__wrap_backtrace_symbols(void *const *frames, int n);

void *__wrap_malloc(size_t n) {
    if (inject()) {
        errno = ENOMEM;
        return NULL;
    }
    return __real_malloc(n);
}
void *__wrap_calloc(size_t n, size_t size) {
    if (inject()) {
        errno = ENOMEM;
        return NULL;
    }
    return __real_calloc(n, size);
}
void *__wrap_realloc(void *p, size_t n) {
    if (inject()) {
        errno = ENOMEM;
        return NULL;
    }
    return __real_realloc(p, n);
}
char *__wrap_strdup(const char *s) {
    if (inject()) {
        errno = ENOMEM;
        return NULL;
    }
    return __real_strdup(s);
}
/* Every connection slot (the one aligned_alloc of the library) fails,
 * apart from the counted calls. */
static atomic_bool slots_fail;

void *__wrap_aligned_alloc(size_t align, size_t n) {
    if (atomic_load(&slots_fail) || inject()) {
        errno = ENOMEM;
        return NULL;
    }
    return __real_aligned_alloc(align, n);
}
int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg) {
    return inject() ? EAGAIN : __real_pthread_create(t, a, fn, arg);
}
int __wrap_pthread_mutex_init(pthread_mutex_t *m, const pthread_mutexattr_t *a) {
    return inject() ? ENOMEM : __real_pthread_mutex_init(m, a);
}
int __wrap_pthread_cond_init(pthread_cond_t *c, const pthread_condattr_t *a) {
    return inject() ? ENOMEM : __real_pthread_cond_init(c, a);
}
int __wrap_pthread_rwlock_init(pthread_rwlock_t *l, const pthread_rwlockattr_t *a) {
    return inject() ? ENOMEM : __real_pthread_rwlock_init(l, a);
}
int __wrap_sqlite3_open_v2(const char *name, sqlite3 **db, int flags, const char *vfs) {
    if (inject()) {
        *db = NULL; /* what SQLite does when it cannot allocate the handle */
        return SQLITE_NOMEM;
    }
    return __real_sqlite3_open_v2(name, db, flags, vfs);
}
char *__real_getcwd(char *buf, size_t size);
char *__wrap_getcwd(char *buf, size_t size);
char *__wrap_getcwd(char *buf, size_t size) {
    if (inject()) {
        errno = ENOENT; /* the working directory was removed */
        return NULL;
    }
    return __real_getcwd(buf, size);
}

/* pthread_atfork fails (ENOMEM) while this is above 0, counted down. */
static atomic_int atfork_failures;

int __real_pthread_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void));
int __wrap_pthread_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void));
int __wrap_pthread_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void)) {
    if (atomic_fetch_sub(&atfork_failures, 1) > 0)
        return ENOMEM;
    atomic_store(&atfork_failures, 0);
    return inject() ? ENOMEM : __real_pthread_atfork(prepare, parent, child);
}

char **__wrap_backtrace_symbols(void *const *frames, int n) {
    return inject() ? NULL : __real_backtrace_symbols(frames, n);
}
#ifdef DBPOOL_HAVE_PG
#include <libpq-fe.h>
PGconn *__real_PQconnectStartParams(const char *const *keys, const char *const *values, int expand);
PGconn *__wrap_PQconnectStartParams(const char *const *keys, const char *const *values, int expand);
PGconn *__wrap_PQconnectStartParams(const char *const *keys, const char *const *values, int expand) {
    return inject() ? NULL : __real_PQconnectStartParams(keys, values, expand);
}
#endif
#ifdef DBPOOL_HAVE_MYSQL
#include <mysql.h>
MYSQL *__real_mysql_init(MYSQL *m);
MYSQL *__wrap_mysql_init(MYSQL *m);
MYSQL *__wrap_mysql_init(MYSQL *m) { return inject() ? NULL : __real_mysql_init(m); }
MYSQL_STMT *__real_mysql_stmt_init(MYSQL *m);
MYSQL_STMT *__wrap_mysql_stmt_init(MYSQL *m);
MYSQL_STMT *__wrap_mysql_stmt_init(MYSQL *m) { return inject() ? NULL : __real_mysql_stmt_init(m); }

/* Connector/C out of memory in mysql_store_result, as it happens there: the
 * handle is marked ready for the next command with the rows still unread
 * on the socket, and CR_OUT_OF_MEMORY is the error. One-shot. */
static atomic_bool store_result_oom;
MYSQL_RES *__real_mysql_store_result(MYSQL *m);
MYSQL_RES *__wrap_mysql_store_result(MYSQL *m);
MYSQL_RES *__wrap_mysql_store_result(MYSQL *m) {
    if (!atomic_exchange(&store_result_oom, false))
        return __real_mysql_store_result(m);
    m->status = MYSQL_STATUS_READY;
    /* What Connector/C's SET_CLIENT_ERROR does, written out: that macro
     * names ER() from errmsg.h, which mysql.h does not include (GCC says
     * nothing inside a system header's macro; clang fails the build on the
     * implicit declaration). */
    m->net.last_errno = 2008; /* CR_OUT_OF_MEMORY */
    snprintf(m->net.sqlstate, sizeof m->net.sqlstate, "%s", "HY000");
    snprintf(m->net.last_error, sizeof m->net.last_error, "%s", "MySQL client ran out of memory");
    return NULL;
}
#endif

/* ---------------------------------------------------------------------- */
/* checks                                                                 */
/* ---------------------------------------------------------------------- */

static long current_n;       /* the failing call of this run, for messages */
static bool secrets_in_play; /* the scenario's URL holds a password */
static const char *current_scenario;

/* A call under injection returned rc: OK, or one of the allowed codes with
 * a message. The run's injected failure explains any error. */
static bool allowed(int rc, const dbpool_error *e, const char *what, const int *codes) {
    if (rc == DBPOOL_OK)
        return true;
    bool known = false;
    for (const int *c = codes; *c; c++)
        known |= rc == *c;
    /* Withheld by the redactor: only a message with a password in it may
     * be (it cannot mask one without memory); the scenarios' URLs with
     * passwords are the server ones. */
    bool withheld = strstr(e->message, "withheld") != NULL && !secrets_in_play;
    if (!known || !e->message[0] || withheld) {
        fprintf(stderr, "%s, call %ld failing: %s returned %s: \"%s\"\n", current_scenario, current_n, what,
                dbpool_errname(rc), e->message);
        return false;
    }
    return true;
}

static const int ENOMEM_ONLY[] = {DBPOOL_ENOMEM, 0};
/* And a relative path refused when getcwd() fails. */
static const int ENOMEM_OR_CWD[] = {DBPOOL_ENOMEM, DBPOOL_EINVAL, 0};

#define EXPECT(rc, e, what, codes)                                                                           \
    do {                                                                                                     \
        if (!allowed((rc), (e), (what), (codes)))                                                            \
            fail_msg("%s: call %ld failing: %s gave %d", current_scenario, current_n, (what), (rc));         \
    } while (0)

/* After a run, with the injector off: the pool works (a lease, a query, a
 * release) and closes with nothing out. */
static void check_usable(dbpool *p) {
    /* A connect of the pool's own that failed while armed (a refill) gives
     * its error to the first caller in line when it ends: let those end
     * first. */
    dbpool_stats s;
    int64_t until = dbt_now_ms() + 5000;
    for (dbpool_get_stats(p, &s); s.connecting > 0 && dbt_now_ms() < until; dbpool_get_stats(p, &s))
        dbt_sleep_ms(1);
    dbpool_conn *c = NULL;
    dbpool_error e;
    int rc = dbpool_acquire(p, 5000, &c, &e);
    if (rc != DBPOOL_OK)
        fail_msg("%s: call %ld failing: the pool was left unusable: %s", current_scenario, current_n,
                 e.message);
    dbpool_result *r = NULL;
    rc = dbpool_query(c, "SELECT 1", NULL, 0, &r, &e);
    if (rc != DBPOOL_OK)
        fail_msg("%s: call %ld failing: query after the run: %s", current_scenario, current_n, e.message);
    assert_int_equal(dbpool_result_next(r, &e), 1);
    dbpool_result_free(r);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_true(dbt_invariant_holds(p));
}

static void check_mock_clean(void) {
    dbpool__mock_counters n;
    dbpool__mock_get_counters(&n);
    if (n.live != 0)
        fail_msg("%s: call %ld failing: %ld mock connections left open", current_scenario, current_n, n.live);
}

/* Run a scenario once counting its calls, then once per call with that one
 * failing. A scenario's own threads may make a few calls more or fewer
 * from one run to the next: the loop goes on past the count until a run
 * sees no failure. Returns the number of injection points covered. */
typedef void (*scenario_fn)(void);

static long run_pass(scenario_fn fn, long len) {
    atomic_store(&fail_len, len);
    current_n = 0;
    arm(0);
    fn();
    disarm();
    long total = atomic_load(&calls);
    long n = 1;
    for (;; n++) {
        current_n = n;
        arm(n);
        fn();
        disarm();
        if (atomic_load(&failed) == 0 && n > total)
            break;
    }
    return n - 1;
}

/* ThreadSanitizer makes every run ten times slower: there the three-call
 * pass and the heaviest scenario are left out (ctest's timeout). */
#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif
#ifndef UNDER_TSAN
#define UNDER_TSAN 0
#endif

/* Up to three times: the Nth call failing alone, the Nth and the two
 * after it (a run of copies, such as every copy of a secret), and the Nth
 * and every call after it (memory that stays short). A server scenario
 * (each run connects over the network) leaves out the second; a heavy one
 * (hundreds of calls, each run a few hundred statements) runs the first
 * only. */
typedef enum { LIGHT, SERVER, HEAVY } weight;

static long run_passes(const char *name, scenario_fn fn, weight w) {
    current_scenario = name;
    int64_t t0 = dbt_now_ms();
    long once = run_pass(fn, 1);
    long three = w != LIGHT || UNDER_TSAN ? 0 : run_pass(fn, 3);
    long from = w == HEAVY ? 0 : run_pass(fn, LONG_MAX);
    fprintf(stderr,
            "%s: %ld injection points (one call failing), %ld (three), %ld (every call from there on); "
            "%lld ms\n",
            name, once, three, from, (long long)(dbt_now_ms() - t0));
    return once;
}

static long run_scenario(const char *name, scenario_fn fn) { return run_passes(name, fn, LIGHT); }

/* ---------------------------------------------------------------------- */
/* scenarios                                                              */
/* ---------------------------------------------------------------------- */

static const char *sqlite_file_url(void) {
    static char url[600];
    if (!url[0])
        snprintf(url, sizeof url, "sqlite:%s/alloc.db", dbt_tmpdir());
    return url;
}

/* Open a pool (armed), and when it opened: a lease, statements with
 * parameters and a result, the statistics, a resize, a release, then
 * (disarmed) the usability check and the close. */
static void pool_round(const char *url, const dbpool_options *o, const char *session_sql) {
    dbpool__mock_reset();
    dbpool *p = NULL;
    dbpool_error e;
    int rc = dbpool_open(&p, url, o, &e);
    EXPECT(rc, &e, "dbpool_open", ENOMEM_ONLY);
    if (rc != DBPOOL_OK) {
        disarm();
        assert_null(p);
        check_mock_clean();
        return;
    }
    dbpool_conn *c = NULL;
    rc = dbpool_acquire(p, 2000, &c, &e);
    EXPECT(rc, &e, "dbpool_acquire", ENOMEM_ONLY);
    if (rc == DBPOOL_OK) {
        rc = dbpool_exec(c, "CREATE TABLE IF NOT EXISTS alloc_failure_t(id INTEGER, name TEXT)", NULL, 0,
                         NULL, &e);
        EXPECT(rc, &e, "dbpool_exec", ENOMEM_ONLY);
        /* Twice each: a server backend keeps a statement prepared at its
         * second run. Then an open transaction for the release to reset. */
        dbpool_param params[] = {dbpool_param_int64(7), dbpool_param_text("seven")};
        for (int i = 0; i < 2; i++) {
            rc = dbpool_exec(c, "INSERT INTO alloc_failure_t VALUES (?, ?)", params, 2, NULL, &e);
            EXPECT(rc, &e, "dbpool_exec with parameters", ENOMEM_ONLY);
            dbpool_result *r = NULL;
            rc = dbpool_query(c, "SELECT id, name FROM alloc_failure_t WHERE id = ?", params, 1, &r, &e);
            EXPECT(rc, &e, "dbpool_query", ENOMEM_ONLY);
            if (rc == DBPOOL_OK) {
                int more;
                while ((more = dbpool_result_next(r, &e)) == 1)
                    (void)dbpool_result_text(r, 1, NULL);
                EXPECT(more, &e, "dbpool_result_next", ENOMEM_ONLY);
                dbpool_result_free(r);
            }
        }
        /* A result larger than a row set's inline storage. */
        dbpool_param rows = dbpool_param_int64(300);
        dbpool_result *big = NULL;
        rc = dbpool_query(c,
                          "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                          "SELECT i, 'a row of the large result' AS t FROM n",
                          &rows, 1, &big, &e);
        EXPECT(rc, &e, "dbpool_query (300 rows)", ENOMEM_ONLY);
        if (rc == DBPOOL_OK) {
            int more;
            while ((more = dbpool_result_next(big, &e)) == 1)
                (void)dbpool_result_text(big, 1, NULL);
            EXPECT(more, &e, "dbpool_result_next (300 rows)", ENOMEM_ONLY);
            dbpool_result_free(big);
        }
        /* What the release must clear: a temporary table, a session
         * setting. */
        rc = dbpool_exec(c, "CREATE TEMPORARY TABLE alloc_failure_tmp(x INTEGER)", NULL, 0, NULL, &e);
        EXPECT(rc, &e, "dbpool_exec CREATE TEMPORARY TABLE", ENOMEM_ONLY);
        if (session_sql) {
            rc = dbpool_exec(c, session_sql, NULL, 0, NULL, &e);
            EXPECT(rc, &e, session_sql, ENOMEM_ONLY);
        }
        rc = dbpool_exec(c, "BEGIN", NULL, 0, NULL, &e);
        EXPECT(rc, &e, "dbpool_exec BEGIN", ENOMEM_ONLY);
        rc = dbpool_exec(c, "DELETE FROM alloc_failure_t", NULL, 0, NULL, &e);
        EXPECT(rc, &e, "dbpool_exec in a transaction", ENOMEM_ONLY);
        assert_int_equal(dbpool_release(c), DBPOOL_OK); /* rolled back */
    }
    char buf[16384];
    int n = dbpool_stats_json(p, buf, sizeof buf);
    if (n < 0)
        assert_int_equal(n, DBPOOL_ENOMEM);
    n = dbpool_stats_prometheus(p, buf, sizeof buf);
    if (n < 0)
        assert_int_equal(n, DBPOOL_ENOMEM);
    rc = dbpool_resize(p, o ? o->min_size : 0, 3, &e);
    EXPECT(rc, &e, "dbpool_resize", ENOMEM_ONLY);
    disarm();
    check_usable(p);
    assert_int_equal(dbpool_close(p), 0);
    check_mock_clean();
}

static void base_options(dbpool_options *o, int min_size) {
    dbt_options(o, min_size, 4);
    o->maintenance_interval_ms = 0;
    o->acquire_timeout_ms = 2000;
    o->max_retries = 0;
    o->breaker_failures = 0;
}

static void scenario_mock(void) {
    dbpool_options o;
    base_options(&o, 2);
    o.init_sql = "SELECT 1";
    o.name = "mock-pool";
    pool_round("mock:?pool_max=4", &o, NULL);
}

static void scenario_sqlite_memory(void) {
    dbpool_options o;
    base_options(&o, 1);
    pool_round("sqlite::memory:", &o, "ATTACH ':memory:' AS alloc_aux");
}

/* A temporary object made by after_connect is part of every lease's
 * session (the baseline), not something a release drops. */
static int sqlite_after_connect(void *native, void *user) {
    (void)user;
    return sqlite3_exec(native, "CREATE TEMP TABLE IF NOT EXISTS alloc_base(x)", NULL, NULL, NULL) ==
                   SQLITE_OK
               ? 0
               : 1;
}

static void scenario_sqlite_file(void) {
    dbpool_options o;
    base_options(&o, 2);
    o.init_sql = "PRAGMA cache_size=100";
    o.after_connect = sqlite_after_connect;
    pool_round(sqlite_file_url(), &o, "PRAGMA cache_size=50");
}

/* A relative SQLite path is the file in the working directory of the
 * open, also for connections opened after a chdir(): made absolute, or
 * the open fails (getcwd() or the copy failing). */
static void scenario_sqlite_relative(void) {
    char saved[4096], other[4096];
    assert_non_null(__real_getcwd(saved, sizeof saved)); /* not counted */
    snprintf(other, sizeof other, "%s/elsewhere", dbt_tmpdir());
    (void)mkdir(other, 0700);
    assert_int_equal(chdir(dbt_tmpdir()), 0);
    dbpool_options o;
    base_options(&o, 1);
    o.max_size = 2;
    dbpool *p = NULL;
    dbpool_error e;
    int rc = dbpool_open(&p, "sqlite:relative.db", &o, &e);
    disarm();
    if (rc != DBPOOL_OK) {
        assert_int_equal(chdir(saved), 0);
        /* (withheld: the redactor, out of memory too, kept nothing of it) */
        if (rc == DBPOOL_EINVAL && !strstr(e.message, "working directory") && !strstr(e.message, "withheld"))
            fail_msg("%s: call %ld failing: %s", current_scenario, current_n, e.message);
        EXPECT(rc, &e, "dbpool_open", ENOMEM_OR_CWD);
        return;
    }
    dbpool_conn *first = dbt_acquire(p);
    dbt_exec_ok(first, "CREATE TABLE IF NOT EXISTS here(x)", NULL, 0);
    assert_int_equal(chdir(other), 0);
    dbpool_conn *second = NULL; /* a new connection, opened in the other directory */
    rc = dbpool_acquire(p, 5000, &second, &e);
    assert_int_equal(chdir(saved), 0);
    assert_int_equal(rc, DBPOOL_OK);
    rc = dbpool_exec(second, "SELECT count(*) FROM here", NULL, 0, NULL, &e);
    if (rc != DBPOOL_OK)
        fail_msg("%s: call %ld failing: a connection opened after chdir() has another database: %s",
                 current_scenario, current_n, e.message);
    dbpool_release(second);
    dbpool_release(first);
    assert_int_equal(dbpool_close(p), 0);
}

/* The connectors open connections for a caller in line: a failure on
 * their threads must reach the caller as an error or be tried again. */
static void scenario_connectors(void) {
    dbpool__mock_reset();
    dbpool_options o;
    base_options(&o, 0);
    o.lazy_connect = true;
    o.acquire_timeout_ms = 1000;
    dbpool *p = NULL;
    dbpool_error e;
    int rc = dbpool_open(&p, "mock:", &o, &e);
    EXPECT(rc, &e, "dbpool_open", ENOMEM_ONLY);
    if (rc != DBPOOL_OK) {
        disarm();
        check_mock_clean();
        return;
    }
    dbpool_conn *c[2] = {NULL, NULL};
    for (int i = 0; i < 2; i++) {
        rc = dbpool_acquire(p, 1000, &c[i], &e);
        EXPECT(rc, &e, "dbpool_acquire (a connector's connection)", ENOMEM_ONLY);
    }
    for (int i = 0; i < 2; i++)
        if (c[i])
            assert_int_equal(dbpool_release(c[i]), DBPOOL_OK);
    disarm();
    check_usable(p);
    assert_int_equal(dbpool_close(p), 0);
    check_mock_clean();
}

/* Leak detection: the holder's stack is kept for each lease, and a timeout
 * names the oldest holder, symbolised. */
static void scenario_leak_trace(void) {
    dbpool__mock_reset();
    dbpool_options o;
    base_options(&o, 1);
    o.max_size = 1;
    o.leak_threshold_ms = 60000;
    o.maintenance_interval_ms = 1000;
    dbpool *p = NULL;
    dbpool_error e;
    int rc = dbpool_open(&p, "mock:", &o, &e);
    EXPECT(rc, &e, "dbpool_open", ENOMEM_ONLY);
    if (rc != DBPOOL_OK) {
        disarm();
        check_mock_clean();
        return;
    }
    dbpool_conn *c = NULL;
    rc = dbpool_acquire(p, 1000, &c, &e);
    EXPECT(rc, &e, "dbpool_acquire", ENOMEM_ONLY);
    if (rc == DBPOOL_OK) {
        dbpool_conn *c2 = NULL;
        static const int timeout[] = {DBPOOL_ETIMEDOUT, 0};
        rc = dbpool_acquire(p, 0, &c2, &e);
        EXPECT(rc == DBPOOL_OK ? DBPOOL_EINVAL : rc, &e, "a second acquire of a pool of one", timeout);
        assert_int_equal(dbpool_release(c), DBPOOL_OK);
    }
    disarm();
    check_usable(p);
    assert_int_equal(dbpool_close(p), 0);
    check_mock_clean();
}

/* The first pool of the process registers the fork handler that makes a
 * forked child refuse the parent's connections (docs/threading.md, fork).
 * When that registration fails, the open fails with DBPOOL_ENOMEM rather
 * than open a pool a child could use, and a later open registers it.
 * Runs first: the registration is made once per process. */
static void test_fork_watch(void **state) {
    (void)state;
    dbpool__mock_reset();
    dbpool_options o;
    base_options(&o, 1);
    dbpool *p = NULL;
    dbpool_error e;
    atomic_store(&atfork_failures, 1);
    int rc = dbpool_open(&p, "mock:", &o, &e);
    atomic_store(&atfork_failures, 0);
    if (rc == DBPOOL_OK)
        dbpool_close(p);
    /* Refused, or else the child below must still be refused. */
    if (rc != DBPOOL_OK) {
        assert_int_equal(rc, DBPOOL_ENOMEM);
        assert_non_null(strstr(e.message, "fork"));
    }
    assert_int_equal(dbpool_open(&p, "mock:", &o, &e), DBPOOL_OK);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dbpool_conn *c = NULL;
        _exit(dbpool_acquire(p, 0, &c, NULL) == DBPOOL_EMISUSE ? 0 : 1);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0); /* the child was refused */
    assert_int_equal(dbpool_close(p), 0);
    check_mock_clean();
}

/* The connection opened for a caller in line, with no memory for its slot:
 * the caller gets DBPOOL_ENOMEM, not a timeout that says nothing of memory
 * after the connector has opened and closed connection after connection
 * for as long as it waited. */
static void test_connector_no_slot(void **state) {
    (void)state;
    dbpool__mock_reset();
    dbpool_options o;
    base_options(&o, 0);
    o.lazy_connect = true;
    dbpool *p = NULL;
    dbpool_error e;
    assert_int_equal(dbpool_open(&p, "mock:", &o, &e), DBPOOL_OK);
    atomic_store(&slots_fail, true);
    dbpool_conn *c = NULL;
    int64_t t0 = dbt_now_ms();
    int rc = dbpool_acquire(p, 2000, &c, &e);
    int64_t took = dbt_now_ms() - t0;
    atomic_store(&slots_fail, false);
    dbpool__mock_counters n;
    dbpool__mock_get_counters(&n);
    fprintf(stderr, "no slot: %s after %lld ms, %ld connects: %s\n", dbpool_errname(rc), (long long)took,
            n.connects, e.message);
    assert_int_equal(rc, DBPOOL_ENOMEM);
    assert_non_null(strstr(e.message, "memory"));
    assert_true(n.connects <= 3);
    check_usable(p);
    assert_int_equal(dbpool_close(p), 0);
    check_mock_clean();
}

/* Callers on several threads wait in line for two connections while calls
 * fail: each acquire ends with a lease or ENOMEM at once (not a timeout),
 * and the pool is whole afterwards. */
typedef struct caller {
    pthread_t t;
    dbpool *p;
    int bad_rc; /* an unexpected code, or 0 */
    char message[256];
} caller;

static void *caller_main(void *arg) {
    caller *k = arg;
    for (int i = 0; i < 10; i++) {
        dbpool_conn *c = NULL;
        dbpool_error e;
        int rc = dbpool_acquire(k->p, 2000, &c, &e);
        if (rc == DBPOOL_OK) {
            dbpool_result *r = NULL;
            rc = dbpool_query(c, "SELECT 1", NULL, 0, &r, &e);
            if (rc == DBPOOL_OK)
                dbpool_result_free(r);
            if (dbpool_release(c) != DBPOOL_OK)
                rc = DBPOOL_EMISUSE;
        }
        if (rc != DBPOOL_OK && rc != DBPOOL_ENOMEM && !k->bad_rc) {
            k->bad_rc = rc;
            snprintf(k->message, sizeof k->message, "%s", e.message);
        }
    }
    return NULL;
}

static void scenario_concurrent(void) {
    dbpool__mock_reset();
    dbpool_options o;
    base_options(&o, 0);
    o.max_size = 2;
    o.lazy_connect = true;
    dbpool *p = NULL;
    dbpool_error e;
    int rc = dbpool_open(&p, "mock:", &o, &e);
    EXPECT(rc, &e, "dbpool_open", ENOMEM_ONLY);
    if (rc != DBPOOL_OK) {
        disarm();
        check_mock_clean();
        return;
    }
    caller k[4];
    memset(k, 0, sizeof k);
    for (int i = 0; i < 4; i++) {
        k[i].p = p;
        /* __real: the test's own threads are not among the calls failed */
        assert_int_equal(__real_pthread_create(&k[i].t, NULL, caller_main, &k[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(k[i].t, NULL);
    disarm();
    for (int i = 0; i < 4; i++)
        if (k[i].bad_rc)
            fail_msg("%s: call %ld failing: an acquire ended with %s: %s", current_scenario, current_n,
                     dbpool_errname(k[i].bad_rc), k[i].message);
    check_usable(p);
    assert_int_equal(dbpool_close(p), 0);
    check_mock_clean();
}

static void test_concurrent(void **state) {
    (void)state;
    assert_true(run_scenario("callers on four threads", scenario_concurrent) > 0);
}

/* A lease held past leak_threshold_ms: the maintenance thread reports it
 * with the holder's stack, and reclaims it; then a health check, and a
 * suspend and resume. */
static void scenario_leak_report(void) {
    dbpool__mock_reset();
    dbpool_options o;
    base_options(&o, 1);
    o.max_size = 2;
    o.leak_threshold_ms = 1;
    o.leak_reclaim_ms = 2;
    o.maintenance_interval_ms = 2;
    dbpool *p = NULL;
    dbpool_error e;
    int rc = dbpool_open(&p, "mock:", &o, &e);
    EXPECT(rc, &e, "dbpool_open", ENOMEM_ONLY);
    if (rc != DBPOOL_OK) {
        disarm();
        check_mock_clean();
        return;
    }
    dbpool_conn *c = NULL;
    rc = dbpool_acquire(p, 1000, &c, &e);
    EXPECT(rc, &e, "dbpool_acquire", ENOMEM_ONLY);
    if (rc == DBPOOL_OK) {
        dbpool_stats s;
        int64_t until = dbt_now_ms() + 200;
        do { /* reported and reclaimed, or out of time (an allocation failed) */
            dbt_sleep_ms(2);
            dbpool_get_stats(p, &s);
        } while (s.leaks_reclaimed == 0 && dbt_now_ms() < until);
        assert_int_equal(dbpool_release(c), DBPOOL_OK);
    }
    dbpool_health h;
    static const int health[] = {DBPOOL_ENOMEM, DBPOOL_ETIMEDOUT, 0};
    rc = dbpool_check_health(p, &h, &e);
    EXPECT(rc, &e, "dbpool_check_health", health);
    assert_int_equal(dbpool_suspend(p), DBPOOL_OK);
    assert_int_equal(dbpool_resume(p), DBPOOL_OK);
    disarm();
    check_usable(p);
    assert_int_equal(dbpool_close(p), 0);
    check_mock_clean();
}

/* The maintenance and keepalive threads: a pass that cannot allocate must
 * not stop them (the pool is refilled to min_size afterwards). */
static void scenario_threads(void) {
    dbpool__mock_reset();
    dbpool_options o;
    base_options(&o, 2);
    o.maintenance_interval_ms = 5;
    o.keepalive_ms = 5;
    o.idle_timeout_ms = 0;
    dbpool *p = NULL;
    dbpool_error e;
    int rc = dbpool_open(&p, "mock:", &o, &e);
    EXPECT(rc, &e, "dbpool_open", ENOMEM_ONLY);
    if (rc != DBPOOL_OK) {
        disarm();
        check_mock_clean();
        return;
    }
    dbpool_conn *c = NULL;
    rc = dbpool_acquire(p, 1000, &c, &e);
    EXPECT(rc, &e, "dbpool_acquire", ENOMEM_ONLY);
    if (rc == DBPOOL_OK)
        assert_int_equal(dbpool_release(c), DBPOOL_OK);
    dbpool_shrink(p, 0); /* the maintenance pass refills */
    dbt_sleep_ms(20);
    disarm();
    /* Refilled to min_size again after whatever failed. */
    int64_t until = dbt_now_ms() + 5000;
    dbpool_stats s;
    do {
        dbt_sleep_ms(5);
        dbpool_get_stats(p, &s);
    } while (s.idle + s.in_use < 2 && dbt_now_ms() < until);
    if (s.idle + s.in_use < 2)
        fail_msg("%s: call %ld failing: not refilled to min_size (%d idle)", current_scenario, current_n,
                 s.idle);
    check_usable(p);
    assert_int_equal(dbpool_close(p), 0);
    check_mock_clean();
}

/* The manager: create, open two pools, look up, statistics, close one,
 * free. */
static void scenario_manager(void) {
    dbpool__mock_reset();
    dbpool_manager *m = NULL;
    int rc = dbpool_manager_new(&m);
    if (rc != DBPOOL_OK) {
        assert_int_equal(rc, DBPOOL_ENOMEM);
        assert_null(m);
        disarm();
        return;
    }
    dbpool_options o;
    base_options(&o, 1);
    dbpool_error e;
    const char *names[] = {"first", "second", "third"};
    bool open[3] = {false, false, false};
    for (int i = 0; i < 3; i++) {
        rc = dbpool_manager_open(m, names[i], "mock:", &o, &e);
        EXPECT(rc, &e, "dbpool_manager_open", ENOMEM_ONLY);
        open[i] = rc == DBPOOL_OK;
    }
    for (int i = 0; i < 3; i++)
        assert_true((dbpool_manager_get(m, names[i]) != NULL) == open[i]);
    char buf[65536];
    int n = dbpool_manager_stats_json(m, buf, sizeof buf);
    if (n < 0)
        assert_int_equal(n, DBPOOL_ENOMEM);
    n = dbpool_manager_stats_prometheus(m, buf, sizeof buf);
    if (n < 0) {
        assert_int_equal(n, DBPOOL_ENOMEM);
        assert_string_equal(buf, ""); /* never a cut text */
    }
    dbpool_stats st;
    rc = dbpool_manager_pool_stats(m, names[0], &st);
    assert_int_equal(rc, open[0] ? DBPOOL_OK : DBPOOL_ENOTFOUND);
    if (open[1])
        assert_int_equal(dbpool_manager_close_pool(m, "second"), DBPOOL_OK);
    disarm();
    for (int i = 0; i < 3; i += 2)
        if (open[i])
            check_usable(dbpool_manager_get(m, names[i]));
    /* A name whose open failed can be opened now. */
    if (!open[0])
        assert_int_equal(dbpool_manager_open(m, names[0], "mock:", &o, &e), DBPOOL_OK);
    assert_int_equal(dbpool_manager_count(m), 1 + (open[2] ? 1 : 0));
    dbpool_manager_free(m);
    check_mock_clean();
}

/* A server backend, when its URL is set (skipped otherwise); in a build
 * with neither server backend, none of this is used. */
#if defined(DBPOOL_HAVE_PG) || defined(DBPOOL_HAVE_MYSQL)
static const char *server_url, *server_session_sql;

static void scenario_server(void) {
    dbpool_options o;
    base_options(&o, 1);
    o.connect_timeout_ms = 5000;
    pool_round(server_url, &o, server_session_sql);
}

/* More distinct statements than a connection keeps prepared: the oldest
 * are retired and deallocated. */
static void scenario_server_statements(void) {
    dbpool *p = NULL;
    dbpool_options o;
    base_options(&o, 1);
    dbpool_error e;
    int rc = dbpool_open(&p, server_url, &o, &e);
    EXPECT(rc, &e, "dbpool_open", ENOMEM_ONLY);
    if (rc != DBPOOL_OK) {
        disarm();
        return;
    }
    dbpool_conn *c = NULL;
    rc = dbpool_acquire(p, 2000, &c, &e);
    EXPECT(rc, &e, "dbpool_acquire", ENOMEM_ONLY);
    for (int i = 0; rc == DBPOOL_OK && i < 34; i++) { /* a connection keeps 32 (16 on MySQL) */
        char sql[64];
        snprintf(sql, sizeof sql, "SELECT ? + %d", i);
        dbpool_param one = dbpool_param_int64(i);
        for (int k = 0; k < 2; k++) {
            dbpool_result *r = NULL;
            int q = dbpool_query(c, sql, &one, 1, &r, &e);
            EXPECT(q, &e, "dbpool_query", ENOMEM_ONLY);
            if (q == DBPOOL_OK) {
                while (dbpool_result_next(r, &e) == 1)
                    assert_int_equal(dbpool_result_int64(r, 0), 2 * i);
                dbpool_result_free(r);
            }
        }
    }
    if (rc == DBPOOL_OK)
        assert_int_equal(dbpool_release(c), DBPOOL_OK);
    disarm();
    check_usable(p);
    if (strcmp(dbpool_backend(p), "postgresql") == 0) {
        /* The next lease finds no statement of the last one's but the 32
         * a connection keeps (pg_stmt_cache.c): one retired and not
         * deallocated would stay on the server for the session's life. */
        c = dbt_acquire(p);
        dbpool_result *r = dbt_query_ok(c, "SELECT count(*) FROM pg_prepared_statements", NULL, 0);
        assert_int_equal(dbt_next_ok(r), 1);
        int64_t kept = dbpool_result_int64(r, 0);
        dbpool_result_free(r);
        assert_int_equal(dbpool_release(c), DBPOOL_OK);
        if (kept > 32)
            fail_msg("%s: call %ld failing: %lld prepared statements left on the server", current_scenario,
                     current_n, (long long)kept);
    }
    assert_int_equal(dbpool_close(p), 0);
}

static void server_test(const char *env, const char *name, const char *session_sql) {
    server_session_sql = session_sql;
    server_url = getenv(env);
    if (!server_url || !*server_url) {
        if (getenv("DBPOOL_TEST_REQUIRE_SERVERS") && strcmp(getenv("DBPOOL_TEST_REQUIRE_SERVERS"), "1") == 0)
            fail_msg("%s is not set (DBPOOL_TEST_REQUIRE_SERVERS=1)", env);
        skip();
    }
    if (UNDER_TSAN)
        skip(); /* the pool's logic is the mock's, run above; the drivers hold no shared state */
    secrets_in_play = true;
    assert_true(run_passes(name, scenario_server, SERVER) > 0);
    char more[128];
    snprintf(more, sizeof more, "%s, many statements", name);
    assert_true(run_passes(more, scenario_server_statements, HEAVY) > 0);
    secrets_in_play = false;
}
#endif

#ifdef DBPOOL_HAVE_PG
/* sslrootcert given relative to the working directory: dbpool_open makes
 * it absolute, so that a connection opened after a chdir() reads the
 * same file (test_pg_tls). Out of memory for that copy must fail the open,
 * not leave a path that breaks at the first chdir. */
static const char *pg_ca;

static void scenario_pg_relative_ca(void) {
    char saved[4096], dir[4096], url[8192];
    assert_non_null(__real_getcwd(saved, sizeof saved)); /* not counted */
    const char *slash = strrchr(pg_ca, '/');
    snprintf(dir, sizeof dir, "%.*s", (int)(slash - pg_ca), pg_ca);
    const char *base = getenv("DBPOOL_TEST_PG_URL");
    snprintf(url, sizeof url, "%s%ssslmode=verify-full&sslrootcert=%s", base, strchr(base, '?') ? "&" : "?",
             slash + 1);
    assert_int_equal(chdir(dir), 0);
    dbpool_options o;
    base_options(&o, 0);
    o.lazy_connect = true;
    dbpool *p = NULL;
    dbpool_error e;
    int rc = dbpool_open(&p, url, &o, &e);
    disarm();
    assert_int_equal(chdir("/"), 0);
    if (rc == DBPOOL_OK) {
        dbpool_conn *c = NULL;
        rc = dbpool_acquire(p, 5000, &c, &e);
        if (rc != DBPOOL_OK)
            fail_msg("%s: call %ld failing: opened, but after chdir: %s", current_scenario, current_n,
                     e.message);
        dbpool_release(c);
        assert_int_equal(dbpool_close(p), 0);
    }
    assert_int_equal(chdir(saved), 0);
    /* (withheld: the redactor, out of memory too, kept nothing of it) */
    if (rc == DBPOOL_EINVAL && !strstr(e.message, "working directory") && !strstr(e.message, "withheld"))
        fail_msg("%s: call %ld failing: %s", current_scenario, current_n, e.message);
    EXPECT(rc, &e, "dbpool_open", ENOMEM_OR_CWD);
}

/* The password is listed for redaction before libpq parses the URL, and
 * libpq quotes a bad escape in it: a copy that could not be made must not
 * let the password through (no server needed: the URL fails to parse). */
static void scenario_pg_secret(void) {
    dbpool_options o;
    base_options(&o, 0);
    o.lazy_connect = true;
    dbpool *p = NULL;
    dbpool_error e;
    int rc = dbpool_open(&p, "postgresql://u:Pw%zzSecret@127.0.0.1:1/db", &o, &e);
    disarm();
    assert_int_not_equal(rc, DBPOOL_OK);
    if (strstr(e.message, "Secret"))
        fail_msg("%s: call %ld failing: the password is in the error: %s", current_scenario, current_n,
                 e.message);
    static const int codes[] = {DBPOOL_EINVAL, DBPOOL_ENOMEM, 0};
    EXPECT(rc, &e, "dbpool_open", codes);
}
#endif

/* ---------------------------------------------------------------------- */

static void test_open_mock(void **state) {
    (void)state;
    assert_true(run_scenario("mock pool", scenario_mock) > 0);
}
static void test_open_sqlite_memory(void **state) {
    (void)state;
    assert_true(run_scenario("sqlite::memory: pool", scenario_sqlite_memory) > 0);
}
static void test_open_sqlite_file(void **state) {
    (void)state;
    assert_true(run_scenario("sqlite file pool", scenario_sqlite_file) > 0);
}
static void test_sqlite_relative(void **state) {
    (void)state;
    assert_true(run_scenario("sqlite relative path", scenario_sqlite_relative) > 0);
}
static void test_connectors(void **state) {
    (void)state;
    assert_true(run_scenario("connector threads", scenario_connectors) > 0);
}
static void test_leak_trace(void **state) {
    (void)state;
    assert_true(run_scenario("leak traces", scenario_leak_trace) > 0);
}
static void test_leak_report(void **state) {
    (void)state;
    assert_true(run_scenario("leak report and reclaim", scenario_leak_report) > 0);
}
static void test_pool_threads(void **state) {
    (void)state;
    assert_true(run_scenario("maintenance and keepalive", scenario_threads) > 0);
}
static void test_pg_secret(void **state) {
    (void)state;
#ifdef DBPOOL_HAVE_PG
    secrets_in_play = true;
    assert_true(run_scenario("postgresql URL with a password", scenario_pg_secret) > 0);
    secrets_in_play = false;
#else
    skip();
#endif
}
static void test_pg_relative_ca(void **state) {
    (void)state;
#ifdef DBPOOL_HAVE_PG
    pg_ca = getenv("DBPOOL_TEST_PG_SSL_CA");
    if (!getenv("DBPOOL_TEST_PG_URL") || !pg_ca || !strrchr(pg_ca, '/'))
        skip(); /* the server was started without DBPOOL_TEST_TLS=1 */
    secrets_in_play = true;
    assert_true(run_passes("postgresql relative sslrootcert", scenario_pg_relative_ca, SERVER) > 0);
    secrets_in_play = false;
#else
    skip();
#endif
}
/* A result Connector/C ran out of memory reading leaves the rest of it on
 * the socket: that connection is done for. The caller gets DBPOOL_ENOMEM,
 * and the next lease a working connection, not the leftover rows. */
static void test_mysql_store_result_oom(void **state) {
    (void)state;
#ifdef DBPOOL_HAVE_MYSQL
    const char *url = getenv("DBPOOL_TEST_MYSQL_URL");
    if (!url || !*url) {
        if (getenv("DBPOOL_TEST_REQUIRE_SERVERS") && strcmp(getenv("DBPOOL_TEST_REQUIRE_SERVERS"), "1") == 0)
            fail_msg("DBPOOL_TEST_MYSQL_URL is not set (DBPOOL_TEST_REQUIRE_SERVERS=1)");
        skip();
    }
    dbpool_options o;
    base_options(&o, 1);
    o.max_size = 1;
    dbpool *p = NULL;
    dbpool_error e;
    assert_int_equal(dbpool_open(&p, url, &o, &e), DBPOOL_OK);
    dbpool_conn *c = dbt_acquire(p);
    dbpool_result *r = NULL;
    atomic_store(&store_result_oom, true);
    int rc = dbpool_query(c, "SELECT 1 UNION ALL SELECT 2", NULL, 0, &r, &e);
    atomic_store(&store_result_oom, false);
    fprintf(stderr, "mysql_store_result out of memory: %s: %s\n", dbpool_errname(rc), e.message);
    assert_int_equal(rc, DBPOOL_ENOMEM);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    c = dbt_acquire(p);
    rc = dbpool_query(c, "SELECT 3", NULL, 0, &r, &e);
    if (rc != DBPOOL_OK)
        fail_msg("the next lease got the connection with the unread rows: %s: %s", dbpool_errname(rc),
                 e.message);
    assert_int_equal(dbt_next_ok(r), 1);
    assert_int_equal(dbpool_result_int64(r, 0), 3);
    dbpool_result_free(r);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_close(p), 0);
#else
    skip();
#endif
}

static void test_pg(void **state) {
    (void)state;
#ifdef DBPOOL_HAVE_PG
    server_test("DBPOOL_TEST_PG_URL", "postgresql pool", "SET application_name = 'alloc_failure'");
#else
    skip();
#endif
}
static void test_mysql(void **state) {
    (void)state;
#ifdef DBPOOL_HAVE_MYSQL
    server_test("DBPOOL_TEST_MYSQL_URL", "mysql pool", "SET @alloc_failure = 1");
#else
    skip();
#endif
}
static void test_manager(void **state) {
    (void)state;
    assert_true(run_scenario("manager", scenario_manager) > 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fork_watch),
        cmocka_unit_test(test_open_mock),
        cmocka_unit_test(test_open_sqlite_memory),
        cmocka_unit_test(test_open_sqlite_file),
        cmocka_unit_test(test_sqlite_relative),
        cmocka_unit_test(test_connectors),
        cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_leak_trace),
        cmocka_unit_test(test_pool_threads),
        cmocka_unit_test(test_manager),
        cmocka_unit_test(test_pg_secret),
        cmocka_unit_test(test_pg),
        cmocka_unit_test(test_mysql),
        cmocka_unit_test(test_pg_relative_ca),
        cmocka_unit_test(test_mysql_store_result_oom),
        cmocka_unit_test(test_leak_report),
        cmocka_unit_test(test_connector_no_slot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
