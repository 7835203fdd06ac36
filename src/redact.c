/* redact.c — the one place that scrubs passwords from messages. Every
 * message that leaves the library (errors, log lines) passes through here. */
#include "internal.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MASK "***"

/* Append n bytes to out (bounded). */
static void put(char *out, size_t cap, size_t *o, const char *s, size_t n) {
    for (size_t i = 0; i < n && *o + 1 < cap; i++)
        out[(*o)++] = s[i];
}

/* How many bytes of msg, from s, the secret matches; 0 if it does not. A
 * run of white space in the secret matches any run of white space in the
 * message: drivers fold a multi-line message onto one line (one_line in
 * driver_pg.c) before it gets here, which turns the two spaces or the tab
 * of a password into one space. */
static size_t secret_match(const char *s, const char *secret) {
    const char *m = s;
    for (const char *k = secret; *k;) {
        if (isspace((unsigned char)*k)) {
            if (!isspace((unsigned char)*m))
                return 0;
            while (isspace((unsigned char)*k))
                k++;
            while (isspace((unsigned char)*m))
                m++;
        } else if (*m == *k) {
            m++;
            k++;
        } else {
            return 0;
        }
    }
    return (size_t)(m - s);
}

static void replace_secret(char *msg, size_t cap, const char *secret) {
    size_t slen = strlen(secret);
    if (slen == 0 || (!strpbrk(secret, " \t\n\v\f\r") && !strstr(msg, secret)))
        return; /* the common case, without a copy */
    char *out = malloc(cap);
    if (!out) {
        /* Cannot rebuild: blank the message rather than leak. */
        dbpool__strlcpy(msg, "(message withheld: it contained a secret)", cap);
        return;
    }
    /* A very short secret is masked only where it stands alone, or every
     * "p" in a message would become "***" for the password "p". */
    bool whole_word = slen < 4;
    size_t o = 0;
    for (const char *s = msg; *s;) {
        size_t n = secret_match(s, secret);
        if (n > 0 && (!whole_word ||
                      ((s == msg || !isalnum((unsigned char)s[-1])) && !isalnum((unsigned char)s[n])))) {
            put(out, cap, &o, MASK, sizeof MASK - 1);
            s += n;
        } else {
            put(out, cap, &o, s, 1);
            s++;
        }
    }
    out[o] = '\0';
    memcpy(msg, out, o + 1);
    free(out);
}

static bool is_key_char(char c) { return isalnum((unsigned char)c) || c == '_' || c == '-'; }

static const char *const password_keys[] = {"password", "passwd", "pwd", "sslpassword"};

/* When s, in msg, starts a key of password_keys followed by '=' (spaces
 * allowed between): the '='. Else NULL. */
static const char *password_key_at(const char *msg, const char *s) {
    if (s != msg && is_key_char(s[-1]))
        return NULL;
    for (size_t k = 0; k < sizeof password_keys / sizeof *password_keys; k++) {
        size_t kl = strlen(password_keys[k]);
        if (strncasecmp(s, password_keys[k], kl) != 0)
            continue;
        const char *v = s + kl;
        while (*v == ' ')
            v++;
        if (*v == '=')
            return v;
    }
    return NULL;
}

/* Does msg hold a password key and its value? Asked before the copy is
 * made: a message with nothing to mask must not be withheld when memory
 * is short (an "out of memory" error would read as a message that held a
 * secret). */
static bool has_key_value(const char *msg) {
    for (const char *s = msg; *s; s++)
        if (password_key_at(msg, s))
            return true;
    return false;
}

/* password=value, pwd=value, passwd=value (case-insensitive; value may be
 * quoted; ends at white space, '&', ';' or a quote). A ',' does not end it:
 * passwords hold commas, and masking too much is the safe mistake. */
static void mask_key_values(char *msg, size_t cap) {
    if (!has_key_value(msg))
        return;
    char *out = malloc(cap);
    if (!out) {
        dbpool__strlcpy(msg, "(message withheld: it contained a secret)", cap);
        return;
    }
    size_t o = 0;
    const char *s = msg;
    while (*s) {
        const char *v = password_key_at(msg, s);
        if (!v) {
            put(out, cap, &o, s, 1);
            s++;
            continue;
        }
        v++;
        while (*v == ' ')
            v++;
        put(out, cap, &o, s, (size_t)(v - s));
        put(out, cap, &o, MASK, sizeof MASK - 1);
        if (*v == '\'' || *v == '"') {
            char q = *v++;
            while (*v && *v != q) {
                if (*v == '\\' && v[1])
                    v++;
                v++;
            }
            if (*v)
                v++;
        } else {
            while (*v && !isspace((unsigned char)*v) && *v != '&' && *v != ';' && *v != '"' && *v != '\'')
                v++;
        }
        s = v;
    }
    out[o] = '\0';
    memcpy(msg, out, o + 1);
    free(out);
}

/* In the authority starting at auth (it ends at the first '/', '?', '#' or
 * white space; the userinfo at its last '@': a password may contain '@'
 * and ':'), the ':' that starts a password, and in *at the '@' that ends
 * it. NULL when there is none. */
static const char *url_password_at(const char *auth, const char **at) {
    const char *end = auth;
    while (*end && *end != '/' && *end != '?' && *end != '#' && !isspace((unsigned char)*end))
        end++;
    *at = NULL;
    for (const char *p = auth; p < end; p++)
        if (*p == '@')
            *at = p;
    return *at ? memchr(auth, ':', (size_t)(*at - auth)) : NULL;
}

/* Does msg hold a URL with a password? Asked before the copy, as
 * has_key_value. */
static bool has_url_password(const char *msg) {
    const char *at;
    for (const char *sep = strstr(msg, "://"); sep; sep = strstr(sep + 3, "://"))
        if (url_password_at(sep + 3, &at))
            return true;
    return false;
}

/* scheme://user:password@host -> scheme://user:***@host */
static void mask_url_userinfo(char *msg, size_t cap) {
    if (!has_url_password(msg))
        return;
    char *out = malloc(cap);
    if (!out) {
        dbpool__strlcpy(msg, "(message withheld: it contained a secret)", cap);
        return;
    }
    size_t o = 0;
    const char *s = msg;
    while (*s) {
        const char *sep = strstr(s, "://");
        if (!sep) {
            put(out, cap, &o, s, strlen(s));
            break;
        }
        const char *auth = sep + 3;
        put(out, cap, &o, s, (size_t)(auth - s));
        const char *at;
        const char *colon = url_password_at(auth, &at);
        if (colon) {
            put(out, cap, &o, auth, (size_t)(colon + 1 - auth));
            put(out, cap, &o, MASK, sizeof MASK - 1);
            s = at;
        } else {
            s = auth;
        }
    }
    out[o] = '\0';
    memcpy(msg, out, o + 1);
    free(out);
}

/* A message cut to fit its buffer may end in the first part of a secret,
 * which no whole-secret match finds, or in a URL's "user:pass" whose '@'
 * was cut off. Both tails are masked. */
static void mask_cut_tail(char *msg, size_t cap, const char *const *secrets) {
    if (cap <= sizeof MASK)
        return;
    size_t len = strlen(msg);
    size_t cut = len;
    for (size_t i = 0; secrets && secrets[i]; i++) {
        size_t slen = strlen(secrets[i]);
        for (size_t k = slen > len ? len : slen; k > 0; k--) {
            if (memcmp(msg + len - k, secrets[i], k) == 0) {
                if (len - k < cut)
                    cut = len - k;
                break;
            }
        }
    }
    /* The last URL, if its authority runs to the end: from the ':' after
     * the user on (a password may hold '@', so the cut may fall after one). */
    const char *last = NULL;
    for (const char *s = strstr(msg, "://"); s; s = strstr(s + 3, "://"))
        last = s;
    if (last) {
        const char *auth = last + 3;
        size_t n = strcspn(auth, "/?# \t\r\n");
        const char *colon = memchr(auth, ':', n);
        if (auth[n] == '\0' && colon && (size_t)(colon + 1 - msg) < cut)
            cut = (size_t)(colon + 1 - msg);
    }
    if (cut == len)
        return;
    /* Room for the mask: give up what it would overwrite. */
    if (cut + sizeof MASK > cap)
        cut = cap - sizeof MASK;
    memcpy(msg + cut, MASK, sizeof MASK);
}

void dbpool__redact(char *msg, size_t cap, const char *const *secrets) {
    if (!msg || cap == 0)
        return;
    msg[cap - 1] = '\0';
    /* Only a full buffer can have been cut (every message buffer that
     * feeds this one is at least as large). Asked now: the masks below
     * shorten the text. */
    bool cut_to_fit = strlen(msg) + 1 == cap;
    if (secrets) {
        /* Longest first: a secret that is a prefix of another (a password
         * decoded at a %00 of its raw form, say) would otherwise mask only
         * the front and leave the rest of the longer one readable. */
        const char *order[16];
        size_t n = 0;
        for (; secrets[n] && n < sizeof order / sizeof *order; n++) {
            size_t i = n;
            for (; i > 0 && strlen(order[i - 1]) < strlen(secrets[n]); i--)
                order[i] = order[i - 1];
            order[i] = secrets[n];
        }
        for (size_t i = 0; i < n; i++)
            replace_secret(msg, cap, order[i]);
        for (size_t i = n; secrets[i]; i++) /* more than any driver keeps */
            replace_secret(msg, cap, secrets[i]);
    }
    mask_key_values(msg, cap);
    mask_url_userinfo(msg, cap);
    if (cut_to_fit)
        mask_cut_tail(msg, cap, secrets);
    /* A full buffer was cut, by whoever filled it or by a mask above: end
     * it on a whole UTF-8 character. */
    if (strlen(msg) + 1 == cap)
        dbpool__utf8_cut_tail(msg);
}

/* A copy of url's password at src[0..len), raw or decoded, into out[*n]. A
 * decoded one that does not decode (a bad escape) is no loss: its raw form
 * is listed. */
static void add_copy(char *out[4], size_t *n, const char *src, size_t len, bool decoded, bool *lost) {
    char *c = decoded ? dbpool__pct_decode(src, len) : malloc(len + 1);
    if (c && !decoded) {
        memcpy(c, src, len);
        c[len] = '\0';
    }
    if (c)
        out[(*n)++] = c;
    else if (lost && (!decoded || dbpool__pct_valid(src, len)))
        *lost = true;
}

size_t dbpool__url_passwords(const char *url, char *out[4], bool *lost) {
    size_t n = 0;
    const char *sep = strstr(url, "://");
    if (sep) {
        const char *auth = sep + 3;
        const char *end = auth + strcspn(auth, "/?#");
        const char *at = NULL;
        for (const char *p = auth; p < end; p++)
            if (*p == '@')
                at = p;
        const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
        if (colon && at > colon + 1) {
            size_t len = (size_t)(at - colon - 1);
            add_copy(out, &n, colon + 1, len, false, lost);
            add_copy(out, &n, colon + 1, len, true, lost);
        }
    }
    const char *q = strchr(url, '?');
    for (const char *s = q; s && *s && n < 3; s++) {
        if ((s[0] == '?' || s[0] == '&') && strncasecmp(s + 1, "password=", 9) == 0) {
            const char *v = s + 10;
            size_t len = strcspn(v, "&");
            if (len == 0)
                continue;
            add_copy(out, &n, v, len, false, lost);
            add_copy(out, &n, v, len, true, lost);
        }
    }
    return n;
}

void dbpool__redact_url_secrets(char *msg, size_t cap, const char *url) {
    if (!msg || !url)
        return;
    char *found[5] = {NULL, NULL, NULL, NULL, NULL};
    bool lost = false;
    size_t n = dbpool__url_passwords(url, found, &lost);
    if (lost) {
        /* A password the list cannot hold may be in the message. */
        dbpool__strlcpy(msg, "(message withheld: no memory to mask the URL's password in it)", cap);
        for (size_t i = 0; i < n; i++)
            free(found[i]);
        return;
    }
    const char *list[5];
    for (size_t i = 0; i < n; i++)
        list[i] = found[i];
    list[n] = NULL;
    dbpool__redact(msg, cap, list);
    for (size_t i = 0; i < n; i++)
        free(found[i]);
}

void dbpool__fold_controls(char *msg) {
    if (!msg)
        return;
    char *out = msg;
    for (const unsigned char *s = (const unsigned char *)msg; *s; s++) {
        if (*s == '\n' || *s == '\r' || *s == '\t' || *s == '\v' || *s == '\f') {
            *out++ = ' ';
        } else if (*s < 0x20 || *s == 0x7f) {
            *out++ = '?';
        } else if (*s == 0xc2 && s[1] >= 0x80 && s[1] <= 0x9f) {
            *out++ = '?'; /* a C1 control (U+0080..U+009F), two bytes in UTF-8 */
            s++;
        } else {
            *out++ = (char)*s;
        }
    }
    *out = '\0';
}
