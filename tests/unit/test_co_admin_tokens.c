/* test_co_admin_tokens.c — the admin tokens file: the shipped example parses
 * and its documented example tokens verify with their roles, every bad line
 * is refused with its number, and only the exact token (SHA-256, compared
 * with every line) passes. Hashes are checked against FIPS 180-2's "abc"
 * vector so the file format and sha256sum agree. Run from the repository
 * root.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tollgated.h"

/* SHA-256("abc"), FIPS 180-2 appendix B.1 */
#define ABC_HASH "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

static void test_example_file(void **state)
{
    struct co_tokens t;
    const struct co_admin_token *a;
    char err[256] = "";

    (void)state;
    if (co_tokens_load("deploy/admin-tokens.example", &t, err,
                       sizeof err) != CO_OK)
        fail_msg("%s", err);
    assert_true(t.loaded);
    assert_int_equal(t.n, 2);
    a = co_tokens_check(&t, "Bearer tg-example-admin-DO-NOT-USE");
    assert_non_null(a);
    assert_string_equal(a->name, "ops-admin");
    assert_true(a->admin);
    a = co_tokens_check(&t, "bearer tg-example-read-DO-NOT-USE");
    assert_non_null(a);
    assert_string_equal(a->name, "ops-viewer");
    assert_false(a->admin);
    co_tokens_free(&t);
    assert_false(t.loaded);
}

static void test_check(void **state)
{
    static const char text[] =
        "# comment\n\n  alice admin " ABC_HASH "  \r\n"
        "bob\tread\t" "0000000000000000000000000000000000000000000000000000000000000000\n";
    struct co_tokens t;
    char err[256];

    (void)state;
    assert_int_equal(co_tokens_parse(text, strlen(text), &t, err,
                                     sizeof err), CO_OK);
    assert_int_equal(t.n, 2);
    assert_string_equal(co_tokens_check(&t, "Bearer abc")->name, "alice");
    assert_null(co_tokens_check(&t, "Bearer abcd"));
    assert_null(co_tokens_check(&t, "Bearer ab"));
    assert_null(co_tokens_check(&t, "Bearer ABC"));
    assert_null(co_tokens_check(&t, "Basic abc"));
    assert_null(co_tokens_check(&t, "Bearer "));
    assert_null(co_tokens_check(&t, "abc"));
    assert_null(co_tokens_check(&t, NULL));
    assert_null(co_tokens_check(NULL, "Bearer abc"));
    co_tokens_free(&t);
    /* an empty file loads: nobody gets in */
    assert_int_equal(co_tokens_parse("", 0, &t, err, sizeof err), CO_OK);
    assert_true(t.loaded);
    assert_null(co_tokens_check(&t, "Bearer abc"));
    co_tokens_free(&t);
}

static void test_errors_name_the_line(void **state)
{
    static const struct {
        const char *text, *error;
    } cases[] = {
        {"a admin\n", "line 1: expected <name> <read|admin>"},
        {"# x\na admin " ABC_HASH " extra\n", "line 2: expected"},
        {"a root " ABC_HASH "\n", "line 1: role must be read or admin"},
        {"a read abc\n", "line 1: the hash must be 64 hex digits"},
        {"a read " ABC_HASH "0\n", "line 1: the hash must be 64 hex"},
        {"a read ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015aZ\n",
         "line 1: the hash must be 64 hex"},
        {"a read " ABC_HASH "\na admin " ABC_HASH "\n",
         "line 2: name a listed twice"},
        {"a\"b read " ABC_HASH "\n", "line 1: name must be 1..64"},
        {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa read "
         ABC_HASH "\n", "line 1: name must be 1..64"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct co_tokens t;
        char err[256] = "";

        assert_int_equal(co_tokens_parse(cases[i].text, strlen(cases[i].text),
                                         &t, err, sizeof err), CO_EINVAL);
        if (strncmp(err, cases[i].error, strlen(cases[i].error)) != 0)
            fail_msg("case %zu: \"%s\", want \"%s...\"", i, err,
                     cases[i].error);
        assert_null(t.tokens);
        assert_false(t.loaded);
        /* the error never repeats a hash */
        assert_null(strstr(err, "ba7816"));
    }
}

static void test_missing_file(void **state)
{
    struct co_tokens t;
    char err[256] = "";

    (void)state;
    assert_int_equal(co_tokens_load("/nonexistent/tokens", &t, err,
                                     sizeof err), CO_EIO);
    assert_false(t.loaded);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_example_file),
        cmocka_unit_test(test_check),
        cmocka_unit_test(test_errors_name_the_line),
        cmocka_unit_test(test_missing_file),
    };

    atomic_store(&co_log_min_level, CO_LOG_ERROR + 1);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
