/* check.c — `dbpool check URL`: one health check, printed as JSON. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* Best effort, for the report when the pool could not even be opened. */
static const char *backend_of(const char *url) {
    static const struct {
        const char *prefix, *name;
    } schemes[] = {{"sqlite:", "sqlite"}, {"postgresql:", "postgresql"}, {"postgres:", "postgresql"},
                   {"mysql:", "mysql"},   {"mariadb:", "mysql"},         {"mock:", "mock"}};
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++)
        if (strncmp(url, schemes[i].prefix, strlen(schemes[i].prefix)) == 0)
            return schemes[i].name;
    return NULL;
}

static int print_doc(json_t *doc) {
    char *text = doc ? cli_json_text(doc) : NULL;
    json_decref(doc);
    if (!text)
        return cli_fail(CMD, "out of memory rendering the result: try again");
    bool ok = cli_print_text(text);
    free(text);
    return ok ? CLI_EXIT_OK : cli_fail(CMD, "cannot write the result to stdout: check the output stream");
}

int cli_check_main(int argc, char **argv) {
    static const char *const value_opts[] = {"timeout", NULL};
    const char *url = NULL;
    int64_t timeout_ms = 0;
    bool verbose = false, only_positional = false;
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
        const char *arg = argv[i];
        if (cli_opt_flag(arg, "help") || strcmp(arg, "-h") == 0) {
            fputs(usage_text, stdout);
            return CLI_EXIT_OK;
        }
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
                                       "--timeout '%s' is not a number of seconds above 0: "
                                       "use e.g. --timeout 5 or --timeout 0.5",
                                       v);
        } else if (!only_positional && cli_opt_flag(arg, "verbose")) {
            verbose = true;
        } else if (!only_positional && arg[0] == '-' && arg[1] != '\0') {
            return cli_usage_error(CMD, "unknown option '%s': see dbpool check --help", cli_opt_name(arg));
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
    if (timeout_ms > 0) {
        /* One bound for the whole check: waiting, connecting, the round trip. */
        o.acquire_timeout_ms = timeout_ms;
        if (o.connect_timeout_ms > timeout_ms)
            o.connect_timeout_ms = timeout_ms;
        if (o.validation_timeout_ms > timeout_ms)
            o.validation_timeout_ms = timeout_ms;
    }
    if (verbose) {
        o.log_fn = cli_log_stderr;
        o.log_level = DBPOOL_LOG_DEBUG;
    }

    dbpool *p = NULL;
    dbpool_error e;
    dbpool_health h;
    memset(&h, 0, sizeof h);
    int rc = dbpool_open(&p, url, &o, &e);
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
