/* test_pg_tls.c — TLS to a real PostgreSQL server: sslmode=require,
 * verify-ca and verify-full really encrypt the session; a wrong CA, a
 * certificate for another host name and a missing CA file fail at once,
 * with a message that says what to fix and holds no password;
 * connect_timeout_ms bounds a TLS handshake that never completes; pooled
 * TLS connections are reused, validated and reset like plain ones.
 *
 * Needs a server started with DBPOOL_TEST_TLS=1 (scripts/pg-server.sh
 * writes DBPOOL_TEST_PG_SSL_CA and DBPOOL_TEST_PG_SSL_OTHER_CA to pg.env);
 * skipped when that CA is not named. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "dbpool.h"
#include "servers.h"
#include "tcp_proxy.h"
#include "testsupport.h"
#include "tls_cases.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef DBPOOL_HAVE_PG

static const char *ca;       /* the server's CA */
static const char *other_ca; /* an unrelated one */

/* The test URL with extra libpq keys ("sslmode=require&..."). */
static const char *url_with(const char *extra) { return dbt_backend_url_with("pg", extra); }

/* The first column of the first row, as text, into buf. */
static void query_text(dbpool_conn *c, const char *sql, char *buf, size_t len) {
    dbpool_result *r = dbt_query_ok(c, sql, NULL, 0);
    assert_int_equal(dbt_next_ok(r), 1);
    const char *v = dbpool_result_text(r, 0, NULL);
    snprintf(buf, len, "%s", v ? v : "<NULL>");
    dbpool_result_free(r);
}

static bool session_encrypted(dbpool_conn *c) {
    char v[16];
    query_text(c, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", v, sizeof v);
    return strcmp(v, "t") == 0;
}

static void test_sslmodes_encrypt(void **state) {
    (void)state;
    const char *modes[] = {"require", "verify-ca", "verify-full"};
    for (size_t i = 0; i < sizeof modes / sizeof *modes; i++) {
        char extra[1200];
        snprintf(extra, sizeof extra, "sslmode=%s&sslrootcert=%s", modes[i], ca);
        dbpool_options o;
        dbt_options(&o, 0, 2);
        dbpool *p = dbt_tls_open_ok(url_with(extra), &o);
        dbpool_conn *c = dbt_acquire(p);
        assert_true(session_encrypted(c));
        dbpool_release(c);
        dbpool_close(p);
    }
    /* And the test is not vacuous: sslmode=disable is plaintext. */
    dbpool_options o;
    dbt_options(&o, 0, 1);
    dbpool *p = dbt_tls_open_ok(url_with("sslmode=disable"), &o);
    dbpool_conn *c = dbt_acquire(p);
    assert_false(session_encrypted(c));
    dbpool_release(c);
    dbpool_close(p);
}

/* One lease's connection is the next one's, still encrypted; validation
 * passes over TLS; a transaction and a session setting a caller left are
 * gone for the next caller. */
static void test_pooled_tls_reused_validated_reset(void **state) {
    (void)state;
    char extra[1200];
    snprintf(extra, sizeof extra, "sslmode=verify-full&sslrootcert=%s", ca);
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.validation = DBPOOL_VALIDATE_ALWAYS;
    o.validation_window_ms = 0;
    o.maintenance_interval_ms = 0;
    dbpool *p = dbt_tls_open_ok(url_with(extra), &o);

    dbpool_conn *c = dbt_acquire(p);
    char pid1[32], pid2[32], v[64];
    query_text(c, "SELECT pg_backend_pid()::text", pid1, sizeof pid1);
    dbt_exec_ok(c, "BEGIN", NULL, 0);
    dbt_exec_ok(c, "CREATE TEMP TABLE tls_left_behind(x int)", NULL, 0);
    dbt_exec_ok(c, "SET application_name = 'tls_caller'", NULL, 0);
    dbpool_release(c);

    c = dbt_acquire(p);
    query_text(c, "SELECT pg_backend_pid()::text", pid2, sizeof pid2);
    assert_string_equal(pid1, pid2);
    assert_true(session_encrypted(c));
    query_text(c, "SELECT count(*)::text FROM pg_class WHERE relname = 'tls_left_behind'", v, sizeof v);
    assert_string_equal(v, "0");
    query_text(c, "SELECT current_setting('application_name')", v, sizeof v);
    assert_string_not_equal(v, "tls_caller");
    query_text(c, "SELECT (now() = statement_timestamp())::text", v, sizeof v); /* no transaction open */
    assert_string_equal(v, "true");
    dbpool_release(c);

    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.created, 1);
    assert_true(s.reused >= 1);
    assert_int_equal(s.validation_failures, 0);
    dbpool_close(p);
}

/*
 * A connect that fails for a reason no retry changes: the code, one
 * attempt only (not retried for the acquire's whole timeout), a message
 * with `want` in it, no password. Through a lazy pool's acquire, which is
 * where a retried error would keep the caller waiting.
 */
static void expect_permanent_url(const char *url, int want_code, const char *want);

static void expect_permanent(const char *extra, int want_code, const char *want) {
    expect_permanent_url(url_with(extra), want_code, want);
}

static void expect_permanent_url(const char *url, int want_code, const char *want) {
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.lazy_connect = true;
    o.acquire_timeout_ms = 20000;
    o.max_retries = 3;
    o.backoff_base_ms = 1000; /* a retry would show in the time taken */
    o.backoff_max_ms = 1000;
    dbpool *p = dbt_tls_open_ok(url, &o);
    dbpool_conn *c = NULL;
    dbpool_error err;
    int64_t t0 = dbt_now_ms();
    int rc = dbpool_acquire(p, -1, &c, &err);
    int64_t took = dbt_now_ms() - t0;
    bool secret = dbt_has_secret(err.message, NULL);
    dbt_scrub_secrets(err.message, sizeof err.message, NULL);
    fprintf(stderr, "  %s -> %s after %lld ms: %s\n", want, dbpool_errname(rc), (long long)took, err.message);
    assert_false(secret);
    assert_int_equal(rc, want_code);
    assert_int_equal(err.code, want_code);
    assert_non_null(strstr(err.message, want));
    assert_true(took < 3000);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.connect_errors, 1);
    dbpool_close(p);
}

static void test_wrong_ca_is_permanent(void **state) {
    (void)state;
    char extra[1200];
    snprintf(extra, sizeof extra, "sslmode=verify-ca&sslrootcert=%s", other_ca);
    expect_permanent(extra, DBPOOL_EAUTH, "sslrootcert");
    snprintf(extra, sizeof extra, "sslmode=verify-full&sslrootcert=%s", other_ca);
    expect_permanent(extra, DBPOOL_EAUTH, "sslrootcert");
}

/* The command's advice for a certificate that fails the check. */
static void test_cli_blames_tls(void **state) {
    (void)state;
    char extra[1200];
    snprintf(extra, sizeof extra, "sslmode=verify-full&sslrootcert=%s", other_ca);
    dbt_tls_expect_cli_blames_tls(url_with(extra));
}

static void test_other_host_name_is_permanent(void **state) {
    (void)state;
    /* The certificate names localhost and 127.0.0.1; the connection goes
     * to 127.0.0.1 under another name. */
    char extra[1200];
    snprintf(extra, sizeof extra,
             "sslmode=verify-full&sslrootcert=%s&host=db.example.invalid&hostaddr=127.0.0.1", ca);
    expect_permanent(extra, DBPOOL_EAUTH, "does not match host name \"db.example.invalid\"");
    /* verify-ca does not check the name. */
    snprintf(extra, sizeof extra,
             "sslmode=verify-ca&sslrootcert=%s&host=db.example.invalid&hostaddr=127.0.0.1", ca);
    dbpool_options o;
    dbt_options(&o, 0, 1);
    dbpool *p = dbt_tls_open_ok(url_with(extra), &o);
    dbpool_conn *c = dbt_acquire(p);
    assert_true(session_encrypted(c));
    dbpool_release(c);
    dbpool_close(p);
}

static void test_missing_ca_file_is_invalid(void **state) {
    (void)state;
    char extra[1200];
    snprintf(extra, sizeof extra, "sslmode=verify-full&sslrootcert=%s/no-such-ca.pem", dbt_tmpdir());
    expect_permanent(extra, DBPOOL_EINVAL, "no-such-ca.pem");
    /* Under require and prefer too: libpq alone would skip the check of
     * the server's certificate the CA was named for. */
    const char *modes[] = {"require", "prefer"};
    for (size_t i = 0; i < 2; i++) {
        snprintf(extra, sizeof extra, "sslmode=%s&sslrootcert=%s/no-such-ca.pem", modes[i], dbt_tmpdir());
        expect_permanent(extra, DBPOOL_EINVAL, "sslrootcert file");
    }
    /* A revocation list (libpq alone: no revocation check) and a client
     * certificate (libpq alone: none sent). */
    snprintf(extra, sizeof extra, "sslmode=require&sslcrl=%s/no-such.crl", dbt_tmpdir());
    expect_permanent(extra, DBPOOL_EINVAL, "no-such.crl");
    snprintf(extra, sizeof extra, "sslmode=require&sslcert=%s/no-such.crt&sslkey=%s/no-such.key",
             dbt_tmpdir(), dbt_tmpdir());
    expect_permanent(extra, DBPOOL_EINVAL, "no-such.crt");
    /* sslmode=disable reads none of them. */
    snprintf(extra, sizeof extra, "sslmode=disable&sslrootcert=%s/no-such-ca.pem", dbt_tmpdir());
    dbpool_options o;
    dbt_options(&o, 0, 1);
    dbpool *p = dbt_tls_open_ok(url_with(extra), &o);
    dbpool_conn *c = dbt_acquire(p);
    assert_false(session_encrypted(c));
    dbpool_release(c);
    dbpool_close(p);
}

/* The server answers the SSLRequest, then nothing: the handshake never
 * completes, and connect_timeout_ms ends the attempt. */
static void test_stalled_handshake_bounded(void **state) {
    (void)state;
    dbt_tls_expect_handshake_bounded("pg", "sslmode=require", DBT_PROXY_GREET, 0, 400, 350,
                                     "stalled handshake");
}

/* ---- An encrypted client key never makes the connect ask for its passphrase ---- */

static void test_encrypted_key_never_prompts(void **state) {
    (void)state;
    char crt[1024], key[1024];
    dbt_tls_client_files_or_skip(ca, crt, key, sizeof crt);
    char extra[3000];
    snprintf(extra, sizeof extra, "sslmode=require&sslcert=%s&sslkey=%s", crt, key);
    dbt_tls_expect_no_prompt(url_with(extra), "sslpassword");
    /* With its passphrase the key loads. */
    snprintf(extra, sizeof extra, "sslmode=require&sslcert=%s&sslkey=%s&sslpassword=dbpool-test-passphrase",
             crt, key);
    dbpool_options o;
    dbt_options(&o, 0, 1);
    dbpool *p = dbt_tls_open_ok(url_with(extra), &o);
    dbpool_conn *c = dbt_acquire(p);
    assert_true(session_encrypted(c));
    dbpool_release(c);
    dbpool_close(p);
}

/* A pooled TLS connection whose peer goes silent: validation before the
 * next hand-out ends at validation_timeout_ms (OpenSSL must not block in a
 * read the deadline cannot reach), the connection is replaced, and the
 * acquire gets a new one once the peer answers again. */
static void test_silent_peer_validation_bounded(void **state) {
    (void)state;
    dbt_tls_expect_silent_peer_bounded("pg", "sslmode=require", session_encrypted, NULL);
}

static void test_tls_offer_taken_away(void **state) {
    (void)state;
    dbt_proxy *px = dbt_proxy_start("127.0.0.1", dbt_url_port("pg"));
    assert_non_null(px);
    dbt_proxy_set_mode(px, DBT_PROXY_NOTLS, 0);
    bool encrypted = true;
    dbpool_error err;
    /* libpq's default, prefer, falls back to plaintext. */
    assert_int_equal(
        dbt_tls_connect_stripped("pg", px, "sslmode=prefer", session_encrypted, &encrypted, &err), DBPOOL_OK);
    assert_false(encrypted);
    /* require and the verify modes refuse before logging in. */
    char q[1200];
    const char *modes[] = {"require", "verify-ca", "verify-full"};
    for (size_t i = 0; i < sizeof modes / sizeof *modes; i++) {
        snprintf(q, sizeof q, "sslmode=%s&sslrootcert=%s", modes[i], ca);
        dbt_tls_record_client(px);
        assert_int_equal(dbt_tls_connect_stripped("pg", px, q, session_encrypted, &encrypted, &err),
                         DBPOOL_EAUTH);
        dbt_tls_expect_no_login_in_clear("pg", px);
        assert_non_null(strstr(err.message, "server does not support SSL, but SSL was required"));
    }
    dbt_proxy_destroy(px);
}

/* A peer that keeps the TLS handshake alive a byte at a time, each well
 * within any socket timeout, and never finishes it: connect_timeout_ms
 * still ends the attempt. (The greeting comes late too, as over any real
 * network.) Asserted before the pool is closed: a connect stuck in the
 * handshake would hold the close. */
static void test_trickled_handshake_bounded(void **state) {
    (void)state;
    dbt_tls_expect_handshake_bounded("pg", "sslmode=require", DBT_PROXY_TRICKLE, 100, 1000, 0,
                                     "trickled handshake");
}

/* A CA named by a path relative to the working directory at dbpool_open
 * still works for connections opened after the program changed directory
 * (as a daemon does), as an SQLite path does. */
static void test_relative_ca_path_survives_chdir(void **state) {
    (void)state;
    dbt_tls_expect_relative_ca_survives_chdir("pg", ca,
                                              "sslmode=verify-full&sslrootcert=", session_encrypted);
}

/* The role dbpool_cert logs in with the client certificate alone
 * (pg_hba.conf's cert): with it, the session is that role's; without it,
 * or with a certificate the server refuses, the login fails at once as an
 * authentication error that says what to give. */
static void test_client_certificate_login(void **state) {
    (void)state;
    const char *cert_url = getenv("DBPOOL_TEST_PG_CERT_URL");
    char crt[1024], key[1024], srv_crt[1024], srv_key[1024];
    if (!cert_url || !*cert_url || !dbt_tls_next_to_ca(ca, "client.crt", crt, sizeof crt) ||
        !dbt_tls_next_to_ca(ca, "client.key", key, sizeof key)) {
        fprintf(stderr,
                "  skipped: no DBPOOL_TEST_PG_CERT_URL or client certificate (an older pg-server.sh)\n");
        skip();
    }
    char url[4096];
    snprintf(url, sizeof url,
             "%s?sslmode=verify-full&sslrootcert=%s&sslcert=%s&sslkey=%s&sslpassword=dbpool-test-passphrase",
             cert_url, ca, crt, key);
    dbpool_options o;
    dbt_options(&o, 0, 1);
    dbpool *p = dbt_tls_open_ok(url, &o);
    dbpool_conn *c = dbt_acquire(p);
    char v[64];
    query_text(c, "SELECT current_user", v, sizeof v);
    assert_string_equal(v, "dbpool_cert");
    assert_true(session_encrypted(c));
    dbpool_release(c);
    dbpool_close(p);

    snprintf(url, sizeof url, "%s?sslmode=verify-full&sslrootcert=%s", cert_url, ca);
    expect_permanent_url(url, DBPOOL_EAUTH, "sslcert");
    /* The server certificate as a client's: refused by the server's TLS. */
    if (dbt_tls_next_to_ca(ca, "server.crt", srv_crt, sizeof srv_crt) &&
        dbt_tls_next_to_ca(ca, "server.key", srv_key, sizeof srv_key)) {
        snprintf(url, sizeof url, "%s?sslmode=verify-full&sslrootcert=%s&sslcert=%s&sslkey=%s", cert_url, ca,
                 srv_crt, srv_key);
        expect_permanent_url(url, DBPOOL_EAUTH, "sslcert");
    }
}

int main(void) {
    (void)dbt_backend_url("pg");
    ca = getenv("DBPOOL_TEST_PG_SSL_CA");
    other_ca = getenv("DBPOOL_TEST_PG_SSL_OTHER_CA");
    if (!ca || !*ca || !other_ca || !*other_ca) {
        fprintf(stderr, "skipped: DBPOOL_TEST_PG_SSL_CA / DBPOOL_TEST_PG_SSL_OTHER_CA not set (start the "
                        "server with DBPOOL_TEST_TLS=1 scripts/pg-server.sh start DIR)\n");
        return DBT_SKIP;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sslmodes_encrypt),
        cmocka_unit_test(test_pooled_tls_reused_validated_reset),
        cmocka_unit_test(test_wrong_ca_is_permanent),
        cmocka_unit_test(test_cli_blames_tls),
        cmocka_unit_test(test_other_host_name_is_permanent),
        cmocka_unit_test(test_missing_ca_file_is_invalid),
        cmocka_unit_test(test_stalled_handshake_bounded),
        cmocka_unit_test(test_trickled_handshake_bounded),
        cmocka_unit_test(test_relative_ca_path_survives_chdir),
        cmocka_unit_test(test_client_certificate_login),
        cmocka_unit_test(test_encrypted_key_never_prompts),
        cmocka_unit_test(test_silent_peer_validation_bounded),
        cmocka_unit_test(test_tls_offer_taken_away),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#else

int main(void) {
    fprintf(stderr, "skipped: this build has no PostgreSQL backend\n");
    return DBT_SKIP;
}

#endif
