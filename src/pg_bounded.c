/* pg_bounded.c — libpq's blocking statement calls, cut off at a deadline
 * (see pg_bounded.h). */
#include "pg_bounded.h"
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>

int dbpool__pg_wait_socket(PGconn *c, short events, int64_t deadline_ns) {
    int fd = PQsocket(c);
    if (fd < 0)
        return -1;
    for (;;) {
        /* Past the deadline: one look that does not wait. What the server
         * sent in time may be there unread because this thread did not run
         * (the process was stopped, the machine overloaded): libpq's own
         * timed waits take it, and so does this one, rather than give up on
         * a connection that answered (a validation failed, a statement
         * reported as unanswered, the connection closed). */
        int64_t left = dbpool__ms_left(deadline_ns);
        struct pollfd pfd = {.fd = fd, .events = events, .revents = 0};
        int rc = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
        if (rc > 0)
            return 1;
        if (rc == 0 && left <= 0)
            return 0;
        if (rc == 0)
            continue; /* re-check: poll may return a little early */
        if (errno != EINTR)
            return -1;
    }
}

/* Can a bounded call be sent? Not after an earlier one on this bound timed
 * out (its statement still holds the connection), nor in pipeline mode
 * (entered on the native handle), where PQexec refuses too and a result
 * would only come after a sync dbpool never sends. */
static bool may_send(PGconn *c, const pg_bound *b) {
    if (b->timed_out)
        return false;
#ifdef LIBPQ_HAS_PIPELINING
    if (PQpipelineStatus(c) != PQ_PIPELINE_OFF)
        return false;
#endif
    return PQsetnonblocking(c, 1) == 0;
}

static PGresult *expired(pg_bound *b, PGresult *partial) {
    PQclear(partial);
    b->timed_out = true;
    return NULL;
}

/*
 * What was just sent (sent: the PQsend* call's answer), gathered as PQexec
 * gathers it: every result read, the last one returned (an error ends a
 * simple-protocol batch, so it is the last); a COPY or a lost connection
 * ends it early. Waits on the socket no longer than the deadline.
 */
static PGresult *finish(PGconn *c, pg_bound *b, bool was_nonblocking, int sent) {
    if (!sent) {
        PQsetnonblocking(c, was_nonblocking);
        return NULL;
    }
    for (;;) {
        int f = PQflush(c);
        if (f <= 0)
            break; /* sent, or failed: PQgetResult reports it */
        int w = dbpool__pg_wait_socket(c, POLLOUT | POLLIN, b->deadline_ns);
        if (w == 0)
            return expired(b, NULL);
        /* libpq's advice: read what the server sent, or a full buffer on
         * its side could block our write for ever. */
        if (w < 0 || !PQconsumeInput(c))
            break;
    }
    PGresult *last = NULL;
    for (;;) {
        /* Once the connection is bad, PQgetResult returns without I/O. */
        while (!PQisBusy(c) || PQstatus(c) == CONNECTION_BAD) {
            PGresult *r = PQgetResult(c);
            if (!r) {
                PQsetnonblocking(c, was_nonblocking);
                return last;
            }
            PQclear(last);
            last = r;
            ExecStatusType st = PQresultStatus(r);
            if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH ||
                PQstatus(c) == CONNECTION_BAD)
                return last;
        }
        int w = dbpool__pg_wait_socket(c, POLLIN, b->deadline_ns);
        if (w == 0)
            return expired(b, last);
        if ((w < 0 || !PQconsumeInput(c)) && PQstatus(c) != CONNECTION_BAD) {
            /* poll failed on a connection libpq still thinks good: give
             * it up as one that timed out (its answer cannot be read). */
            return expired(b, last);
        }
    }
}

static bool bounded(const pg_bound *b) { return b && b->deadline_ns; }

PGresult *dbpool__pgb_exec(PGconn *c, pg_bound *b, const char *sql) {
    if (!bounded(b))
        return PQexec(c, sql);
    bool was = PQisnonblocking(c) != 0;
    if (!may_send(c, b))
        return NULL;
    return finish(c, b, was, PQsendQuery(c, sql));
}

PGresult *dbpool__pgb_exec_params(PGconn *c, pg_bound *b, const char *sql, int n, const Oid *types,
                                  const char *const *values, const int *lengths, const int *formats) {
    if (!bounded(b))
        return PQexecParams(c, sql, n, types, values, lengths, formats, 0);
    bool was = PQisnonblocking(c) != 0;
    if (!may_send(c, b))
        return NULL;
    return finish(c, b, was, PQsendQueryParams(c, sql, n, types, values, lengths, formats, 0));
}

PGresult *dbpool__pgb_prepare(PGconn *c, pg_bound *b, const char *name, const char *sql, int n,
                              const Oid *types) {
    if (!bounded(b))
        return PQprepare(c, name, sql, n, types);
    bool was = PQisnonblocking(c) != 0;
    if (!may_send(c, b))
        return NULL;
    return finish(c, b, was, PQsendPrepare(c, name, sql, n, types));
}

PGresult *dbpool__pgb_exec_prepared(PGconn *c, pg_bound *b, const char *name, int n,
                                    const char *const *values, const int *lengths, const int *formats) {
    if (!bounded(b))
        return PQexecPrepared(c, name, n, values, lengths, formats, 0);
    bool was = PQisnonblocking(c) != 0;
    if (!may_send(c, b))
        return NULL;
    return finish(c, b, was, PQsendQueryPrepared(c, name, n, values, lengths, formats, 0));
}
