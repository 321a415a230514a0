/* test_co_challenge.c — challenge tokens: HMAC-SHA256 against RFC 4231,
 * issue then check, and every way a token must be refused (tampered
 * payload or signature, wrong secret, expired, malformed encodings).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tollgated.h"

static void hex_to_bytes(const char *hex, uint8_t *out)
{
    for (size_t i = 0; hex[2 * i] != '\0'; i++) {
        unsigned v;

        sscanf(hex + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
}

static void check_hmac(const uint8_t *key, size_t keylen, const void *data,
                       size_t len, const char *want_hex)
{
    uint8_t mac[32], want[32];

    hex_to_bytes(want_hex, want);
    assert_int_equal(co_hmac_sha256(key, keylen, data, len, mac), CO_OK);
    assert_memory_equal(mac, want, 32);
}

/* RFC 4231 section 4 test cases 1-4, 6, 7 (5 is a truncated MAC). */
static void test_hmac_rfc4231(void **state)
{
    uint8_t key[131], data[152];
    static const char tc6[] =
        "Test Using Larger Than Block-Size Key - Hash Key First";
    static const char tc7[] =
        "This is a test using a larger than block-size key and a larger "
        "than block-size data. The key needs to be hashed before being "
        "used by the HMAC algorithm.";

    (void)state;
    memset(key, 0x0b, 20);
    check_hmac(key, 20, "Hi There", 8,
               "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    check_hmac((const uint8_t *)"Jefe", 4, "what do ya want for nothing?", 28,
               "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    memset(key, 0xaa, 20);
    memset(data, 0xdd, 50);
    check_hmac(key, 20, data, 50,
               "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");
    for (int i = 0; i < 25; i++)
        key[i] = (uint8_t)(i + 1);
    memset(data, 0xcd, 50);
    check_hmac(key, 25, data, 50,
               "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b");
    memset(key, 0xaa, 131);
    check_hmac(key, 131, tc6, strlen(tc6),
               "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    check_hmac(key, 131, tc7, strlen(tc7),
               "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");
}

static uint8_t secret[32];
static const uint64_t now = 1700000000;

static int setup(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof secret; i++)
        secret[i] = (uint8_t)(0x30 + i);
    return 0;
}

static int issue(const char *quota, const char *key, uint64_t at,
                 uint32_t ttl, char *tok)
{
    return co_challenge_issue(secret, sizeof secret, quota, key, strlen(key),
                              at, ttl, tok, CO_TOKEN_MAX);
}

static void test_issue_then_check(void **state)
{
    char tok[CO_TOKEN_MAX], tok2[CO_TOKEN_MAX];
    struct co_challenge_claims c;
    uint8_t h[16];
    int n;

    (void)state;
    n = issue("per-ip", "198.51.100.23", now, 300, tok);
    assert_true(n > 0);
    assert_int_equal((size_t)n, strlen(tok));
    assert_non_null(strchr(tok, '.'));
    assert_null(strpbrk(tok, "+/= "));       /* base64url, no padding */
    assert_int_equal(co_challenge_check(secret, sizeof secret, tok,
                                        (size_t)n, now + 299, &c), CO_OK);
    assert_string_equal(c.quota, "per-ip");
    assert_int_equal(c.issued_at_s, now);
    assert_int_equal(c.expires_at_s, now + 300);
    co_challenge_key_hash(secret, sizeof secret, "per-ip", "198.51.100.23",
                          13, h);
    assert_memory_equal(c.key_hash, h, 16);
    /* the key hash depends on quota and key, and on the secret */
    co_challenge_key_hash(secret, sizeof secret, "per-ip", "198.51.100.24",
                          13, h);
    assert_memory_not_equal(c.key_hash, h, 16);
    co_challenge_key_hash(secret, sizeof secret, "other", "198.51.100.23",
                          13, h);
    assert_memory_not_equal(c.key_hash, h, 16);
    /* two tokens for the same key differ (nonce) and both check */
    assert_true(issue("per-ip", "198.51.100.23", now, 300, tok2) > 0);
    assert_string_not_equal(tok, tok2);
    assert_int_equal(co_challenge_check(secret, sizeof secret, tok2,
                                        strlen(tok2), now, &c), CO_OK);
    /* NULL claims is allowed */
    assert_int_equal(co_challenge_check(secret, sizeof secret, tok,
                                        strlen(tok), now, NULL), CO_OK);
}

static void test_expired_is_refused(void **state)
{
    char tok[CO_TOKEN_MAX];

    (void)state;
    assert_true(issue("q", "k", now, 300, tok) > 0);
    assert_int_equal(co_challenge_check(secret, sizeof secret, tok,
                                        strlen(tok), now + 300, NULL),
                     CO_EEXPIRED);
    assert_int_equal(co_challenge_check(secret, sizeof secret, tok,
                                        strlen(tok), now + 100000, NULL),
                     CO_EEXPIRED);
}

static char flip(char c)
{
    return c == 'A' ? 'B' : 'A';
}

static void test_tampering_is_refused(void **state)
{
    char tok[CO_TOKEN_MAX], bad[CO_TOKEN_MAX];
    uint8_t other[32];
    size_t n, dot;

    (void)state;
    assert_true(issue("per-ip", "10.0.0.1", now, 300, tok) > 0);
    n = strlen(tok);
    dot = (size_t)(strchr(tok, '.') - tok);
    /* any single character changed, in payload or signature */
    for (size_t i = 0; i < n; i++) {
        if (i == dot)
            continue;
        memcpy(bad, tok, n + 1);
        bad[i] = flip(bad[i]);
        if (co_challenge_check(secret, sizeof secret, bad, n, now,
                               NULL) == CO_OK)
            fail_msg("token accepted with character %zu changed", i);
    }
    /* another secret */
    memcpy(other, secret, sizeof other);
    other[31] ^= 1;
    assert_int_equal(co_challenge_check(other, sizeof other, tok, n, now,
                                        NULL), CO_EBADTOKEN);
    /* truncated anywhere, extended, signature swapped between tokens */
    for (size_t cut = 1; cut < n; cut++)
        assert_int_equal(co_challenge_check(secret, sizeof secret, tok,
                                            n - cut, now, NULL),
                         CO_EBADTOKEN);
    memcpy(bad, tok, n);
    memcpy(bad + n, "AA", 3);
    assert_int_equal(co_challenge_check(secret, sizeof secret, bad, n + 2,
                                        now, NULL), CO_EBADTOKEN);
    {
        char tok2[CO_TOKEN_MAX];
        size_t dot2;

        assert_true(issue("per-ip", "10.0.0.2", now, 300, tok2) > 0);
        dot2 = (size_t)(strchr(tok2, '.') - tok2);
        snprintf(bad, sizeof bad, "%.*s%s", (int)dot, tok, tok2 + dot2);
        assert_int_equal(co_challenge_check(secret, sizeof secret, bad,
                                            strlen(bad), now, NULL),
                         CO_EBADTOKEN);
    }
}

static void test_malformed_is_refused(void **state)
{
    static const char *cases[] = {
        "", ".", "abc", "abc.", ".abc", "a.b.c", "====.====",
        "AQ==.AA", "A+/.AAAA", "AQ.AQ",
        /* a valid-looking base64url payload with a non-canonical tail */
        "AR.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    };
    char big[CO_TOKEN_MAX + 10];

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_int_equal(co_challenge_check(secret, sizeof secret, cases[i],
                                            strlen(cases[i]), now, NULL),
                         CO_EBADTOKEN);
    memset(big, 'A', sizeof big);
    big[100] = '.';
    assert_int_equal(co_challenge_check(secret, sizeof secret, big,
                                        sizeof big, now, NULL),
                     CO_EBADTOKEN);
}

static void test_issue_argument_checks(void **state)
{
    char tok[CO_TOKEN_MAX], small[20];
    char long_quota[CO_QUOTA_NAME_MAX + 2];

    (void)state;
    memset(long_quota, 'q', sizeof long_quota - 1);
    long_quota[sizeof long_quota - 1] = '\0';
    assert_int_equal(issue("", "k", now, 300, tok), CO_EINVAL);
    assert_int_equal(issue(long_quota, "k", now, 300, tok), CO_EINVAL);
    assert_int_equal(co_challenge_issue(secret, sizeof secret, "q", "k", 1,
                                        now, 300, small, sizeof small),
                     CO_ETOOBIG);
    /* the longest quota fits CO_TOKEN_MAX */
    long_quota[CO_QUOTA_NAME_MAX] = '\0';
    assert_true(issue(long_quota, "k", now, 300, tok) > 0);
    assert_int_equal(co_challenge_check(secret, sizeof secret, tok,
                                        strlen(tok), now, NULL), CO_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hmac_rfc4231),
        cmocka_unit_test(test_issue_then_check),
        cmocka_unit_test(test_expired_is_refused),
        cmocka_unit_test(test_tampering_is_refused),
        cmocka_unit_test(test_malformed_is_refused),
        cmocka_unit_test(test_issue_argument_checks),
    };

    return cmocka_run_group_tests(tests, setup, NULL);
}
