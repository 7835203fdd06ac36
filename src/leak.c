/* leak.c — where a lease was taken: captured with backtrace() when leak
 * detection is on (about a microsecond), symbolised only when reported.
 * Where <execinfo.h> is missing (musl, some BSDs: DBPOOL_HAVE_EXECINFO
 * unset by CMake), the holder thread is recorded without its stack. */
#include "pool_internal.h"

#ifdef DBPOOL_HAVE_EXECINFO
#include <execinfo.h>
#endif
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __linux__
#include <sys/syscall.h>
#include <unistd.h>
#endif

/* What a report shows for the stack of a build without backtrace(). */
#define NO_STACK "  (stack not available on this platform: dbpool was built without <execinfo.h>)"

/* pthread_self() is reused once a thread has ended; the kernel's id tells
 * two holders apart (and names the thread in ps, top, gdb). The system
 * call costs as much as a whole cycle of acquire and release (~150 ns):
 * kept per thread, and taken again in a forked child (whose one thread
 * has an id of its own), which dbpool__fork_generation tells. 0 off
 * Linux. */
#ifdef __linux__
static _Thread_local long tl_tid;
static _Thread_local unsigned tl_tid_gen;
#endif

static long own_tid(void) {
#ifdef __linux__
    unsigned gen = dbpool__fork_generation();
    if (tl_tid == 0 || tl_tid_gen != gen) {
        tl_tid = (long)syscall(SYS_gettid);
        tl_tid_gen = gen;
    }
    return tl_tid;
#else
    return 0;
#endif
}

/* Called by dbpool_acquire, dbpool_try_acquire and dbpool_manager_acquire
 * only. The frames kept
 * start at their caller: the frames above it are found by the return
 * address into the public function, not by counting, since how many
 * there are depends on the build (a sanitizer's interceptor of backtrace()
 * adds one, so does a preloaded one, and a compiler may split a function
 * in two). */
__attribute__((noinline)) void dbpool__trace_capture(lease_trace *t) {
    t->thread = (unsigned long)pthread_self();
    t->tid = own_tid();
#ifndef DBPOOL_HAVE_EXECINFO
    /* One frame that is none: the lease is traced (reports name the
     * holder thread), and dbpool__trace_format says why there is no stack. */
    t->frames[0] = NULL;
    t->depth = 1;
#else
    void *into_public = __builtin_extract_return_addr(__builtin_return_address(0));
    int depth = backtrace(t->frames, DBPOOL_LEAK_FRAMES);
    /* Without that address among the frames: the usual two (this
     * function and the public one). */
    int skip = depth > 2 ? 2 : 0;
    for (int i = 0; i < depth; i++) {
        if (t->frames[i] == into_public) {
            skip = i + 1;
            break;
        }
    }
    memmove(t->frames, t->frames + skip, (size_t)(depth - skip) * sizeof t->frames[0]);
    t->depth = depth - skip;
#endif
}

void dbpool__trace_holder(const lease_trace *t, char *buf, size_t cap) {
    if (t->tid > 0)
        snprintf(buf, cap, "thread %lu (tid %ld)", t->thread, t->tid);
    else
        snprintf(buf, cap, "thread %lu", t->thread);
}

void dbpool__trace_store_locked(dbpool_conn *c, const lease_trace *t) {
    if (t) {
        if (!c->trace)
            c->trace = malloc(sizeof *c->trace);
        if (c->trace)
            *c->trace = *t;
    } else if (c->trace) {
        c->trace->depth = 0;
    }
}

/* What stands for the frames that do not fit. */
#define MORE_FRAMES "  ...\n"

void dbpool__trace_format(const lease_trace *t, char *buf, size_t cap, int max_frames) {
    if (cap == 0)
        return;
    buf[0] = '\0';
    /* The first frame is the caller of dbpool_acquire or
     * dbpool_try_acquire (dbpool__trace_capture). */
    int n = t->depth;
    if (max_frames > 0 && n > max_frames)
        n = max_frames;
    if (n <= 0)
        return;
#ifndef DBPOOL_HAVE_EXECINFO
    snprintf(buf, cap, "%s", NO_STACK);
#else
    char **names = backtrace_symbols((void *const *)t->frames, n);
    /* Whole frames only: one cut short would end in half an address (or
     * half a name), which no one can use. A frame that does not fit ends
     * the list with MORE_FRAMES, for which room is kept. */
    size_t used = 0;
    for (int i = 0; i < n; i++) {
        char line[512];
        int w = names ? snprintf(line, sizeof line, "  #%d %s\n", i, names[i])
                      : snprintf(line, sizeof line, "  #%d [%p]\n", i, t->frames[i]);
        if (w < 0)
            break;
        if ((size_t)w >= sizeof line) { /* a name longer than a line: its start, marked */
            memcpy(line + sizeof line - 5, "...\n", 5);
            w = (int)sizeof line - 1;
        }
        size_t keep = i + 1 < n ? sizeof MORE_FRAMES - 1 : 0;
        if (used + (size_t)w + keep + 1 > cap) {
            if (used + sizeof MORE_FRAMES <= cap) {
                memcpy(buf + used, MORE_FRAMES, sizeof MORE_FRAMES);
                used += sizeof MORE_FRAMES - 1;
            }
            break;
        }
        memcpy(buf + used, line, (size_t)w + 1);
        used += (size_t)w;
    }
    /* Lines between, not after: a log line or an error message does not
     * end in a newline (a logger adding its own would print an empty line). */
    if (used > 0 && buf[used - 1] == '\n')
        buf[used - 1] = '\0';
    free(names);
#endif
}
