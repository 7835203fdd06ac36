/*
 * pool.c — open/close, the idle list, the FIFO wait queue and the
 * accounting every move goes through. Acquire and release live in
 * acquire.c and release.c.
 *
 * Locking: one mutex per pool guards every list and counter. No backend I/O
 * happens while it is held: a connection is moved to a state (leased,
 * returning, closing) under the lock, the lock is dropped, the I/O runs,
 * and the lock is taken again to publish the result.
 *
 * Fairness: a caller who finds no idle connection joins a FIFO queue with
 * its own condition variable and asks the connector threads for a new
 * connection (create.c). Whatever comes first — a released connection or a
 * new one — goes to the head of the queue, so a caller never waits for a
 * slow connect while a release could serve it. For the first
 * barging_window_us of a waiter's wait a running thread may still take a
 * free connection (the waiter is woken to look); after that every release
 * hands off to it directly, so nobody waits long behind a later arrival.
 */
/* For PTHREAD_MUTEX_ADAPTIVE_NP (glibc); harmless elsewhere. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "perturb.h"
#include "pool_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---------------------------------------------------------------------- */
/* small helpers                                                          */
/* ---------------------------------------------------------------------- */

void dbpool__lock(dbpool *p) {
    DBPOOL_PERTURB(); /* who gets the lock first */
    if (pthread_mutex_lock(&p->lock) != 0)
        abort(); /* a failed lock on a valid mutex is a bug, as in libuv */
}
#ifdef DBPOOL_DEBUG_INVARIANTS
/* State equals list membership: the counters agree with the lists and the
 * slots' states. Checked before every unlock in debug builds. */
static void check_invariants_locked(const dbpool *p) {
    int idle = 0, leased = 0, reclaimed = 0, closing = 0, listed = 0, waiting = 0, parked = 0, plisted = 0;
    int pinging = 0;
    for (const dbpool_conn *c = p->all_slots; c; c = c->all_next) {
        if (c->state == CONN_IDLE)
            idle++;
        else if ((c->state == CONN_LEASED || c->state == CONN_RETURNING) && !c->reclaimed)
            leased++;
        else if (c->state == CONN_LEASED && c->reclaimed)
            reclaimed++;
        else if (c->state == CONN_CLOSING)
            closing++;
        else if (c->state == CONN_PARKED)
            parked++;
        if (c->pinging && c->state == CONN_LEASED)
            pinging++;
        if (c->state != CONN_PARKED && atomic_load_explicit(&c->park, memory_order_relaxed) != 0) {
            fprintf(stderr, "dbpool: invariant broken: connection #%llu not parked has a park word\n",
                    (unsigned long long)c->id);
            abort();
        }
    }
    for (const dbpool_conn *c = p->parked_head; c; c = c->next)
        plisted++;
    for (const dbpool_conn *c = p->idle_head; c; c = c->next)
        listed++;
    for (const waiter *w = p->wait_head; w; w = w->next)
        waiting++;
    /* n_closing also counts dbpool_close's own hold on the pool. */
    if (idle != p->n_idle || listed != p->n_idle || leased != p->n_leased || reclaimed != p->n_reclaimed ||
        closing > p->n_closing || closing + 1 < p->n_closing || waiting != p->n_waiting ||
        parked != p->n_parked || plisted != p->n_parked || pinging != p->n_pinging ||
        p->n_connecting < p->connect_jobs + p->connect_running || p->n_connecting < 0) {
        fprintf(stderr,
                "dbpool: invariant broken: idle %d/%d/%d leased %d/%d reclaimed %d/%d closing %d/%d "
                "waiting %d/%d connecting %d jobs %d running %d parked %d/%d/%d pinging %d/%d\n",
                idle, listed, p->n_idle, leased, p->n_leased, reclaimed, p->n_reclaimed, closing,
                p->n_closing, waiting, p->n_waiting, p->n_connecting, p->connect_jobs, p->connect_running,
                parked, plisted, p->n_parked, pinging, p->n_pinging);
        abort();
    }
}
#endif

void dbpool__unlock(dbpool *p) {
    dbpool__gate_refresh_locked(p);
#ifdef DBPOOL_DEBUG_INVARIANTS
    check_invariants_locked(p);
#endif
    if (pthread_mutex_unlock(&p->lock) != 0)
        abort();
    DBPOOL_PERTURB(); /* others run between a critical section and what follows it */
}
#define lock(p) dbpool__lock(p)
#define unlock(p) dbpool__unlock(p)

uint64_t dbpool__random(void) {
    static _Thread_local uint64_t state;
    if (state == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        state = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)(uintptr_t)&state;
        if (state == 0)
            state = 0x9e3779b97f4a7c15u;
    }
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

void dbpool__finish_err(const dbpool *p, dbpool_error *e) {
    if (e && e->code != DBPOOL_OK) {
        dbpool__redact(e->message, sizeof e->message, p ? p->secrets : NULL);
        dbpool__fold_controls(e->message); /* after: a secret may hold a line break */
    }
}

void dbpool__note_validation_bound(const dbpool *p, dbpool_error *e) {
    if (e && e->code == DBPOOL_ETIMEDOUT)
        dbpool__prefix_err(e, "no answer within validation_timeout_ms %lld",
                           (long long)p->opt.validation_timeout_ms);
}

void dbpool__log(dbpool *p, dbpool_log_level level, const char *fmt, ...) {
    if (!p->opt.log_fn || level > p->opt.log_level)
        return;
    char line[1536];
    int n = snprintf(line, sizeof line, "pool '%s': ", p->name);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    dbpool__redact(line, sizeof line, p->secrets);
    /* The callback's own cancellation points (a write) do not end the
     * library call that logs half-way (internal.h). */
    int cancel_state = dbpool__nocancel_begin();
    p->opt.log_fn(p->opt.log_user, level, line);
    dbpool__nocancel_end(cancel_state);
}

int dbpool__total_locked(const dbpool *p) { return p->n_idle + p->n_leased + p->n_parked + p->n_connecting; }
#define total_locked(p) dbpool__total_locked(p)

int dbpool__fork_error(dbpool_error *e) {
    return dbpool__seterr(e, DBPOOL_EMISUSE,
                          "this pool was opened before fork(): its connections belong to the parent "
                          "process; give the child the database through exec, and open a pool after it "
                          "(a pool opened in a forked child that has not called exec can deadlock: see "
                          "docs/threading.md, fork)");
}

/* ---------------------------------------------------------------------- */
/* lists (all under the lock)                                             */
/* ---------------------------------------------------------------------- */

/* Link c into the idle list after `after` (NULL: at the head). */
static void idle_link_after(dbpool *p, dbpool_conn *after, dbpool_conn *c) {
    c->state = CONN_IDLE;
    c->prev = after;
    c->next = after ? after->next : p->idle_head;
    if (c->next)
        c->next->prev = c;
    else
        p->idle_tail = c;
    if (after)
        after->next = c;
    else
        p->idle_head = c;
    p->n_idle++;
}

void dbpool__idle_insert_locked(dbpool *p, dbpool_conn *c) {
    dbpool_conn *after = NULL; /* the last one used more recently than c */
    for (dbpool_conn *x = p->idle_head; x && x->last_used_ns > c->last_used_ns; x = x->next)
        after = x;
    idle_link_after(p, after, c);
}

void dbpool__idle_remove(dbpool *p, dbpool_conn *c) {
    if (c->prev)
        c->prev->next = c->next;
    else
        p->idle_head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        p->idle_tail = c->prev;
    c->prev = c->next = NULL;
    p->n_idle--;
}

dbpool_conn *dbpool__take_idle_locked(dbpool *p,
                                      bool (*take)(const dbpool *p, const dbpool_conn *c, void *arg),
                                      void *arg) {
    dbpool_conn *list = NULL;
    while (p->idle_tail && take(p, p->idle_tail, arg)) {
        dbpool_conn *c = p->idle_tail;
        dbpool__idle_remove(p, c);
        c->state = CONN_CLOSING;
        p->n_closing++;
        c->next = list;
        list = c;
    }
    return list;
}

void dbpool__waiter_enqueue(dbpool *p, waiter *w) {
    /* A caller back in line (its connection failed the checks) keeps its
     * place: after those who came before it, ahead of those who came
     * after. Everyone else joins at the end. */
    if (w->since == 0)
        w->since = dbpool__fast_now_ns();
    waiter *after = p->wait_tail;
    while (after && after->since > w->since)
        after = after->prev;
    w->prev = after;
    w->next = after ? after->next : p->wait_head;
    if (w->next)
        w->next->prev = w;
    else
        p->wait_tail = w;
    if (after)
        after->next = w;
    else
        p->wait_head = w;
    w->queued = true;
    p->n_waiting++;
    if (p->n_waiting > p->stats.peak_waiting)
        p->stats.peak_waiting = p->n_waiting;
}

void dbpool__waiter_dequeue(dbpool *p, waiter *w) {
    if (!w->queued)
        return;
    if (w->prev)
        w->prev->next = w->next;
    else
        p->wait_head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        p->wait_tail = w->prev;
    w->prev = w->next = NULL;
    w->queued = false;
    p->n_waiting--;
    /* Starving ends when the first in line has not waited long. */
    if (p->starving &&
        (!p->wait_head || dbpool__fast_now_ns() - p->wait_head->since < dbpool__barging_window_ns(p))) {
        p->starving = false;
    }
    /* Outside starving mode the first in line must wake up when its window
     * ends (or the pool would never starve for it). One that went to sleep
     * while the pool was starving set no such wake-up: wake it to set one.
     * Only the first: the others are woken the same way when their turn
     * at the head comes (waking them all here cost ~30 context switches
     * per starving episode with 32 threads on a pool of 2). */
    waiter *head = p->wait_head;
    if (!p->starving && head && !head->timed) {
        head->timed = true;
        pthread_cond_signal(&head->cond);
    }
}

void dbpool__note_peak(dbpool *p, int returning) {
    int most = dbpool__callers_leased_locked(p) + returning;
    /* Every parked one counted as busy first: once the peak is that high
     * (soon, in a busy pool) the walk over the owners' park words, cache
     * lines other threads write, is skipped. */
    if (most + p->n_parked <= p->stats.peak_in_use)
        return;
    int busy = 0, free_ = 0;
    if (p->n_parked > 0)
        dbpool__parked_counts_locked(p, &busy, &free_);
    if (most + busy > p->stats.peak_in_use)
        p->stats.peak_in_use = most + busy;
}

/*
 * May a running thread take a free connection ahead of the queue? Yes
 * while the first waiter has waited less than the barging window: a thread
 * that is already running skips a wake-up (3-25 us here) and the waiter is
 * told to look, or looks when its window ends. Once it has waited longer
 * the pool is "starving": every release hands off to the first waiter
 * directly, nothing is parked and the thread caches are recalled, until
 * the first in line is a recent arrival again (Go's sync.Mutex normal and
 * starvation modes). Lock held.
 */
bool dbpool__may_overtake_locked(const dbpool *p) {
    const waiter *w = p->wait_head;
    return !w || (!p->starving && dbpool__fast_now_ns() - w->since < dbpool__barging_window_ns(p));
}

/* A waiter's window ended: if the first in line is past its own, the pool
 * starves from now on, and the thread caches come back to the line (free
 * connections to the first waiters now, busy ones at their release). The
 * one place the pool turns starving: every waiter wakes up when its window
 * ends, so the first one past it is never missed. Lock held. */
bool dbpool__starve_if_overdue_locked(dbpool *p) {
    if (!p->starving && !dbpool__may_overtake_locked(p)) {
        p->starving = true;
        dbpool__recall_parked_locked(p, true, -1);
    }
    return p->starving;
}

/*
 * The window adapts to how long leases last. When they are shorter than a
 * wake-up, a hand-off to a sleeping waiter leaves the connection unused
 * for longer than a caller uses it, and a queue of sleepers turns into a
 * convoy that runs at the rate of context switches: then running threads
 * may overtake for longer. Serving every waiter once in order costs about
 * one wake-up (~20 us here) per waiter, shared among the connections; the
 * window is ten times that, so that the pool spends at most about a tenth
 * of its time on such rounds: at least 1 ms (Go's sync.Mutex), at most
 * 10 ms (the longest a short lease's caller is passed over). When leases
 * are longer, a wake-up costs a small part of one and order matters more:
 * then the configured window (barging_window_us) applies. 0 means always
 * hand off. Lock held (n_waiting, cap).
 */
#define SHORT_HOLD_NS INT64_C(25000)
#define SHORT_HOLD_MIN_WINDOW_NS INT64_C(1000000)
#define SHORT_HOLD_MAX_WINDOW_NS INT64_C(10000000)
#define WINDOW_PER_WAITER_NS INT64_C(200000) /* 10 x a wake-up */

int64_t dbpool__barging_window_ns(const dbpool *p) {
    int64_t w = p->opt.barging_window_us * 1000;
    if (w > 0 && p->hold_ewma_ns < SHORT_HOLD_NS) {
        int64_t round = (int64_t)p->n_waiting * WINDOW_PER_WAITER_NS / (p->cap > 0 ? p->cap : 1);
        int64_t wide = round < SHORT_HOLD_MIN_WINDOW_NS   ? SHORT_HOLD_MIN_WINDOW_NS
                       : round > SHORT_HOLD_MAX_WINDOW_NS ? SHORT_HOLD_MAX_WINDOW_NS
                                                          : round;
        if (w < wide)
            w = wide;
    }
    return w;
}

/* Idle connections, or parked ones not in use, and someone first in
 * line: tell them to look. Each waiter that takes one pokes the next, so no
 * connection sits unused while anyone waits. Lock held. */
void dbpool__poke_head_locked(dbpool *p) {
    waiter *w = p->wait_head;
    if (w && !p->suspended && !w->poked && (p->idle_head || dbpool__parked_free_locked(p))) {
        w->poked = true;
        pthread_cond_signal(&w->cond);
    }
}

void dbpool__hand_off_locked(dbpool *p, dbpool_conn *c) {
    waiter *w = p->wait_head;
    dbpool__waiter_dequeue(p, w);
    c->state = CONN_LEASED;
    p->n_leased++;
    dbpool__note_peak(p, 0);
    w->conn = c;
    /* Read here, not taken from the caller's reading: that may be the
     * connection's last use (a recalled thread-cache connection). */
    w->handed_ns = dbpool__fast_now_ns();
    /* Leased from now on, though the waiter stamps its lease only when
     * it runs: until then the leak scan and a timeout's report of the
     * oldest holder read this, not the previous lease's start. */
    c->acquired_ns = w->handed_ns;
    /* And where it was taken: the waiter's stack, not that of the lease
     * that was just released (which a report would blame wrongly). */
    c->leak_reported = false;
    dbpool__trace_store_locked(c, w->trace);
    pthread_cond_signal(&w->cond);
}

void dbpool__serve_waiters_from_idle_locked(dbpool *p) {
    /* Handed straight to each waiter in turn: publishing would put the
     * connection back on the idle list for a waiter still inside its
     * barging window, and this loop would spin under the lock until the
     * window ended. The most recently used goes first, as for an acquire. */
    while (!p->suspended && p->wait_head && p->idle_head) {
        dbpool_conn *c = p->idle_head;
        dbpool__idle_remove(p, c);
        dbpool__hand_off_locked(p, c);
        if (p->opt.min_idle > 0)
            dbpool__request_refill_locked(p);
    }
}

void dbpool__publish_locked(dbpool *p, dbpool_conn *c, int64_t now) {
    c->last_used_ns = now;
    waiter *w = p->wait_head;
    if (w && !p->suspended && !dbpool__may_overtake_locked(p)) {
        dbpool__hand_off_locked(p, c);
        return;
    }
    /* In last-used order: a release stops at the head (it is the latest);
     * one given back with an older last use (a recalled thread cache, a
     * hand-off to a waiter that timed out) goes behind those used since. */
    dbpool__idle_insert_locked(p, c);
    if (w && !p->suspended)
        dbpool__poke_head_locked(p);
}

void dbpool__return_pinged_locked(dbpool *p, dbpool_conn *c, int64_t now) {
    p->n_leased--;
    c->last_ping_ns = now;
    /* Not to a waiter once the pool is closed: dbpool_close has told them
     * to stop, and one not yet run would take this lease instead of
     * DBPOOL_ECLOSED. Idle, the close closes it with the others. */
    if (p->wait_head && !p->suspended && !p->closed) {
        dbpool__publish_locked(p, c, now);
        return;
    }
    /* Where its last use puts it: a ping is not a use. At the tail it would
     * pass connections used less recently (the pass pings oldest first, so
     * one pass over the list turned it around, and acquire, which takes the
     * head, got the least recently used one). */
    dbpool__idle_insert_locked(p, c);
}

void dbpool__fail_waiters_locked(dbpool *p, const dbpool_error *e, bool all) {
    while (p->wait_head) {
        waiter *w = p->wait_head;
        dbpool__waiter_dequeue(p, w);
        w->failed = true;
        w->error = *e;
        pthread_cond_signal(&w->cond);
        if (!all)
            break;
    }
}

bool dbpool__can_free_locked(const dbpool *p) {
    return p->closed && p->n_idle == 0 && p->n_leased == 0 && p->n_parked == 0 && p->n_connecting == 0 &&
           p->n_waiting == 0 && p->n_closing == 0 && p->n_reclaimed == 0 && !p->maint_running &&
           p->n_connectors == 0 && p->n_holding == 0;
}

void dbpool__free(dbpool *p) {
    dbpool_conn *c = p->all_slots;
    while (c) {
        dbpool_conn *next = c->all_next;
        c->magic = 0;
        free(c->trace);
        free(c);
        c = next;
    }
    if (p->driver && p->driver_cfg)
        p->driver->free_config(p->driver_cfg);
    dbpool__metrics_free(p->metrics);
    pthread_cond_destroy(&p->maint_cond);
    pthread_cond_destroy(&p->connector_cond);
    pthread_cond_destroy(&p->keepalive_cond);
    pthread_mutex_destroy(&p->lock);
    pthread_mutex_destroy(&p->leak_log_lock);
    free(p->connectors);
    free(p->name);
    free(p->init_sql);
    free(p);
}

static void slot_put(dbpool *p, dbpool_conn *c) {
    /* Slots are kept until the pool is freed, so that releasing a stale
     * lease finds CONN_FREE and is reported as misuse instead of touching
     * freed memory. */
    c->state = CONN_FREE;
    c->native = NULL;
    c->prev = NULL;
    c->next = p->free_slots;
    p->free_slots = c;
}

/* Close a connection that is out of every list and counted only in
 * n_closing (I/O outside the lock). */
void dbpool__disconnect_and_account(dbpool *p, dbpool_conn *c, dbpool_close_reason why) {
    /* close() is a cancellation point: a cancel there would leave the
     * connection counted in n_closing, and the pool never freed. Closed
     * whole; the cancel takes effect at the caller's next cancellation
     * point (internal.h). */
    int cancel_state = dbpool__nocancel_begin();
    if (!dbpool__forked(p))
        p->driver->disconnect(c->native);
    lock(p);
    p->n_closing--;
    p->stats.destroyed++;
    p->stats.destroyed_by[why]++;
    slot_put(p, c);
    dbpool__request_connections_locked(p);
    /* The place given back is room for a connect now: a connector backing
     * off for these waiters tries again at once. */
    dbpool__kick_backoff_locked(p);
    /* A dbpool_close may be finishing on another thread. */
    bool hold = dbpool__events_waiting_locked(p);
    if (hold)
        dbpool__hold_locked(p);
    bool free_it = dbpool__can_free_locked(p);
    unlock(p);
    if (free_it) {
        dbpool__free(p);
    } else if (hold) {
        dbpool__log_queued_events(p);
        dbpool__unhold(p);
    }
    dbpool__nocancel_end(cancel_state);
}

void dbpool__unhold_and_unlock(dbpool *p) {
    p->n_holding--;
    bool free_it = dbpool__can_free_locked(p);
    unlock(p);
    if (free_it)
        dbpool__free(p);
}

void dbpool__unhold(dbpool *p) {
    lock(p);
    dbpool__unhold_and_unlock(p);
}

void dbpool__destroy_conn(dbpool *p, dbpool_conn *c, dbpool_close_reason why) {
    lock(p);
    if (c->reclaimed)
        p->n_reclaimed--;
    else
        p->n_leased--;
    c->state = CONN_CLOSING;
    p->n_closing++;
    unlock(p);
    /* Both calls below disable cancellation around their own cancellation
     * points (the log callback, the close). */
    dbpool__log(
        p, why == DBPOOL_CLOSE_SHRINK || why == DBPOOL_CLOSE_POOL_CLOSED ? DBPOOL_LOG_DEBUG : DBPOOL_LOG_INFO,
        "closing connection #%llu (%s)", (unsigned long long)c->id, dbpool_close_reason_name(why));
    dbpool__disconnect_and_account(p, c, why);
}

void dbpool__close_closing_list(dbpool *p, dbpool_conn *list, dbpool_close_reason why) {
    while (list) { /* as in dbpool__destroy_conn: no cancellation point of its own */
        dbpool_conn *next = list->next;
        dbpool__log(p, DBPOOL_LOG_DEBUG, "closing connection #%llu (%s)", (unsigned long long)list->id,
                    dbpool_close_reason_name(why));
        dbpool__disconnect_and_account(p, list, why);
        list = next;
    }
}

/* ---------------------------------------------------------------------- */
/* open / close                                                           */
/* ---------------------------------------------------------------------- */

int dbpool__cond_init_monotonic(pthread_cond_t *cv) {
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0)
        return -1;
    int rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 ? pthread_cond_init(cv, &ca) : -1;
    pthread_condattr_destroy(&ca);
    return rc == 0 ? 0 : -1;
}

static bool take_all(const dbpool *p, const dbpool_conn *c, void *arg) {
    (void)p, (void)c, (void)arg;
    return true;
}

static int initial_cap(const dbpool_options *o) {
    if (!o->autoscale)
        return o->max_size;
    /* Autoscale starts half way and moves by steps (documented). */
    int cap = o->max_size / 2 + o->max_size % 2;
    if (cap < o->min_size)
        cap = o->min_size;
    return cap < 1 ? 1 : cap;
}

static int open_pool(dbpool **out, const char *url, const dbpool_options *o, dbpool_error *err);

/* Open and close run whole, with cancellation disabled (internal.h):
 * a cancel in a warm-up connect, a backoff or a join would leave a pool
 * half made or half closed. */
int dbpool_open(dbpool **out, const char *url, const dbpool_options *o, dbpool_error *err) {
    int cancel_state = dbpool__nocancel_begin();
    int rc = open_pool(out, url, o, err);
    dbpool__nocancel_end(cancel_state);
    return rc;
}

static int open_pool(dbpool **out, const char *url, const dbpool_options *o, dbpool_error *err) {
    dbpool__clearerr(err);
    if (!out)
        return dbpool__seterr(err, DBPOOL_EINVAL, "dbpool_open: out must not be NULL");
    *out = NULL;
    dbpool_error why;
    const dbpool_driver *driver = dbpool__driver_for_url(url, &why);
    if (!driver) {
        if (err)
            *err = why;
        return why.code; /* the same code whether or not the caller takes the message */
    }

    dbpool *p = calloc(1, sizeof *p);
    if (!p)
        return dbpool__seterr(err, DBPOOL_ENOMEM, "out of memory");
    p->driver = driver;
    if (o)
        p->opt = *o;
    else
        dbpool_options_init(&p->opt);
    /* Adaptive: spin briefly before sleeping. The critical sections are a
     * few dozen nanoseconds, far shorter than a futex sleep and wake-up. */
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
#if defined(__GLIBC__) && defined(PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP)
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
#endif
    int mrc = pthread_mutex_init(&p->lock, &ma);
    pthread_mutexattr_destroy(&ma);
    if (mrc != 0) {
        free(p);
        return dbpool__seterr(err, DBPOOL_ENOMEM, "pthread_mutex_init failed");
    }
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE); /* a log callback may release the lease */
    mrc = pthread_mutex_init(&p->leak_log_lock, &ma);
    pthread_mutexattr_destroy(&ma);
    if (mrc != 0) {
        pthread_mutex_destroy(&p->lock);
        free(p);
        return dbpool__seterr(err, DBPOOL_ENOMEM, "pthread_mutex_init failed");
    }
    /* Out of memory (or of whatever a condition variable needs) is an
     * error for the caller, not an abort: nothing else exists yet. */
    pthread_cond_t *conds[] = {&p->maint_cond, &p->connector_cond, &p->keepalive_cond};
    for (size_t i = 0; i < sizeof conds / sizeof conds[0]; i++) {
        if (dbpool__cond_init_monotonic(conds[i]) != 0) {
            while (i-- > 0)
                pthread_cond_destroy(conds[i]);
            pthread_mutex_destroy(&p->leak_log_lock);
            pthread_mutex_destroy(&p->lock);
            free(p);
            return dbpool__seterr(err, DBPOOL_ENOMEM, "out of memory: pthread_cond_init failed");
        }
    }
    if (dbpool__fork_watch() != 0 || dbpool__live_watch() != 0) {
        /* Without the handlers a forked child would take this pool's
         * connections for its own (docs/threading.md, fork). */
        dbpool__free(p);
        return dbpool__seterr(err, DBPOOL_ENOMEM,
                              "out of memory: could not register the pool's fork handler (pthread_atfork)");
    }
    p->fork_generation = dbpool__fork_generation();
    p->opened_ns = dbpool__now_ns();

    char *name_from_url = NULL, *driver_url = NULL;
    int rc = dbpool__options_apply_url(&p->opt, url, &driver_url, &name_from_url, err);
    if (rc == DBPOOL_OK)
        rc = dbpool__options_validate(&p->opt, err);
    if (rc == DBPOOL_OK) {
        p->name = dbpool__strdup(p->opt.name ? p->opt.name : "default");
        /* A blank init_sql (an empty setting) is no init_sql: MySQL/MariaDB
         * would fail every connect with "Query was empty". */
        bool has_init = p->opt.init_sql && !dbpool__sql_is_blank(p->opt.init_sql);
        p->init_sql = has_init ? dbpool__strdup(p->opt.init_sql) : NULL;
        p->metrics = dbpool__metrics_new();
        if (!p->name || (has_init && !p->init_sql) || !p->metrics)
            rc = dbpool__seterr(err, DBPOOL_ENOMEM, "out of memory");
    }
    free(name_from_url);
    p->opt.name = p->name;
    p->opt.init_sql = p->init_sql;
    if (rc == DBPOOL_OK)
        rc = driver->configure(driver_url, &p->driver_cfg, err);
    free(driver_url);
    if (rc == DBPOOL_OK && driver->secrets)
        p->secrets = driver->secrets(p->driver_cfg);
    /* init_sql runs after the pool sets its statement limit on a session:
     * one that names the limit may set another, for every lease. */
    p->init_sql_owns_limit =
        p->init_sql && driver->names_statement_limit && driver->names_statement_limit(p->init_sql);
    p->settings.connect_timeout_ms = p->opt.connect_timeout_ms;
    p->settings.statement_timeout_ms = p->opt.statement_timeout_ms;
    p->settings.statement_cache = p->opt.statement_cache;
    p->cap = initial_cap(&p->opt);
    p->hold_ewma_ns = 2 * SHORT_HOLD_NS; /* start in order; short leases widen the window */
    /* Parking (sticky.c) skips what a lease's start must record or check
     * under the lock: leak traces, a ping on every hand-out, autoscale's
     * view of use. */
    static _Atomic uint64_t next_serial;
    p->serial = atomic_fetch_add_explicit(&next_serial, 1, memory_order_relaxed) + 1;
    p->hooks = p->opt.before_acquire || p->opt.after_release;
    p->park_enabled = p->opt.leak_threshold_ms == 0 && p->opt.validation != DBPOOL_VALIDATE_ALWAYS &&
                      !p->opt.autoscale && p->opt.thread_cache;

    /* Warm-up on this thread: min_size connections, each with the full
     * retry budget; at least one unless lazy_connect, so that a wrong URL,
     * password or path fails here with its real cause. */
    int warm = p->opt.min_size > 0 ? p->opt.min_size : (p->opt.lazy_connect ? 0 : 1);
    for (int i = 0; rc == DBPOOL_OK && i < warm; i++) {
        lock(p);
        p->n_connecting++;
        unlock(p);
        char bound[64];
        snprintf(bound, sizeof bound, "acquire_timeout_ms %lld of dbpool_open",
                 (long long)p->opt.acquire_timeout_ms);
        rc = dbpool__fill_reserved(p, dbpool__deadline_after_ms(p->opt.acquire_timeout_ms), bound, false,
                                   NULL, NULL, err);
        if (rc != DBPOOL_OK)
            dbpool__prefix_err(err, "opening pool '%s' failed at connection %d of %d", p->name, i + 1, warm);
    }
    if (rc == DBPOOL_OK)
        rc = dbpool__connectors_start(p, err);
    if (rc == DBPOOL_OK && p->opt.maintenance_interval_ms > 0)
        rc = dbpool__maint_start(p, err);
    if (rc != DBPOOL_OK) {
        dbpool__finish_err(p, err);
        if (err)
            dbpool__redact_url_secrets(err->message, sizeof err->message, url);
        dbpool__connectors_stop(p);
        lock(p);
        p->closed = true;
        dbpool_conn *list = dbpool__take_idle_locked(p, take_all, NULL);
        for (dbpool_conn *c = list; c; c = c->next)
            c->state = CONN_FREE; /* nobody else saw the pool: no accounting */
        p->n_closing = 0;
        unlock(p);
        while (list) {
            dbpool_conn *next = list->next;
            p->driver->disconnect(list->native);
            list = next;
        }
        dbpool__free(p);
        return rc;
    }
    /* The spares beyond the warm-up open in the background: dbpool_open
     * waits for min_size only. */
    if (p->opt.min_idle > 0) {
        lock(p);
        dbpool__request_refill_locked(p);
        unlock(p);
    }
    dbpool__log(p, DBPOOL_LOG_INFO, "opened (%s backend, min %d, max %d)", driver->name, p->opt.min_size,
                p->opt.max_size);
    dbpool__live_add(p);
    *out = p;
    return DBPOOL_OK;
}

/* Is the calling thread one of p's own (maintenance, keepalive, connectors)? Lock
 * held. A callback running there (a log line, after_connect) must not
 * close the pool: the close would have to join the very thread it runs
 * on. */
static bool on_own_thread_locked(const dbpool *p) {
    pthread_t self = pthread_self();
    /* Nor a lease hook of p on any thread: there the close would recall
     * the connection the hook holds (hooks.c). */
    if (p->hooks && dbpool__in_hook(p))
        return true;
    if (p->maint_running && pthread_equal(self, p->maint_thread))
        return true;
    if (p->keepalive_running && pthread_equal(self, p->keepalive_thread))
        return true;
    for (int i = 0; i < p->n_connectors; i++)
        if (pthread_equal(self, p->connectors[i]))
            return true;
    return false;
}

bool dbpool__on_own_thread(dbpool *p) {
    lock(p);
    bool own = on_own_thread_locked(p);
    unlock(p);
    return own;
}

static int close_pool(dbpool *p);

int dbpool_close(dbpool *p) {
    int cancel_state = dbpool__nocancel_begin();
    int rc = close_pool(p);
    dbpool__nocancel_end(cancel_state);
    return rc;
}

static int close_pool(dbpool *p) {
    if (!p)
        return 0;
    /* Closed already (its memory may be gone): touch nothing. Taken out of
     * the list here, so that a second close racing this one is refused too. */
    if (!dbpool__live_take(p))
        return DBPOOL_EMISUSE;
    if (atomic_load(&p->managed)) {
        /* Freed here, it would stay in its manager's table: the manager's
         * stats, lookups and free would then read freed memory. */
        dbpool__live_add(p);
        dbpool__log(p, DBPOOL_LOG_ERROR,
                    "dbpool_close: this pool belongs to a dbpool_manager: close it with "
                    "dbpool_manager_close_pool (nothing was closed)");
        return DBPOOL_EMISUSE;
    }
    if (dbpool__forked(p))
        return 0; /* the child owns none of it: touch nothing (docs/threading.md) */
    lock(p);
    if (p->closed || on_own_thread_locked(p)) {
        /* From a pool thread, pthread_join would fail with EDEADLK and the
         * close would free the pool under that thread: refuse instead. */
        unlock(p);
        dbpool__live_add(p); /* still open: a close from another thread may follow */
        return DBPOOL_EMISUSE;
    }
    p->closed = true;
    /* Hold the pool while this function runs: a waiter or a release on
     * another thread may otherwise free it under us. */
    p->n_closing++;
    /* Parked connections: the free ones go with the idle ones below, the
     * ones in use come back at their release (and are closed there). */
    dbpool__recall_parked_locked(p, false, -1);
    for (waiter *w = p->wait_head; w; w = w->next)
        pthread_cond_signal(&w->cond);
    /* Connects asleep in a retry backoff (the maintenance thread's refill
     * among them): awake, they see the pool closed and stop. */
    pthread_cond_broadcast(&p->connector_cond);
    unlock(p);
    /* Joins: a connect in flight finishes first (bounded by
     * connect_timeout_ms); backoff sleeps are cut short. */
    dbpool__maint_stop(p);
    dbpool__connectors_stop(p);
    /* State changes a logging thread left to the maintenance thread, which
     * has stopped: before the "closing" line. */
    dbpool__log_queued_events(p);
    lock(p);
    int idle = p->n_idle,
        leased = p->n_leased + p->n_reclaimed + p->n_parked; /* parked: in use (free ones were recalled) */
    dbpool_conn *list = dbpool__take_idle_locked(p, take_all, NULL);
    unlock(p);
    dbpool__log(p, DBPOOL_LOG_INFO, "closing (%d idle closed now, %d lease%s still out)", idle, leased,
                leased == 1 ? "" : "s");
    dbpool__close_closing_list(p, list, DBPOOL_CLOSE_POOL_CLOSED);
    lock(p);
    p->n_closing--;
    bool free_it = dbpool__can_free_locked(p);
    unlock(p);
    if (free_it)
        dbpool__free(p);
    return leased;
}

/* ---------------------------------------------------------------------- */
const char *dbpool_backend(const dbpool *p) { return p ? p->driver->name : NULL; }
const char *dbpool_name(const dbpool *p) { return p ? p->name : NULL; }

/* ---------------------------------------------------------------------- */
/* stats                                                                  */
/* ---------------------------------------------------------------------- */

void dbpool_get_stats(dbpool *p, dbpool_stats *out) {
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!p)
        return;
    lock(p);
    *out = p->stats;
    int parked_busy, parked_free;
    dbpool__parked_counts_locked(p, &parked_busy, &parked_free);
    dbpool__fold_fast_leases_locked(p);
    dbpool__acquire_counts_locked(p, &out->acquired, &out->reused);
    /* A keepalive ping borrows an idle connection for a moment: still
     * idle to everyone who reads these (no caller holds it). */
    out->idle = p->n_idle + parked_free + p->n_pinging;
    out->in_use = dbpool__callers_leased_locked(p) + parked_busy;
    /* Leases through the thread cache take no lock to note a peak: the
     * ones out now count here (sticky.c notes them where it locks). */
    if (out->in_use > p->stats.peak_in_use)
        p->stats.peak_in_use = out->in_use;
    out->peak_in_use = p->stats.peak_in_use;
    out->connecting = p->n_connecting;
    out->waiting = p->n_waiting;
    out->total = total_locked(p);
    out->min_size = p->opt.min_size;
    out->max_size = p->opt.max_size;
    out->cap = p->cap;
    out->min_idle = p->opt.min_idle;
    out->suspended = p->suspended;
    out->breaker = p->breaker;
    out->reclaimed_out = p->n_reclaimed;
    out->thread_cached = p->n_parked;
    out->utilisation = p->cap > 0 ? (double)out->in_use / p->cap : 0.0;
    unlock(p);
    out->uptime_s = (double)(dbpool__now_ns() - p->opened_ns) / 1e9;
    dbpool__metrics_latency(p->metrics, DBPOOL_HIST_ACQUIRE, &out->acquire_wait);
    dbpool__metrics_latency(p->metrics, DBPOOL_HIST_USE, &out->use_time);
    dbpool__metrics_latency(p->metrics, DBPOOL_HIST_CONNECT, &out->connect_time);
    dbpool__metrics_latency(p->metrics, DBPOOL_HIST_HANDOFF, &out->handoff_delay);
}
