/* sizing.c — changing what the pool holds at run time: shrink, resize,
 * refresh, suspend and resume. */
#include "pool_internal.h"

#include <stdlib.h>

#define lock(p) dbpool__lock(p)
#define unlock(p) dbpool__unlock(p)

typedef struct keep_count {
    int keep;
} keep_count;

static bool idle_above(const dbpool *p, const dbpool_conn *c, void *arg) {
    (void)c;
    return p->n_idle > ((keep_count *)arg)->keep;
}

static bool over_cap(const dbpool *p, const dbpool_conn *c, void *arg) {
    (void)c, (void)arg;
    return dbpool__total_locked(p) > p->cap;
}

int dbpool_shrink(dbpool *p, int target_idle) {
    if (!p || target_idle < 0)
        return DBPOOL_EINVAL;
    lock(p);
    if (p->closed) {
        unlock(p);
        return DBPOOL_ECLOSED;
    }
    dbpool__recall_parked_locked(p, false, -1); /* parked and free counts as idle here */
    /* Not idle if someone waits for it: a connection released through a
     * thread cache woke nobody, and shrinking must not close what a caller
     * in line is about to get. */
    dbpool__serve_waiters_from_idle_locked(p);
    keep_count k = {target_idle};
    dbpool_conn *list = dbpool__take_idle_locked(p, idle_above, &k); /* least recently used first */
    /* Idle too, though borrowed by a keepalive ping now: closed when the
     * ping ends (if no caller waits for it then). */
    int pinged = 0, left = p->n_idle;
    for (dbpool_conn *c = p->all_slots; c; c = c->all_next)
        if (c->pinging && !c->shrink_pinged)
            left++;
    for (dbpool_conn *c = p->all_slots; c && left > target_idle; c = c->all_next) {
        if (c->pinging && !c->shrink_pinged) {
            c->shrink_pinged = true;
            left--;
            pinged++;
        }
    }
    unlock(p);
    int n = pinged;
    for (dbpool_conn *c = list; c; c = c->next)
        n++;
    dbpool__close_closing_list(p, list, DBPOOL_CLOSE_SHRINK);
    return n;
}

static bool every(const dbpool *p, const dbpool_conn *c, void *arg) {
    (void)p, (void)c, (void)arg;
    return true;
}

int dbpool_refresh(dbpool *p) {
    if (!p)
        return DBPOOL_EINVAL;
    if (dbpool__forked(p))
        return DBPOOL_EMISUSE; /* the parent's connections: not the child's to close */
    lock(p);
    if (p->closed) {
        unlock(p);
        return DBPOOL_ECLOSED;
    }
    /* Connects under way read the old number as they started. */
    atomic_fetch_add_explicit(&p->refresh_seq, 1, memory_order_relaxed);
    /* Parked and free: idle, closed below; parked and in use: wanted
     * back, so that its release takes the ordinary way, which looks at
     * `retire` (its expires_ns is its thread's to read without the lock). */
    dbpool__recall_parked_locked(p, false, -1);
    int later = 0;
    for (dbpool_conn *c = p->all_slots; c; c = c->all_next) {
        if (c->state == CONN_LEASED || c->state == CONN_RETURNING || c->state == CONN_PARKED) {
            c->retire = true;
            if (c->state != CONN_PARKED)
                c->expires_ns = 0; /* every check of its lifetime retires it: release, hand-out, a pass */
            if (!c->reclaimed)
                later++;
        }
    }
    dbpool_conn *list = dbpool__take_idle_locked(p, every, NULL);
    int closed = 0;
    for (dbpool_conn *c = list; c; c = c->next)
        closed++;
    dbpool__queue_refresh_locked(p, closed, later);
    /* New ones for the callers in line and for min_size, now: not at the
     * next maintenance pass. */
    dbpool__request_connections_locked(p);
    dbpool__request_refill_locked(p);
    unlock(p);
    dbpool__log_queued_events(p);
    dbpool__close_closing_list(p, list, DBPOOL_CLOSE_REFRESHED);
    return closed;
}

int dbpool_resize(dbpool *p, int min_size, int max_size, dbpool_error *err) {
    dbpool__clearerr(err);
    if (!p)
        return dbpool__seterr(err, DBPOOL_EINVAL, "dbpool_resize: pool is NULL");
    lock(p);
    dbpool_options o = p->opt;
    o.min_size = min_size;
    o.max_size = max_size;
    int rc = dbpool__options_validate(&o, err);
    if (rc != DBPOOL_OK || p->closed) {
        unlock(p);
        return rc != DBPOOL_OK ? rc : dbpool__seterr(err, DBPOOL_ECLOSED, "pool '%s' is closed", p->name);
    }
    p->opt.min_size = min_size;
    p->opt.max_size = max_size;
    if (!p->opt.autoscale || p->cap > max_size)
        p->cap = max_size;
    if (p->cap < min_size)
        p->cap = min_size;
    /* Cause, then effect: the resize, then the breaker's trial it may let in. */
    dbpool__queue_event_locked(p, POOL_EVENT_RESIZED);
    dbpool__recall_parked_locked(p, false, -1);
    dbpool_conn *list = dbpool__take_idle_locked(p, over_cap, NULL);
    /* Those recalled from the thread caches, within the cap: their release
     * woke nobody, so the first in line would sleep to its window's end. */
    dbpool__serve_waiters_from_idle_locked(p);
    dbpool__request_connections_locked(p); /* a larger cap serves waiters now */
    dbpool__kick_backoff_locked(p);        /* and a connector backing off for them tries again now */
    dbpool__maint_wake(p);                 /* a larger min is filled there */
    unlock(p);
    dbpool__log_queued_events(p);
    dbpool__close_closing_list(p, list, DBPOOL_CLOSE_SHRINK);
    return DBPOOL_OK;
}

int dbpool_suspend(dbpool *p) {
    if (!p)
        return DBPOOL_EINVAL;
    lock(p);
    p->suspended = true;
    dbpool__queue_event_locked(p, POOL_EVENT_SUSPENDED); /* in order with a resume on another thread */
    dbpool__recall_parked_locked(p, false, -1);
    if (p->opt.suspend_fails_fast && p->wait_head) {
        /* Those already in line get what a caller arriving now gets. */
        dbpool_error e;
        dbpool__clearerr(&e);
        dbpool__seterr(&e, DBPOOL_EBUSY,
                       "pool '%s' was suspended while this acquire waited: try again after "
                       "dbpool_resume",
                       p->name);
        dbpool__fail_waiters_locked(p, &e, true);
    }
    unlock(p);
    dbpool__log_queued_events(p);
    return DBPOOL_OK;
}

int dbpool_resume(dbpool *p) {
    if (!p)
        return DBPOOL_EINVAL;
    lock(p);
    p->suspended = false;
    dbpool__queue_event_locked(p, POOL_EVENT_RESUMED); /* before the breaker's trial it may let in */
    dbpool__serve_waiters_from_idle_locked(p);         /* in order, from the idle list first */
    dbpool__request_connections_locked(p);
    dbpool__request_refill_locked(p); /* min_size and min_idle now, not at the next pass */
    unlock(p);
    dbpool__log_queued_events(p);
    return DBPOOL_OK;
}
