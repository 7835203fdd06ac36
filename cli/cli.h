/*
 * cli.h — what the subcommands of the `dbpool` command share: exit codes,
 * one-line error reporting, option parsing, the stderr logger, and the
 * JSON renderings of pool statistics and health. The command uses only the
 * public API (dbpool.h).
 */
#ifndef DBPOOL_CLI_H
#define DBPOOL_CLI_H

#include "dbpool.h"

#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Exit codes of every subcommand. */
enum {
    CLI_EXIT_OK = 0,     /* done (check: healthy) */
    CLI_EXIT_FAILED = 1, /* the work failed: a file, the database, unhealthy */
    CLI_EXIT_USAGE = 2   /* the command line is wrong */
};

/* Subcommands: argv[0] is the subcommand's name. Each returns an exit code. */
int cli_demo_main(int argc, char **argv);
int cli_check_main(int argc, char **argv);
int cli_bench_main(int argc, char **argv);
int cli_stat_main(int argc, char **argv);

/*
 * Print "dbpool <cmd>: <formatted>" as ONE line on stderr (newlines in the
 * text become spaces) and return the exit code. The text should say what
 * was wrong, then ": ", then what to do.
 */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int cli_fail(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * A closed pipe on stdout (`dbpool stat URL | head -1`: the reader went
 * away). main() ignores SIGPIPE, so that every backend sees the same thing
 * (Connector/C would ignore it for the whole process on its first connect,
 * while SQLite and libpq leave it to kill the process at the write): a
 * write to stdout fails with EPIPE instead. cli_stdout_gone(errno) after a
 * failed write to stdout says whether that was the cause, and remembers
 * it: the command then stops without a message (the reader is gone, not
 * the user's mistake), cleans up, and main() ends the process by SIGPIPE,
 * as a filter killed at the write ends (shell status 141).
 */
void cli_sigpipe_ignore(void);
bool cli_stdout_gone(int err);
bool cli_stdout_was_gone(void);
/*
 * A write to stdout that failed with err (EINTR) because a stop signal
 * came while it was blocked (a reader that is not reading: a full pipe
 * into `less`, a stalled consumer): true then, and what stdout still
 * buffers is dropped, so that neither the command nor exit() blocks on it
 * again. False for any other failure.
 */
bool cli_stdout_interrupted(int err);

/* A library failure as "<message> (DBPOOL_E...)" in buf; returns buf.
 * `e` may be NULL or empty, then dbpool_strerror(code) is used. */
const char *cli_errtext(int code, const dbpool_error *e, char *buf, size_t cap);

/*
 * Match argv[*i] against the option `--name`: either "--name VALUE" (then
 * *i advances past VALUE) or "--name=VALUE". Returns 1 with *value set, 0 if
 * argv[*i] is another option, or -1 when the value is missing (the caller
 * reports a usage error).
 */
int cli_opt_value(int argc, char **argv, int *i, const char *name, const char **value);
/*
 * cli_opt_value over a NULL-terminated list of option names: the index of
 * the one that matched (value in *value), -1 when none did, or -2 after
 * reporting "option --X needs a value" as a usage error of `cmd`.
 */
int cli_opt_match(const char *cmd, int argc, char **argv, int *i, const char *const names[],
                  const char **value);
/* True when argv[i] is exactly "--name". */
bool cli_opt_flag(const char *arg, const char *name);
/*
 * Report an option `cmd` does not take as a usage error, and return
 * CLI_EXIT_USAGE: "option --NAME takes no value" when arg is "--NAME=VALUE"
 * for one of the NULL-terminated value-less flags (without this, "--json=1"
 * would be called an unknown option), else "unknown option" (the name only).
 */
int cli_bad_option(const char *cmd, const char *arg, const char *const flags[]);
/* The option's name without any "=value" part, for error messages that
 * must not echo a value (it may hold a password). Without an '=', an
 * argument that cli_showable refuses ("-postgresql://u:pw@h", "--db" and a
 * URL joined by a non-breaking space) is shown up to its name's end only,
 * with a note that the rest is not shown. Static buffer. */
const char *cli_opt_name(const char *arg);

/* An argument fit to quote in an error message: one that may hold a
 * password (a URL pasted after an option that takes a value, as
 * `--timeout $EMPTY "$DATABASE_URL"` does) is not shown. cli_shown gives
 * the argument, or CLI_NOT_SHOWN in its place. */
#define CLI_NOT_SHOWN "(not shown: it looks like a URL, which may hold a password)"
bool cli_showable(const char *arg);
const char *cli_shown(const char *arg);

/* A base-10 int in [lo, hi], the whole string; false otherwise. */
bool cli_parse_int(const char *s, int lo, int hi, int *out);
/* A plain decimal number, fractions allowed, in [lo, hi]; false otherwise. */
bool cli_parse_double(const char *s, double lo, double hi, double *out);
/* Seconds, fractions allowed ("0.001", "2.5"), strictly positive and
 * finite; *ms is rounded up so that any positive value gives >= 1 ms. */
bool cli_parse_seconds(const char *s, int64_t *ms);

/* dbpool_log_fn printing "dbpool[level]: message" on stderr. */
void cli_log_stderr(void *user, dbpool_log_level level, const char *message);

/* The pool's counters as a JSON object (new reference). Keys: created,
 * reused, destroyed, acquired, timeouts, connect_errors, ..., pool_size
 * (max_size), min_size, peak (peak_in_use), peak_waiting, destroyed_by. */
json_t *cli_stats_json(const dbpool_stats *s);
/* A health check as a JSON object (new reference): status, backend,
 * "<backend>_version", round_trip_ms, acquire_ms, and error/error_code when
 * unhealthy. */
json_t *cli_health_json(const dbpool_health *h);
/* Milliseconds rounded to microseconds, so that the JSON stays readable. */
json_t *cli_json_ms(double ms);

/* The document as 2-space indented text with a final newline (malloc'd),
 * or NULL when out of memory. */
char *cli_json_text(const json_t *doc);
/* Write text to stdout and flush; false on a write error. */
bool cli_print_text(const char *text);
/* Print a command's help on stdout: CLI_EXIT_OK, or CLI_EXIT_FAILED after
 * saying on stderr that stdout could not be written (full disk, closed). */
int cli_print_help(const char *cmd, const char *text);
/* A JSON string of s; bytes that are not valid UTF-8 (json_string refuses
 * them) become '?' rather than the key going missing. NULL when out of memory. */
json_t *cli_json_string_lossy(const char *s);

/* What cli_write_file_atomic appends to the path for its temporary file. */
#define CLI_TMP_SUFFIX ".tmp-XXXXXX"

/* Block the signals that end the command (SIGINT, SIGTERM, SIGHUP,
 * SIGQUIT) in the calling thread, the old mask in *old; and put it back,
 * which delivers a signal that came meanwhile. Around the life of a
 * temporary file, so that a signal never leaves one behind (the process
 * must have no other thread that could take the signal). */
void cli_signals_hold(sigset_t *old);
void cli_signals_release(const sigset_t *old);

/* Create PATH.tmp-XXXXXX (mode 0600): its descriptor, with the malloc'd
 * name in *tmp; or -1 with errno set (ENOMEM: *tmp is NULL). */
int cli_tmp_create(const char *path, char **tmp);

/*
 * Replace `path` with `data` atomically: write PATH.tmp-XXXXXX in the same
 * directory, fsync, rename, fsync the directory. On failure nothing is left
 * behind (no temporary, `path` untouched), false is returned and `why`
 * holds the reason. `mode` is the new file's permission bits. A stop
 * signal that comes meanwhile takes effect once it is done.
 */
bool cli_write_file_atomic(const char *path, const char *data, size_t len, unsigned mode, char *why,
                           size_t whycap);

/* ------------------------------------------------------------------------ */
/* Workloads for `bench` and `stat` (load.c)                                */
/* ------------------------------------------------------------------------ */

typedef enum {
    CLI_MODE_CYCLE = 0,     /* acquire + release */
    CLI_MODE_STATEMENT = 1, /* acquire, run the query, release */
    CLI_MODE_CONNECT = 2    /* per op: open a one-connection pool, acquire, query, release, close */
} cli_load_mode;

/* Errors are counted by code: slot -code for codes -1 .. -(CLI_ERR_SLOTS-1),
 * slot 0 for any other code. */
#define CLI_ERR_SLOTS 32

typedef struct cli_load_config {
    dbpool *pool;    /* cycle, statement */
    const char *url; /* connect-per-query (each op opens its own pool) */
    cli_load_mode mode;
    const char *query;          /* statement, connect-per-query */
    int threads;                /* >= 1; started with small (128 KiB) stacks */
    int64_t acquire_timeout_ms; /* per acquire */
    int64_t hold_ns;            /* held this long per lease ... */
    int64_t hold_jitter_ns;     /* ... plus a uniform random [0, jitter) */
    uint64_t max_ops;           /* stop after this many ops in all; 0: until stopped */
    /* After a failed op the worker waits this long before the next (0:
     * none, as a load test wants): stat's workload must not spin on a
     * database that is down (an open breaker fails each acquire at once). */
    int64_t pause_after_error_ns;
} cli_load_config;

typedef struct cli_load_report {
    uint64_t ops;    /* finished, successful or not */
    uint64_t errors; /* of which failed */
    uint64_t errors_by[CLI_ERR_SLOTS];
    uint64_t opened; /* connect-per-query: pools opened */
    /* Callers waiting in the pool's line when the load stopped (its
     * `waiting` as it was suspended): they gave up without an op (not in
     * ops, nor in the pool's histograms). */
    uint64_t abandoned;
    int unfinished; /* cli_load_finish_within: workers still in an op at its end */
    /* Filled by cli_load_finish only: */
    char error_sample[CLI_ERR_SLOTS][256]; /* the first message seen per code */
    double elapsed_s;                      /* start to the stop, or to the end of an op
                                              that ran on past it */
    double burst_s;                        /* start to the max_ops-th op, or -1 */
    dbpool_latency op;                     /* the whole op as the caller saw it */
} cli_load_report;

typedef struct cli_load cli_load;

/* Start cfg->threads workers; they begin all at once, after every thread
 * exists. Returns true, or false with the reason in why (nothing left
 * running). The config's strings and pool must outlive the load. */
bool cli_load_start(cli_load **out, const cli_load_config *cfg, char *why, size_t whycap);
/* Monotonic nanoseconds at which the workers were let go. */
int64_t cli_load_started_ns(const cli_load *l);
/* True once max_ops ops have finished (never when max_ops is 0). */
bool cli_load_done(const cli_load *l);
/* A live snapshot of ops, errors, errors_by, opened (cheap). */
void cli_load_snapshot(const cli_load *l, cli_load_report *r);
/* The first message seen for error slot `slot` (see CLI_ERR_SLOTS) into
 * buf; false when no op has failed with it yet. */
bool cli_load_error_sample(cli_load *l, int slot, char *buf, size_t cap);
/* Stop the workers (each finishes its op), join them, fill r, free l. */
void cli_load_finish(cli_load *l, cli_load_report *r);
/* cli_load_finish waiting at most grace_ns (< 0: without limit) for the
 * ops still running: a worker whose op has not returned by then (a server
 * that stopped answering) is left running, its op missing from r, and l
 * is not freed. Returns how many were left (also r->unfinished). */
int cli_load_finish_within(cli_load *l, cli_load_report *r, int64_t grace_ns);

/* Slot -> "DBPOOL_ETIMEDOUT", or "other" for slot 0. */
const char *cli_err_slot_name(int slot);

/* Monotonic nanoseconds. */
int64_t cli_now_ns(void);
/* Sleep up to ns, returning early (within a few ms) once a stop signal came. */
void cli_nap_ns(int64_t ns);

/* SIGINT and SIGTERM set a flag instead of killing the process, so that a
 * run stops cleanly (a second signal kills as usual). */
void cli_stop_signals_install(void);
bool cli_stop_requested(void);

/* ------------------------------------------------------------------------ */
/* The live progress line of `bench` (progress.c)                          */
/* ------------------------------------------------------------------------ */

typedef struct cli_progress {
    bool enabled; /* stderr is a terminal */
    int64_t last_ns;
    uint64_t last_ops;
    int last_len;
} cli_progress;

/* Enabled only when stderr is a terminal. */
void cli_progress_init(cli_progress *pr, int64_t start_ns);
/* Redraw "elapsed, ops/s, p99 acquire wait, in use, waiting" with \r, at
 * most every 250 ms, narrower than the terminal (the fields that do not
 * fit are left out). `p` may be NULL (no pool figures). */
void cli_progress_update(cli_progress *pr, dbpool *p, int64_t start_ns, uint64_t ops);
/* Erase the line, so that what follows starts at column 0. */
void cli_progress_clear(cli_progress *pr);
/* dbpool_log_fn for a pool whose log shares stderr with the progress line
 * `user` (a cli_progress, zeroed or initialised before the pool opens):
 * cli_log_stderr after erasing the line, which the next update redraws. */
void cli_progress_log(void *user, dbpool_log_level level, const char *message);

/* ------------------------------------------------------------------------ */
/* GET /metrics for `bench --metrics-listen` (metrics_http.c)               */
/* ------------------------------------------------------------------------ */

typedef struct cli_listen_addr {
    union {
        struct sockaddr_in v4;
        struct sockaddr_in6 v6;
    } sa;
    bool ipv6;
    int port;      /* 0: any free port */
    char host[48]; /* as printed: "127.0.0.1", "[::1]" */
} cli_listen_addr;

/* Parse HOST:PORT where HOST is an address in 127.0.0.0/8, [::1] or
 * localhost (no name lookup). Anything else, including addresses that are
 * not loopback, is reported as a usage error of `cmd`; returns false then. */
bool cli_metrics_parse_listen(const char *cmd, const char *spec, cli_listen_addr *out);
/* Whether this build has the HTTP server (libmicrohttpd). */
bool cli_metrics_available(void);

typedef struct cli_metrics_server cli_metrics_server;
/* Serve GET /metrics (dbpool_stats_prometheus of p) on a thread of its own
 * until cli_metrics_stop, which must come before p is closed. On success
 * a->port holds the bound port. False with the reason in why otherwise. */
bool cli_metrics_start(cli_metrics_server **out, dbpool *p, cli_listen_addr *a, char *why, size_t whycap);
/* NULL is a no-op. */
void cli_metrics_stop(cli_metrics_server *s);

#endif
