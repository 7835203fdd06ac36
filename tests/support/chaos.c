/* chaos.c — see chaos.h. */
#include "chaos.h"
#include "servers.h"

#include <dirent.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

uint64_t dbt_rng_next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

int dbt_rnd(uint64_t *s, int n) { return (int)(dbt_rng_next(s) % (uint64_t)n); }

uint64_t dbt_chaos_seed(void) {
    const char *e = getenv("DBPOOL_CHAOS_SEED");
    uint64_t seed;
    if (e && *e) {
        seed = strtoull(e, NULL, 0);
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20);
    }
    return seed ? seed : 1;
}

int64_t dbt_env_ms(const char *name, int64_t dflt) {
    const char *e = getenv(name);
    return e && *e ? atoll(e) : dflt;
}

static pthread_mutex_t fail_lock = PTHREAD_MUTEX_INITIALIZER;
static int n_failures;
static char first_failure[1024];

void dbt_chaos_fail(const char *fmt, ...) {
    pthread_mutex_lock(&fail_lock);
    if (n_failures++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(first_failure, sizeof first_failure, fmt, ap);
        va_end(ap);
        dbt_scrub_secrets(first_failure, sizeof first_failure, NULL);
    }
    pthread_mutex_unlock(&fail_lock);
}

int dbt_chaos_failures(char *buf, size_t cap) {
    pthread_mutex_lock(&fail_lock);
    int n = n_failures;
    if (cap)
        snprintf(buf, cap, "%s", first_failure);
    pthread_mutex_unlock(&fail_lock);
    return n;
}

static void *noop_main(void *arg) { return arg; }

void dbt_settle_runtime_threads(void) {
    pthread_t t;
    if (pthread_create(&t, NULL, noop_main, NULL) == 0)
        pthread_join(t, NULL);
}

int dbt_count_dir(const char *path) {
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    return n; /* with opendir's own descriptor, the same each time */
}
