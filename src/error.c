/* error.c — the one error table, and filling caller-owned dbpool_error. */
#include "internal.h"

#include <stdio.h>
#include <string.h>

const char *dbpool_strerror(int code) {
    switch (code) {
#define DBPOOL_STRERROR_CASE_(name, value, text)                                                             \
    case value:                                                                                              \
        return text;
        DBPOOL_ERRNO_MAP(DBPOOL_STRERROR_CASE_)
#undef DBPOOL_STRERROR_CASE_
    default:
        return "unknown error code";
    }
}

const char *dbpool_errname(int code) {
    switch (code) {
#define DBPOOL_ERRNAME_CASE_(name, value, text)                                                              \
    case value:                                                                                              \
        return "DBPOOL_" #name;
        DBPOOL_ERRNO_MAP(DBPOOL_ERRNAME_CASE_)
#undef DBPOOL_ERRNAME_CASE_
    default:
        return "DBPOOL_UNKNOWN";
    }
}

const char *dbpool_version(void) { return DBPOOL_VERSION_STRING; }

int dbpool__vseterr(dbpool_error *e, int code, const char *fmt, va_list ap) {
    if (!e)
        return code;
    e->code = code;
    e->native_code = 0;
    e->sqlstate[0] = '\0';
    if (vsnprintf(e->message, sizeof e->message, fmt, ap) >= (int)sizeof e->message)
        dbpool__utf8_cut_tail(e->message);
    return code;
}

int dbpool__seterr(dbpool_error *e, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    dbpool__vseterr(e, code, fmt, ap);
    va_end(ap);
    return code;
}

void dbpool__prefix_err(dbpool_error *e, const char *fmt, ...) {
    if (!e)
        return;
    char prefix[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    char old[sizeof e->message];
    memcpy(old, e->message, sizeof old);
    if (snprintf(e->message, sizeof e->message, "%s: %s", prefix, old) >= (int)sizeof e->message)
        dbpool__utf8_cut_tail(e->message);
}

void dbpool__suffix_err(dbpool_error *e, const char *suffix) {
    if (!e)
        return;
    size_t cap = sizeof e->message, n = strlen(suffix);
    if (n >= cap)
        return;
    size_t used = strlen(e->message);
    if (used + n >= cap) {
        /* The end of the message gives way: the suffix is what to do. */
        e->message[cap - 1 - n] = '\0';
        dbpool__utf8_cut_tail(e->message);
        used = strlen(e->message);
    }
    memcpy(e->message + used, suffix, n + 1);
}
