/*
 * sqlite_vfs.h — the two VFSes dbpool opens its SQLite databases through:
 * "dbpool-unix" for files and "dbpool-memdb" for sqlite::memory:. Both
 * are SQLite's own (the Unix VFS, memdb) with two changes: a lock wait
 * sleeps the whole time SQLite asked for, whatever signals arrive, and
 * every call that may reach a cancellation point (file I/O, sleeps,
 * randomness) runs with the calling thread's cancellation disabled. A
 * statement on such a connection then reaches no cancellation point of its
 * own, and the core need not disable cancellation around every statement
 * call (two pthread_setcancelstate calls, about 12 ns, three times a
 * statement). sqlite_vfs.c says why each change is there.
 */
#ifndef DBPOOL_SQLITE_VFS_H
#define DBPOOL_SQLITE_VFS_H

#include <sqlite3.h>
#include <stdbool.h>

/* The names a memory database of a pool is opened by start with this
 * (after "file:"): dbpool-memdb gives memdb these, and the Unix VFS every
 * other path (an ATTACHed file). */
#define DBPOOL_MEMDB_PREFIX "/dbpool-memdb-"

/* The VFS for a file database: "dbpool-unix", or NULL (the default VFS,
 * when the default is not SQLite's Unix VFS: an application's own is left
 * alone). */
const char *dbpool__sqlite_file_vfs(void);

/* The VFS for sqlite::memory:: "dbpool-memdb", or "memdb". */
const char *dbpool__sqlite_memory_vfs(void);

/* Is db's main database opened through one of the two, so that its
 * statements reach no cancellation point but in the caller's own
 * callbacks (functions or hooks set on the native handle)? */
bool dbpool__sqlite_vfs_cancel_free(sqlite3 *db);

#endif
