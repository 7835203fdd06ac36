/* leak.c — where a lease was taken: captured with backtrace() when leak
 * detection is on (about a microsecond), symbolised only when reported. */
#include "pool_internal.h"

#include <execinfo.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((noinline)) void dbpool__trace_capture(lease_trace *t) {
    t->depth = backtrace(t->frames, DBPOOL_LEAK_FRAMES);
    t->thread = (unsigned long)pthread_self();
}

void dbpool__trace_format(const lease_trace *t, char *buf, size_t cap, int max_frames) {
    if (cap == 0)
        return;
    buf[0] = '\0';
    /* Skip dbpool__trace_capture and the public function that called it
     * (dbpool_acquire or dbpool_try_acquire): frame 2 is the caller. */
    int skip = t->depth > 2 ? 2 : 0;
    int n = t->depth - skip;
    if (max_frames > 0 && n > max_frames)
        n = max_frames;
    if (n <= 0)
        return;
    char **names = backtrace_symbols((void *const *)(t->frames + skip), n);
    size_t used = 0;
    for (int i = 0; i < n && used + 1 < cap; i++) {
        int w = snprintf(buf + used, cap - used, "  #%d %s\n", i, names ? names[i] : "?");
        if (w < 0)
            break;
        used += (size_t)w;
    }
    free(names);
}
