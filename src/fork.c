/* fork.c — detecting a pool used across fork(). A child shares the
 * parent's sockets: if it used or closed a pooled connection it would
 * corrupt the parent's session (libpq's PQfinish sends a Terminate on the
 * shared socket). Every pool remembers the process generation that opened
 * it; a child's generation differs, and the pool refuses to work there.
 * Also: the pool's threads start with the application's signals blocked. */
#include "pool_internal.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>

atomic_uint dbpool__fork_gen;

static void in_child(void) {
    atomic_fetch_add_explicit(&dbpool__fork_gen, 1, memory_order_relaxed);
    dbpool__metrics_forked_child();
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

/* The pool's own threads (connectors, maintenance, keepalive) block every
 * signal but the ones a fault raises in the thread itself (and SIGPROF). A thread
 * inherits the mask of the one that created it, the caller of
 * dbpool_open: a signal the process receives (SIGINT, SIGTERM, SIGCHLD, a
 * timer's SIGALRM) could then be delivered to a pool thread, where the
 * application's handler ran on a thread it does not know, a sigwait thread
 * never saw it (the application blocked it in its own threads, after the
 * pool was opened: the default action, ending the process, ran instead),
 * and the interrupted thread was a pool thread, not the one the
 * application meant to wake. */
int dbpool__thread_start(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg) {
    sigset_t all, old;
    sigfillset(&all);
    /* A fault's, and SIGPROF: a sampling profiler (ITIMER_PROF) samples
     * whichever thread runs, the pool's too. */
    static const int kept[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS, SIGPROF};
    for (size_t i = 0; i < sizeof kept / sizeof kept[0]; i++)
        sigdelset(&all, kept[i]);
    int mrc = pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(t, attr, fn, arg);
    if (mrc == 0)
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}
