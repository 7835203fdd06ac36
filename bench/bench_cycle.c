/* bench_cycle — acquire+release cycles per second through a dbpool, at a
 * range of thread counts, against a pool of a given size. Prints one line
 * per thread count; a program, not a test.
 *
 *   bench_cycle [URL] [pool_size] [seconds] [threads...]
 *   bench_cycle sqlite::memory: 8 2 1 2 8
 */
#include "dbpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static atomic_bool stop_flag;
static dbpool *pool;

/* One cache line pair per worker: counters of different threads must not
 * share a line (the prefetcher pairs adjacent lines). */
typedef struct worker {
    _Alignas(128) pthread_t tid;
    unsigned long cycles;
    unsigned long errors;
} worker;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *run(void *arg) {
    worker *w = arg;
    while (!atomic_load_explicit(&stop_flag, memory_order_relaxed)) {
        for (int i = 0; i < 64; i++) {
            dbpool_conn *c;
            if (dbpool_acquire(pool, -1, &c, NULL) != DBPOOL_OK) {
                w->errors++;
                continue;
            }
            dbpool_release(c);
            w->cycles++;
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    const char *url = argc > 1 ? argv[1] : "sqlite::memory:";
    int size = argc > 2 ? atoi(argv[2]) : 8;
    double seconds = argc > 3 ? atof(argv[3]) : 2.0;
    int counts_default[] = {1, 2, 8};
    int ncounts = argc > 4 ? argc - 4 : 3;
    dbpool_options o;
    dbpool_options_init(&o);
    o.max_size = size;
    o.min_size = size;
    o.validation = DBPOOL_VALIDATE_NEVER;
    dbpool_error e;
    if (dbpool_open(&pool, url, &o, &e) != DBPOOL_OK) {
        fprintf(stderr, "bench_cycle: %s\n", e.message);
        return 1;
    }
    printf("# acquire+release cycles, pool %d, %s, %.1f s per point\n", size, dbpool_backend(pool), seconds);
    printf("%-8s %14s %10s %8s\n", "threads", "cycles/s", "ns/cycle", "errors");
    for (int k = 0; k < ncounts; k++) {
        int n = argc > 4 ? atoi(argv[4 + k]) : counts_default[k];
        worker *ws = calloc((size_t)n, sizeof *ws);
        atomic_store(&stop_flag, false);
        double t0 = now_s();
        for (int i = 0; i < n; i++)
            pthread_create(&ws[i].tid, NULL, run, &ws[i]);
        struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
        nanosleep(&ts, NULL);
        atomic_store(&stop_flag, true);
        unsigned long total = 0, errors = 0;
        for (int i = 0; i < n; i++) {
            pthread_join(ws[i].tid, NULL);
            total += ws[i].cycles;
            errors += ws[i].errors;
        }
        double el = now_s() - t0;
        printf("%-8d %14.0f %10.1f %8lu\n", n, (double)total / el, el * 1e9 / (double)total * n, errors);
        free(ws);
    }
    dbpool_close(pool);
    return 0;
}
