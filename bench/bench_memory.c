/* bench_memory — what a pooled connection costs in memory. A program that
 * prints figures, not a test.
 *
 *   bench_memory heap IMPL BACKEND URL N   heap bytes of a pool of N vs N raw connections
 *   bench_memory rss  IMPL BACKEND URL N   RSS growth for N connections (raw or pooled)
 *
 * heap: this program replaces malloc/calloc/realloc/free/memalign (its own
 * definitions interpose on every library in the process, libpq, SQLite,
 * libzdb and APR included) and counts live bytes exactly, as
 * malloc_usable_size reports them, plus anonymous mmap'd bytes (APR's
 * allocator takes its blocks that way). It opens N raw connections, notes the
 * live-byte growth, closes them; then opens a pool of N (min = max = N),
 * notes the growth, closes it. The difference is what the pool adds:
 * its bookkeeping, per connection, with the pool's fixed cost (struct,
 * copied options, maintenance thread's TLS) spread over N. It is done at
 * N/5 and N as well, so the marginal cost per connection is shown apart
 * from the fixed cost. All of it twice: with the connections as opened,
 * and after one SELECT 1 on each (fields *_used), which is when dbpool's
 * SQLite backend makes a connection's statement cache.
 *
 * rss: resident set growth (from /proc/self/statm) after opening N
 * connections, divided by N: what the client side of one connection costs
 * the process, allocator slack and touched library pages included.
 *
 * IMPL: raw | dbpool | zdb | apr. BACKEND: sqlite | pg | mysql | mock
 * (mock: dbpool only, its fake backend; the total is an upper bound on the
 * bookkeeping, the fake connection itself is a 12-byte struct).
 */
#include "bench_util.h"
#include "dbpool.h"

#include <malloc.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifdef BENCH_HAVE_ZDB
#include <zdb.h>
#endif
#ifdef BENCH_HAVE_APR
#include <apr_allocator.h>
#include <apr_general.h>
#include <apr_pools.h>
#include <apr_reslist.h>
#endif

/* ---------------------------------------------------------------------- */
/* The counting allocator                                                 */
/* ---------------------------------------------------------------------- */

extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);
extern void *__libc_memalign(size_t align, size_t n);
extern void __libc_free(void *p);

static atomic_llong live_bytes;
static atomic_llong live_blocks;

static void *counted(void *p) {
    if (p) {
        atomic_fetch_add_explicit(&live_bytes, (long long)malloc_usable_size(p), memory_order_relaxed);
        atomic_fetch_add_explicit(&live_blocks, 1, memory_order_relaxed);
    }
    return p;
}

void *malloc(size_t n) { return counted(__libc_malloc(n)); }
void *calloc(size_t n, size_t size) { return counted(__libc_calloc(n, size)); }
void *memalign(size_t align, size_t n) { return counted(__libc_memalign(align, n)); }
void *aligned_alloc(size_t align, size_t n) { return counted(__libc_memalign(align, n)); }
void *valloc(size_t n) { return counted(__libc_memalign((size_t)sysconf(_SC_PAGESIZE), n)); }
void *pvalloc(size_t n) {
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    return counted(__libc_memalign(pg, (n + pg - 1) / pg * pg));
}
int posix_memalign(void **out, size_t align, size_t n) {
    void *p = counted(__libc_memalign(align, n));
    if (!p)
        return 12; /* ENOMEM */
    *out = p;
    return 0;
}
void free(void *p) {
    if (p) {
        atomic_fetch_sub_explicit(&live_bytes, (long long)malloc_usable_size(p), memory_order_relaxed);
        atomic_fetch_sub_explicit(&live_blocks, 1, memory_order_relaxed);
    }
    __libc_free(p);
}
void *realloc(void *p, size_t n) {
    size_t old = p ? malloc_usable_size(p) : 0;
    void *q = __libc_realloc(p, n);
    if (q) {
        atomic_fetch_add_explicit(&live_bytes, (long long)malloc_usable_size(q) - (long long)old,
                                  memory_order_relaxed);
        if (!p)
            atomic_fetch_add_explicit(&live_blocks, 1, memory_order_relaxed);
    } else if (p && n == 0) {
        atomic_fetch_sub_explicit(&live_bytes, (long long)old, memory_order_relaxed);
        atomic_fetch_sub_explicit(&live_blocks, 1, memory_order_relaxed);
    }
    return q;
}

/* APR takes its memory in 8 KiB blocks straight from mmap: count anonymous
 * mappings made through the library call too. (glibc's own mmaps, for
 * large malloc blocks and thread stacks, do not come through here.) */
static atomic_llong mapped_bytes;

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
    long r = syscall(SYS_mmap, addr, len, prot, flags, fd, off);
    if (r == -1)
        return MAP_FAILED;
    if (flags & MAP_ANONYMOUS)
        atomic_fetch_add_explicit(&mapped_bytes, (long long)len, memory_order_relaxed);
    return (void *)r;
}

int munmap(void *addr, size_t len) {
    long r = syscall(SYS_munmap, addr, len);
    if (r == 0)
        atomic_fetch_sub_explicit(&mapped_bytes, (long long)len, memory_order_relaxed);
    return (int)r;
}

static long long heap_now(void) { return atomic_load(&live_bytes) + atomic_load(&mapped_bytes); }

static long rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, resident = 0;
    if (!f)
        return 0;
    if (fscanf(f, "%ld %ld", &size, &resident) != 2)
        resident = 0;
    fclose(f);
    return resident * sysconf(_SC_PAGESIZE);
}

/* ---------------------------------------------------------------------- */
/* Opening N connections each way                                         */
/* ---------------------------------------------------------------------- */

typedef struct opened {
    void **raw;
    int n;
    dbpool *dp;
#ifdef BENCH_HAVE_ZDB
    URL_T zurl;
    ConnectionPool_T zp;
#endif
#ifdef BENCH_HAVE_APR
    apr_pool_t *apool;
    apr_reslist_t *rl;
#endif
} opened;

static bench_backend g_backend;
static const char *g_url;

#ifdef BENCH_HAVE_APR
static apr_status_t apr_ctor(void **res, void *params, apr_pool_t *pool) {
    (void)params;
    (void)pool;
    void *c = bench_raw_open(g_backend, g_url, false);
    if (!c)
        return APR_EGENERAL;
    *res = c;
    return APR_SUCCESS;
}
static apr_status_t apr_dtor(void *res, void *params, apr_pool_t *pool) {
    (void)params;
    (void)pool;
    bench_raw_close(g_backend, res);
    return APR_SUCCESS;
}
#endif

#ifdef BENCH_HAVE_ZDB
static void zdb_abort(const char *error) { bench_die("libzdb: %s", error); }
#endif

/* Open n connections the way `impl` does. Raw SQLite connections get the
 * same settings as dbpool's backend, so the difference is bookkeeping. */
static void open_n(opened *o, const char *impl, int n) {
    memset(o, 0, sizeof *o);
    o->n = n;
    if (strcmp(impl, "raw") == 0) {
        o->raw = __libc_calloc((size_t)n, sizeof *o->raw); /* not counted: the harness's own array */
        for (int i = 0; i < n; i++)
            if (!(o->raw[i] = bench_raw_open(g_backend, g_url, true)))
                bench_die("raw connection %d failed", i);
    } else if (strcmp(impl, "dbpool") == 0) {
        dbpool_options opt;
        dbpool_options_init(&opt);
        opt.min_size = n;
        opt.max_size = n;
        dbpool_error e;
        if (dbpool_open(&o->dp, g_url, &opt, &e) != DBPOOL_OK)
            bench_die("dbpool_open: %s", e.message);
        /* dbpool_open warms min_size up; wait in case some open in the
         * background. */
        for (int i = 0; i < 500; i++) {
            dbpool_stats st;
            dbpool_get_stats(o->dp, &st);
            if (st.idle + st.in_use >= n)
                break;
            bench_sleep_s(0.01);
        }
    } else if (strcmp(impl, "zdb") == 0) {
#ifdef BENCH_HAVE_ZDB
        o->zurl = URL_new(g_url);
        o->zp = ConnectionPool_new(o->zurl);
        ConnectionPool_setAbortHandler(o->zp, zdb_abort);
        ConnectionPool_setInitialConnections(o->zp, n);
        ConnectionPool_setMaxConnections(o->zp, n);
        ConnectionPool_start(o->zp);
#else
        bench_die("built without libzdb");
#endif
    } else if (strcmp(impl, "apr") == 0) {
#ifdef BENCH_HAVE_APR
        /* A private allocator, destroyed with the pool: APR's global one
         * keeps freed blocks and would hide this pool's allocations. */
        apr_allocator_t *al = NULL;
        if (apr_allocator_create(&al) != APR_SUCCESS ||
            apr_pool_create_ex(&o->apool, NULL, NULL, al) != APR_SUCCESS)
            bench_die("apr_pool_create");
        apr_allocator_owner_set(al, o->apool);
        if (apr_reslist_create(&o->rl, n, n, n, 0, apr_ctor, apr_dtor, NULL, o->apool) != APR_SUCCESS)
            bench_die("apr_reslist_create");
#else
        bench_die("built without APR");
#endif
    } else {
        bench_die("unknown implementation '%s'", impl);
    }
}

static void close_n(opened *o) {
    if (o->raw) {
        for (int i = 0; i < o->n; i++)
            bench_raw_close(g_backend, o->raw[i]);
        __libc_free(o->raw);
    }
    if (o->dp)
        dbpool_close(o->dp);
#ifdef BENCH_HAVE_ZDB
    if (o->zp) {
        ConnectionPool_free(&o->zp);
        URL_free(&o->zurl);
    }
#endif
#ifdef BENCH_HAVE_APR
    if (o->rl) {
        apr_reslist_destroy(o->rl);
        apr_pool_destroy(o->apool);
    }
#endif
    memset(o, 0, sizeof *o);
}

/* Run one SELECT 1 on every connection, each held at once so that none is
 * left out: what a connection holds once it has been used (dbpool's
 * statement cache on SQLite, made at a connection's first statement; the
 * raw side keeps its prepared statement, as bench_pools' baseline does). */
static void use_n(opened *o) {
    if (o->raw) {
        for (int i = 0; i < o->n; i++)
            if (!bench_raw_select1_kept(g_backend, o->raw[i]))
                bench_die("SELECT 1 failed on raw connection %d", i);
    } else if (o->dp) {
        dbpool_conn **c = __libc_calloc((size_t)o->n, sizeof *c);
        dbpool_error e;
        for (int i = 0; i < o->n; i++)
            if (dbpool_acquire(o->dp, 10000, &c[i], &e) != DBPOOL_OK)
                bench_die("dbpool_acquire: %s", e.message);
        for (int i = 0; i < o->n; i++) {
            dbpool_result *r = NULL;
            if (dbpool_query(c[i], "SELECT 1", NULL, 0, &r, &e) != DBPOOL_OK)
                bench_die("dbpool_query: %s", e.message);
            dbpool_result_next(r, NULL);
            dbpool_result_free(r);
        }
        for (int i = 0; i < o->n; i++)
            dbpool_release(c[i]);
        __libc_free(c);
    }
#ifdef BENCH_HAVE_ZDB
    else if (o->zp) {
        Connection_T *c = __libc_calloc((size_t)o->n, sizeof *c);
        for (int i = 0; i < o->n; i++)
            if (!(c[i] = ConnectionPool_getConnection(o->zp)))
                bench_die("libzdb: no connection %d of %d", i + 1, o->n);
        for (int i = 0; i < o->n; i++) {
            TRY {
                ResultSet_T r = Connection_executeQuery(c[i], "SELECT 1");
                ResultSet_next(r);
            }
            ELSE { bench_die("libzdb: SELECT 1 failed"); }
            END_TRY;
        }
        for (int i = 0; i < o->n; i++)
            Connection_close(c[i]);
        __libc_free(c);
    }
#endif
#ifdef BENCH_HAVE_APR
    else if (o->rl) {
        void **c = __libc_calloc((size_t)o->n, sizeof *c);
        for (int i = 0; i < o->n; i++)
            if (apr_reslist_acquire(o->rl, &c[i]) != APR_SUCCESS)
                bench_die("apr_reslist_acquire failed");
        for (int i = 0; i < o->n; i++)
            if (!bench_raw_select1_kept(g_backend, c[i]))
                bench_die("SELECT 1 failed on an apr_reslist connection");
        for (int i = 0; i < o->n; i++)
            apr_reslist_release(o->rl, c[i]);
        __libc_free(c);
    }
#endif
}

static long long heap_delta(const char *impl, int n, bool used) {
    opened o;
    long long before = heap_now();
    open_n(&o, impl, n);
    if (used)
        use_n(&o);
    long long after = heap_now();
    close_n(&o);
    /* Let a pool's background threads finish their exit. */
    bench_sleep_s(0.05);
    return after - before;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: bench_memory heap|rss raw|dbpool|zdb|apr sqlite|pg|mysql|mock URL N\n");
        return 2;
    }
    const char *what = argv[1], *impl = argv[2];
    g_backend = bench_backend_parse(argv[3]);
    g_url = bench_url_arg(argv[4]);
    int n = atoi(argv[5]);
    if (n < 5)
        bench_die("N must be at least 5");
#ifdef BENCH_HAVE_APR
    apr_initialize();
#endif
    const char *bname = bench_backend_name(g_backend);
    const char *iname = strcmp(impl, "zdb") == 0 ? "libzdb" : strcmp(impl, "apr") == 0 ? "apr_reslist" : impl;

    /* Warm-up: the first connection and the first pool of a process set up
     * global state (SQLite's and OpenSSL's initialisation, driver tables,
     * thread-stack caches) that no later connection pays again. */
    if (g_backend != BK_MOCK) {
        opened w;
        open_n(&w, "raw", 1);
        close_n(&w);
    }
    if (strcmp(impl, "raw") != 0) {
        opened w;
        open_n(&w, impl, 1);
        close_n(&w);
        bench_sleep_s(0.05);
    }

    if (strcmp(what, "rss") == 0) {
        long before = rss_bytes();
        opened o;
        open_n(&o, impl, n);
        long after = rss_bytes();
        printf("R\tmem-rss\t%s\t%s\t%d\t0\trss_delta=%ld\tper_conn=%.0f\n", iname, bname, n, after - before,
               (double)(after - before) / n);
        close_n(&o);
        return 0;
    }
    if (strcmp(what, "heap") != 0)
        bench_die("unknown measurement '%s'", what);
    if (strcmp(impl, "raw") == 0)
        bench_die("heap compares a pool with raw connections: give a pool");

    int small = n / 5;
    /* Twice: connections as opened, and after one SELECT 1 on each. */
    for (int used = 0; used <= 1; used++) {
        long long raw_small = g_backend == BK_MOCK ? 0 : heap_delta("raw", small, used);
        long long pool_small = heap_delta(impl, small, used);
        long long raw_n = g_backend == BK_MOCK ? 0 : heap_delta("raw", n, used);
        long long pool_n = heap_delta(impl, n, used);
        double per_conn = (double)(pool_n - raw_n) / n;
        double marginal = (double)((pool_n - raw_n) - (pool_small - raw_small)) / (double)(n - small);
        double fixed = (double)(pool_n - raw_n) - marginal * n;
        const char *sfx = used ? "_used" : "";
        if (!used)
            printf("R\tmem-heap\t%s\t%s\t%d\t0\traw_bytes=%lld\tpool_bytes=%lld", iname, bname, n, raw_n,
                   pool_n);
        printf("\tper_conn%s=%.0f\tmarginal%s=%.0f\tfixed%s=%.0f\traw_per_conn%s=%.0f", sfx, per_conn, sfx,
               marginal, sfx, fixed, sfx, (double)raw_n / n);
    }
    printf("\n");
#ifdef BENCH_HAVE_APR
    apr_terminate();
#endif
    return 0;
}
