/* maint.c — the pool's maintenance thread: closes idle connections past
 * idle_timeout (down to min_size), retires connections past their lifetime,
 * pings idle connections every keepalive_ms, and refills to min_size. It
 * takes connections out of the idle list under the lock and does its I/O
 * outside it; it never touches a leased connection. */
#include "pool_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

/* Lock held. Move idle connections that need work onto two lists. */
static void pick_locked(dbpool *p, int64_t now, dbpool_conn **expired_list, dbpool_conn **idle_list,
                        dbpool_conn **ping) {
    int64_t idle_limit = p->opt.idle_timeout_ms * DBPOOL_NS_PER_MS;
    int64_t keepalive = p->opt.keepalive_ms * DBPOOL_NS_PER_MS;
    dbpool_conn *c = p->idle_tail;
    while (c) {
        dbpool_conn *prev = c->prev;
        int total = p->n_idle + p->n_leased + p->n_connecting;
        bool expired = now >= c->expires_ns;
        bool idle_out = idle_limit > 0 && now - c->last_used_ns >= idle_limit && total > p->opt.min_size;
        bool due_ping = keepalive > 0 && now - c->last_used_ns >= keepalive;
        if (expired || idle_out || due_ping) {
            /* Out of the idle list; counted as closing, or as leased to
             * maintenance while it pings. */
            if (c->prev)
                c->prev->next = c->next;
            else
                p->idle_head = c->next;
            if (c->next)
                c->next->prev = c->prev;
            else
                p->idle_tail = c->prev;
            p->n_idle--;
            if (expired || idle_out) {
                c->state = CONN_CLOSING;
                p->n_closing++;
                dbpool_conn **list = expired ? expired_list : idle_list;
                c->prev = NULL;
                c->next = *list;
                *list = c;
            } else {
                c->state = CONN_LEASED; /* held by maintenance for the ping */
                p->n_leased++;
                c->prev = NULL;
                c->next = *ping;
                *ping = c;
            }
        }
        c = prev;
    }
}

void dbpool__maint_pass(dbpool *p) {
    dbpool_conn *expired = NULL, *idle_out = NULL, *ping = NULL;
    pthread_mutex_lock(&p->lock);
    if (p->closed) {
        pthread_mutex_unlock(&p->lock);
        return;
    }
    pick_locked(p, dbpool__coarse_now_ns(), &expired, &idle_out, &ping);
    pthread_mutex_unlock(&p->lock);
    dbpool__close_closing_list(p, expired, DBPOOL_CLOSE_LIFETIME);
    dbpool__close_closing_list(p, idle_out, DBPOOL_CLOSE_IDLE_TIMEOUT);
    while (ping) {
        dbpool_conn *next = ping->next;
        ping->next = NULL;
        dbpool_error e;
        dbpool__clearerr(&e);
        int64_t deadline = dbpool__deadline_after_ms(p->opt.validation_timeout_ms);
        if (p->driver->ping(ping->native, deadline, &e) == DBPOOL_OK) {
            ping->state = CONN_LEASED;
            /* Back as if released clean: keeps its place in LIFO order as
             * the most recently used, which is fine for a fresh ping. */
            dbpool_release(ping);
        } else {
            dbpool__finish_err(p, &e);
            dbpool__log(p, DBPOOL_LOG_WARN, "keepalive ping of connection #%llu failed, closing it: %s",
                        (unsigned long long)ping->id, e.message);
            dbpool__destroy_conn(p, ping, DBPOOL_CLOSE_BROKEN);
        }
        ping = next;
    }

    /* Refill to min_size, one connection at a time, outside the lock. */
    for (;;) {
        pthread_mutex_lock(&p->lock);
        int total = p->n_idle + p->n_leased + p->n_connecting;
        bool need = !p->closed && !p->maint_stop && total < p->opt.min_size;
        if (need)
            p->n_connecting++;
        pthread_mutex_unlock(&p->lock);
        if (!need)
            break;
        dbpool_error e;
        dbpool__clearerr(&e);
        if (dbpool__open_one_idle(p, dbpool__deadline_after_ms(p->opt.connect_timeout_ms), &e) != DBPOOL_OK)
            break; /* logged and counted by the connect path; try next pass */
    }
}

static void *maint_main(void *arg) {
    dbpool *p = arg;
    pthread_mutex_lock(&p->lock);
    while (!p->maint_stop) {
        int64_t wake = dbpool__deadline_after_ms(p->opt.maintenance_interval_ms);
        struct timespec ts = {(time_t)(wake / INT64_C(1000000000)), (long)(wake % INT64_C(1000000000))};
        while (!p->maint_stop) {
            if (pthread_cond_timedwait(&p->maint_cond, &p->lock, &ts) == ETIMEDOUT)
                break;
        }
        if (p->maint_stop)
            break;
        pthread_mutex_unlock(&p->lock);
        dbpool__maint_pass(p);
        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

int dbpool__maint_start(dbpool *p, dbpool_error *e) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    int rc = pthread_create(&p->maint_thread, &attr, maint_main, p);
    pthread_attr_destroy(&attr);
    if (rc != 0)
        return dbpool__seterr(e, DBPOOL_ENOMEM, "could not start the maintenance thread (errno %d)", rc);
    p->maint_running = true;
    return DBPOOL_OK;
}

void dbpool__maint_stop(dbpool *p) {
    pthread_mutex_lock(&p->lock);
    bool running = p->maint_running;
    p->maint_stop = true;
    pthread_cond_broadcast(&p->maint_cond);
    pthread_mutex_unlock(&p->lock);
    if (!running)
        return;
    pthread_join(p->maint_thread, NULL);
    pthread_mutex_lock(&p->lock);
    p->maint_running = false;
    pthread_mutex_unlock(&p->lock);
}
