/*
 * servers.h — controlling the throw-away test servers from a test: stop
 * (immediately) and restart them through scripts/pg-server.sh and
 * scripts/mysql-server.sh, kill the test user's sessions through the admin
 * URL, and build URLs that point elsewhere (through a tcp_proxy, or with a
 * wrong password).
 *
 * Only the servers in $DBPOOL_SERVER_DIR are ever touched, and only when
 * that directory's env file (pg.env / mysql.env) names the same port as the
 * URL under test: a test never stops a server it did not start.
 *
 * Passwords: the helpers never print a URL or a password. dbt_has_secret()
 * tells whether a text contains any of the test servers' passwords and
 * dbt_scrub_secrets() masks them, for printing library messages safely.
 * `backend` is "pg" or "mysql" throughout.
 */
#ifndef DBPOOL_TEST_SERVERS_H
#define DBPOOL_TEST_SERVERS_H

#include <stdbool.h>
#include <stddef.h>

/* Can this test stop and restart the server of `backend`? False (with the
 * reason in why) when DBPOOL_SERVER_DIR is unset, or its env file is
 * missing or names another port than the backend's URL. */
bool dbt_server_controllable(const char *backend, char *why, size_t why_len);

/* For tests that stop servers: exit DBT_SKIP (77) with a message unless
 * dbt_server_controllable(backend). */
void dbt_require_server_control(const char *backend);

/* `scripts/<pg|mysql>-server.sh kill $DBPOOL_SERVER_DIR` (immediate stop,
 * data kept) and `... restart ...` (same port). Return 0 on success, else
 * the script's exit status (its stderr goes to ours; stdout is dropped). */
int dbt_server_kill(const char *backend);
int dbt_server_restart(const char *backend);
/* Restart the server if this process stopped it and has not restarted it
 * (for a test's teardown; also run at exit). 0 when it is up. */
int dbt_server_ensure_up(const char *backend);

/* Close every session of the test user (the user of DBPOOL_TEST_*_URL)
 * through DBPOOL_TEST_*_ADMIN_URL: pg_terminate_backend on PostgreSQL,
 * KILL CONNECTION on MariaDB; waits (up to 5 s) until the server shows none
 * left. Returns the number of sessions killed, or -1 (reason in msg, with
 * no password). */
int dbt_kill_user_sessions(const char *backend, char *msg, size_t msg_len);

/* How many sessions the test user has open on the server now (-1 on error). */
int dbt_count_user_sessions(const char *backend, char *msg, size_t msg_len);

/* The backend's URL with host and port replaced by 127.0.0.1:port (user,
 * password, database and options kept). Static buffer, overwritten by the
 * next call of either function. */
const char *dbt_url_via_port(const char *backend, int port);
/* The backend's URL with the password replaced by `password`. */
const char *dbt_url_with_password(const char *backend, const char *password);

/* The TCP port of the backend's URL (0 if none). */
int dbt_url_port(const char *backend);

/* Does text contain the password of any test server URL (user or admin,
 * PostgreSQL or MariaDB), or the extra string (may be NULL)? */
bool dbt_has_secret(const char *text, const char *extra);
/* Replace every such password (and extra) in text with "***". */
void dbt_scrub_secrets(char *text, size_t len, const char *extra);

#endif
