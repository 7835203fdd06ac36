/* The two random spreads of the pool, with the random source fixed
 * (dbpool__random is wrapped at link time, see tests/CMakeLists.txt):
 * a connection's lifetime is shortened by up to 2.5% (random % span), so
 * that connections opened together do not expire together, and a retry's
 * backoff is half fixed, half random ("equal jitter"). With the real
 * source no test could tell a spread from none. Mock backend. */
#include "driver_mock.h"
#include "pool_internal.h"
#include "testsupport.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

uint64_t __real_dbpool__random(void);
uint64_t __wrap_dbpool__random(void);

static atomic_bool fixed;
static _Atomic uint64_t fixed_value;
static atomic_long calls;

uint64_t __wrap_dbpool__random(void) {
    atomic_fetch_add(&calls, 1);
    return atomic_load(&fixed) ? atomic_load(&fixed_value) : __real_dbpool__random();
}

static void fix_random(uint64_t v) {
    atomic_store(&fixed_value, v);
    atomic_store(&fixed, true);
    atomic_store(&calls, 0);
}

static int setup(void **state) {
    (void)state;
    dbpool__mock_reset();
    atomic_store(&fixed, false);
    return 0;
}

/* The lifetime a connection got: its expiry less its birth. */
static int64_t lifetime_of_new_connection(uint64_t random_value) {
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.max_lifetime_ms = 4000;
    dbpool *p = dbt_open_lazy_mock(&o);
    fix_random(random_value);
    dbpool_conn *c = dbt_acquire(p);
    int64_t life = c->expires_ns - c->created_ns;
    assert_true(atomic_load(&calls) > 0);
    dbpool_release(c);
    dbpool_close(p);
    return life;
}

static void test_lifetime_shortened_by_random_within_span(void **state) {
    (void)state;
    const int64_t life = 4000 * DBPOOL_NS_PER_MS, span = life / 40; /* up to 2.5% shorter */
    assert_int_equal(lifetime_of_new_connection(0), life);
    assert_int_equal(lifetime_of_new_connection(12345), life - 12345);
    assert_int_equal(lifetime_of_new_connection((uint64_t)span - 1), life - (span - 1));
    assert_int_equal(lifetime_of_new_connection((uint64_t)span + 7), life - 7); /* taken modulo the span */
}

/* Two retries with a base of 200 ms: 200 then 400 ms without a spread.
 * With the random part at 0 each is its fixed half, 100 + 200 = 300 ms;
 * the bound leaves 200 ms for a loaded machine before it reads as 600. */
static void test_backoff_is_half_fixed(void **state) {
    (void)state;
    dbpool_options o;
    dbt_options(&o, 0, 1);
    o.max_retries = 2;
    o.backoff_base_ms = 200;
    o.backoff_max_ms = 10000;
    o.breaker_failures = 0;
    dbpool *p = dbt_open_lazy_mock(&o);
    dbpool__mock_fail_connect(1, 2, DBPOOL_ECONNECT); /* the third attempt works */
    fix_random(0);
    int64_t t0 = dbt_now_ms();
    dbpool_conn *c = dbt_acquire(p);
    int64_t took = dbt_now_ms() - t0;
    if (took < 300 || took >= 500)
        fail_msg("two backoffs with no random part took %lld ms, want their fixed halves: 300 ms",
                 (long long)took);
    dbpool_release(c);
    dbpool_close(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_lifetime_shortened_by_random_within_span, setup),
        cmocka_unit_test_setup(test_backoff_is_half_fixed, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
