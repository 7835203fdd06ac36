/*
 * stats_json.c — dbpool_stats_json: the statistics as one JSON object.
 * Field names are listed in docs/metrics.md. Written by hand (the library
 * does not depend on a JSON library); strings are escaped and invalid UTF-8
 * in the pool's name becomes U+FFFD, so the output is always valid JSON.
 */
#include "textbuf.h"

#include "dbpool.h"

/* A JSON string literal, quotes included. */
static void json_string(textbuf *t, const char *s) {
    static const char hex[] = "0123456789abcdef";
    tb_putc(t, '"');
    const unsigned char *u = (const unsigned char *)(s ? s : "");
    while (*u) {
        unsigned char c = *u;
        if (c >= 0x80) {
            size_t n = tb_utf8_len(u);
            if (n == 0) {
                tb_puts(t, "\\ufffd");
                u++;
            } else {
                tb_putn(t, (const char *)u, n);
                u += n;
            }
            continue;
        }
        switch (c) {
        case '"':
            tb_puts(t, "\\\"");
            break;
        case '\\':
            tb_puts(t, "\\\\");
            break;
        case '\b':
            tb_puts(t, "\\b");
            break;
        case '\f':
            tb_puts(t, "\\f");
            break;
        case '\n':
            tb_puts(t, "\\n");
            break;
        case '\r':
            tb_puts(t, "\\r");
            break;
        case '\t':
            tb_puts(t, "\\t");
            break;
        default:
            if (c < 0x20) {
                char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                tb_putn(t, esc, sizeof esc);
            } else {
                tb_putc(t, (char)c);
            }
        }
        u++;
    }
    tb_putc(t, '"');
}

/* `"key":` preceded by a comma unless it is the first member. */
static void key(textbuf *t, bool *first, const char *k) {
    if (!*first)
        tb_putc(t, ',');
    *first = false;
    json_string(t, k);
    tb_putc(t, ':');
}

static void kv_u64(textbuf *t, bool *first, const char *k, uint64_t v) {
    key(t, first, k);
    tb_u64(t, v);
}

static void kv_int(textbuf *t, bool *first, const char *k, int v) {
    key(t, first, k);
    tb_int(t, v);
}

/* JSON has no NaN or infinity: those become null. */
static void kv_double(textbuf *t, bool *first, const char *k, double v) {
    key(t, first, k);
    if (isfinite(v))
        tb_finite_double(t, v);
    else
        tb_puts(t, "null");
}

static void kv_str(textbuf *t, bool *first, const char *k, const char *v) {
    key(t, first, k);
    json_string(t, v);
}

static void kv_latency(textbuf *t, bool *first, const char *k, const dbpool_latency *l) {
    key(t, first, k);
    bool f = true;
    tb_putc(t, '{');
    kv_u64(t, &f, "count", l->count);
    kv_double(t, &f, "mean_ms", l->mean_ms);
    kv_double(t, &f, "p50_ms", l->p50_ms);
    kv_double(t, &f, "p95_ms", l->p95_ms);
    kv_double(t, &f, "p99_ms", l->p99_ms);
    kv_double(t, &f, "max_ms", l->max_ms);
    tb_putc(t, '}');
}

int dbpool_stats_json(dbpool *p, char *buf, size_t len) {
    int rc = tb_check_args(p, buf, len);
    if (rc != DBPOOL_OK)
        return rc;
    dbpool_stats s;
    dbpool_get_stats(p, &s);

    textbuf tb;
    textbuf *t = &tb;
    tb_init(t, buf, len);
    bool f = true;
    tb_putc(t, '{');
    kv_str(t, &f, "name", dbpool_name(p));
    kv_str(t, &f, "backend", dbpool_backend(p));
    kv_str(t, &f, "version", dbpool_version());
    kv_double(t, &f, "uptime_s", s.uptime_s);

    kv_u64(t, &f, "created", s.created);
    kv_u64(t, &f, "reused", s.reused);
    kv_u64(t, &f, "destroyed", s.destroyed);
    key(t, &f, "destroyed_by");
    {
        bool g = true;
        tb_putc(t, '{');
        for (int r = 0; r < DBPOOL_CLOSE_REASON_COUNT; r++)
            kv_u64(t, &g, dbpool_close_reason_name((dbpool_close_reason)r), s.destroyed_by[r]);
        tb_putc(t, '}');
    }
    kv_u64(t, &f, "acquired", s.acquired);
    kv_u64(t, &f, "timeouts", s.timeouts);
    kv_u64(t, &f, "connect_errors", s.connect_errors);
    kv_u64(t, &f, "validation_failures", s.validation_failures);
    kv_u64(t, &f, "rollbacks", s.rollbacks);

    kv_int(t, &f, "idle", s.idle);
    kv_int(t, &f, "in_use", s.in_use);
    kv_int(t, &f, "connecting", s.connecting);
    kv_int(t, &f, "waiting", s.waiting);
    kv_int(t, &f, "total", s.total);
    kv_int(t, &f, "peak_in_use", s.peak_in_use);
    kv_int(t, &f, "peak_waiting", s.peak_waiting);
    kv_int(t, &f, "min_size", s.min_size);
    kv_int(t, &f, "max_size", s.max_size);
    kv_int(t, &f, "cap", s.cap);
    kv_int(t, &f, "min_idle", s.min_idle);
    key(t, &f, "suspended");
    tb_puts(t, s.suspended ? "true" : "false");
    kv_double(t, &f, "utilisation", s.utilisation);

    kv_str(t, &f, "breaker", dbpool_breaker_state_name(s.breaker));
    kv_u64(t, &f, "breaker_opens", s.breaker_opens);
    kv_u64(t, &f, "breaker_half_opens", s.breaker_half_opens);
    kv_u64(t, &f, "breaker_closes", s.breaker_closes);
    kv_u64(t, &f, "leaks_detected", s.leaks_detected);
    kv_u64(t, &f, "leaks_reclaimed", s.leaks_reclaimed);
    kv_int(t, &f, "reclaimed_out", s.reclaimed_out);
    kv_int(t, &f, "thread_cached", s.thread_cached);

    kv_latency(t, &f, "acquire_wait", &s.acquire_wait);
    kv_latency(t, &f, "use_time", &s.use_time);
    kv_latency(t, &f, "connect_time", &s.connect_time);
    kv_latency(t, &f, "handoff_delay", &s.handoff_delay);
    tb_putc(t, '}');
    return tb_finish(t);
}
