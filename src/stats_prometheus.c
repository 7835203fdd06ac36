/*
 * stats_prometheus.c — dbpool_stats_prometheus: the statistics in the
 * Prometheus text exposition format 0.0.4 (metric names in docs/metrics.md).
 *
 * Every series carries pool="<options.name>" and nothing else taken from
 * the configuration: no URL, user, host or error text ever reaches a label.
 * Label values are escaped as the format asks (backslash, double quote,
 * line feed) and invalid UTF-8 becomes U+FFFD.
 */
#include "textbuf.h"

#include "dbpool.h"

/* A label value, without the quotes. */
static void label_value(textbuf *t, const char *s) {
    const unsigned char *u = (const unsigned char *)(s ? s : "");
    while (*u) {
        if (*u >= 0x80) {
            size_t n = tb_utf8_len(u);
            if (n == 0) {
                tb_puts(t, "\xEF\xBF\xBD"); /* U+FFFD */
                u++;
            } else {
                tb_putn(t, (const char *)u, n);
                u += n;
            }
            continue;
        }
        switch (*u) {
        case '\\':
            tb_puts(t, "\\\\");
            break;
        case '"':
            tb_puts(t, "\\\"");
            break;
        case '\n':
            tb_puts(t, "\\n");
            break;
        default:
            tb_putc(t, (char)*u);
        }
        u++;
    }
}

static void family(textbuf *t, const char *name, const char *type, const char *help) {
    tb_puts(t, "# HELP ");
    tb_puts(t, name);
    tb_putc(t, ' ');
    tb_puts(t, help); /* constant text: no backslash or line feed to escape */
    tb_puts(t, "\n# TYPE ");
    tb_puts(t, name);
    tb_putc(t, ' ');
    tb_puts(t, type);
    tb_putc(t, '\n');
}

/* `name{pool="..."` plus one optional label, then `} `: the caller writes
 * the value and the line feed. */
static void series(textbuf *t, const char *name, const char *suffix, const char *pool, const char *lname,
                   const char *lvalue) {
    tb_puts(t, name);
    tb_puts(t, suffix);
    tb_puts(t, "{pool=\"");
    label_value(t, pool);
    tb_putc(t, '"');
    if (lname) {
        tb_putc(t, ',');
        tb_puts(t, lname);
        tb_puts(t, "=\"");
        label_value(t, lvalue);
        tb_putc(t, '"');
    }
    tb_puts(t, "} ");
}

static void value_double(textbuf *t, double v) {
    if (isnan(v))
        tb_puts(t, "NaN");
    else if (isinf(v))
        tb_puts(t, v > 0 ? "+Inf" : "-Inf");
    else
        tb_finite_double(t, v);
}

static void sample_u64(textbuf *t, const char *name, const char *pool, const char *lname, const char *lvalue,
                       uint64_t v) {
    series(t, name, "", pool, lname, lvalue);
    tb_u64(t, v);
    tb_putc(t, '\n');
}

static void sample_int(textbuf *t, const char *name, const char *pool, const char *lname, const char *lvalue,
                       int v) {
    series(t, name, "", pool, lname, lvalue);
    tb_int(t, v);
    tb_putc(t, '\n');
}

static void gauge_int(textbuf *t, const char *name, const char *help, const char *pool, int v) {
    family(t, name, "gauge", help);
    sample_int(t, name, pool, NULL, NULL, v);
}

static void counter(textbuf *t, const char *name, const char *help, const char *pool, uint64_t v) {
    family(t, name, "counter", help);
    sample_u64(t, name, pool, NULL, NULL, v);
}

static void histogram(textbuf *t, const char *name, const char *help, const char *pool,
                      const dbpool_histogram *h) {
    family(t, name, "histogram", help);
    for (int b = 0; b < DBPOOL_HISTOGRAM_BUCKETS; b++) {
        char le[40];
        textbuf lt;
        tb_init(&lt, le, sizeof le);
        tb_finite_double(&lt, h->upper_bound_s[b]);
        tb_finish(&lt);
        series(t, name, "_bucket", pool, "le", le);
        tb_u64(t, h->cumulative[b]);
        tb_putc(t, '\n');
    }
    series(t, name, "_bucket", pool, "le", "+Inf");
    tb_u64(t, h->count);
    tb_putc(t, '\n');
    series(t, name, "_sum", pool, NULL, NULL);
    value_double(t, h->sum_s);
    tb_putc(t, '\n');
    series(t, name, "_count", pool, NULL, NULL);
    tb_u64(t, h->count);
    tb_putc(t, '\n');
}

int dbpool_stats_prometheus(dbpool *p, char *buf, size_t len) {
    int rc = tb_check_args(p, buf, len);
    if (rc != DBPOOL_OK)
        return rc;
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    dbpool_histogram h[DBPOOL_HIST_COUNT];
    for (int k = 0; k < DBPOOL_HIST_COUNT; k++)
        dbpool_get_histogram(p, (dbpool_histogram_kind)k, &h[k]);
    const char *pool = dbpool_name(p);

    textbuf tb;
    textbuf *t = &tb;
    tb_init(t, buf, len);

    family(t, "dbpool_connections", "gauge",
           "Open connections by state: idle (in the pool) or used (leased).");
    sample_int(t, "dbpool_connections", pool, "state", "idle", s.idle);
    sample_int(t, "dbpool_connections", pool, "state", "used", s.in_use);
    gauge_int(t, "dbpool_connections_max", "Maximum number of open connections allowed (max_size).", pool,
              s.max_size);
    gauge_int(t, "dbpool_connections_min_idle",
              "Idle connections kept open when none is in use (the larger of min_size and min_idle).", pool,
              s.min_size > s.min_idle ? s.min_size : s.min_idle);
    gauge_int(t, "dbpool_pending_requests", "Callers waiting for a connection.", pool, s.waiting);

    counter(t, "dbpool_acquire_timeouts_total", "Acquires that timed out waiting for a connection.", pool,
            s.timeouts);
    counter(t, "dbpool_connections_created_total", "Connections opened.", pool, s.created);
    family(t, "dbpool_connections_closed_total", "counter", "Connections closed, by reason.");
    for (int r = 0; r < DBPOOL_CLOSE_REASON_COUNT; r++)
        sample_u64(t, "dbpool_connections_closed_total", pool, "reason",
                   dbpool_close_reason_name((dbpool_close_reason)r), s.destroyed_by[r]);
    counter(t, "dbpool_connect_errors_total", "Failed connection attempts.", pool, s.connect_errors);
    counter(t, "dbpool_leaked_connections_total", "Leases held longer than leak_threshold_ms.", pool,
            s.leaks_detected);

    histogram(t, "dbpool_acquire_duration_seconds", "Time from an acquire call to the lease, in seconds.",
              pool, &h[DBPOOL_HIST_ACQUIRE]);
    histogram(t, "dbpool_use_duration_seconds", "Time from lease to release, in seconds.", pool,
              &h[DBPOOL_HIST_USE]);
    histogram(t, "dbpool_connect_duration_seconds", "Time to open a new connection, in seconds.", pool,
              &h[DBPOOL_HIST_CONNECT]);
    histogram(t, "dbpool_handoff_delay_seconds",
              "Time from a connection being handed to a waiting caller until that caller ran again, in "
              "seconds.",
              pool, &h[DBPOOL_HIST_HANDOFF]);

    gauge_int(t, "dbpool_breaker_state", "Circuit breaker: 0 closed, 1 open, 2 half-open.", pool,
              (int)s.breaker);
    family(t, "dbpool_breaker_transitions_total", "counter",
           "Circuit breaker transitions, by the state entered.");
    sample_u64(t, "dbpool_breaker_transitions_total", pool, "to", "open", s.breaker_opens);
    sample_u64(t, "dbpool_breaker_transitions_total", pool, "to", "half_open", s.breaker_half_opens);
    sample_u64(t, "dbpool_breaker_transitions_total", pool, "to", "closed", s.breaker_closes);

    family(t, "dbpool_build_info", "gauge", "The dbpool library version; always 1.");
    series(t, "dbpool_build_info", "", pool, "version", dbpool_version());
    tb_puts(t, "1\n");
    return tb_finish(t);
}
