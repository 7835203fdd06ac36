/* driver_mock.c — a backend without a database, for fault injection in
 * tests. See driver_mock.h. */
#include "driver_mock.h"

#include "driver.h"
#include "internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct mock_conn {
    int id;
    long attempt; /* the connect attempt that made it (counters.connects when it began) */
    bool dead;
    bool in_tx;
} mock_conn;

typedef struct fail_rule {
    long nth, count;
    int code;
} fail_rule;

static pthread_mutex_t mock_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    dbpool__mock_counters n;
    fail_rule connect_rule, ping_rule, reset_rule;
    int64_t connect_delay_ms, ping_delay_ms;
    bool reset_clears_session;
    bool connect_at_limit;
    int next_id;
} mock;

void dbpool__mock_reset(void) {
    pthread_mutex_lock(&mock_lock);
    memset(&mock, 0, sizeof mock);
    pthread_mutex_unlock(&mock_lock);
}

static void set_rule(fail_rule *r, long nth, long count, int code) {
    pthread_mutex_lock(&mock_lock);
    r->nth = nth;
    r->count = count;
    r->code = code;
    pthread_mutex_unlock(&mock_lock);
}

void dbpool__mock_fail_connect(long nth, long count, int code) {
    set_rule(&mock.connect_rule, nth, count, code);
}
void dbpool__mock_fail_ping(long nth, long count) { set_rule(&mock.ping_rule, nth, count, DBPOOL_EBROKEN); }
void dbpool__mock_fail_reset(long nth, long count) { set_rule(&mock.reset_rule, nth, count, DBPOOL_EBROKEN); }

void dbpool__mock_set_connect_at_limit(bool on) {
    pthread_mutex_lock(&mock_lock);
    mock.connect_at_limit = on;
    pthread_mutex_unlock(&mock_lock);
}

void dbpool__mock_set_connect_delay_ms(int64_t ms) {
    pthread_mutex_lock(&mock_lock);
    mock.connect_delay_ms = ms;
    pthread_mutex_unlock(&mock_lock);
}
void dbpool__mock_set_ping_delay_ms(int64_t ms) {
    pthread_mutex_lock(&mock_lock);
    mock.ping_delay_ms = ms;
    pthread_mutex_unlock(&mock_lock);
}

void dbpool__mock_set_reset_clears_session(bool on) {
    pthread_mutex_lock(&mock_lock);
    mock.reset_clears_session = on;
    pthread_mutex_unlock(&mock_lock);
}

void dbpool__mock_kill(void *native) {
    pthread_mutex_lock(&mock_lock);
    ((mock_conn *)native)->dead = true;
    pthread_mutex_unlock(&mock_lock);
}

static bool is_dead(mock_conn *c) {
    pthread_mutex_lock(&mock_lock);
    bool d = c->dead;
    pthread_mutex_unlock(&mock_lock);
    return d;
}

bool dbpool__mock_in_transaction(void *native) { return ((mock_conn *)native)->in_tx; }
int dbpool__mock_conn_id(void *native) { return ((mock_conn *)native)->id; }
long dbpool__mock_conn_attempt(void *native) { return ((mock_conn *)native)->attempt; }

void dbpool__mock_get_counters(dbpool__mock_counters *out) {
    pthread_mutex_lock(&mock_lock);
    *out = mock.n;
    pthread_mutex_unlock(&mock_lock);
}

/* Under mock_lock: does attempt number `k` fail by rule r? */
static bool rule_hits(const fail_rule *r, long k) {
    if (r->nth <= 0)
        return false;
    return k >= r->nth && (r->count < 0 || k < r->nth + r->count);
}

static bool mock_at_connection_limit(const dbpool_error *e) { return e && strcmp(e->sqlstate, "53300") == 0; }

static const char *const mock_schemes[] = {"mock", NULL};

static int mock_configure(const char *url, void **cfg, dbpool_error *e) {
    (void)url;
    *cfg = malloc(1); /* no settings: the controls are process-wide */
    return *cfg ? DBPOOL_OK : dbpool__seterr(e, DBPOOL_ENOMEM, "mock: out of memory for the configuration");
}
static void mock_free_config(void *cfg) { free(cfg); }

static int mock_connect(const void *cfg, const dbpool_connect_settings *s, int64_t deadline, void **native,
                        dbpool_error *e) {
    (void)cfg;
    (void)s;
    pthread_mutex_lock(&mock_lock);
    long k = ++mock.n.connects;
    bool fail = rule_hits(&mock.connect_rule, k);
    int code = mock.connect_rule.code ? mock.connect_rule.code : DBPOOL_ECONNECT;
    int64_t delay = mock.connect_delay_ms;
    bool at_limit = mock.connect_at_limit;
    pthread_mutex_unlock(&mock_lock);
    if (delay > 0) {
        dbpool__sleep_ms(delay, deadline);
        if (dbpool__now_ns() >= deadline) {
            pthread_mutex_lock(&mock_lock);
            mock.n.connect_failures++;
            pthread_mutex_unlock(&mock_lock);
            return dbpool__seterr(e, DBPOOL_ETIMEDOUT, "mock connect timed out (attempt %ld)", k);
        }
    }
    if (fail) {
        pthread_mutex_lock(&mock_lock);
        mock.n.connect_failures++;
        pthread_mutex_unlock(&mock_lock);
        if (at_limit) {
            dbpool__seterr(e, code, "mock connect failure injected: too many clients already (attempt %ld)",
                           k);
            memcpy(e->sqlstate, "53300", 6);
            return code;
        }
        return dbpool__seterr(e, code, "mock connect failure injected (attempt %ld)", k);
    }
    mock_conn *c = calloc(1, sizeof *c);
    if (!c)
        return dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory");
    pthread_mutex_lock(&mock_lock);
    c->id = ++mock.next_id;
    c->attempt = k;
    mock.n.live++;
    pthread_mutex_unlock(&mock_lock);
    *native = c;
    return DBPOOL_OK;
}

static void mock_disconnect(void *native) {
    pthread_mutex_lock(&mock_lock);
    mock.n.disconnects++;
    mock.n.live--;
    pthread_mutex_unlock(&mock_lock);
    free(native);
}

static int mock_ping(void *native, int64_t deadline, dbpool_error *e) {
    pthread_mutex_lock(&mock_lock);
    long k = ++mock.n.pings;
    bool fail = rule_hits(&mock.ping_rule, k);
    int64_t delay = mock.ping_delay_ms;
    pthread_mutex_unlock(&mock_lock);
    if (delay > 0) {
        dbpool__sleep_ms(delay, deadline);
        if (dbpool__now_ns() >= deadline)
            return dbpool__seterr(e, DBPOOL_ETIMEDOUT, "mock ping timed out");
    }
    if (fail || is_dead(native))
        return dbpool__seterr(e, DBPOOL_EBROKEN, "mock ping failed (connection %d)",
                              ((mock_conn *)native)->id);
    return DBPOOL_OK;
}

static int mock_needs_reset(void *native) {
    mock_conn *c = native;
    pthread_mutex_lock(&mock_lock);
    mock.n.reset_checks++;
    bool dead = c->dead;
    pthread_mutex_unlock(&mock_lock);
    if (dead)
        return -1;
    return c->in_tx ? 1 : 0;
}

static int mock_reset(void *native, int64_t deadline, bool *session_cleared, dbpool_error *e) {
    (void)deadline;
    *session_cleared = false;
    mock_conn *c = native;
    pthread_mutex_lock(&mock_lock);
    long k = ++mock.n.resets;
    bool fail = rule_hits(&mock.reset_rule, k) || c->dead;
    bool clears = mock.reset_clears_session;
    pthread_mutex_unlock(&mock_lock);
    if (fail)
        return dbpool__seterr(e, DBPOOL_EBROKEN, "mock reset failed");
    c->in_tx = false;
    *session_cleared = clears;
    return DBPOOL_OK;
}

static int mock_exec_bounded(void *native, const char *sql, int64_t deadline, dbpool_error *e);

/* With a deadline (the pool's statement_timeout_ms), a SLEEP ends at it as
 * init_sql's does: DBPOOL_ETIMEDOUT, the connection broken. */
static int mock_exec(void *native, const char *sql, const dbpool_param *p, size_t n, int64_t *affected,
                     int64_t deadline_ns, dbpool_error *e) {
    (void)p;
    (void)n;
    mock_conn *c = native;
    if (affected)
        *affected = 0;
    if (deadline_ns && strncasecmp(sql, "SLEEP ", 6) == 0)
        return mock_exec_bounded(native, sql, deadline_ns, e);
    if (is_dead(c))
        return dbpool__seterr(e, DBPOOL_EBROKEN, "mock connection %d is closed", c->id);
    if (strcasecmp(sql, "BEGIN") == 0)
        c->in_tx = true;
    else if (strcasecmp(sql, "COMMIT") == 0 || strcasecmp(sql, "ROLLBACK") == 0)
        c->in_tx = false;
    else if (strcasecmp(sql, "FAIL") == 0)
        return dbpool__seterr(e, DBPOOL_EQUERY, "mock query failure");
    else if (strncasecmp(sql, "BREAK", 5) == 0 && (sql[5] == '\0' || sql[5] == ' ')) {
        dbpool__mock_kill(c);
        return dbpool__seterr(e, DBPOOL_EBROKEN, "%s", sql[5] ? sql + 6 : "mock connection lost");
    } else if (strncasecmp(sql, "SLEEP ", 6) == 0)
        dbpool__sleep_ms(atoll(sql + 6), INT64_MAX);
    return DBPOOL_OK;
}

/* init_sql's run: as exec, but a SLEEP ends at the deadline, failing with
 * DBPOOL_ETIMEDOUT and leaving the connection broken, as a real backend's
 * would be with its statement still running. */
static int mock_exec_bounded(void *native, const char *sql, int64_t deadline, dbpool_error *e) {
    mock_conn *c = native;
    if (strncasecmp(sql, "SLEEP ", 6) != 0 || is_dead(c))
        return mock_exec(native, sql, NULL, 0, NULL, 0, e);
    int64_t ms = atoll(sql + 6);
    int64_t until = dbpool__deadline_after_ms(ms);
    dbpool__sleep_ms(ms, deadline);
    if (until > deadline && dbpool__now_ns() >= deadline) {
        dbpool__mock_kill(c);
        return dbpool__seterr(e, DBPOOL_ETIMEDOUT, "mock statement timed out (connection %d)", c->id);
    }
    return DBPOOL_OK;
}

static int mock_query(void *native, const char *sql, const dbpool_param *p, size_t n, dbpool_result **out,
                      int64_t deadline_ns, dbpool_error *e) {
    int rc = mock_exec(native, sql, p, n, NULL, deadline_ns, e);
    if (rc != DBPOOL_OK)
        return rc;
    dbpool_rowset *rs = dbpool__rowset_new(1);
    char id[16];
    int len = snprintf(id, sizeof id, "%d", ((mock_conn *)native)->id);
    if (!rs || dbpool__rowset_set_column(rs, 0, "conn_id") != DBPOOL_OK ||
        dbpool__rowset_add_row(rs) != DBPOOL_OK ||
        dbpool__rowset_set_cell(rs, 0, id, (size_t)len) != DBPOOL_OK) {
        dbpool__rowset_free(rs);
        return dbpool__seterr(e, DBPOOL_ENOMEM, "out of memory");
    }
    *out = dbpool__rowset_result(rs);
    return DBPOOL_OK;
}

/* The mock's statement limit, as a server's: a text that names
 * "statement_limit" (SET statement_limit = 0, ...). exec runs it as any
 * other statement: it only tells the core to stand its backstop aside. */
static bool mock_names_statement_limit(const char *sql) {
    return dbpool__mentions_ci(sql, "statement_limit");
}

static bool mock_is_broken(void *native, const dbpool_error *e) {
    return is_dead(native) || (e && e->code == DBPOOL_EBROKEN);
}

static void mock_server_version(void *native, char *buf, size_t len) {
    (void)native;
    dbpool__strlcpy(buf, "mock-1", len);
}

const dbpool_driver dbpool__driver_mock = {
    .name = "mock",
    .schemes = mock_schemes,
    .configure = mock_configure,
    .free_config = mock_free_config,
    .secrets = NULL,
    .connect = mock_connect,
    .disconnect = mock_disconnect,
    .ping = mock_ping,
    .needs_reset = mock_needs_reset,
    .reset = mock_reset,
    .exec = mock_exec,
    .exec_bounded = mock_exec_bounded,
    .query = mock_query,
    .is_broken = mock_is_broken,
    .server_version = mock_server_version,
    .names_statement_limit = mock_names_statement_limit,
    .at_connection_limit = mock_at_connection_limit,
};
