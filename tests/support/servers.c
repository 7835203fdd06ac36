/* servers.c — stopping, restarting and killing sessions of the test
 * servers; URLs through a proxy or with a wrong password. See servers.h. */
#include "servers.h"

#include "testsupport.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* ---------------------------------------------------------------------- */
/* URL pieces                                                             */
/* ---------------------------------------------------------------------- */

/* scheme://[user[:password]@]host[:port][/db][?query] split into spans. */
typedef struct url_parts {
    const char *s;
    size_t scheme_end;           /* index of "://" */
    size_t auth_start, auth_end; /* the authority */
    size_t user_start, user_end; /* user (may be empty) */
    size_t pw_start, pw_end;     /* password (pw_start == pw_end: none) */
    bool has_userinfo, has_password;
    size_t host_start; /* after '@', or auth_start */
    size_t port_start; /* after ':' in host part, or 0 */
} url_parts;

static bool split_url(const char *url, url_parts *u) {
    memset(u, 0, sizeof *u);
    u->s = url;
    const char *sep = strstr(url, "://");
    if (!sep)
        return false;
    u->scheme_end = (size_t)(sep - url);
    u->auth_start = u->scheme_end + 3;
    size_t i = u->auth_start;
    while (url[i] && url[i] != '/' && url[i] != '?')
        i++;
    u->auth_end = i;
    size_t at = 0;
    for (size_t k = u->auth_start; k < u->auth_end; k++)
        if (url[k] == '@')
            at = k; /* the last '@' ends the userinfo */
    u->host_start = u->auth_start;
    if (at) {
        u->has_userinfo = true;
        u->user_start = u->auth_start;
        u->user_end = at;
        for (size_t k = u->auth_start; k < at; k++) {
            if (url[k] == ':') {
                u->user_end = k;
                u->has_password = true;
                u->pw_start = k + 1;
                u->pw_end = at;
                break;
            }
        }
        u->host_start = at + 1;
    }
    for (size_t k = u->auth_end; k > u->host_start; k--) {
        if (url[k - 1] == ':') {
            u->port_start = k;
            break;
        }
        if (url[k - 1] == ']')
            break; /* an IPv6 literal without a port */
    }
    return true;
}

static const char *env_url_var(const char *backend, bool admin) {
    if (strcmp(backend, "pg") == 0)
        return admin ? "DBPOOL_TEST_PG_ADMIN_URL" : "DBPOOL_TEST_PG_URL";
    if (strcmp(backend, "mysql") == 0)
        return admin ? "DBPOOL_TEST_MYSQL_ADMIN_URL" : "DBPOOL_TEST_MYSQL_URL";
    return NULL;
}

int dbt_url_port(const char *backend) {
    const char *var = env_url_var(backend, false);
    const char *url = var ? getenv(var) : NULL;
    url_parts u;
    if (!url || !split_url(url, &u) || !u.port_start)
        return 0;
    return atoi(url + u.port_start);
}

static char url_buf[2048];

const char *dbt_url_via_port(const char *backend, int port) {
    const char *url = dbt_backend_url(backend);
    url_parts u;
    if (!split_url(url, &u)) {
        fprintf(stderr, "dbt_url_via_port: the %s URL has no scheme://\n", backend);
        exit(1);
    }
    /* scheme://userinfo@ + 127.0.0.1:port + /db?query */
    snprintf(url_buf, sizeof url_buf, "%.*s127.0.0.1:%d%s", (int)u.host_start, url, port, url + u.auth_end);
    return url_buf;
}

const char *dbt_url_with_password(const char *backend, const char *password) {
    const char *url = dbt_backend_url(backend);
    url_parts u;
    if (!split_url(url, &u) || !u.has_userinfo) {
        fprintf(stderr, "dbt_url_with_password: the %s URL has no user\n", backend);
        exit(1);
    }
    snprintf(url_buf, sizeof url_buf, "%.*s:%s@%s", (int)u.user_end, url, password, url + u.host_start);
    return url_buf;
}

/* The user of a URL (no percent-decoding: the test users are plain). */
static void url_user(const char *url, char *out, size_t len) {
    url_parts u;
    out[0] = '\0';
    if (split_url(url, &u) && u.has_userinfo)
        snprintf(out, len, "%.*s", (int)(u.user_end - u.user_start), url + u.user_start);
}

/* ---------------------------------------------------------------------- */
/* secrets                                                                */
/* ---------------------------------------------------------------------- */

static size_t url_password(const char *var, const char **pw) {
    const char *url = getenv(var);
    url_parts u;
    if (!url || !split_url(url, &u) || !u.has_password || u.pw_end == u.pw_start)
        return 0;
    *pw = url + u.pw_start;
    return u.pw_end - u.pw_start;
}

static const char *const secret_vars[] = {"DBPOOL_TEST_PG_URL", "DBPOOL_TEST_PG_ADMIN_URL",
                                          "DBPOOL_TEST_MYSQL_URL", "DBPOOL_TEST_MYSQL_ADMIN_URL"};

static bool contains_n(const char *hay, const char *needle, size_t n) {
    if (n == 0)
        return false;
    for (const char *h = hay; *h; h++)
        if (strncmp(h, needle, n) == 0)
            return true;
    return false;
}

bool dbt_has_secret(const char *text, const char *extra) {
    if (!text)
        return false;
    for (size_t i = 0; i < sizeof secret_vars / sizeof *secret_vars; i++) {
        const char *pw = NULL;
        size_t n = url_password(secret_vars[i], &pw);
        if (n && contains_n(text, pw, n))
            return true;
    }
    return extra && *extra && strstr(text, extra) != NULL;
}

static void scrub_one(char *text, const char *pw, size_t n) {
    if (n == 0)
        return;
    for (char *h = text; *h;) {
        if (strncmp(h, pw, n) != 0) {
            h++;
            continue;
        }
        if (n >= 3) {
            memmove(h + 3, h + n, strlen(h + n) + 1);
            memcpy(h, "***", 3);
            h += 3;
        } else {
            memset(h, '*', n);
            h += n;
        }
    }
}

void dbt_scrub_secrets(char *text, size_t len, const char *extra) {
    (void)len; /* only ever shrinks the text */
    if (!text)
        return;
    for (size_t i = 0; i < sizeof secret_vars / sizeof *secret_vars; i++) {
        const char *pw = NULL;
        size_t n = url_password(secret_vars[i], &pw);
        scrub_one(text, pw, n);
    }
    if (extra)
        scrub_one(text, extra, strlen(extra));
}

/* ---------------------------------------------------------------------- */
/* stopping and restarting                                                */
/* ---------------------------------------------------------------------- */

static const char *script_for(const char *backend) {
    if (strcmp(backend, "pg") == 0)
        return DBPOOL_SOURCE_DIR "/scripts/pg-server.sh";
    if (strcmp(backend, "mysql") == 0)
        return DBPOOL_SOURCE_DIR "/scripts/mysql-server.sh";
    return NULL;
}

static const char *env_file_for(const char *backend) {
    return strcmp(backend, "pg") == 0 ? "pg.env" : "mysql.env";
}

bool dbt_server_controllable(const char *backend, char *why, size_t why_len) {
    const char *dir = getenv("DBPOOL_SERVER_DIR");
    if (!script_for(backend)) {
        snprintf(why, why_len, "backend %s has no server", backend);
        return false;
    }
    if (!dir || !*dir) {
        snprintf(why, why_len,
                 "DBPOOL_SERVER_DIR is not set (scripts/test.sh sets it to its servers' directory)");
        return false;
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, env_file_for(backend));
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(why, why_len, "%s has no %s: the %s server under test is not one this suite started", dir,
                 env_file_for(backend), backend);
        return false;
    }
    const char *key =
        strcmp(backend, "pg") == 0 ? "export DBPOOL_TEST_PG_PORT=" : "export DBPOOL_TEST_MYSQL_PORT=";
    int port = 0;
    char line[1024];
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, strlen(key)) == 0)
            port = atoi(line + strlen(key));
    fclose(f);
    int want = dbt_url_port(backend);
    if (port == 0 || port != want) {
        snprintf(why, why_len,
                 "the %s server in %s listens on port %d, the URL under test on %d: not ours to stop",
                 backend, dir, port, want);
        return false;
    }
    return true;
}

void dbt_require_server_control(const char *backend) {
    char why[512];
    if (!dbt_server_controllable(backend, why, sizeof why)) {
        fprintf(stderr, "skipped: cannot stop/restart the %s server: %s\n", backend, why);
        exit(DBT_SKIP);
    }
}

static int run_script(const char *backend, const char *verb) {
    const char *script = script_for(backend);
    const char *dir = getenv("DBPOOL_SERVER_DIR");
    if (!script || !dir)
        return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    /* stdout carries the env file (passwords) on some verbs: drop it. */
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    char *argv[] = {(char *)"bash", (char *)script, (char *)verb, (char *)dir, NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, "/bin/bash", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        fprintf(stderr, "could not run %s: %s\n", script, strerror(rc));
        return -1;
    }
    /* Bounded: a script that hangs is killed after 90 s. */
    for (int i = 0; i < 9000; i++) {
        int st;
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
        if (w < 0 && errno != EINTR)
            return -1;
        dbt_sleep_ms(10);
    }
    fprintf(stderr, "%s %s did not finish in 90 s; killing it\n", script, verb);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

/* Servers this process stopped and has not restarted yet: restarted at
 * exit at the latest, so that a failed test does not leave the next one
 * without a server. */
static bool down_pg, down_mysql;

static bool *down_flag(const char *backend) { return strcmp(backend, "pg") == 0 ? &down_pg : &down_mysql; }

static void restart_at_exit(void) {
    dbt_server_ensure_up("pg");
    dbt_server_ensure_up("mysql");
}

int dbt_server_kill(const char *backend) {
    static bool registered;
    if (!registered) {
        registered = true;
        atexit(restart_at_exit);
    }
    if (!script_for(backend))
        return -1;
    *down_flag(backend) = true;
    return run_script(backend, "kill");
}

int dbt_server_restart(const char *backend) {
    if (!script_for(backend))
        return -1;
    int rc = run_script(backend, "restart");
    if (rc == 0)
        *down_flag(backend) = false;
    return rc;
}

int dbt_server_ensure_up(const char *backend) {
    if (!script_for(backend) || !*down_flag(backend))
        return 0;
    fprintf(stderr, "restarting the %s server that this test stopped\n", backend);
    return dbt_server_restart(backend);
}

/* ---------------------------------------------------------------------- */
/* sessions through the admin URL                                         */
/* ---------------------------------------------------------------------- */

static dbpool *open_admin(const char *backend, char *msg, size_t msg_len) {
    const char *var = env_url_var(backend, true);
    const char *url = var ? getenv(var) : NULL;
    if (!url || !*url) {
        snprintf(msg, msg_len, "%s is not set", var ? var : "(admin URL)");
        return NULL;
    }
    dbpool_options o;
    dbpool_options_init(&o);
    o.name = "admin";
    o.min_size = 0;
    o.max_size = 1;
    o.maintenance_interval_ms = 0;
    o.connect_timeout_ms = 5000;
    o.acquire_timeout_ms = 5000;
    o.max_retries = 0;
    o.breaker_failures = 0;
    dbpool *p = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    if (dbpool_open(&p, url, &o, &e) != DBPOOL_OK) {
        snprintf(msg, msg_len, "opening the admin pool: %s", e.message);
        dbt_scrub_secrets(msg, msg_len, NULL);
        return NULL;
    }
    return p;
}

static int count_sessions(dbpool_conn *c, const char *backend, const char *user, char *msg, size_t msg_len) {
    const char *sql =
        strcmp(backend, "pg") == 0
            ? "SELECT COUNT(*) FROM pg_stat_activity WHERE usename = ? AND pid <> pg_backend_pid()"
            : "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = ? AND ID <> "
              "CONNECTION_ID() AND COALESCE(COMMAND, '') <> 'Killed'";
    dbpool_param prm = dbpool_param_text(user);
    dbpool_result *r = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    if (dbpool_query(c, sql, &prm, 1, &r, &e) != DBPOOL_OK || dbpool_result_next(r, &e) != 1) {
        snprintf(msg, msg_len, "counting sessions: %s", e.message);
        dbt_scrub_secrets(msg, msg_len, NULL);
        dbpool_result_free(r);
        return -1;
    }
    int n = (int)dbpool_result_int64(r, 0);
    dbpool_result_free(r);
    return n;
}

int dbt_count_user_sessions(const char *backend, char *msg, size_t msg_len) {
    char user[256];
    url_user(dbt_backend_url(backend), user, sizeof user);
    dbpool *p = open_admin(backend, msg, msg_len);
    if (!p)
        return -1;
    dbpool_conn *c = NULL;
    dbpool_error e;
    int n = -1;
    if (dbpool_acquire(p, 5000, &c, &e) == DBPOOL_OK) {
        n = count_sessions(c, backend, user, msg, msg_len);
        dbpool_release(c);
    } else {
        snprintf(msg, msg_len, "admin acquire: %s", e.message);
        dbt_scrub_secrets(msg, msg_len, NULL);
    }
    dbpool_close(p);
    return n;
}

/* Is the session with this id still listed by the server? -1 on error. */
static int session_listed(dbpool_conn *c, const char *backend, int64_t id) {
    const char *sql = strcmp(backend, "pg") == 0
                          ? "SELECT COUNT(*) FROM pg_stat_activity WHERE pid = ?"
                          : "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ?";
    dbpool_param prm = dbpool_param_int64(id);
    dbpool_result *r = NULL;
    dbpool_error e;
    int n = -1;
    if (dbpool_query(c, sql, &prm, 1, &r, &e) == DBPOOL_OK && dbpool_result_next(r, &e) == 1)
        n = (int)dbpool_result_int64(r, 0);
    dbpool_result_free(r);
    return n;
}

int dbt_kill_user_sessions(const char *backend, char *msg, size_t msg_len) {
    char user[256];
    url_user(dbt_backend_url(backend), user, sizeof user);
    if (!user[0]) {
        snprintf(msg, msg_len, "the %s URL names no user", backend);
        return -1;
    }
    dbpool *p = open_admin(backend, msg, msg_len);
    if (!p)
        return -1;
    dbpool_conn *c = NULL;
    dbpool_error e;
    memset(&e, 0, sizeof e);
    if (dbpool_acquire(p, 5000, &c, &e) != DBPOOL_OK) {
        snprintf(msg, msg_len, "admin acquire: %s", e.message);
        dbt_scrub_secrets(msg, msg_len, NULL);
        dbpool_close(p);
        return -1;
    }
    bool pg = strcmp(backend, "pg") == 0;
    int64_t ids[512];
    int n = 0, killed = -1;
    dbpool_param prm = dbpool_param_text(user);
    dbpool_result *r = NULL;
    if (dbpool_query(
            c,
            pg ? "SELECT pid FROM pg_stat_activity WHERE usename = ? AND pid <> pg_backend_pid()"
               : "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ? AND ID <> CONNECTION_ID()",
            &prm, 1, &r, &e) == DBPOOL_OK) {
        int rc;
        while ((rc = dbpool_result_next(r, &e)) == 1 && n < 512)
            ids[n++] = dbpool_result_int64(r, 0);
        killed = rc < 0 ? -1 : 0;
    }
    dbpool_result_free(r);
    for (int i = 0; killed >= 0 && i < n; i++) {
        dbpool_param id = dbpool_param_int64(ids[i]);
        dbpool_error ke;
        memset(&ke, 0, sizeof ke);
        /* pg: the second argument waits (up to 5 s) until the backend is gone. */
        int rc =
            dbpool_exec(c, pg ? "SELECT pg_terminate_backend(CAST(? AS INTEGER), 5000)" : "KILL CONNECTION ?",
                        &id, 1, NULL, &ke);
        /* MariaDB 1094 "Unknown thread id": it went away by itself meanwhile. */
        if (rc == DBPOOL_OK || ke.native_code == 1094) {
            killed++;
        } else {
            e = ke;
            killed = -1;
        }
    }
    if (killed < 0) {
        snprintf(msg, msg_len, "killing sessions: %s", e.message);
        dbt_scrub_secrets(msg, msg_len, NULL);
    }
    /* Wait (up to 5 s) until the server no longer lists the killed ones;
     * new sessions the pool under test opens meanwhile do not count. */
    for (int i = 0; killed > 0 && i < n; i++) {
        int listed = 1;
        for (int k = 0; k < 500 && (listed = session_listed(c, backend, ids[i])) > 0; k++)
            dbt_sleep_ms(10);
        if (listed != 0) {
            snprintf(msg, msg_len, "session %lld still listed 5 s after it was killed", (long long)ids[i]);
            killed = -1;
        }
    }
    dbpool_release(c);
    dbpool_close(p);
    return killed;
}
