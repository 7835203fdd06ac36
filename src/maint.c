/* maint.c — the pool's maintenance thread, one per pool, started by
 * dbpool_open and joined by dbpool_close. Every maintenance_interval_ms it
 * retires connections past their lifetime, closes idle ones past
 * idle_timeout down to min_size, has the keepalive thread ping idle ones
 * every keepalive_ms, asks the connector threads to refill to min_size (it never connects
 * itself: a pass must not wait for a slow database), reports (and
 * optionally reclaims) leaked leases and adjusts the autoscale cap. It
 * takes connections out of the idle list under the lock and does its I/O
 * outside it; it never touches a leased connection (a reclaimed lease is
 * only stopped being counted). */
#include "pool_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define lock(p) dbpool__lock(p)
#define unlock(p) dbpool__unlock(p)

static void push(dbpool_conn **list, dbpool_conn *c) {
    c->next = *list;
    *list = c;
}

/* Lock held. Move idle connections due to close onto four lists. */
static void pick_locked(dbpool *p, int64_t now, dbpool_conn **expired, dbpool_conn **refreshed,
                        dbpool_conn **idle_out, dbpool_conn **over_cap_out) {
    dbpool_conn *c = p->idle_tail;
    while (c) {
        dbpool_conn *prev = c->prev;
        bool is_expired = now >= c->expires_ns;
        bool is_idle_out = dbpool__idle_expired_locked(p, c, now);
        bool over_cap = dbpool__total_locked(p) > p->cap;
        if (is_expired || is_idle_out || over_cap) {
            dbpool__idle_remove(p, c);
            c->state = CONN_CLOSING;
            p->n_closing++;
            /* Over the cap (autoscale lowered it) is a shrink, as at resize. */
            push(is_expired ? (c->retire ? refreshed : expired) : is_idle_out ? idle_out : over_cap_out, c);
        }
        c = prev;
    }
}

/* Lock held. The oldest idle connection due a keepalive ping that this
 * pass (started at pass_ns) has not pinged yet, held for the ping; NULL
 * when none. One at a time: a ping that hangs holds only its own
 * connection, and the others stay in the idle list for callers. */
static dbpool_conn *next_ping_locked(dbpool *p, int64_t now, int64_t pass_ns) {
    int64_t keepalive = p->opt.keepalive_ms * DBPOOL_NS_PER_MS;
    if (keepalive <= 0 || p->closed || p->maint_stop)
        return NULL;
    for (dbpool_conn *c = p->idle_tail; c; c = c->prev) {
        int64_t last_touch = c->last_used_ns > c->last_ping_ns ? c->last_used_ns : c->last_ping_ns;
        if (now - last_touch < keepalive || c->last_ping_ns >= pass_ns)
            continue;
        dbpool__idle_remove(p, c);
        c->state = CONN_LEASED; /* held by maintenance for the ping */
        c->pinging = true;      /* but no caller's: a timeout does not name it a holder */
        p->n_leased++;
        p->n_pinging++; /* nor do in_use, the peak and the utilisation count it */
        return c;
    }
    return NULL;
}

typedef struct leak_report {
    uint64_t id;
    int64_t held_ms;
    bool reported;  /* past leak_threshold_ms for the first time: the stack is logged */
    bool reclaimed; /* past leak_reclaim_ms: no longer counted */
    lease_trace trace;
    bool have_trace;
} leak_report;

#define MAX_LEAK_REPORTS 8

/* Lock held. Leases past the thresholds: report once, reclaim once. */
static int scan_leaks_locked(dbpool *p, int64_t now, leak_report *out) {
    if (p->opt.leak_threshold_ms <= 0)
        return 0;
    int n = 0;
    int64_t threshold = p->opt.leak_threshold_ms * DBPOOL_NS_PER_MS;
    int64_t reclaim = p->opt.leak_reclaim_ms * DBPOOL_NS_PER_MS;
    for (dbpool_conn *c = p->all_slots; c; c = c->all_next) {
        /* One an acquire is still checking is nobody's lease yet. */
        /* A keepalive ping's connection is maintenance's for a moment, no
         * caller's lease: its acquired_ns is the last lease's start. */
        if (c->state != CONN_LEASED || c->uses == 0 || c->checking || c->pinging)
            continue;
        int64_t held = now - c->acquired_ns;
        /* Reported once logged: one past what this pass logs waits for the
         * next pass, or its stack would never be shown. */
        bool report = !c->leak_reported && held >= threshold && n < MAX_LEAK_REPORTS;
        /* Likewise a reclaim: one this pass cannot log waits for the next,
         * or a place would be given back without its WARN line. */
        bool take_back = reclaim > 0 && !c->reclaimed && held >= reclaim && n < MAX_LEAK_REPORTS;
        if (!report && !take_back)
            continue;
        if (report) {
            c->leak_reported = true;
            p->stats.leaks_detected++;
        }
        if (take_back) {
            /* The holder keeps its connection (never freed under it), but
             * its place counts no more: a replacement may be opened. */
            c->reclaimed = true;
            p->n_leased--;
            p->n_reclaimed++;
            p->stats.leaks_reclaimed++;
        }
        if (n < MAX_LEAK_REPORTS) {
            leak_report *r = &out[n++];
            memset(r, 0, sizeof *r);
            r->id = c->id;
            r->held_ms = held / DBPOOL_NS_PER_MS;
            r->reported = report;
            r->reclaimed = take_back;
            r->have_trace = c->trace && c->trace->depth > 0;
            if (r->have_trace)
                r->trace = *c->trace;
        }
    }
    return n;
}

static void log_leaks(dbpool *p, const leak_report *r, int n) {
    for (int i = 0; i < n; i++) {
        char where[1024] = "  (stack not recorded)";
        if (r[i].have_trace)
            dbpool__trace_format(&r[i].trace, where, sizeof where, 12);
        /* Reported and reclaimed in one pass (leak_reclaim_ms close to
         * leak_threshold_ms): both lines, so that the stack is not lost. */
        if (r[i].reported) {
            char by[80] = "";
            if (r[i].have_trace)
                dbpool__trace_holder(&r[i].trace, by, sizeof by);
            dbpool__log(p, DBPOOL_LOG_WARN,
                        "possible leak: connection #%llu held for %lld ms (leak_threshold_ms %lld)%s%s, "
                        "acquired at:\n%s",
                        (unsigned long long)r[i].id, (long long)r[i].held_ms,
                        (long long)p->opt.leak_threshold_ms, by[0] ? " by " : "", by, where);
        }
        if (r[i].reclaimed)
            dbpool__log(
                p, DBPOOL_LOG_WARN,
                "connection #%llu held for %lld ms: reclaimed (no longer counted against max_size; closed "
                "when it comes back)",
                (unsigned long long)r[i].id, (long long)r[i].held_ms);
    }
}

/* Lock held. Utilisation-driven cap (opt.autoscale). */
static int autoscale_locked(dbpool *p, int64_t now, int *old_cap) {
    *old_cap = p->cap;
    /* No sample and no decision while suspended: nothing is handed out,
     * so in use / cap falls to 0 whatever the demand, and the cap would
     * shrink through a switchover (closing the idle connections above
     * it), leaving the resumed pool less room than its load had; and the
     * callers in line wait for dbpool_resume, not for room, so counting
     * them would grow it instead. The interval starts again at the
     * resume: the first pass after it would otherwise decide from what it
     * sees at that instant, before the load is back. */
    if (!p->opt.autoscale)
        return p->cap;
    if (p->suspended) {
        p->last_scale_ns = now;
        return p->cap;
    }
    /* The load in connections, read against the cap in force when the
     * interval ends: a dbpool_resize may have moved the cap since, and
     * shares of the old cap would be read against the new one. */
    int used = dbpool__callers_leased_locked(p);
    /* Callers waiting are demand: in a pool at its cap they count as full
     * use (the cap is what holds them back); with room under the cap they
     * wait for connects under way (a slow database), which a larger cap
     * would not speed up, and count one each. Not while the circuit
     * breaker is not closed: they wait on a database that is down (for a
     * lease to come back), and a cap grown through the outage would open
     * that many more connections once it is back. */
    if (p->n_waiting > 0 && p->breaker == DBPOOL_BREAKER_CLOSED && used < p->cap)
        used =
            dbpool__total_locked(p) >= p->cap || used + p->n_waiting > p->cap ? p->cap : used + p->n_waiting;
    p->util_sum += used;
    p->util_samples++;
    if (now - p->last_scale_ns < p->opt.autoscale_interval_ms * DBPOOL_NS_PER_MS)
        return p->cap;
    double util = p->util_samples && p->cap > 0 ? p->util_sum / p->util_samples / p->cap : 0.0;
    int step = (int)ceil(p->cap * p->opt.autoscale_step);
    if (step < 1)
        step = 1;
    int floor_cap = p->opt.min_size > 1 ? p->opt.min_size : 1;
    /* Above the high mark; with a mark of 1, which utilisation does not
     * pass, full at every sample of the interval (or it would never grow). */
    bool grow = util > p->opt.autoscale_high || (p->opt.autoscale_high >= 1.0 && util >= 1.0);
    if (grow && p->cap < p->opt.max_size)
        p->cap = p->cap + step > p->opt.max_size ? p->opt.max_size : p->cap + step;
    else if (util < p->opt.autoscale_low && p->cap > floor_cap) {
        /* Not so far that the load just seen would be above the high mark
         * at the new cap: the next interval would grow it back (at cap 2,
         * a load of 0.9 connection is 45%, and 90% at cap 1), and the cap
         * would go up and down every interval under a steady load,
         * closing and opening a connection each time. */
        int fits = (int)ceil(util * p->cap / p->opt.autoscale_high - 1e-9);
        int lower = p->cap - step;
        if (lower < fits)
            lower = fits;
        if (lower < floor_cap)
            lower = floor_cap;
        if (lower < p->cap)
            p->cap = lower;
    }
    p->util_sum = 0;
    p->util_samples = 0;
    p->last_scale_ns = now;
    return p->cap;
}

/* Everything a pass does but the keepalive pings: no network I/O but the
 * disconnects of the connections it closes. */
static void maint_checks(dbpool *p) {
    dbpool_conn *expired = NULL, *refreshed = NULL, *idle_out = NULL, *over_cap = NULL;
    leak_report leaks[MAX_LEAK_REPORTS];
    /* Taken before the pool's lock (the order everywhere), held from the
     * scan that marks leaks until their reports are logged. */
    bool leak_scan = p->opt.leak_threshold_ms > 0;
    /* Before "now" is read: a clock that parted from CLOCK_MONOTONIC is put
     * back first (once a second, whichever pool's pass comes). */
    dbpool__fast_clock_recheck();
    if (leak_scan)
        pthread_mutex_lock(&p->leak_log_lock);
    lock(p);
    if (p->closed) {
        unlock(p);
        if (leak_scan)
            pthread_mutex_unlock(&p->leak_log_lock);
        return;
    }
    int64_t now = dbpool__fast_now_ns();
    /* Parked connections unused for a whole interval (their thread is
     * gone or busy elsewhere) rejoin the idle list, where idle timeout,
     * lifetime and keepalive see them. */
    if (p->parked_head) {
        /* Not below 0, which would mean every parked one, in use or not:
         * an interval longer than the clock's reading (the time since
         * boot) takes none, as nothing can be older. */
        int64_t unused_since = now - p->opt.maintenance_interval_ms * DBPOOL_NS_PER_MS;
        dbpool__recall_parked_locked(p, false, unused_since > 0 ? unused_since : 0);
        /* One released through a cache woke nobody: a waiter inside its
         * window would sleep to its window's end (or its deadline). */
        dbpool__poke_head_locked(p);
    }
    int old_cap;
    int new_cap = autoscale_locked(p, now, &old_cap);
    if (new_cap != old_cap)
        dbpool__queue_cap_change_locked(p, old_cap, new_cap); /* in order with resizes */
    int nleaks = scan_leaks_locked(p, now, leaks);
    pick_locked(p, now, &expired, &refreshed, &idle_out, &over_cap);
    dbpool__request_connections_locked(p); /* reclaimed or grown places */
    /* Refill to min_size: the connects run on the connector threads, so
     * that a slow or dead database never holds up this pass (leak reports,
     * idle timeout, lifetime, keepalive) for a connect_timeout_ms. */
    dbpool__request_refill_locked(p);
    unlock(p);
    dbpool__log_queued_events(p);
    log_leaks(p, leaks, nleaks);
    if (leak_scan)
        pthread_mutex_unlock(&p->leak_log_lock);
    dbpool__close_closing_list(p, expired, DBPOOL_CLOSE_LIFETIME);
    dbpool__close_closing_list(p, refreshed, DBPOOL_CLOSE_REFRESHED);
    dbpool__close_closing_list(p, idle_out, DBPOOL_CLOSE_IDLE_TIMEOUT);
    dbpool__close_closing_list(p, over_cap, DBPOOL_CLOSE_SHRINK);
}

/* One round of keepalive pings: every idle connection due one, oldest
 * first, one at a time, each bounded by validation_timeout_ms. Run on the
 * keepalive thread, so that a ping that stalls (a server that stops
 * answering) holds up neither the maintenance pass's other checks (leak
 * reports, idle timeout, lifetime, refill) nor its next pass. */
static void keepalive_round(dbpool *p) {
    int64_t round_ns = dbpool__fast_now_ns();
    for (;;) {
        lock(p);
        dbpool_conn *ping = next_ping_locked(p, dbpool__fast_now_ns(), round_ns);
        unlock(p);
        if (!ping)
            break;
        dbpool_error e;
        dbpool__clearerr(&e);
        ping->touched = true;
        int prc = p->driver->ping(ping->native, dbpool__deadline_after_ms(p->opt.validation_timeout_ms), &e);
        lock(p);
        dbpool__ping_over_locked(p, ping);
        /* Shrunk during its ping: closed now, unless a caller waits for it
         * (shrink serves those in line before it closes anything). */
        bool shrink = ping->shrink_pinged && !(p->wait_head && !p->suspended && !p->closed);
        ping->shrink_pinged = false;
        if (prc == DBPOOL_OK && !shrink)
            dbpool__return_pinged_locked(p, ping, dbpool__fast_now_ns());
        unlock(p);
        if (prc == DBPOOL_OK && shrink) {
            dbpool__destroy_conn(p, ping, DBPOOL_CLOSE_SHRINK);
        } else if (prc != DBPOOL_OK) {
            dbpool__note_validation_bound(p, &e);
            dbpool__finish_err(p, &e);
            dbpool__log(p, DBPOOL_LOG_WARN, "keepalive ping of connection #%llu failed, closing it: %s",
                        (unsigned long long)ping->id, e.message);
            dbpool__destroy_conn(p, ping, DBPOOL_CLOSE_BROKEN);
        }
    }
}

/* A whole pass on the calling thread, pings included (tests run passes
 * this way; the maintenance thread hands the pings to the keepalive
 * thread instead). */
void dbpool__maint_pass(dbpool *p) {
    maint_checks(p);
    keepalive_round(p);
}

/* The keepalive thread: a round of pings whenever a maintenance pass asks
 * for one (a pass that comes while a round runs asks for the next). */
static void *keepalive_main(void *arg) {
    dbpool *p = arg;
    dbpool__metrics_thread_shared(); /* the writer numbers are for the application's threads */
    lock(p);
    for (;;) {
        while (!p->maint_stop && !p->keepalive_woken)
            pthread_cond_wait(&p->keepalive_cond, &p->lock);
        if (p->maint_stop)
            break;
        p->keepalive_woken = false;
        unlock(p);
        keepalive_round(p);
        lock(p);
    }
    unlock(p);
    return NULL;
}

static void *maint_main(void *arg) {
    dbpool *p = arg;
    dbpool__metrics_thread_shared(); /* the writer numbers are for the application's threads */
    lock(p);
    while (!p->maint_stop) {
        int64_t wake = dbpool__deadline_after_ms(p->opt.maintenance_interval_ms);
        struct timespec ts = {(time_t)(wake / INT64_C(1000000000)), (long)(wake % INT64_C(1000000000))};
        while (!p->maint_stop && !p->maint_woken) {
            if (pthread_cond_timedwait(&p->maint_cond, &p->lock, &ts) == ETIMEDOUT)
                break;
        }
        if (p->maint_stop)
            break;
        p->maint_woken = false;
        unlock(p);
        maint_checks(p);
        lock(p);
        if (p->keepalive_running) {
            p->keepalive_woken = true;
            pthread_cond_signal(&p->keepalive_cond);
        }
    }
    unlock(p);
    return NULL;
}

void dbpool__maint_wake(dbpool *p) {
    p->maint_woken = true; /* a pass now, not a signal the wait would sleep on through */
    pthread_cond_signal(&p->maint_cond);
}

int dbpool__maint_start(dbpool *p, dbpool_error *e) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    p->last_scale_ns = dbpool__fast_now_ns();
    if (p->opt.keepalive_ms > 0) {
        int krc = dbpool__thread_start(&p->keepalive_thread, &attr, keepalive_main, p);
        if (krc != 0) {
            pthread_attr_destroy(&attr);
            return dbpool__seterr(e, DBPOOL_ENOMEM,
                                  "could not start the keepalive thread (%s): the process is out of threads "
                                  "or memory; raise the limit on threads (ulimit -u) or lower max_connecting",
                                  strerror(krc));
        }
        lock(p);
        p->keepalive_running = true;
        unlock(p);
    }
    int rc = dbpool__thread_start(&p->maint_thread, &attr, maint_main, p);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        dbpool__maint_stop(p); /* the keepalive thread, if started */
        /* Without the thread: only when nothing needs it (options.c refuses
         * maintenance_interval_ms=0 with these). */
        bool needed = p->opt.autoscale || p->opt.leak_threshold_ms > 0 || p->opt.keepalive_ms > 0;
        return dbpool__seterr(
            e, DBPOOL_ENOMEM,
            "could not start the maintenance thread (%s): the process is out of threads or "
            "memory; %s",
            strerror(rc),
            needed ? "raise the limit on threads (ulimit -u) or lower max_connecting"
                   : "raise the limit on threads (ulimit -u), or set maintenance_interval_ms=0 "
                     "to run the pool without it");
    }
    lock(p);
    p->maint_running = true;
    unlock(p);
    return DBPOOL_OK;
}

void dbpool__maint_stop(dbpool *p) {
    lock(p);
    bool running = p->maint_running, keepalive = p->keepalive_running;
    p->maint_stop = true;
    pthread_cond_broadcast(&p->maint_cond);
    pthread_cond_broadcast(&p->keepalive_cond);
    unlock(p);
    if (running)
        pthread_join(p->maint_thread, NULL);
    /* A ping in flight ends by validation_timeout_ms; no other starts. */
    if (keepalive)
        pthread_join(p->keepalive_thread, NULL);
    lock(p);
    p->maint_running = false;
    p->keepalive_running = false;
    unlock(p);
}
