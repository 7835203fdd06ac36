/* test_pg_session_reset.c — a caller's session change does not reach the
 * next caller: after a statement that may outlive its transaction (SET,
 * temporary tables, LISTEN, PREPARE, advisory locks, set_config, WITH HOLD)
 * the release runs DISCARD ALL, then statement_timeout and init_sql again,
 * and counts a reset in `rollbacks`; a clean release costs nothing.
 * Statements on the native handle are not seen (documented). One
 * connection per pool (max_size 1), so the next lease is the same backend.
 * Needs DBPOOL_TEST_PG_URL (written by scripts/pg-server.sh). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "dbpool.h"
#include "testsupport.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef DBPOOL_HAVE_PG

#include <libpq-fe.h>

#include <unistd.h>

static char base_url[1024];
static char table[64];      /* a regular table, unique per process: tests may run in parallel */
static char temp_table[64]; /* a temporary one */
static long long lock_key;  /* an advisory lock key, unique per process */

static dbpool *open_pool_opts(const char *url, dbpool_options *o) {
    dbpool *p = NULL;
    dbpool_error err;
    int rc = dbpool_open(&p, url, o, &err);
    if (rc != DBPOOL_OK)
        fail_msg("dbpool_open: %s: %s", dbpool_errname(rc), err.message);
    return p;
}

/* One connection, no maintenance thread, no validation round trips. The
 * statement timeout keeps a lock that a broken reset leaked from an
 * earlier test (whose pool a failed assertion left open) from hanging a
 * later one. */
static dbpool *open_pool(void) {
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.maintenance_interval_ms = 0;
    o.validation = DBPOOL_VALIDATE_NEVER;
    o.statement_timeout_ms = 10000;
    return open_pool_opts(base_url, &o);
}

static dbpool_conn *lease(dbpool *p) {
    dbpool_conn *c = NULL;
    dbpool_error err;
    int rc = dbpool_acquire(p, 5000, &c, &err);
    if (rc != DBPOOL_OK)
        fail_msg("dbpool_acquire: %s: %s", dbpool_errname(rc), err.message);
    return c;
}

static void release(dbpool_conn *c) { assert_int_equal(dbpool_release(c), DBPOOL_OK); }

static void exec_ok(dbpool_conn *c, const char *sql) {
    dbpool_error err;
    int rc = dbpool_exec(c, sql, NULL, 0, NULL, &err);
    if (rc != DBPOOL_OK)
        fail_msg("%s: %s: %s", sql, dbpool_errname(rc), err.message);
}

/* The first column of the first row as a new string ("<NULL>" for NULL). */
static char *query_text(dbpool_conn *c, const char *sql) {
    dbpool_result *r = NULL;
    dbpool_error err;
    int rc = dbpool_query(c, sql, NULL, 0, &r, &err);
    if (rc != DBPOOL_OK)
        fail_msg("%s: %s: %s", sql, dbpool_errname(rc), err.message);
    rc = dbpool_result_next(r, &err);
    if (rc != 1)
        fail_msg("%s: no row (%d): %s", sql, rc, err.message);
    const char *t = dbpool_result_text(r, 0, NULL);
    char *copy = strdup(t ? t : "<NULL>");
    assert_non_null(copy);
    dbpool_result_free(r);
    return copy;
}

static long long query_int(dbpool_conn *c, const char *sql) {
    char *t = query_text(c, sql);
    long long v = strtoll(t, NULL, 10);
    free(t);
    return v;
}

static void expect_text(dbpool_conn *c, const char *sql, const char *want) {
    char *got = query_text(c, sql);
    if (strcmp(got, want) != 0)
        fail_msg("%s: got '%s', want '%s'", sql, got, want);
    free(got);
}

static void expect_int(dbpool_conn *c, const char *sql, long long want) {
    long long got = query_int(c, sql);
    if (got != want)
        fail_msg("%s: got %lld, want %lld", sql, got, want);
}

static int backend_pid(dbpool_conn *c) { return (int)query_int(c, "SELECT pg_backend_pid()"); }

static uint64_t rollbacks(dbpool *p) {
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    return s.rollbacks;
}

/* The release after `what` reset the session n times (rollbacks + n). */
static void expect_resets(dbpool *p, uint64_t before, uint64_t n, const char *what) {
    uint64_t after = rollbacks(p);
    if (after != before + n)
        fail_msg("after %s: rollbacks went from %llu to %llu, want +%llu", what, (unsigned long long)before,
                 (unsigned long long)after, (unsigned long long)n);
}

/* Release c, check that the release reset the session `resets` times,
 * and lease again: the same backend (pid), since the pool has one. */
static dbpool_conn *release_and_lease_again(dbpool *p, dbpool_conn *c, int pid, uint64_t resets,
                                            const char *what) {
    uint64_t n = rollbacks(p);
    release(c);
    expect_resets(p, n, resets, what);
    c = lease(p);
    assert_int_equal(backend_pid(c), pid);
    return c;
}

/* ---- one session change each: made, seen, released, gone -------------- */

typedef struct leak_case {
    const char *change;  /* run with dbpool_exec (NULL: the query below) */
    const char *query;   /* run with dbpool_query, rows read */
    const char *probe;   /* a query whose first column shows the change */
    const char *changed; /* the probe's value while the change is in place */
    const char *clean;   /* the probe's value on a clean session (NULL: as before the change) */
} leak_case;

static void check_change_gone(const leak_case *k) {
    dbpool *p = open_pool();
    dbpool_conn *c = lease(p);
    int pid = backend_pid(c);
    char *before = query_text(c, k->probe);
    if (k->clean && strcmp(before, k->clean) != 0)
        fail_msg("%s on a new connection: got '%s', want '%s'", k->probe, before, k->clean);
    const char *what = k->change ? k->change : k->query;
    if (k->change)
        exec_ok(c, k->change);
    if (k->query) {
        dbpool_result *r = NULL;
        dbpool_error err;
        int rc = dbpool_query(c, k->query, NULL, 0, &r, &err);
        if (rc != DBPOOL_OK)
            fail_msg("%s: %s: %s", k->query, dbpool_errname(rc), err.message);
        while ((rc = dbpool_result_next(r, &err)) == 1)
            ;
        if (rc != 0)
            fail_msg("%s: reading: %s", k->query, err.message);
        dbpool_result_free(r);
    }
    expect_text(c, k->probe, k->changed); /* the change is in place */
    c = release_and_lease_again(p, c, pid, 1, what);
    char *after = query_text(c, k->probe);
    if (strcmp(after, before) != 0)
        fail_msg("after %s and a release: %s is '%s', want '%s' as before", what, k->probe, after, before);
    free(after);
    free(before);
    /* The reset leaves a clean session: the next release costs nothing. */
    uint64_t n = rollbacks(p);
    release(c);
    expect_resets(p, n, 0, "a lease after the reset");
    assert_true(dbt_invariant_holds(p));
    assert_int_equal(dbpool_close(p), 0);
}

/* Session changes a lease makes with one statement: each is gone at the
 * next lease of the same backend. */
static const leak_case k_changes[] = {
    {"SET search_path = pg_catalog, public", NULL, "SHOW search_path", "pg_catalog, public",
     "\"$user\", public"},
    {"SET application_name = 'leaky'", NULL, "SELECT current_setting('application_name')", "leaky", NULL},
    /* An UPDATE of pg_settings is a set_config for the session. */
    {"UPDATE pg_settings SET setting = 'pg_catalog' WHERE name = 'search_path'", NULL, "SHOW search_path",
     "pg_catalog", NULL},
    {"LISTEN dbpool_session_reset_chan", NULL, "SELECT count(*) FROM pg_listening_channels()", "1", "0"},
    {"PREPARE dbpool_q AS SELECT 1", NULL, "SELECT count(*) FROM pg_prepared_statements", "1", "0"},
    {"SELECT set_config('application_name', 'x', false)", NULL, "SELECT current_setting('application_name')",
     "x", NULL},
    /* dbpool_query is scanned as well as dbpool_exec. */
    {NULL, "SELECT set_config('application_name', 'via_query', false)",
     "SELECT current_setting('application_name')", "via_query", NULL},
    {"SELECT 1; SET search_path = pg_catalog", NULL, "SHOW search_path", "pg_catalog", NULL},
    {"BEGIN; DECLARE dbpool_c CURSOR WITH HOLD FOR SELECT 1; COMMIT", NULL, "SELECT count(*) FROM pg_cursors",
     "1", "0"},
};

static void test_each_change_is_gone(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof k_changes / sizeof k_changes[0]; i++)
        check_change_gone(&k_changes[i]);
}

static void test_advisory_lock(void **state) {
    (void)state;
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT pg_advisory_lock(%lld)", lock_key);
    leak_case k = {sql, NULL,
                   "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
                   "1", "0"};
    check_change_gone(&k);
}

/* A temporary table: gone, so naming it is SQLSTATE 42P01. */
static void test_temp_table(void **state) {
    (void)state;
    char sql[160];
    dbpool *p = open_pool();
    dbpool_conn *c = lease(p);
    int pid = backend_pid(c);
    snprintf(sql, sizeof sql, "CREATE TEMP TABLE %s (x int)", temp_table);
    exec_ok(c, sql);
    snprintf(sql, sizeof sql, "INSERT INTO %s VALUES (1)", temp_table);
    exec_ok(c, sql);
    expect_int(c,
               "SELECT count(*) FROM pg_class WHERE relpersistence = 't' AND relkind = 'r' AND "
               "pg_table_is_visible(oid)",
               1);
    c = release_and_lease_again(p, c, pid, 1, "CREATE TEMP TABLE");
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", temp_table);
    dbpool_error err;
    int rc = dbpool_exec(c, sql, NULL, 0, NULL, &err);
    if (rc != DBPOOL_EQUERY || strcmp(err.sqlstate, "42P01") != 0)
        fail_msg("the temporary table outlived its lease: %s: %s [%s] %s", sql, dbpool_errname(rc),
                 err.sqlstate, err.message);
    expect_int(c,
               "SELECT count(*) FROM pg_class WHERE relpersistence = 't' AND relkind = 'r' AND "
               "pg_table_is_visible(oid)",
               0);
    release(c);
    assert_int_equal(dbpool_close(p), 0);
}

/* After DISCARD ALL the pool's own session set-up comes back: the statement
 * timeout and init_sql, as on a new connection; and init_sql's own SET is
 * where every lease starts, not a change that needs a reset. */
static void test_init_sql_and_timeout_restored(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.maintenance_interval_ms = 0;
    o.validation = DBPOOL_VALIDATE_NEVER;
    o.init_sql = "SET application_name = 'from_init'";
    o.statement_timeout_ms = 4321;
    dbpool *p = open_pool_opts(base_url, &o);

    dbpool_conn *c = lease(p);
    int pid = backend_pid(c);
    expect_text(c, "SELECT current_setting('application_name')", "from_init");
    expect_text(c, "SHOW statement_timeout", "4321ms");
    c = release_and_lease_again(p, c, pid, 0,
                                "a lease that changed nothing (init_sql's SET is the baseline)");
    exec_ok(c, "SET application_name = 'other'");
    exec_ok(c, "SET statement_timeout = 0");
    expect_text(c, "SELECT current_setting('application_name')", "other");
    expect_text(c, "SHOW statement_timeout", "0");
    c = release_and_lease_again(p, c, pid, 1, "SET application_name / statement_timeout");
    expect_text(c, "SELECT current_setting('application_name')", "from_init");
    expect_text(c, "SHOW statement_timeout", "4321ms");
    uint64_t n = rollbacks(p);
    release(c);
    expect_resets(p, n, 0, "a lease after the reset (init_sql run again is the baseline)");

    /* Twice in a row: the second reset restores as well. */
    c = lease(p);
    exec_ok(c, "RESET ALL");
    expect_text(c, "SHOW statement_timeout", "0");
    c = release_and_lease_again(p, c, pid, 1, "RESET ALL");
    expect_text(c, "SELECT current_setting('application_name')", "from_init");
    expect_text(c, "SHOW statement_timeout", "4321ms");
    release(c);
    assert_int_equal(dbpool_close(p), 0);
}

/* Nothing that outlives the transaction: no reset, and what a transaction
 * left open is still rolled back (and counted) as before. */
static void test_no_reset_when_not_needed(void **state) {
    (void)state;
    char sql[160];
    dbpool *p = open_pool();
    dbpool_conn *c = lease(p);
    int pid = backend_pid(c);
    snprintf(sql, sizeof sql, "CREATE TABLE %s (id int PRIMARY KEY, a int)", table);
    exec_ok(c, sql);
    snprintf(sql, sizeof sql, "INSERT INTO %s VALUES (1, 0)", table);
    exec_ok(c, sql);
    uint64_t n = rollbacks(p);
    release(c);
    expect_resets(p, n, 0, "CREATE TABLE and INSERT");

    /* SET LOCAL ends with its transaction. */
    c = lease(p);
    assert_int_equal(backend_pid(c), pid);
    exec_ok(c, "BEGIN");
    exec_ok(c, "SET TRANSACTION READ ONLY");
    exec_ok(c, "SET LOCAL search_path = pg_catalog");
    expect_text(c, "SHOW search_path", "pg_catalog");
    exec_ok(c, "COMMIT");
    expect_text(c, "SHOW search_path", "\"$user\", public");
    n = rollbacks(p);
    release(c);
    expect_resets(p, n, 0, "BEGIN; SET LOCAL; COMMIT");

    /* SET in an UPDATE is a column, not a setting. */
    c = lease(p);
    assert_int_equal(backend_pid(c), pid);
    snprintf(sql, sizeof sql, "UPDATE %s SET a = 2 WHERE id = 1", table);
    int64_t affected = -1;
    dbpool_error err;
    assert_int_equal(dbpool_exec(c, sql, NULL, 0, &affected, &err), DBPOOL_OK);
    assert_int_equal(affected, 1);
    n = rollbacks(p);
    release(c);
    expect_resets(p, n, 0, "UPDATE ... SET");

    /* A plain SELECT, and words that are only inside strings. */
    c = lease(p);
    assert_int_equal(backend_pid(c), pid);
    snprintf(sql, sizeof sql, "SELECT a FROM %s WHERE id = 1", table);
    expect_int(c, sql, 2);
    expect_text(c, "SELECT 'SET search_path = x; LISTEN c' /* CREATE TEMP TABLE t */",
                "SET search_path = x; LISTEN c");
    snprintf(sql, sizeof sql, "SELECT pg_advisory_xact_lock(%lld)::text", lock_key + 1);
    expect_text(c, sql, ""); /* the transaction's lock, gone with it */
    n = rollbacks(p);
    release(c);
    expect_resets(p, n, 0, "SELECT");

    /* An open transaction: rolled back, counted, the row gone. */
    c = lease(p);
    assert_int_equal(backend_pid(c), pid);
    exec_ok(c, "BEGIN");
    snprintf(sql, sizeof sql, "INSERT INTO %s VALUES (2, 0)", table);
    exec_ok(c, sql);
    n = rollbacks(p);
    release(c);
    expect_resets(p, n, 1, "BEGIN; INSERT");

    c = lease(p);
    assert_int_equal(backend_pid(c), pid);
    assert_int_equal(PQtransactionStatus(dbpool_conn_native(c)), PQTRANS_IDLE);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE id = 2", table);
    expect_int(c, sql, 0);
    snprintf(sql, sizeof sql, "DROP TABLE %s", table);
    exec_ok(c, sql);
    release(c);
    assert_int_equal(dbpool_close(p), 0);
}

/* A change and an open transaction in one lease: one reset, both undone. */
static void test_change_inside_open_transaction(void **state) {
    (void)state;
    dbpool *p = open_pool();
    dbpool_conn *c = lease(p);
    int pid = backend_pid(c);
    exec_ok(c, "BEGIN");
    exec_ok(c, "SET search_path = pg_catalog"); /* not LOCAL: would outlive a COMMIT */
    assert_int_equal(PQtransactionStatus(dbpool_conn_native(c)), PQTRANS_INTRANS);
    uint64_t n = rollbacks(p);
    release(c);
    expect_resets(p, n, 1, "BEGIN; SET (left open)");
    c = lease(p);
    assert_int_equal(backend_pid(c), pid);
    assert_int_equal(PQtransactionStatus(dbpool_conn_native(c)), PQTRANS_IDLE);
    expect_text(c, "SHOW search_path", "\"$user\", public");

    /* Committed this time: only DISCARD ALL can undo it. */
    exec_ok(c, "BEGIN");
    exec_ok(c, "SET search_path = pg_catalog");
    exec_ok(c, "COMMIT");
    expect_text(c, "SHOW search_path", "pg_catalog");
    n = rollbacks(p);
    release(c);
    expect_resets(p, n, 1, "BEGIN; SET; COMMIT");
    c = lease(p);
    assert_int_equal(backend_pid(c), pid);
    expect_text(c, "SHOW search_path", "\"$user\", public");
    release(c);
    assert_int_equal(dbpool_close(p), 0);
}

/* A notification that arrived for the caller's LISTEN is the caller's: the
 * reset drops it with the LISTEN, so the next caller's PQnotifies is empty. */
static void test_notifications_dropped(void **state) {
    (void)state;
    dbpool *p = open_pool();
    dbpool_conn *c = lease(p);
    int pid = backend_pid(c);
    exec_ok(c, "LISTEN dbpool_session_reset_note");
    exec_ok(c, "NOTIFY dbpool_session_reset_note, 'for the first caller only'");
    c = release_and_lease_again(p, c, pid, 1, "LISTEN and NOTIFY");
    PGconn *pg = dbpool_conn_native(c);
    assert_int_equal(PQconsumeInput(pg), 1);
    PGnotify *note = PQnotifies(pg);
    if (note) {
        char got[256];
        snprintf(got, sizeof got, "%s: %s", note->relname, note->extra);
        PQfreemem(note);
        fail_msg("the next caller received the previous caller's notification (%s)", got);
    }
    release(c);
    assert_int_equal(dbpool_close(p), 0);
}

/* As open_pool, as the admin role (LOAD of a library outside plugins/
 * needs a superuser), with init_sql. */
static dbpool *open_admin_pool(const char *init_sql) {
    const char *admin = getenv("DBPOOL_TEST_PG_ADMIN_URL");
    if (!admin || !*admin)
        fail_msg("DBPOOL_TEST_PG_ADMIN_URL is not set (scripts/pg-server.sh writes it)");
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.maintenance_interval_ms = 0;
    o.validation = DBPOOL_VALIDATE_NEVER;
    o.init_sql = init_sql;
    return open_pool_opts(admin, &o);
}

/* LOAD: no reset unloads a library, so the connection is closed (reason
 * reset_failed) and the next caller gets a new backend. */
static void test_load_closes_the_connection(void **state) {
    (void)state;
    dbpool *p = open_admin_pool(NULL);
    dbpool_conn *c = lease(p);
    int pid = backend_pid(c);
    /* A change first, then the LOAD in a statement of its own: the scan
     * goes on after the first change, so the LOAD is still seen. */
    exec_ok(c, "SET application_name = 'before_load'");
    exec_ok(c, "LOAD 'auto_explain'");
    assert_true(query_int(c, "SELECT count(*) FROM pg_settings WHERE name LIKE 'auto_explain.%'") > 0);
    release(c);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.destroyed_by[DBPOOL_CLOSE_RESET_FAILED], 1);

    c = lease(p);
    assert_int_not_equal(backend_pid(c), pid);
    expect_int(c, "SELECT count(*) FROM pg_settings WHERE name LIKE 'auto_explain.%'", 0);
    release(c);
    assert_int_equal(dbpool_close(p), 0);
}

/* A LOAD in init_sql is every connection's: releases keep the connection. */
static void test_load_in_init_sql_is_the_baseline(void **state) {
    (void)state;
    dbpool *p = open_admin_pool("LOAD 'auto_explain'");
    dbpool_conn *c = lease(p);
    int pid = backend_pid(c);
    assert_true(query_int(c, "SELECT count(*) FROM pg_settings WHERE name LIKE 'auto_explain.%'") > 0);
    c = release_and_lease_again(p, c, pid, 0, "a lease on a connection whose init_sql ran LOAD");
    /* A caller's change: DISCARD ALL, init_sql again, the same backend. */
    exec_ok(c, "SET application_name = 'after_load'");
    c = release_and_lease_again(p, c, pid, 1, "SET after an init_sql LOAD");
    release(c);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.destroyed, 0);
    assert_int_equal(dbpool_close(p), 0);
}

/* after_connect prepares a statement on the native handle; `reject_from`
 * counts calls and, once past it, refuses the connection. */
typedef struct prepare_hook {
    int calls;
    int reject_from; /* 0: never */
} prepare_hook;

static int prepare_hot(void *native, void *user) {
    prepare_hook *h = user;
    h->calls++;
    if (h->reject_from && h->calls >= h->reject_from)
        return 7;
    PGresult *r = PQexec(native, "PREPARE dbpool_hot AS SELECT 41 + 1");
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    return ok ? 0 : 1;
}

static dbpool *open_prepare_pool(prepare_hook *h) {
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.maintenance_interval_ms = 0;
    o.validation = DBPOOL_VALIDATE_NEVER;
    o.after_connect = prepare_hot;
    o.after_connect_user = h;
    return open_pool_opts(base_url, &o);
}

/* What after_connect set up is where every lease starts: DISCARD ALL drops
 * the prepared statement, and the reset runs after_connect again, on the
 * same backend, so the next caller can still EXECUTE it. */
static void test_after_connect_restored(void **state) {
    (void)state;
    prepare_hook h = {0, 0};
    dbpool *p = open_prepare_pool(&h);
    dbpool_conn *c = lease(p);
    int pid = backend_pid(c);
    assert_int_equal(h.calls, 1);
    expect_text(c, "EXECUTE dbpool_hot", "42");
    c = release_and_lease_again(p, c, pid, 0, "EXECUTE of after_connect's statement");
    assert_int_equal(h.calls, 1);
    exec_ok(c, "SET search_path = pg_catalog");
    c = release_and_lease_again(p, c, pid, 1, "SET search_path");
    assert_int_equal(h.calls, 2);
    expect_text(c, "EXECUTE dbpool_hot", "42");
    expect_text(c, "SHOW search_path", "\"$user\", public");
    /* after_connect's PREPARE is the baseline: no reset for it. */
    uint64_t n = rollbacks(p);
    release(c);
    expect_resets(p, n, 0, "a lease after the reset (after_connect run again is the baseline)");
    assert_int_equal(dbpool_close(p), 0);
}

/* An after_connect that refuses the connection after a reset: the
 * connection is closed (reset_failed) and the next lease gets a new one. */
static void test_after_connect_refusal_at_reset(void **state) {
    (void)state;
    prepare_hook h = {0, 2};
    dbpool *p = open_prepare_pool(&h);
    dbpool_conn *c = lease(p);
    int pid = backend_pid(c);
    exec_ok(c, "SET application_name = 'refused'");
    release(c);
    assert_int_equal(h.calls, 2);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.destroyed_by[DBPOOL_CLOSE_RESET_FAILED], 1);
    assert_int_equal(s.total, 0);
    h.reject_from = 0; /* the next connection is accepted */
    c = lease(p);
    assert_int_not_equal(backend_pid(c), pid);
    expect_text(c, "EXECUTE dbpool_hot", "42");
    release(c);
    assert_int_equal(dbpool_close(p), 0);
}

/* Documented limit: what runs on the native handle is not scanned, so the
 * change stays with the connection for the next caller. */
static void test_native_handle_not_scanned(void **state) {
    (void)state;
    dbpool *p = open_pool();
    dbpool_conn *c = lease(p);
    int pid = backend_pid(c);
    /* work_mem: a setting the server does not report to the client. */
    PGresult *r = PQexec(dbpool_conn_native(c), "SET work_mem = '1234kB'");
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("PQexec: %s", PQresultErrorMessage(r));
    PQclear(r);
    c = release_and_lease_again(p, c, pid, 0, "a SET on the native handle");
    expect_text(c, "SHOW work_mem", "1234kB");
    release(c);
    assert_int_equal(dbpool_close(p), 0);
}

/* What a caller sets on the native handle that is libpq's and not the
 * server's: a notice processor or receiver, with a pointer to the lease's
 * own data, and nonblocking mode. Left there, the next caller's notice
 * would call the last caller's function with a pointer it no longer owns.
 * The release puts them back (a reset, on the same backend). */
static void count_notice(void *arg, const char *message) {
    (void)message;
    (*(int *)arg)++;
}

static void count_notice_result(void *arg, const PGresult *r) {
    (void)r;
    (*(int *)arg)++;
}

static void raise_notice(dbpool_conn *c) {
    exec_ok(c, "DO $$BEGIN RAISE NOTICE 'dbpool test notice'; END$$");
}

static void test_native_handle_hooks_put_back(void **state) {
    (void)state;
    dbpool *p = open_pool();
    dbpool_conn *c = lease(p);
    int pid = backend_pid(c);
    int processed = 0, received = 0;

    /* Seen while the lease lasts: the test's notice does reach libpq. */
    PQsetNoticeProcessor(dbpool_conn_native(c), count_notice, &processed);
    raise_notice(c);
    assert_int_equal(processed, 1);
    assert_int_equal(PQsetnonblocking(dbpool_conn_native(c), 1), 0);
    c = release_and_lease_again(p, c, pid, 1, "a notice processor and nonblocking mode on the native handle");
    raise_notice(c);
    assert_int_equal(processed, 1);
    assert_int_equal(PQisnonblocking(dbpool_conn_native(c)), 0);

    PQsetNoticeReceiver(dbpool_conn_native(c), count_notice_result, &received);
    raise_notice(c);
    assert_int_equal(received, 1);
    c = release_and_lease_again(p, c, pid, 1, "a notice receiver on the native handle");
    raise_notice(c);
    assert_int_equal(received, 1);
    assert_int_equal(processed, 1);

    /* Put back, nothing is left to do: the next release costs nothing. */
    c = release_and_lease_again(p, c, pid, 0, "a lease that only ran statements");
    release(c);
    assert_int_equal(dbpool_close(p), 0);
}

/* A trace (PQtrace) a caller left on the native handle would write the
 * next caller's statements into its FILE, which it may have closed by
 * then; its error verbosity would shape the next caller's messages. Both
 * are put back at release, which needs no reset for it. */
static void test_native_handle_trace_stopped(void **state) {
    (void)state;
    dbpool *p = open_pool();
    dbpool_conn *c = lease(p);
    int pid = backend_pid(c);
    FILE *trace = tmpfile();
    assert_non_null(trace);
    PQtrace(dbpool_conn_native(c), trace);
    PQsetErrorVerbosity(dbpool_conn_native(c), PQERRORS_VERBOSE);
    exec_ok(c, "SELECT 1");
    assert_int_equal(fflush(trace), 0);
    long traced = ftell(trace);
    assert_true(traced > 0);
    c = release_and_lease_again(p, c, pid, 0, "PQtrace on the native handle");
    exec_ok(c, "SELECT 2");
    assert_int_equal(fflush(trace), 0);
    if (ftell(trace) != traced)
        fail_msg("the last lease's trace got the next lease's statements: %ld bytes, then %ld", traced,
                 ftell(trace));
    assert_int_equal(PQsetErrorVerbosity(dbpool_conn_native(c), PQERRORS_DEFAULT), PQERRORS_DEFAULT);
    release(c);
    assert_int_equal(dbpool_close(p), 0);
    fclose(trace);
}

/* What the server reports to the client when it changes (ParameterStatus:
 * client_encoding, TimeZone, application_name, session_authorization, ...)
 * is seen at release also when it was set on the native handle, with
 * PQsetClientEncoding or a SET: the next caller would read its text in
 * the last caller's encoding. The release runs DISCARD ALL. */
static void test_native_handle_reported_setting(void **state) {
    (void)state;
    dbpool *p = open_pool();
    dbpool_conn *c = lease(p);
    int pid = backend_pid(c);
    char *encoding = query_text(c, "SHOW client_encoding");
    char *zone = query_text(c, "SHOW TimeZone");
    assert_string_not_equal(encoding, "LATIN1");
    assert_int_equal(PQsetClientEncoding(dbpool_conn_native(c), "LATIN1"), 0);
    c = release_and_lease_again(p, c, pid, 1, "PQsetClientEncoding on the native handle");
    expect_text(c, "SHOW client_encoding", encoding);

    PGresult *r = PQexec(dbpool_conn_native(c), "SET TimeZone = 'Pacific/Chatham'");
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("PQexec: %s", PQresultErrorMessage(r));
    PQclear(r);
    c = release_and_lease_again(p, c, pid, 1, "SET TimeZone on the native handle");
    expect_text(c, "SHOW TimeZone", zone);
    /* Reading the handle is not changing it: no reset. */
    (void)dbpool_conn_native(c);
    c = release_and_lease_again(p, c, pid, 0, "a lease that only looked at the native handle");
    release(c);
    free(encoding);
    free(zone);
    assert_int_equal(dbpool_close(p), 0);
}

/* init_sql that sleeps 5 s while the test's flag table holds a row: fast
 * while the flag is down, a server that does not answer it once it is up.
 * The rerun after DISCARD ALL is bounded by validation_timeout_ms (the
 * release returns and closes the connection, reset_failed), and a new
 * connection's by connect_timeout_ms. */
static void test_slow_init_sql_bounded(void **state) {
    (void)state;
    char flag[64], sql[512], init_sql[256];
    snprintf(flag, sizeof flag, "dbpool_pgsr_flag_%ld", (long)getpid());
    dbpool *admin = open_pool();
    dbpool_conn *a = lease(admin);
    snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s; CREATE TABLE %s (x int)", flag, flag);
    exec_ok(a, sql);
    snprintf(init_sql, sizeof init_sql,
             "SET application_name = 'slow_init'; "
             "SELECT pg_sleep(CASE WHEN EXISTS (SELECT 1 FROM %s) THEN 5 ELSE 0 END)",
             flag);
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.maintenance_interval_ms = 0;
    o.validation = DBPOOL_VALIDATE_NEVER;
    o.max_retries = 0;
    o.connect_timeout_ms = 500;
    o.validation_timeout_ms = 500;
    o.init_sql = init_sql;
    dbpool *p = open_pool_opts(base_url, &o);
    dbpool_conn *c = lease(p);
    int pid = backend_pid(c);
    expect_text(c, "SELECT current_setting('application_name')", "slow_init");
    exec_ok(c, "SET work_mem = '8MB'"); /* the release runs DISCARD ALL, then init_sql */
    dbt_expect_slow_init_sql_bounded(p, c, a, flag, 500);

    /* Flag down: the next connection is a new backend, set up by init_sql. */
    c = lease(p);
    assert_int_not_equal(backend_pid(c), pid);
    expect_text(c, "SELECT current_setting('application_name')", "slow_init");
    release(c);
    assert_int_equal(dbpool_close(p), 0);
    /* The timed-out statements still sleep on the server, holding a lock
     * on the table: end them before dropping it. */
    snprintf(sql, sizeof sql,
             "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
             "AND state = 'active' AND query LIKE '%%%s%%'",
             flag);
    (void)query_int(a, sql);
    snprintf(sql, sizeof sql, "DROP TABLE %s", flag);
    exec_ok(a, sql);
    release(a);
    assert_int_equal(dbpool_close(admin), 0);
}

int main(void) {
    snprintf(base_url, sizeof base_url, "%s", dbt_backend_url("pg"));
    snprintf(table, sizeof table, "dbpool_pgsr_%ld", (long)getpid());
    snprintf(temp_table, sizeof temp_table, "dbpool_pgsr_tmp_%ld", (long)getpid());
    lock_key = 4242000000000LL + (long long)getpid();

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_change_is_gone),
        cmocka_unit_test(test_temp_table),
        cmocka_unit_test(test_advisory_lock),
        cmocka_unit_test(test_init_sql_and_timeout_restored),
        cmocka_unit_test(test_no_reset_when_not_needed),
        cmocka_unit_test(test_change_inside_open_transaction),
        cmocka_unit_test(test_notifications_dropped),
        cmocka_unit_test(test_load_closes_the_connection),
        cmocka_unit_test(test_load_in_init_sql_is_the_baseline),
        cmocka_unit_test(test_native_handle_not_scanned),
        cmocka_unit_test(test_native_handle_hooks_put_back),
        cmocka_unit_test(test_native_handle_trace_stopped),
        cmocka_unit_test(test_native_handle_reported_setting),
        cmocka_unit_test(test_after_connect_restored),
        cmocka_unit_test(test_after_connect_refusal_at_reset),
        cmocka_unit_test(test_slow_init_sql_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#else /* !DBPOOL_HAVE_PG */

int main(void) {
    fprintf(stderr, "skipped: this build has no PostgreSQL backend\n");
    return DBT_SKIP;
}

#endif
