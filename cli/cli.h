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

/*
 * Print "dbpool <cmd>: <formatted>" as ONE line on stderr (newlines in the
 * text become spaces) and return the exit code. The text should say what
 * was wrong, then ": ", then what to do.
 */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int cli_fail(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

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
/* The option's name without any "=value" part, for error messages that
 * must not echo a value (it may hold a password). Static buffer. */
const char *cli_opt_name(const char *arg);

/* A base-10 int in [lo, hi], the whole string; false otherwise. */
bool cli_parse_int(const char *s, int lo, int hi, int *out);
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

/*
 * Replace `path` with `data` atomically: write PATH.tmp-XXXXXX in the same
 * directory, fsync, rename, fsync the directory. On failure nothing is left
 * behind (no temporary, `path` untouched), false is returned and `why`
 * holds the reason. `mode` is the new file's permission bits.
 */
bool cli_write_file_atomic(const char *path, const char *data, size_t len, unsigned mode, char *why,
                           size_t whycap);

#endif
