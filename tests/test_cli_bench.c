/*
 * test_cli_bench.c — `dbpool bench` and `dbpool stat`, run as a user runs
 * them (a child process), their JSON parsed with jansson. Figures are
 * checked for sense (ops > 0, no errors), never against a speed.
 */
#define _XOPEN_SOURCE 700 /* posix_openpt, grantpt, unlockpt, ptsname */
#include "cli_run.h"
#include "loopback.h"
#include "servers.h"
#include "tcp_proxy.h"
#include "testsupport.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* A command left running while the test talks to it (the metrics test). */
typedef struct child {
    pid_t pid;
    char out_path[600], err_path[600];
} child;

static child spawn_cli(const char *const *args) {
    static int seq;
    child c;
    seq++;
    snprintf(c.out_path, sizeof c.out_path, "%s/bg%d.stdout", dbt_tmpdir(), seq);
    snprintf(c.err_path, sizeof c.err_path, "%s/bg%d.stderr", dbt_tmpdir(), seq);
    c.pid = dbt_spawn_cli(args, DBT_STDOUT_PATH(c.out_path), c.err_path, NULL);
    return c;
}

static dbt_run wait_cli(child *c) {
    int st;
    assert_int_equal(waitpid(c->pid, &st, 0), c->pid);
    dbt_run r;
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    r.out = dbt_slurp(c->out_path);
    r.err = dbt_slurp(c->err_path);
    assert_non_null(r.out);
    assert_non_null(r.err);
    unlink(c->out_path);
    unlink(c->err_path);
    return r;
}

static json_int_t get_int(const json_t *obj, const char *key) {
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v)) {
        fprintf(stderr, "\"%s\" is missing or not an integer\n", key);
        fail();
    }
    return json_integer_value(v);
}

static double get_num(const json_t *obj, const char *key) {
    json_t *v = json_object_get(obj, key);
    if (!json_is_number(v)) {
        fprintf(stderr, "\"%s\" is missing or not a number\n", key);
        fail();
    }
    return json_number_value(v);
}

static size_t count_char(const char *s, char c) {
    size_t n = 0;
    for (; *s; s++)
        n += *s == c;
    return n;
}

static void expect_ok(const dbt_run *r) {
    if (r->status != 0)
        fprintf(stderr, "exit %d, stderr: %s\n", r->status, r->err);
    assert_int_equal(r->status, 0);
}

/* A successful bench: parsed document (caller frees), ops > 0, no errors. */
static json_t *bench_json(const char *const *args) {
    dbt_run r = dbt_run_cli(args);
    expect_ok(&r);
    /* Not a terminal: no progress line, nothing on stderr. */
    assert_string_equal(r.err, "");
    json_t *doc = dbt_json_parse(r.out);
    dbt_run_free(&r);
    assert_true(get_int(doc, "ops") > 0);
    return doc;
}

static void assert_latency(const json_t *doc, const char *key) {
    json_t *l = json_object_get(doc, key);
    assert_true(json_is_object(l));
    assert_true(get_int(l, "count") > 0);
    double p50 = get_num(l, "p50_ms"), p95 = get_num(l, "p95_ms"), p99 = get_num(l, "p99_ms"),
           max = get_num(l, "max_ms");
    assert_true(p50 >= 0 && p50 <= p95 && p95 <= p99 && p99 <= max);
}

static void test_bench_cycle_json(void **state) {
    (void)state;
    json_t *doc = bench_json(
        (const char *[]){"bench", "sqlite::memory:", "--duration", "0.5", "--threads", "4", "--json", NULL});
    assert_string_equal(json_string_value(json_object_get(doc, "mode")), "cycle");
    assert_string_equal(json_string_value(json_object_get(doc, "backend")), "sqlite");
    assert_int_equal(get_int(doc, "threads"), 4);
    assert_int_equal(get_int(doc, "errors"), 0);
    assert_int_equal(json_object_size(json_object_get(doc, "errors_by_code")), 0);
    assert_true(get_int(doc, "ops_per_s") > 0);
    assert_true(get_num(doc, "elapsed_s") >= 0.5);
    assert_latency(doc, "acquire_wait_ms");
    assert_latency(doc, "use_time_ms");
    assert_latency(doc, "op_latency_ms");
    assert_true(get_int(doc, "connections_created") >= 1);
    assert_true(get_int(doc, "peak_in_use") >= 1 && get_int(doc, "peak_in_use") <= 4);
    assert_int_equal(get_int(doc, "timeouts"), 0);
    assert_true(json_is_null(json_object_get(doc, "burst")));
    /* Every op acquired once. */
    assert_int_equal(get_int(json_object_get(doc, "pool_stats"), "acquired"), get_int(doc, "ops"));
    json_decref(doc);
}

/*
 * Without --hold-ms nothing of the bench's own runs inside a lease: the
 * pool's use time (acquire to release) of a cycle is under half the whole
 * op's latency (a fifth here, a third under TSan). The zero-length hold read the clock twice inside every
 * lease, which made the use time of a cycle about 60 ns where the pool's
 * own part is about 10, and cut ops/s by a third. Medians of a
 * single-threaded run, compared with each other, not with a speed.
 */
static void test_bench_no_hold_no_overhead(void **state) {
    (void)state;
    json_t *doc = bench_json(
        (const char *[]){"bench", "sqlite::memory:", "--duration", "0.5", "--threads", "1", "--json", NULL});
    double use = get_num(json_object_get(doc, "use_time_ms"), "p50_ms");
    double op = get_num(json_object_get(doc, "op_latency_ms"), "p50_ms");
    if (!(use * 2 < op))
        fail_msg("use time p50 %.1f ns against an op latency p50 of %.1f ns", use * 1e6, op * 1e6);
    json_decref(doc);
}

/*
 * A lease is held as long as --hold-ms says, not tens of microseconds
 * more: a hold of 10 us lasted 84 us (median), as a sleep ends late (timer
 * slack, wake-up). The pool's own use time of the hold is compared with
 * four times the hold, far above its own overhead.
 */
static void test_bench_hold_on_time(void **state) {
    (void)state;
    json_t *doc = bench_json((const char *[]){"bench", "sqlite::memory:", "--hold-ms", "0.01", "--duration",
                                              "0.5", "--threads", "2", "--json", NULL});
    double use = get_num(json_object_get(doc, "use_time_ms"), "p50_ms");
    if (use < 0.008 || use > 0.04) /* p50 is a bucket's bound: 9.7 us for 10 */
        fail_msg("--hold-ms 0.01: use time p50 %.1f us", use * 1e3);
    json_decref(doc);
}

static void test_bench_statement(void **state) {
    (void)state;
    json_t *doc = bench_json((const char *[]){"bench", "sqlite::memory:", "--mode", "statement", "--duration",
                                              "0.3", "--threads", "2", "--json", NULL});
    assert_string_equal(json_string_value(json_object_get(doc, "mode")), "statement");
    assert_string_equal(json_string_value(json_object_get(doc, "query")), "SELECT 1");
    assert_int_equal(get_int(doc, "errors"), 0);
    json_decref(doc);

    /* --query alone means statement mode; a failing query is counted, not fatal. */
    doc = bench_json((const char *[]){"bench", "sqlite::memory:", "--query", "SELECT nope FROM nowhere",
                                      "--duration", "0.2", "--threads", "2", "--json", NULL});
    assert_string_equal(json_string_value(json_object_get(doc, "mode")), "statement");
    assert_int_equal(get_int(doc, "errors"), get_int(doc, "ops"));
    json_t *by = json_object_get(doc, "errors_by_code");
    assert_int_equal(get_int(by, "DBPOOL_EQUERY"), get_int(doc, "ops"));
    assert_true(json_is_string(json_object_get(json_object_get(doc, "error_messages"), "DBPOOL_EQUERY")));
    json_decref(doc);
}

static void test_bench_connect_per_query(void **state) {
    (void)state;
    json_t *doc = bench_json((const char *[]){"bench", "sqlite::memory:", "--mode", "connect-per-query",
                                              "--duration", "0.3", "--threads", "2", "--json", NULL});
    assert_string_equal(json_string_value(json_object_get(doc, "mode")), "connect-per-query");
    assert_int_equal(get_int(doc, "errors"), 0);
    /* One connection per op. */
    assert_int_equal(get_int(doc, "connections_created"), get_int(doc, "ops"));
    assert_true(json_is_null(json_object_get(doc, "acquire_wait_ms")));
    assert_true(json_is_null(json_object_get(doc, "handoff_delay_ms")));
    /* Each op opens its own one-connection pool: no pool size to report,
     * and not the figures of the pool opened to check the URL. */
    assert_true(json_is_null(json_object_get(doc, "pool_size")));
    assert_true(json_is_null(json_object_get(doc, "pool_stats")));
    json_decref(doc);

    dbt_run r = dbt_run_cli((const char *[]){"bench", "sqlite::memory:", "--mode", "connect-per-query",
                                             "--duration", "0.2", "--threads", "2", NULL});
    expect_ok(&r);
    if (!strstr(r.out, "mode connect-per-query, 2 threads, a new connection per op,") ||
        strstr(r.out, "pool of"))
        fprintf(stderr, "stdout: %s", r.out);
    assert_non_null(strstr(r.out, "mode connect-per-query, 2 threads, a new connection per op,"));
    assert_null(strstr(r.out, "pool of"));
    dbt_run_free(&r);
}

/* A run with leak detection in the URL (each lease held past the
 * threshold): its leak reports go to stderr with --verbose, and the
 * summary's pool_stats counts them (it had no leak figure at all). */
static void test_bench_counts_leaks(void **state) {
    (void)state;
    dbt_run r = dbt_run_cli((const char *[]){
        "bench", "sqlite::memory:?pool_leak_threshold=5&pool_maintenance_interval=5", "--hold-ms", "40",
        "--duration", "0.4", "--threads", "2", "--verbose", "--json", NULL});
    expect_ok(&r);
    json_t *doc = dbt_json_parse(r.out);
    json_t *ps = json_object_get(doc, "pool_stats");
    size_t lines = 0;
    for (const char *f = r.err; (f = strstr(f, "possible leak")) != NULL; f++)
        lines++;
    json_int_t detected = get_int(ps, "leaks_detected");
    if (detected < 1 || (size_t)detected > lines)
        fail_msg("pool_stats.leaks_detected %lld, %zu leak reports on stderr", (long long)detected, lines);
    assert_int_equal(get_int(ps, "leaks_reclaimed"), 0);
    assert_int_equal(get_int(ps, "reclaimed_out"), 0);
    json_decref(doc);
    dbt_run_free(&r);

    /* The table says it too. */
    r = dbt_run_cli((const char *[]){"bench",
                                     "sqlite::memory:?pool_leak_threshold=5&pool_maintenance_interval=5",
                                     "--hold-ms", "40", "--duration", "0.3", "--threads", "1", NULL});
    expect_ok(&r);
    if (!strstr(r.out, "leaks detected"))
        fail_msg("the summary table does not count the leaks: %s", r.out);
    dbt_run_free(&r);
}

static void test_bench_oversubscribed(void **state) {
    (void)state;
    json_t *doc = bench_json((const char *[]){"bench", "sqlite::memory:", "--threads", "200", "--pool-size",
                                              "4", "--duration", "0.5", "--json", NULL});
    /* Timeouts may happen on a slow machine; nothing else may fail. */
    json_t *by = json_object_get(doc, "errors_by_code");
    const char *key;
    json_t *v;
    json_object_foreach(by, key, v) { assert_string_equal(key, "DBPOOL_ETIMEDOUT"); }
    assert_int_equal(get_int(doc, "errors"), get_int(doc, "timeouts"));
    assert_true(get_int(doc, "peak_in_use") <= 4);
    assert_true(get_int(json_object_get(doc, "pool_stats"), "total") <= 4);
    /* 200 callers on 4 connections: releases hand over to waiters. */
    assert_latency(doc, "handoff_delay_ms");
    json_decref(doc);

    /* The headline: a thousand concurrent callers. */
    doc = bench_json((const char *[]){"bench", "sqlite::memory:", "--threads", "1000", "--pool-size", "10",
                                      "--duration", "0.3", "--json", NULL});
    assert_int_equal(get_int(doc, "threads"), 1000);
    json_decref(doc);

    /* The pool's histograms hold the run's ops only: callers still queued
     * when it stopped get no lease to give back unused (every op holds 5 ms). */
    doc = bench_json((const char *[]){"bench", "sqlite::memory:", "--threads", "200", "--pool-size", "4",
                                      "--hold-ms", "5", "--duration", "0.4", "--json", NULL});
    json_t *use = json_object_get(doc, "use_time_ms");
    int64_t ops = get_int(doc, "ops");
    if (get_int(json_object_get(doc, "acquire_wait_ms"), "count") != ops || get_int(use, "count") != ops ||
        get_num(use, "p50_ms") < 4.5)
        fail_msg("ops %lld: acquire waits %lld, uses %lld, use p50 %.3f ms", (long long)ops,
                 (long long)get_int(json_object_get(doc, "acquire_wait_ms"), "count"),
                 (long long)get_int(use, "count"), get_num(use, "p50_ms"));
    json_decref(doc);
}

static void test_bench_burst(void **state) {
    (void)state;
    json_t *doc = bench_json(
        (const char *[]){"bench", "sqlite::memory:", "--burst", "2000", "--threads", "8", "--json", NULL});
    json_t *burst = json_object_get(doc, "burst");
    assert_true(json_is_object(burst));
    assert_int_equal(get_int(burst, "acquisitions"), 2000);
    assert_true(json_is_true(json_object_get(burst, "completed")));
    assert_true(get_num(burst, "seconds") > 0);
    assert_true(get_int(burst, "per_s") > 0);
    assert_int_equal(get_int(doc, "ops"), 2000);
    assert_int_equal(get_int(doc, "errors"), 0);
    json_decref(doc);
}

static void test_bench_table(void **state) {
    (void)state;
    dbt_run r = dbt_run_cli((const char *[]){"bench", "sqlite::memory:", "--duration", "0.2", "--threads",
                                             "2", "--burst", "500", NULL});
    expect_ok(&r);
    assert_string_equal(r.err, "");
    assert_non_null(strstr(r.out, "dbpool bench: sqlite, mode cycle, 2 threads"));
    static const char *const rows[] = {"ops/s",
                                       "errors",
                                       "burst",
                                       "acquire wait",
                                       "use time",
                                       "hand-off delay",
                                       "connections created",
                                       "peak in use",
                                       "timeouts",
                                       NULL};
    for (int i = 0; rows[i]; i++) {
        if (!strstr(r.out, rows[i]))
            fprintf(stderr, "no '%s' in:\n%s", rows[i], r.out);
        assert_non_null(strstr(r.out, rows[i]));
    }
    dbt_run_free(&r);
}

/* A pool_max in the URL overrides --pool-size: the summary reports the
 * pool's real size, and stderr says why it differs from --pool-size. */
static void test_bench_pool_size_from_url(void **state) {
    (void)state;
    dbt_run r = dbt_run_cli((const char *[]){"bench", "sqlite::memory:?pool_max=2", "--pool-size", "50",
                                             "--threads", "8", "--duration", "0.3", "--json", NULL});
    expect_ok(&r);
    json_t *doc = dbt_json_parse(r.out);
    assert_int_equal(get_int(doc, "pool_size"), 2);
    assert_int_equal(get_int(json_object_get(doc, "pool_stats"), "pool_size"), 2);
    assert_true(get_int(doc, "peak_in_use") <= 2);
    json_decref(doc);
    if (count_char(r.err, '\n') != 1 || !strstr(r.err, "pool_max overrides --pool-size"))
        fprintf(stderr, "stderr: %s", r.err);
    assert_int_equal(count_char(r.err, '\n'), 1);
    assert_non_null(strstr(r.err, "at most 2 connections, not the 50 of --pool-size"));
    assert_non_null(strstr(r.err, "pool_max overrides --pool-size"));
    dbt_run_free(&r);

    r = dbt_run_cli((const char *[]){"bench", "sqlite::memory:?pool_max=2", "--pool-size", "50", "--threads",
                                     "2", "--duration", "0.2", NULL});
    expect_ok(&r);
    assert_non_null(strstr(r.out, "2 threads, pool of 2,"));
    assert_non_null(strstr(r.out, " of 2\n")); /* peak in use N of 2 */
    dbt_run_free(&r);

    /* Without --pool-size there is nothing to contradict: no note. */
    doc = bench_json((const char *[]){"bench", "sqlite::memory:?pool_max=3", "--threads", "2", "--duration",
                                      "0.2", "--json", NULL});
    assert_int_equal(get_int(doc, "pool_size"), 3);
    json_decref(doc);
}

/* A query that is not UTF-8 (a database may take another encoding) is
 * still reported, with '?' for the bytes JSON cannot hold. */
static void test_bench_query_not_utf8(void **state) {
    (void)state;
    json_t *doc = bench_json((const char *[]){"bench", "sqlite::memory:", "--query", "SELECT '\xff'",
                                              "--duration", "0.1", "--threads", "1", "--json", NULL});
    json_t *query = json_object_get(doc, "query");
    if (!json_is_string(query))
        fprintf(stderr, "\"query\" is missing or not a string\n");
    assert_true(json_is_string(query));
    assert_string_equal(json_string_value(query), "SELECT '?'");
    assert_int_equal(get_int(doc, "errors"), 0);
    json_decref(doc);
}

/* An error sample is cut to fit the bench's buffer, which can split a
 * character of a server's message in another language: the JSON keeps
 * every whole character (only the broken bytes read '?'); all of the
 * message's non-ASCII text used to become '?'. Two texts a byte apart, so
 * that one of them is cut inside a character. */
static void test_bench_error_sample_keeps_utf8(void **state) {
    (void)state;
    for (int shift = 0; shift < 2; shift++) {
        char query[1024] = "SELECT * FROM \"";
        if (shift)
            strcat(query, "a");
        for (int i = 0; i < 300; i++)
            strcat(query, "\xc3\xa9");
        strcat(query, "\"");
        json_t *doc = bench_json((const char *[]){"bench", "sqlite::memory:", "--query", query, "--duration",
                                                  "0.1", "--threads", "1", "--json", NULL});
        const char *m =
            json_string_value(json_object_get(json_object_get(doc, "error_messages"), "DBPOOL_EQUERY"));
        assert_non_null(m);
        if (!strstr(m, "no such table: \xc3\xa9\xc3\xa9") && !strstr(m, "no such table: a\xc3\xa9\xc3\xa9"))
            fail_msg("shift %d: the sample lost its text: %s", shift, m);
        json_decref(doc);
    }
}

/* "--hold-ms -0" is a hold of 0 ms, reported as 0: it was taken as -0.0
 * and printed "hold_ms": -0.0, a negative hold. */
static void test_bench_hold_minus_zero(void **state) {
    (void)state;
    static const char *const holds[] = {"-0", "-0.0", "-.0", NULL};
    for (int i = 0; holds[i]; i++) {
        json_t *doc = bench_json((const char *[]){"bench", "sqlite::memory:", "--hold-ms", holds[i],
                                                  "--duration", "0.1", "--threads", "1", "--json", NULL});
        double hold = get_num(doc, "hold_ms");
        if (hold != 0 || signbit(hold))
            fail_msg("--hold-ms %s: \"hold_ms\" is %g", holds[i], hold);
        json_decref(doc);
    }
}

/* A number of seconds is taken as written: "--duration 2.007" was read
 * as 2008 ms (2.007 * 1000 is 2007.0000000000002 in binary floating point,
 * rounded up), and the JSON said "duration_s": 2.008. --burst ends the run
 * at once; the duration is only its cap. */
static void test_bench_duration_as_written(void **state) {
    (void)state;
    static const char *const given[] = {"2.007", "4.001", NULL};
    static const double want[] = {2.007, 4.001};
    for (int i = 0; given[i]; i++) {
        json_t *doc = bench_json((const char *[]){"bench", "sqlite::memory:", "--burst", "1", "--threads",
                                                  "1", "--duration", given[i], "--json", NULL});
        double d = get_num(doc, "duration_s");
        if (d != want[i])
            fail_msg("--duration %s: \"duration_s\" is %.9g, want %g", given[i], d, want[i]);
        json_decref(doc);
    }
}

/* True once the process has a handler for SIGINT (Linux: /proc/PID/status). */
static bool catches_sigint(pid_t pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    char *status = dbt_slurp(path);
    if (!status)
        return false;
    const char *line = strstr(status, "\nSigCgt:");
    bool caught = line && (strtoull(line + 8, NULL, 16) & (1ULL << (SIGINT - 1))) != 0;
    free(status);
    return caught;
}

/*
 * Callers queued on a busy pool when the run stops give their lease back at
 * once, and the one holding a lease stops holding it: the run ends soon
 * after the stop, not after every queued --hold-ms. With 3 callers on one
 * connection and a 5 s hold, waiting for the holds would take 10-15 s; the
 * bound leaves ample room for a loaded machine.
 */
#define STOP_BOUND_MS 4000

static void test_bench_stop_cuts_holds(void **state) {
    (void)state;
    int64_t t0 = dbt_now_ms();
    dbt_run r = dbt_run_cli((const char *[]){"bench", "sqlite::memory:", "--threads", "3", "--pool-size", "1",
                                             "--hold-ms", "5000", "--timeout", "30", "--duration", "0.5",
                                             "--json", NULL});
    int64_t took = dbt_now_ms() - t0;
    expect_ok(&r);
    json_t *doc = dbt_json_parse(r.out);
    if (took > STOP_BOUND_MS)
        fprintf(stderr, "--duration 0.5 took %lld ms\n", (long long)took);
    assert_true(took < STOP_BOUND_MS);
    assert_true(get_num(doc, "elapsed_s") < STOP_BOUND_MS / 1000.0);
    assert_false(json_is_true(json_object_get(doc, "interrupted")));
    assert_int_equal(get_int(doc, "errors"), 0);
    json_decref(doc);
    dbt_run_free(&r);

    if (access("/proc/self/status", R_OK) != 0)
        skip(); /* no /proc: cannot tell when the handler is in place */
    child c = spawn_cli((const char *[]){"bench", "sqlite::memory:", "--threads", "3", "--pool-size", "1",
                                         "--hold-ms", "5000", "--timeout", "30", "--duration", "600",
                                         "--json", NULL});
    /* Before its handler is in place, SIGINT would simply kill it. */
    for (int i = 0; i < 1000 && !catches_sigint(c.pid); i++)
        dbt_sleep_ms(10);
    assert_true(catches_sigint(c.pid));
    dbt_sleep_ms(300); /* one caller holds the connection, two wait */
    t0 = dbt_now_ms();
    assert_int_equal(kill(c.pid, SIGINT), 0);
    r = wait_cli(&c);
    took = dbt_now_ms() - t0;
    expect_ok(&r);
    if (took > STOP_BOUND_MS)
        fprintf(stderr, "Ctrl-C took %lld ms to end the run\n", (long long)took);
    assert_true(took < STOP_BOUND_MS);
    doc = dbt_json_parse(r.out);
    assert_true(json_is_true(json_object_get(doc, "interrupted")));
    json_decref(doc);
    dbt_run_free(&r);
}

/* The command args with stdout on a pipe that is full already (its reader,
 * *rd, not reading), started; stderr to err_path. */
static pid_t spawn_into_full_pipe(const char *const *args, int *rd, const char *err_path) {
    int p[2];
    assert_int_equal(pipe(p), 0);
    int fl = fcntl(p[1], F_GETFL);
    assert_int_equal(fcntl(p[1], F_SETFL, fl | O_NONBLOCK), 0);
    static const char fill[4096] = {0};
    while (write(p[1], fill, sizeof fill) > 0) {
    }
    while (write(p[1], fill, 1) > 0) {
    }
    assert_int_equal(errno, EAGAIN);
    /* The flag belongs to the open file, which the command shares. */
    assert_int_equal(fcntl(p[1], F_SETFL, fl), 0);
    pid_t pid = dbt_spawn_cli(args, DBT_STDOUT_PIPE(p[1], p[0]), err_path, NULL);
    close(p[1]);
    *rd = p[0];
    return pid;
}

/* True once pid's main thread is blocked in a write to its stdout (Linux:
 * /proc/PID/syscall names the system call and its first argument). */
static bool blocked_writing_stdout(pid_t pid) {
    char path[64], want[32];
    snprintf(path, sizeof path, "/proc/%d/syscall", (int)pid);
    snprintf(want, sizeof want, "%ld 0x1 ", (long)SYS_write);
    char *text = dbt_slurp(path);
    bool blocked = text && strncmp(text, want, strlen(want)) == 0;
    free(text);
    return blocked;
}

/*
 * Ctrl-C or SIGTERM while the command waits to write to a reader that is
 * not reading (`dbpool stat URL | less`, the pipe full) stops it as
 * anywhere else: stat ends at once with status 0 (the help's "Ctrl-C"),
 * quietly; bench says that its summary is cut short and exits 1. The
 * interrupted write made stat print "cannot write to stdout (Interrupted
 * system call)" and exit 1, and bench the same, as if stdout were broken.
 * Nothing is read from the pipe until the command has ended.
 */
static void test_stop_while_stdout_full(void **state) {
    (void)state;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/syscall", (int)getpid());
    if (access(path, R_OK) != 0)
        skip(); /* cannot tell when the command is blocked in its write */
    char err_path[600];
    snprintf(err_path, sizeof err_path, "%s/full-pipe.stderr", dbt_tmpdir());
    static const char *const stat_args[] = {"stat", "sqlite::memory:", "0.05", NULL};
    static const char *const bench_args[] = {"bench", "sqlite::memory:", "--duration", "0.1", "--threads",
                                             "1",     "--json",          NULL};
    const char *const *cases[] = {stat_args, bench_args};
    for (int k = 0; k < 2; k++) {
        int rd;
        pid_t pid = spawn_into_full_pipe(cases[k], &rd, err_path);
        bool blocked = false;
        for (int i = 0; i < 1000 && !blocked; i++) {
            blocked = catches_sigint(pid) && blocked_writing_stdout(pid);
            if (!blocked)
                dbt_sleep_ms(10);
        }
        if (!blocked)
            kill(pid, SIGKILL);
        assert_true(blocked);
        assert_int_equal(kill(pid, SIGTERM), 0);
        int64_t t0 = dbt_now_ms();
        int st = 0;
        pid_t w = 0;
        while ((w = waitpid(pid, &st, WNOHANG)) == 0 && dbt_now_ms() - t0 < 10000)
            dbt_sleep_ms(10);
        if (w != pid) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            fail_msg("dbpool %s still running 10 s after SIGTERM", cases[k][0]);
        }
        close(rd);
        char *err = dbt_slurp(err_path);
        assert_non_null(err);
        int status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        bool ok = k == 0
                      ? status == 0 && err[0] == '\0'
                      : status == 1 && strstr(err, "the summary is incomplete") && count_char(err, '\n') == 1;
        if (!ok)
            fail_msg("dbpool %s stopped while its stdout was full: exit %d, stderr: %s", cases[k][0], status,
                     err);
        free(err);
    }
    unlink(err_path);
}

/*
 * Callers still in line when the run stops are counted: their waits, cut
 * short, are in no histogram, and without the count the summary of a
 * pool far too small (19 callers of 20 never served) read as a clean run
 * of one op with no timeouts and no errors.
 */
static void test_bench_waiting_at_stop(void **state) {
    (void)state;
    static const char *const args[] = {
        "bench", "sqlite::memory:", "--threads", "20",         "--pool-size", "1",      "--hold-ms",
        "5000",  "--timeout",       "30",        "--duration", "1",           "--json", NULL};
    json_t *doc = bench_json(args);
    /* One caller holds the only connection for the whole run. */
    assert_int_equal(get_int(doc, "ops"), 1);
    assert_int_equal(get_int(doc, "waiting_at_stop"), 19);
    assert_int_equal(get_int(doc, "errors"), 0);
    json_decref(doc);

    dbt_run r =
        dbt_run_cli((const char *[]){"bench", "sqlite::memory:", "--threads", "20", "--pool-size", "1",
                                     "--hold-ms", "5000", "--timeout", "30", "--duration", "1", NULL});
    expect_ok(&r);
    if (!strstr(r.out, "waiting at stop              19\n"))
        fprintf(stderr, "stdout: %s", r.out);
    assert_non_null(strstr(r.out, "waiting at stop              19\n"));
    dbt_run_free(&r);

    /* Connect-per-query has no line to wait in. */
    doc = bench_json((const char *[]){"bench", "sqlite::memory:", "--mode", "connect-per-query", "--duration",
                                      "0.1", "--threads", "2", "--json", NULL});
    assert_true(json_is_null(json_object_get(doc, "waiting_at_stop")));
    json_decref(doc);

    /* Nobody waits in a pool larger than the callers: the callers the
     * suspended pool refused as they came to it, without waiting, used to
     * be counted (1-3 of 4 in most runs). */
    for (int i = 0; i < 5; i++) {
        doc = bench_json((const char *[]){"bench", "sqlite::memory:", "--threads", "4", "--pool-size", "10",
                                          "--duration", "0.2", "--json", NULL});
        assert_int_equal(get_int(doc, "waiting_at_stop"), 0);
        json_decref(doc);
    }
}

/*
 * The progress line stays on one row of the terminal: one as wide as the
 * terminal wraps, and each "\r" redraw then left a row behind (an
 * 80-column terminal got a new row every 250 ms with 1000 callers, whose
 * line is 81 characters). Fields that do not fit are left out whole. The
 * command runs with stderr on a pseudo-terminal 60 columns wide.
 */
/* Run the command with stdin /dev/null, stdout to a file and stderr on a
 * pseudo-terminal `cols` columns wide; what reached the terminal goes to
 * buf. Returns the exit status, or -1 without pseudo-terminals. Bounded:
 * a command still running after 30 s is killed. */
static int run_on_pty(char *const argv[], int cols, char *buf, size_t cap) {
    int master = posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0)
        return -1;
    assert_int_equal(grantpt(master), 0);
    assert_int_equal(unlockpt(master), 0);
    char slave[256];
    snprintf(slave, sizeof slave, "%s", ptsname(master));
    struct winsize ws = {.ws_row = 24, .ws_col = (unsigned short)cols};
    assert_int_equal(ioctl(master, TIOCSWINSZ, &ws), 0);

    char out_path[600];
    snprintf(out_path, sizeof out_path, "%s/pty.stdout", dbt_tmpdir());
    posix_spawn_file_actions_t fa;
    assert_int_equal(posix_spawn_file_actions_init(&fa), 0);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&fa, 2, slave, O_RDWR | O_NOCTTY, 0);
    posix_spawn_file_actions_addclose(&fa, master);
    pid_t pid;
    int rc = posix_spawn(&pid, DBPOOL_CLI_PATH, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        fail_msg("cannot run %s: %s", DBPOOL_CLI_PATH, strerror(rc));

    /* Read until the command has closed the terminal (EIO). */
    size_t len = 0;
    int64_t t0 = dbt_now_ms();
    for (;;) {
        struct pollfd pfd = {.fd = master, .events = POLLIN};
        if (poll(&pfd, 1, 200) > 0) {
            ssize_t got = read(master, buf + len, cap - 1 - len);
            if (got <= 0)
                break;
            len += (size_t)got;
            if (len == cap - 1)
                break;
        }
        if (dbt_now_ms() - t0 > 30000) {
            kill(pid, SIGKILL);
            break;
        }
    }
    buf[len] = '\0';
    close(master);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    unlink(out_path);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void test_bench_progress_fits_terminal(void **state) {
    (void)state;
    char *argv[] = {
        (char *)DBPOOL_CLI_PATH, "bench", "sqlite::memory:", "--threads", "2", "--duration", "1.2", NULL};
    char err[16384];
    int status = run_on_pty(argv, 60, err, sizeof err);
    if (status < 0)
        skip(); /* no pseudo-terminals here */
    assert_int_equal(status, 0);

    /* Every redraw is "\r" and a line: each segment fits in 59 columns. */
    int drawn = 0;
    for (char *seg = err, *end; *seg; seg = end + (*end != '\0')) {
        end = seg + strcspn(seg, "\r\n");
        char cut = *end;
        *end = '\0';
        size_t n = strlen(seg);
        if (n > 59)
            fail_msg("a line of %zu characters on a 60-column terminal: %s", n, seg);
        if (strstr(seg, "ops/s")) {
            drawn++;
            /* The figures shown are whole: "in use N/M", never "in use N". */
            const char *in_use = strstr(seg, "in use ");
            if (in_use)
                assert_non_null(strchr(in_use, '/'));
        }
        *end = cut;
    }
    assert_true(drawn >= 1);
}

/*
 * With --verbose on a terminal, a log line from the pool's threads starts
 * on a row of its own: it was glued to the end of the progress line
 * ("waiting 0dbpool[info]: ..."). Connections retired every 300 ms give
 * log lines in the middle of the run.
 */
static void test_bench_verbose_log_not_glued(void **state) {
    (void)state;
    char url[700];
    snprintf(url, sizeof url, "sqlite:%s/verbose.db?pool_max_lifetime=300", dbt_tmpdir());
    char *argv[] = {
        (char *)DBPOOL_CLI_PATH, "bench", url, "--threads", "2", "--duration", "1.5", "--verbose", NULL};
    char err[65536];
    int status = run_on_pty(argv, 200, err, sizeof err);
    if (status < 0)
        skip(); /* no pseudo-terminals here */
    assert_int_equal(status, 0);
    int logs = 0, drawn = 0;
    for (const char *at = strstr(err, "dbpool["); at; at = strstr(at + 1, "dbpool[")) {
        if (at != err && at[-1] != '\r' && at[-1] != '\n') {
            size_t back = (size_t)(at - err) < 80 ? (size_t)(at - err) : 80;
            fail_msg("a log line does not start a row: ...%.*s", (int)back + 40, at - back);
        }
        logs += strncmp(at, "dbpool[info]: pool 'bench': closing connection", 46) == 0;
    }
    for (const char *at = strstr(err, "ops/s"); at; at = strstr(at + 1, "ops/s"))
        drawn++;
    if (logs < 1 || drawn < 1)
        fail_msg("%d retirements logged, %d progress lines: %s", logs, drawn, err);
}

/* A burst cut short by Ctrl-C says so; it said "not finished within 60.0 s"
 * (the --duration cap) of a run interrupted after a second. */
static void test_bench_burst_interrupted(void **state) {
    (void)state;
    if (access("/proc/self/status", R_OK) != 0)
        skip(); /* no /proc: cannot tell when the handler is in place */
    child c = spawn_cli((const char *[]){"bench", "sqlite::memory:", "--burst", "100000000", "--threads", "2",
                                         "--hold-ms", "1", NULL});
    for (int i = 0; i < 1000 && !catches_sigint(c.pid); i++)
        dbt_sleep_ms(10);
    assert_true(catches_sigint(c.pid));
    assert_int_equal(kill(c.pid, SIGINT), 0);
    dbt_run r = wait_cli(&c);
    expect_ok(&r);
    if (!strstr(r.out, "ops not finished: interrupted after ") || strstr(r.out, "within 60.0 s"))
        fail_msg("stdout: %s", r.out);
    dbt_run_free(&r);
}

/* Wait up to bound_ms for the child to end; a child still running then is
 * killed and the test fails. */
static dbt_run wait_cli_within(child *c, int64_t bound_ms, const char *what) {
    int64_t t0 = dbt_now_ms();
    int st;
    pid_t got;
    while ((got = waitpid(c->pid, &st, WNOHANG)) == 0 && dbt_now_ms() - t0 < bound_ms)
        dbt_sleep_ms(20);
    if (got == 0) {
        kill(c->pid, SIGKILL);
        waitpid(c->pid, &st, 0);
        unlink(c->out_path);
        unlink(c->err_path);
        fail_msg("%s: still running after %lld ms", what, (long long)bound_ms);
    }
    assert_int_equal(got, c->pid);
    dbt_run r;
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    r.out = dbt_slurp(c->out_path);
    r.err = dbt_slurp(c->err_path);
    assert_non_null(r.out);
    assert_non_null(r.err);
    unlink(c->out_path);
    unlink(c->err_path);
    return r;
}

/*
 * An op that does not return (a server that stopped answering; here a
 * write waiting on another connection's lock for a minute) ends the run
 * --timeout after --duration, not when the op returns: the summary is
 * printed with the op counted as unfinished, and the command exits 1. The
 * run waited for the op without bound, printing nothing.
 */
static void test_bench_stuck_op_bounded(void **state) {
    (void)state;
    char url[700], bench_url[760];
    snprintf(url, sizeof url, "sqlite:%s/stuck.db", dbt_tmpdir());
    snprintf(bench_url, sizeof bench_url, "%s?busy_timeout=60000", url);
    dbpool_options o;
    dbt_options(&o, 0, 1);
    dbpool *p;
    dbpool_error e;
    if (dbpool_open(&p, url, &o, &e) != DBPOOL_OK)
        fail_msg("open %s: %s", url, e.message);
    dbpool_conn *holder = dbt_acquire(p);
    dbt_exec_ok(holder, "CREATE TABLE t(x INTEGER)", NULL, 0);
    dbt_exec_ok(holder, "BEGIN IMMEDIATE", NULL, 0); /* the write lock, held */
    dbt_exec_ok(holder, "INSERT INTO t VALUES (1)", NULL, 0);

    child c =
        spawn_cli((const char *[]){"bench", bench_url, "--query", "INSERT INTO t VALUES (2)", "--threads",
                                   "2", "--duration", "0.3", "--timeout", "1", "--json", NULL});
    /* 0.3 s + 1 s, with room for a loaded machine; far below the minute. */
    int64_t t0 = dbt_now_ms();
    dbt_run r = wait_cli_within(&c, 15000, "bench with ops stuck on a lock");
    int64_t took = dbt_now_ms() - t0;
    dbpool_release(holder);
    dbpool_close(p);
    if (r.status != 1)
        fprintf(stderr, "exit %d, stderr: %s\n", r.status, r.err);
    assert_int_equal(r.status, 1);
    assert_true(took >= 1000); /* the ops were given --timeout to return */
    json_t *doc = dbt_json_parse(r.out);
    /* The run's time is the 0.3 s in which ops could start, not that and
     * the second spent waiting for the stuck ones (ops/s divides by it). */
    double elapsed = get_num(doc, "elapsed_s");
    if (elapsed >= 1.0)
        fail_msg("\"elapsed_s\": %.3f for --duration 0.3", elapsed);
    assert_int_equal(get_int(doc, "unfinished"), 2);
    assert_int_equal(get_int(doc, "ops"), 0);
    assert_int_equal(get_int(doc, "errors"), 0);
    json_decref(doc);
    assert_non_null(strstr(r.err, "2 ops were still running 1.0 s after the run stopped"));
    dbt_run_free(&r);
}

/*
 * A reader that goes away (`dbpool stat URL | head -1`) ends the command
 * quietly and promptly, and the same way whatever SIGPIPE's disposition
 * was: killed by SIGPIPE (shell status 141), after it cleaned up, with
 * nothing on stderr. Connector/C ignores SIGPIPE for the whole process on
 * its first connect, and a parent may pass it on ignored: there, stat
 * said "cannot write to stdout (Broken pipe)" and exited 1, bench and
 * check the same, where on SQLite the same command died silently.
 */
#define PIPE_BOUND_MS 10000

static void expect_pipe_end(const char *const *args, size_t keep, bool ignore) {
    char *err = NULL;
    int64_t took;
    int status = dbt_run_cli_pipe_closed(args, keep, ignore, &err, &took);
    if (status != 128 + SIGPIPE || err[0] || took > PIPE_BOUND_MS)
        fail_msg("dbpool %s %s into a closed pipe, SIGPIPE %s: exit %d after %lld ms, stderr: %s", args[0],
                 args[1], ignore ? "ignored" : "default", status, (long long)took, err);
    free(err);
}

static void test_output_into_closed_pipe(void **state) {
    (void)state;
    char report[600];
    snprintf(report, sizeof report, "%s/pipe-report.json", dbt_tmpdir());
    for (int ignore = 0; ignore < 2; ignore++) {
        /* A line every 50 ms: the one after the reader left fails. */
        expect_pipe_end((const char *[]){"stat", "sqlite::memory:", "0.05", "1000", NULL}, 10, ignore);
        expect_pipe_end((const char *[]){"bench", "sqlite::memory:", "--duration", "0.2", "--threads", "1",
                                         "--json", NULL},
                        0, ignore);
        expect_pipe_end(
            (const char *[]){"bench", "sqlite::memory:", "--duration", "0.2", "--threads", "1", NULL}, 0,
            ignore);
        expect_pipe_end((const char *[]){"check", "sqlite::memory:", NULL}, 0, ignore);
        expect_pipe_end((const char *[]){"demo", "--input", DBPOOL_SOURCE_DIR "/data/sample_input.txt",
                                         "--output", report, NULL},
                        0, ignore);
        /* The report is in its file all the same. */
        char *text = dbt_slurp(report);
        assert_non_null(text);
        json_decref(dbt_json_parse(text));
        free(text);
        unlink(report);
        expect_pipe_end((const char *[]){"bench", "--help", NULL}, 0, ignore);
        expect_pipe_end((const char *[]){"--version", NULL}, 0, ignore);
    }
}

static void test_stat_lines(void **state) {
    (void)state;
    dbt_run r = dbt_run_cli((const char *[]){"stat", "sqlite::memory:", "0.2", "3", NULL});
    expect_ok(&r);
    assert_string_equal(r.err, "");
    assert_int_equal(count_char(r.out, '\n'), 4);
    char *save = NULL;
    char *line = strtok_r(r.out, "\n", &save);
    assert_non_null(line);
    assert_non_null(strstr(line, "time"));
    assert_non_null(strstr(line, "total"));
    assert_non_null(strstr(line, "ops/s"));
    assert_non_null(strstr(line, "p99ms"));
    int lines = 0;
    while ((line = strtok_r(NULL, "\n", &save)) != NULL) {
        char clock[16];
        int total, idle, used, wait;
        double ops, p99;
        unsigned long long errs, tmo, created, closed;
        int n = sscanf(line, "%15s %d %d %d %d %lf %llu %lf %llu %llu %llu", clock, &total, &idle, &used,
                       &wait, &ops, &errs, &p99, &tmo, &created, &closed);
        if (n != 11)
            fprintf(stderr, "bad line: %s\n", line);
        assert_int_equal(n, 11);
        assert_true(total >= 1 && total <= 3); /* default pool of 3 */
        assert_true(idle + used <= total);
        assert_true(ops > 0);
        assert_int_equal(errs, 0);
        lines++;
    }
    assert_int_equal(lines, 3);
    dbt_run_free(&r);
}

/*
 * `dbpool stat` stopped (Ctrl-Z, a debugger) and continued goes on one line
 * per interval. It kept its grid of ticks from the start and printed a line
 * for every tick it had missed, all at once (each over microseconds, 0
 * ops/s), and those used up COUNT: here it ended as soon as it was
 * continued, instead of about 7 intervals later.
 */
#define STAT_PAUSE_INTERVAL_MS 200
#define STAT_PAUSE_COUNT 10

/* Append what fd has to out (of *len bytes so far); wait up to wait_ms for
 * the first bytes (0: take only what is there). False at the end of the
 * stream. */
static bool read_some(int fd, char *out, size_t cap, size_t *len, int wait_ms) {
    struct pollfd pfd = {.fd = fd, .events = POLLIN, .revents = 0};
    int rc = poll(&pfd, 1, wait_ms);
    assert_true(rc >= 0);
    if (rc == 0) {
        assert_int_equal(wait_ms, 0); /* no line within wait_ms: stuck */
        return true;
    }
    ssize_t n = read(fd, out + *len, cap - 1 - *len);
    assert_true(n >= 0);
    *len += (size_t)n;
    out[*len] = '\0';
    return n > 0;
}

static void test_stat_resumes_after_stop(void **state) {
    (void)state;
    char err_path[600];
    snprintf(err_path, sizeof err_path, "%s/stat_stop.stderr", dbt_tmpdir());
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid =
        dbt_spawn_cli((const char *[]){"stat", "sqlite::memory:", "0.2", "10", "--threads", "1", NULL},
                      DBT_STDOUT_PIPE(fds[1], fds[0]), err_path, NULL);
    close(fds[1]);
    /* The header and two lines: the run is under way. */
    char out[8192] = "";
    size_t len = 0;
    while (count_char(out, '\n') < 3)
        assert_true(read_some(fds[0], out, sizeof out, &len, 30000));
    /* Stopped for longer than the whole run has left (8 lines, 1.6 s). */
    assert_int_equal(kill(pid, SIGSTOP), 0);
    int st;
    assert_int_equal(waitpid(pid, &st, WUNTRACED), pid);
    assert_true(WIFSTOPPED(st));
    /* What came out before the stop (on a slow machine, maybe a line more). */
    for (size_t before = SIZE_MAX; before != len;) {
        before = len;
        assert_true(read_some(fds[0], out, sizeof out, &len, 0));
    }
    size_t lines_before = count_char(out, '\n');
    dbt_sleep_ms(2000);
    int64_t resumed = dbt_now_ms();
    assert_int_equal(kill(pid, SIGCONT), 0);
    while (read_some(fds[0], out, sizeof out, &len, 30000)) {
    }
    int64_t after = dbt_now_ms() - resumed;
    close(fds[0]);
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    unlink(err_path);
    /* Every line printed, the header once (fewer than 20 lines). */
    assert_int_equal(count_char(out, '\n'), STAT_PAUSE_COUNT + 1);
    /* The line due during the stop comes at once, the others one interval
     * apart. A loaded machine only makes this longer. */
    size_t lines_after = STAT_PAUSE_COUNT + 1 - lines_before;
    assert_true(lines_after >= 4);
    if (after < (int64_t)(lines_after - 2) * STAT_PAUSE_INTERVAL_MS)
        fail_msg("stat ended %lld ms after it was continued, its last %zu lines not an interval apart:\n%s",
                 (long long)after, lines_after - 1, out);
}

/* Exit 2 with exactly one line on stderr starting "dbpool CMD: ". */
static void expect_usage(const char *const *args, const char *needle) {
    dbt_run r = dbt_run_cli(args);
    if (r.status != 2 || count_char(r.err, '\n') != 1)
        fprintf(stderr, "exit %d, stderr: %s\n", r.status, r.err);
    assert_int_equal(r.status, 2);
    assert_int_equal(count_char(r.err, '\n'), 1);
    assert_string_equal(r.out, "");
    char prefix[32];
    snprintf(prefix, sizeof prefix, "dbpool %s: ", args[0]);
    assert_true(strncmp(r.err, prefix, strlen(prefix)) == 0);
    if (needle && !strstr(r.err, needle)) {
        fprintf(stderr, "no '%s' in: %s", needle, r.err);
        fail();
    }
    dbt_run_free(&r);
}

#ifdef DBPOOL_HAVE_PG
/* stat against a server that never answers: its open gives up after its
 * 5 s acquire timeout, and the error names that bound. It used to name
 * the library's default connect_timeout_ms (10000), which had not applied. */
static void test_stat_connect_bounded(void **state) {
    (void)state;
    int port = 0;
    int fd = dbt_loopback_socket(&port, 8); /* listens, never accepts: no reply */
    char url[128];
    snprintf(url, sizeof url, "postgresql://nobody@127.0.0.1:%d/db", port);
    int64_t t0 = dbt_now_ms();
    dbt_run r = dbt_run_cli((const char *[]){"stat", url, "0.1", "1", NULL});
    int64_t took = dbt_now_ms() - t0;
    close(fd);
    if (r.status != 1 || took > 15000)
        fail_msg("stat against a deaf server: exit %d after %lld ms (want 1 after about 5 s); stderr: %s",
                 r.status, (long long)took, r.err);
    if (!strstr(r.err, "DBPOOL_ETIMEDOUT") || strstr(r.err, "connect_timeout_ms 10000") ||
        !strstr(r.err, "connect_timeout_ms 5000"))
        fail_msg("the timeout's message should name stat's 5 s bound: %s", r.err);
    assert_string_equal(r.out, "");
    dbt_run_free(&r);
}

/* Lines of text in the file at path so far. */
static size_t lines_in(const char *path) {
    char *text = dbt_slurp(path);
    size_t n = text ? count_char(text, '\n') : 0;
    free(text);
    return n;
}

/* `dbpool stat URL 0.2 COUNT --threads 2 --pool-size 2` on PostgreSQL
 * through a TCP proxy (*px), once it runs: the header and a first line of
 * figures are out. Skips the test without a PostgreSQL server. */
static child stat_through_proxy(dbt_proxy **px, const char *count) {
    const char *req = getenv("DBPOOL_TEST_REQUIRE_SERVERS");
    if (!getenv("DBPOOL_TEST_PG_URL") && !(req && strcmp(req, "1") == 0))
        skip(); /* needs a PostgreSQL server (scripts/test.sh starts one) */
    *px = dbt_proxy_start("127.0.0.1", dbt_url_port("pg"));
    assert_non_null(*px);
    char url[2048];
    snprintf(url, sizeof url, "%s", dbt_url_via_port("pg", dbt_proxy_port(*px)));
    child c =
        spawn_cli((const char *[]){"stat", url, "0.2", count, "--threads", "2", "--pool-size", "2", NULL});
    int64_t t0 = dbt_now_ms();
    while (lines_in(c.out_path) < 2 && dbt_now_ms() - t0 < 15000)
        dbt_sleep_ms(20);
    return c;
}

/*
 * stat against a server that stops answering while it runs (the proxy
 * turns silent: queries in flight never return): after its COUNT lines it
 * waits for the stuck ops at most its 5 s acquire timeout, says so and
 * exits 1. It waited for them without bound, after printing every line
 * (and after a Ctrl-C too), until the server answered again.
 */
static void test_stat_stuck_op_bounded(void **state) {
    (void)state;
    dbt_proxy *px = NULL;
    child c = stat_through_proxy(&px, "5");
    dbt_proxy_set_mode(px, DBT_PROXY_SILENT, 0);
    /* 5 lines of 0.2 s, then 5 s for the stuck ops, with room for a
     * loaded machine; without the bound it never ends. */
    dbt_run r = wait_cli_within(&c, 30000, "stat with its ops stuck on a silent server");
    dbt_proxy_destroy(px);
    if (r.status != 1 || !strstr(r.err, "still running 5.0 s after the last line"))
        fail_msg("exit %d (want 1), stderr: %s", r.status, r.err);
    assert_int_equal(count_char(r.out, '\n'), 6); /* the header and every line */
    assert_false(dbt_has_secret(r.err, NULL));
    dbt_run_free(&r);
}

/*
 * stat while the database is down (the proxy resets every connection, old
 * and new: the breaker opens, and then every acquire fails at once). Each
 * failed op is followed by stat's 10 ms pause, so that a line of 0.2 s
 * counts at most about 2 threads x 20 failed ops: its workload ran them in
 * a loop without a pause, hundreds of thousands a line on every core it
 * had. And stderr says why the ops fail, once per kind, with the code and
 * the library's message: before, only the errs column moved.
 */
static void test_stat_outage_paced_and_explained(void **state) {
    (void)state;
    dbt_proxy *px = NULL;
    child c = stat_through_proxy(&px, "10");
    dbt_proxy_set_mode(px, DBT_PROXY_RESET, 0);
    dbt_run r = wait_cli_within(&c, 30000, "stat during an outage");
    dbt_proxy_destroy(px);
    if (r.status != 0)
        fail_msg("exit %d (want 0), stderr: %s", r.status, r.err);
    /* Every line of figures: "time total idle used wait ops/s errs ...". */
    uint64_t most = 0, all = 0;
    int lines = 0;
    for (const char *at = r.out; at && *at; at = strchr(at, '\n') ? strchr(at, '\n') + 1 : NULL) {
        char when[16];
        unsigned long long errs = 0;
        double ops = 0;
        int total, idle, used, wait;
        if (sscanf(at, "%15s %d %d %d %d %lf %llu", when, &total, &idle, &used, &wait, &ops, &errs) != 7)
            continue; /* the header */
        lines++;
        all += errs;
        if (errs > most)
            most = errs;
    }
    assert_int_equal(lines, 10);
    if (all == 0)
        fail_msg("no op failed while the proxy reset every connection:\n%s", r.out);
    /* 2 threads x (200 ms / 10 ms + 1), with room for a late line. */
    if (most > 400)
        fail_msg(
            "%llu failed ops in one line of 0.2 s: stat's workload spins on a database that is down:\n%s",
            (unsigned long long)most, r.out);
    if (!strstr(r.err, "ops fail with DBPOOL_E") || !strstr(r.err, "(counted in errs): "))
        fail_msg("stderr should say why the ops fail: %s", r.err);
    assert_false(dbt_has_secret(r.err, NULL));
    dbt_run_free(&r);
}
#endif

static void test_usage_errors(void **state) {
    (void)state;
    expect_usage((const char *[]){"bench", NULL}, "URL is missing");
    expect_usage((const char *[]){"bench", "sqlite::memory:", "--threads", "0", NULL}, "--threads");
    expect_usage((const char *[]){"bench", "sqlite::memory:", "--threads", "abc", NULL}, "--threads");
    expect_usage((const char *[]){"bench", "sqlite::memory:", "--threads", NULL}, "needs a value");
    expect_usage((const char *[]){"bench", "sqlite::memory:", "--pool-size", "-1", NULL}, "--pool-size");
    expect_usage((const char *[]){"bench", "sqlite::memory:", "--duration", "0", NULL}, "--duration");
    expect_usage((const char *[]){"bench", "sqlite::memory:", "--duration", "601", NULL}, "--duration");
    expect_usage((const char *[]){"bench", "sqlite::memory:", "--mode", "fast", NULL}, "--mode");
    expect_usage((const char *[]){"bench", "sqlite::memory:", "--hold-ms", "-1", NULL}, "--hold-ms");
    expect_usage((const char *[]){"bench", "sqlite::memory:", "--burst", "0", NULL}, "--burst");
    expect_usage((const char *[]){"bench", "sqlite::memory:", "--mode", "cycle", "--query", "SELECT 2", NULL},
                 "--query");
    expect_usage((const char *[]){"bench", "sqlite::memory:", "--bogus", NULL}, "unknown option '--bogus'");
    expect_usage((const char *[]){"bench", "sqlite::memory:", "--json=1", NULL},
                 "option --json takes no value");
    expect_usage((const char *[]){"bench", "sqlite::memory:", "--verbose=yes", NULL},
                 "option --verbose takes no value");
    expect_usage((const char *[]){"stat", "sqlite::memory:", "--help=1", NULL},
                 "option --help takes no value");
    expect_usage((const char *[]){"bench", "sqlite::memory:", "sqlite::memory:", NULL}, "more than one URL");
    expect_usage((const char *[]){"stat", NULL}, "URL is missing");
    expect_usage((const char *[]){"stat", "sqlite::memory:", "0", NULL}, "interval");
    expect_usage((const char *[]){"stat", "sqlite::memory:", "1", "x", NULL}, "count");
    /* A negative number is a bad interval or count, not an unknown option. */
    expect_usage((const char *[]){"stat", "sqlite::memory:", "-1", NULL}, "interval '-1' is not a number");
    expect_usage((const char *[]){"stat", "sqlite::memory:", "-0.5", "3", NULL},
                 "interval '-0.5' is not a number");
    expect_usage((const char *[]){"stat", "sqlite::memory:", "1", "-5", NULL}, "count '-5' is not a number");
    expect_usage((const char *[]){"stat", "sqlite::memory:", "1", "0", NULL}, "count '0' is not a number");
    /* Above the limit: the message gives the limit, not just "from 1". */
    expect_usage((const char *[]){"stat", "sqlite::memory:", "1", "99999999999", NULL},
                 "from 1 to 1000000000");
    expect_usage((const char *[]){"stat", "sqlite::memory:", "1", "2", "-3", NULL}, "too many arguments");
    expect_usage((const char *[]){"stat", "sqlite::memory:", "-x", NULL}, "unknown option '-x'");
    expect_usage((const char *[]){"stat", "sqlite::memory:", "1", "2", "3", NULL}, "too many arguments");
    expect_usage((const char *[]){"stat", "sqlite::memory:", "--threads", "0", "1", "1", NULL}, "--threads");
    expect_usage((const char *[]){"stat", "sqlite::memory:", "--verbose", NULL}, "unknown option");
}

static void test_help(void **state) {
    (void)state;
    static const char *const cmds[] = {"bench", "stat", NULL};
    for (int i = 0; cmds[i]; i++) {
        dbt_run r = dbt_run_cli((const char *[]){cmds[i], "--help", NULL});
        expect_ok(&r);
        char want[64];
        snprintf(want, sizeof want, "Usage: dbpool %s URL", cmds[i]);
        assert_non_null(strstr(r.out, want));
        assert_string_equal(r.err, "");
        dbt_run_free(&r);
    }
    dbt_run r = dbt_run_cli((const char *[]){"--help", NULL});
    expect_ok(&r);
    assert_non_null(strstr(r.out, "bench"));
    assert_non_null(strstr(r.out, "stat"));
    dbt_run_free(&r);
}

/* The range bench --help gives for --hold-ms is the one it takes: the help
 * said ">= 0", and 10001 was refused as the command line's mistake
 * ("from 0 to 10000"). */
static void test_bench_help_hold_range_holds(void **state) {
    (void)state;
    dbt_run h = dbt_run_cli((const char *[]){"bench", "--help", NULL});
    expect_ok(&h);
    const char *line = strstr(h.out, "--hold-ms");
    assert_non_null(line);
    const char *next = strstr(line + 1, "\n  --"); /* the next option: the entry may wrap */
    const char *range = strstr(line, "0..10000");
    if (!range || (next && range > next))
        fail_msg("bench --help does not give --hold-ms as 0..10000: %.*s", next ? (int)(next - line) : 120,
                 line);
    dbt_run_free(&h);
    /* The top of the range is taken (the stop ends the hold), one past it is not. */
    dbt_run r = dbt_run_cli((const char *[]){"bench", "sqlite::memory:", "--hold-ms", "10000", "--duration",
                                             "0.1", "--threads", "1", NULL});
    expect_ok(&r);
    dbt_run_free(&r);
    expect_usage((const char *[]){"bench", "sqlite::memory:", "--hold-ms", "10000.5", NULL}, "--hold-ms");
}

/* The bounds stat --help gives for INTERVAL and COUNT are the ones it
 * takes: the help gave none, and an interval above 3600 s was refused as
 * the command line's mistake. */
static void test_stat_help_bounds_hold(void **state) {
    (void)state;
    dbt_run h = dbt_run_cli((const char *[]){"stat", "--help", NULL});
    expect_ok(&h);
    if (!strstr(h.out, "at most 3600") || !strstr(h.out, "1..1000000000"))
        fail_msg("stat --help does not give INTERVAL's and COUNT's bounds: %s", h.out);
    dbt_run_free(&h);
    expect_usage((const char *[]){"stat", "sqlite::memory:", "3600.5", NULL}, "at most 3600");
    expect_usage((const char *[]){"stat", "sqlite::memory:", "1", "1000000001", NULL}, "1 to 1000000000");
}

static void test_connect_failure_and_no_password(void **state) {
    (void)state;
    char url[700];
    /* A directory that does not exist: the first connect fails. */
    snprintf(url, sizeof url, "sqlite:%s/no/such/dir/x.db?mode=rw", dbt_tmpdir());
    dbt_run r = dbt_run_cli((const char *[]){"bench", url, "--duration", "0.2", "--json", NULL});
    assert_int_equal(r.status, 1);
    assert_int_equal(count_char(r.err, '\n'), 1);
    assert_true(strncmp(r.err, "dbpool bench: ", 14) == 0);
    assert_string_equal(r.out, "");
    dbt_run_free(&r);

    /* Nothing listens on port 1 of loopback; the password never shows. */
    static const char *const urls[] = {"postgresql://bob:s3cretPW@127.0.0.1:1/db",
                                       "mysql://bob:s3cretPW@127.0.0.1:1/db", NULL};
    for (int i = 0; urls[i]; i++) {
        r = dbt_run_cli((const char *[]){"bench", urls[i], "--timeout", "0.5", "--duration", "0.2", NULL});
        assert_true(r.status == 1 || r.status == 2);
        assert_null(strstr(r.err, "s3cretPW"));
        assert_null(strstr(r.out, "s3cretPW"));
        dbt_run_free(&r);
        r = dbt_run_cli((const char *[]){"stat", urls[i], "0.1", "1", NULL});
        assert_true(r.status == 1 || r.status == 2);
        assert_null(strstr(r.err, "s3cretPW"));
        dbt_run_free(&r);
    }
    r = dbt_run_cli(
        (const char *[]){"bench", "sqlite::memory:", "mysql://bob:s3cretPW@127.0.0.1:1/db", NULL});
    assert_int_equal(r.status, 2);
    assert_null(strstr(r.err, "s3cretPW"));
    dbt_run_free(&r);
}

/* A URL taken as an option's value (`--timeout $EMPTY "$URL"`) is refused
 * without being shown, whichever option or position takes it. */
/* Mistakes before any command: a command typed in capitals is named
 * back, and --version refuses what it would otherwise ignore. */
#ifdef DBPOOL_HAVE_PG /* a PostgreSQL URL: its backend must be built in */
/* A connect that times out under --timeout says that --timeout bounds it:
 * the message names connect_timeout_ms, an option bench has no flag for. */
static void test_bench_connect_timeout_names_option(void **state) {
    (void)state;
    int port = 0;
    int fd = dbt_loopback_socket(&port, 8); /* listens, never accepts: no reply */
    char url[128];
    snprintf(url, sizeof url, "postgresql://nobody@127.0.0.1:%d/db", port);
    dbt_run r = dbt_run_cli((const char *[]){"bench", url, "--timeout", "0.3", "--duration", "0.2", NULL});
    close(fd);
    if (r.status != 1 || !strstr(r.err, "DBPOOL_ETIMEDOUT") || !strstr(r.err, "raise --timeout"))
        fail_msg("exit %d, stderr: %s", r.status, r.err);
    assert_int_equal(count_char(r.err, '\n'), 1);
    assert_string_equal(r.out, "");
    dbt_run_free(&r);
}
#endif

static void test_top_level_mistakes(void **state) {
    (void)state;
    dbt_run r = dbt_run_cli((const char *[]){"DEMO", NULL});
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "unknown command 'DEMO'"));
    dbt_run_free(&r);
    r = dbt_run_cli((const char *[]){"--version", "extra", NULL});
    assert_int_equal(r.status, 2);
    assert_string_equal(r.out, "");
    assert_non_null(strstr(r.err, "--version takes no arguments"));
    dbt_run_free(&r);
}

static void test_misplaced_url_not_echoed(void **state) {
    (void)state;
    const char *url = "postgresql://bob:s3cretPW@127.0.0.1:1/db";
    char listen[80];
    snprintf(listen, sizeof listen, "mysql://u:s3cretPW@h");
    const char *const *cases[] = {
        (const char *[]){"check", "--timeout", url, NULL},
        (const char *[]){"bench", "sqlite::memory:", "--mode", url, NULL},
        (const char *[]){"bench", "sqlite::memory:", "--threads", url, NULL},
        (const char *[]){"bench", "sqlite::memory:", "--duration", url, NULL},
        (const char *[]){"bench", "sqlite::memory:", "--metrics-listen", listen, NULL},
        /* Taken as SQL, it was run and printed in the summary ("query:"). */
        (const char *[]){"bench", "sqlite::memory:", "--query", url, NULL},
        (const char *[]){"bench", "sqlite::memory:", "--query", listen, "--json", NULL},
        (const char *[]){"bench", "sqlite::memory:", "--query", "mysql:u:s3cretPW@h/db", NULL},
        /* Unknown options: the name was echoed up to an '=', so whole
         * when there was none (a URL after a dash, or joined to its option
         * by a non-breaking space pasted from a web page). */
        (const char *[]){"bench", "sqlite::memory:", "-postgresql://bob:s3cretPW@127.0.0.1:1/db", NULL},
        (const char *[]){"check", "--timeout\xc2\xa0postgresql://bob:s3cretPW@127.0.0.1:1/db", NULL},
        (const char *[]){"stat", "sqlite::memory:", "--pool-size\xc2\xa0mysql://u:s3cretPW@h", NULL},
        (const char *[]){"demo", "--input", "/dev/null", "--output", "/nonexistent-dir/o.json",
                         "--db\xc2\xa0mysql://u:s3cretPW@h/db", NULL},
        (const char *[]){"--db\xc2\xa0mysql://u:s3cretPW@h/db", "sqlite::memory:", NULL},
        (const char *[]){"stat", "sqlite::memory:", url, NULL},
        (const char *[]){"stat", "sqlite::memory:", "1", url, NULL},
        (const char *[]){"demo", "--input", url, "--output", "/nonexistent-dir/o.json", NULL},
        (const char *[]){"demo", "--input", "/dev/null", "--output", url, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        dbt_run r = dbt_run_cli(cases[i]);
        if (r.status == 0 || strstr(r.err, "s3cretPW") || strstr(r.out, "s3cretPW") ||
            !strstr(r.err, "not shown"))
            fail_msg("case %zu (%s %s): exit %d, stderr: %s", i, cases[i][0], cases[i][1], r.status, r.err);
        dbt_run_free(&r);
    }
    /* Numbers are plain decimal, as in the URL: no hex, no '+', no blanks. */
    expect_usage((const char *[]){"check", "--timeout", "0x10", "sqlite::memory:", NULL}, "--timeout '0x10'");
    expect_usage((const char *[]){"check", "--timeout", "40000000", "sqlite::memory:", NULL},
                 "at most a year");
    expect_usage((const char *[]){"bench", "sqlite::memory:", "--threads", " +2", NULL}, "--threads");
    expect_usage((const char *[]){"stat", "sqlite::memory:", " 1", NULL}, "interval");
    expect_usage((const char *[]){"bench", "sqlite::memory:", "--hold-ms", "0x10", NULL}, "--hold-ms");
}

static void test_metrics_listen_refused(void **state) {
    (void)state;
    /* Refused from the address alone, before anything is opened. */
    static const char *const bad[] = {"10.0.0.1:9000",
                                      "0.0.0.0:9000",
                                      "192.168.1.1:9100",
                                      "[::]:9000",
                                      "[2001:db8::1]:9000",
                                      "example.com:9000",
                                      NULL};
    for (int i = 0; bad[i]; i++)
        expect_usage((const char *[]){"bench", "sqlite::memory:", "--duration", "0.1", "--metrics-listen",
                                      bad[i], NULL},
                     "--metrics-listen");
    expect_usage((const char *[]){"bench", "sqlite::memory:", "--metrics-listen", "10.0.0.1:9000", NULL},
                 "not a loopback address");
    /* Malformed specs, each with what its message must say; a bracketed
     * IPv6 host is split after its ']', not at its last ':'. */
    static const struct {
        const char *spec, *says;
    } malformed[] = {
        {"127.0.0.1", "HOST:PORT"},
        {"127.0.0.1:70000", "port"},
        {"[::1]", "the port is missing"},
        {"[::1]:", "the port is missing"},
        {"127.0.0.1:", "the port is missing"},
        {"[::1", "'[' is not closed"},
        {"[::1:9000", "'[' is not closed"},
        {"[::1]9000", "HOST:PORT"},
        {"[]:9000", "not a bracketed IPv6 address"},
    };
    for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++)
        expect_usage(
            (const char *[]){"bench", "sqlite::memory:", "--metrics-listen", malformed[i].spec, NULL},
            malformed[i].says);
    /* The metrics are those of the shared pool, which this mode never uses. */
    expect_usage((const char *[]){"bench", "sqlite::memory:", "--mode", "connect-per-query",
                                  "--metrics-listen", "127.0.0.1:0", NULL},
                 "--metrics-listen");
    expect_usage((const char *[]){"bench", "sqlite::memory:", "--metrics-listen", "127.0.0.1:0", "--mode",
                                  "connect-per-query", NULL},
                 "connect-per-query");
    /* Nor may the URL ask for more than one connection per op. */
    expect_usage((const char *[]){"bench", "sqlite::memory:?pool_min=3", "--mode", "connect-per-query", NULL},
                 "pool_min asks for 3");
    /* Nor is there a pool to size. */
    expect_usage(
        (const char *[]){"bench", "sqlite::memory:", "--mode", "connect-per-query", "--pool-size", "7", NULL},
        "--pool-size has no pool to size");
}

/* A port another socket listens on is a bad --metrics-listen (exit 2, as
 * the help says), not a database that could not be reached (exit 1). */
static void test_metrics_listen_port_taken(void **state) {
    (void)state;
    int port;
    int fd = dbt_loopback_socket(&port, 1);
    char listen_at[64];
    snprintf(listen_at, sizeof listen_at, "127.0.0.1:%d", port);
    dbt_run r = dbt_run_cli((const char *[]){"bench", "sqlite::memory:", "--duration", "0.1",
                                             "--metrics-listen", listen_at, NULL});
    close(fd);
    if (r.status != 2 || count_char(r.err, '\n') != 1)
        fprintf(stderr, "exit %d, stderr: %s\n", r.status, r.err);
    assert_int_equal(r.status, 2);
    assert_int_equal(count_char(r.err, '\n'), 1);
    assert_string_equal(r.out, "");
    assert_true(strncmp(r.err, "dbpool bench: --metrics-listen", 30) == 0);
    /* Without libmicrohttpd it is refused before any port is tried. */
    if (!strstr(r.err, "without libmicrohttpd")) {
        assert_non_null(strstr(r.err, listen_at));
        assert_non_null(strstr(r.err, "another port"));
    }
    dbt_run_free(&r);
}

/* A socket connected to 127.0.0.1:port, or -1. */
static int connect_local(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Read fd to its end, every wait bounded by ms in all, and close it: the
 * bytes (malloc'd, NUL-terminated), or NULL on a reset or a timeout. */
static char *read_response(int fd, int ms) {
    int64_t end = dbt_now_ms() + ms;
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    for (;;) {
        int64_t left = end - dbt_now_ms();
        struct pollfd pfd = {fd, POLLIN, 0};
        ssize_t got = left > 0 && poll(&pfd, 1, (int)left) == 1 ? read(fd, buf + len, cap - len - 1) : -1;
        if (got < 0) {
            free(buf);
            close(fd);
            return NULL;
        }
        if (got == 0)
            break;
        len += (size_t)got;
        if (cap - len - 1 == 0) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
    }
    close(fd);
    buf[len] = '\0';
    return buf;
}

/* GET path from 127.0.0.1:port with a plain socket; the whole response
 * (malloc'd), or NULL while nothing listens. */
static char *http_get(int port, const char *path) {
    int fd = connect_local(port);
    if (fd < 0)
        return NULL;
    char req[256];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
    assert_int_equal(write(fd, req, (size_t)n), n);
    char *resp = read_response(fd, 5000);
    assert_non_null(resp);
    return resp;
}

/* The first response of GET path from the command c serving on port,
 * once it listens; skips the test when the build has no libmicrohttpd. */
static char *first_response(child *c, int port, const char *path) {
    char *resp = NULL;
    for (int i = 0; i < 200 && !resp; i++) {
        resp = http_get(port, path);
        if (!resp) {
            int st;
            if (waitpid(c->pid, &st, WNOHANG) == c->pid) {
                /* It ended without serving: the build has no libmicrohttpd? */
                char *err = dbt_slurp(c->err_path);
                int code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
                bool without = err && strstr(err, "built without libmicrohttpd");
                if (!without)
                    fprintf(stderr, "exit %d, stderr: %s\n", code, err ? err : "");
                assert_true(without);
                assert_int_equal(code, 2);
                free(err);
                unlink(c->out_path);
                unlink(c->err_path);
                skip();
            }
            dbt_sleep_ms(10);
        }
    }
    assert_non_null(resp);
    return resp;
}

/* `dbpool bench --json` on SQLite serving /metrics on a free loopback port
 * (put in *port) of `host`; the command is started, not yet necessarily
 * listening. */
static child bench_serving_metrics(const char *host, int *port, const char *seconds, const char *threads,
                                   const char *hold_ms) {
    *port = dbt_free_port();
    char listen[64];
    snprintf(listen, sizeof listen, "%s:%d", host, *port);
    return spawn_cli((const char *[]){"bench", "sqlite::memory:", "--duration", seconds, "--threads", threads,
                                      "--hold-ms", hold_ms, "--json", "--metrics-listen", listen, NULL});
}

static void test_metrics_served(void **state) {
    (void)state;
    int port;
    child c = bench_serving_metrics("127.0.0.1", &port, "1", "2", "0.2");
    char *resp = first_response(&c, port, "/metrics");
    assert_true(strncmp(resp, "HTTP/1.", 7) == 0);
    assert_non_null(strstr(resp, " 200 "));
    assert_non_null(strstr(resp, "text/plain; version=0.0.4"));
    assert_non_null(strstr(resp, "\ndbpool_connections{"));
    assert_non_null(strstr(resp, "\ndbpool_build_info{"));
    assert_non_null(strstr(resp, "pool=\"bench\""));
    free(resp);
    resp = http_get(port, "/other");
    assert_non_null(resp);
    assert_non_null(strstr(resp, " 404 "));
    free(resp);

    dbt_run r = wait_cli(&c);
    expect_ok(&r);
    assert_non_null(strstr(r.err, "serving metrics on http://127.0.0.1:"));
    json_t *doc = dbt_json_parse(r.out); /* stdout stays clean JSON */
    assert_true(get_int(doc, "ops") > 0);
    json_decref(doc);
    dbt_run_free(&r);
}

/* Whether the server closed fd (EOF or reset) within ms. */
static bool closed_within(int fd, int ms) {
    struct pollfd pfd = {fd, POLLIN, 0};
    if (poll(&pfd, 1, ms) != 1)
        return false;
    char b[256];
    return read(fd, b, sizeof b) <= 0;
}

/* GET /metrics with every wait bounded: the whole response, or NULL when
 * the server refused, reset or did not answer within ms in all. */
static char *scrape_within(int port, int ms) {
    int fd = connect_local(port);
    if (fd < 0)
        return NULL;
    static const char req[] = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (send(fd, req, sizeof req - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof req - 1)) {
        close(fd);
        return NULL;
    }
    return read_response(fd, ms);
}

/*
 * Local clients that send a request's headers slowly cannot starve the
 * scraper: with 32 of them trickling a header line every second (never
 * idle long enough to be timed out), a scrape is still answered; and a
 * connection that sends nothing is closed after a few seconds, not held.
 */
#define SLOW_CLIENTS 32
#define IDLE_CLOSE_BOUND_MS 6000

static void test_metrics_slow_clients(void **state) {
    (void)state;
    int port;
    /* Host names are case-insensitive: LOCALHOST is localhost. */
    child c = bench_serving_metrics("LOCALHOST", &port, "20", "1", "1");
    free(first_response(&c, port, "/metrics"));

    int64_t t0 = dbt_now_ms();
    int idle = connect_local(port);
    assert_true(idle >= 0);
    int slow[SLOW_CLIENTS];
    static const char start[] = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    for (int i = 0; i < SLOW_CLIENTS; i++) {
        slow[i] = connect_local(port);
        assert_true(slow[i] >= 0);
        assert_true(send(slow[i], start, sizeof start - 1, MSG_NOSIGNAL) == (ssize_t)(sizeof start - 1));
    }
    static const char line[] = "X-Slow: 1\r\n";
    for (int round = 0; round < 3; round++) {
        dbt_sleep_ms(1000);
        for (int i = 0; i < SLOW_CLIENTS; i++)
            send(slow[i], line, sizeof line - 1, MSG_NOSIGNAL); /* checked below */
    }
    char *resp = scrape_within(port, 3000);
    if (!resp || !strstr(resp, " 200 "))
        fprintf(stderr, "no scrape answered beside %d slow clients: %s\n", SLOW_CLIENTS,
                resp ? resp : "(refused or timed out)");
    assert_non_null(resp);
    assert_non_null(strstr(resp, " 200 "));
    assert_non_null(strstr(resp, "\ndbpool_connections{"));
    free(resp);
    /* The slow clients were served alongside, not dropped to make room. */
    int dropped = 0;
    for (int i = 0; i < SLOW_CLIENTS; i++)
        dropped += closed_within(slow[i], 0);
    assert_int_equal(dropped, 0);
    int64_t left = IDLE_CLOSE_BOUND_MS - (dbt_now_ms() - t0);
    bool idle_closed = closed_within(idle, left > 0 ? (int)left : 0);
    if (!idle_closed)
        fprintf(stderr, "a silent connection was still open after %d ms\n", IDLE_CLOSE_BOUND_MS);
    assert_true(idle_closed);
    close(idle);
    for (int i = 0; i < SLOW_CLIENTS; i++)
        close(slow[i]);

    for (int i = 0; i < 1000 && !catches_sigint(c.pid); i++)
        dbt_sleep_ms(10);
    assert_int_equal(kill(c.pid, SIGINT), 0);
    dbt_run r = wait_cli(&c);
    expect_ok(&r);
    dbt_run_free(&r);
}

/*
 * As many local clients as the server takes at once (64), each sending
 * its request a byte at a time, never idle long enough to be timed out:
 * they held every place for the whole run and no scrape was answered.
 * Now no connection lives longer than 8 s, and a scrape is answered
 * within that (the bound here leaves room for a loaded machine).
 */
#define TRICKLERS 64
#define TRICKLE_BOUND_MS 20000

static void test_metrics_trickling_clients_cut(void **state) {
    (void)state;
    int port;
    child c = bench_serving_metrics("127.0.0.1", &port, "60", "1", "1");
    free(first_response(&c, port, "/metrics"));
    int slow[TRICKLERS];
    for (int i = 0; i < TRICKLERS; i++) {
        slow[i] = connect_local(port);
        assert_true(slow[i] >= 0);
    }
    static const char req[] = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
    int64_t t0 = dbt_now_ms();
    char *resp = NULL;
    for (size_t byte = 0; dbt_now_ms() - t0 < TRICKLE_BOUND_MS; byte++) {
        for (int i = 0; i < TRICKLERS; i++) /* a byte each; the header never ends */
            send(slow[i], byte < sizeof req - 1 ? &req[byte] : "y", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        resp = scrape_within(port, 500);
        if (resp && strstr(resp, " 200 "))
            break;
        free(resp);
        resp = NULL;
    }
    if (!resp)
        fprintf(stderr, "no scrape answered within %d ms beside %d trickling clients\n", TRICKLE_BOUND_MS,
                TRICKLERS);
    assert_non_null(resp);
    assert_non_null(strstr(resp, "\ndbpool_connections{"));
    free(resp);
    /* They were cut, not served for ever. */
    int cut = 0;
    for (int i = 0; i < TRICKLERS; i++) {
        cut += closed_within(slow[i], 0);
        close(slow[i]);
    }
    assert_true(cut > 0);

    for (int i = 0; i < 1000 && !catches_sigint(c.pid); i++)
        dbt_sleep_ms(10);
    assert_int_equal(kill(c.pid, SIGINT), 0);
    dbt_run r = wait_cli(&c);
    expect_ok(&r);
    dbt_run_free(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bench_cycle_json),
        cmocka_unit_test(test_bench_no_hold_no_overhead),
        cmocka_unit_test(test_bench_hold_on_time),
        cmocka_unit_test(test_bench_statement),
        cmocka_unit_test(test_bench_connect_per_query),
        cmocka_unit_test(test_bench_oversubscribed),
        cmocka_unit_test(test_bench_burst),
        cmocka_unit_test(test_bench_table),
        cmocka_unit_test(test_bench_pool_size_from_url),
        cmocka_unit_test(test_bench_query_not_utf8),
        cmocka_unit_test(test_bench_error_sample_keeps_utf8),
        cmocka_unit_test(test_bench_hold_minus_zero),
        cmocka_unit_test(test_bench_duration_as_written),
        cmocka_unit_test(test_bench_stop_cuts_holds),
        cmocka_unit_test(test_stop_while_stdout_full),
        cmocka_unit_test(test_bench_burst_interrupted),
        cmocka_unit_test(test_bench_stuck_op_bounded),
        cmocka_unit_test(test_bench_waiting_at_stop),
        cmocka_unit_test(test_bench_progress_fits_terminal),
        cmocka_unit_test(test_bench_verbose_log_not_glued),
        cmocka_unit_test(test_stat_lines),
        cmocka_unit_test(test_stat_resumes_after_stop),
        cmocka_unit_test(test_output_into_closed_pipe),
#ifdef DBPOOL_HAVE_PG
        cmocka_unit_test(test_stat_connect_bounded),
        cmocka_unit_test(test_stat_stuck_op_bounded),
        cmocka_unit_test(test_stat_outage_paced_and_explained),
#endif
        cmocka_unit_test(test_usage_errors),
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_bench_help_hold_range_holds),
        cmocka_unit_test(test_stat_help_bounds_hold),
        cmocka_unit_test(test_connect_failure_and_no_password),
#ifdef DBPOOL_HAVE_PG
        cmocka_unit_test(test_bench_connect_timeout_names_option),
#endif
        cmocka_unit_test(test_top_level_mistakes),
        cmocka_unit_test(test_misplaced_url_not_echoed),
        cmocka_unit_test(test_metrics_listen_refused),
        cmocka_unit_test(test_bench_counts_leaks),
        cmocka_unit_test(test_metrics_served),
        cmocka_unit_test(test_metrics_listen_port_taken),
        cmocka_unit_test(test_metrics_slow_clients),
        cmocka_unit_test(test_metrics_trickling_clients_cut),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
