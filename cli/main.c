/* main.c — the `dbpool` command: picks the subcommand. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"demo", cli_demo_main, "store labels from a file through a pool and report as JSON"},
    {"check", cli_check_main, "check that a database answers; JSON result, exit 0 when healthy"},
    {"bench", cli_bench_main, "load-test a pool: ops/s, acquire wait percentiles, errors by code"},
    {"stat", cli_stat_main, "one line of pool figures per interval while a workload runs"},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *out) {
    fputs("Usage: dbpool COMMAND [options]\n"
          "       dbpool COMMAND --help\n"
          "\n"
          "A thread-safe database connection pool for SQLite, PostgreSQL and\n"
          "MySQL/MariaDB, and this command to try it out. Results are JSON on\n"
          "stdout; progress, logs and errors go to stderr.\n"
          "\n"
          "Commands:\n",
          out);
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(out, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fputs("\n"
          "Options:\n"
          "  --help     show this help\n"
          "  --version  show the library's version\n"
          "\n"
          "Exit status: 0 success; 1 the work failed; 2 the command line is wrong.\n"
          "\n"
          "Example:\n"
          "  dbpool demo --input data/sample_input.txt --output /tmp/demo.json\n"
          "  dbpool check sqlite::memory:\n"
          "  dbpool bench sqlite::memory: --threads 50 --duration 30\n"
          "  dbpool stat sqlite::memory: 1 10\n",
          out);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fputs("dbpool: a command is missing: run 'dbpool --help' for the list\n", stderr);
        return CLI_EXIT_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0 || strcmp(name, "help") == 0) {
        /* "dbpool help demo" reads naturally; send it to the command's own help. */
        if (strcmp(name, "help") == 0 && argc > 2) {
            for (size_t i = 0; i < NCOMMANDS; i++) {
                if (strcmp(argv[2], commands[i].name) == 0) {
                    char help[] = "--help";
                    char *args[] = {argv[2], help, NULL};
                    return commands[i].run(2, args);
                }
            }
        }
        usage(stdout);
        return CLI_EXIT_OK;
    }
    if (strcmp(name, "--version") == 0 || strcmp(name, "-V") == 0) {
        printf("dbpool %s\n", dbpool_version());
        return CLI_EXIT_OK;
    }
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(name, commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    if (name[0] == '-')
        fprintf(stderr, "dbpool: unknown option '%s': run 'dbpool --help' for the list\n",
                cli_opt_name(name));
    else if (strlen(name) < 32 && strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789-_") == strlen(name))
        fprintf(stderr, "dbpool: unknown command '%s': run 'dbpool --help' for the list\n", name);
    else /* not echoed: a URL given without a command may hold a password */
        fputs("dbpool: the first argument is not a command: run 'dbpool --help' for the list\n", stderr);
    return CLI_EXIT_USAGE;
}
