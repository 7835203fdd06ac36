/* options.c — option defaults, the pool_* keys of a URL, and validation. */
#include "pool_internal.h"
#include "textbuf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void dbpool_options_init(dbpool_options *o) {
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->name = "default";
    o->min_size = 0;
    o->max_size = 10;
    o->acquire_timeout_ms = 30000;
    o->connect_timeout_ms = 10000;
    o->idle_timeout_ms = 600000;
    o->max_lifetime_ms = 1800000;
    o->validation_timeout_ms = 5000;
    o->max_retries = 3;
    o->backoff_base_ms = 10;
    o->backoff_max_ms = 2000;
    o->max_waiters = 0;
    o->validation = DBPOOL_VALIDATE_IF_IDLE;
    o->validation_window_ms = 500;
    o->log_level = DBPOOL_LOG_INFO;
    o->maintenance_interval_ms = 1000;
    o->max_connecting = 2;
    o->breaker_failures = 5;
    o->breaker_cooldown_ms = 5000;
    o->autoscale_high = 0.8;
    o->autoscale_low = 0.5;
    o->autoscale_step = 0.2;
    o->autoscale_interval_ms = 60000;
    o->suspend_fails_fast = true;
    o->barging_window_us = 50;
    o->thread_cache = true;
    o->statement_cache = true;
}

typedef enum { K_INT, K_MS, K_US, K_BOOL, K_VALIDATION, K_NAME } key_kind;

typedef struct pool_key {
    const char *key;
    key_kind kind;
    size_t offset;
    const char *field; /* the dbpool_options field's name, for messages */
    int64_t lo, hi;
} pool_key;

/* The longest duration accepted, in ms or us alike (about 146 years in
 * ms): twice it in nanoseconds still fits in an int64_t. */
#define DBPOOL__MAX_DURATION (INT64_MAX / 2000000)

#define OFF(field) offsetof(dbpool_options, field), #field
static const pool_key pool_keys[] = {
    {"pool_min", K_INT, OFF(min_size), 0, 1000000},
    {"pool_min_idle", K_INT, OFF(min_idle), 0, 1000000},
    {"pool_max", K_INT, OFF(max_size), 1, 1000000},
    {"pool_acquire_timeout", K_MS, OFF(acquire_timeout_ms), 1, DBPOOL__MAX_DURATION},
    {"pool_connect_timeout", K_MS, OFF(connect_timeout_ms), 1, DBPOOL__MAX_DURATION},
    {"pool_idle_timeout", K_MS, OFF(idle_timeout_ms), 0, DBPOOL__MAX_DURATION},
    {"pool_max_lifetime", K_MS, OFF(max_lifetime_ms), 0, DBPOOL__MAX_DURATION},
    {"pool_validation_timeout", K_MS, OFF(validation_timeout_ms), 1, DBPOOL__MAX_DURATION},
    {"pool_max_retries", K_INT, OFF(max_retries), 0, 1000},
    {"pool_backoff_base", K_MS, OFF(backoff_base_ms), 0, DBPOOL__MAX_DURATION},
    {"pool_backoff_max", K_MS, OFF(backoff_max_ms), 0, DBPOOL__MAX_DURATION},
    {"pool_max_waiters", K_INT, OFF(max_waiters), 0, 100000000},
    {"pool_validation", K_VALIDATION, OFF(validation), 0, 0},
    {"pool_validation_window", K_MS, OFF(validation_window_ms), 0, DBPOOL__MAX_DURATION},
    {"pool_statement_timeout", K_MS, OFF(statement_timeout_ms), 0, DBPOOL__MAX_DURATION},
    {"pool_keepalive", K_MS, OFF(keepalive_ms), 0, DBPOOL__MAX_DURATION},
    {"pool_leak_threshold", K_MS, OFF(leak_threshold_ms), 0, DBPOOL__MAX_DURATION},
    {"pool_maintenance_interval", K_MS, OFF(maintenance_interval_ms), 0, DBPOOL__MAX_DURATION},
    {"pool_max_connecting", K_INT, OFF(max_connecting), 1, 1000},
    {"pool_leak_reclaim", K_MS, OFF(leak_reclaim_ms), 0, DBPOOL__MAX_DURATION},
    {"pool_breaker_failures", K_INT, OFF(breaker_failures), 0, 1000000},
    {"pool_breaker_cooldown", K_MS, OFF(breaker_cooldown_ms), 1, DBPOOL__MAX_DURATION},
    {"pool_barging_window_us", K_US, OFF(barging_window_us), 0, DBPOOL__MAX_DURATION},
    {"pool_thread_cache", K_BOOL, OFF(thread_cache), 0, 0},
    {"pool_statement_cache", K_BOOL, OFF(statement_cache), 0, 0},
    {"pool_name", K_NAME, OFF(name), 0, 0},
};
#undef OFF

static int apply_key(dbpool_options *o, const pool_key *k, const char *value, char **name_copy,
                     dbpool_error *e) {
    char *base = (char *)o + k->offset;
    int64_t v;
    switch (k->kind) {
    case K_INT:
        if (!dbpool__parse_i64(value, k->lo, k->hi, &v))
            return dbpool__seterr(e, DBPOOL_EINVAL,
                                  "URL key %s: '%.64s' is not a whole number from %lld to %lld", k->key,
                                  value, (long long)k->lo, (long long)k->hi);
        *(int *)(void *)base = (int)v;
        return DBPOOL_OK;
    case K_MS:
    case K_US:
        if (!dbpool__parse_i64(value, k->lo, k->hi, &v))
            return dbpool__seterr(
                e, DBPOOL_EINVAL, "URL key %s: '%.64s' is not a number of %s from %lld to %lld", k->key,
                value, k->kind == K_MS ? "milliseconds" : "microseconds", (long long)k->lo, (long long)k->hi);
        *(int64_t *)(void *)base = v;
        return DBPOOL_OK;
    case K_BOOL:
        if (!dbpool__parse_bool(value, (bool *)(void *)base))
            return dbpool__seterr(e, DBPOOL_EINVAL,
                                  "URL key %s: '%.64s' is not one of true, false, on, off, yes, no, 1, 0",
                                  k->key, value);
        return DBPOOL_OK;
    case K_VALIDATION:
        if (strcasecmp(value, "never") == 0)
            o->validation = DBPOOL_VALIDATE_NEVER;
        else if (strcasecmp(value, "always") == 0)
            o->validation = DBPOOL_VALIDATE_ALWAYS;
        else if (strcasecmp(value, "if_idle") == 0)
            o->validation = DBPOOL_VALIDATE_IF_IDLE;
        else
            return dbpool__seterr(e, DBPOOL_EINVAL,
                                  "URL key pool_validation: '%.64s' is not one of never, always, if_idle",
                                  value);
        return DBPOOL_OK;
    case K_NAME:
        free(*name_copy);
        *name_copy = dbpool__strdup(value);
        if (!*name_copy)
            return dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory");
        o->name = *name_copy;
        return DBPOOL_OK;
    }
    return DBPOOL_OK;
}

static bool unreserved(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~' || c == '/' || c == ':' || c == ',';
}

/* Append s percent-encoded to buf (which has room: callers size it 3x). */
static size_t append_encoded(char *buf, size_t o, const char *s) {
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (unreserved(c)) {
            buf[o++] = (char)c;
        } else {
            buf[o++] = '%';
            buf[o++] = hex[c >> 4];
            buf[o++] = hex[c & 15];
        }
    }
    return o;
}

int dbpool__options_apply_url(dbpool_options *o, const char *url, char **driver_url, char **name_copy,
                              dbpool_error *e) {
    char *base;
    dbpool_kv *kvs;
    size_t n;
    *driver_url = NULL;
    int rc = dbpool__url_query(url, &base, &kvs, &n, e);
    if (rc != DBPOOL_OK)
        return rc;
    size_t need = strlen(base) + 2;
    for (size_t i = 0; i < n; i++)
        need += 3 * (strlen(kvs[i].key) + strlen(kvs[i].value)) + 2;
    char *out = malloc(need);
    if (!out) {
        free(base);
        dbpool__kv_free(kvs, n);
        return dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory");
    }
    size_t len = strlen(base);
    memcpy(out, base, len);
    bool first = true;
    /* A key given twice is ambiguous (libpq and SQLite would take the last
     * one silently): refused. The values are not quoted: one may be a
     * password. */
    for (size_t i = 1; i < n && rc == DBPOOL_OK; i++)
        for (size_t j = 0; j < i && rc == DBPOOL_OK; j++)
            if (strcmp(kvs[j].key, kvs[i].key) == 0)
                rc =
                    dbpool__seterr(e, DBPOOL_EINVAL,
                                   "URL key '%.64s' is given more than once: give each key once", kvs[i].key);
    for (size_t i = 0; i < n && rc == DBPOOL_OK; i++) {
        if (strncmp(kvs[i].key, "pool_", 5) == 0) {
            const pool_key *k = NULL;
            for (size_t j = 0; j < sizeof pool_keys / sizeof *pool_keys; j++)
                if (strcmp(pool_keys[j].key, kvs[i].key) == 0)
                    k = &pool_keys[j];
            if (!k)
                rc = dbpool__seterr(e, DBPOOL_EINVAL,
                                    "unknown pool key '%.64s' in the URL (known: pool_min, pool_max, "
                                    "pool_acquire_timeout, pool_connect_timeout, pool_idle_timeout, "
                                    "pool_max_lifetime, pool_max_retries, pool_validation, ...; see "
                                    "docs/configuration.md)",
                                    kvs[i].key);
            else
                rc = apply_key(o, k, kvs[i].value, name_copy, e);
            continue;
        }
        out[len++] = first ? '?' : '&';
        first = false;
        len = append_encoded(out, len, kvs[i].key);
        out[len++] = '=';
        len = append_encoded(out, len, kvs[i].value);
    }
    out[len] = '\0';
    free(base);
    dbpool__kv_free(kvs, n);
    if (rc != DBPOOL_OK) {
        free(out);
        return rc;
    }
    *driver_url = out;
    return DBPOOL_OK;
}

/* The pool's name is its key in the manager's JSON, its Prometheus label and
 * its tag in log lines. The renderers turn bytes that are not UTF-8 into
 * U+FFFD, so two names that differ only there would become one key (one
 * pool's stats vanish) and one label set; an empty label is no label to
 * Prometheus; a control character splits a log line, and Prometheus leaves
 * all but the line feed unescaped. With these refused, distinct names give
 * distinct output. */
int dbpool__check_pool_name(const char *name, dbpool_error *e) {
    if (!name)
        return DBPOOL_OK; /* "default" */
    size_t len = strlen(name);
    if (len == 0)
        return dbpool__seterr(e, DBPOOL_EINVAL,
                              "the pool name (name, or pool_name in the URL) must not be empty: it "
                              "labels the pool's metrics and log lines; give it a name, or leave name "
                              "NULL for \"default\"");
    if (len >= 128)
        return dbpool__seterr(
            e, DBPOOL_EINVAL,
            "the pool name (name, or pool_name in the URL) must be shorter than 128 bytes (got %zu)", len);
    const unsigned char *u = (const unsigned char *)name;
    for (size_t i = 0; i < len;) {
        size_t n = tb_utf8_len(u + i);
        if (n == 0)
            return dbpool__seterr(e, DBPOOL_EINVAL,
                                  "the pool name (name, or pool_name in the URL) is not valid UTF-8 (byte "
                                  "0x%02x at offset %zu): JSON and Prometheus labels would show every such "
                                  "byte as U+FFFD, so two pools could show as one; use UTF-8 text",
                                  u[i], i);
        /* C0 controls, DEL and C1 controls (U+0080..U+009F: C2 80..C2 9F). */
        if (u[i] < 0x20 || u[i] == 0x7F || (u[i] == 0xC2 && u[i + 1] < 0xA0))
            return dbpool__seterr(e, DBPOOL_EINVAL,
                                  "the pool name (name, or pool_name in the URL) contains a control "
                                  "character (U+%04X at offset %zu): the name appears in log lines and "
                                  "metric labels; use printable characters",
                                  n == 1 ? (unsigned)u[i] : (unsigned)u[i + 1], i);
        i += n;
    }
    return DBPOOL_OK;
}

int dbpool__options_validate(const dbpool_options *o, dbpool_error *e) {
#define REQUIRE(cond, ...)                                                                                   \
    do {                                                                                                     \
        if (!(cond))                                                                                         \
            return dbpool__seterr(e, DBPOOL_EINVAL, __VA_ARGS__);                                            \
    } while (0)
    /* A struct set up as `dbpool_options o = {0};` (or memset) and given
     * a size: every field the caller did not set is 0, and the first one
     * named below would be a field the caller never touched. Say what
     * happened instead. No caller means all of these to be 0: each is
     * invalid on its own. */
    REQUIRE(o->acquire_timeout_ms != 0 || o->connect_timeout_ms != 0 || o->validation_timeout_ms != 0 ||
                o->max_connecting != 0 || o->breaker_cooldown_ms != 0,
            "the options were not filled by dbpool_options_init(): acquire_timeout_ms, connect_timeout_ms, "
            "validation_timeout_ms, max_connecting and breaker_cooldown_ms are all 0; call "
            "dbpool_options_init(&o) first and then set the fields you want (or pass NULL for the defaults)");
    REQUIRE(o->max_size >= 1, "max_size must be at least 1 (got %d): a pool needs room for one connection",
            o->max_size);
    REQUIRE(o->max_size <= 1000000, "max_size must be at most 1000000 (got %d), as pool_max in the URL",
            o->max_size);
    REQUIRE(o->min_size >= 0, "min_size must be 0 or more (got %d)", o->min_size);
    REQUIRE(o->min_size <= o->max_size, "min_size (%d) must not exceed max_size (%d)", o->min_size,
            o->max_size);
    REQUIRE(o->min_idle >= 0, "min_idle must be 0 (none) or more (got %d)", o->min_idle);
    REQUIRE(o->min_idle <= o->max_size, "min_idle (%d) must not exceed max_size (%d)", o->min_idle,
            o->max_size);
    REQUIRE(o->acquire_timeout_ms > 0, "acquire_timeout_ms must be greater than 0 (got %lld)",
            (long long)o->acquire_timeout_ms);
    REQUIRE(o->connect_timeout_ms > 0, "connect_timeout_ms must be greater than 0 (got %lld)",
            (long long)o->connect_timeout_ms);
    REQUIRE(o->validation_timeout_ms > 0, "validation_timeout_ms must be greater than 0 (got %lld)",
            (long long)o->validation_timeout_ms);
    REQUIRE(o->idle_timeout_ms >= 0, "idle_timeout_ms must be 0 (never) or more (got %lld)",
            (long long)o->idle_timeout_ms);
    REQUIRE(o->max_lifetime_ms >= 0, "max_lifetime_ms must be 0 (unlimited) or more (got %lld)",
            (long long)o->max_lifetime_ms);
    REQUIRE(o->max_retries >= 0 && o->max_retries <= 1000,
            "max_retries must be from 0 to 1000 (got %d): with the backoff capped at backoff_max_ms, 1000 "
            "retries already last for hours",
            o->max_retries);
    REQUIRE(o->backoff_base_ms >= 0, "backoff_base_ms must be 0 or more (got %lld)",
            (long long)o->backoff_base_ms);
    REQUIRE(o->backoff_max_ms >= o->backoff_base_ms,
            "backoff_max_ms (%lld) must be at least backoff_base_ms (%lld)", (long long)o->backoff_max_ms,
            (long long)o->backoff_base_ms);
    REQUIRE(o->max_waiters >= 0, "max_waiters must be 0 (unlimited) or more (got %d)", o->max_waiters);
    REQUIRE(o->validation == DBPOOL_VALIDATE_NEVER || o->validation == DBPOOL_VALIDATE_ALWAYS ||
                o->validation == DBPOOL_VALIDATE_IF_IDLE,
            "validation must be DBPOOL_VALIDATE_NEVER, _ALWAYS or _IF_IDLE (got %d)", (int)o->validation);
    REQUIRE(o->validation_window_ms >= 0, "validation_window_ms must be 0 or more (got %lld)",
            (long long)o->validation_window_ms);
    REQUIRE(o->log_level >= DBPOOL_LOG_ERROR && o->log_level <= DBPOOL_LOG_DEBUG,
            "log_level must be DBPOOL_LOG_ERROR..DBPOOL_LOG_DEBUG (got %d)", (int)o->log_level);
    REQUIRE(o->statement_timeout_ms >= 0, "statement_timeout_ms must be 0 (none) or more (got %lld)",
            (long long)o->statement_timeout_ms);
    REQUIRE(o->keepalive_ms >= 0, "keepalive_ms must be 0 (off) or more (got %lld)",
            (long long)o->keepalive_ms);
    REQUIRE(o->leak_threshold_ms >= 0, "leak_threshold_ms must be 0 (off) or more (got %lld)",
            (long long)o->leak_threshold_ms);
    REQUIRE(o->maintenance_interval_ms >= 0,
            "maintenance_interval_ms must be 0 (no maintenance thread) or more (got %lld)",
            (long long)o->maintenance_interval_ms);
    int name_rc = dbpool__check_pool_name(o->name, e);
    if (name_rc != DBPOOL_OK)
        return name_rc;
    if (o->maintenance_interval_ms == 0 &&
        (o->autoscale || o->leak_threshold_ms > 0 || o->keepalive_ms > 0 || o->min_idle > 0)) {
        /* Named as set: one who set only leak_threshold_ms is not left to
         * guess which of them is meant. */
        char set[128] = "";
        size_t n = 0;
        int count = 0;
        const char *names[] = {
            o->autoscale ? "autoscale" : NULL, o->leak_threshold_ms > 0 ? "leak_threshold_ms" : NULL,
            o->keepalive_ms > 0 ? "keepalive_ms" : NULL, o->min_idle > 0 ? "min_idle" : NULL};
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            if (!names[i])
                continue;
            n += (size_t)snprintf(set + n, sizeof set - n, "%s%s", count ? " and " : "", names[i]);
            count++;
        }
        return dbpool__seterr(
            e, DBPOOL_EINVAL,
            "%s %s in the maintenance thread, which maintenance_interval_ms 0 turns off: set "
            "maintenance_interval_ms > 0 (got 0)",
            set, count == 1 ? "runs" : "run");
    }
    REQUIRE(o->barging_window_us >= 0, "barging_window_us must be 0 (strict hand-off) or more (got %lld)",
            (long long)o->barging_window_us);
    REQUIRE(o->max_connecting >= 1 && o->max_connecting <= 1000,
            "max_connecting must be from 1 to 1000 (got %d): it is the number of connector threads",
            o->max_connecting);
    REQUIRE(o->leak_reclaim_ms >= 0, "leak_reclaim_ms must be 0 (never) or more (got %lld)",
            (long long)o->leak_reclaim_ms);
    REQUIRE(o->leak_reclaim_ms == 0 || o->leak_threshold_ms > 0,
            "leak_reclaim_ms (%lld) needs leak detection: set leak_threshold_ms > 0 as well",
            (long long)o->leak_reclaim_ms);
    REQUIRE(o->leak_reclaim_ms == 0 || o->leak_reclaim_ms >= o->leak_threshold_ms,
            "leak_reclaim_ms (%lld) must not be below leak_threshold_ms (%lld)",
            (long long)o->leak_reclaim_ms, (long long)o->leak_threshold_ms);
    REQUIRE(o->breaker_failures >= 0, "breaker_failures must be 0 (off) or more (got %d)",
            o->breaker_failures);
    REQUIRE(o->breaker_cooldown_ms > 0, "breaker_cooldown_ms must be greater than 0 (got %lld)",
            (long long)o->breaker_cooldown_ms);
    REQUIRE(!o->autoscale ||
                (o->autoscale_low > 0 && o->autoscale_low < o->autoscale_high && o->autoscale_high <= 1.0),
            "autoscale marks must satisfy 0 < autoscale_low (%g) < autoscale_high (%g) <= 1",
            o->autoscale_low, o->autoscale_high);
    REQUIRE(!o->autoscale || (o->autoscale_step > 0 && o->autoscale_step <= 1.0),
            "autoscale_step must be in (0, 1] (got %g)", o->autoscale_step);
    REQUIRE(!o->autoscale || o->autoscale_interval_ms > 0,
            "autoscale_interval_ms must be greater than 0 (got %lld)", (long long)o->autoscale_interval_ms);
    /* Every duration becomes nanoseconds, and deadlines add two of them to
     * a clock reading: above DBPOOL__MAX_DURATION (about 146 years) that
     * overflows. The URL keys' table bounds every duration field by it. */
    for (size_t i = 0; i < sizeof pool_keys / sizeof *pool_keys; i++) {
        const pool_key *k = &pool_keys[i];
        if (k->kind != K_MS && k->kind != K_US)
            continue;
        int64_t v = *(const int64_t *)(const void *)((const char *)o + k->offset);
        /* The same number in microseconds is about 53 days, not 146 years. */
        REQUIRE(v <= k->hi, "%s is %lld: at most %lld (about %s) is accepted", k->field, (long long)v,
                (long long)k->hi, k->kind == K_MS ? "146 years" : "53 days");
    }
    REQUIRE(o->autoscale_interval_ms <= DBPOOL__MAX_DURATION,
            "autoscale_interval_ms is %lld: at most %lld (about 146 years) is accepted",
            (long long)o->autoscale_interval_ms, (long long)DBPOOL__MAX_DURATION);
#undef REQUIRE
    return DBPOOL_OK;
}
