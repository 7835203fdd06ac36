/*
 * test_fault_wrong_password.c — a URL whose password is wrong (the test
 * URL with only the password replaced): DBPOOL_EAUTH quickly (< 2 s even
 * with max_retries 3: an authentication failure is not retried), from
 * dbpool_open and from dbpool_acquire on a lazy pool; and no secret — the
 * real password or the wrong one — in the error message, in any log line
 * (a log callback collects every line at DEBUG level) or in the stats
 * JSON / Prometheus text. PostgreSQL and MariaDB.
 */
#include "backend_common.h"
#include "servers.h"

#include <pthread.h>

#define WRONG_PASSWORD "Wr0ngPassw0rdForFaultTest"
#define LIMIT_MS 2000

typedef struct log_lines {
    pthread_mutex_t lock;
    int n;
    int with_secret;
    char first_bad[700];
    char last[700];
} log_lines;

static void collect(void *user, dbpool_log_level level, const char *message) {
    (void)level;
    log_lines *l = user;
    pthread_mutex_lock(&l->lock);
    l->n++;
    if (dbt_has_secret(message, WRONG_PASSWORD)) {
        if (!l->with_secret++) {
            snprintf(l->first_bad, sizeof l->first_bad, "%s", message);
            dbt_scrub_secrets(l->first_bad, sizeof l->first_bad, WRONG_PASSWORD);
        }
    }
    snprintf(l->last, sizeof l->last, "%s", message);
    dbt_scrub_secrets(l->last, sizeof l->last, WRONG_PASSWORD);
    pthread_mutex_unlock(&l->lock);
}

static void options(dbpool_options *o, log_lines *l) {
    dbt_options(o, 0, 3);
    o->max_retries = 3;
    o->connect_timeout_ms = 2000;
    o->acquire_timeout_ms = 5000;
    o->log_fn = collect;
    o->log_user = l;
    o->log_level = DBPOOL_LOG_DEBUG;
}

static void check_message(const char *where, int rc, int64_t took, const dbpool_error *e) {
    bool secret = dbt_has_secret(e->message, WRONG_PASSWORD);
    char msg[600];
    snprintf(msg, sizeof msg, "%s", e->message);
    dbt_scrub_secrets(msg, sizeof msg, WRONG_PASSWORD);
    print_message("[%s] %s with a wrong password: %s after %lld ms: %s\n", bt_backend, where,
                  dbpool_errname(rc), (long long)took, msg);
    BT_CHECK(rc == DBPOOL_EAUTH, "%s: expected DBPOOL_EAUTH, got %s: %s", where, dbpool_errname(rc), msg);
    BT_CHECK(took < LIMIT_MS, "%s: took %lld ms (limit %d) with max_retries 3", where, (long long)took,
             LIMIT_MS);
    BT_CHECK(!secret, "%s: the error message contains a password: %s", where, msg);
    BT_CHECK(msg[0] != '\0', "%s: empty message", where);
    /* Said once: libpq tries twice under sslmode=prefer (TLS, then none)
     * and reported the same failure twice, word for word. */
    const char *first = strstr(msg, "password authentication failed");
    BT_CHECK(!first || !strstr(first + 1, "password authentication failed"),
             "%s: the message says the same thing twice: %s", where, msg);
}

static void check_logs(log_lines *l, const char *where) {
    pthread_mutex_lock(&l->lock);
    int n = l->n, bad = l->with_secret;
    char first[700], last[700];
    snprintf(first, sizeof first, "%s", l->first_bad);
    snprintf(last, sizeof last, "%s", l->last);
    pthread_mutex_unlock(&l->lock);
    print_message("[%s] %s: %d log lines, e.g. %s\n", bt_backend, where, n, last);
    BT_CHECK(bad == 0, "%s: %d of %d log lines contain a password; first: %s", where, bad, n, first);
}

static void test_open_with_wrong_password(void **state) {
    (void)state;
    log_lines l;
    memset(&l, 0, sizeof l);
    pthread_mutex_init(&l.lock, NULL);
    dbpool_options o;
    options(&o, &l);
    dbpool *p = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    int64_t t0 = dbt_now_ms();
    int rc = dbpool_open(&p, dbt_url_with_password(bt_backend, WRONG_PASSWORD), &o, &e);
    int64_t took = dbt_now_ms() - t0;
    BT_CHECK(p == NULL, "a pool was opened with a wrong password");
    check_message("dbpool_open", rc, took, &e);
    check_logs(&l, "dbpool_open");
    pthread_mutex_destroy(&l.lock);
}

static void test_acquire_with_wrong_password(void **state) {
    (void)state;
    log_lines l;
    memset(&l, 0, sizeof l);
    pthread_mutex_init(&l.lock, NULL);
    dbpool_options o;
    options(&o, &l);
    o.lazy_connect = true;
    dbpool *p = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    BT_OK(dbpool_open(&p, dbt_url_with_password(bt_backend, WRONG_PASSWORD), &o, &e), &e, "lazy open");
    for (int i = 0; i < 3; i++) {
        dbpool_conn *c = NULL;
        memset(&e, 0, sizeof e);
        int64_t t0 = dbt_now_ms();
        int rc = dbpool_acquire(p, -1, &c, &e);
        int64_t took = dbt_now_ms() - t0;
        if (rc == DBPOOL_OK)
            dbpool_release(c);
        /* After a few failures the breaker may answer for the database: the
         * cause must still be the authentication failure. */
        check_message("dbpool_acquire", rc, took, &e);
    }
    dbpool_stats s = bt_stats(p);
    print_message("[%s] connect attempts made: %llu (breaker %s)\n", bt_backend,
                  (unsigned long long)s.connect_errors, dbpool_breaker_state_name(s.breaker));
    char buf[16384];
    int n = dbpool_stats_json(p, buf, sizeof buf);
    BT_CHECK(n > 0 && !dbt_has_secret(buf, WRONG_PASSWORD), "the stats JSON contains a password");
    n = dbpool_stats_prometheus(p, buf, sizeof buf);
    BT_CHECK(n > 0 && !dbt_has_secret(buf, WRONG_PASSWORD), "the Prometheus text contains a password");
    dbpool_health h;
    memset(&e, 0, sizeof e);
    int rc = dbpool_check_health(p, &h, &e);
    BT_CHECK(rc != DBPOOL_OK && !dbt_has_secret(h.error.message, WRONG_PASSWORD) &&
                 !dbt_has_secret(e.message, WRONG_PASSWORD),
             "the health check error contains a password");
    assert_int_equal(dbpool_close(p), 0);
    check_logs(&l, "dbpool_acquire");
    pthread_mutex_destroy(&l.lock);
}

int main(int argc, char **argv) {
    bt_init(argc, argv);
    if (bt_is("sqlite")) {
        fprintf(stderr, "skipped: SQLite has no passwords\n");
        return DBT_SKIP;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_with_wrong_password),
        cmocka_unit_test(test_acquire_with_wrong_password),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
