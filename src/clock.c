/* clock.c — the monotonic clock and deadline arithmetic. */
#include "internal.h"

#include <errno.h>
#include <time.h>

int64_t dbpool__now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * INT64_C(1000000000) + ts.tv_nsec;
}

int64_t dbpool__deadline_after_ms(int64_t ms) {
    int64_t now = dbpool__now_ns();
    if (ms < 0)
        ms = 0;
    if (ms > (INT64_MAX - now) / DBPOOL_NS_PER_MS)
        return INT64_MAX;
    return now + ms * DBPOOL_NS_PER_MS;
}

int64_t dbpool__ms_left(int64_t deadline_ns) {
    int64_t left = deadline_ns - dbpool__now_ns();
    if (left <= 0)
        return 0;
    return (left + DBPOOL_NS_PER_MS - 1) / DBPOOL_NS_PER_MS;
}

void dbpool__sleep_ms(int64_t ms, int64_t deadline_ns) {
    int64_t until = dbpool__deadline_after_ms(ms);
    if (deadline_ns < until)
        until = deadline_ns;
    struct timespec ts;
    ts.tv_sec = (time_t)(until / INT64_C(1000000000));
    ts.tv_nsec = (long)(until % INT64_C(1000000000));
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}
