/* The manager of named pools: open, find, close by name, and all stats at
 * once (parsed as JSON). */
#include "driver_mock.h"   /* the mock's counters: what a forked child closed */
#include "pool_internal.h" /* dbpool__lock: a pool's lock held at fork() */
#include "testsupport.h"

#include <jansson.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

static void test_open_get_close(void **state) {
    (void)state;
    dbpool_manager *m = NULL;
    assert_int_equal(dbpool_manager_new(&m), DBPOOL_OK);
    dbpool_error e;
    assert_int_equal(dbpool_manager_open(m, "orders", "sqlite::memory:", NULL, &e), DBPOOL_OK);
    assert_int_equal(dbpool_manager_open(m, "cache \"hot\"", "mock:", NULL, &e), DBPOOL_OK);
    assert_int_equal(dbpool_manager_open(m, "orders", "mock:", NULL, &e), DBPOOL_EINVAL);
    assert_non_null(strstr(e.message, "already open"));
    assert_int_equal(dbpool_manager_open(m, "", "mock:", NULL, &e), DBPOOL_EINVAL);
    assert_int_equal(dbpool_manager_open(m, "broken", "nosuch://x", NULL, &e), DBPOOL_EINVAL);
    assert_null(dbpool_manager_get(m, "broken")); /* a failed open leaves no entry */
    /* The manager names its pools: a URL may not rename one after another. */
    assert_int_equal(dbpool_manager_open(m, "renamed", "mock:?pool_name=orders", NULL, &e), DBPOOL_EINVAL);
    assert_non_null(strstr(e.message, "pool_name"));
    assert_null(dbpool_manager_get(m, "renamed"));
    assert_int_equal(dbpool_manager_open(m, "same", "mock:?pool_name=same", NULL, &e), DBPOOL_OK);
    assert_int_equal(dbpool_manager_close_pool(m, "same"), DBPOOL_OK);
    assert_int_equal(dbpool_manager_count(m), 2);
    assert_string_equal(dbpool_manager_name(m, 0), "orders");
    assert_null(dbpool_manager_name(m, 2));

    dbpool *orders = dbpool_manager_get(m, "orders");
    assert_non_null(orders);
    assert_string_equal(dbpool_name(orders), "orders");
    assert_string_equal(dbpool_backend(orders), "sqlite");
    assert_null(dbpool_manager_get(m, "nope"));
    dbpool_conn *c;
    assert_int_equal(dbpool_acquire(orders, 1000, &c, NULL), DBPOOL_OK);
    dbpool_release(c);

    int need = dbpool_manager_stats_json(m, NULL, 0);
    assert_true(need > 0);
    char *buf = malloc((size_t)need + 256);
    assert_true(dbpool_manager_stats_json(m, buf, (size_t)need + 256) > 0);
    /* Too small a buffer gets the needed length and no cut document. */
    char small[40];
    memset(small, 'X', sizeof small);
    assert_true(dbpool_manager_stats_json(m, small, sizeof small) >= (int)sizeof small);
    assert_string_equal(small, "");
    json_error_t je;
    json_t *doc = json_loads(buf, 0, &je);
    if (!doc)
        fail_msg("manager JSON does not parse: %s: %s", je.text, buf);
    json_t *pools = json_object_get(doc, "pools");
    assert_int_equal(json_object_size(pools), 2);
    json_t *o = json_object_get(pools, "orders");
    assert_non_null(o);
    assert_int_equal(json_integer_value(json_object_get(o, "acquired")), 1);
    assert_non_null(json_object_get(pools, "cache \"hot\""));
    json_decref(doc);
    free(buf);

    assert_int_equal(dbpool_manager_close_pool(m, "orders"), DBPOOL_OK);
    assert_int_equal(dbpool_manager_close_pool(m, "orders"), DBPOOL_ENOTFOUND);
    assert_int_equal(dbpool_manager_count(m), 1);
    dbpool_manager_free(m);
    dbpool_manager_free(NULL);
}

/* A pool of a manager closed directly with dbpool_close stayed in the
 * manager's table: its stats, lookups and free then read the freed pool
 * (ASan: heap-use-after-free in dbpool_manager_stats_json). dbpool_close
 * refuses it; the manager still closes it. */
static void test_direct_close_of_a_managed_pool(void **state) {
    (void)state;
    dbpool_manager *m = NULL;
    assert_int_equal(dbpool_manager_new(&m), DBPOOL_OK);
    dbpool_error e;
    assert_int_equal(dbpool_manager_open(m, "a", "mock:", NULL, &e), DBPOOL_OK);
    assert_int_equal(dbpool_manager_open(m, "b", "mock:", NULL, &e), DBPOOL_OK);
    dbpool *a = dbpool_manager_get(m, "a");
    assert_non_null(a);
    assert_int_equal(dbpool_close(a), DBPOOL_EMISUSE);
    /* Nothing was closed: the pool works and is still in the manager. */
    dbpool_conn *c = NULL;
    assert_int_equal(dbpool_acquire(a, 1000, &c, &e), DBPOOL_OK);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_ptr_equal(dbpool_manager_get(m, "a"), a);
    char buf[16384];
    int n = dbpool_manager_stats_json(m, buf, sizeof buf);
    assert_true(n > 0 && (size_t)n < sizeof buf);
    json_error_t je;
    json_t *doc = json_loads(buf, 0, &je);
    assert_non_null(doc);
    assert_int_equal(json_object_size(json_object_get(doc, "pools")), 2);
    json_decref(doc);
    assert_int_equal(dbpool_manager_close_pool(m, "a"), DBPOOL_OK);
    /* b is closed by the manager's free, which is not refused either. */
    assert_int_equal(dbpool_manager_free(m), DBPOOL_OK);
}

/* dbpool_manager_free while another thread's dbpool_manager_open of it was
 * still connecting freed the manager under that open, which then took the
 * freed lock and wrote to the freed table (ASan: heap-use-after-free in
 * dbpool_manager_open), and its pool was never closed. The free is
 * refused until the open has returned. */
typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool entered, go;
} gate;

static int wait_at_gate(void *native, void *user) {
    (void)native;
    gate *g = user;
    pthread_mutex_lock(&g->mu);
    g->entered = true;
    pthread_cond_broadcast(&g->cv);
    while (!g->go)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
    return 0;
}

typedef struct gated_open {
    dbpool_manager *m;
    dbpool_options o;
    int rc;
} gated_open;

static void *open_gated(void *arg) {
    gated_open *g = arg;
    g->rc = dbpool_manager_open(g->m, "slow", "mock:", &g->o, NULL);
    return NULL;
}

static void test_free_while_an_open_runs(void **state) {
    (void)state;
    gate g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, false};
    gated_open go;
    assert_int_equal(dbpool_manager_new(&go.m), DBPOOL_OK);
    dbt_options(&go.o, 1, 2);
    go.o.maintenance_interval_ms = 0;
    go.o.after_connect = wait_at_gate;
    go.o.after_connect_user = &g;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, open_gated, &go), 0);
    pthread_mutex_lock(&g.mu);
    while (!g.entered)
        pthread_cond_wait(&g.cv, &g.mu);
    pthread_mutex_unlock(&g.mu);
    /* The open is inside dbpool_open (its first connect). A second open of
     * the name said it was "already open", though no pool of that name
     * was, and the first open might yet fail. */
    dbpool_error e;
    assert_int_equal(dbpool_manager_open(go.m, "slow", "mock:", NULL, &e), DBPOOL_EINVAL);
    if (!strstr(e.message, "being opened"))
        fail_msg("a second open while the first runs: '%s'", e.message);
    assert_int_equal(dbpool_manager_free(go.m), DBPOOL_EMISUSE);
    assert_int_equal(dbpool_manager_count(go.m), 0);
    pthread_mutex_lock(&g.mu);
    g.go = true;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(go.rc, DBPOOL_OK);
    assert_int_equal(dbpool_manager_count(go.m), 1);
    assert_int_equal(dbpool_manager_free(go.m), DBPOOL_OK);
    /* A second free was a use after free (ASan: in pthread_rwlock_rdlock):
     * refused, as a second dbpool_close is. */
    assert_int_equal(dbpool_manager_free(go.m), DBPOOL_EMISUSE);
}

/* A server that looks its pool up by name for each request while another
 * thread closes and reopens it (a reload): with dbpool_manager_get the
 * pointer could be freed between the lookup and the acquire, and nothing
 * in the API let such a program lease safely. dbpool_manager_acquire does
 * both as one step: each call gets a lease, DBPOOL_ENOTFOUND or
 * DBPOOL_ECLOSED, never freed memory (run under ASan and TSan). */
typedef struct lookup_ctx {
    dbpool_manager *m;
    atomic_bool stop;
    atomic_int leases, other;
} lookup_ctx;

/* A new manager, the counters at zero, and options for its pools of at
 * most max_size connections that open nothing until asked and run no
 * maintenance. */
static void lookup_start(lookup_ctx *c, dbpool_options *o, int max_size) {
    assert_int_equal(dbpool_manager_new(&c->m), DBPOOL_OK);
    atomic_init(&c->stop, false);
    atomic_init(&c->leases, 0);
    atomic_init(&c->other, 0);
    dbt_options(o, 0, max_size);
    o->lazy_connect = true;
    o->maintenance_interval_ms = 0;
}

static void *serve_by_name(void *arg) {
    lookup_ctx *c = arg;
    while (!atomic_load(&c->stop)) {
        dbpool_conn *conn = NULL;
        dbpool_error e;
        int rc = dbpool_manager_acquire(c->m, "db", 1000, &conn, &e);
        if (rc == DBPOOL_OK) {
            assert_int_equal(dbpool_exec(conn, "SELECT 1", NULL, 0, NULL, NULL), DBPOOL_OK);
            assert_int_equal(dbpool_release(conn), DBPOOL_OK);
            atomic_fetch_add(&c->leases, 1);
        } else {
            if (rc != DBPOOL_ENOTFOUND && rc != DBPOOL_ECLOSED)
                fail_msg("dbpool_manager_acquire: %s (%s)", dbpool_strerror(rc), e.message);
            assert_null(conn);
            assert_int_equal(e.code, rc);
            atomic_fetch_add(&c->other, 1);
        }
    }
    return NULL;
}

static void test_acquire_by_name_racing_close(void **state) {
    (void)state;
    lookup_ctx c;
    dbpool_options o;
    lookup_start(&c, &o, 2);
    dbpool_conn *conn = NULL;
    dbpool_error e;
    assert_int_equal(dbpool_manager_acquire(c.m, "db", 0, &conn, &e), DBPOOL_ENOTFOUND);
    assert_null(conn);
    assert_non_null(strstr(e.message, "db"));
    assert_int_equal(dbpool_manager_acquire(c.m, NULL, 0, &conn, &e), DBPOOL_EINVAL);
    assert_int_equal(dbpool_manager_acquire(c.m, "db", 0, NULL, &e), DBPOOL_EINVAL);
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&t[i], NULL, serve_by_name, &c), 0);
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int round = 0; round < 300 || atomic_load(&c.leases) < 100; round++) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - t0.tv_sec > 60)
            fail_msg("%d leases in 60 s", atomic_load(&c.leases));
        assert_int_equal(dbpool_manager_open(c.m, "db", "mock:", &o, NULL), DBPOOL_OK);
        /* A lease taken by name stays valid when its pool is closed. */
        assert_int_equal(dbpool_manager_acquire(c.m, "db", 1000, &conn, NULL), DBPOOL_OK);
        assert_int_equal(dbpool_manager_close_pool(c.m, "db"), DBPOOL_OK);
        assert_int_equal(dbpool_exec(conn, "SELECT 1", NULL, 0, NULL, NULL), DBPOOL_OK);
        assert_int_equal(dbpool_release(conn), DBPOOL_OK);
    }
    atomic_store(&c.stop, true);
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    assert_true(atomic_load(&c.leases) >= 100);
    assert_int_equal(dbpool_manager_free(c.m), DBPOOL_OK);
}

/* A thread listing the pools (an admin page) while another closes them:
 * the name from dbpool_manager_name was freed by the close, so the lister
 * read freed memory (ASan: heap-use-after-free in strncmp), and no
 * synchronisation of the caller's could prevent it. Names stay valid until
 * dbpool_manager_free. */
static void *list_names(void *arg) {
    lookup_ctx *c = arg;
    while (!atomic_load(&c->stop)) {
        int n = dbpool_manager_count(c->m);
        for (int i = 0; i < n; i++) {
            const char *name = dbpool_manager_name(c->m, i);
            if (!name)
                continue;                  /* a close shifted the indexes */
            for (int k = 0; k < 1000; k++) /* a while, as a real caller would use it */
                assert_true(strcmp(name, "stay") == 0 || strncmp(name, "churn-", 6) == 0);
            atomic_fetch_add(&c->leases, 1);
        }
    }
    return NULL;
}

static void test_names_listed_while_pools_close(void **state) {
    (void)state;
    lookup_ctx c;
    dbpool_options o;
    lookup_start(&c, &o, 1);
    assert_int_equal(dbpool_manager_open(c.m, "stay", "mock:", &o, NULL), DBPOOL_OK);
    const char *stay = dbpool_manager_name(c.m, 0);
    assert_string_equal(stay, "stay");
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, list_names, &c), 0);
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int round = 0; round < 400 || atomic_load(&c.leases) < 200; round++) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - t0.tv_sec > 60)
            fail_msg("%d names read in 60 s", atomic_load(&c.leases));
        char name[32];
        snprintf(name, sizeof name, "churn-%d", round % 5); /* new names, and names again */
        assert_int_equal(dbpool_manager_open(c.m, name, "mock:", &o, NULL), DBPOOL_OK);
        const char *listed = dbpool_manager_name(c.m, 1);
        assert_string_equal(listed, name);
        assert_int_equal(dbpool_manager_close_pool(c.m, name), DBPOOL_OK);
        assert_string_equal(listed, name); /* still readable after its close */
    }
    atomic_store(&c.stop, true);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    assert_int_equal(dbpool_manager_close_pool(c.m, "stay"), DBPOOL_OK);
    assert_string_equal(stay, "stay");
    assert_int_equal(dbpool_manager_free(c.m), DBPOOL_OK);
}

/* Threads that look a pool up without pause (a server's workers) kept
 * dbpool_manager_open and dbpool_manager_close_pool out for ever: glibc's
 * rwlock let each new reader in while the writer waited (8 such threads:
 * 2 of 20 open+close rounds in 30 s). Writers now go first. */
typedef struct starve_ctx {
    dbpool_manager *m;
    atomic_bool stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int rounds;
} starve_ctx;

static void *look_up_without_pause(void *arg) {
    starve_ctx *c = arg;
    while (!atomic_load(&c->stop))
        assert_non_null(dbpool_manager_get(c->m, "stay"));
    return NULL;
}

static void *open_and_close(void *arg) {
    starve_ctx *c = arg;
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.lazy_connect = true;
    o.maintenance_interval_ms = 0;
    for (int r = 0; r < 20 && !atomic_load(&c->stop); r++) {
        assert_int_equal(dbpool_manager_open(c->m, "churn", "mock:", &o, NULL), DBPOOL_OK);
        assert_int_equal(dbpool_manager_close_pool(c->m, "churn"), DBPOOL_OK);
        pthread_mutex_lock(&c->mu);
        c->rounds++;
        pthread_cond_broadcast(&c->cv);
        pthread_mutex_unlock(&c->mu);
    }
    return NULL;
}

static void test_open_close_not_starved_by_lookups(void **state) {
    (void)state;
    starve_ctx c;
    assert_int_equal(dbpool_manager_new(&c.m), DBPOOL_OK);
    atomic_init(&c.stop, false);
    pthread_mutex_init(&c.mu, NULL);
    pthread_cond_init(&c.cv, NULL);
    c.rounds = 0;
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.lazy_connect = true;
    o.maintenance_interval_ms = 0;
    assert_int_equal(dbpool_manager_open(c.m, "stay", "mock:", &o, NULL), DBPOOL_OK);
    enum { READERS = 8 };
    pthread_t r[READERS], w;
    for (int i = 0; i < READERS; i++)
        assert_int_equal(pthread_create(&r[i], NULL, look_up_without_pause, &c), 0);
    assert_int_equal(pthread_create(&w, NULL, open_and_close, &c), 0);
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 30;
    pthread_mutex_lock(&c.mu);
    while (c.rounds < 20 && pthread_cond_timedwait(&c.cv, &c.mu, &deadline) == 0)
        ;
    int done = c.rounds;
    pthread_mutex_unlock(&c.mu);
    atomic_store(&c.stop, true); /* lets a starved writer in, so the joins end */
    for (int i = 0; i < READERS; i++)
        assert_int_equal(pthread_join(r[i], NULL), 0);
    assert_int_equal(pthread_join(w, NULL), 0);
    if (done < 20)
        fail_msg("%d of 20 open+close rounds in 30 s under lookups", done);
    assert_int_equal(dbpool_manager_free(c.m), DBPOOL_OK);
    pthread_cond_destroy(&c.cv);
    pthread_mutex_destroy(&c.mu);
}

/* Every manager call at once on four names, from six threads, for 2 s
 * (run under ASan and TSan): opens, closes, leases by name, listings,
 * lookups, JSON, Prometheus text and statistics by name, each checked for
 * what it may return. */
typedef struct mixed_ctx {
    dbpool_manager *m;
    atomic_bool stop;
    atomic_long ops;
} mixed_ctx;

static void *mixed_calls(void *arg) {
    mixed_ctx *x = arg;
    static const char *const names[] = {"a", "b", "c", "d"};
    unsigned seed = (unsigned)(uintptr_t)&seed;
    size_t cap = 1 << 16;
    char *buf = malloc(cap);
    assert_non_null(buf);
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.lazy_connect = true;
    o.maintenance_interval_ms = 3;
    while (!atomic_load(&x->stop)) {
        const char *n = names[rand_r(&seed) % 4];
        dbpool_conn *c = NULL;
        int rc;
        switch (rand_r(&seed) % 8) {
        case 0:
            rc = dbpool_manager_open(x->m, n, "mock:", &o, NULL);
            assert_true(rc == DBPOOL_OK || rc == DBPOOL_EINVAL); /* or taken */
            break;
        case 1:
            rc = dbpool_manager_close_pool(x->m, n);
            assert_true(rc == DBPOOL_OK || rc == DBPOOL_ENOTFOUND);
            break;
        case 2:
            rc = dbpool_manager_acquire(x->m, n, 50, &c, NULL);
            assert_true(rc == DBPOOL_OK || rc == DBPOOL_ENOTFOUND || rc == DBPOOL_ECLOSED ||
                        rc == DBPOOL_ETIMEDOUT);
            if (rc == DBPOOL_OK) {
                assert_int_equal(dbpool_exec(c, "SELECT 1", NULL, 0, NULL, NULL), DBPOOL_OK);
                assert_int_equal(dbpool_release(c), DBPOOL_OK);
            }
            break;
        case 3: {
            int k = dbpool_manager_count(x->m);
            assert_true(k >= 0 && k <= 4);
            for (int i = 0; i < k; i++) {
                const char *name = dbpool_manager_name(x->m, i);
                assert_true(!name || (strlen(name) == 1 && name[0] >= 'a' && name[0] <= 'd'));
            }
            break;
        }
        case 4: {
            int len = dbpool_manager_stats_json(x->m, buf, cap);
            assert_true(len > 0 && (size_t)len < cap);
            json_error_t je;
            json_t *doc = json_loads(buf, JSON_REJECT_DUPLICATES, &je);
            if (!doc)
                fail_msg("not JSON (%s): %s", je.text, buf);
            assert_true(json_object_size(json_object_get(doc, "pools")) <= 4);
            json_decref(doc);
            break;
        }
        case 5: {
            int len = dbpool_manager_stats_prometheus(x->m, buf, cap);
            assert_true(len >= 0 && (size_t)len < cap);
            assert_int_equal(strlen(buf), len);
            break;
        }
        case 6: {
            dbpool_stats st;
            rc = dbpool_manager_pool_stats(x->m, n, &st);
            assert_true(rc == DBPOOL_OK || rc == DBPOOL_ENOTFOUND);
            assert_true(rc != DBPOOL_OK || st.max_size == 2);
            break;
        }
        default:
            (void)dbpool_manager_get(x->m, n);
            break;
        }
        atomic_fetch_add(&x->ops, 1);
    }
    free(buf);
    return NULL;
}

static void test_every_call_at_once(void **state) {
    (void)state;
    mixed_ctx x;
    assert_int_equal(dbpool_manager_new(&x.m), DBPOOL_OK);
    atomic_init(&x.stop, false);
    atomic_init(&x.ops, 0);
    enum { THREADS = 6 };
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, mixed_calls, &x), 0);
    dbt_sleep_ms(2000); /* the length of the run, not a synchronisation */
    atomic_store(&x.stop, true);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    assert_true(atomic_load(&x.ops) > 100);
    assert_int_equal(dbpool_manager_free(x.m), DBPOOL_OK);
}

/* Two names that differ only in bytes that are not UTF-8 would be one
 * key in the manager's JSON (both become U+FFFD) and one pool's stats
 * would vanish: such names are refused, and a refused open leaves no
 * entry. */
static void test_names_that_would_collide(void **state) {
    (void)state;
    dbpool_manager *m = NULL;
    assert_int_equal(dbpool_manager_new(&m), DBPOOL_OK);
    dbpool_error e;
    assert_int_equal(dbpool_manager_open(m, "orders", "mock:", NULL, &e), DBPOOL_OK);
    assert_int_equal(dbpool_manager_open(m, "orders\xff", "mock:", NULL, &e), DBPOOL_EINVAL);
    assert_non_null(strstr(e.message, "UTF-8"));
    assert_int_equal(dbpool_manager_open(m, "orders\xfe", "mock:", NULL, &e), DBPOOL_EINVAL);
    assert_int_equal(dbpool_manager_open(m, "orders\n", "mock:", NULL, &e), DBPOOL_EINVAL);
    assert_non_null(strstr(e.message, "control"));
    assert_null(dbpool_manager_get(m, "orders\xff"));
    /* The name is checked before anything else: a URL renaming the pool
     * gave "sets pool_name to another name" with the raw line feed of the
     * name in the message. */
    assert_int_equal(dbpool_manager_open(m, "x\ny", "mock:?pool_name=z", NULL, &e), DBPOOL_EINVAL);
    assert_non_null(strstr(e.message, "control"));
    assert_null(strchr(e.message, '\n'));
    assert_int_equal(dbpool_manager_open(m, "\xc3\xa9\xff", "mock:?pool_name=z", NULL, &e), DBPOOL_EINVAL);
    assert_non_null(strstr(e.message, "UTF-8"));
    dbpool_conn *c = NULL;
    assert_int_equal(dbpool_manager_acquire(m, "x\ny", 0, &c, &e), DBPOOL_ENOTFOUND);
    assert_null(strchr(e.message, '\n'));
    assert_int_equal(dbpool_manager_open(m, "orders \xc3\xa9", "mock:", NULL, &e), DBPOOL_OK);
    assert_int_equal(dbpool_manager_count(m), 2);

    int need = dbpool_manager_stats_json(m, NULL, 0);
    assert_true(need > 0);
    char *buf = malloc((size_t)need + 256);
    assert_non_null(buf);
    assert_true(dbpool_manager_stats_json(m, buf, (size_t)need + 256) > 0);
    json_error_t je;
    json_t *doc = json_loads(buf, JSON_REJECT_DUPLICATES, &je);
    if (!doc)
        fail_msg("manager JSON does not parse: %s: %s", je.text, buf);
    json_t *pools = json_object_get(doc, "pools");
    assert_int_equal(json_object_size(pools), 2);
    assert_non_null(json_object_get(pools, "orders"));
    assert_non_null(json_object_get(pools, "orders \xc3\xa9"));
    json_decref(doc);
    free(buf);
    dbpool_manager_free(m);
}

typedef struct race {
    dbpool_manager *m;
    int rc;
} race;

static void *open_same(void *arg) {
    race *r = arg;
    r->rc = dbpool_manager_open(r->m, "same", "mock:", NULL, NULL);
    return NULL;
}

static void test_concurrent_opens_of_one_name(void **state) {
    (void)state;
    for (int round = 0; round < 20; round++) {
        dbpool_manager *m = NULL;
        assert_int_equal(dbpool_manager_new(&m), DBPOOL_OK);
        race r[4];
        pthread_t t[4];
        for (int i = 0; i < 4; i++) {
            r[i].m = m;
            pthread_create(&t[i], NULL, open_same, &r[i]);
        }
        int ok = 0;
        for (int i = 0; i < 4; i++) {
            pthread_join(t[i], NULL);
            ok += r[i].rc == DBPOOL_OK;
        }
        assert_int_equal(ok, 1);
        assert_int_equal(dbpool_manager_count(m), 1);
        dbpool_manager_free(m);
    }
}

static void *lease_200(void *arg) {
    for (int i = 0; i < 200; i++) {
        dbpool_conn *c = NULL;
        if (dbpool_acquire(arg, 100, &c, NULL) == DBPOOL_OK)
            dbpool_release(c);
    }
    return NULL;
}

/* The manager's JSON stays valid while a fresh pool takes its first
 * leases, when each pool's own JSON grows between its sizing and its
 * rendering (its first latency figures appear). */
static void test_stats_json_while_pools_work(void **state) {
    (void)state;
    static char buf[1 << 16];
    for (int round = 0; round < 100; round++) {
        dbpool_manager *m = NULL;
        assert_int_equal(dbpool_manager_new(&m), DBPOOL_OK);
        dbpool_options o;
        dbt_options(&o, 0, 2);
        o.lazy_connect = true;
        o.maintenance_interval_ms = 0;
        assert_int_equal(dbpool_manager_open(m, "a", "mock:", &o, NULL), DBPOOL_OK);
        assert_int_equal(dbpool_manager_open(m, "b", "mock:", &o, NULL), DBPOOL_OK);
        pthread_t t[2];
        for (int i = 0; i < 2; i++)
            assert_int_equal(pthread_create(&t[i], NULL, lease_200, dbpool_manager_get(m, "a")), 0);
        for (int k = 0; k < 20; k++) {
            int n = dbpool_manager_stats_json(m, buf, sizeof buf);
            assert_true(n > 0 && (size_t)n < sizeof buf);
            json_error_t err;
            json_t *doc = json_loads(buf, 0, &err);
            if (!doc)
                fail_msg("round %d: not JSON (%s at %d): %s", round, err.text, err.position, buf);
            json_decref(doc);
        }
        for (int i = 0; i < 2; i++)
            assert_int_equal(pthread_join(t[i], NULL), 0);
        dbpool_manager_free(m);
    }
}

/* A scrape of the manager's JSON racing opens and closes of its pools
 * (through the manager), with leases out on the pool being closed: every
 * document parses, holds only pools that are open, and nothing reads a
 * closed pool's memory (run under ASan and TSan). Names with a quote and a
 * backslash come back unescaped as their keys. */
typedef struct scrape_ctx {
    dbpool_manager *m;
    atomic_bool stop;
    atomic_int scrapes;
} scrape_ctx;

static void *scrape_manager(void *arg) {
    scrape_ctx *c = arg;
    size_t cap = 256;
    char *buf = malloc(cap);
    assert_non_null(buf);
    while (!atomic_load(&c->stop)) {
        int n = dbpool_manager_stats_json(c->m, buf, cap);
        assert_true(n > 0);
        if ((size_t)n >= cap) {
            assert_string_equal(buf, ""); /* never a cut document */
            cap = (size_t)n + 1024;
            char *bigger = realloc(buf, cap);
            assert_non_null(bigger);
            buf = bigger;
            continue;
        }
        json_error_t err;
        json_t *doc = json_loads(buf, 0, &err);
        if (!doc)
            fail_msg("not JSON (%s): %s", err.text, buf);
        json_t *pools = json_object_get(doc, "pools");
        assert_true(json_is_object(pools));
        const char *k;
        json_t *v;
        json_object_foreach(pools, k, v) {
            assert_string_equal(json_string_value(json_object_get(v, "name")), k);
            assert_true(strcmp(k, "stay \"q\" \\b") == 0 || strcmp(k, "churn\\\"") == 0);
            assert_int_equal(json_integer_value(json_object_get(v, "total")),
                             json_integer_value(json_object_get(v, "idle")) +
                                 json_integer_value(json_object_get(v, "in_use")) +
                                 json_integer_value(json_object_get(v, "connecting")));
        }
        json_decref(doc);
        atomic_fetch_add(&c->scrapes, 1);
    }
    free(buf);
    return NULL;
}

static void test_stats_json_racing_close(void **state) {
    (void)state;
    scrape_ctx c;
    assert_int_equal(dbpool_manager_new(&c.m), DBPOOL_OK);
    atomic_init(&c.stop, false);
    atomic_init(&c.scrapes, 0);
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.maintenance_interval_ms = 0;
    assert_int_equal(dbpool_manager_open(c.m, "stay \"q\" \\b", "mock:", &o, NULL), DBPOOL_OK);
    /* A second pool of the same name is refused, not listed twice. */
    assert_int_equal(dbpool_manager_open(c.m, "stay \"q\" \\b", "mock:", &o, NULL), DBPOOL_EINVAL);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, scrape_manager, &c), 0);
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int round = 0; round < 200 || atomic_load(&c.scrapes) < 50; round++) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - t0.tv_sec > 20)
            fail_msg("%d scrapes in 20 s", atomic_load(&c.scrapes));
        assert_int_equal(dbpool_manager_open(c.m, "churn\\\"", "mock:", &o, NULL), DBPOOL_OK);
        dbpool *p = dbpool_manager_get(c.m, "churn\\\"");
        dbpool_conn *conn = NULL;
        assert_int_equal(dbpool_acquire(p, 1000, &conn, NULL), DBPOOL_OK);
        assert_int_equal(dbpool_manager_close_pool(c.m, "churn\\\""), DBPOOL_OK);
        assert_int_equal(dbpool_release(conn), DBPOOL_OK); /* frees the pool */
    }
    atomic_store(&c.stop, true);
    assert_int_equal(pthread_join(t, NULL), 0);
    dbpool_manager_free(c.m);
}

/* dbpool_manager_close_pool from a callback on the pool's own maintenance
 * thread: the close is refused (it would join that thread), and the pool
 * stays in the manager. It used to leave the table first, so the refused
 * pool was left open with no name to close it by. */
static dbpool_manager *callback_manager;
static atomic_int callback_close_rc;

static void close_by_name_on_leak(void *user, dbpool_log_level level, const char *line) {
    (void)user, (void)level;
    if (strstr(line, "possible leak")) /* once: a lease is reported once */
        atomic_store(&callback_close_rc, dbpool_manager_close_pool(callback_manager, "leaky"));
}

static void test_close_pool_from_its_own_thread(void **state) {
    (void)state;
    assert_int_equal(dbpool_manager_new(&callback_manager), DBPOOL_OK);
    atomic_store(&callback_close_rc, -1000);
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.leak_threshold_ms = 20;
    o.maintenance_interval_ms = 10;
    o.log_fn = close_by_name_on_leak;
    dbpool_error e;
    assert_int_equal(dbpool_manager_open(callback_manager, "leaky", "mock:", &o, &e), DBPOOL_OK);
    dbpool_conn *c;
    assert_int_equal(dbpool_acquire(dbpool_manager_get(callback_manager, "leaky"), 1000, &c, NULL),
                     DBPOOL_OK);
    int64_t until = dbt_now_ms() + 5000;
    while (atomic_load(&callback_close_rc) == -1000 && dbt_now_ms() < until)
        dbt_sleep_ms(5);
    assert_int_equal(atomic_load(&callback_close_rc), DBPOOL_EMISUSE);
    assert_non_null(dbpool_manager_get(callback_manager, "leaky"));
    assert_int_equal(dbpool_manager_count(callback_manager), 1);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_manager_close_pool(callback_manager, "leaky"), DBPOOL_OK);
    assert_int_equal(dbpool_manager_count(callback_manager), 0);
    dbpool_manager_free(callback_manager);
}

/* dbpool_manager_free from a callback on a pool's own maintenance thread:
 * refused, nothing closed. It closed the other pools, had that one's close
 * refused and freed the manager anyway, so the pool stayed open with
 * nothing left to close it by (its maintenance thread running for ever). */
static atomic_int callback_free_rc;

static void free_manager_on_leak(void *user, dbpool_log_level level, const char *line) {
    (void)user, (void)level;
    if (strstr(line, "possible leak"))
        atomic_store(&callback_free_rc, dbpool_manager_free(callback_manager));
}

static void test_free_manager_from_a_pools_own_thread(void **state) {
    (void)state;
    assert_int_equal(dbpool_manager_new(&callback_manager), DBPOOL_OK);
    atomic_store(&callback_free_rc, -1000);
    dbpool_options o;
    dbt_options(&o, 0, 2);
    dbpool_error e;
    assert_int_equal(dbpool_manager_open(callback_manager, "quiet", "mock:", &o, &e), DBPOOL_OK);
    o.leak_threshold_ms = 20;
    o.maintenance_interval_ms = 10;
    o.log_fn = free_manager_on_leak;
    assert_int_equal(dbpool_manager_open(callback_manager, "leaky", "mock:", &o, &e), DBPOOL_OK);
    dbpool_conn *c;
    assert_int_equal(dbpool_acquire(dbpool_manager_get(callback_manager, "leaky"), 1000, &c, NULL),
                     DBPOOL_OK);
    int64_t until = dbt_now_ms() + 5000;
    while (atomic_load(&callback_free_rc) == -1000 && dbt_now_ms() < until)
        dbt_sleep_ms(5);
    assert_int_equal(atomic_load(&callback_free_rc), DBPOOL_EMISUSE);
    /* Nothing was closed: both pools still work through the manager. */
    assert_int_equal(dbpool_manager_count(callback_manager), 2);
    dbpool_conn *q;
    assert_int_equal(dbpool_acquire(dbpool_manager_get(callback_manager, "quiet"), 1000, &q, NULL),
                     DBPOOL_OK);
    assert_int_equal(dbpool_release(q), DBPOOL_OK);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_manager_free(callback_manager), DBPOOL_OK);
    assert_int_equal(dbpool_manager_free(NULL), DBPOOL_OK);
}

/* A parent thread that holds a pool's lock at the moment of fork(), as
 * the maintenance thread, a connector or any acquire may: it takes the
 * lock, says so, and lets go when told. (The forking thread itself never
 * holds a pool's lock.) */
typedef struct lock_holder {
    dbpool *p;
    pthread_t t;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stage; /* 1: holding; 2: told to let go */
} lock_holder;

static void *hold_pool_lock(void *arg) {
    lock_holder *h = arg;
    dbpool__lock(h->p);
    pthread_mutex_lock(&h->mu);
    h->stage = 1;
    pthread_cond_broadcast(&h->cv);
    while (h->stage != 2)
        pthread_cond_wait(&h->cv, &h->mu);
    pthread_mutex_unlock(&h->mu);
    dbpool__unlock(h->p);
    return NULL;
}

static void pool_lock_held_begin(lock_holder *h, dbpool *p) {
    h->p = p;
    h->stage = 0;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    assert_int_equal(pthread_create(&h->t, NULL, hold_pool_lock, h), 0);
    pthread_mutex_lock(&h->mu);
    while (h->stage != 1)
        pthread_cond_wait(&h->cv, &h->mu);
    pthread_mutex_unlock(&h->mu);
}

static void pool_lock_held_end(lock_holder *h) {
    pthread_mutex_lock(&h->mu);
    h->stage = 2;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    assert_int_equal(pthread_join(h->t, NULL), 0);
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
}

/* A child process after fork(): closing a pool through the manager must do
 * what dbpool_close does there (return at once, touch nothing), also when
 * some thread of the parent held the pool's lock at the moment of fork()
 * (the maintenance thread, a connector, any acquire or release): that
 * lock stays locked forever in the child. */
static void test_close_pool_in_forked_child(void **state) {
    (void)state;
    dbpool_manager *m = NULL;
    assert_int_equal(dbpool_manager_new(&m), DBPOOL_OK);
    dbpool_error e;
    assert_int_equal(dbpool_manager_open(m, "parent", "mock:", NULL, &e), DBPOOL_OK);
    dbpool *p = dbpool_manager_get(m, "parent");
    assert_non_null(p);

    fflush(stdout);
    fflush(stderr);
    lock_holder h;
    pool_lock_held_begin(&h, p);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* No cmocka here: exit codes say what failed. */
        int rc = dbpool_manager_close_pool(m, "parent");
        if (rc != DBPOOL_OK)
            _exit(10);
        if (dbpool_manager_get(m, "parent") != NULL || dbpool_manager_count(m) != 0)
            _exit(11);
        dbpool_manager_free(m);
        _exit(0);
    }
    pool_lock_held_end(&h);

    int st = dbt_child_status(pid, 10000);
    if (st == -1)
        fail_msg("dbpool_manager_close_pool in the child did not return within 10 s: it waited for the "
                 "pool's lock, held by a thread that does not exist in the child");
    if (st != 0)
        fail_msg("child: %s", st == 10   ? "dbpool_manager_close_pool did not return DBPOOL_OK"
                              : st == 11 ? "the pool was still in the child's manager"
                                         : "it died");
    /* The parent's pool is untouched. */
    dbpool_conn *c;
    assert_int_equal(dbpool_acquire(p, 1000, &c, &e), DBPOOL_OK);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_manager_count(m), 1);
    dbpool_manager_free(m);
}

static atomic_bool lookups_stop;
static void *look_up_forever(void *arg) {
    while (!atomic_load(&lookups_stop))
        (void)dbpool_manager_get(arg, "parent");
    return NULL;
}

/* Another thread of the parent inside the manager (here: lookups, over and
 * over) at the moment of fork(): its hold on the manager's lock must not
 * outlive it in the child. The child's close by name used to wait for that
 * lock for ever in about half of the forks. */
static void test_fork_while_another_thread_looks_up(void **state) {
    (void)state;
    dbpool_manager *m = NULL;
    assert_int_equal(dbpool_manager_new(&m), DBPOOL_OK);
    dbpool_error e;
    assert_int_equal(dbpool_manager_open(m, "parent", "mock:", NULL, &e), DBPOOL_OK);
    atomic_store(&lookups_stop, false);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, look_up_forever, m), 0);
    int hung = 0, failed = 0;
    for (int round = 0; round < 20; round++) {
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            if (dbpool_manager_close_pool(m, "parent") != DBPOOL_OK)
                _exit(10);
            if (dbpool_manager_count(m) != 0)
                _exit(11);
            _exit(0);
        }
        int st = dbt_child_status(pid, 10000);
        hung += st == -1;
        failed += st > 0;
        if (hung || failed)
            break; /* one is enough: each hang costs the whole wait */
    }
    atomic_store(&lookups_stop, true);
    assert_int_equal(pthread_join(t, NULL), 0);
    if (hung || failed)
        fail_msg("a child %s in dbpool_manager_close_pool (the manager's lock, held by the parent's other "
                 "thread at fork(), stayed taken)",
                 hung ? "hung" : "failed");
    /* The parent's manager works on. */
    assert_non_null(dbpool_manager_get(m, "parent"));
    assert_int_equal(dbpool_manager_open(m, "after", "mock:", NULL, &e), DBPOOL_OK);
    assert_int_equal(dbpool_manager_count(m), 2);
    dbpool_manager_free(m);
}

/* The manager's JSON in a forked child: the parent's pools work there no
 * more, and reading one would take its lock, which a parent thread may
 * have held at fork() (here: held on purpose). They are left out; the call
 * used to hang. */
static void test_stats_json_in_forked_child(void **state) {
    (void)state;
    dbpool_manager *m = NULL;
    assert_int_equal(dbpool_manager_new(&m), DBPOOL_OK);
    dbpool_error e;
    assert_int_equal(dbpool_manager_open(m, "parent", "mock:", NULL, &e), DBPOOL_OK);
    dbpool *p = dbpool_manager_get(m, "parent");
    fflush(stdout);
    fflush(stderr);
    lock_holder h;
    pool_lock_held_begin(&h, p);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char buf[4096];
        int n = dbpool_manager_stats_json(m, buf, sizeof buf);
        if (n < 0 || (size_t)n >= sizeof buf)
            _exit(10);
        if (strcmp(buf, "{\"pools\": {}}") != 0)
            _exit(11);
        _exit(0);
    }
    pool_lock_held_end(&h);
    int st = dbt_child_status(pid, 10000);
    if (st == -1)
        fail_msg("dbpool_manager_stats_json in the child did not return within 10 s: it waited for the lock "
                 "of a pool of the parent");
    if (st != 0)
        fail_msg("child: %s (status %d)",
                 st == 10 ? "dbpool_manager_stats_json failed" : "the parent's pool was in the child's JSON",
                 st);
    /* The parent's JSON still has it. */
    char buf[1 << 14];
    int n = dbpool_manager_stats_json(m, buf, sizeof buf);
    assert_true(n > 0 && (size_t)n < sizeof buf);
    assert_non_null(strstr(buf, "\"parent\""));
    dbpool_manager_free(m);
}

/* dbpool_manager_close_pool returns DBPOOL_ENOTFOUND for a name it does
 * not know, and dbpool_strerror said "database not found": a caller
 * printing it went looking for a missing database when the pool name was
 * wrong. The description covers both. */
static void test_unknown_name_strerror(void **state) {
    (void)state;
    dbpool_manager *m = NULL;
    assert_int_equal(dbpool_manager_new(&m), DBPOOL_OK);
    int rc = dbpool_manager_close_pool(m, "no-such-pool");
    assert_int_equal(rc, DBPOOL_ENOTFOUND);
    const char *d = dbpool_strerror(rc);
    if (!strstr(d, "pool"))
        fail_msg("dbpool_manager_close_pool of an unknown name: dbpool_strerror says '%s'", d);
    if (!strstr(d, "database"))
        fail_msg("dbpool_strerror(DBPOOL_ENOTFOUND) '%s' no longer covers a missing database", d);
    dbpool_manager_free(m);
}

/* A name closed and opened again takes back the string dbpool_manager_name
 * gave out for it; when that second open failed, the string was freed,
 * though a lister may still hold it (promised valid until
 * dbpool_manager_free; ASan: heap-use-after-free in strcmp). A failed
 * open gives the string back to the names kept. */
static void test_name_kept_after_a_failed_reopen(void **state) {
    (void)state;
    dbpool_manager *m = NULL;
    assert_int_equal(dbpool_manager_new(&m), DBPOOL_OK);
    dbpool_error e;
    assert_int_equal(dbpool_manager_open(m, "db", "mock:", NULL, &e), DBPOOL_OK);
    const char *listed = dbpool_manager_name(m, 0);
    assert_string_equal(listed, "db");
    assert_int_equal(dbpool_manager_close_pool(m, "db"), DBPOOL_OK);
    /* The reopen fails in dbpool_open (a bad option), after the name was
     * reserved. */
    assert_int_equal(dbpool_manager_open(m, "db", "mock:?pool_max=0", NULL, &e), DBPOOL_EINVAL);
    assert_null(dbpool_manager_get(m, "db"));
    assert_string_equal(listed, "db");
    /* And once more: the name is taken back and kept again. */
    assert_int_equal(dbpool_manager_open(m, "db", "mock:", NULL, &e), DBPOOL_OK);
    assert_ptr_equal(dbpool_manager_name(m, 0), listed);
    assert_int_equal(dbpool_manager_close_pool(m, "db"), DBPOOL_OK);
    assert_string_equal(listed, "db");
    assert_int_equal(dbpool_manager_free(m), DBPOOL_OK);
}

/* What a forked child sees of its parent's manager. The parent's pools
 * are the parent's sessions, and their locks may have been held at
 * fork() by a thread the child does not have (here: held on purpose):
 * dbpool_manager_get handed the child the parent's pool (on which
 * dbpool_get_stats or dbpool_stats_json then waited for ever), and
 * dbpool_manager_count and dbpool_manager_name listed pools that the
 * child's JSON left out. Now the child's manager hands out none of them:
 * get is NULL, they are not counted or listed, a lease by name is
 * DBPOOL_EMISUSE (as dbpool_acquire), an open of the same name says why
 * it is taken, and the free closes none of their connections. */
enum {
    FORK_GET = 10,
    FORK_LISTED,
    FORK_ACQUIRE,
    FORK_JSON,
    FORK_OPEN,
    FORK_FREE,
    FORK_DISCONNECTED,
};

static void manager_child(dbpool_manager *m) {
    if (dbpool_manager_get(m, "parent") != NULL)
        _exit(FORK_GET);
    if (dbpool_manager_count(m) != 0 || dbpool_manager_name(m, 0) != NULL)
        _exit(FORK_LISTED);
    dbpool_conn *c = NULL;
    dbpool_error e;
    if (dbpool_manager_acquire(m, "parent", 1000, &c, &e) != DBPOOL_EMISUSE || c ||
        !strstr(e.message, "fork"))
        _exit(FORK_ACQUIRE);
    char buf[4096];
    int n = dbpool_manager_stats_json(m, buf, sizeof buf);
    if (n < 0 || (size_t)n >= sizeof buf || strcmp(buf, "{\"pools\": {}}") != 0)
        _exit(FORK_JSON);
    if (dbpool_manager_stats_prometheus(m, buf, sizeof buf) != 0 || buf[0] != '\0')
        _exit(FORK_JSON);
    dbpool_stats st;
    if (dbpool_manager_pool_stats(m, "parent", &st) != DBPOOL_ENOTFOUND)
        _exit(FORK_JSON);
    if (dbpool_manager_open(m, "parent", "mock:", NULL, &e) != DBPOOL_EINVAL || !strstr(e.message, "fork"))
        _exit(FORK_OPEN);
    dbpool__mock_counters before, after;
    dbpool__mock_get_counters(&before);
    if (dbpool_manager_free(m) != DBPOOL_OK)
        _exit(FORK_FREE);
    dbpool__mock_get_counters(&after);
    if (after.disconnects != before.disconnects || after.live != before.live)
        _exit(FORK_DISCONNECTED);
    _exit(0);
}

static void test_parents_pools_in_forked_child(void **state) {
    (void)state;
    dbpool__mock_reset();
    dbpool_manager *m = NULL;
    assert_int_equal(dbpool_manager_new(&m), DBPOOL_OK);
    dbpool_options o;
    dbt_options(&o, 2, 2);
    dbpool_error e;
    assert_int_equal(dbpool_manager_open(m, "parent", "mock:", &o, &e), DBPOOL_OK);
    dbpool *p = dbpool_manager_get(m, "parent");
    dbpool_conn *held = NULL;
    assert_int_equal(dbpool_manager_acquire(m, "parent", 1000, &held, &e), DBPOOL_OK);
    fflush(stdout);
    fflush(stderr);
    lock_holder h;
    pool_lock_held_begin(&h, p);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        manager_child(m);
    pool_lock_held_end(&h);
    int st = dbt_child_status(pid, 10000);
    static const char *const what[] = {
        [FORK_GET] = "dbpool_manager_get handed out the parent's pool",
        [FORK_LISTED] = "the parent's pool was counted or listed",
        [FORK_ACQUIRE] = "dbpool_manager_acquire was not DBPOOL_EMISUSE with a message about fork()",
        [FORK_JSON] = "the parent's pool was in the JSON, the Prometheus text or read by name",
        [FORK_OPEN] = "an open of the parent's pool's name was not refused with a message about fork()",
        [FORK_FREE] = "dbpool_manager_free failed",
        [FORK_DISCONNECTED] = "dbpool_manager_free closed the parent's connections",
    };
    if (st == -1)
        fail_msg("the child did not return within 10 s (it waited for the lock of the parent's pool)");
    if (st != 0)
        fail_msg("child: %s (status %d)", st >= FORK_GET && st <= FORK_DISCONNECTED ? what[st] : "it died",
                 st);
    /* The parent's manager and pool work on. */
    assert_ptr_equal(dbpool_manager_get(m, "parent"), p);
    assert_int_equal(dbpool_manager_count(m), 1);
    assert_int_equal(dbpool_exec(held, "SELECT 1", NULL, 0, NULL, &e), DBPOOL_OK);
    assert_int_equal(dbpool_release(held), DBPOOL_OK);
    dbpool__mock_counters mc;
    dbpool__mock_get_counters(&mc);
    assert_int_equal(mc.disconnects, 0);
    assert_int_equal(dbpool_manager_free(m), DBPOOL_OK);
}

/* A Prometheus text: every family's HELP and TYPE once, every sample of
 * the family its last TYPE named, and of the pools `pools` (each with a
 * sample in every family); NULL when it is so, else what is wrong. */
static const char *check_prometheus(const char *text, const char *const *pools, int npools) {
    static char why[256];
    char family[128] = "";
    char seen[64][128];
    int nseen = 0;
    bool pool_in_family[8] = {false};
    const char *line = text;
    while (*line) {
        const char *eol = strchr(line, '\n');
        if (!eol)
            return "the text does not end with a line feed";
        size_t n = (size_t)(eol - line);
        if (strncmp(line, "# HELP ", 7) == 0) {
            for (int k = 0; k < npools && family[0]; k++)
                if (!pool_in_family[k]) {
                    snprintf(why, sizeof why, "family %s has no sample of pool %s", family, pools[k]);
                    return why;
                }
            size_t fl = strcspn(line + 7, " \n");
            snprintf(family, sizeof family, "%.*s", (int)fl, line + 7);
            for (int k = 0; k < nseen; k++)
                if (strcmp(seen[k], family) == 0) {
                    snprintf(why, sizeof why, "family %s appears twice", family);
                    return why;
                }
            if (nseen < 64)
                snprintf(seen[nseen++], sizeof seen[0], "%s", family);
            memset(pool_in_family, 0, sizeof pool_in_family);
        } else if (strncmp(line, "# TYPE ", 7) == 0) {
            if (strncmp(line + 7, family, strlen(family)) != 0 || line[7 + strlen(family)] != ' ') {
                snprintf(why, sizeof why, "TYPE of another family than %s: %.*s", family, (int)n, line);
                return why;
            }
        } else {
            size_t fl = strlen(family);
            const char *rest = line + fl;
            if (!fl || strncmp(line, family, fl) != 0 ||
                !(rest[0] == '{' || strncmp(rest, "_bucket{", 8) == 0 || strncmp(rest, "_sum{", 5) == 0 ||
                  strncmp(rest, "_count{", 7) == 0)) {
                snprintf(why, sizeof why, "sample outside its family %s: %.*s", family, (int)n, line);
                return why;
            }
            bool known = false;
            for (int k = 0; k < npools; k++) {
                char label[160];
                snprintf(label, sizeof label, "{pool=\"%s\"", pools[k]);
                if (strncmp(strchr(line, '{'), label, strlen(label)) == 0)
                    known = pool_in_family[k] = true;
            }
            if (!known) {
                snprintf(why, sizeof why, "sample of an unknown pool: %.*s", (int)n, line);
                return why;
            }
        }
        line = eol + 1;
    }
    for (int k = 0; k < npools && family[0]; k++)
        if (!pool_in_family[k]) {
            snprintf(why, sizeof why, "family %s has no sample of pool %s", family, pools[k]);
            return why;
        }
    return NULL;
}

/* Statistics by name, and every pool's Prometheus text as one. A program
 * serving /metrics from a manager had only dbpool_manager_get and
 * dbpool_stats_prometheus of each pool, which read freed memory when a
 * reload closed that pool meanwhile, and whose texts put together repeat
 * each family's HELP and TYPE (a scrape Prometheus refuses). */
static void test_stats_by_name_and_prometheus(void **state) {
    (void)state;
    dbpool_manager *m = NULL;
    assert_int_equal(dbpool_manager_new(&m), DBPOOL_OK);
    char small[8];
    memset(small, 'X', sizeof small);
    assert_int_equal(dbpool_manager_stats_prometheus(m, small, sizeof small), 0); /* no pools: "" */
    assert_string_equal(small, "");
    assert_int_equal(dbpool_manager_stats_prometheus(NULL, small, sizeof small), DBPOOL_EINVAL);
    assert_int_equal(dbpool_manager_stats_prometheus(m, NULL, 1), DBPOOL_EINVAL);
    dbpool_stats st;
    assert_int_equal(dbpool_manager_pool_stats(m, "a", &st), DBPOOL_ENOTFOUND);
    assert_int_equal(dbpool_manager_pool_stats(m, NULL, &st), DBPOOL_EINVAL);
    assert_int_equal(dbpool_manager_pool_stats(m, "a", NULL), DBPOOL_EINVAL);
    dbpool_options o;
    dbt_options(&o, 1, 3);
    o.maintenance_interval_ms = 0;
    dbpool_error e;
    assert_int_equal(dbpool_manager_open(m, "a", "mock:", &o, &e), DBPOOL_OK);
    assert_int_equal(dbpool_manager_open(m, "b \"q\"", "sqlite::memory:", &o, &e), DBPOOL_OK);
    dbpool_conn *c = NULL;
    assert_int_equal(dbpool_manager_acquire(m, "a", 1000, &c, &e), DBPOOL_OK);
    assert_int_equal(dbpool_manager_pool_stats(m, "a", &st), DBPOOL_OK);
    assert_int_equal(st.in_use, 1);
    assert_int_equal(st.max_size, 3);
    assert_int_equal(st.acquired, 1);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);

    int need = dbpool_manager_stats_prometheus(m, NULL, 0);
    assert_true(need > 0);
    size_t cap = (size_t)need + 4096;
    char *buf = malloc(cap);
    assert_non_null(buf);
    int got = dbpool_manager_stats_prometheus(m, buf, cap);
    assert_true(got > 0 && (size_t)got < cap);
    assert_int_equal(strlen(buf), got);
    static const char *const pools[] = {"a", "b \\\"q\\\""}; /* as label values */
    const char *why = check_prometheus(buf, pools, 2);
    if (why)
        fail_msg("%s in:\n%s", why, buf);
    /* Each pool's samples are those of its own text. */
    char one[1 << 15];
    int n1 = dbpool_stats_prometheus(dbpool_manager_get(m, "b \"q\""), one, sizeof one);
    assert_true(n1 > 0 && (size_t)n1 < sizeof one);
    for (char *line = one, *eol; (eol = strchr(line, '\n')); line = eol + 1) {
        *eol = '\0';
        if (line[0] != '#') {
            char *at = strstr(buf, line);
            if (!at || at[strlen(line)] != '\n')
                fail_msg("the sample '%s' of pool b is not in the manager's text", line);
        }
    }
    assert_non_null(strstr(buf, "dbpool_connections_max{pool=\"b \\\"q\\\"\"} 3\n"));
    assert_non_null(strstr(buf, "dbpool_connections_max{pool=\"a\"} 3\n"));
    /* Too small a buffer: the length, and no cut text. */
    memset(buf, 'X', 100);
    assert_true(dbpool_manager_stats_prometheus(m, buf, 100) >= 100);
    assert_string_equal(buf, "");
    free(buf);
    assert_int_equal(dbpool_manager_close_pool(m, "a"), DBPOOL_OK);
    assert_int_equal(dbpool_manager_pool_stats(m, "a", &st), DBPOOL_ENOTFOUND);
    assert_int_equal(st.max_size, 0); /* zeroed */
    assert_int_equal(dbpool_manager_free(m), DBPOOL_OK);
}

/* A /metrics handler and a status page reading the statistics while a
 * reload closes and reopens a pool, with a lease out across the close:
 * each read gets the pool's figures or DBPOOL_ENOTFOUND, each text is one
 * valid exposition, and nothing reads a freed pool (run under ASan and
 * TSan; bounded by time). */
typedef struct metrics_ctx {
    dbpool_manager *m;
    atomic_bool stop;
    atomic_int scrapes, reads;
    char failure[512];
    pthread_mutex_t mu;
} metrics_ctx;

static void metrics_fail(metrics_ctx *x, const char *what, const char *text) {
    pthread_mutex_lock(&x->mu);
    if (!x->failure[0])
        snprintf(x->failure, sizeof x->failure, "%s: %.300s", what, text ? text : "");
    pthread_mutex_unlock(&x->mu);
    atomic_store(&x->stop, true);
}

static void *serve_metrics(void *arg) {
    metrics_ctx *x = arg;
    size_t cap = 256;
    char *buf = malloc(cap);
    static const char *const two[] = {"stay", "churn"};
    while (buf && !atomic_load(&x->stop)) {
        int n = dbpool_manager_stats_prometheus(x->m, buf, cap);
        if (n < 0) {
            metrics_fail(x, "dbpool_manager_stats_prometheus failed", dbpool_strerror(n));
            break;
        }
        if ((size_t)n >= cap) {
            if (buf[0])
                metrics_fail(x, "a cut text", buf);
            cap = (size_t)n + 1024;
            char *bigger = realloc(buf, cap);
            if (!bigger)
                break;
            buf = bigger;
            continue;
        }
        /* "churn" may or may not be open: check with both, then with one. */
        const char *why = check_prometheus(buf, two, 2);
        if (why && check_prometheus(buf, two, 1) != NULL)
            metrics_fail(x, why, buf);
        atomic_fetch_add(&x->scrapes, 1);
    }
    free(buf);
    return NULL;
}

static void *read_by_name(void *arg) {
    metrics_ctx *x = arg;
    while (!atomic_load(&x->stop)) {
        dbpool_stats st;
        int rc = dbpool_manager_pool_stats(x->m, "churn", &st);
        if (rc == DBPOOL_OK && st.max_size != 2)
            metrics_fail(x, "wrong max_size read by name", NULL);
        else if (rc != DBPOOL_OK && rc != DBPOOL_ENOTFOUND)
            metrics_fail(x, "dbpool_manager_pool_stats failed", dbpool_strerror(rc));
        atomic_fetch_add(&x->reads, 1);
    }
    return NULL;
}

static void test_stats_racing_reload(void **state) {
    (void)state;
    metrics_ctx x;
    memset(&x, 0, sizeof x);
    pthread_mutex_init(&x.mu, NULL);
    assert_int_equal(dbpool_manager_new(&x.m), DBPOOL_OK);
    atomic_init(&x.stop, false);
    atomic_init(&x.scrapes, 0);
    atomic_init(&x.reads, 0);
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.maintenance_interval_ms = 0;
    assert_int_equal(dbpool_manager_open(x.m, "stay", "mock:", &o, NULL), DBPOOL_OK);
    pthread_t t[2];
    assert_int_equal(pthread_create(&t[0], NULL, serve_metrics, &x), 0);
    assert_int_equal(pthread_create(&t[1], NULL, read_by_name, &x), 0);
    int64_t until = dbt_now_ms() + 20000;
    for (int round = 0;
         !atomic_load(&x.stop) && (round < 200 || atomic_load(&x.scrapes) < 50 || atomic_load(&x.reads) < 50);
         round++) {
        if (dbt_now_ms() > until) {
            metrics_fail(&x, "too few scrapes or reads in 20 s", NULL);
            break;
        }
        assert_int_equal(dbpool_manager_open(x.m, "churn", "mock:", &o, NULL), DBPOOL_OK);
        dbpool_conn *c = NULL;
        assert_int_equal(dbpool_manager_acquire(x.m, "churn", 1000, &c, NULL), DBPOOL_OK);
        assert_int_equal(dbpool_manager_close_pool(x.m, "churn"), DBPOOL_OK);
        assert_int_equal(dbpool_release(c), DBPOOL_OK); /* frees the pool */
    }
    atomic_store(&x.stop, true);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    if (x.failure[0])
        fail_msg("%s (%d scrapes, %d reads)", x.failure, atomic_load(&x.scrapes), atomic_load(&x.reads));
    assert_int_equal(dbpool_manager_free(x.m), DBPOOL_OK);
    pthread_mutex_destroy(&x.mu);
}

/* A server shutting down: its workers wait in dbpool_manager_acquire for
 * a connection of an exhausted pool while the main thread frees the
 * manager. Past its lookup a lease by name no longer touches the manager
 * (only the pool, which it holds), so each waiter is answered
 * DBPOOL_ECLOSED and nothing reads the freed manager or pool (ASan, TSan).
 * The lease held across the free stays valid. */
typedef struct shutdown_ctx {
    dbpool_manager *m;
    atomic_int answered, closed;
} shutdown_ctx;

static void *wait_by_name(void *arg) {
    shutdown_ctx *x = arg;
    dbpool_conn *c = NULL;
    dbpool_error e;
    int rc = dbpool_manager_acquire(x->m, "db", 30000, &c, &e);
    if (rc == DBPOOL_ECLOSED && !c)
        atomic_fetch_add(&x->closed, 1);
    else if (c)
        dbpool_release(c);
    atomic_fetch_add(&x->answered, 1);
    return NULL;
}

static void test_free_with_waiters_by_name(void **state) {
    (void)state;
    shutdown_ctx x;
    assert_int_equal(dbpool_manager_new(&x.m), DBPOOL_OK);
    atomic_init(&x.answered, 0);
    atomic_init(&x.closed, 0);
    dbpool_options o;
    dbt_options(&o, 1, 1);
    o.maintenance_interval_ms = 0;
    assert_int_equal(dbpool_manager_open(x.m, "db", "mock:", &o, NULL), DBPOOL_OK);
    dbpool_conn *held = NULL;
    assert_int_equal(dbpool_manager_acquire(x.m, "db", 1000, &held, NULL), DBPOOL_OK);
    enum { WAITERS = 3 };
    pthread_t t[WAITERS];
    for (int i = 0; i < WAITERS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, wait_by_name, &x), 0);
    dbpool_stats st;
    int64_t until = dbt_now_ms() + 10000;
    do {
        assert_int_equal(dbpool_manager_pool_stats(x.m, "db", &st), DBPOOL_OK);
        if (st.waiting < WAITERS)
            dbt_sleep_ms(5);
    } while (st.waiting < WAITERS && dbt_now_ms() < until);
    assert_int_equal(st.waiting, WAITERS);
    assert_int_equal(dbpool_manager_free(x.m), DBPOOL_OK);
    for (int i = 0; i < WAITERS; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    assert_int_equal(atomic_load(&x.closed), WAITERS);
    assert_int_equal(dbpool_exec(held, "SELECT 1", NULL, 0, NULL, NULL), DBPOOL_OK);
    assert_int_equal(dbpool_release(held), DBPOOL_OK); /* frees the pool */
}

/* With leak detection on, a lease's stack starts at the function that
 * asked for it: operations.md promises the caller as the first frame
 * (#0). Through dbpool_manager_acquire the first frame was
 * dbpool_manager_acquire itself, one of the four frames a timeout's
 * error shows. */
dbpool_conn *manager_named_holder(dbpool_manager *m);
__attribute__((noinline)) dbpool_conn *manager_named_holder(dbpool_manager *m) {
    dbpool_conn *c = NULL;
    if (dbpool_manager_acquire(m, "traced", 1000, &c, NULL) != DBPOOL_OK)
        return NULL;
    __asm__ __volatile__("" ::: "memory"); /* no tail call: this frame stays */
    return c;
}

static void test_lease_by_name_traced_from_its_caller(void **state) {
    (void)state;
    dbpool_manager *m = NULL;
    assert_int_equal(dbpool_manager_new(&m), DBPOOL_OK);
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.leak_threshold_ms = 600000; /* traces kept, no report in this test */
    o.maintenance_interval_ms = 1000;
    dbpool_error e;
    assert_int_equal(dbpool_manager_open(m, "traced", "mock:", &o, &e), DBPOOL_OK);
    dbpool_conn *held = manager_named_holder(m);
    assert_non_null(held);
    dbpool_conn *c = NULL;
    assert_int_equal(dbpool_manager_acquire(m, "traced", 50, &c, &e), DBPOOL_ETIMEDOUT);
    const char *f = strstr(e.message, "acquired at:\n  #0 ");
    if (!f)
        fail_msg("no stack in the timeout error: %s", e.message);
    const char *eol = strchr(f + 14, '\n');
    const char *hit = strstr(f + 14, "manager_named_holder");
    if (!hit || (eol && hit > eol))
        fail_msg("the first frame should be the caller of dbpool_manager_acquire: %s", e.message);
    assert_int_equal(dbpool_release(held), DBPOOL_OK);
    assert_int_equal(dbpool_manager_free(m), DBPOOL_OK);
}

/* A log callback that reads the manager (its JSON, a lookup, a close by
 * name) while dbpool_manager_free closes the pools: the free ran through
 * its table without the lock, with the pools it had closed still in it, so
 * such a callback, called by the free itself ("closing ..." lines), read
 * closed and freed pools (ASan: heap-use-after-free), and its close by
 * name closed a pool a second time. The free takes the table out of the
 * manager first: during the free the manager is empty, and a pool the
 * callback opens meanwhile is closed as well. */
typedef struct during_free {
    dbpool_manager *m;
    atomic_int calls, seen_pools, close_rc, opened;
} during_free;

static void read_manager_on_close(void *user, dbpool_log_level level, const char *line) {
    (void)level;
    during_free *d = user;
    if (!d->m || !strstr(line, "closing ("))
        return;
    atomic_fetch_add(&d->calls, 1);
    char buf[1 << 15];
    int n = dbpool_manager_stats_json(d->m, buf, sizeof buf);
    if (n <= 0 || (size_t)n >= sizeof buf || strstr(buf, "\"name\":\"a\"") || strstr(buf, "\"name\":\"b\"") ||
        strstr(buf, "\"name\":\"c\""))
        atomic_fetch_add(&d->seen_pools, 1);
    if (dbpool_manager_get(d->m, "a") || dbpool_manager_get(d->m, "b") || dbpool_manager_get(d->m, "c"))
        atomic_fetch_add(&d->seen_pools, 1);
    int rc = dbpool_manager_close_pool(d->m, "a");
    if (rc != DBPOOL_ENOTFOUND)
        atomic_store(&d->close_rc, rc);
    /* A pool opened meanwhile is closed by the free too. */
    if (atomic_load(&d->calls) == 1 && dbpool_manager_open(d->m, "late", "mock:", NULL, NULL) == DBPOOL_OK)
        atomic_fetch_add(&d->opened, 1);
}

static void test_log_callback_during_free(void **state) {
    (void)state;
    dbpool__mock_reset();
    during_free d;
    memset(&d, 0, sizeof d);
    atomic_init(&d.close_rc, DBPOOL_ENOTFOUND);
    dbpool_manager *m = NULL;
    assert_int_equal(dbpool_manager_new(&m), DBPOOL_OK);
    dbpool_options o;
    dbt_options(&o, 1, 2);
    o.maintenance_interval_ms = 0;
    o.log_fn = read_manager_on_close;
    o.log_user = &d;
    o.log_level = DBPOOL_LOG_INFO;
    dbpool_error e;
    assert_int_equal(dbpool_manager_open(m, "a", "mock:", &o, &e), DBPOOL_OK);
    assert_int_equal(dbpool_manager_open(m, "b", "mock:", &o, &e), DBPOOL_OK);
    assert_int_equal(dbpool_manager_open(m, "c", "mock:", &o, &e), DBPOOL_OK);
    d.m = m;
    assert_int_equal(dbpool_manager_free(m), DBPOOL_OK);
    d.m = NULL;
    assert_int_equal(atomic_load(&d.calls), 3); /* one "closing (...)" line per pool */
    assert_int_equal(atomic_load(&d.seen_pools), 0);
    assert_int_equal(atomic_load(&d.close_rc), DBPOOL_ENOTFOUND);
    assert_int_equal(atomic_load(&d.opened), 1);
    dbpool__mock_counters mc;
    dbpool__mock_get_counters(&mc);
    assert_int_equal(mc.live, 0); /* "late" too */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_get_close),
        cmocka_unit_test(test_direct_close_of_a_managed_pool),
        cmocka_unit_test(test_free_while_an_open_runs),
        cmocka_unit_test(test_acquire_by_name_racing_close),
        cmocka_unit_test(test_names_listed_while_pools_close),
        cmocka_unit_test(test_open_close_not_starved_by_lookups),
        cmocka_unit_test(test_every_call_at_once),
        cmocka_unit_test(test_close_pool_from_its_own_thread),
        cmocka_unit_test(test_free_manager_from_a_pools_own_thread),
        cmocka_unit_test(test_names_that_would_collide),
        cmocka_unit_test(test_concurrent_opens_of_one_name),
        cmocka_unit_test(test_stats_json_while_pools_work),
        cmocka_unit_test(test_stats_json_racing_close),
        cmocka_unit_test(test_close_pool_in_forked_child),
        cmocka_unit_test(test_fork_while_another_thread_looks_up),
        cmocka_unit_test(test_stats_json_in_forked_child),
        cmocka_unit_test(test_unknown_name_strerror),
        cmocka_unit_test(test_name_kept_after_a_failed_reopen),
        cmocka_unit_test(test_parents_pools_in_forked_child),
        cmocka_unit_test(test_stats_by_name_and_prometheus),
        cmocka_unit_test(test_stats_racing_reload),
        cmocka_unit_test(test_free_with_waiters_by_name),
        cmocka_unit_test(test_lease_by_name_traced_from_its_caller),
        cmocka_unit_test(test_log_callback_during_free),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
