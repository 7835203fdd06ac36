/*
 * pg_bounded.h — libpq's blocking statement calls (PQexec, PQexecParams,
 * PQprepare, PQexecPrepared), cut off at a deadline: the client's backstop
 * for a caller's statement when the pool has statement_timeout_ms
 * (design.md#statement-deadlines). For the PostgreSQL backend only.
 *
 * With no deadline (b NULL or b->deadline_ns 0) each is libpq's blocking
 * call. With one, the call is sent in non-blocking mode and its results
 * are read as the socket becomes readable, until the last one or the
 * deadline. Each returns what its libpq counterpart returns (the last
 * result; NULL when it could not be sent), or NULL with b->timed_out set
 * when the deadline passed first; from then on every call on that bound
 * returns NULL at once: the connection is busy with a statement whose
 * answer never came, and must be closed.
 */
#ifndef DBPOOL_PG_BOUNDED_H
#define DBPOOL_PG_BOUNDED_H

#include <libpq-fe.h>

#include <stdbool.h>
#include <stdint.h>

typedef struct pg_bound {
    int64_t deadline_ns; /* absolute, on dbpool__now_ns()'s clock; 0: none */
    bool timed_out;
} pg_bound;

/* Wait until c's socket is ready for events (POLLIN/POLLOUT) or the
 * deadline (on dbpool__now_ns()'s clock) passes: 1 = ready (or hung up:
 * libpq finds out which), 0 = deadline passed, -1 = no socket / poll
 * failed. Ready once the deadline has passed too, when it is so without
 * waiting (an answer that came while this thread did not run). Shared by
 * every bounded libpq call (connect, ping, reset, statements). */
int dbpool__pg_wait_socket(PGconn *c, short events, int64_t deadline_ns);

PGresult *dbpool__pgb_exec(PGconn *c, pg_bound *b, const char *sql);
PGresult *dbpool__pgb_exec_params(PGconn *c, pg_bound *b, const char *sql, int n, const Oid *types,
                                  const char *const *values, const int *lengths, const int *formats);
PGresult *dbpool__pgb_prepare(PGconn *c, pg_bound *b, const char *name, const char *sql, int n,
                              const Oid *types);
PGresult *dbpool__pgb_exec_prepared(PGconn *c, pg_bound *b, const char *name, int n,
                                    const char *const *values, const int *lengths, const int *formats);

#endif
