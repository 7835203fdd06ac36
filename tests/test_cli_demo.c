/*
 * test_cli_demo.c — the `dbpool demo` and `dbpool check` commands, run as a
 * user runs them (a child process), their JSON parsed with jansson.
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
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <spawn.h>
#include <sqlite3.h>
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define SAMPLE DBPOOL_SOURCE_DIR "/data/sample_input.txt"

static void write_file(const char *path, const char *data, size_t len) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static bool exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* A fresh directory under the test's temporary directory. */
static const char *fresh_dir(const char *name, char *buf, size_t cap) {
    snprintf(buf, cap, "%s/%s", dbt_tmpdir(), name);
    assert_int_equal(mkdir(buf, 0700), 0);
    return buf;
}

static size_t dir_entries(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static size_t count_char(const char *s, char c) {
    size_t n = 0;
    for (; *s; s++)
        n += *s == c;
    return n;
}

static json_int_t get_int(const json_t *obj, const char *key) {
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v)) {
        fprintf(stderr, "\"%s\" is missing or not an integer\n", key);
        fail();
    }
    return json_integer_value(v);
}

static const char *get_str(const json_t *obj, const char *key) {
    json_t *v = json_object_get(obj, key);
    if (!json_is_string(v)) {
        fprintf(stderr, "\"%s\" is missing or not a string\n", key);
        fail();
    }
    return json_string_value(v);
}

/* The non-blank lines of the sample input, as the demo should read them. */
static size_t sample_labels(char labels[][128], size_t max) {
    char *text = dbt_slurp(SAMPLE);
    assert_non_null(text);
    size_t n = 0;
    for (char *line = strtok(text, "\r\n"); line && n < max; line = strtok(NULL, "\r\n"))
        if (*line)
            snprintf(labels[n++], 128, "%s", line);
    free(text);
    return n;
}

/* Rows are exactly `labels`, with ids first_id, first_id+1, ... */
static void assert_rows(const json_t *doc, long long first_id, char labels[][128], size_t n) {
    assert_int_equal(get_int(doc, "rows_inserted"), n);
    json_t *rows = json_object_get(doc, "rows");
    assert_true(json_is_array(rows));
    assert_int_equal(json_array_size(rows), n);
    for (size_t i = 0; i < n; i++) {
        json_t *row = json_array_get(rows, i);
        assert_int_equal(get_int(row, "id"), first_id + (long long)i);
        assert_string_equal(get_str(row, "label"), labels[i]);
    }
}

/* The output file holds the same document as stdout. */
static void assert_file_matches(const char *path, const json_t *doc) {
    char *text = dbt_slurp(path);
    assert_non_null(text);
    json_t *file_doc = dbt_json_parse(text);
    assert_true(json_equal(file_doc, (json_t *)doc));
    json_decref(file_doc);
    free(text);
}

static void test_demo_sample(void **state) {
    (void)state;
    char dir[600], out[700];
    fresh_dir("sample", dir, sizeof dir);
    snprintf(out, sizeof out, "%s/out.json", dir);
    dbt_run r = dbt_run_cli((const char *[]){"demo", "--input", SAMPLE, "--output", out, NULL});
    if (r.status != 0)
        fprintf(stderr, "stderr: %s\n", r.err);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.err, ""); /* no --verbose: stderr stays quiet */

    json_t *doc = dbt_json_parse(r.out);
    char labels[16][128];
    size_t n = sample_labels(labels, 16);
    assert_int_equal(n, 7);
    assert_rows(doc, 1, labels, n);

    json_t *health = json_object_get(doc, "health");
    assert_string_equal(get_str(health, "status"), "healthy");
    assert_string_equal(get_str(health, "backend"), "sqlite");
    const char *version = get_str(health, "sqlite_version");
    assert_true(strncmp(version, "3.", 2) == 0);
    assert_string_equal(version, sqlite3_libversion());
    assert_true(json_is_number(json_object_get(health, "round_trip_ms")));
    assert_true(json_number_value(json_object_get(health, "round_trip_ms")) >= 0.0);

    json_t *stats = json_object_get(doc, "pool_stats");
    assert_true(json_is_object(stats));
    assert_true(get_int(stats, "created") >= 1);
    assert_true(get_int(stats, "reused") >= 1);
    assert_true(get_int(stats, "acquired") >= 2);
    assert_int_equal(get_int(stats, "pool_size"), 5);
    assert_int_equal(get_int(stats, "in_use"), 0);
    assert_true(get_int(stats, "peak") >= 1);
    assert_int_equal(get_int(stats, "timeouts"), 0);
    assert_int_equal(get_int(stats, "total"),
                     get_int(stats, "idle") + get_int(stats, "in_use") + get_int(stats, "connecting"));
    assert_true(json_is_object(json_object_get(stats, "destroyed_by")));
    assert_true(json_is_integer(json_object_get(json_object_get(stats, "destroyed_by"), "idle_timeout")));

    assert_file_matches(out, doc);
    assert_int_equal(dir_entries(dir), 1); /* no temporary left next to it */
    json_decref(doc);
    dbt_run_free(&r);
}

static void test_demo_pool_size_and_options(void **state) {
    (void)state;
    char dir[600], out[700];
    fresh_dir("poolsize", dir, sizeof dir);
    snprintf(out, sizeof out, "%s/out.json", dir);
    dbt_run r = dbt_run_cli((const char *[]){"demo", "--input", SAMPLE, "--output", out, "--pool-size", "3",
                                             "--timeout", "2.5", "--retries=0", NULL});
    if (r.status != 0)
        fprintf(stderr, "stderr: %s\n", r.err);
    assert_int_equal(r.status, 0);
    json_t *doc = dbt_json_parse(r.out);
    assert_int_equal(get_int(json_object_get(doc, "pool_stats"), "pool_size"), 3);
    assert_file_matches(out, doc);
    json_decref(doc);
    dbt_run_free(&r);
}

static void test_demo_file_db_appends(void **state) {
    (void)state;
    char dir[600], out[700], db[700];
    fresh_dir("append", dir, sizeof dir);
    snprintf(out, sizeof out, "%s/out.json", dir);
    snprintf(db, sizeof db, "sqlite:%s/events.db", dir);
    char labels[16][128];
    size_t n = sample_labels(labels, 16);

    long long first_ids[] = {1, 8};
    for (int run = 0; run < 2; run++) {
        dbt_run r =
            dbt_run_cli((const char *[]){"demo", "--input", SAMPLE, "--output", out, "--db", db, NULL});
        if (r.status != 0)
            fprintf(stderr, "run %d stderr: %s\n", run + 1, r.err);
        assert_int_equal(r.status, 0);
        json_t *doc = dbt_json_parse(r.out);
        assert_rows(doc, first_ids[run], labels, n);
        assert_file_matches(out, doc);
        json_decref(doc);
        dbt_run_free(&r);
    }

    dbt_run r = dbt_run_cli(
        (const char *[]){"demo", "--input", SAMPLE, "--output", out, "--db", db, "--reset", NULL});
    assert_int_equal(r.status, 0);
    json_t *doc = dbt_json_parse(r.out);
    assert_rows(doc, 1, labels, n);
    json_decref(doc);
    dbt_run_free(&r);
}

static void test_demo_blank_lines_and_crlf(void **state) {
    (void)state;
    char dir[600], in[700], out[700];
    fresh_dir("crlf", dir, sizeof dir);
    snprintf(in, sizeof in, "%s/in.txt", dir);
    snprintf(out, sizeof out, "%s/out.json", dir);
    static const char input[] = "\r\nfirst\r\n\r\n\n   \nsecond label\r\ncaf\xc3\xa9 \xe2\x9c\x93\n\nlast";
    write_file(in, input, sizeof input - 1);
    dbt_run r = dbt_run_cli((const char *[]){"demo", "--input", in, "--output", out, NULL});
    if (r.status != 0)
        fprintf(stderr, "stderr: %s\n", r.err);
    assert_int_equal(r.status, 0);
    json_t *doc = dbt_json_parse(r.out);
    char labels[4][128] = {"first", "second label", "caf\xc3\xa9 \xe2\x9c\x93", "last"};
    assert_rows(doc, 1, labels, 4);
    json_decref(doc);
    dbt_run_free(&r);
}

/* A failed demo: the exit code, exactly one line on stderr naming the
 * problem, nothing on stdout, and nothing at all in the output directory. */
static void expect_demo_error(const char *name, const char *const *extra, const char *input, int exit_code,
                              const char *mentions) {
    char dir[600], out[700];
    fresh_dir(name, dir, sizeof dir);
    snprintf(out, sizeof out, "%s/out.json", dir);
    const char *args[24] = {"demo"};
    size_t n = 1;
    if (input) {
        args[n++] = "--input";
        args[n++] = input;
    }
    args[n++] = "--output";
    args[n++] = out;
    for (; *extra; extra++)
        args[n++] = *extra;
    args[n] = NULL;
    dbt_run r = dbt_run_cli(args);
    if (r.status != exit_code || count_char(r.err, '\n') != 1 || !strstr(r.err, mentions))
        fprintf(stderr, "case %s: exit %d, stderr: %s", name, r.status, r.err);
    assert_int_equal(r.status, exit_code);
    assert_int_equal(count_char(r.err, '\n'), 1);
    assert_true(r.err[strlen(r.err) - 1] == '\n');
    assert_true(strncmp(r.err, "dbpool demo: ", 13) == 0);
    assert_non_null(strstr(r.err, mentions));
    assert_string_equal(r.out, "");
    assert_false(exists(out));
    assert_int_equal(dir_entries(dir), 0);
    dbt_run_free(&r);
}

static void test_demo_errors(void **state) {
    (void)state;
    char missing[600];
    snprintf(missing, sizeof missing, "%s/no-such-input.txt", dbt_tmpdir());
    expect_demo_error("e_missing_input", (const char *[]){NULL}, missing, 1, "no-such-input.txt");
    expect_demo_error("e_bad_db", (const char *[]){"--db", "sqlite:/nonexistent/dir/x.db", NULL}, SAMPLE, 1,
                      "DBPOOL_E");
    expect_demo_error("e_pool0", (const char *[]){"--pool-size", "0", NULL}, SAMPLE, 2, "--pool-size");
    expect_demo_error("e_poolx", (const char *[]){"--pool-size", "five", NULL}, SAMPLE, 2, "--pool-size");
    expect_demo_error("e_timeout_neg", (const char *[]){"--timeout", "-1", NULL}, SAMPLE, 2, "--timeout");
    expect_demo_error("e_timeout_zero", (const char *[]){"--timeout", "0", NULL}, SAMPLE, 2, "--timeout");
    expect_demo_error("e_timeout_nan", (const char *[]){"--timeout", "soon", NULL}, SAMPLE, 2, "--timeout");
    expect_demo_error("e_retries", (const char *[]){"--retries", "-2", NULL}, SAMPLE, 2, "--retries");
    expect_demo_error("e_unknown", (const char *[]){"--frobnicate", NULL}, SAMPLE, 2, "--frobnicate");
    expect_demo_error("e_no_value", (const char *[]){"--db", NULL}, SAMPLE, 2, "--db");
    expect_demo_error("e_no_input", (const char *[]){NULL}, NULL, 2, "--input");
    expect_demo_error("e_reset_value", (const char *[]){"--reset=yes", NULL}, SAMPLE, 2,
                      "option --reset takes no value");
    expect_demo_error("e_verbose_value", (const char *[]){"--verbose=1", NULL}, SAMPLE, 2,
                      "option --verbose takes no value");
}

static void test_demo_missing_output_flag(void **state) {
    (void)state;
    dbt_run r = dbt_run_cli((const char *[]){"demo", "--input", SAMPLE, NULL});
    assert_int_equal(r.status, 2);
    assert_int_equal(count_char(r.err, '\n'), 1);
    assert_non_null(strstr(r.err, "--output"));
    assert_string_equal(r.out, "");
    dbt_run_free(&r);
}

static void test_demo_bad_input_lines(void **state) {
    (void)state;
    char in[600];
    snprintf(in, sizeof in, "%s/long.txt", dbt_tmpdir());
    size_t len = 5 + 4097 + 1;
    char *text = malloc(len);
    assert_non_null(text);
    memcpy(text, "fine\n", 5);
    memset(text + 5, 'x', 4097);
    text[len - 1] = '\n';
    write_file(in, text, len);
    free(text);
    expect_demo_error("e_long_line", (const char *[]){NULL}, in, 1, "line 2");

    /* Exactly 4096 bytes plus CRLF is still a label. */
    char dir[600], out[700];
    fresh_dir("max_line", dir, sizeof dir);
    snprintf(out, sizeof out, "%s/out.json", dir);
    text = malloc(4098);
    assert_non_null(text);
    memset(text, 'y', 4096);
    memcpy(text + 4096, "\r\n", 2);
    write_file(in, text, 4098);
    free(text);
    dbt_run r = dbt_run_cli((const char *[]){"demo", "--input", in, "--output", out, NULL});
    assert_int_equal(r.status, 0);
    json_t *doc = dbt_json_parse(r.out);
    assert_int_equal(strlen(get_str(json_array_get(json_object_get(doc, "rows"), 0), "label")), 4096);
    json_decref(doc);
    dbt_run_free(&r);

    snprintf(in, sizeof in, "%s/latin1.txt", dbt_tmpdir());
    static const char latin1[] = "ok\nalso ok\ncaf\xe9\n";
    write_file(in, latin1, sizeof latin1 - 1);
    expect_demo_error("e_utf8", (const char *[]){NULL}, in, 1, "line 3");
}

/* Run the command with stdout and stderr to files, and return its exit
 * code and its peak resident size in KiB (from wait4). */
static int run_cli_rss(const char *const *args, long *maxrss_kib, char **err) {
    char out_path[600], err_path[600];
    snprintf(out_path, sizeof out_path, "%s/rss.stdout", dbt_tmpdir());
    snprintf(err_path, sizeof err_path, "%s/rss.stderr", dbt_tmpdir());
    pid_t pid = dbt_spawn_cli(args, DBT_STDOUT_PATH(out_path), err_path, NULL);
    int st;
    struct rusage ru;
    assert_int_equal(wait4(pid, &st, 0, &ru), pid);
    *maxrss_kib = ru.ru_maxrss;
    *err = dbt_slurp(err_path);
    assert_non_null(*err);
    unlink(out_path);
    unlink(err_path);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* A file without line ends (/dev/zero, a binary) is refused after its
 * first 4 KiB: it is not read whole into memory first (getline grew its
 * buffer without bound, and a failed allocation read as the end of the
 * file: a run over /dev/zero either took all memory or stored nothing
 * and reported success). A sparse 64 MiB file of zeros without a '\n'
 * stands in for /dev/zero: reading it whole would show in the peak RSS. */
static void test_demo_input_without_line_ends(void **state) {
    (void)state;
    char dir[600], in[700], out[700];
    fresh_dir("no_line_ends", dir, sizeof dir);
    snprintf(in, sizeof in, "%s/zeros.bin", dir);
    snprintf(out, sizeof out, "%s/out.json", dir);
    int fd = open(in, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 64L << 20), 0);
    assert_int_equal(close(fd), 0);

    long base_kib, big_kib;
    char *err;
    int status =
        run_cli_rss((const char *[]){"demo", "--input", SAMPLE, "--output", out, NULL}, &base_kib, &err);
    assert_int_equal(status, 0);
    free(err);
    assert_int_equal(unlink(out), 0);
    status = run_cli_rss((const char *[]){"demo", "--input", in, "--output", out, NULL}, &big_kib, &err);
    if (status != 1 || big_kib > base_kib + 16 * 1024)
        fprintf(stderr, "exit %d, peak RSS %ld KiB (a normal run: %ld KiB), stderr: %s", status, big_kib,
                base_kib, err);
    assert_int_equal(status, 1);
    assert_non_null(strstr(err, "line 1 is more than 4096 bytes"));
    assert_true(big_kib <= base_kib + 16 * 1024);
    assert_false(exists(out));
    free(err);
    unlink(in);
}

static void test_demo_output_dir_missing(void **state) {
    (void)state;
    char out[600];
    snprintf(out, sizeof out, "%s/no-such-dir/out.json", dbt_tmpdir());
    dbt_run r = dbt_run_cli((const char *[]){"demo", "--input", SAMPLE, "--output", out, NULL});
    assert_int_equal(r.status, 1);
    assert_int_equal(count_char(r.err, '\n'), 1);
    assert_string_equal(r.out, "");
    assert_false(exists(out));
    dbt_run_free(&r);
}

/* An output path that cannot take the report is refused before the
 * database is touched: a failed run writes no report, so it must not have
 * stored the rows either. */
static void test_demo_output_refused_before_db(void **state) {
    (void)state;
    char dir[600], db_path[700], db_url[720], long_name[1000];
    fresh_dir("refused_output", dir, sizeof dir);
    snprintf(db_path, sizeof db_path, "%s/events.db", dir);
    snprintf(db_url, sizeof db_url, "sqlite:%s", db_path);
    char name300[301];
    memset(name300, 'n', 300);
    name300[300] = '\0';
    snprintf(long_name, sizeof long_name, "%s/%s", dir, name300);
    char trailing_slash[700];
    snprintf(trailing_slash, sizeof trailing_slash, "%s/", dir);

    struct {
        const char *output;
        int exit_code;
        const char *mentions;
    } cases[] = {
        {"", 2, "--output is empty"},
        {long_name, 2, "300 bytes"},
        {trailing_slash, 2, "ends with '/'"},
        /* root passes access(W_OK) on /proc, where no file can be created:
         * only creating the temporary file tells. */
        {"/proc/dbpool-demo-report.json", 1, "cannot create a file"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (strncmp(cases[i].output, "/proc/", 6) == 0 && !exists("/proc/self"))
            continue;
        dbt_run r = dbt_run_cli(
            (const char *[]){"demo", "--input", SAMPLE, "--output", cases[i].output, "--db", db_url, NULL});
        if (r.status != cases[i].exit_code || !strstr(r.err, cases[i].mentions))
            fprintf(stderr, "case %zu: exit %d, stderr: %s", i, r.status, r.err);
        assert_int_equal(r.status, cases[i].exit_code);
        assert_int_equal(count_char(r.err, '\n'), 1);
        assert_true(strncmp(r.err, "dbpool demo: ", 13) == 0);
        assert_non_null(strstr(r.err, cases[i].mentions));
        assert_string_equal(r.out, "");
        assert_false(exists(db_path));         /* no database, so no rows stored */
        assert_int_equal(dir_entries(dir), 0); /* no temporary left behind */
        dbt_run_free(&r);
    }
}

/* The report is renamed over --output: an existing device, FIFO or socket
 * there would be replaced by a regular file (as root, `--output /dev/null`
 * replaced the system's /dev/null). It is refused before the database is
 * touched, and left as it was. A FIFO stands in for a device here. */
static void test_demo_output_not_regular_file(void **state) {
    (void)state;
    char dir[600], fifo[700], db_path[700], db_url[720];
    fresh_dir("output_fifo", dir, sizeof dir);
    snprintf(fifo, sizeof fifo, "%s/report.fifo", dir);
    snprintf(db_path, sizeof db_path, "%s/events.db", dir);
    snprintf(db_url, sizeof db_url, "sqlite:%s", db_path);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    dbt_run r =
        dbt_run_cli((const char *[]){"demo", "--input", SAMPLE, "--output", fifo, "--db", db_url, NULL});
    if (r.status != 1)
        fprintf(stderr, "exit %d, stderr: %s", r.status, r.err);
    assert_int_equal(r.status, 1);
    assert_int_equal(count_char(r.err, '\n'), 1);
    assert_non_null(strstr(r.err, "not a regular file"));
    assert_string_equal(r.out, "");
    struct stat st;
    assert_int_equal(lstat(fifo, &st), 0);
    assert_true(S_ISFIFO(st.st_mode));
    assert_false(exists(db_path));         /* refused before the database */
    assert_int_equal(dir_entries(dir), 1); /* the FIFO alone: no temporary */
    dbt_run_free(&r);
}

/* A symbolic link as --output: the report goes to the file it names, and
 * the link stays a link (the rename used to replace the link with a new
 * file, leaving the old report in the file it pointed to). */
static void test_demo_output_through_symlink(void **state) {
    (void)state;
    char dir[600], target[700], link[700];
    fresh_dir("output_link", dir, sizeof dir);
    snprintf(target, sizeof target, "%s/real.json", dir);
    snprintf(link, sizeof link, "%s/link.json", dir);
    write_file(target, "old\n", 4);
    assert_int_equal(symlink("real.json", link), 0);
    dbt_run r = dbt_run_cli((const char *[]){"demo", "--input", SAMPLE, "--output", link, NULL});
    if (r.status != 0)
        fprintf(stderr, "exit %d, stderr: %s", r.status, r.err);
    assert_int_equal(r.status, 0);
    struct stat st;
    assert_int_equal(lstat(link, &st), 0);
    assert_true(S_ISLNK(st.st_mode));
    json_t *doc = dbt_json_parse(r.out);
    assert_file_matches(target, doc);
    json_decref(doc);
    assert_int_equal(dir_entries(dir), 2); /* the link and its file: no temporary */
    dbt_run_free(&r);
}

/* The report replaces --output once the rows are committed: an --output
 * that is the input file lost the labels, and one that is the SQLite
 * database lost the database (the rows just stored included). Both are
 * refused before anything is touched, also through another spelling of
 * the path and before the database exists. */
static void test_demo_output_is_input_or_database(void **state) {
    (void)state;
    char dir[600], in[700], in_other[700], db_path[700], db_url[720], out[700];
    fresh_dir("output_clash", dir, sizeof dir);
    snprintf(in, sizeof in, "%s/labels.txt", dir);
    snprintf(in_other, sizeof in_other, "%s/../output_clash/./labels.txt", dir);
    snprintf(db_path, sizeof db_path, "%s/events.db", dir);
    snprintf(db_url, sizeof db_url, "sqlite:%s", db_path);
    snprintf(out, sizeof out, "%s/out.json", dir);
    static const char labels[] = "one\ntwo\n";
    write_file(in, labels, sizeof labels - 1);

    const char *outputs[] = {in, in_other};
    for (size_t i = 0; i < 2; i++) {
        dbt_run r = dbt_run_cli(
            (const char *[]){"demo", "--input", in, "--output", outputs[i], "--db", db_url, NULL});
        if (r.status != 2)
            fprintf(stderr, "--output %s: exit %d, stderr: %s", outputs[i], r.status, r.err);
        assert_int_equal(r.status, 2);
        assert_int_equal(count_char(r.err, '\n'), 1);
        assert_non_null(strstr(r.err, "is the --input file"));
        assert_string_equal(r.out, "");
        char *text = dbt_slurp(in);
        assert_non_null(text);
        assert_string_equal(text, labels);
        free(text);
        assert_false(exists(db_path));
        dbt_run_free(&r);
    }

    /* A database that does not exist yet, named another way in the URL. */
    char db_url_other[760];
    snprintf(db_url_other, sizeof db_url_other, "sqlite://%s/../output_clash/events%%2Edb?journal_mode=wal",
             dir);
    dbt_run r =
        dbt_run_cli((const char *[]){"demo", "--input", in, "--output", db_path, "--db", db_url_other, NULL});
    if (r.status != 2)
        fprintf(stderr, "new database: exit %d, stderr: %s", r.status, r.err);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "is the database file of --db"));
    assert_false(exists(db_path));
    dbt_run_free(&r);

    /* An existing database with rows in it. */
    r = dbt_run_cli((const char *[]){"demo", "--input", in, "--output", out, "--db", db_url, NULL});
    assert_int_equal(r.status, 0);
    dbt_run_free(&r);
    r = dbt_run_cli((const char *[]){"demo", "--input", in, "--output", db_path, "--db", db_url, NULL});
    if (r.status != 2)
        fprintf(stderr, "existing database: exit %d, stderr: %s", r.status, r.err);
    assert_int_equal(r.status, 2);
    assert_int_equal(count_char(r.err, '\n'), 1);
    assert_non_null(strstr(r.err, "is the database file of --db"));
    assert_string_equal(r.out, "");
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM events", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 2); /* the first run's rows, and no more */
    sqlite3_finalize(st);
    sqlite3_close(db);
    dbt_run_free(&r);
}

#ifdef DBPOOL_HAVE_PG
/* Without --timeout a check of a server that accepts and never answers
 * ends after the 10 s its help gives, not the pool's 30 s acquire timeout. */
static void test_check_default_timeout(void **state) {
    (void)state;
    int port = 0;
    int fd = dbt_loopback_socket(&port, 8); /* listens, never accepts: the handshake completes, no reply */
    char url[128];
    snprintf(url, sizeof url, "postgresql://nobody@127.0.0.1:%d/db", port);
    int64_t t0 = dbt_now_ms();
    dbt_run r = dbt_run_cli((const char *[]){"check", url, NULL});
    int64_t took = dbt_now_ms() - t0;
    close(fd);
    if (r.status != 1 || took < 9000 || took > 20000)
        fail_msg("check of a deaf server: exit %d after %lld ms (want 1 after about 10 s); stderr: %s",
                 r.status, (long long)took, r.err);
    dbt_run_free(&r);
}

/* demo --timeout 1 against a server that never answers: the open gives up
 * after the second it was given, and the error names that bound. It used
 * to name the library's default connect_timeout_ms (10000), which had not
 * applied: a reader would think the demo had waited 10 s. */
static void test_demo_timeout_bounds_connect(void **state) {
    (void)state;
    int port = 0;
    int fd = dbt_loopback_socket(&port, 8); /* listens, never accepts: the handshake completes, no reply */
    char url[128], out[600];
    snprintf(url, sizeof url, "postgresql://nobody@127.0.0.1:%d/db", port);
    snprintf(out, sizeof out, "%s/deaf.json", dbt_tmpdir());
    int64_t t0 = dbt_now_ms();
    dbt_run r = dbt_run_cli(
        (const char *[]){"demo", "--input", SAMPLE, "--output", out, "--db", url, "--timeout", "1", NULL});
    int64_t took = dbt_now_ms() - t0;
    close(fd);
    if (r.status != 1 || took > 8000)
        fail_msg("demo against a deaf server: exit %d after %lld ms (want 1 within about 1 s); stderr: %s",
                 r.status, (long long)took, r.err);
    if (!strstr(r.err, "DBPOOL_ETIMEDOUT") || strstr(r.err, "connect_timeout_ms 10000") ||
        !strstr(r.err, "connect_timeout_ms 1000"))
        fail_msg("the timeout's message should name the 1 s bound of --timeout: %s", r.err);
    /* The demo holds one lease at a time: a bigger pool cannot help, and
     * the advice used to say to raise --pool-size. */
    if (strstr(r.err, "--pool-size") || !strstr(r.err, "raise --timeout"))
        fail_msg("the advice after a time-out should be --timeout, not --pool-size: %s", r.err);
    dbt_run_free(&r);
}
#endif

static void test_check_healthy(void **state) {
    (void)state;
    dbt_run r = dbt_run_cli((const char *[]){"check", "sqlite::memory:", "--timeout", "5", NULL});
    if (r.status != 0)
        fprintf(stderr, "stdout: %s\nstderr: %s\n", r.out, r.err);
    assert_int_equal(r.status, 0);
    json_t *doc = dbt_json_parse(r.out);
    assert_string_equal(get_str(doc, "status"), "healthy");
    assert_string_equal(get_str(doc, "backend"), "sqlite");
    assert_string_equal(get_str(doc, "sqlite_version"), sqlite3_libversion());
    assert_true(json_is_number(json_object_get(doc, "round_trip_ms")));
    assert_null(json_object_get(doc, "error"));
    json_decref(doc);
    dbt_run_free(&r);
}

static void test_check_unhealthy(void **state) {
    (void)state;
    dbt_run r = dbt_run_cli((const char *[]){"check", "sqlite:/nonexistent/dir/x.db?mode=rw", NULL});
    assert_int_equal(r.status, 1);
    json_t *doc = dbt_json_parse(r.out);
    assert_string_equal(get_str(doc, "status"), "unhealthy");
    assert_true(strlen(get_str(doc, "error")) > 0);
    assert_true(strncmp(get_str(doc, "error_code"), "DBPOOL_E", 8) == 0);
    json_decref(doc);
    dbt_run_free(&r);

    /* A file that is not a database is unhealthy too (exit 2 is for a
     * wrong command line or URL). */
    r = dbt_run_cli((const char *[]){"check", dbt_not_a_database_url("junk.db"), NULL});
    if (r.status != 1)
        fail_msg("check of a file that is no database: exit %d: %s", r.status, r.err);
    doc = dbt_json_parse(r.out);
    assert_string_equal(get_str(doc, "status"), "unhealthy");
    json_decref(doc);
    dbt_run_free(&r);
}

/* A health check must not create the database it checks: a mistyped path
 * is unhealthy, and no file appears, unless the URL asks for creation. */
/* A scheme is read as the library reads it, whatever its case, and
 * sqlite3: is SQLite: an unhealthy report still names the backend (it
 * was null, and the "<backend>_version" key missing, for SQLITE: and
 * sqlite3: URLs that could not be opened). */
static void test_check_unhealthy_names_backend(void **state) {
    (void)state;
    static const char *const urls[] = {"SQLite:/nonexistent/dir/x.db?mode=rw",
                                       "sqlite3:/nonexistent/dir/x.db?mode=rw",
                                       "SQLITE3:/nonexistent/dir/x.db?mode=rw"};
    for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
        dbt_run r = dbt_run_cli((const char *[]){"check", urls[i], NULL});
        if (r.status != 1)
            fprintf(stderr, "%s: exit %d, stderr: %s", urls[i], r.status, r.err);
        assert_int_equal(r.status, 1);
        json_t *doc = dbt_json_parse(r.out);
        assert_string_equal(get_str(doc, "status"), "unhealthy");
        if (!json_is_string(json_object_get(doc, "backend")))
            fprintf(stderr, "%s: %s", urls[i], r.out);
        assert_string_equal(get_str(doc, "backend"), "sqlite");
        assert_true(json_is_null(json_object_get(doc, "sqlite_version")));
        json_decref(doc);
        dbt_run_free(&r);
    }
}

static void test_check_does_not_create_sqlite_file(void **state) {
    (void)state;
    char dir[600], path[700], url[800];
    fresh_dir("check_create", dir, sizeof dir);
    snprintf(path, sizeof path, "%s/typo.db", dir);
    const char *suffixes[] = {"", "?busy_timeout=100", "?pool_max=1&foreign_keys=on"};
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        snprintf(url, sizeof url, "sqlite:%s%s", path, suffixes[i]);
        dbt_run r = dbt_run_cli((const char *[]){"check", url, NULL});
        if (r.status != 1)
            fprintf(stderr, "%s: exit %d, stdout: %s\nstderr: %s\n", url, r.status, r.out, r.err);
        assert_int_equal(r.status, 1);
        json_t *doc = dbt_json_parse(r.out);
        assert_string_equal(get_str(doc, "status"), "unhealthy");
        assert_string_equal(get_str(doc, "error_code"), "DBPOOL_ENOTFOUND");
        assert_non_null(strstr(get_str(doc, "error"), "typo.db"));
        assert_non_null(strstr(get_str(doc, "error"), "does not exist"));
        json_decref(doc);
        assert_false(exists(path));
        assert_int_equal(dir_entries(dir), 0); /* no -wal or -shm either */
        dbt_run_free(&r);
    }

    /* A relative path names the working directory it was looked for in
     * (a check run by a service is not run where its user stands). */
    {
        char cwd[600];
        assert_non_null(getcwd(cwd, sizeof cwd));
        const char *rel = "dbpool_check_no_such_file.db";
        dbt_run r = dbt_run_cli((const char *[]){"check", "sqlite:dbpool_check_no_such_file.db", NULL});
        assert_int_equal(r.status, 1);
        json_t *doc = dbt_json_parse(r.out);
        assert_string_equal(get_str(doc, "error_code"), "DBPOOL_ENOTFOUND");
        const char *msg = get_str(doc, "error");
        if (!strstr(msg, rel) || !strstr(msg, "working directory") || !strstr(msg, cwd))
            fail_msg("relative path, run in %s: %s", cwd, msg);
        json_decref(doc);
        dbt_run_free(&r);
        assert_false(exists(rel));
    }

    /* A URL that asks for creation is obeyed; so are the other settings. */
    const char *creating[] = {"?mode=rwc", "?create_if_missing=true"};
    for (size_t i = 0; i < sizeof creating / sizeof creating[0]; i++) {
        unlink(path);
        snprintf(url, sizeof url, "sqlite:%s%s", path, creating[i]);
        dbt_run r = dbt_run_cli((const char *[]){"check", url, NULL});
        if (r.status != 0)
            fprintf(stderr, "%s: exit %d, stdout: %s\nstderr: %s\n", url, r.status, r.out, r.err);
        assert_int_equal(r.status, 0);
        assert_true(exists(path));
        dbt_run_free(&r);
    }

    /* An existing file is checked as before. */
    snprintf(url, sizeof url, "sqlite:%s", path);
    dbt_run r = dbt_run_cli((const char *[]){"check", url, NULL});
    assert_int_equal(r.status, 0);
    json_t *doc = dbt_json_parse(r.out);
    assert_string_equal(get_str(doc, "status"), "healthy");
    json_decref(doc);
    dbt_run_free(&r);
}

/* The journal mode stored in an SQLite file ("delete", "wal", ...). */
static void journal_mode_of(const char *path, char *out, size_t cap) {
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    snprintf(out, cap, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* A health check leaves an existing file's journal mode alone (the
 * library's default for files is WAL, which is written into the file);
 * a URL that sets journal_mode is obeyed. */
static void test_check_keeps_journal_mode(void **state) {
    (void)state;
    char dir[600], path[700], url[800], mode[32];
    fresh_dir("check_journal", dir, sizeof dir);
    snprintf(path, sizeof path, "%s/rollback.db", dir);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "CREATE TABLE t(x)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    journal_mode_of(path, mode, sizeof mode);
    assert_string_equal(mode, "delete");

    snprintf(url, sizeof url, "sqlite:%s", path);
    dbt_run r = dbt_run_cli((const char *[]){"check", url, NULL});
    assert_int_equal(r.status, 0);
    dbt_run_free(&r);
    journal_mode_of(path, mode, sizeof mode);
    assert_string_equal(mode, "delete");

    snprintf(url, sizeof url, "sqlite:%s?journal_mode=wal", path);
    r = dbt_run_cli((const char *[]){"check", url, NULL});
    assert_int_equal(r.status, 0);
    dbt_run_free(&r);
    journal_mode_of(path, mode, sizeof mode);
    assert_string_equal(mode, "wal");
}

/* A SQLite URL is read as the library reads it, percent-decoding
 * included: ":memory:" written "%3Amemory%3A" is the in-memory database
 * (check added create_if_missing=false to it and exited 2 with "leave out
 * mode= and create_if_missing=", which the user had not written); a
 * missing "a b.db" written "a%20b.db" is reported under its real name
 * (the message named 'a%20b.db'); a percent-encoded create_if_missing key
 * is the user's own say (check added create_if_missing=false after it,
 * and the later key won: the check refused to create the file). */
static void test_check_percent_encoded_sqlite_url(void **state) {
    (void)state;
    dbt_run r = dbt_run_cli((const char *[]){"check", "sqlite:%3Amemory%3A", NULL});
    if (r.status != 0)
        fprintf(stderr, "sqlite:%%3Amemory%%3A: exit %d, stdout: %s\nstderr: %s\n", r.status, r.out, r.err);
    assert_int_equal(r.status, 0);
    json_t *doc = dbt_json_parse(r.out);
    assert_string_equal(get_str(doc, "status"), "healthy");
    json_decref(doc);
    dbt_run_free(&r);

    char dir[600], path[700], url[800];
    fresh_dir("check_pct", dir, sizeof dir);
    snprintf(url, sizeof url, "sqlite:%s/a%%20b.db", dir);
    r = dbt_run_cli((const char *[]){"check", url, NULL});
    assert_int_equal(r.status, 1);
    doc = dbt_json_parse(r.out);
    assert_string_equal(get_str(doc, "error_code"), "DBPOOL_ENOTFOUND");
    const char *msg = get_str(doc, "error");
    if (!strstr(msg, "/a b.db' does not exist") || strstr(msg, "%20"))
        fail_msg("the missing file is not named as decoded: %s", msg);
    json_decref(doc);
    dbt_run_free(&r);
    assert_int_equal(dir_entries(dir), 0);

    snprintf(url, sizeof url, "sqlite:%s/c.db?create%%5Fif%%5Fmissing=true", dir);
    snprintf(path, sizeof path, "%s/c.db", dir);
    r = dbt_run_cli((const char *[]){"check", url, NULL});
    if (r.status != 0)
        fprintf(stderr, "%s: exit %d, stdout: %s\nstderr: %s\n", url, r.status, r.out, r.err);
    assert_int_equal(r.status, 0);
    assert_true(exists(path));
    dbt_run_free(&r);
}

static void test_check_usage(void **state) {
    (void)state;
    const char *const *cases[] = {
        (const char *[]){"check", NULL},
        (const char *[]){"check", "sqlite::memory:", "--timeout", "-1", NULL},
        (const char *[]){"check", "sqlite::memory:", "--bogus", NULL},
        (const char *[]){"check", "sqlite::memory:", "--verbose=1", NULL},
        (const char *[]){"check", "sqlite::memory:", "--help=yes", NULL},
    };
    const char *mentions[] = {"URL is missing", "--timeout", "unknown option '--bogus'",
                              "option --verbose takes no value", "option --help takes no value"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dbt_run r = dbt_run_cli(cases[i]);
        if (r.status != 2 || !strstr(r.err, mentions[i]))
            fprintf(stderr, "case %zu: exit %d, stderr: %s", i, r.status, r.err);
        assert_int_equal(r.status, 2);
        assert_int_equal(count_char(r.err, '\n'), 1);
        assert_true(strncmp(r.err, "dbpool check: ", 14) == 0);
        assert_non_null(strstr(r.err, mentions[i]));
        assert_string_equal(r.out, "");
        dbt_run_free(&r);
    }
}

/* A result that did not reach stdout says why (the system's reason):
 * "check the output stream" alone left a user guessing between a full
 * disk, a closed pipe and a read-only file. */
static void test_results_unwritable_stdout_say_why(void **state) {
    (void)state;
    if (!exists("/dev/full"))
        skip();
    char dir[512], url[600];
    fresh_dir("unwritable", dir, sizeof dir);
    snprintf(url, sizeof url, "sqlite:%s/u.db", dir);
    const char *const *cases[] = {
        (const char *[]){"check", url, NULL},
        (const char *[]){"stat", url, "0.05", "2", NULL},
        (const char *[]){"bench", url, "--duration", "0.2", "--threads", "1", NULL},
        (const char *[]){"bench", url, "--duration", "0.2", "--threads", "1", "--json", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *err = NULL;
        int status = dbt_run_cli_stdout(cases[i], "/dev/full", &err);
        if (status != 1 || !strstr(err, "No space left on device"))
            fprintf(stderr, "%s >/dev/full: exit %d, stderr: %s", cases[i][0], status, err);
        assert_int_equal(status, 1);
        assert_non_null(strstr(err, "cannot write"));
        assert_non_null(strstr(err, "No space left on device"));
        free(err);
    }
}

/* Help or a version that did not reach stdout is an error: a script must
 * not read "" with exit 0. */
static void test_help_and_version_unwritable_stdout(void **state) {
    (void)state;
    const char *const *cases[] = {
        (const char *[]){"--version", NULL},       (const char *[]){"--help", NULL},
        (const char *[]){"help", "demo", NULL},    (const char *[]){"demo", "--help", NULL},
        (const char *[]){"check", "--help", NULL}, (const char *[]){"bench", "--help", NULL},
        (const char *[]){"stat", "--help", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *err = NULL;
        int status;
        if (exists("/dev/full")) {
            status = dbt_run_cli_stdout(cases[i], "/dev/full", &err);
            if (status != 1 || !strstr(err, "cannot write"))
                fprintf(stderr, "%s %s >/dev/full: exit %d, stderr: %s", cases[i][0],
                        cases[i][1] ? cases[i][1] : "", status, err);
            assert_int_equal(status, 1);
            assert_int_equal(count_char(err, '\n'), 1);
            assert_non_null(strstr(err, "cannot write"));
            free(err);
        }
        status = dbt_run_cli_stdout(cases[i], NULL, &err);
        if (status != 1 || !strstr(err, "stdout is closed"))
            fprintf(stderr, "%s %s >&-: exit %d, stderr: %s", cases[i][0], cases[i][1] ? cases[i][1] : "",
                    status, err);
        assert_int_equal(status, 1);
        assert_non_null(strstr(err, "stdout is closed"));
        free(err);
    }
}

/* The ranges demo --help gives are the ones it takes: the help said
 * "N >= 1" for --pool-size and "N >= 0" for --retries, and 100001 or 1001
 * were refused as the command line's mistake. */
static void test_demo_help_ranges_hold(void **state) {
    (void)state;
    dbt_run h = dbt_run_cli((const char *[]){"demo", "--help", NULL});
    assert_int_equal(h.status, 0);
    static const struct {
        const char *opt, *range, *top, *past;
    } cases[] = {{"--pool-size", "1..100000", "100000", "100001"}, {"--retries", "0..1000", "1000", "1001"}};
    char dir[600], out[700];
    fresh_dir("help_ranges", dir, sizeof dir);
    snprintf(out, sizeof out, "%s/report.json", dir);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *line = strstr(h.out, cases[i].opt);
        assert_non_null(line);
        const char *end = strchr(line, '\n');
        if (!end || !strstr(line, cases[i].range) || strstr(line, cases[i].range) > end)
            fail_msg("demo --help does not give %s as %s: %.*s", cases[i].opt, cases[i].range,
                     end ? (int)(end - line) : 80, line);
        dbt_run r = dbt_run_cli(
            (const char *[]){"demo", "--input", SAMPLE, "--output", out, cases[i].opt, cases[i].top, NULL});
        if (r.status != 0)
            fail_msg("%s %s: exit %d: %s", cases[i].opt, cases[i].top, r.status, r.err);
        dbt_run_free(&r);
        r = dbt_run_cli(
            (const char *[]){"demo", "--input", SAMPLE, "--output", out, cases[i].opt, cases[i].past, NULL});
        assert_int_equal(r.status, 2);
        dbt_run_free(&r);
    }
    dbt_run_free(&h);
}

static void test_help_and_version(void **state) {
    (void)state;
    const char *const *cases[] = {
        (const char *[]){"--help", NULL},
        (const char *[]){"demo", "--help", NULL},
        (const char *[]){"check", "--help", NULL},
        (const char *[]){"help", "demo", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dbt_run r = dbt_run_cli(cases[i]);
        assert_int_equal(r.status, 0);
        assert_non_null(strstr(r.out, "Usage: dbpool"));
        assert_non_null(strstr(r.out, "Example"));
        assert_string_equal(r.err, "");
        dbt_run_free(&r);
    }
    dbt_run r = dbt_run_cli((const char *[]){"demo", "--help", NULL});
    static const char *const flags[] = {"--input",   "--output",  "--db",    "--pool-size",
                                        "--timeout", "--retries", "--reset", "--verbose"};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        assert_non_null(strstr(r.out, flags[i]));
    dbt_run_free(&r);

    /* The version, and what this build has (the switches it was built with). */
    r = dbt_run_cli((const char *[]){"--version", NULL});
    assert_int_equal(r.status, 0);
    char want[256];
    snprintf(want, sizeof want, "dbpool %s (backends: sqlite%s%s; metrics-listen: %s)\n", dbpool_version(),
#ifdef DBPOOL_HAVE_PG
             ", postgresql",
#else
             "",
#endif
#ifdef DBPOOL_HAVE_MYSQL
             ", mysql",
#else
             "",
#endif
#ifdef DBPOOL_HAVE_MICROHTTPD
             "yes"
#else
             "no"
#endif
    );
    assert_string_equal(r.out, want);
    assert_string_equal(r.err, "");
    dbt_run_free(&r);

    r = dbt_run_cli((const char *[]){"frobnicate", NULL});
    assert_int_equal(r.status, 2);
    assert_int_equal(count_char(r.err, '\n'), 1);
    dbt_run_free(&r);

    /* Help on a command that does not exist says so, not the general help. */
    r = dbt_run_cli((const char *[]){"help", "nosuch", NULL});
    if (r.status != 2)
        fprintf(stderr, "help nosuch: exit %d, stdout: %s\nstderr: %s", r.status, r.out, r.err);
    assert_int_equal(r.status, 2);
    assert_string_equal(r.out, "");
    assert_int_equal(count_char(r.err, '\n'), 1);
    assert_non_null(strstr(r.err, "no command 'nosuch'"));
    assert_non_null(strstr(r.err, "demo, check, bench, stat"));
    dbt_run_free(&r);
}

static void test_demo_verbose_logs_to_stderr(void **state) {
    (void)state;
    char dir[600], out[700];
    fresh_dir("verbose", dir, sizeof dir);
    snprintf(out, sizeof out, "%s/out.json", dir);
    dbt_run r = dbt_run_cli((const char *[]){"demo", "--input", SAMPLE, "--output", out, "--verbose", NULL});
    assert_int_equal(r.status, 0);
    json_t *doc = dbt_json_parse(r.out); /* stdout stays clean JSON */
    assert_int_equal(get_int(doc, "rows_inserted"), 7);
    assert_true(strlen(r.err) > 0);
    json_decref(doc);
    dbt_run_free(&r);
}

/*
 * A SIGTERM (or Ctrl-C) while the report is being written leaves no
 * temporary file: it takes effect once the report is in place. The demo
 * was killed between creating REPORT.tmp-XXXXXX and renaming it, and the
 * temporary (here megabytes of a half-written report) stayed next to the
 * output for good. The signal is sent as the report's temporary file
 * appears (inotify), while a large report is written.
 */
static void test_demo_signal_leaves_no_temporary(void **state) {
    (void)state;
    char dir[512], input[600], output[600], err_path[600];
    fresh_dir("sigterm", dir, sizeof dir);
    snprintf(input, sizeof input, "%s/many-labels.txt", dbt_tmpdir());
    snprintf(output, sizeof output, "%s/report.json", dir);
    snprintf(err_path, sizeof err_path, "%s/sigterm.stderr", dbt_tmpdir());
    FILE *f = fopen(input, "w");
    assert_non_null(f);
    for (int i = 0; i < 100000; i++)
        fprintf(f, "label number %d, long enough to make the report take a while\n", i);
    assert_int_equal(fclose(f), 0);

    int in = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    assert_true(in >= 0);
    assert_true(inotify_add_watch(in, dir, IN_CREATE) >= 0);
    pid_t pid = dbt_spawn_cli((const char *[]){"demo", "--input", input, "--output", output, NULL},
                              (dbt_stdout){.fd = -1, .other_end = -1, .path = "/dev/null"}, err_path, NULL);

    /* The first temporary is the probe of the directory, made before the
     * database is touched; the second is the report's. */
    int temporaries = 0;
    bool signalled = false;
    int64_t end = dbt_now_ms() + 60000;
    while (!signalled && dbt_now_ms() < end) {
        struct pollfd pfd = {in, POLLIN, 0};
        if (poll(&pfd, 1, 100) != 1) {
            if (waitpid(pid, NULL, WNOHANG) == pid)
                fail_msg("the demo ended before writing its report");
            continue;
        }
        char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
        ssize_t n = read(in, buf, sizeof buf);
        for (ssize_t off = 0; n > 0 && off < n;) {
            const struct inotify_event *ev = (const struct inotify_event *)(buf + off);
            if (ev->len && strstr(ev->name, ".tmp-") && ++temporaries == 2 && !signalled) {
                assert_int_equal(kill(pid, SIGTERM), 0);
                signalled = true;
            }
            off += (ssize_t)(sizeof *ev + ev->len);
        }
    }
    close(in);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(signalled);
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strstr(e->d_name, ".tmp-"))
            fail_msg("SIGTERM while the report was written left %s/%s behind", dir, e->d_name);
    closedir(d);
    /* The report, if there is one, is whole; and the signal was obeyed. */
    if (exists(output)) {
        char *text = dbt_slurp(output);
        assert_non_null(text);
        json_t *doc = dbt_json_parse(text);
        assert_int_equal(json_array_size(json_object_get(doc, "rows")), 100000);
        json_decref(doc);
        free(text);
    }
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM);
    unlink(output);
    unlink(input);
    unlink(err_path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_demo_sample),
        cmocka_unit_test(test_demo_pool_size_and_options),
        cmocka_unit_test(test_demo_file_db_appends),
        cmocka_unit_test(test_demo_blank_lines_and_crlf),
        cmocka_unit_test(test_demo_errors),
        cmocka_unit_test(test_demo_missing_output_flag),
        cmocka_unit_test(test_demo_bad_input_lines),
        cmocka_unit_test(test_demo_input_without_line_ends),
        cmocka_unit_test(test_demo_output_dir_missing),
        cmocka_unit_test(test_check_healthy),
#ifdef DBPOOL_HAVE_PG
        cmocka_unit_test(test_check_default_timeout),
        cmocka_unit_test(test_demo_timeout_bounds_connect),
#endif
        cmocka_unit_test(test_check_unhealthy),
        cmocka_unit_test(test_check_unhealthy_names_backend),
        cmocka_unit_test(test_check_usage),
        cmocka_unit_test(test_check_does_not_create_sqlite_file),
        cmocka_unit_test(test_check_keeps_journal_mode),
        cmocka_unit_test(test_check_percent_encoded_sqlite_url),
        cmocka_unit_test(test_demo_output_refused_before_db),
        cmocka_unit_test(test_demo_output_not_regular_file),
        cmocka_unit_test(test_demo_output_through_symlink),
        cmocka_unit_test(test_demo_output_is_input_or_database),
        cmocka_unit_test(test_help_and_version),
        cmocka_unit_test(test_demo_help_ranges_hold),
        cmocka_unit_test(test_help_and_version_unwritable_stdout),
        cmocka_unit_test(test_results_unwritable_stdout_say_why),
        cmocka_unit_test(test_demo_verbose_logs_to_stderr),
        cmocka_unit_test(test_demo_signal_leaves_no_temporary),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
