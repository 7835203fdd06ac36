/* sqlite_session.c — see sqlite_session.h. */
#include "sqlite_session.h"

#include <string.h>

static int track(void *arg, int action, const char *what, const char *detail, const char *schema,
                 const char *trigger) {
    (void)what, (void)detail, (void)trigger;
    sqlite_session *s = arg;
    /* CREATE TEMP TABLE x has codes of its own; CREATE TABLE temp.x is an
     * ordinary CREATE in the schema "temp". */
    bool in_temp = schema && strcmp(schema, "temp") == 0;
    bool makes = action == SQLITE_CREATE_TEMP_TABLE || action == SQLITE_CREATE_TEMP_INDEX ||
                 action == SQLITE_CREATE_TEMP_TRIGGER || action == SQLITE_CREATE_TEMP_VIEW ||
                 action == SQLITE_ATTACH ||
                 (in_temp && (action == SQLITE_CREATE_TABLE || action == SQLITE_CREATE_INDEX ||
                              action == SQLITE_CREATE_TRIGGER || action == SQLITE_CREATE_VIEW ||
                              action == SQLITE_CREATE_VTABLE));
    if (makes) {
        s->dirty = true;
        s->marks++;
    }
    return SQLITE_OK; /* it only watches: nothing is refused */
}

void dbpool__sqlite_session_watch(sqlite3 *db, sqlite_session *s) { sqlite3_set_authorizer(db, track, s); }

/* Attached databases and temporary objects, in the order they can be
 * dropped: triggers and views before the tables they use, databases last.
 * SQLite's own objects (sqlite_autoindex_..., sqlite_sequence) go with
 * their tables. */
static const char list_sql[] =
    "SELECT kind, name FROM ("
    "SELECT type AS kind, name FROM temp.sqlite_master WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
    "UNION ALL SELECT 'database', name FROM pragma_database_list WHERE name NOT IN ('main', 'temp')) "
    "ORDER BY CASE kind WHEN 'trigger' THEN 0 WHEN 'view' THEN 1 WHEN 'index' THEN 2 WHEN 'table' THEN 3 "
    "ELSE 4 END";

/* *out: "kind name\n" per object, NULL when there are none. */
static int list_objects(sqlite3 *db, char **out) {
    *out = NULL;
    sqlite3_stmt *st = NULL;
    int src = sqlite3_prepare_v2(db, list_sql, -1, &st, NULL);
    if (src != SQLITE_OK)
        return src;
    sqlite3_str *list = sqlite3_str_new(db);
    while ((src = sqlite3_step(st)) == SQLITE_ROW)
        sqlite3_str_appendf(list, "%s %s\n", (const char *)sqlite3_column_text(st, 0),
                            (const char *)sqlite3_column_text(st, 1));
    sqlite3_finalize(st);
    int len = sqlite3_str_length(list);
    char *text = sqlite3_str_finish(list);
    if (src != SQLITE_DONE || (len > 0 && !text)) {
        sqlite3_free(text);
        return src != SQLITE_DONE ? src : SQLITE_NOMEM;
    }
    if (len == 0) {
        sqlite3_free(text);
        text = NULL;
    }
    *out = text;
    return SQLITE_OK;
}

static bool in_list(const char *list, const char *line, size_t len) {
    for (const char *l = list; l && *l;) {
        const char *end = strchr(l, '\n');
        size_t n = end ? (size_t)(end - l) + 1 : strlen(l);
        if (n == len && memcmp(l, line, len) == 0)
            return true;
        l += n;
    }
    return false;
}

void dbpool__sqlite_session_baseline(sqlite3 *db, sqlite_session *s) {
    /* Nothing made since the last baseline: it still holds. */
    char *now;
    if (s->dirty && list_objects(db, &now) == SQLITE_OK) {
        sqlite3_free(s->baseline);
        s->baseline = now;
    }
    s->dirty = false;
}

int dbpool__sqlite_session_clear(sqlite3 *db, sqlite_session *s, dbpool_error *e) {
    if (!s->dirty)
        return DBPOOL_OK;
    char *now;
    int src = list_objects(db, &now);
    if (src != SQLITE_OK)
        return dbpool__seterr(e, DBPOOL_EQUERY, "listing the temporary objects a caller left failed: %s",
                              sqlite3_errmsg(db));
    sqlite3_str *script = sqlite3_str_new(db);
    for (const char *l = now; l && *l;) {
        const char *end = strchr(l, '\n');
        size_t len = end ? (size_t)(end - l) + 1 : strlen(l);
        if (!in_list(s->baseline, l, len)) {
            const char *space = memchr(l, ' ', len);
            size_t kind_len = space ? (size_t)(space - l) : 0;
            int name_len = space ? (int)(len - kind_len - 2) : 0; /* without the space and the newline */
            if (kind_len == 8 && memcmp(l, "database", 8) == 0)
                sqlite3_str_appendf(script, "DETACH DATABASE \"%.*w\";", name_len, space + 1);
            else if (kind_len > 0)
                sqlite3_str_appendf(script, "DROP %.*s IF EXISTS temp.\"%.*w\";", (int)kind_len, l, name_len,
                                    space + 1);
        }
        l += len;
    }
    sqlite3_free(now);
    char *sql = sqlite3_str_finish(script);
    char *msg = NULL;
    src = sql ? sqlite3_exec(db, sql, NULL, NULL, &msg) : SQLITE_OK;
    sqlite3_free(sql);
    if (src != SQLITE_OK) {
        dbpool__seterr(e, DBPOOL_EQUERY, "dropping the temporary objects a caller left failed: %s",
                       msg ? msg : sqlite3_errstr(src));
        sqlite3_free(msg);
        return DBPOOL_EQUERY;
    }
    s->dirty = false;
    return DBPOOL_OK;
}

void dbpool__sqlite_session_free(sqlite_session *s) {
    sqlite3_free(s->baseline);
    s->baseline = NULL;
}
