/* libFuzzer target: the command's argument parsing, argv -> settings,
 * without running anything: `dbpool bench`'s option parser (bench.c's
 * parse_args, included here), --metrics-listen's HOST:PORT, and the
 * helpers every subcommand uses to match options, read numbers and quote
 * arguments in errors. The data is split at NUL bytes into arguments; a
 * 0x01 byte becomes a database URL with a password in it. Properties: no
 * crash or sanitizer report, no error line that shows the password, and
 * parsed settings within the bounds the help gives. */
#include "../../cli/bench.c"

#include <stdint.h>
#include <stdio.h>

#define SECRET "Zq7SecretPw"
#define URL "postgresql://app:" SECRET "@127.0.0.1:1/db"

static char *errbuf;
static size_t errlen;

static void fail_if_leaked(void) {
    fflush(stderr);
    if (errbuf && memmem(errbuf, errlen, SECRET, sizeof SECRET - 1))
        abort(); /* a usage error showed the password */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* The password only where a 0x01 put it: inside a URL. Written as a
     * word of its own, it is the user's text and may be quoted. */
    if (size > 2048 || memmem(data, size, SECRET, sizeof SECRET - 1))
        return 0;
    /* Errors go to a buffer, where the password is looked for. */
    FILE *mem = open_memstream(&errbuf, &errlen);
    if (!mem)
        return 0;
    FILE *saved = stderr;
    stderr = mem;

    size_t cap = size * (sizeof URL) + 2;
    char *text = malloc(cap);
    char *argv[66];
    int argc = 0;
    argv[argc++] = "bench";
    if (text) {
        size_t n = 0;
        argv[argc++] = text;
        for (size_t i = 0; i < size; i++) {
            if (data[i] == 1) {
                memcpy(text + n, URL, sizeof URL - 1);
                n += sizeof URL - 1;
            } else if (data[i] == 0) {
                text[n++] = '\0';
                if (argc < 64)
                    argv[argc++] = text + n;
            } else {
                text[n++] = (char)data[i];
            }
        }
        text[n] = '\0';
        argv[argc] = NULL;

        bench_args a;
        memset(&a, 0, sizeof a);
        a.threads = 4;
        a.pool_size = 10;
        a.timeout_ms = 5000;
        if (parse_args(argc, argv, &a) == CLI_EXIT_OK) {
            if (!a.url || a.threads < 1 || a.threads > MAX_THREADS || a.pool_size < 1 ||
                a.pool_size > MAX_POOL || a.duration_ms < 1 || a.duration_ms > MAX_DURATION_S * 1000LL ||
                a.timeout_ms < 1 || a.timeout_ms > 366LL * 24 * 3600 * 1000 || !(a.hold_ms >= 0) ||
                a.hold_ms > MAX_HOLD_MS || a.burst < 0 || a.burst > MAX_BURST || !a.query || !*a.query)
                abort();
            if (strncmp(a.query, "postgresql://", 13) == 0)
                abort(); /* a URL taken as the statement would be printed */
        }
        fail_if_leaked();

        /* Each argument through the helpers, as every subcommand uses them. */
        for (int i = 1; i < argc; i++) {
            const char *arg = argv[i];
            cli_listen_addr addr;
            if (cli_metrics_parse_listen(CMD, arg, &addr)) {
                if (addr.port < 0 || addr.port > 65535 || !memchr(addr.host, '\0', sizeof addr.host))
                    abort();
            }
            int iv;
            double dv;
            int64_t ms;
            if (cli_parse_int(arg, -5, 5, &iv) && (iv < -5 || iv > 5))
                abort();
            if (cli_parse_double(arg, 0, 10, &dv) && !(dv >= 0 && dv <= 10))
                abort();
            if (cli_parse_seconds(arg, &ms) && ms < 1)
                abort();
            const char *name = cli_opt_name(arg);
            if (strlen(name) > 63 +
                                   sizeof "... (the rest is not shown: it looks like a URL, which may hold a "
                                          "password)")
                abort();
            if (strstr(name, SECRET) || strstr(cli_shown(arg), SECRET))
                abort();
            static const char *const flags[] = {"json", "verbose", NULL};
            if (arg[0] == '-')
                (void)cli_bad_option(CMD, arg, flags);
        }
        fail_if_leaked();
        free(text);
    }
    stderr = saved;
    fclose(mem);
    free(errbuf);
    errbuf = NULL;
    errlen = 0;
    return 0;
}
