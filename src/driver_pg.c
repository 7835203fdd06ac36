/*
 * driver_pg.c — the PostgreSQL backend, over libpq.
 *
 * The URL (dbpool's pool_* keys already removed) is handed to libpq as is;
 * libpq parses it, so multi-host lists, target_session_attrs, sslmode and
 * every other libpq keyword work, and unknown keys are rejected.
 *
 * Everything that happens before a caller holds the connection (connect,
 * validation, reset) is non-blocking and bounded by the caller's deadline.
 * Statements run on behalf of the caller block as libpq does when the pool
 * has no statement_timeout_ms; with one, the server's statement_timeout
 * bounds them and the core's backstop deadline cuts them off on the client
 * (pg_bounded.h) when the server stops answering.
 *
 * Known limits:
 *  - Placeholders are `?` outside quotes and comments. PostgreSQL's own
 *    `?`, `?|`, `?&` and `??` operators (jsonb, geometry) cannot be used in a
 *    statement that has parameters; without parameters the SQL is sent
 *    verbatim, so they work there. Strings are assumed to follow
 *    standard_conforming_strings=on (the default since 9.1).
 *  - Parameters are sent as text: int64 typed integer (bigint when it does
 *    not fit), double typed double precision, text and NULL untyped so the
 *    server infers their type from the context. Write ?::numeric etc. where
 *    the context does not say.
 *  - With a multi-host URL the deadline covers all hosts together: libpq's
 *    per-host connect_timeout only works in its blocking connect, so a deaf
 *    first host uses up the whole budget.
 *  - The connect error is classified from libpq's message text (no SQLSTATE
 *    is exposed before the connection exists); servers with a non-English
 *    lc_messages report authentication failures as DBPOOL_ECONNECT.
 */
#include "driver.h"
#include "pg_bounded.h"
#include "pg_lexer.h"
#include "pg_placeholders.h"
#include "pg_session_sql.h"
#include "pg_stmt_cache.h"
#include "internal.h"

#include <libpq-fe.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <pwd.h>
#include <stdatomic.h>
#include <unistd.h>

/* From the server's catalog/pg_type_d.h, which libpq-dev does not ship. */
#define PG_OID_INT4 23
#define PG_OID_INT8 20
#define PG_OID_FLOAT4 700
#define PG_OID_FLOAT8 701
#define PG_OID_NUMERIC 1700
#define PG_OID_BIT 1560
#define PG_OID_VARBIT 1562
#define PG_OID_BYTEA 17
#define PG_OID_BOOL 16
/* The protocol's limit on bound parameters (a 16-bit count). */
#define PG_MAX_PARAMS 65535

/* ------------------------------------------------------------------------ */
/* Configuration                                                            */
/* ------------------------------------------------------------------------ */

#define PG_MAX_SECRETS 8

static const char *const tls_file_keys[] = {"sslrootcert", "sslcert", "sslkey", "sslcrl", "sslcrldir"};
#define PG_NTLSFILES (sizeof tls_file_keys / sizeof *tls_file_keys)

typedef struct pg_config {
    char *conninfo;     /* the URL handed to libpq */
    bool no_key_prompt; /* pass NO_KEY_PASSPHRASE as sslpassword (see there) */
    /* The URL's relative TLS file paths, made absolute at dbpool_open and
     * passed after the URL (so they win): libpq reads the files at each
     * connect, and a program that changes directory afterwards (a daemon's
     * chdir("/")) would have every later connect fail. */
    const char *abs_keys[PG_NTLSFILES];
    char *abs_vals[PG_NTLSFILES];
    size_t nabs;
    /* Every TLS file the URL names (absolute), checked at each connect:
     * libpq itself ignores a missing sslrootcert under sslmode=require or
     * prefer (and so does not check the server's certificate it was
     * asked to check), a missing sslcrl (no revocation check) and a
     * missing sslcert (no client certificate). Not under sslmode=disable. */
    const char *file_keys[PG_NTLSFILES];
    char *file_paths[PG_NTLSFILES];
    size_t nfiles;
    char *secret_store[PG_MAX_SECRETS];      /* owned strings */
    const char *secrets[PG_MAX_SECRETS + 1]; /* NULL-terminated view */
} pg_config;

/* Settings the server reports to the client whenever they change: what
 * a caller sets on the native handle that the reset can see. Not
 * in_hot_standby, which is the server's, nor the fixed ones. */
static const char *const reported_settings[] = {
    "application_name",      "client_encoding", "DateStyle",
    "IntervalStyle",         "TimeZone",        "standard_conforming_strings",
    "session_authorization", "is_superuser",    "search_path",
};
#define PG_NREPORTED (sizeof reported_settings / sizeof *reported_settings)

/* One connection: libpq's handle (what callers see as the native handle),
 * what a reset needs to put the session back as it was made, and the
 * statements kept prepared on it. */
typedef struct pg_session {
    /* Pointers and 8-byte fields first, the small ones packed after them:
     * this struct is most of dbpool's own memory per PostgreSQL connection
     * (the goal: under 512 bytes of bookkeeping in all). */
    PGconn *pg;
    int64_t statement_timeout_ms; /* set on connect; DISCARD ALL drops it */
    pg_stmt_cache *stmts;         /* made at the first parameterised statement */
    /* The native handle was given out (dbpool_conn_native): what a caller
     * may have set on it that outlives the lease and is not the server's
     * (a notice processor or receiver and its argument, nonblocking mode)
     * is checked at release and put back as the session started. */
    PQnoticeProcessor processor0; /* as after init_sql and after_connect; dbpool's own: quiet_notices */
    PQnoticeReceiver receiver0;   /* ditto (libpq's own: default_receiver) */
    /* The server's reports (ParameterStatus) of the settings below, as
     * after init_sql and after_connect: one that differs at the release of
     * a lent handle was set there (PQsetClientEncoding, a SET on the
     * native handle), and the release runs DISCARD ALL. Kept as one hash
     * of them all, not copies: nine strings per connection were 366 bytes. */
    uint64_t reported0;
    pg_session_effect effect;     /* what statements may have left beyond ROLLBACK */
    PGVerbosity verbosity0;       /* as after init_sql and after_connect */
    PGContextVisibility context0; /* ditto */
    bool watching_client;         /* client_connection_check_interval set; DISCARD ALL drops it */
    bool keep_statements;         /* the pool's statement_cache */
    bool lent;
    bool nonblocking0;            /* as after init_sql and after_connect */
    bool traced_by_after_connect; /* after_connect had the handle: a PQtrace may be its */
    bool gave_up;                 /* a caller's statement got no answer by its deadline: the
                                     connection is busy with it for ever, and only fit to close */
} pg_session;

static void note_reported(pg_session *ps);

/* libpq's own notice receiver (whose argument is NULL): the same function
 * for every connection, read at each connect. */
static _Atomic(PQnoticeReceiver) default_receiver;

static PGconn *pg_of(void *native) { return native ? ((pg_session *)native)->pg : NULL; }

/* Defaults that keep pooled connections alive through NAT and firewalls
 * and notice a dead peer within about a minute instead of hours. They come
 * before the URL in the keyword list, so a value the URL sets wins.
 * keepalives itself is not among them: on is libpq's own default, and
 * libpq keeps a copy of each keyword's value per connection (32 bytes of
 * the pool's memory per connection each). */
static const char *const default_keys[] = {
    "keepalives_idle",  "keepalives_interval",       "keepalives_count",
    "tcp_user_timeout", "fallback_application_name",
};
static const char *const default_values[] = {
    "30", "10", "3", "30000", "dbpool",
};
#define PG_NDEFAULTS (sizeof default_keys / sizeof *default_keys)

/* With no sslpassword, libpq leaves an encrypted sslkey to OpenSSL's
 * default passphrase callback, which writes "Enter PEM pass phrase:" to
 * the terminal or stderr and reads the answer from the terminal or stdin:
 * a library that blocks its host on the terminal, past any deadline. A
 * passphrase of dbpool's own makes such a key fail to load at once
 * instead ("bad decrypt"), and an unencrypted key never uses it. Not when
 * the URL names a service, whose file may hold the real sslpassword (the
 * keywords dbpool passes would override it). */
#define NO_KEY_PASSPHRASE "dbpool: no sslpassword given"

/* Could libpq load a client key without the URL naming one? Only with a
 * client certificate it finds by itself: PGSSLCERT or PGSSLKEY, or the
 * default ~/.postgresql/postgresql.crt. Else NO_KEY_PASSPHRASE is not
 * passed: libpq keeps a copy of it per connection, about 48 bytes of the
 * pool's memory per connection for nothing. */
static bool has_default_cert(const char *home) {
    char path[4096];
    int n = snprintf(path, sizeof path, "%s/.postgresql/postgresql.crt", home);
    return n < 0 || (size_t)n >= sizeof path || access(path, F_OK) == 0;
}

static bool may_load_client_key(void) {
    if (getenv("PGSSLCERT") || getenv("PGSSLKEY"))
        return true;
    /* libpq's home: $HOME in newer versions, the password file's in older
     * ones: either will do. */
    const char *home = getenv("HOME");
    if (home && *home && has_default_cert(home))
        return true;
    char pwbuf[1024];
    struct passwd pw, *found = NULL;
    if (getpwuid_r(geteuid(), &pw, pwbuf, sizeof pwbuf, &found) != 0 || !found || !found->pw_dir)
        return !(home && *home); /* cannot tell: as if it could, unless $HOME said no */
    return has_default_cert(found->pw_dir);
}

static void free_config(void *p) {
    pg_config *cfg = p;
    if (!cfg)
        return;
    free(cfg->conninfo);
    for (size_t i = 0; i < cfg->nabs; i++)
        free(cfg->abs_vals[i]);
    for (size_t i = 0; i < cfg->nfiles; i++)
        free(cfg->file_paths[i]);
    for (size_t i = 0; i < PG_MAX_SECRETS; i++)
        free(cfg->secret_store[i]);
    free(cfg);
}

static const char *const *secrets(const void *p) {
    const pg_config *cfg = p;
    return cfg && cfg->secrets[0] ? cfg->secrets : NULL;
}

/* The password exactly as written in the URL's userinfo, located the way
 * libpq does it (the authority ends at '@' or '/'). NULL if none, or
 * with *lost set when there is one but no memory for its copy. */
static char *raw_url_password(const char *url, bool *lost) {
    const char *s = strstr(url, "://");
    if (!s)
        return NULL;
    s += 3;
    const char *p = s;
    while (*p && *p != '@' && *p != '/')
        p++;
    if (*p != '@')
        return NULL;
    const char *colon = memchr(s, ':', (size_t)(p - s));
    if (!colon || colon + 1 == p)
        return NULL;
    size_t n = (size_t)(p - colon - 1);
    char *out = malloc(n + 1);
    if (out) {
        memcpy(out, colon + 1, n);
        out[n] = '\0';
    } else {
        *lost = true;
    }
    return out;
}

/* Every byte outside RFC 3986's unreserved set as %XX. */
static char *pct_encode(const char *s) {
    static const char hex[] = "0123456789ABCDEF";
    char *out = malloc(strlen(s) * 3 + 1);
    if (!out)
        return NULL;
    char *o = out;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (isalnum(*p) || *p == '-' || *p == '.' || *p == '_' || *p == '~') {
            *o++ = (char)*p;
        } else {
            *o++ = '%';
            *o++ = hex[*p >> 4];
            *o++ = hex[*p & 15];
        }
    }
    *o = '\0';
    return out;
}

/* Take ownership of s as a secret unless it is empty or already listed. */
static void add_secret(pg_config *cfg, char *s) {
    if (!s)
        return;
    size_t n = 0;
    while (n < PG_MAX_SECRETS && cfg->secret_store[n]) {
        if (strcmp(cfg->secret_store[n], s) == 0) {
            free(s);
            return;
        }
        n++;
    }
    if (n == PG_MAX_SECRETS || !*s) {
        free(s);
        return;
    }
    cfg->secret_store[n] = s;
    cfg->secrets[n] = s;
    cfg->secrets[n + 1] = NULL;
}

/* "X; X" (or X three times...) -> "X": libpq repeats its whole message
 * when it tried twice with the same outcome (sslmode=prefer tries TLS,
 * then no TLS: a wrong password was reported twice, word for word). */
static void drop_repeats(char *msg) {
    size_t len = strlen(msg);
    for (size_t i = 1; i + 2 < len; i++) {
        if (msg[i] != ';' || msg[i + 1] != ' ')
            continue;
        size_t o = i;
        while (o + 2 + i <= len && msg[o] == ';' && msg[o + 1] == ' ' && memcmp(msg + o + 2, msg, i) == 0)
            o += 2 + i;
        if (o == len) {
            msg[i] = '\0';
            return;
        }
    }
}

/* Join libpq's multi-line messages (one line per host tried, hints on
 * lines of their own) into one line of at most cap bytes: a run of white
 * space with a newline becomes "; ", any other run one space; the ends are
 * trimmed. A message that only repeats itself is said once. */
static void one_line(char *msg, size_t cap) {
    if (cap == 0)
        return;
    char src[1024];
    dbpool__strlcpy(src, msg, sizeof src);
    size_t o = 0;
    bool space = false, newline = false;
    for (const char *p = src; *p; p++) {
        if (isspace((unsigned char)*p)) {
            space = o > 0;
            newline = newline || *p == '\n';
            continue;
        }
        bool semi = space && newline && msg[o - 1] != ';' && msg[o - 1] != ':';
        if (o + (size_t)semi + (size_t)space + 2 > cap)
            break;
        if (semi)
            msg[o++] = ';';
        if (space)
            msg[o++] = ' ';
        space = newline = false;
        msg[o++] = *p;
    }
    msg[o] = '\0';
    drop_repeats(msg);
}

static int configure(const char *url, void **out, dbpool_error *e) {
    *out = NULL;
    pg_config *cfg = calloc(1, sizeof *cfg);
    if (!cfg)
        return dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory reading the PostgreSQL URL");
    cfg->conninfo = dbpool__strdup(url);
    if (!cfg->conninfo) {
        free_config(cfg);
        return dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory reading the PostgreSQL URL");
    }
    /* libpq only recognises the scheme in lower case; the registry matched
     * it case-insensitively. */
    char *colon = cfg->conninfo;
    for (; *colon && *colon != ':'; colon++)
        *colon = (char)tolower((unsigned char)*colon);
    /* Without the "//" libpq reads a key=value string, and its error
     * quotes the whole text, where a password has no marks to find it by. */
    if (strncmp(colon, "://", 3) != 0) {
        free_config(cfg);
        return dbpool__seterr(
            e, DBPOOL_EINVAL,
            "PostgreSQL URL: want postgresql://user@host:port/database (with ':' and the "
            "password after the user if there is one; the scheme's ':' is followed by '//')");
    }

    /* Known before parsing, so that a parse error echoing the URL is
     * scrubbed even though libpq never told us the password. */
    bool lost = false;
    char *raw = raw_url_password(cfg->conninfo, &lost);
    if (raw) {
        char *decoded = dbpool__pct_decode(raw, strlen(raw));
        if (!decoded && dbpool__pct_valid(raw, strlen(raw)))
            lost = true;
        add_secret(cfg, decoded);
        add_secret(cfg, raw);
    }
    /* Also each password= of the query, and the userinfo's as the redactor
     * delimits it (at the last '@'). */
    char *found[4];
    size_t nfound = dbpool__url_passwords(cfg->conninfo, found, &lost);
    for (size_t i = 0; i < nfound; i++)
        add_secret(cfg, found[i]);
    /* A password that could not be listed would pass the redactor in
     * libpq's words about the URL (which quote it): no parse then. */
    if (lost) {
        free_config(cfg);
        return dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory reading the PostgreSQL URL");
    }

    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(cfg->conninfo, &perr);
    if (!opts) {
        int code = perr ? DBPOOL_EINVAL : DBPOOL_ENOMEM;
        /* The message may quote the URL: redacted before it is folded onto
         * one line, which would turn a password's "\n" into "; " and no
         * longer match it. Only its trailing line end goes first. */
        for (size_t n = perr ? strlen(perr) : 0; n > 0 && isspace((unsigned char)perr[n - 1]); n--)
            perr[n - 1] = '\0';
        dbpool__seterr(e, code, "invalid PostgreSQL URL: %s%s", perr ? perr : "out of memory",
                       perr && strstr(perr, "parameter") ? " (dbpool's own keys start with pool_)" : "");
        PQfreemem(perr);
        if (e) {
            dbpool__redact(e->message, sizeof e->message, secrets(cfg));
            one_line(e->message, sizeof e->message);
        }
        free_config(cfg);
        return code;
    }
    /* Passed when libpq may load a client key, and no sslpassword of the
     * caller's (in the URL, or in a service file) is there to be overridden. */
    bool key_loadable = may_load_client_key(), own_passphrase = getenv("PGSERVICE") != NULL;
    const char *sslmode = getenv("PGSSLMODE");
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (strcmp(o->keyword, "sslmode") == 0 && o->val && *o->val)
            sslmode = o->val;
    bool tls_off = sslmode && strcmp(sslmode, "disable") == 0;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        bool given = o->val && *o->val;
        for (size_t i = 0; i < PG_NTLSFILES && given && !tls_off && o->val[0] == '/'; i++) {
            if (strcmp(o->keyword, tls_file_keys[i]) != 0)
                continue;
            if (!(cfg->file_paths[cfg->nfiles] = dbpool__strdup(o->val))) {
                PQconninfoFree(opts);
                free_config(cfg);
                return dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory reading the PostgreSQL URL");
            }
            cfg->file_keys[cfg->nfiles++] = tls_file_keys[i];
        }
        /* libpq reads it only in its blocking connect, which dbpool does
         * not use: taken, it would bound nothing (nor be checked). Its
         * value is not quoted (it stands where a password could). */
        if (strcmp(o->keyword, "connect_timeout") == 0 && given) {
            dbpool__seterr(e, DBPOOL_EINVAL,
                           "invalid PostgreSQL URL: libpq's connect_timeout key has no effect in dbpool, "
                           "which bounds each connect itself: remove it, and give pool_connect_timeout=MS "
                           "(connect_timeout_ms) instead");
            PQconninfoFree(opts);
            free_config(cfg);
            return DBPOOL_EINVAL;
        }
        if ((strcmp(o->keyword, "password") == 0 || strcmp(o->keyword, "sslpassword") == 0) && given) {
            char *plain = dbpool__strdup(o->val), *encoded = pct_encode(o->val);
            add_secret(cfg, plain);
            add_secret(cfg, encoded);
            if (!plain || !encoded) { /* unlisted, it would pass the redactor */
                PQconninfoFree(opts);
                free_config(cfg);
                return dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory reading the PostgreSQL URL");
            }
        }
        if ((strcmp(o->keyword, "sslpassword") == 0 || strcmp(o->keyword, "service") == 0) && given)
            own_passphrase = true;
        if ((strcmp(o->keyword, "sslcert") == 0 || strcmp(o->keyword, "sslkey") == 0) && given)
            key_loadable = true;
        for (size_t i = 0; i < PG_NTLSFILES && given && o->val[0] != '/'; i++) {
            /* sslrootcert=system (libpq 16) names the system's CAs. */
            if (strcmp(o->keyword, tls_file_keys[i]) != 0 || (i == 0 && strcmp(o->val, "system") == 0))
                continue;
            /* Made absolute or refused, as the MySQL backend does: left
             * relative, the first chdir() would make every later connect
             * read another file, or none. */
            char cwd[4096];
            size_t n = strlen(o->val) + sizeof cwd + 2;
            int rc = DBPOOL_OK;
            char *abs = NULL;
            if (!getcwd(cwd, sizeof cwd))
                rc = dbpool__seterr(e, DBPOOL_EINVAL,
                                    "invalid PostgreSQL URL: %s is a relative path and the working directory "
                                    "cannot be read (%s): give an absolute path",
                                    tls_file_keys[i], strerror(errno));
            else if (!(abs = malloc(n)))
                rc = dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory reading the PostgreSQL URL");
            if (rc != DBPOOL_OK) {
                PQconninfoFree(opts);
                free_config(cfg);
                return rc;
            }
            snprintf(abs, n, "%s/%s", cwd, o->val);
            cfg->abs_keys[cfg->nabs] = tls_file_keys[i];
            cfg->abs_vals[cfg->nabs++] = abs;
            if (!tls_off) {
                if (!(cfg->file_paths[cfg->nfiles] = dbpool__strdup(abs))) {
                    PQconninfoFree(opts);
                    free_config(cfg);
                    return dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory reading the PostgreSQL URL");
                }
                cfg->file_keys[cfg->nfiles++] = tls_file_keys[i];
            }
        }
    }
    PQconninfoFree(opts);
    cfg->no_key_prompt = key_loadable && !own_passphrase;
    *out = cfg;
    return DBPOOL_OK;
}

/* ------------------------------------------------------------------------ */
/* Waiting on the socket (dbpool__pg_wait_socket, pg_bounded.h)             */
/* ------------------------------------------------------------------------ */

static void copy_conn_error_or(PGconn *c, char *buf, size_t cap, const char *fallback) {
    const char *m = c ? PQerrorMessage(c) : NULL;
    dbpool__strlcpy(buf, m && *m ? m : fallback, cap);
    one_line(buf, cap);
}

static void copy_conn_error(PGconn *c, char *buf, size_t cap) {
    copy_conn_error_or(c, buf, cap, "connection lost");
}

/* libpq's own "out of memory ..." (for a query result, a row, a buffer):
 * this process's trouble, not the statement's. The server's errors carry
 * a SQLSTATE (its own out of memory is 53200); libpq's carry none. */
static bool libpq_out_of_memory(const char *state, const char *msg) {
    return (!state || !*state) && msg && strncmp(msg, "out of memory", 13) == 0;
}

/* Fill e from a failed result: SQLSTATE and the primary message only (the
 * DETAIL line can carry row values, which do not belong in logs). */
static int result_error(PGconn *c, const PGresult *r, int code, const char *what, dbpool_error *e) {
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *primary = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    char msg[DBPOOL_MSG_CAP];
    if (primary && *primary) {
        dbpool__strlcpy(msg, primary, sizeof msg);
        one_line(msg, sizeof msg);
    } else if (r && *PQresultErrorMessage(r)) {
        dbpool__strlcpy(msg, PQresultErrorMessage(r), sizeof msg);
        one_line(msg, sizeof msg);
    } else {
        copy_conn_error(c, msg, sizeof msg);
    }
    if (code == DBPOOL_EQUERY && PQstatus(c) != CONNECTION_OK) {
        code = DBPOOL_EBROKEN;
        /* libpq's own result for the lost connection ("server closed the
         * connection unexpectedly ... terminated abnormally") leaves out
         * what the server said before it closed, which the connection's
         * message keeps: "FATAL: terminating connection due to
         * idle-session timeout" is why, and no crash. */
        if (!state) {
            const char *whole = PQerrorMessage(c);
            if (whole && strstr(whole, "FATAL:"))
                copy_conn_error(c, msg, sizeof msg);
        }
    } else if (code == DBPOOL_EQUERY && libpq_out_of_memory(state, msg))
        code = DBPOOL_ENOMEM;
    dbpool__seterr(e, code, "%s%s%s%s", what, state ? " [" : "", state ? state : "", state ? "]: " : ": ");
    if (e) {
        size_t used = strlen(e->message);
        dbpool__strlcpy(e->message + used, msg, sizeof e->message - used);
        if (state && strlen(state) == 5)
            memcpy(e->sqlstate, state, 6);
        /* One of dbpool's kept statements found gone (26000) or its name
         * taken (42P05) inside the caller's transaction, where it cannot
         * be run again: the usual cause is a pooler between dbpool and the
         * server (outside a transaction dbpool runs it unnamed instead),
         * or a DEALLOCATE / DISCARD an earlier lease ran on the native
         * handle, which the release cannot see. */
        /* The failure aborted the caller's transaction: say so, and what
         * to change. A name taken (42P05) has one cause, the pooler; a
         * statement gone (26000) may also be a native DEALLOCATE. */
        bool taken = state && strcmp(state, "42P05") == 0, gone = state && strcmp(state, "26000") == 0;
        if ((taken || gone) && strstr(msg, "_dbpool_s")) {
            used = strlen(e->message);
            dbpool__strlcpy(e->message + used,
                            taken ? " (a name of the statements dbpool keeps prepared, taken on this server "
                                    "session by another client: behind a pooler that shares server "
                                    "sessions, such as PgBouncer in transaction mode, turn statement_cache "
                                    "off: pool_statement_cache=off; roll this transaction back and run it "
                                    "again)"
                                  : " (a statement dbpool keeps prepared, gone from this server session: "
                                    "behind a pooler that shares server sessions, such as PgBouncer in "
                                    "transaction mode, turn statement_cache off: pool_statement_cache=off; "
                                    "or a DEALLOCATE or DISCARD run on the native handle removed it: run "
                                    "those through dbpool_exec; roll this transaction back and run it "
                                    "again)",
                            sizeof e->message - used);
        }
    }
    return code;
}

/* The connection failed under a round trip. If the server said why before
 * closing (57P01 terminate, 57P02 crash), libpq holds it as an error
 * result; once the connection is bad, PQgetResult returns without I/O. */
static int lost(PGconn *c, const char *what, dbpool_error *e) {
    char msg[DBPOOL_MSG_CAP];
    copy_conn_error(c, msg, sizeof msg);
    if (PQstatus(c) == CONNECTION_BAD) {
        PGresult *r = PQgetResult(c);
        if (r && PQresultErrorField(r, PG_DIAG_SQLSTATE)) {
            int rc = result_error(c, r, DBPOOL_EBROKEN, what, e);
            PQclear(r);
            return rc;
        }
        PQclear(r);
    }
    return dbpool__seterr(e, DBPOOL_EBROKEN, "%s: %s", what, msg);
}

/*
 * Run simple-protocol SQL (one statement, or several) without blocking past
 * the deadline. The statuses in accept[0..n_accept) mean success; any other
 * fails the call, and at least one result must have come. On a timeout the
 * statement may still be running: the connection is unusable afterwards.
 */
static int roundtrip_any(PGconn *c, const char *sql, const ExecStatusType *accept, size_t n_accept,
                         int64_t deadline_ns, const char *what, dbpool_error *e) {
    char msg[DBPOOL_MSG_CAP];
    if (PQsetnonblocking(c, 1) != 0 || !PQsendQuery(c, sql)) {
        copy_conn_error(c, msg, sizeof msg);
        return dbpool__seterr(e, DBPOOL_EBROKEN, "%s: %s", what, msg);
    }
    for (;;) {
        int f = PQflush(c);
        if (f == 0)
            break;
        if (f < 0)
            return lost(c, what, e);
        int w = dbpool__pg_wait_socket(c, POLLOUT | POLLIN, deadline_ns);
        if (w == 0)
            return dbpool__seterr(e, DBPOOL_ETIMEDOUT,
                                  "%s: no answer from the server in time "
                                  "(could not send)",
                                  what);
        /* libpq's advice: read what the server sent, or a full buffer on
         * its side could block our write forever. */
        if (w < 0 || !PQconsumeInput(c))
            return lost(c, what, e);
    }
    int rc = DBPOOL_OK;
    bool got_expected = false;
    for (;;) {
        while (!PQisBusy(c)) {
            PGresult *r = PQgetResult(c);
            if (!r) {
                PQsetnonblocking(c, 0);
                if (rc == DBPOOL_OK && !got_expected)
                    rc = lost(c, what, e);
                return rc;
            }
            ExecStatusType st = PQresultStatus(r);
            bool accepted = false;
            for (size_t i = 0; i < n_accept && !accepted; i++)
                accepted = st == accept[i];
            if (accepted) {
                got_expected = true;
            } else if (rc == DBPOOL_OK) {
                rc = result_error(c, r, st == PGRES_FATAL_ERROR ? DBPOOL_EQUERY : DBPOOL_EBROKEN, what, e);
                if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
                    PQclear(r);
                    return rc; /* cannot drain a COPY here; caller discards */
                }
            }
            PQclear(r);
        }
        int w = dbpool__pg_wait_socket(c, POLLIN, deadline_ns);
        if (w == 0)
            return dbpool__seterr(e, DBPOOL_ETIMEDOUT, "%s: no answer from the server in time", what);
        if (w < 0 || !PQconsumeInput(c))
            return lost(c, what, e);
    }
}

/* One statement whose result status is `expect`. */
static int roundtrip(PGconn *c, const char *sql, ExecStatusType expect, int64_t deadline_ns, const char *what,
                     dbpool_error *e) {
    return roundtrip_any(c, sql, &expect, 1, deadline_ns, what, e);
}

/* ------------------------------------------------------------------------ */
/* Connect                                                                  */
/* ------------------------------------------------------------------------ */

/* libpq prints notices (e.g. "there is no transaction in progress") on
 * stderr by default; a library must not write to its host's stderr. */
static void quiet_notices(void *arg, const char *message) {
    (void)arg;
    (void)message;
}

static int classify_connect_error(const char *msg) {
    /* libpq checks the settings before it connects: 'invalid sslmode
     * value: "x"', 'invalid integer value "x" for connection option ...'.
     * A wrong URL, not an unreachable server: no retry will help. */
    if (strncmp(msg, "invalid ", 8) == 0)
        return DBPOOL_EINVAL;
    /* The same checks made per host come after libpq's heading for the
     * host: 'connection to server at "h", port 1 failed: invalid integer
     * value ...'; and a host list the ports do not match. */
    if (strstr(msg, " failed: invalid ") || strncmp(msg, "could not match ", 16) == 0)
        return DBPOOL_EINVAL;
    /* A TLS file the URL names (or libpq's default one) that is missing or
     * unreadable: sslrootcert, sslcert, sslkey, sslcrl. A wrong setting,
     * the same at every attempt. */
    static const char *const tls_files[] = {
        "root certificate file \"",   "could not open certificate file",
        "could not read certificate", "certificate present, but not private key",
        "private key file \"",        "could not load private key file",
        "could not read private key", "SSL certificate revocation list file",
    };
    for (size_t i = 0; i < sizeof tls_files / sizeof *tls_files; i++)
        if (strstr(msg, tls_files[i]))
            return DBPOOL_EINVAL;
    /* The server's certificate failed verification (sslmode=verify-ca or
     * verify-full): the server did not prove who it is. As a refused
     * login, no retry changes that. */
    /* sslmode=require (or a verify mode) and a server that offers no TLS,
     * or a man in the middle that takes the offer away: the connection the
     * URL asks for cannot be had from this server, and each attempt would
     * only repeat the refusal. */
    if (strstr(msg, "server does not support SSL, but SSL was required"))
        return DBPOOL_EAUTH;
    if (strstr(msg, "certificate verify failed") ||
        (strstr(msg, "server certificate for \"") && strstr(msg, "does not match host name")) ||
        strstr(msg, "could not get server's host name from server certificate") ||
        strstr(msg, "server certificate includes no"))
        return DBPOOL_EAUTH;
    /* Also a role that may not log in (NOLOGIN, SQLSTATE 28000) and one
     * without the CONNECT privilege on the database (42501): as MySQL's
     * locked account and denied database, no retry fixes them. */
    static const char *const auth[] = {
        "password authentication failed",
        "no password supplied",
        "authentication failed",
        "no pg_hba.conf entry",
        "pg_hba.conf rejects",
        "SCRAM authentication",
        "\" is not permitted to log in",
        "permission denied for database",
        /* cert authentication (pg_hba.conf's cert, clientcert=): no client
         * certificate, or one the server's TLS layer refused. */
        "connection requires a valid client certificate",
        "alert unknown ca",
        "alert bad certificate",
        "alert unsupported certificate",
        "alert certificate unknown",
        "alert certificate revoked",
        "alert certificate expired",
        "alert certificate required",
    };
    for (size_t i = 0; i < sizeof auth / sizeof *auth; i++)
        if (strstr(msg, auth[i]))
            return DBPOOL_EAUTH;
    /* FATAL:  role "x" does not exist  /  FATAL:  database "x" does not exist */
    const char *role = strstr(msg, "role \"");
    if (role && strstr(role, "\" does not exist"))
        return DBPOOL_EAUTH;
    const char *db = strstr(msg, "database \"");
    if (db && strstr(db, "\" does not exist"))
        return DBPOOL_ENOTFOUND;
    /* PgBouncer's words for a database its [databases] does not list. */
    if (strstr(msg, "FATAL:  no such database: ") || strstr(msg, "FATAL: no such database: "))
        return DBPOOL_ENOTFOUND;
    return DBPOOL_ECONNECT;
}

/* The server refused the session at one of its connection limits
 * (SQLSTATE 53300, which libpq does not hand over for a failed connect):
 * max_connections ("sorry, too many clients already", or the last slots
 * kept for superusers) or a role's or database's CONNECTION LIMIT. */
static bool names_connection_limit(const char *msg) {
    return strstr(msg, "too many clients already") || strstr(msg, "too many connections for role \"") ||
           strstr(msg, "too many connections for database \"") ||
           strstr(msg, "remaining connection slots are reserved") ||
           strstr(msg, "no more connections allowed (max_client_conn)"); /* PgBouncer's */
}

static bool pg_at_connection_limit(const dbpool_error *e) { return e && strcmp(e->sqlstate, "53300") == 0; }

/* "host:port" or "unix socket /dir/.s.PGSQL.port" of the attempt under way. */
static void describe_target(PGconn *c, char *buf, size_t cap) {
    const char *host = PQhost(c);
    const char *port = PQport(c);
    if (!port || !*port)
        port = "5432";
    if (!host || !*host)
        snprintf(buf, cap, "the default server (port %s)", port);
    else if (host[0] == '/' || host[0] == '@')
        snprintf(buf, cap, "unix socket %s/.s.PGSQL.%s", host, port);
    else if (strchr(host, ':'))
        snprintf(buf, cap, "[%s]:%s", host, port);
    else
        snprintf(buf, cap, "%s:%s", host, port);
}

static int apply_statement_timeout(PGconn *c, int64_t ms, int64_t deadline_ns, dbpool_error *e) {
    /* The server's limit is INT_MAX milliseconds. */
    if (ms > INT_MAX)
        ms = INT_MAX;
    char sql[64];
    snprintf(sql, sizeof sql, "SET statement_timeout = %lld", (long long)ms);
    return roundtrip(c, sql, PGRES_COMMAND_OK, deadline_ns, "setting statement_timeout", e);
}

/*
 * A statement the pool gave up on goes on running on the server after the
 * connection is closed: the backend notices the closed socket only when it
 * next writes, so a sleeping or lock-waiting init_sql kept one server
 * session per attempt for as long as it ran (a lock wait: until the lock
 * was released). PostgreSQL 14+ can look for a closed client while a
 * statement runs (client_connection_check_interval): set to one second,
 * unless the server, role, database or URL already set a value of its own.
 * Refused (a server on a system without the check), the connection works
 * on without it.
 *
 * Only before init_sql, the one statement of the pool's that can run long
 * (at a connect, and again after a reset's DISCARD ALL, which drops the
 * setting): pools without init_sql run nothing that could be left running,
 * and a release that resets the session would otherwise pay a second round
 * trip (measured: 45k resets/s against 27k with it set after every DISCARD
 * ALL).
 */
#define PG_CLIENT_CHECK_SQL                                                                                  \
    "SELECT set_config('client_connection_check_interval', '1000', false) "                                  \
    "WHERE current_setting('client_connection_check_interval') = '0'"

static int watch_for_closed_client(PGconn *c, int64_t deadline_ns, dbpool_error *e) {
    if (PQserverVersion(c) < 140000)
        return DBPOOL_OK;
    dbpool_error local;
    dbpool__clearerr(&local);
    int rc = roundtrip(c, PG_CLIENT_CHECK_SQL, PGRES_TUPLES_OK, deadline_ns,
                       "setting client_connection_check_interval", &local);
    if (rc == DBPOOL_EQUERY && PQstatus(c) == CONNECTION_OK && PQtransactionStatus(c) == PQTRANS_IDLE)
        return DBPOOL_OK; /* refused: without it, as before */
    if (rc != DBPOOL_OK && e)
        *e = local;
    return rc;
}

/* The TLS files the URL names must be readable (see pg_config): a wrong
 * path is the URL's, the same at every attempt. */
static int check_tls_files(const pg_config *cfg, dbpool_error *e) {
    for (size_t i = 0; i < cfg->nfiles; i++) {
        int fd = open(cfg->file_paths[i], O_RDONLY | O_CLOEXEC);
        if (fd < 0 && (errno == EMFILE || errno == ENFILE))
            /* No descriptor left: nothing wrong with the URL, and it
             * passes once descriptors are free (the core says so). */
            return dbpool__seterr(e, DBPOOL_ECONNECT, "cannot open the %s file '%.200s' (%s)",
                                  cfg->file_keys[i], cfg->file_paths[i], strerror(errno));
        if (fd < 0)
            return dbpool__seterr(e, DBPOOL_EINVAL,
                                  "cannot read the %s file '%.200s' (%s): fix %s in the URL",
                                  cfg->file_keys[i], cfg->file_paths[i], strerror(errno), cfg->file_keys[i]);
        close(fd);
    }
    return DBPOOL_OK;
}

static int pg_connect(const void *p, const dbpool_connect_settings *s, int64_t deadline_ns, void **native,
                      dbpool_error *e) {
    const pg_config *cfg = p;
    *native = NULL;
    int frc = check_tls_files(cfg, e);
    if (frc != DBPOOL_OK)
        return frc;
    const char *keys[PG_NDEFAULTS + 3 + PG_NTLSFILES];
    const char *vals[PG_NDEFAULTS + 3 + PG_NTLSFILES];
    size_t n = 0;
    for (size_t i = 0; i < PG_NDEFAULTS; i++, n++) {
        keys[n] = default_keys[i];
        vals[n] = default_values[i];
    }
    if (cfg->no_key_prompt) {
        keys[n] = "sslpassword";
        vals[n++] = NO_KEY_PASSPHRASE;
    }
    /* Last: with expand_dbname the URL's own settings override the
     * defaults above (libpq keeps the last value of a repeated key). */
    keys[n] = "dbname";
    vals[n++] = cfg->conninfo;
    for (size_t i = 0; i < cfg->nabs; i++, n++) {
        keys[n] = cfg->abs_keys[i];
        vals[n] = cfg->abs_vals[i];
    }
    keys[n] = NULL;
    vals[n] = NULL;

    PGconn *c = PQconnectStartParams(keys, vals, 1);
    if (!c)
        return dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory starting a PostgreSQL connection");
    PQsetNoticeProcessor(c, quiet_notices, NULL);

    char msg[DBPOOL_MSG_CAP];
    char target[200];
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    if (PQstatus(c) == CONNECTION_BAD)
        st = PGRES_POLLING_FAILED;
    while (st != PGRES_POLLING_OK) {
        if (st == PGRES_POLLING_FAILED) {
            copy_conn_error(c, msg, sizeof msg);
            int code = classify_connect_error(msg);
            PQfinish(c);
            /* libpq's own words do not say which setting to change. */
            const char *hint = "";
            if (strstr(msg, "certificate verify failed"))
                hint = " (the server's certificate is not signed by a CA in sslrootcert: name the CA that "
                       "signed it, or use sslmode=require to encrypt without checking)";
            else if (cfg->no_key_prompt && strstr(msg, "bad decrypt"))
                hint = " (an encrypted key: give its passphrase as sslpassword)";
            else if (strstr(msg, "server does not support SSL, but SSL was required"))
                hint = " (the server takes no TLS connections, or something between takes its offer away: "
                       "enable TLS on the server (ssl = on), or lower sslmode where plaintext is acceptable)";
            else if (strstr(msg, "requires a valid client certificate"))
                hint = " (give the client certificate and its key as sslcert and sslkey)";
            else if (code == DBPOOL_EAUTH && strstr(msg, "SSL error: ") && strstr(msg, " alert "))
                hint =
                    " (the server refused the client certificate in sslcert: it must be signed by a CA the "
                    "server trusts, for client use)";
            bool limit = code == DBPOOL_ECONNECT && names_connection_limit(msg);
            if (limit)
                hint = strstr(msg, "(max_client_conn)")
                           ? " (PgBouncer is at its max_client_conn: keep max_size, summed over every pool "
                             "and client of this PgBouncer, below it, or raise it)"
                           : " (the server is at a connection limit: max_connections, or the role's or the "
                             "database's CONNECTION LIMIT; keep max_size, summed over every pool and client "
                             "of this server, below it, or raise the limit)";
            dbpool__seterr(e, code, "%s%s", msg, hint);
            if (limit && e)
                memcpy(e->sqlstate, "53300", 6);
            return code;
        }
        /* The socket can change between polls (next host, SSL retry). */
        int w = dbpool__pg_wait_socket(c, st == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline_ns);
        if (w == 0) {
            describe_target(c, target, sizeof target);
            /* With several hosts, what went wrong with the earlier ones.
             * libpq has already written the "connection to server at ...
             * failed:" heading of the attempt under way: drop it. */
            copy_conn_error_or(c, msg, sizeof msg, "");
            size_t ml = strlen(msg);
            if (ml >= 7 && strcmp(msg + ml - 7, "failed:") == 0) {
                char *head = NULL;
                for (char *h = strstr(msg, "connection to server"); h;
                     h = strstr(h + 1, "connection to server"))
                    head = h;
                if (head)
                    *head = '\0';
                one_line(msg, sizeof msg);
            }
            /* Which bound that was (connect_timeout_ms or the caller's
             * shorter deadline) the core says: it knows. */
            dbpool__seterr(e, DBPOOL_ETIMEDOUT, "connecting to %s: no answer before the deadline%s%s", target,
                           msg[0] ? "; earlier: " : "", msg);
            PQfinish(c);
            return DBPOOL_ETIMEDOUT;
        }
        if (w < 0) {
            copy_conn_error(c, msg, sizeof msg);
            PQfinish(c);
            return dbpool__seterr(e, DBPOOL_ECONNECT, "%s", msg);
        }
        st = PQconnectPoll(c);
    }

    if (s && s->statement_timeout_ms > 0) {
        int rc = apply_statement_timeout(c, s->statement_timeout_ms, deadline_ns, e);
        if (rc != DBPOOL_OK) {
            if (rc != DBPOOL_ETIMEDOUT)
                rc = DBPOOL_ECONNECT;
            if (e)
                e->code = rc;
            PQfinish(c);
            return rc;
        }
    }
    pg_session *ps = calloc(1, sizeof *ps);
    if (!ps) {
        PQfinish(c);
        return dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory for a connection");
    }
    ps->pg = c;
    ps->statement_timeout_ms = s ? s->statement_timeout_ms : 0;
    ps->processor0 = quiet_notices;
    ps->receiver0 = PQsetNoticeReceiver(c, NULL, NULL);
    atomic_store_explicit(&default_receiver, ps->receiver0, memory_order_relaxed);
    ps->nonblocking0 = false;
    ps->verbosity0 = PQERRORS_DEFAULT;
    ps->context0 = PQSHOW_CONTEXT_ERRORS;
    note_reported(ps);
    ps->keep_statements = !s || s->statement_cache;
    *native = ps;
    return DBPOOL_OK;
}

static void pg_disconnect(void *native) {
    if (native) {
        PQfinish(pg_of(native));
        dbpool__pg_stmts_free(((pg_session *)native)->stmts);
        free(native);
    }
}

/* ------------------------------------------------------------------------ */
/* Validation and reset                                                     */
/* ------------------------------------------------------------------------ */

static int pg_ping(void *native, int64_t deadline_ns, dbpool_error *e) {
    PGconn *c = pg_of(native);
    if (PQstatus(c) != CONNECTION_OK) {
        char msg[DBPOOL_MSG_CAP];
        copy_conn_error(c, msg, sizeof msg);
        return dbpool__seterr(e, DBPOOL_EBROKEN, "validation: %s", msg);
    }
    /* An empty query is a full round trip that the server neither parses
     * nor plans. */
    int rc = roundtrip(c, "", PGRES_EMPTY_QUERY, deadline_ns, "validation", e);
    if (rc != DBPOOL_OK && rc != DBPOOL_ETIMEDOUT) {
        rc = DBPOOL_EBROKEN;
        if (e)
            e->code = rc;
    }
    return rc;
}

/* FNV-1a over the reported values, each followed by a byte no value
 * holds (and another for one not reported): a change to any of them
 * changes the hash but for a chance of 2^-64. The server process's id
 * starts it: a PQreset (or PQresetStart) on the native handle connects a
 * new session, without the pool's statement timeout, init_sql or the
 * statements it keeps prepared, whose reported values may all be the
 * same. */
static uint64_t reported_hash(const pg_session *ps) {
    uint64_t h = UINT64_C(14695981039346656037);
    for (unsigned pid = (unsigned)PQbackendPID(ps->pg), i = 0; i < sizeof pid; i++, pid >>= 8)
        h = (h ^ (pid & 0xffu)) * UINT64_C(1099511628211);
    for (size_t i = 0; i < PG_NREPORTED; i++) {
        const char *v = PQparameterStatus(ps->pg, reported_settings[i]);
        for (const unsigned char *b = (const unsigned char *)(v ? v : ""); *b; b++)
            h = (h ^ *b) * UINT64_C(1099511628211);
        h = (h ^ (v ? 0xffu : 0xfeu)) * UINT64_C(1099511628211);
    }
    return h;
}

static void note_reported(pg_session *ps) { ps->reported0 = reported_hash(ps); }

/* Has a reported setting changed since the baseline? */
static bool reported_changed(const pg_session *ps) { return reported_hash(ps) != ps->reported0; }

/* What a caller left on the lent handle that is libpq's, not the
 * server's: 0 as the session started, 1 changed and put back by
 * restore_handle, -1 changed where it cannot be put back (after_connect
 * installed a notice processor or receiver of its own, whose argument
 * libpq does not tell). A processor left with a pointer to the last
 * lease's data would be called with it at the next caller's notice. */
static int handle_changed(const pg_session *ps) {
    PGconn *c = ps->pg;
    int changed = (PQisnonblocking(c) != 0) != ps->nonblocking0;
    if (PQsetNoticeProcessor(c, NULL, NULL) != ps->processor0) {
        if (ps->processor0 != quiet_notices)
            return -1;
        changed = 1;
    }
    if (PQsetNoticeReceiver(c, NULL, NULL) != ps->receiver0) {
        if (ps->receiver0 != atomic_load_explicit(&default_receiver, memory_order_relaxed))
            return -1;
        changed = 1;
    }
    return changed;
}

static void restore_handle(pg_session *ps) {
    PGconn *c = ps->pg;
    if (PQsetNoticeProcessor(c, NULL, NULL) != ps->processor0)
        PQsetNoticeProcessor(c, quiet_notices, NULL);
    if (PQsetNoticeReceiver(c, NULL, NULL) != ps->receiver0)
        PQsetNoticeReceiver(c, atomic_load_explicit(&default_receiver, memory_order_relaxed), NULL);
    if ((PQisnonblocking(c) != 0) != ps->nonblocking0)
        PQsetnonblocking(c, ps->nonblocking0);
}

/* What is only the client's and cheap to set, put back at every release
 * of a lent handle without asking whether it changed: the error
 * verbosity and context, and a trace (PQtrace) the caller left writing
 * the next caller's statements into its FILE, which it may have closed
 * (libpq does not tell whether a trace is on: one after_connect may have
 * started is left alone). */
static void put_back_client_settings(pg_session *ps) {
    if (!ps->traced_by_after_connect)
        PQuntrace(ps->pg);
    PQsetErrorVerbosity(ps->pg, ps->verbosity0);
    PQsetErrorContextVisibility(ps->pg, ps->context0);
}

static int pg_needs_reset(void *native) {
    PGconn *c = pg_of(native);
    if (!c || PQstatus(c) != CONNECTION_OK || ((pg_session *)native)->gave_up)
        return -1;
#ifdef LIBPQ_HAS_PIPELINING
    /* Pipeline mode, entered on the native handle: every synchronous call
     * would fail for the next caller. */
    if (PQpipelineStatus(c) != PQ_PIPELINE_OFF)
        return -1;
#endif
    pg_session *ps = native;
    int need;
    switch (PQtransactionStatus(c)) {
    case PQTRANS_IDLE:
        need = ps->effect != PG_SESSION_UNCHANGED ? 1 : 0;
        break;
    case PQTRANS_INTRANS:
    case PQTRANS_INERROR:
        need = 1;
        break;
    default: /* ACTIVE (a result not read to the end) or UNKNOWN */
        return -1;
    }
    if (ps->lent) {
        put_back_client_settings(ps);
        if (ps->effect == PG_SESSION_UNCHANGED && reported_changed(ps)) {
            ps->effect = PG_SESSION_CHANGED;
            need = 1;
        }
        int h = handle_changed(ps);
        if (h < 0)
            return -1;
        if (h > 0)
            need = 1;
        else if (need == 0)
            ps->lent = false;
    }
    return need;
}

/*
 * ROLLBACK, and when a caller's statement may have changed the session
 * beyond its transaction (pg_session_sql.h), DISCARD ALL: settings, temporary
 * tables, prepared statements, LISTEN, advisory locks and held cursors go.
 * What dbpool set on connect (statement_timeout) is set again here; the
 * core runs init_sql again. A LOADed library stays whatever runs: such a
 * connection fails its reset and is closed.
 */
static int reset_session(pg_session *ps, int64_t deadline_ns, bool *session_cleared, dbpool_error *e) {
    PGconn *c = ps->pg;
    *session_cleared = false;
    if (PQtransactionStatus(c) != PQTRANS_IDLE) {
        int rc = roundtrip(c, "ROLLBACK", PGRES_COMMAND_OK, deadline_ns, "rollback on release", e);
        if (rc != DBPOOL_OK)
            return rc;
        if (PQtransactionStatus(c) != PQTRANS_IDLE)
            return dbpool__seterr(e, DBPOOL_EBROKEN, "rollback on release left the session busy");
    }
    if (ps->effect == PG_SESSION_UNCHANGED)
        return DBPOOL_OK;
    if (ps->effect == PG_SESSION_PERMANENT)
        return dbpool__seterr(e, DBPOOL_EBROKEN, "a LOAD ran on this connection, which no reset undoes");
    int rc =
        roundtrip(c, "DISCARD ALL", PGRES_COMMAND_OK, deadline_ns, "discarding session state on release", e);
    ps->watching_client = false;
    if (rc == DBPOOL_OK && ps->statement_timeout_ms > 0)
        rc = apply_statement_timeout(c, ps->statement_timeout_ms, deadline_ns, e);
    if (rc != DBPOOL_OK)
        return rc;
    /* Notifications that arrived for a LISTEN before the DISCARD are the
     * last caller's: the next one must not read them. */
    for (PGnotify *n = PQnotifies(c); n; n = PQnotifies(c))
        PQfreemem(n);
    dbpool__pg_stmts_discarded(ps->stmts);
    ps->effect = PG_SESSION_UNCHANGED;
    *session_cleared = true;
    return DBPOOL_OK;
}

/* The session's reset, then what the caller left on the lent handle. */
static int pg_reset(void *native, int64_t deadline_ns, bool *session_cleared, dbpool_error *e) {
    pg_session *ps = native;
    int rc = reset_session(ps, deadline_ns, session_cleared, e);
    if (rc == DBPOOL_OK && ps->lent) {
        if (handle_changed(ps) < 0)
            return dbpool__seterr(e, DBPOOL_EBROKEN,
                                  "a notice processor or receiver other than after_connect's was left on the "
                                  "native handle, which no reset can put back");
        restore_handle(ps);
        ps->lent = false;
    }
    return rc;
}

/* init_sql or after_connect has just run: what it set is where every
 * lease starts. */
static int pg_session_baseline(void *native, dbpool_error *e) {
    (void)e;
    pg_session *ps = native;
    ps->processor0 = PQsetNoticeProcessor(ps->pg, NULL, NULL);
    ps->receiver0 = PQsetNoticeReceiver(ps->pg, NULL, NULL);
    ps->nonblocking0 = PQisnonblocking(ps->pg) != 0;
    ps->verbosity0 = PQsetErrorVerbosity(ps->pg, PQERRORS_DEFAULT);
    PQsetErrorVerbosity(ps->pg, ps->verbosity0);
    ps->context0 = PQsetErrorContextVisibility(ps->pg, PQSHOW_CONTEXT_ERRORS);
    PQsetErrorContextVisibility(ps->pg, ps->context0);
    ps->traced_by_after_connect = ps->lent;
    note_reported(ps);
    ps->lent = false;
    /* A LOAD in init_sql too: every connection has the library, so it is
     * no caller's doing (counted, every release would close the
     * connection). */
    ((pg_session *)native)->effect = PG_SESSION_UNCHANGED;
    return DBPOOL_OK;
}

static void *pg_user_handle(void *native) {
    if (native)
        ((pg_session *)native)->lent = true;
    return pg_of(native);
}

/* A statement a caller runs through dbpool: does it change the session for
 * longer than its transaction? Scanned before it runs (a failed statement
 * of several may have run the first), and after a first change too, in
 * case a later statement makes it permanent. Such a statement may change
 * what a kept one means (a SET timezone, a temporary table in front of a
 * table it reads): the kept statements are forgotten. One that mentions
 * DEALLOCATE or DISCARD may remove them: what it leaves on the server goes
 * with the DISCARD ALL that the release now runs. The others leave them
 * there, and a long lease that runs such statements over and over (an
 * advisory lock per job) would pile them up: they are deallocated at the
 * next statement outside a transaction. */
static void note_session_change(void *native, const char *sql) {
    pg_session *ps = native;
    pg_session_effect e = dbpool__pg_session_effect(sql);
    if (e != PG_SESSION_UNCHANGED)
        dbpool__pg_stmts_session_changed(ps->stmts, sql);
    if (e > ps->effect)
        ps->effect = e;
}

/* ------------------------------------------------------------------------ */
/* Statements                                                               */
/* ------------------------------------------------------------------------ */

/*
 * Run sql with params, blocking. With no parameters the statement goes
 * through the simple protocol verbatim (several statements allowed, `?`
 * operators usable); otherwise `?` are numbered and the statement runs as
 * a kept prepared statement (pg_stmt_cache.h), its values in text format
 * except blobs (binary bytea).
 */
static int run(pg_session *ps, pg_bound *b, const char *sql, const dbpool_param *p, size_t n, PGresult **out,
               dbpool_error *e) {
    PGconn *c = ps->pg;
    *out = NULL;
    if (!sql)
        return dbpool__seterr(e, DBPOOL_EINVAL, "SQL is NULL");
    if (n > 0 && !p)
        return dbpool__seterr(e, DBPOOL_EINVAL, "%zu parameters announced but the array is NULL", n);
    if (n == 0) {
        *out = dbpool__pgb_exec(c, b, sql);
        return DBPOOL_OK;
    }
    if (n > PG_MAX_PARAMS)
        return dbpool__seterr(e, DBPOOL_EINVAL, "%zu parameters: PostgreSQL accepts at most %d", n,
                              PG_MAX_PARAMS);
    bool several = false;
    size_t count = dbpool__pg_scan(sql, NULL, &several);
    if (several)
        return dbpool__seterr(e, DBPOOL_EINVAL,
                              "with parameters the SQL must hold one statement: PostgreSQL runs a "
                              "parameterized text as one; send the others in calls of their own");
    if (count != n)
        return dbpool__seterr(e, DBPOOL_EINVAL,
                              "the statement has %zu ? placeholders (outside quotes and comments) "
                              "but %zu parameters were given%s",
                              count, n,
                              dbpool__pg_has_positional(sql)
                                  ? ": write ? for each parameter, not $1, $2, ... (dbpool numbers them "
                                    "for PostgreSQL, and takes ? on every backend)"
                                  : "");

    /* One allocation: rewritten SQL, value pointers, types, then the text
     * of every parameter, each NUL-terminated as libpq wants it. */
    size_t sql_len = strlen(sql) + 7 * count + 1;
    size_t text_len = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i].type == DBPOOL_TYPE_TEXT) {
            if (!p[i].v.text.ptr) {
                if (p[i].v.text.len)
                    return dbpool__seterr(e, DBPOOL_EINVAL, "parameter %zu: text is NULL", i + 1);
            } else if (memchr(p[i].v.text.ptr, '\0', p[i].v.text.len)) {
                return dbpool__seterr(e, DBPOOL_EINVAL,
                                      "parameter %zu: PostgreSQL text cannot contain a NUL byte", i + 1);
            }
            text_len += p[i].v.text.len + 1;
        } else if (p[i].type == DBPOOL_TYPE_INT64 || p[i].type == DBPOOL_TYPE_DOUBLE) {
            text_len += 32;
        } else if (p[i].type == DBPOOL_TYPE_BLOB) {
            if (p[i].v.blob.len > INT_MAX)
                return dbpool__seterr(e, DBPOOL_EINVAL,
                                      "parameter %zu: a blob of %zu bytes is over libpq's limit", i + 1,
                                      p[i].v.blob.len);
        } else if (p[i].type != DBPOOL_TYPE_NULL) {
            return dbpool__seterr(e, DBPOOL_EINVAL, "parameter %zu: unknown type %d", i + 1, (int)p[i].type);
        }
    }
    size_t ptr_bytes = n * sizeof(const char *);
    size_t oid_bytes = n * sizeof(Oid);
    size_t int_bytes = n * sizeof(int); /* lengths, then formats: blobs go in binary */
    char *mem = malloc(ptr_bytes + oid_bytes + 2 * int_bytes + sql_len + text_len);
    if (!mem)
        return dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory binding %zu parameters", n);
    const char **values = (const char **)(void *)mem;
    Oid *types = (Oid *)(void *)(mem + ptr_bytes);
    int *lengths = (int *)(void *)(mem + ptr_bytes + oid_bytes);
    int *formats = lengths + n;
    char *rewritten = mem + ptr_bytes + oid_bytes + 2 * int_bytes;
    char *text = rewritten + sql_len;
    dbpool__pg_number_placeholders(sql, rewritten);

    for (size_t i = 0; i < n; i++) {
        values[i] = NULL;
        types[i] = 0; /* unknown: the server infers it from the context */
        lengths[i] = 0;
        formats[i] = 0;
        switch (p[i].type) {
        case DBPOOL_TYPE_INT64:
            /* integer when it fits: PostgreSQL has no implicit bigint ->
             * integer cast, so an int8 parameter would break calls such as
             * repeat(s, ?), date + ? or pg_terminate_backend(?). */
            types[i] = p[i].v.i64 >= INT32_MIN && p[i].v.i64 <= INT32_MAX ? PG_OID_INT4 : PG_OID_INT8;
            values[i] = text;
            text += (size_t)snprintf(text, 32, "%lld", (long long)p[i].v.i64) + 1;
            break;
        case DBPOOL_TYPE_DOUBLE: {
            double d = p[i].v.f64;
            types[i] = PG_OID_FLOAT8;
            values[i] = text;
            if (isnan(d))
                text += (size_t)snprintf(text, 32, "NaN") + 1;
            else if (isinf(d))
                text += (size_t)snprintf(text, 32, "%s", d > 0 ? "Infinity" : "-Infinity") + 1;
            else /* with a '.', whatever LC_NUMERIC the application set */
                text += (size_t)dbpool__format_double_c(text, 32, d) + 1;
            break;
        }
        case DBPOOL_TYPE_TEXT:
            if (!p[i].v.text.ptr)
                break; /* NULL text is SQL NULL, as dbpool_param_text(NULL) */
            values[i] = text;
            if (p[i].v.text.len)
                memcpy(text, p[i].v.text.ptr, p[i].v.text.len);
            text[p[i].v.text.len] = '\0';
            text += p[i].v.text.len + 1;
            break;
        case DBPOOL_TYPE_BLOB:
            /* Binary format: bytea's binary form is the bytes themselves. */
            types[i] = PG_OID_BYTEA;
            values[i] = p[i].v.blob.ptr; /* NULL: SQL NULL */
            lengths[i] = (int)p[i].v.blob.len;
            formats[i] = 1;
            break;
        default:
            break;
        }
    }
    *out = ps->keep_statements
               ? dbpool__pg_exec_cached(c, b, &ps->stmts, &ps->effect, sql, rewritten, (int)n, types, values,
                                        lengths, formats)
               : dbpool__pgb_exec_params(c, b, rewritten, (int)n, types, values, lengths, formats);
    free(mem);
    return DBPOOL_OK;
}

/* Map a finished PGresult to OK or a filled error (does not clear it). */
static int check_result(PGconn *c, const PGresult *r, dbpool_error *e) {
    if (!r) {
        char msg[DBPOOL_MSG_CAP];
        copy_conn_error_or(c, msg, sizeof msg, "");
        int code = PQstatus(c) != CONNECTION_OK                ? DBPOOL_EBROKEN
                   : msg[0] && !libpq_out_of_memory(NULL, msg) ? DBPOOL_EQUERY
                                                               : DBPOOL_ENOMEM;
#ifdef LIBPQ_HAS_PIPELINING
        if (code != DBPOOL_EBROKEN && PQpipelineStatus(c) != PQ_PIPELINE_OFF)
            return dbpool__seterr(e, DBPOOL_EBROKEN,
                                  "the connection is in libpq pipeline mode (entered on the native handle), "
                                  "where dbpool cannot run statements: it is closed on release");
#endif
        return dbpool__seterr(e, code, "%s", msg[0] ? msg : "out of memory");
    }
    switch (PQresultStatus(r)) {
    case PGRES_COMMAND_OK:
    case PGRES_TUPLES_OK:
    case PGRES_EMPTY_QUERY:
        return DBPOOL_OK;
    case PGRES_COPY_IN:
    case PGRES_COPY_OUT:
    case PGRES_COPY_BOTH:
        /* The session is now in COPY mode; needs_reset() reports it busy,
         * so the pool closes it on release. */
        return dbpool__seterr(e, DBPOOL_EUNSUPPORTED,
                              "COPY is not supported through dbpool_exec/dbpool_query; use the "
                              "native handle (dbpool_conn_native)");
    default:
        return result_error(c, r, DBPOOL_EQUERY, "query failed", e);
    }
}

/* The rows changed, as the other backends count them: PQcmdTuples also
 * counts what a SELECT returned or a FETCH / MOVE passed over. */
static bool changes_rows(const char *status) {
    static const char *const verbs[] = {"INSERT ", "UPDATE ", "DELETE ", "MERGE ", "COPY "};
    for (size_t i = 0; status && i < sizeof verbs / sizeof verbs[0]; i++)
        if (strncmp(status, verbs[i], strlen(verbs[i])) == 0)
            return true;
    return false;
}

/*
 * A caller's statement's bound: the core's deadline, one statement_timeout
 * later for each further statement of a multi-statement text. PostgreSQL
 * 13+ applies statement_timeout to each statement of such a text, and
 * sends nothing before the last has run (its answers are flushed
 * together), so a working server may take that long in all without a
 * sign of life. A ';' the count takes for a boundary where there is none
 * only loosens the backstop.
 */
static pg_bound bound_of(const pg_session *ps, const char *sql, size_t nparams, int64_t deadline_ns) {
    pg_bound b = {.deadline_ns = deadline_ns, .timed_out = false};
    if (deadline_ns && nparams == 0 && ps->statement_timeout_ms > 0) {
        size_t more = dbpool__pg_count_statements(sql);
        more = more > 1 ? more - 1 : 0;
        int64_t per =
            ps->statement_timeout_ms > INT64_MAX / 1000000 ? INT64_MAX : ps->statement_timeout_ms * 1000000;
        for (size_t i = 0; i < more && b.deadline_ns < INT64_MAX; i++)
            b.deadline_ns = b.deadline_ns > INT64_MAX - per ? INT64_MAX : b.deadline_ns + per;
    }
    return b;
}

/* Does sql hold RESET ALL or DISCARD ALL (words apart, any case, white
 * space between)? They give the session the server's default
 * statement_timeout, not the pool's. A lexical look, not a parse: a match
 * inside a string or a comment only turns the backstop off. */
static bool resets_all(const char *sql) {
    static const char *const verbs[] = {"reset", "discard"};
    /* strpbrk skips the rest in libc's stride: this runs over every
     * statement, and a text can be megabytes long. */
    for (const char *t = strpbrk(sql, "rRdD"); t; t = strpbrk(t + 1, "rRdD")) {
        if (t > sql && dbpool__pg_ident_cont((unsigned char)t[-1]))
            continue;
        const char *verb = verbs[(*t | 0x20) == 'd'];
        size_t n = strlen(verb);
        if (strncasecmp(t, verb, n) != 0 || !isspace((unsigned char)t[n]))
            continue;
        const char *a = t + n;
        while (isspace((unsigned char)*a))
            a++;
        if (strncasecmp(a, "all", 3) == 0 && !dbpool__pg_ident_cont((unsigned char)a[3]))
            return true;
    }
    return false;
}

/* A statement that names statement_timeout (SET, SET LOCAL, set_config,
 * SHOW, ALTER ROLE ... SET), or RESET ALL / DISCARD ALL, may give the
 * session a limit other than the pool's, longer or none: the core then
 * calls without a deadline. */
static bool pg_names_statement_limit(const char *sql) {
    return dbpool__mentions_ci(sql, "statement_timeout") || resets_all(sql);
}

/* Before a caller's statement: a connection given up on takes no more. */
static int refuse_given_up(const pg_session *ps, dbpool_error *e) {
    /* Lost under an earlier statement (the server closed it: an idle
     * timeout, a terminated backend): libpq's own words here would be "no
     * connection to the server", which says neither that nor what to do. */
    if (PQstatus(ps->pg) != CONNECTION_OK)
        return dbpool__seterr(e, DBPOOL_EBROKEN,
                              "postgresql: this connection was lost under an earlier statement: release the "
                              "lease (the connection is closed) and acquire another");
    if (!ps->gave_up)
        return DBPOOL_OK;
    return dbpool__seterr(e, DBPOOL_EBROKEN,
                          "this connection was given up on when an earlier statement got no answer by its "
                          "deadline: release the lease (the connection is closed) and acquire another");
}

/* After a caller's statement: did the backstop deadline cut it off? */
static int check_deadline(pg_session *ps, const pg_bound *b, dbpool_error *e) {
    if (!b->timed_out)
        return DBPOOL_OK;
    ps->gave_up = true;
    return dbpool__seterr(e, DBPOOL_ETIMEDOUT, "postgresql: no answer from the server before the deadline");
}

static int pg_exec(void *native, const char *sql, const dbpool_param *p, size_t n, int64_t *affected,
                   int64_t deadline_ns, dbpool_error *e) {
    PGconn *c = pg_of(native);
    if (affected)
        *affected = 0;
    int rc = refuse_given_up(native, e);
    if (rc != DBPOOL_OK)
        return rc;
    note_session_change(native, sql);
    pg_bound b = bound_of(native, sql, n, deadline_ns);
    PGresult *r = NULL;
    rc = run(native, &b, sql, p, n, &r, e);
    if (rc == DBPOOL_OK)
        rc = check_deadline(native, &b, e);
    if (rc == DBPOOL_OK)
        rc = check_result(c, r, e);
    if (rc == DBPOOL_OK && affected && changes_rows(PQcmdStatus(r))) {
        const char *t = PQcmdTuples(r);
        *affected = t && *t ? (int64_t)strtoll(t, NULL, 10) : 0;
    }
    PQclear(r);
    return rc;
}

/* The pool's init_sql, ended by the deadline (a connect's or a reset's):
 * one statement or several, rows discarded. A timeout leaves the statement
 * running and the connection unusable. */
static int pg_exec_bounded(void *native, const char *sql, int64_t deadline_ns, dbpool_error *e) {
    static const ExecStatusType ok[] = {PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY};
    pg_session *ps = native;
    if (!ps->watching_client) {
        int rc = watch_for_closed_client(ps->pg, deadline_ns, e);
        if (rc != DBPOOL_OK)
            return rc;
        ps->watching_client = true;
    }
    note_session_change(native, sql);
    return roundtrip_any(pg_of(native), sql, ok, sizeof ok / sizeof ok[0], deadline_ns, "query failed", e);
}

/*
 * A query's result is the PGresult itself behind the dbpool_result
 * interface: libpq has already fetched every row, so copying the cells
 * into a rowset would only cost allocations. Values stay valid until the
 * result is freed (the API promises less: until the next row).
 */
typedef struct pg_result {
    struct dbpool_result base; /* first: a pg_result is a dbpool_result */
    PGresult *r;
    int nrows, ncols;
    int row; /* 0-based index of the current row; -1 before the first */
    /* The current row's bytea cells decoded by dbpool_result_blob, by
     * column (made on first use, emptied at each row). */
    unsigned char **decoded;
    size_t *decoded_len;
} pg_result;

static void pr_forget_decoded(pg_result *pr) {
    for (int i = 0; pr->decoded && i < pr->ncols; i++) {
        PQfreemem(pr->decoded[i]);
        pr->decoded[i] = NULL;
    }
}

static const char *pr_cell(const dbpool_result *res, int col) {
    const pg_result *pr = (const pg_result *)res;
    if (pr->row < 0 || pr->row >= pr->nrows || col < 0 || col >= pr->ncols ||
        PQgetisnull(pr->r, pr->row, col))
        return NULL;
    return PQgetvalue(pr->r, pr->row, col);
}

static int pr_next(dbpool_result *res, dbpool_error *e) {
    (void)e;
    pg_result *pr = (pg_result *)res;
    pr_forget_decoded(pr);
    if (pr->row + 1 < pr->nrows) {
        pr->row++;
        return 1;
    }
    pr->row = pr->nrows; /* after the last row: every cell reads as NULL */
    return 0;
}
static int pr_columns(const dbpool_result *res) { return ((const pg_result *)res)->ncols; }
static const char *pr_column_name(const dbpool_result *res, int col) {
    const pg_result *pr = (const pg_result *)res;
    return col >= 0 && col < pr->ncols ? PQfname(pr->r, col) : NULL;
}
static bool pr_is_null(const dbpool_result *res, int col) { return pr_cell(res, col) == NULL; }
static const char *pr_text(const dbpool_result *res, int col, size_t *len) {
    const char *v = pr_cell(res, col);
    if (len) {
        const pg_result *pr = (const pg_result *)res;
        *len = v ? (size_t)PQgetlength(pr->r, pr->row, col) : 0;
    }
    return v;
}
/* A boolean arrives as "t" or "f", which strtoll and strtod read as 0
 * both: read it as 1 / 0, as true and false read on SQLite and MySQL. The
 * other columns' text is read the way the core reads text. */
static bool pr_bool(const pg_result *pr, int col, const char *v, int *out) {
    if (PQftype(pr->r, col) != PG_OID_BOOL || PQfformat(pr->r, col) != 0)
        return false;
    *out = v[0] == 't';
    return true;
}
static int64_t pr_int64(const dbpool_result *res, int col) {
    const char *v = pr_cell(res, col);
    int b;
    if (!v)
        return 0;
    const pg_result *pr = (const pg_result *)res;
    if (pr_bool(pr, col, v, &b))
        return b;
    /* A double or numeric: "1e+20" is not 1 (as strtoll would read it). */
    Oid t = PQftype(pr->r, col);
    if (PQfformat(pr->r, col) == 0 && (t == PG_OID_FLOAT8 || t == PG_OID_FLOAT4 || t == PG_OID_NUMERIC))
        return dbpool__int64_of_real_text(v);
    /* A bit string "101" is 5, as MySQL's BIT reads. */
    if (PQfformat(pr->r, col) == 0 && (t == PG_OID_BIT || t == PG_OID_VARBIT)) {
        unsigned long long u = strtoull(v, NULL, 2);
        return u > (unsigned long long)INT64_MAX ? INT64_MAX : (int64_t)u;
    }
    return strtoll(v, NULL, 10);
}
static double pr_double(const dbpool_result *res, int col) {
    const char *v = pr_cell(res, col);
    int b;
    if (!v)
        return 0.0;
    const pg_result *pr = (const pg_result *)res;
    if (pr_bool(pr, col, v, &b))
        return b;
    Oid t = PQftype(pr->r, col);
    if (PQfformat(pr->r, col) == 0 && (t == PG_OID_BIT || t == PG_OID_VARBIT))
        return (double)strtoull(v, NULL, 2);
    return dbpool__strtod_c(v, NULL);
}
/* bytea arrives as text (hex, or the old escape format): decoded once per
 * cell and row. Other columns' text is their bytes. */
static const void *pr_blob(const dbpool_result *res, int col, size_t *len) {
    pg_result *pr = (pg_result *)(uintptr_t)res; /* the decoded cells are a cache */
    const char *v = pr_text(res, col, len);
    if (!v || PQftype(pr->r, col) != PG_OID_BYTEA || PQfformat(pr->r, col) != 0)
        return v;
    if (!pr->decoded) {
        pr->decoded = calloc((size_t)pr->ncols, sizeof *pr->decoded);
        pr->decoded_len = calloc((size_t)pr->ncols, sizeof *pr->decoded_len);
        if (!pr->decoded || !pr->decoded_len) {
            free(pr->decoded);
            free(pr->decoded_len);
            pr->decoded = NULL;
            pr->decoded_len = NULL;
            *len = 0;
            return NULL;
        }
    }
    if (!pr->decoded[col]) {
        pr->decoded[col] = PQunescapeBytea((const unsigned char *)v, &pr->decoded_len[col]);
        if (!pr->decoded[col]) {
            *len = 0;
            return NULL;
        }
    }
    *len = pr->decoded_len[col];
    return pr->decoded[col];
}
static void pr_free(dbpool_result *res) {
    pg_result *pr = (pg_result *)res;
    pr_forget_decoded(pr);
    free(pr->decoded);
    free(pr->decoded_len);
    PQclear(pr->r);
    free(pr);
}

static const dbpool_result_ops pg_result_ops = {
    .next = pr_next,
    .columns = pr_columns,
    .column_name = pr_column_name,
    .is_null = pr_is_null,
    .int64 = pr_int64,
    .dbl = pr_double,
    .text = pr_text,
    .blob = pr_blob,
    .free = pr_free,
};

static int pg_query(void *native, const char *sql, const dbpool_param *p, size_t n, dbpool_result **out,
                    int64_t deadline_ns, dbpool_error *e) {
    PGconn *c = pg_of(native);
    *out = NULL;
    int rc = refuse_given_up(native, e);
    if (rc != DBPOOL_OK)
        return rc;
    /* The simple protocol would run every statement of the text and hand
     * back the last one's rows: one statement, as on SQLite. */
    bool several = false;
    if (n == 0 && (dbpool__pg_scan(sql, NULL, &several), several))
        return dbpool__seterr(e, DBPOOL_EINVAL,
                              "dbpool_query takes one statement; use dbpool_exec for several");
    note_session_change(native, sql);
    pg_bound b = bound_of(native, sql, n, deadline_ns);
    PGresult *r = NULL;
    rc = run(native, &b, sql, p, n, &r, e);
    if (rc == DBPOOL_OK)
        rc = check_deadline(native, &b, e);
    if (rc == DBPOOL_OK)
        rc = check_result(c, r, e);
    if (rc != DBPOOL_OK) {
        PQclear(r);
        return rc;
    }
    pg_result *pr = malloc(sizeof *pr);
    if (!pr) {
        int nrows = PQntuples(r);
        PQclear(r);
        return dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory fetching %d rows", nrows);
    }
    pr->base.ops = &pg_result_ops;
    pr->base.lease = NULL;
    pr->r = r;
    pr->nrows = PQntuples(r);
    pr->ncols = PQnfields(r);
    pr->row = -1;
    pr->decoded = NULL;
    pr->decoded_len = NULL;
    *out = &pr->base;
    return DBPOOL_OK;
}

/* ------------------------------------------------------------------------ */
/* Classification and metadata                                              */
/* ------------------------------------------------------------------------ */

/* Does this URL's connection ask for a server that takes writes
 * (target_session_attrs read-write or primary)? */
static bool wants_writable(PGconn *c) {
    PQconninfoOption *opts = PQconninfo(c);
    if (!opts)
        return true; /* out of memory: as before, replace it */
    bool yes = false;
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (strcmp(o->keyword, "target_session_attrs") == 0 && o->val)
            yes = strcmp(o->val, "read-write") == 0 || strcmp(o->val, "primary") == 0;
    PQconninfoFree(opts);
    return yes;
}

/* SQLSTATE 25006 (read_only_sql_transaction): a write in a read-only
 * transaction. The connection is only worth replacing when the server it
 * reached is now a standby (a failover demoted it: a new connection finds
 * the primary), or when it no longer takes writes and the URL asks for one
 * that does (target_session_attrs). A caller's own BEGIN READ ONLY, or a
 * server whose default_transaction_read_only is on for everyone, leaves a
 * working connection: closing it helped nothing, and cost a connect per
 * refused write. Servers before 14 report neither setting: replaced, as
 * a standby's. */
static bool read_only_means_replace(PGconn *c) {
    const char *standby = PQparameterStatus(c, "in_hot_standby");
    if (!standby)
        return true;
    if (strcmp(standby, "on") == 0)
        return true;
    const char *ro = PQparameterStatus(c, "default_transaction_read_only");
    return ro && strcmp(ro, "on") == 0 && wants_writable(c);
}

static bool pg_is_broken(void *native, const dbpool_error *e) {
    PGconn *c = pg_of(native);
    if (!c || PQstatus(c) != CONNECTION_OK || ((pg_session *)native)->gave_up)
        return true;
    if (!e)
        return false;
    if (e->code == DBPOOL_EBROKEN)
        return true;
    const char *st = e->sqlstate;
    if (strlen(st) != 5)
        return false;
    return strncmp(st, "08", 2) == 0                                    /* connection exception */
           || strcmp(st, "57P01") == 0                                  /* admin_shutdown */
           || strcmp(st, "57P02") == 0                                  /* crash_shutdown */
           || strcmp(st, "57P03") == 0                                  /* cannot_connect_now */
           || (strcmp(st, "25006") == 0 && read_only_means_replace(c)); /* a standby after failover */
}

static void pg_server_version(void *native, char *buf, size_t len) {
    if (!buf || len == 0)
        return;
    const char *v = native ? PQparameterStatus(pg_of(native), "server_version") : NULL;
    dbpool__strlcpy(buf, v ? v : "", len);
    /* "15.20 (Debian 15.20-0+deb12u1)" -> "15.20" */
    char *sp = strchr(buf, ' ');
    if (sp)
        *sp = '\0';
}

static const char *const pg_schemes[] = {"postgresql", "postgres", NULL};

const dbpool_driver dbpool__driver_pg = {
    .name = "postgresql",
    .schemes = pg_schemes,
    .configure = configure,
    .free_config = free_config,
    .secrets = secrets,
    .connect = pg_connect,
    .disconnect = pg_disconnect,
    .ping = pg_ping,
    .needs_reset = pg_needs_reset,
    .reset = pg_reset,
    .exec = pg_exec,
    .exec_bounded = pg_exec_bounded,
    .query = pg_query,
    .is_broken = pg_is_broken,
    .server_version = pg_server_version,
    .user_handle = pg_user_handle,
    .session_baseline = pg_session_baseline,
    .names_statement_limit = pg_names_statement_limit,
    .at_connection_limit = pg_at_connection_limit,
};
