/* join.c — waiting for a test's thread or child process with a bound
 * (testsupport.h). */
#define _GNU_SOURCE /* pthread_timedjoin_np */
#include "testsupport.h"

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
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

int dbt_child_status(pid_t pid, int64_t timeout_ms) {
    int st = 0;
    pid_t w = 0;
    for (int64_t waited = 0; (w = waitpid(pid, &st, WNOHANG)) == 0 && waited < timeout_ms; waited += 10)
        dbt_sleep_ms(10);
    if (w == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        return -1;
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}
