/* testsupport.h — fixtures shared by the tests. */
#ifndef DBPOOL_TESTSUPPORT_H
#define DBPOOL_TESTSUPPORT_H

#include "dbpool.h"

#include <pthread.h>
#include <sys/types.h>

#include <stdbool.h>
#include <stdint.h>

/* The exit code ctest reads as "skipped". */
#define DBT_SKIP 77

/*
 * The URL for a backend named on the command line: "sqlite" (a new file in a
 * fresh temporary directory), "pg" (DBPOOL_TEST_PG_URL) or "mysql"
 * (DBPOOL_TEST_MYSQL_URL). A server backend whose variable is unset makes
 * the test exit DBT_SKIP, unless DBPOOL_TEST_REQUIRE_SERVERS=1 (as in CI),
 * when it fails. The string is static.
 */
const char *dbt_backend_url(const char *backend);
/* dbt_backend_url with the query keys in `extra` ("pool_max=3&x=y")
 * appended. Returns a static buffer, overwritten by the next call. */
const char *dbt_backend_url_with(const char *backend, const char *extra);
/* A fresh temporary directory (mkdtemp under $TMPDIR or /tmp), removed at
 * exit. Static string. */
const char *dbt_tmpdir(void);
/* The URL "sqlite:DIR/name" of a new file in dbt_tmpdir() that holds text,
 * not an SQLite database. Static buffer. */
const char *dbt_not_a_database_url(const char *name);
/* Monotonic milliseconds. */
int64_t dbt_now_ms(void);
void dbt_sleep_ms(int64_t ms);
/* Join t within timeout_ms (join.c); false if it is still running then. */
bool dbt_join_within(pthread_t t, int64_t timeout_ms, void **ret);
/* Wait up to timeout_ms for child process pid (join.c): its exit code,
 * 128 + the signal that ended it, or -1 when it was still running then
 * (it is killed and reaped). */
int dbt_child_status(pid_t pid, int64_t timeout_ms);
/* Options with a short acquire timeout, for tests. */
void dbt_options(dbpool_options *o, int min_size, int max_size);
/* Check the pool's counters: total == idle + in_use + connecting. */
bool dbt_invariant_holds(dbpool *p);
/* The backend name argument of a per-backend test (argv[1]), "sqlite" if none. */
const char *dbt_backend_arg(int argc, char **argv);

/* Calls that must succeed (calls.c): on failure the test fails (cmocka)
 * with the pool's message. */
/* A lease within 5 s. */
dbpool_conn *dbt_acquire(dbpool *p);
void dbt_exec_ok(dbpool_conn *c, const char *sql, const dbpool_param *params, size_t n);
/* A result, never NULL. */
dbpool_result *dbt_query_ok(dbpool_conn *c, const char *sql, const dbpool_param *params, size_t n);
/* dbpool_result_next: 1 a row, 0 the end; an error fails the test. */
int dbt_next_ok(dbpool_result *r);
/* The first column of the first row, as an integer. */
int64_t dbt_query_int(dbpool_conn *c, const char *sql, const dbpool_param *params, size_t n);
/* Wait up to timeout_ms until `count_sql`, run with `id` as its one
 * parameter on a connection of a second pool to `url`, counts 0 (a
 * session the server closed: pg_stat_activity, PROCESSLIST). */
void dbt_wait_count_zero(const char *url, const char *count_sql, int64_t id, int64_t timeout_ms);
/* A mock pool with o's options; a failed open fails the test. */
dbpool *dbt_open_mock(const dbpool_options *o);
/* A mock: pool with o's options, lazy (no connection until asked for) and
 * without a maintenance thread; a failed open fails the test. */
dbpool *dbt_open_lazy_mock(dbpool_options *o);

/* The mock backend (mock.c). */
/* A cmocka setup: the mock's faults and counters cleared (dbpool__mock_reset). */
int dbt_mock_setup(void **state);
/* dbt_options for a mock pool whose checks are the test's own: no
 * maintenance thread, no validation round trip, the thread cache on or off. */
void dbt_mock_options(dbpool_options *o, int min_size, int max_size, bool thread_cache);
/* The mock's number of the connection behind a lease (1, 2, ... as opened). */
int dbt_conn_id(dbpool_conn *c);
/* dbpool_get_stats as a value. */
dbpool_stats dbt_stats(dbpool *p);
/* The mock's connections open now (connected, not yet disconnected). */
long dbt_mock_live(void);

/* One acquire on a thread of its own: fill p and timeout_ms, start it with
 * pthread_create(&t, NULL, dbt_timed_acquire_main, &a), join. It records
 * the code, how long the call took and the error message, and gives back
 * a lease it got at once. */
typedef struct dbt_timed_acquire {
    dbpool *p;
    int64_t timeout_ms;
    int rc;
    int64_t took_ms;
    char message[512];
} dbt_timed_acquire;
void *dbt_timed_acquire_main(void *arg);
/* Poll until the pool has exactly n callers waiting; after timeout_ms the
 * test fails. */
void dbt_wait_for_waiters(dbpool *p, int n, int64_t timeout_ms);
/* Poll until the pool holds `idle` idle connections, `total` in all, and
 * opens none; after timeout_ms the test fails with what it shows. */
void dbt_wait_settled(dbpool *p, int idle, int total, int64_t timeout_ms);
/* The two halves of a slow init_sql, for pools whose init_sql sleeps while
 * `flag_table` holds a row and whose validation_timeout_ms and
 * connect_timeout_ms are both `bound_ms`. `c` is a lease that changed the
 * session, so its release resets and runs init_sql again. With the flag
 * raised through `admin` (another connection), the release must end within
 * bound_ms + 1.5 s and close the connection (reset_failed, none left), and
 * a new connection must time out as quickly, naming init_sql. The flag is
 * lowered again before returning. */
void dbt_expect_slow_init_sql_bounded(dbpool *p, dbpool_conn *c, dbpool_conn *admin, const char *flag_table,
                                      int64_t bound_ms);

#endif
