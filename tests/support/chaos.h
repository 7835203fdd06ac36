/*
 * chaos.h — what the chaos tests (test_chaos_mock, backend/test_chaos_servers)
 * share: a seeded random generator, the seed from DBPOOL_CHAOS_SEED, an
 * invariant-failure recorder any thread may call, and the counts of the
 * process's threads and descriptors.
 */
#ifndef DBT_CHAOS_H
#define DBT_CHAOS_H

#include <stddef.h>
#include <stdint.h>

/* xorshift64: the next value of *s (never 0 for a state that is not 0). */
uint64_t dbt_rng_next(uint64_t *s);
/* A number from 0 to n - 1. */
int dbt_rnd(uint64_t *s, int n);
/* DBPOOL_CHAOS_SEED when set (a run replays), else one from the clock;
 * never 0. */
uint64_t dbt_chaos_seed(void);
/* The environment variable name as a number of milliseconds, or dflt. */
int64_t dbt_env_ms(const char *name, int64_t dflt);

/* Record an invariant that broke (from any thread): the first message is
 * kept, with any secret scrubbed; the rest are counted. */
void dbt_chaos_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* How many were recorded; the first one's message into buf. */
int dbt_chaos_failures(char *buf, size_t cap);

/* Start and join one thread, so that the threads a runtime starts at the
 * first pthread_create (TSan's) exist before a baseline is counted. */
void dbt_settle_runtime_threads(void);
/* Entries of a directory (/proc/self/task, /proc/self/fd), or -1. */
int dbt_count_dir(const char *path);

#endif
