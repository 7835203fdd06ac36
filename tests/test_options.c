/* Every option's validation: each bad value is DBPOOL_EINVAL naming the
 * field and the value; defaults match the documented ones. */
#include "pool_internal.h"
#include "testsupport.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static void test_defaults(void **state) {
    (void)state;
    dbpool_options o;
    dbpool_options_init(&o);
    assert_int_equal(o.min_size, 0);
    assert_int_equal(o.max_size, 10);
    assert_int_equal(o.acquire_timeout_ms, 30000);
    assert_int_equal(o.connect_timeout_ms, 10000);
    assert_int_equal(o.idle_timeout_ms, 600000);
    assert_int_equal(o.max_lifetime_ms, 1800000);
    assert_int_equal(o.validation_timeout_ms, 5000);
    assert_int_equal(o.max_retries, 3);
    assert_int_equal(o.backoff_base_ms, 10);
    assert_int_equal(o.max_waiters, 0);
    assert_int_equal(o.validation, DBPOOL_VALIDATE_IF_IDLE);
    assert_int_equal(o.validation_window_ms, 500);
    assert_string_equal(o.name, "default");
    /* The rest of include/dbpool.h's "(default)" figures. */
    assert_int_equal(o.backoff_max_ms, 2000);
    assert_null(o.init_sql);
    assert_null(o.after_connect);
    assert_null(o.after_connect_user);
    assert_null(o.log_fn);
    assert_null(o.log_user);
    assert_int_equal(o.log_level, DBPOOL_LOG_INFO);
    assert_int_equal(o.statement_timeout_ms, 0);
    assert_int_equal(o.keepalive_ms, 0);
    assert_int_equal(o.leak_threshold_ms, 0);
    assert_int_equal(o.maintenance_interval_ms, 1000);
    assert_false(o.lazy_connect);
    assert_int_equal(o.max_connecting, 2);
    assert_int_equal(o.leak_reclaim_ms, 0);
    assert_int_equal(o.breaker_failures, 5);
    assert_int_equal(o.breaker_cooldown_ms, 5000);
    assert_false(o.autoscale);
    assert_true(o.autoscale_high == 0.8);
    assert_true(o.autoscale_low == 0.5);
    assert_true(o.autoscale_step == 0.2);
    assert_int_equal(o.autoscale_interval_ms, 60000);
    assert_true(o.suspend_fails_fast);
    assert_int_equal(o.barging_window_us, 50);
    assert_true(o.thread_cache);
    assert_true(o.statement_cache);
}

typedef void (*mutate_fn)(dbpool_options *o);
static void m_max0(dbpool_options *o) { o->max_size = 0; }
static void m_maxneg(dbpool_options *o) { o->max_size = -3; }
static void m_minneg(dbpool_options *o) { o->min_size = -1; }
static void m_min_gt_max(dbpool_options *o) { o->min_size = 5, o->max_size = 4; }
static void m_acq0(dbpool_options *o) { o->acquire_timeout_ms = 0; }
static void m_conn0(dbpool_options *o) { o->connect_timeout_ms = 0; }
static void m_val0(dbpool_options *o) { o->validation_timeout_ms = -5; }
static void m_idleneg(dbpool_options *o) { o->idle_timeout_ms = -1; }
static void m_lifeneg(dbpool_options *o) { o->max_lifetime_ms = -1; }
static void m_retneg(dbpool_options *o) { o->max_retries = -1; }
static void m_retbig(dbpool_options *o) { o->max_retries = 2147483647; }
static void m_maxbig(dbpool_options *o) { o->max_size = 2147483647; }
static void m_connbig(dbpool_options *o) { o->max_connecting = 1001; }
static void m_backneg(dbpool_options *o) { o->backoff_base_ms = -1; }
static void m_backmax(dbpool_options *o) { o->backoff_base_ms = 100, o->backoff_max_ms = 50; }
static void m_waitneg(dbpool_options *o) { o->max_waiters = -2; }
static void m_valmode(dbpool_options *o) { o->validation = (dbpool_validation)7; }
static void m_winneg(dbpool_options *o) { o->validation_window_ms = -1; }
static void m_stmtneg(dbpool_options *o) { o->statement_timeout_ms = -1; }
static void m_keepneg(dbpool_options *o) { o->keepalive_ms = -1; }
static void m_leakneg(dbpool_options *o) { o->leak_threshold_ms = -1; }
static void m_maintneg(dbpool_options *o) { o->maintenance_interval_ms = -1; }
static void m_loglevel(dbpool_options *o) { o->log_level = (dbpool_log_level)9; }
/* Durations so long that their nanoseconds overflow. */
static void m_lifehuge(dbpool_options *o) { o->max_lifetime_ms = INT64_MAX; }
static void m_idlehuge(dbpool_options *o) { o->idle_timeout_ms = INT64_MAX / 1000; }
static void m_bargehuge(dbpool_options *o) { o->barging_window_us = INT64_MAX; }
static void m_backhuge(dbpool_options *o) { o->backoff_max_ms = INT64_MAX / 2; }
static void m_connecting0(dbpool_options *o) { o->max_connecting = 0; }
static void m_bargeneg(dbpool_options *o) { o->barging_window_us = -1; }
static void m_breakneg(dbpool_options *o) { o->breaker_failures = -1; }
static void m_cool0(dbpool_options *o) { o->breaker_cooldown_ms = 0; }
static void m_scale_low0(dbpool_options *o) { o->autoscale = true, o->autoscale_low = 0; }
static void m_scale_low_high(dbpool_options *o) {
    o->autoscale = true, o->autoscale_low = 0.75, o->autoscale_high = 0.75;
}
static void m_scale_high(dbpool_options *o) { o->autoscale = true, o->autoscale_high = 1.25; }
static void m_scale_step0(dbpool_options *o) { o->autoscale = true, o->autoscale_step = 0; }
static void m_scale_step(dbpool_options *o) { o->autoscale = true, o->autoscale_step = 1.5; }
static void m_scale_int0(dbpool_options *o) { o->autoscale = true, o->autoscale_interval_ms = 0; }
/* The upper bound applies with autoscale off too (docs/configuration.md). */
static void m_scale_inthuge(dbpool_options *o) { o->autoscale_interval_ms = INT64_MAX; }
static void m_name128(dbpool_options *o) {
    static char name[129];
    memset(name, 'n', 128);
    o->name = name;
}

static const struct {
    mutate_fn fn;
    const char *field;
    const char *value;
} cases[] = {
    {m_max0, "max_size", "0"},
    {m_maxneg, "max_size", "-3"},
    {m_minneg, "min_size", "-1"},
    {m_min_gt_max, "min_size", "5"},
    {m_acq0, "acquire_timeout_ms", "0"},
    {m_conn0, "connect_timeout_ms", "0"},
    {m_val0, "validation_timeout_ms", "-5"},
    {m_idleneg, "idle_timeout_ms", "-1"},
    {m_lifeneg, "max_lifetime_ms", "-1"},
    {m_retneg, "max_retries", "-1"},
    {m_retbig, "max_retries", "2147483647"},
    {m_maxbig, "max_size", "2147483647"},
    {m_connbig, "max_connecting", "1001"},
    {m_backneg, "backoff_base_ms", "-1"},
    {m_backmax, "backoff_max_ms", "50"},
    {m_waitneg, "max_waiters", "-2"},
    {m_valmode, "validation", "7"},
    {m_winneg, "validation_window_ms", "-1"},
    {m_stmtneg, "statement_timeout_ms", "-1"},
    {m_keepneg, "keepalive_ms", "-1"},
    {m_leakneg, "leak_threshold_ms", "-1"},
    {m_maintneg, "maintenance_interval_ms", "-1"},
    {m_loglevel, "log_level", "9"},
    {m_lifehuge, "max_lifetime_ms", "at most"},
    {m_idlehuge, "idle_timeout_ms", "at most"},
    {m_bargehuge, "barging_window_us", "at most"},
    {m_backhuge, "backoff_max_ms", "at most"},
    {m_connecting0, "max_connecting", "0"},
    {m_bargeneg, "barging_window_us", "-1"},
    {m_breakneg, "breaker_failures", "-1"},
    {m_cool0, "breaker_cooldown_ms", "0"},
    {m_scale_low0, "autoscale_low", "0"},
    {m_scale_low_high, "autoscale_low", "0.75"},
    {m_scale_high, "autoscale_high", "1.25"},
    {m_scale_step0, "autoscale_step", "0"},
    {m_scale_step, "autoscale_step", "1.5"},
    {m_scale_int0, "autoscale_interval_ms", "0"},
    {m_scale_inthuge, "autoscale_interval_ms", "at most"},
    {m_name128, "name", "128"},
};

static void test_each_violation_named(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        dbpool_options o;
        dbpool_options_init(&o);
        cases[i].fn(&o);
        dbpool *p = (dbpool *)0x1;
        dbpool_error e;
        int rc = dbpool_open(&p, "mock:", &o, &e);
        if (rc != DBPOOL_EINVAL || !strstr(e.message, cases[i].field) || !strstr(e.message, cases[i].value))
            fail_msg("case %s=%s: rc=%d message='%s'", cases[i].field, cases[i].value, rc, e.message);
        assert_null(p);
        assert_int_equal(e.code, DBPOOL_EINVAL);
    }
}

/* The classic first mistake: `dbpool_options o = {0};` (no
 * dbpool_options_init) and a size set. The error said "acquire_timeout_ms
 * must be greater than 0 (got 0)", naming a field the caller never set;
 * it says what was missed. */
static void test_uninitialised_options_named(void **state) {
    (void)state;
    for (int max = 0; max <= 4; max += 4) {
        dbpool_options o;
        memset(&o, 0, sizeof o);
        o.max_size = max;
        dbpool *p = (dbpool *)0x1;
        dbpool_error e;
        assert_int_equal(dbpool_open(&p, "mock:", &o, &e), DBPOOL_EINVAL);
        assert_null(p);
        if (!strstr(e.message, "dbpool_options_init(&o) first"))
            fail_msg("max_size %d: %s", max, e.message);
    }
    /* One field at 0 is still that field's own error. */
    dbpool_options o;
    dbpool_options_init(&o);
    o.acquire_timeout_ms = 0;
    dbpool *p = NULL;
    dbpool_error e;
    assert_int_equal(dbpool_open(&p, "mock:", &o, &e), DBPOOL_EINVAL);
    if (strstr(e.message, "dbpool_options_init") || !strstr(e.message, "acquire_timeout_ms"))
        fail_msg("acquire_timeout_ms 0 alone: %s", e.message);
}

/* The bound on a microseconds field is given in its own unit: 4611686018427
 * microseconds are about 53 days (the message said 146 years, the figure
 * for milliseconds). */
static void test_microseconds_bound_in_its_unit(void **state) {
    (void)state;
    dbpool_options o;
    dbpool_options_init(&o);
    o.barging_window_us = INT64_MAX;
    dbpool *p = NULL;
    dbpool_error e;
    assert_int_equal(dbpool_open(&p, "mock:", &o, &e), DBPOOL_EINVAL);
    if (strstr(e.message, "years") || !strstr(e.message, "53 days"))
        fail_msg("message: %s", e.message);
}

/* Each way leak_reclaim_ms can be wrong is said as it is: a negative one
 * was told it "needs leak_threshold_ms > 0" when that was set, and one
 * below the threshold was not told the threshold. */
static void test_leak_reclaim_errors_say_what_is_wrong(void **state) {
    (void)state;
    static const struct {
        int64_t threshold, reclaim;
        const char *want[3];
        const char *not_want;
    } reclaim_cases[] = {
        {100, -1, {"leak_reclaim_ms", "-1", "0 (never) or more"}, "leak_threshold_ms"},
        {100, 50, {"leak_reclaim_ms (50)", "below", "leak_threshold_ms (100)"}, NULL},
        {0, 100, {"leak_reclaim_ms (100)", "leak_threshold_ms > 0", NULL}, "below"},
    };
    for (size_t i = 0; i < sizeof reclaim_cases / sizeof *reclaim_cases; i++) {
        dbpool_options o;
        dbpool_options_init(&o);
        o.leak_threshold_ms = reclaim_cases[i].threshold;
        o.leak_reclaim_ms = reclaim_cases[i].reclaim;
        dbpool *p = NULL;
        dbpool_error e;
        assert_int_equal(dbpool_open(&p, "mock:", &o, &e), DBPOOL_EINVAL);
        for (int k = 0; k < 3; k++)
            if (reclaim_cases[i].want[k] && !strstr(e.message, reclaim_cases[i].want[k]))
                fail_msg("threshold %lld, reclaim %lld: '%s' should say '%s'",
                         (long long)reclaim_cases[i].threshold, (long long)reclaim_cases[i].reclaim,
                         e.message, reclaim_cases[i].want[k]);
        if (reclaim_cases[i].not_want && strstr(e.message, reclaim_cases[i].not_want))
            fail_msg("threshold %lld, reclaim %lld: '%s' should not mention '%s'",
                     (long long)reclaim_cases[i].threshold, (long long)reclaim_cases[i].reclaim, e.message,
                     reclaim_cases[i].not_want);
        assert_null(p);
    }
}

/* Work that needs the maintenance thread, asked for with none: the error
 * names what was set (it listed autoscale, leak_threshold_ms and
 * keepalive_ms whichever one it was). */
static void test_maintenance_off_names_what_needs_it(void **state) {
    (void)state;
    dbpool_options o;
    dbpool_options_init(&o);
    o.maintenance_interval_ms = 0;
    o.leak_threshold_ms = 100;
    o.leak_reclaim_ms = 200;
    dbpool *p = NULL;
    dbpool_error e;
    assert_int_equal(dbpool_open(&p, "mock:", &o, &e), DBPOOL_EINVAL);
    if (!strstr(e.message, "leak_threshold_ms runs in the maintenance thread") ||
        !strstr(e.message, "maintenance_interval_ms > 0") || strstr(e.message, "autoscale") ||
        strstr(e.message, "keepalive_ms"))
        fail_msg("leak detection without maintenance: %s", e.message);
    assert_null(p);

    dbpool_options_init(&o);
    o.maintenance_interval_ms = 0;
    o.keepalive_ms = 1000;
    o.leak_threshold_ms = 100;
    assert_int_equal(dbpool_open(&p, "mock:", &o, &e), DBPOOL_EINVAL);
    if (!strstr(e.message, "leak_threshold_ms and keepalive_ms run in the maintenance thread") ||
        strstr(e.message, "autoscale"))
        fail_msg("leak detection and keepalive without maintenance: %s", e.message);
    assert_null(p);
}

static void test_null_options_are_defaults(void **state) {
    (void)state;
    dbpool *p = NULL;
    dbpool_error e;
    assert_int_equal(dbpool_open(&p, "mock:", NULL, &e), DBPOOL_OK);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.max_size, 10);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_bad_urls(void **state) {
    (void)state;
    static const struct {
        const char *url;
        int code;
        const char *needle;
    } urls[] = {
        {"", DBPOOL_EINVAL, "empty"},
        {"nothing", DBPOOL_EINVAL, "scheme"},
        {"oracle://x", DBPOOL_EINVAL, "oracle"},
        {"postgresq://u:pw@127.0.0.1/db", DBPOOL_EINVAL, "scheme 'postgresq'"}, /* a typo is named */
        {"mysql+tcp:x", DBPOOL_EINVAL, "scheme 'mysql+tcp'"},
        /* No scheme: what stands before the ':' may be a password. */
        {"app:Hunter2@127.0.0.1/db", DBPOOL_EINVAL, "not shown"},
        {"password=Hunter2:x host=127.0.0.1", DBPOOL_EINVAL, "not shown"},
        {"sqlite:", DBPOOL_EINVAL, "no path"},
        {"sqlite::memory:?colour=red", DBPOOL_EINVAL, "colour"},
        {"sqlite::memory:?pool_colour=red", DBPOOL_EINVAL, "pool_colour"},
        {"sqlite::memory:?pool_max=zero", DBPOOL_EINVAL, "pool_max"},
        {"sqlite::memory:?pool_max=0", DBPOOL_EINVAL, "pool_max"},
        {"sqlite::memory:?synchronous=sometimes", DBPOOL_EINVAL, "synchronous"},
        {"sqlite::memory:?journal_mode=fast", DBPOOL_EINVAL, "journal_mode"},
        {"sqlite::memory:?busy_timeout=-1", DBPOOL_EINVAL, "busy_timeout"},
        {"sqlite::memory:?mode=rx", DBPOOL_EINVAL, "mode"},
        {"sqlite::memory:?pool_validation=sometimes", DBPOOL_EINVAL, "pool_validation"},
        {"sqlite::memory:?pool_thread_cache=maybe", DBPOOL_EINVAL, "pool_thread_cache"},
        {"sqlite::memory:?pool_statement_cache=sometimes", DBPOOL_EINVAL, "pool_statement_cache"},
        {"sqlite::memory:?x=%zz", DBPOOL_EINVAL, "percent"},
        {"sqlite::memory:?pool_max=+5", DBPOOL_EINVAL, "pool_max"},
        {"sqlite::memory:?pool_max=%205", DBPOOL_EINVAL, "pool_max"},
        {"sqlite::memory:?pool_acquire_timeout=5000000000000", DBPOOL_EINVAL, "to 4611686018427"},
        /* A key twice is ambiguous (the last one used to win silently). */
        {"sqlite::memory:?pool_max=2&pool_max=3", DBPOOL_EINVAL, "'pool_max' is given more than once"},
        {"mock:?pool_name=x&pool_min=1&pool_name=y", DBPOOL_EINVAL, "'pool_name' is given more than once"},
        {"sqlite::memory:?busy_timeout=1&busy_timeout=2", DBPOOL_EINVAL, "'busy_timeout' is given more"},
    };
    for (size_t i = 0; i < sizeof urls / sizeof *urls; i++) {
        dbpool *p = NULL;
        dbpool_error e;
        int rc = dbpool_open(&p, urls[i].url, NULL, &e);
        if (rc != urls[i].code || !strstr(e.message, urls[i].needle))
            fail_msg("url '%s': rc=%d message='%s'", urls[i].url, rc, e.message);
        assert_null(p);
    }
    dbpool *p = NULL;
    assert_int_equal(dbpool_open(&p, NULL, NULL, NULL), DBPOOL_EINVAL);
    assert_int_equal(dbpool_open(NULL, "mock:", NULL, NULL), DBPOOL_EINVAL);
}

/* URLs a driver's parser would split in the wrong place, quoting a piece of
 * the password as a host, a port or a key: refused before any driver sees
 * them, with messages that quote nothing of the URL. */
static void test_ambiguous_urls_refused_without_quoting(void **state) {
    (void)state;
    static const char *const bad[] = {
        "postgresql://u:Hunter2@TailPart@127.0.0.1:5432/db",       /* raw '@' in the password */
        "postgresql://u:Hunter2/TailPart@127.0.0.1:5432/db",       /* raw '/' */
        "postgresql://u:Hunter2?TailPart@127.0.0.1/db",            /* raw '?' */
        "mysql://u:Hunter2#TailPart@127.0.0.1/db",                 /* raw '#' */
        "postgresql://u@127.0.0.1/db?password=Hunter2&TailPart",   /* raw '&' in password= */
        "mysql://u:Hunter2Long%00TailPart@127.0.0.1:3306/db",      /* %00 cuts the password short */
        "postgresql://u@127.0.0.1/db?password=Hunter2Long%00Tail", /* ... or the value */
        "postgresql://127.0.0.1:0/db",
        "postgresql://127.0.0.1:70000/db",
        "mysql://[::1]:port/db",
        "postgresql://h1:5432,h2:x/db",
        /* A password that starts with digits and holds a '/' or '?': the
         * digits pass for a port, and the rest, up to its '@', for the
         * database or a query key. */
        "postgresql://127.0.0.1:4711/Hunter2@127.0.0.1:5432/db",
        "mysql://127.0.0.1:4711/Hunter2@127.0.0.1:3306/db",
        "postgresql://127.0.0.1:4711?Hunter2=TailPart@127.0.0.1:5432/db",
        "mysql://127.0.0.1:4711?Hunter2=TailPart@127.0.0.1:3306/db",
        "postgresql://127.0.0.1:4711/x?Hunter2=TailPart@127.0.0.1/db",
        /* ... or a '@' and a '?': the piece after its '@' passes for the host. */
        "postgresql://u:Hunter2@TailPart?k=v@127.0.0.1/db",
        /* ... with no database after the host: the '@' of the user info is
         * then followed by a port or a second '?'. */
        "postgresql://127.0.0.1:4711?sslmode=Hunter2@127.0.0.1:5432",
        "mysql://127.0.0.1:4711?Hunter2=TailPart@127.0.0.1:3306?connect_timeout=1",
        /* ... or with a '?' that makes a key no backend has. */
        "postgresql://127.0.0.1:4711?x/Hunter2?TailPart=1@dbhost",
        /* ... or with a '#' cutting the host part short: libpq and the
         * MySQL parser read '#' as part of the port. */
        "postgresql://127.0.0.1:4711#x?Hunter2=TailPart@127.0.0.1",
        "postgresql://u:Hunter2@127.0.0.1:1#Hunter2=TailPart@127.0.0.1/db",
        /* ... or the user info is not seen at all: its '[' starts a host. */
        "mysql://[u:Hunter2?k=v@127.0.0.1:3306",
        "postgresql://[u:Hunter2?k=v@127.0.0.1:5432",
    };
    dbpool_options o;
    dbpool_options_init(&o);
    o.min_size = 0; /* parse only: nothing connects */
    o.lazy_connect = true;
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        dbpool *p = NULL;
        dbpool_error e;
        int rc = dbpool_open(&p, bad[i], &o, &e);
        if (rc == DBPOOL_EUNSUPPORTED)
            continue; /* that backend is not built in */
        if (rc != DBPOOL_EINVAL || strstr(e.message, "Hunter2") || strstr(e.message, "Tail"))
            fail_msg("url %zu: rc=%d message='%s'", i, rc, e.message);
        assert_null(p);
    }
    /* A NUL in a file name would open a shorter one. */
    const char *cut = "/tmp/dbpool_test_options_nul";
    unlink(cut);
    dbpool *p = NULL;
    dbpool_error e;
    assert_int_equal(dbpool_open(&p, "sqlite:/tmp/dbpool_test_options_nul%00.db", &o, &e), DBPOOL_EINVAL);
    assert_non_null(strstr(e.message, "%00"));
    assert_int_equal(access(cut, F_OK), -1);
    /* What they must not catch: encoded specials, several hosts, IPv6,
     * the default port, '@' inside query values. */
    static const char *const good[] = {
        "postgresql://u:Hunter2%40Tail%2FPart@127.0.0.1:5432/db",
        "postgresql://127.0.0.1:5432,127.0.0.1:5433/db?application_name=a@b",
        "postgresql://127.0.0.1/db?user=me@corp&password=pass@word",
        "mysql://u:pw@127.0.0.1/db%23x",
        "mysql://u:pw@[::1]:3306/db",
        "postgresql://u@127.0.0.1:/db",
        "mysql://u:pw@127.0.0.1:/db", /* the default port, as in the PostgreSQL form */
        "mysql://u@[::1]:/db",
        "mysql://u@h1:,h2:3307/db",
        "postgresql:///db?host=/tmp",
        /* SQLite's "//" is followed by a path, which may hold ':' and '@'. */
        "sqlite://dbpool_test_options:2024.db",
        "sqlite://dbpool_test_options@a@b.db",
        "SQLITE3:///tmp/dbpool_test_options:x.db",
    };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        p = NULL;
        int rc = dbpool_open(&p, good[i], &o, &e);
        if (rc == DBPOOL_EUNSUPPORTED)
            continue;
        if (rc != DBPOOL_OK)
            fail_msg("url '%s' should open: rc=%d message='%s'", good[i], rc, e.message);
        assert_int_equal(dbpool_close(p), 0);
    }
}

/* URL pool_* keys override the options struct (documented precedence). */
static void test_pool_keys_override_struct(void **state) {
    (void)state;
    dbpool_options o;
    dbpool_options_init(&o);
    o.max_size = 3;
    o.min_size = 1;
    dbpool *p = NULL;
    dbpool_error e;
    assert_int_equal(dbpool_open(&p, "mock:?pool_max=7&pool_min=2&pool_name=orders", &o, &e), DBPOOL_OK);
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    assert_int_equal(s.max_size, 7);
    assert_int_equal(s.min_size, 2);
    assert_int_equal(s.total, 2); /* warmed up */
    assert_string_equal(dbpool_name(p), "orders");
    dbpool_close(p);
    /* A boolean key: the thread cache off keeps a release on the idle list. */
    assert_int_equal(dbpool_open(&p, "mock:?pool_thread_cache=off", &o, &e), DBPOOL_OK);
    dbpool_conn *c = NULL;
    assert_int_equal(dbpool_acquire(p, 1000, &c, &e), DBPOOL_OK);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    dbpool_get_stats(p, &s);
    assert_int_equal(s.thread_cached, 0);
    dbpool_close(p);
    assert_int_equal(dbpool_open(&p, "mock:?pool_thread_cache=1", &o, &e), DBPOOL_OK);
    assert_int_equal(dbpool_acquire(p, 1000, &c, &e), DBPOOL_OK);
    assert_int_equal(dbpool_release(c), DBPOOL_OK);
    dbpool_get_stats(p, &s);
    assert_int_equal(s.thread_cached, 1);
    dbpool_close(p);
    /* A URL value that breaks the struct's invariants is still caught. */
    o.min_size = 2;
    assert_int_equal(dbpool_open(&p, "mock:?pool_max=1", &o, &e), DBPOOL_EINVAL);
    assert_non_null(strstr(e.message, "min_size"));
}

/* A pool's name is its key in the manager's JSON and its Prometheus
 * label: empty, not UTF-8 (two such names rendered as the same text, both
 * bytes becoming U+FFFD) or holding control characters is refused, from the
 * options struct and from the URL alike. */
static void test_pool_names(void **state) {
    (void)state;
    static const struct {
        const char *name, *needle;
    } bad[] = {
        {"", "empty"},
        {"orders\xff", "UTF-8"},
        {"orders\xfe", "UTF-8"},
        {"bad\xc3(", "UTF-8"},         /* truncated sequence */
        {"\xc0\xaf", "UTF-8"},         /* overlong '/' */
        {"s\xed\xa0\x80", "UTF-8"},    /* a UTF-16 surrogate */
        {"\xf4\x90\x80\x80", "UTF-8"}, /* above U+10FFFF */
        {"line\nfeed", "control"},
        {"tab\there", "control"},
        {"cr\r", "control"},
        {"del\x7f", "control"},
        {"c1\xc2\x85", "control"}, /* U+0085 NEL */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        dbpool_options o;
        dbpool_options_init(&o);
        o.name = bad[i].name;
        dbpool *p = (dbpool *)0x1;
        dbpool_error e;
        int rc = dbpool_open(&p, "mock:", &o, &e);
        if (rc != DBPOOL_EINVAL || !strstr(e.message, "name") || !strstr(e.message, bad[i].needle))
            fail_msg("name #%zu: rc=%d message='%s'", i, rc, e.message);
        assert_null(p);
    }
    static const struct {
        const char *url, *needle;
    } bad_urls[] = {
        {"mock:?pool_name=", "empty"},
        {"mock:?pool_name=orders%FF", "UTF-8"},
        {"mock:?pool_name=orders%FE", "UTF-8"},
        {"mock:?pool_name=a%0Ab", "control"},
    };
    for (size_t i = 0; i < sizeof bad_urls / sizeof *bad_urls; i++) {
        dbpool *p = (dbpool *)0x1;
        dbpool_error e;
        int rc = dbpool_open(&p, bad_urls[i].url, NULL, &e);
        if (rc != DBPOOL_EINVAL || !strstr(e.message, "name") || !strstr(e.message, bad_urls[i].needle))
            fail_msg("url %s: rc=%d message='%s'", bad_urls[i].url, rc, e.message);
        assert_null(p);
    }
    static const char *const good[] = {"orders",           "caf\xc3\xa9",  "we\"ird\\pool name",
                                       "\xf0\x9f\x90\x98", "\xef\xbf\xbd", "x"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        dbpool_options o;
        dbpool_options_init(&o);
        o.name = good[i];
        dbpool *p = NULL;
        dbpool_error e;
        if (dbpool_open(&p, "mock:", &o, &e) != DBPOOL_OK)
            fail_msg("name #%zu should open: %s", i, e.message);
        assert_string_equal(dbpool_name(p), good[i]);
        dbpool_close(p);
    }
    dbpool *p = NULL;
    dbpool_error e;
    assert_int_equal(dbpool_open(&p, "mock:?pool_name=caf%C3%A9", NULL, &e), DBPOOL_OK);
    assert_string_equal(dbpool_name(p), "caf\xc3\xa9");
    dbpool_close(p);
    dbpool_options o;
    dbpool_options_init(&o);
    o.name = NULL; /* the default name */
    assert_int_equal(dbpool_open(&p, "mock:", &o, &e), DBPOOL_OK);
    assert_string_equal(dbpool_name(p), "default");
    dbpool_close(p);
}

/* The documented bounds are inclusive: a value at the edge of each range
 * in docs/configuration.md opens. */
static void test_values_at_the_bounds_open(void **state) {
    (void)state;
    const int64_t max_duration = 4611686018427; /* INT64_MAX / 2000000 */
    char name127[128];
    memset(name127, 'n', 127);
    name127[127] = '\0';
    for (int i = 0; i < 9; i++) {
        dbpool_options o;
        dbpool_options_init(&o);
        o.lazy_connect = true;
        const char *what = "";
        switch (i) {
        case 0:
            what = "max_size 1000000";
            o.max_size = 1000000;
            o.min_size = 0;
            break;
        case 1:
            what = "max_retries 1000, backoff_max_ms = backoff_base_ms";
            o.max_retries = 1000;
            o.backoff_base_ms = o.backoff_max_ms = 7;
            break;
        case 2:
            what = "name of 127 bytes";
            o.name = name127;
            break;
        case 3:
            what = "autoscale_step 1, autoscale_high 1";
            o.autoscale = true;
            o.autoscale_step = 1.0;
            o.autoscale_high = 1.0;
            break;
        case 4:
            what = "leak_reclaim_ms = leak_threshold_ms";
            o.leak_threshold_ms = o.leak_reclaim_ms = 100;
            break;
        case 5:
            what = "every duration at its upper bound";
            o.acquire_timeout_ms = o.connect_timeout_ms = o.idle_timeout_ms = max_duration;
            o.max_lifetime_ms = o.validation_timeout_ms = o.backoff_max_ms = max_duration;
            o.validation_window_ms = o.statement_timeout_ms = o.keepalive_ms = max_duration;
            o.leak_threshold_ms = o.leak_reclaim_ms = o.maintenance_interval_ms = max_duration;
            o.breaker_cooldown_ms = o.autoscale_interval_ms = o.barging_window_us = max_duration;
            break;
        case 6:
            what = "zeros where 0 means off";
            o.idle_timeout_ms = o.max_lifetime_ms = o.statement_timeout_ms = o.keepalive_ms = 0;
            o.leak_threshold_ms = o.leak_reclaim_ms = o.maintenance_interval_ms = 0;
            o.breaker_failures = o.max_waiters = o.max_retries = 0;
            o.backoff_base_ms = o.validation_window_ms = o.barging_window_us = 0;
            break;
        case 7:
            what = "min_size = max_size, max_connecting 1";
            o.lazy_connect = false;
            o.min_size = o.max_size = 3;
            o.max_connecting = 1;
            break;
        case 8:
            what = "autoscale fields out of range, autoscale off (validated only when on)";
            o.autoscale_low = 2, o.autoscale_high = 0, o.autoscale_step = 0, o.autoscale_interval_ms = 0;
            break;
        }
        dbpool *p = NULL;
        dbpool_error e;
        if (dbpool_open(&p, "mock:", &o, &e) != DBPOOL_OK)
            fail_msg("%s: %s", what, e.message);
        assert_int_equal(dbpool_close(p), 0);
    }
}

/* Each pool_* key of docs/configuration.md's table sets its field, takes
 * the ends of its range and refuses one past each end, naming the key; the
 * keys are removed from what the backend sees, other keys are passed on. */
static void test_every_pool_key_sets_its_field(void **state) {
    (void)state;
    const int64_t md = 4611686018427;
#define F(field) offsetof(dbpool_options, field), sizeof(((dbpool_options *)0)->field)
    static const struct {
        const char *key;
        size_t offset, size;
        int64_t lo, hi;
    } keys[] = {
        {"pool_min", F(min_size), 0, 1000000},
        {"pool_max", F(max_size), 1, 1000000},
        {"pool_acquire_timeout", F(acquire_timeout_ms), 1, md},
        {"pool_connect_timeout", F(connect_timeout_ms), 1, md},
        {"pool_idle_timeout", F(idle_timeout_ms), 0, md},
        {"pool_max_lifetime", F(max_lifetime_ms), 0, md},
        {"pool_validation_timeout", F(validation_timeout_ms), 1, md},
        {"pool_max_retries", F(max_retries), 0, 1000},
        {"pool_backoff_base", F(backoff_base_ms), 0, md},
        {"pool_backoff_max", F(backoff_max_ms), 0, md},
        {"pool_max_waiters", F(max_waiters), 0, 100000000},
        {"pool_validation_window", F(validation_window_ms), 0, md},
        {"pool_statement_timeout", F(statement_timeout_ms), 0, md},
        {"pool_keepalive", F(keepalive_ms), 0, md},
        {"pool_leak_threshold", F(leak_threshold_ms), 0, md},
        {"pool_leak_reclaim", F(leak_reclaim_ms), 0, md},
        {"pool_maintenance_interval", F(maintenance_interval_ms), 0, md},
        {"pool_max_connecting", F(max_connecting), 1, 1000},
        {"pool_breaker_failures", F(breaker_failures), 0, 1000000},
        {"pool_breaker_cooldown", F(breaker_cooldown_ms), 1, md},
        {"pool_barging_window_us", F(barging_window_us), 0, md},
    };
#undef F
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        const int64_t edges[4] = {keys[i].lo, keys[i].hi, keys[i].lo - 1, keys[i].hi + 1};
        for (int k = 0; k < 4; k++) {
            dbpool_options o, before;
            memset(&o, 0x5a, sizeof o); /* every field changed only by its key */
            before = o;
            char url[160];
            snprintf(url, sizeof url, "mock:?a=1&%s=%lld&b=2", keys[i].key, (long long)edges[k]);
            char *driver_url = NULL, *name = NULL;
            dbpool_error e;
            int rc = dbpool__options_apply_url(&o, url, &driver_url, &name, &e);
            if (k >= 2) {
                if (rc != DBPOOL_EINVAL || !strstr(e.message, keys[i].key))
                    fail_msg("%s: rc %d, '%s'", url, rc, rc ? e.message : "");
                assert_null(driver_url);
                continue;
            }
            if (rc != DBPOOL_OK)
                fail_msg("%s: %s", url, e.message);
            int64_t v = keys[i].size == sizeof(int) ? *(int *)(void *)((char *)&o + keys[i].offset)
                                                    : *(int64_t *)(void *)((char *)&o + keys[i].offset);
            if (v != edges[k])
                fail_msg("%s set %s's field to %lld", url, keys[i].key, (long long)v);
            /* Nothing else changed. */
            memcpy((char *)&o + keys[i].offset, (char *)&before + keys[i].offset, keys[i].size);
            if (memcmp(&o, &before, sizeof o) != 0)
                fail_msg("%s changed another field", url);
            assert_string_equal(driver_url, "mock:?a=1&b=2");
            free(driver_url);
            free(name);
        }
    }
    /* The keys that are not numbers. */
    static const struct {
        const char *query;
        bool thread_cache, statement_cache;
        dbpool_validation validation;
    } words[] = {
        {"pool_thread_cache=false&pool_statement_cache=on&pool_validation=NEVER", false, true,
         DBPOOL_VALIDATE_NEVER},
        {"pool_thread_cache=yes&pool_statement_cache=0&pool_validation=Always", true, false,
         DBPOOL_VALIDATE_ALWAYS},
        {"pool_thread_cache=1&pool_statement_cache=no&pool_validation=if_idle", true, false,
         DBPOOL_VALIDATE_IF_IDLE},
        {"pool_thread_cache=off&pool_statement_cache=true&pool_validation=never", false, true,
         DBPOOL_VALIDATE_NEVER},
    };
    for (size_t i = 0; i < sizeof words / sizeof *words; i++) {
        dbpool_options o;
        dbpool_options_init(&o);
        o.thread_cache = !words[i].thread_cache;
        o.statement_cache = !words[i].statement_cache;
        o.validation = (dbpool_validation)7;
        char url[160];
        snprintf(url, sizeof url, "mock:?%s", words[i].query);
        char *driver_url = NULL, *name = NULL;
        dbpool_error e;
        if (dbpool__options_apply_url(&o, url, &driver_url, &name, &e) != DBPOOL_OK)
            fail_msg("%s: %s", url, e.message);
        assert_int_equal(o.thread_cache, words[i].thread_cache);
        assert_int_equal(o.statement_cache, words[i].statement_cache);
        assert_int_equal(o.validation, words[i].validation);
        assert_string_equal(driver_url, "mock:");
        free(driver_url);
        free(name);
    }
}

static void test_strerror_table(void **state) {
    (void)state;
    assert_string_equal(dbpool_strerror(DBPOOL_OK), "success");
    assert_string_equal(dbpool_errname(DBPOOL_ETIMEDOUT), "DBPOOL_ETIMEDOUT");
    assert_string_equal(dbpool_strerror(12345), "unknown error code");
    for (int c = 0; c >= DBPOOL_EVALIDATE; c--) {
        assert_non_null(dbpool_strerror(c));
        assert_string_not_equal(dbpool_strerror(c), "unknown error code");
    }
    assert_string_equal(dbpool_version(), DBPOOL_VERSION_STRING);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_each_violation_named),
        cmocka_unit_test(test_uninitialised_options_named),
        cmocka_unit_test(test_microseconds_bound_in_its_unit),
        cmocka_unit_test(test_leak_reclaim_errors_say_what_is_wrong),
        cmocka_unit_test(test_maintenance_off_names_what_needs_it),
        cmocka_unit_test(test_null_options_are_defaults),
        cmocka_unit_test(test_bad_urls),
        cmocka_unit_test(test_ambiguous_urls_refused_without_quoting),
        cmocka_unit_test(test_pool_keys_override_struct),
        cmocka_unit_test(test_pool_names),
        cmocka_unit_test(test_values_at_the_bounds_open),
        cmocka_unit_test(test_every_pool_key_sets_its_field),
        cmocka_unit_test(test_strerror_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
