/* test_co_challenge_verify.c — POST /v1/challenge/verify, the handler called
 * as a plain function, against a real redis-server this test starts on a
 * spare loopback port and stops by PID. The clearance it returns is handed
 * to the native edge core (libtollgate.a), which must turn that key's
 * CHALLENGE into Allow, and must not for a clearance of another key or one
 * signed under a kid it was not given.
 *
 * The wall clock is pinned (--wrap=co_wall_ms) so token dates are exact;
 * Redis TTLs run on Redis's own clock and are only checked for presence
 * and size.
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

#include "tollgate.h"
#include "tollgated.h"
#include "test_redis_server.h"

#define NOW_S 1700000000ull
#define CLEARANCE_TTL_S 600

uint64_t __wrap_co_wall_ms(void);
uint64_t __wrap_co_wall_ms(void)
{
    return NOW_S * 1000 + 250;
}

static const char policy_json[] =
    "{\"version\": 7, \"clearance_ttl_s\": 600, \"quotas\": ["
    "  {\"name\": \"api\", \"key\": \"ip\", \"limit\": 100, \"window_s\": 60,"
    "   \"path_prefix\": \"/api/\", \"action\": \"challenge\"}]}";

static struct test_redis redis;
static struct co_keyring keys;     /* challenge A, B; clearance c1; static */

static void set_key(struct co_key *k, const char *id, uint8_t base)
{
    memset(k, 0, sizeof *k);
    snprintf(k->id, sizeof k->id, "%s", id);
    for (size_t i = 0; i < 32; i++)
        k->secret[i] = (uint8_t)(base + 7 * i);
    k->len = 32;
}

static int setup(void **state)
{
    struct co_redis_target t;
    struct co_policy *p;
    char url[64], err[256];

    (void)state;
    atomic_store(&co_log_min_level, CO_LOG_ERROR + 1);  /* quiet */
    if (test_redis_start(&redis) != 0) {
        test_redis_stop(&redis);
        return -1;
    }
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", redis.port);
    if (co_redis_parse_url(url, 500, &t, err, sizeof err) != CO_OK ||
        co_redis_init(&t, err, sizeof err) != CO_OK ||
        co_policy_parse(policy_json, strlen(policy_json), &p, err,
                        sizeof err) != CO_OK) {
        fprintf(stderr, "setup: %s\n", err);
        return -1;
    }
    co_policy_install(p);
    memset(&keys, 0, sizeof keys);
    set_key(&keys.challenge[0], "ch-a", 0x11);
    set_key(&keys.challenge[1], "ch-b", 0x22);
    keys.n_challenge = 2;
    set_key(&keys.clearance[0], "c1", 0x33);
    keys.n_clearance = 1;
    set_key(&keys.captcha, "static", 0x44);
    keys.has_captcha = true;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    co_redis_shutdown();
    test_redis_stop(&redis);
    return 0;
}

/* ------------------------------------------------------------ helpers */

/* A challenge token for (quota, ip) signed by key, issued at issued_s. */
static void challenge(const struct co_key *key, const char *quota,
                      const char *ip, uint64_t issued_s, char *tok)
{
    assert_true(co_challenge_issue(key, quota, ip, strlen(ip), issued_s,
                                   CO_CHALLENGE_TTL_S, tok,
                                   CO_TOKEN_MAX) > 0);
}

/* What a solver of the static captcha sends for tok. */
static void solve(const char *tok, char out[65])
{
    uint8_t mac[32];

    assert_int_equal(co_hmac_sha256(keys.captcha.secret, keys.captcha.len,
                                    (const uint8_t *)tok, strlen(tok), mac),
                     CO_OK);
    assert_int_equal(co_hex_encode(mac, 32, out, 65), 64);
}

/* POST body as is; the parsed answer in *doc (caller json_decref's). */
static unsigned post_raw(const struct co_keyring *k, const char *body,
                         json_t **doc)
{
    struct co_request req = {
        .method = "POST",
        .path = "/v1/challenge/verify",
        .content_type = "application/json",
        .body = (const uint8_t *)body,
        .body_len = strlen(body),
    };
    struct co_response resp = {0};
    unsigned status;

    co_challenge_verify(k, &req, &resp);
    status = resp.status;
    assert_non_null(resp.body);
    *doc = json_loadb((const char *)resp.body, resp.body_len, 0, NULL);
    assert_non_null(*doc);
    assert_string_equal(resp.content_type, status == 200
                        ? "application/json" : "application/problem+json");
    co_response_clear(&resp);
    return status;
}

static unsigned post(const struct co_keyring *k, const char *tok,
                     const char *response, json_t **doc)
{
    json_t *body = json_pack("{s:s, s:s}", "token", tok, "response",
                             response);
    char *text = json_dumps(body, JSON_COMPACT);
    unsigned status = post_raw(k, text, doc);

    free(text);
    json_decref(body);
    return status;
}

/* Expect a problem with this status and detail for (tok, response). */
static void expect_refused(const struct co_keyring *k, const char *tok,
                           const char *response, unsigned want,
                           const char *detail)
{
    json_t *doc;
    unsigned status = post(k, tok, response, &doc);

    assert_int_equal(status, want);
    assert_int_equal(json_integer_value(json_object_get(doc, "status")),
                     want);
    assert_string_equal(json_string_value(json_object_get(doc, "detail")),
                        detail);
    json_decref(doc);
}

static unsigned long long counter(const atomic_ullong *c)
{
    return atomic_load(c);
}

static long long admin_ttl_ms(const char *key)
{
    redisReply *r = redisCommand(redis.admin, "PTTL %s", key);
    long long v;

    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    v = r->integer;
    freeReplyObject(r);
    return v;
}

static void admin_get(const char *key, char *out, size_t len)
{
    redisReply *r = redisCommand(redis.admin, "GET %s", key);

    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    snprintf(out, len, "%s", r->str);
    freeReplyObject(r);
}

/* ------------------------------------------------------------ the edge */

struct edge {
    void *mem;
    tg_edge *e;
};

static tg_str S(const char *s)
{
    return (tg_str){s, strlen(s)};
}

/* An edge that holds clearance key (kid, secret), enforces the
 * coordinator's own policy, and was told CHALLENGE for (api, ip). */
static void edge_challenged(struct edge *x, const char *kid,
                            const struct co_key *secret, const char *ip)
{
    tg_config cfg = {.edge_id = {"edge-1", 6}, .seed = "0123456789abcdef"};
    Tollgate__V1__SyncResponse m = TOLLGATE__V1__SYNC_RESPONSE__INIT;
    Tollgate__V1__KeyState ks = TOLLGATE__V1__KEY_STATE__INIT, *ksp = &ks;
    struct co_policy *pol = co_policy_current();
    uint64_t now = NOW_S * 1000;
    static uint8_t buf[65536];
    size_t n = tg_edge_size(&cfg);
    tg_request req = {.method = S("GET"), .path = S("/api/x"),
                      .host = S("example.com"), .client_ip = S(ip)};
    tg_decision d;
    long len;

    x->mem = malloc(n);
    assert_non_null(x->mem);
    assert_int_equal(tg_edge_init(x->mem, n, &cfg, &x->e), 0);
    assert_int_equal(tg_add_key(x->e, TG_KEY_CLEARANCE, S(kid),
                                secret->secret, secret->len), 0);
    /* sync 1: the policy arrives */
    len = tg_sync_request(x->e, now, buf, sizeof buf);
    assert_true(len > 0);
    m.acked_seq = 1;
    m.policy = pol->pb;
    m.policy_version = pol->version;
    m.server_time_ms = now;
    n = tollgate__v1__sync_response__pack(&m, buf);
    assert_int_equal(tg_sync_response(x->e, now, buf, n), 0);
    assert_int_equal(tg_policy_version(x->e), pol->version);
    /* the key is seen, then sync 2 says CHALLENGE for it */
    req.now_ms = now + 1;
    assert_int_equal(tg_verify(x->e, &req, &d), 0);
    len = tg_sync_request(x->e, now + 2, buf, sizeof buf);
    assert_true(len > 0);
    {
        Tollgate__V1__SyncRequest *r =
            tollgate__v1__sync_request__unpack(NULL, (size_t)len, buf);

        assert_non_null(r);
        m.acked_seq = r->seq;
        tollgate__v1__sync_request__free_unpacked(r, NULL);
    }
    ks.quota = "api";
    ks.key = (char *)ip;
    ks.action = TOLLGATE__V1__ACTION__ACTION_CHALLENGE;
    ks.reset_ms = 60000;
    ks.challenge_token = "tok";
    m.policy = NULL;
    m.n_states = 1;
    m.states = &ksp;
    n = tollgate__v1__sync_response__pack(&m, buf);
    assert_int_equal(tg_sync_response(x->e, now + 2, buf, n), 0);
    co_policy_release(pol);
}

/* The edge's decision for ip with this Cookie header. */
static tg_kind edge_decides(struct edge *x, const char *ip,
                            const char *cookie)
{
    tg_request req = {.method = S("GET"), .path = S("/api/x"),
                      .host = S("example.com"), .client_ip = S(ip),
                      .cookie = S(cookie), .now_ms = NOW_S * 1000 + 5000};
    tg_decision d;

    assert_int_equal(tg_verify(x->e, &req, &d), 0);
    return d.kind;
}

/* ------------------------------------------------------------ tests */

static void test_solved_challenge_clears_the_key_at_the_edge(void **state)
{
    const char *ip = "198.51.100.23";
    char tok[CO_TOKEN_MAX], ans[65], rkey[128], val[32], cookie[1024];
    unsigned long long ok0 = counter(&co_metrics.challenges_verified_ok);
    struct co_challenge_claims c;
    const char *jws, *set_cookie, *semi;
    struct edge x;
    json_t *doc;
    uint8_t kh[16];

    (void)state;
    challenge(&keys.challenge[0], "api", ip, NOW_S - 10, tok);
    solve(tok, ans);
    assert_int_equal(post(&keys, tok, ans, &doc), 200);
    assert_int_equal(counter(&co_metrics.challenges_verified_ok), ok0 + 1);
    assert_string_equal(json_string_value(json_object_get(doc, "quota")),
                        "api");
    assert_int_equal(json_integer_value(json_object_get(doc, "expires_at")),
                     NOW_S + CLEARANCE_TTL_S);
    jws = json_string_value(json_object_get(doc, "clearance"));
    set_cookie = json_string_value(json_object_get(doc, "cookie"));
    assert_non_null(jws);
    assert_non_null(set_cookie);
    snprintf(cookie, sizeof cookie, "tollgate_clearance=%s; Max-Age=600; "
             "Path=/; HttpOnly; Secure; SameSite=Lax", jws);
    assert_string_equal(set_cookie, cookie);

    /* Redis: the nonce is burnt until past the token's expiry, and the
     * key is marked cleared until the clearance's. */
    assert_int_equal(co_challenge_check(&keys, tok, strlen(tok), NOW_S, &c),
                     CO_OK);
    strcpy(rkey, "tg:{nonce|");
    co_hex_encode(c.nonce, 16, rkey + strlen(rkey), 33);
    strcat(rkey, "}");
    assert_true(admin_ttl_ms(rkey) > (CO_CHALLENGE_TTL_S - 10) * 1000);
    co_challenge_key_hash("api", ip, strlen(ip), kh);
    strcpy(rkey, "tg:{clr|api|");
    co_hex_encode(kh, 16, rkey + strlen(rkey), 33);
    strcat(rkey, "}");
    admin_get(rkey, val, sizeof val);
    assert_int_equal(strtoull(val, NULL, 10), NOW_S + CLEARANCE_TTL_S);
    assert_true(admin_ttl_ms(rkey) > (CLEARANCE_TTL_S - 5) * 1000);
    assert_true(admin_ttl_ms(rkey) <= CLEARANCE_TTL_S * 1000);

    /* The edge: CHALLENGE without the cookie, Allow with the cookie as a
     * browser sends it back (name=value, nothing after ';'). */
    edge_challenged(&x, "c1", &keys.clearance[0], ip);
    assert_int_equal(edge_decides(&x, ip, ""), TG_CHALLENGE);
    semi = strchr(set_cookie, ';');
    snprintf(cookie, sizeof cookie, "theme=dark; %.*s",
             (int)(semi - set_cookie), set_cookie);
    assert_int_equal(edge_decides(&x, ip, cookie), TG_ALLOW);
    free(x.mem);
    json_decref(doc);
}

/* A clearance for another key, or under a kid the edge was not given, is
 * no clearance: the challenge stands. */
static void test_edge_refuses_other_clearances(void **state)
{
    const char *ip = "198.51.100.24";
    char jws[CO_CLEARANCE_MAX], cookie[CO_CLEARANCE_MAX + 32];
    struct co_key unknown_kid = keys.clearance[0];
    struct edge x;
    uint8_t kh[16];

    (void)state;
    edge_challenged(&x, "c1", &keys.clearance[0], ip);
    co_challenge_key_hash("api", ip, strlen(ip), kh);
    assert_true(co_clearance_issue(&keys.clearance[0], "api", kh, NOW_S,
                                   600, jws, sizeof jws) > 0);
    snprintf(cookie, sizeof cookie, "tollgate_clearance=%s", jws);
    assert_int_equal(edge_decides(&x, ip, cookie), TG_ALLOW);
    /* another key */
    co_challenge_key_hash("api", "198.51.100.25", 13, kh);
    assert_true(co_clearance_issue(&keys.clearance[0], "api", kh, NOW_S,
                                   600, jws, sizeof jws) > 0);
    snprintf(cookie, sizeof cookie, "tollgate_clearance=%s", jws);
    assert_int_equal(edge_decides(&x, ip, cookie), TG_CHALLENGE);
    /* the right key and secret, an unknown kid */
    snprintf(unknown_kid.id, sizeof unknown_kid.id, "c9");
    co_challenge_key_hash("api", ip, strlen(ip), kh);
    assert_true(co_clearance_issue(&unknown_kid, "api", kh, NOW_S, 600, jws,
                                   sizeof jws) > 0);
    snprintf(cookie, sizeof cookie, "tollgate_clearance=%s", jws);
    assert_int_equal(edge_decides(&x, ip, cookie), TG_CHALLENGE);
    free(x.mem);
}

static void test_second_use_is_refused(void **state)
{
    char tok[CO_TOKEN_MAX], ans[65];
    unsigned long long reused0 = counter(&co_metrics.challenges_failed_reused);
    json_t *doc;

    (void)state;
    challenge(&keys.challenge[0], "api", "192.0.2.1", NOW_S, tok);
    solve(tok, ans);
    assert_int_equal(post(&keys, tok, ans, &doc), 200);
    json_decref(doc);
    expect_refused(&keys, tok, ans, 409,
                   "challenge token already used");
    expect_refused(&keys, tok, ans, 409,
                   "challenge token already used");
    assert_int_equal(counter(&co_metrics.challenges_failed_reused),
                     reused0 + 2);
}

static void test_expired_and_tampered_tokens(void **state)
{
    char tok[CO_TOKEN_MAX], ans[65];
    unsigned long long exp0 = counter(&co_metrics.challenges_failed_expired);
    unsigned long long inv0 = counter(&co_metrics.challenges_failed_invalid);
    json_t *doc;

    (void)state;
    /* issued CO_CHALLENGE_TTL_S ago: expired this very second */
    challenge(&keys.challenge[0], "api", "192.0.2.2",
              NOW_S - CO_CHALLENGE_TTL_S, tok);
    solve(tok, ans);
    expect_refused(&keys, tok, ans, 403,
                   "challenge token expired");
    /* one second younger: still good */
    challenge(&keys.challenge[0], "api", "192.0.2.2",
              NOW_S - CO_CHALLENGE_TTL_S + 1, tok);
    solve(tok, ans);
    assert_int_equal(post(&keys, tok, ans, &doc), 200);
    json_decref(doc);
    /* tampered, re-solved for the tampered text: the token is refused
     * before the captcha is looked at */
    challenge(&keys.challenge[0], "api", "192.0.2.3", NOW_S, tok);
    tok[5] = tok[5] == 'A' ? 'B' : 'A';
    solve(tok, ans);
    expect_refused(&keys, tok, ans, 403,
                   "invalid challenge token");
    expect_refused(&keys, "", ans, 403,
                   "invalid challenge token");
    assert_int_equal(counter(&co_metrics.challenges_failed_expired), exp0 + 1);
    assert_int_equal(counter(&co_metrics.challenges_failed_invalid), inv0 + 2);
}

static void test_wrong_answer_keeps_the_token(void **state)
{
    char tok[CO_TOKEN_MAX], other[CO_TOKEN_MAX], ans[65], wrong[65];
    unsigned long long cf0 = counter(&co_metrics.challenges_failed_captcha);
    json_t *doc;

    (void)state;
    challenge(&keys.challenge[0], "api", "192.0.2.4", NOW_S, tok);
    solve(tok, ans);
    /* another token's answer, a flipped digit, upper case, empty */
    challenge(&keys.challenge[0], "api", "192.0.2.4", NOW_S, other);
    solve(other, wrong);
    expect_refused(&keys, tok, wrong, 403,
                   "captcha not solved");
    strcpy(wrong, ans);
    wrong[63] = wrong[63] == '0' ? '1' : '0';
    expect_refused(&keys, tok, wrong, 403,
                   "captcha not solved");
    for (size_t i = 0; i < 64; i++)
        wrong[i] = (char)(ans[i] >= 'a' ? ans[i] - 32 : ans[i]);
    wrong[64] = '\0';
    expect_refused(&keys, tok, wrong, 403,
                   "captcha not solved");
    expect_refused(&keys, tok, "", 403,
                   "captcha not solved");
    assert_int_equal(counter(&co_metrics.challenges_failed_captcha), cf0 + 4);
    /* the right answer still works, once */
    assert_int_equal(post(&keys, tok, ans, &doc), 200);
    json_decref(doc);
}

static void test_rotation_key_works(void **state)
{
    char tok[CO_TOKEN_MAX], ans[65];
    struct co_keyring only_b = keys;
    json_t *doc;

    (void)state;
    challenge(&keys.challenge[1], "api", "192.0.2.5", NOW_S, tok);
    solve(tok, ans);
    assert_int_equal(post(&keys, tok, ans, &doc), 200);
    json_decref(doc);
    /* A's tokens die with A */
    only_b.challenge[0] = keys.challenge[1];
    only_b.n_challenge = 1;
    challenge(&keys.challenge[0], "api", "192.0.2.5", NOW_S, tok);
    solve(tok, ans);
    expect_refused(&only_b, tok, ans, 403,
                   "invalid challenge token");
}

static void test_malformed_bodies(void **state)
{
    static const struct {
        const char *body, *detail;
    } cases[] = {
        {"", "body: invalid JSON"},
        {"{", "body: invalid JSON"},
        {"{\"token\": \"a\", \"token\": \"b\", \"response\": \"c\"}",
         "body: invalid JSON"},
        {"[]", "body: must be a JSON object"},
        {"null", "body: must be a JSON object"},
        {"\"token\"", "body: must be a JSON object"},
        {"{}", "token: required"},
        {"{\"response\": \"x\"}", "token: required"},
        {"{\"token\": \"x\"}", "response: required"},
        {"{\"token\": 1, \"response\": \"x\"}", "token: must be a string"},
        {"{\"token\": \"x\", \"response\": null}",
         "response: must be a string"},
        {"{\"token\": \"x\", \"response\": [\"y\"]}",
         "response: must be a string"},
        {"{\"token\": \"x\", \"response\": \"y\", \"extra\": 1}",
         "extra: unknown member"},
    };
    unsigned long long inv0 = counter(&co_metrics.challenges_failed_invalid);

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *doc;
        unsigned status = post_raw(&keys, cases[i].body, &doc);
        const char *detail =
            json_string_value(json_object_get(doc, "detail"));

        if (status != 400 || detail == NULL ||
            strncmp(detail, cases[i].detail, strlen(cases[i].detail)) != 0)
            fail_msg("%s: %u %s", cases[i].body, status,
                     detail ? detail : "(no detail)");
        json_decref(doc);
    }
    /* a bad body is no verification attempt */
    assert_int_equal(counter(&co_metrics.challenges_failed_invalid), inv0);
}

static void test_missing_configuration(void **state)
{
    struct co_keyring k = keys;
    char tok[CO_TOKEN_MAX], ans[65];
    json_t *doc;

    (void)state;
    challenge(&keys.challenge[0], "api", "192.0.2.6", NOW_S, tok);
    solve(tok, ans);
    k.has_captcha = false;
    expect_refused(&k, tok, ans, 503,
                   "no captcha verifier configured");
    k = keys;
    snprintf(k.captcha.id, sizeof k.captcha.id, "hcaptcha");
    expect_refused(&k, tok, ans, 503,
                   "captcha verifier unavailable");
    k = keys;
    k.n_clearance = 0;
    expect_refused(&k, tok, ans, 503,
                   "no clearance key configured");
    /* none of that burnt the token */
    assert_int_equal(post(&keys, tok, ans, &doc), 200);
    json_decref(doc);
}

/* The route: POST only, and only with a JSON body. */
static void test_route(void **state)
{
    const struct co_route *r;
    struct co_response resp = {0};
    char allow[64];

    (void)state;
    assert_int_equal(co_route_lookup("POST", "/v1/challenge/verify", &r,
                                     allow, sizeof allow), CO_OK);
    assert_ptr_equal(r->handler, co_challenge_verify_handle);
    assert_int_equal(co_route_lookup("GET", "/v1/challenge/verify", &r,
                                     allow, sizeof allow), CO_EMETHOD);
    assert_string_equal(allow, "POST");
    assert_int_equal(co_http_precheck("POST", "/v1/challenge/verify",
                                      "application/json; charset=utf-8",
                                      "10", 1024, &r, &resp), CO_OK);
    assert_int_equal(co_http_precheck("POST", "/v1/challenge/verify",
                                      "application/x-www-form-urlencoded",
                                      "10", 1024, &r, &resp), CO_EINVAL);
    assert_int_equal(resp.status, 415);
    co_response_clear(&resp);
}

/* Last: it stops Redis. Fail closed, at once, and again while the
 * connection backs off. */
static void test_redis_down_fails_closed(void **state)
{
    char tok[CO_TOKEN_MAX], ans[65];
    unsigned long long un0 =
        counter(&co_metrics.challenges_failed_unavailable);

    (void)state;
    test_redis_stop(&redis);
    challenge(&keys.challenge[0], "api", "192.0.2.7", NOW_S, tok);
    solve(tok, ans);
    for (int i = 0; i < 3; i++)
        expect_refused(&keys, tok, ans, 503,
                       "cannot record the challenge as used; try again");
    assert_int_equal(counter(&co_metrics.challenges_failed_unavailable),
                     un0 + 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_solved_challenge_clears_the_key_at_the_edge),
        cmocka_unit_test(test_edge_refuses_other_clearances),
        cmocka_unit_test(test_second_use_is_refused),
        cmocka_unit_test(test_expired_and_tampered_tokens),
        cmocka_unit_test(test_wrong_answer_keeps_the_token),
        cmocka_unit_test(test_rotation_key_works),
        cmocka_unit_test(test_malformed_bodies),
        cmocka_unit_test(test_missing_configuration),
        cmocka_unit_test(test_route),
        cmocka_unit_test(test_redis_down_fails_closed),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
