/* cli_run.h — running the built `dbpool` command from a test, as a user
 * would (a child process), and reading what it printed. */
#ifndef DBPOOL_CLI_RUN_H
#define DBPOOL_CLI_RUN_H

#include <jansson.h>

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
/* A whole file as a string (NULL if it cannot be read). Free it. */
char *dbt_slurp(const char *path);
/* Parse JSON text, failing the test (with the text) when it is not. */
json_t *dbt_json_parse(const char *text);

#endif
