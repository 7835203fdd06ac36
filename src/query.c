/* query.c — the unified query API over every backend, and the health
 * check. Errors that mean "this connection is dead" mark the lease so that
 * release closes it instead of pooling it. */
#include "pool_internal.h"

#include <stdlib.h>
#include <string.h>

dbpool_param dbpool_param_text(const char *s) {
    dbpool_param p;
    if (!s)
        return dbpool_param_null();
    p.type = DBPOOL_TYPE_TEXT;
    p.v.text.ptr = s;
    p.v.text.len = strlen(s);
    return p;
}

/* SQL with nothing to run: only white space and semicolons. The backends
 * disagree about it (SQLite and PostgreSQL run nothing, MySQL/MariaDB
 * fail with "Query was empty"), so it is answered here, the same on all.
 * Asked at every statement, whose first byte almost always answers it: a
 * loop here, where strspn's call and setup of its set took 4 ns of a
 * SELECT 1 on SQLite. */
bool dbpool__sql_is_blank(const char *sql) {
    for (;; sql++) {
        switch (*sql) {
        case ' ':
        case '\t':
        case '\r':
        case '\n':
        case '\f':
        case '\v':
        case ';':
            continue;
        case '\0':
            return true;
        default:
            return false;
        }
    }
}

static bool lease_ok(const dbpool_conn *c) {
    return c && c->magic == DBPOOL_CONN_MAGIC && dbpool__conn_held(c);
}

static int check_args(const dbpool_conn *c, const char *sql, const dbpool_param *params, size_t n,
                      dbpool_error *e) {
    if (!lease_ok(c))
        return dbpool__seterr(e, DBPOOL_EMISUSE, "not a lease (released already, or never acquired)");
    /* A lease inherited across fork() is the parent's session: a statement
     * from the child would go out on the parent's socket (or file). */
    if (dbpool__forked(c->pool))
        return dbpool__fork_error(e);
    if (!sql)
        return dbpool__seterr(e, DBPOOL_EINVAL, "sql must not be NULL");
    if (n > 0 && !params)
        return dbpool__seterr(e, DBPOOL_EINVAL, "%zu parameters announced but params is NULL", n);
    if (n > 0 && dbpool__sql_is_blank(sql))
        return dbpool__seterr(e, DBPOOL_EINVAL, "%zu parameters were given but the SQL holds no statement",
                              n);
    for (size_t i = 0; i < n; i++) {
        if (params[i].type < DBPOOL_TYPE_NULL || params[i].type > DBPOOL_TYPE_BLOB)
            return dbpool__seterr(e, DBPOOL_EINVAL, "parameter %zu has unknown type %d", i + 1,
                                  (int)params[i].type);
        if (params[i].type == DBPOOL_TYPE_TEXT && !params[i].v.text.ptr && params[i].v.text.len)
            return dbpool__seterr(e, DBPOOL_EINVAL, "parameter %zu is text with a NULL pointer", i + 1);
        if (params[i].type == DBPOOL_TYPE_BLOB && !params[i].v.blob.ptr && params[i].v.blob.len)
            return dbpool__seterr(e, DBPOOL_EINVAL,
                                  "parameter %zu is a blob of %zu bytes with a NULL pointer", i + 1,
                                  params[i].v.blob.len);
    }
    return DBPOOL_OK;
}

/*
 * The client's backstop for a caller's statement (design.md#statement-
 * deadlines): with statement_timeout_ms set, the server's own limit ends a
 * long statement with a clean error, and the call is also cut off on the
 * client at statement_timeout_ms + validation_timeout_ms, for a server that
 * stopped answering (stopped, partitioned away) and so never enforces its
 * own limit. 0: no statement_timeout_ms, no bound (as before).
 *
 * The backstop is made from the pool's limit, so it stands aside where the
 * session's may be another: init_sql names the server's setting (for every
 * lease), or a statement of this lease did, this one included (until the
 * release finds the session as the pool made it: dbpool__needs_reset, the
 * reset in release.c). Those statements run unbounded, as before the
 * backstop existed. The driver knows only the text (names_statement_limit).
 */
static int64_t statement_deadline(dbpool_conn *c, const char *sql) {
    const dbpool *p = c->pool;
    int64_t stmt = p->opt.statement_timeout_ms;
    if (stmt <= 0 || p->init_sql_owns_limit || c->own_limit)
        return 0;
    /* From the call's start: the scans of the text (this one, the
     * driver's) count against the bound, which a 24 MB text can feel. */
    int64_t grace = p->opt.validation_timeout_ms;
    int64_t deadline = dbpool__deadline_after_ms(stmt > INT64_MAX - grace ? INT64_MAX : stmt + grace);
    if (p->driver->names_statement_limit && p->driver->names_statement_limit(sql)) {
        c->own_limit = true;
        return 0;
    }
    return deadline;
}

/* Cancellation off around a statement call on c (internal.h), unless the
 * driver says the connection reaches no cancellation point (SQLite
 * through dbpool's VFS): then the pair of pthread_setcancelstate calls,
 * about 12 ns, is saved three times a statement. Returns what
 * nocancel_done takes: the state to restore, or NO_PAIR. */
#define NO_PAIR (-1)
static int nocancel_for(const dbpool_conn *c) {
    const dbpool_driver *d = c->pool->driver;
    return d->cancel_free && d->cancel_free(c->native) ? NO_PAIR : dbpool__nocancel_begin();
}

/* A result's next and free: only where it steps (SQLite). */
static int nocancel_for_result(const dbpool_result *r) {
    if (!r->ops->steps)
        return NO_PAIR;
    return r->lease ? nocancel_for(r->lease) : dbpool__nocancel_begin();
}

static void nocancel_done(int state) {
    if (state != NO_PAIR)
        dbpool__nocancel_end(state);
}

static int after_call(dbpool_conn *c, int rc, int64_t deadline_ns, dbpool_error *e) {
    if (rc == DBPOOL_OK)
        return rc;
    dbpool *p = c->pool;
    if (rc == DBPOOL_ETIMEDOUT && deadline_ns) {
        /* The backstop fired: the statement may still be running, its
         * answer may still come. Never hand this connection out again. */
        c->broken = true;
        char detail[sizeof e->message];
        memcpy(detail, e->message, sizeof detail);
        dbpool__seterr(e, DBPOOL_ETIMEDOUT,
                       "the statement got no answer within statement_timeout_ms %lld + validation_timeout_ms "
                       "%lld: the server or the network stopped answering (a working server ends a statement "
                       "at statement_timeout_ms itself); the connection is closed when this lease is "
                       "released: release it, retry on a new lease, and check the server (%s)",
                       (long long)p->opt.statement_timeout_ms, (long long)p->opt.validation_timeout_ms,
                       detail);
        dbpool__log(
            p, DBPOOL_LOG_WARN,
            "connection #%llu: a statement got no answer by its deadline; it will be closed on release",
            (unsigned long long)c->id);
        dbpool__finish_err(p, e);
        return rc;
    }
    if (p->driver->is_broken(c->native, e)) {
        /* Logged once, when the lease breaks: further statements on it
         * fail at once and say so to their caller. */
        bool newly = !c->broken;
        c->broken = true;
        /* The first error on a lost session is the server's or the client
         * library's ("terminating connection due to administrator
         * command"), which says why but not what to do now. (Unless a
         * driver said it already, or said what helps instead.) */
        if (!strstr(e->message, "acquire another") && !strstr(e->message, "closed when") &&
            !strstr(e->message, "closed on release"))
            dbpool__suffix_err(e, "; this connection cannot be used again: release the lease (it is closed) "
                                  "and acquire another");
        if (newly)
            dbpool__log(p, DBPOOL_LOG_WARN, "connection #%llu is broken and will be closed on release",
                        (unsigned long long)c->id);
    }
    dbpool__finish_err(p, e);
    return rc;
}

int dbpool_exec(dbpool_conn *c, const char *sql, const dbpool_param *params, size_t nparams,
                int64_t *affected, dbpool_error *err) {
    dbpool__clearerr(err);
    if (affected)
        *affected = 0;
    int rc = check_args(c, sql, params, nparams, err);
    if (rc != DBPOOL_OK)
        return rc;
    if (dbpool__sql_is_blank(sql))
        return DBPOOL_OK; /* nothing to run, on every backend */
    dbpool_error local;
    dbpool_error *e = err ? err : &local;
    dbpool__clearerr(e);
    int64_t deadline = statement_deadline(c, sql);
    c->touched = true;
    /* Not cut off by a cancel (internal.h): a statement left half-way
     * on the connection would answer the next lease's. */
    int cancel_state = nocancel_for(c);
    rc = c->pool->driver->exec(c->native, sql, params, nparams, affected, deadline, e);
    rc = after_call(c, rc, deadline, e);
    nocancel_done(cancel_state);
    return rc;
}

int dbpool_query(dbpool_conn *c, const char *sql, const dbpool_param *params, size_t nparams,
                 dbpool_result **out, dbpool_error *err) {
    dbpool__clearerr(err);
    if (!out)
        return dbpool__seterr(err, DBPOOL_EINVAL, "out must not be NULL");
    *out = NULL;
    int rc = check_args(c, sql, params, nparams, err);
    if (rc != DBPOOL_OK)
        return rc;
    if (dbpool__sql_is_blank(sql))
        return dbpool__seterr(err, DBPOOL_EINVAL,
                              "the query is empty: dbpool_query needs a statement (use dbpool_exec for "
                              "statements that return no rows)");
    dbpool_error local;
    dbpool_error *e = err ? err : &local;
    dbpool__clearerr(e);
    int64_t deadline = statement_deadline(c, sql);
    c->touched = true;
    int cancel_state = nocancel_for(c); /* as in dbpool_exec */
    rc = c->pool->driver->query(c->native, sql, params, nparams, out, deadline, e);
    if (rc == DBPOOL_OK && *out) {
        (*out)->lease = c;
        c->open_results++;
    }
    rc = after_call(c, rc, deadline, e);
    nocancel_done(cancel_state);
    return rc;
}

int dbpool_result_next(dbpool_result *r, dbpool_error *err) {
    dbpool__clearerr(err);
    if (!r)
        return dbpool__seterr(err, DBPOOL_EINVAL, "result is NULL");
    if (r->lease && dbpool__forked(r->lease->pool))
        return dbpool__fork_error(err);
    dbpool_error local;
    dbpool_error *e = err ? err : &local;
    dbpool__clearerr(e);
    /* Local: every backend's rows are in memory by now (SQLite steps its
     * own file, bounded by busy_timeout), so no deadline here. */
    int cancel_state = nocancel_for_result(r); /* SQLite steps: file I/O, lock waits */
    int rc = r->ops->next(r, e);
    if (rc < 0 && r->lease)
        after_call(r->lease, rc, 0, e);
    nocancel_done(cancel_state);
    return rc;
}

int dbpool_result_columns(const dbpool_result *r) { return r ? r->ops->columns(r) : 0; }

static bool col_ok(const dbpool_result *r, int col) { return r && col >= 0 && col < r->ops->columns(r); }

const char *dbpool_result_column_name(const dbpool_result *r, int col) {
    return col_ok(r, col) ? r->ops->column_name(r, col) : NULL;
}
bool dbpool_result_is_null(const dbpool_result *r, int col) {
    return col_ok(r, col) ? r->ops->is_null(r, col) : true;
}
/* A backend whose cells are text (no int64 / dbl of its own) is read the
 * way strtoll and strtod read it, strtod as in the "C" locale. */
int64_t dbpool_result_int64(const dbpool_result *r, int col) {
    if (!col_ok(r, col))
        return 0;
    if (r->ops->int64)
        return r->ops->int64(r, col);
    const char *v = r->ops->text(r, col, NULL);
    return v ? strtoll(v, NULL, 10) : 0;
}
double dbpool_result_double(const dbpool_result *r, int col) {
    if (!col_ok(r, col))
        return 0.0;
    if (r->ops->dbl)
        return r->ops->dbl(r, col);
    const char *v = r->ops->text(r, col, NULL);
    return v ? dbpool__strtod_c(v, NULL) : 0.0; /* a server's '.', under any LC_NUMERIC */
}
const char *dbpool_result_text(const dbpool_result *r, int col, size_t *len) {
    if (!col_ok(r, col)) {
        if (len)
            *len = 0;
        return NULL;
    }
    return r->ops->text(r, col, len);
}
const void *dbpool_result_blob(const dbpool_result *r, int col, size_t *len) {
    size_t ignored;
    if (!len)
        len = &ignored;
    if (!col_ok(r, col)) {
        *len = 0;
        return NULL;
    }
    return r->ops->blob ? r->ops->blob(r, col, len) : r->ops->text(r, col, len);
}
void dbpool_result_free(dbpool_result *r) {
    if (!r)
        return;
    int cancel_state = nocancel_for_result(r); /* SQLite's reset may finish a write */
    if (r->lease)
        r->lease->open_results--;
    r->ops->free(r);
    nocancel_done(cancel_state);
}

static int check_health(dbpool *p, dbpool_health *out, dbpool_error *err);

/* Bounded (acquire_timeout_ms plus one validation): run whole, with no
 * lease left out by a cancel during its ping (internal.h). */
int dbpool_check_health(dbpool *p, dbpool_health *out, dbpool_error *err) {
    int cancel_state = dbpool__nocancel_begin();
    int rc = check_health(p, out, err);
    dbpool__nocancel_end(cancel_state);
    return rc;
}

static int check_health(dbpool *p, dbpool_health *out, dbpool_error *err) {
    dbpool__clearerr(err);
    if (!p || !out)
        return dbpool__seterr(err, DBPOOL_EINVAL, "dbpool_check_health: pool and out must not be NULL");
    memset(out, 0, sizeof *out);
    out->backend = p->driver->name;
    out->status = DBPOOL_UNHEALTHY;
    int64_t t0 = dbpool__now_ns();
    dbpool_conn *c = NULL;
    int rc = dbpool_acquire(p, -1, &c, &out->error);
    int64_t t1 = dbpool__now_ns();
    out->acquire_ms = (double)(t1 - t0) / 1e6;
    if (rc == DBPOOL_OK) {
        if (c->validated_rtt_ns > 0) {
            /* The acquire has just checked this connection with the same
             * round trip: that one is the check's. A second would make the
             * check take up to acquire_timeout_ms plus two
             * validation_timeout_ms, past its bound (include/dbpool.h). */
            out->round_trip_ms = (double)c->validated_rtt_ns / 1e6;
        } else {
            int64_t deadline = dbpool__deadline_after_ms(p->opt.validation_timeout_ms);
            c->touched = true;
            rc = p->driver->ping(c->native, deadline, &out->error);
            out->round_trip_ms = (double)(dbpool__now_ns() - t1) / 1e6;
        }
        if (rc == DBPOOL_OK) {
            p->driver->server_version(c->native, out->server_version, sizeof out->server_version);
            out->status = DBPOOL_HEALTHY;
            dbpool_release(c);
        } else {
            dbpool__note_validation_bound(p, &out->error);
            dbpool__finish_err(p, &out->error);
            dbpool_discard(c);
        }
    }
    if (rc != DBPOOL_OK && err)
        *err = out->error;
    return rc;
}
