/*
 * create.c — opening connections: one attempt (connect, init_sql,
 * after_connect), retry with exponential backoff and jitter, the connector
 * threads that open connections for waiting callers, and the circuit
 * breaker that stops a pool from hammering a database that is down.
 *
 * Why connector threads: a caller who waited for a new connection on its
 * own thread could not be served by a connection released meanwhile, and a
 * burst of callers would each open one. They also open the connections
 * that bring the pool back to min_size and min_idle (requested by the maintenance
 * pass), so that no pass waits for a connect. Callers wait in the FIFO queue
 * instead; at most max_connecting connects run at once, for as many
 * waiters as are not already covered, and each result goes to whoever is
 * first in line.
 */
#include "pool_internal.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define lock(p) dbpool__lock(p)
#define unlock(p) dbpool__unlock(p)

/* The refill's hold after a refusal at the server's connection limit. */
#define REFILL_HOLD_MIN_MS 250
#define REFILL_HOLD_MAX_MS 5000

static bool retriable(int code) {
    return code == DBPOOL_ECONNECT || code == DBPOOL_ETIMEDOUT || code == DBPOOL_EBUSY ||
           code == DBPOOL_EBROKEN;
}

const char *dbpool_breaker_state_name(dbpool_breaker_state s) {
    switch (s) {
    case DBPOOL_BREAKER_CLOSED:
        return "closed";
    case DBPOOL_BREAKER_OPEN:
        return "open";
    case DBPOOL_BREAKER_HALF_OPEN:
        return "half_open";
    }
    return "unknown";
}

/* ---------------------------------------------------------------------- */
/* circuit breaker (all under the lock)                                   */
/* ---------------------------------------------------------------------- */

bool dbpool__breaker_blocks_locked(const dbpool *p, int64_t now) {
    if (p->breaker == DBPOOL_BREAKER_OPEN)
        return now - p->breaker_opened_ns < p->opt.breaker_cooldown_ms * DBPOOL_NS_PER_MS;
    if (p->breaker == DBPOOL_BREAKER_HALF_OPEN)
        return p->trial_in_flight;
    return false;
}

/* May a connect start now? Moves open -> half-open after the cooldown and
 * makes that connect the one trial. Every connect for a caller goes
 * through here (the connectors' jobs, and the connect of a caller who will
 * not wait): checking dbpool__breaker_blocks_locked alone would let every
 * caller past an open breaker once its cooldown is over. */
bool dbpool__breaker_admit_locked(dbpool *p, int64_t now) {
    if (p->breaker == DBPOOL_BREAKER_CLOSED)
        return true;
    if (dbpool__breaker_blocks_locked(p, now))
        return false;
    if (p->breaker == DBPOOL_BREAKER_OPEN) {
        p->breaker = DBPOOL_BREAKER_HALF_OPEN;
        p->stats.breaker_half_opens++;
        dbpool__queue_event_locked(p, POOL_EVENT_BREAKER_HALF_OPEN);
    }
    dbpool__breaker_trial_begins_locked(p);
    return true;
}

void dbpool__breaker_trial_begins_locked(dbpool *p) {
    p->trial_in_flight = true;
    atomic_store_explicit(&p->trial_seq, atomic_load_explicit(&p->trial_seq, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

/* A failure of this process, not of the database: out of memory, or a
 * setting that is wrong before anything reaches the server (a TLS file
 * that cannot be read, a bad URL value). It says nothing about whether the
 * server is up, so it neither opens the breaker nor counts towards
 * opening it: that would refuse every new connection for a cooldown, as
 * "database unavailable", while the database is fine. */
static bool local_failure(int code) {
    return code == DBPOOL_ENOMEM || code == DBPOOL_EINVAL || code == DBPOOL_EUNSUPPORTED;
}

/*
 * A failed connect in a process (or a system) out of file descriptors:
 * EMFILE or ENFILE, else 0. Probed with a descriptor of its own, as the
 * client library's errno is gone by now and SQLite says only "unable to
 * open database file". Such a failure says nothing about the database: it
 * is a local failure for the breaker, and retried, since descriptors come
 * free again.
 */
static int descriptor_shortage(void) {
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
        close(fd);
        return 0;
    }
    return errno == EMFILE || errno == ENFILE ? errno : 0;
}

/* Say so in the error, first, with what to do. */
static void explain_descriptor_shortage(dbpool_error *e, int shortage) {
    e->code = DBPOOL_ECONNECT;
    if (shortage == ENFILE) {
        dbpool__prefix_err(e, "the system is out of file descriptors (ENFILE: its file table is full, see "
                              "fs.file-max), so no connection could be opened; the database was not "
                              "counted as down");
        return;
    }
    struct rlimit rl;
    char limit[48] = "";
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        snprintf(limit, sizeof limit, " %llu", (unsigned long long)rl.rlim_cur);
    dbpool__prefix_err(
        e,
        "this process is out of file descriptors (EMFILE: all%s of RLIMIT_NOFILE are open), so "
        "no connection could be opened; raise the limit (ulimit -n, LimitNOFILE=) or close "
        "descriptors; the database was not counted as down",
        limit);
}

/* Count one connect attempt's outcome; seq: trial_seq when it started;
 * local: a failure of this process that attempt_connect found (out of
 * descriptors), counted as local_failure's. */
static pool_event note_attempt_locked(dbpool *p, int rc, const dbpool_error *e, uint64_t seq, bool local) {
    if (rc == DBPOOL_OK) {
        /* A timeout message quotes the last connect error: not one from
         * before the database came back. */
        p->last_connect_error.code = DBPOOL_OK;
        p->consecutive_failures = 0;
        p->trial_in_flight = false;
        p->trial_jobs = 0; /* closed: a queued trial is an ordinary job now */
        if (p->breaker != DBPOOL_BREAKER_CLOSED) {
            p->breaker = DBPOOL_BREAKER_CLOSED;
            p->stats.breaker_closes++;
            dbpool__queue_event_locked(p, POOL_EVENT_BREAKER_CLOSED);
            return POOL_EVENT_BREAKER_CLOSED;
        }
        return POOL_EVENT_NONE;
    }
    p->stats.connect_errors++;
    p->last_connect_error = *e;
    /* A server at its connection limit is up and answering: counted as an
     * outage, a pool whose max_size is above the server's limit opened
     * the breaker after a few callers beyond it, and everyone needing a new
     * connection got DBPOOL_EUNAVAILABLE for a cooldown, even once a
     * session had ended or the limit had been raised. */
    local = local || local_failure(rc);
    bool at_limit = !local && p->driver->at_connection_limit && p->driver->at_connection_limit(e);
    if (local || at_limit) {
        bool trial = p->breaker == DBPOOL_BREAKER_HALF_OPEN &&
                     seq == atomic_load_explicit(&p->trial_seq, memory_order_relaxed);
        if (trial) {
            p->trial_in_flight = false;
            p->trial_jobs = 0;
        }
        if (trial && at_limit) {
            /* The trial reached a server that answers: its verdict is
             * "up", and the breaker closes. Left half-open, each waiter
             * got the refusal at once (nothing retried it while the
             * breaker was not closed), though a lease coming back or a
             * session ending would soon have served it; the callers in
             * line now wait for that, as with a closed breaker. */
            p->consecutive_failures = 0;
            p->breaker = DBPOOL_BREAKER_CLOSED;
            p->stats.breaker_closes++;
            dbpool__queue_event_locked(p, POOL_EVENT_BREAKER_CLOSED);
            return POOL_EVENT_BREAKER_CLOSED;
        }
        /* A local failure of the trial told nothing: the next connect is
         * admitted as the trial instead. */
        return POOL_EVENT_NONE;
    }
    p->consecutive_failures++;
    if (p->breaker == DBPOOL_BREAKER_HALF_OPEN &&
        seq != atomic_load_explicit(&p->trial_seq, memory_order_relaxed))
        return POOL_EVENT_NONE; /* admitted before the trial, which is still under way: not its outcome */
    bool trial_failed = p->breaker == DBPOOL_BREAKER_HALF_OPEN;
    bool open = trial_failed || (p->breaker == DBPOOL_BREAKER_CLOSED && p->opt.breaker_failures > 0 &&
                                 p->consecutive_failures >= p->opt.breaker_failures);
    p->trial_in_flight = false;
    p->trial_jobs = 0;
    if (!open) {
        /* Already open: an attempt admitted before it opened (a
         * connector's, or a caller's on its own thread) failed too. The
         * database is still down now, so the cooldown counts from this
         * failure, as after a failed trial. */
        if (p->breaker == DBPOOL_BREAKER_OPEN)
            p->breaker_opened_ns = dbpool__fast_now_ns();
        return POOL_EVENT_NONE;
    }
    p->breaker = DBPOOL_BREAKER_OPEN;
    p->breaker_opened_ns = dbpool__fast_now_ns();
    p->stats.breaker_opens++;
    pool_event ev = trial_failed ? POOL_EVENT_BREAKER_REOPENED : POOL_EVENT_BREAKER_OPENED;
    dbpool__queue_event_locked(p, ev);
    return ev;
}

void dbpool_breaker_reset(dbpool *p) {
    if (!p)
        return;
    lock(p);
    bool was_open = p->breaker != DBPOOL_BREAKER_CLOSED;
    if (was_open) {
        p->stats.breaker_closes++;
        dbpool__queue_event_locked(p, POOL_EVENT_BREAKER_RESET);
    }
    p->breaker = DBPOOL_BREAKER_CLOSED;
    p->consecutive_failures = 0;
    p->trial_in_flight = false;
    p->trial_jobs = 0; /* closed: a queued trial is an ordinary job now */
    dbpool__request_connections_locked(p);
    unlock(p);
    dbpool__log_queued_events(p);
}

/* ---------------------------------------------------------------------- */
/* one connection, with retries                                           */
/* ---------------------------------------------------------------------- */

static int64_t jittered_expiry(const dbpool *p, int64_t now) {
    if (p->opt.max_lifetime_ms <= 0)
        return INT64_MAX;
    int64_t life = p->opt.max_lifetime_ms * DBPOOL_NS_PER_MS;
    /* Up to 2.5% shorter, so that connections opened together do not all
     * expire together (sqlx's reconnect storms). */
    int64_t span = life / 40;
    if (span > 0)
        life -= (int64_t)(dbpool__random() % (uint64_t)span);
    return now + life;
}

int dbpool__start_session(dbpool *p, void *native, int64_t deadline_ns, dbpool_error *e) {
    if (p->init_sql) {
        /* Bounded like the connect or the reset before it: a server that
         * stops answering must not hold a connector, an acquire or a
         * releasing thread for as long as it likes. */
        int rc = p->driver->exec_bounded ? p->driver->exec_bounded(native, p->init_sql, deadline_ns, e)
                                         : p->driver->exec(native, p->init_sql, NULL, 0, NULL, 0, e);
        /* What init_sql sets is the session every lease starts from, not
         * a caller's change: counted as one, every release would reset the
         * connection and run init_sql again, which counts again (MySQL). */
        if (rc == DBPOOL_OK && p->driver->session_baseline)
            rc = p->driver->session_baseline(native, e);
        if (rc != DBPOOL_OK) {
            dbpool__prefix_err(e, "%s",
                               rc == DBPOOL_ETIMEDOUT ? "init_sql did not finish before the deadline"
                                                      : "init_sql failed");
            return rc;
        }
    }
    /* The user's callback: not bounded (it may do anything). */
    if (p->opt.after_connect) {
        int urc = p->opt.after_connect(dbpool__user_handle(p->driver, native), p->opt.after_connect_user);
        if (urc != 0)
            return dbpool__seterr(e, DBPOOL_ECONNECT,
                                  "the after_connect callback rejected the connection (it returned %d)", urc);
        /* What after_connect set up (an ATTACH, a temporary table, a
         * prepared statement) is part of the session every lease starts
         * from, as init_sql's is. */
        if (p->driver->session_baseline)
            return p->driver->session_baseline(native, e);
    }
    return DBPOOL_OK;
}

/* One connection, made ready: connect, init_sql, after_connect. The
 * deadline covers the connect and init_sql. */
static int connect_once(dbpool *p, int64_t deadline, void **native, dbpool_error *e) {
    int rc = p->driver->connect(p->driver_cfg, &p->settings, deadline, native, e);
    if (rc != DBPOOL_OK)
        return rc;
    rc = dbpool__start_session(p, *native, deadline, e);
    if (rc != DBPOOL_OK) {
        dbpool__prefix_err(e, "on a new connection");
        p->driver->disconnect(*native);
        *native = NULL;
    }
    return rc;
}

/* Note a connect's outcome for the refill's hold at a connection limit.
 * True: a refusal at the limit with nobody waiting (the refill's), to be
 * logged quietly (connector: a connector's job, not a caller's own
 * connect); *refusals: the episode's count so far, or, after a
 * success that ended an episode, its count (to log). Lock held. */
static bool note_refill_limit_locked(dbpool *p, int rc, const dbpool_error *e, bool connector,
                                     uint64_t *refusals) {
    if (rc == DBPOOL_OK) {
        *refusals = p->refill_limit_refusals;
        p->refill_limit_refusals = 0;
        p->refill_hold_ms = 0;
        p->refill_hold_until_ns = 0;
        return false;
    }
    /* A caller's own connect (it will not wait; the warm-up) reports its
     * refusal itself, and is no refill. */
    if (!connector || p->n_waiting > 0 || !p->driver->at_connection_limit ||
        !p->driver->at_connection_limit(e))
        return false;
    p->refill_hold_ms = p->refill_hold_ms == 0 ? REFILL_HOLD_MIN_MS : p->refill_hold_ms * 2;
    if (p->refill_hold_ms > REFILL_HOLD_MAX_MS)
        p->refill_hold_ms = REFILL_HOLD_MAX_MS;
    p->refill_hold_until_ns = dbpool__fast_now_ns() + p->refill_hold_ms * DBPOOL_NS_PER_MS;
    *refusals = ++p->refill_limit_refusals;
    return true;
}

/* Sleep ms, but wake early when the pool stops its connectors, and when a
 * connection closed while callers wait (dbpool__kick_backoff_locked): the
 * place it gave back is room for a connect now, and a waiter would
 * otherwise wait out the rest of the delay (up to backoff_max_ms) though
 * the database may well answer again. */
static void backoff_sleep(dbpool *p, int64_t ms) {
    int64_t until = dbpool__deadline_after_ms(ms);
    struct timespec ts = {(time_t)(until / INT64_C(1000000000)), (long)(until % INT64_C(1000000000))};
    lock(p);
    uint64_t kicks = p->backoff_kicks;
    while (!p->connectors_stop && !p->closed && p->backoff_kicks == kicks) {
        if (pthread_cond_timedwait(&p->connector_cond, &p->lock, &ts) == ETIMEDOUT)
            break;
    }
    unlock(p);
}

/* An attempt that timed out: say how long it ran and which bound ended it,
 * connect_timeout_ms or the caller's shorter deadline (`bound`, say
 * "acquire_timeout_ms 1000 of dbpool_open"): naming connect_timeout_ms when
 * the caller's deadline came first would make a reader think the pool had
 * waited that long. */
static void explain_attempt_timeout(const dbpool *p, dbpool_error *e, int64_t began_ns, bool cut,
                                    const char *bound) {
    long long took = (long long)((dbpool__now_ns() - began_ns) / DBPOOL_NS_PER_MS);
    if (cut && bound)
        dbpool__prefix_err(e, "gave up after %lld ms (%s ended the attempt, before connect_timeout_ms %lld)",
                           took, bound, (long long)p->opt.connect_timeout_ms);
    else if (cut)
        dbpool__prefix_err(e,
                           "gave up after %lld ms (the deadline for this connection, its earlier "
                           "attempts included, ended the attempt before connect_timeout_ms %lld)",
                           took, (long long)p->opt.connect_timeout_ms);
    else
        dbpool__prefix_err(e, "gave up after %lld ms (connect_timeout_ms %lld)", took,
                           (long long)p->opt.connect_timeout_ms);
}

/* One attempt of create_native's, bounded by connect_timeout_ms or by
 * `deadline` when that comes first. A failure's message says which bound
 * ended a timed-out attempt. */
static int attempt_connect(dbpool *p, int attempt, int64_t deadline, const char *bound, void **native,
                           dbpool_error *e, bool *out_of_fds) {
    *out_of_fds = false;
    int64_t t0 = dbpool__fast_now_ns();
    int64_t now = dbpool__now_ns();
    int64_t attempt_deadline = now + p->opt.connect_timeout_ms * DBPOOL_NS_PER_MS;
    /* The caller's deadline comes first (by more than the moments
     * between the two clock readings: equal bounds are connect_timeout_ms's).
     * Without a `bound`, the deadline is connect_timeout_ms from the
     * first attempt (or longer): that one is never cut, however long
     * the thread was held up before it. */
    bool cut = false;
    if (attempt_deadline > deadline || attempt_deadline < now) {
        cut = attempt_deadline < now || attempt_deadline - deadline > 10 * DBPOOL_NS_PER_MS;
        if (attempt == 0 && !bound)
            cut = false;
        attempt_deadline = deadline;
    }
    dbpool__clearerr(e);
    int rc = connect_once(p, attempt_deadline, native, e);
    if (rc == DBPOOL_OK)
        dbpool__metrics_record(p->metrics, DBPOOL_HIST_CONNECT, dbpool__fast_now_ns() - t0);
    else {
        int shortage = rc != DBPOOL_ETIMEDOUT && !local_failure(rc) ? descriptor_shortage() : 0;
        if (shortage) {
            explain_descriptor_shortage(e, shortage);
            rc = e->code;
            *out_of_fds = true;
        }
        if (rc == DBPOOL_ETIMEDOUT)
            explain_attempt_timeout(p, e, now, cut, bound);
        dbpool__finish_err(p, e);
    }
    return rc;
}

/* Log an attempt's outcome (quiet, refusals: from note_refill_limit_locked).
 * Cause, then effect: the caller logs the breaker event after this. */
static void log_attempt(dbpool *p, int rc, const dbpool_error *e, int attempt, bool quiet, uint64_t refusals,
                        int min_size) {
    /* What the refill works towards: min_size as read under the lock (a
     * resize may change it meanwhile); min_idle is fixed at open. */
    char goal[64] = "";
    if (refusals > 0 && p->opt.min_idle > 0)
        snprintf(goal, sizeof goal, "min_size %d and min_idle %d", min_size, p->opt.min_idle);
    else if (refusals > 0)
        snprintf(goal, sizeof goal, "min_size %d", min_size);
    if (rc == DBPOOL_OK && refusals > 0)
        dbpool__log(p, DBPOOL_LOG_INFO,
                    "a connection opened again after %llu refusals at the server's connection limit: the "
                    "refill to %s goes on",
                    (unsigned long long)refusals, goal);
    if (quiet && refusals == 1)
        dbpool__log(p, DBPOOL_LOG_WARN,
                    "the refill to %s was refused at the server's connection limit: it is retried "
                    "less and less often (up to every %d ms) until a connect succeeds; further refusals "
                    "are logged at DEBUG: %s",
                    goal, REFILL_HOLD_MAX_MS, e->message);
    else if (quiet)
        dbpool__log(p, DBPOOL_LOG_DEBUG, "the refill to %s refused again (%llu times): %s", goal,
                    (unsigned long long)refusals, e->message);
    else if (rc != DBPOOL_OK && attempt < p->opt.max_retries + 1)
        dbpool__log(p, DBPOOL_LOG_WARN, "connect attempt %d of %d failed: %s", attempt + 1,
                    p->opt.max_retries + 1, e->message);
    else if (rc != DBPOOL_OK)
        dbpool__log(p, DBPOOL_LOG_WARN,
                    "connect attempt %d failed (past max_retries %d: the server is at a connection limit "
                    "and callers wait): %s",
                    attempt + 1, p->opt.max_retries, e->message);
}

/* The backoff after failed attempt `attempt` (0 the first): exponential
 * from backoff_base_ms up to backoff_max_ms, with "equal jitter" (half
 * fixed, half random) so that pools that failed together do not retry
 * together. past_retries: at a connection limit past max_retries. */
static int64_t backoff_ms(const dbpool *p, int attempt, bool past_retries) {
    int64_t delay = p->opt.backoff_base_ms;
    for (int i = 0; i < attempt && delay < p->opt.backoff_max_ms; i++)
        delay *= 2;
    if (delay > p->opt.backoff_max_ms)
        delay = p->opt.backoff_max_ms;
    if (delay > 1)
        delay = delay / 2 + (int64_t)(dbpool__random() % (uint64_t)(delay / 2 + 1));
    /* Past max_retries (a connection limit, callers waiting): not in
     * a tight loop, whatever the backoff options say. After the
     * jitter, which would otherwise halve it (50..100 ms, not the
     * documented at least 100). */
    if (past_retries && delay < 100)
        delay = 100;
    return delay;
}

/* What create_native does after an attempt. */
typedef enum {
    AFTER_CONNECTED, /* return the connection */
    AFTER_GIVE_UP,   /* return this attempt's error */
    AFTER_BACKOFF,   /* sleep the delay, then attempt again */
} after_attempt;

/*
 * Decide what follows attempt `attempt` (0 the first), which returned rc
 * with error e. for_waiters: a connector's connect, for callers in line;
 * breaker_open: the breaker was not closed once this attempt was counted.
 * On AFTER_BACKOFF, *delay_ms is the sleep before the next attempt.
 */
static after_attempt decide_after_attempt(const dbpool *p, int rc, const dbpool_error *e, int attempt,
                                          bool for_waiters, bool breaker_open, int64_t deadline,
                                          int64_t *delay_ms) {
    if (rc == DBPOOL_OK)
        return AFTER_CONNECTED;
    /* A wrong password, an unknown database, a local failure: another
     * attempt would fail the same way. */
    if (!retriable(rc))
        return AFTER_GIVE_UP;
    /* The breaker opened (this failure, or another connect's, opened it;
     * or it was half-open and this was the trial): no connect may start
     * now but the trial it admits after the cooldown. */
    if (breaker_open)
        return AFTER_GIVE_UP;
    /* A server at its connection limit, for callers in line: they are
     * served by the first lease released, and a connection by the
     * first session to end on the server or a raised limit. Giving up
     * after max_retries failed the first of them at once, within tens
     * of milliseconds, however long its acquire timeout and however
     * soon a lease came back; the next one in line then got a connect
     * of its own, and so on. Retried for as long as someone waits (a
     * timeout then quotes this error; the caller stops when nobody
     * does), the backoff spacing the attempts out to backoff_max_ms. */
    bool at_limit = for_waiters && p->driver->at_connection_limit && p->driver->at_connection_limit(e);
    bool past_retries = attempt >= p->opt.max_retries;
    if (past_retries && !at_limit)
        return AFTER_GIVE_UP;
    *delay_ms = backoff_ms(p, attempt, past_retries);
    /* No time left for another attempt after the backoff: this attempt's
     * error is the answer, now rather than at the deadline. */
    if (dbpool__now_ns() + *delay_ms * DBPOOL_NS_PER_MS >= deadline)
        return AFTER_GIVE_UP;
    return AFTER_BACKOFF;
}

/* After a backoff: may another attempt start? Not once the pool closed or
 * stops its connectors, nor once another connect's failure opened the
 * breaker while this one slept (the breaker's trial is for whoever it
 * admits after the cooldown), nor when nobody waits for the connection any
 * more (still_wanted, for a connector's connect). *seq: the next attempt's
 * trial_seq. */
static bool may_attempt_again(dbpool *p, bool (*still_wanted)(dbpool *p), uint64_t *seq) {
    lock(p);
    bool stop = p->closed || p->connectors_stop || p->breaker != DBPOOL_BREAKER_CLOSED;
    *seq = atomic_load_explicit(&p->trial_seq, memory_order_relaxed);
    unlock(p);
    return !stop && (!still_wanted || still_wanted(p));
}

/*
 * Open a native connection, retrying retriable failures with exponential
 * backoff ("equal jitter": half the delay fixed, half random) up to
 * max_retries, never past `deadline`, and stopping early when the breaker
 * opens or `still_wanted` says nobody needs it any more. `bound` names the
 * deadline for a timeout's message (NULL: the deadline for this connection,
 * which its retries share: the maintenance refill's, a non-waiting
 * acquire's).
 */
static int create_native(dbpool *p, int64_t deadline, const char *bound, uint64_t seq,
                         bool (*still_wanted)(dbpool *p), void **native, dbpool_error *err) {
    dbpool_error e;
    dbpool__clearerr(&e);
    int rc = DBPOOL_ECONNECT;
    for (int attempt = 0;; attempt++) {
        bool out_of_fds;
        rc = attempt_connect(p, attempt, deadline, bound, native, &e, &out_of_fds);
        lock(p);
        pool_event ev = note_attempt_locked(p, rc, &e, seq, out_of_fds);
        bool breaker_open = p->breaker != DBPOOL_BREAKER_CLOSED;
        uint64_t refusals = 0;
        bool quiet = note_refill_limit_locked(p, rc, &e, still_wanted != NULL, &refusals);
        int min_size = p->opt.min_size; /* for its log line: dbpool_resize writes it under the lock */
        /* Closed again: callers in line whose connections the breaker
         * refused (they waited for a lease that was then closed) get them
         * opened now. This connect's own waiter is covered by it. */
        if (ev == POOL_EVENT_BREAKER_CLOSED)
            dbpool__request_connections_locked(p); /* closed: no breaker event */
        unlock(p);
        log_attempt(p, rc, &e, attempt, quiet, refusals, min_size);
        dbpool__log_queued_events(p);
        int64_t delay_ms = 0;
        if (decide_after_attempt(p, rc, &e, attempt, still_wanted != NULL, breaker_open, deadline,
                                 &delay_ms) != AFTER_BACKOFF)
            break;
        backoff_sleep(p, delay_ms);
        if (!may_attempt_again(p, still_wanted, &seq))
            break;
    }
    if (rc != DBPOOL_OK && err)
        *err = e;
    return rc;
}

/* Turn a fresh native handle into a slot (its place already counted in
 * n_connecting). Lock held. */
static dbpool_conn *adopt_locked(dbpool *p, void *native, bool leased, const lease_trace *trace,
                                 uint64_t refresh_seq) {
    dbpool_conn *c = p->free_slots;
    if (c) {
        p->free_slots = c->next;
    } else {
        /* A line pair of its own: the owning thread's fast path writes
         * the park word, and another thread's connection must not share
         * that line (false sharing halved two threads' rates). */
        size_t size = (sizeof *c + DBPOOL_CONN_ALIGN - 1) / DBPOOL_CONN_ALIGN * DBPOOL_CONN_ALIGN;
        c = aligned_alloc(DBPOOL_CONN_ALIGN, size);
        if (!c)
            return NULL;
        memset(c, 0, size);
        c->all_next = p->all_slots;
        p->all_slots = c;
    }
    lease_trace *keep_trace = c->trace;
    dbpool_conn *keep_all = c->all_next;
    memset(c, 0, offsetof(dbpool_conn, park));
    c->trace = keep_trace;
    c->all_next = keep_all;
    c->magic = DBPOOL_CONN_MAGIC;
    c->pool = p;
    int64_t now = dbpool__fast_now_ns();
    c->native = native;
    c->touched = true; /* init_sql and after_connect ran on it: the first release asks the driver */
    c->id = ++p->next_conn_id;
    c->created_ns = now;
    c->expires_ns = jittered_expiry(p, now);
    if (refresh_seq != atomic_load_explicit(&p->refresh_seq, memory_order_relaxed)) {
        /* Opened from before a dbpool_refresh (its address, its
         * credentials): retired at its first check, or at its release. */
        c->retire = true;
        c->expires_ns = 0;
    }
    c->last_used_ns = now;
    p->n_connecting--;
    p->stats.created++;
    if (leased) {
        c->state = CONN_LEASED;
        p->n_leased++;
        dbpool__note_peak(p, 0);
        dbpool__lease_begin_locked(p, c, now, trace);
    } else {
        dbpool__publish_locked(p, c, now);
    }
    return c;
}

int dbpool__fill_reserved(dbpool *p, int64_t deadline, const char *bound, bool leased,
                          const lease_trace *trace, dbpool_conn **out, dbpool_error *err) {
    void *native = NULL;
    /* The place was reserved (and the breaker asked) under the lock before. */
    uint64_t seq = atomic_load_explicit(&p->trial_seq, memory_order_relaxed);
    uint64_t refresh_seq = atomic_load_explicit(&p->refresh_seq, memory_order_relaxed);
    int rc = create_native(p, deadline, bound, seq, NULL, &native, err);
    lock(p);
    dbpool_conn *c = NULL;
    if (rc == DBPOOL_OK && !p->closed) {
        c = adopt_locked(p, native, leased, trace, refresh_seq);
        if (!c)
            rc = dbpool__seterr(err, DBPOOL_ENOMEM, "out of memory for a connection slot");
    } else if (rc == DBPOOL_OK) {
        rc = dbpool__seterr(err, DBPOOL_ECLOSED, "the pool was closed while a connection was being opened");
    }
    if (!c) {
        p->n_connecting--;
        dbpool__request_connections_locked(p);
    }
    /* Without a lease, nothing of this thread keeps the pool once its
     * connecting place is given back: hold it for the disconnect and the
     * log below (a dbpool_close may be finishing on another thread). */
    bool hold = !c && (native || dbpool__events_waiting_locked(p));
    if (hold)
        dbpool__hold_locked(p);
    bool free_it = dbpool__can_free_locked(p);
    /* Under the lock: a published connection may be leased, closed and its
     * slot reused by another thread once it is dropped. */
    unsigned long long id = c ? (unsigned long long)c->id : 0;
    unlock(p);
    if (free_it) {
        dbpool__free(p);
        return rc;
    }
    if (hold) {
        if (native)
            p->driver->disconnect(native);
        dbpool__log_queued_events(p);
        dbpool__unhold(p);
        return rc;
    }
    if (c) {
        if (out)
            *out = c;
        dbpool__log(p, DBPOOL_LOG_DEBUG, "opened connection #%llu", id);
    }
    return rc;
}

/* ---------------------------------------------------------------------- */
/* connector threads                                                      */
/* ---------------------------------------------------------------------- */

/* Queue one connect for the connector threads, admitted by the breaker
 * just now. False when it is the half-open trial: nothing more may be
 * queued beside it. Lock held. */
static bool queue_connect_locked(dbpool *p) {
    if (p->breaker != DBPOOL_BREAKER_CLOSED)
        p->trial_jobs++; /* admitted as the half-open trial */
    p->n_connecting++;
    p->connect_jobs++;
    /* Broadcast: connectors sleeping in a backoff share the variable. */
    pthread_cond_broadcast(&p->connector_cond);
    return p->breaker != DBPOOL_BREAKER_HALF_OPEN;
}

void dbpool__kick_backoff_locked(dbpool *p) {
    /* Only for callers in line not served by an idle connection, and only
     * when a connector is under way (it may be sleeping in a backoff). */
    if (p->connect_running == 0 || p->n_waiting - p->n_idle <= 0 || dbpool__total_locked(p) >= p->cap)
        return;
    p->backoff_kicks++;
    pthread_cond_broadcast(&p->connector_cond);
}

void dbpool__request_connections_locked(dbpool *p) {
    if (p->closed || p->suspended || p->connectors_stop || p->n_connectors == 0)
        return;
    int64_t now = dbpool__fast_now_ns();
    /* Waiters not yet covered by an idle connection they were told about
     * (barging) or by a connect requested or under way. */
    int covered = p->connect_jobs + p->connect_running;
    while (p->n_waiting - p->n_idle > covered && dbpool__total_locked(p) < p->cap &&
           covered < p->opt.max_connecting) {
        if (!dbpool__breaker_admit_locked(p, now)) {
            /* These waiters need connections the breaker will not let be
             * opened. With nothing else that could serve them (no lease out
             * to come back, no connect under way, nothing idle or parked),
             * they get its error now, as a caller arriving now would,
             * rather than wait out their timeouts for nothing. */
            if (p->n_leased + p->n_parked + p->n_connecting + p->n_idle == 0) {
                dbpool_error e;
                dbpool__clearerr(&e);
                dbpool__breaker_error_locked(p, &e);
                dbpool__fail_waiters_locked(p, &e, true);
            }
            break;
        }
        covered++;
        if (!queue_connect_locked(p))
            break; /* one trial only */
    }
}

/* Below what the pool keeps, once the connects requested or under way
 * are done? Fewer than min_size open, or fewer than min_idle idle: those
 * connects serve the callers in line first, and only what is left of
 * them adds to the idle list. Lock held. */
static bool below_floor_locked(const dbpool *p) {
    if (dbpool__total_locked(p) < p->opt.min_size)
        return true;
    return p->opt.min_idle > 0 &&
           p->n_idle + p->connect_jobs + p->connect_running - p->n_waiting < p->opt.min_idle;
}

void dbpool__request_refill_locked(dbpool *p) {
    /* Not while suspended: a switchover wants no new session opened. */
    /* Without the maintenance thread nothing refills (documented). */
    if (p->closed || p->suspended || p->connectors_stop || p->n_connectors == 0 || p->maint_stop ||
        !p->maint_running)
        return;
    int64_t now = dbpool__fast_now_ns();
    /* Refused at the server's connection limit lately: not before the
     * hold is over, and one connect at a time (each pass used to queue
     * max_connecting of them, each refused and logged at WARN). */
    if (p->refill_limit_refusals > 0 && now < p->refill_hold_until_ns)
        return;
    int most = p->refill_limit_refusals > 0 ? 1 : p->opt.max_connecting;
    /* A place being opened counts in the total: a refill requested by an
     * earlier pass and still under way is not requested again. */
    while (below_floor_locked(p) && dbpool__total_locked(p) < p->cap &&
           p->connect_jobs + p->connect_running < most) {
        /* The breaker's rules, as for a waiter's job: nothing while open,
         * and after the cooldown this refill is the one trial. */
        if (!dbpool__breaker_admit_locked(p, now))
            break;
        if (!queue_connect_locked(p))
            break; /* one trial only */
    }
}

/* Does any waiter still need a connection, now? Not while suspended: no
 * new session until dbpool_resume, which asks again for those in line. */
static bool still_wanted(dbpool *p) {
    lock(p);
    bool wanted = p->n_waiting > 0 && !p->closed && !p->connectors_stop && !p->suspended;
    unlock(p);
    return wanted;
}

/* A connector's connect failed for good: fail the first waiter with it, or
 * every waiter when nothing else can serve them (the cause is permanent or
 * the breaker is open, and no lease is out to come back). Lock held. */
static void deliver_failure_locked(dbpool *p, int rc, dbpool_error *e) {
    /* Closing: dbpool_close has woken the waiters, and each leaves with
     * DBPOOL_ECLOSED. Taken out of the line here, one not yet run would
     * no longer keep the pool, which the close could then free under it. */
    if (!p->wait_head || p->closed)
        return;
    bool hopeless = !retriable(rc) || p->breaker != DBPOOL_BREAKER_CLOSED;
    if (p->breaker == DBPOOL_BREAKER_OPEN && rc != DBPOOL_EAUTH) {
        char cause[sizeof e->message];
        memcpy(cause, e->message, sizeof cause);
        dbpool__seterr(e, DBPOOL_EUNAVAILABLE,
                       "circuit breaker opened after %d consecutive failed connects; last connect error: %s",
                       p->consecutive_failures, cause);
    }
    /* A connection parked for a thread (in use through its cache) comes
     * back as a lease does. */
    dbpool__fail_waiters_locked(p, e, hopeless && p->n_leased + p->n_parked == 0 && p->connect_running == 0);
}

/* A job queued while the breaker was closed, picked up after it opened (or
 * went half-open with its trial elsewhere): it is not run, since no connect
 * may start now but the one trial. Its place is given back, and the waiter
 * it was for, who now needs a connection the breaker will not let be
 * opened, gets the breaker's error, as one arriving now would; every
 * waiter when nothing else can serve them (no lease out, no connect under
 * way). Lock held. */
static void drop_job_locked(dbpool *p) {
    p->n_connecting--;
    if (!p->wait_head || p->closed || p->idle_head || dbpool__total_locked(p) >= p->cap)
        return; /* closing (see deliver_failure_locked), an idle connection for the first
                   waiter, or it waits for a release */
    dbpool_error e;
    dbpool__clearerr(&e);
    dbpool__breaker_error_locked(p, &e);
    dbpool__fail_waiters_locked(p, &e, p->n_leased + p->n_parked == 0 && p->n_connecting == 0);
}

/* A connector's whole time for one connection: every attempt and every
 * backoff between them. Saturates instead of overflowing (options allow
 * durations up to 2^62 ns). */
static int64_t connect_budget_ms(const dbpool_options *o) {
    int64_t attempts = (int64_t)o->max_retries + 1, limit = INT64_MAX / DBPOOL_NS_PER_MS;
    if (o->connect_timeout_ms > limit / attempts)
        return limit;
    int64_t budget = o->connect_timeout_ms * attempts;
    if (o->max_retries > 0 && o->backoff_max_ms > (limit - budget) / o->max_retries)
        return limit;
    return budget + o->backoff_max_ms * o->max_retries;
}

static void *connector_main(void *arg) {
    dbpool *p = arg;
    dbpool__metrics_thread_shared(); /* no writer number for a thread that records a connect now and then */
    lock(p);
    for (;;) {
        if (p->connectors_stop)
            break;
        if (p->connect_jobs == 0) {
            pthread_cond_wait(&p->connector_cond, &p->lock);
            continue;
        }
        p->connect_jobs--;
        if (p->closed || p->suspended) {
            /* Not run, its place given back. Closing: the waiters it was
             * for leave with DBPOOL_ECLOSED, and nothing it opened would be
             * kept (dbpool_close sets `closed` before it stops the
             * connectors). Suspended: no new session until dbpool_resume,
             * which asks again for the callers still in line. */
            if (p->breaker != DBPOOL_BREAKER_CLOSED && p->trial_jobs > 0) {
                /* It was the half-open trial, which never ran: the next
                 * request is admitted as the trial. */
                p->trial_jobs--;
                p->trial_in_flight = false;
            }
            p->n_connecting--;
            continue;
        }
        if (p->breaker != DBPOOL_BREAKER_CLOSED) {
            if (p->trial_jobs == 0) {
                drop_job_locked(p);
                continue;
            }
            p->trial_jobs--; /* this one is the trial */
        }
        /* Read with the breaker's state: a trial admitted from here on is
         * not this job's. */
        uint64_t seq = atomic_load_explicit(&p->trial_seq, memory_order_relaxed);
        uint64_t refresh_seq = atomic_load_explicit(&p->refresh_seq, memory_order_relaxed);
        p->connect_running++;
        unlock(p);
        void *native = NULL;
        dbpool_error e;
        dbpool__clearerr(&e);
        /* Each attempt is bounded by connect_timeout_ms; the whole by the
         * retry budget, cut short when no waiter needs it any more. */
        int64_t budget = connect_budget_ms(&p->opt);
        int rc = create_native(p, dbpool__deadline_after_ms(budget), "the connector's retry budget", seq,
                               still_wanted, &native, &e);
        lock(p);
        p->connect_running--;
        dbpool_conn *c = NULL;
        if (rc == DBPOOL_OK && !p->closed) {
            c = adopt_locked(p, native, false, NULL, refresh_seq); /* to the first waiter, or idle */
            /* No memory for its slot: the connection is closed below, and
             * the waiter it was for told so. Not asked for again at once:
             * that would connect and close in a loop, as fast as the
             * database answers, until the waiter timed out. */
            if (!c)
                rc = dbpool__seterr(&e, DBPOOL_ENOMEM,
                                    "out of memory for a connection slot: the new connection was closed");
        }
        if (!c) {
            p->n_connecting--;
            /* Suspended meanwhile (the retries stopped for it): those in
             * line wait for the resume, which asks again, rather than
             * leave with an error from before the suspension. */
            if (rc != DBPOOL_OK && !p->suspended)
                deliver_failure_locked(p, rc, &e);
        }
        dbpool__request_connections_locked(p);
        /* Connected: the refill to min_size and min_idle goes on, as the maintenance
         * pass did it one connect after another (after a failure it waits
         * for the next pass). The breaker is closed now: no event. */
        if (c)
            dbpool__request_refill_locked(p);
        /* Read under the lock: once published, the connection may be
         * leased, closed and its slot reused by another thread. */
        unsigned long long id = c ? (unsigned long long)c->id : 0;
        unlock(p);
        if (!c && native)
            p->driver->disconnect(native);
        if (c)
            dbpool__log(p, DBPOOL_LOG_DEBUG, "opened connection #%llu", id);
        dbpool__log_queued_events(p);
        lock(p);
    }
    unlock(p);
    return NULL;
}

int dbpool__connectors_start(dbpool *p, dbpool_error *e) {
    int n = p->opt.max_connecting;
    p->connectors = calloc((size_t)n, sizeof *p->connectors);
    if (!p->connectors)
        return dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory");
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (int i = 0; i < n; i++) {
        int rc = dbpool__thread_start(&p->connectors[i], &attr, connector_main, p);
        if (rc != 0) {
            pthread_attr_destroy(&attr);
            return dbpool__seterr(e, DBPOOL_ENOMEM,
                                  "could not start connector thread %d of max_connecting %d (%s): lower "
                                  "max_connecting, or raise the limit on threads (ulimit -u)",
                                  i + 1, p->opt.max_connecting, strerror(rc));
        }
        lock(p);
        p->n_connectors++;
        unlock(p);
    }
    pthread_attr_destroy(&attr);
    return DBPOOL_OK;
}

void dbpool__connectors_stop(dbpool *p) {
    lock(p);
    p->connectors_stop = true;
    int n = p->n_connectors;
    pthread_cond_broadcast(&p->connector_cond);
    unlock(p);
    for (int i = 0; i < n; i++)
        pthread_join(p->connectors[i], NULL);
    lock(p);
    p->n_connectors = 0;
    /* Requested jobs nobody picked up hold places: give them back. */
    p->n_connecting -= p->connect_jobs;
    p->connect_jobs = 0;
    p->trial_jobs = 0;
    unlock(p);
}
