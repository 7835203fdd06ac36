/*
 * metrics.h — latency histograms that the hot path records into without
 * taking the pool lock (a stripe of counters per writing thread, and shared
 * striped ones for the rest; see metrics.c).
 */
#ifndef DBPOOL_METRICS_H
#define DBPOOL_METRICS_H

#include "dbpool.h"
#include "fast_clock.h"

#include <stdint.h>

typedef struct dbpool_metrics dbpool_metrics;

dbpool_metrics *dbpool__metrics_new(void);
void dbpool__metrics_free(dbpool_metrics *m);
/* In a fork child: frees the writer numbers of the threads that did not
 * come along. */
void dbpool__metrics_forked_child(void);
/* The calling thread records through the shared stripes from now on and
 * takes no writer number: for the pool's own threads (connectors,
 * maintenance, keepalive), which record rarely and live as long as their
 * pool, so that they do not hold numbers the application's threads need. */
void dbpool__metrics_thread_shared(void);
/* How many threads have a stripe of their own in m (for tests). */
uint32_t dbpool__metrics_own_stripes(const dbpool_metrics *m);
/* How many writer numbers threads hold now, process-wide (for tests). */
uint32_t dbpool__metrics_writers_held(void);
/* Record one observation of `ns` nanoseconds. Thread-safe, lock-free, a few
 * nanoseconds; never blocks. */
void dbpool__metrics_record(dbpool_metrics *m, dbpool_histogram_kind kind, int64_t ns);
/* Record n observations of 0 ns at once (the fast path's waits, folded
 * in before a snapshot). */
void dbpool__metrics_record_zeros(dbpool_metrics *m, dbpool_histogram_kind kind, uint64_t n);
/* Snapshots (sum over stripes). */
void dbpool__metrics_histogram(const dbpool_metrics *m, dbpool_histogram_kind kind, dbpool_histogram *out);
void dbpool__metrics_latency(const dbpool_metrics *m, dbpool_histogram_kind kind, dbpool_latency *out);

#endif
