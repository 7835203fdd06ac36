/*
 * demo.c — `dbpool demo`: labels from a file go into a table through one
 * lease, come back through a second lease of the same pool (showing reuse),
 * and the pool's health and counters are reported as JSON.
 */
#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define CMD "demo"
#define MAX_LABEL_BYTES 4096

static const char usage_text[] =
    "Usage: dbpool demo --input FILE --output FILE [options]\n"
    "\n"
    "Reads one label per line from the input file, inserts them into the table\n"
    "events(id INTEGER PRIMARY KEY, label TEXT NOT NULL) in one transaction,\n"
    "reads them back in id order through a second lease of the same pool (to\n"
    "show reuse), runs a health check, and writes a JSON report to the output\n"
    "file and to stdout. Logs and errors go to stderr.\n"
    "\n"
    "Options:\n"
    "  --input FILE       labels, one per line, UTF-8, at most 4096 bytes each;\n"
    "                     blank lines are skipped, CRLF line ends are accepted\n"
    "  --output FILE      where the JSON report goes; written to FILE.tmp-XXXXXX\n"
    "                     first and renamed, so it is never left half-written\n"
    "                     (a Ctrl-C or SIGTERM meanwhile ends the command once\n"
    "                     it is in place, leaving no temporary file);\n"
    "                     an existing FILE must be a regular file (a symbolic\n"
    "                     link is followed), not a device such as /dev/null,\n"
    "                     and neither the input file nor the SQLite database\n"
    "  --db URL           database URL (default sqlite::memory:); with a file\n"
    "                     database each run appends after the highest id\n"
    "  --pool-size N      maximum connections in the pool, 1..100000 (default 5)\n"
    "  --timeout SECONDS  how long an acquire may wait and a statement may run\n"
    "                     (the server's statement timeout), > 0, fractions\n"
    "                     allowed (default 30); a server that stops answering\n"
    "                     mid-statement is given up on at most as long again\n"
    "                     (5 s at most) later, so the demo always ends\n"
    "  --retries N        extra connect attempts after the first, 0..1000\n"
    "                     (default 3)\n"
    "  --reset            drop the events table first, so ids start again at 1\n"
    "  --verbose          log the steps and the pool's activity on stderr\n"
    "  --help             show this help\n"
    "\n"
    "Exit status: 0 report written; 1 the work failed (input file, database,\n"
    "output file), and no report is written; 2 the command line is wrong.\n"
    "\n"
    "Example:\n"
    "  dbpool demo --input data/sample_input.txt --output /tmp/demo.json \\\n"
    "              --db sqlite:/tmp/demo.db --pool-size 3 --timeout 2.5\n";

typedef struct demo_args {
    const char *input;
    const char *output;
    const char *db;
    int pool_size;
    int64_t timeout_ms; /* 0: the library's default */
    int retries;        /* -1: the library's default */
    bool reset;
    bool verbose;
} demo_args;

typedef struct labels {
    char **v;
    size_t n, cap;
} labels;

static bool verbose;

static void progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void progress(const char *fmt, ...) {
    if (!verbose)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs("dbpool " CMD ": ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void labels_free(labels *l) {
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
}

static bool labels_push(labels *l, const char *s, size_t len) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        char **v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return false;
        l->v = v;
        l->cap = cap;
    }
    char *copy = malloc(len + 1);
    if (!copy)
        return false;
    memcpy(copy, s, len);
    copy[len] = '\0';
    l->v[l->n++] = copy;
    return true;
}

/* Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF.
 * Anything else would be stored as-is by SQLite and then break the JSON. */
static bool valid_utf8(const unsigned char *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        size_t extra;
        unsigned cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            extra = 1, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            extra = 2, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            extra = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (len - i <= extra)
            return false;
        for (size_t k = 1; k <= extra; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += extra + 1;
    }
    return true;
}

static bool blank(const char *s, size_t len) {
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t')
            return false;
    return true;
}

/*
 * The next line of f into buf (at most cap bytes, without its '\n'), its
 * length in *len. Returns 1 for a line, 0 at the end of the file, -1 on a
 * read error (errno set), or -2 when the line holds more than cap bytes:
 * it is not read further, so that a file without line ends (/dev/zero, a
 * binary) cannot take all memory, as getline() would.
 */
static int read_line(FILE *f, char *buf, size_t cap, size_t *len) {
    size_t n = 0;
    for (;;) {
        int c = getc(f);
        if (c == EOF) {
            if (ferror(f))
                return -1;
            *len = n;
            return n > 0 ? 1 : 0;
        }
        if (c == '\n') {
            *len = n;
            return 1;
        }
        if (n == cap)
            return -2;
        buf[n++] = (char)c;
    }
}

/* Returns CLI_EXIT_OK or the exit code after reporting the problem. */
static int read_labels(const char *path, labels *out) {
    FILE *f = fopen(path, "r");
    if (!f)
        return cli_fail(CMD, "cannot open input file '%s': %s: check the --input path", cli_shown(path),
                        strerror(errno));
    /* A label, and the '\r' of a CRLF line end. */
    char line[MAX_LABEL_BYTES + 1];
    long lineno = 0;
    int rc = CLI_EXIT_OK;
    for (;;) {
        size_t len = 0;
        errno = 0;
        int got = read_line(f, line, sizeof line, &len);
        if (got == 0)
            break;
        lineno++;
        if (got == -1) {
            rc = cli_fail(CMD, "cannot read input file '%s': %s: check that it is a readable file",
                          cli_shown(path), strerror(errno ? errno : EIO));
            break;
        }
        if (got == 1 && len > 0 && line[len - 1] == '\r')
            len--;
        if (got == -2 || len > MAX_LABEL_BYTES) {
            rc = cli_fail(CMD, "input file '%s' line %ld is more than %d bytes long: shorten the label",
                          cli_shown(path), lineno, MAX_LABEL_BYTES);
            break;
        }
        if (blank(line, len))
            continue;
        if (memchr(line, '\0', len)) {
            rc = cli_fail(CMD, "input file '%s' line %ld contains a NUL byte: labels must be text",
                          cli_shown(path), lineno);
            break;
        }
        if (!valid_utf8((const unsigned char *)line, len)) {
            rc = cli_fail(CMD, "input file '%s' line %ld is not valid UTF-8: save the file as UTF-8",
                          cli_shown(path), lineno);
            break;
        }
        if (!labels_push(out, line, len)) {
            rc = cli_fail(CMD, "out of memory reading input file '%s': use a smaller file", cli_shown(path));
            break;
        }
    }
    fclose(f);
    return rc;
}

#ifndef NAME_MAX
#define NAME_MAX 255
#endif

/* Create and remove the temporary file the report will be written through.
 * Only this proves that the directory takes new files: access() answers
 * yes for root even on a directory, such as /proc, that refuses them. */
static int probe_temporary(const char *path, const char *dir) {
    char *tmp;
    sigset_t old;
    cli_signals_hold(&old); /* a Ctrl-C now would leave the file behind */
    int fd = cli_tmp_create(path, &tmp);
    int create_errno = errno;
    if (fd >= 0) {
        close(fd);
        unlink(tmp);
    }
    cli_signals_release(&old);
    errno = create_errno;
    if (fd < 0 && !tmp)
        return cli_fail(CMD, "out of memory: try again");
    int rc = CLI_EXIT_OK;
    if (fd < 0) {
        rc = cli_fail(CMD, "cannot create a file in output directory '%s': %s: change --output",
                      cli_shown(dir), strerror(errno));
    }
    free(tmp);
    return rc;
}

/*
 * Refuse an output path that cannot be written before touching the
 * database: otherwise the rows would be committed and the report then
 * lost, while the help promises that a failed run writes no report.
 */
static int check_output_path(const char *path) {
    if (!*path)
        return cli_usage_error(CMD, "--output is empty: give the file the JSON report goes to, "
                                    "e.g. --output /tmp/demo.json");
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    if (!*base)
        return cli_usage_error(CMD, "--output '%s' ends with '/': give a file name, e.g. %sdemo.json",
                               cli_shown(path), cli_showable(path) ? path : "DIR/");
    /* The temporary file's name is the file's name plus the suffix, so the
     * name must leave room for it. */
    size_t longest_name = NAME_MAX - (sizeof CLI_TMP_SUFFIX - 1);
    if (strlen(base) > longest_name)
        return cli_usage_error(CMD,
                               "the --output file name is %zu bytes long, more than the %zu this command "
                               "can write (it needs room for '%s' in the temporary file's name): "
                               "give a shorter name",
                               strlen(base), longest_name, CLI_TMP_SUFFIX);
    if (strlen(path) + sizeof CLI_TMP_SUFFIX > PATH_MAX)
        return cli_usage_error(CMD, "the --output path is %zu bytes long, more than %zu: give a shorter path",
                               strlen(path), (size_t)PATH_MAX - sizeof CLI_TMP_SUFFIX);

    struct stat st, target;
    bool target_exists = stat(path, &target) == 0;
    if (target_exists && S_ISDIR(target.st_mode))
        return cli_fail(CMD, "output '%s' is a directory: give a file name to --output", cli_shown(path));
    /* The report is renamed over the path: a device (/dev/null), a FIFO or
     * a socket there would be replaced by a regular file, which for root
     * means a system's /dev/null gone. */
    if (target_exists && !S_ISREG(target.st_mode))
        return cli_fail(CMD,
                        "output '%s' is not a regular file (a device, FIFO or socket), and the report "
                        "replaces the file it is written to: give a regular file's path to --output "
                        "(the report is printed on stdout too)",
                        cli_shown(path));
    char *dir = strdup(path);
    if (!dir)
        return cli_fail(CMD, "out of memory: try again");
    char *dir_slash = strrchr(dir, '/');
    const char *d = dir_slash == dir ? "/" : dir_slash ? (*dir_slash = '\0', dir) : ".";
    int rc = CLI_EXIT_OK;
    if (stat(d, &st) != 0)
        rc = cli_fail(CMD, "output directory '%s' does not exist: %s: create it or change --output",
                      cli_shown(d), strerror(errno));
    else if (!S_ISDIR(st.st_mode))
        rc = cli_fail(CMD, "'%s' is not a directory: change --output", cli_shown(d));
    else if (target_exists && (st.st_mode & S_ISVTX) && geteuid() != 0 && target.st_uid != geteuid() &&
             st.st_uid != geteuid())
        /* A sticky directory (like /tmp) lets only the owner replace a file:
         * the final rename would fail after the rows are committed. */
        rc = cli_fail(CMD,
                      "cannot replace '%s': it belongs to another user in a sticky directory: "
                      "remove it or change --output",
                      cli_shown(path));
    else
        rc = probe_temporary(path, d);
    free(dir);
    return rc;
}

/*
 * The file the report is written to: through a symbolic link, the file it
 * names. The rename would otherwise replace the link itself with a regular
 * file, and the file it pointed to would keep the old report. A link that
 * names nothing is replaced. Malloc'd; NULL when out of memory.
 */
static char *output_target(const char *path) {
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode)) {
        char *real = realpath(path, NULL);
        if (real)
            return real;
    }
    return strdup(path);
}

/* "/dir/name" as the resolved directory and the name; NULL when the
 * directory cannot be resolved (then it does not exist). Malloc'd. */
static char *canonical_path(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    char *real = dir ? realpath(dir, NULL) : NULL;
    free(dir);
    if (!real)
        return NULL;
    const char *base = slash ? slash + 1 : path;
    size_t n = strlen(real) + strlen(base) + 2;
    char *out = malloc(n);
    if (out)
        snprintf(out, n, "%s/%s", real, base);
    free(real);
    return out;
}

/* Whether two paths name one file: the same inode when both exist, else
 * (neither exists yet) the same resolved directory and name. */
static bool same_file(const char *a, const char *b) {
    struct stat sa, sb;
    bool ea = stat(a, &sa) == 0, eb = stat(b, &sb) == 0;
    if (ea || eb)
        return ea && eb && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
    char *ca = canonical_path(a), *cb = canonical_path(b);
    bool same = ca && cb && strcmp(ca, cb) == 0;
    free(ca);
    free(cb);
    return same;
}

static int hex_digit(char c) {
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* The file a sqlite: URL opens, read as the library reads it (after
 * "sqlite:" and an optional "//", up to the '?', percent-decoded, a
 * "file:" path taken as "./file:..."); NULL for sqlite::memory:, another
 * backend or a URL the library will refuse anyway. Malloc'd. */
static char *sqlite_file_of(const char *url) {
    const char *colon = strchr(url, ':');
    size_t scheme = colon ? (size_t)(colon - url) : 0;
    if (!((scheme == 6 && strncasecmp(url, "sqlite", 6) == 0) ||
          (scheme == 7 && strncasecmp(url, "sqlite3", 7) == 0)))
        return NULL;
    const char *rest = colon + 1;
    if (strncmp(rest, "//", 2) == 0)
        rest += 2;
    size_t n = strcspn(rest, "?");
    char *out = malloc(n + 3);
    if (!out)
        return NULL;
    char *o = out + 2;
    for (size_t i = 0; i < n; i++) {
        if (rest[i] != '%') {
            *o++ = rest[i];
            continue;
        }
        int hi = i + 2 < n ? hex_digit(rest[i + 1]) : -1, lo = hi >= 0 ? hex_digit(rest[i + 2]) : -1;
        if (lo < 0) {
            free(out);
            return NULL;
        }
        *o++ = (char)(hi * 16 + lo);
        i += 2;
    }
    *o = '\0';
    if (!out[2] || strcmp(out + 2, ":memory:") == 0) {
        free(out);
        return NULL;
    }
    if (strncmp(out + 2, "file:", 5) == 0) {
        out[0] = '.';
        out[1] = '/';
        return out;
    }
    memmove(out, out + 2, strlen(out + 2) + 1);
    return out;
}

/*
 * The report replaces --output after the rows are committed: an --output
 * that is the input file would lose the labels, and one that is the
 * SQLite database would lose the database. Refused before either is
 * touched.
 */
static int check_output_distinct(const demo_args *a) {
    if (same_file(a->output, a->input))
        return cli_usage_error(CMD,
                               "--output '%s' is the --input file, and the report would replace the labels: "
                               "give another --output",
                               cli_shown(a->output));
    char *db_file = sqlite_file_of(a->db);
    bool same = db_file && same_file(a->output, db_file);
    free(db_file);
    if (same)
        return cli_usage_error(CMD,
                               "--output '%s' is the database file of --db, and the report would replace "
                               "the database: give another --output",
                               cli_shown(a->output));
    return CLI_EXIT_OK;
}

static const char *hint_for(int code, const dbpool_error *e) {
    /* A server certificate that failed the check, or a client certificate
     * refused, is DBPOOL_EAUTH too: the password is not the problem. */
    if (code == DBPOOL_EAUTH && e && strstr(e->message, "certificate"))
        return "check the TLS settings in --db (the CA file, the host name, the client certificate) as the "
               "message says";
    switch (code) {
    case DBPOOL_ETIMEDOUT:
        /* Not --pool-size: the demo holds one lease at a time, so a time-out
         * is a connect or a statement the database did not answer in time. */
        return "raise --timeout, or check that the database answers";
    case DBPOOL_ENOTFOUND:
        return "check the path or database name in --db";
    case DBPOOL_EAUTH:
        return "check the user and password in --db";
    case DBPOOL_EPERM:
        return "check the permissions of the database named in --db";
    case DBPOOL_ECONNECT:
    case DBPOOL_EUNAVAILABLE:
    case DBPOOL_EBROKEN:
        return "check --db and that the database is reachable";
    case DBPOOL_EINVAL:
        return "check --db and the options (see dbpool demo --help)";
    default:
        return "check --db (run with --verbose for the pool's log)";
    }
}

static int db_fail(const char *what, int code, const dbpool_error *e) {
    char buf[700];
    int rc = cli_fail(CMD, "%s: %s: %s", what, cli_errtext(code, e, buf, sizeof buf), hint_for(code, e));
    return code == DBPOOL_EINVAL ? CLI_EXIT_USAGE : rc;
}

/* Create the table and append the labels after the highest id, in one
 * transaction: either every label is stored or none is. */
static int insert_labels(dbpool_conn *c, const demo_args *a, const labels *l, int64_t *first_id) {
    dbpool_error e;
    int rc;
    if (a->reset) {
        rc = dbpool_exec(c, "DROP TABLE IF EXISTS events", NULL, 0, NULL, &e);
        if (rc != DBPOOL_OK)
            return db_fail("cannot drop table events", rc, &e);
        progress("dropped table events (--reset)");
    }
    rc = dbpool_exec(c, "CREATE TABLE IF NOT EXISTS events(id INTEGER PRIMARY KEY, label TEXT NOT NULL)",
                     NULL, 0, NULL, &e);
    if (rc != DBPOOL_OK)
        return db_fail("cannot create table events", rc, &e);

    rc = dbpool_exec(c, "BEGIN", NULL, 0, NULL, &e);
    if (rc != DBPOOL_OK)
        return db_fail("cannot begin a transaction", rc, &e);

    const char *what = "cannot find the highest id in events";
    dbpool_result *r = NULL;
    int64_t max_id = 0;
    rc = dbpool_query(c, "SELECT COALESCE(MAX(id),0) FROM events", NULL, 0, &r, &e);
    if (rc == DBPOOL_OK) {
        int step = dbpool_result_next(r, &e);
        if (step == 1)
            max_id = dbpool_result_int64(r, 0);
        else if (step < 0)
            rc = step;
        dbpool_result_free(r);
    }
    for (size_t i = 0; rc == DBPOOL_OK && i < l->n; i++) {
        dbpool_param p[2];
        p[0] = dbpool_param_int64(max_id + 1 + (int64_t)i);
        p[1].type = DBPOOL_TYPE_TEXT;
        p[1].v.text.ptr = l->v[i];
        p[1].v.text.len = strlen(l->v[i]);
        what = "cannot insert into events";
        rc = dbpool_exec(c, "INSERT INTO events(id, label) VALUES(?, ?)", p, 2, NULL, &e);
    }
    if (rc == DBPOOL_OK) {
        what = "cannot commit";
        rc = dbpool_exec(c, "COMMIT", NULL, 0, NULL, &e);
    }
    if (rc != DBPOOL_OK) {
        dbpool_error ignored;
        /* The error worth reporting is the first; release would roll back
         * too, but an explicit ROLLBACK keeps the lease clean either way. */
        (void)dbpool_exec(c, "ROLLBACK", NULL, 0, NULL, &ignored);
        return db_fail(what, rc, &e);
    }
    *first_id = max_id + 1;
    progress("inserted %zu rows (ids %lld..%lld) in one transaction", l->n, (long long)(max_id + 1),
             (long long)(max_id + (int64_t)l->n));
    return CLI_EXIT_OK;
}

static int read_rows(dbpool_conn *c, int64_t first_id, json_t *rows) {
    dbpool_error e;
    dbpool_result *r = NULL;
    dbpool_param p = dbpool_param_int64(first_id - 1);
    int rc = dbpool_query(c, "SELECT id, label FROM events WHERE id > ? ORDER BY id", &p, 1, &r, &e);
    if (rc != DBPOOL_OK)
        return db_fail("cannot read events back", rc, &e);
    int step;
    while ((step = dbpool_result_next(r, &e)) == 1) {
        size_t len = 0;
        const char *label = dbpool_result_text(r, 1, &len);
        json_t *jl = json_stringn(label ? label : "", label ? len : 0);
        if (!jl) {
            long long id = (long long)dbpool_result_int64(r, 0);
            dbpool_result_free(r);
            return cli_fail(
                CMD, "row %lld of events holds a label that is not UTF-8: fix the row or use --reset", id);
        }
        json_array_append_new(
            rows, json_pack("{s:I, s:o}", "id", (json_int_t)dbpool_result_int64(r, 0), "label", jl));
    }
    dbpool_result_free(r);
    if (step < 0)
        return db_fail("cannot read events back", step, &e);
    progress("read back %zu rows through a second lease", json_array_size(rows));
    return CLI_EXIT_OK;
}

/* The workload on an open pool; on success *doc is the report. */
static int run(dbpool *p, const demo_args *a, const labels *l, json_t **doc) {
    dbpool_error e;
    dbpool_conn *c = NULL;
    int rc = dbpool_acquire(p, -1, &c, &e);
    if (rc != DBPOOL_OK)
        return db_fail("cannot get a connection", rc, &e);
    int64_t first_id = 0;
    int code = insert_labels(c, a, l, &first_id);
    dbpool_release(c);
    if (code != CLI_EXIT_OK)
        return code;

    rc = dbpool_acquire(p, -1, &c, &e);
    if (rc != DBPOOL_OK)
        return db_fail("cannot get a connection for the second lease", rc, &e);
    json_t *rows = json_array();
    code = read_rows(c, first_id, rows);
    dbpool_release(c);
    if (code != CLI_EXIT_OK) {
        json_decref(rows);
        return code;
    }

    dbpool_health h;
    memset(&h, 0, sizeof h);
    rc = dbpool_check_health(p, &h, &e);
    if (rc != DBPOOL_OK || h.status != DBPOOL_HEALTHY) {
        json_decref(rows);
        const dbpool_error *why = h.error.code ? &h.error : &e;
        int failed = rc != DBPOOL_OK ? rc : why->code ? why->code : DBPOOL_EUNAVAILABLE;
        return db_fail("the health check failed", failed, why);
    }
    progress("health check: %s %s, round trip %.3f ms", h.backend ? h.backend : "?", h.server_version,
             h.round_trip_ms);

    dbpool_stats s;
    dbpool_get_stats(p, &s);
    *doc = json_pack("{s:I, s:o, s:o, s:o}", "rows_inserted", (json_int_t)l->n, "rows", rows, "health",
                     cli_health_json(&h), "pool_stats", cli_stats_json(&s));
    if (!*doc)
        return cli_fail(CMD, "out of memory building the report: try again");
    return CLI_EXIT_OK;
}

static int parse_args(int argc, char **argv, demo_args *a) {
    static const char *const value_opts[] = {"input",   "output",  "db", "pool-size",
                                             "timeout", "retries", NULL};
    static const char *const flags[] = {"reset", "verbose", "help", NULL};
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *v = NULL;
        if (strcmp(arg, "--") == 0) {
            if (i + 1 < argc)
                return cli_usage_error(CMD, "unexpected argument after '--': demo takes only options "
                                            "(see dbpool demo --help)");
            break;
        }
        switch (cli_opt_match(CMD, argc, argv, &i, value_opts, &v)) {
        case -2:
            return CLI_EXIT_USAGE;
        case 0:
            a->input = v;
            break;
        case 1:
            a->output = v;
            break;
        case 2:
            a->db = v;
            break;
        case 3:
            if (!cli_parse_int(v, 1, 100000, &a->pool_size))
                return cli_usage_error(CMD,
                                       "--pool-size '%s' is not a whole number from 1 to 100000: "
                                       "give the pool at least one connection",
                                       cli_shown(v));
            break;
        case 4:
            if (!cli_parse_seconds(v, &a->timeout_ms))
                return cli_usage_error(CMD,
                                       "--timeout '%s' is not a number of seconds above 0 and at most "
                                       "a year: use e.g. --timeout 5 or --timeout 0.5",
                                       cli_shown(v));
            break;
        case 5:
            if (!cli_parse_int(v, 0, 1000, &a->retries))
                return cli_usage_error(CMD,
                                       "--retries '%s' is not a whole number from 0 to 1000: "
                                       "use e.g. --retries 3",
                                       cli_shown(v));
            break;
        default:
            if (cli_opt_flag(arg, "reset"))
                a->reset = true;
            else if (cli_opt_flag(arg, "verbose"))
                a->verbose = true;
            else if (arg[0] == '-')
                /* The name only: a mistyped --db=... may carry a password. */
                return cli_bad_option(CMD, arg, flags);
            else
                return cli_usage_error(CMD, "unexpected argument (demo takes only options): "
                                            "see dbpool demo --help");
        }
    }
    if (!a->input)
        return cli_usage_error(CMD, "--input FILE is required: give the file of labels, e.g. "
                                    "--input data/sample_input.txt");
    if (!a->output)
        return cli_usage_error(CMD, "--output FILE is required: give where the JSON report goes");
    return CLI_EXIT_OK;
}

/* The demo with its output path settled. */
static int demo(const demo_args *a) {
    /* Read before the pool's threads exist: umask can only be read by
     * setting it. */
    mode_t mask = umask(0);
    umask(mask);

    labels l = {0};
    int code = check_output_distinct(a);
    if (code == CLI_EXIT_OK)
        code = read_labels(a->input, &l);
    if (code == CLI_EXIT_OK)
        code = check_output_path(a->output);
    if (code != CLI_EXIT_OK) {
        labels_free(&l);
        return code;
    }
    progress("read %zu labels from %s", l.n, a->input);

    dbpool_options o;
    dbpool_options_init(&o);
    o.name = "demo";
    o.max_size = a->pool_size;
    if (a->timeout_ms > 0) {
        o.acquire_timeout_ms = a->timeout_ms;
        /* As check and bench do: the open's connect is bounded by the
         * acquire timeout anyway, and an error that named the default
         * connect_timeout_ms would blame a bound that did not apply. */
        if (o.connect_timeout_ms > a->timeout_ms)
            o.connect_timeout_ms = a->timeout_ms;
        if (o.validation_timeout_ms > a->timeout_ms)
            o.validation_timeout_ms = a->timeout_ms;
    }
    /* Statements get the same bound: the server's statement timeout, and
     * the client gives up validation_timeout_ms after it on a server that
     * stopped answering (a demo that hung there would never end). A
     * pool_statement_timeout in the URL wins. */
    o.statement_timeout_ms = o.acquire_timeout_ms;
    if (a->retries >= 0)
        o.max_retries = a->retries;
    if (a->verbose) {
        o.log_fn = cli_log_stderr;
        o.log_level = DBPOOL_LOG_DEBUG;
    }
    dbpool *p = NULL;
    dbpool_error e;
    int rc = dbpool_open(&p, a->db, &o, &e);
    if (rc == DBPOOL_EUNSUPPORTED) {
        /* A backend this build lacks: the message says what to install;
         * --db is not wrong and --verbose would show nothing more. */
        char buf[700];
        labels_free(&l);
        return cli_fail(CMD, "%s", cli_errtext(rc, &e, buf, sizeof buf));
    }
    if (rc != DBPOOL_OK) {
        labels_free(&l);
        return db_fail("cannot open the pool", rc, &e);
    }
    if (verbose) {
        /* From the pool, not the option: a pool_max in the URL overrides it. */
        dbpool_stats opened;
        dbpool_get_stats(p, &opened);
        progress("opened a %s pool of at most %d connections", dbpool_backend(p), opened.max_size);
    }

    json_t *doc = NULL;
    code = run(p, a, &l, &doc);
    labels_free(&l);
    int left = dbpool_close(p);
    if (code == CLI_EXIT_OK && left != 0)
        code = cli_fail(CMD, "%d leases were still out when the pool closed: report this bug", left);
    if (code != CLI_EXIT_OK) {
        json_decref(doc);
        return code;
    }

    char *text = cli_json_text(doc);
    json_decref(doc);
    if (!text)
        return cli_fail(CMD, "out of memory rendering the report: try again");
    char why[600];
    if (!cli_write_file_atomic(a->output, text, strlen(text), 0666u & ~(unsigned)mask, why, sizeof why)) {
        free(text);
        return cli_fail(CMD, "%s: check --output", why);
    }
    progress("wrote %s", a->output);
    bool printed = cli_print_text(text);
    int write_errno = errno;
    free(text);
    if (!printed && cli_stdout_gone(write_errno))
        return CLI_EXIT_FAILED; /* the report is in the file all the same */
    if (!printed)
        return cli_fail(CMD, "cannot write the report to stdout: %s: the file %s was written",
                        strerror(write_errno), a->output);
    return CLI_EXIT_OK;
}

int cli_demo_main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            break;
        if (cli_opt_flag(argv[i], "help") || strcmp(argv[i], "-h") == 0)
            return cli_print_help(CMD, usage_text);
    }
    demo_args a = {.db = "sqlite::memory:", .pool_size = 5, .timeout_ms = 0, .retries = -1};
    int code = parse_args(argc, argv, &a);
    if (code != CLI_EXIT_OK)
        return code;
    verbose = a.verbose;

    char *output = output_target(a.output);
    if (!output)
        return cli_fail(CMD, "out of memory: try again");
    a.output = output;
    code = demo(&a);
    free(output);
    return code;
}
