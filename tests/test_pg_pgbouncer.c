/* test_pg_pgbouncer.c — dbpool in front of PgBouncer in transaction
 * pooling mode, where each transaction may run on another server session
 * and a session's prepared statements belong to whichever client happened
 * to prepare them. The test starts its own PgBouncer (Debian 12's 1.18,
 * which does not follow prepared statements) on 127.0.0.1, in front of the
 * test PostgreSQL server, with ONE server session: every client's
 * statements land on it, so two dbpool connections both preparing their
 * first kept statement (`_dbpool_s1`) collide there, every time.
 * Most cases are two clients through one of three PgBouncers (one server
 * session, two handed out in turn, two last freed first), run from the
 * table two_client_cases; the refusals at open are cases of their own.
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

/* The PgBouncers the test starts, all in transaction mode in front of the
 * test server. */
enum { ONE_SESSION, TWO_IN_TURN, TWO_LAST_FREED_FIRST, N_BOUNCERS };
static const struct {
    int server_sessions; /* default_pool_size */
    int max_client_conn;
    /* server_round_robin: sessions handed out in turn; without it the
     * last one freed is handed out first (PgBouncer's default). */
    bool round_robin;
} bouncer_config[N_BOUNCERS] = {
    [ONE_SESSION] = {1, 20, false},
    [TWO_IN_TURN] = {2, 3, true}, /* room for 3 clients: test_max_client_conn */
    [TWO_LAST_FREED_FIRST] = {2, 20, false},
};
static pid_t bouncer[N_BOUNCERS] = {-1, -1, -1};
static char bouncer_url[N_BOUNCERS][1024];

static void stop_bouncers(void) {
    for (int i = 0; i < N_BOUNCERS; i++) {
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

/* PgBouncer `which` (bouncer_config) in transaction mode in front of the
 * test server; bouncer_url[which] is the test URL pointed at it. */
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
            db, port, db, listen, users, bouncer_config[which].server_sessions,
            bouncer_config[which].max_client_conn, bouncer_config[which].round_robin);
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

/* plus_ok with 0, 1, ... n - 1. */
static void plus_ok_n(dbpool_conn *c, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        plus_ok(c, i);
}

/* The same, inside a transaction of its own. */
static void plus_ok_n_in_transaction(dbpool_conn *c, int64_t n) {
    dbt_exec_ok(c, "BEGIN", NULL, 0);
    plus_ok_n(c, n);
    dbt_exec_ok(c, "COMMIT", NULL, 0);
}

/* A kept statement's failure inside a transaction says what to do: turn
 * the option off, and run the transaction (which the failure aborted)
 * again. A name taken (42P05) has one cause, a pooler: not a DEALLOCATE
 * or DISCARD, which the message used to offer for it as well. */
static void says_what_to_do(const dbpool_error *err) {
    if (!strstr(err->message, "pool_statement_cache=off") || !strstr(err->message, "run it again"))
        fail_msg("the message should point at pool_statement_cache=off and say to run the transaction "
                 "again: %s",
                 err->message);
    if (strcmp(err->sqlstate, "42P05") == 0 && strstr(err->message, "DEALLOCATE"))
        fail_msg("a name taken on the server session is no DEALLOCATE's doing: %s", err->message);
}

/* The statement that fails: with this SQLSTATE, and a message that points
 * at pool_statement_cache=off. */
static void plus_fails_pointing_at_the_option(dbpool_conn *c, int64_t v, const char *sqlstate) {
    int64_t got = 0;
    dbpool_error err;
    int rc = run_plus(c, v, &got, &err);
    assert_int_equal(rc, DBPOOL_EQUERY);
    assert_string_equal(err.sqlstate, sqlstate);
    says_what_to_do(&err);
}

/*
 * Most cases have one shape: two clients A and B (a pool of one
 * connection each) through one PgBouncer, a lease of each, statements on
 * them, and both leases released and the pools closed cleanly. A case
 * names the PgBouncer, the URL options, and what runs on the leases.
 */
typedef struct {
    dbpool *a, *b;
    dbpool_conn *ca, *cb;
} two_clients;

typedef struct {
    const char *name;
    int bouncer;
    const char *url_options; /* NULL: the defaults */
    void (*run)(two_clients *t);
} two_client_case;

/* With the defaults, two connections that run the same parameterised
 * statement a few times each, outside transactions: both prepare
 * `_dbpool_s1` on the one server session. The second used to fail with
 * 42P05 "prepared statement "_dbpool_s1" already exists". */
static void defaults_outside_transactions(two_clients *t) {
    plus_ok_n(t->ca, 4);
    plus_ok_n(t->cb, 4);
    for (int64_t i = 0; i < 4; i++) {
        plus_ok(t->ca, i);
        plus_ok(t->cb, i);
    }
    /* Leases end and come back: the reset and the next lease work too. */
    dbt_exec_ok(t->cb, "SET application_name = 'pgbouncer-test'", NULL, 0);
    assert_int_equal(dbpool_release(t->ca), DBPOOL_OK);
    assert_int_equal(dbpool_release(t->cb), DBPOOL_OK);
    t->ca = dbt_acquire(t->a);
    t->cb = dbt_acquire(t->b);
    for (int64_t i = 0; i < 3; i++) {
        plus_ok(t->cb, i);
        plus_ok(t->ca, i);
    }
}

/* The collision inside the caller's transaction cannot be undone (the
 * failed prepare aborted it): the error says what to do about it, and the
 * connection works from the next transaction on. */
static void in_transaction_error_points_at_the_option(two_clients *t) {
    plus_ok(t->ca, 1);
    plus_ok(t->ca, 2); /* _dbpool_s1 on the server session, A's */
    dbt_exec_ok(t->cb, "BEGIN", NULL, 0);
    plus_ok(t->cb, 1);
    plus_fails_pointing_at_the_option(t->cb, 2, "42P05"); /* B prepares _dbpool_s1 */
    dbt_exec_ok(t->cb, "ROLLBACK", NULL, 0);
    plus_ok_n(t->cb, 3);
    plus_ok_n_in_transaction(t->cb, 3);
}

/* pool_statement_cache=off, as docs/operations.md recommends there: no
 * collision even inside transactions. */
static void cache_off(two_clients *t) {
    plus_ok_n(t->ca, 3);
    plus_ok_n_in_transaction(t->cb, 3);
}

/* Two server sessions handed out in turn: a statement's prepare and its
 * run reach different sessions. It was prepared twice (the second time
 * as a retry of a statement "gone") and then failed with 26000
 * "prepared statement "_dbpool_s2" does not exist". */
static void prepared_and_run_on_different_sessions(two_clients *t) {
    /* Two server sessions exist: both leases hold one at once. */
    dbt_exec_ok(t->ca, "BEGIN", NULL, 0);
    dbt_exec_ok(t->ca, "SELECT 1", NULL, 0);
    dbt_exec_ok(t->cb, "BEGIN", NULL, 0);
    dbt_exec_ok(t->cb, "SELECT 1", NULL, 0);
    dbt_exec_ok(t->ca, "COMMIT", NULL, 0);
    dbt_exec_ok(t->cb, "COMMIT", NULL, 0);
    plus_ok_n(t->ca, 6);
}

/* A statement kept on one session, then run in a transaction that
 * PgBouncer puts on the other: 26000, and the transaction is aborted, as
 * nothing can run it again there. It used to be prepared again after the
 * transaction and so fail the next transaction that landed elsewhere,
 * and the next; now the connection keeps nothing from then on. */
static void kept_statement_in_a_later_transaction(two_clients *t) {
    int failed = 0;
    for (int round = 0; round < 3; round++) {
        plus_ok(t->ca, 1);
        plus_ok(t->ca, 2); /* kept, on the session last freed */
        /* B holds that session in a transaction: A's lands on the other. */
        dbt_exec_ok(t->cb, "BEGIN", NULL, 0);
        dbt_exec_ok(t->cb, "SELECT 1", NULL, 0);
        dbt_exec_ok(t->ca, "BEGIN", NULL, 0);
        int64_t got = 0;
        dbpool_error err;
        int rc = run_plus(t->ca, 3, &got, &err);
        if (rc != DBPOOL_OK) {
            assert_string_equal(err.sqlstate, "26000");
            says_what_to_do(&err);
            failed++;
        } else {
            assert_int_equal(got, 4);
        }
        dbt_exec_ok(t->ca, "ROLLBACK", NULL, 0);
        dbt_exec_ok(t->cb, "COMMIT", NULL, 0);
    }
    assert_int_equal(failed, 1);
}

static two_client_case two_client_cases[] = {
    {"defaults_outside_transactions", ONE_SESSION, NULL, defaults_outside_transactions},
    {"in_transaction_error_points_at_the_option", ONE_SESSION, NULL,
     in_transaction_error_points_at_the_option},
    {"cache_off", ONE_SESSION, "pool_statement_cache=off", cache_off},
    {"prepared_and_run_on_different_sessions", TWO_IN_TURN, NULL, prepared_and_run_on_different_sessions},
    {"kept_statement_in_a_later_transaction", TWO_LAST_FREED_FIRST, NULL,
     kept_statement_in_a_later_transaction},
};

static void test_two_clients(void **state) {
    const two_client_case *k = *state;
    two_clients t;
    t.a = open_one_at(k->bouncer, k->url_options);
    t.b = open_one_at(k->bouncer, k->url_options);
    t.ca = dbt_acquire(t.a);
    t.cb = dbt_acquire(t.b);
    k->run(&t);
    assert_int_equal(dbpool_release(t.ca), DBPOOL_OK);
    assert_int_equal(dbpool_release(t.cb), DBPOOL_OK);
    assert_int_equal(dbpool_close(t.a), 0);
    assert_int_equal(dbpool_close(t.b), 0);
}

/* An open through PgBouncer that it refuses, without retries: the code,
 * the SQLSTATE (NULL: not checked), words of the message, and no password
 * in it. */
static void expect_open_refused(const char *url, int code, const char *sqlstate, const char *words) {
    dbpool_options o;
    dbt_options(&o, 1, 1);
    o.max_retries = 0;
    dbpool *p = NULL;
    dbpool_error err;
    assert_int_equal(dbpool_open(&p, url, &o, &err), code);
    if (sqlstate)
        assert_string_equal(err.sqlstate, sqlstate);
    assert_non_null(strstr(err.message, words));
    assert_false(dbt_has_secret(err.message, NULL));
}

/* A database PgBouncer does not list: DBPOOL_ENOTFOUND, as from the
 * server itself, not ECONNECT (which is retried and counted by the
 * circuit breaker). */
static void test_unknown_database(void **state) {
    (void)state;
    char url[1100];
    const char *slash = strrchr(bouncer_url[ONE_SESSION], '/');
    assert_non_null(slash);
    snprintf(url, sizeof url, "%.*s/no_such_db_here", (int)(slash - bouncer_url[ONE_SESSION]),
             bouncer_url[ONE_SESSION]);
    expect_open_refused(url, DBPOOL_ENOTFOUND, NULL, "no such database");
}

/* PgBouncer's max_client_conn refuses the client as the server's
 * max_connections does: SQLSTATE 53300 and a hint naming the setting. */
static void test_max_client_conn(void **state) {
    (void)state;
    int room = bouncer_config[TWO_IN_TURN].max_client_conn;
    dbpool *held[3];
    dbpool_conn *c[3];
    assert_int_equal(room, 3);
    for (int i = 0; i < room; i++) {
        held[i] = open_one_at(TWO_IN_TURN, NULL);
        /* The clients of the tests before may take PgBouncer a moment to
         * let go of: their places are waited for (up to 10 s). */
        dbpool_error err;
        int rc = DBPOOL_ECONNECT;
        for (int tries = 0; tries < 200 && (rc = dbpool_acquire(held[i], 1000, &c[i], &err)) != DBPOOL_OK;
             tries++)
            dbt_sleep_ms(50);
        if (rc != DBPOOL_OK)
            fail_msg("client %d of %d: %s", i + 1, room, err.message);
    }
    expect_open_refused(bouncer_url[TWO_IN_TURN], DBPOOL_ECONNECT, "53300",
                        "PgBouncer is at its max_client_conn");
    for (int i = 0; i < room; i++) {
        assert_int_equal(dbpool_release(c[i]), DBPOOL_OK);
        assert_int_equal(dbpool_close(held[i]), 0);
    }
}

int main(void) {
    for (int i = 0; i < N_BOUNCERS; i++)
        start_bouncer(i);
    atexit(stop_bouncers);
    enum { N_TWO = sizeof two_client_cases / sizeof two_client_cases[0] };
    struct CMUnitTest tests[N_TWO + 2];
    for (size_t i = 0; i < N_TWO; i++)
        tests[i] =
            (struct CMUnitTest){two_client_cases[i].name, test_two_clients, NULL, NULL, &two_client_cases[i]};
    tests[N_TWO] = (struct CMUnitTest)cmocka_unit_test(test_unknown_database);
    tests[N_TWO + 1] = (struct CMUnitTest)cmocka_unit_test(test_max_client_conn);
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
