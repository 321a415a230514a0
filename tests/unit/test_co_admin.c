/* test_co_admin.c — the admin handlers called as plain functions against a
 * real redis-server and the policy store: every status the API promises
 * (200, 400, 401, 403, 404, 405, 412, 428), the ETag, the key inspection
 * arithmetic and the audit trail of each write.
 */
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
    struct co_policy *p;
    char err[256];

    (void)state;
    if (test_redis_start_and_connect(&redis) != 0)
        return -1;
    if (co_tokens_parse(TOKENS, strlen(TOKENS), &co_admin_tokens, err,
                        sizeof err) != CO_OK ||
        co_policy_parse(DOC, strlen(DOC), &p, err, sizeof err) != CO_OK ||
        co_store_start(p, 1000, err, sizeof err) != CO_OK)
        return -1;
    co_policy_release(p);
    return 0;
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

static void test_quotas_and_overrides(void **state)
{
    struct co_response resp = {0};
    json_t *j;

    (void)state;
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

static void test_audit(void **state)
{
    struct co_response resp = {0};
    json_t *j, *e;
    json_int_t next;

    (void)state;
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
        cmocka_unit_test(test_auth),
        cmocka_unit_test(test_policy_put),
        cmocka_unit_test(test_quotas_and_overrides),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_audit),
        cmocka_unit_test(test_wrong_method),
    };

    atomic_store(&co_log_min_level, CO_LOG_ERROR + 1);
    return cmocka_run_group_tests(tests, setup, teardown);
}
