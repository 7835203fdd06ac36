/*
 * release.c — taking leases back: the fast path for a clean connection,
 * reset (rollback) for a dirty one, and closing what must not be pooled
 * (broken, expired, over the cap, discarded, reclaimed, pool closed).
 */
#include "perturb.h"
#include "pool_internal.h"

#include <stdlib.h>

#define lock(p) dbpool__lock(p)
#define unlock(p) dbpool__unlock(p)
#define total_locked(p) dbpool__total_locked(p)

/* release / discard                                                      */
/* ---------------------------------------------------------------------- */

static bool idle_expired(const dbpool *p, const dbpool_conn *c, void *arg) {
    return dbpool__idle_expired_locked(p, c, *(const int64_t *)arg);
}

/* Called without the pool's lock. The leak report this answers may still
 * be being logged by the maintenance thread: wait for it, so that the log
 * reads report, then return. */
static void log_leak_return(dbpool *p, const dbpool_conn *c, int64_t held_ns) {
    pthread_mutex_lock(&p->leak_log_lock);
    dbpool__log(p, DBPOOL_LOG_WARN, "connection #%llu reported as leaked came back after %lld ms%s",
                (unsigned long long)c->id, (long long)(held_ns / DBPOOL_NS_PER_MS),
                c->reclaimed ? " (reclaimed: closing it)" : "");
    pthread_mutex_unlock(&p->leak_log_lock);
}

/* The slow way back, with the lock held on entry: a reset round trip, or
 * a close. Run with cancellation disabled (internal.h): a cancel
 * during the reset would leave the connection returning for good. `why`
 * closes it for that reason (-1: none); with `hook`, the after_release
 * hook is asked about a connection that would be kept, after its reset;
 * with `may_park`, a kept one may be parked for this thread as on the
 * fast path (a clean one that came here for its hook alone). */
static void release_returning(dbpool *p, dbpool_conn *c, int forced, int need, bool was_leak, int64_t now,
                              bool hook, bool may_park) {
    bool over_cap = total_locked(p) > p->cap;
    bool closed = p->closed;
    /* Read under the lock: a dbpool_refresh during the reset writes them. */
    bool expired = now >= c->expires_ns || c->retire;
    dbpool_close_reason expiry = dbpool__expiry_reason(c);
    c->state = CONN_RETURNING;
    unlock(p);
    if (was_leak)
        log_leak_return(p, c, now - c->acquired_ns);

    dbpool_close_reason why = DBPOOL_CLOSE_POOL_CLOSED;
    bool keep = false;
    if (forced >= 0) {
        why = (dbpool_close_reason)forced;
    } else if (need < 0) {
        why = DBPOOL_CLOSE_BROKEN;
    } else if (expired) {
        why = expiry;
    } else if (over_cap) {
        why = DBPOOL_CLOSE_SHRINK;
    } else if (closed) {
        /* Closed anyway: no reset round trips (nor init_sql and
         * after_connect again, after dbpool_close returned) before it. */
        why = DBPOOL_CLOSE_POOL_CLOSED;
    } else if (need == 1) {
        dbpool_error e;
        dbpool__clearerr(&e);
        int64_t deadline = dbpool__deadline_after_ms(p->opt.validation_timeout_ms);
        bool cleared = false;
        int rrc = p->driver->reset(c->native, deadline, &cleared, &e);
        if (rrc == DBPOOL_OK && cleared)
            rrc = dbpool__start_session(p, c->native, deadline, &e); /* the whole release bounded */
        if (rrc == DBPOOL_OK) {
            keep = true;
            c->own_limit = false; /* rolled back, or the session cleared and the pool's limit set again */
            lock(p);
            p->stats.rollbacks++;
            unlock(p);
        } else {
            dbpool__note_validation_bound(p, &e);
            dbpool__finish_err(p, &e);
            dbpool__log(p, DBPOOL_LOG_WARN, "reset of connection #%llu failed, closing it: %s",
                        (unsigned long long)c->id, e.message);
            why = DBPOOL_CLOSE_RESET_FAILED;
        }
    } else {
        keep = true; /* clean, but the pool is closed: handled below */
    }
    /* After the reset: the hook sees the session as the next caller would
     * get it, and is not asked about a connection closed anyway. */
    if (keep && hook && !closed && !dbpool__hook_after_release(p, c)) {
        keep = false;
        why = DBPOOL_CLOSE_AFTER_RELEASE;
    }
    lock(p);
    if (keep && c->retire && !p->closed) {
        keep = false; /* a dbpool_refresh came during the reset */
        why = DBPOOL_CLOSE_REFRESHED;
    }
    if (keep && !p->closed) {
        p->n_leased--;
        int64_t t = dbpool__fast_now_ns();
        if (!may_park || !dbpool__park_locked(p, c, t))
            dbpool__publish_locked(p, c, t);
        unlock(p);
        return;
    }
    if (p->closed && keep)
        why = DBPOOL_CLOSE_POOL_CLOSED;
    unlock(p);
    dbpool__destroy_conn(p, c, why);
}

static int release_impl(dbpool_conn *c, bool discard) {
    if (!c || c->magic != DBPOOL_CONN_MAGIC)
        return DBPOOL_EMISUSE;
    dbpool *p = c->pool;
    if (dbpool__forked(p))
        return DBPOOL_EMISUSE;
    if (c->open_results > 0 && dbpool__conn_held(c)) {
        /* A result still open reads through this connection: pooled, it
         * would hold a statement (and its locks or snapshot) into the next
         * lease and be read on the next holder's connection. */
        dbpool__log(p, DBPOOL_LOG_WARN,
                    "%s of connection #%llu refused: %d result%s of dbpool_query not freed; call "
                    "dbpool_result_free first, then release again",
                    discard ? "dbpool_discard" : "dbpool_release", (unsigned long long)c->id, c->open_results,
                    c->open_results == 1 ? "" : "s");
        return DBPOOL_EMISUSE;
    }
    /* One reading serves the histogram and the bookkeeping, on either
     * path. Taken first: the TSC takes a while to answer, and the checks
     * below run meanwhile instead of waiting for it. */
    int64_t now = dbpool__fast_now_ns();
    bool recorded;
    int hooked; /* after_release asked on the way already: 1 kept, -1 refused */
    if (dbpool__sticky_release(p, c, discard, now, &recorded, &hooked))
        return DBPOOL_OK;
    DBPOOL_PERTURB(); /* an ordinary lease now: a close, recall or maintenance pass may run first */
    /* Recorded before locking: once the connection is published, another
     * thread may close the pool, and nothing of it may be touched here. */
    if (c->state == CONN_LEASED && !recorded)
        dbpool__metrics_record(p->metrics, DBPOOL_HIST_USE, now - c->lease_start);
    lock(p);
    if (c->state != CONN_LEASED || c->pinging) { /* pinging: idle, borrowed by a keepalive ping */
        unlock(p);
        return DBPOOL_EMISUSE;
    }
    p->hold_ewma_ns += (now - c->lease_start - p->hold_ewma_ns) / 8; /* picks the barging window */
    bool was_leak = c->leak_reported;
    if (c->reclaimed) {
        /* Its place was given away: close it (the holder is done with it). */
        c->state = CONN_CLOSING;
        p->n_reclaimed--;
        p->n_closing++;
        unlock(p);
        log_leak_return(p, c, now - c->acquired_ns);
        dbpool__disconnect_and_account(p, c, DBPOOL_CLOSE_RECLAIMED);
        return DBPOOL_OK;
    }
    int need = (discard || c->broken) ? -1 : dbpool__needs_reset(p, c);
    /* The hook, if any and not asked yet, runs outside the lock: on the
     * slow way, whose reset (if due) comes first. */
    bool hook = !discard && hooked == 0 && p->opt.after_release;
    int forced = discard ? DBPOOL_CLOSE_DISCARDED : hooked < 0 ? DBPOOL_CLOSE_AFTER_RELEASE : -1;
    if (need == 0 && forced < 0 && !hook && !was_leak && !p->closed && now < c->expires_ns && !c->retire &&
        total_locked(p) <= p->cap) {
        /* The fast path: a clean connection straight back, parked for
         * this thread when nobody waits (sticky.c). */
        p->n_leased--;
        if (!dbpool__park_locked(p, c, now))
            dbpool__publish_locked(p, c, now);
        /* Idle connections past their time go too; counted in n_closing,
         * they keep the pool alive until closed. */
        dbpool_conn *expired = p->idle_tail != c ? dbpool__take_idle_locked(p, idle_expired, &now) : NULL;
        unlock(p);
        if (expired)
            dbpool__close_closing_list(p, expired, DBPOOL_CLOSE_IDLE_TIMEOUT);
        return DBPOOL_OK;
    }
    bool may_park = need == 0 && forced < 0 && !was_leak && !p->closed && now < c->expires_ns && !c->retire &&
                    total_locked(p) <= p->cap;
    int cancel_state = dbpool__nocancel_begin();
    release_returning(p, c, forced, need, was_leak, now, hook, may_park);
    dbpool__nocancel_end(cancel_state);
    return DBPOOL_OK;
}

int dbpool_release(dbpool_conn *c) { return release_impl(c, false); }
int dbpool_discard(dbpool_conn *c) { return release_impl(c, true); }

void *dbpool_conn_native(dbpool_conn *c) {
    if (!c || c->magic != DBPOOL_CONN_MAGIC || !dbpool__conn_held(c))
        return NULL;
    /* A lease inherited across fork() is the parent's session, refused to
     * dbpool_exec and dbpool_query there: not handed out raw either. */
    if (dbpool__forked(c->pool))
        return NULL;
    c->touched = true; /* whatever the caller does with it, the release asks the driver */
    return dbpool__user_handle(c->pool->driver, c->native);
}
