/* sqlite_session.c — see sqlite_session.h. */
#include "sqlite_session.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static bool is_temp(const char *schema) { return schema && strcmp(schema, "temp") == 0; }

/* The index of the baseline object (or, with `database`, attached
 * database) of this name, or nbaseline; SQLite compares names without
 * regard to ASCII case. A database without a name is the first baseline
 * database: SQLite names the database of a DETACH to the authorizer only
 * when it is written as a literal, and DETACH ? (or 'a' || 'ux') may
 * detach any of them, and the same name may then be attached to another
 * file. */
static size_t in_baseline(const sqlite_session *s, bool database, const char *name) {
    for (size_t i = 0; (name || database) && i < s->nbaseline; i++)
        if ((strcmp(s->baseline[i].kind, "database") == 0) == database &&
            (!name || strcasecmp(s->baseline[i].name, name) == 0))
            return i;
    return s->nbaseline;
}

/* Per-connection settings a caller may change with a PRAGMA and a reset
 * puts back: read at the baseline, each written again at release when a
 * caller set it. The pool's own (foreign_keys, busy_timeout, synchronous)
 * come from the URL and must hold for every lease; the others change what
 * the next caller's statements do (query_only refuses its writes,
 * ignore_check_constraints lets rows through, full_column_names renames
 * its columns, read_uncommitted lets it read other connections' uncommitted
 * rows in a shared cache, fullfsync changes how its commits sync...). None of them takes a lock to read or
 * write. */
static const char *const restorable[SQLITE_SESSION_PRAGMAS] = {
    "foreign_keys",
    "busy_timeout",
    "synchronous",
    "query_only",
    "recursive_triggers",
    "reverse_unordered_selects",
    "cache_size",
    "temp_store",
    "automatic_index",
    "cell_size_check",
    "ignore_check_constraints",
    "defer_foreign_keys",
    "legacy_alter_table",
    "trusted_schema",
    "writable_schema",
    "secure_delete",
    "journal_size_limit",
    "cache_spill",
    "analysis_limit",
    "threads",
    "full_column_names",
    "short_column_names",
    "count_changes",
    "empty_result_callbacks",
    "wal_autocheckpoint",
    "mmap_size",
    "fullfsync",
    "checkpoint_fullfsync",
    "read_uncommitted",
};

/* Settings no reset puts back: journal_mode and max_page_count take a lock
 * on the database to set, case_sensitive_like cannot be read, and
 * locking_mode=exclusive keeps its locks. A caller that sets one costs the
 * connection (the next one is opened with the URL's settings), unless it
 * sets journal_mode or locking_mode to the mode the connection has (the
 * usual "PRAGMA journal_mode=WAL" on every lease changes nothing). Every other
 * PRAGMA with a value is a query (table_info(t)), an action (optimize,
 * wal_checkpoint), a change to the database file itself (user_version,
 * auto_vacuum) or process-wide (soft_heap_limit): no session state. */
static const char *const unrestorable[] = {"journal_mode", "locking_mode", "case_sensitive_like",
                                           "max_page_count", NULL};

static int pragma_index(const char *const *list, size_t n, const char *name) {
    for (size_t i = 0; name && i < n && list[i]; i++)
        if (strcasecmp(list[i], name) == 0)
            return (int)i;
    return -1;
}

static int track(void *arg, int action, const char *what, const char *detail, const char *schema,
                 const char *trigger) {
    (void)trigger;
    sqlite_session *s = arg;
    s->heard++;
    if (action == SQLITE_PRAGMA) {
        /* PRAGMA name = value (or name(value)): what is the name, detail
         * the value; NULL when the PRAGMA only reads. */
        if (!detail)
            return SQLITE_OK;
        bool main_db = !schema || strcasecmp(schema, "main") == 0;
        if (main_db && what && strcasecmp(what, "locking_mode") == 0)
            s->exclusive = strcasecmp(detail, "exclusive") == 0;
        /* memdb has no shared memory for a WAL index, so SQLite keeps an
         * in-memory database out of WAL mode, except under an exclusive
         * lock: then the database itself is marked WAL, and every other
         * connection to it (the pool's next ones) fails to open it, the
         * pool broken until closed. Refused ("not authorized",
         * explained by the driver). */
        if (s->memory && main_db && what && strcasecmp(what, "journal_mode") == 0 &&
            strcasecmp(detail, "wal") == 0 &&
            (s->exclusive || (s->base && strcasecmp(s->base->locking, "exclusive") == 0))) {
            s->refused_wal = true;
            return SQLITE_DENY;
        }
        int i = pragma_index(restorable, SQLITE_SESSION_PRAGMAS, what);
        int lost = i < 0 ? pragma_index(unrestorable, SIZE_MAX, what) : -1;
        if ((lost == 0 && strcasecmp(detail, s->base->journal) == 0) ||
            (lost == 1 && strcasecmp(detail, s->base->locking) == 0))
            lost = -1; /* the mode it is in: a no-op */
        if (i >= 0)
            s->pragmas |= UINT32_C(1) << i;
        else if (lost >= 0 && !s->lost_pragma)
            s->lost_pragma = lost + 1;
        if (i >= 0 || lost >= 0) {
            s->dirty = true;
            s->marks++; /* not cached: run again, it would not be seen */
        }
        /* A new temp_store deletes every temporary object, the baseline's
         * too: compared at release. */
        if (what && strcasecmp(what, "temp_store") == 0)
            s->touched = true;
        return SQLITE_OK;
    }
    /* CREATE TEMP TABLE x has codes of its own; CREATE TABLE temp.x is an
     * ordinary CREATE in the schema "temp". A trigger is reported with the
     * schema of its table, so CREATE TRIGGER temp.tr ON main_table looks
     * like any other: every trigger counts (the listing at release sees
     * where it went). */
    bool in_temp = is_temp(schema);
    bool makes = action == SQLITE_CREATE_TEMP_TABLE || action == SQLITE_CREATE_TEMP_INDEX ||
                 action == SQLITE_CREATE_TEMP_TRIGGER || action == SQLITE_CREATE_TEMP_VIEW ||
                 action == SQLITE_ATTACH || action == SQLITE_CREATE_TRIGGER ||
                 (in_temp && (action == SQLITE_CREATE_TABLE || action == SQLITE_CREATE_INDEX ||
                              action == SQLITE_CREATE_VIEW || action == SQLITE_CREATE_VTABLE));
    /* Any ALTER TABLE, even of a main table: a rename rewrites temporary
     * triggers and views that name it. */
    bool unmakes = action == SQLITE_DROP_TEMP_TABLE || action == SQLITE_DROP_TEMP_INDEX ||
                   action == SQLITE_DROP_TEMP_TRIGGER || action == SQLITE_DROP_TEMP_VIEW ||
                   action == SQLITE_DETACH || action == SQLITE_ALTER_TABLE || action == SQLITE_DROP_TRIGGER ||
                   (in_temp && (action == SQLITE_DROP_TABLE || action == SQLITE_DROP_INDEX ||
                                action == SQLITE_DROP_VIEW || action == SQLITE_DROP_VTABLE));
    if (makes || unmakes) {
        s->dirty = true;
        s->touched |= unmakes;
        s->marks++;
    }
    /* Dropping (or detaching) a baseline object breaks the baseline even
     * if the same text makes it again: its rows, or the file behind the
     * name, would be the caller's. For ALTER TABLE the schema comes first:
     * (schema, table). */
    size_t at = unmakes
                    ? in_baseline(s, action == SQLITE_DETACH, action == SQLITE_ALTER_TABLE ? detail : what)
                    : s->nbaseline;
    if (at < s->nbaseline && !s->broken) {
        s->broken = true;
        s->broken_at = at;
    }
    return SQLITE_OK; /* it only watches: nothing is refused */
}

/* Read the restorable settings as they are now. */
static int read_pragmas(sqlite3 *db, sqlite_pragma_base *b) {
    memset(b, 0, sizeof *b);
    for (int i = 0; i < SQLITE_SESSION_PRAGMAS; i++) {
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA main.%s", restorable[i]);
        sqlite3_stmt *st = NULL;
        int src = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
        if (src == SQLITE_OK)
            src = sqlite3_step(st);
        if (src == SQLITE_ROW) {
            b->value[i] = sqlite3_column_int64(st, 0);
            b->known |= UINT32_C(1) << i;
            src = SQLITE_OK;
        } else if (src == SQLITE_DONE) {
            src = SQLITE_OK; /* compiled out: nothing to put back */
        }
        sqlite3_finalize(st);
        if (src != SQLITE_OK)
            return src;
    }
    static const char *const modes[] = {"PRAGMA main.journal_mode", "PRAGMA main.locking_mode"};
    char *bases[] = {b->journal, b->locking};
    for (int i = 0; i < 2; i++) {
        sqlite3_stmt *st = NULL;
        int src = sqlite3_prepare_v2(db, modes[i], -1, &st, NULL);
        if (src == SQLITE_OK)
            src = sqlite3_step(st);
        if (src == SQLITE_ROW && sqlite3_column_text(st, 0))
            snprintf(bases[i], sizeof b->journal, "%s", (const char *)sqlite3_column_text(st, 0));
        sqlite3_finalize(st);
        if (src != SQLITE_ROW && src != SQLITE_DONE)
            return src;
    }
    return SQLITE_OK;
}

/* The shared copies of the settings sessions start with: one per distinct
 * set, counted (usually one in the whole process). */
static pthread_mutex_t bases_lock = PTHREAD_MUTEX_INITIALIZER;
static sqlite_pragma_base *bases;

static bool same_base(const sqlite_pragma_base *a, const sqlite_pragma_base *b) {
    return a->known == b->known && memcmp(a->value, b->value, sizeof a->value) == 0 &&
           strcmp(a->journal, b->journal) == 0 && strcmp(a->locking, b->locking) == 0;
}

static void base_put(const sqlite_pragma_base *b) {
    if (!b)
        return;
    pthread_mutex_lock(&bases_lock);
    sqlite_pragma_base **at = &bases;
    while (*at && *at != b)
        at = &(*at)->next;
    if (*at && --(*at)->refs == 0) {
        sqlite_pragma_base *gone = *at;
        *at = gone->next;
        free(gone);
    }
    pthread_mutex_unlock(&bases_lock);
}

/* s->base becomes the shared copy of `now` (made when there is none). */
static bool base_set(sqlite_session *s, const sqlite_pragma_base *now) {
    pthread_mutex_lock(&bases_lock);
    sqlite_pragma_base *b = bases;
    while (b && !same_base(b, now))
        b = b->next;
    if (!b) {
        b = malloc(sizeof *b);
        if (!b) {
            pthread_mutex_unlock(&bases_lock);
            return false;
        }
        *b = *now;
        b->refs = 0;
        b->next = bases;
        bases = b;
    }
    b->refs++;
    pthread_mutex_unlock(&bases_lock);
    base_put(s->base);
    s->base = b;
    return true;
}

int dbpool__sqlite_session_watch(sqlite3 *db, sqlite_session *s, int busy_timeout_ms, bool memory,
                                 dbpool_error *e) {
    s->memory = memory;
    sqlite_pragma_base now;
    int src = read_pragmas(db, &now);
    if (src != SQLITE_OK)
        return dbpool__seterr(e, (src & 0xff) == SQLITE_NOMEM ? DBPOOL_ENOMEM : DBPOOL_ECONNECT,
                              "reading the new SQLite connection's settings failed: %s", sqlite3_errstr(src));
    int busy = pragma_index(restorable, SQLITE_SESSION_PRAGMAS, "busy_timeout");
    if (busy >= 0) { /* what the connection runs with once opened */
        now.value[busy] = busy_timeout_ms;
        now.known |= UINT32_C(1) << busy;
    }
    if (!base_set(s, &now))
        return dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory");
    sqlite3_set_authorizer(db, track, s);
    return DBPOOL_OK;
}

static void free_objects(sqlite_object *v, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(v[i].kind);
        free(v[i].name);
        free(v[i].sql);
    }
    free(v);
}

static char *dup_or_null(const unsigned char *s) { return s ? strdup((const char *)s) : NULL; }

/* false: out of memory. A cell read back NULL counts as that: these cells
 * are never NULL in the schema (bar an object's sql), so NULL is SQLite
 * failing to convert the text (a UTF-16 database). */
static bool push(sqlite_object **v, size_t *n, size_t *cap, const char *kind, const unsigned char *name,
                 const unsigned char *sql) {
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 8;
        sqlite_object *nv = realloc(*v, ncap * sizeof *nv);
        if (!nv)
            return false;
        *v = nv;
        *cap = ncap;
    }
    sqlite_object *o = &(*v)[*n];
    o->kind = kind ? strdup(kind) : NULL;
    o->name = dup_or_null(name);
    o->sql = dup_or_null(sql);
    (*n)++;
    return o->kind && o->name && (o->sql || !sql);
}

/* Temporary objects in the order they can be dropped (triggers and views
 * before the tables they use; SQLite's own sqlite_autoindex_... and
 * sqlite_sequence go with their tables), then the attached databases. The
 * temp schema and the list of databases are this connection's own: reading
 * them takes no lock on the main database, which another connection may
 * hold. */
static const char temp_sql[] =
    "SELECT type, name, sql FROM temp.sqlite_master WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
    "ORDER BY CASE type WHEN 'trigger' THEN 0 WHEN 'view' THEN 1 WHEN 'index' THEN 2 ELSE 3 END";

static int list_objects(sqlite3 *db, sqlite_object **out, size_t *nout) {
    sqlite_object *v = NULL;
    size_t n = 0, cap = 0;
    bool ok = true;
    sqlite3_stmt *st = NULL;
    int src = sqlite3_prepare_v2(db, temp_sql, -1, &st, NULL);
    if (src == SQLITE_OK) {
        while (ok && (src = sqlite3_step(st)) == SQLITE_ROW)
            ok = push(&v, &n, &cap, (const char *)sqlite3_column_text(st, 0), sqlite3_column_text(st, 1),
                      sqlite3_column_text(st, 2));
        if (ok && src == SQLITE_DONE)
            src = SQLITE_OK;
    }
    sqlite3_finalize(st);
#if SQLITE_VERSION_NUMBER >= 3039000
    /* 0 is main, 1 is temp; the attached ones follow, without gaps. */
    for (int i = 2; ok && src == SQLITE_OK && sqlite3_db_name(db, i); i++)
        ok = push(&v, &n, &cap, "database", (const unsigned char *)sqlite3_db_name(db, i), NULL);
#else
    if (ok && src == SQLITE_OK &&
        (src = sqlite3_prepare_v2(db, "PRAGMA database_list", -1, &st, NULL)) == SQLITE_OK) {
        while (ok && (src = sqlite3_step(st)) == SQLITE_ROW)
            if (sqlite3_column_int(st, 0) >= 2)
                ok = push(&v, &n, &cap, "database", sqlite3_column_text(st, 1), NULL);
        if (ok && src == SQLITE_DONE)
            src = SQLITE_OK;
        sqlite3_finalize(st);
    }
#endif
    if (!ok || src != SQLITE_OK) {
        free_objects(v, n);
        return ok ? src : SQLITE_NOMEM;
    }
    *out = v;
    *nout = n;
    return SQLITE_OK;
}

static bool same_text(const char *a, const char *b) { return a == b || (a && b && strcmp(a, b) == 0); }

/* o in list: by kind and name, and also by definition when `exact`. */
static bool listed(const sqlite_object *list, size_t n, const sqlite_object *o, bool exact) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i].kind, o->kind) == 0 && strcmp(list[i].name, o->name) == 0 &&
            (!exact || same_text(list[i].sql, o->sql)))
            return true;
    return false;
}

int dbpool__sqlite_session_baseline(sqlite3 *db, sqlite_session *s, dbpool_error *e) {
    /* Nothing made or dropped since the last baseline: it still holds. */
    if (s->dirty) {
        sqlite_object *now = NULL;
        size_t n = 0;
        int src = list_objects(db, &now, &n);
        if (src != SQLITE_OK)
            return dbpool__seterr(e, (src & 0xff) == SQLITE_NOMEM ? DBPOOL_ENOMEM : DBPOOL_ECONNECT,
                                  "listing what init_sql and after_connect set up on the new SQLite "
                                  "connection failed: %s",
                                  sqlite3_errstr(src));
        free_objects(s->baseline, s->nbaseline);
        s->baseline = now;
        s->nbaseline = n;
    }
    /* init_sql or after_connect set a PRAGMA: its value is the baseline. */
    if (s->pragmas || s->lost_pragma) {
        sqlite_pragma_base now;
        int src = read_pragmas(db, &now);
        if (src != SQLITE_OK)
            return dbpool__seterr(e, (src & 0xff) == SQLITE_NOMEM ? DBPOOL_ENOMEM : DBPOOL_ECONNECT,
                                  "reading the settings init_sql and after_connect left on the new SQLite "
                                  "connection failed: %s",
                                  sqlite3_errstr(src));
        if (!base_set(s, &now))
            return dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory");
    }
    s->dirty = s->touched = s->broken = s->exclusive = false;
    s->pragmas = 0;
    s->lost_pragma = 0;
    return DBPOOL_OK;
}

/* Write back the settings a caller changed; fail for one that cannot be. */
static int restore_pragmas(sqlite3 *db, sqlite_session *s, dbpool_error *e) {
    if (s->lost_pragma)
        return dbpool__seterr(e, DBPOOL_EQUERY,
                              "a caller set PRAGMA %s, which a reset cannot put back: the connection is "
                              "replaced",
                              unrestorable[s->lost_pragma - 1]);
    uint32_t changed = s->pragmas & s->base->known;
    if (!changed)
        return DBPOOL_OK;
    sqlite3_str *script = sqlite3_str_new(db);
    for (int i = 0; i < SQLITE_SESSION_PRAGMAS; i++)
        if (changed & (UINT32_C(1) << i))
            sqlite3_str_appendf(script, "PRAGMA main.%s=%lld;", restorable[i], (long long)s->base->value[i]);
    int src = sqlite3_str_errcode(script);
    char *sql = sqlite3_str_finish(script);
    char *msg = NULL;
    if (src == SQLITE_OK)
        src = sqlite3_exec(db, sql, NULL, NULL, &msg);
    sqlite3_free(sql);
    if (src != SQLITE_OK) {
        dbpool__seterr(e, DBPOOL_EQUERY, "restoring the PRAGMA settings a caller changed failed: %s",
                       msg ? msg : sqlite3_errstr(src));
        sqlite3_free(msg);
        return DBPOOL_EQUERY;
    }
    return DBPOOL_OK;
}

int dbpool__sqlite_session_clear(sqlite3 *db, sqlite_session *s, dbpool_error *e) {
    if (!s->dirty)
        return DBPOOL_OK;
    /* First: query_only would refuse the DROPs below. */
    int rc = restore_pragmas(db, s, e);
    if (rc != DBPOOL_OK)
        return rc;
    sqlite_object *now = NULL;
    size_t n = 0;
    int src = list_objects(db, &now, &n);
    if (src != SQLITE_OK)
        return dbpool__seterr(e, DBPOOL_EQUERY, "listing the temporary objects a caller left failed: %s",
                              sqlite3_errstr(src));
    /* The baseline must be there as it was: a caller that dropped or
     * redefined part of it left a session the next caller must not get. */
    for (size_t i = 0; s->touched && i < s->nbaseline; i++) {
        if (s->broken || !listed(now, n, &s->baseline[i], true)) {
            const sqlite_object *o = &s->baseline[s->broken ? s->broken_at : i];
            free_objects(now, n);
            return dbpool__seterr(
                e, DBPOOL_EQUERY,
                "a caller dropped or changed the %s '%.64s' that init_sql or after_connect set "
                "up (and that every lease starts with): the connection is replaced",
                o->kind, o->name);
        }
    }
    sqlite3_str *script = sqlite3_str_new(db);
    for (size_t i = 0; i < n; i++) {
        if (listed(s->baseline, s->nbaseline, &now[i], false))
            continue;
        if (strcmp(now[i].kind, "database") == 0)
            sqlite3_str_appendf(script, "DETACH DATABASE \"%w\";", now[i].name);
        else
            sqlite3_str_appendf(script, "DROP %s IF EXISTS temp.\"%w\";", now[i].kind, now[i].name);
    }
    free_objects(now, n);
    int built = sqlite3_str_errcode(script);
    char *sql = sqlite3_str_finish(script); /* NULL when empty */
    char *msg = NULL;
    /* Tables are dropped in no particular order: a caller's child table
     * would stop its parent's DROP. The setting is restored at once. */
    int fkeys = 0;
    sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_FKEY, -1, &fkeys);
    if (fkeys)
        sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_FKEY, 0, (int *)NULL);
    src = built != SQLITE_OK ? built : sql ? sqlite3_exec(db, sql, NULL, NULL, &msg) : SQLITE_OK;
    if (fkeys)
        sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_FKEY, 1, (int *)NULL);
    sqlite3_free(sql);
    if (src != SQLITE_OK) {
        dbpool__seterr(e, DBPOOL_EQUERY, "dropping the temporary objects a caller left failed: %s",
                       msg ? msg : sqlite3_errstr(src));
        sqlite3_free(msg);
        return DBPOOL_EQUERY;
    }
    /* our own PRAGMAs, DROPs and DETACHes set them again */
    s->dirty = s->touched = s->broken = false;
    s->pragmas = 0;
    return DBPOOL_OK;
}

bool dbpool__sqlite_session_ours(sqlite3 *db, sqlite_session *s) {
    /* SELECT asks the authorizer (SQLITE_SELECT) and names no table, so it
     * reads no schema. Refused by another authorizer, it is not ours. */
    unsigned before = s->heard;
    sqlite3_stmt *st = NULL;
    sqlite3_prepare_v2(db, "SELECT 1", -1, &st, NULL);
    sqlite3_finalize(st);
    return s->heard != before;
}

void dbpool__sqlite_session_free(sqlite_session *s) {
    base_put(s->base);
    s->base = NULL;
    free_objects(s->baseline, s->nbaseline);
    s->baseline = NULL;
    s->nbaseline = 0;
}
