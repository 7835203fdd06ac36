/*
 * driver.h — the internal vtable every backend implements, and the result
 * header every backend's result type starts with.
 *
 * Rules for a driver:
 *  - Everything in driver_X.c is static except its `const dbpool_driver`.
 *  - A driver never touches the pool or its lock; the core calls it with no
 *    lock held and one thread per native handle at a time.
 *  - Every function that does I/O takes an absolute deadline on the
 *    monotonic clock (dbpool__now_ns() + budget) and must return by then.
 *  - Errors go into the caller's dbpool_error via dbpool__seterr. Messages
 *    may contain the password (libpq echoes it); the core redacts them with
 *    the strings that `secrets` returns before anything leaves the library.
 */
#ifndef DBPOOL_DRIVER_H
#define DBPOOL_DRIVER_H

#include "dbpool.h"

#include <stdbool.h>
#include <stdint.h>

/* What the core tells a driver about every new connection. */
typedef struct dbpool_connect_settings {
    int64_t connect_timeout_ms;
    int64_t statement_timeout_ms; /* 0 = none */
    bool statement_cache;         /* keep prepared statements (PostgreSQL; the others always do) */
} dbpool_connect_settings;

typedef struct dbpool_result_ops {
    int (*next)(dbpool_result *r, dbpool_error *e);
    int (*columns)(const dbpool_result *r);
    const char *(*column_name)(const dbpool_result *r, int col);
    bool (*is_null)(const dbpool_result *r, int col);
    /* Optional: NULL where cells are text, which the core then reads
     * with strtoll / strtod. */
    int64_t (*int64)(const dbpool_result *r, int col);
    double (*dbl)(const dbpool_result *r, int col);
    const char *(*text)(const dbpool_result *r, int col, size_t *len);
    /* Optional: NULL where a cell's text already is its bytes (len counts
     * them, NULs included). */
    const void *(*blob)(const dbpool_result *r, int col, size_t *len);
    void (*free)(dbpool_result *r);
    /* next and free may do I/O (SQLite steps its statement: file reads
     * and writes, lock waits), where a pthread_cancel could cut them off:
     * the core runs them with cancellation off, unless the driver's
     * cancel_free says the connection's I/O takes care of it. False where
     * the rows are in memory already: those calls reach no cancellation
     * point, and skip the two pthread_setcancelstate calls (about 12 ns a
     * pair). */
    bool steps;
} dbpool_result_ops;

/* Every backend's result struct starts with this. */
struct dbpool_result {
    const dbpool_result_ops *ops;
    dbpool_conn *lease; /* set by the core; used to mark broken leases */
};

typedef struct dbpool_driver {
    const char *name;           /* "sqlite", "postgresql", "mysql", "mock" */
    const char *const *schemes; /* NULL-terminated: "postgresql", "postgres" */

    /* Parse the URL (dbpool's pool_* keys already removed) into a config
     * object. Unknown keys are DBPOOL_EINVAL naming the key. */
    int (*configure)(const char *url, void **cfg, dbpool_error *e);
    void (*free_config)(void *cfg);
    /* NULL-terminated list of strings to scrub from every message (the
     * password, raw and percent-encoded). May return NULL. */
    const char *const *(*secrets)(const void *cfg);

    int (*connect)(const void *cfg, const dbpool_connect_settings *s, int64_t deadline_ns, void **native,
                   dbpool_error *e);
    void (*disconnect)(void *native); /* cannot fail; may be called with a broken handle */

    /* A real round trip bounded by the deadline. */
    int (*ping)(void *native, int64_t deadline_ns, dbpool_error *e);
    /* Local only, no I/O: 0 = clean and reusable as is, 1 = needs reset()
     * (open transaction, pending result), -1 = broken, must be closed. */
    int (*needs_reset)(void *native);
    /* Roll back and clear session state; failure means discard. Sets
     * *session_cleared when the session went back to the server's defaults
     * (mysql_reset_connection, DISCARD ALL): the core then runs init_sql
     * again. */
    int (*reset)(void *native, int64_t deadline_ns, bool *session_cleared, dbpool_error *e);

    /* A caller's statement. deadline_ns 0: unbounded, as the backend's
     * blocking calls are (the pool has no statement_timeout_ms). Otherwise
     * the client-side backstop (design.md#statement-deadlines): by then the
     * call returns DBPOOL_ETIMEDOUT and leaves the connection broken
     * (is_broken says so, and later statements on it fail at once), as
     * exec_bounded does. Rows are fetched in full before query returns. */
    int (*exec)(void *native, const char *sql, const dbpool_param *p, size_t n, int64_t *affected,
                int64_t deadline_ns, dbpool_error *e);
    /* Optional: run the pool's init_sql (no parameters; it may hold
     * several statements, and rows it returns are discarded) and return by
     * the deadline. A time-out is DBPOOL_ETIMEDOUT and leaves the
     * connection broken (the statement may still be running on the
     * server). Without it the core runs init_sql through exec, unbounded. */
    int (*exec_bounded)(void *native, const char *sql, int64_t deadline_ns, dbpool_error *e);
    int (*query)(void *native, const char *sql, const dbpool_param *p, size_t n, dbpool_result **out,
                 int64_t deadline_ns, dbpool_error *e);
    /* Does this error mean the connection can never be used again? */
    bool (*is_broken)(void *native, const dbpool_error *e);
    void (*server_version)(void *native, char *buf, size_t len);
    /* What the user sees of a connection (dbpool_conn_native, after_connect)
     * when the driver keeps more than the library's handle; NULL: native
     * itself. */
    void *(*user_handle)(void *native);
    /* Optional: the pool's init_sql or after_connect has just run; the
     * session as it is now is where every lease starts, so needs_reset must
     * not count what they changed (for drivers that track session changes:
     * MySQL, PostgreSQL, SQLite). Failure fails the connect. */
    int (*session_baseline)(void *native, dbpool_error *e);
    /* Optional: may this SQL text give the session a statement limit other
     * than the one the pool's statement_timeout_ms sets on every
     * connection? It names that setting (PostgreSQL's statement_timeout,
     * MariaDB's max_statement_time, MySQL's max_execution_time) or puts the
     * server's default back (PostgreSQL's RESET ALL, DISCARD ALL). Text
     * only, no I/O, any thread. The core's backstop then stands aside
     * (design.md#statement-deadlines); a false alarm only turns it off.
     * NULL: no text does (SQLite, whose statements have no backstop). */
    bool (*names_statement_limit)(const char *sql);
    /* Optional: does this failed connect's error say the server is at one
     * of its connection limits (PostgreSQL's max_connections, a role's or
     * database's CONNECTION LIMIT; MariaDB's max_connections,
     * max_user_connections)? The server is up and answering: the core
     * retries such a failure but does not count it towards the circuit
     * breaker. NULL: no error does. */
    bool (*at_connection_limit)(const dbpool_error *e);
    /* Optional: do exec, query and the result's next and free reach no
     * cancellation point on this connection now (SQLite through dbpool's
     * VFS, whose system calls run with cancellation off)? The core then
     * leaves the caller's cancellation state alone around them, and saves
     * the pthread_setcancelstate pairs. Local, no I/O, a few nanoseconds:
     * asked at every statement call. NULL: they may (a socket's poll). */
    bool (*cancel_free)(void *native);
} dbpool_driver;

static inline void *dbpool__user_handle(const dbpool_driver *d, void *native) {
    return d->user_handle ? d->user_handle(native) : native;
}

/* The compiled-in drivers, NULL-terminated; and lookup by URL scheme. */
const dbpool_driver *dbpool__driver_for_url(const char *url, dbpool_error *e);

extern const dbpool_driver dbpool__driver_sqlite;
extern const dbpool_driver dbpool__driver_mock;
#ifdef DBPOOL_HAVE_PG
extern const dbpool_driver dbpool__driver_pg;
#endif
#ifdef DBPOOL_HAVE_MYSQL
extern const dbpool_driver dbpool__driver_mysql;
#endif

/* ---- A fully fetched result of text cells, for backends that return whole
 * result sets (PostgreSQL, MySQL). Build it with rowset_new/add, hand it
 * out as a dbpool_result. ---- */
typedef struct dbpool_rowset dbpool_rowset;
dbpool_rowset *dbpool__rowset_new(int ncols);
/* Copies the name. Returns DBPOOL_OK or DBPOOL_ENOMEM. */
int dbpool__rowset_set_column(dbpool_rowset *rs, int col, const char *name);
/* What a column's cells are, for the numeric getters. */
typedef enum {
    DBPOOL_CELL_TEXT = 0, /* read as strtoll / strtod read text */
    DBPOOL_CELL_REAL = 1, /* doubles or decimals as text: "1e+20" is a number, not 1 */
    DBPOOL_CELL_BITS = 2  /* a bit field's bytes, most significant first (MySQL BIT) */
} dbpool_cell_kind;
/* Say what column `col` holds (DBPOOL_CELL_TEXT until set).
 * Returns DBPOOL_OK, DBPOOL_ERANGE or DBPOOL_ENOMEM. */
int dbpool__rowset_set_kind(dbpool_rowset *rs, int col, dbpool_cell_kind kind);
/* Start a new row (all cells NULL until set). */
int dbpool__rowset_add_row(dbpool_rowset *rs);
/* Set a cell of the last added row; `value` NULL = SQL NULL. Copies. */
int dbpool__rowset_set_cell(dbpool_rowset *rs, int col, const char *value, size_t len);
dbpool_result *dbpool__rowset_result(dbpool_rowset *rs);
void dbpool__rowset_free(dbpool_rowset *rs);

#endif
