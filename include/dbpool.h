/*
 * dbpool.h — the public interface of dbpool, a thread-safe database
 * connection pool for SQLite, PostgreSQL and MySQL/MariaDB.
 *
 * Conventions that hold for every function below:
 *  - Errors are negative int codes (DBPOOL_OK == 0). Functions that can fail
 *    take a caller-owned `dbpool_error *` (may be NULL) that receives the
 *    detail. The pool never keeps a "last error" of its own.
 *  - Strings passed in are copied; strings returned are borrowed until the
 *    next call on the same object.
 *  - A `dbpool` is fully thread-safe. A `dbpool_conn` (a lease) and a
 *    `dbpool_result` belong to one thread at a time, from acquire to release.
 *  - No message that crosses this interface contains a password.
 *  - Cancellation (pthread_cancel, deferred): the wait in line of
 *    dbpool_acquire is a cancellation point (a cancelled caller leaves the
 *    line cleanly); every other call runs with cancellation disabled, and
 *    a cancel takes effect after it returns. A lease is not given back when
 *    its thread ends: release it in a cleanup handler. No function is
 *    async-signal-safe or async-cancel-safe. See docs/threading.md.
 */
#ifndef DBPOOL_H
#define DBPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DBPOOL_VERSION_MAJOR 0
#define DBPOOL_VERSION_MINOR 1
#define DBPOOL_VERSION_PATCH 0
#define DBPOOL_VERSION_STRING "0.1.0"

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */
/* ------------------------------------------------------------------------ */

/* X(name, value, description). One table; dbpool_strerror() reads it.
 * No function of this version returns DBPOOL_EVALIDATE: a connection that
 * fails validation is closed and replaced, and the caller never sees it
 * (a failed dbpool_check_health returns the round trip's own error). Nor
 * DBPOOL_ERANGE: the result getters read a column out of range as NULL
 * (0 / 0.0 / NULL), they do not fail. */
#define DBPOOL_ERRNO_MAP(X)                                                                                  \
    X(OK, 0, "success")                                                                                      \
    X(EINVAL, -1, "invalid argument or option")                                                              \
    X(ETIMEDOUT, -2, "timed out")                                                                            \
    X(ECONNECT, -3, "could not connect to the database")                                                     \
    X(ECLOSED, -4, "pool is closed")                                                                         \
    X(EBUSY, -5, "pool busy: no connection free without waiting, max_waiters reached, or suspended")         \
    X(ENOMEM, -6, "out of memory")                                                                           \
    X(EQUERY, -7, "query failed")                                                                            \
    X(ENOTFOUND, -8, "not found: the database, or a pool name in a manager")                                 \
    X(EMISUSE, -9, "API misuse")                                                                             \
    X(EAUTH, -10, "authentication failed")                                                                   \
    X(EUNAVAILABLE, -11, "database unavailable (circuit breaker open)")                                      \
    X(EBROKEN, -12, "connection is broken")                                                                  \
    X(EPERM, -13, "permission denied")                                                                       \
    X(EUNSUPPORTED, -14, "not supported by this build or backend")                                           \
    X(ERANGE, -15, "column index or type out of range")                                                      \
    X(EVALIDATE, -16, "connection failed validation")

typedef enum {
#define DBPOOL_ERRNO_ENUM_(name, value, text) DBPOOL_##name = value,
    DBPOOL_ERRNO_MAP(DBPOOL_ERRNO_ENUM_)
#undef DBPOOL_ERRNO_ENUM_
} dbpool_errno;

/* Detail of a failure, filled by the function that failed. */
typedef struct dbpool_error {
    int code;          /* a DBPOOL_E* code, same as the return value   */
    int native_code;   /* the backend's own code (SQLite result, MySQL errno), or 0 */
    char sqlstate[6];  /* five-character SQLSTATE where the backend has one, else ""; SQLite's
                        * constraint violations get PostgreSQL's (23505 unique, 23503 foreign
                        * key, 23502 not null, 23514 check, else 23000), so a class "23"
                        * prefix means a broken constraint on every backend (Oracle MySQL
                        * 8 reports a failed CHECK as HY000, error 3819). SQLite's other
                        * refusals also as PostgreSQL says them: a trigger's RAISE(ABORT)
                        * P0001, a STRICT column's type refusal 22P02, a commit hook's veto "";
                        * SQLITE_BUSY in a transaction (run it again) 40001, outside one
                        * (busy_timeout ran out) 55P03 */
    char message[512]; /* what went wrong and what to do; never a password; one line of
                        * printable text (a server's line breaks and tabs become spaces, its
                        * other control characters '?'); a longer text (a server's) is cut
                        * to fit on a whole UTF-8 character */
} dbpool_error;

/* The name-free description of a code ("timed out"). Never NULL. */
const char *dbpool_strerror(int code);
/* The enum's name of a code ("DBPOOL_ETIMEDOUT"). Never NULL. */
const char *dbpool_errname(int code);
/* "0.1.0" */
const char *dbpool_version(void);

/* ------------------------------------------------------------------------ */
/* Options                                                                  */
/* ------------------------------------------------------------------------ */

typedef enum {
    DBPOOL_LOG_ERROR = 0,
    DBPOOL_LOG_WARN = 1,
    DBPOOL_LOG_INFO = 2,
    DBPOOL_LOG_DEBUG = 3
} dbpool_log_level;

typedef enum {
    DBPOOL_VALIDATE_NEVER = 0,  /* hand connections out unchecked             */
    DBPOOL_VALIDATE_ALWAYS = 1, /* round trip before every hand-out, except a new
                                   connection's first within validation_window_ms */
    DBPOOL_VALIDATE_IF_IDLE = 2 /* round trip when idle >= validation_window_ms */
} dbpool_validation;

/* Called from any pool thread with a finished, password-free line. */
typedef void (*dbpool_log_fn)(void *user, dbpool_log_level level, const char *message);
/* Called on every new connection after init_sql, with the native handle
 * (sqlite3 *, PGconn *, MYSQL *), and again, after init_sql, when a reset
 * at release cleared the session (MySQL/MariaDB, PostgreSQL's DISCARD
 * ALL). Return 0, or non-zero to reject the connection (it is closed and
 * the connect attempt fails; after a reset, the connection is closed). No
 * deadline bounds it. */
typedef int (*dbpool_after_connect_fn)(void *native, void *user);
/* The lease hooks, at hand-out and at return (before_acquire,
 * after_release): called with the native handle (as after_connect) on the
 * thread of the caller of dbpool_acquire or dbpool_release, without the
 * pool's lock and with cancellation disabled; no deadline bounds them.
 * Return 0 to keep the connection, non-zero to close it. What a hook may
 * call is in docs/threading.md ("Callbacks"): an acquire or a close of the
 * same pool from inside it returns DBPOOL_EMISUSE. */
typedef int (*dbpool_lease_hook_fn)(void *native, void *user);

typedef struct dbpool_options {
    const char *name;              /* pool name for logs and metrics ("default") */
    int min_size;                  /* connections kept open; warmed up by open (0) */
    int max_size;                  /* hard cap on open connections (10) */
    int64_t acquire_timeout_ms;    /* default wait in dbpool_acquire (30000) */
    int64_t connect_timeout_ms;    /* one connect attempt (10000) */
    int64_t idle_timeout_ms;       /* idle connections above min_size closed after (600000); 0 = never */
    int64_t max_lifetime_ms;       /* retired after (1800000; up to 2.5% sooner, jitter); 0 = never */
    int64_t validation_timeout_ms; /* bound on one validation round trip (5000) */
    int max_retries;               /* extra connect attempts after the first (3) */
    int64_t backoff_base_ms;       /* first retry delay, doubled each time (10) */
    int64_t backoff_max_ms;        /* cap on one retry delay (2000) */
    int max_waiters;               /* callers allowed to wait at once; 0 = unlimited */
    dbpool_validation validation;  /* (DBPOOL_VALIDATE_IF_IDLE) */
    int64_t validation_window_ms;  /* for DBPOOL_VALIDATE_IF_IDLE (500) */
    const char *init_sql;          /* run on every new connection (NULL; blank = NULL), within
                                      connect_timeout_ms; and again after a reset that cleared the
                                      session, within validation_timeout_ms */
    dbpool_after_connect_fn after_connect;
    void *after_connect_user;
    dbpool_log_fn log_fn; /* NULL: no logging */
    void *log_user;
    dbpool_log_level log_level;      /* lines above this level are dropped (DBPOOL_LOG_INFO) */
    int64_t statement_timeout_ms;    /* statement timeout (0 = none); PostgreSQL and MySQL: the server's,
                                        and the client gives up (DBPOOL_ETIMEDOUT) at this +
                                        validation_timeout_ms on a server that stopped answering */
    int64_t keepalive_ms;            /* ping idle connections this often (0 = off) */
    int64_t leak_threshold_ms;       /* report leases held longer (0 = off) */
    int64_t maintenance_interval_ms; /* maintenance thread period (1000); 0 = no thread */
    bool lazy_connect;               /* min_size 0: do not open a first connection in dbpool_open (false) */
    int max_connecting;              /* connections opened at once in the background (2) */
    int64_t leak_reclaim_ms;         /* leases held longer stop counting against max_size (0 = never) */
    int breaker_failures;            /* consecutive connect failures that open the breaker (5); 0 = off */
    int64_t breaker_cooldown_ms;     /* open -> half-open after (5000) */
    bool autoscale;                  /* utilisation-driven cap between min_size and max_size (false) */
    double autoscale_high;           /* scale up above this utilisation (0.8) */
    double autoscale_low;            /* scale down below (0.5) */
    double autoscale_step;           /* by this fraction of the cap (0.2) */
    int64_t autoscale_interval_ms;   /* at most once per (60000) */
    bool suspend_fails_fast;   /* while suspended: acquire fails with DBPOOL_EBUSY (true) or waits (false) */
    int64_t barging_window_us; /* a running thread may take a free connection ahead of a waiter who has
                                  waited less than this (50); after it, strict FIFO hand-off. 0 = always
                                  hand off */
    bool thread_cache;         /* a thread's last released connection is kept for its next acquire, taken
                                  back without the pool lock (true); see docs/design.md. Off while
                                  leak_threshold_ms, validation "always" or autoscale is set */
    bool statement_cache;      /* PostgreSQL: parameterised statements are prepared once per connection
                                  and kept (true). Off behind a proxy that cannot keep them (PgBouncer
                                  in transaction mode before 1.21). SQLite and MySQL keep theirs always */
    /* Called before every hand-out (an idle connection, one kept in the
     * thread cache, a new one after after_connect) by dbpool_acquire,
     * dbpool_try_acquire, dbpool_manager_acquire and dbpool_check_health:
     * check or prepare the session for the caller. Non-zero closes the
     * connection (reason "before_acquire") and the acquire goes on to
     * another, within its timeout: the pool's cap's worth at once, then
     * each refusal followed by a wait of backoff_base_ms (doubling up to
     * backoff_max_ms), so a hook that refuses everything ends the acquire
     * at its deadline with DBPOOL_ETIMEDOUT (a caller who does not wait:
     * at once, DBPOOL_EBUSY from dbpool_try_acquire) rather than in a
     * connect storm. Refused hand-outs are not counted as acquires. What
     * it runs on the handle is the lease's: the release resets it as it
     * would the caller's statements. NULL: none */
    dbpool_lease_hook_fn before_acquire;
    void *before_acquire_user;
    /* Called by dbpool_release for a connection about to go back to the
     * pool, after the reset (rollback, session cleared): it sees the
     * session as the next caller would get it, and is not bothered with
     * one that is closed anyway (broken, discarded, expired, a failed
     * reset, the pool closed). Non-zero closes it instead (reason
     * "after_release"): for session state it knows the reset cannot
     * clear. What it runs on the handle stays for the next lease (it runs
     * after the reset). NULL: none */
    dbpool_lease_hook_fn after_release;
    void *after_release_user;
    /* Spare connections kept ready for any caller (0 = none): when the
     * idle list holds fewer (a lease took one), the connector threads open
     * more in the background, up to the cap, so that a burst finds them
     * open (HikariCP's minimumIdle, pgxpool's MinIdleConns). Idle timeout
     * leaves this many, the most recently used. A connection in a thread's
     * cache is that thread's, not a spare. 0 .. max_size; needs the
     * maintenance thread. See docs/configuration.md */
    int min_idle;
} dbpool_options;

/* Fill every field with its default (the values in parentheses above). */
void dbpool_options_init(dbpool_options *o);

/* ------------------------------------------------------------------------ */
/* The pool                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct dbpool dbpool;
typedef struct dbpool_conn dbpool_conn;
typedef struct dbpool_result dbpool_result;

/*
 * Open a pool for `url` (sqlite:..., postgresql://..., mysql://...).
 * `o` may be NULL for defaults. Keys in the URL's query that start with
 * `pool_` (pool_max, pool_min, pool_acquire_timeout, ...) override the
 * matching fields of `o`: the URL is the deployment's configuration.
 * Validates the options (DBPOOL_EINVAL names the field and the value),
 * opens max(min_size, 1) connections (0 with lazy_connect and min_size 0)
 * and fails with the real cause if the database cannot be reached. Starts
 * the maintenance thread unless maintenance_interval_ms is 0 (and the
 * keepalive thread when keepalive_ms is set). On success
 * *out is the pool; on failure *out is NULL.
 */
int dbpool_open(dbpool **out, const char *url, const dbpool_options *o, dbpool_error *err);

/*
 * Close the pool. Idle connections are closed now; every waiter wakes with
 * DBPOOL_ECLOSED; leases still out stay valid and are closed when released;
 * the pool's memory is freed with the last lease. Returns the number of
 * leases still out (>= 0). NULL is a no-op returning 0. A second call on
 * the same pointer returns DBPOOL_EMISUSE and touches nothing (unless a
 * new pool has been given the same address since: docs/threading.md).
 * From a callback running on one of the pool's own threads (a log line of
 * the maintenance, keepalive or a connector thread, which may be another
 * thread's state change: docs/threading.md; after_connect on a connector)
 * it returns DBPOOL_EMISUSE and does nothing: it would have to join that
 * thread. So it does from the pool's own before_acquire or after_release
 * on any thread: it would take back the connection the hook holds.
 * A pool opened by dbpool_manager_open is closed through its manager:
 * dbpool_close of it returns DBPOOL_EMISUSE and does nothing.
 */
int dbpool_close(dbpool *p);

/*
 * Lease a connection, waiting up to timeout_ms (negative: the pool's
 * acquire_timeout_ms; 0: do not wait — an idle connection or one connect
 * on this thread, within connect_timeout_ms, else DBPOOL_ETIMEDOUT at
 * once). Waiters are served first come, first served; new connections are
 * opened for them in the background, and whichever comes first — a
 * released or a new connection — goes to the head of the line. On timeout
 * the error says what the pool looked like, who holds the connections and
 * the last connect error. Returns DBPOOL_OK, DBPOOL_ETIMEDOUT,
 * DBPOOL_EBUSY (max_waiters reached, or suspended), DBPOOL_EUNAVAILABLE
 * (circuit breaker open), DBPOOL_ECLOSED, DBPOOL_EMISUSE (used in a forked
 * child, or from inside the pool's own before_acquire or after_release),
 * or the connect error of a new connection (DBPOOL_ECONNECT, DBPOOL_EAUTH,
 * DBPOOL_ENOTFOUND, ...). With a before_acquire hook, every connection is
 * shown to it before it is handed out, and one it refuses is closed and
 * replaced within the same timeout (see dbpool_options). Thread-safe.
 */
int dbpool_acquire(dbpool *p, int64_t timeout_ms, dbpool_conn **out, dbpool_error *err);

/* dbpool_acquire that never waits in line: an idle connection, a new one if
 * there is room and nobody waits in line (a new connection is theirs), or
 * DBPOOL_EBUSY at once. The new one is opened on this thread, which can
 * take up to connect_timeout_ms; a failed connect returns its error. */
int dbpool_try_acquire(dbpool *p, dbpool_conn **out, dbpool_error *err);

/*
 * Give a lease back. An open transaction is rolled back, and what a
 * statement left in the session (settings, temporary tables, locks: per
 * backend in docs/operations.md) is cleared. A connection whose reset
 * fails, that is broken, or whose lifetime is over is closed instead of
 * pooled. Returns DBPOOL_OK, or DBPOOL_EMISUSE for NULL, a lease released
 * twice, something that is not a lease, or a lease with a result of
 * dbpool_query not yet freed (nothing is touched then: free the results,
 * then release again).
 * Releasing after dbpool_close is valid and frees what is left.
 * The handle is the pooled connection itself: a second release is caught
 * only until the connection is leased again, and not at all once the pool
 * is freed (after dbpool_close, the release of the last lease out frees
 * the pool and every handle with it). After that the stale handle is
 * indistinguishable from the new holder's, or freed memory; set the
 * pointer to NULL after releasing it.
 */
int dbpool_release(dbpool_conn *c);

/* Give a lease back and close it: for a connection the caller knows is
 * broken. Same return values as dbpool_release. */
int dbpool_discard(dbpool_conn *c);

/* The backend's handle: sqlite3 *, PGconn * or MYSQL *. Borrowed for the
 * lease; do not close it (use dbpool_discard). NULL for NULL or a handle
 * that is not a lease (released already), and in a child process after
 * fork() for a lease the parent held: it is the parent's session.
 * The release resets only what it can see of what a caller did on the
 * handle: a transaction, and per backend what docs/operations.md ("Reset
 * on release") lists; what it cannot see ("What a reset does not clear":
 * e.g. PostgreSQL statements run here, SQLite functions and hooks) stays
 * for the next caller. Set those up in after_connect, or dbpool_discard
 * the lease. */
void *dbpool_conn_native(dbpool_conn *c);

/* The backend's name for a pool: "sqlite", "postgresql", "mysql", "mock". */
const char *dbpool_backend(const dbpool *p);
/* The pool's name (options.name). */
const char *dbpool_name(const dbpool *p);

/* Close idle connections until at most target_idle remain. This may go
 * below min_size: maintenance opens the missing ones again at its next
 * pass. Leased connections are never touched, and callers waiting in line
 * get idle connections before any is closed. An idle connection in a
 * keepalive ping at that moment is closed when its ping ends. Returns how
 * many were closed (those included), or a negative error. */
int dbpool_shrink(dbpool *p, int target_idle);

/* Retire every connection the pool has now, and open new ones as needed
 * (after a failover, a rotated password or certificate, a changed search
 * path or schema): idle ones are closed at once, leased ones when they
 * are released (never under their holder), and ones being opened as soon
 * as they are done. min_size is refilled and callers in line are served
 * by new connections. Closes count under DBPOOL_CLOSE_REFRESHED. Returns
 * how many were closed at once, DBPOOL_EINVAL for NULL, DBPOOL_ECLOSED,
 * or DBPOOL_EMISUSE in a forked child (the parent's connections). */
int dbpool_refresh(dbpool *p);

/* Change the sizes at run time (validated as in dbpool_open). A smaller
 * max closes idle connections above it now and leased ones as they come
 * back; a larger min is filled by the maintenance thread. */
int dbpool_resize(dbpool *p, int min_size, int max_size, dbpool_error *err);

/* Stop handing out connections until dbpool_resume: acquire then fails with
 * DBPOOL_EBUSY (suspend_fails_fast, the default) or waits (counting against
 * its timeout). Leases already out are not touched, and no connection is
 * opened (maintenance refills min_size after the resume). */
int dbpool_suspend(dbpool *p);
/* Hand out connections again: those waiting are served first, in order.
 * Both return DBPOOL_OK, or DBPOOL_EINVAL for NULL. */
int dbpool_resume(dbpool *p);

typedef enum {
    DBPOOL_BREAKER_CLOSED = 0,   /* connecting normally */
    DBPOOL_BREAKER_OPEN = 1,     /* new connections refused until the cooldown ends */
    DBPOOL_BREAKER_HALF_OPEN = 2 /* one trial connection in flight */
} dbpool_breaker_state;

/* Close the circuit breaker by hand (after fixing the database). */
void dbpool_breaker_reset(dbpool *p);
/* "closed", "open", "half_open" */
const char *dbpool_breaker_state_name(dbpool_breaker_state s);

/* ------------------------------------------------------------------------ */
/* Queries: one small API over every backend                                */
/* ------------------------------------------------------------------------ */

typedef enum {
    DBPOOL_TYPE_NULL = 0,
    DBPOOL_TYPE_INT64 = 1,
    DBPOOL_TYPE_DOUBLE = 2,
    DBPOOL_TYPE_TEXT = 3,
    DBPOOL_TYPE_BLOB = 4 /* bytes, NULs allowed: SQLite BLOB, PostgreSQL bytea, MySQL BLOB */
} dbpool_type;

/* A bound parameter. Placeholders are written `?` on every backend (the
 * PostgreSQL backend numbers them $1, $2, ... outside quotes). */
typedef struct dbpool_param {
    dbpool_type type;
    union {
        int64_t i64;
        double f64;
        struct {
            const char *ptr; /* need not be NUL-terminated */
            size_t len;
        } text;
        struct {
            const void *ptr; /* NULL (with len 0): SQL NULL */
            size_t len;
        } blob;
    } v;
} dbpool_param;

static inline dbpool_param dbpool_param_null(void) {
    dbpool_param p;
    p.type = DBPOOL_TYPE_NULL;
    p.v.i64 = 0;
    return p;
}
static inline dbpool_param dbpool_param_int64(int64_t v) {
    dbpool_param p;
    p.type = DBPOOL_TYPE_INT64;
    p.v.i64 = v;
    return p;
}
/* NaN and the infinities: PostgreSQL keeps them; SQLite keeps the
 * infinities and binds NaN as NULL (SQLite has no NaN); MySQL/MariaDB have
 * neither, and the statement fails with DBPOOL_EINVAL. */
static inline dbpool_param dbpool_param_double(double v) {
    dbpool_param p;
    p.type = DBPOOL_TYPE_DOUBLE;
    p.v.f64 = v;
    return p;
}
/* `s` NULL gives a NULL parameter. */
dbpool_param dbpool_param_text(const char *s);
/* `len` bytes at `data`, bound as binary (bytea on PostgreSQL), so they
 * may hold NUL bytes and need no escaping. `data` NULL gives a NULL
 * parameter. The bytes are read during the call only. */
static inline dbpool_param dbpool_param_blob(const void *data, size_t len) {
    dbpool_param p;
    if (!data) {
        p.type = DBPOOL_TYPE_NULL;
        p.v.i64 = 0;
        return p;
    }
    p.type = DBPOOL_TYPE_BLOB;
    p.v.blob.ptr = data;
    p.v.blob.len = len;
    return p;
}

/* Run a statement. *affected (may be NULL) receives the rows it inserted,
 * updated or deleted: 0 for DDL (a CREATE TABLE ... AS SELECT and an ALTER
 * TABLE that copies rows too), SELECT, BEGIN and the like (SQLite sums
 * the statements of a multi-statement text, PostgreSQL reports its last
 * one; MySQL/MariaDB report 0 for a statement that returns rows, such as
 * INSERT ... RETURNING). With parameters, the SQL must hold exactly one
 * statement with as many `?`, else DBPOOL_EINVAL. MySQL/MariaDB run one
 * statement per call, with parameters or without: a second is the
 * server's syntax error (DBPOOL_EQUERY). Without parameters, SQL of only
 * white space and semicolons runs nothing (DBPOOL_OK, *affected 0) on
 * every backend. An error that means the connection is broken marks the
 * lease so that it is closed on release. With statement_timeout_ms set,
 * a server that stopped answering is given up on at statement_timeout_ms +
 * validation_timeout_ms: DBPOOL_ETIMEDOUT, and the lease is broken (later
 * statements on it fail at once; release it). In a child process after fork(),
 * a lease the parent held is refused (DBPOOL_EMISUSE): it is the parent's
 * session. */
int dbpool_exec(dbpool_conn *c, const char *sql, const dbpool_param *params, size_t nparams,
                int64_t *affected, dbpool_error *err);

/* Run a query; step through its rows with dbpool_result_next. The SQL
 * holds one statement: several are DBPOOL_EINVAL on SQLite and PostgreSQL
 * (none of them runs), the server's syntax error on MySQL/MariaDB. The result
 * must be freed before the lease is released: dbpool_release and
 * dbpool_discard refuse a lease with a result open (DBPOOL_EMISUSE). Free
 * each result once. SQL of only white space and semicolons is
 * DBPOOL_EINVAL on every backend. The deadline of dbpool_exec applies; on
 * PostgreSQL and MySQL/MariaDB the rows are read in full before it returns,
 * so dbpool_result_next does not wait on the server. DBPOOL_EMISUSE in a forked child, as
 * dbpool_exec; so is dbpool_result_next of a result opened before fork(). */
int dbpool_query(dbpool_conn *c, const char *sql, const dbpool_param *params, size_t nparams,
                 dbpool_result **out, dbpool_error *err);

/* 1: a row is ready; 0: no more rows; negative: an error. */
int dbpool_result_next(dbpool_result *r, dbpool_error *err);
/* Number of columns (0 for NULL). */
int dbpool_result_columns(const dbpool_result *r);
/* Name of column `col` (borrowed: copy it to keep it past the next
 * dbpool_result_next); NULL when out of range, and on SQLite when out of
 * memory. */
const char *dbpool_result_column_name(const dbpool_result *r, int col);
/* true for SQL NULL, and for a column out of range or no current row. */
bool dbpool_result_is_null(const dbpool_result *r, int col);
/* Typed getters convert text to numbers the way strtoll/strtod do (in the
 * "C" locale, as servers write them, whatever LC_NUMERIC says); a
 * boolean reads 1 or 0 on every backend (PostgreSQL's "t" / "f" too); a
 * double or decimal column reads through dbpool_result_int64 as its value
 * truncated toward zero, saturated at INT64_MIN / INT64_MAX (NaN: 0), on
 * every backend (1e20 is INT64_MAX, not the 1 of strtoll("1e+20")); a
 * bit field (MySQL BIT, PostgreSQL bit) reads as its number; a
 * NULL or out-of-range column reads as 0 / 0.0 / NULL. */
int64_t dbpool_result_int64(const dbpool_result *r, int col);
double dbpool_result_double(const dbpool_result *r, int col);
/* Borrowed until the next dbpool_result_next; NULL for SQL NULL, and
 * NULL with *len 0 when out of memory (SQLite converting the cell's
 * text; dbpool_result_is_null tells the two apart). A double's text
 * reads back (strtod) as the same double on every backend (SQLite's own
 * 15 digits are replaced where they do not). */
const char *dbpool_result_text(const dbpool_result *r, int col, size_t *len);
/* The cell's bytes, for binary columns (BLOB, bytea): *len receives
 * their number (len may be NULL, but bytes may hold NULs). PostgreSQL sends bytea as hex text, which
 * this decodes; other columns read as their text. Borrowed until the next
 * dbpool_result_next; NULL for SQL NULL, and NULL with *len 0 when out of
 * memory. */
const void *dbpool_result_blob(const dbpool_result *r, int col, size_t *len);
void dbpool_result_free(dbpool_result *r);

/* ------------------------------------------------------------------------ */
/* Health and statistics                                                    */
/* ------------------------------------------------------------------------ */

typedef enum { DBPOOL_HEALTHY = 0, DBPOOL_UNHEALTHY = 1 } dbpool_health_status;

typedef struct dbpool_health {
    dbpool_health_status status;
    const char *backend;     /* "sqlite", "postgresql", "mysql", "mock" */
    char server_version[64]; /* "3.40.1", "15.18", "10.11.6-MariaDB" */
    double round_trip_ms;    /* one validation round trip */
    double acquire_ms;       /* time to get the connection used */
    dbpool_error error;      /* why, when unhealthy */
} dbpool_health;

/* Acquire (pool default timeout), run one round trip, release. When the
 * acquire validated the connection, that round trip is the check's (it is
 * not made twice). Returns DBPOOL_OK when healthy; out->status says the
 * same either way. Takes at most acquire_timeout_ms +
 * validation_timeout_ms: a new connection is opened within the acquire's
 * wait. */
int dbpool_check_health(dbpool *p, dbpool_health *out, dbpool_error *err);

typedef enum {
    DBPOOL_CLOSE_IDLE_TIMEOUT = 0,
    DBPOOL_CLOSE_LIFETIME,
    DBPOOL_CLOSE_BROKEN,
    DBPOOL_CLOSE_VALIDATION,
    DBPOOL_CLOSE_SHRINK,
    DBPOOL_CLOSE_POOL_CLOSED,
    DBPOOL_CLOSE_DISCARDED,
    DBPOOL_CLOSE_RESET_FAILED,
    DBPOOL_CLOSE_RECLAIMED,      /* a leaked lease, closed when it finally came back */
    DBPOOL_CLOSE_REFRESHED,      /* retired by dbpool_refresh */
    DBPOOL_CLOSE_BEFORE_ACQUIRE, /* the before_acquire hook rejected it at hand-out */
    DBPOOL_CLOSE_AFTER_RELEASE,  /* the after_release hook rejected it at release */
    DBPOOL_CLOSE_REASON_COUNT
} dbpool_close_reason;

/* Name used in JSON and metrics: "idle_timeout", "lifetime", ... */
const char *dbpool_close_reason_name(dbpool_close_reason r);

/* A latency summary from a histogram (milliseconds). */
typedef struct dbpool_latency {
    uint64_t count;
    double mean_ms, p50_ms, p95_ms, p99_ms, max_ms;
} dbpool_latency;

typedef enum {
    DBPOOL_HIST_ACQUIRE = 0, /* time from acquire call to lease */
    DBPOOL_HIST_USE = 1,     /* time from lease to release */
    DBPOOL_HIST_CONNECT = 2, /* time to open a new connection (successful ones) */
    /* A waiting caller was handed a connection: time until it ran again.
     * Part of its acquire wait that no pool size can shorten: the CPUs
     * were busy (or the scheduler slow) when the connection was ready. */
    DBPOOL_HIST_HANDOFF = 3,
    DBPOOL_HIST_COUNT
} dbpool_histogram_kind;

/* The Prometheus buckets, in seconds: 0.0001 ... 30. */
#define DBPOOL_HISTOGRAM_BUCKETS 18
typedef struct dbpool_histogram {
    double upper_bound_s[DBPOOL_HISTOGRAM_BUCKETS]; /* "le" of each bucket */
    uint64_t cumulative[DBPOOL_HISTOGRAM_BUCKETS];  /* observations <= upper_bound_s[i] */
    uint64_t count;                                 /* all observations (the +Inf bucket) */
    double sum_s;
    double max_s;
} dbpool_histogram;

/* A snapshot of one histogram; recording never takes the pool lock, so a
 * snapshot taken during traffic may be off by the observations in flight. */
void dbpool_get_histogram(dbpool *p, dbpool_histogram_kind kind, dbpool_histogram *out);

typedef struct dbpool_stats {
    uint64_t created;   /* connections opened */
    uint64_t reused;    /* hand-outs of an already open connection */
    uint64_t destroyed; /* connections closed, all reasons */
    uint64_t destroyed_by[DBPOOL_CLOSE_REASON_COUNT];
    uint64_t acquired;       /* successful acquires */
    uint64_t timeouts;       /* acquires that timed out */
    uint64_t connect_errors; /* failed connect attempts */
    uint64_t validation_failures;
    uint64_t rollbacks; /* resets on release: a transaction rolled back, session state cleared */
    int idle;           /* including one borrowed for a moment by a keepalive ping */
    int in_use;         /* leased to callers */
    int connecting;
    int waiting;
    int total; /* idle + in_use + connecting */
    /* The most in_use seen since open: at every hand-out under the lock,
     * every dbpool_get_stats, and every lock-holding moment of the thread
     * cache (an ordinary release, a lease leaving the cache, a maintenance
     * pass). Leases through the cache take no lock, so a peak reached and
     * gone through the cache alone between two such moments is missed. */
    int peak_in_use;
    int peak_waiting;
    int min_size;
    int max_size;
    int cap; /* current cap (== max_size unless autoscale) */
    int min_idle;
    bool suspended;
    dbpool_breaker_state breaker;
    uint64_t breaker_opens;      /* times the breaker opened (a failed half-open trial re-opens it) */
    uint64_t breaker_half_opens; /* trials after a cooldown */
    uint64_t breaker_closes;     /* recoveries (a trial succeeded, or a manual reset) */
    uint64_t leaks_detected;     /* leases held past leak_threshold_ms */
    uint64_t leaks_reclaimed;
    int reclaimed_out;  /* reclaimed leases not yet returned (not in total) */
    int thread_cached;  /* connections kept for the thread that released them (thread_cache; in idle or
                           in_use) */
    double utilisation; /* in_use / cap, now */
    double uptime_s;
    dbpool_latency acquire_wait;
    dbpool_latency use_time;
    dbpool_latency connect_time;
    dbpool_latency handoff_delay; /* see DBPOOL_HIST_HANDOFF */
} dbpool_stats;

/* A consistent snapshot of the counters and gauges, taken under the pool's
 * lock; the latency summaries come from the histograms. */
void dbpool_get_stats(dbpool *p, dbpool_stats *out);

/* The stats as one JSON object, and as Prometheus text format 0.0.4
 * (metric names in docs/metrics.md). Returns the length the full text needs
 * (excluding the NUL), or a negative error, like snprintf; the text is in
 * buf only when that length is < len. Unlike snprintf, a text that does not
 * fit is not cut: buf holds "" (a cut document would parse as a smaller
 * one). A pool in use changes between two calls, so a buffer sized by a
 * first call (buf NULL, len 0) can be short for the second: give some slack
 * and call again with a larger buffer while the result is >= len. */
int dbpool_stats_json(dbpool *p, char *buf, size_t len);
int dbpool_stats_prometheus(dbpool *p, char *buf, size_t len);

/* ------------------------------------------------------------------------ */
/* A manager of several named pools                                         */
/* ------------------------------------------------------------------------ */

/* For applications that talk to several databases (or one database with
 * pools of different sizes): open, find and close pools by name, and read
 * all their statistics at once. Thread-safe. */
typedef struct dbpool_manager dbpool_manager;

/* DBPOOL_OK, DBPOOL_EINVAL (out NULL) or DBPOOL_ENOMEM. */
int dbpool_manager_new(dbpool_manager **out);
/* Open a pool under `name` (copied; it also becomes the pool's name in logs
 * and metrics, replacing o->name). DBPOOL_EINVAL when the name is taken or
 * empty, or when the URL's pool_name key names it otherwise; else the
 * errors of dbpool_open. */
int dbpool_manager_open(dbpool_manager *m, const char *name, const char *url, const dbpool_options *o,
                        dbpool_error *err);
/* The pool named `name`, or NULL. Borrowed: valid until that pool is closed
 * through the manager, which callers must not do while others use it
 * (threads that may race a close lease through dbpool_manager_acquire, and
 * read statistics through dbpool_manager_pool_stats,
 * dbpool_manager_stats_json or dbpool_manager_stats_prometheus).
 * Close it with dbpool_manager_close_pool, not dbpool_close (which refuses
 * it with DBPOOL_EMISUSE). In a child process after fork() the parent's
 * pools are not handed out (NULL), counted, listed or rendered, and
 * dbpool_manager_acquire of one returns DBPOOL_EMISUSE; closing them by
 * name or freeing the manager there touches none of their connections. */
dbpool *dbpool_manager_get(dbpool_manager *m, const char *name);
/* Lease a connection of the pool named `name`, as dbpool_acquire: the way
 * for threads that look a pool up while another may close it (a server
 * serving each request from a pool by name, with pools closed or reopened
 * at a reload). The lookup and the acquire are one step: a pool closed by
 * dbpool_manager_close_pool meanwhile gives DBPOOL_ECLOSED, never freed
 * memory, and the lease is valid after the close (release it as usual).
 * Returns what dbpool_acquire returns, DBPOOL_ENOTFOUND when no pool of
 * that name is open (or its open is still running), DBPOOL_EINVAL for a
 * NULL argument. */
int dbpool_manager_acquire(dbpool_manager *m, const char *name, int64_t timeout_ms, dbpool_conn **out,
                           dbpool_error *err);
/* Close one pool (as dbpool_close; leases still out stay valid) and return
 * DBPOOL_OK. DBPOOL_ENOTFOUND for an unknown name;
 * DBPOOL_EMISUSE, the pool left open and in the manager, from a callback
 * on one of that pool's own threads (see dbpool_close). */
int dbpool_manager_close_pool(dbpool_manager *m, const char *name);
/* Number of pools, and the name of the i-th (order of opening; NULL when i
 * is out of range). The name is borrowed from the manager and stays valid
 * until dbpool_manager_free, even after that pool is closed (a thread may
 * list the pools while another closes one); indexes shift after a close. */
int dbpool_manager_count(dbpool_manager *m);
const char *dbpool_manager_name(dbpool_manager *m, int i);
/* {"pools": {"<name>": <dbpool_stats_json>, ...}}, returned and sized as
 * dbpool_stats_json (never a cut document). In a child process after
 * fork() the parent's pools are left out. */
int dbpool_manager_stats_json(dbpool_manager *m, char *buf, size_t len);
/* Every pool's dbpool_stats_prometheus as one text of format 0.0.4, each
 * metric family once with the samples of every pool (told apart by their
 * pool="<name>" label): what a /metrics endpoint serves. Returned and
 * sized as dbpool_stats_prometheus (never a cut text; "" for no pools).
 * In a child process after fork() the parent's pools are left out. */
int dbpool_manager_stats_prometheus(dbpool_manager *m, char *buf, size_t len);
/* The statistics of the pool named `name`, as dbpool_get_stats: DBPOOL_OK,
 * DBPOOL_ENOTFOUND (*out zeroed) when no pool of that name is open, or
 * DBPOOL_EINVAL for a NULL argument. The manager's calls read a pool under
 * the manager's lock, so a dbpool_manager_close_pool of it on another
 * thread waits for them; the dbpool_get_stats, dbpool_stats_json, ... of
 * a pointer from dbpool_manager_get racing such a close read freed
 * memory. */
int dbpool_manager_pool_stats(dbpool_manager *m, const char *name, dbpool_stats *out);
/* Close every pool (as dbpool_close), free the manager and return
 * DBPOOL_OK; NULL is a no-op. DBPOOL_EMISUSE, nothing closed and the
 * manager kept, from a callback on one of its pools' own threads (see
 * dbpool_close): free it from another thread; and while a
 * dbpool_manager_open of it is still running on another thread: free it
 * once that has returned; and for a manager freed already (as a second
 * dbpool_close). No other call on the manager may start during or after
 * its free (it would use the freed manager: stop your threads first); a
 * dbpool_manager_acquire already waiting for a connection when the free
 * begins touches only its pool, and is answered DBPOOL_ECLOSED as by
 * dbpool_close. A callback that the closes run (log_fn, on this thread or
 * on a pool's thread being joined) may call the manager: it shows no pool
 * by then. A lease released after the free still logs through log_fn,
 * which must not call the manager any more. */
int dbpool_manager_free(dbpool_manager *m);

#ifdef __cplusplus
}
#endif
#endif /* DBPOOL_H */
