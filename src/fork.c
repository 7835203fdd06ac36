/* fork.c — detecting a pool used across fork(). A child shares the
 * parent's sockets: if it used or closed a pooled connection it would
 * corrupt the parent's session (libpq's PQfinish sends a Terminate on the
 * shared socket). Every pool remembers the process generation that opened
 * it; a child's generation differs, and the pool refuses to work there. */
#include "pool_internal.h"

#include "fast_clock.h"

#include <pthread.h>
#include <stdatomic.h>

atomic_uint dbpool__fork_gen;

static void in_child(void) {
    atomic_fetch_add_explicit(&dbpool__fork_gen, 1, memory_order_relaxed);
    dbpool__metrics_forked_child();
    dbpool__fast_clock_forked_child();
}

/* Not pthread_once: pthread_atfork can fail (ENOMEM), and a pool opened
 * without the handler would be used by a child as if it were its own.
 * The failure is dbpool_open's, and the next open tries again. */
static pthread_mutex_t install_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_bool installed;

int dbpool__atfork_once(atomic_bool *done, void (*prepare)(void), void (*parent)(void), void (*child)(void)) {
    if (atomic_load_explicit(done, memory_order_acquire))
        return 0;
    pthread_mutex_lock(&install_lock);
    int rc = 0;
    if (!atomic_load_explicit(done, memory_order_relaxed)) {
        rc = pthread_atfork(prepare, parent, child);
        if (rc == 0)
            atomic_store_explicit(done, true, memory_order_release);
    }
    pthread_mutex_unlock(&install_lock);
    return rc;
}

int dbpool__fork_watch(void) { return dbpool__atfork_once(&installed, NULL, NULL, in_child); }
