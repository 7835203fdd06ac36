/* tls_cases.h — what the TLS tests of PostgreSQL and MariaDB
 * (tests/test_pg_tls.c, tests/test_mysql_tls.c) do the same way. Each
 * passes its backend ("pg", "mysql") and the URL key that asks for TLS
 * without a certificate check ("sslmode=require", "ssl-mode=REQUIRED"). */
#ifndef DBPOOL_TEST_TLS_CASES_H
#define DBPOOL_TEST_TLS_CASES_H

#include "dbpool.h"
#include "tcp_proxy.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* dbpool_open, or the test fails (the message scrubbed of passwords). */
dbpool *dbt_tls_open_ok(const char *url, dbpool_options *o);
/* The backend's test URL through the proxy, with `require` added. */
void dbt_tls_url_via_proxy(const char *backend, const dbt_proxy *px, const char *require, char *url,
                           size_t len);
/* Acquire from a lazy pool on `url` with stdin a pipe nobody writes to and
 * stderr captured: OpenSSL's default passphrase prompt writes "Enter PEM
 * pass phrase:" there and waits for an answer on stdin (or the terminal).
 * Expects the acquire to end by itself within a few seconds, after one
 * attempt, with DBPOOL_EINVAL, `want` in the message, and nothing written. */
void dbt_tls_expect_no_prompt(const char *url, const char *want);
/* DIR/name next to the CA file `ca` (scripts/tls-certs.sh makes
 * client.crt and client.key there), or NULL when the file is not there. */
const char *dbt_tls_next_to_ca(const char *ca, const char *name, char *buf, size_t len);
/* client.crt and client.key next to the CA into crt and key (len bytes
 * each); the test is skipped when they are not there. */
void dbt_tls_client_files_or_skip(const char *ca, char *crt, char *key, size_t len);
/* A TLS handshake through the proxy in `mode` (GREET: the server's answer
 * to the TLS request, then nothing; TRICKLE: a byte per delay_ms) must end
 * in DBPOOL_ETIMEDOUT at connect_timeout_ms: after at least min_ms, within
 * 2.5 s. `what` names the case in the output. */
void dbt_tls_expect_handshake_bounded(const char *backend, const char *require, dbt_proxy_mode mode,
                                      int64_t delay_ms, int64_t connect_timeout_ms, int64_t min_ms,
                                      const char *what);

/* Whether the session on c is encrypted, asked of the server. */
typedef bool (*dbt_tls_encrypted_fn)(dbpool_conn *c);
/* A pooled TLS connection whose peer goes silent: validation before the
 * next hand-out ends at validation_timeout_ms (OpenSSL must not block in a
 * read the deadline cannot reach), the connection is replaced, and the
 * acquire gets a new one once the peer answers again. `check`, if given,
 * looks at the first connection before it is released. */
void dbt_tls_expect_silent_peer_bounded(const char *backend, const char *require,
                                        dbt_tls_encrypted_fn encrypted, void (*check)(dbpool_conn *c));
/* Connect through a proxy that takes the server's TLS offer away (as a
 * man in the middle could), with `query` added to the URL: DBPOOL_OK and
 * whether the session is encrypted, or the error. */
int dbt_tls_connect_stripped(const char *backend, const dbt_proxy *px, const char *query,
                             dbt_tls_encrypted_fn encrypted_fn, bool *encrypted, dbpool_error *err);
/* Call before a connect through px: record what the client sends. */
void dbt_tls_record_client(dbt_proxy *px);
/* After it (the pool closed): what crossed the network from the client
 * holds neither the test user's name (in the clear in every login's first
 * message, PostgreSQL's and MySQL's) nor its password, so no login, and
 * nothing a listener could replay or crack, went out unencrypted. Waits
 * (up to 5 s) for the proxy's connections to end first, so that all the
 * client wrote is recorded. */
void dbt_tls_expect_no_login_in_clear(const char *backend, dbt_proxy *px);
/* `dbpool demo` and `dbpool check` on `url`, whose server certificate
 * fails the check: both fail, neither prints a password, and demo's
 * advice is about TLS, not the user and password. */
void dbt_tls_expect_cli_blames_tls(const char *url);
/* A CA named by a path relative to the working directory at dbpool_open
 * (`verify` is the URL part before the file name, e.g.
 * "sslmode=verify-full&sslrootcert=") still works for connections opened
 * after the program changed directory (as a daemon does). */
void dbt_tls_expect_relative_ca_survives_chdir(const char *backend, const char *ca, const char *verify,
                                               dbt_tls_encrypted_fn encrypted);

#endif
