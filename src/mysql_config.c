/* mysql_config.c — parsing mysql:// and mariadb:// URLs: user and password
 * (percent-decoded), hosts with ports and [IPv6] literals, fail-over lists,
 * the database, and the query keys. Unknown keys are errors. */
#include "internal.h"
#include "mysql_config.h"

#include <errno.h>
#include <limits.h>
#include <mysql.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

void dbpool__mysql_free_config(void *p) {
    my_cfg *c = p;
    if (!c)
        return;
    free(c->user);
    if (c->password) {
        /* The password should not linger in freed memory. */
        memset(c->password, 0, strlen(c->password));
        free(c->password);
    }
    if (c->password_encoded) {
        memset(c->password_encoded, 0, strlen(c->password_encoded));
        free(c->password_encoded);
    }
    free(c->database);
    for (size_t i = 0; i < c->nhosts; i++)
        free(c->hosts[i].host);
    free(c->hosts);
    free(c->socket);
    free(c->ssl_ca);
    free(c->ssl_cert);
    free(c->ssl_key);
    free(c->charset);
    free(c->init_command);
    free(c);
}

static char *dup_range(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

static int parse_port(const char *s, size_t n, unsigned *out, dbpool_error *e) {
    char buf[16];
    int64_t v;
    if (n == 0 || n >= sizeof buf)
        goto bad;
    memcpy(buf, s, n);
    buf[n] = '\0';
    if (!dbpool__parse_i64(buf, 1, 65535, &v))
        goto bad;
    *out = (unsigned)v;
    return DBPOOL_OK;
bad:
    /* The text is not quoted: when a password holds a raw '/', the piece
     * taken for the port is part of the password. */
    return dbpool__seterr(e, DBPOOL_EINVAL, "mysql URL: the port is not a number from 1 to 65535");
}

/* One entry of the host list: "host", "host:port", "[v6]", "[v6]:port". */
static int parse_host(const char *s, size_t n, my_host *h, dbpool_error *e) {
    const char *name = s;
    size_t namelen;
    const char *port = NULL;
    size_t portlen = 0;
    h->port = MY_DEFAULT_PORT;
    if (n > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (!close)
            return dbpool__seterr(e, DBPOOL_EINVAL, "mysql URL: '[' without ']' in host '%.*s'",
                                  (int)(n > 64 ? 64 : n), s);
        name = s + 1;
        namelen = (size_t)(close - name);
        const char *after = close + 1;
        size_t rest = n - (size_t)(after - s);
        if (rest > 0) {
            if (after[0] != ':')
                return dbpool__seterr(e, DBPOOL_EINVAL, "mysql URL: unexpected text after ']' in host '%.*s'",
                                      (int)(n > 64 ? 64 : n), s);
            port = after + 1;
            portlen = rest - 1;
        }
        if (namelen == 0)
            return dbpool__seterr(e, DBPOOL_EINVAL, "mysql URL: empty IPv6 address '[]'");
    } else {
        const char *colon = memchr(s, ':', n);
        if (colon && memchr(colon + 1, ':', n - (size_t)(colon + 1 - s)))
            return dbpool__seterr(e, DBPOOL_EINVAL,
                                  "mysql URL: write an IPv6 address in brackets, as [::1]:3306");
        namelen = colon ? (size_t)(colon - s) : n;
        if (colon) {
            port = colon + 1;
            portlen = n - namelen - 1;
        }
    }
    /* "host:" means the default port, as in the PostgreSQL form and
     * RFC 3986 (and as the URL check before any driver reads it). */
    if (port && portlen > 0) {
        int rc = parse_port(port, portlen, &h->port, e);
        if (rc)
            return rc;
    }
    h->host = NULL;
    if (namelen > 0) {
        h->host = dbpool__pct_decode(name, namelen);
        if (!h->host)
            return dbpool__pct_decode_error(name, namelen, "mysql URL: bad percent-escape in a host name", e);
    }
    return DBPOOL_OK;
}

static int parse_seconds(const char *key, const char *v, unsigned *out, dbpool_error *e) {
    int64_t n;
    if (!dbpool__parse_i64(v, 1, 31536000, &n))
        return dbpool__seterr(
            e, DBPOOL_EINVAL,
            "mysql URL: bad value '%.64s' for %s (want whole seconds from 1 to 31536000, a year)", v, key);
    *out = (unsigned)n;
    return DBPOOL_OK;
}

static int set_string(char **dst, const char *key, const char *v, dbpool_error *e) {
    if (!*v)
        return dbpool__seterr(e, DBPOOL_EINVAL, "mysql URL: %s needs a value", key);
    free(*dst);
    *dst = dbpool__strdup(v);
    return *dst ? DBPOOL_OK : dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory");
}

static int apply_key(my_cfg *c, const char *key, const char *v, dbpool_error *e) {
    if (strcmp(key, "socket") == 0)
        return set_string(&c->socket, key, v, e);
    if (strcmp(key, "ssl-ca") == 0)
        return set_string(&c->ssl_ca, key, v, e);
    if (strcmp(key, "ssl-cert") == 0)
        return set_string(&c->ssl_cert, key, v, e);
    if (strcmp(key, "ssl-key") == 0)
        return set_string(&c->ssl_key, key, v, e);
    if (strcmp(key, "init_command") == 0)
        return set_string(&c->init_command, key, v, e);
    if (strcmp(key, "connect_timeout") == 0)
        return parse_seconds(key, v, &c->connect_timeout, e);
    if (strcmp(key, "read_timeout") == 0)
        return parse_seconds(key, v, &c->read_timeout, e);
    if (strcmp(key, "write_timeout") == 0)
        return parse_seconds(key, v, &c->write_timeout, e);
    if (strcmp(key, "charset") == 0) {
        /* It is also spliced into SET NAMES after a reset: names only. */
        size_t n = strlen(v);
        bool ok = n > 0 && n <= 32;
        for (size_t i = 0; ok && i < n; i++)
            ok = (v[i] >= 'a' && v[i] <= 'z') || (v[i] >= 'A' && v[i] <= 'Z') ||
                 (v[i] >= '0' && v[i] <= '9') || v[i] == '_';
        if (!ok)
            return dbpool__seterr(e, DBPOOL_EINVAL,
                                  "mysql URL: bad value '%.64s' for charset (want a character set "
                                  "name such as utf8mb4)",
                                  v);
        /* Checked here, once: at connect a name Connector/C does not know,
         * or one the server refuses for a client, fails every attempt
         * alike (retried as a connect error). */
        const MARIADB_CHARSET_INFO *cs = mariadb_get_charset_by_name(v);
        if (!cs)
            return dbpool__seterr(e, DBPOOL_EINVAL,
                                  "mysql URL: unknown charset '%.64s' (want a character set name such as "
                                  "utf8mb4)",
                                  v);
        if (cs->char_minlen > 1)
            return dbpool__seterr(e, DBPOOL_EINVAL,
                                  "mysql URL: charset '%.64s' cannot be a client's character set (its "
                                  "characters take %u bytes or more); use utf8mb4",
                                  v, cs->char_minlen);
        return set_string(&c->charset, key, v, e);
    }
    if (strcmp(key, "ssl-mode") == 0) {
        static const struct {
            const char *name;
            ssl_mode mode;
        } modes[] = {{"DISABLED", SSL_DISABLED},
                     {"PREFERRED", SSL_PREFERRED},
                     {"REQUIRED", SSL_REQUIRED},
                     {"VERIFY_CA", SSL_VERIFY_CA},
                     {"VERIFY_IDENTITY", SSL_VERIFY_IDENTITY}};
        for (size_t i = 0; i < sizeof modes / sizeof *modes; i++) {
            if (strcasecmp(v, modes[i].name) == 0) {
                c->ssl = modes[i].mode;
                c->ssl_mode_given = true;
                return DBPOOL_OK;
            }
        }
        return dbpool__seterr(e, DBPOOL_EINVAL,
                              "mysql URL: bad value '%.64s' for ssl-mode (want DISABLED, PREFERRED, "
                              "REQUIRED, VERIFY_CA or VERIFY_IDENTITY)",
                              v);
    }
    return dbpool__seterr(e, DBPOOL_EINVAL,
                          "mysql URL: unknown key '%.64s' (known: socket, ssl-mode, ssl-ca, ssl-cert, "
                          "ssl-key, charset, connect_timeout, read_timeout, write_timeout, "
                          "init_command)",
                          key);
}

/* A relative TLS file path made absolute against the working directory at
 * dbpool_open: Connector/C reads the file at each connect, and a program
 * that changes directory afterwards (a daemon's chdir("/")) would have
 * every later connect fail on a file that is still there. */
static int absolute_path(char **path, const char *key, dbpool_error *e) {
    if (!*path || (*path)[0] == '/')
        return DBPOOL_OK;
    char cwd[4096];
    if (!getcwd(cwd, sizeof cwd))
        return dbpool__seterr(
            e, DBPOOL_EINVAL,
            "mysql URL: %s is a relative path and the working directory cannot be read (%s): "
            "give an absolute path",
            key, strerror(errno));
    size_t n = strlen(cwd) + 1 + strlen(*path) + 1;
    char *abs = malloc(n);
    if (!abs)
        return dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory");
    snprintf(abs, n, "%s/%s", cwd, *path);
    free(*path);
    *path = abs;
    return DBPOOL_OK;
}

static int parse_url(my_cfg *c, const char *url, dbpool_error *e) {
    char *base = NULL;
    dbpool_kv *kv = NULL;
    size_t nkv = 0;
    int rc = dbpool__url_query(url, &base, &kv, &nkv, e);
    if (rc)
        return rc;

    const char *p = strstr(base, "://");
    size_t schemelen = p ? (size_t)(p - base) : 0;
    if (!p || !((schemelen == 5 && strncasecmp(base, "mysql", 5) == 0) ||
                (schemelen == 7 && strncasecmp(base, "mariadb", 7) == 0))) {
        rc = dbpool__seterr(
            e, DBPOOL_EINVAL,
            "mysql URL: want mysql://user@host:port/database (with ':' and the password after the user "
            "if there is one)");
        goto out;
    }
    p += 3;
    const char *slash = strchr(p, '/');
    const char *auth_end = slash ? slash : p + strlen(p);

    /* The last '@' ends the user info, so an unescaped '@' in a password still works. */
    const char *at = NULL;
    for (const char *s = p; s < auth_end; s++)
        if (*s == '@')
            at = s;
    const char *hosts = p;
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *uend = colon ? colon : at;
        if (uend > p) {
            c->user = dbpool__pct_decode(p, (size_t)(uend - p));
            if (!c->user) {
                rc = dbpool__pct_decode_error(p, (size_t)(uend - p),
                                              "mysql URL: bad percent-escape in the user name", e);
                goto out;
            }
        }
        if (colon) {
            size_t n = (size_t)(at - colon - 1);
            c->password = dbpool__pct_decode(colon + 1, n);
            c->password_encoded = dup_range(colon + 1, n);
            if (!c->password || !c->password_encoded) {
                /* Never echo the text: it is the password. */
                rc = dbpool__pct_decode_error(colon + 1, n, "mysql URL: bad percent-escape in the password",
                                              e);
                goto out;
            }
        }
        hosts = at + 1;
    }

    /* Comma-separated fail-over hosts. */
    size_t cap = 1;
    for (const char *s = hosts; s < auth_end; s++)
        if (*s == ',')
            cap++;
    c->hosts = calloc(cap, sizeof *c->hosts);
    if (!c->hosts) {
        rc = dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory");
        goto out;
    }
    const char *s = hosts;
    for (;;) {
        const char *comma = memchr(s, ',', (size_t)(auth_end - s));
        const char *end = comma ? comma : auth_end;
        if (end == s && (cap > 1)) {
            rc = dbpool__seterr(e, DBPOOL_EINVAL, "mysql URL: empty entry in the host list");
            goto out;
        }
        rc = parse_host(s, (size_t)(end - s), &c->hosts[c->nhosts], e);
        if (rc)
            goto out;
        c->nhosts++;
        if (!comma)
            break;
        s = comma + 1;
    }

    if (slash && slash[1]) {
        c->database = dbpool__pct_decode(slash + 1, strlen(slash + 1));
        if (!c->database) {
            rc = dbpool__pct_decode_error(slash + 1, strlen(slash + 1),
                                          "mysql URL: bad percent-escape in the database name", e);
            goto out;
        }
    }

    for (size_t i = 0; i < nkv; i++) {
        rc = apply_key(c, kv[i].key, kv[i].value, e);
        if (rc)
            goto out;
    }
    if (!c->charset && !(c->charset = dbpool__strdup("utf8mb4"))) {
        rc = dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory");
        goto out;
    }
    if (c->socket) {
        if (c->nhosts > 1 || (c->hosts[0].host && strcmp(c->hosts[0].host, "localhost") != 0)) {
            rc = dbpool__seterr(e, DBPOOL_EINVAL,
                                "mysql URL: socket= connects through a unix socket; leave the host "
                                "empty or write localhost");
            goto out;
        }
    }
    if (c->ssl == SSL_DISABLED && (c->ssl_ca || c->ssl_cert || c->ssl_key) && c->ssl_mode_given) {
        rc = dbpool__seterr(e, DBPOOL_EINVAL,
                            "mysql URL: ssl-ca/ssl-cert/ssl-key given with ssl-mode=DISABLED");
        goto out;
    }
    if ((rc = absolute_path(&c->ssl_ca, "ssl-ca", e)) || (rc = absolute_path(&c->ssl_cert, "ssl-cert", e)) ||
        (rc = absolute_path(&c->ssl_key, "ssl-key", e)))
        goto out;
    /* Certificates without a mode mean the user wants TLS: prefer it. */
    if (!c->ssl_mode_given && (c->ssl_ca || c->ssl_cert || c->ssl_key))
        c->ssl = SSL_PREFERRED;

    size_t ns = 0;
    if (c->password && c->password[0]) {
        c->secrets[ns++] = c->password;
        if (strcmp(c->password_encoded, c->password) != 0)
            c->secrets[ns++] = c->password_encoded;
    }
    c->secrets[ns] = NULL;
    rc = DBPOOL_OK;
out:
    free(base);
    dbpool__kv_free(kv, nkv);
    return rc;
}

int dbpool__mysql_configure(const char *url, void **cfg, dbpool_error *e) {
    *cfg = NULL;
    my_cfg *c = calloc(1, sizeof *c);
    if (!c)
        return dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory");
    int rc = parse_url(c, url, e);
    if (rc) {
        dbpool__mysql_free_config(c);
        return rc;
    }
    *cfg = c;
    return DBPOOL_OK;
}

const char *const *dbpool__mysql_secrets(const void *cfg) {
    const my_cfg *c = cfg;
    return c && c->secrets[0] ? c->secrets : NULL;
}
