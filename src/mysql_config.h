/*
 * mysql_config.h — a mysql:// or mariadb:// URL parsed into what the MySQL
 * backend connects with. Connector/C has no URL syntax of its own; the
 * grammar is in docs/configuration.md.
 */
#ifndef DBPOOL_MYSQL_CONFIG_H
#define DBPOOL_MYSQL_CONFIG_H

#include "dbpool.h"

#include <stdbool.h>
#include <stddef.h>

#define MY_DEFAULT_PORT 3306u

typedef enum { SSL_DISABLED = 0, SSL_PREFERRED, SSL_REQUIRED, SSL_VERIFY_CA, SSL_VERIFY_IDENTITY } ssl_mode;

typedef struct my_host {
    char *host; /* NULL: the library's default (localhost) */
    unsigned port;
} my_host;

typedef struct my_cfg {
    char *user, *password, *database;
    char *password_encoded; /* as written in the URL, for the redactor */
    my_host *hosts;
    size_t nhosts;
    char *socket;
    ssl_mode ssl;
    bool ssl_mode_given;
    char *ssl_ca, *ssl_cert, *ssl_key;
    char *charset;
    unsigned connect_timeout, read_timeout, write_timeout; /* seconds; 0 = not given */
    char *init_command;
    const char *secrets[3];
} my_cfg;

/* The driver vtable's configure / free_config / secrets. */
int dbpool__mysql_configure(const char *url, void **cfg, dbpool_error *e);
void dbpool__mysql_free_config(void *cfg);
const char *const *dbpool__mysql_secrets(const void *cfg);

#endif
