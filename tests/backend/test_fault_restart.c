/*
 * test_fault_restart.c — the database server is stopped at once (pg_ctl -m
 * immediate / SIGKILL) and started again, once while the pool sits idle and
 * once under load (4 threads doing acquire / SELECT 1 / release):
 *
 *  - no dead connection is handed out after the restart: the first query on
 *    every lease obtained after the server is back succeeds. Validation
 *    setting used: the default DBPOOL_VALIDATE_IF_IDLE with a 100 ms window
 *    (the outage lasts longer than that, so every connection that lived
 *    through it is validated before it is handed out again);
 *  - callers get clear errors during the outage (codes from a known set,
 *    messages non-empty, no password);
 *  - the pool refills to min_size afterwards, and total == idle + in_use +
 *    connecting holds throughout.
 *
 * Prints the measured recovery time (restart done -> first successful
 * query) as `recovery_ms=<n>`. PostgreSQL and MariaDB only; needs the
 * servers of $DBPOOL_SERVER_DIR (scripts/test.sh).
 */
#include "backend_common.h"
#include "servers.h"

#include <pthread.h>
#include <stdatomic.h>

static void restart_options(dbpool_options *o, int min_size, int max_size) {
    dbt_options(o, min_size, max_size);
    o->validation = DBPOOL_VALIDATE_IF_IDLE;
    o->validation_window_ms = 100;
    o->validation_timeout_ms = 1000;
    o->maintenance_interval_ms = 100;
    o->acquire_timeout_ms = 2000;
    o->connect_timeout_ms = 1000;
    o->max_retries = 1;
    o->breaker_failures = 5;
    o->breaker_cooldown_ms = 1000;
}

/* SELECT 1 on a lease: DBPOOL_OK only when it returned the row 1. */
static int select_one(dbpool_conn *c, dbpool_error *e) {
    dbpool_result *r = NULL;
    int rc = dbpool_query(c, "SELECT 1", NULL, 0, &r, e);
    if (rc != DBPOOL_OK)
        return rc;
    rc = dbpool_result_next(r, e);
    int64_t v = rc == 1 ? dbpool_result_int64(r, 0) : -1;
    dbpool_result_free(r);
    if (rc < 0)
        return rc;
    if (v != 1) {
        e->code = DBPOOL_EQUERY;
        snprintf(e->message, sizeof e->message, "SELECT 1 returned %lld rows/value", (long long)v);
        return DBPOOL_EQUERY;
    }
    return DBPOOL_OK;
}

static const int acquire_codes[] = {DBPOOL_ETIMEDOUT, DBPOOL_ECONNECT, DBPOOL_EUNAVAILABLE, DBPOOL_EBROKEN};
static const int query_codes[] = {DBPOOL_EBROKEN, DBPOOL_EQUERY, DBPOOL_ETIMEDOUT};

static bool in_set(int rc, const int *set, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (set[i] == rc)
            return true;
    return false;
}

/* What the callers saw; written by workers under `lock`, read after join. */
typedef struct tally {
    pthread_mutex_t lock;
    long ok, ok_after, acquire_errors, query_errors, dead_after;
    long by_code[32];
    long bad_errors; /* unknown code, empty message or a password in it */
    char bad_example[600];
    char dead_example[600];
    char example[600]; /* one ordinary outage error, for the log */
    int64_t first_ok_after_ms;
} tally;

static void tally_init(tally *t) {
    memset(t, 0, sizeof *t);
    pthread_mutex_init(&t->lock, NULL);
}

static void note_error(tally *t, bool acquire, int rc, const dbpool_error *e, bool after_restart) {
    pthread_mutex_lock(&t->lock);
    if (acquire)
        t->acquire_errors++;
    else
        t->query_errors++;
    if (-rc >= 0 && -rc < 32)
        t->by_code[-rc]++;
    bool known = acquire ? in_set(rc, acquire_codes, sizeof acquire_codes / sizeof *acquire_codes)
                         : in_set(rc, query_codes, sizeof query_codes / sizeof *query_codes);
    bool bad = !known || e->message[0] == '\0' || dbt_has_secret(e->message, NULL);
    char line[600];
    snprintf(line, sizeof line, "%s %s: %s", acquire ? "acquire" : "query", dbpool_errname(rc), e->message);
    dbt_scrub_secrets(line, sizeof line, NULL);
    if (bad) {
        t->bad_errors++;
        if (!t->bad_example[0])
            snprintf(t->bad_example, sizeof t->bad_example, "%s", line);
    } else if (!t->example[0]) {
        snprintf(t->example, sizeof t->example, "%s", line);
    }
    if (!acquire && after_restart) {
        t->dead_after++;
        if (!t->dead_example[0])
            snprintf(t->dead_example, sizeof t->dead_example, "%s", line);
    }
    pthread_mutex_unlock(&t->lock);
}

typedef struct worker_ctx {
    dbpool *p;
    tally *t;
    atomic_bool *stop;
    _Atomic int64_t *restart_done_ms; /* 0 until the server is back */
} worker_ctx;

static void *worker_main(void *arg) {
    worker_ctx *w = arg;
    while (!atomic_load(w->stop)) {
        dbpool_conn *c = NULL;
        dbpool_error e;
        memset(&e, 0, sizeof e);
        int rc = dbpool_acquire(w->p, 1000, &c, &e);
        int64_t got = dbt_now_ms();
        int64_t done = atomic_load(w->restart_done_ms);
        bool after = done > 0 && got >= done;
        if (rc != DBPOOL_OK) {
            note_error(w->t, true, rc, &e, after);
            dbt_sleep_ms(5);
            continue;
        }
        memset(&e, 0, sizeof e);
        rc = select_one(c, &e);
        if (rc == DBPOOL_OK) {
            pthread_mutex_lock(&w->t->lock);
            w->t->ok++;
            if (after) {
                w->t->ok_after++;
                if (!w->t->first_ok_after_ms)
                    w->t->first_ok_after_ms = dbt_now_ms();
            }
            pthread_mutex_unlock(&w->t->lock);
        } else {
            note_error(w->t, false, rc, &e, after);
        }
        dbpool_release(c);
    }
    return NULL;
}

static void print_tally(const char *phase, tally *t) {
    print_message("[%s] %s: ok %ld (after restart %ld), acquire errors %ld, query errors %ld, bad %ld\n",
                  bt_backend, phase, t->ok, t->ok_after, t->acquire_errors, t->query_errors, t->bad_errors);
    for (int i = 1; i < 32; i++)
        if (t->by_code[i])
            print_message("[%s]   %s x%ld\n", bt_backend, dbpool_errname(-i), t->by_code[i]);
    if (t->example[0])
        print_message("[%s]   e.g. %s\n", bt_backend, t->example);
}

static void wait_refill(dbpool *p, int min_size, int64_t timeout_ms) {
    int64_t end = dbt_now_ms() + timeout_ms;
    dbpool_stats s = bt_stats(p);
    while (s.idle + s.in_use < min_size && dbt_now_ms() < end) {
        dbt_sleep_ms(20);
        s = bt_stats(p);
    }
    BT_CHECK(s.idle + s.in_use >= min_size,
             "the pool did not refill to min_size %d within %lld ms after the restart (idle %d, in use %d, "
             "connecting %d)",
             min_size, (long long)timeout_ms, s.idle, s.in_use, s.connecting);
}

static void kill_server(void) {
    int rc = dbt_server_kill(bt_backend);
    BT_CHECK(rc == 0, "stopping the %s server failed (script exit %d)", bt_backend, rc);
}

static int64_t restart_server(void) {
    int rc = dbt_server_restart(bt_backend);
    BT_CHECK(rc == 0, "restarting the %s server failed (script exit %d)", bt_backend, rc);
    return dbt_now_ms();
}

static void test_restart_while_idle(void **state) {
    (void)state;
    dbpool_options o;
    restart_options(&o, 3, 6);
    dbpool *p = bt_open(&o, NULL);
    /* Use one connection a few times (LIFO: always the same one); the other
     * two stay as warm-up left them, never handed out. Both kinds must be
     * checked after the restart. */
    for (int i = 0; i < 3; i++) {
        dbpool_conn *c = bt_acquire(p);
        assert_int_equal(bt_query_int(c, "SELECT 1", NULL, 0), 1);
        bt_release(c);
    }
    BT_CHECK(bt_stats(p).idle == 3, "expected 3 idle connections before the restart, got %d",
             bt_stats(p).idle);

    kill_server();
    dbt_sleep_ms(300);
    assert_true(dbt_invariant_holds(p));
    int64_t back = restart_server();

    /* Every lease handed out from now on must work at its first query.
     * Take three at once: the used connection and the two never used. */
    int64_t first_ok = 0;
    int leases = 0, acquire_failures = 0, dead = 0, rounds = 0;
    char last_err[600] = "", dead_msg[800] = "";
    while (leases < 6 && dbt_now_ms() - back < 15000) {
        rounds++;
        dbpool_conn *cs[3] = {NULL, NULL, NULL};
        int got = 0;
        for (int i = 0; i < 3; i++) {
            dbpool_error e;
            memset(&e, 0, sizeof e);
            int rc = dbpool_acquire(p, 2000, &cs[i], &e);
            if (rc != DBPOOL_OK) {
                acquire_failures++;
                BT_CHECK(in_set(rc, acquire_codes, sizeof acquire_codes / sizeof *acquire_codes) &&
                             e.message[0] && !dbt_has_secret(e.message, NULL),
                         "unclear acquire error after the restart: %s", dbpool_errname(rc));
                snprintf(last_err, sizeof last_err, "%s: %s", dbpool_errname(rc), e.message);
                dbt_scrub_secrets(last_err, sizeof last_err, NULL);
                break;
            }
            got++;
        }
        for (int i = 0; i < got; i++) {
            dbpool_error e;
            memset(&e, 0, sizeof e);
            int rc = select_one(cs[i], &e);
            if (rc != DBPOOL_OK) {
                /* Recorded, and the test goes on: how many were dead? */
                if (!dead++) {
                    dbpool_stats s = bt_stats(p);
                    snprintf(dead_msg, sizeof dead_msg,
                             "lease %d of round %d, %d good leases before: first query failed with %s: %s "
                             "(stats: created %llu, validation_failures %llu, destroyed_by[validation] %llu)",
                             i + 1, rounds, leases, dbpool_errname(rc), e.message,
                             (unsigned long long)s.created, (unsigned long long)s.validation_failures,
                             (unsigned long long)s.destroyed_by[DBPOOL_CLOSE_VALIDATION]);
                    dbt_scrub_secrets(dead_msg, sizeof dead_msg, NULL);
                }
                continue;
            }
            if (!first_ok)
                first_ok = dbt_now_ms();
            leases++;
        }
        for (int i = 0; i < got; i++)
            bt_release(cs[i]);
        if (got < 3)
            dbt_sleep_ms(50);
    }
    if (first_ok)
        printf("recovery_ms=%lld backend=%s phase=idle%s\n", (long long)(first_ok - back), bt_backend,
               dead ? " (after dead connections were handed out)" : "");
    fflush(stdout);
    if (dead) {
        dbpool_close(p); /* first: nothing left behind for the leak checker */
        fail_msg("[%s] %d dead connection(s) handed out after the restart; first: %s", bt_backend, dead,
                 dead_msg);
    }
    BT_CHECK(first_ok > 0, "no successful query within 15 s of the restart (%d acquire failures; last: %s)",
             acquire_failures, last_err);
    wait_refill(p, 3, 5000);
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

static void test_restart_under_load(void **state) {
    (void)state;
    dbpool_options o;
    restart_options(&o, 2, 6);
    dbpool *p = bt_open(&o, NULL);
    tally t;
    tally_init(&t);
    atomic_bool stop;
    atomic_init(&stop, false);
    _Atomic int64_t done;
    atomic_init(&done, 0);
    worker_ctx ctx = {p, &t, &stop, &done};
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, worker_main, &ctx), 0);

    bool invariant_ok = true;
    int64_t t0 = dbt_now_ms();
    while (dbt_now_ms() - t0 < 500) {
        invariant_ok &= dbt_invariant_holds(p);
        dbt_sleep_ms(10);
    }
    pthread_mutex_lock(&t.lock);
    long ok_before = t.ok;
    pthread_mutex_unlock(&t.lock);

    kill_server();
    int64_t killed = dbt_now_ms();
    while (dbt_now_ms() - killed < 1000) {
        invariant_ok &= dbt_invariant_holds(p);
        dbt_sleep_ms(10);
    }
    int64_t back = restart_server();
    atomic_store(&done, back);

    /* Run on until 1.5 s of successful traffic after the restart (at most
     * 20 s), so that many leases are checked after it. */
    for (;;) {
        invariant_ok &= dbt_invariant_holds(p);
        pthread_mutex_lock(&t.lock);
        int64_t first = t.first_ok_after_ms;
        pthread_mutex_unlock(&t.lock);
        int64_t now = dbt_now_ms();
        if ((first && now - first >= 1500) || now - back >= 20000)
            break;
        dbt_sleep_ms(10);
    }
    atomic_store(&stop, true);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    print_tally("under load", &t);

    BT_CHECK(ok_before > 0, "no successful query before the restart");
    BT_CHECK(invariant_ok, "total == idle + in_use + connecting was broken during the test");
    BT_CHECK(t.bad_errors == 0, "%ld unclear errors (unknown code, empty message or a password); first: %s",
             t.bad_errors, t.bad_example);
    BT_CHECK(t.acquire_errors + t.query_errors > 0, "the callers saw no error at all during a 1 s outage");
    BT_CHECK(t.dead_after == 0,
             "%ld leases handed out after the restart failed at their first query; first: %s", t.dead_after,
             t.dead_example);
    BT_CHECK(t.first_ok_after_ms > 0, "no successful query within 20 s of the restart");
    BT_CHECK(t.ok_after > 10, "only %ld successful queries after the restart", t.ok_after);
    printf("recovery_ms=%lld backend=%s phase=load\n", (long long)(t.first_ok_after_ms - back), bt_backend);
    fflush(stdout);

    wait_refill(p, 2, 5000);
    assert_true(dbt_invariant_holds(p));
    dbpool_stats s = bt_stats(p);
    BT_CHECK(s.in_use == 0 && s.waiting == 0, "after the workers stopped: in_use %d, waiting %d", s.in_use,
             s.waiting);
    assert_int_equal(dbpool_close(p), 0);
    pthread_mutex_destroy(&t.lock);
}

/* A failed test must not leave the next one without a server. */
static int server_up(void **state) {
    (void)state;
    return dbt_server_ensure_up(bt_backend) == 0 ? 0 : -1;
}

int main(int argc, char **argv) {
    bt_init(argc, argv);
    if (bt_is("sqlite")) {
        fprintf(stderr, "skipped: a server restart needs a server backend (pg or mysql)\n");
        return DBT_SKIP;
    }
    dbt_require_server_control(bt_backend);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_restart_while_idle, server_up),
        cmocka_unit_test_teardown(test_restart_under_load, server_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
