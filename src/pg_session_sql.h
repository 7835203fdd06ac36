/*
 * pg_session_sql.h — statements that leave PostgreSQL session state behind
 * a ROLLBACK, for the PostgreSQL backend's reset decision.
 */
#ifndef DBPOOL_PG_SESSION_SQL_H
#define DBPOOL_PG_SESSION_SQL_H

#include <stdbool.h>

/*
 * True when sql may change the session in a way that outlives its
 * transaction, so that the connection needs DISCARD ALL before the next
 * caller gets it: a statement that starts with SET (not SET LOCAL,
 * TRANSACTION or CONSTRAINTS, which end with the transaction), RESET,
 * LISTEN, UNLISTEN, PREPARE (not PREPARE TRANSACTION), DEALLOCATE, DISCARD
 * or LOAD; a temporary object (TEMP / TEMPORARY after CREATE, REPLACE,
 * GLOBAL, LOCAL, UNLOGGED or INTO; the pg_temp schema); a session advisory
 * lock; set_config(); a cursor WITH HOLD. A lexical scan outside strings,
 * quoted identifiers, dollar quotes and comments: what a function or DO
 * block runs inside is not seen, and a false alarm costs one reset.
 */
bool dbpool__pg_session_change(const char *sql);

#endif
