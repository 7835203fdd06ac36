/* sqlite_session.c — see sqlite_session.h. */
#include "sqlite_session.h"

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

static int track(void *arg, int action, const char *what, const char *detail, const char *schema,
                 const char *trigger) {
    (void)trigger;
    sqlite_session *s = arg;
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

void dbpool__sqlite_session_watch(sqlite3 *db, sqlite_session *s) { sqlite3_set_authorizer(db, track, s); }

static void free_objects(sqlite_object *v, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(v[i].kind);
        free(v[i].name);
        free(v[i].sql);
    }
    free(v);
}

static char *dup_or_null(const unsigned char *s) { return s ? strdup((const char *)s) : NULL; }

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
    o->kind = strdup(kind);
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
            return dbpool__seterr(e, DBPOOL_ECONNECT,
                                  "listing what init_sql and after_connect set up on the new SQLite "
                                  "connection failed: %s",
                                  sqlite3_errstr(src));
        free_objects(s->baseline, s->nbaseline);
        s->baseline = now;
        s->nbaseline = n;
    }
    s->dirty = s->touched = s->broken = false;
    return DBPOOL_OK;
}

int dbpool__sqlite_session_clear(sqlite3 *db, sqlite_session *s, dbpool_error *e) {
    if (!s->dirty)
        return DBPOOL_OK;
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
    s->dirty = s->touched = s->broken = false; /* our own DROPs and DETACHes set them again */
    return DBPOOL_OK;
}

void dbpool__sqlite_session_free(sqlite_session *s) {
    free_objects(s->baseline, s->nbaseline);
    s->baseline = NULL;
    s->nbaseline = 0;
}
