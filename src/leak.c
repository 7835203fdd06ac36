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

/* What stands for the frames that do not fit. */
#define MORE_FRAMES "  ...\n"

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
    /* Whole frames only: one cut short would end in half an address (or
     * half a name), which no one can use. A frame that does not fit ends
     * the list with MORE_FRAMES, for which room is kept. */
    size_t used = 0;
    for (int i = 0; i < n; i++) {
        char line[512];
        int w = names ? snprintf(line, sizeof line, "  #%d %s\n", i, names[i])
                      : snprintf(line, sizeof line, "  #%d [%p]\n", i, t->frames[skip + i]);
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
    free(names);
}
