/* test_co_auth.c — edge authentication of POST /v1/sync (auth.c): the
 * signature against a vector computed outside this code base (Python's
 * hmac/hashlib), every refusal reason, the ±30 s bounds, keys of other
 * edges, rotation, and the 401 answer. Time is pinned with --wrap; the
 * request headers come from a fake header callback, as in the handler.
 */
// test-ldflags: -Wl,--wrap=co_wall_ms
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "tollgated.h"
#include "test_sync_sign.h"

#define NOW_MS 1700000000123ULL

uint64_t __wrap_co_wall_ms(void);

uint64_t __wrap_co_wall_ms(void)
{
    return NOW_MS;
}

/* fra-1 has two keys (rotation), ams-2 one. */
static const char keys_text[] =
    "challenge c1 " "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1\n"
    "clearance k1 " "d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1\n"
    "edge fra-1 "   "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1\n"
    "edge ams-2 "   "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2\n"
    "edge fra-1 "   "a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2\n";

/* A SyncRequest body: edge_id "fra-1/9f3a07", seq 5. */
static const uint8_t body[] = "\x0a\x0c" "fra-1/9f3a07" "\x10\x05";
#define BODY_LEN (sizeof body - 1)

/* HMAC-SHA256(a1 x 32, "tollgate-sync-v1\nPOST\n/v1/sync\n1700000000123\n"
 * + sha256(body) hex), by Python's hmac module. */
static const char vector_sig[] =
    "v1=04e4e0d8e886ebc90812f45b26060c21cc212d6181d85149b3923fd16fe9e973";

static enum co_auth_reason check(const struct hdrs *h, struct co_auth *a)
{
    struct co_request req = {
        .method = "POST", .path = "/v1/sync",
        .content_type = "application/x-protobuf",
        .body = body, .body_len = BODY_LEN,
        .header = fake_header, .conn = (void *)h,
    };

    return co_auth_check(&req, a);
}

/* "v1=<hex>" of body signed with secret (32 bytes of b) at ts. */
static void sign_with(uint8_t b, const char *ts, char out[68])
{
    uint8_t secret[32];
    struct hdrs h;

    memset(secret, b, sizeof secret);
    sign_body(&h, "fra-1/9f3a07", strtoull(ts, NULL, 10), secret,
              sizeof secret, body, BODY_LEN);
    memcpy(out, h.sig, 68);
}

static int setup(void **state)
{
    char err[128];

    (void)state;
    atomic_store(&co_log_min_level, CO_LOG_ERROR + 1);
    if (co_keys_parse(keys_text, strlen(keys_text), &co_keys, err,
                      sizeof err) != CO_OK) {
        fprintf(stderr, "keys: %s\n", err);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    co_keys_free(&co_keys);
    return 0;
}

static void test_good_signature_matches_the_vector(void **state)
{
    const struct hdrs h = {.edge = "fra-1/9f3a07", .ts = "1700000000123",
                           .sig = vector_sig};
    struct co_auth a;
    char sig[68];

    (void)state;
    sign_with(0xa1, "1700000000123", sig);
    assert_string_equal(sig, vector_sig);
    assert_int_equal(check(&h, &a), CO_AUTH_OK);
    assert_string_equal(a.edge_id, "fra-1/9f3a07");
    assert_string_equal(a.sig_hex, vector_sig + 3);
}

/* The edge's second key verifies too (rotation); another edge's key or an
 * unknown key does not. */
static void test_rotation_and_other_edges(void **state)
{
    struct hdrs h = {.edge = "fra-1/9f3a07", .ts = "1700000000123"};
    struct co_auth a;
    char sig[68];

    (void)state;
    sign_with(0xa2, h.ts, sig);
    h.sig = sig;
    assert_int_equal(check(&h, &a), CO_AUTH_OK);
    sign_with(0xb2, h.ts, sig);              /* ams-2's key */
    assert_int_equal(check(&h, &a), CO_AUTH_BAD_SIGNATURE);
    sign_with(0x00, h.ts, sig);
    assert_int_equal(check(&h, &a), CO_AUTH_BAD_SIGNATURE);
    /* ams-2's key is fine for ams-2 (any instance) */
    sign_with(0xb2, h.ts, sig);
    h.edge = "ams-2/x";
    assert_int_equal(check(&h, &a), CO_AUTH_OK);
    h.edge = "ams-2";
    assert_int_equal(check(&h, &a), CO_AUTH_OK);
    /* a name that merely starts like a known one is another edge */
    h.edge = "ams-22/x";
    assert_int_equal(check(&h, &a), CO_AUTH_UNKNOWN_EDGE);
    h.edge = "lhr-9/1";
    assert_int_equal(check(&h, &a), CO_AUTH_UNKNOWN_EDGE);
    assert_string_equal(a.edge_id, "lhr-9/1");   /* for the log line */
}

/* Timestamps within ±30 s pass, one ms more does not; the timestamp is
 * signed, so it cannot be changed without the signature failing. */
static void test_timestamp_bounds(void **state)
{
    static const struct {
        uint64_t ts;
        enum co_auth_reason want;
    } cases[] = {
        {NOW_MS - 30000, CO_AUTH_OK},
        {NOW_MS + 30000, CO_AUTH_OK},
        {NOW_MS - 30001, CO_AUTH_STALE_TIMESTAMP},
        {NOW_MS + 30001, CO_AUTH_STALE_TIMESTAMP},
        {0, CO_AUTH_STALE_TIMESTAMP},
        {999999999999999ULL, CO_AUTH_STALE_TIMESTAMP},
    };
    struct hdrs h = {.edge = "fra-1/9f3a07"};
    struct co_auth a;
    char ts[24], sig[68];

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(ts, sizeof ts, "%llu", (unsigned long long)cases[i].ts);
        sign_with(0xa1, ts, sig);
        h.ts = ts;
        h.sig = sig;
        if (check(&h, &a) != cases[i].want)
            fail_msg("ts %s: want %s", ts,
                     co_auth_reason_names[cases[i].want]);
    }
    /* a fresh timestamp on an old signature */
    sign_with(0xa1, "1700000000000", sig);
    h.ts = "1700000000123";
    assert_int_equal(check(&h, &a), CO_AUTH_BAD_SIGNATURE);
}

static void test_missing_and_malformed_headers(void **state)
{
    static const struct {
        const char *edge, *ts, *sig;
        enum co_auth_reason want;
    } cases[] = {
        {NULL, NULL, NULL, CO_AUTH_MISSING_SIGNATURE},
        {"fra-1/9f3a07", "1700000000123", NULL, CO_AUTH_MISSING_SIGNATURE},
        {NULL, "1700000000123", vector_sig, CO_AUTH_BAD_HEADER},
        {"fra-1/9f3a07", NULL, vector_sig, CO_AUTH_BAD_HEADER},
        {"", "1700000000123", vector_sig, CO_AUTH_BAD_HEADER},
        {"/9f3a07", "1700000000123", vector_sig, CO_AUTH_BAD_HEADER},
        {"fra 1", "1700000000123", vector_sig, CO_AUTH_BAD_HEADER},
        {"fra-1\x7f", "1700000000123", vector_sig, CO_AUTH_BAD_HEADER},
        {"fra-1/9f3a07", "+1700000000123", vector_sig, CO_AUTH_BAD_HEADER},
        {"fra-1/9f3a07", "-1", vector_sig, CO_AUTH_BAD_HEADER},
        {"fra-1/9f3a07", "", vector_sig, CO_AUTH_BAD_HEADER},
        {"fra-1/9f3a07", "1700000000123 ", vector_sig, CO_AUTH_BAD_HEADER},
        {"fra-1/9f3a07", "17000000001230000", vector_sig,
         CO_AUTH_BAD_HEADER},
        {"fra-1/9f3a07", "1700000000123", "", CO_AUTH_BAD_HEADER},
        {"fra-1/9f3a07", "1700000000123", "v1=", CO_AUTH_BAD_HEADER},
        {"fra-1/9f3a07", "1700000000123",
         "v2=04e4e0d8e886ebc90812f45b26060c21cc212d6181d85149b3923fd16fe9e973",
         CO_AUTH_BAD_HEADER},
        {"fra-1/9f3a07", "1700000000123",
         "v1=04E4E0D8E886EBC90812F45B26060C21CC212D6181D85149B3923FD16FE9E973",
         CO_AUTH_BAD_HEADER},
        {"fra-1/9f3a07", "1700000000123",
         "v1=04e4e0d8e886ebc90812f45b26060c21cc212d6181d85149b3923fd16fe9e97",
         CO_AUTH_BAD_HEADER},
        {"fra-1/9f3a07", "1700000000123",
         "v1=04e4e0d8e886ebc90812f45b26060c21cc212d6181d85149b3923fd16fe9e9733",
         CO_AUTH_BAD_HEADER},
        {"fra-1/9f3a07", "1700000000123",
         "v1=04e4e0d8e886ebc90812f45b26060c21cc212d6181d85149b3923fd16fe9e97g",
         CO_AUTH_BAD_HEADER},
    };
    char long_edge[CO_EDGE_ID_MAX + 2];
    struct hdrs h;
    struct co_auth a;

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        h.edge = cases[i].edge;
        h.ts = cases[i].ts;
        h.sig = cases[i].sig;
        if (check(&h, &a) != cases[i].want)
            fail_msg("case %zu: want %s", i,
                     co_auth_reason_names[cases[i].want]);
    }
    memset(long_edge, 'e', sizeof long_edge - 1);
    long_edge[sizeof long_edge - 1] = '\0';
    h.edge = long_edge;
    h.ts = "1700000000123";
    h.sig = vector_sig;
    assert_int_equal(check(&h, &a), CO_AUTH_BAD_HEADER);
    assert_true(strlen(a.edge_id) <= CO_EDGE_ID_MAX);
}

/* A tampered body, method or path fails the signature. */
static void test_signature_covers_body_method_and_path(void **state)
{
    const struct hdrs h = {.edge = "fra-1/9f3a07", .ts = "1700000000123",
                           .sig = vector_sig};
    static const uint8_t other[] = "\x0a\x0c" "fra-1/9f3a07" "\x10\x06";
    struct co_request req = {
        .method = "POST", .path = "/v1/sync",
        .body = other, .body_len = sizeof other - 1,
        .header = fake_header, .conn = (void *)&h,
    };
    struct co_auth a;

    (void)state;
    assert_int_equal(co_auth_check(&req, &a), CO_AUTH_BAD_SIGNATURE);
    req.body = body;
    req.path = "/v1/sync2";
    assert_int_equal(co_auth_check(&req, &a), CO_AUTH_BAD_SIGNATURE);
    req.path = "/v1/sync";
    req.method = "PUT";
    assert_int_equal(co_auth_check(&req, &a), CO_AUTH_BAD_SIGNATURE);
    req.method = "POST";
    assert_int_equal(co_auth_check(&req, &a), CO_AUTH_OK);
}

static void test_reject_answers_401_and_counts(void **state)
{
    struct co_response resp = {0};
    json_error_t jerr;
    json_t *doc;
    unsigned long long before;

    (void)state;
    for (int r = CO_AUTH_MISSING_SIGNATURE; r < CO_AUTH_REASONS; r++) {
        before = atomic_load(&co_metrics.auth_failures[r]);
        co_auth_reject(&resp, (enum co_auth_reason)r, "fra-1/x y");
        assert_int_equal(resp.status, 401);
        assert_string_equal(resp.content_type, "application/problem+json");
        assert_string_equal(resp.extra.name, "WWW-Authenticate");
        assert_string_equal(resp.extra.value, "Tollgate-HMAC-SHA256");
        doc = json_loadb((const char *)resp.body, resp.body_len, 0, &jerr);
        assert_non_null(doc);
        assert_int_equal(strncmp(json_string_value(json_object_get(doc,
                                                                   "detail")),
                                 co_auth_reason_names[r],
                                 strlen(co_auth_reason_names[r])), 0);
        assert_string_equal(json_string_value(json_object_get(doc, "title")),
                            "Unauthorized");
        json_decref(doc);
        co_response_clear(&resp);
        assert_int_equal(atomic_load(&co_metrics.auth_failures[r]),
                         before + 1);
    }
}

static void test_replay_key(void **state)
{
    struct co_auth a = {.edge_id = "fra-1/9f3a07"};
    char key[CO_REPLAY_KEY_MAX];

    (void)state;
    memcpy(a.sig_hex, vector_sig + 3, 65);
    assert_int_equal(co_rkey_replay(a.edge_id, a.sig_hex, key, sizeof key),
                     (int)strlen("tg:{edge|fra-1%2F9f3a07}:sig:") + 32);
    assert_string_equal(key, "tg:{edge|fra-1%2F9f3a07}:sig:"
                             "04e4e0d8e886ebc90812f45b26060c21");
    assert_int_equal(co_rkey_replay(a.edge_id, a.sig_hex, key, 20),
                     CO_ETOOBIG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_signature_matches_the_vector),
        cmocka_unit_test(test_rotation_and_other_edges),
        cmocka_unit_test(test_timestamp_bounds),
        cmocka_unit_test(test_missing_and_malformed_headers),
        cmocka_unit_test(test_signature_covers_body_method_and_path),
        cmocka_unit_test(test_reject_answers_401_and_counts),
        cmocka_unit_test(test_replay_key),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
