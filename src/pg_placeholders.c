/* pg_placeholders.c — numbering `?` placeholders for PostgreSQL, outside
 * quotes, identifiers, dollar quotes and comments. */
#include "pg_placeholders.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static bool ident_start(unsigned char ch) { return isalpha(ch) || ch == '_' || ch >= 0x80; }
static bool ident_cont(unsigned char ch) { return ident_start(ch) || isdigit(ch) || ch == '$'; }

/* Length of a dollar-quote opener "$tag$" at s, or 0 if s does not start one. */
static size_t dollar_tag(const char *s) {
    const unsigned char *p = (const unsigned char *)s + 1;
    if (*p == '$')
        return 2;
    if (!ident_start(*p))
        return 0; /* "$1" is a positional parameter, not a quote */
    while (*p && (ident_start(*p) || isdigit(*p)))
        p++;
    return *p == '$' ? (size_t)((const char *)p - s) + 1 : 0;
}

/* After the closing quote of a string constant at s: white space holding a
 * newline, then a quote, continues the same constant (SQL's rule); the
 * length of that white space and quote, or 0. */
static size_t continuation(const char *s) {
    size_t n = strspn(s, " \t\r\n\f");
    return n > 0 && memchr(s, '\n', n) && s[n] == '\'' ? n + 1 : 0;
}

size_t dbpool__pg_number_placeholders(const char *sql, char *out) { return dbpool__pg_scan(sql, out, NULL); }

/*
 * Copy sql to out (when out is not NULL), numbering each `?` that stands
 * outside a string, quoted identifier, dollar-quoted string or comment.
 * Returns how many were found. `out` needs strlen(sql) + 5 * count + 1
 * bytes ("$65535" for "?").
 */
size_t dbpool__pg_scan(const char *sql, char *out, bool *several) {
    size_t count = 0, o = 0;
    bool after_semicolon = false;
    if (several)
        *several = false;
    const char *s = sql;
#define EMIT(ch)                                                                                             \
    do {                                                                                                     \
        char emitted_ = (ch);                                                                                \
        if (out)                                                                                             \
            out[o] = emitted_;                                                                               \
        o++;                                                                                                 \
    } while (0)
    while (*s) {
        unsigned char ch = (unsigned char)*s;
        bool comment = (ch == '-' && s[1] == '-') || (ch == '/' && s[1] == '*');
        if (after_semicolon && several && !isspace(ch) && ch != ';' && !comment)
            *several = true;
        if (ident_start(ch)) {
            /* A whole identifier or keyword, so that `$` inside it is not
             * taken for a dollar quote; E'...' has backslash escapes. */
            const char *start = s;
            while (*s && ident_cont((unsigned char)*s))
                EMIT(*s++);
            if (s - start == 1 && (*start == 'E' || *start == 'e') && *s == '\'') {
                EMIT(*s++);
                while (*s) {
                    if (*s == '\\' && s[1]) {
                        EMIT(*s++);
                        EMIT(*s++);
                    } else if (*s == '\'' && s[1] == '\'') {
                        EMIT(*s++);
                        EMIT(*s++);
                    } else if (*s == '\'') {
                        EMIT(*s++);
                        /* E'a'<newline>'b' is one constant: the second part
                         * has backslash escapes too. */
                        size_t more = continuation(s);
                        if (!more)
                            break;
                        for (size_t i = 0; i < more; i++)
                            EMIT(*s++);
                    } else {
                        EMIT(*s++);
                    }
                }
            }
        } else if (ch == '\'' || ch == '"') {
            /* '' and "" inside are escapes and need no special case: the
             * scan closes and at once reopens. */
            char q = *s;
            EMIT(*s++);
            while (*s && *s != q)
                EMIT(*s++);
            if (*s)
                EMIT(*s++);
        } else if (ch == '$') {
            size_t tl = dollar_tag(s);
            if (tl == 0) {
                EMIT(*s++);
                while (*s && isdigit((unsigned char)*s))
                    EMIT(*s++);
                continue;
            }
            const char *tag = s;
            for (size_t i = 0; i < tl; i++)
                EMIT(*s++);
            while (*s && strncmp(s, tag, tl) != 0)
                EMIT(*s++);
            if (*s)
                for (size_t i = 0; i < tl; i++)
                    EMIT(*s++);
        } else if (ch == '-' && s[1] == '-') {
            while (*s && *s != '\n' && *s != '\r') /* PostgreSQL ends it at either */
                EMIT(*s++);
        } else if (ch == '/' && s[1] == '*') {
            /* Block comments nest in PostgreSQL. */
            int depth = 0;
            do {
                if (*s == '/' && s[1] == '*') {
                    depth++;
                    EMIT(*s++);
                    EMIT(*s++);
                } else if (*s == '*' && s[1] == '/') {
                    depth--;
                    EMIT(*s++);
                    EMIT(*s++);
                } else {
                    EMIT(*s++);
                }
            } while (*s && depth > 0);
        } else if (ch == ';') {
            after_semicolon = true;
            EMIT(*s++);
        } else if (ch == '?') {
            count++;
            s++;
            char num[16];
            int len = snprintf(num, sizeof num, "$%zu", count);
            for (int i = 0; i < len; i++)
                EMIT(num[i]);
        } else {
            EMIT(*s++);
        }
    }
    EMIT('\0');
#undef EMIT
    return count;
}
