/* diag.c — what the command says on stderr: one-line errors and pool logs. */
#include "cli.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <string.h>
#include <unistd.h>

/* One line per error, whatever the text holds: scripts read stderr by line. */
static void print_line(const char *cmd, const char *fmt, va_list ap) {
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    for (char *p = msg; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    fprintf(stderr, "dbpool %s: %s\n", cmd, msg);
    fflush(stderr);
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    print_line(cmd, fmt, ap);
    va_end(ap);
    return CLI_EXIT_USAGE;
}

int cli_fail(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    print_line(cmd, fmt, ap);
    va_end(ap);
    return CLI_EXIT_FAILED;
}

const char *cli_errtext(int code, const dbpool_error *e, char *buf, size_t cap) {
    const char *msg = e && e->message[0] ? e->message : dbpool_strerror(code);
    snprintf(buf, cap, "%s (%s)", msg, dbpool_errname(code));
    return buf;
}

void cli_log_stderr(void *user, dbpool_log_level level, const char *message) {
    (void)user;
    static const char *const names[] = {"error", "warn", "info", "debug"};
    const char *name = (unsigned)level < sizeof names / sizeof names[0] ? names[level] : "?";
    /* One fprintf per line: stdio locks the stream, so lines from the
     * pool's threads do not interleave. */
    fprintf(stderr, "dbpool[%s]: %s\n", name, message);
}

static volatile sig_atomic_t stdout_gone;

void cli_sigpipe_ignore(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGPIPE, &sa, NULL);
}

bool cli_stdout_gone(int err) {
    /* errno may have been overwritten since the write that failed (stdio
     * reports an earlier error through ferror only): a pipe whose reader
     * has gone polls as POLLERR on its write end. */
    struct pollfd pfd = {STDOUT_FILENO, POLLOUT, 0};
    if (err == EPIPE || (poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLERR)))
        stdout_gone = 1;
    return stdout_gone != 0;
}

bool cli_stdout_was_gone(void) { return stdout_gone != 0; }

bool cli_stdout_interrupted(int err) {
    if (err != EINTR || !cli_stop_requested())
        return false;
    __fpurge(stdout);
    clearerr(stdout);
    return true;
}
