/* test_co_http.c — (http.c) the HTTP layer without a socket: route lookup
 * (404, 405 + Allow, {param} segments percent-decoded), the checks made
 * before any body byte is read (414, 413 by Content-Length, 415), the body
 * cap for chunked uploads, and the RFC 9457 problem-details body.
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

static void test_lookup_matches_method_and_path(void **state)
{
    const struct co_route *r;
    char allow[64];

    (void)state;
    assert_int_equal(co_route_lookup("POST", "/v1/sync", &r, allow,
                                     sizeof allow), CO_OK);
    assert_ptr_equal(r->handler, co_sync_handle);
    assert_string_equal(r->content_type, "application/x-protobuf");
    assert_int_equal(co_route_lookup("GET", "/healthz", &r, allow,
                                     sizeof allow), CO_OK);
    assert_ptr_equal(r->handler, co_health_live);
    assert_int_equal(co_route_lookup("GET", "/readyz", &r, allow,
                                     sizeof allow), CO_OK);
    assert_ptr_equal(r->handler, co_health_ready);
    /* HEAD rides on GET routes */
    assert_int_equal(co_route_lookup("HEAD", "/healthz", &r, allow,
                                     sizeof allow), CO_OK);
    assert_ptr_equal(r->handler, co_health_live);
}

static void test_lookup_unknown_path_is_404(void **state)
{
    const struct co_route *r = (const void *)1;
    char allow[64] = "junk";
    const char *paths[] = {
        "/", "/nope", "/healthz/", "/HEALTHZ", "/v1/sync/", "/v1", "",
        "/v1/syncx", "/healthz?x=1",
    };

    (void)state;
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        assert_int_equal(co_route_lookup("GET", paths[i], &r, allow,
                                         sizeof allow), CO_ENOTFOUND);
        assert_null(r);
        assert_string_equal(allow, "");
    }
}

static void test_lookup_wrong_method_is_405_with_allow(void **state)
{
    const struct co_route *r;
    char allow[64];

    (void)state;
    assert_int_equal(co_route_lookup("GET", "/v1/sync", &r, allow,
                                     sizeof allow), CO_EMETHOD);
    assert_null(r);
    assert_string_equal(allow, "POST");
    assert_int_equal(co_route_lookup("HEAD", "/v1/sync", &r, allow,
                                     sizeof allow), CO_EMETHOD);
    assert_string_equal(allow, "POST");
    assert_int_equal(co_route_lookup("POST", "/healthz", &r, allow,
                                     sizeof allow), CO_EMETHOD);
    assert_string_equal(allow, "GET, HEAD");
    assert_int_equal(co_route_lookup("DELETE", "/readyz", &r, allow,
                                     sizeof allow), CO_EMETHOD);
    assert_string_equal(allow, "GET, HEAD");
    /* methods are case-sensitive (RFC 9110 section 9.1) */
    assert_int_equal(co_route_lookup("post", "/v1/sync", &r, allow,
                                     sizeof allow), CO_EMETHOD);
}

/* Parse a problem+json body and check its members. */
static void assert_problem(const struct co_response *resp, unsigned status,
                           const char *title, const char *detail_part)
{
    json_error_t jerr;
    json_t *doc;

    assert_int_equal(resp->status, status);
    assert_string_equal(resp->content_type, "application/problem+json");
    assert_non_null(resp->body);
    doc = json_loadb((const char *)resp->body, resp->body_len, 0, &jerr);
    assert_non_null(doc);
    assert_string_equal(json_string_value(json_object_get(doc, "type")),
                        "about:blank");
    assert_string_equal(json_string_value(json_object_get(doc, "title")),
                        title);
    assert_int_equal(json_integer_value(json_object_get(doc, "status")),
                     status);
    assert_non_null(strstr(json_string_value(json_object_get(doc, "detail")),
                           detail_part));
    assert_int_equal(json_object_size(doc), 4);
    json_decref(doc);
}

static void test_precheck_routes(void **state)
{
    struct co_response resp = {0};
    const struct co_route *r;

    (void)state;
    assert_int_equal(co_http_precheck("GET", "/missing", NULL, NULL, 1024,
                                      &r, &resp), CO_EINVAL);
    assert_problem(&resp, 404, "Not Found", "no such endpoint");
    assert_string_equal(resp.allow, "");
    co_response_clear(&resp);

    assert_int_equal(co_http_precheck("PUT", "/v1/sync", NULL, NULL, 1024,
                                      &r, &resp), CO_EINVAL);
    assert_problem(&resp, 405, "Method Not Allowed", "POST");
    assert_string_equal(resp.allow, "POST");
    co_response_clear(&resp);

    assert_int_equal(co_http_precheck("GET", "/healthz", NULL, NULL, 1024,
                                      &r, &resp), CO_OK);
    assert_ptr_equal(r->handler, co_health_live);
    assert_null(resp.body);
    assert_int_equal(resp.status, 0);
}

static void test_precheck_url_cap_is_414(void **state)
{
    struct co_response resp = {0};
    const struct co_route *r;
    char *url = malloc(CO_URL_MAX + 2);

    (void)state;
    url[0] = '/';
    memset(url + 1, 'a', CO_URL_MAX);
    url[CO_URL_MAX + 1] = '\0';          /* CO_URL_MAX + 1 bytes */
    assert_int_equal(co_http_precheck("GET", url, NULL, NULL, 1024, &r,
                                      &resp), CO_EINVAL);
    assert_problem(&resp, 414, "URI Too Long", "2048");
    co_response_clear(&resp);
    url[CO_URL_MAX] = '\0';              /* exactly CO_URL_MAX: routed */
    assert_int_equal(co_http_precheck("GET", url, NULL, NULL, 1024, &r,
                                      &resp), CO_EINVAL);
    assert_int_equal(resp.status, 404);
    co_response_clear(&resp);
    free(url);
}

static void test_precheck_content_length_cap_is_413(void **state)
{
    struct co_response resp = {0};
    const struct co_route *r;
    const char *ct = "application/x-protobuf";

    (void)state;
    assert_int_equal(co_http_precheck("POST", "/v1/sync", ct, "4096", 4096,
                                      &r, &resp), CO_OK);
    assert_int_equal(co_http_precheck("POST", "/v1/sync", ct, "4097", 4096,
                                      &r, &resp), CO_EINVAL);
    assert_problem(&resp, 413, "Content Too Large", "4096");
    co_response_clear(&resp);
    /* absurd lengths must not wrap around */
    assert_int_equal(co_http_precheck("POST", "/v1/sync", ct,
                                      "99999999999999999999999", 4096, &r,
                                      &resp), CO_EINVAL);
    assert_problem(&resp, 400, "Bad Request", "Content-Length");
    co_response_clear(&resp);
    assert_int_equal(co_http_precheck("POST", "/v1/sync", ct, "12x", 4096,
                                      &r, &resp), CO_EINVAL);
    assert_problem(&resp, 400, "Bad Request", "Content-Length");
    co_response_clear(&resp);
    assert_int_equal(co_http_precheck("POST", "/v1/sync", ct, "-1", 4096,
                                      &r, &resp), CO_EINVAL);
    assert_int_equal(resp.status, 400);
    co_response_clear(&resp);
}

static void test_precheck_content_type_is_415(void **state)
{
    struct co_response resp = {0};
    const struct co_route *r;
    const char *ok[] = {
        "application/x-protobuf", "Application/X-Protobuf",
        "application/x-protobuf; charset=binary", " application/x-protobuf",
    };
    const char *bad[] = {
        "application/json", "application/x-protobufx", "text/plain",
        "application/x-proto", "",
    };

    (void)state;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        assert_int_equal(co_http_precheck("POST", "/v1/sync", ok[i], "10",
                                          4096, &r, &resp), CO_OK);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(co_http_precheck("POST", "/v1/sync", bad[i], "10",
                                          4096, &r, &resp), CO_EINVAL);
        assert_problem(&resp, 415, "Unsupported Media Type",
                       "application/x-protobuf");
        co_response_clear(&resp);
    }
    assert_int_equal(co_http_precheck("POST", "/v1/sync", NULL, "10", 4096,
                                      &r, &resp), CO_EINVAL);
    assert_int_equal(resp.status, 415);
    co_response_clear(&resp);
    /* GET routes take any (or no) Content-Type */
    assert_int_equal(co_http_precheck("GET", "/healthz", "text/plain", NULL,
                                      4096, &r, &resp), CO_OK);
}

static void test_body_cap(void **state)
{
    struct co_body b = {0};
    uint8_t chunk[1000];

    (void)state;
    for (size_t i = 0; i < sizeof chunk; i++)
        chunk[i] = (uint8_t)i;
    /* exactly max is fine, across several chunks */
    for (int i = 0; i < 4; i++)
        assert_int_equal(co_body_append(&b, chunk, 1000, 4500), CO_OK);
    assert_int_equal(co_body_append(&b, chunk, 500, 4500), CO_OK);
    assert_int_equal(b.len, 4500);
    assert_true(b.cap <= 4500);
    assert_memory_equal(b.data + 3000, chunk, 1000);
    assert_memory_equal(b.data + 4000, chunk, 500);
    /* one byte more is refused and nothing is appended */
    assert_int_equal(co_body_append(&b, chunk, 1, 4500), CO_ETOOBIG);
    assert_int_equal(b.len, 4500);
    co_body_free(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    /* a single huge chunk, and sizes that would overflow */
    assert_int_equal(co_body_append(&b, chunk, 1000, 999), CO_ETOOBIG);
    assert_int_equal(co_body_append(&b, chunk, 10, 100), CO_OK);
    assert_int_equal(co_body_append(&b, chunk, SIZE_MAX - 5, 100),
                     CO_ETOOBIG);
    assert_int_equal(b.len, 10);
    co_body_free(&b);
}

static void test_problem_body_escapes_detail(void **state)
{
    struct co_response resp = {0};

    (void)state;
    co_response_problem(&resp, 400, "quotas[2].name: \"bad\"\n<x>");
    assert_problem(&resp, 400, "Bad Request", "quotas[2].name: \"bad\"\n<x>");
    co_response_clear(&resp);
    assert_null(resp.body);
    assert_int_equal(resp.status, 0);
}

static void test_healthz_handler(void **state)
{
    struct co_request req = {.method = "GET", .path = "/healthz"};
    struct co_response resp = {0};

    (void)state;
    co_health_live(&req, &resp);
    assert_int_equal(resp.status, 200);
    assert_int_equal(resp.body_len, 3);
    assert_memory_equal(resp.body, "ok\n", 3);
    assert_non_null(strstr(resp.content_type, "text/plain"));
    co_response_clear(&resp);
}

/* The admin routes: {param} segments match one non-empty segment and
 * arrive percent-decoded; an encoded '/' stays inside its segment. */
static void test_lookup_params(void **state)
{
    const struct co_route *r;
    struct co_route_params p;
    char allow[64];

    (void)state;
    assert_int_equal(co_route_match("GET", "/v1/policy", &r, &p, allow,
                                    sizeof allow), CO_OK);
    assert_ptr_equal(r->handler, co_admin_policy_get);
    assert_int_equal(p.n, 0);
    assert_int_equal(co_route_match("PUT", "/v1/policy", &r, &p, allow,
                                    sizeof allow), CO_OK);
    assert_ptr_equal(r->handler, co_admin_policy_put);
    assert_string_equal(r->content_type, "application/json");
    assert_int_equal(co_route_match("GET", "/v1/policy/versions", &r, &p,
                                    allow, sizeof allow), CO_OK);
    assert_ptr_equal(r->handler, co_admin_versions);
    assert_int_equal(co_route_match("GET", "/v1/policy/versions/12", &r, &p,
                                    allow, sizeof allow), CO_OK);
    assert_ptr_equal(r->handler, co_admin_version_get);
    assert_int_equal(p.n, 1);
    assert_string_equal(p.v[0], "12");
    assert_int_equal(co_route_match("DELETE", "/v1/quotas/per-ip", &r, &p,
                                    allow, sizeof allow), CO_OK);
    assert_ptr_equal(r->handler, co_admin_quota_delete);
    assert_string_equal(p.v[0], "per-ip");
    assert_int_equal(co_route_match("PUT", "/v1/quotas/q/overrides/"
                                    "10.0.0.1%2F24%20x", &r, &p, allow,
                                    sizeof allow), CO_OK);
    assert_ptr_equal(r->handler, co_admin_override_put);
    assert_int_equal(p.n, 2);
    assert_string_equal(p.v[0], "q");
    assert_string_equal(p.v[1], "10.0.0.1/24 x");
    assert_int_equal(co_route_match("GET", "/v1/keys/q/%E2%82%AC", &r, &p,
                                    allow, sizeof allow), CO_OK);
    assert_ptr_equal(r->handler, co_admin_key_get);
    assert_string_equal(p.v[1], "\xe2\x82\xac");
    assert_int_equal(co_route_match("DELETE", "/v1/keys/q/k", &r, &p, allow,
                                    sizeof allow), CO_OK);
    assert_ptr_equal(r->handler, co_admin_key_reset);
    assert_int_equal(co_route_match("POST", "/v1/policy/rollback", &r, &p,
                                    allow, sizeof allow), CO_OK);
    assert_ptr_equal(r->handler, co_admin_rollback);
    assert_int_equal(co_route_match("GET", "/v1/audit", &r, NULL, allow,
                                    sizeof allow), CO_OK);
    assert_ptr_equal(r->handler, co_admin_audit);
}

static void test_lookup_params_404_405(void **state)
{
    const struct co_route *r;
    struct co_route_params p;
    char allow[64];
    const char *missing[] = {
        "/v1/quotas", "/v1/quotas/", "/v1/quotas//overrides/k",
        "/v1/quotas/q/overrides", "/v1/quotas/q/overrides/",
        "/v1/quotas/q/overrides/k/x", "/v1/keys/q", "/v1/keys/q/%zz",
        "/v1/keys/q/a%00b", "/v1/keys/q/%4", "/v1/policy/versions/1/x",
        "/v1/auditx",
    };

    (void)state;
    for (size_t i = 0; i < sizeof missing / sizeof missing[0]; i++)
        if (co_route_match("GET", missing[i], &r, &p, allow,
                           sizeof allow) != CO_ENOTFOUND)
            fail_msg("%s: not a 404", missing[i]);
    assert_int_equal(co_route_match("POST", "/v1/quotas/q", &r, &p, allow,
                                    sizeof allow), CO_EMETHOD);
    assert_string_equal(allow, "GET, HEAD, PUT, DELETE");
    assert_int_equal(co_route_match("GET", "/v1/quotas/q/overrides/k", &r,
                                    &p, allow, sizeof allow), CO_EMETHOD);
    assert_string_equal(allow, "PUT, DELETE");
    assert_int_equal(co_route_match("DELETE", "/v1/policy", &r, &p, allow,
                                    sizeof allow), CO_EMETHOD);
    assert_string_equal(allow, "GET, HEAD, PUT");
    assert_int_equal(co_route_match("PUT", "/v1/audit", &r, &p, allow,
                                    sizeof allow), CO_EMETHOD);
    assert_string_equal(allow, "GET, HEAD");
    assert_int_equal(co_route_match("GET", "/v1/policy/rollback", &r, &p,
                                    allow, sizeof allow), CO_EMETHOD);
    assert_string_equal(allow, "POST");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lookup_matches_method_and_path),
        cmocka_unit_test(test_lookup_unknown_path_is_404),
        cmocka_unit_test(test_lookup_wrong_method_is_405_with_allow),
        cmocka_unit_test(test_precheck_routes),
        cmocka_unit_test(test_precheck_url_cap_is_414),
        cmocka_unit_test(test_precheck_content_length_cap_is_413),
        cmocka_unit_test(test_precheck_content_type_is_415),
        cmocka_unit_test(test_body_cap),
        cmocka_unit_test(test_problem_body_escapes_detail),
        cmocka_unit_test(test_healthz_handler),
        cmocka_unit_test(test_lookup_params),
        cmocka_unit_test(test_lookup_params_404_405),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
