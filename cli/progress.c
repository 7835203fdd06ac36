/*
 * progress.c — the live line `dbpool bench` redraws on a terminal:
 *   "  2.3 s   412345 ops/s   p99 acquire 0.004 ms   in use 8/8   waiting 3"
 * Nothing is drawn when stderr is not a terminal (a log file or a pipe
 * would fill with carriage returns). The pool's log lines (--verbose),
 * written from its threads, erase the line first; the next redraw brings
 * it back.
 */
#include "cli.h"

#include <pthread.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define REDRAW_NS (250 * 1000000LL)

/* Guards what is on the terminal's last row (a progress's last_len and
 * enabled) between the main thread and the pool's logging threads. Never
 * held while calling into the pool. */
static pthread_mutex_t draw_mu = PTHREAD_MUTEX_INITIALIZER;

/* The widest line that stays on one row of the terminal, or a large
 * number when its width is unknown. A line as wide as the terminal, or
 * wider, wraps, and "\r" then returns to the start of its last row only:
 * every redraw would leave a row behind, above the summary too. */
static int max_line(void) {
    struct winsize ws;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1)
        return ws.ws_col - 1;
    return 1 << 20;
}

void cli_progress_init(cli_progress *pr, int64_t start_ns) {
    pthread_mutex_lock(&draw_mu);
    pr->enabled = isatty(STDERR_FILENO) == 1;
    pr->last_ns = start_ns;
    pr->last_ops = 0;
    pr->last_len = 0;
    pthread_mutex_unlock(&draw_mu);
}

/* Append "   field" to line (of length *n) if the whole of it fits within
 * width; false, and nothing appended, if it does not. */
static bool add_field(char *line, size_t cap, int *n, int width, const char *field) {
    int len = snprintf(NULL, 0, "   %s", field);
    if (len < 0 || *n + len > width || (size_t)(*n + len) >= cap)
        return false;
    snprintf(line + *n, cap - (size_t)*n, "   %s", field);
    *n += len;
    return true;
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
    int width = max_line();
    char line[160];
    int n = snprintf(line, sizeof line, "%6.1f s %10.0f ops/s", (double)(now - start_ns) / 1e9, rate);
    if (n < 0)
        return;
    if (n >= (int)sizeof line)
        n = (int)sizeof line - 1;
    if (n > width) {
        n = width;
        line[n] = '\0';
    }
    if (p) {
        /* Whole fields only, as many as fit: a figure cut short ("in use
         * 1" of "in use 10/10") would read as another figure. */
        dbpool_stats s;
        dbpool_get_stats(p, &s);
        char f[3][64];
        snprintf(f[0], sizeof f[0], "p99 acquire %.3f ms", s.acquire_wait.p99_ms);
        snprintf(f[1], sizeof f[1], "in use %d/%d", s.in_use, s.cap);
        snprintf(f[2], sizeof f[2], "waiting %d", s.waiting);
        for (int i = 0; i < 3 && add_field(line, sizeof line, &n, width, f[i]); i++) {
        }
    }
    pthread_mutex_lock(&draw_mu);
    /* Pad over the tail of a longer previous line (of a wider terminal). */
    int pad = (pr->last_len < width ? pr->last_len : width) - n;
    if (pad < 0)
        pad = 0;
    fprintf(stderr, "\r%s%*s", line, pad, "");
    fflush(stderr);
    pr->last_len = n;
    pthread_mutex_unlock(&draw_mu);
}

/* Erase the line, under draw_mu. */
static void erase_locked(cli_progress *pr) {
    if (!pr->enabled || pr->last_len == 0)
        return;
    int width = max_line();
    fprintf(stderr, "\r%*s\r", pr->last_len < width ? pr->last_len : width, "");
    fflush(stderr);
    pr->last_len = 0;
}

void cli_progress_clear(cli_progress *pr) {
    pthread_mutex_lock(&draw_mu);
    erase_locked(pr);
    pthread_mutex_unlock(&draw_mu);
}

void cli_progress_log(void *user, dbpool_log_level level, const char *message) {
    cli_progress *pr = user;
    pthread_mutex_lock(&draw_mu);
    /* Else the log line would be glued to the end of the progress line. */
    erase_locked(pr);
    cli_log_stderr(NULL, level, message);
    fflush(stderr);
    pthread_mutex_unlock(&draw_mu);
}
