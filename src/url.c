/* url.c — splitting a URL's query into decoded key=value pairs, and the
 * small parsers every backend's URL handling shares. */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

char *dbpool__strdup(const char *s) {
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

void dbpool__strlcpy(char *dst, const char *src, size_t cap) {
    if (cap == 0)
        return;
    size_t n = src ? strlen(src) : 0;
    if (n >= cap)
        n = cap - 1;
    if (n)
        memcpy(dst, src, n);
    dst[n] = '\0';
}

static int hexval(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

char *dbpool__pct_decode(const char *src, size_t len) {
    char *out = malloc(len + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '%') {
            if (i + 2 >= len) {
                free(out);
                return NULL;
            }
            int h = hexval(src[i + 1]), l = hexval(src[i + 2]);
            if (h < 0 || l < 0) {
                free(out);
                return NULL;
            }
            out[o++] = (char)(h * 16 + l);
            i += 2;
        } else if (src[i] == '+') {
            /* '+' stays '+': URLs here are not form-encoded. */
            out[o++] = '+';
        } else {
            out[o++] = src[i];
        }
    }
    out[o] = '\0';
    return out;
}

void dbpool__kv_free(dbpool_kv *kvs, size_t n) {
    if (!kvs)
        return;
    for (size_t i = 0; i < n; i++) {
        free(kvs[i].key);
        free(kvs[i].value);
    }
    free(kvs);
}

int dbpool__url_query(const char *url, char **base, dbpool_kv **kvs, size_t *nkv, dbpool_error *e) {
    *base = NULL;
    *kvs = NULL;
    *nkv = 0;
    const char *q = strchr(url, '?');
    size_t baselen = q ? (size_t)(q - url) : strlen(url);
    char *b = malloc(baselen + 1);
    if (!b)
        return dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory parsing the URL");
    memcpy(b, url, baselen);
    b[baselen] = '\0';
    if (!q || !q[1]) {
        *base = b;
        return DBPOOL_OK;
    }
    size_t cap = 1;
    for (const char *s = q + 1; *s; s++)
        if (*s == '&')
            cap++;
    dbpool_kv *list = calloc(cap, sizeof *list);
    if (!list) {
        free(b);
        return dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory parsing the URL");
    }
    size_t n = 0;
    const char *s = q + 1;
    while (*s) {
        const char *end = strchr(s, '&');
        if (!end)
            end = s + strlen(s);
        if (end > s) {
            const char *eq = memchr(s, '=', (size_t)(end - s));
            const char *kend = eq ? eq : end;
            list[n].key = dbpool__pct_decode(s, (size_t)(kend - s));
            list[n].value = eq ? dbpool__pct_decode(eq + 1, (size_t)(end - eq - 1)) : dbpool__strdup("");
            if (!list[n].key || !list[n].value) {
                dbpool__kv_free(list, n + 1);
                free(b);
                return dbpool__seterr(
                    e, DBPOOL_EINVAL,
                    "bad percent-escape in the URL's query (write %%XX with two hex digits)");
            }
            if (!list[n].key[0]) {
                dbpool__kv_free(list, n + 1);
                free(b);
                return dbpool__seterr(e, DBPOOL_EINVAL, "empty key in the URL's query");
            }
            n++;
        }
        s = *end ? end + 1 : end;
    }
    *base = b;
    *kvs = list;
    *nkv = n;
    return DBPOOL_OK;
}

bool dbpool__parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out) {
    if (!s || !*s)
        return false;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || !end || *end || v < lo || v > hi)
        return false;
    *out = (int64_t)v;
    return true;
}

bool dbpool__parse_bool(const char *s, bool *out) {
    static const char *const yes[] = {"1", "true", "on", "yes"};
    static const char *const no[] = {"0", "false", "off", "no"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}
