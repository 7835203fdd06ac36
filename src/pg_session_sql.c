/* pg_session_sql.c — see pg_session_sql.h. PostgreSQL's lexical rules as
 * far as they matter here: '...' strings (E'...' with backslash escapes,
 * and read both ways when standard_conforming_strings might be off),
 * "..." identifiers, $tag$ dollar quotes, -- comments and nested block
 * comments. */
#include "pg_session_sql.h"

#include <stddef.h>
#include <string.h>
#include <strings.h>

static bool ident_start(unsigned char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' || ch >= 0x80;
}

static bool ident_cont(unsigned char ch) { return ident_start(ch) || (ch >= '0' && ch <= '9') || ch == '$'; }

/* Past a quoted run at s (the quote itself); '' and "" are the quote. */
static const char *skip_quoted(const char *s, bool backslash_escapes) {
    char q = *s++;
    while (*s) {
        if (backslash_escapes && *s == '\\' && s[1]) {
            s += 2;
        } else if (*s == q) {
            if (s[1] != q)
                return s + 1;
            s += 2;
        } else {
            s++;
        }
    }
    return s;
}

/* Past a dollar quote at s, or s itself when "$" does not open one ($1). */
static const char *skip_dollar(const char *s) {
    const char *p = s + 1;
    if (*p != '$') {
        if (!ident_start((unsigned char)*p))
            return s;
        while (ident_start((unsigned char)*p) || (*p >= '0' && *p <= '9'))
            p++;
        if (*p != '$')
            return s;
    }
    size_t tag_len = (size_t)(p - s) + 1;
    const char *end = p + 1;
    while (*end && strncmp(end, s, tag_len) != 0)
        end++;
    return *end ? end + tag_len : end;
}

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

/* Keywords with their lengths: most words are rejected on length alone
 * (the scan runs on every statement). */
typedef struct keyword {
    const char *text;
    size_t len;
} keyword;
#define KW(s)                                                                                                \
    { s, sizeof s - 1 }

static bool is_word(const char *w, size_t len, keyword kw) {
    return len == kw.len && strncasecmp(w, kw.text, len) == 0;
}

static bool is_any(const char *w, size_t len, const keyword *kws, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (is_word(w, len, kws[i]))
            return true;
    return false;
}

#define IS_ANY(w, len, table) is_any(w, len, table, sizeof table / sizeof table[0])

static const keyword k_set = KW("SET"), k_prepare = KW("PREPARE"), k_transaction = KW("TRANSACTION"),
                     k_temp = KW("TEMP"), k_temporary = KW("TEMPORARY"), k_hold = KW("HOLD"),
                     k_with = KW("WITH");
static const keyword k_session_statements[] = {KW("RESET"),      KW("LISTEN"),  KW("UNLISTEN"),
                                               KW("DEALLOCATE"), KW("DISCARD"), KW("LOAD")};
static const keyword k_before_temp[] = {KW("CREATE"), KW("REPLACE"),  KW("GLOBAL"),
                                        KW("LOCAL"),  KW("UNLOGGED"), KW("INTO")};
static const keyword k_transaction_scoped_set[] = {KW("LOCAL"), KW("TRANSACTION"), KW("CONSTRAINTS")};
static const keyword k_session_functions[] = {KW("pg_temp"),
                                              KW("pg_advisory_lock"),
                                              KW("pg_advisory_lock_shared"),
                                              KW("pg_try_advisory_lock"),
                                              KW("pg_try_advisory_lock_shared"),
                                              KW("set_config")};

static bool scan(const char *sql, bool backslash_escapes) {
    const char *s = sql;
    const char *prev = NULL; /* the word before, in this statement */
    size_t prev_len = 0;
    int words = 0; /* in this statement */
    const char *first = NULL;
    size_t first_len = 0;
    while (*s) {
        unsigned char ch = (unsigned char)*s;
        if (ident_start(ch)) {
            const char *w = s;
            while (ident_cont((unsigned char)*s))
                s++;
            size_t len = (size_t)(s - w);
            if (len == 1 && (*w == 'E' || *w == 'e') && *s == '\'') {
                s = skip_quoted(s, true); /* E'...' */
                continue;
            }
            words++;
            if (words == 1) {
                first = w;
                first_len = len;
                if (IS_ANY(w, len, k_session_statements))
                    return true;
            } else if (words == 2) {
                /* SET x / PREPARE q: the second word says whether it lasts. */
                if (is_word(first, first_len, k_set) && !IS_ANY(w, len, k_transaction_scoped_set))
                    return true;
                if (is_word(first, first_len, k_prepare) && !is_word(w, len, k_transaction))
                    return true;
            }
            if ((is_word(w, len, k_temp) || is_word(w, len, k_temporary)) && prev &&
                IS_ANY(prev, prev_len, k_before_temp))
                return true;
            if (is_word(w, len, k_hold) && prev && is_word(prev, prev_len, k_with))
                return true;
            if (IS_ANY(w, len, k_session_functions))
                return true;
            prev = w;
            prev_len = len;
        } else if (ch == '\'') {
            s = skip_quoted(s, backslash_escapes);
        } else if (ch == '"') {
            /* A quoted identifier is a word too: SET "application_name",
             * "pg_temp".t, "set_config"(...). Never a keyword. */
            const char *w = s + 1;
            s = skip_quoted(s, false);
            size_t len = (size_t)(s - w) - (s > w && s[-1] == '"');
            words++;
            if (words == 2 && (is_word(first, first_len, k_set) || is_word(first, first_len, k_prepare)))
                return true;
            if (IS_ANY(w, len, k_session_functions))
                return true;
            prev = NULL;
        } else if (ch == '$') {
            const char *end = skip_dollar(s);
            s = end == s ? s + 1 : end;
        } else if (ch == '-' && s[1] == '-') {
            s += strcspn(s, "\r\n"); /* a carriage return ends it too */
        } else if (ch == '/' && s[1] == '*') {
            s = skip_block_comment(s);
        } else if (ch == ';') {
            words = 0;
            prev = first = NULL;
            first_len = 0;
            s++;
        } else {
            s++;
        }
    }
    return false;
}

bool dbpool__pg_session_change(const char *sql) {
    if (!sql)
        return false;
    /* Backslashes escape in plain strings only with
     * standard_conforming_strings off; the two readings differ only where a
     * backslash stands. */
    return scan(sql, false) || (strchr(sql, '\\') && scan(sql, true));
}
