/*
 * acquire.c — handing out leases: the fast path (an idle connection, one
 * lock round), waiting in the FIFO line, the checks before hand-out
 * (lifetime, idle time, validation) and what a timeout reports.
 */
#include "perturb.h"
#include "pool_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define lock(p) dbpool__lock(p)
#define unlock(p) dbpool__unlock(p)
#define total_locked(p) dbpool__total_locked(p)

/* acquire                                                                */
/* ---------------------------------------------------------------------- */

/* Take c off the idle list as the caller's lease. Lock held. */
static void lease_idle_locked(dbpool *p, dbpool_conn *c) {
    dbpool__idle_remove(p, c);
    c->state = CONN_LEASED;
    p->n_leased++;
    dbpool__note_peak(p, 0);
    if (p->opt.min_idle > 0) /* a spare taken: another opened now, not at the next pass */
        dbpool__request_refill_locked(p);
}

/* Can c be handed out without I/O? (lock held) */
static bool ready_locked(const dbpool *p, const dbpool_conn *c, int64_t now) {
    return now < c->expires_ns && !dbpool__needs_validation(p, c, now) && total_locked(p) <= p->cap &&
           !dbpool__idle_expired_locked(p, c, now);
}

void dbpool__lease_begin_locked(dbpool *p, dbpool_conn *c, int64_t now, const lease_trace *trace) {
    (void)p;
    c->uses++;
    c->acquired_ns = now;
    c->leak_reported = false;
    c->validated_rtt_ns = 0;
    if (trace) {
        if (!c->trace)
            c->trace = malloc(sizeof *c->trace);
        if (c->trace)
            *c->trace = *trace;
    } else if (c->trace) {
        c->trace->depth = 0;
    }
}

/* The checks that need I/O before a lease is handed out, outside the lock:
 * lifetime, cap and validation. Returns false when the connection was
 * closed instead; the caller then still counts in n_holding and must drop
 * that under the lock before anything else (pool.c frees a closed pool only
 * when nothing counts, and closing this connection may have been the last
 * other thing that kept it). */
/* The caller of a failed checkout_slow had waited in line: put it back at
 * its place before c is closed (the close may bring a new connection, and
 * that one is the caller's, not the next waiter's). */
static void back_in_line(dbpool *p, waiter *w) {
    if (!w)
        return;
    lock(p);
    if (!p->closed) {
        w->conn = NULL;
        w->handed_ns = 0;
        w->poked = false;
        w->timed = false;
        dbpool__waiter_enqueue(p, w); /* w->since: when it first joined */
        dbpool__poke_head_locked(p);  /* first again, maybe beside an idle one */
    }
    unlock(p);
}

static bool checkout_slow_io(dbpool *p, dbpool_conn *c, const lease_trace *trace, waiter *requeue,
                             bool *failed_validation) {
    int64_t now = dbpool__fast_now_ns();
    lock(p);
    p->n_holding++;
    /* Held from now on, as far as the leak scan and a timeout's report
     * are concerned: the previous lease's start would age it wrongly. */
    c->acquired_ns = now;
    /* Not a lease yet: a validation that outlasts leak_reclaim_ms must
     * not be reported and reclaimed as one (the caller would get a lease
     * that counts nowhere, and the pool would open another past the cap). */
    c->checking = true;
    /* And by whom: a timeout meanwhile names it as a holder, with this
     * caller's stack, not that of the lease that used it before. */
    dbpool__trace_store_locked(c, trace);
    bool expired = now >= c->expires_ns;
    bool over_cap = total_locked(p) > p->cap;
    bool stale = dbpool__idle_expired_locked(p, c, now);
    /* Under the lock: a dbpool_refresh meanwhile writes c->retire. */
    dbpool_close_reason why = expired    ? dbpool__expiry_reason(c)
                              : over_cap ? DBPOOL_CLOSE_SHRINK
                                         : DBPOOL_CLOSE_IDLE_TIMEOUT;
    unlock(p);
    if (expired || over_cap || stale) {
        back_in_line(p, requeue);
        dbpool__destroy_conn(p, c, why);
        return false;
    }
    int64_t rtt = 0; /* of the validation round trip, if one ran */
    if (dbpool__needs_validation(p, c, now)) {
        /* Bounded by validation_timeout_ms alone: cutting it at the caller's
         * deadline would close healthy connections of callers in a hurry. */
        int64_t t0 = dbpool__now_ns();
        int64_t vdeadline = dbpool__deadline_after_ms(p->opt.validation_timeout_ms);
        dbpool_error e;
        dbpool__clearerr(&e);
        c->touched = true;
        int vrc = p->driver->ping(c->native, vdeadline, &e);
        rtt = dbpool__now_ns() - t0;
        if (rtt <= 0)
            rtt = 1;
        if (vrc != DBPOOL_OK) {
            back_in_line(p, requeue);
            dbpool__note_validation_bound(p, &e);
            dbpool__finish_err(p, &e);
            dbpool__log(p, DBPOOL_LOG_WARN, "connection #%llu failed validation, replacing it: %s",
                        (unsigned long long)c->id, e.message);
            lock(p);
            p->stats.validation_failures++;
            unlock(p);
            if (failed_validation)
                *failed_validation = true;
            dbpool__destroy_conn(p, c, DBPOOL_CLOSE_VALIDATION);
            return false;
        }
    }
    lock(p);
    p->n_holding--; /* the lease keeps the pool from here on */
    c->checking = false;
    /* Held from the hand-out: a long validation before it is no part of
     * the lease (else the next leak scan would find it held that long and
     * reclaim a lease the caller has only just got). */
    dbpool__lease_begin_locked(p, c, rtt > 0 ? dbpool__fast_now_ns() : now, trace);
    c->validated_rtt_ns = rtt; /* dbpool_check_health's round trip, if one ran */
    unlock(p);
    return true;
}

/* checkout_slow_io with cancellation disabled (internal.h): a cancel
 * during its validation or close would leave the connection counted as
 * checking, and the pool held, for good. */
static bool checkout_slow(dbpool *p, dbpool_conn *c, const lease_trace *trace, waiter *requeue,
                          bool *failed_validation) {
    int cancel_state = dbpool__nocancel_begin();
    bool ok = checkout_slow_io(p, c, trace, requeue, failed_validation);
    dbpool__nocancel_end(cancel_state);
    return ok;
}

/* After checkout_slow returned false: lock held, drop its count. A pool
 * closed meanwhile is freed by the caller once it unlocks, if nothing else
 * holds it. */
static void checkout_failed_locked(dbpool *p) { p->n_holding--; }

/* What an acquire timeout reports about the holders (filled under the lock,
 * symbolised after it). */
typedef struct holders_info {
    int count;
    int64_t oldest_ms;
    lease_trace trace;
    bool have_trace;
} holders_info;

static int timeout_error_locked(dbpool *p, int64_t start, dbpool_error *err, holders_info *h) {
    int64_t now = dbpool__fast_now_ns();
    const dbpool_conn *oldest = NULL;
    /* A lease taken back through a thread cache is held as much as an
     * ordinary one. Its start is written by its owner without the lock, so
     * it is counted but not aged (reading it would race with the owner's
     * next lease). */
    int cached, parked_free, pinged = 0, reclaimed = 0;
    dbpool__parked_counts_locked(p, &cached, &parked_free);
    for (const dbpool_conn *c = p->all_slots; c; c = c->all_next) {
        if (c->state != CONN_LEASED && c->state != CONN_RETURNING)
            continue;
        if (c->pinging) { /* maintenance's, for a moment: no caller to blame */
            pinged++;
            continue;
        }
        if (c->reclaimed) { /* a leak whose place was given back: it holds no place now */
            reclaimed++;
            continue;
        }
        h->count++;
        if (!oldest || c->acquired_ns < oldest->acquired_ns)
            oldest = c;
    }
    h->count += cached;
    char holders[256] = "";
    size_t n = 0;
    if (h->count > 0)
        n += (size_t)snprintf(holders, sizeof holders, "; %d holder%s", h->count, h->count == 1 ? "" : "s");
    if (cached > 0 && n < sizeof holders)
        n += (size_t)snprintf(holders + n, sizeof holders - n,
                              " (%d through a thread cache: hold time unknown)", cached);
    if (oldest && n < sizeof holders) {
        h->oldest_ms = (now - oldest->acquired_ns) / DBPOOL_NS_PER_MS;
        n += (size_t)snprintf(holders + n, sizeof holders - n,
                              ", the oldest%s holding its connection for %lld ms",
                              cached > 0 ? " of the others" : "", (long long)h->oldest_ms);
        if (oldest->trace && oldest->trace->depth > 0) {
            h->trace = *oldest->trace;
            h->have_trace = true;
        }
    }
    if (pinged > 0 && n < sizeof holders)
        n += (size_t)snprintf(holders + n, sizeof holders - n, "; %d in a keepalive ping", pinged);
    if (reclaimed > 0 && n < sizeof holders)
        snprintf(holders + n, sizeof holders - n,
                 "; %d reclaimed lease%s still out (not counted against max)", reclaimed,
                 reclaimed == 1 ? "" : "s");
    char last[sizeof err->message];
    last[0] = '\0';
    if (p->last_connect_error.code != DBPOOL_OK)
        snprintf(last, sizeof last, "; last connect error (%s): %s",
                 dbpool_errname(p->last_connect_error.code), p->last_connect_error.message);
    p->stats.timeouts++;
    /* In use and idle as dbpool_get_stats counts them: parked connections
     * by their park word. */
    char head[sizeof err->message];
    snprintf(head, sizeof head,
             "timed out after %lld ms waiting for a connection from pool '%s' "
             "(%d in use, %d idle, %d connecting, %d waiting, max %d%s%s%s)",
             (long long)((dbpool__now_ns() - start) / DBPOOL_NS_PER_MS), p->name,
             dbpool__callers_leased_locked(p) + cached, p->n_idle + parked_free + p->n_pinging,
             p->n_connecting, p->n_waiting, p->cap,
             p->suspended ? ", suspended: nothing is handed out until dbpool_resume" : "",
             p->breaker != DBPOOL_BREAKER_CLOSED ? ", circuit breaker " : "",
             p->breaker != DBPOOL_BREAKER_CLOSED ? dbpool_breaker_state_name(p->breaker) : "");
    /* The holders yield to the last connect error, the likelier cause,
     * when both do not fit (a long pool name, a long driver message). */
    size_t used = strlen(head) + strlen(last), cap = sizeof err->message - 1;
    if (used + strlen(holders) > cap) {
        size_t room = used < cap ? cap - used : 0;
        if (room > 4) {
            memcpy(holders + room - 4, " ...", 5);
        } else {
            holders[0] = '\0';
        }
    }
    /* The holders go inside head's closing parenthesis. */
    size_t hl = strlen(head);
    bool closes = hl > 0 && head[hl - 1] == ')';
    if (closes)
        head[hl - 1] = '\0';
    return dbpool__seterr(err, DBPOOL_ETIMEDOUT, "%s%s%s%s", head, holders, closes ? ")" : "", last);
}

int dbpool__breaker_error_locked(dbpool *p, dbpool_error *err) {
    char when[64] = "a trial connect is under way";
    if (p->breaker == DBPOOL_BREAKER_OPEN) {
        int64_t left =
            p->opt.breaker_cooldown_ms - (dbpool__fast_now_ns() - p->breaker_opened_ns) / DBPOOL_NS_PER_MS;
        snprintf(when, sizeof when, "next try in %lld ms", (long long)(left > 0 ? left : 0));
    }
    return dbpool__seterr(err, DBPOOL_EUNAVAILABLE,
                          "pool '%s' is not opening connections: the circuit breaker is %s after %d "
                          "consecutive failed connects (%s); last connect error: %s",
                          p->name, dbpool_breaker_state_name(p->breaker), p->consecutive_failures, when,
                          p->last_connect_error.message);
}

/* A lease for the caller of acquire_once, not counted yet: its caller
 * counts it (acquire_counted) once the caller gets it. Until then
 * lease_start holds when the acquire began, on the fast clock. */
static inline int hand_out(dbpool_conn *c, int64_t fast_start, dbpool_conn **out) {
    c->lease_start = fast_start;
    *out = c;
    return DBPOOL_OK;
}

/* Count one acquire: the one place every way to a lease goes through, once
 * per lease, when the caller gets it. That is after before_acquire took it
 * (a refused hand-out is no acquire) and after the lock is dropped (no
 * clock read or histogram write inside the critical section every thread
 * shares). The caller holds c, and only its holder writes the counts, so
 * they need no lock and no atomic add, and a hooked acquire no lock round
 * of its own; dbpool_get_stats sums them over the slots.
 *
 * The use time starts at `now`, so a hook's time is no part of the
 * caller's use. c->lease_start holds when the acquire began until then
 * (hand_out; sticky.c for the thread cache's).
 *
 * `no_wait`: the thread cache's own hand-out: one count, and its zero wait
 * reaches the histogram at the next snapshot
 * (dbpool__fold_fast_leases_locked), so that path stays at one store. A
 * hook's time there is no wait either (docs/configuration.md), and `now`
 * is 0 without a hook: the use time started at the compare-and-swap.
 * Else the wait until `now`, a hook's time included, is recorded. */
#if defined(__GNUC__) || defined(__clang__)
__attribute__((always_inline))
#endif
static inline void
acquire_counted(dbpool *p, dbpool_conn *c, int64_t now, bool no_wait) {
    if (no_wait) {
        if (now)
            c->lease_start = now;
        atomic_store_explicit(&c->fast_leases,
                              atomic_load_explicit(&c->fast_leases, memory_order_relaxed) + 1,
                              memory_order_relaxed);
        return;
    }
    int64_t start = c->lease_start;
    c->lease_start = now;
    atomic_store_explicit(&c->leases, atomic_load_explicit(&c->leases, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    if (c->uses == 1)
        atomic_store_explicit(&c->first_leases,
                              atomic_load_explicit(&c->first_leases, memory_order_relaxed) + 1,
                              memory_order_relaxed);
    dbpool__metrics_record(p->metrics, DBPOOL_HIST_ACQUIRE, now - start);
}

void dbpool__acquire_counts_locked(const dbpool *p, uint64_t *acquired, uint64_t *reused) {
    uint64_t fast = 0, other = 0, first = 0;
    for (const dbpool_conn *c = p->all_slots; c; c = c->all_next) {
        fast += atomic_load_explicit(&c->fast_leases, memory_order_relaxed);
        other += atomic_load_explicit(&c->leases, memory_order_relaxed);
        first += atomic_load_explicit(&c->first_leases, memory_order_relaxed);
    }
    *acquired = fast + other;
    *reused = fast + other - first;
}

/* A connection nobody uses, for w: an idle one, or one parked for a thread
 * that is not using it now. Lock held. */
static bool take_unused_locked(dbpool *p, waiter *w) {
    if (p->suspended)
        return false;
    if (p->idle_head) {
        w->conn = p->idle_head;
        lease_idle_locked(p, w->conn);
        return true;
    }
    if (p->parked_head && (w->conn = dbpool__steal_parked_locked(p)) != NULL) {
        dbpool__note_peak(p, 0);
        return true;
    }
    return false;
}

/* A caller cancelled while it waited in line (pthread_cancel, deferred):
 * the wait has taken the pool lock back before this runs. It leaves the
 * line, and a connection handed to it meanwhile goes back to the pool (or,
 * the pool closed, is closed), as at a timeout; the pool may be freed
 * here, as at the end of an acquire. Nothing else of the caller's is held
 * during the wait (a manager's hold on the pool has a handler of its own). */
typedef struct wait_cancel {
    dbpool *p;
    waiter *w;
} wait_cancel;

static void waiter_cancelled(void *arg) {
    const wait_cancel *wc = arg;
    dbpool *p = wc->p;
    waiter *w = wc->w;
    dbpool__waiter_dequeue(p, w);
    dbpool_conn *give_back = w->conn;
    w->conn = NULL;
    if (give_back && !p->closed) {
        p->n_leased--;
        dbpool__publish_locked(p, give_back, give_back->last_used_ns);
        give_back = NULL;
    }
    dbpool__poke_head_locked(p);
    pthread_cond_destroy(&w->cond);
    bool free_it = dbpool__can_free_locked(p);
    unlock(p);
    if (free_it)
        dbpool__free(p);
    else if (give_back) /* still counted as leased: this may free the pool */
        dbpool__destroy_conn(p, give_back, DBPOOL_CLOSE_POOL_CLOSED);
}

/* One wait on w's condition variable. With `cancellable` (the caller had
 * cancellation enabled), a deferred cancellation point: a cancel ends the
 * caller's thread here through waiter_cancelled. Cancellation is disabled
 * again before the wait returns normally. */
static int wait_once(dbpool *p, waiter *w, int64_t until, bool cancellable) {
    struct timespec ts = {(time_t)(until / INT64_C(1000000000)), (long)(until % INT64_C(1000000000))};
    if (!cancellable)
        return until == INT64_MAX ? pthread_cond_wait(&w->cond, &p->lock)
                                  : pthread_cond_timedwait(&w->cond, &p->lock, &ts);
    int wrc, type, ignored;
    wait_cancel wc = {p, w};
    pthread_cleanup_push(waiter_cancelled, &wc);
    /* Asynchronous cancellation would strike anywhere: deferred for the wait. */
    pthread_setcanceltype(PTHREAD_CANCEL_DEFERRED, &type);
    pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, &ignored);
    wrc = until == INT64_MAX ? pthread_cond_wait(&w->cond, &p->lock)
                             : pthread_cond_timedwait(&w->cond, &p->lock, &ts);
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &ignored);
    pthread_setcanceltype(type, &ignored);
    pthread_cleanup_pop(0);
    return wrc;
}

/* Wait in line until a connection is handed over, a connector fails us,
 * the deadline passes or the pool closes. Lock held on entry and return. */
static void wait_in_line(dbpool *p, waiter *w, int64_t deadline, bool cancellable) {
    /* w->since on the condition variable's clock (a caller back in line
     * keeps the window it started with). */
    const int64_t since = dbpool__now_ns() - (dbpool__fast_now_ns() - w->since);
    while (!w->conn && !w->failed && !p->closed) {
        /* While the pool is not starving, wake up when this waiter's
         * barging window ends: then the pool starves from the first waiter
         * on (it waited at least as long) and hands off in order. The
         * window is read again each time: it adapts to the leases. */
        int64_t until = deadline;
        if (!p->starving) {
            int64_t now = dbpool__now_ns();
            int64_t window_end = since + dbpool__barging_window_ns(p);
            if (now >= window_end) {
                if (dbpool__starve_if_overdue_locked(p))
                    dbpool__poke_head_locked(p);
                if (w->conn)
                    break;
                window_end = now + dbpool__barging_window_ns(p);
            }
            if (!p->starving && window_end < until)
                until = window_end;
        }
        if (w->poked) {
            w->poked = false;
            if (take_unused_locked(p, w))
                break;
        }
        w->timed = !p->starving;
        int wrc = wait_once(p, w, until, cancellable);
        if (wrc == ETIMEDOUT && until == deadline) {
            /* A last look before giving up. A release through a thread
             * cache wakes nobody, and with a barging window longer than
             * what is left of the wait, this was the first wake-up: the
             * connection may sit there unused. */
            if (!w->conn && !w->failed && !p->closed && (w == p->wait_head || dbpool__may_overtake_locked(p)))
                take_unused_locked(p, w);
            break;
        }
    }
    /* A hand-off that raced with the timeout still counts: dropping it
     * would lose the connection. */
    dbpool__waiter_dequeue(p, w);
    dbpool__poke_head_locked(p); /* whatever is still idle is the next one's */
}

/* The part of an acquire that may wait or do I/O, run with cancellation
 * disabled (internal.h): only the wait in line itself, when the caller
 * had cancellation enabled, is a cancellation point. */
static int acquire_wait(dbpool *p, int64_t timeout_ms, bool may_wait, bool try_only, const lease_trace *trace,
                        dbpool_conn **out, dbpool_error *err, int64_t call_start, int64_t fast_start,
                        bool cached_failed_validation, bool cancellable) {
    if (timeout_ms < 0)
        timeout_ms = p->opt.acquire_timeout_ms;
    if (timeout_ms == 0)
        may_wait = false;
    const int64_t start = call_start ? call_start : dbpool__now_ns();
    const int64_t deadline = timeout_ms > (INT64_MAX - start) / DBPOOL_NS_PER_MS
                                 ? INT64_MAX
                                 : start + timeout_ms * DBPOOL_NS_PER_MS;
    holders_info holders = {0};
    /* This caller's place in line. Handed a connection that fails its
     * checks, it is put back there (checkout_slow), with the time it first
     * arrived: not behind those who came after it. */
    waiter w;
    bool w_ready = false; /* w's condition variable is initialised */
    int rc;

    /* A connection handed to this caller, back in line, while the one that
     * failed its checks was being closed, when the acquire ends anyway
     * (its deadline passed): closed after the lock is dropped, when the
     * pool was closed meanwhile (else it goes back to the pool). */
    dbpool_conn *give_back = NULL;

    /* A caller who does not wait checks at most one connection with I/O:
     * after one failed its validation, it takes only an idle connection
     * ready without any, or makes its one connect. Else every idle
     * connection of a pool whose network went silent would cost it a
     * validation timeout in turn. The connection of the thread's cache,
     * checked above, counts. */
    bool checked_once = !may_wait && cached_failed_validation;

    lock(p);
    for (;;) {
        /* Handed a connection before a close or a suspend: the hand-off
         * counts, as in wait_in_line. */
        bool handed = w_ready && w.conn;
        if (p->closed && !handed) {
            rc = dbpool__seterr(err, DBPOOL_ECLOSED, "pool '%s' is closed", p->name);
            break;
        }
        if (p->suspended && p->opt.suspend_fails_fast && !handed) {
            rc = dbpool__seterr(err, DBPOOL_EBUSY, "pool '%s' is suspended: try again after dbpool_resume",
                                p->name);
            break;
        }
        int64_t now = dbpool__fast_now_ns();
        dbpool_conn *c = NULL;
        if (w_ready && (w.queued || w.conn || w.failed)) {
            /* Back in line after a failed check: wait at its place (or
             * take what was handed over or said meanwhile). */
        } else if (!p->suspended && p->idle_head && dbpool__may_overtake_locked(p) &&
                   (!checked_once || ready_locked(p, p->idle_head, now))) {
            /* 1. An idle connection, when nobody waits ahead of us. */
            c = p->idle_head;
            lease_idle_locked(p, c);
        } else if (!p->suspended && !checked_once && p->parked_head && dbpool__may_overtake_locked(p) &&
                   (c = dbpool__steal_parked_locked(p)) != NULL) {
            /* 1b. A connection parked for another thread, not in use now. */
            dbpool__note_peak(p, 0);
        } else {
            bool needs_new = !p->suspended && (!p->idle_head || checked_once) && total_locked(p) < p->cap;
            if (needs_new && dbpool__breaker_blocks_locked(p, now)) {
                rc = dbpool__breaker_error_locked(p, err);
                break;
            }
            if (!may_wait) {
                if (needs_new && !p->wait_head) {
                    /* A caller who will not wait gets one connect attempt on
                     * its own thread, admitted by the breaker like a
                     * connector's job: after the cooldown it is the one
                     * trial (half-open), and other callers get EUNAVAILABLE
                     * above while it runs. */
                    if (!dbpool__breaker_admit_locked(p, now)) { /* not blocked above: admitted */
                        rc = dbpool__breaker_error_locked(p, err);
                        break;
                    }
                    p->n_connecting++;
                    unlock(p);
                    dbpool__log_queued_events(p);
                    rc = dbpool__fill_reserved(p, dbpool__deadline_after_ms(p->opt.connect_timeout_ms), NULL,
                                               true, trace, out, err);
                    if (rc == DBPOOL_OK)
                        (*out)->lease_start = fast_start; /* as hand_out */
                    return rc;
                }
                if (try_only && p->suspended) {
                    /* Not "no connection free": there may be idle ones. */
                    rc = dbpool__seterr(err, DBPOOL_EBUSY,
                                        "pool '%s' is suspended: nothing is handed out until dbpool_resume "
                                        "(try_acquire does not wait)",
                                        p->name);
                } else if (try_only) {
                    /* In use as dbpool_get_stats counts it: a connection in
                     * a keepalive ping is idle, held by maintenance for a
                     * moment, and said apart; callers waiting explain why
                     * no new connection was opened. */
                    int parked_busy, parked_free;
                    dbpool__parked_counts_locked(p, &parked_busy, &parked_free);
                    char more[128] = "";
                    size_t n = 0;
                    if (p->n_pinging > 0)
                        n += (size_t)snprintf(more, sizeof more, "; %d in a keepalive ping", p->n_pinging);
                    /* Places taken by connects under way: without them,
                     * "1 in use, max 2" would not explain the refusal. */
                    if (p->n_connecting > 0 && n < sizeof more)
                        n += (size_t)snprintf(more + n, sizeof more - n, "; %d connecting", p->n_connecting);
                    if (p->n_waiting > 0 && n < sizeof more)
                        snprintf(more + n, sizeof more - n, "; %d waiting ahead", p->n_waiting);
                    rc =
                        dbpool__seterr(err, DBPOOL_EBUSY,
                                       "no connection free in pool '%s' (%d in use, max %d%s) and "
                                       "try_acquire does not wait",
                                       p->name, dbpool__callers_leased_locked(p) + parked_busy, p->cap, more);
                } else {
                    rc = timeout_error_locked(p, start, err, &holders); /* a timeout of 0 */
                }
                break;
            }
            if (p->opt.max_waiters > 0 && p->n_waiting >= p->opt.max_waiters) {
                rc = dbpool__seterr(err, DBPOOL_EBUSY,
                                    "pool '%s' already has %d callers waiting (max_waiters %d): try again "
                                    "later or raise max_waiters",
                                    p->name, p->n_waiting, p->opt.max_waiters);
                break;
            }
            if (dbpool__now_ns() >= deadline) {
                rc = timeout_error_locked(p, start, err, &holders);
                break;
            }
            /* 2. Wait in line; ask for a new connection if there is room. */
            if (!w_ready) {
                memset(&w, 0, sizeof w);
                if (dbpool__cond_init_monotonic(&w.cond) != 0) {
                    rc = dbpool__seterr(err, DBPOOL_ENOMEM,
                                        "out of memory: no condition variable to wait in line for pool '%s'",
                                        p->name);
                    break;
                }
                w.trace = trace;
                w_ready = true;
            }
            w.conn = NULL;
            w.failed = false;
            w.poked = false;
            w.handed_ns = 0;
            dbpool__waiter_enqueue(p, &w);
        }
        if (!c) {
            dbpool__request_connections_locked(p);
            if (dbpool__events_waiting_locked(p)) {
                unlock(p);
                dbpool__log_queued_events(p);
                lock(p);
            }
            wait_in_line(p, &w, deadline, cancellable);
            if (w.conn) {
                c = w.conn;
                now = dbpool__fast_now_ns();
                if (w.handed_ns)
                    dbpool__metrics_record(p->metrics, DBPOOL_HIST_HANDOFF, now - w.handed_ns);
            } else if (w.failed) {
                if (err)
                    *err = w.error;
                rc = w.error.code;
                break;
            } else if (p->closed) {
                continue; /* reported at the top */
            } else {
                rc = timeout_error_locked(p, start, err, &holders);
                break;
            }
        }
        /* c is ours (counted as leased): hand it out, after checks. */
        if (ready_locked(p, c, now)) {
            dbpool__lease_begin_locked(p, c, now, trace);
            unlock(p);
            if (w_ready)
                pthread_cond_destroy(&w.cond);
            return hand_out(c, fast_start, out);
        }
        /* Did the check that fails run a validation? (another caller's
         * failure meanwhile counts too: then one connect, no harm) */
        uint64_t failed_validations = p->stats.validation_failures;
        unlock(p);
        if (checkout_slow(p, c, trace, w_ready ? &w : NULL, NULL)) {
            if (w_ready)
                pthread_cond_destroy(&w.cond);
            return hand_out(c, fast_start, out);
        }
        lock(p);
        checkout_failed_locked(p); /* a close meanwhile is reported at the top */
        if (!may_wait && p->stats.validation_failures != failed_validations)
            checked_once = true; /* not for one closed without I/O (lifetime, idle time, cap) */
        /* A validation may have used up the time: no second one past the
         * deadline (so an acquire overruns by at most one validation). */
        if (may_wait && dbpool__now_ns() >= deadline) {
            int64_t fnow = dbpool__fast_now_ns();
            if (w_ready && w.queued)
                dbpool__waiter_dequeue(p, &w);
            dbpool_conn *last = NULL;
            if (w_ready && w.conn) {
                /* Handed another one meanwhile (back in line, first): the
                 * caller's if it needs no check; else it would need its own
                 * checks past the deadline. It is not this caller's then;
                 * dropping it would lose it for good. */
                dbpool_conn *back = w.conn;
                w.conn = NULL;
                if (p->closed) {
                    give_back = back; /* still counted as leased: closed below */
                } else if (ready_locked(p, back, fnow)) {
                    last = back;
                } else {
                    p->n_leased--;
                    dbpool__publish_locked(p, back, back->last_used_ns);
                }
            }
            /* A last look, as a waiter's at its deadline: a connection
             * that came back meanwhile and needs no I/O is this caller's,
             * not a timeout's with it lying idle. */
            if (!last && !p->closed && !p->suspended && p->idle_head && dbpool__may_overtake_locked(p) &&
                ready_locked(p, p->idle_head, fnow)) {
                last = p->idle_head;
                lease_idle_locked(p, last);
            }
            dbpool__poke_head_locked(p);
            if (last) {
                dbpool__lease_begin_locked(p, last, fnow, trace);
                unlock(p);
                if (w_ready)
                    pthread_cond_destroy(&w.cond);
                return hand_out(last, fast_start, out);
            }
            rc = timeout_error_locked(p, start, err, &holders);
            break;
        }
    }
    if (w_ready) {
        if (w.queued) { /* put back in line, then stopped (closed, suspended) */
            dbpool__waiter_dequeue(p, &w);
            dbpool__poke_head_locked(p);
        }
        pthread_cond_destroy(&w.cond);
    }
    bool free_it = dbpool__can_free_locked(p);
    unlock(p);
    if (free_it) {
        dbpool__free(p);
        return rc;
    }
    if (give_back) /* the pool was closed meanwhile; this may free it */
        dbpool__destroy_conn(p, give_back, DBPOOL_CLOSE_POOL_CLOSED);
    if (holders.have_trace && err) {
        /* Formatted for the room left in the message, so that it ends on
         * a whole frame, not in the middle of an address. */
        static const char intro[] = "; the oldest was acquired at:\n";
        size_t used = strlen(err->message);
        char where[sizeof err->message];
        where[0] = '\0';
        if (used + sizeof intro < sizeof err->message)
            dbpool__trace_format(&holders.trace, where, sizeof err->message - used - (sizeof intro - 1), 4);
        if (strncmp(where, "  #", 3) == 0) /* at least one frame */
            snprintf(err->message + used, sizeof err->message - used, "%s%s", intro, where);
    }
    return rc;
}

/* When an acquire call began, on the system and the fast clock. */
typedef struct call_starts {
    int64_t ns, fast_ns;
} call_starts;

/* One hand-out, not counted yet (the caller counts it: acquire_counted).
 * `starts` (NULL: now) is when the caller's call began: acquire_hooked
 * calls this again after its hook refused a connection, within the same
 * deadline. (One pointer, not two numbers: the ordinary acquire passes no
 * more arguments on the stack than it did before.) */
static int acquire_once(dbpool *p, int64_t timeout_ms, bool try_only, const lease_trace *trace,
                        dbpool_conn *cached, const call_starts *starts, dbpool_conn **out,
                        dbpool_error *err) {
    bool may_wait = !try_only;
    dbpool__clearerr(err);
    if (!out)
        return dbpool__seterr(err, DBPOOL_EINVAL, "dbpool_acquire: out must not be NULL");
    *out = NULL;
    if (!p)
        return dbpool__seterr(err, DBPOOL_EINVAL, "dbpool_acquire: pool is NULL");
    if (dbpool__forked(p))
        return dbpool__fork_error(err);
    /* When this call began, if before the fast path below (a connection
     * from the thread cache checked first): the deadline and a timeout's
     * "timed out after N ms" count from here, not from after that check. */
    int64_t call_start = starts ? starts->ns : 0, fast_call_start = starts ? starts->fast_ns : 0;
    bool cached_failed_validation = false; /* that check was this caller's one round trip */
    if (!trace) {
        /* The thread's parked connection was tried by the caller
         * (sticky_first): one due for the checks comes here. */
        dbpool_conn *c = cached;
        if (c) { /* an ordinary lease now, due for the checks */
            if (!call_start)
                call_start = dbpool__now_ns();
            if (!fast_call_start)
                fast_call_start = dbpool__fast_now_ns();
            int64_t t0 = fast_call_start;
            if (checkout_slow(p, c, NULL, NULL, &cached_failed_validation))
                return hand_out(c, t0, out);
            lock(p);
            checkout_failed_locked(p);
            if (p->closed) {
                bool free_it = dbpool__can_free_locked(p);
                unlock(p);
                if (free_it)
                    dbpool__free(p);
                return dbpool__seterr(err, DBPOOL_ECLOSED, "the pool was closed during this acquire");
            }
            unlock(p);
        }
    }
    const int64_t fast_now0 = dbpool__fast_now_ns();
    const int64_t fast_start = fast_call_start ? fast_call_start : fast_now0; /* for the wait's histogram */
    if (!trace) {
        /* The fast path: an idle connection ready to go, nobody waiting.
         * One lock round, no deadline arithmetic, no system clock: the
         * bookkeeping takes the fast clock's reading. */
        int64_t now = fast_now0;
        lock(p);
        dbpool_conn *c = p->idle_head;
        if (c && !p->closed && !p->suspended && ready_locked(p, c, now) && dbpool__may_overtake_locked(p)) {
            lease_idle_locked(p, c);
            dbpool__lease_begin_locked(p, c, now, NULL);
            unlock(p);
            return hand_out(c, fast_start, out);
        }
        unlock(p);
    }
    /* The rest may wait and do I/O: no cancel may end it half-way. */
    int cancel_state = dbpool__nocancel_begin();
    int rc = acquire_wait(p, timeout_ms, may_wait, try_only, trace, out, err, call_start, fast_start,
                          cached_failed_validation, cancel_state == PTHREAD_CANCEL_ENABLE);
    dbpool__nocancel_end(cancel_state);
    return rc;
}

/* With a before_acquire hook: each connection the pool hands out is shown
 * to the hook, and one it refuses is closed and the acquire goes on, with
 * the same deadline, the same place in the statistics (one acquire, one
 * wait recorded) and the same errors. Refusals of connections that were
 * open already are bounded by the pool's size; beyond that, the refusals
 * are of connections opened for this caller, and each is followed by a
 * backoff (backoff_base_ms doubling to backoff_max_ms), so a hook that
 * refuses everything costs a few connects and ends at the deadline with
 * DBPOOL_ETIMEDOUT, rather than a connect storm until then. A caller who
 * does not wait stops there. `refused`: connections the thread cache's
 * path refused already. */
static int acquire_hooked(dbpool *p, int64_t timeout_ms, bool try_only, const lease_trace *trace,
                          dbpool_conn *cached, int refused, dbpool_conn **out, dbpool_error *err) {
    const int64_t start = dbpool__now_ns(), fast_start = dbpool__fast_now_ns();
    const call_starts starts = {start, fast_start};
    char pool_name[64]; /* for a message after a close, which may free the pool */
    snprintf(pool_name, sizeof pool_name, "%s", p->name);
    if (timeout_ms < 0)
        timeout_ms = p->opt.acquire_timeout_ms;
    const bool may_wait = !try_only && timeout_ms > 0;
    const int64_t deadline = timeout_ms > (INT64_MAX - start) / DBPOOL_NS_PER_MS
                                 ? INT64_MAX
                                 : start + timeout_ms * DBPOOL_NS_PER_MS;
    /* Held from here to the end: between two hand-outs this caller holds
     * nothing else of the pool, and a close meanwhile must not free it. */
    lock(p);
    dbpool__hold_locked(p);
    unlock(p);
    int backoffs = 0, rc;
    for (;;) {
        rc = acquire_once(p, timeout_ms, try_only, trace, cached, &starts, out, err);
        cached = NULL;
        if (rc != DBPOOL_OK) {
            if (refused > 0 && err && (rc == DBPOOL_ETIMEDOUT || rc == DBPOOL_EBUSY)) {
                size_t used = strlen(err->message);
                snprintf(err->message + used, sizeof err->message - used,
                         "; before_acquire refused %d connection%s during this acquire", refused,
                         refused == 1 ? "" : "s");
            }
            break;
        }
        dbpool_conn *c = *out;
        if (dbpool__hook_before_acquire(p, c)) {
            acquire_counted(p, c, dbpool__fast_now_ns(), false); /* the hook's time is the wait's */
            break;
        }
        *out = NULL;
        refused++;
        unsigned long long id = (unsigned long long)c->id; /* its slot may be someone else's once closed */
        int cap;
        if (!dbpool__reject_handed(p, c, &cap)) {
            rc = dbpool__seterr(err, DBPOOL_ECLOSED, "pool '%s' was closed during this acquire", pool_name);
            break;
        }
        if (refused <= cap)
            continue; /* maybe one that was open already: the next one at once */
        if (!may_wait || dbpool__now_ns() >= deadline) {
            rc = try_only ? DBPOOL_EBUSY : DBPOOL_ETIMEDOUT;
            if (rc == DBPOOL_ETIMEDOUT) {
                lock(p);
                p->stats.timeouts++;
                unlock(p);
            }
            rc = dbpool__seterr(err, rc,
                                "%s after %lld ms: before_acquire refused %d connection%s of pool '%s', more "
                                "than its cap of %d (the last was connection #%llu, now closed)",
                                try_only ? "no connection free" : "timed out",
                                (long long)((dbpool__now_ns() - start) / DBPOOL_NS_PER_MS), refused,
                                refused == 1 ? "" : "s", pool_name, cap, id);
            break;
        }
        int64_t delay = p->opt.backoff_base_ms;
        for (int i = 0; i < backoffs && delay < p->opt.backoff_max_ms; i++)
            delay *= 2;
        if (delay > p->opt.backoff_max_ms)
            delay = p->opt.backoff_max_ms;
        backoffs++;
        int64_t until = dbpool__now_ns() + delay * DBPOOL_NS_PER_MS;
        if (!dbpool__hook_backoff(p, until < deadline ? until : deadline)) {
            rc = dbpool__seterr(err, DBPOOL_ECLOSED, "pool '%s' was closed during this acquire", pool_name);
            break;
        }
    }
    dbpool__unhold(p); /* freed if closed meanwhile and nothing else holds it: no lease was handed out */
    return rc;
}

/* An acquire of the pool from inside its own lease hook (hooks.c) could
 * wait for the connection the hook holds: refused. */
static int acquire_in_hook(dbpool *p, dbpool_conn **out, dbpool_error *err) {
    dbpool__clearerr(err);
    *out = NULL;
    return dbpool__seterr(err, DBPOOL_EMISUSE,
                          "an acquire from pool '%s' inside its own before_acquire or after_release hook "
                          "(docs/threading.md, \"Callbacks\")",
                          p->name);
}

/* Inlined into its three callers: as a call of its own, passing its eight
 * arguments on to acquire_once cost the ordinary acquire about 40
 * instructions (callgrind). */
#if defined(__GNUC__) || defined(__clang__)
__attribute__((always_inline))
#endif
static inline int
acquire_impl(dbpool *p, int64_t timeout_ms, bool try_only, const lease_trace *trace, dbpool_conn *cached,
             int refused, dbpool_conn **out, dbpool_error *err) {
    if (p && out && p->hooks) {
        if (dbpool__in_hook(p))
            return acquire_in_hook(p, out, err); /* cached is NULL: sticky_hooked took none */
        if (p->opt.before_acquire && !dbpool__forked(p))
            return acquire_hooked(p, timeout_ms, try_only, trace, cached, refused, out, err);
    }
    int rc = acquire_once(p, timeout_ms, try_only, trace, cached, NULL, out, err);
    if (rc == DBPOOL_OK)
        acquire_counted(p, *out, dbpool__fast_now_ns(), false);
    return rc;
}

/* sticky_first for a pool with lease hooks: not from inside one of them
 * (acquire_impl refuses that), and the thread's parked connection shown
 * to before_acquire. One it refuses is closed, and the ordinary path takes
 * over (2; negative: the pool was closed meanwhile). */
static int sticky_hooked(dbpool *p, dbpool_conn **out, dbpool_error *err, dbpool_conn **cached) {
    if (dbpool__in_hook(p))
        return 0;
    dbpool_conn *c = dbpool__sticky_acquire(p);
    DBPOOL_PERTURB(); /* as in sticky_first */
    if (!c || c->state != CONN_PARKED) {
        *cached = c;
        return 0;
    }
    if (!p->opt.before_acquire || dbpool__hook_before_acquire(p, c)) {
        acquire_counted(p, c, p->opt.before_acquire ? dbpool__fast_now_ns() : 0, true);
        dbpool__clearerr(err);
        *out = c;
        return 1;
    }
    bool recorded;
    int hooked;
    dbpool__sticky_release(p, c, true, 0, &recorded, &hooked); /* an ordinary lease now */
    int cap;
    if (!dbpool__reject_handed(p, c, &cap)) {
        dbpool__clearerr(err);
        *out = NULL;
        return dbpool__seterr(err, DBPOOL_ECLOSED, "the pool was closed during this acquire");
    }
    return 2;
}

/* The fastest path, before anything else: the connection this thread
 * parked at its last release, taken back without the lock (sticky.c). It
 * never waits: its zero wait reaches the histogram at the next snapshot
 * (dbpool__fold_fast_leases_locked). Not with leak detection on (the lease
 * needs its trace) nor in a forked child. 1 when *out is the lease; else
 * *cached is a connection taken back that is due for the ordinary checks,
 * or NULL (2: and before_acquire refused one; negative: an error). */
static inline int sticky_first(dbpool *p, dbpool_conn **out, dbpool_error *err, dbpool_conn **cached) {
    *cached = NULL;
    if (!p || !out || p->opt.leak_threshold_ms > 0 || dbpool__forked(p))
        return 0;
    if (p->hooks)
        return sticky_hooked(p, out, err, cached);
    dbpool_conn *c = dbpool__sticky_acquire(p);
    DBPOOL_PERTURB(); /* busy (or leased): a recall may mark it wanted before its state is read */
    if (c && c->state == CONN_PARKED) {
        acquire_counted(p, c, 0, true);
        dbpool__clearerr(err);
        *out = c;
        return 1;
    }
    *cached = c;
    return 0;
}

/* The trace is captured here, one call below the caller, so that the leak
 * report's first frame is the caller's (dbpool__trace_capture keeps the
 * frames from there on). */
int dbpool_acquire(dbpool *p, int64_t timeout_ms, dbpool_conn **out, dbpool_error *err) {
    dbpool_conn *cached;
    int sticky = sticky_first(p, out, err, &cached);
    if (sticky == 1)
        return DBPOOL_OK;
    if (sticky < 0)
        return sticky;
    lease_trace t;
    bool tracing = p && p->opt.leak_threshold_ms > 0;
    if (tracing)
        dbpool__trace_capture(&t);
    return acquire_impl(p, timeout_ms, false, tracing ? &t : NULL, cached, sticky == 2, out, err);
}

int dbpool__acquire_traced(dbpool *p, int64_t timeout_ms, const lease_trace *trace, dbpool_conn **out,
                           dbpool_error *err) {
    return acquire_impl(p, timeout_ms, false, trace, NULL, 0, out, err);
}

int dbpool_try_acquire(dbpool *p, dbpool_conn **out, dbpool_error *err) {
    /* Checked here too, so that the message names the function called. */
    if (!out || !p) {
        dbpool__clearerr(err);
        if (out)
            *out = NULL;
        return dbpool__seterr(err, DBPOOL_EINVAL, "dbpool_try_acquire: %s",
                              !out ? "out must not be NULL" : "pool is NULL");
    }
    dbpool_conn *cached;
    int sticky = sticky_first(p, out, err, &cached);
    if (sticky == 1)
        return DBPOOL_OK;
    if (sticky < 0)
        return sticky;
    lease_trace t;
    bool tracing = p->opt.leak_threshold_ms > 0;
    if (tracing)
        dbpool__trace_capture(&t);
    return acquire_impl(p, 0, true, tracing ? &t : NULL, cached, sticky == 2, out, err);
}

/* ---------------------------------------------------------------------- */
