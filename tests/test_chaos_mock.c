/*
 * test_chaos_mock.c — many faults at once, checked by invariants, on the
 * mock backend.
 *
 * Several worker threads acquire (with random timeouts), try_acquire, run
 * statements (queries, BEGIN left open, FAIL, BREAK, SLEEP), and release or
 * discard, for a bounded time, while a chaos thread at random fails and
 * stalls connects, fails and stalls validation pings, fails resets, makes
 * resets clear the session, resizes, suspends and resumes, shrinks and
 * resets the breaker, and has after_connect reject new sessions. log_fn
 * reads the pool's stats from inside log lines. Leak reclaim, autoscale,
 * validation mode, keepalive and the thread cache vary with the seed. A
 * sampler checks dbpool_get_stats all the while.
 * Then the faults clear and the pool must recover to min_size by itself,
 * and finally it is closed with leases out and callers waiting.
 *
 * Checked:
 *  - every acquire returns by its deadline plus one validation (the
 *    documented overrun) plus a margin; try_acquire and a timeout of 0
 *    within connect_timeout_ms plus one validation plus the margin;
 *  - only documented codes, each with a message;
 *  - no connection is leased to two threads at once, none is handed out in
 *    a transaction, and none that a holder broke is handed out again;
 *  - at every sample: total == idle + in_use + connecting, no count below
 *    0, total within the largest cap set, counters never go back, created -
 *    destroyed >= idle + in_use;
 *  - after the faults clear: min_size idle by itself; the stats count as
 *    many acquires and timeouts as the workers saw; a smaller max closes
 *    idle connections above it at once; a plain acquire works, and so do
 *    max_size leases at once (no place lost), but not one more;
 *  - close with leases out returns their number, wakes the waiters with
 *    DBPOOL_ECLOSED, the leases stay usable and their release frees
 *    everything: no connection, thread or descriptor is left.
 *
 * DBPOOL_CHAOS_SEED=N replays a run (the seed is printed); DBPOOL_CHAOS_MS
 * sets how long the chaos lasts (default 2500); DBPOOL_CHAOS_MARGIN_MS the
 * margin on deadlines (default 400, for loaded and sanitizer builds).
 */
#include "chaos.h"
#include "driver_mock.h"
#include "testsupport.h"

#include <dirent.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#define WORKERS 6
#define MAX_IDS (1 << 20)
#define MAX_CAP 8

static const int64_t CONNECT_TIMEOUT_MS = 150;
static const int64_t VALIDATION_TIMEOUT_MS = 100;
static const int64_t ACQUIRE_TIMEOUT_MS = 200;
static const int MIN_SIZE = 2, MAX_SIZE = 6;

/* ---------------------------------------------------------------------- */
/* What went wrong, recorded by any thread, asserted on the main one.      */

/* ---------------------------------------------------------------------- */

typedef struct chaos {
    dbpool *p;
    uint64_t seed;
    int64_t margin_ms;
    atomic_bool stop;
    atomic_bool reject_sessions; /* after_connect rejects every connection while set */
    atomic_bool pool_open;       /* log_fn may read the pool's stats */
    atomic_long log_lines, rejected;
    atomic_int max_cap_seen; /* the largest max_size set during the run */
    /* Who holds each mock connection (by its id): 0 nobody, else the
     * worker's number + 1. */
    atomic_int owner[MAX_IDS];
    atomic_bool broken[MAX_IDS]; /* a holder broke it: never handed out again */
    atomic_llong worst_overrun_ms;
    atomic_long acquires, ok, timeouts, busy, unavailable, connect_errors;
    atomic_long idle_timeouts; /* timeouts whose message shows a connection idle, nobody else waiting */
    bool fails_fast, autoscale, reclaim;
} chaos;

static chaos *C;

static void note_overrun(int64_t over) {
    long long cur = atomic_load(&C->worst_overrun_ms);
    while (over > cur && !atomic_compare_exchange_weak(&C->worst_overrun_ms, &cur, over))
        ;
}

static bool code_expected(int rc) {
    return rc == DBPOOL_OK || rc == DBPOOL_ETIMEDOUT || rc == DBPOOL_EBUSY || rc == DBPOOL_EUNAVAILABLE ||
           rc == DBPOOL_ECONNECT || rc == DBPOOL_EAUTH;
}

/* Acquire one way or another, checking time and code; the lease or NULL. */
static dbpool_conn *chaos_acquire(int who, uint64_t *rs) {
    dbpool_conn *c = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int kind = dbt_rnd(rs, 10);
    int64_t timeout = 0, bound;
    int rc;
    int64_t t0 = dbt_now_ms();
    if (kind == 0) {
        rc = dbpool_try_acquire(C->p, &c, &e);
        bound = CONNECT_TIMEOUT_MS + VALIDATION_TIMEOUT_MS;
    } else {
        timeout = kind == 1 ? 0 : kind == 2 ? -1 : dbt_rnd(rs, 300);
        rc = dbpool_acquire(C->p, timeout, &c, &e);
        int64_t t = timeout < 0 ? ACQUIRE_TIMEOUT_MS : timeout;
        /* A timeout of 0 may connect on this thread. */
        bound = (t == 0 ? CONNECT_TIMEOUT_MS : t) + VALIDATION_TIMEOUT_MS;
    }
    int64_t took = dbt_now_ms() - t0;
    atomic_fetch_add(&C->acquires, 1);
    if (kind != 0 && timeout != 0)
        note_overrun(took - (timeout < 0 ? ACQUIRE_TIMEOUT_MS : timeout));
    if (took > bound + C->margin_ms)
        dbt_chaos_fail("worker %d: %s(%lld ms) took %lld ms (bound %lld + margin %lld): %s: %s", who,
                       kind == 0 ? "try_acquire" : "acquire", (long long)timeout, (long long)took,
                       (long long)bound, (long long)C->margin_ms, dbpool_errname(rc), e.message);
    if (!code_expected(rc))
        dbt_chaos_fail("worker %d: acquire returned %s: %s", who, dbpool_errname(rc), e.message);
    if (rc != DBPOOL_OK && e.message[0] == '\0')
        dbt_chaos_fail("worker %d: acquire returned %s without a message", who, dbpool_errname(rc));
    if (rc == DBPOOL_OK && !c)
        dbt_chaos_fail("worker %d: acquire returned OK without a lease", who);
    if (rc == DBPOOL_ETIMEDOUT && strncmp(e.message, "timed out after", 15) == 0) {
        atomic_fetch_add(&C->timeouts, 1); /* else a connect's own timeout */
        int in_use = 0, idle = 0, connecting = 0, waiting = 0, pinged = 0;
        const char *q = strchr(e.message, '(');
        const char *k = strstr(e.message, " in a keepalive ping");
        if (k) {
            while (k > e.message && k[-1] >= '0' && k[-1] <= '9')
                k--;
            pinged = atoi(k);
        }
        if (q &&
            sscanf(q, "(%d in use, %d idle, %d connecting, %d waiting", &in_use, &idle, &connecting,
                   &waiting) == 4 &&
            idle > pinged && waiting == 0 && !strstr(e.message, "suspended") &&
            atomic_fetch_add(&C->idle_timeouts, 1) == 0)
            /* Not a failure by itself: that connection may need a check
             * no acquire starts past its deadline, or have come a moment
             * late. Reported, to look at. */
            fprintf(stderr,
                    "note: worker %d, acquire(%lld) timed out with a connection idle and nobody else "
                    "waiting: %s\n",
                    who, (long long)timeout, e.message);
    } else if (rc == DBPOOL_ETIMEDOUT)
        atomic_fetch_add(&C->connect_errors, 1);
    else if (rc == DBPOOL_EBUSY)
        atomic_fetch_add(&C->busy, 1);
    else if (rc == DBPOOL_EUNAVAILABLE)
        atomic_fetch_add(&C->unavailable, 1);
    else if (rc != DBPOOL_OK)
        atomic_fetch_add(&C->connect_errors, 1);
    if (rc != DBPOOL_OK)
        return NULL;
    atomic_fetch_add(&C->ok, 1);
    void *native = dbpool_conn_native(c);
    if (!native) {
        dbt_chaos_fail("worker %d: a lease without a native handle", who);
        return c;
    }
    int id = dbpool__mock_conn_id(native);
    if (id > 0 && id < MAX_IDS) {
        int expected = 0;
        if (!atomic_compare_exchange_strong(&C->owner[id], &expected, who + 1))
            dbt_chaos_fail("worker %d got connection %d, which worker %d holds", who, id, expected - 1);
        if (atomic_load(&C->broken[id]))
            dbt_chaos_fail("worker %d got connection %d, which a holder broke before", who, id);
    }
    if (dbpool__mock_in_transaction(native))
        dbt_chaos_fail("worker %d got connection %d in a transaction", who, id);
    return c;
}

static void chaos_give_back(int who, dbpool_conn *c, bool discard) {
    void *native = dbpool_conn_native(c);
    int id = native ? dbpool__mock_conn_id(native) : 0;
    if (id > 0 && id < MAX_IDS) {
        int expected = who + 1;
        if (!atomic_compare_exchange_strong(&C->owner[id], &expected, 0))
            dbt_chaos_fail("worker %d gives back connection %d, held by %d", who, id, expected - 1);
    }
    int64_t t0 = dbt_now_ms();
    int rc = discard ? dbpool_discard(c) : dbpool_release(c);
    int64_t took = dbt_now_ms() - t0;
    /* A reset and the init_sql after it share validation_timeout_ms. */
    if (took > VALIDATION_TIMEOUT_MS + C->margin_ms)
        dbt_chaos_fail("worker %d: %s took %lld ms (validation_timeout_ms %lld + margin %lld)", who,
                       discard ? "discard" : "release", (long long)took, (long long)VALIDATION_TIMEOUT_MS,
                       (long long)C->margin_ms);
    if (rc != DBPOOL_OK)
        dbt_chaos_fail("worker %d: %s returned %s", who, discard ? "discard" : "release", dbpool_errname(rc));
}

/* Statements on a lease, some of which break it or leave a transaction open. */
static void chaos_use(int who, dbpool_conn *c, uint64_t *rs) {
    void *native = dbpool_conn_native(c);
    int id = dbpool__mock_conn_id(native);
    int n = dbt_rnd(rs, 4);
    for (int i = 0; i < n; i++) {
        dbpool_error e;
        memset(&e, 0, sizeof e);
        switch (dbt_rnd(rs, 12)) {
        case 0:
        case 1:
        case 2: {
            dbpool_result *r = NULL;
            int rc = dbpool_query(c, "SELECT conn_id", NULL, 0, &r, &e);
            if (rc == DBPOOL_OK) {
                if (dbpool_result_next(r, &e) == 1) {
                    const char *t = dbpool_result_text(r, 0, NULL);
                    if (!t || atoi(t) != id)
                        dbt_chaos_fail("worker %d: query on connection %d answered from %s", who, id,
                                       t ? t : "?");
                }
                dbpool_result_free(r);
            } else if (!atomic_load(&C->broken[id])) {
                dbt_chaos_fail("worker %d: query on healthy connection %d failed: %s", who, id, e.message);
            }
            break;
        }
        case 3:
        case 4:
        case 5:
            (void)dbpool_exec(c, "BEGIN", NULL, 0, NULL, &e); /* often left open */
            break;
        case 6:
            (void)dbpool_exec(c, "COMMIT", NULL, 0, NULL, &e);
            break;
        case 7:
            (void)dbpool_exec(c, "FAIL", NULL, 0, NULL, &e);
            break;
        case 8:
            if (dbt_rnd(rs, 4) == 0) {
                atomic_store(&C->broken[id], true);
                (void)dbpool_exec(c, "BREAK", NULL, 0, NULL, &e);
            }
            break;
        case 9:
            if (dbt_rnd(rs, 6) == 0) { /* behind the pool's back */
                atomic_store(&C->broken[id], true);
                dbpool__mock_kill(native);
            }
            break;
        default: {
            char sql[32];
            snprintf(sql, sizeof sql, "SLEEP %d", dbt_rnd(rs, 15));
            (void)dbpool_exec(c, sql, NULL, 0, NULL, &e);
            break;
        }
        }
    }
}

typedef struct worker {
    int who;
    pthread_t t;
} worker;

static void *worker_main(void *arg) {
    worker *w = arg;
    uint64_t rs = C->seed * 0x9E3779B97F4A7C15ULL + (uint64_t)w->who * 7919 + 1;
    while (!atomic_load(&C->stop)) {
        dbpool_conn *c = chaos_acquire(w->who, &rs);
        if (!c) {
            if (dbt_rnd(&rs, 3) == 0)
                dbt_sleep_ms(dbt_rnd(&rs, 5));
            continue;
        }
        chaos_use(w->who, c, &rs);
        if (dbt_rnd(&rs, 4) == 0)
            dbt_sleep_ms(dbt_rnd(&rs, dbt_rnd(&rs, 10) == 0 ? 150 : 30)); /* some past leak_reclaim_ms */
        chaos_give_back(w->who, c, dbt_rnd(&rs, 6) == 0);
    }
    return NULL;
}

/* ---------------------------------------------------------------------- */

static int chaos_after_connect(void *native, void *user) {
    (void)native, (void)user;
    if (atomic_load(&C->reject_sessions)) {
        atomic_fetch_add(&C->rejected, 1);
        return 1;
    }
    return 0;
}

/* Reads the pool from inside a log line, as docs/threading.md allows. */
static void chaos_log(void *user, dbpool_log_level level, const char *line) {
    (void)user, (void)level, (void)line;
    atomic_fetch_add(&C->log_lines, 1);
    if (atomic_load(&C->pool_open)) {
        dbpool_stats s;
        dbpool_get_stats(C->p, &s);
        if (s.total != s.idle + s.in_use + s.connecting)
            dbt_chaos_fail("from log_fn: total %d != idle %d + in_use %d + connecting %d", s.total, s.idle,
                           s.in_use, s.connecting);
    }
}

static void faults_clear(void) {
    atomic_store(&C->reject_sessions, false);
    dbpool__mock_fail_connect(0, 0, 0);
    dbpool__mock_fail_ping(0, 0);
    dbpool__mock_fail_reset(0, 0);
    dbpool__mock_set_connect_delay_ms(0);
    dbpool__mock_set_ping_delay_ms(0);
    dbpool__mock_set_reset_clears_session(false);
}

static void *chaos_main(void *arg) {
    (void)arg;
    uint64_t rs = C->seed ^ 0xC0FFEE;
    bool suspended = false;
    while (!atomic_load(&C->stop)) {
        dbt_sleep_ms(2 + dbt_rnd(&rs, 40));
        dbpool__mock_counters mc;
        dbpool__mock_get_counters(&mc);
        dbpool_error e;
        memset(&e, 0, sizeof e);
        switch (dbt_rnd(&rs, 15)) {
        case 0:
            dbpool__mock_fail_connect(mc.connects + 1 + dbt_rnd(&rs, 3), 1 + dbt_rnd(&rs, 6),
                                      dbt_rnd(&rs, 10) == 0 ? DBPOOL_EAUTH : DBPOOL_ECONNECT);
            break;
        case 1:
            dbpool__mock_set_connect_delay_ms(dbt_rnd(&rs, 3) ? dbt_rnd(&rs, 20)
                                                              : dbt_rnd(&rs, (int)CONNECT_TIMEOUT_MS * 2));
            break;
        case 2:
            dbpool__mock_fail_ping(mc.pings + 1, 1 + dbt_rnd(&rs, 5));
            break;
        case 3:
            dbpool__mock_set_ping_delay_ms(dbt_rnd(&rs, 3) ? dbt_rnd(&rs, 10)
                                                           : dbt_rnd(&rs, (int)VALIDATION_TIMEOUT_MS * 2));
            break;
        case 4:
            dbpool__mock_fail_reset(mc.resets + 1, 1 + dbt_rnd(&rs, 5));
            break;
        case 5:
            dbpool__mock_set_reset_clears_session(dbt_rnd(&rs, 2));
            break;
        case 6:
        case 7: {
            int mn = dbt_rnd(&rs, 4), mx = mn + dbt_rnd(&rs, MAX_CAP - mn) + (mn == 0);
            if (mx > MAX_CAP)
                mx = MAX_CAP;
            if (mx < 1)
                mx = 1;
            int seen = atomic_load(&C->max_cap_seen);
            if (mx > seen)
                atomic_store(&C->max_cap_seen, mx);
            int rc = dbpool_resize(C->p, mn, mx, &e);
            if (rc != DBPOOL_OK)
                dbt_chaos_fail("resize(%d, %d): %s: %s", mn, mx, dbpool_errname(rc), e.message);
            break;
        }
        case 8:
            if (!suspended && dbt_rnd(&rs, 2) == 0) {
                dbpool_suspend(C->p);
                suspended = true;
            }
            break;
        case 9:
        case 10:
        case 13:
            if (suspended) {
                dbpool_resume(C->p);
                suspended = false;
            }
            break;
        case 11: {
            int rc = dbpool_shrink(C->p, dbt_rnd(&rs, 3));
            if (rc < 0)
                dbt_chaos_fail("shrink: %s", dbpool_errname(rc));
            break;
        }
        case 12:
            if (dbt_rnd(&rs, 2))
                dbpool_breaker_reset(C->p);
            else
                atomic_store(&C->reject_sessions, dbt_rnd(&rs, 3) == 0);
            break;
        default:
            faults_clear();
            break;
        }
    }
    if (suspended)
        dbpool_resume(C->p);
    return NULL;
}

/* ---------------------------------------------------------------------- */

static const char *const counter_names[] = {"created",
                                            "reused",
                                            "destroyed",
                                            "acquired",
                                            "timeouts",
                                            "connect_errors",
                                            "validation_failures",
                                            "rollbacks",
                                            "breaker_opens",
                                            "breaker_half_opens",
                                            "breaker_closes"};
#define N_COUNTERS (sizeof counter_names / sizeof counter_names[0])

static void counters_of(const dbpool_stats *s, uint64_t v[N_COUNTERS]) {
    uint64_t x[N_COUNTERS] = {s->created,
                              s->reused,
                              s->destroyed,
                              s->acquired,
                              s->timeouts,
                              s->connect_errors,
                              s->validation_failures,
                              s->rollbacks,
                              s->breaker_opens,
                              s->breaker_half_opens,
                              s->breaker_closes};
    memcpy(v, x, sizeof x);
}

static void check_sample(const dbpool_stats *s, uint64_t prev[N_COUNTERS], long n) {
    int cap_bound = atomic_load(&C->max_cap_seen);
    if (s->total != s->idle + s->in_use + s->connecting)
        dbt_chaos_fail("sample %ld: total %d != idle %d + in_use %d + connecting %d", n, s->total, s->idle,
                       s->in_use, s->connecting);
    if (s->idle < 0 || s->in_use < 0 || s->connecting < 0 || s->waiting < 0 || s->reclaimed_out < 0 ||
        s->thread_cached < 0)
        dbt_chaos_fail("sample %ld: a count below 0 (idle %d in_use %d connecting %d waiting %d)", n, s->idle,
                       s->in_use, s->connecting, s->waiting);
    if (s->total > cap_bound)
        dbt_chaos_fail("sample %ld: total %d above every cap set (%d)", n, s->total, cap_bound);
    if (s->cap < s->min_size || s->cap > s->max_size)
        dbt_chaos_fail("sample %ld: cap %d outside min %d .. max %d", n, s->cap, s->min_size, s->max_size);
    if (s->peak_in_use < s->in_use)
        dbt_chaos_fail("sample %ld: peak_in_use %d below in_use %d", n, s->peak_in_use, s->in_use);
    if (s->created < s->destroyed || s->created - s->destroyed < (uint64_t)(s->idle + s->in_use))
        dbt_chaos_fail("sample %ld: created %llu - destroyed %llu below idle %d + in_use %d", n,
                       (unsigned long long)s->created, (unsigned long long)s->destroyed, s->idle, s->in_use);
    uint64_t by = 0;
    for (int i = 0; i < DBPOOL_CLOSE_REASON_COUNT; i++)
        by += s->destroyed_by[i];
    if (by != s->destroyed)
        dbt_chaos_fail("sample %ld: destroyed %llu but the reasons add up to %llu", n,
                       (unsigned long long)s->destroyed, (unsigned long long)by);
    uint64_t v[N_COUNTERS];
    counters_of(s, v);
    for (size_t i = 0; i < N_COUNTERS; i++) {
        if (v[i] < prev[i])
            dbt_chaos_fail("sample %ld: %s went back from %llu to %llu", n, counter_names[i],
                           (unsigned long long)prev[i], (unsigned long long)v[i]);
        prev[i] = v[i];
    }
}

static atomic_long samples;

static void *sampler_main(void *arg) {
    (void)arg;
    uint64_t prev[N_COUNTERS] = {0};
    while (!atomic_load(&C->stop)) {
        dbpool_stats s;
        dbpool_get_stats(C->p, &s);
        check_sample(&s, prev, atomic_fetch_add(&samples, 1));
        dbt_sleep_ms(1);
    }
    return NULL;
}

/* ---------------------------------------------------------------------- */
/* The end: close with leases out and callers waiting.                    */

typedef struct closer_arg {
    dbpool *p;
    int rc;
    dbpool_conn *lease;
    char msg[256];
} closer_arg;

static void *waiter_main(void *arg) {
    closer_arg *a = arg;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    a->rc = dbpool_acquire(a->p, 10000, &a->lease, &e);
    snprintf(a->msg, sizeof a->msg, "%s", e.message);
    return NULL;
}

static void test_chaos(void **state) {
    (void)state;
    dbpool__mock_reset();
    C = calloc(1, sizeof *C);
    assert_non_null(C);
    C->seed = dbt_chaos_seed();
    if (C->seed == 0)
        C->seed = 1;
    int64_t run_ms = dbt_env_ms("DBPOOL_CHAOS_MS", 2500);
    C->margin_ms = dbt_env_ms("DBPOOL_CHAOS_MARGIN_MS", 400);
    fprintf(stderr, "chaos seed %llu (replay with DBPOOL_CHAOS_SEED=%llu), %lld ms\n",
            (unsigned long long)C->seed, (unsigned long long)C->seed, (long long)run_ms);
    uint64_t rs = C->seed;
    dbt_settle_runtime_threads();
    int tasks0 = dbt_count_dir("/proc/self/task"), fds0 = dbt_count_dir("/proc/self/fd");

    dbpool_options o;
    dbt_options(&o, MIN_SIZE, MAX_SIZE);
    o.acquire_timeout_ms = ACQUIRE_TIMEOUT_MS;
    o.connect_timeout_ms = CONNECT_TIMEOUT_MS;
    o.validation_timeout_ms = VALIDATION_TIMEOUT_MS;
    o.max_retries = 2;
    o.backoff_base_ms = 5;
    o.backoff_max_ms = 20;
    o.maintenance_interval_ms = 20;
    o.idle_timeout_ms = 300;
    o.max_lifetime_ms = 400 + dbt_rnd(&rs, 400);
    o.breaker_failures = 6;
    o.breaker_cooldown_ms = 60;
    o.init_sql =
        dbt_rnd(&rs, 2) ? "SELECT 1" : "SLEEP 20"; /* a slow one: every new session, every cleared reset */
    o.suspend_fails_fast = C->fails_fast = dbt_rnd(&rs, 2);
    o.validation = dbt_rnd(&rs, 3) == 0 ? DBPOOL_VALIDATE_ALWAYS : DBPOOL_VALIDATE_IF_IDLE;
    o.validation_window_ms = dbt_rnd(&rs, 2) ? 0 : 20;
    if (dbt_rnd(&rs, 2))
        o.keepalive_ms = 30;
    o.thread_cache = dbt_rnd(&rs, 3) != 0;
    o.after_connect = chaos_after_connect;
    o.log_fn = chaos_log;
    o.log_level = DBPOOL_LOG_DEBUG;
    if (dbt_rnd(&rs, 3) == 0) { /* leases held long are reported, then reclaimed */
        C->reclaim = true;
        o.leak_threshold_ms = 40;
        o.leak_reclaim_ms = 80;
    }
    if (dbt_rnd(&rs, 3) == 0) {
        o.autoscale = C->autoscale = true;
        o.autoscale_interval_ms = 30;
    }
    fprintf(stderr,
            "options: fails_fast %d validation %d window %lld keepalive %lld thread_cache %d "
            "lifetime %lld leak_reclaim %lld autoscale %d\n",
            o.suspend_fails_fast, (int)o.validation, (long long)o.validation_window_ms,
            (long long)o.keepalive_ms, o.thread_cache, (long long)o.max_lifetime_ms,
            (long long)o.leak_reclaim_ms, o.autoscale);
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int rc = dbpool_open(&C->p, "mock:", &o, &e);
    if (rc != DBPOOL_OK)
        fail_msg("open: %s", e.message);
    atomic_store(&C->max_cap_seen, MAX_SIZE);
    atomic_store(&C->pool_open, true);

    worker ws[WORKERS];
    pthread_t chaos_t, sampler_t;
    for (int i = 0; i < WORKERS; i++) {
        ws[i].who = i;
        assert_int_equal(pthread_create(&ws[i].t, NULL, worker_main, &ws[i]), 0);
    }
    assert_int_equal(pthread_create(&chaos_t, NULL, chaos_main, NULL), 0);
    assert_int_equal(pthread_create(&sampler_t, NULL, sampler_main, NULL), 0);
    dbt_sleep_ms(run_ms);
    atomic_store(&C->stop, true);
    for (int i = 0; i < WORKERS; i++)
        pthread_join(ws[i].t, NULL);
    pthread_join(chaos_t, NULL);
    pthread_join(sampler_t, NULL);

    /* The faults clear; the pool must come back by itself. */
    faults_clear();
    dbpool_resume(C->p);
    assert_int_equal(dbpool_resize(C->p, MIN_SIZE, MAX_SIZE, &e), DBPOOL_OK);
    dbpool_breaker_reset(C->p);
    dbpool_stats s;
    int64_t until = dbt_now_ms() + 5000;
    for (;;) {
        dbpool_get_stats(C->p, &s);
        if (s.idle >= MIN_SIZE && s.connecting == 0)
            break;
        if (dbt_now_ms() > until) {
            dbt_chaos_fail(
                "no recovery to min_size %d within 5 s: idle %d in_use %d connecting %d waiting %d "
                "breaker %s suspended %d",
                MIN_SIZE, s.idle, s.in_use, s.connecting, s.waiting, dbpool_breaker_state_name(s.breaker),
                s.suspended);
            break;
        }
        dbt_sleep_ms(5);
    }
    assert_int_equal(s.in_use, 0);
    assert_int_equal(s.waiting, 0);
    assert_int_equal(s.reclaimed_out, 0);
    if (s.acquired != (uint64_t)atomic_load(&C->ok))
        dbt_chaos_fail("at rest: stats say %llu acquires, the workers got %ld leases",
                       (unsigned long long)s.acquired, atomic_load(&C->ok));
    if (s.timeouts != (uint64_t)atomic_load(&C->timeouts))
        dbt_chaos_fail("at rest: stats say %llu timeouts, the workers saw %ld",
                       (unsigned long long)s.timeouts, atomic_load(&C->timeouts));
    /* A smaller cap: idle connections above it go at once. */
    assert_int_equal(dbpool_resize(C->p, 1, 1, &e), DBPOOL_OK);
    dbpool_get_stats(C->p, &s);
    if (s.total > 1)
        dbt_chaos_fail("at rest, resized to max 1: total %d (idle %d, connecting %d)", s.total, s.idle,
                       s.connecting);
    assert_int_equal(dbpool_resize(C->p, MIN_SIZE, MAX_SIZE, &e), DBPOOL_OK);
    /* A connection the maintenance thread took out to close has left
     * total at once, but stays live and out of destroyed until its close
     * is over: read at a moment with none in flight. */
    dbpool__mock_counters mc;
    until = dbt_now_ms() + 5000;
    for (;;) {
        dbpool_get_stats(C->p, &s);
        dbpool__mock_get_counters(&mc);
        if (s.idle >= MIN_SIZE && s.connecting == 0 && mc.live == s.total &&
            s.created - s.destroyed == (uint64_t)s.total)
            break;
        if (dbt_now_ms() > until) {
            if (s.idle < MIN_SIZE || s.connecting > 0)
                dbt_chaos_fail("no refill to min_size %d within 5 s after a resize: idle %d connecting %d",
                               MIN_SIZE, s.idle, s.connecting);
            break;
        }
        dbt_sleep_ms(5);
    }
    if ((uint64_t)mc.live != s.created - s.destroyed || mc.live != s.total)
        dbt_chaos_fail("at rest: %ld mock connections live, created %llu - destroyed %llu, total %d", mc.live,
                       (unsigned long long)s.created, (unsigned long long)s.destroyed, s.total);
    dbpool_conn *c = NULL;
    rc = dbpool_acquire(C->p, -1, &c, &e);
    if (rc != DBPOOL_OK)
        dbt_chaos_fail("a plain acquire after the chaos: %s: %s", dbpool_errname(rc), e.message);
    else
        dbpool_release(c);
    /* No place lost: max_size leases at once (the cap's, with autoscale),
     * and then no more. */
    dbpool_get_stats(C->p, &s);
    int places = C->autoscale ? s.cap : MAX_SIZE;
    dbpool_conn *all[MAX_SIZE];
    int got = 0;
    for (; got < places; got++) {
        rc = dbpool_acquire(C->p, 1000, &all[got], &e);
        if (rc != DBPOOL_OK) {
            dbt_chaos_fail("after the chaos, lease %d of max_size %d: %s: %s", got + 1, MAX_SIZE,
                           dbpool_errname(rc), e.message);
            break;
        }
    }
    if (got == places && !C->autoscale && !C->reclaim) { /* a lease held long frees its place */
        rc = dbpool_try_acquire(C->p, &c, &e);
        if (rc != DBPOOL_EBUSY)
            dbt_chaos_fail("after the chaos, a lease past max_size %d: %s", MAX_SIZE, dbpool_errname(rc));
        if (rc == DBPOOL_OK)
            dbpool_release(c);
    }
    while (got > 0)
        dbpool_release(all[--got]);
    fprintf(stderr,
            "%ld acquires: %ld ok, %ld timeouts, %ld busy, %ld unavailable, %ld connect errors; worst "
            "overrun of a deadline %lld ms; %ld timeouts with one idle; %ld samples; created %llu destroyed "
            "%llu\n",
            atomic_load(&C->acquires), atomic_load(&C->ok), atomic_load(&C->timeouts), atomic_load(&C->busy),
            atomic_load(&C->unavailable), atomic_load(&C->connect_errors),
            (long long)atomic_load(&C->worst_overrun_ms), atomic_load(&C->idle_timeouts),
            atomic_load(&samples), (unsigned long long)s.created, (unsigned long long)s.destroyed);

    /* Close with leases out and two callers waiting. */
    assert_int_equal(dbpool_resize(C->p, 1, 2, &e), DBPOOL_OK);
    dbpool_conn *held[2] = {NULL, NULL};
    for (int i = 0; i < 2; i++) {
        rc = dbpool_acquire(C->p, 2000, &held[i], &e);
        if (rc != DBPOOL_OK) {
            char first[1024];
            dbt_chaos_failures(first, sizeof first);
            fail_msg("lease %d before close: %s: %s (first failure: %s)", i, dbpool_errname(rc), e.message,
                     first);
        }
    }
    dbpool_exec(held[0], "BEGIN", NULL, 0, NULL, NULL);
    closer_arg wa[2];
    pthread_t wt[2];
    for (int i = 0; i < 2; i++) {
        wa[i] = (closer_arg){.p = C->p, .rc = 1};
        assert_int_equal(pthread_create(&wt[i], NULL, waiter_main, &wa[i]), 0);
    }
    dbt_wait_for_waiters(C->p, 2, 5000);
    atomic_store(&C->pool_open, false); /* log_fn reads the pool no more */
    int out = dbpool_close(C->p);
    for (int i = 0; i < 2; i++) {
        pthread_join(wt[i], NULL);
        if (wa[i].rc != DBPOOL_ECLOSED)
            dbt_chaos_fail("a caller waiting at close got %s: %s", dbpool_errname(wa[i].rc), wa[i].msg);
        if (wa[i].lease)
            dbpool_release(wa[i].lease);
    }
    if (out != 2)
        dbt_chaos_fail("close with 2 leases out returned %d", out);
    for (int i = 0; i < 2; i++) {
        dbpool_error qe;
        memset(&qe, 0, sizeof qe);
        if (dbpool_exec(held[i], "SELECT 1", NULL, 0, NULL, &qe) != DBPOOL_OK)
            dbt_chaos_fail("lease %d unusable after close: %s", i, qe.message);
        if (dbpool_release(held[i]) != DBPOOL_OK)
            dbt_chaos_fail("release of lease %d after close failed", i);
    }
    dbpool__mock_get_counters(&mc);
    if (mc.live != 0)
        dbt_chaos_fail("%ld mock connections left open after close and the last release", mc.live);
    int tasks1 = dbt_count_dir("/proc/self/task"), fds1 = dbt_count_dir("/proc/self/fd");
    if (tasks1 != tasks0)
        dbt_chaos_fail("%d threads before open, %d after close", tasks0, tasks1);
    if (fds1 != fds0)
        dbt_chaos_fail("%d descriptors before open, %d after close", fds0, fds1);
    uint64_t seed = C->seed;
    free(C);
    C = NULL;
    char first[1024];
    int failures = dbt_chaos_failures(first, sizeof first);
    if (failures)
        fail_msg("seed %llu: %d invariant failures; the first: %s", (unsigned long long)seed, failures,
                 first);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chaos),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
