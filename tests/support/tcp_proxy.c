/* tcp_proxy.c — a small threaded TCP proxy for fault-injection tests. See
 * tcp_proxy.h. One acceptor thread, one thread per forwarded connection;
 * every blocking call is a poll with a 20 ms timeout, so a mode change or a
 * stop is seen quickly. */
#include "tcp_proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define POLL_MS 20
#define BUF_SIZE 16384
#define MAX_PARKED 256

typedef struct session {
    struct session *next;
    dbt_proxy *px;
    pthread_t thread;
    int client_fd;
    int64_t delay_ms;   /* wait before connecting upstream (DELAY at accept time) */
    bool greet_only;    /* GREET at accept time: the server's first read only */
    bool greeted;       /* ... and it has been forwarded */
    bool no_tls;        /* NOTLS at accept time: take the TLS offer away */
    uint32_t no_caps;   /* ... and these MySQL capability bits too */
    int64_t trickle_ms; /* TRICKLE at accept time: the server's bytes this late, or 0 */
    bool opened;        /* ... the first message either way has been seen */
    atomic_bool done;
    char buf[BUF_SIZE];
} session;

struct dbt_proxy {
    int listen_fd;
    int port;
    struct sockaddr_in target;
    bool have_target;
    pthread_t acceptor;
    atomic_int mode;
    atomic_llong delay_ms;
    atomic_bool stop;
    atomic_long accepted;
    atomic_long active;
    _Atomic uint32_t notls_clear;
    /* Owned by the acceptor thread while it runs, then by destroy. */
    session *sessions;
    int n_sessions;
    int parked[MAX_PARKED];
    int n_parked;
    /* What clients sent (dbt_proxy_record), under rec_lock. */
    pthread_mutex_t rec_lock;
    unsigned char *rec;
    size_t rec_cap, rec_len;
};

const char *dbt_proxy_mode_name(dbt_proxy_mode mode) {
    switch (mode) {
    case DBT_PROXY_PASS:
        return "pass";
    case DBT_PROXY_DELAY:
        return "delay";
    case DBT_PROXY_REFUSE:
        return "refuse";
    case DBT_PROXY_RESET:
        return "reset";
    case DBT_PROXY_SILENT:
        return "silent";
    case DBT_PROXY_DEAF:
        return "deaf";
    case DBT_PROXY_GREET:
        return "greet";
    case DBT_PROXY_NOTLS:
        return "notls";
    case DBT_PROXY_TRICKLE:
        return "trickle";
    }
    return "?";
}

static void sleep_ms(int64_t ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void set_nonblocking(int fd) {
    int fl = fcntl(fd, F_GETFL, 0);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* Close so that the peer gets a RST rather than a FIN. */
static void close_reset(int fd) {
    if (fd < 0)
        return;
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

static dbt_proxy_mode mode_of(const dbt_proxy *px) {
    return (dbt_proxy_mode)atomic_load(&((dbt_proxy *)px)->mode);
}

/* Connect upstream (blocking connect on loopback is immediate: a listener
 * answers or the kernel refuses). */
static int connect_upstream(const dbt_proxy *px) {
    if (!px->have_target)
        return -1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (const struct sockaddr *)&px->target, sizeof px->target) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    set_nonblocking(fd);
    return fd;
}

/* Write all of buf to fd, polling; false when the peer is gone, the proxy
 * stops or the mode says to drop the connection. */
static bool write_all(dbt_proxy *px, int fd, const char *buf, size_t n) {
    while (n > 0) {
        if (atomic_load(&px->stop) || mode_of(px) == DBT_PROXY_RESET)
            return false;
        ssize_t w = send(fd, buf, n, MSG_NOSIGNAL);
        if (w > 0) {
            buf += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            struct pollfd pf = {fd, POLLOUT, 0};
            poll(&pf, 1, POLL_MS);
            continue;
        }
        return false;
    }
    return true;
}

/* NOTLS: the first message of a connection, from either side. PostgreSQL's
 * client speaks first, with an 8-byte SSLRequest: answered "N" here and not
 * forwarded (*n becomes 0). MySQL's server speaks first, with its greeting
 * (3-byte length, sequence, protocol 10, version string, thread id,
 * 8 bytes of scramble, a filler, then the low 16 capability bits): its
 * CLIENT_SSL (0x0800) is cleared. Anything else is left alone. */
static void strip_tls_offer(session *s, bool from_client, char *buf, size_t *n) {
    static const unsigned char ssl_request[8] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
    s->opened = true;
    if (from_client) {
        if (*n >= 8 && memcmp(buf, ssl_request, 8) == 0) {
            send(s->client_fd, "N", 1, MSG_NOSIGNAL);
            memmove(buf, buf + 8, *n - 8);
            *n -= 8;
        }
        return;
    }
    if (*n < 6 || (unsigned char)buf[4] != 10)
        return;
    const char *end = memchr(buf + 5, '\0', *n - 5);
    if (!end)
        return;
    size_t caps = (size_t)(end + 1 - buf) + 4 + 8 + 1;
    uint32_t clear = s->no_caps | 0x0800u; /* CLIENT_SSL */
    /* The low 16 bits; after them the character set (1 byte) and the
     * status (2), then the high 16 bits. */
    if (caps + 2 <= *n) {
        buf[caps] = (char)((unsigned char)buf[caps] & ~(clear & 0xffu));
        buf[caps + 1] = (char)((unsigned char)buf[caps + 1] & ~((clear >> 8) & 0xffu));
    }
    if (caps + 7 <= *n) {
        buf[caps + 5] = (char)((unsigned char)buf[caps + 5] & ~((clear >> 16) & 0xffu));
        buf[caps + 6] = (char)((unsigned char)buf[caps + 6] & ~((clear >> 24) & 0xffu));
    }
}

/* TRICKLE: the server's first message after trickle_ms, every later byte
 * alone trickle_ms after the one before; false when the proxy stops or the
 * client is gone. */
static bool write_trickled(session *s, const char *buf, size_t n) {
    dbt_proxy *px = s->px;
    for (size_t i = 0; i < n;) {
        for (int64_t waited = 0; waited < s->trickle_ms; waited += 10) {
            if (atomic_load(&px->stop))
                return false;
            sleep_ms(s->trickle_ms - waited < 10 ? s->trickle_ms - waited : 10);
        }
        size_t len = s->greeted ? 1 : n;
        if (!write_all(px, s->client_fd, buf + i, len))
            return false;
        s->greeted = true;
        i += len;
    }
    return true;
}

static void record(dbt_proxy *px, const char *buf, size_t n) {
    pthread_mutex_lock(&px->rec_lock);
    size_t room = px->rec_cap - px->rec_len;
    if (px->rec && room > 0) {
        size_t k = n < room ? n : room;
        memcpy(px->rec + px->rec_len, buf, k);
        px->rec_len += k;
    }
    pthread_mutex_unlock(&px->rec_lock);
}

void dbt_proxy_notls_clear(dbt_proxy *px, uint32_t caps) {
    if (px)
        atomic_store(&px->notls_clear, caps);
}

void dbt_proxy_record(dbt_proxy *px, size_t cap) {
    if (!px)
        return;
    pthread_mutex_lock(&px->rec_lock);
    free(px->rec);
    px->rec = cap ? malloc(cap) : NULL;
    px->rec_cap = px->rec ? cap : 0;
    px->rec_len = 0;
    pthread_mutex_unlock(&px->rec_lock);
}

size_t dbt_proxy_recorded(dbt_proxy *px, void *buf, size_t len) {
    if (!px)
        return 0;
    pthread_mutex_lock(&px->rec_lock);
    size_t n = px->rec_len;
    if (buf && len)
        memcpy(buf, px->rec, n < len ? n : len);
    pthread_mutex_unlock(&px->rec_lock);
    return n;
}

static void *session_main(void *arg) {
    session *s = arg;
    dbt_proxy *px = s->px;
    int up = -1;
    bool reset = false;

    /* DELAY: hold the new connection before it reaches the server. */
    for (int64_t waited = 0; waited < s->delay_ms && !atomic_load(&px->stop); waited += 10)
        sleep_ms(s->delay_ms - waited < 10 ? s->delay_ms - waited : 10);
    if (!atomic_load(&px->stop))
        up = connect_upstream(px);
    if (up < 0)
        goto out; /* server down: the client sees the connection closed */

    for (;;) {
        if (atomic_load(&px->stop))
            break;
        dbt_proxy_mode m = mode_of(px);
        if (m == DBT_PROXY_RESET) {
            reset = true;
            break;
        }
        if (m == DBT_PROXY_SILENT) {
            sleep_ms(POLL_MS); /* sockets open, nothing read or written */
            continue;
        }
        struct pollfd pf[2] = {{s->client_fd, POLLIN, 0}, {up, POLLIN, 0}};
        int r = poll(pf, 2, POLL_MS);
        if (r < 0 && errno != EINTR)
            break;
        if (r <= 0)
            continue;
        /* Re-check: a switch to SILENT between the poll and the read must
         * not forward. */
        m = mode_of(px);
        if (m == DBT_PROXY_SILENT || m == DBT_PROXY_RESET)
            continue;
        bool gone = false;
        for (int i = 0; i < 2 && !gone; i++) {
            if (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            int from = i == 0 ? s->client_fd : up, to = i == 0 ? up : s->client_fd;
            ssize_t n = recv(from, s->buf, sizeof s->buf, 0);
            if (n > 0 && from == s->client_fd)
                record(px, s->buf, (size_t)n);
            if (n > 0 && from == up && s->greet_only && s->greeted)
                continue; /* GREET: dropped */
            if (n > 0 && s->no_tls && !s->opened) {
                size_t len = (size_t)n;
                strip_tls_offer(s, from == s->client_fd, s->buf, &len);
                if (len == 0)
                    continue;
                n = (ssize_t)len;
            }
            if (n > 0 && from == up && s->trickle_ms > 0) {
                if (!write_trickled(s, s->buf, (size_t)n))
                    gone = true;
                continue;
            }
            if (n > 0) {
                if (from == up)
                    s->greeted = true;
                if (!write_all(px, to, s->buf, (size_t)n))
                    gone = true;
            } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
                gone = true;
            }
        }
        if (gone) {
            reset = mode_of(px) == DBT_PROXY_RESET;
            break;
        }
    }
out:
    if (reset) {
        close_reset(s->client_fd);
        close_reset(up);
    } else {
        close(s->client_fd);
        if (up >= 0)
            close(up);
    }
    s->client_fd = -1;
    atomic_fetch_sub(&px->active, 1);
    atomic_store(&s->done, true);
    return NULL;
}

static void reap(dbt_proxy *px, bool all) {
    session **pp = &px->sessions;
    while (*pp) {
        session *s = *pp;
        if (all || atomic_load(&s->done)) {
            pthread_join(s->thread, NULL);
            *pp = s->next;
            px->n_sessions--;
            free(s);
        } else {
            pp = &s->next;
        }
    }
}

static void start_session(dbt_proxy *px, int fd, int64_t delay_ms, dbt_proxy_mode m) {
    session *s = px->n_sessions < DBT_PROXY_MAX_SESSIONS ? calloc(1, sizeof *s) : NULL;
    if (!s) {
        close(fd);
        atomic_fetch_sub(&px->active, 1);
        return;
    }
    s->px = px;
    s->client_fd = fd;
    s->delay_ms = delay_ms;
    s->greet_only = m == DBT_PROXY_GREET;
    s->no_tls = m == DBT_PROXY_NOTLS;
    s->no_caps = atomic_load(&px->notls_clear);
    s->trickle_ms = m == DBT_PROXY_TRICKLE ? (int64_t)atomic_load(&px->delay_ms) : 0;
    atomic_init(&s->done, false);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 128 * 1024);
    int rc = pthread_create(&s->thread, &attr, session_main, s);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        close(fd);
        atomic_fetch_sub(&px->active, 1);
        free(s);
        return;
    }
    s->next = px->sessions;
    px->sessions = s;
    px->n_sessions++;
}

static void *acceptor_main(void *arg) {
    dbt_proxy *px = arg;
    while (!atomic_load(&px->stop)) {
        reap(px, false);
        dbt_proxy_mode m = mode_of(px);
        if (m == DBT_PROXY_DEAF && px->n_parked >= MAX_PARKED) {
            sleep_ms(POLL_MS); /* leave the rest in the kernel's backlog */
            continue;
        }
        struct pollfd pf = {px->listen_fd, POLLIN, 0};
        int r = poll(&pf, 1, POLL_MS);
        if (r <= 0)
            continue;
        int fd = accept(px->listen_fd, NULL, NULL);
        if (fd < 0)
            continue;
        atomic_fetch_add(&px->accepted, 1);
        atomic_fetch_add(&px->active, 1);
        m = mode_of(px); /* the mode when the connection arrived */
        switch (m) {
        case DBT_PROXY_REFUSE:
            close(fd);
            atomic_fetch_sub(&px->active, 1);
            break;
        case DBT_PROXY_RESET:
            close_reset(fd);
            atomic_fetch_sub(&px->active, 1);
            break;
        case DBT_PROXY_DEAF:
            px->parked[px->n_parked++] = fd;
            break;
        case DBT_PROXY_DELAY:
            set_nonblocking(fd);
            start_session(px, fd, (int64_t)atomic_load(&px->delay_ms), m);
            break;
        case DBT_PROXY_PASS:
        case DBT_PROXY_SILENT:
        case DBT_PROXY_GREET:
        case DBT_PROXY_NOTLS:
        case DBT_PROXY_TRICKLE:
            set_nonblocking(fd);
            start_session(px, fd, 0, m);
            break;
        }
    }
    return NULL;
}

dbt_proxy *dbt_proxy_start(const char *target_host, int target_port) {
    dbt_proxy *px = calloc(1, sizeof *px);
    if (!px) {
        fprintf(stderr, "tcp_proxy: out of memory\n");
        return NULL;
    }
    atomic_init(&px->mode, target_port > 0 ? DBT_PROXY_PASS : DBT_PROXY_DEAF);
    atomic_init(&px->delay_ms, 0);
    atomic_init(&px->stop, false);
    atomic_init(&px->accepted, 0);
    atomic_init(&px->active, 0);
    atomic_init(&px->notls_clear, 0);
    pthread_mutex_init(&px->rec_lock, NULL);
    if (target_port > 0) {
        px->target.sin_family = AF_INET;
        px->target.sin_port = htons((uint16_t)target_port);
        if (inet_pton(AF_INET, target_host ? target_host : "127.0.0.1", &px->target.sin_addr) != 1) {
            fprintf(stderr, "tcp_proxy: target host must be an IPv4 literal\n");
            pthread_mutex_destroy(&px->rec_lock);
            free(px);
            return NULL;
        }
        px->have_target = true;
    }
    px->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (px->listen_fd < 0) {
        perror("tcp_proxy: socket");
        pthread_mutex_destroy(&px->rec_lock);
        free(px);
        return NULL;
    }
    int one = 1;
    setsockopt(px->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0; /* a free port */
    socklen_t alen = sizeof a;
    if (bind(px->listen_fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(px->listen_fd, 128) != 0 ||
        getsockname(px->listen_fd, (struct sockaddr *)&a, &alen) != 0) {
        perror("tcp_proxy: bind/listen");
        close(px->listen_fd);
        pthread_mutex_destroy(&px->rec_lock);
        free(px);
        return NULL;
    }
    px->port = ntohs(a.sin_port);
    if (pthread_create(&px->acceptor, NULL, acceptor_main, px) != 0) {
        fprintf(stderr, "tcp_proxy: could not start the acceptor thread\n");
        close(px->listen_fd);
        pthread_mutex_destroy(&px->rec_lock);
        free(px);
        return NULL;
    }
    return px;
}

int dbt_proxy_port(const dbt_proxy *px) { return px ? px->port : 0; }

void dbt_proxy_set_mode(dbt_proxy *px, dbt_proxy_mode mode, int64_t delay_ms) {
    if (!px)
        return;
    if (!px->have_target && (mode == DBT_PROXY_PASS || mode == DBT_PROXY_DELAY || mode == DBT_PROXY_SILENT ||
                             mode == DBT_PROXY_GREET || mode == DBT_PROXY_NOTLS || mode == DBT_PROXY_TRICKLE))
        mode = DBT_PROXY_DEAF;
    atomic_store(&px->delay_ms, (long long)(delay_ms > 0 ? delay_ms : 0));
    atomic_store(&px->mode, (int)mode);
}

dbt_proxy_mode dbt_proxy_get_mode(const dbt_proxy *px) { return px ? mode_of(px) : DBT_PROXY_PASS; }

long dbt_proxy_accepted(const dbt_proxy *px) { return px ? atomic_load(&((dbt_proxy *)px)->accepted) : 0; }
long dbt_proxy_active(const dbt_proxy *px) { return px ? atomic_load(&((dbt_proxy *)px)->active) : 0; }

void dbt_proxy_destroy(dbt_proxy *px) {
    if (!px)
        return;
    atomic_store(&px->stop, true);
    pthread_join(px->acceptor, NULL);
    close(px->listen_fd);
    reap(px, true);
    for (int i = 0; i < px->n_parked; i++) {
        close(px->parked[i]);
        atomic_fetch_sub(&px->active, 1);
    }
    free(px->rec);
    pthread_mutex_destroy(&px->rec_lock);
    free(px);
}
