/*
 * stat.c — `dbpool stat URL [interval [count]]`: a small workload runs in
 * this process, and one line per interval shows what the pool looks like,
 * vmstat-style, with the header repeated every 20 lines.
 */
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define CMD "stat"
#define HEADER_EVERY 20
#define MAX_INTERVAL_S 3600
#define MAX_THREADS 1000
#define MAX_POOL 1000
#define MAX_COUNT 1000000000
/* A worker whose op failed waits this long before its next: against a
 * database that is down (an open breaker fails each acquire at once) the
 * workload ran millions of failed ops a second on every core it had. */
#define ERROR_PAUSE_MS 10

static const char usage_text[] =
    "Usage: dbpool stat URL [INTERVAL [COUNT]] [options]\n"
    "\n"
    "Runs a small workload against a pool opened on URL, in this process:\n"
    "threads that acquire, run SELECT 1, hold the lease for a random 0-2 ms and\n"
    "release. Every INTERVAL seconds (above 0 and at most 3600, default 1,\n"
    "fractions allowed) prints one line on stdout, COUNT lines in all\n"
    "(1..1000000000; default: until Ctrl-C); the header is repeated every 20\n"
    "lines.\n"
    "\n"
    "Columns:\n"
    "  time     wall-clock time of the line\n"
    "  total    open connections (idle + used + connecting), now\n"
    "  idle     idle connections, now\n"
    "  used     leased connections, now\n"
    "  wait     callers waiting for a connection, now\n"
    "  ops/s    ops finished per second over the interval\n"
    "  errs     failed ops in the interval\n"
    "  p99ms    99th percentile of acquire wait since the start, milliseconds\n"
    "  tmo      acquire timeouts in the interval\n"
    "  created  connections opened in the interval\n"
    "  closed   connections closed in the interval\n"
    "\n"
    "A thread whose op failed waits 10 ms before its next, so that a database\n"
    "that is down is not hammered; the first failure of each kind (its error\n"
    "code and message) is shown on stderr, after the line that counts it.\n"
    "\n"
    "Options:\n"
    "  --threads N    workload threads, 1..1000 (default 4)\n"
    "  --pool-size N  the pool's max_size, 1..1000 (default 3, whatever\n"
    "                 --threads says: one fewer than the default 4 threads,\n"
    "                 so that waiting shows)\n"
    "  --help         show this help\n"
    "\n"
    "Exit status: 0 done (COUNT lines, or Ctrl-C); 1 the database could not be\n"
    "reached, or stopped answering (an op still running 5 s after the last line\n"
    "is left unfinished); 2 the command line is wrong.\n"
    "\n"
    "Example:\n"
    "  dbpool stat sqlite::memory: 1 10 --threads 8 --pool-size 4\n";

static void header(void) {
    printf("%8s %6s %5s %5s %5s %9s %5s %8s %5s %7s %6s\n", "time", "total", "idle", "used", "wait", "ops/s",
           "errs", "p99ms", "tmo", "created", "closed");
}

/* "-1", "-0.5": after the URL, a bad INTERVAL or COUNT rather than an
 * option, so that it gets the same message as 0 does. */
static bool negative_number(const char *arg) {
    return arg[0] == '-' && ((arg[1] >= '0' && arg[1] <= '9') || arg[1] == '.');
}

int cli_stat_main(int argc, char **argv) {
    static const char *const value_opts[] = {"threads", "pool-size", NULL};
    static const char *const flags[] = {"help", NULL};
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (cli_opt_flag(argv[i], "help") || strcmp(argv[i], "-h") == 0)
            return cli_print_help(CMD, usage_text);
    }
    const char *url = NULL, *interval_s = NULL, *count_s = NULL;
    int threads = 4, pool_size = 3;
    bool only_positional = false;
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
            if (!cli_parse_int(v, 1, MAX_THREADS, &threads))
                return cli_usage_error(CMD,
                                       "--threads '%s' is not a number from 1 to %d: use e.g. --threads 8",
                                       cli_shown(v), MAX_THREADS);
        } else if (which == 1) {
            if (!cli_parse_int(v, 1, MAX_POOL, &pool_size))
                return cli_usage_error(
                    CMD, "--pool-size '%s' is not a number from 1 to %d: use e.g. --pool-size 4",
                    cli_shown(v), MAX_POOL);
        } else if (!only_positional && arg[0] == '-' && arg[1] != '\0' && !(url && negative_number(arg))) {
            return cli_bad_option(CMD, arg, flags);
        } else if (!url) {
            url = arg;
        } else if (!interval_s) {
            interval_s = arg;
        } else if (!count_s) {
            count_s = arg;
        } else {
            /* Not echoed: it may be a second URL with a password. */
            return cli_usage_error(CMD, "too many arguments: dbpool stat URL [INTERVAL [COUNT]]");
        }
    }
    if (!url)
        return cli_usage_error(CMD, "the database URL is missing: e.g. dbpool stat sqlite::memory: 1 10");
    int64_t interval_ms = 1000;
    if (interval_s && (!cli_parse_seconds(interval_s, &interval_ms) || interval_ms > MAX_INTERVAL_S * 1000LL))
        return cli_usage_error(
            CMD, "interval '%s' is not a number of seconds above 0 and at most %d: use e.g. 1 or 0.5",
            cli_shown(interval_s), MAX_INTERVAL_S);
    int count = 0; /* 0: until a signal */
    if (count_s && !cli_parse_int(count_s, 1, MAX_COUNT, &count))
        return cli_usage_error(CMD,
                               "count '%s' is not a number of lines from 1 to %d: use e.g. 10, or leave "
                               "COUNT out to run until Ctrl-C",
                               cli_shown(count_s), MAX_COUNT);

    dbpool_options o;
    dbpool_options_init(&o);
    o.name = "stat";
    o.min_size = 0;
    o.max_size = pool_size;
    o.acquire_timeout_ms = 5000;
    /* Each connect within it too, as in check and bench: the open gives up
     * after 5 s, and its error must name that bound, not 10 s. */
    o.connect_timeout_ms = o.acquire_timeout_ms;
    dbpool *p = NULL;
    dbpool_error e;
    char buf[700];
    int rc = dbpool_open(&p, url, &o, &e);
    if (rc == DBPOOL_EINVAL)
        return cli_usage_error(CMD, "%s: check the URL (see dbpool stat --help)",
                               cli_errtext(rc, &e, buf, sizeof buf));
    /* A backend this build lacks: nothing was connected to, and the
     * message already says what to install. */
    if (rc == DBPOOL_EUNSUPPORTED)
        return cli_fail(CMD, "%s", cli_errtext(rc, &e, buf, sizeof buf));
    if (rc != DBPOOL_OK)
        return cli_fail(CMD, "cannot connect: %s: check the URL and that the database is up",
                        cli_errtext(rc, &e, buf, sizeof buf));

    cli_stop_signals_install();
    cli_load_config cfg = {
        .pool = p,
        .mode = CLI_MODE_STATEMENT,
        .query = "SELECT 1",
        .threads = threads,
        .acquire_timeout_ms = o.acquire_timeout_ms,
        .hold_ns = 0,
        .hold_jitter_ns = 2000000,
        .pause_after_error_ns = ERROR_PAUSE_MS * 1000000LL,
    };
    cli_load *load = NULL;
    char why[300];
    if (!cli_load_start(&load, &cfg, why, sizeof why)) {
        dbpool_close(p);
        return cli_fail(CMD, "%s: lower --threads", why);
    }

    int64_t start = cli_load_started_ns(load), interval_ns = interval_ms * 1000000LL;
    dbpool_stats prev;
    dbpool_get_stats(p, &prev);
    cli_load_report snap;
    uint64_t prev_ops = 0, prev_errors = 0;
    int64_t prev_ns = start;
    int code = CLI_EXIT_OK;
    int64_t tick = start;
    bool told[CLI_ERR_SLOTS] = {false}; /* error kinds already shown on stderr */
    for (int64_t line = 0; count == 0 || line < count; line++) {
        /* Ticks on a fixed grid, so that lines do not drift. A tick
         * already past once the last line is out means that line came a
         * whole interval late: the process did not run (stopped with
         * Ctrl-Z and continued, a debugger, a paused VM). The grid then
         * starts again one interval after that line. Kept, it printed a
         * line for every tick missed, all at once, each over an interval
         * of microseconds (0 ops/s), and they used up COUNT. */
        tick += interval_ns;
        int64_t before = cli_now_ns();
        if (tick <= before)
            tick = before + interval_ns;
        cli_nap_ns(tick - before);
        if (cli_stop_requested())
            break;
        int64_t now = cli_now_ns();
        dbpool_stats s;
        dbpool_get_stats(p, &s);
        cli_load_snapshot(load, &snap);
        double dt = (double)(now - prev_ns) / 1e9;
        time_t wall = time(NULL);
        struct tm tm;
        char clock[16] = "?";
        if (localtime_r(&wall, &tm))
            strftime(clock, sizeof clock, "%H:%M:%S", &tm);
        if (line % HEADER_EVERY == 0)
            header();
        printf("%8s %6d %5d %5d %5d %9.0f %5llu %8.3f %5llu %7llu %6llu\n", clock, s.total, s.idle, s.in_use,
               s.waiting, dt > 0 ? (double)(snap.ops - prev_ops) / dt : 0.0,
               (unsigned long long)(snap.errors - prev_errors), s.acquire_wait.p99_ms,
               (unsigned long long)(s.timeouts - prev.timeouts),
               (unsigned long long)(s.created - prev.created),
               (unsigned long long)(s.destroyed - prev.destroyed));
        if (fflush(stdout) != 0 || ferror(stdout)) {
            /* Ctrl-C while the line waited for a reader that is not
             * reading (| less): the stop asked for, as anywhere else. */
            if (cli_stdout_interrupted(errno))
                break;
            /* A reader that went away (| head) ends the command quietly. */
            code =
                cli_stdout_gone(errno)
                    ? CLI_EXIT_FAILED
                    : cli_fail(CMD, "cannot write to stdout (%s): check the output stream", strerror(errno));
            break;
        }
        /* Why ops fail, once per kind: the figures alone say only how
         * many (after the line, which stdout has flushed). */
        for (int slot = 0; slot < CLI_ERR_SLOTS; slot++) {
            char sample[256];
            if (told[slot] || snap.errors_by[slot] == 0 ||
                !cli_load_error_sample(load, slot, sample, sizeof sample))
                continue;
            told[slot] = true;
            fprintf(stderr, "dbpool stat: %s ops fail with %s (counted in errs): %s\n", clock,
                    cli_err_slot_name(slot), sample);
        }
        prev = s;
        prev_ops = snap.ops;
        prev_errors = snap.errors;
        prev_ns = now;
    }
    /* An op still running gets as long as an acquire may wait, as in
     * bench: a query on a server that stopped answering would otherwise
     * hold the command for ever after its last line (or its Ctrl-C). */
    cli_load_report r;
    int unfinished = cli_load_finish_within(load, &r, o.acquire_timeout_ms * 1000000LL);
    if (unfinished > 0) {
        int failed =
            cli_fail(CMD,
                     "%d op%s still running %.1f s after the last line, left unfinished: "
                     "check that the database is answering",
                     unfinished, unfinished == 1 ? " was" : "s were", (double)o.acquire_timeout_ms / 1000.0);
        if (code == CLI_EXIT_OK)
            code = failed;
    }
    dbpool_close(p); /* the leases of unfinished ops stay valid */
    return code;
}
