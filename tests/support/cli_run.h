/* cli_run.h — running the built `dbpool` command from a test, as a user
 * would (a child process), and reading what it printed. */
#ifndef DBPOOL_CLI_RUN_H
#define DBPOOL_CLI_RUN_H

#include <jansson.h>
#include <spawn.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct dbt_run {
    int status; /* exit code, or 128 + signal */
    char *out;  /* everything it wrote to stdout */
    char *err;  /* and to stderr */
} dbt_run;

/* Where a started command's stdout goes: the descriptor `fd` when >= 0
 * (the child closes `fd` and `other_end`, a pipe's reading end, once it
 * has it as stdout); else the file `path`, opened for writing (created and
 * truncated when `create`); else nowhere: stdout closed. */
typedef struct dbt_stdout {
    int fd, other_end;
    const char *path;
    bool create;
} dbt_stdout;
#define DBT_STDOUT_PATH(p) ((dbt_stdout){.fd = -1, .other_end = -1, .path = (p), .create = true})
#define DBT_STDOUT_PIPE(write_end, read_end) ((dbt_stdout){.fd = (write_end), .other_end = (read_end)})

/* Start DBPOOL_CLI_PATH with args (NULL-terminated, without argv[0]),
 * stdin from /dev/null, stdout as `out` says and stderr into err_path
 * (created); attr may be NULL. Does not wait. Fails the test if it cannot
 * be started. */
pid_t dbt_spawn_cli(const char *const *args, dbt_stdout out, const char *err_path,
                    const posix_spawnattr_t *attr);

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
