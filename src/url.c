/* url.c — splitting a URL's query into decoded key=value pairs, and the
 * small parsers every backend's URL handling shares. */
#include "internal.h"

#include <ctype.h>
#include <errno.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
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
    bool cut = n >= cap;
    if (cut)
        n = cap - 1;
    if (n)
        memcpy(dst, src, n);
    dst[n] = '\0';
    if (cut)
        dbpool__utf8_cut_tail(dst);
}

void dbpool__utf8_cut_tail(char *s) {
    size_t n = strlen(s);
    /* The last lead byte, at most three continuation bytes back. */
    size_t i = n;
    while (i > 0 && n - i < 4 && ((unsigned char)s[i - 1] & 0xC0) == 0x80)
        i--;
    if (i == 0)
        return;
    unsigned char lead = (unsigned char)s[i - 1];
    size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    if (lead >= 0xC0 && n - (i - 1) < need)
        s[i - 1] = '\0';
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

bool dbpool__pct_valid(const char *src, size_t len) {
    for (size_t i = 0; i < len; i++) {
        if (src[i] != '%')
            continue;
        if (i + 2 >= len)
            return false;
        int h = hexval(src[i + 1]), l = hexval(src[i + 2]);
        if (h < 0 || l < 0 || h + l == 0)
            return false;
        i += 2;
    }
    return true;
}

int dbpool__pct_decode_error(const char *src, size_t len, const char *bad_escape, dbpool_error *e) {
    /* Out of memory is not a typing mistake in the URL: said as what it is. */
    if (dbpool__pct_valid(src, len))
        return dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory decoding the URL");
    return dbpool__seterr(e, DBPOOL_EINVAL, "%s", bad_escape);
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
            if (h < 0 || l < 0 || h + l == 0) { /* %00 would cut the string short */
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

/* One host of an authority ("host", "host:port", "[v6]", "[v6]:port"):
 * false when a port is there but is not a number from 1 to 65535. */
static bool host_port_ok(const char *h, size_t n) {
    const char *port = NULL;
    if (n > 0 && h[0] == '[') {
        const char *close = memchr(h, ']', n);
        if (close && (size_t)(close - h) + 1 < n) {
            if (close[1] != ':')
                return false;
            port = close + 2;
        }
    } else {
        for (size_t i = n; i > 0; i--)
            if (h[i - 1] == ':') {
                port = h + i;
                break;
            }
    }
    if (!port)
        return true;
    size_t len = (size_t)(h + n - port);
    if (len == 0)
        return true; /* "host:" means the default port */
    char digits[6];  /* at most 5 */
    if (len >= sizeof digits)
        return false;
    memcpy(digits, port, len);
    digits[len] = '\0';
    int64_t v;
    return dbpool__parse_i64(digits, 1, 65535, &v);
}

/* What a control character is called in a message (without quoting it). */
static const char *control_name(unsigned c) {
    switch (c) {
    case '\t':
        return "a tab";
    case '\n':
        return "a line feed";
    case '\r':
        return "a carriage return";
    case 0x1b:
        return "an escape";
    default:
        return "a control character";
    }
}

/* The first control character of src[0..len) as decoded (C0, DEL, or a
 * C1 control U+0080..U+009F in UTF-8, raw or escaped), its offset in src in
 * *at; 0 when there is none. */
static unsigned decoded_control(const char *src, size_t len, size_t *at) {
    unsigned prev = 0;
    for (size_t i = 0; i < len;) {
        size_t start = i;
        unsigned b = (unsigned char)src[i++];
        if (b == '%' && i + 1 < len && hexval(src[i]) >= 0 && hexval(src[i + 1]) >= 0) {
            b = (unsigned)(hexval(src[i]) * 16 + hexval(src[i + 1]));
            i += 2;
        }
        if (b < 0x20 || b == 0x7f || (prev == 0xc2 && b >= 0x80 && b <= 0x9f)) {
            *at = start;
            return b;
        }
        prev = b;
    }
    return 0;
}

static int control_error(const char *what, unsigned c, size_t at, dbpool_error *e) {
    return dbpool__seterr(e, DBPOOL_EINVAL,
                          "%s holds a control character (U+%04X, %s, at byte %zu of the URL), which would be "
                          "invisible in messages and split log lines: remove it. Only a password may hold "
                          "one, percent-encoded",
                          what, c, control_name(c), at);
}

/*
 * Control characters. Raw ones are no URL's (RFC 3986), and the usual one
 * is the line feed a URL read from a file ends in: left in, it became part
 * of the last piece, a SQLite path ("app.db\n", another file, made empty)
 * or a value. Refused before anything else reads the URL.
 */
static int raw_control_check(const char *url, dbpool_error *e) {
    for (const char *p = url; *p; p++) {
        unsigned c = (unsigned char)*p;
        if (c < 0x20 || c == 0x7f)
            return dbpool__seterr(
                e, DBPOOL_EINVAL,
                "the URL holds a raw control character (U+%04X, %s, at byte %zu): remove it (a "
                "URL read from a file or an environment variable may end in a line feed); in a "
                "password, write it percent-encoded (%%%02X)",
                c, control_name(c), (size_t)(p - url), c);
    }
    return DBPOOL_OK;
}

/*
 * Percent-encoded control characters, everywhere but in a password: every
 * other piece of a URL may be quoted, decoded, by an error message or a
 * log line (a path, a database, user or host name, a value), where a line
 * feed forges a line of the pool's own and an escape sequence drives the
 * terminal. A password is masked wherever it would show. Run on a URL
 * whose shape url_check has accepted.
 */
static int encoded_control_check(const char *url, bool path_scheme, dbpool_error *e) {
    const char *query = strchr(url, '?');
    const char *base_end = query ? query : url + strlen(url);
    const char *sep = strstr(url, "://");
    size_t at;
    unsigned c;
    if (sep && sep < base_end && !path_scheme) {
        /* scheme://[user[:password]@]hosts[/database] */
        const char *auth = sep + 3;
        const char *end = auth + strcspn(auth, "/?#");
        const char *amp = memchr(auth, '@', (size_t)(end - auth));
        const char *hosts = amp ? amp + 1 : auth;
        if (amp) {
            const char *colon = memchr(auth, ':', (size_t)(amp - auth));
            const char *user_end = colon ? colon : amp;
            if ((c = decoded_control(auth, (size_t)(user_end - auth), &at)))
                return control_error("the URL's user name", c, (size_t)(auth - url) + at, e);
        }
        if ((c = decoded_control(hosts, (size_t)(end - hosts), &at)))
            return control_error("a host of the URL", c, (size_t)(hosts - url) + at, e);
        if (end < base_end && (c = decoded_control(end, (size_t)(base_end - end), &at)))
            return control_error("the URL's database name", c, (size_t)(end - url) + at, e);
    } else if ((c = decoded_control(url, (size_t)(base_end - url), &at))) {
        bool sqlite = strncasecmp(url, "sqlite:", 7) == 0 || strncasecmp(url, "sqlite3:", 8) == 0;
        return control_error(sqlite ? "the SQLite path" : "the URL before its '?'", c, at, e);
    }
    for (const char *item = query ? query + 1 : NULL; item && *item;) {
        size_t len = strcspn(item, "&");
        const char *eq = memchr(item, '=', len);
        size_t klen = eq ? (size_t)(eq - item) : len;
        if ((c = decoded_control(item, klen, &at)))
            return control_error("a key of the URL's query", c, (size_t)(item - url) + at, e);
        if (eq) {
            /* Keys are words (url_check) without control characters: one
             * is quoted as it decodes. */
            char key[64] = "";
            char *k = klen < sizeof key ? dbpool__pct_decode(item, klen) : NULL;
            if (k)
                dbpool__strlcpy(key, k, sizeof key);
            free(k);
            bool password = strcmp(key, "password") == 0 || strcmp(key, "sslpassword") == 0;
            if (!password && (c = decoded_control(eq + 1, len - klen - 1, &at))) {
                char what[96];
                snprintf(what, sizeof what, "the value of URL key '%s'", key[0] ? key : "?");
                return control_error(what, c, (size_t)(eq + 1 - url) + at, e);
            }
        }
        item += len;
        if (*item == '&')
            item++;
    }
    return DBPOOL_OK;
}

/*
 * What no backend can take and what would otherwise reach a driver's own
 * parser, whose error messages quote the URL's pieces. A password with a
 * raw '@', '/', '?' or '#' splits the URL in the wrong place: libpq then
 * reports a piece of it as a host name or a port. So these are refused
 * here, with messages that quote nothing of the URL.
 */
static int url_check(const char *url, dbpool_error *e) {
    for (const char *p = strchr(url, '%'); p; p = strchr(p + 1, '%'))
        if (p[1] == '0' && p[2] == '0')
            return dbpool__seterr(e, DBPOOL_EINVAL,
                                  "the URL contains %%00, a NUL byte, which no path, user name, password "
                                  "or value can hold; remove it");
    int raw = raw_control_check(url, e);
    if (raw != DBPOOL_OK)
        return raw;
    /* A space that ends the URL (a configuration file's, or a no-break
     * space pasted with it) would end its last piece: "app.db " is another
     * SQLite file, made empty. One that belongs there is written %20. */
    size_t ulen = strlen(url);
    if ((ulen > 0 && url[ulen - 1] == ' ') ||
        (ulen > 1 && (unsigned char)url[ulen - 2] == 0xc2 && (unsigned char)url[ulen - 1] == 0xa0))
        return dbpool__seterr(
            e, DBPOOL_EINVAL,
            "the URL ends in a space%s: remove it (a space that belongs at the end of a file "
            "name or a value is written %%20)",
            url[ulen - 1] == ' ' ? "" : " (a no-break space, U+00A0)");
    const char *sep = strstr(url, "://");
    const char *q = strpbrk(url, "?#");
    /* SQLite's "//" starts a path (sqlite://name.db is the relative path
     * name.db), not a host: a ':' or '@' in a file name is no port or
     * user info. */
    size_t schemelen = sep ? (size_t)(sep - url) : 0;
    bool path_scheme = (schemelen == 6 && strncasecmp(url, "sqlite", 6) == 0) ||
                       (schemelen == 7 && strncasecmp(url, "sqlite3", 7) == 0);
    if (sep && (!q || sep < q) && !path_scheme) {
        const char *auth = sep + 3;
        const char *end = auth + strcspn(auth, "/?#");
        const char *at = NULL;
        int ats = 0;
        for (const char *p = auth; p < end; p++)
            if (*p == '@') {
                at = p;
                ats++;
            }
        if (ats > 1)
            return dbpool__seterr(
                e, DBPOOL_EINVAL,
                "the URL has more than one '@' before its host: write a '@' inside the user "
                "name or password as %%40");
        /* No backend reads '#' as the start of a fragment: libpq and the
         * MySQL parser take it, and what follows up to the next '/', for
         * part of the port or the host, and quote it back ("invalid
         * integer value \"5432#...\" for connection option \"port\"");
         * with a password cut short there, a piece of it. */
        if (*end == '#')
            return dbpool__seterr(e, DBPOOL_EINVAL,
                                  "the URL has a '#' in its host part: if the password holds a '#', "
                                  "'/', '?' or '@', write them as %%23, %%2F, %%3F, %%40");
        const char *hosts = at ? at + 1 : auth;
        for (const char *h = hosts; h <= end;) {
            const char *comma = memchr(h, ',', (size_t)(end - h));
            const char *hend = comma ? comma : end;
            /* Where the user info was not recognised (a password with a
             * raw '?' cut the authority short), such a "host" holds the
             * user and the password's head, and both libraries quote it
             * whole ("mysql://[u:secret?k=v@h", or libpq's whole URL). */
            if (hend > h && *h == '[' && !memchr(h, ']', (size_t)(hend - h)))
                return dbpool__seterr(e, DBPOOL_EINVAL,
                                      "a host of the URL starts with '[' but has no ']' (write an IPv6 "
                                      "address as [::1]); if the URL holds a password, write any '/', '?', "
                                      "'#' or '@' in it as %%2F, %%3F, %%23, %%40");
            if (!host_port_ok(h, (size_t)(hend - h)))
                return dbpool__seterr(e, DBPOOL_EINVAL,
                                      "the URL's port is not a number from 1 to 65535; if the URL holds a "
                                      "password, write any '/', '?', '#' or '@' in it as %%2F, %%3F, %%23, "
                                      "%%40");
            h = hend + 1;
        }
        /* A raw '@' after the host part is where a password with a '/' or
         * '?' in it puts its own '@': "u:12/b@h/db" reads as host u, port
         * 12 and database "b@h/db", "u:12?k=v@h/db" as port 12 and a key
         * k; a client library then quotes those pieces of the password
         * back (as a port, a database or a key). So no '@' in the path
         * (the database name, from the first '/' to the first '?': no
         * backend reads '#' as a delimiter), nor in a query item with a
         * ':', '/' or '?' after it (the "@host:port/db?..." tail). */
        const char *query = strchr(auth, '?');
        const char *path_end = query ? query : auth + strlen(auth);
        const char *slash = memchr(auth, '/', (size_t)(path_end - auth));
        if (slash && memchr(slash, '@', (size_t)(path_end - slash)))
            return dbpool__seterr(e, DBPOOL_EINVAL,
                                  "the URL has a '@' after its host part, in the database name: if the "
                                  "password holds a '/' or '?', write them as %%2F and %%3F (and a '@' in "
                                  "a database name as %%40)");
        for (const char *item = query ? query + 1 : NULL; item && *item;) {
            size_t len = strcspn(item, "&");
            const char *at_in = memchr(item, '@', len);
            size_t after = at_in ? len - (size_t)(at_in - item) : 0;
            if (at_in &&
                (memchr(at_in, '/', after) || memchr(at_in, ':', after) || memchr(at_in, '?', after)))
                return dbpool__seterr(e, DBPOOL_EINVAL,
                                      "the URL has a '@' in its query followed by a ':', '/' or '?' (as in "
                                      "@host:port/db): if the password holds a '/' or '?', write them as "
                                      "%%2F and %%3F (and a '@' in a query value as %%40)");
            item += len;
            if (*item == '&')
                item++;
        }
    }
    /* Keys are words (every backend's, and pool_*): one with another
     * character is a piece of a password cut at a raw '?' ("u:12?x/y?k=v@h"
     * gives the key "x/y?k"), which an "unknown key" message would quote. */
    for (const char *item = strchr(url, '?'); item && *item;) {
        item++; /* past the '?' or '&' */
        size_t klen = strcspn(item, "=&");
        for (size_t i = 0; i < klen; i++)
            if (!isalnum((unsigned char)item[i]) && !strchr("_-.%", item[i]))
                return dbpool__seterr(
                    e, DBPOOL_EINVAL,
                    "a key of the URL's query holds a character other than letters, digits, "
                    "'_', '-', '.': if the password holds a '?', '/', '#' or '@', write them "
                    "as %%3F, %%2F, %%23, %%40");
        item = strchr(item, '&');
    }
    for (const char *item = q && *q == '?' ? q + 1 : NULL; item && *item && *item != '#';) {
        size_t len = strcspn(item, "&#");
        if (len > 0 && !memchr(item, '=', len))
            return dbpool__seterr(e, DBPOOL_EINVAL,
                                  "an item of the URL's query has no '=' (items are key=value joined by '&'; "
                                  "write a '&' inside a value, such as a password, as %%26)");
        item += len;
        if (*item == '&')
            item++;
    }
    return encoded_control_check(url, path_scheme, e);
}

int dbpool__url_query(const char *url, char **base, dbpool_kv **kvs, size_t *nkv, dbpool_error *e) {
    *base = NULL;
    *kvs = NULL;
    *nkv = 0;
    int checked = url_check(url, e);
    if (checked != DBPOOL_OK)
        return checked;
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
                return dbpool__pct_decode_error(
                    s, (size_t)(end - s),
                    "bad percent-escape in the URL's query (write %XX with two hex digits)", e);
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
    /* Plain base-10 digits with an optional '-': strtoll alone would also
     * take leading blanks and a '+'. */
    const char *d = s[0] == '-' ? s + 1 : s;
    if (*d < '0' || *d > '9')
        return false;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || !end || *end || v < lo || v > hi)
        return false;
    *out = (int64_t)v;
    return true;
}

/* The "C" locale's numbers, whatever the application's LC_NUMERIC says:
 * under de_DE strtod reads "1.5" as 1 and printf writes 1.5 as "1,5",
 * while the servers speak with a '.'. NULL when it cannot be made. */
static locale_t c_numeric;
static pthread_once_t c_numeric_once = PTHREAD_ONCE_INIT;
static void c_numeric_init(void) { c_numeric = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0); }

double dbpool__strtod_c(const char *s, char **end) {
    pthread_once(&c_numeric_once, c_numeric_init);
    if (!c_numeric)
        return strtod(s, end);
    locale_t old = uselocale(c_numeric);
    double d = strtod(s, end);
    uselocale(old);
    return d;
}

int64_t dbpool__int64_of_real_text(const char *s) {
    char *end;
    long long i = strtoll(s, &end, 10);
    if (end != s && (*end == '\0' || (*end == '.' && end[1 + strspn(end + 1, "0123456789")] == '\0')))
        return (int64_t)i;
    double d = dbpool__strtod_c(s, NULL);
    if (isnan(d))
        return 0;
    if (d >= 9223372036854775808.0)
        return INT64_MAX;
    if (d <= -9223372036854775808.0)
        return INT64_MIN;
    return (int64_t)d;
}

uint64_t dbpool__uint_of_bits(const void *bytes, size_t len) {
    const unsigned char *b = bytes;
    uint64_t v = 0;
    for (size_t i = len > 8 ? len - 8 : 0; i < len; i++)
        v = v << 8 | b[i];
    return v;
}

int64_t dbpool__int64_of_bits(const void *bytes, size_t len) {
    uint64_t v = dbpool__uint_of_bits(bytes, len);
    return v > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)v;
}

int dbpool__format_double_shortest_c(char *buf, size_t cap, double d) {
    pthread_once(&c_numeric_once, c_numeric_init);
    locale_t old = c_numeric ? uselocale(c_numeric) : (locale_t)0;
    int n = 0;
    for (int prec = 15; prec <= 17; prec++) {
        n = snprintf(buf, cap, "%.*g", prec, d);
        if (n < 0 || (size_t)n >= cap || strtod(buf, NULL) == d)
            break;
    }
    if (c_numeric)
        uselocale(old);
    return n;
}

int dbpool__format_double_c(char *buf, size_t cap, double d) {
    pthread_once(&c_numeric_once, c_numeric_init);
    locale_t old = c_numeric ? uselocale(c_numeric) : (locale_t)0;
    int n = snprintf(buf, cap, "%.17g", d);
    if (c_numeric)
        uselocale(old);
    return n;
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
