/* `?` placeholders numbered for PostgreSQL: only outside strings, quoted
 * identifiers, dollar quotes and comments. Pure parsing, no server. */
#include "pg_placeholders.h"
#include "testsupport.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void check(const char *sql, const char *expect, size_t count) {
    size_t n = dbpool__pg_number_placeholders(sql, NULL);
    char *out = malloc(strlen(sql) + 7 * n + 1);
    assert_non_null(out);
    assert_int_equal(dbpool__pg_number_placeholders(sql, out), n);
    if (n != count || strcmp(out, expect) != 0)
        fail_msg("'%s' -> '%s' (%zu), expected '%s' (%zu)", sql, out, n, expect, count);
    free(out);
}

static void test_numbering(void **state) {
    (void)state;
    check("SELECT ?", "SELECT $1", 1);
    check("INSERT INTO events(id, label) VALUES(?, ?)", "INSERT INTO events(id, label) VALUES($1, $2)", 2);
    check("SELECT 1", "SELECT 1", 0);
    check("", "", 0);
    check("?", "$1", 1);
}

/* A `?` touching a word: the number must not join it. PostgreSQL reads
 * "LIMIT$1" as one identifier and "$1AND" as a parameter with trailing
 * junk (an error since 15); SQLite takes "LIMIT?" and "?AND", MariaDB
 * "LIMIT?". */
static void test_placeholder_next_to_a_word(void **state) {
    (void)state;
    check("SELECT 1 WHERE x=?AND y", "SELECT 1 WHERE x=$1 AND y", 1);
    check("SELECT * FROM t LIMIT?", "SELECT * FROM t LIMIT $1", 1);
    check("SELECT x FROM t LIMIT?OFFSET?", "SELECT x FROM t LIMIT $1 OFFSET $2", 2);
    check("SELECT ?_a, ?$", "SELECT $1 _a, $2 $", 2);
    check("SELECT ?1", "SELECT $1 1", 1); /* not parameter $11 */
    check("SELECT \xc3\xa9?", "SELECT \xc3\xa9 $1", 1);
    check("SELECT 1?", "SELECT 1 $1", 1);
    /* Not next to a word: no space added. */
    check("SELECT (?),?::int,?", "SELECT ($1),$2::int,$3", 3);
}

static void test_quoted_places_untouched(void **state) {
    (void)state;
    check("SELECT '?', ?", "SELECT '?', $1", 1);
    check("SELECT 'it''s ?', ?", "SELECT 'it''s ?', $1", 1);
    check("SELECT E'\\' ?', ?", "SELECT E'\\' ?', $1", 1);
    check("SELECT \"odd?name\" FROM t WHERE x = ?", "SELECT \"odd?name\" FROM t WHERE x = $1", 1);
    check("SELECT $$ ? $$, ?", "SELECT $$ ? $$, $1", 1);
    check("SELECT $tag$ ? $other$ ? $tag$, ?", "SELECT $tag$ ? $other$ ? $tag$, $1", 1);
    check("SELECT ? -- what?\n, ?", "SELECT $1 -- what?\n, $2", 2);
    check("SELECT ? -- what?\r, ?", "SELECT $1 -- what?\r, $2", 2); /* \r ends a comment too */
    check("SELECT /* a? /* nested? */ b? */ ?", "SELECT /* a? /* nested? */ b? */ $1", 1);
    check("SELECT $1, ?", "SELECT $1, $1", 1); /* $1 is no quote; mixing styles is the caller's affair */
    /* An E'' constant continued on the next line keeps its escapes: the
     * \' there does not end it (PostgreSQL reads x'? here). */
    check("SELECT E'x'\n'\\'?' AS v, /*'*/ ?::text", "SELECT E'x'\n'\\'?' AS v, /*'*/ $1::text", 1);
    /* Without a newline it is no continuation. */
    check("SELECT E'x' '?', ?", "SELECT E'x' '?', $1", 1);
}

static void several(const char *sql, bool expect) {
    bool got = !expect;
    dbpool__pg_scan(sql, NULL, &got);
    if (got != expect)
        fail_msg("'%s': %s statement(s) expected", sql, expect ? "several" : "one");
}

static void test_several_statements(void **state) {
    (void)state;
    several("SELECT ?", false);
    several("SELECT ?;", false);
    several("SELECT ?; -- done\n ; /* end */  ", false);
    several("SELECT ';', ?", false);
    several("SELECT $$;x$$, ?", false);
    several("UPDATE t SET x = ?; SELECT 1", true);
    several("SELECT 1;SELECT ?", true);
    /* An empty statement before the one: PostgreSQL drops it. */
    several("; SELECT ?", false);
    several(" ;; /* x */ ; SELECT 1;", false);
    several("; SELECT 1; SELECT 2", true);
}

/* The statements of a text, for the statement backstop's budget (one
 * statement_timeout each). */
static void statements(const char *sql, size_t expect) {
    size_t got = dbpool__pg_count_statements(sql);
    if (got != expect)
        fail_msg("'%s': %zu statement(s) expected, counted %zu", sql, expect, got);
}

static void test_count_statements(void **state) {
    (void)state;
    statements("", 0);
    statements(" ;; -- nothing\n", 0);
    statements("SELECT 1", 1);
    statements("SELECT 1;", 1);
    statements("SELECT 1; -- done\n ; /* end */  ", 1);
    statements("SELECT ';', $$;x;$$, \"a;b\"", 1);
    statements("SELECT 1; SELECT 2;SELECT 3", 3);
    statements("/* a; b */ SELECT 1; 'x'; ; SELECT 2", 3);
}

/* $1, $2, ... where dbpool wants `?` (a PostgreSQL habit), for the error's
 * advice: found only where the server would read a parameter. */
static void positional(const char *sql, bool expect) {
    if (dbpool__pg_has_positional(sql) != expect)
        fail_msg("'%s': %s expected", sql, expect ? "a $n parameter" : "no $n parameter");
}

static void test_positional_parameters(void **state) {
    (void)state;
    positional("INSERT INTO t VALUES ($1, $2)", true);
    positional("SELECT $12", true);
    positional("SELECT ?", false);
    positional("SELECT '$1', ?", false);
    positional("SELECT \"$1\" FROM t", false);
    positional("SELECT $$ $1 $$", false);
    positional("SELECT $a$ $1 $a$", false);
    positional("SELECT 1 -- $1\n", false);
    positional("SELECT /* $1 */ 1", false);
    positional("SELECT a$1 FROM t", false); /* part of an identifier */
    positional("", false);
}

static void test_unterminated_input_is_safe(void **state) {
    (void)state;
    /* The scanner must stop at the end, whatever is left open. */
    check("SELECT '?", "SELECT '?", 0);
    check("SELECT \"?", "SELECT \"?", 0);
    check("SELECT $q$ ?", "SELECT $q$ ?", 0);
    check("SELECT /* ?", "SELECT /* ?", 0);
    check("SELECT -- ?", "SELECT -- ?", 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_numbering),
        cmocka_unit_test(test_placeholder_next_to_a_word),
        cmocka_unit_test(test_quoted_places_untouched),
        cmocka_unit_test(test_unterminated_input_is_safe),
        cmocka_unit_test(test_several_statements),
        cmocka_unit_test(test_count_statements),
        cmocka_unit_test(test_positional_parameters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
