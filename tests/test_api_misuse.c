/* The public API as a new user meets it: calls in the wrong order or in
 * the wrong state end in the code and message include/dbpool.h promises.
 * Uses the mock and SQLite backends. */
#include "driver_mock.h"
#include "testsupport.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

static dbpool *open_url(const char *url, dbpool_options *o) {
    dbpool *p = NULL;
    dbpool_error e;
    if (dbpool_open(&p, url, o, &e) != DBPOOL_OK)
        fail_msg("open %s: %s", url, e.message);
    return p;
}

/* dbpool_try_acquire on a suspended pool (not fail-fast) has idle
 * connections it will not hand out: its error says the pool is suspended,
 * not that no connection is free (which read "no connection free ... (0 in
 * use, max 2)" with one idle). */
static void test_try_acquire_while_suspended_says_so(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 1, 2);
    o.suspend_fails_fast = false;
    o.maintenance_interval_ms = 0;
    dbpool *p = open_url("mock:", &o);
    assert_int_equal(dbpool_suspend(p), DBPOOL_OK);
    dbpool_conn *c = NULL;
    dbpool_error e;
    assert_int_equal(dbpool_try_acquire(p, &c, &e), DBPOOL_EBUSY);
    assert_null(c);
    assert_int_equal(e.code, DBPOOL_EBUSY);
    if (!strstr(e.message, "suspended") || !strstr(e.message, "dbpool_resume"))
        fail_msg("try_acquire on a suspended pool: %s", e.message);
    assert_int_equal(dbpool_resume(p), DBPOOL_OK);
    assert_int_equal(dbpool_try_acquire(p, &c, &e), DBPOOL_OK);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_close(p), 0);
}

static int after_connect_calls;
static int count_after_connect(void *native, void *user) {
    (void)native, (void)user;
    after_connect_calls++;
    return 0;
}

/* A lease given back dirty after dbpool_close is closed as it comes back
 * (include/dbpool.h): it is not reset first. Before, release ran the
 * reset's round trips (ROLLBACK; on MySQL/MariaDB and PostgreSQL also
 * init_sql and after_connect again, after dbpool_close had returned) on a
 * connection it closed right after, and counted it in "rollbacks". */
static void test_release_after_close_does_not_reset(void **state) {
    (void)state;
    dbpool__mock_reset();
    dbpool_options o;
    dbt_options(&o, 0, 2);
    o.maintenance_interval_ms = 0;
    o.after_connect = count_after_connect;
    after_connect_calls = 0;
    dbpool *p = open_url("mock:", &o);
    dbpool_conn *c = NULL;
    assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
    assert_int_equal(dbpool_exec(c, "BEGIN", NULL, 0, NULL, NULL), DBPOOL_OK);
    assert_int_equal(after_connect_calls, 1);
    dbpool__mock_counters before;
    dbpool__mock_get_counters(&before);
    assert_int_equal(dbpool_close(p), 1); /* the lease is still out */
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    dbpool__mock_counters after;
    dbpool__mock_get_counters(&after);
    assert_int_equal(after.resets - before.resets, 0);
    assert_int_equal(after.live, 0); /* closed, and the pool with it */
    assert_int_equal(after_connect_calls, 1);
}

/* dbpool_strerror(DBPOOL_EBUSY) read "too many callers waiting", but most
 * EBUSY answers have nobody waiting: a try_acquire on a full pool and an
 * acquire on a suspended one. The description covers every case in which
 * the pool returns the code. */
static void test_ebusy_description_fits_every_case(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.maintenance_interval_ms = 0;
    dbpool *p = open_url("mock:", &o);
    dbpool_conn *c = NULL, *c2 = NULL;
    dbpool_error e;
    assert_int_equal(dbpool_acquire(p, 1000, &c, &e), DBPOOL_OK);
    int rc = dbpool_try_acquire(p, &c2, &e); /* full, nobody waiting */
    assert_int_equal(rc, DBPOOL_EBUSY);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.waiting, 0);
    const char *d = dbpool_strerror(rc);
    if (strstr(d, "callers waiting") && !strstr(d, "free"))
        fail_msg("try_acquire on a full pool with nobody waiting: dbpool_strerror says '%s'", d);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_suspend(p), DBPOOL_OK);
    assert_int_equal(dbpool_acquire(p, 1000, &c, &e), DBPOOL_EBUSY); /* suspended, fails fast */
    if (!strstr(d, "suspended"))
        fail_msg("dbpool_strerror(DBPOOL_EBUSY) '%s' does not cover a suspended pool", d);
    if (!strstr(d, "max_waiters"))
        fail_msg("dbpool_strerror(DBPOOL_EBUSY) '%s' does not cover max_waiters", d);
    assert_int_equal(dbpool_resume(p), DBPOOL_OK);
    assert_int_equal(dbpool_close(p), 0);
}

/* dbpool_close twice, as an error path that closes a pool already closed
 * does: the second call is refused with DBPOOL_EMISUSE and touches
 * nothing (it read the freed pool: heap-use-after-free under ASan, a
 * crash or a hang without), also after a close that left a lease out
 * whose release freed the pool. */
static void test_second_close_is_refused(void **state) {
    (void)state;
    dbpool__mock_reset();
    dbpool_options o;
    dbt_options(&o, 1, 2);
    o.maintenance_interval_ms = 0;
    dbpool *p = open_url("mock:", &o);
    assert_int_equal(dbpool_close(p), 0);
    assert_int_equal(dbpool_close(p), DBPOOL_EMISUSE);

    dbpool *q = open_url("mock:", &o);
    dbpool_conn *c = NULL;
    assert_int_equal(dbpool_acquire(q, 1000, &c, NULL), DBPOOL_OK);
    assert_int_equal(dbpool_close(q), 1);              /* the lease keeps the pool */
    assert_int_equal(dbpool_close(q), DBPOOL_EMISUSE); /* still there: refused */
    assert_int_equal(dbpool_release(c), DBPOOL_OK);    /* frees it */
    assert_int_equal(dbpool_close(q), DBPOOL_EMISUSE); /* gone: refused, untouched */
    dbpool__mock_counters n;
    dbpool__mock_get_counters(&n);
    assert_int_equal(n.live, 0);
}

/* NULL for the pool or for out: DBPOOL_EINVAL, *out NULL, and a message
 * that names the function the caller called. dbpool_try_acquire's said
 * "dbpool_acquire: pool is NULL", a function the caller never called. */
static void test_null_arguments_of_acquire_named(void **state) {
    (void)state;
    dbpool_conn *c = (dbpool_conn *)&c; /* not NULL: must be set to NULL */
    dbpool_error e;
    assert_int_equal(dbpool_try_acquire(NULL, &c, &e), DBPOOL_EINVAL);
    assert_null(c);
    assert_int_equal(e.code, DBPOOL_EINVAL);
    assert_string_equal(e.message, "dbpool_try_acquire: pool is NULL");
    assert_int_equal(dbpool_try_acquire(NULL, NULL, &e), DBPOOL_EINVAL);
    assert_string_equal(e.message, "dbpool_try_acquire: out must not be NULL");
    assert_int_equal(dbpool_try_acquire(NULL, NULL, NULL), DBPOOL_EINVAL);
    c = (dbpool_conn *)&c;
    assert_int_equal(dbpool_acquire(NULL, 0, &c, &e), DBPOOL_EINVAL);
    assert_null(c);
    assert_string_equal(e.message, "dbpool_acquire: pool is NULL");
    assert_int_equal(dbpool_acquire(NULL, -1, NULL, &e), DBPOOL_EINVAL);
    assert_string_equal(e.message, "dbpool_acquire: out must not be NULL");

    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.maintenance_interval_ms = 0;
    dbpool *p = open_url("mock:", &o);
    assert_int_equal(dbpool_try_acquire(p, NULL, &e), DBPOOL_EINVAL);
    assert_string_equal(e.message, "dbpool_try_acquire: out must not be NULL");
    assert_int_equal(dbpool_try_acquire(p, &c, &e), DBPOOL_OK); /* the pool is untouched */
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_close(p), 0);
}

/* In a child process after fork(), a lease the parent held is the
 * parent's session: dbpool_exec and dbpool_query refuse it, and
 * dbpool_conn_native gave its native handle out all the same (a statement
 * run on it from the child goes out on the parent's socket). It returns
 * NULL there now; the parent's lease is untouched. */
static void test_native_handle_refused_in_forked_child(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 1, 2);
    o.maintenance_interval_ms = 0;
    dbpool *p = open_url("mock:", &o);
    dbpool_conn *c = NULL;
    assert_int_equal(dbpool_acquire(p, 1000, &c, NULL), DBPOOL_OK);
    void *native = dbpool_conn_native(c);
    assert_non_null(native);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* The child: only what touches no lock, then _exit. */
        int code = dbpool_conn_native(c) == NULL ? 0 : 1;
        if (dbpool_exec(c, "SELECT 1", NULL, 0, NULL, NULL) != DBPOOL_EMISUSE)
            code |= 2;
        _exit(code);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    if (WEXITSTATUS(st) != 0)
        fail_msg("in the forked child: %s%s",
                 WEXITSTATUS(st) & 1 ? "dbpool_conn_native gave the parent's handle; " : "",
                 WEXITSTATUS(st) & 2 ? "dbpool_exec was not refused" : "");
    assert_ptr_equal(dbpool_conn_native(c), native); /* the parent's lease as it was */
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    assert_int_equal(dbpool_close(p), 0);
}

/* A caller who does not wait (dbpool_try_acquire, dbpool_acquire with
 * timeout 0) opens a new connection on its own thread only "if there is
 * room and nobody waits in line (a new connection is theirs)"
 * (include/dbpool.h). With a caller in line and a place free, it gets
 * DBPOOL_EBUSY / DBPOOL_ETIMEDOUT at once and opens nothing: no test
 * noticed when the "nobody waits" condition was dropped from
 * src/acquire.c (the caller then connected ahead of the line). */
static void test_no_wait_caller_leaves_new_connections_to_the_line(void **state) {
    (void)state;
    dbpool__mock_reset();
    dbpool_options o;
    dbt_options(&o, 0, 3);
    o.maintenance_interval_ms = 0;
    o.max_connecting = 1;
    dbpool *p = open_url("mock:", &o);
    dbpool_conn *held = NULL;
    assert_int_equal(dbpool_acquire(p, 1000, &held, NULL), DBPOOL_OK); /* the one opened by open */
    dbpool__mock_set_connect_delay_ms(1500); /* the waiter's connect stays under way */
    dbt_timed_acquire w = {.p = p, .timeout_ms = 30000};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, dbt_timed_acquire_main, &w), 0);
    dbt_wait_for_waiters(p, 1, 10000);
    dbpool_stats s;
    int64_t until = dbt_now_ms() + 10000;
    for (dbpool_get_stats(p, &s); s.connecting != 1; dbpool_get_stats(p, &s)) {
        if (dbt_now_ms() > until)
            fail_msg("no connect under way for the waiter after 10 s");
        dbt_sleep_ms(1);
    }
    assert_true(s.total < s.max_size); /* a place is free */
    dbpool__mock_counters before, after;
    dbpool__mock_get_counters(&before);
    dbpool_conn *c = (dbpool_conn *)&c;
    dbpool_error e;
    assert_int_equal(dbpool_try_acquire(p, &c, &e), DBPOOL_EBUSY);
    assert_null(c);
    if (!strstr(e.message, "waiting ahead"))
        fail_msg("try_acquire with a caller in line: %s", e.message);
    c = (dbpool_conn *)&c;
    assert_int_equal(dbpool_acquire(p, 0, &c, &e), DBPOOL_ETIMEDOUT);
    assert_null(c);
    dbpool__mock_get_counters(&after);
    assert_int_equal(after.connects, before.connects); /* neither opened one of its own */
    assert_true(dbt_join_within(t, 30000, NULL));
    assert_int_equal(w.rc, DBPOOL_OK); /* the caller in line got its new connection */
    dbpool__mock_set_connect_delay_ms(0);
    assert_int_equal(dbpool_release(held), DBPOOL_OK);
    assert_int_equal(dbpool_close(p), 0);
}

/* NULL handles and unknown values, as include/dbpool.h answers them. */
static void test_null_handles_and_unknown_values(void **state) {
    (void)state;
    assert_null(dbpool_conn_native(NULL));
    assert_int_equal(dbpool_suspend(NULL), DBPOOL_EINVAL);
    assert_int_equal(dbpool_resume(NULL), DBPOOL_EINVAL);
    assert_int_equal(dbpool_manager_new(NULL), DBPOOL_EINVAL);
    assert_non_null(dbpool_errname(12345));
    assert_non_null(dbpool_errname(1));
    assert_string_equal(dbpool_breaker_state_name(DBPOOL_BREAKER_CLOSED), "closed");
    assert_string_equal(dbpool_breaker_state_name(DBPOOL_BREAKER_OPEN), "open");
    assert_string_equal(dbpool_breaker_state_name(DBPOOL_BREAKER_HALF_OPEN), "half_open");
    assert_non_null(dbpool_breaker_state_name((dbpool_breaker_state)99));
    assert_string_equal(dbpool_close_reason_name(DBPOOL_CLOSE_IDLE_TIMEOUT), "idle_timeout");
    assert_string_equal(dbpool_close_reason_name(DBPOOL_CLOSE_LIFETIME), "lifetime");
    assert_non_null(dbpool_close_reason_name(DBPOOL_CLOSE_REASON_COUNT));
    dbpool_param np = dbpool_param_text(NULL);
    assert_int_equal(np.type, DBPOOL_TYPE_NULL);
    np = dbpool_param_blob(NULL, 5);
    assert_int_equal(np.type, DBPOOL_TYPE_NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_try_acquire_while_suspended_says_so),
        cmocka_unit_test(test_release_after_close_does_not_reset),
        cmocka_unit_test(test_ebusy_description_fits_every_case),
        cmocka_unit_test(test_second_close_is_refused),
        cmocka_unit_test(test_null_arguments_of_acquire_named),
        cmocka_unit_test(test_native_handle_refused_in_forked_child),
        cmocka_unit_test(test_no_wait_caller_leaves_new_connections_to_the_line),
        cmocka_unit_test(test_null_handles_and_unknown_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
