/*
 * hooks.c — the lease hooks: before_acquire, shown every connection before
 * it is handed out, and after_release, shown every connection about to go
 * back to the pool (after its reset). Either may refuse the connection,
 * which is then closed with a reason of its own. The acquire and release
 * paths call them (acquire.c, release.c, sticky.c); here is how a hook is
 * run, what a refused hand-out costs, and the one misuse check.
 */
#include "pool_internal.h"

#include <errno.h>
#include <time.h>

#define lock(p) dbpool__lock(p)
#define unlock(p) dbpool__unlock(p)

/* The pool whose hook the calling thread is running, if any (the innermost
 * one when a hook acquires from another pool). An acquire of that pool from
 * inside its own hook could wait for the very connection the hook holds. */
static _Thread_local const dbpool *tl_in_hook;

bool dbpool__in_hook(const dbpool *p) { return p && tl_in_hook == p; }

/* Cancellation off: a cancel inside the hook (a statement on the handle
 * reaches cancellation points) would leave the connection held, parked
 * busy or returning, for good. The handle is the one the user sees
 * (dbpool_conn_native's), and the lease counts as touched: what the hook
 * runs on it is seen at the next release. */
static bool run_hook(dbpool *p, dbpool_conn *c, dbpool_lease_hook_fn fn, void *user) {
    int cancel_state = dbpool__nocancel_begin();
    const dbpool *outer = tl_in_hook;
    tl_in_hook = p;
    c->touched = true;
    int rc = fn(dbpool__user_handle(p->driver, c->native), user);
    tl_in_hook = outer;
    dbpool__nocancel_end(cancel_state);
    return rc == 0;
}

bool dbpool__hook_before_acquire(dbpool *p, dbpool_conn *c) {
    return run_hook(p, c, p->opt.before_acquire, p->opt.before_acquire_user);
}

bool dbpool__hook_after_release(dbpool *p, dbpool_conn *c) {
    return run_hook(p, c, p->opt.after_release, p->opt.after_release_user);
}

bool dbpool__reject_handed(dbpool *p, dbpool_conn *c, int *cap) {
    /* Held across the close: the close may be what a dbpool_close on
     * another thread was waiting for, and this caller looks again. */
    lock(p);
    dbpool__hold_locked(p);
    unlock(p);
    dbpool__destroy_conn(p, c, DBPOOL_CLOSE_BEFORE_ACQUIRE);
    lock(p);
    bool open = !p->closed;
    *cap = p->cap;
    dbpool__unhold_and_unlock(p);
    return open;
}

bool dbpool__hook_backoff(dbpool *p, int64_t until_ns) {
    struct timespec ts = {(time_t)(until_ns / INT64_C(1000000000)), (long)(until_ns % INT64_C(1000000000))};
    int cancel_state = dbpool__nocancel_begin();
    lock(p);
    dbpool__hold_locked(p);
    /* The connectors' variable: dbpool_close broadcasts it, and every
     * other wake-up on it is a broadcast too, so none is taken from them. */
    while (!p->closed && dbpool__now_ns() < until_ns) {
        if (pthread_cond_timedwait(&p->connector_cond, &p->lock, &ts) == ETIMEDOUT)
            break;
    }
    bool open = !p->closed;
    dbpool__unhold_and_unlock(p);
    dbpool__nocancel_end(cancel_state);
    return open;
}
