/*
 * test_thread_cache_races.c — the thread cache's lock-free windows
 * (src/sticky.c, docs/design.md "The thread cache"), all driven at once,
 * round after round, for a bounded time. Mock backend.
 *
 * Each round, on a pool of 1 to 3 connections:
 *  - more workers than connections take their parked connection back and
 *    give it back without the lock while others steal the free ones;
 *  - the maintenance thread, every millisecond, takes back parked ones
 *    unused for an interval (a fast release may come between its read of
 *    the last use and its compare-and-swap);
 *  - another thread resizes, suspends and resumes, shrinks (recalls: busy
 *    connections are marked wanted while their owner uses them) and reads
 *    the statistics and the histogram;
 *  - a short lifetime and validation window send leases taken back from
 *    the cache to the ordinary path (taken back, then unparked);
 *  - leases are released on other threads, two are held at once, some are
 *    dirty or discarded, and short-lived threads park a connection and exit;
 *  - then every worker holds a lease (through its cache when it can), one
 *    forks (the child is refused both release and acquire), the pool is
 *    closed, and all release at once: the last release frees the pool.
 *
 * Checked: no connection is held by two callers at once; at the quiet
 * point of each round the counts add up (every acquire counted, nothing in
 * use, total == idle + in_use + connecting); close returns the number of
 * leases out; nothing is left connected at the end (ASan and TSan builds
 * check the frees and the races).
 *
 * Built with -DDBPOOL_PERTURB=ON, the library spins, yields and sleeps at
 * random inside these windows (src/perturb.h, docs/testing.md), which makes
 * the interleavings this test is after far more frequent.
 * DBPOOL_RACE_MS sets how long the rounds run (default 1500 ms).
 */
#include "driver_mock.h"
#include "testsupport.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#define WORKERS 4
#define ROUND_MS 150
#define MAX_IDS 8192

enum { RUN, QUIET, HOLD, RELEASE, DONE };

typedef struct shared {
    dbpool *p;
    atomic_int phase;
    atomic_int arrived; /* workers at the current phase's meeting point */
    atomic_long ok;     /* leases handed out (the stats must count as many) */
    atomic_int failures;
    atomic_int fork_now; /* worker 0: fork with its lease out */
    atomic_int fork_status;
    char first_failure[256];
    pthread_mutex_t failure_lock;
} shared;

static atomic_int held_by[MAX_IDS]; /* mock connection id -> callers holding it now */

static void failure(shared *s, const char *fmt, ...) {
    if (atomic_fetch_add(&s->failures, 1) != 0)
        return;
    pthread_mutex_lock(&s->failure_lock);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->first_failure, sizeof s->first_failure, fmt, ap);
    va_end(ap);
    pthread_mutex_unlock(&s->failure_lock);
}

static void take(shared *s, dbpool_conn *c) {
    atomic_fetch_add(&s->ok, 1);
    int id = dbt_conn_id(c);
    if (id <= 0 || id >= MAX_IDS)
        failure(s, "connection id %d out of the test's range", id);
    else if (atomic_fetch_add(&held_by[id], 1) != 0)
        failure(s, "connection #%d handed to a second caller while held", id);
}

static void give(dbpool_conn *c) {
    int id = dbt_conn_id(c);
    if (id > 0 && id < MAX_IDS)
        atomic_fetch_sub(&held_by[id], 1);
}

static void release_checked(shared *s, dbpool_conn *c, bool discard) {
    give(c);
    int rc = discard ? dbpool_discard(c) : dbpool_release(c);
    if (rc != DBPOOL_OK)
        failure(s, "%s: %s", discard ? "discard" : "release", dbpool_errname(rc));
}

static dbpool_conn *acquire_checked(shared *s, bool try_only) {
    dbpool_conn *c = NULL;
    dbpool_error e;
    int rc = try_only ? dbpool_try_acquire(s->p, &c, &e) : dbpool_acquire(s->p, 10000, &c, &e);
    if (rc == DBPOOL_OK) {
        take(s, c);
        return c;
    }
    if (!(try_only && rc == DBPOOL_EBUSY))
        failure(s, "%s: %s", try_only ? "try_acquire" : "acquire", e.message);
    return NULL;
}

typedef struct handed {
    shared *s;
    dbpool_conn *c;
} handed;

/* A lease released on a thread that did not acquire it; the thread then
 * parks what it gets and exits with it parked. */
static void *release_elsewhere(void *arg) {
    handed *h = arg;
    release_checked(h->s, h->c, false);
    dbpool_conn *c = acquire_checked(h->s, false);
    if (c)
        release_checked(h->s, c, false);
    return NULL;
}

/* A short-lived thread: takes a connection (often one parked for another
 * thread), parks it, takes it back through its cache, parks it and exits. */
static void *park_and_exit(void *arg) {
    shared *s = arg;
    for (int i = 0; i < 2; i++) {
        dbpool_conn *c = acquire_checked(s, false);
        if (c)
            release_checked(s, c, false);
    }
    return NULL;
}

static void meet(shared *s, int phase) {
    atomic_fetch_add(&s->arrived, 1);
    while (atomic_load(&s->phase) == phase)
        sched_yield();
}

typedef struct worker {
    shared *s;
    int index;
    unsigned seed;
} worker;

static void run_cycle(worker *w) {
    shared *s = w->s;
    w->seed = w->seed * 1103515245u + 12345u;
    unsigned r = w->seed >> 8;
    dbpool_conn *c = acquire_checked(s, r % 8 == 0);
    if (!c)
        return;
    switch ((r >> 4) % 20) {
    case 0: /* two leases at once: the cached one is busy when the other comes back */
    case 1: {
        dbpool_conn *d = acquire_checked(s, true);
        if (d && (r & 1)) {
            release_checked(s, d, false);
            d = NULL;
        }
        release_checked(s, c, false);
        if (d)
            release_checked(s, d, false);
        return;
    }
    case 2: /* dirty: reset on the ordinary path */
        dbpool_exec(c, "BEGIN", NULL, 0, NULL, NULL);
        release_checked(s, c, false);
        return;
    case 3:
        release_checked(s, c, true);
        return;
    case 4: { /* released on another thread */
        handed h = {s, c};
        pthread_t t;
        if (pthread_create(&t, NULL, release_elsewhere, &h) != 0) {
            release_checked(s, c, false);
            return;
        }
        pthread_join(t, NULL);
        return;
    }
    case 5: { /* a thread that takes this one's parked connection (or another), parks it and exits */
        release_checked(s, c, false);
        pthread_t t;
        if (pthread_create(&t, NULL, park_and_exit, s) == 0)
            pthread_join(t, NULL);
        return;
    }
    default:
        if (r % 64 == 7)
            sched_yield(); /* held a little longer */
        release_checked(s, c, false);
        return;
    }
}

static void *work(void *arg) {
    worker *w = arg;
    shared *s = w->s;
    for (;;) {
        int phase = atomic_load(&s->phase);
        if (phase == RUN) {
            run_cycle(w);
        } else if (phase == QUIET) {
            meet(s, QUIET);
        } else if (phase == HOLD) {
            /* Park one, then hold it through the cache (when nobody took it
             * meanwhile): close must count it and take it back at release. */
            dbpool_conn *c = acquire_checked(s, false);
            if (c) {
                release_checked(s, c, false);
                c = acquire_checked(s, false);
            }
            atomic_fetch_add(&s->arrived, 1);
            while (atomic_load(&s->phase) == HOLD) {
                if (w->index == 0 && atomic_load(&s->fork_now) == 1) {
                    pid_t pid = fork();
                    if (pid == 0) {
                        /* The parent's lease and pool are not the child's. */
                        dbpool_conn *d = NULL;
                        int bad = (c && dbpool_release(c) != DBPOOL_EMISUSE) ||
                                  dbpool_acquire(s->p, 0, &d, NULL) != DBPOOL_EMISUSE;
                        _exit(bad ? 1 : 0);
                    }
                    atomic_store(&s->fork_status, pid < 0 ? -2 : dbt_child_status(pid, 30000));
                    atomic_store(&s->fork_now, 2);
                }
                sched_yield();
            }
            /* RELEASE: all at once, after the close. */
            if (c)
                release_checked(s, c, false);
            atomic_fetch_add(&s->arrived, 1);
            while (atomic_load(&s->phase) == RELEASE)
                sched_yield();
        } else {
            return NULL;
        }
    }
}

typedef struct disturber {
    shared *s;
    atomic_bool stop;
    unsigned seed;
} disturber;

static void *disturb(void *arg) {
    disturber *d = arg;
    shared *s = d->s;
    while (!atomic_load(&d->stop)) {
        d->seed = d->seed * 1103515245u + 12345u;
        unsigned r = d->seed >> 8;
        switch (r % 6) {
        case 0:
            dbpool_resize(s->p, 1, 2 + (int)(r >> 4) % 2, NULL);
            break;
        case 1:
            if (dbpool_suspend(s->p) == DBPOOL_OK) {
                sched_yield();
                dbpool_resume(s->p);
            }
            break;
        case 2:
            dbpool_shrink(s->p, 0);
            break;
        case 3: {
            dbpool_histogram h;
            dbpool_get_histogram(s->p, DBPOOL_HIST_ACQUIRE, &h);
            break;
        }
        default: {
            dbpool_stats st;
            dbpool_get_stats(s->p, &st);
            if (st.idle < 0 || st.in_use < 0 || st.connecting < 0 || st.thread_cached < 0)
                failure(s, "a negative count: idle %d in_use %d connecting %d thread_cached %d", st.idle,
                        st.in_use, st.connecting, st.thread_cached);
            break;
        }
        }
        dbt_sleep_ms(1);
    }
    return NULL;
}

static void await_arrivals(shared *s, int n) {
    int64_t end = dbt_now_ms() + 60000;
    while (atomic_load(&s->arrived) < n) {
        if (dbt_now_ms() > end)
            fail_msg("workers did not reach the meeting point within 60 s (%d of %d)",
                     atomic_load(&s->arrived), n);
        dbt_sleep_ms(1);
    }
}

static void next_phase(shared *s, int phase) {
    atomic_store(&s->arrived, 0);
    atomic_store(&s->phase, phase);
}

static void one_round(unsigned seed) {
    dbpool__mock_reset();
    for (int i = 0; i < MAX_IDS; i++)
        atomic_store(&held_by[i], 0);
    dbpool_options o;
    dbt_options(&o, 1, 3);
    o.thread_cache = true;
    o.maintenance_interval_ms = 1; /* recalls parked connections unused for 1 ms */
    o.validation = DBPOOL_VALIDATE_IF_IDLE;
    o.validation_window_ms = 2; /* a cached lease idle that long goes the ordinary way */
    o.max_lifetime_ms = 40;     /* and one past its lifetime too */
    o.acquire_timeout_ms = 10000;
    o.suspend_fails_fast = false; /* callers wait through the disturber's suspends */
    shared s;
    memset(&s, 0, sizeof s);
    pthread_mutex_init(&s.failure_lock, NULL);
    atomic_init(&s.phase, RUN);
    dbpool_error e;
    if (dbpool_open(&s.p, "mock:", &o, &e) != DBPOOL_OK)
        fail_msg("open: %s", e.message);

    worker w[WORKERS];
    pthread_t t[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        w[i] = (worker){.s = &s, .index = i, .seed = seed * 31u + (unsigned)i};
        if (pthread_create(&t[i], NULL, work, &w[i]) != 0)
            fail_msg("pthread_create failed");
    }
    disturber d = {.s = &s, .seed = seed};
    atomic_init(&d.stop, false);
    pthread_t dt;
    if (pthread_create(&dt, NULL, disturb, &d) != 0)
        fail_msg("pthread_create failed");

    dbt_sleep_ms(ROUND_MS);

    /* The quiet point: nothing out, every hand-out counted. */
    next_phase(&s, QUIET);
    await_arrivals(&s, WORKERS);
    atomic_store(&d.stop, true);
    pthread_join(dt, NULL);
    assert_int_equal(dbpool_resize(s.p, 1, WORKERS, NULL), DBPOOL_OK);
    dbpool_stats st;
    dbpool_get_stats(s.p, &st);
    if (atomic_load(&s.failures) > 0)
        fail_msg("%d failure(s), the first: %s", atomic_load(&s.failures), s.first_failure);
    if (st.in_use != 0 || (long)st.acquired != atomic_load(&s.ok) ||
        st.total != st.idle + st.in_use + st.connecting)
        fail_msg("at the quiet point: in_use %d (want 0), acquired %llu (handed out %ld), total %d, idle %d, "
                 "connecting %d",
                 st.in_use, (unsigned long long)st.acquired, atomic_load(&s.ok), st.total, st.idle,
                 st.connecting);

    /* Every worker holds one, one of them forks, the pool closes, all
     * release at once. */
    next_phase(&s, HOLD);
    await_arrivals(&s, WORKERS);
    atomic_store(&s.fork_now, 1);
    int64_t end = dbt_now_ms() + 60000;
    while (atomic_load(&s.fork_now) != 2 && dbt_now_ms() < end)
        dbt_sleep_ms(1);
    if (atomic_load(&s.fork_now) != 2 || atomic_load(&s.fork_status) != 0)
        fail_msg("the forked child was not refused release and acquire (status %d)",
                 atomic_load(&s.fork_status));
    int out = dbpool_close(s.p);
    next_phase(&s, RELEASE);
    await_arrivals(&s, WORKERS);
    next_phase(&s, DONE);
    for (int i = 0; i < WORKERS; i++)
        pthread_join(t[i], NULL);
    if (atomic_load(&s.failures) > 0)
        fail_msg("%d failure(s), the first: %s", atomic_load(&s.failures), s.first_failure);
    assert_int_equal(out, WORKERS);
    assert_int_equal(dbt_mock_live(), 0);
    pthread_mutex_destroy(&s.failure_lock);
}

static void test_rounds(void **state) {
    (void)state;
    int64_t budget = 1500;
    const char *env = getenv("DBPOOL_RACE_MS");
    if (env && *env)
        budget = strtoll(env, NULL, 10);
    unsigned seed = (unsigned)dbt_now_ms();
    int64_t end = dbt_now_ms() + budget;
    int rounds = 0;
    do {
        one_round(seed + (unsigned)rounds);
        rounds++;
    } while (dbt_now_ms() < end || rounds < 3);
    fprintf(stderr, "%d rounds\n", rounds);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
