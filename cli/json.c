/* json.c — pool statistics and health as JSON, and the document's text. */
#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *counter(uint64_t v) {
    return json_integer(v > (uint64_t)LLONG_MAX ? LLONG_MAX : (json_int_t)v);
}

/* The length of the UTF-8 character at p (1 to 4), or 0 when the bytes
 * there are not one (a sequence cut short, a stray continuation byte). */
static size_t utf8_char(const unsigned char *p) {
    size_t n = p[0] < 0x80             ? 1
               : (p[0] & 0xE0) == 0xC0 ? 2
               : (p[0] & 0xF0) == 0xE0 ? 3
               : (p[0] & 0xF8) == 0xF0 ? 4
                                       : 0;
    for (size_t i = 1; i < n; i++)
        if ((p[i] & 0xC0) != 0x80)
            return 0;
    return n;
}

/* Library messages may quote a path that is not UTF-8, a query may be in
 * another encoding, and a message cut to fit a buffer may end in half a
 * character; json_string refuses those, and a missing key would hide what
 * was run or why it failed. Only the bytes that are not UTF-8 become '?':
 * the rest of a message in another language stays readable. */
json_t *cli_json_string_lossy(const char *s) {
    json_t *j = json_string(s);
    if (j)
        return j;
    char *copy = strdup(s);
    if (!copy)
        return NULL;
    for (unsigned char *p = (unsigned char *)copy; *p;) {
        size_t n = utf8_char(p);
        if (n) {
            p += n;
        } else {
            *p++ = '?';
        }
    }
    j = json_string(copy);
    if (!j) { /* an overlong form or a surrogate: ASCII only */
        for (char *p = copy; *p; p++)
            if ((unsigned char)*p >= 0x80)
                *p = '?';
        j = json_string(copy);
    }
    free(copy);
    return j;
}

json_t *cli_json_ms(double ms) {
    if (!isfinite(ms))
        return json_null();
    return json_real(round(ms * 1000.0) / 1000.0);
}

json_t *cli_stats_json(const dbpool_stats *s) {
    json_t *by = json_object();
    for (int r = 0; r < DBPOOL_CLOSE_REASON_COUNT; r++)
        json_object_set_new(by, dbpool_close_reason_name((dbpool_close_reason)r),
                            counter(s->destroyed_by[r]));
    /* The leak figures too: a run with pool_leak_threshold in the URL logs
     * its reports, and the summary must count them. */
    return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:i, s:i, s:i, s:i, s:i, s:i, s:i, "
                     "s:i, s:i, s:o, s:o, s:o, s:i}",
                     "created", counter(s->created), "reused", counter(s->reused), "destroyed",
                     counter(s->destroyed), "acquired", counter(s->acquired), "timeouts",
                     counter(s->timeouts), "connect_errors", counter(s->connect_errors),
                     "validation_failures", counter(s->validation_failures), "rollbacks",
                     counter(s->rollbacks), "idle", s->idle, "in_use", s->in_use, "connecting", s->connecting,
                     "waiting", s->waiting, "total", s->total, "pool_size", s->max_size, "min_size",
                     s->min_size, "peak", s->peak_in_use, "peak_waiting", s->peak_waiting, "destroyed_by", by,
                     "leaks_detected", counter(s->leaks_detected), "leaks_reclaimed",
                     counter(s->leaks_reclaimed), "reclaimed_out", s->reclaimed_out);
}

json_t *cli_health_json(const dbpool_health *h) {
    bool healthy = h->status == DBPOOL_HEALTHY;
    const char *backend = h->backend && *h->backend ? h->backend : NULL;
    json_t *o = json_object();
    json_object_set_new(o, "status", json_string(healthy ? "healthy" : "unhealthy"));
    json_object_set_new(o, "backend", backend ? json_string(backend) : json_null());
    if (backend) {
        /* The key names the backend ("sqlite_version", "postgresql_version")
         * so that a reader never confuses one server's numbering with another's. */
        char key[64];
        snprintf(key, sizeof key, "%s_version", backend);
        json_object_set_new(o, key,
                            h->server_version[0] ? cli_json_string_lossy(h->server_version) : json_null());
    }
    json_object_set_new(o, "round_trip_ms", healthy ? cli_json_ms(h->round_trip_ms) : json_null());
    json_object_set_new(o, "acquire_ms", cli_json_ms(h->acquire_ms));
    if (!healthy) {
        int code = h->error.code ? h->error.code : DBPOOL_EUNAVAILABLE;
        json_object_set_new(
            o, "error",
            cli_json_string_lossy(h->error.message[0] ? h->error.message : dbpool_strerror(code)));
        json_object_set_new(o, "error_code", json_string(dbpool_errname(code)));
    }
    return o;
}

char *cli_json_text(const json_t *doc) {
    /* Ten significant digits print every microsecond-rounded millisecond
     * figure exactly, instead of 0.042999999999999997. */
    char *body = json_dumps(doc, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
    if (!body)
        return NULL;
    size_t n = strlen(body);
    char *text = realloc(body, n + 2);
    if (!text) {
        free(body);
        return NULL;
    }
    text[n] = '\n';
    text[n + 1] = '\0';
    return text;
}

bool cli_print_text(const char *text) {
    /* ferror too: an earlier failed write may have emptied the buffer, so
     * that the final flush has nothing left to fail on. */
    return fputs(text, stdout) >= 0 && fflush(stdout) == 0 && !ferror(stdout);
}

int cli_print_help(const char *cmd, const char *text) {
    errno = 0;
    if (cli_print_text(text))
        return CLI_EXIT_OK;
    int err = errno ? errno : EIO;
    if (cli_stdout_gone(err))
        return CLI_EXIT_FAILED;
    return cli_fail(cmd, "cannot write the help to stdout: %s: check where stdout goes", strerror(err));
}
