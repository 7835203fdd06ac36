/* libFuzzer target: the numbers of a dbpool_options struct and of the calls
 * that take numbers (dbpool_acquire's timeout, dbpool_resize,
 * dbpool_shrink), on mock: pools that never wait long. Values come from
 * the data, mostly from a table of edges (0, -1, 1, the documented maxima
 * and one past them, INT64_MAX, INT64_MIN, ...). Properties: no crash or
 * sanitizer report (build with -fsanitize=integer to see every wrap), a
 * struct dbpool_open refuses is refused with DBPOOL_EINVAL and a message,
 * and one it accepts has every duration within the documented maximum. */
#include "dbpool.h"
#include "pool_internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DURATION (INT64_MAX / 2000000)

static const int64_t edges[] = {0,
                                -1,
                                1,
                                2,
                                10,
                                1000,
                                1001,
                                1000000,
                                1000001,
                                100000000,
                                100000001,
                                INT32_MAX,
                                INT32_MIN,
                                (int64_t)INT32_MAX + 1,
                                MAX_DURATION,
                                MAX_DURATION + 1,
                                INT64_MAX / 1000,
                                INT64_MAX / 1000000,
                                INT64_MAX,
                                INT64_MIN,
                                INT64_MIN + 1,
                                INT64_MAX - 1};
#define NEDGES (sizeof edges / sizeof edges[0])

typedef struct reader {
    const uint8_t *d;
    size_t n, at;
} reader;

static uint8_t byte(reader *r) { return r->at < r->n ? r->d[r->at++] : 0; }

static int64_t number(reader *r) {
    uint8_t b = byte(r);
    if (b < 200)
        return edges[b % NEDGES];
    if (b < 230)
        return (int64_t)byte(r) - 16; /* small, negative too */
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | byte(r);
    return (int64_t)v;
}

static int int_of(int64_t v) { return v > INT32_MAX ? INT32_MAX : v < INT32_MIN ? INT32_MIN : (int)v; }

static double real(reader *r) {
    static const double reals[] = {0.0, 0.5, 0.8, 1.0, 1.5, -0.1, 1e-300, 0.2};
    uint8_t b = byte(r);
    if (b == 255)
        return __builtin_nan("");
    if (b == 254)
        return __builtin_inf();
    return reals[b % (sizeof reals / sizeof reals[0])];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    reader rd = {data, size, 0}, *r = &rd;
    dbpool_options o;
    dbpool_options_init(&o);
    o.lazy_connect = true;
    uint32_t which =
        (uint32_t)byte(r) | (uint32_t)byte(r) << 8 | (uint32_t)byte(r) << 16 | (uint32_t)byte(r) << 24;
#define SET(bit, field, value)                                                                               \
    if (which & (1u << (bit)))                                                                               \
    o.field = value
    SET(0, min_size, int_of(number(r)));
    SET(1, max_size, int_of(number(r)));
    SET(2, acquire_timeout_ms, number(r));
    SET(3, connect_timeout_ms, number(r));
    SET(4, idle_timeout_ms, number(r));
    SET(5, max_lifetime_ms, number(r));
    SET(6, validation_timeout_ms, number(r));
    SET(7, max_retries, int_of(number(r)));
    SET(8, backoff_base_ms, number(r));
    SET(9, backoff_max_ms, number(r));
    SET(10, max_waiters, int_of(number(r)));
    SET(11, validation_window_ms, number(r));
    SET(12, statement_timeout_ms, number(r));
    SET(13, keepalive_ms, number(r));
    SET(14, leak_threshold_ms, number(r));
    SET(15, maintenance_interval_ms, number(r));
    SET(16, max_connecting, int_of(number(r)));
    SET(17, leak_reclaim_ms, number(r));
    SET(18, breaker_failures, int_of(number(r)));
    SET(19, breaker_cooldown_ms, number(r));
    SET(20, autoscale, true);
    SET(21, autoscale_high, real(r));
    SET(22, autoscale_low, real(r));
    SET(23, autoscale_step, real(r));
    SET(24, autoscale_interval_ms, number(r));
    SET(25, barging_window_us, number(r));
    SET(26, validation, (dbpool_validation)int_of(number(r)));
    SET(27, log_level, (dbpool_log_level)int_of(number(r)));
    SET(28, thread_cache, false);
#undef SET

    dbpool_error e;
    dbpool__clearerr(&e);
    int rc = dbpool__options_validate(&o, &e);
    if (rc != DBPOOL_OK) {
        if (rc != DBPOOL_EINVAL || !e.message[0])
            abort();
        return 0;
    }
    const int64_t durations[] = {o.acquire_timeout_ms, o.connect_timeout_ms, o.idle_timeout_ms,
                                 o.max_lifetime_ms, o.validation_timeout_ms, o.backoff_base_ms,
                                 o.backoff_max_ms, o.validation_window_ms, o.statement_timeout_ms,
                                 o.keepalive_ms, o.leak_threshold_ms, o.maintenance_interval_ms,
                                 o.leak_reclaim_ms, o.breaker_cooldown_ms, o.barging_window_us,
                                 /* only its upper bound without autoscale (configuration.md) */
                                 o.autoscale ? o.autoscale_interval_ms : 0};
    for (size_t i = 0; i < sizeof durations / sizeof durations[0]; i++)
        if (durations[i] < 0 || durations[i] > MAX_DURATION)
            abort();

    /* Open it for real, a small one: a few threads, no long waits. */
    if (!(which & (1u << 31)))
        return 0;
    if (o.max_connecting > 2)
        o.max_connecting = 2;
    if (o.max_size > 64)
        o.max_size = 64;
    if (o.min_size > 2)
        o.min_size = 2;
    if (o.min_size > o.max_size)
        o.min_size = o.max_size;
    if (o.maintenance_interval_ms > 0 && o.maintenance_interval_ms < 5)
        o.maintenance_interval_ms = 5;
    dbpool *p = NULL;
    if (dbpool_open(&p, "mock:", &o, &e) != DBPOOL_OK)
        return 0;
    for (int round = 0; round < 3; round++) {
        int64_t t = number(r);
        if (t > 0)
            t = 0; /* never wait */
        dbpool_conn *c = NULL;
        if (dbpool_acquire(p, t, &c, &e) == DBPOOL_OK) {
            dbpool_conn *c2 = NULL;
            if (dbpool_try_acquire(p, &c2, &e) == DBPOOL_OK)
                dbpool_release(c2);
            dbpool_release(c);
        }
        (void)dbpool_shrink(p, int_of(number(r)));
        int mn = int_of(number(r)), mx = int_of(number(r));
        if (mx > 64)
            mx = 64;
        (void)dbpool_resize(p, mn, mx, &e);
        char buf[64];
        (void)dbpool_stats_json(p, buf, byte(r) % sizeof buf);
        (void)dbpool_stats_prometheus(p, buf, byte(r) % sizeof buf);
    }
    dbpool_close(p);
    return 0;
}
