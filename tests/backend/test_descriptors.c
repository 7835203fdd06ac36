/*
 * test_descriptors.c — the pool as a guest in a process that runs other
 * programs: every descriptor the pool opens (the PostgreSQL and MariaDB
 * sockets, SQLite's database, -wal and -shm files) is close-on-exec, so a
 * child the application starts with fork and exec does not inherit a live
 * database session. Checked on the descriptors themselves (FD_CLOEXEC) and
 * in a program run by exec (its own /proc/self/fd). And a process that has
 * run out of descriptors gets a clear error, not an open circuit breaker.
 */
#include "backend_common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_FDS 1024

/* The open descriptors of this process, as a set. */
static void open_fds(bool set[MAX_FDS]) {
    memset(set, 0, MAX_FDS * sizeof set[0]);
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    int self = dirfd(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        char *end;
        long fd = strtol(de->d_name, &end, 10);
        if (*end == '\0' && end != de->d_name && fd != self && fd >= 0 && fd < MAX_FDS)
            set[fd] = true;
    }
    closedir(d);
}

static void describe(int fd, char *buf, size_t len) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, buf, len - 1);
    buf[n > 0 ? n : 0] = '\0';
}

static void test_pool_descriptors_are_close_on_exec(void **state) {
    (void)state;
    static bool before[MAX_FDS], after[MAX_FDS];
    open_fds(before);
    dbpool_options o;
    bt_options(&o, 2, 3);
    dbpool *p = bt_open(&o, NULL);
    dbpool_conn *a = bt_acquire(p), *b = bt_acquire(p);
    bt_exec(a, "CREATE TABLE IF NOT EXISTS descriptors_t (id INTEGER)");
    bt_exec(a, "INSERT INTO descriptors_t (id) VALUES (1)"); /* SQLite: the -wal and -shm files */
    BT_CHECK(bt_query_int(b, "SELECT COUNT(*) FROM descriptors_t", NULL, 0) >= 1, "the row is not there");
    open_fds(after);

    int opened = 0;
    for (int fd = 0; fd < MAX_FDS; fd++) {
        if (!after[fd] || before[fd])
            continue;
        opened++;
        int fl = fcntl(fd, F_GETFD);
        char what[256];
        describe(fd, what, sizeof what);
        BT_CHECK(fl >= 0 && (fl & FD_CLOEXEC), "descriptor %d (%s), opened by the pool, is not close-on-exec",
                 fd, what);
    }
    BT_CHECK(opened >= 2, "the pool opened %d descriptors, expected one per connection at least", opened);

    /* And a program run by exec has none of them: cat, waiting on a pipe
     * for its input, while this process reads its /proc/PID/fd. */
    int in[2], execd[2];
    assert_int_equal(pipe(in), 0);
    assert_int_equal(pipe(execd), 0);
    assert_int_equal(fcntl(execd[1], F_SETFD, FD_CLOEXEC), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(in[0], STDIN_FILENO);
        close(in[0]);
        close(in[1]);
        execl("/bin/cat", "cat", (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(execd[1]);
    char byte;
    /* EOF once the exec has closed the child's copy (close-on-exec). */
    while (read(execd[0], &byte, 1) > 0) {
    }
    close(execd[0]);
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%d/fd", (int)pid);
    /* A descriptor of cat's own counts only if it is the pool's: the same
     * number and the same file or socket. cat opens files while it starts
     * (the loader's cache, libc, a dozen locale files, one at a time), at
     * the lowest free number; read at that moment, with ctest's descriptor
     * at 3, cat's locale file at 4 was taken for the pool's socket 4 (1 run
     * in 60 with busy loops on the test's core). */
    int inherited = -1;
    char what[256], theirs[256], found[256] = "";
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        char *end;
        long fd = strtol(de->d_name, &end, 10);
        if (*end == '\0' && end != de->d_name && fd > STDERR_FILENO && fd < MAX_FDS && after[fd] &&
            !before[fd]) {
            char link[96];
            snprintf(link, sizeof link, "%s/%ld", dir, fd);
            ssize_t n = readlink(link, theirs, sizeof theirs - 1);
            theirs[n > 0 ? n : 0] = '\0';
            describe((int)fd, what, sizeof what);
            if (n > 0 && strcmp(theirs, what) == 0) {
                inherited = (int)fd;
                snprintf(found, sizeof found, "%s", what);
            }
        }
    }
    closedir(d);
    close(in[1]); /* cat ends */
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    BT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "cat did not run (status %d)", st);
    BT_CHECK(inherited < 0, "a program run by exec inherited descriptor %d (%s), which the pool opened",
             inherited, found);

    bt_exec(a, "DROP TABLE descriptors_t");
    bt_release(a);
    bt_release(b);
    assert_int_equal(dbpool_close(p), 0);
}

/*
 * A process out of descriptors (RLIMIT_NOFILE reached) cannot open a
 * connection: the error says so and what to do, the circuit breaker does
 * not count it (the database is fine: an open breaker would refuse every
 * new connection as "database unavailable" for a cooldown), and the pool
 * opens connections again as soon as descriptors are free.
 */
static void out_of_descriptors(const char *extra) {
    dbpool_options o;
    bt_options(&o, 1, 4);
    o.breaker_failures = 2;
    o.breaker_cooldown_ms = 60000;
    o.max_retries = 1;
    o.backoff_base_ms = 1;
    o.backoff_max_ms = 5;
    dbpool *p = bt_open(&o, extra);
    dbpool_conn *held = bt_acquire(p); /* every further lease needs a new connection */

    struct rlimit saved;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved), 0);
    static bool open_now[MAX_FDS];
    open_fds(open_now);
    int highest = 0;
    for (int fd = 0; fd < MAX_FDS; fd++)
        if (open_now[fd])
            highest = fd;
    struct rlimit low = saved;
    low.rlim_cur = (rlim_t)highest + 32;
    assert_true(low.rlim_cur <= saved.rlim_cur);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    static int fillers[MAX_FDS];
    int n_fillers = 0;
    for (;;) {
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            assert_int_equal(errno, EMFILE);
            break;
        }
        assert_true(n_fillers < MAX_FDS);
        fillers[n_fillers++] = fd;
    }

    int rcs[3];
    dbpool_error errs[3];
    for (int i = 0; i < 3; i++) { /* more than breaker_failures */
        dbpool_conn *c = NULL;
        memset(&errs[i], 0, sizeof errs[i]);
        rcs[i] = dbpool_acquire(p, 2000, &c, &errs[i]);
        if (rcs[i] == DBPOOL_OK)
            dbpool_release(c);
    }
    dbpool_stats s = bt_stats(p);
    /* Descriptors back, limit back, before anything can fail. */
    for (int i = 0; i < n_fillers; i++)
        close(fillers[i]);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);

    for (int i = 0; i < 3; i++) {
        BT_CHECK(rcs[i] == DBPOOL_ECONNECT,
                 "acquire %d without descriptors: %s, expected DBPOOL_ECONNECT: %s", i,
                 dbpool_errname(rcs[i]), errs[i].message);
        BT_CHECK(strstr(errs[i].message, "out of file descriptors") &&
                     strstr(errs[i].message, "RLIMIT_NOFILE"),
                 "the error does not say the process is out of descriptors: %s", errs[i].message);
    }
    BT_CHECK(s.breaker_opens == 0 && s.breaker == DBPOOL_BREAKER_CLOSED,
             "the breaker counted a shortage of descriptors as the database being down (opened %llu times)",
             (unsigned long long)s.breaker_opens);

    /* Descriptors free again: a new connection opens at once. */
    dbpool_conn *c = NULL;
    dbpool_error e;
    BT_OK(dbpool_acquire(p, 5000, &c, &e), &e, "acquire once descriptors are free");
    bt_release(c);
    bt_release(held);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_out_of_descriptors_is_not_an_outage(void **state) {
    (void)state;
    out_of_descriptors(NULL);
}

/* With TLS files in the URL, the first thing a connect opens is each of
 * them, to check it can be read: out of descriptors, that was
 * DBPOOL_EINVAL, "fix ssl-ca in the URL", never retried, for a URL that
 * is right. */
static void test_out_of_descriptors_with_tls_files(void **state) {
    (void)state;
    const char *ca = getenv(bt_is("pg") ? "DBPOOL_TEST_PG_SSL_CA" : "DBPOOL_TEST_MYSQL_SSL_CA");
    if (bt_is("sqlite") || !ca || !*ca)
        skip(); /* SQLite has no TLS; the servers take TLS with DBPOOL_TEST_TLS=1 (scripts/test.sh) */
    char extra[1200];
    snprintf(extra, sizeof extra,
             bt_is("pg") ? "sslmode=verify-full&sslrootcert=%s" : "ssl-mode=VERIFY_CA&ssl-ca=%s", ca);
    out_of_descriptors(extra);
}

int main(int argc, char **argv) {
    bt_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pool_descriptors_are_close_on_exec),
        cmocka_unit_test(test_out_of_descriptors_is_not_an_outage),
        cmocka_unit_test(test_out_of_descriptors_with_tls_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
