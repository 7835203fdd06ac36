/*
 * tcp_proxy.h — a small threaded TCP proxy for fault-injection tests.
 *
 * It listens on 127.0.0.1 on a free port and forwards every connection to a
 * target host:port (loopback in the tests). Its mode can be switched at run
 * time from any thread:
 *
 *   PASS    forward both ways.
 *   DELAY   like PASS, but each NEW connection waits `delay_ms` before the
 *           proxy connects upstream and starts forwarding (a slow connect:
 *           the client's TCP connect succeeds at once, the server's first
 *           byte comes late). Connections already forwarding are untouched.
 *   REFUSE  new connections are closed at once (FIN) without a byte; existing
 *           ones keep forwarding.
 *   RESET   every connection, existing and new, is reset (SO_LINGER 0, so the
 *           peer reads ECONNRESET); the upstream side is reset too.
 *   SILENT  every socket stays open but nothing is forwarded in either
 *           direction (what a dead peer behind a firewall looks like); new
 *           connections are accepted and left silent too. Switching back to
 *           PASS forwards what was queued meanwhile.
 *   DEAF    new connections are accepted (the kernel completes the TCP
 *           handshake) but never read, written or forwarded: a connect whose
 *           protocol handshake never completes. They are closed when the
 *           proxy is destroyed. Existing connections keep forwarding.
 *   GREET   new connections are forwarded, but of what the server sends only
 *           its first message (one read) reaches the client; the rest is
 *           dropped. The protocol's opening (PostgreSQL's answer to
 *           SSLRequest, MySQL's greeting) arrives, and the TLS handshake
 *           that follows never completes. Existing connections keep
 *           forwarding.
 *   NOTLS   new connections are forwarded, but the server's offer of TLS
 *           is taken away, as a man in the middle would: PostgreSQL's
 *           SSLRequest is answered "N" by the proxy (the server never sees
 *           it), MySQL's greeting loses its CLIENT_SSL flag (and the
 *           capability bits dbt_proxy_notls_clear names). Existing
 *           connections keep forwarding.
 *   TRICKLE new connections are forwarded, but what the server sends
 *           reaches the client late: its first message after `delay_ms`,
 *           every later byte alone, `delay_ms` after the one before (a
 *           peer that keeps a handshake alive without finishing it).
 *           Existing connections keep forwarding.
 *
 * Recording (any mode, off by default): dbt_proxy_record keeps the first
 * bytes every connection's client sends, as they arrive on the wire
 * (before NOTLS takes anything out), so a test can look for what a
 * listener on the network would have seen.
 *
 * Bounded: at most DBT_PROXY_MAX_SESSIONS connections are served at once
 * (more are closed at once); every thread polls with a short timeout, so
 * dbt_proxy_destroy returns within about 100 ms and leaves no thread
 * behind. A proxy that is never switched to DEAF or SILENT is a transparent
 * pipe. Nothing here prints what it forwards.
 */
#ifndef DBPOOL_TCP_PROXY_H
#define DBPOOL_TCP_PROXY_H

#include <stddef.h>
#include <stdint.h>

#define DBT_PROXY_MAX_SESSIONS 256

typedef enum {
    DBT_PROXY_PASS = 0,
    DBT_PROXY_DELAY,
    DBT_PROXY_REFUSE,
    DBT_PROXY_RESET,
    DBT_PROXY_SILENT,
    DBT_PROXY_DEAF,
    DBT_PROXY_GREET,
    DBT_PROXY_NOTLS,
    DBT_PROXY_TRICKLE
} dbt_proxy_mode;

typedef struct dbt_proxy dbt_proxy;

/* Start a proxy to target_host:target_port (an IPv4 literal, normally
 * "127.0.0.1") in PASS mode. Returns NULL (with a message on stderr) when
 * the listening socket or the thread cannot be made. A target_port of 0
 * makes a proxy that can only be DEAF, REFUSE or RESET (it starts DEAF). */
dbt_proxy *dbt_proxy_start(const char *target_host, int target_port);

/* The local port clients connect to (on 127.0.0.1). */
int dbt_proxy_port(const dbt_proxy *px);

/* Switch mode; delay_ms is used by DBT_PROXY_DELAY and DBT_PROXY_TRICKLE only. Takes effect within
 * one poll interval (<= 20 ms) for existing connections and at once for new
 * ones. */
void dbt_proxy_set_mode(dbt_proxy *px, dbt_proxy_mode mode, int64_t delay_ms);
dbt_proxy_mode dbt_proxy_get_mode(const dbt_proxy *px);

/* Connections accepted so far (all modes), and those still open now. */
long dbt_proxy_accepted(const dbt_proxy *px);
long dbt_proxy_active(const dbt_proxy *px);

/* Stop: close every socket, join every thread, free. NULL is a no-op. */
void dbt_proxy_destroy(dbt_proxy *px);

const char *dbt_proxy_mode_name(dbt_proxy_mode mode);

/* NOTLS: more capability bits to clear in MySQL's greeting, for
 * connections accepted from now on (e.g. 1u << 19, CLIENT_PLUGIN_AUTH;
 * 0: CLIENT_SSL only, the default). */
void dbt_proxy_notls_clear(dbt_proxy *px, uint32_t caps);

/* Start recording what clients send (on connections new and already
 * open), keeping the first `cap` bytes in all (what an earlier call
 * recorded is dropped); 0 stops and drops the recording. */
void dbt_proxy_record(dbt_proxy *px, size_t cap);
/* A copy of what was recorded so far into buf (at most len bytes); returns
 * the number of bytes recorded (which may be more than len). */
size_t dbt_proxy_recorded(dbt_proxy *px, void *buf, size_t len);

#endif
