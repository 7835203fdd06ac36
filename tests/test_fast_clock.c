/*
 * test_fast_clock: the TSC clock is put back when it parts from
 * CLOCK_MONOTONIC (src/fast_clock.c): a rate that drifted is measured
 * again, a jump is re-anchored, and a TSC that keeps jumping or needs
 * anchor after anchor is given up for CLOCK_MONOTONIC.
 */
#include "dbpool.h"
#include "fast_clock.h"
#include "internal.h"
#include "testsupport.h"
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#define MS INT64_C(1000000)
#define SEC INT64_C(1000000000)

#ifdef DBPOOL_HAVE_TSC

/* One nanosecond per tick, from an arbitrary point. */
static const dbpool_clock_anchor ONE_NS = {
    .tsc0 = UINT64_C(1000000000000), .ns0 = 5 * SEC, .mult = UINT64_C(1) << DBPOOL_FAST_CLOCK_SHIFT};

static double rate_of(const dbpool_clock_anchor *a) {
    return (double)a->mult / (double)(UINT64_C(1) << DBPOOL_FAST_CLOCK_SHIFT);
}

static void test_judge_keeps_within_tolerance(void **state) {
    (void)state;
    dbpool_clock_anchor next = {0};
    uint64_t tsc = ONE_NS.tsc0 + (uint64_t)(60 * SEC);
    assert_int_equal(dbpool__fast_clock_judge(&ONE_NS, false, tsc, ONE_NS.ns0 + 60 * SEC + 900000, &next),
                     DBPOOL_CLOCK_KEEP);
    assert_int_equal(dbpool__fast_clock_judge(&ONE_NS, true, tsc, ONE_NS.ns0 + 60 * SEC - 900000, &next),
                     DBPOOL_CLOCK_KEEP);
}

/* 5 ms over 100 s (50 ppm): the rate was off; the new one is measured. */
static void test_judge_measures_a_drifted_rate(void **state) {
    (void)state;
    dbpool_clock_anchor next = {0};
    uint64_t tsc = ONE_NS.tsc0 + (uint64_t)(100 * SEC);
    int64_t mono = ONE_NS.ns0 + 100 * SEC - 5 * MS;
    assert_int_equal(dbpool__fast_clock_judge(&ONE_NS, false, tsc, mono, &next), DBPOOL_CLOCK_DRIFTED);
    assert_true(next.tsc0 == tsc);
    assert_true(next.ns0 == mono);
    assert_true(fabs(rate_of(&next) - (100.0 * SEC - 5.0 * MS) / (100.0 * SEC)) < 1e-9);
    /* One more second on the new anchor reads one second less 50 us. */
    int64_t later = dbpool__clock_anchor_at(&next, tsc + (uint64_t)SEC);
    assert_true(llabs(later - (mono + SEC - 50000)) < 10);
}

/* 50 ms after 1 s: a jump, not a rate. The rate stays; the anchor moves. */
static void test_judge_reanchors_a_jump(void **state) {
    (void)state;
    dbpool_clock_anchor next = {0};
    uint64_t tsc = ONE_NS.tsc0 + (uint64_t)SEC;
    int64_t mono = ONE_NS.ns0 + SEC + 50 * MS;
    assert_int_equal(dbpool__fast_clock_judge(&ONE_NS, false, tsc, mono, &next), DBPOOL_CLOCK_STEPPED);
    assert_true(next.mult == ONE_NS.mult);
    assert_true(dbpool__clock_anchor_at(&next, tsc) == mono);
    /* A TSC that went back (restarted): also a jump. */
    uint64_t back = ONE_NS.tsc0 - (uint64_t)(3 * SEC);
    assert_int_equal(dbpool__fast_clock_judge(&ONE_NS, false, back, ONE_NS.ns0 + SEC, &next),
                     DBPOOL_CLOCK_STEPPED);
    assert_true(dbpool__clock_anchor_at(&next, back + (uint64_t)SEC) == ONE_NS.ns0 + 2 * SEC);
}

/* After a jump, the next error is measured as the rate, however large:
 * a machine whose TSC now runs at half the rate. */
static void test_judge_measures_after_a_jump(void **state) {
    (void)state;
    dbpool_clock_anchor next = {0};
    uint64_t tsc = ONE_NS.tsc0 + (uint64_t)SEC;
    int64_t mono = ONE_NS.ns0 + 2 * SEC;
    assert_int_equal(dbpool__fast_clock_judge(&ONE_NS, false, tsc, mono, &next), DBPOOL_CLOCK_STEPPED);
    assert_int_equal(dbpool__fast_clock_judge(&ONE_NS, true, tsc, mono, &next), DBPOOL_CLOCK_DRIFTED);
    assert_true(fabs(rate_of(&next) - 2.0) < 1e-9);
    /* Not over a span too short to say (the readings' own error), nor to
     * a rate no TSC has (1 ns per 50 ticks): a jump again. */
    uint64_t close = ONE_NS.tsc0 + (uint64_t)(10 * MS);
    assert_int_equal(dbpool__fast_clock_judge(&ONE_NS, true, close, ONE_NS.ns0 + 60 * MS, &next),
                     DBPOOL_CLOCK_STEPPED);
    assert_int_equal(dbpool__fast_clock_judge(&ONE_NS, true, tsc, ONE_NS.ns0 + SEC / 50, &next),
                     DBPOOL_CLOCK_STEPPED);
}

/* fast clock minus CLOCK_MONOTONIC, now */
static int64_t offset_now(void) {
    int64_t best = INT64_MAX, off = 0;
    for (int i = 0; i < 20; i++) {
        int64_t a = dbpool__now_ns(), f = dbpool__fast_now_ns(), b = dbpool__now_ns();
        if (b - a < best) {
            best = b - a;
            off = f - (a + (b - a) / 2);
        }
    }
    return off;
}

static bool have_tsc_clock(void) {
    (void)dbpool__fast_now_ns();
    return atomic_load(&dbpool__fast_clock.anchor) != NULL;
}

/* Tell the clock it is 50 ms fast: a recheck with a reading of
 * CLOCK_MONOTONIC 50 ms behind the real one. Its verdict (STEPPED: the
 * clock then reads 50 ms behind). */
static dbpool_clock_verdict tell_it_is_50_ms_fast(void) {
    uint64_t tsc = 0;
    int64_t mono = 0;
    dbpool__clock_pair(&tsc, &mono);
    return dbpool__fast_clock_recheck_with(tsc, mono - 50 * MS);
}

/* The process's own clock: a calibrated one is kept; one told it is 50 ms
 * fast moves back 50 ms, and the next real look puts it right again. */
static void test_recheck_moves_the_clock(void **state) {
    (void)state;
    dbpool__fast_clock_reset_for_tests();
    if (!have_tsc_clock())
        skip(); /* no invariant TSC here: CLOCK_MONOTONIC all along */
    uint64_t tsc = 0;
    int64_t mono = 0;
    dbpool__clock_pair(&tsc, &mono);
    assert_int_equal(dbpool__fast_clock_recheck_with(tsc, mono), DBPOOL_CLOCK_KEEP);
    assert_int_equal(tell_it_is_50_ms_fast(), DBPOOL_CLOCK_STEPPED);
    int64_t off = offset_now();
    assert_true(off < -49 * MS && off > -51 * MS);
    dbpool__clock_pair(&tsc, &mono);
    assert_int_equal(dbpool__fast_clock_recheck_with(tsc, mono), DBPOOL_CLOCK_STEPPED);
    off = offset_now();
    assert_true(off > -MS && off < MS);
}

/* A TSC that jumps at every look is given up: the fast clock then reads
 * CLOCK_MONOTONIC itself. */
static void test_recheck_gives_up_a_jumping_tsc(void **state) {
    (void)state;
    dbpool__fast_clock_reset_for_tests();
    if (!have_tsc_clock())
        skip();
    dbpool_clock_verdict v = DBPOOL_CLOCK_KEEP;
    int looks = 0;
    for (; looks < 20 && v != DBPOOL_CLOCK_GIVE_UP; looks++) {
        uint64_t tsc = 0;
        int64_t mono = 0;
        dbpool__clock_pair(&tsc, &mono);
        v = dbpool__fast_clock_recheck_with(tsc, mono + (looks % 2 ? 30 : -30) * MS);
        if (v != DBPOOL_CLOCK_GIVE_UP)
            assert_int_equal(v, DBPOOL_CLOCK_STEPPED);
    }
    assert_int_equal(v, DBPOOL_CLOCK_GIVE_UP);
    assert_int_equal(looks, 9); /* 8 jumps in a row are forgiven, not 9 */
    assert_null(atomic_load(&dbpool__fast_clock.anchor));
    int64_t a = dbpool__now_ns(), f = dbpool__fast_now_ns(), b = dbpool__now_ns();
    assert_true(f >= a && f <= b);
}

/* Jumps apart, the clock keeping time between them (a laptop's suspends,
 * its TSC restarting each time): not "in a row", never given up. */
static void test_recheck_keeps_a_tsc_that_jumps_now_and_then(void **state) {
    (void)state;
    dbpool__fast_clock_reset_for_tests();
    if (!have_tsc_clock())
        skip();
    for (int jump = 0; jump < 12; jump++) {
        int64_t off = (jump % 2 ? 30 : -30) * MS;
        uint64_t tsc = 0;
        int64_t mono = 0;
        dbpool__clock_pair(&tsc, &mono);
        assert_int_equal(dbpool__fast_clock_recheck_with(tsc, mono + off), DBPOOL_CLOCK_STEPPED);
        dbpool__clock_pair(&tsc, &mono); /* a look later: on time since */
        dbpool_clock_verdict v = dbpool__fast_clock_recheck_with(tsc, mono + off);
        if (v != DBPOOL_CLOCK_KEEP)
            fail_msg("after jump %d, a look that found the clock on time: verdict %d", jump + 1, (int)v);
    }
    assert_non_null(atomic_load(&dbpool__fast_clock.anchor));
}

/* Drift made of NTP's wandering correction (2 ppm one way, then the
 * other, every hour): a new anchor every hour, for as long as it takes,
 * through the ring of anchors many times over. */
static void test_recheck_keeps_up_with_slow_drift(void **state) {
    (void)state;
    dbpool__fast_clock_reset_for_tests();
    if (!have_tsc_clock())
        skip();
    const int64_t hour = 3600 * SEC;
    for (int h = 0; h < 1000; h++) {
        const dbpool_clock_anchor *cur = atomic_load(&dbpool__fast_clock.anchor);
        assert_non_null(cur);
        uint64_t tsc = cur->tsc0 + (uint64_t)((double)hour / rate_of(cur));
        int64_t drift = hour / 1000000 * 2; /* 2 ppm: 7.2 ms an hour */
        dbpool_clock_verdict v =
            dbpool__fast_clock_recheck_with(tsc, cur->ns0 + hour + (h % 2 ? drift : -drift));
        assert_int_equal(v, DBPOOL_CLOCK_DRIFTED);
        const dbpool_clock_anchor *now = atomic_load(&dbpool__fast_clock.anchor);
        assert_true(now != cur);
        assert_true(now->tsc0 == tsc);
    }
}

/* A rate that needs anchor after anchor, 32 in an hour: given up. */
static void test_recheck_gives_up_anchors_needed_too_often(void **state) {
    (void)state;
    dbpool__fast_clock_reset_for_tests();
    if (!have_tsc_clock())
        skip();
    int drifted = 0;
    dbpool_clock_verdict v = DBPOOL_CLOCK_KEEP;
    while (v != DBPOOL_CLOCK_GIVE_UP && drifted <= DBPOOL_FAST_CLOCK_MAX_ANCHORS_PER_HOUR) {
        /* 2 ms slow over the next 100 s, every time. */
        const dbpool_clock_anchor *cur = atomic_load(&dbpool__fast_clock.anchor);
        assert_non_null(cur);
        uint64_t tsc = cur->tsc0 + (uint64_t)((double)(100 * SEC) / rate_of(cur));
        v = dbpool__fast_clock_recheck_with(tsc, cur->ns0 + 100 * SEC + 2 * MS);
        if (v == DBPOOL_CLOCK_DRIFTED)
            drifted++;
        else
            assert_int_equal(v, DBPOOL_CLOCK_GIVE_UP);
    }
    assert_int_equal(v, DBPOOL_CLOCK_GIVE_UP);
    /* The calibration's and 31 more within the hour; the 32nd is one too many. */
    assert_int_equal(drifted, DBPOOL_FAST_CLOCK_MAX_ANCHORS_PER_HOUR - 1);
    assert_null(atomic_load(&dbpool__fast_clock.anchor));
}

/* The maintenance passes' call looks at most once a second. */
static void test_recheck_is_rate_limited(void **state) {
    (void)state;
    dbpool__fast_clock_reset_for_tests();
    int64_t calibrated = dbpool__now_ns();
    if (!have_tsc_clock())
        skip();
    /* Told the clock is 50 ms fast, then let the limited recheck look: not
     * before a second has passed since the calibration, then once. (The
     * rate it measures then, over a span that starts at the made-up
     * reading, is 5% off: the offset is checked right after.) */
    assert_int_equal(tell_it_is_50_ms_fast(), DBPOOL_CLOCK_STEPPED);
    dbpool__fast_clock_recheck();
    assert_true(offset_now() < -49 * MS); /* too early: not looked */
    int64_t off = offset_now();
    while (off < -49 * MS && dbpool__now_ns() - calibrated < 3 * SEC) {
        dbpool__fast_clock_recheck();
        off = offset_now();
        if (off < -49 * MS)
            dbt_sleep_ms(5);
    }
    int64_t looked = dbpool__now_ns() - calibrated;
    assert_true(off > -MS && off < MS);
    assert_true(looked >= SEC - 10 * MS);
    assert_true(looked < 3 * SEC);
}

/* A pool's maintenance passes do the looking: a clock told it is 50 ms
 * fast is put back while a pool is open, and not otherwise. */
static void test_maintenance_rechecks(void **state) {
    (void)state;
    dbpool__fast_clock_reset_for_tests();
    if (!have_tsc_clock())
        skip();
    assert_int_equal(tell_it_is_50_ms_fast(), DBPOOL_CLOCK_STEPPED);
    dbt_sleep_ms(1100); /* past the once-a-second limit, no pool open */
    assert_true(offset_now() < -49 * MS);

    dbpool_options o;
    dbpool_options_init(&o);
    o.maintenance_interval_ms = 10;
    dbpool *p = NULL;
    dbpool_error e;
    assert_int_equal(dbpool_open(&p, "mock:", &o, &e), DBPOOL_OK);
    int64_t until = dbpool__now_ns() + 5 * SEC;
    int64_t off = offset_now();
    while (off < -49 * MS && dbpool__now_ns() < until) {
        dbt_sleep_ms(10);
        off = offset_now();
    }
    dbpool_close(p);
    assert_true(off > -MS && off < MS);
}

/* A fork() while another thread rechecks the clock: the child's clock is
 * still checked (its recheck does not wait for a thread it does not have). */
static void test_child_forked_during_a_recheck_rechecks(void **state) {
    (void)state;
    dbpool__fast_clock_reset_for_tests();
    if (!have_tsc_clock())
        skip();
    dbpool_options o;
    dbpool_options_init(&o);
    o.maintenance_interval_ms = 0;
    dbpool *p = NULL;
    dbpool_error e;
    assert_int_equal(dbpool_open(&p, "mock:", &o, &e), DBPOOL_OK); /* the fork handler */
    dbpool__fast_clock_hold_for_tests(true);                       /* a recheck under way at fork() */
    pid_t pid = fork();
    if (pid == 0) {
        alarm(10); /* a recheck that waits for the parent's thread ends here */
        dbpool_clock_verdict v = tell_it_is_50_ms_fast();
        _exit(v == DBPOOL_CLOCK_STEPPED && offset_now() < -49 * MS ? 0 : 3);
    }
    dbpool__fast_clock_hold_for_tests(false);
    assert_true(pid > 0);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    dbpool_close(p);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("the child's recheck: %s %d", WIFEXITED(status) ? "exit" : "signal",
                 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
}

#else
static void test_no_tsc(void **state) {
    (void)state;
    dbpool__fast_clock_recheck(); /* nothing to do */
    int64_t a = dbpool__now_ns(), f = dbpool__fast_now_ns(), b = dbpool__now_ns();
    assert_true(f >= a && f <= b);
}
#endif

int main(void) {
    const struct CMUnitTest tests[] = {
#ifdef DBPOOL_HAVE_TSC
        cmocka_unit_test(test_judge_keeps_within_tolerance),
        cmocka_unit_test(test_judge_measures_a_drifted_rate),
        cmocka_unit_test(test_judge_reanchors_a_jump),
        cmocka_unit_test(test_judge_measures_after_a_jump),
        cmocka_unit_test(test_recheck_moves_the_clock),
        cmocka_unit_test(test_recheck_gives_up_a_jumping_tsc),
        cmocka_unit_test(test_recheck_keeps_up_with_slow_drift),
        cmocka_unit_test(test_recheck_keeps_a_tsc_that_jumps_now_and_then),
        cmocka_unit_test(test_recheck_gives_up_anchors_needed_too_often),
        cmocka_unit_test(test_recheck_is_rate_limited),
        cmocka_unit_test(test_maintenance_rechecks),
        cmocka_unit_test(test_child_forked_during_a_recheck_rechecks),
#else
        cmocka_unit_test(test_no_tsc),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
