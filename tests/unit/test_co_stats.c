/* test_co_stats.c — GET /v1/stats (stats.c) against a real redis-server:
 * the one-second ring (partial current second, a bucket reused 900 s
 * later), the edge table (stale after max(3 x interval, 5 s), forgotten
 * after 10 min), the top keys (order, the K bound, an override's limit,
 * the window turn: carried, decaying, also from Redis alone), challenges issued and solved through the verify
 * endpoint (matched by key hash), a flush + read round trip, two
 * coordinators summed through Redis, a Redis outage (local answer, counts
 * flushed once Redis is back) and the bearer token check.
 *
 * The wall clock is pinned (--wrap=co_wall_ms); Redis TTLs are relative,
 * so the pinned date does not matter to Redis.
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
#include "test_admin_tokens.h"
#include "test_redis_server.h"

#define T0 1764000030000ULL          /* half a minute in, in ms */

static uint64_t now_ms = T0;

uint64_t __wrap_co_wall_ms(void);
uint64_t __wrap_co_wall_ms(void)
{
    return now_ms;
}

static const char POLICY[] =
    "{\"version\": 3, \"sync_interval_ms\": 1000, \"clearance_ttl_s\": 300,"
    " \"quotas\": ["
    "  {\"name\": \"per-ip\", \"key\": \"ip\", \"limit\": 100,"
    "   \"window_s\": 60, \"action\": \"challenge\","
    "   \"overrides\": {\"vip\": {\"limit\": 1000}}},"
    "  {\"name\": \"dry\", \"key\": \"ip\", \"limit\": 10, \"window_s\": 60,"
    "   \"action\": \"deny\", \"shadow\": true}]}";

static const char KEYS_TEXT[] =
    "challenge c1 "
    "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1\n"
    "clearance k1 "
    "d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1\n"
    "captcha static "
    "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a\n";

static struct test_redis redis;
static const struct co_admin_token viewer = {.name = "viewer"};

/* ------------------------------------------------------------ helpers */

static int group_setup(void **state)
{
    struct co_policy *p;
    char err[256];

    (void)state;
    if (co_policy_parse(POLICY, strlen(POLICY), &p, err, sizeof err) != 0 ||
        co_tokens_parse(TOKENS, strlen(TOKENS), &co_admin_tokens, err,
                        sizeof err) != 0 ||
        co_keys_parse(KEYS_TEXT, strlen(KEYS_TEXT), &co_keys, err,
                      sizeof err) != 0) {
        fprintf(stderr, "setup: %s\n", err);
        return -1;
    }
    co_policy_install(p);
    return test_redis_start_and_connect(&redis);
}

static int group_teardown(void **state)
{
    (void)state;
    co_redis_shutdown();
    test_redis_stop(&redis);
    co_policy_install(NULL);
    co_tokens_free(&co_admin_tokens);
    co_keys_free(&co_keys);
    return 0;
}

/* Every test starts with nothing local, nothing in Redis, at T0. */
static int fresh(void **state)
{
    redisReply *r;

    (void)state;
    co_stats_reset();
    now_ms = T0;
    r = redisCommand(redis.admin, "FLUSHALL");
    freeReplyObject(r);
    return 0;
}

static void sync_at(const char *edge, uint64_t t, uint64_t a, uint64_t d,
                    uint64_t c, uint64_t s)
{
    struct co_stats_sync in = {
        .edge_id = edge, .module_version = "0.1.0", .sent_at_ms = t - 5,
        .policy_version = 3,
        .decisions = {a, d, c, s},
    };

    co_stats_sync_seen(&in, t);
}

static void top_at(const char *quota, const char *key, uint64_t est,
                   uint64_t t)
{
    struct co_policy *p = co_policy_current();

    co_stats_top_key(p, co_policy_find(p, quota), key, est, t);
    co_policy_release(p);
}

static json_t *render(uint64_t t)
{
    json_t *doc = NULL;

    assert_int_equal(co_stats_render(&viewer, t, &doc), CO_OK);
    return doc;
}

static void flush_ok(void)
{
    char err[256];

    if (co_stats_flush(err, sizeof err) != CO_OK)
        fail_msg("flush: %s", err);
}

/* decisions[outcome][i] */
static json_int_t point(json_t *doc, const char *outcome, size_t i)
{
    json_t *d = json_object_get(doc, "decisions");

    assert_int_equal(json_array_size(json_object_get(d, outcome)), 900);
    return json_integer_value(json_array_get(json_object_get(d, outcome), i));
}

static json_int_t sum(json_t *doc, const char *outcome)
{
    json_int_t n = 0;

    for (size_t i = 0; i < 900; i++)
        n += point(doc, outcome, i);
    return n;
}

static json_int_t num(json_t *obj, const char *name)
{
    json_t *v = json_object_get(obj, name);

    assert_true(json_is_integer(v));
    return json_integer_value(v);
}

static const char *str(json_t *obj, const char *name)
{
    json_t *v = json_object_get(obj, name);

    assert_true(json_is_string(v));
    return json_string_value(v);
}

static json_t *quota_top(json_t *doc, size_t i)
{
    return json_object_get(json_array_get(json_object_get(doc, "top_keys"),
                                          i), "keys");
}

/* One entry of "challenges". */
static void assert_challenge(json_t *c, const char *key, json_int_t issued,
                             json_int_t solved, uint64_t first_ms,
                             uint64_t last_ms, const char *last_edge)
{
    assert_string_equal(str(c, "quota"), "per-ip");
    assert_string_equal(str(c, "key"), key);
    assert_int_equal(num(c, "issued"), issued);
    assert_int_equal(num(c, "solved"), solved);
    assert_int_equal(num(c, "first_ms"), first_ms);
    assert_int_equal(num(c, "last_ms"), last_ms);
    assert_string_equal(str(c, "last_edge"), last_edge);
}

static void assert_same(json_t *a, json_t *b, const char *member)
{
    json_t *x = json_object_get(a, member), *y = json_object_get(b, member);

    if (!json_equal(x, y)) {
        char *sx = json_dumps(x, JSON_COMPACT), *sy = json_dumps(y, 0);

        fail_msg("%s differs:\n%.2000s\n%.2000s", member, sx, sy);
    }
}

/* Recorded activity of one made-up coordinator (scale: 1 or 10). */
static void activity(uint64_t scale, const char *edge)
{
    sync_at(edge, T0 - 2000, 1 * scale, 2 * scale, 0, 0);
    sync_at(edge, T0 - 1000, 3 * scale, 0, 1 * scale, 4 * scale);
    top_at("per-ip", "10.0.0.7", 7 * scale, T0 - 1000);
    top_at("per-ip", "vip", 5 * scale, T0 - 1000);
    co_stats_challenge_issued("per-ip", "10.0.0.7", 8, edge, T0 - 1000);
}

/* ------------------------------------------------------------ local */

static void test_ring(void **state)
{
    uint64_t s0 = T0 / 1000, later = T0 + 900 * 1000;
    json_t *doc;

    (void)state;
    sync_at("e/1", T0, 3, 1, 0, 0);
    sync_at("e/1", T0 + 500, 2, 0, 1, 0);
    sync_at("e/1", T0 + 1000, 0, 0, 0, 4);
    doc = render(T0 + 1500);      /* the second T0 + 1 is under way */
    assert_int_equal(num(json_object_get(doc, "decisions"), "from_s"),
                     s0 + 1 - 899);
    assert_int_equal(num(json_object_get(doc, "decisions"), "step_s"), 1);
    assert_int_equal(point(doc, "allowed", 898), 5);
    assert_int_equal(point(doc, "denied", 898), 1);
    assert_int_equal(point(doc, "challenged", 898), 1);
    assert_int_equal(point(doc, "shadow", 898), 0);
    assert_int_equal(point(doc, "shadow", 899), 4);
    assert_int_equal(sum(doc, "allowed"), 5);
    json_decref(doc);

    /* 900 s on, the first second has left the window and its bucket
     * serves the new second: 7, not 5 + 7. */
    doc = render(later);
    assert_int_equal(sum(doc, "allowed"), 0);
    assert_int_equal(point(doc, "shadow", 0), 4);
    json_decref(doc);
    sync_at("e/1", later + 10, 7, 0, 0, 0);
    doc = render(later + 20);
    assert_int_equal(point(doc, "allowed", 899), 7);
    assert_int_equal(sum(doc, "allowed"), 7);
    assert_int_equal(point(doc, "shadow", 0), 4);
    json_decref(doc);
}

static void test_edges(void **state)
{
    struct co_stats_sync b = {
        .edge_id = "edge-b/2", .module_version = "v 1\x01\xff",
        .sent_at_ms = T0 + 9000, .policy_version = 2, .degraded = true,
    };
    json_t *doc, *e;

    (void)state;
    sync_at("edge-a/1", T0, 1, 0, 0, 0);
    co_stats_sync_seen(&b, T0 + 2000);   /* sent "in the future": lag 0 */
    doc = render(T0 + 7000);
    assert_int_equal(num(doc, "edges_stale_after_ms"), 5000);
    assert_int_equal(json_array_size(json_object_get(doc, "edges")), 2);
    e = json_array_get(json_object_get(doc, "edges"), 0);  /* newest */
    assert_string_equal(str(e, "id"), "edge-b/2");
    assert_int_equal(num(e, "last_seen_ms"), T0 + 2000);
    assert_int_equal(num(e, "age_ms"), 5000);
    assert_int_equal(num(e, "lag_ms"), 0);
    assert_string_equal(str(e, "module_version"), "v?1??");
    assert_int_equal(num(e, "policy_version"), 2);
    assert_true(json_is_true(json_object_get(e, "degraded")));
    assert_true(json_is_false(json_object_get(e, "stale")));
    e = json_array_get(json_object_get(doc, "edges"), 1);
    assert_string_equal(str(e, "id"), "edge-a/1");
    assert_int_equal(num(e, "lag_ms"), 5);
    assert_string_equal(str(e, "module_version"), "0.1.0");
    assert_true(json_is_false(json_object_get(e, "degraded")));
    assert_true(json_is_true(json_object_get(e, "stale")));
    json_decref(doc);

    /* Ten minutes after its last sync an edge is gone. */
    doc = render(T0 + 2000 + 600000);
    assert_int_equal(json_array_size(json_object_get(doc, "edges")), 1);
    e = json_array_get(json_object_get(doc, "edges"), 0);
    assert_string_equal(str(e, "id"), "edge-b/2");
    json_decref(doc);
}

static void test_top_keys(void **state)
{
    char key[16];
    json_t *doc, *keys, *k;

    (void)state;
    for (unsigned i = 1; i <= 12; i++) {
        snprintf(key, sizeof key, "10.0.0.%u", i);
        top_at("per-ip", key, i, T0 + i);
    }
    top_at("per-ip", "vip", 50, T0 + 20);
    top_at("per-ip", "vip", 40, T0 + 21);     /* lower: the max stays */
    top_at("per-ip", "10.0.0.99", 2, T0 + 22);    /* below the K-th */
    top_at("dry", "x", 3, T0 + 23);
    doc = render(T0 + 30);
    assert_int_equal(json_array_size(json_object_get(doc, "top_keys")), 2);
    k = json_array_get(json_object_get(doc, "top_keys"), 0);
    assert_string_equal(str(k, "quota"), "per-ip");
    assert_int_equal(num(k, "window_s"), 60);
    assert_true(json_is_false(json_object_get(k, "shadow")));
    keys = quota_top(doc, 0);
    assert_int_equal(json_array_size(keys), CO_STATS_TOP_K);
    k = json_array_get(keys, 0);
    assert_string_equal(str(k, "key"), "vip");
    assert_int_equal(num(k, "count"), 50);
    assert_int_equal(num(k, "limit"), 1000);          /* the override */
    for (size_t i = 1; i < CO_STATS_TOP_K; i++) {
        k = json_array_get(keys, i);
        snprintf(key, sizeof key, "10.0.0.%zu", 13 - i);
        assert_string_equal(str(k, "key"), key);
        assert_int_equal(num(k, "count"), 13 - i);
        assert_int_equal(num(k, "limit"), 100);
    }
    k = json_array_get(json_object_get(doc, "top_keys"), 1);
    assert_true(json_is_true(json_object_get(k, "shadow")));
    assert_int_equal(num(json_array_get(quota_top(doc, 1), 0), "count"), 3);
    json_decref(doc);
}

/* keys[i] of quota 0 is (key, count). */
static void assert_top(json_t *doc, size_t i, const char *key,
                       json_int_t count)
{
    json_t *k = json_array_get(quota_top(doc, 0), i);

    assert_non_null(k);
    assert_string_equal(str(k, "key"), key);
    assert_int_equal(num(k, "count"), count);
}

/* W0: the window of T0 (60 s; it ends at T0 + 30 s), W1 and W2 the next. */
#define W1 (T0 + 30000)
#define W2 (W1 + 60000)

/* The list survives the window turn: the previous window's keys stay,
 * their counts decayed as sync.lua decays the previous window (x time
 * left / window, rounded up), until a sync of the new window answers
 * for the key or its estimate reaches 0 two windows on; the same from
 * Redis alone. The clock is injected: nothing here depends on when the
 * test runs. */
static void test_top_keys_window_turn(void **state)
{
    char key[16];
    json_t *doc, *before, *after;

    (void)state;
    top_at("per-ip", "hot", 90, T0);
    top_at("per-ip", "warm", 30, T0 + 1);
    doc = render(W1 - 1);                        /* the end of W0 */
    assert_int_equal(json_array_size(quota_top(doc, 0)), 2);
    assert_top(doc, 0, "hot", 90);
    assert_top(doc, 1, "warm", 30);
    json_decref(doc);

    doc = render(W1);                            /* the turn: nothing lost */
    assert_int_equal(json_array_size(quota_top(doc, 0)), 2);
    assert_top(doc, 0, "hot", 90);
    assert_top(doc, 1, "warm", 30);
    json_decref(doc);

    doc = render(W1 + 15000);                    /* 3/4 of W1 left */
    assert_top(doc, 0, "hot", 68);               /* ceil(67.5) */
    assert_top(doc, 1, "warm", 23);              /* ceil(22.5) */
    json_decref(doc);

    /* Through Redis: the same figures once only Redis knows them. */
    now_ms = T0 + 2;
    flush_ok();
    before = render(W1 + 15000);
    co_stats_reset();
    after = render(W1 + 15000);
    assert_same(before, after, "top_keys");
    json_decref(before);
    json_decref(after);

    /* A sync of W1 answers for warm: its estimate (the decayed W0 count
     * plus W1's) replaces the carried figure; hot keeps decaying. */
    top_at("per-ip", "warm", 40, W1 + 15001);
    doc = render(W1 + 54000);                    /* 1/10 of W1 left */
    assert_int_equal(json_array_size(quota_top(doc, 0)), 2);
    assert_top(doc, 0, "warm", 40);
    assert_top(doc, 1, "hot", 9);
    json_decref(doc);

    /* W2: hot's W0 figure is gone, warm's W1 figure is carried. */
    doc = render(W2 + 30000);
    assert_int_equal(json_array_size(quota_top(doc, 0)), 1);
    assert_top(doc, 0, "warm", 20);
    json_decref(doc);
    doc = render(W2 + 60000);                    /* decayed to 0: gone */
    assert_int_equal(json_array_size(quota_top(doc, 0)), 0);
    json_decref(doc);

    /* K keys of W1 fill the table without pushing the carried W1 figures
     * out: a key heavy in W1 outranks W2's light ones until it decays. */
    co_stats_reset();
    for (unsigned i = 0; i < CO_STATS_TOP_K; i++) {
        snprintf(key, sizeof key, "old-%u", i);
        top_at("per-ip", key, 100 + 2 * i, W1 + 1000 + i);
    }
    for (unsigned i = 0; i < CO_STATS_TOP_K; i++) {
        snprintf(key, sizeof key, "new-%u", i);
        top_at("per-ip", key, 1 + i, W2 + 1000 + i);
    }
    doc = render(W2 + 30000);                    /* half of W2 left */
    assert_int_equal(json_array_size(quota_top(doc, 0)), CO_STATS_TOP_K);
    for (unsigned i = 0; i < CO_STATS_TOP_K; i++) {
        snprintf(key, sizeof key, "old-%u", CO_STATS_TOP_K - 1 - i);
        assert_top(doc, i, key, 50 + CO_STATS_TOP_K - 1 - i);
    }
    json_decref(doc);
    top_at("per-ip", "new-9", 60, W2 + 30001);
    doc = render(W2 + 30002);
    assert_top(doc, 0, "new-9", 60);
    json_decref(doc);
}

/* POST /v1/challenge/verify with the static captcha's answer. */
static unsigned verify(const char *token)
{
    struct co_response resp = {0};
    uint8_t mac[32];
    char hex[65], body[1024];
    struct co_request req = {.method = "POST",
                             .path = "/v1/challenge/verify"};
    unsigned status;

    co_hmac_sha256(co_keys.captcha.secret, co_keys.captcha.len,
                   (const uint8_t *)token, strlen(token), mac);
    co_hex_encode(mac, 32, hex, sizeof hex);
    snprintf(body, sizeof body, "{\"token\": \"%s\", \"response\": \"%s\"}",
             token, hex);
    req.body = (const uint8_t *)body;
    req.body_len = strlen(body);
    co_challenge_verify_handle(&req, &resp);
    status = resp.status;
    co_response_clear(&resp);
    return status;
}

static void test_challenges(void **state)
{
    char tok[CO_TOKEN_MAX], other[CO_TOKEN_MAX];
    json_t *doc, *c;

    (void)state;
    co_stats_challenge_issued("per-ip", "10.0.0.7", 8, "edge-a/1", T0);
    now_ms = T0 + 400;
    assert_true(co_challenge_token("per-ip", "10.0.0.7", 8, now_ms / 1000,
                                   300, tok, sizeof tok) > 0);
    co_stats_challenge_issued("per-ip", "10.0.0.7", 8, "edge-b/1", now_ms);
    /* A token this coordinator never counted (another one issued it). */
    assert_true(co_challenge_token("per-ip", "10.9.9.9", 8, now_ms / 1000,
                                   300, other, sizeof other) > 0);
    now_ms = T0 + 900;
    assert_int_equal(verify(tok), 200);
    now_ms = T0 + 1200;
    assert_int_equal(verify(other), 200);
    assert_int_equal(verify(tok), 409);        /* used: no second solve */

    doc = render(T0 + 2000);
    assert_int_equal(json_array_size(json_object_get(doc, "challenges")), 2);
    c = json_array_get(json_object_get(doc, "challenges"), 0);   /* newest */
    assert_challenge(c, "", 0, 1, T0 + 1200, T0 + 1200, "");
    c = json_array_get(json_object_get(doc, "challenges"), 1);
    assert_challenge(c, "10.0.0.7", 2, 1, T0, T0 + 900, "edge-b/1");
    json_decref(doc);
}

/* ------------------------------------------------------------ Redis */

/* What Redis gives back after a flush is what was counted here. */
static void test_round_trip(void **state)
{
    json_t *before, *after;

    (void)state;
    activity(1, "edge-a/1");
    co_stats_challenge_solved("per-ip", (const uint8_t *)"0123456789abcdef",
                              T0 - 500);
    before = render(T0);
    assert_true(json_is_true(json_object_get(before, "merged")));
    assert_int_equal(sum(before, "allowed"), 4);
    flush_ok();
    co_stats_reset();                 /* only Redis knows now */
    after = render(T0);
    assert_true(json_is_true(json_object_get(after, "merged")));
    assert_true(json_is_true(json_object_get(json_object_get(after, "redis"),
                                             "up")));
    assert_same(before, after, "decisions");
    assert_same(before, after, "edges");
    assert_same(before, after, "top_keys");
    assert_same(before, after, "challenges");
    json_decref(before);
    json_decref(after);
}

/* Two coordinators: one flushes, the other's counts are summed in, both
 * while still local and once flushed. */
static void test_two_coordinators(void **state)
{
    json_t *doc, *e, *c;

    (void)state;
    activity(1, "edge-a/1");
    flush_ok();
    co_stats_reset();                 /* now "the other coordinator" */
    activity(10, "edge-b/1");
    sync_at("edge-a/1", T0 - 500, 0, 0, 0, 0);    /* edge-a moved here */
    for (int flushed = 0; flushed < 2; flushed++) {
        if (flushed)
            flush_ok();
        doc = render(T0);
        assert_int_equal(sum(doc, "allowed"), 44);
        assert_int_equal(point(doc, "denied", 897), 22);
        assert_int_equal(point(doc, "shadow", 898), 44);
        assert_int_equal(json_array_size(json_object_get(doc, "edges")), 2);
        e = json_array_get(json_object_get(doc, "edges"), 0);
        assert_string_equal(str(e, "id"), "edge-a/1");
        assert_int_equal(num(e, "last_seen_ms"), T0 - 500);
        e = json_array_get(quota_top(doc, 0), 0);
        assert_string_equal(str(e, "key"), "10.0.0.7");
        assert_int_equal(num(e, "count"), 70);    /* max, not sum */
        c = json_array_get(json_object_get(doc, "challenges"), 0);
        assert_int_equal(json_array_size(json_object_get(doc,
                                                         "challenges")), 1);
        assert_int_equal(num(c, "issued"), 2);
        assert_string_equal(str(c, "last_edge"), "edge-b/1");
        json_decref(doc);
    }
    /* Flushing again adds nothing: deltas are sent once. */
    flush_ok();
    doc = render(T0);
    assert_int_equal(sum(doc, "allowed"), 44);
    json_decref(doc);
}

/* A solve recorded (and flushed) by one coordinator meets the issue
 * recorded by another: one entry, named by the issuer, with its edge. */
static void test_solve_meets_issue(void **state)
{
    uint8_t kh[16];
    json_t *doc, *c;

    (void)state;
    co_challenge_key_hash("per-ip", "10.0.0.8", 8, kh);
    co_stats_challenge_solved("per-ip", kh, T0 + 500);
    flush_ok();
    co_stats_reset();
    co_stats_challenge_issued("per-ip", "10.0.0.8", 8, "edge-b/1", T0);
    for (int flushed = 0; flushed < 2; flushed++) {
        if (flushed) {
            flush_ok();
            co_stats_reset();
        }
        doc = render(T0 + 1000);
        assert_int_equal(json_array_size(json_object_get(doc,
                                                         "challenges")), 1);
        c = json_array_get(json_object_get(doc, "challenges"), 0);
        assert_challenge(c, "10.0.0.8", 1, 1, T0, T0 + 500, "edge-b/1");
        json_decref(doc);
    }
}

static const char *get_header(void *conn, const char *name)
{
    return strcmp(name, "Authorization") == 0 ? conn : NULL;
}

/* GET /v1/stats through the handler; *doc is its JSON (or NULL). */
static unsigned get_stats(const char *authorization, json_t **doc,
                          struct co_response *resp)
{
    struct co_request req = {.method = "GET", .path = "/v1/stats",
                             .header = get_header,
                             .conn = (void *)authorization};

    co_response_clear(resp);
    co_stats_handle(&req, resp);
    *doc = json_loadb((const char *)resp->body, resp->body_len, 0, NULL);
    return resp->status;
}

static void test_redis_outage(void **state)
{
    struct co_response resp = {0};
    char err[256];
    json_t *doc;
    int rc = CO_EREDIS;

    (void)state;
    sync_at("edge-a/1", T0 - 3000, 2, 0, 0, 0);
    test_redis_stop(&redis);
    sync_at("edge-a/1", T0 - 2000, 5, 0, 0, 0);
    assert_int_equal(get_stats("Bearer " READ_TOKEN, &doc, &resp), 200);
    assert_string_equal(resp.content_type, "application/json");
    assert_true(json_is_false(json_object_get(doc, "merged")));
    assert_true(json_is_false(json_object_get(json_object_get(doc, "redis"),
                                              "up")));
    assert_int_equal(sum(doc, "allowed"), 7);
    json_decref(doc);
    assert_int_not_equal(co_stats_flush(err, sizeof err), CO_OK);
    sync_at("edge-a/1", T0 - 1000, 11, 0, 0, 0);

    /* Back (empty, on the same port): what was counted meanwhile lands. */
    assert_int_equal(test_redis_start_on(&redis), 0);
    for (int i = 0; i < 200 && rc != CO_OK; i++) {
        struct timespec pause = {.tv_sec = 0, .tv_nsec = 50 * 1000 * 1000};

        rc = co_stats_flush(err, sizeof err);
        if (rc != CO_OK)
            nanosleep(&pause, NULL);
    }
    assert_int_equal(rc, CO_OK);
    co_stats_reset();
    assert_int_equal(get_stats("Bearer " READ_TOKEN, &doc, &resp), 200);
    assert_true(json_is_true(json_object_get(doc, "merged")));
    assert_true(json_is_true(json_object_get(json_object_get(doc, "redis"),
                                             "up")));
    assert_int_equal(sum(doc, "allowed"), 18);
    assert_int_equal(point(doc, "allowed", 899 - 3), 2);
    assert_int_equal(point(doc, "allowed", 899 - 1), 11);
    json_decref(doc);
    co_response_clear(&resp);
}

static void test_auth(void **state)
{
    struct co_response resp = {0};
    json_t *doc, *v;

    (void)state;
    assert_int_equal(get_stats(NULL, &doc, &resp), 401);
    assert_string_equal(resp.extra.name, "WWW-Authenticate");
    assert_string_equal(resp.extra.value, "Bearer realm=\"tollgate\"");
    assert_string_equal(resp.content_type, "application/problem+json");
    json_decref(doc);
    assert_int_equal(get_stats("Bearer nope", &doc, &resp), 401);
    json_decref(doc);

    assert_int_equal(get_stats("Bearer " READ_TOKEN, &doc, &resp), 200);
    assert_string_equal(resp.headers[0], "Cache-Control");
    assert_string_equal(resp.headers[1], "no-store");
    assert_null(resp.headers[2]);
    v = json_object_get(doc, "viewer");
    assert_string_equal(str(v, "name"), "viewer");
    assert_string_equal(str(v, "role"), "read");
    assert_int_equal(num(doc, "now_ms"), T0);
    assert_string_equal(str(json_object_get(doc, "coordinator"), "version"),
                        CO_VERSION);
    assert_int_equal(num(json_object_get(doc, "policy"), "version"), 3);
    assert_int_equal(num(json_object_get(doc, "policy"), "sync_interval_ms"),
                     1000);
    json_decref(doc);
    assert_int_equal(get_stats("Bearer " ADMIN_TOKEN, &doc, &resp), 200);
    assert_string_equal(str(json_object_get(doc, "viewer"), "role"),
                        "admin");
    json_decref(doc);
    co_response_clear(&resp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_ring, fresh),
        cmocka_unit_test_setup(test_edges, fresh),
        cmocka_unit_test_setup(test_top_keys, fresh),
        cmocka_unit_test_setup(test_top_keys_window_turn, fresh),
        cmocka_unit_test_setup(test_challenges, fresh),
        cmocka_unit_test_setup(test_round_trip, fresh),
        cmocka_unit_test_setup(test_two_coordinators, fresh),
        cmocka_unit_test_setup(test_solve_meets_issue, fresh),
        cmocka_unit_test_setup(test_auth, fresh),
        cmocka_unit_test_setup(test_redis_outage, fresh),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
