/*
 * bench.c — `dbpool bench URL`: a load test of a pool, bounded in time and
 * in count, with a live progress line on a terminal and a summary (a table,
 * or JSON with --json) at the end. Failed ops are counted by error code and
 * never stop the run; only failing to connect at the start does.
 */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CMD "bench"

#define MAX_THREADS 10000
#define MAX_POOL 10000
#define MAX_DURATION_S 600
#define MAX_BURST 100000000
#define MAX_HOLD_MS 10000.0

static const char usage_text[] =
    "Usage: dbpool bench URL [options]\n"
    "\n"
    "Runs a load test against a pool opened on URL and prints a summary on\n"
    "stdout: ops, ops/s, errors by code, acquire wait, use time and hand-off delay\n"
    "(a waiter handed a connection, until it ran) p50/p95/p99/max, connections\n"
    "created, peak in use, timeouts, and the callers still waiting for a\n"
    "connection when the run stopped (their waits are in no figure above).\n"
    "On a terminal a progress line (elapsed, ops/s, p99 acquire wait, in use,\n"
    "waiting) is redrawn on stderr.\n"
    "A failed op is counted under its error code and the run goes on; Ctrl-C\n"
    "stops the run early and still prints the summary.\n"
    "\n"
    "Options:\n"
    "  --threads N          concurrent callers, 1..10000 (default 4); each thread\n"
    "                       has a 128 KiB stack, so 1000 callers are cheap\n"
    "  --pool-size N        the pool's max_size, 1..10000 (default 10); a pool_max\n"
    "                       key in the URL overrides it, and the summary shows\n"
    "                       the size the pool really has. Not with\n"
    "                       --mode connect-per-query\n"
    "  --duration SECONDS   how long to run, > 0 and <= 600, fractions allowed\n"
    "                       (default 5; with --burst, a cap that defaults to 60)\n"
    "  --mode MODE          what one op is (default cycle; statement with --query):\n"
    "                         cycle              acquire + release\n"
    "                         statement          acquire, run the query, release\n"
    "                         connect-per-query  open a pool of exactly one\n"
    "                                            connection (no maintenance thread,\n"
    "                                            no retries), acquire, run the query,\n"
    "                                            release, close: the cost of a fresh\n"
    "                                            connection per query, through the\n"
    "                                            public API\n"
    "  --query SQL          the statement of an op (default SELECT 1); its rows\n"
    "                       are read and dropped\n"
    "  --hold-ms MS         keep each lease this long before releasing,\n"
    "                       0..10000, fractions allowed (default 0)\n"
    "  --burst N            fire N ops in all, as fast as the threads can, and\n"
    "                       report how long they took (1..100000000)\n"
    "  --timeout SECONDS    how long one acquire may wait (default 5), and a\n"
    "                       connect. When the run ends, a caller still waiting\n"
    "                       gives up at once (counted as waiting at stop); an op\n"
    "                       still running (a query, a connect) is waited for up\n"
    "                       to this long, and one that has not returned by then\n"
    "                       (a database that stopped answering) is counted as\n"
    "                       unfinished and left behind\n"
    "  --metrics-listen HOST:PORT\n"
    "                       serve GET /metrics (Prometheus text) during the run;\n"
    "                       HOST must be loopback: 127.0.0.1 (127.0.0.0/8), [::1]\n"
    "                       or localhost; PORT 0 picks a free port. Needs a build\n"
    "                       with libmicrohttpd. Not with --mode connect-per-query,\n"
    "                       whose ops share no pool. A connection is closed after\n"
    "                       3 s of silence or 8 s in all, and none holds the run\n"
    "                       past its end by more than 0.1 s\n"
    "  --json               print the summary as one JSON document instead\n"
    "  --verbose            log the pool's activity on stderr\n"
    "  --help               show this help\n"
    "\n"
    "Exit status: 0 the run finished (failed ops are counted, not fatal);\n"
    "1 the database could not be reached at the start, or ops were unfinished\n"
    "(the summary is printed first), or a stop signal came while the summary\n"
    "waited for stdout's reader (it is incomplete); 2 the command line is\n"
    "wrong, or the --metrics-listen port is taken or cannot be used.\n"
    "\n"
    "Examples:\n"
    "  dbpool bench sqlite::memory: --threads 1000 --pool-size 10 --duration 10\n"
    "  dbpool bench 'postgresql://app@127.0.0.1/app' --threads 50 --duration 30 --mode statement\n"
    "  dbpool bench sqlite::memory: --burst 10000 --threads 100 --json\n";

typedef struct bench_args {
    const char *url;
    int threads;
    int pool_size;        /* after the open: the pool's real max_size */
    bool pool_size_given; /* --pool-size was on the command line */
    int64_t duration_ms;  /* 0: not given */
    cli_load_mode mode;
    bool mode_given;
    const char *query;
    double hold_ms;
    int burst;
    int64_t timeout_ms;
    const char *listen;
    bool json;
    bool verbose;
} bench_args;

static const char *mode_name(cli_load_mode m) {
    switch (m) {
    case CLI_MODE_CYCLE:
        return "cycle";
    case CLI_MODE_STATEMENT:
        return "statement";
    default:
        return "connect-per-query";
    }
}

/* "scheme:..." holding what may be a password ("://", "@", password=...):
 * a database URL that took the place of --query's SQL, as
 * `--query $EMPTY "$DATABASE_URL"` does. No statement starts that way. */
static bool url_not_sql(const char *v) {
    size_t n = strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-");
    return n > 0 && v[n] == ':' && !cli_showable(v);
}

static int parse_args(int argc, char **argv, bench_args *a) {
    static const char *const value_opts[] = {"threads", "pool-size", "duration", "mode",           "query",
                                             "hold-ms", "burst",     "timeout",  "metrics-listen", NULL};
    static const char *const flags[] = {"json", "verbose", "help", NULL};
    bool only_positional = false;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *v = NULL;
        if (!only_positional && strcmp(arg, "--") == 0) {
            only_positional = true;
            continue;
        }
        int which = only_positional ? -1 : cli_opt_match(CMD, argc, argv, &i, value_opts, &v);
        switch (which) {
        case -2:
            return CLI_EXIT_USAGE;
        case 0:
            if (!cli_parse_int(v, 1, MAX_THREADS, &a->threads))
                return cli_usage_error(CMD,
                                       "--threads '%s' is not a number from 1 to %d: use e.g. --threads 50",
                                       cli_shown(v), MAX_THREADS);
            continue;
        case 1:
            if (!cli_parse_int(v, 1, MAX_POOL, &a->pool_size))
                return cli_usage_error(
                    CMD, "--pool-size '%s' is not a number from 1 to %d: use e.g. --pool-size 10",
                    cli_shown(v), MAX_POOL);
            a->pool_size_given = true;
            continue;
        case 2:
            if (!cli_parse_seconds(v, &a->duration_ms) || a->duration_ms > MAX_DURATION_S * 1000LL)
                return cli_usage_error(CMD,
                                       "--duration '%s' is not a number of seconds above 0 and at most %d: "
                                       "use e.g. --duration 30 or --duration 0.5",
                                       cli_shown(v), MAX_DURATION_S);
            continue;
        case 3:
            if (strcmp(v, "cycle") == 0)
                a->mode = CLI_MODE_CYCLE;
            else if (strcmp(v, "statement") == 0)
                a->mode = CLI_MODE_STATEMENT;
            else if (strcmp(v, "connect-per-query") == 0)
                a->mode = CLI_MODE_CONNECT;
            else
                return cli_usage_error(
                    CMD, "--mode '%s' is unknown: use cycle, statement or connect-per-query", cli_shown(v));
            a->mode_given = true;
            continue;
        case 4:
            if (!*v)
                return cli_usage_error(CMD, "--query is empty: give a statement, e.g. --query 'SELECT 1'");
            /* Run as SQL, it would be printed in the summary, password and all. */
            if (url_not_sql(v))
                return cli_usage_error(CMD,
                                       "--query '%s' is a database URL, not a statement: give the SQL "
                                       "after --query (an empty variable before the URL?), e.g. "
                                       "--query 'SELECT 1'",
                                       cli_shown(v));
            a->query = v;
            continue;
        case 5:
            if (!cli_parse_double(v, 0, MAX_HOLD_MS, &a->hold_ms))
                return cli_usage_error(CMD,
                                       "--hold-ms '%s' is not a number of milliseconds from 0 to %.0f: "
                                       "use e.g. --hold-ms 0.1",
                                       cli_shown(v), MAX_HOLD_MS);
            continue;
        case 6:
            if (!cli_parse_int(v, 1, MAX_BURST, &a->burst))
                return cli_usage_error(CMD,
                                       "--burst '%s' is not a number from 1 to %d: use e.g. --burst 10000",
                                       cli_shown(v), MAX_BURST);
            continue;
        case 7:
            if (!cli_parse_seconds(v, &a->timeout_ms))
                return cli_usage_error(CMD,
                                       "--timeout '%s' is not a number of seconds above 0 and at most "
                                       "a year: use e.g. --timeout 5 or --timeout 0.5",
                                       cli_shown(v));
            continue;
        case 8:
            a->listen = v;
            continue;
        default:
            break;
        }
        if (!only_positional && cli_opt_flag(arg, "json"))
            a->json = true;
        else if (!only_positional && cli_opt_flag(arg, "verbose"))
            a->verbose = true;
        else if (!only_positional && arg[0] == '-' && arg[1] != '\0')
            return cli_bad_option(CMD, arg, flags);
        else if (a->url)
            /* Not echoed: it may be a URL with a password. */
            return cli_usage_error(CMD, "more than one URL given: bench one database at a time");
        else
            a->url = arg;
    }
    if (!a->url)
        return cli_usage_error(CMD, "the database URL is missing: e.g. dbpool bench sqlite::memory:");
    if (a->query && a->mode_given && a->mode == CLI_MODE_CYCLE)
        return cli_usage_error(CMD, "--query is not run by --mode cycle: use --mode statement");
    if (a->query && !a->mode_given)
        a->mode = CLI_MODE_STATEMENT;
    if (a->pool_size_given && a->mode == CLI_MODE_CONNECT)
        return cli_usage_error(CMD, "--pool-size has no pool to size with --mode connect-per-query, where "
                                    "each op opens its own connection: drop --pool-size, or use --mode "
                                    "statement");
    /* The metrics are those of the pool the ops share, and in this mode
     * they share none: the page would only ever show zeros. */
    if (a->listen && a->mode == CLI_MODE_CONNECT)
        return cli_usage_error(CMD, "--metrics-listen serves the metrics of the pool the ops share, and "
                                    "--mode connect-per-query opens a new pool for each op: drop "
                                    "--metrics-listen, or use --mode statement");
    if (!a->query)
        a->query = "SELECT 1";
    if (a->duration_ms == 0)
        a->duration_ms = a->burst ? 60000 : 5000;
    return CLI_EXIT_OK;
}

/* ---- the summary -------------------------------------------------------- */

/* Milliseconds to the nanosecond: a pool cycle takes well under a microsecond. */
static json_t *ms_ns(double ms) { return isfinite(ms) ? json_real(round(ms * 1e6) / 1e6) : json_null(); }

static json_t *latency_json(const dbpool_latency *l) {
    return json_pack("{s:I, s:o, s:o, s:o, s:o, s:o}", "count", (json_int_t)l->count, "mean_ms",
                     ms_ns(l->mean_ms), "p50_ms", ms_ns(l->p50_ms), "p95_ms", ms_ns(l->p95_ms), "p99_ms",
                     ms_ns(l->p99_ms), "max_ms", ms_ns(l->max_ms));
}

static json_t *summary_json(const bench_args *a, const char *backend, const cli_load_report *r,
                            const dbpool_stats *s, bool interrupted) {
    bool pooled = a->mode != CLI_MODE_CONNECT;
    json_t *by = json_object(), *msgs = json_object();
    for (int k = 0; k < CLI_ERR_SLOTS; k++) {
        if (!r->errors_by[k])
            continue;
        json_object_set_new(by, cli_err_slot_name(k), json_integer((json_int_t)r->errors_by[k]));
        /* Library messages are redacted, but may quote a server's text in
         * another encoding. */
        json_t *m = cli_json_string_lossy(r->error_sample[k]);
        json_object_set_new(msgs, cli_err_slot_name(k), m ? m : json_null());
    }
    json_t *doc = json_object();
    json_object_set_new(doc, "backend", json_string(backend));
    json_object_set_new(doc, "mode", json_string(mode_name(a->mode)));
    /* The query may be in the database's encoding rather than UTF-8:
     * shown with '?' for such bytes rather than dropped. */
    json_object_set_new(doc, "query",
                        a->mode == CLI_MODE_CYCLE ? json_null() : cli_json_string_lossy(a->query));
    json_object_set_new(doc, "threads", json_integer(a->threads));
    /* Connect-per-query: each op opens its own pool of one. */
    json_object_set_new(doc, "pool_size", pooled ? json_integer(a->pool_size) : json_null());
    json_object_set_new(doc, "hold_ms", json_real(a->hold_ms)); /* as given: --hold-ms takes any fraction */
    json_object_set_new(doc, "duration_s", json_real((double)a->duration_ms / 1000.0));
    json_object_set_new(doc, "elapsed_s", cli_json_ms(r->elapsed_s));
    json_object_set_new(doc, "interrupted", json_boolean(interrupted));
    json_object_set_new(doc, "ops", json_integer((json_int_t)r->ops));
    json_object_set_new(
        doc, "ops_per_s",
        json_integer(r->elapsed_s > 0 ? (json_int_t)llround((double)r->ops / r->elapsed_s) : 0));
    json_object_set_new(doc, "errors", json_integer((json_int_t)r->errors));
    /* Ops still running --timeout after the stop: in no other figure. */
    json_object_set_new(doc, "unfinished", json_integer(r->unfinished));
    json_object_set_new(doc, "errors_by_code", by);
    json_object_set_new(doc, "error_messages", msgs);
    json_object_set_new(doc, "acquire_wait_ms", pooled ? latency_json(&s->acquire_wait) : json_null());
    json_object_set_new(doc, "use_time_ms", pooled ? latency_json(&s->use_time) : json_null());
    json_object_set_new(doc, "handoff_delay_ms", pooled ? latency_json(&s->handoff_delay) : json_null());
    json_object_set_new(doc, "op_latency_ms", latency_json(&r->op));
    json_object_set_new(doc, "connections_created",
                        json_integer((json_int_t)(pooled ? s->created : r->opened)));
    json_object_set_new(doc, "peak_in_use", pooled ? json_integer(s->peak_in_use) : json_null());
    json_object_set_new(doc, "timeouts",
                        json_integer((json_int_t)(pooled ? s->timeouts : r->errors_by[-DBPOOL_ETIMEDOUT])));
    /* Their waits, cut short by the stop, are in no histogram. */
    json_object_set_new(doc, "waiting_at_stop",
                        pooled ? json_integer((json_int_t)r->abandoned) : json_null());
    if (a->burst) {
        bool done = r->burst_s >= 0;
        json_object_set_new(
            doc, "burst",
            json_pack("{s:i, s:b, s:o, s:o}", "acquisitions", a->burst, "completed", done, "seconds",
                      done ? json_real(round(r->burst_s * 1e6) / 1e6) : json_null(), "per_s",
                      done && r->burst_s > 0 ? json_integer((json_int_t)llround(a->burst / r->burst_s))
                                             : json_null()));
    } else {
        json_object_set_new(doc, "burst", json_null());
    }
    /* Not the figures of the pool opened only to check the URL. */
    json_object_set_new(doc, "pool_stats", pooled ? cli_stats_json(s) : json_null());
    return doc;
}

/* A duration in the unit that suits it: "85 ns", "12.3 us", "4.56 ms", "1.20 s". */
static const char *human(double ms, char *buf, size_t cap) {
    if (!isfinite(ms) || ms < 0)
        snprintf(buf, cap, "-");
    else if (ms < 0.001)
        snprintf(buf, cap, "%.0f ns", ms * 1e6);
    else if (ms < 1)
        snprintf(buf, cap, "%.1f us", ms * 1e3);
    else if (ms < 1000)
        snprintf(buf, cap, "%.2f ms", ms);
    else
        snprintf(buf, cap, "%.2f s", ms / 1e3);
    return buf;
}

/* "-" throughout when nothing was observed (no hand-off in a run where
 * nobody waited), rather than zeros that read as measurements. */
static void latency_row(FILE *f, const char *name, const dbpool_latency *l) {
    char a[32], b[32], c[32], d[32];
    if (l->count == 0) {
        fprintf(f, "  %-20s %10s %10s %10s %10s\n", name, "-", "-", "-", "-");
        return;
    }
    fprintf(f, "  %-20s %10s %10s %10s %10s\n", name, human(l->p50_ms, a, sizeof a),
            human(l->p95_ms, b, sizeof b), human(l->p99_ms, c, sizeof c), human(l->max_ms, d, sizeof d));
}

static void summary_table(FILE *f, const bench_args *a, const char *backend, const cli_load_report *r,
                          const dbpool_stats *s, bool interrupted) {
    bool pooled = a->mode != CLI_MODE_CONNECT;
    char pool[48];
    if (pooled)
        snprintf(pool, sizeof pool, "pool of %d", a->pool_size);
    else
        snprintf(pool, sizeof pool, "a new connection per op");
    fprintf(f, "dbpool bench: %s, mode %s, %d thread%s, %s, %.2f s%s\n", backend, mode_name(a->mode),
            a->threads, a->threads == 1 ? "" : "s", pool, r->elapsed_s, interrupted ? " (interrupted)" : "");
    if (a->mode != CLI_MODE_CYCLE)
        fprintf(f, "  query: %s\n", a->query);
    fputc('\n', f);
    fprintf(f, "  %-20s %10llu\n", "ops", (unsigned long long)r->ops);
    fprintf(f, "  %-20s %10.0f\n", "ops/s", r->elapsed_s > 0 ? (double)r->ops / r->elapsed_s : 0.0);
    fprintf(f, "  %-20s %10llu\n", "errors", (unsigned long long)r->errors);
    if (r->unfinished)
        fprintf(f, "  %-20s %10d  still running %.1f s after the stop\n", "unfinished", r->unfinished,
                (double)a->timeout_ms / 1000.0);
    for (int k = 0; k < CLI_ERR_SLOTS; k++)
        if (r->errors_by[k])
            fprintf(f, "    %-18s %10llu  first: %s\n", cli_err_slot_name(k),
                    (unsigned long long)r->errors_by[k], r->error_sample[k]);
    if (a->burst) {
        if (r->burst_s >= 0)
            fprintf(f, "  %-20s %10d ops in %.6f s (%.0f/s)\n", "burst", a->burst, r->burst_s,
                    r->burst_s > 0 ? a->burst / r->burst_s : 0.0);
        else if (interrupted) /* not the --duration cap: the run was cut short */
            fprintf(f, "  %-20s %10d ops not finished: interrupted after %.2f s\n", "burst", a->burst,
                    r->elapsed_s);
        else
            fprintf(f, "  %-20s %10d ops not finished within %.1f s\n", "burst", a->burst,
                    (double)a->duration_ms / 1000.0);
    }
    fputc('\n', f);
    fprintf(f, "  %-20s %10s %10s %10s %10s\n", "", "p50", "p95", "p99", "max");
    if (pooled) {
        latency_row(f, "acquire wait", &s->acquire_wait);
        latency_row(f, "use time", &s->use_time);
        latency_row(f, "hand-off delay", &s->handoff_delay);
    }
    latency_row(f, "op latency", &r->op);
    fputc('\n', f);
    fprintf(f, "  %-20s %10llu\n", "connections created",
            (unsigned long long)(pooled ? s->created : r->opened));
    if (pooled)
        fprintf(f, "  %-20s %10d of %d\n", "peak in use", s->peak_in_use, s->max_size);
    fprintf(f, "  %-20s %10llu\n", "timeouts",
            (unsigned long long)(pooled ? s->timeouts : r->errors_by[-DBPOOL_ETIMEDOUT]));
    if (pooled && s->leaks_detected > 0) /* only with pool_leak_threshold in the URL */
        fprintf(f, "  %-20s %10llu (%llu reclaimed)\n", "leaks detected",
                (unsigned long long)s->leaks_detected, (unsigned long long)s->leaks_reclaimed);
    if (pooled)
        fprintf(f, "  %-20s %10llu\n", "waiting at stop", (unsigned long long)r->abandoned);
}

/* A stop signal came while the summary waited for a reader that was not
 * reading: what reached stdout is cut short, and the exit status says so. */
static int summary_cut(void) {
    return cli_fail(CMD, "stopped by a signal while the summary was being written to stdout, which was "
                         "not being read: the summary is incomplete");
}

/* ---- the run ------------------------------------------------------------ */

/* The summary reports the pool as it is: a pool_max key in the URL
 * overrides --pool-size, and a figure the pool does not have would make
 * "peak in use" and the waits impossible to read. */
static void report_pool_size(bench_args *a, dbpool *p) {
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    if (s.max_size == a->pool_size)
        return;
    if (a->pool_size_given) {
        fprintf(stderr,
                "dbpool bench: the pool has at most %d connections, not the %d of --pool-size: "
                "the URL's pool_max overrides --pool-size\n",
                s.max_size, a->pool_size);
        fflush(stderr);
    }
    a->pool_size = s.max_size;
}

int cli_bench_main(int argc, char **argv) {
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (cli_opt_flag(argv[i], "help") || strcmp(argv[i], "-h") == 0)
            return cli_print_help(CMD, usage_text);
    }
    bench_args a;
    memset(&a, 0, sizeof a);
    a.threads = 4;
    a.pool_size = 10;
    a.timeout_ms = 5000;
    int rc = parse_args(argc, argv, &a);
    if (rc != CLI_EXIT_OK)
        return rc;

    cli_listen_addr listen;
    if (a.listen) {
        if (!cli_metrics_parse_listen(CMD, a.listen, &listen))
            return CLI_EXIT_USAGE;
        if (!cli_metrics_available())
            return cli_usage_error(CMD,
                                   "--metrics-listen needs an HTTP server, and this dbpool was built "
                                   "without libmicrohttpd: install libmicrohttpd-dev and rebuild, or drop "
                                   "the option");
    }

    dbpool_options o;
    dbpool_options_init(&o);
    o.name = "bench";
    o.min_size = 0;
    o.max_size = a.pool_size;
    o.acquire_timeout_ms = a.timeout_ms;
    if (o.connect_timeout_ms > a.timeout_ms)
        o.connect_timeout_ms = a.timeout_ms;
    if (o.validation_timeout_ms > a.timeout_ms)
        o.validation_timeout_ms = a.timeout_ms;
    /* Zeroed now (no line drawn): the pool logs from its open on. */
    cli_progress pr;
    memset(&pr, 0, sizeof pr);
    if (a.verbose) {
        o.log_fn = cli_progress_log;
        o.log_user = &pr;
        o.log_level = DBPOOL_LOG_INFO;
    }
    dbpool *p = NULL;
    dbpool_error e;
    char buf[700];
    rc = dbpool_open(&p, a.url, &o, &e);
    if (rc == DBPOOL_EINVAL)
        return cli_usage_error(CMD, "%s: check the URL and options (see dbpool bench --help)",
                               cli_errtext(rc, &e, buf, sizeof buf));
    /* --timeout caps connect_timeout_ms, which the message names: say so,
     * or "connect_timeout_ms 500" points at an option never given. */
    if (rc == DBPOOL_ETIMEDOUT && o.connect_timeout_ms == a.timeout_ms)
        return cli_fail(CMD,
                        "cannot connect: %s: check that the database is up, or raise --timeout, which "
                        "bounds a connect too",
                        cli_errtext(rc, &e, buf, sizeof buf));
    /* A backend this build lacks: nothing was connected to, and the
     * message already says what to install. */
    if (rc == DBPOOL_EUNSUPPORTED)
        return cli_fail(CMD, "%s", cli_errtext(rc, &e, buf, sizeof buf));
    if (rc != DBPOOL_OK)
        return cli_fail(CMD, "cannot connect: %s: check the URL and that the database is up",
                        cli_errtext(rc, &e, buf, sizeof buf));
    if (a.mode != CLI_MODE_CONNECT) { /* there, each op opens its own pool of one */
        report_pool_size(&a, p);
    } else {
        /* A pool_min key in the URL would make every op open that many
         * connections, while the figures count one per op. */
        dbpool_stats s;
        dbpool_get_stats(p, &s);
        if (s.min_size > 1) {
            dbpool_close(p);
            return cli_usage_error(CMD,
                                   "--mode connect-per-query opens one connection per op, but the URL's "
                                   "pool_min asks for %d: remove pool_min from the URL",
                                   s.min_size);
        }
    }

    cli_metrics_server *metrics = NULL;
    if (a.listen) {
        char why[300];
        if (!cli_metrics_start(&metrics, p, &listen, why, sizeof why)) {
            dbpool_close(p);
            /* The address given cannot be used: the command line's to fix. */
            return cli_usage_error(CMD, "--metrics-listen: %s: pick another port, or 0 for a free one", why);
        }
        fprintf(stderr, "dbpool bench: serving metrics on http://%s:%d/metrics\n", listen.host, listen.port);
        fflush(stderr);
    }

    cli_stop_signals_install();
    cli_load_config cfg = {
        .pool = p,
        .url = a.url,
        .mode = a.mode,
        .query = a.query,
        .threads = a.threads,
        .acquire_timeout_ms = a.timeout_ms,
        .hold_ns = (int64_t)llround(a.hold_ms * 1e6),
        .hold_jitter_ns = 0,
        .max_ops = (uint64_t)a.burst,
    };
    cli_load *load = NULL;
    char why[300];
    if (!cli_load_start(&load, &cfg, why, sizeof why)) {
        cli_metrics_stop(metrics);
        dbpool_close(p);
        return cli_fail(CMD, "%s: lower --threads", why);
    }

    int64_t start = cli_load_started_ns(load);
    int64_t deadline = start + a.duration_ms * 1000000LL;
    cli_progress_init(&pr, start);
    for (;;) {
        int64_t now = cli_now_ns();
        if (now >= deadline || cli_load_done(load) || cli_stop_requested())
            break;
        if (pr.enabled) {
            cli_load_report snap;
            cli_load_snapshot(load, &snap);
            cli_progress_update(&pr, a.mode == CLI_MODE_CONNECT ? NULL : p, start, snap.ops);
        }
        int64_t step = a.burst ? 5000000 : 50000000;
        cli_nap_ns(deadline - now < step ? deadline - now : step);
    }
    bool interrupted = cli_stop_requested();
    cli_progress_clear(&pr);

    cli_load_report report;
    const cli_load_report *r = &report;
    /* An op still running gets as long as an acquire may wait: a query
     * on a server that stopped answering would otherwise hold the run,
     * and its summary, for ever. */
    cli_load_finish_within(load, &report, a.timeout_ms * 1000000LL);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    const char *backend = dbpool_backend(p);

    int code = CLI_EXIT_OK;
    if (a.json) {
        json_t *doc = summary_json(&a, backend, r, &s, interrupted);
        char *text = doc ? cli_json_text(doc) : NULL;
        json_decref(doc);
        if (!text)
            code = cli_fail(CMD, "out of memory rendering the result: try again");
        else if (!cli_print_text(text))
            code = cli_stdout_interrupted(errno) ? summary_cut()
                   : cli_stdout_gone(errno)
                       ? CLI_EXIT_FAILED
                       : cli_fail(CMD, "cannot write the result to stdout (%s): check the output stream",
                                  strerror(errno));
        free(text);
    } else {
        summary_table(stdout, &a, backend, r, &s, interrupted);
        if (fflush(stdout) != 0 || ferror(stdout))
            code = cli_stdout_interrupted(errno) ? summary_cut()
                   : cli_stdout_gone(errno)
                       ? CLI_EXIT_FAILED
                       : cli_fail(CMD, "cannot write the result to stdout (%s): check the output stream",
                                  strerror(errno));
    }
    if (r->unfinished) {
        fprintf(stderr,
                "dbpool bench: %d op%s still running %.1f s after the run stopped, left unfinished: "
                "check that the database is answering, or raise --timeout\n",
                r->unfinished, r->unfinished == 1 ? " was" : "s were", (double)a.timeout_ms / 1000.0);
        fflush(stderr);
        if (code == CLI_EXIT_OK)
            code = CLI_EXIT_FAILED;
    }
    cli_metrics_stop(metrics);
    dbpool_close(p); /* the leases of unfinished ops stay valid */
    return code;
}
