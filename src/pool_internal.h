/*
 * pool_internal.h — the pool's and the lease's structures, shared by the
 * files of the core:
 *   pool.c     open/close, the lists, the FIFO wait queue, accounting
 *   acquire.c  handing out leases: fast path, waiting, checks, timeouts
 *   release.c  taking them back: reset, or close what must not be pooled
 *   create.c   opening connections: retry with backoff, the connector
 *              threads, the circuit breaker
 *   maint.c    the maintenance thread: idle reaping, lifetime, refill,
 *              leak detection, autoscaling; the keepalive thread
 *   sizing.c   shrink, resize, suspend/resume
 *   leak.c     recording and reporting where a lease was acquired
 * Nothing outside src/ sees them. Lock order: there is one lock per pool;
 * no other lock is taken while it is held (the metrics are lock-free).
 */
#ifndef DBPOOL_POOL_INTERNAL_H
#define DBPOOL_POOL_INTERNAL_H

#include "driver.h"
#include "internal.h"
#include "metrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* A lease's magic while its struct belongs to a pool; any other value means
 * the pointer is not a dbpool_conn (or the pool is gone). */
#define DBPOOL_CONN_MAGIC 0x6462636eu /* "dbcn" */
#define DBPOOL_LEAK_FRAMES 16
#define DBPOOL_CONN_ALIGN 128

/* State equals list membership: every connection is in exactly one state,
 * and only the core moves it, under the pool lock. */
typedef enum {
    CONN_FREE = 0,  /* struct on the free list, no connection behind it */
    CONN_IDLE,      /* on the idle list (LIFO) */
    CONN_LEASED,    /* held by a caller, or by maintenance for a ping */
    CONN_RETURNING, /* released, being reset outside the lock; counts as leased */
    CONN_CLOSING,   /* being disconnected outside the lock; counts in n_closing */
    CONN_PARKED     /* kept for one thread (sticky.c): on the parked list, counts in n_parked */
} conn_state;

/* A parked connection's `park` word (sticky.c). 0 when not parked; else
 * tag << PARK_TAG_SHIFT | PARK_FREE or PARK_BUSY, plus PARK_WANTED while busy when the
 * pool wants it back. The tag is new at every parking, so a thread whose
 * connection was taken and parked again elsewhere cannot mistake it for its
 * own. */
#define PARK_FREE UINT64_C(1)
#define PARK_BUSY UINT64_C(2)
#define PARK_WANTED UINT64_C(4)
#define PARK_TAG_SHIFT 3

/* Where a lease was taken, for leak reports. */
typedef struct lease_trace {
    void *frames[DBPOOL_LEAK_FRAMES];
    int depth;
    unsigned long thread; /* pthread_self() */
    long tid;             /* the kernel's thread id (Linux), 0 elsewhere */
} lease_trace;

struct dbpool_conn {
    uint32_t magic;
    conn_state state;
    bool leak_reported; /* reported as held past leak_threshold_ms */
    bool reclaimed;     /* no longer counted against the cap; closed on return */
    bool pinging;       /* leased to maintenance for a keepalive ping: no caller holds it */
    bool checking;      /* an acquire checks it (lifetime, validation) before its lease begins */
    bool shrink_pinged; /* dbpool_shrink took it during its ping: closed when the ping ends */
    bool retire;        /* dbpool_refresh came while it was out: closed when it comes back (its
                           expires_ns is 0 too, unless its thread cache holds it) */
    dbpool *pool;
    void *native;
    uint64_t id; /* 1, 2, ... in order of creation */
    int64_t created_ns;
    int64_t expires_ns;              /* created + jittered lifetime; INT64_MAX = never */
    int64_t last_used_ns;            /* when it last became idle (idle timeout counts from here) */
    int64_t last_ping_ns;            /* last keepalive ping (keepalive counts from the later) */
    int64_t acquired_ns;             /* when the current lease began: set under the lock (leak scan) */
    int64_t lease_start;             /* when the caller got it (acquire_counted, after before_acquire): the
                                        use-time histogram */
    uint64_t uses;                   /* hand-outs so far */
    struct dbpool_conn *prev, *next; /* idle list, parked list, or free list (next only) */
    struct dbpool_conn *all_next;    /* every slot the pool ever made */
    lease_trace *trace;              /* leak detection on: where the lease began */
    int open_results;                /* results of dbpool_query not yet freed (the holder's thread only):
                                        release refuses the lease while any is open */
    bool broken;    /* a query error said the connection is dead (the holder's thread only, without the
                       lock: kept off the word of the flags above, which others read under the lock) */
    bool touched;   /* something may have changed the session since the driver last found it clean: a
                       statement, a ping, init_sql, or the native handle handed out. Release asks the
                       driver whether a reset is due only then (dbpool__needs_reset). Whoever holds the
                       connection writes it; the hand-over (lock or park word) publishes it. */
    bool own_limit; /* a statement of this lease named the server's statement limit (the driver's
                       names_statement_limit): the session's limit may not be the pool's, so the
                       client's backstop stands aside until the release finds the session as the pool
                       made it (dbpool__needs_reset clean, or a reset). The holder's thread only. */
    int64_t validated_rtt_ns; /* this lease began with a validation round trip that took this
                                 long (0: it did not); dbpool_check_health counts it as its own */

    /* Parking (sticky.c). While parked, only the owning thread touches the
     * fields above, and only while it holds the park word at PARK_BUSY.
     * A slot's reuse clears the fields up to here and keeps these: a
     * thread may still hold an old tag for it (its CAS then fails). */
    _Atomic uint64_t park;
    _Atomic int64_t parked_used_ns; /* last fast release: maintenance reads it */
    /* Acquires counted (acquire.c, acquire_counted), by the holder, without
     * the lock: the pool's acquired and reused are their sums over
     * all_slots (dbpool__acquire_counts_locked). */
    _Atomic uint64_t fast_leases;  /* the thread cache's own hand-outs: no wait (zeros folded in the
                                      acquire histogram at a snapshot), each a reuse */
    _Atomic uint64_t leases;       /* every other acquire: its wait recorded as it was counted */
    _Atomic uint64_t first_leases; /* of those, the connection's first lease (no reuse) */
};

/* A caller waiting in line (on its own stack). */
typedef struct waiter waiter;
struct waiter {
    pthread_cond_t cond;
    waiter *prev, *next;
    dbpool_conn *conn; /* handed over by a releasing or connecting thread */
    int64_t since;     /* fast clock when the caller first joined the line */
    int64_t handed_ns; /* fast clock when `conn` was handed over (0: it was not) */
    bool poked;        /* a connection went idle while we were first in line: look */
    bool timed;        /* asleep with a wake-up at the end of its barging window */
    bool queued;
    bool failed; /* a connector gave up: `error` says why */
    dbpool_error error;
    const lease_trace *trace; /* leak detection on: the caller's stack, given to what is handed over */
};

/* A change of the pool's state whose log line must come out in the order
 * of the changes: queued under the lock, logged after it is dropped
 * (dbpool__log_queued_events). */
typedef enum {
    POOL_EVENT_NONE = 0,
    POOL_EVENT_BREAKER_OPENED,
    POOL_EVENT_BREAKER_REOPENED, /* half-open -> open: the trial failed */
    POOL_EVENT_BREAKER_HALF_OPEN,
    POOL_EVENT_BREAKER_CLOSED,
    POOL_EVENT_BREAKER_RESET, /* dbpool_breaker_reset on a breaker that was not closed */
    POOL_EVENT_RESIZED,       /* dbpool_resize: before the trial connect it may let in */
    POOL_EVENT_SUSPENDED,     /* dbpool_suspend: in order with its resume */
    POOL_EVENT_RESUMED,       /* dbpool_resume: before the trial connect it may let in */
    POOL_EVENT_AUTOSCALED,    /* the maintenance pass moved the cap: in order with resizes */
    POOL_EVENT_REFRESHED      /* dbpool_refresh */
} pool_event;

typedef struct queued_event {
    pool_event what;
    union {
        struct {
            int min_size, max_size;
        } resized;
        struct {
            int from, to;
        } autoscaled;
        struct {
            int closed, later; /* closed at once; leased, closed when they come back */
        } refreshed;
    };
    /* Events dropped for want of room right after this one: said in a
     * line of their own right after its line, where they would have come. */
    unsigned lost_after;
} queued_event;

/* Events not yet logged: more than a few only while a log callback blocks
 * through several cooldowns. */
#define DBPOOL_EVENT_LOG_SLOTS 16

struct dbpool {
    pthread_mutex_t lock;
    dbpool *live_next; /* live_pools.c's list, under its own lock */
    const dbpool_driver *driver;
    void *driver_cfg;
    const char *const *secrets;
    dbpool_connect_settings settings;
    dbpool_options opt; /* validated copy; strings point into the copies below */
    char *name;
    char *init_sql;
    bool init_sql_owns_limit; /* init_sql names the server's statement limit (the driver's
                                 names_statement_limit): the session's limit is its, for every
                                 lease, and the client's backstop is off (set at open) */
    dbpool_metrics *metrics;
    unsigned fork_generation; /* the process generation that opened the pool */
    int64_t opened_ns;

    uint64_t serial;   /* unique per pool in this process: thread caches check it */
    bool park_enabled; /* the options allow parking (sticky.c) */
    bool hooks;        /* before_acquire or after_release is set (hooks.c) */
    /* Non-zero while the fast path must stay out: someone waits, or the
     * pool is closed, suspended or over its cap. Written at unlock. */
    _Atomic int gate;

    /* --- everything below is guarded by `lock` --- */
    bool closed;
    bool suspended;
    int cap;                            /* current cap: max_size, or less under autoscale */
    dbpool_conn *idle_head, *idle_tail; /* head = most recently used (LIFO) */
    dbpool_conn *free_slots;
    dbpool_conn *all_slots;
    waiter *wait_head, *wait_tail;
    int n_idle, n_leased, n_connecting, n_waiting, n_closing, n_reclaimed, n_parked;
    dbpool_conn *parked_head; /* parked connections (prev/next) */
    uint64_t park_seq;        /* the last parking tag handed out */
    uint64_t fast_folded;     /* fast hand-outs already in the acquire histogram */
    bool starving;            /* the first waiter waited past the window: strict hand-off */
    int64_t hold_ewma_ns;     /* typical lease (ordinary releases): picks the barging window */
    uint64_t next_conn_id;
    dbpool_error last_connect_error; /* redacted; for timeout messages */
    dbpool_stats stats;              /* counters (but acquired and reused: from the slots); the gauges
                                        are filled on read */

    /* connector threads: open connections for waiters in the background */
    int connect_jobs;    /* requested, not yet picked up (each holds a place in n_connecting) */
    int connect_running; /* picked up and connecting (each holds a place in n_connecting) */
    int trial_jobs;      /* of connect_jobs: the breaker's admitted half-open trial (0 or 1) */
    int n_connectors;
    int n_holding; /* threads that touch the pool again after an unlock and keep it alive until then:
                      acquires inside checkout_slow, a breaker event logged after a close's accounting */
    int n_pinging; /* of n_leased: held by maintenance for a keepalive ping, not by a caller */
    bool connectors_stop;
    pthread_t *connectors;
    pthread_cond_t connector_cond;
    /* Bumped when a place opens under the cap for callers in line (a
     * connection closed): a connector sleeping in a backoff tries again at
     * once instead of at the end of its delay. */
    uint64_t backoff_kicks;

    /* The refill to min_size against a server at its connection limit
     * (a refusal with nobody waiting): held back, the hold doubling up to
     * REFILL_HOLD_MAX_MS, one connect at a time, the episode logged once
     * at WARN and its end with the count; any connect that succeeds ends
     * it. */
    int64_t refill_hold_until_ns;
    int64_t refill_hold_ms;
    uint64_t refill_limit_refusals;

    /* circuit breaker */
    dbpool_breaker_state breaker;
    int consecutive_failures;
    int64_t breaker_opened_ns;
    bool trial_in_flight;
    /* Trials admitted so far (written under the lock): a connect attempt
     * reads it as it starts, so that one admitted before the trial that
     * fails during it is not taken for the trial's outcome. */
    _Atomic uint64_t trial_seq;
    /* dbpool_refresh calls so far (written under the lock): a connect reads
     * it as it starts, and a connection whose connect began before a
     * refresh is retired as soon as it is done. */
    _Atomic uint64_t refresh_seq;
    /* Events to log, in the order they happened (under the lock). Logged
     * by one thread at a time, the one that set event_log_busy, so that
     * the lines come out in that order too: each thread used to log its
     * own after unlocking, and a breaker trial's "opened again" could come
     * out before the "half-open" that admitted it, or a connector's
     * "half-open" before the "resumed" that let it in. */
    queued_event event_log[DBPOOL_EVENT_LOG_SLOTS];
    unsigned event_log_first, event_log_count;
    atomic_uint event_log_waiting; /* event_log_count, read without the lock */
    atomic_bool event_log_busy;    /* a thread is logging the queue */

    /* maintenance thread */
    bool maint_running;
    bool maint_stop;
    bool maint_woken; /* dbpool__maint_wake asked for a pass before the interval is up */
    pthread_t maint_thread;
    pthread_cond_t maint_cond;
    /* keepalive thread (keepalive_ms > 0): the pings, off the maintenance
     * thread; stops with it (maint_stop) */
    bool keepalive_running;
    bool keepalive_woken; /* a maintenance pass asked for a round of pings */
    pthread_t keepalive_thread;
    pthread_cond_t keepalive_cond;
    /* Held (recursive) by the maintenance thread from its leak scan until
     * the reports are logged: a release's "came back" line takes it first,
     * so that it never comes before the report it answers. Taken before
     * the pool's lock, never while holding it. */
    pthread_mutex_t leak_log_lock;
    double util_sum; /* autoscale: connections in use (or the cap, callers waiting), summed over the
                        samples since the last decision */
    int util_samples;
    int64_t last_scale_ns;
    /* Opened by dbpool_manager_open and still in its manager: dbpool_close
     * refuses it (the manager would keep the freed pool, and its stats,
     * lookups and free would read freed memory); the manager clears it
     * before closing the pool itself. */
    atomic_bool managed;
};

/* Is the SQL text only white space and semicolons? (query.c) */
bool dbpool__sql_is_blank(const char *sql);

/* Does the caller hold c (an ordinary lease, or its parked connection in
 * use)? For the API's checks of a handle; no lock. */
static inline bool dbpool__conn_held(const dbpool_conn *c) {
    /* Leased, but not to maintenance for a keepalive ping (an idle
     * connection, borrowed: a stale handle to it is no lease). */
    return (c->state == CONN_LEASED && !c->pinging) ||
           (c->state == CONN_PARKED && (atomic_load_explicit(&c->park, memory_order_relaxed) & PARK_BUSY));
}

/* The checks before a hand-out, shared by the ordinary path, the thread
 * cache's lock-free path, release and maintenance. No lock needed: */
/* c needs a ping first (the validation option). */
static inline bool dbpool__needs_validation(const dbpool *p, const dbpool_conn *c, int64_t now) {
    /* Fresh from connect: nothing to check yet. A warm-up or refill
     * connection that has sat idle is checked like any other. */
    if (c->uses == 0 && now - c->created_ns < p->opt.validation_window_ms * DBPOOL_NS_PER_MS)
        return false;
    return p->opt.validation == DBPOOL_VALIDATE_ALWAYS ||
           (p->opt.validation == DBPOOL_VALIDATE_IF_IDLE &&
            now - c->last_used_ns >= p->opt.validation_window_ms * DBPOOL_NS_PER_MS);
}
/* c has sat unused for idle_timeout_ms (0: never times out). */
/* Lock held: the leases callers hold. n_leased also counts the
 * connections maintenance holds for a keepalive ping, which are idle to
 * everyone who reads the pool's figures. */
static inline int dbpool__callers_leased_locked(const dbpool *p) { return p->n_leased - p->n_pinging; }

/* Lock held: maintenance's keepalive ping of c is over; c is still counted
 * in n_leased until it is returned or closed. */
static inline void dbpool__ping_over_locked(dbpool *p, dbpool_conn *c) {
    c->pinging = false;
    p->n_pinging--;
}

static inline bool dbpool__idle_timed_out(const dbpool *p, const dbpool_conn *c, int64_t now) {
    return p->opt.idle_timeout_ms > 0 && now - c->last_used_ns >= p->opt.idle_timeout_ms * DBPOOL_NS_PER_MS;
}

/* pool.c: lists and accounting (lock held unless said otherwise) */
int dbpool__fork_error(dbpool_error *e);
void dbpool__idle_remove(dbpool *p, dbpool_conn *c);
/* Put an uncounted connection on the idle list where its last use puts it
 * (the list stays ordered: idle-timeout reaping takes from the tail). */
void dbpool__idle_insert_locked(dbpool *p, dbpool_conn *c);
/* Raise peak_in_use to what is in use now (lock held): ordinary leases,
 * thread-cache leases that are out, and `returning` leases being given back
 * at this moment. The cache's fast path takes no lock, so this runs at
 * every hand-out and wherever sticky.c locks anyway; dbpool_get_stats
 * counts the leases out at each snapshot. */
void dbpool__note_peak(dbpool *p, int returning);
/* Join the line: at the end, or, for a caller that waited before (w->since
 * set to when it first joined), back at its place. */
void dbpool__waiter_enqueue(dbpool *p, waiter *w);
void dbpool__waiter_dequeue(dbpool *p, waiter *w);
/* May a running thread take a free connection ahead of the first waiter?
 * No once the first waiter has waited longer than the barging window: the
 * pool then turns "starving" (strict hand-off, thread caches recalled)
 * until the first in line is a recent arrival again. */
bool dbpool__may_overtake_locked(const dbpool *p);
/* Turn starving if the first waiter is past its window (recalling the
 * thread caches); returns whether the pool starves. */
bool dbpool__starve_if_overdue_locked(dbpool *p);
/* The barging window now, in ns (adapts to the typical hold, see pool.c). */
int64_t dbpool__barging_window_ns(const dbpool *p);
/* Idle connections (or parked ones not in use) and someone first in
 * line: tell them to look. */
void dbpool__poke_head_locked(dbpool *p);
/* 0, or -1 when the condition variable could not be made. */
int dbpool__cond_init_monotonic(pthread_cond_t *cv);
/* Close a connection counted only in n_closing (takes the lock; may free
 * the pool: touch nothing of it afterwards). */
void dbpool__disconnect_and_account(dbpool *p, dbpool_conn *c, dbpool_close_reason why);
/* live_pools.c: pools opened and not yet closed. take removes p and says
 * whether it was there (a second dbpool_close finds it gone). */
void dbpool__live_add(dbpool *p);
bool dbpool__live_take(dbpool *p);
/* How many pools were taken out of the list so far (it only grows), and
 * whether the pool at p with this serial is still in it (p is compared,
 * not read, unless it is there): for a thread cache's entries of pools
 * closed since (sticky.c). */
uint64_t dbpool__live_closes(void);
bool dbpool__live_has(const dbpool *p, uint64_t serial);
/* The fork handlers of that list: before the first dbpool__live_add
 * (dbpool_open calls it). 0 or pthread_atfork's error. */
int dbpool__live_watch(void);
/* pool.c */
void dbpool__lock(dbpool *p);
void dbpool__unlock(dbpool *p);
void dbpool__log(dbpool *p, dbpool_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void dbpool__finish_err(const dbpool *p, dbpool_error *e);
/* A check bounded by validation_timeout_ms (validation, keepalive ping,
 * reset on release) that timed out: say which bound ran out. */
void dbpool__note_validation_bound(const dbpool *p, dbpool_error *e);
int dbpool__total_locked(const dbpool *p);
/* c is to close for idle time: timed out, the pool above min_size and,
 * with min_idle, more than min_idle idle (those who close them walk from
 * the least recently used: the most recently used stay). Without it, one
 * taken off the idle list for a hand-out is closed too, though none is
 * left idle. */
static inline bool dbpool__idle_expired_locked(const dbpool *p, const dbpool_conn *c, int64_t now) {
    return dbpool__idle_timed_out(p, c, now) && dbpool__total_locked(p) > p->opt.min_size &&
           (p->opt.min_idle == 0 || p->n_idle > p->opt.min_idle);
}
/* Put a healthy connection back: to the first waiter, else the idle list. */
void dbpool__publish_locked(dbpool *p, dbpool_conn *c, int64_t now);
/* Give c (counted nowhere yet) to the first waiter, who must exist. */
void dbpool__hand_off_locked(dbpool *p, dbpool_conn *c);
/* Hand idle connections to those in line, first come first served, unless
 * the pool is suspended (a shrink, resize or resume that took connections
 * back from the thread caches: their release woke nobody). */
void dbpool__serve_waiters_from_idle_locked(dbpool *p);
/* Back from a keepalive ping: to the first waiter, else the idle list at
 * the place its last use gives it (a ping is not a use: the LIFO order and
 * its idle time stay). Lock held; c counted as leased. */
void dbpool__return_pinged_locked(dbpool *p, dbpool_conn *c, int64_t now);
/* Fail the first waiter (all == false) or every waiter with e. */
void dbpool__fail_waiters_locked(dbpool *p, const dbpool_error *e, bool all);
/* Close a lease the calling thread holds (CONN_LEASED or CONN_RETURNING). */
void dbpool__destroy_conn(dbpool *p, dbpool_conn *c, dbpool_close_reason why);
/* Close a list (linked by next) of connections in CONN_CLOSING state that
 * the caller took out of the idle list (n_closing counted). */
void dbpool__close_closing_list(dbpool *p, dbpool_conn *list, dbpool_close_reason why);
/* Take idle connections out (oldest first) while `keep(p, c)` says so; they
 * come back as a CONN_CLOSING list. Lock held. */
dbpool_conn *dbpool__take_idle_locked(dbpool *p,
                                      bool (*take)(const dbpool *p, const dbpool_conn *c, void *arg),
                                      void *arg);
/* Lock held: the pool may be freed (closed and nothing left in it). */
bool dbpool__can_free_locked(const dbpool *p);
void dbpool__free(dbpool *p);
/* For a thread that will touch the pool after an unlock (a log line, a
 * disconnect through p->driver) and holds nothing else of it: hold (lock
 * held) keeps the pool from being freed until unhold, which frees it if it
 * was the last thing keeping it (a dbpool_close finished meanwhile). */
static inline void dbpool__hold_locked(dbpool *p) { p->n_holding++; }
void dbpool__unhold(dbpool *p);
/* The same with the lock held on entry (dropped on return): the pool may
 * be gone then. */
void dbpool__unhold_and_unlock(dbpool *p);

/* hooks.c: the lease hooks (before_acquire, after_release) */
/* Run the hook on c, which the calling thread holds (leased, returning, or
 * parked busy), without the lock and with cancellation off, the thread
 * marked as inside a hook of p. True: keep c. */
bool dbpool__hook_before_acquire(dbpool *p, dbpool_conn *c);
bool dbpool__hook_after_release(dbpool *p, dbpool_conn *c);
/* Is the calling thread inside a lease hook of p? (an acquire or a close
 * of p from there is refused with DBPOOL_EMISUSE) */
bool dbpool__in_hook(const dbpool *p);
/* c, handed out to the calling thread, was refused by before_acquire:
 * close it (reason before_acquire). False when the pool was closed
 * meanwhile; it may have been freed then, and nothing of it may be
 * touched. Else *cap is the pool's cap. */
bool dbpool__reject_handed(dbpool *p, dbpool_conn *c, int *cap);
/* Sleep until `until_ns` on the monotonic clock (dbpool__now_ns: a
 * backoff between rejected connections), or until the pool closes. The pool stays alive meanwhile.
 * False when it was closed (it may have been freed then). */
bool dbpool__hook_backoff(dbpool *p, int64_t until_ns);

/* sticky.c: connections parked for the thread that last released them */
/* Lease the calling thread's parked connection without the lock. Returns
 * the connection, or NULL (then take the ordinary path). */
dbpool_conn *dbpool__sticky_acquire(dbpool *p);
/* Give back a lease the fast way: true when done. False: the lease is now
 * an ordinary one (CONN_LEASED) and the caller must release it the
 * ordinary way; *recorded says whether its use time was already recorded,
 * and *hooked what the after_release hook said if it ran (0: it did not
 * run; 1: keep; -1: close it, reason after_release). */
bool dbpool__sticky_release(dbpool *p, dbpool_conn *c, bool discard, int64_t now, bool *recorded,
                            int *hooked);
/* Park c for the calling thread instead of making it idle, if allowed.
 * Lock held; c counted in nothing (as for publish). */
bool dbpool__park_locked(dbpool *p, dbpool_conn *c, int64_t now);
/* Take one free parked connection (counted as leased on return), or NULL. */
dbpool_conn *dbpool__steal_parked_locked(dbpool *p);
/* The pool wants its parked connections back (waiters, close, suspend,
 * resize): free ones are taken now and published (to_waiters) or put on
 * the idle list; busy ones are marked to come back on release. With
 * older_than_ns >= 0 only free ones unused since then are taken (and busy
 * ones left alone). */
void dbpool__recall_parked_locked(dbpool *p, bool to_waiters, int64_t older_than_ns);
/* Is any parked connection not in use (a waiter may take it)? Lock held. */
bool dbpool__parked_free_locked(const dbpool *p);
/* Parked connections in use and free (stats), lock held. */
void dbpool__parked_counts_locked(const dbpool *p, int *busy, int *free_);
/* Record the fast path's hand-outs since the last call as zero waits in
 * the acquire histogram (they never wait; counting them there instead of
 * on the fast path saves two atomic adds per lease). Lock held. */
void dbpool__fold_fast_leases_locked(dbpool *p);
/* Recompute the gate (lock held); called by unlock. */
void dbpool__gate_refresh_locked(dbpool *p);

/* create.c */
int dbpool__connectors_start(dbpool *p, dbpool_error *e);
void dbpool__connectors_stop(dbpool *p);
/* A connection closed while callers wait: a connector sleeping in a backoff
 * tries again now (see backoff_sleep in create.c). Lock held. */
void dbpool__kick_backoff_locked(dbpool *p);
/* Ask the connector threads for as many new connections as waiters need.
 * Lock held; a breaker event is queued (dbpool__log_queued_events). */
void dbpool__request_connections_locked(dbpool *p);
/* Ask the connector threads for the connections that bring the pool back
 * to min_size (the maintenance pass's refill: no pass waits for a
 * connect), within the cap, max_connecting and the breaker's rules. Lock
 * held; a breaker event is queued (dbpool__log_queued_events). */
void dbpool__request_refill_locked(dbpool *p);
/* Would a caller who needs a new connection be refused by the breaker? */
bool dbpool__breaker_blocks_locked(const dbpool *p, int64_t now);
/* May a connect start now (open -> half-open after the cooldown: the one trial)? */
bool dbpool__breaker_admit_locked(dbpool *p, int64_t now);
/* A connect now under way is the breaker's one half-open trial. Lock held. */
void dbpool__breaker_trial_begins_locked(dbpool *p);
/* DBPOOL_EUNAVAILABLE with the breaker's state and the last connect error. Lock held. */
int dbpool__breaker_error_locked(dbpool *p, dbpool_error *err);
/* Queue an event to log (RESIZED: the sizes it has now). Lock held. */
void dbpool__queue_event_locked(dbpool *p, pool_event ev);
/* POOL_EVENT_REFRESHED: `closed` at once, `later` when they come back. Lock held. */
void dbpool__queue_refresh_locked(dbpool *p, int closed, int later);
/* Why a connection past its expiry is closed: its lifetime, or a refresh. */
static inline dbpool_close_reason dbpool__expiry_reason(const dbpool_conn *c) {
    return c->retire ? DBPOOL_CLOSE_REFRESHED : DBPOOL_CLOSE_LIFETIME;
}
/* POOL_EVENT_AUTOSCALED: the cap moved from `from` to `to`. Lock held. */
void dbpool__queue_cap_change_locked(dbpool *p, int from, int to);
/* Events queued and not yet logged? Lock held. */
bool dbpool__events_waiting_locked(const dbpool *p);
/* Log the queued events in order; without the lock, on a thread that
 * keeps the pool alive. Call it after every unlock that may have queued
 * one. If another thread is logging them, it logs these too, and this
 * returns at once (also when called from inside the log callback). */
void dbpool__log_queued_events(dbpool *p);
/* Open a connection into a place already reserved in n_connecting, on this
 * thread. leased: hand it to the caller (*out), else publish it. */
int dbpool__fill_reserved(dbpool *p, int64_t deadline, const char *bound, bool leased,
                          const lease_trace *trace, dbpool_conn **out, dbpool_error *err);
/* Make a session no caller holds the one every lease starts from: init_sql,
 * then after_connect, each made the baseline. Run on a new connection and
 * again after a reset that cleared the session. init_sql ends by the
 * deadline (DBPOOL_ETIMEDOUT: the connection is broken); after_connect,
 * the user's callback, is not bounded. */
int dbpool__start_session(dbpool *p, void *native, int64_t deadline_ns, dbpool_error *e);
/* Start a lease on c (lock held): uses, when it was taken, trace. The
 * acquire is counted once the caller gets it (acquire.c, acquire_counted). */
void dbpool__lease_begin_locked(dbpool *p, dbpool_conn *c, int64_t now, const lease_trace *trace);
/* The pool's acquired and reused, summed over its slots (lock held). */
void dbpool__acquire_counts_locked(const dbpool *p, uint64_t *acquired, uint64_t *reused);
/* dbpool_acquire with the stack its caller captured (leak detection on):
 * for a public function that acquires on its caller's behalf
 * (dbpool_manager_acquire), so that the lease's first frame is that
 * function's caller. */
int dbpool__acquire_traced(dbpool *p, int64_t timeout_ms, const lease_trace *trace, dbpool_conn **out,
                           dbpool_error *err);

/* options.c */
/* DBPOOL_OK for a pool name dbpool_open takes (NULL: "default"), else
 * DBPOOL_EINVAL saying what is wrong with it (options.c). */
int dbpool__check_pool_name(const char *name, dbpool_error *e);
int dbpool__options_apply_url(dbpool_options *o, const char *url, char **driver_url, char **name_copy,
                              dbpool_error *e);
int dbpool__options_validate(const dbpool_options *o, dbpool_error *e);

/* maint.c */
int dbpool__maint_start(dbpool *p, dbpool_error *e);
void dbpool__maint_stop(dbpool *p);
void dbpool__maint_wake(dbpool *p); /* lock held */
void dbpool__maint_pass(dbpool *p);

/* leak.c */
/* Capture the caller's stack (when leak detection is on). */
void dbpool__trace_capture(lease_trace *t);
/* Where c's lease was taken, for the leak scan and a timeout's report
 * (lock held): a copy of t, or none when t is NULL (leak detection off). */
void dbpool__trace_store_locked(dbpool_conn *c, const lease_trace *t);
/* "  #0 frame\n  #1 frame..." into buf, symbolised now. */
void dbpool__trace_format(const lease_trace *t, char *buf, size_t cap, int max_frames);
/* Who took the lease: "thread N (tid T)" (without the tid off Linux). */
void dbpool__trace_holder(const lease_trace *t, char *buf, size_t cap);

/* fork.c */
/* Install the fork handler (once per process; dbpool_open calls it).
 * 0, or pthread_atfork's error (the next call tries again). */
int dbpool__fork_watch(void);
/* pthread_create for the pool's own threads: they start with every signal
 * blocked but a fault's (pool_threads.c), the application's signals stay its own. */
int dbpool__thread_start(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg);
/* pthread_atfork(prepare, parent, child) unless *done; sets *done when it
 * succeeds. 0 or pthread_atfork's error. */
int dbpool__atfork_once(atomic_bool *done, void (*prepare)(void), void (*parent)(void), void (*child)(void));
/* Bumped in every child. Read on each acquire and release: inline, one load. */
extern atomic_uint dbpool__fork_gen;
static inline unsigned dbpool__fork_generation(void) {
    return atomic_load_explicit(&dbpool__fork_gen, memory_order_relaxed);
}
/* The pool was opened in another process (before a fork). */
static inline bool dbpool__forked(const dbpool *p) { return p->fork_generation != dbpool__fork_generation(); }

/* 1: the session needs a reset before the next lease; 0: clean; asked of
 * the driver only when something could have changed it since the driver
 * last said clean (a lease that ran no statement and never took the native
 * handle cannot have opened a transaction, as HikariCP skips its rollback
 * when no statement ran). The holder's thread only. */
static inline int dbpool__needs_reset(const dbpool *p, dbpool_conn *c) {
    if (!c->touched)
        return 0;
    int need = p->driver->needs_reset(c->native);
    if (need == 0) {
        c->touched = false;
        c->own_limit = false; /* a SET LOCAL, SET STATEMENT ... FOR or a hint has ended */
    }
    return need;
}

/* Thread-local xorshift; not for secrets. */
uint64_t dbpool__random(void);

#endif
