/* live_pools.c — the pools that are open and not yet closed, so that a
 * second dbpool_close of the same pointer is refused (DBPOOL_EMISUSE)
 * instead of touching freed memory. Only open and close come here: the
 * cost is one global lock each, and nothing on the lease path.
 *
 * It cannot tell a closed pool from a new one that malloc gave the same
 * address: closing "twice" then closes the new pool, as free() twice can
 * free someone else's block. The common mistake, an error path that
 * closes a pool already closed, is caught. */
#include "pool_internal.h"

#include <pthread.h>

static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static dbpool *live_head;
static atomic_bool live_watched;
static _Atomic uint64_t live_closes; /* pools taken out of the list so far */

/* A fork while another thread holds the lock must not leave the child's
 * copy locked: closing a pool in the child (which touches nothing else)
 * would hang. */
static void before_fork(void) { pthread_mutex_lock(&live_lock); }
static void after_fork(void) { pthread_mutex_unlock(&live_lock); }

int dbpool__live_watch(void) {
    return dbpool__atfork_once(&live_watched, before_fork, after_fork, after_fork);
}

void dbpool__live_add(dbpool *p) {
    pthread_mutex_lock(&live_lock);
    p->live_next = live_head;
    live_head = p;
    pthread_mutex_unlock(&live_lock);
}

bool dbpool__live_take(dbpool *p) {
    pthread_mutex_lock(&live_lock);
    dbpool **at = &live_head;
    while (*at && *at != p)
        at = &(*at)->live_next;
    bool found = *at != NULL;
    if (found) {
        *at = p->live_next;
        p->live_next = NULL;
        atomic_fetch_add_explicit(&live_closes, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&live_lock);
    return found;
}

uint64_t dbpool__live_closes(void) { return atomic_load_explicit(&live_closes, memory_order_relaxed); }

bool dbpool__live_has(const dbpool *p, uint64_t serial) {
    pthread_mutex_lock(&live_lock);
    const dbpool *x = live_head;
    while (x && x != p)
        x = x->live_next;
    bool found = x && x->serial == serial; /* open: its memory is there to read */
    pthread_mutex_unlock(&live_lock);
    return found;
}
