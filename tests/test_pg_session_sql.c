/* Which statements may leave PostgreSQL session state that a ROLLBACK does
 * not undo (and so need DISCARD ALL at release): SET and friends as a
 * statement's first word, temporary objects, session advisory locks,
 * set_config, WITH HOLD cursors; only where PostgreSQL reads them as code,
 * never inside strings, quoted identifiers, dollar quotes or comments. Pure
 * parsing, no server. */
#include "pg_session_sql.h"
#include "testsupport.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

typedef struct sql_case {
    const char *sql;
    bool flagged;
} sql_case;

/* sql as a C string literal would show it (\n, \r, \t, \\, \"). */
static void print_sql(const char *sql) {
    fputc('"', stderr);
    for (const char *s = sql; *s; s++) {
        switch (*s) {
        case '\n':
            fputs("\\n", stderr);
            break;
        case '\r':
            fputs("\\r", stderr);
            break;
        case '\t':
            fputs("\\t", stderr);
            break;
        case '\\':
            fputs("\\\\", stderr);
            break;
        case '"':
            fputs("\\\"", stderr);
            break;
        default:
            fputc(*s, stderr);
        }
    }
    fputs("\"\n", stderr);
}

/* Every case is checked; the failures are all printed, then the test fails. */
static void check_cases(const sql_case *cases, size_t n) {
    int failed = 0;
    for (size_t i = 0; i < n; i++) {
        if (dbpool__pg_session_change(cases[i].sql) != cases[i].flagged) {
            fprintf(stderr, "  [%zu] expected %s: ", i, cases[i].flagged ? "flagged" : "not flagged");
            print_sql(cases[i].sql);
            failed++;
        }
    }
    if (failed)
        fail_msg("%d of %zu cases wrong (listed above)", failed, n);
}

#define CHECK(cases) check_cases(cases, sizeof cases / sizeof cases[0])

/* SET as a statement's first word: session-wide unless LOCAL, TRANSACTION
 * or CONSTRAINTS follows (those end with the transaction). */
static void test_set(void **state) {
    (void)state;
    static const sql_case cases[] = {
        {"SET search_path = x", true},
        {"SET search_path TO pg_catalog, public", true},
        {"SET SESSION search_path = x", true},
        {"SET SESSION statement_timeout = 0", true},
        {"SET ROLE someone", true},
        {"SET SESSION AUTHORIZATION DEFAULT", true},
        {"SET TIME ZONE 'UTC'", true},
        {"SET application_name = 'leaky'", true},
        {"SET myapp.user_id = '42'", true},
        {"SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE", true},
        {"set search_path = x", true},
        {"Set Search_Path = x", true},
        {"  \n\t SET search_path = x", true},
        {"/* a comment */ SET search_path = x", true},
        {"-- a line comment\nSET search_path = x", true},
        {"/* /* nested */ still a comment */ -- and this\n  SET search_path = x", true},
        {"SET /* LOCAL */ search_path = x", true},
        {"select 1; set x.y = 1", true},
        {"SELECT 1;SET x.y = 1", true},
        {"SELECT 1;; SET x.y = 1", true},
        {"BEGIN; SET LOCAL x.y = 1; COMMIT; SET x.y = 2", true},
        {"SELECT 'a'; SET x.y = 1", true},
        {"SELECT \"a\"\"b\" FROM t; SET x.y = 1", true},
        {"SELECT $$ x $$; SET x.y = 1", true},
        {"SELECT 1 /* c */; SET x.y = 1", true},
        {"SELECT 1 -- c\n; SET x.y = 1", true},

        {"SET LOCAL search_path = x", false},
        {"set local statement_timeout = 100", false},
        {"SET /* comment */ LOCAL search_path = x", false},
        {"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", false},
        {"set transaction read only", false},
        {"SET CONSTRAINTS ALL DEFERRED", false},
        {"SET constraints c1, c2 IMMEDIATE", false},
        {"BEGIN; SET LOCAL x.y = 1; SET TRANSACTION READ ONLY; SET CONSTRAINTS ALL DEFERRED; COMMIT", false},
        /* SET not the first word. */
        {"UPDATE t SET a = 1", false},
        {"update t set search_path = 'x' where id = 1", false},
        {"INSERT INTO t (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET a = 1", false},
        {"ALTER TABLE t SET SCHEMA s", false},
        {"ALTER TABLE t SET (fillfactor = 70)", false},
        {"ALTER ROLE r SET search_path = x", false},
        {"ALTER DATABASE d SET search_path = x", false},
        {"CREATE FUNCTION f() RETURNS int SET search_path = x AS $$ SELECT 1 $$ LANGUAGE sql", false},
        {"SELECT 1 AS set", false},
        {"SELECT settings, setup, reset_at FROM t", false},
        {"SHOW search_path", false},
    };
    CHECK(cases);
}

/* Statements that change the session whatever follows them. */
static void test_session_statements(void **state) {
    (void)state;
    static const sql_case cases[] = {
        {"RESET search_path", true},
        {"reset all", true},
        {"RESET SESSION AUTHORIZATION", true},
        {"LISTEN chan", true},
        {"listen \"Chan\"", true},
        {"UNLISTEN *", true},
        {"unlisten chan", true},
        {"DEALLOCATE ALL", true},
        {"DEALLOCATE PREPARE q", true},
        {"deallocate q", true},
        {"DISCARD ALL", true},
        {"DISCARD TEMP", true},
        {"discard plans", true},
        {"LOAD 'auto_explain'", true},
        {"PREPARE q AS SELECT 1", true},
        {"prepare q (int) AS SELECT $1", true},
        {"PREPARE q(int, text) AS SELECT $1, $2", true},
        {"SELECT 1; LISTEN chan", true},
        {"/* c */ DISCARD ALL", true},

        {"PREPARE TRANSACTION 'gid'", false},
        {"prepare transaction 'gid'", false},
        {"COMMIT PREPARED 'gid'", false},
        {"ROLLBACK PREPARED 'gid'", false},
        {"EXECUTE q", false},
        {"NOTIFY chan, 'SET x'", false},
        {"SELECT pg_notify('chan', 'LISTEN')", false},
        {"SELECT listen, reset, prepare, discard, load FROM t", false},
        {"SELECT 1 AS listen", false},
        {"UPDATE jobs SET load = 1", false},
    };
    CHECK(cases);
}

/* TEMP / TEMPORARY right after CREATE, REPLACE, GLOBAL, LOCAL, UNLOGGED or
 * INTO, and the pg_temp schema anywhere in code. */
static void test_temporary_objects(void **state) {
    (void)state;
    static const sql_case cases[] = {
        {"CREATE TEMP TABLE t (x int)", true},
        {"create temporary table t (x int) on commit drop", true},
        {"CREATE TEMPORARY VIEW v AS SELECT 1", true},
        {"CREATE TEMP SEQUENCE s", true},
        {"CREATE OR REPLACE TEMP VIEW v AS SELECT 1", true},
        {"CREATE OR REPLACE TEMPORARY VIEW v AS SELECT 1", true},
        {"CREATE GLOBAL TEMPORARY TABLE t (x int)", true},
        {"CREATE LOCAL TEMP TABLE t (x int)", true},
        {"CREATE /* c */ TEMP TABLE t (x int)", true},
        {"SELECT * INTO TEMP t FROM s", true},
        {"SELECT a, b INTO TEMPORARY TABLE t FROM s", true},
        {"WITH x AS (SELECT 1) SELECT * INTO temp t FROM x", true},
        {"SELECT 1; CREATE TEMP TABLE t (x int)", true},
        {"CREATE TABLE pg_temp.t (x int)", true},
        {"SELECT * FROM pg_temp.t", true},
        {"create view PG_TEMP.v as select 1", true},
        {"SELECT 1; DROP TABLE IF EXISTS pg_temp.t", true},

        {"SELECT temp FROM weather", false},
        {"SELECT temp, temporary FROM weather WHERE temp > 20", false},
        {"UPDATE weather SET temp = 1", false},
        {"CREATE TABLE weather (city text, temp int)", false},
        {"CREATE TABLE t (x int)", false},
        {"CREATE UNLOGGED TABLE t (x int)", false},
        {"CREATE OR REPLACE VIEW v AS SELECT temp FROM weather", false},
        {"SELECT * INTO t FROM s", false},
        {"SELECT 'CREATE TEMP TABLE t (x int)'", false},
        {"SELECT 'pg_temp.t'", false},
        {"SELECT \"pg_tempest\" FROM t", false},
        {"SELECT pg_tempx, my_pg_temp FROM t", false},
        /* A session's own temporary schema by its real name; a column
         * named like one is a false alarm (one reset). */
        {"CREATE TABLE pg_temp_3.t(x int)", true},
        {"SELECT pg_temp_x FROM t", true},
        {"SELECT 1 -- CREATE TEMP TABLE t (x int)", false},
    };
    CHECK(cases);
}

/* Session advisory locks, set_config and WITH HOLD cursors. */
static void test_locks_config_cursors(void **state) {
    (void)state;
    static const sql_case cases[] = {
        {"SELECT pg_advisory_lock(4242)", true},
        {"SELECT PG_ADVISORY_LOCK(1, 2)", true},
        {"SELECT pg_advisory_lock_shared(1)", true},
        {"SELECT pg_try_advisory_lock(1)", true},
        {"select pg_try_advisory_lock_shared(1, 2)", true},
        {"SELECT pg_catalog.pg_advisory_lock(1)", true},
        {"SELECT x FROM t WHERE pg_try_advisory_lock(t.id)", true},
        {"SELECT set_config('search_path', 'x', false)", true},
        {"SELECT set_config('a.b', 'x', true)", true}, /* conservative: any call */
        {"SELECT pg_catalog.set_config('application_name', 'x', false)", true},
        {"SELECT SET_CONFIG ('a.b', 'c', false)", true},
        {"DECLARE c CURSOR WITH HOLD FOR SELECT 1", true},
        {"declare c cursor with hold for select 1", true},
        {"DECLARE c NO SCROLL CURSOR WITH /* c */ HOLD FOR SELECT 1", true},
        {"BEGIN; DECLARE c CURSOR WITH HOLD FOR SELECT 1; COMMIT", true},

        {"SELECT pg_advisory_xact_lock(4242)", false},
        {"SELECT pg_advisory_xact_lock_shared(1)", false},
        {"SELECT pg_try_advisory_xact_lock(1)", false},
        {"SELECT pg_try_advisory_xact_lock_shared(1, 2)", false},
        {"SELECT pg_advisory_unlock(1)", false},
        {"SELECT pg_advisory_lock_count, my_set_config FROM t", false},
        {"SELECT current_setting('search_path')", false},
        {"SELECT 'pg_advisory_lock(1)', 'set_config'", false},
        {"SELECT 1 /* pg_advisory_lock(1) */", false},
        {"DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1", false},
        {"DECLARE c CURSOR FOR SELECT 1", false},
        {"DECLARE c CURSOR WITH 'HOLD' FOR SELECT 1", false},
        {"SELECT hold FROM t", false},
    };
    CHECK(cases);
}

/* Nothing that stays with the session. */
static void test_plain_statements(void **state) {
    (void)state;
    static const sql_case cases[] = {
        {"", false},
        {"   ", false},
        {"SELECT 1", false},
        {"select 1; select 2", false},
        {"BEGIN", false},
        {"COMMIT", false},
        {"ROLLBACK", false},
        {"START TRANSACTION ISOLATION LEVEL SERIALIZABLE", false},
        {"INSERT INTO t (a) VALUES ('x') RETURNING id", false},
        {"DELETE FROM t WHERE id = $1", false},
        {"CREATE INDEX ON t (a)", false},
        {"DROP TABLE t", false},
        {"VACUUM t", false},
        {"SELECT nextval('s'), currval('s'), lastval()", false}, /* documented: not a reason */
        /* Documented: what a DO block or function runs inside is not seen. */
        {"DO $$BEGIN PERFORM set_config('a.b', 'c', false); END$$", false},
        {"-- only a comment", false},
        {"/* only a comment */", false},
    };
    CHECK(cases);
}

/* Words inside strings, quoted identifiers, dollar quotes and comments
 * never count, and a `;` inside them does not start a statement. */
static void test_lexing(void **state) {
    (void)state;
    static const sql_case cases[] = {
        {"SELECT 'SET x'", false},
        {"SELECT 'a; SET x.y = 1'", false},
        {"SELECT 'it''s; SET x.y = 1'", false},
        {"SELECT 'it''s'; SET x.y = 1", true},
        {"SELECT '''; SET x.y = 1'''", false},
        {"SELECT ''; SET x.y = 1", true},
        {"SELECT \"set\"", false},
        {"SELECT \"a; SET x\" FROM t", false},
        {"SELECT \"a\"\"; SET x\" FROM t", false},
        {"SELECT \"a\"\"\"; SET x.y = 1", true},
        {"SELECT 1 AS \"LISTEN\"", false},
        {"SELECT 1 -- SET x", false},
        {"SELECT 1 -- ; SET x.y = 1", false},
        {"SELECT 1 /* ; SET x.y = 1 */", false},
        {"SELECT 1 /* /* */ SET x */", false},
        {"SELECT 1 /* /* */ ; SET x.y = 1 */", false},
        {"SELECT 1 /* /* */ */; SET x.y = 1", true},
        {"SELECT 1 /* unterminated; SET x.y = 1", false},
        {"SELECT 'unterminated; SET x.y = 1", false},
        /* Dollar quotes, with and without a tag; a different tag inside
         * does not close them; tags are case-sensitive. */
        {"SELECT $$SET x$$", false},
        {"SELECT $$; SET x.y = 1$$", false},
        {"SELECT $a$ $b$; SET x.y = 1 $b$ $a$", false},
        {"SELECT $a$ $b$ $a$; SET x.y = 1", true},
        {"SELECT $a$ $$ ; LISTEN c $$ $a$", false},
        {"SELECT $_x1$ ; SET x.y = 1 $_x1$", false},
        {"SELECT $A$ $a$; SET x.y = 1 $A$", false},
        {"SELECT $a$ unterminated; SET x.y = 1", false},
        /* $1 is a parameter, not a dollar quote. */
        {"SELECT $1; SET x.y = 1", true},
        {"SELECT $1, $2; LISTEN c", true},
        /* E'...' strings take backslash escapes, and '' as well. */
        {"SELECT E'\\'' SET'", false},
        {"SELECT E'\\''; SET x.y = 1", true},
        {"SELECT E'\\'; SET x.y = 1'", false},
        {"SELECT e'\\'; SET x.y = 1'", false},
        {"SELECT E'\\\\'; SET x.y = 1", true},
        {"SELECT E'it''s; SET x.y = 1'", false},
        /* A plain string: a backslash is an ordinary character (the
         * default standard_conforming_strings = on). */
        {"SELECT 'C:\\'; SET x.y = 1; -- '", true},
        {"SELECT 'a\\'; LISTEN c", true},
        /* Other prefixed strings. */
        {"SELECT X'1F', B'101', N'SET x'", false},
        {"SELECT U&'d\\0061t; SET x'", false},
    };
    CHECK(cases);
}

/* Edges of PostgreSQL's lexer (each checked against a PostgreSQL 15
 * server): a quoted name is still the word after SET, and a carriage
 * return ends a -- comment as a newline does. */
static void test_lexer_edges(void **state) {
    (void)state;
    static const sql_case cases[] = {
        {"SET \"application_name\" = 'leaky'", true},
        {"SET \"myapp.user_id\" = '42'", true},
        {"SELECT 1; SET \"search_path\" = x", true},
        {"SET \"search_path\" TO x", true},
        {"SELECT 1; -- a comment\rSET x.y = 1", true},
        {"-- a comment\rLISTEN c", true},
        /* LOCAL, TRANSACTION and CONSTRAINTS are unreserved: followed by a
         * dot they name a session variable. PREPARE TRANSACTION takes a
         * string; PREPARE transaction AS ... prepares a statement. */
        {"SET local.x = 1", true},
        {"SET transaction .x = 1", true},
        {"SET constraints.y TO 2", true},
        {"SET local/**/.x = 1", true},
        {"SET local -- c\n.x = 1", true},
        {"SET LOCAL local.x = 1", false},
        /* A name spelled with Unicode escapes is not read: it counts. */
        {"SELECT U&\"set\\005fconfig\"('application_name', 'x', false)", true},
        {"CREATE TABLE U&\"pg\\005ftemp\".t AS SELECT 1", true},
        {"PREPARE transaction AS SELECT 1", true},
        {"PREPARE TRANSACTION $$t1$$", false},
        {"PREPARE TRANSACTION E't1'", false},
        /* An UPDATE of pg_settings is a set_config. */
        {"UPDATE pg_settings SET setting = 'x' WHERE name = 'search_path'", true},
        {"UPDATE pg_catalog.pg_settings SET setting = 'x' WHERE name = 'work_mem'", true},
        {"WITH u AS (UPDATE pg_settings SET setting = 'x' WHERE name = 'work_mem' RETURNING 1) SELECT 1",
         true},
        {"SELECT setting FROM pg_settings WHERE name = 'work_mem'", false},
        {"UPDATE t SET a = 1; SELECT * FROM pg_settings", false},
        /* An E'' constant continued after a -- comment or a bare \r keeps
         * its escapes: the SET is inside the string. And the other way. */
        {"SELECT E'x' --c\n'\\' ', '\\'; SET search_path = evil; SELECT '1'", true},
        {"SELECT E'x'\r'\\'; SET a = 1; --'", false},
        {"SELECT E'x' --c\n'\\'; SET a = 1; --'", false},
        /* Quoted names are the same objects and functions. */
        {"CREATE TABLE \"pg_temp\".zz(x int)", true},
        {"SELECT \"set_config\"('a', 'b', false)", true},
        {"SELECT \"pg_advisory_lock\"(1)", true},
        {"PREPARE \"q\" AS SELECT 1", true},
        {"SELECT \"local\" FROM t", false},
        {"SET LOCAL \"x.y\" = 1", false},
    };
    CHECK(cases);
}

/* LOAD is the one change no reset undoes: the connection must be closed. */
static void test_load_is_permanent(void **state) {
    (void)state;
    /* Flagged only by the reading with backslash escapes in plain strings
     * (standard_conforming_strings off), and the two readings merged. */
    assert_int_equal(dbpool__pg_session_effect("SELECT 'a\\''; SET x.y = 1; --'"), PG_SESSION_CHANGED);
    assert_int_equal(dbpool__pg_session_effect("SELECT 'a\\''; LOAD 'x'; --'"), PG_SESSION_PERMANENT);
    assert_int_equal(dbpool__pg_session_effect("SET a.b = 1; SELECT 'a\\''; LOAD 'x'; --'"),
                     PG_SESSION_PERMANENT);
    assert_int_equal(dbpool__pg_session_effect("LOAD 'auto_explain'"), PG_SESSION_PERMANENT);
    assert_int_equal(dbpool__pg_session_effect("SET a = 1; load 'x'"), PG_SESSION_PERMANENT);
    assert_int_equal(dbpool__pg_session_effect("SET a = 1"), PG_SESSION_CHANGED);
    assert_int_equal(dbpool__pg_session_effect("SELECT 'LOAD x'"), PG_SESSION_UNCHANGED);
    assert_int_equal(dbpool__pg_session_effect("SELECT load FROM t"), PG_SESSION_UNCHANGED);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set),
        cmocka_unit_test(test_session_statements),
        cmocka_unit_test(test_temporary_objects),
        cmocka_unit_test(test_locks_config_cursors),
        cmocka_unit_test(test_plain_statements),
        cmocka_unit_test(test_lexing),
        cmocka_unit_test(test_lexer_edges),
        cmocka_unit_test(test_load_is_permanent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
