/* pg_placeholders.c — numbering `?` placeholders for PostgreSQL, outside
 * quotes, identifiers, dollar quotes and comments. */
#include "pg_placeholders.h"

#include "pg_lexer.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static size_t scan(const char *sql, char *out, bool *several, bool *positional, size_t *statements);

size_t dbpool__pg_number_placeholders(const char *sql, char *out) { return scan(sql, out, NULL, NULL, NULL); }

size_t dbpool__pg_scan(const char *sql, char *out, bool *several) {
    return scan(sql, out, several, NULL, NULL);
}

bool dbpool__pg_has_positional(const char *sql) {
    bool positional = false;
    scan(sql, NULL, NULL, &positional, NULL);
    return positional;
}

size_t dbpool__pg_count_statements(const char *sql) {
    size_t statements = 0;
    scan(sql, NULL, NULL, NULL, &statements);
    return statements;
}

/* Append n bytes of s to out (when there is an out). */
static void emit(char *out, size_t *o, const char *s, size_t n) {
    if (out)
        memcpy(out + *o, s, n);
    *o += n;
}

/*
 * Copy sql to out (when out is not NULL), numbering each `?` that stands
 * outside a string, quoted identifier, dollar-quoted string or comment.
 * Returns how many were found. `out` needs strlen(sql) + 7 * count + 1
 * bytes (" $65535 " for "?" between two words). *positional (when given)
 * says whether a $1, $2, ... stands there too; *statements (when given)
 * counts the statements.
 */
static size_t scan(const char *sql, char *out, bool *several, bool *positional, size_t *statements) {
    size_t count = 0, o = 0, stmts = 0;
    bool in_statement = false; /* code seen since the last ';' */
    if (several)
        *several = false;
    if (positional)
        *positional = false;
    const char *s = sql;
    while (*s) {
        unsigned char ch = (unsigned char)*s;
        pg_token kind;
        const char *end = dbpool__pg_skip_noncode(s, false, &kind);
        bool code = !isspace(ch) && ch != ';' && !(end && kind == PG_TOKEN_COMMENT);
        /* A statement starts: several once a second one does (an empty
         * one before it, "; SELECT 1", is none: the server drops it). */
        if (code && !in_statement) {
            in_statement = true;
            if (++stmts >= 2 && several)
                *several = true;
        }
        const char *from = s;
        if (end) {
            s = end;
        } else if (dbpool__pg_ident_start(ch)) {
            /* A whole identifier or keyword, so that `$` inside it is not
             * taken for a dollar quote. */
            while (*s && dbpool__pg_ident_cont((unsigned char)*s))
                s++;
        } else if (ch == '$') { /* $1: a positional parameter */
            s++;
            if (positional && isdigit((unsigned char)*s))
                *positional = true;
            while (*s && isdigit((unsigned char)*s))
                s++;
        } else if (ch == '?') {
            count++;
            s++;
            /* Kept apart from a word on either side, as `?` is where the
             * other backends read it: PostgreSQL would read "LIMIT$1" as
             * one identifier, and "$1AND" (or "$1_x") as a parameter with
             * trailing junk, an error since PostgreSQL 15; "?1" would
             * become parameter $11. */
            char num[24];
            bool word_before = s - 1 > sql && dbpool__pg_ident_cont((unsigned char)s[-2]);
            bool word_after = dbpool__pg_ident_cont((unsigned char)*s);
            int len =
                snprintf(num, sizeof num, "%s$%zu%s", word_before ? " " : "", count, word_after ? " " : "");
            emit(out, &o, num, (size_t)len);
            continue;
        } else {
            if (ch == ';')
                in_statement = false;
            s++;
        }
        emit(out, &o, from, (size_t)(s - from));
    }
    emit(out, &o, "", 1);
    if (statements)
        *statements = stmts;
    return count;
}
