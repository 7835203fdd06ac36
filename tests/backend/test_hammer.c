/*
 * test_hammer.c — many threads acquire, query and release (some discard,
 * some leave a transaction open) while a checker thread watches the pool's
 * counters: every cycle is accounted for, the pool never exceeds max_size,
 * total == idle + in use + connecting holds throughout, and no uncommitted
 * row survives its lease.
 */
#include "backend_common.h"

#include <pthread.h>
#include <stdatomic.h>

#define TABLE "bt_hammer"
#define N_THREADS 8
#define N_CYCLES 2000
#define POOL_MAX 4

typedef struct hammer_ctx {
    dbpool *p;
    atomic_bool stop;
    /* per worker */
    long ok[N_THREADS];
    long discards[N_THREADS];
    long open_txn[N_THREADS];
    long committed[N_THREADS];
    long errors[N_THREADS];
    char first_error[N_THREADS][600];
    /* checker */
    long checks;
    long violations;
    int max_total_seen;
    int max_in_use_seen;
} hammer_ctx;

typedef struct worker_arg {
    hammer_ctx *ctx;
    int id;
} worker_arg;

static void note_error(hammer_ctx *ctx, int id, int i, const char *what, int rc, const dbpool_error *e) {
    if (ctx->errors[id]++ == 0)
        snprintf(ctx->first_error[id], sizeof ctx->first_error[id], "cycle %d: %s: %s: %s", i, what,
                 dbpool_errname(rc), e ? e->message : "");
}

static void *worker(void *arg) {
    worker_arg *a = arg;
    hammer_ctx *ctx = a->ctx;
    int id = a->id;
    for (int i = 0; i < N_CYCLES; i++) {
        dbpool_conn *c = NULL;
        dbpool_error e;
        memset(&e, 0, sizeof e);
        int rc = dbpool_acquire(ctx->p, 15000, &c, &e);
        if (rc != DBPOOL_OK) {
            note_error(ctx, id, i, "acquire", rc, &e);
            continue;
        }
        ctx->ok[id]++;
        int64_t v = (int64_t)id * 100000 + i;
        dbpool_param pv = dbpool_param_int64(v);
        dbpool_result *r = NULL;
        rc = dbpool_query(c, "SELECT ?", &pv, 1, &r, &e);
        if (rc == DBPOOL_OK) {
            rc = dbpool_result_next(r, &e);
            if (rc != 1)
                note_error(ctx, id, i, "result_next", rc, &e);
            else if (dbpool_result_int64(r, 0) != v)
                note_error(ctx, id, i, "SELECT ? returned another value", 0, NULL);
            dbpool_result_free(r);
        } else {
            note_error(ctx, id, i, "query", rc, &e);
        }

        if (i % 97 == 5) {
            /* Sometimes the caller decides the connection is bad. */
            rc = dbpool_discard(c);
            if (rc != DBPOOL_OK)
                note_error(ctx, id, i, "discard", rc, NULL);
            ctx->discards[id]++;
            continue;
        }
        if (i % 13 == 0) {
            /* Leave a transaction with a row in it: the release rolls back. */
            dbpool_param row[2] = {dbpool_param_int64(id), dbpool_param_int64(i)};
            rc = dbpool_exec(c, "BEGIN", NULL, 0, NULL, &e);
            if (rc == DBPOOL_OK)
                rc = dbpool_exec(c, "INSERT INTO " TABLE " (worker, cycle) VALUES (?, ?)", row, 2, NULL, &e);
            if (rc != DBPOOL_OK)
                note_error(ctx, id, i, "insert in a transaction", rc, &e);
            ctx->open_txn[id]++;
        } else if (i % 7 == 0) {
            dbpool_param row[2] = {dbpool_param_int64(id), dbpool_param_int64(-i)};
            rc = dbpool_exec(c, "INSERT INTO " TABLE " (worker, cycle) VALUES (?, ?)", row, 2, NULL, &e);
            if (rc != DBPOOL_OK)
                note_error(ctx, id, i, "autocommit insert", rc, &e);
            else
                ctx->committed[id]++;
        }
        rc = dbpool_release(c);
        if (rc != DBPOOL_OK)
            note_error(ctx, id, i, "release", rc, NULL);
    }
    return NULL;
}

static void *checker(void *arg) {
    hammer_ctx *ctx = arg;
    while (!atomic_load(&ctx->stop)) {
        dbpool_stats s;
        dbpool_get_stats(ctx->p, &s);
        bool ok = dbt_invariant_holds(ctx->p);
        if (!ok || s.total > POOL_MAX || s.in_use > POOL_MAX || s.idle < 0 || s.waiting < 0 ||
            s.waiting > N_THREADS)
            ctx->violations++;
        if (s.total > ctx->max_total_seen)
            ctx->max_total_seen = s.total;
        if (s.in_use > ctx->max_in_use_seen)
            ctx->max_in_use_seen = s.in_use;
        ctx->checks++;
        dbt_sleep_ms(0);
    }
    return NULL;
}

static void test_hammer(void **state) {
    (void)state;
    dbpool_options o;
    bt_options(&o, 0, POOL_MAX);
    o.acquire_timeout_ms = 15000;
    dbpool *p = bt_open(&o, NULL);
    dbpool_conn *c = bt_acquire(p);
    bt_exec(c, "DROP TABLE IF EXISTS " TABLE);
    bt_exec(c, "CREATE TABLE IF NOT EXISTS " TABLE " (worker INTEGER NOT NULL, cycle INTEGER NOT NULL)");
    bt_release(c);
    dbpool_stats before = bt_stats(p);

    static hammer_ctx ctx; /* large; keep it off the stack */
    memset(&ctx, 0, sizeof ctx);
    ctx.p = p;
    atomic_init(&ctx.stop, false);
    pthread_t chk, th[N_THREADS];
    worker_arg args[N_THREADS];
    int64_t t0 = dbt_now_ms();
    assert_int_equal(pthread_create(&chk, NULL, checker, &ctx), 0);
    for (int i = 0; i < N_THREADS; i++) {
        args[i].ctx = &ctx;
        args[i].id = i;
        assert_int_equal(pthread_create(&th[i], NULL, worker, &args[i]), 0);
    }
    for (int i = 0; i < N_THREADS; i++)
        pthread_join(th[i], NULL);
    atomic_store(&ctx.stop, true);
    pthread_join(chk, NULL);
    int64_t took = dbt_now_ms() - t0;

    long ok = 0, discards = 0, open_txn = 0, committed = 0, errors = 0;
    for (int i = 0; i < N_THREADS; i++) {
        ok += ctx.ok[i];
        discards += ctx.discards[i];
        open_txn += ctx.open_txn[i];
        committed += ctx.committed[i];
        errors += ctx.errors[i];
        if (ctx.errors[i])
            print_message("[%s] worker %d: %ld errors, first: %s\n", bt_backend, i, ctx.errors[i],
                          ctx.first_error[i]);
    }
    /* A connect requested for a waiter who was then served by a release
     * may still be under way in the background: let it land. */
    dbpool_stats s = bt_stats(p);
    for (int64_t end = dbt_now_ms() + 5000; s.connecting > 0 && dbt_now_ms() < end; s = bt_stats(p))
        dbt_sleep_ms(5);
    print_message("[%s] %d cycles in %lld ms; %ld checks; peak in use %d; created %llu; discards %ld; "
                  "rollbacks %llu\n",
                  bt_backend, N_THREADS * N_CYCLES, (long long)took, ctx.checks, s.peak_in_use,
                  (unsigned long long)(s.created - before.created), discards,
                  (unsigned long long)(s.rollbacks - before.rollbacks));

    BT_CHECK(errors == 0, "%ld unexpected errors (first ones printed above)", errors);
    BT_CHECK(ok == N_THREADS * N_CYCLES, "%ld successful acquires of %d", ok, N_THREADS * N_CYCLES);
    BT_CHECK(s.acquired - before.acquired == (uint64_t)(N_THREADS * N_CYCLES),
             "stats.acquired grew by %llu, expected %d", (unsigned long long)(s.acquired - before.acquired),
             N_THREADS * N_CYCLES);
    BT_CHECK(ctx.violations == 0, "the checker saw %ld broken snapshots in %ld", ctx.violations, ctx.checks);
    BT_CHECK(ctx.checks > 0, "the checker never ran");
    BT_CHECK(ctx.max_total_seen <= POOL_MAX && s.peak_in_use <= POOL_MAX,
             "the pool exceeded max_size %d: total seen %d, peak in use %d", POOL_MAX, ctx.max_total_seen,
             s.peak_in_use);
    BT_CHECK(s.in_use == 0 && s.waiting == 0 && s.connecting == 0 && s.total == s.idle && s.total <= POOL_MAX,
             "at rest: in_use %d waiting %d connecting %d idle %d total %d", s.in_use, s.waiting,
             s.connecting, s.idle, s.total);
    BT_CHECK(s.destroyed_by[DBPOOL_CLOSE_DISCARDED] - before.destroyed_by[DBPOOL_CLOSE_DISCARDED] ==
                 (uint64_t)discards,
             "destroyed_by[discarded] grew by %llu, %ld discards were made",
             (unsigned long long)(s.destroyed_by[DBPOOL_CLOSE_DISCARDED] -
                                  before.destroyed_by[DBPOOL_CLOSE_DISCARDED]),
             discards);
    BT_CHECK(s.rollbacks - before.rollbacks >= (uint64_t)open_txn,
             "stats.rollbacks grew by %llu, %ld leases were released inside a transaction",
             (unsigned long long)(s.rollbacks - before.rollbacks), open_txn);
    BT_CHECK(s.created - before.created >= (uint64_t)discards &&
                 s.destroyed - before.destroyed <= s.created - before.created + 1,
             "created %llu destroyed %llu", (unsigned long long)(s.created - before.created),
             (unsigned long long)(s.destroyed - before.destroyed));
    assert_true(dbt_invariant_holds(p));

    c = bt_acquire(p);
    int64_t rows = bt_query_int(c, "SELECT COUNT(*) FROM " TABLE, NULL, 0);
    BT_CHECK(rows == committed, "the table holds %lld rows, %ld were committed: uncommitted rows survived",
             (long long)rows, committed);
    bt_exec(c, "DROP TABLE IF EXISTS " TABLE);
    bt_release(c);
    assert_int_equal(dbpool_close(p), 0);
}

int main(int argc, char **argv) {
    bt_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hammer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
