/*
 * test_pg_wait_socket.c — the wait under every bounded libpq call
 * (dbpool__pg_wait_socket: connect, validation, keepalive ping, reset,
 * statements) once its deadline has passed. No server: libpq connects to
 * a socket this test listens on, and the test writes to it.
 */
#include "internal.h"
#include "loopback.h"
#include "pg_bounded.h"
#include "testsupport.h"

#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

/* A libpq connection under way to the listener, and the server's end. */
static PGconn *start_conn(int listener, int port, int *server) {
    char portbuf[16];
    snprintf(portbuf, sizeof portbuf, "%d", port);
    const char *keys[] = {"hostaddr", "port", "dbname", "user", "sslmode", "gssencmode", NULL};
    const char *vals[] = {"127.0.0.1", portbuf, "x", "x", "disable", "disable", NULL};
    PGconn *c = PQconnectStartParams(keys, vals, 0);
    assert_non_null(c);
    assert_int_not_equal(PQstatus(c), CONNECTION_BAD);
    assert_true(PQsocket(c) >= 0);
    *server = accept(listener, NULL, NULL);
    assert_true(*server >= 0);
    return c;
}

/*
 * The server's answer came, but this thread did not run until after the
 * deadline (the process was stopped, the machine overloaded): the wait
 * said "deadline passed" without looking, and the call gave up on a
 * connection that had answered (a validation failed and the connection
 * was closed, a statement was reported as unanswered). libpq's own timed
 * waits look once without waiting; so does this one now. With nothing
 * there, the deadline still ends it at once.
 */
static void test_answer_there_at_deadline_is_taken(void **state) {
    (void)state;
    int port;
    int listener = dbt_loopback_socket(&port, 4);
    int server;
    PGconn *c = start_conn(listener, port, &server);

    /* Nothing sent yet: past the deadline, no wait and no "ready". */
    int64_t t0 = dbt_now_ms();
    assert_int_equal(dbpool__pg_wait_socket(c, POLLIN, dbpool__now_ns() - 1), 0);
    assert_true(dbt_now_ms() - t0 < 1000);

    /* The answer arrives (the test sees it with a deadline ahead) ... */
    assert_int_equal(write(server, "N", 1), 1);
    assert_int_equal(dbpool__pg_wait_socket(c, POLLIN, dbpool__deadline_after_ms(5000)), 1);
    /* ... and is there, unread, when the wait is asked after its deadline. */
    assert_int_equal(dbpool__pg_wait_socket(c, POLLIN, dbpool__now_ns() - 1), 1);

    PQfinish(c);
    close(server);
    close(listener);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_answer_there_at_deadline_is_taken),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
