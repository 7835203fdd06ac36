/* `dbpool demo`, `dbpool check` and `dbpool bench` against each backend:
 * the same JSON shape everywhere, the server's version under a key naming
 * the backend, and no password in anything the command prints. */
#include "cli_run.h"
#include "testsupport.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <math.h>
#include <signal.h>

#define SAMPLE DBPOOL_SOURCE_DIR "/data/sample_input.txt"

static const char *backend;
static char url[1024];
static char password[256];

static const char *backend_name(void) {
    return strcmp(backend, "pg") == 0 ? "postgresql" : strcmp(backend, "mysql") == 0 ? "mysql" : "sqlite";
}

static const char *version_key(void) {
    return strcmp(backend, "pg") == 0      ? "postgresql_version"
           : strcmp(backend, "mysql") == 0 ? "mysql_version"
                                           : "sqlite_version";
}

/* The password of a URL "scheme://user:password@host...", or "". */
static void find_password(const char *u, char *out, size_t cap) {
    out[0] = '\0';
    const char *s = strstr(u, "://");
    const char *at = s ? strrchr(s, '@') : NULL;
    const char *colon = s ? strchr(s + 3, ':') : NULL;
    if (at && colon && colon < at)
        snprintf(out, cap, "%.*s", (int)(at - colon - 1), colon + 1);
}

static void assert_no_password(const dbt_run *r) {
    if (password[0] && (strstr(r->out, password) || strstr(r->err, password)))
        fail_msg("the password appears in the command's output");
}

static void test_demo(void **state) {
    (void)state;
    char out_path[600];
    snprintf(out_path, sizeof out_path, "%s/demo-%s.json", dbt_tmpdir(), backend);
    const char *args[] = {"demo", "--input", SAMPLE, "--output", out_path, "--db", url, "--reset", NULL};
    dbt_run r = dbt_run_cli(args);
    if (r.status != 0)
        fail_msg("demo exited %d: %s", r.status, r.err);
    assert_no_password(&r);
    json_t *doc = dbt_json_parse(r.out);
    assert_int_equal(json_integer_value(json_object_get(doc, "rows_inserted")), 7);
    json_t *rows = json_object_get(doc, "rows");
    assert_int_equal(json_array_size(rows), 7);
    for (size_t i = 0; i < 7; i++)
        assert_int_equal(json_integer_value(json_object_get(json_array_get(rows, i), "id")),
                         (json_int_t)i + 1);
    json_t *health = json_object_get(doc, "health");
    assert_string_equal(json_string_value(json_object_get(health, "status")), "healthy");
    const char *version = json_string_value(json_object_get(health, version_key()));
    assert_non_null(version);
    assert_true(strlen(version) > 0);
    json_t *stats = json_object_get(doc, "pool_stats");
    assert_true(json_integer_value(json_object_get(stats, "created")) >= 1);
    assert_true(json_integer_value(json_object_get(stats, "reused")) >= 1);
    json_decref(doc);
    dbt_run_free(&r);
}

static void test_check(void **state) {
    (void)state;
    const char *args[] = {"check", url, NULL};
    dbt_run r = dbt_run_cli(args);
    if (r.status != 0)
        fail_msg("check exited %d: %s %s", r.status, r.out, r.err);
    assert_no_password(&r);
    json_t *doc = dbt_json_parse(r.out);
    assert_string_equal(json_string_value(json_object_get(doc, "status")), "healthy");
    assert_non_null(json_string_value(json_object_get(doc, version_key())));
    json_decref(doc);
    dbt_run_free(&r);
}

static void test_check_wrong_password(void **state) {
    (void)state;
    if (!password[0])
        skip();
    /* Same URL, another password: an authentication error, reported at
     * once, with neither password in it. */
    char wrong[1100];
    const char *at = strrchr(url, '@');
    const char *colon = strchr(strstr(url, "://") + 3, ':');
    snprintf(wrong, sizeof wrong, "%.*sWr0ngPassw0rd%s", (int)(colon + 1 - url), url, at);
    const char *args[] = {"check", wrong, "--timeout", "10", NULL};
    int64_t t0 = dbt_now_ms();
    dbt_run r = dbt_run_cli(args);
    assert_true(dbt_now_ms() - t0 < 5000);
    assert_int_equal(r.status, 1);
    assert_no_password(&r);
    if (strstr(r.out, "Wr0ngPassw0rd") || strstr(r.err, "Wr0ngPassw0rd"))
        fail_msg("the wrong password appears in the output");
    json_t *doc = dbt_json_parse(r.out);
    assert_string_equal(json_string_value(json_object_get(doc, "status")), "unhealthy");
    const char *code = json_string_value(json_object_get(doc, "error_code"));
    if (!code || strcmp(code, "DBPOOL_EAUTH") != 0)
        fail_msg("expected DBPOOL_EAUTH, got %s: %s", code ? code : "(none)", r.out);
    json_decref(doc);
    dbt_run_free(&r);
}

static json_int_t get_int(const json_t *obj, const char *key) {
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v))
        fail_msg("\"%s\" is missing or not an integer", key);
    return json_integer_value(v);
}

/* A bench run that must succeed: its JSON (caller frees), nothing on
 * stderr, no password anywhere, no failed op, within bound_ms. */
static json_t *bench_ok(const char *const *args, int64_t bound_ms) {
    int64_t t0 = dbt_now_ms();
    dbt_run r = dbt_run_cli(args);
    int64_t took = dbt_now_ms() - t0;
    if (r.status != 0 || r.err[0])
        fail_msg("bench exited %d: %s", r.status, r.err);
    assert_no_password(&r);
    if (took > bound_ms)
        fail_msg("bench took %lld ms (bound %lld)", (long long)took, (long long)bound_ms);
    json_t *doc = dbt_json_parse(r.out);
    dbt_run_free(&r);
    assert_string_equal(json_string_value(json_object_get(doc, "backend")), backend_name());
    assert_true(get_int(doc, "ops") > 0);
    if (get_int(doc, "errors") != 0)
        fail_msg("%lld failed ops: %s", (long long)get_int(doc, "errors"),
                 json_dumps(json_object_get(doc, "error_messages"), 0));
    return doc;
}

/* The scenarios of a load test on a real database: 50 workers running a
 * statement, 1000 callers on a pool of 10, a burst of 10,000 acquisitions,
 * and a connection per query. Figures are checked for sense, never for
 * speed: every op acquired once, the pool never above its size, the op
 * count what ops/s over the elapsed time says. */
static void test_bench(void **state) {
    (void)state;
    json_t *doc = bench_ok((const char *[]){"bench", url, "--mode", "statement", "--threads", "50",
                                            "--pool-size", "5", "--duration", "0.5", "--json", NULL},
                           15000);
    json_int_t ops = get_int(doc, "ops");
    json_t *stats = json_object_get(doc, "pool_stats");
    assert_int_equal(get_int(stats, "acquired"), ops);
    assert_int_equal(get_int(doc, "pool_size"), 5);
    assert_true(get_int(doc, "peak_in_use") <= 5);
    assert_true(get_int(doc, "connections_created") <= 5);
    assert_int_equal(get_int(json_object_get(doc, "op_latency_ms"), "count"), ops);
    double per_s = (double)get_int(doc, "ops_per_s"),
           elapsed = json_number_value(json_object_get(doc, "elapsed_s"));
    if (fabs(per_s * elapsed - (double)ops) > 0.01 * (double)ops + 1)
        fail_msg("ops/s %.0f over %.3f s is not the %lld ops", per_s, elapsed, (long long)ops);
    json_decref(doc);

    doc = bench_ok((const char *[]){"bench", url, "--mode", "statement", "--threads", "1000", "--pool-size",
                                    "10", "--duration", "0.5", "--json", NULL},
                   20000);
    assert_int_equal(get_int(doc, "threads"), 1000);
    assert_true(get_int(doc, "peak_in_use") <= 10);
    json_decref(doc);

    doc = bench_ok((const char *[]){"bench", url, "--burst", "10000", "--threads", "100", "--pool-size", "10",
                                    "--json", NULL},
                   30000);
    assert_int_equal(get_int(doc, "ops"), 10000);
    assert_true(json_is_true(json_object_get(json_object_get(doc, "burst"), "completed")));
    json_decref(doc);

    doc = bench_ok((const char *[]){"bench", url, "--mode", "connect-per-query", "--threads", "2",
                                    "--duration", "0.3", "--json", NULL},
                   15000);
    assert_int_equal(get_int(doc, "connections_created"), get_int(doc, "ops"));
    json_decref(doc);
}

/*
 * A reader that goes away (`| head`) ends each command the same way on
 * every backend: quietly, killed by SIGPIPE after cleaning up. Connector/C
 * ignores SIGPIPE for the whole process on its first connect, so on
 * MariaDB stat printed "cannot write to stdout (Broken pipe)" and exited 1
 * where SQLite and PostgreSQL died silently at the write.
 */
static void expect_pipe_end(const char *const *args, size_t keep) {
    char *err = NULL;
    int64_t took;
    int status = dbt_run_cli_pipe_closed(args, keep, false, &err, &took);
    assert_no_password(&(dbt_run){.status = status, .out = (char *)"", .err = err});
    if (status != 128 + SIGPIPE || err[0] || took > 15000)
        fail_msg("dbpool %s on %s into a closed pipe: exit %d after %lld ms, stderr: %s", args[0], backend,
                 status, (long long)took, err);
    free(err);
}

static void test_closed_pipe(void **state) {
    (void)state;
    expect_pipe_end((const char *[]){"stat", url, "0.05", "1000", NULL}, 10);
    expect_pipe_end(
        (const char *[]){"bench", url, "--mode", "statement", "--duration", "0.2", "--json", NULL}, 0);
    expect_pipe_end((const char *[]){"check", url, NULL}, 0);
}

int main(int argc, char **argv) {
    backend = dbt_backend_arg(argc, argv);
    snprintf(url, sizeof url, "%s", dbt_backend_url(backend));
    find_password(url, password, sizeof password);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_demo),
        cmocka_unit_test(test_check),
        cmocka_unit_test(test_check_wrong_password),
        cmocka_unit_test(test_bench),
        cmocka_unit_test(test_closed_pipe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
