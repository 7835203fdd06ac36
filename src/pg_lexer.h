/*
 * pg_lexer.h — PostgreSQL's lexical rules for the text that is not code
 * (strings, quoted identifiers, dollar quotes, comments), shared by the
 * scans the PostgreSQL backend runs over SQL: numbering `?` placeholders
 * (pg_placeholders.c) and finding session changes (pg_session_sql.c).
 */
#ifndef DBPOOL_PG_LEXER_H
#define DBPOOL_PG_LEXER_H

#include <stdbool.h>
#include <stddef.h>

typedef enum pg_token {
    PG_TOKEN_STRING,  /* '...', E'...', $tag$...$tag$ */
    PG_TOKEN_IDENT,   /* "..." */
    PG_TOKEN_COMMENT, /* -- to the end of the line, nested block comments */
} pg_token;

static inline bool dbpool__pg_ident_start(unsigned char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' || ch >= 0x80;
}

static inline bool dbpool__pg_ident_cont(unsigned char ch) {
    return dbpool__pg_ident_start(ch) || (ch >= '0' && ch <= '9') || ch == '$';
}

const char *dbpool__pg_noncode_end(const char *s, bool plain_backslash_escapes, pg_token *kind);

/*
 * When s starts text that is not code, where that text ends, with *kind
 * saying what it was; NULL when s starts code. Call it where a token may
 * start, never inside an identifier (an `e'` there is no E string). A
 * string constant continued on a later line ('a' newline 'b', -- comments
 * allowed between) is one constant, and an E'...' one keeps its backslash
 * escapes there.
 * Unterminated text ends at the end of sql. plain_backslash_escapes reads
 * '...' as PostgreSQL does with standard_conforming_strings off. Inline
 * for the first-character test: the scans call it at every token.
 */
static inline const char *dbpool__pg_skip_noncode(const char *s, bool plain_backslash_escapes,
                                                  pg_token *kind) {
    unsigned char ch = (unsigned char)*s;
    if (ch != '\'' && ch != '"' && ch != '$' && ch != '-' && ch != '/' && ch != 'E' && ch != 'e')
        return NULL;
    return dbpool__pg_noncode_end(s, plain_backslash_escapes, kind);
}

#endif
