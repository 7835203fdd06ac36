/* testsupport.c — fixtures shared by the tests. */
#include "testsupport.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char tmpdir[512];

static void remove_tmpdir(void) {
    if (!tmpdir[0])
        return;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
}

const char *dbt_tmpdir(void) {
    if (tmpdir[0])
        return tmpdir;
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/dbpool-test-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        exit(1);
    }
    atexit(remove_tmpdir);
    return tmpdir;
}

const char *dbt_not_a_database_url(const char *name) {
    static char url[700];
    char path[640];
    snprintf(path, sizeof path, "%s/%s", dbt_tmpdir(), name);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "cannot write %s\n", path);
        abort();
    }
    for (int i = 0; i < 200; i++)
        fputs("this is not an sqlite file ", f);
    fclose(f);
    snprintf(url, sizeof url, "sqlite:%s", path);
    return url;
}

const char *dbt_backend_url(const char *backend) {
    static char url[1024];
    if (strcmp(backend, "sqlite") == 0) {
        snprintf(url, sizeof url, "sqlite:%s/test.db", dbt_tmpdir());
        return url;
    }
    const char *var = strcmp(backend, "pg") == 0      ? "DBPOOL_TEST_PG_URL"
                      : strcmp(backend, "mysql") == 0 ? "DBPOOL_TEST_MYSQL_URL"
                                                      : NULL;
    if (!var) {
        fprintf(stderr, "unknown backend '%s' (use sqlite, pg or mysql)\n", backend);
        exit(1);
    }
    const char *v = getenv(var);
    if (!v || !*v) {
        const char *req = getenv("DBPOOL_TEST_REQUIRE_SERVERS");
        if (req && strcmp(req, "1") == 0) {
            fprintf(stderr,
                    "%s is not set but DBPOOL_TEST_REQUIRE_SERVERS=1: start the servers "
                    "with scripts/test.sh (make test)\n",
                    var);
            exit(1);
        }
        fprintf(stderr, "skipped: %s is not set (scripts/test.sh starts the servers)\n", var);
        exit(DBT_SKIP);
    }
    snprintf(url, sizeof url, "%s", v);
    return url;
}

const char *dbt_backend_url_with(const char *backend, const char *extra) {
    static char out[2048];
    const char *base = dbt_backend_url(backend);
    if (!extra || !*extra) {
        snprintf(out, sizeof out, "%s", base);
        return out;
    }
    snprintf(out, sizeof out, "%s%c%s", base, strchr(base, '?') ? '&' : '?', extra);
    return out;
}

int64_t dbt_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void dbt_sleep_ms(int64_t ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

void dbt_options(dbpool_options *o, int min_size, int max_size) {
    dbpool_options_init(o);
    o->min_size = min_size;
    o->max_size = max_size;
    o->acquire_timeout_ms = 5000;
    o->connect_timeout_ms = 5000;
}

bool dbt_invariant_holds(dbpool *p) {
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    bool ok = s.total == s.idle + s.in_use + s.connecting && s.total <= s.max_size && s.idle >= 0 &&
              s.in_use >= 0 && s.connecting >= 0;
    if (!ok)
        fprintf(stderr, "invariant broken: total=%d idle=%d in_use=%d connecting=%d max=%d\n", s.total,
                s.idle, s.in_use, s.connecting, s.max_size);
    return ok;
}

const char *dbt_backend_arg(int argc, char **argv) { return argc > 1 ? argv[1] : "sqlite"; }
