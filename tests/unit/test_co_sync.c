/* test_co_sync.c — (sync.c) POST /v1/sync as a function: request bytes and
 * headers in, status and response bytes out. Most tests replace the Redis
 * call and the wall clock by mocks (-Wl,--wrap) and check what reaches Redis
 * (KEYS/ARGV exactly), what the edge gets back (decoded with protobuf-c),
 * the 401s of edge authentication and the degraded answer. The last group
 * passes the Redis call through to a real redis-server this test starts, for
 * what only the script can decide: retries, stale seqs, replayed signatures,
 * a per-key override and burst end to end.
 */
// test-ldflags: -Wl,--wrap=co_redis_eval_ints -Wl,--wrap=co_wall_ms
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
#include "test_redis_server.h"
#include "test_sync_sign.h"

#define NOW_MS 1700000000123ULL

static const char policy_json[] =
    "{\"version\": 3, \"sync_interval_ms\": 5000, \"clearance_ttl_s\": 60,"
    " \"expected_edges\": 4, \"quotas\": ["
    "  {\"name\": \"per-ip\", \"key\": \"ip\", \"limit\": 100,"
    "   \"window_s\": 60, \"action\": \"challenge\", \"floor\": 10},"
    "  {\"name\": \"login\", \"key\": \"ip\", \"limit\": 10, \"window_s\": 30,"
    "   \"path_prefix\": \"/login\", \"methods\": [\"POST\"],"
    "   \"action\": \"deny\", \"deny_after\": 3, \"fail_open\": false}]}";

/* policy_json with a burst and two per-key overrides on per-ip: one under
 * its limit of 100, one over it. */
static const char policy_overrides_json[] =
    "{\"version\": 3, \"sync_interval_ms\": 5000, \"clearance_ttl_s\": 60,"
    " \"expected_edges\": 4, \"quotas\": ["
    "  {\"name\": \"per-ip\", \"key\": \"ip\", \"limit\": 100,"
    "   \"window_s\": 60, \"action\": \"challenge\", \"floor\": 10,"
    "   \"burst\": 25, \"overrides\": {\"2.2.2.2\": {\"limit\": 500},"
    "                                 \"10.0.0.9\": {\"limit\": 7}}},"
    "  {\"name\": \"login\", \"key\": \"ip\", \"limit\": 10, \"window_s\": 30,"
    "   \"path_prefix\": \"/login\", \"methods\": [\"POST\"],"
    "   \"action\": \"deny\", \"deny_after\": 3, \"fail_open\": false}]}";

/* The coordinator's keys; edges e1, edge-7 and big sign syncs. */
static const char keys_text[] =
    "challenge c1 "
    "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1\n"
    "clearance k1 "
    "d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1\n"
    "edge e1 "
    "e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1\n"
    "edge edge-7 "
    "e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7\n"
    "edge big "
    "b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1\n";

/* ------------------------------------------------------------ mocks */
int __real_co_redis_eval_ints(struct co_script_call *calls, size_t ncalls,
                              char *err, size_t errlen);
int __wrap_co_redis_eval_ints(struct co_script_call *calls, size_t ncalls,
                              char *err, size_t errlen);
uint64_t __wrap_co_wall_ms(void);

static struct {
    int calls;               /* co_redis_eval_ints() invocations */
    size_t ncalls;           /* script calls in the last one */
    size_t nkeys, nargs;     /* of its first script call */
    char **argv;             /* copies, NUL-terminated */
    size_t *lens;
    size_t nout;             /* integers of all its script calls */
} seen;
static int mock_rc;
static long long mock_head[3];          /* status, conflict seq, item */
static long long mock_reply[64];        /* 4 per item, repeated */
static bool real_redis;                 /* pass through to redis-server */

static void seen_clear(void)
{
    for (size_t i = 0; seen.argv != NULL && i < seen.nkeys + seen.nargs; i++)
        free(seen.argv[i]);
    free(seen.argv);
    free(seen.lens);
    memset(&seen, 0, sizeof seen);
}

int __wrap_co_redis_eval_ints(struct co_script_call *calls, size_t ncalls,
                              char *err, size_t errlen)
{
    size_t n = calls[0].nkeys + calls[0].nargs;
    int nth = seen.calls + 1;

    seen_clear();
    seen.calls = nth;
    seen.ncalls = ncalls;
    seen.nkeys = calls[0].nkeys;
    seen.nargs = calls[0].nargs;
    seen.argv = calloc(n, sizeof *seen.argv);
    seen.lens = calloc(n, sizeof *seen.lens);
    for (size_t i = 0; i < n; i++) {
        seen.argv[i] = calloc(1, calls[0].argvlen[i] + 1);
        memcpy(seen.argv[i], calls[0].argv[i], calls[0].argvlen[i]);
        seen.lens[i] = calls[0].argvlen[i];
    }
    for (size_t c = 0; c < ncalls; c++)
        seen.nout += calls[c].nout;
    if (real_redis)
        return __real_co_redis_eval_ints(calls, ncalls, err, errlen);
    if (mock_rc != CO_OK) {
        snprintf(err, errlen, "mocked failure");
        return mock_rc;
    }
    for (size_t c = 0; c < ncalls; c++) {
        memcpy(calls[c].out, mock_head, sizeof mock_head);
        for (size_t i = 3; i < calls[c].nout; i++)
            calls[c].out[i] = mock_reply[(i - 3) % 64];
    }
    return CO_OK;
}

uint64_t __wrap_co_wall_ms(void)
{
    return NOW_MS;
}

/* ------------------------------------------------------------ signing */
/* Sign body as edge at ts_ms with the first key of the edge's name. */
static void sign(struct hdrs *h, const char *edge, uint64_t ts_ms,
                 const uint8_t *body, size_t len)
{
    const struct co_key *k;

    assert_true(co_keys_edge(&co_keys, edge, strcspn(edge, "/"), &k) > 0);
    sign_body(h, edge, ts_ms, k->secret, k->len, body, len);
}

/* ------------------------------------------------------------ helpers */
struct kc_spec {
    const char *quota, *key;
    uint64_t admitted, denied, challenged;
};

/* Pack a SyncRequest; the caller frees *out. */
static size_t pack_request(const char *edge, uint64_t seq, uint64_t pv,
                           const struct kc_spec *kcs, size_t n, uint8_t **out)
{
    Tollgate__V1__SyncRequest r = TOLLGATE__V1__SYNC_REQUEST__INIT;
    Tollgate__V1__KeyCount *kc = calloc(n ? n : 1, sizeof *kc);
    Tollgate__V1__KeyCount **kp = calloc(n ? n : 1, sizeof *kp);
    size_t len;

    for (size_t i = 0; i < n; i++) {
        Tollgate__V1__KeyCount init = TOLLGATE__V1__KEY_COUNT__INIT;

        kc[i] = init;
        kc[i].quota = (char *)kcs[i].quota;
        kc[i].key = (char *)kcs[i].key;
        kc[i].admitted = kcs[i].admitted;
        kc[i].denied = kcs[i].denied;
        kc[i].challenged = kcs[i].challenged;
        kp[i] = &kc[i];
    }
    r.edge_id = (char *)edge;
    r.seq = seq;
    r.policy_version = pv;
    r.module_version = "test";
    r.n_counts = n;
    r.counts = kp;
    len = tollgate__v1__sync_request__get_packed_size(&r);
    *out = malloc(len ? len : 1);
    assert_int_equal(tollgate__v1__sync_request__pack(&r, *out), len);
    free(kp);
    free(kc);
    return len;
}

static void run_with(const struct hdrs *h, const uint8_t *body, size_t len,
                     struct co_response *resp)
{
    struct co_request req = {
        .method = "POST", .path = "/v1/sync",
        .content_type = "application/x-protobuf",
        .body = body, .body_len = len,
        .header = fake_header, .conn = (void *)h,
    };

    memset(resp, 0, sizeof *resp);
    co_sync_handle(&req, resp);
}

/* Run body signed by edge "e1" now. */
static void run(const uint8_t *body, size_t len, struct co_response *resp)
{
    struct hdrs h;

    sign(&h, "e1", NOW_MS, body, len);
    run_with(&h, body, len, resp);
}

/* Run a request that must succeed; the caller frees the decoded answer. */
static Tollgate__V1__SyncResponse *run_ok(const char *edge, uint64_t seq,
                                          uint64_t pv,
                                          const struct kc_spec *kcs, size_t n)
{
    struct co_response resp;
    Tollgate__V1__SyncResponse *out;
    uint8_t *body;
    size_t len = pack_request(edge, seq, pv, kcs, n, &body);
    struct hdrs h;
    static unsigned signed_before;

    /* each request signed at another ms: a new signature, as a resend */
    sign(&h, edge, NOW_MS - signed_before++ % 20000, body, len);
    run_with(&h, body, len, &resp);
    free(body);
    assert_int_equal(resp.status, 200);
    assert_string_equal(resp.content_type, "application/x-protobuf");
    out = tollgate__v1__sync_response__unpack(NULL, resp.body_len, resp.body);
    assert_non_null(out);
    co_response_clear(&resp);
    return out;
}

static void assert_400(const uint8_t *body, size_t len, const char *detail)
{
    struct co_response resp;
    json_error_t jerr;
    json_t *doc;

    seen.calls = 0;
    run(body, len, &resp);
    assert_int_equal(resp.status, 400);
    assert_string_equal(resp.content_type, "application/problem+json");
    doc = json_loadb((const char *)resp.body, resp.body_len, 0, &jerr);
    assert_non_null(doc);
    if (strstr(json_string_value(json_object_get(doc, "detail")),
               detail) == NULL)
        fail_msg("detail \"%s\" lacks \"%s\"",
                 json_string_value(json_object_get(doc, "detail")), detail);
    assert_int_equal(json_integer_value(json_object_get(doc, "status")), 400);
    json_decref(doc);
    co_response_clear(&resp);
    assert_int_equal(seen.calls, 0);
}

static void assert_state(const Tollgate__V1__KeyState *s, const char *quota,
                         const char *key, Tollgate__V1__Action action,
                         uint64_t lease, uint64_t reset_ms, uint64_t count)
{
    assert_string_equal(s->quota, quota);
    assert_string_equal(s->key, key);
    assert_int_equal(s->action, action);
    assert_int_equal(s->lease, lease);
    assert_int_equal(s->reset_ms, reset_ms);
    assert_int_equal(s->count, count);
}

static int setup(void **state)
{
    struct co_policy *p;
    char err[256];

    (void)state;
    if (co_policy_parse(policy_json, strlen(policy_json), &p, err,
                        sizeof err) != CO_OK) {
        fprintf(stderr, "policy: %s\n", err);
        return -1;
    }
    co_policy_install(p);
    if (co_keys_parse(keys_text, strlen(keys_text), &co_keys, err,
                      sizeof err) != CO_OK) {
        fprintf(stderr, "keys: %s\n", err);
        return -1;
    }
    atomic_store(&co_log_min_level, CO_LOG_ERROR + 1);  /* quiet */
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    co_policy_install(NULL);
    co_keys_free(&co_keys);
    seen_clear();
    return 0;
}

static int reset_mock(void **state)
{
    (void)state;
    seen_clear();
    mock_rc = CO_OK;
    memset(mock_head, 0, sizeof mock_head);
    memset(mock_reply, 0, sizeof mock_reply);
    return 0;
}

/* Parse json and make it the current policy. */
static void install_json(const char *json)
{
    struct co_policy *p;
    char err[256];

    if (co_policy_parse(json, strlen(json), &p, err, sizeof err) != CO_OK)
        fail_msg("policy: %s", err);
    co_policy_install(p);
}

/* ------------------------------------------------------------ tests */
static void test_malformed_protobuf_is_400(void **state)
{
    static const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t past_end[] = {0x0a, 0x7f, 0x41};
    static const uint8_t group[] = {0x0b, 0x0c};           /* wire type 3 */
    static const uint8_t field0[] = {0x02, 0x00};          /* field number 0 */
    static const uint8_t bad_varint[] = {0x10, 0x80, 0x80}; /* seq cut off */
    struct kc_spec kc = {"per-ip", "1.2.3.4", 1, 0, 0};
    uint8_t *body;
    size_t len;

    (void)state;
    assert_400(NULL, 0, "edge_id");     /* empty body: an empty message */
    assert_400(garbage, sizeof garbage, "malformed protobuf");
    assert_400(past_end, sizeof past_end, "malformed protobuf");
    assert_400(group, sizeof group, "malformed protobuf");
    assert_400(field0, sizeof field0, "malformed protobuf");
    assert_400(bad_varint, sizeof bad_varint, "malformed protobuf");
    /* a valid request cut anywhere inside its last field */
    len = pack_request("e1", 1, 0, &kc, 1, &body);
    for (size_t cut = 1; cut <= 3; cut++)
        assert_400(body, len - cut, "malformed protobuf");
    /* a KeyCount whose inner bytes are broken */
    body[len - 1] = 0x80;   /* admitted varint now never ends */
    assert_400(body, len, "malformed protobuf");
    free(body);
}

static void test_invalid_fields_are_400(void **state)
{
    char long_quota[CO_QUOTA_NAME_MAX + 2], long_key[CO_KEY_MAX + 2];
    char long_edge[CO_EDGE_ID_MAX + 2];
    struct {
        const char *edge;
        uint64_t seq;
        struct kc_spec kc;
        const char *detail;
    } cases[] = {
        {"", 1, {"per-ip", "k", 1, 0, 0}, "edge_id"},
        {long_edge, 1, {"per-ip", "k", 1, 0, 0}, "edge_id"},
        {"edge one", 1, {"per-ip", "k", 1, 0, 0}, "edge_id"},
        {"e1", 0, {"per-ip", "k", 1, 0, 0}, "seq"},
        {"e1", 1, {"", "k", 1, 0, 0}, "counts[0].quota"},
        {"e1", 1, {long_quota, "k", 1, 0, 0}, "counts[0].quota"},
        {"e1", 1, {"per-ip", long_key, 1, 0, 0}, "counts[0].key"},
        {"e1", 1, {"per-ip", "k", CO_COUNT_MAX + 1, 0, 0}, "counts[0]"},
        {"e1", 1, {"per-ip", "k", 0, 0, CO_COUNT_MAX + 1}, "counts[0]"},
    };

    (void)state;
    memset(long_quota, 'q', sizeof long_quota - 1);
    long_quota[sizeof long_quota - 1] = '\0';
    memset(long_key, 'k', sizeof long_key - 1);
    long_key[sizeof long_key - 1] = '\0';
    memset(long_edge, 'e', sizeof long_edge - 1);
    long_edge[sizeof long_edge - 1] = '\0';
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t *body;
        size_t len = pack_request(cases[i].edge, cases[i].seq, 0,
                                  &cases[i].kc, 1, &body);

        assert_400(body, len, cases[i].detail);
        free(body);
    }
}

static void test_too_many_counts_is_400(void **state)
{
    size_t n = CO_SYNC_COUNTS_MAX + 1, len = 4 + 2 * n;
    uint8_t *body = malloc(len);

    (void)state;
    memcpy(body, "\x0a\x02" "e1", 4);
    for (size_t i = 0; i < n; i++) {
        body[4 + 2 * i] = 0x32;       /* field 6, length-delimited */
        body[4 + 2 * i + 1] = 0x00;   /* empty KeyCount */
    }
    assert_400(body, len, "counts: at most 10000");
    free(body);
}

static void test_batch_reaches_redis_as_one_call(void **state)
{
    const struct kc_spec kcs[] = {
        {"per-ip", "1.2.3.4", 5, 1, 2},
        {"nosuch", "x", 1, 0, 0},
        {"login", "a{b}|c%d", 2, 3, 0},
    };
    /* "*": checked below (the replay key and the nonce vary) */
    const char *want[] = {
        "*",
        "tg:{per-ip|1.2.3.4}:c", "tg:{per-ip|1.2.3.4}:e",
        "tg:{login|a%7Bb%7D%7Cc%25d}:c", "tg:{login|a%7Bb%7D%7Cc%25d}:e",
        "1700000000123", "edge-7", "7", "5000", "*", "65000", "2",
        "100", "60000", "1", "0", "5", "8", "0",
        "10", "30000", "2", "3000", "2", "5", "0",
        "*",    /* the batch digest: below */
    };
    const long long reply[] = {0, 40, 30000, 55, 2, 0, 1234, 12};
    Tollgate__V1__SyncResponse *r;

    (void)state;
    memcpy(mock_reply, reply, sizeof reply);
    r = run_ok("edge-7", 7, 0, kcs, 3);
    assert_int_equal(seen.calls, 1);
    assert_int_equal(seen.ncalls, 1);
    assert_int_equal(seen.nkeys, 5);
    assert_int_equal(seen.nargs, 22);
    assert_int_equal(seen.nout, 11);
    /* decimal, below 2^53, and not the empty batch's */
    assert_true(strspn(seen.argv[26], "0123456789") == seen.lens[26]);
    assert_true(strtoull(seen.argv[26], NULL, 10) <= CO_SEQ_MAX);
    assert_string_not_equal(seen.argv[26], "1424625411883907");
    assert_int_equal(strlen(seen.argv[0]), strlen("tg:{edge|edge-7}:sig:") +
                                           32);
    assert_memory_equal(seen.argv[0], "tg:{edge|edge-7}:sig:", 21);
    assert_int_equal(strlen(seen.argv[9]), 32);     /* nonce */
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        if (strcmp(want[i], "*") == 0)
            continue;
        if (strcmp(seen.argv[i], want[i]) != 0)
            fail_msg("argv[%zu] = \"%s\", want \"%s\"", i, seen.argv[i],
                     want[i]);
        assert_int_equal(seen.lens[i], strlen(want[i]));
    }

    assert_int_equal(r->acked_seq, 7);
    assert_false(r->degraded);
    assert_int_equal(r->next_sync_ms, 5000);
    assert_int_equal(r->policy_version, 3);
    assert_int_equal(r->server_time_ms, NOW_MS);
    assert_int_equal(r->n_states, 3);
    assert_state(r->states[0], "per-ip", "1.2.3.4",
                 TOLLGATE__V1__ACTION__ACTION_ALLOW, 40, 30000, 55);
    assert_string_equal(r->states[0]->challenge_token, "");
    assert_state(r->states[1], "nosuch", "x",
                 TOLLGATE__V1__ACTION__ACTION_ALLOW, 0, 0, 0);
    assert_state(r->states[2], "login", "a{b}|c%d",
                 TOLLGATE__V1__ACTION__ACTION_DENY, 0, 1234, 12);
    assert_string_equal(r->states[2]->challenge_token, "");
    tollgate__v1__sync_response__free_unpacked(r, NULL);
}

/* Each item carries its key's own limit: the override's for an
 * overridden key, the quota's for its siblings and for the same key under
 * another quota; and its quota's burst. */
static void test_overrides_reach_redis_per_key(void **state)
{
    const struct kc_spec kcs[] = {
        {"per-ip", "1.2.3.4", 1, 0, 0},
        {"per-ip", "10.0.0.9", 1, 0, 0},
        {"login", "10.0.0.9", 1, 0, 0},
        {"per-ip", "2.2.2.2", 1, 0, 0},
    };
    const char *limit[] = {"100", "7", "10", "500"};
    const char *burst[] = {"25", "25", "0", "25"};
    Tollgate__V1__SyncResponse *r;

    (void)state;
    install_json(policy_overrides_json);
    r = run_ok("e1", 1, 3, kcs, 4);
    assert_int_equal(seen.nkeys, 1 + 2 * 4);
    assert_int_equal(seen.nargs, 7 + 7 * 4 + 1);
    for (size_t i = 0; i < 4; i++) {
        const char *const *item = (const char *const *)seen.argv +
                                  seen.nkeys + 7 + 7 * i;

        if (strcmp(item[0], limit[i]) != 0)
            fail_msg("item %zu: limit %s, want %s", i, item[0], limit[i]);
        assert_string_equal(item[1], i == 2 ? "30000" : "60000");
        if (strcmp(item[6], burst[i]) != 0)
            fail_msg("item %zu: burst %s, want %s", i, item[6], burst[i]);
    }
    tollgate__v1__sync_response__free_unpacked(r, NULL);
    install_json(policy_json);
}

static void test_policy_sent_only_when_versions_differ(void **state)
{
    const struct kc_spec kc = {"per-ip", "k", 1, 0, 0};
    const long long reply[] = {0, 1, 1, 1};
    Tollgate__V1__SyncResponse *r;
    const Tollgate__V1__Quota *q;

    (void)state;
    memcpy(mock_reply, reply, sizeof reply);
    r = run_ok("e1", 1, 3, &kc, 1);
    assert_null(r->policy);
    assert_int_equal(r->policy_version, 3);
    tollgate__v1__sync_response__free_unpacked(r, NULL);

    for (uint64_t pv = 0; pv <= 4; pv += 2) {   /* none yet, older, newer */
        r = run_ok("e1", 2, pv, &kc, 1);
        assert_non_null(r->policy);
        assert_int_equal(r->policy->version, 3);
        assert_int_equal(r->policy->sync_interval_ms, 5000);
        assert_int_equal(r->policy->clearance_ttl_s, 60);
        assert_int_equal(r->policy->n_quotas, 2);
        q = r->policy->quotas[1];
        assert_string_equal(q->name, "login");
        assert_int_equal(q->limit, 10);
        assert_int_equal(q->window_s, 30);
        assert_string_equal(q->key, "ip");
        assert_string_equal(q->path_prefix, "/login");
        assert_int_equal(q->n_methods, 1);
        assert_string_equal(q->methods[0], "POST");
        assert_int_equal(q->action, TOLLGATE__V1__ACTION__ACTION_DENY);
        assert_int_equal(q->floor, 2);           /* max(1, 10 / 4) */
        assert_false(q->fail_open);
        assert_true(q->deny_after == 3.0);
        tollgate__v1__sync_response__free_unpacked(r, NULL);
    }
}

static void test_challenge_carries_a_valid_token(void **state)
{
    const struct kc_spec kc = {"per-ip", "203.0.113.7", 30, 0, 0};
    const long long reply[] = {1, 0, 777, 130};
    struct co_challenge_claims claims;
    uint8_t want_hash[16];
    Tollgate__V1__SyncResponse *r;
    const char *tok;

    (void)state;
    memcpy(mock_reply, reply, sizeof reply);
    r = run_ok("e1", 9, 3, &kc, 1);
    assert_state(r->states[0], "per-ip", "203.0.113.7",
                 TOLLGATE__V1__ACTION__ACTION_CHALLENGE, 0, 777, 130);
    tok = r->states[0]->challenge_token;
    assert_true(strlen(tok) > 20);
    assert_int_equal(co_challenge_check(&co_keys, tok, strlen(tok),
                                        NOW_MS / 1000, &claims), CO_OK);
    assert_string_equal(claims.quota, "per-ip");
    assert_int_equal(claims.issued_at_s, NOW_MS / 1000);
    assert_int_equal(claims.expires_at_s, NOW_MS / 1000 + CO_CHALLENGE_TTL_S);
    co_challenge_key_hash("per-ip", "203.0.113.7", 11, want_hash);
    assert_memory_equal(claims.key_hash, want_hash, 16);
    /* the raw key is not in the token */
    assert_null(strstr(tok, "203.0.113.7"));
    tollgate__v1__sync_response__free_unpacked(r, NULL);
}

static void check_degraded(int rc)
{
    const struct kc_spec kcs[] = {
        {"per-ip", "1.2.3.4", 5, 0, 0},
        {"nosuch", "x", 1, 0, 0},
        {"login", "1.2.3.4", 1, 0, 0},
    };
    Tollgate__V1__SyncResponse *r;

    mock_rc = rc;
    r = run_ok("e1", 11, 3, kcs, 3);
    assert_int_equal(seen.calls, 1);
    assert_true(r->degraded);
    assert_int_equal(r->acked_seq, 0);
    assert_int_equal(r->next_sync_ms, 1000);    /* min(5000, 1000) */
    assert_int_equal(r->n_states, 3);
    /* degraded: ALLOW and no lease; edges use their own allowance */
    assert_state(r->states[0], "per-ip", "1.2.3.4",
                 TOLLGATE__V1__ACTION__ACTION_ALLOW, 0, 0, 0);
    assert_state(r->states[1], "nosuch", "x",
                 TOLLGATE__V1__ACTION__ACTION_ALLOW, 0, 0, 0);
    assert_state(r->states[2], "login", "1.2.3.4",
                 TOLLGATE__V1__ACTION__ACTION_ALLOW, 0, 0, 0);
    tollgate__v1__sync_response__free_unpacked(r, NULL);
}

static void test_redis_down_is_degraded(void **state)
{
    (void)state;
    check_degraded(CO_EREDIS);
}

static void test_redis_error_reply_is_degraded(void **state)
{
    (void)state;
    check_degraded(CO_EREPLY);
}

static void test_out_of_range_reply_is_degraded(void **state)
{
    const struct kc_spec kc = {"per-ip", "k", 1, 0, 0};
    const long long reply[] = {7, 1, 1, 1};
    Tollgate__V1__SyncResponse *r;

    (void)state;
    memcpy(mock_reply, reply, sizeof reply);
    r = run_ok("e1", 4, 3, &kc, 1);
    assert_true(r->degraded);
    assert_int_equal(r->acked_seq, 0);
    assert_int_equal(r->states[0]->action,
                     TOLLGATE__V1__ACTION__ACTION_ALLOW);
    assert_int_equal(r->states[0]->lease, 0);
    tollgate__v1__sync_response__free_unpacked(r, NULL);
}

/* Keys of quotas the policy lacks are answered ALLOW without Redis; the
 * call still happens, with no items, for the replay check. */
static void test_unknown_quotas_only_check_the_replay(void **state)
{
    const struct kc_spec kcs[] = {
        {"gone", "1.2.3.4", 5, 0, 0},
        {"also-gone", "5.6.7.8", 1, 1, 1},
    };
    Tollgate__V1__SyncResponse *r;

    (void)state;
    r = run_ok("e1", 5, 3, kcs, 2);
    assert_int_equal(seen.calls, 1);
    assert_int_equal(seen.nkeys, 1);
    assert_int_equal(seen.nargs, 8);
    assert_string_equal(seen.argv[7], "0");
    assert_string_equal(seen.argv[8], "1424625411883907");   /* empty batch digest */
    assert_false(r->degraded);
    assert_int_equal(r->acked_seq, 5);
    assert_int_equal(r->next_sync_ms, 5000);
    assert_state(r->states[0], "gone", "1.2.3.4",
                 TOLLGATE__V1__ACTION__ACTION_ALLOW, 0, 0, 0);
    assert_state(r->states[1], "also-gone", "5.6.7.8",
                 TOLLGATE__V1__ACTION__ACTION_ALLOW, 0, 0, 0);
    tollgate__v1__sync_response__free_unpacked(r, NULL);
}

static void test_empty_batch_is_acked(void **state)
{
    Tollgate__V1__SyncResponse *r;

    (void)state;
    r = run_ok("e1", 1, 0, NULL, 0);
    assert_int_equal(seen.calls, 1);
    assert_int_equal(r->acked_seq, 1);
    assert_int_equal(r->n_states, 0);
    assert_non_null(r->policy);
    tollgate__v1__sync_response__free_unpacked(r, NULL);
}

/* Parse a problem+json answer and check status and detail prefix. */
static void assert_problem(struct co_response *resp, unsigned status,
                           const char *detail)
{
    json_error_t jerr;
    json_t *doc;
    const char *d;

    assert_int_equal(resp->status, status);
    assert_string_equal(resp->content_type, "application/problem+json");
    doc = json_loadb((const char *)resp->body, resp->body_len, 0, &jerr);
    assert_non_null(doc);
    d = json_string_value(json_object_get(doc, "detail"));
    if (strncmp(d, detail, strlen(detail)) != 0)
        fail_msg("detail \"%s\" does not start with \"%s\"", d, detail);
    assert_int_equal(json_integer_value(json_object_get(doc, "status")),
                     status);
    json_decref(doc);
}

/* Authentication comes first: an unsigned body is refused before it is
 * even parsed, and nothing reaches Redis. */
static void test_unsigned_or_forged_is_401(void **state)
{
    static const uint8_t garbage[] = {0xff, 0xff, 0xff};
    const struct kc_spec kc = {"per-ip", "k", 1, 0, 0};
    struct co_response resp;
    struct hdrs h;
    uint8_t *body;
    size_t len = pack_request("e1", 1, 0, &kc, 1, &body);
    unsigned long long before =
        atomic_load(&co_metrics.auth_failures[CO_AUTH_MISSING_SIGNATURE]);

    (void)state;
    run_with(NULL, garbage, sizeof garbage, &resp);
    assert_problem(&resp, 401, "missing_signature");
    assert_string_equal(resp.extra.name, "WWW-Authenticate");
    assert_string_equal(resp.extra.value, "Tollgate-HMAC-SHA256");
    co_response_clear(&resp);
    assert_int_equal(atomic_load(&co_metrics.auth_failures[
                         CO_AUTH_MISSING_SIGNATURE]), before + 1);
    /* signed for another body */
    sign(&h, "e1", NOW_MS, garbage, sizeof garbage);
    run_with(&h, body, len, &resp);
    assert_problem(&resp, 401, "bad_signature");
    co_response_clear(&resp);
    /* a header edge that is not the body's edge_id */
    sign(&h, "edge-7", NOW_MS, body, len);
    run_with(&h, body, len, &resp);
    assert_problem(&resp, 401, "edge_mismatch");
    assert_string_equal(resp.extra.name, "WWW-Authenticate");
    co_response_clear(&resp);
    assert_int_equal(seen.calls, 0);
    free(body);
}

/* 1200 known keys go out as three pipelined calls; the answers land on
 * the right KeyStates. */
static void test_big_batch_is_split(void **state)
{
    enum { N = 1200 };
    static struct kc_spec kcs[N];
    static char keys[N][16];
    Tollgate__V1__SyncResponse *r;

    (void)state;
    for (size_t i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "k%zu", i);
        kcs[i] = (struct kc_spec){"per-ip", keys[i], 1, 0, 0};
    }
    for (int i = 0; i < 64; i += 4) {
        mock_reply[i] = 0;
        mock_reply[i + 1] = i / 4;      /* lease: the item's index mod 16 */
    }
    r = run_ok("e1", 2, 3, kcs, N);
    assert_int_equal(seen.ncalls, 3);
    assert_int_equal(seen.nkeys, 1 + 2 * 512);
    assert_int_equal(seen.nout, 3 * 3 + 4 * N);
    assert_int_equal(r->n_states, N);
    for (size_t i = 0; i < N; i++) {
        assert_string_equal(r->states[i]->key, keys[i]);
        assert_int_equal(r->states[i]->lease, (i % 512) % 16);
    }
    tollgate__v1__sync_response__free_unpacked(r, NULL);
}

/* ------------------------------------------------------------ real Redis */
static struct test_redis redis;

static int setup_real(void **state)
{
    struct co_redis_target t;
    char err[256], url[64];

    if (setup(state) != 0 || test_redis_start(&redis) != 0)
        return -1;
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", redis.port);
    if (co_redis_parse_url(url, 1000, &t, err, sizeof err) != CO_OK ||
        co_redis_init(&t, err, sizeof err) != CO_OK) {
        fprintf(stderr, "redis: %s\n", err);
        return -1;
    }
    real_redis = true;
    return 0;
}

static int teardown_real(void **state)
{
    real_redis = false;
    co_redis_shutdown();
    test_redis_stop(&redis);
    return teardown(state);
}

/* The admitted count Redis holds for tg:{per-ip|key}, or -1. */
static long long admitted_in_redis(const char *quota, const char *key)
{
    redisReply *r = redisCommand(redis.admin, "HGET tg:{%s|%s}:c a", quota,
                                 key);
    long long v = r != NULL && r->type == REDIS_REPLY_STRING
                      ? strtoll(r->str, NULL, 10) : -1;

    freeReplyObject(r);
    return v;
}

/* The same signed request twice: the second is a replay. */
static void test_replayed_request_is_401(void **state)
{
    const struct kc_spec kc = {"per-ip", "replay", 3, 0, 0};
    struct co_response resp;
    struct hdrs h;
    uint8_t *body;
    size_t len = pack_request("e1", 1, 3, &kc, 1, &body);

    (void)state;
    sign(&h, "e1", NOW_MS - 1000, body, len);
    run_with(&h, body, len, &resp);
    assert_int_equal(resp.status, 200);
    co_response_clear(&resp);
    run_with(&h, body, len, &resp);
    assert_problem(&resp, 401, "replayed");
    assert_string_equal(resp.extra.name, "WWW-Authenticate");
    co_response_clear(&resp);
    assert_int_equal(admitted_in_redis("per-ip", "replay"), 3);
    free(body);
}

/* A resend of the same seq, signed anew, gets the same answer and is
 * counted once; an older seq then gets 409 and changes nothing. */
static void test_retry_same_answer_older_seq_409(void **state)
{
    const struct kc_spec kcs[] = {
        {"per-ip", "retry", 100, 0, 0},    /* at the limit: challenge */
        {"login", "retry", 2, 0, 0},
    };
    Tollgate__V1__SyncResponse *a, *b;
    struct co_response resp;
    struct hdrs h;
    uint8_t *body;
    size_t len;

    (void)state;
    a = run_ok("e1", 8, 3, kcs, 2);
    b = run_ok("e1", 8, 3, kcs, 2);   /* same seq: a new signature */
    assert_int_equal(a->acked_seq, 8);
    assert_int_equal(b->acked_seq, 8);
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(a->states[i]->action, b->states[i]->action);
        assert_int_equal(a->states[i]->lease, b->states[i]->lease);
        assert_int_equal(a->states[i]->reset_ms, b->states[i]->reset_ms);
        assert_int_equal(a->states[i]->count, b->states[i]->count);
    }
    assert_int_equal(a->states[0]->action,
                     TOLLGATE__V1__ACTION__ACTION_CHALLENGE);
    assert_true(strlen(b->states[0]->challenge_token) > 20);
    assert_int_equal(admitted_in_redis("per-ip", "retry"), 100);
    assert_int_equal(admitted_in_redis("login", "retry"), 2);
    tollgate__v1__sync_response__free_unpacked(a, NULL);
    tollgate__v1__sync_response__free_unpacked(b, NULL);

    len = pack_request("e1", 7, 3, kcs, 2, &body);
    sign(&h, "e1", NOW_MS, body, len);
    run_with(&h, body, len, &resp);
    assert_problem(&resp, 409, "seq 7 is older than seq 8 already applied "
                               "for edge e1");
    {   /* the stored seq, as a member the edge reads (tg_sync_conflict) */
        json_t *doc = json_loadb((const char *)resp.body, resp.body_len, 0,
                                 NULL);

        assert_non_null(doc);
        assert_int_equal(json_integer_value(json_object_get(doc,
                                                            "applied_seq")),
                         8);
        json_decref(doc);
    }
    co_response_clear(&resp);
    free(body);
    assert_int_equal(admitted_in_redis("per-ip", "retry"), 100);
}

/* An evicted key's spilled counts and its fresh table counts arrive in
 * one batch: they are summed into one script item, counted once per
 * resend, and both KeyCounts get the same answer. */
static void test_same_key_twice_is_merged(void **state)
{
    const struct kc_spec kcs[] = {
        {"per-ip", "twice", 3, 1, 0},
        {"login", "twice", 1, 0, 0},
        {"per-ip", "twice", 4, 0, 2},
    };
    Tollgate__V1__SyncResponse *a, *b;

    (void)state;
    a = run_ok("e1", 21, 3, kcs, 3);
    assert_int_equal(a->n_states, 3);
    assert_string_equal(a->states[2]->quota, "per-ip");
    assert_int_equal(a->states[0]->count, 7);
    assert_int_equal(a->states[2]->count, 7);
    assert_int_equal(a->states[0]->lease, a->states[2]->lease);
    assert_int_equal(admitted_in_redis("per-ip", "twice"), 7);
    b = run_ok("e1", 21, 3, kcs, 3);   /* the resend: counted once */
    assert_int_equal(b->states[2]->count, 7);
    assert_int_equal(admitted_in_redis("per-ip", "twice"), 7);
    assert_int_equal(admitted_in_redis("login", "twice"), 1);
    tollgate__v1__sync_response__free_unpacked(a, NULL);
    tollgate__v1__sync_response__free_unpacked(b, NULL);
}

/* End to end: a key that admitted all its override allows is challenged,
 * a sibling with as many is not; a busy sibling, whose demand would earn
 * it 50, is leased the quota's burst. */
static void test_override_and_burst_through_the_handler(void **state)
{
    const struct kc_spec kcs[] = {
        {"per-ip", "10.0.0.9", 7, 0, 0},     /* override 7 */
        {"per-ip", "10.0.0.10", 7, 0, 0},    /* the quota's 100 */
        {"per-ip", "10.0.0.11", 50, 0, 0},   /* 50 left, all its share */
    };
    Tollgate__V1__SyncResponse *r;

    (void)state;
    install_json(policy_overrides_json);
    r = run_ok("e1", 31, 3, kcs, 3);
    assert_int_equal(r->states[0]->action,
                     TOLLGATE__V1__ACTION__ACTION_CHALLENGE);
    assert_int_equal(r->states[0]->lease, 0);
    assert_true(strlen(r->states[0]->challenge_token) > 20);
    assert_int_equal(r->states[1]->action,
                     TOLLGATE__V1__ACTION__ACTION_ALLOW);
    assert_true(r->states[1]->lease > 0);
    assert_int_equal(r->states[2]->action,
                     TOLLGATE__V1__ACTION__ACTION_ALLOW);
    assert_int_equal(r->states[2]->lease, 25);
    tollgate__v1__sync_response__free_unpacked(r, NULL);
    install_json(policy_json);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_malformed_protobuf_is_400, reset_mock),
        cmocka_unit_test_setup(test_invalid_fields_are_400, reset_mock),
        cmocka_unit_test_setup(test_too_many_counts_is_400, reset_mock),
        cmocka_unit_test_setup(test_batch_reaches_redis_as_one_call,
                               reset_mock),
        cmocka_unit_test_setup(test_overrides_reach_redis_per_key,
                               reset_mock),
        cmocka_unit_test_setup(test_policy_sent_only_when_versions_differ,
                               reset_mock),
        cmocka_unit_test_setup(test_challenge_carries_a_valid_token,
                               reset_mock),
        cmocka_unit_test_setup(test_redis_down_is_degraded, reset_mock),
        cmocka_unit_test_setup(test_redis_error_reply_is_degraded,
                               reset_mock),
        cmocka_unit_test_setup(test_out_of_range_reply_is_degraded,
                               reset_mock),
        cmocka_unit_test_setup(test_unknown_quotas_only_check_the_replay,
                               reset_mock),
        cmocka_unit_test_setup(test_empty_batch_is_acked, reset_mock),
        cmocka_unit_test_setup(test_unsigned_or_forged_is_401, reset_mock),
        cmocka_unit_test_setup(test_big_batch_is_split, reset_mock),
    };
    const struct CMUnitTest real[] = {
        cmocka_unit_test_setup(test_replayed_request_is_401, reset_mock),
        cmocka_unit_test_setup(test_retry_same_answer_older_seq_409,
                               reset_mock),
        cmocka_unit_test_setup(test_same_key_twice_is_merged, reset_mock),
        cmocka_unit_test_setup(test_override_and_burst_through_the_handler,
                               reset_mock),
    };
    int failed = cmocka_run_group_tests_name("mocked", tests, setup,
                                             teardown);

    failed += cmocka_run_group_tests_name("redis", real, setup_real,
                                          teardown_real);
    return failed;
}
