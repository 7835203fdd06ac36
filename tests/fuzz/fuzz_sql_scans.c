/* libFuzzer target: the lexical scans the server backends run over every
 * statement a caller sends (PostgreSQL's `?` numbering and session-change
 * scan, MySQL's session-change scan and its XA PREPARE check). Properties: no crash or sanitizer
 * report on any text, and the numbered copy fits the size the header
 * promises and keeps every byte that is not a placeholder. */
#ifdef DBPOOL_HAVE_PG
#include "pg_placeholders.h"
#include "pg_session_sql.h"
#endif
#ifdef DBPOOL_HAVE_MYSQL
#include "mysql_session_sql.h"
#endif

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 8192)
        return 0;
    char *sql = malloc(size + 1);
    if (!sql)
        return 0;
    memcpy(sql, data, size);
    sql[size] = '\0'; /* a NUL in the data ends the text early, as in C */
#ifdef DBPOOL_HAVE_PG
    bool several;
    size_t count = dbpool__pg_scan(sql, NULL, &several);
    size_t len = strlen(sql);
    size_t cap = len + 7 * count + 1;
    char *out = malloc(cap);
    if (out) {
        if (dbpool__pg_scan(sql, out, NULL) != count)
            abort(); /* the counting pass and the writing pass disagree */
        size_t olen = strlen(out);
        if (olen + 1 > cap || olen < len)
            abort();
        /* Every '?' that became "$n" grew the text by the digits of n. */
        size_t q_in = 0, q_out = 0;
        for (size_t i = 0; i < len; i++)
            q_in += sql[i] == '?';
        for (size_t i = 0; i < olen; i++)
            q_out += out[i] == '?';
        if (q_in - q_out != count)
            abort();
        free(out);
    }
    /* The statement count (the backstop's budget) agrees with the scan:
     * several exactly when it counts two or more, and at most one more
     * than the ';' in the text. */
    size_t statements = dbpool__pg_count_statements(sql);
    size_t semicolons = 0;
    for (size_t i = 0; i < len; i++)
        semicolons += sql[i] == ';';
    if (several != (statements >= 2) || statements > semicolons + 1)
        abort();
    (void)dbpool__pg_session_change(sql);
#endif
#ifdef DBPOOL_HAVE_MYSQL
    (void)dbpool__mysql_untracked_session_change(sql);
    (void)dbpool__mysql_prepares_xa(sql);
    (void)dbpool__mysql_is_ddl(sql);
#endif
    free(sql);
    return 0;
}
