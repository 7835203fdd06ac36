/*
 * pg_stmt_cache.h — the statements a PostgreSQL connection keeps prepared
 * for dbpool (statement_cache), for the PostgreSQL backend: how a
 * parameterised statement runs, and what a session change or a reset does
 * to them. One cache per connection, used only by its lease holder.
 */
#ifndef DBPOOL_PG_STMT_CACHE_H
#define DBPOOL_PG_STMT_CACHE_H

#include "pg_bounded.h"
#include "pg_session_sql.h"

#include <libpq-fe.h>

typedef struct pg_stmt_cache pg_stmt_cache;

/*
 * Run sql, numbered as `rewritten`, with its n parameters: from its
 * second run on through a statement kept prepared on the connection, else
 * unnamed. *cache is made at the first call. A kept statement the server
 * lost or must re-plan is prepared again and run once more outside a
 * transaction. *effect becomes PG_SESSION_CHANGED when statements are left
 * on the server that only the release's DISCARD ALL can remove. Returns
 * the result as PQexecParams does. Every round trip it makes ends at b's
 * deadline (pg_bounded.h; NULL, or a deadline of 0: unbounded): past it,
 * NULL with b->timed_out set.
 */
PGresult *dbpool__pg_exec_cached(PGconn *c, pg_bound *b, pg_stmt_cache **cache, pg_session_effect *effect,
                                 const char *sql, const char *rewritten, int n, const Oid *types,
                                 const char *const *values, const int *lengths, const int *formats);

/* A statement the session scan flags runs (sql): it may change what a kept
 * statement means, or deallocate them. The kept ones are forgotten, and
 * deallocated later unless sql may have done it. */
void dbpool__pg_stmts_session_changed(pg_stmt_cache *k, const char *sql);

/* DISCARD ALL ran: nothing of the cache is left on the server. */
void dbpool__pg_stmts_discarded(pg_stmt_cache *k);

void dbpool__pg_stmts_free(pg_stmt_cache *k);

#endif
