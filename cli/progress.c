/*
 * progress.c — the live line `dbpool bench` redraws on a terminal:
 *   "  2.3 s   412345 ops/s   p99 acquire 0.004 ms   in use 8/8   waiting 3"
 * Nothing is drawn when stderr is not a terminal (a log file or a pipe
 * would fill with carriage returns).
 */
#include "cli.h"

#include <stdio.h>
#include <unistd.h>

#define REDRAW_NS (250 * 1000000LL)

void cli_progress_init(cli_progress *pr, int64_t start_ns) {
    pr->enabled = isatty(STDERR_FILENO) == 1;
    pr->last_ns = start_ns;
    pr->last_ops = 0;
    pr->last_len = 0;
}

void cli_progress_update(cli_progress *pr, dbpool *p, int64_t start_ns, uint64_t ops) {
    if (!pr->enabled)
        return;
    int64_t now = cli_now_ns();
    if (now - pr->last_ns < REDRAW_NS)
        return;
    /* The rate over the last redraw interval, not since the start: a stall
     * shows at once. */
    double rate = (double)(ops - pr->last_ops) / ((double)(now - pr->last_ns) / 1e9);
    pr->last_ns = now;
    pr->last_ops = ops;
    char line[160];
    int n;
    if (p) {
        dbpool_stats s;
        dbpool_get_stats(p, &s);
        n = snprintf(line, sizeof line,
                     "%6.1f s %10.0f ops/s   p99 acquire %.3f ms   in use %d/%d   waiting %d",
                     (double)(now - start_ns) / 1e9, rate, s.acquire_wait.p99_ms, s.in_use, s.cap, s.waiting);
    } else {
        n = snprintf(line, sizeof line, "%6.1f s %10.0f ops/s", (double)(now - start_ns) / 1e9, rate);
    }
    if (n < 0)
        return;
    if (n >= (int)sizeof line)
        n = (int)sizeof line - 1;
    /* Pad over the tail of a longer previous line. */
    int pad = pr->last_len > n ? pr->last_len - n : 0;
    fprintf(stderr, "\r%s%*s", line, pad, "");
    fflush(stderr);
    pr->last_len = n;
}

void cli_progress_clear(cli_progress *pr) {
    if (!pr->enabled || pr->last_len == 0)
        return;
    fprintf(stderr, "\r%*s\r", pr->last_len, "");
    fflush(stderr);
    pr->last_len = 0;
}
