/* test_co_challenge_token.c — challenge and clearance tokens: HMAC-SHA256
 * against RFC 4231, the key hash against an independent SHA-256, issue then
 * check, key rotation, and every way a token must be refused (any bit
 * flipped, truncated, wrong version even when signed, unknown key, expired,
 * malformed encodings). Whether the edge accepts a clearance token is tested
 * end to end in test_co_challenge_verify.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/sha.h>

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

static const uint64_t now = 1700000000;
static struct co_key key_a, key_b;   /* A signs; B is the rotation key */

static void set_key(struct co_key *k, const char *id, uint8_t base)
{
    memset(k, 0, sizeof *k);
    snprintf(k->id, sizeof k->id, "%s", id);
    for (size_t i = 0; i < 32; i++)
        k->secret[i] = (uint8_t)(base + i);
    k->len = 32;
}

/* A keyring holding the given challenge keys, in order. */
static struct co_keyring ring(const struct co_key *k1, const struct co_key *k2)
{
    struct co_keyring r;

    memset(&r, 0, sizeof r);
    if (k1 != NULL)
        r.challenge[r.n_challenge++] = *k1;
    if (k2 != NULL)
        r.challenge[r.n_challenge++] = *k2;
    return r;
}

static int setup(void **state)
{
    (void)state;
    set_key(&key_a, "ch-2026-11", 0x30);
    set_key(&key_b, "ch-2026-12", 0x60);
    return 0;
}

static int issue(const char *quota, const char *key, uint64_t at,
                 uint32_t ttl, char *tok)
{
    return co_challenge_issue(&key_a, quota, key, strlen(key), at, ttl, tok,
                              CO_TOKEN_MAX);
}

static int check(const struct co_keyring *r, const char *tok, size_t n,
                 uint64_t at)
{
    return co_challenge_check(r, tok, n, at, NULL);
}

static void test_key_hash_is_the_edges(void **state)
{
    uint8_t h[16], want[16], d[32];

    (void)state;
    /* Computed with Python's hashlib, not OpenSSL. */
    hex_to_bytes("8ed2799c74019d7dfbd2c3cb3150f589", want);
    co_challenge_key_hash("per-ip", "198.51.100.23", 13, h);
    assert_memory_equal(h, want, 16);
    /* and OpenSSL's one-shot SHA256() on the same bytes */
    SHA256((const unsigned char *)"api\n192.0.2.9", 13, d);
    co_challenge_key_hash("api", "192.0.2.9", 9, h);
    assert_memory_equal(h, d, 16);
    /* the key may hold any byte, NUL included */
    co_challenge_key_hash("api", "192.0.2.9\0x", 11, want);
    assert_memory_not_equal(h, want, 16);
}

static void test_issue_then_check(void **state)
{
    struct co_keyring r = ring(&key_a, NULL);
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
    assert_null(strstr(tok, "198.51"));      /* the key is hashed */
    assert_int_equal(co_challenge_check(&r, tok, (size_t)n, now + 299, &c),
                     CO_OK);
    assert_string_equal(c.kid, "ch-2026-11");
    assert_string_equal(c.quota, "per-ip");
    assert_int_equal(c.issued_at_s, now);
    assert_int_equal(c.expires_at_s, now + 300);
    co_challenge_key_hash("per-ip", "198.51.100.23", 13, h);
    assert_memory_equal(c.key_hash, h, 16);
    /* two tokens for the same key differ (nonce) and both check */
    assert_true(issue("per-ip", "198.51.100.23", now, 300, tok2) > 0);
    assert_string_not_equal(tok, tok2);
    {
        struct co_challenge_claims c2;

        assert_int_equal(co_challenge_check(&r, tok2, strlen(tok2), now,
                                            &c2), CO_OK);
        assert_memory_not_equal(c.nonce, c2.nonce, 16);
        assert_memory_equal(c.key_hash, c2.key_hash, 16);
    }
}

static void test_expiry_boundary(void **state)
{
    struct co_keyring r = ring(&key_a, NULL);
    char tok[CO_TOKEN_MAX];
    size_t n;

    (void)state;
    assert_true(issue("q", "k", now, 300, tok) > 0);
    n = strlen(tok);
    assert_int_equal(check(&r, tok, n, now), CO_OK);
    assert_int_equal(check(&r, tok, n, now + 299), CO_OK);
    assert_int_equal(check(&r, tok, n, now + 300), CO_EEXPIRED);
    assert_int_equal(check(&r, tok, n, now + 100000), CO_EEXPIRED);
    /* a forged token is bad, not expired, whatever its dates */
    tok[3] = tok[3] == 'A' ? 'B' : 'A';
    assert_int_equal(check(&r, tok, n, now + 300), CO_EBADTOKEN);
}

/* Every single bit of the token text flipped: refused. Then every bit of
 * the decoded payload and signature flipped and re-encoded (a valid
 * encoding, so the MAC, not the decoder, must catch it). */
static void test_every_bit_flip_is_refused(void **state)
{
    struct co_keyring r = ring(&key_a, &key_b);
    char tok[CO_TOKEN_MAX], bad[CO_TOKEN_MAX];
    uint8_t raw[CO_TOKEN_MAX];
    size_t n, dot;
    long plen, slen;

    (void)state;
    assert_true(issue("per-ip", "10.0.0.1", now, 300, tok) > 0);
    n = strlen(tok);
    for (size_t i = 0; i < n; i++) {
        for (int b = 0; b < 8; b++) {
            memcpy(bad, tok, n + 1);
            bad[i] = (char)(bad[i] ^ (1 << b));
            if (check(&r, bad, n, now) == CO_OK)
                fail_msg("accepted with bit %d of char %zu flipped", b, i);
        }
    }
    dot = (size_t)(strchr(tok, '.') - tok);
    plen = co_b64url_decode(tok, dot, raw, sizeof raw);
    slen = co_b64url_decode(tok + dot + 1, n - dot - 1, raw + plen,
                            sizeof raw - (size_t)plen);
    assert_true(plen > 0 && slen == 32);
    for (long i = 0; i < plen + slen; i++) {
        for (int b = 0; b < 8; b++) {
            long a;

            raw[i] ^= (uint8_t)(1 << b);
            a = co_b64url_encode(raw, (size_t)plen, bad, sizeof bad);
            bad[a] = '.';
            co_b64url_encode(raw + plen, 32, bad + a + 1,
                             sizeof bad - (size_t)a - 1);
            if (check(&r, bad, strlen(bad), now) == CO_OK)
                fail_msg("accepted with bit %d of byte %ld flipped", b, i);
            raw[i] ^= (uint8_t)(1 << b);
        }
    }
}

static void test_truncated_or_spliced_is_refused(void **state)
{
    struct co_keyring r = ring(&key_a, NULL);
    char tok[CO_TOKEN_MAX], tok2[CO_TOKEN_MAX], bad[2 * CO_TOKEN_MAX];
    size_t n, dot, dot2;

    (void)state;
    assert_true(issue("per-ip", "10.0.0.1", now, 300, tok) > 0);
    n = strlen(tok);
    for (size_t cut = 1; cut <= n; cut++) {
        assert_int_equal(check(&r, tok, n - cut, now), CO_EBADTOKEN);
        assert_int_equal(check(&r, tok + cut, n - cut, now), CO_EBADTOKEN);
    }
    memcpy(bad, tok, n);
    memcpy(bad + n, "AA", 3);
    assert_int_equal(check(&r, bad, n + 2, now), CO_EBADTOKEN);
    /* a signature moved from another token */
    assert_true(issue("per-ip", "10.0.0.2", now, 300, tok2) > 0);
    dot = (size_t)(strchr(tok, '.') - tok);
    dot2 = (size_t)(strchr(tok2, '.') - tok2);
    snprintf(bad, sizeof bad, "%.*s%s", (int)dot, tok, tok2 + dot2);
    assert_int_equal(check(&r, bad, strlen(bad), now), CO_EBADTOKEN);
}

/* A payload signed with key A's secret, whatever its layout: only the
 * checker's own rules can refuse it. */
static void sign_raw(const uint8_t *payload, size_t n, char *out)
{
    uint8_t mac[32];
    long a;

    assert_int_equal(co_hmac_sha256(key_a.secret, key_a.len, payload, n,
                                    mac), CO_OK);
    a = co_b64url_encode(payload, n, out, CO_TOKEN_MAX);
    assert_true(a > 0);
    out[a] = '.';
    assert_true(co_b64url_encode(mac, 32, out + a + 1,
                                 CO_TOKEN_MAX - (size_t)a - 1) == 43);
}

static void test_layout_is_enforced_even_when_signed(void **state)
{
    struct co_keyring r = ring(&key_a, NULL);
    char tok[CO_TOKEN_MAX], forged[CO_TOKEN_MAX];
    uint8_t p[CO_TOKEN_MAX];
    size_t dot, n;
    long plen;

    (void)state;
    assert_true(issue("q1", "k", now, 300, tok) > 0);
    dot = (size_t)(strchr(tok, '.') - tok);
    plen = co_b64url_decode(tok, dot, p, sizeof p);
    assert_true(plen > 0);
    n = (size_t)plen;
    /* the genuine payload re-signed checks: the harness is sound */
    sign_raw(p, n, forged);
    assert_int_equal(check(&r, forged, strlen(forged), now), CO_OK);
    /* versions 0, 1 and 3 */
    for (uint8_t v = 0; v < 4; v++) {
        if (v == 2)
            continue;
        p[0] = v;
        sign_raw(p, n, forged);
        assert_int_equal(check(&r, forged, strlen(forged), now),
                         CO_EBADTOKEN);
    }
    p[0] = 2;
    /* a byte too many or too few */
    p[n] = 0;
    sign_raw(p, n + 1, forged);
    assert_int_equal(check(&r, forged, strlen(forged), now), CO_EBADTOKEN);
    sign_raw(p, n - 1, forged);
    assert_int_equal(check(&r, forged, strlen(forged), now), CO_EBADTOKEN);
    /* key id length 0, and one running past the end */
    p[1] = 0;
    sign_raw(p, n, forged);
    assert_int_equal(check(&r, forged, strlen(forged), now), CO_EBADTOKEN);
    p[1] = 0xff;
    sign_raw(p, n, forged);
    assert_int_equal(check(&r, forged, strlen(forged), now), CO_EBADTOKEN);
    /* quota bytes that are not a quota name: a NUL ("q\0"), a
     * non-UTF-8 byte (found by fuzz_challenge: verify answered 500) */
    p[1] = (uint8_t)strlen(key_a.id);
    p[3 + p[1] + 1] = '\0';
    sign_raw(p, n, forged);
    assert_int_equal(check(&r, forged, strlen(forged), now), CO_EBADTOKEN);
    p[3 + p[1] + 1] = 0x8d;
    sign_raw(p, n, forged);
    assert_int_equal(check(&r, forged, strlen(forged), now), CO_EBADTOKEN);
    p[3 + p[1] + 1] = '1';
    sign_raw(p, n, forged);
    assert_int_equal(check(&r, forged, strlen(forged), now), CO_OK);
    /* quota length 0 */
    p[2 + p[1]] = 0;
    sign_raw(p, n, forged);
    assert_int_equal(check(&r, forged, strlen(forged), now), CO_EBADTOKEN);
}

static void test_rotation(void **state)
{
    struct co_keyring only_a = ring(&key_a, NULL);
    struct co_keyring b_then_a = ring(&key_b, &key_a);
    struct co_keyring only_b = ring(&key_b, NULL);
    struct co_keyring renamed;
    char tok_a[CO_TOKEN_MAX], tok_b[CO_TOKEN_MAX];
    struct co_challenge_claims c;

    (void)state;
    assert_true(issue("q", "k", now, 300, tok_a) > 0);
    assert_true(co_challenge_issue(&key_b, "q", "k", 1, now, 300, tok_b,
                                   sizeof tok_b) > 0);
    /* A's token while A is active, first or second */
    assert_int_equal(check(&only_a, tok_a, strlen(tok_a), now), CO_OK);
    assert_int_equal(co_challenge_check(&b_then_a, tok_a, strlen(tok_a), now,
                                        &c), CO_OK);
    assert_string_equal(c.kid, key_a.id);
    assert_int_equal(check(&b_then_a, tok_b, strlen(tok_b), now), CO_OK);
    /* not once A is gone, nor B's before B is added */
    assert_int_equal(check(&only_b, tok_a, strlen(tok_a), now),
                     CO_EBADTOKEN);
    assert_int_equal(check(&only_a, tok_b, strlen(tok_b), now),
                     CO_EBADTOKEN);
    /* the id picks the key: A's secret under another id is not A */
    renamed = ring(&key_a, NULL);
    snprintf(renamed.challenge[0].id, sizeof renamed.challenge[0].id, "x");
    assert_int_equal(check(&renamed, tok_a, strlen(tok_a), now),
                     CO_EBADTOKEN);
    /* B's id with A's secret: the MAC fails */
    renamed = ring(&key_a, NULL);
    snprintf(renamed.challenge[0].id, sizeof renamed.challenge[0].id, "%s",
             key_b.id);
    assert_int_equal(check(&renamed, tok_b, strlen(tok_b), now),
                     CO_EBADTOKEN);
    /* no keys at all */
    renamed = ring(NULL, NULL);
    assert_int_equal(check(&renamed, tok_a, strlen(tok_a), now),
                     CO_EBADTOKEN);
}

static void test_malformed_is_refused(void **state)
{
    struct co_keyring r = ring(&key_a, NULL);
    static const char *cases[] = {
        "", ".", "abc", "abc.", ".abc", "a.b.c", "====.====",
        "AQ==.AA", "A+/.AAAA", "AQ.AQ", "Ag.AAAA",
        /* a valid-looking base64url payload with a non-canonical tail */
        "AR.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    };
    char big[CO_TOKEN_MAX + 10];

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_int_equal(check(&r, cases[i], strlen(cases[i]), now),
                         CO_EBADTOKEN);
    memset(big, 'A', sizeof big);
    big[100] = '.';
    assert_int_equal(check(&r, big, sizeof big, now), CO_EBADTOKEN);
}

static void test_issue_argument_checks(void **state)
{
    struct co_keyring r = ring(&key_a, NULL);
    char tok[CO_TOKEN_MAX], small[20];
    char long_quota[CO_QUOTA_NAME_MAX + 2];
    struct co_key long_id;

    (void)state;
    memset(long_quota, 'q', sizeof long_quota - 1);
    long_quota[sizeof long_quota - 1] = '\0';
    assert_int_equal(issue("", "k", now, 300, tok), CO_EINVAL);
    assert_int_equal(issue(long_quota, "k", now, 300, tok), CO_EINVAL);
    assert_int_equal(co_challenge_issue(&key_a, "q", "k", 1, now, 300, small,
                                        sizeof small), CO_ETOOBIG);
    /* the longest quota and key id fit CO_TOKEN_MAX */
    long_quota[CO_QUOTA_NAME_MAX] = '\0';
    long_id = key_a;
    memset(long_id.id, 'i', CO_KEY_ID_MAX);
    long_id.id[CO_KEY_ID_MAX] = '\0';
    r.challenge[0] = long_id;
    assert_true(co_challenge_issue(&long_id, long_quota, "k", 1, now, 300,
                                   tok, sizeof tok) > 0);
    assert_int_equal(check(&r, tok, strlen(tok), now), CO_OK);
}

/* co_challenge_token signs with co_keys' first challenge key, and with
 * nothing when there is none. */
static void test_sync_token_uses_the_keyring(void **state)
{
    struct co_keyring saved = co_keys;
    struct co_challenge_claims c;
    char tok[CO_TOKEN_MAX];

    (void)state;
    co_keys = ring(NULL, NULL);
    assert_int_equal(co_challenge_token("q", "k", 1, now, 300, tok,
                                        sizeof tok), CO_EINVAL);
    co_keys = ring(&key_b, &key_a);
    assert_true(co_challenge_token("q", "k", 1, now, 300, tok,
                                   sizeof tok) > 0);
    assert_int_equal(co_challenge_check(&co_keys, tok, strlen(tok), now, &c),
                     CO_OK);
    assert_string_equal(c.kid, key_b.id);
    co_keys = saved;
}

/* One JWS segment decoded and parsed. */
static json_t *segment(const char *s, size_t n)
{
    uint8_t raw[CO_CLEARANCE_MAX];
    long len = co_b64url_decode(s, n, raw, sizeof raw);

    assert_true(len > 0);
    return json_loadb((const char *)raw, (size_t)len, JSON_REJECT_DUPLICATES,
                      NULL);
}

static void test_clearance_format(void **state)
{
    char jws[CO_CLEARANCE_MAX], kh64[24];
    uint8_t kh[16], mac[32], sig[32];
    const char *d1, *d2;
    json_t *h, *c;
    struct co_key quoted = key_a;
    int n;

    (void)state;
    co_challenge_key_hash("api", "192.0.2.9", 9, kh);
    n = co_clearance_issue(&key_a, "api", kh, now, 600, jws, sizeof jws);
    assert_true(n > 0);
    assert_int_equal((size_t)n, strlen(jws));
    d1 = strchr(jws, '.');
    d2 = strrchr(jws, '.');
    assert_true(d1 != NULL && d2 != d1);
    h = segment(jws, (size_t)(d1 - jws));
    c = segment(d1 + 1, (size_t)(d2 - d1 - 1));
    assert_non_null(h);
    assert_non_null(c);
    assert_int_equal(json_object_size(h), 3);
    assert_string_equal(json_string_value(json_object_get(h, "alg")),
                        "HS256");
    assert_string_equal(json_string_value(json_object_get(h, "typ")), "JWT");
    assert_string_equal(json_string_value(json_object_get(h, "kid")),
                        key_a.id);
    assert_int_equal(json_object_size(c), 4);
    assert_string_equal(json_string_value(json_object_get(c, "q")), "api");
    co_b64url_encode(kh, 16, kh64, sizeof kh64);
    assert_string_equal(json_string_value(json_object_get(c, "kh")), kh64);
    assert_int_equal(json_integer_value(json_object_get(c, "iat")), now);
    assert_int_equal(json_integer_value(json_object_get(c, "exp")),
                     now + 600);
    json_decref(h);
    json_decref(c);
    /* HS256 over "header.payload" */
    assert_int_equal(co_hmac_sha256(key_a.secret, key_a.len,
                                    (const uint8_t *)jws,
                                    (size_t)(d2 - jws), mac), CO_OK);
    assert_int_equal(co_b64url_decode(d2 + 1, strlen(d2 + 1), sig,
                                      sizeof sig), 32);
    assert_memory_equal(mac, sig, 32);
    /* an id with JSON's special characters stays one string */
    snprintf(quoted.id, sizeof quoted.id, "a\"b\\c");
    assert_true(co_clearance_issue(&quoted, "api", kh, now, 600, jws,
                                   sizeof jws) > 0);
    d1 = strchr(jws, '.');
    h = segment(jws, (size_t)(d1 - jws));
    assert_non_null(h);
    assert_string_equal(json_string_value(json_object_get(h, "kid")),
                        "a\"b\\c");
    json_decref(h);
    /* too small a buffer */
    assert_int_equal(co_clearance_issue(&key_a, "api", kh, now, 600, jws, 40),
                     CO_ETOOBIG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hmac_rfc4231),
        cmocka_unit_test(test_key_hash_is_the_edges),
        cmocka_unit_test(test_issue_then_check),
        cmocka_unit_test(test_expiry_boundary),
        cmocka_unit_test(test_every_bit_flip_is_refused),
        cmocka_unit_test(test_truncated_or_spliced_is_refused),
        cmocka_unit_test(test_layout_is_enforced_even_when_signed),
        cmocka_unit_test(test_rotation),
        cmocka_unit_test(test_malformed_is_refused),
        cmocka_unit_test(test_issue_argument_checks),
        cmocka_unit_test(test_sync_token_uses_the_keyring),
        cmocka_unit_test(test_clearance_format),
    };

    return cmocka_run_group_tests(tests, setup, NULL);
}
