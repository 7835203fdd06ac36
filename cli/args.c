/* args.c — command-line option matching and number parsing. */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int cli_opt_value(int argc, char **argv, int *i, const char *name, const char **value) {
    const char *arg = argv[*i];
    if (arg[0] != '-' || arg[1] != '-')
        return 0;
    size_t n = strlen(name);
    if (strncmp(arg + 2, name, n) != 0)
        return 0;
    const char *rest = arg + 2 + n;
    if (*rest == '=') {
        *value = rest + 1;
        return 1;
    }
    if (*rest != '\0')
        return 0;
    if (*i + 1 >= argc)
        return -1;
    *i += 1;
    *value = argv[*i];
    return 1;
}

int cli_opt_match(const char *cmd, int argc, char **argv, int *i, const char *const names[],
                  const char **value) {
    for (int k = 0; names[k]; k++) {
        int m = cli_opt_value(argc, argv, i, names[k], value);
        if (m < 0) {
            cli_usage_error(cmd, "option --%s needs a value: see dbpool %s --help", names[k], cmd);
            return -2;
        }
        if (m == 1)
            return k;
    }
    return -1;
}

bool cli_opt_flag(const char *arg, const char *name) {
    return arg[0] == '-' && arg[1] == '-' && strcmp(arg + 2, name) == 0;
}

int cli_bad_option(const char *cmd, const char *arg, const char *const flags[]) {
    size_t n = arg[0] == '-' && arg[1] == '-' ? strcspn(arg + 2, "=") : 0;
    if (n > 0 && arg[2 + n] == '=') {
        for (int k = 0; flags[k]; k++) {
            /* The value is not echoed, like any option value: it may be a
             * password pasted in the wrong place. */
            if (strlen(flags[k]) == n && strncmp(arg + 2, flags[k], n) == 0)
                return cli_usage_error(cmd,
                                       "option --%s takes no value: write --%s alone (see dbpool %s --help)",
                                       flags[k], flags[k], cmd);
        }
    }
    return cli_usage_error(cmd, "unknown option '%s': see dbpool %s --help", cli_opt_name(arg), cmd);
}

const char *cli_opt_name(const char *arg) {
    static const char hidden[] =
        "... (the rest is not shown: it looks like a URL, which may hold a password)";
    static char buf[64 + sizeof hidden];
    size_t n = strcspn(arg, "=");
    /* No '=' to cut at: "-postgresql://u:pw@h/db", or "--db" and a URL
     * joined by a non-breaking space pasted from a web page. Only the
     * option-like start is shown then. */
    char name[201];
    bool showable = n < sizeof name;
    if (showable) {
        memcpy(name, arg, n);
        name[n] = '\0';
        showable = cli_showable(name);
    }
    if (!showable) {
        size_t dashes = strspn(arg, "-");
        n = dashes + strspn(arg + dashes, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-");
    }
    if (n > 63)
        n = 63;
    memcpy(buf, arg, n);
    buf[n] = '\0';
    if (!showable)
        strcat(buf, hidden);
    return buf;
}

bool cli_showable(const char *arg) {
    static const char *const hints[] = {"://", "@", "password", "passwd", "pwd="};
    size_t n = arg ? strlen(arg) : 0;
    if (!arg || n > 200)
        return false;
    for (size_t i = 0; i < sizeof hints / sizeof *hints; i++) {
        size_t hl = strlen(hints[i]);
        for (size_t at = 0; at + hl <= n; at++)
            if (strncasecmp(arg + at, hints[i], hl) == 0)
                return false;
    }
    return true;
}

const char *cli_shown(const char *arg) { return cli_showable(arg) ? arg : CLI_NOT_SHOWN; }

/* Plain decimal only, as the URL's numbers: no blanks, no '+', no hex. */
static bool plain_number(const char *s, bool fraction) {
    if (*s == '-')
        s++;
    if (!isdigit((unsigned char)*s) && !(fraction && *s == '.' && isdigit((unsigned char)s[1])))
        return false;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s) && !(fraction && *s == '.'))
            return false;
    return true;
}

bool cli_parse_int(const char *s, int lo, int hi, int *out) {
    if (!s || !*s || !plain_number(s, false))
        return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < lo || v > hi)
        return false;
    *out = (int)v;
    return true;
}

bool cli_parse_double(const char *s, double lo, double hi, double *out) {
    if (!s || !*s || !plain_number(s, true))
        return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || *end != '\0' || !isfinite(v) || v < lo || v > hi)
        return false;
    /* "-0" is 0, and passes a lower bound of 0: without this it would be
     * kept as -0.0 and shown so ("hold_ms": -0.0 in bench's JSON). */
    *out = v == 0 ? 0.0 : v;
    return true;
}

bool cli_parse_seconds(const char *s, int64_t *ms) {
    /* Above 0; a year is far beyond any sensible wait. */
    double v;
    if (!cli_parse_double(s, 0.0, 365.0 * 24 * 3600, &v) || v <= 0.0)
        return false;
    /* Rounded to whole microseconds first: in binary floating point
     * 2.007 * 1000.0 is 2007.0000000000002, which ceil() made 2008 ms.
     * Then up to whole milliseconds, and at least 1 for a value above 0. */
    int64_t ms_up = (int64_t)ceil(round(v * 1e6) / 1000.0);
    *ms = ms_up > 0 ? ms_up : 1;
    return true;
}
