/* test_pg_demo_frozen_server.c — `dbpool demo` ends when the server stops
 * answering in the middle of its statements. The demo's INSERT is made to
 * wait on a lock this test holds, the PostgreSQL backend serving it is then
 * stopped (SIGSTOP) and the lock released: the server can no longer answer
 * or enforce anything. The demo gives its statements --timeout (3 s) on
 * the server and gives up on the client at most as long again later: it
 * must exit 1 with DBPOOL_ETIMEDOUT by then. Before, it waited for ever.
 * The demo's sessions carry their own application_name and search_path
 * (schema demo_frozen), so nothing else's events table is locked. Needs
 * DBPOOL_TEST_PG_URL. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "cli_run.h"
#include "dbpool.h"
#include "testsupport.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef DBPOOL_HAVE_PG

#define APP "dbpool_demo_frozen"
#define TIMEOUT_S 3
#define ALARM_S 40

static volatile sig_atomic_t stopped_pid;

static void on_alarm(int sig) {
    (void)sig;
    if (stopped_pid > 0)
        kill((pid_t)stopped_pid, SIGCONT);
    static const char msg[] = "test_pg_demo_frozen_server: the demo hung on a frozen server\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    _exit(1);
}

typedef struct demo_run {
    const char *args[12];
    dbt_run r;
    int64_t ended_ms;
} demo_run;

static void *run_demo(void *arg) {
    demo_run *d = arg;
    d->r = dbt_run_cli(d->args);
    d->ended_ms = dbt_now_ms();
    return NULL;
}

static int64_t first_int(dbpool_conn *c, const char *sql) {
    dbpool_result *r = dbt_query_ok(c, sql, NULL, 0);
    int64_t v = dbt_next_ok(r) == 1 ? dbpool_result_int64(r, 0) : 0;
    dbpool_result_free(r);
    return v;
}

static void test_demo_ends_on_frozen_server(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.statement_timeout_ms = 10000;
    dbpool *admin = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    if (dbpool_open(&admin, dbt_backend_url("pg"), &o, &e) != DBPOOL_OK)
        fail_msg("open: %s", e.message);
    dbpool_conn *locker = dbt_acquire(admin);
    dbpool_conn *watcher = dbt_acquire(admin);
    dbt_exec_ok(locker, "CREATE SCHEMA IF NOT EXISTS demo_frozen", NULL, 0);
    dbt_exec_ok(locker,
                "CREATE TABLE IF NOT EXISTS demo_frozen.events(id INTEGER PRIMARY KEY, label TEXT NOT NULL)",
                NULL, 0);
    dbt_exec_ok(locker, "BEGIN", NULL, 0);
    dbt_exec_ok(locker, "LOCK TABLE demo_frozen.events IN ACCESS EXCLUSIVE MODE", NULL, 0);

    char input[512], output[512], timeout[16];
    snprintf(input, sizeof input, "%s/labels.txt", dbt_tmpdir());
    snprintf(output, sizeof output, "%s/out.json", dbt_tmpdir());
    snprintf(timeout, sizeof timeout, "%d", TIMEOUT_S);
    FILE *f = fopen(input, "w");
    assert_non_null(f);
    fputs("one\ntwo\n", f);
    fclose(f);
    demo_run d = {
        .args = {"demo", "--input", input, "--output", output, "--timeout", timeout, "--db",
                 dbt_backend_url_with("pg", "application_name=" APP "&options=-csearch_path%3Ddemo_frozen"),
                 NULL}};
    signal(SIGALRM, on_alarm);
    alarm(ALARM_S);
    int64_t t0 = dbt_now_ms();
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, run_demo, &d), 0);

    /* The demo's session waiting on the lock. */
    int64_t pid = 0;
    while (pid == 0 && dbt_now_ms() - t0 < 2000) {
        pid = first_int(watcher,
                        "SELECT COALESCE(MAX(pid), 0) FROM pg_stat_activity WHERE application_name = '" APP
                        "' AND wait_event_type = 'Lock'");
        if (pid == 0)
            dbt_sleep_ms(5);
    }
    if (pid == 0) {
        dbt_exec_ok(locker, "ROLLBACK", NULL, 0);
        pthread_join(th, NULL);
        fail_msg("the demo's session never waited on the lock: exit %d, stderr: %s", d.r.status, d.r.err);
    }
    if (kill((pid_t)pid, 0) != 0) { /* the server runs as a user this test may not signal */
        dbt_exec_ok(locker, "ROLLBACK", NULL, 0);
        pthread_join(th, NULL);
        alarm(0);
        print_message("skipped: cannot signal the server's backend %lld\n", (long long)pid);
        dbt_run_free(&d.r);
        assert_int_equal(dbpool_release(locker), DBPOOL_OK);
        assert_int_equal(dbpool_release(watcher), DBPOOL_OK);
        assert_int_equal(dbpool_close(admin), 0);
        return;
    }
    stopped_pid = (sig_atomic_t)pid;
    assert_int_equal(kill((pid_t)pid, SIGSTOP), 0);
    int64_t frozen = dbt_now_ms();
    dbt_exec_ok(locker, "ROLLBACK", NULL, 0);
    pthread_join(th, NULL);
    kill((pid_t)pid, SIGCONT);
    stopped_pid = 0;
    alarm(0);

    int64_t took = d.ended_ms - t0;
    print_message("demo on a frozen server: exit %d after %lld ms (frozen at %lld ms): %s", d.r.status,
                  (long long)took, (long long)(frozen - t0), d.r.err);
    assert_int_equal(d.r.status, 1);
    if (!strstr(d.r.err, "DBPOOL_ETIMEDOUT") && !strstr(d.r.err, "statement_timeout_ms"))
        fail_msg("the demo should say the statement timed out: %s", d.r.err);
    /* --timeout on the server, as long again on the client, and room for a
     * loaded machine. */
    if (took > 2 * TIMEOUT_S * 1000 + 2000)
        fail_msg("the demo ended %lld ms after it started, past its bound of %d s", (long long)took,
                 2 * TIMEOUT_S);
    dbt_run_free(&d.r);

    assert_int_equal(dbpool_release(locker), DBPOOL_OK);
    assert_int_equal(dbpool_release(watcher), DBPOOL_OK);
    dbpool_conn *c = dbt_acquire(admin);
    dbt_exec_ok(c, "DROP SCHEMA demo_frozen CASCADE", NULL, 0);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_close(admin), 0);
}

int main(void) {
    (void)dbt_backend_url("pg"); /* skips without a server */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_demo_ends_on_frozen_server),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#else /* !DBPOOL_HAVE_PG */

int main(void) {
    fprintf(stderr, "skipped: this build has no PostgreSQL backend\n");
    return DBT_SKIP;
}

#endif
