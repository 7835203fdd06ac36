/* mysql_session_sql.c — see mysql_session_sql.h. MySQL's lexical rules as
 * far as they matter here: '...' and "..." strings with backslash escapes
 * and doubled quotes, `...` identifiers, # and "-- " line comments, block
 * comments, and the executable comments that MySQL runs as code. */
#include "mysql_session_sql.h"

#include <stddef.h>
#include <string.h>
#include <strings.h>

static bool ident_char(unsigned char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
           ch == '$' || ch >= 0x80;
}

/* Past a quoted run that starts at s (the quote itself). Whether a
 * backslash escapes depends on the session's sql_mode
 * (NO_BACKSLASH_ESCAPES), which the scan does not know: it reads the text
 * both ways. */
static const char *skip_quoted(const char *s, bool backslash_escapes) {
    char q = *s++;
    while (*s) {
        if (backslash_escapes && *s == '\\' && q != '`' && s[1]) {
            s += 2;
        } else if (*s == q) {
            if (s[1] != q)
                return s + 1;
            s += 2; /* a doubled quote stands for itself */
        } else {
            s++;
        }
    }
    return s;
}

static const char *skip_line(const char *s) {
    while (*s && *s != '\n')
        s++;
    return s;
}

static bool is_keyword(const char *word, size_t len, const char *kw) {
    size_t n = 0;
    while (kw[n])
        n++;
    return len == n && strncasecmp(word, kw, n) == 0;
}

/* Past white space and ordinary comments. */
static const char *skip_blank(const char *s) {
    for (;;) {
        if (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == '\f' || *s == '\v') {
            s++;
        } else if (s[0] == '/' && s[1] == '*' && s[2] != '!' && !(s[2] == 'M' && s[3] == '!')) {
            const char *end = strstr(s + 2, "*/");
            s = end ? end + 2 : s + strlen(s);
        } else if (*s == '#' ||
                   (s[0] == '-' && s[1] == '-' && (s[2] == '\0' || (unsigned char)s[2] <= ' '))) {
            s = skip_line(s);
        } else {
            return s;
        }
    }
}

static bool scan(const char *sql, bool backslash_escapes) {
    const char *s = sql;
    bool after_into = false; /* SELECT ... INTO @a, @b assigns them */
    bool after_set = false;  /* the word before was SET */
    bool first_word = true;  /* a statement's own keyword is next: at the start, after ';' and after
                                the words that open one inside a compound statement (BEGIN NOT
                                ATOMIC ...; END, IF ... THEN ...; END IF, which MariaDB runs
                                outside stored programs too) */
    bool after_for = false;  /* the word before was FOR */
    bool create = false;     /* a CREATE was read */
    while (s && *s) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '\'' || ch == '"' || ch == '`') {
            s = skip_quoted(s, backslash_escapes);
        } else if (ch == '#') {
            s = skip_line(s);
        } else if (ch == '-' && s[1] == '-' && (s[2] == '\0' || (unsigned char)s[2] <= ' ')) {
            s = skip_line(s);
        } else if (ch == '/' && s[1] == '*') {
            /* Executable comments (/ *! and / *M!, with an optional version)
             * are code: read on inside them; their closing mark is skipped
             * as code below. */
            const char *body = s + 2;
            if (*body == 'M' && body[1] == '!')
                body++;
            if (*body == '!') {
                s = body + 1;
                while (*s >= '0' && *s <= '9')
                    s++;
                continue;
            }
            const char *end = s + 2;
            while (*end && !(end[0] == '*' && end[1] == '/'))
                end++;
            s = *end ? end + 2 : end;
        } else if (ch == '@') {
            if (s[1] == '@') {
                /* A system variable. The server reports a SET of one
                 * written with its scope (SET x, SET SESSION x,
                 * @@session.x, @@local.x), but MariaDB does not report
                 * @@x = ... without one, which sets the session's value
                 * just the same (SET @@autocommit = 0). Reading one
                 * changes nothing; a comparison (@@x = 1) is a false
                 * alarm. */
                s += 2;
                const char *name = s;
                if (*s == '`')
                    s = skip_quoted(s, backslash_escapes);
                else
                    while (ident_char((unsigned char)*s))
                        s++;
                size_t len = (size_t)(s - name);
                if (*s == '.' && (is_keyword(name, len, "session") || is_keyword(name, len, "local") ||
                                  is_keyword(name, len, "global"))) {
                    s++; /* the name after the scope is read as a word */
                    continue;
                }
                const char *after = skip_blank(s);
                if (len > 0 && (after[0] == '=' || (after[0] == ':' && after[1] == '=')))
                    return true;
                continue;
            }
            unsigned char next = (unsigned char)s[1];
            if (!ident_char(next) && next != '\'' && next != '"' && next != '`') {
                s++;
                continue;
            }
            /* A user variable: reading one changes nothing, assigning one
             * outside SET (which the server reports) does. */
            if (after_into)
                return true;
            if (ident_char(next)) {
                s++;
                while (ident_char((unsigned char)*s))
                    s++;
            } else {
                s = skip_quoted(s + 1, backslash_escapes);
            }
            s = skip_blank(s);
            if (s[0] == ':' && s[1] == '=')
                return true;
        } else if (ident_char(ch)) {
            const char *word = s;
            while (ident_char((unsigned char)*s))
                s++;
            size_t len = (size_t)(s - word);
            /* BACKUP STAGE / BACKUP LOCK; GET DIAGNOSTICS @v = ... */
            if (is_keyword(word, len, "LOCK") || is_keyword(word, len, "GET_LOCK") ||
                is_keyword(word, len, "HANDLER") || is_keyword(word, len, "BACKUP") ||
                is_keyword(word, len, "DIAGNOSTICS"))
                return true;
            /* SET TRANSACTION: the next transaction's isolation or READ ONLY,
             * which the server does not report. Turning the server's
             * reports off (session_track_...) would hide what follows. */
            if ((after_set && is_keyword(word, len, "TRANSACTION")) ||
                (len > 14 && strncasecmp(word, "session_track_", 14) == 0))
                return true;
            /* EXECUTE IMMEDIATE 'text' and EXECUTE stmt run SQL the scan
             * cannot read (a string, an expression, a statement prepared
             * earlier), and the server reports none of the above inside
             * them either. */
            if (first_word && is_keyword(word, len, "EXECUTE"))
                return true;
            /* FLUSH TABLES t FOR EXPORT: the tables stay locked for the
             * session until UNLOCK TABLES. */
            if (after_for && is_keyword(word, len, "EXPORT"))
                return true;
            /* CREATE TEMPORARY TABLE t [AS] SELECT ...: MariaDB reports a
             * temporary table made from a query as no change at all (the
             * others it does). Any CREATE TEMPORARY counts, also one that
             * is not the first statement of the text (BEGIN NOT ATOMIC
             * ... END runs several). */
            if (create && is_keyword(word, len, "TEMPORARY"))
                return true;
            if (is_keyword(word, len, "CREATE"))
                create = true;
            after_for = is_keyword(word, len, "FOR");
            first_word = is_keyword(word, len, "BEGIN") || is_keyword(word, len, "ATOMIC") ||
                         is_keyword(word, len, "THEN") || is_keyword(word, len, "ELSE") ||
                         is_keyword(word, len, "LOOP") || is_keyword(word, len, "REPEAT") ||
                         is_keyword(word, len, "DO");
            if (is_keyword(word, len, "INTO"))
                after_into = true;
            after_set = is_keyword(word, len, "SET");
            continue;
        } else {
            if (ch == ';')
                first_word = true;
            s++;
        }
    }
    return false;
}

bool dbpool__mysql_untracked_session_change(const char *sql) {
    /* The two readings differ only where a backslash stands. */
    return scan(sql, true) || (strchr(sql, '\\') && scan(sql, false));
}

/* The statement's first word (an executable comment around it is code
 * too): its start, its length in *len; NULL when the text starts with an
 * ordinary comment that is not closed, or with anything but a word. */
static const char *first_word(const char *sql, size_t *len) {
    const char *s = skip_blank(sql);
    if (s[0] == '/' && s[1] == '*') {
        s += 2;
        if (*s == 'M')
            s++;
        if (*s != '!')
            return NULL;
        s++;
        while (*s >= '0' && *s <= '9')
            s++;
        s = skip_blank(s);
    }
    const char *word = s;
    while (ident_char((unsigned char)*s))
        s++;
    *len = (size_t)(s - word);
    return word;
}

bool dbpool__mysql_is_ddl(const char *sql) {
    static const char *const verbs[] = {"CREATE", "ALTER", "DROP", "RENAME", "TRUNCATE"};
    size_t len = 0;
    const char *word = first_word(sql, &len);
    for (size_t i = 0; word && i < sizeof verbs / sizeof verbs[0]; i++)
        if (is_keyword(word, len, verbs[i]))
            return true;
    return false;
}

bool dbpool__mysql_prepares_xa(const char *sql) {
    size_t len = 0;
    const char *word = first_word(sql, &len);
    if (!word || !is_keyword(word, len, "XA"))
        return false;
    const char *s = word + len;
    s = skip_blank(s);
    word = s;
    while (ident_char((unsigned char)*s))
        s++;
    return is_keyword(word, (size_t)(s - word), "PREPARE");
}
