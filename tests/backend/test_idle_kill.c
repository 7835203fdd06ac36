/*
 * test_idle_kill.c — sessions the server closes while idle. The timeouts
 * are set per session by init_sql, so nothing server-wide changes:
 * PostgreSQL's idle_session_timeout and idle_in_transaction_session_timeout
 * (300 ms), MySQL/MariaDB's wait_timeout (1 s, idle inside a transaction
 * or not).
 *
 * - Idle in the pool: validation (the default, if idle) replaces it, and
 *   the caller never sees it.
 * - Held by a caller: the next statement fails with DBPOOL_EBROKEN and a
 *   message that says why or what to do. PostgreSQL: the server's
 *   "terminating connection due to idle-session timeout", which libpq's
 *   result left out (before, the caller read only "server closed the
 *   connection unexpectedly ... the server terminated abnormally").
 *   MariaDB: release the lease and acquire another (before, only
 *   Connector/C's "Server has gone away (error 2006)"). A further statement
 *   on the lease says to release it and acquire another (PostgreSQL
 *   before: "no connection to the server"). A new lease works.
 * - Held by a caller inside a transaction: the same, with PostgreSQL's
 *   reason "idle-in-transaction timeout"; the release of that lease (whose
 *   transaction cannot be rolled back) leaves the pool working.
 * - The log, as an operator reads it: the WARN line of the validation that
 *   replaced the session gives the server's words and no advice meant for
 *   a lease holder (there is none: before, MariaDB's said "release the
 *   lease (it is closed) and acquire another").
 *
 * SQLite has no server to close a session: skipped there.
 */
#include "backend_common.h"

/* What differs between the server backends. */
typedef struct {
    const char *backend;
    /* Makes the server close this session once idle a moment. */
    const char *init_sql;
    /* This session's id, and how many sessions with id ? the server has. */
    const char *session_id_sql;
    const char *session_count_sql;
    /* How long the server may take to close an idle session. */
    int64_t gone_within_ms;
    /* The first statement on a lease whose session the server closed
     * must say this: idle, and idle inside a transaction. */
    const char *idle_says;
    const char *in_transaction_says;
    /* The WARN line of the validation that finds the session closed
     * must say this: the server's words, or Connector/C's error (2006
     * "Server has gone away", or 2013 "Lost connection"). */
    const char *validation_says;
} idle_kill_case;

static const idle_kill_case cases[] = {
    {"pg", "SET idle_session_timeout = 300; SET idle_in_transaction_session_timeout = 300",
     "SELECT pg_backend_pid()", "SELECT count(*) FROM pg_stat_activity WHERE pid = ?", 10000,
     "idle-session timeout", "idle-in-transaction timeout", "idle-session timeout"},
    {"mysql", "SET SESSION wait_timeout = 1", "SELECT CONNECTION_ID()",
     "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ?", 15000, "acquire another",
     "acquire another", "(error 20"},
};

static const idle_kill_case *the_case;

/* The pool's log lines, for the tests that read them. */
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char log_lines[32][1200];
static int log_count;

static void collect(void *user, dbpool_log_level level, const char *message) {
    (void)user;
    pthread_mutex_lock(&log_mu);
    if (log_count < (int)(sizeof log_lines / sizeof log_lines[0]))
        snprintf(log_lines[log_count++], sizeof log_lines[0], "%s %s",
                 level == DBPOOL_LOG_WARN    ? "WARN"
                 : level == DBPOOL_LOG_ERROR ? "ERROR"
                                             : "INFO",
                 message);
    pthread_mutex_unlock(&log_mu);
}

/* The collected line that contains `words`, or NULL. */
static const char *logged(const char *words) {
    const char *found = NULL;
    pthread_mutex_lock(&log_mu);
    for (int i = 0; i < log_count && !found; i++)
        if (strstr(log_lines[i], words))
            found = log_lines[i];
    pthread_mutex_unlock(&log_mu);
    return found;
}

static dbpool *open_pool(void) {
    dbpool_options o;
    bt_options(&o, 0, 1);
    /* Idle longer than this: validated before hand-out (the default
     * window, 500 ms, is longer than PostgreSQL's idle timeouts here). */
    o.validation_window_ms = 100;
    o.init_sql = the_case->init_sql;
    o.log_fn = collect;
    o.log_level = DBPOOL_LOG_WARN;
    pthread_mutex_lock(&log_mu);
    log_count = 0;
    pthread_mutex_unlock(&log_mu);
    return bt_open(&o, NULL);
}

static int64_t session_id(dbpool_conn *c) { return bt_query_int(c, the_case->session_id_sql, NULL, 0); }

/* Wait until the server has closed session `id`. */
static void wait_session_gone(int64_t id) {
    dbt_wait_count_zero(dbt_backend_url(bt_backend), the_case->session_count_sql, id,
                        the_case->gone_within_ms);
}

/* The message must say `words`, and `more` too unless NULL: why, and
 * what to do. */
static void expect_broken(dbpool_conn *c, const char *sql, const char *words, const char *more) {
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int rc = dbpool_exec(c, sql, NULL, 0, NULL, &e);
    print_message("[%s] \"%s\" on a closed session: %s: %s\n", bt_backend, sql, dbpool_errname(rc),
                  e.message);
    BT_CHECK(rc == DBPOOL_EBROKEN, "expected DBPOOL_EBROKEN, got %s: %s", dbpool_errname(rc), e.message);
    BT_CHECK(strstr(e.message, words) != NULL, "the message should say \"%s\": %s", words, e.message);
    BT_CHECK(!more || strstr(e.message, more) != NULL, "the message should say \"%s\": %s", more, e.message);
}

/* A new lease of p works. */
static void expect_fresh_lease(dbpool *p) {
    dbpool_conn *c = bt_acquire(p);
    BT_CHECK(bt_query_int(c, "SELECT 1", NULL, 0) == 1, "SELECT 1 on a new lease");
    bt_release(c);
}

static void test_idle_in_pool_replaced(void **state) {
    (void)state;
    dbpool *p = open_pool();
    dbpool_conn *c = bt_acquire(p);
    int64_t id = session_id(c);
    bt_release(c);
    wait_session_gone(id);
    expect_fresh_lease(p);
    dbpool_stats s = bt_stats(p);
    BT_CHECK(s.destroyed_by[DBPOOL_CLOSE_VALIDATION] == 1, "validation should have replaced it: %llu closed",
             (unsigned long long)s.destroyed_by[DBPOOL_CLOSE_VALIDATION]);
    assert_int_equal(dbpool_close(p), 0);
    /* Nobody holds that connection: the line must not tell anyone to
     * release a lease, only why the pool replaced it. */
    const char *found = logged("failed validation");
    BT_CHECK(found != NULL, "the validation failure should be logged at WARN");
    const char *line = found ? found : "";
    print_message("[%s] %s\n", bt_backend, line);
    BT_CHECK(strstr(line, "release the lease") == NULL && strstr(line, "acquire another") == NULL,
             "the validation line tells a lease holder what to do, but there is none: %s", line);
    BT_CHECK(strstr(line, the_case->validation_says) != NULL, "the validation line should say \"%s\": %s",
             the_case->validation_says, line);
}

static void test_idle_lease_broken_says_why(void **state) {
    (void)state;
    dbpool *p = open_pool();
    dbpool_conn *c = bt_acquire(p);
    wait_session_gone(session_id(c));
    expect_broken(c, "SELECT 1", the_case->idle_says, "acquire another");
    expect_broken(c, "SELECT 1", "acquire another", NULL);
    bt_release(c);
    expect_fresh_lease(p);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_idle_in_transaction_broken_says_why(void **state) {
    (void)state;
    dbpool *p = open_pool();
    dbpool_conn *c = bt_acquire(p);
    int64_t id = session_id(c);
    bt_exec(c, "BEGIN");
    wait_session_gone(id);
    expect_broken(c, "SELECT 1", the_case->in_transaction_says, "acquire another");
    bt_release(c);
    expect_fresh_lease(p);
    assert_int_equal(dbpool_close(p), 0);
}

int main(int argc, char **argv) {
    bt_init(argc, argv);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (bt_is(cases[i].backend))
            the_case = &cases[i];
    if (!the_case) {
        fprintf(stderr, "skipped: %s has no server to close an idle session\n", bt_backend);
        return DBT_SKIP;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idle_in_pool_replaced),
        cmocka_unit_test(test_idle_lease_broken_says_why),
        cmocka_unit_test(test_idle_in_transaction_broken_says_why),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
