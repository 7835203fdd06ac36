/* test_mysql_tls.c — TLS to a real MariaDB server: ssl-mode=REQUIRED,
 * VERIFY_CA and VERIFY_IDENTITY really encrypt the session; a wrong CA, a
 * certificate for another host name and a missing CA file fail at once,
 * with a message that says what to fix and holds no password;
 * connect_timeout_ms bounds a TLS handshake that never completes; pooled
 * TLS connections are reused, validated and reset like plain ones; with
 * the server's TLS offer taken away, or a fake server's old greeting,
 * nothing of the login crosses the network.
 *
 * Needs a server started with DBPOOL_TEST_TLS=1 (scripts/mysql-server.sh
 * writes DBPOOL_TEST_MYSQL_SSL_CA and DBPOOL_TEST_MYSQL_SSL_OTHER_CA to
 * mysql.env); skipped when that CA is not named. */
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

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <mysql.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <unistd.h>

#ifdef DBPOOL_HAVE_MYSQL

static const char *ca;       /* the server's CA */
static const char *other_ca; /* an unrelated one */

/* Column `col` of the first row, as text, into buf. */
static void query_text(dbpool_conn *c, const char *sql, int col, char *buf, size_t len) {
    dbpool_result *r = dbt_query_ok(c, sql, NULL, 0);
    assert_int_equal(dbt_next_ok(r), 1);
    const char *v = dbpool_result_text(r, col, NULL);
    snprintf(buf, len, "%s", v ? v : "<NULL>");
    dbpool_result_free(r);
}

static bool session_encrypted(dbpool_conn *c) {
    char v[128];
    query_text(c, "SHOW SESSION STATUS LIKE 'Ssl_cipher'", 1, v, sizeof v);
    return v[0] != '\0';
}

static void test_ssl_modes_encrypt(void **state) {
    (void)state;
    const char *modes[] = {"REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY"};
    for (size_t i = 0; i < sizeof modes / sizeof *modes; i++) {
        char extra[1200];
        snprintf(extra, sizeof extra, "ssl-mode=%s&ssl-ca=%s", modes[i], ca);
        dbpool_options o;
        dbt_options(&o, 0, 2);
        dbpool *p = dbt_tls_open_ok(dbt_backend_url_with("mysql", extra), &o);
        dbpool_conn *c = dbt_acquire(p);
        assert_true(session_encrypted(c));
        dbpool_release(c);
        dbpool_close(p);
    }
    /* REQUIRED without a CA encrypts without checking. */
    dbpool_options o;
    dbt_options(&o, 0, 1);
    dbpool *p = dbt_tls_open_ok(dbt_backend_url_with("mysql", "ssl-mode=REQUIRED"), &o);
    dbpool_conn *c = dbt_acquire(p);
    assert_true(session_encrypted(c));
    /* REQUIRED logs in through dbpool's TLS gate first (driver_mysql.c):
     * a mysql_change_user on the native handle still logs in. */
    char user[256], pw[256], db[256];
    const char *url = dbt_backend_url("mysql"), *u = strstr(url, "://") + 3, *at = strchr(u, '@');
    const char *colon = memchr(u, ':', (size_t)(at - u)), *slash = strchr(at, '/');
    assert_non_null(colon);
    assert_non_null(slash);
    snprintf(user, sizeof user, "%.*s", (int)(colon - u), u);
    snprintf(pw, sizeof pw, "%.*s", (int)(at - colon - 1), colon + 1);
    snprintf(db, sizeof db, "%.*s", (int)strcspn(slash + 1, "?"), slash + 1);
    MYSQL *m = dbpool_conn_native(c);
    if (mysql_change_user(m, user, pw, db[0] ? db : NULL) != 0)
        fail_msg("mysql_change_user over REQUIRED: error %u", mysql_errno(m));
    assert_true(session_encrypted(c));
    dbpool_release(c);
    dbpool_close(p);
    /* And the test is not vacuous: without ssl-* keys, plaintext. */
    p = dbt_tls_open_ok(dbt_backend_url("mysql"), &o);
    c = dbt_acquire(p);
    assert_false(session_encrypted(c));
    dbpool_release(c);
    dbpool_close(p);
}

/* One lease's connection is the next one's, still encrypted; validation
 * passes over TLS; the reset clears what the caller left. */
static void test_pooled_tls_reused_validated_reset(void **state) {
    (void)state;
    char extra[1200];
    snprintf(extra, sizeof extra, "ssl-mode=VERIFY_IDENTITY&ssl-ca=%s", ca);
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.validation = DBPOOL_VALIDATE_ALWAYS;
    o.validation_window_ms = 0;
    o.maintenance_interval_ms = 0;
    dbpool *p = dbt_tls_open_ok(dbt_backend_url_with("mysql", extra), &o);

    dbpool_conn *c = dbt_acquire(p);
    char id1[32], id2[32], v[64];
    query_text(c, "SELECT CONNECTION_ID()", 0, id1, sizeof id1);
    dbt_exec_ok(c, "SET @tls_left_behind = 42", NULL, 0);
    dbt_exec_ok(c, "CREATE TEMPORARY TABLE tls_left_behind(x int)", NULL, 0);
    dbt_exec_ok(c, "START TRANSACTION", NULL, 0);
    dbt_exec_ok(c, "INSERT INTO tls_left_behind VALUES (1)", NULL, 0);
    dbpool_release(c);

    c = dbt_acquire(p);
    query_text(c, "SELECT CONNECTION_ID()", 0, id2, sizeof id2);
    assert_string_equal(id1, id2);
    assert_true(session_encrypted(c));
    query_text(c, "SELECT @tls_left_behind", 0, v, sizeof v);
    assert_string_equal(v, "<NULL>");
    dbpool_result *r = NULL;
    dbpool_error err;
    assert_int_equal(dbpool_query(c, "SELECT x FROM tls_left_behind", NULL, 0, &r, &err), DBPOOL_EQUERY);
    assert_string_equal(err.sqlstate, "42S02"); /* the temporary table is gone */
    query_text(c, "SELECT @@in_transaction", 0, v, sizeof v);
    assert_string_equal(v, "0");
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
 * attempt only, a message with `want` in it, no password. Through a lazy
 * pool's acquire, where a retried error would keep the caller waiting.
 */
static void expect_permanent(const char *url, int want_code, const char *want) {
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
    fprintf(stderr, "  %s -> %s (native %d) after %lld ms: %s\n", want, dbpool_errname(rc), err.native_code,
            (long long)took, err.message);
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
    const char *modes[] = {"VERIFY_CA", "VERIFY_IDENTITY", "REQUIRED"};
    for (size_t i = 0; i < sizeof modes / sizeof *modes; i++) {
        char extra[1200];
        snprintf(extra, sizeof extra, "ssl-mode=%s&ssl-ca=%s", modes[i], other_ca);
        expect_permanent(dbt_backend_url_with("mysql", extra), DBPOOL_EAUTH, "ssl-ca");
    }
}

/* The command's advice for a certificate that fails the check. */
static void test_cli_blames_tls(void **state) {
    (void)state;
    char extra[1200];
    snprintf(extra, sizeof extra, "ssl-mode=VERIFY_IDENTITY&ssl-ca=%s", other_ca);
    dbt_tls_expect_cli_blames_tls(dbt_backend_url_with("mysql", extra));
}

/* A name of this machine that resolves to 127.0.0.1 only and that the
 * certificate (localhost, 127.0.0.1) does not list, or NULL. */
static const char *other_local_name(void) {
    static char name[256];
    if (gethostname(name, sizeof name) != 0 || !name[0] || strcmp(name, "localhost") == 0)
        return NULL;
    name[sizeof name - 1] = '\0';
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(name, NULL, &hints, &res) != 0 || !res)
        return NULL;
    bool only_loopback = true;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)a->ai_addr;
        if (a->ai_family != AF_INET || in->sin_addr.s_addr != htonl(INADDR_LOOPBACK))
            only_loopback = false;
    }
    freeaddrinfo(res);
    return only_loopback ? name : NULL;
}

static void test_other_host_name_is_permanent(void **state) {
    (void)state;
    const char *name = other_local_name();
    if (!name) {
        fprintf(stderr, "  skipped: this machine's name does not resolve to 127.0.0.1 alone\n");
        skip();
    }
    /* The test URL with its host replaced by the name. */
    const char *base = dbt_backend_url("mysql");
    const char *at = strrchr(base, '@');
    const char *ip = strstr(at ? at : base, "127.0.0.1");
    if (!ip)
        skip();
    char url[2048];
    snprintf(url, sizeof url, "%.*s%s%s%sssl-mode=VERIFY_IDENTITY&ssl-ca=%s", (int)(ip - base), base, name,
             ip + strlen("127.0.0.1"), strchr(base, '?') ? "&" : "?", ca);
    expect_permanent(url, DBPOOL_EAUTH, name);
}

static void test_missing_ca_file_is_invalid(void **state) {
    (void)state;
    const char *modes[] = {"VERIFY_IDENTITY", "REQUIRED"};
    for (size_t i = 0; i < sizeof modes / sizeof *modes; i++) {
        char extra[1200];
        snprintf(extra, sizeof extra, "ssl-mode=%s&ssl-ca=%s/no-such-ca.pem", modes[i], dbt_tmpdir());
        expect_permanent(dbt_backend_url_with("mysql", extra), DBPOOL_EINVAL, "ssl-ca");
        expect_permanent(dbt_backend_url_with("mysql", extra), DBPOOL_EINVAL, "no-such-ca.pem");
    }
    char extra[1200];
    snprintf(extra, sizeof extra, "ssl-mode=REQUIRED&ssl-cert=%s/no-such.crt&ssl-key=%s/no-such.key",
             dbt_tmpdir(), dbt_tmpdir());
    expect_permanent(dbt_backend_url_with("mysql", extra), DBPOOL_EINVAL, "no-such.crt");
}

/* The server's greeting arrives, then nothing: the TLS handshake never
 * completes, and connect_timeout_ms ends the attempt (docs/design.md: up to
 * a second late when the greeting was already there). */
static void test_stalled_handshake_bounded(void **state) {
    (void)state;
    dbt_tls_expect_handshake_bounded("mysql", "ssl-mode=REQUIRED", DBT_PROXY_GREET, 0, 400, 350,
                                     "stalled handshake");
}

/* ---- An encrypted client key never makes the connect ask for its passphrase ---- */

static void test_encrypted_key_never_prompts(void **state) {
    (void)state;
    char crt[1024], key[1024];
    dbt_tls_client_files_or_skip(ca, crt, key, sizeof crt);
    char extra[3000];
    snprintf(extra, sizeof extra, "ssl-mode=REQUIRED&ssl-cert=%s&ssl-key=%s", crt, key);
    dbt_tls_expect_no_prompt(dbt_backend_url_with("mysql", extra), "encrypted");
    /* Nor when ssl-cert alone holds the certificate and its encrypted key
     * (Connector/C then reads the key from ssl-cert). */
    char both[1200];
    snprintf(both, sizeof both, "%s/cert-and-key.pem", dbt_tmpdir());
    FILE *out = fopen(both, "w");
    assert_non_null(out);
    const char *parts[] = {crt, key};
    for (size_t i = 0; i < 2; i++) {
        FILE *in = fopen(parts[i], "r");
        assert_non_null(in);
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, in)) > 0)
            assert_int_equal(fwrite(buf, 1, n, out), n);
        fclose(in);
    }
    assert_int_equal(fclose(out), 0);
    snprintf(extra, sizeof extra, "ssl-mode=REQUIRED&ssl-cert=%s", both);
    dbt_tls_expect_no_prompt(dbt_backend_url_with("mysql", extra),
                             "the key in the ssl-cert file is encrypted");
}

/* A pooled TLS connection whose peer goes silent: validation before the
 * next hand-out ends at validation_timeout_ms (OpenSSL must not block in a
 * read the deadline cannot reach), the connection is replaced, and the
 * acquire gets a new one once the peer answers again. */
/* The connect (which may have made the socket non-blocking for its TLS
 * handshake) left it blocking, as Connector/C expects it. */
static void socket_left_blocking(dbpool_conn *c) {
    int fd = (int)mysql_get_socket((MYSQL *)dbpool_conn_native(c));
    assert_true(fd >= 0);
    assert_int_equal(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
}

static void test_silent_peer_validation_bounded(void **state) {
    (void)state;
    dbt_tls_expect_silent_peer_bounded("mysql", "ssl-mode=REQUIRED", session_encrypted, socket_left_blocking);
}

static void test_tls_offer_taken_away(void **state) {
    (void)state;
    dbt_proxy *px = dbt_proxy_start("127.0.0.1", dbt_url_port("mysql"));
    assert_non_null(px);
    dbt_proxy_set_mode(px, DBT_PROXY_NOTLS, 0);
    bool encrypted = true;
    dbpool_error err;
    /* PREFERRED falls back to plaintext (docs/configuration.md). */
    assert_int_equal(
        dbt_tls_connect_stripped("mysql", px, "ssl-mode=PREFERRED", session_encrypted, &encrypted, &err),
        DBPOOL_OK);
    assert_false(encrypted);
    /* REQUIRED and the verify modes refuse before logging in: nothing of
     * the login crosses the network. */
    dbt_tls_record_client(px);
    assert_int_equal(
        dbt_tls_connect_stripped("mysql", px, "ssl-mode=REQUIRED", session_encrypted, &encrypted, &err),
        DBPOOL_EAUTH);
    dbt_tls_expect_no_login_in_clear("mysql", px);
    assert_non_null(strstr(err.message, "does not offer TLS"));
    /* Nor when the greeting also loses CLIENT_PLUGIN_AUTH (Connector/C
     * would then compute the login with its built-in plugin; this
     * greeting, edited, is one it cannot parse either: see
     * test_greeting_without_plugin_auth for a well-formed one). */
    dbt_proxy_notls_clear(px, 1u << 19);
    dbt_tls_record_client(px);
    assert_int_not_equal(
        dbt_tls_connect_stripped("mysql", px, "ssl-mode=REQUIRED", session_encrypted, &encrypted, &err),
        DBPOOL_OK);
    dbt_tls_expect_no_login_in_clear("mysql", px);
    dbt_proxy_notls_clear(px, 0);
    char q[1200];
    snprintf(q, sizeof q, "ssl-mode=VERIFY_IDENTITY&ssl-ca=%s", ca);
    dbt_tls_record_client(px);
    assert_int_equal(dbt_tls_connect_stripped("mysql", px, q, session_encrypted, &encrypted, &err),
                     DBPOOL_EAUTH);
    dbt_tls_expect_no_login_in_clear("mysql", px);
    assert_non_null(strstr(err.message, "the server does not support it"));
    dbt_proxy_destroy(px);
}

/* ---- A fake server whose greeting lacks CLIENT_PLUGIN_AUTH ---- */

/* It listens on 127.0.0.1, sends one connection a greeting with the given
 * capabilities (an old server's, or a fake's: no CLIENT_PLUGIN_AUTH, so
 * Connector/C computes the login with its built-in plugin) and records
 * what the client sends until it closes, or 5 s. */
typedef struct fake_server {
    int fd;
    int port;
    unsigned caps;
    unsigned char got[4096];
    size_t n;
    pthread_t thread;
} fake_server;

static void *fake_main(void *arg) {
    fake_server *f = arg;
    struct pollfd pl = {f->fd, POLLIN, 0};
    if (poll(&pl, 1, 10000) != 1)
        return NULL;
    int c = accept(f->fd, NULL, NULL);
    if (c < 0)
        return NULL;
    unsigned char g[128];
    size_t n = 4;
    g[n++] = 10; /* protocol */
    memcpy(g + n, "5.1.73", 7);
    n += 7;
    memcpy(g + n, "\x07\0\0\0", 4); /* thread id */
    n += 4;
    memcpy(g + n, "abcdefgh", 8); /* scramble, first part */
    n += 8;
    g[n++] = 0;
    g[n++] = (unsigned char)(f->caps & 0xff);
    g[n++] = (unsigned char)((f->caps >> 8) & 0xff);
    g[n++] = 8; /* latin1 */
    g[n++] = 2; /* SERVER_STATUS_AUTOCOMMIT */
    g[n++] = 0;
    g[n++] = (unsigned char)((f->caps >> 16) & 0xff);
    g[n++] = (unsigned char)((f->caps >> 24) & 0xff);
    g[n++] = 0;
    memset(g + n, 0, 10);
    n += 10;
    memcpy(g + n, "ijklmnopqrst", 13); /* scramble, second part, and its NUL */
    n += 13;
    g[0] = (unsigned char)(n - 4);
    g[1] = g[2] = 0;
    g[3] = 0; /* sequence */
    if (write(c, g, n) == (ssize_t)n) {
        int64_t until = dbt_now_ms() + 5000;
        for (;;) {
            int64_t left = until - dbt_now_ms();
            struct pollfd pc = {c, POLLIN, 0};
            if (left <= 0 || poll(&pc, 1, (int)left) != 1)
                break;
            ssize_t r = read(c, f->got + f->n, sizeof f->got - f->n);
            if (r <= 0)
                break;
            f->n += (size_t)r;
            if (f->n == sizeof f->got)
                break;
        }
    }
    close(c);
    return NULL;
}

static void fake_start(fake_server *f, unsigned caps) {
    memset(f, 0, sizeof *f);
    f->caps = caps;
    f->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(f->fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(f->fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(f->fd, 4), 0);
    assert_int_equal(getsockname(f->fd, (struct sockaddr *)&a, &len), 0);
    f->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&f->thread, NULL, fake_main, f), 0);
}

static bool sent(const fake_server *f, const char *s) {
    size_t k = strlen(s);
    for (size_t i = 0; k && i + k <= f->n; i++)
        if (memcmp(f->got + i, s, k) == 0)
            return true;
    return false;
}

static void test_greeting_without_plugin_auth(void **state) {
    (void)state;
    /* CLIENT_LONG_PASSWORD, FOUND_ROWS, LONG_FLAG, CONNECT_WITH_DB,
     * PROTOCOL_41, TRANSACTIONS, SECURE_CONNECTION, MULTI_STATEMENTS,
     * MULTI_RESULTS; with and without CLIENT_SSL (0x800). */
    const unsigned base = 0x1u | 0x2u | 0x4u | 0x8u | 0x200u | 0x2000u | 0x8000u | 0x10000u | 0x20000u;
    const unsigned caps[] = {base, base | 0x800u};
    for (size_t i = 0; i < 2; i++) {
        fake_server f;
        fake_start(&f, caps[i]);
        char url[3000];
        const char *via = dbt_url_via_port("mysql", f.port);
        snprintf(url, sizeof url, "%s%sssl-mode=REQUIRED", via, strchr(via, '?') ? "&" : "?");
        dbpool_options o;
        dbt_options(&o, 0, 1);
        o.lazy_connect = true;
        o.max_retries = 0;
        o.connect_timeout_ms = 1000; /* the fake cannot answer a TLS handshake */
        o.acquire_timeout_ms = 3000;
        dbpool *p = dbt_tls_open_ok(url, &o);
        dbpool_conn *c = NULL;
        dbpool_error err;
        int rc = dbpool_acquire(p, -1, &c, &err);
        dbpool_close(p);
        pthread_join(f.thread, NULL);
        close(f.fd);
        dbt_scrub_secrets(err.message, sizeof err.message, NULL);
        fprintf(stderr, "  greeting without CLIENT_PLUGIN_AUTH, %s CLIENT_SSL -> %s: %s; %zu bytes sent\n",
                i ? "with" : "without", dbpool_errname(rc), err.message, f.n);
        assert_int_not_equal(rc, DBPOOL_OK);
        /* Nothing of the login: the user name is in the clear in it. */
        assert_false(sent(&f, "dbpool"));
        if (i == 0)
            assert_non_null(strstr(err.message, "does not offer TLS"));
    }
}

/* Client certificate files OpenSSL cannot use: a "key" that is a
 * certificate, a certificate without its key. A wrong URL: not retried,
 * and the message names the keys to check. */
static void test_bad_client_files_are_invalid(void **state) {
    (void)state;
    char extra[3000];
    snprintf(extra, sizeof extra, "ssl-mode=REQUIRED&ssl-cert=%s&ssl-key=%s", ca, other_ca);
    expect_permanent(dbt_backend_url_with("mysql", extra), DBPOOL_EINVAL, "ssl-key");
    char crt[1024];
    if (dbt_tls_next_to_ca(ca, "client.crt", crt, sizeof crt)) {
        snprintf(extra, sizeof extra, "ssl-mode=REQUIRED&ssl-cert=%s", crt);
        expect_permanent(dbt_backend_url_with("mysql", extra), DBPOOL_EINVAL, "ssl-key");
    }
}

/* A peer that keeps the TLS handshake alive a byte at a time, each well
 * within any socket timeout, and never finishes it: connect_timeout_ms
 * still ends the attempt. (The greeting comes late too, as over any real
 * network.) Asserted before the pool is closed: a connect stuck in the
 * handshake would hold the close. */
static void test_trickled_handshake_bounded(void **state) {
    (void)state;
    dbt_tls_expect_handshake_bounded("mysql", "ssl-mode=REQUIRED", DBT_PROXY_TRICKLE, 100, 1000, 0,
                                     "trickled handshake");
}

/* A CA named by a path relative to the working directory at dbpool_open
 * still works for connections opened after the program changed directory
 * (as a daemon does), as an SQLite path does. */
static void test_relative_ca_path_survives_chdir(void **state) {
    (void)state;
    dbt_tls_expect_relative_ca_survives_chdir("mysql", ca,
                                              "ssl-mode=VERIFY_IDENTITY&ssl-ca=", session_encrypted);
}

/* A TLS session the server ended (KILL, a restart): OpenSSL writes the
 * socket with write(), which raised SIGPIPE in the caller's thread on the
 * next statement or close. Connector/C sets SIGPIPE to "ignore" when it
 * starts, but an application that puts the default action back (as
 * threading.md shows) was killed (status 141), and one with a SIGPIPE
 * handler of its own had it run. Here: the application's handler. */
static volatile sig_atomic_t app_sigpipes;
static void count_sigpipe(int sig) {
    (void)sig;
    app_sigpipes++;
}

static void test_killed_tls_session_raises_no_sigpipe(void **state) {
    (void)state;
    char extra[1200];
    snprintf(extra, sizeof extra, "ssl-mode=VERIFY_CA&ssl-ca=%s", ca);
    dbpool_options o;
    dbt_options(&o, 1, 1);
    o.maintenance_interval_ms = 0;
    dbpool *p = dbt_tls_open_ok(dbt_backend_url_with("mysql", extra), &o);
    dbpool_conn *c = dbt_acquire(p);
    assert_true(session_encrypted(c));
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = count_sigpipe;
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGPIPE, &sa, &old), 0);
    app_sigpipes = 0;
    char msg[256];
    int killed = dbt_kill_user_sessions("mysql", msg, sizeof msg);
    int rcs[3];
    for (int i = 0; i < 3; i++) {
        dbpool_error e;
        rcs[i] = dbpool_exec(c, "SELECT 1", NULL, 0, NULL, &e);
    }
    dbpool_release(c); /* closes the broken connection */
    dbpool_close(p);
    int got = app_sigpipes;
    sigaction(SIGPIPE, &old, NULL);
    if (killed < 1)
        fail_msg("could not kill the session: %s", msg);
    assert_int_equal(rcs[0], DBPOOL_EBROKEN);
    if (got != 0)
        fail_msg(
            "the application's SIGPIPE handler ran %d times for the pool's writes on a TLS connection the "
            "server had closed (with the default action the process would have died)",
            got);
}

int main(void) {
    (void)dbt_backend_url("mysql");
    ca = getenv("DBPOOL_TEST_MYSQL_SSL_CA");
    other_ca = getenv("DBPOOL_TEST_MYSQL_SSL_OTHER_CA");
    if (!ca || !*ca || !other_ca || !*other_ca) {
        fprintf(stderr, "skipped: DBPOOL_TEST_MYSQL_SSL_CA / DBPOOL_TEST_MYSQL_SSL_OTHER_CA not set (start "
                        "the server with DBPOOL_TEST_TLS=1 scripts/mysql-server.sh start DIR)\n");
        return DBT_SKIP;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ssl_modes_encrypt),
        cmocka_unit_test(test_pooled_tls_reused_validated_reset),
        cmocka_unit_test(test_wrong_ca_is_permanent),
        cmocka_unit_test(test_cli_blames_tls),
        cmocka_unit_test(test_other_host_name_is_permanent),
        cmocka_unit_test(test_missing_ca_file_is_invalid),
        cmocka_unit_test(test_stalled_handshake_bounded),
        cmocka_unit_test(test_trickled_handshake_bounded),
        cmocka_unit_test(test_relative_ca_path_survives_chdir),
        cmocka_unit_test(test_encrypted_key_never_prompts),
        cmocka_unit_test(test_silent_peer_validation_bounded),
        cmocka_unit_test(test_tls_offer_taken_away),
        cmocka_unit_test(test_greeting_without_plugin_auth),
        cmocka_unit_test(test_bad_client_files_are_invalid),
        cmocka_unit_test(test_killed_tls_session_raises_no_sigpipe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#else

int main(void) {
    fprintf(stderr, "skipped: this build has no MySQL backend\n");
    return DBT_SKIP;
}

#endif
