/* tls_cases.c — see tls_cases.h. */
#include "tls_cases.h"

#include "cli_run.h"
#include "servers.h"
#include "testsupport.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

dbpool *dbt_tls_open_ok(const char *url, dbpool_options *o) {
    dbpool *p = NULL;
    dbpool_error err;
    int rc = dbpool_open(&p, url, o, &err);
    if (rc != DBPOOL_OK) {
        dbt_scrub_secrets(err.message, sizeof err.message, NULL);
        fail_msg("dbpool_open: %s: %s", dbpool_errname(rc), err.message);
    }
    return p;
}

void dbt_tls_url_via_proxy(const char *backend, const dbt_proxy *px, const char *require, char *url,
                           size_t len) {
    const char *via = dbt_url_via_port(backend, dbt_proxy_port(px));
    snprintf(url, len, "%s%s%s", via, strchr(via, '?') ? "&" : "?", require);
}

typedef struct acquire_job {
    dbpool *p;
    int rc;
    dbpool_error err;
    bool done;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} acquire_job;

static void *acquire_main(void *arg) {
    acquire_job *j = arg;
    dbpool_conn *c = NULL;
    dbpool_error err;
    int rc = dbpool_acquire(j->p, -1, &c, &err);
    if (rc == DBPOOL_OK)
        dbpool_release(c);
    pthread_mutex_lock(&j->mu);
    j->rc = rc;
    j->err = err;
    j->done = true;
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

void dbt_tls_expect_no_prompt(const char *url, const char *want) {
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.lazy_connect = true;
    o.acquire_timeout_ms = 5000;
    o.max_retries = 3;
    o.backoff_base_ms = 1000;
    o.backoff_max_ms = 1000;
    dbpool *p = dbt_tls_open_ok(url, &o);

    char errpath[1024];
    snprintf(errpath, sizeof errpath, "%s/stderr.txt", dbt_tmpdir());
    int in[2];
    assert_int_equal(pipe(in), 0);
    int errfd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(errfd >= 0);
    fflush(stderr);
    int saved_in = dup(0), saved_err = dup(2);
    assert_true(saved_in >= 0 && saved_err >= 0);
    dup2(in[0], 0);
    dup2(errfd, 2);

    acquire_job j = {.p = p, .done = false};
    pthread_mutex_init(&j.mu, NULL);
    pthread_cond_init(&j.cv, NULL);
    pthread_t t;
    bool started = pthread_create(&t, NULL, acquire_main, &j) == 0;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&j.mu);
    while (started && !j.done && pthread_cond_timedwait(&j.cv, &j.mu, &until) == 0) {
    }
    bool done = j.done;
    pthread_mutex_unlock(&j.mu);
    /* A prompt reading stdin ends at EOF. */
    close(in[1]);

    dup2(saved_in, 0);
    dup2(saved_err, 2);
    close(saved_in);
    close(saved_err);
    close(in[0]);
    close(errfd);
    assert_true(started);
    if (!done)
        fail_msg("the connect blocked for 10 s (asking for the key's passphrase?)");
    pthread_join(t, NULL);

    char written[512] = "";
    FILE *f = fopen(errpath, "r");
    assert_non_null(f);
    size_t n = fread(written, 1, sizeof written - 1, f);
    written[n] = '\0';
    fclose(f);
    dbt_scrub_secrets(j.err.message, sizeof j.err.message, NULL);
    fprintf(stderr, "  encrypted key -> %s: %s\n", dbpool_errname(j.rc), j.err.message);
    if (n > 0)
        fail_msg("the connect wrote to stderr: %s", written);
    assert_int_equal(j.rc, DBPOOL_EINVAL);
    assert_non_null(strstr(j.err.message, want));
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.connect_errors, 1);
    pthread_cond_destroy(&j.cv);
    pthread_mutex_destroy(&j.mu);
    dbpool_close(p);
}

const char *dbt_tls_next_to_ca(const char *ca, const char *name, char *buf, size_t len) {
    const char *slash = strrchr(ca, '/');
    snprintf(buf, len, "%.*s/%s", slash ? (int)(slash - ca) : 1, slash ? ca : ".", name);
    return access(buf, R_OK) == 0 ? buf : NULL;
}

void dbt_tls_client_files_or_skip(const char *ca, char *crt, char *key, size_t len) {
    if (!dbt_tls_next_to_ca(ca, "client.crt", crt, len) || !dbt_tls_next_to_ca(ca, "client.key", key, len)) {
        fprintf(stderr,
                "  skipped: no client.crt/client.key next to the CA (an older scripts/tls-certs.sh)\n");
        skip();
    }
}

void dbt_tls_expect_handshake_bounded(const char *backend, const char *require, dbt_proxy_mode mode,
                                      int64_t delay_ms, int64_t connect_timeout_ms, int64_t min_ms,
                                      const char *what) {
    dbt_proxy *px = dbt_proxy_start("127.0.0.1", dbt_url_port(backend));
    assert_non_null(px);
    dbt_proxy_set_mode(px, mode, delay_ms);
    char url[2048];
    dbt_tls_url_via_proxy(backend, px, require, url, sizeof url);
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.lazy_connect = true;
    o.connect_timeout_ms = connect_timeout_ms;
    o.max_retries = 0;
    o.acquire_timeout_ms = 10000;
    dbpool *p = dbt_tls_open_ok(url, &o);
    dbpool_conn *c = NULL;
    dbpool_error err;
    int64_t t0 = dbt_now_ms();
    int rc = dbpool_acquire(p, -1, &c, &err);
    int64_t took = dbt_now_ms() - t0;
    dbt_scrub_secrets(err.message, sizeof err.message, NULL);
    fprintf(stderr, "  %s: %s after %lld ms: %s\n", what, dbpool_errname(rc), (long long)took, err.message);
    long accepted = dbt_proxy_accepted(px);
    dbpool_close(p);
    dbt_proxy_destroy(px);
    assert_int_equal(rc, DBPOOL_ETIMEDOUT);
    assert_true(took >= min_ms);
    assert_true(took < 2500);
    assert_true(accepted >= 1);
}

void dbt_tls_expect_silent_peer_bounded(const char *backend, const char *require,
                                        dbt_tls_encrypted_fn encrypted, void (*check)(dbpool_conn *c)) {
    dbt_proxy *px = dbt_proxy_start("127.0.0.1", dbt_url_port(backend));
    assert_non_null(px);
    char url[2048];
    dbt_tls_url_via_proxy(backend, px, require, url, sizeof url);
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.validation = DBPOOL_VALIDATE_ALWAYS;
    o.validation_window_ms = 0;
    o.validation_timeout_ms = 300;
    o.maintenance_interval_ms = 0;
    o.connect_timeout_ms = 2000;
    o.acquire_timeout_ms = 1500;
    dbpool *p = dbt_tls_open_ok(url, &o);
    dbpool_conn *c = dbt_acquire(p);
    assert_true(encrypted(c));
    if (check)
        check(c);
    dbpool_release(c);

    dbt_proxy_set_mode(px, DBT_PROXY_SILENT, 0);
    dbpool_error err;
    int64_t t0 = dbt_now_ms();
    int rc = dbpool_acquire(p, -1, &c, &err);
    int64_t took = dbt_now_ms() - t0;
    if (rc == DBPOOL_OK)
        dbpool_release(c);
    dbt_scrub_secrets(err.message, sizeof err.message, NULL);
    fprintf(stderr, "  silent peer: %s after %lld ms: %s\n", dbpool_errname(rc), (long long)took,
            rc == DBPOOL_OK ? "" : err.message);
    /* The validation failed within its bound, then the replacement's
     * connect found nobody answering until the acquire's timeout. */
    assert_int_not_equal(rc, DBPOOL_OK);
    assert_true(took < 1500 + 1000);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.validation_failures, 1);

    dbt_proxy_set_mode(px, DBT_PROXY_PASS, 0);
    c = dbt_acquire(p);
    assert_true(encrypted(c));
    dbpool_release(c);
    dbpool_close(p);
    dbt_proxy_destroy(px);
}

int dbt_tls_connect_stripped(const char *backend, const dbt_proxy *px, const char *query,
                             dbt_tls_encrypted_fn encrypted_fn, bool *encrypted, dbpool_error *err) {
    char url[3000];
    dbt_tls_url_via_proxy(backend, px, query, url, sizeof url);
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.lazy_connect = true;
    o.max_retries = 0;
    dbpool *p = dbt_tls_open_ok(url, &o);
    dbpool_conn *c = NULL;
    int rc = dbpool_acquire(p, -1, &c, err);
    if (rc == DBPOOL_OK) {
        *encrypted = encrypted_fn(c);
        dbpool_release(c);
    } else {
        dbt_scrub_secrets(err->message, sizeof err->message, NULL);
        fprintf(stderr, "  %s without the TLS offer -> %s: %s\n", query, dbpool_errname(rc), err->message);
    }
    dbpool_close(p);
    return rc;
}

void dbt_tls_expect_relative_ca_survives_chdir(const char *backend, const char *ca, const char *verify,
                                               dbt_tls_encrypted_fn encrypted) {
    char saved[4096], dir[4096];
    assert_non_null(getcwd(saved, sizeof saved));
    const char *slash = strrchr(ca, '/');
    assert_non_null(slash);
    snprintf(dir, sizeof dir, "%.*s", (int)(slash - ca), ca);
    assert_int_equal(chdir(dir), 0);
    char extra[1200];
    snprintf(extra, sizeof extra, "%s%s", verify, slash + 1);
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.lazy_connect = true;
    o.max_retries = 0;
    dbpool *p = dbt_tls_open_ok(dbt_backend_url_with(backend, extra), &o);
    assert_int_equal(chdir("/"), 0);
    dbpool_conn *c = NULL;
    dbpool_error err;
    int rc = dbpool_acquire(p, -1, &c, &err);
    assert_int_equal(chdir(saved), 0);
    dbt_scrub_secrets(err.message, sizeof err.message, NULL);
    if (rc != DBPOOL_OK)
        fail_msg("after chdir: %s: %s", dbpool_errname(rc), err.message);
    assert_true(encrypted(c));
    dbpool_release(c);
    dbpool_close(p);
}

void dbt_tls_record_client(dbt_proxy *px) { dbt_proxy_record(px, 1 << 16); }

/* The user name or password of a scheme://user:password@host URL into buf
 * (percent-escapes left as they are: the test URLs have none). */
static void url_part(const char *url, bool password, char *buf, size_t len) {
    buf[0] = '\0';
    const char *p = strstr(url, "://");
    if (!p)
        return;
    p += 3;
    const char *at = strchr(p, '@');
    if (!at)
        return;
    const char *colon = memchr(p, ':', (size_t)(at - p));
    const char *from = password ? (colon ? colon + 1 : at) : p;
    const char *to = password ? at : (colon ? colon : at);
    snprintf(buf, len, "%.*s", (int)(to - from), from);
}

static bool holds(const unsigned char *buf, size_t n, const char *s) {
    size_t k = strlen(s);
    for (size_t i = 0; k && i + k <= n; i++)
        if (memcmp(buf + i, s, k) == 0)
            return true;
    return false;
}

void dbt_tls_expect_no_login_in_clear(const char *backend, dbt_proxy *px) {
    int64_t until = dbt_now_ms() + 5000;
    while (dbt_proxy_active(px) > 0 && dbt_now_ms() < until) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(dbt_proxy_active(px), 0);
    static unsigned char sent[1 << 16];
    size_t n = dbt_proxy_recorded(px, sent, sizeof sent);
    if (n > sizeof sent)
        n = sizeof sent;
    char user[256], pw[256];
    url_part(dbt_backend_url(backend), false, user, sizeof user);
    url_part(dbt_backend_url(backend), true, pw, sizeof pw);
    assert_true(strlen(user) >= 3);
    bool user_seen = holds(sent, n, user);
    bool pw_seen = holds(sent, n, pw);
    fprintf(stderr,
            "  the client sent %zu bytes in the clear or encrypted; user name in the clear: %s, "
            "password: %s\n",
            n, user_seen ? "yes" : "no", pw_seen ? "yes" : "no");
    assert_false(pw_seen);
    assert_false(user_seen);
}

void dbt_tls_expect_cli_blames_tls(const char *url) {
    char out[1200];
    snprintf(out, sizeof out, "%s/tls-demo.json", dbt_tmpdir());
    dbt_run r = dbt_run_cli((const char *[]){"demo", "--input", DBPOOL_SOURCE_DIR "/data/sample_input.txt",
                                             "--output", out, "--db", url, "--timeout", "5", NULL});
    bool secret = dbt_has_secret(r.out, NULL) || dbt_has_secret(r.err, NULL);
    dbt_scrub_secrets(r.err, strlen(r.err) + 1, NULL);
    fprintf(stderr, "  dbpool demo -> exit %d: %s", r.status, r.err);
    assert_false(secret);
    assert_int_equal(r.status, 1);
    assert_null(strstr(r.err, "user and password"));
    assert_non_null(strstr(r.err, "check the TLS settings in --db"));
    dbt_run_free(&r);

    r = dbt_run_cli((const char *[]){"check", url, "--timeout", "5", NULL});
    secret = dbt_has_secret(r.out, NULL) || dbt_has_secret(r.err, NULL);
    assert_false(secret);
    assert_int_equal(r.status, 1);
    json_t *j = dbt_json_parse(r.out);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "unhealthy");
    assert_string_equal(json_string_value(json_object_get(j, "error_code")), "DBPOOL_EAUTH");
    json_decref(j);
    dbt_run_free(&r);
}
