/* cli_run.c — see cli_run.h. */
#include "cli_run.h"

#include "testsupport.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

char *dbt_slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (cap - n - 1 == 0) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
    }
    fclose(f);
    buf[n] = '\0';
    return buf;
}

pid_t dbt_spawn_cli(const char *const *args, dbt_stdout out, const char *err_path,
                    const posix_spawnattr_t *attr) {
    char *argv[64];
    size_t n = 0;
    argv[n++] = (char *)DBPOOL_CLI_PATH;
    for (; args[n - 1] && n < 63; n++)
        argv[n] = (char *)args[n - 1];
    argv[n] = NULL;

    posix_spawn_file_actions_t fa;
    assert_int_equal(posix_spawn_file_actions_init(&fa), 0);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    if (out.fd >= 0) {
        posix_spawn_file_actions_adddup2(&fa, out.fd, 1);
        if (out.other_end >= 0)
            posix_spawn_file_actions_addclose(&fa, out.other_end);
        posix_spawn_file_actions_addclose(&fa, out.fd);
    } else if (out.path) {
        posix_spawn_file_actions_addopen(&fa, 1, out.path, O_WRONLY | (out.create ? O_CREAT | O_TRUNC : 0),
                                         0600);
    } else {
        posix_spawn_file_actions_addclose(&fa, 1);
    }
    posix_spawn_file_actions_addopen(&fa, 2, err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    pid_t pid;
    int rc = posix_spawn(&pid, DBPOOL_CLI_PATH, &fa, attr, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        fail_msg("cannot run %s: %s", DBPOOL_CLI_PATH, strerror(rc));
    return pid;
}

/* Run the command to its end: its exit code, or 128 + signal. */
static int spawn_cli(const char *const *args, const char *out_path, bool create, const char *err_path) {
    pid_t pid = dbt_spawn_cli(
        args, (dbt_stdout){.fd = -1, .other_end = -1, .path = out_path, .create = create}, err_path, NULL);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

dbt_run dbt_run_cli(const char *const *args) {
    static int seq;
    char out_path[600], err_path[600];
    seq++;
    snprintf(out_path, sizeof out_path, "%s/run%d.stdout", dbt_tmpdir(), seq);
    snprintf(err_path, sizeof err_path, "%s/run%d.stderr", dbt_tmpdir(), seq);
    dbt_run r;
    r.status = spawn_cli(args, out_path, true, err_path);
    r.out = dbt_slurp(out_path);
    r.err = dbt_slurp(err_path);
    assert_non_null(r.out);
    assert_non_null(r.err);
    unlink(out_path);
    unlink(err_path);
    return r;
}

int dbt_run_cli_stdout(const char *const *args, const char *stdout_path, char **err) {
    char err_path[600];
    snprintf(err_path, sizeof err_path, "%s/run-stdout.stderr", dbt_tmpdir());
    int status = spawn_cli(args, stdout_path, false, err_path);
    *err = dbt_slurp(err_path);
    assert_non_null(*err);
    unlink(err_path);
    return status;
}

int dbt_run_cli_pipe_closed(const char *const *args, size_t keep, bool ignore_sigpipe, char **err,
                            int64_t *took_ms) {
    char err_path[600];
    snprintf(err_path, sizeof err_path, "%s/run-pipe.stderr", dbt_tmpdir());
    int p[2];
    assert_int_equal(pipe(p), 0);
    /* An ignored signal stays ignored across exec; a default one is reset
     * to the default in the child in any case. */
    posix_spawnattr_t attr;
    assert_int_equal(posix_spawnattr_init(&attr), 0);
    sigset_t def;
    sigemptyset(&def);
    if (!ignore_sigpipe) {
        sigaddset(&def, SIGPIPE);
        posix_spawnattr_setsigdefault(&attr, &def);
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF);
    }
    struct sigaction ign, old;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    sigaction(SIGPIPE, ignore_sigpipe ? &ign : NULL, &old);
    /* keep 0: the reader is gone before the command starts. Closed after
     * the spawn, a quick command (--version) on a loaded machine could
     * write its line into the pipe and exit 0 before the close. */
    if (keep == 0) {
        close(p[0]);
        p[0] = -1;
    }
    pid_t pid = dbt_spawn_cli(args, DBT_STDOUT_PIPE(p[1], p[0]), err_path, &attr);
    if (ignore_sigpipe)
        sigaction(SIGPIPE, &old, NULL);
    posix_spawnattr_destroy(&attr);
    close(p[1]);
    /* Take `keep` bytes (or what comes before the command ends), then go. */
    size_t got = 0;
    char buf[4096];
    while (got < keep) {
        size_t want = keep - got < sizeof buf ? keep - got : sizeof buf;
        ssize_t r = read(p[0], buf, want);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    if (p[0] >= 0)
        close(p[0]);
    int64_t t0 = dbt_now_ms();
    int st = 0;
    pid_t w = 0;
    while ((w = waitpid(pid, &st, WNOHANG)) == 0 && dbt_now_ms() - t0 < 60000)
        dbt_sleep_ms(10);
    *took_ms = dbt_now_ms() - t0;
    if (w != pid) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        fail_msg("the command was still running 60 s after its stdout was closed");
    }
    *err = dbt_slurp(err_path);
    assert_non_null(*err);
    unlink(err_path);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

void dbt_run_free(dbt_run *r) {
    free(r->out);
    free(r->err);
    r->out = r->err = NULL;
}

json_t *dbt_json_parse(const char *text) {
    json_error_t e;
    json_t *doc = json_loads(text, 0, &e);
    if (!doc)
        fail_msg("not JSON (%s, line %d): %s", e.text, e.line, text);
    return doc;
}
