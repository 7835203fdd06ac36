/*
 * pool.c — open/close, acquire/release/discard, the FIFO wait queue and
 * connection creation with retry.
 *
 * Locking: one mutex per pool guards every list and counter. No backend I/O
 * happens while it is held: a connection is moved to a state (leased,
 * returning, closing, connecting) under the lock, the lock is dropped, the
 * I/O runs, and the lock is taken again to publish the result.
 *
 * Fairness: when a caller must wait it joins a FIFO queue with its own
 * condition variable. A released connection goes straight to the head of the
 * queue (direct hand-off), so a later arrival can never overtake a waiter;
 * new arrivals take the idle list only when nobody waits.
 */
#include "pool_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct waiter {
    pthread_cond_t cond;
    waiter *prev, *next;
    dbpool_conn *conn; /* handed off by a releasing thread */
    bool may_connect;  /* woken because there is room for a new connection */
    bool queued;
};

/* ---------------------------------------------------------------------- */
/* small helpers                                                          */
/* ---------------------------------------------------------------------- */

static void lock(dbpool *p) {
    if (pthread_mutex_lock(&p->lock) != 0)
        abort(); /* a failed lock on a valid mutex is a bug, as in libuv */
}
static void unlock(dbpool *p) {
    if (pthread_mutex_unlock(&p->lock) != 0)
        abort();
}

int64_t dbpool__coarse_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * INT64_C(1000000000) + ts.tv_nsec;
}

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
    if (e && e->code != DBPOOL_OK)
        dbpool__redact(e->message, sizeof e->message, p ? p->secrets : NULL);
}

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void dbpool__log(dbpool *p, dbpool_log_level level, const char *fmt, ...) {
    if (!p->opt.log_fn || level > p->opt.log_level)
        return;
    char line[1024];
    int n = snprintf(line, sizeof line, "pool '%s': ", p->name);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    dbpool__redact(line, sizeof line, p->secrets);
    (void)level_names;
    p->opt.log_fn(p->opt.log_user, level, line);
}

static int total_locked(const dbpool *p) { return p->n_idle + p->n_leased + p->n_connecting; }

#ifndef NDEBUG
#define CHECK_INVARIANT(p)                                                                   \
    do {                                                                                     \
        if ((p)->n_idle < 0 || (p)->n_leased < 0 || (p)->n_connecting < 0 ||                 \
            (p)->n_waiting < 0 || (p)->n_closing < 0)                                        \
            abort();                                                                         \
    } while (0)
#else
#define CHECK_INVARIANT(p) ((void)0)
#endif

/* ---------------------------------------------------------------------- */
/* lists (all under the lock)                                             */
/* ---------------------------------------------------------------------- */

static void idle_push(dbpool *p, dbpool_conn *c) {
    c->state = CONN_IDLE;
    c->prev = NULL;
    c->next = p->idle_head;
    if (p->idle_head)
        p->idle_head->prev = c;
    else
        p->idle_tail = c;
    p->idle_head = c;
    p->n_idle++;
}

static void idle_remove(dbpool *p, dbpool_conn *c) {
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

static dbpool_conn *slot_get(dbpool *p) {
    dbpool_conn *c = p->free_slots;
    if (c) {
        p->free_slots = c->next;
    } else {
        c = calloc(1, sizeof *c);
        if (!c)
            return NULL;
    }
    memset(c, 0, sizeof *c);
    c->magic = DBPOOL_CONN_MAGIC;
    c->pool = p;
    return c;
}

/* Slots are kept until the pool is freed, so that releasing a stale lease
 * finds CONN_FREE and is reported as misuse instead of touching freed
 * memory. */
static void slot_put(dbpool *p, dbpool_conn *c) {
    c->state = CONN_FREE;
    c->native = NULL;
    c->prev = NULL;
    c->next = p->free_slots;
    p->free_slots = c;
}

static void waiter_enqueue(dbpool *p, waiter *w) {
    w->next = NULL;
    w->prev = p->wait_tail;
    if (p->wait_tail)
        p->wait_tail->next = w;
    else
        p->wait_head = w;
    p->wait_tail = w;
    w->queued = true;
    p->n_waiting++;
    if (p->n_waiting > p->stats.peak_waiting)
        p->stats.peak_waiting = p->n_waiting;
}

static void waiter_dequeue(dbpool *p, waiter *w) {
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
}

/* There is room for one more connection: let the first waiter open it. */
static void wake_for_capacity_locked(dbpool *p) {
    if (!p->wait_head || total_locked(p) >= p->opt.max_size)
        return;
    /* Queued waiters have neither flag set: a flagged one is dequeued. */
    waiter *w = p->wait_head;
    waiter_dequeue(p, w);
    w->may_connect = true;
    p->n_connecting++; /* the place is reserved for that waiter now */
    pthread_cond_signal(&w->cond);
}

static void note_peak(dbpool *p) {
    if (p->n_leased > p->stats.peak_in_use)
        p->stats.peak_in_use = p->n_leased;
}

/* Put a healthy connection back: to the first waiter, else on the idle list.
 * Caller holds the lock and has already taken c out of the leased count if
 * it was leased. */
static void publish_locked(dbpool *p, dbpool_conn *c, int64_t now) {
    waiter *w = p->wait_head;
    if (w) {
        waiter_dequeue(p, w);
        c->state = CONN_LEASED;
        p->n_leased++;
        note_peak(p);
        w->conn = c;
        pthread_cond_signal(&w->cond);
        return;
    }
    c->last_used_ns = now;
    idle_push(p, c);
}

static bool pool_can_free_locked(const dbpool *p) {
    return p->closed && p->n_idle == 0 && p->n_leased == 0 && p->n_connecting == 0 &&
           p->n_waiting == 0 && p->n_closing == 0 && !p->maint_running;
}

static void pool_free(dbpool *p) {
    dbpool_conn *c = p->free_slots;
    while (c) {
        dbpool_conn *next = c->next;
        c->magic = 0;
        free(c);
        c = next;
    }
    if (p->driver && p->driver_cfg)
        p->driver->free_config(p->driver_cfg);
    pthread_cond_destroy(&p->maint_cond);
    pthread_mutex_destroy(&p->lock);
    free(p->name);
    free(p->init_sql);
    free(p);
}

/* Close a connection that the caller has taken out of every list and
 * counter except n_closing (I/O outside the lock). */
static void disconnect_and_account(dbpool *p, dbpool_conn *c, dbpool_close_reason why) {
    p->driver->disconnect(c->native);
    lock(p);
    p->n_closing--;
    p->stats.destroyed++;
    p->stats.destroyed_by[why]++;
    slot_put(p, c);
    wake_for_capacity_locked(p);
    bool free_it = pool_can_free_locked(p);
    unlock(p);
    if (free_it)
        pool_free(p);
}

/* Close a connection the calling thread holds as a lease (CONN_LEASED or
 * CONN_RETURNING). */
void dbpool__destroy_conn(dbpool *p, dbpool_conn *c, dbpool_close_reason why) {
    lock(p);
    p->n_leased--;
    c->state = CONN_CLOSING;
    p->n_closing++;
    wake_for_capacity_locked(p);
    unlock(p);
    dbpool__log(p, why == DBPOOL_CLOSE_SHRINK || why == DBPOOL_CLOSE_POOL_CLOSED ? DBPOOL_LOG_DEBUG
                                                                                 : DBPOOL_LOG_INFO,
                "closing connection #%llu (%s)", (unsigned long long)c->id, dbpool_close_reason_name(why));
    disconnect_and_account(p, c, why);
}

/* ---------------------------------------------------------------------- */
/* creating connections                                                   */
/* ---------------------------------------------------------------------- */

static bool retriable(int code) {
    return code == DBPOOL_ECONNECT || code == DBPOOL_ETIMEDOUT || code == DBPOOL_EBUSY ||
           code == DBPOOL_EBROKEN;
}

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

/* One connection, made ready: connect, init_sql, after_connect. */
static int connect_once(dbpool *p, int64_t deadline, void **native, dbpool_error *e) {
    int rc = p->driver->connect(p->driver_cfg, &p->settings, deadline, native, e);
    if (rc != DBPOOL_OK)
        return rc;
    if (p->init_sql) {
        rc = p->driver->exec(*native, p->init_sql, NULL, 0, NULL, e);
        if (rc != DBPOOL_OK) {
            dbpool__prefix_err(e, "init_sql failed on a new connection");
            p->driver->disconnect(*native);
            *native = NULL;
            return rc;
        }
    }
    if (p->opt.after_connect) {
        int urc = p->opt.after_connect(*native, p->opt.after_connect_user);
        if (urc != 0) {
            p->driver->disconnect(*native);
            *native = NULL;
            return dbpool__seterr(e, DBPOOL_ECONNECT, "the after_connect callback rejected the connection (it returned %d)", urc);
        }
    }
    return DBPOOL_OK;
}

static void record_connect_error(dbpool *p, const dbpool_error *e) {
    lock(p);
    p->stats.connect_errors++;
    p->last_connect_error = *e;
    p->last_connect_error_ns = dbpool__now_ns();
    unlock(p);
}

/*
 * Open a connection, retrying with exponential backoff and jitter, never
 * past the deadline. The caller has reserved a place (n_connecting). On
 * success *out is a slot in state CONN_LEASED... no: the caller decides;
 * this returns the native handle only.
 */
static int create_native(dbpool *p, int64_t deadline, void **native, dbpool_error *err) {
    dbpool_error e;
    dbpool__clearerr(&e);
    int rc = DBPOOL_ECONNECT;
    for (int attempt = 0;; attempt++) {
        int64_t now = dbpool__now_ns();
        int64_t attempt_deadline = now + p->opt.connect_timeout_ms * DBPOOL_NS_PER_MS;
        if (attempt_deadline > deadline || attempt_deadline < now)
            attempt_deadline = deadline;
        dbpool__clearerr(&e);
        rc = connect_once(p, attempt_deadline, native, &e);
        if (rc == DBPOOL_OK)
            break;
        dbpool__finish_err(p, &e);
        record_connect_error(p, &e);
        dbpool__log(p, DBPOOL_LOG_WARN, "connect attempt %d of %d failed: %s", attempt + 1,
                    p->opt.max_retries + 1, e.message);
        if (!retriable(rc) || attempt >= p->opt.max_retries)
            break;
        /* Exponential backoff with "equal jitter": half fixed, half random. */
        int64_t delay = p->opt.backoff_base_ms;
        for (int i = 0; i < attempt && delay < p->opt.backoff_max_ms; i++)
            delay *= 2;
        if (delay > p->opt.backoff_max_ms)
            delay = p->opt.backoff_max_ms;
        if (delay > 1)
            delay = delay / 2 + (int64_t)(dbpool__random() % (uint64_t)(delay / 2 + 1));
        if (dbpool__now_ns() + delay * DBPOOL_NS_PER_MS >= deadline)
            break; /* no time left for another attempt */
        dbpool__sleep_ms(delay, deadline);
    }
    if (rc != DBPOOL_OK && err)
        *err = e;
    return rc;
}

/* Turn a fresh native handle into a lease (place already reserved in
 * n_connecting). */
static dbpool_conn *adopt_locked(dbpool *p, void *native, bool leased) {
    dbpool_conn *c = slot_get(p);
    if (!c)
        return NULL;
    int64_t now = dbpool__coarse_now_ns();
    c->native = native;
    c->id = ++p->next_conn_id;
    c->created_ns = now;
    c->expires_ns = jittered_expiry(p, now);
    c->last_used_ns = now;
    p->n_connecting--;
    p->stats.created++;
    if (leased) {
        c->state = CONN_LEASED;
        c->acquired_ns = now;
        c->uses = 1;
        p->n_leased++;
        p->stats.acquired++;
        note_peak(p);
    } else {
        publish_locked(p, c, now);
    }
    return c;
}

/* Open a connection into a reserved place. leased: hand it to the caller;
 * otherwise publish it (to a waiter or the idle list). */
static int fill_reserved(dbpool *p, int64_t deadline, bool leased, dbpool_conn **out, dbpool_error *err) {
    void *native = NULL;
    int rc = create_native(p, deadline, &native, err);
    lock(p);
    dbpool_conn *c = NULL;
    if (rc == DBPOOL_OK && !p->closed) {
        c = adopt_locked(p, native, leased);
        if (!c)
            rc = dbpool__seterr(err, DBPOOL_ENOMEM, "out of memory for a connection slot");
    } else if (rc == DBPOOL_OK) {
        rc = dbpool__seterr(err, DBPOOL_ECLOSED, "the pool was closed while a connection was being opened");
    }
    if (!c) {
        p->n_connecting--;
        wake_for_capacity_locked(p);
    }
    bool free_it = pool_can_free_locked(p);
    unlock(p);
    if (!c && native)
        p->driver->disconnect(native);
    if (free_it)
        pool_free(p);
    if (c) {
        if (out)
            *out = c;
        dbpool__log(p, DBPOOL_LOG_DEBUG, "opened connection #%llu", (unsigned long long)c->id);
    }
    return rc;
}

int dbpool__open_one_idle(dbpool *p, int64_t deadline_ns, dbpool_error *e) {
    return fill_reserved(p, deadline_ns, false, NULL, e);
}

/* ---------------------------------------------------------------------- */
/* open / close                                                           */
/* ---------------------------------------------------------------------- */

int dbpool_open(dbpool **out, const char *url, const dbpool_options *o, dbpool_error *err) {
    dbpool__clearerr(err);
    if (!out)
        return dbpool__seterr(err, DBPOOL_EINVAL, "dbpool_open: out must not be NULL");
    *out = NULL;
    const dbpool_driver *driver = dbpool__driver_for_url(url, err);
    if (!driver)
        return err ? err->code : DBPOOL_EINVAL;

    dbpool *p = calloc(1, sizeof *p);
    if (!p)
        return dbpool__seterr(err, DBPOOL_ENOMEM, "out of memory");
    p->driver = driver;
    if (o)
        p->opt = *o;
    else
        dbpool_options_init(&p->opt);
    if (pthread_mutex_init(&p->lock, NULL) != 0) {
        free(p);
        return dbpool__seterr(err, DBPOOL_ENOMEM, "pthread_mutex_init failed");
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->maint_cond, &ca);
    pthread_condattr_destroy(&ca);

    char *name_from_url = NULL, *driver_url = NULL;
    int rc = dbpool__options_apply_url(&p->opt, url, &driver_url, &name_from_url, err);
    if (rc == DBPOOL_OK)
        rc = dbpool__options_validate(&p->opt, err);
    if (rc == DBPOOL_OK) {
        p->name = dbpool__strdup(p->opt.name ? p->opt.name : "default");
        p->init_sql = p->opt.init_sql ? dbpool__strdup(p->opt.init_sql) : NULL;
        if (!p->name || (p->opt.init_sql && !p->init_sql))
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
    p->settings.connect_timeout_ms = p->opt.connect_timeout_ms;
    p->settings.statement_timeout_ms = p->opt.statement_timeout_ms;
    p->stats.min_size = p->opt.min_size;
    p->stats.max_size = p->opt.max_size;

    /* Warm-up: min_size connections, each with the full retry budget; at
     * least one unless lazy_connect, so that a wrong URL, password or path
     * fails here with its real cause rather than at the first acquire. */
    int warm = p->opt.min_size > 0 ? p->opt.min_size : (p->opt.lazy_connect ? 0 : 1);
    for (int i = 0; rc == DBPOOL_OK && i < warm; i++) {
        lock(p);
        p->n_connecting++;
        unlock(p);
        int64_t deadline = dbpool__deadline_after_ms(p->opt.acquire_timeout_ms);
        rc = fill_reserved(p, deadline, false, NULL, err);
        if (rc != DBPOOL_OK)
            dbpool__prefix_err(err, "opening pool '%s' failed at connection %d of %d", p->name, i + 1, warm);
    }
    if (rc == DBPOOL_OK && p->opt.maintenance_interval_ms > 0)
        rc = dbpool__maint_start(p, err);
    if (rc != DBPOOL_OK) {
        dbpool__finish_err(p, err);
        if (err)
            dbpool__redact_url_secrets(err->message, sizeof err->message, url);
        p->closed = true;
        /* Close what warm-up opened. */
        while (p->idle_head) {
            dbpool_conn *c = p->idle_head;
            idle_remove(p, c);
            p->driver->disconnect(c->native);
            slot_put(p, c);
        }
        pool_free(p);
        return rc;
    }
    dbpool__log(p, DBPOOL_LOG_INFO, "opened (%s backend, min %d, max %d)", driver->name, p->opt.min_size,
                p->opt.max_size);
    *out = p;
    return DBPOOL_OK;
}

int dbpool_close(dbpool *p) {
    if (!p)
        return 0;
    dbpool__maint_stop(p);
    lock(p);
    if (p->closed) {
        unlock(p);
        return DBPOOL_EMISUSE;
    }
    p->closed = true;
    /* Hold the pool open while this function runs: a waiter or a release
     * on another thread may otherwise free it under us. */
    p->n_closing++;
    for (waiter *w = p->wait_head; w; w = w->next)
        pthread_cond_signal(&w->cond);
    dbpool_conn *list = p->idle_head;
    int n = 0;
    for (dbpool_conn *c = list; c; c = c->next) {
        c->state = CONN_CLOSING;
        n++;
    }
    p->idle_head = p->idle_tail = NULL;
    p->n_idle = 0;
    p->n_closing += n;
    int leased = p->n_leased;
    unlock(p);
    dbpool__log(p, DBPOOL_LOG_INFO, "closing (%d idle closed now, %d leases still out)", n, leased);
    while (list) {
        dbpool_conn *next = list->next;
        disconnect_and_account(p, list, DBPOOL_CLOSE_POOL_CLOSED);
        list = next;
    }
    lock(p);
    p->n_closing--;
    bool free_it = pool_can_free_locked(p);
    unlock(p);
    if (free_it)
        pool_free(p);
    return leased;
}

/* ---------------------------------------------------------------------- */
/* acquire                                                                */
/* ---------------------------------------------------------------------- */

static bool needs_validation(const dbpool *p, const dbpool_conn *c, int64_t now) {
    if (c->uses == 0)
        return false; /* fresh from connect */
    return p->opt.validation == DBPOOL_VALIDATE_ALWAYS ||
           (p->opt.validation == DBPOOL_VALIDATE_IF_IDLE &&
            now - c->last_used_ns >= p->opt.validation_window_ms * DBPOOL_NS_PER_MS);
}

/* Count a hand-out; lock held. */
static void count_checkout_locked(dbpool *p, dbpool_conn *c, int64_t now) {
    p->stats.acquired++;
    if (c->uses > 0)
        p->stats.reused++;
    c->uses++;
    c->acquired_ns = now;
}

/* The slow checks before a lease is handed out, outside the lock: lifetime
 * and validation. Returns false when the connection was closed instead (the
 * caller then tries again). */
static bool checkout_slow(dbpool *p, dbpool_conn *c) {
    int64_t now = dbpool__coarse_now_ns();
    if (now >= c->expires_ns) {
        dbpool__destroy_conn(p, c, DBPOOL_CLOSE_LIFETIME);
        return false;
    }
    if (needs_validation(p, c, now)) {
        /* Bounded by validation_timeout_ms alone: cutting it at the caller's
         * deadline would close healthy connections of callers in a hurry. */
        int64_t vdeadline = dbpool__now_ns() + p->opt.validation_timeout_ms * DBPOOL_NS_PER_MS;
        dbpool_error e;
        dbpool__clearerr(&e);
        if (p->driver->ping(c->native, vdeadline, &e) != DBPOOL_OK) {
            dbpool__finish_err(p, &e);
            dbpool__log(p, DBPOOL_LOG_WARN, "connection #%llu failed validation, replacing it: %s",
                        (unsigned long long)c->id, e.message);
            lock(p);
            p->stats.validation_failures++;
            unlock(p);
            dbpool__destroy_conn(p, c, DBPOOL_CLOSE_VALIDATION);
            return false;
        }
    }
    lock(p);
    count_checkout_locked(p, c, now);
    unlock(p);
    return true;
}

/* Lock held. */
static int timeout_error(dbpool *p, int64_t start, dbpool_error *err) {
    char last[sizeof err->message];
    last[0] = '\0';
    if (p->last_connect_error.code != DBPOOL_OK)
        snprintf(last, sizeof last, "; last connect error (%s): %s",
                 dbpool_errname(p->last_connect_error.code), p->last_connect_error.message);
    p->stats.timeouts++;
    return dbpool__seterr(err, DBPOOL_ETIMEDOUT,
                          "timed out after %lld ms waiting for a connection from pool '%s' "
                          "(%d in use, %d idle, %d connecting, %d waiting, max %d)%s",
                          (long long)((dbpool__now_ns() - start) / DBPOOL_NS_PER_MS), p->name, p->n_leased,
                          p->n_idle, p->n_connecting, p->n_waiting, p->opt.max_size, last);
}

static void cond_init_monotonic(pthread_cond_t *cv) {
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (pthread_cond_init(cv, &ca) != 0)
        abort();
    pthread_condattr_destroy(&ca);
}

/*
 * Wait in line until a connection is handed over, a place for a new one
 * opens, the deadline passes or the pool closes. Lock held on entry and on
 * return. Returns 1 with *handed set, 2 when a place was reserved for us,
 * 0 on timeout or close.
 */
static int wait_in_line(dbpool *p, int64_t deadline, dbpool_conn **handed) {
    waiter w;
    memset(&w, 0, sizeof w);
    cond_init_monotonic(&w.cond);
    waiter_enqueue(p, &w);
    struct timespec ts;
    ts.tv_sec = (time_t)(deadline / INT64_C(1000000000));
    ts.tv_nsec = (long)(deadline % INT64_C(1000000000));
    while (!w.conn && !w.may_connect && !p->closed) {
        int wrc = deadline == INT64_MAX ? pthread_cond_wait(&w.cond, &p->lock)
                                        : pthread_cond_timedwait(&w.cond, &p->lock, &ts);
        if (wrc == ETIMEDOUT)
            break;
    }
    waiter_dequeue(p, &w);
    pthread_cond_destroy(&w.cond);
    /* A hand-off or a reservation that raced with the timeout still counts:
     * dropping it would lose the connection or the place. */
    if (w.conn) {
        *handed = w.conn;
        return 1;
    }
    return w.may_connect ? 2 : 0;
}

static int acquire_impl(dbpool *p, int64_t timeout_ms, bool may_wait, dbpool_conn **out, dbpool_error *err) {
    dbpool__clearerr(err);
    if (!out)
        return dbpool__seterr(err, DBPOOL_EINVAL, "dbpool_acquire: out must not be NULL");
    *out = NULL;
    if (!p)
        return dbpool__seterr(err, DBPOOL_EINVAL, "dbpool_acquire: pool is NULL");
    if (timeout_ms < 0)
        timeout_ms = p->opt.acquire_timeout_ms;
    const int64_t start = dbpool__now_ns();
    const int64_t deadline = timeout_ms > (INT64_MAX - start) / DBPOOL_NS_PER_MS
                                 ? INT64_MAX
                                 : start + timeout_ms * DBPOOL_NS_PER_MS;
    int rc;

    lock(p);
    for (;;) {
        if (p->closed) {
            rc = dbpool__seterr(err, DBPOOL_ECLOSED, "pool '%s' is closed", p->name);
            break;
        }
        dbpool_conn *c = NULL;
        /* 1. An idle connection, when nobody waits ahead of us. */
        if (!p->wait_head && p->idle_head) {
            c = p->idle_head;
            idle_remove(p, c);
            c->state = CONN_LEASED;
            p->n_leased++;
            note_peak(p);
            int64_t now = dbpool__coarse_now_ns();
            if (now < c->expires_ns && !needs_validation(p, c, now)) {
                count_checkout_locked(p, c, now); /* the fast path: one lock round */
                unlock(p);
                *out = c;
                return DBPOOL_OK;
            }
        } else if (!p->wait_head && total_locked(p) < p->opt.max_size) {
            /* 2. Room for a new connection, when nobody waits ahead of us. */
            p->n_connecting++;
            unlock(p);
            /* A caller that will not wait still gets one connect attempt. */
            int64_t connect_deadline = timeout_ms == 0 ? dbpool__deadline_after_ms(p->opt.connect_timeout_ms)
                                                       : deadline;
            return fill_reserved(p, connect_deadline, true, out, err);
        } else {
            /* 3. Wait in line. */
            if (!may_wait) {
                rc = dbpool__seterr(err, DBPOOL_EBUSY,
                                    "no connection free in pool '%s' (%d in use, max %d) and "
                                    "try_acquire does not wait",
                                    p->name, p->n_leased, p->opt.max_size);
                break;
            }
            if (p->opt.max_waiters > 0 && p->n_waiting >= p->opt.max_waiters) {
                rc = dbpool__seterr(err, DBPOOL_EBUSY,
                                    "pool '%s' already has %d callers waiting (max_waiters %d): "
                                    "try again later or raise max_waiters",
                                    p->name, p->n_waiting, p->opt.max_waiters);
                break;
            }
            if (dbpool__now_ns() >= deadline) {
                rc = timeout_error(p, start, err);
                break;
            }
            int got = wait_in_line(p, deadline, &c);
            if (got == 2) {
                if (p->closed || dbpool__now_ns() >= deadline) {
                    p->n_connecting--; /* give the place to the next in line */
                    wake_for_capacity_locked(p);
                    continue;
                }
                unlock(p);
                return fill_reserved(p, deadline, true, out, err);
            }
            if (got == 0) {
                if (p->closed)
                    continue; /* reported at the top */
                rc = timeout_error(p, start, err);
                break;
            }
        }
        /* A connection that needs its lifetime or validation checked. */
        unlock(p);
        if (checkout_slow(p, c)) {
            *out = c;
            return DBPOOL_OK;
        }
        lock(p);
    }
    bool free_it = pool_can_free_locked(p);
    unlock(p);
    if (free_it)
        pool_free(p);
    return rc;
}

int dbpool_acquire(dbpool *p, int64_t timeout_ms, dbpool_conn **out, dbpool_error *err) {
    return acquire_impl(p, timeout_ms, true, out, err);
}

int dbpool_try_acquire(dbpool *p, dbpool_conn **out, dbpool_error *err) {
    return acquire_impl(p, 0, false, out, err);
}

/* ---------------------------------------------------------------------- */
/* release / discard                                                      */
/* ---------------------------------------------------------------------- */

/* Take idle connections past idle_timeout (oldest first, from the tail of
 * the LIFO list) above min_size, and close them outside the lock. Called
 * with the lock held; returns them as a list to close. */
static dbpool_conn *collect_idle_expired_locked(dbpool *p, int64_t now) {
    if (p->opt.idle_timeout_ms <= 0)
        return NULL;
    int64_t limit = p->opt.idle_timeout_ms * DBPOOL_NS_PER_MS;
    dbpool_conn *list = NULL;
    while (p->idle_tail && total_locked(p) > p->opt.min_size &&
           now - p->idle_tail->last_used_ns >= limit) {
        dbpool_conn *c = p->idle_tail;
        idle_remove(p, c);
        c->state = CONN_CLOSING;
        p->n_closing++;
        c->next = list;
        list = c;
    }
    return list;
}

void dbpool__close_closing_list(dbpool *p, dbpool_conn *list, dbpool_close_reason why) {
    while (list) {
        dbpool_conn *next = list->next;
        dbpool__log(p, DBPOOL_LOG_DEBUG, "closing connection #%llu (%s)", (unsigned long long)list->id,
                    dbpool_close_reason_name(why));
        disconnect_and_account(p, list, why);
        list = next;
    }
}

static int release_impl(dbpool_conn *c, bool discard) {
    if (!c || c->magic != DBPOOL_CONN_MAGIC)
        return DBPOOL_EMISUSE;
    dbpool *p = c->pool;
    lock(p);
    if (c->state != CONN_LEASED) {
        unlock(p);
        return DBPOOL_EMISUSE;
    }
    int need = (discard || c->broken) ? -1 : p->driver->needs_reset(c->native);
    int64_t now = dbpool__coarse_now_ns();
    if (need == 0 && !p->closed && now < c->expires_ns) {
        /* Fast path: clean connection straight back. */
        p->n_leased--;
        publish_locked(p, c, now);
        dbpool_conn *expired = p->idle_tail != c ? collect_idle_expired_locked(p, now) : NULL;
        unlock(p);
        if (expired)
            dbpool__close_closing_list(p, expired, DBPOOL_CLOSE_IDLE_TIMEOUT);
        return DBPOOL_OK;
    }
    c->state = CONN_RETURNING;
    unlock(p);

    dbpool_close_reason why = DBPOOL_CLOSE_POOL_CLOSED;
    bool keep = false;
    if (discard) {
        why = DBPOOL_CLOSE_DISCARDED;
    } else if (need < 0) {
        why = DBPOOL_CLOSE_BROKEN;
    } else if (now >= c->expires_ns) {
        why = DBPOOL_CLOSE_LIFETIME;
    } else if (need == 1) {
        dbpool_error e;
        dbpool__clearerr(&e);
        int64_t deadline = dbpool__now_ns() + p->opt.validation_timeout_ms * DBPOOL_NS_PER_MS;
        int rrc = p->driver->reset(c->native, deadline, &e);
        if (rrc == DBPOOL_OK && p->driver->reset_clears_session && p->init_sql)
            rrc = p->driver->exec(c->native, p->init_sql, NULL, 0, NULL, &e);
        if (rrc == DBPOOL_OK) {
            keep = true;
            lock(p);
            p->stats.rollbacks++;
            unlock(p);
        } else {
            dbpool__finish_err(p, &e);
            dbpool__log(p, DBPOOL_LOG_WARN, "reset of connection #%llu failed, closing it: %s",
                        (unsigned long long)c->id, e.message);
            why = DBPOOL_CLOSE_RESET_FAILED;
        }
    } else {
        keep = true; /* clean, but the pool is closed: handled below */
    }
    lock(p);
    if (keep && !p->closed) {
        p->n_leased--;
        publish_locked(p, c, dbpool__coarse_now_ns());
        unlock(p);
        return DBPOOL_OK;
    }
    if (p->closed && (keep || why == DBPOOL_CLOSE_POOL_CLOSED))
        why = DBPOOL_CLOSE_POOL_CLOSED;
    unlock(p);
    dbpool__destroy_conn(p, c, why);
    return DBPOOL_OK;
}

int dbpool_release(dbpool_conn *c) { return release_impl(c, false); }
int dbpool_discard(dbpool_conn *c) { return release_impl(c, true); }

void *dbpool_conn_native(dbpool_conn *c) {
    if (!c || c->magic != DBPOOL_CONN_MAGIC || c->state != CONN_LEASED)
        return NULL;
    return c->native;
}

const char *dbpool_backend(const dbpool *p) { return p ? p->driver->name : NULL; }
const char *dbpool_name(const dbpool *p) { return p ? p->name : NULL; }

/* ---------------------------------------------------------------------- */
/* shrink                                                                 */
/* ---------------------------------------------------------------------- */

int dbpool_shrink(dbpool *p, int target_idle) {
    if (!p)
        return DBPOOL_EINVAL;
    if (target_idle < 0)
        return DBPOOL_EINVAL;
    lock(p);
    if (p->closed) {
        unlock(p);
        return DBPOOL_ECLOSED;
    }
    dbpool_conn *list = NULL;
    int n = 0;
    /* Oldest-used first: the tail of the LIFO list. */
    while (p->n_idle > target_idle && p->idle_tail) {
        dbpool_conn *c = p->idle_tail;
        idle_remove(p, c);
        c->state = CONN_CLOSING;
        p->n_closing++;
        c->next = list;
        list = c;
        n++;
    }
    unlock(p);
    dbpool__close_closing_list(p, list, DBPOOL_CLOSE_SHRINK);
    return n;
}

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
    CHECK_INVARIANT(p);
    *out = p->stats;
    out->idle = p->n_idle;
    out->in_use = p->n_leased;
    out->connecting = p->n_connecting;
    out->waiting = p->n_waiting;
    out->total = total_locked(p);
    out->min_size = p->opt.min_size;
    out->max_size = p->opt.max_size;
    unlock(p);
}
