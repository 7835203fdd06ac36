/* libFuzzer target: URL parsing (every backend's configure and the pool_*
 * keys) and the redactor. Two properties: no crash or sanitizer report, and
 * no error message that contains the password. */
#include "dbpool.h"
#include "internal.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SECRET "Zq7SecretPw"

static const char *const prefixes[] = {
    "sqlite:",
    "sqlite::memory:?",
    "postgresql://fuzz:" SECRET "@127.0.0.1:1/db?",
    "postgres://fuzz:" SECRET "@",
    "postgresql://fuzz@127.0.0.1:1/db?password=" SECRET "&",
    "mysql://fuzz:" SECRET "@127.0.0.1:1/db?",
    "mariadb://fuzz:" SECRET "@",
    "mock:?",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1 || size > 4096)
        return 0;
    const char *prefix = prefixes[data[0] % (sizeof prefixes / sizeof *prefixes)];
    size_t plen = strlen(prefix);
    char *url = malloc(plen + size);
    if (!url)
        return 0;
    memcpy(url, prefix, plen);
    size_t n = plen;
    /* With the password in the userinfo, an '@' in the data would move the
     * userinfo's end and make the password something else than SECRET. */
    bool userinfo_secret = strstr(prefix, ":" SECRET "@") != NULL;
    for (size_t i = 1; i < size; i++)
        if (data[i] != 0 && !(userinfo_secret && data[i] == '@'))
            url[n++] = (char)data[i];
    url[n] = '\0';

    dbpool_options o;
    dbpool_options_init(&o);
    o.lazy_connect = true; /* parse only: never connect */
    o.maintenance_interval_ms = 0;
    dbpool *p = NULL;
    dbpool_error e;
    if (dbpool_open(&p, url, &o, &e) == DBPOOL_OK) {
        dbpool_close(p);
    } else if (strstr(prefix, SECRET) && strstr(e.message, SECRET)) {
        abort(); /* a leaked password (only a URL that has one can leak it) */
    }

    /* The redactor on arbitrary text, with the secret planted in it. */
    char msg[512];
    size_t m = n < 200 ? n : 200;
    memcpy(msg, url + plen, m - (m > n - plen ? m - (n - plen) : 0));
    size_t used = m > n - plen ? n - plen : m;
    memcpy(msg + used, " " SECRET " ", sizeof(" " SECRET " "));
    const char *secrets[] = {SECRET, NULL};
    dbpool__redact(msg, sizeof msg, secrets);
    if (strstr(msg, SECRET))
        abort();
    free(url);
    return 0;
}
