/* test_co_admin.c — the admin handlers (admin.c, admin_policy.c,
 * admin_quotas.c, admin_keys.c) called as plain functions against a real
 * redis-server and the policy store: every status the API promises (200,
 * 400, 401, 403, 404, 405, 412, 428), the ETag, the key inspection
 * arithmetic (checked against what sync.lua itself estimates on the same
 * data) and the audit trail of each write. Each test starts from an empty
 * Redis and version 1 of DOC, so none depends on another's writes.
 */
// test-ldflags: -Wl,--wrap=co_wall_ms
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "tollgated.h"
#include "test_admin_tokens.h"
#include "test_redis_server.h"

static const char DOC[] =
    "{\"version\": 1, \"quotas\": [{\"name\": \"per-ip\", \"key\": \"ip\","
    " \"limit\": 10, \"window_s\": 60, \"action\": \"challenge\"}]}";

static struct test_redis redis;

/* The wall clock: pinned while pinned_ms != 0, else the real one. */
static uint64_t pinned_ms;
uint64_t __real_co_wall_ms(void);
uint64_t __wrap_co_wall_ms(void);

uint64_t __wrap_co_wall_ms(void)
{
    return pinned_ms != 0 ? pinned_ms : __real_co_wall_ms();
}

/* A request's headers for co_request_header(). */
struct hdrs {
    const char *authorization;
    const char *if_match;
};

static const char *get_header(void *conn, const char *name)
{
    const struct hdrs *h = conn;

    if (strcmp(name, "Authorization") == 0)
        return h->authorization;
    if (strcmp(name, "If-Match") == 0)
        return h->if_match;
    return NULL;
}

/* Route (method, path) and call its handler with body and headers, as
 * http.c would. token: "admin", "read", or anything else verbatim. */
static void call(const char *method, const char *path, const char *token,
                 const char *if_match, const char *body,
                 struct co_response *resp)
{
    char auth[128];
    struct hdrs h = {.authorization = auth, .if_match = if_match};
    struct co_route_params params;
    const struct co_route *r;
    char allow[64], url[512];
    const char *q;
    struct co_request req = {
        .method = method,
        .body = (const uint8_t *)body,
        .body_len = body ? strlen(body) : 0,
        .content_type = "application/json",
        .header = get_header,
        .conn = &h,
        .params = &params,
    };

    co_response_clear(resp);
    if (token == NULL)
        h.authorization = NULL;
    else
        snprintf(auth, sizeof auth, "Bearer %s",
                 strcmp(token, "admin") == 0 ? ADMIN_TOKEN
                 : strcmp(token, "read") == 0 ? READ_TOKEN : token);
    snprintf(url, sizeof url, "%s", path);
    q = strchr(path, '?');
    if (q != NULL) {
        url[q - path] = '\0';
        req.query = q + 1;
    }
    req.path = url;
    if (co_route_match(method, url, &r, &params, allow, sizeof allow) !=
        CO_OK)
        fail_msg("no route for %s %s", method, url);
    r->handler(&req, resp);
}

static json_t *body_json(const struct co_response *resp)
{
    json_t *j = json_loadb((const char *)resp->body, resp->body_len, 0,
                           NULL);

    if (j == NULL)
        fail_msg("not JSON: %.*s", (int)resp->body_len, resp->body);
    return j;
}

static void assert_status(const struct co_response *resp, unsigned status,
                          const char *detail_part)
{
    if (resp->status != status)
        fail_msg("status %u, want %u: %.*s", resp->status, status,
                 (int)resp->body_len, resp->body);
    if (detail_part != NULL) {
        json_t *j = body_json(resp);
        const char *d = json_string_value(json_object_get(j, "detail"));

        assert_string_equal(resp->content_type, "application/problem+json");
        if (d == NULL || strstr(d, detail_part) == NULL)
            fail_msg("detail \"%s\" lacks \"%s\"", d ? d : "", detail_part);
        json_decref(j);
    }
}

static json_int_t member_int(const struct co_response *resp, const char *k)
{
    json_t *j = body_json(resp);
    json_int_t v = json_integer_value(json_object_get(j, k));

    json_decref(j);
    return v;
}

static int setup(void **state)
{
    char err[256];

    (void)state;
    if (test_redis_start_and_connect(&redis) != 0)
        return -1;
    if (co_tokens_parse(TOKENS, strlen(TOKENS), &co_admin_tokens, err,
                        sizeof err) != CO_OK)
        return -1;
    return 0;
}

/* Before each test: an empty Redis, the store seeded with DOC as version
 * 1 (one audit entry, "seed"), the real clock. */
static int fresh_store(void **state)
{
    struct co_policy *p;
    redisReply *r;
    char err[256];
    int rc = -1;

    (void)state;
    pinned_ms = 0;
    co_store_stop();
    r = redisCommand(redis.admin, "FLUSHALL");
    if (r == NULL || r->type == REDIS_REPLY_ERROR)
        goto done;
    if (co_policy_parse(DOC, strlen(DOC), &p, err, sizeof err) != CO_OK)
        goto done;
    if (co_store_start(p, 1000, err, sizeof err) == CO_OK)
        rc = 0;
    co_policy_release(p);
done:
    if (r != NULL)
        freeReplyObject(r);
    return rc;
}

static int teardown(void **state)
{
    (void)state;
    co_store_stop();
    co_policy_install(NULL);
    co_tokens_free(&co_admin_tokens);
    co_redis_shutdown();
    test_redis_stop(&redis);
    return 0;
}

static void test_auth(void **state)
{
    struct co_response resp = {0};
    struct co_tokens saved = co_admin_tokens;

    (void)state;
    call("GET", "/v1/policy", NULL, NULL, NULL, &resp);
    assert_status(&resp, 401, "bearer token");
    assert_string_equal(resp.extra.name, "WWW-Authenticate");
    assert_string_equal(resp.extra.value, "Bearer realm=\"tollgate\"");
    call("GET", "/v1/audit", "wrong", NULL, NULL, &resp);
    assert_status(&resp, 401, NULL);
    call("PUT", "/v1/policy", "read", "1", DOC, &resp);
    assert_status(&resp, 403, "only read");
    call("DELETE", "/v1/keys/per-ip/1.2.3.4", "read", NULL, NULL, &resp);
    assert_status(&resp, 403, NULL);
    call("PUT", "/v1/quotas/x/overrides/k", "read", NULL, "{\"limit\":1}",
         &resp);
    assert_status(&resp, 403, NULL);
    /* without --admin-tokens: everything 401 */
    memset(&co_admin_tokens, 0, sizeof co_admin_tokens);
    call("GET", "/v1/policy", ADMIN_TOKEN, NULL, NULL, &resp);
    assert_status(&resp, 401, "--admin-tokens");
    co_admin_tokens = saved;
    co_response_clear(&resp);
}

static void test_policy_put(void **state)
{
    struct co_response resp = {0};
    json_t *j;

    (void)state;
    call("GET", "/v1/policy", "read", NULL, NULL, &resp);
    assert_status(&resp, 200, NULL);
    assert_string_equal(resp.etag, "\"1\"");
    assert_int_equal(member_int(&resp, "version"), 1);

    call("PUT", "/v1/policy", "admin", NULL, DOC, &resp);
    assert_status(&resp, 428, "If-Match");
    call("PUT", "/v1/policy", "admin", "one", DOC, &resp);
    assert_status(&resp, 400, "If-Match");
    call("PUT", "/v1/policy", "admin", "1",
         "{\"quotas\": [{\"name\": \"q\", \"key\": \"ip\", \"limit\": 5, "
         "\"window_s\": 1, \"action\": \"deny\", \"overrides\": "
         "{\"10.0.0.1\": {\"limit\": 0}}}]}", &resp);
    assert_status(&resp, 400,
                  "quotas[0].overrides[\"10.0.0.1\"].limit: must be > 0");
    call("PUT", "/v1/policy", "admin", "1", "{\"quotas\": [", &resp);
    assert_status(&resp, 400, "line 1");
    call("PUT", "/v1/policy", "admin", "7", DOC, &resp);
    assert_status(&resp, 412, "current version is 1");
    call("PUT", "/v1/policy", "admin", "\"1\"",
         "{\"version\": 99, \"expected_edges\": 2, \"quotas\": [{\"name\": "
         "\"per-ip\", \"key\": \"ip\", \"limit\": 20, \"window_s\": 60, "
         "\"action\": \"challenge\", \"burst\": 5}]}", &resp);
    assert_status(&resp, 200, NULL);
    assert_string_equal(resp.etag, "\"2\"");
    j = body_json(&resp);
    assert_int_equal(json_integer_value(json_object_get(j, "version")), 2);
    assert_int_equal(json_integer_value(json_object_get(
        json_array_get(json_object_get(j, "quotas"), 0), "burst")), 5);
    json_decref(j);
    /* installed here at once */
    {
        struct co_policy *p = co_policy_current();

        assert_int_equal(p->version, 2);
        assert_int_equal(co_policy_find(p, "per-ip")->limit, 20);
        co_policy_release(p);
    }
    call("GET", "/v1/policy/versions", "read", NULL, NULL, &resp);
    assert_status(&resp, 200, NULL);
    assert_int_equal(member_int(&resp, "current"), 2);
    call("GET", "/v1/policy/versions/1", "read", NULL, NULL, &resp);
    assert_status(&resp, 200, NULL);
    assert_string_equal(resp.etag, "\"1\"");
    call("GET", "/v1/policy/versions/99", "read", NULL, NULL, &resp);
    assert_status(&resp, 404, "no such version");
    call("GET", "/v1/policy/versions/x", "read", NULL, NULL, &resp);
    assert_status(&resp, 404, NULL);
    call("POST", "/v1/policy/rollback", "admin", NULL, "{\"to\": 99}", &resp);
    assert_status(&resp, 404, NULL);
    call("POST", "/v1/policy/rollback", "admin", NULL, "{\"to\": 0}", &resp);
    assert_status(&resp, 400, "to:");
    call("POST", "/v1/policy/rollback", "admin", NULL, "{\"x\": 1}", &resp);
    assert_status(&resp, 400, "x: unknown");
    call("POST", "/v1/policy/rollback", "admin", "1", "{\"to\": 1}", &resp);
    assert_status(&resp, 412, "current version is 2");
    call("POST", "/v1/policy/rollback", "admin", "2", "{\"to\": 1}", &resp);
    assert_status(&resp, 200, NULL);
    assert_int_equal(member_int(&resp, "version"), 3);
    assert_string_equal(resp.etag, "\"3\"");
    co_response_clear(&resp);
}

/* Versions 2 and 3: a put and a rollback to 1, as an operator would. */
static void two_writes(struct co_response *resp)
{
    call("PUT", "/v1/policy", "admin", "1", DOC, resp);
    assert_status(resp, 200, NULL);
    call("POST", "/v1/policy/rollback", "admin", "2", "{\"to\": 1}", resp);
    assert_status(resp, 200, NULL);
}

static void test_quotas_and_overrides(void **state)
{
    struct co_response resp = {0};
    json_t *j;

    (void)state;
    two_writes(&resp);
    call("GET", "/v1/quotas/nope", "read", NULL, NULL, &resp);
    assert_status(&resp, 404, "no such quota");
    call("PUT", "/v1/quotas/login", "admin", NULL,
         "{\"key\": \"ip\", \"limit\": 0, \"window_s\": 60, \"action\": "
         "\"deny\"}", &resp);
    assert_status(&resp, 400, "limit: must be > 0");
    call("PUT", "/v1/quotas/login", "admin", NULL,
         "{\"name\": \"other\", \"key\": \"ip\", \"limit\": 3, "
         "\"window_s\": 60, \"action\": \"deny\"}", &resp);
    assert_status(&resp, 400, "name:");
    call("PUT", "/v1/quotas/login", "admin", "2",
         "{\"key\": \"ip\", \"limit\": 3, \"window_s\": 60, \"action\": "
         "\"deny\"}", &resp);
    assert_status(&resp, 412, "current version is 3");
    call("PUT", "/v1/quotas/login", "admin", NULL,
         "{\"key\": \"ip\", \"limit\": 3, \"window_s\": 60, \"action\": "
         "\"deny\"}", &resp);
    assert_status(&resp, 200, NULL);
    j = body_json(&resp);
    assert_int_equal(json_integer_value(json_object_get(j, "version")), 4);
    assert_string_equal(json_string_value(json_object_get(
        json_object_get(j, "quota"), "name")), "login");
    json_decref(j);
    call("GET", "/v1/quotas/login", "read", NULL, NULL, &resp);
    assert_status(&resp, 200, NULL);
    assert_int_equal(member_int(&resp, "limit"), 3);

    call("PUT", "/v1/quotas/nope/overrides/k", "admin", NULL,
         "{\"limit\": 1}", &resp);
    assert_status(&resp, 404, "no such quota");
    call("PUT", "/v1/quotas/login/overrides/10.0.0.1%2F8", "admin", NULL,
         "{\"limit\": 0}", &resp);
    assert_status(&resp, 400, "overrides[\"10.0.0.1/8\"].limit: must be > 0");
    call("PUT", "/v1/quotas/login/overrides/10.0.0.1%2F8", "admin", "4",
         "{\"limit\": 9}", &resp);
    assert_status(&resp, 200, NULL);
    assert_int_equal(member_int(&resp, "version"), 5);
    {
        struct co_policy *p = co_policy_current();

        assert_int_equal(co_quota_limit(co_policy_find(p, "login"),
                                        "10.0.0.1/8"), 9);
        co_policy_release(p);
    }
    call("DELETE", "/v1/quotas/login/overrides/absent", "admin", NULL, NULL,
         &resp);
    assert_status(&resp, 404, "no such override");
    call("DELETE", "/v1/quotas/login/overrides/10.0.0.1%2F8", "admin", NULL,
         NULL, &resp);
    assert_status(&resp, 200, NULL);
    assert_int_equal(member_int(&resp, "version"), 6);
    call("DELETE", "/v1/quotas/login", "admin", NULL, NULL, &resp);
    assert_status(&resp, 200, NULL);
    assert_int_equal(member_int(&resp, "version"), 7);
    call("DELETE", "/v1/quotas/login", "admin", NULL, NULL, &resp);
    assert_status(&resp, 404, "no such quota");
    co_response_clear(&resp);
}

static void test_keys(void **state)
{
    struct co_response resp = {0};
    uint64_t idx = co_wall_ms() / 60000;
    redisReply *r;
    json_t *j;

    (void)state;
    call("GET", "/v1/keys/nope/1.2.3.4", "read", NULL, NULL, &resp);
    assert_status(&resp, 404, "no such quota");
    call("GET", "/v1/keys/per-ip/1.2.3.4", "read", NULL, NULL, &resp);
    assert_status(&resp, 200, NULL);
    j = body_json(&resp);
    assert_int_equal(json_integer_value(json_object_get(j, "count")), 0);
    assert_int_equal(json_integer_value(json_object_get(j, "limit")), 10);
    assert_string_equal(json_string_value(json_object_get(j, "state")),
                        "allow");
    assert_true(json_is_null(json_object_get(j, "cleared_until")));
    json_decref(j);
    /* the current window holds 12 admitted: over a limit of 10; pa is
     * ignored here only because the window index is the current one and
     * its weight can be anything, so keep pa 0 */
    r = redisCommand(redis.admin, "HSET tg:{per-ip|1.2.3.4}:c w %llu a 12 "
                     "t 30 pa 0 pt 0 L 4", (unsigned long long)idx);
    freeReplyObject(r);
    r = redisCommand(redis.admin, "ZADD tg:{per-ip|1.2.3.4}:e 1 e1 2 e2");
    freeReplyObject(r);
    call("GET", "/v1/keys/per-ip/1.2.3.4", "read", NULL, NULL, &resp);
    assert_status(&resp, 200, NULL);
    j = body_json(&resp);
    assert_string_equal(json_string_value(json_object_get(j, "key")),
                        "1.2.3.4");
    assert_int_equal(json_integer_value(json_object_get(j, "count")), 12);
    assert_int_equal(json_integer_value(json_object_get(j, "attempts")), 30);
    assert_int_equal(json_integer_value(json_object_get(j,
                                        "lease_outstanding")), 4);
    assert_int_equal(json_integer_value(json_object_get(j, "edges")), 2);
    assert_string_equal(json_string_value(json_object_get(j, "state")),
                        "over");
    json_decref(j);
    /* the previous window's counts weigh in; two windows back, nothing */
    r = redisCommand(redis.admin, "HSET tg:{per-ip|1.2.3.4}:c w %llu a 12 "
                     "t 30", (unsigned long long)(idx - 2));
    freeReplyObject(r);
    call("GET", "/v1/keys/per-ip/1.2.3.4", "read", NULL, NULL, &resp);
    assert_int_equal(member_int(&resp, "count"), 0);

    call("DELETE", "/v1/keys/per-ip/1.2.3.4", "admin", NULL, NULL, &resp);
    assert_status(&resp, 200, NULL);
    r = redisCommand(redis.admin, "EXISTS tg:{per-ip|1.2.3.4}:c "
                     "tg:{per-ip|1.2.3.4}:e");
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
    call("DELETE", "/v1/keys/nope/1.2.3.4", "admin", NULL, NULL, &resp);
    assert_status(&resp, 404, NULL);
    co_response_clear(&resp);
}

/* One sync.lua call (layout in its header) for key of quota per-ip (limit
 * 10, 60 s) from edge at now_ms: admitted of attempts. Returns sync.lua's
 * sliding-window estimate of the key's admitted requests at now_ms, what
 * a sync answer carries as KeyState.count. */
static long long sync_lua_count(const char *edge, uint64_t seq,
                                const char *key, uint64_t now_ms,
                                uint64_t admitted, uint64_t attempts)
{
    struct co_script_call c;
    char replay[CO_REPLAY_KEY_MAX], sig[65], nonce[33], err[256];
    char kc[CO_RKEY_COUNTERS_MAX], ke[CO_RKEY_COUNTERS_MAX];
    long long out[3 + 4];
    int n;

    snprintf(sig, sizeof sig, "%032llx", (unsigned long long)now_ms + seq);
    snprintf(nonce, sizeof nonce, "n%llu", (unsigned long long)seq);
    assert_true(co_rkey_replay(edge, sig, replay, sizeof replay) > 0);
    n = co_rkey_counters("per-ip", 6, key, strlen(key), kc, ke, sizeof kc);
    assert_true(n > 0);
    co_call_init(&c, co_script(CO_SCRIPT_SYNC), 3 + 7 + 7 + 1);
    co_call_key(&c, replay, strlen(replay));
    co_call_key(&c, kc, (size_t)n);
    co_call_key(&c, ke, (size_t)n);
    co_call_arg_u64(&c, now_ms);
    co_call_arg_str(&c, edge);
    co_call_arg_u64(&c, seq);
    co_call_arg_u64(&c, 1000);                 /* sync_interval_ms */
    co_call_arg_str(&c, nonce);
    co_call_arg_u64(&c, CO_AUTH_REPLAY_TTL_MS);
    co_call_arg_u64(&c, 1);
    co_call_arg_u64(&c, 10);                   /* limit */
    co_call_arg_u64(&c, 60000);                /* window_ms */
    co_call_arg_u64(&c, 1);                    /* over: challenge */
    co_call_arg_u64(&c, 0);                    /* deny_after off */
    co_call_arg_u64(&c, admitted);
    co_call_arg_u64(&c, attempts);
    co_call_arg_u64(&c, 0);                    /* burst */
    co_call_arg_u64(&c, admitted * 3 + attempts);  /* the batch digest */
    c.out = out;
    c.nout = 3 + 4;
    assert_int_equal(co_call_seal(&c), CO_OK);
    if (co_redis_eval_ints(&c, 1, err, sizeof err) != CO_OK)
        fail_msg("sync.lua: %s", err);
    co_call_free(&c);
    assert_int_equal(out[0], 0);               /* applied */
    return out[3 + 3];
}

/* GET /v1/keys/per-ip/<key> at now_ms: its "count". */
static long long inspect_count(const char *key, uint64_t now_ms)
{
    struct co_response resp = {0};
    char path[128];
    long long v;

    pinned_ms = now_ms;
    snprintf(path, sizeof path, "/v1/keys/per-ip/%s", key);
    call("GET", path, "read", NULL, NULL, &resp);
    assert_status(&resp, 200, NULL);
    v = member_int(&resp, "count");
    co_response_clear(&resp);
    return v;
}

/* The key inspector computes the two-window estimate in C from the
 * stored hash; sync.lua computes it in Lua when it answers a sync. On the
 * same data at the same instant they must agree: within a window, in the
 * next window before any sync rolled the hash (the C side rolls it in its
 * head), once rolled, two windows on (nothing), and with a clock behind
 * the writer's (both keep counting into the stored window). At each
 * instant the inspector reads first, then an edge reports nothing, which
 * makes sync.lua answer its estimate of the same state. */
static void test_key_inspect_matches_sync_lua(void **state)
{
    const uint64_t w0 = 1700000040000ULL;      /* a window start (60 s) */
    const int64_t at[] = {
        17000,    /* same window as the report */
        77000,    /* the next window, hash not rolled yet */
        95000,    /* rolled by the report at 77 s */
        200000,   /* two windows on: nothing left */
        250000,   /* the next window again, not rolled */
        230000,   /* a clock 20 s behind the last writer's window */
    };
    uint64_t seq = 1;

    (void)state;
    pinned_ms = w0 + 5000;
    assert_int_equal(sync_lua_count("ea", seq++, "5.6.7.8", w0 + 5000, 7,
                                    9), 7);
    for (size_t i = 0; i < sizeof at / sizeof *at; i++) {
        uint64_t t = w0 + (uint64_t)at[i];
        long long c = inspect_count("5.6.7.8", t);

        if (c != sync_lua_count("eb", seq++, "5.6.7.8", t, 0, 0))
            fail_msg("at +%lld ms the inspector says %lld, sync.lua "
                     "differs", (long long)at[i], c);
        /* and a report that counts, so the next instant has data */
        sync_lua_count("ea", seq++, "5.6.7.8", t, 3, 4);
    }
    pinned_ms = 0;
}

static void test_audit(void **state)
{
    struct co_response resp = {0};
    json_t *j, *e;
    json_int_t next;

    (void)state;
    /* the writes the entries below record, after the seed */
    two_writes(&resp);
    call("PUT", "/v1/quotas/login", "admin", NULL,
         "{\"key\": \"ip\", \"limit\": 3, \"window_s\": 60, \"action\": "
         "\"deny\"}", &resp);
    assert_status(&resp, 200, NULL);
    call("PUT", "/v1/quotas/login/overrides/k", "admin", NULL,
         "{\"limit\": 9}", &resp);
    assert_status(&resp, 200, NULL);
    call("DELETE", "/v1/quotas/login/overrides/k", "admin", NULL, NULL,
         &resp);
    assert_status(&resp, 200, NULL);
    call("DELETE", "/v1/quotas/login", "admin", NULL, NULL, &resp);
    assert_status(&resp, 200, NULL);
    call("DELETE", "/v1/keys/per-ip/1.2.3.4", "admin", NULL, NULL, &resp);
    assert_status(&resp, 200, NULL);

    call("GET", "/v1/audit?limit=0", "read", NULL, NULL, &resp);
    assert_status(&resp, 400, "limit: must be an integer 1..200");
    call("GET", "/v1/audit?limit=201", "read", NULL, NULL, &resp);
    assert_status(&resp, 400, NULL);
    call("GET", "/v1/audit?before=x", "read", NULL, NULL, &resp);
    assert_status(&resp, 400, "before");
    call("GET", "/v1/audit?limit=2", "read", NULL, NULL, &resp);
    assert_status(&resp, 200, NULL);
    j = body_json(&resp);
    e = json_array_get(json_object_get(j, "entries"), 0);
    assert_string_equal(json_string_value(json_object_get(e, "action")),
                        "key.reset");
    assert_string_equal(json_string_value(json_object_get(e, "who")), "root");
    assert_string_equal(json_string_value(json_object_get(
        json_object_get(e, "detail"), "key")), "1.2.3.4");
    next = json_integer_value(json_object_get(j, "next"));
    assert_true(next > 1);
    json_decref(j);
    /* seed + put + rollback + quota put/delete + 2 overrides + reset = 8 */
    call("GET", "/v1/audit?limit=200", "read", NULL, NULL, &resp);
    j = body_json(&resp);
    assert_int_equal(json_array_size(json_object_get(j, "entries")), 8);
    assert_true(json_is_null(json_object_get(j, "next")));
    json_decref(j);
    co_response_clear(&resp);
}

/* 405 comes from the router, before any handler, with Allow. */
/* The validator's "<path>: <why>" goes out with the path as a JSON
 * pointer; a detail without a plain path has no errors[]. */
static void test_invalid_names_the_pointer(void **state)
{
    static const struct {
        const char *err, *pointer;      /* pointer NULL: no errors[] */
    } cases[] = {
        {"quotas[2].limit: must be > 0", "/quotas/2/limit"},
        {"quotas: 65 quotas, over the cap of 64 (an edge holds 64)",
         "/quotas"},
        {"quotas[8].key: the policy would name more than 8 distinct claim "
         "names (an edge holds 8)", "/quotas/8/key"},
        {"quotas[0].methods[1]: bad", "/quotas/0/methods/1"},
        {"(document): 40000 bytes on the sync wire", ""},
        {"quotas[0].overrides[\"10.0.0.1\"].limit: must be > 0", NULL},
        {"line 1 column 2: end of file", NULL},
    };

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct co_response resp = {0};
        json_t *doc, *e;

        co_admin_invalid(&resp, cases[i].err);
        assert_int_equal(resp.status, 400);
        doc = body_json(&resp);
        assert_string_equal(json_string_value(json_object_get(doc, "detail")),
                            cases[i].err);
        e = json_array_get(json_object_get(doc, "errors"), 0);
        if (cases[i].pointer == NULL) {
            assert_null(json_object_get(doc, "errors"));
        } else {
            assert_string_equal(json_string_value(json_object_get(e,
                                "pointer")), cases[i].pointer);
            assert_string_equal(json_string_value(json_object_get(e,
                                "detail")), strstr(cases[i].err, ": ") + 2);
        }
        json_decref(doc);
        co_response_clear(&resp);
    }
}

static void test_wrong_method(void **state)
{
    struct co_response resp = {0};
    const struct co_route *r;

    (void)state;
    assert_int_equal(co_http_precheck("POST", "/v1/quotas/x", NULL, NULL,
                                      1024, &r, &resp), CO_EINVAL);
    assert_status(&resp, 405, "GET, HEAD, PUT, DELETE");
    assert_string_equal(resp.allow, "GET, HEAD, PUT, DELETE");
    co_response_clear(&resp);
    assert_int_equal(co_http_precheck("PUT", "/v1/quotas/x", "text/plain",
                                      NULL, 1024, &r, &resp), CO_EINVAL);
    assert_status(&resp, 415, "application/json");
    co_response_clear(&resp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_auth, fresh_store),
        cmocka_unit_test_setup(test_policy_put, fresh_store),
        cmocka_unit_test_setup(test_quotas_and_overrides, fresh_store),
        cmocka_unit_test_setup(test_keys, fresh_store),
        cmocka_unit_test_setup(test_key_inspect_matches_sync_lua,
                               fresh_store),
        cmocka_unit_test_setup(test_audit, fresh_store),
        cmocka_unit_test_setup(test_wrong_method, fresh_store),
        cmocka_unit_test(test_invalid_names_the_pointer),
    };

    atomic_store(&co_log_min_level, CO_LOG_ERROR + 1);
    return cmocka_run_group_tests(tests, setup, teardown);
}
