/* registry.c — the compiled-in backends, chosen by URL scheme. */
#include "driver.h"
#include "internal.h"

#include <ctype.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

static const dbpool_driver *const drivers[] = {
    &dbpool__driver_sqlite,
#ifdef DBPOOL_HAVE_PG
    &dbpool__driver_pg,
#endif
#ifdef DBPOOL_HAVE_MYSQL
    &dbpool__driver_mysql,
#endif
    &dbpool__driver_mock,   NULL,
};

const dbpool_driver *dbpool__driver_for_url(const char *url, dbpool_error *e) {
    /* The caller reads the code from e: it needs one even when its own
     * caller passed none. */
    dbpool_error own;
    if (!e)
        e = &own;
    if (!url || !*url) {
        dbpool__seterr(e, DBPOOL_EINVAL,
                       "empty database URL: give one such as sqlite:app.db, "
                       "postgresql://user@127.0.0.1/db or mysql://user@127.0.0.1/db");
        return NULL;
    }
    const char *colon = strchr(url, ':');
    size_t len = colon ? (size_t)(colon - url) : 0;
    if (len == 0) {
        dbpool__seterr(e, DBPOOL_EINVAL,
                       "database URL has no scheme: start it with sqlite:, postgresql:// or mysql://");
        return NULL;
    }
    for (size_t i = 0; drivers[i]; i++) {
        for (size_t s = 0; drivers[i]->schemes[s]; s++) {
            const char *scheme = drivers[i]->schemes[s];
            if (strlen(scheme) == len && strncasecmp(scheme, url, len) == 0)
                return drivers[i];
        }
    }
    /* A backend left out of this build: say which library it needs, by
     * the name of the package that brings it (Debian's, which the scripts
     * and the README use). */
    static const struct {
        const char *scheme, *library, *package;
    } known_elsewhere[] = {
        {"postgresql", "libpq", "libpq-dev"},
        {"postgres", "libpq", "libpq-dev"},
        {"mysql", "MariaDB Connector/C", "libmariadb-dev"},
        {"mariadb", "MariaDB Connector/C", "libmariadb-dev"},
    };
    for (size_t i = 0; i < sizeof known_elsewhere / sizeof *known_elsewhere; i++) {
        if (strlen(known_elsewhere[i].scheme) == len &&
            strncasecmp(known_elsewhere[i].scheme, url, len) == 0) {
            dbpool__seterr(e, DBPOOL_EUNSUPPORTED,
                           "the %.*s backend is not compiled into this build of dbpool: it needs %s "
                           "(on Debian: apt-get install %s); install it, then configure and build "
                           "dbpool again",
                           (int)len, url, known_elsewhere[i].library, known_elsewhere[i].package);
            return NULL;
        }
    }
    /* The text before the ':' is quoted only when it can be a scheme
     * (RFC 3986: a letter, then letters, digits, '+', '-', '.') that
     * starts a URL: "user:password@host/db" without its scheme, or a
     * libpq key=value string ("password=secret:x host=h"), put a password
     * there. */
    bool scheme_like =
        len <= 32 && isalpha((unsigned char)url[0]) && (strncmp(colon, "://", 3) == 0 || !strchr(url, '@'));
    for (size_t i = 1; scheme_like && i < len; i++)
        scheme_like = isalnum((unsigned char)url[i]) || url[i] == '+' || url[i] == '-' || url[i] == '.';
    if (!scheme_like) {
        dbpool__seterr(e, DBPOOL_EINVAL,
                       "the database URL does not start with a scheme (the text before its first ':' "
                       "is not shown: it may hold a password): start it with sqlite:, postgresql:// or "
                       "mysql://; a key=value connection string is not taken, write it as a URL");
        return NULL;
    }
    dbpool__seterr(e, DBPOOL_EINVAL,
                   "unknown database URL scheme '%.*s': use sqlite:, postgresql://, "
                   "postgres://, mysql:// or mariadb://",
                   (int)len, url);
    return NULL;
}
