/* The lease hooks (src/hooks.c): before_acquire is shown every hand-out,
 * the thread cache's included, and a connection it refuses is closed
 * (reason before_acquire) while the caller gets another; one that refuses
 * everything ends the acquire at its deadline after a bounded number of
 * calls. after_release is shown every connection going back to the pool,
 * after its reset, and one it refuses is closed (reason after_release).
 * An acquire or a close of the pool from inside its hook is refused. Mock
 * backend, and one SQLite case. */
#include "driver_mock.h"
#include "testsupport.h"

#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

/* What a hook saw and what it is told to do. */
typedef struct hook_state {
    atomic_int calls;
    atomic_int refusals;
    _Atomic(void *) last_native;
    int refuse_id;               /* refuse the connection with this mock id (0: none) */
    bool refuse_all;             /* refuse every connection */
    atomic_int refuse_mod;       /* refuse every n-th call (0: none) */
    atomic_bool saw_transaction; /* after_release: the caller's transaction was still open */
    atomic_int sleep_ms;         /* take this long before answering */
    dbpool *pool;                /* for the misuse checks */
    bool try_misuse;
    int misuse_acquire_rc, misuse_close_rc;
} hook_state;

static hook_state before, after;

static int setup(void **state) {
    (void)state;
    dbpool__mock_reset();
    memset(&before, 0, sizeof before);
    memset(&after, 0, sizeof after);
    return 0;
}

static int hook(void *native, void *user) {
    hook_state *h = user;
    int n = atomic_fetch_add(&h->calls, 1) + 1;
    atomic_store(&h->last_native, native);
    if (h == &after && dbpool__mock_in_transaction(native))
        atomic_store(&h->saw_transaction, true);
    if (h->try_misuse) {
        dbpool_conn *c = NULL;
        h->misuse_acquire_rc = dbpool_acquire(h->pool, 0, &c, NULL);
        if (c)
            dbpool_release(c);
        h->misuse_close_rc = dbpool_close(h->pool);
    }
    int ms = atomic_load(&h->sleep_ms);
    if (ms > 0)
        dbt_sleep_ms(ms);
    int mod = atomic_load(&h->refuse_mod);
    bool refuse = h->refuse_all || (h->refuse_id != 0 && dbpool__mock_conn_id(native) == h->refuse_id) ||
                  (mod > 0 && n % mod == 0);
    if (refuse)
        atomic_fetch_add(&h->refusals, 1);
    return refuse ? 1 : 0;
}

static dbpool *open_pool(int min, int max, bool cache, bool with_before, bool with_after) {
    dbpool_options o;
    dbt_mock_options(&o, min, max, cache);
    if (with_before) {
        o.before_acquire = hook;
        o.before_acquire_user = &before;
    }
    if (with_after) {
        o.after_release = hook;
        o.after_release_user = &after;
    }
    return dbt_open_mock(&o);
}

/* Once per hand-out, with the lease's native handle: a new connection, the
 * thread cache's (taken back without the lock), an idle one, and
 * try_acquire's. The statistics count each acquire once. */
static void test_before_acquire_once_per_handout(void **state) {
    (void)state;
    dbpool *p = open_pool(0, 2, true, true, false);
    for (int i = 0; i < 5; i++) {
        dbpool_conn *c;
        assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
        assert_int_equal(atomic_load(&before.calls), i + 1);
        assert_ptr_equal(atomic_load(&before.last_native), dbpool_conn_native(c));
        if (i > 0)
            assert_int_equal(dbt_stats(p).thread_cached, 1); /* the cache's connection, leased again */
        assert_int_equal(dbpool_release(c), DBPOOL_OK);
    }
    dbpool_conn *c;
    assert_int_equal(dbpool_try_acquire(p, &c, NULL), DBPOOL_OK);
    assert_int_equal(atomic_load(&before.calls), 6);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    dbpool_stats s = dbt_stats(p);
    assert_int_equal((int)s.acquired, 6);
    assert_int_equal((int)s.reused, 5);
    assert_int_equal((int)s.created, 1);
    assert_int_equal((int)s.acquire_wait.count, 6);
    assert_int_equal((int)s.destroyed_by[DBPOOL_CLOSE_BEFORE_ACQUIRE], 0);
    dbpool_close(p);

    /* The ordinary path (no thread cache): an idle connection. */
    memset(&before, 0, sizeof before);
    p = open_pool(1, 2, false, true, false);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
        assert_ptr_equal(atomic_load(&before.last_native), dbpool_conn_native(c));
        assert_int_equal(dbpool_release(c), DBPOOL_OK);
    }
    assert_int_equal(atomic_load(&before.calls), 3);
    s = dbt_stats(p);
    assert_int_equal((int)s.acquired, 3);
    assert_int_equal((int)s.acquire_wait.count, 3);
    dbpool_close(p);
}

/* The hook's time is no part of the caller's use: use_time starts when
 * the caller gets the lease, on the ordinary way and the thread cache's.
 * On the ordinary way it is the acquire's wait; a hand-out from the
 * thread cache is a zero wait (docs/configuration.md, before_acquire). */
static void test_before_acquire_time_is_the_wait(void **state) {
    (void)state;
    for (int cache = 0; cache <= 1; cache++) {
        memset(&before, 0, sizeof before);
        dbpool *p = open_pool(1, 1, cache, true, false);
        dbpool_conn *c = dbt_acquire(p);
        assert_int_equal(dbpool_release(c), DBPOOL_OK);
        assert_int_equal(dbt_stats(p).thread_cached,
                         cache); /* the next acquire takes it back from the cache */
        atomic_store(&before.sleep_ms, 300);
        c = dbt_acquire(p);
        assert_int_equal(dbpool_release(c), DBPOOL_OK);
        dbpool_stats s = dbt_stats(p);
        assert_int_equal((int)s.acquired, 2);
        assert_int_equal((int)s.acquire_wait.count, 2);
        assert_int_equal((int)s.use_time.count, 2);
        if ((cache ? s.acquire_wait.max_ms >= 250 : s.acquire_wait.max_ms < 250) || s.use_time.max_ms >= 250)
            fail_msg("thread cache %s, a hook of 300 ms: acquire_wait max %.1f ms, use_time max %.1f ms",
                     cache ? "on" : "off", s.acquire_wait.max_ms, s.use_time.max_ms);
        dbpool_close(p);
    }
}

/* A refused connection is closed with its own reason and the caller gets
 * another: from the idle list, and from the thread cache. */
static void test_before_acquire_refusal_gives_another(void **state) {
    (void)state;
    dbpool *p = open_pool(2, 2, false, true, false);
    before.refuse_id = 1; /* the first warm-up connection, at the head of the idle list or next */
    dbpool_conn *a, *b;
    assert_int_equal(dbpool_acquire(p, 2000, &a, NULL), DBPOOL_OK);
    assert_int_not_equal(dbt_conn_id(a), 1);
    assert_int_equal(dbpool_acquire(p, 2000, &b, NULL), DBPOOL_OK); /* a new one in place of #1 */
    assert_int_not_equal(dbt_conn_id(b), 1);
    dbpool_stats s = dbt_stats(p);
    assert_int_equal((int)s.destroyed_by[DBPOOL_CLOSE_BEFORE_ACQUIRE], 1);
    assert_int_equal((int)s.acquired, 2);
    assert_int_equal(s.total, 2);
    assert_true(dbt_invariant_holds(p));
    char buf[16384];
    assert_true(dbpool_stats_json(p, buf, sizeof buf) < (int)sizeof buf);
    json_error_t je;
    json_t *root = json_loads(buf, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        fail_msg("stats JSON does not parse: %s", je.text);
    json_t *by = json_object_get(root, "destroyed_by");
    assert_int_equal(json_integer_value(json_object_get(by, "before_acquire")), 1);
    assert_true(json_is_integer(json_object_get(by, "after_release")));
    assert_int_equal(json_integer_value(json_object_get(by, "after_release")), 0);
    assert_int_equal(json_integer_value(json_object_get(root, "acquired")), 2);
    json_decref(root);
    assert_true(dbpool_stats_prometheus(p, buf, sizeof buf) < (int)sizeof buf);
    assert_non_null(strstr(buf, "reason=\"before_acquire\"} 1\n"));
    assert_non_null(strstr(buf, "reason=\"after_release\"} 0\n"));
    assert_string_equal(dbpool_close_reason_name(DBPOOL_CLOSE_BEFORE_ACQUIRE), "before_acquire");
    assert_string_equal(dbpool_close_reason_name(DBPOOL_CLOSE_AFTER_RELEASE), "after_release");
    dbpool_release(a);
    dbpool_release(b);
    dbpool_close(p);

    /* The thread cache's connection refused: closed, and another one. */
    dbpool__mock_reset();
    memset(&before, 0, sizeof before);
    p = open_pool(0, 2, true, true, false);
    dbpool_conn *c;
    assert_int_equal(dbpool_acquire(p, 2000, &c, NULL), DBPOOL_OK);
    int first = dbt_conn_id(c);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbt_stats(p).thread_cached, 1);
    before.refuse_id = first;
    assert_int_equal(dbpool_acquire(p, 2000, &c, NULL), DBPOOL_OK);
    assert_int_not_equal(dbt_conn_id(c), first);
    s = dbt_stats(p);
    assert_int_equal((int)s.destroyed_by[DBPOOL_CLOSE_BEFORE_ACQUIRE], 1);
    assert_int_equal((int)s.acquired, 2);
    assert_int_equal(atomic_load(&before.calls), 3);
    assert_true(dbt_invariant_holds(p));
    dbpool_release(c);
    dbpool_close(p);
}

/* A hook that refuses everything: the acquire ends at its deadline with
 * DBPOOL_ETIMEDOUT, after a few calls (backoff after the pool's worth),
 * not a loop of connects until then; a caller who does not wait is
 * answered at once. */
static void test_before_acquire_always_refuses(void **state) {
    (void)state;
    dbpool_options o;
    dbt_mock_options(&o, 2, 2, true);
    o.backoff_base_ms = 20;
    o.backoff_max_ms = 100;
    o.before_acquire = hook;
    o.before_acquire_user = &before;
    before.refuse_all = true;
    dbpool *p = dbt_open_mock(&o);
    dbpool_error e;
    dbpool_conn *c = NULL;
    int64_t t0 = dbt_now_ms();
    int rc = dbpool_acquire(p, 600, &c, &e);
    int64_t took = dbt_now_ms() - t0;
    int calls = atomic_load(&before.calls);
    dbpool__mock_counters k;
    dbpool__mock_get_counters(&k);
    if (rc != DBPOOL_ETIMEDOUT || c || took < 550 || took > 5000 || calls < 3 || calls > 30 ||
        k.connects > 32)
        fail_msg("always refusing: rc %d after %lld ms, %d calls, %ld connects: %s", rc, (long long)took,
                 calls, k.connects, e.message);
    print_message("always refusing: %d calls, %ld connects, DBPOOL_ETIMEDOUT after %lld ms\n", calls,
                  k.connects, (long long)took);
    assert_non_null(strstr(e.message, "before_acquire refused"));
    dbpool_stats s = dbt_stats(p);
    assert_int_equal((int)s.destroyed_by[DBPOOL_CLOSE_BEFORE_ACQUIRE], calls);
    assert_int_equal((int)s.acquired, 0);
    assert_int_equal((int)s.timeouts, 1);
    assert_true(dbt_invariant_holds(p));

    /* Without waiting: the pool's worth and one more, at once. */
    atomic_store(&before.calls, 0);
    t0 = dbt_now_ms();
    assert_int_equal(dbpool_try_acquire(p, &c, &e), DBPOOL_EBUSY);
    assert_true(atomic_load(&before.calls) <= 3);
    assert_int_equal(dbpool_acquire(p, 0, &c, &e), DBPOOL_ETIMEDOUT);
    assert_true(atomic_load(&before.calls) <= 6);
    assert_true(dbt_now_ms() - t0 < 2000);
    assert_non_null(strstr(e.message, "before_acquire refused"));
    assert_true(dbt_invariant_holds(p));
    dbpool_close(p);
}

typedef struct waiter_arg {
    dbpool *p;
    int rc;
    int64_t done_ms;
} waiter_arg;

static void *acquire_long(void *arg) {
    waiter_arg *w = arg;
    dbpool_conn *c = NULL;
    w->rc = dbpool_acquire(w->p, 20000, &c, NULL);
    w->done_ms = dbt_now_ms();
    if (c)
        dbpool_release(c);
    return NULL;
}

/* A close while an acquire backs off between refusals ends it at once with
 * DBPOOL_ECLOSED, not at the end of its backoff. */
static void test_close_during_backoff(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.maintenance_interval_ms = 0;
    o.backoff_base_ms = 5000;
    o.backoff_max_ms = 5000;
    o.before_acquire = hook;
    o.before_acquire_user = &before;
    before.refuse_all = true;
    dbpool *p = dbt_open_mock(&o);
    waiter_arg w = {p, 0, 0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, acquire_long, &w), 0);
    /* Two refusals (the pool's one connection, then a new one), then the backoff. */
    int64_t until = dbt_now_ms() + 10000;
    while (atomic_load(&before.calls) < 2 && dbt_now_ms() < until)
        dbt_sleep_ms(1);
    assert_true(atomic_load(&before.calls) >= 2);
    int64_t closed_at = dbt_now_ms();
    dbpool_close(p);
    assert_true(dbt_join_within(t, 10000, NULL));
    assert_int_equal(w.rc, DBPOOL_ECLOSED);
    if (w.done_ms - closed_at > 3000)
        fail_msg("the acquire ended %lld ms after the close", (long long)(w.done_ms - closed_at));
}

/* after_release runs after the reset (the caller's open transaction is
 * rolled back when it looks), once per release, with the native handle,
 * on both ways back; a refusal closes the connection instead of pooling
 * it. It is not asked about a discarded connection. */
static void test_after_release(void **state) {
    (void)state;
    for (int cache = 0; cache < 2; cache++) {
        dbpool__mock_reset();
        memset(&after, 0, sizeof after);
        dbpool *p = open_pool(0, 2, cache, false, true);
        dbpool_conn *c;
        for (int i = 0; i < 3; i++) {
            assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
            void *native = dbpool_conn_native(c);
            dbt_exec_ok(c, "BEGIN", NULL, 0); /* left open: the reset rolls it back first */
            assert_int_equal(dbpool_release(c), DBPOOL_OK);
            assert_int_equal(atomic_load(&after.calls), i + 1);
            assert_ptr_equal(atomic_load(&after.last_native), native);
        }
        assert_false(atomic_load(&after.saw_transaction));
        dbpool_stats s = dbt_stats(p);
        assert_int_equal((int)s.rollbacks, 3);
        assert_int_equal((int)s.created, 1);

        /* Clean leases: the thread cache's way back, when on. */
        for (int i = 0; i < 3; i++) {
            assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
            assert_int_equal(dbpool_release(c), DBPOOL_OK);
        }
        assert_int_equal(atomic_load(&after.calls), 6);
        if (cache)
            assert_int_equal(dbt_stats(p).thread_cached, 1);

        /* Refused: closed, counted. */
        after.refuse_all = true;
        assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
        assert_int_equal(dbpool_release(c), DBPOOL_OK);
        s = dbt_stats(p);
        assert_int_equal((int)s.destroyed_by[DBPOOL_CLOSE_AFTER_RELEASE], 1);
        assert_int_equal(s.total, 0);
        dbpool__mock_counters k;
        dbpool__mock_get_counters(&k);
        assert_int_equal((int)k.live, 0);

        /* Discarded: not asked. */
        int calls = atomic_load(&after.calls);
        assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
        assert_int_equal(dbpool_discard(c), DBPOOL_OK);
        assert_int_equal(atomic_load(&after.calls), calls);
        assert_true(dbt_invariant_holds(p));
        dbpool_close(p);
    }
}

/* From inside either hook, an acquire and a close of the same pool are
 * refused with DBPOOL_EMISUSE, and the pool goes on. */
static void test_misuse_from_hooks(void **state) {
    (void)state;
    for (int cache = 0; cache < 2; cache++) {
        dbpool__mock_reset();
        memset(&before, 0, sizeof before);
        memset(&after, 0, sizeof after);
        dbpool *p = open_pool(0, 1, cache, true, true);
        before.pool = after.pool = p;
        for (int i = 0; i < 2; i++) { /* the second time through the thread cache, when on */
            before.try_misuse = after.try_misuse = true;
            dbpool_conn *c;
            assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
            assert_int_equal(before.misuse_acquire_rc, DBPOOL_EMISUSE);
            assert_int_equal(before.misuse_close_rc, DBPOOL_EMISUSE);
            assert_int_equal(dbpool_release(c), DBPOOL_OK);
            assert_int_equal(after.misuse_acquire_rc, DBPOOL_EMISUSE);
            assert_int_equal(after.misuse_close_rc, DBPOOL_EMISUSE);
        }
        before.try_misuse = after.try_misuse = false;
        dbpool_conn *c;
        assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK); /* still open */
        assert_int_equal(dbpool_release(c), DBPOOL_OK);
        assert_int_equal(dbpool_close(p), 0);
    }
}

/* Without hooks nothing of theirs shows: no calls, no closes of their
 * reasons, the thread cache at work. */
static void test_no_hooks(void **state) {
    (void)state;
    dbpool *p = open_pool(0, 2, true, false, false);
    for (int i = 0; i < 4; i++) {
        dbpool_conn *c;
        assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
        assert_int_equal(dbpool_release(c), DBPOOL_OK);
    }
    dbpool_stats s = dbt_stats(p);
    assert_int_equal((int)s.acquired, 4);
    assert_int_equal((int)s.reused, 3);
    assert_int_equal(s.thread_cached, 1);
    assert_int_equal((int)s.destroyed_by[DBPOOL_CLOSE_BEFORE_ACQUIRE], 0);
    assert_int_equal((int)s.destroyed_by[DBPOOL_CLOSE_AFTER_RELEASE], 0);
    assert_int_equal(atomic_load(&before.calls) + atomic_load(&after.calls), 0);
    dbpool_close(p);
}

/* Threads lease and release while the hooks refuse now and then: every
 * refusal is one close of its reason, every acquire succeeds, and the
 * counts add up (for TSan too). */
typedef struct hammer_arg {
    dbpool *p;
    int ok;
} hammer_arg;

static void *hammer(void *arg) {
    hammer_arg *h = arg;
    for (int i = 0; i < 2000; i++) {
        dbpool_conn *c;
        if (dbpool_acquire(h->p, 10000, &c, NULL) != DBPOOL_OK)
            continue;
        h->ok++;
        if (i % 5 == 0)
            dbt_exec_ok(c, "BEGIN", NULL, 0);
        dbpool_release(c);
    }
    return NULL;
}

static void test_threads(void **state) {
    (void)state;
    dbpool_options o;
    dbt_mock_options(&o, 0, 3, true);
    o.maintenance_interval_ms = 5;
    o.before_acquire = hook;
    o.before_acquire_user = &before;
    o.after_release = hook;
    o.after_release_user = &after;
    atomic_store(&before.refuse_mod, 7);
    atomic_store(&after.refuse_mod, 11);
    dbpool *p = dbt_open_mock(&o);
    enum { N = 4 };
    pthread_t t[N];
    hammer_arg a[N];
    for (int i = 0; i < N; i++) {
        a[i] = (hammer_arg){p, 0};
        assert_int_equal(pthread_create(&t[i], NULL, hammer, &a[i]), 0);
    }
    int ok = 0;
    for (int i = 0; i < N; i++) {
        assert_true(dbt_join_within(t[i], 60000, NULL));
        ok += a[i].ok;
    }
    assert_int_equal(ok, N * 2000);
    dbpool_stats s = dbt_stats(p);
    assert_int_equal((int)s.acquired, ok);
    assert_int_equal((int)s.destroyed_by[DBPOOL_CLOSE_BEFORE_ACQUIRE], atomic_load(&before.refusals));
    assert_int_equal((int)s.destroyed_by[DBPOOL_CLOSE_AFTER_RELEASE], atomic_load(&after.refusals));
    assert_int_equal(atomic_load(&before.calls) - atomic_load(&before.refusals), ok);
    assert_true(atomic_load(&before.refusals) > 0 && atomic_load(&after.refusals) > 0);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(s.in_use, 0);
    dbpool_close(p);
}

/* SQLite: the hooks get the sqlite3 handle and may run statements on it;
 * what before_acquire leaves in the session is the lease's, cleared at its
 * release; after_release sees the caller's transaction rolled back. */
static int sqlite_before(void *native, void *user) {
    hook_state *h = user;
    atomic_fetch_add(&h->calls, 1);
    sqlite3 *db = native;
    /* A per-lease set-up: a temporary table the release drops. */
    if (sqlite3_exec(db, "CREATE TEMP TABLE lease_tag(x)", NULL, NULL, NULL) != SQLITE_OK)
        return 1;
    return h->refuse_all ? 1 : 0;
}

static int sqlite_after(void *native, void *user) {
    hook_state *h = user;
    atomic_fetch_add(&h->calls, 1);
    sqlite3 *db = native;
    if (!sqlite3_get_autocommit(db))
        atomic_store(&h->saw_transaction, true);
    return 0;
}

static void test_sqlite(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 1, 2);
    o.maintenance_interval_ms = 0;
    o.before_acquire = sqlite_before;
    o.before_acquire_user = &before;
    o.after_release = sqlite_after;
    o.after_release_user = &after;
    dbpool *p = NULL;
    dbpool_error e;
    if (dbpool_open(&p, "sqlite::memory:", &o, &e) != DBPOOL_OK)
        fail_msg("open: %s", e.message);
    for (int i = 0; i < 3; i++) {
        dbpool_conn *c;
        if (dbpool_acquire(p, 2000, &c, &e) != DBPOOL_OK)
            fail_msg("acquire %d: %s", i, e.message); /* the temporary table was dropped at each release */
        assert_int_equal(dbt_query_int(c, "SELECT count(*) FROM temp.lease_tag", NULL, 0), 0);
        dbt_exec_ok(c, "BEGIN", NULL, 0);
        dbt_exec_ok(c, "CREATE TABLE IF NOT EXISTS t(x)", NULL, 0);
        assert_int_equal(dbpool_release(c), DBPOOL_OK);
    }
    assert_int_equal(atomic_load(&before.calls), 3);
    assert_int_equal(atomic_load(&after.calls), 3);
    assert_false(atomic_load(&after.saw_transaction));
    dbpool_stats s = dbt_stats(p);
    assert_int_equal((int)s.created, 1);
    before.refuse_all = true;
    dbpool_conn *c;
    assert_int_equal(dbpool_acquire(p, 0, &c, &e), DBPOOL_ETIMEDOUT);
    s = dbt_stats(p);
    assert_true(s.destroyed_by[DBPOOL_CLOSE_BEFORE_ACQUIRE] >= 1);
    assert_true(dbt_invariant_holds(p));
    dbpool_close(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_before_acquire_once_per_handout, setup),
        cmocka_unit_test_setup(test_before_acquire_time_is_the_wait, setup),
        cmocka_unit_test_setup(test_before_acquire_refusal_gives_another, setup),
        cmocka_unit_test_setup(test_before_acquire_always_refuses, setup),
        cmocka_unit_test_setup(test_close_during_backoff, setup),
        cmocka_unit_test_setup(test_after_release, setup),
        cmocka_unit_test_setup(test_misuse_from_hooks, setup),
        cmocka_unit_test_setup(test_no_hooks, setup),
        cmocka_unit_test_setup(test_threads, setup),
        cmocka_unit_test_setup(test_sqlite, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
