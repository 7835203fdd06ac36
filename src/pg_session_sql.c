/* pg_session_sql.c — see pg_session_sql.h. The text that is not code is
 * PostgreSQL's (pg_lexer.h); a text with a backslash is read both with and
 * without escapes in plain strings, as standard_conforming_strings may be
 * either. */
#include "pg_session_sql.h"

#include "pg_lexer.h"

#include <stddef.h>
#include <string.h>
#include <strings.h>

/* Keywords with their lengths: most words are rejected on length alone
 * (the scan runs on every statement). */
typedef struct keyword {
    const char *text;
    size_t len;
} keyword;
#define KW(s)                                                                                                \
    { s, sizeof s - 1 }

static bool is_word(const char *w, size_t len, keyword kw) {
    /* Letters and '_' only: OR-ing 0x20 folds the case of the first. */
    return len == kw.len && (w[0] | 0x20) == (kw.text[0] | 0x20) && strncasecmp(w, kw.text, len) == 0;
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
                     k_with = KW("WITH"), k_load = KW("LOAD"), k_update = KW("UPDATE"),
                     k_pg_settings = KW("pg_settings");
static const keyword k_session_statements[] = {KW("RESET"), KW("LISTEN"), KW("UNLISTEN"), KW("DEALLOCATE"),
                                               KW("DISCARD")};
static const keyword k_before_temp[] = {KW("CREATE"), KW("REPLACE"),  KW("GLOBAL"),
                                        KW("LOCAL"),  KW("UNLOGGED"), KW("INTO")};
static const keyword k_transaction_scoped_set[] = {KW("LOCAL"), KW("TRANSACTION"), KW("CONSTRAINTS")};
/* Names that change the session wherever they stand: session advisory
 * locks and set_config. */
static const keyword k_session_names[] = {KW("pg_advisory_lock"), KW("pg_advisory_lock_shared"),
                                          KW("pg_try_advisory_lock"), KW("pg_try_advisory_lock_shared"),
                                          KW("set_config")};

/* The temporary schema: pg_temp, or a session's own pg_temp_N. */
static bool temp_schema(const char *w, size_t len) {
    return len >= 7 && strncasecmp(w, "pg_temp", 7) == 0 && (len == 7 || w[7] == '_');
}

/* The first character of code after white space and comments at s. */
static char next_code_char(const char *s) {
    for (;;) {
        s += strspn(s, " \t\r\n\f\v");
        pg_token kind;
        const char *end = dbpool__pg_skip_noncode(s, false, &kind);
        if (!end || kind != PG_TOKEN_COMMENT)
            return *s;
        s = end;
    }
}

static pg_session_effect scan(const char *sql, bool backslash_escapes) {
    pg_session_effect effect = PG_SESSION_UNCHANGED;
    const char *s = sql;
    const char *prev = NULL; /* the word before, in this statement (NULL: quoted) */
    size_t prev_len = 0;
    int words = 0; /* in this statement */
    const char *first = NULL;
    size_t first_len = 0;
    /* An UPDATE of pg_settings is a set_config; reading it is not. */
    bool update = false, settings = false;
    while (*s) {
        unsigned char ch = (unsigned char)*s;
        pg_token kind;
        const char *end = dbpool__pg_skip_noncode(s, backslash_escapes, &kind);
        /* The next word: a keyword or name, or a quoted identifier, which
         * is a word too (SET "application_name", "pg_temp".t,
         * "set_config"(...)) but never a keyword. */
        const char *w;
        size_t len;
        bool quoted = end && kind == PG_TOKEN_IDENT;
        if (quoted) {
            w = s + 1;
            len = (size_t)(end - w) - (end > w && end[-1] == '"');
            s = end;
        } else if (end) {
            s = end;
            continue;
        } else if (dbpool__pg_ident_start(ch)) {
            w = s;
            while (dbpool__pg_ident_cont((unsigned char)*s))
                s++;
            len = (size_t)(s - w);
        } else {
            if (ch == ';') {
                words = 0;
                prev = first = NULL;
                first_len = 0;
                update = settings = false;
            }
            s++;
            continue;
        }
        words++;
        /* U&"..." spells a name with escapes (U&"set\005fconfig"): what
         * it names is not read here, so it counts as a change. */
        if (!quoted && len == 1 && (*w == 'U' || *w == 'u') && s[0] == '&' && s[1] == '"')
            effect = PG_SESSION_CHANGED;
        if (words == 1 && !quoted) {
            first = w;
            first_len = len;
            /* A loaded library stays loaded whatever the reset does. */
            if (is_word(w, len, k_load))
                return PG_SESSION_PERMANENT;
            if (IS_ANY(w, len, k_session_statements))
                effect = PG_SESSION_CHANGED;
        } else if (words == 2) {
            /* SET x / PREPARE q: the second word says whether it lasts.
             * The keywords are unreserved: SET local.x = 1 sets a session
             * variable, PREPARE transaction AS ... prepares a statement
             * named so (PREPARE TRANSACTION takes a string). */
            if (is_word(first, first_len, k_set) &&
                (quoted || !IS_ANY(w, len, k_transaction_scoped_set) || next_code_char(s) == '.'))
                effect = PG_SESSION_CHANGED;
            if (is_word(first, first_len, k_prepare)) {
                char c = next_code_char(s);
                if (quoted || !is_word(w, len, k_transaction) ||
                    !(c == '\'' || c == '$' || c == 'E' || c == 'e'))
                    effect = PG_SESSION_CHANGED;
            }
        }
        if (!quoted && prev &&
            (((is_word(w, len, k_temp) || is_word(w, len, k_temporary)) &&
              IS_ANY(prev, prev_len, k_before_temp)) ||
             (is_word(w, len, k_hold) && is_word(prev, prev_len, k_with))))
            effect = PG_SESSION_CHANGED;
        if (temp_schema(w, len) || IS_ANY(w, len, k_session_names))
            effect = PG_SESSION_CHANGED;
        update = update || (!quoted && is_word(w, len, k_update));
        settings = settings || is_word(w, len, k_pg_settings);
        if (update && settings)
            effect = PG_SESSION_CHANGED;
        prev = quoted ? NULL : w;
        prev_len = len;
    }
    return effect;
}

pg_session_effect dbpool__pg_session_effect(const char *sql) {
    if (!sql)
        return PG_SESSION_UNCHANGED;
    pg_session_effect e = scan(sql, false);
    /* Backslashes escape in plain strings only with
     * standard_conforming_strings off; the two readings differ only where a
     * backslash stands. */
    if (e != PG_SESSION_PERMANENT && strchr(sql, '\\')) {
        pg_session_effect e2 = scan(sql, true);
        if (e2 > e)
            e = e2;
    }
    return e;
}
