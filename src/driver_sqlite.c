/*
 * driver_sqlite.c — the embedded SQLite backend.
 *
 * URLs: sqlite:relative/path.db, sqlite:///abs/path.db, sqlite::memory:
 * Keys: journal_mode, synchronous, busy_timeout, foreign_keys, mode,
 * create_if_missing.
 *
 * sqlite::memory: is one database shared by every connection of the pool.
 * Plain ":memory:" would give each connection its own empty database, and
 * shared-cache mode has table-level locks that ignore busy_timeout, so we
 * use SQLite's "memdb" VFS (as "dbpool-memdb": sqlite_vfs.c) with a name unique
 * to the pool (normal locking, busy timeout honoured). The config holds one extra connection to it, so the
 * database lives exactly as long as the pool even when every pooled
 * connection has been closed.
 */
#include "driver.h"
#include "internal.h"
#include "sqlite_session.h"
#include "sqlite_vfs.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct sqlite_cfg {
    char *path; /* file path, or the memdb URI */
    bool memory;
    int open_flags;
    char journal_mode[16]; /* "" = leave as is */
    char synchronous[16];  /* "" = normal on a WAL database, else SQLite's default */
    int64_t busy_timeout_ms;
    bool foreign_keys;
    sqlite3 *anchor; /* memory databases: keeps the database alive */
} sqlite_cfg;

static const char *const sqlite_schemes[] = {"sqlite", "sqlite3", NULL};

/* The memdb VFS's default size limit (SQLITE_MEMDB_DEFAULT_MAXSIZE), and
 * one far beyond any memory (2^48 bytes; SQLite's own page limits end
 * below it). */
#define MEMDB_DEFAULT_MAXSIZE ((sqlite3_int64)1073741824)
#define MEMDB_UNLIMITED ((sqlite3_int64)1 << 48)

static int map_open_error(int src, const char *path, bool may_create, sqlite3 *db, dbpool_error *e) {
    const char *msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(src);
    int code = DBPOOL_ECONNECT;
    char hint[320] = "";
    if ((src & 0xff) == SQLITE_CANTOPEN) {
        /* Say which part of the path is wrong: SQLite only says "unable to
         * open database file". */
        char dir[PATH_MAX];
        dbpool__strlcpy(dir, path, sizeof dir);
        char *slash = strrchr(dir, '/');
        if (slash && slash != dir)
            *slash = '\0';
        else if (slash)
            dir[1] = '\0';
        else
            dbpool__strlcpy(dir, ".", sizeof dir);
        /* The file itself first: when it exists, its own kind and mode
         * are the cause, whatever the directory allows. */
        struct stat st;
        bool exists = stat(path, &st) == 0;
        /* SQLite refuses a path whose -journal file's name would be
         * longer than its VFS takes (512 bytes on Unix), whatever the
         * system allows: no retry shortens it. */
        sqlite3_vfs *vfs = sqlite3_vfs_find(NULL);
        int longest = vfs ? vfs->mxPathname - 8 : INT_MAX;
        if (strlen(path) > (size_t)longest)
            snprintf(hint, sizeof hint,
                     " (the path is %zu bytes long, and SQLite opens paths of up to %d: use a shorter one, "
                     "such as a symbolic link to the directory)",
                     strlen(path), longest),
                code = DBPOOL_EINVAL;
        else if (exists && S_ISDIR(st.st_mode))
            snprintf(hint, sizeof hint, " ('%.200s' is a directory: give the path of a database file)", path),
                code = DBPOOL_EINVAL; /* no retry makes it a file */
        else if (!exists && !may_create)
            snprintf(hint, sizeof hint, " ('%.200s' does not exist and the URL forbids creating it)", path),
                code = DBPOOL_ENOTFOUND;
        else if (exists && access(path, R_OK) != 0)
            snprintf(hint, sizeof hint, " (permission denied on '%.200s')", path), code = DBPOOL_EPERM;
        else if (stat(dir, &st) != 0)
            snprintf(hint, sizeof hint, " (directory '%.200s' does not exist: create it or fix the path)",
                     dir);
        else if (!S_ISDIR(st.st_mode))
            snprintf(hint, sizeof hint, " ('%.200s' is not a directory)", dir);
        else if (access(dir, W_OK | X_OK) != 0)
            snprintf(hint, sizeof hint, " (permission denied on directory '%.200s')", dir),
                code = DBPOOL_EPERM;
    } else if ((src & 0xff) == SQLITE_NOTADB) {
        code = DBPOOL_ENOTFOUND; /* no database there, and no retry makes one */
        snprintf(hint, sizeof hint, " (the file is not an SQLite database)");
    } else if ((src & 0xff) == SQLITE_NOMEM) {
        code = DBPOOL_ENOMEM;
    }
    dbpool__seterr(e, code, "cannot open SQLite database '%.200s': %s%s", path, msg, hint);
    if (e)
        e->native_code = src;
    return code;
}

/* SQLite has no SQLSTATE. Its constraint violations get the codes
 * PostgreSQL reports for the same violation (class 23 in the standard), so
 * that a caller can tell "this row breaks a rule" from other failures the
 * same way on every backend; MySQL/MariaDB report 23000 for all of them.
 * What SQLite files under SQLITE_CONSTRAINT but is no broken table rule
 * gets what PostgreSQL says for its like, or nothing. */
static const char *constraint_sqlstate(int ext) {
    switch (ext) {
    case SQLITE_CONSTRAINT_TRIGGER:
        return "P0001";           /* RAISE(ABORT, ...) in a trigger: raise_exception */
#ifdef SQLITE_CONSTRAINT_DATATYPE /* SQLite 3.37 */
    case SQLITE_CONSTRAINT_DATATYPE:
        return "22P02"; /* a STRICT table's column refused the value's type */
#endif
    case SQLITE_CONSTRAINT_COMMITHOOK:
        return ""; /* the application's own commit hook said no */
    case SQLITE_CONSTRAINT_UNIQUE:
    case SQLITE_CONSTRAINT_PRIMARYKEY:
    case SQLITE_CONSTRAINT_ROWID:
        return "23505"; /* unique_violation */
    case SQLITE_CONSTRAINT_FOREIGNKEY:
        return "23503"; /* foreign_key_violation */
    case SQLITE_CONSTRAINT_NOTNULL:
        return "23502"; /* not_null_violation */
    case SQLITE_CONSTRAINT_CHECK:
        return "23514"; /* check_violation */
    default:
        return "23000"; /* integrity_constraint_violation */
    }
}

/* SQLite's "database is locked" says neither why nor what to do, and
 * which it is decides whether trying the statement again can help. A
 * transaction that read and then could not write (another connection
 * wrote since its snapshot: SQLITE_BUSY_SNAPSHOT; or, in rollback-journal
 * mode, two deferred transactions that both want to write, which SQLite
 * answers at once instead of waiting) must be rolled back and run again:
 * SQLSTATE 40001 (serialization_failure), as PostgreSQL and MySQL report
 * theirs. Outside a transaction, the statement waited busy_timeout for
 * another connection's lock: 55P03 (lock_not_available), as PostgreSQL's
 * lock_timeout. The message keeps SQLite's words and adds what to do. */
static void busy_advice(sqlite3 *db, int ext, char *hint, size_t cap, const char **sqlstate) {
    long long ms = -1;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "PRAGMA busy_timeout", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        ms = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (ext == SQLITE_BUSY_SNAPSHOT) {
        *sqlstate = "40001";
        snprintf(hint, cap,
                 " (another connection wrote to the database after this transaction read it, so this one "
                 "cannot write: roll the transaction back and run it again; a transaction that will write "
                 "should begin with BEGIN IMMEDIATE, which takes the write lock before it reads)");
    } else if (!sqlite3_get_autocommit(db)) {
        *sqlstate = "40001";
        snprintf(hint, cap,
                 " (this transaction could not take a lock another connection holds, within busy_timeout "
                 "(%lld ms), or at once where waiting could not help: roll the transaction back and run it "
                 "again; a transaction that will write should begin with BEGIN IMMEDIATE)",
                 ms);
    } else {
        *sqlstate = "55P03";
        snprintf(hint, cap,
                 " (another connection held the lock for longer than busy_timeout (%lld ms): try again, "
                 "keep write transactions short, or raise busy_timeout in the URL)",
                 ms);
    }
}

/* SQLITE_READONLY_DBMOVED reads "attempt to write a readonly database",
 * as if permissions were wrong: the file was renamed or deleted under the
 * connection, which is closed at release (sqlite_is_broken). */
static void moved_advice(sqlite3 *db, char *hint, size_t cap) {
    const char *file = sqlite3_db_filename(db, "main");
    snprintf(
        hint, cap,
        " (the database file '%.200s' was renamed, replaced or deleted since this connection opened it; "
        "nothing was written: the connection is closed at release, and the next one opens the file now at "
        "that path)",
        file ? file : "");
}

static int set_query_error(sqlite3 *db, int src, const char *what, dbpool_error *e) {
    int ext = db ? sqlite3_extended_errcode(db) : src;
    char msg[sizeof e->message];
    dbpool__strlcpy(msg, db ? sqlite3_errmsg(db) : sqlite3_errstr(src), sizeof msg);
    char hint[320] = "";
    const char *sqlstate = NULL;
    if (db && (ext & 0xff) == SQLITE_BUSY)
        busy_advice(db, ext, hint, sizeof hint, &sqlstate);
    else if (db && ext == SQLITE_READONLY_DBMOVED)
        moved_advice(db, hint, sizeof hint);
    dbpool__seterr(e, (src & 0xff) == SQLITE_NOMEM ? DBPOOL_ENOMEM : DBPOOL_EQUERY, "%s: %s%s", what, msg,
                   hint);
    if (e) {
        e->native_code = ext;
        if ((ext & 0xff) == SQLITE_CONSTRAINT)
            sqlstate = constraint_sqlstate(ext);
        if (sqlstate)
            dbpool__strlcpy(e->sqlstate, sqlstate, sizeof e->sqlstate);
    }
    return e ? e->code : DBPOOL_EQUERY;
}

/* ---- configuration ---- */

static bool one_of(const char *v, const char *const *allowed, char *out, size_t cap) {
    for (size_t i = 0; allowed[i]; i++)
        if (strcasecmp(v, allowed[i]) == 0) {
            dbpool__strlcpy(out, allowed[i], cap);
            return true;
        }
    return false;
}

static void sqlite_free_config(void *p) {
    sqlite_cfg *c = p;
    if (!c)
        return;
    if (c->anchor)
        sqlite3_close_v2(c->anchor);
    free(c->path);
    free(c);
}

static int sqlite_configure(const char *url, void **out, dbpool_error *e) {
    *out = NULL;
    char *base;
    dbpool_kv *kv;
    size_t n;
    int rc = dbpool__url_query(url, &base, &kv, &n, e);
    if (rc != DBPOOL_OK)
        return rc;
    sqlite_cfg *c = calloc(1, sizeof *c);
    if (!c) {
        free(base);
        dbpool__kv_free(kv, n);
        return dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory");
    }
    c->busy_timeout_ms = 5000;
    c->foreign_keys = true;
    int mode = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    bool journal_set = false, no_create = false, mode_given = false;

    const char *rest = strchr(base, ':') + 1; /* the registry matched "sqlite:" */
    if (strncmp(rest, "//", 2) == 0)
        rest += 2; /* sqlite:///abs -> /abs ; sqlite://rel -> rel */
    if (strcmp(rest, ":memory:") == 0) {
        c->memory = true;
    } else if (!*rest) {
        rc = dbpool__seterr(e, DBPOOL_EINVAL,
                            "SQLite URL has no path: write sqlite:path/to/file.db, "
                            "sqlite:///abs/path.db or sqlite::memory:");
    } else {
        char *decoded = dbpool__pct_decode(rest, strlen(rest));
        if (!decoded) {
            rc = dbpool__pct_decode_error(rest, strlen(rest), "bad percent-escape in the SQLite path", e);
        } else if (strcmp(decoded, ":memory:") == 0) {
            c->memory = true; /* written percent-encoded: the same database */
            free(decoded);
            decoded = NULL;
        } else if (strncmp(decoded, "file:", 5) == 0) {
            /* SQLite (built with SQLITE_USE_URI, as Debian's is) would read
             * "file:..." as a URI with parameters of its own: a path is a
             * path. */
            char *plain = malloc(strlen(decoded) + 3);
            if (plain)
                snprintf(plain, strlen(decoded) + 3, "./%s", decoded);
            else
                rc = dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory");
            free(decoded);
            decoded = plain;
        }
        /* A relative path is relative to the working directory of now:
         * opened as given, every reconnect after a chdir() would open (and
         * create) another, empty, database. */
        char cwd[PATH_MAX];
        if (decoded && decoded[0] != '/' && !getcwd(cwd, sizeof cwd)) {
            /* Kept relative, it would name another file after a chdir(). */
            rc = dbpool__seterr(e, DBPOOL_EINVAL,
                                "the SQLite path is relative and the working directory cannot be read (%s): "
                                "give an absolute path",
                                strerror(errno));
            free(decoded);
            decoded = NULL;
        } else if (decoded && decoded[0] != '/') {
            size_t need = strlen(cwd) + strlen(decoded) + 2;
            char *abs = malloc(need);
            if (abs)
                snprintf(abs, need, "%s%s%s", cwd, strcmp(cwd, "/") == 0 ? "" : "/", decoded);
            else
                rc = dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory");
            free(decoded);
            decoded = abs;
        }
        c->path = decoded;
    }

    static const char *const journals[] = {"delete", "truncate", "persist", "memory", "wal", "off", NULL};
    static const char *const syncs[] = {"off", "normal", "full", "extra", NULL};
    for (size_t i = 0; rc == DBPOOL_OK && i < n; i++) {
        const char *k = kv[i].key, *v = kv[i].value;
        int64_t num;
        bool b;
        if (strcmp(k, "journal_mode") == 0) {
            /* "unchanged": the file keeps the mode it has (the journal mode
             * is written into the database file; a reader such as a health
             * check must not change it). */
            if (strcasecmp(v, "unchanged") == 0)
                c->journal_mode[0] = '\0';
            else if (!one_of(v, journals, c->journal_mode, sizeof c->journal_mode))
                rc = dbpool__seterr(e, DBPOOL_EINVAL,
                                    "SQLite key journal_mode: '%.32s' is not one of delete, truncate, "
                                    "persist, memory, wal, off, unchanged",
                                    v);
            journal_set = true;
        } else if (strcmp(k, "synchronous") == 0) {
            if (!one_of(v, syncs, c->synchronous, sizeof c->synchronous))
                rc = dbpool__seterr(e, DBPOOL_EINVAL,
                                    "SQLite key synchronous: '%.32s' is not one of off, normal, full, extra",
                                    v);
        } else if (strcmp(k, "busy_timeout") == 0) {
            if (!dbpool__parse_i64(v, 0, INT_MAX, &num))
                rc = dbpool__seterr(e, DBPOOL_EINVAL,
                                    "SQLite key busy_timeout: '%.32s' is not a number of milliseconds from 0 "
                                    "to 2147483647",
                                    v);
            c->busy_timeout_ms = num;
        } else if (strcmp(k, "foreign_keys") == 0) {
            if (!dbpool__parse_bool(v, &b))
                rc = dbpool__seterr(
                    e, DBPOOL_EINVAL,
                    "SQLite key foreign_keys: '%.32s' is not on or off (or true, false, yes, no, 1, 0)", v);
            c->foreign_keys = b;
        } else if (strcmp(k, "mode") == 0) {
            mode_given = true;
            if (strcasecmp(v, "ro") == 0)
                mode = SQLITE_OPEN_READONLY;
            else if (strcasecmp(v, "rw") == 0)
                mode = SQLITE_OPEN_READWRITE;
            else if (strcasecmp(v, "rwc") == 0)
                mode = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
            else
                rc =
                    dbpool__seterr(e, DBPOOL_EINVAL, "SQLite key mode: '%.32s' is not one of ro, rw, rwc", v);
        } else if (strcmp(k, "create_if_missing") == 0) {
            if (!dbpool__parse_bool(v, &b))
                rc = dbpool__seterr(e, DBPOOL_EINVAL,
                                    "SQLite key create_if_missing: '%.32s' is not true or false", v);
            else
                no_create = !b; /* applied after every key: mode=rwc does not undo it */
        } else {
            rc = dbpool__seterr(e, DBPOOL_EINVAL,
                                "unknown SQLite URL key '%.64s' (known: journal_mode, synchronous, "
                                "busy_timeout, foreign_keys, mode, create_if_missing, and pool_* keys)",
                                k);
        }
    }
    free(base);
    dbpool__kv_free(kv, n);
    if (no_create)
        mode &= ~SQLITE_OPEN_CREATE;
    if (rc == DBPOOL_OK && c->memory && (mode_given || no_create) &&
        mode != (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE))
        rc = dbpool__seterr(e, DBPOOL_EINVAL,
                            "sqlite::memory: is always read-write and made by the pool: leave out mode= and "
                            "create_if_missing=");
    if (rc == DBPOOL_OK && !journal_set && (mode & SQLITE_OPEN_READONLY))
        journal_set = true; /* read-only: cannot change the journal */
    if (rc == DBPOOL_OK && !journal_set && !c->memory)
        dbpool__strlcpy(c->journal_mode, "wal", sizeof c->journal_mode);
    /* One thread per connection at a time (the pool guarantees it): no
     * per-connection mutex needed. */
    c->open_flags = mode | SQLITE_OPEN_NOMUTEX;

    if (rc == DBPOOL_OK && c->memory) {
        static atomic_uint_fast64_t counter;
        char name[96];
        snprintf(name, sizeof name, "file:" DBPOOL_MEMDB_PREFIX "%ld-%llu?vfs=%s", (long)getpid(),
                 (unsigned long long)atomic_fetch_add(&counter, 1), dbpool__sqlite_memory_vfs());
        c->path = dbpool__strdup(name);
        c->open_flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX;
        if (!c->path) {
            rc = dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory");
        } else {
            int src = sqlite3_open_v2(c->path, &c->anchor, c->open_flags, NULL);
            if (src != SQLITE_OK) {
                rc = map_open_error(src, ":memory:", true, c->anchor, e);
            } else {
                /* memdb caps a database at SQLITE_MEMDB_DEFAULT_MAXSIZE (1
                 * GiB) unless told otherwise; plain :memory: has no cap
                 * but memory, and neither has ours. A cap the application
                 * set itself (SQLITE_CONFIG_MEMDB_MAXSIZE) stays. */
                sqlite3_int64 limit = -1;
                if (sqlite3_file_control(c->anchor, "main", SQLITE_FCNTL_SIZE_LIMIT, &limit) == SQLITE_OK &&
                    limit == MEMDB_DEFAULT_MAXSIZE) {
                    limit = MEMDB_UNLIMITED;
                    sqlite3_file_control(c->anchor, "main", SQLITE_FCNTL_SIZE_LIMIT, &limit);
                }
            }
        }
    } else if (rc == DBPOOL_OK && !(mode & SQLITE_OPEN_CREATE)) {
        /* Name what the URL said: create_if_missing=false wins over any
         * mode=, so "use mode=rwc" would not help a URL that has both. */
        if (access(c->path, F_OK) != 0 && no_create)
            rc = dbpool__seterr(e, DBPOOL_ENOTFOUND,
                                "SQLite database '%.300s' does not exist and the URL forbids creating it "
                                "(create_if_missing=false): create it first or leave out "
                                "create_if_missing=false",
                                c->path);
        else if (access(c->path, F_OK) != 0)
            rc = dbpool__seterr(e, DBPOOL_ENOTFOUND,
                                "SQLite database '%.300s' does not exist and the URL forbids creating it "
                                "(mode=%s): create it first or use mode=rwc",
                                c->path, (mode & SQLITE_OPEN_READONLY) ? "ro" : "rw");
    }
    if (rc != DBPOOL_OK) {
        sqlite_free_config(c);
        return rc;
    }
    *out = c;
    return DBPOOL_OK;
}

/* ---- the prepared-statement cache ----
 *
 * Preparing is most of the cost of a short statement (SELECT 1: about
 * 85 % of prepare + step + finalize). Each connection keeps its last
 * STMT_CACHE_SLOTS single statements, prepared with
 * SQLITE_PREPARE_PERSISTENT and keyed by their exact text. A statement
 * handed back is reset and its bindings cleared, so it holds no lock and
 * no copy of a parameter. SQLite re-prepares a statement by itself when the
 * schema (or a setting compiled into it) changes; if that re-prepare fails
 * (the table is gone), the error comes from the step: dbpool_exec, or
 * dbpool_query, which takes the first step itself.
 *
 * The driver's handle is a small struct holding the sqlite3 * and its
 * cache (made at the first statement, so a pooled connection that runs
 * none does not pay for it); dbpool_conn_native and after_connect get the
 * plain sqlite3 * (user_handle). Everything in a cache belongs to the one
 * thread that holds the connection, like the handle itself.
 */
#define STMT_CACHE_SLOTS 16
#define STMT_CACHE_MAX_SQL 4096 /* longer statements are not kept */

typedef struct cached_stmt cached_stmt;
typedef struct stmt_cache stmt_cache;

typedef struct sqlite_result {
    struct dbpool_result base;
    sqlite3_stmt *st;
    cached_stmt *slot; /* the cache entry it lends; NULL = owns st and itself */
    bool done;
    bool has_row;
    bool primed;     /* the first step was taken by sqlite_query: its outcome is next's first answer */
    bool primed_row; /* ... and it was a row */
    char *reals;     /* nreals buffers of REAL_TEXT bytes: REAL cells as text (real_text) */
    int nreals;
    struct blob_text *blob_texts; /* nblob_texts: BLOB cells as text (blob_text) */
    int nblob_texts;
} sqlite_result;

struct cached_stmt {
    sqlite_result res; /* handed out while in use: a cache hit allocates nothing */
    stmt_cache *cache;
    sqlite3_stmt *st; /* NULL = empty */
    char *sql;
    size_t len;
    uint64_t hash;
    uint64_t used; /* for least-recently-used eviction */
    bool in_use;
    bool has_params; /* its placeholders (the same after a re-prepare: same text) */
};

struct stmt_cache {
    uint64_t tick;
    int lent;      /* entries in use by a result */
    bool orphaned; /* the connection closed while results were out */
    cached_stmt slot[STMT_CACHE_SLOTS];
};

/* The driver's handle for one connection. */
/* The handle's own settings a caller can change only through the native
 * handle (sqlite3_limit, sqlite3_db_config), with no statement the
 * authorizer would see: compared with the baseline at the release of a
 * lease that took the handle, and put back. Changed, one stays for every
 * later caller: a lowered SQLITE_LIMIT_LENGTH fails its statements, load
 * extensions enabled let its SQL load_extension(), foreign keys or
 * triggers turned off let its rows through. */
#define HANDLE_LIMITS (SQLITE_LIMIT_WORKER_THREADS + 1)
static const int handle_flags[] = {
    SQLITE_DBCONFIG_ENABLE_FKEY,
    SQLITE_DBCONFIG_ENABLE_TRIGGER,
    SQLITE_DBCONFIG_ENABLE_FTS3_TOKENIZER,
    SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION,
    SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
    SQLITE_DBCONFIG_ENABLE_QPSG,
    SQLITE_DBCONFIG_TRIGGER_EQP,
    SQLITE_DBCONFIG_DEFENSIVE,
    SQLITE_DBCONFIG_WRITABLE_SCHEMA,
    SQLITE_DBCONFIG_LEGACY_ALTER_TABLE,
    SQLITE_DBCONFIG_DQS_DML,
    SQLITE_DBCONFIG_DQS_DDL,
#ifdef SQLITE_DBCONFIG_ENABLE_VIEW
    SQLITE_DBCONFIG_ENABLE_VIEW,
#endif
#ifdef SQLITE_DBCONFIG_LEGACY_FILE_FORMAT
    SQLITE_DBCONFIG_LEGACY_FILE_FORMAT,
#endif
#ifdef SQLITE_DBCONFIG_TRUSTED_SCHEMA
    SQLITE_DBCONFIG_TRUSTED_SCHEMA,
#endif
#ifdef SQLITE_DBCONFIG_STMT_SCANSTATUS
    SQLITE_DBCONFIG_STMT_SCANSTATUS,
#endif
#ifdef SQLITE_DBCONFIG_REVERSE_SCANORDER
    SQLITE_DBCONFIG_REVERSE_SCANORDER,
#endif
};
#define HANDLE_FLAGS (sizeof handle_flags / sizeof handle_flags[0])

typedef struct handle_settings {
    int limit[HANDLE_LIMITS];
    uint32_t flags; /* bit i: handle_flags[i] on */
} handle_settings;

typedef struct sqlite_conn {
    sqlite3 *db;
    stmt_cache *cache;      /* NULL until the first statement (or when memory was short) */
    sqlite_session session; /* temporary objects and attached databases a caller made */
    bool lent;              /* the native handle was taken since the settings were last found as set */
    handle_settings base;   /* the handle's settings after init_sql and after_connect */
    int base_busy_ms;       /* PRAGMA busy_timeout then: 0 none (or a busy handler), -1 unknown */
    sqlite3_stmt *canary;   /* never run: expired when a flag may have changed (canary_arm) */
    bool blind;             /* a caller replaced the session's authorizer: the reset fails */
    bool vfs_cancel_free;   /* opened through dbpool's VFS: its I/O runs with cancellation off */
} sqlite_conn;

static void limits_read(sqlite3 *db, handle_settings *h) {
    for (int i = 0; i < HANDLE_LIMITS; i++)
        h->limit[i] = sqlite3_limit(db, i, -1);
}

static void flags_read(sqlite3 *db, handle_settings *h) {
    h->flags = 0;
    for (size_t i = 0; i < HANDLE_FLAGS; i++) {
        int on = 0;
        if (sqlite3_db_config(db, handle_flags[i], -1, &on) == SQLITE_OK && on)
            h->flags |= UINT32_C(1) << i;
    }
}

static void handle_settings_read(sqlite3 *db, handle_settings *h) {
    limits_read(db, h);
    flags_read(db, h);
}

/* Reading the flags back costs about 130 ns (15 sqlite3_db_config calls),
 * twice a lease that took the handle and ran one prepared statement. But
 * sqlite3_db_config expires every prepared statement of the connection
 * when it changes a flag, so a statement prepared and never run says in a
 * nanosecond (sqlite3_expired, deprecated but kept by SQLite for this)
 * whether one may have changed. Other calls expire it too (a function
 * created, an authorizer set): then the flags are read, and the canary
 * armed again (a prepare, a microsecond). Without one (out of memory) the
 * flags are read every time. */
static void canary_arm(sqlite_conn *sc) {
    sqlite3_finalize(sc->canary);
    sc->canary = NULL;
    if (sqlite3_prepare_v3(sc->db, "SELECT 1", -1, SQLITE_PREPARE_PERSISTENT, &sc->canary, NULL) !=
        SQLITE_OK) {
        sqlite3_finalize(sc->canary);
        sc->canary = NULL;
    }
}

/* The busy timeout is readable only as a PRAGMA, about 0.6 us even
 * prepared once: too dear for every release of a lease that took the
 * handle (a lease of a prepared statement's step costs a tenth of that).
 * So it is read at the baseline only and put back, unread, after each such
 * lease (sqlite3_busy_timeout: a few ns). A caller's
 * sqlite3_busy_timeout(db, 0), or a busy handler of its own, would
 * otherwise fail the next caller's statements at once on a lock. A
 * baseline of 0 (busy_timeout=0, or a busy handler after_connect set) is
 * not put back: such a handler cannot be. */
static int busy_timeout_read(sqlite3 *db) {
    int ms = -1;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "PRAGMA busy_timeout", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        ms = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return ms;
}

static void busy_timeout_put_back(sqlite_conn *sc) {
    if (sc->base_busy_ms > 0)
        sqlite3_busy_timeout(sc->db, sc->base_busy_ms);
}

static bool handle_settings_changed(sqlite_conn *sc) {
    handle_settings now;
    limits_read(sc->db, &now);
    if (memcmp(now.limit, sc->base.limit, sizeof now.limit) != 0)
        return true;
    if (sc->canary && !sqlite3_expired(sc->canary))
        return false;
    flags_read(sc->db, &now);
    if (now.flags != sc->base.flags)
        return true;
    canary_arm(sc); /* expired by something else: watch again */
    return false;
}

static void handle_settings_restore(sqlite_conn *sc) {
    for (int i = 0; i < HANDLE_LIMITS; i++)
        sqlite3_limit(sc->db, i, sc->base.limit[i]);
    for (size_t i = 0; i < HANDLE_FLAGS; i++)
        sqlite3_db_config(sc->db, handle_flags[i], (sc->base.flags >> i) & 1, (int *)NULL);
    busy_timeout_put_back(sc);
    canary_arm(sc); /* the flags put back expired it */
}

/* The connection's cache, made at its first statement; NULL when memory is
 * short (then every statement is prepared afresh). */
static stmt_cache *cache_of(sqlite_conn *sc) {
    if (!sc->cache && (sc->cache = calloc(1, sizeof *sc->cache)) != NULL)
        for (int i = 0; i < STMT_CACHE_SLOTS; i++)
            sc->cache->slot[i].cache = sc->cache;
    return sc->cache;
}

static void slot_clear(cached_stmt *s) {
    sqlite3_finalize(s->st);
    free(s->sql);
    s->st = NULL;
    s->sql = NULL;
    s->len = 0;
    s->hash = 0;
}

/* Before the handle is closed: finalize every statement not lent to a
 * result. A result still out (freed after its lease was released, against
 * the contract) keeps its statement and the cache alive until it is freed;
 * sqlite3_close_v2 keeps the connection as a zombie until then. */
static void cache_detach(stmt_cache *c) {
    if (!c)
        return;
    for (int i = 0; i < STMT_CACHE_SLOTS; i++)
        if (!c->slot[i].in_use)
            slot_clear(&c->slot[i]);
    if (c->lent > 0)
        c->orphaned = true;
    else
        free(c);
}

/* A text's key: its length, and its first, middle and last eight bytes
 * (all of it when shorter) folded into one word; also measures it. The key
 * only filters: cache_find compares the whole text where it matches, so a
 * word needs no mixing, only factors that keep the three from cancelling
 * out. A hash of every byte (FNV-1a) was a chain of multiplies, one per
 * byte: 8 ns of a SELECT 1's statement call, and ten times that for a
 * 100-byte text, which strlen reads 32 bytes an instruction. */
static uint64_t sql_hash(const char *sql, size_t *len) {
    size_t n = strlen(sql);
    *len = n;
    uint64_t first = 0, middle = 0, last = 0;
    if (n >= 8) {
        memcpy(&first, sql, 8);
        memcpy(&middle, sql + (n - 8) / 2, 8);
        memcpy(&last, sql + n - 8, 8);
    } else {
        memcpy(&first, sql, n);
    }
    return (uint64_t)n ^ first * UINT64_C(0x9e3779b97f4a7c15) ^ middle * UINT64_C(0xc2b2ae3d27d4eb4f) ^
           last * UINT64_C(0x165667b19e3779f9);
}

/* The entry holding exactly this text, lent or not; NULL if none. */
static cached_stmt *cache_find(stmt_cache *c, const char *sql, size_t len, uint64_t h) {
    for (int i = 0; i < STMT_CACHE_SLOTS; i++) {
        cached_stmt *s = &c->slot[i];
        if (s->st && s->hash == h && s->len == len && memcmp(s->sql, sql, len) == 0)
            return s;
    }
    return NULL;
}

/* Keep a freshly prepared single statement: an empty entry, else the least
 * recently used one that is not lent. NULL (the caller keeps ownership of
 * st) when every entry is lent or memory is short. */
static cached_stmt *cache_insert(stmt_cache *c, const char *sql, size_t len, uint64_t h, sqlite3_stmt *st) {
    if (len > STMT_CACHE_MAX_SQL)
        return NULL;
    cached_stmt *victim = NULL;
    for (int i = 0; i < STMT_CACHE_SLOTS; i++) {
        cached_stmt *s = &c->slot[i];
        if (s->in_use)
            continue;
        if (!s->st) {
            victim = s;
            break;
        }
        if (!victim || s->used < victim->used)
            victim = s;
    }
    if (!victim)
        return NULL;
    char *copy = malloc(len + 1);
    if (!copy)
        return NULL;
    memcpy(copy, sql, len + 1);
    slot_clear(victim);
    victim->st = st;
    victim->sql = copy;
    victim->len = len;
    victim->hash = h;
    victim->has_params = sqlite3_bind_parameter_count(st) > 0;
    return victim;
}

static void slot_lend(cached_stmt *s) {
    s->in_use = true;
    s->used = ++s->cache->tick;
    s->cache->lent++;
}

/* Give a lent statement back: reset (releases its read lock), drop the
 * bindings. After the connection closed, finalize it instead. */
static void slot_return(cached_stmt *s) {
    stmt_cache *c = s->cache;
    s->in_use = false;
    c->lent--;
    if (c->orphaned) {
        slot_clear(s);
        if (c->lent == 0)
            free(c);
        return;
    }
    sqlite3_reset(s->st);
    if (s->has_params)
        sqlite3_clear_bindings(s->st);
}

/* The lookup for a statement about to run: a cached statement that is free
 * (lent to the caller), or NULL with *h and *len set for cache_insert and
 * *cacheable false when the text is cached but lent (nested results of the
 * same statement: this one is prepared on its own). */
static cached_stmt *cache_take(stmt_cache *c, const char *sql, uint64_t *h, size_t *len, bool *cacheable) {
    *h = sql_hash(sql, len);
    cached_stmt *s = cache_find(c, sql, *len, *h);
    *cacheable = !s;
    if (!s || s->in_use)
        return NULL;
    slot_lend(s);
    return s;
}

/* ---- connections ---- */

/* A setting that fails when the pool opens a connection: a read-only file
 * or one that is no database will not change with a retry. */
static int pragma_error_code(int src) {
    switch (src & 0xff) {
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_AUTH:
        return DBPOOL_EPERM;
    case SQLITE_NOTADB:
        return DBPOOL_ENOTFOUND;
    case SQLITE_NOMEM:
        return DBPOOL_ENOMEM;
    default:
        return DBPOOL_ECONNECT;
    }
}

static int copy_text(void *out, int ncols, char **vals, char **names) {
    (void)names;
    if (ncols > 0 && vals[0])
        dbpool__strlcpy(out, vals[0], 16);
    return 0;
}

/* Run a PRAGMA; its first value, if any, goes to out (16 bytes). A write
 * refused says why, which depends on how the database was opened. */
static int run_pragma_get(sqlite3 *db, const sqlite_cfg *c, const char *sql, char *out, dbpool_error *e) {
    char *msg = NULL;
    int src = sqlite3_exec(db, sql, out ? copy_text : NULL, out, &msg);
    if (src != SQLITE_OK) {
        int code = pragma_error_code(src);
        char hint[400] = "";
        if (code == DBPOOL_EPERM && !(c->open_flags & SQLITE_OPEN_READONLY)) {
            snprintf(
                hint, sizeof hint,
                " (the database or its directory is not writable by this process: fix the permissions, or "
                "open it with mode=ro)");
        } else if (src == SQLITE_READONLY && strncmp(sql, "PRAGMA journal_mode=", 20) == 0) {
            /* mode=ro and a journal_mode other than the file's: a setting
             * that cannot apply, like WAL on :memory:. */
            code = DBPOOL_EINVAL;
            snprintf(
                hint, sizeof hint,
                " (the journal mode is written in the database file, which mode=ro does not change: leave "
                "journal_mode out of the URL, or write journal_mode=unchanged)");
        } else if (code == DBPOOL_EPERM) {
            /* Read-only, and still SQLite must write next to the file: the
             * -shm (and -wal) of a WAL database, or a hot journal to roll
             * back (SQLITE_READONLY_CANTINIT, _RECOVERY, _ROLLBACK). */
            snprintf(
                hint, sizeof hint,
                " (mode=ro, but SQLite must create or write the -wal and -shm files of a WAL database, or "
                "roll back its -journal, next to '%.150s', which this process may not: give it write access "
                "to that directory, or take the database out of WAL mode)",
                c->path);
        }
        dbpool__seterr(e, code, "SQLite '%s' failed: %s%s", sql, msg ? msg : sqlite3_errstr(src), hint);
        if (e)
            e->native_code = src;
        sqlite3_free(msg);
        return code;
    }
    return DBPOOL_OK;
}

static int run_pragma(sqlite3 *db, const sqlite_cfg *c, const char *sql, dbpool_error *e) {
    return run_pragma_get(db, c, sql, NULL, e);
}

/* A rollback journal is a file SQLite creates next to the database for
 * every write transaction (delete mode; truncate and persist keep it once
 * made): in a directory this process may not write, every write would
 * fail with "attempt to write a readonly database"
 * (SQLITE_READONLY_DIRECTORY) although the file itself is writable, as a
 * file opened read-only would (refused at the connect, above). WAL mode
 * already fails at the connect there (its -shm); memory and off make no
 * file. The directory is the one of the file SQLite opened (symbolic
 * links followed). */
static int check_journal_creatable(sqlite3 *db, const char *journal, dbpool_error *e) {
    if (strcasecmp(journal, "delete") != 0 && strcasecmp(journal, "truncate") != 0 &&
        strcasecmp(journal, "persist") != 0)
        return DBPOOL_OK;
    const char *file = sqlite3_db_filename(db, "main");
    if (!file || !*file)
        return DBPOOL_OK;
    char buf[PATH_MAX + 16];
    /* In truncate and persist mode one that exists and may be written is
     * enough; delete mode deletes it at every commit, which takes the
     * directory too (a -journal left there by an earlier mode or a crash
     * let the connect pass, and every write failed with "disk I/O
     * error"). */
    bool deletes = strcasecmp(journal, "delete") == 0;
    if ((size_t)snprintf(buf, sizeof buf, "%s-journal", file) >= sizeof buf ||
        (!deletes && access(buf, W_OK) == 0))
        return DBPOOL_OK;
    snprintf(buf, sizeof buf, "%s", file);
    char *slash = strrchr(buf, '/');
    if (!slash)
        return DBPOOL_OK;
    if (slash == buf)
        slash[1] = '\0';
    else
        *slash = '\0';
    if (access(buf, W_OK | X_OK) == 0 || (errno != EACCES && errno != EROFS))
        return DBPOOL_OK;
    return dbpool__seterr(
        e, DBPOOL_EPERM,
        "SQLite database '%.200s' cannot be written: in journal_mode=%s SQLite %s its "
        "-journal file in the directory '%.200s', which this process may not write: give it "
        "write access to that directory, or open the database with mode=ro",
        file, journal, deletes ? "creates and deletes" : "creates", buf);
}

/* The busy timeout for the connect's next statement: what is left of its
 * deadline, or busy_timeout when that is shorter. Set once, it would let
 * every statement wait that long in turn. */
static void connect_wait(sqlite3 *db, int64_t deadline, int64_t busy_timeout_ms) {
    int64_t left = dbpool__ms_left(deadline);
    sqlite3_busy_timeout(db, (int)(left < busy_timeout_ms ? left : busy_timeout_ms));
}

static int sqlite_connect(const void *cfgp, const dbpool_connect_settings *s, int64_t deadline, void **native,
                          dbpool_error *e) {
    (void)s;
    const sqlite_cfg *c = cfgp;
    sqlite3 *db = NULL;
    *native = NULL;
    if (dbpool__ms_left(deadline) == 0)
        return dbpool__seterr(e, DBPOOL_ETIMEDOUT, "no time left to open the SQLite database");
    int src = sqlite3_open_v2(c->path, &db, c->open_flags, c->memory ? NULL : dbpool__sqlite_file_vfs());
    if (src != SQLITE_OK) {
        int rc = map_open_error(src, c->memory ? ":memory:" : c->path,
                                (c->open_flags & SQLITE_OPEN_CREATE) != 0, db, e);
        sqlite3_close_v2(db);
        return rc;
    }
    /* Asked read-write, SQLite quietly opens a file it may not write
     * read-only: every write would then fail. */
    if (!(c->open_flags & SQLITE_OPEN_READONLY) && sqlite3_db_readonly(db, "main") == 1) {
        sqlite3_close_v2(db);
        return dbpool__seterr(
            e, DBPOOL_EPERM,
            "SQLite database '%.200s' can only be opened read-only (the file or its directory "
            "is not writable by this process): fix the permissions, or open it with mode=ro",
            c->path);
    }
    sqlite3_extended_result_codes(db, 1);
    /* Each statement below may wait for a lock: each waits only for what
     * is left of the connect's deadline (connect_wait), then the busy
     * timeout is set to the configured value. */
    connect_wait(db, deadline, c->busy_timeout_ms);
    char sql[96];
    char journal[16] = "";
    int rc = DBPOOL_OK;
    if (c->journal_mode[0]) {
        snprintf(sql, sizeof sql, "PRAGMA journal_mode=%s", c->journal_mode);
        rc = run_pragma_get(db, c, sql, journal, e);
        /* SQLite answers with the mode it is in: one it cannot use (WAL on
         * an in-memory database, say) is refused without an error. */
        if (rc == DBPOOL_OK && strcasecmp(journal, c->journal_mode) != 0)
            rc = dbpool__seterr(e, DBPOOL_EINVAL,
                                "SQLite kept journal_mode '%s' for '%.200s' instead of the '%s' the URL asks "
                                "for: choose another journal_mode, or journal_mode=unchanged",
                                journal, c->memory ? ":memory:" : c->path, c->journal_mode);
    } else {
        rc = run_pragma_get(db, c, "PRAGMA journal_mode", journal, e);
    }
    /* synchronous=normal is safe with WAL and much faster: the default
     * whenever the database is in WAL mode, however it got there. */
    const char *sync = c->synchronous[0] ? c->synchronous : strcasecmp(journal, "wal") == 0 ? "normal" : NULL;
    if (rc == DBPOOL_OK && sync) {
        snprintf(sql, sizeof sql, "PRAGMA synchronous=%s", sync);
        connect_wait(db, deadline, c->busy_timeout_ms);
        rc = run_pragma(db, c, sql, e);
    }
    if (rc == DBPOOL_OK) {
        connect_wait(db, deadline, c->busy_timeout_ms);
        rc = run_pragma(db, c, c->foreign_keys ? "PRAGMA foreign_keys=ON" : "PRAGMA foreign_keys=OFF", e);
    }
    if (rc == DBPOOL_OK && !c->memory) {
        /* Opening is lazy: read the schema now so that "not a database"
         * and permission problems show up here, not on the first query. */
        connect_wait(db, deadline, c->busy_timeout_ms);
        rc = run_pragma(db, c, "PRAGMA schema_version", e);
    }
    if (rc == DBPOOL_OK && !c->memory && !(c->open_flags & SQLITE_OPEN_READONLY))
        rc = check_journal_creatable(db, journal, e);
    if (rc != DBPOOL_OK) {
        sqlite3_close_v2(db);
        if (e && (e->native_code & 0xff) == SQLITE_NOTADB)
            dbpool__prefix_err(e, "'%.200s' is not an SQLite database", c->path);
        else if (e && (e->native_code & 0xff) == SQLITE_CANTOPEN)
            return map_open_error(e->native_code, c->memory ? ":memory:" : c->path,
                                  (c->open_flags & SQLITE_OPEN_CREATE) != 0, NULL, e);
        return rc;
    }
    sqlite_conn *sc = calloc(1, sizeof *sc);
    if (!sc) {
        sqlite3_close_v2(db);
        return dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory");
    }
    sc->db = db;
    sc->vfs_cancel_free = dbpool__sqlite_vfs_cancel_free(db);
    /* Still within the connect's deadline: reading the settings loads the
     * schema of an in-memory database, which waits for its lock. */
    connect_wait(db, deadline, c->busy_timeout_ms);
    rc = dbpool__sqlite_session_watch(db, &sc->session, (int)c->busy_timeout_ms, c->memory, e);
    if (rc != DBPOOL_OK) {
        sqlite3_close_v2(db);
        free(sc);
        return rc;
    }
    sqlite3_busy_timeout(db, (int)c->busy_timeout_ms);
    handle_settings_read(db, &sc->base); /* read again after init_sql and after_connect, if any */
    sc->base_busy_ms = (int)c->busy_timeout_ms;
    *native = sc;
    return DBPOOL_OK;
}

static void sqlite_disconnect(void *native) {
    sqlite_conn *sc = native;
    /* A result still out may re-prepare later: not with sc gone. */
    sqlite3_set_authorizer(sc->db, NULL, NULL);
    dbpool__sqlite_session_free(&sc->session);
    cache_detach(sc->cache);
    sqlite3_finalize(sc->canary);
    /* _v2: a statement a careless caller left open keeps the connection
     * alive as a zombie until it is finalized, instead of failing here. */
    sqlite3_close_v2(sc->db);
    free(sc);
}

static void *sqlite_user_handle(void *native) {
    sqlite_conn *sc = native;
    sc->lent = true;
    return sc->db;
}

static int sqlite_ping(void *native, int64_t deadline, dbpool_error *e) {
    (void)deadline;
    sqlite3 *db = ((sqlite_conn *)native)->db;
    sqlite3_stmt *st = NULL;
    int src = sqlite3_prepare_v2(db, "SELECT 1", -1, &st, NULL);
    if (src == SQLITE_OK)
        src = sqlite3_step(st);
    sqlite3_finalize(st);
    if (src != SQLITE_ROW)
        return set_query_error(db, src, "SQLite validation query failed", e);
    /* A database file renamed over or deleted while the pool had it open:
     * this connection would go on reading, and in WAL mode writing, the
     * old file, unseen by connections opened since. */
    int moved = 0;
    if (sqlite3_file_control(db, "main", SQLITE_FCNTL_HAS_MOVED, &moved) == SQLITE_OK && moved)
        return dbpool__seterr(e, DBPOOL_EBROKEN,
                              "the SQLite database file was renamed, replaced or deleted since this "
                              "connection opened it: the connection is replaced");
    return DBPOOL_OK;
}

static int sqlite_needs_reset(void *native) {
    sqlite_conn *sc = native;
    if (sc->lent) {
        busy_timeout_put_back(sc); /* unread: see busy_timeout_read */
        /* sqlite3_set_authorizer on the native handle: what the lease did
         * since went unseen. Setting one expires every prepared statement,
         * the canary too, so the check (a prepare, about a microsecond)
         * runs only when the canary says something may have: a lease that
         * took the handle pays nanoseconds otherwise. Setting none (NULL)
         * expires nothing and goes unseen (operations.md). */
        if ((!sc->canary || sqlite3_expired(sc->canary)) &&
            !dbpool__sqlite_session_ours(sc->db, &sc->session)) {
            sc->blind = true;
            return 1;
        }
        if (handle_settings_changed(sc))
            return 1; /* lent stays set: the reset puts them back */
        sc->lent = false;
    }
    if (!sqlite3_get_autocommit(sc->db) || sc->session.dirty)
        return 1;
#if SQLITE_VERSION_NUMBER >= 3034000
    /* A statement stepped but not finished or reset (on the native handle,
     * or a result not freed) holds a read transaction open in autocommit
     * mode: the next caller would read an old snapshot, fail to write with
     * SQLITE_BUSY_SNAPSHOT, and stop checkpoints. */
    return sqlite3_txn_state(sc->db, NULL) != SQLITE_TXN_NONE;
#else
    for (sqlite3_stmt *st = sqlite3_next_stmt(sc->db, NULL); st; st = sqlite3_next_stmt(sc->db, st))
        if (sqlite3_stmt_busy(st))
            return 1;
    return 0;
#endif
}

static int sqlite_reset(void *native, int64_t deadline, bool *session_cleared, dbpool_error *e) {
    (void)deadline;
    *session_cleared = false; /* what it drops was made by a caller, not init_sql */
    sqlite_conn *sc = native;
    sqlite3 *db = sc->db;
    if (sc->blind)
        return dbpool__seterr(e, DBPOOL_EQUERY,
                              "a caller replaced dbpool's SQLite authorizer (sqlite3_set_authorizer on the "
                              "native handle), which sees the temporary objects, attached databases and "
                              "PRAGMAs a lease leaves: what this lease left is unknown, so the connection is "
                              "replaced");
    if (sc->lent) {
        handle_settings_restore(sc);
        sc->lent = false;
    }
    /* Reset statements still stepping, or ROLLBACK (and DROP, DETACH)
     * could fail with BUSY or LOCKED. */
    for (sqlite3_stmt *st = sqlite3_next_stmt(db, NULL); st; st = sqlite3_next_stmt(db, st))
        sqlite3_reset(st);
    if (!sqlite3_get_autocommit(db)) {
        char *msg = NULL;
        int src = sqlite3_exec(db, "ROLLBACK", NULL, NULL, &msg);
        if (src != SQLITE_OK || !sqlite3_get_autocommit(db)) {
            dbpool__seterr(e, DBPOOL_EQUERY, "ROLLBACK failed: %s", msg ? msg : sqlite3_errstr(src));
            sqlite3_free(msg);
            return DBPOOL_EQUERY;
        }
    }
    return dbpool__sqlite_session_clear(db, &sc->session, e);
}

static int sqlite_session_baseline(void *native, dbpool_error *e) {
    sqlite_conn *sc = native;
    handle_settings_read(sc->db, &sc->base); /* after_connect may have set them: where leases start */
    sc->base_busy_ms = busy_timeout_read(sc->db);
    sc->lent = false;
    /* after_connect may have set an authorizer of its own: every lease
     * would then leave its temporary objects, attached databases and
     * PRAGMAs to the next, unseen. */
    if (!dbpool__sqlite_session_ours(sc->db, &sc->session))
        return dbpool__seterr(e, DBPOOL_EINVAL,
                              "after_connect replaced dbpool's SQLite authorizer (sqlite3_set_authorizer), "
                              "which the pool needs to see what each lease leaves in the session (temporary "
                              "objects, attached databases, PRAGMAs): leave the authorizer to the pool");
    int rc = dbpool__sqlite_session_baseline(sc->db, &sc->session, e);
    canary_arm(sc); /* after the authorizer is set, which expires it */
    return rc;
}

static int bind_params(sqlite3 *db, sqlite3_stmt *st, const dbpool_param *p, size_t n, dbpool_error *e) {
    int expected = sqlite3_bind_parameter_count(st);
    if ((size_t)expected != n)
        return dbpool__seterr(e, DBPOOL_EINVAL,
                              "the statement has %d placeholders but %zu parameters were given", expected, n);
    for (size_t i = 0; i < n; i++) {
        int idx = (int)i + 1, src;
        switch (p[i].type) {
        case DBPOOL_TYPE_NULL:
            src = sqlite3_bind_null(st, idx);
            break;
        case DBPOOL_TYPE_INT64:
            src = sqlite3_bind_int64(st, idx, p[i].v.i64);
            break;
        case DBPOOL_TYPE_DOUBLE:
            src = sqlite3_bind_double(st, idx, p[i].v.f64);
            break;
        case DBPOOL_TYPE_BLOB:
            src = p[i].v.blob.ptr
                      ? sqlite3_bind_blob64(st, idx, p[i].v.blob.ptr, p[i].v.blob.len, SQLITE_TRANSIENT)
                      : sqlite3_bind_null(st, idx);
            break;
        default: /* text; a NULL pointer is SQL NULL, as on the server backends */
            src = p[i].v.text.ptr ? sqlite3_bind_text64(st, idx, p[i].v.text.ptr, p[i].v.text.len,
                                                        SQLITE_TRANSIENT, SQLITE_UTF8)
                                  : sqlite3_bind_null(st, idx);
            break;
        }
        if (src != SQLITE_OK)
            return set_query_error(db, src, "binding a parameter failed", e);
    }
    return DBPOOL_OK;
}

/* Nothing left to run: white space, semicolons and comments, both line
 * comments and block comments (an unterminated block comment runs to the
 * end, as SQLite reads it). */
static bool only_space(const char *s) {
    while (s && *s) {
        if (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == '\f' || *s == ';') {
            s++;
        } else if (s[0] == '-' && s[1] == '-') {
            s = strchr(s, '\n');
        } else if (s[0] == '/' && s[1] == '*') {
            s = strstr(s + 2, "*/");
            if (s)
                s += 2;
        } else {
            return false;
        }
    }
    return true;
}

/* sqlite3_prepare_v3, persistent when it may be cached. A statement whose
 * preparing told the session tracker it makes a temporary object may not
 * be cached (*cacheable false): run from the cache it would not be
 * prepared again, and not seen. */
static int prepare_watched(sqlite_conn *sc, const char *sql, bool *cacheable, sqlite3_stmt **st,
                           const char **tail) {
    unsigned marks = sc->session.marks;
    sc->session.refused_wal = false; /* what a refusal of this prepare means */
    int src = sqlite3_prepare_v3(sc->db, sql, -1, *cacheable ? SQLITE_PREPARE_PERSISTENT : 0, st, tail);
    if (sc->session.marks != marks)
        *cacheable = false;
    return src;
}

/* A statement that did not prepare. The session's authorizer refuses one
 * thing only, and SQLite says no more than "not authorized". */
static int prepare_error(sqlite_conn *sc, int src, const char *what, dbpool_error *e) {
    int rc = set_query_error(sc->db, src, what, e);
    if ((src & 0xff) == SQLITE_AUTH && sc->session.refused_wal) {
        rc = dbpool__seterr(
            e, DBPOOL_EQUERY,
            "%s: %s (sqlite::memory: cannot go into WAL mode under locking_mode=EXCLUSIVE: "
            "the database would be marked WAL, which the pool's other connections to it cannot "
            "open; leave the journal mode as it is, or use a database file for WAL)",
            what, sqlite3_errmsg(sc->db));
        if (e)
            e->native_code = src;
    }
    return rc;
}

/* A statement done with: back to the cache, or finalized. */
static void stmt_done(sqlite3_stmt *st, cached_stmt *slot) {
    if (slot)
        slot_return(slot);
    else
        sqlite3_finalize(st);
}

/* A connection whose database file was renamed over or deleted since it
 * opened it: in rollback-journal mode SQLite refuses its writes
 * (SQLITE_READONLY_DBMOVED), but in WAL mode it writes on, into a file no
 * other connection sees and that is gone once closed, and reports
 * success. Refused the same in both modes, before the statement that
 * would begin a write transaction (a stat of the path, once per write
 * transaction; BEGIN IMMEDIATE and EXCLUSIVE are not read-only
 * statements). sqlite_is_broken then closes the connection at release, as
 * validation would have. */
static int refuse_write_to_moved_file(sqlite3 *db, sqlite3_stmt *st, dbpool_error *e) {
    if (sqlite3_stmt_readonly(st))
        return DBPOOL_OK;
#if SQLITE_VERSION_NUMBER >= 3034000
    if (sqlite3_txn_state(db, "main") == SQLITE_TXN_WRITE)
        return DBPOOL_OK; /* looked when it began */
#endif
    int moved = 0;
    if (sqlite3_file_control(db, "main", SQLITE_FCNTL_HAS_MOVED, &moved) != SQLITE_OK || !moved)
        return DBPOOL_OK;
    char hint[320];
    moved_advice(db, hint, sizeof hint);
    dbpool__seterr(e, DBPOOL_EQUERY, "SQLite statement refused%s", hint);
    if (e)
        e->native_code = SQLITE_READONLY_DBMOVED;
    return DBPOOL_EQUERY;
}

/* deadline_ns is ignored: no network, and busy_timeout bounds lock waits. */
static int sqlite_exec(void *native, const char *sql, const dbpool_param *p, size_t n, int64_t *affected,
                       int64_t deadline_ns, dbpool_error *e) {
    (void)deadline_ns;
    sqlite3 *db = ((sqlite_conn *)native)->db;
    stmt_cache *cache = cache_of(native);
    const char *tail = sql;
    int64_t total = 0;
    bool first = true;
    /* Several statements run in turn when there are no parameters; a
     * single statement goes through the cache. */
    do {
        sqlite3_stmt *st = NULL;
        cached_stmt *slot = NULL;
        uint64_t h = 0;
        size_t len = 0;
        bool cacheable = false;
        if (first && cache) {
            slot = cache_take(cache, sql, &h, &len, &cacheable);
            if (slot) {
                st = slot->st;
                tail = NULL; /* a cached statement is the whole text */
            }
        }
        if (!slot) {
            int src = prepare_watched(native, tail, &cacheable, &st, &tail);
            if (src != SQLITE_OK)
                return prepare_error(native, src, "SQLite could not prepare the statement", e);
            if (!st) { /* only white space or comments */
                if (first && n > 0)
                    return dbpool__seterr(e, DBPOOL_EINVAL,
                                          "%zu parameters were given but the SQL holds no statement", n);
                break;
            }
            bool single = only_space(tail);
            if (n > 0 && !single) {
                sqlite3_finalize(st);
                return dbpool__seterr(e, DBPOOL_EINVAL, "parameters can only be bound to a single statement");
            }
            if (cacheable && single && (slot = cache_insert(cache, sql, len, h, st)))
                slot_lend(slot);
        }
        first = false;
        int rc = bind_params(db, st, p, n, e);
        if (rc == DBPOOL_OK)
            rc = refuse_write_to_moved_file(db, st, e);
        if (rc != DBPOOL_OK) {
            stmt_done(st, slot);
            return rc;
        }
        /* sqlite3_changes64 keeps the count of the last INSERT, UPDATE or
         * DELETE, whatever ran since (DDL, SELECT, BEGIN, even in an earlier
         * lease): it counts only when this statement moved the total. */
        int64_t total_before = sqlite3_total_changes64(db);
        int src;
        while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        }
        if (src != SQLITE_DONE) {
            rc = set_query_error(db, src, "SQLite statement failed", e);
            stmt_done(st, slot);
            return rc;
        }
        if (sqlite3_total_changes64(db) != total_before)
            total += sqlite3_changes64(db);
        stmt_done(st, slot);
    } while (tail && *tail && !only_space(tail));
    if (affected)
        *affected = total;
    return DBPOOL_OK;
}

/* ---- results: streamed with sqlite3_step ---- */

static int sr_next(dbpool_result *r, dbpool_error *e) {
    sqlite_result *sr = (sqlite_result *)r;
    if (sr->done)
        return 0;
    if (sr->primed) {
        sr->primed = false;
        sr->has_row = sr->primed_row;
        sr->done = !sr->primed_row;
        return sr->primed_row ? 1 : 0;
    }
    int src = sqlite3_step(sr->st);
    if (src == SQLITE_ROW) {
        sr->has_row = true;
        return 1;
    }
    sr->done = true;
    sr->has_row = false;
    if (src == SQLITE_DONE)
        return 0;
    return set_query_error(sqlite3_db_handle(sr->st), src, "SQLite query failed", e);
}
static int sr_columns(const dbpool_result *r) { return sqlite3_column_count(((const sqlite_result *)r)->st); }
static const char *sr_column_name(const dbpool_result *r, int col) {
    return sqlite3_column_name(((const sqlite_result *)r)->st, col);
}
static bool sr_is_null(const dbpool_result *r, int col) {
    const sqlite_result *sr = (const sqlite_result *)r;
    return !sr->has_row || sqlite3_column_type(sr->st, col) == SQLITE_NULL;
}
static int64_t sr_int64(const dbpool_result *r, int col) {
    const sqlite_result *sr = (const sqlite_result *)r;
    return sr->has_row ? sqlite3_column_int64(sr->st, col) : 0;
}
/* A TEXT cell is read as strtod reads it (include/dbpool.h), as the
 * server backends read theirs: SQLite's own conversion reads "Infinity",
 * "NaN" and "0x10" as 0. */
static double sr_double(const dbpool_result *r, int col) {
    const sqlite_result *sr = (const sqlite_result *)r;
    if (!sr->has_row)
        return 0.0;
    if (sqlite3_column_type(sr->st, col) == SQLITE_TEXT) {
        const char *t = (const char *)sqlite3_column_text(sr->st, col);
        return t ? dbpool__strtod_c(t, NULL) : 0.0;
    }
    return sqlite3_column_double(sr->st, col);
}
/* A REAL cell's text. SQLite writes 15 significant digits, which do not
 * always read back as the value (0.1 + 0.2 reads "0.3", 1.0 / 3 loses its
 * last digit), where PostgreSQL and MySQL send the shortest text that
 * does: such a value is written again, with the fewest digits (up to 17)
 * that read back. SQLite's own text stands where it reads back ("2.0").
 * The copy lives in the result until the same column's next row. */
#define REAL_TEXT 32
static const char *real_text(sqlite_result *sr, int col, size_t *len) {
    const char *t = (const char *)sqlite3_column_text(sr->st, col);
    double d = sqlite3_column_double(sr->st, col);
    if (!t || !isfinite(d) || dbpool__strtod_c(t, NULL) == d)
        return NULL; /* SQLite's own text */
    if (!sr->reals) {
        int n = sqlite3_column_count(sr->st);
        if (n <= 0 || !(sr->reals = malloc((size_t)n * REAL_TEXT)))
            return NULL;
        sr->nreals = n;
    }
    if (col >= sr->nreals)
        return NULL;
    char *buf = sr->reals + (size_t)col * REAL_TEXT;
    int n = dbpool__format_double_shortest_c(buf, REAL_TEXT, d);
    if (n <= 0 || n >= REAL_TEXT)
        return NULL;
    *len = (size_t)n;
    return buf;
}
/* A BLOB cell's text, NUL-terminated, in a copy of the result's own.
 * sqlite3_column_text would add the NUL to SQLite's value in place, moving
 * it, which frees the bytes an earlier dbpool_result_blob of the same cell
 * returned (a pointer the API lends until the next row). The copy is made
 * again at each call; within a row it stays where it is (same length). */
struct blob_text {
    char *p;
    size_t cap;
};
static const char *blob_text(sqlite_result *sr, int col, size_t *len) {
    const void *b = sqlite3_column_blob(sr->st, col);
    size_t n = (size_t)sqlite3_column_bytes(sr->st, col);
    if (!b && n)
        return NULL; /* out of memory */
    if (!sr->blob_texts) {
        int nc = sqlite3_column_count(sr->st);
        if (nc <= 0 || !(sr->blob_texts = calloc((size_t)nc, sizeof *sr->blob_texts)))
            return NULL;
        sr->nblob_texts = nc;
    }
    if (col >= sr->nblob_texts)
        return NULL;
    struct blob_text *t = &sr->blob_texts[col];
    if (t->cap < n + 1) {
        char *q = realloc(t->p, n + 1);
        if (!q)
            return NULL;
        t->p = q;
        t->cap = n + 1;
    }
    if (n)
        memcpy(t->p, b, n);
    t->p[n] = '\0';
    *len = n;
    return t->p;
}
static void forget_blob_texts(sqlite_result *sr) {
    for (int i = 0; i < sr->nblob_texts; i++)
        free(sr->blob_texts[i].p);
    free(sr->blob_texts);
    sr->blob_texts = NULL;
    sr->nblob_texts = 0;
}
static const char *sr_text(const dbpool_result *r, int col, size_t *len) {
    sqlite_result *sr = (sqlite_result *)(uintptr_t)r; /* the REAL texts are a cache */
    if (!sr->has_row || sqlite3_column_type(sr->st, col) == SQLITE_NULL) {
        if (len)
            *len = 0;
        return NULL;
    }
    size_t rlen = 0;
    int type = sqlite3_column_type(sr->st, col);
    if (type == SQLITE_BLOB) {
        const char *bt = blob_text(sr, col, &rlen);
        if (len)
            *len = bt ? rlen : 0;
        return bt;
    }
    const char *rt = type == SQLITE_FLOAT ? real_text(sr, col, &rlen) : NULL;
    if (rt) {
        if (len)
            *len = rlen;
        return rt;
    }
    const char *t = (const char *)sqlite3_column_text(sr->st, col);
    /* NULL here is SQLite out of memory converting the cell (a UTF-16
     * database); its byte count is the cell's, not the text's. */
    if (len)
        *len = t ? (size_t)sqlite3_column_bytes(sr->st, col) : 0;
    return t;
}
static const void *sr_blob(const dbpool_result *r, int col, size_t *len) {
    const sqlite_result *sr = (const sqlite_result *)r;
    if (!sr->has_row || sqlite3_column_type(sr->st, col) == SQLITE_NULL) {
        *len = 0;
        return NULL;
    }
    if (sqlite3_column_type(sr->st, col) == SQLITE_FLOAT)
        return sr_text(r, col, len); /* the same text as dbpool_result_text */
    const void *b = sqlite3_column_blob(sr->st, col);
    *len = (size_t)sqlite3_column_bytes(sr->st, col);
    if (b)
        return b;
    if (*len) { /* out of memory converting the value */
        *len = 0;
        return NULL;
    }
    return ""; /* an empty BLOB reads as a NULL pointer, but it is not SQL NULL */
}
static void sr_free(dbpool_result *r) {
    sqlite_result *sr = (sqlite_result *)r;
    if (sr->reals) { /* made for a REAL's text only: most results have none */
        free(sr->reals);
        sr->reals = NULL;
    }
    if (sr->blob_texts)
        forget_blob_texts(sr);
    if (sr->slot) {
        slot_return(sr->slot); /* the result lives in the cache entry */
        return;
    }
    sqlite3_finalize(sr->st);
    free(sr);
}

static const dbpool_result_ops sqlite_result_ops = {
    .next = sr_next,
    .columns = sr_columns,
    .column_name = sr_column_name,
    .is_null = sr_is_null,
    .int64 = sr_int64,
    .dbl = sr_double,
    .text = sr_text,
    .blob = sr_blob,
    .free = sr_free,
    .steps = true,
};

static int sqlite_query(void *native, const char *sql, const dbpool_param *p, size_t n, dbpool_result **out,
                        int64_t deadline_ns, dbpool_error *e) {
    (void)deadline_ns;
    sqlite3 *db = ((sqlite_conn *)native)->db;
    stmt_cache *cache = cache_of(native);
    sqlite3_stmt *st = NULL;
    cached_stmt *slot = NULL;
    uint64_t h = 0;
    size_t len = 0;
    bool cacheable = false;
    if (cache && (slot = cache_take(cache, sql, &h, &len, &cacheable)))
        st = slot->st;
    if (!slot) {
        const char *tail = NULL;
        int src = prepare_watched(native, sql, &cacheable, &st, &tail);
        if (src != SQLITE_OK)
            return prepare_error(native, src, "SQLite could not prepare the query", e);
        if (!st)
            return dbpool__seterr(e, DBPOOL_EINVAL, "the query is empty");
        if (!only_space(tail)) {
            sqlite3_finalize(st);
            return dbpool__seterr(e, DBPOOL_EINVAL,
                                  "dbpool_query takes one statement; use dbpool_exec for several");
        }
        if (cacheable && (slot = cache_insert(cache, sql, len, h, st)))
            slot_lend(slot);
    }
    int rc = bind_params(db, st, p, n, e);
    if (rc == DBPOOL_OK)
        rc = refuse_write_to_moved_file(db, st, e);
    if (rc != DBPOOL_OK) {
        stmt_done(st, slot);
        return rc;
    }
    sqlite_result *r;
    if (slot) {
        r = &slot->res;
        memset(r, 0, sizeof *r);
        r->slot = slot;
    } else if (!(r = calloc(1, sizeof *r))) {
        sqlite3_finalize(st);
        return dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory");
    }
    r->base.ops = &sqlite_result_ops;
    r->st = st;
    /* The first step now, not at the first dbpool_result_next: a cached
     * statement is re-prepared after a schema change only when it steps,
     * and until then its column count and names are the old ones. It also
     * reports a failing statement here, as the server backends do. */
    int src = sqlite3_step(st);
    if (src != SQLITE_ROW && src != SQLITE_DONE) {
        rc = set_query_error(db, src, "SQLite query failed", e);
        sr_free(&r->base);
        return rc;
    }
    r->primed = true;
    r->primed_row = src == SQLITE_ROW;
    *out = &r->base;
    return DBPOOL_OK;
}

/* Whether the connection's own database still reads: an error about a
 * file may have come from a database the caller attached. */
static bool main_database_reads(void *native) {
    if (!native)
        return false;
    sqlite3 *db = ((sqlite_conn *)native)->db;
    sqlite3_stmt *st = NULL;
    int src = sqlite3_prepare_v2(db, "PRAGMA main.schema_version", -1, &st, NULL);
    if (src == SQLITE_OK)
        src = sqlite3_step(st);
    sqlite3_finalize(st);
    /* Busy or locked: another connection is writing, which says nothing
     * against this one. */
    return src == SQLITE_ROW || (src & 0xff) == SQLITE_BUSY || (src & 0xff) == SQLITE_LOCKED;
}

/* Statements on this connection reach no cancellation point: its VFS
 * makes its system calls with cancellation off (sqlite_vfs.c), and no
 * worker thread of a sorter is joined (pthread_join is one; PRAGMA threads
 * or sqlite3_limit start them). A caller's own functions or hooks on the
 * native handle are the caller's (docs/threading.md). */
static bool sqlite_cancel_free(void *native) {
    const sqlite_conn *sc = native;
    return sc->vfs_cancel_free && sqlite3_limit(sc->db, SQLITE_LIMIT_WORKER_THREADS, -1) == 0;
}

static bool sqlite_is_broken(void *native, const dbpool_error *e) {
    if (!e)
        return false;
    if (e->native_code == SQLITE_READONLY_DBMOVED)
        return true; /* the file was renamed or deleted under the connection */
    switch (e->native_code & 0xff) {
    case SQLITE_IOERR:
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_CANTOPEN:
        return !main_database_reads(native);
    case SQLITE_MISUSE:
        return true;
    default:
        return e->code == DBPOOL_EBROKEN;
    }
}

static void sqlite_server_version(void *native, char *buf, size_t len) {
    (void)native;
    dbpool__strlcpy(buf, sqlite3_libversion(), len);
}

const dbpool_driver dbpool__driver_sqlite = {
    .name = "sqlite",
    .schemes = sqlite_schemes,
    .configure = sqlite_configure,
    .free_config = sqlite_free_config,
    .secrets = NULL,
    .connect = sqlite_connect,
    .disconnect = sqlite_disconnect,
    .ping = sqlite_ping,
    .needs_reset = sqlite_needs_reset,
    .reset = sqlite_reset,
    .exec = sqlite_exec,
    /* No exec_bounded: init_sql runs through exec. There is no network to
     * stop answering, and a lock it waits for is given up after the URL's
     * busy_timeout (5000 ms unless set), not after connect_timeout_ms. A
     * reset never clears the session here, so init_sql never runs on a
     * releasing thread. */
    .query = sqlite_query,
    .is_broken = sqlite_is_broken,
    .server_version = sqlite_server_version,
    .user_handle = sqlite_user_handle,
    .session_baseline = sqlite_session_baseline,
    .cancel_free = sqlite_cancel_free,
};
