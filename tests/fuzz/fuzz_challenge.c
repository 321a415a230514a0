/* fuzz_challenge.c — libFuzzer target for challenge tokens
 * (co_challenge_check, coordinator/challenge_token.c) and POST
 * /v1/challenge/verify (coordinator/challenge_verify.c: the JSON body, the token,
 * the captcha answer, the clearance it issues), on a coordinator with
 * keys and a policy installed.
 *
 * Input: one flags byte, then bytes the flags give a meaning:
 *   bit 0 clear: the request body as sent (JSON {"token", "response"});
 *   bit 0 set:   a token payload, which the target signs with challenge
 *                key c1 (the fuzzer cannot forge the MAC) so the payload's
 *                layout and the claims behind the MAC are exercised; it is
 *                checked alone, then sent in a body.
 * bit 1: the captcha provider says solved; bit 2: the nonce was already
 * burnt. Redis and the provider are replaced (--wrap). A token that
 * checks must give claims within their bounds; every answer must be a
 * status of challenge_verify.c's contract, a 200 carrying a clearance.
 * Seeds in tests/fuzz/corpus/challenge/ (make_corpus.py).
 */
// fuzz-ldflags: -Wl,--wrap=co_verifier_open -Wl,--wrap=co_redis_set_px
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fuzz_co.h"

int __wrap_co_verifier_open(const struct co_keyring *k,
                            struct co_verifier *out, char *err,
                            size_t errlen);
int __wrap_co_redis_set_px(const char *key, size_t klen, const char *val,
                           size_t vlen, uint64_t ttl_ms, bool only_new,
                           char *err, size_t errlen);

static const char policy_json[] =
    "{\"version\": 1, \"clearance_ttl_s\": 600, \"quotas\": ["
    "  {\"name\": \"ip\", \"key\": \"ip\", \"limit\": 100, \"window_s\": 60,"
    "   \"action\": \"challenge\"}]}";

static uint8_t flags;

static int verify_answer(const struct co_verifier *v, const char *token,
                         size_t tlen, const char *response, size_t rlen,
                         const char *remote_ip, char *err, size_t errlen)
{
    (void)v;
    (void)token;
    (void)tlen;
    (void)response;
    (void)rlen;
    (void)remote_ip;
    if (flags & 2)
        return CO_OK;
    snprintf(err, errlen, "fuzz: not solved");
    return CO_EBADTOKEN;
}

int __wrap_co_verifier_open(const struct co_keyring *k,
                            struct co_verifier *out, char *err,
                            size_t errlen)
{
    (void)k;
    (void)err;
    (void)errlen;
    out->name = "fuzz";
    out->verify = verify_answer;
    out->ctx = NULL;
    return CO_OK;
}

int __wrap_co_redis_set_px(const char *key, size_t klen, const char *val,
                           size_t vlen, uint64_t ttl_ms, bool only_new,
                           char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    CHECK(klen > 0 && memchr(key, '\0', klen) == NULL && vlen > 0 &&
          val != NULL && ttl_ms > 0);
    return only_new && (flags & 4) ? 0 : 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_co_setup(policy_json);
    return 0;
}

/* base64url(payload) "." base64url(HMAC(c1, payload)) into out, or -1
 * when it does not fit. */
static long sign_payload(const uint8_t *p, size_t n, char *out, size_t cap)
{
    uint8_t mac[32];
    long a, b;

    CHECK(co_hmac_sha256(co_keys.challenge[0].secret,
                         co_keys.challenge[0].len, p, n, mac) == CO_OK);
    a = co_b64url_encode(p, n, out, cap);
    if (a < 0 || (size_t)a + 1 >= cap)
        return -1;
    out[a] = '.';
    b = co_b64url_encode(mac, sizeof mac, out + a + 1, cap - (size_t)a - 1);
    return b < 0 ? -1 : a + 1 + b;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct co_response resp = {0};
    struct co_challenge_claims c;
    char token[4 * CO_TOKEN_MAX], *body = NULL;
    size_t blen;
    json_t *v;

    if (size < 1)
        return 0;
    flags = data[0];
    data++;
    size--;
    if (flags & 1) {
        long n = sign_payload(data, size, token, sizeof token);
        int rc;

        if (n < 0)
            return 0;
        rc = co_challenge_check(&co_keys, token, (size_t)n,
                                co_wall_ms() / 1000, &c);
        CHECK(rc == CO_OK || rc == CO_EBADTOKEN || rc == CO_EEXPIRED);
        if (rc == CO_OK)
            CHECK(strcmp(c.kid, "c1") == 0 && c.quota[0] != '\0' &&
                  strlen(c.quota) <= CO_QUOTA_NAME_MAX &&
                  c.expires_at_s > co_wall_ms() / 1000);
        v = json_pack("{s:s%, s:s}", "token", token, (size_t)n, "response",
                      "answer");
        body = v != NULL ? json_dumps(v, JSON_COMPACT) : NULL;
        json_decref(v);
        if (body == NULL)
            return 0;
        data = (const uint8_t *)body;
        size = strlen(body);
    }
    blen = size;
    {
        struct co_request req = {
            .method = "POST", .path = "/v1/challenge/verify",
            .content_type = "application/json",
            .body = blen ? data : NULL, .body_len = blen,
        };

        co_challenge_verify(&co_keys, &req, &resp);
    }
    CHECK_ANSWER(resp.status == 200 || resp.status == 400 || resp.status == 403 ||
          resp.status == 409, &resp);
    v = json_loadb((const char *)resp.body, resp.body_len, 0, NULL);
    CHECK_ANSWER(v != NULL, &resp);
    if (resp.status == 200)
        CHECK_ANSWER(json_is_string(json_object_get(v, "clearance")), &resp);
    json_decref(v);
    co_response_clear(&resp);
    free(body);
    return 0;
}
