/* join.c — joining a test's thread with a bound (testsupport.h). */
#define _GNU_SOURCE /* pthread_timedjoin_np */
#include "testsupport.h"

#include <pthread.h>
#include <time.h>

bool dbt_join_within(pthread_t t, int64_t timeout_ms, void **ret) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)(timeout_ms / 1000);
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return pthread_timedjoin_np(t, ret, &ts) == 0;
}
