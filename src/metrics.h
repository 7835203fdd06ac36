/*
 * metrics.h — latency histograms that the hot path records into without
 * taking the pool lock (striped, cache-line separated counters).
 */
#ifndef DBPOOL_METRICS_H
#define DBPOOL_METRICS_H

#include "dbpool.h"
#include "fast_clock.h"

#include <stdint.h>

typedef struct dbpool_metrics dbpool_metrics;

dbpool_metrics *dbpool__metrics_new(void);
void dbpool__metrics_free(dbpool_metrics *m);
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
