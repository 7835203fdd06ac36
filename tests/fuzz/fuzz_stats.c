/* libFuzzer target: the JSON and Prometheus writers (dbpool_stats_json,
 * dbpool_stats_prometheus, dbpool_manager_stats_json,
 * dbpool_manager_stats_prometheus) with hostile pool names, and the name's
 * validation before them. The name comes from the
 * data, through the options struct or through pool_name in the URL.
 * Properties: no crash or sanitizer report; a name dbpool_open accepts
 * comes out unchanged: the JSON parses (jansson) and its "name" and the
 * manager's key are the name, and every Prometheus sample line has a pool
 * label that unescapes (\\, \", \n; nothing else may follow a backslash,
 * no raw line feed or double quote inside) to the name; a buffer too small
 * by one byte holds "" and the call says how much is needed. */
#include "dbpool.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Render with a buffer sized by a sizing call, retried while the pool's
 * text grows (the uptime's digits): the length, or -1 on an error. The
 * text is in *out (malloc'd). Also checks the result for len == needed
 * (one byte short of the NUL) and len == 1. */
static int render(int (*fn)(void *, char *, size_t), void *obj, char **out) {
    *out = NULL;
    for (int tries = 0; tries < 8; tries++) {
        int need = fn(obj, NULL, 0);
        if (need < 0)
            abort(); /* no error on a valid pool */
        char *buf = malloc((size_t)need + 64);
        if (!buf)
            return -1;
        /* One byte short: "" and the length, never a cut text. */
        memset(buf, 'x', (size_t)need + 64);
        /* (The text may be shorter now: the uptime's digits.) */
        int got = fn(obj, buf, (size_t)need);
        if (got < 0 || (got >= need && buf[0] != '\0') || (got < need && strlen(buf) != (size_t)got))
            abort();
        memset(buf, 'x', 2);
        got = fn(obj, buf, 1);
        if (got < 2 || buf[0] != '\0' || buf[1] != 'x')
            abort();
        got = fn(obj, buf, (size_t)need + 64);
        if (got >= 0 && got < need + 64) {
            if (buf[got] != '\0' || strlen(buf) != (size_t)got)
                abort();
            *out = buf;
            return got;
        }
        free(buf);
    }
    return -1;
}

static int json_fn(void *p, char *b, size_t n) { return dbpool_stats_json(p, b, n); }
static int prom_fn(void *p, char *b, size_t n) { return dbpool_stats_prometheus(p, b, n); }
static int manager_fn(void *m, char *b, size_t n) { return dbpool_manager_stats_json(m, b, n); }
static int manager_prom_fn(void *m, char *b, size_t n) { return dbpool_manager_stats_prometheus(m, b, n); }

/* Every sample line's pool label must unescape to `name`. */
static void check_prometheus(const char *text, const char *name) {
    size_t nlen = strlen(name);
    char *label = malloc(nlen + 1);
    if (!label)
        return;
    int samples = 0;
    for (const char *line = text; *line;) {
        const char *eol = strchr(line, '\n');
        if (!eol)
            abort(); /* every line ends in a line feed */
        if (line[0] != '#') {
            const char *open = strstr(line, "{pool=\"");
            if (!open || open > eol)
                abort();
            const char *s = open + 7;
            size_t n = 0;
            while (s < eol && *s != '"') {
                char c = *s;
                if (c == '\\') {
                    char d = s[1];
                    if (d == '\\' || d == '"')
                        c = d;
                    else if (d == 'n')
                        c = '\n';
                    else
                        abort(); /* an escape the format does not have */
                    s++;
                }
                if (n >= nlen)
                    abort(); /* longer than the name */
                label[n++] = c;
                s++;
            }
            if (s >= eol || n != nlen || memcmp(label, name, nlen) != 0)
                abort();
            /* After the label: another label or the closing brace. */
            if (s[1] != ',' && s[1] != '}')
                abort();
            samples++;
        }
        line = eol + 1;
    }
    if (samples == 0)
        abort();
    free(label);
}

static void check_json(const char *text, const char *name) {
    json_error_t je;
    json_t *doc = json_loads(text, 0, &je);
    if (!doc)
        abort();
    json_t *n = json_object_get(doc, "name");
    if (!json_is_string(n) || strcmp(json_string_value(n), name) != 0)
        abort();
    json_decref(doc);
}

static void check_manager_json(const char *text, const char *name) {
    json_error_t je;
    json_t *doc = json_loads(text, 0, &je);
    if (!doc)
        abort();
    json_t *pools = json_object_get(doc, "pools");
    if (!json_is_object(pools) || json_object_size(pools) != 1)
        abort();
    json_t *one = json_object_get(pools, name);
    if (!json_is_object(one))
        abort();
    json_decref(doc);
}

static char *percent_encode(const char *s) {
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *out = malloc(3 * n + 1), *o = out;
    if (!out)
        return NULL;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        *o++ = '%';
        *o++ = hex[c >> 4];
        *o++ = hex[c & 15];
    }
    *o = '\0';
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1 || size > 300)
        return 0;
    uint8_t mode = data[0];
    char *name = malloc(size);
    if (!name)
        return 0;
    memcpy(name, data + 1, size - 1);
    name[size - 1] = '\0'; /* a NUL in the data ends the name early */

    dbpool_options o;
    dbpool_options_init(&o);
    o.lazy_connect = true; /* never connect */
    o.maintenance_interval_ms = 0;
    o.max_connecting = 1;
    char url[1024] = "mock:";
    if (mode & 1) {
        /* Through the URL, percent-encoded (checked after decoding). */
        char *enc = percent_encode(name);
        if (!enc || strlen(enc) + 32 > sizeof url) {
            free(enc);
            free(name);
            return 0;
        }
        strcat(url, "?pool_name=");
        strcat(url, enc);
        free(enc);
    } else {
        o.name = name;
    }

    dbpool *p = NULL;
    dbpool_error e;
    if (dbpool_open(&p, url, &o, &e) == DBPOOL_OK) {
        if (strcmp(dbpool_name(p), name) != 0)
            abort();
        char *text;
        if (render(json_fn, p, &text) >= 0) {
            check_json(text, name);
            free(text);
        }
        if (render(prom_fn, p, &text) >= 0) {
            check_prometheus(text, name);
            free(text);
        }
        dbpool_close(p);
    } else if (e.code != DBPOOL_EINVAL || strlen(e.message) == 0) {
        abort(); /* a refused name says why, as DBPOOL_EINVAL */
    }

    if (mode & 2) {
        /* The manager names the pool itself. */
        dbpool_manager *m = NULL;
        if (dbpool_manager_new(&m) == DBPOOL_OK) {
            dbpool_options_init(&o);
            o.lazy_connect = true;
            o.maintenance_interval_ms = 0;
            o.max_connecting = 1;
            if (dbpool_manager_open(m, name, "mock:", &o, &e) == DBPOOL_OK) {
                char *text;
                if (render(manager_fn, m, &text) >= 0) {
                    check_manager_json(text, name);
                    free(text);
                }
                /* One pool: the manager's text is the pool's own. */
                char *own;
                if (render(manager_prom_fn, m, &text) >= 0) {
                    check_prometheus(text, name);
                    if (render(prom_fn, dbpool_manager_get(m, name), &own) >= 0) {
                        if (strcmp(own, text) != 0)
                            abort();
                        free(own);
                    }
                    free(text);
                }
            }
            dbpool_manager_free(m);
        }
    }
    free(name);
    return 0;
}
