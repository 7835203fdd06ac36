/* libFuzzer target: the formatting of a lease's stack (leak reports and the
 * holders in a timeout's message) with odd symbol names: empty, huge, with
 * line feeds, percent signs, invalid UTF-8, and a symbolizer that fails.
 * backtrace_symbols is replaced here by one that returns names from the
 * data. Properties: no crash or sanitizer report; the text fits the
 * buffer, ends in a NUL within it, and starts with the first frame (or
 * is "  ..." when none fits). */
#include "pool_internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t *cur;
static size_t cur_len;
static bool fail_symbols;

/* As glibc's: one block holding the pointer array and the strings. */
char **backtrace_symbols(void *const *frames, int n) {
    (void)frames;
    if (fail_symbols || n <= 0)
        return NULL;
    size_t total = (size_t)n * sizeof(char *) + cur_len + (size_t)n;
    char **v = malloc(total);
    if (!v)
        return NULL;
    char *s = (char *)(v + n);
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        v[i] = s;
        /* Names are separated by 0xFF bytes in the data. */
        while (at < cur_len && cur[at] != 0xFF) {
            *s++ = cur[at] ? (char)cur[at] : '?';
            at++;
        }
        if (at < cur_len)
            at++;
        *s++ = '\0';
    }
    return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 3 || size > 8192)
        return 0;
    lease_trace t;
    memset(&t, 0, sizeof t);
    t.depth = data[0] % (DBPOOL_LEAK_FRAMES + 2) - 1; /* -1 .. 16 */
    for (int i = 0; i < DBPOOL_LEAK_FRAMES; i++)
        t.frames[i] = (void *)(uintptr_t)(0x1000 + i);
    size_t cap = data[1] * 8u + (data[2] & 7);
    int max_frames = (int)(data[2] >> 3) - 4;
    fail_symbols = (data[2] & 7) == 7;
    cur = data + 3;
    cur_len = size - 3;

    char *buf = malloc(cap + 1);
    if (!buf)
        return 0;
    memset(buf, 'Z', cap + 1);
    dbpool__trace_format(&t, buf, cap, max_frames);
    if (buf[cap] != 'Z')
        abort(); /* wrote past the buffer */
    if (cap > 0) {
        size_t len = strnlen(buf, cap);
        if (len == cap)
            abort(); /* no NUL */
        if (len > 0) {
            if (strncmp(buf, "  #0 ", 5) != 0 && strcmp(buf, "  ...") != 0)
                abort(); /* neither the first frame nor "frames left out" */
        }
    }
    free(buf);
    return 0;
}
