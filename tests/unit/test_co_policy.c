/* test_co_policy.c — (policy.c) the policy document: the shipped example
 * loads, every invalid document is refused with the JSON path of its
 * offending field, defaults and the protobuf conversion are right, the
 * current-policy pointer is reference-counted. (Redis key tags:
 * test_co_redis_keys.c.) Run from the repository root (make does): it reads
 * deploy/example-policy.json.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tollgated.h"

static void test_example_policy_loads(void **state)
{
    struct co_policy *p;
    const struct co_quota *q;
    char err[256] = "";

    (void)state;
    if (co_policy_load_file("deploy/example-policy.json", &p, err,
                            sizeof err) != CO_OK)
        fail_msg("example policy: %s", err);
    assert_int_equal(p->version, 1);
    assert_int_equal(p->sync_interval_ms, 1000);
    assert_int_equal(p->clearance_ttl_s, 300);
    assert_int_equal(p->expected_edges, 4);
    assert_true(p->n_quotas >= 1);
    q = co_policy_find(p, "per-ip");
    assert_non_null(q);
    assert_int_equal(q->limit, 100);
    assert_int_equal(q->window_s, 60);
    assert_string_equal(q->key, "ip");
    assert_string_equal(q->path_prefix, "/api/");
    assert_int_equal(q->n_methods, 0);
    assert_int_equal(q->action, TOLLGATE__V1__ACTION__ACTION_CHALLENGE);
    assert_int_equal(q->floor, 10);
    assert_false(q->shadow);
    assert_true(q->fail_open);
    assert_true(q->deny_after == 0);
    assert_null(co_policy_find(p, "nope"));
    co_policy_release(p);
}

static void test_missing_file_is_an_error(void **state)
{
    struct co_policy *p = (void *)1;
    char err[256] = "";

    (void)state;
    assert_int_equal(co_policy_load_file("/nonexistent/policy.json", &p, err,
                                         sizeof err), CO_EIO);
    assert_null(p);
    assert_non_null(strstr(err, "cannot open"));
}

/* A valid quota with one member replaced: Q("\"limit\": 0") etc. */
#define QUOTA_BASE "\"name\": \"q1\", \"key\": \"ip\", \"window_s\": 60, " \
                   "\"action\": \"deny\""
#define DOC(top, quotas) \
    "{\"version\": 1" top ", \"quotas\": [" quotas "]}"
#define Q(extra) "{" QUOTA_BASE ", \"limit\": 10" extra "}"

/* Claim paths the edge reads (edge-module/src/template.h): bare names of
 * visible ASCII, nested with ".", or one JSON string for any name. */
static void test_claim_paths_accepted(void **state)
{
    static const char *ok[] = {
        "claim:sub", "claim:custom:tenant", "claim:org.id", "claim:org.deep.x",
        "claim:\"https://example.com/tenant\"", "claim:\"a\\u002bb\"",
        "claim:\"caf\u00e9\"", "claim:\"a.b\"+ip", "claim:\"\\\"quoted\\\"\"",
    };
    char err[200];

    (void)state;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (co_key_template_check(ok[i], strlen(ok[i]), err, sizeof err) != CO_OK)
            fail_msg("refused %s: %s", ok[i], err);
}

static void test_invalid_documents_name_the_field(void **state)
{
    static const struct {
        const char *json;
        const char *error;     /* expected prefix of the message */
    } cases[] = {
        {"", "line 1 column"},
        {"{\"version\": 1, \"quotas\": [}", "line 1 column"},
        {"[1, 2]", "(document): must be a JSON object"},
        {"{\"version\": 1, \"version\": 2, \"quotas\": []}", "line 1"},
        {"{\"quotas\": []}", "version: required"},
        {"{\"version\": 0, \"quotas\": []}", "version: must be > 0"},
        {"{\"version\": \"1\", \"quotas\": []}", "version: must be an integer"},
        {"{\"version\": 1.5, \"quotas\": []}", "version: must be an integer"},
        {"{\"version\": -3, \"quotas\": []}", "version: must be > 0"},
        {"{\"version\": 1}", "quotas: required"},
        {"{\"version\": 1, \"quotas\": {}}", "quotas: must be an array"},
        {"{\"version\": 1, \"quotas\": [], \"extra\": 1}",
         "extra: unknown field"},
        {DOC(", \"sync_interval_ms\": 50", ""),
         "sync_interval_ms: must be >= 100"},
        {DOC(", \"sync_interval_ms\": 60001", ""),
         "sync_interval_ms: must be <= 60000"},
        {DOC(", \"clearance_ttl_s\": 0", ""), "clearance_ttl_s: must be > 0"},
        {DOC(", \"expected_edges\": 0", ""), "expected_edges: must be > 0"},
        {DOC("", "1"), "quotas[0]: must be an object"},
        {DOC("", Q("") ", " Q(", \"limit\": 0")), "line 1"},
        {DOC("", Q("") ", {" QUOTA_BASE ", \"limit\": 0}"),
         "quotas[1].limit: must be > 0"},
        {DOC("", "{" QUOTA_BASE "}"), "quotas[0].limit: required"},
        {DOC("", "{" QUOTA_BASE ", \"limit\": 1000000000001}"),
         "quotas[0].limit: must be <= 1000000000000"},
        {DOC("", Q(", \"bogus\": true")), "quotas[0].bogus: unknown field"},
        {DOC("", Q("") ", " Q("")),
         "quotas[1].name: duplicate quota name \"q1\""},
        {DOC("", "{\"key\": \"ip\", \"limit\": 1, \"window_s\": 1, "
                 "\"action\": \"deny\"}"), "quotas[0].name: required"},
        {DOC("", "{\"name\": \"\", \"key\": \"ip\", \"limit\": 1, "
                 "\"window_s\": 1, \"action\": \"deny\"}"),
         "quotas[0].name: must be 1..64 bytes"},
        {DOC("", "{\"name\": \"a b\", \"key\": \"ip\", \"limit\": 1, "
                 "\"window_s\": 1, \"action\": \"deny\"}"),
         "quotas[0].name: only [A-Za-z0-9._-] allowed"},
        {DOC("", "{\"name\": \"q{1}\", \"key\": \"ip\", \"limit\": 1, "
                 "\"window_s\": 1, \"action\": \"deny\"}"),
         "quotas[0].name: only"},
        {DOC("", "{\"name\": "
                 "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\","
                 " \"key\": \"ip\", \"limit\": 1, \"window_s\": 1, "
                 "\"action\": \"deny\"}"),
         "quotas[0].name: must be 1..64 bytes"},
        {DOC("", "{\"name\": \"q\", \"key\": \"sub\", \"limit\": 1, "
                 "\"window_s\": 1, \"action\": \"deny\"}"),
         "quotas[0].key: unknown part \"sub\""},
#define KEY(t) "{\"name\": \"q\", \"key\": \"" t "\", \"limit\": 1, " \
               "\"window_s\": 1, \"action\": \"deny\"}"
        {DOC("", KEY("ip+")), "quotas[0].key: unknown part \"\""},
        {DOC("", KEY("claim:")), "quotas[0].key: unknown part \"claim:\""},
        {DOC("", KEY("claim:a b")), "quotas[0].key: bad claim path in \"claim:a b\""},
        {DOC("", KEY("claim:org..id")), "quotas[0].key: bad claim path"},
        {DOC("", KEY("claim:.id")), "quotas[0].key: bad claim path"},
        {DOC("", KEY("claim:a\\\"b")), "quotas[0].key: bad claim path"},
        {DOC("", KEY("claim:\\\"unterminated")), "quotas[0].key: bad claim path"},
        {DOC("", KEY("claim:\\\"a\\\".b")), "quotas[0].key: bad claim path"},
        {DOC("", KEY("claim:\\\"bad \\\\q escape\\\"")), "quotas[0].key: bad claim path"},
        {DOC("", KEY("header:X-Api-Key")),
         "quotas[0].key: bad character in \"header:X-Api-Key\" (header names"},
        {DOC("", KEY("ip+route+ip")), "quotas[0].key: part \"ip\" given twice"},
        {DOC("", KEY("ip+route+host+claim:a+claim:b")),
         "quotas[0].key: at most 4 parts"},
        {DOC("", "{\"name\": \"q\", \"key\": \"\", \"limit\": 1, "
                 "\"window_s\": 1, \"action\": \"deny\"}"),
         "quotas[0].key: must be 1..160 bytes"},
        {DOC("", Q(", \"require_token\": \"yes\"")),
         "quotas[0].require_token: must be true or false"},
        {DOC("", "{\"name\": \"q\", \"limit\": 1, "
                 "\"window_s\": 1, \"action\": \"deny\"}"),
         "quotas[0].key: required"},
        {DOC("", "{\"name\": \"q\", \"key\": \"ip\", \"limit\": 1, "
                 "\"window_s\": 0, \"action\": \"deny\"}"),
         "quotas[0].window_s: must be > 0"},
        {DOC("", "{\"name\": \"q\", \"key\": \"ip\", \"limit\": 1, "
                 "\"window_s\": 604801, \"action\": \"deny\"}"),
         "quotas[0].window_s: must be <= 604800"},
        {DOC("", "{\"name\": \"q\", \"key\": \"ip\", \"limit\": 1, "
                 "\"window_s\": 1, \"action\": \"block\"}"),
         "quotas[0].action: must be \"challenge\" or \"deny\""},
        {DOC("", "{\"name\": \"q\", \"key\": \"ip\", \"limit\": 1, "
                 "\"window_s\": 1}"), "quotas[0].action: required"},
        {DOC("", Q(", \"path_prefix\": \"api\"")),
         "quotas[0].path_prefix: must be empty or start with \"/\""},
        {DOC("", Q(", \"path_prefix\": \"/a b\"")),
         "quotas[0].path_prefix: only visible ASCII"},
        {DOC("", Q(", \"path_prefix\": 5")),
         "quotas[0].path_prefix: must be a string"},
        {DOC("", Q(", \"methods\": \"GET\"")),
         "quotas[0].methods: must be an array"},
        {DOC("", Q(", \"methods\": [\"GET\", \"get\"]")),
         "quotas[0].methods[1]: must be an upper-case HTTP method"},
        {DOC("", Q(", \"methods\": [\"GET\", \"FETCH\"]")),
         "quotas[0].methods[1]: must be an upper-case HTTP method"},
        {DOC("", Q(", \"methods\": [\"GET\", 1]")),
         "quotas[0].methods[1]: must be an upper-case HTTP method"},
        {DOC("", Q(", \"methods\": [\"GET\", \"GET\"]")),
         "quotas[0].methods[1]: duplicate method GET"},
        {DOC("", Q(", \"methods\": [\"GET\", \"HEAD\", \"POST\", \"PUT\", "
                   "\"DELETE\", \"PATCH\", \"OPTIONS\", \"CONNECT\", "
                   "\"TRACE\"]")),
         "quotas[0].methods: at most 8 methods"},
        {DOC("", Q(", \"floor\": 0")), "quotas[0].floor: must be > 0"},
        {DOC("", Q(", \"floor\": 11")), "quotas[0].floor: must be <= 10"},
        {DOC("", Q(", \"shadow\": 1")),
         "quotas[0].shadow: must be true or false"},
        {DOC("", Q(", \"fail_open\": \"yes\"")),
         "quotas[0].fail_open: must be true or false"},
        {DOC("", Q(", \"deny_after\": 0.5")),
         "quotas[0].deny_after: must be 0 (off) or a number from 1 to 1000"},
        {DOC("", Q(", \"deny_after\": -1")), "quotas[0].deny_after: must be"},
        {DOC("", Q(", \"deny_after\": 1001")), "quotas[0].deny_after: must be"},
        {DOC("", Q(", \"deny_after\": \"2\"")), "quotas[0].deny_after: must be"},
        {DOC("", Q(", \"burst\": -1")), "quotas[0].burst: must be >= 0"},
        {DOC("", Q(", \"burst\": 11")), "quotas[0].burst: must be <= 10"},
        {DOC("", Q(", \"burst\": 1.5")),
         "quotas[0].burst: must be an integer"},
        {DOC("", Q(", \"overrides\": []")),
         "quotas[0].overrides: must be an object"},
        {DOC("", Q(", \"overrides\": {\"10.0.0.1\": 5}")),
         "quotas[0].overrides[\"10.0.0.1\"]: must be an object"},
        {DOC("", Q("") ", {" QUOTA_BASE ", \"name\": \"q2\", \"limit\": 5, "
                 "\"overrides\": {\"a\": {\"limit\": 1}, "
                 "\"10.0.0.1\": {\"limit\": 0}}}"), "line 1"},
        {DOC("", Q("") ", {\"name\": \"q2\", \"key\": \"ip\", "
                 "\"window_s\": 60, \"action\": \"deny\", \"limit\": 5, "
                 "\"overrides\": {\"a\": {\"limit\": 1}, "
                 "\"10.0.0.1\": {\"limit\": 0}}}"),
         "quotas[1].overrides[\"10.0.0.1\"].limit: must be > 0"},
        {DOC("", Q(", \"overrides\": {\"k\": {}}")),
         "quotas[0].overrides[\"k\"].limit: required"},
        {DOC("", Q(", \"overrides\": {\"k\": {\"limit\": 1, \"x\": 2}}")),
         "quotas[0].overrides[\"k\"].x: unknown field"},
        {DOC("", Q(", \"overrides\": {\"k\": {\"limit\": \"1\"}}")),
         "quotas[0].overrides[\"k\"].limit: must be an integer"},
        {DOC("", Q(", \"overrides\": {\"k\": {\"limit\": 1000000000001}}")),
         "quotas[0].overrides[\"k\"].limit: must be <= 1000000000000"},
        {DOC("", Q(", \"overrides\": {\"\": {\"limit\": 1}}")),
         "quotas[0].overrides[\"\"]: a key is 1..256 bytes without NUL"},
        {DOC("", Q(", \"overrides\": {\"a\\u0000b\": {\"limit\": 1}}")),
         "line 1 column"},   /* jansson refuses a NUL in a key */
    };

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct co_policy *p = (void *)1;
        char err[256] = "";
        int rc = co_policy_parse(cases[i].json, strlen(cases[i].json), &p,
                                 err, sizeof err);

        if (rc == CO_OK)
            fail_msg("case %zu accepted: %s", i, cases[i].json);
        assert_null(p);
        if (strncmp(err, cases[i].error, strlen(cases[i].error)) != 0)
            fail_msg("case %zu: error \"%s\", want \"%s...\"", i, err,
                     cases[i].error);
    }
}

static void test_defaults(void **state)
{
    static const char doc[] =
        "{\"version\": 9, \"expected_edges\": 8, \"quotas\": ["
        " {\"name\": \"big\", \"key\": \"ip\", \"limit\": 1000,"
        "  \"window_s\": 10, \"action\": \"challenge\"},"
        " {\"name\": \"tiny\", \"key\": \"ip\", \"limit\": 3,"
        "  \"window_s\": 10, \"action\": \"deny\", \"deny_after\": 1.5}]}";
    struct co_policy *p;
    const struct co_quota *q;
    char err[256] = "";

    (void)state;
    if (co_policy_parse(doc, strlen(doc), &p, err, sizeof err) != CO_OK)
        fail_msg("%s", err);
    assert_int_equal(p->sync_interval_ms, 1000);
    assert_int_equal(p->clearance_ttl_s, 300);
    q = co_policy_find(p, "big");
    assert_int_equal(q->floor, 125);            /* 1000 / 8 */
    assert_string_equal(q->path_prefix, "");
    assert_int_equal(q->n_methods, 0);
    assert_false(q->shadow);
    assert_true(q->fail_open);
    assert_int_equal(q->deny_after_milli, 0);
    q = co_policy_find(p, "tiny");
    assert_int_equal(q->floor, 1);              /* max(1, 3 / 8) */
    assert_int_equal(q->deny_after_milli, 1500);
    co_policy_release(p);
}

static void test_protobuf_conversion(void **state)
{
    static const char doc[] =
        "{\"version\": 42, \"sync_interval_ms\": 250, \"clearance_ttl_s\": 9,"
        " \"quotas\": ["
        " {\"name\": \"z-last\", \"key\": \"ip\", \"limit\": 5,"
        "  \"window_s\": 7, \"action\": \"deny\", \"shadow\": true,"
        "  \"fail_open\": false, \"methods\": [\"PUT\", \"PATCH\"],"
        "  \"path_prefix\": \"/x\", \"deny_after\": 2},"
        " {\"name\": \"a.first\", \"key\": \"claim:tenant+header:x-api-key\","
        "  \"limit\": 6, \"window_s\": 8, \"action\": \"challenge\","
        "  \"require_token\": true}]}";
    struct co_policy *p;
    Tollgate__V1__Policy *pb;
    char err[256] = "";

    (void)state;
    if (co_policy_parse(doc, strlen(doc), &p, err, sizeof err) != CO_OK)
        fail_msg("%s", err);
    /* the packed bytes decode to the same document, in document order */
    pb = tollgate__v1__policy__unpack(NULL, p->packed_len, p->packed);
    assert_non_null(pb);
    for (int pass = 0; pass < 2; pass++) {
        const Tollgate__V1__Policy *m = pass ? p->pb : pb;

        assert_int_equal(m->version, 42);
        assert_int_equal(m->sync_interval_ms, 250);
        assert_int_equal(m->clearance_ttl_s, 9);
        assert_int_equal(m->n_quotas, 2);
        assert_string_equal(m->quotas[0]->name, "z-last");
        assert_int_equal(m->quotas[0]->limit, 5);
        assert_int_equal(m->quotas[0]->window_s, 7);
        assert_int_equal(m->quotas[0]->action,
                         TOLLGATE__V1__ACTION__ACTION_DENY);
        assert_true(m->quotas[0]->shadow);
        assert_false(m->quotas[0]->fail_open);
        assert_int_equal(m->quotas[0]->n_methods, 2);
        assert_string_equal(m->quotas[0]->methods[0], "PUT");
        assert_string_equal(m->quotas[0]->methods[1], "PATCH");
        assert_string_equal(m->quotas[0]->path_prefix, "/x");
        assert_true(m->quotas[0]->deny_after == 2.0);
        assert_int_equal(m->quotas[0]->floor, 5);
        assert_string_equal(m->quotas[1]->name, "a.first");
        assert_int_equal(m->quotas[1]->action,
                         TOLLGATE__V1__ACTION__ACTION_CHALLENGE);
        assert_true(m->quotas[1]->fail_open);
        assert_string_equal(m->quotas[1]->key, "claim:tenant+header:x-api-key");
        assert_true(m->quotas[1]->require_token);
        assert_false(m->quotas[0]->require_token);
    }
    tollgate__v1__policy__free_unpacked(pb, NULL);
    /* lookup by name works whatever the document order */
    assert_string_equal(co_policy_find(p, "a.first")->name, "a.first");
    assert_string_equal(co_policy_find(p, "z-last")->name, "z-last");
    assert_null(co_policy_find(p, "a.firs"));
    assert_null(co_policy_find(p, ""));
    co_policy_release(p);
}

/* burst and overrides land in struct co_quota, overrides sorted for
 * co_quota_limit(). */
static void test_burst_and_overrides(void **state)
{
    static const char doc[] =
        "{\"version\": 3, \"quotas\": [{\"name\": \"q\", \"key\": \"ip\","
        " \"limit\": 100, \"window_s\": 60, \"action\": \"deny\","
        " \"burst\": 20, \"overrides\": {\"10.0.0.2\": {\"limit\": 5},"
        " \"10.0.0.1\": {\"limit\": 1000}, \"caf\u00e9\": {\"limit\": 7}}},"
        " {\"name\": \"r\", \"key\": \"ip\", \"limit\": 9,"
        "  \"window_s\": 60, \"action\": \"deny\", \"burst\": 0}]}";
    struct co_policy *p;
    const struct co_quota *q;
    char err[256] = "", big[CO_KEY_MAX + 2];

    (void)state;
    if (co_policy_parse(doc, strlen(doc), &p, err, sizeof err) != CO_OK)
        fail_msg("%s", err);
    q = co_policy_find(p, "q");
    assert_int_equal(q->burst, 20);
    assert_int_equal(q->n_overrides, 3);
    assert_string_equal(q->overrides[0].key, "10.0.0.1");
    assert_string_equal(q->overrides[1].key, "10.0.0.2");
    assert_string_equal(q->overrides[2].key, "caf\xc3\xa9");
    assert_int_equal(co_quota_limit(q, "10.0.0.1"), 1000);
    assert_int_equal(co_quota_limit(q, "10.0.0.2"), 5);
    assert_int_equal(co_quota_limit(q, "caf\xc3\xa9"), 7);
    assert_int_equal(co_quota_limit(q, "10.0.0.3"), 100);
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(co_quota_limit(q, big), 100);
    q = co_policy_find(p, "r");
    assert_int_equal(q->burst, 0);
    assert_int_equal(q->n_overrides, 0);
    assert_null(q->overrides);
    co_policy_release(p);
}

/* Field by field: what the serializer must carry. */
static void assert_same_policy(const struct co_policy *a,
                               const struct co_policy *b)
{
    assert_int_equal(a->sync_interval_ms, b->sync_interval_ms);
    assert_int_equal(a->clearance_ttl_s, b->clearance_ttl_s);
    assert_int_equal(a->expected_edges, b->expected_edges);
    assert_int_equal(a->n_quotas, b->n_quotas);
    for (size_t i = 0; i < a->n_quotas; i++) {
        const struct co_quota *x = &a->quotas[i], *y = &b->quotas[i];

        assert_string_equal(x->name, y->name);
        assert_string_equal(x->key, y->key);
        assert_int_equal(x->limit, y->limit);
        assert_int_equal(x->window_s, y->window_s);
        assert_string_equal(x->path_prefix, y->path_prefix);
        assert_int_equal(x->n_methods, y->n_methods);
        for (unsigned m = 0; m < x->n_methods; m++)
            assert_string_equal(x->methods[m], y->methods[m]);
        assert_int_equal(x->action, y->action);
        assert_int_equal(x->floor, y->floor);
        assert_int_equal(x->floor_set, y->floor_set);
        assert_int_equal(x->shadow, y->shadow);
        assert_int_equal(x->fail_open, y->fail_open);
        assert_int_equal(x->require_token, y->require_token);
        assert_true(x->deny_after == y->deny_after);
        assert_int_equal(x->deny_after_milli, y->deny_after_milli);
        assert_int_equal(x->burst, y->burst);
        assert_int_equal(x->n_overrides, y->n_overrides);
        for (size_t o = 0; o < x->n_overrides; o++) {
            assert_string_equal(x->overrides[o].key, y->overrides[o].key);
            assert_int_equal(x->overrides[o].limit, y->overrides[o].limit);
        }
    }
    /* the wire form too */
    assert_int_equal(a->packed_len, b->packed_len);
    assert_memory_equal(a->packed, b->packed, a->packed_len);
}

static void test_serializer_round_trip(void **state)
{
    static const char doc[] =
        "{\"version\": 5, \"sync_interval_ms\": 250, \"clearance_ttl_s\": 9,"
        " \"expected_edges\": 3, \"quotas\": ["
        " {\"name\": \"z\", \"key\": \"ip+route\", \"limit\": 50,"
        "  \"window_s\": 7, \"action\": \"deny\", \"shadow\": true,"
        "  \"fail_open\": false, \"methods\": [\"PUT\", \"PATCH\"],"
        "  \"path_prefix\": \"/x\", \"deny_after\": 2.5, \"burst\": 9,"
        "  \"floor\": 4, \"overrides\": {\"b/\\\"q\": {\"limit\": 3},"
        "  \"a\": {\"limit\": 99}}},"
        " {\"name\": \"a\", \"key\": \"claim:tenant\", \"limit\": 6,"
        "  \"window_s\": 8, \"action\": \"challenge\","
        "  \"require_token\": true, \"deny_after\": 3}]}";
    static const char want_start[] =
        "{\"version\":7,\"sync_interval_ms\":250,\"clearance_ttl_s\":9,"
        "\"expected_edges\":3,\"quotas\":[{\"name\":\"z\",\"key\":"
        "\"ip+route\",\"limit\":50,\"window_s\":7,\"burst\":9,"
        "\"path_prefix\":\"/x\",\"methods\":[\"PUT\",\"PATCH\"],"
        "\"action\":\"deny\",\"floor\":4,\"shadow\":true,"
        "\"fail_open\":false,\"deny_after\":2.5,\"require_token\":false,"
        "\"overrides\":{\"a\":{\"limit\":99},\"b/\\\"q\":{\"limit\":3}}},"
        "{\"name\":\"a\",";
    struct co_policy *p, *back, *again;
    char err[256] = "", *text, *text2;

    (void)state;
    if (co_policy_parse(doc, strlen(doc), &p, err, sizeof err) != CO_OK)
        fail_msg("%s", err);
    text = co_policy_dump(p, 7);
    assert_non_null(text);
    assert_memory_equal(text, want_start, strlen(want_start));
    /* the default floor stays a default: it follows expected_edges */
    assert_null(strstr(strstr(text, "\"name\":\"a\""), "floor"));
    if (co_policy_parse(text, strlen(text), &back, err, sizeof err) != CO_OK)
        fail_msg("%s: %s", err, text);
    assert_int_equal(back->version, 7);
    assert_int_equal(p->version, 5);
    p->version = 7;        /* only the version may differ, and did */
    co_policy_release(p);
    if (co_policy_parse(doc, strlen(doc), &p, err, sizeof err) != CO_OK)
        fail_msg("%s", err);
    /* the store's form: no version; parse_as gives it one */
    text2 = co_policy_dump(p, 0);
    assert_int_equal(strncmp(text2, "{\"sync_interval_ms\"", 19), 0);
    if (co_policy_parse_as(text2, strlen(text2), 5, &again, err,
                           sizeof err) != CO_OK)
        fail_msg("%s", err);
    assert_int_equal(again->version, 5);
    assert_same_policy(p, again);
    /* and with a version member, parse_as ignores it */
    co_policy_release(again);
    if (co_policy_parse_as(text, strlen(text), 5, &again, err,
                           sizeof err) != CO_OK)
        fail_msg("%s", err);
    assert_int_equal(again->version, 5);
    assert_same_policy(p, again);
    /* back differs from p only by version 7 vs 5: same wire minus that */
    assert_int_equal(back->n_quotas, p->n_quotas);
    assert_string_equal(back->quotas[0].overrides[1].key, "b/\"q");
    free(text);
    free(text2);
    co_policy_release(again);
    co_policy_release(back);
    co_policy_release(p);
}

/* "captcha": validated, kept, serialised back, and carried to edges in
 * Policy.captcha (provider and site key only). */
static void test_captcha_member(void **state)
{
    static const char doc[] =
        "{\"version\": 2, \"captcha\": {\"provider\": \"hcaptcha\","
        " \"site_key\": \"10000000-ffff-ffff-ffff-000000000001\"},"
        " \"quotas\": [{\"name\": \"q\", \"key\": \"ip\", \"limit\": 5,"
        " \"window_s\": 60, \"action\": \"challenge\"}]}";
    static const struct {
        const char *captcha, *err;
    } bad[] = {
        {"[]", "captcha: must be an object"},
        {"{}", "captcha.provider: required"},
        {"{\"provider\": 1}", "captcha.provider: must be a string"},
        {"{\"provider\": \"recaptcha\", \"site_key\": \"k\"}",
         "captcha.provider: must be turnstile, hcaptcha or static"},
        {"{\"provider\": \"turnstile\"}",
         "captcha.site_key: required for turnstile"},
        {"{\"provider\": \"static\", \"site_key\": \"k\"}",
         "captcha.site_key: static has no widget"},
        {"{\"provider\": \"hcaptcha\", \"site_key\": \"a b\"}",
         "captcha.site_key: only [A-Za-z0-9._-]"},
        {"{\"provider\": \"hcaptcha\", \"site_key\": \"k\", \"x\": 1}",
         "captcha.x: unknown field"},
    };
    struct co_policy *p;
    char err[256] = "", *text, json[512];

    (void)state;
    if (co_policy_parse(doc, strlen(doc), &p, err, sizeof err) != CO_OK)
        fail_msg("%s", err);
    assert_string_equal(p->captcha_provider, "hcaptcha");
    assert_string_equal(p->captcha_site_key,
                        "10000000-ffff-ffff-ffff-000000000001");
    assert_non_null(p->pb->captcha);
    assert_string_equal(p->pb->captcha->provider, "hcaptcha");
    assert_string_equal(p->pb->captcha->site_key,
                        "10000000-ffff-ffff-ffff-000000000001");
    text = co_policy_dump(p, 2);
    assert_non_null(strstr(text, "\"captcha\":{\"provider\":\"hcaptcha\","
                           "\"site_key\":\"10000000-ffff-ffff-ffff-"
                           "000000000001\"}"));
    free(text);
    co_policy_release(p);

    /* static: no site key; absent: no Policy.captcha at all */
    snprintf(json, sizeof json, "{\"version\": 1, \"captcha\": {\"provider\":"
             " \"static\"}, \"quotas\": []}");
    if (co_policy_parse(json, strlen(json), &p, err, sizeof err) != CO_OK)
        fail_msg("%s", err);
    assert_string_equal(p->pb->captcha->provider, "static");
    assert_string_equal(p->pb->captcha->site_key, "");
    co_policy_release(p);
    snprintf(json, sizeof json, "{\"version\": 1, \"quotas\": []}");
    if (co_policy_parse(json, strlen(json), &p, err, sizeof err) != CO_OK)
        fail_msg("%s", err);
    assert_null(p->pb->captcha);
    text = co_policy_dump(p, 1);
    assert_null(strstr(text, "captcha"));
    free(text);
    co_policy_release(p);

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(json, sizeof json, "{\"version\": 1, \"captcha\": %s, "
                 "\"quotas\": []}", bad[i].captcha);
        err[0] = '\0';
        if (co_policy_parse(json, strlen(json), &p, err, sizeof err) ==
            CO_OK)
            fail_msg("case %zu accepted", i);
        if (strcmp(err, bad[i].err) != 0)
            fail_msg("case %zu: \"%s\", want \"%s\"", i, err, bad[i].err);
    }
}

static void test_current_policy_is_refcounted(void **state)
{
    static const char d1[] = "{\"version\": 1, \"quotas\": []}";
    static const char d2[] = "{\"version\": 2, \"quotas\": []}";
    struct co_policy *p1, *p2, *held, *now;
    char err[128];

    (void)state;
    assert_null(co_policy_current());
    assert_int_equal(co_policy_parse(d1, strlen(d1), &p1, err, sizeof err),
                     CO_OK);
    assert_int_equal(co_policy_parse(d2, strlen(d2), &p2, err, sizeof err),
                     CO_OK);
    co_policy_install(p1);
    held = co_policy_current();
    assert_ptr_equal(held, p1);
    assert_int_equal(atomic_load(&p1->refs), 2);
    co_policy_install(p2);                 /* p1 lives on for its reader */
    assert_int_equal(atomic_load(&p1->refs), 1);
    assert_int_equal(held->version, 1);
    now = co_policy_current();
    assert_int_equal(now->version, 2);
    co_policy_release(now);
    co_policy_release(held);               /* frees p1 (ASan checks) */
    co_policy_install(NULL);               /* frees p2 */
    assert_null(co_policy_current());
}

/* A policy of n quotas "q0".."q<n-1>" whose key i is key(i) (a buffer the
 * caller frees). */
static char *policy_of(size_t n, void (*key)(size_t, char *, size_t))
{
    size_t cap = 256 + n * 400, o = 0;
    char *doc = malloc(cap), k[200];

    assert_non_null(doc);
    o += (size_t)snprintf(doc + o, cap - o, "{\"version\":1,\"quotas\":[");
    for (size_t i = 0; i < n; i++) {
        key(i, k, sizeof k);
        o += (size_t)snprintf(doc + o, cap - o, "%s{\"name\":\"q%zu\","
                              "\"key\":\"%s\",\"limit\":10,\"window_s\":60,"
                              "\"action\":\"deny\"}",
                              i ? "," : "", i, k);
    }
    snprintf(doc + o, cap - o, "]}");
    return doc;
}

static void key_ip(size_t i, char *k, size_t n) { (void)i; snprintf(k, n, "ip"); }
static void key_claim(size_t i, char *k, size_t n) { snprintf(k, n, "ip+claim:c%zu", i); }
static void key_header(size_t i, char *k, size_t n) { snprintf(k, n, "header:x-h%zu", i); }
static void key_shared(size_t i, char *k, size_t n)
{
    snprintf(k, n, "claim:c%zu+header:x-h%zu", i % TG_CAP_CLAIMS,
             i % TG_CAP_HEADERS);
}

/* Whether doc parses; err gets the refusal. */
static int parse_doc(char *doc, char *err, size_t errlen)
{
    struct co_policy *p = NULL;
    int rc = co_policy_parse(doc, strlen(doc), &p, err, errlen);

    if (rc == CO_OK)
        co_policy_release(p);
    free(doc);
    return rc;
}

/* The validator reads the caps the edge core is built with
 * (tollgate_caps.h): the most an edge holds is accepted, one more is
 * refused with the field's path and the cap. */
static void test_edge_caps_refused(void **state)
{
    char err[256], want[64];

    (void)state;
    assert_int_equal(CO_QUOTAS_MAX, TG_CAP_QUOTAS);
    assert_int_equal(CO_CLAIMS_MAX, TG_CAP_CLAIMS);
    assert_int_equal(CO_HEADERS_MAX, TG_CAP_HEADERS);
    assert_int_equal(parse_doc(policy_of(TG_CAP_QUOTAS, key_ip), err,
                               sizeof err), CO_OK);
    assert_int_equal(parse_doc(policy_of(TG_CAP_QUOTAS + 1, key_ip), err,
                               sizeof err), CO_EINVAL);
    snprintf(want, sizeof want, "quotas: %d quotas, over the cap of %d",
             TG_CAP_QUOTAS + 1, TG_CAP_QUOTAS);
    assert_non_null(strstr(err, want));

    /* Names shared between quotas count once. */
    assert_int_equal(parse_doc(policy_of(TG_CAP_QUOTAS, key_shared), err,
                               sizeof err), CO_OK);
    assert_int_equal(parse_doc(policy_of(TG_CAP_CLAIMS, key_claim), err,
                               sizeof err), CO_OK);
    assert_int_equal(parse_doc(policy_of(TG_CAP_CLAIMS + 1, key_claim), err,
                               sizeof err), CO_EINVAL);
    snprintf(want, sizeof want, "quotas[%d].key: ", TG_CAP_CLAIMS);
    assert_ptr_equal(strstr(err, want), err);
    snprintf(want, sizeof want, "more than %d distinct claim names",
             TG_CAP_CLAIMS);
    assert_non_null(strstr(err, want));

    assert_int_equal(parse_doc(policy_of(TG_CAP_HEADERS, key_header), err,
                               sizeof err), CO_OK);
    assert_int_equal(parse_doc(policy_of(TG_CAP_HEADERS + 1, key_header),
                               err, sizeof err), CO_EINVAL);
    snprintf(want, sizeof want, "quotas[%d].key: ", TG_CAP_HEADERS);
    assert_ptr_equal(strstr(err, want), err);
    snprintf(want, sizeof want, "more than %d distinct header names",
             TG_CAP_HEADERS);
    assert_non_null(strstr(err, want));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_example_policy_loads),
        cmocka_unit_test(test_missing_file_is_an_error),
        cmocka_unit_test(test_invalid_documents_name_the_field),
        cmocka_unit_test(test_claim_paths_accepted),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_protobuf_conversion),
        cmocka_unit_test(test_burst_and_overrides),
        cmocka_unit_test(test_serializer_round_trip),
        cmocka_unit_test(test_captcha_member),
        cmocka_unit_test(test_current_policy_is_refcounted),
        cmocka_unit_test(test_edge_caps_refused),
    };

    atomic_store(&co_log_min_level, CO_LOG_ERROR + 1);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
