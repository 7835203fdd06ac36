/*
 * pool_internal.h — the pool's and the lease's structures, shared by the
 * files of the core (pool.c, options.c, query.c, stats.c, maint.c).
 * Nothing outside src/ sees them.
 */
#ifndef DBPOOL_POOL_INTERNAL_H
#define DBPOOL_POOL_INTERNAL_H

#include "driver.h"
#include "internal.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

/* A lease's magic while its struct belongs to a pool; any other value means
 * the pointer is not a dbpool_conn (or the pool is gone). */
#define DBPOOL_CONN_MAGIC 0x6462636eu /* "dbcn" */

/* State equals list membership: every connection is in exactly one state,
 * and only the functions of pool.c move it, under the pool lock. */
typedef enum {
    CONN_FREE = 0,   /* struct on the free list, no connection behind it */
    CONN_IDLE,       /* on the idle list (LIFO) */
    CONN_LEASED,     /* held by a caller (or being checked before hand-out) */
    CONN_RETURNING,  /* released, being reset outside the lock; counts as leased */
    CONN_CLOSING     /* being disconnected outside the lock; counts in nothing */
} conn_state;

struct dbpool_conn {
    uint32_t magic;
    conn_state state;
    bool broken;            /* a query error said the connection is dead */
    dbpool *pool;
    void *native;
    uint64_t id;            /* 1, 2, ... in order of creation */
    int64_t created_ns;
    int64_t expires_ns;     /* created + jittered lifetime; INT64_MAX = never */
    int64_t last_used_ns;   /* when it last became idle */
    int64_t acquired_ns;    /* when the current lease began */
    uint64_t uses;          /* hand-outs so far */
    struct dbpool_conn *prev, *next; /* idle list, or free list (next only) */
};

typedef struct waiter waiter;

struct dbpool {
    pthread_mutex_t lock;
    const dbpool_driver *driver;
    void *driver_cfg;
    const char *const *secrets;
    dbpool_connect_settings settings;
    dbpool_options opt;   /* validated copy; strings point into the copies below */
    char *name;
    char *init_sql;

    /* --- everything below is guarded by `lock` --- */
    bool closed;
    dbpool_conn *idle_head, *idle_tail; /* head = most recently used (LIFO) */
    dbpool_conn *free_slots;
    waiter *wait_head, *wait_tail;
    int n_idle, n_leased, n_connecting, n_waiting, n_closing;
    uint64_t next_conn_id;
    dbpool_error last_connect_error; /* redacted; for timeout messages */
    int64_t last_connect_error_ns;
    dbpool_stats stats;  /* counters; the gauges are filled on read */

    /* maintenance thread */
    bool maint_running;
    bool maint_stop;
    pthread_t maint_thread;
    pthread_cond_t maint_cond;
};

/* Log through the user's callback (never under the pool lock), redacted. */
void dbpool__log(dbpool *p, dbpool_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Redact an error that is about to leave the library. */
void dbpool__finish_err(const dbpool *p, dbpool_error *e);

/* options.c: defaults, pool_* URL keys, validation. */
int dbpool__options_apply_url(dbpool_options *o, const char *url, char **driver_url,
                              char **name_copy, dbpool_error *e);
int dbpool__options_validate(const dbpool_options *o, dbpool_error *e);

/* maint.c */
int dbpool__maint_start(dbpool *p, dbpool_error *e);
void dbpool__maint_stop(dbpool *p);
/* One maintenance pass: reap idle connections past idle_timeout above
 * min_size, retire expired ones, ping for keepalive, refill to min_size. */
void dbpool__maint_pass(dbpool *p);

/* pool.c internals used by maint.c */
int dbpool__open_one_idle(dbpool *p, int64_t deadline_ns, dbpool_error *e);
void dbpool__destroy_conn(dbpool *p, dbpool_conn *c, dbpool_close_reason why);
/* Close a list (linked by next) of connections in CONN_CLOSING state that
 * the caller took out of the idle list (n_closing counted). */
void dbpool__close_closing_list(dbpool *p, dbpool_conn *list, dbpool_close_reason why);

/* Cheap coarse monotonic time for bookkeeping (ms resolution is enough). */
int64_t dbpool__coarse_now_ns(void);
/* Thread-local xorshift; not for secrets. */
uint64_t dbpool__random(void);

#endif
