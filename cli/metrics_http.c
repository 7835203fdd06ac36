/*
 * metrics_http.c — `dbpool bench --metrics-listen HOST:PORT`: GET /metrics
 * answered with dbpool_stats_prometheus, served by libmicrohttpd on a
 * thread of its own. Loopback addresses only: the metrics describe a
 * database's load, and a benchmark is no place to open a port to the
 * network. Without libmicrohttpd at build time the option says so.
 */
#include "cli.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#ifdef DBPOOL_HAVE_MICROHTTPD
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <time.h>
#endif

bool cli_metrics_parse_listen(const char *cmd, const char *spec, cli_listen_addr *out) {
    memset(out, 0, sizeof *out);
    /* An IPv6 address has colons of its own: its port follows the ']'. */
    const char *colon = strrchr(spec, ':');
    if (spec[0] == '[') {
        const char *close = strchr(spec, ']');
        if (!close)
            return cli_usage_error(cmd,
                                   "--metrics-listen '%s': the '[' is not closed: write the IPv6 "
                                   "address in brackets, then the port: [::1]:9187",
                                   cli_shown(spec)),
                   false;
        colon = close[1] == ':' || close[1] == '\0' ? close + 1 : NULL;
    }
    if (!colon || colon == spec)
        return cli_usage_error(cmd,
                               "--metrics-listen '%s' is not HOST:PORT: use e.g. "
                               "--metrics-listen 127.0.0.1:9187",
                               cli_shown(spec)),
               false;
    if (colon[0] == '\0' || colon[1] == '\0')
        return cli_usage_error(cmd,
                               "--metrics-listen '%s': the port is missing: use e.g. "
                               "--metrics-listen %.*s:9187 (0 picks a free port)",
                               cli_shown(spec), cli_showable(spec) ? (int)(colon - spec) : 4,
                               cli_showable(spec) ? spec : "HOST"),
               false;
    char host[64];
    size_t hl = (size_t)(colon - spec);
    if (hl >= sizeof host)
        return cli_usage_error(cmd, "--metrics-listen: the host part is too long: use 127.0.0.1 or [::1]"),
               false;
    memcpy(host, spec, hl);
    host[hl] = '\0';
    int port;
    if (!cli_parse_int(colon + 1, 0, 65535, &port))
        return cli_usage_error(cmd,
                               "--metrics-listen: port '%s' is not a number from 0 to 65535: "
                               "use e.g. --metrics-listen 127.0.0.1:9187",
                               cli_showable(spec) ? colon + 1 : CLI_NOT_SHOWN),
               false;
    out->port = port;

    const char *bare = host;
    char v6[64];
    if (host[0] == '[') {
        size_t n = strlen(host); /* ends with the ']' found above */
        if (n < 3)
            return cli_usage_error(cmd, "--metrics-listen: '%s' is not a bracketed IPv6 address: use [::1]",
                                   cli_showable(spec) ? host : CLI_NOT_SHOWN),
                   false;
        memcpy(v6, host + 1, n - 2);
        v6[n - 2] = '\0';
        bare = v6;
    }
    struct in_addr a4;
    struct in6_addr a6;
    if (strcasecmp(host, "localhost") == 0) { /* host names ignore case */
        inet_pton(AF_INET, "127.0.0.1", &a4);
        goto v4;
    }
    if (bare == host && inet_pton(AF_INET, host, &a4) == 1) {
        if ((ntohl(a4.s_addr) >> 24) != 127)
            goto not_loopback;
        goto v4;
    }
    if (bare != host && inet_pton(AF_INET6, bare, &a6) == 1) {
        if (!IN6_IS_ADDR_LOOPBACK(&a6))
            goto not_loopback;
        out->ipv6 = true;
        out->sa.v6.sin6_family = AF_INET6;
        out->sa.v6.sin6_addr = a6;
        out->sa.v6.sin6_port = htons((uint16_t)port);
        snprintf(out->host, sizeof out->host, "[::1]");
        return true;
    }
    if (bare == host && inet_pton(AF_INET6, host, &a6) == 1)
        return cli_usage_error(cmd, "--metrics-listen: write an IPv6 address in brackets: [::1]:%d", port),
               false;
    /* No name lookup: what a name resolves to can change under us. */
    return cli_usage_error(cmd,
                           "--metrics-listen: '%s' is not an IP address: use 127.0.0.1, [::1] "
                           "or localhost",
                           cli_showable(spec) ? host : CLI_NOT_SHOWN),
           false;

not_loopback:
    return cli_usage_error(cmd,
                           "--metrics-listen: %s is not a loopback address, and the metrics are "
                           "served on loopback only (127.0.0.0/8 or [::1]): use e.g. 127.0.0.1:%d "
                           "and let a local agent or an SSH tunnel reach it",
                           host, port),
           false;
v4:
    out->sa.v4.sin_family = AF_INET;
    out->sa.v4.sin_addr = a4;
    out->sa.v4.sin_port = htons((uint16_t)port);
    inet_ntop(AF_INET, &a4, out->host, sizeof out->host);
    return true;
}

#ifdef DBPOOL_HAVE_MICROHTTPD

#if MHD_VERSION < 0x00097002
typedef int MHD_RESULT_T; /* before 0.9.71 handlers returned int */
#else
typedef enum MHD_Result MHD_RESULT_T;
#endif

/*
 * Any local process can connect, and a client that sends its request a
 * line at a time holds a connection for as long as it keeps sending:
 * libmicrohttpd 0.9.75 times out idle connections only, and has no bound
 * on the time to receive a request's headers. So connections are
 * plentiful and the idle timeout is short: a scraper sends its request at
 * once and is answered within milliseconds, and a silent connection is
 * gone after 3 s. (A Prometheus keep-alive connection is closed between
 * scrapes; the next scrape opens another.) And no connection lives longer
 * than MAX_AGE_S, however it trickles: CONNECTION_LIMIT clients sending a
 * byte a second held every place for the whole run, and no scrape was
 * answered. The server then runs on a thread of this file's, which cuts
 * such connections (shutdown) between its rounds of MHD_run_wait.
 */
#define CONNECTION_LIMIT 64
#define IDLE_TIMEOUT_S 3
#define MAX_AGE_S 8
/* How long one round waits for activity: the bound on noticing the stop,
 * and on cutting a connection past its age. */
#define ROUND_MS 100

#if MHD_VERSION >= 0x00097206 /* MHD_run_wait */
#define OWN_LOOP 1
#endif

typedef struct conn_slot {
    int fd; /* -1: free */
    int64_t started_ns;
    bool cut;
} conn_slot;

struct cli_metrics_server {
    struct MHD_Daemon *d;
    dbpool *pool;
#ifdef OWN_LOOP
    pthread_t thread;
    atomic_bool stop;
    /* Written by the serving thread only (the callbacks run on it), and by
     * MHD_stop_daemon once that thread is joined. */
    conn_slot conns[CONNECTION_LIMIT];
#endif
};

#ifdef OWN_LOOP
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
    cli_metrics_server *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        conn_slot *slot = *socket_context;
        if (slot)
            slot->fd = -1; /* called before the socket is closed */
        *socket_context = NULL;
        return;
    }
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!info)
        return;
    for (int i = 0; i < CONNECTION_LIMIT; i++) {
        if (s->conns[i].fd < 0) {
            s->conns[i] = (conn_slot){.fd = info->connect_fd, .started_ns = cli_now_ns(), .cut = false};
            *socket_context = &s->conns[i];
            return;
        }
    }
}

static void *serve(void *arg) {
    cli_metrics_server *s = arg;
    while (!atomic_load(&s->stop)) {
        if (MHD_run_wait(s->d, ROUND_MS) != MHD_YES) {
            struct timespec ts = {0, ROUND_MS * 1000000L};
            nanosleep(&ts, NULL);
        }
        int64_t now = cli_now_ns();
        for (int i = 0; i < CONNECTION_LIMIT; i++) {
            conn_slot *c = &s->conns[i];
            if (c->fd >= 0 && !c->cut && now - c->started_ns > MAX_AGE_S * 1000000000LL) {
                /* libmicrohttpd sees the end of the stream and closes it. */
                shutdown(c->fd, SHUT_RDWR);
                c->cut = true;
            }
        }
    }
    return NULL;
}
#endif

bool cli_metrics_available(void) { return true; }

static MHD_RESULT_T reply(struct MHD_Connection *conn, unsigned status, const char *ctype, char *body,
                          size_t len, enum MHD_ResponseMemoryMode mode) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
    if (!r) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    MHD_RESULT_T rc = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return rc;
}

static MHD_RESULT_T on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                               const char *version, const char *upload_data, size_t *upload_data_size,
                               void **req_cls) {
    (void)version;
    (void)upload_data;
    cli_metrics_server *s = cls;
    /* The first call only announces the request; a body (there should be
     * none) arrives in later calls and is ignored. */
    if (*req_cls == NULL) {
        *req_cls = s;
        return MHD_YES;
    }
    if (*upload_data_size != 0) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    static const char text[] = "text/plain; charset=utf-8";
    if (strcmp(url, "/metrics") != 0) {
        static char msg[] = "not found: the metrics are at /metrics\n";
        return reply(conn, MHD_HTTP_NOT_FOUND, text, msg, sizeof msg - 1, MHD_RESPMEM_PERSISTENT);
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        static char msg[] = "method not allowed: use GET\n";
        return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, text, msg, sizeof msg - 1, MHD_RESPMEM_PERSISTENT);
    }
    /* Size, then render; the text can grow between the two calls (a new
     * close reason shows up), so retry with the larger size. */
    size_t cap = 16384;
    for (int attempt = 0; attempt < 4; attempt++) {
        char *buf = malloc(cap);
        if (!buf)
            break;
        int n = dbpool_stats_prometheus(s->pool, buf, cap);
        if (n < 0) {
            free(buf);
            break;
        }
        if ((size_t)n < cap)
            return reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", buf, (size_t)n,
                         MHD_RESPMEM_MUST_FREE);
        free(buf);
        cap = (size_t)n + 4096;
    }
    static char msg[] = "cannot render the metrics\n";
    return reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, text, msg, sizeof msg - 1, MHD_RESPMEM_PERSISTENT);
}

bool cli_metrics_start(cli_metrics_server **out, dbpool *p, cli_listen_addr *a, char *why, size_t whycap) {
    *out = NULL;
    cli_metrics_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(why, whycap, "out of memory");
        return false;
    }
    s->pool = p;
#ifdef OWN_LOOP
    for (int i = 0; i < CONNECTION_LIMIT; i++)
        s->conns[i].fd = -1;
    atomic_init(&s->stop, false);
    unsigned flags = MHD_USE_AUTO; /* epoll on Linux; run by serve() */
#else
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO;
#endif
    if (a->ipv6)
        flags |= MHD_USE_IPv6;
    errno = 0;
    s->d =
        MHD_start_daemon(flags, (uint16_t)a->port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR,
                         (const struct sockaddr *)&a->sa, MHD_OPTION_CONNECTION_LIMIT,
                         (unsigned)CONNECTION_LIMIT, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)IDLE_TIMEOUT_S,
#ifdef OWN_LOOP
                         MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
#endif
                         MHD_OPTION_END);
    if (!s->d) {
        int err = errno;
        snprintf(why, whycap, "cannot listen on %s:%d%s%s", a->host, a->port, err ? ": " : "",
                 err ? strerror(err) : "");
        free(s);
        return false;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    if (info && info->port)
        a->port = info->port;
#ifdef OWN_LOOP
    int err = pthread_create(&s->thread, NULL, serve, s);
    if (err != 0) {
        MHD_stop_daemon(s->d);
        free(s);
        snprintf(why, whycap, "cannot start the thread that serves %s:%d: %s", a->host, a->port,
                 strerror(err));
        return false;
    }
#endif
    *out = s;
    return true;
}

void cli_metrics_stop(cli_metrics_server *s) {
    if (!s)
        return;
#ifdef OWN_LOOP
    atomic_store(&s->stop, true);
    pthread_join(s->thread, NULL);
#endif
    MHD_stop_daemon(s->d);
    free(s);
}

#else /* !DBPOOL_HAVE_MICROHTTPD */

struct cli_metrics_server {
    int unused;
};

bool cli_metrics_available(void) { return false; }

bool cli_metrics_start(cli_metrics_server **out, dbpool *p, cli_listen_addr *a, char *why, size_t whycap) {
    (void)p;
    (void)a;
    *out = NULL;
    snprintf(why, whycap, "this dbpool was built without libmicrohttpd");
    return false;
}

void cli_metrics_stop(cli_metrics_server *s) { (void)s; }

#endif
