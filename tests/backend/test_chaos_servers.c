/*
 * test_chaos_servers.c — many faults at once against a real PostgreSQL or
 * MariaDB server, through tests/support/tcp_proxy, checked by invariants
 * (the mock backend's version is tests/test_chaos_mock.c).
 *
 * Worker threads acquire (random timeouts), try_acquire, run statements
 * (a query, a transaction left open, a session setting left changed) and
 * release or discard, for a bounded time, while a chaos thread switches
 * the network between pass, refuse, reset, silent (a blackhole), deaf,
 * trickle and delay, kills the test user's sessions on the server, resizes,
 * suspends, resumes and shrinks. A sampler checks dbpool_get_stats all the
 * while. Checked:
 *  - every acquire returns by its deadline plus one validation plus a
 *    margin (try_acquire and a timeout of 0: connect_timeout_ms plus one
 *    validation plus the margin); only documented codes, with a message
 *    that holds no password;
 *  - no lease is held by two threads at once; none starts inside another
 *    caller's transaction or with its session setting;
 *  - at every sample: total == idle + in_use + connecting, nothing below 0,
 *    total within the largest cap set, counters never go back;
 *  - once the network is back: min_size idle by itself, a plain acquire
 *    works; close with leases out and callers waiting returns the leases'
 *    number, the waiters get DBPOOL_ECLOSED, the leases still work and
 *    their release leaves no session on the server, no thread and no
 *    descriptor.
 *
 * PostgreSQL and MariaDB only. DBPOOL_CHAOS_SEED=N replays a run (the seed
 * is printed), DBPOOL_CHAOS_MS sets the chaos time (default 3000),
 * DBPOOL_CHAOS_MARGIN_MS the margin on deadlines (default 700).
 */
#include "backend_common.h"
#include "chaos.h"
#include "servers.h"
#include "tcp_proxy.h"

#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#define WORKERS 4
#define MIN_SIZE 2
#define MAX_SIZE 5
#define MAX_CAP 6

static const int64_t ACQUIRE_MS = 400, CONNECT_MS = 1000, VALIDATION_MS = 300;

static struct {
    dbpool *p;
    dbt_proxy *px;
    uint64_t seed;
    int64_t margin_ms;
    atomic_bool stop;
    atomic_int max_cap_seen;
    pthread_mutex_t held_lock;
    dbpool_conn *held[WORKERS];
    atomic_llong worst_overrun_ms;
    atomic_long acquires, ok, failed;
} X;

static void note_overrun(int64_t over) {
    long long cur = atomic_load(&X.worst_overrun_ms);
    while (over > cur && !atomic_compare_exchange_weak(&X.worst_overrun_ms, &cur, over))
        ;
}

static bool code_expected(int rc) {
    return rc == DBPOOL_OK || rc == DBPOOL_ETIMEDOUT || rc == DBPOOL_EBUSY || rc == DBPOOL_EUNAVAILABLE ||
           rc == DBPOOL_ECONNECT || rc == DBPOOL_EBROKEN;
}

/* 1 yes, 0 no, -1 could not tell (the network). */
static int ask_int(dbpool_conn *c, const char *sql) {
    dbpool_result *r = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    if (dbpool_query(c, sql, NULL, 0, &r, &e) != DBPOOL_OK)
        return -1;
    int v = -1;
    if (dbpool_result_next(r, &e) == 1)
        v = (int)dbpool_result_int64(r, 0);
    dbpool_result_free(r);
    return v;
}

static const char *in_tx_sql(void) {
    return bt_is("pg") ? "SELECT CASE WHEN now() = statement_timestamp() THEN 0 ELSE 1 END"
                       : "SELECT @@in_transaction";
}
static const char *dirty_sql(void) {
    return bt_is("pg") ? "SET application_name TO 'chaos_dirty'" : "SET @chaos_dirty := 1";
}
static const char *is_dirty_sql(void) {
    return bt_is("pg")
               ? "SELECT CASE WHEN current_setting('application_name') = 'chaos_dirty' THEN 1 ELSE 0 END"
               : "SELECT COALESCE(@chaos_dirty, 0)";
}

static dbpool_conn *chaos_acquire(int who, uint64_t *rs) {
    dbpool_conn *c = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int kind = dbt_rnd(rs, 10);
    int64_t timeout = 0, bound;
    int rc;
    int64_t t0 = dbt_now_ms();
    if (kind == 0) {
        rc = dbpool_try_acquire(X.p, &c, &e);
        bound = CONNECT_MS + VALIDATION_MS;
    } else {
        timeout = kind == 1 ? 0 : kind == 2 ? -1 : 50 + dbt_rnd(rs, 600);
        rc = dbpool_acquire(X.p, timeout, &c, &e);
        int64_t t = timeout < 0 ? ACQUIRE_MS : timeout;
        bound = (t == 0 ? CONNECT_MS : t) + VALIDATION_MS;
        if (t > 0)
            note_overrun(dbt_now_ms() - t0 - t);
    }
    int64_t took = dbt_now_ms() - t0;
    atomic_fetch_add(&X.acquires, 1);
    if (took > bound + X.margin_ms)
        dbt_chaos_fail("worker %d: %s(%lld ms) took %lld ms (bound %lld + margin %lld): %s: %s", who,
                       kind == 0 ? "try_acquire" : "acquire", (long long)timeout, (long long)took,
                       (long long)bound, (long long)X.margin_ms, dbpool_errname(rc), e.message);
    if (!code_expected(rc))
        dbt_chaos_fail("worker %d: acquire returned %s: %s", who, dbpool_errname(rc), e.message);
    if (rc != DBPOOL_OK && e.message[0] == '\0')
        dbt_chaos_fail("worker %d: acquire returned %s without a message", who, dbpool_errname(rc));
    if (dbt_has_secret(e.message, NULL))
        dbt_chaos_fail("worker %d: an error message holds a password (%s)", who, dbpool_errname(rc));
    if (rc != DBPOOL_OK) {
        atomic_fetch_add(&X.failed, 1);
        return NULL;
    }
    atomic_fetch_add(&X.ok, 1);
    pthread_mutex_lock(&X.held_lock);
    for (int i = 0; i < WORKERS; i++)
        if (X.held[i] == c)
            dbt_chaos_fail("worker %d got a lease that worker %d holds", who, i);
    X.held[who] = c;
    pthread_mutex_unlock(&X.held_lock);
    if (ask_int(c, in_tx_sql()) == 1)
        dbt_chaos_fail("worker %d got a connection inside a transaction", who);
    if (ask_int(c, is_dirty_sql()) == 1)
        dbt_chaos_fail("worker %d got a connection with the last caller's session setting", who);
    return c;
}

static void chaos_give_back(int who, dbpool_conn *c, bool discard) {
    pthread_mutex_lock(&X.held_lock);
    X.held[who] = NULL;
    pthread_mutex_unlock(&X.held_lock);
    int64_t t0 = dbt_now_ms();
    int rc = discard ? dbpool_discard(c) : dbpool_release(c);
    int64_t took = dbt_now_ms() - t0;
    if (rc != DBPOOL_OK)
        dbt_chaos_fail("worker %d: %s returned %s", who, discard ? "discard" : "release", dbpool_errname(rc));
    /* The reset and init_sql after it share validation_timeout_ms. */
    if (took > VALIDATION_MS + X.margin_ms)
        dbt_chaos_fail("worker %d: %s took %lld ms (validation_timeout_ms %lld + margin %lld)", who,
                       discard ? "discard" : "release", (long long)took, (long long)VALIDATION_MS,
                       (long long)X.margin_ms);
}

static void *worker_main(void *arg) {
    int who = (int)(intptr_t)arg;
    uint64_t rs = X.seed * 0x9E3779B97F4A7C15ULL + (uint64_t)who * 7919 + 1;
    while (!atomic_load(&X.stop)) {
        dbpool_conn *c = chaos_acquire(who, &rs);
        if (!c) {
            dbt_sleep_ms(dbt_rnd(&rs, 10));
            continue;
        }
        dbpool_error e;
        memset(&e, 0, sizeof e);
        switch (dbt_rnd(&rs, 4)) {
        case 0:
            (void)dbpool_exec(c, "BEGIN", NULL, 0, NULL, &e);
            (void)ask_int(c, "SELECT 1");
            break;
        case 1:
            (void)dbpool_exec(c, dirty_sql(), NULL, 0, NULL, &e);
            break;
        default:
            (void)ask_int(c, "SELECT 1");
            break;
        }
        if (dbt_rnd(&rs, 4) == 0)
            dbt_sleep_ms(dbt_rnd(&rs, 40));
        chaos_give_back(who, c, dbt_rnd(&rs, 8) == 0);
    }
    return NULL;
}

static void *chaos_main(void *arg) {
    (void)arg;
    uint64_t rs = X.seed ^ 0xC0FFEE;
    bool suspended = false;
    while (!atomic_load(&X.stop)) {
        dbt_sleep_ms(10 + dbt_rnd(&rs, 120));
        dbpool_error e;
        memset(&e, 0, sizeof e);
        switch (dbt_rnd(&rs, 16)) {
        case 0:
            dbt_proxy_set_mode(X.px, DBT_PROXY_REFUSE, 0);
            break;
        case 1:
            dbt_proxy_set_mode(X.px, DBT_PROXY_RESET, 0);
            break;
        case 2:
            dbt_proxy_set_mode(X.px, DBT_PROXY_SILENT, 0);
            break;
        case 3:
            dbt_proxy_set_mode(X.px, DBT_PROXY_DEAF, 0);
            break;
        case 4:
            dbt_proxy_set_mode(X.px, DBT_PROXY_TRICKLE, 5 + dbt_rnd(&rs, 50));
            break;
        case 5:
            dbt_proxy_set_mode(X.px, DBT_PROXY_DELAY, dbt_rnd(&rs, (int)CONNECT_MS));
            break;
        case 6: {
            char msg[256];
            if (dbt_rnd(&rs, 3) == 0 && dbt_kill_user_sessions(bt_backend, msg, sizeof msg) < 0)
                dbt_chaos_fail("killing the test user's sessions: %s", msg);
            break;
        }
        case 7: {
            int mn = dbt_rnd(&rs, 3), mx = mn + 1 + dbt_rnd(&rs, MAX_CAP - mn);
            if (mx > MAX_CAP)
                mx = MAX_CAP;
            if (mx > atomic_load(&X.max_cap_seen))
                atomic_store(&X.max_cap_seen, mx);
            int rc = dbpool_resize(X.p, mn, mx, &e);
            if (rc != DBPOOL_OK)
                dbt_chaos_fail("resize(%d, %d): %s: %s", mn, mx, dbpool_errname(rc), e.message);
            break;
        }
        case 8:
            if (!suspended) {
                dbpool_suspend(X.p);
                suspended = true;
            }
            break;
        case 9: {
            int rc = dbpool_shrink(X.p, dbt_rnd(&rs, 3));
            if (rc < 0)
                dbt_chaos_fail("shrink: %s", dbpool_errname(rc));
            break;
        }
        case 10:
            dbpool_breaker_reset(X.p);
            break;
        default:
            if (suspended) {
                dbpool_resume(X.p);
                suspended = false;
            }
            dbt_proxy_set_mode(X.px, DBT_PROXY_PASS, 0);
            break;
        }
    }
    if (suspended)
        dbpool_resume(X.p);
    return NULL;
}

static void *sampler_main(void *arg) {
    (void)arg;
    uint64_t prev[8] = {0};
    while (!atomic_load(&X.stop)) {
        dbpool_stats s;
        dbpool_get_stats(X.p, &s);
        if (s.total != s.idle + s.in_use + s.connecting)
            dbt_chaos_fail("total %d != idle %d + in_use %d + connecting %d", s.total, s.idle, s.in_use,
                           s.connecting);
        if (s.idle < 0 || s.in_use < 0 || s.connecting < 0 || s.waiting < 0)
            dbt_chaos_fail("a count below 0: idle %d in_use %d connecting %d waiting %d", s.idle, s.in_use,
                           s.connecting, s.waiting);
        if (s.total > atomic_load(&X.max_cap_seen))
            dbt_chaos_fail("total %d above every cap set (%d)", s.total, atomic_load(&X.max_cap_seen));
        if (s.created - s.destroyed < (uint64_t)(s.idle + s.in_use))
            dbt_chaos_fail("created %llu - destroyed %llu below idle %d + in_use %d",
                           (unsigned long long)s.created, (unsigned long long)s.destroyed, s.idle, s.in_use);
        uint64_t v[8] = {s.created,  s.reused,         s.destroyed,           s.acquired,
                         s.timeouts, s.connect_errors, s.validation_failures, s.rollbacks};
        for (int i = 0; i < 8; i++) {
            if (v[i] < prev[i])
                dbt_chaos_fail("counter %d went back from %llu to %llu", i, (unsigned long long)prev[i],
                               (unsigned long long)v[i]);
            prev[i] = v[i];
        }
        dbt_sleep_ms(2);
    }
    return NULL;
}

typedef struct waiter_arg {
    dbpool *p;
    int rc;
    dbpool_conn *lease;
} waiter_arg;

static void *waiter_main(void *arg) {
    waiter_arg *a = arg;
    a->rc = dbpool_acquire(a->p, 20000, &a->lease, NULL);
    return NULL;
}

static int user_sessions(void) {
    char msg[256];
    return dbt_count_user_sessions(bt_backend, msg, sizeof msg);
}

static void test_chaos_servers(void **state) {
    (void)state;
    X.seed = dbt_chaos_seed();
    int64_t run_ms = dbt_env_ms("DBPOOL_CHAOS_MS", 3000);
    X.margin_ms = dbt_env_ms("DBPOOL_CHAOS_MARGIN_MS", 700);
    fprintf(stderr, "[%s] chaos seed %llu (replay with DBPOOL_CHAOS_SEED=%llu), %lld ms\n", bt_backend,
            (unsigned long long)X.seed, (unsigned long long)X.seed, (long long)run_ms);
    pthread_mutex_init(&X.held_lock, NULL);

    /* Settled before the baseline: the client libraries' one-time set-up,
     * and no session of the test user left by an earlier test. */
    int64_t until = dbt_now_ms() + 5000;
    while (user_sessions() > 0 && dbt_now_ms() < until)
        dbt_sleep_ms(20);
    dbt_settle_runtime_threads();
    int tasks0 = dbt_count_dir("/proc/self/task"), fds0 = dbt_count_dir("/proc/self/fd");

    X.px = dbt_proxy_start("127.0.0.1", dbt_url_port(bt_backend));
    assert_non_null(X.px);
    uint64_t rs = X.seed;
    dbpool_options o;
    dbt_options(&o, MIN_SIZE, MAX_SIZE);
    o.acquire_timeout_ms = ACQUIRE_MS;
    o.connect_timeout_ms = CONNECT_MS;
    o.validation_timeout_ms = VALIDATION_MS;
    o.max_retries = 1;
    o.backoff_base_ms = 10;
    o.backoff_max_ms = 50;
    o.maintenance_interval_ms = 50;
    o.idle_timeout_ms = 1000;
    o.max_lifetime_ms = 1000 + dbt_rnd(&rs, 2000);
    o.breaker_failures = 5;
    o.breaker_cooldown_ms = 150;
    o.validation = dbt_rnd(&rs, 2) ? DBPOOL_VALIDATE_ALWAYS : DBPOOL_VALIDATE_IF_IDLE;
    o.validation_window_ms = 50;
    o.keepalive_ms = dbt_rnd(&rs, 2) ? 100 : 0;
    o.suspend_fails_fast = dbt_rnd(&rs, 2);
    dbpool_error e;
    memset(&e, 0, sizeof e);
    BT_OK(dbpool_open(&X.p, dbt_url_via_port(bt_backend, dbt_proxy_port(X.px)), &o, &e), &e,
          "dbpool_open via the proxy");
    atomic_store(&X.max_cap_seen, MAX_SIZE);

    pthread_t ws[WORKERS], chaos_t, sampler_t;
    for (int i = 0; i < WORKERS; i++)
        assert_int_equal(pthread_create(&ws[i], NULL, worker_main, (void *)(intptr_t)i), 0);
    assert_int_equal(pthread_create(&chaos_t, NULL, chaos_main, NULL), 0);
    assert_int_equal(pthread_create(&sampler_t, NULL, sampler_main, NULL), 0);
    dbt_sleep_ms(run_ms);
    atomic_store(&X.stop, true);
    pthread_join(chaos_t, NULL);
    /* The network comes back before the workers are joined: a statement
     * behind a silent network waits for it (nothing bounds a statement
     * but the server's statement timeout, which it cannot reach). */
    dbt_proxy_set_mode(X.px, DBT_PROXY_PASS, 0);
    for (int i = 0; i < WORKERS; i++)
        pthread_join(ws[i], NULL);
    pthread_join(sampler_t, NULL);

    /* The pool must recover by itself. */
    dbpool_resume(X.p);
    BT_OK(dbpool_resize(X.p, MIN_SIZE, MAX_SIZE, &e), &e, "resize back");
    dbpool_breaker_reset(X.p);
    dbpool_stats s;
    until = dbt_now_ms() + 10000;
    for (;;) {
        dbpool_get_stats(X.p, &s);
        if (s.idle >= MIN_SIZE && s.connecting == 0)
            break;
        if (dbt_now_ms() > until) {
            dbt_chaos_fail(
                "no recovery to min_size %d within 10 s: idle %d in_use %d connecting %d breaker %s",
                MIN_SIZE, s.idle, s.in_use, s.connecting, dbpool_breaker_state_name(s.breaker));
            break;
        }
        dbt_sleep_ms(10);
    }
    assert_int_equal(s.in_use, 0);
    assert_int_equal(s.waiting, 0);
    dbpool_conn *c = NULL;
    int rc = dbpool_acquire(X.p, -1, &c, &e);
    if (rc != DBPOOL_OK) {
        dbt_scrub_secrets(e.message, sizeof e.message, NULL);
        dbt_chaos_fail("a plain acquire after the chaos: %s: %s", dbpool_errname(rc), e.message);
    } else {
        if (ask_int(c, "SELECT 1") != 1)
            dbt_chaos_fail("SELECT 1 failed on a lease after the chaos");
        dbpool_release(c);
    }
    fprintf(stderr,
            "[%s] %ld acquires: %ld ok, %ld failed; worst overrun of a deadline %lld ms; created %llu "
            "destroyed %llu rollbacks %llu validation failures %llu connect errors %llu breaker opens %llu\n",
            bt_backend, atomic_load(&X.acquires), atomic_load(&X.ok), atomic_load(&X.failed),
            (long long)atomic_load(&X.worst_overrun_ms), (unsigned long long)s.created,
            (unsigned long long)s.destroyed, (unsigned long long)s.rollbacks,
            (unsigned long long)s.validation_failures, (unsigned long long)s.connect_errors,
            (unsigned long long)s.breaker_opens);

    /* Close with two leases out (one in a transaction) and two callers
     * waiting. */
    BT_OK(dbpool_resize(X.p, 1, 2, &e), &e, "resize to 2");
    dbpool_conn *held[2];
    for (int i = 0; i < 2; i++)
        BT_OK(dbpool_acquire(X.p, 5000, &held[i], &e), &e, "lease before close");
    bt_exec(held[0], "BEGIN");
    waiter_arg wa[2];
    pthread_t wt[2];
    for (int i = 0; i < 2; i++) {
        wa[i] = (waiter_arg){.p = X.p, .rc = 1};
        assert_int_equal(pthread_create(&wt[i], NULL, waiter_main, &wa[i]), 0);
    }
    dbt_wait_for_waiters(X.p, 2, 5000);
    int out = dbpool_close(X.p);
    for (int i = 0; i < 2; i++) {
        pthread_join(wt[i], NULL);
        if (wa[i].rc != DBPOOL_ECLOSED)
            dbt_chaos_fail("a caller waiting at close got %s", dbpool_errname(wa[i].rc));
        if (wa[i].lease)
            dbpool_release(wa[i].lease);
    }
    if (out != 2)
        dbt_chaos_fail("close with 2 leases out returned %d", out);
    for (int i = 0; i < 2; i++) {
        if (ask_int(held[i], "SELECT 1") != 1)
            dbt_chaos_fail("lease %d unusable after close", i);
        if (dbpool_release(held[i]) != DBPOOL_OK)
            dbt_chaos_fail("release of lease %d after close failed", i);
    }
    dbt_proxy_destroy(X.px);
    X.px = NULL;
    int sessions = -1;
    until = dbt_now_ms() + 5000;
    while ((sessions = user_sessions()) != 0 && dbt_now_ms() < until)
        dbt_sleep_ms(20);
    if (sessions != 0)
        dbt_chaos_fail("%d sessions of the test user left on the server after close", sessions);
    int tasks1 = dbt_count_dir("/proc/self/task"), fds1 = dbt_count_dir("/proc/self/fd");
    if (tasks1 != tasks0)
        dbt_chaos_fail("%d threads before open, %d after close", tasks0, tasks1);
    if (fds1 != fds0)
        dbt_chaos_fail("%d descriptors before open, %d after close", fds0, fds1);
    pthread_mutex_destroy(&X.held_lock);
    char first[1024];
    int failures = dbt_chaos_failures(first, sizeof first);
    if (failures)
        fail_msg("[%s] seed %llu: %d invariant failures; the first: %s", bt_backend,
                 (unsigned long long)X.seed, failures, first);
}

int main(int argc, char **argv) {
    bt_init(argc, argv);
    if (bt_is("sqlite")) {
        fprintf(stderr, "test_chaos_servers: PostgreSQL and MariaDB only (network faults through a proxy)\n");
        return DBT_SKIP;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chaos_servers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
