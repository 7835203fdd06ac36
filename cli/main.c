/* main.c — the `dbpool` command: picks the subcommand. */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

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
          "MySQL/MariaDB, and this command to try it out. Results go to stdout\n"
          "(JSON from demo and check, a table or --json from bench, lines from\n"
          "stat); progress, logs and errors go to stderr.\n"
          "\n"
          "Commands:\n",
          out);
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(out, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fputs("\n"
          "Options:\n"
          "  --help     show this help\n"
          "  --version  show the version and what this build has: the backends,\n"
          "             and whether bench --metrics-listen works (libmicrohttpd)\n"
          "\n"
          "Exit status: 0 success; 1 the work failed; 2 the command line is wrong.\n"
          "A reader of stdout that goes away (| head) ends a command quietly, by\n"
          "SIGPIPE (status 141 in the shell), once it has closed its pool.\n"
          "\n"
          "Example:\n"
          "  dbpool demo --input data/sample_input.txt --output /tmp/demo.json\n"
          "  dbpool check sqlite::memory:\n"
          "  dbpool bench sqlite::memory: --threads 50 --duration 30\n"
          "  dbpool stat sqlite::memory: 1 10\n",
          out);
}

/* Whether `name` can be echoed in an error: a URL given where a command
 * was expected may hold a password, and is not a plain word. */
static bool echoable(const char *name) {
    return strlen(name) < 32 &&
           strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") == strlen(name);
}

/* "the commands are demo, check, bench, stat" for an error message. */
static const char *command_list(void) {
    static char list[128];
    size_t used = 0;
    for (size_t i = 0; i < NCOMMANDS && used < sizeof list; i++)
        used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", commands[i].name);
    return list;
}

/* Text the user asked for (help, version) that did not reach stdout is a
 * failure: a script reading `dbpool --version` must not get "" and exit 0. */
static int flush_stdout(const char *what) {
    errno = 0;
    if (fflush(stdout) == 0 && !ferror(stdout))
        return CLI_EXIT_OK;
    if (cli_stdout_gone(errno))
        return CLI_EXIT_FAILED;
    fprintf(stderr, "dbpool: cannot write the %s to stdout: %s: check where stdout goes\n", what,
            strerror(errno ? errno : EIO));
    return CLI_EXIT_FAILED;
}

/*
 * The next open() takes the lowest free descriptor: with stdout closed, a
 * database socket or file could become fd 1 and receive the JSON result.
 * Keep a closed stdin or stderr taken by /dev/null; a closed stdout is an
 * error, since every command writes its result there.
 */
static bool standard_fds_open(void) {
    static const struct { int fd, flags; } reserve[] = {{STDIN_FILENO, O_RDONLY}, {STDERR_FILENO, O_WRONLY}};
    bool stdout_closed = fcntl(STDOUT_FILENO, F_GETFD) == -1 && errno == EBADF;
    for (size_t i = 0; i < sizeof reserve / sizeof reserve[0]; i++) {
        int fd = reserve[i].fd;
        if (fcntl(fd, F_GETFD) != -1 || errno != EBADF)
            continue;
        int null_fd = open("/dev/null", reserve[i].flags);
        if (null_fd >= 0 && null_fd != fd) {
            /* With stdout closed too, open() returned 1, not this one. */
            dup2(null_fd, fd);
            close(null_fd);
        }
    }
    if (stdout_closed)
        fputs("dbpool: stdout is closed: every command writes its result there; redirect it instead, "
              "e.g. >/dev/null\n",
              stderr);
    return !stdout_closed;
}

/* The reader of stdout went away: end as a filter killed by SIGPIPE at
 * the write would have, but after the command cleaned up (pool closed,
 * server sessions ended), and the same way on every backend. */
static int end_by_sigpipe(int code) {
    fflush(stderr);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGPIPE, &sa, NULL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    raise(SIGPIPE);
    return code; /* not reached */
}

static int run(int argc, char **argv);

int main(int argc, char **argv) {
    if (!standard_fds_open())
        return CLI_EXIT_FAILED;
    /* A closed pipe on stdout is reported by the write, on every backend
     * (see cli_stdout_gone). */
    cli_sigpipe_ignore();
    int code = run(argc, argv);
    return cli_stdout_was_gone() ? end_by_sigpipe(code) : code;
}

static int run(int argc, char **argv) {
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
            /* The general help instead would hide the typo behind exit 0. */
            if (echoable(argv[2]))
                fprintf(stderr, "dbpool help: there is no command '%s': the commands are %s\n", argv[2],
                        command_list());
            else
                fprintf(stderr, "dbpool help: that is not a command: the commands are %s\n", command_list());
            return CLI_EXIT_USAGE;
        }
        usage(stdout);
        return flush_stdout("help");
    }
    if (strcmp(name, "--version") == 0 || strcmp(name, "-V") == 0) {
        if (argc > 2) {
            fprintf(stderr, "dbpool: %s takes no arguments: run 'dbpool --version' alone\n", name);
            return CLI_EXIT_USAGE;
        }
        /* What this build can talk to: the library is linked in statically,
         * so its backend switches are the command's too. */
        printf("dbpool %s (backends: sqlite"
#ifdef DBPOOL_HAVE_PG
               ", postgresql"
#endif
#ifdef DBPOOL_HAVE_MYSQL
               ", mysql"
#endif
               "; metrics-listen: %s)\n",
               dbpool_version(), cli_metrics_available() ? "yes" : "no");
        return flush_stdout("version");
    }
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(name, commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    if (name[0] == '-')
        fprintf(stderr, "dbpool: unknown option '%s': run 'dbpool --help' for the list\n",
                cli_opt_name(name));
    else if (echoable(name))
        fprintf(stderr, "dbpool: unknown command '%s': run 'dbpool --help' for the list\n", name);
    else /* not echoed: a URL given without a command may hold a password */
        fputs("dbpool: the first argument is not a command: run 'dbpool --help' for the list\n", stderr);
    return CLI_EXIT_USAGE;
}
