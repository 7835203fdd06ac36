/* pg_lexer.c — see pg_lexer.h. */
#include "pg_lexer.h"

#include <stddef.h>
#include <string.h>

/* After the closing quote of a string constant at s: white space and --
 * comments holding a line break (\n or \r), then a quote, continue the
 * same constant (scan.l's quotecontinue); the length of that run and the
 * quote, or 0. */
static size_t continuation(const char *s) {
    const char *p = s;
    bool line_break = false;
    for (;;) {
        if (*p == ' ' || *p == '\t' || *p == '\f' || *p == '\v') {
            p++;
        } else if (*p == '\n' || *p == '\r') {
            line_break = true;
            p++;
        } else if (p[0] == '-' && p[1] == '-') {
            p += 2 + strcspn(p + 2, "\r\n");
        } else {
            break;
        }
    }
    return line_break && *p == '\'' ? (size_t)(p - s) + 1 : 0;
}

/* s at the opening quote of a string constant; '' stands for a quote. */
static const char *skip_string(const char *s, bool backslash_escapes) {
    s++;
    while (*s) {
        if (backslash_escapes && *s == '\\' && s[1]) {
            s += 2;
        } else if (*s == '\'' && s[1] == '\'') {
            s += 2;
        } else if (*s == '\'') {
            s++;
            size_t more = continuation(s);
            if (!more)
                return s;
            s += more;
        } else {
            s++;
        }
    }
    return s;
}

/* s at the opening quote of an identifier; "" stands for a quote. */
static const char *skip_quoted_ident(const char *s) {
    s++;
    while (*s) {
        if (*s == '"' && s[1] == '"')
            s += 2;
        else if (*s == '"')
            return s + 1;
        else
            s++;
    }
    return s;
}

/* Past a dollar-quoted string at s, or NULL when "$" opens none ($1). */
static const char *skip_dollar(const char *s) {
    const char *p = s + 1;
    if (*p != '$') {
        if (!dbpool__pg_ident_start((unsigned char)*p))
            return NULL;
        while (dbpool__pg_ident_start((unsigned char)*p) || (*p >= '0' && *p <= '9'))
            p++;
        if (*p != '$')
            return NULL;
    }
    size_t tag_len = (size_t)(p - s) + 1;
    const char *end = p + 1;
    while (*end && strncmp(end, s, tag_len) != 0)
        end++;
    return *end ? end + tag_len : end;
}

/* Block comments nest in PostgreSQL. */
static const char *skip_block_comment(const char *s) {
    int depth = 0;
    do {
        if (s[0] == '/' && s[1] == '*') {
            depth++;
            s += 2;
        } else if (s[0] == '*' && s[1] == '/') {
            depth--;
            s += 2;
        } else {
            s++;
        }
    } while (*s && depth > 0);
    return s;
}

const char *dbpool__pg_noncode_end(const char *s, bool plain_backslash_escapes, pg_token *kind) {
    switch (s[0]) {
    case 'E':
    case 'e':
        if (s[1] != '\'')
            return NULL;
        *kind = PG_TOKEN_STRING;
        return skip_string(s + 1, true);
    case '\'':
        *kind = PG_TOKEN_STRING;
        return skip_string(s, plain_backslash_escapes);
    case '"':
        *kind = PG_TOKEN_IDENT;
        return skip_quoted_ident(s);
    case '$':
        *kind = PG_TOKEN_STRING;
        return skip_dollar(s);
    case '-':
        if (s[1] != '-')
            return NULL;
        *kind = PG_TOKEN_COMMENT;
        return s + 2 + strcspn(s + 2, "\r\n"); /* PostgreSQL ends it at either */
    case '/':
        if (s[1] != '*')
            return NULL;
        *kind = PG_TOKEN_COMMENT;
        return skip_block_comment(s);
    default:
        return NULL;
    }
}
