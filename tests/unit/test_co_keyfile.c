/* test_co_keyfile.c — the key file (keyfile.c): a good file, every refusal
 * with its line number (and never the secret), duplicate ids, the rotation
 * limit, edge names, and lookups of an edge's keys by name.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tollgated.h"

#define S1 "0101010101010101010101010101010101010101010101010101010101010101"
#define S2 "0202020202020202020202020202020202020202020202020202020202020202"
#define S3 "0303030303030303030303030303030303030303030303030303030303030303"

static const char good[] =
    "# tollgate keys\n"
    "\n"
    "challenge c-2024 " S1 "\n"
    "  challenge\tc-2025 " S2 "  \r\n"
    "clearance k1 " S3 "\n"
    "edge fra-1 " S1 "\n"
    "edge ams-2 " S2 "\n"
    "edge fra-1 " S3 "\n"
    "edge fra-10 " S2 "\n"
    "captcha static " S1;       /* no final newline */

static void test_good_file(void **state)
{
    struct co_keyring k;
    const struct co_key *first;
    char err[128] = "";

    (void)state;
    assert_int_equal(co_keys_parse(good, strlen(good), &k, err, sizeof err),
                     CO_OK);
    assert_int_equal(k.n_challenge, 2);
    assert_string_equal(k.challenge[0].id, "c-2024");   /* first signs */
    assert_string_equal(k.challenge[1].id, "c-2025");
    assert_int_equal(k.challenge[1].len, 32);
    assert_int_equal(k.challenge[1].secret[31], 2);
    assert_int_equal(k.n_clearance, 1);
    assert_true(k.has_captcha);
    assert_string_equal(k.captcha.id, "static");
    assert_int_equal(k.n_edges, 4);

    /* both keys of fra-1, not fra-10's */
    assert_int_equal(co_keys_edge(&k, "fra-1", 5, &first), 2);
    assert_string_equal(first[0].id, "fra-1");
    assert_string_equal(first[1].id, "fra-1");
    assert_int_not_equal(first[0].secret[0], first[1].secret[0]);
    /* the name is the first nlen bytes: "fra-1/instance" -> fra-1 */
    assert_int_equal(co_keys_edge(&k, "fra-1/9f3a", 5, &first), 2);
    assert_int_equal(co_keys_edge(&k, "fra-10", 6, &first), 1);
    assert_int_equal(first->secret[0], 2);
    assert_int_equal(co_keys_edge(&k, "ams-2", 5, &first), 1);
    assert_int_equal(co_keys_edge(&k, "fra-", 4, &first), 0);
    assert_null(first);
    assert_int_equal(co_keys_edge(&k, "zzz", 3, &first), 0);
    assert_int_equal(co_keys_edge(&k, "", 0, &first), 0);
    assert_non_null(co_keys_find(k.challenge, k.n_challenge, "c-2025", 6));
    assert_null(co_keys_find(k.challenge, k.n_challenge, "c-202", 5));
    co_keys_free(&k);
    assert_int_equal(k.n_edges, 0);
    assert_null(k.edges);
}

static void test_errors_name_the_line(void **state)
{
    static const struct {
        const char *text, *msg;
    } cases[] = {
        {"challenge c1\n", "line 1: expected <kind> <id> <hex secret>"},
        {"\n\nchallenge c1 " S1 " extra\n",
         "line 3: expected <kind> <id> <hex secret>"},
        {"# c\nchallenge c1 0102\n", "line 2: secret must be 32..128"},
        {"challenge c1 " S1 "0\n", "line 1: secret must be 32..128"},
        {"challenge c1 zz" S1 "\n", "line 1: secret must be"},
        {"challenge c1 " S1 S1 S1 S1 "02\n", "line 1: secret must be"},
        {"edge fra-1/x " S1 "\n", "line 1: an edge name has no '/'"},
        {"signing s1 " S1 "\n", "line 1: kind must be challenge, clearance"},
        {"challenge c1 " S1 "\nchallenge c1 " S2 "\n",
         "line 2: challenge key c1 listed twice"},
        {"clearance k " S1 "\nclearance k " S2 "\n",
         "line 2: clearance key k listed twice"},
        {"challenge a " S1 "\nchallenge b " S2 "\nchallenge c " S3 "\n",
         "line 3: at most 2 challenge keys"},
        {"clearance a " S1 "\nclearance b " S2 "\nclearance c " S3 "\n",
         "line 3: at most 2 clearance keys"},
        {"captcha static " S1 "\ncaptcha other " S2 "\n",
         "line 2: one captcha verifier key"},
        {"challenge " "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         " " S1 "\n", "line 1: id must be 1..64"},
    };
    struct co_keyring k;
    char err[160];

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        err[0] = '\0';
        if (co_keys_parse(cases[i].text, strlen(cases[i].text), &k, err,
                          sizeof err) == CO_OK)
            fail_msg("case %zu accepted", i);
        if (strncmp(err, cases[i].msg, strlen(cases[i].msg)) != 0)
            fail_msg("case %zu: \"%s\", want \"%s\"", i, err, cases[i].msg);
        /* the secret never appears in a message */
        assert_null(strstr(err, "0101010101"));
        assert_int_equal(k.n_edges, 0);
        assert_null(k.edges);
    }
}

static void test_load_from_a_file(void **state)
{
    char path[] = "/tmp/test_co_keys_XXXXXX", err[160];
    struct co_keyring k;
    int fd = mkstemp(path);

    (void)state;
    assert_true(fd >= 0);
    assert_int_equal(write(fd, good, strlen(good)), (ssize_t)strlen(good));
    close(fd);
    assert_int_equal(co_keys_load(path, &k, err, sizeof err), CO_OK);
    assert_int_equal(k.n_edges, 4);
    co_keys_free(&k);
    unlink(path);
    assert_int_equal(co_keys_load(path, &k, err, sizeof err), CO_EIO);
    assert_non_null(strstr(err, "No such file"));
}

/* Many edges, inserted out of order: lookups stay exact. */
static void test_many_edges(void **state)
{
    enum { N = 500 };
    size_t cap = N * 90, len = 0;
    char *text = malloc(cap), name[16], err[128];
    struct co_keyring k;
    const struct co_key *first;

    (void)state;
    for (int i = N - 1; i >= 0; i--)
        len += (size_t)snprintf(text + len, cap - len, "edge e%d %s\n", i,
                                i % 2 ? S1 : S2);
    assert_int_equal(co_keys_parse(text, len, &k, err, sizeof err), CO_OK);
    assert_int_equal(k.n_edges, N);
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "e%d", i);
        assert_int_equal(co_keys_edge(&k, name, strlen(name), &first), 1);
        assert_string_equal(first->id, name);
        assert_int_equal(first->secret[0], i % 2 ? 1 : 2);
    }
    co_keys_free(&k);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_file),
        cmocka_unit_test(test_errors_name_the_line),
        cmocka_unit_test(test_load_from_a_file),
        cmocka_unit_test(test_many_edges),
    };

    atomic_store(&co_log_min_level, CO_LOG_ERROR + 1);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
