/*
 * internal.h — helpers shared by the core and the drivers: the monotonic
 * clock, error filling, password redaction and URL query handling.
 */
#ifndef DBPOOL_INTERNAL_H
#define DBPOOL_INTERNAL_H

#include "dbpool.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DBPOOL_NS_PER_MS INT64_C(1000000)

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t dbpool__now_ns(void);
/* now + ms, saturating. */
int64_t dbpool__deadline_after_ms(int64_t ms);
/* Milliseconds left until the deadline (0 when past), rounded up. */
int64_t dbpool__ms_left(int64_t deadline_ns);
/* Sleep until the deadline or for ms, whichever comes first. */
void dbpool__sleep_ms(int64_t ms, int64_t deadline_ns);

/* Does text hold word (lower-case ASCII) anywhere, in any case? */
static inline bool dbpool__mentions_ci(const char *text, const char *word) {
    for (const char *t = text; t && *t; t++) {
        size_t i = 0;
        while (word[i]) {
            char c = t[i];
            if (c >= 'A' && c <= 'Z')
                c = (char)(c - 'A' + 'a');
            if (c != word[i])
                break;
            i++;
        }
        if (!word[i])
            return true;
    }
    return false;
}

/* Fill e (may be NULL) and return code. */
int dbpool__seterr(dbpool_error *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int dbpool__vseterr(dbpool_error *e, int code, const char *fmt, va_list ap);
/* Prefix e->message with "prefix: " (keeps the code). */
void dbpool__prefix_err(dbpool_error *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends suffix whole (what to do, usually), cutting the message's end
 * (on a whole UTF-8 character) when both do not fit. */
void dbpool__suffix_err(dbpool_error *e, const char *suffix);
/* Inline: every statement call and result call clears one or two. */
static inline void dbpool__clearerr(dbpool_error *e) {
    if (!e)
        return;
    e->code = DBPOOL_OK;
    e->native_code = 0;
    e->sqlstate[0] = '\0';
    e->message[0] = '\0';
}

/*
 * Scrub secrets from a NUL-terminated message in place: every occurrence of
 * each string in `secrets` (NULL-terminated, may be NULL), the value of any
 * `password=...` / `pwd=...` pair, and the password part of any
 * `scheme://user:password@` URL become "***".
 */
void dbpool__redact(char *msg, size_t cap, const char *const *secrets);
/* A message that leaves the library in a dbpool_error is one line of
 * printable text, whatever a server put in it (a value in a constraint
 * error, a RAISE message, an escape sequence): line breaks and tabs
 * become spaces, other control characters (C0, DEL, C1 in UTF-8) '?'.
 * An application that logs e.message then logs one line, and a terminal
 * that shows it gets no escape sequence. In place; never longer. */
void dbpool__fold_controls(char *msg);
/* The size of dbpool_error.message: a buffer that collects a message
 * before it goes there is at least this large, so that a message cut to
 * fit is cut at the end of dbpool_error.message, where the redactor looks
 * for a secret's cut-off start (redact.c). */
#define DBPOOL_MSG_CAP sizeof(((dbpool_error *)0)->message)
/* dbpool__redact with the passwords found in `url` (userinfo and
 * password= values, raw and decoded): for messages made before a driver
 * could say what its secrets are. */
void dbpool__redact_url_secrets(char *msg, size_t cap, const char *url);
/* The passwords written in `url`: the userinfo's and each password= query
 * value, each as written and percent-decoded, as up to 4 malloc'd strings
 * in out; returns how many. *lost (may be NULL) is set when one could not
 * be copied (out of memory): a message may then hold a password that the
 * list cannot mask. */
size_t dbpool__url_passwords(const char *url, char *out[4], bool *lost);

/* A key=value pair from a URL query, both percent-decoded. */
typedef struct dbpool_kv {
    char *key;
    char *value;
} dbpool_kv;

/* Split "base?k=v&k2=v2": *base gets a copy of the part before '?', and
 * kvs/nkv the decoded pairs. Returns DBPOOL_OK, DBPOOL_ENOMEM or
 * DBPOOL_EINVAL (a bad percent escape, %00, an item without '=', more than
 * one '@' before the host, a port that is not 1-65535: messages that quote
 * nothing of the URL). Free with dbpool__kv_free. */
int dbpool__url_query(const char *url, char **base, dbpool_kv **kvs, size_t *nkv, dbpool_error *e);
void dbpool__kv_free(dbpool_kv *kvs, size_t n);
/* Percent-decode src[0..len) into a new string; NULL on a bad escape/ENOMEM
 * (dbpool__pct_valid tells the two apart). */
char *dbpool__pct_decode(const char *src, size_t len);
/* Are src[0..len)'s escapes ones dbpool__pct_decode takes (%XX, not %00)?
 * A NULL from it for valid text means out of memory. */
bool dbpool__pct_valid(const char *src, size_t len);
/* The error for a NULL from dbpool__pct_decode(src, len): DBPOOL_ENOMEM when
 * the text was valid, else DBPOOL_EINVAL with `bad_escape` as the message. */
int dbpool__pct_decode_error(const char *src, size_t len, const char *bad_escape, dbpool_error *e);
/* Parse a base-10 integer in [lo, hi]; false when not a number or outside. */
bool dbpool__parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out);
/* strtod as in the "C" locale, whatever LC_NUMERIC the application set
 * (the servers write numbers with a '.'). */
double dbpool__strtod_c(const char *s, char **end);
/* The int64 of the text of a floating-point or decimal cell (a column
 * whose values are doubles or numerics, not text): what SQLite's
 * sqlite3_column_int64 gives for a REAL. Plain digits with an optional
 * fraction are read exactly (truncated, saturated as strtoll does); an
 * exponent or an infinity goes through the double (truncated toward zero,
 * saturated at INT64_MIN / INT64_MAX), NaN reads 0. Without this a server's
 * "1e+20" or "1.5e-07" read 1 through strtoll. */
int64_t dbpool__int64_of_real_text(const char *s);
/* A bit field's bytes (MySQL BIT, sent as len raw bytes, most significant
 * first) as a number; as int64, saturated at INT64_MAX as strtoll reads a
 * BIGINT UNSIGNED above it. */
uint64_t dbpool__uint_of_bits(const void *bytes, size_t len);
int64_t dbpool__int64_of_bits(const void *bytes, size_t len);
/* The shortest "%.Ng" (N 15 to 17) of d, as in the "C" locale, that
 * strtod reads back as d; returns what snprintf returns. */
int dbpool__format_double_shortest_c(char *buf, size_t cap, double d);
/* snprintf(buf, cap, "%.17g", d) as in the "C" locale. */
int dbpool__format_double_c(char *buf, size_t cap, double d);
/* Parse true/false/on/off/1/0/yes/no. */
bool dbpool__parse_bool(const char *s, bool *out);

/* Is the calling thread one of p's own (its maintenance thread or a
 * connector)? dbpool_close refuses to run there (pool.c). */
bool dbpool__on_own_thread(dbpool *p);

char *dbpool__strdup(const char *s);
/* Bounded copy that always terminates; a copy cut short ends on a whole
 * UTF-8 character (dbpool__utf8_cut_tail). */
void dbpool__strlcpy(char *dst, const char *src, size_t cap);
/* s was (maybe) cut to fit a buffer: drop a UTF-8 sequence the cut left
 * incomplete at its end, so that a server's non-ASCII message stays valid
 * UTF-8 however it was shortened. */
void dbpool__utf8_cut_tail(char *s);

/* Cancellation (docs/threading.md, "Cancellation"): a library call runs
 * with the calling thread's cancellation disabled, so that a
 * pthread_cancel never ends it half-way (a count or state left behind, a
 * statement cut off on a connection that is then pooled); the cancel takes
 * effect at the caller's next cancellation point. The one exception is the
 * wait in line in dbpool_acquire (acquire.c), which stays a cancellation
 * point with a cleanup handler. SQLite's statements reach none of their
 * own: its VFS disables cancellation around its system calls
 * (sqlite_vfs.c), and the core asks the driver (cancel_free) before paying
 * for a pair here. begin returns the state to restore. */
static inline int dbpool__nocancel_begin(void) {
    int old = PTHREAD_CANCEL_ENABLE;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
    return old;
}
static inline void dbpool__nocancel_end(int old) {
    int ignored;
    pthread_setcancelstate(old, &ignored);
}

#endif
