/*
 * loopback.h — TCP sockets on 127.0.0.1 for tests that need a port: one
 * that nothing listens on, one that is taken, a listener that never
 * accepts. Loopback only, free ports chosen by the kernel.
 */
#ifndef DBPOOL_TEST_LOOPBACK_H
#define DBPOOL_TEST_LOOPBACK_H

/* A TCP socket bound to 127.0.0.1 on a free port, put in *port; listening
 * with this backlog when backlog > 0. Failures fail the test. */
int dbt_loopback_socket(int *port, int backlog);

/* A port on 127.0.0.1 that nothing listens on (bound, then closed). */
int dbt_free_port(void);

#endif
