/*
 * driver_mysql.c — the MySQL/MariaDB backend, on MariaDB Connector/C.
 *
 * Notes for users and maintainers:
 *  - Connector/C sets SIGPIPE to SIG_IGN process-wide when the library is
 *    initialised (the first connection of the first MySQL pool). A program
 *    that relies on SIGPIPE's default action must reinstall it itself.
 *  - mysql_thread_init/mysql_thread_end are no-ops in Connector/C 3.x
 *    (deprecated since 3.0), so threads need no per-thread set-up; only
 *    mysql_library_init must run once before the first mysql_init, which
 *    pthread_once guarantees.
 *  - Automatic reconnect stays off: a silent reconnect would lose the
 *    transaction and session state without the caller noticing.
 *  - Connect, ping and reset end at the core's deadline through Connector/C's
 *    MARIADB_OPT_IO_WAIT hook, on the blocking API (see "Deadlines" below:
 *    the non-blocking API would cost every connection a 256 KiB coroutine
 *    stack), and so does the pool's init_sql (exec_bounded). exec and query
 *    end at the core's backstop deadline the same way when the pool has
 *    statement_timeout_ms (the server's max_statement_time normally ends
 *    a long statement first); without it they are bounded only by the
 *    URL's read_timeout/write_timeout.
 *  - The native handle is the MYSQL *; it is the first member of the
 *    per-connection bookkeeping (my_conn), initialised in place.
 */
#include "driver.h"
#include "internal.h"
#include "mysql_config.h"
#include "mysql_session_sql.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <mysql.h>
#include <mysql/plugin_auth.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* Client and server error numbers we act on (errmsg.h / mysqld_error.h). */
enum {
    MY_ER_FORCING_CLOSE = 1080,
    MY_ER_SERVER_SHUTDOWN = 1053,
    MY_ER_NET_PACKET_TOO_LARGE = 1153,
    MY_ER_NET_WRITE_INTERRUPTED = 1161,
    MY_ER_DBACCESS_DENIED = 1044,
    MY_ER_ACCESS_DENIED = 1045,
    MY_ER_BAD_DB = 1049,
    MY_ER_HOST_NOT_PRIVILEGED = 1130,
    MY_ER_ACCESS_DENIED_NO_PASSWORD = 1698,
    MY_ER_CONNECTION_KILLED = 1927,
    MY_ER_MAX_PREPARED_STMT_COUNT = 1461,
    MY_ER_MUST_CHANGE_PASSWORD = 1820,
    MY_ER_MUST_CHANGE_PASSWORD_LOGIN = 1862,
    MY_ER_ACCOUNT_HAS_BEEN_LOCKED = 4151,
    MY_ER_CON_COUNT = 1040,                 /* max_connections */
    MY_ER_TOO_MANY_USER_CONNECTIONS = 1203, /* the global max_user_connections */
    MY_ER_USER_LIMIT_REACHED = 1226,        /* an account's MAX_USER_CONNECTIONS (or hourly limits) */
    MY_CR_CONNECTION_ERROR = 2002,
    MY_CR_CONN_HOST_ERROR = 2003,
    MY_CR_UNKNOWN_HOST = 2005,
    MY_CR_SERVER_GONE = 2006,
    MY_CR_OUT_OF_MEMORY = 2008,
    MY_CR_SERVER_LOST = 2013,
    MY_CR_COMMANDS_OUT_OF_SYNC = 2014,
    MY_CR_SERVER_LOST_EXTENDED = 2055,
    MY_CR_AUTH_PLUGIN_CANNOT_LOAD = 2059,
    MY_CR_SSL_CONNECTION_ERROR = 2026,
    MY_ER_CLIENT_INTERACTION_TIMEOUT = 4031,
};

/*
 * Bookkeeping per connection, around the MYSQL it wraps: the native handle
 * is &mysql, initialised in place with mysql_init(&mc->mysql), so reaching
 * the bookkeeping from the handle is pointer arithmetic and costs no memory
 * beyond these fields (MARIADB_OPT_USERDATA would cost a hash table of
 * about 8 KiB per handle).
 */
typedef struct my_stmt_cache my_stmt_cache;

typedef struct my_conn {
    MYSQL mysql;
    my_stmt_cache *stmts;         /* prepared parameterised statements, made at the first one */
    bool dirty;                   /* the session changed since the last reset (server-reported, or a
                                     statement mysql_session_sql.c flags) */
    bool stmts_stale;             /* the server reported a session change (USE, sql_mode, ...) since
                                     the kept statements were prepared: prepare them again */
    bool broken;                  /* an operation was cut off at its deadline, or the link was lost */
    bool schema_changed;          /* the server reported a new default database (USE) since the reset */
    bool xa_prepared;             /* an XA PREPARE ran: no reset may touch this session (see
                                     dbpool__mysql_prepares_xa); closed at release */
    char charset[33];             /* for SET NAMES after a reset (the URL allows 32 characters) */
    int64_t statement_timeout_ms; /* re-applied after a reset; 0: none */
    char *init_command;           /* rerun after a reset, or NULL */
    char *user;                   /* the account connected as (Connector/C's user after connect), or
                                     NULL; another one after a mysql_change_user on the native handle */
    char *database;               /* the URL's, made current again after a reset; or NULL */
    char *set_role;               /* MariaDB: "SET ROLE ...", run after a reset (the reset keeps the
                                     caller's role); or NULL */
    char *db0;                    /* Connector/C's default database (mysql->db) where leases start:
                                     a mysql_select_db on the native handle changes it with no
                                     status callback; NULL for none (or unknown: db0_known) */
    bool db0_known;
    MYSQL_STMT *canary; /* never prepared: Connector/C detaches it (canary->mysql = NULL)
                           when the session is reset or changed on the native handle
                           (mysql_reset_connection, mysql_change_user), which the server
                           does not report. Made when a lease takes the native handle
                           (my_user_handle): about 9 KB of Connector/C buffers that a
                           connection only leased through dbpool's own calls, which
                           cannot reset the session, does without. NULL until then, or
                           when memory was short */
} my_conn;

/* ------------------------------------------------------------------------ */
/* Library initialisation                                                   */
/* ------------------------------------------------------------------------ */

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static int lib_init_rc;

static void lib_init(void) { lib_init_rc = mysql_library_init(0, NULL, NULL); }

static int ensure_library(dbpool_error *e) {
    if (pthread_once(&lib_once, lib_init) != 0)
        abort();
    if (lib_init_rc != 0)
        return dbpool__seterr(e, DBPOOL_ECONNECT, "mysql: could not initialise MariaDB Connector/C");
    return DBPOOL_OK;
}

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */
/* ------------------------------------------------------------------------ */

static bool broken_errno(unsigned n) {
    /* The server's network errors (SQLSTATE 08S01: a packet larger than
     * max_allowed_packet, a read or write that failed or was interrupted):
     * the server closes the connection after sending one. */
    if (n >= MY_ER_NET_PACKET_TOO_LARGE && n <= MY_ER_NET_WRITE_INTERRUPTED)
        return true;
    switch (n) {
    case MY_ER_FORCING_CLOSE:
    case MY_CR_SERVER_GONE:
    case MY_CR_SERVER_LOST:
    case MY_CR_SERVER_LOST_EXTENDED:
    case MY_CR_COMMANDS_OUT_OF_SYNC:
    case MY_ER_CLIENT_INTERACTION_TIMEOUT:
    case MY_ER_CONNECTION_KILLED:
    case MY_ER_SERVER_SHUTDOWN:
    /* On an established connection: OpenSSL's stream failed under a
     * statement (a read past the URL's read_timeout, a reset): what is
     * left of it cannot be read in step again. */
    case MY_CR_SSL_CONNECTION_ERROR:
        return true;
    default:
        return false;
    }
}

/* Every native handle of this driver is the mysql member of a my_conn. */
static my_conn *conn_of(MYSQL *m) { return (my_conn *)(void *)((char *)m - offsetof(my_conn, mysql)); }

static void fill_native(dbpool_error *e, unsigned n, const char *sqlstate) {
    if (!e)
        return;
    e->native_code = (int)n;
    dbpool__strlcpy(e->sqlstate, sqlstate && strcmp(sqlstate, "00000") != 0 ? sqlstate : "",
                    sizeof e->sqlstate);
}

/* A failed statement: EBROKEN when the link is gone, EQUERY otherwise. */
static int stmt_error(MYSQL *m, unsigned n, const char *sqlstate, const char *msg, dbpool_error *e) {
    /* Connector/C out of memory (reading a result, say) is not the
     * statement's error; what it could not read is left on the socket, so
     * the connection is not used again. */
    bool oom = n == MY_CR_OUT_OF_MEMORY;
    bool broken = oom || broken_errno(n);
    if (broken)
        conn_of(m)->broken = true;
    int code = oom ? DBPOOL_ENOMEM : broken ? DBPOOL_EBROKEN : DBPOOL_EQUERY;
    /* Connector/C's words ("Server has gone away", "Lost connection to
     * server during query") say nothing of what to do, but what to do
     * depends on who reads them: a caller's statement gets "release the
     * lease and acquire another" from the core (query.c), as on every
     * backend, while a ping, a reset or a connect has no lease to release
     * (the pool closes or replaces the connection, and logs these words).
     * Too large a packet (a statement and its parameters over the
     * server's max_allowed_packet) ends the connection too, but another
     * one fails the same way: say what does help. */
    bool too_large = n == MY_ER_NET_PACKET_TOO_LARGE;
    dbpool__seterr(e, code, "mysql: %s (error %u, SQLSTATE %s)%s", msg, n, sqlstate,
                   too_large ? "; the statement with its parameters is larger than the server's "
                               "max_allowed_packet allows, and would be on any connection: send "
                               "less per statement, or raise max_allowed_packet on the server; this "
                               "connection is closed when the lease is released"
                             : "");
    fill_native(e, n, sqlstate);
    return code;
}

static int conn_error(MYSQL *m, dbpool_error *e) {
    return stmt_error(m, mysql_errno(m), mysql_sqlstate(m), mysql_error(m), e);
}

/* ------------------------------------------------------------------------ */
/* Deadlines on the blocking API                                            */
/* ------------------------------------------------------------------------ */

/*
 * Connect, ping and reset run on Connector/C's blocking API and still end at
 * the core's deadline, through its MARIADB_OPT_IO_WAIT hook. In blocking
 * mode Connector/C sends and receives with MSG_DONTWAIT and, whenever the
 * socket is not ready, calls the hook (fd, read or write, its own timeout)
 * instead of poll(). The hook, installed only while a bounded call runs,
 * polls until the deadline of that call and then reports a timeout, which
 * fails the call the way Connector/C's own read_timeout does. The hook has no
 * user pointer, so the deadline is kept per thread: the core calls the driver
 * from one thread per handle at a time, and Connector/C does its I/O on the
 * calling thread.
 *
 * TLS: Connector/C leaves the socket in blocking mode and OpenSSL reads and
 * writes it without MSG_DONTWAIT, so the hook would not be asked. For a
 * bounded call on a TLS connection the socket is therefore made
 * non-blocking: OpenSSL then reports WANT_READ/WANT_WRITE and Connector/C's
 * TLS layer waits through the same hook. The TLS handshake inside connect
 * cannot be reached that way (Connector/C sets the socket back to blocking
 * after the TCP connect, and the handshake reads it without MSG_DONTWAIT):
 * each of its reads and writes blocks under the socket timeouts that
 * Connector/C sets from its connect timeout, in whole seconds (the time
 * left, rounded up); when one expires, the hook is asked and the deadline
 * decides. When Connector/C had to wait for the server's greeting (always
 * over a real network), the hook tightens those socket timeouts to the time
 * left (tighten_socket_timeouts) and makes the socket non-blocking until
 * connect returns, so that the handshake's reads come back through the hook
 * (a peer sending a byte at a time no longer restarts a socket timeout at
 * each byte) and it keeps the deadline to a few milliseconds. When the
 * greeting was already there, a stalled handshake is cut up to one second
 * late, and a trickling peer can hold it longer.
 *
 * The non-blocking API (mysql_*_start/_cont) would bound everything, but it
 * needs MYSQL_OPT_NONBLOCK, which gives every handle its own coroutine stack
 * (256 KiB in Debian's Connector/C 3.3) for the handle's whole life: more
 * than a thousand times what the pool itself keeps per connection.
 */
typedef struct my_bound {
    int64_t deadline_ns; /* 0: no bounded call on this thread */
    bool expired;        /* the hook reported the deadline */
    /* A caller's statement: Connector/C's own read/write timeout (the URL's
     * read_timeout, write_timeout) still applies to each wait, the sooner
     * of it and the deadline winning. 0: not one, or none set. On a TLS
     * connection Connector/C passes it in seconds (see bounded_io_wait). */
    bool lib_timeouts;
    bool lib_timeouts_tls;
    bool tls_connect;  /* a connect that will run a TLS handshake */
    bool gate_ran;     /* ssl-mode=REQUIRED: the TLS gate (tls_gate_auth) was asked */
    bool gate_refused; /* ... and refused: the server offered no TLS */
    int connect_fd;    /* made non-blocking by the hook during that connect, or -1 */
    int connect_flags; /* its flags before */
} my_bound;

static _Thread_local my_bound tl_bound;

/*
 * A connect that will run a TLS handshake: by the time Connector/C waits for
 * the server's greeting it has set the socket's timeouts to its whole-second
 * connect timeout, and the handshake after it blocks in read()/write() under
 * them. Tighten them to the time left (Connector/C puts its read and write
 * timeouts back at the end of connect). Never 0, which means no timeout.
 */
static void tighten_socket_timeouts(my_socket fd) {
    int64_t left = dbpool__ms_left(tl_bound.deadline_ns);
    if (left < 1)
        left = 1;
    struct timeval tv = {.tv_sec = (time_t)(left / 1000), .tv_usec = (suseconds_t)(left % 1000) * 1000};
    setsockopt((int)fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt((int)fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static int bounded_io_wait(my_socket fd, my_bool is_read, int lib_timeout_ms) {
    struct pollfd pfd = {.fd = (int)fd, .events = is_read ? POLLIN : POLLOUT, .revents = 0};
    /* A caller's statement: the sooner of the URL's read/write timeout and
     * the deadline. Connector/C's TLS layer passes that timeout in seconds
     * (its plain socket layer in milliseconds). */
    int64_t lib_until = 0;
    if (tl_bound.deadline_ns && tl_bound.lib_timeouts && lib_timeout_ms > 0)
        lib_until = dbpool__deadline_after_ms(tl_bound.lib_timeouts_tls ? (int64_t)lib_timeout_ms * 1000
                                                                        : (int64_t)lib_timeout_ms);
    for (;;) {
        int timeout = lib_timeout_ms > 0 ? lib_timeout_ms : -1;
        bool past = false; /* the deadline has passed */
        if (lib_until && lib_until < tl_bound.deadline_ns && dbpool__ms_left(lib_until) <= 0) {
            errno = ETIMEDOUT; /* Connector/C's own timeout: its error, not the deadline's */
            return 0;
        }
        if (tl_bound.deadline_ns) {
            /* The deadline alone governs: Connector/C's TLS layer passes its
             * timeouts in seconds where milliseconds are expected. Past
             * it, one look that does not wait (as in pg_bounded.c):
             * an answer the server sent in time may lie unread because this
             * thread did not run (the process was stopped, the machine
             * overloaded). Take it rather than give up on a connection
             * that answered. */
            int64_t left = dbpool__ms_left(tl_bound.deadline_ns);
            past = left <= 0;
            if (!past && lib_until && lib_until < tl_bound.deadline_ns)
                left = dbpool__ms_left(lib_until);
            timeout = left > INT_MAX ? INT_MAX : (int)left;
        }
        int r = poll(&pfd, 1, timeout);
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0 && past) {
            tl_bound.expired = true;
            errno = ETIMEDOUT;
            return 0;
        }
        if (r == 0) {
            if (tl_bound.deadline_ns)
                continue; /* the check at the top decides */
            errno = ETIMEDOUT;
        }
        if (r > 0 && is_read && tl_bound.deadline_ns && tl_bound.tls_connect) {
            tighten_socket_timeouts(fd);
            /* And the handshake's reads and writes come back here when the
             * socket is not ready (OpenSSL's WANT_READ/WANT_WRITE), instead
             * of blocking under those timeouts: a peer that sends a byte at
             * a time, each before the socket timeout, would otherwise hold
             * the handshake past the deadline for as long as it likes.
             * connect_one puts the flags back. */
            int fl = tl_bound.connect_fd < 0 ? fcntl((int)fd, F_GETFL) : -1;
            if (fl >= 0 && !(fl & O_NONBLOCK) && fcntl((int)fd, F_SETFL, fl | O_NONBLOCK) == 0) {
                tl_bound.connect_fd = (int)fd;
                tl_bound.connect_flags = fl;
            }
        }
        return r;
    }
}

/* What a bounded call changed on the handle, to be undone at its end. */
typedef struct my_guard {
    int fd;    /* made non-blocking for TLS, or -1 */
    int flags; /* its flags before */
} my_guard;

/* TLS only: let OpenSSL report WANT_READ/WANT_WRITE instead of blocking. */
static void guard_nonblock(MYSQL *m, my_guard *g) {
    if (g->fd >= 0 || !mysql_get_ssl_cipher(m))
        return;
    int fd = (int)mysql_get_socket(m);
    int fl = fd >= 0 ? fcntl(fd, F_GETFL) : -1;
    if (fl < 0 || (fl & O_NONBLOCK))
        return;
    if (fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0) {
        g->fd = fd;
        g->flags = fl;
    }
}

/* Set the deadline of this thread's bounded call (0 would mean none). */
static void bound_set(int64_t deadline_ns) {
    tl_bound.deadline_ns = deadline_ns ? deadline_ns : 1;
    tl_bound.expired = false;
    tl_bound.lib_timeouts = false;
    tl_bound.lib_timeouts_tls = false;
    tl_bound.tls_connect = false;
    tl_bound.connect_fd = -1;
}

/* Start a bounded call on a connected handle: the deadline and the hook. */
static void bound_begin(MYSQL *m, int64_t deadline_ns, my_guard *g) {
    bound_set(deadline_ns);
    g->fd = -1;
    g->flags = 0;
    mysql_optionsv(m, MARIADB_OPT_IO_WAIT, bounded_io_wait);
    guard_nonblock(m, g);
}

/* End it; true when the deadline cut it off. */
static bool bound_end(MYSQL *m, my_guard *g) {
    /* Only while the handle still owns that descriptor: after a failure
     * Connector/C may have closed it, and the number may be reused. */
    if (g->fd >= 0 && (int)mysql_get_socket(m) == g->fd)
        fcntl(g->fd, F_SETFL, g->flags);
    g->fd = -1;
    mysql_optionsv(m, MARIADB_OPT_IO_WAIT, (void *)NULL);
    bool expired = tl_bound.expired;
    tl_bound.deadline_ns = 0;
    tl_bound.expired = false;
    tl_bound.lib_timeouts = false;
    tl_bound.tls_connect = false;
    return expired;
}

static void mark_broken(MYSQL *m) { conn_of(m)->broken = true; }

/* Does sql name the server's statement limit (SET [SESSION]
 * max_statement_time, SET STATEMENT ... FOR, MySQL's max_execution_time
 * and its MAX_EXECUTION_TIME hint)? */
static bool names_statement_limit(const char *sql) {
    return dbpool__mentions_ci(sql, "max_statement_time") || dbpool__mentions_ci(sql, "max_execution_time");
}

/* Run one statement inside a bounded call, reading and dropping every
 * result it returns (a CALL in init_command answers with one result set
 * per SELECT in the procedure, then a status): one left unread would put
 * the connection out of sync. */
static int run_sql(MYSQL *m, const char *sql, const char *what, dbpool_error *e) {
    int err = mysql_real_query(m, sql, (unsigned long)strlen(sql)) != 0;
    while (!err) {
        if (mysql_field_count(m) > 0) {
            MYSQL_RES *res = mysql_store_result(m);
            if (res)
                mysql_free_result(res);
            else
                err = 1;
        }
        if (err || !mysql_more_results(m))
            break;
        int r = mysql_next_result(m);
        if (r > 0)
            err = 1;
        else if (r < 0)
            break;
    }
    if (tl_bound.expired) {
        mark_broken(m);
        dbpool__seterr(e, DBPOOL_ETIMEDOUT, "mysql: %s timed out", what);
        fill_native(e, mysql_errno(m) ? mysql_errno(m) : MY_CR_SERVER_LOST, mysql_sqlstate(m));
        return DBPOOL_ETIMEDOUT;
    }
    if (err) {
        int rc = conn_error(m, e);
        dbpool__prefix_err(e, "%s", what);
        return rc;
    }
    return DBPOOL_OK;
}

/* ------------------------------------------------------------------------ */
/* Connect                                                                  */
/* ------------------------------------------------------------------------ */

static unsigned seconds_left(int64_t deadline_ns) {
    int64_t ms = dbpool__ms_left(deadline_ns);
    int64_t s = (ms + 999) / 1000;
    if (s < 1)
        s = 1;
    if (s > 31536000)
        s = 31536000;
    return (unsigned)s;
}

/* What a failed TLS handshake says (CR_SSL_CONNECTION_ERROR), sorted by
 * what the user has to change. */
typedef enum {
    TLS_OTHER = 0,
    TLS_NO_TLS, /* a verify mode, and the server offers no TLS */
    TLS_NOT_TRUSTED,
    TLS_OTHER_HOST,
    TLS_BAD_CA_FILE,
    TLS_ENCRYPTED_KEY,
    TLS_BAD_CLIENT_FILES
} tls_failure;

static tls_failure tls_failure_of(unsigned n, const char *msg) {
    if (n != MY_CR_SSL_CONNECTION_ERROR)
        return TLS_OTHER;
    /* A verify mode (VERIFY_CA, VERIFY_IDENTITY) against a server that
     * offers no TLS, or behind something that takes the offer away. */
    if (strstr(msg, "SSL is required, but the server does not support it"))
        return TLS_NO_TLS;
    /* Connector/C's own check of the host name (VERIFY_CA, VERIFY_IDENTITY). */
    if (strstr(msg, "Validation of SSL server certificate failed"))
        return TLS_OTHER_HOST;
    /* OpenSSL's verification of the chain against ssl-ca (in every mode
     * once ssl-ca is given), in its own words. */
    static const char *const untrusted[] = {
        "certificate verify failed",
        "self-signed certificate",
        "self signed certificate",
        "unable to get local issuer certificate",
        "unable to get issuer certificate",
        "unable to verify the first certificate",
        "certificate has expired",
        "certificate is not yet valid",
        "certificate signature failure",
        "invalid CA certificate",
        "certificate rejected",
        "certificate not trusted",
    };
    for (size_t i = 0; i < sizeof untrusted / sizeof *untrusted; i++)
        if (strstr(msg, untrusted[i]))
            return TLS_NOT_TRUSTED;
    if (strstr(msg, "no certificate or crl found"))
        return TLS_BAD_CA_FILE;
    if (strstr(msg, "bad decrypt"))
        return TLS_ENCRYPTED_KEY;
    /* OpenSSL could not load ssl-cert and ssl-key: a file that is not PEM,
     * a key that is not the certificate's, no key (ssl-cert alone is read
     * as holding both). */
    static const char *const client_files[] = {"no start line", "key values mismatch", "PEM lib",
                                               "bad base64 decode"};
    for (size_t i = 0; i < sizeof client_files / sizeof *client_files; i++)
        if (strstr(msg, client_files[i]))
            return TLS_BAD_CLIENT_FILES;
    /* A certificate without its key: OpenSSL's bare "unsupported" (not
     * "unsupported protocol", a TLS version the two sides do not share). */
    size_t len = strlen(msg);
    if (len >= 13 && strcmp(msg + len - 13, ": unsupported") == 0)
        return TLS_BAD_CLIENT_FILES;
    return TLS_OTHER;
}

/* The TLS files the URL names must be readable: Connector/C's own error
 * for one that is not ("TLS/SSL error: No such file or directory (2)")
 * names neither the key nor the file. A wrong path is the URL's, the same
 * at every attempt: DBPOOL_EINVAL, not retried. */
static int check_tls_files(const my_cfg *c, dbpool_error *e) {
    if (c->ssl == SSL_DISABLED)
        return DBPOOL_OK;
    const struct {
        const char *key, *path;
    } files[] = {{"ssl-ca", c->ssl_ca}, {"ssl-cert", c->ssl_cert}, {"ssl-key", c->ssl_key}};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        if (!files[i].path)
            continue;
        int fd = open(files[i].path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 && (errno == EMFILE || errno == ENFILE))
            /* No descriptor left: nothing wrong with the URL, and it
             * passes once descriptors are free (the core says so). */
            return dbpool__seterr(e, DBPOOL_ECONNECT, "mysql: cannot open the %s file '%.200s' (%s)",
                                  files[i].key, files[i].path, strerror(errno));
        if (fd < 0)
            return dbpool__seterr(e, DBPOOL_EINVAL,
                                  "mysql: cannot read the %s file '%.200s' (%s): fix %s in the URL",
                                  files[i].key, files[i].path, strerror(errno), files[i].key);
        close(fd);
    }
    return DBPOOL_OK;
}

/* The server refused the session at one of its connection limits. */
static bool connection_limit_errno(unsigned n) {
    return n == MY_ER_CON_COUNT || n == MY_ER_TOO_MANY_USER_CONNECTIONS || n == MY_ER_USER_LIMIT_REACHED;
}

static bool my_at_connection_limit(const dbpool_error *e) {
    return e && e->code == DBPOOL_ECONNECT && e->native_code > 0 &&
           connection_limit_errno((unsigned)e->native_code);
}

static int connect_error_code(unsigned n, const char *msg) {
    /* An authentication plugin the server asks for and the client cannot
     * load: Connector/C reports it as CR_AUTH_PLUGIN_CANNOT_LOAD or, after
     * an authentication switch, as a lost connection (2013) with the
     * plugin's message, its own and in English. No retry loads it. */
    if (n == MY_CR_AUTH_PLUGIN_CANNOT_LOAD ||
        (strncmp(msg, "Plugin ", 7) == 0 && strstr(msg, " could not be loaded") != NULL))
        return DBPOOL_EAUTH;
    switch (n) {
    case MY_ER_ACCESS_DENIED:
    case MY_ER_DBACCESS_DENIED:
    case MY_ER_ACCESS_DENIED_NO_PASSWORD:
    case MY_ER_HOST_NOT_PRIVILEGED: /* no account for the client's host: as pg_hba.conf */
    case MY_ER_MUST_CHANGE_PASSWORD_LOGIN:
    case MY_ER_ACCOUNT_HAS_BEEN_LOCKED:
        return DBPOOL_EAUTH;
    case MY_ER_BAD_DB:
        return DBPOOL_ENOTFOUND;
    default:
        break;
    }
    /* The server's certificate failed verification: it did not prove who
     * it is, and as with a refused login no retry changes that. */
    switch (tls_failure_of(n, msg)) {
    case TLS_NO_TLS: /* the session the URL asks for cannot be had from this server */
    case TLS_NOT_TRUSTED:
    case TLS_OTHER_HOST:
        return DBPOOL_EAUTH;
    case TLS_BAD_CA_FILE:
    case TLS_ENCRYPTED_KEY:
    case TLS_BAD_CLIENT_FILES:
        return DBPOOL_EINVAL;
    case TLS_OTHER:
        break;
    }
    return DBPOOL_ECONNECT;
}

/* What to change, after Connector/C's words, for a failed TLS check. */
#define NO_TLS_HINT                                                                                          \
    " (the server takes no TLS connections, or something between takes its offer away: enable TLS on the "   \
    "server, or lower ssl-mode where plaintext is acceptable)"

static const char *tls_hint(const my_cfg *c, unsigned n, const char *msg) {
    switch (tls_failure_of(n, msg)) {
    case TLS_NO_TLS:
        return NO_TLS_HINT;
    case TLS_NOT_TRUSTED:
        return c->ssl_ca ? " (the server's certificate is not signed by the CA in ssl-ca: name the CA that "
                           "signed it; with ssl-ca, every ssl-mode checks the certificate)"
                         : " (no ssl-ca given: name the CA that signed the server's certificate with ssl-ca, "
                           "or use ssl-mode=REQUIRED to encrypt without checking)";
    case TLS_OTHER_HOST:
        return " (the server's certificate does not name this host: connect by a name or address it lists; "
               "ssl-mode=VERIFY_CA checks the host name too)";
    case TLS_BAD_CA_FILE:
        return " (the ssl-ca file holds no PEM certificate)";
    case TLS_ENCRYPTED_KEY:
        return c->ssl_key
                   ? " (the ssl-key file is encrypted: dbpool takes an unencrypted key; openssl pkey writes "
                     "one)"
                   : " (the key in the ssl-cert file is encrypted: dbpool takes an unencrypted key; openssl "
                     "pkey writes one)";
    case TLS_BAD_CLIENT_FILES:
        return " (check ssl-cert and ssl-key: a PEM certificate and its own unencrypted PEM key, or one file "
               "holding both as ssl-cert; and ssl-ca: PEM certificates)";
    case TLS_OTHER:
        break;
    }
    return "";
}

static void describe_target(const my_cfg *c, const my_host *h, char *buf, size_t len) {
    if (c->socket)
        snprintf(buf, len, "unix socket %s", c->socket);
    else if (!h->host)
        snprintf(buf, len, "localhost (default socket)");
    else if (strchr(h->host, ':'))
        snprintf(buf, len, "[%s]:%u", h->host, h->port);
    else
        snprintf(buf, len, "%s:%u", h->host, h->port);
}

/*
 * Connector/C calls this with every status and session-tracking report the
 * server sends, whichever call read it: statements run on the native handle
 * are seen too. A session change (SET, a user variable, a temporary table,
 * USE, ...) needs the reset at release, and kept prepared statements must
 * be prepared again (they keep the database and sql_mode they were
 * prepared under).
 */
static void status_report(void *data, enum enum_mariadb_status_info type, ...) {
    my_conn *mc = data;
    va_list ap;
    va_start(ap, type);
    bool changed = true;
    if (type == STATUS_TYPE) {
        changed = (va_arg(ap, unsigned int) & SERVER_SESSION_STATE_CHANGED) != 0;
    } else if (type == SESSION_TRACK_TYPE) {
        int track = va_arg(ap, int);
        if (track == SESSION_TRACK_SCHEMA) {
            mc->schema_changed = true;
        } else if (track == SESSION_TRACK_SYSTEM_VARIABLES) {
            /* session_track_schema set (off, or on again): a USE from
             * here on may go unreported, so the reset makes the URL's
             * database current again whatever it hears. */
            static const char name[] = "session_track_schema";
            const MARIADB_CONST_STRING *key = va_arg(ap, const MARIADB_CONST_STRING *);
            if (key && key->str && key->length == sizeof name - 1 &&
                strncasecmp(key->str, name, sizeof name - 1) == 0)
                mc->schema_changed = true;
        }
    }
    va_end(ap);
    if (changed) {
        mc->dirty = true;
        mc->stmts_stale = true;
    }
}

#define NO_KEY_PASSPHRASE "dbpool: ssl-key must not be encrypted"

/*
 * ssl-mode=REQUIRED: no login before TLS.
 *
 * Connector/C 3.3 refuses a server that does not offer TLS only when it
 * checks the certificate (VERIFY_*): with MYSQL_OPT_SSL_ENFORCE alone it
 * sends its login unencrypted to a server whose greeting lacks CLIENT_SSL
 * (or through a man in the middle that cleared it) -- the user name, the
 * password's scramble (cracked offline), and the password itself to a
 * peer that asks for mysql_clear_password -- and only then could dbpool
 * see the plaintext session. Nothing in its API runs between reading the
 * greeting and sending the login, except the authentication plugin that
 * computes it. So a REQUIRED connect starts with this plugin: it refuses
 * a greeting without CLIENT_SSL before a byte is sent, and otherwise lets
 * the login go, which Connector/C sends only after the TLS handshake, with
 * no authentication data. The server, seeing a plugin it does not use,
 * answers over TLS with the account's own plugin (an authentication
 * switch, one round trip more), which then runs as on any connect.
 *
 * A greeting without CLIENT_PLUGIN_AUTH (no server since MySQL 5.5, but a
 * fake server or a man in the middle can send one) makes Connector/C
 * compute the login with its built-in plugin, never asking this one. For
 * that case the connect also carries a server certificate fingerprint that
 * no certificate has (TLS_GATE_FP): Connector/C then refuses a server
 * without TLS before the login, as it does for VERIFY_*, and fails the
 * certificate check of one with TLS. The gate, once it has seen
 * CLIENT_SSL, takes the fingerprint away again.
 */
#define TLS_GATE_PLUGIN "dbpool_tls_gate"
#define TLS_GATE_FP "0000000000000000000000000000000000000000"

static int tls_gate_auth(MYSQL_PLUGIN_VIO *vio, MYSQL *m) {
    tl_bound.gate_ran = true;
    if (!m->options.use_ssl || !(m->server_capabilities & CLIENT_SSL)) {
        tl_bound.gate_refused = true;
        return CR_ERROR;
    }
    /* TLS comes first: no fingerprint to check it against. */
    if (mysql_optionsv(m, MARIADB_OPT_TLS_PEER_FP, (void *)NULL))
        return CR_ERROR;
    return vio->write_packet(vio, NULL, 0) ? CR_ERROR : CR_OK;
}

/* mysql/client_plugin.h's st_mysql_client_plugin_AUTHENTICATION (that
 * header needs Connector/C's private headers). */
#ifndef MYSQL_CLIENT_AUTHENTICATION_PLUGIN
#define MYSQL_CLIENT_AUTHENTICATION_PLUGIN 2
#endif
#ifndef MYSQL_CLIENT_AUTHENTICATION_PLUGIN_INTERFACE_VERSION
#define MYSQL_CLIENT_AUTHENTICATION_PLUGIN_INTERFACE_VERSION 0x0100
#endif
typedef struct gate_plugin {
    MYSQL_CLIENT_PLUGIN_HEADER
    int (*authenticate_user)(MYSQL_PLUGIN_VIO *vio, MYSQL *mysql);
} gate_plugin;

static gate_plugin tls_gate_plugin = {
    MYSQL_CLIENT_AUTHENTICATION_PLUGIN,
    MYSQL_CLIENT_AUTHENTICATION_PLUGIN_INTERFACE_VERSION,
    TLS_GATE_PLUGIN,
    "dbpool",
    "refuses to log in before TLS (ssl-mode=REQUIRED)",
    {1, 0, 0},
    "LGPL",
    NULL,
    NULL,
    NULL,
    NULL,
    tls_gate_auth,
};

static pthread_mutex_t tls_gate_lock = PTHREAD_MUTEX_INITIALIZER;
static bool tls_gate_registered;

/* Register the gate with Connector/C once (m: any initialised handle). */
static int tls_gate_register(MYSQL *m, dbpool_error *e) {
    pthread_mutex_lock(&tls_gate_lock);
    if (!tls_gate_registered &&
        (mysql_client_register_plugin(m, (struct st_mysql_client_plugin *)&tls_gate_plugin) ||
         mysql_client_find_plugin(m, TLS_GATE_PLUGIN, MYSQL_CLIENT_AUTHENTICATION_PLUGIN) ==
             (struct st_mysql_client_plugin *)&tls_gate_plugin))
        tls_gate_registered = true;
    bool ok = tls_gate_registered;
    pthread_mutex_unlock(&tls_gate_lock);
    return ok ? DBPOOL_OK
              : dbpool__seterr(e, DBPOOL_ENOMEM,
                               "mysql: could not register the TLS check of ssl-mode=REQUIRED (%s)",
                               mysql_error(m));
}

static int set_options(MYSQL *m, const my_cfg *c, int64_t deadline_ns, dbpool_error *e) {
    my_bool off = 0, on = 1;
    unsigned ct = c->connect_timeout ? c->connect_timeout : seconds_left(deadline_ns);
    unsigned proto = c->socket ? MYSQL_PROTOCOL_SOCKET : MYSQL_PROTOCOL_TCP;
    int bad = 0;
    /* The deadline, through the hook (see bounded_io_wait). */
    bad |= mysql_optionsv(m, MARIADB_OPT_IO_WAIT, bounded_io_wait);
    bad |= mysql_optionsv(m, MARIADB_OPT_STATUS_CALLBACK, status_report, conn_of(m));
    bad |= mysql_optionsv(m, MYSQL_OPT_RECONNECT, &off);
    /* Connector/C's own timer: it bounds each read of a TLS handshake. */
    bad |= mysql_optionsv(m, MYSQL_OPT_CONNECT_TIMEOUT, &ct);
    if (c->read_timeout)
        bad |= mysql_optionsv(m, MYSQL_OPT_READ_TIMEOUT, &c->read_timeout);
    if (c->write_timeout)
        bad |= mysql_optionsv(m, MYSQL_OPT_WRITE_TIMEOUT, &c->write_timeout);
    bad |= mysql_optionsv(m, MYSQL_SET_CHARSET_NAME, c->charset);
    /* init_command is run by my_connect, not by Connector/C (which would
     * make its SQL error a failed connect, retried as a network error). */
    /* A host of "localhost" would otherwise silently mean the default socket. */
    if (c->socket || c->hosts[0].host)
        bad |= mysql_optionsv(m, MYSQL_OPT_PROTOCOL, &proto);
    /* Never read a local file on the server's request. */
    bad |= mysql_optionsv(m, MYSQL_OPT_LOCAL_INFILE, &off);
    if (c->ssl != SSL_DISABLED) {
        bad |= mysql_ssl_set(m, c->ssl_key, c->ssl_cert, c->ssl_ca, NULL, NULL);
        my_bool verify = c->ssl >= SSL_VERIFY_CA ? 1 : 0;
        bad |= mysql_optionsv(m, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &verify);
        if (c->ssl >= SSL_REQUIRED)
            bad |= mysql_optionsv(m, MYSQL_OPT_SSL_ENFORCE, &on);
        if (c->ssl == SSL_REQUIRED) {
            int rc = tls_gate_register(m, e);
            if (rc)
                return rc;
            bad |= mysql_optionsv(m, MYSQL_DEFAULT_AUTH, TLS_GATE_PLUGIN);
            bad |= mysql_optionsv(m, MARIADB_OPT_TLS_PEER_FP, TLS_GATE_FP);
        }
        /* Without a passphrase, OpenSSL's default callback would ask for
         * an encrypted ssl-key's on the terminal or stderr and read it from
         * the terminal or stdin: a library blocking its host, past any
         * deadline. With one of dbpool's own, such a key fails to load at
         * once ("bad decrypt"); an unencrypted key never uses it. Without
         * ssl-key, Connector/C reads the key from ssl-cert. */
        if (c->ssl_key || c->ssl_cert)
            bad |= mysql_optionsv(m, MARIADB_OPT_TLS_PASSPHRASE, NO_KEY_PASSPHRASE);
    }
    if (bad)
        return dbpool__seterr(e, DBPOOL_EINVAL, "mysql: Connector/C rejected an option (%s)", mysql_error(m));
    return DBPOOL_OK;
}

/* ------------------------------------------------------------------------ */
/* Prepared statements kept per connection                                  */
/* ------------------------------------------------------------------------ */

/*
 * A parameterised statement goes through the binary protocol: prepare, then
 * execute, two round trips. The connection keeps its last 16 prepared
 * statements (least recently used out), so running one again costs one
 * round trip. Only a statement that ran cleanly is kept, and one that fails
 * later is dropped. A reset (COM_RESET_CONNECTION) closes them on the
 * server and Connector/C invalidates them: the cache is emptied then. Each
 * connection holds at most 16 of the server's max_prepared_stmt_count.
 *
 * Only statements without a result set (INSERT, UPDATE, DELETE, ...) are
 * kept. When a table changes, the server prepares its statements again by
 * itself, but Connector/C (3.3) fails the execution of one whose result set
 * gained or lost columns (CR_NEW_STMT_METADATA) after the server ran it:
 * running it again could repeat a side effect (INSERT ... RETURNING, a
 * function that writes), and failing it would fail a correct statement.
 */
#define MY_STMT_SLOTS 16
#define MY_STMT_MAX_SQL 4096 /* longer statements are not kept */

typedef struct my_stmt_slot {
    char *sql; /* NULL: empty */
    size_t len;
    MYSQL_STMT *st;
    uint64_t used; /* the cache's clock at the last use */
} my_stmt_slot;

struct my_stmt_cache {
    uint64_t clock;
    my_stmt_slot slot[MY_STMT_SLOTS];
};

static void stmt_slot_drop(my_stmt_slot *s) {
    if (s->st)
        mysql_stmt_close(s->st);
    free(s->sql);
    memset(s, 0, sizeof *s);
}

/* The kept statement for this SQL, or NULL. */
static my_stmt_slot *stmt_cache_find(my_conn *mc, const char *sql, size_t len) {
    if (!mc->stmts)
        return NULL;
    for (int i = 0; i < MY_STMT_SLOTS; i++) {
        my_stmt_slot *s = &mc->stmts->slot[i];
        if (s->sql && s->len == len && memcmp(s->sql, sql, len) == 0) {
            s->used = ++mc->stmts->clock;
            return s;
        }
    }
    return NULL;
}

/* Keep st for this SQL; false (st not kept) when there is no room for it. */
static bool stmt_cache_put(my_conn *mc, const char *sql, size_t len, MYSQL_STMT *st) {
    if (len > MY_STMT_MAX_SQL)
        return false;
    if (!mc->stmts && !(mc->stmts = calloc(1, sizeof *mc->stmts)))
        return false;
    my_stmt_slot *victim = &mc->stmts->slot[0];
    for (int i = 0; i < MY_STMT_SLOTS && victim->sql; i++) {
        my_stmt_slot *s = &mc->stmts->slot[i];
        if (!s->sql || s->used < victim->used)
            victim = s;
    }
    char *copy = malloc(len + 1);
    if (!copy)
        return false;
    memcpy(copy, sql, len);
    copy[len] = '\0';
    stmt_slot_drop(victim);
    *victim = (my_stmt_slot){.sql = copy, .len = len, .st = st, .used = ++mc->stmts->clock};
    return true;
}

/* Forget every kept statement. After mysql_close or a reset Connector/C has
 * invalidated them, and closing them only frees memory. */
static void stmt_cache_clear(my_conn *mc) {
    if (!mc->stmts)
        return;
    for (int i = 0; i < MY_STMT_SLOTS; i++)
        stmt_slot_drop(&mc->stmts->slot[i]);
    free(mc->stmts);
    mc->stmts = NULL;
}

/* Close a handle that connect made, connected or not, and its bookkeeping. */
static void close_conn(my_conn *mc) {
    mysql_close(&mc->mysql);
    stmt_cache_clear(mc);
    if (mc->canary)
        mysql_stmt_close(mc->canary); /* detached by mysql_close: frees it, no I/O */
    free(mc->db0);
    free(mc->user);
    free(mc->init_command);
    free(mc->database);
    free(mc->set_role);
    free(mc);
}

/* The default database where leases start (after connect, init_sql,
 * after_connect or a reset), as Connector/C knows it. */
static void note_db(my_conn *mc) {
    const char *db = mc->mysql.db;
    free(mc->db0);
    mc->db0 = db ? dbpool__strdup(db) : NULL;
    mc->db0_known = !db || mc->db0;
}

/* Another default database than where leases start: a USE the server
 * reported, or a mysql_select_db on the native handle, whose reply
 * Connector/C reads without calling the status callback. */
static bool db_moved(const my_conn *mc) {
    const char *db = mc->mysql.db;
    if (!mc->db0_known)
        return false;
    return (db == NULL) != (mc->db0 == NULL) || (db && strcmp(db, mc->db0) != 0);
}

/*
 * One attempt against one host, bounded by the deadline and by the URL's
 * connect_timeout. On success *out is the connected handle, with the hook
 * still installed and this thread's deadline set (my_connect ends both).
 */
static int connect_one(const my_cfg *c, const my_host *h, int64_t deadline_ns, my_conn **out,
                       dbpool_error *e) {
    *out = NULL;
    my_conn *mc = calloc(1, sizeof *mc);
    if (!mc)
        return dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory");
    MYSQL *m = mysql_init(&mc->mysql);
    if (!m) {
        free(mc);
        return dbpool__seterr(e, DBPOOL_ENOMEM, "mysql: out of memory in mysql_init");
    }
    int rc = set_options(m, c, deadline_ns, e);
    if (rc == DBPOOL_OK)
        rc = check_tls_files(c, e);
    if (rc) {
        close_conn(mc);
        return rc;
    }
    int64_t attempt_ns = deadline_ns;
    if (c->connect_timeout) {
        int64_t own = dbpool__deadline_after_ms((int64_t)c->connect_timeout * 1000);
        if (own < attempt_ns)
            attempt_ns = own;
    }
    /* Affected rows count matched rows, as on SQLite and PostgreSQL. */
    unsigned long flags = CLIENT_FOUND_ROWS;
    bound_set(attempt_ns);
    tl_bound.tls_connect = c->ssl != SSL_DISABLED;
    tl_bound.gate_ran = tl_bound.gate_refused = false;
    MYSQL *ret = mysql_real_connect(m, c->socket ? NULL : h->host, c->user, c->password, c->database,
                                    c->socket ? 0 : h->port, c->socket, flags);
    bool expired = tl_bound.expired;
    bool gate_ran = tl_bound.gate_ran, gate_refused = tl_bound.gate_refused;
    tl_bound.tls_connect = tl_bound.gate_ran = tl_bound.gate_refused = false;
    /* Blocking again, as Connector/C left it, while the handle still owns
     * that descriptor (after a failure it may be closed and reused). */
    if (tl_bound.connect_fd >= 0 && ret && (int)mysql_get_socket(m) == tl_bound.connect_fd)
        fcntl(tl_bound.connect_fd, F_SETFL, tl_bound.connect_flags);
    tl_bound.connect_fd = -1;
    char target[300];
    describe_target(c, h, target, sizeof target);
    if (!ret) {
        unsigned n = mysql_errno(m);
        if (dbpool__ms_left(deadline_ns) <= 0 || (expired && attempt_ns == deadline_ns)) {
            rc = dbpool__seterr(e, DBPOOL_ETIMEDOUT, "mysql: connecting to %s timed out (%s)", target,
                                mysql_error(m));
        } else if (c->ssl == SSL_REQUIRED &&
                   (gate_refused || (!gate_ran && n == MY_CR_SSL_CONNECTION_ERROR &&
                                     (!(m->server_capabilities & CLIENT_SSL) ||
                                      !(m->server_capabilities & CLIENT_PLUGIN_AUTH))))) {
            /* The gate, or TLS_GATE_FP, refused before the login. Not
             * retried, as a verify mode's refusal (TLS_NO_TLS). */
            rc = dbpool__seterr(e, DBPOOL_EAUTH,
                                "mysql: ssl-mode=REQUIRED but %s does not offer %s (or something on the way "
                                "took the offer away): nothing was sent, the login included. Enable TLS on "
                                "the server (ssl_cert, ssl_key), or connect without ssl-mode=REQUIRED where "
                                "plaintext is acceptable",
                                target,
                                !(m->server_capabilities & CLIENT_SSL)
                                    ? "TLS"
                                    : "pluggable authentication (CLIENT_PLUGIN_AUTH), which dbpool "
                                      "needs to make sure of TLS before logging in");
        } else if (expired) {
            rc = dbpool__seterr(e, DBPOOL_ECONNECT,
                                "mysql: connecting to %s failed: no answer within connect_timeout=%us (%s)",
                                target, c->connect_timeout, mysql_error(m));
        } else {
            /* Connector/C's words for nothing listening there ("Can't
             * connect to server on '127.0.0.1' (115)", the errno of its
             * non-blocking connect, not the refusal) say neither the port
             * nor what to check: say it, as libpq does (a TLS failure
             * keeps tls_hint's advice). */
            const char *hint = tls_hint(c, n, mysql_error(m));
            if (connection_limit_errno(n))
                hint = " (the server is at a connection limit: max_connections, max_user_connections or the "
                       "account's MAX_USER_CONNECTIONS; keep max_size, summed over every pool and client of "
                       "this server, below it, or raise the limit)";
            if (!*hint && (n == MY_CR_CONN_HOST_ERROR || n == MY_CR_CONNECTION_ERROR))
                hint = c->socket || !h->host
                           ? "; is the server running, and is that the path of its socket?"
                           : "; is a MySQL/MariaDB server running on that host and port, accepting TCP "
                             "connections?";
            rc = dbpool__seterr(e, connect_error_code(n, mysql_error(m)),
                                "mysql: connecting to %s failed: %s%s", target, mysql_error(m), hint);
        }
        fill_native(e, n, mysql_sqlstate(m));
        close_conn(mc);
        return rc;
    }
    if (c->ssl >= SSL_REQUIRED && !mysql_get_ssl_cipher(m)) {
        /* Belt and braces (tls_gate_auth refuses before the login):
         * never let REQUIRED end in a plaintext session. Not retried: the
         * server (or something between) offered no TLS. */
        close_conn(mc);
        return dbpool__seterr(e, DBPOOL_EAUTH, "mysql: ssl-mode=%s but the session to %s is not encrypted%s",
                              c->ssl == SSL_REQUIRED ? "REQUIRED" : "VERIFY_*", target, NO_TLS_HINT);
    }
    /* Connector/C creates its socket without SOCK_CLOEXEC: a program that
     * runs another with fork and exec would hand it the live session (the
     * child could write on it, and holds the server's session open for as
     * long as it runs). libpq and SQLite set close-on-exec themselves. */
    int fd = (int)mysql_get_socket(m);
    int fdfl = fd >= 0 ? fcntl(fd, F_GETFD) : -1;
    if (fdfl >= 0 && !(fdfl & FD_CLOEXEC))
        fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC);
    *out = mc;
    return DBPOOL_OK;
}

/*
 * The session settings a reset wipes, rebuilt from numbers and a checked
 * name: with names, for after a reset; without, right after connect (the
 * charset was given to Connector/C as an option).
 */
static void session_sql(my_conn *mc, bool names, char *buf, size_t len) {
    /* The server does not report a change of session_track_state_change
     * itself: turned off on the native handle, it would hide every later
     * change from the release (and from every later lease's), and nothing
     * would ever reset it. The tracking settings are tracked as system
     * variables too (added to the server's list, which may name others the
     * application reads; '*' already has them and takes no others), so
     * turning one off is reported; session_track_schema's report also says
     * that a USE may go unreported from then on (status_report). */
    int n = snprintf(
        buf, len,
        "SET %s%s%ssession_track_state_change=ON, session_track_system_variables=IF(FIND_IN_SET('*', "
        "@@session.session_track_system_variables), '*', CONCAT_WS(',', "
        "NULLIF(@@session.session_track_system_variables, ''), 'session_track_state_change', "
        "'session_track_system_variables', 'session_track_schema'))",
        names ? "NAMES " : "", names ? mc->charset : "", names ? ", " : "");
    int64_t ms = mc->statement_timeout_ms;
    if (ms > 0 && n > 0 && (size_t)n < len) {
        if (mariadb_connection(&mc->mysql))
            snprintf(buf + n, len - (size_t)n, ", SESSION max_statement_time=%lld.%03lld",
                     (long long)(ms / 1000), (long long)(ms % 1000));
        else
            snprintf(buf + n, len - (size_t)n, ", SESSION max_execution_time=%lld", (long long)ms);
    }
}

/*
 * MariaDB's reset (COM_RESET_CONNECTION) keeps the current role: a caller's
 * SET ROLE would be the next caller's, with its privileges. The role the
 * connection started with (the user's default role, or NONE) is recorded
 * after connect and set again after each reset. Called inside a bounded
 * call. MySQL's roles differ (SET ROLE DEFAULT, 5.7 has none): nothing
 * there.
 */
static int record_role(my_conn *mc, dbpool_error *e) {
    MYSQL *m = &mc->mysql;
    if (!mariadb_connection(m))
        return DBPOOL_OK;
    static const char sql[] = "SELECT CURRENT_ROLE()";
    MYSQL_RES *res = NULL;
    if (mysql_real_query(m, sql, (unsigned long)strlen(sql)) != 0 || !(res = mysql_store_result(m))) {
        if (tl_bound.expired) {
            mark_broken(m);
            return dbpool__seterr(e, DBPOOL_ETIMEDOUT, "mysql: reading the session's role timed out");
        }
        int rc = conn_error(m, e);
        dbpool__prefix_err(e, "reading the session's role");
        return rc;
    }
    MYSQL_ROW row = mysql_fetch_row(res);
    unsigned long *len = row ? mysql_fetch_lengths(res) : NULL;
    const char *name = row && row[0] ? row[0] : NULL;
    size_t n = name ? (size_t)len[0] : 0;
    /* SET ROLE `name` (a backquote in it doubled), or SET ROLE NONE. */
    static const char prefix[] = "SET ROLE ";
    size_t plen = sizeof prefix - 1;
    char *stmt = malloc(plen + (name ? 2 * n + 3 : 5));
    if (stmt) {
        size_t o = plen;
        memcpy(stmt, prefix, plen);
        if (!name) {
            memcpy(stmt + o, "NONE", 4);
            o += 4;
        } else {
            stmt[o++] = '`';
            for (size_t i = 0; i < n; i++) {
                if (name[i] == '`')
                    stmt[o++] = '`';
                stmt[o++] = name[i];
            }
            stmt[o++] = '`';
        }
        stmt[o] = '\0';
    }
    mysql_free_result(res);
    if (!stmt)
        return dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory");
    free(mc->set_role);
    mc->set_role = stmt;
    return DBPOOL_OK;
}

static void my_disconnect(void *native) {
    if (native)
        close_conn(conn_of(native));
}

static int my_connect(const void *cfg, const dbpool_connect_settings *s, int64_t deadline_ns, void **native,
                      dbpool_error *e) {
    const my_cfg *c = cfg;
    *native = NULL;
    int rc = ensure_library(e);
    if (rc)
        return rc;
    my_conn *mc = NULL;
    size_t tries = c->socket ? 1 : c->nhosts, tried = 0;
    for (size_t i = 0; i < tries; i++) {
        tried++;
        rc = connect_one(c, &c->hosts[i], deadline_ns, &mc, e);
        /* A refusal no other host changes (a login, the URL's TLS files)
         * ends the list, as does the deadline. */
        if (rc == DBPOOL_OK || rc == DBPOOL_EAUTH || rc == DBPOOL_ENOTFOUND || rc == DBPOOL_ENOMEM ||
            rc == DBPOOL_EINVAL || dbpool__ms_left(deadline_ns) <= 0)
            break;
    }
    if (rc) {
        tl_bound.deadline_ns = 0;
        if (tried == tries && tries > 1)
            dbpool__prefix_err(e, "all %zu hosts failed; the last", tries);
        else if (tried > 1)
            dbpool__prefix_err(e, "%zu of %zu hosts tried; the last", tried, tries);
        return rc;
    }
    MYSQL *m = &mc->mysql;
    dbpool__strlcpy(mc->charset, c->charset, sizeof mc->charset);
    mc->statement_timeout_ms = s ? s->statement_timeout_ms : 0;
    if ((c->init_command && !(mc->init_command = dbpool__strdup(c->init_command))) ||
        (c->database && *c->database && !(mc->database = dbpool__strdup(c->database))) ||
        (m->user && !(mc->user = dbpool__strdup(m->user)))) {
        tl_bound.deadline_ns = 0;
        close_conn(mc);
        return dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory");
    }
    char first[512];
    session_sql(mc, false, first, sizeof first);
    /* Still inside connect_one's bound; now against the whole deadline. */
    my_guard g = {.fd = -1, .flags = 0};
    bound_set(deadline_ns);
    guard_nonblock(m, &g);
    /* init_command first, as Connector/C would run it: a statement of the
     * URL's, so its failure is the statement's (DBPOOL_EQUERY, not
     * retried, as init_sql's), unless it lost the link. */
    rc = mc->init_command ? run_sql(m, mc->init_command, "init_command", e) : DBPOOL_OK;
    if (rc == DBPOOL_OK)
        rc = run_sql(m, first, "setting up the session", e);
    if (rc == DBPOOL_OK)
        rc = record_role(mc, e);
    bound_end(m, &g);
    if (rc == DBPOOL_EQUERY && mysql_errno(m) == MY_ER_MUST_CHANGE_PASSWORD) {
        /* An expired password: the server let the session in, but it runs
         * nothing until the password is changed. */
        rc = DBPOOL_EAUTH;
        if (e)
            e->code = rc;
    }
    if (rc) {
        close_conn(mc);
        return rc;
    }
    /* The handshake's own reports (the default database) are no change. */
    mc->dirty = mc->stmts_stale = mc->schema_changed = false;
    note_db(mc);
    *native = m;
    return DBPOOL_OK;
}

/* The session was reset (or the account changed) since the canary was
 * made: a mysql_reset_connection on the native handle put every session
 * variable back to the server's defaults, session_track_state_change
 * among them, so the server reports nothing more, and init_sql's settings
 * are gone too. */
static bool session_replaced(my_conn *mc) { return mc->canary && mc->canary->mysql != &mc->mysql; }

/* After the pool's own reset, which detaches the canary too: the next
 * lease that takes the handle makes a new one. */
static void drop_canary(my_conn *mc) {
    if (mc->canary)
        mysql_stmt_close(mc->canary); /* detached: frees it, no I/O */
    mc->canary = NULL;
}

/* The handle a caller gets (dbpool_conn_native, after_connect): from now
 * on a reset on it must be seen at release. */
static void *my_user_handle(void *native) {
    my_conn *mc = conn_of(native);
    if (!mc->canary)
        mc->canary = mysql_stmt_init(&mc->mysql); /* client-side only */
    return native;
}

/* ------------------------------------------------------------------------ */
/* Ping, reset                                                              */
/* ------------------------------------------------------------------------ */

/* Run one command (ping, reset) to its end or the deadline. A deadline or
 * a failure leaves the connection broken. */
static int run_bounded(MYSQL *m, int(STDCALL *cmd)(MYSQL *), int64_t deadline_ns, const char *what,
                       dbpool_error *e) {
    if (conn_of(m)->broken)
        return dbpool__seterr(e, DBPOOL_EBROKEN, "mysql: connection is broken");
    my_guard g;
    bound_begin(m, deadline_ns, &g);
    int err = cmd(m);
    bool expired = bound_end(m, &g);
    if (expired) {
        mark_broken(m);
        dbpool__seterr(e, DBPOOL_ETIMEDOUT, "mysql: %s got no answer before the deadline", what);
        fill_native(e, MY_CR_SERVER_LOST, "HY000");
        return DBPOOL_ETIMEDOUT;
    }
    if (err) {
        mark_broken(m);
        int rc = conn_error(m, e);
        dbpool__prefix_err(e, "%s", what);
        return rc;
    }
    return DBPOOL_OK;
}

static int my_ping(void *native, int64_t deadline_ns, dbpool_error *e) {
    int rc = run_bounded(native, mysql_ping, deadline_ns, "ping", e);
    if (rc != DBPOOL_OK && rc != DBPOOL_ETIMEDOUT) {
        /* A failed ping means the link is gone, whatever the server said. */
        if (e)
            e->code = DBPOOL_EBROKEN;
        rc = DBPOOL_EBROKEN;
    }
    return rc;
}

/* Still the account the connection was opened as? mysql_change_user on the
 * native handle makes the session another account's, with its privileges,
 * and no reset (COM_RESET_CONNECTION) changes it back. */
static bool same_user(const my_conn *mc) {
    const char *now = mc->mysql.user;
    if (!now || !mc->user)
        return now == mc->user;
    return strcmp(now, mc->user) == 0;
}

/*
 * Local only. The rule: 1 when the server's last status said a transaction
 * is open, or when it reported a session state change (SET, user variables,
 * temporary tables, USE, ...) since the last reset — session_track_state_change
 * is switched on for every connection so that the server tells us. Otherwise
 * 0, which saves the reset's round trip on the common path. -1 once the link
 * is known to be lost. After an XA PREPARE or a mysql_change_user, 1: the
 * reset then refuses and the connection is closed (reason reset_failed,
 * logged).
 */
static int my_needs_reset(void *native) {
    MYSQL *m = native;
    my_conn *mc = conn_of(m);
    if (mc->broken || broken_errno(mysql_errno(m)))
        return -1;
    /* A result left unread on the native handle (mysql_use_result, a CALL's
     * further results): the next command would be out of sync. */
    if (m->status != MYSQL_STATUS_READY || mysql_more_results(m))
        return -1;
    /* The last command failed: its error reply carried no status, and a
     * procedure may have opened a transaction or changed the session
     * before it failed. Statements through dbpool mark this themselves
     * (dirty); this catches them on the native handle. */
    if (mysql_errno(m) != 0)
        return 1;
    unsigned status = 0;
    if (mariadb_get_infov(m, MARIADB_CONNECTION_SERVER_STATUS, &status) != 0)
        return 1;
    if ((status & SERVER_STATUS_IN_TRANS) || mc->xa_prepared || !same_user(mc))
        return 1;
    if (db_moved(mc))
        mc->dirty = mc->schema_changed = mc->stmts_stale = true;
    return mc->dirty || session_replaced(mc) ? 1 : 0;
}

static int my_reset(void *native, int64_t deadline_ns, bool *session_cleared, dbpool_error *e) {
    MYSQL *m = native;
    my_conn *mc = conn_of(m);
    *session_cleared = false;
    /* MariaDB's reset would leave a session with a prepared XA transaction
     * unable to use InnoDB, and the transaction orphaned with its locks.
     * Closing the connection detaches it cleanly, for XA COMMIT or XA
     * ROLLBACK from any session (XA RECOVER lists it). */
    if (mc->xa_prepared)
        return dbpool__seterr(e, DBPOOL_EBROKEN,
                              "mysql: an XA PREPARE ran on this connection, which a reset would leave "
                              "unusable; the prepared transaction stays for XA COMMIT or XA ROLLBACK");
    if (!same_user(mc))
        return dbpool__seterr(e, DBPOOL_EBROKEN,
                              "mysql: the session was changed to another account (mysql_change_user on "
                              "the native handle), which no reset undoes");
    int rc = run_bounded(m, mysql_reset_connection, deadline_ns, "reset", e);
    if (rc)
        return rc;
    stmt_cache_clear(mc); /* closed on the server by the reset */
    drop_canary(mc);
    /* The reset put session variables back to the server's defaults but
     * kept the default database and (MariaDB) the current role; the same
     * deadline bounds the statements that restore them, in the order of a
     * new connection: the database, the role, the charset (a new
     * connection's comes with the handshake, so an init_command's SET NAMES
     * wins over it: SET NAMES goes first, on its own, when there is an
     * init_command), init_command, then the pool's settings. */
    char names[64], restore[512];
    snprintf(names, sizeof names, "SET NAMES %s", mc->charset);
    session_sql(mc, !mc->init_command, restore, sizeof restore);
    my_guard g;
    bound_begin(m, deadline_ns, &g);
    if (mc->schema_changed && mc->database && mysql_select_db(m, mc->database) != 0) {
        rc = conn_error(m, e);
        dbpool__prefix_err(e, "making the URL's database current again after reset");
    }
    if (rc == DBPOOL_OK && mc->set_role)
        rc = run_sql(m, mc->set_role, "restoring the role after reset", e);
    if (rc == DBPOOL_OK && mc->init_command)
        rc = run_sql(m, names, "restoring the charset after reset", e);
    if (rc == DBPOOL_OK && mc->init_command)
        rc = run_sql(m, mc->init_command, "init_command after reset", e);
    if (rc == DBPOOL_OK)
        rc = run_sql(m, restore, "restoring session settings after reset", e);
    bound_end(m, &g);
    if (rc) {
        mark_broken(m);
        return rc;
    }
    mc->dirty = false;
    mc->stmts_stale = false;
    mc->schema_changed = false;
    note_db(mc);
    *session_cleared = true; /* mysql_reset_connection: init_sql again */
    return DBPOOL_OK;
}

/* The pool's init_sql has just run (after connect or a reset): what it set
 * is the session every lease starts from. Left dirty, the next release
 * would reset and rerun init_sql, which would mark it dirty again: every
 * release a reset. A transaction init_sql left open is still seen by
 * needs_reset (the server's status, not this flag). */
static int my_session_baseline(void *native, dbpool_error *e) {
    (void)e;
    my_conn *mc = conn_of(native);
    mc->dirty = false;
    /* A USE in init_sql is where leases start: the reset keeps it (it
     * keeps the default database), so the URL's must not replace it. */
    mc->schema_changed = false;
    note_db(mc);
    return DBPOOL_OK;
}

/* ------------------------------------------------------------------------ */
/* Statements                                                               */
/* ------------------------------------------------------------------------ */

static void note_status(MYSQL *m) {
    my_conn *mc = conn_of(m);
    unsigned status = 0;
    if (mariadb_get_infov(m, MARIADB_CONNECTION_SERVER_STATUS, &status) != 0 ||
        (status & SERVER_SESSION_STATE_CHANGED)) {
        mc->dirty = true;
        /* A prepared statement keeps the default database and sql_mode it
         * was prepared under: after USE otherdb a kept INSERT would still
         * write to the old database. */
        mc->stmts_stale = true;
    }
}

/* Before a statement runs: what the server will not report (table and
 * named locks, user variables) still needs the reset at release. */
static void note_statement(my_conn *mc, const char *sql) {
    if (!mc->dirty && dbpool__mysql_untracked_session_change(sql))
        mc->dirty = true;
    if (!mc->xa_prepared && dbpool__mysql_prepares_xa(sql))
        mc->xa_prepared = true;
}

/* Drain further result sets (CALL returns several). mysql_more_results
 * only reads the status flags: the common single result costs no more than
 * that (mysql_next_result would also clear the error state first). */
static int drain_results(MYSQL *m, dbpool_error *e) {
    while (mysql_more_results(m)) {
        int r = mysql_next_result(m);
        if (r < 0)
            return DBPOOL_OK;
        if (r > 0)
            return conn_error(m, e);
        MYSQL_RES *res = mysql_store_result(m);
        if (res)
            mysql_free_result(res);
        else if (mysql_field_count(m) > 0)
            return conn_error(m, e);
    }
    return DBPOOL_OK;
}

/*
 * A text-protocol result is the MYSQL_RES itself. mysql_store_result has
 * read every row into memory the result owns (each value NUL-terminated,
 * SQL NULL a NULL pointer), so the result needs nothing more of the
 * connection: no copy, and a large result is held once, not twice.
 */
typedef struct my_text_result {
    struct dbpool_result base; /* first: this is a dbpool_result */
    MYSQL_RES *res;
    MYSQL_FIELD *fields;
    MYSQL_ROW row; /* the current row; NULL before the first and after the last */
    unsigned long *lengths;
    unsigned ncols;
} my_text_result;

static my_text_result *text_result(const dbpool_result *r) { return (my_text_result *)(void *)r; }

static const char *tr_cell(const dbpool_result *r, int col) {
    const my_text_result *t = text_result(r);
    return t->row && col >= 0 && (unsigned)col < t->ncols ? t->row[col] : NULL;
}

static int tr_next(dbpool_result *r, dbpool_error *e) {
    (void)e;
    my_text_result *t = text_result(r);
    t->row = mysql_fetch_row(t->res); /* from memory: it cannot fail */
    t->lengths = t->row ? mysql_fetch_lengths(t->res) : NULL;
    return t->row != NULL;
}
static int tr_columns(const dbpool_result *r) { return (int)text_result(r)->ncols; }
static const char *tr_column_name(const dbpool_result *r, int col) {
    const my_text_result *t = text_result(r);
    return col >= 0 && (unsigned)col < t->ncols ? t->fields[col].name : NULL;
}
static bool tr_is_null(const dbpool_result *r, int col) { return tr_cell(r, col) == NULL; }
static const char *tr_text(const dbpool_result *r, int col, size_t *len) {
    const char *v = tr_cell(r, col);
    if (len)
        *len = v ? (size_t)text_result(r)->lengths[col] : 0;
    return v;
}
/* What the numeric getters read in a column's cells: a FLOAT, DOUBLE or
 * DECIMAL's text may hold an exponent; a BIT column's are raw bytes. */
static dbpool_cell_kind cell_kind(enum enum_field_types t) {
    if (t == MYSQL_TYPE_DOUBLE || t == MYSQL_TYPE_FLOAT || t == MYSQL_TYPE_DECIMAL ||
        t == MYSQL_TYPE_NEWDECIMAL)
        return DBPOOL_CELL_REAL;
    return t == MYSQL_TYPE_BIT ? DBPOOL_CELL_BITS : DBPOOL_CELL_TEXT;
}
static int64_t tr_int64(const dbpool_result *r, int col) {
    const char *v = tr_cell(r, col);
    if (!v)
        return 0;
    const my_text_result *t = text_result(r);
    switch (cell_kind(t->fields[col].type)) {
    case DBPOOL_CELL_REAL:
        return dbpool__int64_of_real_text(v);
    case DBPOOL_CELL_BITS:
        return dbpool__int64_of_bits(v, t->lengths[col]);
    default:
        return strtoll(v, NULL, 10);
    }
}
static double tr_double(const dbpool_result *r, int col) {
    const char *v = tr_cell(r, col);
    if (!v)
        return 0.0;
    const my_text_result *t = text_result(r);
    if (cell_kind(t->fields[col].type) == DBPOOL_CELL_BITS)
        return (double)dbpool__uint_of_bits(v, t->lengths[col]);
    return dbpool__strtod_c(v, NULL);
}
static void tr_free(dbpool_result *r) {
    my_text_result *t = text_result(r);
    mysql_free_result(t->res);
    free(t);
}

static const dbpool_result_ops text_result_ops = {
    .next = tr_next,
    .columns = tr_columns,
    .column_name = tr_column_name,
    .is_null = tr_is_null,
    .int64 = tr_int64,
    .dbl = tr_double,
    .text = tr_text,
    .free = tr_free,
};

/* Takes res: freed with the result, or here on failure. */
static int text_result_of(MYSQL_RES *res, dbpool_result **out, dbpool_error *e) {
    my_text_result *t = malloc(sizeof *t);
    if (!t) {
        mysql_free_result(res);
        return dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory");
    }
    t->base.ops = &text_result_ops;
    t->base.lease = NULL;
    t->res = res;
    t->ncols = mysql_num_fields(res);
    t->fields = mysql_fetch_fields(res);
    t->row = NULL;
    t->lengths = NULL;
    *out = &t->base;
    return DBPOOL_OK;
}

/* No parameters: the text protocol, one round trip. */
static int text_run_sent(MYSQL *m, const char *sql, int64_t *affected, dbpool_result **out, dbpool_error *e) {
    if (mysql_real_query(m, sql, (unsigned long)strlen(sql)) != 0)
        return conn_error(m, e);
    int rc = DBPOOL_OK;
    MYSQL_RES *res = mysql_store_result(m);
    if (!res && mysql_field_count(m) > 0)
        return conn_error(m, e);
    if (affected) /* DDL: 0, not the rows a CREATE ... SELECT or an ALTER copied */
        *affected = res || dbpool__mysql_is_ddl(sql) ? 0 : (int64_t)mysql_affected_rows(m);
    if (out && res) {
        rc = text_result_of(res, out, e); /* owns res from here */
        res = NULL;
    } else if (out) {
        dbpool_rowset *rs = dbpool__rowset_new(0);
        if (!rs)
            rc = dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory");
        else
            *out = dbpool__rowset_result(rs);
    }
    if (res)
        mysql_free_result(res);
    int drc = drain_results(m, e);
    if (rc == DBPOOL_OK && drc != DBPOOL_OK) {
        if (out && *out) {
            (*out)->ops->free(*out);
            *out = NULL;
        }
        rc = drc;
    }
    note_status(m);
    return rc;
}

static int text_run(MYSQL *m, const char *sql, int64_t *affected, dbpool_result **out, dbpool_error *e) {
    note_statement(conn_of(m), sql);
    int rc = text_run_sent(m, sql, affected, out, e);
    /* An error reply carries no status: whatever the statement did before
     * it failed (a procedure's BEGIN and INSERT, a SET), or before a later
     * result failed, goes unreported. */
    if (rc != DBPOOL_OK)
        conn_of(m)->dirty = true;
    return rc;
}

static int stmt_fail(MYSQL *m, MYSQL_STMT *st, dbpool_error *e) {
    return stmt_error(m, mysql_stmt_errno(st), mysql_stmt_sqlstate(st), mysql_stmt_error(st), e);
}

typedef struct col_buf {
    char *buf;
    unsigned long cap, len;
    my_bool is_null, error;
} col_buf;

static int stmt_fetch_rows(MYSQL *m, MYSQL_STMT *st, dbpool_result **out, dbpool_error *e) {
    unsigned nf = mysql_stmt_field_count(st);
    dbpool_rowset *rs = dbpool__rowset_new((int)nf);
    MYSQL_BIND *b = calloc(nf ? nf : 1, sizeof *b);
    col_buf *cb = calloc(nf ? nf : 1, sizeof *cb);
    MYSQL_RES *meta = mysql_stmt_result_metadata(st);
    int rc = DBPOOL_OK;
    if (!rs || !b || !cb || !meta) {
        rc = meta ? dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory") : stmt_fail(m, st, e);
        goto out;
    }
    MYSQL_FIELD *f = mysql_fetch_fields(meta);
    for (unsigned i = 0; i < nf; i++) {
        if (dbpool__rowset_set_column(rs, (int)i, f[i].name) ||
            (cell_kind(f[i].type) != DBPOOL_CELL_TEXT &&
             dbpool__rowset_set_kind(rs, (int)i, cell_kind(f[i].type)))) {
            rc = dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory");
            goto out;
        }
        cb[i].cap = 64;
        cb[i].buf = malloc(cb[i].cap);
        if (!cb[i].buf) {
            rc = dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory");
            goto out;
        }
        /* Every column as text: the rowset serves the typed getters. */
        b[i].buffer_type = MYSQL_TYPE_STRING;
        b[i].buffer = cb[i].buf;
        b[i].buffer_length = cb[i].cap;
        b[i].length = &cb[i].len;
        b[i].is_null = &cb[i].is_null;
        b[i].error = &cb[i].error;
    }
    /* Buffer the whole result so that the connection is free again at once. */
    if (mysql_stmt_store_result(st) != 0) {
        rc = stmt_fail(m, st, e);
        goto out;
    }
    bool rebind = true;
    for (;;) {
        if (rebind && mysql_stmt_bind_result(st, b) != 0) {
            rc = stmt_fail(m, st, e);
            goto out;
        }
        rebind = false;
        int r = mysql_stmt_fetch(st);
        if (r == MYSQL_NO_DATA)
            break;
        if (r == 1) {
            rc = stmt_fail(m, st, e);
            goto out;
        }
        if (dbpool__rowset_add_row(rs)) {
            rc = dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory");
            goto out;
        }
        for (unsigned i = 0; i < nf; i++) {
            if (cb[i].is_null) {
                continue;
            }
            if (cb[i].len > cb[i].cap) {
                /* Truncated: grow the buffer and fetch this cell again. */
                unsigned long cap = cb[i].len + 1;
                char *nb = realloc(cb[i].buf, cap);
                if (!nb) {
                    rc = dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory");
                    goto out;
                }
                cb[i].buf = nb;
                cb[i].cap = cap;
                b[i].buffer = nb;
                b[i].buffer_length = cap;
                if (mysql_stmt_fetch_column(st, &b[i], i, 0) != 0) {
                    rc = stmt_fail(m, st, e);
                    goto out;
                }
                rebind = true;
            }
            if (dbpool__rowset_set_cell(rs, (int)i, cb[i].buf, cb[i].len)) {
                rc = dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory");
                goto out;
            }
        }
    }
    *out = dbpool__rowset_result(rs);
    rs = NULL;
out:
    if (meta)
        mysql_free_result(meta);
    if (cb)
        for (unsigned i = 0; i < nf; i++)
            free(cb[i].buf);
    free(cb);
    free(b);
    dbpool__rowset_free(rs);
    return rc;
}

static int stmt_run(MYSQL *m, const char *sql, const dbpool_param *p, size_t n, int64_t *affected,
                    dbpool_result **out, dbpool_error *e) {
    my_conn *mc = conn_of(m);
    note_statement(mc, sql);
    if (mc->stmts_stale) {
        stmt_cache_clear(mc);
        mc->stmts_stale = false;
    }
    size_t sql_len = strlen(sql);
    my_stmt_slot *kept = stmt_cache_find(mc, sql, sql_len);
    MYSQL_STMT *st = kept ? kept->st : mysql_stmt_init(m);
    if (!st)
        return dbpool__seterr(e, DBPOOL_ENOMEM, "mysql: out of memory in mysql_stmt_init");
    int rc = DBPOOL_OK;
    bool several_results = false;
    bool executed = false; /* a failure before it is the caller's or the client's: keep the statement */
    MYSQL_BIND *b = calloc(n, sizeof *b);
    unsigned long *lens = calloc(n, sizeof *lens);
    long long *ints = calloc(n, sizeof *ints);
    double *dbls = calloc(n, sizeof *dbls);
    if (!b || !lens || !ints || !dbls) {
        rc = dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory");
        goto out;
    }
    if (!kept && mysql_stmt_prepare(st, sql, (unsigned long)sql_len) != 0) {
        /* The server's max_prepared_stmt_count reached: the kept
         * statements give theirs back, and the prepare runs again. */
        bool retry = mysql_stmt_errno(st) == MY_ER_MAX_PREPARED_STMT_COUNT && mc->stmts;
        if (retry)
            stmt_cache_clear(mc);
        if (!retry || mysql_stmt_prepare(st, sql, (unsigned long)sql_len) != 0) {
            rc = stmt_fail(m, st, e);
            goto out;
        }
    }
    unsigned long want = mysql_stmt_param_count(st);
    if (want != n) {
        rc = dbpool__seterr(e, DBPOOL_EINVAL,
                            "mysql: the statement has %lu placeholders but %zu parameters were given", want,
                            n);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        switch (p[i].type) {
        case DBPOOL_TYPE_INT64:
            ints[i] = (long long)p[i].v.i64;
            b[i].buffer_type = MYSQL_TYPE_LONGLONG;
            b[i].buffer = &ints[i];
            break;
        case DBPOOL_TYPE_DOUBLE:
            /* The server has neither: it would read one as 0 (SELECT ?,
             * a comparison) or refuse it only where a column stores it. */
            if (isnan(p[i].v.f64) || isinf(p[i].v.f64)) {
                rc = dbpool__seterr(e, DBPOOL_EINVAL,
                                    "mysql: parameter %zu is %s, which MySQL/MariaDB cannot hold (it would "
                                    "read as 0)",
                                    i + 1, isnan(p[i].v.f64) ? "NaN" : "an infinity");
                goto out;
            }
            dbls[i] = p[i].v.f64;
            b[i].buffer_type = MYSQL_TYPE_DOUBLE;
            b[i].buffer = &dbls[i];
            break;
        case DBPOOL_TYPE_TEXT:
        case DBPOOL_TYPE_BLOB: {
            /* Both are bytes with a length; a BLOB goes as binary. */
            bool text = p[i].type == DBPOOL_TYPE_TEXT;
            const void *ptr = text ? (const void *)p[i].v.text.ptr : p[i].v.blob.ptr;
            size_t len = text ? p[i].v.text.len : p[i].v.blob.len;
            if (!ptr) {
                b[i].buffer_type = MYSQL_TYPE_NULL;
                break;
            }
            if (len > ULONG_MAX) {
                rc = dbpool__seterr(e, DBPOOL_EINVAL, "mysql: parameter %zu is too long", i + 1);
                goto out;
            }
            lens[i] = (unsigned long)len;
            b[i].buffer_type = text ? MYSQL_TYPE_STRING : MYSQL_TYPE_BLOB;
            b[i].buffer = (void *)(uintptr_t)ptr;
            b[i].buffer_length = lens[i];
            b[i].length = &lens[i];
            break;
        }
        case DBPOOL_TYPE_NULL:
            b[i].buffer_type = MYSQL_TYPE_NULL;
            break;
        default:
            rc = dbpool__seterr(e, DBPOOL_EINVAL, "mysql: parameter %zu has an unknown type %d", i + 1,
                                (int)p[i].type);
            goto out;
        }
    }
    if (n > 0 && mysql_stmt_bind_param(st, b) != 0) {
        rc = stmt_fail(m, st, e);
        goto out;
    }
    executed = true;
    if (mysql_stmt_execute(st) != 0) {
        rc = stmt_fail(m, st, e);
        goto out;
    }
    if (affected)
        *affected = mysql_stmt_field_count(st) > 0 || dbpool__mysql_is_ddl(sql)
                        ? 0
                        : (int64_t)mysql_stmt_affected_rows(st);
    if (out) {
        if (mysql_stmt_field_count(st) > 0) {
            rc = stmt_fetch_rows(m, st, out, e);
        } else {
            dbpool_rowset *rs = dbpool__rowset_new(0);
            if (!rs)
                rc = dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory");
            else
                *out = dbpool__rowset_result(rs);
        }
    } else if (mysql_stmt_field_count(st) > 0 && mysql_stmt_store_result(st) != 0) {
        rc = stmt_fail(m, st, e);
    }
    /* Further result sets (a CALL) must be read before the link is free. */
    while (rc == DBPOOL_OK && mysql_stmt_more_results(st)) {
        several_results = true;
        int r = mysql_stmt_next_result(st);
        if (r > 0) {
            rc = stmt_fail(m, st, e);
        } else if (r == 0 && mysql_stmt_field_count(st) > 0 && mysql_stmt_store_result(st) != 0) {
            rc = stmt_fail(m, st, e);
        }
        if (r < 0)
            break;
    }
    if (rc && out && *out) {
        (*out)->ops->free(*out);
        *out = NULL;
    }
out:
    note_status(m);
    if (executed && rc != DBPOOL_OK)
        mc->dirty = true; /* an error reply carries no status (see text_run) */
    /* Kept for the next run when it ran cleanly and has no result set (a
     * CALL with several results is not kept either); dropped when it
     * failed running, in case the failure was the statement's. */
    mysql_stmt_free_result(st);
    if (kept && rc != DBPOOL_OK && executed)
        stmt_slot_drop(kept);
    else if (!kept && (rc != DBPOOL_OK || several_results || mysql_stmt_field_count(st) > 0 ||
                       !stmt_cache_put(mc, sql, sql_len, st)))
        mysql_stmt_close(st);
    free(b);
    free(lens);
    free(ints);
    free(dbls);
    return rc;
}

/* A caller's statement; with a deadline (the core's backstop, set when the
 * pool has statement_timeout_ms) inside a bounded call whose expiry leaves
 * the connection broken. out NULL: exec. A broken connection takes no
 * statement, with a deadline or without (the core sends none for one that
 * names the server's statement limit). */
static int run_statement(MYSQL *m, const char *sql, const dbpool_param *p, size_t n, int64_t *affected,
                         dbpool_result **out, int64_t deadline_ns, dbpool_error *e) {
    if (conn_of(m)->broken)
        return dbpool__seterr(
            e, DBPOOL_EBROKEN,
            "mysql: this connection was given up on (an earlier statement got no answer by its "
            "deadline, or the link was lost): release the lease (the connection is closed) "
            "and acquire another");
    if (!deadline_ns)
        return n == 0 ? text_run(m, sql, affected, out, e) : stmt_run(m, sql, p, n, affected, out, e);
    my_guard g;
    bound_begin(m, deadline_ns, &g);
    tl_bound.lib_timeouts = true;
    tl_bound.lib_timeouts_tls = mysql_get_ssl_cipher(m) != NULL;
    int rc = n == 0 ? text_run(m, sql, affected, out, e) : stmt_run(m, sql, p, n, affected, out, e);
    if (bound_end(m, &g)) {
        mark_broken(m);
        if (out && *out) {
            (*out)->ops->free(*out);
            *out = NULL;
        }
        if (affected)
            *affected = 0;
        dbpool__seterr(e, DBPOOL_ETIMEDOUT, "mysql: no answer from the server before the deadline");
        fill_native(e, MY_CR_SERVER_LOST, "HY000");
        return DBPOOL_ETIMEDOUT;
    }
    return rc;
}

static int my_exec(void *native, const char *sql, const dbpool_param *p, size_t n, int64_t *affected,
                   int64_t deadline_ns, dbpool_error *e) {
    MYSQL *m = native;
    if (affected)
        *affected = 0;
    return run_statement(m, sql, p, n, affected, NULL, deadline_ns, e);
}

/* The pool's init_sql inside a bounded call (its deadline: the connect's or
 * the reset's): every result read and dropped, as exec does. A deadline
 * leaves the connection broken. */
static int my_exec_bounded(void *native, const char *sql, int64_t deadline_ns, dbpool_error *e) {
    MYSQL *m = native;
    if (conn_of(m)->broken)
        return dbpool__seterr(e, DBPOOL_EBROKEN, "mysql: connection is broken");
    my_guard g;
    bound_begin(m, deadline_ns, &g);
    int rc = text_run(m, sql, NULL, NULL, e);
    if (bound_end(m, &g)) {
        mark_broken(m);
        dbpool__seterr(e, DBPOOL_ETIMEDOUT, "mysql: no answer from the server before the deadline");
        fill_native(e, MY_CR_SERVER_LOST, "HY000");
        return DBPOOL_ETIMEDOUT;
    }
    return rc;
}

static int my_query(void *native, const char *sql, const dbpool_param *p, size_t n, dbpool_result **out,
                    int64_t deadline_ns, dbpool_error *e) {
    MYSQL *m = native;
    *out = NULL;
    return run_statement(m, sql, p, n, NULL, out, deadline_ns, e);
}

static bool my_is_broken(void *native, const dbpool_error *e) {
    if (e && (e->code == DBPOOL_ECONNECT || e->code == DBPOOL_EBROKEN))
        return true;
    if (e && e->native_code > 0 && broken_errno((unsigned)e->native_code))
        return true;
    if (native) {
        if (conn_of(native)->broken || broken_errno(mysql_errno(native)))
            return true;
    }
    return false;
}

static void my_server_version(void *native, char *buf, size_t len) {
    const char *v = native ? mysql_get_server_info(native) : NULL;
    dbpool__strlcpy(buf, v ? v : "", len);
}

/*
 * SIGPIPE on TLS connections. Connector/C sends on a plain socket with
 * MSG_NOSIGNAL, but OpenSSL writes a TLS connection's socket with write(),
 * and a write to a connection the server has closed (a killed session, a
 * restart) raises SIGPIPE in the writing thread. Connector/C ignores
 * SIGPIPE for the whole process when it starts, which hid this; a program
 * that puts the default action back (threading.md shows how) was killed by
 * the next statement, ping, reset or close on such a connection, instead
 * of getting DBPOOL_EBROKEN. So on a TLS connection each driver call runs
 * with SIGPIPE blocked in the calling thread, and a SIGPIPE it raised is
 * taken back before the mask is restored, as libpq does.
 */
typedef struct pipe_guard {
    bool active;
    bool was_pending; /* a SIGPIPE was pending before: not ours to take */
    sigset_t old;
} pipe_guard;

static void pipe_guard_begin(bool tls, pipe_guard *g) {
    g->active = false;
    if (!tls)
        return;
    sigset_t pipe_only, pending;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    if (pthread_sigmask(SIG_BLOCK, &pipe_only, &g->old) != 0)
        return;
    g->active = true;
    g->was_pending = sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE);
}

static void pipe_guard_end(pipe_guard *g) {
    if (!g->active)
        return;
    sigset_t pipe_only, pending;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    if (!g->was_pending && sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE)) {
        struct timespec none = {0, 0};
        (void)sigtimedwait(&pipe_only, NULL, &none);
    }
    pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

static bool is_tls(void *native) { return native && mysql_get_ssl_cipher((MYSQL *)native) != NULL; }

static int guarded_connect(const void *cfg, const dbpool_connect_settings *s, int64_t deadline_ns,
                           void **native, dbpool_error *e) {
    pipe_guard g;
    pipe_guard_begin(((const my_cfg *)cfg)->ssl != SSL_DISABLED, &g);
    int rc = my_connect(cfg, s, deadline_ns, native, e);
    pipe_guard_end(&g);
    return rc;
}

static void guarded_disconnect(void *native) {
    pipe_guard g;
    pipe_guard_begin(is_tls(native), &g);
    my_disconnect(native);
    pipe_guard_end(&g);
}

static int guarded_ping(void *native, int64_t deadline_ns, dbpool_error *e) {
    pipe_guard g;
    pipe_guard_begin(is_tls(native), &g);
    int rc = my_ping(native, deadline_ns, e);
    pipe_guard_end(&g);
    return rc;
}

static int guarded_reset(void *native, int64_t deadline_ns, bool *session_cleared, dbpool_error *e) {
    pipe_guard g;
    pipe_guard_begin(is_tls(native), &g);
    int rc = my_reset(native, deadline_ns, session_cleared, e);
    pipe_guard_end(&g);
    return rc;
}

static int guarded_exec(void *native, const char *sql, const dbpool_param *p, size_t n, int64_t *affected,
                        int64_t deadline_ns, dbpool_error *e) {
    pipe_guard g;
    pipe_guard_begin(is_tls(native), &g);
    int rc = my_exec(native, sql, p, n, affected, deadline_ns, e);
    pipe_guard_end(&g);
    return rc;
}

static int guarded_exec_bounded(void *native, const char *sql, int64_t deadline_ns, dbpool_error *e) {
    pipe_guard g;
    pipe_guard_begin(is_tls(native), &g);
    int rc = my_exec_bounded(native, sql, deadline_ns, e);
    pipe_guard_end(&g);
    return rc;
}

static int guarded_query(void *native, const char *sql, const dbpool_param *p, size_t n, dbpool_result **out,
                         int64_t deadline_ns, dbpool_error *e) {
    pipe_guard g;
    pipe_guard_begin(is_tls(native), &g);
    int rc = my_query(native, sql, p, n, out, deadline_ns, e);
    pipe_guard_end(&g);
    return rc;
}

static const char *const my_schemes[] = {"mysql", "mariadb", NULL};

const dbpool_driver dbpool__driver_mysql = {
    .name = "mysql",
    .schemes = my_schemes,
    .configure = dbpool__mysql_configure,
    .free_config = dbpool__mysql_free_config,
    .secrets = dbpool__mysql_secrets,
    .connect = guarded_connect,
    .disconnect = guarded_disconnect,
    .ping = guarded_ping,
    .needs_reset = my_needs_reset,
    .reset = guarded_reset,
    .exec = guarded_exec,
    .exec_bounded = guarded_exec_bounded,
    .query = guarded_query,
    .is_broken = my_is_broken,
    .server_version = my_server_version,
    .user_handle = my_user_handle,
    .session_baseline = my_session_baseline,
    .names_statement_limit = names_statement_limit,
    .at_connection_limit = my_at_connection_limit,
};
