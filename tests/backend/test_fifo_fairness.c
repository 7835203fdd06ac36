/*
 * test_fifo_fairness.c — waiters are served first come, first served, and
 * threads competing for a small pool all get their share.
 */
#include "backend_common.h"

#include <pthread.h>
#include <stdatomic.h>

#define N_WAITERS 6

typedef struct fifo_ctx {
    dbpool *p;
    atomic_int next_ticket;
    int served_as[N_WAITERS]; /* served_as[k] = arrival index of the k-th served */
    int rc[N_WAITERS];
    char msg[N_WAITERS][256];
} fifo_ctx;

typedef struct fifo_arg {
    fifo_ctx *ctx;
    int arrival;
} fifo_arg;

static void *fifo_waiter(void *arg) {
    fifo_arg *a = arg;
    dbpool_conn *c = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int rc = dbpool_acquire(a->ctx->p, 10000, &c, &e);
    a->ctx->rc[a->arrival] = rc;
    if (rc != DBPOOL_OK) {
        snprintf(a->ctx->msg[a->arrival], sizeof a->ctx->msg[0], "%s", e.message);
        return NULL;
    }
    int ticket = atomic_fetch_add(&a->ctx->next_ticket, 1);
    if (ticket >= 0 && ticket < N_WAITERS)
        a->ctx->served_as[ticket] = a->arrival;
    dbt_sleep_ms(5);
    a->ctx->rc[a->arrival] = dbpool_release(c);
    return NULL;
}

static void test_waiters_served_in_arrival_order(void **state) {
    (void)state;
    dbpool_options o;
    bt_options(&o, 0, 1);
    o.acquire_timeout_ms = 10000;
    dbpool *p = bt_open(&o, NULL);

    fifo_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.p = p;
    atomic_init(&ctx.next_ticket, 0);
    for (int i = 0; i < N_WAITERS; i++)
        ctx.served_as[i] = -1;

    dbpool_conn *held = bt_acquire(p);
    pthread_t th[N_WAITERS];
    fifo_arg args[N_WAITERS];
    for (int i = 0; i < N_WAITERS; i++) {
        args[i].ctx = &ctx;
        args[i].arrival = i;
        assert_int_equal(pthread_create(&th[i], NULL, fifo_waiter, &args[i]), 0);
        /* Thread i is in line before thread i+1 starts. */
        dbt_wait_for_waiters(p, i + 1, 5000);
    }
    dbpool_stats s = bt_stats(p);
    BT_CHECK(s.peak_waiting >= N_WAITERS, "peak_waiting %d, expected at least %d", s.peak_waiting, N_WAITERS);
    bt_release(held);
    for (int i = 0; i < N_WAITERS; i++)
        pthread_join(th[i], NULL);

    char order[128] = "";
    for (int k = 0; k < N_WAITERS; k++) {
        char one[16];
        snprintf(one, sizeof one, "%s%d", k ? "," : "", ctx.served_as[k]);
        strncat(order, one, sizeof order - strlen(order) - 1);
    }
    for (int i = 0; i < N_WAITERS; i++)
        BT_CHECK(ctx.rc[i] == DBPOOL_OK, "waiter %d failed: %s: %s", i, dbpool_errname(ctx.rc[i]),
                 ctx.msg[i]);
    for (int k = 0; k < N_WAITERS; k++)
        BT_CHECK(ctx.served_as[k] == k, "service order must equal arrival order 0..%d, got %s", N_WAITERS - 1,
                 order);
    s = bt_stats(p);
    BT_CHECK(s.waiting == 0 && s.in_use == 0 && s.total == 1, "after the run: waiting %d in_use %d total %d",
             s.waiting, s.in_use, s.total);
    assert_int_equal(dbpool_close(p), 0);
}

#define N_HAMMER 4

typedef struct starve_ctx {
    dbpool *p;
    atomic_bool stop;
    long count[N_HAMMER];
    int errors[N_HAMMER];
    int last_rc[N_HAMMER];
} starve_ctx;

typedef struct starve_arg {
    starve_ctx *ctx;
    int id;
} starve_arg;

static void *starve_worker(void *arg) {
    starve_arg *a = arg;
    starve_ctx *ctx = a->ctx;
    while (!atomic_load(&ctx->stop)) {
        dbpool_conn *c = NULL;
        int rc = dbpool_acquire(ctx->p, 5000, &c, NULL);
        if (rc != DBPOOL_OK) {
            ctx->errors[a->id]++;
            ctx->last_rc[a->id] = rc;
            continue;
        }
        ctx->count[a->id]++;
        /* Hold it for one round trip, so that the others are in line when
         * it comes back and the pool's queue, not the OS scheduler, decides
         * who gets it next. */
        rc = dbpool_exec(c, "SELECT 1", NULL, 0, NULL, NULL);
        if (rc != DBPOOL_OK) {
            ctx->errors[a->id]++;
            ctx->last_rc[a->id] = rc;
        }
        rc = dbpool_release(c);
        if (rc != DBPOOL_OK) {
            ctx->errors[a->id]++;
            ctx->last_rc[a->id] = rc;
        }
    }
    return NULL;
}

static void test_no_thread_starves(void **state) {
    (void)state;
    dbpool_options o;
    bt_options(&o, 0, 1);
    dbpool *p = bt_open(&o, NULL);
    starve_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.p = p;
    atomic_init(&ctx.stop, false);
    pthread_t th[N_HAMMER];
    starve_arg args[N_HAMMER];
    for (int i = 0; i < N_HAMMER; i++) {
        args[i].ctx = &ctx;
        args[i].id = i;
        assert_int_equal(pthread_create(&th[i], NULL, starve_worker, &args[i]), 0);
    }
    dbt_sleep_ms(1000);
    atomic_store(&ctx.stop, true);
    for (int i = 0; i < N_HAMMER; i++)
        pthread_join(th[i], NULL);

    long min = ctx.count[0], max = ctx.count[0], sum = 0;
    for (int i = 0; i < N_HAMMER; i++) {
        if (ctx.count[i] < min)
            min = ctx.count[i];
        if (ctx.count[i] > max)
            max = ctx.count[i];
        sum += ctx.count[i];
        BT_CHECK(ctx.errors[i] == 0, "thread %d had %d failed calls (last %s)", i, ctx.errors[i],
                 dbpool_errname(ctx.last_rc[i]));
    }
    print_message("[%s] acquisitions per thread: %ld %ld %ld %ld\n", bt_backend, ctx.count[0], ctx.count[1],
                  ctx.count[2], ctx.count[3]);
    BT_CHECK(min > 0, "a thread never got the connection: %ld %ld %ld %ld", ctx.count[0], ctx.count[1],
             ctx.count[2], ctx.count[3]);
    BT_CHECK(max < 3 * min, "unfair share: max %ld >= 3 x min %ld (counts %ld %ld %ld %ld)", max, min,
             ctx.count[0], ctx.count[1], ctx.count[2], ctx.count[3]);
    dbpool_stats s = bt_stats(p);
    BT_CHECK(s.acquired >= (uint64_t)sum, "stats.acquired %llu < %ld acquisitions counted",
             (unsigned long long)s.acquired, sum);
    BT_CHECK(s.total == 1 && s.in_use == 0, "total %d in_use %d", s.total, s.in_use);
    assert_int_equal(dbpool_close(p), 0);
}

int main(int argc, char **argv) {
    bt_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_waiters_served_in_arrival_order),
        cmocka_unit_test(test_no_thread_starves),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
