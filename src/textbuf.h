/*
 * textbuf.h — an append-only text buffer that measures as it writes, shared
 * by the JSON and Prometheus renderers (stats_json.c, stats_prometheus.c)
 * and the manager's JSON (manager.c).
 *
 * Appends write what fits into the caller's buffer and always count the full
 * length, so one pass both renders and measures. A text that did not fit is
 * not left cut in the buffer (tb_finish empties it): a cut JSON document
 * fails to parse far from here, and a cut Prometheus text parses as a
 * scrape that silently lacks the later metrics. Numbers are written
 * locale-independently (a caller's setlocale(LC_NUMERIC, "de_DE") must not
 * turn 0.5 into "0,5").
 */
#ifndef DBPOOL_TEXTBUF_H
#define DBPOOL_TEXTBUF_H

#include "dbpool.h"

#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct textbuf {
    char *buf;  /* may be NULL when cap is 0 */
    size_t cap; /* bytes available, including the NUL */
    size_t len; /* bytes the full text needs so far */
} textbuf;

/* The renderers' shared argument check: a pool, and a buffer unless len is
 * 0 (a sizing call). An empty string is left in a buffer that was given. */
static inline int tb_check_args(const void *pool, char *buf, size_t len) {
    if (!buf && len > 0)
        return DBPOOL_EINVAL;
    if (!pool) {
        if (len > 0)
            buf[0] = '\0';
        return DBPOOL_EINVAL;
    }
    return DBPOOL_OK;
}

static inline void tb_init(textbuf *t, char *buf, size_t cap) {
    t->buf = buf;
    t->cap = cap;
    t->len = 0;
}

static inline void tb_putn(textbuf *t, const char *s, size_t n) {
    if (t->len < t->cap) {
        size_t room = t->cap - t->len;
        memcpy(t->buf + t->len, s, n < room ? n : room);
    }
    t->len += n;
}

static inline void tb_puts(textbuf *t, const char *s) { tb_putn(t, s, strlen(s)); }

static inline void tb_putc(textbuf *t, char c) { tb_putn(t, &c, 1); }

/* NUL-terminate and return the full length, as snprintf; a text that did
 * not fit leaves the empty string instead of its first part. */
static inline int tb_finish(textbuf *t) {
    if (t->cap > 0)
        t->buf[t->len < t->cap ? t->len : 0] = '\0';
    if (t->len > (size_t)INT_MAX)
        return DBPOOL_ENOMEM;
    return (int)t->len;
}

static inline void tb_u64(textbuf *t, uint64_t v) {
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%" PRIu64, v);
    tb_putn(t, tmp, (size_t)n);
}

static inline void tb_int(textbuf *t, int v) {
    char tmp[16];
    int n = snprintf(tmp, sizeof tmp, "%d", v);
    tb_putn(t, tmp, (size_t)n);
}

/* A finite double in the shortest of %.15g / %.17g that reads back exactly,
 * with whatever the locale uses as decimal point replaced by '.'. */
static inline void tb_finite_double(textbuf *t, double v) {
    char tmp[40];
    snprintf(tmp, sizeof tmp, "%.15g", v);
    if (strtod(tmp, NULL) != v)
        snprintf(tmp, sizeof tmp, "%.17g", v);
    char out[40];
    size_t n = 0;
    for (const char *s = tmp; *s && n < sizeof out - 1; s++) {
        char c = *s;
        if ((c >= '0' && c <= '9') || c == '-' || c == '+' || c == 'e' || c == 'E') {
            out[n++] = c;
        } else if (n == 0 || out[n - 1] != '.') {
            out[n++] = '.'; /* the locale's decimal point, maybe several bytes */
        }
    }
    tb_putn(t, out, n);
}

/* Length of a valid UTF-8 sequence at s (1-4), or 0 if it is not one. */
static inline size_t tb_utf8_len(const unsigned char *s) {
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
#define TB_CONT(x) (((x)&0xC0u) == 0x80u)
    if (c >= 0xC2 && c <= 0xDF)
        return TB_CONT(s[1]) ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        unsigned char lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        return s[1] >= lo && s[1] <= hi && TB_CONT(s[2]) ? 3 : 0;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        unsigned char lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        return s[1] >= lo && s[1] <= hi && TB_CONT(s[2]) && TB_CONT(s[3]) ? 4 : 0;
    }
    return 0;
#undef TB_CONT
}

#endif
