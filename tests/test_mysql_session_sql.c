/* Which statements leave MySQL session state the server does not report
 * (and so need a reset at release): locks and user variables, only where
 * MySQL reads them as code. Pure parsing, no server. */
#include "mysql_session_sql.h"
#include "testsupport.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

static void expect(const char *sql, bool flagged) {
    if (dbpool__mysql_untracked_session_change(sql) != flagged)
        fail_msg("'%s': expected %s", sql, flagged ? "flagged" : "not flagged");
}

static void test_flagged(void **state) {
    (void)state;
    expect("LOCK TABLES t WRITE", true);
    expect("lock table t read", true);
    expect("FLUSH TABLES WITH READ LOCK", true);
    expect("FLUSH TABLES t FOR EXPORT", true);
    expect("flush tables a, b for /* copy */ export", true);
    expect("SELECT GET_LOCK('job', 0)", true);
    expect("select get_lock(?, 10)", true);
    expect("SELECT * FROM t LOCK IN SHARE MODE", true);
    expect("HANDLER t OPEN", true);
    expect("SELECT @x := 5", true);
    expect("SELECT @x:=5", true);
    expect("SELECT @`odd name` := 1", true);
    expect("SELECT @'quoted'\n := 'v'", true);
    expect("SELECT id INTO @last FROM t", true);
    expect("SELECT a, b FROM t INTO @x, @y", true);
    expect("/*!50000 LOCK TABLES t WRITE */", true);
    expect("/*M!100100 SELECT GET_LOCK('x', 0) */", true);
    expect("SELECT 1; LOCK TABLES t WRITE", true);
    /* MariaDB does not report a temporary table made from a query. */
    expect("CREATE TEMPORARY TABLE t AS SELECT 1 AS x", true);
    expect("create temporary table t select ? as x", true);
    expect("CREATE OR REPLACE TEMPORARY TABLE t (x INT) SELECT 1 AS x", true);
    expect("/*!32302 CREATE TEMPORARY TABLE t AS SELECT 1 */", true);
    expect("BEGIN NOT ATOMIC CREATE TEMPORARY TABLE t AS SELECT 1; END", true);
    /* Dynamic SQL as a statement of a compound statement. */
    expect("BEGIN NOT ATOMIC EXECUTE IMMEDIATE 'SELECT 1'; END", true);
    expect("BEGIN NOT ATOMIC SELECT 1; EXECUTE s; END", true);
    expect("IF 1 THEN EXECUTE IMMEDIATE @q; END IF", true);
    expect("IF 0 THEN SELECT 1; ELSE EXECUTE s; END IF", true);
    /* Under NO_BACKSLASH_ESCAPES the string ends at the second quote. */
    expect("SELECT '\\', GET_LOCK('nbe', 0)", true);
    expect("SELECT 1 AS \"a\\\", GET_LOCK('aq', 0) AS \"b\"", true);
    expect("BACKUP STAGE START", true);
    expect("SELECT @cm /* a comment */ := 1", true);
    expect("SELECT @cm -- line\n := 1", true);
    expect("GET DIAGNOSTICS @n = NUMBER", true);
    expect("SET TRANSACTION READ ONLY", true);
    expect("set /* next one */ transaction isolation level serializable", true);
    expect("SET session_track_state_change = OFF", true);
    /* MariaDB does not report SET @@name without a scope. */
    expect("SET @@autocommit = 0", true);
    expect("set @@sql_mode='', @@time_zone = '+00:00'", true);
    expect("SET sql_mode = '', @@foreign_key_checks=0", true);
    expect("SET @@`time_zone` := '+01:00'", true);
    expect("SET @@session_track_state_change=0", true);
    expect("SET @@session.session_track_state_change = OFF", true);
    /* Dynamic SQL: what it runs is a string or a statement prepared earlier. */
    expect("EXECUTE IMMEDIATE 'DO GET_LOCK(''x'', 0)'", true);
    expect("execute immediate concat('SET @', '@autocommit = 0')", true);
    expect("/* dyn */ EXECUTE stmt USING @a", true);
}

static void test_not_flagged(void **state) {
    (void)state;
    expect("SELECT 1", false);
    expect("CREATE TABLE t AS SELECT 'TEMPORARY' AS x", false);
    expect("SELECT temporary FROM t", false);
    expect("", false);
    expect("INSERT INTO users (email) VALUES ('a@b.example')", false);
    expect("INSERT INTO t VALUES (\"it's @home\")", false);
    expect("SELECT 'don''t LOCK', \"say \"\"LOCK\"\"\"", false);
    expect("SELECT 'a backslash \\\\ then LOCK'", false); /* a string either way */
    expect("SELECT `lock` FROM t", false);
    expect("SELECT locked, unlock_at, is_free_lock FROM t", false);
    expect("SELECT @@version", false);
    expect("SELECT @x IS NULL, @y + 1", false); /* read, not assigned */
    expect("SET @a = 1", false);                /* the server reports SET itself */
    expect("SELECT @a = 1", false);             /* a comparison */
    expect("SELECT @@session.sql_mode", false);
    expect("SELECT @@autocommit, @@sql_mode <> ''", false);
    expect("SET @@session.sql_mode = ''", false); /* reported */
    expect("SET @@local.time_zone = '+00:00'", false);
    expect("GRANT EXECUTE ON PROCEDURE p TO u", false);
    expect("SELECT execute FROM t", false);
    expect("SELECT 1 -- LOCK TABLES t WRITE", false);
    expect("SELECT 1 # GET_LOCK('x', 0)", false);
    expect("SELECT /* @x LOCK */ 1", false);
    expect("SELECT 1 /* unterminated LOCK", false);
    expect("SELECT 5--1", false); /* no space after --: a minus sign twice */
    expect("SELECT * FROM t FOR UPDATE", false);
    expect("SELECT export FROM t", false);
    expect("START TRANSACTION", false); /* the server's status shows it */
    expect("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED", false); /* reported */
}

static void xa(const char *sql, bool prepares) {
    if (dbpool__mysql_prepares_xa(sql) != prepares)
        fail_msg("'%s': expected %s", sql, prepares ? "XA PREPARE" : "not XA PREPARE");
}

/* XA PREPARE, which no reset may follow, and nothing else. */
static void test_xa_prepare(void **state) {
    (void)state;
    xa("XA PREPARE 'tx1'", true);
    xa("  xa\tprepare 'tx1'", true);
    xa("/* 2PC */ XA PREPARE 'a','b',1", true);
    xa("/*!50503 XA PREPARE 'tx1' */", true);
    xa("XA START 'tx1'", false);
    xa("XA END 'tx1'", false);
    xa("XA COMMIT 'tx1'", false);
    xa("XA RECOVER", false);
    xa("PREPARE s FROM 'XA PREPARE 1'", false);
    xa("SELECT 'XA PREPARE'", false);
    xa("XAPREPARE", false);
    xa("", false);
}

static void ddl(const char *sql, bool is_ddl) {
    if (dbpool__mysql_is_ddl(sql) != is_ddl)
        fail_msg("'%s': expected %s", sql, is_ddl ? "DDL" : "not DDL");
}

/* DDL, whose affected-rows count dbpool_exec reports as 0: by its first
 * word, behind comments and inside an executable comment. */
static void test_ddl(void **state) {
    (void)state;
    ddl("CREATE TABLE t2 AS SELECT * FROM t", true);
    ddl("  alter\ttable t MODIFY v BIGINT", true);
    ddl("/* copy */ -- x\nDROP TABLE t", true);
    ddl("/*!40000 ALTER TABLE t DISABLE KEYS */", true);
    ddl("RENAME TABLE a TO b", true);
    ddl("TRUNCATE t", true);
    ddl("INSERT INTO t SELECT * FROM u", false);
    ddl("UPDATE t SET created = 1", false);
    ddl("SELECT 'CREATE'", false);
    ddl("CREATED", false);
    ddl("/* unterminated CREATE", false);
    ddl("", false);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flagged),
        cmocka_unit_test(test_not_flagged),
        cmocka_unit_test(test_xa_prepare),
        cmocka_unit_test(test_ddl),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
