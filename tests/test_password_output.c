/*
 * test_password_output.c — a password never appears in any output, whatever
 * its shape and however the URL around it is written (or mis-written).
 *
 * Each URL below holds a password made of distinctive pieces (MARK_A,
 * MARK_B, and a run of digits, which a URL parser may take for a port), to
 * a port on 127.0.0.1 that nothing listens on. Every such URL goes through
 * every output a user sees: dbpool_open's error (with and without a first
 * connect), the log callback at DEBUG, dbpool_acquire's error after a lazy
 * open, dbpool_stats_json, and the command's `check --verbose`, `stat` and
 * `bench --json` (stdout and stderr; the command for the main scheme of
 * each backend). No piece may show anywhere. Nothing connects beyond
 * 127.0.0.1, and no host name is looked up (the URLs that would make a
 * client library look one up are refused before it sees them).
 */
#include "cli_run.h"
#include "loopback.h"
#include "testsupport.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <pthread.h>

#define MARK_A "Mq7Zx"
#define MARK_B "Kw3Jy"

static char digits[8]; /* a valid port number, never the closed port */
static char port[8];   /* the closed port */
static int shown;      /* outputs that showed a piece, in this test */

/* The template with {A}, {B}, {D}, {P} and {S} (the scheme) filled in. */
static void fill(char *out, size_t cap, const char *tmpl, const char *scheme) {
    size_t o = 0;
    for (const char *t = tmpl; *t && o + 1 < cap;) {
        const char *with = NULL;
        if (strncmp(t, "{A}", 3) == 0)
            with = MARK_A;
        else if (strncmp(t, "{B}", 3) == 0)
            with = MARK_B;
        else if (strncmp(t, "{D}", 3) == 0)
            with = digits;
        else if (strncmp(t, "{P}", 3) == 0)
            with = port;
        else if (strncmp(t, "{S}", 3) == 0)
            with = scheme;
        if (with) {
            for (; *with && o + 1 < cap; with++)
                out[o++] = *with;
            t += 3;
        } else {
            out[o++] = *t++;
        }
    }
    out[o] = '\0';
}

/* Fails the test if `text` shows a piece of the password. The digits are
 * looked for only where no measurement can produce them by chance. */
static void expect_hidden(const char *url, const char *where, const char *text, bool look_for_digits) {
    if (!text)
        return;
    const char *piece = strstr(text, MARK_A)                      ? MARK_A
                        : strstr(text, MARK_B)                    ? MARK_B
                        : look_for_digits && strstr(text, digits) ? digits
                                                                  : NULL;
    if (piece) {
        /* All of them listed, then the test fails. */
        fprintf(stderr, "URL %s: %s shows the password's piece '%s':\n%s\n", url, where, piece, text);
        shown++;
    }
}

/* The same for every string in a JSON document (its numbers are
 * measurements), and MARK_A / MARK_B anywhere in its text. */
static void expect_hidden_json(const char *url, const char *where, const json_t *v) {
    if (json_is_string(v)) {
        expect_hidden(url, where, json_string_value(v), true);
    } else if (json_is_object(v)) {
        const char *key;
        json_t *item;
        json_object_foreach((json_t *)v, key, item) {
            expect_hidden(url, where, key, true);
            expect_hidden_json(url, where, item);
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *item;
        json_array_foreach(v, i, item) expect_hidden_json(url, where, item);
    }
}

static void expect_hidden_json_text(const char *url, const char *where, const char *text) {
    expect_hidden(url, where, text, false);
    json_error_t je;
    json_t *doc = json_loads(text, 0, &je);
    if (doc) /* not JSON (a usage error on stderr, say): checked as text */
        expect_hidden_json(url, where, doc);
    json_decref(doc);
}

/* Log lines, from any of the pool's threads. */
typedef struct log_sink {
    pthread_mutex_t lock;
    char text[65536];
    size_t len;
} log_sink;

static void to_sink(void *user, dbpool_log_level level, const char *message) {
    (void)level;
    log_sink *s = user;
    pthread_mutex_lock(&s->lock);
    int n = snprintf(s->text + s->len, sizeof s->text - s->len, "%s\n", message);
    if (n > 0)
        s->len += (size_t)n < sizeof s->text - s->len ? (size_t)n : sizeof s->text - s->len - 1;
    pthread_mutex_unlock(&s->lock);
}

static void options_for(dbpool_options *o, log_sink *sink, bool lazy) {
    dbpool_options_init(o);
    o->log_fn = to_sink;
    o->log_user = sink;
    o->log_level = DBPOOL_LOG_DEBUG;
    o->max_size = 2;
    o->max_retries = 0;
    o->connect_timeout_ms = 2000;
    o->acquire_timeout_ms = 2000;
    o->lazy_connect = lazy;
}

/* The library's outputs for one URL. */
static void through_the_library(const char *url) {
    static log_sink sink = {.lock = PTHREAD_MUTEX_INITIALIZER};
    sink.len = 0;
    sink.text[0] = '\0';
    dbpool_options o;
    dbpool_error e;

    /* dbpool_open with a first connect. */
    options_for(&o, &sink, false);
    dbpool *p = NULL;
    if (dbpool_open(&p, url, &o, &e) != DBPOOL_OK)
        expect_hidden(url, "dbpool_open's error", e.message, true);
    else
        dbpool_close(p);

    /* Lazy: the connect error reaches the caller of dbpool_acquire, and
     * the statistics are there to read. */
    options_for(&o, &sink, true);
    p = NULL;
    if (dbpool_open(&p, url, &o, &e) != DBPOOL_OK) {
        expect_hidden(url, "dbpool_open's error (lazy)", e.message, true);
    } else {
        dbpool_conn *c = NULL;
        if (dbpool_acquire(p, -1, &c, &e) != DBPOOL_OK)
            expect_hidden(url, "dbpool_acquire's error", e.message, true);
        else
            dbpool_release(c);
        char json[16384];
        assert_true(dbpool_stats_json(p, json, sizeof json) > 0);
        expect_hidden_json_text(url, "dbpool_stats_json", json);
        dbpool_close(p);
    }
    pthread_mutex_lock(&sink.lock);
    expect_hidden(url, "the log lines", sink.text, true);
    pthread_mutex_unlock(&sink.lock);
}

/* The command's outputs for one URL: `check --verbose` for each, `stat`
 * and `bench --json` (which report the same errors in their own words) for
 * every third, to keep the test short. */
static void through_the_command(const char *url) {
    static unsigned calls;
    const char *const check[] = {"check", "--verbose", "--timeout", "2", url, NULL};
    const char *const stat[] = {"stat", url, "0.1", "1", NULL};
    const char *const bench[] = {"bench", url, "--json", "--duration", "0.2", "--threads", "1", NULL};
    const char *const *const runs[] = {check, stat, bench};
    static const char *const names[] = {"dbpool check", "dbpool stat", "dbpool bench"};
    size_t nruns = calls++ % 3 == 0 ? 3 : 1;
    for (size_t i = 0; i < nruns; i++) {
        dbt_run r = dbt_run_cli(runs[i]);
        char where[64];
        snprintf(where, sizeof where, "%s's stdout", names[i]);
        expect_hidden_json_text(url, where, r.out);
        snprintf(where, sizeof where, "%s's stderr", names[i]);
        expect_hidden(url, where, r.err, true);
        dbt_run_free(&r);
    }
}

/* {S} is each of the schemes given with the list. */
static const char *const any_backend[] = {
    /* The password in the user info, with each character a URL treats
     * specially (raw or escaped), or that a quoting parser would. */
    "{S}://u:{A}/{B}@127.0.0.1:{P}/db",
    "{S}://u:{A}?{B}@127.0.0.1:{P}/db",
    "{S}://u:{A}#{B}@127.0.0.1:{P}/db",
    "{S}://u:{A}@{B}@127.0.0.1:{P}/db",
    "{S}://u:{A}:{B}@127.0.0.1:{P}/db",
    "{S}://u:{A}%2F{B}@127.0.0.1:{P}/db",
    "{S}://u:{A}%40{B}@127.0.0.1:{P}/db",
    "{S}://u:{A}%zz{B}@127.0.0.1:{P}/db",
    "{S}://u:{A}%00{B}@127.0.0.1:{P}/db",
    "{S}://u:{A}%{B}@127.0.0.1:{P}/db",
    "{S}://u:{A} {B}@127.0.0.1:{P}/db",
    "{S}://u:{A}%20{B}@127.0.0.1:{P}/db",
    "{S}://u:{A}  {B}@127.0.0.1:{P}/db",
    "{S}://u:{A}\t\t{B}@127.0.0.1:{P}/db",
    "{S}://u:{A}  {B}@[]/db",
    "{S}://u:{A}%zz  {B}@127.0.0.1:{P}/db",
    "{S}://u:{A}\n{B}@[]/db",
    "{S}://u:{A}\xc3\xa9{B}@127.0.0.1:{P}/db",
    "{S}://u:{A}%C3%A9{B}@127.0.0.1:{P}/db",
    "{S}://u:{A}&{B}@127.0.0.1:{P}/db",
    "{S}://u:{A}={B}@127.0.0.1:{P}/db",
    "{S}://u:{A}\"{B}@127.0.0.1:{P}/db",
    "{S}://u:{A}'{B}@127.0.0.1:{P}/db",
    "{S}://u:{A}\\{B}@127.0.0.1:{P}/db",
    "{S}://u:{A}[{B}@127.0.0.1:{P}/db",
    "{S}://u:{A}]{B}@127.0.0.1:{P}/db",
    "{S}://u:{A},{B}@127.0.0.1:{P}/db",
    "{S}://u:{A};{B}@127.0.0.1:{P}/db",
    "{S}://u:{A}+{B}@127.0.0.1:{P}/db",
    /* A password that starts with digits, which pass for a port, and goes
     * on with a '/', '?' or '#'. */
    "{S}://127.0.0.1:{D}/{A}@127.0.0.1:{P}/db",
    "{S}://127.0.0.1:{D}/{A}{B}@127.0.0.1:{P}",
    "{S}://127.0.0.1:{D}?{A}={B}@127.0.0.1:{P}/db",
    "{S}://127.0.0.1:{D}?sslmode={A}@127.0.0.1:{P}/db",
    "{S}://127.0.0.1:{D}?ssl-mode={A}@127.0.0.1:{P}/db",
    "{S}://127.0.0.1:{D}/x?{A}={B}@127.0.0.1:{P}/db",
    "{S}://127.0.0.1:{D}#{A}@127.0.0.1:{P}/db",
    "{S}://127.0.0.1:{D}#x?{A}={B}@127.0.0.1:{P}",
    "{S}://127.0.0.1:{D},x?{A}={B}@127.0.0.1:{P}",
    "{S}://127.0.0.1:{D}?sslmode={A}@127.0.0.1:{P}",
    "{S}://127.0.0.1:{D}?ssl-mode={A}@127.0.0.1:{P}",
    "{S}://127.0.0.1:{D}?{A}={B}@127.0.0.1:{P}?connect_timeout=1",
    "{S}://127.0.0.1:{D}?x/{A}?{B}=1@127.0.0.1:{P}",
    "{S}://127.0.0.1:{D}/x/{A}?{B}=1@127.0.0.1:{P}",
    "{S}://u:{A}@127.0.0.1:{P}#{A}={B}@127.0.0.1:{P}/db",
    /* A '@' and a '?': the piece after the '@' passes for the host. */
    "{S}://u:{A}@127.0.0.1:{P}?{B}=x@127.0.0.1:{P}/db",
    /* Malformed around a good password. */
    "{S}:u:{A}{B}@127.0.0.1:{P}/db",
    "{S}:/u:{A}{B}@127.0.0.1:{P}/db",
    "{S}://u:{A}{B}@[::1/db",
    "{S}://u:{A}{B}@127.0.0.1:99999/db",
    "{S}://u:{A}{B}@127.0.0.1:{P}/db?bogus=1",
    "{S}://u:{A}{B}@127.0.0.1:{P}/db?pool_max={A}{B}",
    "{S}://u:{A}{B}@127.0.0.1:{P}/db?pool_bogus=1",
    "{S}://u:{A}{B}@127.0.0.1:{P},127.0.0.1:{P}/db",
    "{S}://[u:{A}?k=v@127.0.0.1:{P}",
};

/* Forms only PostgreSQL has: the password as a query key. */
static const char *const pg_only[] = {
    "{S}://u@127.0.0.1:{P}/db?password={A}{B}",
    "{S}://u@127.0.0.1:{P}/db?password={A}&{B}",
    "{S}://u@127.0.0.1:{P}/db?password={A}%26{B}",
    "{S}://u@127.0.0.1:{P}/db?password={A} {B}",
    "{S}://u@127.0.0.1:{P}/db?password={A}%20{B}",
    "{S}://u@127.0.0.1:{P}/db?password={A}'{B}",
    "{S}://u@127.0.0.1:{P}/db?password={A}\"{B}",
    "{S}://u@127.0.0.1:{P}/db?password={A}\\{B}",
    "{S}://u@127.0.0.1:{P}/db?password={A}%zz{B}",
    "{S}://u@127.0.0.1:{P}/db?password={A}#{B}",
    "{S}://u@127.0.0.1:{P}/db?password={A}&password={B}", /* refused as given twice */
    "{S}://u@127.0.0.1:{P}/db?password={A};{B}",
    "{S}://u@127.0.0.1:{P}/db?password={A},{B}",
    "{S}://u@127.0.0.1:{P}/db?password={A}={B}",
    "{S}://u@127.0.0.1:{P}/db?password={A}:{B}",
    "{S}://u@127.0.0.1:{P}/db?password={A}%00{B}",
    "{S}://u@127.0.0.1:{P}/db?PASSWORD={A}{B}",
    "{S}://u@127.0.0.1:{P}/db?pass%77ord={A}{B}",
    "{S}://u@127.0.0.1:{P}/db?password={A}{B}&bogus=1",
    "{S}://u@127.0.0.1:{P}/db?password={A}{B}&sslmode=bogus",
    "{S}://u@127.0.0.1:{P}/db?password={A}{B}&pool_max=x",
    "{S}://u@127.0.0.1:{P}/db?password={A}{B}&password={B}{A}",
};

/* Not URLs at all: libpq's key=value form, which dbpool does not take. */
static const char *const not_urls[] = {
    "host=127.0.0.1 port={P} password={A}:{B}",
    "password={A}:{B} host=127.0.0.1 port={P}",
    "password='{A}:{B}' host=127.0.0.1",
    "password = '{A} \\' {B}:x' host=127.0.0.1",
    "host=127.0.0.1 password=\"{A}:{B}\"",
    "{A}:{B}@127.0.0.1:{P}/db",
    "PGPASSWORD={A}:{B}",
};

typedef void (*runner)(const char *url);

/* Each URL to run(); the schemes that are another's alias only when
 * `aliases`. */
static void run_all(runner run, bool aliases) {
    shown = 0;
    static const char *const schemes[] = {"postgresql", "mysql", "mock", "postgres", "mariadb"};
    char url[512];
    for (size_t s = 0; s < (aliases ? 5u : 3u); s++) {
        for (size_t i = 0; i < sizeof any_backend / sizeof *any_backend; i++) {
            fill(url, sizeof url, any_backend[i], schemes[s]);
            run(url);
        }
        if (strncmp(schemes[s], "postgres", 8) == 0)
            for (size_t i = 0; i < sizeof pg_only / sizeof *pg_only; i++) {
                fill(url, sizeof url, pg_only[i], schemes[s]);
                run(url);
            }
    }
    for (size_t i = 0; i < sizeof not_urls / sizeof *not_urls; i++) {
        fill(url, sizeof url, not_urls[i], "");
        run(url);
    }
    if (shown > 0)
        fail_msg("%d outputs showed a piece of the password (listed above)", shown);
}

static void test_library_outputs(void **state) {
    (void)state;
    run_all(through_the_library, true);
}

static void test_command_outputs(void **state) {
    (void)state;
    run_all(through_the_command, false);
}

static int setup(void **state) {
    (void)state;
    int closed = dbt_free_port();
    snprintf(port, sizeof port, "%d", closed);
    /* Digits a parser may take for a port: never the closed port itself. */
    snprintf(digits, sizeof digits, "%d", closed == 47293 ? 47294 : 47293);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_library_outputs),
        cmocka_unit_test(test_command_outputs),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
