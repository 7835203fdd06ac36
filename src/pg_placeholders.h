/*
 * pg_placeholders.h — dbpool's `?` placeholders in PostgreSQL's $1, $2, ...
 * form, for the PostgreSQL backend.
 */
#ifndef DBPOOL_PG_PLACEHOLDERS_H
#define DBPOOL_PG_PLACEHOLDERS_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Copy sql to out (when out is not NULL), numbering each `?` that stands
 * outside a string, quoted identifier, dollar-quoted string or comment.
 * Returns how many were found. A `?` next to a letter, digit, `_` or `$`
 * gets a space on that side ("LIMIT?" -> "LIMIT $1", "?AND" -> "$1 AND"),
 * so that the number is not read as part of a word. `out` needs
 * strlen(sql) + 7 * count + 1 bytes while count is at most 99999 (the
 * backend allows PostgreSQL's 65535 parameters; " $65535 " is 7 bytes
 * longer than "?"). PostgreSQL's
 * own `?`, `?|` and `?&` operators cannot be written in a statement that
 * has parameters.
 */
size_t dbpool__pg_number_placeholders(const char *sql, char *out);

/* dbpool__pg_number_placeholders, and whether sql holds more than one
 * statement: code (not white space, `;` or comments) on both sides of a
 * `;` outside quotes and comments. */
size_t dbpool__pg_scan(const char *sql, char *out, bool *several);

/* How many statements sql holds: 1 plus each `;` outside quotes and
 * comments that more than white space, `;` and comments follow (0 for a
 * blank text). */
size_t dbpool__pg_count_statements(const char *sql);

/* Whether sql holds a PostgreSQL positional parameter ($1, $2, ...)
 * outside quotes and comments: written where dbpool wants `?`. */
bool dbpool__pg_has_positional(const char *sql);

#endif
