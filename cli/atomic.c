/* atomic.c — replace an output file all at once or not at all. */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static bool write_all(int fd, const char *data, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return false;
        }
        data += n;
        len -= (size_t)n;
    }
    return true;
}

/* Make the rename itself durable: without this a crash can bring back the
 * old file, or no file, after the command said it was done. */
static void sync_parent_dir(const char *path) {
    char *copy = strdup(path);
    if (!copy)
        return;
    char *slash = strrchr(copy, '/');
    const char *dir = ".";
    if (slash == copy)
        dir = "/";
    else if (slash) {
        *slash = '\0';
        dir = copy;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        (void)fsync(fd); /* some file systems refuse fsync on a directory */
        close(fd);
    }
    free(copy);
}

void cli_signals_hold(sigset_t *old) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGQUIT);
    pthread_sigmask(SIG_BLOCK, &set, old);
}

void cli_signals_release(const sigset_t *old) { pthread_sigmask(SIG_SETMASK, old, NULL); }

static bool write_file_atomic(const char *path, const char *data, size_t len, unsigned mode, char *why,
                              size_t whycap);

int cli_tmp_create(const char *path, char **tmp) {
    size_t n = strlen(path);
    *tmp = malloc(n + sizeof CLI_TMP_SUFFIX);
    if (!*tmp) {
        errno = ENOMEM;
        return -1;
    }
    memcpy(*tmp, path, n);
    memcpy(*tmp + n, CLI_TMP_SUFFIX, sizeof CLI_TMP_SUFFIX);
    return mkstemp(*tmp);
}

bool cli_write_file_atomic(const char *path, const char *data, size_t len, unsigned mode, char *why,
                           size_t whycap) {
    /* A Ctrl-C or SIGTERM while the temporary file exists would kill the
     * process and leave PATH.tmp-XXXXXX behind: it takes effect once the
     * file is renamed (or removed). */
    sigset_t old;
    cli_signals_hold(&old);
    bool ok = write_file_atomic(path, data, len, mode, why, whycap);
    cli_signals_release(&old);
    return ok;
}

static bool write_file_atomic(const char *path, const char *data, size_t len, unsigned mode, char *why,
                              size_t whycap) {
    char *tmp;
    int fd = cli_tmp_create(path, &tmp);
    if (fd < 0) {
        if (!tmp)
            snprintf(why, whycap, "out of memory");
        else
            snprintf(why, whycap, "cannot create a file next to '%s': %s", cli_shown(path), strerror(errno));
        free(tmp);
        return false;
    }
    const char *step = NULL;
    /* mkstemp creates 0600; the result should look like any file the user
     * writes (0666 less the umask). */
    if (fchmod(fd, (mode_t)mode) != 0)
        step = "set the permissions of";
    else if (!write_all(fd, data, len))
        step = "write";
    else if (fsync(fd) != 0)
        step = "flush";
    int saved = errno;
    if (close(fd) != 0 && !step) {
        step = "close";
        saved = errno;
    }
    if (!step && rename(tmp, path) != 0) {
        step = "rename the temporary file to";
        saved = errno;
    }
    if (step) {
        unlink(tmp);
        snprintf(why, whycap, "cannot %s '%s': %s", step, cli_shown(path), strerror(saved));
        free(tmp);
        return false;
    }
    free(tmp);
    sync_parent_dir(path);
    return true;
}
