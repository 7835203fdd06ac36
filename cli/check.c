/* check.c — `dbpool check URL`: one health check, printed as JSON. */
#include "cli.h"
#include "internal.h" /* the library's own URL decoding: check reads URLs as it does */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define CMD "check"

static const char usage_text[] =
    "Usage: dbpool check URL [options]\n"
    "\n"
    "Opens a pool of one connection to URL, runs one validation round trip and\n"
    "prints the result as JSON on stdout:\n"
    "  {\"status\": \"healthy\", \"backend\": \"sqlite\", \"sqlite_version\": \"3.40.1\",\n"
    "   \"round_trip_ms\": 0.012, \"acquire_ms\": 0.3}\n"
    "When unhealthy, \"status\" is \"unhealthy\" and \"error\" and \"error_code\" say why.\n"
    "\n"
    "URL is sqlite:PATH, sqlite::memory:, postgresql://... or mysql://...\n"
    "A SQLite file that does not exist is unhealthy (DBPOOL_ENOTFOUND): the check\n"
    "does not create it, unless the URL sets mode=rwc or create_if_missing=true;\n"
    "nor does it change an existing file's journal mode (unless journal_mode is set).\n"
    "\n"
    "Options:\n"
    "  --timeout SECONDS  bound on connecting and on the round trip, > 0,\n"
    "                     fractions allowed (default 10)\n"
    "  --verbose          log the pool's activity on stderr\n"
    "  --help             show this help\n"
    "\n"
    "Exit status: 0 healthy; 1 unhealthy; 2 the command line or URL is wrong.\n"
    "\n"
    "Example:\n"
    "  dbpool check 'sqlite:/var/lib/app/app.db?mode=rw' --timeout 2\n";

/* Best effort, for the report when the pool could not even be opened.
 * The schemes the library takes, in any case, as it reads them. */
static const char *backend_of(const char *url) {
    static const struct {
        const char *prefix, *name;
    } schemes[] = {{"sqlite:", "sqlite"},
                   {"sqlite3:", "sqlite"},
                   {"postgresql:", "postgresql"},
                   {"postgres:", "postgresql"},
                   {"mysql:", "mysql"},
                   {"mariadb:", "mysql"},
                   {"mock:", "mock"}};
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++)
        if (strncasecmp(url, schemes[i].prefix, strlen(schemes[i].prefix)) == 0)
            return schemes[i].name;
    return NULL;
}

/* True when the URL's query ("?k=v&k=v") sets `key`, read as the library
 * reads it: percent-decoded ("create%5Fif%5Fmissing" is that key). */
static bool url_has_key(const char *url, const char *key) {
    const char *p = strchr(url, '?');
    while (p) {
        p++; /* past the '?' or '&' */
        char *k = dbpool__pct_decode(p, strcspn(p, "=&"));
        bool same = k && strcmp(k, key) == 0;
        free(k);
        if (same)
            return true;
        p = strchr(p, '&');
    }
    return false;
}

/* The path part of a sqlite: or sqlite3: URL (up to the end, query
 * included), or NULL for another backend. */
static const char *sqlite_path(const char *url) {
    const char *colon = strchr(url, ':');
    size_t scheme = colon ? (size_t)(colon - url) : 0;
    if (!((scheme == 6 && strncasecmp(url, "sqlite", 6) == 0) ||
          (scheme == 7 && strncasecmp(url, "sqlite3", 7) == 0)))
        return NULL;
    const char *path = colon + 1;
    return strncmp(path, "//", 2) == 0 ? path + 2 : path;
}

/*
 * A health check must not change what it checks. With the library's SQLite
 * defaults it would: a mistyped path would be created empty (mode rwc) and
 * reported healthy, and an existing file would be switched to WAL (the
 * journal mode is stored in the file). Returns the URL to open, malloc'd:
 * for a SQLite file, with create_if_missing=false and journal_mode=unchanged
 * added where the URL does not say otherwise; NULL when out of memory.
 * *forbade_create says whether create_if_missing=false was added.
 */
static char *url_for_check(const char *url, bool *forbade_create) {
    *forbade_create = false;
    const char *path = sqlite_path(url);
    bool file = false;
    if (path) {
        /* As the library reads it: ":memory:" written percent-encoded
         * ("%3Amemory%3A") is the in-memory database too. */
        char *decoded = dbpool__pct_decode(path, strcspn(path, "?"));
        file = !decoded || strcmp(decoded, ":memory:") != 0;
        free(decoded);
    }
    bool add_create = file && !url_has_key(url, "mode") && !url_has_key(url, "create_if_missing");
    bool add_journal = file && !url_has_key(url, "journal_mode");
    if (!add_create && !add_journal)
        return strdup(url);
    static const char create[] = "create_if_missing=false", journal[] = "journal_mode=unchanged";
    size_t n = strlen(url), cap = n + sizeof create + sizeof journal + 2;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    const char *sep = !strchr(url, '?') ? "?" : url[n - 1] == '?' || url[n - 1] == '&' ? "" : "&";
    snprintf(out, cap, "%s%s%s%s%s", url, sep, add_create ? create : "", add_create && add_journal ? "&" : "",
             add_journal ? journal : "");
    *forbade_create = add_create;
    return out;
}

static int print_doc(json_t *doc) {
    char *text = doc ? cli_json_text(doc) : NULL;
    json_decref(doc);
    if (!text)
        return cli_fail(CMD, "out of memory rendering the result: try again");
    bool ok = cli_print_text(text);
    int write_errno = errno;
    free(text);
    return ok ? CLI_EXIT_OK
           : cli_stdout_gone(write_errno)
               ? CLI_EXIT_FAILED
               : cli_fail(CMD, "cannot write the result to stdout (%s): check the output stream",
                          strerror(write_errno));
}

int cli_check_main(int argc, char **argv) {
    static const char *const value_opts[] = {"timeout", NULL};
    static const char *const flags[] = {"verbose", "help", NULL};
    const char *url = NULL;
    int64_t timeout_ms = 10000; /* the help's default: a check answers within seconds, not the pool's 30 s */
    bool verbose = false, only_positional = false;
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
        const char *arg = argv[i];
        if (cli_opt_flag(arg, "help") || strcmp(arg, "-h") == 0)
            return cli_print_help(CMD, usage_text);
    }
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *v = NULL;
        if (!only_positional && strcmp(arg, "--") == 0) {
            only_positional = true;
            continue;
        }
        int which = only_positional ? -1 : cli_opt_match(CMD, argc, argv, &i, value_opts, &v);
        if (which == -2)
            return CLI_EXIT_USAGE;
        if (which == 0) {
            if (!cli_parse_seconds(v, &timeout_ms))
                return cli_usage_error(CMD,
                                       "--timeout '%s' is not a number of seconds above 0 and at most "
                                       "a year: use e.g. --timeout 5 or --timeout 0.5",
                                       cli_shown(v));
        } else if (!only_positional && cli_opt_flag(arg, "verbose")) {
            verbose = true;
        } else if (!only_positional && arg[0] == '-' && arg[1] != '\0') {
            return cli_bad_option(CMD, arg, flags);
        } else if (url) {
            /* Not echoed: it may be a second URL with a password. */
            return cli_usage_error(CMD, "more than one URL given: check one database at a time");
        } else {
            url = arg;
        }
    }
    if (!url)
        return cli_usage_error(CMD, "the database URL is missing: e.g. dbpool check sqlite:app.db");

    dbpool_options o;
    dbpool_options_init(&o);
    o.name = "check";
    o.min_size = 0;
    o.max_size = 1;
    /* The bound on waiting for the connection, and on each of connecting
     * and the round trip. */
    o.acquire_timeout_ms = timeout_ms;
    if (o.connect_timeout_ms > timeout_ms)
        o.connect_timeout_ms = timeout_ms;
    if (o.validation_timeout_ms > timeout_ms)
        o.validation_timeout_ms = timeout_ms;
    if (verbose) {
        o.log_fn = cli_log_stderr;
        o.log_level = DBPOOL_LOG_DEBUG;
    }

    bool creation_forbidden_here;
    char *checked_url = url_for_check(url, &creation_forbidden_here);
    if (!checked_url)
        return cli_fail(CMD, "out of memory: try again");
    dbpool *p = NULL;
    dbpool_error e;
    dbpool_health h;
    memset(&h, 0, sizeof h);
    int rc = dbpool_open(&p, checked_url, &o, &e);
    free(checked_url);
    if (rc == DBPOOL_EINVAL) {
        char buf[700];
        return cli_usage_error(CMD, "%s: check the URL (see dbpool check --help)",
                               cli_errtext(rc, &e, buf, sizeof buf));
    }
    if (rc != DBPOOL_OK) {
        /* The database is there to be checked, and it failed: that is an
         * answer (unhealthy), not a usage error. */
        h.status = DBPOOL_UNHEALTHY;
        h.backend = backend_of(url);
        h.error = e;
        h.error.code = rc;
        /* Only when the file is really missing (the driver's words for
         * it): ENOTFOUND also means a file that is no database. */
        if (rc == DBPOOL_ENOTFOUND && creation_forbidden_here &&
            strstr(e.message, "does not exist and the URL forbids creating it")) {
            /* The library's message blames the URL for forbidding creation,
             * which the user did not write: say what check itself did. */
            /* The file's name, as the library decoded it from the URL: the
             * file "a b.db" of sqlite:a%20b.db is the one missing. */
            const char *path = sqlite_path(url);
            size_t path_len = strcspn(path, "?");
            char *decoded = dbpool__pct_decode(path, path_len);
            if (decoded) {
                path = decoded;
                path_len = strlen(decoded);
            }
            /* A relative path is looked for in the working directory,
             * which a check run by a service or cron is not the user's:
             * say which (the library makes it absolute the same way). */
            char cwd[4096], where[300] = "";
            if (path_len > 0 && path[0] != '/' && getcwd(cwd, sizeof cwd))
                snprintf(where, sizeof where,
                         " (a relative path: looked for in the working directory %.200s)", cwd);
            snprintf(h.error.message, sizeof h.error.message,
                     "SQLite database '%.*s'%s does not exist: check the path in the URL (dbpool check "
                     "does not create databases; add ?mode=rwc to the URL to allow it)",
                     (int)(path_len > (where[0] ? 200 : 300) ? (where[0] ? 200 : 300) : path_len), path,
                     where);
            free(decoded);
        }
    } else {
        rc = dbpool_check_health(p, &h, &e);
        if (rc != DBPOOL_OK && h.status == DBPOOL_HEALTHY) {
            /* Trust the return value over a status the call may not have filled. */
            h.status = DBPOOL_UNHEALTHY;
            h.error = e;
            h.error.code = rc;
        } else if (h.status != DBPOOL_HEALTHY && h.error.code == 0) {
            h.error = e;
            h.error.code = rc != DBPOOL_OK ? rc : DBPOOL_EUNAVAILABLE;
        }
        if (!h.backend)
            h.backend = dbpool_backend(p);
    }
    int code = print_doc(cli_health_json(&h));
    /* h.backend is borrowed from the pool: render before closing it. */
    dbpool_close(p);
    if (code != CLI_EXIT_OK)
        return code;
    return h.status == DBPOOL_HEALTHY ? CLI_EXIT_OK : CLI_EXIT_FAILED;
}
