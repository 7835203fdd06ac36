/* pool_threads.c — starting the pool's own threads (connectors,
 * maintenance, keepalive) as guests in the application's process. */
#include "pool_internal.h"

#include <pthread.h>
#include <signal.h>

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
