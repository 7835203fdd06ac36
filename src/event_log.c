/*
 * event_log.c — the pool's state changes whose log lines must come out in
 * the order of the changes (the circuit breaker's transitions, a resize or
 * a resume that lets a trial connect in, a refresh, autoscale's cap
 * changes).
 *
 * A change happens under the pool lock, and nothing is logged under it:
 * the log callback may block, or call back into the pool. Each thread
 * used to log its own change after unlocking, so the lines of two threads
 * came out in the order the threads got to them: a connector's trial
 * could fail and log "opened again" before the caller that admitted the
 * trial logged "half-open". Instead a change is queued under the lock, and
 * one thread at a time logs the queue from its head; a thread that finds
 * another doing so leaves its event to it. Events that find the queue
 * full are counted on its newest one, and the count is logged right after
 * that one's line: where the lost lines would have come.
 */
#include "pool_internal.h"

#define lock(p) dbpool__lock(p)
#define unlock(p) dbpool__unlock(p)

/* The slot for a new event, or NULL when the queue is full: the event is
 * then counted on the newest one, whose line is followed by the count. */
static queued_event *queue_locked(dbpool *p, pool_event ev) {
    queued_event *q = NULL;
    if (p->event_log_count == DBPOOL_EVENT_LOG_SLOTS) {
        p->event_log[(p->event_log_first + p->event_log_count - 1) % DBPOOL_EVENT_LOG_SLOTS].lost_after++;
    } else {
        q = &p->event_log[(p->event_log_first + p->event_log_count++) % DBPOOL_EVENT_LOG_SLOTS];
        q->what = ev;
        q->lost_after = 0;
    }
    atomic_store(&p->event_log_waiting, p->event_log_count);
    return q;
}

void dbpool__queue_event_locked(dbpool *p, pool_event ev) {
    queued_event *q = queue_locked(p, ev);
    if (q) {
        /* The sizes as they are now: they may change again before it is logged. */
        q->resized.min_size = p->opt.min_size;
        q->resized.max_size = p->opt.max_size;
    }
}

void dbpool__queue_cap_change_locked(dbpool *p, int from, int to) {
    queued_event *q = queue_locked(p, POOL_EVENT_AUTOSCALED);
    if (q) {
        q->autoscaled.from = from;
        q->autoscaled.to = to;
    }
}

void dbpool__queue_refresh_locked(dbpool *p, int closed, int later) {
    queued_event *q = queue_locked(p, POOL_EVENT_REFRESHED);
    if (q) {
        q->refreshed.closed = closed;
        q->refreshed.later = later;
    }
}

bool dbpool__events_waiting_locked(const dbpool *p) { return p->event_log_count > 0; }

static void log_one_event(dbpool *p, const queued_event *q) {
    switch (q->what) {
    case POOL_EVENT_BREAKER_OPENED:
        /* Only the immutable options here: the counters belong to the lock. */
        dbpool__log(p, DBPOOL_LOG_ERROR,
                    "circuit breaker opened (breaker_failures %d): new connections are refused for %lld ms",
                    p->opt.breaker_failures, (long long)p->opt.breaker_cooldown_ms);
        break;
    case POOL_EVENT_BREAKER_REOPENED:
        /* One failure, the trial's: not breaker_failures of them. */
        dbpool__log(p, DBPOOL_LOG_ERROR,
                    "circuit breaker opened again: the trial connect failed; new connections are refused "
                    "for %lld ms",
                    (long long)p->opt.breaker_cooldown_ms);
        break;
    case POOL_EVENT_BREAKER_HALF_OPEN:
        dbpool__log(p, DBPOOL_LOG_WARN, "circuit breaker half-open: trying one connection");
        break;
    case POOL_EVENT_BREAKER_CLOSED:
        dbpool__log(p, DBPOOL_LOG_INFO, "circuit breaker closed: the database answers again");
        break;
    case POOL_EVENT_BREAKER_RESET:
        dbpool__log(p, DBPOOL_LOG_INFO, "circuit breaker reset by hand");
        break;
    case POOL_EVENT_RESIZED:
        dbpool__log(p, DBPOOL_LOG_INFO, "resized to min %d, max %d", q->resized.min_size,
                    q->resized.max_size);
        break;
    case POOL_EVENT_SUSPENDED:
        dbpool__log(p, DBPOOL_LOG_INFO, "suspended");
        break;
    case POOL_EVENT_RESUMED:
        dbpool__log(p, DBPOOL_LOG_INFO, "resumed");
        break;
    case POOL_EVENT_AUTOSCALED:
        dbpool__log(p, DBPOOL_LOG_INFO, "autoscale: cap %d -> %d", q->autoscaled.from, q->autoscaled.to);
        break;
    case POOL_EVENT_REFRESHED:
        dbpool__log(p, DBPOOL_LOG_INFO,
                    "refreshed: %d idle connections closed now, %d leased ones close when they come back, "
                    "and any being opened when done",
                    q->refreshed.closed, q->refreshed.later);
        break;
    case POOL_EVENT_NONE:
        break;
    }
    if (q->lost_after > 0)
        dbpool__log(p, DBPOOL_LOG_WARN,
                    "%u events of the pool were not logged: the log callback was too slow", q->lost_after);
}

/* Take the queue's head into *q (false: empty). Lock held. */
static bool take_next_locked(dbpool *p, queued_event *q) {
    if (p->event_log_count == 0)
        return false;
    *q = p->event_log[p->event_log_first];
    p->event_log_first = (p->event_log_first + 1) % DBPOOL_EVENT_LOG_SLOTS;
    p->event_log_count--;
    atomic_store(&p->event_log_waiting, p->event_log_count);
    return true;
}

/* Lines one call logs before it leaves the rest to the maintenance
 * thread: other threads leave theirs to the one logging, and while they
 * come faster than log_fn returns, that thread's call (a resize, an
 * acquire in line) would not return for as long as they came. */
#define LINES_PER_CALL (2 * DBPOOL_EVENT_LOG_SLOTS)

/* Leave the queue to the maintenance thread's next pass, now. False
 * without one (interval 0, or stopping): the caller logs on. Lock held. */
static bool hand_off_locked(dbpool *p) {
    if (!p->maint_running || p->maint_stop)
        return false;
    dbpool__maint_wake(p);
    return true;
}

void dbpool__log_queued_events(dbpool *p) {
    /* Sequentially consistent, here and at the queueing: a thread that
     * queues an event and then finds the flag set, and the logger that
     * clears the flag and then finds nothing waiting, cannot both miss
     * each other. */
    if (atomic_load(&p->event_log_waiting) == 0 || atomic_exchange(&p->event_log_busy, true))
        return; /* nothing, or the thread logging now logs ours after its own */
    /* Held while logging: a log_fn on the caller's thread may close the
     * pool (documented), and the next event is read after it returns.
     * The last unhold frees the pool then. */
    lock(p);
    dbpool__hold_locked(p);
    int logged = 0;
    for (;;) {
        queued_event q;
        bool handed_off = false;
        while (!(handed_off = logged >= LINES_PER_CALL && hand_off_locked(p)) && take_next_locked(p, &q)) {
            unlock(p);
            log_one_event(p, &q);
            logged++;
            lock(p);
        }
        unlock(p);
        if (handed_off) {
            /* The maintenance pass logs the rest (it asks at every pass). */
            atomic_store(&p->event_log_busy, false);
            break;
        }
        atomic_store(&p->event_log_busy, false);
        if (atomic_load(&p->event_log_waiting) == 0 || atomic_exchange(&p->event_log_busy, true))
            break;
        lock(p);
    }
    dbpool__unhold(p);
}
