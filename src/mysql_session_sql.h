/*
 * mysql_session_sql.h — statements that leave MySQL/MariaDB session state
 * behind without the server saying so, for the MySQL backend's reset
 * decision.
 */
#ifndef DBPOOL_MYSQL_SESSION_SQL_H
#define DBPOOL_MYSQL_SESSION_SQL_H

#include <stdbool.h>

/*
 * True when sql may leave state in the session that the server's
 * SERVER_SESSION_STATE_CHANGED flag does not report: table locks (the word
 * LOCK outside strings and comments: LOCK TABLES, FLUSH TABLES WITH READ
 * LOCK, BACKUP LOCK, BACKUP STAGE, ... LOCK IN SHARE MODE; and FLUSH
 * TABLES ... FOR EXPORT), named locks
 * (GET_LOCK), HANDLER tables, and user variables assigned outside SET
 * (@name := ..., SELECT ... INTO @name, GET DIAGNOSTICS @name = ...; SET
 * @name is reported by the server), system variables set as @@name = ...
 * without a scope (MariaDB reports SET name and @@session.name, not
 * that), SET TRANSACTION, session_track_..., and dynamic SQL (a statement
 * starting with EXECUTE: EXECUTE IMMEDIATE, EXECUTE stmt), whose text the
 * scan cannot read. A cheap lexical scan,
 * run twice (with and without backslash escapes in strings, as sql_mode
 * may have either): false positives cost one reset at release, never a
 * wrong result.
 */
bool dbpool__mysql_untracked_session_change(const char *sql);

/*
 * True when sql is XA PREPARE. MariaDB's COM_RESET_CONNECTION on a session
 * whose XA transaction is prepared leaves the session unable to use InnoDB
 * (every later statement on a table fails with error 1031) and the
 * transaction orphaned on the server, holding its locks: such a connection
 * is closed at release instead (closing it detaches the prepared
 * transaction, which XA RECOVER then lists). Looks at the statement's first
 * words only: XA cannot stand anywhere else.
 */
bool dbpool__mysql_prepares_xa(const char *sql);

/*
 * True when sql is DDL (its first word CREATE, ALTER, DROP, RENAME or
 * TRUNCATE): the server reports the rows a CREATE TABLE ... SELECT filled
 * or a copying ALTER TABLE copied as affected, where dbpool_exec promises
 * 0 for DDL (as PostgreSQL and SQLite count it).
 */
bool dbpool__mysql_is_ddl(const char *sql);

#endif
