/* fuzz_admin.c — libFuzzer target for the admin API's JSON routes: PUT
 * /v1/policy, PUT /v1/quotas/{name}, PUT /v1/quotas/{name}/overrides/{key}
 * and POST /v1/policy/rollback, found through the router as a request
 * would be, with an admin token, over a stored policy.
 *
 * Input: one byte choosing the route, the If-Match header and the path's
 * names, then the body. The policy store is replaced (--wrap): reads
 * return the seed policy, writes succeed as the next version, so an
 * accepted edit runs to its answer. Every answer must be a status of the
 * admin API's contract with a JSON body; a 200 must carry a version.
 * Seeds in tests/fuzz/corpus/admin/ (make_corpus.py).
 */
// fuzz-ldflags: -Wl,--wrap=co_store_get -Wl,--wrap=co_store_put -Wl,--wrap=co_store_rollback -Wl,--wrap=co_store_audit_add
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fuzz_co.h"

int __wrap_co_store_get(uint64_t version, char **doc, size_t *len,
                        uint64_t *found_version, char *err, size_t errlen);
int __wrap_co_store_put(const char *doc, int64_t expect, const char *who,
                        const char *action, const char *detail,
                        uint64_t *version, char *err, size_t errlen);
int __wrap_co_store_rollback(uint64_t to, int64_t expect, const char *who,
                             uint64_t *version, char *err, size_t errlen);
int __wrap_co_store_audit_add(const char *who, const char *action,
                              const char *detail, char *err, size_t errlen);

/* "abc": FIPS 180-2's SHA-256 example B.1 (tests/unit/test_admin_tokens.h) */
#define ADMIN_TOKEN "Bearer abc"
static const char tokens_text[] =
    "root admin "
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n";

static const char stored[] =
    "{\"version\": 3, \"sync_interval_ms\": 2000, \"clearance_ttl_s\": 60,"
    " \"quotas\": ["
    "  {\"name\": \"ip\", \"key\": \"ip\", \"limit\": 100, \"window_s\": 60,"
    "   \"action\": \"challenge\", \"floor\": 10,"
    "   \"overrides\": {\"10.0.0.9\": {\"limit\": 7}}},"
    "  {\"name\": \"login\", \"key\": \"ip\", \"limit\": 10, \"window_s\": 30,"
    "   \"path_prefix\": \"/login\", \"methods\": [\"POST\"],"
    "   \"action\": \"deny\"}]}";
#define STORED_VERSION 3

int __wrap_co_store_get(uint64_t version, char **doc, size_t *len,
                        uint64_t *found_version, char *err, size_t errlen)
{
    if (version > STORED_VERSION + 1) {
        snprintf(err, errlen, "no version %llu", (unsigned long long)version);
        return CO_ENOTFOUND;
    }
    json_t *d = json_loads(stored, 0, NULL);

    *found_version = version ? version : STORED_VERSION;
    /* the document names its own version, as the store's do */
    CHECK(d != NULL && json_object_set_new(d, "version",
                                           json_integer((json_int_t)
                                                        *found_version)) == 0);
    *doc = json_dumps(d, JSON_COMPACT);
    json_decref(d);
    if (*doc == NULL)
        return CO_ENOMEM;
    *len = strlen(*doc);
    return CO_OK;
}

int __wrap_co_store_put(const char *doc, int64_t expect, const char *who,
                        const char *action, const char *detail,
                        uint64_t *version, char *err, size_t errlen)
{
    json_t *d = json_loads(detail, 0, NULL), *p = json_loads(doc, 0, NULL);

    (void)who;
    (void)action;
    (void)err;
    (void)errlen;
    /* what admin.c stores and audits is JSON it wrote itself */
    CHECK(d != NULL && p != NULL);
    json_decref(d);
    json_decref(p);
    if (expect >= 0 && expect != STORED_VERSION) {
        *version = STORED_VERSION;
        return CO_ECONFLICT;
    }
    *version = STORED_VERSION + 1;
    return CO_OK;
}

int __wrap_co_store_rollback(uint64_t to, int64_t expect, const char *who,
                             uint64_t *version, char *err, size_t errlen)
{
    (void)who;
    if (expect >= 0 && expect != STORED_VERSION) {
        *version = STORED_VERSION;
        return CO_ECONFLICT;
    }
    if (to == 0 || to >= STORED_VERSION) {
        snprintf(err, errlen, "no version %llu", (unsigned long long)to);
        return CO_ENOTFOUND;
    }
    *version = STORED_VERSION + 1;
    return CO_OK;
}

int __wrap_co_store_audit_add(const char *who, const char *action,
                              const char *detail, char *err, size_t errlen)
{
    (void)who;
    (void)action;
    (void)detail;
    (void)err;
    (void)errlen;
    return CO_OK;
}

struct hdrs {
    const char *if_match;
};

static const char *header(void *conn, const char *name)
{
    const struct hdrs *h = conn;

    if (strcmp(name, "Authorization") == 0)
        return ADMIN_TOKEN;
    if (strcmp(name, "If-Match") == 0)
        return h->if_match;
    return NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char err[256];

    (void)argc;
    (void)argv;
    fuzz_co_setup(NULL);
    CHECK(co_tokens_parse(tokens_text, strlen(tokens_text), &co_admin_tokens,
                          err, sizeof err) == CO_OK);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const paths[] = {
        "/v1/policy", "/v1/quotas/ip", "/v1/quotas/new-q",
        "/v1/quotas/ip/overrides/10.0.0.9", "/v1/quotas/login/overrides/k%2F1",
        "/v1/policy/rollback", "/v1/quotas/nope/overrides/x",
        "/v1/quotas/ip/overrides/1.2.3.4",
    };
    static const char *const if_match[] = {NULL, "\"3\"", "\"2\"", "*"};
    struct co_response resp = {0};
    struct co_route_params params;
    const struct co_route *route;
    const char *path, *method;
    struct hdrs h;
    char allow[64];
    json_t *v;

    if (size < 1)
        return 0;
    path = paths[data[0] & 7];
    method = strcmp(path, "/v1/policy/rollback") == 0 ? "POST" : "PUT";
    h.if_match = if_match[(data[0] >> 3) & 3];
    CHECK(co_route_match(method, path, &route, &params, allow,
                         sizeof allow) == CO_OK);
    {
        struct co_request req = {
            .method = method, .path = path, .params = &params,
            .content_type = "application/json",
            .body = size > 1 ? data + 1 : NULL, .body_len = size - 1,
            .header = header, .conn = &h,
        };

        route->handler(&req, &resp);
    }
    CHECK_ANSWER(resp.status == 200 || resp.status == 400 || resp.status == 404 ||
          resp.status == 409 || resp.status == 412 || resp.status == 428, &resp);
    v = json_loadb((const char *)resp.body, resp.body_len, 0, NULL);
    CHECK_ANSWER(v != NULL, &resp);
    if (resp.status == 200)
        CHECK_ANSWER(json_integer_value(json_object_get(v, "version")) ==
                     STORED_VERSION + 1, &resp);
    json_decref(v);
    co_response_clear(&resp);
    return 0;
}
