/* test_pg_pgbouncer.c — dbpool in front of PgBouncer in transaction
 * pooling mode, where each transaction may run on another server session
 * and a session's prepared statements belong to whichever client happened
 * to prepare them. The test starts its own PgBouncer (Debian 12's 1.18,
 * which does not follow prepared statements) on 127.0.0.1, in front of the
 * test PostgreSQL server, with ONE server session: every client's
 * statements land on it, so two dbpool connections both preparing their
 * first kept statement (`_dbpool_s1`) collide there, every time.
 * Needs DBPOOL_TEST_PG_URL (scripts/pg-server.sh) and pgbouncer
 * (scripts/install-deps.sh test installs it); skipped without them, unless
 * DBPOOL_TEST_REQUIRE_SERVERS=1. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "dbpool.h"
#include "servers.h"
#include "testsupport.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef DBPOOL_HAVE_PG

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

/* [0]: one server session; [1]: two, handed out in turn; [2]: two, the
 * last one freed handed out first (PgBouncer's default). */
static pid_t bouncer[3] = {-1, -1, -1};
static char bouncer_url[3][1024];

static void stop_bouncers(void) {
    for (int i = 0; i < 3; i++) {
        if (bouncer[i] > 0) {
            kill(bouncer[i], SIGTERM);
            waitpid(bouncer[i], NULL, 0);
            bouncer[i] = -1;
        }
    }
}

static void skip_or_fail(const char *why) {
    const char *req = getenv("DBPOOL_TEST_REQUIRE_SERVERS");
    if (req && strcmp(req, "1") == 0) {
        fprintf(stderr, "%s, but DBPOOL_TEST_REQUIRE_SERVERS=1\n", why);
        exit(1);
    }
    fprintf(stderr, "skipped: %s\n", why);
    exit(DBT_SKIP);
}

static const char *find_pgbouncer(void) {
    static const char *const at[] = {"/usr/sbin/pgbouncer", "/usr/bin/pgbouncer", "/usr/local/bin/pgbouncer",
                                     "/usr/local/sbin/pgbouncer"};
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++)
        if (access(at[i], X_OK) == 0)
            return at[i];
    return NULL;
}

static int free_port(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(s, (struct sockaddr *)&a, &len) != 0)
        fail_msg("cannot find a free port");
    close(s);
    return ntohs(a.sin_port);
}

static const char *opt(PQconninfoOption *o, const char *key) {
    for (; o && o->keyword; o++)
        if (strcmp(o->keyword, key) == 0 && o->val && *o->val)
            return o->val;
    return NULL;
}

/* PgBouncer `which` in transaction mode in front of the test server: with
 * one server session; with two handed out in turn (server_round_robin)
 * and room for 3 clients (max_client_conn); or with two, last freed first; bouncer_url[which] is the test URL
 * pointed at it. */
static void start_bouncer(int which) {
    const char *exe = find_pgbouncer();
    if (!exe)
        skip_or_fail("pgbouncer is not installed (scripts/install-deps.sh test installs it)");
    const char *url = dbt_backend_url("pg");
    PQconninfoOption *o = PQconninfoParse(url, NULL);
    const char *user = opt(o, "user"), *password = opt(o, "password"), *port = opt(o, "port"),
               *db = opt(o, "dbname");
    if (!o || !user || !password || !port || !db)
        fail_msg("the test URL needs a user, a password, a port and a database");

    /* PgBouncer refuses to run as root: then as the test server's user. */
    struct passwd *pw = NULL;
    if (geteuid() == 0) {
        const char *name = getenv("DBPOOL_PG_USER") ? getenv("DBPOOL_PG_USER") : "dbpooltest";
        if (!(pw = getpwnam(name)) && !(pw = getpwnam("postgres")) && !(pw = getpwnam("nobody")))
            skip_or_fail("running as root and no unprivileged user to run pgbouncer as");
    }
    char dir[512];
    chmod(dbt_tmpdir(), 0711); /* mkdtemp's 0700: PgBouncer's user enters */
    snprintf(dir, sizeof dir, "%s/pgbouncer%d", dbt_tmpdir(), which);
    mkdir(dir, 0755);
    chmod(dir, 0755);
    char ini[600], users[600];
    snprintf(ini, sizeof ini, "%s/pgbouncer.ini", dir);
    snprintf(users, sizeof users, "%s/userlist.txt", dir);
    int listen = free_port();
    FILE *f = fopen(users, "w");
    assert_non_null(f);
    fprintf(f, "\"%s\" \"%s\"\n", user, password);
    fclose(f);
    f = fopen(ini, "w");
    assert_non_null(f);
    fprintf(f,
            "[databases]\n%s = host=127.0.0.1 port=%s dbname=%s\n"
            "[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = %d\nunix_socket_dir =\n"
            "auth_type = scram-sha-256\nauth_file = %s\npool_mode = transaction\n"
            "default_pool_size = %d\nmin_pool_size = 0\nmax_client_conn = %d\n"
            "server_round_robin = %d\nlog_connections = 0\nlog_disconnections = 0\n",
            db, port, db, listen, users, which ? 2 : 1, which == 1 ? 3 : 20, which == 1);
    fclose(f);
    if (pw) {
        if (chown(dir, pw->pw_uid, pw->pw_gid) != 0 || chown(ini, pw->pw_uid, pw->pw_gid) != 0 ||
            chown(users, pw->pw_uid, pw->pw_gid) != 0)
            fail_msg("cannot hand the pgbouncer files to its user");
    }
    chmod(users, 0600);

    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (pw && (setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0))
            _exit(127);
        /* Gone with the test, also when it crashes or is killed (after
         * the change of user, which clears the setting). */
        if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() == 1 || chdir(dir) != 0)
            _exit(127);
        execl(exe, "pgbouncer", "-q", ini, (char *)NULL);
        _exit(127);
    }
    bouncer[which] = pid;

    /* The test URL, at PgBouncer's port. */
    const char *at = strchr(url, '@');
    const char *colon = at ? strchr(at, ':') : NULL;
    const char *slash = colon ? strchr(colon, '/') : NULL;
    if (!slash)
        fail_msg("the test URL is not postgresql://user:password@host:port/db");
    snprintf(bouncer_url[which], sizeof bouncer_url[which], "%.*s:%d%s", (int)(colon - url), url, listen,
             slash);
    char conninfo[256];
    snprintf(conninfo, sizeof conninfo, "host=127.0.0.1 port=%d dbname=%s connect_timeout=2", listen, db);
    PQconninfoFree(o);
    for (int i = 0; i < 200; i++) { /* up to 10 s */
        if (PQping(conninfo) == PQPING_OK)
            return;
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            bouncer[which] = -1;
            fail_msg("pgbouncer exited at start");
        }
        dbt_sleep_ms(50);
    }
    fail_msg("pgbouncer did not start listening within 10 s");
}

static dbpool *open_one_at(int which, const char *extra) {
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.maintenance_interval_ms = 0;
    char url[1100];
    snprintf(url, sizeof url, "%s%s%s", bouncer_url[which], extra ? "?" : "", extra ? extra : "");
    dbpool *p = NULL;
    dbpool_error err;
    if (dbpool_open(&p, url, &o, &err) != DBPOOL_OK)
        fail_msg("dbpool_open: %s", err.message);
    return p;
}

static dbpool *open_one(const char *extra) { return open_one_at(0, extra); }

static int run_plus(dbpool_conn *c, int64_t v, int64_t *out, dbpool_error *err) {
    dbpool_param p = dbpool_param_int64(v);
    dbpool_result *r = NULL;
    int rc = dbpool_query(c, "SELECT ?::int + 1", &p, 1, &r, err);
    if (rc != DBPOOL_OK)
        return rc;
    rc = dbpool_result_next(r, err);
    if (rc == 1)
        *out = dbpool_result_int64(r, 0);
    dbpool_result_free(r);
    return rc == 1 ? DBPOOL_OK : DBPOOL_EQUERY;
}

static void plus_ok(dbpool_conn *c, int64_t v) {
    int64_t got = 0;
    dbpool_error err;
    int rc = run_plus(c, v, &got, &err);
    if (rc != DBPOOL_OK)
        fail_msg("SELECT ?::int + 1 with %lld through PgBouncer: %s", (long long)v, err.message);
    assert_int_equal(got, v + 1);
}

/* With the defaults, two connections that run the same parameterised
 * statement a few times each, outside transactions: both prepare
 * `_dbpool_s1` on the one server session. The second used to fail with
 * 42P05 "prepared statement "_dbpool_s1" already exists". */
static void test_defaults_outside_transactions(void **state) {
    (void)state;
    dbpool *a = open_one(NULL), *b = open_one(NULL);
    dbpool_conn *ca = dbt_acquire(a), *cb = dbt_acquire(b);
    for (int64_t i = 0; i < 4; i++)
        plus_ok(ca, i);
    for (int64_t i = 0; i < 4; i++)
        plus_ok(cb, i);
    for (int64_t i = 0; i < 4; i++) {
        plus_ok(ca, i);
        plus_ok(cb, i);
    }
    /* Leases end and come back: the reset and the next lease work too. */
    dbt_exec_ok(cb, "SET application_name = 'pgbouncer-test'", NULL, 0);
    assert_int_equal(dbpool_release(ca), DBPOOL_OK);
    assert_int_equal(dbpool_release(cb), DBPOOL_OK);
    ca = dbt_acquire(a);
    cb = dbt_acquire(b);
    for (int64_t i = 0; i < 3; i++) {
        plus_ok(cb, i);
        plus_ok(ca, i);
    }
    assert_int_equal(dbpool_release(ca), DBPOOL_OK);
    assert_int_equal(dbpool_release(cb), DBPOOL_OK);
    assert_int_equal(dbpool_close(a), 0);
    assert_int_equal(dbpool_close(b), 0);
}

/* The collision inside the caller's transaction cannot be undone (the
 * failed prepare aborted it): the error says what to do about it, and the
 * connection works from the next transaction on. */
static void test_in_transaction_error_points_at_the_option(void **state) {
    (void)state;
    dbpool *a = open_one(NULL), *b = open_one(NULL);
    dbpool_conn *ca = dbt_acquire(a), *cb = dbt_acquire(b);
    plus_ok(ca, 1);
    plus_ok(ca, 2); /* _dbpool_s1 on the server session, A's */
    dbt_exec_ok(cb, "BEGIN", NULL, 0);
    plus_ok(cb, 1);
    int64_t got = 0;
    dbpool_error err;
    int rc = run_plus(cb, 2, &got, &err); /* B prepares _dbpool_s1 */
    assert_int_equal(rc, DBPOOL_EQUERY);
    assert_string_equal(err.sqlstate, "42P05");
    assert_non_null(strstr(err.message, "pool_statement_cache=off"));
    dbt_exec_ok(cb, "ROLLBACK", NULL, 0);
    for (int64_t i = 0; i < 3; i++)
        plus_ok(cb, i);
    dbt_exec_ok(cb, "BEGIN", NULL, 0);
    for (int64_t i = 0; i < 3; i++)
        plus_ok(cb, i);
    dbt_exec_ok(cb, "COMMIT", NULL, 0);
    assert_int_equal(dbpool_release(ca), DBPOOL_OK);
    assert_int_equal(dbpool_release(cb), DBPOOL_OK);
    assert_int_equal(dbpool_close(a), 0);
    assert_int_equal(dbpool_close(b), 0);
}

/* pool_statement_cache=off, as docs/operations.md recommends there: no
 * collision even inside transactions. */
static void test_cache_off(void **state) {
    (void)state;
    dbpool *a = open_one("pool_statement_cache=off"), *b = open_one("pool_statement_cache=off");
    dbpool_conn *ca = dbt_acquire(a), *cb = dbt_acquire(b);
    for (int64_t i = 0; i < 3; i++)
        plus_ok(ca, i);
    dbt_exec_ok(cb, "BEGIN", NULL, 0);
    for (int64_t i = 0; i < 3; i++)
        plus_ok(cb, i);
    dbt_exec_ok(cb, "COMMIT", NULL, 0);
    assert_int_equal(dbpool_release(ca), DBPOOL_OK);
    assert_int_equal(dbpool_release(cb), DBPOOL_OK);
    assert_int_equal(dbpool_close(a), 0);
    assert_int_equal(dbpool_close(b), 0);
}

/* Two server sessions handed out in turn: a statement's prepare and its
 * run reach different sessions. It was prepared twice (the second time
 * as a retry of a statement "gone") and then failed with 26000
 * "prepared statement "_dbpool_s2" does not exist". */
static void test_prepared_and_run_on_different_sessions(void **state) {
    (void)state;
    dbpool *a = open_one_at(1, NULL), *b = open_one_at(1, NULL);
    dbpool_conn *ca = dbt_acquire(a), *cb = dbt_acquire(b);
    /* Two server sessions exist: both leases hold one at once. */
    dbt_exec_ok(ca, "BEGIN", NULL, 0);
    dbt_exec_ok(ca, "SELECT 1", NULL, 0);
    dbt_exec_ok(cb, "BEGIN", NULL, 0);
    dbt_exec_ok(cb, "SELECT 1", NULL, 0);
    dbt_exec_ok(ca, "COMMIT", NULL, 0);
    dbt_exec_ok(cb, "COMMIT", NULL, 0);
    for (int64_t i = 0; i < 6; i++)
        plus_ok(ca, i);
    assert_int_equal(dbpool_release(ca), DBPOOL_OK);
    assert_int_equal(dbpool_release(cb), DBPOOL_OK);
    assert_int_equal(dbpool_close(a), 0);
    assert_int_equal(dbpool_close(b), 0);
}

/* A database PgBouncer does not list: DBPOOL_ENOTFOUND, as from the
 * server itself, not ECONNECT (which is retried and counted by the
 * circuit breaker). */
static void test_unknown_database(void **state) {
    (void)state;
    char url[1100];
    const char *slash = strrchr(bouncer_url[0], '/');
    assert_non_null(slash);
    snprintf(url, sizeof url, "%.*s/no_such_db_here", (int)(slash - bouncer_url[0]), bouncer_url[0]);
    dbpool_options o;
    dbt_options(&o, 1, 1);
    o.max_retries = 0;
    dbpool *p = NULL;
    dbpool_error err;
    assert_int_equal(dbpool_open(&p, url, &o, &err), DBPOOL_ENOTFOUND);
    assert_non_null(strstr(err.message, "no such database"));
    assert_false(dbt_has_secret(err.message, NULL));
}

/* PgBouncer's max_client_conn refuses the client as the server's
 * max_connections does: SQLSTATE 53300 and a hint naming the setting. */
static void test_max_client_conn(void **state) {
    (void)state;
    dbpool *held[3];
    dbpool_conn *c[3];
    for (int i = 0; i < 3; i++) {
        held[i] = open_one_at(1, NULL);
        /* The clients of the tests before may take PgBouncer a moment to
         * let go of: their places are waited for (up to 10 s). */
        dbpool_error err;
        int rc = DBPOOL_ECONNECT;
        for (int tries = 0; tries < 200 && (rc = dbpool_acquire(held[i], 1000, &c[i], &err)) != DBPOOL_OK;
             tries++)
            dbt_sleep_ms(50);
        if (rc != DBPOOL_OK)
            fail_msg("client %d of 3: %s", i + 1, err.message);
    }
    dbpool_options o;
    dbt_options(&o, 1, 1);
    o.max_retries = 0;
    dbpool *p = NULL;
    dbpool_error err;
    assert_int_equal(dbpool_open(&p, bouncer_url[1], &o, &err), DBPOOL_ECONNECT);
    assert_string_equal(err.sqlstate, "53300");
    assert_non_null(strstr(err.message, "PgBouncer is at its max_client_conn"));
    for (int i = 0; i < 3; i++) {
        assert_int_equal(dbpool_release(c[i]), DBPOOL_OK);
        assert_int_equal(dbpool_close(held[i]), 0);
    }
}

/* A statement kept on one session, then run in a transaction that
 * PgBouncer puts on the other: 26000, and the transaction is aborted, as
 * nothing can run it again there. It used to be prepared again after the
 * transaction and so fail the next transaction that landed elsewhere,
 * and the next; now the connection keeps nothing from then on. */
static void test_kept_statement_in_a_later_transaction(void **state) {
    (void)state;
    dbpool *a = open_one_at(2, NULL), *b = open_one_at(2, NULL);
    dbpool_conn *ca = dbt_acquire(a), *cb = dbt_acquire(b);
    int failed = 0;
    for (int round = 0; round < 3; round++) {
        plus_ok(ca, 1);
        plus_ok(ca, 2); /* kept, on the session last freed */
        /* B holds that session in a transaction: A's lands on the other. */
        dbt_exec_ok(cb, "BEGIN", NULL, 0);
        dbt_exec_ok(cb, "SELECT 1", NULL, 0);
        dbt_exec_ok(ca, "BEGIN", NULL, 0);
        int64_t got = 0;
        dbpool_error err;
        int rc = run_plus(ca, 3, &got, &err);
        if (rc != DBPOOL_OK) {
            assert_string_equal(err.sqlstate, "26000");
            assert_non_null(strstr(err.message, "pool_statement_cache=off"));
            failed++;
        } else {
            assert_int_equal(got, 4);
        }
        dbt_exec_ok(ca, "ROLLBACK", NULL, 0);
        dbt_exec_ok(cb, "COMMIT", NULL, 0);
    }
    assert_int_equal(failed, 1);
    assert_int_equal(dbpool_release(ca), DBPOOL_OK);
    assert_int_equal(dbpool_release(cb), DBPOOL_OK);
    assert_int_equal(dbpool_close(a), 0);
    assert_int_equal(dbpool_close(b), 0);
}

int main(void) {
    start_bouncer(0);
    start_bouncer(1);
    start_bouncer(2);
    atexit(stop_bouncers);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_outside_transactions),
        cmocka_unit_test(test_in_transaction_error_points_at_the_option),
        cmocka_unit_test(test_cache_off),
        cmocka_unit_test(test_prepared_and_run_on_different_sessions),
        cmocka_unit_test(test_kept_statement_in_a_later_transaction),
        cmocka_unit_test(test_unknown_database),
        cmocka_unit_test(test_max_client_conn),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    stop_bouncers();
    return rc;
}

#else /* !DBPOOL_HAVE_PG */

int main(void) {
    fprintf(stderr, "skipped: this build has no PostgreSQL backend\n");
    return DBT_SKIP;
}

#endif
