/*
 * pg_session_sql.h — statements that leave PostgreSQL session state behind
 * a ROLLBACK, for the PostgreSQL backend's reset decision.
 */
#ifndef DBPOOL_PG_SESSION_SQL_H
#define DBPOOL_PG_SESSION_SQL_H

#include <stdbool.h>

typedef enum pg_session_effect {
    PG_SESSION_UNCHANGED, /* nothing that outlives the transaction */
    PG_SESSION_CHANGED,   /* DISCARD ALL puts the session back */
    PG_SESSION_PERMANENT, /* nothing does (LOAD): the connection must go */
} pg_session_effect;

/*
 * What sql may leave in the session beyond its transaction. CHANGED: a
 * statement that starts with SET (not SET LOCAL, TRANSACTION or
 * CONSTRAINTS, which end with the transaction), RESET, LISTEN, UNLISTEN,
 * PREPARE (not PREPARE TRANSACTION), DEALLOCATE or DISCARD; a temporary
 * object (TEMP / TEMPORARY after CREATE, REPLACE, GLOBAL, LOCAL, UNLOGGED
 * or INTO; the pg_temp schema); a session advisory lock; set_config() or
 * an UPDATE of pg_settings; a cursor WITH HOLD. PERMANENT: LOAD. A lexical scan outside
 * strings, quoted identifiers, dollar quotes and comments: what a function
 * or DO block runs inside is not seen, and a false alarm costs one reset.
 */
pg_session_effect dbpool__pg_session_effect(const char *sql);

static inline bool dbpool__pg_session_change(const char *sql) {
    return dbpool__pg_session_effect(sql) != PG_SESSION_UNCHANGED;
}

#endif
