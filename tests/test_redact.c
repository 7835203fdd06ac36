/* The redactor: every form in which a password can appear in a message is
 * masked, and nothing else is lost. */
#include "internal.h"
#include "testsupport.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

static void check(const char *in, const char *const *secrets, const char *expect) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", in);
    dbpool__redact(buf, sizeof buf, secrets);
    if (strcmp(buf, expect) != 0)
        fail_msg("redact('%s') = '%s', expected '%s'", in, buf, expect);
}

static void test_url_userinfo(void **state) {
    (void)state;
    check("could not parse postgresql://bob:s3cr3t@db:5432/x", NULL,
          "could not parse postgresql://bob:***@db:5432/x");
    check("mysql://u:p%40ss@[::1]:3306/db?x=1", NULL, "mysql://u:***@[::1]:3306/db?x=1");
    check("mysql://u:a@b:c@h/db", NULL, "mysql://u:***@h/db");     /* '@' in the password */
    check("postgresql://bob@db/x", NULL, "postgresql://bob@db/x"); /* no password: unchanged */
    check("two postgresql://a:1@h and mysql://b:2@k", NULL, "two postgresql://a:***@h and mysql://b:***@k");
}

static void test_key_values(void **state) {
    (void)state;
    check("invalid connection option password=hunter2 host=x", NULL,
          "invalid connection option password=*** host=x");
    check("PASSWORD = 'with space' user=u", NULL, "PASSWORD = *** user=u");
    check("pwd=abc;uid=x", NULL, "pwd=***;uid=x");
    check("?password=abc&user=u", NULL, "?password=***&user=u");
    check("mypassword=1 is not a key", NULL, "mypassword=1 is not a key");
    /* A comma is part of the value: libpq quotes a URL whose query
     * password holds one. */
    check("in URI: \"postgresql://app@[::1/app?password=hunter2,XsecretX\"", NULL,
          "in URI: \"postgresql://app@[::1/app?password=***\"");
}

static void test_known_secrets(void **state) {
    (void)state;
    const char *secrets[] = {"Tr0ub4dor&3", "Tr0ub4dor%263", NULL};
    check("auth failed for Tr0ub4dor&3 and Tr0ub4dor%263", secrets, "auth failed for *** and ***");
    const char *tiny[] = {"p", NULL};
    check("opening pool with p", tiny, "opening pool with ***"); /* short: whole words only */
    check("user=p", tiny, "user=***");
    /* A secret that begins another: the longer goes first, or its tail
     * would stay readable. */
    const char *nested[] = {"Hunter2Long", "Hunter2LongTailPart", NULL};
    check("login failed for Hunter2LongTailPart", nested, "login failed for ***");
    /* A driver folds a multi-line message onto one line, and with it the
     * run of white space inside a password: still masked. */
    const char *spaced[] = {"Tr0ub  4dor\t\t&3", NULL};
    check("in URI: \"postgresql://u:Tr0ub 4dor &3@[]/db\"", spaced, "in URI: \"postgresql://u:***@[]/db\"");
    check("token: \"Tr0ub\n4dor  &3\"", spaced, "token: \"***\"");
    const char *empty[] = {"", NULL};
    check("nothing to hide", empty, "nothing to hide");
}

static void test_truncation_safe(void **state) {
    (void)state;
    char buf[16];
    snprintf(buf, sizeof buf, "%s", "password=abcdefghijk");
    const char *secrets[] = {"a", NULL};
    dbpool__redact(buf, sizeof buf, secrets);
    assert_null(strstr(buf, "bcdef"));
    assert_true(strlen(buf) < sizeof buf);
}

/* A message cut to fit its buffer, with a secret or a URL's password cut
 * in two at its end: the part left is masked too. */
static void test_cut_secret_at_the_end(void **state) {
    (void)state;
    char buf[64];
    const char *secrets[] = {"XsecretPasswordX", NULL};
    snprintf(buf, sizeof buf, "%s", "a long message that ends in the middle of XsecretPasswordX here");
    dbpool__redact(buf, sizeof buf, secrets);
    assert_null(strstr(buf, "Xsecret"));
    assert_non_null(strstr(buf, "***"));
    assert_true(strlen(buf) < sizeof buf);

    /* No secrets known: a URL whose '@' was cut off. */
    snprintf(buf, sizeof buf, "%s", "invalid URI: \"postgresql://uuuuuuuuuu:XsecretPasswordX@host/db\"");
    dbpool__redact(buf, sizeof buf, NULL);
    assert_null(strstr(buf, "Xsecret"));
    assert_non_null(strstr(buf, "postgresql://uuuuuuuuuu:***"));

    /* Cut, though the masks before shortened it: the secret whole earlier
     * in the message, and its cut-off start at the end. */
    snprintf(buf, sizeof buf, "%s", "XsecretPasswordX failed; we will retry the login as XsecretPasswordX");
    dbpool__redact(buf, sizeof buf, secrets);
    assert_null(strstr(buf, "Xsecret"));

    /* A password with '@', cut after it. */
    snprintf(buf, sizeof buf, "%s",
             "no: \"postgresql://uuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuu:p@ss@word@host/db\"");
    dbpool__redact(buf, sizeof buf, NULL);
    if (strstr(buf, "ss@") || strstr(buf, "wor"))
        fail_msg("a password cut after its '@' shows: %s", buf);

    /* A message that was not cut keeps its end. */
    snprintf(buf, sizeof buf, "%s", "connect to postgresql://h:5432");
    dbpool__redact(buf, sizeof buf, secrets);
    assert_string_equal(buf, "connect to postgresql://h:5432");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_userinfo),          cmocka_unit_test(test_key_values),
        cmocka_unit_test(test_known_secrets),         cmocka_unit_test(test_truncation_safe),
        cmocka_unit_test(test_cut_secret_at_the_end),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
