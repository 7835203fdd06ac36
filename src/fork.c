/* fork.c — detecting a pool used across fork(). A child shares the
 * parent's sockets: if it used or closed a pooled connection it would
 * corrupt the parent's session (libpq's PQfinish sends a Terminate on the
 * shared socket). Every pool remembers the process generation that opened
 * it; a child's generation differs, and the pool refuses to work there. */
#include "pool_internal.h"

#include <pthread.h>
#include <stdatomic.h>

atomic_uint dbpool__fork_gen;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void in_child(void) {
    atomic_fetch_add_explicit(&dbpool__fork_gen, 1, memory_order_relaxed);
    dbpool__metrics_forked_child();
}
static void install(void) { pthread_atfork(NULL, NULL, in_child); }

void dbpool__fork_watch(void) { pthread_once(&once, install); }
