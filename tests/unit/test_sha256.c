/* test_sha256.c — the edge's SHA-256 and HMAC-SHA256 (edge-module/src/
 * sha256.c) against FIPS 180 and RFC 4231 vectors and against OpenSSL on
 * random input; SipHash-2-4 against its paper's vector. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "jwt.h"
#include "sha256.h"
#include "test_rand.h"

static void rnd_bytes(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)rnd();
}

static void unhex(const char *hex, uint8_t *out)
{
    for (size_t i = 0; hex[2 * i]; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
}

static void assert_digest(const uint8_t got[32], const char *hex)
{
    uint8_t want[32];
    unhex(hex, want);
    assert_memory_equal(got, want, 32);
}

/* ---------------------------------------------------------------- SHA-256 */

static void fips180_examples(void **state)
{
    (void)state;
    uint8_t d[32];
    tg__sha256("", 0, d);
    assert_digest(d, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    tg__sha256("abc", 3, d);
    assert_digest(d, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *m2 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    tg__sha256(m2, strlen(m2), d);
    assert_digest(d, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

/* One million "a", fed in uneven pieces so every buffering path runs. */
static void fips180_million_a(void **state)
{
    (void)state;
    static uint8_t a[1024];
    memset(a, 'a', sizeof a);
    tg__sha256_ctx c;
    uint8_t d[32];
    tg__sha256_init(&c);
    size_t done = 0, step = 1;
    while (done < 1000000) {
        size_t n = step < 1000000 - done ? step : 1000000 - done;
        tg__sha256_update(&c, a, n);
        done += n;
        step = step % 997 + 13;
    }
    tg__sha256_final(&c, d);
    assert_digest(d, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

static void random_lengths_match_openssl(void **state)
{
    (void)state;
    static uint8_t msg[1001];
    rng_state = 0x9e3779b97f4a7c15ull;
    for (size_t len = 0; len <= 1000; len++) {
        uint8_t got[32], want[32];
        rnd_bytes(msg, len);
        tg__sha256(msg, len, got);
        SHA256(msg, len, want);
        assert_memory_equal(got, want, 32);

        /* The same message in two pieces split anywhere. */
        size_t cut = len ? rnd() % (len + 1) : 0;
        tg__sha256_ctx c;
        tg__sha256_init(&c);
        tg__sha256_update(&c, msg, cut);
        tg__sha256_update(&c, msg + cut, len - cut);
        tg__sha256_final(&c, got);
        assert_memory_equal(got, want, 32);
    }
}

/* ---------------------------------------------------------------- HMAC */

static void hmac(const uint8_t *key, size_t klen, const void *msg, size_t n, uint8_t out[32])
{
    tg__hmac_key k;
    tg__hmac_key_init(&k, key, klen);
    tg__hmac_sha256(&k, msg, n, out);
}

static void rfc4231_cases(void **state)
{
    (void)state;
    uint8_t key[131], data[50], d[32];

    memset(key, 0x0b, 20);
    hmac(key, 20, "Hi There", 8, d);
    assert_digest(d, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");

    hmac((const uint8_t *)"Jefe", 4, "what do ya want for nothing?", 28, d);
    assert_digest(d, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");

    memset(key, 0xaa, 20);
    memset(data, 0xdd, 50);
    hmac(key, 20, data, 50, d);
    assert_digest(d, "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");

    for (int i = 0; i < 25; i++)
        key[i] = (uint8_t)(i + 1);
    memset(data, 0xcd, 50);
    hmac(key, 25, data, 50, d);
    assert_digest(d, "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b");

    /* TC6 and TC7: a 131-byte key, hashed first. */
    memset(key, 0xaa, 131);
    const char *m6 = "Test Using Larger Than Block-Size Key - Hash Key First";
    hmac(key, 131, m6, strlen(m6), d);
    assert_digest(d, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    const char *m7 = "This is a test using a larger than block-size key and a larger than "
                     "block-size data. The key needs to be hashed before being used by the "
                     "HMAC algorithm.";
    hmac(key, 131, m7, strlen(m7), d);
    assert_digest(d, "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");
}

static void random_hmac_matches_openssl(void **state)
{
    (void)state;
    static uint8_t key[200], msg[2000];
    rng_state = 0x123456789abcdefull;
    for (int round = 0; round < 2000; round++) {
        size_t klen = 1 + rnd() % 160, n = rnd() % (round % 10 == 0 ? 2000 : 300);
        uint8_t got[32], want[32];
        unsigned wlen = 0;
        rnd_bytes(key, klen);
        rnd_bytes(msg, n);
        hmac(key, klen, msg, n, got);
        assert_non_null(HMAC(EVP_sha256(), key, (int)klen, msg, n, want, &wlen));
        assert_int_equal(wlen, 32);
        assert_memory_equal(got, want, 32);
    }
}

static void constant_time_compare(void **state)
{
    (void)state;
    uint8_t a[32], b[32];
    memset(a, 7, 32);
    memcpy(b, a, 32);
    assert_true(tg__ct_equal(a, b, 32));
    for (int i = 0; i < 32; i++) {
        b[i] ^= 0x80;
        assert_false(tg__ct_equal(a, b, 32));
        b[i] ^= 0x80;
    }
}

/* ---------------------------------------------------------------- SipHash */

/* SipHash paper (Aumasson, Bernstein 2012), appendix A: key 00..0f,
 * message 00..0e. */
static void siphash_reference_vector(void **state)
{
    (void)state;
    uint8_t key[16], msg[15];
    for (int i = 0; i < 16; i++)
        key[i] = (uint8_t)i;
    for (int i = 0; i < 15; i++)
        msg[i] = (uint8_t)i;
    uint64_t k[2] = {0, 0};
    for (int i = 0; i < 8; i++) {
        k[0] |= (uint64_t)key[i] << (8 * i);
        k[1] |= (uint64_t)key[8 + i] << (8 * i);
    }
    assert_int_equal(tg__siphash(k, msg, 15), 0xa129ca6149be45e5ull);
    /* Keyed: another key, another value. */
    k[0] ^= 1;
    assert_true(tg__siphash(k, msg, 15) != 0xa129ca6149be45e5ull);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fips180_examples),
        cmocka_unit_test(fips180_million_a),
        cmocka_unit_test(random_lengths_match_openssl),
        cmocka_unit_test(rfc4231_cases),
        cmocka_unit_test(random_hmac_matches_openssl),
        cmocka_unit_test(constant_time_compare),
        cmocka_unit_test(siphash_reference_vector),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
