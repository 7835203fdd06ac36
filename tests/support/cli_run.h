/* cli_run.h — running the built `dbpool` command from a test, as a user
 * would (a child process), and reading what it printed. */
#ifndef DBPOOL_CLI_RUN_H
#define DBPOOL_CLI_RUN_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct dbt_run {
    int status; /* exit code, or 128 + signal */
    char *out;  /* everything it wrote to stdout */
    char *err;  /* and to stderr */
} dbt_run;

/* Run DBPOOL_CLI_PATH with args (NULL-terminated, without argv[0]) and
 * stdin from /dev/null. Fails the test if it cannot be started. */
dbt_run dbt_run_cli(const char *const *args);
void dbt_run_free(dbt_run *r);
/* The same with stdout on an existing file (opened for writing, e.g.
 * /dev/full) or closed when stdout_path is NULL: the exit code, and stderr
 * (malloc'd) in *err. */
int dbt_run_cli_stdout(const char *const *args, const char *stdout_path, char **err);
/* The command with stdout on a pipe whose reader takes `keep` bytes and
 * then closes its end, as `dbpool ... | head -c keep` does; the child
 * starts with SIGPIPE ignored when ignore_sigpipe (as a parent that ignores
 * it passes it on, and as Connector/C sets it). The exit code (128 + signal
 * when killed), stderr (malloc'd) in *err, and in *took_ms the time from
 * the close to its end. A command still running 60 s after the close is
 * killed and fails the test. */
int dbt_run_cli_pipe_closed(const char *const *args, size_t keep, bool ignore_sigpipe, char **err,
                            int64_t *took_ms);
/* A whole file as a string (NULL if it cannot be read). Free it. */
char *dbt_slurp(const char *path);
/* Parse JSON text, failing the test (with the text) when it is not. */
json_t *dbt_json_parse(const char *text);

#endif
