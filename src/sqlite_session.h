/*
 * sqlite_session.h — what a caller leaves in an SQLite session beyond a
 * transaction: temporary tables, views, triggers and indexes, attached
 * databases, and per-connection settings changed with a PRAGMA. They
 * would reach the next caller of the pooled connection (a TEMP table even
 * shadows the main table of the same name, query_only refuses its writes),
 * so the SQLite backend notices them as they are made and drops them (or
 * sets the PRAGMAs back) at release.
 *
 * Noticed with an authorizer (sqlite3_set_authorizer), which SQLite calls
 * while it prepares a statement, also for statements run on the native
 * handle. A statement that set the flag must not be kept in a statement
 * cache: run again from the cache it would not be prepared, and not seen.
 * A caller that installs its own authorizer on the native handle (or
 * none) replaces this one: dbpool__sqlite_session_ours tells, and the
 * connection is then replaced at release, what it left being unknown.
 *
 * What the pool's init_sql and after_connect made is the baseline, kept
 * from lease to lease (rows callers write into a baseline table stay too).
 * A caller that drops or changes a baseline object leaves a session that
 * cannot be put back: the reset then fails and the connection is closed.
 */
#ifndef DBPOOL_SQLITE_SESSION_H
#define DBPOOL_SQLITE_SESSION_H

#include "internal.h"

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sqlite_object {
    char *kind; /* "table", "index", "view", "trigger", or "database" (attached) */
    char *name;
    char *sql; /* the CREATE statement; NULL for a database */
} sqlite_object;

/* The per-connection PRAGMA settings a reset puts back (see
 * sqlite_session.c): at most 32. */
#define SQLITE_SESSION_PRAGMAS 29

/* The PRAGMA settings a session starts with. Every connection of a pool
 * (and of most pools) starts with the same ones, so they are kept once,
 * shared and counted (sqlite_session.c), not per connection: 250 bytes a
 * connection otherwise. Immutable once shared. */
typedef struct sqlite_pragma_base {
    struct sqlite_pragma_base *next; /* the process's list of them */
    size_t refs;
    uint32_t known;                        /* bit i: value[i] was read (the PRAGMA is compiled in) */
    int64_t value[SQLITE_SESSION_PRAGMAS]; /* their values at the baseline */
    char journal[16];                      /* the journal and locking modes at the baseline: */
    char locking[16];                      /* setting the same is no change */
} sqlite_pragma_base;

typedef struct sqlite_session {
    bool dirty;              /* something was made, dropped or changed since the baseline */
    bool touched;            /* something temporary was dropped or altered, or a database detached */
    bool broken;             /* a baseline object was dropped or detached (maybe made again since) */
    size_t broken_at;        /* which: its index in baseline */
    unsigned marks;          /* authorizer hits so far: compare around a prepare */
    unsigned heard;          /* authorizer calls so far: is it still installed? */
    bool memory;             /* the database is sqlite::memory: (memdb) */
    bool exclusive;          /* locking_mode=exclusive set since the baseline */
    bool refused_wal;        /* the last refusal: WAL on sqlite::memory: (why "not authorized") */
    sqlite_object *baseline; /* what the session starts with; NULL: nothing */
    size_t nbaseline;
    uint32_t pragmas;               /* bit i: a caller set restorable PRAGMA i since the baseline */
    int lost_pragma;                /* a PRAGMA set that no reset puts back: its index + 1; 0 = none */
    const sqlite_pragma_base *base; /* the settings at the baseline (shared) */
} sqlite_session;

/* Install the authorizer on a new connection (s lives as long as db), and
 * read the PRAGMA settings a reset puts back; busy_timeout_ms is the busy
 * timeout the connection will have (the connect runs with a shorter one);
 * memory: the database is sqlite::memory:. */
int dbpool__sqlite_session_watch(sqlite3 *db, sqlite_session *s, int busy_timeout_ms, bool memory,
                                 dbpool_error *e);

/* The session as it is now is where every lease starts (after the pool's
 * init_sql and after_connect): remember what exists, clear the flags. */
int dbpool__sqlite_session_baseline(sqlite3 *db, sqlite_session *s, dbpool_error *e);

/* Put back the PRAGMA settings a caller changed, drop the temporary
 * objects and detach the databases made since the baseline. No
 * transaction may be open. Fails when the baseline itself was dropped or
 * changed, or a caller set a PRAGMA that cannot be put back (journal_mode,
 * locking_mode, case_sensitive_like, max_page_count). */
int dbpool__sqlite_session_clear(sqlite3 *db, sqlite_session *s, dbpool_error *e);

/* Whether the authorizer is still this session's: a statement prepared
 * (not run) must call it. About a microsecond; no lock, no I/O. */
bool dbpool__sqlite_session_ours(sqlite3 *db, sqlite_session *s);

void dbpool__sqlite_session_free(sqlite_session *s);

#endif
