/* bench_util.h — the small shared pieces of the benchmark programs: clocks,
 * a thread runner with a start barrier and cache-line padded counters,
 * percentiles, the result line format, and raw connections to each backend
 * (the baselines and the constructors the peers' pools call).
 *
 * Every result is printed as one tab-separated line starting with "R" so
 * that bench/report.py can read the output of every program the same way:
 *
 *   R <bench> <impl> <backend> <pool_size> <threads> key=value key=value ...
 *
 * Header-only (static functions) so that each program stays one file.
 */
#ifndef DBPOOL_BENCH_UTIL_H
#define DBPOOL_BENCH_UTIL_H

#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>
#ifdef BENCH_HAVE_PG
#include <libpq-fe.h>
#endif
#ifdef BENCH_HAVE_MYSQL
#include <mysql.h>
#endif

#define BENCH_CACHELINE 64

static inline int64_t bench_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Hold a connection for `ns` without giving the CPU away: a realistic short
 * query that the scheduler does not see as a sleep. */
static inline void bench_spin_ns(int64_t ns) {
    int64_t end = bench_now_ns() + ns;
    while (bench_now_ns() < end) {
    }
}

/* Sleep the whole time, through signals. */
static inline void bench_sleep_ns(int64_t ns) {
    struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static inline void bench_sleep_s(double s) { bench_sleep_ns((int64_t)(s * 1e9)); }

static inline _Noreturn void bench_die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

/* ---------------------------------------------------------------------- */
/* The thread runner                                                      */
/* ---------------------------------------------------------------------- */

/* One worker's counters, alone on its cache lines: false sharing between
 * workers would be measured as pool overhead. */
typedef struct bench_worker {
    _Alignas(BENCH_CACHELINE) pthread_t tid;
    int index;
    void *arg;
    unsigned long ops;
    unsigned long fails; /* attempts that did not get a connection (libzdb: pool full) */
    unsigned long errors;
    unsigned long ops_by_side[3]; /* stmt: operations on the raw side, the pool's, and uncounted */
    int64_t max_hold_ns;    /* latency mode: the longest hold (a 100 us sleep or spin can last longer) */
    int64_t pool_ns, op_ns; /* stmt-share mode: time inside acquire + release, and whole cycles */
    int64_t *samples;       /* latency mode: wait times in ns */
    size_t nsamples, cap;
    char pad[BENCH_CACHELINE];
} bench_worker;

typedef struct bench_run {
    int nthreads;
    double seconds;
    void *(*fn)(void *); /* receives a bench_worker * */
    void *arg;
    size_t sample_cap; /* per worker; 0 = no samples */
    /* filled by bench_run_threads */
    bench_worker *w;
    double elapsed_s;
    unsigned long ops, fails, errors;
} bench_run;

static atomic_bool bench_stop;
static atomic_int bench_ready;
static atomic_bool bench_go;

static inline bool bench_running(void) { return !atomic_load_explicit(&bench_stop, memory_order_relaxed); }

/* Called by each worker first: wait until every worker exists, so that the
 * measured interval has all of them running. */
static inline void bench_worker_start(void) {
    atomic_fetch_add(&bench_ready, 1);
    while (!atomic_load_explicit(&bench_go, memory_order_acquire))
        sched_yield();
}

/* Start the workers and release them together; returns the start time. */
static inline int64_t bench_start_threads(bench_run *r) {
    r->w = calloc((size_t)r->nthreads, sizeof *r->w);
    if (!r->w)
        bench_die("out of memory");
    atomic_store(&bench_stop, false);
    atomic_store(&bench_ready, 0);
    atomic_store(&bench_go, false);
    for (int i = 0; i < r->nthreads; i++) {
        r->w[i].index = i;
        r->w[i].arg = r->arg;
        if (r->sample_cap) {
            r->w[i].cap = r->sample_cap;
            r->w[i].samples = malloc(r->sample_cap * sizeof(int64_t));
            if (!r->w[i].samples)
                bench_die("out of memory");
        }
        if (pthread_create(&r->w[i].tid, NULL, r->fn, &r->w[i]) != 0)
            bench_die("pthread_create failed");
    }
    while (atomic_load(&bench_ready) < r->nthreads)
        sched_yield();
    int64_t t0 = bench_now_ns();
    atomic_store_explicit(&bench_go, true, memory_order_release);
    return t0;
}

/* Stop the workers, wait for them and sum their counters. */
static inline void bench_join_threads(bench_run *r) {
    atomic_store(&bench_stop, true);
    r->ops = r->fails = r->errors = 0;
    for (int i = 0; i < r->nthreads; i++) {
        pthread_join(r->w[i].tid, NULL);
        r->ops += r->w[i].ops;
        r->fails += r->w[i].fails;
        r->errors += r->w[i].errors;
    }
}

static inline void bench_run_threads(bench_run *r) {
    int64_t t0 = bench_start_threads(r);
    bench_sleep_s(r->seconds);
    bench_join_threads(r);
    r->elapsed_s = (double)(bench_now_ns() - t0) / 1e9;
}

static inline void bench_run_free(bench_run *r) {
    for (int i = 0; r->w && i < r->nthreads; i++)
        free(r->w[i].samples);
    free(r->w);
    r->w = NULL;
}

static inline void bench_sample(bench_worker *w, int64_t ns) {
    if (w->nsamples < w->cap)
        w->samples[w->nsamples++] = ns;
}

static int bench_cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

typedef struct bench_latency {
    size_t count;
    double mean_us, p50_us, p99_us, max_us;
    unsigned long min_per_thread, max_per_thread; /* acquisitions: starvation shows here */
    double max_hold_us;                           /* the longest hold: it delays every waiter behind */
} bench_latency;

static inline bench_latency bench_latency_of(const bench_run *r) {
    bench_latency L;
    memset(&L, 0, sizeof L);
    size_t n = 0;
    for (int i = 0; i < r->nthreads; i++)
        n += r->w[i].nsamples;
    if (n == 0)
        return L;
    int64_t *all = malloc(n * sizeof *all);
    if (!all)
        bench_die("out of memory");
    size_t k = 0;
    double sum = 0;
    L.min_per_thread = (unsigned long)-1;
    for (int i = 0; i < r->nthreads; i++) {
        for (size_t j = 0; j < r->w[i].nsamples; j++) {
            all[k++] = r->w[i].samples[j];
            sum += (double)r->w[i].samples[j];
        }
        if (r->w[i].ops < L.min_per_thread)
            L.min_per_thread = r->w[i].ops;
        if (r->w[i].ops > L.max_per_thread)
            L.max_per_thread = r->w[i].ops;
        if ((double)r->w[i].max_hold_ns / 1e3 > L.max_hold_us)
            L.max_hold_us = (double)r->w[i].max_hold_ns / 1e3;
    }
    qsort(all, n, sizeof *all, bench_cmp_i64);
    L.count = n;
    L.mean_us = sum / (double)n / 1e3;
    L.p50_us = (double)all[(n - 1) / 2] / 1e3;
    L.p99_us = (double)all[(size_t)((double)(n - 1) * 0.99)] / 1e3;
    L.max_us = (double)all[n - 1] / 1e3;
    free(all);
    return L;
}

/* ---------------------------------------------------------------------- */
/* Raw connections: the baselines, and what the peers' constructors open  */
/* ---------------------------------------------------------------------- */

typedef enum { BK_SQLITE, BK_PG, BK_MYSQL, BK_MOCK } bench_backend;

static inline const char *bench_backend_name(bench_backend b) {
    switch (b) {
    case BK_SQLITE:
        return "sqlite";
    case BK_PG:
        return "postgresql";
    case BK_MYSQL:
        return "mariadb";
    case BK_MOCK:
        return "mock";
    }
    return "?";
}

/* A URL argument; "env:NAME" reads it from the environment, so that a
 * password never shows in the process list. */
static inline const char *bench_url_arg(const char *arg) {
    if (strncmp(arg, "env:", 4) != 0)
        return arg;
    const char *v = getenv(arg + 4);
    if (!v) {
        fprintf(stderr, "bench: environment variable %s is not set\n", arg + 4);
        exit(2);
    }
    return v;
}

static inline bench_backend bench_backend_parse(const char *s) {
    if (strcmp(s, "sqlite") == 0)
        return BK_SQLITE;
    if (strcmp(s, "pg") == 0 || strcmp(s, "postgresql") == 0)
        return BK_PG;
    if (strcmp(s, "mysql") == 0 || strcmp(s, "mariadb") == 0)
        return BK_MYSQL;
    if (strcmp(s, "mock") == 0)
        return BK_MOCK;
    bench_die("unknown backend '%s' (sqlite, pg, mysql, mock)", s);
    return BK_SQLITE;
}

/* The parts of scheme://user:password@host:port/db (no escapes: the test
 * servers' generated passwords are alphanumeric). */
typedef struct bench_url {
    char user[128], password[128], host[128], db[128];
    unsigned port;
} bench_url;

static inline bench_url bench_url_parse(const char *url) {
    bench_url u;
    memset(&u, 0, sizeof u);
    const char *p = strstr(url, "://");
    if (!p)
        bench_die("cannot parse URL");
    p += 3;
    const char *at = strchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *uend = colon ? colon : at;
        snprintf(u.user, sizeof u.user, "%.*s", (int)(uend - p), p);
        if (colon)
            snprintf(u.password, sizeof u.password, "%.*s", (int)(at - colon - 1), colon + 1);
        p = at + 1;
    }
    const char *slash = strchr(p, '/');
    const char *hend = slash ? slash : p + strlen(p);
    const char *colon = memchr(p, ':', (size_t)(hend - p));
    snprintf(u.host, sizeof u.host, "%.*s", (int)((colon ? colon : hend) - p), p);
    u.port = colon ? (unsigned)strtoul(colon + 1, NULL, 10) : 0;
    if (slash) {
        const char *q = strchr(slash + 1, '?');
        snprintf(u.db, sizeof u.db, "%.*s", (int)(q ? q - slash - 1 : (long)strlen(slash + 1)), slash + 1);
    }
    return u;
}

/* The SQLite file path of a sqlite:///abs/path URL. */
static inline const char *bench_sqlite_path(const char *url) {
    if (strncmp(url, "sqlite://", 9) == 0)
        return url + 9;
    if (strncmp(url, "sqlite:", 7) == 0)
        return url + 7;
    return url;
}

/* Open one raw connection. `like_dbpool` applies the same settings as
 * dbpool's SQLite backend (WAL, synchronous=NORMAL, foreign_keys, schema
 * read) so that a memory comparison isolates the pool's own bookkeeping. */
static inline void *bench_raw_open(bench_backend b, const char *url, bool like_dbpool) {
    switch (b) {
    case BK_SQLITE: {
        sqlite3 *db = NULL;
        if (sqlite3_open_v2(bench_sqlite_path(url), &db,
                            SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                            NULL) != SQLITE_OK) {
            fprintf(stderr, "bench: sqlite3_open_v2: %s\n", db ? sqlite3_errmsg(db) : "out of memory");
            sqlite3_close_v2(db);
            return NULL;
        }
        sqlite3_busy_timeout(db, 5000);
        if (like_dbpool) {
            sqlite3_extended_result_codes(db, 1);
            sqlite3_exec(db, "PRAGMA journal_mode=wal", NULL, NULL, NULL);
            sqlite3_exec(db, "PRAGMA synchronous=normal", NULL, NULL, NULL);
            sqlite3_exec(db, "PRAGMA foreign_keys=OFF", NULL, NULL, NULL);
            sqlite3_exec(db, "PRAGMA schema_version", NULL, NULL, NULL);
        }
        return db;
    }
    case BK_PG:
#ifdef BENCH_HAVE_PG
    {
        PGconn *c = PQconnectdb(url);
        if (!c || PQstatus(c) != CONNECTION_OK) {
            fprintf(stderr, "bench: PQconnectdb failed: %s\n", c ? PQerrorMessage(c) : "out of memory");
            PQfinish(c);
            return NULL;
        }
        return c;
    }
#else
        return NULL;
#endif
    case BK_MYSQL:
#ifdef BENCH_HAVE_MYSQL
    {
        bench_url u = bench_url_parse(url);
        MYSQL *m = mysql_init(NULL);
        if (!m)
            return NULL;
        if (!mysql_real_connect(m, u.host, u.user, u.password, u.db, u.port, NULL, 0)) {
            fprintf(stderr, "bench: mysql_real_connect failed: %s\n", mysql_error(m));
            mysql_close(m);
            return NULL;
        }
        return m;
    }
#else
        return NULL;
#endif
    case BK_MOCK:
        return NULL;
    }
    return NULL;
}

static inline void bench_raw_close(bench_backend b, void *c) {
    if (!c)
        return;
    switch (b) {
    case BK_SQLITE:
        sqlite3_close_v2(c);
        break;
    case BK_PG:
#ifdef BENCH_HAVE_PG
        PQfinish(c);
#endif
        break;
    case BK_MYSQL:
#ifdef BENCH_HAVE_MYSQL
        mysql_close(c);
#endif
        break;
    case BK_MOCK:
        break;
    }
}

/* SELECT 1 on a native handle opened for it: prepare, step, read, finalize
 * / PQexec / mysql_query + store_result. Returns 1 on success (the value
 * read), 0 on failure. Connect-per-query runs this; a connection that runs
 * the statement again and again runs bench_raw_select1_kept below. */
static inline int bench_raw_select1(bench_backend b, void *c) {
    switch (b) {
    case BK_SQLITE: {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(c, "SELECT 1", -1, &st, NULL) != SQLITE_OK)
            return 0;
        int v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
        sqlite3_finalize(st);
        return v == 1;
    }
    case BK_PG:
#ifdef BENCH_HAVE_PG
    {
        PGresult *r = PQexec(c, "SELECT 1");
        int ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && PQgetvalue(r, 0, 0)[0] == '1';
        PQclear(r);
        return ok;
    }
#else
        return 0;
#endif
    case BK_MYSQL:
#ifdef BENCH_HAVE_MYSQL
    {
        if (mysql_real_query(c, "SELECT 1", 8) != 0)
            return 0;
        MYSQL_RES *r = mysql_store_result(c);
        if (!r)
            return 0;
        MYSQL_ROW row = mysql_fetch_row(r);
        int ok = row && row[0] && row[0][0] == '1';
        mysql_free_result(r);
        return ok;
    }
#else
        return 0;
#endif
    case BK_MOCK:
        return 0;
    }
    return 0;
}

/* SELECT 1 on a connection that runs it again and again, the way a careful
 * C program does with a dedicated connection: on SQLite the statement is
 * prepared once per connection and then only stepped and reset, which is
 * what dbpool's own statement cache does for dbpool_query (preparing is
 * most of the cost of a SELECT 1 there). PostgreSQL and MariaDB run it as
 * bench_raw_select1 does: dbpool_query sends a statement without
 * parameters through the same simple-protocol call.
 *
 * The kept statements live in one table keyed by the connection, never
 * removed: a connection is used by one thread at a time (its own, or the
 * lease's holder, the pool's hand-over ordering the memory), so the slot
 * is claimed with a compare-and-swap and read without a lock. A kept
 * statement is never finalized; a closed connection stays a zombie until
 * exit (sqlite3_close_v2), so its address is never reused for another. */
#define BENCH_KEPT_SLOTS 1024
static struct {
    _Atomic(void *) db;
    sqlite3_stmt *st;
} bench_kept[BENCH_KEPT_SLOTS];

static inline sqlite3_stmt *bench_kept_stmt(sqlite3 *db) {
    uintptr_t h = (uintptr_t)db;
    h ^= h >> 17;
    h *= UINT64_C(0x9e3779b97f4a7c15) & UINTPTR_MAX;
    for (size_t i = 0; i < BENCH_KEPT_SLOTS; i++) {
        size_t k = (size_t)(h + i) % BENCH_KEPT_SLOTS;
        void *cur = atomic_load_explicit(&bench_kept[k].db, memory_order_acquire);
        if (cur == NULL && atomic_compare_exchange_strong(&bench_kept[k].db, &cur, (void *)db))
            cur = db; /* claimed: only this connection's user writes .st */
        if (cur != db)
            continue;
        if (!bench_kept[k].st && sqlite3_prepare_v3(db, "SELECT 1", -1, SQLITE_PREPARE_PERSISTENT,
                                                    &bench_kept[k].st, NULL) != SQLITE_OK) {
            sqlite3_finalize(bench_kept[k].st);
            bench_kept[k].st = NULL;
        }
        return bench_kept[k].st;
    }
    bench_die("more than %d SQLite connections with a kept statement", BENCH_KEPT_SLOTS);
}

static inline int bench_raw_select1_kept(bench_backend b, void *c) {
    if (b != BK_SQLITE)
        return bench_raw_select1(b, c);
    sqlite3_stmt *st = bench_kept_stmt(c);
    if (!st)
        return 0;
    int v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
    sqlite3_reset(st);
    return v == 1;
}

/* Parse "1,2,4,8" into an array; returns the count. */
static inline int bench_parse_list(const char *s, int *out, int max) {
    int n = 0;
    while (*s && n < max) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s)
            bench_die("bad number list '%s'", s);
        out[n++] = (int)v;
        s = *end == ',' ? end + 1 : end;
    }
    return n;
}

#endif /* DBPOOL_BENCH_UTIL_H */
