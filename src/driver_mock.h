/*
 * driver_mock.h — controls of the mock backend ("mock:" URLs), for tests
 * that inject faults without a database: fail the Nth connect, ping or
 * reset, add latency, kill a connection behind the pool's back. State is
 * process-wide; call dbpool__mock_reset() at the start of each test.
 *
 * The mock understands these statements in exec: BEGIN, COMMIT, ROLLBACK
 * (tracks the transaction), FAIL (a query error), BREAK [message] (an
 * error that marks the connection broken), SLEEP <ms>; query returns one row with the
 * connection's id in column "conn_id". A SLEEP in init_sql (exec_bounded),
 * or in a caller's statement given a deadline (the pool's
 * statement_timeout_ms), ends at the deadline with DBPOOL_ETIMEDOUT and a
 * broken connection. A statement that names "statement_limit" (e.g. SET
 * statement_limit = 0) stands for one that names the server's statement
 * limit (names_statement_limit): it runs as any other, and the pool's
 * backstop stands aside.
 */
#ifndef DBPOOL_DRIVER_MOCK_H
#define DBPOOL_DRIVER_MOCK_H

#include <stdbool.h>
#include <stdint.h>

typedef struct dbpool__mock_counters {
    long connects; /* connect attempts */
    long connect_failures;
    long disconnects;
    long pings;
    long resets;
    long reset_checks; /* needs_reset calls: the pool asking whether a release needs a reset */
    long live;         /* connected and not yet disconnected */
} dbpool__mock_counters;

void dbpool__mock_reset(void);
/* Fail `count` connect attempts starting at attempt `nth` (1-based, counted
 * from the last reset) with `code` (e.g. DBPOOL_ECONNECT, DBPOOL_EAUTH).
 * count < 0: fail every attempt from nth on. */
void dbpool__mock_fail_connect(long nth, long count, int code);
/* While on, an injected connect failure is a refusal at the server's
 * connection limit (SQLSTATE 53300, as PostgreSQL's "too many clients"),
 * which the mock's at_connection_limit recognises. */
void dbpool__mock_set_connect_at_limit(bool on);
void dbpool__mock_fail_ping(long nth, long count);
void dbpool__mock_fail_reset(long nth, long count);
void dbpool__mock_set_connect_delay_ms(int64_t ms);
void dbpool__mock_set_ping_delay_ms(int64_t ms);
/* Make every later successful reset report that it cleared the session
 * (as mysql_reset_connection and DISCARD ALL do): the pool then runs
 * init_sql again on the releasing thread. */
void dbpool__mock_set_reset_clears_session(bool on);
/* Close a connection behind the pool's back: every later call on it fails
 * and needs_reset reports it broken. `native` from dbpool_conn_native. */
void dbpool__mock_kill(void *native);
/* Was this connection's transaction open? (for rollback tests) */
bool dbpool__mock_in_transaction(void *native);
int dbpool__mock_conn_id(void *native);
/* The connect attempt that made it: counters.connects as that attempt
 * began (a connection whose attempt is at most a count read earlier
 * began connecting before that read). */
long dbpool__mock_conn_attempt(void *native);
void dbpool__mock_get_counters(dbpool__mock_counters *out);

#endif
